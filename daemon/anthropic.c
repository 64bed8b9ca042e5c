/* Anthropic's Messages API: bodies into chat requests, chat replies into Messages and events. */
#include "config.h"

#include <sys/types.h>

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <event2/buffer.h>
#include <jansson.h>

#include "daemon/anthropic.h"
#include "daemon/api_body.h"
#include "daemon/openai.h"
#include "daemon/translate.h"

/* A Messages body being turned into a chat request. */
struct anthropic_parse {
	struct request *rq;
	struct chat_request *cr;
	size_t cap;                 /* room in cr->messages */
	json_t *extra;              /* what goes in the chat's extra */
	json_t *referenced;         /* names of deferred tools that a tool_reference loaded */
	struct anthropic_error *err;
};

/* Fill err: field (printf-style, may be "") and a message that starts with it. */
static void __attribute__((format(printf, 3, 4)))
anthropic_fail(struct anthropic_error *err, const char *field, const char *fmt, ...)
{
	char what[200];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(what, sizeof what, fmt, ap);
	va_end(ap);
	snprintf(err->field, sizeof err->field, "%s", field);
	if (field[0] != '\0')
		snprintf(err->message, sizeof err->message, "%s: %s", field, what);
	else
		snprintf(err->message, sizeof err->message, "%s", what);
}

/* The name of a field inside a message ("messages.2.content.0"). */
static const char *
anthropic_field(char *buf, size_t len, const char *list, size_t i, ssize_t k)
{
	if (k < 0)
		snprintf(buf, len, "%s.%zu", list, i);
	else
		snprintf(buf, len, "%s.%zu.content.%zd", list, i, k);
	return buf;
}

static int
anthropic_nomem(struct anthropic_error *err)
{
	anthropic_fail(err, "", "out of memory");
	return -1;
}

/* Set a key of the chat's extra (v stolen); -1 when memory runs out. */
static int
anthropic_extra(struct anthropic_parse *ap, const char *key, json_t *v)
{
	if (v == NULL || (ap->extra == NULL && (ap->extra = json_object()) == NULL)) {
		json_decref(v);
		return anthropic_nomem(ap->err);
	}
	if (json_object_set_new(ap->extra, key, v) != 0)
		return anthropic_nomem(ap->err);
	return 0;
}

/* A text block's text appended; -1 when the block is not {type:text, text:string}. */
static int
anthropic_text_block(json_t *b, struct translate_text *t)
{
	if (!translate_is(json_object_get(b, "type"), "text") ||
	    !json_is_string(json_object_get(b, "text")))
		return -1;
	return translate_text_add_json(t, json_object_get(b, "text"), "\n");
}

/* A document block's text: only a plain text source can be sent; -1 otherwise. */
static int
anthropic_document(json_t *b, struct translate_text *t)
{
	json_t *src = json_object_get(b, "source");

	if (!translate_is(json_object_get(src, "type"), "text") ||
	    !json_is_string(json_object_get(src, "data")))
		return -1;
	return translate_text_add_json(t, json_object_get(src, "data"), "\n");
}

/*
 * Claude Code's first system block, "x-anthropic-billing-header: ...",
 * is addressed to Anthropic's servers and changes with every request: sent
 * on, it would make each prompt's start differ and defeat the model
 * server's prompt cache.
 */
static bool
anthropic_billing_block(json_t *b)
{
	static const char prefix[] = "x-anthropic-billing-header:";
	json_t *t = json_is_string(b) ? b : json_object_get(b, "text");

	return json_is_string(t) && json_string_length(t) >= sizeof prefix - 1 &&
	    strncmp(json_string_value(t), prefix, sizeof prefix - 1) == 0;
}

/* `system`: a string or text blocks, as the first message. */
static int
anthropic_system(struct anthropic_parse *ap, json_t *v)
{
	struct translate_text t = { 0 };
	struct chat_message *m;
	char field[64];
	size_t k;
	json_t *b;

	if (v == NULL || json_is_null(v))
		return 0;
	if (json_is_string(v)) {
		if (json_string_length(v) == 0)
			return 0;
		if (translate_text_add_json(&t, v, NULL) == -1)
			return anthropic_nomem(ap->err);
	} else if (json_is_array(v)) {
		json_array_foreach(v, k, b) {
			if (anthropic_billing_block(b))
				continue;
			if (anthropic_text_block(b, &t) == -1) {
				translate_text_clear(&t);
				snprintf(field, sizeof field, "system.%zu", k);
				anthropic_fail(ap->err, field, "system blocks must be text blocks "
				    "{\"type\":\"text\",\"text\":\"...\"}");
				return -1;
			}
		}
		if (!t.any)
			return 0;
	} else {
		anthropic_fail(ap->err, "system", "must be a string or an array of text blocks");
		return -1;
	}
	if ((m = translate_message_add(ap->cr, &ap->cap, "system")) == NULL) {
		translate_text_clear(&t);
		return anthropic_nomem(ap->err);
	}
	translate_text_move(&t, m);
	return 0;
}

/*
 * A tool_result's content (absent, a string, or blocks of text, text
 * documents and tool references) as text; a tool_reference also marks the
 * tool it loads.
 */
