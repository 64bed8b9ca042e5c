#!/bin/sh
# ollmctl chat PROMPT, -c and --cid with saved conversations (also in the REPL,
# in tmux), conversations, status lines while a request waits, a dead model
# server failing fast, logs, and top (in tmux, with the terminal restored);
# and that --help and the man page name the same commands and options.
. "$top_srcdir/tests/integration/lib.sh"
command -v tmux > /dev/null || fail "tmux is needed: apt-get install tmux"
OLLMCTL="$top_builddir/client/ollmctl"
LC_ALL=C.UTF-8
export LC_ALL
unset TMUX
CONVS="$XDG_STATE_HOME/ollmctl/conversations"

# run EXPECTED_STATUS CMD...: run with stdout and stderr in $TEST_DIR/out and err.
run() {
	want=$1
	shift
	rc=0
	"$@" > "$TEST_DIR/out" 2> "$TEST_DIR/err" < /dev/null || rc=$?
	if [ "$rc" -ne "$want" ]; then
		echo "--- stdout"; cat "$TEST_DIR/out"; echo "--- stderr"; cat "$TEST_DIR/err"
		fail "exit $rc, not $want: $*"
	fi
}

# py CODE: Python with the fake server's /stats as `fake`, its last chat's
# messages as `m` and ollmctl's stdout as `out`.
py() {
	FAKE_PORT=$FAKE_PORT OUT="$TEST_DIR/out" "$PYTHON" -c "
import json, os, urllib.request
fake = json.load(urllib.request.urlopen('http://127.0.0.1:%s/stats' % os.environ['FAKE_PORT']))
b = fake['last_body']
m = [(x['role'], x['content']) for x in b['messages']] if isinstance(b, dict) else []
out = open(os.environ['OUT'], encoding='utf-8').read()
$1" || fail "check failed: $1"
}

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

# wait_file FILE: wait (10 s at most) until FILE exists and is not empty.
wait_file() {
	wait_for_line "$1" 10 || { screen; fail "no $1"; }
}

# --- --help and the man page agree ---------------------------------------------
"$OLLMCTL" --help > "$TEST_DIR/help"
man="$top_srcdir/man/ollmctl.1"
for c in $(sed -n '/^Commands:/,/^$/p' "$TEST_DIR/help" | awk 'NR > 1 && NF { print $1 }'); do
	grep -q "^\.SS $c\$" "$man" || fail "ollmctl.1 has no section for $c"
	grep -q "ollmctl $c" "$TEST_DIR/help" || fail "--help has no usage line for $c"
	"$OLLMCTL" "$c" --help > "$TEST_DIR/cmdhelp"
	for opt in $(grep -o -- '--[a-z][a-z-]*' "$TEST_DIR/cmdhelp" | sort -u); do
		[ "$opt" = "--help" ] && continue
		grep -qF -- "$(echo "$opt" | sed 's/-/\\-/g')" "$man" ||
			fail "ollmctl.1 lacks $opt of $c"
	done
done
for c in $(grep '^\.SS ' "$man" | awk '{ print $2 }'); do
	grep -q "^  $c " "$TEST_DIR/help" || fail "--help lacks the command $c of ollmctl.1"
done

start_fake_upstream -q -m fake-model -m other-model
UPSTREAM_EXTRA='retries = 5;' start_daemon

# --- chat PROMPT, conversations, -c, --cid --------------------------------------
run 0 "$OLLMCTL" conversations
grep -q "no saved conversations" "$TEST_DIR/out" || fail "conversations: $(cat "$TEST_DIR/out")"
run 66 "$OLLMCTL" chat -c "nothing to continue"
grep -q "no saved conversation" "$TEST_DIR/err" || fail "-c: $(cat "$TEST_DIR/err")"

run 0 "$OLLMCTL" chat Name three colours.
[ "$(cat "$TEST_DIR/out")" = "echo: Name three colours." ] || fail "prompt: $(cat "$TEST_DIR/out")"
py "assert m == [('user', 'Name three colours.')], m"
[ "$(stat -c %a "$CONVS")" = 700 ] || fail "the conversations directory is not private"
first=$(cat "$CONVS/last")
[ "$(stat -c %a "$CONVS/$first.json")" = 600 ] || fail "a conversation file is not private"

