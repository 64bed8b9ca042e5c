/* check_anthropic.c: unit tests of the Messages API translation (daemon/anthropic.c). */
#include "config.h"

#include <check.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <event2/buffer.h>
#include <jansson.h>

#include "daemon/anthropic.h"
#include "daemon/openai.h"
#include "daemon/translate.h"

/* Parse a Messages body that must succeed. */
static struct request *
parse_ok(const char *body, struct anthropic_meta *meta)
{
	struct anthropic_error err;
	struct anthropic_meta m;
	struct request *rq = anthropic_parse_messages(body, strlen(body), meta != NULL ? meta : &m,
	    &err);

	ck_assert_msg(rq != NULL, "refused: %s (field %s): %s", err.message, err.field, body);
	ck_assert_int_eq(rq->op, OP_CHAT);
	return rq;
}

/* Parse a body that must be refused, naming field, with a message holding what. */
static void
parse_bad(const char *body, const char *field, const char *what)
{
	struct anthropic_error err;
	struct anthropic_meta meta;
	struct request *rq = anthropic_parse_messages(body, strlen(body), &meta, &err);

	ck_assert_msg(rq == NULL, "accepted: %s", body);
	ck_assert_msg(strcmp(err.field, field) == 0, "field %s, not %s: %s", err.field, field,
	    err.message);
	ck_assert_msg(strstr(err.message, what) != NULL, "message \"%s\" lacks \"%s\"", err.message,
	    what);
}

/* Whether raw msgpack equals a JSON text. */
static bool
raw_is(const struct message_raw *raw, const char *json)
{
	json_t *a = openai_msgpack_to_json(raw->data, raw->len), *b = json_loads(json, 0, NULL);
	bool eq;

	ck_assert_msg(b != NULL, "bad test JSON %s", json);
	eq = a != NULL && json_equal(a, b);
	if (!eq) {
		char *s = a != NULL ? json_dumps(a, JSON_COMPACT | JSON_SORT_KEYS) : NULL;
		fprintf(stderr, "raw is %s\n", s != NULL ? s : "(none)");
		free(s);
	}
	json_decref(a);
	json_decref(b);
	return eq;
}

/* The chat's extra as JSON (a new reference), or NULL. */
static json_t *
extra_of(const struct request *rq)
{
	const struct message_raw *x = &rq->u.chat.extra;

	return x->data != NULL ? openai_msgpack_to_json(x->data, x->len) : NULL;
}

/* One message: role, content (NULL: none). */
static void
message_is(const struct chat_message *m, const char *role, const char *content)
{
	ck_assert_str_eq(m->role, role);
	if (content == NULL)
		ck_assert_ptr_null(m->content);
	else {
		ck_assert_ptr_nonnull(m->content);
		ck_assert_str_eq(m->content, content);
	}
}

/* --- parsing ------------------------------------------------------------ */

START_TEST(test_parse_basic)
{
	struct anthropic_meta meta;
	struct request *rq = parse_ok("{\"model\":\"claude-sonnet-4-5\",\"max_tokens\":256,"
	    "\"system\":\"Be brief.\",\"messages\":[{\"role\":\"user\",\"content\":\"Hello\"}],"
	    "\"metadata\":{\"user_id\":\"u\"},\"some_future_field\":[1,2]}", &meta);
	struct chat_request *cr = &rq->u.chat;

	ck_assert_uint_eq(cr->n_messages, 2);
	message_is(&cr->messages[0], "system", "Be brief.");
	message_is(&cr->messages[1], "user", "Hello");
	ck_assert_str_eq(cr->model, "claude-sonnet-4-5");
	ck_assert_int_eq(cr->max_tokens, 256);
	ck_assert(!cr->stream && !meta.stream && !meta.thinking);
	ck_assert(isnan(cr->temperature) && isnan(cr->top_p));
	ck_assert_uint_eq(cr->n_stop, 0);
	ck_assert_ptr_null(cr->extra.data);     /* metadata and unknown fields are not sent on */
	message_request_free(rq);
}
END_TEST

START_TEST(test_parse_blocks)
{
	/* system blocks joined, Claude Code's billing block left out; text blocks joined */
	struct request *rq = parse_ok("{\"model\":\"m\",\"max_tokens\":10,\"system\":["
	    "{\"type\":\"text\",\"text\":\"x-anthropic-billing-header: cc_version=2.1; cc=1;\"},"
	    "{\"type\":\"text\",\"text\":\"One.\",\"cache_control\":{\"type\":\"ephemeral\"}},"
	    "{\"type\":\"text\",\"text\":\"Two.\"}],"
	    "\"messages\":[{\"role\":\"user\",\"content\":[{\"type\":\"text\",\"text\":\"a\"},"
	    "{\"type\":\"text\",\"text\":\"b\\u0000c\"},{\"type\":\"document\",\"source\":"
	    "{\"type\":\"text\",\"media_type\":\"text/plain\",\"data\":\"doc\"}}]},"
	    "{\"role\":\"system\",\"content\":[{\"type\":\"text\",\"text\":\"mid-turn\"}]},"
	    "{\"role\":\"assistant\",\"content\":[{\"type\":\"thinking\",\"thinking\":\"hmm\","
	    "\"signature\":\"s\"},{\"type\":\"redacted_thinking\",\"data\":\"x\"}]},"
	    "{\"role\":\"user\",\"content\":[]}]}", NULL);
	struct chat_request *cr = &rq->u.chat;

	ck_assert_uint_eq(cr->n_messages, 5);
	message_is(&cr->messages[0], "system", "One.\nTwo.");
	ck_assert_str_eq(cr->messages[1].role, "user");
	ck_assert_uint_eq(cr->messages[1].content_len, 9);
	ck_assert(memcmp(cr->messages[1].content, "a\nb\0c\ndoc", 10) == 0);
	message_is(&cr->messages[2], "system", "mid-turn");
	/* thinking is not sent back: the turn is left with empty text */
	message_is(&cr->messages[3], "assistant", "");
	ck_assert_ptr_null(cr->messages[3].tool_calls.data);
	message_is(&cr->messages[4], "user", "");
	message_request_free(rq);
}
END_TEST

