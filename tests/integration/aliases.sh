#!/bin/sh
# Model aliases and default_model: clients with fixed model names are served
# by the model an alias names; /v1/models lists models, aliases and which are
# down; names nobody serves are one "other" series in /metrics.
. "$top_srcdir/tests/integration/lib.sh"
start_fake_upstream -q -m fake-model
export UPSTREAMS="{ name = \"fake\"; base_url = \"$FAKE_URL\"; model = \"fake-model\"; rpm = 0;
    max_concurrency = 0; },
  { name = \"dead\"; base_url = \"http://127.0.0.1:1/v1\"; model = \"dead-model\"; rpm = 0;
    retries = 0; }"
HTTP_LISTEN='"127.0.0.1:0"' start_daemon \
    'aliases = { gpt-4o = "fake-model"; claude-sonnet-4-5 = "dead-model"; };' \
    'default_model = "fake-model";'
i=0
until grep -q "HTTP: listening on 127.0.0.1:" "$TEST_DIR/daemon.log"; do
	i=$((i + 1)); [ $i -lt 100 ] || fail "no HTTP listener"; sleep 0.05
done
PORT=$(grep "HTTP: listening on 127.0.0.1:" "$TEST_DIR/daemon.log" | tail -n 1 |
    sed 's/.*127\.0\.0\.1:\([0-9]*\).*/\1/')
export BASE="http://127.0.0.1:$PORT"

"$PYTHON" - <<'PY' || fail "aliases"
import json, os, time, urllib.request
from olc import Conn

def check(cond, what):
    if not cond:
        raise AssertionError(what)

def fake(path):
    return json.load(urllib.request.urlopen("http://127.0.0.1:%s%s" % (os.environ["FAKE_PORT"], path)))

def get(path):
    with urllib.request.urlopen(os.environ["BASE"] + path) as r:
        return r.read().decode()

def post(path, body):
    req = urllib.request.Request(os.environ["BASE"] + path, json.dumps(body).encode(),
                                 {"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())

c = Conn()
# an alias is served as its model, through both fronts
deltas, end = c.chat("hello", model="gpt-4o")
check(end["type"] == "done" and end["upstream"] == "fake", end)
check(fake("/stats")["last_body"]["model"] == "fake-model", fake("/stats")["last_body"])
st, r = post("/v1/chat/completions", {"model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}]})
check(st == 200 and r["choices"][0]["message"]["content"] == "echo: hi", (st, r))
# a name nobody serves goes to default_model
deltas, end = c.chat("anyone", model="no-such-model")
check(end["type"] == "done" and end["upstream"] == "fake", end)
check(fake("/stats")["last_body"]["model"] == "fake-model", fake("/stats")["last_body"])

# /v1/models: models with their upstreams and availability, then the aliases
for i in range(100):
    models = {m["id"]: m for m in json.loads(get("/v1/models"))["data"]}
    if models.get("dead-model", {}).get("available") is False:
        break
    time.sleep(0.1)
check(models["fake-model"]["upstreams"] == ["fake"] and models["fake-model"]["available"] is True,
      models)
check(models["dead-model"]["available"] is False, models)
check(models["gpt-4o"]["alias_of"] == "fake-model" and models["gpt-4o"]["available"] is True, models)
check(models["claude-sonnet-4-5"]["alias_of"] == "dead-model", models)
check(models["claude-sonnet-4-5"]["available"] is False, models)

# /metrics: the served model, never the names asked
m = get("/metrics")
check('model="fake-model"' in m and "gpt-4o" not in m and "no-such-model" not in m, m)
PY

# without default_model, an unknown name is refused with what is served
stop_daemon
HTTP_LISTEN='"127.0.0.1:0"' start_daemon 'aliases = { gpt-4o = "fake-model"; };'
"$PYTHON" - <<'PY' || fail "unknown model"
from olc import Conn
deltas, end = Conn().chat("anyone", model="no-such-model")
assert end["type"] == "error" and end["code"] == "unknown_model", end
assert "served: fake-model, dead-model, gpt-4o (an alias)" in end["message"], end
PY
echo "aliases: all checks passed"
