#!/bin/sh
# The durable ledger through the daemon: kill -9 with 100 streams in flight,
# torn and corrupt journals, an unwritable disk, reset by another user.
. "$top_srcdir/tests/integration/lib.sh"
start_fake_upstream -q -m fake-model
start_daemon
journal_dir="$TEST_DIR/state/journal"

# 1. kill -9 while 100 streams are in flight: every request whose done frame
#    a client received is in the stats exactly once after a restart.
"$PYTHON" - "$TEST_DIR/received" <<'PY'
import os, signal, sys, threading, time
from olc import Conn
received, lock, started = [], threading.Lock(), threading.Barrier(101)

def one(n):
    c = Conn()
    tag = "crash%03d" % n
    rid = c.request("chat", tag=tag, messages=[{"role": "user",
                    "content": "c%d [[chunks=10 delay_ms=%d]]" % (n, 10 + n % 50 if n < 50 else 400)}])
    started.wait()
    try:
        deltas, end = c.until_end(rid)
        if end["type"] == "done":
            with lock:
                received.append(tag)
    except (EOFError, OSError):
        pass

threads = [threading.Thread(target=one, args=(n,)) for n in range(100)]
for t in threads:
    t.start()
started.wait()
# kill once some streams have finished and while the slow half (4 s each) runs
deadline = time.time() + 30
while not received and time.time() < deadline:
    time.sleep(0.01)
os.kill(int(os.environ["DAEMON_PID"]), signal.SIGKILL)
for t in threads:
    t.join()
with open(sys.argv[1], "w") as f:
    f.write("\n".join(received))
assert 0 < len(received) < 100, "want a crash in the middle, got %d done" % len(received)
print("crash: %d of 100 streams had finished" % len(received))
PY
wait "$DAEMON_PID" 2>/dev/null || true
KEEP_CONFIG=1 start_daemon
"$PYTHON" - "$TEST_DIR/received" <<'PY'
import sys
from olc import Conn
received = set(open(sys.argv[1]).read().split())
by_tag = Conn().call("stats", by="tag")["by_tag"]
for tag in received:
    assert tag in by_tag and by_tag[tag]["requests"] == 1, (tag, by_tag.get(tag))
for tag, c in by_tag.items():
    assert c["requests"] == 1, (tag, c)
print("crash: all %d finished requests recorded exactly once" % len(received))
PY
# ... and the stats equal the sum of the journal's records
"$PYTHON" - "$journal_dir" <<'PY'
import glob, struct, sys, msgpack
from olc import Conn
records = tokens = 0
for path in sorted(glob.glob(sys.argv[1] + "/*.olj")):
    data = open(path, "rb").read()
    off = 0
    while off + 8 <= len(data):
        n = struct.unpack(">I", data[off:off + 4])[0]
        rec = msgpack.unpackb(data[off + 8:off + 8 + n], raw=False)
        records += 1
        tokens += rec["prompt_tokens"] + rec["completion_tokens"]
        off += 8 + n
total = Conn().call("stats")["total"]
assert total["requests"] == records, (total, records)
assert total["total_tokens"] == tokens, (total, tokens)
print("crash: stats equal the sum of %d journal records" % records)
PY

