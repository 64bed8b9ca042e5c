/* Unit tests for the v1 wire protocol: framing, messages, hostile input. */
#include "config.h"

#include <check.h>
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "protocol/be.h"
#include "protocol/buf.h"
#include "protocol/frame.h"
#include "protocol/message.h"
#include "protocol/scan.h"

/* --- helpers ------------------------------------------------------------ */

/* A msgpack body under construction. */
struct body {
	msgpack_sbuffer sb;
	msgpack_packer pk;
};

static void
body_init(struct body *b)
{
	msgpack_sbuffer_init(&b->sb);
	msgpack_packer_init(&b->pk, &b->sb, msgpack_sbuffer_write);
}

static void
body_clear(struct body *b)
{
	msgpack_sbuffer_destroy(&b->sb);
}

static void
pack_s(struct body *b, const char *s)
{
	msgpack_pack_str_with_body(&b->pk, s, strlen(s));
}

/* Pack a jansson value; integers stay integers and reals stay floats. */
static void
pack_json(struct body *b, json_t *j)
{
	const char *k;
	json_t *v;
	size_t i;

	switch (json_typeof(j)) {
	case JSON_OBJECT:
		msgpack_pack_map(&b->pk, json_object_size(j));
		json_object_foreach(j, k, v) {
			pack_s(b, k);
			pack_json(b, v);
		}
		break;
	case JSON_ARRAY:
		msgpack_pack_array(&b->pk, json_array_size(j));
		json_array_foreach(j, i, v)
			pack_json(b, v);
		break;
	case JSON_STRING:
		msgpack_pack_str_with_body(&b->pk, json_string_value(j), json_string_length(j));
		break;
	case JSON_INTEGER:
		msgpack_pack_int64(&b->pk, json_integer_value(j));
		break;
	case JSON_REAL:
		msgpack_pack_double(&b->pk, json_real_value(j));
		break;
	case JSON_TRUE:
		msgpack_pack_true(&b->pk);
		break;
	case JSON_FALSE:
		msgpack_pack_false(&b->pk);
		break;
	case JSON_NULL:
		msgpack_pack_nil(&b->pk);
		break;
	}
}

/* Pack a JSON text written with single quotes for readability. */
static void
body_json(struct body *b, const char *text)
{
	char *s = strdup(text), *p;
	json_error_t je;
	json_t *j;

	for (p = s; *p != '\0'; p++) {
		if (*p == '\'')
			*p = '"';
	}
	j = json_loads(s, JSON_ALLOW_NUL, &je);
	ck_assert_msg(j != NULL, "bad test JSON %s: %s", text, je.text);
	body_init(b);
	pack_json(b, j);
	json_decref(j);
	free(s);
}

/* Decode a body as a request, expecting failure with code and message text. */
static void
expect_request_error(const uint8_t *p, size_t len, const char *code,
    const char *text, uint64_t id)
{
	struct message_error err;
	struct request *rq = (struct request *)1;

	ck_assert_int_eq(message_request_decode(p, len, &rq, &err), -1);
	ck_assert_ptr_null(rq);
	ck_assert_ptr_nonnull(err.code);
	ck_assert_msg(strcmp(err.code, code) == 0, "code %s, expected %s (%s)",
	    err.code, code, err.message);
	ck_assert_msg(strstr(err.message, text) != NULL,
	    "message \"%s\" lacks \"%s\"", err.message, text);
	ck_assert_uint_eq(err.id, id);
}

/* Decode a JSON-described request, expecting failure. */
static void
expect_json_error(const char *json, const char *code, const char *text, uint64_t id)
{
	struct body b;

	body_json(&b, json);
	expect_request_error((uint8_t *)b.sb.data, b.sb.size, code, text, id);
	body_clear(&b);
}

/* Decode a JSON-described request, expecting success. */
static struct request *
json_request(const char *json)
{
	struct message_error err;
	struct request *rq;
	struct body b;

	body_json(&b, json);
	if (message_request_decode((uint8_t *)b.sb.data, b.sb.size, &rq, &err) != 0)
		ck_abort_msg("%s: %s: %s", json, err.code, err.message);
	body_clear(&b);
	return rq;
}

/* Decode a JSON-described reply, expecting failure. */
static void
expect_json_reply_error(const char *json, enum message_op op, const char *text)
{
	struct message_error err;
	struct reply *rp;
	struct body b;

	body_json(&b, json);
	ck_assert_int_eq(message_reply_decode((uint8_t *)b.sb.data, b.sb.size, op,
	    &rp, &err), -1);
	ck_assert_ptr_null(rp);
	ck_assert_str_eq(err.code, "bad_request");
	ck_assert_msg(strstr(err.message, text) != NULL,
	    "message \"%s\" lacks \"%s\"", err.message, text);
	body_clear(&b);
}

/* Make a raw value from a JSON text. */
static struct message_raw
raw_json(const char *json)
{
	struct message_raw r;
	struct body b;

	body_json(&b, json);
	r.len = b.sb.size;
	r.data = (uint8_t *)msgpack_sbuffer_release(&b.sb);
	return r;
}

static void
raw_eq(const struct message_raw *a, const struct message_raw *b)
{
	ck_assert_uint_eq(a->len, b->len);
	if (a->data == NULL || b->data == NULL)
		ck_assert_ptr_eq(a->data, b->data);
	else
		ck_assert_mem_eq(a->data, b->data, a->len);
}

static void
str_eq(const char *a, const char *b)
{
	if (a == NULL || b == NULL)
		ck_assert_ptr_eq(a, b);
	else
		ck_assert_str_eq(a, b);
}

/* Check a frame's header against its body and return the body. */
static const uint8_t *
frame_body(const msgpack_sbuffer *sb, size_t *len)
{
	const uint8_t *p = (const uint8_t *)sb->data;

	ck_assert_uint_gt(sb->size, FRAME_HEADER_LEN);
	*len = (size_t)p[0] << 24 | (size_t)p[1] << 16 | (size_t)p[2] << 8 | p[3];
	ck_assert_uint_eq(*len, sb->size - FRAME_HEADER_LEN);
	return p + FRAME_HEADER_LEN;
}

/* Encode, decode, re-encode: the two encodings must be byte-identical. */
static struct request *
request_roundtrip(const struct request *in)
{
	msgpack_sbuffer a, b;
	struct message_error err;
	struct request *out;
	const uint8_t *body;
	size_t len;

	msgpack_sbuffer_init(&a);
	msgpack_sbuffer_init(&b);
	ck_assert_int_eq(message_request_encode(&a, in), 0);
	body = frame_body(&a, &len);
	if (message_request_decode(body, len, &out, &err) != 0)
		ck_abort_msg("decode: %s: %s", err.code, err.message);
	ck_assert_int_eq(message_request_encode(&b, out), 0);
	ck_assert_uint_eq(a.size, b.size);
	ck_assert_mem_eq(a.data, b.data, a.size);
	ck_assert_uint_eq(out->id, in->id);
	ck_assert_int_eq(out->op, in->op);
	msgpack_sbuffer_destroy(&a);
	msgpack_sbuffer_destroy(&b);
	return out;
}

static struct reply *
reply_roundtrip(const struct reply *in, enum message_op op)
{
	msgpack_sbuffer a, b;
	struct message_error err;
	struct reply *out;
	const uint8_t *body;
	size_t len;

	msgpack_sbuffer_init(&a);
	msgpack_sbuffer_init(&b);
	ck_assert_int_eq(message_reply_encode(&a, in), 0);
	body = frame_body(&a, &len);
	if (message_reply_decode(body, len, op, &out, &err) != 0)
		ck_abort_msg("decode: %s: %s", err.code, err.message);
	ck_assert_int_eq(message_reply_encode(&b, out), 0);
	ck_assert_uint_eq(a.size, b.size);
	ck_assert_mem_eq(a.data, b.data, a.size);
	ck_assert_uint_eq(out->id, in->id);
	ck_assert_int_eq(out->type, in->type);
	msgpack_sbuffer_destroy(&a);
	msgpack_sbuffer_destroy(&b);
	return out;
}

static void
messages_eq(const struct chat_message *a, const struct chat_message *b, size_t n)
{
	size_t i;

	for (i = 0; i < n; i++) {
		str_eq(a[i].role, b[i].role);
		str_eq(a[i].content, b[i].content);
		str_eq(a[i].name, b[i].name);
		str_eq(a[i].tool_call_id, b[i].tool_call_id);
		raw_eq(&a[i].tool_calls, &b[i].tool_calls);
	}
}

/* --- round trips: requests ---------------------------------------------- */

START_TEST(chat_all_fields)
{
	struct chat_message m[3] = {
		{ "system", "Be brief.", NULL, NULL, { NULL, 0 }, 0 },
		{ "assistant", NULL, "bot", NULL, { NULL, 0 }, 0 },
		{ "tool", "42 \xc3\xa9\xe2\x82\xac\xf0\x9d\x84\x9e", "calc", "call_1",
		    { NULL, 0 }, 0 },
	};
	char *stop[2] = { "\n\n", "END" };
	struct request rq, *out;
	struct chat_request *c;

	m[1].tool_calls = raw_json("[{'id':'call_1','type':'function',"
	    "'function':{'name':'calc','arguments':'{}'}}]");
	message_request_init(&rq, OP_CHAT);
	rq.id = UINT64_MAX;
	c = &rq.u.chat;
	c->messages = m;
	c->n_messages = 3;
	c->model = "qwen2.5-7b-instruct";
	c->stream = false;
	c->max_tokens = 512;
	c->temperature = 0.25;
	c->top_p = 1;
	c->stop = stop;
	c->n_stop = 2;
	c->seed = -12345;
	c->has_seed = true;
	c->tag = "build-bot";
	c->extra = raw_json("{'response_format':{'type':'json_object'},'n':1}");

	out = request_roundtrip(&rq);
	ck_assert_uint_eq(out->u.chat.n_messages, 3);
	messages_eq(out->u.chat.messages, m, 3);
	ck_assert_str_eq(out->u.chat.model, "qwen2.5-7b-instruct");
	ck_assert(!out->u.chat.stream);
	ck_assert_int_eq(out->u.chat.max_tokens, 512);
	ck_assert_double_eq(out->u.chat.temperature, 0.25);
	ck_assert_double_eq(out->u.chat.top_p, 1);
	ck_assert_uint_eq(out->u.chat.n_stop, 2);
	ck_assert_str_eq(out->u.chat.stop[0], "\n\n");
	ck_assert_str_eq(out->u.chat.stop[1], "END");
	ck_assert(out->u.chat.has_seed);
	ck_assert_int_eq(out->u.chat.seed, -12345);
	ck_assert_str_eq(out->u.chat.tag, "build-bot");
	raw_eq(&out->u.chat.extra, &c->extra);
	message_request_free(out);
	free(m[1].tool_calls.data);
	free(c->extra.data);
}
END_TEST

START_TEST(chat_required_only)
{
	struct chat_message m = { .role = "user" };
	struct request rq, *out;

	message_request_init(&rq, OP_CHAT);
	rq.id = 1;
	rq.u.chat.messages = &m;
	rq.u.chat.n_messages = 1;
	out = request_roundtrip(&rq);
	ck_assert_str_eq(out->u.chat.messages[0].role, "user");
	ck_assert_ptr_null(out->u.chat.messages[0].content);
	ck_assert_ptr_null(out->u.chat.model);
	ck_assert(out->u.chat.stream);
	ck_assert_int_eq(out->u.chat.max_tokens, -1);
	ck_assert(isnan(out->u.chat.temperature));
	ck_assert(isnan(out->u.chat.top_p));
	ck_assert_ptr_null(out->u.chat.stop);
	ck_assert_uint_eq(out->u.chat.n_stop, 0);
	ck_assert(!out->u.chat.has_seed);
	ck_assert_ptr_null(out->u.chat.tag);
	ck_assert_ptr_null(out->u.chat.extra.data);
	message_request_free(out);

	/* The defaults on the wire: stream absent is true; stop may be one string. */
	out = json_request("{'v':1,'id':3,'op':'chat','messages':[{'role':'user',"
	    "'content':null}],'stop':'###','temperature':1,'top_p':null}");
	ck_assert(out->u.chat.stream);
	ck_assert_uint_eq(out->u.chat.n_stop, 1);
	ck_assert_str_eq(out->u.chat.stop[0], "###");
	ck_assert_double_eq(out->u.chat.temperature, 1.0);
	ck_assert(isnan(out->u.chat.top_p));
	ck_assert_ptr_null(out->u.chat.messages[0].content);
	message_request_free(out);
}
END_TEST

