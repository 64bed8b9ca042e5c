/* check_responses.c: unit tests of the Responses API translation (daemon/responses.c). */
#include "config.h"

#include <check.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <event2/buffer.h>
#include <jansson.h>

#include "daemon/openai.h"
#include "daemon/responses.h"
#include "daemon/translate.h"

/* Parse a body that must succeed; meta is cleared by the caller. */
static struct request *
parse_ok(const char *body, struct responses_meta *meta)
{
	struct responses_error err;
	struct request *rq = responses_parse(body, strlen(body), meta, &err);

	ck_assert_msg(rq != NULL, "refused: %s (param %s): %s", err.message, err.param, body);
	ck_assert_int_eq(rq->op, OP_CHAT);
	ck_assert_ptr_nonnull(meta->echo);
	ck_assert_ptr_nonnull(meta->names);
	return rq;
}

/* Parse a body that must be refused, naming param, with a message holding what. */
static void
parse_bad(const char *body, const char *param, const char *what)
{
	struct responses_error err;
	struct responses_meta meta;
	struct request *rq = responses_parse(body, strlen(body), &meta, &err);

	ck_assert_msg(rq == NULL, "accepted: %s", body);
	ck_assert_ptr_null(meta.echo);
	ck_assert_msg(strcmp(err.param, param) == 0, "param %s, not %s: %s", err.param, param,
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
		char *s = a != NULL ? json_dumps(a, JSON_COMPACT) : NULL;
		fprintf(stderr, "raw is %s\n", s != NULL ? s : "(none)");
		free(s);
	}
	json_decref(a);
	json_decref(b);
	return eq;
}

/* Whether v equals a JSON text. */
static bool
json_is(json_t *v, const char *json)
{
	json_t *b = json_loads(json, JSON_DECODE_ANY, NULL);
	bool eq;

	ck_assert_msg(b != NULL, "bad test JSON %s", json);
	eq = v != NULL && json_equal(v, b);
	if (!eq) {
		char *s = v != NULL ? json_dumps(v, JSON_COMPACT | JSON_ENCODE_ANY) : NULL;
		fprintf(stderr, "value is %s\n", s != NULL ? s : "(none)");
		free(s);
	}
	json_decref(b);
	return eq;
}

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

START_TEST(test_parse_string)
{
	struct responses_meta meta;
	struct request *rq = parse_ok("{\"model\":\"gpt-4o\",\"instructions\":\"Be brief.\","
	    "\"input\":\"Hello\",\"store\":true,\"include\":[\"reasoning.encrypted_content\"],"
	    "\"reasoning\":{\"effort\":\"high\",\"summary\":\"auto\"},\"prompt_cache_key\":\"k\","
	    "\"metadata\":{\"a\":\"b\"},\"future\":1}", &meta);
	struct chat_request *cr = &rq->u.chat;

	ck_assert_uint_eq(cr->n_messages, 2);
	message_is(&cr->messages[0], "system", "Be brief.");
	message_is(&cr->messages[1], "user", "Hello");
	ck_assert_str_eq(cr->model, "gpt-4o");
	ck_assert(!cr->stream && !meta.stream);
	ck_assert_int_eq(cr->max_tokens, -1);
	ck_assert(isnan(cr->temperature));
	ck_assert_ptr_null(cr->extra.data);     /* nothing else is sent on */
	ck_assert(json_is(meta.echo, "{\"instructions\":\"Be brief.\",\"temperature\":null,"
	    "\"top_p\":null,\"tool_choice\":\"auto\",\"parallel_tool_calls\":true,\"text\":"
	    "{\"format\":{\"type\":\"text\"}},\"reasoning\":{\"effort\":\"high\",\"summary\":\"auto\"},"
	    "\"metadata\":{\"a\":\"b\"},\"tools\":[],\"max_output_tokens\":null}"));
	ck_assert_uint_eq(json_object_size(meta.names), 0);
	responses_meta_clear(&meta);
	message_request_free(rq);
}
END_TEST

