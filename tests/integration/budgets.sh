#!/bin/sh
# Budgets are never walked past, whatever a request says, and are spent to
# the last token: the length limit sent is the one reserved (a server that
# ignores it is cut there), client length keys never reach the server, the
# prompt reserved counts tools and is corrected by the server's own counts,
# and concurrent requests wait for each other instead of being refused.
. "$top_srcdir/tests/integration/lib.sh"
start_fake_upstream -q -m fake-model -m priced
export UPSTREAMS="{ name = \"fake\"; base_url = \"$FAKE_URL\"; model = \"fake-model\"; rpm = 0;
    max_concurrency = 0; default_max_tokens = 50; },
  { name = \"priced\"; base_url = \"$FAKE_URL\"; model = \"priced\"; rpm = 0;
    max_concurrency = 0; prompt_price = 1.0; completion_price = 1.0; }"
HTTP_LISTEN='"127.0.0.1:0"' start_daemon 'budgets = (
  { scope = "tag"; who = "small"; unit = "tokens"; period = "day"; limit = 200; },
  { scope = "tag"; who = "tools"; unit = "tokens"; period = "day"; limit = 1000; },
  { scope = "tag"; who = "cmpl"; unit = "tokens"; period = "day"; limit = 100000; },
  { scope = "tag"; who = "http"; unit = "tokens"; period = "day"; limit = 100000; },
  { scope = "model"; who = "priced"; unit = "money"; period = "ever"; limit = 0.5; } );'
i=0
until grep -q "HTTP: listening on 127.0.0.1:" "$TEST_DIR/daemon.log"; do
	i=$((i + 1)); [ $i -lt 100 ] || fail "no HTTP listener"; sleep 0.05
done
PORT=$(grep "HTTP: listening on 127.0.0.1:" "$TEST_DIR/daemon.log" | tail -n 1 |
    sed 's/.*127\.0\.0\.1:\([0-9]*\).*/\1/')
export BASE="http://127.0.0.1:$PORT/v1"

"$PYTHON" - <<'PY' || fail "budgets"
import json, os, threading, urllib.request
from olc import Conn

def check(cond, what):
    if not cond:
        raise AssertionError(what)

def fake(path):
    url = "http://127.0.0.1:%s%s" % (os.environ["FAKE_PORT"], path)
    return json.load(urllib.request.urlopen(url))

def budget(scope):
    return [b for b in Conn().call("stats")["budgets"] if b["scope"] == scope][0]

def http(path, body, headers=None):
    req = urllib.request.Request(os.environ["BASE"] + path, json.dumps(body).encode(),
                                 {"Content-Type": "application/json", **(headers or {})})
    try:
        with urllib.request.urlopen(req) as r:
            return r.status, dict(r.headers), r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, dict(e.headers), e.read().decode()

c = Conn()

# 1. No max_tokens against a 200-token budget: sent with default_max_tokens (50),
#    and a server that writes 3500 pieces anyway is cut at 50 and billed 50.
deltas, end = c.chat("runaway [[words=3500 ignore_max_tokens=1]]", tag="small")
check(end["type"] == "done" and end["finish_reason"] == "length", end)
check(end.get("cut") is True and end["max_tokens"] == 50, end)
check(end["usage"]["completion_tokens"] == 50, end)
check(len([x for x in deltas if x["type"] == "delta"]) <= 50, len(deltas))
check(fake("/stats")["last_body"]["max_tokens"] == 50, fake("/stats")["last_body"])
# not streamed: the whole reply comes, billed at the limit it was sent
deltas, end = c.chat("runaway [[words=3500 ignore_max_tokens=1]]", tag="small", stream=False)
check(end["type"] == "done" and end["usage"]["completion_tokens"] == 50, end)
# until nothing is left: shrunk, then refused, never past 200
for i in range(10):
    deltas, end = c.chat("more [[words=3500 ignore_max_tokens=1]]", tag="small")
    check(budget("tag:small")["used"] <= 200, budget("tag:small"))
    if end["type"] == "error":
        break
check(end["type"] == "error" and end["code"] == "budget_exceeded", end)
check(end["detail"]["fit"] < 16, end)
check(budget("tag:small")["used"] <= 200, budget("tag:small"))

# the HTTP front the same: the limit and that it was cut in its answer
st, h, body = http("/chat/completions", {"model": "fake-model", "stream": True,
    "messages": [{"role": "user", "content": "http runaway [[words=3500 ignore_max_tokens=1]]"}]},
    {"X-Ollm-Tag": "http"})
check(st == 200 and h.get("X-Ollm-Max-Tokens") == "50", (st, h))
events = [json.loads(e[6:]) for e in body.split("\n\n") if e.startswith("data: {")]
check(sum(1 for e in events if e["choices"] and e["choices"][0]["delta"].get("content")) <= 50,
      len(events))