START_TEST(test_parse_tools_round_trip)
{
	struct request *rq = parse_ok("{\"model\":\"m\",\"max_tokens\":10,\"messages\":["
	    "{\"role\":\"user\",\"content\":\"weather?\"},"
	    "{\"role\":\"assistant\",\"content\":[{\"type\":\"text\",\"text\":\"Let me look.\"},"
	    "{\"type\":\"tool_use\",\"id\":\"toolu_1\",\"name\":\"get_weather\",\"input\":"
	    "{\"city\":\"Paris\"}},{\"type\":\"tool_use\",\"id\":\"toolu_2\",\"name\":\"now\","
	    "\"input\":{}}]},"
	    "{\"role\":\"user\",\"content\":[{\"type\":\"tool_result\",\"tool_use_id\":\"toolu_1\","
	    "\"content\":[{\"type\":\"text\",\"text\":\"22C\"},{\"type\":\"text\",\"text\":\"sunny\"}]},"
	    "{\"type\":\"text\",\"text\":\"and then?\"},"
	    "{\"type\":\"tool_result\",\"tool_use_id\":\"toolu_2\",\"is_error\":true,"
	    "\"content\":\"noon\"}]},"
	    "{\"role\":\"user\",\"content\":[{\"type\":\"tool_result\",\"tool_use_id\":\"t3\"}]}]}",
	    NULL);
	struct chat_request *cr = &rq->u.chat;

	ck_assert_uint_eq(cr->n_messages, 6);
	message_is(&cr->messages[0], "user", "weather?");
	message_is(&cr->messages[1], "assistant", "Let me look.");
	ck_assert(raw_is(&cr->messages[1].tool_calls, "[{\"id\":\"toolu_1\",\"type\":\"function\","
	    "\"function\":{\"name\":\"get_weather\",\"arguments\":\"{\\\"city\\\":\\\"Paris\\\"}\"}},"
	    "{\"id\":\"toolu_2\",\"type\":\"function\",\"function\":{\"name\":\"now\","
	    "\"arguments\":\"{}\"}}]"));
	/* results first, as OpenAI wants them right after the calls; then the turn's text */
	message_is(&cr->messages[2], "tool", "22C\nsunny");
	ck_assert_str_eq(cr->messages[2].tool_call_id, "toolu_1");
	message_is(&cr->messages[3], "tool", "noon");
	ck_assert_str_eq(cr->messages[3].tool_call_id, "toolu_2");
	message_is(&cr->messages[4], "user", "and then?");
	/* a turn of results alone adds no user message; a result without content is empty */
	message_is(&cr->messages[5], "tool", "");
	ck_assert_str_eq(cr->messages[5].tool_call_id, "t3");
	message_request_free(rq);

	/* an assistant turn of calls alone has no content */
	rq = parse_ok("{\"max_tokens\":1,\"messages\":[{\"role\":\"user\",\"content\":\"x\"},"
	    "{\"role\":\"assistant\",\"content\":[{\"type\":\"tool_use\",\"id\":\"a\",\"name\":\"f\"}]}]}",
	    NULL);
	message_is(&rq->u.chat.messages[1], "assistant", NULL);
	ck_assert(raw_is(&rq->u.chat.messages[1].tool_calls, "[{\"id\":\"a\",\"type\":\"function\","
	    "\"function\":{\"name\":\"f\",\"arguments\":\"{}\"}}]"));
	message_request_free(rq);
}
END_TEST

START_TEST(test_parse_tool_definitions)
{
	struct request *rq = parse_ok("{\"model\":\"m\",\"max_tokens\":10,\"messages\":["
	    "{\"role\":\"user\",\"content\":[{\"type\":\"tool_result\",\"tool_use_id\":\"s1\","
	    "\"content\":[{\"type\":\"tool_reference\",\"tool_name\":\"Cron\"}]}]}],"
	    "\"tools\":[{\"name\":\"get_weather\",\"description\":\"Weather\",\"input_schema\":"
	    "{\"type\":\"object\",\"properties\":{\"city\":{\"type\":\"string\"}}},"
	    "\"cache_control\":{\"type\":\"ephemeral\"}},"
	    "{\"type\":\"custom\",\"name\":\"strict_one\",\"input_schema\":{\"type\":\"object\"},"
	    "\"strict\":true},"
	    "{\"type\":\"web_search_20250305\",\"name\":\"web_search\",\"max_uses\":3},"
	    "{\"name\":\"Cron\",\"input_schema\":{\"type\":\"object\"},\"defer_loading\":true},"
	    "{\"name\":\"Hidden\",\"input_schema\":{\"type\":\"object\"},\"defer_loading\":true},"
	    "{\"name\":\"bare\"}],"
	    "\"tool_choice\":{\"type\":\"any\",\"disable_parallel_tool_use\":true},"
	    "\"top_k\":40,\"temperature\":0.5,\"top_p\":0.9,\"stop_sequences\":[\"END\",\"\\n\\n\"],"
	    "\"output_config\":{\"effort\":\"high\",\"format\":{\"type\":\"json_schema\",\"schema\":"
	    "{\"type\":\"object\"}}}}", NULL);
	struct chat_request *cr = &rq->u.chat;
	json_t *x = extra_of(rq), *want = json_loads("{"
	    "\"tools\":[{\"type\":\"function\",\"function\":{\"name\":\"get_weather\","
	    "\"description\":\"Weather\",\"parameters\":{\"type\":\"object\",\"properties\":"
	    "{\"city\":{\"type\":\"string\"}}}}},"
	    "{\"type\":\"function\",\"function\":{\"name\":\"strict_one\",\"parameters\":"
	    "{\"type\":\"object\"},\"strict\":true}},"
	    "{\"type\":\"function\",\"function\":{\"name\":\"Cron\",\"parameters\":"
	    "{\"type\":\"object\"}}},"
	    "{\"type\":\"function\",\"function\":{\"name\":\"bare\",\"parameters\":"
	    "{\"type\":\"object\",\"properties\":{}}}}],"
	    "\"tool_choice\":\"required\",\"parallel_tool_calls\":false,\"top_k\":40,"
	    "\"response_format\":{\"type\":\"json_schema\",\"json_schema\":{\"name\":\"output\","
	    "\"schema\":{\"type\":\"object\"}}}}", 0, NULL);

	ck_assert(want != NULL);
	ck_assert_msg(json_equal(x, want), "extra: %s", json_dumps(x, JSON_COMPACT));
	/* the tool_reference loaded Cron: the result says so */
	message_is(&cr->messages[0], "tool", "Tool loaded: Cron");
	ck_assert_double_eq(cr->temperature, 0.5);
	ck_assert_double_eq(cr->top_p, 0.9);
	ck_assert_uint_eq(cr->n_stop, 2);
	ck_assert_str_eq(cr->stop[0], "END");
	ck_assert_str_eq(cr->stop[1], "\n\n");
	json_decref(x);
	json_decref(want);
	message_request_free(rq);
}
END_TEST

/* The tool_choice a body's choice becomes (NULL: none sent). */
static void
choice_is(const char *choice, const char *want)
{
	char body[512];
	struct request *rq;
	json_t *x, *w;

	snprintf(body, sizeof body, "{\"max_tokens\":5,\"messages\":[{\"role\":\"user\",\"content\":"
	    "\"x\"}],\"tools\":[{\"name\":\"f\",\"input_schema\":{}}],\"tool_choice\":%s}", choice);
	rq = parse_ok(body, NULL);
	x = extra_of(rq);
	if (want == NULL)
		ck_assert_ptr_null(json_object_get(x, "tool_choice"));
	else {
		w = json_loads(want, JSON_DECODE_ANY, NULL);
		ck_assert_msg(json_equal(json_object_get(x, "tool_choice"), w), "%s -> %s", choice,
		    json_dumps(json_object_get(x, "tool_choice"), JSON_ENCODE_ANY));
		json_decref(w);
	}
	ck_assert_ptr_null(json_object_get(x, "parallel_tool_calls"));
	json_decref(x);
	message_request_free(rq);
}

