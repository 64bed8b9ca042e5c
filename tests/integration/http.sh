#!/bin/sh
# The OpenAI-compatible HTTP front, with real clients: the official openai npm
# package, curl for raw SSE, promtool for /metrics, and a client under another
# uid for the loopback identity.
. "$top_srcdir/tests/integration/lib.sh"
[ -z "${HTTP_TRACE:-}" ] || set -x

# The openai package, installed at test time (like tokenizers/fetch installs tiktoken)
# into a cache outside the build tree, which distclean must leave empty; runs
# side by side install it once (the first to finish moves its copy in place).
NPM_CACHE="${OLLM_TEST_CACHE:-${XDG_CACHE_HOME:-${HOME:-/tmp}/.cache}/openllmd-tests}"
NPM_DIR="$NPM_CACHE/openai-4.104.0"
OPENAI_DIR="$NPM_DIR/node_modules/openai"
if [ ! -f "$OPENAI_DIR/index.mjs" ]; then
	mkdir -p "$NPM_CACHE" || fail "cannot make $NPM_CACHE"
	npm_tmp=$(mktemp -d "$NPM_CACHE/.openai.XXXXXX")
	TEST_CLEANUP_PATHS="$TEST_CLEANUP_PATHS $npm_tmp"
	npm install --prefix "$npm_tmp" --no-save --no-audit --no-fund --silent openai@4.104.0 >/dev/null ||
		fail "npm install openai"
	mv -T "$npm_tmp" "$NPM_DIR" 2>/dev/null || rm -rf "$npm_tmp"
fi
export OPENAI_DIR
# promtool, from Debian's prometheus package.
if ! command -v promtool >/dev/null 2>&1; then
	[ "$(id -u)" -eq 0 ] || fail "promtool is missing: apt-get install prometheus (as root)"
	DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends prometheus \
	    >"$TEST_DIR/apt.log" 2>&1 || { apt-get update -q >/dev/null 2>&1 &&
	    DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends prometheus \
	    >"$TEST_DIR/apt.log" 2>&1; } || fail "apt-get install prometheus"
fi

start_fake_upstream -q -m fake-model -m narrow
# The key bills "daemon" (uid 1); the keyless loopback client below runs as nobody.
KEY=$("$top_builddir/client/ollmctl" key new --user daemon --tag ci | head -n 1)
KEYLINE=$("$top_builddir/client/ollmctl" key new --user daemon --tag ci | tail -n 1)
# ollmctl's line holds the key's SHA-256
KEY2=$("$top_builddir/client/ollmctl" key new --user 4242 | head -n 1)
SHA2=$(printf %s "$KEY2" | sha256sum | cut -d' ' -f1)
KEY_CAPPED=$("$top_builddir/client/ollmctl" key new --user daemon --tag capped | head -n 1)
KEY_OVERRIDE=$("$top_builddir/client/ollmctl" key new --user daemon | head -n 1)
sha() { printf %s "$1" | sha256sum | cut -d' ' -f1; }
KEYS="{ sha256 = \"$(sha "$KEY")\"; user = \"daemon\"; tag = \"ci\"; },
  { sha256 = \"$SHA2\"; user = \"4242\"; },
  { sha256 = \"$(sha "$KEY_CAPPED")\"; user = \"daemon\"; tag = \"capped\"; },
  { sha256 = \"$(sha "$KEY_OVERRIDE")\"; user = \"daemon\"; tag_override = true; }"
case "$KEYLINE" in "api_keys = ( { sha256 = \""*"\"; user = \"daemon\"; tag = \"ci\"; } );") ;;
*) fail "ollmctl key new printed: $KEYLINE" ;; esac

export UPSTREAMS="{ name = \"fake\"; base_url = \"$FAKE_URL\"; model = \"fake-model\"; rpm = 0;
    max_concurrency = 0; prompt_price = 0.01; completion_price = 0.02; },
  { name = \"narrow\"; base_url = \"$FAKE_URL\"; model = \"narrow\"; rpm = 0; max_concurrency = 1;
    queue_max = 0; }"
HTTP_LISTEN="\"127.0.0.1:0\", \"unix:$TEST_DIR/http.sock\"" start_daemon \
	"api_keys = ( $KEYS );" \
	'budgets = ( { scope = "tag"; who = "capped"; unit = "tokens"; period = "day"; limit = 20; } );' \
	'socket_mode = "0666";'

# The port the kernel chose, from the log.
http_port() {
	i=0
	until grep -q "HTTP: listening on 127.0.0.1:" "$TEST_DIR/daemon.log"; do
		i=$((i + 1)); [ $i -lt 100 ] || fail "no HTTP listener in the log"; sleep 0.05
	done
	grep "HTTP: listening on 127.0.0.1:" "$TEST_DIR/daemon.log" | tail -n 1 | sed 's/.*127\.0\.0\.1:\([0-9]*\).*/\1/'
}
PORT=$(http_port)
BASE="http://127.0.0.1:$PORT/v1"
export OLLM_BASE_URL="$BASE" OLLM_KEY="$KEY" OLLM_KEY_CAPPED="$KEY_CAPPED" OLLM_KEY_OVERRIDE="$KEY_OVERRIDE"

node_check() {
	node "$top_srcdir/tests/integration/openai_client.mjs" "$1" || fail "openai client: $1"
}