# 2. a torn tail is cut with a warning; nothing before it is lost
before=$("$PYTHON" -c 'from olc import Conn; print(Conn().call("stats")["total"]["requests"])')
stop_daemon KILL
last=$(ls "$journal_dir"/*.olj | tail -n 1)
printf '\000\000\000\100\001\002' >> "$last"
KEEP_CONFIG=1 start_daemon
grep -q "cut" "$TEST_DIR/daemon.log" || fail "no warning about the torn tail"
after=$("$PYTHON" -c 'from olc import Conn; print(Conn().call("stats")["total"]["requests"])')
[ "$before" = "$after" ] || fail "torn tail: $before requests before, $after after"

# 3. a corrupt record in the middle costs that record only
"$PYTHON" -c '
from olc import Conn
c = Conn()
for i in range(5):
    assert c.chat("mid%d" % i, tag="mid")[1]["type"] == "done"
'
stop_daemon KILL
last=$(ls "$journal_dir"/*.olj | tail -n 1)
size=$(stat -c %s "$last")
"$PYTHON" - "$last" <<'PY'
import struct, sys
path = sys.argv[1]
data = bytearray(open(path, "rb").read())
offsets, off = [], 0
while off + 8 <= len(data):
    n = struct.unpack(">I", data[off:off + 4])[0]
    offsets.append(off)
    off += 8 + n
middle = offsets[len(offsets) - 3]      # a record with valid ones after it
data[middle + 8 + 2] ^= 0xFF
open(path, "wb").write(data)
PY
KEEP_CONFIG=1 start_daemon
"$PYTHON" -c '
from olc import Conn
t = Conn().call("stats", by="tag")["by_tag"]["mid"]
assert t["requests"] == 4, t
'
[ "$(stat -c %s "$last")" -eq "$size" ] || fail "valid records after the corrupt one were cut"

# 4. a disk that fails writes: the chat whose record cannot be written gets
#    an error naming the journal and the errno instead of done
#    (on_ledger_error = "refuse"), new chats are refused until the disk works
#    again, and the record that could not be written is not lost
stop_daemon TERM
shim="$top_builddir/tests/ledger/.libs/failwrite.so"
[ -f "$shim" ] || fail "missing $shim"
flag="$TEST_DIR/diskfull"
start_with_shim() {
	OLLM_FAILWRITE_FLAG="$flag" OLLM_FAILWRITE_PREFIX="$1" \
		LD_PRELOAD="$shim" ASAN_OPTIONS="${ASAN_OPTIONS:-}:verify_asan_link_order=0" \
		KEEP_CONFIG=1 start_daemon
}
start_with_shim "$TEST_DIR/state"
before=$("$PYTHON" -c 'from olc import Conn; print(Conn().call("stats")["total"]["requests"])')
echo enospc > "$flag"
"$PYTHON" - "$TEST_DIR/state/journal/journal-" <<'PY'
import sys
from olc import Conn
c = Conn()
d, end = c.chat("while full", tag="full")
assert end["type"] == "error" and end["code"] == "internal", end
assert sys.argv[1] in end["message"] and "No space left on device" in end["message"], end
d, end = c.chat("refused")
assert end["type"] == "error" and "ledger" in end["message"], end
PY
grep -q "No space left on device" "$TEST_DIR/daemon.log" || fail "the write failure was not logged"
rm -f "$flag"
sleep 1.5
# ... and chats ending together, whose records go out in one write, each get
# that error when the write fails (the first alone finds the disk full: those
# already in flight are not refused at their start)
"$PYTHON" - "$TEST_DIR/state/journal/journal-" "$flag" <<'PY'
import sys
from olc import Conn
c = Conn()
ids = [c.request("chat", tag="full", messages=[{"role": "user",
       "content": "together [[chunks=2 delay_ms=300]]"}]) for _ in range(6)]
c.until_end(c.request("models"))   # all six are started
open(sys.argv[2], "w").write("enospc")
ends = {}
while len(ends) < 6:
    r = c.read()
    if r["type"] in ("done", "error"):
        ends[r["id"]] = r
for i in ids:
    e = ends[i]
    assert e["type"] == "error" and e["code"] == "internal", e
    assert sys.argv[1] in e["message"] and "No space left on device" in e["message"], e
PY
rm -f "$flag"
sleep 1.5
"$PYTHON" -c '
from olc import Conn
d, end = Conn().chat("works again", tag="full")
assert end["type"] == "done" and "durable" not in end, end
'

# ... and with on_ledger_error = "serve" the reply comes, marked durable: false
stop_daemon TERM
echo 'on_ledger_error = "serve";' >> "$CONF"
start_with_shim "$TEST_DIR/state"
echo eio > "$flag"
"$PYTHON" -c '
from olc import Conn
d, end = Conn().chat("served anyway", tag="full")
assert end["type"] == "done" and end["durable"] is False, end
'
rm -f "$flag"
sleep 1.5
stop_daemon TERM
KEEP_CONFIG=1 start_daemon
"$PYTHON" -c "
from olc import Conn
s = Conn().call('stats', by='tag')
assert s['by_tag']['full']['requests'] == 9, s['by_tag']
# the seven whose clients heard an error are errors, never done
assert s['by_tag']['full']['errors'] == 7, s['by_tag']
rows = Conn().call('logs', tag='full')['rows']
assert sorted(r['status'] for r in rows) == ['done'] * 2 + ['error'] * 7, rows
assert all(r.get('error') == 'internal' for r in rows if r['status'] == 'error'), rows
assert s['total']['requests'] == $before + 9, s['total']
"

# 4b. fdatasync fails on one journal file (fsync = "always"): it is not synced
#     again; the record goes to a new file, is synced there, and the client gets
#     a plain done. After kill -9, each record counts once though one is in
#     both files.
stop_daemon TERM
sed -i 's/^fsync = "no";/fsync = "always";/' "$CONF"
last=$(ls "$journal_dir" | sed -n 's/^journal-0*\([0-9][0-9]*\)\.olj$/\1/p' | sort -n | tail -n 1)
next=$(printf '%s/journal-%016d.olj' "$journal_dir" $((last + 1)))
after=$(printf '%s/journal-%016d.olj' "$journal_dir" $((last + 2)))
start_with_shim "$next"
before=$("$PYTHON" -c 'from olc import Conn; print(Conn().call("stats")["total"]["requests"])')
echo fsync > "$flag"
"$PYTHON" -c '
from olc import Conn
c = Conn()
for i in range(3):
    d, end = c.chat("synced elsewhere %d" % i, tag="fsync")
    assert end["type"] == "done" and "durable" not in end, end
'
rm -f "$flag"
[ -s "$next" ] || fail "no journal file $next"
[ -s "$after" ] || fail "the records did not go to a new file $after"
grep -q "fdatasync: Input/output error" "$TEST_DIR/daemon.log" || fail "the fsync failure was not logged"
stop_daemon KILL
KEEP_CONFIG=1 start_daemon
"$PYTHON" - "$next" "$after" <<'PY'
import struct, sys, msgpack
from olc import Conn
rids = []
for path in sys.argv[1:]:
    data = open(path, "rb").read()
    off = 0
    while off + 8 <= len(data):
        n = struct.unpack(">I", data[off:off + 4])[0]
        rids.append(msgpack.unpackb(data[off + 8:off + 8 + n], raw=False)["rid"])
        off += 8 + n
assert len(rids) == 4 and len(set(rids)) == 3, rids
s = Conn().call("stats", by="tag")
assert s["by_tag"]["fsync"]["requests"] == 3, s["by_tag"]["fsync"]
PY
[ "$("$PYTHON" -c 'from olc import Conn; print(Conn().call("stats")["total"]["requests"])')" -eq $((before + 3)) ] ||
	fail "after the fsync failure, stats do not count each record once"

# 5. another user: usage accounted to its uid; reset refused
chmod 755 "$TEST_DIR"
chmod 666 "$OPENLLMD_SOCKET"
nobody=$(id -u nobody)
setpriv --reuid="$nobody" --regid="$(id -g nobody)" --clear-groups "$PYTHON" -c '
from olc import Conn
c = Conn()
r = c.call("reset")
assert r["type"] == "error" and r["code"] == "forbidden", r
d, end = c.chat("as nobody")
assert end["type"] == "done", end
' || fail "unprivileged user"
"$PYTHON" -c "
from olc import Conn
s = Conn().call('stats', by='user')
assert s['by_user']['$nobody']['requests'] == 1, s['by_user']
"
echo "ledger: all checks passed"