START_TEST(test_parse_tool_choice)
{
	struct request *rq;

	choice_is("{\"type\":\"auto\"}", "\"auto\"");
	choice_is("{\"type\":\"any\"}", "\"required\"");
	choice_is("{\"type\":\"none\"}", "\"none\"");
	choice_is("{\"type\":\"tool\",\"name\":\"f\"}",
	    "{\"type\":\"function\",\"function\":{\"name\":\"f\"}}");
	choice_is("{\"type\":\"auto\",\"disable_parallel_tool_use\":false}", "\"auto\"");
	/* no tools, no choice */
	rq = parse_ok("{\"max_tokens\":5,\"messages\":[{\"role\":\"user\",\"content\":\"x\"}],"
	    "\"tool_choice\":{\"type\":\"any\"}}", NULL);
	ck_assert_ptr_null(rq->u.chat.extra.data);
	message_request_free(rq);
}
END_TEST

START_TEST(test_parse_meta)
{
	struct anthropic_meta meta;
	struct request *rq;
	static const struct {
		const char *thinking;
		bool shown;
	} cases[] = {
		{ "{\"type\":\"enabled\",\"budget_tokens\":1024}", true },
		{ "{\"type\":\"adaptive\"}", true },
		{ "{\"type\":\"adaptive\",\"display\":\"omitted\"}", false },
		{ "{\"type\":\"disabled\"}", false },
		{ "null", false },
	};
	char body[256];

	for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
		snprintf(body, sizeof body, "{\"max_tokens\":5,\"stream\":true,\"thinking\":%s,"
		    "\"messages\":[{\"role\":\"user\",\"content\":\"x\"}]}", cases[i].thinking);
		rq = parse_ok(body, &meta);
		ck_assert_msg(meta.thinking == cases[i].shown, "%s", cases[i].thinking);
		ck_assert(meta.stream && rq->u.chat.stream);
		ck_assert_ptr_null(rq->u.chat.extra.data);      /* thinking is not sent on */
		message_request_free(rq);
	}
}
END_TEST

START_TEST(test_parse_refused)
{
	struct anthropic_error err;
	struct anthropic_meta meta;

	ck_assert_ptr_null(anthropic_parse_messages("{\"max", 5, &meta, &err));
	ck_assert(strstr(err.message, "not valid JSON") != NULL);
	ck_assert_str_eq(err.field, "");
	parse_bad("{\"max_tokens\":5}", "messages", "Field required");
	parse_bad("{\"max_tokens\":5,\"messages\":[]}", "messages", "non-empty");
	parse_bad("{\"messages\":[{\"role\":\"user\",\"content\":\"x\"}]}", "max_tokens",
	    "Field required");
	parse_bad("{\"max_tokens\":0,\"messages\":[{\"role\":\"user\",\"content\":\"x\"}]}",
	    "max_tokens", "from 1 to 16777216");
	parse_bad("{\"max_tokens\":16777217,\"messages\":[{\"role\":\"user\",\"content\":\"x\"}]}",
	    "max_tokens", "from 1");
	parse_bad("{\"max_tokens\":\"5\",\"messages\":[{\"role\":\"user\",\"content\":\"x\"}]}",
	    "max_tokens", "integer");
	parse_bad("{\"max_tokens\":5,\"messages\":[{\"role\":\"tool\",\"content\":\"x\"}]}",
	    "messages.0.role", "\"user\" or \"assistant\"");
	parse_bad("{\"max_tokens\":5,\"messages\":[\"x\"]}", "messages.0", "object");
	parse_bad("{\"max_tokens\":5,\"messages\":[{\"role\":\"user\",\"content\":5}]}",
	    "messages.0.content", "string or an array");
	parse_bad("{\"max_tokens\":5,\"messages\":[{\"role\":\"user\",\"content\":["
	    "{\"type\":\"text\",\"text\":\"look\"},{\"type\":\"image\",\"source\":{\"type\":\"base64\","
	    "\"media_type\":\"image/png\",\"data\":\"AAAA\"}}]}]}", "messages.0.content.1",
	    "image blocks are not supported");
	parse_bad("{\"max_tokens\":5,\"messages\":[{\"role\":\"user\",\"content\":"
	    "[{\"type\":\"tool_result\",\"tool_use_id\":\"t\",\"content\":[{\"type\":\"image\"}]}]}]}",
	    "messages.0.content.0.content.0", "image blocks");
	parse_bad("{\"max_tokens\":5,\"messages\":[{\"role\":\"user\",\"content\":"
	    "[{\"type\":\"document\",\"source\":{\"type\":\"base64\",\"data\":\"x\"}}]}]}",
	    "messages.0.content.0", "text source");
	parse_bad("{\"max_tokens\":5,\"messages\":[{\"role\":\"user\",\"content\":"
	    "[{\"type\":\"tool_use\",\"id\":\"a\",\"name\":\"f\",\"input\":{}}]}]}",
	    "messages.0.content.0", "assistant turns");
	parse_bad("{\"max_tokens\":5,\"messages\":[{\"role\":\"assistant\",\"content\":"
	    "[{\"type\":\"tool_result\",\"tool_use_id\":\"a\"}]}]}",
	    "messages.0.content.0", "user turns");
	parse_bad("{\"max_tokens\":5,\"messages\":[{\"role\":\"assistant\",\"content\":"
	    "[{\"type\":\"tool_use\",\"id\":\"a\",\"input\":{}}]}]}",
	    "messages.0.content.0", "id and name");
	parse_bad("{\"max_tokens\":5,\"messages\":[{\"role\":\"assistant\",\"content\":"
	    "[{\"type\":\"tool_use\",\"id\":\"a\",\"name\":\"f\",\"input\":[1]}]}]}",
	    "messages.0.content.0", "input must be an object");
	parse_bad("{\"max_tokens\":5,\"messages\":[{\"role\":\"user\",\"content\":"
	    "[{\"type\":\"tool_result\"}]}]}", "messages.0.content.0", "tool_use_id");
	parse_bad("{\"max_tokens\":5,\"messages\":[{\"role\":\"user\",\"content\":"
	    "[{\"type\":\"server_tool_use\",\"id\":\"x\"}]}]}", "messages.0.content.0",
	    "unsupported content block type \"server_tool_use\"");
	parse_bad("{\"max_tokens\":5,\"messages\":[{\"role\":\"user\",\"content\":[{\"text\":\"x\"}]}]}",
	    "messages.0.content.0", "with a type");
	parse_bad("{\"max_tokens\":5,\"messages\":[{\"role\":\"user\",\"content\":"
	    "[{\"type\":\"text\",\"text\":7}]}]}", "messages.0.content.0", "string text");
	parse_bad("{\"max_tokens\":5,\"system\":7,\"messages\":[{\"role\":\"user\",\"content\":\"x\"}]}",
	    "system", "string or an array");
	parse_bad("{\"max_tokens\":5,\"system\":[{\"type\":\"image\"}],\"messages\":[{\"role\":\"user\","
	    "\"content\":\"x\"}]}", "system.0", "text blocks");
	parse_bad("{\"max_tokens\":5,\"tools\":{},\"messages\":[{\"role\":\"user\",\"content\":\"x\"}]}",
	    "tools", "array");
	parse_bad("{\"max_tokens\":5,\"tools\":[{\"input_schema\":{}}],\"messages\":[{\"role\":\"user\","
	    "\"content\":\"x\"}]}", "tools.0", "needs a name");
	parse_bad("{\"max_tokens\":5,\"tools\":[{\"name\":\"f\",\"input_schema\":3}],\"messages\":"
	    "[{\"role\":\"user\",\"content\":\"x\"}]}", "tools.0", "input_schema");
	parse_bad("{\"max_tokens\":5,\"tool_choice\":{\"type\":\"tool\"},\"messages\":"
	    "[{\"role\":\"user\",\"content\":\"x\"}]}", "tool_choice", "with a name");
	parse_bad("{\"max_tokens\":5,\"stop_sequences\":\"END\",\"messages\":"
	    "[{\"role\":\"user\",\"content\":\"x\"}]}", "stop_sequences", "array of strings");
	parse_bad("{\"max_tokens\":5,\"stream\":\"yes\",\"messages\":[{\"role\":\"user\",\"content\":\"x\"}]}",
	    "stream", "true or false");
	parse_bad("{\"max_tokens\":5,\"temperature\":\"hot\",\"messages\":[{\"role\":\"user\","
	    "\"content\":\"x\"}]}", "temperature", "number");
	parse_bad("{\"max_tokens\":5,\"top_k\":-1,\"messages\":[{\"role\":\"user\",\"content\":\"x\"}]}",
	    "top_k", "integer");
	parse_bad("{\"max_tokens\":5,\"thinking\":true,\"messages\":[{\"role\":\"user\",\"content\":\"x\"}]}",
	    "thinking", "object");
	parse_bad("{\"max_tokens\":5,\"model\":3,\"messages\":[{\"role\":\"user\",\"content\":\"x\"}]}",
	    "model", "string");
	parse_bad("{\"max_tokens\":5,\"model\":\"a\\u0000b\",\"messages\":[{\"role\":\"user\","
	    "\"content\":\"x\"}]}", "model", "string");
}
END_TEST