static int
anthropic_tool_result_text(struct anthropic_parse *ap, json_t *c, struct translate_text *t,
    const char *field)
{
	char sub[128];
	size_t k;
	json_t *b, *type, *name;

	if (c == NULL || json_is_null(c))
		return translate_text_add(t, "", 0, NULL) == -1 ? anthropic_nomem(ap->err) : 0;
	if (json_is_string(c))
		return translate_text_add_json(t, c, NULL) == -1 ? anthropic_nomem(ap->err) : 0;
	if (!json_is_array(c)) {
		snprintf(sub, sizeof sub, "%s.content", field);
		anthropic_fail(ap->err, sub, "must be a string or an array of content blocks");
		return -1;
	}
	if (json_array_size(c) == 0 && translate_text_add(t, "", 0, NULL) == -1)
		return anthropic_nomem(ap->err);
	json_array_foreach(c, k, b) {
		snprintf(sub, sizeof sub, "%s.content.%zu", field, k);
		type = json_object_get(b, "type");
		if (translate_is(type, "text")) {
			if (anthropic_text_block(b, t) == -1) {
				anthropic_fail(ap->err, sub, "a text block needs a string text");
				return -1;
			}
		} else if (translate_is(type, "document")) {
			if (anthropic_document(b, t) == -1) {
				anthropic_fail(ap->err, sub, "only documents with a text source are "
				    "supported: the model server is sent text only");
				return -1;
			}
		} else if (translate_is(type, "tool_reference")) {
			name = json_object_get(b, "tool_name");
			if (!json_is_string(name)) {
				anthropic_fail(ap->err, sub, "a tool_reference needs a string tool_name");
				return -1;
			}
			if (json_object_set(ap->referenced, json_string_value(name), json_true()) != 0 ||
			    translate_text_add(t, "Tool loaded: ", 13, "\n") == -1 ||
			    translate_text_add_json(t, name, NULL) == -1)
				return anthropic_nomem(ap->err);
		} else if (translate_is(type, "image")) {
			anthropic_fail(ap->err, sub, "image blocks are not supported: the model "
			    "server is sent text only");
			return -1;
		} else {
			anthropic_fail(ap->err, sub, "unsupported block type in a tool_result");
			return -1;
		}
	}
	return 0;
}

/* A tool_use block as an OpenAI tool call appended to calls. */
static int
anthropic_tool_use(struct anthropic_parse *ap, json_t *b, json_t *calls, const char *field)
{
	json_t *id = json_object_get(b, "id"), *name = json_object_get(b, "name");
	json_t *input = json_object_get(b, "input");
	char *args;
	int rc;

	if (!json_is_string(id) || !json_is_string(name) ||
	    strlen(json_string_value(id)) != json_string_length(id) ||
	    strlen(json_string_value(name)) != json_string_length(name)) {
		anthropic_fail(ap->err, field, "a tool_use block needs a string id and name");
		return -1;
	}
	if (input != NULL && !json_is_object(input)) {
		anthropic_fail(ap->err, field, "a tool_use block's input must be an object");
		return -1;
	}
	if ((args = translate_json_text(input)) == NULL)
		return anthropic_nomem(ap->err);
	rc = translate_tool_call_add(calls, json_string_value(id), json_string_value(name), args);
	free(args);
	return rc == -1 ? anthropic_nomem(ap->err) : 0;
}

/* One message of `messages`: one chat message, or tool messages and a user message. */
static int
anthropic_message(struct anthropic_parse *ap, json_t *msg, size_t i)
{
	struct translate_text text = { 0 };
	struct chat_message *m;
	json_t *role, *content, *b, *type, *calls = NULL;
	const char *r;
	char field[64];
	size_t k;
	bool user, assistant, results = false;
	int rc = -1;

	role = json_object_get(msg, "role");
	if (!json_is_object(msg)) {
		anthropic_fail(ap->err, anthropic_field(field, sizeof field, "messages", i, -1),
		    "must be an object with role and content");
		return -1;
	}
	user = translate_is(role, "user");
	assistant = translate_is(role, "assistant");
	if (!user && !assistant && !translate_is(role, "system")) {
		snprintf(field, sizeof field, "messages.%zu.role", i);
		anthropic_fail(ap->err, field, "must be \"user\" or \"assistant\"");
		return -1;
	}
	r = json_string_value(role);
	content = json_object_get(msg, "content");
	if (json_is_string(content)) {
		if ((m = translate_message_add(ap->cr, &ap->cap, r)) == NULL ||
		    translate_text_add_json(&text, content, NULL) == -1)
			return anthropic_nomem(ap->err);
		translate_text_move(&text, m);
		return 0;
	}
	if (!json_is_array(content)) {
		snprintf(field, sizeof field, "messages.%zu.content", i);
		anthropic_fail(ap->err, field, "must be a string or an array of content blocks");
		return -1;
	}
	if (assistant && (calls = json_array()) == NULL)
		return anthropic_nomem(ap->err);
	json_array_foreach(content, k, b) {
		anthropic_field(field, sizeof field, "messages", i, (ssize_t)k);
		type = json_object_get(b, "type");
		if (!json_is_object(b) || !json_is_string(type)) {
			anthropic_fail(ap->err, field, "a content block must be an object with a type");
			goto out;
		}
		if (translate_is(type, "text")) {
			if (anthropic_text_block(b, &text) == -1) {
				anthropic_fail(ap->err, field, "a text block needs a string text");
				goto out;
			}
		} else if (translate_is(type, "thinking") || translate_is(type, "redacted_thinking")) {
			continue;       /* earlier reasoning is not sent back */
		} else if (translate_is(type, "tool_use") && assistant) {
			if (anthropic_tool_use(ap, b, calls, field) == -1)
				goto out;
		} else if (translate_is(type, "tool_result") && user) {
			struct translate_text out = { 0 };
			json_t *id = json_object_get(b, "tool_use_id");
			if (!json_is_string(id) || strlen(json_string_value(id)) != json_string_length(id)) {
				anthropic_fail(ap->err, field, "a tool_result block needs a string tool_use_id");
				goto out;
			}
			if (anthropic_tool_result_text(ap, json_object_get(b, "content"), &out,
			    field) == -1) {
				translate_text_clear(&out);
				goto out;
			}
			if ((m = translate_message_add(ap->cr, &ap->cap, "tool")) == NULL ||
			    (m->tool_call_id = strdup(json_string_value(id))) == NULL) {
				translate_text_clear(&out);
				anthropic_nomem(ap->err);
				goto out;
			}
			translate_text_move(&out, m);
			results = true;
		} else if (translate_is(type, "image")) {
			anthropic_fail(ap->err, field, "image blocks are not supported: the model "
			    "server is sent text only");
			goto out;
		} else if (translate_is(type, "document")) {
			if (anthropic_document(b, &text) == -1) {
				anthropic_fail(ap->err, field, "only documents with a text source are "
				    "supported: the model server is sent text only");
				goto out;
			}
		} else if (translate_is(type, "tool_use") || translate_is(type, "tool_result")) {
			anthropic_fail(ap->err, field, "%s blocks belong in %s turns",
			    json_string_value(type), translate_is(type, "tool_use") ?
			    "assistant" : "user");
			goto out;
		} else {
			anthropic_fail(ap->err, field, "unsupported content block type \"%.40s\"",
			    json_string_value(type));
			goto out;
		}
	}
	/* a user turn of tool results alone adds no user message */
	if (!results || text.any) {
		if ((m = translate_message_add(ap->cr, &ap->cap, r)) == NULL) {
			anthropic_nomem(ap->err);
			goto out;
		}
		if (calls != NULL && json_array_size(calls) > 0 &&
		    translate_raw_set(&m->tool_calls, calls) == -1) {
			snprintf(field, sizeof field, "messages.%zu.content", i);
			anthropic_fail(ap->err, field, "a tool_use input cannot be passed on");
			goto out;
		}
		if (text.any || m->tool_calls.data == NULL)
			translate_text_add(&text, "", 0, NULL);
		translate_text_move(&text, m);
		if (m->content == NULL && m->tool_calls.data == NULL) {
			anthropic_nomem(ap->err);
			goto out;
		}
	}
	rc = 0;
out:
	translate_text_clear(&text);
	json_decref(calls);
	return rc;
}

