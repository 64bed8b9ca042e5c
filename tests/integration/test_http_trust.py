"""The HTTP front against a hostile local user, over raw sockets.

Run by http_trust.sh, mostly as another uid than the daemon's (setpriv):
python3 test_http_trust.py GROUP [ARGS...]. HTTP_PORT names the port.
"""
import json
import os
import socket
import sys
import time

PORT = int(os.environ.get("HTTP_PORT", "0"))


def connect():
    return socket.create_connection(("127.0.0.1", PORT), timeout=10)


def read_until_close(s, timeout):
    """Everything the daemon sends until it closes, or raise after timeout seconds."""
    deadline = time.time() + timeout
    out = b""
    while True:
        left = deadline - time.time()
        assert left > 0, ("still open after %ss" % timeout, out[:300])
        s.settimeout(left)
        try:
            b = s.recv(65536)
        except ConnectionResetError:
            return out
        if not b:
            return out
        out += b


def status(answer):
    assert answer.startswith(b"HTTP/1.1 "), answer[:200]
    return int(answer[9:12])


def error_of(answer):
    head, _, body = answer.partition(b"\r\n\r\n")
    return json.loads(body)["error"]


def chat_body(text, size=0):
    body = json.dumps({"model": "fake-model", "messages": [{"role": "user", "content": text}]})
    return (body + " " * max(0, size - len(body))).encode()


def post(body, headers=b"", target=b"/v1/chat/completions"):
    return (b"POST " + target + b" HTTP/1.1\r\nHost: x\r\n" + headers +
            b"Content-Length: %d\r\n\r\n" % len(body) + body)


def request(data, timeout=10):
    s = connect()
    s.sendall(data)
    try:
        return read_until_close(s, timeout)
    finally:
        s.close()


def keep_alive_get(s, path=b"/health"):
    """One request on a kept-alive connection; its whole answer."""
    s.sendall(b"GET " + path + b" HTTP/1.1\r\nHost: x\r\n\r\n")
    s.settimeout(10)
    data = b""
    while b"\r\n\r\n" not in data:
        b = s.recv(65536)
        assert b, data
        data += b
    head, _, rest = data.partition(b"\r\n\r\n")
    n = int([h.split(b":")[1] for h in head.split(b"\r\n") if h.lower().startswith(b"content-length:")][0])
    while len(rest) < n:
        rest += s.recv(65536)
    return status(head), rest


# --- 1. identity ---------------------------------------------------------------

def group_gone(n):
    """Send whole requests and close at once, while the daemon is stopped (SIGSTOP)."""
    for i in range(int(n)):
        s = connect()
        s.sendall(post(chat_body("gone %d" % i)))
        s.close()
    print("sent", flush=True)


def group_keyless():
    """A local client without a key is served as its own uid."""
    answer = request(post(chat_body("who am i"), b"Connection: close\r\n"))
    assert status(answer) == 200, answer[:300]
    print("served", flush=True)


# --- 2. connections ---------------------------------------------------------

def group_hold(n, idle):
    """Hold n connections, idle ones (sent nothing) or kept alive after one request."""
    held = [connect() for _ in range(int(n))]
    if idle == "used":
        for s in held:
            assert keep_alive_get(s)[0] == 200
    print("holding", flush=True)
    deadline = time.time() + 60
    while time.time() < deadline:
        for i, s in enumerate(held):
            s.settimeout(0.05)
            try:
                if s.recv(1) == b"":
                    print("closed %d" % i, flush=True)
                    held[i] = socket.socket()   # reported once
            except (socket.timeout, OSError):
                pass
        time.sleep(0.05)


def group_refused(code):
    """One more connection: answered 503 at once, without a request, and closed."""
    s = connect()
    answer = read_until_close(s, 5)
    assert status(answer) == 503 and error_of(answer)["code"] == code, answer[:300]
    print(error_of(answer)["message"], flush=True)


def group_health():
    s = connect()
    assert keep_alive_get(s)[0] == 200
    s.close()
    print("served", flush=True)


def group_flood(n, seconds):
    """Open n connections (past the descriptors the daemon has), hold them, then close all."""
    held = []
    for _ in range(int(n)):
        try:
            held.append(socket.create_connection(("127.0.0.1", PORT), timeout=2))
        except OSError:
            break
    print("opened %d" % len(held), flush=True)
    time.sleep(float(seconds))
    for s in held:
        s.close()


# --- 3. deadlines -----------------------------------------------------------

def group_slowloris(header_timeout):
    """A header line every half second: closed with 408 at http_header_timeout all the same."""
    t0 = time.time()
    s = connect()
    s.sendall(b"POST /v1/chat/completions HTTP/1.1\r\n")
    out = b""
    while True:
        assert time.time() - t0 < float(header_timeout) + 5, "still open"
        try:
            s.sendall(b"X-Slow: %d\r\n" % int(time.time() * 1000))
        except OSError:
            break
        s.settimeout(0.5)
        try:
            b = s.recv(65536)
            if not b:
                break
            out += b
        except socket.timeout:
            pass
    took = time.time() - t0
    assert status(out) == 408 and error_of(out)["code"] == "request_timeout", out[:300]
    assert float(header_timeout) - 0.5 <= took < float(header_timeout) + 2, took
    print("closed after %.1fs" % took, flush=True)