START_TEST(test_parse_count_tokens)
{
	struct anthropic_error err;
	const char *body = "{\"model\":\"m\",\"stream\":true,\"system\":\"s\",\"messages\":"
	    "[{\"role\":\"user\",\"content\":\"count me\"}],\"tools\":[{\"name\":\"f\","
	    "\"input_schema\":{}}]}";
	struct request *rq = anthropic_parse_count_tokens(body, strlen(body), &err);

	ck_assert_msg(rq != NULL, "%s", err.message);
	ck_assert_int_eq(rq->u.chat.max_tokens, -1);
	ck_assert(!rq->u.chat.stream);
	ck_assert_uint_eq(rq->u.chat.n_messages, 2);
	ck_assert_ptr_nonnull(rq->u.chat.extra.data);
	message_request_free(rq);
}
END_TEST

/* What goes to the model server is the chat body the OpenAI front would send. */
START_TEST(test_parse_upstream_body)
{
	struct request *rq = parse_ok("{\"model\":\"m\",\"max_tokens\":64,\"stream\":true,"
	    "\"stop_sequences\":[\"END\"],\"messages\":[{\"role\":\"user\",\"content\":\"hi\"},"
	    "{\"role\":\"assistant\",\"content\":[{\"type\":\"tool_use\",\"id\":\"t1\",\"name\":\"f\","
	    "\"input\":{\"a\":1}}]},{\"role\":\"user\",\"content\":[{\"type\":\"tool_result\","
	    "\"tool_use_id\":\"t1\",\"content\":\"ok\"}]}],\"tools\":[{\"name\":\"f\",\"input_schema\":"
	    "{\"type\":\"object\"}}],\"tool_choice\":{\"type\":\"auto\"}}", NULL);
	char cause[256], *body = openai_chat_body(&rq->u.chat, "served", true, cause, sizeof cause);
	json_t *j, *want;

	ck_assert_msg(body != NULL, "%s", cause);
	j = json_loads(body, 0, NULL);
	want = json_loads("{\"model\":\"served\",\"messages\":[{\"role\":\"user\",\"content\":\"hi\"},"
	    "{\"role\":\"assistant\",\"content\":null,\"tool_calls\":[{\"id\":\"t1\",\"type\":"
	    "\"function\",\"function\":{\"name\":\"f\",\"arguments\":\"{\\\"a\\\":1}\"}}]},"
	    "{\"role\":\"tool\",\"content\":\"ok\",\"tool_call_id\":\"t1\"}],\"stream\":true,"
	    "\"stream_options\":{\"include_usage\":true},\"max_tokens\":64,\"stop\":[\"END\"],"
	    "\"tools\":[{\"type\":\"function\",\"function\":{\"name\":\"f\",\"parameters\":"
	    "{\"type\":\"object\"}}}],\"tool_choice\":\"auto\"}", 0, NULL);
	ck_assert_msg(json_equal(j, want), "body %s", body);
	json_decref(j);
	json_decref(want);
	free(body);
	message_request_free(rq);
}
END_TEST

/* --- errors ------------------------------------------------------------- */

START_TEST(test_error_status)
{
	static const struct {
		const char *code;
		int64_t upstream;
		int status;
		const char *type;
	} cases[] = {
		{ "bad_request", -1, 400, "invalid_request_error" },
		{ "invalid_api_key", -1, 401, "authentication_error" },
		{ "budget_exceeded", -1, 402, "billing_error" },
		{ "forbidden", -1, 403, "permission_error" },
		{ "unknown_model", -1, 404, "not_found_error" },
		{ "too_large", -1, 413, "request_too_large" },
		{ "rate_limited", -1, 429, "rate_limit_error" },
		{ "timeout", -1, 504, "timeout_error" },
		{ "upstream_unavailable", -1, 529, "overloaded_error" },
		{ "shutting_down", -1, 529, "overloaded_error" },
		{ "upstream_error", 400, 400, "invalid_request_error" },
		{ "upstream_error", 404, 404, "not_found_error" },
		{ "upstream_error", 422, 422, "invalid_request_error" },
		{ "upstream_error", 401, 502, "api_error" },
		{ "upstream_error", 429, 502, "api_error" },
		{ "upstream_error", 500, 502, "api_error" },
		{ "internal", -1, 500, "api_error" },
		{ "something_new", -1, 500, "api_error" },
	};
	const char *type;

	for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
		int status = anthropic_error_status(cases[i].code, cases[i].upstream, &type);
		ck_assert_msg(status == cases[i].status && strcmp(type, cases[i].type) == 0,
		    "%s/%lld: %d %s", cases[i].code, (long long)cases[i].upstream, status, type);
	}
}
END_TEST

/* The bytes an evbuffer holds, as a string (freed by the caller). */
static char *
drain(struct evbuffer *b)
{
	size_t n = evbuffer_get_length(b);
	char *s = malloc(n + 1);

	evbuffer_remove(b, s, n);
	s[n] = '\0';
	return s;
}