run 0 "$OLLMCTL" chat -c "Which is warmest?"
[ "$(cat "$TEST_DIR/out")" = "echo: Which is warmest?" ] || fail "-c: $(cat "$TEST_DIR/out")"
py "
assert m == [('user', 'Name three colours.'), ('assistant', 'echo: Name three colours.'),
    ('user', 'Which is warmest?')], m"
[ "$(cat "$CONVS/last")" = "$first" ] || fail "-c started a new conversation"

# A named conversation: its model and system message are kept with it.
run 0 "$OLLMCTL" chat --cid work -m other-model -s "Be terse." "first of work"
run 0 "$OLLMCTL" chat "unrelated"
run 0 "$OLLMCTL" chat --cid work "second of work"
py "
assert b['model'] == 'other-model', b['model']
assert m == [('system', 'Be terse.'), ('user', 'first of work'),
    ('assistant', 'echo: first of work'), ('user', 'second of work')], m"
run 0 "$OLLMCTL" chat --no-save "not kept"
[ "$(cat "$CONVS/last")" = work ] || fail "--no-save changed the last conversation"

run 0 "$OLLMCTL" conversations
py "
lines = out.splitlines()
assert lines[0].split() == ['ID', 'UPDATED', 'TURNS', 'FIRST', 'WORDS'], lines
rows = {l.split()[0]: l for l in lines[1:]}
assert len(rows) == 3, lines
assert rows['work'].split()[3] == '2' and rows['work'].endswith('first of work'), rows['work']
assert rows['$first'].split()[3] == '2' and rows['$first'].endswith('Name three colours.'), rows
assert lines[1].startswith('work '), lines
assert not any('not kept' in l for l in lines), lines"
python3 -c "
import json
c = json.load(open('$CONVS/work.json'))
assert c['id'] == 'work' and c['model'] == 'other-model' and c['system'] == 'Be terse.', c
assert [x['role'] for x in c['messages']] == ['user', 'assistant'] * 2, c
assert c['created'] <= c['updated'], c" || fail "work.json"

# The REPL with -c resumes the conversation saved last.
tm -f /dev/null new-session -d -x 160 -y 50 \
    "\"$OLLMCTL\" chat -c; echo \$? > \"$TEST_DIR/repl.status\"; sleep 600"
TEST_PIDS="$TEST_PIDS $(tm display-message -p '#{pid}')"
wait_screen "continuing conversation work (4 messages)"
tm send-keys -t 0 -l "third of work"
tm send-keys -t 0 Enter
wait_screen "echo: third of work"
py "
assert b['model'] == 'other-model', b['model']
assert m[0] == ('system', 'Be terse.') and m[1] == ('user', 'first of work'), m
assert m[-1] == ('user', 'third of work') and len(m) == 6, m"
tm send-keys -t 0 C-d
wait_file "$TEST_DIR/repl.status"
[ "$(cat "$TEST_DIR/repl.status")" = 0 ] || fail "the REPL exited $(cat "$TEST_DIR/repl.status")"
python3 -c "
import json
c = json.load(open('$CONVS/work.json'))
assert len(c['messages']) == 6 and c['messages'][-1]['content'] == 'echo: third of work', c
" || fail "the REPL did not save the resumed conversation"
tm kill-server

# --- logs -------------------------------------------------------------------------
run 0 "$OLLMCTL" chat --tag audit "tagged [[words=3 delay_ms=20]]"
run 65 "$OLLMCTL" chat --tag audit "broken [[fault=status:400]]"
run 0 "$OLLMCTL" logs
py "
lines = out.splitlines()
assert lines[0].split() == ['TIME', 'USER', 'TAG', 'MODEL', 'UPSTREAM', 'STATUS', 'PROMPT',
    'COMPL', 'COST', 'LATENCY', 'TTFT'], lines[0]
assert len(lines) == 1 + 9, lines
assert ' audit ' in lines[1] and ' upstream_error ' in lines[1], lines[1]
assert ' audit ' in lines[2] and ' done ' in lines[2], lines[2]"
run 0 "$OLLMCTL" logs --json
py "
r = json.loads(out)
rows = r['rows']
assert r['truncated'] is False and len(rows) == 9, r
assert [x['time_ms'] for x in rows] == sorted((x['time_ms'] for x in rows), reverse=True), rows
t = rows[1]
assert (t['tag'], t['status'], t['model'], t['upstream'], t['uid']) == \
    ('audit', 'done', 'fake-model', 'fake', os.getuid()), t