START_TEST(tokens_roundtrip)
{
	struct chat_message m[2] = {
		{ "system", "s", NULL, NULL, { NULL, 0 }, 0 },
		{ "user", "u", "me", NULL, { NULL, 0 }, 0 },
	};
	struct request rq, *out;

	message_request_init(&rq, OP_TOKENS);
	rq.id = 9;
	rq.u.tokens.text = "hello world";
	out = request_roundtrip(&rq);
	ck_assert_str_eq(out->u.tokens.text, "hello world");
	ck_assert_ptr_null(out->u.tokens.messages);
	ck_assert_ptr_null(out->u.tokens.encoding);
	ck_assert_ptr_null(out->u.tokens.model);
	ck_assert(!out->u.tokens.ids);
	message_request_free(out);

	message_request_init(&rq, OP_TOKENS);
	rq.id = 10;
	rq.u.tokens.messages = m;
	rq.u.tokens.n_messages = 2;
	rq.u.tokens.encoding = "o200k_base";
	rq.u.tokens.model = "gpt-4o";
	rq.u.tokens.ids = true;
	out = request_roundtrip(&rq);
	ck_assert_ptr_null(out->u.tokens.text);
	ck_assert_uint_eq(out->u.tokens.n_messages, 2);
	messages_eq(out->u.tokens.messages, m, 2);
	ck_assert_str_eq(out->u.tokens.encoding, "o200k_base");
	ck_assert_str_eq(out->u.tokens.model, "gpt-4o");
	ck_assert(out->u.tokens.ids);
	message_request_free(out);
}
END_TEST

START_TEST(small_requests_roundtrip)
{
	static const enum message_op ops[] = { OP_MODELS, OP_PING, OP_RESET };
	struct request rq, *out;
	size_t i;

	message_request_init(&rq, OP_STATS);
	rq.id = 4;
	rq.u.stats.by = "tag";
	rq.u.stats.since = 1700000000;
	out = request_roundtrip(&rq);
	ck_assert_str_eq(out->u.stats.by, "tag");
	ck_assert_int_eq(out->u.stats.since, 1700000000);
	ck_assert(!out->u.stats.fleet);
	message_request_free(out);

	message_request_init(&rq, OP_STATS);
	rq.id = 4;
	rq.u.stats.fleet = true;
	out = request_roundtrip(&rq);
	ck_assert(out->u.stats.fleet);
	message_request_free(out);

	message_request_init(&rq, OP_STATS);
	rq.id = 5;
	out = request_roundtrip(&rq);
	ck_assert_ptr_null(out->u.stats.by);
	ck_assert_int_eq(out->u.stats.since, -1);
	message_request_free(out);

	message_request_init(&rq, OP_CANCEL);
	rq.id = 6;
	rq.u.cancel_target = 5;
	out = request_roundtrip(&rq);
	ck_assert_uint_eq(out->u.cancel_target, 5);
	message_request_free(out);

	for (i = 0; i < sizeof ops / sizeof ops[0]; i++) {
		message_request_init(&rq, ops[i]);
		rq.id = 100 + i;
		out = request_roundtrip(&rq);
		message_request_free(out);
	}
}
END_TEST

/* --- round trips: replies ----------------------------------------------- */

START_TEST(delta_roundtrip)
{
	struct reply rp, *out;

	message_reply_init(&rp, REPLY_DELTA, 0);
	rp.id = 7;
	rp.u.delta.content = "Hel";
	rp.u.delta.reasoning = "thinking";
	rp.u.delta.tool_calls = raw_json("[{'index':0,'function':{'arguments':'{\\'a'}}]");
	out = reply_roundtrip(&rp, OP_CHAT);
	ck_assert_str_eq(out->u.delta.content, "Hel");
	ck_assert_str_eq(out->u.delta.reasoning, "thinking");
	raw_eq(&out->u.delta.tool_calls, &rp.u.delta.tool_calls);
	message_reply_free(out);
	free(rp.u.delta.tool_calls.data);

	/* a reply's text may hold U+0000: it goes with its length */
	message_reply_init(&rp, REPLY_DELTA, 0);
	rp.id = 7;
	rp.u.delta.content = "a\0b";
	rp.u.delta.content_len = 3;
	rp.u.delta.reasoning = "\0";
	rp.u.delta.reasoning_len = 1;
	out = reply_roundtrip(&rp, OP_CHAT);
	ck_assert_uint_eq(out->u.delta.content_len, 3);
	ck_assert_mem_eq(out->u.delta.content, "a\0b", 4);
	ck_assert_uint_eq(out->u.delta.reasoning_len, 1);
	ck_assert_mem_eq(out->u.delta.reasoning, "\0", 2);
	message_reply_free(out);

	message_reply_init(&rp, REPLY_DELTA, 0);
	rp.id = 7;
	out = reply_roundtrip(&rp, OP_CHAT);
	ck_assert_ptr_null(out->u.delta.content);
	ck_assert_ptr_null(out->u.delta.reasoning);
	ck_assert_ptr_null(out->u.delta.tool_calls.data);
	message_reply_free(out);
}
END_TEST

START_TEST(done_roundtrip)
{
	struct reply rp, *out;
	struct done_reply *d;

	message_reply_init(&rp, REPLY_DONE, 0);
	rp.id = 8;
	d = &rp.u.done;
	d->finish_reason = "stop";
	d->usage.prompt_tokens = 21;
	d->usage.completion_tokens = 9;
	d->usage.total_tokens = 30;
	d->usage.estimated = true;
	d->cost = 0.000123;
	d->model = "qwen2.5-7b-instruct";
	d->upstream = "local";
	d->ttft_ms = 180;
	d->latency_ms = 950;
	d->content = "Hello there.";
	d->reasoning = "r";
	d->tool_calls = raw_json("[]");
	out = reply_roundtrip(&rp, OP_CHAT);
	ck_assert_str_eq(out->u.done.finish_reason, "stop");
	ck_assert_int_eq(out->u.done.usage.prompt_tokens, 21);
	ck_assert_int_eq(out->u.done.usage.completion_tokens, 9);
	ck_assert_int_eq(out->u.done.usage.total_tokens, 30);
	ck_assert(out->u.done.usage.estimated);
	ck_assert_double_eq(out->u.done.cost, 0.000123);
	ck_assert_str_eq(out->u.done.model, "qwen2.5-7b-instruct");
	ck_assert_str_eq(out->u.done.upstream, "local");
	ck_assert_int_eq(out->u.done.ttft_ms, 180);
	ck_assert_int_eq(out->u.done.latency_ms, 950);
	ck_assert_str_eq(out->u.done.content, "Hello there.");
	ck_assert_str_eq(out->u.done.reasoning, "r");
	raw_eq(&out->u.done.tool_calls, &d->tool_calls);
	ck_assert(!out->u.done.not_durable);
	message_reply_free(out);
	/* a reply the ledger could not record says so */
	d->not_durable = true;
	out = reply_roundtrip(&rp, OP_CHAT);
	ck_assert(out->u.done.not_durable);
	ck_assert_str_eq(out->u.done.content, "Hello there.");
	message_reply_free(out);
	/* U+0000 in the text, with its length */
	d->content = "Hello\0there.";
	d->content_len = 12;
	d->reasoning = "r\0";
	d->reasoning_len = 2;
	out = reply_roundtrip(&rp, OP_CHAT);
	ck_assert_uint_eq(out->u.done.content_len, 12);
	ck_assert_mem_eq(out->u.done.content, "Hello\0there.", 13);
	ck_assert_uint_eq(out->u.done.reasoning_len, 2);
	message_reply_free(out);
	free(d->tool_calls.data);

	message_reply_init(&rp, REPLY_DONE, 0);
	rp.id = 8;
	out = reply_roundtrip(&rp, OP_CHAT);
	ck_assert_ptr_null(out->u.done.finish_reason);
	ck_assert_int_eq(out->u.done.usage.total_tokens, 0);
	ck_assert(!out->u.done.usage.estimated);
	ck_assert_double_eq(out->u.done.cost, 0);
	ck_assert_ptr_null(out->u.done.model);
	ck_assert_int_eq(out->u.done.ttft_ms, -1);
	ck_assert_int_eq(out->u.done.latency_ms, -1);
	ck_assert_ptr_null(out->u.done.content);
	ck_assert_ptr_null(out->u.done.tool_calls.data);
	message_reply_free(out);
}
END_TEST

START_TEST(error_roundtrip)
{
	struct reply rp, *out;

	message_reply_init(&rp, REPLY_ERROR, 0);
	rp.id = 0;
	rp.u.error.code = "rate_limited";
	rp.u.error.message = "rpm limit of 10 reached";
	rp.u.error.retry_after = 1.5;
	rp.u.error.status = 429;
	rp.u.error.detail = raw_json("{'limit':10,'scope':'upstream:local'}");
	out = reply_roundtrip(&rp, OP_CHAT);
	ck_assert_uint_eq(out->id, 0);
	ck_assert_str_eq(out->u.error.code, "rate_limited");
	ck_assert_str_eq(out->u.error.message, "rpm limit of 10 reached");
	ck_assert_double_eq(out->u.error.retry_after, 1.5);
	ck_assert_int_eq(out->u.error.status, 429);
	raw_eq(&out->u.error.detail, &rp.u.error.detail);
	message_reply_free(out);
	free(rp.u.error.detail.data);

	message_reply_init(&rp, REPLY_ERROR, 0);
	rp.id = 3;
	rp.u.error.code = "internal";
	rp.u.error.message = "";
	out = reply_roundtrip(&rp, OP_PING);
	ck_assert(isnan(out->u.error.retry_after));
	ck_assert_int_eq(out->u.error.status, -1);
	ck_assert_ptr_null(out->u.error.detail.data);
	ck_assert_str_eq(out->u.error.message, "");
	message_reply_free(out);
}
END_TEST

START_TEST(ping_tokens_ok_results)
{
	uint32_t ids[3] = { 9906, 0, UINT32_MAX };
	struct reply rp, *out;

	message_reply_init(&rp, REPLY_RESULT, OP_PING);
	rp.id = 1;
	rp.u.result.u.ping.version = "0.1.0";
	rp.u.result.u.ping.uptime_s = 3600;
	rp.u.result.u.ping.in_flight = 2;
	out = reply_roundtrip(&rp, OP_PING);
	ck_assert_int_eq(out->u.result.op, OP_PING);
	ck_assert_str_eq(out->u.result.u.ping.version, "0.1.0");
	ck_assert_int_eq(out->u.result.u.ping.uptime_s, 3600);
	ck_assert_int_eq(out->u.result.u.ping.in_flight, 2);
	message_reply_free(out);

	message_reply_init(&rp, REPLY_RESULT, OP_TOKENS);
	rp.id = 2;
	rp.u.result.u.tokens.count = 3;
	rp.u.result.u.tokens.encoding = "cl100k_base";
	rp.u.result.u.tokens.ids = ids;
	rp.u.result.u.tokens.n_ids = 3;
	out = reply_roundtrip(&rp, OP_TOKENS);
	ck_assert_int_eq(out->u.result.u.tokens.count, 3);
	ck_assert_str_eq(out->u.result.u.tokens.encoding, "cl100k_base");
	ck_assert_uint_eq(out->u.result.u.tokens.n_ids, 3);
	ck_assert_mem_eq(out->u.result.u.tokens.ids, ids, sizeof ids);
	message_reply_free(out);

	/* Asked for ids of empty text: an empty array, still not NULL. */
	rp.u.result.u.tokens.count = 0;
	rp.u.result.u.tokens.n_ids = 0;
	out = reply_roundtrip(&rp, OP_TOKENS);
	ck_assert_ptr_nonnull(out->u.result.u.tokens.ids);
	ck_assert_uint_eq(out->u.result.u.tokens.n_ids, 0);
	message_reply_free(out);

	rp.u.result.u.tokens.ids = NULL;
	out = reply_roundtrip(&rp, OP_TOKENS);
	ck_assert_ptr_null(out->u.result.u.tokens.ids);
	message_reply_free(out);

	message_reply_init(&rp, REPLY_RESULT, OP_CANCEL);
	rp.id = 3;
	rp.u.result.u.ok = false;
	out = reply_roundtrip(&rp, OP_CANCEL);
	ck_assert(!out->u.result.u.ok);
	message_reply_free(out);

	message_reply_init(&rp, REPLY_RESULT, OP_RESET);
	rp.id = 4;
	rp.u.result.u.ok = true;
	out = reply_roundtrip(&rp, OP_RESET);
	ck_assert(out->u.result.u.ok);
	message_reply_free(out);
}
END_TEST

