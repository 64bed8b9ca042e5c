#!/bin/sh
# Real npm clients, unmodified, against the servers that speak their APIs:
# @anthropic-ai/sdk, the openai client's Responses API, `claude -p` and
# `codex exec`. First the fake model server's native /v1/messages and
# /v1/responses (what the daemon forwards to when an upstream has them);
# then tests/translate_server, which serves both through the translations
# to and from chat (daemon/anthropic.c, daemon/responses.c), tools included.
# The clients are installed once into a cache outside the build tree.
. "$top_srcdir/tests/integration/lib.sh"

npm_clients || fail "npm install $NPM_CLIENT_PACKAGES"
export ANTHROPIC_SDK_DIR="$NPM_CLIENTS/@anthropic-ai/sdk" OPENAI_DIR="$NPM_CLIENTS/openai"
# the CLIs keep their state in HOME: a private one, and no traffic but the model's
HOME="$TEST_DIR/home"
export HOME CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC=1 DISABLE_AUTOUPDATER=1
mkdir -p "$HOME" "$TEST_DIR/work"
echo "the secret is 42" > "$TEST_DIR/work/note.txt"

start_fake_upstream --api anthropic,responses
"$top_builddir/tests/translate_server" > "$TEST_DIR/translate.port" 2> "$TEST_DIR/translate.log" &
TEST_PIDS="$TEST_PIDS $!"
wait_for_line "$TEST_DIR/translate.port" 10
TRANSLATE_URL="http://127.0.0.1:$(head -n 1 "$TEST_DIR/translate.port")"
FAKE_ROOT="http://127.0.0.1:$FAKE_PORT"

SDK_CHECKS="message system stream max_tokens tools thinking count_tokens beta"
RESPONSES_CHECKS="create items stream incomplete tools reasoning"

# sdk_checks ROOT_URL [extra anthropic checks] [extra responses checks]
sdk_checks() {
	OLLM_BASE_URL="$1" OLLM_KEY=sk-ant-placeholder node \
	    "$top_srcdir/tests/integration/anthropic_client.mjs" $SDK_CHECKS $2 ||
		fail "@anthropic-ai/sdk against $1"
	OLLM_BASE_URL="$1/v1" OLLM_KEY=sk-xxx node \
	    "$top_srcdir/tests/integration/responses_client.mjs" $RESPONSES_CHECKS $3 ||
		fail "openai responses against $1"
}

# claude_p ROOT_URL PROMPT: claude -p's answer on stdout
claude_p() {
	(cd "$TEST_DIR/work" && ANTHROPIC_BASE_URL="$1" ANTHROPIC_API_KEY=sk-ant-placeholder \
	    ANTHROPIC_MODEL=fake-model timeout 120 "$CLAUDE" -p "$2" < /dev/null \
	    2> "$TEST_DIR/claude.err") ||
		{ cat "$TEST_DIR/claude.err" >&2; fail "claude -p against $1"; }
}

# codex_exec ROOT_URL PROMPT: codex exec's answer on stdout
codex_exec() {
	export CODEX_HOME="$TEST_DIR/codex"
	mkdir -p "$CODEX_HOME"
	cat > "$CODEX_HOME/config.toml" <<-EOF
	model = "fake-model"
	model_provider = "ollm"

	[model_providers.ollm]
	name = "openllmd"
	base_url = "$1/v1"
	wire_api = "responses"
	env_key = "OLLM_KEY"
	EOF
	(cd "$TEST_DIR/work" && OLLM_KEY=sk-xxx timeout 120 "$CODEX" exec --skip-git-repo-check \
	    --sandbox danger-full-access \
	    "$2" < /dev/null 2> "$TEST_DIR/codex.err") ||
		{ cat "$TEST_DIR/codex.err" >&2; fail "codex exec against $1"; }
}

# stat_field URL PYTHON-EXPR: a value of a server's /stats
stat_field() {
	curl -sf "$1/stats" | $PYTHON -c "import json, sys; s = json.load(sys.stdin); print($2)"
}

# --- the fake's native APIs ----------------------------------------------
sdk_checks "$FAKE_ROOT" "rate_limited stream_error" "rate_limited stream_failed"

