"""Integration tests of openllmd through its socket, against tests/fake_upstream.

Run by the tests/integration/*.sh scripts after lib.sh started both servers:
    python3 test_daemon.py GROUP
"""
import json
import os
import re
import socket
import struct
import sys
import threading
import time
import urllib.request

import msgpack

from olc import Conn

TESTS = {}


def test(group):
    def register(fn):
        TESTS.setdefault(group, []).append(fn)
        return fn
    return register


def check(cond, what):
    if not cond:
        raise AssertionError(what)


def fake(path):
    url = "http://127.0.0.1:%s%s" % (os.environ["FAKE_PORT"], path)
    with urllib.request.urlopen(url, timeout=10) as r:
        return json.loads(r.read())


def d(**kw):
    """A fake_upstream directive block for a message."""
    return "[[" + " ".join("%s=%s" % (k, v) for k, v in kw.items()) + "]]"


def stats(conn=None, **kw):
    c = conn or Conn()
    r = c.call("stats", **kw)
    check(r["type"] == "result", "stats failed: %r" % r)
    return r


def text_of(deltas):
    return "".join(x.get("content", "") for x in deltas)


# --- basic ------------------------------------------------------------------

@test("basic")
def ping():
    r = Conn().call("ping")
    check(r["type"] == "result", r)
    check(isinstance(r["version"], str) and r["version"], r)
    check(r["uptime_s"] >= 0 and r["in_flight"] >= 0, r)


@test("basic")
def models_lists_upstream_and_server_models():
    r = Conn().call("models")
    ups = r["upstreams"]
    check(len(ups) >= 1, r)
    u = ups[0]
    check(u["name"] == "fake" and u["model"] == "fake-model", u)
    check(u["base_url"].startswith("http://127.0.0.1:"), u)
    check(u["healthy"] is True, u)
    check("fake-model" in u["models"], u)
    check("api_key" not in u and "sk-test-secret" not in json.dumps(r), "key leaked")


@test("basic")
def tokens_counts_match_known_ids():
    c = Conn()
    r = c.call("tokens", text="hello world", ids=True)
    check(r["type"] == "result", r)
    check(r["ids"] == [15339, 1917] and r["count"] == 2, r)
    check(r["encoding"] == "cl100k_base", r)
    r = c.call("tokens", text="hello world", encoding="o200k_base", ids=True)
    check(r["ids"] == [24912, 2375], r)
    r = c.call("tokens", text="<|endoftext|>")
    check(r["count"] > 1, "special token text must be plain text: %r" % r)
    # 3 per message + role + content, + 3 to prime the reply
    r = c.call("tokens", messages=[{"role": "user", "content": "hello world"}])
    check(r["count"] == 3 + 1 + 2 + 3, r)
    r = c.call("tokens", messages=[{"role": "user", "content": "hi", "name": "bob"}])
    check(r["count"] == 3 + 1 + 1 + 1 + 1 + 3, r)
    r = c.call("tokens", text="x", encoding="nope")
    check(r["type"] == "error" and r["code"] == "bad_request", r)


@test("basic")
def chat_streams_deltas_then_done():
    c = Conn()
    deltas, end = c.chat("hello there " + d(chunks=5))
    check(end["type"] == "done", end)
    check(len(deltas) == 5, "want 5 deltas, got %d" % len(deltas))
    check("hello there" in text_of(deltas), text_of(deltas))
    u = end["usage"]
    check(u["completion_tokens"] > 0 and u["prompt_tokens"] > 0, u)
    check(u["total_tokens"] == u["prompt_tokens"] + u["completion_tokens"], u)
    check(u["estimated"] is False, u)
    check(end["upstream"] == "fake" and end["latency_ms"] >= 0 and end["ttft_ms"] >= 0, end)
    check(end["finish_reason"] == "stop", end)
    # what the daemon sent upstream
    s = fake("/stats")
    body = s["last_body"] if isinstance(s["last_body"], dict) else json.loads(s["last_body"])
    check(body["stream"] is True and body["stream_options"]["include_usage"] is True, body)
    check(body["model"] == "fake-model", body)
    check(s["authorization"] == "Bearer sk-test-secret", s)


@test("keys")
def each_request_carries_its_own_key():
    c = Conn()
    for i in range(8):
        model = "model-a" if i % 3 != 1 else "model-b"
        deltas, end = c.chat("key %d " % i + d(chunks=2), model=model, stream=i % 4 != 3)
        check(end["type"] == "done" and end["model"] == model, end)
        s = fake("/stats")
        want = "Bearer sk-key-a" if model == "model-a" else "Bearer sk-key-b"
        check(s["authorization"] == want, (i, model, s["authorization"]))
        body = s["last_body"] if isinstance(s["last_body"], dict) else json.loads(s["last_body"])
        check(body["model"] == model and "key %d" % i in body["messages"][0]["content"], body)


@test("keys")
def prompt_counted_at_the_end_without_budget():
    c = Conn()
    msgs = [{"role": "system", "content": "Be brief."},
            {"role": "user", "content": "count me " + d(chunks=3, usage=0)}]
    want = c.call("tokens", messages=msgs, model="model-a")["count"]
    for stream in (True, False):
        deltas, end = c.chat(None, messages=msgs, model="model-a", stream=stream)
        check(end["type"] == "done", end)
        u = end["usage"]
        check(u["estimated"] is True and u["prompt_tokens"] == want and u["completion_tokens"] > 0, (want, u))
    deltas, end = c.chat("reported " + d(chunks=3), model="model-a")
    check(end["usage"]["estimated"] is False, end)


@test("basic")
def chat_non_stream_returns_content_in_done():
    deltas, end = Conn().chat("plain " + d(chunks=3), stream=False)
    check(end["type"] == "done" and deltas == [], (deltas, end))
    check("plain" in end["content"], end)
    check(end["usage"]["estimated"] is False, end)


@test("basic")
def chat_without_server_usage_is_estimated_with_the_formula():
    c = Conn()
    msg = "count me " + d(usage=0, chunks=4)
    deltas, end = c.chat(msg)
    check(end["type"] == "done", end)
    u = end["usage"]
    check(u["estimated"] is True, u)
    want = c.call("tokens", messages=[{"role": "user", "content": msg}])["count"]
    check(u["prompt_tokens"] == want, (u, want))
    got = c.call("tokens", text=text_of(deltas))["count"]
    check(u["completion_tokens"] == got, (u, got))


