// Turn an encoder of the npm package tiktoken (encoders/NAME.json) into the
// standard .tiktoken format: one "BASE64 RANK" line per token, by rank.
//
//   node tokenizers/convert.cjs encoders/cl100k_base.json cl100k_base.tiktoken
//
// The json's bpe_ranks is either that format already, or the package's
// compressed form (its loader checks the first character): lines of
// "! OFFSET TOKEN TOKEN ...", where the k-th token has rank OFFSET + k.
"use strict";

const fs = require("fs");

if (process.argv.length !== 4) {
	console.error("usage: convert.cjs ENCODER.json OUT.tiktoken");
	process.exit(64);
}
const [src, dst] = process.argv.slice(2);
const ranks = JSON.parse(fs.readFileSync(src, "utf8")).bpe_ranks;
if (typeof ranks !== "string" || ranks.length === 0)
	throw new Error(src + ": no bpe_ranks");

const out = [];
if (ranks[0] === "!") {
	for (const line of ranks.split("\n")) {
		if (line === "")
			continue;
		const parts = line.split(" ");
		const offset = Number(parts[1]);
		if (parts[0] !== "!" || !Number.isInteger(offset) || offset < 0)
			throw new Error(src + ": bad line " + line.slice(0, 40));
		for (let k = 2; k < parts.length; k++)
			out.push(parts[k] + " " + (offset + k - 2) + "\n");
	}
} else {
	for (const line of ranks.split("\n"))
		if (line !== "")
			out.push(line + "\n");
}

const tmp = dst + ".tmp" + process.pid;
fs.writeFileSync(tmp, out.join(""));
fs.renameSync(tmp, dst);
