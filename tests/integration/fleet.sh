#!/bin/sh
# Fleet mode against a real PostgreSQL started here: two daemons (nodes alpha
# and beta) ship their ledgers to one table. Records of both arrive once
# each; kill -9 of a node mid-run and a restart ship the rest once; with the
# database stopped the daemons serve on and ship the backlog when it is
# back; fleet stats equal the sum of what each node's local stats say.
. "$top_srcdir/tests/integration/lib.sh"
. "$top_srcdir/tests/integration/pg.sh"

start_fake_upstream -q -m fake-model

# start_node NAME: a daemon with its own socket and state, node NAME.
start_node() {
	cat >"$TEST_DIR/$1.conf" <<EOF
socket = "$TEST_DIR/$1.sock";
state_dir = "$TEST_DIR/$1-state";
log_level = "debug";
fsync = "no";
fleet_postgres = "host=$pg_dir dbname=postgres user=ollm";
fleet_node = "$1";
max_budget = 0;
upstreams = ( { name = "fake"; base_url = "$FAKE_URL"; model = "fake-model";
  rpm = 0; max_concurrency = 0; retries = 2; prompt_price = 0.5; completion_price = 1.5; } );
EOF
	"$top_builddir/daemon/openllmd" -f -c "$TEST_DIR/$1.conf" >>"$TEST_DIR/$1.log" 2>&1 &
	eval "${1}_pid=$!"
	TEST_PIDS="$TEST_PIDS $!"
	OPENLLMD_SOCKET="$TEST_DIR/$1.sock" $PYTHON -m olc wait 10
}

# chats NAME COUNT: COUNT chats on node NAME, each must end with done.
# chats NODE N [DIRECTIVES]: N chats one after another on node NODE.
chats() {
	$PYTHON - "$TEST_DIR/$1.sock" "$2" "$1" "${3:-}" <<'PY'
import sys
from olc import Conn
c = Conn(sys.argv[1])
extra = " [[%s]]" % sys.argv[4] if sys.argv[4] else ""
for i in range(int(sys.argv[2])):
    deltas, end = c.chat("hello %s %d%s" % (sys.argv[3], i, extra), tag=sys.argv[3])
    assert end["type"] == "done", end
PY
}

# shipped NAME: wait until the table holds every record of node NAME's local stats, once.
shipped() {
	$PYTHON - "$TEST_DIR/$1.sock" "$1" "$pg_bin/psql" "$pg_dir" <<'PY'
import subprocess, sys, time
from olc import Conn
sock, node, psql, host = sys.argv[1:]
local = Conn(sock).call("stats")["total"]["requests"]
q = "SELECT count(*), count(DISTINCT seq), coalesce(max(seq), 0) FROM ollm_usage WHERE node = '%s'" % node
deadline = time.time() + 20
while True:
    out = subprocess.run([psql, "-h", host, "-U", "ollm", "-d", "postgres", "-Atq", "-F", " ",
                          "-c", q], capture_output=True, text=True).stdout.split()
    n, distinct, top = (int(x) for x in out) if len(out) == 3 else (-1, -1, -1)
    if n == local:
        break
    assert time.time() < deadline, "node %s: %d records in the table, %d locally" % (node, n, local)
    time.sleep(0.2)
assert distinct == n and top == n, (node, n, distinct, top)
print("%s: all %d records in the table once" % (node, n))
PY
}

# 0. a database left at schema version 3 (one plain ollm_usage table), with
#    records of a node "old" from two months: moved on to version 4 when the
#    nodes connect: the records kept (the old table becomes the first
#    monthly partition), counted in the rollups, the node's position kept
psql "CREATE TABLE ollm_schema_version (version integer PRIMARY KEY,
    applied timestamptz NOT NULL DEFAULT now());
  INSERT INTO ollm_schema_version (version) VALUES (1), (2), (3);
  CREATE TABLE ollm_usage (node text NOT NULL, seq bigint NOT NULL, time timestamptz NOT NULL,
    uid bigint NOT NULL, tag text NOT NULL, model text NOT NULL, upstream text NOT NULL,
    prompt_tokens bigint NOT NULL, completion_tokens bigint NOT NULL, estimated boolean NOT NULL,
    cost double precision NOT NULL, status text NOT NULL, error_code text,
    latency_ms bigint NOT NULL, reservation bigint, PRIMARY KEY (node, seq));
  CREATE INDEX ollm_usage_time ON ollm_usage (time);
  ALTER TABLE ollm_usage ADD COLUMN user_name text NOT NULL DEFAULT '';
  CREATE TABLE ollm_node (node text PRIMARY KEY, seen timestamptz NOT NULL);
  INSERT INTO ollm_usage VALUES ('old', 1, now() - interval '40 days', 1000, '', 'm', 'u', 1, 2,
    false, 0, 'done', NULL, 5, NULL, ''), ('old', 2, now(), 4294967295, 't', 'm', 'u', 3, 4,
    true, 0.5, 'error', 'timeout', 6, NULL, 'carol');"