static void
counters_eq(const struct counters *a, const struct counters *b)
{
	ck_assert_uint_eq(a->requests, b->requests);
	ck_assert_uint_eq(a->errors, b->errors);
	ck_assert_uint_eq(a->prompt_tokens, b->prompt_tokens);
	ck_assert_uint_eq(a->completion_tokens, b->completion_tokens);
	ck_assert_uint_eq(a->total_tokens, b->total_tokens);
	ck_assert_uint_eq(a->estimated, b->estimated);
	ck_assert_double_eq(a->cost, b->cost);
}

static void
counters_map_eq(const struct counters_map *a, const struct counters_map *b)
{
	size_t i;

	ck_assert_uint_eq(a->n, b->n);
	for (i = 0; i < a->n; i++) {
		ck_assert_str_eq(a->entries[i].key, b->entries[i].key);
		counters_eq(&a->entries[i].c, &b->entries[i].c);
	}
}

START_TEST(stats_result_roundtrip)
{
	struct counters_entry models[2] = {
		{ "qwen", { 10, 1, 100, 50, 150, 2, 0.5 } },
		{ "llama", { 1, 0, 1, 1, 2, 0, 0 } },
	};
	struct counters_entry users[1] = { { "1000", { 11, 1, 101, 51, 152, 2, 0.5 } } };
	struct counters_entry tags[1] = { { "ci", { 3, 0, 3, 3, 6, 0, 0.25 } } };
	struct counters_entry days[1] = { { "2024-05-01", { 11, 1, 101, 51, 152, 2, 0.5 } } };
	struct budget_status budgets[2] = {
		{ "all", "money", "ever", 10.0, 0.5, 9.5 },
		{ "user:alice", "tokens", "day", 100000, 152, 99848 },
	};
	struct reply rp, *out;
	struct stats_result *s;
	size_t i;

	message_reply_init(&rp, REPLY_RESULT, OP_STATS);
	rp.id = 5;
	s = &rp.u.result.u.stats;
	s->since = 1714521600;
	s->total = users[0].c;
	s->by_model.entries = models;
	s->by_model.n = 2;
	s->by_user.entries = users;
	s->by_user.n = 1;
	s->by_tag.entries = tags;
	s->by_tag.n = 1;
	s->by_day.entries = days;
	s->by_day.n = 1;
	s->max_budget = 10.0;
	s->budget_left = 9.5;
	s->budgets = budgets;
	s->n_budgets = 2;
	s->by_node.entries = tags;
	s->by_node.n = 1;
	out = reply_roundtrip(&rp, OP_STATS);
	counters_map_eq(&out->u.result.u.stats.by_node, &s->by_node);
	ck_assert_int_eq(out->u.result.u.stats.since, 1714521600);
	counters_eq(&out->u.result.u.stats.total, &s->total);
	counters_map_eq(&out->u.result.u.stats.by_model, &s->by_model);
	counters_map_eq(&out->u.result.u.stats.by_user, &s->by_user);
	counters_map_eq(&out->u.result.u.stats.by_tag, &s->by_tag);
	counters_map_eq(&out->u.result.u.stats.by_day, &s->by_day);
	ck_assert_double_eq(out->u.result.u.stats.max_budget, 10.0);
	ck_assert_double_eq(out->u.result.u.stats.budget_left, 9.5);
	ck_assert_uint_eq(out->u.result.u.stats.n_budgets, 2);
	for (i = 0; i < 2; i++) {
		ck_assert_str_eq(out->u.result.u.stats.budgets[i].scope, budgets[i].scope);
		ck_assert_str_eq(out->u.result.u.stats.budgets[i].unit, budgets[i].unit);
		ck_assert_str_eq(out->u.result.u.stats.budgets[i].period, budgets[i].period);
		ck_assert_double_eq(out->u.result.u.stats.budgets[i].limit, budgets[i].limit);
		ck_assert_double_eq(out->u.result.u.stats.budgets[i].used, budgets[i].used);
		ck_assert_double_eq(out->u.result.u.stats.budgets[i].left, budgets[i].left);
	}
	message_reply_free(out);

	/* No budget: nil on the wire, NAN in the struct; empty maps. */
	message_reply_init(&rp, REPLY_RESULT, OP_STATS);
	rp.id = 6;
	out = reply_roundtrip(&rp, OP_STATS);
	ck_assert(isnan(out->u.result.u.stats.max_budget));
	ck_assert(isnan(out->u.result.u.stats.budget_left));
	ck_assert_uint_eq(out->u.result.u.stats.by_model.n, 0);
	ck_assert_uint_eq(out->u.result.u.stats.n_budgets, 0);
	message_reply_free(out);
}
END_TEST

START_TEST(models_result_roundtrip)
{
	char *list[2] = { "qwen2.5-7b-instruct", "qwen2.5-coder" };
	struct upstream_info up[2] = {
		{ "local", "http://127.0.0.1:8080/v1", "qwen2.5-7b-instruct", true, 3,
		    list, 2 },
		{ "spare", "http://10.0.0.2:8000/v1", NULL, false, 0, NULL, 0 },
	};
	struct reply rp, *out;
	struct upstream_info *u;
	size_t i;

	message_reply_init(&rp, REPLY_RESULT, OP_MODELS);
	rp.id = 7;
	rp.u.result.u.models.upstreams = up;
	rp.u.result.u.models.n = 2;
	out = reply_roundtrip(&rp, OP_MODELS);
	ck_assert_uint_eq(out->u.result.u.models.n, 2);
	for (i = 0; i < 2; i++) {
		u = &out->u.result.u.models.upstreams[i];
		str_eq(u->name, up[i].name);
		str_eq(u->base_url, up[i].base_url);
		str_eq(u->model, up[i].model);
		ck_assert_int_eq(u->healthy, up[i].healthy);
		ck_assert_int_eq(u->in_flight, up[i].in_flight);
		ck_assert_uint_eq(u->n_models, up[i].n_models);
	}
	ck_assert_str_eq(out->u.result.u.models.upstreams[0].models[1], "qwen2.5-coder");
	ck_assert_ptr_null(out->u.result.u.models.upstreams[1].models);
	message_reply_free(out);

	message_reply_init(&rp, REPLY_RESULT, OP_MODELS);
	rp.id = 8;
	out = reply_roundtrip(&rp, OP_MODELS);
	ck_assert_uint_eq(out->u.result.u.models.n, 0);
	message_reply_free(out);
}
END_TEST

/* --- frame reader ------------------------------------------------------- */

/* Several frames back to back: a few requests of different sizes. */
static void
make_stream(msgpack_sbuffer *sb, size_t *n)
{
	struct chat_message m = { .role = "user" };
	char big[5000];
	struct request rq;
	uint64_t i;

	memset(big, 'x', sizeof big - 1);
	big[sizeof big - 1] = '\0';
	m.content = big;
	msgpack_sbuffer_init(sb);
	*n = 0;
	for (i = 1; i <= 6; i++) {
		if (i % 2 == 0) {
			message_request_init(&rq, OP_PING);
		} else {
			message_request_init(&rq, OP_CHAT);
			rq.u.chat.messages = &m;
			rq.u.chat.n_messages = 1;
			big[i * 700] = '\0';
		}
		rq.id = i;
		ck_assert_int_eq(message_request_encode(sb, &rq), 0);
		big[i * 700] = 'x';
		(*n)++;
	}
}

/* Feed the stream in chunks chosen by next_chunk; check every frame comes out whole. */
static void
feed_stream(const msgpack_sbuffer *sb, size_t nframes, unsigned int seed, int bytewise)
{
	const uint8_t *p = (const uint8_t *)sb->data, *body;
	struct frame_reader r;
	struct message_error err;
	struct request *rq;
	size_t off = 0, chunk, used, blen, got = 0, expect_off = 0, flen;
	enum frame_status st;
	char cause[128];

	srand(seed);
	frame_reader_init(&r, 0);
	while (off < sb->size) {
		chunk = bytewise ? 1 : 1 + (size_t)rand() % 3000;
		if (chunk > sb->size - off)
			chunk = sb->size - off;
		while (chunk > 0) {
			st = frame_reader_feed(&r, p + off, chunk, &used, &body, &blen,
			    cause, sizeof cause);
			ck_assert_int_ne(st, FRAME_ERROR);
			ck_assert_uint_le(used, chunk);
			off += used;
			chunk -= used;
			if (st == FRAME_NEED_MORE) {
				ck_assert_uint_eq(chunk, 0);
				break;
			}
			flen = (size_t)p[expect_off] << 24 | (size_t)p[expect_off + 1] << 16 |
			    (size_t)p[expect_off + 2] << 8 | p[expect_off + 3];
			ck_assert_uint_eq(blen, flen);
			ck_assert_mem_eq(body, p + expect_off + 4, blen);
			ck_assert_int_eq(message_request_decode(body, blen, &rq, &err), 0);
			ck_assert_uint_eq(rq->id, got + 1);
			message_request_free(rq);
			expect_off += 4 + flen;
			ck_assert_uint_eq(off, expect_off);
			got++;
		}
	}
	ck_assert_uint_eq(got, nframes);
	frame_reader_clear(&r);
}

START_TEST(reader_bytewise)
{
	msgpack_sbuffer sb;
	size_t n;

	make_stream(&sb, &n);
	feed_stream(&sb, n, 1, 1);
	msgpack_sbuffer_destroy(&sb);
}
END_TEST

START_TEST(reader_random_splits)
{
	msgpack_sbuffer sb;
	unsigned int seed;
	size_t n;

	make_stream(&sb, &n);
	for (seed = 1; seed <= 200; seed++)
		feed_stream(&sb, n, seed, 0);
	msgpack_sbuffer_destroy(&sb);
}
END_TEST

START_TEST(reader_truncated)
{
	const uint8_t *body;
	struct frame_reader r;
	msgpack_sbuffer sb;
	size_t used, blen, n;
	char cause[128];

	make_stream(&sb, &n);
	/* All but the last byte of the first frame: no frame comes out. */
	frame_reader_init(&r, 0);
	n = 4 + ((size_t)(uint8_t)sb.data[2] << 8 | (uint8_t)sb.data[3]);
	ck_assert_int_eq(frame_reader_feed(&r, (uint8_t *)sb.data, n - 1, &used, &body,
	    &blen, cause, sizeof cause), FRAME_NEED_MORE);
	ck_assert_uint_eq(used, n - 1);
	ck_assert_ptr_null(body);
	/* Nothing more: still nothing. */
	ck_assert_int_eq(frame_reader_feed(&r, (uint8_t *)sb.data, 0, &used, &body,
	    &blen, cause, sizeof cause), FRAME_NEED_MORE);
	ck_assert_uint_eq(used, 0);
	/* The last byte completes it. */
	ck_assert_int_eq(frame_reader_feed(&r, (uint8_t *)sb.data + n - 1, 1, &used,
	    &body, &blen, cause, sizeof cause), FRAME_READY);
	ck_assert_uint_eq(blen, n - 4);
	frame_reader_clear(&r);

	/* A header cut short. */
	frame_reader_init(&r, 0);
	ck_assert_int_eq(frame_reader_feed(&r, (uint8_t *)sb.data, 3, &used, &body,
	    &blen, cause, sizeof cause), FRAME_NEED_MORE);
	ck_assert_uint_eq(used, 3);
	ck_assert_ptr_null(r.body);
	frame_reader_clear(&r);
	msgpack_sbuffer_destroy(&sb);
}
END_TEST