# --- the official client ---------------------------------------------------
for c in chat stream stream_without_usage models unauthorized unknown_model bad_request \
    rate_limited budget tag_fixed abort completions embeddings; do
	node_check "$c"
done

# /metrics is root's (the test runs as root) or the daemon's user's under stats_visibility own
metrics() { curl -sf "http://127.0.0.1:$PORT/metrics"; }

# The aborted stream was cancelled upstream and recorded with the tokens so far.
i=0
until metrics | grep -q 'openllmd_requests_total{model="fake-model",user="daemon",tag="ci",status="cancelled"} 1'; do
	i=$((i + 1)); [ $i -lt 50 ] || { metrics >&2; fail "the aborted stream is not counted as cancelled"; }
	sleep 0.1
done
grep -q "uid 1 model fake-model upstream fake: cancelled | prompt_tokens: [1-9][0-9]*, completion_tokens: [1-9]" \
	"$TEST_DIR/daemon.log" || fail "the cancelled chat's ledger line has no tokens"
grep -q "abort me" "$TEST_DIR/fake0.log" 2>/dev/null || true
# the key's user is who is billed, in the ledger too
"$PYTHON" -m olc stats > "$TEST_DIR/stats.json"
"$PYTHON" -c 'import json, sys; s = json.load(open(sys.argv[1])); s = s.get("result", s); u = s["by_user"]; assert "1" in u and "65534" not in u, u' \
	"$TEST_DIR/stats.json" || { cat "$TEST_DIR/stats.json" >&2; fail "by_user lacks the key's uid"; }

# A client that leaves while a non-streamed reply is still being made cancels it too.
# The server may have done all the work and says nothing of it: the completion it was
# allowed (max_tokens) is billed, estimated, on either front.
curl -s --max-time 1 -H "Authorization: Bearer $KEY_OVERRIDE" -H "X-Ollm-Tag: gone" "$BASE/chat/completions" \
	-d '{"model":"fake-model","max_tokens":50,"messages":[{"role":"user","content":"slow [[chunks=2 delay_ms=4000]]"}]}' >/dev/null &&
	fail "the slow reply came within a second"
"$PYTHON" - <<'PY' || fail "a msgpack client leaving a non-streamed chat"
import time, olc
c = olc.Conn()
c.request("chat", messages=[{"role": "user", "content": "slow [[chunks=2 delay_ms=4000]]"}],
          model="fake-model", stream=False, max_tokens=40, tag="gone-mp")
time.sleep(0.5)
c.close()
PY
i=0
until metrics | grep -q 'openllmd_requests_total{model="fake-model",user="daemon",tag="gone",status="cancelled"} 1'; do
	i=$((i + 1)); [ $i -lt 25 ] || { metrics >&2; fail "the non-streamed request was not cancelled"; }
	sleep 0.1
done
i=0
until metrics | grep -q 'openllmd_completion_tokens_total{model="fake-model",user="root",tag="gone-mp",status="cancelled"} 40'; do
	i=$((i + 1)); [ $i -lt 25 ] || { metrics >&2; fail "the msgpack client's cut chat was not billed its reservation"; }
	sleep 0.1
done
metrics | grep -q 'openllmd_completion_tokens_total{model="fake-model",user="daemon",tag="gone",status="cancelled"} 50' ||
	{ metrics >&2; fail "the cut reply was not billed its reservation"; }
grep -q "uid 1 model fake-model upstream fake: cancelled | prompt_tokens: [1-9][0-9]*, completion_tokens: 50 (estimated)" \
	"$TEST_DIR/daemon.log" || fail "the ledger line of the cut reply"

# Backpressure: a client that stops reading pauses the transfer, which resumes
# once it reads again; every byte arrives, in order.
"$PYTHON" - "$PORT" "$KEY" <<'PY' || fail "backpressure"
import json, socket, sys, time
port, key = int(sys.argv[1]), sys.argv[2]
text = "".join("w%06d " % i for i in range(300000))      # 2.4 MB, echoed back
body = json.dumps({"model": "narrow", "stream": True,      # unpriced: a big prompt costs nothing
                   "messages": [{"role": "user", "content": text + "[[chunks=400]]"}]}).encode()
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
s.connect(("127.0.0.1", port))
s.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " + key.encode() +
          b"\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n" % len(body) + body)
time.sleep(3)                       # read nothing for a while: the daemon must hold back
data = b""
while not data.endswith(b"0\r\n\r\n"):
    b = s.recv(65536)
    assert b, "connection closed early"
    data += b
head, _, rest = data.partition(b"\r\n\r\n")
assert head.startswith(b"HTTP/1.1 200"), head
out, pos = b"", 0
while True:                         # undo the chunked transfer coding
    eol = rest.index(b"\r\n", pos)
    n = int(rest[pos:eol], 16)
    if n == 0:
        break
    out += rest[eol + 2:eol + 2 + n]
    pos = eol + 2 + n + 2
events = out.decode().split("\n\n")[:-1]
assert events[-1] == "data: [DONE]"
got = "".join(json.loads(e[6:])["choices"][0]["delta"].get("content", "") for e in events[:-1])
assert got.startswith("echo: w000000 w000001") and "w299999" in got, got[-100:]
PY
grep -q "the client is behind; transfer paused" "$TEST_DIR/daemon.log" ||
	fail "the transfer never paused for the slow reader"

