// The official @anthropic-ai/sdk against a server speaking Anthropic's Messages API.
// usage: node anthropic_client.mjs CHECK...
// env: OLLM_BASE_URL (without /v1), OLLM_KEY, ANTHROPIC_SDK_DIR (the installed package's directory).
// Replies follow the fake model server's directives ("[[words=5]]", "[[tools=1]]",
// "[[reasoning=2]]"). Each CHECK prints "ok CHECK", or "FAIL CHECK: why" and exits 1.
import { pathToFileURL } from "node:url";

const { default: Anthropic } = await import(
	pathToFileURL(`${process.env.ANTHROPIC_SDK_DIR}/index.mjs`).href);

const baseURL = process.env.OLLM_BASE_URL;
const apiKey = process.env.OLLM_KEY;
let check = "";

function assert(cond, what) {
	if (!cond)
		throw new Error(`${check}: ${what}`);
}

function client(extra = {}) {
	return new Anthropic({ baseURL, apiKey, maxRetries: 0, timeout: 20000, ...extra });
}

const user = (text) => [{ role: "user", content: text }];
const model = "fake-model";
const weather = {
	name: "get_weather", description: "The weather in a city",
	input_schema: { type: "object", properties: { location: { type: "string" },
	    unit: { type: "string" } }, required: ["location"] },
};

// The text of a Message's text blocks.
const text = (m) => m.content.filter((b) => b.type === "text").map((b) => b.text).join("");

// Whether a Message is well formed, as the SDK types say.
function wellFormed(m) {
	assert(m.type === "message" && m.role === "assistant", `type ${m.type} role ${m.role}`);
	assert(typeof m.id === "string" && m.id.startsWith("msg_"), `id ${m.id}`);
	assert(Array.isArray(m.content), "content");
	assert(Number.isInteger(m.usage.input_tokens) && m.usage.input_tokens > 0,
	    `usage ${JSON.stringify(m.usage)}`);
	assert(Number.isInteger(m.usage.output_tokens) && m.usage.output_tokens > 0,
	    `usage ${JSON.stringify(m.usage)}`);
}