# 1. two nodes: the records of both appear once each
# 1. two nodes: the records of both appear once each
start_node alpha
start_node beta
chats alpha 15 &
chats beta 12
wait $! || fail "chats on alpha failed"
shipped alpha
shipped beta
[ "$(psql "SELECT max(version) FROM ollm_schema_version")" = 4 ] || fail "schema version"
[ "$(psql "SELECT string_agg(uid || ':' || user_name || ':' || status, ' ' ORDER BY seq)
    FROM ollm_usage WHERE node = 'old'")" = "1000::done 4294967295:carol:error" ] ||
	fail "the version 3 records after the move: $(psql "SELECT * FROM ollm_usage WHERE node = 'old'")"
for t in ollm_rollup ollm_rollup_day; do
	[ "$(psql "SELECT sum(requests), sum(prompt_tokens + completion_tokens), sum(estimated)
	    FROM $t WHERE node = 'old'")" = "2|10|1" ] ||
		fail "the version 3 records in $t: $(psql "SELECT * FROM $t WHERE node = 'old'")"
done
[ "$(psql "SELECT shipped FROM ollm_node WHERE node = 'old'")" = 2 ] || fail "old's position"
[ "$(psql "SELECT relkind FROM pg_class WHERE relname = 'ollm_usage'")" = p ] &&
	[ "$(psql "SELECT count(*) FROM pg_inherits WHERE inhparent = 'ollm_usage'::regclass")" -ge 2 ] ||
	fail "ollm_usage is not partitioned: $(psql "SELECT * FROM ollm_partition")"
$PYTHON - "$TEST_DIR/alpha.sock" <<'PY'
import sys
from olc import Conn
f = Conn(sys.argv[1]).call("stats", fleet=True, by="user")
o = f["by_node"]["old"]
assert (o["requests"], o["errors"], o["total_tokens"], o["estimated"]) == (2, 1, 10, 1), o
assert f["by_user"]["carol"]["requests"] == 1 and f["by_user"]["1000"]["requests"] >= 1, f["by_user"]
PY
psql "DELETE FROM ollm_usage WHERE node = 'old'; DELETE FROM ollm_rollup WHERE node = 'old';
    DELETE FROM ollm_rollup_day WHERE node = 'old'"

# 2. kill -9 of alpha in the middle of a run, then a restart: the rest is shipped once
chats alpha 200 "delay_ms=10" >/dev/null 2>&1 &   # 40 ms each: about 8 s in all
load=$!
$PYTHON - "$TEST_DIR/alpha.sock" <<'PY'
import sys, time
from olc import Conn
deadline = time.time() + 30
while Conn(sys.argv[1]).call("stats")["total"]["requests"] < 40:
    assert time.time() < deadline, "alpha served no load"
    time.sleep(0.05)
PY
kill -9 "$alpha_pid"
wait "$load" 2>/dev/null || true
wait "$alpha_pid" 2>/dev/null || true
start_node alpha
chats alpha 3
shipped alpha
n=$(psql "SELECT count(*) FROM ollm_usage WHERE node = 'alpha'")
[ "$n" -ge 43 ] && [ "$n" -lt 218 ] || fail "the run was not killed in the middle ($n records)"

# 3. PostgreSQL away: both serve on; afterwards the backlog is there, once
pg_stop
chats alpha 10
chats beta 10
i=0
until grep -q "fleet: .*serving on" "$TEST_DIR/alpha.log"; do
	i=$((i + 1))
	[ "$i" -le 50 ] || { tail -n 40 "$TEST_DIR/alpha.log"; fail "alpha did not notice the outage"; }
	sleep 0.1
