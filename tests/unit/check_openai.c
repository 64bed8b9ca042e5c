/* check_openai.c: unit tests of the OpenAI dialect handling. */
#include "config.h"

#include <sys/types.h>
#include <sys/socket.h>
#include <sys/wait.h>

#include <netinet/in.h>
#include <arpa/inet.h>

#include <check.h>
#include <errno.h>
#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "daemon/api_body.h"
#include "daemon/openai.h"
#include "daemon/sse.h"

/* Parse one chunk that must succeed. */
static void
chunk_ok(const char *json, struct openai_chunk *c)
{
	char	cause[256] = "";

	if (openai_parse_chunk(json, strlen(json), c, cause, sizeof cause) != 0)
		ck_abort_msg("chunk failed: %s: %s", cause, json);
}

/* msgpack bytes of a JSON text, in a message_raw. */
static struct message_raw
raw_of(const char *json)
{
	struct message_raw	 raw;
	msgpack_sbuffer		 sb;
	msgpack_packer		 pk;
	json_t			*v;

	v = json_loads(json, 0, NULL);
	ck_assert(v != NULL);
	msgpack_sbuffer_init(&sb);
	msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
	ck_assert_int_eq(openai_json_to_msgpack(v, &pk), 0);
	json_decref(v);
	raw.data = (uint8_t *)sb.data;
	raw.len = sb.size;
	return (raw);
}

/* Whether raw msgpack equals a JSON text. */
static bool
raw_is(const struct message_raw *raw, const char *json)
{
	json_t	*a, *b;
	bool	 eq;

	a = openai_msgpack_to_json(raw->data, raw->len);
	b = json_loads(json, 0, NULL);
	ck_assert(b != NULL);
	eq = a != NULL && json_equal(a, b);
	json_decref(a);
	json_decref(b);
	return (eq);
}

/* --- request body ----------------------------------------------------- */

START_TEST(test_body_full)
{
	struct chat_message	 msgs[4];
	struct chat_request	 req;
	char			*stop[] = { "\n\n", "END" }, cause[256] = "";
	char			*body;
	const char		*tc = "[{\"id\":\"call_1\",\"type\":\"function\","
	    "\"function\":{\"name\":\"get_weather\",\"arguments\":"
	    "\"{\\\"city\\\":\\\"Paris\\\",\\\"days\\\":3}\"}}]";
	json_t			*root, *root2, *m, *v;

	memset(msgs, 0, sizeof msgs);
	msgs[0].role = "system";
	msgs[0].content = "Be brief.";
	msgs[1].role = "user";
	msgs[1].content = "Weather in Paris? \xc3\xa9";
	msgs[1].name = "alice";
	msgs[2].role = "assistant";
	msgs[2].tool_calls = raw_of(tc);
	msgs[3].role = "tool";
	msgs[3].content = "{\"temp\":21}";
	msgs[3].tool_call_id = "call_1";

	memset(&req, 0, sizeof req);
	req.messages = msgs;
	req.n_messages = 4;
	req.model = "client-model";
	req.stream = true;
	req.max_tokens = 100;
	req.temperature = 0.7;
	req.top_p = 0.9;
	req.stop = stop;
	req.n_stop = 2;
	req.seed = 42;
	req.has_seed = true;
	req.extra = raw_of("{\"response_format\":{\"type\":\"json_object\"},"
	    "\"temperature\":0.2,\"top_p\":null,"
	    "\"presence_penalty\":1,\"logit_bias\":{\"50256\":-100}}");

	body = openai_chat_body(&req, "upstream-model", true, cause,
	    sizeof cause);
	ck_assert_msg(body != NULL, "%s", cause);
	/* Short reals when exact, compact form. */
	ck_assert(strstr(body, "\"temperature\":0.2") != NULL);
	ck_assert(strstr(body, "\"max_tokens\":100") != NULL);
	ck_assert(strchr(body, '\n') == NULL);

	root = json_loads(body, 0, NULL);
	ck_assert(root != NULL);
	ck_assert_str_eq(json_string_value(json_object_get(root, "model")),
	    "upstream-model");
	ck_assert(json_is_true(json_object_get(root, "stream")));
	v = json_object_get(json_object_get(root, "stream_options"),
	    "include_usage");
	ck_assert(json_is_true(v));
	ck_assert_int_eq(json_integer_value(json_object_get(root, "max_tokens")),
	    100);
	ck_assert(json_real_value(json_object_get(root, "temperature")) == 0.2);
	ck_assert(json_object_get(root, "top_p") == NULL);
	ck_assert_int_eq(json_integer_value(json_object_get(root, "seed")), 42);
	ck_assert_int_eq(json_integer_value(json_object_get(root, "presence_penalty")), 1);
	ck_assert(json_is_integer(json_object_get(json_object_get(root,
	    "logit_bias"), "50256")));
	v = json_object_get(root, "stop");
	ck_assert_uint_eq(json_array_size(v), 2);
	ck_assert_str_eq(json_string_value(json_array_get(v, 0)), "\n\n");
	ck_assert_str_eq(json_string_value(json_object_get(json_object_get(root,
	    "response_format"), "type")), "json_object");

	v = json_object_get(root, "messages");
	ck_assert_uint_eq(json_array_size(v), 4);
	m = json_array_get(v, 1);
	ck_assert_str_eq(json_string_value(json_object_get(m, "role")), "user");
	ck_assert_str_eq(json_string_value(json_object_get(m, "content")),
	    "Weather in Paris? \xc3\xa9");
	ck_assert_str_eq(json_string_value(json_object_get(m, "name")), "alice");
	m = json_array_get(v, 2);
	ck_assert(json_is_null(json_object_get(m, "content")));
	root2 = json_loads(tc, 0, NULL);
	ck_assert(json_equal(json_object_get(m, "tool_calls"), root2));
	json_decref(root2);
	m = json_array_get(v, 3);
	ck_assert_str_eq(json_string_value(json_object_get(m, "tool_call_id")),
	    "call_1");
	ck_assert(json_object_get(m, "name") == NULL);

	json_decref(root);
	free(body);
	free(msgs[2].tool_calls.data);
	free(req.extra.data);
}
END_TEST

/* A NUL in a message's content goes upstream escaped, nothing cut. */
START_TEST(test_body_nul)
{
	struct chat_message	 msg;
	struct chat_request	 req;
	char			 cause[256] = "", *body;
	json_t			*root, *c;

	memset(&msg, 0, sizeof msg);
	msg.role = "user";
	static const uint8_t extra[] = { 0x81, 0xa1, 's', 0xa3, 'x', 0, 'y' };

	msg.content = "a\0b";
	msg.content_len = 3;
	memset(&req, 0, sizeof req);
	req.messages = &msg;
	req.n_messages = 1;
	req.max_tokens = -1;
	req.temperature = NAN;
	req.top_p = NAN;
	req.extra.data = (uint8_t *)extra;
	req.extra.len = sizeof extra;

	body = openai_chat_body(&req, "m", false, cause, sizeof cause);
	ck_assert_msg(body != NULL, "%s", cause);
	ck_assert_msg(strstr(body, "\"content\":\"a\\u0000b\"") != NULL, "%s", body);
	ck_assert_msg(strstr(body, "\"s\":\"x\\u0000y\"") != NULL, "%s", body);
	root = json_loads(body, JSON_ALLOW_NUL, NULL);
	ck_assert(root != NULL);
	c = json_object_get(json_array_get(json_object_get(root, "messages"), 0),
	    "content");
	ck_assert_uint_eq(json_string_length(c), 3);
	ck_assert_mem_eq(json_string_value(c), "a\0b", 3);
	json_decref(root);
	free(body);
}
END_TEST

/*
 * The usual body is written without a jansson document: byte for byte what
 * the document gives (here forced by an empty `extra`) for text with every
 * kind of character, and the same refusal of text that is not UTF-8.
 */
START_TEST(test_body_fast_same)
{
	static const char *texts[] = {
		"", "plain", "q\" b\\ s/", "\b\f\n\r\t", "\x01\x1f\x7f",
		"\xc3\xa9 \xe4\xb8\xad \xf0\x9f\x98\x80", "\xe2\x80\xa8 line sep",
		"<script>", "a\"\\\"\\",
	};
	static const char *bad[] = { "\xc3", "\xed\xa0\x80", "\xff", "ok\xc0\xaf" };
	struct chat_message	 msgs[3];
	struct chat_request	 req;
	char			*stop[2], *fast, *slow, cause[256];
	size_t			 i, j, n = sizeof texts / sizeof texts[0];

	for (i = 0; i < n; i++) {
		for (int shape = 0; shape < 4; shape++) {
			memset(msgs, 0, sizeof msgs);
			msgs[0].role = "system";
			msgs[0].content = (char *)texts[i];
			msgs[1].role = (char *)texts[(i + 1) % n];
			msgs[1].content = shape == 1 ? NULL : (char *)texts[(i + 2) % n];
			msgs[1].name = shape == 2 ? (char *)texts[(i + 3) % n] : NULL;
			msgs[2].role = "tool";
			msgs[2].content = (char *)texts[(i + 4) % n];
			msgs[2].tool_call_id = shape == 3 ? (char *)texts[(i + 5) % n] : NULL;
			stop[0] = (char *)texts[(i + 6) % n];
			stop[1] = (char *)texts[(i + 7) % n];
			memset(&req, 0, sizeof req);
			req.messages = msgs;
			req.n_messages = 3;
			req.model = shape == 0 ? NULL : (char *)texts[(i + 8) % n];
			req.max_tokens = shape == 2 ? -1 : 4096;
			req.temperature = NAN;
			req.top_p = NAN;
			req.stop = stop;
			req.n_stop = (size_t)shape % 3;
			req.seed = -7;
			req.has_seed = shape == 3;
			fast = openai_chat_body(&req, shape == 1 ? "up\"model" : NULL,
			    shape != 2, cause, sizeof cause);
			ck_assert_msg(fast != NULL, "%s", cause);
			req.extra = raw_of("{}");
			slow = openai_chat_body(&req, shape == 1 ? "up\"model" : NULL,
			    shape != 2, cause, sizeof cause);
			ck_assert_msg(slow != NULL, "%s", cause);
			ck_assert_str_eq(fast, slow);
			free(req.extra.data);
			free(fast);
			free(slow);
		}
	}
	/* NUL inside a content with its length */
	memset(msgs, 0, sizeof msgs);
	msgs[0].role = "user";
	msgs[0].content = "a\0b";
	msgs[0].content_len = 3;
	memset(&req, 0, sizeof req);
	req.messages = msgs;
	req.n_messages = 1;
	req.max_tokens = -1;
	req.temperature = req.top_p = NAN;
	fast = openai_chat_body(&req, "m", true, cause, sizeof cause);
	req.extra = raw_of("{}");
	slow = openai_chat_body(&req, "m", true, cause, sizeof cause);
	ck_assert(fast != NULL && slow != NULL);
	ck_assert_str_eq(fast, slow);
	ck_assert(strstr(fast, "a\\u0000b") != NULL);
	free(req.extra.data);
	free(fast);
	free(slow);

	for (j = 0; j < sizeof bad / sizeof bad[0]; j++) {
		for (int where = 0; where < 3; where++) {
			memset(msgs, 0, sizeof msgs);
			msgs[0].role = where == 0 ? (char *)bad[j] : "user";
			msgs[0].content = where == 1 ? (char *)bad[j] : "hi";
			stop[0] = (char *)bad[j];
			memset(&req, 0, sizeof req);
			req.messages = msgs;
			req.n_messages = 1;
			req.max_tokens = -1;
			req.temperature = req.top_p = NAN;
			req.stop = stop;
			req.n_stop = where == 2;
			ck_assert(openai_chat_body(&req, "m", true, cause, sizeof cause) == NULL);
		}
	}
}
END_TEST