START_TEST(reader_bad_lengths)
{
	static const uint8_t huge[] = { 0xff, 0xff, 0xff, 0xff, 0x80 };
	static const uint8_t zero[] = { 0, 0, 0, 0, 0x80 };
	static const uint8_t over[] = { 0, 0, 0, 17 };
	static const uint8_t at[] = { 0, 0, 0, 16 };
	const uint8_t *body;
	struct frame_reader r;
	size_t used, blen;
	char cause[128];

	frame_reader_init(&r, 0);
	ck_assert_uint_eq(r.max_frame, FRAME_MAX_DEFAULT);
	ck_assert_int_eq(frame_reader_feed(&r, huge, sizeof huge, &used, &body, &blen,
	    cause, sizeof cause), FRAME_ERROR);
	ck_assert_uint_eq(used, 4);
	ck_assert_ptr_null(r.body);
	ck_assert_ptr_nonnull(strstr(cause, "4294967295"));
	ck_assert_uint_eq(r.body_len, UINT32_MAX);     /* over the limit: too_large */
	/* A failed reader stays failed. */
	ck_assert_int_eq(frame_reader_feed(&r, zero, sizeof zero, &used, &body, &blen,
	    cause, sizeof cause), FRAME_ERROR);
	frame_reader_clear(&r);

	frame_reader_init(&r, 0);
	ck_assert_int_eq(frame_reader_feed(&r, zero, sizeof zero, &used, &body, &blen,
	    cause, sizeof cause), FRAME_ERROR);
	ck_assert_uint_eq(used, 4);
	ck_assert_ptr_nonnull(strstr(cause, "length 0"));
	ck_assert_uint_eq(r.body_len, 0);
	frame_reader_clear(&r);

	frame_reader_init(&r, 16);
	ck_assert_int_eq(frame_reader_feed(&r, over, sizeof over, &used, &body, &blen,
	    cause, sizeof cause), FRAME_ERROR);
	frame_reader_clear(&r);
	frame_reader_init(&r, 16);
	ck_assert_int_eq(frame_reader_feed(&r, at, sizeof at, &used, &body, &blen,
	    cause, sizeof cause), FRAME_NEED_MORE);
	frame_reader_clear(&r);
}
END_TEST

START_TEST(reader_grows_with_input)
{
	static const uint8_t hdr[] = { 0x01, 0x00, 0x00, 0x00, 0x81, 0xa1 };
	const uint8_t *body;
	struct frame_reader r;
	size_t used, blen;
	char cause[128];

	/* A 16 MiB frame announced: memory follows the bytes that came, not the claim. */
	frame_reader_init(&r, 0);
	ck_assert_int_eq(frame_reader_feed(&r, hdr, 4, &used, &body, &blen,
	    cause, sizeof cause), FRAME_NEED_MORE);
	ck_assert_ptr_null(r.body);
	ck_assert_int_eq(frame_reader_feed(&r, hdr + 4, 2, &used, &body, &blen,
	    cause, sizeof cause), FRAME_NEED_MORE);
	ck_assert_uint_le(r.body_cap, 4096);
	ck_assert_uint_eq(r.body_have, 2);
	frame_reader_clear(&r);
}
END_TEST

/* --- hostile bodies ----------------------------------------------------- */

START_TEST(huge_declared_counts)
{
	/* A 12-byte frame: header, then a map32 of 4 billion entries. */
	static const uint8_t map32[] = { 0, 0, 0, 8, 0xdf, 0xff, 0xff, 0xff, 0xff,
	    0xa1, 0x76, 0x01 };
	static const uint8_t array32[] = { 0x81, 0xa1, 0x78, 0xdd, 0xff, 0xff, 0xff,
	    0xff, 0x01 };
	static const uint8_t str32[] = { 0x81, 0xa1, 0x78, 0xdb, 0xff, 0xff, 0xff,
	    0xff, 0x61 };
	static const uint8_t bin32[] = { 0x81, 0xa1, 0x78, 0xc6, 0x7f, 0xff, 0xff,
	    0xff, 0x61 };
	static const uint8_t ext32[] = { 0x81, 0xa1, 0x78, 0xc9, 0xff, 0xff, 0xff,
	    0xf0, 0x01, 0x61 };
	/* Nested arrays each claiming all the bytes left: the sum is checked. */
	static const uint8_t nested[] = { 0x81, 0xa1, 0x78, 0xdc, 0x00, 0x06, 0xdc,
	    0x00, 0x05, 0x01, 0x01, 0x01 };
	const uint8_t *body;
	struct frame_reader r;
	size_t used, blen;
	char cause[128];

	frame_reader_init(&r, 0);
	ck_assert_int_eq(frame_reader_feed(&r, map32, sizeof map32, &used, &body, &blen,
	    cause, sizeof cause), FRAME_READY);
	ck_assert_uint_eq(blen, 8);
	expect_request_error(body, blen, "bad_frame", "more entries than bytes left", 0);
	frame_reader_clear(&r);

	expect_request_error(array32, sizeof array32, "bad_frame",
	    "more entries than bytes left", 0);
	expect_request_error(str32, sizeof str32, "bad_frame", "longer than the bytes left", 0);
	expect_request_error(bin32, sizeof bin32, "bad_frame", "longer than the bytes left", 0);
	expect_request_error(ext32, sizeof ext32, "bad_frame", "longer than the bytes left", 0);
	expect_request_error(nested, sizeof nested, "bad_frame",
	    "more entries than bytes left", 0);
}
END_TEST

/* A chat request whose extra holds `levels` nested containers (extra included). */
static void
deep_extra(struct body *b, int levels)
{
	int i;

	body_init(b);
	msgpack_pack_map(&b->pk, 5);
	pack_s(b, "v");
	msgpack_pack_int(&b->pk, 1);
	pack_s(b, "id");
	msgpack_pack_int(&b->pk, 7);
	pack_s(b, "op");
	pack_s(b, "chat");
	pack_s(b, "messages");
	msgpack_pack_array(&b->pk, 1);
	msgpack_pack_map(&b->pk, 1);
	pack_s(b, "role");
	pack_s(b, "user");
	pack_s(b, "extra");
	msgpack_pack_map(&b->pk, 1);
	pack_s(b, "a");
	for (i = 1; i < levels; i++)
		msgpack_pack_array(&b->pk, 1);
	msgpack_pack_int(&b->pk, 1);
}

START_TEST(nesting_depth)
{
	struct message_error err;
	struct request *rq;
	struct body b;

	/* 1 (the body) + 31 in extra = 32: accepted, extra kept exactly. */
	deep_extra(&b, 31);
	ck_assert_int_eq(message_request_decode((uint8_t *)b.sb.data, b.sb.size, &rq,
	    &err), 0);
	ck_assert_ptr_nonnull(rq->u.chat.extra.data);
	ck_assert_uint_eq(rq->u.chat.extra.len, 3 + 30 + 1);
	ck_assert_mem_eq(rq->u.chat.extra.data, b.sb.data + b.sb.size - 34, 34);
	message_request_free(rq);
	body_clear(&b);

	/* 33 levels: refused before unpacking. */
	deep_extra(&b, 32);
	expect_request_error((uint8_t *)b.sb.data, b.sb.size, "bad_frame",
	    "nested deeper than 32", 0);
	body_clear(&b);
}
END_TEST

START_TEST(utf8_validator)
{
	static const char *bad[] = {
		"\xc0\xaf", "\xc1\xbf", "\xe0\x80\xaf", "\xf0\x80\x80\xaf",  /* overlong */
		"\xed\xa0\x80", "\xed\xbf\xbf",                             /* surrogates */
		"\xe2\x82", "\xf0\x9d\x84", "\xc3", "ok\xe2",               /* truncated */
		"\xf4\x90\x80\x80", "\xf5\x80\x80\x80", "\xff",             /* > U+10FFFF */
		"\x80", "a\xbf" "b", "\xe2\x28\xa1",                        /* stray bytes */
		"long ascii prefix to cross the 8-byte path \xc3\x28",
	};
	static const char *good[] = {
		"", "plain", "\xc3\xa9", "\xe2\x82\xac", "\xf0\x9d\x84\x9e",
		"\xed\x9f\xbf", "\xee\x80\x80", "\xf4\x8f\xbf\xbf", "\xc2\x80",
		"ascii then \xe6\x97\xa5\xe6\x9c\xac\xe8\xaa\x9e and more ascii text",
	};
	size_t i;

	for (i = 0; i < sizeof bad / sizeof bad[0]; i++)
		ck_assert_msg(!message_utf8_valid(bad[i], strlen(bad[i])), "bad[%zu]", i);
	for (i = 0; i < sizeof good / sizeof good[0]; i++)
		ck_assert_msg(message_utf8_valid(good[i], strlen(good[i])), "good[%zu]", i);
}
END_TEST

/* A chat request whose first message content is len raw bytes. */
static void
chat_with_content(struct body *b, const char *s, size_t len)
{
	body_init(b);
	msgpack_pack_map(&b->pk, 4);
	pack_s(b, "v");
	msgpack_pack_int(&b->pk, 1);
	pack_s(b, "id");
	msgpack_pack_int(&b->pk, 7);
	pack_s(b, "op");
	pack_s(b, "chat");
	pack_s(b, "messages");
	msgpack_pack_array(&b->pk, 1);
	msgpack_pack_map(&b->pk, 2);
	pack_s(b, "role");
	pack_s(b, "user");
	pack_s(b, "content");
	msgpack_pack_str_with_body(&b->pk, s, len);
}

START_TEST(utf8_in_messages)
{
	static const char *bad[] = {
		"\xc0\xaf", "\xed\xa0\x80", "\xe2\x82", "\xf4\x90\x80\x80",
	};
	static const char good[] = "na\xc3\xafve \xe2\x82\xac \xf0\x9f\x98\x80";
	struct message_error err;
	struct request *rq;
	struct body b;
	size_t i;

	for (i = 0; i < sizeof bad / sizeof bad[0]; i++) {
		chat_with_content(&b, bad[i], strlen(bad[i]));
		expect_request_error((uint8_t *)b.sb.data, b.sb.size, "bad_request",
		    "messages[0].content: not valid UTF-8", 7);
		body_clear(&b);
	}

	chat_with_content(&b, good, strlen(good));
	ck_assert_int_eq(message_request_decode((uint8_t *)b.sb.data, b.sb.size, &rq,
	    &err), 0);
	ck_assert_str_eq(rq->u.chat.messages[0].content, good);
	message_request_free(rq);
	body_clear(&b);
}
END_TEST

/*
 * U+0000 is text: a message's content and a tokens request's text keep it,
 * with their length, through decoding and encoding again. Names that the
 * ledger keeps (role, name, tag, model, encoding) still refuse it.
 */