START_TEST(test_error_write)
{
	struct evbuffer *b = evbuffer_new();
	struct message_raw detail;
	json_t *d = json_pack("{s:s, s:f}", "scope", "tag:ci", "left", 0.5);
	char *s;

	ck_assert_int_eq(anthropic_error_write(b, "bad_request", "messages: Field required", -1,
	    NULL), 400);
	s = drain(b);
	ck_assert_str_eq(s, "{\"type\":\"error\",\"error\":{\"type\":\"invalid_request_error\","
	    "\"message\":\"messages: Field required\"}}\n");
	free(s);
	memset(&detail, 0, sizeof detail);
	ck_assert_int_eq(translate_raw_set(&detail, d), 0);
	ck_assert_int_eq(anthropic_error_write(b, "budget_exceeded", "over", -1, &detail), 402);
	s = drain(b);
	ck_assert_str_eq(s, "{\"type\":\"error\",\"error\":{\"type\":\"billing_error\","
	    "\"message\":\"over\",\"budget\":{\"scope\":\"tag:ci\",\"left\":0.5}}}\n");
	free(s);
	anthropic_count_write(b, 42);
	s = drain(b);
	ck_assert_str_eq(s, "{\"input_tokens\":42}\n");
	free(s);
	free(detail.data);
	json_decref(d);
	evbuffer_free(b);
}
END_TEST

/* --- non-stream replies ------------------------------------------------- */

/* A done reply with content, reasoning and tool calls (JSON text, or NULL). */
static void
done_init(struct done_reply *d, const char *content, const char *reasoning, const char *calls,
    const char *finish)
{
	memset(d, 0, sizeof *d);
	d->content = (char *)content;
	d->reasoning = (char *)reasoning;
	d->finish_reason = (char *)finish;
	d->usage.prompt_tokens = 12;
	d->usage.completion_tokens = 7;
	d->usage.total_tokens = 19;
	if (calls != NULL) {
		json_t *j = json_loads(calls, 0, NULL);
		ck_assert(j != NULL && translate_raw_set(&d->tool_calls, j) == 0);
		json_decref(j);
	}
}

/* The JSON an evbuffer holds. */
static json_t *
drain_json(struct evbuffer *b)
{
	char *s = drain(b);
	json_t *j = json_loads(s, 0, NULL);

	ck_assert_msg(j != NULL, "not JSON: %s", s);
	free(s);
	return j;
}

START_TEST(test_message_write)
{
	struct evbuffer *b = evbuffer_new();
	struct done_reply d;
	json_t *j, *want;

	done_init(&d, "Hello.", "mulling", NULL, "stop");
	ck_assert_int_eq(anthropic_message_write(b, "msg_1", "m", &d, true, NULL), 0);
	j = drain_json(b);
	want = json_loads("{\"id\":\"msg_1\",\"type\":\"message\",\"role\":\"assistant\",\"model\":\"m\","
	    "\"content\":[{\"type\":\"thinking\",\"thinking\":\"mulling\",\"signature\":\"\"},"
	    "{\"type\":\"text\",\"text\":\"Hello.\"}],\"stop_reason\":\"end_turn\",\"stop_sequence\":null,"
	    "\"usage\":{\"input_tokens\":12,\"cache_creation_input_tokens\":0,"
	    "\"cache_read_input_tokens\":0,\"output_tokens\":7}}", 0, NULL);
	ck_assert_msg(json_equal(j, want), "%s", json_dumps(j, JSON_COMPACT));
	json_decref(j);
	json_decref(want);

	/* no thinking asked: none shown; the stop sequence the server named */
	ck_assert_int_eq(anthropic_message_write(b, "msg_2", "m", &d, false, "END"), 0);
	j = drain_json(b);
	ck_assert_uint_eq(json_array_size(json_object_get(j, "content")), 1);
	ck_assert_str_eq(json_string_value(json_object_get(j, "stop_reason")), "stop_sequence");
	ck_assert_str_eq(json_string_value(json_object_get(j, "stop_sequence")), "END");
	json_decref(j);

	/* tool calls: input parsed, {} when empty, kept as text when not an object */
	done_init(&d, NULL, NULL, "[{\"id\":\"call_1\",\"type\":\"function\",\"function\":{\"name\":"
	    "\"f\",\"arguments\":\"{\\\"a\\\":1}\"}},{\"type\":\"function\",\"function\":{\"name\":\"g\","
	    "\"arguments\":\"\"}},{\"id\":\"c3\",\"function\":{\"name\":\"h\",\"arguments\":\"[1\"}}]",
	    "stop");
	ck_assert_int_eq(anthropic_message_write(b, "msg_3", "m", &d, false, NULL), 0);
	j = drain_json(b);
	want = json_loads("[{\"type\":\"tool_use\",\"id\":\"call_1\",\"name\":\"f\",\"input\":{\"a\":1}},"
	    "{\"type\":\"tool_use\",\"id\":\"toolu_msg_3_1\",\"name\":\"g\",\"input\":{}},"
	    "{\"type\":\"tool_use\",\"id\":\"c3\",\"name\":\"h\",\"input\":{\"arguments\":\"[1\"}}]",
	    0, NULL);
	ck_assert_msg(json_equal(json_object_get(j, "content"), want), "%s",
	    json_dumps(j, JSON_COMPACT));
	/* Ollama says "stop" with tool calls: it is still tool_use */
	ck_assert_str_eq(json_string_value(json_object_get(j, "stop_reason")), "tool_use");
	json_decref(j);
	json_decref(want);
	free(d.tool_calls.data);

	done_init(&d, "cut", NULL, NULL, "length");
	ck_assert_int_eq(anthropic_message_write(b, "msg_4", "m", &d, false, NULL), 0);
	j = drain_json(b);
	ck_assert_str_eq(json_string_value(json_object_get(j, "stop_reason")), "max_tokens");
	json_decref(j);
	evbuffer_free(b);
}
END_TEST

START_TEST(test_stop_reason)
{
	ck_assert_str_eq(anthropic_stop_reason("stop", false, NULL), "end_turn");
	ck_assert_str_eq(anthropic_stop_reason(NULL, false, NULL), "end_turn");
	ck_assert_str_eq(anthropic_stop_reason("length", true, NULL), "max_tokens");
	ck_assert_str_eq(anthropic_stop_reason("tool_calls", false, NULL), "tool_use");
	ck_assert_str_eq(anthropic_stop_reason("function_call", false, NULL), "tool_use");
	ck_assert_str_eq(anthropic_stop_reason("stop", true, NULL), "tool_use");
	ck_assert_str_eq(anthropic_stop_reason("stop", false, "END"), "stop_sequence");
	ck_assert_str_eq(anthropic_stop_reason("content_filter", false, NULL), "refusal");
}
END_TEST

/* --- the stream --------------------------------------------------------- */

/*
 * Split SSE output into its events, checking the framing (each "event: N\ndata:
 * JSON\n\n" with data.type == N): an array of [name, data].
 */
