#!/bin/sh
# openllmd end to end: every op through the socket against the fake model server.
. "$top_srcdir/tests/integration/lib.sh"
start_fake_upstream -m fake-model
start_daemon
"$PYTHON" "$top_srcdir/tests/integration/test_daemon.py" basic
# the API key is sent upstream but never logged
if grep -q "sk-test-secret" "$TEST_DIR/daemon.log"; then fail "api key in the log"; fi
