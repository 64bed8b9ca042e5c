"""Hostile and careless local clients: openllmd neither crashes nor loses a record.

Run by tests/integration/trust.sh after lib.sh started both servers:
    python3 test_trust.py GROUP
"""
import os
import socket
import struct
import sys
import time

import msgpack

from olc import Conn

TESTS = {}
BIG = "abcdefgh " * 170000     # the fake model server echoes it: a 1.5 MB reply
SLOW = "delay_ms=3000"          # replies wait until every request has been sent


def test(group):
    def register(fn):
        TESTS.setdefault(group, []).append(fn)
        return fn
    return register


def check(cond, what):
    if not cond:
        raise AssertionError(what)


def frame(msg):
    body = msgpack.packb(msg, use_bin_type=True)
    return struct.pack(">I", len(body)) + body


def total_requests():
    return Conn().call("stats")["total"]["requests"]


def wait_requests(n, seconds):
    """Wait until the ledger counts n requests; return the count seen last."""
    deadline = time.time() + seconds
    got = total_requests()
    while got < n and time.time() < deadline:
        time.sleep(0.1)
        got = total_requests()
    return got


def alive():
    r = Conn(timeout=5).call("ping")
    check(r["type"] == "result", "daemon does not answer: %r" % r)


def frame_len(conn):
    """Read one frame from conn's socket, return (its total length, the reply)."""
    hdr = b""
    while len(hdr) < 4:
        chunk = conn.sock.recv(4 - len(hdr))
        check(chunk, "EOF reading a frame header")
        hdr += chunk
    (n,) = struct.unpack(">I", hdr)
    body = b""
    while len(body) < n:
        chunk = conn.sock.recv(n - len(body))
        check(chunk, "EOF reading a frame body")
        body += chunk
    return 4 + n, msgpack.unpackb(body, raw=False)


# --- lifetimes ----------------------------------------------------------------

@test("big_replies")
def unread_big_replies_drop_the_client_and_record_each_chat_once():
    """Non-stream replies of ~1.5 MB to a client that never reads, over
    max_output_per_client: the client is dropped while the first chat is
    replying; every chat is recorded exactly once."""
    before = total_requests()
    c = Conn()
    n = 3
    for i in range(n):
        c.request("chat", stream=False,
                  messages=[{"role": "user", "content": "big%d %s [[chunks=1 %s]]" % (i, BIG, SLOW)}])
    got = wait_requests(before + n, 120)
    time.sleep(0.5)
    got = total_requests()
    check(got == before + n, "want %d records, got %d" % (before + n, got))
    alive()
    # the client was dropped: reading ends in EOF, well before all 12 replies
    c.sock.settimeout(30)
    seen = 0
    try:
        while True:
            chunk = c.sock.recv(1 << 20)
            if not chunk:
                break
            seen += len(chunk)
    except OSError:
        pass
    check(seen < n * 1_500_000, "client got %d bytes; it should have been dropped" % seen)


