#!/bin/sh
# ollmctl chat on a real terminal (a private tmux server): streamed replies,
# Ctrl-C, the whole conversation sent each turn, slash commands, multi-line
# input, bracketed paste, errors that leave the session going, history
# across restarts.
. "$top_srcdir/tests/integration/lib.sh"
command -v tmux > /dev/null || fail "tmux is needed: apt-get install tmux"
OLLMCTL="$top_builddir/client/ollmctl"

start_fake_upstream -q -m fake-model -m other-model
start_daemon

XDG_STATE_HOME="$TEST_DIR/state-home"
LC_ALL=C.UTF-8
export XDG_STATE_HOME LC_ALL
TMUX_N=0
unset TMUX

tm() {
	tmux -S "$TMUX_SOCK" "$@"
}

# Start `ollmctl chat` in a fresh pane of a fresh tmux server (a new socket:
# an old server may still be on its way out); its exit status lands in
# repl.status.
start_repl() {
	rm -f "$TEST_DIR/repl.status"
	[ "$TMUX_N" -eq 0 ] || tm kill-server 2>/dev/null || true
	TMUX_N=$((TMUX_N + 1))
	TMUX_SOCK="$TEST_DIR/tmux$TMUX_N.sock"
	tm -f /dev/null new-session -d -x 160 -y 50 \
	    "\"$OLLMCTL\" chat $*; echo \$? > \"$TEST_DIR/repl.status\"; sleep 600"
	tm set-option -g history-limit 10000
	TEST_PIDS="$TEST_PIDS $(tm display-message -p '#{pid}')"
	wait_screen "/help for commands"
}

screen() {
	tm capture-pane -p -J -S - -t 0 | sed 's/ *$//'
}

# wait_screen TEXT: wait (10 s at most) until the pane shows TEXT (fixed string).
wait_screen() {
	i=0
	until screen | grep -qF -- "$1"; do
		i=$((i + 1))
		[ "$i" -lt 200 ] || { screen; fail "the terminal never showed: $1"; }
		sleep 0.05
	done
}

# wait_prompt: wait until the last line on the screen is an empty prompt.
wait_prompt() {
	i=0
	until [ "$(screen | sed 's/ *$//; /^$/d' | tail -n 1)" = ">" ]; do
		i=$((i + 1))
		[ "$i" -lt 200 ] || { screen; fail "no prompt"; }
		sleep 0.05
	done
}

# say TEXT: type a line and press Enter.
say() {
	tm send-keys -t 0 -l "$1"
	tm send-keys -t 0 Enter
}

# body CODE: Python with `b`, the last chat body the model server received.
body() {
	FAKE_PORT=$FAKE_PORT "$PYTHON" -c "
import json, os, urllib.request
fake = json.load(urllib.request.urlopen('http://127.0.0.1:%s/stats' % os.environ['FAKE_PORT']))
b = fake['last_body']
m = [(x['role'], x['content']) for x in b['messages']]
$1" || { screen; fail "check failed: $1"; }
}

chat_requests() {
	FAKE_PORT=$FAKE_PORT "$PYTHON" -c "
import json, os, urllib.request
print(json.load(urllib.request.urlopen('http://127.0.0.1:%s/stats' % os.environ['FAKE_PORT']))['chat_requests'])"
}

start_repl
wait_screen "model fake-model."

# A reply streams onto the terminal.
say "hello there"
wait_screen "echo: hello there"
wait_prompt

# Ctrl-C stops a long reply; the model server's transfer ends; the prompt is back.
say "long [[words=400 delay_ms=30]]"
wait_screen "w3 "
tm send-keys -t 0 C-c
wait_screen "[stopped]"
wait_prompt
screen | grep -qF "w400" && fail "the reply ran to its end"
i=0
until body "assert fake['in_flight'] == 0" 2>/dev/null; do
	i=$((i + 1))
	[ "$i" -lt 100 ] || fail "the upstream transfer was not cancelled"
	sleep 0.1
done

# Ctrl-C at the prompt drops the line without sending it.
n=$(chat_requests)
tm send-keys -t 0 -l "not to be sent"
tm send-keys -t 0 C-c
wait_prompt
[ "$(chat_requests)" = "$n" ] || fail "a line dropped with Ctrl-C was sent"

# The whole conversation goes out each turn, the stopped reply included.
say "after stop"
wait_screen "echo: after stop"
wait_prompt
body "
assert m[0] == ('user', 'hello there') and m[1] == ('assistant', 'echo: hello there'), m
assert m[2] == ('user', 'long [[words=400 delay_ms=30]]') and m[3][0] == 'assistant', m
assert m[3][1].startswith('w1 w2 w3'), m[3]
assert m[4] == ('user', 'after stop') and len(m) == 5, m"

# /clear forgets the conversation.
say "/clear"
wait_screen "conversation cleared"
say "fresh start"
wait_screen "echo: fresh start"
wait_prompt
body "assert m == [('user', 'fresh start')], m"

