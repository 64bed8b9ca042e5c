#!/bin/sh
# A guard against gross slowdowns, not a timed test of a goal: the daemon's
# CPU time per streamed delta (200-delta streams from the fake model server,
# accounting on) must stay under 3 times the figure BENCHMARKS.md records as
# guard_cpu_ns_per_delta. CPU time, not wall time, so that a busy machine
# does not fail it; under sanitizers it only reports.
. "$top_srcdir/tests/integration/lib.sh"
start_fake_upstream -q -m fake-model
UPSTREAM_EXTRA="prompt_price = 0.5; completion_price = 1.5;" LOG_LEVEL=warn \
    start_daemon "max_budget = 1000000.0;" "calc_usage = true;"

recorded=$(sed -n 's/^guard_cpu_ns_per_delta = \([0-9]*\).*/\1/p' "$top_srcdir/BENCHMARKS.md")
[ -n "$recorded" ] || fail "BENCHMARKS.md has no guard_cpu_ns_per_delta line"
hz=$(getconf CLK_TCK)
ticks() { awk '{ print $14 + $15 }' "/proc/$DAEMON_PID/stat"; }

t0=$(ticks)
out=$(PROXY_BENCH_PROMPT="[[words=200 chunks=200]] guard" \
    "$top_builddir/tests/bench/proxy_bench" load "unix:$OPENLLMD_SOCKET#fake-model" 8 2 200) ||
	fail "load failed: $out"
t1=$(ticks)
deltas=$(echo "$out" | tr ' ' '\n' | sed -n 's/^deltas=//p')
[ "$deltas" -gt 0 ] || fail "no deltas: $out"
ns=$(awk -v t="$((t1 - t0))" -v hz="$hz" -v d="$deltas" 'BEGIN { printf "%.0f", t / hz * 1e9 / d }')
echo "$out"
echo "daemon CPU per delta: $ns ns (BENCHMARKS.md: $recorded ns; the guard fails past $((recorded * 3)))"
if grep -q libasan "/proc/$DAEMON_PID/maps"; then
	echo "sanitizers: no bound"
	exit 0
fi
[ "$ns" -le $((recorded * 3)) ] || fail "the daemon spends $ns ns of CPU per delta, over 3 times the $recorded ns of BENCHMARKS.md"
