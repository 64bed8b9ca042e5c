#!/bin/sh
# ollmctl without a terminal: chat from a pipe, ping, models, tokens, stats
# (tables and --json against what the fake model server reported), and the
# exit statuses of DESIGN.md.
. "$top_srcdir/tests/integration/lib.sh"
OLLMCTL="$top_builddir/client/ollmctl"

# run EXPECTED_STATUS CMD...: run with stdout and stderr in $TEST_DIR/out and err.
run() {
	want=$1
	shift
	rc=0
	"$@" > "$TEST_DIR/out" 2> "$TEST_DIR/err" || rc=$?
	if [ "$rc" -ne "$want" ]; then
		echo "--- stdout"; cat "$TEST_DIR/out"; echo "--- stderr"; cat "$TEST_DIR/err"
		fail "exit $rc, not $want: $*"
	fi
}

# chat_in EXPECTED_STATUS TEXT ARGS...: TEXT on stdin of ollmctl chat ARGS.
chat_in() {
	want=$1
	text=$2
	shift 2
	printf '%s' "$text" > "$TEST_DIR/in"
	run "$want" "$OLLMCTL" chat "$@" < "$TEST_DIR/in"
}

# py CODE: run Python with the fake server's /stats as `fake` and out as `out`.
py() {
	FAKE_PORT=$FAKE_PORT OUT="$TEST_DIR/out" "$PYTHON" -c "
import json, os, urllib.request
fake = json.load(urllib.request.urlopen('http://127.0.0.1:%s/stats' % os.environ['FAKE_PORT']))
out = open(os.environ['OUT'], encoding='utf-8').read()
$1" || fail "check failed: $1"
}

# --- no daemon -------------------------------------------------------------
run 69 "$OLLMCTL" -S "$TEST_DIR/none.sock" ping
[ "$(wc -l < "$TEST_DIR/err")" -eq 1 ] || fail "no daemon: more than one line"
grep -q "$TEST_DIR/none.sock" "$TEST_DIR/err" || fail "no daemon: the socket is not named"
grep -q "openllmd -f" "$TEST_DIR/err" || fail "no daemon: no hint how to start it"
grep -q "systemctl start openllmd" "$TEST_DIR/err" || fail "no daemon: no systemctl hint"
run 69 env OPENLLMD_SOCKET="$TEST_DIR/env.sock" "$OLLMCTL" stats
grep -q "$TEST_DIR/env.sock" "$TEST_DIR/err" || fail "OPENLLMD_SOCKET not used"
echo hi | run 69 env OPENLLMD_SOCKET="$TEST_DIR/env.sock" "$OLLMCTL" chat

# --- usage -----------------------------------------------------------------
run 64 "$OLLMCTL"
run 64 "$OLLMCTL" frobnicate
run 64 "$OLLMCTL" -x ping
run 64 "$OLLMCTL" stats --by week
run 64 "$OLLMCTL" stats --since "last tuesday"
run 64 "$OLLMCTL" stats extra
run 64 "$OLLMCTL" chat --max-tokens 0
run 64 "$OLLMCTL" chat --temperature hot
run 64 "$OLLMCTL" chat -c --cid named
run 64 "$OLLMCTL" chat --cid ../escape
run 64 "$OLLMCTL" logs --status fine
run 64 "$OLLMCTL" logs -n 1001
run 64 "$OLLMCTL" top -d 0
run 64 "$OLLMCTL" conversations extra
run 64 "$OLLMCTL" tokens -e cl100k_base -m fake-model
run 64 "$OLLMCTL" ping now
run 0 "$OLLMCTL" -V
grep -qx "ollmctl [0-9.]*" "$TEST_DIR/out" || fail "-V: $(cat "$TEST_DIR/out")"
for c in chat conversations stats logs top models ping tokens; do
	run 0 "$OLLMCTL" "$c" --help
	grep -q "^usage: ollmctl $c" "$TEST_DIR/out" || fail "$c --help"
done
run 0 "$OLLMCTL" --help
grep -q "ollmctl tokens" "$TEST_DIR/out" || fail "--help lacks the commands"

# --- a daemon with a fake model server and one that is down ----------------
start_fake_upstream -q -m fake-model -m other-model
UPSTREAMS="{ name = \"fake\"; base_url = \"$FAKE_URL\"; model = \"fake-model\";
  rpm = 0; max_concurrency = 0; retries = 1; first_byte_timeout = 1.0; idle_timeout = 1.0; },
  { name = \"down\"; base_url = \"http://127.0.0.1:1/v1\"; model = \"down-model\";
  retries = 0; connect_timeout = 2.0; }"
start_daemon 'budgets = ( { scope = "tag"; who = "tiny"; unit = "tokens"; limit = 10.0; } );'

