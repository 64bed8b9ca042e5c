#!/bin/sh
# Who is who and what each may use: descriptors kept for the model server,
# per-user connection caps, uids in the ledger, stats visibility, the private
# /tmp directory, the client's check of the daemon's user, and state files
# never opened through a symbolic link.
. "$top_srcdir/tests/integration/lib.sh"
start_fake_upstream -q -m fake-model
test_py="$top_srcdir/tests/integration/test_daemon.py"
OLLMCTL="$top_builddir/client/ollmctl"
DAEMON="$top_builddir/daemon/openllmd"
NOBODY=$(id -u nobody)
chmod 755 "$TEST_DIR"           # nobody reaches the 0666 socket through it

run_group() {
	group=$1
	shift
	start_daemon "$@"
	"$PYTHON" "$test_py" "$group"
	stop_daemon TERM
	rm -rf "$TEST_DIR/state"
	: > "$TEST_DIR/daemon.log"
}

# a soft descriptor limit of 128 under a hard one of 256; clients get what is left
DAEMON_WRAP="prlimit --nofile=128:256" UPSTREAM_EXTRA='max_concurrency = 16;' \
	run_group descriptors 'max_clients = 1000;'
unset DAEMON_WRAP UPSTREAM_EXTRA   # dash keeps assignments made before a function call

start_daemon 'socket_mode = "0666";' 'max_clients_per_uid = 4;'
"$PYTHON" "$test_py" peruid
# nobody holds four connections: a fifth, from ollmctl, is told why and exits 75
setpriv --reuid="$NOBODY" --regid="$NOBODY" --clear-groups "$PYTHON" -c '
import sys, time
from olc import Conn
held = [Conn() for i in range(4)]
assert all(c.call("ping")["type"] == "result" for c in held)
print("holding", flush=True)
time.sleep(60)
' > "$TEST_DIR/holder.out" 2>&1 &
hpid=$!
TEST_PIDS="$TEST_PIDS $hpid"
wait_for_line "$TEST_DIR/holder.out" 10
grep -qx holding "$TEST_DIR/holder.out" || fail "holder: $(cat "$TEST_DIR/holder.out")"
st=0
setpriv --reuid="$NOBODY" --regid="$NOBODY" --clear-groups "$OLLMCTL" ping > "$TEST_DIR/out" 2>&1 || st=$?
[ "$st" -eq 75 ] || fail "ollmctl past max_clients_per_uid: exit $st: $(cat "$TEST_DIR/out")"
grep -q "uid $NOBODY already has 4 connections (max_clients_per_uid 4)" "$TEST_DIR/out" ||
	fail "ollmctl: $(cat "$TEST_DIR/out")"
kill "$hpid"
wait "$hpid" 2>/dev/null || true
stop_daemon TERM
rm -rf "$TEST_DIR/state"
: > "$TEST_DIR/daemon.log"

# uids in the ledger and who sees which rows; then stats_visibility = "all" on the same ledger
budgets='budgets = ( { scope = "user"; who = "root"; unit = "tokens"; limit = 1000000; },
  { scope = "user"; who = "nobody"; unit = "tokens"; limit = 1000000; } );'
start_daemon 'socket_mode = "0666";' "$budgets"
sleep 1                         # after the ledger began: --since below is exact
since=$(date +%s)
"$PYTHON" "$test_py" identity
# ollmctl as nobody: root's daemon is trusted, and stats shows nobody's own rows
setpriv --reuid="$NOBODY" --regid="$NOBODY" --clear-groups "$OLLMCTL" stats --json > "$TEST_DIR/out" ||
	fail "ollmctl stats as nobody: $(cat "$TEST_DIR/out")"
"$PYTHON" - "$TEST_DIR/out" "$NOBODY" <<'PY' || fail "ollmctl stats as nobody: $(cat "$TEST_DIR/out")"
import json, sys
s = json.load(open(sys.argv[1]))
assert list(s["by_user"]) == [sys.argv[2]], s["by_user"]
assert s["total"]["requests"] == 1, s["total"]     # their own, as the rows
PY
# fleet logs are for root and the daemon's user: a uid names different people on other hosts
st=0
setpriv --reuid="$NOBODY" --regid="$NOBODY" --clear-groups "$OLLMCTL" logs --fleet > "$TEST_DIR/out" 2>&1 || st=$?
[ "$st" -ne 0 ] && grep -q "fleet logs are for root" "$TEST_DIR/out" ||
	fail "ollmctl logs --fleet as nobody (status $st): $(cat "$TEST_DIR/out")"
