// The reference: tiktoken (the npm package's WASM build) run with node.
//
//   node oracle.cjs PACKAGE_DIR ENCODING CORPUS
//       encode_ordinary of each record "LENGTH\nBYTES\n" of CORPUS, one line
//       of ids per record
//   node oracle.cjs PACKAGE_DIR classes
//       the code points in each character class the split patterns use, as
//       tiktoken's own regular expression engine sees them: with a
//       vocabulary of the 256 bytes and the class as the pattern, encoding
//       every code point gives back exactly the bytes of those that match
"use strict";

const fs = require("fs");
const path = require("path");

// Name and pattern of each class, as tests/tokenizer/tokdump.c prints them.
const CLASSES = [
	["L", "\\p{L}"],
	["N", "\\p{N}"],
	["WS", "\\s"],
	["UP", "[\\p{Lu}\\p{Lt}\\p{Lm}\\p{Lo}\\p{M}]"],
	["LO", "[\\p{Ll}\\p{Lm}\\p{Lo}\\p{M}]"],
	["FOLD", "(?i:s|t|m|d|r|v|e|l)"],
];

// "NAME A-B C-D ..." for the sorted code points cps (hex).
function ranges(name, cps) {
	const out = [name];
	for (let i = 0; i < cps.length;) {
		let j = i;
		while (j + 1 < cps.length && cps[j + 1] === cps[j] + 1)
			j++;
		out.push(cps[i].toString(16) + "-" + cps[j].toString(16));
		i = j + 1;
	}
	return out.join(" ") + "\n";
}

function classes(tiktoken) {
	const lines = [];
	for (let b = 0; b < 256; b++)
		lines.push(Buffer.from([b]).toString("base64") + " " + b);
	const bytes = lines.join("\n") + "\n";
	const all = [];
	for (let c = 0; c < 0x110000; c++)
		if (c < 0xd800 || c >= 0xe000)
			all.push(String.fromCodePoint(c));
	const text = all.join("");
	const out = [];
	for (const [name, pattern] of CLASSES) {
		const enc = new tiktoken.Tiktoken(bytes, {}, pattern);
		const matched = Buffer.from(enc.encode_ordinary(text)).toString();
		enc.free();
		out.push(ranges(name, Array.from(matched, (ch) => ch.codePointAt(0))));
	}
	process.stdout.write(out.join(""));
}

function encode(tiktoken, encoding, file) {
	const enc = tiktoken.get_encoding(encoding);
	const decoder = new TextDecoder("utf-8", { fatal: true, ignoreBOM: true });
	const buf = fs.readFileSync(file);
	const out = [];

	for (let p = 0; p < buf.length;) {
		const nl = buf.indexOf(10, p);
		const len = Number(buf.toString("latin1", p, nl));
		const text = decoder.decode(buf.subarray(nl + 1, nl + 1 + len));
		out.push(Array.from(enc.encode_ordinary(text)).join(" ") + "\n");
		p = nl + 1 + len + 1;
	}
	enc.free();
	process.stdout.write(out.join(""));
}

const argv = process.argv.slice(2);
if (argv.length === 2 && argv[1] === "classes")
	classes(require(path.resolve(argv[0])));
else if (argv.length === 3)
	encode(require(path.resolve(argv[0])), argv[1], argv[2]);
else {
	console.error("usage: oracle.cjs PACKAGE_DIR ENCODING CORPUS\n" +
	    "       oracle.cjs PACKAGE_DIR classes");
	process.exit(64);
}
