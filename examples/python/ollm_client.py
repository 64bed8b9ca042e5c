#!/usr/bin/env python3
"""A whole openllmd client: stream one chat, then print the usage stats.

    python3 ollm_client.py "Why is the sky blue?"

It needs the standard library and msgpack (Debian: python3-msgpack). The
protocol (protocol/PROTOCOL.md) is small: a frame is a 4-byte big-endian
length and one msgpack map; a request carries v, id and op; every reply
carries the id it answers and a type (delta, done, result, error, or status
for a chat that asked for status frames).
"""
import os
import socket
import struct
import sys

import msgpack


def socket_path():
    """The daemon's socket, found the way ollmctl finds it."""
    if os.environ.get("OPENLLMD_SOCKET"):
        return os.environ["OPENLLMD_SOCKET"]
    system = "/run/openllmd/openllmd.sock"
    if os.geteuid() == 0:
        return system
    runtime = os.environ.get("XDG_RUNTIME_DIR", "")
    if runtime.startswith("/"):
        user = runtime + "/openllmd.sock"
    else:
        user = "/tmp/openllmd-%d/openllmd.sock" % os.geteuid()
    return system if not os.path.exists(user) and os.path.exists(system) else user


class OllmError(Exception):
    def __init__(self, reply):
        super().__init__("%s: %s" % (reply["code"], reply.get("message", "")))
        self.code = reply["code"]
        self.retry_after = reply.get("retry_after")


class Client:
    def __init__(self, path=None):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.connect(path or socket_path())
        self.buf = b""
        self.last_id = 0

    def send(self, op, **fields):
        """Send one request; returns its id."""
        self.last_id += 1
        body = msgpack.packb(dict(v=1, id=self.last_id, op=op, **fields))
        self.sock.sendall(struct.pack(">I", len(body)) + body)
        return self.last_id

    def receive(self):
        """The next reply, whichever request it answers."""
        while len(self.buf) < 4 or len(self.buf) < 4 + struct.unpack(">I", self.buf[:4])[0]:
            data = self.sock.recv(65536)
            if not data:
                raise ConnectionError("the daemon closed the connection")
            self.buf += data
        (n,) = struct.unpack(">I", self.buf[:4])
        body, self.buf = self.buf[4:4 + n], self.buf[4 + n:]
        return msgpack.unpackb(body)

    def reply_to(self, rid):
        """The next reply for request rid; an error reply raises."""
        while True:
            r = self.receive()
            if r["type"] == "error" and r["id"] in (rid, 0):
                raise OllmError(r)
            if r["id"] == rid:
                return r

    def call(self, op, **fields):
        """A request answered by one result: stats, models, ping, tokens."""
        return self.reply_to(self.send(op, **fields))

    def chat(self, messages, on_text, **options):
        """Stream a chat: on_text gets each piece; returns the done reply.
        Ctrl-C sends a cancel, and the daemon stops the model server."""
        rid = self.send("chat", messages=messages, status=True, **options)
        try:
            while True:
                r = self.reply_to(rid)
                if r["type"] == "done":
                    return r
                if r["type"] == "delta":
                    on_text(r.get("content", ""))
                elif r["type"] == "status":
                    # why it waits: a rate limit, or a retry of the model server
                    print("[%s: %s]" % (r["state"], r["message"]), file=sys.stderr)
                # any other type is newer than this client: skipped
        except KeyboardInterrupt:
            self.send("cancel", target=rid)
            raise


def main():
    question = " ".join(sys.argv[1:]) or "Say hello."
    try:
        client = Client()
    except OSError as e:
        print("cannot connect to %s: %s" % (socket_path(), e.strerror), file=sys.stderr)
        return 69

    def show(text):
        sys.stdout.write(text)
        sys.stdout.flush()

    try:
        done = client.chat([{"role": "user", "content": question}], show,
                           tag="python-example", max_tokens=512)
        print()
        u = done["usage"]
        print("[%s: %d prompt + %d completion tokens%s, cost %.4f, %s ms]" % (
            done.get("model", "?"), u["prompt_tokens"], u["completion_tokens"],
            " (estimated)" if u["estimated"] else "", done["cost"],
            done.get("latency_ms", "?")))

        stats = client.call("stats")
        print("All usage: %d requests, %d tokens, cost %.4f" % (
            stats["total"]["requests"], stats["total"]["total_tokens"],
            stats["total"]["cost"]))
        for model, c in sorted(stats["by_model"].items()):
            print("  %-24s %6d requests %10d tokens" % (model, c["requests"], c["total_tokens"]))
        if stats["budget_left"] is not None:
            print("Budget left: %.4f of %.4f" % (stats["budget_left"], stats["max_budget"]))
    except OllmError as e:
        print("\nerror: %s" % e, file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("\n[stopped]", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