assert t['completion_tokens'] == 3 and t['estimated'] is False, t
assert 'ttft_ms' in t and 0 <= t['ttft_ms'] <= t['latency_ms'], t
assert rows[0]['status'] == 'error' and rows[0]['error'] == 'upstream_error', rows[0]
assert 'ttft_ms' not in rows[0], rows[0]"
run 0 "$OLLMCTL" logs --status error --json
py "r = json.loads(out); assert [x['status'] for x in r['rows']] == ['error'], r"
run 0 "$OLLMCTL" logs --tag audit -n 1 --json
py "r = json.loads(out); assert len(r['rows']) == 1 and r['rows'][0]['tag'] == 'audit', r"
run 0 "$OLLMCTL" logs --tag "" --json
py "r = json.loads(out); assert len(r['rows']) == 7 and all(x['tag'] is None for x in r['rows']), r"
run 0 "$OLLMCTL" logs -m other-model --json
py "r = json.loads(out); assert len(r['rows']) == 3, r"
run 0 "$OLLMCTL" logs --since "@$(($(date +%s) + 60))"
grep -q "no requests match" "$TEST_DIR/out" || fail "logs --since: $(cat "$TEST_DIR/out")"
run 0 "$OLLMCTL" logs --until "@$(($(date +%s) - 3600))" --json
py "r = json.loads(out); assert r['rows'] == [], r"
run 0 "$OLLMCTL" logs --user "$(id -un)" -n 2 --json
py "r = json.loads(out); assert len(r['rows']) == 2, r"

# Another user sees only their own rows and may not ask for others'.
chmod 755 "$TEST_DIR"
chmod 666 "$OPENLLMD_SOCKET"
nobody=$(id -u nobody)
setpriv --reuid="$nobody" --regid="$(id -g nobody)" --clear-groups "$PYTHON" -c "
from olc import Conn
c = Conn()
r = c.call('logs')
assert r['type'] == 'result' and r['rows'] == [], r
d, end = c.chat('as nobody')
assert end['type'] == 'done', end
r = c.call('logs')
assert [x['uid'] for x in r['rows']] == [$nobody], r
r = c.call('logs', user=$(id -u))
assert r['type'] == 'error' and r['code'] == 'forbidden', r
" || fail "logs as another user"
run 0 "$OLLMCTL" logs --user nobody --json
py "r = json.loads(out); assert [x['uid'] for x in r['rows']] == [$nobody], r"

# --- status frames ------------------------------------------------------------------
# A retry after a 503 is announced with its attempt, cause and backoff.
"$PYTHON" -c "
from olc import Conn
c = Conn()
rid = c.request('chat', messages=[{'role': 'user', 'content': 'flaky [[fail_first=1 key=s1]]'}],
    status=True)
frames = []
while True:
    r = c.read()
    if r['id'] != rid:
        continue
    frames.append(r)
    if r['type'] in ('done', 'error'):
        break
st = [f for f in frames if f['type'] == 'status']
assert len(st) == 1, frames
s = st[0]
assert (s['state'], s['reason'], s['attempt'], s['of']) == ('retrying', 'HTTP 503', 1, 5), s
assert 0 < s['wait_s'] <= 60 and 'HTTP 503' in s['message'], s
assert frames[-1]['type'] == 'done', frames[-1]
# without status: true the same request sends none
rid = c.request('chat', messages=[{'role': 'user', 'content': 'flaky [[fail_first=1 key=s2]]'}])
_, end = c.until_end(rid)
assert end['type'] == 'done', end
" || fail "retry status"
run 0 "$OLLMCTL" chat "flaky [[fail_first=1 key=s3]]"
grep -q "^ollmctl: retrying 1/5: HTTP 503 (in [0-9.]* s)\$" "$TEST_DIR/err" ||
    fail "no retry line: $(cat "$TEST_DIR/err")"
[ "$(cat "$TEST_DIR/out")" = "echo: flaky" ] || fail "retry: $(cat "$TEST_DIR/out")"