done
$PYTHON - "$TEST_DIR/alpha.sock" <<'PY'
import sys
from olc import Conn
r = Conn(sys.argv[1]).call("stats", fleet=True)
assert r["type"] == "error" and r["code"] == "fleet_unavailable", r
print("fleet stats while the database is away: %s" % r["message"])
PY
pg_start
shipped alpha
shipped beta

# 4. fleet stats equal the sum of each node's local stats, with a by_node breakdown
$PYTHON - "$TEST_DIR/alpha.sock" "$TEST_DIR/beta.sock" <<'PY'
import sys
from olc import Conn
a = Conn(sys.argv[1]).call("stats")
b = Conn(sys.argv[2]).call("stats")
for sock in sys.argv[1:]:
    f = Conn(sock).call("stats", fleet=True)
    assert f["type"] == "result", f
    for k in ("requests", "errors", "prompt_tokens", "completion_tokens", "total_tokens", "estimated"):
        assert f["total"][k] == a["total"][k] + b["total"][k], (k, f["total"], a["total"], b["total"])
    assert abs(f["total"]["cost"] - a["total"]["cost"] - b["total"]["cost"]) < 1e-9, f["total"]
    assert f["by_node"]["alpha"]["requests"] == a["total"]["requests"], f["by_node"]
    assert f["by_node"]["beta"]["requests"] == b["total"]["requests"], f["by_node"]
    assert f["by_tag"]["alpha"]["requests"] == a["by_tag"]["alpha"]["requests"], f["by_tag"]
    assert set(f["by_model"]) == {"fake-model"}, f["by_model"]
import time
f = Conn(sys.argv[1]).call("stats", fleet=True)
assert f["since"] % 86400 == 0 and 0 <= time.time() - f["since"] <= 2 * 86400, f["since"]
g = Conn(sys.argv[1]).call("stats", fleet=True, since=int(time.time()) - 86400)
assert g["since"] % 86400 == 0 and g["total"]["requests"] == f["total"]["requests"], (g, f)
g = Conn(sys.argv[1]).call("stats", fleet=True, since=int(time.time()) + 2 * 86400)
assert g["total"]["requests"] == 0 and not g.get("by_node"), g
d = Conn(sys.argv[1]).call("stats", fleet=True, by="day")
assert sum(c["requests"] for c in d["by_day"].values()) == a["total"]["requests"] + b["total"]["requests"], d
assert "by_model" not in d or not d["by_model"], d
print("fleet stats: %d requests = %d (alpha) + %d (beta)" % (
    a["total"]["requests"] + b["total"]["requests"], a["total"]["requests"], b["total"]["requests"]))
PY

# ... and through ollmctl stats --fleet, as JSON and as tables
OPENLLMD_SOCKET="$TEST_DIR/beta.sock" "$top_builddir/client/ollmctl" stats --fleet --json \
    >"$TEST_DIR/fleet.json" || fail "ollmctl stats --fleet --json"
$PYTHON - "$TEST_DIR/fleet.json" <<'PY'
import json, sys
s = json.load(open(sys.argv[1]))
assert set(s["by_node"]) == {"alpha", "beta"}, s["by_node"]
assert sum(c["requests"] for c in s["by_node"].values()) == s["total"]["requests"], s
PY
OPENLLMD_SOCKET="$TEST_DIR/beta.sock" "$top_builddir/client/ollmctl" stats --fleet >"$TEST_DIR/fleet.txt" ||
	fail "ollmctl stats --fleet"
grep -q "^ *alpha " "$TEST_DIR/fleet.txt" && grep -q "^ *beta " "$TEST_DIR/fleet.txt" ||
	fail "no by-node table: $(cat "$TEST_DIR/fleet.txt")"

# ... fleet logs: every node's rows, newest first, as the database has them
total=$(psql "SELECT count(*) FROM ollm_usage")
$PYTHON - "$TEST_DIR/alpha.sock" "$total" <<'PY'
import sys
from olc import Conn
c = Conn(sys.argv[1])
total = int(sys.argv[2])
r = c.call("logs", fleet=True, limit=1000)
assert r["type"] == "result", r
rows = r["rows"]
assert len(rows) == min(total, 1000), (len(rows), total)
assert {w["node"] for w in rows} == {"alpha", "beta"}, {w["node"] for w in rows}
assert all(rows[i]["time_ms"] >= rows[i + 1]["time_ms"] for i in range(len(rows) - 1)), "not newest first"
local = Conn(sys.argv[1]).call("logs", limit=5)["rows"]
assert all("node" not in w for w in local), local
beta = c.call("logs", fleet=True, tag="beta", limit=1000)["rows"]
assert beta and all(w["node"] == "beta" and w["tag"] == "beta" for w in beta), beta
assert len(c.call("logs", fleet=True, limit=3)["rows"]) == 3
done = c.call("logs", fleet=True, status="done", limit=1000)["rows"]
assert all(w["status"] == "done" for w in done), done
assert c.call("logs", fleet=True, since=2**31)["rows"] == []
print("fleet logs: %d rows of %d" % (len(rows), total))
PY
OPENLLMD_SOCKET="$TEST_DIR/beta.sock" "$top_builddir/client/ollmctl" logs --fleet -n 1000 \
    >"$TEST_DIR/flogs.txt" || fail "ollmctl logs --fleet"
