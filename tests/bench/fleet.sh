#!/bin/sh
# make bench: fleet budgets and reports against a real PostgreSQL (started
# here, as the integration tests do), in one run:
#  - admission: the same build with and without a fleet, side by side, on
#    one nginx stand-in model server (4-delta replies, as proxy.sh's c64):
#    latency p50 at 1 connection on one core, and requests/s at 64
#    connections; the fleet daemon's requests are under max_budget, which
#    is then the fleet's (admitted against the node's lease);
#  - shipping: how fast one node ships a backlog of records;
#  - a burst of 60 requests at once over two nodes on a $0.60 budget;
#  - fleet stats (and --by day, and fleet logs) at 1 M and at 10 M raw
#    records, the tables filled with generate_series.
# Environment as proxy.sh: BENCH_REPEAT (default 3), BENCH_SECONDS (3),
# BENCH_LAT_N (2000); BENCH_FLEET_ROWS (10000000: the larger table).
. "$top_srcdir/tests/integration/lib.sh"
. "$top_srcdir/tests/integration/pg.sh"

repeat=${BENCH_REPEAT:-3}
seconds=${BENCH_SECONDS:-3}
lat_n=${BENCH_LAT_N:-2000}
rows=${BENCH_FLEET_ROWS:-10000000}
bench=$top_builddir/tests/bench/proxy_bench

NGINX=${NGINX:-}
[ -n "$NGINX" ] || NGINX=$(command -v nginx || echo /usr/sbin/nginx)
if [ ! -x "$NGINX" ]; then
	echo "fleet bench: installing nginx-light (the stand-in server)"
	SUDO=""
	[ "$(id -u)" -eq 0 ] || SUDO=sudo
	DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -q --no-install-recommends \
	    nginx-light >/dev/null || { echo "fleet bench: cannot install nginx-light" >&2; exit 1; }
	NGINX=/usr/sbin/nginx