# the same from an exact instant (the day's part read from the journal)
setpriv --reuid="$NOBODY" --regid="$NOBODY" --clear-groups "$OLLMCTL" stats --json --since "@$since" \
    > "$TEST_DIR/out" || fail "ollmctl stats --since @$since as nobody: $(cat "$TEST_DIR/out")"
"$PYTHON" - "$TEST_DIR/out" "$NOBODY" "$since" <<'PY' || fail "ollmctl stats --since as nobody: $(cat "$TEST_DIR/out")"
import json, sys
s = json.load(open(sys.argv[1]))
assert s["since"] == int(sys.argv[3]), s["since"]
assert list(s["by_user"]) == [sys.argv[2]], s["by_user"]
assert s["total"]["requests"] == 1, s["total"]     # their own, as the rows
PY
stop_daemon TERM
start_daemon 'socket_mode = "0666";' 'stats_visibility = "all";' "$budgets"
"$PYTHON" "$test_py" identity_all
stop_daemon TERM
rm -rf "$TEST_DIR/state"

# --- the private directory of a user without XDG_RUNTIME_DIR ---------------
U=$((50000 + $$ % 10000))       # a uid of our own: no one else's /tmp/openllmd-U
PRIV="/tmp/openllmd-$U"
TEST_CLEANUP_PATHS="$PRIV"
rm -rf "$PRIV"
printf 'log_level = "debug";\nupstreams = ( { base_url = "%s"; model = "fake-model"; rpm = 0; } );\n' \
	"$FAKE_URL" > "$TEST_DIR/user.conf"
chmod 644 "$TEST_DIR/user.conf"
as_u() {
	setpriv --reuid="$U" --regid="$U" --clear-groups \
		env -u XDG_RUNTIME_DIR -u HOME -u OPENLLMD_SOCKET -u XDG_STATE_HOME "$@"
}

# squatted: made by someone else first, a symbolic link, or open to others
mkdir -m 777 "$PRIV"
as_u "$DAEMON" -f -c "$TEST_DIR/user.conf" > "$TEST_DIR/u.log" 2>&1 && fail "daemon used a squatted $PRIV"
grep -q "$PRIV belongs to uid 0, not to you" "$TEST_DIR/u.log" || fail "daemon: $(cat "$TEST_DIR/u.log")"
st=0; as_u "$OLLMCTL" ping > "$TEST_DIR/u.log" 2>&1 || st=$?
[ "$st" -eq 69 ] || fail "ollmctl against a squatted $PRIV: exit $st"
grep -q "refusing $PRIV/openllmd.sock: $PRIV belongs to uid 0" "$TEST_DIR/u.log" ||
	fail "ollmctl: $(cat "$TEST_DIR/u.log")"
rmdir "$PRIV"
mkdir -m 700 "$TEST_DIR/elsewhere"
chown "$U" "$TEST_DIR/elsewhere"
ln -s "$TEST_DIR/elsewhere" "$PRIV"
as_u "$DAEMON" -f -c "$TEST_DIR/user.conf" > "$TEST_DIR/u.log" 2>&1 && fail "daemon followed a symbolic link"
grep -q "$PRIV is not a directory (a symbolic link)" "$TEST_DIR/u.log" || fail "daemon: $(cat "$TEST_DIR/u.log")"
rm "$PRIV"
mkdir -m 755 "$PRIV"
chown "$U:$U" "$PRIV"
as_u "$DAEMON" -f -c "$TEST_DIR/user.conf" > "$TEST_DIR/u.log" 2>&1 && fail "daemon used $PRIV with mode 0755"
grep -q "$PRIV has mode 0755" "$TEST_DIR/u.log" || fail "daemon: $(cat "$TEST_DIR/u.log")"
rmdir "$PRIV"

# missing: the daemon makes it 0700, with the socket and the state inside, and the user's ollmctl finds it
# not through as_u: a function run in the background is a subshell, and $!
# would name it instead of the daemon
setpriv --reuid="$U" --regid="$U" --clear-groups \
	env -u XDG_RUNTIME_DIR -u HOME -u OPENLLMD_SOCKET -u XDG_STATE_HOME \
	"$DAEMON" -f -c "$TEST_DIR/user.conf" > "$TEST_DIR/u.log" 2>&1 &
TEST_PIDS="$TEST_PIDS $!"
upid=$!
i=0
until [ -S "$PRIV/openllmd.sock" ]; do
	i=$((i + 1)); [ $i -lt 100 ] || fail "no socket in $PRIV: $(cat "$TEST_DIR/u.log")"; sleep 0.1