out=$(claude_p "$FAKE_ROOT" "say hi")
case "$out" in *"echo: "*"say hi"*) ;; *) fail "claude -p against the fake said: $out" ;; esac
[ "$(stat_field "$FAKE_ROOT" 's["last_request"]["target"]')" = "/v1/messages?beta=true" ] ||
	fail "claude -p did not POST /v1/messages?beta=true"
[ "$(stat_field "$FAKE_ROOT" 's["last_request"]["headers"]["x-api-key"]')" = sk-ant-placeholder ] ||
	fail "claude -p did not send its key in x-api-key"
[ "$(stat_field "$FAKE_ROOT" 's["last_native_body"]["model"], s["last_native_body"]["stream"]')" = \
    "fake-model True" ] || fail "claude -p: not a stream for fake-model"

out=$(codex_exec "$FAKE_ROOT" "say hi")
[ "$out" = "echo: say hi" ] || fail "codex exec against the fake said: $out"
[ "$(stat_field "$FAKE_ROOT" 's["last_request"]["target"]')" = "/v1/responses" ] ||
	fail "codex exec did not POST /v1/responses"
[ "$(stat_field "$FAKE_ROOT" 's["last_request"]["headers"]["authorization"]')" = "Bearer sk-xxx" ] ||
	fail "codex exec did not send its env_key"

# --- through the translations --------------------------------------------
sdk_checks "$TRANSLATE_URL" refuse_image stateless

out=$(claude_p "$TRANSLATE_URL" "say hi")
[ "$out" = "echo: say hi" ] || fail "claude -p through the translation said: $out"
# a tool round trip: the model calls Read, claude runs it and sends the result back
out=$(claude_p "$TRANSLATE_URL" "[[call Read {\"file_path\":\"$TEST_DIR/work/note.txt\"}]] read the note")
case "$out" in *"tool said:"*"the secret is 42"*) ;; *) fail "claude's Read round trip: $out" ;; esac
# Claude Code's tools, system turns and tool results became chat
stat_field "$TRANSLATE_URL" 'json.dumps(s["bodies"][-1]["chat"])' > "$TEST_DIR/claude_chat.json"
$PYTHON - "$TEST_DIR/claude_chat.json" <<'EOF' || fail "claude's request as chat"
import json, sys
chat = json.load(open(sys.argv[1]))
roles = [m["role"] for m in chat["messages"]]
names = [t["function"]["name"] for t in chat["tools"]]
assert roles[0] == "system" and roles[-2:] == ["assistant", "tool"], roles
assert "Read" in names and "Bash" in names, names
assert not any("x-anthropic-billing-header" in (m["content"] or "") for m in chat["messages"])
call = chat["messages"][-2]["tool_calls"][0]
assert call["function"]["name"] == "Read" and chat["messages"][-1]["tool_call_id"] == call["id"]
assert "the secret is 42" in chat["messages"][-1]["content"]
EOF

out=$(codex_exec "$TRANSLATE_URL" "say hi")
[ "$out" = "echo: say hi" ] || fail "codex exec through the translation said: $out"
out=$(codex_exec "$TRANSLATE_URL" "[[call exec_command {\"cmd\":\"cat note.txt\"}]] read the note")
case "$out" in *"tool said:"*"the secret is 42"*) ;; *) fail "codex's exec_command round trip: $out" ;; esac
stat_field "$TRANSLATE_URL" 'json.dumps(s["bodies"][-1]["chat"])' > "$TEST_DIR/codex_chat.json"
$PYTHON - "$TEST_DIR/codex_chat.json" <<'EOF' || fail "codex's request as chat"
import json, sys
chat = json.load(open(sys.argv[1]))
roles = [m["role"] for m in chat["messages"]]
names = [t["function"]["name"] for t in chat["tools"]]
assert roles[0] == "system" and roles[-2:] == ["assistant", "tool"], roles
assert "exec_command" in names, names
assert any("__" in n for n in names), names    # a namespace's tools, flattened
assert chat["messages"][-2]["tool_calls"][0]["function"]["name"] == "exec_command"
EOF
exit 0