fi
ulimit -n 16384 2>/dev/null || true
PORT=$($PYTHON -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')

# The stand-in: POST /s4/v1/chat/completions answers 4 deltas, a finish
# chunk, usage (14 prompt, 4 completion tokens) and [DONE], from memory.
chunk='data: {\"id\":\"chatcmpl-bench\",\"object\":\"chat.completion.chunk\",\"created\":1700000000,\"model\":\"bench-model\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\" token\"},\"finish_reason\":null}]}\n\n'
fin='data: {\"id\":\"chatcmpl-bench\",\"object\":\"chat.completion.chunk\",\"created\":1700000000,\"model\":\"bench-model\",\"choices\":[{\"index\":0,\"delta\":{},\"finish_reason\":\"stop\"}]}\n\n'
usage='data: {\"id\":\"chatcmpl-bench\",\"object\":\"chat.completion.chunk\",\"created\":1700000000,\"model\":\"bench-model\",\"choices\":[],\"usage\":{\"prompt_tokens\":14,\"completion_tokens\":4,\"total_tokens\":18}}\n\n'
cat >"$TEST_DIR/standin.conf" <<EOF
$([ "$(id -u)" -eq 0 ] && echo "user root root;")
worker_processes 1;
worker_rlimit_nofile 16384;
daemon off;
pid $TEST_DIR/standin.pid;
error_log $TEST_DIR/standin.log warn;
events { worker_connections 8192; }
http {
  access_log off;
  keepalive_requests 1000000;
  client_body_temp_path $TEST_DIR/standin.body;
  types { }
  server {
    listen 127.0.0.1:$PORT;
    location = /s4/v1/chat/completions {
      default_type text/event-stream;
      return 200 "$chunk$chunk$chunk$chunk$fin${usage}data: [DONE]\n\n";
    }
  }
}
EOF
"$NGINX" -p "$TEST_DIR" -c "$TEST_DIR/standin.conf" 2>>"$TEST_DIR/standin.log" &
TEST_PIDS="$TEST_PIDS $!"
i=0
until [ -s "$TEST_DIR/standin.pid" ] && WORKER=$(pgrep -P "$(cat "$TEST_DIR/standin.pid")") && [ -n "$WORKER" ]; do
	i=$((i + 1))
	[ $i -le 100 ] || { echo "nginx did not start: $(cat "$TEST_DIR/standin.log")" >&2; exit 1; }
	sleep 0.05
done
TEST_PIDS="$TEST_PIDS $WORKER"

# node NAME FLEET_NODE [MAX_BUDGET]: a daemon as proxy.sh's (fsync everysec,
# prices, a budget over everything, local counting), in a fleet unless
# FLEET_NODE is "-"; an upstream "bench-burst" priced $5 per 1,000
# completion tokens and a tag budget "burst" of $0.60 a day for the burst.
node() {
	{
		echo "socket = \"$TEST_DIR/$1.sock\";"
		echo "state_dir = \"$TEST_DIR/$1-state\";"
		echo "log_level = \"warn\";"
		echo "fsync = \"everysec\";"
		echo "calc_usage = true;"
		echo "max_budget = ${3:-1000000.0};"
		echo "max_clients = 1000;"
		echo "http_listen = ( );"
		[ "$2" = - ] || echo "fleet_postgres = \"host=$pg_dir dbname=postgres user=ollm\"; fleet_node = \"$2\";"
		echo "budgets = ( { scope = \"tag\"; who = \"burst\"; unit = \"money\"; period = \"day\"; limit = 0.6; } );"
		echo "upstreams = ("
		echo " { name = \"s4\"; base_url = \"http://127.0.0.1:$PORT/s4/v1\"; model = \"bench-4\";"
		echo "   rpm = 0; max_concurrency = 0; retries = 0; prompt_price = 0.0005; completion_price = 0.0015; },"
		echo " { name = \"burst\"; base_url = \"http://127.0.0.1:$PORT/s4/v1\"; model = \"bench-burst\";"
		echo "   rpm = 0; max_concurrency = 0; retries = 0; prompt_price = 0.0; completion_price = 5.0; } );"
	} >"$TEST_DIR/$1.conf"
	"$top_builddir/daemon/openllmd" -f -c "$TEST_DIR/$1.conf" >>"$TEST_DIR/$1.log" 2>&1 &
	eval "${1}_pid=$!"
	TEST_PIDS="$TEST_PIDS $!"
	OPENLLMD_SOCKET="$TEST_DIR/$1.sock" $PYTHON -m olc wait 10
	if [ "$2" != - ]; then
		i=0
		until grep -q "connected to the database" "$TEST_DIR/$1.log" 2>/dev/null ||
		    [ "$(psql "SELECT count(*) FROM ollm_node WHERE node = '$2'" 2>/dev/null)" = 1 ]; do
			i=$((i + 1))
			[ $i -le 100 ] || { echo "$1 did not connect to the database" >&2; exit 1; }
			sleep 0.1
		done
	fi
}
node plain -
node fleet bench1

field() {
	echo "$2" | tr ' ' '\n' | sed -n "s/^$1=//p"
}
median() {
	sort -g | awk '{ v[NR] = $1 } END { print v[int((NR + 1) / 2)] }'
}
cpu_ticks() {   # cpu_ticks PID...: user + system clock ticks of these processes
	for p in "$@"; do awk '{ print $14 + $15 }' "/proc/$p/stat" 2>/dev/null; done | awk '{ s += $1 } END { print s + 0 }'
}
pg_pids() {     # the postmaster of this cluster and its children
	pm=$(head -n 1 "$pg_dir/data/postmaster.pid")
	echo "$pm $(pgrep -P "$pm" | tr '\n' ' ')"
}
hz=$(getconf CLK_TCK)

echo "machine: $(nproc) cores, $(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -n 1)," \
    "$(awk '/MemTotal/ {printf "%.0f GiB", $2 / 1048576}' /proc/meminfo); PostgreSQL" \
    "$("$pg_bin/postgres" --version | sed 's/.* //'); load average $(cut -d' ' -f1-3 /proc/loadavg)"

# 1. latency at 1 connection, every process of the path on one core
one=$(taskset -pc $$ | sed 's/.*: //; s/[-,].*//')
for p in $WORKER $plain_pid $fleet_pid; do taskset -pc "$one" "$p" >/dev/null; done
: >"$TEST_DIR/lat"
r=0
while [ $r -lt "$repeat" ]; do
	taskset -c "$one" "$bench" latency "$lat_n" 4 "http://127.0.0.1:$PORT/s4/v1/chat/completions" \
	    "unix:$TEST_DIR/plain.sock#bench-4" "unix:$TEST_DIR/fleet.sock#bench-4" >>"$TEST_DIR/lat"
	r=$((r + 1))
done
cpus=$(taskset -pc $$ | sed 's/.*: //')
for p in $WORKER $plain_pid $fleet_pid; do taskset -pc "$cpus" "$p" >/dev/null; done
lat() {
	grep "^target=$1 " "$TEST_DIR/lat" | while read -r line; do field p50_us "$line"; done | median
}
d50=$(lat 0)
p50=$(lat 1)
f50=$(lat 2)

# 2. 64 connections, each sending its next request when the last ended
: >"$TEST_DIR/load"
r=0
while [ $r -lt "$repeat" ]; do
	for n in plain fleet; do
		eval "pid=\$${n}_pid"
		pgs=$(pg_pids)
		t0=$(cpu_ticks "$pid")
		g0=$(cpu_ticks $pgs)
		out=$("$bench" load "unix:$TEST_DIR/$n.sock#bench-4" 64 "$seconds" 4) || { echo "$n: $out" >&2; exit 1; }
		t1=$(cpu_ticks "$pid")
		g1=$(cpu_ticks $pgs)
		req=$(field requests "$out")
		echo "$n rps=$(field rps "$out") cpu_ns=$(awk -v t=$((t1 - t0)) -v h="$hz" -v n="$req" 'BEGIN { printf "%.0f", t / h * 1e9 / n }') pg_ns=$(awk -v t=$((g1 - g0)) -v h="$hz" -v n="$req" 'BEGIN { printf "%.0f", t / h * 1e9 / n }')" >>"$TEST_DIR/load"
	done
	r=$((r + 1))
done
loadv() {
	grep "^$1 " "$TEST_DIR/load" | while read -r line; do field "$2" "$line"; done | median
}
prps=$(loadv plain rps)
frps=$(loadv fleet rps)
pcpu=$(loadv plain cpu_ns)
fcpu=$(loadv fleet cpu_ns)
fpg=$(loadv fleet pg_ns)
# every record the fleet daemon made is shipped, and its lease admitted them
n_fleet=$(OPENLLMD_SOCKET="$TEST_DIR/fleet.sock" $PYTHON -c 'from olc import Conn; print(Conn().call("stats")["total"]["requests"])')
i=0
until [ "$(psql "SELECT shipped FROM ollm_node WHERE node = 'bench1'")" -ge "$n_fleet" ]; do
	i=$((i + 1))
	[ $i -le 600 ] || { echo "fleet bench: bench1 did not ship its records" >&2; exit 1; }
	sleep 0.1
done
leased=$(psql "SELECT count(*) FILTER (WHERE reservation >= 4611686018427387904) FROM ollm_usage WHERE node = 'bench1'")
lease_calls=$(psql "SELECT coalesce(sum(calls), 0) FROM pg_stat_user_functions WHERE funcname = 'ollm_lease'")

# 3. shipping a backlog: records made while the database was away, shipped once it is back
node ship bench-ship 0
pg_stop
"$bench" load "unix:$TEST_DIR/ship.sock#bench-4" 64 "$((seconds * 2))" 4 >/dev/null
n_ship=$(OPENLLMD_SOCKET="$TEST_DIR/ship.sock" $PYTHON -c 'from olc import Conn; print(Conn().call("stats")["total"]["requests"])')
pg_start
ship=$($PYTHON - "$pg_bin/psql" "$pg_dir" "$n_ship" <<'PY'
import subprocess, sys, time
psql, host, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
def shipped():
    out = subprocess.run([psql, "-h", host, "-U", "ollm", "-d", "postgres", "-Atq", "-c",
                          "SELECT coalesce(max(shipped), 0) FROM ollm_node WHERE node = 'bench-ship'"],
                         capture_output=True, text=True).stdout.strip()
    return int(out) if out else 0
deadline = time.time() + 120
first = None
while True:
    s, t = shipped(), time.time()
    if s > 0 and first is None:
        first = (s, t)
    if s >= n:
        break
    assert t < deadline, ("not shipped", s, n)
    time.sleep(0.02)
print("%d %.0f" % (n, (n - first[0]) / max(t - first[1], 1e-3)))
PY
)

# 4. the burst: 60 requests at once, 30 on each of two nodes, on a $0.60 budget;
#    each costs $0.02 (4 completion tokens at $5 per 1,000) and reserves $0.03
node fleet2 bench2
burst=$($PYTHON - "$TEST_DIR" <<'PY'
import json, sys, threading
from olc import Conn
tdir = sys.argv[1]
out = {"served": 0, "cost": 0.0, "fleet": 0, "local": 0, "other": 0}
lock = threading.Lock()
conns = [Conn("%s/%s.sock" % (tdir, n), timeout=120) for n in ("fleet", "fleet2") for _ in range(30)]
go = threading.Barrier(len(conns))
def one(c):
    go.wait()
    _, r = c.chat("a burst", model="bench-burst", tag="burst", max_tokens=6)
    with lock:
        if r["type"] == "done":
            out["served"] += 1
            out["cost"] += r["cost"]
        elif r["code"] == "budget_exceeded":
            out["fleet" if "across the fleet" in r["message"] else "local"] += 1
        else:
            out["other"] += 1
ts = [threading.Thread(target=one, args=(c,)) for c in conns]
for t in ts: t.start()
for t in ts: t.join()
print(json.dumps(out))
PY
)
i=0
until [ "$(psql "SELECT reserved + leased FROM ollm_budget WHERE budget = 'tag:burst money/day'")" = 0 ]; do
	i=$((i + 1))
	[ $i -le 300 ] || break
	sleep 0.1
done
burst_used=$(psql "SELECT used / 1e9 FROM ollm_budget WHERE budget = 'tag:burst money/day'")

# 5. fleet stats at 1 M and at $rows raw records: 2 nodes, 3 users, 3 tags,
#    2 models, 2 statuses over 30 days (the same cells in both), rollups
#    made from the rows as shipping makes them
fill() {   # fill FROM TO: records FROM..TO of nodes gen0 and gen1
	psql "SELECT ollm_usage_partitions(now() - interval '31 days', now())"
	psql "INSERT INTO ollm_usage (node, seq, time, uid, tag, model, upstream, prompt_tokens,
	    completion_tokens, estimated, cost, status, error_code, latency_ms, reservation, user_name)
	  SELECT 'gen' || (g % 2), g, now() - ((g * 7919) % 2592000) * interval '1 second',
	    1000 + (g / 2) % 3, 't' || ((g / 6) % 3), 'm' || ((g / 18) % 2), 'up', 10 + g % 50,
	    20 + g % 70, false, 0.001 * (g % 10),
	    CASE WHEN (g / 36) % 50 = 0 THEN 'error' ELSE 'done' END, NULL, 100 + g % 400, NULL, ''
	  FROM generate_series($1::bigint, $2::bigint) g"
	for t in hour day; do
		tab=ollm_rollup
		[ $t = hour ] || tab=ollm_rollup_day
		psql "INSERT INTO $tab AS r SELECT node, date_trunc('$t', time, 'UTC'), uid, user_name, tag,
		    model, status, count(*), sum(prompt_tokens), sum(completion_tokens),
		    count(*) FILTER (WHERE estimated), sum(cost), sum(latency_ms)
		  FROM ollm_usage WHERE node IN ('gen0', 'gen1') AND seq BETWEEN $1 AND $2
		  GROUP BY 1, 2, 3, 4, 5, 6, 7
		  ON CONFLICT (node, $t, uid, user_name, tag, model, status) DO UPDATE SET
		    requests = r.requests + excluded.requests, prompt_tokens = r.prompt_tokens +
		    excluded.prompt_tokens, completion_tokens = r.completion_tokens +
		    excluded.completion_tokens, estimated = r.estimated + excluded.estimated,
		    cost = r.cost + excluded.cost, latency_ms = r.latency_ms + excluded.latency_ms"
	done
	# what autovacuum would do next (the upserts left dead rows, the inserts
	# unvacuumed pages), done now so that it does not run while stats are timed
	psql "VACUUM ANALYZE ollm_rollup"
	psql "VACUUM ANALYZE ollm_rollup_day"
	psql "VACUUM ANALYZE ollm_usage"
}
stats_ms() {   # the median ms of stats (fleet), stats by day, logs (fleet, 100 rows)
	OPENLLMD_SOCKET="$TEST_DIR/fleet.sock" $PYTHON - "$1" <<'PY'
import sys, time
from olc import Conn
want = int(sys.argv[1])
c = Conn(timeout=60)
def ms(op, **kw):
    t = []
    for i in range(51):
        t0 = time.perf_counter()
        r = c.call(op, fleet=True, **kw)
        t.append((time.perf_counter() - t0) * 1000)
        assert r["type"] == "result", r
    if op == "stats" and "by" not in kw:
        n = r["by_node"]["gen0"]["requests"] + r["by_node"]["gen1"]["requests"]
        assert n == want, (n, want)
    return sorted(t)[25]
print("%.1f %.1f %.1f" % (ms("stats"), ms("stats", by="day"), ms("logs", limit=100)))
PY
}
t0=$(date +%s)
fill 1 1000000
fill_1m=$(($(date +%s) - t0))
s1=$(stats_ms 1000000)
t0=$(date +%s)
fill 1000001 "$rows"
fill_10m=$(($(date +%s) - t0))
s10=$(stats_ms "$rows")
cells=$(psql "SELECT count(*) FROM ollm_rollup_day WHERE node IN ('gen0', 'gen1')")
hcells=$(psql "SELECT count(*) FROM ollm_rollup WHERE node IN ('gen0', 'gen1')")