/* `tools` as OpenAI function tools; deferred ones only when referenced. */
static int
anthropic_tools(struct anthropic_parse *ap, json_t *v)
{
	json_t *tools, *t, *type, *name, *desc, *schema, *fn;
	char field[64];
	size_t k;

	if (v == NULL || json_is_null(v))
		return 0;
	if (!json_is_array(v)) {
		anthropic_fail(ap->err, "tools", "must be an array of tools");
		return -1;
	}
	if ((tools = json_array()) == NULL)
		return anthropic_nomem(ap->err);
	json_array_foreach(v, k, t) {
		snprintf(field, sizeof field, "tools.%zu", k);
		type = json_object_get(t, "type");
		if (!json_is_object(t)) {
			anthropic_fail(ap->err, field, "a tool must be an object");
			goto fail;
		}
		if (type != NULL && !json_is_null(type) && !translate_is(type, "custom"))
			continue;   /* a server tool: the model server cannot run it */
		name = json_object_get(t, "name");
		desc = json_object_get(t, "description");
		schema = json_object_get(t, "input_schema");
		if (!json_is_string(name) || json_string_length(name) == 0 ||
		    strlen(json_string_value(name)) != json_string_length(name)) {
			anthropic_fail(ap->err, field, "a tool needs a name");
			goto fail;
		}
		if (schema != NULL && !json_is_object(schema)) {
			anthropic_fail(ap->err, field, "input_schema must be an object");
			goto fail;
		}
		if (json_is_true(json_object_get(t, "defer_loading")) &&
		    json_object_get(ap->referenced, json_string_value(name)) == NULL)
			continue;
		fn = json_pack("{s:O}", "name", name);
		if (fn == NULL)
			goto nomem;
		if (json_is_string(desc) && json_object_set(fn, "description", desc) != 0) {
			json_decref(fn);
			goto nomem;
		}
		if (json_object_set_new(fn, "parameters", schema != NULL ? json_incref(schema) :
		    json_pack("{s:s, s:{}}", "type", "object", "properties")) != 0 ||
		    (json_is_true(json_object_get(t, "strict")) &&
		    json_object_set_new(fn, "strict", json_true()) != 0) ||
		    json_array_append_new(tools, json_pack("{s:s, s:o}", "type", "function",
		    "function", fn)) != 0)
			goto nomem;
	}
	if (json_array_size(tools) == 0) {
		json_decref(tools);
		return 0;
	}
	return anthropic_extra(ap, "tools", tools);
nomem:
	anthropic_nomem(ap->err);
fail:
	json_decref(tools);
	return -1;
}

/* tool_choice as OpenAI's, when there are tools to choose from. */
static int
anthropic_tool_choice(struct anthropic_parse *ap, json_t *v)
{
	json_t *type = json_object_get(v, "type"), *name = json_object_get(v, "name"), *choice;
	json_t *dp = json_object_get(v, "disable_parallel_tool_use");

	if (v == NULL || json_is_null(v))
		return 0;
	if (translate_is(type, "auto"))
		choice = json_string("auto");
	else if (translate_is(type, "any"))
		choice = json_string("required");
	else if (translate_is(type, "none"))
		choice = json_string("none");
	else if (translate_is(type, "tool") && json_is_string(name))
		choice = json_pack("{s:s, s:{s:O}}", "type", "function", "function", "name", name);
	else {
		anthropic_fail(ap->err, "tool_choice", "must be {\"type\": \"auto\"}, \"any\", "
		    "\"none\", or \"tool\" with a name");
		return -1;
	}
	if (dp != NULL && !json_is_boolean(dp)) {
		json_decref(choice);
		anthropic_fail(ap->err, "tool_choice.disable_parallel_tool_use", "must be true or false");
		return -1;
	}
	if (json_object_get(ap->extra, "tools") == NULL) {
		json_decref(choice);
		return 0;
	}
	if (anthropic_extra(ap, "tool_choice", choice) == -1)
		return -1;
	if (json_is_true(dp))
		return anthropic_extra(ap, "parallel_tool_calls", json_false());
	return 0;
}