START_TEST(nul_in_text)
{
	static const struct {
		const char *json;
		const char *expect;
	} refused[] = {
		{ "{'v':1,'id':7,'op':'chat','messages':[{'role':'us\\u0000er'}]}",
		    "messages[0].role: contains a NUL byte" },
		{ "{'v':1,'id':7,'op':'chat','messages':[{'role':'user','name':'a\\u0000'}]}",
		    "messages[0].name: contains a NUL byte" },
		{ "{'v':1,'id':7,'op':'chat','messages':[{'role':'user'}],'tag':'t\\u0000'}",
		    "tag: contains a NUL byte" },
		{ "{'v':1,'id':7,'op':'chat','messages':[{'role':'user'}],'model':'\\u0000'}",
		    "model: contains a NUL byte" },
		{ "{'v':1,'id':7,'op':'tokens','text':'x','encoding':'cl\\u0000'}",
		    "encoding: contains a NUL byte" },
	};
	struct chat_message m = { .role = "user", .content = "abc" };
	struct message_error err;
	struct request *rq, *again, hand;
	msgpack_sbuffer sb;
	struct body b;
	size_t i;

	chat_with_content(&b, "a\0b", 3);
	ck_assert_int_eq(message_request_decode((uint8_t *)b.sb.data, b.sb.size, &rq,
	    &err), 0);
	body_clear(&b);
	ck_assert_uint_eq(rq->u.chat.messages[0].content_len, 3);
	ck_assert_mem_eq(rq->u.chat.messages[0].content, "a\0b", 4);

	/* encode what was decoded and decode it again: the NUL survives */
	msgpack_sbuffer_init(&sb);
	ck_assert_int_eq(message_request_encode(&sb, rq), 0);
	ck_assert_int_eq(message_request_decode((uint8_t *)sb.data + FRAME_HEADER_LEN,
	    sb.size - FRAME_HEADER_LEN, &again, &err), 0);
	ck_assert_uint_eq(again->u.chat.messages[0].content_len, 3);
	ck_assert_mem_eq(again->u.chat.messages[0].content, "a\0b", 4);
	message_request_free(again);
	message_request_free(rq);
	msgpack_sbuffer_destroy(&sb);

	body_json(&b, "{'v':1,'id':7,'op':'tokens','text':'\\u0000x\\u0000'}");
	ck_assert_int_eq(message_request_decode((uint8_t *)b.sb.data, b.sb.size, &rq,
	    &err), 0);
	body_clear(&b);
	ck_assert_uint_eq(rq->u.tokens.text_len, 3);
	ck_assert_mem_eq(rq->u.tokens.text, "\0x\0", 4);
	message_request_free(rq);

	for (i = 0; i < sizeof refused / sizeof refused[0]; i++) {
		body_json(&b, refused[i].json);
		expect_request_error((uint8_t *)b.sb.data, b.sb.size, "bad_request",
		    refused[i].expect, 7);
		body_clear(&b);
	}

	/* built by hand: content_len 0 means strlen(content) */
	message_request_init(&hand, OP_CHAT);
	hand.id = 9;
	hand.u.chat.messages = &m;
	hand.u.chat.n_messages = 1;
	msgpack_sbuffer_init(&sb);
	ck_assert_int_eq(message_request_encode(&sb, &hand), 0);
	ck_assert_int_eq(message_request_decode((uint8_t *)sb.data + FRAME_HEADER_LEN,
	    sb.size - FRAME_HEADER_LEN, &rq, &err), 0);
	ck_assert_uint_eq(rq->u.chat.messages[0].content_len, 3);
	ck_assert_str_eq(rq->u.chat.messages[0].content, "abc");
	message_request_free(rq);
	msgpack_sbuffer_destroy(&sb);
}
END_TEST

/* Peak resident memory of this process so far (VmHWM), in KiB. */
static long
peak_rss_kib(void)
{
	char line[256];
	long kib = -1;
	FILE *f = fopen("/proc/self/status", "r");

	ck_assert_ptr_nonnull(f);
	while (fgets(line, sizeof line, f) != NULL)
		if (sscanf(line, "VmHWM: %ld kB", &kib) == 1)
			break;
	fclose(f);
	ck_assert_int_ge(kib, 0);
	return kib;
}

/* A chat request whose field key (after messages) is an array of n zeros. */
static void
chat_with_zeros(struct body *b, const char *key, size_t n)
{
	body_init(b);
	msgpack_pack_map(&b->pk, 5);
	pack_s(b, "v");
	msgpack_pack_int(&b->pk, 1);
	pack_s(b, "id");
	msgpack_pack_int(&b->pk, 7);
	pack_s(b, "op");
	pack_s(b, "chat");
	pack_s(b, "messages");
	msgpack_pack_array(&b->pk, 1);
	msgpack_pack_map(&b->pk, 1);
	pack_s(b, "role");
	pack_s(b, "user");
	pack_s(b, key);
	if (strcmp(key, "extra") == 0) {
		msgpack_pack_map(&b->pk, 1);
		pack_s(b, "zeros");
	}
	msgpack_pack_array(&b->pk, (uint32_t)n);
	for (size_t i = 0; i < n; i++)
		msgpack_pack_int(&b->pk, 0);
}

/*
 * One frame of small integers would unpack to some 24 bytes per byte sent:
 * past MESSAGE_MAX_OBJECTS it is refused before msgpack-c sees it, naming
 * the field, keeping the id, and without the memory growing.
 */
START_TEST(object_cap)
{
	struct message_error err;
	struct request *rq;
	struct body b;
	size_t used, objects;
	long before, after;
	char cause[128];

	/* 4 MiB of zeros in extra: refused, and peak memory stays put */
	chat_with_zeros(&b, "extra", 4u << 20);
	before = peak_rss_kib();
	expect_request_error((uint8_t *)b.sb.data, b.sb.size, "too_large",
	    "extra: 4194307 msgpack objects; a request holds at most 65536", 7);
	after = peak_rss_kib();
	ck_assert_msg(after - before < 16 * 1024,
	    "peak RSS grew by %ld KiB refusing the frame", after - before);
	body_clear(&b);

	/* the same in a field that is not extra, and in the top-level map */
	chat_with_zeros(&b, "stop", 70000);
	expect_request_error((uint8_t *)b.sb.data, b.sb.size, "too_large",
	    "stop: 70001 msgpack objects", 7);
	body_clear(&b);
	body_init(&b);
	msgpack_pack_map(&b.pk, 40000);
	pack_s(&b, "id");
	msgpack_pack_int(&b.pk, 9);
	for (int i = 1; i < 40000; i++) {
		char k[16];
		snprintf(k, sizeof k, "k%d", i);
		pack_s(&b, k);
		msgpack_pack_int(&b.pk, 0);
	}
	expect_request_error((uint8_t *)b.sb.data, b.sb.size, "too_large",
	    "request: more than 65536 msgpack objects in all (40000 fields)", 9);
	body_clear(&b);

	/* just under the cap is decoded (and refused by the extra cap) */
	chat_with_zeros(&b, "extra", 65536 - 16);
	ck_assert_int_eq(scan_object((uint8_t *)b.sb.data, b.sb.size, 32, 0, &used,
	    &objects, cause, sizeof cause), 0);
	ck_assert_uint_eq(objects, 65536);
	expect_request_error((uint8_t *)b.sb.data, b.sb.size, "too_large",
	    "extra: 65523 msgpack objects, at most 16384", 7);
	ck_assert_int_eq(scan_object((uint8_t *)b.sb.data, b.sb.size, 32, 65535, &used,
	    &objects, cause, sizeof cause), SCAN_TOO_MANY);
	ck_assert_ptr_nonnull(strstr(cause, "more than 65535 objects"));
	body_clear(&b);

	/* a frame over the cap and malformed past it is still a bad frame */
	chat_with_zeros(&b, "extra", 70000);
	b.sb.data[b.sb.size - 1] = (char)0xc1;
	expect_request_error((uint8_t *)b.sb.data, b.sb.size, "bad_frame",
	    "is reserved", 0);
	body_clear(&b);

	/* replies are not capped: a tokens result may carry many ids */
	body_init(&b);
	msgpack_pack_map(&b.pk, 5);
	pack_s(&b, "id");
	msgpack_pack_int(&b.pk, 3);
	pack_s(&b, "type");
	pack_s(&b, "result");
	pack_s(&b, "count");
	msgpack_pack_int(&b.pk, 100000);
	pack_s(&b, "encoding");
	pack_s(&b, "cl100k_base");
	pack_s(&b, "ids");
	msgpack_pack_array(&b.pk, 100000);
	for (int i = 0; i < 100000; i++)
		msgpack_pack_int(&b.pk, 1);
	{
		struct reply *rp;
		ck_assert_int_eq(message_reply_decode((uint8_t *)b.sb.data, b.sb.size,
		    OP_TOKENS, &rp, &err), 0);
		ck_assert_uint_eq(rp->u.result.u.tokens.n_ids, 100000);
		message_reply_free(rp);
	}
	body_clear(&b);
	(void)rq;
}
END_TEST

/* extra is bounded in objects and in encoded bytes, each named. */
START_TEST(extra_caps)
{
	struct message_error err;
	struct request *rq;
	struct body b;
	char *big;

	chat_with_zeros(&b, "extra", MESSAGE_MAX_EXTRA_OBJECTS - 3);
	ck_assert_int_eq(message_request_decode((uint8_t *)b.sb.data, b.sb.size, &rq,
	    &err), 0);
	message_request_free(rq);
	body_clear(&b);
	chat_with_zeros(&b, "extra", MESSAGE_MAX_EXTRA_OBJECTS - 2);
	expect_request_error((uint8_t *)b.sb.data, b.sb.size, "too_large",
	    "extra: 16385 msgpack objects, at most 16384", 7);
	body_clear(&b);

	/* one long string: few objects, too many bytes */
	big = malloc(MESSAGE_MAX_EXTRA);
	ck_assert_ptr_nonnull(big);
	memset(big, 'x', MESSAGE_MAX_EXTRA);
	body_init(&b);
	msgpack_pack_map(&b.pk, 5);
	pack_s(&b, "v");
	msgpack_pack_int(&b.pk, 1);
	pack_s(&b, "id");
	msgpack_pack_int(&b.pk, 7);
	pack_s(&b, "op");
	pack_s(&b, "chat");
	pack_s(&b, "messages");
	msgpack_pack_array(&b.pk, 1);
	msgpack_pack_map(&b.pk, 1);
	pack_s(&b, "role");
	pack_s(&b, "user");
	pack_s(&b, "extra");
	msgpack_pack_map(&b.pk, 1);
	pack_s(&b, "s");
	msgpack_pack_str_with_body(&b.pk, big, MESSAGE_MAX_EXTRA);
	expect_request_error((uint8_t *)b.sb.data, b.sb.size, "too_large",
	    "extra: 262152 bytes encoded, at most 262144", 7);
	body_clear(&b);
	free(big);
}
END_TEST

/* Every field of every request with a value of the wrong type or range. */
START_TEST(wrong_types)
{
	static const struct {
		const char *json;
		const char *expect;
	} cases[] = {
#define CHAT "{'v':1,'id':7,'op':'chat',"
#define MSG "'messages':[{'role':'user'}]"
		{ CHAT "'messages':5}", "messages: expected array" },
		{ CHAT "'messages':[]}", "messages: must not be empty" },
		{ CHAT "'messages':[5]}", "messages[0]: expected map" },
		{ CHAT "'messages':[{'role':'user'},{'role':5}]}", "messages[1].role: expected string" },
		{ CHAT "'messages':[{'role':''}]}", "messages[0].role: must not be empty" },
		{ CHAT "'messages':[{'content':'x'}]}", "messages[0].role: missing" },
		{ CHAT "'messages':[{'role':null}]}", "messages[0].role: expected string" },
		{ CHAT "'messages':[{'role':'user','content':5}]}", "messages[0].content: expected string" },
		{ CHAT "'messages':[{'role':'user','name':[]}]}", "messages[0].name: expected string" },
		{ CHAT "'messages':[{'role':'user','tool_call_id':1.5}]}", "messages[0].tool_call_id: expected string" },
		{ CHAT "'messages':[{'role':'user','tool_calls':{}}]}", "messages[0].tool_calls: expected array" },
		{ CHAT MSG ",'model':5}", "model: expected string" },
		{ CHAT MSG ",'model':''}", "model: must not be empty" },
		{ CHAT MSG ",'stream':1}", "stream: expected boolean" },
		{ CHAT MSG ",'stream':'yes'}", "stream: expected boolean" },
		{ CHAT MSG ",'max_tokens':'5'}", "max_tokens: expected integer" },
		{ CHAT MSG ",'max_tokens':5.0}", "max_tokens: expected integer" },
		{ CHAT MSG ",'max_tokens':0}", "max_tokens: must be >= 1" },
		{ CHAT MSG ",'max_tokens':-3}", "max_tokens: must be >= 1" },
		{ CHAT MSG ",'max_tokens':16777217}", "max_tokens: must be <= 16777216" },
		{ CHAT MSG ",'max_tokens':9223372036854775807}", "max_tokens: must be <= 16777216" },
		{ CHAT MSG ",'temperature':'hot'}", "temperature: expected number" },
		{ CHAT MSG ",'temperature':-0.5}", "temperature: out of range" },
		{ CHAT MSG ",'top_p':true}", "top_p: expected number" },
		{ CHAT MSG ",'top_p':1.5}", "top_p: out of range" },
		{ CHAT MSG ",'stop':5}", "stop: expected string or array of strings" },
		{ CHAT MSG ",'stop':['a',5]}", "stop[1]: expected string" },
		{ CHAT MSG ",'seed':1.5}", "seed: expected integer" },
		{ CHAT MSG ",'seed':'1'}", "seed: expected integer" },
		{ CHAT MSG ",'tag':{}}", "tag: expected string" },
		{ CHAT MSG ",'extra':[]}", "extra: expected map" },
		{ CHAT MSG ",'extra':'x'}", "extra: expected map" },
#define TOK "{'v':1,'id':7,'op':'tokens',"
		{ TOK "'text':5}", "text: expected string" },
		{ TOK "'messages':'hi'}", "messages: expected array" },
		{ TOK "'messages':[{'role':7}]}", "messages[0].role: expected string" },
		{ TOK "'text':'a','encoding':5}", "encoding: expected string" },
		{ TOK "'text':'a','model':false}", "model: expected string" },
		{ TOK "'text':'a','ids':'yes'}", "ids: expected boolean" },
		{ TOK "'ids':true}", "exactly one of them is required" },
		{ TOK "'text':'a'," MSG "}", "exactly one of them is required" },
#define STATS "{'v':1,'id':7,'op':'stats',"
		{ STATS "'by':5}", "by: expected string" },
		{ STATS "'by':'week'}", "by: expected one of model, user, tag, day" },
		{ STATS "'since':'2024-01-01'}", "since: expected integer" },
		{ STATS "'since':-5}", "since: must be >= 0" },
#define CANCEL "{'v':1,'id':7,'op':'cancel',"
		{ CANCEL "'target':'3'}", "target: expected integer" },
		{ CANCEL "'target':0}", "target: must be >= 1" },
		{ CANCEL "'target':-1}", "target: must be >= 1" },
		{ CANCEL "'target':null}", "target: expected integer" },
		{ "{'v':1,'id':7,'op':'cancel'}", "target: missing" },
		{ "{'v':'1','id':7,'op':'ping'}", "v: expected integer" },
		{ "{'v':1.0,'id':7,'op':'ping'}", "v: expected integer" },
		{ "{'v':1,'id':7,'op':5}", "op: expected string" },
	};
	size_t i;

	for (i = 0; i < sizeof cases / sizeof cases[0]; i++)
		expect_json_error(cases[i].json, "bad_request", cases[i].expect, 7);

	/* The id itself: not readable, so the error goes out with id 0. */
	expect_json_error("{'v':1,'id':'7','op':'ping'}", "bad_request",
	    "id: expected integer", 0);
	expect_json_error("{'v':1,'id':0,'op':'ping'}", "bad_request", "id: must be >= 1", 0);
	expect_json_error("{'v':1,'id':-7,'op':'ping'}", "bad_request", "id: must be >= 1", 0);
	expect_json_error("{'v':1,'id':7.0,'op':'ping'}", "bad_request",
	    "id: expected integer", 0);
}
END_TEST