# --- raw SSE with curl ------------------------------------------------------
curl -sSN -H "Authorization: Bearer $KEY" "$BASE/chat/completions" \
	-d '{"model":"fake-model","stream":true,"stream_options":{"include_usage":true},"messages":[{"role":"user","content":"raw [[chunks=3]]"}]}' \
	> "$TEST_DIR/sse.txt" || fail "curl stream"
"$PYTHON" - "$TEST_DIR/sse.txt" <<'PY' || fail "raw SSE"
import json, sys
events = open(sys.argv[1]).read().split("\n\n")
assert events[-1] == "", events[-1]
events = events[:-1]
assert all(e.startswith("data: ") and "\n" not in e for e in events), events
assert events[-1] == "data: [DONE]", events[-1]
chunks = [json.loads(e[6:]) for e in events[:-1]]
ids = {c["id"] for c in chunks}
assert len(ids) == 1 and ids.pop().startswith("chatcmpl-"), chunks
assert chunks[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}, chunks[0]
assert chunks[-2]["choices"][0]["finish_reason"] == "stop", chunks[-2]
u = chunks[-1]["usage"]
assert chunks[-1]["choices"] == [] and u["total_tokens"] == u["prompt_tokens"] + u["completion_tokens"], chunks[-1]
text = "".join(c["choices"][0]["delta"].get("content", "") for c in chunks[:-1] if c["choices"])
assert text.startswith("echo: raw"), text
PY
# Deltas are written without a JSON document each: quotes, backslashes,
# control characters and non-ASCII text still come out as the same JSON.
"$PYTHON" -c '
import json
text = "q\" b\\ n\n t\t c\x01\x1f e\u00e9 x\u4e2d s\U0001f600 / <>"
print(json.dumps({"model": "fake-model", "stream": True,
                  "messages": [{"role": "user", "content": text + " [[chunks=40]]"}]}))
' > "$TEST_DIR/esc.json"
curl -sSN -H "Authorization: Bearer $KEY" "$BASE/chat/completions" -d @"$TEST_DIR/esc.json" \
	> "$TEST_DIR/esc.txt" || fail "curl stream of escapes"
"$PYTHON" - "$TEST_DIR/esc.txt" <<'PY' || fail "escaped deltas"
import json, sys
events = open(sys.argv[1], encoding="utf-8").read().split("\n\n")[:-1]
assert events[-1] == "data: [DONE]", events[-1]
chunks = [json.loads(e[6:]) for e in events[:-1]]
deltas = [c for c in chunks[1:] if c["choices"] and "content" in c["choices"][0]["delta"]]
assert len(deltas) > 10, chunks
for c in deltas:
    assert c["object"] == "chat.completion.chunk" and c["model"] == "fake-model", c
    assert c["choices"][0]["finish_reason"] is None and c["choices"][0]["index"] == 0, c
text = "".join(c["choices"][0]["delta"]["content"] for c in deltas)
want = "echo: q\" b\\ n\n t\t c\x01\x1f e\u00e9 x\u4e2d s\U0001f600 / <>"
assert text == want, (text, want)
PY

# U+0000 in a message's content is a character like any other, as on the msgpack
# socket: accepted, sent on as \u0000, and counted the same way by both fronts.
"$PYTHON" - "$BASE" "$KEY" <<'PY' || fail "NUL in content"
import json, sys, urllib.request
import olc
base, key = sys.argv[1], sys.argv[2]
def http(msgs):
    body = json.dumps({"model": "fake-model", "messages": msgs}).encode()
    assert b"\\u0000" in body
    req = urllib.request.Request(base + "/chat/completions", data=body,
                                 headers={"Authorization": "Bearer " + key})
    return json.load(urllib.request.urlopen(req))["usage"]["prompt_tokens"]
def msgpack(msgs):
    c = olc.Conn()
    _, end = c.until_end(c.request("chat", messages=msgs, stream=False, model="fake-model"))
    assert end["type"] == "done", end
    return end["usage"]
for usage in ("0", "1"):        # counted locally, then by the server (bytes as sent)
    last = {"role": "user", "content": "b [[usage=%s]]" % usage}   # the fake reads it as C
    msgs = [{"role": "system", "content": "before\u0000after"},
            {"role": "user", "content": [{"type": "text", "text": "x\u0000"},
                                         {"type": "text", "text": "\u0000y"}]},
            {"role": "assistant", "content": "ok"}, last]
    m = msgpack([msgs[0], {"role": "user", "content": "x\u0000\u0000y"}, msgs[2], last])
    assert m["estimated"] == (usage == "0"), m
    h = http(msgs)
    assert h == m["prompt_tokens"], (usage, h, m)
    if usage == "1":            # every byte reached the server, the NULs included
        assert h == len("before\0after") + len("x\0\0y") + len("ok") + len(last["content"]), h
PY