/* The other top-level fields: sampling, stop, stream, thinking, output format. */
static int
anthropic_params(struct anthropic_parse *ap, json_t *body, struct anthropic_meta *meta)
{
	struct chat_request *cr = ap->cr;
	json_t *v;
	char cause[200];

	if ((v = json_object_get(body, "model")) != NULL && !json_is_null(v) &&
	    (cr->model = api_body_strdup(v)) == NULL) {
		anthropic_fail(ap->err, "model", "must be a string");
		return -1;
	}
	if ((v = json_object_get(body, "stream")) != NULL && !json_is_null(v)) {
		if (!json_is_boolean(v)) {
			anthropic_fail(ap->err, "stream", "must be true or false");
			return -1;
		}
		cr->stream = json_is_true(v);
	}
	if ((v = json_object_get(body, "temperature")) != NULL && !json_is_null(v)) {
		if (!json_is_number(v)) {
			anthropic_fail(ap->err, "temperature", "must be a number");
			return -1;
		}
		cr->temperature = json_number_value(v);
	}
	if ((v = json_object_get(body, "top_p")) != NULL && !json_is_null(v)) {
		if (!json_is_number(v)) {
			anthropic_fail(ap->err, "top_p", "must be a number");
			return -1;
		}
		cr->top_p = json_number_value(v);
	}
	if ((v = json_object_get(body, "top_k")) != NULL && !json_is_null(v)) {
		if (!json_is_integer(v) || json_integer_value(v) < 0) {
			anthropic_fail(ap->err, "top_k", "must be an integer >= 0");
			return -1;
		}
		if (anthropic_extra(ap, "top_k", json_incref(v)) == -1)
			return -1;
	}
	if ((v = json_object_get(body, "stop_sequences")) != NULL && !json_is_null(v) &&
	    translate_stop(cr, v, false, "stop_sequences", cause, sizeof cause) == -1) {
		snprintf(ap->err->field, sizeof ap->err->field, "stop_sequences");
		snprintf(ap->err->message, sizeof ap->err->message, "%s", cause);
		return -1;
	}
	if ((v = json_object_get(body, "thinking")) != NULL && !json_is_null(v)) {
		json_t *type = json_object_get(v, "type");
		if (!json_is_object(v) || !json_is_string(type)) {
			anthropic_fail(ap->err, "thinking", "must be an object with a type");
			return -1;
		}
		if (meta != NULL)
			meta->thinking = !translate_is(type, "disabled") &&
			    !translate_is(json_object_get(v, "display"), "omitted");
	}
	v = json_object_get(json_object_get(body, "output_config"), "format");
	if (translate_is(json_object_get(v, "type"), "json_schema") &&
	    json_is_object(json_object_get(v, "schema"))) {
		if (anthropic_extra(ap, "response_format", json_pack("{s:s, s:{s:s, s:O}}", "type",
		    "json_schema", "json_schema", "name", "output", "schema",
		    json_object_get(v, "schema"))) == -1)
			return -1;
	}
	return 0;
}

/* A Messages (or count_tokens) body as a chat request; NULL with err. */
static struct request *
anthropic_parse(const char *body, size_t len, bool count, struct anthropic_meta *meta,
    struct anthropic_error *err)
{
	struct anthropic_parse ap = { .err = err };
	json_t *j, *msgs, *m, *v;
	size_t i;

	memset(err, 0, sizeof *err);
	if (meta != NULL)
		memset(meta, 0, sizeof *meta);
	if ((j = api_body_json(body, len, err->message, sizeof err->message)) == NULL)
		return NULL;
	if ((ap.rq = calloc(1, sizeof *ap.rq)) == NULL ||
	    (ap.referenced = json_object()) == NULL) {
		anthropic_nomem(err);
		goto fail;
	}
	message_request_init(ap.rq, OP_CHAT);
	ap.cr = &ap.rq->u.chat;
	ap.cr->stream = false;

	msgs = json_object_get(j, "messages");
	if (!json_is_array(msgs) || json_array_size(msgs) == 0) {
		anthropic_fail(err, "messages", msgs == NULL ? "Field required" :
		    "must be a non-empty array of messages");
		goto fail;
	}
	if (!count) {
		v = json_object_get(j, "max_tokens");
		if (v == NULL || json_is_null(v)) {
			anthropic_fail(err, "max_tokens", "Field required");
			goto fail;
		}
		if (!translate_max_tokens(v, &ap.cr->max_tokens)) {
			anthropic_fail(err, "max_tokens", "must be an integer from 1 to %d",
			    MESSAGE_MAX_TOKENS);
			goto fail;
		}
	}
	if (anthropic_system(&ap, json_object_get(j, "system")) == -1)
		goto fail;
	json_array_foreach(msgs, i, m)
		if (anthropic_message(&ap, m, i) == -1)
			goto fail;
	if (anthropic_tools(&ap, json_object_get(j, "tools")) == -1 ||
	    anthropic_tool_choice(&ap, json_object_get(j, "tool_choice")) == -1 ||
	    anthropic_params(&ap, j, meta) == -1)
		goto fail;
	if (count)
		ap.cr->stream = false;
	if (ap.extra != NULL && translate_raw_set(&ap.cr->extra, ap.extra) == -1) {
		anthropic_fail(err, "tools", "cannot be passed on to the model server");
		goto fail;
	}
	if (meta != NULL)
		meta->stream = ap.cr->stream;
	json_decref(ap.extra);
	json_decref(ap.referenced);
	json_decref(j);
	return ap.rq;
fail:
	if (err->message[0] == '\0')
		anthropic_nomem(err);
	json_decref(ap.extra);
	json_decref(ap.referenced);
	json_decref(j);
	if (ap.rq != NULL)
		message_request_free(ap.rq);
	return NULL;
}

struct request *
anthropic_parse_messages(const char *body, size_t len, struct anthropic_meta *meta,
    struct anthropic_error *err)
{
	return anthropic_parse(body, len, false, meta, err);
}

struct request *
anthropic_parse_count_tokens(const char *body, size_t len, struct anthropic_error *err)
{
	return anthropic_parse(body, len, true, NULL, err);
}

/* --- errors ------------------------------------------------------------- */