START_TEST(test_parse_items)
{
	struct responses_meta meta;
	struct request *rq = parse_ok("{\"stream\":true,\"max_output_tokens\":50,\"temperature\":0.3,"
	    "\"top_p\":0.8,\"input\":["
	    "{\"type\":\"message\",\"role\":\"developer\",\"content\":[{\"type\":\"input_text\","
	    "\"text\":\"Rules.\"}]},"
	    "{\"role\":\"user\",\"content\":[{\"type\":\"input_text\",\"text\":\"a\"},"
	    "{\"type\":\"input_text\",\"text\":\"b\\u0000\"}]},"
	    "{\"type\":\"reasoning\",\"id\":\"rs_1\",\"summary\":[],\"encrypted_content\":\"x\"},"
	    "{\"type\":\"message\",\"role\":\"assistant\",\"id\":\"msg_1\",\"status\":\"completed\","
	    "\"content\":[{\"type\":\"output_text\",\"text\":\"Looking.\",\"annotations\":[]}]},"
	    "{\"type\":\"function_call\",\"call_id\":\"c1\",\"name\":\"exec\",\"arguments\":"
	    "\"{\\\"cmd\\\":\\\"ls\\\"}\"},"
	    "{\"type\":\"function_call\",\"call_id\":\"c2\",\"name\":\"spawn\",\"namespace\":\"agents\","
	    "\"arguments\":\"\"},"
	    "{\"type\":\"function_call_output\",\"call_id\":\"c1\",\"output\":\"a.txt\"},"
	    "{\"type\":\"function_call_output\",\"call_id\":\"c2\",\"output\":[{\"type\":\"input_text\","
	    "\"text\":\"spawned\"}]},"
	    "{\"type\":\"custom_tool_call\",\"call_id\":\"c3\",\"name\":\"apply_patch\",\"input\":"
	    "\"*** Begin Patch\"},"
	    "{\"type\":\"custom_tool_call_output\",\"call_id\":\"c3\",\"output\":\"Done\"},"
	    "{\"type\":\"custom_tool_call\",\"call_id\":\"c4\",\"name\":\"apply_patch\"},"
	    "{\"role\":\"assistant\",\"content\":[{\"type\":\"refusal\",\"refusal\":\"No.\"}]},"
	    "{\"role\":\"system\",\"content\":\"late\"}]}", &meta);
	struct chat_request *cr = &rq->u.chat;

	ck_assert(cr->stream && meta.stream);
	ck_assert_int_eq(cr->max_tokens, 50);
	ck_assert_double_eq(cr->temperature, 0.3);
	ck_assert_double_eq(cr->top_p, 0.8);
	ck_assert_uint_eq(cr->n_messages, 10);
	message_is(&cr->messages[0], "system", "Rules.");
	ck_assert_str_eq(cr->messages[1].role, "user");
	ck_assert_uint_eq(cr->messages[1].content_len, 4);
	ck_assert(memcmp(cr->messages[1].content, "a\nb\0", 5) == 0);
	/* the calls after an assistant message are its own; reasoning is left out */
	message_is(&cr->messages[2], "assistant", "Looking.");
	ck_assert(raw_is(&cr->messages[2].tool_calls, "[{\"id\":\"c1\",\"type\":\"function\","
	    "\"function\":{\"name\":\"exec\",\"arguments\":\"{\\\"cmd\\\":\\\"ls\\\"}\"}},"
	    "{\"id\":\"c2\",\"type\":\"function\",\"function\":{\"name\":\"agents__spawn\","
	    "\"arguments\":\"{}\"}}]"));
	message_is(&cr->messages[3], "tool", "a.txt");
	ck_assert_str_eq(cr->messages[3].tool_call_id, "c1");
	message_is(&cr->messages[4], "tool", "spawned");
	ck_assert_str_eq(cr->messages[4].tool_call_id, "c2");
	/* a call with no message before it has an assistant message of its own */
	message_is(&cr->messages[5], "assistant", NULL);
	ck_assert(raw_is(&cr->messages[5].tool_calls, "[{\"id\":\"c3\",\"type\":\"function\","
	    "\"function\":{\"name\":\"apply_patch\",\"arguments\":\"{\\\"input\\\":\\\"*** Begin "
	    "Patch\\\"}\"}}]"));
	message_is(&cr->messages[6], "tool", "Done");
	/* a custom tool's call without input: an empty one */
	message_is(&cr->messages[7], "assistant", NULL);
	ck_assert(raw_is(&cr->messages[7].tool_calls, "[{\"id\":\"c4\",\"type\":\"function\","
	    "\"function\":{\"name\":\"apply_patch\",\"arguments\":\"{\\\"input\\\":\\\"\\\"}\"}}]"));
	message_is(&cr->messages[8], "assistant", "No.");
	ck_assert_ptr_null(cr->messages[8].tool_calls.data);
	message_is(&cr->messages[9], "system", "late");
	responses_meta_clear(&meta);
	message_request_free(rq);
}
END_TEST

