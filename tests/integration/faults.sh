#!/bin/sh
# Every fault of the fake model server: the daemon stays up, errors are clear, stats add up.
. "$top_srcdir/tests/integration/lib.sh"
start_fake_upstream -q -m fake-model
UPSTREAM_EXTRA='first_byte_timeout = 1.0; idle_timeout = 1.0; connect_timeout = 2.0;'
start_daemon
"$PYTHON" "$top_srcdir/tests/integration/test_daemon.py" faults
kill -0 "$DAEMON_PID" || fail "daemon died"
