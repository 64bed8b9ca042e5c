#!/bin/sh
# The HTTP front as a network service under a hostile local user: the daemon
# runs as root, the attacker as other uids (setpriv). Identity of clients
# that have gone, connection caps counted at accept, descriptors running
# out, deadlines per phase, bodies refused before they are read, framing.
. "$top_srcdir/tests/integration/lib.sh"
start_fake_upstream -q -m fake-model
py="$top_srcdir/tests/integration/test_http_trust.py"
A=4321                          # the attacker
B=4322                          # another user, who must still be served
C=4323

# as UID GROUP [ARGS...]: a group of test_http_trust.py, run as uid UID.
as() {
	u=$1
	shift
	setpriv --reuid="$u" --regid="$u" --clear-groups "$PYTHON" "$py" "$@"
}

# The port the kernel chose, from the log.
http_port() {
	i=0
	until grep -q "HTTP: listening on 127.0.0.1:" "$TEST_DIR/daemon.log"; do
		i=$((i + 1)); [ $i -lt 100 ] || fail "no HTTP listener in the log"; sleep 0.05
	done
	grep "HTTP: listening on 127.0.0.1:" "$TEST_DIR/daemon.log" | tail -n 1 |
		sed 's/.*127\.0\.0\.1:\([0-9]*\).*/\1/'
}

# restart [config lines...]: a fresh daemon with a fresh ledger and log.
restart() {
	[ -z "${DAEMON_PID:-}" ] || stop_daemon TERM
	rm -rf "$TEST_DIR/state"
	: > "$TEST_DIR/daemon.log"
	HTTP_LISTEN='"127.0.0.1:0"' start_daemon "$@"
	HTTP_PORT=$(http_port)
	export HTTP_PORT
}

# --- 1. a client that has closed is not root ----------------------------------
# With the daemon stopped, whole requests arrive and their clients close:
# their sockets linger in FIN_WAIT/TIME_WAIT, which the kernel reports as
# uid 0. They are 401 (nobody to answer), never chats billed to root.
restart
kill -STOP "$DAEMON_PID"
as $A gone 5 > "$TEST_DIR/out" 2>&1 || { kill -CONT "$DAEMON_PID"; fail "gone: $(cat "$TEST_DIR/out")"; }
sleep 0.5
kill -CONT "$DAEMON_PID"
as $A keyless > "$TEST_DIR/out" 2>&1 || fail "keyless: $(cat "$TEST_DIR/out")"
i=0
until grep -q "uid $A model fake-model upstream fake: done" "$TEST_DIR/daemon.log"; do
	i=$((i + 1)); [ $i -lt 100 ] || fail "the live client was not billed as uid $A"; sleep 0.05
done
grep -q "model fake-model upstream fake" "$TEST_DIR/daemon.log" &&
	[ "$(grep -c "model fake-model upstream fake" "$TEST_DIR/daemon.log")" -eq 1 ] ||
	fail "chats of clients that had gone: $(grep 'upstream fake' "$TEST_DIR/daemon.log")"
grep -q "cannot tell who it is: the client.s socket is no longer held by any process" "$TEST_DIR/daemon.log" ||
	fail "the gone clients were not refused for want of an identity"
"$PYTHON" -m olc stats > "$TEST_DIR/stats.json"
"$PYTHON" - "$TEST_DIR/stats.json" "$A" <<'PY' || fail "stats: $(cat "$TEST_DIR/stats.json")"
import json, sys
s = json.load(open(sys.argv[1]))
s = s.get("result", s)
assert list(s["by_user"]) == [sys.argv[2]], s["by_user"]
PY

# --- 2. connections counted at accept ----------------------------------------
restart 'max_clients = 8;' 'max_clients_per_uid = 4;'
# four idle connections (nothing sent) fill A's share; a fifth is refused at once
as $A hold 4 idle > "$TEST_DIR/holdA.out" 2>&1 &
TEST_PIDS="$TEST_PIDS $!"
wait_for_line "$TEST_DIR/holdA.out" 10
grep -qx holding "$TEST_DIR/holdA.out" || fail "hold: $(cat "$TEST_DIR/holdA.out")"
as $A refused too_many_clients > "$TEST_DIR/out" 2>&1 || fail "A's fifth: $(cat "$TEST_DIR/out")"
grep -q "uid $A already has 4 connections (max_clients_per_uid 4)" "$TEST_DIR/out" ||
	fail "A's fifth: $(cat "$TEST_DIR/out")"