int
anthropic_error_status(const char *code, int64_t upstream_status, const char **type)
{
	static const struct {
		const char *code;
		int status;
		const char *type;
	} table[] = {
		{ "bad_request", 400, "invalid_request_error" },
		{ "bad_frame", 400, "invalid_request_error" },
		{ "invalid_api_key", 401, "authentication_error" },
		{ "missing_api_key", 401, "authentication_error" },
		{ "budget_exceeded", 402, "billing_error" },
		{ "forbidden", 403, "permission_error" },
		{ "unknown_model", 404, "not_found_error" },
		{ "model_not_found", 404, "not_found_error" },
		{ "unknown_url", 404, "not_found_error" },
		{ "method_not_allowed", 405, "invalid_request_error" },
		{ "too_large", 413, "request_too_large" },
		{ "request_too_large", 413, "request_too_large" },
		{ "rate_limited", 429, "rate_limit_error" },
		{ "timeout", 504, "timeout_error" },
		{ "upstream_unavailable", 529, "overloaded_error" },
		{ "shutting_down", 529, "overloaded_error" },
		{ "too_many_clients", 529, "overloaded_error" },
		{ "fleet_unavailable", 529, "overloaded_error" },
	};

	if (code != NULL && strcmp(code, "upstream_error") == 0) {
		/* the model server's refusal of the request itself is the client's error */
		if (upstream_status >= 400 && upstream_status < 500 && upstream_status != 401 &&
		    upstream_status != 403 && upstream_status != 429) {
			*type = upstream_status == 404 ? "not_found_error" : "invalid_request_error";
			return (int)upstream_status;
		}
		*type = "api_error";
		return 502;
	}
	for (size_t i = 0; code != NULL && i < sizeof table / sizeof table[0]; i++) {
		if (strcmp(code, table[i].code) == 0) {
			*type = table[i].type;
			return table[i].status;
		}
	}
	*type = "api_error";
	return 500;
}

/* {"type":"error","error":{"type","message"[,"budget"]}}; NULL when memory runs out. */
static json_t *
anthropic_error_json(const char *type, const char *message, const struct message_raw *detail)
{
	json_t *e = json_pack("{s:s, s:s}", "type", type, "message",
	    message != NULL ? message : "error");

	if (e == NULL)          /* a message that is not UTF-8 */
		e = json_pack("{s:s, s:s}", "type", type, "message", "error");
	if (e != NULL && detail != NULL && detail->data != NULL) {
		json_t *d = openai_msgpack_to_json(detail->data, detail->len);
		if (d != NULL)
			json_object_set_new(e, "budget", d);
	}
	return e != NULL ? json_pack("{s:s, s:o}", "type", "error", "error", e) : NULL;
}

/* Append JSON text of v (stolen) and then tail. */
static int
anthropic_dump(struct evbuffer *out, json_t *v, const char *tail)
{
	char *s = v != NULL ? json_dumps(v, JSON_COMPACT) : NULL;
	int rc = -1;

	if (s != NULL) {
		evbuffer_add(out, s, strlen(s));
		evbuffer_add(out, tail, strlen(tail));
		free(s);
		rc = 0;
	}
	json_decref(v);
	return rc;
}

int
anthropic_error_write(struct evbuffer *out, const char *code, const char *message,
    int64_t upstream_status, const struct message_raw *detail)
{
	const char *type;
	int status = anthropic_error_status(code, upstream_status, &type);

	if (anthropic_dump(out, anthropic_error_json(type, message, detail), "\n") == -1)
		evbuffer_add_printf(out, "{\"type\":\"error\",\"error\":{\"type\":\"%s\","
		    "\"message\":\"out of memory\"}}\n", type);
	return status;
}

void
anthropic_count_write(struct evbuffer *out, int64_t input_tokens)
{
	evbuffer_add_printf(out, "{\"input_tokens\":%lld}\n", (long long)input_tokens);
}

/* --- replies ------------------------------------------------------------ */

const char *
anthropic_stop_reason(const char *finish_reason, bool tool_calls, const char *stop_sequence)
{
	if (finish_reason != NULL && strcmp(finish_reason, "length") == 0)
		return "max_tokens";
	if (tool_calls || (finish_reason != NULL && (strcmp(finish_reason, "tool_calls") == 0 ||
	    strcmp(finish_reason, "function_call") == 0)))
		return "tool_use";
	if (finish_reason != NULL && strcmp(finish_reason, "content_filter") == 0)
		return "refusal";
	if (stop_sequence != NULL)
		return "stop_sequence";
	return "end_turn";
}

/* usage {input_tokens, cache_*, output_tokens}. */
static json_t *
anthropic_usage_json(int64_t input, int64_t output)
{
	return json_pack("{s:I, s:i, s:i, s:I}", "input_tokens", (json_int_t)input,
	    "cache_creation_input_tokens", 0, "cache_read_input_tokens", 0,
	    "output_tokens", (json_int_t)output);
}

/* A tool call's arguments as a tool_use input: the object, {} when empty, else kept as text. */
static json_t *
anthropic_input_json(json_t *args)
{
	json_t *v;

	if (json_is_object(args))
		return json_incref(args);
	if (!json_is_string(args) || json_string_length(args) == 0)
		return json_object();
	v = json_loadb(json_string_value(args), json_string_length(args), 0, NULL);
	if (json_is_object(v))
		return v;
	json_decref(v);
	return json_pack("{s:O}", "arguments", args);
}