def group_slow_body(length, deadline):
    """A body of length bytes sent 100 bytes every half second: 408 at its deadline."""
    t0 = time.time()
    s = connect()
    s.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n" %
              int(length))
    out = b""
    while True:
        assert time.time() - t0 < float(deadline) + 5, "still open"
        try:
            s.sendall(b" " * 100)
        except OSError:
            break
        s.settimeout(0.5)
        try:
            b = s.recv(65536)
            if not b:
                break
            out += b
        except socket.timeout:
            pass
    took = time.time() - t0
    assert status(out) == 408 and error_of(out)["code"] == "request_timeout", out[:300]
    assert float(deadline) - 0.5 <= took < float(deadline) + 2, took
    print("closed after %.1fs" % took, flush=True)


# --- 4. memory before authentication ------------------------------------------

def group_wrong_key(n):
    """n connections announce 32 MiB bodies with a wrong key: each is refused before a byte of it."""
    socks = []
    for _ in range(int(n)):
        s = connect()
        s.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\n"
                  b"Authorization: Bearer sk-wrong\r\nContent-Length: 33554432\r\n\r\n")
        socks.append(s)
    for s in socks:
        answer = read_until_close(s, 5)
        assert status(answer) == 401 and error_of(answer)["code"] == "invalid_api_key", answer[:300]
    print("refused %d" % len(socks), flush=True)


def group_inflight(size):
    """Two bodies that do not fit in http_max_inflight_body together: the second gets 503."""
    body = chat_body("big one [[usage=1]]", int(size))
    a = connect()
    a.sendall(post(body)[:-len(body) + 1000])     # headers and the first 1000 bytes
    time.sleep(0.3)
    answer = request(post(chat_body("second", int(size))))
    assert status(answer) == 503 and error_of(answer)["code"] == "server_busy", answer[:300]
    assert b"\r\nRetry-After: 1\r\n" in answer, answer[:300]
    a.sendall(body[1000:])
    a.settimeout(10)
    first = a.recv(65536)
    assert status(first) == 200, first[:300]
    a.close()
    answer = request(post(chat_body("second again", int(size)), b"Connection: close\r\n"))
    assert status(answer) == 200, answer[:300]
    print("503 while the first was read, 200 after", flush=True)


# --- 5. framing ---------------------------------------------------------------

def group_framing():
    body = chat_body("framed")
    smuggled = b"GET /v1/models HTTP/1.1\r\nHost: x\r\n\r\n"
    # two lengths that differ: 400 before anything is read, one answer, closed
    answer = request(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n"
                     b"Content-Length: %d\r\n\r\n" % (len(body), len(body) + len(smuggled)) +
                     body + smuggled)
    assert status(answer) == 400 and b"Content-Length" in answer, answer[:300]
    assert answer.count(b"HTTP/1.1 ") == 1, answer
    # the same length twice is one length
    answer = request(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
                     b"Content-Length: %d\r\nContent-Length: %d\r\n\r\n" % (len(body), len(body)) +
                     body)
    assert status(answer) == 200, answer[:300]
    # a chunked body: 411, and Transfer-Encoding beside Content-Length: 400
    answer = request(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\n"
                     b"Transfer-Encoding: chunked\r\n\r\n%x\r\n" % len(body) + body + b"\r\n0\r\n\r\n")
    assert status(answer) == 411 and error_of(answer)["code"] == "length_required", answer[:300]
    answer = request(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\n"
                     b"Transfer-Encoding: gzip, chunked\r\nContent-Length: %d\r\n\r\n" % len(body) + body)
    assert status(answer) == 400, answer[:300]
    print("framing refused", flush=True)


# --- 6. what a user may see ----------------------------------------------------

def group_visibility():
    """top and stats show this user their own chats and totals, not others'."""
    import olc
    me = os.getuid()
    mine = olc.Conn()
    rid = mine.request("chat", messages=[{"role": "user", "content": "mine [[chunks=4 delay_ms=400]]"}],
                       model="fake-model", stream=True)
    time.sleep(0.5)
    top = olc.Conn().call("top")
    assert top["type"] == "result", top
    chats = top["chats"]
    assert len(chats) == 1 and chats[0]["uid"] == me and "user" not in chats[0], chats
    assert "tag" not in chats[0], chats
    assert [m["model"] for m in top["models"]] == ["fake-model"] and top["models"][0]["in_flight"] == 1, top
    assert top["in_flight"] >= 3, top        # the machine's count, as ping says it
    _, end = mine.until_end(rid)
    assert end["type"] == "done", end
    for by in ("user", "tag", "model"):
        stats = olc.Conn().call("stats", by=by)
        assert stats["total"]["requests"] == 1, stats["total"]
        assert list(stats["by_" + by]) == [{"user": str(me), "tag": "", "model": "fake-model"}[by]], stats
    print("own rows only", flush=True)


GROUPS = {name[6:]: fn for name, fn in globals().items() if name.startswith("group_")}

if __name__ == "__main__":
    GROUPS[sys.argv[1]](*sys.argv[2:])
