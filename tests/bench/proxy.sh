#!/bin/sh
# make bench: openllmd against nginx as a reference reverse proxy, side by side.
#
# One nginx (one worker) is the stand-in model server: it answers
# POST /sN/v1/chat/completions from memory with a text/event-stream body of N
# chat.completion.chunk events, a finish chunk, a usage chunk and [DONE].
# A second nginx (one worker) is the reference proxy: proxy_pass to the
# stand-in with upstream keepalive and proxy_buffering off, as an SSE proxy
# is configured. openllmd runs with accounting on: ledger fsync everysec,
# prices, a budget and local counting. The load generator (proxy_bench) sends
# the same chat to each path: HTTP to the stand-in directly and through
# nginx, msgpack frames through openllmd's socket, and HTTP to openllmd's
# OpenAI-compatible front (http_listen), which streams its own SSE.
#
# Environment: BENCH_REPEAT (runs of each measure, medians are printed;
# default 3), BENCH_SECONDS (length of a throughput run, default 3),
# BENCH_LAT_N (requests per path per latency run, default 2000),
# BENCH_STREAMS (concurrent streams, default 1000), BENCH_DELTAS (deltas per
# stream in that test, default 200), BENCH_OPENLLMD (another openllmd binary
# to measure, e.g. an older build), BENCH_BEFORE (a second openllmd binary,
# run beside the first on its own socket: the latency test alternates between
# both and the load tests run it too, so the two builds are compared within
# one run), BENCH_PERF (a directory: the first
# openllmd run of each load test is recorded there with perf record -g, as
# TEST.data for the msgpack front and TEST-http.data for the HTTP front),
# BENCH_CALLGRIND (a directory: also count the instructions per request and
# per delta of each front with valgrind's callgrind, kept there), BENCH_LAT_DUMP (a
# directory: the first latency run on one core (latency1.txt) and as
# scheduled (latency2.txt), a line per request: path, start and latency in
# microseconds; paths in the table's order).
. "$top_srcdir/tests/integration/lib.sh"

repeat=${BENCH_REPEAT:-3}
seconds=${BENCH_SECONDS:-3}
lat_n=${BENCH_LAT_N:-2000}
streams=${BENCH_STREAMS:-1000}
deltas=${BENCH_DELTAS:-200}
small=4                         # deltas per reply in the latency and c64 tests
bench=$top_builddir/tests/bench/proxy_bench

NGINX=${NGINX:-}
[ -n "$NGINX" ] || NGINX=$(command -v nginx || echo /usr/sbin/nginx)
if [ ! -x "$NGINX" ]; then
	echo "proxy bench: installing nginx-light (the stand-in server and the reference proxy)"
	SUDO=""
	[ "$(id -u)" -eq 0 ] || SUDO=sudo
	DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -q --no-install-recommends \
	    nginx-light >/dev/null || { echo "proxy bench: cannot install nginx-light" >&2; exit 1; }
	NGINX=/usr/sbin/nginx
fi
ulimit -n 16384 2>/dev/null || true
if [ "$(ulimit -n)" -lt $((streams * 3 + 100)) ]; then
	echo "proxy bench: ulimit -n is $(ulimit -n), $((streams * 3 + 100)) are needed" >&2
	exit 1
fi

# Free TCP ports on loopback.
free_port() {
	$PYTHON -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}
STANDIN_PORT=$(free_port)
PROXY_PORT=$(free_port)
HTTP_PORT=$(free_port)