START_TEST(missing_header_fields)
{
	expect_json_error("{'id':7,'op':'ping'}", "bad_request", "v: missing", 7);
	expect_json_error("{'v':1,'op':'ping'}", "bad_request", "id: missing", 0);
	expect_json_error("{'v':1,'id':7}", "bad_request", "op: missing", 7);
	expect_json_error("{'v':1,'id':7,'op':null}", "bad_request", "op: expected string", 7);
	expect_json_error("{}", "bad_request", "v: missing", 0);
	expect_json_error("{'v':2,'id':7,'op':'ping'}", "unsupported_version",
	    "version 2", 7);
	expect_json_error("{'v':0,'id':7,'op':'ping'}", "unsupported_version",
	    "version 0", 7);
	expect_json_error("{'v':-1,'id':7,'op':'chat'}", "unsupported_version",
	    "version -1", 7);
	/* An unknown version is reported even when the rest would not parse. */
	expect_json_error("{'v':2,'id':9,'op':'chat','messages':5}",
	    "unsupported_version", "version 2", 9);
	expect_json_error("{'v':1,'id':7,'op':'summon'}", "unknown_op",
	    "unknown op \"summon\"", 7);
	expect_json_error("{'v':1,'id':7,'op':'Chat'}", "unknown_op", "\"Chat\"", 7);
}
END_TEST

START_TEST(unknown_keys_and_numbers)
{
	struct request *rq;

	rq = json_request("{'v':1,'id':7,'op':'chat','future':{'x':[1,2,{'y':null}]},"
	    "'messages':[{'role':'user','content':'hi','mood':'happy'}],"
	    "'temperature':1,'top_p':0,'seed':-9,'max_tokens':4096,'stream':false}");
	ck_assert_int_eq(rq->op, OP_CHAT);
	ck_assert_str_eq(rq->u.chat.messages[0].content, "hi");
	ck_assert_double_eq(rq->u.chat.temperature, 1.0);
	ck_assert_double_eq(rq->u.chat.top_p, 0.0);
	ck_assert_int_eq(rq->u.chat.seed, -9);
	ck_assert_int_eq(rq->u.chat.max_tokens, 4096);
	ck_assert(!rq->u.chat.stream);
	message_request_free(rq);

	rq = json_request("{'op':'ping','id':9223372036854775807,'v':1,'later':true}");
	ck_assert_int_eq(rq->op, OP_PING);
	ck_assert_uint_eq(rq->id, INT64_MAX);
	message_request_free(rq);
}
END_TEST

START_TEST(float32_and_int_keys)
{
	struct message_error err;
	struct request *rq;
	struct body b;

	/* A float32 temperature and an integer key (ignored) in the body. */
	body_init(&b);
	msgpack_pack_map(&b.pk, 6);
	pack_s(&b, "v");
	msgpack_pack_int(&b.pk, 1);
	pack_s(&b, "id");
	msgpack_pack_int(&b.pk, 7);
	pack_s(&b, "op");
	pack_s(&b, "chat");
	pack_s(&b, "messages");
	msgpack_pack_array(&b.pk, 1);
	msgpack_pack_map(&b.pk, 1);
	pack_s(&b, "role");
	pack_s(&b, "user");
	pack_s(&b, "temperature");
	msgpack_pack_float(&b.pk, 0.5f);
	msgpack_pack_int(&b.pk, 42);
	msgpack_pack_int(&b.pk, 42);
	ck_assert_int_eq(message_request_decode((uint8_t *)b.sb.data, b.sb.size, &rq,
	    &err), 0);
	ck_assert_double_eq(rq->u.chat.temperature, 0.5);
	message_request_free(rq);
	body_clear(&b);
}
END_TEST

START_TEST(extra_must_be_json)
{
	struct body b;

	/* bin inside extra */
	deep_extra(&b, 1);
	b.sb.size--;
	msgpack_pack_bin_with_body(&b.pk, "ab", 2);
	expect_request_error((uint8_t *)b.sb.data, b.sb.size, "bad_request",
	    "extra: holds a bin or ext value", 7);
	body_clear(&b);

	/* a non-string key inside extra */
	deep_extra(&b, 2);
	b.sb.size -= 2;
	msgpack_pack_map(&b.pk, 1);
	msgpack_pack_int(&b.pk, 1);
	msgpack_pack_int(&b.pk, 1);
	expect_request_error((uint8_t *)b.sb.data, b.sb.size, "bad_request",
	    "extra: holds a map key that is not a string", 7);
	body_clear(&b);

	/* invalid UTF-8 inside extra */
	deep_extra(&b, 1);
	b.sb.size--;
	msgpack_pack_str_with_body(&b.pk, "\xed\xa0\x80", 3);
	expect_request_error((uint8_t *)b.sb.data, b.sb.size, "bad_request",
	    "extra: holds a string that is not valid UTF-8", 7);
	body_clear(&b);

	/* NaN inside extra */
	deep_extra(&b, 1);
	b.sb.size--;
	msgpack_pack_double(&b.pk, NAN);
	expect_request_error((uint8_t *)b.sb.data, b.sb.size, "bad_request",
	    "extra: holds a number that is not finite", 7);
	body_clear(&b);
}
END_TEST

START_TEST(malformed_bodies)
{
	static const uint8_t array[] = { 0x91, 0x01 };
	static const uint8_t integer[] = { 0x05 };
	static const uint8_t reserved[] = { 0x81, 0xa1, 0x76, 0xc1 };
	static const uint8_t cut[] = { 0x81, 0xa1, 0x76, 0xd9 };
	static const uint8_t few[] = { 0x82, 0xa1, 0x76, 0x01 };
	/* {"v":1,"id":7,"op":"ping","op":"chat"} */
	static const uint8_t dup[] = { 0x84, 0xa1, 0x76, 0x01, 0xa2, 0x69, 0x64, 0x07,
	    0xa2, 0x6f, 0x70, 0xa4, 0x70, 0x69, 0x6e, 0x67, 0xa2, 0x6f, 0x70, 0xa4, 0x63,
	    0x68, 0x61, 0x74 };
	struct body b;

	expect_request_error(array, sizeof array, "bad_frame", "not a msgpack map", 0);
	expect_request_error(integer, sizeof integer, "bad_frame", "not a msgpack map", 0);
	expect_request_error(reserved, sizeof reserved, "bad_frame", "reserved", 0);
	expect_request_error(cut, sizeof cut, "bad_frame", "truncated", 0);
	expect_request_error(few, sizeof few, "bad_frame", "more entries than bytes left", 0);
	expect_request_error(dup, sizeof dup, "bad_request", "op: duplicate key", 7);
	expect_request_error(array, 0, "bad_frame", "not a msgpack map", 0);

	/* A whole valid request followed by garbage. */
	body_json(&b, "{'v':1,'id':7,'op':'ping'}");
	msgpack_sbuffer_write(&b.sb, "\x00\x01", 2);
	expect_request_error((uint8_t *)b.sb.data, b.sb.size, "bad_frame",
	    "2 bytes after the map", 0);
	body_clear(&b);
	body_json(&b, "{'v':1,'id':7,'op':'ping'}");
	msgpack_pack_map(&b.pk, 0);
	expect_request_error((uint8_t *)b.sb.data, b.sb.size, "bad_frame",
	    "1 bytes after the map", 0);
	body_clear(&b);
}
END_TEST

START_TEST(reply_validation)
{
	struct message_error err;
	struct reply *rp;
	struct body b;

	expect_json_reply_error("{'type':'delta'}", OP_CHAT, "id: missing");
	expect_json_reply_error("{'id':1,'type':'nope'}", OP_CHAT,
	    "unknown reply type \"nope\"");
	expect_json_reply_error("{'id':1,'type':5}", OP_CHAT, "type: expected string");
	expect_json_reply_error("{'id':1,'type':'delta','content':5}", OP_CHAT,
	    "content: expected string");
	expect_json_reply_error("{'id':1,'type':'delta','tool_calls':{}}", OP_CHAT,
	    "tool_calls: expected array");
	expect_json_reply_error("{'id':1,'type':'done','cost':0}", OP_CHAT, "usage: missing");
	expect_json_reply_error("{'id':1,'type':'done','cost':0,'usage':{'prompt_tokens':'1',"
	    "'completion_tokens':1,'total_tokens':2}}", OP_CHAT,
	    "usage.prompt_tokens: expected integer");
	expect_json_reply_error("{'id':1,'type':'done','usage':{'prompt_tokens':1,"
	    "'completion_tokens':1,'total_tokens':2}}", OP_CHAT, "cost: missing");
	expect_json_reply_error("{'id':1,'type':'done','cost':0,'ttft_ms':-1,'usage':"
	    "{'prompt_tokens':1,'completion_tokens':1,'total_tokens':2}}", OP_CHAT,
	    "ttft_ms: must be >= 0");
	expect_json_reply_error("{'id':1,'type':'error','message':'m'}", OP_CHAT,
	    "code: missing");
	expect_json_reply_error("{'id':1,'type':'error','code':'x','message':'m',"
	    "'retry_after':'soon'}", OP_CHAT, "retry_after: expected number");
	expect_json_reply_error("{'id':1,'type':'error','code':'x','message':'m',"
	    "'detail':[]}", OP_CHAT, "detail: expected map");
	expect_json_reply_error("{'id':1,'type':'result','version':5,'uptime_s':1,"
	    "'in_flight':0}", OP_PING, "version: expected string");
	expect_json_reply_error("{'id':1,'type':'result','count':1,'encoding':'e',"
	    "'ids':[4294967296]}", OP_TOKENS, "ids[0]: must be <= 4294967295");
	expect_json_reply_error("{'id':1,'type':'result','count':1,'encoding':'e',"
	    "'ids':[-1]}", OP_TOKENS, "ids[0]: must be >= 0");
	expect_json_reply_error("{'id':1,'type':'result','since':0}", OP_STATS,
	    "total: missing");
	expect_json_reply_error("{'id':1,'type':'result','since':0,'total':{'requests':1,"
	    "'errors':0,'prompt_tokens':0,'completion_tokens':0,'total_tokens':0,"
	    "'estimated':0,'cost':0},'by_model':{'m':5}}", OP_STATS,
	    "by_model[0]: expected map");
	expect_json_reply_error("{'id':1,'type':'result','upstreams':[{'name':'a',"
	    "'base_url':'u','healthy':1,'in_flight':0}]}", OP_MODELS,
	    "upstreams[0].healthy: expected boolean");
	expect_json_reply_error("{'id':1,'type':'result','ok':1}", OP_CANCEL,
	    "ok: expected boolean");
	expect_json_reply_error("{'id':1,'type':'result','ok':true}", OP_CHAT,
	    "a chat request is not answered by a result");

	/* The id is reported even when the rest is wrong. */
	body_json(&b, "{'id':42,'type':'error','code':5,'message':'m'}");
	ck_assert_int_eq(message_reply_decode((uint8_t *)b.sb.data, b.sb.size, OP_CHAT,
	    &rp, &err), -1);
	ck_assert_uint_eq(err.id, 42);
	body_clear(&b);
}
END_TEST