static json_t *
events_of(struct evbuffer *b)
{
	char *s = drain(b), *p = s, *nl, *end;
	json_t *all = json_array();

	while (*p != '\0') {
		ck_assert_msg(strncmp(p, "event: ", 7) == 0, "framing at %s", p);
		nl = strchr(p, '\n');
		ck_assert(nl != NULL && strncmp(nl + 1, "data: ", 6) == 0);
		end = strstr(nl + 7, "\n\n");
		ck_assert_msg(end != NULL, "unterminated event %s", p);
		*nl = *end = '\0';
		json_t *data = json_loads(nl + 7, 0, NULL);
		ck_assert_msg(json_is_object(data), "data %s", nl + 7);
		ck_assert_str_eq(json_string_value(json_object_get(data, "type")), p + 7);
		json_array_append_new(all, json_pack("[s, o]", p + 7, data));
		p = end + 2;
	}
	free(s);
	return all;
}

/* The names of events, space-separated. */
static char *
names_of(json_t *events)
{
	char *s = calloc(1, 4096);
	json_t *e;
	size_t i;

	json_array_foreach(events, i, e) {
		if (i > 0)
			strcat(s, " ");
		strcat(s, json_string_value(json_array_get(e, 0)));
	}
	return s;
}

/* Event i's data. */
static json_t *
ev(json_t *events, size_t i)
{
	return json_array_get(json_array_get(events, i), 1);
}

/* A delta reply of content, reasoning or tool calls (JSON text); release with delta_clear. */
static struct delta_reply
delta_of(const char *content, const char *reasoning, const char *calls)
{
	struct delta_reply d;

	memset(&d, 0, sizeof d);
	d.content = (char *)content;
	d.reasoning = (char *)reasoning;
	if (calls != NULL) {
		json_t *j = json_loads(calls, 0, NULL);
		ck_assert(j != NULL && translate_raw_set(&d.tool_calls, j) == 0);
		json_decref(j);
	}
	return d;
}

START_TEST(test_stream_text)
{
	struct anthropic_stream s;
	struct evbuffer *b = evbuffer_new();
	struct delta_reply d1 = delta_of("Hel", NULL, NULL), d2 = delta_of("lo", NULL, NULL);
	struct delta_reply empty = delta_of("", NULL, NULL);
	struct done_reply done;
	json_t *e, *want;
	char *names;

	ck_assert_int_eq(anthropic_stream_init(&s, "msg_abc", "qwen", false, 9), 0);
	anthropic_stream_begin(&s, b);
	anthropic_stream_begin(&s, b);          /* once */
	ck_assert_int_eq(anthropic_stream_delta(&s, &d1, b), 0);
	ck_assert_int_eq(anthropic_stream_delta(&s, &empty, b), 0);
	ck_assert_int_eq(anthropic_stream_delta(&s, &d2, b), 0);
	done_init(&done, "Hello", NULL, NULL, "stop");
	ck_assert_int_eq(anthropic_stream_done(&s, &done, NULL, b), 0);
	ck_assert_int_eq(anthropic_stream_done(&s, &done, NULL, b), 0);     /* once */
	e = events_of(b);
	names = names_of(e);
	ck_assert_str_eq(names, "message_start ping content_block_start content_block_delta "
	    "content_block_delta content_block_stop message_delta message_stop");
	want = json_loads("{\"type\":\"message_start\",\"message\":{\"id\":\"msg_abc\",\"type\":"
	    "\"message\",\"role\":\"assistant\",\"model\":\"qwen\",\"content\":[],\"stop_reason\":null,"
	    "\"stop_sequence\":null,\"usage\":{\"input_tokens\":9,\"cache_creation_input_tokens\":0,"
	    "\"cache_read_input_tokens\":0,\"output_tokens\":0}}}", 0, NULL);
	ck_assert(json_equal(ev(e, 0), want));
	json_decref(want);
	want = json_loads("{\"type\":\"content_block_start\",\"index\":0,\"content_block\":"
	    "{\"type\":\"text\",\"text\":\"\"}}", 0, NULL);
	ck_assert(json_equal(ev(e, 2), want));
	json_decref(want);
	want = json_loads("{\"type\":\"content_block_delta\",\"index\":0,\"delta\":"
	    "{\"type\":\"text_delta\",\"text\":\"lo\"}}", 0, NULL);
	ck_assert(json_equal(ev(e, 4), want));
	json_decref(want);
	want = json_loads("{\"type\":\"message_delta\",\"delta\":{\"stop_reason\":\"end_turn\","
	    "\"stop_sequence\":null},\"usage\":{\"input_tokens\":12,\"cache_creation_input_tokens\":0,"
	    "\"cache_read_input_tokens\":0,\"output_tokens\":7}}", 0, NULL);
	ck_assert(json_equal(ev(e, 6), want));
	json_decref(want);
	free(names);
	json_decref(e);
	anthropic_stream_clear(&s);
	evbuffer_free(b);
}
END_TEST

START_TEST(test_stream_blocks)
{
	struct anthropic_stream s;
	struct evbuffer *b = evbuffer_new();
	struct delta_reply r = delta_of(NULL, "let me think", NULL);
	struct delta_reply t = delta_of("Calling.", NULL, NULL);
	struct delta_reply c1 = delta_of(NULL, NULL, "[{\"index\":0,\"id\":\"call_a\",\"type\":"
	    "\"function\",\"function\":{\"name\":\"f\",\"arguments\":\"{\\\"x\\\":\"}}]");
	struct delta_reply c2 = delta_of(NULL, NULL, "[{\"index\":0,\"function\":{\"arguments\":"
	    "\"1}\"}}]");
	struct delta_reply c3 = delta_of(NULL, NULL, "[{\"index\":1,\"id\":\"\",\"function\":"
	    "{\"name\":\"g\",\"arguments\":{\"y\":2}}}]");
	struct delta_reply late = delta_of(NULL, NULL, "[{\"index\":0,\"function\":{\"arguments\":"
	    "\" \"}}]");
	struct done_reply done;
	json_t *e, *want;
	char *names;

	ck_assert_int_eq(anthropic_stream_init(&s, "msg_x", "m", true, 1), 0);
	ck_assert_int_eq(anthropic_stream_delta(&s, &r, b), 0);
	ck_assert_int_eq(anthropic_stream_delta(&s, &t, b), 0);
	ck_assert_int_eq(anthropic_stream_delta(&s, &c1, b), 0);
	ck_assert_int_eq(anthropic_stream_delta(&s, &c2, b), 0);
	ck_assert_int_eq(anthropic_stream_delta(&s, &c3, b), 0);
	ck_assert_int_eq(anthropic_stream_delta(&s, &late, b), 0);
	done_init(&done, NULL, NULL, NULL, "stop");     /* Ollama: stop, with calls */
	ck_assert_int_eq(anthropic_stream_done(&s, &done, NULL, b), 0);
	e = events_of(b);
	names = names_of(e);
	ck_assert_str_eq(names, "message_start ping "
	    "content_block_start content_block_delta content_block_stop "
	    "content_block_start content_block_delta content_block_stop "
	    "content_block_start content_block_delta content_block_delta content_block_stop "
	    "content_block_start content_block_delta content_block_delta content_block_stop "
	    "message_delta message_stop");
	want = json_loads("{\"type\":\"content_block_start\",\"index\":0,\"content_block\":"
	    "{\"type\":\"thinking\",\"thinking\":\"\",\"signature\":\"\"}}", 0, NULL);
	ck_assert(json_equal(ev(e, 2), want));
	json_decref(want);
	ck_assert_str_eq(json_string_value(json_object_get(json_object_get(ev(e, 3), "delta"),
	    "thinking")), "let me think");
	want = json_loads("{\"type\":\"content_block_start\",\"index\":2,\"content_block\":"
	    "{\"type\":\"tool_use\",\"id\":\"call_a\",\"name\":\"f\",\"input\":{}}}", 0, NULL);
	ck_assert(json_equal(ev(e, 8), want));
	json_decref(want);
	want = json_loads("{\"type\":\"content_block_delta\",\"index\":2,\"delta\":"
	    "{\"type\":\"input_json_delta\",\"partial_json\":\"1}\"}}", 0, NULL);
	ck_assert(json_equal(ev(e, 10), want));
	json_decref(want);
	/* the second call: an id made up; arguments given as an object sent as text */
	want = json_loads("{\"type\":\"content_block_start\",\"index\":3,\"content_block\":"
	    "{\"type\":\"tool_use\",\"id\":\"toolu_msg_x_1\",\"name\":\"g\",\"input\":{}}}", 0, NULL);
	ck_assert(json_equal(ev(e, 12), want));
	json_decref(want);
	ck_assert_str_eq(json_string_value(json_object_get(json_object_get(ev(e, 13), "delta"),
	    "partial_json")), "{\"y\":2}");
	/* the late fragment of the first call goes to its block */
	ck_assert_int_eq(json_integer_value(json_object_get(ev(e, 14), "index")), 2);
	ck_assert_int_eq(json_integer_value(json_object_get(ev(e, 15), "index")), 3);
	ck_assert_str_eq(json_string_value(json_object_get(json_object_get(ev(e, 16), "delta"),
	    "stop_reason")), "tool_use");
	free(names);
	json_decref(e);
	free(c1.tool_calls.data);
	free(c2.tool_calls.data);
	free(c3.tool_calls.data);
	free(late.tool_calls.data);
	anthropic_stream_clear(&s);
	evbuffer_free(b);
}
END_TEST

