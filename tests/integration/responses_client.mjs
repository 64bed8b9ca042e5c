// The official openai npm client's Responses API against a server that speaks it.
// usage: node responses_client.mjs CHECK...
// env: OLLM_BASE_URL (with /v1), OLLM_KEY, OPENAI_DIR (the installed package's directory).
// Replies follow the fake model server's directives ("[[words=5]]", "[[tools=1]]",
// "[[reasoning=2]]"). Each CHECK prints "ok CHECK", or "FAIL CHECK: why" and exits 1.
import { pathToFileURL } from "node:url";

const { default: OpenAI } = await import(pathToFileURL(`${process.env.OPENAI_DIR}/index.mjs`).href);

const baseURL = process.env.OLLM_BASE_URL;
const apiKey = process.env.OLLM_KEY;
let check = "";

function assert(cond, what) {
	if (!cond)
		throw new Error(`${check}: ${what}`);
}

function client(extra = {}) {
	return new OpenAI({ baseURL, apiKey, maxRetries: 0, timeout: 20000, ...extra });
}

const model = "fake-model";
const weather = {
	type: "function", name: "get_weather", description: "The weather in a city", strict: false,
	parameters: { type: "object", properties: { location: { type: "string" },
	    unit: { type: "string" } }, required: ["location"] },
};

// Whether a response is well formed and has usage.
function wellFormed(r, status = "completed") {
	assert(r.object === "response", `object ${r.object}`);
	assert(typeof r.id === "string" && r.id.startsWith("resp_"), `id ${r.id}`);
	assert(r.status === status, `status ${r.status}`);
	assert(Array.isArray(r.output), "output");
	const u = r.usage;
	assert(u && u.input_tokens > 0 && u.output_tokens > 0 &&
	    u.total_tokens === u.input_tokens + u.output_tokens, `usage ${JSON.stringify(u)}`);
}

const checks = {
	async create() {
		const r = await client().responses.create({ model, input: "hello there",
		    instructions: "Be brief.", store: false, temperature: 0.5 });
		wellFormed(r);
		assert(r.output_text === "echo: hello there", `output_text ${JSON.stringify(r.output_text)}`);
		assert(r.output[0].type === "message" && r.output[0].role === "assistant",
		    `output ${JSON.stringify(r.output)}`);
	},

	async items() {
		const r = await client().responses.create({ model, input: [
			{ role: "developer", content: "Answer in English." },
			{ type: "message", role: "user", content: [{ type: "input_text", text: "first" }] },
			{ type: "message", role: "assistant", content: [{ type: "output_text",
			    text: "echo: first", annotations: [] }] },
			{ role: "user", content: "second" },
		] });
		wellFormed(r);
		assert(r.output_text === "echo: second", `output_text ${JSON.stringify(r.output_text)}`);
	},

	async stream() {
		const s = client().responses.stream({ model, input: "[[words=5]] stream me" });
		const deltas = [];
		const types = new Set();
		s.on("event", (e) => types.add(e.type));
		s.on("response.output_text.delta", (e) => deltas.push(e.delta));
		const r = await s.finalResponse();
		wellFormed(r);
		assert(r.output_text === "w1 w2 w3 w4 w5", `output_text ${JSON.stringify(r.output_text)}`);
		assert(deltas.length === 5, `deltas ${JSON.stringify(deltas)}`);
		assert(r.usage.output_tokens === 5, `usage ${JSON.stringify(r.usage)}`);
		for (const t of ["response.created", "response.in_progress", "response.output_item.added",
		    "response.content_part.added", "response.output_text.done",
		    "response.content_part.done", "response.output_item.done", "response.completed"])
			assert(types.has(t), `no ${t} in ${[...types]}`);
	},

	async incomplete() {
		const r = await client().responses.create({ model, input: "[[words=10]] cut me",
		    max_output_tokens: 3 });
		wellFormed(r, "incomplete");
		assert(r.incomplete_details?.reason === "max_output_tokens",
		    `incomplete_details ${JSON.stringify(r.incomplete_details)}`);
		assert(r.output_text === "w1 w2 w3", `output_text ${JSON.stringify(r.output_text)}`);
	},

	async tools() {
		for (const stream of [false, true]) {
			const ask = [{ role: "user", content: "weather in Paris? [[tools=1]]" }];
			const params = { model, input: ask, tools: [weather], tool_choice: "auto",
			    parallel_tool_calls: false };
			const r = stream ? await client().responses.stream(params).finalResponse() :
			    await client().responses.create(params);
			wellFormed(r);
			const call = r.output.find((o) => o.type === "function_call");
			assert(call !== undefined, `output ${JSON.stringify(r.output)} (stream ${stream})`);
			assert(call.name === "get_weather", `name ${call.name}`);
			const args = JSON.parse(call.arguments);
			assert(args.location === "Paris" && args.unit === "celsius", `arguments ${call.arguments}`);
			assert(typeof call.call_id === "string" && call.call_id.length > 0, `call_id ${call.call_id}`);
			const next = await client().responses.create({ model, tools: [weather], input: [
				...ask,
				{ type: "function_call", call_id: call.call_id, name: call.name,
				    arguments: call.arguments },
				{ type: "function_call_output", call_id: call.call_id, output: "22 degrees" },
			] });
			wellFormed(next);
			assert(next.output_text.includes("22 degrees"),
			    `follow-up ${JSON.stringify(next.output_text)}`);
		}
	},

	async reasoning() {
		const s = client().responses.stream({ model, input: "[[reasoning=2]] think",
		    reasoning: { summary: "auto" }, include: ["reasoning.encrypted_content"] });
		const thought = [];
		s.on("response.reasoning_text.delta", (e) => thought.push(e.delta));
		const r = await s.finalResponse();
		wellFormed(r);
		const rs = r.output.find((o) => o.type === "reasoning");
		assert(rs !== undefined, `output ${JSON.stringify(r.output)}`);
		assert(rs.content?.[0]?.text === "r1 r2 ", `reasoning ${JSON.stringify(rs)}`);
		assert(thought.join("") === "r1 r2 ", `deltas ${JSON.stringify(thought)}`);
		assert(r.output_text === "echo: think", `output_text ${JSON.stringify(r.output_text)}`);
	},

	async rate_limited() {
		try {
			await client().responses.create({ model, input: "[[fault=status:429]] x" });
		} catch (e) {
			assert(e instanceof OpenAI.RateLimitError, `error ${e}`);
			return;
		}
		assert(false, "no error");
	},

	async stream_failed() {
		const s = client().responses.stream({ model, input: "[[words=5 fault=error_after:2]] x" });
		const types = [];
		s.on("event", (e) => types.push(e.type));
		const r = await s.finalResponse().catch((e) => e);
		assert(types.includes("response.failed"), `events ${types}`);
		assert(types.filter((t) => t === "response.output_text.delta").length === 2,
		    `events ${types}`);
		assert(!(r instanceof Error) ? r.status === "failed" : true, `response ${JSON.stringify(r)}`);
	},

	// Nothing is stored: what needs a stored response is refused, naming the parameter.
	async stateless() {
		try {
			await client().responses.create({ model, input: "again",
			    previous_response_id: "resp_123" });
		} catch (e) {
			assert(e instanceof OpenAI.BadRequestError, `error ${e}`);
			assert(e.param === "previous_response_id", `param ${e.param}`);
			return;
		}
		assert(false, "previous_response_id was accepted");
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