@test("basic")
def extra_and_options_reach_the_server():
    c = Conn()
    deltas, end = c.chat("opts", max_tokens=7, temperature=0.5, top_p=0.9, stop=["X", "Y"],
                         seed=42, extra={"response_format": {"type": "json_object"},
                                         "presence_penalty": 0.5})
    check(end["type"] == "done", end)
    s = fake("/stats")
    body = s["last_body"] if isinstance(s["last_body"], dict) else json.loads(s["last_body"])
    check(body["max_tokens"] == 7 and body["temperature"] == 0.5 and body["top_p"] == 0.9, body)
    check(body["stop"] == ["X", "Y"] and body["seed"] == 42, body)
    check(body["response_format"] == {"type": "json_object"} and body["presence_penalty"] == 0.5,
          body)


EXTRA_REFUSED = {"model": "other", "messages": [], "prompt": "p", "stream": False,
                 "stream_options": {"include_usage": False}, "max_tokens": 5000,
                 "max_completion_tokens": 5000, "max_new_tokens": 5000, "n_predict": 5000,
                 "n": 2, "best_of": 3, "user": "someone-else"}


@test("basic")
def extra_may_not_override_what_accounting_relies_on():
    c = Conn()
    before = stats(c)["total"]
    sent = fake("/stats")["chat_requests"]
    for key, value in EXTRA_REFUSED.items():
        deltas, end = c.chat("sneaky", tag="sneaky", extra={"seed": 1, key: value})
        check(end["type"] == "error" and end["code"] == "bad_request", (key, end))
        check("extra." + key in end["message"], (key, end))
    check(fake("/stats")["chat_requests"] == sent, "a refused request reached the server")
    after = stats(c)
    t = after["by_tag"]["sneaky"]
    check(t["requests"] == len(EXTRA_REFUSED) and t["errors"] == len(EXTRA_REFUSED), t)
    check(t["total_tokens"] == 0 and t["cost"] == 0, "never sent, yet counted: %r" % t)
    check(after["total"]["total_tokens"] == before["total_tokens"], (before, after["total"]))
    # removing stream_options (for servers that refuse it) is still allowed
    deltas, end = c.chat("no options", extra={"stream_options": None})
    check(end["type"] == "done", end)
    s = fake("/stats")
    body = s["last_body"] if isinstance(s["last_body"], dict) else json.loads(s["last_body"])
    check("stream_options" not in body, body)


@test("basic")
def max_tokens_beyond_the_bound_is_refused():
    c = Conn()
    sent = fake("/stats")["chat_requests"]
    for n in (2**63 - 1, 16777217):
        deltas, end = c.chat("huge", max_tokens=n)
        check(end["type"] == "error" and end["code"] == "bad_request", end)
        check("max_tokens" in end["message"] and "16777216" in end["message"], end)
    check(fake("/stats")["chat_requests"] == sent, "a refused request reached the server")


@test("basic")
def unknown_model_is_an_error():
    deltas, end = Conn().chat("x", model="no-such-model")
    check(end["type"] == "error" and end["code"] == "unknown_model", end)


@test("basic")
def multiplexed_requests_on_one_connection():
    c = Conn()
    ids = [c.request("chat", messages=[{"role": "user", "content": "m%d-x %s" % (i, d(chunks=3, delay_ms=5))}])
           for i in range(20)]
    ends = {}
    texts = {i: "" for i in ids}
    while len(ends) < len(ids):
        r = c.read()
        check(r is not None, "EOF")
        if r["type"] == "delta":
            texts[r["id"]] += r.get("content", "")
        else:
            ends[r["id"]] = r
    for n, i in enumerate(ids):
        check(ends[i]["type"] == "done", ends[i])
        check(("m%d-x" % n) in texts[i], (i, texts[i]))


@test("basic")
def each_attempt_reads_from_a_clean_state():
    # the state a reply is read into is reused from one request to the next:
    # nothing of the last one shows in the next (finish_reason, usage, text,
    # an event cut in the middle, a large event)
    c = Conn()
    deltas, end = c.chat("long %s" % d(words=50, chunks=50), max_tokens=3)
    check(end["type"] == "done" and end["finish_reason"] == "length", end)
    check(end["usage"]["completion_tokens"] == 3, end)
    deltas, end = c.chat("cut %s" % d(chunks=4, fault="cut_after:2"))
    check(end["type"] == "error", end)
    big = "x" * 40000
    deltas, end = c.chat(big + " " + d(chunks=1))
    check(end["type"] == "done" and text_of(deltas) == "echo: " + big, (end, len(text_of(deltas))))
    for n in range(3):
        deltas, end = c.chat("again%d %s" % (n, d(chunks=3)))
        check(end["type"] == "done" and end["finish_reason"] == "stop", end)
        check(text_of(deltas) == "echo: again%d" % n, text_of(deltas))
        check(end["usage"]["completion_tokens"] == 3, end)


def upstream_connections(pid, port):
    """The daemon's established TCP connections to the model server's port."""
    n = 0
    with open("/proc/%d/net/tcp" % pid) as f:
        next(f)
        for line in f:
            fields = line.split()
            if int(fields[2].split(":")[1], 16) == port and fields[3] == "01":
                n += 1
    return n


@test("basic")
def connections_outlive_a_burst():
    # 40 chats under way at once, ending one by one: each keeps its
    # connection to the model server for the next burst, however few
    # transfers still run when it ends
    c = Conn()
    ids = [c.request("chat", messages=[{"role": "user", "content": "b%d %s" % (i, d(chunks=2, delay_ms=10 + 5 * i))}])
           for i in range(40)]
    ends = {}
    while len(ends) < len(ids):
        r = c.read()
        check(r is not None, "EOF")
        if r["type"] != "delta":
            ends[r["id"]] = r
    check(all(e["type"] == "done" for e in ends.values()), list(ends.values())[:3])
    n = upstream_connections(int(os.environ["DAEMON_PID"]), int(os.environ["FAKE_PORT"]))
    check(n >= 40, "%d connections to the model server kept after 40 at once" % n)


