#!/bin/sh
# Fleet budgets against a real PostgreSQL started here: two daemons (nodes
# alpha and beta) share token budgets. Many concurrent requests on both race
# one budget: the usage served never exceeds it and every refusal is
# budget_exceeded; a kill -9 of one node mid-run and its restart overshoot
# nothing and leave the shared usage equal to the records; with the database
# stopped, fleet_offline "refuse" refuses budgeted requests and "local"
# serves them within the node's share; unbudgeted requests are served
# throughout; fleet stats equal the sum of each node's local stats.
. "$top_srcdir/tests/integration/lib.sh"
. "$top_srcdir/tests/integration/pg.sh"

start_fake_upstream -q -m fake-model --delay-ms 15

# write_conf NAME OFFLINE: node NAME's configuration, fleet_offline OFFLINE.
write_conf() {
	cat >"$TEST_DIR/$1.conf" <<EOF
socket = "$TEST_DIR/$1.sock";
state_dir = "$TEST_DIR/$1-state";
log_level = "debug";
fsync = "no";
fleet_postgres = "host=$pg_dir dbname=postgres user=ollm";
fleet_node = "$1";
fleet_offline = "$2";
http_listen = ( "unix:$TEST_DIR/$1-http.sock" );
max_budget = 0;
budgets = (
  { scope = "tag"; who = "race"; unit = "tokens"; period = "day"; limit = 1500; },
  { scope = "tag"; who = "crash"; unit = "tokens"; period = "day"; limit = 1200; },
  { scope = "tag"; who = "away"; unit = "tokens"; period = "day"; limit = 100000; },
  { scope = "tag"; who = "share"; unit = "tokens"; period = "month"; limit = 1200; },
  { scope = "tag"; who = "slow"; unit = "tokens"; period = "day"; limit = 100000; } );
upstreams = ( { name = "fake"; base_url = "$FAKE_URL"; model = "fake-model";
  rpm = 0; max_concurrency = 0; retries = 0; } );
EOF
}

# start_node NAME [OFFLINE]: a daemon with its own socket and state, node NAME.
start_node() {
	write_conf "$1" "${2:-refuse}"
	"$top_builddir/daemon/openllmd" -f -c "$TEST_DIR/$1.conf" >>"$TEST_DIR/$1.log" 2>&1 &
	eval "${1}_pid=$!"
	TEST_PIDS="$TEST_PIDS $!"
	OPENLLMD_SOCKET="$TEST_DIR/$1.sock" $PYTHON -m olc wait 10
	i=0
	until [ "$(grep -c "fleet: connected to the database" "$TEST_DIR/$1.log")" -ge "$(grep -c "ready; state in" "$TEST_DIR/$1.log")" ]; do
		i=$((i + 1))
		[ "$i" -le 100 ] || fail "$1 did not connect to the database"
		sleep 0.1
	done
}

# race TAG SECONDS THREADS: THREADS clients on each node send chats tagged TAG
# (max_tokens 20), some untagged ones mixed in, each until its tagged ones
# have been refused for SECONDS on end (at most 60 s in all: then it fails);
# prints a JSON summary. Untagged requests must be served; tagged ones
# served or refused with the codes in $RACE_CODES (default budget_exceeded).
race() {
	$PYTHON - "$TEST_DIR" "$1" "$2" "$3" "${RACE_CODES:-budget_exceeded}" <<'PY'
import json, sys, threading, time
from olc import Conn
tdir, tag, secs, threads, codes = sys.argv[1], sys.argv[2], float(sys.argv[3]), int(sys.argv[4]), sys.argv[5].split(",")
out = {"served": 0, "tokens": 0, "refused": {}, "untagged": 0, "lost": 0, "by_node": {}}
lock = threading.Lock()
failures = []
def client(node, k):
    try:
        run(node, k)
    except Exception as e:
        failures.append(repr(e))
def run(node, k):
    deadline = time.time() + 60
    refused_since = None
    i = 0
    while refused_since is None or time.time() - refused_since < secs:
        assert time.time() < deadline, "the budget was not used up within 60 s"
        i += 1
        try:
            c = Conn("%s/%s.sock" % (tdir, node), timeout=20)
            untagged = i % 5 == 0
            fields = {"max_tokens": 20}
            if not untagged:
                fields["tag"] = tag
            _, r = c.chat("q%d" % i, **fields)
            c.close()
        except (OSError, EOFError):
            with lock:
                out["lost"] += 1       # the node was killed under us
            refused_since = None
            time.sleep(0.1)
            continue
        with lock:
            if untagged:
                assert r["type"] == "done", ("an unbudgeted request failed", r)
                out["untagged"] += 1
            elif r["type"] == "done":
                refused_since = None
                out["served"] += 1
                out["tokens"] += r["usage"]["total_tokens"]
                out["by_node"][node] = out["by_node"].get(node, 0) + 1
            else:
                assert r["type"] == "error" and r["code"] in codes, r
                if refused_since is None:
                    refused_since = time.time()
                out["refused"][r["code"]] = out["refused"].get(r["code"], 0) + 1
                if r["code"] == "budget_exceeded":
                    d = r["detail"]
                    assert d["scope"] == "tag:" + tag and d["unit"] == "tokens", r
                    assert d["needed"] > d["left"], r
        if r["type"] == "error":
            time.sleep(0.05)
ts = [threading.Thread(target=client, args=(n, k)) for n in ("alpha", "beta") for k in range(threads)]
for t in ts: t.start()
for t in ts: t.join()
print(json.dumps(out))
if failures:
    sys.exit("race: %s" % failures[0])
PY
}

