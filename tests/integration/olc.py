"""A small openllmd client for the integration tests (stdlib + python3-msgpack)."""
import json
import os
import socket
import struct
import sys
import time

import msgpack


class Conn:
    """One connection to the daemon; replies are read frame by frame."""

    def __init__(self, path=None, timeout=30):
        self.path = path or os.environ["OPENLLMD_SOCKET"]
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(timeout)
        self.sock.connect(self.path)
        self.buf = b""
        self.next_id = 1

    def close(self):
        self.sock.close()

    def send_raw(self, data):
        self.sock.sendall(data)

    def send(self, msg):
        body = msgpack.packb(msg, use_bin_type=True)
        self.sock.sendall(struct.pack(">I", len(body)) + body)

    def request(self, op, **fields):
        rid = self.next_id
        self.next_id += 1
        msg = {"v": 1, "id": rid, "op": op}
        msg.update(fields)
        self.send(msg)
        return rid

    def read(self):
        """One reply as a dict, or None at EOF."""
        while True:
            if len(self.buf) >= 4:
                (n,) = struct.unpack(">I", self.buf[:4])
                if len(self.buf) >= 4 + n:
                    body = self.buf[4:4 + n]
                    self.buf = self.buf[4 + n:]
                    return msgpack.unpackb(body, raw=False)
            chunk = self.sock.recv(65536)
            if not chunk:
                return None
            self.buf += chunk

    def until_end(self, rid):
        """Replies for rid up to its done, result or error: (deltas, last)."""
        deltas = []
        while True:
            r = self.read()
            if r is None:
                raise EOFError("connection closed before id %d ended" % rid)
            if r.get("id") != rid:
                continue
            if r["type"] == "delta":
                deltas.append(r)
            else:
                return deltas, r

    def call(self, op, **fields):
        rid = self.request(op, **fields)
        return self.until_end(rid)[1]

    def chat(self, text, **fields):
        msgs = fields.pop("messages", None) or [{"role": "user", "content": text}]
        rid = self.request("chat", messages=msgs, **fields)
        return self.until_end(rid)


def wait(seconds):
    deadline = time.time() + float(seconds)
    while True:
        try:
            c = Conn(timeout=5)
            r = c.call("ping")
            c.close()
            if r.get("type") == "result":
                return 0
        except OSError:
            pass
        if time.time() > deadline:
            print("daemon did not answer on %s" % os.environ.get("OPENLLMD_SOCKET"), file=sys.stderr)
            return 1
        time.sleep(0.05)


def main(argv):
    if argv[0] == "wait":
        return wait(argv[1] if len(argv) > 1 else 10)
    c = Conn()
    if argv[0] == "chat":
        deltas, end = c.chat(argv[1])
        sys.stdout.write("".join(d.get("content", "") for d in deltas))
        print()
        print(json.dumps(end))
        return 0 if end["type"] == "done" else 1
    print(json.dumps(c.call(argv[0])))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
