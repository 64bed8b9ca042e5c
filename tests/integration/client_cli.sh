#!/bin/sh
# ollmctl's conventions and finishing touches: -S after the command, --json on
# models, ping and tokens, stats --since counted exactly (and the future
# refused), the bar chart of --by day, each budget once, reset and its
# confirmation, the client's config file, cut replies, tool calls, and a
# budget refusal that says what would fit; rpm only when set; the config file
# under saved conversations.
. "$top_srcdir/tests/integration/lib.sh"
OLLMCTL="$top_builddir/client/ollmctl"
XDG_CONFIG_HOME="$TEST_DIR/config-home"
export XDG_CONFIG_HOME

# run EXPECTED_STATUS CMD...: run with stdout and stderr in $TEST_DIR/out and err.
run() {
	want=$1
	shift
	rc=0
	"$@" > "$TEST_DIR/out" 2> "$TEST_DIR/err" < "${RUN_STDIN:-/dev/null}" || rc=$?
	if [ "$rc" -ne "$want" ]; then
		echo "--- stdout"; cat "$TEST_DIR/out"; echo "--- stderr"; cat "$TEST_DIR/err"
		fail "exit $rc, not $want: $*"
	fi
}

# chat_in EXPECTED_STATUS TEXT ARGS...: TEXT on stdin of ollmctl chat ARGS.
chat_in() {
	want=$1
	printf '%s' "$2" > "$TEST_DIR/in"
	shift 2
	RUN_STDIN="$TEST_DIR/in" run "$want" "$OLLMCTL" chat "$@"
}

# py CODE: Python with `out` (stdout of the last run, as text) and `fake`
# (the fake model server's /stats), `b` its last chat body.
py() {
	FAKE_PORT=$FAKE_PORT OUT="$TEST_DIR/out" "$PYTHON" -c "
import json, os, urllib.request
fake = json.load(urllib.request.urlopen('http://127.0.0.1:%s/stats' % os.environ['FAKE_PORT']))
b = fake['last_body']
out = open(os.environ['OUT'], encoding='utf-8').read()
$1" || { cat "$TEST_DIR/out"; fail "check failed: $1"; }
}

start_fake_upstream -q -m fake-model -m other-model
start_daemon 'max_budget = 50.0;'
sock=$OPENLLMD_SOCKET
unset OPENLLMD_SOCKET

# --- -S after the command ---------------------------------------------------
run 0 "$OLLMCTL" ping -S "$sock"
run 0 "$OLLMCTL" stats -S "$sock" --by model
run 0 "$OLLMCTL" models --socket="$sock"
run 69 "$OLLMCTL" -S "$sock" ping -S "$TEST_DIR/none.sock"
grep -q "$TEST_DIR/none.sock" "$TEST_DIR/err" || fail "-S after the command was not used"
run 64 "$OLLMCTL" ping -S
OPENLLMD_SOCKET=$sock
export OPENLLMD_SOCKET

# --- --json on models, ping and tokens --------------------------------------
run 0 "$OLLMCTL" models --json
py "
j = json.loads(out)
u = j['upstreams'][0]
assert u['name'] == 'fake' and u['model'] == 'fake-model' and u['healthy'] is True, u
assert 'other-model' in u['models'], u"
run 0 "$OLLMCTL" ping --json
py "
j = json.loads(out)
assert j['version'] and j['uptime_s'] >= 0 and j['in_flight'] == 0, j
assert j['socket'] == '$sock' and j['round_trip_ms'] >= 0, j"
printf 'hello world' > "$TEST_DIR/text"
run 0 "$OLLMCTL" tokens --json -e cl100k_base "$TEST_DIR/text"
py "assert json.loads(out) == {'count': 2, 'encoding': 'cl100k_base'}, out"
run 0 "$OLLMCTL" tokens --json --ids -e cl100k_base "$TEST_DIR/text"
py "assert json.loads(out) == {'count': 2, 'encoding': 'cl100k_base', 'ids': [15339, 1917]}, out"
run 64 "$OLLMCTL" models --jsn