START_TEST(test_stream_hidden_thinking)
{
	struct anthropic_stream s;
	struct evbuffer *b = evbuffer_new();
	struct delta_reply r = delta_of(NULL, "secret", NULL), t = delta_of("out", "more", NULL);
	struct done_reply done;
	json_t *e;
	char *names;

	ck_assert_int_eq(anthropic_stream_init(&s, "msg_y", "m", false, 1), 0);
	anthropic_stream_delta(&s, &r, b);
	anthropic_stream_delta(&s, &t, b);
	done_init(&done, NULL, NULL, NULL, "length");
	anthropic_stream_done(&s, &done, NULL, b);
	e = events_of(b);
	names = names_of(e);
	ck_assert_str_eq(names, "message_start ping content_block_start content_block_delta "
	    "content_block_stop message_delta message_stop");
	ck_assert_str_eq(json_string_value(json_object_get(json_object_get(ev(e, 3), "delta"),
	    "text")), "out");
	ck_assert_str_eq(json_string_value(json_object_get(json_object_get(ev(e, 5), "delta"),
	    "stop_reason")), "max_tokens");
	free(names);
	json_decref(e);
	anthropic_stream_clear(&s);

	/* an empty reply: no block at all */
	ck_assert_int_eq(anthropic_stream_init(&s, "msg_z", "m", false, 1), 0);
	done_init(&done, NULL, NULL, NULL, "stop");
	anthropic_stream_done(&s, &done, "STOP", b);
	e = events_of(b);
	names = names_of(e);
	ck_assert_str_eq(names, "message_start ping message_delta message_stop");
	ck_assert_str_eq(json_string_value(json_object_get(json_object_get(ev(e, 2), "delta"),
	    "stop_sequence")), "STOP");
	free(names);
	json_decref(e);
	anthropic_stream_clear(&s);
	evbuffer_free(b);
}
END_TEST

START_TEST(test_stream_error)
{
	struct anthropic_stream s;
	struct evbuffer *b = evbuffer_new();
	struct delta_reply t = delta_of("partial", NULL, NULL);
	struct done_reply done;
	json_t *e, *want;
	char *names;

	ck_assert_int_eq(anthropic_stream_init(&s, "msg_e", "m", false, 1), 0);
	anthropic_stream_delta(&s, &t, b);
	anthropic_stream_error(&s, "upstream_unavailable", "the model server went away", -1, b);
	/* nothing after the error */
	anthropic_stream_delta(&s, &t, b);
	done_init(&done, NULL, NULL, NULL, "stop");
	anthropic_stream_done(&s, &done, NULL, b);
	anthropic_stream_error(&s, "internal", "again", -1, b);
	e = events_of(b);
	names = names_of(e);
	ck_assert_str_eq(names, "message_start ping content_block_start content_block_delta error");
	want = json_loads("{\"type\":\"error\",\"error\":{\"type\":\"overloaded_error\","
	    "\"message\":\"the model server went away\"}}", 0, NULL);
	ck_assert(json_equal(ev(e, 4), want));
	json_decref(want);
	free(names);
	json_decref(e);
	anthropic_stream_ping(&s, b);           /* not after the end */
	ck_assert_uint_eq(evbuffer_get_length(b), 0);
	anthropic_stream_clear(&s);
	/* a keepalive starts the stream if nothing did */
	ck_assert_int_eq(anthropic_stream_init(&s, "msg_p", "m", false, 1), 0);
	anthropic_stream_ping(&s, b);
	anthropic_stream_ping(&s, b);
	e = events_of(b);
	names = names_of(e);
	ck_assert_str_eq(names, "message_start ping ping");
	free(names);
	json_decref(e);
	anthropic_stream_clear(&s);
	evbuffer_free(b);
}
END_TEST

/* --- a native upstream -------------------------------------------------- */

/* Fold one native event that must parse. */
static void
native_ok(struct anthropic_native *n, const char *event, const char *data)
{
	char cause[128];

	ck_assert_msg(anthropic_native_event(n, event, data, strlen(data), cause, sizeof cause) == 0,
	    "%s: %s", data, cause);
}

