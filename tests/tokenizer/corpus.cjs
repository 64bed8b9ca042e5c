// Write the texts the tokenizer is compared on, as records "LENGTH\nBYTES\n".
//
//   node corpus.cjs cases SAMPLES_DIR   hand-picked cases, the sample files,
//                                       and random strings from a fixed seed
//   node corpus.cjs codepoints          code points in contexts that show
//                                       their character class
"use strict";

const fs = require("fs");
const path = require("path");

const records = [];
function add(s) {
	records.push(s);
}

function flush() {
	const parts = [];
	for (const s of records) {
		const b = Buffer.from(s, "utf8");
		parts.push(Buffer.from(b.length + "\n"), b, Buffer.from("\n"));
	}
	process.stdout.write(Buffer.concat(parts));
}

// mulberry32: a small deterministic generator.
let seed = 0x6f6c6c6d;
function random() {
	seed = (seed + 0x6d2b79f5) | 0;
	let t = seed;
	t = Math.imul(t ^ (t >>> 15), t | 1);
	t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
	return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
}
function pick(a) {
	return a[Math.floor(random() * a.length)];
}
function int(lo, hi) {
	return lo + Math.floor(random() * (hi - lo + 1));
}

const unicodeSpaces = ["\u00a0", "\u1680", "\u2000", "\u2001", "\u2002",
    "\u2003", "\u2004", "\u2005", "\u2006", "\u2007", "\u2008", "\u2009",
    "\u200a", "\u2028", "\u2029", "\u202f", "\u205f", "\u3000", "\u0085",
    "\u000b", "\u000c"];
const notSpaces = ["\u180e", "\u200b", "\u200c", "\u200d", "\u2060",
    "\ufeff"];
const emoji = ["\u{1F44D}", "\u{1F44D}\u{1F3FD}",
    "\u{1F468}\u200d\u{1F469}\u200d\u{1F467}\u200d\u{1F466}",
    "\u{1F3F3}\ufe0f\u200d\u{1F308}", "\u{1F1EB}\u{1F1F7}",
    "\u{1F1E9}\u{1F1EA}\u{1F1EF}\u{1F1F5}", "\u2764\ufe0f", "\u270b\u{1F3FF}",
    "\u{1F9D1}\u{1F3FB}\u200d\u{1F4BB}",
    "\u{1F469}\u200d\u2764\ufe0f\u200d\u{1F48B}\u200d\u{1F468}", "\u{1F600}",
    "\u{1F680}", "\u{1F525}", "\u2728", "\u{1F937}\u{1F3FD}\u200d\u2642\ufe0f",
    "#\ufe0f\u20e3", "\u{1F3F4}\u{E0067}\u{E0062}\u{E0073}\u{E0063}\u{E0074}\u{E007F}"];
const marks = ["\u0301", "\u0300", "\u0302", "\u0308", "\u0327", "\u20dd",
    "\u0351", "\u0356", "\u093f", "\u094d", "\u0e31", "\u05b8", "\u0651",
    "\u1ab0", "\u0488"];
const words = ["the", "The", "THE", "hello", "World", "camelCase",
    "XMLHttpRequest", "don", "it", "we", "They", "caf\u00e9", "na\u00efve",
    "\u01c5ungla", "\u02b0ello", "\u00c9COLE", "stra\u00dfe", "\u0391\u03b8\u03ae\u03bd\u03b1",
    "\u041c\u043e\u0441\u043a\u0432\u0430", "\u043f\u0440\u0438\u0432\u0435\u0442",
    "\u0645\u0631\u062d\u0628\u0627", "\u05e9\u05dc\u05d5\u05dd",
    "\u0928\u092e\u0938\u094d\u0924\u0947", "\u0e2a\u0e27\u0e31\u0e2a\u0e14\u0e35",
    "a", "I", "x", "foo_bar", "Zo\u00eb"];
const cjk = ["\u4eca\u5929", "\u5929\u6c14", "\u5f88\u597d", "\u8ba1\u7b97\u673a",
    "\u6f22\u5b57", "\u3072\u3089\u304c\u306a", "\u30ab\u30bf\u30ab\u30ca",
    "\u65e5\u672c\u8a9e", "\ud55c\uad6d\uc5b4", "\uc548\ub155\ud558\uc138\uc694",
    "\u3002", "\uff0c", "\u3001", "\u300c", "\u300d", "\uff01",
    "\u{20000}\u{2A6D6}", "\u3005", "\u30fc"];
const contractions = ["'s", "'t", "'re", "'ve", "'m", "'ll", "'d", "'S",
    "'T", "'RE", "'Re", "'rE", "'VE", "'M", "'LL", "'Ll", "'lL", "'D",
    "'\u017f", "'", "''", "'x", "'r", "'v", "'l", "' s", "\u2019s", "`s"];
