#!/bin/sh
# What a client names or sends cannot make openllmd open a file, hang or
# swell: encodings are names, NUL is text, one frame is bounded in objects.
. "$top_srcdir/tests/integration/lib.sh"
start_fake_upstream -m fake-model -m custom-model
# a tokenizer the configuration names by its absolute path
CUSTOM_TOKENIZER="$TEST_DIR/custom.tiktoken"
ln -s "$(cd "$OPENLLMD_TOKENIZER_DIR" && pwd)/cl100k_base.tiktoken" "$CUSTOM_TOKENIZER"
export CUSTOM_TOKENIZER
export UPSTREAMS="{ name = \"fake\"; base_url = \"$FAKE_URL\"; model = \"fake-model\"; rpm = 0; max_concurrency = 0; },
  { name = \"custom\"; base_url = \"$FAKE_URL\"; model = \"custom-model\"; rpm = 0; max_concurrency = 0;
    tokenizer = \"$CUSTOM_TOKENIZER\"; }"
start_daemon
"$PYTHON" "$top_srcdir/tests/integration/test_daemon.py" hardening
