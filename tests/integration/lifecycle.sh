#!/bin/sh
# Start-up, config checks, the socket, reload and graceful shutdown.
. "$top_srcdir/tests/integration/lib.sh"
openllmd="$top_builddir/daemon/openllmd"
start_fake_upstream -q -m fake-model

# -t: every problem as FILE:LINE: message, exit 78 (EX_CONFIG); a good file exits 0
bad="$TEST_DIR/bad.conf"
printf 'log_level = "info";\nrpm = -1;\nbogus = 1;\n' > "$bad"
rc=0; out=$("$openllmd" -t -c "$bad") || rc=$?
[ "$rc" -eq 78 ] || fail "-t on a bad file must exit 78, not $rc"
echo "$out" | grep -qx "$bad:2: rpm must be >= 0" || fail "-t output: $out"
echo "$out" | grep -qx "$bad:3: unknown setting \"bogus\"" || fail "-t output: $out"
rc=0; "$openllmd" -f -c "$bad" 2>/dev/null || rc=$?
[ "$rc" -eq 78 ] || fail "a start on a bad file must exit 78, not $rc"
write_config
"$openllmd" -t -c "$CONF" >/dev/null || fail "-t refused a good file"

# -t catches what a start would refuse: a tokenizer that does not load, a
# state_dir or a socket directory that cannot be made; and creates nothing.
: > "$TEST_DIR/plainfile"
missing_tok="$TEST_DIR/no_such_encoding.tiktoken"
UPSTREAM_EXTRA="tokenizer = \"$missing_tok\";" write_config
sed -i -e "s|^socket = .*|socket = \"$TEST_DIR/plainfile/run/s.sock\";|" \
    -e "s|^state_dir = .*|state_dir = \"$TEST_DIR/plainfile/state\";|" "$CONF"
rc=0; out=$(OPENLLMD_SOCKET= "$openllmd" -t -c "$CONF") || rc=$?
[ "$rc" -eq 78 ] || fail "-t passed a broken start (exit $rc): $out"
echo "$out" | grep -q "^$CONF: upstream fake: tokenizer $missing_tok: " || fail "-t tokenizer: $out"
echo "$out" | grep -q "^$CONF: state_dir $TEST_DIR/plainfile/state: .* is not a directory" ||
	fail "-t state_dir: $out"
echo "$out" | grep -q "^$CONF: socket $TEST_DIR/plainfile/run/s.sock: directory .* is not a directory" ||
	fail "-t socket: $out"
rc=0; OPENLLMD_SOCKET= "$openllmd" -f -c "$CONF" 2>"$TEST_DIR/broken.log" || rc=$?
[ "$rc" -eq 78 ] || fail "a start with a missing tokenizer must exit 78, not $rc"
grep -q "tokenizer $missing_tok" "$TEST_DIR/broken.log" || fail "start: $(cat "$TEST_DIR/broken.log")"
write_config
"$openllmd" -V | grep -q "^openllmd [0-9]" || fail "-V"
rc=0; "$openllmd" -x 2>/dev/null || rc=$?
[ "$rc" -eq 64 ] || fail "a bad option must exit 64, not $rc"

# the socket: mode from socket_mode, a second daemon refused, a stale file replaced
KEEP_CONFIG=1 start_daemon
[ "$(stat -c %a "$OPENLLMD_SOCKET")" = 660 ] || fail "socket mode $(stat -c %a "$OPENLLMD_SOCKET")"
"$openllmd" -f -c "$CONF" 2>"$TEST_DIR/second.log" && fail "a second daemon started"
grep -q "another openllmd already answers" "$TEST_DIR/second.log" || fail "second: $(cat "$TEST_DIR/second.log")"
"$PYTHON" -m olc ping >/dev/null || fail "the first daemon was disturbed"
stop_daemon KILL
[ -S "$OPENLLMD_SOCKET" ] || fail "expected a stale socket after kill -9"
KEEP_CONFIG=1 start_daemon
grep -q "replaced stale socket" "$TEST_DIR/daemon.log" || fail "stale socket not replaced"