# local_tokens TAG: the tokens of TAG in both nodes' local ledgers.
local_tokens() {
	$PYTHON - "$TEST_DIR" "$1" <<'PY'
import sys
from olc import Conn
t = 0
for n in ("alpha", "beta"):
    s = Conn("%s/%s.sock" % (sys.argv[1], n)).call("stats", by="tag")
    t += s.get("by_tag", {}).get(sys.argv[2], {}).get("total_tokens", 0)
print(t)
PY
}

# settled TAG: wait until the shared usage of TAG equals its records in the
# table and nothing is reserved any more; prints the usage.
settled() {
	i=0
	while :; do
		used=$(psql "SELECT coalesce(sum(used), 0) FROM ollm_budget WHERE budget LIKE 'tag:$1 %'")
		res=$(psql "SELECT coalesce(sum(reserved), 0) FROM ollm_budget WHERE budget LIKE 'tag:$1 %'")
		rows=$(psql "SELECT coalesce(sum(prompt_tokens + completion_tokens), 0) FROM ollm_usage WHERE tag = '$1'")
		loc=$(local_tokens "$1")
		[ "$used" = "$rows" ] && [ "$res" = 0 ] && [ "$rows" = "$loc" ] && break
		i=$((i + 1))
		[ "$i" -le 100 ] || fail "tag $1: shared used $used, reserved $res, records $rows, local $loc"
		sleep 0.2
	done
	echo "$used"
}

# 1. two nodes race one shared budget of 1500 tokens
start_node alpha
start_node beta
r=$(race race 2 4)
echo "race: $r"
$PYTHON - "$r" <<'PY'
import json, sys
r = json.loads(sys.argv[1])
assert r["tokens"] <= 1500, ("overshoot", r)
assert r["refused"].get("budget_exceeded", 0) > 0, ("the budget never refused", r)
assert len(r["by_node"]) == 2, ("both nodes should serve some", r)
assert r["tokens"] >= 1500 - 240, ("far below the budget: refused too early", r)
assert r["untagged"] > 0 and r["lost"] == 0, r
PY
used=$(settled race)
[ "$used" -le 1500 ] || fail "race: shared usage $used over 1500"
[ "$(psql "SELECT budget_limit FROM ollm_budget WHERE budget = 'tag:race tokens/day'")" = 1500 ] ||
	fail "the limit is not in the table"
[ "$(psql "SELECT count(*) FROM ollm_reservation")" = 0 ] || fail "reservations left over"

# 1b. a database that does not answer (the budget's row locked for 6 s): a
#     reservation that waits gets fleet_unavailable after about 3 s; a client
#     that cancels, or goes away, while its reservation waits leaves nothing
#     reserved once the records are shipped
OPENLLMD_SOCKET="$TEST_DIR/alpha.sock" $PYTHON -c '
from olc import Conn
_, r = Conn().chat("first", tag="slow", max_tokens=20)
assert r["type"] == "done", r'
"$pg_bin/psql" -h "$pg_dir" -U ollm -d postgres -Atq -c "BEGIN; SELECT used FROM ollm_budget
    WHERE budget = 'tag:slow tokens/day' FOR UPDATE; SELECT pg_sleep(6); COMMIT;" >/dev/null &