run 0 "$OLLMCTL" ping
grep -q "^openllmd [0-9.]* on $OPENLLMD_SOCKET: up " "$TEST_DIR/out" || fail "ping: $(cat "$TEST_DIR/out")"
run 0 "$OLLMCTL" -S "$OPENLLMD_SOCKET" ping
run 0 "$OLLMCTL" models
grep -q "^fake  $FAKE_URL  healthy" "$TEST_DIR/out" || fail "models: $(cat "$TEST_DIR/out")"
grep -q "default model: fake-model" "$TEST_DIR/out" || fail "models: no default model"
grep -q "serves: fake-model, other-model" "$TEST_DIR/out" || fail "models: no list"
grep -q "^down  http://127.0.0.1:1/v1" "$TEST_DIR/out" || fail "models: no second upstream"

# --- chat from a pipe --------------------------------------------------------
chat_in 0 "hello world"
[ "$(cat "$TEST_DIR/out")" = "echo: hello world" ] || fail "pipe: $(cat "$TEST_DIR/out")"
chat_in 0 "hello world" --no-stream
[ "$(cat "$TEST_DIR/out")" = "echo: hello world" ] || fail "no-stream: $(cat "$TEST_DIR/out")"
py "assert fake['last_body']['stream'] is False, fake['last_body']"

# All of stdin is one user message; the options reach the model server.
printf 'first line\nsecond line\n' > "$TEST_DIR/in"
run 0 "$OLLMCTL" chat -s "Be brief." -m other-model --max-tokens 200 --temperature 0.5 < "$TEST_DIR/in"
py "
b = fake['last_body']
assert b['messages'] == [{'role': 'system', 'content': 'Be brief.'},
    {'role': 'user', 'content': 'first line\nsecond line\n'}], b['messages']
assert b['model'] == 'other-model' and b['max_tokens'] == 200 and b['temperature'] == 0.5, b
assert out == 'echo: first line\nsecond line\n', repr(out)"

# --max-tokens caps the reply.
chat_in 0 "[[words=10]] " --max-tokens 3
[ "$(cat "$TEST_DIR/out")" = "w1 w2 w3" ] || fail "max-tokens: $(cat "$TEST_DIR/out")"

# Tagged requests, counted below.
chat_in 0 "tagged one [[chunks=3]]" --tag t1
chat_in 0 "tagged two [[words=5]]" --tag t1
chat_in 0 "tagged three" --tag t2 --no-stream

# The reply streams: the first words are out while the model still writes.
printf 'slow [[words=30 delay_ms=100]]' > "$TEST_DIR/in"
"$OLLMCTL" chat < "$TEST_DIR/in" > "$TEST_DIR/stream1" &
pid=$!
wait_for_line "$TEST_DIR/stream1" 10
kill -0 "$pid" 2>/dev/null || fail "streaming: the reply came all at once"
wait "$pid" || fail "streaming: exit $?"
grep -q "w1 w2 .* w30" "$TEST_DIR/stream1" || fail "streaming: $(cat "$TEST_DIR/stream1")"

# SIGINT cancels the request: exit 130, the model server's transfer ends.
printf 'long [[words=200 delay_ms=50]]' > "$TEST_DIR/in"
"$OLLMCTL" chat < "$TEST_DIR/in" > "$TEST_DIR/stream2" &
pid=$!
wait_for_line "$TEST_DIR/stream2" 10
kill -INT "$pid"
rc=0
wait "$pid" || rc=$?
[ "$rc" -eq 130 ] || fail "SIGINT: exit $rc"
i=0
until py "assert fake['in_flight'] == 0" 2>/dev/null; do
	i=$((i + 1))
	[ "$i" -lt 100 ] || fail "the upstream transfer was not cancelled"
	sleep 0.1
done

# --- exit statuses -----------------------------------------------------------
chat_in 65 "hi" -m no-such-model
grep -q "unknown model" "$TEST_DIR/err" || fail "65: $(cat "$TEST_DIR/err")"
printf 'caf\351\n' > "$TEST_DIR/in"
run 65 "$OLLMCTL" chat < "$TEST_DIR/in"
grep -q "UTF-8" "$TEST_DIR/err" || fail "65 utf-8: $(cat "$TEST_DIR/err")"
run 65 "$OLLMCTL" chat < /dev/null
chat_in 65 "bad [[fault=status:400]]"
[ "$(wc -l < "$TEST_DIR/err")" -eq 1 ] || fail "an error is one line"
run 66 "$OLLMCTL" tokens "$TEST_DIR/no-such-file"
chat_in 77 "over budget" --tag tiny --max-tokens 100
grep -q "budget exceeded" "$TEST_DIR/err" || fail "77: $(cat "$TEST_DIR/err")"
chat_in 75 "busy [[fault=status:429]]"
grep -q "rate limited" "$TEST_DIR/err" || fail "75: $(cat "$TEST_DIR/err")"
chat_in 75 "stall [[fault=stall]]"
grep -q "timed out" "$TEST_DIR/err" || fail "75 timeout: $(cat "$TEST_DIR/err")"
chat_in 69 "hi" -m down-model
grep -q "model server unavailable" "$TEST_DIR/err" || fail "69: $(cat "$TEST_DIR/err")"

