#!/bin/sh
# make bench: the latency the daemon adds over a direct request to the fake model server.
. "$top_srcdir/tests/integration/lib.sh"
start_fake_upstream -q -m fake-model
LOG_LEVEL=warn start_daemon
echo "machine: $(nproc) cores, $(awk '/MemTotal/ {printf "%.0f GiB", $2 / 1048576}' /proc/meminfo), $(uname -sr)"
"$top_builddir/tests/bench/latency_bench" "$OPENLLMD_SOCKET" "$FAKE_URL" "${BENCH_N:-2000}"
