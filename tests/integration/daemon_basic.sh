#!/bin/sh
# openllmd end to end: every op through the socket against the fake model server.
. "$top_srcdir/tests/integration/lib.sh"
start_fake_upstream -m fake-model
start_daemon
"$PYTHON" "$top_srcdir/tests/integration/test_daemon.py" basic
# the API key is sent upstream but never logged
if grep -q "sk-test-secret" "$TEST_DIR/daemon.log"; then fail "api key in the log"; fi
# Easy handles, header lists and connections are reused from one request to
# the next: each request still carries its own upstream's key. Without a
# budget or tpm, the prompt is counted only when the server reports no usage.
stop_daemon
start_fake_upstream -q -m model-a -m model-b
UPSTREAMS="{ name = \"a\"; base_url = \"$FAKE_URL\"; model = \"model-a\"; api_key = \"sk-key-a\"; rpm = 0; retries = 0; },
  { name = \"b\"; base_url = \"$FAKE_URL\"; model = \"model-b\"; api_key = \"sk-key-b\"; rpm = 0; retries = 0; }" start_daemon "max_budget = 0.0;"
"$PYTHON" "$top_srcdir/tests/integration/test_daemon.py" keys
