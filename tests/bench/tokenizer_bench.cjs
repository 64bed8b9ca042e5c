// The tiktoken side of tests/bench/tokenizer.sh, and its input texts.
//
//   node tokenizer_bench.cjs gen SAMPLES_DIR OUT_DIR
//       english.txt (4 MiB) and cjk.txt (2 MiB) of sentences drawn with a
//       fixed seed from the samples; the 1 MiB worst cases letters.txt (one
//       letter), alpha.txt (random letters), base64.txt, han.txt (random
//       Han characters, no punctuation)
//   node tokenizer_bench.cjs run TIKTOKEN_PACKAGE_DIR ENCODING FILE [SECONDS]
"use strict";

const fs = require("fs");
const path = require("path");

let seed = 0x62656e63;
function random() {
	seed = (seed + 0x6d2b79f5) | 0;
	let t = seed;
	t = Math.imul(t ^ (t >>> 15), t | 1);
	t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
	return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
}
function int(lo, hi) {
	return lo + Math.floor(random() * (hi - lo + 1));
}

// Paragraphs of sentences drawn from text until size bytes.
function drawn(text, size, joiner) {
	const sentences = text.split("\n").filter((l) => l !== "")
	    .flatMap((l) => l.match(/[^.!?。！？]+[.!?。！？]*\s*/gu))
	    .map((s) => s.trim()).filter((s) => s !== "");
	const out = [];
	let bytes = 0, k = 0;
	while (bytes < size) {
		const s = sentences[int(0, sentences.length - 1)];
		out.push(s, ++k % 6 === 0 ? "\n\n" : joiner);
		bytes += Buffer.byteLength(s) + 1;
	}
	return out.join("");
}

function gen(samples, dir) {
	const MiB = 1 << 20;
	const en = fs.readFileSync(path.join(samples, "english.txt"), "utf8");
	const cjk = fs.readFileSync(path.join(samples, "cjk.txt"), "utf8");
	fs.writeFileSync(path.join(dir, "english.txt"), drawn(en, 4 * MiB, " "));
	fs.writeFileSync(path.join(dir, "cjk.txt"), drawn(cjk, 2 * MiB, ""));
	fs.writeFileSync(path.join(dir, "letters.txt"), "a".repeat(MiB));
	const letters = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
	const b64 = letters + "0123456789+/";
	let a = [], b = [], h = [];
	for (let i = 0; i < MiB; i++) {
		a.push(letters[int(0, 51)]);
		b.push(b64[int(0, 63)]);
	}
	for (let i = 0; i < MiB / 3; i++)
		h.push(String.fromCharCode(int(0x4e00, 0x9fa5)));
	fs.writeFileSync(path.join(dir, "alpha.txt"), a.join(""));
	fs.writeFileSync(path.join(dir, "base64.txt"), b.join(""));
	fs.writeFileSync(path.join(dir, "han.txt"), h.join(""));
}

function run(pkg, encoding, file, seconds) {
	const { get_encoding } = require(path.resolve(pkg));
	const enc = get_encoding(encoding);
	const text = fs.readFileSync(file, "utf8");
	const bytes = Buffer.byteLength(text);
	let n = enc.encode_ordinary(text).length;	// warm up
	let best = Infinity, total = 0, runs = 0;
	do {
		const t0 = process.hrtime.bigint();
		n = enc.encode_ordinary(text).length;
		const s = Number(process.hrtime.bigint() - t0) / 1e9;
		best = Math.min(best, s);
		total += s;
		runs++;
	} while (total < seconds);
	console.log("bytes=" + bytes + " tokens=" + n + " runs=" + runs +
	    " best_s=" + best.toFixed(6) + " mb_s=" + (bytes / best / 1e6).toFixed(2) +
	    " tokens_s=" + (n / best).toFixed(0));
	enc.free();
}

if (process.argv[2] === "gen" && process.argv.length === 5)
	gen(process.argv[3], process.argv[4]);
else if (process.argv[2] === "run" && process.argv.length >= 6)
	run(process.argv[3], process.argv[4], process.argv[5],
	    Number(process.argv[6] || 2));
else {
	console.error("usage: tokenizer_bench.cjs gen SAMPLES_DIR OUT_DIR\n" +
	    "       tokenizer_bench.cjs run PACKAGE_DIR ENCODING FILE [SECONDS]");
	process.exit(64);
}