# One SSE chunk carrying content, escaped for a quoted nginx string.
chunk='data: {\"id\":\"chatcmpl-bench\",\"object\":\"chat.completion.chunk\",\"created\":1700000000,\"model\":\"bench-model\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\" token\"},\"finish_reason\":null}]}\n\n'
# The end of a reply of N deltas: finish chunk, usage chunk, [DONE].
tail_of() {
	printf '%s' 'data: {\"id\":\"chatcmpl-bench\",\"object\":\"chat.completion.chunk\",\"created\":1700000000,\"model\":\"bench-model\",\"choices\":[{\"index\":0,\"delta\":{},\"finish_reason\":\"stop\"}]}\n\n'
	printf '%s' "data: {\\\"id\\\":\\\"chatcmpl-bench\\\",\\\"object\\\":\\\"chat.completion.chunk\\\",\\\"created\\\":1700000000,\\\"model\\\":\\\"bench-model\\\",\\\"choices\\\":[],\\\"usage\\\":{\\\"prompt_tokens\\\":14,\\\"completion_tokens\\\":$1,\\\"total_tokens\\\":$((14 + $1))}}\\n\\n"
	printf '%s' 'data: [DONE]\n\n'
}
# A location answering POST with N deltas from memory: nginx's parameters are
# limited to 4 KiB, so the body is built from variables of 10 and 1 chunks.
location_of() {
	n=$1
	refs=""
	i=0
	while [ $((i + 10)) -le "$n" ]; do refs="$refs\$c10"; i=$((i + 10)); done
	while [ "$i" -lt "$n" ]; do refs="$refs\$c1"; i=$((i + 1)); done
	echo "    location = /s$n/v1/chat/completions {"
	echo "        default_type text/event-stream;"
	echo "        set \$c1 \"$chunk\";"
	echo "        set \$c10 \"$chunk$chunk$chunk$chunk$chunk$chunk$chunk$chunk$chunk$chunk\";"
	echo "        set \$end \"$(tail_of "$n")\";"
	echo "        return 200 \"$refs\$end\";"
	echo "    }"
}
nginx_head() {
	[ "$(id -u)" -eq 0 ] && echo "user root root;"
	echo "worker_processes 1;"
	echo "worker_rlimit_nofile 16384;"
	echo "daemon off;"
	echo "pid $TEST_DIR/$1.pid;"
	echo "error_log $TEST_DIR/$1.log warn;"
	echo "events { worker_connections 8192; }"
	echo "http {"
	echo "  access_log off;"
	echo "  keepalive_requests 1000000;"
	echo "  client_body_temp_path $TEST_DIR/$1.body;"
	echo "  proxy_temp_path $TEST_DIR/$1.proxy;"
	echo "  types { }"
}
{
	nginx_head standin
	echo "  server {"
	echo "    listen 127.0.0.1:$STANDIN_PORT;"
	location_of $small
	location_of "$deltas"
	echo "    location ~ ^/s([0-9]+)/v1/models\$ {"
	echo "        default_type application/json;"
	echo "        return 200 '{\"object\":\"list\",\"data\":[{\"id\":\"bench-\$1\",\"object\":\"model\"}]}';"
	echo "    }"
	echo "  }"
	echo "}"
} > "$TEST_DIR/standin.conf"
{
	nginx_head proxy
	echo "  upstream standin { server 127.0.0.1:$STANDIN_PORT; keepalive 1024; keepalive_requests 1000000; }"
	echo "  server {"
	echo "    listen 127.0.0.1:$PROXY_PORT;"
	echo "    location / {"
	echo "      proxy_pass http://standin;"
	echo "      proxy_http_version 1.1;"
	echo "      proxy_set_header Connection \"\";"
	echo "      proxy_buffering off;"
	echo "    }"
	echo "  }"
	echo "}"
} > "$TEST_DIR/proxy.conf"

# start_nginx NAME: sets NAME_PID (master) and NAME_WORKER.
start_nginx() {
	"$NGINX" -p "$TEST_DIR" -c "$TEST_DIR/$1.conf" 2>> "$TEST_DIR/$1.log" &
	pid=$!
	TEST_PIDS="$TEST_PIDS $pid"
	i=0
	until [ -s "$TEST_DIR/$1.pid" ] && worker=$(pgrep -P "$pid") && [ -n "$worker" ]; do
		i=$((i + 1))
		[ $i -le 100 ] || { echo "nginx ($1) did not start:" >&2; cat "$TEST_DIR/$1.log" >&2; exit 1; }
		sleep 0.05
	done
	TEST_PIDS="$TEST_PIDS $worker"     # the trap's kill -9 leaves workers behind
	eval "$1_WORKER=$worker"
}
start_nginx standin
start_nginx proxy