# The model server dies: connection refused is retried with status lines until
# the upstream is marked down, then the chat fails at once naming its URL.
kill "$FAKE_PID"
wait "$FAKE_PID" 2>/dev/null || true
start=$(date +%s)
run 69 "$OLLMCTL" chat "anyone there?"
took=$(($(date +%s) - start))
grep -q "retrying 1/5: connection refused" "$TEST_DIR/err" || fail "refused: $(cat "$TEST_DIR/err")"
grep -q "model server unavailable: upstream fake ($FAKE_URL) is down: connection refused" \
    "$TEST_DIR/err" || fail "down: $(cat "$TEST_DIR/err")"
! grep -q "retrying 3/5" "$TEST_DIR/err" || fail "retried after the upstream was down"
[ "$took" -le 6 ] || fail "a dead model server took $took s to report"
# Known down now: the next chat fails without retrying.
"$PYTHON" -c "
import time
from olc import Conn
c = Conn()
t = time.monotonic()
rid = c.request('chat', messages=[{'role': 'user', 'content': 'hello?'}], status=True)
frames, end = [], None
while end is None:
    r = c.read()
    if r['id'] == rid:
        frames.append(r)
        end = r if r['type'] in ('done', 'error') else None
took = time.monotonic() - t
assert len(frames) == 1 and end['code'] == 'upstream_unavailable', frames
assert '$FAKE_URL' in end['message'], end
assert took < 1.0, took
" || fail "a known-dead model server was retried"
run 69 "$OLLMCTL" chat "still nobody?"
! grep -q retrying "$TEST_DIR/err" || fail "retried: $(cat "$TEST_DIR/err")"
grep -q "is down" "$TEST_DIR/err" || fail "down: $(cat "$TEST_DIR/err")"
stop_daemon

# Queued behind rpm: the wait is announced with its reason and length.
start_fake_upstream -q -m fake-model
rm -rf "$TEST_DIR/state"
UPSTREAM_EXTRA='rpm = 2;' start_daemon
"$PYTHON" -c "
from olc import Conn
c = Conn()
for i in range(2):
    _, end = c.chat('burst %d' % i)
    assert end['type'] == 'done', end
rid = c.request('chat', messages=[{'role': 'user', 'content': 'third'}], status=True)
r = c.read()
assert r['id'] == rid and r['type'] == 'status', r
assert (r['state'], r['reason']) == ('queued', 'rpm'), r
assert 25 < r['wait_s'] <= 30, r
assert 'allows 2 requests a minute' in r['message'], r
" || fail "queued status"
rm -f "$TEST_DIR/err"
"$OLLMCTL" chat "fourth" > "$TEST_DIR/out" 2> "$TEST_DIR/err" < /dev/null &
pid=$!
i=0
until grep -q "^ollmctl: waiting for rpm, [0-9.]* s\$" "$TEST_DIR/err" 2>/dev/null; do
	i=$((i + 1))
	[ "$i" -lt 200 ] || fail "queued: $(cat "$TEST_DIR/err")"
	sleep 0.05
done
kill -INT "$pid"
rc=0
wait "$pid" || rc=$?
[ "$rc" -eq 130 ] || fail "SIGINT while queued: exit $rc"

# --- top ------------------------------------------------------------------------------
stop_daemon
rm -rf "$TEST_DIR/state"
UPSTREAM_EXTRA='max_concurrency = 1; queue_max = 5;' start_daemon \
    'budgets = ( { scope = "all"; unit = "tokens"; limit = 100000.0; } );'
printf 'long [[words=400 delay_ms=50]]' | "$OLLMCTL" chat --tag busy > /dev/null 2>&1 &
long=$!
TEST_PIDS="$TEST_PIDS $long"
# the second waits for the first's slot
"$PYTHON" -c "
import time
from olc import Conn
c = Conn()
for i in range(200):
    t = c.call('top')
    if [x['state'] for x in t['chats']] == ['running'] and t['chats'][0]['tokens'] > 0:
        break
    time.sleep(0.05)
else:
    raise SystemExit('the long chat never ran: %r' % t)
" || fail "top op"
printf 'waiting one' | "$OLLMCTL" chat > /dev/null 2>&1 &
TEST_PIDS="$TEST_PIDS $!"
"$PYTHON" -c "
import os, time
from olc import Conn
c = Conn()
for i in range(200):
    t = c.call('top')
    if len(t['chats']) == 2:
        break
    time.sleep(0.05)