START_TEST(test_parse_tools)
{
	struct responses_meta meta;
	struct request *rq = parse_ok("{\"input\":\"x\",\"tools\":["
	    "{\"type\":\"function\",\"name\":\"exec_command\",\"description\":\"Run\",\"strict\":false,"
	    "\"parameters\":{\"type\":\"object\",\"properties\":{\"cmd\":{\"type\":\"string\"}}}},"
	    "{\"type\":\"function\",\"name\":\"noparams\",\"parameters\":null,\"strict\":true},"
	    "{\"type\":\"namespace\",\"name\":\"agents\",\"description\":\"Sub-agents\",\"tools\":["
	    "{\"type\":\"function\",\"name\":\"spawn\",\"parameters\":{\"type\":\"object\"}},"
	    "{\"type\":\"web_search\"}]},"
	    "{\"type\":\"custom\",\"name\":\"apply_patch\",\"description\":\"Patch files.\","
	    "\"format\":{\"type\":\"grammar\",\"syntax\":\"lark\",\"definition\":\"start: \\\"x\\\"\"}},"
	    "{\"type\":\"web_search\",\"external_web_access\":false},"
	    "{\"type\":\"file_search\",\"vector_store_ids\":[]}],"
	    "\"tool_choice\":{\"type\":\"function\",\"name\":\"exec_command\"},"
	    "\"parallel_tool_calls\":false,"
	    "\"text\":{\"format\":{\"type\":\"json_schema\",\"name\":\"out\",\"strict\":true,"
	    "\"schema\":{\"type\":\"object\"}}}}", &meta);
	json_t *x = openai_msgpack_to_json(rq->u.chat.extra.data, rq->u.chat.extra.len);

	ck_assert(json_is(json_object_get(x, "tools"), "["
	    "{\"type\":\"function\",\"function\":{\"name\":\"exec_command\",\"description\":\"Run\","
	    "\"parameters\":{\"type\":\"object\",\"properties\":{\"cmd\":{\"type\":\"string\"}}}}},"
	    "{\"type\":\"function\",\"function\":{\"name\":\"noparams\",\"parameters\":"
	    "{\"type\":\"object\",\"properties\":{}},\"strict\":true}},"
	    "{\"type\":\"function\",\"function\":{\"name\":\"agents__spawn\",\"parameters\":"
	    "{\"type\":\"object\"}}},"
	    "{\"type\":\"function\",\"function\":{\"name\":\"apply_patch\",\"description\":"
	    "\"Patch files.\\n\\nThe input follows this grammar:\\nstart: \\\"x\\\"\",\"parameters\":"
	    "{\"type\":\"object\",\"properties\":{\"input\":{\"type\":\"string\"}},\"required\":"
	    "[\"input\"]}}}]"));
	ck_assert(json_is(json_object_get(x, "tool_choice"),
	    "{\"type\":\"function\",\"function\":{\"name\":\"exec_command\"}}"));
	ck_assert(json_is_false(json_object_get(x, "parallel_tool_calls")));
	ck_assert(json_is(json_object_get(x, "response_format"), "{\"type\":\"json_schema\","
	    "\"json_schema\":{\"name\":\"out\",\"schema\":{\"type\":\"object\"},\"strict\":true}}"));
	ck_assert(json_is(meta.names, "{\"agents__spawn\":{\"name\":\"spawn\",\"namespace\":\"agents\"},"
	    "\"apply_patch\":{\"name\":\"apply_patch\",\"custom\":true}}"));
	/* the response repeats the tools as they were given */
	ck_assert_uint_eq(json_array_size(json_object_get(meta.echo, "tools")), 6);
	ck_assert_str_eq(json_string_value(json_object_get(json_array_get(json_object_get(meta.echo,
	    "tools"), 2), "type")), "namespace");
	json_decref(x);
	responses_meta_clear(&meta);
	message_request_free(rq);
}
END_TEST

/* The tool_choice a choice becomes (NULL: none sent). */
static void
choice_is(const char *choice, const char *want)
{
	char body[512];
	struct responses_meta meta;
	struct request *rq;
	json_t *x;

	snprintf(body, sizeof body, "{\"input\":\"x\",\"tools\":[{\"type\":\"function\",\"name\":"
	    "\"f\"}],\"tool_choice\":%s}", choice);
	rq = parse_ok(body, &meta);
	x = openai_msgpack_to_json(rq->u.chat.extra.data, rq->u.chat.extra.len);
	if (want == NULL)
		ck_assert_ptr_null(json_object_get(x, "tool_choice"));
	else
		ck_assert_msg(json_is(json_object_get(x, "tool_choice"), want), "%s", choice);
	json_decref(x);
	responses_meta_clear(&meta);
	message_request_free(rq);
}

START_TEST(test_parse_tool_choice)
{
	struct responses_meta meta;
	struct request *rq;
	json_t *x;

	choice_is("\"auto\"", "\"auto\"");
	choice_is("\"none\"", "\"none\"");
	choice_is("\"required\"", "\"required\"");
	choice_is("{\"type\":\"function\",\"name\":\"f\"}",
	    "{\"type\":\"function\",\"function\":{\"name\":\"f\"}}");
	choice_is("{\"type\":\"custom\",\"name\":\"f\"}",
	    "{\"type\":\"function\",\"function\":{\"name\":\"f\"}}");
	choice_is("{\"type\":\"allowed_tools\",\"mode\":\"required\",\"tools\":[]}", "\"required\"");
	choice_is("{\"type\":\"web_search\"}", "\"auto\"");
	/* no tools survive: no choice, no parallel_tool_calls */
	rq = parse_ok("{\"input\":\"x\",\"tools\":[{\"type\":\"web_search\"}],\"tool_choice\":"
	    "\"required\",\"parallel_tool_calls\":true,\"text\":{\"format\":{\"type\":\"json_object\"}}}",
	    &meta);
	x = openai_msgpack_to_json(rq->u.chat.extra.data, rq->u.chat.extra.len);
	ck_assert(json_is(x, "{\"response_format\":{\"type\":\"json_object\"}}"));
	json_decref(x);
	responses_meta_clear(&meta);
	message_request_free(rq);
}
END_TEST