# openllmd with accounting on: fsync everysec, prices, a budget, local counting.
CONF=$TEST_DIR/openllmd.conf
up() {
	echo "{ name = \"s$1\"; base_url = \"http://127.0.0.1:$STANDIN_PORT/s$1/v1\";"
	echo "  model = \"bench-$1\"; rpm = 0; max_concurrency = 0; retries = 0;"
	echo "  prompt_price = 0.0005; completion_price = 0.0015; }"
}
cat > "$CONF" <<EOF
socket = "$TEST_DIR/openllmd.sock";
state_dir = "$TEST_DIR/state";
log_level = "warn";
fsync = "everysec";
calc_usage = true;
max_budget = 1000000.0;
max_clients = $((streams + 64));
http_listen = ( "127.0.0.1:$HTTP_PORT" );
upstreams = ( $(up $small), $(up "$deltas") );
EOF
export CONF
if [ -n "${BENCH_OPENLLMD:-}" ]; then
	mkdir -p "$TEST_DIR/bin/daemon" && cp "$BENCH_OPENLLMD" "$TEST_DIR/bin/daemon/openllmd"
	top_builddir_daemon=$TEST_DIR/bin
else
	top_builddir_daemon=$top_builddir
fi
OPENLLMD_SOCKET="$TEST_DIR/openllmd.sock"
export OPENLLMD_SOCKET
"$top_builddir_daemon/daemon/openllmd" -f -c "$CONF" >> "$TEST_DIR/daemon.log" 2>&1 &
DAEMON_PID=$!
TEST_PIDS="$TEST_PIDS $DAEMON_PID"
$PYTHON -m olc wait 10
before_target=""
BEFORE_PID=""
if [ -n "${BENCH_BEFORE:-}" ]; then
	sed -e "s|openllmd.sock|before.sock|; s|/state\"|/state-before\"|; s|^http_listen.*|http_listen = ( );|" \
	    "$CONF" > "$TEST_DIR/before.conf"
	env -u OPENLLMD_SOCKET "$BENCH_BEFORE" -f -c "$TEST_DIR/before.conf" \
	    >> "$TEST_DIR/before.log" 2>&1 &
	BEFORE_PID=$!
	TEST_PIDS="$TEST_PIDS $BEFORE_PID"
	OPENLLMD_SOCKET="$TEST_DIR/before.sock" $PYTHON -m olc wait 10
	before_target="unix:$TEST_DIR/before.sock#bench-$small"
fi

direct="http://127.0.0.1:$STANDIN_PORT"
proxy="http://127.0.0.1:$PROXY_PORT"
sock="unix:$OPENLLMD_SOCKET"
ohttp="http://127.0.0.1:$HTTP_PORT/v1/chat/completions"

# field NAME LINE: the value of NAME=value in LINE.
field() {
	echo "$2" | tr ' ' '\n' | sed -n "s/^$1=//p"
}
# median of the numbers on stdin.
median() {
	sort -g | awk '{ v[NR] = $1 } END { print v[int((NR + 1) / 2)] }'
}
# user + system CPU time of a process, in clock ticks.
cpu_ticks() {
	awk '{ print $14 + $15 }' "/proc/$1/stat"
}
hz=$(getconf CLK_TCK)
rss_kib() {
	awk '/^VmHWM/ { print $2 }' "/proc/$1/status"
}

echo "machine: $(nproc) cores, $(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -n 1)," \
    "$(awk '/MemTotal/ {printf "%.0f GiB", $2 / 1048576}' /proc/meminfo), $(uname -sr);" \
    "$("$NGINX" -v 2>&1 | sed 's/.*version: //'); load average $(cut -d' ' -f1-3 /proc/loadavg)"
echo "runs: $repeat of each (medians); latency $lat_n requests per path; c64 ${seconds}s;" \
    "$streams streams of $deltas deltas ${seconds}s"

# Latency runs twice: every process on one core, then as the scheduler places
# them. On a hypervisor a wakeup on the other core costs 20 to 45 us, and
# where each process lands moved the direct path alone from 17 to 66 us from
# one run to the next; on one core a request costs the work of every hop and
# same-core switches, the same for every path.
cpus=$(taskset -pc $$ | sed 's/.*: //')
one=$(echo "$cpus" | sed 's/[-,].*//')
pin() {    # pin CPUS: the servers under test
	for p in $standin_WORKER $proxy_WORKER $DAEMON_PID $BEFORE_PID; do
		taskset -pc "$1" "$p" > /dev/null
	done
}
: > "$TEST_DIR/lat1"
: > "$TEST_DIR/lat2"
[ -z "${BENCH_LAT_DUMP:-}" ] || mkdir -p "$BENCH_LAT_DUMP"
for where in 1 2; do
	if [ $where = 1 ]; then pin "$one"; run="taskset -c $one"; else pin "$cpus"; run=""; fi
	r=0
	while [ $r -lt "$repeat" ]; do
		dump=""
		[ -z "${BENCH_LAT_DUMP:-}" ] || [ $r -ne 0 ] || dump=$BENCH_LAT_DUMP/latency$where.txt
		PROXY_BENCH_DUMP=$dump $run "$bench" latency "$lat_n" $small "$direct/s$small/v1/chat/completions" \
		    "$proxy/s$small/v1/chat/completions" "$sock#bench-$small" "$ohttp#bench-$small" \
		    $before_target >> "$TEST_DIR/lat$where"
		r=$((r + 1))
	done
