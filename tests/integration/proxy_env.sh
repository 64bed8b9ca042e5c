#!/bin/sh
# The proxy environment, read once at start: http_proxy carries requests to
# the model server, no_proxy exempts a host; the headers sent upstream.
. "$top_srcdir/tests/integration/lib.sh"
start_fake_upstream -q -m fake-model
# model.invalid never resolves: a request reaches the fake server only through the proxy
UPSTREAMS='{ name = "far"; base_url = "http://model.invalid:9/v1"; model = "fake-model";
  rpm = 0; max_concurrency = 0; retries = 0; connect_timeout = 3.0; }'
export UPSTREAMS

DAEMON_WRAP="env http_proxy=http://127.0.0.1:$FAKE_PORT no_proxy=localhost" start_daemon
"$PYTHON" -m olc chat "through the proxy" > "$TEST_DIR/out" || fail "chat through the proxy: $(cat "$TEST_DIR/out")"
OUT=$TEST_DIR/out "$PYTHON" - <<EOF || fail "what the proxy saw"
import json, os, urllib.request
out = open(os.environ["OUT"]).read().split("\n")
assert "through the proxy" in out[0], out
with urllib.request.urlopen("http://127.0.0.1:$FAKE_PORT/stats", timeout=10) as r:
    s = json.loads(r.read())
req = s["last_request"]
assert req["target"] == "http://model.invalid:9/v1/chat/completions", req
h = {k.lower(): v for k, v in req["headers"].items()}
assert h["host"] == "model.invalid:9", h
assert h["user-agent"].startswith("openllmd/"), h
assert h["content-type"] == "application/json", h
assert h["authorization"] == "Bearer sk-xxx", h
assert "expect" not in h and "accept-encoding" not in h, h
assert int(h["content-length"]) > 0, h
EOF
stop_daemon

# no_proxy names the host: the daemon goes straight to it, and it does not resolve
KEEP_CONFIG=1 DAEMON_WRAP="env http_proxy=http://127.0.0.1:$FAKE_PORT no_proxy=model.invalid" start_daemon
if "$PYTHON" -m olc chat "not through the proxy" > "$TEST_DIR/out"; then
	fail "no_proxy was not honoured: $(cat "$TEST_DIR/out")"
fi
grep -q '"type": "error"' "$TEST_DIR/out" || fail "no error frame: $(cat "$TEST_DIR/out")"
grep -q 'model.invalid' "$TEST_DIR/out" || fail "the error does not name the host: $(cat "$TEST_DIR/out")"
kill -0 "$DAEMON_PID" || fail "daemon died"