# --- a cut reply, a tool call ---------------------------------------------------
chat_in 0 "count [[words=20]]" --max-tokens 3
[ "$(cat "$TEST_DIR/out")" = "w1 w2 w3" ] || fail "cut reply: $(cat "$TEST_DIR/out")"
grep -qx "ollmctl chat: the reply was cut at max_tokens (3); --max-tokens N raises it" \
    "$TEST_DIR/err" || fail "no note of the cut: $(cat "$TEST_DIR/err")"
chat_in 0 "whole [[words=3]]"
[ -s "$TEST_DIR/err" ] && fail "a whole reply has a note: $(cat "$TEST_DIR/err")"
for mode in "" --no-stream; do
	chat_in 0 "weather? [[tools=1]]" $mode
	grep -qxF 'tool call: get_weather({"location": "Paris", "unit": "celsius"})' \
	    "$TEST_DIR/out" || fail "tool call ($mode) not shown: $(cat "$TEST_DIR/out")"
done

# --- each budget once -------------------------------------------------------------
run 0 "$OLLMCTL" stats
[ "$(grep -c "50.0000" "$TEST_DIR/out")" -eq 1 ] || { cat "$TEST_DIR/out"; fail "max_budget not shown once"; }
grep -q "^Budget: 50.0000, left " "$TEST_DIR/out" || fail "max_budget line"

# --- stats --since: exact, from an instant inside today ---------------------------
run 0 "$OLLMCTL" stats --json
before=$("$PYTHON" -c "import json,sys; print(json.load(open('$TEST_DIR/out'))['total']['requests'])")
sleep 1.1
t=$(date +%s)
chat_in 0 "after the mark"
chat_in 0 "and again"
run 0 "$OLLMCTL" stats --json --since "@$t"
py "
j = json.loads(out)
assert j['since'] == $t, j['since']
assert j['total']['requests'] == 2, j['total']
assert sum(c['requests'] for c in j['by_model'].values()) == 2, j['by_model']"
run 0 "$OLLMCTL" stats --since "@$t"
grep -q "^Usage since $(date -u -d "@$t" '+%Y-%m-%d %H:%M:%S') UTC" "$TEST_DIR/out" ||
	fail "the heading does not show the instant: $(head -n 1 "$TEST_DIR/out")"
iso=$(date -u -d "@$t" '+%Y-%m-%dT%H:%M:%SZ')
run 0 "$OLLMCTL" stats --json --since "$iso"
py "assert json.loads(out)['total']['requests'] == 2, out"
off=$(TZ=Asia/Kolkata date -d "@$t" '+%Y-%m-%dT%H:%M:%S+05:30')
run 0 "$OLLMCTL" stats --json --since "$off"
py "assert json.loads(out)['total']['requests'] == 2, out"
run 0 "$OLLMCTL" stats --json --since 1h
py "assert json.loads(out)['total']['requests'] == $before + 2, out"
run 0 "$OLLMCTL" stats --json --since today
py "assert json.loads(out)['total']['requests'] == $before + 2, out"
# The future is refused, with the instant named.
run 64 "$OLLMCTL" stats --since 2099-01-01
grep -q "in the future" "$TEST_DIR/err" || fail "future: $(cat "$TEST_DIR/err")"
run 64 "$OLLMCTL" stats --since "2099-01-01T00:00:00Z"
run 64 "$OLLMCTL" stats --since "2024-05-01T12:00+99:00"

# --- stats --by day: a bar chart too ----------------------------------------
LC_ALL=C run 0 "$OLLMCTL" stats --by day
grep -q "^Tokens per day (UTC)$" "$TEST_DIR/out" || fail "no chart: $(cat "$TEST_DIR/out")"
grep -q "^$(date -u +%Y-%m-%d)  #* [0-9,]*$" "$TEST_DIR/out" || fail "ASCII chart: $(cat "$TEST_DIR/out")"
LC_ALL=C.UTF-8 run 0 "$OLLMCTL" stats --by day
grep -q "$(printf '\342\226\210')" "$TEST_DIR/out" || fail "no block characters: $(cat "$TEST_DIR/out")"

