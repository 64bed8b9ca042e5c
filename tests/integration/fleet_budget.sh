#!/bin/sh
# Fleet budgets against a real PostgreSQL started here: two daemons (nodes
# alpha and beta) share token budgets. Many concurrent requests on both race
# one budget: the usage served never exceeds it and every refusal is
# budget_exceeded; a kill -9 of one node mid-run and its restart overshoot
# nothing and leave the shared usage equal to the records; with the database
# stopped, fleet_offline "refuse" refuses budgeted requests and "local"
# serves them against the node's leases; unbudgeted requests are served
# throughout; fleet stats equal the sum of each node's local stats and show
# the fleet's usage of each budget the node has.
. "$top_srcdir/tests/integration/lib.sh"
. "$top_srcdir/tests/integration/pg.sh"

start_fake_upstream -q -m fake-model --delay-ms 15
# ci:alice: an API key's user with no system account, billed by name
ALICE=sk-ollm-fleet-alice-0123456789abcdefghijklmnop
ALICE_SHA=$(printf %s "$ALICE" | sha256sum | cut -d' ' -f1)

# write_conf NAME OFFLINE [MAX_BUDGET]: node NAME's configuration, fleet_offline OFFLINE.
write_conf() {
	cat >"$TEST_DIR/$1.conf" <<EOF
socket = "$TEST_DIR/$1.sock";
state_dir = "$TEST_DIR/$1-state";
log_level = "debug";
fsync = "no";
fleet_postgres = "host=$pg_dir dbname=postgres user=ollm";
fleet_node = "$1";
fleet_offline = "$2";
fleet_lease_ttl = ${FLEET_TTL:-30};
http_listen = ( "unix:$TEST_DIR/$1-http.sock" );
api_keys = ( { sha256 = "$ALICE_SHA"; user = "ci:alice"; } );
max_budget = ${3:-0};
budgets = (
  { scope = "tag"; who = "race"; unit = "tokens"; period = "day"; limit = 1500; },
  { scope = "tag"; who = "crash"; unit = "tokens"; period = "day"; limit = 1200; },
  { scope = "tag"; who = "away"; unit = "tokens"; period = "day"; limit = 100000; },
  { scope = "tag"; who = "share"; unit = "tokens"; period = "month"; limit = 100000; },
  { scope = "tag"; who = "slow"; unit = "tokens"; period = "day"; limit = 100000; },
  { scope = "user"; who = "ci:alice"; unit = "tokens"; period = "day"; limit = 400; } );
upstreams = ( { name = "fake"; base_url = "$FAKE_URL"; model = "fake-model";
  rpm = 0; max_concurrency = 0; retries = 0; prompt_price = 0.5; completion_price = 1.5; } );
EOF
}