START_TEST(test_body_minimal)
{
	struct chat_message	 msg;
	struct chat_request	 req;
	char			 cause[256] = "", *body;
	json_t			*root, *m;

	memset(&msg, 0, sizeof msg);
	msg.role = "user";
	memset(&req, 0, sizeof req);
	req.messages = &msg;
	req.n_messages = 1;
	req.max_tokens = -1;
	req.temperature = NAN;
	req.top_p = NAN;

	body = openai_chat_body(&req, NULL, false, cause, sizeof cause);
	ck_assert_msg(body != NULL, "%s", cause);
	root = json_loads(body, 0, NULL);
	ck_assert(root != NULL);
	ck_assert(json_is_false(json_object_get(root, "stream")));
	ck_assert(json_object_get(root, "stream_options") == NULL);
	ck_assert(json_object_get(root, "model") == NULL);
	ck_assert(json_object_get(root, "max_tokens") == NULL);
	ck_assert(json_object_get(root, "temperature") == NULL);
	ck_assert(json_object_get(root, "top_p") == NULL);
	ck_assert(json_object_get(root, "stop") == NULL);
	ck_assert(json_object_get(root, "seed") == NULL);
	m = json_array_get(json_object_get(root, "messages"), 0);
	ck_assert_str_eq(json_string_value(json_object_get(m, "content")), "");
	json_decref(root);
	free(body);

	/* A real that needs 17 digits keeps them. */
	req.temperature = 0.1 + 0.2;
	body = openai_chat_body(&req, "m", true, cause, sizeof cause);
	ck_assert(body != NULL);
	root = json_loads(body, 0, NULL);
	ck_assert(json_real_value(json_object_get(root, "temperature")) ==
	    0.1 + 0.2);
	json_decref(root);
	free(body);

	/* Extra must be a map; stream_options can be removed. */
	req.extra = raw_of("[1]");
	ck_assert(openai_chat_body(&req, "m", true, cause, sizeof cause) ==
	    NULL);
	ck_assert(strstr(cause, "extra") != NULL);
	free(req.extra.data);
	req.extra = raw_of("{\"stream_options\":null}");
	body = openai_chat_body(&req, "m", true, cause, sizeof cause);
	ck_assert(body != NULL);
	ck_assert(strstr(body, "stream_options") == NULL);
	free(body);
	free(req.extra.data);

	/* Keys that routing, parsing or accounting rely on are refused, by name. */
	{
		static const char *const refused[] = { "model", "messages", "prompt",
		    "stream", "stream_options", "max_tokens", "max_completion_tokens",
		    "max_new_tokens", "n_predict", "n", "best_of", "user" };
		char json[128], want[64];

		for (size_t i = 0; i < sizeof refused / sizeof refused[0]; i++) {
			snprintf(json, sizeof json, "{\"seed\":1,\"%s\":5000}", refused[i]);
			req.extra = raw_of(json);
			cause[0] = '\0';
			ck_assert(openai_chat_body(&req, "m", true, cause, sizeof cause) == NULL);
			snprintf(want, sizeof want, "extra.%s:", refused[i]);
			ck_assert_msg(strstr(cause, want) != NULL, "%s: %s", refused[i], cause);
			free(req.extra.data);
		}
		/* null removes most keys, but not those */
		req.extra = raw_of("{\"max_tokens\":null}");
		ck_assert(openai_chat_body(&req, "m", true, cause, sizeof cause) == NULL);
		ck_assert(strstr(cause, "extra.max_tokens:") != NULL);
		free(req.extra.data);
	}

	/* tool_calls must be an array. */
	memset(&req.extra, 0, sizeof req.extra);
	msg.tool_calls = raw_of("{\"id\":1}");
	ck_assert(openai_chat_body(&req, "m", true, cause, sizeof cause) ==
	    NULL);
	ck_assert(strstr(cause, "tool_calls") != NULL);
	free(msg.tool_calls.data);

	/* Invalid UTF-8 is refused. */
	memset(&msg.tool_calls, 0, sizeof msg.tool_calls);
	msg.content = "bad \xff";
	ck_assert(openai_chat_body(&req, "m", true, cause, sizeof cause) ==
	    NULL);
}
END_TEST

/* --- free-form values ------------------------------------------------- */

/* The HTTP front's chat bodies: NUL in content kept with its length, and errors that name the field. */
START_TEST(test_api_body_chat)
{
	static const char nul[] = "{\"model\":\"m\",\"stream\":true,\"stream_options\":"
	    "{\"include_usage\":true},\"messages\":[{\"role\":\"system\",\"content\":\"a\\u0000b\"},"
	    "{\"role\":\"user\",\"content\":[{\"type\":\"text\",\"text\":\"x\\u0000\"},"
	    "{\"type\":\"text\",\"text\":\"y\"}]}]}";
	static const struct { const char *body, *param, *message; } bad[] = {
		{ "{not json", "", "the body is not valid JSON" },
		{ "[1]", "", "the body must be a JSON object" },
		{ "{\"messages\":[]}", "messages", "messages must be a non-empty array" },
		{ "{\"messages\":[{\"role\":\"us\\u0000er\",\"content\":\"x\"}]}", "messages",
		  "messages[0] must be an object with a string role" },
		{ "{\"messages\":[{\"role\":\"user\",\"content\":\"x\",\"name\":\"a\\u0000\"}]}", "messages",
		  "messages[0].name must be a string" },
		{ "{\"messages\":[{\"role\":\"user\",\"content\":[{\"type\":\"text\\u0000x\",\"text\":\"a\"}]}]}",
		  "messages", "only parts of type \"text\"" },
		{ "{\"model\":\"m\\u0000\",\"messages\":[{\"role\":\"user\",\"content\":\"x\"}]}", "model",
		  "model must be a string" },
		{ "{\"max_tokens\":0,\"messages\":[{\"role\":\"user\",\"content\":\"x\"}]}", "max_tokens",
		  "max_tokens must be an integer from 1 to 16777216" },
		/* the msgpack front's cap (MESSAGE_MAX_TOKENS), for both names */
		{ "{\"max_tokens\":16777217,\"messages\":[{\"role\":\"user\",\"content\":\"x\"}]}",
		  "max_tokens", "max_tokens must be an integer from 1 to 16777216" },
		{ "{\"max_completion_tokens\":9223372036854775807,\"messages\":[{\"role\":\"user\","
		  "\"content\":\"x\"}]}", "max_completion_tokens",
		  "max_completion_tokens must be an integer from 1 to 16777216" },
		{ "{\"messages\":[{\"role\":\"user\",\"content\":\"x\"}],\"messages\":[]}", "",
		  "duplicate" },
	};
	struct api_body_error err;
	struct request *rq;
	bool iu;

	rq = api_body_chat("{\"max_tokens\":16777216,\"messages\":[{\"role\":\"user\",\"content\":\"x\"}]}",
	    66, &iu, &err);
	ck_assert_msg(rq != NULL, "%s", err.message);
	ck_assert_int_eq(rq->u.chat.max_tokens, 16777216);
	message_request_free(rq);
	rq = api_body_chat(nul, sizeof nul - 1, &iu, &err);
	ck_assert_msg(rq != NULL, "%s", err.message);
	ck_assert(iu);
	ck_assert(rq->u.chat.stream);
	ck_assert_uint_eq(rq->u.chat.n_messages, 2);
	ck_assert_uint_eq(rq->u.chat.messages[0].content_len, 3);
	ck_assert_mem_eq(rq->u.chat.messages[0].content, "a\0b", 4);
	ck_assert_uint_eq(rq->u.chat.messages[1].content_len, 3);
	ck_assert_mem_eq(rq->u.chat.messages[1].content, "x\0y", 4);
	message_request_free(rq);

	for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
		rq = api_body_chat(bad[i].body, strlen(bad[i].body), &iu, &err);
		ck_assert_msg(rq == NULL, "accepted %s", bad[i].body);
		ck_assert_str_eq(err.param, bad[i].param);
		ck_assert_msg(strstr(err.message, bad[i].message) != NULL, "%s: %s", bad[i].body,
		    err.message);
	}
}
END_TEST

/* A passed-through body: what admission needs from it, and the body to send on. */
START_TEST(test_api_body_passthrough)
{
	static const char cmpl[] = "{\"model\":\"m\",\"prompt\":[\"ab\",\"c\\u0000d\",[1,2],[[3]]],"
	    "\"stream\":true,\"stream_options\":{\"include_usage\":true},\"max_tokens\":7,"
	    "\"echo\":false}";
	static const struct { bool embeddings; const char *body, *param, *message; } bad[] = {
		{ false, "{\"prompt\":{}}", "prompt", "prompt must be a string, an array of strings, "
		  "or token ids" },
		{ true, "{\"input\":[\"a\",{}]}", "input", "input must be" },
		{ true, "{\"prompt\":\"a\"}", "input", "input must be" },
		{ false, "{\"prompt\":\"a\",\"model\":7}", "model", "model has the wrong type" },
		{ false, "{\"prompt\":\"a\",\"stream\":1}", "stream", "stream has the wrong type" },
		{ false, "{\"prompt\":\"a\",\"max_tokens\":0}", "max_tokens", "max_tokens" },
		{ false, "{\"prompt\":\"a\",\"max_tokens\":16777217}", "max_tokens",
		  "max_tokens must be an integer from 1 to 16777216" },
		{ false, "{\"prompt\":\"a\",\"max_tokens\":9223372036854775807}", "max_tokens",
		  "max_tokens must be an integer from 1 to 16777216" },
		{ false, "{\"prompt\":\"a\",\"best_of\":2}", "n", "n and best_of must be 1" },
		{ false, "[1]", "", "the body must be a JSON object" },
		{ false, "{\"prompt\":\"a\",\"prompt\":\"b\"}", "", "duplicate" },
	};
	struct api_body_error err;
	struct api_body_pass p;
	json_t *j;

	ck_assert_int_eq(api_body_passthrough(cmpl, sizeof cmpl - 1, false, &p, &err), 0);
	ck_assert_str_eq(p.model, "m");
	ck_assert(p.stream && p.usage_wanted);
	ck_assert_int_eq(p.max_tokens, 7);
	ck_assert_uint_eq(p.prompt_len, 7);
	ck_assert_mem_eq(p.prompt_text, "ab\nc\0d\n", 8);
	ck_assert_int_eq(p.prompt_ids, 3);
	ck_assert_ptr_nonnull(j = json_loads(p.body, JSON_ALLOW_NUL, NULL));
	ck_assert(json_is_false(json_object_get(j, "echo")));
	json_decref(j);
	api_body_pass_clear(&p);
	/* embeddings: no stream, no length limit, whatever the body says */
	ck_assert_int_eq(api_body_passthrough("{\"input\":\"x y\",\"stream\":true,\"max_tokens\":3}",
	    44, true, &p, &err), 0);
	ck_assert(!p.stream);
	ck_assert_int_eq(p.max_tokens, -1);
	ck_assert_str_eq(p.prompt_text, "x y\n");
	ck_assert_ptr_null(p.model);
	api_body_pass_clear(&p);
	for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
		ck_assert_msg(api_body_passthrough(bad[i].body, strlen(bad[i].body), bad[i].embeddings,
		    &p, &err) == -1, "accepted %s", bad[i].body);
		ck_assert_str_eq(err.param, bad[i].param);
		ck_assert_msg(strstr(err.message, bad[i].message) != NULL, "%s: %s", bad[i].body,
		    err.message);
	}
}
END_TEST

START_TEST(test_msgpack_round_trip)
{
	const char		*j = "{\"i\":-5,\"big\":9007199254740993,"
	    "\"r\":1.5,\"whole\":2.0,\"s\":\"\xe2\x82\xac\",\"t\":true,"
	    "\"f\":false,\"n\":null,\"a\":[1,[2,[3]],{}],\"o\":{\"k\":\"v\"}}";
	struct message_raw	 raw = raw_of(j);
	json_t			*v;

	ck_assert(raw_is(&raw, j));
	v = openai_msgpack_to_json(raw.data, raw.len);
	ck_assert(json_is_integer(json_object_get(v, "big")));
	ck_assert(json_integer_value(json_object_get(v, "big")) ==
	    9007199254740993LL);
	ck_assert(json_is_real(json_object_get(v, "whole")));
	ck_assert(json_is_integer(json_object_get(v, "i")));
	json_decref(v);
	/* Trailing bytes and truncation are refused. */
	ck_assert(openai_msgpack_to_json(raw.data, raw.len - 1) == NULL);
	raw.data = realloc(raw.data, raw.len + 1);
	raw.data[raw.len] = 0xc0;
	ck_assert(openai_msgpack_to_json(raw.data, raw.len + 1) == NULL);
	free(raw.data);
}
END_TEST