# --- the config file: defaults for chat; the command line wins ---------------------
mkdir -p "$XDG_CONFIG_HOME/ollmctl"
cat > "$XDG_CONFIG_HOME/ollmctl/config" <<'CONF'
# ollmctl defaults
model = other-model
max_tokens = 7
system = "Be brief."
tag = from-config
CONF
chat_in 0 "configured"
py "
assert b['model'] == 'other-model', b['model']
assert b.get('max_tokens', b.get('max_completion_tokens')) == 7, b
assert b['messages'][0] == {'role': 'system', 'content': 'Be brief.'}, b['messages']"
chat_in 0 "overridden" -m fake-model --max-tokens 9 -s "Other." --tag cli
py "
assert b['model'] == 'fake-model', b['model']
assert b.get('max_tokens', b.get('max_completion_tokens')) == 9, b
assert b['messages'][0]['content'] == 'Other.', b['messages']"
run 0 "$OLLMCTL" stats --json --by tag
py "
t = json.loads(out)['by_tag']
assert t['from-config']['requests'] == 1 and t['cli']['requests'] == 1, t"
# A saved conversation's model and system win over the config file's; -m and -s over both.
run 0 "$OLLMCTL" chat -c "go on"
py "
assert b['model'] == 'fake-model', b['model']
m = [(x['role'], x['content']) for x in b['messages']]
assert m[0] == ('system', 'Other.') and m[1] == ('user', 'overridden'), m
assert m[-1] == ('user', 'go on'), m"
run 0 "$OLLMCTL" chat -c -m other-model -s "Third." "and again"
py "
assert b['model'] == 'other-model', b['model']
assert b['messages'][0]['content'] == 'Third.', b['messages']"
run 0 "$OLLMCTL" chat --no-save "one prompt"
py "
assert b['model'] == 'other-model', b['model']
assert b.get('max_tokens', b.get('max_completion_tokens')) == 7, b
assert [x['content'] for x in b['messages']] == ['Be brief.', 'one prompt'], b['messages']"
printf 'model = x\nmax_tokens = lots\ncolour = yes\n' > "$XDG_CONFIG_HOME/ollmctl/config"
chat_in 78 "bad config"
grep -qx "$XDG_CONFIG_HOME/ollmctl/config:2: max_tokens takes a number of 1 or more, not \"lots\"" \
    "$TEST_DIR/err" || fail "config error: $(cat "$TEST_DIR/err")"
grep -q "config:3: unknown key \"colour\"" "$TEST_DIR/err" || fail "config error: $(cat "$TEST_DIR/err")"
rm "$XDG_CONFIG_HOME/ollmctl/config"

# --- reset: never without asking or --yes -----------------------------------
run 64 "$OLLMCTL" reset
grep -q "refusing without a terminal" "$TEST_DIR/err" || fail "reset: $(cat "$TEST_DIR/err")"
run 0 "$OLLMCTL" stats --json
py "assert json.loads(out)['total']['requests'] > 0"
command -v tmux > /dev/null || fail "tmux is needed: apt-get install tmux"
unset TMUX
tm() { tmux -S "$TEST_DIR/tmux.sock" "$@"; }
for answer in n y; do
	rm -f "$TEST_DIR/reset.status"
	tm -f /dev/null new-session -d -x 160 -y 20 \
	    "\"$OLLMCTL\" reset; echo \$? > \"$TEST_DIR/reset.status\"; sleep 600"
	TEST_PIDS="$TEST_PIDS $(tm display-message -p '#{pid}')"
	i=0
	until tm capture-pane -p -t 0 | grep -qF "[y/N]"; do
		i=$((i + 1)); [ "$i" -lt 200 ] || fail "reset did not ask"; sleep 0.05
	done
	tm send-keys -t 0 "$answer" Enter
	wait_for_line "$TEST_DIR/reset.status" 10
	[ "$(cat "$TEST_DIR/reset.status")" = 0 ] || fail "reset ($answer) exit $(cat "$TEST_DIR/reset.status")"
	tm kill-server
	run 0 "$OLLMCTL" stats --json
	if [ "$answer" = n ]; then
		py "assert json.loads(out)['total']['requests'] > 0, 'n reset it'"
	else
		py "assert json.loads(out)['total']['requests'] == 0, out"
	fi