locker=$!
sleep 0.5
OPENLLMD_SOCKET="$TEST_DIR/alpha.sock" $PYTHON - <<'PY'
import time
from olc import Conn
waits, cancels, leaves = Conn(), Conn(), Conn()
t0 = time.time()
w = waits.request("chat", messages=[{"role": "user", "content": "w"}], tag="slow", max_tokens=20)
c = cancels.request("chat", messages=[{"role": "user", "content": "c"}], tag="slow", max_tokens=20)
leaves.request("chat", messages=[{"role": "user", "content": "l"}], tag="slow", max_tokens=20)
time.sleep(0.3)
leaves.close()
cancels.request("cancel", target=c)
_, r = cancels.until_end(c)
assert r["type"] == "error" and r["code"] == "cancelled", r
_, r = waits.until_end(w)
waited = time.time() - t0
assert r["type"] == "error" and r["code"] == "fleet_unavailable" and "cannot be reached" in r["message"], r
assert 2.5 <= waited <= 6, waited
print("a reservation with no answer: %s after %.1fs" % (r["code"], waited))
_, r = Conn().chat("untagged", max_tokens=20)
assert r["type"] == "done", r
PY
wait "$locker" || fail "the locking transaction failed"
settled slow >/dev/null
[ "$(psql "SELECT count(*) FROM ollm_reservation")" = 0 ] || fail "slow: reservations left over"

# 2. kill -9 of alpha in the middle of a race, then a restart: still no overshoot,
#    and the shared usage ends equal to the records
race crash 2 3 >"$TEST_DIR/crash.json" &
load=$!
$PYTHON - "$TEST_DIR/alpha.sock" <<'PY'
import sys, time
from olc import Conn
deadline = time.time() + 30
while Conn(sys.argv[1]).call("stats", by="tag").get("by_tag", {}).get("crash", {}).get("requests", 0) < 25:
    assert time.time() < deadline, "alpha served no load"
    time.sleep(0.05)
PY
kill -9 "$alpha_pid"
wait "$alpha_pid" 2>/dev/null || true
sleep 1
start_node alpha
wait "$load" || fail "the crash race failed: $(cat "$TEST_DIR/crash.json")"
echo "crash: $(cat "$TEST_DIR/crash.json")"
$PYTHON - "$(cat "$TEST_DIR/crash.json")" <<'PY'
import json, sys
r = json.loads(sys.argv[1])
assert r["lost"] > 0, ("the kill did not land in the middle of the run", r)
assert r["tokens"] <= 1200 and r["refused"].get("budget_exceeded", 0) > 0, r
assert r["by_node"].get("alpha", 0) > 0 and r["by_node"].get("beta", 0) > 0, r
PY
used=$(settled crash)
[ "$used" -le 1200 ] || fail "crash: shared usage $used over 1200"
echo "crash: $used tokens used of 1200"

# 3. the database stopped: under "refuse" budgeted requests are refused with
#    fleet_unavailable and unbudgeted ones served; served again once it is back
pg_stop
RACE_CODES=fleet_unavailable race away 1 2 >"$TEST_DIR/away.json" || fail "away: $(cat "$TEST_DIR/away.json")"
echo "database down, refuse: $(cat "$TEST_DIR/away.json")"
$PYTHON - "$(cat "$TEST_DIR/away.json")" <<'PY'
import json, sys
r = json.loads(sys.argv[1])
assert r["served"] == 0 and r["refused"].get("fleet_unavailable", 0) > 0 and r["untagged"] > 0, r
PY
OPENLLMD_SOCKET="$TEST_DIR/alpha.sock" $PYTHON - <<'PY'
from olc import Conn
_, r = Conn().chat("hi", tag="away")
assert r["type"] == "error" and r["code"] == "fleet_unavailable" and "fleet_offline" in r["message"], r
print("refused: %s" % r["message"])
PY
# ... and on the HTTP front: 503 with the code, and an unbudgeted request served
st=$(curl -s -o "$TEST_DIR/http.json" -w '%{http_code}' --unix-socket "$TEST_DIR/beta-http.sock" \
    -H "X-Ollm-Tag: away" -H "Content-Type: application/json" http://localhost/v1/chat/completions \
    -d '{"model": "fake-model", "max_tokens": 20, "messages": [{"role": "user", "content": "hi"}]}')