# U+0000 in a model's reply (the fake sends each "~" as one) is a character too: carried
# through both fronts (JSON \u0000, a msgpack str with its length), streamed or not, and
# counted locally exactly as the tokens op counts the same text.
"$PYTHON" - "$BASE" "$KEY" <<'PY' || fail "NUL in a reply"
import json, sys, urllib.request
import olc
base, key = sys.argv[1], sys.argv[2]
want = "echo: a\u0000b\u0000\u0000c"
def http(stream):
    body = json.dumps({"model": "fake-model", "stream": stream,
                       "messages": [{"role": "user", "content": "a~b~~c [[nul=1 chunks=5 usage=0]]"}]})
    req = urllib.request.Request(base + "/chat/completions", data=body.encode(),
                                 headers={"Authorization": "Bearer " + key})
    raw = urllib.request.urlopen(req).read().decode()
    if not stream:
        r = json.loads(raw)
        return r["choices"][0]["message"]["content"], r["usage"]
    events = [json.loads(e[6:]) for e in raw.split("\n\n") if e.startswith("data: {")]
    return "".join(c["choices"][0]["delta"].get("content", "") for c in events if c["choices"]), None
def msgpack(stream):
    c = olc.Conn()
    deltas, end = c.chat("a~b~~c [[nul=1 chunks=5 usage=0]]", model="fake-model", stream=stream)
    assert end["type"] == "done", end
    return (end["content"] if not stream else "".join(d["content"] for d in deltas)), end["usage"]
count = olc.Conn().call("tokens", text=want, model="fake-model")["count"]
for stream in (False, True):
    text, usage = http(stream)
    assert text == want, (stream, text)
    text, usage = msgpack(stream)
    assert text == want, (stream, text)
    assert usage["estimated"] and usage["completion_tokens"] == count, (usage, count)
_, usage = http(False)
assert usage["completion_tokens"] == count, (usage, count)
# passed through: the server's bytes, which the daemon reads to account them
body = json.dumps({"model": "fake-model", "prompt": "x\u0000y", "stream": True})
req = urllib.request.Request(base + "/completions", data=body.encode(),
                             headers={"Authorization": "Bearer " + key})
raw = urllib.request.urlopen(req).read().decode()
events = [json.loads(e[6:]) for e in raw.split("\n\n") if e.startswith("data: {")]
assert "".join(c["choices"][0]["text"] for c in events if c["choices"]) == "echo: x\u0000y", raw
PY

# A passed-through completions stream: the server's events, usage only when asked.
curl -sSN -H "Authorization: Bearer $KEY_OVERRIDE" -H "X-Ollm-Tag: pass" "$BASE/completions" \
	-d '{"model":"fake-model","stream":true,"prompt":"pass me through"}' > "$TEST_DIR/cmpl.txt" ||
	fail "curl completions stream"
"$PYTHON" - "$TEST_DIR/cmpl.txt" <<'PY' || fail "completions SSE"
import json, sys
events = open(sys.argv[1]).read().split("\n\n")[:-1]
assert events[-1] == "data: [DONE]", events
chunks = [json.loads(e[6:]) for e in events[:-1]]
assert all(c["object"] == "text_completion" and c["choices"] for c in chunks), chunks
assert "".join(c["choices"][0]["text"] for c in chunks) == "echo: pass me through", chunks
PY
# the ledger got the usage the client did not ask for: 4 prompt and 4 completion words
i=0
until metrics | grep -q 'openllmd_completion_tokens_total{model="fake-model",user="daemon",tag="pass",status="done"} 4'; do
	i=$((i + 1)); [ $i -lt 50 ] || { metrics >&2; fail "the completions stream was not accounted"; }
	sleep 0.1
done
metrics | grep -q 'openllmd_prompt_tokens_total{model="fake-model",user="daemon",tag="pass",status="done"} 4' ||
	fail "the completions stream's prompt tokens"

# Errors are OpenAI-shaped, with the status a client expects.
status() { curl -s -o "$TEST_DIR/body.json" -w '%{http_code}' "$@" || true; }
s=$(status -H "Authorization: Bearer $KEY" "$BASE/chat/completions" -d '{not json')
[ "$s" = 400 ] || fail "bad JSON: $s"
"$PYTHON" -c 'import json,sys; e=json.load(open(sys.argv[1]))["error"]; assert set(e)=={"message","type","param","code"} and e["code"]=="bad_request", e' \
	"$TEST_DIR/body.json" || fail "error shape: $(cat "$TEST_DIR/body.json")"
s=$(status -H "Authorization: Bearer $KEY" "$BASE/chat/completions" -d '{"model":"fake-model","n":2,"messages":[{"role":"user","content":"x"}]}')
[ "$s" = 400 ] && grep -q '"param":"n"' "$TEST_DIR/body.json" || fail "n=2: $s $(cat "$TEST_DIR/body.json")"
# one cap on max_tokens for both fronts: 2^63-1 is refused as the msgpack socket refuses it
s=$(status -H "Authorization: Bearer $KEY" "$BASE/chat/completions" -d '{"model":"fake-model","max_tokens":9223372036854775807,"messages":[{"role":"user","content":"x"}]}')
[ "$s" = 400 ] && grep -q '"param":"max_tokens"' "$TEST_DIR/body.json" && grep -q "from 1 to 16777216" "$TEST_DIR/body.json" ||
	fail "max_tokens 2^63-1: $s $(cat "$TEST_DIR/body.json")"