START_TEST(test_msgpack_refused)
{
	static const uint8_t bin[] = { 0xc4, 0x01, 'x' };
	static const uint8_t ext[] = { 0xd4, 0x01, 0x00 };
	static const uint8_t intkey[] = { 0x81, 0x01, 0x02 };
	static const uint8_t huge_array[] = { 0xdd, 0xff, 0xff, 0xff, 0xff, 0 };
	static const uint8_t huge_map[] = { 0xdf, 0x7f, 0xff, 0xff, 0xff, 0 };
	static const uint8_t huge_str[] = { 0xdb, 0xff, 0xff, 0xff, 0xff, 'a' };
	static const uint8_t nul[] = { 0x81, 0xa3, 'a', 0, 'b', 0x01 };
	static const uint8_t bad_utf8[] = { 0xa2, 0xc3, 0x28 };
	static const uint8_t u64[] = { 0xcf, 0xff, 0, 0, 0, 0, 0, 0, 0 };
	static const uint8_t nan64[] = { 0xcb, 0x7f, 0xf8, 0, 0, 0, 0, 0, 0 };
	static const uint8_t never[] = { 0xc1 };
	static const uint8_t neg[] = { 0x92, 0xff, 0xd3, 0x80, 0, 0, 0, 0, 0, 0,
	    0 };
	uint8_t		 deep[64];
	json_t		*v;
	size_t		 i;

	ck_assert(openai_msgpack_to_json(bin, sizeof bin) == NULL);
	ck_assert(openai_msgpack_to_json(ext, sizeof ext) == NULL);
	ck_assert(openai_msgpack_to_json(intkey, sizeof intkey) == NULL);
	ck_assert(openai_msgpack_to_json(huge_array, sizeof huge_array) == NULL);
	ck_assert(openai_msgpack_to_json(huge_map, sizeof huge_map) == NULL);
	ck_assert(openai_msgpack_to_json(huge_str, sizeof huge_str) == NULL);
	ck_assert(openai_msgpack_to_json(nul, sizeof nul) == NULL);
	ck_assert(openai_msgpack_to_json(bad_utf8, sizeof bad_utf8) == NULL);
	ck_assert(openai_msgpack_to_json(u64, sizeof u64) == NULL);
	ck_assert(openai_msgpack_to_json(nan64, sizeof nan64) == NULL);
	ck_assert(openai_msgpack_to_json(never, sizeof never) == NULL);
	ck_assert(openai_msgpack_to_json(NULL, 0) == NULL);
	ck_assert(openai_msgpack_to_json(bin, 0) == NULL);

	/* a NUL in a value is a character, and packs back the same */
	v = openai_msgpack_to_json(nul + 1, sizeof nul - 2);
	ck_assert(v != NULL && json_string_length(v) == 3);
	{
		msgpack_sbuffer	sb;
		msgpack_packer	pk;

		msgpack_sbuffer_init(&sb);
		msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
		ck_assert_int_eq(openai_json_to_msgpack(v, &pk), 0);
		ck_assert_uint_eq(sb.size, sizeof nul - 2);
		ck_assert_mem_eq(sb.data, nul + 1, sizeof nul - 2);
		msgpack_sbuffer_destroy(&sb);
	}
	json_decref(v);

	v = openai_msgpack_to_json(neg, sizeof neg);
	ck_assert(v != NULL);
	ck_assert_int_eq(json_integer_value(json_array_get(v, 0)), -1);
	ck_assert(json_integer_value(json_array_get(v, 1)) == INT64_MIN);
	json_decref(v);

	/* OPENAI_MAX_DEPTH nested arrays pass, one more does not. */
	for (i = 0; i < sizeof deep; i++)
		deep[i] = 0x91;
	deep[OPENAI_MAX_DEPTH] = 0xc0;
	v = openai_msgpack_to_json(deep, OPENAI_MAX_DEPTH + 1);
	ck_assert(v != NULL);
	json_decref(v);
	deep[OPENAI_MAX_DEPTH] = 0x91;
	deep[OPENAI_MAX_DEPTH + 1] = 0xc0;
	ck_assert(openai_msgpack_to_json(deep, OPENAI_MAX_DEPTH + 2) == NULL);
}
END_TEST

START_TEST(test_json_to_msgpack_depth)
{
	msgpack_sbuffer	 sb;
	msgpack_packer	 pk;
	json_t		*v, *inner;
	int		 i;

	v = json_null();
	for (i = 0; i < OPENAI_MAX_DEPTH + 1; i++) {
		inner = v;
		v = json_array();
		json_array_append_new(v, inner);
	}
	msgpack_sbuffer_init(&sb);
	msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
	ck_assert_int_eq(openai_json_to_msgpack(v, &pk), -1);
	ck_assert_int_eq(openai_json_to_msgpack(json_array_get(v, 0), &pk), 0);
	ck_assert_int_eq(openai_json_to_msgpack(NULL, &pk), -1);
	msgpack_sbuffer_destroy(&sb);
	json_decref(v);
}
END_TEST

/* --- stream chunks ---------------------------------------------------- */

START_TEST(test_chunk_openai)
{
	struct openai_chunk	c = { 0 };

	/* Role-only first chunk: content "" is no content. */
	chunk_ok("{\"id\":\"chatcmpl-9\",\"object\":\"chat.completion.chunk\","
	    "\"created\":1718000000,\"model\":\"gpt-4o-mini\","
	    "\"system_fingerprint\":\"fp_1\",\"choices\":[{\"index\":0,"
	    "\"delta\":{\"role\":\"assistant\",\"content\":\"\","
	    "\"refusal\":null},\"logprobs\":null,\"finish_reason\":null}],"
	    "\"usage\":null}", &c);
	ck_assert(c.content == NULL && c.reasoning == NULL);
	ck_assert(c.finish_reason == NULL && !c.has_usage && !c.done);
	ck_assert(c.tool_calls.data == NULL && c.error_message == NULL);
	ck_assert_str_eq(c.model, "gpt-4o-mini");

	chunk_ok("{\"id\":\"chatcmpl-9\",\"object\":\"chat.completion.chunk\","
	    "\"created\":1718000000,\"model\":\"gpt-4o-mini\",\"choices\":"
	    "[{\"index\":0,\"delta\":{\"content\":\"Hello\"},\"logprobs\":null,"
	    "\"finish_reason\":null}],\"usage\":null}", &c);
	ck_assert_str_eq(c.content, "Hello");

	chunk_ok("{\"id\":\"chatcmpl-9\",\"choices\":[{\"index\":0,\"delta\":{},"
	    "\"logprobs\":null,\"finish_reason\":\"stop\"}],\"usage\":null}", &c);
	ck_assert(c.content == NULL);
	ck_assert_str_eq(c.finish_reason, "stop");
	ck_assert(!c.has_usage);

	/* stream_options.include_usage: usage alone, choices empty. */
	chunk_ok("{\"id\":\"chatcmpl-9\",\"object\":\"chat.completion.chunk\","
	    "\"created\":1718000000,\"model\":\"gpt-4o-mini\",\"choices\":[],"
	    "\"usage\":{\"prompt_tokens\":17,\"completion_tokens\":5,"
	    "\"total_tokens\":22,\"prompt_tokens_details\":{\"cached_tokens\":0},"
	    "\"completion_tokens_details\":{\"reasoning_tokens\":0}}}", &c);
	ck_assert(c.has_usage);
	ck_assert_int_eq(c.usage.prompt_tokens, 17);
	ck_assert_int_eq(c.usage.completion_tokens, 5);
	ck_assert_int_eq(c.usage.total_tokens, 22);
	ck_assert(!c.usage.estimated);
	ck_assert(c.finish_reason == NULL);

	openai_chunk_clear(&c);
}
END_TEST

START_TEST(test_chunk_llamacpp)
{
	struct openai_chunk	c = { 0 };

	chunk_ok("{\"choices\":[{\"finish_reason\":null,\"index\":0,\"delta\":"
	    "{\"role\":\"assistant\",\"content\":null}}],\"created\":1718000000,"
	    "\"id\":\"chatcmpl-abc\",\"model\":\"gpt-3.5-turbo\","
	    "\"system_fingerprint\":\"b5000-1a2b3c\","
	    "\"object\":\"chat.completion.chunk\"}", &c);
	ck_assert(c.content == NULL);
	ck_assert_str_eq(c.model, "gpt-3.5-turbo");

	chunk_ok("{\"choices\":[{\"finish_reason\":null,\"index\":0,\"delta\":"
	    "{\"reasoning_content\":\"Let me think\"}}],\"created\":1,"
	    "\"id\":\"chatcmpl-abc\",\"model\":\"m\","
	    "\"object\":\"chat.completion.chunk\"}", &c);
	ck_assert_str_eq(c.reasoning, "Let me think");
	ck_assert(c.content == NULL);

	/* Tool call fragments. */
	chunk_ok("{\"choices\":[{\"finish_reason\":null,\"index\":0,\"delta\":"
	    "{\"tool_calls\":[{\"index\":0,\"id\":\"Xy12\",\"type\":\"function\","
	    "\"function\":{\"name\":\"get_weather\",\"arguments\":\"\"}}]}}],"
	    "\"object\":\"chat.completion.chunk\"}", &c);
	ck_assert(raw_is(&c.tool_calls, "[{\"index\":0,\"id\":\"Xy12\","
	    "\"type\":\"function\",\"function\":{\"name\":\"get_weather\","
	    "\"arguments\":\"\"}}]"));
	chunk_ok("{\"choices\":[{\"finish_reason\":null,\"index\":0,\"delta\":"
	    "{\"tool_calls\":[{\"index\":0,\"function\":{\"arguments\":"
	    "\"{\\\"city\\\":\"}}]}}],\"object\":\"chat.completion.chunk\"}", &c);
	ck_assert(raw_is(&c.tool_calls, "[{\"index\":0,\"function\":"
	    "{\"arguments\":\"{\\\"city\\\":\"}}]"));

	/* Newer servers without include_usage: only timings at the end. */
	chunk_ok("{\"choices\":[{\"finish_reason\":\"stop\",\"index\":0,"
	    "\"delta\":{}}],\"created\":1,\"id\":\"chatcmpl-abc\",\"model\":\"m\","
	    "\"object\":\"chat.completion.chunk\",\"timings\":{\"cache_n\":3,"
	    "\"prompt_n\":10,\"prompt_ms\":12.5,\"prompt_per_token_ms\":1.25,"
	    "\"prompt_per_second\":800.0,\"predicted_n\":5,\"predicted_ms\":50.5,"
	    "\"predicted_per_token_ms\":10.1,\"predicted_per_second\":99.0}}", &c);
	ck_assert_str_eq(c.finish_reason, "stop");
	ck_assert(c.has_usage);
	ck_assert_int_eq(c.usage.prompt_tokens, 13);
	ck_assert_int_eq(c.usage.completion_tokens, 5);
	ck_assert_int_eq(c.usage.total_tokens, 18);

	/* Older servers: usage (and timings) in the finish chunk. */
	chunk_ok("{\"choices\":[{\"finish_reason\":\"length\",\"index\":0,"
	    "\"delta\":{}}],\"usage\":{\"completion_tokens\":16,"
	    "\"prompt_tokens\":9,\"total_tokens\":25},\"timings\":{\"prompt_n\":1,"
	    "\"predicted_n\":1}}", &c);
	ck_assert_str_eq(c.finish_reason, "length");
	ck_assert_int_eq(c.usage.prompt_tokens, 9);
	ck_assert_int_eq(c.usage.completion_tokens, 16);

	/* Timings without cache_n are not trusted as usage. */
	chunk_ok("{\"choices\":[],\"timings\":{\"prompt_n\":1,\"predicted_n\":1}}",
	    &c);
	ck_assert(!c.has_usage);

	/* include_usage: a separate chunk with empty choices. */
	chunk_ok("{\"choices\":[],\"created\":1,\"id\":\"chatcmpl-abc\","
	    "\"model\":\"m\",\"object\":\"chat.completion.chunk\",\"usage\":"
	    "{\"completion_tokens\":4,\"prompt_tokens\":8,\"total_tokens\":12},"
	    "\"timings\":{\"cache_n\":0,\"prompt_n\":8,\"predicted_n\":4}}", &c);
	ck_assert_int_eq(c.usage.total_tokens, 12);

	/* An error in the stream. */
	chunk_ok("{\"error\":{\"code\":500,\"message\":\"Input prompt is too big "
	    "compared to KV size.\",\"type\":\"server_error\"}}", &c);
	ck_assert_str_eq(c.error_message,
	    "Input prompt is too big compared to KV size.");
	ck_assert_str_eq(c.error_type, "server_error");
	ck_assert_int_eq(c.error_status, 500);
	openai_chunk_clear(&c);
}
END_TEST

