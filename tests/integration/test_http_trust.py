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


GROUPS = {name[6:]: fn for name, fn in globals().items() if name.startswith("group_")}

if __name__ == "__main__":
    GROUPS[sys.argv[1]](*sys.argv[2:])