START_TEST(test_native_stream)
{
	struct anthropic_native n;
	char cause[128];

	memset(&n, 0, sizeof n);
	native_ok(&n, "message_start", "{\"type\":\"message_start\",\"message\":{\"id\":\"msg_1\","
	    "\"model\":\"claude-x\",\"usage\":{\"input_tokens\":10,\"cache_creation_input_tokens\":5,"
	    "\"cache_read_input_tokens\":100,\"output_tokens\":1}}}");
	ck_assert(n.has_usage);
	ck_assert_int_eq(n.usage.prompt_tokens, 115);
	ck_assert_int_eq(n.usage.completion_tokens, 1);
	ck_assert_str_eq(n.model, "claude-x");
	ck_assert(!n.text);
	native_ok(&n, "content_block_start", "{\"type\":\"content_block_start\",\"index\":0,"
	    "\"content_block\":{\"type\":\"text\",\"text\":\"\"}}");
	ck_assert(!n.text);
	native_ok(&n, "ping", "{\"type\": \"ping\"}");
	native_ok(&n, "content_block_delta", "{\"type\":\"content_block_delta\",\"index\":0,"
	    "\"delta\":{\"type\":\"text_delta\",\"text\":\"Hi\"}}");
	ck_assert(n.text);
	native_ok(&n, NULL, "{\"type\":\"content_block_delta\",\"index\":1,"
	    "\"delta\":{\"type\":\"input_json_delta\",\"partial_json\":\"{\\\"a\\\"\"}}");
	ck_assert(n.text);
	native_ok(&n, "content_block_stop", "{\"type\":\"content_block_stop\",\"index\":0}");
	ck_assert(!n.text);
	native_ok(&n, "message_delta", "{\"type\":\"message_delta\",\"delta\":{\"stop_reason\":"
	    "\"end_turn\",\"stop_sequence\":null},\"usage\":{\"output_tokens\":42}}");
	ck_assert_int_eq(n.usage.prompt_tokens, 115);
	ck_assert_int_eq(n.usage.completion_tokens, 42);
	ck_assert_int_eq(n.usage.total_tokens, 157);
	ck_assert_str_eq(n.stop_reason, "end_turn");
	ck_assert(!n.stopped);
	/* a later event's input_tokens replaces that part alone */
	native_ok(&n, "message_delta", "{\"type\":\"message_delta\",\"delta\":{},\"usage\":"
	    "{\"input_tokens\":11,\"output_tokens\":43}}");
	ck_assert_int_eq(n.usage.prompt_tokens, 116);
	ck_assert_int_eq(n.usage.completion_tokens, 43);
	native_ok(&n, "message_stop", "{\"type\":\"message_stop\"}");
	ck_assert(n.stopped);
	ck_assert_ptr_null(n.error_message);
	native_ok(&n, "error", "{\"type\":\"error\",\"error\":{\"type\":\"overloaded_error\","
	    "\"message\":\"Overloaded\"}}");
	ck_assert_str_eq(n.error_type, "overloaded_error");
	ck_assert_str_eq(n.error_message, "Overloaded");
	native_ok(&n, "error", "upstream fell over");
	ck_assert_str_eq(n.error_message, "upstream fell over");
	ck_assert_int_eq(anthropic_native_event(&n, "message_delta", "{\"type\":", 9, cause,
	    sizeof cause), -1);
	ck_assert(strstr(cause, "JSON") != NULL);
	/* counts out of range are ignored */
	native_ok(&n, "message_delta", "{\"type\":\"message_delta\",\"usage\":{\"output_tokens\":-5}}");
	ck_assert_int_eq(n.usage.completion_tokens, 43);
	anthropic_native_clear(&n);
	ck_assert_ptr_null(n.model);
}
END_TEST

START_TEST(test_native_response)
{
	struct anthropic_native n;
	char cause[128];
	const char *m = "{\"id\":\"msg_1\",\"type\":\"message\",\"role\":\"assistant\",\"model\":\"c\","
	    "\"content\":[{\"type\":\"text\",\"text\":\"Hi\"}],\"stop_reason\":\"max_tokens\","
	    "\"usage\":{\"input_tokens\":3,\"output_tokens\":2}}";
	const char *e = "{\"type\":\"error\",\"error\":{\"type\":\"invalid_request_error\","
	    "\"message\":\"max_tokens: Field required\"}}";

	memset(&n, 0, sizeof n);
	ck_assert_int_eq(anthropic_native_response(&n, m, strlen(m), cause, sizeof cause), 0);
	ck_assert(n.has_usage && n.stopped && n.text);
	ck_assert_int_eq(n.usage.prompt_tokens, 3);
	ck_assert_int_eq(n.usage.completion_tokens, 2);
	ck_assert_str_eq(n.stop_reason, "max_tokens");
	anthropic_native_clear(&n);
	ck_assert_int_eq(anthropic_native_response(&n, e, strlen(e), cause, sizeof cause), 0);
	ck_assert_str_eq(n.error_type, "invalid_request_error");
	ck_assert_str_eq(n.error_message, "max_tokens: Field required");
	ck_assert(!n.has_usage);
	anthropic_native_clear(&n);
	ck_assert_int_eq(anthropic_native_response(&n, "[]", 2, cause, sizeof cause), -1);
	anthropic_native_clear(&n);
}
END_TEST

START_TEST(test_native_body)
{
	const char *in = "{\"model\":\"claude-sonnet-4-5\",\"max_tokens\":128000,\"stream\":true,"
	    "\"messages\":[{\"role\":\"user\",\"content\":\"a\\u0000b\"}]}";
	char cause[128], *out;
	json_t *j;

	out = anthropic_native_body(in, strlen(in), "local-model", 4096, cause, sizeof cause);
	ck_assert_msg(out != NULL, "%s", cause);
	ck_assert(strstr(out, "a\\u0000b") != NULL);    /* U+0000 kept */
	j = json_loads(out, JSON_ALLOW_NUL, NULL);
	ck_assert_str_eq(json_string_value(json_object_get(j, "model")), "local-model");
	ck_assert_int_eq(json_integer_value(json_object_get(j, "max_tokens")), 4096);
	ck_assert(json_is_true(json_object_get(j, "stream")));
	json_decref(j);
	free(out);
	/* count_tokens: no limit, the model kept */
	out = anthropic_native_body(in, strlen(in), NULL, -1, cause, sizeof cause);
	j = json_loads(out, JSON_ALLOW_NUL, NULL);
	ck_assert_ptr_null(json_object_get(j, "max_tokens"));
	ck_assert_str_eq(json_string_value(json_object_get(j, "model")), "claude-sonnet-4-5");
	json_decref(j);
	free(out);
	ck_assert_ptr_null(anthropic_native_body("[1]", 3, NULL, 5, cause, sizeof cause));
	ck_assert(strstr(cause, "JSON object") != NULL);
}
END_TEST

static Suite *
anthropic_suite(void)
{
	Suite *s = suite_create("anthropic");
	TCase *tc = tcase_create("core");

	tcase_add_test(tc, test_parse_basic);
	tcase_add_test(tc, test_parse_blocks);
	tcase_add_test(tc, test_parse_tools_round_trip);
	tcase_add_test(tc, test_parse_tool_definitions);
	tcase_add_test(tc, test_parse_tool_choice);
	tcase_add_test(tc, test_parse_meta);
	tcase_add_test(tc, test_parse_refused);
	tcase_add_test(tc, test_parse_count_tokens);
	tcase_add_test(tc, test_parse_upstream_body);
	tcase_add_test(tc, test_error_status);
	tcase_add_test(tc, test_error_write);
	tcase_add_test(tc, test_message_write);
	tcase_add_test(tc, test_stop_reason);
	tcase_add_test(tc, test_stream_text);
	tcase_add_test(tc, test_stream_blocks);
	tcase_add_test(tc, test_stream_hidden_thinking);
	tcase_add_test(tc, test_stream_error);
	tcase_add_test(tc, test_native_stream);
	tcase_add_test(tc, test_native_response);
	tcase_add_test(tc, test_native_body);
	suite_add_tcase(s, tc);
	return s;
}

int
main(void)
{
	SRunner *sr = srunner_create(anthropic_suite());
	int failed;

	srunner_run_all(sr, CK_NORMAL);
	failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