START_TEST(test_chunk_vllm)
{
	struct openai_chunk	c = { 0 };

	chunk_ok("{\"id\":\"chatcmpl-5e1\",\"object\":\"chat.completion.chunk\","
	    "\"created\":1718000000,\"model\":\"Qwen/Qwen2.5-7B-Instruct\","
	    "\"choices\":[{\"index\":0,\"delta\":{\"role\":\"assistant\","
	    "\"content\":\"\"},\"logprobs\":null,\"finish_reason\":null}]}", &c);
	ck_assert(c.content == NULL);
	ck_assert_str_eq(c.model, "Qwen/Qwen2.5-7B-Instruct");

	chunk_ok("{\"id\":\"chatcmpl-5e1\",\"choices\":[{\"index\":0,\"delta\":"
	    "{\"reasoning_content\":\"Hmm\"},\"logprobs\":null,"
	    "\"finish_reason\":null}]}", &c);
	ck_assert_str_eq(c.reasoning, "Hmm");

	/* Newer vLLM: `reasoning`, maybe alongside the deprecated name. */
	chunk_ok("{\"choices\":[{\"index\":0,\"delta\":{\"reasoning\":\"ok\","
	    "\"tool_calls\":[]},\"finish_reason\":null}]}", &c);
	ck_assert_str_eq(c.reasoning, "ok");
	ck_assert(c.tool_calls.data == NULL);
	chunk_ok("{\"choices\":[{\"index\":0,\"delta\":{\"reasoning\":\"same\","
	    "\"reasoning_content\":\"same\"},\"finish_reason\":null}]}", &c);
	ck_assert_str_eq(c.reasoning, "same");
	chunk_ok("{\"choices\":[{\"index\":0,\"delta\":{\"reasoning\":\"r\","
	    "\"reasoning_content\":null,\"content\":null}}]}", &c);
	ck_assert_str_eq(c.reasoning, "r");

	chunk_ok("{\"id\":\"chatcmpl-5e1\",\"choices\":[{\"index\":0,\"delta\":"
	    "{\"tool_calls\":[{\"id\":\"chatcmpl-tool-1\",\"type\":\"function\","
	    "\"index\":0,\"function\":{\"name\":\"get_weather\"}}]},"
	    "\"logprobs\":null,\"finish_reason\":null}]}", &c);
	ck_assert(raw_is(&c.tool_calls, "[{\"id\":\"chatcmpl-tool-1\","
	    "\"type\":\"function\",\"index\":0,\"function\":"
	    "{\"name\":\"get_weather\"}}]"));

	/* The last token and finish_reason come together. */
	chunk_ok("{\"id\":\"chatcmpl-5e1\",\"choices\":[{\"index\":0,\"delta\":"
	    "{\"content\":\"!\"},\"logprobs\":null,\"finish_reason\":\"stop\","
	    "\"stop_reason\":null}]}", &c);
	ck_assert_str_eq(c.content, "!");
	ck_assert_str_eq(c.finish_reason, "stop");

	chunk_ok("{\"id\":\"chatcmpl-5e1\",\"object\":\"chat.completion.chunk\","
	    "\"created\":1718000000,\"model\":\"Qwen/Qwen2.5-7B-Instruct\","
	    "\"choices\":[],\"usage\":{\"prompt_tokens\":10,\"total_tokens\":15,"
	    "\"completion_tokens\":5}}", &c);
	ck_assert_int_eq(c.usage.prompt_tokens, 10);
	ck_assert_int_eq(c.usage.total_tokens, 15);

	/* Errors, nested (with or without "object") and flat. */
	chunk_ok("{\"error\":{\"object\":\"error\",\"message\":\"bad input\","
	    "\"type\":\"BadRequestError\",\"param\":null,\"code\":400}}", &c);
	ck_assert_str_eq(c.error_message, "bad input");
	ck_assert_str_eq(c.error_type, "BadRequestError");
	ck_assert_int_eq(c.error_status, 400);
	chunk_ok("{\"error\":{\"message\":\"engine dead\",\"type\":"
	    "\"InternalServerError\",\"param\":null,\"code\":500}}", &c);
	ck_assert_int_eq(c.error_status, 500);
	chunk_ok("{\"object\":\"error\",\"message\":\"old\",\"type\":"
	    "\"BadRequestError\",\"param\":null,\"code\":400}", &c);
	ck_assert_str_eq(c.error_message, "old");
	ck_assert_int_eq(c.error_status, 400);
	openai_chunk_clear(&c);
}
END_TEST

START_TEST(test_chunk_ollama)
{
	struct openai_chunk	c = { 0 };

	chunk_ok("{\"id\":\"chatcmpl-412\",\"object\":\"chat.completion.chunk\","
	    "\"created\":1718000000,\"model\":\"qwen3:8b\",\"system_fingerprint\":"
	    "\"fp_ollama\",\"choices\":[{\"index\":0,\"delta\":{\"role\":"
	    "\"assistant\",\"content\":\"\",\"reasoning\":\"Okay, the user\"},"
	    "\"finish_reason\":null}]}", &c);
	ck_assert(c.content == NULL);
	ck_assert_str_eq(c.reasoning, "Okay, the user");

	chunk_ok("{\"id\":\"chatcmpl-412\",\"object\":\"chat.completion.chunk\","
	    "\"created\":1718000000,\"model\":\"qwen3:8b\",\"system_fingerprint\":"
	    "\"fp_ollama\",\"choices\":[{\"index\":0,\"delta\":{\"role\":"
	    "\"assistant\",\"content\":\"\",\"tool_calls\":[{\"id\":"
	    "\"call_ab\",\"index\":0,\"type\":\"function\",\"function\":"
	    "{\"name\":\"get_weather\",\"arguments\":\"{\\\"city\\\":"
	    "\\\"Paris\\\"}\"}}]},\"finish_reason\":null}]}", &c);
	ck_assert(c.tool_calls.data != NULL);
	ck_assert(raw_is(&c.tool_calls, "[{\"id\":\"call_ab\",\"index\":0,"
	    "\"type\":\"function\",\"function\":{\"name\":\"get_weather\","
	    "\"arguments\":\"{\\\"city\\\":\\\"Paris\\\"}\"}}]"));

	chunk_ok("{\"id\":\"chatcmpl-412\",\"object\":\"chat.completion.chunk\","
	    "\"created\":1718000000,\"model\":\"qwen3:8b\",\"system_fingerprint\":"
	    "\"fp_ollama\",\"choices\":[{\"index\":0,\"delta\":{\"role\":"
	    "\"assistant\",\"content\":\"\"},\"finish_reason\":\"tool_calls\"}]}",
	    &c);
	ck_assert_str_eq(c.finish_reason, "tool_calls");

	chunk_ok("{\"id\":\"chatcmpl-412\",\"object\":\"chat.completion.chunk\","
	    "\"created\":1718000000,\"model\":\"qwen3:8b\",\"system_fingerprint\":"
	    "\"fp_ollama\",\"choices\":[],\"usage\":{\"prompt_tokens\":26,"
	    "\"completion_tokens\":40,\"total_tokens\":66}}", &c);
	ck_assert_int_eq(c.usage.completion_tokens, 40);

	chunk_ok("{\"error\":{\"message\":\"model runner has unexpectedly stopped"
	    "\",\"type\":\"api_error\",\"param\":null,\"code\":null}}", &c);
	ck_assert_str_eq(c.error_message,
	    "model runner has unexpectedly stopped");
	ck_assert_str_eq(c.error_type, "api_error");
	ck_assert_int_eq(c.error_status, 0);
	openai_chunk_clear(&c);
}
END_TEST

START_TEST(test_chunk_tgi)
{
	struct openai_chunk	c = { 0 };

	chunk_ok("{\"object\":\"chat.completion.chunk\",\"id\":\"\",\"created\":"
	    "1718000000,\"model\":\"meta-llama/Llama-3.1-8B-Instruct\","
	    "\"system_fingerprint\":\"3.0.1-sha-abc\",\"choices\":[{\"index\":0,"
	    "\"delta\":{\"role\":\"assistant\",\"content\":\"Deep\"},"
	    "\"logprobs\":null,\"finish_reason\":null}],\"usage\":null}", &c);
	ck_assert_str_eq(c.content, "Deep");
	ck_assert(!c.has_usage);

	/* Older TGI: one tool call object instead of an array. */
	chunk_ok("{\"object\":\"chat.completion.chunk\",\"id\":\"\",\"created\":1,"
	    "\"model\":\"tgi\",\"system_fingerprint\":\"2.0.4\",\"choices\":"
	    "[{\"index\":0,\"delta\":{\"role\":\"assistant\",\"tool_calls\":"
	    "{\"index\":0,\"id\":\"\",\"type\":\"function\",\"function\":"
	    "{\"name\":null,\"arguments\":\"{\\\"\"}}},\"logprobs\":null,"
	    "\"finish_reason\":null}]}", &c);
	ck_assert(raw_is(&c.tool_calls, "[{\"index\":0,\"id\":\"\",\"type\":"
	    "\"function\",\"function\":{\"name\":null,\"arguments\":"
	    "\"{\\\"\"}}]"));

	chunk_ok("{\"object\":\"chat.completion.chunk\",\"id\":\"\",\"created\":1,"
	    "\"model\":\"tgi\",\"system_fingerprint\":\"3.0.1\",\"choices\":[],"
	    "\"usage\":{\"prompt_tokens\":2,\"completion_tokens\":10,"
	    "\"total_tokens\":12}}", &c);
	ck_assert_int_eq(c.usage.total_tokens, 12);

	chunk_ok("{\"error\":\"Request failed during generation: Server error: "
	    "CUDA out of memory\",\"error_type\":\"generation\"}", &c);
	ck_assert_str_eq(c.error_message, "Request failed during generation: "
	    "Server error: CUDA out of memory");
	ck_assert_str_eq(c.error_type, "generation");
	openai_chunk_clear(&c);
}
END_TEST

START_TEST(test_chunk_usage_sanity)
{
	struct openai_chunk	c = { 0 };

	chunk_ok("{\"choices\":[],\"usage\":null}", &c);
	ck_assert(!c.has_usage);
	chunk_ok("{\"choices\":[],\"usage\":{\"prompt_tokens\":-1,"
	    "\"completion_tokens\":5}}", &c);
	ck_assert(!c.has_usage);
	chunk_ok("{\"choices\":[],\"usage\":{\"prompt_tokens\":1000000000000,"
	    "\"completion_tokens\":5}}", &c);
	ck_assert(!c.has_usage);
	chunk_ok("{\"choices\":[],\"usage\":{\"prompt_tokens\":\"5\","
	    "\"completion_tokens\":5}}", &c);
	ck_assert(!c.has_usage);
	chunk_ok("{\"choices\":[],\"usage\":{\"prompt_tokens\":1.5,"
	    "\"completion_tokens\":5}}", &c);
	ck_assert(!c.has_usage);
	chunk_ok("{\"choices\":[],\"usage\":{\"prompt_tokens\":7}}", &c);
	ck_assert(!c.has_usage);

	/* Integral reals pass; a missing or short total becomes the sum. */
	chunk_ok("{\"choices\":[],\"usage\":{\"prompt_tokens\":7.0,"
	    "\"completion_tokens\":3}}", &c);
	ck_assert(c.has_usage);
	ck_assert_int_eq(c.usage.prompt_tokens, 7);
	ck_assert_int_eq(c.usage.total_tokens, 10);
	chunk_ok("{\"choices\":[],\"usage\":{\"prompt_tokens\":7,"
	    "\"completion_tokens\":3,\"total_tokens\":2}}", &c);
	ck_assert_int_eq(c.usage.total_tokens, 10);
	chunk_ok("{\"choices\":[],\"usage\":{\"prompt_tokens\":0,"
	    "\"completion_tokens\":0,\"total_tokens\":0}}", &c);
	ck_assert(c.has_usage);
	ck_assert_int_eq(c.usage.total_tokens, 0);
	openai_chunk_clear(&c);
}
END_TEST

