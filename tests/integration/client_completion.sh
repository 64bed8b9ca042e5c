#!/bin/sh
# The shell completions (bash, zsh, fish) know every command and every long
# option that `ollmctl --help` and `ollmctl COMMAND --help` list.
. "$top_srcdir/tests/integration/lib.sh"
OLLMCTL="$top_builddir/client/ollmctl"
bash_c="$top_srcdir/systemd/ollmctl"
zsh_c="$top_srcdir/systemd/_ollmctl"
fish_c="$top_srcdir/systemd/ollmctl.fish"

bash -n "$bash_c" || fail "bash completion: syntax"
! command -v zsh > /dev/null || zsh -n "$zsh_c" || fail "zsh completion: syntax"
! command -v fish > /dev/null || fish -n "$fish_c" || fail "fish completion: syntax"

cmds=$("$OLLMCTL" --help | sed -n 's/^  \([a-z]*\)  .*/\1/p')
[ -n "$cmds" ] || fail "no commands in --help"
for c in $cmds; do
	grep -qw "$c" "$bash_c" || fail "bash completion lacks the command $c"
	grep -q "'$c:" "$zsh_c" || fail "zsh completion lacks the command $c"
	grep -q -- "-a $c " "$fish_c" || fail "fish completion lacks the command $c"
	for o in $("$OLLMCTL" "$c" --help | grep -o -- '--[a-z][a-z-]*' | sort -u); do
		[ "$o" = --help ] && continue
		grep -q -- "$o\\b" "$bash_c" || fail "bash completion lacks $c $o"
		grep -q -- "$o[]=[}]" "$zsh_c" || fail "zsh completion lacks $c $o"
		grep -q -- "-l ${o#--}\\b" "$fish_c" || fail "fish completion lacks $c $o"
	done
done
for o in --socket --version; do
	grep -q -- "$o" "$bash_c" && grep -q -- "$o" "$zsh_c" && grep -q -- "-l ${o#--}" "$fish_c" ||
		fail "a completion lacks $o"
done
echo "client_completion: all checks passed"