# SIGHUP: an invalid file is refused and the old one kept; a valid one is swapped in
cp "$CONF" "$TEST_DIR/good.conf"
echo 'rpm = "many";' >> "$CONF"
kill -HUP "$DAEMON_PID"
sleep 0.5
grep -q "reload refused" "$TEST_DIR/daemon.log" || fail "bad reload not refused"
"$PYTHON" -m olc ping >/dev/null || fail "daemon down after a bad reload"
UPSTREAMS="{ name = \"fake\"; base_url = \"$FAKE_URL\"; model = \"fake-model\"; rpm = 0; },
  { name = \"second\"; base_url = \"$FAKE_URL\"; model = \"other-model\"; rpm = 0; }" write_config
kill -HUP "$DAEMON_PID"
i=0
until "$PYTHON" -m olc models | grep -q '"second"'; do
	i=$((i + 1)); [ $i -lt 50 ] || fail "reload did not add the upstream"; sleep 0.1
done
grep -q "configuration reloaded" "$TEST_DIR/daemon.log" || fail "no reload log line"

# SIGTERM: a stream in flight finishes, then the daemon exits 0 and removes its socket
"$PYTHON" - "$TEST_DIR/streaming" <<'PY' &
import sys
from olc import Conn
c = Conn()
rid = c.request("chat", messages=[{"role": "user", "content": "drain [[chunks=20 delay_ms=50]]"}])
first = c.read()
assert first["type"] == "delta", first
open(sys.argv[1], "w").close()
deltas, end = c.until_end(rid)
assert end["type"] == "done", end
assert first.get("content", "") + "".join(x.get("content", "") for x in deltas) == "echo: drain"
PY
client=$!
i=0
until [ -e "$TEST_DIR/streaming" ]; do
	i=$((i + 1)); [ $i -lt 100 ] || fail "the stream did not start"; sleep 0.05
done
kill -TERM "$DAEMON_PID"
wait "$client" || fail "the stream in flight did not finish during the drain"
rc=0; wait "$DAEMON_PID" || rc=$?
[ "$rc" -eq 0 ] || fail "daemon exit status $rc after SIGTERM"
[ ! -e "$OPENLLMD_SOCKET" ] || fail "socket left behind"
grep -q "shutting down" "$TEST_DIR/daemon.log" || fail "no drain log line"

# MetaGPT's environment variables name the single upstream
cat > "$TEST_DIR/env.conf" <<EOF2
socket = "$TEST_DIR/env.sock";
state_dir = "$TEST_DIR/envstate";
EOF2
OPENLLMD_SOCKET="$TEST_DIR/env.sock" OPEN_LLM_API_BASE="$FAKE_URL" OPEN_LLM_API_MODEL=env-model \
	"$openllmd" -f -c "$TEST_DIR/env.conf" >>"$TEST_DIR/daemon.log" 2>&1 &
pid=$!
TEST_PIDS="$TEST_PIDS $pid"
OPENLLMD_SOCKET="$TEST_DIR/env.sock" "$PYTHON" -m olc wait 10 || fail "env daemon did not start"
OPENLLMD_SOCKET="$TEST_DIR/env.sock" "$PYTHON" -m olc models | grep -q '"env-model"' || fail "env model not used"
OPENLLMD_SOCKET="$TEST_DIR/env.sock" "$PYTHON" -m olc chat "via env" | grep -q "echo: via env" || fail "env chat"
kill -TERM "$pid"; wait "$pid" || fail "env daemon exit status"
# systemd: readiness and status over NOTIFY_SOCKET, priorities on the journal's stream
if grep -q "define HAVE_SYSTEMD 1" "$top_builddir/config.h"; then
	"$PYTHON" - "$TEST_DIR/notify.sock" "$TEST_DIR/notify.log" <<'PY' &
import socket, sys, time
s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
s.bind(sys.argv[1])
s.settimeout(15)
with open(sys.argv[2], "w") as out:
    try:
        while True:
            msg = s.recv(4096).decode()
            out.write(msg + "\n")
            out.flush()
            if "STOPPING=1" in msg:
                break
    except socket.timeout:
        pass
PY
	listener=$!
	while [ ! -S "$TEST_DIR/notify.sock" ]; do sleep 0.05; done
	: > "$TEST_DIR/journal.log"
	JOURNAL_STREAM="$(stat -c %d:%i "$TEST_DIR/journal.log")" NOTIFY_SOCKET="$TEST_DIR/notify.sock" \
		"$openllmd" -f -c "$CONF" 2>>"$TEST_DIR/journal.log" &
	pid=$!
	TEST_PIDS="$TEST_PIDS $pid"
	"$PYTHON" -m olc wait 10 || fail "notify daemon did not start"
	sleep 1.2
	kill -TERM "$pid"
	wait "$pid" || fail "notify daemon exit status"
	wait "$listener" || true
	grep -q "^READY=1" "$TEST_DIR/notify.log" || fail "no READY=1: $(cat "$TEST_DIR/notify.log")"
	grep -q "^STATUS=.*requests served" "$TEST_DIR/notify.log" || fail "no STATUS="
	grep -q "STOPPING=1" "$TEST_DIR/notify.log" || fail "no STOPPING=1"
	grep -q "^<6>openllmd .* ready" "$TEST_DIR/journal.log" || fail "no <6> prefix: $(head -3 "$TEST_DIR/journal.log")"
	if command -v systemd-socket-activate >/dev/null 2>&1; then
		act="$TEST_DIR/activated.sock"
		systemd-socket-activate -E OPENLLMD_TOKENIZER_DIR -l "$act" "$openllmd" -f -c "$CONF" >>"$TEST_DIR/daemon.log" 2>&1 &
		pid=$!
		TEST_PIDS="$TEST_PIDS $pid"
		while [ ! -S "$act" ]; do sleep 0.05; done
		OPENLLMD_SOCKET="$act" "$PYTHON" -m olc chat "activated" | grep -q "echo: activated" ||
			fail "socket activation"
		grep -q "listening on the socket passed by systemd" "$TEST_DIR/daemon.log" || fail "fd not taken from systemd"
		kill -TERM "$pid"
		wait "$pid" || true
	fi
fi
echo "lifecycle: all checks passed"