s=$(status -H "Authorization: Bearer $KEY" "$BASE/completions" -d '{"model":"fake-model","max_tokens":16777217,"prompt":"x"}')
[ "$s" = 400 ] && grep -q '"param":"max_tokens"' "$TEST_DIR/body.json" || fail "completions max_tokens 2^24+1: $s"
LONGTAG=$(head -c 300 /dev/zero | tr '\0' t)
s=$(status -H "Authorization: Bearer $KEY" -H "X-Ollm-Tag: $LONGTAG" "$BASE/embeddings" -d '{"input":"x"}')
[ "$s" = 400 ] || fail "a 300-byte X-Ollm-Tag: $s"
s=$(status -H "Authorization: Bearer $KEY" "$BASE/nothing")
[ "$s" = 404 ] || fail "unknown URL: $s"
s=$(status -H "Authorization: Bearer $KEY" "$BASE/models" -d '{}')
[ "$s" = 405 ] || fail "POST /v1/models: $s"
head -c 20000000 /dev/zero | tr '\0' 'a' > "$TEST_DIR/big"
s=$(status -H "Authorization: Bearer $KEY" "$BASE/chat/completions" --data-binary @"$TEST_DIR/big")
[ "$s" = 413 ] || fail "a body over max_frame: $s"
"$PYTHON" -c 'import json,sys; e=json.load(open(sys.argv[1]))["error"]; assert set(e)=={"message","type","param","code"} and e["code"]=="request_too_large" and e["type"]=="invalid_request_error" and "20000000 bytes" in e["message"], e' \
	"$TEST_DIR/body.json" || fail "413 shape: $(head -c 300 "$TEST_DIR/body.json")"
# refused as its headers came, without reading the body: the connection is closed, and
# the client's next request goes on a new one
curl -s -o /dev/null -w '%{http_code} %{num_connects}\n' \
	-H "Authorization: Bearer $KEY" "$BASE/chat/completions" --data-binary @"$TEST_DIR/big" \
	--next -o "$TEST_DIR/body2.json" -w '%{http_code} %{num_connects}\n' \
	-H "Authorization: Bearer $KEY" "$BASE/chat/completions" \
	-d '{"model":"fake-model","messages":[{"role":"user","content":"after 413"}]}' > "$TEST_DIR/codes" || true
