# Integration test helpers: a private fake model server and openllmd on a
# private socket in a temp dir, both killed from a trap.
# Source it from a test; top_srcdir and top_builddir come from make check.
set -eu
: "${top_srcdir:?run through make check}" "${top_builddir:?run through make check}"

TEST_DIR=$(mktemp -d "${TMPDIR:-/tmp}/openllmd-test.XXXXXX")
export TEST_DIR
TEST_PIDS=""
TEST_CLEANUP_PATHS=""           # more paths the trap removes (outside TEST_DIR)
# ollmctl keeps conversations and history under XDG_STATE_HOME: never the user's own.
XDG_STATE_HOME="$TEST_DIR/state-home"
export XDG_STATE_HOME
export OPENLLMD_TOKENIZER_DIR="${OPENLLMD_TOKENIZER_DIR:-$top_srcdir/tokenizers}"
export PYTHONPATH="$top_srcdir/tests/integration${PYTHONPATH:+:$PYTHONPATH}"
unset OPEN_LLM_API_BASE OPEN_LLM_API_MODEL OPENLLMD_CONFIG

# A python3 with Debian's python3-msgpack (a pyenv python earlier in PATH may lack it).
PYTHON=""
for p in /usr/bin/python3 python3; do
	if "$p" -c 'import msgpack' 2>/dev/null; then PYTHON=$p; break; fi
done
[ -n "$PYTHON" ] || { echo "python3 with msgpack is needed: apt-get install python3-msgpack" >&2; exit 1; }
export PYTHON

test_cleanup() {
	status=$?
	for p in $TEST_PIDS; do kill -9 "$p" 2>/dev/null || true; done
	wait 2>/dev/null || true
	if [ "$status" -ne 0 ]; then
		for f in "$TEST_DIR"/*.log; do
			[ -f "$f" ] || continue
			echo "---- $f (last 40 lines)"
			tail -n 40 "$f"
		done
	fi
	rm -rf "$TEST_DIR" $TEST_CLEANUP_PATHS
	exit "$status"
}
trap test_cleanup EXIT
trap 'exit 130' INT TERM

# Wait until a file has a first line, at most $2 seconds.
wait_for_line() {
	i=0
	while [ ! -s "$1" ]; do
		i=$((i + 1))
		[ "$i" -le $(($2 * 20)) ] || { echo "timed out waiting for $1" >&2; return 1; }
		sleep 0.05
	done
}

# start_fake_upstream [fake_upstream options...]: sets FAKE_PID, FAKE_PORT, FAKE_URL.
start_fake_upstream() {
	n=$(ls "$TEST_DIR"/fake*.port 2>/dev/null | wc -l)
	out="$TEST_DIR/fake$n.port"
	"$top_builddir/tests/fake_upstream" "$@" > "$out" 2> "$TEST_DIR/fake$n.log" &
	FAKE_PID=$!
	TEST_PIDS="$TEST_PIDS $FAKE_PID"
	wait_for_line "$out" 10
	FAKE_PORT=$(head -n 1 "$out")
	FAKE_URL="http://127.0.0.1:$FAKE_PORT/v1"
	export FAKE_PID FAKE_PORT FAKE_URL
}

# write_config [top-level lines...]: a config with one upstream on the fake server.
# UPSTREAM_EXTRA adds settings inside the upstream group; UPSTREAMS replaces the list.
write_config() {
	CONF="$TEST_DIR/openllmd.conf"
	{
		echo "socket = \"$TEST_DIR/openllmd.sock\";"
		echo "state_dir = \"$TEST_DIR/state\";"
		echo "log_level = \"${LOG_LEVEL:-debug}\";"
		echo "fsync = \"no\";"
		echo "http_listen = ( ${HTTP_LISTEN:-} );"
		for line in "$@"; do echo "$line"; done
		if [ -n "${UPSTREAMS:-}" ]; then
			echo "upstreams = ( $UPSTREAMS );"
		else
			echo "upstreams = ( { name = \"fake\"; base_url = \"$FAKE_URL\"; model = \"fake-model\";"
			echo "  api_key = \"sk-test-secret\";"
			# test defaults, unless UPSTREAM_EXTRA sets them
			for kv in "rpm = 0" "max_concurrency = 0" "retries = 2"; do
				case "${UPSTREAM_EXTRA:-}" in
				*"${kv%% *} ="*) ;;
				*) echo "  $kv;" ;;
				esac
			done
			echo "  ${UPSTREAM_EXTRA:-} } );"
		fi
	} > "$CONF"
	export CONF
}

# start_daemon [top-level config lines...]: sets DAEMON_PID and OPENLLMD_SOCKET.
# DAEMON_WRAP runs the daemon under a command (prlimit, setpriv), which must exec it.
start_daemon() {
	[ -n "${KEEP_CONFIG:-}" ] || write_config "$@"
	OPENLLMD_SOCKET="$TEST_DIR/openllmd.sock"
	export OPENLLMD_SOCKET
	${DAEMON_WRAP:-} "$top_builddir/daemon/openllmd" -f -c "$CONF" >> "$TEST_DIR/daemon.log" 2>&1 &
	DAEMON_PID=$!
	TEST_PIDS="$TEST_PIDS $DAEMON_PID"
	export DAEMON_PID
	$PYTHON -m olc wait 10
}

# stop_daemon [signal]: stop the daemon and wait for it.
stop_daemon() {
	kill "-${1:-TERM}" "$DAEMON_PID" 2>/dev/null || true
	wait "$DAEMON_PID" 2>/dev/null || true
}

fail() {
	echo "FAIL: $*" >&2
	exit 1
}

# The npm clients the tests drive, unmodified, at pinned versions.
NPM_CLIENT_PACKAGES="@anthropic-ai/sdk@1.17.0 @anthropic-ai/claude-code@2.1.337 @openai/codex@0.171.0 openai@7.60.0"

# npm_clients: install NPM_CLIENT_PACKAGES once into a cache outside the build
# tree (OPENLLMD_NPM_CACHE, default ${XDG_CACHE_HOME:-$HOME/.cache}/openllmd-test-npm),
# reused by later runs; sets NPM_CLIENTS (its node_modules), CLAUDE and CODEX.
npm_clients() {
	npm_dir=${OPENLLMD_NPM_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/openllmd-test-npm}
	mkdir -p "$npm_dir" || return 1
	# one install at a time: tests run in parallel
	(
		flock 9
		[ "$(cat "$npm_dir/.installed" 2>/dev/null)" = "$NPM_CLIENT_PACKAGES" ] && exit 0
		rm -f "$npm_dir/.installed"
		# shellcheck disable=SC2086
		npm install --prefix "$npm_dir" --no-save --no-audit --no-fund --silent \
		    $NPM_CLIENT_PACKAGES >&2 || exit 1
		echo "$NPM_CLIENT_PACKAGES" > "$npm_dir/.installed"
	) 9> "$npm_dir/.lock" || return 1
	NPM_CLIENTS="$npm_dir/node_modules"
	# claude's package links its platform's binary in at install; use that binary when it did not
	CLAUDE="$NPM_CLIENTS/.bin/claude"
	"$CLAUDE" --version > /dev/null 2>&1 ||
		CLAUDE="$NPM_CLIENTS/@anthropic-ai/claude-code-linux-x64/claude"
	CODEX="$NPM_CLIENTS/.bin/codex"
	export NPM_CLIENTS CLAUDE CODEX
}
