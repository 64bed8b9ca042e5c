#!/bin/sh
# make bench: the C tokenizer against tiktoken (the npm package, its WASM
# build run with node) on the same English and CJK texts, with the ratio;
# load time and memory of each vocabulary; and the 1 MiB worst cases (one
# piece of letters, base64, Han characters without punctuation).
# BENCH_SECONDS sets how long each measure repeats (default 2).
set -eu

srcdir=${top_srcdir:-.}
builddir=${top_builddir:-.}
pkg=${TIKTOKEN_NPM_DIR:-}
[ -n "$pkg" ] || pkg=$srcdir/tokenizers/npm/node_modules/tiktoken
bench=$builddir/tests/bench/tokenizer_bench
js=$srcdir/tests/bench/tokenizer_bench.cjs
seconds=${BENCH_SECONDS:-2}
OPENLLMD_TOKENIZER_DIR=${OPENLLMD_TOKENIZER_DIR:-$srcdir/tokenizers}
export OPENLLMD_TOKENIZER_DIR

if ! command -v node >/dev/null 2>&1; then
	echo "tokenizer bench: node is needed to make the texts" >&2
	exit 1
fi
oracle=yes
[ -f "$pkg/package.json" ] || oracle=no

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT INT TERM
node "$js" gen "$srcdir/tests/tokenizer/samples" "$tmp"
head -c 16384 "$tmp/letters.txt" > "$tmp/letters16k.txt"
head -c 65536 "$tmp/letters.txt" > "$tmp/letters64k.txt"

# The value of key in a line of key=value fields.
field() {
	echo "$2" | tr ' ' '\n' | sed -n "s/^$1=//p"
}

echo "tokenizer: $(nproc) cores; tiktoken: $oracle ($pkg)"
for enc in cl100k_base o200k_base; do
	load=$("$bench" load "$enc")
	echo "$enc: load $(field load_ms "$load") ms," \
	    "RSS $(field rss_kib "$load") KiB after load" \
	    "($(field rss_added_kib "$load") KiB for the vocabulary)"
	for text in english cjk; do
		c=$("$bench" run "$enc" "$tmp/$text.txt" "$seconds")
		if [ $oracle = yes ]; then
			t=$(node "$js" run "$pkg" "$enc" "$tmp/$text.txt" "$seconds")
			if [ "$(field tokens "$c")" != "$(field tokens "$t")" ]; then
				echo "  $text: token counts differ: $c / $t"
				exit 1
			fi
		else
			t="mb_s=0 tokens_s=0"
		fi
		echo "$text $(field bytes "$c") $(field tokens "$c")" \
		    "$(field mb_s "$c") $(field tokens_s "$c")" \
		    "$(field mb_s "$t") $(field tokens_s "$t")" | awk '{
			printf "  %-8s %8d bytes %8d tokens: C %7.1f MB/s %6.2f Mtok/s;", $1, $2, $3, $4, $5 / 1e6
			if ($6 > 0)
				printf " tiktoken %5.1f MB/s %5.2f Mtok/s; ratio %.1fx\n", $6, $7 / 1e6, $4 / $6
			else
				printf " tiktoken not installed\n"
		}'
	done
	for text in letters alpha base64 han; do
		c=$("$bench" run "$enc" "$tmp/$text.txt" 1)
		echo "  1 MiB worst case $text: $(field best_s "$c") s," \
		    "$(field tokens "$c") tokens"
	done
	if [ $oracle = yes ]; then
		for size in 16k 64k; do
			c=$("$bench" run "$enc" "$tmp/letters$size.txt" 0)
			t=$(node "$js" run "$pkg" "$enc" "$tmp/letters$size.txt" 0)
			echo "  $size of one letter: C $(field best_s "$c") s," \
			    "tiktoken $(field best_s "$t") s"
		done
	fi
done
