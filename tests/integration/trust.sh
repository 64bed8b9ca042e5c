#!/bin/sh
# Clients that misbehave: replies nobody reads, half frames, a reload under a
# full queue. The daemon stays up and records every chat exactly once.
. "$top_srcdir/tests/integration/lib.sh"
start_fake_upstream -q -m fake-model
test_py="$top_srcdir/tests/integration/test_trust.py"

# run_group GROUP EXTRA [config lines...]: EXTRA goes inside the upstream
# (set here, since dash keeps an assignment made before a function call).
run_group() {
	group=$1
	UPSTREAM_EXTRA=$2
	shift 2
	start_daemon "$@"
	"$PYTHON" "$test_py" "$group"
	stop_daemon TERM
	rm -rf "$TEST_DIR/state"
}

run_group big_replies '' 'max_output_per_client = 1048576;'
export OUTPUT_LIMIT=4096
run_group output_limit '' "max_output_per_client = $OUTPUT_LIMIT;"
run_group retired_upstream 'rpm = 1; queue_timeout = 2.0;'
run_group partial_frame '' 'frame_timeout = 1.0;'
run_group stall 'max_concurrency = 1;' 'stall_timeout = 2.0;'
run_group output_total '' 'max_output_total = 1048576;'
echo "trust: all groups passed"