START_TEST(encoder_refuses)
{
	struct chat_message m = { .content = "x" };
	static const uint8_t cut_map[] = { 0x81, 0xa1, 0x61 };
	struct request rq;
	struct reply rp;
	msgpack_sbuffer sb;

	msgpack_sbuffer_init(&sb);
	msgpack_sbuffer_write(&sb, "keep", 4);

	message_request_init(&rq, OP_CHAT);
	rq.id = 1;
	rq.u.chat.messages = &m;
	rq.u.chat.n_messages = 1;
	ck_assert_int_eq(message_request_encode(&sb, &rq), -1);    /* role NULL */
	ck_assert_uint_eq(sb.size, 4);
	m.role = "user";
	m.content = "\xed\xa0\x80";
	ck_assert_int_eq(message_request_encode(&sb, &rq), -1);    /* not UTF-8 */
	m.content = "x";
	rq.u.chat.extra.data = (uint8_t *)cut_map;
	rq.u.chat.extra.len = sizeof cut_map;
	ck_assert_int_eq(message_request_encode(&sb, &rq), -1);    /* raw cut short */
	rq.u.chat.extra.data = NULL;
	rq.u.chat.temperature = INFINITY;
	ck_assert_int_eq(message_request_encode(&sb, &rq), -1);
	rq.u.chat.temperature = NAN;
	rq.id = 0;
	ck_assert_int_eq(message_request_encode(&sb, &rq), -1);    /* id 0 */
	rq.id = 1;
	rq.op = 99;
	ck_assert_int_eq(message_request_encode(&sb, &rq), -1);
	ck_assert_uint_eq(sb.size, 4);

	message_reply_init(&rp, REPLY_DONE, 0);
	rp.id = 1;
	rp.u.done.cost = NAN;
	ck_assert_int_eq(message_reply_encode(&sb, &rp), -1);
	message_reply_init(&rp, REPLY_ERROR, 0);
	rp.u.error.code = "internal";
	ck_assert_int_eq(message_reply_encode(&sb, &rp), -1);      /* message NULL */
	message_reply_init(&rp, REPLY_RESULT, OP_CHAT);
	ck_assert_int_eq(message_reply_encode(&sb, &rp), -1);
	ck_assert_uint_eq(sb.size, 4);
	ck_assert_mem_eq(sb.data, "keep", 4);
	msgpack_sbuffer_destroy(&sb);
}
END_TEST

START_TEST(op_names)
{
	enum message_op op;

	ck_assert_str_eq(message_op_name(OP_CHAT), "chat");
	ck_assert_str_eq(message_op_name(OP_RESET), "reset");
	ck_assert_ptr_null(message_op_name(0));
	ck_assert_str_eq(message_op_name(OP_LOGS), "logs");
	ck_assert_str_eq(message_op_name(OP_TOP), "top");
	ck_assert_ptr_null(message_op_name(10));
	ck_assert_int_eq(message_op_parse("top", 3, &op), 0);
	ck_assert_int_eq(op, OP_TOP);
	ck_assert_int_eq(message_op_parse("stats", 5, &op), 0);
	ck_assert_int_eq(op, OP_STATS);
	ck_assert_int_eq(message_op_parse("stat", 4, &op), -1);
	ck_assert_int_eq(message_op_parse("statsx", 6, &op), -1);
	ck_assert_int_eq(message_op_parse("", 0, &op), -1);
}
END_TEST

/* status frames: every field, then the required ones only. */
START_TEST(status_roundtrip)
{
	struct reply rp, *out;

	message_reply_init(&rp, REPLY_STATUS, 0);
	rp.id = 9;
	rp.u.status.state = "retrying";
	rp.u.status.reason = "connection refused";
	rp.u.status.message = "retry 2 of 5 in 1.0 s";
	rp.u.status.wait_s = 1.25;
	rp.u.status.attempt = 2;
	rp.u.status.of = 5;
	out = reply_roundtrip(&rp, OP_CHAT);
	ck_assert_int_eq(out->type, REPLY_STATUS);
	ck_assert_uint_eq(out->id, 9);
	ck_assert_str_eq(out->u.status.state, "retrying");
	ck_assert_str_eq(out->u.status.reason, "connection refused");
	ck_assert_str_eq(out->u.status.message, "retry 2 of 5 in 1.0 s");
	ck_assert_double_eq(out->u.status.wait_s, 1.25);
	ck_assert_int_eq(out->u.status.attempt, 2);
	ck_assert_int_eq(out->u.status.of, 5);
	message_reply_free(out);

	message_reply_init(&rp, REPLY_STATUS, 0);
	rp.id = 10;
	rp.u.status.state = "queued";
	rp.u.status.reason = "concurrency";
	rp.u.status.message = "all slots taken";
	out = reply_roundtrip(&rp, OP_CHAT);
	ck_assert_str_eq(out->u.status.reason, "concurrency");
	ck_assert(isnan(out->u.status.wait_s));
	ck_assert_int_eq(out->u.status.attempt, -1);
	ck_assert_int_eq(out->u.status.of, -1);
	message_reply_free(out);

	expect_json_reply_error("{'id':1,'type':'status','reason':'rpm','message':'m'}",
	    OP_CHAT, "state: missing");
	expect_json_reply_error("{'id':1,'type':'status','state':'queued','reason':'rpm',"
	    "'message':'m','wait_s':-1}", OP_CHAT, "wait_s: out of range");
	expect_json_reply_error("{'id':1,'type':'status','state':'retrying','reason':'x',"
	    "'message':'m','attempt':0}", OP_CHAT, "attempt: must be >= 1");
}
END_TEST

/* A reply of a type this side does not know is flagged, so a client can skip it. */
START_TEST(unknown_reply_type_flagged)
{
	struct message_error err;
	struct reply *rp;
	struct body b;

	body_json(&b, "{'id':7,'type':'progress','percent':50}");
	ck_assert_int_eq(message_reply_decode((uint8_t *)b.sb.data, b.sb.size, OP_CHAT,
	    &rp, &err), -1);
	ck_assert(err.unknown_type);
	ck_assert_uint_eq(err.id, 7);
	body_clear(&b);

	body_json(&b, "{'id':7,'type':'delta','content':5}");
	ck_assert_int_eq(message_reply_decode((uint8_t *)b.sb.data, b.sb.size, OP_CHAT,
	    &rp, &err), -1);
	ck_assert(!err.unknown_type);
	body_clear(&b);
}
END_TEST

/* The chat request's status flag travels only when set. */
START_TEST(chat_status_flag)
{
	struct chat_message m = { "user", "hi", NULL, NULL, { NULL, 0 }, 0 };
	struct request rq, *out;

	message_request_init(&rq, OP_CHAT);
	rq.id = 3;
	rq.u.chat.messages = &m;
	rq.u.chat.n_messages = 1;
	out = request_roundtrip(&rq);
	ck_assert(!out->u.chat.status);
	message_request_free(out);
	rq.u.chat.status = true;
	out = request_roundtrip(&rq);
	ck_assert(out->u.chat.status);
	message_request_free(out);
	expect_json_error("{'v':1,'id':4,'op':'chat','messages':[{'role':'user'}],'status':1}",
	    "bad_request", "status: expected boolean", 4);
}
END_TEST

START_TEST(logs_request_roundtrip)
{
	struct request rq, *out;

	message_request_init(&rq, OP_LOGS);
	rq.id = 11;
	out = request_roundtrip(&rq);
	ck_assert_int_eq(out->op, OP_LOGS);
	ck_assert_int_eq(out->u.logs.since, -1);
	ck_assert_int_eq(out->u.logs.until, -1);
	ck_assert_int_eq(out->u.logs.user, -1);
	ck_assert_int_eq(out->u.logs.limit, -1);
	ck_assert_ptr_null(out->u.logs.tag);
	ck_assert(!out->u.logs.fleet);
	message_request_free(out);

	rq.u.logs.since = 1700000000;
	rq.u.logs.fleet = true;
	rq.u.logs.until = 1800000000;
	rq.u.logs.user = 1000;
	rq.u.logs.tag = "";
	rq.u.logs.model = "qwen";
	rq.u.logs.status = "error";
	rq.u.logs.limit = 1000;
	out = request_roundtrip(&rq);
	ck_assert_int_eq(out->u.logs.since, 1700000000);
	ck_assert_int_eq(out->u.logs.until, 1800000000);
	ck_assert_int_eq(out->u.logs.user, 1000);
	ck_assert_str_eq(out->u.logs.tag, "");
	ck_assert_str_eq(out->u.logs.model, "qwen");
	ck_assert_str_eq(out->u.logs.status, "error");
	ck_assert_int_eq(out->u.logs.limit, 1000);
	ck_assert(out->u.logs.fleet);
	message_request_free(out);
	expect_json_error("{'v':1,'id':5,'op':'logs','fleet':1}", "bad_request",
	    "fleet: expected bool", 5);

	expect_json_error("{'v':1,'id':5,'op':'logs','limit':1001}", "bad_request",
	    "limit: at most 1000", 5);
	expect_json_error("{'v':1,'id':5,'op':'logs','limit':0}", "bad_request",
	    "limit: must be >= 1", 5);
	expect_json_error("{'v':1,'id':5,'op':'logs','status':'ok'}", "bad_request",
	    "status: expected one of done, error, cancelled", 5);
	expect_json_error("{'v':1,'id':5,'op':'logs','user':-1}", "bad_request",
	    "user: must be >= 0", 5);
	expect_json_error("{'v':1,'id':5,'op':'logs','user':4294967296}", "bad_request",
	    "user: must be <= 4294967295", 5);
	expect_json_error("{'v':1,'id':5,'op':'logs','model':''}", "bad_request",
	    "model: must not be empty", 5);
	expect_json_error("{'v':1,'id':5,'op':'logs','user':''}", "bad_request",
	    "user: must not be empty", 5);

	/* a named user's rows: user as a string */
	message_request_init(&rq, OP_LOGS);
	rq.id = 12;
	rq.u.logs.user_name = "alice";
	out = request_roundtrip(&rq);
	ck_assert_int_eq(out->u.logs.user, -1);
	ck_assert_str_eq(out->u.logs.user_name, "alice");
	message_request_free(out);
}
END_TEST

