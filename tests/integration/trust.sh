#!/bin/sh
# Clients that misbehave: replies nobody reads, half frames, a reload under a
# full queue. The daemon stays up and records every chat exactly once.
. "$top_srcdir/tests/integration/lib.sh"
start_fake_upstream -q -m fake-model
test_py="$top_srcdir/tests/integration/test_trust.py"

run_group() {
	group=$1
	shift
	start_daemon "$@"
	"$PYTHON" "$test_py" "$group"
	stop_daemon TERM
	rm -rf "$TEST_DIR/state"
}

run_group big_replies 'max_output_per_client = 1048576;'
export OUTPUT_LIMIT=4096
run_group output_limit "max_output_per_client = $OUTPUT_LIMIT;"
UPSTREAM_EXTRA='rpm = 1; queue_timeout = 2.0;' run_group retired_upstream
run_group partial_frame 'frame_timeout = 1.0;'
UPSTREAM_EXTRA='max_concurrency = 1;' run_group stall 'stall_timeout = 2.0;'
run_group output_total 'max_output_total = 4194304;'
echo "trust: all groups passed"