[ "$(cat "$TEST_DIR/codes")" = "413 1
200 1" ] && grep -q "echo: after 413" "$TEST_DIR/body2.json" ||
	fail "a request after the 413: $(cat "$TEST_DIR/codes")"
s=$(status "http://127.0.0.1:$PORT/health")
[ "$s" = 200 ] && grep -q '"status":"ok"' "$TEST_DIR/body.json" || fail "health: $s"
# a wrong key is refused even on loopback
s=$(status -H "Authorization: Bearer sk-nope" "$BASE/models")
[ "$s" = 401 ] || fail "wrong key on loopback: $s"

# --- identity without a key -------------------------------------------------
# Loopback TCP: the uid owning the client's socket, from the kernel.
s=$(setpriv --reuid=65534 --regid=65534 --clear-groups curl -s -o /dev/null -w '%{http_code}' \
	"$BASE/chat/completions" -d '{"model":"fake-model","messages":[{"role":"user","content":"who am i"}]}' || true)
[ "$s" = 200 ] || fail "keyless loopback client: $s"
grep -q "uid 65534 model fake-model upstream fake: done" "$TEST_DIR/daemon.log" &&
	metrics | grep -q 'openllmd_requests_total{model="fake-model",user="nobody",tag="",status="done"} 1' ||
	fail "the loopback client was not billed as nobody (uid 65534)"
# The Unix socket: SO_PEERCRED.
chmod 755 "$TEST_DIR"
s=$(setpriv --reuid=4243 --regid=4243 --clear-groups curl -s -o /dev/null -w '%{http_code}' \
	--unix-socket "$TEST_DIR/http.sock" http://localhost/v1/chat/completions \
	-d '{"model":"fake-model","messages":[{"role":"user","content":"unix"}]}' || true)
[ "$s" = 200 ] || fail "keyless Unix-socket client: $s"
grep -q "uid 4243 model fake-model upstream fake: done" "$TEST_DIR/daemon.log" ||
	fail "the Unix-socket client was not billed as uid 4243"
# A key's user that is a bare uid.
s=$(status -H "Authorization: Bearer $KEY2" "$BASE/chat/completions" \
	-d '{"model":"fake-model","messages":[{"role":"user","content":"uid key"}]}')
[ "$s" = 200 ] && grep -q "uid 4242 model fake-model" "$TEST_DIR/daemon.log" || fail "uid key: $s"
# X-Ollm-Tag replaces a key's tag only for a key made with tag_override; an
# empty one does not empty it.
s=$(status -H "Authorization: Bearer $KEY" -H "X-Ollm-Tag: other" "$BASE/chat/completions" \
	-d '{"model":"fake-model","messages":[{"role":"user","content":"tagged"}]}')
[ "$s" = 403 ] || fail "a key's tag replaced: $s"
s=$(status -H "Authorization: Bearer $KEY" -H "X-Ollm-Tag;" "$BASE/chat/completions" \
	-d '{"model":"fake-model","messages":[{"role":"user","content":"tagged"}]}')
[ "$s" = 403 ] || fail "a key's tag emptied: $s"
s=$(status -H "Authorization: Bearer $KEY_OVERRIDE" -H "X-Ollm-Tag: other" "$BASE/chat/completions" \
	-d '{"model":"fake-model","messages":[{"role":"user","content":"tagged"}]}')
[ "$s" = 200 ] || fail "tagged: $s"
metrics | grep -q 'openllmd_requests_total{model="fake-model",user="daemon",tag="other",status="done"} 1' ||
	fail "X-Ollm-Tag did not replace the key's tag"

# --- /metrics ---------------------------------------------------------------
s=$(status -H "Authorization: Bearer $KEY" "http://127.0.0.1:$PORT/metrics")
[ "$s" = 403 ] || fail "/metrics for a key of another user: $s"
metrics > "$TEST_DIR/metrics.txt" || fail "GET /metrics"
promtool check metrics < "$TEST_DIR/metrics.txt" || fail "promtool check metrics"
for m in openllmd_requests_total openllmd_prompt_tokens_total openllmd_completion_tokens_total \
    openllmd_cost_total openllmd_in_flight openllmd_queued openllmd_ttft_seconds_bucket \
    openllmd_latency_seconds_count 'openllmd_upstream_up{upstream="fake"} 1' \
    'openllmd_budget_remaining{scope="tag:capped",unit="tokens",period="day"} 20' \
    'status="budget_exceeded"' 'status="rate_limited"'; do
	grep -qF "$m" "$TEST_DIR/metrics.txt" || fail "/metrics lacks $m"
done
# names nobody serves are one series, "other"; latency and ttft by model;
# numbers as the shortest decimal that reads back
for m in no-such-model-1 no-such-model-2; do
	s=$(status -H "Authorization: Bearer $KEY" "$BASE/chat/completions" \
		-d "{\"model\":\"$m\",\"messages\":[{\"role\":\"user\",\"content\":\"x\"}]}")
	[ "$s" = 404 ] || fail "unknown model: $s"
	grep -q 'served: fake-model' "$TEST_DIR/body.json" || fail "unknown model lists none: $(cat "$TEST_DIR/body.json")"
done
metrics > "$TEST_DIR/metrics.txt"
grep -q 'no-such-model' "$TEST_DIR/metrics.txt" && fail "a series per unknown model name"
grep -q 'openllmd_requests_total{model="other",user="daemon",tag="ci",status="unknown_model"} [3-9]' \
	"$TEST_DIR/metrics.txt" || { grep other "$TEST_DIR/metrics.txt" >&2; fail "unknown models not counted as other"; }
grep -q 'openllmd_latency_seconds_bucket{model="fake-model",le="+Inf"}' "$TEST_DIR/metrics.txt" ||
	fail "latency without a model label"
grep -q 'openllmd_ttft_seconds_count{model="fake-model"}' "$TEST_DIR/metrics.txt" ||
	fail "ttft without a model label"
promtool check metrics < "$TEST_DIR/metrics.txt" || fail "promtool check metrics, by model"
"$PYTHON" - "$TEST_DIR/metrics.txt" <<'PY' || fail "metrics numbers"
import sys
for line in open(sys.argv[1]):
    if line.startswith("#") or not line.strip():
        continue
    v = line.rsplit(" ", 1)[1].strip()
    if v in ("+Inf", "-Inf", "NaN"):
        continue
    short = repr(float(v))
    short = short[:-2] if short.endswith(".0") else short
    assert len(v.replace("e-0", "e-")) <= len(short.replace("e-0", "e-")), (line, short)
PY

# --- draining waits for HTTP streams ----------------------------------------
curl -sSN -H "Authorization: Bearer $KEY" "$BASE/chat/completions" \
	-d '{"model":"fake-model","stream":true,"messages":[{"role":"user","content":"drain [[chunks=10 delay_ms=100]]"}]}' \
	> "$TEST_DIR/drain.txt" &
CURL_PID=$!
sleep 0.4
kill -TERM "$DAEMON_PID"
wait "$CURL_PID" || fail "the stream broke during the drain"
tail -n 2 "$TEST_DIR/drain.txt" | grep -q '^data: \[DONE\]$' || fail "the stream did not end with [DONE] during the drain"
wait "$DAEMON_PID" 2>/dev/null || true

# --- a key whose user is no system user: billed, budgeted and shown by name ---
# (ci:alice: no passwd entry can hold a colon, so no user of the host is her)
rm -rf "$TEST_DIR/state"
: > "$TEST_DIR/daemon.log"
ALICE=$("$top_builddir/client/ollmctl" key new --user ci:alice | head -n 1)
ALICE_LINE=$("$top_builddir/client/ollmctl" key new --user ci:alice | tail -n 1)
case "$ALICE_LINE" in "api_keys = ( { sha256 = \""*"\"; user = \"ci:alice\"; } );") ;;
*) fail "ollmctl key new --user ci:alice printed: $ALICE_LINE" ;; esac
NAMED_KEYS="{ sha256 = \"$(printf %s "$ALICE" | sha256sum | cut -d' ' -f1)\"; user = \"ci:alice\"; },
  { sha256 = \"$(printf %s "$KEY" | sha256sum | cut -d' ' -f1)\"; user = \"daemon\"; }"
HTTP_LISTEN='"127.0.0.1:0"' start_daemon "api_keys = ( $NAMED_KEYS );" \
	'budgets = ( { scope = "user"; who = "ci:alice"; unit = "tokens"; period = "ever"; limit = 120; } );' \
	'socket_mode = "0666";'
PORT=$(http_port)
BASE="http://127.0.0.1:$PORT/v1"
SPEND='{"model":"fake-model","max_tokens":5,"messages":[{"role":"user","content":"spend spend spend spend spend spend spend spend spend spend"}]}'
# the official client with ci:alice's key
OLLM_BASE_URL="$BASE" OLLM_KEY="$ALICE" node_check chat
# in flight, ollmctl top names her
curl -s -o /dev/null -H "Authorization: Bearer $ALICE" "$BASE/chat/completions" \
	-d '{"model":"fake-model","max_tokens":3,"messages":[{"role":"user","content":"w [[chunks=3 delay_ms=700]]"}]}' &
CURL_PID=$!
i=0
until "$top_builddir/client/ollmctl" top -b -n 1 | grep -q "^ci:alice  *fake-model"; do
	i=$((i + 1)); [ $i -lt 40 ] || fail "ollmctl top does not show ci:alice's chat"; sleep 0.05
done
wait "$CURL_PID"
# ci:alice spends until her budget refuses, naming it
refused=""
for n in 1 2 3 4 5 6; do
	s=$(status -H "Authorization: Bearer $ALICE" "$BASE/chat/completions" -d "$SPEND")
	[ "$s" = 200 ] && continue
	[ "$s" = 402 ] || fail "ci:alice's request $n: $s $(cat "$TEST_DIR/body.json")"
	"$PYTHON" -c 'import json,sys; e=json.load(open(sys.argv[1]))["error"]; assert e["code"]=="budget_exceeded" and "user:ci:alice" in e["message"], e' \
		"$TEST_DIR/body.json" || fail "ci:alice's refusal: $(cat "$TEST_DIR/body.json")"
	refused=$n
	break
done
[ -n "$refused" ] && [ "$refused" -gt 1 ] || fail "ci:alice's budget refused at request ${refused:-never}"
grep -q "user ci:alice model fake-model upstream fake: done" "$TEST_DIR/daemon.log" ||
	fail "the daemon's log does not name ci:alice"
# a key whose user is a system user still bills the uid (daemon: 1), never ci:alice
s=$(status -H "Authorization: Bearer $KEY" "$BASE/chat/completions" -d "$SPEND")
[ "$s" = 200 ] || fail "the system user's key next to ci:alice's budget: $s"
"$top_builddir/client/ollmctl" stats --by user --json > "$TEST_DIR/named1.json" || fail "ollmctl stats --by user"
"$PYTHON" - "$TEST_DIR/named1.json" "$refused" <<'PY' || { cat "$TEST_DIR/named1.json" >&2; fail "stats by user"; }
import json, sys
s = json.load(open(sys.argv[1]))
u, n = s["by_user"], int(sys.argv[2])
assert set(u) == {"1", "ci:alice"}, u
a = u["ci:alice"]
assert a["requests"] == n + 2 and a["errors"] == 1, a      # the SDK's chat, top's, n - 1 spent, 1 refused
assert a["total_tokens"] > 120 - 30, a     # refused once (nearly) spent
assert u["1"]["requests"] == 1 and u["1"]["errors"] == 0, u["1"]
PY
"$top_builddir/client/ollmctl" stats --by user | grep -q "^ci:alice " || fail "ollmctl stats --by user shows no ci:alice"
"$top_builddir/client/ollmctl" logs --json > "$TEST_DIR/logs.json" || fail "ollmctl logs"
"$PYTHON" -c 'import json,sys; r=json.load(open(sys.argv[1]))["rows"]; a=[x for x in r if x.get("user")=="ci:alice"]; assert len(a)==int(sys.argv[2])+2 and all(x["uid"]==4294967295 for x in a), r' \
	"$TEST_DIR/logs.json" "$refused" || fail "ollmctl logs: $(cat "$TEST_DIR/logs.json")"
"$top_builddir/client/ollmctl" logs --user ci:alice --json > "$TEST_DIR/logs_alice.json" || fail "ollmctl logs --user ci:alice"
"$PYTHON" -c 'import json,sys; r=json.load(open(sys.argv[1]))["rows"]; assert len(r)==int(sys.argv[2])+2 and all(x.get("user")=="ci:alice" for x in r), r' \
	"$TEST_DIR/logs_alice.json" "$refused" || fail "ollmctl logs --user ci:alice: $(cat "$TEST_DIR/logs_alice.json")"
"$top_builddir/client/ollmctl" logs --user ci:alice | grep -q "^.*  ci:alice  " || fail "ollmctl logs --user ci:alice: no table row names ci:alice"
setpriv --reuid=65534 --regid=65534 --clear-groups "$top_builddir/client/ollmctl" logs --user ci:alice > "$TEST_DIR/out" 2>&1 &&
	fail "nobody read ci:alice's rows"
grep -q "forbidden\|only your own rows" "$TEST_DIR/out" || fail "nobody's logs --user ci:alice: $(cat "$TEST_DIR/out")"
metrics() { curl -sf "http://127.0.0.1:$PORT/metrics"; }
metrics | grep -q 'openllmd_requests_total{model="fake-model",user="ci:alice",tag="",status="budget_exceeded"} 1' ||
	{ metrics >&2; fail "/metrics does not label ci:alice's refusal"; }
metrics | grep -q 'openllmd_budget_remaining{scope="user:ci:alice",unit="tokens",period="ever"}' ||
	fail "/metrics lacks ci:alice's budget"
s=$(status -H "Authorization: Bearer $ALICE" "http://127.0.0.1:$PORT/metrics")
[ "$s" = 403 ] || fail "/metrics for a named user's key: $s"
# after a restart: the same stats from the ledger, and ci:alice's budget still spent
stop_daemon TERM
: > "$TEST_DIR/daemon.log"
KEEP_CONFIG=1 start_daemon
PORT=$(http_port)
BASE="http://127.0.0.1:$PORT/v1"
"$top_builddir/client/ollmctl" stats --by user --json > "$TEST_DIR/named2.json" || fail "ollmctl stats after the restart"
"$PYTHON" -c 'import json,sys; a,b=(json.load(open(f)) for f in sys.argv[1:]); assert a==b, (a,b)' \
	"$TEST_DIR/named1.json" "$TEST_DIR/named2.json" || fail "stats changed across the restart"
s=$(status -H "Authorization: Bearer $ALICE" "$BASE/chat/completions" -d "$SPEND")
grep -q '"code":"budget_exceeded"' "$TEST_DIR/body.json" || fail "ci:alice's budget after the restart: $s $(cat "$TEST_DIR/body.json")"
stop_daemon TERM

# --- require_key and non-loopback clients -----------------------------------
rm -rf "$TEST_DIR/state"
ADDR=$(hostname -I 2>/dev/null | tr ' ' '\n' | grep -v '^127\.' | grep -v ':' | head -n 1 || true)
if [ -n "$ADDR" ]; then
	HTTP_LISTEN="\"127.0.0.1:0\", \"$ADDR:0\"" start_daemon "api_keys = ( $KEYS );"
	EXT=$(grep "HTTP: listening on $ADDR:" "$TEST_DIR/daemon.log" | tail -n 1 | sed 's/.*:\([0-9]*\)$/\1/')
	s=$(status "http://$ADDR:$EXT/v1/models")
	[ "$s" = 401 ] || fail "a non-loopback client without a key: $s"
	s=$(status -H "Authorization: Bearer $KEY" "http://$ADDR:$EXT/v1/models")
	[ "$s" = 200 ] || fail "a non-loopback client with a key: $s"
	stop_daemon TERM
	rm -rf "$TEST_DIR/state"
fi
: > "$TEST_DIR/daemon.log"
HTTP_LISTEN='"127.0.0.1:0"' start_daemon "api_keys = ( $KEYS );" 'require_key = true;' \
	'http_timeout = 1.0;' 'http_max_header = 4096;'
PORT=$(http_port)
# header cap, and a client that sends half a request is dropped after http_timeout
BIGH=$(head -c 5000 /dev/zero | tr '\0' h)
s=$(status -H "X-Big: $BIGH" -H "Authorization: Bearer $KEY" "http://127.0.0.1:$PORT/v1/models")
[ "$s" = 413 ] || [ "$s" = 400 ] || fail "headers over http_max_header: $s"
"$PYTHON" - "$PORT" <<'PY' || fail "a half-sent request was not dropped"
import socket, sys
s = socket.create_connection(("127.0.0.1", int(sys.argv[1])))
s.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\n")
s.settimeout(10)
while s.recv(4096):
    pass
PY
s=$(status "http://127.0.0.1:$PORT/v1/models")
[ "$s" = 401 ] && grep -q '"code":"missing_api_key"' "$TEST_DIR/body.json" || fail "require_key: $s"
s=$(status -H "Authorization: Bearer $KEY" "http://127.0.0.1:$PORT/v1/models")
[ "$s" = 200 ] || fail "require_key with a key: $s"
stop_daemon TERM

# --- socket activation: the unit's second socket is the HTTP front's ---------
rm -rf "$TEST_DIR/state"
FREE=$("$PYTHON" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
act="$TEST_DIR/activated.sock"
systemd-socket-activate -E OPENLLMD_TOKENIZER_DIR -l "$act" -l "127.0.0.1:$FREE" \
	"$top_builddir/daemon/openllmd" -f -c "$CONF" >>"$TEST_DIR/daemon.log" 2>&1 &
pid=$!
TEST_PIDS="$TEST_PIDS $pid"
i=0
until [ -S "$act" ]; do i=$((i + 1)); [ $i -lt 100 ] || fail "no activated socket"; sleep 0.05; done
s=$(status -H "Authorization: Bearer $KEY" "http://127.0.0.1:$FREE/v1/chat/completions" \
	-d '{"model":"fake-model","messages":[{"role":"user","content":"activated"}]}')
[ "$s" = 200 ] && grep -q '"content":"echo: activated"' "$TEST_DIR/body.json" || fail "HTTP on the activated socket: $s"
grep -q "HTTP: listening on 127.0.0.1:$FREE, passed by systemd" "$TEST_DIR/daemon.log" ||
	fail "the second socket was not taken from systemd"
OPENLLMD_SOCKET="$act" "$PYTHON" -m olc chat "msgpack too" > "$TEST_DIR/olc.out" && grep -q "echo: msgpack too" "$TEST_DIR/olc.out" ||
	fail "msgpack on the activated socket"
kill -TERM "$pid"
wait "$pid" || true
echo "http: all checks passed"