assert t['type'] == 'result' and t['in_flight'] == 2, t
run, wait = t['chats']
assert (run['state'], run['model'], run['upstream'], run['tag'], run['uid']) == \
    ('running', 'fake-model', 'fake', 'busy', os.getuid()), run
assert run['tokens'] > 0 and run['tokens_per_s'] > 0 and run['age_ms'] > 0, run
assert wait['state'] == 'queued' and wait['tokens'] == 0 and 'tag' not in wait, wait
assert t['upstreams'] == [{'name': 'fake', 'healthy': True, 'in_flight': 1, 'queued': 1}], t
m = t['models'][0]
assert m['model'] == 'fake-model' and m['in_flight'] == 2 and m['tokens_per_s'] > 0, t['models']
assert [b['scope'] for b in t['budgets']] == ['all'], t['budgets']
" || fail "top op"
run 0 "$OLLMCTL" top
grep -q "^UPSTREAM " "$TEST_DIR/out" || fail "top -b: $(cat "$TEST_DIR/out")"
run 0 "$OLLMCTL" top -b -n 2 -d 0.2
[ "$(grep -c "^openllmd " "$TEST_DIR/out")" -eq 2 ] || fail "top -n 2: $(cat "$TEST_DIR/out")"

tm -f /dev/null new-session -d -x 150 -y 40 \
    "stty -a > \"$TEST_DIR/stty.before\"; sh -c 'echo \$\$ > \"$TEST_DIR/top.pid\"; exec \"$OLLMCTL\" top -d 0.2'; echo \$? > \"$TEST_DIR/top.status\"; stty -a > \"$TEST_DIR/stty.after\"; sleep 600"
TEST_PIDS="$TEST_PIDS $(tm display-message -p '#{pid}')"
wait_screen "(q quits)"
wait_screen "fake-model"
wait_screen "running"
wait_screen "queued"
screen | grep -q "^fake  *up  *1  *1\$" || { screen; fail "top: no upstream row with 1 in flight, 1 queued"; }
screen | grep -q "^all  *tokens  *ever " || { screen; fail "top: no budget row"; }
screen | grep -q "  busy\$" || { screen; fail "top: no tag"; }
# tokens so far grow between refreshes
t1=$(screen | awk '/ running / { print $6 }')
sleep 0.6
t2=$(screen | awk '/ running / { print $6 }')
[ "$t2" -gt "$t1" ] || { screen; fail "top: tokens do not grow ($t1, $t2)"; }
tm send-keys -t 0 q
wait_file "$TEST_DIR/top.status"
[ "$(cat "$TEST_DIR/top.status")" = 0 ] || fail "top exited $(cat "$TEST_DIR/top.status")"
wait_file "$TEST_DIR/stty.after"
cmp -s "$TEST_DIR/stty.before" "$TEST_DIR/stty.after" ||
    fail "q left the terminal changed: $(diff "$TEST_DIR/stty.before" "$TEST_DIR/stty.after")"
screen | grep -q "(q quits)" && { screen; fail "the alternate screen was not left"; }
tm kill-server

# SIGTERM restores the terminal too.
rm -f "$TEST_DIR/top.pid" "$TEST_DIR/top.status" "$TEST_DIR/stty.after"
tm -f /dev/null new-session -d -x 150 -y 40 \
    "sh -c 'echo \$\$ > \"$TEST_DIR/top.pid\"; exec \"$OLLMCTL\" top -d 0.2'; echo \$? > \"$TEST_DIR/top.status\"; stty -a > \"$TEST_DIR/stty.after\"; sleep 600"
TEST_PIDS="$TEST_PIDS $(tm display-message -p '#{pid}')"
wait_screen "(q quits)"
kill -TERM "$(cat "$TEST_DIR/top.pid")"
wait_file "$TEST_DIR/stty.after"
[ "$(cat "$TEST_DIR/top.status")" = 143 ] || fail "top on SIGTERM exited $(cat "$TEST_DIR/top.status")"
cmp -s "$TEST_DIR/stty.before" "$TEST_DIR/stty.after" ||
    fail "SIGTERM left the terminal changed: $(diff "$TEST_DIR/stty.before" "$TEST_DIR/stty.after")"
tm kill-server
kill "$long" 2>/dev/null || true

echo "client_features: all checks passed"