head -n 1 "$TEST_DIR/flogs.txt" | grep -q "^TIME  *NODE  *USER" || fail "no NODE column: $(head -n 2 "$TEST_DIR/flogs.txt")"
grep -q " alpha " "$TEST_DIR/flogs.txt" && grep -q " beta " "$TEST_DIR/flogs.txt" ||
	fail "ollmctl logs --fleet: $(head -n 5 "$TEST_DIR/flogs.txt")"
OPENLLMD_SOCKET="$TEST_DIR/beta.sock" "$top_builddir/client/ollmctl" logs --fleet --json -n 5 |
    $PYTHON -c 'import json, sys; r = json.load(sys.stdin)["rows"]; assert len(r) == 5 and all(w["node"] for w in r), r' ||
	fail "ollmctl logs --fleet --json"

# 5. a bad by is refused before the database is asked
r=$(OPENLLMD_SOCKET="$TEST_DIR/beta.sock" $PYTHON -c '
from olc import Conn
print(Conn().call("stats", fleet=True, by="week").get("code"))')
[ "$r" = bad_request ] || fail "by=week: $r"
# 6. after a reset of alpha (its journal files are
#    numbered from 1 again) new records are still shipped
before=$(psql "SELECT count(*) FROM ollm_usage WHERE node = 'alpha'")
r=$(OPENLLMD_SOCKET="$TEST_DIR/alpha.sock" $PYTHON -c '
from olc import Conn
print(Conn().call("reset")["type"])')
[ "$r" = result ] || fail "reset: $r"
chats alpha 4
i=0
until [ "$(psql "SELECT count(*) FROM ollm_usage WHERE node = 'alpha'")" -eq $((before + 4)) ]; do
	i=$((i + 1))
	[ "$i" -le 100 ] || fail "after a reset: $(psql "SELECT count(*) FROM ollm_usage WHERE node = 'alpha'") records, want $((before + 4))"
	sleep 0.1
done
[ "$(psql "SELECT count(DISTINCT seq) FROM ollm_usage WHERE node = 'alpha'")" -eq $((before + 4)) ] ||
	fail "after a reset: numbers used twice"
# 7. without fleet_postgres nothing is connected, and fleet stats say why
start_daemon
$PYTHON - <<'PY'
from olc import Conn
r = Conn().call("stats", fleet=True)
assert r["type"] == "error" and r["code"] == "fleet_unavailable" and "fleet_postgres" in r["message"], r
r = Conn().call("logs", fleet=True)
assert r["type"] == "error" and r["code"] == "fleet_unavailable" and "fleet_postgres" in r["message"], r
assert Conn().call("stats")["type"] == "result"
PY
# ... and ollmctl exits 69 (unavailable), naming the cause
for cmd in stats logs; do
	rc=0
	"$top_builddir/client/ollmctl" $cmd --fleet >/dev/null 2>"$TEST_DIR/err" || rc=$?
	[ "$rc" -eq 69 ] && grep -q "fleet database unavailable: .*fleet_postgres" "$TEST_DIR/err" ||
		fail "ollmctl $cmd --fleet without a fleet: exit $rc, $(cat "$TEST_DIR/err")"
done
! grep -q "fleet:" "$TEST_DIR/daemon.log" || fail "a daemon without fleet_postgres spoke of a fleet"
stop_daemon

# 8. a clean stop with the connection up (under ASan: nothing leaks)
for n in alpha beta; do
	eval "pid=\$${n}_pid"
	kill -TERM "$pid"
	wait "$pid" || fail "$n exited with status $?"
done
echo "fleet: ok"