check(events[-1]["choices"][0]["finish_reason"] == "length", events[-1])

# 2. /v1/completions: the client's length keys are replaced, never forwarded.
st, h, body = http("/completions", {"model": "fake-model", "prompt": "hi", "max_tokens": 1,
                                     "n_predict": 50000, "options": {"num_predict": 9}},
                   {"X-Ollm-Tag": "cmpl"})
check(st == 200, (st, body))
sent = fake("/stats")["last_completions_body"]
check(sent["max_tokens"] == 1 and "n_predict" not in sent and sent["options"] == {}, sent)
st, h, body = http("/completions", {"model": "fake-model", "prompt": "hi", "n_predict": 50000,
                                     "max_new_tokens": 70000}, {"X-Ollm-Tag": "cmpl"})
sent = fake("/stats")["last_completions_body"]
check(st == 200 and sent["max_tokens"] == 50000, (st, sent))
check("n_predict" not in sent and "max_new_tokens" not in sent, sent)
# chat completions alike: n_predict is the ask, and is not forwarded
st, h, body = http("/chat/completions", {"model": "fake-model", "n_predict": 7, "num_predict": 9,
    "messages": [{"role": "user", "content": "hello"}]})
sent = fake("/stats")["last_body"]
check(st == 200 and sent["max_tokens"] == 7 and "n_predict" not in sent and
      "num_predict" not in sent, (st, sent))
st, h, body = http("/chat/completions", {"model": "fake-model", "n_predict": "lots",
    "messages": [{"role": "user", "content": "hello"}]})
check(st == 400 and json.loads(body)["error"]["param"] == "n_predict", (st, body))

# 3. Tools are part of the prompt: 20 definitions (~22 KB) and "hi" do not fit 1000 tokens.
def tool(i, n=12):
    return {"type": "function", "function": {"name": "tool_%d" % i,
        "description": "Look up the weather of a city and say it in a sentence " * n,
        "parameters": {"type": "object", "properties": {
            "city": {"type": "string", "description": "the city, with its country " * n},
            "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]}},
            "required": ["city"]}}}
tools = [tool(i) for i in range(20)]
check(len(json.dumps(tools)) > 20000, len(json.dumps(tools)))
before = fake("/stats")["chat_requests"]
st, h, body = http("/chat/completions", {"model": "fake-model", "tools": tools, "max_tokens": 10,
    "messages": [{"role": "user", "content": "hi"}]}, {"X-Ollm-Tag": "tools"})
check(st == 402, (st, body))
e = json.loads(body)["error"]
check(e["budget"]["scope"] == "tag:tools" and e["budget"]["fit"] == -1, e)
check(fake("/stats")["chat_requests"] == before, "sent past the budget")
# ... and through the socket, in extra
deltas, end = c.chat("hi", tag="tools", max_tokens=10, extra={"tools": tools})
check(end["type"] == "error" and end["code"] == "budget_exceeded", end)
# two tools fit, and what they take is reserved: max_tokens shrinks by at least their size
t2 = [tool(0, 1), tool(1, 1)]
deltas, end = c.chat("hi", tag="tools", max_tokens=990, extra={"tools": t2,
                     "tool_choice": "auto"})
check(end["type"] == "done" and end.get("budget_shrunk") is True, end)
alone = c.call("tokens", text=json.dumps(t2, separators=(",", ":")))["count"]
check(end["max_tokens"] <= 1000 - alone, (end, alone))
sent = fake("/stats")["last_body"]
check(sent["max_tokens"] == end["max_tokens"] and len(sent["tools"]) == 2, sent)

# 4. Spent, not refused: 50 at once against 0.5 at 1 per 1,000 tokens, each worth
#    some 0.04 in fact and 0.07 at worst: at least 85% of it served, never more.
ends = []
def one(i):
    ends.append(Conn(timeout=60).chat("spend %02d [[words=10 delay_ms=30]]" % i,
                                      model="priced", max_tokens=30)[1])
threads = [threading.Thread(target=one, args=(i,)) for i in range(50)]
for t in threads:
    t.start()
for t in threads:
    t.join()
done = [e for e in ends if e["type"] == "done"]
refused = [e for e in ends if e["type"] == "error"]
check(len(done) + len(refused) == 50, ends)
check(all(e["code"] == "budget_exceeded" for e in refused), refused[:2])
spent = sum(e["cost"] for e in done)
b = budget("model:priced")
check(b["used"] <= 0.5 + 1e-9, b)
check(spent >= 0.85 * 0.5, "spent %.4f of 0.5: %d served, %d refused" % (spent, len(done), len(refused)))
print("budgets: %d served, %d refused, %.4f of 0.5 spent" % (len(done), len(refused), spent))
PY
echo "budgets: all checks passed"
