#!/bin/sh
# The HTTP front as a network service under a hostile local user: the daemon
# runs as root, the attacker as other uids (setpriv). Identity of clients
# that have gone.
. "$top_srcdir/tests/integration/lib.sh"
start_fake_upstream -q -m fake-model
py="$top_srcdir/tests/integration/test_http_trust.py"
A=4321                          # the attacker

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

stop_daemon TERM
echo "http_trust: all checks passed"