/* The in-place chunk reader and the jansson document agree on one input. */
static void
chunk_same(const char *json, size_t len)
{
	struct openai_chunk	 a, b;
	char			 ca[256] = "", cb[256] = "";
	int			 ra, rb;

	memset(&a, 0, sizeof a);
	memset(&b, 0, sizeof b);
	ra = openai_parse_chunk(json, len, &a, ca, sizeof ca);
	rb = openai_parse_chunk_json(json, len, &b, cb, sizeof cb);
#define SAME_STR(f) ck_assert_msg((a.f == NULL && b.f == NULL) || \
	    (a.f != NULL && b.f != NULL && strcmp(a.f, b.f) == 0), \
	    #f ": \"%s\" / \"%s\" for %.*s", a.f ? a.f : "(null)", \
	    b.f ? b.f : "(null)", (int)len, json)
	ck_assert_msg(ra == rb, "%d / %d (%s) for %.*s", ra, rb, cb, (int)len, json);
	if (ra == -1)
		ck_assert_str_eq(ca, cb);
	ck_assert(a.done == b.done);
	SAME_STR(content);
	SAME_STR(reasoning);
	SAME_STR(finish_reason);
	SAME_STR(model);
	SAME_STR(error_message);
	SAME_STR(error_type);
	ck_assert_int_eq(a.error_status, b.error_status);
	ck_assert(a.has_usage == b.has_usage);
	ck_assert(memcmp(&a.usage, &b.usage, sizeof a.usage) == 0);
	ck_assert_uint_eq(a.tool_calls.len, b.tool_calls.len);
	if (a.tool_calls.len > 0)
		ck_assert(memcmp(a.tool_calls.data, b.tool_calls.data, a.tool_calls.len) == 0);
	/* a caller that has the model: the same but for it, which may be left out */
	openai_chunk_clear(&a);
	a.model_known = true;
	ca[0] = '\0';
	ra = openai_parse_chunk(json, len, &a, ca, sizeof ca);
	ck_assert_msg(ra == rb, "model known: %d / %d for %.*s", ra, rb, (int)len, json);
	if (ra == -1)
		ck_assert_str_eq(ca, cb);
	ck_assert_msg(a.model == NULL || (b.model != NULL && strcmp(a.model, b.model) == 0),
	    "model known: model \"%s\" for %.*s", a.model, (int)len, json);
	SAME_STR(content);
	SAME_STR(reasoning);
	SAME_STR(finish_reason);
	SAME_STR(error_message);
	ck_assert(a.has_usage == b.has_usage);
	ck_assert(memcmp(&a.usage, &b.usage, sizeof a.usage) == 0);
#undef SAME_STR
	openai_chunk_clear(&a);
	openai_chunk_clear(&b);
}

/*
 * Stream chunks are read in place when they have the usual shape and by
 * jansson otherwise: both ways give the same result on real chunks of every
 * dialect, on strict-JSON corner cases, and on every one-byte damage of them.
 */
START_TEST(test_chunk_fast_path)
{
	static const char *const seeds[] = {
		"{\"id\":\"chatcmpl-1\",\"object\":\"chat.completion.chunk\",\"created\":1700000000,"
		    "\"model\":\"m\",\"choices\":[{\"index\":0,\"delta\":{\"role\":\"assistant\","
		    "\"content\":\"\"},\"logprobs\":null,\"finish_reason\":null}]}",
		"{\"id\":\"c\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\" hi\\n\\\"x\\\" \\u00e9\\ud83d\\ude00 \\/\\t\"},\"finish_reason\":null}],\"model\":\"m\"}",
		"{\"choices\":[{\"delta\":{\"content\":\"caf\xc3\xa9 \xe2\x82\xac \xf0\x9f\x98\x80\"}}]}",
		"{\"choices\":[{\"delta\":{\"content\":\"a longer piece of streamed text, read 16 bytes "
		    "at a time \\\"quoted\\\" caf\xc3\xa9 and the rest\"}}]}",
		"{\"choices\":[{\"index\":0,\"delta\":{},\"finish_reason\":\"stop\"}],\"usage\":null}",
		"{\"choices\":[],\"usage\":{\"prompt_tokens\":3,\"completion_tokens\":4,\"total_tokens\":7}}",
		"{\"choices\":[{\"index\":0,\"delta\":{\"reasoning_content\":\"think\",\"content\":null}}]}",
		"{\"id\":\"c\",\"choices\":[],\"usage\":{\"prompt_tokens\":14,\"completion_tokens\":4,"
		    "\"total_tokens\":18,\"prompt_tokens_details\":{\"cached_tokens\":0},"
		    "\"completion_tokens_details\":null}}",
		"{\"usage\":{\"completion_tokens\":2,\"prompt_tokens\":10},\"choices\":[]}",
		"{\"usage\":{\"prompt_tokens\":1,\"completion_tokens\":2,\"total_tokens\":1}}",
		"{\"usage\":{\"prompt_tokens\":3.0,\"completion_tokens\":2,\"total_tokens\":5.5}}",
		"{\"usage\":{\"prompt_tokens\":1e3,\"completion_tokens\":-0,\"total_tokens\":null}}",
		"{\"usage\":{\"prompt_tokens\":\"3\",\"completion_tokens\":2},\"timings\":{\"cache_n\":0,"
		    "\"prompt_n\":4,\"predicted_n\":5}}",
		"{\"usage\":{\"prompt_tokens\":1000000000,\"completion_tokens\":1000000001}}",
		"{\"usage\":{\"prompt_tokens\":99999999999999999999,\"completion_tokens\":0}}",
		"{\"usage\":{\"prompt_tokens\":1,\"prompt_tokens\":2,\"completion_tokens\":3}}",
		"{\"usage\":{},\"choices\":[{\"index\":0,\"delta\":{},\"finish_reason\":\"length\"}]}",
		"{\"choices\":[{\"index\":0,\"delta\":{\"content\":\"x\"},\"finish_reason\":\"stop\"}],"
		    "\"usage\":{ \"prompt_tokens\" : 0 , \"completion_tokens\" : 0 , \"total_tokens\" : 0 }}",
		"{\"usage\":[1,2],\"choices\":[]}",
		"{\"usage\":{\"prompt_tokens\":7,\"completion_tokens\":3},\"usage\":null}",
		"{\"choices\":[{\"index\":0,\"delta\":{\"reasoning_content\":\"\",\"reasoning\":\"r\"}}]}",
		"{\"choices\":[{\"index\":0,\"delta\":{\"reasoning\":\"r\",\"reasoning_content\":\"rc\"}}]}",
		"{\"choices\":[{\"index\":0,\"delta\":{\"tool_calls\":[{\"index\":0,\"id\":\"t\",\"type\":\"function\",\"function\":{\"name\":\"f\",\"arguments\":\"{}\"}}]}}]}",
		"{\"choices\":[{\"index\":0,\"delta\":{\"tool_calls\":[],\"content\":\"a\"}}]}",
		"{\"choices\":[{\"index\":0,\"delta\":{\"tool_calls\":null,\"content\":\"a\"}}]}",
		"{\"choices\":[{\"index\":0,\"delta\":{\"content\":[{\"type\":\"text\",\"text\":\"p\"}]}}]}",
		"{\"choices\":[{\"index\":1,\"delta\":{\"content\":\"one\"}},{\"index\":0,\"delta\":{\"content\":\"zero\"}}]}",
		"{\"choices\":[{\"index\":0.0,\"delta\":{\"content\":\"x\"}}]}",
		"{\"choices\":[{\"index\":null,\"message\":{\"content\":\"m\"}}]}",
		"{\"choices\":[{\"index\":0,\"delta\":{\"content\":\"a\",\"content\":\"b\"}}]}",
		"{\"error\":{\"message\":\"boom\",\"type\":\"server_error\",\"code\":500}}",
		"{\"error\":\"overloaded\",\"error_type\":\"busy\"}",
		"{\"object\":\"error\",\"message\":\"bad\",\"type\":\"t\",\"code\":400}",
		"{\"detail\":\"nope\"}",
		"{\"choices\":[{\"index\":0,\"delta\":{\"content\":\"x\"}}],\"timings\":{\"cache_n\":1,\"prompt_n\":2,\"predicted_n\":3}}",
		"{\"created\":123456789012345678901234,\"choices\":[{\"delta\":{\"content\":\"x\"}}]}",
		"{\"created\":1e400,\"x\":[1.5,-0,0.25,true,false,null,{\"a\":[[]]}],\"choices\":[{\"delta\":{\"content\":\"x\"}}]}",
		"{\"id\":\"\\u0000\",\"choices\":[{\"delta\":{\"content\":\"x\"}}]}",
		"{\"id\":\"\\ud800\",\"choices\":[{\"delta\":{\"content\":\"x\"}}]}",
		"{\"id\":\"\\udc00\\ud800x\",\"choices\":[{\"delta\":{\"content\":\"x\"}}]}",
		"{\"cont\\u0065nt\":1,\"choices\":[{\"delta\":{\"c\\u006fntent\":\"x\"}}]}",
		" \t\r\n{ \"choices\" : [ { \"delta\" : { \"content\" : \"s\" } } ] , \"model\" : null } \n",
		"{\"model\":\"a\",\"model\":\"b\",\"choices\":[]}",
		"{\"choices\":[{\"delta\":{\"content\":\"x\"}}]} {}",
		"[{\"choices\":[]}]",
		"\"text\"",
		"{}",
		"[DONE]",
		"",
	};
	static const char subs[] = "\"\\{}[],:0e .xun\x80\xc3\xff\x1f\x7f\x01";
	char buf[1024];

	for (size_t i = 0; i < sizeof seeds / sizeof seeds[0]; i++) {
		size_t len = strlen(seeds[i]);
		ck_assert_uint_lt(len, sizeof buf);
		chunk_same(seeds[i], len);
		for (size_t at = 0; at < len; at++) {
			/* the byte deleted */
			memcpy(buf, seeds[i], at);
			memcpy(buf + at, seeds[i] + at + 1, len - at - 1);
			chunk_same(buf, len - 1);
			/* the byte replaced, NUL included */
			memcpy(buf, seeds[i], len);
			for (size_t k = 0; k < sizeof subs; k++) {
				buf[at] = subs[k];
				chunk_same(buf, len);
			}
		}
	}
}
END_TEST

/* A caller that has the model already is not given a copy from each usual chunk. */
START_TEST(test_chunk_model_known)
{
	static const char json[] = "{\"id\":\"c\",\"object\":\"chat.completion.chunk\","
	    "\"model\":\"m\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"hi\"}}]}";
	struct openai_chunk	 c;
	char			 cause[256];

	memset(&c, 0, sizeof c);
	ck_assert_int_eq(openai_parse_chunk(json, strlen(json), &c, cause, sizeof cause), 0);
	ck_assert_str_eq(c.model, "m");
	openai_chunk_clear(&c);
	c.model_known = true;
	ck_assert_int_eq(openai_parse_chunk(json, strlen(json), &c, cause, sizeof cause), 0);
	ck_assert_ptr_null(c.model);
	ck_assert_str_eq(c.content, "hi");
	openai_chunk_clear(&c);
}
END_TEST

/* Whether jansson takes s as a string (valid UTF-8). */
static bool
utf8_ok(const char *s)
{
	json_t *j = json_string(s);

	json_decref(j);
	return j != NULL;
}

/*
 * The HTTP front's role, finish and usage chunks, written straight, are
 * byte for byte what jansson dumps for the same document; a string that is
 * not UTF-8 makes the straight writer refuse.
 */
START_TEST(test_stream_chunk_same)
{
	static const char *const strs[] = {
		"chatcmpl-1", "", "m", "quote\" back\\ slash/", "nl\n cr\r tab\t bs\b ff\f",
		"ctl \x01\x1f\x7f", "caf\xc3\xa9 \xe2\x82\xac \xf0\x9f\x98\x80",
		"bad \xff", "cut \xc3", "surrogate \xed\xa0\x80", "overlong \xc0\xaf",
	};
	static const char *const deltas[] = { NULL, "{}", "{\"role\":\"assistant\",\"content\":\"\"}" };
	static const int64_t created[] = { 0, 1700000000, -1, INT64_MAX };
	struct usage us[] = { { 0, 0, 0, false }, { 14, 4, 18, false },
		{ INT64_MAX, 1000000000, 3, true } };
	size_t n = sizeof strs / sizeof strs[0];

	for (size_t i = 0; i < n; i++)
		for (size_t k = 0; k < n; k++)
			for (size_t dl = 0; dl < 3; dl++)
				for (size_t u = 0; u < 4; u++) {
					const char *fin = dl == 0 ? NULL : strs[(i + k) % n];
					const struct usage *use = u < 3 ? &us[u] : NULL;
					int64_t cr = created[(i + u) % 4];
					size_t len = 0;
					char *fast = openai_stream_chunk(strs[i], cr, strs[k], deltas[dl],
					    fin, use, &len);
					json_t *d = deltas[dl] != NULL ? json_loads(deltas[dl], 0, NULL) : NULL;
					json_t *doc = openai_stream_chunk_json(strs[i], cr, strs[k], d,
					    fin, use);
					char *slow = doc != NULL ? json_dumps(doc, JSON_COMPACT) : NULL;

					bool valid = utf8_ok(strs[i]) && utf8_ok(strs[k]) &&
					    (fin == NULL || utf8_ok(fin));

					/* not UTF-8: the caller falls back to the document */
					ck_assert_msg((fast != NULL) == valid, "%s for id %zu model %zu",
					    fast ? fast : "(null)", i, k);
					if (fast != NULL) {
						ck_assert(slow != NULL);
						ck_assert_uint_eq(len, strlen(fast));
						ck_assert(len == strlen(slow) + 8);
						ck_assert(memcmp(fast, "data: ", 6) == 0);
						ck_assert(memcmp(fast + 6, slow, strlen(slow)) == 0);
						ck_assert(memcmp(fast + len - 2, "\n\n", 2) == 0);
					}
					free(fast);
					free(slow);
					json_decref(doc);
				}
}
END_TEST

