#!/bin/sh
# Rate limits, concurrency, the queue, fairness, budgets, failover and timeouts,
# each observed through the daemon (and at the fake model server).
. "$top_srcdir/tests/integration/lib.sh"
start_fake_upstream -q -m fake-model -m priced
test_py="$top_srcdir/tests/integration/test_daemon.py"

run_group() {
	group=$1
	shift
	start_daemon "$@"
	"$PYTHON" "$test_py" "$group"
	stop_daemon TERM
	rm -rf "$TEST_DIR/state"
}

UPSTREAM_EXTRA='rpm = 60;' run_group rpm
UPSTREAM_EXTRA='max_concurrency = 3;' run_group concurrency
UPSTREAM_EXTRA='max_concurrency = 3; queue_max = 2; queue_timeout = 1.0;' run_group queue
chmod 755 "$TEST_DIR"
UPSTREAM_EXTRA='max_concurrency = 1;' run_group fair 'socket_mode = "0666";'

# budgets: the tag budget admits exactly ten requests of this prompt with max_tokens 100
export UPSTREAMS="{ name = \"fake\"; base_url = \"$FAKE_URL\"; model = \"fake-model\"; rpm = 0; max_concurrency = 0; },
  { name = \"priced\"; base_url = \"$FAKE_URL\"; model = \"priced\"; rpm = 0; max_concurrency = 0;
    prompt_price = 0.01; completion_price = 0.02; }"
start_daemon 'max_budget = 0.001;'
per=$("$PYTHON" -c 'from olc import Conn; print(Conn().call("tokens", messages=[{"role": "user", "content": "budget [[chunks=2 delay_ms=300]]"}])["count"] + 100)')
write_config 'max_budget = 0.001;' \
	"budgets = ( { scope = \"tag\"; who = \"race\"; unit = \"tokens\"; period = \"day\"; limit = $((per * 10 + per / 2)); } );"
kill -HUP "$DAEMON_PID"
i=0
until "$PYTHON" -m olc stats | grep -q "tag:race"; do
	i=$((i + 1)); [ $i -lt 50 ] || fail "budget not loaded by SIGHUP"; sleep 0.1
done
"$PYTHON" "$test_py" budget
stop_daemon TERM
rm -rf "$TEST_DIR/state"

# failover: the first upstream refuses connections
export UPSTREAMS="{ name = \"dead\"; base_url = \"http://127.0.0.1:1/v1\"; model = \"fake-model\"; rpm = 0; retries = 3; },
  { name = \"live\"; base_url = \"$FAKE_URL\"; model = \"fake-model\"; rpm = 0; retries = 3; }"
run_group failover
unset UPSTREAMS

UPSTREAM_EXTRA='timeout = 1.0;' run_group timeout

# a server whose listen queue is full: SYNs go unanswered, so connecting times out
"$PYTHON" - "$TEST_DIR/blackhole.port" <<'PY' &
import socket, sys, time
l = socket.socket()
l.bind(("127.0.0.1", 0))
l.listen(0)
port = l.getsockname()[1]
fill = []
for i in range(4):
    c = socket.socket()
    c.setblocking(False)
    try:
        c.connect(("127.0.0.1", port))
    except BlockingIOError:
        pass
    fill.append(c)
time.sleep(0.2)
with open(sys.argv[1], "w") as f:
    f.write("%d\n" % port)
time.sleep(60)
PY
TEST_PIDS="$TEST_PIDS $!"
wait_for_line "$TEST_DIR/blackhole.port" 10
export UPSTREAMS="{ name = \"hole\"; base_url = \"http://127.0.0.1:$(cat "$TEST_DIR/blackhole.port")/v1\";
  model = \"fake-model\"; rpm = 0; retries = 0; connect_timeout = 1.0; }"
run_group connect
unset UPSTREAMS
echo "limits: all groups passed"