done
lat() {    # lat TARGET FIELD [FILE]: one core (1) or as scheduled (2)
	grep "^target=$1 " "$TEST_DIR/lat${3:-1}" | while read -r line; do field "$2" "$line"; done | median
}

# load NAME TARGET CONNS DELTAS: median requests/s and deltas/s over the runs.
: > "$TEST_DIR/load"
load_all() {    # load_all TEST CONNS DELTAS
	r=0
	while [ $r -lt "$repeat" ]; do
		for p in direct nginx openllmd ohttp ${BEFORE_PID:+before}; do
			case $p in
			direct) t="$direct/s$3/v1/chat/completions" ;;
			nginx) t="$proxy/s$3/v1/chat/completions" ;;
			openllmd) t="$sock#bench-$3" ;;
			before) t="unix:$TEST_DIR/before.sock#bench-$3" ;;
			ohttp) t="$ohttp#bench-$3" ;;
			esac
			perf_pid=""
			case $p in
			openllmd) data=${BENCH_PERF:-}/$1.data ;;
			ohttp) data=${BENCH_PERF:-}/$1-http.data ;;
			*) data="" ;;
			esac
			if [ -n "${BENCH_PERF:-}" ] && [ -n "$data" ] && [ $r -eq 0 ]; then
				mkdir -p "$BENCH_PERF"
				perf record -q -F 1999 -g -p "$DAEMON_PID" -o "$data" \
				    2>> "$TEST_DIR/perf.log" &
				perf_pid=$!
			fi
			case $p in
			nginx) cpu_pid=$proxy_WORKER ;;
			openllmd | ohttp) cpu_pid=$DAEMON_PID ;;
			before) cpu_pid=$BEFORE_PID ;;
			*) cpu_pid="" ;;
			esac
			[ -z "$cpu_pid" ] || t0=$(cpu_ticks "$cpu_pid")
			# the peak RSS of this run alone (5 resets VmHWM)
			[ -z "$cpu_pid" ] || echo 5 > "/proc/$cpu_pid/clear_refs" 2>/dev/null || true
			out=$("$bench" load "$t" "$2" "$seconds" "$3") || { echo "$p: $out" >&2; exit 1; }
			if [ -n "$cpu_pid" ]; then
				t1=$(cpu_ticks "$cpu_pid")
				out="$out cpu_ns_delta=$(awk -v t="$((t1 - t0))" -v hz="$hz" \
				    -v d="$(field deltas "$out")" 'BEGIN { printf "%.0f", t / hz * 1e9 / d }')"
				out="$out rss_kib=$(rss_kib "$cpu_pid")"
			fi
			if [ -n "$perf_pid" ]; then
				kill -INT "$perf_pid"
				wait "$perf_pid" || true
			fi
			echo "$1 $p $out" >> "$TEST_DIR/load"
		done
		r=$((r + 1))
	done
}
loadv() {    # loadv TEST PATH FIELD
	grep "^$1 $2 " "$TEST_DIR/load" | while read -r line; do field "$3" "$line"; done | median
}
# The peak RSS of a run is the high-water mark reset before it: memory the
# daemon kept from earlier runs (of the other front) counts, so the smallest
# over the runs is printed.
loadmin() {    # loadmin TEST PATH FIELD
	grep "^$1 $2 " "$TEST_DIR/load" | while read -r line; do field "$3" "$line"; done | sort -g | head -n 1
}
load_all c64 64 $small
load_all streams "$streams" "$deltas"