START_TEST(test_parse_refused)
{
	struct responses_error err;
	struct responses_meta meta;

	ck_assert_ptr_null(responses_parse("nope", 4, &meta, &err));
	ck_assert(strstr(err.message, "not valid JSON") != NULL);
	parse_bad("{\"input\":\"x\",\"previous_response_id\":\"resp_1\"}", "previous_response_id",
	    "not stored here");
	parse_bad("{\"input\":\"x\",\"conversation\":\"conv_1\"}", "conversation", "not stored");
	parse_bad("{\"input\":\"x\",\"prompt\":{\"id\":\"p\"}}", "prompt", "stored prompts");
	parse_bad("{\"input\":\"x\",\"background\":true}", "background", "storage");
	parse_bad("{\"model\":\"m\"}", "input", "required");
	parse_bad("{\"input\":[]}", "input", "non-empty");
	parse_bad("{\"input\":5}", "input", "string or a non-empty array");
	parse_bad("{\"input\":[7]}", "input[0]", "object");
	parse_bad("{\"input\":[{\"role\":\"critic\",\"content\":\"x\"}]}", "input[0].role",
	    "user, assistant");
	parse_bad("{\"input\":[{\"role\":\"user\",\"content\":[{\"type\":\"input_text\",\"text\":\"x\"},"
	    "{\"type\":\"input_image\",\"image_url\":\"data:image/png;base64,AA\"}]}]}",
	    "input[0].content[1]", "input_image parts are not supported");
	parse_bad("{\"input\":[{\"role\":\"user\",\"content\":[{\"type\":\"input_text\"}]}]}",
	    "input[0].content[0]", "string text");
	parse_bad("{\"input\":[{\"role\":\"user\",\"content\":7}]}", "input[0].content",
	    "string or an array");
	parse_bad("{\"input\":[{\"type\":\"item_reference\",\"id\":\"msg_1\"}]}", "input[0]",
	    "stored items");
	parse_bad("{\"input\":[{\"type\":\"web_search_call\",\"id\":\"ws\"}]}", "input[0].type",
	    "unsupported input item type \"web_search_call\"");
	parse_bad("{\"input\":[{\"type\":\"function_call\",\"name\":\"f\",\"arguments\":\"{}\"}]}",
	    "input[0]", "call_id and a name");
	parse_bad("{\"input\":[{\"type\":\"function_call\",\"call_id\":\"c\",\"name\":\"f\","
	    "\"arguments\":{}}]}", "input[0]", "arguments must be a string");
	parse_bad("{\"input\":[{\"type\":\"function_call_output\",\"output\":\"x\"}]}", "input[0]",
	    "call_id");
	parse_bad("{\"input\":[{\"type\":\"function_call_output\",\"call_id\":\"c\",\"output\":"
	    "[{\"type\":\"input_file\",\"file_id\":\"f\"}]}]}", "input[0].output[0]",
	    "input_file parts");
	parse_bad("{\"input\":\"x\",\"instructions\":[\"a\"]}", "instructions", "string");
	parse_bad("{\"input\":\"x\",\"tools\":{}}", "tools", "array");
	parse_bad("{\"input\":\"x\",\"tools\":[{\"type\":\"function\"}]}", "tools[0]", "needs a name");
	parse_bad("{\"input\":\"x\",\"tools\":[{\"name\":\"f\"}]}", "tools[0]", "with a type");
	parse_bad("{\"input\":\"x\",\"tools\":[{\"type\":\"function\",\"name\":\"f\",\"parameters\":"
	    "[]}]}", "tools[0]", "parameters must be an object");
	parse_bad("{\"input\":\"x\",\"tools\":[{\"type\":\"namespace\",\"name\":\"n\"}]}", "tools[0]",
	    "name and tools");
	parse_bad("{\"input\":\"x\",\"tool_choice\":7}", "tool_choice", "\"auto\"");
	parse_bad("{\"input\":\"x\",\"max_output_tokens\":0}", "max_output_tokens", "from 1");
	parse_bad("{\"input\":\"x\",\"stream\":1}", "stream", "true or false");
	parse_bad("{\"input\":\"x\",\"temperature\":\"hot\"}", "temperature", "number");
	parse_bad("{\"input\":\"x\",\"top_p\":[]}", "top_p", "number");
	parse_bad("{\"input\":\"x\",\"model\":false}", "model", "string");
	parse_bad("{\"input\":\"x\",\"parallel_tool_calls\":\"no\"}", "parallel_tool_calls",
	    "true or false");
}
END_TEST

/* The chat body sent upstream for a Responses request, as the chat front builds it. */
START_TEST(test_parse_upstream_body)
{
	struct responses_meta meta;
	struct request *rq = parse_ok("{\"model\":\"m\",\"stream\":true,\"max_output_tokens\":99,"
	    "\"input\":[{\"role\":\"user\",\"content\":\"hi\"},{\"type\":\"function_call\","
	    "\"call_id\":\"c1\",\"name\":\"f\",\"arguments\":\"{}\"},{\"type\":"
	    "\"function_call_output\",\"call_id\":\"c1\",\"output\":\"ok\"}],\"tools\":[{\"type\":"
	    "\"function\",\"name\":\"f\",\"parameters\":{\"type\":\"object\"}}]}", &meta);
	char cause[256], *body = openai_chat_body(&rq->u.chat, "served", true, cause, sizeof cause);
	json_t *j;

	ck_assert_msg(body != NULL, "%s", cause);
	j = json_loads(body, 0, NULL);
	ck_assert(json_is(j, "{\"model\":\"served\",\"messages\":[{\"role\":\"user\",\"content\":\"hi\"},"
	    "{\"role\":\"assistant\",\"content\":null,\"tool_calls\":[{\"id\":\"c1\",\"type\":"
	    "\"function\",\"function\":{\"name\":\"f\",\"arguments\":\"{}\"}}]},{\"role\":\"tool\","
	    "\"content\":\"ok\",\"tool_call_id\":\"c1\"}],\"stream\":true,\"stream_options\":"
	    "{\"include_usage\":true},\"max_tokens\":99,\"tools\":[{\"type\":\"function\",\"function\":"
	    "{\"name\":\"f\",\"parameters\":{\"type\":\"object\"}}}]}"));
	json_decref(j);
	free(body);
	responses_meta_clear(&meta);
	message_request_free(rq);
}
END_TEST