done
chat_in 0 "one more"
run 0 "$OLLMCTL" reset --yes
run 0 "$OLLMCTL" stats --json
py "assert json.loads(out)['total']['requests'] == 0, out"
stop_daemon

# --- a budget shrinks what does not fit, and says so when it cut the reply -------
start_daemon 'budgets = ( { scope = "all"; unit = "tokens"; period = "day"; limit = 300; } );'
# 1000 asked, about 290 left after the prompt: sent with what fits, served
chat_in 0 "hi" --max-tokens 1000
[ ! -s "$TEST_DIR/err" ] || fail "a reply that ended by itself needs no note: $(cat "$TEST_DIR/err")"
# a reply the lowered limit cut says who cut it
chat_in 0 "long [[words=400]]" --max-tokens 1000
grep -q "cut at max_tokens [0-9]*, lowered from 1000 to fit a budget" "$TEST_DIR/err" ||
	fail "shrink note: $(cat "$TEST_DIR/err")"
stop_daemon

# --- a budget that refuses rather than shrink says what would fit ------------------
rm -rf "$TEST_DIR/state"
start_daemon 'budgets = ( { scope = "all"; unit = "tokens"; period = "day"; limit = 300; fit = "refuse"; } );'
chat_in 77 "hi" --max-tokens 1000
grep -q "budget all (tokens/day) has 300 tokens left, .* needed" "$TEST_DIR/err" ||
	fail "refusal: $(cat "$TEST_DIR/err")"
grep -q "exceeded.*exceeded" "$TEST_DIR/err" && fail "says exceeded twice: $(cat "$TEST_DIR/err")"
n=$(sed -n 's/^ollmctl chat: it fits with --max-tokens \([0-9]*\) .*/\1/p' "$TEST_DIR/err")
[ -n "$n" ] || fail "no hint: $(cat "$TEST_DIR/err")"
chat_in 0 "hi" --max-tokens "$n"
chat_in 77 "hi" --max-tokens "$((n + 1000))"
grep -q "the prompt alone takes\|it fits with --max-tokens" "$TEST_DIR/err" || fail "hint: $(cat "$TEST_DIR/err")"
# Without --max-tokens the upstream's default_max_tokens (4096) is asked.
chat_in 77 "hello again"
n=$(sed -n 's/^ollmctl chat: it fits with --max-tokens \([0-9]*\) .*/\1/p' "$TEST_DIR/err")
[ -n "$n" ] || fail "no hint without --max-tokens: $(cat "$TEST_DIR/err")"
chat_in 0 "hello again" --max-tokens "$n"
stop_daemon

# --- rpm: no limit unless set; rpm = 10 still means 10 ---------------------------
# burst N: N chats at once; their exit statuses in $TEST_DIR/burst.N.
burst() {
	rm -f "$TEST_DIR"/burst.*
	pids=""
	for i in $(seq "$1"); do
		(rc=0; echo "quick $i" | "$OLLMCTL" chat > /dev/null 2>&1 || rc=$?
		 echo "$rc" > "$TEST_DIR/burst.$i") &
		pids="$pids $!"
	done
	for p in $pids; do wait "$p"; done
}
# 13 quick requests with a queue_timeout of 1 s: without rpm all go through;
# with rpm = 10 (a burst of 10, then one every 6 s) some wait longer than
# that and are refused as rate limited.
UPSTREAMS="{ name = \"fake\"; base_url = \"$FAKE_URL\"; model = \"fake-model\"; queue_timeout = 1.0; }" \
    start_daemon
burst 13
[ "$(cat "$TEST_DIR"/burst.* | sort | uniq -c | awk '{print $1 ":" $2}')" = "13:0" ] ||
	fail "without rpm, not all of 13 requests went through: $(cat "$TEST_DIR"/burst.*)"
stop_daemon
UPSTREAMS="{ name = \"fake\"; base_url = \"$FAKE_URL\"; model = \"fake-model\"; queue_timeout = 1.0; rpm = 10; }" \
    start_daemon
burst 13
grep -qx 75 "$TEST_DIR"/burst.* || fail "rpm = 10 let 13 requests at once through"
echo "client_cli: all checks passed"