# B keeps four kept-alive connections: max_clients is reached; C still gets in,
# and the longest idle connection (A's first) is closed to make room
as $B hold 4 used > "$TEST_DIR/holdB.out" 2>&1 &
TEST_PIDS="$TEST_PIDS $!"
wait_for_line "$TEST_DIR/holdB.out" 10
grep -qx holding "$TEST_DIR/holdB.out" || fail "hold: $(cat "$TEST_DIR/holdB.out")"
as $C health > "$TEST_DIR/out" 2>&1 || fail "C past max_clients: $(cat "$TEST_DIR/out")"
i=0
until grep -qx "closed 0" "$TEST_DIR/holdA.out"; do
	i=$((i + 1)); [ $i -lt 40 ] || fail "A's longest idle connection was not closed: $(cat "$TEST_DIR/holdA.out")"
	sleep 0.05
done
grep -q "closing the idle connection of 127.0.0.1:[0-9]* to make room" "$TEST_DIR/daemon.log" ||
	fail "the log does not say why a connection was closed"
[ "$(grep -c "closed" "$TEST_DIR/holdB.out")" -eq 0 ] || fail "B lost a connection: $(cat "$TEST_DIR/holdB.out")"
# the msgpack socket counts against the same caps
OPENLLMD_SOCKET="$TEST_DIR/openllmd.sock" "$PYTHON" -m olc ping >/dev/null 2>&1 ||
	fail "root's msgpack client was refused"

# --- 2b. out of descriptors: accepting pauses, the log stays quiet ------------
restart 'max_clients_per_uid = 1000;'
prlimit --pid "$DAEMON_PID" --nofile=48:48 || fail "prlimit"
as $A flood 300 4 > "$TEST_DIR/out" 2>&1 || fail "flood: $(cat "$TEST_DIR/out")"
lines=$(grep -c -E "accept(\(\) call|: )" "$TEST_DIR/daemon.log" || true)
[ "$lines" -ge 1 ] && [ "$lines" -le 8 ] ||
	fail "$lines log lines about accept in 4 s: $(grep -E "accept(\(\) call|: )" "$TEST_DIR/daemon.log" | head -n 5)"
grep -q "HTTP: accept: Too many open files; no new connection until a descriptor is free" \
	"$TEST_DIR/daemon.log" || fail "the log does not say why accepting paused"
as $A keyless > "$TEST_DIR/out" 2>&1 || fail "after the flood: $(cat "$TEST_DIR/out")"

# --- 3. deadlines for the request line and headers, and for the body ---------
restart 'http_timeout = 60.0;' 'http_header_timeout = 2.0;' 'http_body_timeout = 1.0;' \
	'http_body_min_rate = 16384;'
as $A slowloris 2 > "$TEST_DIR/out" 2>&1 || fail "slowloris: $(cat "$TEST_DIR/out")"
# 65536 bytes at 16384 a second: 1 + 4 s
as $A slow_body 65536 5 > "$TEST_DIR/out" 2>&1 || fail "slow body: $(cat "$TEST_DIR/out")"
grep -q "took longer than http_header_timeout (2s); closed" "$TEST_DIR/daemon.log" &&
	grep -q "took longer than http_body_timeout (1s)" "$TEST_DIR/daemon.log" ||
	fail "the deadlines are not in the log"

# --- 4. no body is read before its key is checked; bodies in flight are capped -
restart 'http_max_inflight_body = 1048576;'
as $A wrong_key 24 > "$TEST_DIR/out" 2>&1 || fail "wrong key: $(cat "$TEST_DIR/out")"
as $A inflight 700000 > "$TEST_DIR/out" 2>&1 || fail "inflight: $(cat "$TEST_DIR/out")"
grep -q "would pass http_max_inflight_body (1048576)" "$TEST_DIR/daemon.log" ||
	fail "the log does not name http_max_inflight_body"