const punct = ["!", "?", ".", ",", ";", ":", "...", "!!!", "?!", "-", "--",
    "\u2014", "(", ")", "[", "]", "{", "}", "<", ">", "/", "//", "\\", "|",
    "@", "#", "$", "%", "^", "&", "*", "+", "=", "~", "\"", "_", "\u00a7",
    "\u00ab", "\u00bb", "\u201c", "\u201d", "\u2026", "\u00b7", "\u20ac",
    "\u00a9", "\u2122", "<|endoftext|>", "<|fim_prefix|>", "<|endofprompt|>",
    "</s>", "<s>", "=>", "->", "!=", "==", "/*", "*/", "#!", "\u00bf", "\u00a1"];
const spaces = [" ", " ", " ", "  ", "   ", "    ", "\t", "\t\t", "\n", "\n",
    "\n\n", "\r\n", "\r", "\r\n\r\n", " \n", "\n ", "  \n  ", " \t\n",
    "\n\n\n\n"];

function digits(n) {
	let s = "";
	for (let i = 0; i < n; i++)
		s += String(int(0, 9));
	return s;
}

function atom() {
	const r = random();
	if (r < 0.22)
		return pick(words);
	if (r < 0.38)
		return pick(spaces);
	if (r < 0.48)
		return pick(punct);
	if (r < 0.55)
		return digits(int(1, 12));
	if (r < 0.63)
		return pick(contractions);
	if (r < 0.71)
		return pick(cjk);
	if (r < 0.77)
		return pick(emoji);
	if (r < 0.83)
		return pick(marks);
	if (r < 0.88)
		return pick(unicodeSpaces);
	if (r < 0.90)
		return pick(notSpaces);
	if (r < 0.95)
		return String.fromCharCode(int(0x21, 0x7e));
	// any scalar value of the BMP or the SMP
	let c;
	do
		c = int(0, 0x1ffff);
	while (c >= 0xd800 && c < 0xe000);
	return String.fromCodePoint(c);
}

