#!/bin/sh
# Accounting survives a restart and a reload unchanged: requests that never
# reached the model server (refused for a budget, a full queue, a wait that
# expired, a cancel while queued, a server that refuses connections) are
# recorded at zero tokens and zero cost, so budgets rebuilt from the ledger
# equal the live ones.
. "$top_srcdir/tests/integration/lib.sh"
start_fake_upstream -q -m fake-model
export UPSTREAMS="{ name = \"fake\"; base_url = \"$FAKE_URL\"; model = \"fake-model\"; rpm = 0;
    max_concurrency = 1; queue_max = 1; queue_timeout = 1.0; },
  { name = \"dead\"; base_url = \"http://127.0.0.1:1/v1\"; model = \"dead-model\"; rpm = 0;
    retries = 1; }"
start_daemon 'budgets = (
  { scope = "tag"; who = "hundred"; unit = "tokens"; period = "day"; limit = 100; },
  { scope = "tag"; who = "waiter"; unit = "tokens"; period = "day"; limit = 1000000; },
  { scope = "all"; unit = "tokens"; period = "month"; limit = 100000000; } );'

"$PYTHON" - "$TEST_DIR/before.json" <<'PY'
import json, sys, threading, time
from olc import Conn

def check(cond, what):
    if not cond:
        raise AssertionError(what)

c = Conn()
for i in range(3):
    deltas, end = c.chat("fine %d [[chunks=3]]" % i, tag="ok")
    check(end["type"] == "done", end)
# refused for its budget: the prompt alone (over 100 tokens) does not fit in 100
for i in range(2):
    deltas, end = c.chat("too much " * 60, tag="hundred", max_tokens=200)
    check(end["type"] == "error" and end["code"] == "budget_exceeded", end)
    check(end["detail"]["fit"] == -1, end)

# a model server that refuses connections
deltas, end = c.chat("nobody home", model="dead-model", tag="dead")
check(end["type"] == "error" and end["code"] == "upstream_unavailable", end)

# one runner holds the only slot for ~2.4 s; the queue holds one
runner = {}
def run():
    runner["end"] = Conn(timeout=30).chat("runner [[chunks=6 delay_ms=400]]", tag="runner")[1]
t = threading.Thread(target=run)
t.start()
time.sleep(0.3)
waited = {}
def wait_in_queue():
    waited["end"] = Conn(timeout=30).chat("waiter", tag="waiter")[1]
w = threading.Thread(target=wait_in_queue)
w.start()
time.sleep(0.2)
deltas, end = Conn().chat("no room", tag="waiter")             # the queue is full
check(end["type"] == "error" and end["code"] == "rate_limited", end)
w.join()                                                       # its wait expired after 1 s
check(waited["end"]["type"] == "error" and waited["end"]["code"] == "rate_limited", waited)
q = Conn()
rid = q.request("chat", messages=[{"role": "user", "content": "cancel me"}], tag="waiter")
time.sleep(0.2)
cid = q.request("cancel", target=rid)
ends = {}
while len(ends) < 2:
    r = q.read()
    if r["type"] != "delta":
        ends[r["id"]] = r
check(ends[rid]["type"] == "error" and ends[rid]["code"] == "cancelled", ends)
check(ends[cid]["type"] == "result" and ends[cid]["ok"] is True, ends)
t.join()
check(runner["end"]["type"] == "done", runner)

s = Conn().call("stats")
tags = s["by_tag"]
for tag, n in (("hundred", 2), ("waiter", 3), ("dead", 1)):
    check(tags[tag]["requests"] == n and tags[tag]["errors"] == n, (tag, tags[tag]))
    check(tags[tag]["total_tokens"] == 0 and tags[tag]["cost"] == 0, (tag, tags[tag]))
check(tags["ok"]["requests"] == 3 and tags["ok"]["total_tokens"] > 0, tags["ok"])
budgets = {b["scope"]: b for b in s["budgets"]}
check(budgets["tag:hundred"]["used"] == 0 and budgets["tag:hundred"]["left"] == 100, budgets)
check(budgets["tag:waiter"]["used"] == 0, budgets)
check(budgets["all"]["used"] == s["total"]["total_tokens"], (budgets["all"], s["total"]))
json.dump(s, open(sys.argv[1], "w"), sort_keys=True)
PY

same_stats() {
	"$PYTHON" - "$TEST_DIR/before.json" "$1" <<'PY'
import json, sys
from olc import Conn
before = json.load(open(sys.argv[1]))
after = Conn().call("stats")
after.pop("id", None)
before.pop("id", None)
if before != after:
    for k in sorted(set(before) | set(after)):
        if before.get(k) != after.get(k):
            print("%s: %r before, %r after" % (k, before.get(k), after.get(k)), file=sys.stderr)
    raise SystemExit("stats changed across the %s" % sys.argv[2])
print("accounting: stats and budgets identical across the %s" % sys.argv[2])
PY
}

stop_daemon TERM
KEEP_CONFIG=1 start_daemon
same_stats restart

reloads=$(grep -c "configuration reloaded" "$TEST_DIR/daemon.log" || true)
kill -HUP "$DAEMON_PID"
i=0
until [ "$(grep -c "configuration reloaded" "$TEST_DIR/daemon.log")" -gt "$reloads" ]; do
	i=$((i + 1)); [ $i -lt 50 ] || fail "no reload after SIGHUP"; sleep 0.1
done
same_stats reload

# kill -9: rebuilt from the journal alone, still the same
stop_daemon KILL
KEEP_CONFIG=1 start_daemon
same_stats "crash"

# the 100-token budget that admitted nothing still admits a small request
"$PYTHON" -c '
from olc import Conn
d, end = Conn().chat("small", tag="hundred", max_tokens=10)
assert end["type"] == "done", end
'
echo "accounting: all checks passed"