/* --- replies ------------------------------------------------------------ */

START_TEST(test_error_json)
{
	json_t *e;

	e = responses_error_json("budget_exceeded", "over");
	ck_assert(json_is(e, "{\"code\":\"insufficient_quota\",\"message\":\"over\"}"));
	json_decref(e);
	e = responses_error_json("rate_limited", "slow down");
	ck_assert(json_is(e, "{\"code\":\"rate_limit_exceeded\",\"message\":\"slow down\"}"));
	json_decref(e);
	e = responses_error_json("upstream_error", "bad \xff");
	ck_assert(json_is(e, "{\"code\":\"upstream_error\",\"message\":\"error\"}"));
	json_decref(e);
}
END_TEST

/* A done reply; calls is JSON text or NULL. */
static void
done_init(struct done_reply *d, const char *content, const char *reasoning, const char *calls,
    const char *finish)
{
	memset(d, 0, sizeof *d);
	d->content = (char *)content;
	d->reasoning = (char *)reasoning;
	d->finish_reason = (char *)finish;
	d->usage.prompt_tokens = 20;
	d->usage.completion_tokens = 5;
	d->usage.total_tokens = 25;
	if (calls != NULL) {
		json_t *j = json_loads(calls, 0, NULL);
		ck_assert(j != NULL && translate_raw_set(&d->tool_calls, j) == 0);
		json_decref(j);
	}
}

static char *
drain(struct evbuffer *b)
{
	size_t n = evbuffer_get_length(b);
	char *s = malloc(n + 1);

	evbuffer_remove(b, s, n);
	s[n] = '\0';
	return s;
}

START_TEST(test_object_write)
{
	struct responses_meta meta;
	struct request *rq = parse_ok("{\"input\":\"x\",\"instructions\":\"I\",\"max_output_tokens\":9,"
	    "\"tools\":[{\"type\":\"namespace\",\"name\":\"ns\",\"tools\":[{\"type\":\"function\","
	    "\"name\":\"f\"}]},{\"type\":\"custom\",\"name\":\"patch\"},{\"type\":\"function\","
	    "\"name\":\"plain\"}]}", &meta);
	struct evbuffer *b = evbuffer_new();
	struct done_reply d;
	char *s;
	json_t *j;

	done_init(&d, "Answer.", "Thought.", "[{\"id\":\"call_1\",\"type\":\"function\",\"function\":"
	    "{\"name\":\"ns__f\",\"arguments\":\"{\\\"a\\\":1}\"}},{\"function\":{\"name\":\"patch\","
	    "\"arguments\":\"{\\\"input\\\":\\\"diff\\\"}\"}},{\"id\":\"call_3\",\"function\":{\"name\":"
	    "\"plain\",\"arguments\":{\"b\":2}}}]", "tool_calls");
	ck_assert_int_eq(responses_object_write(b, "resp_1", "m", 1700000000, &meta, &d), 0);
	s = drain(b);
	j = json_loads(s, 0, NULL);
	ck_assert_msg(j != NULL, "%s", s);
	ck_assert_str_eq(json_string_value(json_object_get(j, "id")), "resp_1");
	ck_assert_str_eq(json_string_value(json_object_get(j, "object")), "response");
	ck_assert_str_eq(json_string_value(json_object_get(j, "status")), "completed");
	ck_assert_int_eq(json_integer_value(json_object_get(j, "created_at")), 1700000000);
	ck_assert_str_eq(json_string_value(json_object_get(j, "instructions")), "I");
	ck_assert_int_eq(json_integer_value(json_object_get(j, "max_output_tokens")), 9);
	ck_assert(json_is_null(json_object_get(j, "previous_response_id")));
	ck_assert(json_is_false(json_object_get(j, "store")));
	ck_assert(json_is(json_object_get(j, "usage"), "{\"input_tokens\":20,\"input_tokens_details\":"
	    "{\"cached_tokens\":0},\"output_tokens\":5,\"output_tokens_details\":{\"reasoning_tokens\":0},"
	    "\"total_tokens\":25}"));
	ck_assert(json_is(json_object_get(j, "output"), "["
	    "{\"id\":\"rs_resp_1_0\",\"type\":\"reasoning\",\"summary\":[],\"content\":[{\"type\":"
	    "\"reasoning_text\",\"text\":\"Thought.\"}],\"encrypted_content\":null},"
	    "{\"id\":\"msg_resp_1_1\",\"type\":\"message\",\"status\":\"completed\",\"role\":\"assistant\","
	    "\"content\":[{\"type\":\"output_text\",\"text\":\"Answer.\",\"annotations\":[],"
	    "\"logprobs\":[]}]},"
	    "{\"id\":\"fc_resp_1_2\",\"type\":\"function_call\",\"status\":\"completed\",\"arguments\":"
	    "\"{\\\"a\\\":1}\",\"call_id\":\"call_1\",\"name\":\"f\",\"namespace\":\"ns\"},"
	    "{\"id\":\"ctc_resp_1_3\",\"type\":\"custom_tool_call\",\"status\":\"completed\",\"call_id\":"
	    "\"call_resp_1_1\",\"name\":\"patch\",\"input\":\"diff\"},"
	    "{\"id\":\"fc_resp_1_4\",\"type\":\"function_call\",\"status\":\"completed\",\"arguments\":"
	    "\"{\\\"b\\\":2}\",\"call_id\":\"call_3\",\"name\":\"plain\"}]"));
	json_decref(j);
	free(s);
	free(d.tool_calls.data);

	done_init(&d, "cut", NULL, NULL, "length");
	ck_assert_int_eq(responses_object_write(b, "resp_2", "m", 1, NULL, &d), 0);
	s = drain(b);
	j = json_loads(s, 0, NULL);
	ck_assert_str_eq(json_string_value(json_object_get(j, "status")), "incomplete");
	ck_assert(json_is(json_object_get(j, "incomplete_details"), "{\"reason\":\"max_output_tokens\"}"));
	ck_assert_str_eq(json_string_value(json_object_get(json_array_get(json_object_get(j, "output"),
	    0), "status")), "incomplete");
	json_decref(j);
	free(s);
	evbuffer_free(b);
	responses_meta_clear(&meta);
	message_request_free(rq);
}
END_TEST

