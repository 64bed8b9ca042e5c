#!/bin/sh
# The C tokenizer agrees with tiktoken (the npm package, run with node): its
# character classes equal those of tiktoken's regular expression engine for
# every code point, and its ids for cl100k_base and o200k_base equal
# tiktoken's on hand-picked cases, the sample texts, random strings from a
# fixed seed, and code points in contexts that show their class. Node and
# the package are required: without them this test fails.
set -eu

srcdir=${top_srcdir:-.}
builddir=${top_builddir:-.}
pkg=${TIKTOKEN_NPM_DIR:-}
[ -n "$pkg" ] || pkg=$srcdir/tokenizers/npm/node_modules/tiktoken
here=$srcdir/tests/tokenizer

if ! command -v node >/dev/null 2>&1; then
	echo "FAIL: node is not installed (apt-get install nodejs)"
	exit 1
fi
if [ ! -f "$pkg/package.json" ]; then
	echo "FAIL: the npm package tiktoken is not in $pkg: run tokenizers/fetch"
	exit 1
fi
OPENLLMD_TOKENIZER_DIR=${OPENLLMD_TOKENIZER_DIR:-$srcdir/tokenizers}
export OPENLLMD_TOKENIZER_DIR
echo "oracle: tiktoken $(node -p "require('$pkg/package.json').version") with node $(node --version)"

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT INT TERM
node "$here/corpus.cjs" cases "$here/samples" > "$tmp/cases"
node "$here/corpus.cjs" codepoints > "$tmp/codepoints"

fail=0
node "$here/oracle.cjs" "$pkg" classes > "$tmp/want" || { echo "FAIL: oracle"; exit 1; }
"$builddir/tests/tokenizer/tokdump" classes > "$tmp/got"
if cmp -s "$tmp/want" "$tmp/got"; then
	echo "ok: classes L N WS UP LO FOLD of all 1112064 code points equal"
else
	fail=1
	echo "FAIL: character classes differ from tiktoken's:"
	diff "$tmp/want" "$tmp/got" | cut -c1-300 | head -20
fi

for enc in cl100k_base o200k_base; do
	for corpus in cases codepoints; do
		node "$here/oracle.cjs" "$pkg" "$enc" "$tmp/$corpus" \
		    > "$tmp/want" || { echo "FAIL: oracle"; exit 1; }
		"$builddir/tests/tokenizer/tokdump" "$enc" "$tmp/$corpus" \
		    > "$tmp/got" || { echo "FAIL: tokdump $enc $corpus"; exit 1; }
		records=$(wc -l < "$tmp/want")
		ids=$(wc -w < "$tmp/want")
		if cmp -s "$tmp/want" "$tmp/got"; then
			echo "ok: $enc $corpus: $records texts, $ids ids equal"
			continue
		fi
		fail=1
		echo "FAIL: $enc $corpus: ids differ from tiktoken's"
		line=$(cmp "$tmp/want" "$tmp/got" | sed -n 's/.* line \([0-9]*\).*/\1/p')
		node -e '
			const b = require("fs").readFileSync(process.argv[1]);
			let p = 0;
			for (let i = 1; p < b.length; i++) {
				const nl = b.indexOf(10, p), n = Number(b.toString("latin1", p, nl));
				if (i == process.argv[2]) {
					console.log("text: " + JSON.stringify(b.toString("utf8", nl + 1, nl + 1 + n)).slice(0, 2000));
					break;
				}
				p = nl + 1 + n + 1;
			}' "$tmp/$corpus" "$line"
		echo "want: $(sed -n "${line}p" "$tmp/want" | cut -c1-2000)"
		echo "got:  $(sed -n "${line}p" "$tmp/got" | cut -c1-2000)"
	done
done
exit $fail