done
[ "$(stat -c '%a %u' "$PRIV")" = "700 $U" ] || fail "$PRIV: $(stat -c '%a %u' "$PRIV")"
[ -d "$PRIV/state/journal" ] || fail "state is not in $PRIV/state"
as_u "$OLLMCTL" ping > "$TEST_DIR/out" 2>&1 || fail "ollmctl as $U: $(cat "$TEST_DIR/out")"
# root's client refuses a daemon run by another user, before sending a byte
st=0; "$OLLMCTL" -S "$PRIV/openllmd.sock" ping > "$TEST_DIR/out" 2>&1 || st=$?
[ "$st" -eq 69 ] || fail "root's ollmctl talked to uid $U's daemon: exit $st"
grep -q "refusing the daemon on $PRIV/openllmd.sock: it runs as uid $U, which is neither root, you (uid 0), nor the service user openllm" \
	"$TEST_DIR/out" || fail "ollmctl: $(cat "$TEST_DIR/out")"
kill "$upid"
wait "$upid" 2>/dev/null || true

# a listener of another user that records what it is sent: nothing reaches it
mkdir "$TEST_DIR/imp"
chown "$NOBODY" "$TEST_DIR/imp"
setpriv --reuid="$NOBODY" --regid="$NOBODY" --clear-groups "$PYTHON" - "$TEST_DIR/imp/impostor.sock" <<'PY' \
	> "$TEST_DIR/impostor.out" 2>&1 &
import os, socket, sys
l = socket.socket(socket.AF_UNIX)
l.bind(sys.argv[1])
os.chmod(sys.argv[1], 0o666)
l.listen(4)
l.settimeout(20)
c, _ = l.accept()
c.settimeout(2)
got = b""
try:
    while True:
        b = c.recv(4096)
        if not b:
            break
        got += b
except socket.timeout:
    pass
print("received %d bytes" % len(got), flush=True)
PY
ipid=$!
TEST_PIDS="$TEST_PIDS $ipid"
i=0
until [ -S "$TEST_DIR/imp/impostor.sock" ]; do
	i=$((i + 1)); [ $i -lt 100 ] || fail "no impostor socket"; sleep 0.1
done
st=0
echo "my secret prompt" | "$OLLMCTL" -S "$TEST_DIR/imp/impostor.sock" chat > "$TEST_DIR/out" 2>&1 || st=$?
[ "$st" -eq 69 ] || fail "ollmctl chat to nobody's listener: exit $st: $(cat "$TEST_DIR/out")"
grep -q "it runs as uid $NOBODY" "$TEST_DIR/out" || fail "ollmctl: $(cat "$TEST_DIR/out")"
wait "$ipid" || true
grep -qx "received 0 bytes" "$TEST_DIR/impostor.out" || fail "impostor: $(cat "$TEST_DIR/impostor.out")"

# --- state files are never opened through a symbolic link ------------------
# killed, so that the journal file is replayed at the next start
start_daemon
"$PYTHON" -m olc chat "one for the journal" > /dev/null
stop_daemon KILL
journal=$(ls "$TEST_DIR"/state/journal/journal-*.olj | tail -n 1)
[ -n "$journal" ] || fail "no journal file"
echo "precious" > "$TEST_DIR/target"
mv "$journal" "$TEST_DIR/saved.olj"
ln -s "$TEST_DIR/target" "$journal"
# refuse_start WHAT: the daemon must exit non-zero, naming WHAT as a link it will not follow
refuse_start() {
	"$DAEMON" -f -c "$CONF" > "$TEST_DIR/refused.log" 2>&1 &&
		fail "the daemon started with a symbolic link as $1"
	grep -q "$1 is a symbolic link; refusing to follow it" "$TEST_DIR/refused.log" ||
		fail "daemon: $(cat "$TEST_DIR/refused.log")"
}
refuse_start "$journal"
[ "$(cat "$TEST_DIR/target")" = "precious" ] || fail "the link's target was changed"
# the journal directory and the lock file, likewise
rm -rf "$TEST_DIR/state"
mkdir -p "$TEST_DIR/state" "$TEST_DIR/otherdir"
ln -s "$TEST_DIR/otherdir" "$TEST_DIR/state/journal"
refuse_start "$TEST_DIR/state/journal"
[ -z "$(ls "$TEST_DIR/otherdir")" ] || fail "something was written through the link"
rm -rf "$TEST_DIR/state"
mkdir -p "$TEST_DIR/state"
ln -s "$TEST_DIR/target" "$TEST_DIR/state/lock"
refuse_start "$TEST_DIR/state/lock"
[ "$(cat "$TEST_DIR/target")" = "precious" ] || fail "the lock's target was changed"
echo "identity: all checks passed"