# Instructions per request, counted by callgrind: a measure the machine's
# other load does not move. A third daemon of the same build runs under
# valgrind on its own socket and port; each front gets 16 connections.
cg_msgpack=""
cg_msgpack_delta=""
cg_http_delta=""
cg_http=""
if [ -n "${BENCH_CALLGRIND:-}" ]; then
	if ! command -v valgrind > /dev/null; then
		echo "proxy bench: installing valgrind (BENCH_CALLGRIND)"
		SUDO=""
		[ "$(id -u)" -eq 0 ] || SUDO=sudo
		DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -q --no-install-recommends \
		    valgrind > /dev/null || { echo "proxy bench: cannot install valgrind" >&2; exit 1; }
	fi
	mkdir -p "$BENCH_CALLGRIND"
	CG_PORT=$(free_port)
	sed -e "s|openllmd.sock|cg.sock|; s|/state\"|/state-cg\"|; s|^http_listen.*|http_listen = ( \"127.0.0.1:$CG_PORT\" );|" \
	    "$CONF" > "$TEST_DIR/cg.conf"
	env -u OPENLLMD_SOCKET valgrind -q --tool=callgrind \
	    --callgrind-out-file="$BENCH_CALLGRIND/openllmd.out" \
	    "$top_builddir_daemon/daemon/openllmd" -f -c "$TEST_DIR/cg.conf" >> "$TEST_DIR/cg.log" 2>&1 &
	CG_PID=$!
	TEST_PIDS="$TEST_PIDS $CG_PID"
	OPENLLMD_SOCKET="$TEST_DIR/cg.sock" $PYTHON -m olc wait 60
	# cg FRONT DELTAS PER: instructions through FRONT per reply of DELTAS deltas, / PER, in cg_out
	part=0
	cg() {
		case $1 in
		msgpack) t="unix:$TEST_DIR/cg.sock#bench-$2" ;;
		http) t="http://127.0.0.1:$CG_PORT/v1/chat/completions#bench-$2" ;;
		esac
		"$bench" load "$t" 16 1 "$2" > /dev/null       # warm up: pools, connections
		callgrind_control -z "$CG_PID" > /dev/null
		out=$("$bench" load "$t" 16 3 "$2")
		callgrind_control -d "$CG_PID" > /dev/null
		part=$((part + 1))
		f=$BENCH_CALLGRIND/openllmd.out.$part
		i=0
		until grep -q '^totals:' "$f" 2>/dev/null; do
			i=$((i + 1)); [ $i -le 100 ] || { echo "proxy bench: no callgrind dump $f" >&2; exit 1; }
			sleep 0.1
		done
		eval "cg_requests_$part=$(field requests "$out")"
		cg_out=$(awk -v n="$(awk '/^totals:/ { print $2 }' "$f")" -v r="$(field requests "$out")" \
		    -v d="$3" 'BEGIN { printf "%.0f", n / r / d }')
	}
	cg msgpack $small 1
	cg_msgpack=$cg_out
	cg http $small 1
	cg_http=$cg_out
	cg msgpack "$deltas" "$deltas"
	cg_msgpack_delta=$cg_out
	cg http "$deltas" "$deltas"
	cg_http_delta=$cg_out
	kill "$CG_PID" 2>/dev/null || true
fi

d50=$(lat 0 p50_us); n50=$(lat 1 p50_us); o50=$(lat 2 p50_us); h50=$(lat 3 p50_us)
d99=$(lat 0 p99_us); n99=$(lat 1 p99_us); o99=$(lat 2 p99_us); h99=$(lat 3 p99_us)
sd50=$(lat 0 p50_us 2); sn50=$(lat 1 p50_us 2); so50=$(lat 2 p50_us 2); sh50=$(lat 3 p50_us 2)
sd99=$(lat 0 p99_us 2); sn99=$(lat 1 p99_us 2); so99=$(lat 2 p99_us 2); sh99=$(lat 3 p99_us 2)
dc=$(loadv c64 direct rps); nc=$(loadv c64 nginx rps); oc=$(loadv c64 openllmd rps)
hc=$(loadv c64 ohttp rps)
# CPU per request at 64 connections: per delta times the deltas of a request
ncr=$(loadv c64 nginx cpu_ns_delta); ocr=$(loadv c64 openllmd cpu_ns_delta)
hcr=$(loadv c64 ohttp cpu_ns_delta)
ds=$(loadv streams direct rps); ns=$(loadv streams nginx rps); os=$(loadv streams openllmd rps)
hs=$(loadv streams ohttp rps)
dd=$(loadv streams direct deltas_s); nd=$(loadv streams nginx deltas_s); od=$(loadv streams openllmd deltas_s)
hd=$(loadv streams ohttp deltas_s)
ncpu=$(loadv streams nginx cpu_ns_delta); ocpu=$(loadv streams openllmd cpu_ns_delta)
hcpu=$(loadv streams ohttp cpu_ns_delta)
nrss=$(loadmin streams nginx rss_kib); orss=$(loadmin streams openllmd rss_kib)
hrss=$(loadmin streams ohttp rss_kib)