awk -v d50="$d50" -v p50="$p50" -v f50="$f50" -v prps="$prps" -v frps="$frps" -v pcpu="$pcpu" \
    -v fcpu="$fcpu" -v fpg="$fpg" -v n="$n_fleet" -v leased="$leased" -v calls="$lease_calls" 'BEGIN {
	f = "%-46s %12s %14s %10s\n"
	printf f, "fleet admission, same build, same run", "no fleet", "fleet budget", "fleet/no"
	printf f, "latency p50, 1 connection, one core (us)", sprintf("%.1f", p50), sprintf("%.1f", f50), sprintf("+%.1f us", f50 - p50)
	printf f, "  added to the direct path (us)", sprintf("%.1f", p50 - d50), sprintf("%.1f", f50 - d50), ""
	printf f, "throughput, 64 connections (req/s)", sprintf("%.0f", prps), sprintf("%.0f", frps), sprintf("%.2fx", frps / prps)
	printf f, "  CPU of openllmd per request (ns)", pcpu, fcpu, sprintf("%.2fx", fcpu / pcpu)
	printf f, "  CPU of PostgreSQL per request (ns)", "", fpg, ""
	printf "  %d requests of the fleet daemon: %d admitted against its lease, %d lease statements in all\n", n, leased, calls
}'
echo "$ship" | awk '{ printf "shipping a backlog of %d records: %.0f records/s\n", $1, $2 }'
echo "$burst" | $PYTHON -c '
import json, sys
b = json.loads(sys.stdin.read()); used = float(sys.argv[1])
print("burst of 60 requests over two nodes, $0.60 budget ($0.02 each, $0.03 reserved): "
      "%d served, refused %d across the fleet and %d by a node alone; used $%.4f (%.0f%%), clients billed $%.4f"
      % (b["served"], b["fleet"], b["local"], used, used / 0.6 * 100, b["cost"]))
assert used <= 0.6 + 1e-9 and b["other"] == 0, b' "$burst_used"
printf '%-46s %12s %14s\n' "fleet stats (ms, median of 51)" "1 M records" "$(awk -v r="$rows" 'BEGIN { printf "%d M records", r / 1e6 }')"
printf '%-46s %12s %14s\n' "  stats --fleet" "$(echo "$s1" | cut -d' ' -f1)" "$(echo "$s10" | cut -d' ' -f1)"
printf '%-46s %12s %14s\n' "  stats --fleet --by day" "$(echo "$s1" | cut -d' ' -f2)" "$(echo "$s10" | cut -d' ' -f2)"
printf '%-46s %12s %14s\n' "  logs --fleet -n 100" "$(echo "$s1" | cut -d' ' -f3)" "$(echo "$s10" | cut -d' ' -f3)"
echo "  ($cells daily and $hcells hourly rollup rows; filling took ${fill_1m} s and ${fill_10m} s)"