START_TEST(test_chunk_edges)
{
	struct openai_chunk	 c = { 0 };
	char			 cause[256], *deep;
	const char		*bad[] = { "", "{", "{\"choices\":[", "null", "[1,2]",
	    "\"str\"", "42", "{\"a\":1}x", "{\"a\":\"\xff\"}", "data: {}" };
	size_t			 i, n = 200000;

	chunk_ok("[DONE]", &c);
	ck_assert(c.done);
	chunk_ok(" [DONE]\n", &c);
	ck_assert(c.done);
	chunk_ok("{}", &c);
	ck_assert(!c.done && c.content == NULL && c.error_message == NULL);

	for (i = 0; i < sizeof bad / sizeof bad[0]; i++) {
		cause[0] = '\0';
		ck_assert_int_eq(openai_parse_chunk(bad[i], strlen(bad[i]), &c,
		    cause, sizeof cause), -1);
		ck_assert(cause[0] != '\0');
		ck_assert(c.content == NULL && c.model == NULL && !c.done);
	}

	/* Deep nesting is refused, not a crash. */
	deep = malloc(n);
	memset(deep, '[', n);
	ck_assert_int_eq(openai_parse_chunk(deep, n, &c, cause, sizeof cause),
	    -1);
	i = (size_t)snprintf(deep, n, "{\"choices\":[{\"delta\":"
	    "{\"tool_calls\":");
	memset(deep + i, '[', 40);
	memset(deep + i + 40, ']', 40);
	memcpy(deep + i + 80, "}}]}", 5);
	ck_assert_int_eq(openai_parse_chunk(deep, strlen(deep), &c, cause,
	    sizeof cause), -1);
	ck_assert(strstr(cause, "tool_calls") != NULL);
	free(deep);

	/* Only the choice with index 0 counts. */
	chunk_ok("{\"choices\":[{\"index\":1,\"delta\":{\"content\":\"no\"}},"
	    "{\"index\":0,\"delta\":{\"content\":\"yes\"}}]}", &c);
	ck_assert_str_eq(c.content, "yes");
	chunk_ok("{\"choices\":[{\"index\":1,\"delta\":{\"content\":\"no\"}}]}",
	    &c);
	ck_assert(c.content == NULL);
	chunk_ok("{\"choices\":[\"x\",{\"delta\":{\"content\":\"noidx\"}}]}", &c);
	ck_assert_str_eq(c.content, "noidx");

	/* Content as an array of parts. */
	chunk_ok("{\"choices\":[{\"delta\":{\"content\":[{\"type\":\"text\","
	    "\"text\":\"a\"},{\"type\":\"text\",\"text\":\"b\"}]}}]}", &c);
	ck_assert_str_eq(c.content, "ab");
	ck_assert_uint_eq(c.content_len, 2);

	/* U+0000 in the reply's text is a character with its length; no other string holds it. */
	chunk_ok("{\"model\":\"m\\u0000x\",\"choices\":[{\"delta\":{\"content\":\"a\\u0000b\","
	    "\"reasoning_content\":\"\\u0000\"},\"finish_reason\":\"st\\u0000op\"}]}", &c);
	ck_assert_uint_eq(c.content_len, 3);
	ck_assert_mem_eq(c.content, "a\0b", 4);
	ck_assert_uint_eq(c.reasoning_len, 1);
	ck_assert_mem_eq(c.reasoning, "\0", 2);
	ck_assert_ptr_null(c.model);
	ck_assert_ptr_null(c.finish_reason);
	chunk_ok("{\"choices\":[{\"delta\":{\"content\":[{\"type\":\"text\","
	    "\"text\":\"\\u0000\"},{\"type\":\"text\",\"text\":\"b\\u0000\"}]}}]}", &c);
	ck_assert_uint_eq(c.content_len, 3);
	ck_assert_mem_eq(c.content, "\0b\0", 4);
	ck_assert_int_eq(openai_parse_response("{\"choices\":[{\"message\":{\"content\":"
	    "\"x\\u0000\"}}]}", 47, &c, cause, sizeof cause), 0);
	ck_assert_uint_eq(c.content_len, 2);
	ck_assert_mem_eq(c.content, "x\0", 3);

	/* Wrong types are ignored, not trusted. */
	chunk_ok("{\"model\":5,\"choices\":[{\"delta\":{\"content\":5,"
	    "\"reasoning\":{},\"tool_calls\":\"x\"},\"finish_reason\":1}],"
	    "\"usage\":[1],\"error\":null}", &c);
	ck_assert(c.content == NULL && c.reasoning == NULL && c.model == NULL);
	ck_assert(c.tool_calls.data == NULL && c.finish_reason == NULL);
	ck_assert(!c.has_usage && c.error_message == NULL);

	/* An error object without a message still reads as an error. */
	chunk_ok("{\"error\":{}}", &c);
	ck_assert_str_eq(c.error_message, "unknown error");
	chunk_ok("{\"error\":{\"type\":\"overloaded\"}}", &c);
	ck_assert_str_eq(c.error_message, "overloaded");
	chunk_ok("{\"error\":{\"param\":\"p\"}}", &c);
	ck_assert_str_eq(c.error_message, "{\"param\":\"p\"}");
	chunk_ok("{\"error\":{\"message\":\"a\\nb\\u0007c\",\"code\":\"x\"}}",
	    &c);
	ck_assert_str_eq(c.error_message, "a b c");
	ck_assert_str_eq(c.error_type, "x");
	openai_chunk_clear(&c);
}
END_TEST

START_TEST(test_event)
{
	struct openai_chunk	 c = { 0 };
	char			 cause[256];
	const char		*d;

	d = "{\"choices\":[{\"delta\":{\"content\":\"x\"}}]}";
	ck_assert_int_eq(openai_parse_event(NULL, d, strlen(d), &c, cause,
	    sizeof cause), 0);
	ck_assert_str_eq(c.content, "x");
	ck_assert_int_eq(openai_parse_event("message", d, strlen(d), &c, cause,
	    sizeof cause), 0);
	ck_assert_str_eq(c.content, "x");

	/* Other names are not for us. */
	ck_assert_int_eq(openai_parse_event("ping", "{oops", 5, &c, cause,
	    sizeof cause), 0);
	ck_assert(c.content == NULL && c.error_message == NULL);

	/* Old llama.cpp "error:" lines reach here as an "error" event. */
	d = "{\"code\":400,\"message\":\"the request exceeds the available "
	    "context size\",\"type\":\"exceed_context_size_error\"}";
	ck_assert_int_eq(openai_parse_event("error", d, strlen(d), &c, cause,
	    sizeof cause), 0);
	ck_assert_str_eq(c.error_message,
	    "the request exceeds the available context size");
	ck_assert_str_eq(c.error_type, "exceed_context_size_error");
	ck_assert_int_eq(c.error_status, 400);
	d = "{\"unexpected\":[1]}";
	ck_assert_int_eq(openai_parse_event("error", d, strlen(d), &c, cause,
	    sizeof cause), 0);
	ck_assert_str_eq(c.error_message, d);

	d = "{\"error\":\"overloaded\",\"error_type\":\"overloaded\"}";
	ck_assert_int_eq(openai_parse_event("error", d, strlen(d), &c, cause,
	    sizeof cause), 0);
	ck_assert_str_eq(c.error_message, "overloaded");
	ck_assert_str_eq(c.error_type, "overloaded");

	d = "upstream went away\r\n";
	ck_assert_int_eq(openai_parse_event("error", d, strlen(d), &c, cause,
	    sizeof cause), 0);
	ck_assert_str_eq(c.error_message, "upstream went away");
	ck_assert_int_eq(openai_parse_event("error", "", 0, &c, cause,
	    sizeof cause), 0);
	ck_assert(c.error_message != NULL && c.error_message[0] != '\0');
	openai_chunk_clear(&c);
}
END_TEST

/* --- whole responses -------------------------------------------------- */

START_TEST(test_response)
{
	struct openai_chunk	 c = { 0 };
	char			 cause[256];
	const char		*r;

	r = "{\"id\":\"chatcmpl-1\",\"object\":\"chat.completion\",\"created\":1,"
	    "\"model\":\"m\",\"choices\":[{\"index\":0,\"message\":{\"role\":"
	    "\"assistant\",\"content\":null,\"reasoning_content\":\"why\","
	    "\"tool_calls\":[{\"id\":\"c1\",\"type\":\"function\",\"function\":"
	    "{\"name\":\"f\",\"arguments\":\"{}\"}}]},\"logprobs\":null,"
	    "\"finish_reason\":\"tool_calls\"}],\"usage\":{\"prompt_tokens\":20,"
	    "\"completion_tokens\":9,\"total_tokens\":29},\"timings\":{}}";
	ck_assert_int_eq(openai_parse_response(r, strlen(r), &c, cause,
	    sizeof cause), 0);
	ck_assert(c.content == NULL);
	ck_assert_str_eq(c.reasoning, "why");
	ck_assert_str_eq(c.finish_reason, "tool_calls");
	ck_assert(raw_is(&c.tool_calls, "[{\"id\":\"c1\",\"type\":\"function\","
	    "\"function\":{\"name\":\"f\",\"arguments\":\"{}\"}}]"));
	ck_assert_int_eq(c.usage.total_tokens, 29);

	/* Ollama */
	r = "{\"id\":\"chatcmpl-7\",\"object\":\"chat.completion\",\"created\":1,"
	    "\"model\":\"qwen3:8b\",\"system_fingerprint\":\"fp_ollama\","
	    "\"choices\":[{\"index\":0,\"message\":{\"role\":\"assistant\","
	    "\"content\":\"Hi there\",\"reasoning\":\"greet\"},"
	    "\"finish_reason\":\"stop\"}],\"usage\":{\"prompt_tokens\":11,"
	    "\"completion_tokens\":3,\"total_tokens\":14}}";
	ck_assert_int_eq(openai_parse_response(r, strlen(r), &c, cause,
	    sizeof cause), 0);
	ck_assert_str_eq(c.content, "Hi there");
	ck_assert_str_eq(c.reasoning, "greet");
	ck_assert_str_eq(c.model, "qwen3:8b");

	/* An error body given as a response. */
	r = "{\"error\":{\"message\":\"nope\",\"type\":\"invalid_request_error\"}}";
	ck_assert_int_eq(openai_parse_response(r, strlen(r), &c, cause,
	    sizeof cause), 0);
	ck_assert_str_eq(c.error_message, "nope");

	ck_assert_int_eq(openai_parse_response("{\"choices\":", 11, &c, cause,
	    sizeof cause), -1);
	ck_assert(c.error_message == NULL);
	openai_chunk_clear(&c);
}
END_TEST

/* --- error bodies ----------------------------------------------------- */

/* openai_error_message of a C string, compared and freed. */
static void
error_is(const char *body, const char *want)
{
	char	*got = openai_error_message(body, strlen(body));

	ck_assert(got != NULL);
	ck_assert_msg(strcmp(got, want) == 0, "got \"%s\" want \"%s\"", got,
	    want);
	free(got);
}

