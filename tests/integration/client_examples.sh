#!/bin/sh
# The examples against a real daemon: examples/chat (libollm), two libollm
# connections in two threads (examples/parallel), and the Python client.
. "$top_srcdir/tests/integration/lib.sh"
start_fake_upstream -q -m fake-model
start_daemon

out="$TEST_DIR/out"

"$top_builddir/examples/chat" "hello from C" > "$out" || fail "examples/chat: exit $?"
head -n 1 "$out" | grep -qx "echo: hello from C" || fail "examples/chat: $(cat "$out")"
grep -q "^\[fake-model: 12 prompt + 4 completion tokens, cost 0.0000\]$" "$out" ||
    fail "examples/chat usage: $(cat "$out")"

# Two threads, each with its own connection, both slow enough to overlap.
"$top_builddir/examples/parallel" "first [[words=20 delay_ms=10]]" \
    "second [[chunks=7 delay_ms=10]]" > "$out" || fail "examples/parallel: exit $?"
grep -qx "1: w1 w2 w3 w4 w5 w6 w7 w8 w9 w10 w11 w12 w13 w14 w15 w16 w17 w18 w19 w20" "$out" ||
    fail "examples/parallel: $(cat "$out")"
grep -qx "2: echo: second" "$out" || fail "examples/parallel: $(cat "$out")"

# The Python client streams a chat and prints the stats.
"$PYTHON" "$top_srcdir/examples/python/ollm_client.py" "hello from Python" > "$out" ||
    fail "ollm_client.py: exit $?"
head -n 1 "$out" | grep -qx "echo: hello from Python" || fail "ollm_client.py: $(cat "$out")"
grep -q "^\[fake-model: 17 prompt + 4 completion tokens, cost 0.0000, [0-9]* ms\]$" "$out" ||
    fail "ollm_client.py usage: $(cat "$out")"
grep -q "^All usage: 4 requests, " "$out" || fail "ollm_client.py stats: $(cat "$out")"
grep -q "^  fake-model  *4 requests" "$out" || fail "ollm_client.py by model: $(cat "$out")"
"$top_builddir/client/ollmctl" stats --json --by tag > "$out"
"$PYTHON" -c '
import json, sys
s = json.load(open(sys.argv[1]))
t = s["by_tag"]["python-example"]
assert (t["requests"], t["prompt_tokens"], t["completion_tokens"]) == (1, 17, 4), t
' "$out" || fail "the Python request is not in the stats"

# Errors come back as errors.
rc=0
"$PYTHON" "$top_srcdir/examples/python/ollm_client.py" "no [[fault=status:400]]" > "$out" 2>&1 || rc=$?
[ "$rc" -eq 1 ] && grep -q "error: upstream_error" "$out" || fail "ollm_client.py error: $rc $(cat "$out")"
rc=0
OPENLLMD_SOCKET="$TEST_DIR/none.sock" "$PYTHON" "$top_srcdir/examples/python/ollm_client.py" hi > "$out" 2>&1 || rc=$?
[ "$rc" -eq 69 ] || fail "ollm_client.py without a daemon: $rc $(cat "$out")"
rc=0
OPENLLMD_SOCKET="$TEST_DIR/none.sock" "$top_builddir/examples/chat" hi > "$out" 2>&1 || rc=$?
[ "$rc" -eq 1 ] && grep -q "daemon unavailable" "$out" || fail "examples/chat without a daemon: $rc $(cat "$out")"