int
anthropic_message_write(struct evbuffer *out, const char *id, const char *model,
    const struct done_reply *d, bool thinking, const char *stop_sequence)
{
	json_t *content = json_array(), *calls = NULL, *call, *msg;
	size_t i;
	int n = 0;

	if (content == NULL)
		return -1;
	if (thinking && d->reasoning != NULL && d->reasoning[0] != '\0')
		json_array_append_new(content, json_pack("{s:s, s:s, s:s}", "type", "thinking",
		    "thinking", d->reasoning, "signature", ""));
	if (d->content != NULL && d->content[0] != '\0')
		json_array_append_new(content, json_pack("{s:s, s:s}", "type", "text",
		    "text", d->content));
	if (d->tool_calls.data != NULL)
		calls = openai_msgpack_to_json(d->tool_calls.data, d->tool_calls.len);
	json_array_foreach(calls, i, call) {
		json_t *fn = json_object_get(call, "function"), *tid = json_object_get(call, "id");
		const char *name = json_string_value(json_object_get(fn, "name"));
		char gen[96];
		snprintf(gen, sizeof gen, "toolu_%s_%zu", id, i);
		json_array_append_new(content, json_pack("{s:s, s:s, s:s, s:o}", "type", "tool_use",
		    "id", json_string_length(tid) > 0 ? json_string_value(tid) : gen,
		    "name", name != NULL ? name : "", "input",
		    anthropic_input_json(json_object_get(fn, "arguments"))));
		n++;
	}
	json_decref(calls);
	msg = json_pack("{s:s, s:s, s:s, s:s, s:o, s:s, s:o, s:o}", "id", id, "type", "message",
	    "role", "assistant", "model", model, "content", content, "stop_reason",
	    anthropic_stop_reason(d->finish_reason, n > 0, stop_sequence), "stop_sequence",
	    stop_sequence != NULL ? json_string(stop_sequence) : json_null(), "usage",
	    anthropic_usage_json(d->usage.prompt_tokens, d->usage.completion_tokens));
	return anthropic_dump(out, msg, "\n");
}

/* --- the stream --------------------------------------------------------- */

/* One event: "event: NAME\ndata: JSON\n\n"; obj is stolen. */
static int
anthropic_event(struct evbuffer *out, const char *name, json_t *obj)
{
	if (obj == NULL)
		return -1;
	evbuffer_add_printf(out, "event: %s\ndata: ", name);
	return anthropic_dump(out, obj, "\n\n");
}

int
anthropic_stream_init(struct anthropic_stream *s, const char *id, const char *model,
    bool thinking, int64_t input_tokens)
{
	memset(s, 0, sizeof *s);
	s->thinking = thinking;
	s->input_tokens = input_tokens >= 0 ? input_tokens : 0;
	if ((s->id = strdup(id)) == NULL || (s->model = strdup(model)) == NULL) {
		anthropic_stream_clear(s);
		return -1;
	}
	return 0;
}

void
anthropic_stream_clear(struct anthropic_stream *s)
{
	free(s->id);
	free(s->model);
	free(s->tools);
	memset(s, 0, sizeof *s);
}

void
anthropic_stream_begin(struct anthropic_stream *s, struct evbuffer *out)
{
	if (s->started)
		return;
	s->started = true;
	anthropic_event(out, "message_start", json_pack("{s:s, s:{s:s, s:s, s:s, s:s, s:[], "
	    "s:n, s:n, s:o}}", "type", "message_start", "message", "id", s->id, "type", "message",
	    "role", "assistant", "model", s->model, "content", "stop_reason", "stop_sequence",
	    "usage", anthropic_usage_json(s->input_tokens, 0)));
	anthropic_stream_ping(s, out);
}

void
anthropic_stream_ping(struct anthropic_stream *s, struct evbuffer *out)
{
	static const char ping[] = "event: ping\ndata: {\"type\":\"ping\"}\n\n";

	if (s->ended)
		return;
	if (!s->started) {
		anthropic_stream_begin(s, out);     /* message_start and its ping */
		return;
	}
	evbuffer_add(out, ping, sizeof ping - 1);
}

/* Stop the open block. */
static int
anthropic_block_stop(struct anthropic_stream *s, struct evbuffer *out)
{
	if (s->open == ANTHROPIC_BLOCK_NONE)
		return 0;
	s->open = ANTHROPIC_BLOCK_NONE;
	return anthropic_event(out, "content_block_stop", json_pack("{s:s, s:I}", "type",
	    "content_block_stop", "index", (json_int_t)s->open_index));
}

/* Open a block of kind holding content_block (stolen), stopping the open one. */
static int
anthropic_block_start(struct anthropic_stream *s, enum anthropic_block kind, json_t *block,
    struct evbuffer *out)
{
	if (anthropic_block_stop(s, out) == -1) {
		json_decref(block);
		return -1;
	}
	s->open = kind;
	s->open_index = s->next_index++;
	return anthropic_event(out, "content_block_start", json_pack("{s:s, s:I, s:o}", "type",
	    "content_block_start", "index", (json_int_t)s->open_index, "content_block", block));
}

/* A content_block_delta of block index whose delta has type and key = text. */
static int
anthropic_block_delta(struct evbuffer *out, int64_t index, const char *type, const char *key,
    const char *text, size_t len)
{
	return anthropic_event(out, "content_block_delta", json_pack("{s:s, s:I, s:{s:s, s:s%}}",
	    "type", "content_block_delta", "index", (json_int_t)index, "delta", "type", type,
	    key, text, len));
}

/* Text (or thinking) appended to the stream, opening its block when another is open. */
static int
anthropic_stream_text(struct anthropic_stream *s, enum anthropic_block kind, const char *text,
    struct evbuffer *out)
{
	bool thinking = kind == ANTHROPIC_BLOCK_THINKING;

	if (text[0] == '\0')
		return 0;
	if (s->open != kind && anthropic_block_start(s, kind, thinking ?
	    json_pack("{s:s, s:s, s:s}", "type", "thinking", "thinking", "", "signature", "") :
	    json_pack("{s:s, s:s}", "type", "text", "text", ""), out) == -1)
		return -1;
	return anthropic_block_delta(out, s->open_index, thinking ? "thinking_delta" : "text_delta",
	    thinking ? "thinking" : "text", text, strlen(text));
}

/* The block of an OpenAI tool call index, or NULL. */
static struct anthropic_tool_block *
anthropic_tool_find(struct anthropic_stream *s, int64_t openai_index)
{
	for (size_t i = 0; i < s->n_tools; i++)
		if (s->tools[i].openai_index == openai_index)
			return &s->tools[i];
	return NULL;
}