/* --- the stream --------------------------------------------------------- */

/*
 * The events of SSE output, checking the framing ("event: T\ndata: JSON\n\n",
 * data.type == T) and that sequence_number counts from 0: an array of data.
 */
static json_t *
events_of(struct evbuffer *b)
{
	char *s = drain(b), *p = s, *nl, *end;
	json_t *all = json_array(), *data;

	while (*p != '\0') {
		ck_assert_msg(strncmp(p, "event: ", 7) == 0, "framing at %s", p);
		nl = strchr(p, '\n');
		ck_assert(nl != NULL && strncmp(nl + 1, "data: ", 6) == 0);
		end = strstr(nl + 7, "\n\n");
		ck_assert(end != NULL);
		*nl = *end = '\0';
		data = json_loads(nl + 7, 0, NULL);
		ck_assert_msg(json_is_object(data), "data %s", nl + 7);
		ck_assert_str_eq(json_string_value(json_object_get(data, "type")), p + 7);
		ck_assert_int_eq(json_integer_value(json_object_get(data, "sequence_number")),
		    json_array_size(all));
		json_array_append_new(all, data);
		p = end + 2;
	}
	free(s);
	return all;
}

static char *
types_of(json_t *events)
{
	char *s = calloc(1, 8192);
	json_t *e;
	size_t i;

	json_array_foreach(events, i, e) {
		if (i > 0)
			strcat(s, " ");
		strcat(s, json_string_value(json_object_get(e, "type")) + strlen("response."));
	}
	return s;
}

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
	struct responses_stream s;
	struct evbuffer *b = evbuffer_new();
	struct delta_reply d1 = delta_of("Hel", NULL, NULL), d2 = delta_of("lo", NULL, NULL);
	struct done_reply done;
	json_t *e, *last;
	char *types;

	ck_assert_int_eq(responses_stream_init(&s, "resp_a", "m", 1700000000, NULL), 0);
	responses_stream_begin(&s, b);
	responses_stream_begin(&s, b);
	ck_assert_int_eq(responses_stream_delta(&s, &d1, b), 0);
	ck_assert_int_eq(responses_stream_delta(&s, &d2, b), 0);
	done_init(&done, "Hello", NULL, NULL, "stop");
	ck_assert_int_eq(responses_stream_done(&s, &done, b), 0);
	ck_assert_int_eq(responses_stream_done(&s, &done, b), 0);
	/* as OpenAI writes them: type first, sequence_number last */
	{
		const char *raw = (const char *)evbuffer_pullup(b, -1);
		static const char head[] = "event: response.created\ndata: {\"type\":"
		    "\"response.created\",\"response\":{\"id\":\"resp_a\",";
		ck_assert(strncmp(raw, head, sizeof head - 1) == 0);
		ck_assert(strstr(raw, ",\"sequence_number\":0}\n\nevent: response.in_progress\n")
		    != NULL);
	}
	e = events_of(b);
	types = types_of(e);
	ck_assert_str_eq(types, "created in_progress output_item.added content_part.added "
	    "output_text.delta output_text.delta output_text.done content_part.done "
	    "output_item.done completed");
	ck_assert_str_eq(json_string_value(json_object_get(json_object_get(json_array_get(e, 0),
	    "response"), "status")), "in_progress");
	ck_assert(json_is(json_object_get(json_array_get(e, 2), "item"), "{\"id\":\"msg_resp_a_0\","
	    "\"type\":\"message\",\"status\":\"in_progress\",\"role\":\"assistant\",\"content\":[]}"));
	ck_assert_str_eq(json_string_value(json_object_get(json_array_get(e, 4), "item_id")),
	    "msg_resp_a_0");
	ck_assert_str_eq(json_string_value(json_object_get(json_array_get(e, 5), "delta")), "lo");
	ck_assert_str_eq(json_string_value(json_object_get(json_array_get(e, 6), "text")), "Hello");
	last = json_object_get(json_array_get(e, 9), "response");
	ck_assert_str_eq(json_string_value(json_object_get(last, "status")), "completed");
	ck_assert(json_is(json_object_get(last, "output"), "[{\"id\":\"msg_resp_a_0\",\"type\":"
	    "\"message\",\"status\":\"completed\",\"role\":\"assistant\",\"content\":[{\"type\":"
	    "\"output_text\",\"text\":\"Hello\",\"annotations\":[],\"logprobs\":[]}]}]"));
	ck_assert_int_eq(json_integer_value(json_object_get(json_object_get(last, "usage"),
	    "total_tokens")), 25);
	free(types);
	json_decref(e);
	responses_stream_clear(&s);
	evbuffer_free(b);
}
END_TEST