# Columns: the three paths, the ratio of openllmd's msgpack front to nginx,
# then openllmd's HTTP front and its ratio to nginx.
awk -v d50="$d50" -v n50="$n50" -v o50="$o50" -v d99="$d99" -v n99="$n99" -v o99="$o99" \
    -v dc="$dc" -v nc="$nc" -v oc="$oc" -v ds="$ds" -v ns="$ns" -v os="$os" \
    -v dd="$dd" -v nd="$nd" -v od="$od" -v nrss="$nrss" -v orss="$orss" -v n="$streams" \
    -v k="$deltas" -v ncpu="$ncpu" -v ocpu="$ocpu" -v h50="$h50" -v h99="$h99" -v hc="$hc" \
    -v hs="$hs" -v hd="$hd" -v hcpu="$hcpu" -v hrss="$hrss" -v ncr="$ncr" -v ocr="$ocr" \
    -v hcr="$hcr" -v small="$small" -v sd50="$sd50" -v sn50="$sn50" -v so50="$so50" \
    -v sh50="$sh50" -v sd99="$sd99" -v sn99="$sn99" -v so99="$so99" -v sh99="$sh99" '
function latrows(what, d50, n50, o50, h50, d99, n99, o99, h99) {
	printf f, "latency p50, 1 connection, " what " (us)", sprintf("%.1f", d50), sprintf("%.1f", n50), sprintf("%.1f", o50), "", sprintf("%.1f", h50), ""
	printf f, "  added p50 (us)", "", sprintf("%.1f", n50 - d50), sprintf("%.1f", o50 - d50), sprintf("%.2fx", (o50 - d50) / (n50 - d50)), sprintf("%.1f", h50 - d50), sprintf("%.2fx", (h50 - d50) / (n50 - d50))
	printf f, "latency p99, 1 connection, " what " (us)", sprintf("%.1f", d99), sprintf("%.1f", n99), sprintf("%.1f", o99), "", sprintf("%.1f", h99), ""
	printf f, "  added p99 (us)", "", sprintf("%.1f", n99 - d99), sprintf("%.1f", o99 - d99), sprintf("%.2fx", (o99 - d99) / (n99 - d99)), sprintf("%.1f", h99 - d99), sprintf("%.2fx", (h99 - d99) / (n99 - d99))
}
BEGIN {
	f = "%-44s %10s %11s %10s %8s %12s %8s\n"
	printf f, "", "direct", "nginx proxy", "openllmd", "/nginx", "openllmd http", "/nginx"
	latrows("one core", d50, n50, o50, h50, d99, n99, o99, h99)
	latrows("scheduled", sd50, sn50, so50, sh50, sd99, sn99, so99, sh99)
	printf f, "throughput, 64 connections (req/s)", sprintf("%.0f", dc), sprintf("%.0f", nc), sprintf("%.0f", oc), sprintf("%.2fx", oc / nc), sprintf("%.0f", hc), sprintf("%.2fx", hc / nc)
	printf f, "  CPU of the proxy per request (ns)", "", ncr * small, ocr * small, sprintf("%.2fx", ocr / ncr), hcr * small, sprintf("%.2fx", hcr / ncr)
	printf f, sprintf("%d streams of %d deltas (/s)", n, k), sprintf("%.0f", ds), sprintf("%.0f", ns), sprintf("%.0f", os), sprintf("%.2fx", os / ns), sprintf("%.0f", hs), sprintf("%.2fx", hs / ns)
	printf f, "  deltas/s", sprintf("%.0f", dd), sprintf("%.0f", nd), sprintf("%.0f", od), sprintf("%.2fx", od / nd), sprintf("%.0f", hd), sprintf("%.2fx", hd / nd)
	printf f, "  CPU of the proxy per delta (ns)", "", ncpu, ocpu, sprintf("%.2fx", ocpu / ncpu), hcpu, sprintf("%.2fx", hcpu / ncpu)
	printf f, "  peak RSS of the proxy (MiB)", "", sprintf("%.1f", nrss / 1024), sprintf("%.1f", orss / 1024), "", sprintf("%.1f", hrss / 1024), ""
}'
if [ -n "$cg_msgpack" ]; then
	printf '%-44s %10s %11s %10s %8s %12s\n' "instructions per request (callgrind)" "" "" \
	    "$cg_msgpack" "" "$cg_http"
	printf '%-44s %10s %11s %10s %8s %12s\n' "  per delta, $deltas-delta replies" "" "" \
	    "$cg_msgpack_delta" "" "$cg_http_delta"
	echo "  (callgrind's files in $BENCH_CALLGRIND: openllmd.out.1 and .2 requests through the"
	echo "  msgpack and HTTP fronts, .3 and .4 $deltas-delta replies)"
	for part in 1 2; do
		[ $part = 1 ] && echo "  by library, per request: msgpack front" || echo "  HTTP front"
		eval "r=\$cg_requests_$part"
		$PYTHON "$top_srcdir/tests/bench/callgrind_split.py" "$BENCH_CALLGRIND/openllmd.out.$part" \
		    "$r" | sed 's/^/  /'
	done