/* One OpenAI tool call fragment: a tool_use block started or its input continued. */
static int
anthropic_stream_tool(struct anthropic_stream *s, json_t *frag, struct evbuffer *out)
{
	json_t *fn = json_object_get(frag, "function"), *args = json_object_get(fn, "arguments");
	json_t *jid = json_object_get(frag, "id"), *jname = json_object_get(fn, "name");
	struct anthropic_tool_block *tb, *grown;
	int64_t index;
	char *argtext = NULL;
	const char *text = NULL;
	size_t len = 0;
	int rc = 0;

	if (!json_is_object(frag))
		return 0;
	if (json_is_integer(json_object_get(frag, "index")))
		index = json_integer_value(json_object_get(frag, "index"));
	else if (json_string_length(jid) > 0 || s->n_tools == 0)
		index = s->n_tools > 0 ? s->tools[s->n_tools - 1].openai_index + 1 : 0;
	else
		index = s->tools[s->n_tools - 1].openai_index;
	if ((tb = anthropic_tool_find(s, index)) == NULL) {
		char gen[96];
		if ((grown = realloc(s->tools, (s->n_tools + 1) * sizeof *grown)) == NULL)
			return -1;
		s->tools = grown;
		snprintf(gen, sizeof gen, "toolu_%s_%zu", s->id, s->n_tools);
		if (anthropic_block_start(s, ANTHROPIC_BLOCK_TOOL, json_pack("{s:s, s:s, s:s, s:{}}",
		    "type", "tool_use", "id", json_string_length(jid) > 0 ? json_string_value(jid) :
		    gen, "name", json_is_string(jname) ? json_string_value(jname) : "", "input"),
		    out) == -1)
			return -1;
		tb = &s->tools[s->n_tools++];
		tb->openai_index = index;
		tb->block = s->open_index;
		s->saw_tool = true;
	}
	if (json_is_string(args)) {
		text = json_string_value(args);
		len = json_string_length(args);
	} else if (json_is_object(args)) {
		if ((argtext = json_dumps(args, JSON_COMPACT)) == NULL)
			return -1;
		text = argtext;
		len = strlen(argtext);
	}
	if (len > 0)
		rc = anthropic_block_delta(out, tb->block, "input_json_delta", "partial_json",
		    text, len);
	free(argtext);
	return rc;
}

int
anthropic_stream_delta(struct anthropic_stream *s, const struct delta_reply *d,
    struct evbuffer *out)
{
	json_t *calls, *frag;
	size_t i;
	int rc = 0;

	if (s->ended)
		return 0;
	anthropic_stream_begin(s, out);
	if (d->reasoning != NULL && s->thinking &&
	    anthropic_stream_text(s, ANTHROPIC_BLOCK_THINKING, d->reasoning, out) == -1)
		return -1;
	if (d->content != NULL && anthropic_stream_text(s, ANTHROPIC_BLOCK_TEXT, d->content,
	    out) == -1)
		return -1;
	if (d->tool_calls.data == NULL)
		return 0;
	calls = openai_msgpack_to_json(d->tool_calls.data, d->tool_calls.len);
	if (json_is_object(calls))
		rc = anthropic_stream_tool(s, calls, out);
	json_array_foreach(calls, i, frag)
		if ((rc = anthropic_stream_tool(s, frag, out)) == -1)
			break;
	json_decref(calls);
	return rc;
}

int
anthropic_stream_done(struct anthropic_stream *s, const struct done_reply *d,
    const char *stop_sequence, struct evbuffer *out)
{
	const char *reason = anthropic_stop_reason(d->finish_reason, s->saw_tool, stop_sequence);
	json_t *usage;

	if (s->ended)
		return 0;
	anthropic_stream_begin(s, out);
	s->ended = true;
	if (anthropic_block_stop(s, out) == -1)
		return -1;
	usage = anthropic_usage_json(d->usage.prompt_tokens, d->usage.completion_tokens);
	if (anthropic_event(out, "message_delta", json_pack("{s:s, s:{s:s, s:o}, s:o}", "type",
	    "message_delta", "delta", "stop_reason", reason, "stop_sequence",
	    stop_sequence != NULL && strcmp(reason, "stop_sequence") == 0 ?
	    json_string(stop_sequence) : json_null(), "usage", usage)) == -1)
		return -1;
	return anthropic_event(out, "message_stop", json_pack("{s:s}", "type", "message_stop"));
}

void
anthropic_stream_error(struct anthropic_stream *s, const char *code, const char *message,
    int64_t upstream_status, struct evbuffer *out)
{
	const char *type;

	if (s->ended)
		return;
	s->ended = true;
	anthropic_error_status(code, upstream_status, &type);
	if (anthropic_event(out, "error", anthropic_error_json(type, message, NULL)) == -1)
		evbuffer_add_printf(out, "event: error\ndata: {\"type\":\"error\",\"error\":"
		    "{\"type\":\"%s\",\"message\":\"error\"}}\n\n", type);
}

/* --- a native upstream -------------------------------------------------- */

/* A token count in [0, OPENAI_USAGE_MAX], or -1. */
static int64_t
anthropic_count(json_t *v)
{
	if (!json_is_integer(v) || json_integer_value(v) < 0 ||
	    json_integer_value(v) > OPENAI_USAGE_MAX)
		return -1;
	return json_integer_value(v);
}