const checks = {
	async message() {
		const m = await client().messages.create({
			model, max_tokens: 100, messages: user("hello there"),
		});
		wellFormed(m);
		assert(text(m) === "echo: hello there", `text ${JSON.stringify(text(m))}`);
		assert(m.stop_reason === "end_turn", `stop_reason ${m.stop_reason}`);
		assert(m.stop_sequence === null, `stop_sequence ${m.stop_sequence}`);
	},

	async system() {
		const m = await client().messages.create({
			model, max_tokens: 100, messages: user("with a system prompt"),
			system: [{ type: "text", text: "Be brief." }, { type: "text", text: "Be kind." }],
			temperature: 0.2, top_k: 5, stop_sequences: ["STOP"], metadata: { user_id: "u1" },
		});
		wellFormed(m);
		assert(text(m) === "echo: with a system prompt", `text ${JSON.stringify(text(m))}`);
	},

	async stream() {
		const s = client().messages.stream({
			model, max_tokens: 100, messages: user("[[words=5]] stream me"),
		});
		const deltas = [];
		let events = 0;
		s.on("text", (t) => deltas.push(t));
		s.on("streamEvent", () => events++);
		const m = await s.finalMessage();
		wellFormed(m);
		assert(text(m) === "w1 w2 w3 w4 w5", `text ${JSON.stringify(text(m))}`);
		assert(deltas.length === 5, `text deltas ${JSON.stringify(deltas)}`);
		assert(m.usage.output_tokens === 5, `output_tokens ${m.usage.output_tokens}`);
		assert(m.stop_reason === "end_turn", `stop_reason ${m.stop_reason}`);
		assert(events >= 9, `events ${events}`);
	},

	async max_tokens() {
		const m = await client().messages.create({
			model, max_tokens: 3, messages: user("[[words=10]] cut me"),
		});
		wellFormed(m);
		assert(m.stop_reason === "max_tokens", `stop_reason ${m.stop_reason}`);
		assert(text(m) === "w1 w2 w3", `text ${JSON.stringify(text(m))}`);
		assert(m.usage.output_tokens === 3, `output_tokens ${m.usage.output_tokens}`);
	},

	async tools() {
		for (const stream of [false, true]) {
			const ask = user("weather in Paris? [[tools=1]]");
			const params = { model, max_tokens: 100, tools: [weather], messages: ask,
			    tool_choice: { type: "auto" } };
			const m = stream ? await client().messages.stream(params).finalMessage() :
			    await client().messages.create(params);
			wellFormed(m);
			assert(m.stop_reason === "tool_use", `stop_reason ${m.stop_reason} (stream ${stream})`);
			const call = m.content.find((b) => b.type === "tool_use");
			assert(call !== undefined, `content ${JSON.stringify(m.content)}`);
			assert(call.name === "get_weather", `name ${call.name}`);
			assert(call.input.location === "Paris" && call.input.unit === "celsius",
			    `input ${JSON.stringify(call.input)} (stream ${stream})`);
			assert(typeof call.id === "string" && call.id.length > 0, `id ${call.id}`);
			const next = await client().messages.create({
				model, max_tokens: 100, tools: [weather], messages: [
					...ask,
					{ role: "assistant", content: m.content },
					{ role: "user", content: [{ type: "tool_result", tool_use_id: call.id,
					    content: "22 degrees" }] },
				],
			});
			wellFormed(next);
			assert(next.stop_reason === "end_turn", `follow-up stop_reason ${next.stop_reason}`);
			assert(text(next).includes("22 degrees"), `follow-up ${JSON.stringify(text(next))}`);
		}
	},

	async thinking() {
		const s = client().messages.stream({
			model, max_tokens: 100, messages: user("[[reasoning=2]] think"),
			thinking: { type: "enabled", budget_tokens: 1024 },
		});
		const thought = [];
		s.on("thinking", (t) => thought.push(t));
		const m = await s.finalMessage();
		wellFormed(m);
		assert(m.content[0].type === "thinking", `content ${JSON.stringify(m.content)}`);
		assert(m.content[0].thinking === "r1 r2 ", `thinking ${JSON.stringify(m.content[0].thinking)}`);
		assert(thought.join("") === "r1 r2 ", `thinking deltas ${JSON.stringify(thought)}`);
		assert(text(m) === "echo: think", `text ${JSON.stringify(text(m))}`);
	},

	async count_tokens() {
		const r = await client().messages.countTokens({
			model, messages: user("count these words"), system: "and this system",
			tools: [weather],
		});
		assert(Number.isInteger(r.input_tokens) && r.input_tokens > 0, `count ${JSON.stringify(r)}`);
	},

	// Claude Code's path: the beta messages API (?beta=true, anthropic-beta header).
	async beta() {
		const m = await client().beta.messages.create({
			model, max_tokens: 100, messages: user("beta hello"),
			betas: ["interleaved-thinking-2025-05-14"],
		});
		wellFormed(m);
		assert(text(m) === "echo: beta hello", `text ${JSON.stringify(text(m))}`);
	},

	async rate_limited() {
		try {
			await client().messages.create({ model, max_tokens: 10,
			    messages: user("[[fault=status:429]] x") });
		} catch (e) {
			assert(e instanceof Anthropic.RateLimitError, `error ${e}`);
			assert(e.status === 429 && e.error?.error?.type === "rate_limit_error",
			    `status ${e.status} ${JSON.stringify(e.error)}`);
			return;
		}
		assert(false, "no error");
	},

	async stream_error() {
		const s = client().messages.stream({
			model, max_tokens: 100, messages: user("[[words=5 fault=error_after:2]] x"),
		});
		const deltas = [];
		s.on("text", (t) => deltas.push(t));
		try {
			await s.finalMessage();
		} catch (e) {
			assert(e instanceof Anthropic.APIError, `error ${e}`);
			assert(e.error?.error?.type === "api_error", `error ${JSON.stringify(e.error)}`);
			assert(deltas.length === 2, `deltas before the error ${JSON.stringify(deltas)}`);
			return;
		}
		assert(false, "no error");
	},

	// What chat content cannot carry is refused, naming the block.
	async refuse_image() {
		try {
			await client().messages.create({ model, max_tokens: 10, messages: [{ role: "user",
			    content: [{ type: "text", text: "look" }, { type: "image", source: { type: "base64",
			    media_type: "image/png", data: "iVBORw0KGgo=" } }] }] });
		} catch (e) {
			assert(e instanceof Anthropic.BadRequestError, `error ${e}`);
			assert(e.error?.error?.type === "invalid_request_error", `${JSON.stringify(e.error)}`);
			assert(/messages\.0\.content\.1/.test(e.message), `message ${e.message}`);
			return;
		}
		assert(false, "an image was accepted");
	},
};

for (check of process.argv.slice(2)) {
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
}
