#!/bin/sh
# make install into a DESTDIR, then run the installed binaries against the fake
# model server; and the service unit's exposure per systemd-analyze.
. "$top_srcdir/tests/integration/lib.sh"
dest="$TEST_DIR/root"
make -C "$top_builddir" install DESTDIR="$dest" >"$TEST_DIR/install.log" 2>&1 || fail "make install failed"
var() { sed -n "s|^$1 = ||p" "$top_builddir/Makefile" | head -n 1; }
prefix=$(var prefix)
unitdir=$(var systemdsystemunitdir | sed "s|\${prefix}|$prefix|; s|\${libdir}|$prefix/lib|")
for f in "$prefix/sbin/openllmd" "$prefix/bin/ollmctl" "$prefix/include/ollm.h" \
	"$prefix/lib/pkgconfig/ollm.pc" "$prefix/share/openllmd/tokenizers/cl100k_base.tiktoken" \
	"$prefix/share/openllmd/tokenizers/o200k_base.tiktoken" \
	"$unitdir/openllmd.service" "$unitdir/openllmd.socket" \
	"$prefix/lib/sysusers.d/openllmd.conf" "$prefix/lib/tmpfiles.d/openllmd.conf" \
	"$prefix/share/man/man8/openllmd.8" "$prefix/share/man/man5/openllmd.conf.5" \
	"$prefix/share/man/man1/ollmctl.1" "$prefix/share/bash-completion/completions/ollmctl" \
	"$prefix/share/zsh/site-functions/_ollmctl" "$prefix/share/fish/vendor_completions.d/ollmctl.fish" \
	"$prefix/share/doc/openllmd/examples/openllmd.conf.example"; do
	[ -e "$dest$f" ] || fail "not installed: $f"
done
grep -q "^ExecStart=$prefix/sbin/openllmd -f" "$dest$unitdir/openllmd.service" || fail "unit ExecStart"

# the installed daemon and client, against the fake model server
start_fake_upstream -q -m fake-model
write_config
export OPENLLMD_TOKENIZER_DIR="$dest$prefix/share/openllmd/tokenizers"
OPENLLMD_SOCKET="$TEST_DIR/openllmd.sock"
export OPENLLMD_SOCKET
# (its state_dir moved here: -t checks that it could be created)
sed "s|\"/var/lib/openllmd\"|\"$TEST_DIR/example-state\"|" \
    "$dest$prefix/share/doc/openllmd/examples/openllmd.conf.example" > "$TEST_DIR/example.conf"
"$dest$prefix/sbin/openllmd" -t -c "$TEST_DIR/example.conf" >/dev/null ||
	fail "the installed example does not load"
"$dest$prefix/sbin/openllmd" -f -c "$CONF" >>"$TEST_DIR/daemon.log" 2>&1 &
DAEMON_PID=$!
TEST_PIDS="$TEST_PIDS $DAEMON_PID"
"$PYTHON" -m olc wait 10 || fail "the installed daemon did not start"
ollmctl="$dest$prefix/bin/ollmctl"
LD_LIBRARY_PATH="$dest$prefix/lib" "$ollmctl" ping >/dev/null || fail "installed ollmctl ping"
out=$(echo "installed" | LD_LIBRARY_PATH="$dest$prefix/lib" "$ollmctl" chat)
[ "$out" = "echo: installed" ] || fail "installed ollmctl chat said: $out"

# a program built against the installed library and header
cc -o "$TEST_DIR/pc" -x c - $(PKG_CONFIG_SYSROOT_DIR="$dest" PKG_CONFIG_PATH="$dest$prefix/lib/pkgconfig" \
	pkg-config --cflags --libs ollm) <<'C' || fail "cannot build against the installed ollm.pc"
#include <ollm.h>
int main(void) { return 0; }
C

if command -v systemd-analyze >/dev/null 2>&1; then
	score=$(systemd-analyze security --offline=true "$dest$unitdir/openllmd.service" 2>&1 |
		sed -n 's/.*Overall exposure level for openllmd.service: \([0-9.]*\).*/\1/p')
	[ -n "$score" ] || fail "systemd-analyze gave no score"
	echo "systemd-analyze security --offline=true openllmd.service: exposure $score"
	awk -v s="$score" 'BEGIN { exit !(s <= 2.0) }' || fail "exposure $score is over 2.0"
fi
echo "install: all checks passed"
