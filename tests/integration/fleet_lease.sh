#!/bin/sh
# Fleet budgets through leases, against a real PostgreSQL started here, with
# three daemons (alpha, beta, gamma; fleet_lease_ttl 3 s):
#  1. a burst of 60 requests at once over two nodes on a budget that fits
#     about 40 of them: never over, at least 85% of it used;
#  2. steady load on all three until a budget is spent, with gamma killed
#     (kill -9) while it holds a lease, and the database restarted meanwhile:
#     gamma's lease expires after fleet_lease_ttl and is charged as used;
#     alpha and beta (fleet_offline "local") serve on against their leases
#     while the database is away; gamma restarted ships its records and
#     closes its old lease; the budget is never overshot, at least 85% of it
#     is used, and the fleet's usage ends equal to the records, nothing
#     reserved or leased; most requests cost no database round trip
#     (admitted against a lease, not by a reservation each);
#  3. retention: a node that keeps every record leaves a month of raw
#     records 200 days old; one that keeps 90 days drops its partition.
. "$top_srcdir/tests/integration/lib.sh"
. "$top_srcdir/tests/integration/pg.sh"

start_fake_upstream -q -m fake-model

# start_node NAME OFFLINE: a daemon with its own socket and state, node NAME.
start_node() {
	cat >"$TEST_DIR/$1.conf" <<EOF
socket = "$TEST_DIR/$1.sock";
state_dir = "$TEST_DIR/$1-state";
log_level = "debug";
fsync = "no";
fleet_postgres = "host=$pg_dir dbname=postgres user=ollm";
fleet_node = "$1";
fleet_offline = "$2";
fleet_lease_ttl = 3;
fleet_retention_days = ${RETENTION:-90};
http_listen = ( );
max_budget = 0;
budgets = (
  { scope = "tag"; who = "burst"; unit = "tokens"; period = "day"; limit = 1800; },
  { scope = "tag"; who = "steady"; unit = "tokens"; period = "day"; limit = 40000; } );
upstreams = ( { name = "fake"; base_url = "$FAKE_URL"; model = "fake-model";
  rpm = 0; max_concurrency = 0; retries = 0; prompt_price = 0.5; completion_price = 1.5; } );
EOF
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

# settled TAG LIMIT: wait until the fleet's usage of TAG equals its records in
# the table and in the nodes' ledgers, nothing reserved or leased; prints it.
settled() {
	i=0
	while :; do
		row=$(psql "SELECT coalesce(sum(used), 0), coalesce(sum(reserved), 0), coalesce(sum(leased), 0)
		    FROM ollm_budget WHERE budget LIKE 'tag:$1 %'")
		rows=$(psql "SELECT coalesce(sum(prompt_tokens + completion_tokens), 0) FROM ollm_usage WHERE tag = '$1'")
		leases=$(psql "SELECT count(*) FROM ollm_lease WHERE budget LIKE 'tag:$1 %'")
		loc=$($PYTHON - "$TEST_DIR" "$1" <<'PY'
import sys
from olc import Conn
t = 0
for n in ("alpha", "beta", "gamma"):
    s = Conn("%s/%s.sock" % (sys.argv[1], n)).call("stats", by="tag")
    t += s.get("by_tag", {}).get(sys.argv[2], {}).get("total_tokens", 0)
print(t)
PY
)
		[ "$row" = "$rows|0|0" ] && [ "$rows" = "$loc" ] && [ "$leases" = 0 ] && break
		i=$((i + 1))
		[ "$i" -le 150 ] || fail "tag $1: used|reserved|leased $row, records $rows, local $loc, $leases leases: $(psql "SELECT * FROM ollm_lease")"
		sleep 0.2
	done
	echo "$rows"
}

start_node alpha local
start_node beta local
start_node gamma refuse

# 1. the burst: 30 requests on alpha and 30 on beta at once, each about 43
#    tokens (worst case 56); 1800 fit about 41
$PYTHON - "$TEST_DIR" >"$TEST_DIR/burst.json" <<'PY' || fail "burst: $(cat "$TEST_DIR/burst.json")"
import json, sys, threading
from olc import Conn
tdir = sys.argv[1]
out = {"served": 0, "tokens": 0, "refused": 0, "other": []}
lock = threading.Lock()
conns = [Conn("%s/%s.sock" % (tdir, n), timeout=60) for n in ("alpha", "beta") for _ in range(30)]
go = threading.Barrier(len(conns))
def one(c):
    go.wait()
    _, r = c.chat("[[words=20 delay_ms=5]]", tag="burst", max_tokens=40)
    with lock:
        if r["type"] == "done":
            out["served"] += 1
            out["tokens"] += r["usage"]["total_tokens"]
        elif r["code"] == "budget_exceeded" and "across the fleet" in r["message"]:
            out["refused"] += 1
        else:
            out["other"].append(r)
ts = [threading.Thread(target=one, args=(c,)) for c in conns]
for t in ts: t.start()
for t in ts: t.join()
print(json.dumps(out))
PY
echo "burst: $(cat "$TEST_DIR/burst.json")"
used=$(settled burst)
$PYTHON - "$(cat "$TEST_DIR/burst.json")" "$used" <<'PY'
import json, sys
r, used = json.loads(sys.argv[1]), int(sys.argv[2])
assert not r["other"], r
assert r["tokens"] == used <= 1800, ("over the budget", r, used)
assert used >= 0.85 * 1800, ("less than 85% of the budget used", r, used)
assert r["refused"] > 0, r
print("burst: %d of 1800 tokens used (%.0f%%), %d served, %d refused" % (
    used, 100.0 * used / 1800, r["served"], r["refused"]))
PY

# 2. steady load on the three until the budget is spent
$PYTHON - "$TEST_DIR" >"$TEST_DIR/steady.json" <<'PY' &
import json, sys, threading, time
from olc import Conn
tdir = sys.argv[1]
events = []
lock = threading.Lock()
failures = []
def client(node):
    try:
        run(node)
    except Exception as e:
        failures.append(repr(e))
def run(node):
    deadline = time.time() + 90
    refused_since = None
    c = None
    i = 0
    while refused_since is None or time.time() - refused_since < 2:
        assert time.time() < deadline, "the budget was not spent within 90 s"
        i += 1
        try:
            if c is None:
                c = Conn("%s/%s.sock" % (tdir, node), timeout=20)
            _, r = c.chat("s%d [[words=20 delay_ms=2]]" % i, tag="steady", max_tokens=40)
        except (OSError, EOFError):
            c = None            # killed under us, or not back yet
            with lock:
                events.append((time.time(), node, "lost", 0, ""))
            time.sleep(0.1)
            continue
        with lock:
            if r["type"] == "done":
                refused_since = None
                events.append((time.time(), node, "done", r["usage"]["total_tokens"], ""))
            else:
                if refused_since is None:
                    refused_since = time.time()
                events.append((time.time(), node, r["code"], 0, r["message"]))
        if r["type"] == "error":
            time.sleep(0.05)
ts = [threading.Thread(target=client, args=(n,)) for n in ("alpha", "beta", "gamma") for _ in range(2)]
for t in ts: t.start()
for t in ts: t.join()
print(json.dumps({"events": events, "failures": failures}))
PY
load=$!
# gamma holds a lease: kill -9 it
i=0
until [ "$(psql "SELECT count(*) FROM ollm_lease WHERE node = 'gamma' AND amount > 0 AND NOT expired")" = 1 ] &&
    [ "$(psql "SELECT count(*) FROM ollm_usage WHERE node = 'gamma' AND tag = 'steady'")" -ge 20 ]; do
	i=$((i + 1))
	[ "$i" -le 100 ] || fail "gamma never held a lease: $(psql "SELECT * FROM ollm_lease")"
	sleep 0.1
done
kill -9 "$gamma_pid"
killed=$(date +%s.%N)
wait "$gamma_pid" 2>/dev/null || true
echo "gamma killed holding $(psql "SELECT amount FROM ollm_lease WHERE node = 'gamma'") tokens of lease"
# the database restarted while alpha and beta serve
pg_stop
down=$(date +%s.%N)
sleep 1.5
pg_start
up=$(date +%s.%N)
# gamma's lease expires fleet_lease_ttl after its last heartbeat: charged as used
i=0
until [ "$(psql "SELECT expired AND charge > 0 FROM ollm_lease WHERE node = 'gamma'")" = t ]; do
	i=$((i + 1))
	[ "$i" -le 100 ] || fail "gamma's lease did not expire: $(psql "SELECT * FROM ollm_lease")"
	sleep 0.1
done
expired=$(date +%s.%N)
start_node gamma refuse
wait "$load" || fail "the steady load failed"
$PYTHON - "$TEST_DIR/steady.json" "$killed" "$down" "$up" "$expired" >"$TEST_DIR/steady.txt" <<'PY' ||
import json, sys
d = json.load(open(sys.argv[1]))
killed, down, up, expired = (float(x) for x in sys.argv[2:])
assert not d["failures"], d["failures"]
ev = d["events"]
done = [e for e in ev if e[2] == "done"]
codes = {}
for e in ev:
    codes[e[2]] = codes.get(e[2], 0) + 1
tokens = sum(e[3] for e in done)
during = [e for e in done if down + 0.2 < e[0] < up and e[1] in ("alpha", "beta")]
assert tokens <= 40000, ("over the budget", tokens, codes)
assert during, ("nothing served against the leases while the database was away", codes)
assert [e for e in ev if e[1] == "gamma" and e[2] == "lost"], "the kill did not land"
assert [e for e in done if e[1] == "gamma" and e[0] > expired], "gamma served nothing after its restart"
bad = [e for e in ev if e[2] not in ("done", "lost", "budget_exceeded")
       and not (e[2] == "fleet_unavailable" and down - 0.5 < e[0] < up + 5)]
assert not bad, ("unexpected errors", bad[:3])
print(json.dumps({"tokens": tokens, "served": len(done), "codes": codes,
                  "served_while_away": len(during)}))
PY
	fail "steady: $(cat "$TEST_DIR/steady.txt")"
echo "steady: $(cat "$TEST_DIR/steady.txt")"
used=$(settled steady)
served=$($PYTHON -c 'import json, sys; print(json.load(open(sys.argv[1]))["served"])' "$TEST_DIR/steady.txt")
tokens=$($PYTHON -c 'import json, sys; print(json.load(open(sys.argv[1]))["tokens"])' "$TEST_DIR/steady.txt")
[ "$used" -le 40000 ] || fail "steady: $used used of 40000"
[ "$used" -ge 34000 ] || fail "steady: only $used of 40000 used (less than 85%)"
[ "$tokens" -le "$used" ] || fail "steady: clients saw $tokens tokens, the fleet counts $used"
# back, gamma closes the lease that expired while it was dead, once its
# records are shipped: the charge left over is given back
i=0
until [ "$(psql "SELECT count(*) FROM ollm_lease WHERE node = 'gamma' AND expired")" = 0 ]; do
	i=$((i + 1))
	[ "$i" -le 100 ] || fail "gamma did not close its expired lease: $(psql "SELECT * FROM ollm_lease")"
	sleep 0.1
done
# one transaction per lease, not per request: most records were admitted
# against a lease (their reservation id has bit 62 set), the rest near the
# end, one reservation each
mix=$(psql "SELECT count(*) FILTER (WHERE reservation >= 4611686018427387904) || ' '
    || count(*) FILTER (WHERE reservation < 4611686018427387904) FROM ollm_usage
    WHERE tag = 'steady' AND status = 'done'")
leased=${mix% *}
reserved=${mix#* }
calls=$(psql "SELECT coalesce(sum(calls), 0) FROM pg_stat_user_functions WHERE funcname = 'ollm_lease'")
echo "steady: $used of 40000 tokens used, $served requests served: $leased against leases," \
    "$reserved by a reservation each; $calls lease statements in all"
[ "$leased" -ge $((served * 7 / 10)) ] || fail "steady: only $leased of $served requests against leases"

# 3. retention: a month of raw records 200 days old. A node that keeps
#     every record (fleet_retention_days = 0) leaves its partition; one
#     that keeps 90 days drops it within its first upkeep, and the recent
#     partitions stay. A record older than that shipped late is counted in
#     the rollups but not stored raw.
psql "SELECT ollm_usage_partitions(now() - interval '200 days', now() - interval '200 days');
  INSERT INTO ollm_usage (node, seq, time, uid, tag, model, upstream, prompt_tokens,
    completion_tokens, estimated, cost, status, error_code, latency_ms, reservation, user_name)
  VALUES ('ancient', 1, now() - interval '200 days', 1, '', 'm', 'u', 1, 1, false, 0, 'done',
    NULL, 1, NULL, '')"
old_part=$(psql "SELECT name FROM ollm_partition WHERE lo <= now() - interval '200 days'
    AND now() - interval '200 days' < hi")
[ -n "$old_part" ] || fail "no partition for 200 days ago"
kill -TERM "$gamma_pid"
wait "$gamma_pid" || fail "gamma did not stop cleanly"
RETENTION=0 start_node gamma refuse
sleep 1
[ "$(psql "SELECT count(*) FROM ollm_usage WHERE node = 'ancient'")" = 1 ] ||
	fail "fleet_retention_days = 0 dropped a record"
kill -TERM "$alpha_pid"
wait "$alpha_pid" || fail "alpha did not stop cleanly"
start_node alpha local
i=0
until [ "$(psql "SELECT count(*) FROM ollm_partition WHERE name = '$old_part'")" = 0 ]; do
	i=$((i + 1))
	[ "$i" -le 100 ] || fail "alpha did not drop $old_part: $(psql "SELECT * FROM ollm_partition")"
	sleep 0.1
done
grep -q "dropped 1 monthly partitions of ollm_usage older than 90 days" "$TEST_DIR/alpha.log" ||
	fail "the drop was not logged"
[ "$(psql "SELECT to_regclass('$old_part') IS NULL")" = t ] || fail "$old_part is still there"
[ "$(psql "SELECT count(*) FROM ollm_usage WHERE node = 'ancient'")" = 0 ] || fail "the old record is still there"
[ "$(psql "SELECT count(*) FROM ollm_usage WHERE node IN ('alpha', 'beta', 'gamma')")" -gt 0 ] ||
	fail "recent records were dropped"
t=$($PYTHON -c 'import time; print(int((time.time() - 100 * 86400) * 1000))')
psql "SELECT ollm_ship('ancient2', 1, 90, '{1}', '{$t}', '{7}', '{x}', '{m}', '{u}', '{1}', '{2}', '{f}',
    '{0}', '{done}', '{NULL}', '{3}', '{NULL}', '{\"\"}', '{}', '{}', '{}', '{}')" >/dev/null
[ "$(psql "SELECT count(*) FROM ollm_usage WHERE node = 'ancient2'") $(psql "SELECT sum(requests)
    FROM ollm_rollup_day WHERE node = 'ancient2'")" = "0 1" ] || fail "a record past retention, shipped late"
psql "DELETE FROM ollm_rollup WHERE node = 'ancient2'; DELETE FROM ollm_rollup_day WHERE node = 'ancient2'"

# 4. a clean stop gives the leases back (under ASan: nothing leaks)
for n in alpha beta gamma; do
	eval "pid=\$${n}_pid"
	kill -TERM "$pid"
	wait "$pid" || fail "$n exited with status $?"
done
[ "$(psql "SELECT count(*) FROM ollm_lease")" = 0 ] || fail "leases left after a clean stop: $(psql "SELECT * FROM ollm_lease")"
echo "fleet_lease: ok"