START_TEST(test_stream_items)
{
	struct responses_meta meta;
	struct request *rq = parse_ok("{\"input\":\"x\",\"tools\":[{\"type\":\"namespace\",\"name\":"
	    "\"ns\",\"tools\":[{\"type\":\"function\",\"name\":\"f\"}]},{\"type\":\"custom\",\"name\":"
	    "\"patch\"},{\"type\":\"function\",\"name\":\"g\"}]}", &meta);
	struct responses_stream s;
	struct evbuffer *b = evbuffer_new();
	struct delta_reply r = delta_of(NULL, "hmm", NULL), t = delta_of("Ok.", NULL, NULL);
	struct delta_reply c1 = delta_of(NULL, NULL, "[{\"index\":0,\"id\":\"call_1\",\"function\":"
	    "{\"name\":\"ns__f\",\"arguments\":\"{\\\"a\\\":\"}}]");
	struct delta_reply c2 = delta_of(NULL, NULL, "[{\"index\":0,\"function\":{\"arguments\":\"1}\"}}]");
	struct delta_reply c3 = delta_of(NULL, NULL, "[{\"index\":1,\"id\":\"call_2\",\"function\":"
	    "{\"name\":\"patch\",\"arguments\":\"{\\\"input\\\":\\\"diff\\\"}\"}}]");
	struct delta_reply c4 = delta_of(NULL, NULL, "[{\"index\":2,\"function\":{\"name\":\"g\","
	    "\"arguments\":\"{}\"}}]");
	struct delta_reply late = delta_of(NULL, NULL, "[{\"index\":0,\"function\":{\"arguments\":"
	    "\" \"}}]");
	struct done_reply done;
	json_t *e, *out;
	char *types;

	ck_assert_int_eq(responses_stream_init(&s, "resp_b", "m", 1, &meta), 0);
	ck_assert_int_eq(responses_stream_delta(&s, &r, b), 0);
	ck_assert_int_eq(responses_stream_delta(&s, &t, b), 0);
	ck_assert_int_eq(responses_stream_delta(&s, &c1, b), 0);
	ck_assert_int_eq(responses_stream_delta(&s, &c2, b), 0);
	ck_assert_int_eq(responses_stream_delta(&s, &c3, b), 0);
	ck_assert_int_eq(responses_stream_delta(&s, &c4, b), 0);
	ck_assert_int_eq(responses_stream_delta(&s, &late, b), 0);
	done_init(&done, NULL, NULL, NULL, "tool_calls");
	ck_assert_int_eq(responses_stream_done(&s, &done, b), 0);
	e = events_of(b);
	types = types_of(e);
	ck_assert_str_eq(types, "created in_progress "
	    "output_item.added content_part.added reasoning_text.delta "
	    "reasoning_text.done content_part.done output_item.done "
	    "output_item.added content_part.added output_text.delta "
	    "output_text.done content_part.done output_item.done "
	    "output_item.added function_call_arguments.delta function_call_arguments.delta "
	    "function_call_arguments.done output_item.done "
	    "output_item.added "
	    "custom_tool_call_input.delta custom_tool_call_input.done output_item.done "
	    "output_item.added function_call_arguments.delta "
	    "function_call_arguments.delta "
	    "function_call_arguments.done output_item.done completed");
	/* the reasoning item, done */
	ck_assert(json_is(json_object_get(json_array_get(e, 7), "item"), "{\"id\":\"rs_resp_b_0\","
	    "\"type\":\"reasoning\",\"summary\":[],\"content\":[{\"type\":\"reasoning_text\","
	    "\"text\":\"hmm\"}],\"encrypted_content\":null}"));
	/* the namespaced call, as the client knows it */
	ck_assert(json_is(json_object_get(json_array_get(e, 14), "item"), "{\"id\":\"fc_resp_b_2\","
	    "\"type\":\"function_call\",\"status\":\"in_progress\",\"arguments\":\"\",\"call_id\":"
	    "\"call_1\",\"name\":\"f\",\"namespace\":\"ns\"}"));
	ck_assert_str_eq(json_string_value(json_object_get(json_array_get(e, 17), "arguments")),
	    "{\"a\":1}");
	/* the custom tool's call: its input, not the arguments around it */
	ck_assert(json_is(json_object_get(json_array_get(e, 19), "item"), "{\"id\":\"ctc_resp_b_3\","
	    "\"type\":\"custom_tool_call\",\"status\":\"in_progress\",\"call_id\":\"call_2\","
	    "\"name\":\"patch\",\"input\":\"\"}"));
	ck_assert_str_eq(json_string_value(json_object_get(json_array_get(e, 20), "delta")), "diff");
	ck_assert_str_eq(json_string_value(json_object_get(json_array_get(e, 21), "input")), "diff");
	/* a call without an id gets one; the late fragment goes to the first call's item */
	ck_assert_str_eq(json_string_value(json_object_get(json_object_get(json_array_get(e, 23),
	    "item"), "call_id")), "call_resp_b_2");
	ck_assert_int_eq(json_integer_value(json_object_get(json_array_get(e, 25),
	    "output_index")), 2);
	out = json_object_get(json_object_get(json_array_get(e, 28), "response"), "output");
	ck_assert_uint_eq(json_array_size(out), 5);
	ck_assert_str_eq(json_string_value(json_object_get(json_array_get(out, 2), "arguments")),
	    "{\"a\":1} ");
	ck_assert_str_eq(json_string_value(json_object_get(json_array_get(out, 2), "status")),
	    "completed");
	ck_assert_str_eq(json_string_value(json_object_get(json_array_get(out, 4), "status")),
	    "completed");
	free(types);
	json_decref(e);
	free(c1.tool_calls.data);
	free(c2.tool_calls.data);
	free(c3.tool_calls.data);
	free(c4.tool_calls.data);
	free(late.tool_calls.data);
	responses_stream_clear(&s);
	evbuffer_free(b);
	responses_meta_clear(&meta);
	message_request_free(rq);
}
END_TEST