# /system, /model and /usage.
say "/system Be terse."
wait_screen "system message set"
say "/model other-model"
wait_screen "model: other-model"
say "/usage"
wait_screen "usage line on"
say "with usage"
wait_screen "echo: with usage"
wait_screen " completion = "
wait_screen "first token"
wait_prompt
body "
assert m[0] == ('system', 'Be terse.'), m
assert m[-1] == ('user', 'with usage') and len(m) == 4, m
assert b['model'] == 'other-model', b['model']"
say "/usage"
wait_screen "usage line off"
say "/model fake-model"
wait_screen "model: fake-model"

# An error is one line and the session goes on; the failed message is not
# kept, and /retry asks it again.
say "refused [[fault=status:400]]"
wait_screen "error: model server error"
wait_prompt
say "still here"
wait_screen "echo: still here"
wait_prompt
body "assert not any(c.startswith('refused') for r, c in m), m"
say "/retry"
wait_screen "echo: still here"
wait_prompt
body "
assert m[-1] == ('user', 'still here'), m
assert sum(1 for r, c in m if c == 'still here') == 1, m"

# A message of several lines between triple quotes.
say '"""'
say "line one"
say 'line two"""'
wait_screen "line two"
wait_prompt
body "assert m[-1] == ('user', 'line one\nline two'), m"
say '"""first'
say ""
say "third"
say '"""'
wait_screen "echo: first"
wait_prompt
body "assert m[-1] == ('user', 'first\n\nthird'), m"

# A bracketed paste of several lines waits for an empty line, then goes as one.
tm set-buffer -b p "$(printf 'pasted one\npasted two')"
tm paste-buffer -p -b p -t 0
wait_screen "pasted two"
tm send-keys -t 0 Enter
wait_screen "echo: pasted one"
wait_prompt
body "assert m[-1] == ('user', 'pasted one\npasted two'), m"

# Reasoning is shown dimmed, before the answer.
say "think [[reasoning=3]]"
wait_screen "echo: think"
wait_prompt
tm capture-pane -p -e -J -S - -t 0 | grep -q "$(printf '\033')\[2mr1 r2 r3" ||
    { screen; fail "the reasoning is not dimmed"; }

# The daemon restarts under the session: one error line, then it reconnects.
stop_daemon
say "while it is down"
wait_screen "error: "
KEEP_CONFIG=1 start_daemon
say "back again"
wait_screen "echo: back again"
wait_prompt

# A model no upstream serves is refused at once, naming those served; the
# model stays what it was.
say "/model down-model"
wait_screen 'no upstream serves "down-model"; model unchanged. Served: fake-model'
say "nobody there"
wait_screen "echo: nobody there"
wait_prompt
body "assert b['model'] == 'fake-model', b['model']"

# /max-tokens: sent with each request; a reply cut by it says so.
say "/max-tokens 2"
wait_screen "max-tokens: 2"
say "[[words=10]]"
wait_screen "note: the reply was cut at max_tokens (2); /max-tokens N raises it"
wait_prompt
body "assert b.get('max_tokens', b.get('max_completion_tokens')) == 2, b"
say "/max-tokens 0"
wait_screen "max-tokens: the model server's default"

# A tool call is printed: its name and arguments.
say "weather? [[tools=1]]"
wait_screen 'tool call: get_weather({"location": "Paris", "unit": "celsius"})'
wait_prompt
say "/model fake-model"
say "history marker"
wait_screen "echo: history marker"
wait_prompt

# Ctrl-D leaves with status 0.
tm send-keys -t 0 C-d
wait_for_line "$TEST_DIR/repl.status" 10
[ "$(cat "$TEST_DIR/repl.status")" = "0" ] || fail "Ctrl-D: exit $(cat "$TEST_DIR/repl.status")"

# The history survives a restart, private to its user.
HIST="$XDG_STATE_HOME/ollmctl/history"
[ -f "$HIST" ] || fail "no history file at $HIST"
[ "$(stat -c %a "$HIST")" = "600" ] || fail "history file mode $(stat -c %a "$HIST")"
start_repl -m fake-model
tm send-keys -t 0 Up
wait_screen "> history marker"
tm send-keys -t 0 C-c
wait_prompt
say "/exit"
wait_for_line "$TEST_DIR/repl.status" 10
[ "$(cat "$TEST_DIR/repl.status")" = "0" ] || fail "/exit: exit $(cat "$TEST_DIR/repl.status")"

# NO_COLOR: no escape sequences for dim text, even on a terminal.
NO_COLOR=1
export NO_COLOR
start_repl -m fake-model
say "plain [[reasoning=3]]"
wait_screen "echo: plain"
wait_prompt
tm capture-pane -p -e -J -S - -t 0 | grep -q "$(printf '\033')\[2m" &&
    { screen; fail "NO_COLOR: the reasoning is still dimmed"; }
unset NO_COLOR
tm kill-server