fi
if [ -n "$before_target" ]; then
	b50=$(lat 4 p50_us); b99=$(lat 4 p99_us)
	bc=$(loadv c64 before rps); bcr=$(loadv c64 before cpu_ns_delta); bs=$(loadv streams before rps); bd=$(loadv streams before deltas_s)
	bcpu=$(loadv streams before cpu_ns_delta); brss=$(loadmin streams before rss_kib)
	awk -v d50="$d50" -v n50="$n50" -v o50="$o50" -v b50="$b50" -v d99="$d99" -v n99="$n99" \
	    -v o99="$o99" -v b99="$b99" -v nc="$nc" -v oc="$oc" -v bc="$bc" -v ns="$ns" -v os="$os" \
	    -v bs="$bs" -v nd="$nd" -v od="$od" -v bd="$bd" -v ncpu="$ncpu" -v ocpu="$ocpu" \
	    -v bcpu="$bcpu" -v nrss="$nrss" -v orss="$orss" -v brss="$brss" -v ncr="$ncr" \
	    -v ocr="$ocr" -v bcr="$bcr" -v small="$small" 'BEGIN {
		printf "\nmsgpack front, the build of BENCH_BEFORE and this one in the same run (ratio to nginx)\n"
		f = "%-36s %10s %16s %16s %10s\n"
		printf f, "", "nginx", "before", "now", "now/before"
		printf f, "added latency p50 (us)", sprintf("%.1f", n50 - d50), sprintf("%.1f (%.2fx)", b50 - d50, (b50 - d50) / (n50 - d50)), sprintf("%.1f (%.2fx)", o50 - d50, (o50 - d50) / (n50 - d50)), sprintf("%.2fx", (o50 - d50) / (b50 - d50))
		printf f, "added latency p99 (us)", sprintf("%.1f", n99 - d99), sprintf("%.1f (%.2fx)", b99 - d99, (b99 - d99) / (n99 - d99)), sprintf("%.1f (%.2fx)", o99 - d99, (o99 - d99) / (n99 - d99)), sprintf("%.2fx", (o99 - d99) / (b99 - d99))
		printf f, "throughput, 64 connections (req/s)", sprintf("%.0f", nc), sprintf("%.0f (%.2fx)", bc, bc / nc), sprintf("%.0f (%.2fx)", oc, oc / nc), sprintf("%.2fx", oc / bc)
		printf f, "  CPU of the proxy per request (ns)", ncr * small, bcr * small, ocr * small, sprintf("%.2fx", ocr / bcr)
		printf f, "streams (/s)", sprintf("%.0f", ns), sprintf("%.0f (%.2fx)", bs, bs / ns), sprintf("%.0f (%.2fx)", os, os / ns), sprintf("%.2fx", os / bs)
		printf f, "  CPU of the proxy per delta (ns)", ncpu, bcpu, ocpu, sprintf("%.2fx", ocpu / bcpu)
		printf f, "  peak RSS (MiB)", sprintf("%.1f", nrss / 1024), sprintf("%.1f", brss / 1024), sprintf("%.1f", orss / 1024), ""
	}'
fi