START_TEST(test_stream_incomplete_and_failed)
{
	struct responses_stream s;
	struct evbuffer *b = evbuffer_new();
	struct delta_reply t = delta_of("w1 w2", NULL, NULL);
	struct done_reply done;
	json_t *e, *last;
	char *types;

	ck_assert_int_eq(responses_stream_init(&s, "resp_c", "m", 1, NULL), 0);
	responses_stream_delta(&s, &t, b);
	done_init(&done, NULL, NULL, NULL, "length");
	responses_stream_done(&s, &done, b);
	e = events_of(b);
	last = json_object_get(json_array_get(e, json_array_size(e) - 1), "response");
	ck_assert_str_eq(json_string_value(json_object_get(json_array_get(e, json_array_size(e) - 1),
	    "type")), "response.incomplete");
	ck_assert_str_eq(json_string_value(json_object_get(last, "status")), "incomplete");
	ck_assert(json_is(json_object_get(last, "incomplete_details"),
	    "{\"reason\":\"max_output_tokens\"}"));
	ck_assert_str_eq(json_string_value(json_object_get(json_array_get(json_object_get(last,
	    "output"), 0), "status")), "incomplete");
	json_decref(e);
	responses_stream_clear(&s);

	ck_assert_int_eq(responses_stream_init(&s, "resp_d", "m", 1, NULL), 0);
	responses_stream_delta(&s, &t, b);
	responses_stream_error(&s, "budget_exceeded", "no money left", b);
	responses_stream_delta(&s, &t, b);
	responses_stream_done(&s, &done, b);
	responses_stream_error(&s, "internal", "again", b);
	e = events_of(b);
	types = types_of(e);
	ck_assert_str_eq(types, "created in_progress output_item.added content_part.added "
	    "output_text.delta failed");
	last = json_object_get(json_array_get(e, 5), "response");
	ck_assert_str_eq(json_string_value(json_object_get(last, "status")), "failed");
	ck_assert(json_is(json_object_get(last, "error"), "{\"code\":\"insufficient_quota\","
	    "\"message\":\"no money left\"}"));
	free(types);
	json_decref(e);
	responses_stream_clear(&s);

	/* an error before anything: the stream still starts, then fails */
	ck_assert_int_eq(responses_stream_init(&s, "resp_e", "m", 1, NULL), 0);
	responses_stream_error(&s, "timeout", "too slow", b);
	e = events_of(b);
	types = types_of(e);
	ck_assert_str_eq(types, "created in_progress failed");
	free(types);
	json_decref(e);
	responses_stream_clear(&s);
	evbuffer_free(b);
}
END_TEST

static Suite *
responses_suite(void)
{
	Suite *s = suite_create("responses");
	TCase *tc = tcase_create("core");

	tcase_add_test(tc, test_parse_string);
	tcase_add_test(tc, test_parse_items);
	tcase_add_test(tc, test_parse_tools);
	tcase_add_test(tc, test_parse_tool_choice);
	tcase_add_test(tc, test_parse_refused);
	tcase_add_test(tc, test_parse_upstream_body);
	tcase_add_test(tc, test_error_json);
	tcase_add_test(tc, test_object_write);
	tcase_add_test(tc, test_stream_text);
	tcase_add_test(tc, test_stream_items);
	tcase_add_test(tc, test_stream_incomplete_and_failed);
	suite_add_tcase(s, tc);
	return s;
}

int
main(void)
{
	SRunner *sr = srunner_create(responses_suite());
	int failed;

	srunner_run_all(sr, CK_NORMAL);
	failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