START_TEST(test_error_bodies)
{
	char	*big, *got;
	size_t	 i;
	json_t	*check;

	error_is("{\"error\":{\"message\":\"Rate limit reached for requests\","
	    "\"type\":\"requests\",\"param\":null,\"code\":"
	    "\"rate_limit_exceeded\"}}",
	    "Rate limit reached for requests (requests)");
	error_is("{\"error\":{\"code\":503,\"message\":\"Loading model\","
	    "\"type\":\"unavailable_error\"}}",
	    "Loading model (unavailable_error)");
	error_is("{\"error\":{\"message\":\"model \\\"llama9\\\" not found, try "
	    "pulling it first\",\"type\":\"api_error\",\"param\":null,"
	    "\"code\":null}}",
	    "model \"llama9\" not found, try pulling it first (api_error)");
	error_is("{\"object\":\"error\",\"message\":\"The model `x` does not "
	    "exist.\",\"type\":\"NotFoundError\",\"param\":null,\"code\":404}",
	    "The model `x` does not exist. (NotFoundError)");
	error_is("{\"error\":{\"message\":\"max_tokens is too large\",\"type\":"
	    "\"BadRequestError\",\"param\":null,\"code\":400}}",
	    "max_tokens is too large (BadRequestError)");
	error_is("{\"error\":\"Input validation error: `inputs` tokens + "
	    "`max_new_tokens` must be <= 4096\",\"error_type\":\"validation\"}",
	    "Input validation error: `inputs` tokens + `max_new_tokens` must "
	    "be <= 4096 (validation)");
	error_is("{\"error\":\"Model is overloaded\",\"error_type\":"
	    "\"overloaded\"}", "Model is overloaded (overloaded)");
	error_is("{\"detail\":\"Not Found\"}", "Not Found");
	error_is("{\"detail\":[{\"type\":\"missing\",\"loc\":[\"body\","
	    "\"messages\",0,\"role\"],\"msg\":\"Field required\",\"input\":{}},"
	    "{\"loc\":[\"body\",\"model\"],\"msg\":\"Input should be a valid "
	    "string\"}]}",
	    "body.messages.0.role: Field required; body.model: Input should be "
	    "a valid string");
	error_is("{\"message\":\"Unauthorized\"}", "Unauthorized");
	error_is("{\"foo\":1}", "{\"foo\":1}");
	error_is("Internal Server Error\n", "Internal Server Error");
	error_is("<html>\r\n<head><title>502 Bad Gateway</title></head>\r\n"
	    "<body>\r\n<center><h1>502 Bad Gateway</h1></center>\r\n"
	    "<hr><center>nginx/1.24.0</center>\r\n</body>\r\n</html>\r\n",
	    "502 Bad Gateway");
	error_is("<p>Service <b>down</b></p>", "Service down");
	error_is("", "empty response body");
	error_is(" \r\n\t", "empty response body");
	error_is("a\x01" "b\x1b[31mc\xff\r\n\r\nd\xc2\x85" "e\x7f",
	    "a b [31mc? d e");
	error_is("{\"error\":{\"message\":\"line1\\nline2\\t\\u0000x\"}}",
	    "{\"error\":{\"message\":\"line1\\nline2\\t\\u0000x\"}}");

	/* Bounded, valid UTF-8, cut at a character. */
	big = malloc(10001);
	memset(big, 'x', 10000);
	big[10000] = '\0';
	got = openai_error_message(big, 10000);
	ck_assert_uint_le(strlen(got), OPENAI_ERROR_MAX);
	ck_assert(strcmp(got + strlen(got) - 3, "...") == 0);
	free(got);
	for (i = 0; i + 2 <= 10000; i += 2)
		memcpy(big + i, "\xc3\xa9", 2);
	for (i = 0; i < 3; i++) {
		got = openai_error_message(big + i, 9990);
		ck_assert_uint_le(strlen(got), OPENAI_ERROR_MAX);
		check = json_string(got);
		ck_assert(check != NULL);
		json_decref(check);
		free(got);
	}
	free(big);
	got = openai_error_message(NULL, 5);
	ck_assert_str_eq(got, "empty response body");
	free(got);
}
END_TEST

/* --- models ----------------------------------------------------------- */

START_TEST(test_models)
{
	char		**names, cause[256];
	size_t		  n;
	const char	 *j;

	j = "{\"object\":\"list\",\"data\":[{\"id\":\"Qwen/Qwen2.5-7B-Instruct\","
	    "\"object\":\"model\",\"created\":1,\"owned_by\":\"vllm\","
	    "\"root\":\"/models/qwen\",\"max_model_len\":32768},{\"id\":\"lora\"},"
	    "{\"object\":\"model\"},{\"id\":5},{\"id\":\"\"}]}";
	ck_assert_int_eq(openai_parse_models(j, strlen(j), &names, &n, cause,
	    sizeof cause), 0);
	ck_assert_uint_eq(n, 2);
	ck_assert_str_eq(names[0], "Qwen/Qwen2.5-7B-Instruct");
	ck_assert_str_eq(names[1], "lora");
	openai_models_free(names, n);

	/* llama.cpp adds a "models" list too; data wins. */
	j = "{\"models\":[{\"name\":\"a.gguf\",\"model\":\"a.gguf\"}],"
	    "\"object\":\"list\",\"data\":[{\"id\":\"a.gguf\",\"object\":"
	    "\"model\",\"owned_by\":\"llamacpp\",\"meta\":{\"n_ctx_train\":4096}}]}";
	ck_assert_int_eq(openai_parse_models(j, strlen(j), &names, &n, cause,
	    sizeof cause), 0);
	ck_assert_uint_eq(n, 1);
	ck_assert_str_eq(names[0], "a.gguf");
	openai_models_free(names, n);

	/* Ollama's /api/tags. */
	j = "{\"models\":[{\"name\":\"llama3.2:latest\",\"model\":"
	    "\"llama3.2:latest\",\"size\":2019393189},{\"model\":\"qwen3:8b\"}]}";
	ck_assert_int_eq(openai_parse_models(j, strlen(j), &names, &n, cause,
	    sizeof cause), 0);
	ck_assert_uint_eq(n, 2);
	ck_assert_str_eq(names[0], "llama3.2:latest");
	ck_assert_str_eq(names[1], "qwen3:8b");
	openai_models_free(names, n);

	j = "{\"object\":\"list\",\"data\":[]}";
	ck_assert_int_eq(openai_parse_models(j, strlen(j), &names, &n, cause,
	    sizeof cause), 0);
	ck_assert_uint_eq(n, 0);
	ck_assert(names == NULL);

	j = "{\"object\":\"list\"}";
	ck_assert_int_eq(openai_parse_models(j, strlen(j), &names, &n, cause,
	    sizeof cause), -1);
	ck_assert_int_eq(openai_parse_models("<html>", 6, &names, &n, cause,
	    sizeof cause), -1);
	ck_assert_int_eq(openai_parse_models("[]", 2, &names, &n, cause,
	    sizeof cause), -1);
	ck_assert(names == NULL && n == 0);
}
END_TEST

/* --- against the fake model server ----------------------------------- */

static pid_t	fake_pid = -1;
static int	fake_port;

/* Start tests/fake_upstream from the build tree and read its port. */
static void
fake_start(void)
{
	const char	*top = getenv("top_builddir");
	char		 path[4096], line[32];
	int		 fds[2];
	ssize_t		 n;
	size_t		 got = 0;

	snprintf(path, sizeof path, "%s/tests/fake_upstream",
	    top != NULL ? top : ".");
	ck_assert_int_eq(pipe(fds), 0);
	fake_pid = fork();
	ck_assert_int_ge(fake_pid, 0);
	if (fake_pid == 0) {
		dup2(fds[1], STDOUT_FILENO);
		close(fds[0]);
		close(fds[1]);
		execl(path, path, "-q", "-m", "fake-a", "-m", "fake-b",
		    (char *)NULL);
		_exit(127);
	}
	close(fds[1]);
	while (got < sizeof line - 1 && (got == 0 || line[got - 1] != '\n')) {
		n = read(fds[0], line + got, sizeof line - 1 - got);
		if (n <= 0)
			break;
		got += (size_t)n;
	}
	close(fds[0]);
	line[got] = '\0';
	fake_port = atoi(line);
	if (fake_port <= 0)
		ck_abort_msg("%s did not start", path);
}

/* Stop the fake server; it must exit cleanly (and leak-free under ASan). */
static void
fake_stop(void)
{
	int	status;

	if (fake_pid <= 0)
		return;
	kill(fake_pid, SIGTERM);
	while (waitpid(fake_pid, &status, 0) == -1 && errno == EINTR)
		;
	fake_pid = -1;
	ck_assert(WIFEXITED(status) && WEXITSTATUS(status) == 0);
}

/* One HTTP/1.0 exchange (no chunking): the status; body malloc'd. */
static int
fake_http(const char *method, const char *path, const char *body,
    char **out, size_t *out_len, char **headers)
{
	struct sockaddr_in	 sin;
	char			*req, *buf = NULL, *sep;
	size_t			 len = 0, size = 0;
	ssize_t			 n;
	int			 fd, status = 0, rlen;

	fd = socket(AF_INET, SOCK_STREAM, 0);
	ck_assert_int_ge(fd, 0);
	memset(&sin, 0, sizeof sin);
	sin.sin_family = AF_INET;
	sin.sin_port = htons((uint16_t)fake_port);
	sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	ck_assert_int_eq(connect(fd, (struct sockaddr *)&sin, sizeof sin), 0);
	rlen = asprintf(&req, "%s %s HTTP/1.0\r\nHost: 127.0.0.1\r\n"
	    "Authorization: Bearer sk-test\r\nContent-Type: application/json\r\n"
	    "Content-Length: %zu\r\nConnection: close\r\n\r\n%s", method, path,
	    body != NULL ? strlen(body) : 0, body != NULL ? body : "");
	ck_assert_int_gt(rlen, 0);
	ck_assert_int_eq(write(fd, req, (size_t)rlen), rlen);
	free(req);
	for (;;) {
		if (len + 4096 + 1 > size) {
			size = (len + 4096 + 1) * 2;
			buf = realloc(buf, size);
		}
		n = read(fd, buf + len, size - len - 1);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			break;
		len += (size_t)n;
	}
	close(fd);
	buf[len] = '\0';
	if ((sep = strstr(buf, "\r\n\r\n")) == NULL) {
		*out = buf;
		*out_len = 0;
		if (headers != NULL)
			*headers = NULL;
		return (0);
	}
	sscanf(buf, "HTTP/%*s %d", &status);
	*out_len = len - (size_t)(sep + 4 - buf);
	*out = malloc(*out_len + 1);
	memcpy(*out, sep + 4, *out_len + 1);
	if (headers != NULL) {
		*sep = '\0';
		*headers = strdup(buf);
	}
	free(buf);
	return (status);
}

/* What a whole stream adds up to. */
struct collected {
	char content[4096];
	char reasoning[4096];
	char args[4096];
	char tool_name[64];
	char finish[32];
	char error[512];
	int error_status;
	bool has_usage;
	struct usage usage;
	bool done;
	int bad_chunks;
	int events;
};

/* Append a string to a bounded buffer. */
static void
cat(char *dst, size_t size, const char *s)
{
	size_t	used = strlen(dst);

	snprintf(dst + used, size - used, "%s", s);
}

/* Fold one SSE event into the collection, as the daemon would. */
static int
collect_cb(void *arg, const char *event, const char *data, size_t len)
{
	struct collected	*col = arg;
	struct openai_chunk	 c = { 0 };
	char			 cause[256];
	json_t			*calls, *call, *fn;
	size_t			 i;

	col->events++;
	if (openai_parse_event(event, data, len, &c, cause, sizeof cause) != 0) {
		col->bad_chunks++;
		return (0);
	}
	if (c.done)
		col->done = true;
	if (c.content != NULL)
		cat(col->content, sizeof col->content, c.content);
	if (c.reasoning != NULL)
		cat(col->reasoning, sizeof col->reasoning, c.reasoning);
	if (c.finish_reason != NULL)
		snprintf(col->finish, sizeof col->finish, "%s", c.finish_reason);
	if (c.has_usage) {
		col->has_usage = true;
		col->usage = c.usage;
	}
	if (c.error_message != NULL) {
		snprintf(col->error, sizeof col->error, "%s", c.error_message);
		col->error_status = c.error_status;
	}
	if (c.tool_calls.data != NULL) {
		calls = openai_msgpack_to_json(c.tool_calls.data,
		    c.tool_calls.len);
		ck_assert(calls != NULL);
		json_array_foreach(calls, i, call) {
			fn = json_object_get(call, "function");
			if (json_is_string(json_object_get(fn, "name")))
				snprintf(col->tool_name, sizeof col->tool_name,
				    "%s", json_string_value(json_object_get(fn,
				    "name")));
			if (json_is_string(json_object_get(fn, "arguments")))
				cat(col->args, sizeof col->args,
				    json_string_value(json_object_get(fn,
				    "arguments")));
		}
		json_decref(calls);
	}
	openai_chunk_clear(&c);
	return (0);
}

