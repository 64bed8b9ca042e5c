#!/bin/sh
# The chat API as llama.cpp, vLLM, Ollama, TGI and OpenAI speak it.
. "$top_srcdir/tests/integration/lib.sh"
start_fake_upstream -q -m fake-model
start_daemon
"$PYTHON" "$top_srcdir/tests/integration/test_daemon.py" dialects
stop_daemon TERM
rm -rf "$TEST_DIR/state"
start_daemon 'calc_usage = false;'
"$PYTHON" "$top_srcdir/tests/integration/test_daemon.py" nocalc
