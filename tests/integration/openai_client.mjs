// The official openai npm client against openllmd's HTTP front.
// usage: node openai_client.mjs CHECK
// env: OLLM_BASE_URL, OLLM_KEY, OPENAI_DIR (the installed package's directory).
// Each CHECK prints "ok CHECK", or "FAIL CHECK: why" and exits 1.
import { pathToFileURL } from "node:url";

const { default: OpenAI } = await import(pathToFileURL(`${process.env.OPENAI_DIR}/index.mjs`).href);

const baseURL = process.env.OLLM_BASE_URL;
const apiKey = process.env.OLLM_KEY;
const check = process.argv[2];

function assert(cond, what) {
	if (!cond)
		throw new Error(`${check}: ${what}`);
}

function client(extra = {}) {
	return new OpenAI({ baseURL, apiKey, maxRetries: 0, timeout: 20000, ...extra });
}

const user = (text) => [{ role: "user", content: text }];

const checks = {
	async chat() {
		const r = await client().chat.completions.create({
			model: "fake-model", messages: user("hello there"), max_completion_tokens: 50,
		});
		assert(r.object === "chat.completion", `object ${r.object}`);
		assert(r.choices.length === 1, "one choice");
		assert(r.choices[0].message.role === "assistant", "role");
		assert(r.choices[0].message.content === "echo: hello there",
		    `content ${JSON.stringify(r.choices[0].message.content)}`);
		assert(r.choices[0].finish_reason === "stop", `finish_reason ${r.choices[0].finish_reason}`);
		assert(r.usage.prompt_tokens > 0 && r.usage.completion_tokens > 0 &&
		    r.usage.total_tokens === r.usage.prompt_tokens + r.usage.completion_tokens,
		    `usage ${JSON.stringify(r.usage)}`);
	},

	async stream() {
		const s = await client().chat.completions.create({
			model: "fake-model", messages: user("stream me [[chunks=5]]"), stream: true,
			stream_options: { include_usage: true },
		});
		let text = "", usage = null, finish = null, chunks = 0;
		for await (const ch of s) {
			chunks++;
			assert(ch.object === "chat.completion.chunk", `object ${ch.object}`);
			if (ch.usage) {
				assert(ch.choices.length === 0, "the usage chunk has no choices");
				usage = ch.usage;
				continue;
			}
			text += ch.choices[0].delta.content ?? "";
			if (ch.choices[0].finish_reason)
				finish = ch.choices[0].finish_reason;
		}
		assert(text.startsWith("echo: stream me"), `text ${JSON.stringify(text)}`);
		assert(finish === "stop", `finish ${finish}`);
		assert(usage !== null && usage.completion_tokens > 0, `usage ${JSON.stringify(usage)}`);
		assert(chunks >= 4, `chunks ${chunks}`);
	},

	async stream_without_usage() {
		const s = await client().chat.completions.create({
			model: "fake-model", messages: user("no usage"), stream: true,
		});
		for await (const ch of s)
			assert(!ch.usage, "usage sent without stream_options.include_usage");
	},

	async models() {
		const list = [];
		for await (const m of client().models.list())
			list.push(m.id);
		assert(list.includes("fake-model"), `models ${list}`);
	},

	async unauthorized() {
		try {
			await client({ apiKey: "sk-wrong" }).chat.completions.create({
				model: "fake-model", messages: user("x"),
			});
		} catch (e) {
			assert(e instanceof OpenAI.AuthenticationError, `error ${e}`);
			assert(e.status === 401 && e.code === "invalid_api_key", `status ${e.status} ${e.code}`);
			return;
		}
		assert(false, "a wrong key was accepted");
	},

	async unknown_model() {
		try {
			await client().chat.completions.create({ model: "no-such-model", messages: user("x") });
		} catch (e) {
			assert(e instanceof OpenAI.NotFoundError, `error ${e}`);
			assert(e.code === "unknown_model", `code ${e.code}`);
			return;
		}
		assert(false, "an unknown model was served");
	},

	async bad_request() {
		try {
			await client().chat.completions.create({ model: "fake-model", messages: [] });
		} catch (e) {
			assert(e instanceof OpenAI.BadRequestError, `error ${e}`);
			assert(e.param === "messages", `param ${e.param}`);
			return;
		}
		assert(false, "empty messages were accepted");
	},

	// One slow stream holds the only slot of "narrow" (queue_max 0): the next is refused at once.
	async rate_limited() {
		const c = client();
		const slow = await c.chat.completions.create({
			model: "narrow", messages: user("hold [[chunks=20 delay_ms=100]]"), stream: true,
		});
		const it = slow[Symbol.asyncIterator]();
		await it.next();
		try {
			await c.chat.completions.create({ model: "narrow", messages: user("second") });
			assert(false, "the second request was admitted");
		} catch (e) {
			assert(e instanceof OpenAI.RateLimitError, `error ${e}`);
			assert(e.code === "rate_limited", `code ${e.code}`);
			const ra = e.headers["retry-after"];
			assert(ra !== undefined && Number(ra) >= 1, `Retry-After ${ra}`);
		}
		for (let r = await it.next(); !r.done; r = await it.next())
			;
	},

	// A key whose tag is under a 20-token budget: the prompt leaves less than a reply needs.
	async budget() {
		try {
			await client({ apiKey: process.env.OLLM_KEY_CAPPED }).chat.completions.create({
				model: "fake-model", messages: user("over budget"), max_tokens: 100,
			});
		} catch (e) {
			assert(e.status === 402, `status ${e.status}`);
			assert(e.code === "budget_exceeded", `code ${e.code}`);
			assert(e.error.budget.scope === "tag:capped", `budget ${JSON.stringify(e.error.budget)}`);
			assert(typeof e.error.budget.left === "number", "left");
			assert(typeof e.error.budget.fit === "number", "fit");
			assert(/tag:capped/.test(e.message) && !/exceeded/.test(e.message), `message ${e.message}`);
			return;
		}
		assert(false, "the budget did not refuse");
	},

	// A key's tag is the key's: X-Ollm-Tag may name it, or replace it with tag_override only.
	async tag_fixed() {
		try {
			await client({ defaultHeaders: { "X-Ollm-Tag": "capped" } }).chat.completions.create({
				model: "fake-model", messages: user("escape my tag"), max_tokens: 5,
			});
			assert(false, "a key's tag was replaced");
		} catch (e) {
			assert(e instanceof OpenAI.PermissionDeniedError, `error ${e}`);
			assert(/tag_override/.test(e.message), `message ${e.message}`);
		}
		const same = await client({ defaultHeaders: { "X-Ollm-Tag": "ci" } }).chat.completions.create({
			model: "fake-model", messages: user("my own tag"), max_tokens: 5,
		});
		assert(same.choices[0].message.content.length > 0, "own tag");
		try {
			await client({ apiKey: process.env.OLLM_KEY_OVERRIDE,
			    defaultHeaders: { "X-Ollm-Tag": "capped" } }).chat.completions.create({
				model: "fake-model", messages: user("over budget"), max_tokens: 100,
			});
			assert(false, "tag_override: the tag was not honoured");
		} catch (e) {
			assert(e.status === 402 && e.error.budget.scope === "tag:capped", `error ${e}`);
		}
	},

	// Abort after the first content chunk: the daemon cancels and records the tokens so far.
	async abort() {
		const ac = new AbortController();
		const s = await client().chat.completions.create({
			model: "fake-model", messages: user("abort me [[chunks=50 delay_ms=100]]"), stream: true,
		}, { signal: ac.signal });
		let got = 0;
		try {
			for await (const ch of s) {
				if (ch.choices[0]?.delta?.content)
					got++;
				if (got === 3)
					ac.abort();
			}
		} catch (e) {
			assert(e.name === "AbortError" || e instanceof OpenAI.APIUserAbortError, `error ${e}`);
		}
		assert(got === 3, `got ${got} chunks`);
	},

	async embeddings() {
		const r = await client().embeddings.create({ model: "fake-model", input: ["one", "two words"] });
		assert(r.object === "list" && r.data.length === 2, `data ${JSON.stringify(r).slice(0, 200)}`);
		assert(Array.isArray(r.data[0].embedding) && r.data[0].embedding.length > 0, "vector");
		assert(r.usage.prompt_tokens > 0, `usage ${JSON.stringify(r.usage)}`);
	},

	async completions() {
		const r = await client().completions.create({ model: "fake-model", prompt: "say hi", max_tokens: 20 });
		assert(r.object === "text_completion", `object ${r.object}`);
		assert(typeof r.choices[0].text === "string" && r.choices[0].text.length > 0, "text");
		assert(r.usage.total_tokens > 0, `usage ${JSON.stringify(r.usage)}`);
	},
};

if (!(check in checks)) {
	console.error(`unknown check ${check}; one of ${Object.keys(checks).join(" ")}`);
	process.exit(64);
}
try {
	await checks[check]();
	console.log(`ok ${check}`);
} catch (e) {
	console.error(`FAIL ${check}: ${e.stack ?? e}`);
	process.exit(1);
}