function cases(samples) {
	const fixed = ["", "a", " ", "  ", "\n", "hello world", "Hello, World!",
	    "<|endoftext|>", "Hello<|endoftext|>world", " <|endoftext|> ",
	    "<|fim_prefix|>x<|fim_middle|>y<|fim_suffix|>z<|endofprompt|>",
	    "I'm", "you're", "we've", "they'll", "he'd", "it's", "don't",
	    "DON'T", "I'LL", "SHE'D", "'S", "'Ll", "'RE", "'ve", "x'Ll",
	    "'ll'll", "''s", "' s", "'x", "'", "''", "'\n", "rock 'n' roll",
	    "'re'", "it'\u017f", "'\u017f", "'\u017ft", "the cat's toys",
	    "CAT'S", "Cat'S", "\u00c9COLE'S", "na\u00efve's", "O'Neil",
	    "rock'n'roll", "'tis", "y'all'd've", "1's", "\u0661's",
	    " 's", "\t's", "\n's", "HelloWorld", "camelCaseString",
	    "XMLHttpRequest", "getHTTPResponseCode", "\u01c5ungla",
	    "\u01c5UNGLA", "\u02b0ello", "a\u02b0B", "ALLCAPS'S", "lower'S",
	    "A\u0301B\u0301c", "\u0301abc", " \u0301", "\u0301", "\u0301\u0301A",
	    "e\u0301", "caf\u00e9", "cafe\u0301", "a\u0300\u0301\u0302",
	    "Z\u0351\u0356", "\u0928\u092e\u0938\u094d\u0924\u0947",
	    "\u0e2a\u0e27\u0e31\u0e2a\u0e14\u0e35",
	    "\u0645\u0631\u062d\u0628\u0627 \u0628\u0627\u0644\u0639\u0627\u0644\u0645",
	    "\u05e9\u05c1\u05b8\u05dc\u05d5\u05b9\u05dd",
	    "!!!\n\n", "...\r\n", "?!\n", "});\n\n", "//\n", "a/b/c\n",
	    "http://x.y/z\n", "path/to/file//\n/", " !\n", "!\r\n\r\n x",
	    "\u00a0", "\u00a0x", "x\u00a0", "\u3000\u3000\u65e5",
	    "a\u2028b", "a\u2029b", "\u0085", "\u180ex", "\u200bx",
	    "\u00b9\u00b2\u00b3", "\u2160\u216b", "\u2460\u2461\u2462\u2463",
	    "\u0661\u0662\u0663\u0664\u0665", "\u0967\u0968\u0969\u096a",
	    "\uff11\uff12\uff13\uff14", "\u{1D7CE}\u{1D7CF}\u{1D7D0}\u{1D7D1}",
	    "\u00bd\u00be", "x\u00b2", "H\u2082O",
	    "\u{10570}\u{10597}", "\u{11F04}\u{11F05}", "\u{105C0}\u{105C1}",
	    "\u{1E6C0}\u{1E6C1}", "\u{323B0}'s", "\u{E0080}'s", "\u{F0000}",
	    "\ufffd", "\ufffe", "\uffff", "\u{10FFFF}", "\u0000", "\u0000\u0001\u001f",
	    "\u007f", "\u0080\u009f"];
	for (const s of fixed)
		add(s);
	for (const e of emoji) {
		add(e);
		add(" " + e);
		add(e + e + "!\n");
		add("a" + e + "b");
	}
	for (let n = 1; n <= 40; n++) {
		add("1234567890123456789012345678901234567890".slice(0, n));
		add(digits(n));
		add("x" + digits(n) + "y");
		add(" " + digits(n) + " ");
		add(digits(n) + "abc");
		add("\u0661".repeat(n));
	}
	for (let n = 1; n <= 24; n++) {
		add(" ".repeat(n));
		add(" ".repeat(n) + "x");
		add("x" + " ".repeat(n) + "y");
		add("x" + " ".repeat(n) + "!");
		add("x" + " ".repeat(n) + "\n" + " ".repeat(n) + "y");
		add("\t".repeat(n) + "x");
		add("\n".repeat(n) + "x");
		add("\r\n".repeat(n));
		add(" \r\n".repeat(n) + " x");
		add(" \n\t".repeat(n) + "!");
		add("!".repeat(n) + "\n".repeat(n) + "x");
	}
	for (const sp of unicodeSpaces.concat(notSpaces)) {
		add(sp);
		add(sp + sp);
		add(sp + "x");
		add("x" + sp + "y");
		add("x" + sp + sp + "y");
		add("x " + sp + "y");
		add("x" + sp + " y");
		add(sp + "\n");
		add("\n" + sp);
		add(sp + "1");
		add(sp + "!");
		add(" " + sp + "\n" + sp + " ");
	}
	for (const c of contractions)
		for (const w of ["x", "X", "abc", "ABC", "1", " ", "\u00e9", "\u4e00"]) {
			add(w + c);
			add(w + c + "a");
			add(w + c + w);
		}

	// Long pieces: letter runs, base64, CJK without punctuation.
	add("a".repeat(3000));
	add("ab".repeat(1500));
	let s = "";
	for (let i = 0; i < 4000; i++)
		s += String.fromCharCode(pick([int(0x41, 0x5a), int(0x61, 0x7a)]));
	add(s);
	const b64 = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
	s = "";
	for (let i = 0; i < 4000; i++)
		s += b64[int(0, 63)];
	add(s);
	s = "";
	for (let i = 0; i < 1500; i++)
		s += String.fromCharCode(int(0x4e00, 0x9fa5));
	add(s);
	add("\u65e5\u672c".repeat(700));
	// Long pieces from few characters: many ties between equal pairs.
	for (let i = 0; i < 200; i++) {
		const set = pick(["ab", "abc", "aab", "aeiou", "AaBb", "xyzzy",
		    "\u4e00\u4e8c\u4e09", "\u65e5\u672c\u8a9e", "\u0430\u0431\u0432",
		    "\u00e9e\u0301"]);
		const chars = Array.from(set);
		let t = "";
		for (let k = int(33, 1500); k > 0; k--)
			t += pick(chars);
		add(t);
	}
	add("\u{1F600}".repeat(300));
	add(" ".repeat(2000) + "x");
	add("\n".repeat(2000));

	// The samples, whole and line by line.
	for (const f of fs.readdirSync(samples).sort()) {
		const text = fs.readFileSync(path.join(samples, f), "utf8");
		add(text);
		for (const line of text.split("\n"))
			add(line);
		add(text.replace(/\n/g, "\r\n"));
	}

	// Random strings.
	for (let i = 0; i < 4000; i++) {
		const n = int(1, i < 3000 ? 24 : 120);
		let t = "";
		for (let k = 0; k < n; k++)
			t += atom();
		add(t);
	}
}

// Code points in contexts where their class shows in the tokens: a
// following contraction sticks to a letter, digits group in threes from a
// number, a run of spaces keeps its last space for what follows unless that
// is a space too, and o200k's case classes split words. All of planes 0, 1
// and 14; every 16th of the CJK planes 2 and 3 (letters and unassigned);
// every 251st of the unassigned and private-use planes. (oracle.cjs classes
// checks every class of every code point.)
function codepoints() {
	const chunk = [];
	for (let c = 0; c < 0x110000; c++) {
		const plane = c >> 16;
		if (c >= 0xd800 && c < 0xe000)
			continue;
		if ((plane === 2 || plane === 3) && c % 16 !== 0)
			continue;
		if (plane > 3 && plane !== 14 && c % 251 !== 0 &&
		    (c & 0xffff) < 0xfffe)
			continue;
		const s = String.fromCodePoint(c);
		chunk.push(s + "'s" + s + "1234|   " + s + "x" + s + "A" + s +
		    "a'S " + s + s + "\n");
		if (chunk.length === 512) {
			add(chunk.join(""));
			chunk.length = 0;
		}
	}
	if (chunk.length > 0)
		add(chunk.join(""));
}

if (process.argv[2] === "cases" && process.argv.length === 4)
	cases(process.argv[3]);
else if (process.argv[2] === "codepoints")
	codepoints();
else {
	console.error("usage: corpus.cjs cases SAMPLES_DIR | codepoints");
	process.exit(64);
}
flush();