# start_node NAME [OFFLINE [MAX_BUDGET]]: a daemon with its own socket and state, node NAME.
start_node() {
	write_conf "$1" "${2:-refuse}" "${3:-0}"
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
# table and nothing is reserved or leased any more (an unused lease is
# given back after 5 s); prints the usage.
settled() {
	i=0
	while :; do
		used=$(psql "SELECT coalesce(sum(used), 0) FROM ollm_budget WHERE budget LIKE 'tag:$1 %'")
		res=$(psql "SELECT coalesce(sum(reserved + leased), 0) FROM ollm_budget WHERE budget LIKE 'tag:$1 %'")
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

# 1a. fleet stats show the fleet's budgets: used is what both nodes served
#     under the budget, left what the fleet has left; no overall budget here
$PYTHON - "$TEST_DIR" "$r" "$used" <<'PY'
import json, sys
from olc import Conn
tdir, r, used = sys.argv[1], json.loads(sys.argv[2]), int(sys.argv[3])
mine = 0
for n in ("alpha", "beta"):
    local = Conn("%s/%s.sock" % (tdir, n)).call("stats")
    mine += [b for b in local["budgets"] if b["scope"] == "tag:race"][0]["used"]
assert mine == used, ("the nodes' own usage does not add up", mine, used)
for n in ("alpha", "beta"):
    f = Conn("%s/%s.sock" % (tdir, n)).call("stats", fleet=True)
    assert f["type"] == "result", f
    assert sorted(b["scope"] for b in f["budgets"]) == ["tag:away", "tag:crash", "tag:race",
                                                       "tag:share", "tag:slow", "user:ci:alice"], f["budgets"]
    b = [b for b in f["budgets"] if b["scope"] == "tag:race"][0]
    assert (b["unit"], b["period"], b["limit"]) == ("tokens", "day", 1500), b
    assert b["used"] == used == r["tokens"], ("fleet used", b, used, r["tokens"])
    assert b["left"] == 1500 - used, b
    c = [b for b in f["budgets"] if b["scope"] == "tag:crash"][0]
    assert c["used"] == 0 and c["left"] == 1200, c
    assert f["max_budget"] is None and f["budget_left"] is None, f
print("fleet stats: tag:race used %d = alpha + beta, left %d" % (used, 1500 - used))
PY
OPENLLMD_SOCKET="$TEST_DIR/beta.sock" "$top_builddir/client/ollmctl" stats --fleet >"$TEST_DIR/fstats.txt" ||
	fail "ollmctl stats --fleet"
want=$($PYTHON -c 'import sys; u = int(sys.argv[1]); print("Budget tag:race (tokens per day): used {:,} of 1,500, left {:,}".format(u, 1500 - u))' "$used")
grep -qF "$want" "$TEST_DIR/fstats.txt" || fail "ollmctl stats --fleet: no \"$want\" in $(cat "$TEST_DIR/fstats.txt")"

# 1b. ci:alice, a named user, over HTTP on both nodes in turn: her budget holds
#     across the fleet, keyed by her name; fleet stats count her by name as
#     the local stats do, and fleet logs rows carry her name
$PYTHON - "$TEST_DIR" "$ALICE" >"$TEST_DIR/alice.json" <<'PY' || fail "ci:alice: $(cat "$TEST_DIR/alice.json")"
import http.client, json, socket, sys, time
tdir, key = sys.argv[1:]
class Unix(http.client.HTTPConnection):
    def __init__(self, path):
        super().__init__("localhost", timeout=20)
        self.unix = path
    def connect(self):
        self.sock = socket.socket(socket.AF_UNIX)
        self.sock.connect(self.unix)
out = {"tokens": 0, "served": {}, "refused": 0}
refused_since = {}
deadline = time.time() + 60
i = 0
while len(refused_since) < 2 or time.time() - max(refused_since.values()) < 2.5:
    assert time.time() < deadline, ("ci:alice's budget was not used up within 60 s", out)
    node = ("alpha", "beta")[i % 2]
    i += 1
    c = Unix("%s/%s-http.sock" % (tdir, node))
    c.request("POST", "/v1/chat/completions", json.dumps({"model": "fake-model", "max_tokens": 20,
              "messages": [{"role": "user", "content": "ci:alice %d" % i}]}),
              {"Authorization": "Bearer " + key, "Content-Type": "application/json"})
    r = c.getresponse()
    body = json.loads(r.read())
    c.close()
    if r.status == 200:
        refused_since.pop(node, None)
        out["tokens"] += body["usage"]["total_tokens"]
        out["served"][node] = out["served"].get(node, 0) + 1
    else:
        e = body["error"]
        assert r.status == 402 and e["code"] == "budget_exceeded" and "user:ci:alice" in e["message"], body
        refused_since.setdefault(node, time.time())
        out["refused"] += 1
        time.sleep(0.05)
print(json.dumps(out))
PY
echo "ci:alice: $(cat "$TEST_DIR/alice.json")"
i=0
until [ "$(psql "SELECT used, reserved FROM ollm_budget WHERE budget LIKE 'user:ci:alice %'")" = \
    "$(psql "SELECT coalesce(sum(prompt_tokens + completion_tokens), 0) FROM ollm_usage WHERE user_name = 'ci:alice'")|0" ]; do
	i=$((i + 1))
	[ "$i" -le 100 ] || fail "ci:alice: shared $(psql "SELECT * FROM ollm_budget WHERE budget LIKE 'user:%'")"
	sleep 0.2
done
[ "$(psql "SELECT budget FROM ollm_budget WHERE budget LIKE 'user:%'")" = "user:ci:alice tokens/day" ] ||
	fail "ci:alice's budget is not keyed by her name: $(psql "SELECT budget FROM ollm_budget")"
$PYTHON - "$TEST_DIR" "$(cat "$TEST_DIR/alice.json")" <<'PY'
import json, sys, time
from olc import Conn
tdir, r = sys.argv[1], json.loads(sys.argv[2])
assert r["tokens"] <= 400, ("ci:alice's budget overshot across the fleet", r)
assert r["tokens"] >= 400 - 2 * 40, ("refused far below the budget", r)
assert r["served"].get("alpha", 0) > 0 and r["served"].get("beta", 0) > 0 and r["refused"] > 0, r
local = {}
for n in ("alpha", "beta"):
    for k, v in Conn("%s/%s.sock" % (tdir, n)).call("stats", by="user")["by_user"].get("ci:alice", {}).items():
        local[k] = local.get(k, 0) + v
assert local["total_tokens"] == r["tokens"], (local, r)
deadline = time.time() + 20
while True:
    f = Conn("%s/alpha.sock" % tdir).call("stats", fleet=True, by="user")
    if f["by_user"].get("ci:alice", {}).get("requests") == local["requests"]:
        break
    assert time.time() < deadline, (f["by_user"], local)
    time.sleep(0.2)
a = f["by_user"]["ci:alice"]
assert a["total_tokens"] == r["tokens"] and a["errors"] == r["refused"], (a, r)
assert list(f["by_user"])[-1] == "ci:alice", ("a named user sorts after the uids", list(f["by_user"]))
b = [b for b in f["budgets"] if b["scope"] == "user:ci:alice"]
assert len(b) == 1 and b[0]["used"] == r["tokens"] and b[0]["left"] == 400 - r["tokens"], b
rows = Conn("%s/beta.sock" % tdir).call("logs", fleet=True, user="ci:alice", limit=1000)["rows"]
assert len(rows) == a["requests"], (len(rows), a)
assert all(w["user"] == "ci:alice" and w["uid"] == 4294967295 for w in rows), rows
assert {w["node"] for w in rows} == {"alpha", "beta"}, rows
rows = Conn("%s/beta.sock" % tdir).call("logs", fleet=True, limit=1000)["rows"]
assert all(("user" in w) == (w["uid"] == 4294967295) for w in rows), rows
print("ci:alice: %d tokens of 400 across both nodes; fleet stats and logs name her" % r["tokens"])
PY
OPENLLMD_SOCKET="$TEST_DIR/alpha.sock" "$top_builddir/client/ollmctl" stats --fleet --by user |
    grep -q "^ *ci:alice " || fail "ollmctl stats --fleet --by user shows no ci:alice"

# 1c. a database that does not answer (the budget's row locked for 6 s): a
#     request larger than the node's lease waits for more and gets
#     fleet_unavailable after about 3 s; a client that cancels, or goes away,
#     while it waits leaves nothing reserved or leased once the records are
#     shipped
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
w = waits.request("chat", messages=[{"role": "user", "content": "w"}], tag="slow", max_tokens=5000)
c = cancels.request("chat", messages=[{"role": "user", "content": "c"}], tag="slow", max_tokens=5000)
leaves.request("chat", messages=[{"role": "user", "content": "l"}], tag="slow", max_tokens=5000)
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
[ "$(psql "SELECT count(*) FROM ollm_lease WHERE budget LIKE 'tag:slow %'")" = 0 ] || fail "slow: leases left over"

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

# 4. "local": nodes under load hold leases of budget "share"; with the
#    database stopped they serve on against them, never past them
#    (budget_exceeded names the lease) and a budget they hold no lease of
#    is fleet_unavailable; the leases expire meanwhile (fleet_lease_ttl 2 s)
#    and are charged as used; once the database is back the records count
#    against the charge and the nodes close the leases: the fleet's usage
#    ends equal to the records, nothing held
kill -TERM "$alpha_pid" "$beta_pid"
wait "$alpha_pid" "$beta_pid" || fail "a node did not stop cleanly"
FLEET_TTL=2 start_node alpha local
FLEET_TTL=2 start_node beta local
$PYTHON - "$TEST_DIR" "$pg_bin/pg_ctl" "$pg_dir/data" "$(id -u)" >"$TEST_DIR/local.json" <<'PY' ||
import json, subprocess, sys, threading, time
from olc import Conn
tdir, pg_ctl, data, uid = sys.argv[1:]
stop = threading.Event()
stopping = threading.Event()
down = threading.Event()
out = {"before": 0, "served": 0, "tokens": 0, "lease_refused": 0, "unavailable": 0, "other": []}
lock = threading.Lock()
def load(node):
    c = Conn("%s/%s.sock" % (tdir, node), timeout=20)
    i = 0
    while not stop.is_set():
        i += 1
        _, r = c.chat("l%d [[words=20 delay_ms=1]]" % i, tag="share", max_tokens=60)
        with lock:
            if r["type"] == "done":
                if down.is_set():
                    out["served"] += 1
                    out["tokens"] += r["usage"]["total_tokens"]
                else:
                    out["before"] += 1
            elif r["code"] == "budget_exceeded" and "lease" in r["message"] and down.is_set():
                out["lease_refused"] += 1
            elif r["code"] == "fleet_unavailable" and stopping.is_set():
                out["unavailable"] += 1     # cut while the database stopped
            else:
                out["other"].append(r)
        if r["type"] == "error":
            time.sleep(0.02)
ts = [threading.Thread(target=load, args=(n,)) for n in ("alpha", "beta") for _ in range(2)]
for t in ts: t.start()
time.sleep(2)
cmd = [pg_ctl, "-D", data, "-m", "fast", "-w", "stop"]
if uid == "0":
    cmd = ["runuser", "-u", "postgres", "--"] + cmd
stopping.set()
subprocess.run(cmd, check=True, capture_output=True)
down.set()
time.sleep(4)
# a budget no node holds a lease of, while the database is away
_, r = Conn("%s/alpha.sock" % tdir).chat("x", tag="away", max_tokens=20)
stop.set()
for t in ts: t.join()
out["away"] = r
print(json.dumps(out))
PY
	fail "local: $(cat "$TEST_DIR/local.json")"
echo "database down, local: $(cat "$TEST_DIR/local.json")"
$PYTHON - "$(cat "$TEST_DIR/local.json")" <<'PY'
import json, sys
r = json.loads(sys.argv[1])
assert r["before"] > 0 and not r["other"], r
assert r["served"] > 0, ("nothing served against the leases", r)
assert r["lease_refused"] > 0, ("the leases were not used up", r)
a = r["away"]
assert a["type"] == "error" and a["code"] == "fleet_unavailable" and "fleet_offline is local" in a["message"], a
PY
pg_start
used=$(settled share)
[ "$used" -le 100000 ] || fail "share: shared usage $used over 100000"
grep -q "lease of budget tag:share tokens/month expired" "$TEST_DIR/alpha.log" "$TEST_DIR/beta.log" ||
	fail "no lease expired while the database was away"

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

# 5a. an overall money budget on alpha only: alpha's fleet stats show it as
#     max_budget and budget_left, the fleet's usage of it; beta's do not
kill -TERM "$alpha_pid"
wait "$alpha_pid" || fail "alpha did not stop cleanly"
start_node alpha local 50
for i in 1 2 3; do
	OPENLLMD_SOCKET="$TEST_DIR/alpha.sock" $PYTHON -c '
from olc import Conn
_, r = Conn().chat("priced", max_tokens=20)
assert r["type"] == "done", r'
done
$PYTHON - "$TEST_DIR" "$pg_bin/psql" "$pg_dir" <<'PY'
import subprocess, sys, time
from olc import Conn
tdir, psql, host = sys.argv[1:]
def sql(q):
    return subprocess.run([psql, "-h", host, "-U", "ollm", "-d", "postgres", "-Atq", "-c", q],
                          capture_output=True, text=True).stdout.split()
deadline = time.time() + 20
while True:
    row = sql("SELECT used, reserved + leased FROM ollm_budget WHERE budget = 'all money/ever'")
    shipped = sql("SELECT count(*) FROM ollm_usage WHERE node = 'alpha'")
    local = Conn("%s/alpha.sock" % tdir).call("stats")["total"]["requests"]
    if len(row) == 1 and row[0].split("|")[1] == "0" and shipped == [str(local)]:
        break
    assert time.time() < deadline, (row, shipped, local)
    time.sleep(0.2)
used = int(row[0].split("|")[0]) / 1e9
assert used > 0, row
f = Conn("%s/alpha.sock" % tdir).call("stats", fleet=True)
assert f["max_budget"] == 50 and abs(f["budget_left"] - (50 - used)) < 1e-9, (f["max_budget"], f["budget_left"], used)
b = [b for b in f["budgets"] if b["scope"] == "all"]
assert len(b) == 1 and (b[0]["unit"], b[0]["period"]) == ("money", "ever"), f["budgets"]
assert abs(b[0]["used"] - used) < 1e-9 and b[0]["left"] == f["budget_left"], b
g = Conn("%s/beta.sock" % tdir).call("stats", fleet=True)
assert g["max_budget"] is None and not [b for b in g["budgets"] if b["scope"] == "all"], g
print("fleet stats on alpha: max_budget 50, left %.6f" % f["budget_left"])
PY
OPENLLMD_SOCKET="$TEST_DIR/alpha.sock" "$top_builddir/client/ollmctl" stats --fleet >"$TEST_DIR/fstats.txt" ||
	fail "ollmctl stats --fleet"
grep -q '^Budget: 50\.0000, left 49\.[0-9]\{4\}$' "$TEST_DIR/fstats.txt" ||
	fail "ollmctl stats --fleet: no overall budget in $(cat "$TEST_DIR/fstats.txt")"

# 6. a clean stop with the connection up (under ASan: nothing leaks)
for n in alpha beta; do
	eval "pid=\$${n}_pid"
	kill -TERM "$pid"
	wait "$pid" || fail "$n exited with status $?"
done
echo "fleet_budget: ok"