/* POST a streamed chat and collect it; the finish status of the parser. */
static int
fake_stream(const char *directives, bool include_usage,
    struct collected *col)
{
	struct sse_parser	 p;
	char			*body, *out, cause[256];
	size_t			 len;
	int			 status, rc;

	ck_assert_int_gt(asprintf(&body, "{\"model\":\"fake-a\",\"messages\":"
	    "[{\"role\":\"system\",\"content\":\"sys\"},{\"role\":\"user\","
	    "\"content\":\"[[%s]]\"}],\"stream\":true%s}", directives,
	    include_usage ? ",\"stream_options\":{\"include_usage\":true}" :
	    ""), 0);
	status = fake_http("POST", "/v1/chat/completions", body, &out, &len,
	    NULL);
	ck_assert_int_eq(status, 200);
	memset(col, 0, sizeof *col);
	sse_parser_init(&p, 1 << 20, collect_cb, col);
	ck_assert_int_eq(sse_parser_feed(&p, out, len, cause, sizeof cause),
	    0);
	rc = sse_parser_finish(&p, cause, sizeof cause);
	sse_parser_clear(&p);
	free(out);
	free(body);
	return (rc);
}

/* The bytes of the contents sent by fake_stream. */
static long
prompt_bytes(const char *directives)
{
	return ((long)(strlen("sys") + strlen(directives) + 4));
}

static const char *dialects[] = { "openai", "llamacpp", "vllm", "ollama",
    "tgi" };

START_TEST(test_fake_stream_dialects)
{
	struct collected	 col;
	char			 dir[128];
	const char		*d = dialects[_i];
	bool			 tgi = strcmp(d, "tgi") == 0;

	/* With include_usage every dialect reports usage at the end. */
	snprintf(dir, sizeof dir, "dialect=%s words=5 reasoning=2", d);
	ck_assert_int_eq(fake_stream(dir, true, &col), 0);
	ck_assert_str_eq(col.content, "w1 w2 w3 w4 w5");
	ck_assert_str_eq(col.reasoning, tgi ? "" : "r1 r2 ");
	ck_assert_str_eq(col.finish, "stop");
	ck_assert(col.done);
	ck_assert_int_eq(col.bad_chunks, 0);
	ck_assert(col.has_usage);
	ck_assert_int_eq(col.usage.prompt_tokens, prompt_bytes(dir));
	ck_assert_int_eq(col.usage.completion_tokens, tgi ? 5 : 7);
	ck_assert_int_eq(col.usage.total_tokens, col.usage.prompt_tokens +
	    col.usage.completion_tokens);

	/* Without it only llama.cpp tells, through its timings. */
	snprintf(dir, sizeof dir, "dialect=%s chunks=3", d);
	ck_assert_int_eq(fake_stream(dir, false, &col), 0);
	ck_assert_str_eq(col.content, "echo: ");
	ck_assert(col.has_usage == (strcmp(d, "llamacpp") == 0));
	if (col.has_usage)
		ck_assert_int_eq(col.usage.completion_tokens, 3);

	/* usage=0 silences it, max_tokens cuts with "length". */
	snprintf(dir, sizeof dir, "dialect=%s words=4 usage=0", d);
	ck_assert_int_eq(fake_stream(dir, true, &col), 0);
	ck_assert(!col.has_usage);

	/* Tool calls, in fragments or whole, add up to the same call. */
	snprintf(dir, sizeof dir, "dialect=%s tools=1", d);
	ck_assert_int_eq(fake_stream(dir, true, &col), 0);
	ck_assert_str_eq(col.tool_name, "get_weather");
	ck_assert_str_eq(col.args,
	    "{\"location\": \"Paris\", \"unit\": \"celsius\"}");
	ck_assert_str_eq(col.finish, "tool_calls");
	ck_assert_str_eq(col.content, "");

	/* Errors inside the stream, in each dialect's shape. */
	snprintf(dir, sizeof dir, "dialect=%s words=3 fault=error_after:1", d);
	ck_assert_int_eq(fake_stream(dir, true, &col), 0);
	ck_assert_str_eq(col.content, "w1");
	ck_assert_str_eq(col.error, "fake failure in the stream");
	ck_assert(!col.has_usage);
	snprintf(dir, sizeof dir, "dialect=%s fault=event_error_after:0", d);
	ck_assert_int_eq(fake_stream(dir, true, &col), 0);
	ck_assert_str_eq(col.error, "fake error event");
	snprintf(dir, sizeof dir, "dialect=%s fault=error_field_after:2", d);
	ck_assert_int_eq(fake_stream(dir, true, &col), 0);
	ck_assert_str_eq(col.error, "fake error field");
	ck_assert_int_eq(col.error_status, 500);

	/* Broken JSON, a cut stream, a missing [DONE]. */
	snprintf(dir, sizeof dir, "dialect=%s words=2 fault=malformed_after:1",
	    d);
	ck_assert_int_eq(fake_stream(dir, true, &col), 0);
	ck_assert_int_eq(col.bad_chunks, 1);
	ck_assert_str_eq(col.content, "w1 w2");
	snprintf(dir, sizeof dir, "dialect=%s words=4 fault=cut_after:2", d);
	ck_assert_int_eq(fake_stream(dir, true, &col), 0);
	ck_assert_str_eq(col.content, "w1 w2");
	ck_assert(!col.done && !col.has_usage);
	snprintf(dir, sizeof dir, "dialect=%s fault=no_done", d);
	ck_assert_int_eq(fake_stream(dir, true, &col), 0);
	ck_assert(!col.done && col.has_usage);

	/* One byte at a time parses the same. */
	snprintf(dir, sizeof dir, "dialect=%s words=6 fault=drip", d);
	ck_assert_int_eq(fake_stream(dir, true, &col), 0);
	ck_assert_str_eq(col.content, "w1 w2 w3 w4 w5 w6");
	ck_assert(col.done && col.has_usage);
}
END_TEST

START_TEST(test_fake_responses)
{
	struct openai_chunk	 c = { 0 };
	char			*out, *headers, *msg, cause[256], body[512];
	char			**names;
	size_t			 len, n;
	json_t			*stats;
	int			 status, i;

	for (i = 0; i < 5; i++) {
		snprintf(body, sizeof body, "{\"messages\":[{\"role\":\"user\","
		    "\"content\":\"hello [[dialect=%s reasoning=1]]\"}],"
		    "\"max_tokens\":3,\"stream\":false}", dialects[i]);
		status = fake_http("POST", "/v1/chat/completions", body, &out,
		    &len, NULL);
		ck_assert_int_eq(status, 200);
		ck_assert_int_eq(openai_parse_response(out, len, &c, cause,
		    sizeof cause), 0);
		ck_assert_str_eq(c.finish_reason, "length");
		ck_assert(c.has_usage);
		ck_assert_int_eq(c.usage.completion_tokens, 3);
		ck_assert_int_eq(c.usage.prompt_tokens,
		    (int64_t)strlen("hello [[dialect=") + (int64_t)strlen(
		    dialects[i]) + (int64_t)strlen(" reasoning=1]]"));
		/* "echo: hello" in 4 pieces; TGI has no reasoning piece. */
		ck_assert_str_eq(c.content, i == 4 ? "echo: he" : "echo:");
		free(out);

		/* Each server's error body reads back as a message. */
		snprintf(body, sizeof body, "{\"messages\":[{\"role\":\"user\","
		    "\"content\":\"[[dialect=%s fault=status:429 "
		    "retry_after=7]]\"}]}", dialects[i]);
		status = fake_http("POST", "/v1/chat/completions", body, &out,
		    &len, &headers);
		ck_assert_int_eq(status, 429);
		ck_assert(strstr(headers, "Retry-After: 7") != NULL);
		msg = openai_error_message(out, len);
		ck_assert_msg(strstr(msg, "fake: rate limit reached") == msg,
		    "%s", msg);
		free(msg);
		free(headers);
		free(out);
	}
	openai_chunk_clear(&c);

	/* fail_first: the first two fail, then it works. */
	for (i = 0; i < 3; i++) {
		status = fake_http("POST", "/v1/chat/completions",
		    "{\"messages\":[{\"role\":\"user\",\"content\":"
		    "\"[[key=ff fail_first=2]]\"}]}", &out, &len, NULL);
		ck_assert_int_eq(status, i < 2 ? 503 : 200);
		free(out);
	}

	status = fake_http("GET", "/v1/models", NULL, &out, &len, NULL);
	ck_assert_int_eq(status, 200);
	ck_assert_int_eq(openai_parse_models(out, len, &names, &n, cause,
	    sizeof cause), 0);
	ck_assert_uint_eq(n, 2);
	ck_assert_str_eq(names[0], "fake-a");
	ck_assert_str_eq(names[1], "fake-b");
	openai_models_free(names, n);
	free(out);

	status = fake_http("GET", "/stats", NULL, &out, &len, NULL);
	ck_assert_int_eq(status, 200);
	stats = json_loads(out, 0, NULL);
	ck_assert(stats != NULL);
	ck_assert_str_eq(json_string_value(json_object_get(stats,
	    "authorization")), "Bearer sk-test");
	ck_assert_int_eq(json_integer_value(json_object_get(json_object_get(
	    stats, "fail_counts"), "ff")), 2);
	ck_assert_int_ge(json_integer_value(json_object_get(stats,
	    "chat_requests")), 13);
	ck_assert_uint_eq(json_array_size(json_object_get(stats,
	    "arrivals_ms")), json_integer_value(json_object_get(stats,
	    "chat_requests")));
	ck_assert_int_eq(json_integer_value(json_object_get(stats,
	    "in_flight")), 0);
	ck_assert(json_is_object(json_object_get(stats, "last_body")));
	json_decref(stats);
	free(out);

	/* A bad directive is a 400 naming it. */
	status = fake_http("POST", "/v1/chat/completions",
	    "{\"messages\":[{\"role\":\"user\",\"content\":\"[[chunks=x]]\"}]}",
	    &out, &len, NULL);
	ck_assert_int_eq(status, 400);
	ck_assert(strstr(out, "chunks=x") != NULL);
	free(out);
}
END_TEST

/* The tests of this module. */
static Suite *
openai_suite(void)
{
	Suite	*s = suite_create("openai");
	TCase	*tc;

	tc = tcase_create("body");
	tcase_add_test(tc, test_body_full);
	tcase_add_test(tc, test_body_minimal);
	tcase_add_test(tc, test_body_fast_same);
	tcase_add_test(tc, test_body_nul);
	tcase_add_test(tc, test_api_body_chat);
	tcase_add_test(tc, test_api_body_passthrough);
	tcase_add_test(tc, test_msgpack_round_trip);
	tcase_add_test(tc, test_msgpack_refused);
	tcase_add_test(tc, test_json_to_msgpack_depth);
	suite_add_tcase(s, tc);

	tc = tcase_create("chunks");
	tcase_add_test(tc, test_chunk_openai);
	tcase_add_test(tc, test_chunk_llamacpp);
	tcase_add_test(tc, test_chunk_vllm);
	tcase_add_test(tc, test_chunk_ollama);
	tcase_add_test(tc, test_chunk_tgi);
	tcase_add_test(tc, test_chunk_usage_sanity);
	tcase_add_test(tc, test_chunk_edges);
	tcase_add_test(tc, test_chunk_fast_path);
	tcase_add_test(tc, test_chunk_model_known);
	tcase_add_test(tc, test_stream_chunk_same);
	tcase_add_test(tc, test_event);
	tcase_add_test(tc, test_response);
	suite_add_tcase(s, tc);

	tc = tcase_create("errors");
	tcase_add_test(tc, test_error_bodies);
	tcase_add_test(tc, test_models);
	suite_add_tcase(s, tc);

	tc = tcase_create("fake_upstream");
	tcase_add_unchecked_fixture(tc, fake_start, fake_stop);
	tcase_add_loop_test(tc, test_fake_stream_dialects, 0, 5);
	tcase_add_test(tc, test_fake_responses);
	suite_add_tcase(s, tc);
	return (s);
}

/* Run the suite; the exit status says whether it passed. */
int
main(void)
{
	SRunner	*sr = srunner_create(openai_suite());
	int	 failed;

	srunner_run_all(sr, CK_NORMAL);
	failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return (failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE);
}
