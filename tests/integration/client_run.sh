#!/bin/sh
# tools/run as a new user meets it, in a terminal (a private tmux server):
# the demo when no model server answers; Ctrl-C stops a reply and nothing
# else; closing the terminal stops what the run started; a daemon an earlier
# demo left behind is replaced, not reused; a server listing one model gets
# that model.
. "$top_srcdir/tests/integration/lib.sh"
command -v tmux > /dev/null || fail "tmux is needed: apt-get install tmux"
command -v setsid > /dev/null || fail "setsid is needed: apt-get install util-linux"

XDG_RUNTIME_DIR="$TEST_DIR/runtime"
mkdir -m 700 "$XDG_RUNTIME_DIR"
RUNDIR="$XDG_RUNTIME_DIR/openllmd-run-$(id -u)"
OPENLLMD_SOCKET="$TEST_DIR/run.sock"
STATE_DIRECTORY="$TEST_DIR/state"
XDG_STATE_HOME="$TEST_DIR/state-home"
XDG_CONFIG_HOME="$TEST_DIR/config-home"
OPENLLMD_CONFIG="$TEST_DIR/empty.conf"
: > "$OPENLLMD_CONFIG"
OLLM_RUN_NO_BUILD=1
OLLM_BUILDDIR="$top_builddir"
LC_ALL=C.UTF-8
# A port nothing listens on: no model server answers there.
OPEN_LLM_API_BASE="http://127.0.0.1:$("$PYTHON" -c '
import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')/v1"
export XDG_RUNTIME_DIR OPENLLMD_SOCKET STATE_DIRECTORY XDG_STATE_HOME XDG_CONFIG_HOME \
    OPENLLMD_CONFIG OLLM_RUN_NO_BUILD OLLM_BUILDDIR LC_ALL OPEN_LLM_API_BASE
unset TMUX
RUN="$top_srcdir/tools/run"

tm() {
	tmux -S "$TEST_DIR/tmux.sock" "$@"
}

screen() {
	tm capture-pane -p -J -S - -t 0 | sed 's/ *$//'
}

# wait_screen TEXT: wait (10 s at most) until the pane shows TEXT.
wait_screen() {
	i=0
	until screen | grep -qF -- "$1"; do
		i=$((i + 1))
		[ "$i" -lt 200 ] || { screen; fail "the terminal never showed: $1"; }
		sleep 0.05
	done
}

wait_prompt() {
	i=0
	until [ "$(screen | sed '/^$/d' | tail -n 1)" = ">" ]; do
		i=$((i + 1))
		[ "$i" -lt 200 ] || { screen; fail "no prompt"; }
		sleep 0.05
	done
}

say() {
	tm send-keys -t 0 -l "$1"
	tm send-keys -t 0 Enter
}

# start_run: tools/run in a fresh terminal; answer its demo question.
start_run() {
	tm -f /dev/null new-session -d -x 160 -y 50 "sh '$RUN'; sleep 600"
	TEST_PIDS="$TEST_PIDS $(tm display-message -p '#{pid}')"
	wait_screen "Run the demo with the fake model server? [Y/n]"
	say y
	wait_screen "/help for commands"
	[ -s "$RUNDIR/daemon.pid" ] && [ -s "$RUNDIR/demo.pid" ] || fail "no pid files in $RUNDIR"
	DPID=$(cat "$RUNDIR/daemon.pid")
	FPID=$(cat "$RUNDIR/demo.pid")
	TEST_PIDS="$TEST_PIDS $DPID $FPID"
}

# close_terminal: kill the tmux server (SIGHUP to the run); what it started must go.
close_terminal() {
	tm kill-server
	i=0
	while kill -0 "$DPID" 2>/dev/null || kill -0 "$FPID" 2>/dev/null ||
	    [ -e "$RUNDIR/daemon.pid" ]; do
		i=$((i + 1))
		[ "$i" -lt 100 ] || fail "closing the terminal left openllmd ($DPID), the fake server ($FPID) or daemon.pid"
		sleep 0.1
	done
}

# --- the demo: Ctrl-C stops the reply, and only the reply --------------------
start_run
wait_screen "DEMO: replies come from tests/fake_upstream"
say "hello demo"
wait_screen "echo: hello demo"
wait_prompt
say "long [[words=400 delay_ms=30]]"
wait_screen "w3 "
tm send-keys -t 0 C-c
wait_screen "[stopped]"
wait_prompt
kill -0 "$DPID" 2>/dev/null || fail "Ctrl-C killed openllmd"
kill -0 "$FPID" 2>/dev/null || fail "Ctrl-C killed the demo server"
say "after the stop"
wait_screen "echo: after the stop"
wait_prompt
screen | grep -q "Broken pipe" && fail "a message after Ctrl-C failed"
close_terminal

# --- a daemon an earlier demo left behind, its server gone, is replaced -------
start_fake_upstream -q -m demo
OPEN_LLM_API_BASE=$FAKE_URL OPEN_LLM_API_MODEL=demo \
    "$top_builddir/daemon/openllmd" -f >> "$TEST_DIR/left.log" 2>&1 &
LEFT=$!
TEST_PIDS="$TEST_PIDS $LEFT"
"$PYTHON" -m olc wait 10
mkdir -p "$RUNDIR"
echo "$LEFT" > "$RUNDIR/daemon.pid"
echo "$FAKE_PID" > "$RUNDIR/demo.pid"
echo "$FAKE_URL" > "$RUNDIR/demo.url"
kill -9 "$FAKE_PID"
wait "$FAKE_PID" 2>/dev/null || true
start_run
wait_screen "Stopping the openllmd an earlier demo left behind"
kill -0 "$LEFT" 2>/dev/null && fail "the stale daemon still runs"
[ "$DPID" != "$LEFT" ] || fail "the stale daemon was reused"
t0=$(date +%s)
say "fresh start"
wait_screen "echo: fresh start"
[ $(($(date +%s) - t0)) -lt 5 ] || fail "the first reply waited for a dead server"
close_terminal

# --- a model server that lists exactly one model: that model is used ----------
start_fake_upstream -q -m only-model
out=$(echo "which model" | OPEN_LLM_API_BASE=$FAKE_URL sh "$RUN" 2>&1) || fail "tools/run: $out"
echo "$out" | grep -qx "Model: only-model (the only one it lists)" || fail "no model picked: $out"
echo "$out" | grep -qx "echo: which model" || fail "no reply: $out"
FAKE_PORT=$FAKE_PORT "$PYTHON" -c "
import json, os, urllib.request
b = json.load(urllib.request.urlopen('http://127.0.0.1:%s/stats' % os.environ['FAKE_PORT']))['last_body']
assert b['model'] == 'only-model', b['model']" || fail "the model sent is not only-model"
"$OLLM_BUILDDIR/client/ollmctl" ping >/dev/null 2>&1 && fail "the piped run left its daemon running"
echo "client_run: all checks passed"