@test("basic")
def hundreds_of_connections():
    errors = []

    def one(n):
        try:
            c = Conn()
            deltas, end = c.chat("conn%d %s" % (n, d(chunks=2)))
            if end["type"] != "done" or ("conn%d" % n) not in text_of(deltas):
                errors.append(end)
            c.close()
        except Exception as e:  # noqa: BLE001
            errors.append(repr(e))

    threads = [threading.Thread(target=one, args=(n,)) for n in range(200)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    check(not errors, errors[:3])


@test("basic")
def cancel_stops_the_stream():
    c = Conn()
    rid = c.request("chat", messages=[{"role": "user", "content": "long " + d(chunks=200, delay_ms=20)}])
    r = c.read()
    check(r["type"] == "delta", r)
    cid = c.request("cancel", target=rid)
    seen_cancel_result = seen_end = False
    while not (seen_cancel_result and seen_end):
        r = c.read()
        if r["id"] == cid:
            check(r["type"] == "result" and r["ok"] is True, r)
            seen_cancel_result = True
        elif r["id"] == rid and r["type"] != "delta":
            check(r["type"] == "error" and r["code"] == "cancelled", r)
            seen_end = True
    r = c.call("cancel", target=999999)
    check(r["type"] == "result" and r["ok"] is False, r)


@test("basic")
def bad_frames_close_only_that_connection():
    other = Conn()
    for raw, code in ((b"\x00\x00\x00\x00", "bad_frame"), (b"\xff\xff\xff\xff", "too_large"),
                      (b"\x00\x00\x00\x03abc", "bad_frame"),
                      (struct.pack(">I", 5) + b"\xdf\xff\xff\xff\xff", "bad_frame")):
        c = Conn()
        c.send_raw(raw)
        r = c.read()
        check(r is not None and r["type"] == "error" and r["id"] == 0, r)
        check(r["code"] == code, (code, r))
        check(c.read() is None, "connection should be closed")
    check(other.call("ping")["type"] == "result", "other client disturbed")


@test("basic")
def schema_errors_keep_the_connection():
    c = Conn()
    c.send({"v": 1, "id": 5, "op": "chat", "messages": "nope"})
    r = c.read()
    check(r["type"] == "error" and r["code"] == "bad_request" and r["id"] == 5, r)
    c.send({"v": 2, "id": 6, "op": "ping"})
    r = c.read()
    check(r["code"] == "unsupported_version" and r["id"] == 6, r)
    c.send({"v": 1, "id": 7, "op": "dance"})
    r = c.read()
    check(r["code"] == "unknown_op" and r["id"] == 7, r)
    check(c.call("ping")["type"] == "result", "connection should live on")


@test("basic")
def disconnect_mid_stream_is_recorded_as_cancelled():
    before = stats()["total"]
    c = Conn()
    c.request("chat", messages=[{"role": "user", "content": "bye " + d(chunks=100, delay_ms=20)}])
    r = c.read()
    check(r["type"] == "delta", r)
    c.close()
    deadline = time.time() + 10
    while time.time() < deadline:
        after = stats()["total"]
        if after["requests"] == before["requests"] + 1:
            break
        time.sleep(0.05)
    check(after["requests"] == before["requests"] + 1, (before, after))
    check(after["errors"] == before["errors"] + 1, (before, after))
    check(after["completion_tokens"] > before["completion_tokens"], "tokens so far not recorded")


@test("basic")
def stats_add_up():
    c = Conn()
    before = stats(c)
    usage = [0, 0]
    for i in range(5):
        deltas, end = c.chat("sum%d %s" % (i, d(chunks=i + 1)), tag="adder")
        check(end["type"] == "done", end)
        usage[0] += end["usage"]["prompt_tokens"]
        usage[1] += end["usage"]["completion_tokens"]
    after = stats(c)
    t0, t1 = before["total"], after["total"]
    check(t1["requests"] - t0["requests"] == 5, (t0, t1))
    check(t1["prompt_tokens"] - t0["prompt_tokens"] == usage[0], (t0, t1, usage))
    check(t1["completion_tokens"] - t0["completion_tokens"] == usage[1], (t0, t1, usage))
    check(after["by_tag"]["adder"]["requests"] == 5, after["by_tag"])
    check(str(os.getuid()) in after["by_user"], after["by_user"])
    check("fake-model" in after["by_model"], after["by_model"])
    bym = stats(c, by="model")
    check(set(bym["by_model"]) == set(after["by_model"]), bym)
    byd = stats(c, by="day")
    check(sum(v["requests"] for v in byd["by_day"].values()) == t1["requests"], byd)


@test("basic")
def reset_by_own_uid_is_allowed():
    c = Conn()
    r = c.call("reset")
    check(r["type"] == "result" and r["ok"] is True, r)
    check(stats(c)["total"]["requests"] == 0, "reset did not start empty")


def rss_kib(pid):
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


@test("basic")
def slow_reader_pauses_the_transfer():
    pid = int(os.environ["DAEMON_PID"])
    c = Conn(timeout=120)
    n = 2000
    rid = c.request("chat", messages=[{"role": "user", "content": "big " + d(words=1000000, chunks=n)}])
    base = rss_kib(pid)
    time.sleep(2.0)          # do not read: the daemon must stop pulling from upstream
    grown = rss_kib(pid) - base
    check(fake("/stats")["in_flight"] == 1, "the upstream finished sending: the transfer was not paused")
    print("  daemon RSS grew %d KiB while the client did not read" % grown)
    with open("/proc/%d/maps" % pid) as f:
        asan = "libasan" in f.read()     # ASan's quarantine keeps freed memory resident
    check(asan or grown < 4 * 1024, "daemon grew %d KiB while the client did not read" % grown)
    deltas, end = c.until_end(rid)
    check(end["type"] == "done", end)
    check(len(deltas) == n, "got %d deltas" % len(deltas))
    check(end["usage"]["completion_tokens"] == n, end["usage"])


# --- faults -------------------------------------------------------------------
# The daemon runs with retries = 2 and idle/first-byte timeouts of 1 s (faults.sh).

def expect_error(msg, code, **fields):
    c = Conn()
    deltas, end = c.chat(msg, **fields)
    check(end["type"] == "error", (deltas, end))
    check(end["code"] == code, end)
    return deltas, end


def still_serving():
    deltas, end = Conn().chat("after " + d(chunks=2))
    check(end["type"] == "done" and "after" in text_of(deltas), end)


@test("faults")
def status_errors_in_each_dialect():
    for dialect in ("openai", "llamacpp", "vllm", "ollama", "tgi"):
        deltas, end = expect_error("bad %s" % d(fault="status:400", dialect=dialect), "upstream_error")
        check(end["status"] == 400, end)
        check(len(end["message"]) > 0 and "400" in end["message"], end)
        check(deltas == [], deltas)
    still_serving()


@test("faults")
def retry_then_success():
    before = fake("/stats")["chat_requests"]
    deltas, end = Conn().chat("flaky " + d(fail_first=2, key="rts", fault="status:503"))
    check(end["type"] == "done", end)
    check(fake("/stats")["chat_requests"] - before == 3, "want 2 failures then success")


@test("faults")
def retry_honours_retry_after():
    t0 = time.time()
    deltas, end = Conn().chat("later " + d(fail_first=1, key="ra", fault="status:429", retry_after=1))
    check(end["type"] == "done", end)
    check(time.time() - t0 >= 0.9, "Retry-After not honoured")


@test("faults")
def retries_exhausted():
    before = fake("/stats")["chat_requests"]
    deltas, end = expect_error("down " + d(fault="status:502", key="ex"), "upstream_error")
    check(end["status"] == 502, end)
    check(fake("/stats")["chat_requests"] - before == 3, "1 try + 2 retries")
    deltas, end = expect_error("slow " + d(fault="status:429", key="ex2"), "rate_limited")
    still_serving()


@test("faults")
def no_retry_on_client_errors():
    for code in (400, 401, 403, 404, 413, 422):
        before = fake("/stats")["chat_requests"]
        expect_error("nope " + d(fault="status:%d" % code, key="nr%d" % code), "upstream_error")
        check(fake("/stats")["chat_requests"] - before == 1, "a %d must not be retried" % code)


@test("faults")
def a_500_is_tried_once_more_unless_retry_after_says():
    # a server's deterministic 500 (a template it cannot render) reaches the user at once
    before = fake("/stats")["chat_requests"]
    t0 = time.time()
    deltas, end = expect_error("jinja " + d(fault="status:500", key="d500"), "upstream_error")
    check(end["status"] == 500, end)
    check(fake("/stats")["chat_requests"] - before == 2, "a 500 is retried once")
    check(time.time() - t0 < 3, "took %.1fs" % (time.time() - t0))
    # one that says when to come back is waited for as often as retries allows
    before = fake("/stats")["chat_requests"]
    deltas, end = expect_error("later " + d(fault="status:500", key="r500", retry_after=0),
                               "upstream_error")
    check(fake("/stats")["chat_requests"] - before == 2, "Retry-After 0 says nothing")
    before = fake("/stats")["chat_requests"]
    deltas, end = Conn().chat("back " + d(fail_first=2, key="b500", fault="status:500", retry_after=1))
    check(end["type"] == "done", end)
    check(fake("/stats")["chat_requests"] - before == 3, "Retry-After honoured past one retry")


@test("faults")
def cut_before_headers_is_retried_then_fails():
    deltas, end = expect_error("cut " + d(fault="cut_before_headers"), "upstream_unavailable")
    still_serving()


@test("faults")
def cut_mid_stream_records_tokens_so_far():
    before = stats()["total"]
    deltas, end = expect_error("cutting " + d(fault="cut_after:3", chunks=10), "upstream_error")
    check(len(deltas) == 3, deltas)
    after = stats()["total"]
    check(after["requests"] == before["requests"] + 1, (before, after))
    check(after["completion_tokens"] > before["completion_tokens"], "tokens so far lost")
    still_serving()


@test("faults")
def stream_without_done_is_an_error():
    deltas, end = expect_error("nodone " + d(fault="no_done", chunks=3), "upstream_error")
    check("DONE" in end["message"], end)
    check(len(deltas) == 3, deltas)


@test("faults")
def errors_inside_the_stream():
    for f in ("error_after:2", "event_error_after:2", "error_field_after:2"):
        for dialect in ("openai", "llamacpp", "vllm", "tgi"):
            deltas, end = expect_error("e %s" % d(fault=f, chunks=6, dialect=dialect), "upstream_error")
            check(len(deltas) == 2, (f, dialect, deltas))
    still_serving()


@test("faults")
def malformed_json_chunk():
    deltas, end = expect_error("mal " + d(fault="malformed_after:2", chunks=5), "upstream_error")
    check("malformed" in end["message"], end)
    deltas, end = expect_error("mal " + d(fault="malformed_after:0"), "upstream_error", stream=False)
    still_serving()


@test("faults")
def drip_one_byte_at_a_time():
    deltas, end = Conn().chat("drip drop " + d(fault="drip", chunks=5))
    check(end["type"] == "done", end)
    check(text_of(deltas) == "echo: drip drop", text_of(deltas))
    check(end["usage"]["estimated"] is False, end)


@test("faults")
def stall_hits_the_idle_timeout():
    t0 = time.time()
    deltas, end = expect_error("stall " + d(fault="stall"), "timeout")
    check("first byte" in end["message"] or "idle" in end["message"], end)
    check(time.time() - t0 < 10, "took too long")
    deltas, end = expect_error("stall " + d(fault="stall_before_headers"), "timeout")
    check("first byte" in end["message"], end)
    still_serving()


@test("faults")
def stall_mid_stream_hits_the_idle_timeout():
    deltas, end = expect_error("gap " + d(chunks=6, fault="stall_after:2"), "timeout")
    check("idle" in end["message"], end)
    check(len(deltas) == 2, deltas)


@test("faults")
def other_clients_undisturbed_during_faults():
    results = []

    def good():
        for i in range(10):
            deltas, end = Conn().chat("good%d %s" % (i, d(chunks=3, delay_ms=10)))
            results.append(end["type"] == "done" and ("good%d" % i) in text_of(deltas))

    t = threading.Thread(target=good)
    t.start()
    for f in ("cut_after:1", "malformed_after:1", "status:500", "no_done"):
        Conn().chat("bad " + d(fault=f, chunks=4))
    t.join()
    check(len(results) == 10 and all(results), results)


@test("faults")
def stats_add_up_after_faults():
    s = stats()
    t = s["total"]
    check(t["requests"] == sum(v["requests"] for v in s["by_model"].values()), s)
    check(t["errors"] == sum(v["errors"] for v in s["by_user"].values()), s)
    check(t["total_tokens"] == t["prompt_tokens"] + t["completion_tokens"], t)


# --- dialects -------------------------------------------------------------------

@test("dialects")
def every_dialect_streams_and_reports_usage():
    for dialect in ("openai", "llamacpp", "vllm", "ollama", "tgi"):
        c = Conn()
        msg = "hi %s %s" % (dialect, d(dialect=dialect, chunks=4))
        deltas, end = c.chat(msg)
        check(end["type"] == "done", (dialect, end))
        check(text_of(deltas) == "echo: hi %s" % dialect, (dialect, text_of(deltas)))
        u = end["usage"]
        check(u["completion_tokens"] == 4 and u["estimated"] is False, (dialect, u))
        check(u["prompt_tokens"] == len(msg.encode()), (dialect, u, len(msg.encode())))
        deltas, end = c.chat(msg, stream=False)
        check(end["type"] == "done" and end["content"] == "echo: hi %s" % dialect, (dialect, end))
        check(end["usage"]["estimated"] is False, (dialect, end))


@test("dialects")
def reasoning_deltas_pass_through():
    for dialect in ("llamacpp", "vllm", "ollama"):
        deltas, end = Conn().chat("think " + d(dialect=dialect, reasoning=3, chunks=2))
        check(end["type"] == "done", end)
        reasoning = "".join(x.get("reasoning", "") for x in deltas)
        check(reasoning.strip() == "r1 r2 r3", (dialect, reasoning))


@test("dialects")
def tool_calls_pass_through():
    for dialect in ("openai", "vllm", "llamacpp"):
        deltas, end = Conn().chat("weather? " + d(dialect=dialect, tools=1))
        check(end["type"] == "done", end)
        calls = [tc for x in deltas for tc in x.get("tool_calls", [])]
        check(calls, (dialect, deltas))
        check(any(tc.get("function", {}).get("name") == "get_weather" for tc in calls), calls)
        check(end["finish_reason"] == "tool_calls", end)
        deltas, end = Conn().chat("weather? " + d(dialect=dialect, tools=1), stream=False)
        check(end["type"] == "done" and end["tool_calls"][0]["function"]["name"] == "get_weather", end)


@test("dialects")
def streams_without_usage_are_estimated():
    for dialect in ("openai", "llamacpp", "vllm", "ollama", "tgi"):
        deltas, end = Conn().chat("est " + d(dialect=dialect, usage=0, chunks=3))
        check(end["type"] == "done", end)
        u = end["usage"]
        if dialect == "llamacpp":
            # llama.cpp reports timings even without usage
            check(u["completion_tokens"] == 3, (dialect, u))
        else:
            check(u["estimated"] is True, (dialect, u))

# --- limits -------------------------------------------------------------------
# limits.sh starts a daemon per group with the settings each needs.

def run_parallel(n, fn):
    out = [None] * n
    def wrap(i):
        try:
            out[i] = fn(i)
        except Exception as e:  # noqa: BLE001
            out[i] = e
    threads = [threading.Thread(target=wrap, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return out


@test("rpm")
def rpm_is_a_token_bucket_observed_at_the_server():
    # rpm = 60: a burst of 60, then one a second
    urllib.request.urlopen(urllib.request.Request(
        "http://127.0.0.1:%s/reset" % os.environ["FAKE_PORT"], method="POST"), timeout=10)
    ends = run_parallel(63, lambda i: Conn(timeout=60).chat("r%d" % i)[1])
    check(all(isinstance(e, dict) and e["type"] == "done" for e in ends), ends[:3])
    arrivals = sorted(fake("/stats")["arrivals_ms"])
    check(len(arrivals) == 63, len(arrivals))
    # a token bucket of 60 refilled at one a second: any window of w ms holds
    # at most 60 + w / 1000 arrivals (20 ms of slack for clock reading)
    for i in range(len(arrivals)):
        for j in range(i + 60, len(arrivals)):
            allowed = 60 + (arrivals[j] - arrivals[i] + 20) // 1000
            check(j - i + 1 <= allowed, "%d arrivals in %d ms" % (j - i + 1, arrivals[j] - arrivals[i]))
    check(arrivals[-1] - arrivals[0] >= 2000, "63 requests in %d ms" % (arrivals[-1] - arrivals[0]))


@test("concurrency")
def max_concurrency_observed_at_the_server():
    urllib.request.urlopen(urllib.request.Request(
        "http://127.0.0.1:%s/reset" % os.environ["FAKE_PORT"], method="POST"), timeout=10)
    ends = run_parallel(12, lambda i: Conn(timeout=60).chat("c%d %s" % (i, d(chunks=4, delay_ms=50)))[1])
    check(all(e["type"] == "done" for e in ends), ends)
    check(fake("/stats")["max_concurrent"] == 3, fake("/stats")["max_concurrent"])


@test("queue")
def full_queue_is_refused_and_expired_waits_are_rate_limited():
    # max_concurrency = 3, queue_max = 2, queue_timeout = 1
    def one(i):
        t0 = time.time()
        deltas, end = Conn(timeout=60).chat("q%d %s" % (i, d(chunks=5, delay_ms=500)))
        return end, time.time() - t0
    out = run_parallel(7, one)
    codes = sorted(e["type"] if e["type"] == "done" else e["code"] for e, _ in out)
    check(codes == ["done"] * 3 + ["rate_limited"] * 4, codes)
    for e, took in out:
        if e["type"] == "error":
            check(e.get("retry_after", 0) > 0, e)
    check(sum(1 for e, took in out if e["type"] == "error" and took < 0.5) == 2, "2 refused at once")
    check(sum(1 for e, took in out if e["type"] == "error" and 0.8 < took < 2.0) == 2, "2 expired after 1 s")


@test("fair")
def waiting_users_are_served_round_robin():
    # max_concurrency = 1: user A queues 6, then user B one; B goes within two turns
    order, lock = [], threading.Lock()
    def a(i):
        deltas, end = Conn(timeout=60).chat("a%d %s" % (i, d(chunks=2, delay_ms=100)))
        with lock:
            order.append("a")
    ta = [threading.Thread(target=a, args=(i,)) for i in range(6)]
    for t in ta:
        t.start()
    time.sleep(0.3)
    import subprocess
    nobody = subprocess.run(["id", "-u", "nobody"], capture_output=True, text=True).stdout.strip()
    b = subprocess.Popen(["setpriv", "--reuid=" + nobody, "--regid=" + nobody, "--clear-groups",
                          os.environ["PYTHON"], "-m", "olc", "chat", "b [[chunks=2 delay_ms=100]]"],
                         stdout=subprocess.DEVNULL)
    b.wait()
    with lock:
        order.append("b")
    for t in ta:
        t.join()
    check(order.index("b") <= 3, order)


@test("budget")
def fifty_racing_spend_the_budget_to_the_last_token_and_never_past_it():
    # ten and a half times the worst case of one request: the old way admitted ten
    c = Conn()
    msg = "budget [[chunks=2 delay_ms=300]]"
    prompt = c.call("tokens", messages=[{"role": "user", "content": msg}])["count"]
    r = c.call("stats")
    b = [x for x in r["budgets"] if x["scope"] == "tag:race"][0]
    per = prompt + 100
    check(b["limit"] == 10 * per + per // 2, (b, per))
    ends = run_parallel(50, lambda i: Conn(timeout=60).chat(msg, tag="race", max_tokens=100)[1])
    done = [e for e in ends if e["type"] == "done"]
    refused = [e for e in ends if e["type"] == "error"]
    check(len(done) + len(refused) == 50, ends)
    check(all(e["code"] == "budget_exceeded" for e in refused), refused[:2])
    # each used its prompt and two tokens: waiting for the others, far more than ten fit
    used_each = done[0]["usage"]["total_tokens"]
    check(len(done) >= min(50, (b["limit"] * 85 // 100) // used_each), "%d done of 50" % len(done))
    b = [x for x in Conn().call("stats")["budgets"] if x["scope"] == "tag:race"][0]
    check(b["used"] <= b["limit"] and b["left"] >= 0, b)
    if refused:
        # refused only once no reply worth sending was left: the prompt and 16 tokens
        check(b["left"] < done[0]["usage"]["prompt_tokens"] + 16, (b, done[0]))
        check(refused[-1]["detail"]["scope"] == "tag:race", refused[-1])
        check("exceeded" not in refused[-1]["message"], refused[-1])
    shrunk = [e for e in done if e.get("budget_shrunk")]
    check(all(e["max_tokens"] < 100 and e["max_tokens_asked"] == 100 for e in shrunk), shrunk)
    check(all(e["max_tokens"] == 100 for e in done if not e.get("budget_shrunk")), done)


@test("budget")
def huge_max_tokens_never_walks_past_an_exhausted_budget():
    # after the race, tag:race has less left than one request needs
    c = Conn()
    sent = fake("/stats")["chat_requests"]
    for n in (2**63 - 1, 2**62, 16777216):
        deltas, end = c.chat("budget [[chunks=2]]", tag="race", max_tokens=n)
        check(end["type"] == "error" and end["code"] in ("budget_exceeded", "bad_request"),
              (n, end))
        if end["code"] == "bad_request":
            check("max_tokens" in end["message"], end)
    check(fake("/stats")["chat_requests"] == sent, "admitted past an exhausted budget")
    b = [x for x in c.call("stats")["budgets"] if x["scope"] == "tag:race"][0]
    check(b["used"] <= b["limit"], b)


@test("budget")
def money_budget_shrinks_then_stops_priced_model_but_not_free_one():
    c = Conn()
    deltas, end = c.chat("pricey [[chunks=2]]", model="priced", max_tokens=10)
    check(end["type"] == "done", end)
    check(end["cost"] > 0, end)
    # worst case of the next: (prompt * 0.01 + 100 * 0.02) / 1000 > what is left of 0.001:
    # it goes with the max_tokens that fits
    deltas, end = c.chat("pricey again", model="priced", max_tokens=100)
    check(end["type"] == "done" and end.get("budget_shrunk") is True, end)
    check(0 < end["max_tokens"] < 100 and end["max_tokens_asked"] == 100, end)
    check(fake("/stats")["last_body"]["max_tokens"] == end["max_tokens"], fake("/stats")["last_body"])
    for i in range(20):
        deltas, end = c.chat("pricey %d" % i, model="priced", max_tokens=100)
        if end["type"] == "error":
            break
    check(end["type"] == "error" and end["code"] == "budget_exceeded", end)
    check(end["detail"]["scope"] == "all" and end["detail"]["unit"] == "money", end)
    check(end["detail"]["fit"] < 16, end)
    deltas, end = c.chat("free", max_tokens=100000)
    check(end["type"] == "done", "a zero-priced model must never be blocked: %r" % end)
    s = c.call("stats")
    check(s["max_budget"] == 0.001 and 0 <= s["budget_left"] < 0.001, s)


@test("failover")
def dead_upstream_fails_over():
    ends = run_parallel(10, lambda i: Conn(timeout=60).chat("fo%d" % i)[1])
    check(all(e["type"] == "done" and e["upstream"] == "live" for e in ends), ends)
    ups = {u["name"]: u for u in Conn().call("models")["upstreams"]}
    check(ups["dead"]["healthy"] is False and ups["live"]["healthy"] is True, ups)


@test("timeout")
def whole_request_timeout():
    deltas, end = Conn().chat("long " + d(chunks=20, delay_ms=200))
    check(end["type"] == "error" and end["code"] == "timeout", end)
    check("whole request" in end["message"], end)

@test("nocalc")
def calc_usage_false_counts_nothing_locally():
    deltas, end = Conn().chat("quiet " + d(usage=0, chunks=3))
    check(end["type"] == "done", end)
    u = end["usage"]
    check(u["prompt_tokens"] == 0 and u["completion_tokens"] == 0 and u["estimated"] is False, u)
    deltas, end = Conn().chat("reported " + d(chunks=3))
    check(end["usage"]["completion_tokens"] == 3, end)

@test("connect")
def connect_timeout():
    t0 = time.time()
    deltas, end = Conn().chat("anyone there")
    check(end["type"] == "error" and end["code"] == "timeout", end)
    check("connect" in end["message"], end)
    check(time.time() - t0 < 5, "took %.1fs" % (time.time() - t0))

# --- hardening: what a client names and sends cannot hurt the daemon ----------

def daemon_is_asan(pid):
    with open("/proc/%d/maps" % pid) as f:
        return "libasan" in f.read()     # ASan's quarantine keeps freed memory resident


def status_kib(pid, field):
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    return 0


def answers_ping_at_once(c):
    t0 = time.time()
    r = c.call("ping")
    check(r["type"] == "result", r)
    check(time.time() - t0 < 2, "ping took %.1fs" % (time.time() - t0))


@test("hardening")
def encoding_is_a_name_never_a_path():
    custom = os.environ["CUSTOM_TOKENIZER"]
    fifo = os.path.join(os.environ["TEST_DIR"], "tokenizer.fifo")
    os.mkfifo(fifo)
    c = Conn(timeout=5)      # a daemon stuck in open() fails the test, not hangs it
    for enc in ("/etc/passwd", "../x", fifo, "nope", "cl100k_base.tiktoken",
                "/dev/zero", os.environ["OPENLLMD_TOKENIZER_DIR"] + "/cl100k_base.tiktoken"):
        r = c.call("tokens", text="hello world", encoding=enc)
        check(r["type"] == "error" and r["code"] == "bad_request", (enc, r))
        check("is not known" in r["message"], (enc, r))
        check("cl100k_base, o200k_base, " + custom in r["message"], (enc, r))
        answers_ping_at_once(c)
    # a second connection is served at once too: nothing blocked the loop
    answers_ping_at_once(Conn(timeout=5))
    # what the configuration names is accepted, by name or through a model
    r = c.call("tokens", text="hello world", encoding=custom, ids=True)
    check(r["type"] == "result" and r["ids"] == [15339, 1917], r)
    r = c.call("tokens", text="hello world", model="custom-model", ids=True)
    check(r["type"] == "result" and r["encoding"] == custom and r["count"] == 2, r)
    r = c.call("tokens", text="hello world", encoding="o200k_base", ids=True)
    check(r["type"] == "result" and r["ids"] == [24912, 2375], r)


@test("hardening")
def nul_is_text_counted_and_sent_upstream():
    c = Conn()
    # tiktoken (npm 1.0.22): encode_ordinary("a\0b") is [64, 188, 65] in both
    r = c.call("tokens", text="a\x00b", ids=True)
    check(r["type"] == "result" and r["ids"] == [64, 188, 65] and r["count"] == 3, r)
    r = c.call("tokens", text="a\x00b", encoding="o200k_base", ids=True)
    check(r["ids"] == [64, 188, 65], r)
    r = c.call("tokens", messages=[{"role": "user", "content": "a\x00b"}])
    check(r["type"] == "result" and r["count"] == 3 + 1 + 3 + 3, r)
    deltas, end = c.chat("a\x00b", tag="nul")
    check(end["type"] == "done", end)
    s = fake("/stats")
    body = s["last_body"] if isinstance(s["last_body"], dict) else json.loads(s["last_body"])
    check(body["messages"][-1]["content"] == "a\x00b", body)
    # the prompt was counted with the NUL: the same as the tokens op says
    # (the fake model server reads its directives up to the NUL)
    deltas, end = c.chat(d(usage=0) + " a\x00b")
    check(end["type"] == "done" and end["usage"]["estimated"] is True, end)
    want = c.call("tokens", messages=[{"role": "user", "content": d(usage=0) + " a\x00b"}])["count"]
    check(want == c.call("tokens", messages=[{"role": "user", "content": d(usage=0) + " a"}])["count"] + 2,
          "the NUL and b are two more tokens: %d" % want)
    check(end["usage"]["prompt_tokens"] == want, (end["usage"], want))
    # names kept in the ledger still refuse NUL
    deltas, end = c.chat("x", tag="t\x00")
    check(end["type"] == "error" and end["code"] == "bad_request", end)
    check("tag: contains a NUL byte" in end["message"], end)


@test("hardening")
def one_frame_of_small_integers_is_refused_cheaply():
    pid = int(os.environ["DAEMON_PID"])
    c = Conn(timeout=30)
    answers_ping_at_once(c)
    rss0, hwm0 = status_kib(pid, "VmRSS"), status_kib(pid, "VmHWM")
    n = 4 * 1024 * 1024 - 128
    body = msgpack.packb({"v": 1, "id": 77, "op": "chat",
                          "messages": [{"role": "user", "content": "x"}],
                          "extra": {"z": [0] * n}}, use_bin_type=True)
    check(len(body) <= 4 * 1024 * 1024, len(body))
    c.send_raw(struct.pack(">I", len(body)) + body)
    r = c.read()
    check(r["type"] == "error" and r["code"] == "too_large" and r["id"] == 77, r)
    check(r["message"].startswith("extra: %d msgpack objects" % (n + 3)), r)
    answers_ping_at_once(c)
    rss1, hwm1 = status_kib(pid, "VmRSS"), status_kib(pid, "VmHWM")
    print("  daemon RSS %d -> %d KiB, peak %d -> %d KiB" % (rss0, rss1, hwm0, hwm1))
    if not daemon_is_asan(pid):
        # unpacked, 4 Mi objects would take some 100 MiB; the frame itself is 4 MiB
        check(rss1 - rss0 < 32 * 1024, "RSS grew %d KiB" % (rss1 - rss0))
        check(hwm1 - hwm0 < 48 * 1024, "peak RSS grew %d KiB" % (hwm1 - hwm0))
    # extra within the object cap but over its own caps, named
    r = c.call("chat", messages=[{"role": "user", "content": "x"}], extra={"z": [0] * 20000})
    check(r["type"] == "error" and r["code"] == "too_large", r)
    check("extra: 20003 msgpack objects, at most 16384" in r["message"], r)
    r = c.call("chat", messages=[{"role": "user", "content": "x"}], extra={"s": "y" * 300000})
    check(r["type"] == "error" and r["code"] == "too_large", r)
    check("extra: " in r["message"] and "at most 262144" in r["message"], r)
    deltas, end = c.chat("still here " + d(chunks=2))
    check(end["type"] == "done", end)

# --- descriptors, per-user caps, identity ---------------------------------------

def nobody_uid():
    import pwd
    return pwd.getpwnam("nobody").pw_uid


def as_user(uid, code):
    """Run python code as uid (setpriv) with olc importable; its stdout as JSON."""
    import subprocess
    out = subprocess.run(["setpriv", "--reuid=%d" % uid, "--regid=%d" % uid, "--clear-groups",
                          os.environ["PYTHON"], "-c", code],
                         capture_output=True, text=True, timeout=120)
    check(out.returncode == 0, "as uid %d: %s" % (uid, out.stderr))
    return json.loads(out.stdout)


def daemon_log():
    with open(os.path.join(os.environ["TEST_DIR"], "daemon.log")) as f:
        return f.read()


def conn_retry():
    """A connection, waiting while the listen queue is full (EAGAIN on a Unix socket)."""
    for i in range(500):
        try:
            return Conn(timeout=60)
        except BlockingIOError:
            time.sleep(0.01)
    raise AssertionError("the listen queue stayed full")


def split_refused(conns, settle=1.0):
    """(kept, refused replies): a refused connection has an error frame and EOF waiting."""
    import select
    time.sleep(settle)
    ready = set(select.select([c.sock for c in conns], [], [], 0)[0])
    kept = [c for c in conns if c.sock not in ready]
    refused = []
    for c in conns:
        if c.sock in ready:
            refused.append(c.read())
            check(c.read() is None, "a refused connection must be closed")
    return kept, refused


@test("descriptors")
def clients_past_the_descriptor_cap_are_refused_and_chats_still_reach_the_server():
    # run under prlimit --nofile=128:256 with max_clients = 1000 and max_concurrency = 16
    log = daemon_log()
    check("descriptor limit 256" in log, "the soft limit was not raised to the hard one")
    check("max_clients 1000 does not fit" in log, "no warning for a max_clients that does not fit")
    cap = int(re.findall(r"accepting up to (\d+) clients", log)[-1])
    check(cap == 256 - 32 - (16 + 2), "cap %d" % cap)
    conns = [conn_retry() for i in range(cap + 40)]
    kept, refused = split_refused(conns)
    check(len(kept) == cap and len(refused) == 40, "%d kept, %d refused" % (len(kept), len(refused)))
    for e in refused:
        check(e["type"] == "error" and e["id"] == 0 and e["code"] == "rate_limited", e)
        check("max_clients" in e["message"], e)
    # many admitted clients chat at once: each reaches the model server
    before = fake("/stats")["chat_requests"]
    ends = run_parallel(60, lambda i: kept[i].chat("fd%d %s" % (i, d(chunks=2, delay_ms=50)))[1])
    check(all(e["type"] == "done" for e in ends), [e for e in ends if e["type"] != "done"][:2])
    check(fake("/stats")["chat_requests"] - before == 60, "chats at the server")
    for c in kept[60:]:
        check(c.call("ping")["type"] == "result", "an idle admitted client is still served")
    # at the cap a fresh connection is refused; once a client leaves there is room again
    fresh = conn_retry()
    r = fresh.read()
    check(r is not None and r["code"] == "rate_limited", r)
    kept[0].close()
    time.sleep(0.3)
    deltas, end = conn_retry().chat("room again")
    check(end["type"] == "done", end)
    for c in kept[1:]:
        c.close()


@test("peruid")
def a_users_connections_past_max_clients_per_uid_are_refused():
    # max_clients_per_uid = 4
    out = as_user(nobody_uid(), """
import json
from olc import Conn
from test_daemon import split_refused
kept, refused = split_refused([Conn() for i in range(6)])
print(json.dumps({"kept": len(kept), "refused": refused,
                  "pings": [c.call("ping")["type"] for c in kept]}))
""")
    check(out["kept"] == 4 and len(out["refused"]) == 2, out)
    for e in out["refused"]:
        check(e["code"] == "rate_limited" and "max_clients_per_uid 4" in e["message"], e)
    check(out["pings"] == ["result"] * 4, out)
    check("uid %d already has 4 connections" % nobody_uid() in daemon_log(), "no log line")
    # root is not held to it
    conns = [Conn() for i in range(8)]
    check(all(c.call("ping")["type"] == "result" for c in conns), "root was refused")


NOBODY_STATS = """
import json
from olc import Conn
c = Conn()
deltas, end = c.chat("from nobody", tag="nb")
print(json.dumps({"end": end, "stats": c.call("stats")}))
"""


@test("identity")
def clients_are_told_apart_by_uid_and_see_only_their_own_rows():
    nb = str(nobody_uid())
    deltas, end = Conn().chat("from root", tag="rt")
    check(end["type"] == "done", end)
    out = as_user(nobody_uid(), NOBODY_STATS)
    check(out["end"]["type"] == "done", out)
    mine = out["stats"]
    check(list(map(str, mine["by_user"])) == [nb], mine["by_user"])
    check(list(mine["by_tag"]) == ["nb"], mine["by_tag"])
    check(mine["total"]["requests"] == 1, "the total is everyone's: %r" % mine["total"])
    check(mine["total"] == mine["by_user"][nb], (mine["total"], mine["by_user"]))
    scopes = [b["scope"] for b in mine["budgets"]]
    check("user:nobody" in scopes and "user:root" not in scopes, scopes)
    everything = stats()
    check(sorted(map(str, everything["by_user"])) == sorted(["0", nb]), everything["by_user"])
    check(everything["by_user"][nb]["requests"] == 1, everything["by_user"])
    check(sorted(everything["by_tag"]) == ["nb", "rt"], everything["by_tag"])
    check(everything["total"]["requests"] == 2, everything["total"])


@test("identity_all")
def stats_visibility_all_shows_everyone_to_everyone():
    out = as_user(nobody_uid(), NOBODY_STATS)
    by_user = sorted(map(str, out["stats"]["by_user"]))
    check(by_user == sorted(["0", str(nobody_uid())]), by_user)
    check(sorted(out["stats"]["by_tag"]) == ["nb", "rt"], out["stats"]["by_tag"])


def main(group):
    passed = failed = 0
    for fn in TESTS[group]:
        t0 = time.time()
        try:
            fn()
            passed += 1
            print("PASS %s (%.2fs)" % (fn.__name__, time.time() - t0), flush=True)
        except Exception as e:  # noqa: BLE001
            failed += 1
            print("FAIL %s: %r" % (fn.__name__, e), flush=True)
    print("%d passed, %d failed" % (passed, failed))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
