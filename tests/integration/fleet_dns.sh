#!/bin/sh
# The event loop never waits for DNS: fleet_postgres names its host, and the
# name server (a fake one here, on 127.0.0.2:53, named by a private
# /etc/resolv.conf in the daemon's own mount namespace) answers only after
# 3 s. Meanwhile the daemon answers its clients at once; then it connects to
# the address the name resolved to and ships. A host list whose first name
# does not exist connects through the second. Needs root (a mount namespace,
# port 53).
. "$top_srcdir/tests/integration/lib.sh"
[ "$(id -u)" -eq 0 ] || { echo "SKIP: needs root for a private /etc/resolv.conf and port 53"; exit 77; }
PG_LISTEN=127.0.0.1
PG_PORT=$($PYTHON -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
. "$top_srcdir/tests/integration/pg.sh"

start_fake_upstream -q -m fake-model

# A name server that answers A queries for db.fleet.test with 127.0.0.1 after
# DNS_DELAY seconds, other types with no answer, other names with NXDOMAIN;
# every question is logged.
cat >"$TEST_DIR/dns.py" <<'PY'
import socket, struct, sys, threading, time
delay, log = float(sys.argv[1]), sys.argv[2]
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind(("127.0.0.2", 53))
print("ready", flush=True)
lock = threading.Lock()
def answer(data, addr):
    i, labels = 12, []
    while data[i] != 0:
        labels.append(data[i + 1:i + 1 + data[i]].decode().lower())
        i += 1 + data[i]
    qtype = struct.unpack(">H", data[i + 1:i + 3])[0]
    name = ".".join(labels)
    with lock:
        with open(log, "a") as f:
            f.write("%.3f %s %d\n" % (time.time(), name, qtype))
    time.sleep(delay)
    an, rcode, rr = 0, 3, b""
    if name == "db.fleet.test":
        rcode = 0
        if qtype == 1:
            an, rr = 1, b"\xc0\x0c" + struct.pack(">HHIH", 1, 1, 60, 4) + socket.inet_aton("127.0.0.1")
    s.sendto(data[:2] + struct.pack(">HHHHH", 0x8180 | rcode, 1, an, 0, 0) + data[12:i + 5] + rr, addr)
while True:
    data, addr = s.recvfrom(512)
    threading.Thread(target=answer, args=(data, addr), daemon=True).start()
PY
$PYTHON "$TEST_DIR/dns.py" 3 "$TEST_DIR/dns.log" >"$TEST_DIR/dns.out" 2>&1 &
TEST_PIDS="$TEST_PIDS $!"
wait_for_line "$TEST_DIR/dns.out" 10
grep -q ready "$TEST_DIR/dns.out" || fail "the fake name server did not start: $(cat "$TEST_DIR/dns.out")"
printf 'nameserver 127.0.0.2\noptions timeout:10 attempts:1\n' >"$TEST_DIR/resolv.conf"

# start_node NAME HOSTS: a daemon whose /etc/resolv.conf is ours, connecting to HOSTS.
start_node() {
	cat >"$TEST_DIR/$1.conf" <<EOF
socket = "$TEST_DIR/$1.sock";
state_dir = "$TEST_DIR/$1-state";
log_level = "debug";
fsync = "no";
fleet_postgres = "host=$2 port=$PG_PORT dbname=postgres user=ollm";
fleet_node = "$1";
http_listen = ( );
max_budget = 0;
upstreams = ( { name = "fake"; base_url = "$FAKE_URL"; model = "fake-model"; retries = 0; } );
EOF
	unshare -m sh -c 'mount --bind "$1" /etc/resolv.conf && exec "$2" -f -c "$3"' sh \
	    "$TEST_DIR/resolv.conf" "$top_builddir/daemon/openllmd" "$TEST_DIR/$1.conf" \
	    >>"$TEST_DIR/$1.log" 2>&1 &
	eval "${1}_pid=$!"
	TEST_PIDS="$TEST_PIDS $!"
}

# 1. the daemon answers while its database's name is being looked up
start_node alpha db.fleet.test
t0=$($PYTHON -c 'import time; print(time.time())')
OPENLLMD_SOCKET="$TEST_DIR/alpha.sock" $PYTHON - "$t0" "$TEST_DIR/alpha.log" <<'PY' ||
import sys, time
from olc import Conn, wait
t0, log = float(sys.argv[1]), sys.argv[2]
wait(10)
up = time.time() - t0
assert up < 2, ("the daemon took %.1fs to answer: it waited for DNS" % up)
worst = 0
for i in range(8):
    t = time.time()
    _, r = Conn().chat("hi %d" % i)
    assert r["type"] == "done", r
    worst = max(worst, time.time() - t)
    time.sleep(0.1)
assert worst < 0.5, ("a chat took %.2fs while the name was being looked up" % worst)
assert "connected to the database" not in open(log).read(), "connected before the name server answered"
print("answering %.2fs after start; 8 chats meanwhile, the slowest %.0f ms" % (up, worst * 1000))
PY
	fail "alpha: $(tail -n 5 "$TEST_DIR/alpha.log")"
i=0
until grep -q "fleet: connected to the database" "$TEST_DIR/alpha.log"; do
	i=$((i + 1))
	[ "$i" -le 100 ] || fail "alpha did not connect: $(grep fleet "$TEST_DIR/alpha.log" | tail -n 5)"
	sleep 0.1
done
grep -q "^[0-9.]* db.fleet.test 1$" "$TEST_DIR/dns.log" || fail "no A query for db.fleet.test: $(cat "$TEST_DIR/dns.log")"
i=0
until [ "$(psql "SELECT count(*) FROM ollm_usage WHERE node = 'alpha'")" = 8 ]; do
	i=$((i + 1))
	[ "$i" -le 100 ] || fail "alpha's records were not shipped"
	sleep 0.1
done
[ "$(psql "SELECT client_addr FROM pg_stat_activity WHERE application_name = 'openllmd'")" = 127.0.0.1 ] ||
	fail "not connected over TCP to 127.0.0.1: $(psql "SELECT client_addr, application_name FROM pg_stat_activity")"

# 2. a host list: the first name does not exist, the second connects
start_node beta "nowhere.fleet.test,db.fleet.test"
OPENLLMD_SOCKET="$TEST_DIR/beta.sock" $PYTHON -m olc wait 2 || fail "beta waited for DNS"
i=0
until grep -q "fleet: connected to the database" "$TEST_DIR/beta.log"; do
	i=$((i + 1))
	[ "$i" -le 100 ] || fail "beta did not connect: $(grep fleet "$TEST_DIR/beta.log" | tail -n 5)"
	sleep 0.1
done
grep -q " nowhere.fleet.test 1$" "$TEST_DIR/dns.log" || fail "nowhere.fleet.test was not asked"

for n in alpha beta; do
	eval "pid=\$${n}_pid"
	kill -TERM "$pid"
	wait "$pid" || fail "$n exited with status $?"
done
echo "fleet_dns: ok"
