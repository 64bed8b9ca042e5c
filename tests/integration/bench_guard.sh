#!/bin/sh
# A guard against gross slowdowns, not a timed test of a goal: the daemon's
# CPU time per streamed delta (200-delta streams from the fake model server,
# accounting on) must stay under 3 times the figure BENCHMARKS.md records:
# guard_cpu_ns_per_delta through the msgpack front,
# guard_http_cpu_ns_per_delta through the HTTP front. CPU time, not wall
# time, so that a busy machine does not fail it; under sanitizers it only
# reports. And one stream at a time through the HTTP front keeps pace with
# the msgpack front (no stall per stream).
. "$top_srcdir/tests/integration/lib.sh"
start_fake_upstream -q -m fake-model
HTTP_PORT=$("$PYTHON" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
HTTP_LISTEN="\"127.0.0.1:$HTTP_PORT\"" \
UPSTREAM_EXTRA="prompt_price = 0.5; completion_price = 1.5;" LOG_LEVEL=warn \
    start_daemon "max_budget = 1000000.0;" "calc_usage = true;"

hz=$(getconf CLK_TCK)
ticks() { awk '{ print $14 + $15 }' "/proc/$DAEMON_PID/stat"; }
sanitized=false
! grep -q libasan "/proc/$DAEMON_PID/maps" || sanitized=true

# guard NAME TARGET: stream through one front, compare with BENCHMARKS.md's NAME figure.
guard() {
	recorded=$(sed -n "s/^$1 = \\([0-9]*\\).*/\\1/p" "$top_srcdir/BENCHMARKS.md")
	[ -n "$recorded" ] || fail "BENCHMARKS.md has no $1 line"
	t0=$(ticks)
	out=$(PROXY_BENCH_PROMPT="[[words=200 chunks=200]] guard" \
	    "$top_builddir/tests/bench/proxy_bench" load "$2" 8 2 200) || fail "load failed: $out"
	t1=$(ticks)
	deltas=$(echo "$out" | tr ' ' '\n' | sed -n 's/^deltas=//p')
	[ "$deltas" -gt 0 ] || fail "no deltas: $out"
	ns=$(awk -v t="$((t1 - t0))" -v hz="$hz" -v d="$deltas" 'BEGIN { printf "%.0f", t / hz * 1e9 / d }')
	echo "$out"
	echo "$1: daemon CPU per delta $ns ns (BENCHMARKS.md: $recorded ns; the guard fails past $((recorded * 3)))"
	$sanitized || [ "$ns" -le $((recorded * 3)) ] ||
		fail "the daemon spends $ns ns of CPU per delta ($2), over 3 times the $recorded ns of BENCHMARKS.md"
}
# stall NAME TARGET: streams per second, one connection streaming back to back.
stall() {
	out=$(PROXY_BENCH_PROMPT="[[words=50 chunks=50]] stall" \
	    "$top_builddir/tests/bench/proxy_bench" load "$2" 1 1 50) || fail "load failed: $out"
	echo "$1, one connection: $out" >&2
	echo "$out" | tr ' ' '\n' | sed -n 's/^rps=//p'
}
# A stall per stream (Nagle holding each write after the first until the
# client's delayed ACK, 40 ms) drops the HTTP front to a hundredth of the
# msgpack front's rate; compared with it, the machine's speed does not count.
m=$(stall msgpack "unix:$OPENLLMD_SOCKET#fake-model")
h=$(stall http "http://127.0.0.1:$HTTP_PORT/v1/chat/completions#fake-model")
awk -v m="$m" -v h="$h" 'BEGIN { exit !(h * 4 >= m) }' ||
	fail "one HTTP stream at a time runs $h streams/s, the msgpack front $m: the HTTP front stalls"

guard guard_cpu_ns_per_delta "unix:$OPENLLMD_SOCKET#fake-model"
guard guard_http_cpu_ns_per_delta "http://127.0.0.1:$HTTP_PORT/v1/chat/completions#fake-model"
! $sanitized || echo "sanitizers: no bound"