# --- 5. framing ----------------------------------------------------------------
restart
as $A framing > "$TEST_DIR/out" 2>&1 || fail "framing: $(cat "$TEST_DIR/out")"

# --- 6. top and stats show a user their own chats and totals only -----------
ALICE=sk-ollm-trust-alice-0123456789abcdefghijklmnopq
ALICE_SHA=$(printf %s "$ALICE" | sha256sum | cut -d' ' -f1)
chmod 755 "$TEST_DIR"           # the attacker reaches the 0666 socket through it
restart 'socket_mode = "0666";' "api_keys = ( { sha256 = \"$ALICE_SHA\"; user = \"ci:alice\"; tag = \"secret\"; } );"
"$PYTHON" -m olc chat "root's" > /dev/null || fail "root's chat"
curl -sf -o /dev/null -H "Authorization: Bearer $ALICE" "http://127.0.0.1:$HTTP_PORT/v1/chat/completions" \
	-d '{"model":"fake-model","messages":[{"role":"user","content":"alice"}]}' || fail "alice's chat"
# while a chat of root and one of ci:alice run, uid A asks
curl -sf -o /dev/null -H "Authorization: Bearer $ALICE" "http://127.0.0.1:$HTTP_PORT/v1/chat/completions" \
	-d '{"model":"fake-model","messages":[{"role":"user","content":"slow [[chunks=6 delay_ms=500]]"}]}' &
TEST_PIDS="$TEST_PIDS $!"
"$PYTHON" -m olc chat "slow root [[chunks=6 delay_ms=500]]" > /dev/null &
TEST_PIDS="$TEST_PIDS $!"
sleep 0.3
OPENLLMD_SOCKET="$TEST_DIR/openllmd.sock" as $A visibility > "$TEST_DIR/out" 2>&1 ||
	fail "visibility: $(cat "$TEST_DIR/out")"

# --- 7. named users are parties of their own in the fair queue ----------------
# one request at a time upstream: ci:ann's five queue up, then ci:bob's one goes
# second, not sixth (they share the named users' uid)
ANN=sk-ollm-trust-ann-0123456789abcdefghijklmnopqrs
BOB=sk-ollm-trust-bob-0123456789abcdefghijklmnopqrs
keys="api_keys = ( { sha256 = \"$(printf %s "$ANN" | sha256sum | cut -d' ' -f1)\"; user = \"ci:ann\"; },
  { sha256 = \"$(printf %s "$BOB" | sha256sum | cut -d' ' -f1)\"; user = \"ci:bob\"; } );"
UPSTREAM_EXTRA='max_concurrency = 1; queue_max = 100;' restart "$keys"
unset UPSTREAM_EXTRA
for n in 1 2 3 4 5; do
	curl -sf -o /dev/null -H "Authorization: Bearer $ANN" "http://127.0.0.1:$HTTP_PORT/v1/chat/completions" \
		-d "{\"model\":\"fake-model\",\"messages\":[{\"role\":\"user\",\"content\":\"ann $n [[chunks=2 delay_ms=250]]\"}]}" &
	TEST_PIDS="$TEST_PIDS $!"
done
sleep 0.3                       # the first runs, four wait
curl -sf -o /dev/null -H "Authorization: Bearer $BOB" "http://127.0.0.1:$HTTP_PORT/v1/chat/completions" \
	-d '{"model":"fake-model","messages":[{"role":"user","content":"bob"}]}' || fail "bob's request"
ann_done=$(grep -c "user ci:ann model fake-model upstream fake: done" "$TEST_DIR/daemon.log" || true)
[ "$ann_done" -le 2 ] || fail "ci:bob waited behind $ann_done of ci:ann's requests"
wait_ann=0
until [ "$(grep -c "user ci:ann model fake-model upstream fake: done" "$TEST_DIR/daemon.log")" -eq 5 ]; do
	wait_ann=$((wait_ann + 1)); [ $wait_ann -lt 100 ] || fail "ci:ann's requests did not all end"; sleep 0.1
done

stop_daemon TERM
echo "http_trust: all checks passed"