@test("output_limit")
def error_frame_crossing_the_output_limit_does_not_crash():
    """Pings fill the output to just under max_output_per_client, then a
    zero-length frame's error pushes it over: the session is dropped cleanly."""
    limit = int(os.environ["OUTPUT_LIMIT"])
    probe = Conn()
    probe.send_raw(frame({"v": 1, "id": 1, "op": "ping"}))
    ping_len, r = frame_len(probe)
    check(r["type"] == "result", r)
    probe.send_raw(b"\0\0\0\0")
    err_len, r = frame_len(probe)
    check(r["type"] == "error" and r["code"] == "bad_frame", r)
    probe.close()
    ks = [k for k in range(1, limit // ping_len + 1)
          if k * ping_len <= limit < k * ping_len + err_len]
    check(ks, "no ping count fits: ping %d, error %d, limit %d" % (ping_len, err_len, limit))
    k = ks[0]
    c = Conn()
    pings = b"".join(frame({"v": 1, "id": i + 1, "op": "ping"}) for i in range(k))
    c.send_raw(pings + b"\0\0\0\0")
    time.sleep(0.5)
    alive()
    # whatever was written before the drop is whole frames, then EOF
    got = 0
    c.sock.settimeout(10)
    while True:
        chunk = c.sock.recv(65536)
        if not chunk:
            break
        got += len(chunk)
    check(got <= limit + err_len, (got, limit))
    alive()


@test("retired_upstream")
def queued_chats_of_a_renamed_upstream_expire_safely():
    """rpm 1: one chat runs, two wait; the upstream is renamed by a reload and
    the two expire in the retired upstream's queue."""
    before = total_requests()
    c = Conn()
    ids = [c.request("chat", messages=[{"role": "user", "content": "q%d [[chunks=2]]" % i}])
           for i in range(3)]
    time.sleep(0.3)
    conf = os.environ["CONF"]
    text = open(conf).read().replace('name = "fake"', 'name = "renamed"')
    with open(conf, "w") as f:
        f.write(text)
    os.kill(int(os.environ["DAEMON_PID"]), 1)
    ends = {}
    while len(ends) < 3:
        r = c.read()
        check(r is not None, "EOF")
        if r["type"] in ("done", "error"):
            ends[r["id"]] = r
    check(ends[ids[0]]["type"] == "done", ends)
    for i in ids[1:]:
        check(ends[i]["type"] == "error" and ends[i]["code"] == "rate_limited", ends[i])
    time.sleep(0.3)
    alive()
    check(total_requests() == before + 3, "want 3 more records")
    ups = Conn().call("models")["upstreams"]
    check([u["name"] for u in ups] == ["renamed"], ups)


# --- resource limits -------------------------------------------------------

@test("partial_frame")
def half_a_frame_then_silence_is_timed_out():
    c = Conn()
    other = Conn()
    c.send_raw(b"\0\0")  # half a header
    t0 = time.time()
    r = c.read()
    check(r is not None and r["type"] == "error" and r["code"] == "timeout", r)
    check("frame_timeout" in r["message"], r)
    check(c.read() is None, "the connection should be closed")
    check(time.time() - t0 < 10, "took %.1fs" % (time.time() - t0))
    # a client sending whole frames slowly is not affected
    r = other.call("ping")
    check(r["type"] == "result", r)
    time.sleep(1.5)
    r = other.call("ping")
    check(r["type"] == "result", r)


@test("stall")
def a_client_that_stops_reading_frees_its_slot():
    """max_concurrency 1: a stream whose client never reads ends after
    stall_timeout, recorded, and the next chat gets the slot."""
    before = total_requests()
    slow = Conn()
    slow.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    slow.request("chat", messages=[{"role": "user",
                                    "content": "s %s [[chunks=2000]]" % ("abcdefgh " * 200000)}])
    time.sleep(0.5)
    t0 = time.time()
    deltas, end = Conn(timeout=120).chat("next [[chunks=2]]")
    check(end["type"] == "done", end)
    waited = time.time() - t0
    # without the stall timeout it would wait for the upstream timeout (600 s)
    check(waited < 90, "the next chat waited %.1fs" % waited)
    check(wait_requests(before + 2, 10) == before + 2, "want both recorded")
    # the stalled chat ended with a timeout naming the setting
    slow.sock.settimeout(30)
    last = None
    while True:
        r = slow.read()
        if r is None:
            break
        if r["type"] != "delta":
            last = r
            break
    check(last is not None and last["type"] == "error" and last["code"] == "timeout", last)
    check("stall_timeout" in last["message"], last)


@test("output_total")
def clients_together_cannot_buffer_more_than_max_output_total():
    before = total_requests()
    hog = Conn()
    hog.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    for i in range(3):
        hog.request("chat", stream=False,
                    messages=[{"role": "user", "content": "hog%d %s [[chunks=1 %s]]" % (i, BIG, SLOW)}])
    check(wait_requests(before + 3, 120) == before + 3, "want 3 records")
    hog.sock.settimeout(10)
    seen = 0
    while True:
        chunk = hog.sock.recv(1 << 20)
        if not chunk:
            break
        seen += len(chunk)
    check(seen < 3 * 1_500_000, "hog got %d bytes; it should have been dropped" % seen)
    deltas, end = Conn().chat("fine [[chunks=3]]")
    check(end["type"] == "done", end)


def main(group):
    for fn in TESTS[group]:
        fn()
        print("ok %s" % fn.__name__)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