/* Fold a usage object: each count it gives replaces the one before. */
static void
anthropic_native_usage(struct anthropic_native *n, json_t *u, bool start)
{
	int64_t in = anthropic_count(json_object_get(u, "input_tokens"));
	int64_t cc = anthropic_count(json_object_get(u, "cache_creation_input_tokens"));
	int64_t cr = anthropic_count(json_object_get(u, "cache_read_input_tokens"));
	int64_t outn = anthropic_count(json_object_get(u, "output_tokens"));

	if (!json_is_object(u))
		return;
	if (start)
		n->input_tokens = n->cache_creation = n->cache_read = 0;
	if (in >= 0)
		n->input_tokens = in;
	if (cc >= 0)
		n->cache_creation = cc;
	if (cr >= 0)
		n->cache_read = cr;
	n->usage.prompt_tokens = n->input_tokens + n->cache_creation + n->cache_read;
	if (outn >= 0)
		n->usage.completion_tokens = outn;
	n->usage.total_tokens = n->usage.prompt_tokens + n->usage.completion_tokens;
	n->usage.estimated = false;
	n->has_usage = true;
}

/* Replace *dst with a copy of a JSON string (kept when v is none). */
static void
anthropic_native_set(char **dst, json_t *v)
{
	char *s;

	if (!json_is_string(v) || (s = api_body_strdup(v)) == NULL)
		return;
	free(*dst);
	*dst = s;
}

/* An error body or event: {"type":"error","error":{type,message}}. */
static void
anthropic_native_error(struct anthropic_native *n, json_t *j)
{
	json_t *e = json_object_get(j, "error");

	anthropic_native_set(&n->error_type, json_object_get(e, "type"));
	if (json_is_string(e))
		anthropic_native_set(&n->error_message, e);
	else
		anthropic_native_set(&n->error_message, json_object_get(e, "message"));
	if (n->error_message == NULL)
		n->error_message = strdup("error from the model server");
}

/* Whether a content block (or its delta) carries text, thinking or tool input. */
static bool
anthropic_native_has_text(json_t *b)
{
	static const char *const keys[] = { "text", "thinking", "partial_json" };

	for (size_t i = 0; i < sizeof keys / sizeof keys[0]; i++)
		if (json_string_length(json_object_get(b, keys[i])) > 0)
			return true;
	return false;
}

int
anthropic_native_event(struct anthropic_native *n, const char *event, const char *data,
    size_t len, char *cause, size_t cause_len)
{
	json_t *j, *type;
	const char *t;

	n->text = false;
	if (event != NULL && strcmp(event, "ping") == 0)
		return 0;
	j = json_loadb(data, len, 0, NULL);
	if (!json_is_object(j)) {
		if (event != NULL && strcmp(event, "error") == 0) {
			char *m = openai_error_message(data, len);
			free(n->error_message);
			n->error_message = m != NULL ? m : strdup("error from the model server");
			json_decref(j);
			return 0;
		}
		snprintf(cause, cause_len, "a stream event that is not a JSON object");
		json_decref(j);
		return -1;
	}
	type = json_object_get(j, "type");
	t = json_is_string(type) ? json_string_value(type) : event != NULL ? event : "";
	if (strcmp(t, "message_start") == 0) {
		json_t *m = json_object_get(j, "message");
		anthropic_native_usage(n, json_object_get(m, "usage"), true);
		anthropic_native_set(&n->model, json_object_get(m, "model"));
	} else if (strcmp(t, "message_delta") == 0) {
		anthropic_native_set(&n->stop_reason,
		    json_object_get(json_object_get(j, "delta"), "stop_reason"));
		anthropic_native_usage(n, json_object_get(j, "usage"), false);
	} else if (strcmp(t, "content_block_delta") == 0) {
		n->text = anthropic_native_has_text(json_object_get(j, "delta"));
	} else if (strcmp(t, "content_block_start") == 0) {
		n->text = anthropic_native_has_text(json_object_get(j, "content_block"));
	} else if (strcmp(t, "message_stop") == 0) {
		n->stopped = true;
	} else if (strcmp(t, "error") == 0) {
		anthropic_native_error(n, j);
	}
	json_decref(j);
	return 0;
}

int
anthropic_native_response(struct anthropic_native *n, const char *json, size_t len,
    char *cause, size_t cause_len)
{
	json_t *j = json_loadb(json, len, 0, NULL);

	n->text = false;
	if (!json_is_object(j)) {
		snprintf(cause, cause_len, "the reply is not a JSON object");
		json_decref(j);
		return -1;
	}
	if (translate_is(json_object_get(j, "type"), "error") || json_object_get(j, "error") != NULL) {
		anthropic_native_error(n, j);
	} else {
		json_t *c, *b;
		size_t i;
		anthropic_native_usage(n, json_object_get(j, "usage"), true);
		anthropic_native_set(&n->model, json_object_get(j, "model"));
		anthropic_native_set(&n->stop_reason, json_object_get(j, "stop_reason"));
		c = json_object_get(j, "content");
		json_array_foreach(c, i, b)
			if (anthropic_native_has_text(b) || json_object_size(json_object_get(b, "input")) > 0)
				n->text = true;
		n->stopped = true;
	}
	json_decref(j);
	return 0;
}

void
anthropic_native_clear(struct anthropic_native *n)
{
	free(n->model);
	free(n->stop_reason);
	free(n->error_type);
	free(n->error_message);
	memset(n, 0, sizeof *n);
}

char *
anthropic_native_body(const char *body, size_t len, const char *model, int64_t max_tokens,
    char *cause, size_t cause_len)
{
	json_t *j = json_loadb(body, len, JSON_ALLOW_NUL, NULL);
	char *out;

	if (!json_is_object(j)) {
		snprintf(cause, cause_len, "the body is not a JSON object");
		json_decref(j);
		return NULL;
	}
	if ((model != NULL && json_object_set_new(j, "model", json_string(model)) != 0) ||
	    (max_tokens > 0 && json_object_set_new(j, "max_tokens",
	    json_integer(max_tokens)) != 0)) {
		snprintf(cause, cause_len, "model is not valid UTF-8, or out of memory");
		json_decref(j);
		return NULL;
	}
	if (max_tokens <= 0)
		json_object_del(j, "max_tokens");
	if ((out = json_dumps(j, JSON_COMPACT)) == NULL)
		snprintf(cause, cause_len, "out of memory");
	json_decref(j);
	return out;
}