[ "$st" = 503 ] && grep -q '"code": *"fleet_unavailable"' "$TEST_DIR/http.json" ||
	fail "HTTP while the database is down: $st $(cat "$TEST_DIR/http.json")"
st=$(curl -s -o "$TEST_DIR/http.json" -w '%{http_code}' --unix-socket "$TEST_DIR/beta-http.sock" \
    -H "Content-Type: application/json" http://localhost/v1/chat/completions \
    -d '{"model": "fake-model", "max_tokens": 20, "messages": [{"role": "user", "content": "hi"}]}')
[ "$st" = 200 ] || fail "HTTP unbudgeted while the database is down: $st $(cat "$TEST_DIR/http.json")"
pg_start
i=0
until OPENLLMD_SOCKET="$TEST_DIR/beta.sock" $PYTHON -c '
import sys
from olc import Conn
for s in ("alpha", "beta"):
    _, r = Conn(sys.argv[1] + "/" + s + ".sock").chat("hi", tag="away", max_tokens=20)
    assert r["type"] == "done", r' "$TEST_DIR" 2>/dev/null; do
	i=$((i + 1))
	[ "$i" -le 60 ] || fail "budgeted requests still refused after the database came back"
	sleep 0.5
done
settled away >/dev/null

# 4. "local": with the database away each node serves within its share, half
#    of what was left at the last contact (two nodes seen)
kill -TERM "$alpha_pid" "$beta_pid"
wait "$alpha_pid" "$beta_pid" || fail "a node did not stop cleanly"
start_node alpha local
start_node beta local
for n in alpha beta; do
	OPENLLMD_SOCKET="$TEST_DIR/$n.sock" $PYTHON -c '
from olc import Conn
_, r = Conn().chat("learn", tag="share", max_tokens=20)
assert r["type"] == "done", r'
done
settled share >/dev/null
before=$(psql "SELECT used FROM ollm_budget WHERE budget LIKE 'tag:share %'")
pg_stop
r=$(race share 1 3)
echo "database down, local: $r"
$PYTHON - "$r" "$before" <<'PY'
import json, sys
r, before = json.loads(sys.argv[1]), int(sys.argv[2])
left = 1200 - before
assert r["served"] > 0 and r["refused"].get("budget_exceeded", 0) > 0, r
assert r["tokens"] <= left, ("the shares overshot what was left", r, left)
PY
OPENLLMD_SOCKET="$TEST_DIR/alpha.sock" $PYTHON - <<'PY'
from olc import Conn
_, r = Conn().chat("more", tag="share", max_tokens=20)
assert r["type"] == "error" and r["code"] == "budget_exceeded" and "share" in r["message"], r
print("refused: %s" % r["message"])
PY
pg_start
used=$(settled share)
[ "$used" -le 1200 ] || fail "share: shared usage $used over 1200"

# 5. fleet stats equal the sum of each node's local stats
$PYTHON - "$TEST_DIR/alpha.sock" "$TEST_DIR/beta.sock" <<'PY'
import sys, time
from olc import Conn
deadline = time.time() + 20
while True:
    a = Conn(sys.argv[1]).call("stats")
    b = Conn(sys.argv[2]).call("stats")
    f = Conn(sys.argv[1]).call("stats", fleet=True)
    ok = f["type"] == "result" and all(
        f["total"][k] == a["total"][k] + b["total"][k]
        for k in ("requests", "errors", "prompt_tokens", "completion_tokens", "total_tokens"))
    if ok:
        break
    assert time.time() < deadline, (f, a["total"], b["total"])
    time.sleep(0.2)
print("fleet stats: %d requests = %d + %d" % (f["total"]["requests"], a["total"]["requests"],
      b["total"]["requests"]))
PY

# 6. a clean stop with the connection up (under ASan: nothing leaks)
for n in alpha beta; do
	eval "pid=\$${n}_pid"
	kill -TERM "$pid"
	wait "$pid" || fail "$n exited with status $?"
done
echo "fleet_budget: ok"