START_TEST(logs_result_roundtrip)
{
	struct log_row rows[2] = {
		{ 1714521600123, 1000, "ci", "qwen", "local", "done", NULL, 12, 34, false,
		    0.25, 800, 120, NULL, NULL },
		{ 1714521500000, 4294967295u, NULL, "qwen", "local", "error", "upstream_unavailable",
		    9, 0, true, 0, 15, -1, "node-b", "alice" },
	};
	struct reply rp, *out;
	struct logs_result *l;

	message_reply_init(&rp, REPLY_RESULT, OP_LOGS);
	rp.id = 12;
	rp.u.result.u.logs.rows = rows;
	rp.u.result.u.logs.n = 2;
	rp.u.result.u.logs.truncated = true;
	out = reply_roundtrip(&rp, OP_LOGS);
	l = &out->u.result.u.logs;
	ck_assert_uint_eq(l->n, 2);
	ck_assert(l->truncated);
	ck_assert_int_eq(l->rows[0].time_ms, 1714521600123);
	ck_assert_uint_eq(l->rows[0].uid, 1000);
	ck_assert_str_eq(l->rows[0].tag, "ci");
	ck_assert_str_eq(l->rows[0].status, "done");
	ck_assert_ptr_null(l->rows[0].error);
	ck_assert_int_eq(l->rows[0].completion_tokens, 34);
	ck_assert_double_eq(l->rows[0].cost, 0.25);
	ck_assert_int_eq(l->rows[0].ttft_ms, 120);
	ck_assert_ptr_null(l->rows[0].node);
	ck_assert_str_eq(l->rows[1].node, "node-b");
	ck_assert_ptr_null(l->rows[1].tag);
	ck_assert_str_eq(l->rows[1].error, "upstream_unavailable");
	ck_assert(l->rows[1].estimated);
	ck_assert_int_eq(l->rows[1].ttft_ms, -1);
	/* a named user's row carries the name; a uid's none */
	ck_assert_ptr_null(l->rows[0].user);
	ck_assert_str_eq(l->rows[1].user, "alice");
	ck_assert_uint_eq(l->rows[1].uid, 4294967295u);
	message_reply_free(out);

	message_reply_init(&rp, REPLY_RESULT, OP_LOGS);
	rp.id = 13;
	out = reply_roundtrip(&rp, OP_LOGS);
	ck_assert_uint_eq(out->u.result.u.logs.n, 0);
	ck_assert(!out->u.result.u.logs.truncated);
	message_reply_free(out);

	expect_json_reply_error("{'id':1,'type':'result'}", OP_LOGS, "rows: missing");
	expect_json_reply_error("{'id':1,'type':'result','rows':[{'time_ms':1,'uid':0,"
	    "'model':'m','upstream':'u','status':'done','prompt_tokens':1,"
	    "'completion_tokens':1,'estimated':false,'cost':0}]}", OP_LOGS,
	    "rows[0].latency_ms: missing");
}
END_TEST

START_TEST(top_result_roundtrip)
{
	struct top_chat chats[2] = {
		{ 5, 1000, "qwen", "local", "ci", "running", 2500, 40, 16.0, NULL },
		{ 6, 4294967295u, "qwen", "local", NULL, "queued", 100, 0, 0, "alice" },
	};
	struct top_model models[1] = { { "qwen", 2, 16.0 } };
	struct top_upstream ups[2] = { { "local", true, 1, 1 }, { "spare", false, 0, 0 } };
	struct budget_status budgets[1] = { { "all", "money", "ever", 10.0, 0.5, 9.5 } };
	struct reply rp, *out;
	struct top_result *t;

	message_reply_init(&rp, REPLY_RESULT, OP_TOP);
	rp.id = 14;
	t = &rp.u.result.u.top;
	t->uptime_s = 3600;
	t->in_flight = 2;
	t->chats = chats;
	t->n_chats = 2;
	t->models = models;
	t->n_models = 1;
	t->upstreams = ups;
	t->n_upstreams = 2;
	t->budgets = budgets;
	t->n_budgets = 1;
	out = reply_roundtrip(&rp, OP_TOP);
	t = &out->u.result.u.top;
	ck_assert_int_eq(t->uptime_s, 3600);
	ck_assert_int_eq(t->in_flight, 2);
	ck_assert_uint_eq(t->n_chats, 2);
	ck_assert_uint_eq(t->chats[0].id, 5);
	ck_assert_uint_eq(t->chats[0].uid, 1000);
	ck_assert_str_eq(t->chats[0].tag, "ci");
	ck_assert_str_eq(t->chats[0].state, "running");
	ck_assert_int_eq(t->chats[0].age_ms, 2500);
	ck_assert_int_eq(t->chats[0].tokens, 40);
	ck_assert_double_eq(t->chats[0].tokens_per_s, 16.0);
	ck_assert_ptr_null(t->chats[1].tag);
	ck_assert_str_eq(t->chats[1].state, "queued");
	ck_assert_ptr_null(t->chats[0].user);
	ck_assert_str_eq(t->chats[1].user, "alice");
	ck_assert_uint_eq(t->n_models, 1);
	ck_assert_str_eq(t->models[0].model, "qwen");
	ck_assert_int_eq(t->models[0].in_flight, 2);
	ck_assert_uint_eq(t->n_upstreams, 2);
	ck_assert(t->upstreams[0].healthy);
	ck_assert_int_eq(t->upstreams[0].queued, 1);
	ck_assert(!t->upstreams[1].healthy);
	ck_assert_uint_eq(t->n_budgets, 1);
	ck_assert_double_eq(t->budgets[0].left, 9.5);
	message_reply_free(out);

	/* An idle daemon: empty arrays. */
	message_reply_init(&rp, REPLY_RESULT, OP_TOP);
	rp.id = 15;
	out = reply_roundtrip(&rp, OP_TOP);
	ck_assert_uint_eq(out->u.result.u.top.n_chats, 0);
	ck_assert_uint_eq(out->u.result.u.top.n_budgets, 0);
	message_reply_free(out);

	expect_json_reply_error("{'id':1,'type':'result','uptime_s':1,'in_flight':0,"
	    "'chats':[5]}", OP_TOP, "chats[0]: expected map");
	expect_json_reply_error("{'id':1,'type':'result','uptime_s':1,'in_flight':0,"
	    "'upstreams':[{'name':'a','healthy':true,'in_flight':0}]}", OP_TOP,
	    "upstreams[0].queued: missing");
}
END_TEST

/* Frames appended after one another in one buffer each carry their own header. */
START_TEST(encode_appends)
{
	struct request rq;
	struct reply rp;
	msgpack_sbuffer sb;
	size_t first;

	msgpack_sbuffer_init(&sb);
	message_request_init(&rq, OP_PING);
	rq.id = 1;
	ck_assert_int_eq(message_request_encode(&sb, &rq), 0);
	first = sb.size;
	/* {"v":1,"id":1,"op":"ping"} */
	ck_assert_uint_eq(first, 4 + 16);
	ck_assert_mem_eq(sb.data, "\x00\x00\x00\x10\x83\xa1v\x01\xa2id\x01\xa2op\xa4ping", 20);
	message_reply_init(&rp, REPLY_RESULT, OP_RESET);
	rp.id = 1;
	rp.u.result.u.ok = true;
	ck_assert_int_eq(message_reply_encode(&sb, &rp), 0);
	ck_assert_uint_eq((uint8_t)sb.data[first + 3], sb.size - first - 4);
	msgpack_sbuffer_destroy(&sb);
}
END_TEST

/* The growable buffer: always NUL-terminated, failures remembered, taken whole. */
START_TEST(buf_grows_and_remembers)
{
	struct buf b = { 0 };
	msgpack_packer pk;
	char *p;
	size_t len;

	ck_assert_ptr_null(buf_take(&b, &len));
	ck_assert_uint_eq(len, 0);
	for (int i = 0; i < 1000; i++)
		ck_assert_int_eq(buf_add(&b, "ab", 2), 0);
	ck_assert_uint_eq(b.len, 2000);
	ck_assert(b.p[2000] == '\0' && b.cap > 2000);
	ck_assert_int_eq(buf_printf(&b, "%d-%s", 42, "x"), 0);
	ck_assert_str_eq(b.p + 2000, "42-x");
	ck_assert_int_eq(buf_add(&b, "\0z", 2), 0);
	ck_assert_uint_eq(b.len, 2006);
	ck_assert(b.p[2004] == '\0' && b.p[2005] == 'z' && b.p[2006] == '\0');
	/* a size that cannot be: refused, remembered, contents kept */
	ck_assert_int_eq(buf_reserve(&b, SIZE_MAX - 8), -1);
	ck_assert(b.oom && b.len == 2006 && b.p[2005] == 'z');
	buf_reset(&b);
	ck_assert(!b.oom && b.len == 0 && b.p[0] == '\0');
	msgpack_packer_init(&pk, &b, buf_msgpack_write);
	msgpack_pack_str_with_body(&pk, "hi", 2);
	ck_assert_uint_eq(b.len, 3);
	ck_assert((uint8_t)b.p[0] == 0xa2 && b.p[1] == 'h');
	ck_assert_int_eq(buf_adds(&b, "!"), 0);
	p = buf_take(&b, &len);
	ck_assert_uint_eq(len, 4);
	ck_assert(p[3] == '!' && p[4] == '\0');
	ck_assert_ptr_null(b.p);
	free(p);
	buf_free(&b);
}
END_TEST

/* Big-endian loads of every width, and the store the loads undo. */
START_TEST(be_loads_and_stores)
{
	const uint8_t x[8] = { 0x01, 0x02, 0x03, 0x04, 0xf5, 0xf6, 0xf7, 0xf8 };
	uint8_t y[4];

	ck_assert_uint_eq(be_load(x, 1), 0x01);
	ck_assert_uint_eq(be_load(x, 2), 0x0102);
	ck_assert_uint_eq(be_load(x, 8), UINT64_C(0x01020304f5f6f7f8));
	ck_assert_uint_eq(be_load32(x + 4), 0xf5f6f7f8u);
	be_store32(y, 0xdeadbeefu);
	ck_assert_uint_eq(be_load32(y), 0xdeadbeefu);
	ck_assert_uint_eq(y[0], 0xde);
}
END_TEST

static Suite *
protocol_suite(void)
{
	Suite *s = suite_create("protocol");
	TCase *tc;

	tc = tcase_create("roundtrip");
	tcase_add_test(tc, chat_all_fields);
	tcase_add_test(tc, chat_required_only);
	tcase_add_test(tc, tokens_roundtrip);
	tcase_add_test(tc, small_requests_roundtrip);
	tcase_add_test(tc, delta_roundtrip);
	tcase_add_test(tc, done_roundtrip);
	tcase_add_test(tc, error_roundtrip);
	tcase_add_test(tc, ping_tokens_ok_results);
	tcase_add_test(tc, stats_result_roundtrip);
	tcase_add_test(tc, models_result_roundtrip);
	tcase_add_test(tc, encode_appends);
	tcase_add_test(tc, op_names);
	tcase_add_test(tc, status_roundtrip);
	tcase_add_test(tc, unknown_reply_type_flagged);
	tcase_add_test(tc, chat_status_flag);
	tcase_add_test(tc, logs_request_roundtrip);
	tcase_add_test(tc, logs_result_roundtrip);
	tcase_add_test(tc, top_result_roundtrip);
	suite_add_tcase(s, tc);

	tc = tcase_create("reader");
	tcase_add_test(tc, reader_bytewise);
	tcase_add_test(tc, reader_random_splits);
	tcase_add_test(tc, reader_truncated);
	tcase_add_test(tc, reader_bad_lengths);
	tcase_add_test(tc, reader_grows_with_input);
	suite_add_tcase(s, tc);

	tc = tcase_create("hostile");
	tcase_add_test(tc, huge_declared_counts);
	tcase_add_test(tc, nesting_depth);
	tcase_add_test(tc, utf8_validator);
	tcase_add_test(tc, utf8_in_messages);
	tcase_add_test(tc, wrong_types);
	tcase_add_test(tc, missing_header_fields);
	tcase_add_test(tc, unknown_keys_and_numbers);
	tcase_add_test(tc, float32_and_int_keys);
	tcase_add_test(tc, extra_must_be_json);
	tcase_add_test(tc, nul_in_text);
	tcase_add_test(tc, object_cap);
	tcase_add_test(tc, extra_caps);
	tcase_add_test(tc, malformed_bodies);
	tcase_add_test(tc, reply_validation);
	tcase_add_test(tc, encoder_refuses);
	tcase_add_test(tc, buf_grows_and_remembers);
	tcase_add_test(tc, be_loads_and_stores);
	suite_add_tcase(s, tc);
	return s;
}

int
main(void)
{
	SRunner *sr = srunner_create(protocol_suite());
	int failed;

	srunner_run_all(sr, CK_NORMAL);
	failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