# --- tokens ------------------------------------------------------------------
printf 'hello world' > "$TEST_DIR/text"
run 0 "$OLLMCTL" tokens "$TEST_DIR/text"
[ "$(cat "$TEST_DIR/out")" = "2" ] || fail "tokens: $(cat "$TEST_DIR/out")"
run 0 "$OLLMCTL" tokens --ids < "$TEST_DIR/text"
[ "$(cat "$TEST_DIR/out")" = "15339 1917" ] || fail "tokens --ids: $(cat "$TEST_DIR/out")"
run 0 "$OLLMCTL" tokens -e o200k_base - < "$TEST_DIR/text"
[ "$(cat "$TEST_DIR/out")" = "2" ] || fail "tokens -e: $(cat "$TEST_DIR/out")"
run 0 "$OLLMCTL" tokens -m fake-model "$TEST_DIR/text"
run 65 "$OLLMCTL" tokens -e no_such_encoding "$TEST_DIR/text"

# --- stats ---------------------------------------------------------------------
# Usage as the fake model server reports it: prompt_tokens are the bytes of
# the messages, completion_tokens the pieces sent.
run 0 "$OLLMCTL" stats --json
py "
s = json.loads(out)
assert set(s) >= {'since', 'total', 'by_model', 'by_user', 'by_tag', 'max_budget', 'budget_left'}, s.keys()
keys = {'requests', 'errors', 'prompt_tokens', 'completion_tokens', 'total_tokens', 'estimated', 'cost'}
for c in [s['total']] + [c for m in ('by_model', 'by_user', 'by_tag') for c in s[m].values()]:
    assert set(c) == keys, c
t1 = s['by_tag']['t1']
want_prompt = len('tagged one [[chunks=3]]') + len('tagged two [[words=5]]')
assert (t1['requests'], t1['errors'], t1['prompt_tokens'], t1['completion_tokens'],
    t1['total_tokens'], t1['estimated']) == (2, 0, want_prompt, 3 + 5, want_prompt + 8, 0), t1
t2 = s['by_tag']['t2']
assert (t2['requests'], t2['prompt_tokens'], t2['completion_tokens']) == (1, len('tagged three'), 4), t2
assert str(os.getuid()) in s['by_user'], s['by_user']
assert s['by_model']['fake-model']['requests'] >= 5, s['by_model']
assert s['total']['requests'] == sum(c['requests'] for c in s['by_model'].values()), s
# cancelled, HTTP 400, budget, 429, timeout, upstream down
assert s['total']['errors'] == 6, s['total']
assert s['by_model']['down-model']['errors'] == 1, s['by_model']
assert s['max_budget'] is None and s['budget_left'] is None, s  # no budget unless one is configured
"
run 0 "$OLLMCTL" stats --json --by tag
py "
s = json.loads(out)
assert s['by_model'] == {} and s['by_user'] == {} and 't1' in s['by_tag'], s"
run 64 "$OLLMCTL" stats --json --since "@$(($(date +%s) + 86400))"
grep -q "in the future" "$TEST_DIR/err" || fail "a future --since: $(cat "$TEST_DIR/err")"
sleep 1.1
run 0 "$OLLMCTL" stats --json --since "@$(date +%s)"
py "
s = json.loads(out)
assert s['total']['requests'] == 0, s['total']"

run 0 "$OLLMCTL" stats
grep -q "^Usage since " "$TEST_DIR/out" || fail "stats: no heading"
grep -q "^total " "$TEST_DIR/out" || fail "stats: no total"
grep -q "^fake-model " "$TEST_DIR/out" || fail "stats: no model row"
grep -q "^$(id -un) " "$TEST_DIR/out" || fail "stats: no user name"
grep -q "^t1 " "$TEST_DIR/out" || fail "stats: no tag row"
grep -q "^Budget:" "$TEST_DIR/out" && fail "stats: a budget shown where none is configured"
grep -q "^Budget tag:tiny (tokens per ever)" "$TEST_DIR/out" || fail "stats: tag budget"
run 0 "$OLLMCTL" stats --by day --since today
grep -q "^$(date -u +%Y-%m-%d) " "$TEST_DIR/out" || fail "stats --by day: $(cat "$TEST_DIR/out")"
! grep -q "^fake-model " "$TEST_DIR/out" || fail "stats --by day shows models"

# A model server error after everything else: it marks the upstream unhealthy.
chat_in 69 "broken [[fault=status:503]]"
grep -q "model server error" "$TEST_DIR/err" || fail "69 upstream: $(cat "$TEST_DIR/err")"
kill -0 "$DAEMON_PID" || fail "the daemon died"
