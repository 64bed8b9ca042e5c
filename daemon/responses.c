/* OpenAI's Responses API: bodies into chat requests, chat replies into responses and events. */
#include "config.h"

#include <sys/types.h>

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <event2/buffer.h>
#include <jansson.h>

#include "daemon/api_body.h"
#include "daemon/openai.h"
#include "daemon/responses.h"
#include "daemon/translate.h"

/* A Responses body being turned into a chat request. */
struct responses_parse {
	struct request *rq;
	struct chat_request *cr;
	size_t cap;
	json_t *extra;
	json_t *names;              /* chat name -> how the client names the tool */
	json_t *calls;              /* tool calls of the assistant message calls_for */
	ssize_t calls_for;          /* that message's index, or -1 */
	struct responses_error *err;
};

/* Fill err: param (may be "") and a message naming it. */
static void __attribute__((format(printf, 3, 4)))
responses_fail(struct responses_error *err, const char *param, const char *fmt, ...)
{
	char what[200];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(what, sizeof what, fmt, ap);
	va_end(ap);
	snprintf(err->param, sizeof err->param, "%s", param);
	if (param[0] != '\0')
		snprintf(err->message, sizeof err->message, "%s: %s", param, what);
	else
		snprintf(err->message, sizeof err->message, "%s", what);
}

static int
responses_nomem(struct responses_error *err)
{
	responses_fail(err, "", "out of memory");
	return -1;
}

/* Set a key of the chat's extra (v stolen). */
static int
responses_extra(struct responses_parse *rp, const char *key, json_t *v)
{
	if (v == NULL || (rp->extra == NULL && (rp->extra = json_object()) == NULL)) {
		json_decref(v);
		return responses_nomem(rp->err);
	}
	return json_object_set_new(rp->extra, key, v) == 0 ? 0 : responses_nomem(rp->err);
}

/* Give the pending tool calls to their assistant message. */
static int
responses_flush_calls(struct responses_parse *rp)
{
	struct chat_message *m;

	if (rp->calls_for < 0)
		return 0;
	m = &rp->cr->messages[rp->calls_for];
	rp->calls_for = -1;
	if (json_array_size(rp->calls) == 0)
		return 0;
	if (translate_raw_set(&m->tool_calls, rp->calls) == -1) {
		responses_fail(rp->err, "input", "a function call cannot be passed on");
		return -1;
	}
	json_array_clear(rp->calls);
	if (m->content != NULL && m->content_len == 0 && m->content[0] == '\0') {
		free(m->content);
		m->content = NULL;
	}
	return 0;
}

/* A new message (the pending calls given to theirs first). */
static struct chat_message *
responses_message_add(struct responses_parse *rp, const char *role)
{
	struct chat_message *m;

	if (responses_flush_calls(rp) == -1)
		return NULL;
	if ((m = translate_message_add(rp->cr, &rp->cap, role)) == NULL)
		responses_nomem(rp->err);
	return m;
}

/* A string or text parts, as text; -1 with err naming param otherwise. */
static int
responses_text(struct responses_parse *rp, json_t *v, struct translate_text *t, const char *param)
{
	char sub[128];
	size_t k;
	json_t *part, *type;

	if (json_is_string(v))
		return translate_text_add_json(t, v, NULL) == -1 ? responses_nomem(rp->err) : 0;
	if (!json_is_array(v)) {
		responses_fail(rp->err, param, "must be a string or an array of content parts");
		return -1;
	}
	json_array_foreach(v, k, part) {
		snprintf(sub, sizeof sub, "%s[%zu]", param, k);
		type = json_object_get(part, "type");
		if (translate_is(type, "input_text") || translate_is(type, "output_text") ||
		    translate_is(type, "text") || translate_is(type, "summary_text") ||
		    translate_is(type, "reasoning_text")) {
			if (!json_is_string(json_object_get(part, "text"))) {
				responses_fail(rp->err, sub, "a text part needs a string text");
				return -1;
			}
			if (translate_text_add_json(t, json_object_get(part, "text"), "\n") == -1)
				return responses_nomem(rp->err);
		} else if (translate_is(type, "refusal")) {
			if (!json_is_string(json_object_get(part, "refusal"))) {
				responses_fail(rp->err, sub, "a refusal part needs a string refusal");
				return -1;
			}
			if (translate_text_add_json(t, json_object_get(part, "refusal"), "\n") == -1)
				return responses_nomem(rp->err);
		} else if (json_is_string(type)) {
			responses_fail(rp->err, sub, "%.40s parts are not supported: the model server "
			    "is sent text only", json_string_value(type));
			return -1;
		} else {
			responses_fail(rp->err, sub, "a content part must be an object with a type");
			return -1;
		}
	}
	if (!t->any && translate_text_add(t, "", 0, NULL) == -1)
		return responses_nomem(rp->err);
	return 0;
}

/* A message item. */
static int
responses_message(struct responses_parse *rp, json_t *item, const char *param)
{
	struct translate_text t = { 0 };
	struct chat_message *m;
	json_t *role = json_object_get(item, "role");
	const char *r;
	char sub[128];

	if (translate_is(role, "developer") || translate_is(role, "system"))
		r = "system";
	else if (translate_is(role, "user") || translate_is(role, "assistant"))
		r = json_string_value(role);
	else {
		snprintf(sub, sizeof sub, "%s.role", param);
		responses_fail(rp->err, sub, "must be user, assistant, system or developer");
		return -1;
	}
	snprintf(sub, sizeof sub, "%s.content", param);
	if (responses_text(rp, json_object_get(item, "content"), &t, sub) == -1) {
		translate_text_clear(&t);
		return -1;
	}
	if ((m = responses_message_add(rp, r)) == NULL) {
		translate_text_clear(&t);
		return -1;
	}
	translate_text_move(&t, m);
	if (strcmp(r, "assistant") == 0)
		rp->calls_for = (ssize_t)(rp->cr->n_messages - 1);
	return 0;
}

/* A string without NUL, or NULL. */
static const char *
responses_name(json_t *v)
{
	if (!json_is_string(v) || json_string_length(v) == 0 ||
	    strlen(json_string_value(v)) != json_string_length(v))
		return NULL;
	return json_string_value(v);
}

/* A function_call or custom_tool_call item: a call of the assistant message before it. */
static int
responses_call(struct responses_parse *rp, json_t *item, bool custom, const char *param)
{
	const char *id = responses_name(json_object_get(item, "call_id"));
	const char *name = responses_name(json_object_get(item, "name"));
	const char *space = responses_name(json_object_get(item, "namespace"));
	json_t *args = json_object_get(item, custom ? "input" : "arguments");
	char *flat = NULL, *text = NULL;
	int rc = -1;

	if (id == NULL || name == NULL) {
		responses_fail(rp->err, param, "a %s needs a call_id and a name",
		    custom ? "custom_tool_call" : "function_call");
		return -1;
	}
	if (args != NULL && !json_is_null(args) && !json_is_string(args)) {
		responses_fail(rp->err, param, "%s must be a string", custom ? "input" : "arguments");
		return -1;
	}
	if (custom) {
		json_t *in = json_is_string(args) ? json_incref(args) : json_string("");
		json_t *o = in != NULL ? json_pack("{s:o}", "input", in) : NULL;
		text = o != NULL ? json_dumps(o, JSON_COMPACT) : NULL;
		json_decref(o);
	} else
		text = strndup(json_is_string(args) && json_string_length(args) > 0 ?
		    json_string_value(args) : "{}", json_is_string(args) &&
		    json_string_length(args) > 0 ? json_string_length(args) : 2);
	if (text == NULL || (space != NULL &&
	    asprintf(&flat, "%s" RESPONSES_NAMESPACE_SEP "%s", space, name) == -1)) {
		flat = NULL;
		responses_nomem(rp->err);
		goto out;
	}
	if (rp->calls_for < 0 || (size_t)rp->calls_for != rp->cr->n_messages - 1) {
		if (responses_message_add(rp, "assistant") == NULL)
			goto out;
		rp->calls_for = (ssize_t)(rp->cr->n_messages - 1);
	}
	if (translate_tool_call_add(rp->calls, id, flat != NULL ? flat : name, text) == -1) {
		responses_nomem(rp->err);
		goto out;
	}
	rc = 0;
out:
	free(flat);
	free(text);
	return rc;
}

/* A function_call_output or custom_tool_call_output item: a "tool" message. */
static int
responses_call_output(struct responses_parse *rp, json_t *item, const char *param)
{
	struct translate_text t = { 0 };
	struct chat_message *m;
	const char *id = responses_name(json_object_get(item, "call_id"));
	json_t *output = json_object_get(item, "output");
	char sub[128];

	if (id == NULL) {
		responses_fail(rp->err, param, "a call's output needs a call_id");
		return -1;
	}
	snprintf(sub, sizeof sub, "%s.output", param);
	if ((output == NULL || json_is_null(output) ? translate_text_add(&t, "", 0, NULL) :
	    responses_text(rp, output, &t, sub)) == -1) {
		translate_text_clear(&t);
		return rp->err->message[0] != '\0' ? -1 : responses_nomem(rp->err);
	}
	if ((m = responses_message_add(rp, "tool")) == NULL ||
	    (m->tool_call_id = strdup(id)) == NULL) {
		translate_text_clear(&t);
		return rp->err->message[0] != '\0' ? -1 : responses_nomem(rp->err);
	}
	translate_text_move(&t, m);
	return 0;
}

/* `input`: a string, or items. */
static int
responses_input(struct responses_parse *rp, json_t *v)
{
	struct translate_text t = { 0 };
	struct chat_message *m;
	char param[64];
	size_t i;
	json_t *item, *type;

	if (json_is_string(v)) {
		if (translate_text_add_json(&t, v, NULL) == -1 ||
		    (m = responses_message_add(rp, "user")) == NULL) {
			translate_text_clear(&t);
			return rp->err->message[0] != '\0' ? -1 : responses_nomem(rp->err);
		}
		translate_text_move(&t, m);
		return 0;
	}
	if (!json_is_array(v) || json_array_size(v) == 0) {
		responses_fail(rp->err, "input", "must be a string or a non-empty array of items");
		return -1;
	}
	json_array_foreach(v, i, item) {
		snprintf(param, sizeof param, "input[%zu]", i);
		type = json_object_get(item, "type");
		if (!json_is_object(item)) {
			responses_fail(rp->err, param, "an item must be an object");
			return -1;
		}
		if (type == NULL || json_is_null(type) || translate_is(type, "message")) {
			if (responses_message(rp, item, param) == -1)
				return -1;
		} else if (translate_is(type, "function_call") ||
		    translate_is(type, "custom_tool_call")) {
			if (responses_call(rp, item, translate_is(type, "custom_tool_call"), param) == -1)
				return -1;
		} else if (translate_is(type, "function_call_output") ||
		    translate_is(type, "custom_tool_call_output")) {
			if (responses_call_output(rp, item, param) == -1)
				return -1;
		} else if (translate_is(type, "reasoning")) {
			continue;       /* earlier reasoning is not sent back */
		} else if (translate_is(type, "item_reference")) {
			responses_fail(rp->err, param, "item_reference needs stored items: none are "
			    "kept here, send the items themselves");
			return -1;
		} else {
			char sub[80];
			snprintf(sub, sizeof sub, "%s.type", param);
			responses_fail(rp->err, sub, "unsupported input item type \"%.40s\"",
			    json_is_string(type) ? json_string_value(type) : "?");
			return -1;
		}
	}
	return responses_flush_calls(rp);
}

/* One function tool (or a namespace's) as a chat function tool appended to tools. */
static int
responses_function(struct responses_parse *rp, json_t *tools, json_t *t, const char *space,
    const char *param)
{
	const char *name = responses_name(json_object_get(t, "name"));
	json_t *desc = json_object_get(t, "description"), *params = json_object_get(t, "parameters");
	json_t *fn, *origin = NULL;
	bool custom = translate_is(json_object_get(t, "type"), "custom");
	char *flat = NULL;

	if (name == NULL) {
		responses_fail(rp->err, param, "a tool needs a name");
		return -1;
	}
	if (!custom && params != NULL && !json_is_null(params) && !json_is_object(params)) {
		responses_fail(rp->err, param, "parameters must be an object");
		return -1;
	}
	if (space != NULL && asprintf(&flat, "%s" RESPONSES_NAMESPACE_SEP "%s", space, name) == -1)
		return responses_nomem(rp->err);
	if ((fn = json_pack("{s:s}", "name", flat != NULL ? flat : name)) == NULL)
		goto nomem;
	if (custom) {
		json_t *def = json_object_get(json_object_get(t, "format"), "definition");
		char *d = NULL;
		if (asprintf(&d, "%s%s%s", json_is_string(desc) ? json_string_value(desc) : "",
		    json_is_string(def) ? "\n\nThe input follows this grammar:\n" : "",
		    json_is_string(def) ? json_string_value(def) : "") == -1)
			goto nomem;
		json_object_set_new(fn, "description", json_string(d));
		free(d);
		params = json_pack("{s:s, s:{s:{s:s}}, s:[s]}", "type", "object", "properties",
		    "input", "type", "string", "required", "input");
	} else {
		if (json_is_string(desc))
			json_object_set(fn, "description", desc);
		params = json_is_object(params) ? json_incref(params) :
		    json_pack("{s:s, s:{}}", "type", "object", "properties");
	}
	if (json_object_set_new(fn, "parameters", params) != 0 ||
	    (!custom && json_is_true(json_object_get(t, "strict")) &&
	    json_object_set_new(fn, "strict", json_true()) != 0))
		goto nomem;
	if (custom || space != NULL) {
		origin = json_pack("{s:s}", "name", name);
		if (origin == NULL || (space != NULL &&
		    json_object_set_new(origin, "namespace", json_string(space)) != 0) ||
		    (custom && json_object_set_new(origin, "custom", json_true()) != 0) ||
		    json_object_set_new(rp->names, flat != NULL ? flat : name, origin) != 0) {
			origin = NULL;
			goto nomem;
		}
	}
	free(flat);
	return json_array_append_new(tools, json_pack("{s:s, s:o}", "type", "function",
	    "function", fn)) == 0 ? 0 : responses_nomem(rp->err);
nomem:
	json_decref(fn);
	free(flat);
	return responses_nomem(rp->err);
}

/* `tools`: function, custom and namespace tools; hosted ones left out. */
static int
responses_tools(struct responses_parse *rp, json_t *v)
{
	json_t *tools, *t, *type, *sub;
	char param[64], subp[96];
	size_t i, k;

	if (v == NULL || json_is_null(v))
		return 0;
	if (!json_is_array(v)) {
		responses_fail(rp->err, "tools", "must be an array of tools");
		return -1;
	}
	if ((tools = json_array()) == NULL)
		return responses_nomem(rp->err);
	json_array_foreach(v, i, t) {
		snprintf(param, sizeof param, "tools[%zu]", i);
		type = json_object_get(t, "type");
		if (!json_is_object(t) || !json_is_string(type)) {
			responses_fail(rp->err, param, "a tool must be an object with a type");
			goto fail;
		}
		if (translate_is(type, "function") || translate_is(type, "custom")) {
			if (responses_function(rp, tools, t, NULL, param) == -1)
				goto fail;
		} else if (translate_is(type, "namespace")) {
			const char *space = responses_name(json_object_get(t, "name"));
			if (space == NULL || !json_is_array(json_object_get(t, "tools"))) {
				responses_fail(rp->err, param, "a namespace needs a name and tools");
				goto fail;
			}
			json_array_foreach(json_object_get(t, "tools"), k, sub) {
				snprintf(subp, sizeof subp, "%s.tools[%zu]", param, k);
				if (!translate_is(json_object_get(sub, "type"), "function") &&
				    !translate_is(json_object_get(sub, "type"), "custom"))
					continue;
				if (responses_function(rp, tools, sub, space, subp) == -1)
					goto fail;
			}
		}
		/* hosted tools: the model server cannot run them */
	}
	if (json_array_size(tools) == 0) {
		json_decref(tools);
		return 0;
	}
	return responses_extra(rp, "tools", tools);
fail:
	json_decref(tools);
	return -1;
}

/* tool_choice as chat's, when there are tools. */
static int
responses_tool_choice(struct responses_parse *rp, json_t *v)
{
	json_t *type = json_object_get(v, "type"), *choice = NULL;
	const char *name = responses_name(json_object_get(v, "name"));

	if (v == NULL || json_is_null(v))
		return 0;
	if (translate_is(v, "auto") || translate_is(v, "none") || translate_is(v, "required"))
		choice = json_incref(v);
	else if ((translate_is(type, "function") || translate_is(type, "custom")) && name != NULL)
		choice = json_pack("{s:s, s:{s:s}}", "type", "function", "function", "name", name);
	else if (translate_is(type, "allowed_tools") &&
	    translate_is(json_object_get(v, "mode"), "required"))
		choice = json_string("required");
	else if (json_is_string(type))
		choice = json_string("auto");   /* a hosted tool or a subset: let the model choose */
	else {
		responses_fail(rp->err, "tool_choice", "must be \"auto\", \"none\", \"required\" or "
		    "an object with a type");
		return -1;
	}
	if (json_object_get(rp->extra, "tools") == NULL) {
		json_decref(choice);
		return 0;
	}
	return responses_extra(rp, "tool_choice", choice);
}

/* text.format as response_format. */
static int
responses_format(struct responses_parse *rp, json_t *text)
{
	json_t *f = json_object_get(text, "format"), *type = json_object_get(f, "type");

	if (translate_is(type, "json_object"))
		return responses_extra(rp, "response_format", json_pack("{s:s}", "type",
		    "json_object"));
	if (translate_is(type, "json_schema") && json_is_object(json_object_get(f, "schema"))) {
		json_t *js = json_pack("{s:s, s:O}", "name", json_is_string(json_object_get(f,
		    "name")) ? json_string_value(json_object_get(f, "name")) : "output",
		    "schema", json_object_get(f, "schema"));
		if (js != NULL && json_is_boolean(json_object_get(f, "strict")))
			json_object_set(js, "strict", json_object_get(f, "strict"));
		return responses_extra(rp, "response_format", js == NULL ? NULL :
		    json_pack("{s:s, s:o}", "type", "json_schema", "json_schema", js));
	}
	return 0;
}

/* The request's fields a response object repeats. */
static json_t *
responses_echo(json_t *body, int64_t max_tokens)
{
	static const char *const keys[] = { "instructions", "temperature", "top_p", "tool_choice",
	    "parallel_tool_calls", "text", "reasoning", "metadata", "tools" };
	json_t *e = json_pack("{s:n, s:n, s:n, s:s, s:b, s:{s:{s:s}}, s:{s:n, s:n}, s:{}, s:[]}",
	    "instructions", "temperature", "top_p", "tool_choice", "auto", "parallel_tool_calls", 1,
	    "text", "format", "type", "text", "reasoning", "effort", "summary", "metadata", "tools");
	json_t *v;

	if (e == NULL)
		return NULL;
	for (size_t i = 0; i < sizeof keys / sizeof keys[0]; i++)
		if ((v = json_object_get(body, keys[i])) != NULL && !json_is_null(v))
			json_object_set(e, keys[i], v);
	json_object_set_new(e, "max_output_tokens", max_tokens > 0 ?
	    json_integer(max_tokens) : json_null());
	return e;
}

void
responses_meta_clear(struct responses_meta *meta)
{
	json_decref(meta->echo);
	json_decref(meta->names);
	memset(meta, 0, sizeof *meta);
}

struct request *
responses_parse(const char *body, size_t len, struct responses_meta *meta,
    struct responses_error *err)
{
	struct responses_parse rp = { .err = err, .calls_for = -1 };
	struct chat_request *cr;
	json_t *j, *v;
	struct chat_message *m;

	memset(err, 0, sizeof *err);
	memset(meta, 0, sizeof *meta);
	if ((j = api_body_json(body, len, err->message, sizeof err->message)) == NULL)
		return NULL;
	if ((rp.rq = calloc(1, sizeof *rp.rq)) == NULL || (rp.names = json_object()) == NULL ||
	    (rp.calls = json_array()) == NULL) {
		responses_nomem(err);
		goto fail;
	}
	message_request_init(rp.rq, OP_CHAT);
	cr = rp.cr = &rp.rq->u.chat;
	cr->stream = false;

	/* stateless: what would need stored responses is refused */
	if ((v = json_object_get(j, "previous_response_id")) != NULL && !json_is_null(v)) {
		responses_fail(err, "previous_response_id", "responses are not stored here: send "
		    "the whole conversation in input");
		goto fail;
	}
	if ((v = json_object_get(j, "conversation")) != NULL && !json_is_null(v)) {
		responses_fail(err, "conversation", "conversations are not stored here: send the "
		    "whole conversation in input");
		goto fail;
	}
	if ((v = json_object_get(j, "prompt")) != NULL && !json_is_null(v)) {
		responses_fail(err, "prompt", "stored prompts are not supported: send instructions "
		    "and input");
		goto fail;
	}
	if (json_is_true(json_object_get(j, "background"))) {
		responses_fail(err, "background", "background responses need storage, which is not "
		    "kept here");
		goto fail;
	}

	if ((v = json_object_get(j, "instructions")) != NULL && !json_is_null(v)) {
		if (!json_is_string(v)) {
			responses_fail(err, "instructions", "must be a string");
			goto fail;
		}
		if (json_string_length(v) > 0) {
			struct translate_text t = { 0 };
			if (translate_text_add_json(&t, v, NULL) == -1 ||
			    (m = translate_message_add(cr, &rp.cap, "system")) == NULL) {
				translate_text_clear(&t);
				responses_nomem(err);
				goto fail;
			}
			translate_text_move(&t, m);
		}
	}
	if ((v = json_object_get(j, "input")) == NULL || json_is_null(v)) {
		responses_fail(err, "input", "is required");
		goto fail;
	}
	if (responses_input(&rp, v) == -1 ||
	    responses_tools(&rp, json_object_get(j, "tools")) == -1 ||
	    responses_tool_choice(&rp, json_object_get(j, "tool_choice")) == -1 ||
	    responses_format(&rp, json_object_get(j, "text")) == -1)
		goto fail;
	if ((v = json_object_get(j, "parallel_tool_calls")) != NULL && !json_is_null(v)) {
		if (!json_is_boolean(v)) {
			responses_fail(err, "parallel_tool_calls", "must be true or false");
			goto fail;
		}
		if (json_object_get(rp.extra, "tools") != NULL &&
		    responses_extra(&rp, "parallel_tool_calls", json_incref(v)) == -1)
			goto fail;
	}
	if ((v = json_object_get(j, "model")) != NULL && !json_is_null(v) &&
	    (cr->model = api_body_strdup(v)) == NULL) {
		responses_fail(err, "model", "must be a string");
		goto fail;
	}
	if ((v = json_object_get(j, "stream")) != NULL && !json_is_null(v)) {
		if (!json_is_boolean(v)) {
			responses_fail(err, "stream", "must be true or false");
			goto fail;
		}
		cr->stream = json_is_true(v);
	}
	if ((v = json_object_get(j, "max_output_tokens")) != NULL && !json_is_null(v) &&
	    !translate_max_tokens(v, &cr->max_tokens)) {
		responses_fail(err, "max_output_tokens", "must be an integer from 1 to %d",
		    MESSAGE_MAX_TOKENS);
		goto fail;
	}
	if ((v = json_object_get(j, "temperature")) != NULL && !json_is_null(v)) {
		if (!json_is_number(v)) {
			responses_fail(err, "temperature", "must be a number");
			goto fail;
		}
		cr->temperature = json_number_value(v);
	}
	if ((v = json_object_get(j, "top_p")) != NULL && !json_is_null(v)) {
		if (!json_is_number(v)) {
			responses_fail(err, "top_p", "must be a number");
			goto fail;
		}
		cr->top_p = json_number_value(v);
	}
	if (rp.extra != NULL && translate_raw_set(&cr->extra, rp.extra) == -1) {
		responses_fail(err, "tools", "cannot be passed on to the model server");
		goto fail;
	}
	if ((meta->echo = responses_echo(j, cr->max_tokens)) == NULL) {
		responses_nomem(err);
		goto fail;
	}
	meta->stream = cr->stream;
	meta->names = rp.names;
	json_decref(rp.extra);
	json_decref(rp.calls);
	json_decref(j);
	return rp.rq;
fail:
	if (err->message[0] == '\0')
		responses_nomem(err);
	json_decref(rp.extra);
	json_decref(rp.names);
	json_decref(rp.calls);
	json_decref(j);
	responses_meta_clear(meta);
	if (rp.rq != NULL)
		message_request_free(rp.rq);
	return NULL;
}

/* --- replies ------------------------------------------------------------ */

json_t *
responses_error_json(const char *code, const char *message)
{
	const char *c = code != NULL ? code : "internal";
	json_t *e;

	if (strcmp(c, "budget_exceeded") == 0)
		c = "insufficient_quota";
	else if (strcmp(c, "rate_limited") == 0)
		c = "rate_limit_exceeded";
	e = json_pack("{s:s, s:s}", "code", c, "message", message != NULL ? message : "error");
	return e != NULL ? e : json_pack("{s:s, s:s}", "code", c, "message", "error");
}

/* usage {input_tokens, input_tokens_details, output_tokens, output_tokens_details, total_tokens}. */
static json_t *
responses_usage_json(const struct usage *u)
{
	return json_pack("{s:I, s:{s:i}, s:I, s:{s:i}, s:I}",
	    "input_tokens", (json_int_t)u->prompt_tokens, "input_tokens_details", "cached_tokens", 0,
	    "output_tokens", (json_int_t)u->completion_tokens, "output_tokens_details",
	    "reasoning_tokens", 0, "total_tokens", (json_int_t)(u->prompt_tokens +
	    u->completion_tokens));
}

/* A response object: status, output (stolen), usage (stolen, may be NULL), error (stolen). */
static json_t *
responses_object(const char *id, const char *model, int64_t created_at, json_t *echo,
    const char *status, json_t *output, json_t *usage, json_t *error, const char *incomplete)
{
	json_t *r = json_pack("{s:s, s:s, s:I, s:s, s:b, s:o, s:o, s:s, s:o, s:n, s:b, s:s, "
	    "s:o, s:n}", "id", id, "object", "response", "created_at", (json_int_t)created_at,
	    "status", status, "background", 0, "error", error != NULL ? error : json_null(),
	    "incomplete_details", incomplete != NULL ? json_pack("{s:s}", "reason", incomplete) :
	    json_null(), "model", model, "output", output, "previous_response_id", "store", 0,
	    "truncation", "disabled", "usage", usage != NULL ? usage : json_null(), "user");

	if (r != NULL && echo != NULL)
		json_object_update_missing(r, echo);
	return r;
}

/* The ids of an item: PREFIX_ID_N. */
static json_t *
responses_item_id(const char *prefix, const char *id, size_t n)
{
	char buf[160];

	snprintf(buf, sizeof buf, "%s_%s_%zu", prefix, id, n);
	return json_string(buf);
}

/* An output_text part. */
static json_t *
responses_text_part(const char *text, size_t len)
{
	return json_pack("{s:s, s:s%, s:[], s:[]}", "type", "output_text", "text", text, len,
	    "annotations", "logprobs");
}

/* A whole message item. */
static json_t *
responses_message_item(json_t *id, const char *status, const char *text, size_t len)
{
	return json_pack("{s:o, s:s, s:s, s:s, s:[o]}", "id", id, "type", "message", "status",
	    status, "role", "assistant", "content", responses_text_part(text, len));
}

/* A whole reasoning item. */
static json_t *
responses_reasoning_item(json_t *id, const char *text, size_t len)
{
	return json_pack("{s:o, s:s, s:[], s:[{s:s, s:s%}], s:n}", "id", id, "type", "reasoning",
	    "summary", "content", "type", "reasoning_text", "text", text, len, "encrypted_content");
}

/* How the client names a chat function: its name and namespace, and whether it is custom. */
static void
responses_origin(json_t *names, const char *chat_name, const char **name, const char **space,
    bool *custom)
{
	json_t *o = json_object_get(names, chat_name);

	*name = chat_name;
	*space = NULL;
	*custom = false;
	if (!json_is_object(o))
		return;
	*name = json_string_value(json_object_get(o, "name"));
	*space = json_string_value(json_object_get(o, "namespace"));
	*custom = json_is_true(json_object_get(o, "custom"));
	if (*name == NULL)
		*name = chat_name;
}

/* A custom tool call's input: the "input" string of its arguments, or the arguments. */
static char *
responses_custom_input(const char *args, size_t len)
{
	json_t *j = json_loadb(args, len, 0, NULL), *in = json_object_get(j, "input");
	char *s = json_is_string(in) ? strndup(json_string_value(in), json_string_length(in)) :
	    strndup(args, len);

	json_decref(j);
	return s;
}

/* A whole call item (function_call or custom_tool_call); status completed. */
static json_t *
responses_call_item(json_t *id, const char *call_id, const char *name, const char *space,
    bool custom, const char *args, size_t len, const char *status)
{
	json_t *item;

	if (custom) {
		char *input = responses_custom_input(args, len);
		if (input == NULL) {
			json_decref(id);
			return NULL;
		}
		item = json_pack("{s:o, s:s, s:s, s:s, s:s, s:s}", "id", id, "type",
		    "custom_tool_call", "status", status, "call_id", call_id, "name", name,
		    "input", input);
		free(input);
	} else
		item = json_pack("{s:o, s:s, s:s, s:s%, s:s, s:s}", "id", id, "type", "function_call",
		    "status", status, "arguments", args, len, "call_id", call_id, "name", name);
	if (item != NULL && space != NULL)
		json_object_set_new(item, "namespace", json_string(space));
	return item;
}

int
responses_object_write(struct evbuffer *out, const char *id, const char *model,
    int64_t created_at, const struct responses_meta *meta, const struct done_reply *d)
{
	json_t *output = json_array(), *calls = NULL, *call, *obj;
	bool cut = d->finish_reason != NULL && strcmp(d->finish_reason, "length") == 0;
	size_t i, n = 0;
	char *text;

	if (output == NULL)
		return -1;
	if (d->reasoning != NULL && d->reasoning[0] != '\0')
		json_array_append_new(output, responses_reasoning_item(responses_item_id("rs", id,
		    n++), d->reasoning, strlen(d->reasoning)));
	if (d->content != NULL && d->content[0] != '\0')
		json_array_append_new(output, responses_message_item(responses_item_id("msg", id,
		    n++), cut ? "incomplete" : "completed", d->content, strlen(d->content)));
	if (d->tool_calls.data != NULL)
		calls = openai_msgpack_to_json(d->tool_calls.data, d->tool_calls.len);
	json_array_foreach(calls, i, call) {
		json_t *fn = json_object_get(call, "function"), *args = json_object_get(fn, "arguments");
		const char *chat_name = json_string_value(json_object_get(fn, "name"));
		const char *name, *space, *cid = json_string_value(json_object_get(call, "id"));
		bool custom;
		char gen[160];
		responses_origin(meta != NULL ? meta->names : NULL, chat_name != NULL ? chat_name : "",
		    &name, &space, &custom);
		snprintf(gen, sizeof gen, "call_%s_%zu", id, i);
		text = json_is_string(args) ? strndup(json_string_value(args),
		    json_string_length(args)) : json_is_object(args) ? json_dumps(args, JSON_COMPACT) :
		    strdup("");
		if (text != NULL)
			json_array_append_new(output, responses_call_item(responses_item_id(custom ?
			    "ctc" : "fc", id, n++), cid != NULL && cid[0] != '\0' ? cid : gen, name,
			    space, custom, text, strlen(text), "completed"));
		free(text);
	}
	json_decref(calls);
	obj = responses_object(id, model, created_at, meta != NULL ? meta->echo : NULL,
	    cut ? "incomplete" : "completed", output, responses_usage_json(&d->usage), NULL,
	    cut ? "max_output_tokens" : NULL);
	if (obj == NULL)
		return -1;
	text = json_dumps(obj, JSON_COMPACT);
	json_decref(obj);
	if (text == NULL)
		return -1;
	evbuffer_add(out, text, strlen(text));
	evbuffer_add(out, "\n", 1);
	free(text);
	return 0;
}

/* --- the stream --------------------------------------------------------- */

/*
 * One event (obj stolen) as OpenAI writes it: type first, then obj's
 * fields, then sequence_number; "event: T\ndata: J\n\n".
 */
static int
responses_event(struct responses_stream *s, struct evbuffer *out, const char *type, json_t *obj)
{
	json_t *e = obj != NULL ? json_pack("{s:s}", "type", type) : NULL;
	char *text;

	if (e == NULL || json_object_update(e, obj) != 0 ||
	    json_object_set_new(e, "sequence_number", json_integer(s->seq)) != 0 ||
	    (text = json_dumps(e, JSON_COMPACT)) == NULL) {
		json_decref(e);
		json_decref(obj);
		return -1;
	}
	json_decref(obj);
	obj = e;
	s->seq++;
	evbuffer_add_printf(out, "event: %s\ndata: ", type);
	evbuffer_add(out, text, strlen(text));
	evbuffer_add(out, "\n\n", 2);
	free(text);
	json_decref(obj);
	return 0;
}

/* The response as it stands, for a lifecycle event. */
static json_t *
responses_stream_object(struct responses_stream *s, const char *status, json_t *usage,
    json_t *error, const char *incomplete)
{
	json_t *output = json_deep_copy(s->output);

	if (output == NULL) {
		json_decref(usage);
		json_decref(error);
		return NULL;
	}
	return responses_object(s->id, s->model, s->created_at, s->echo, status, output, usage,
	    error, incomplete);
}

int
responses_stream_init(struct responses_stream *s, const char *id, const char *model,
    int64_t created_at, const struct responses_meta *meta)
{
	memset(s, 0, sizeof *s);
	s->created_at = created_at;
	if ((s->id = strdup(id)) == NULL || (s->model = strdup(model)) == NULL ||
	    (s->output = json_array()) == NULL) {
		responses_stream_clear(s);
		return -1;
	}
	if (meta != NULL) {
		s->echo = json_incref(meta->echo);
		s->names = json_incref(meta->names);
	}
	return 0;
}

void
responses_stream_clear(struct responses_stream *s)
{
	for (size_t i = 0; i < s->n_calls; i++) {
		free(s->calls[i].call_id);
		free(s->calls[i].name);
		free(s->calls[i].space);
		free(s->calls[i].args);
	}
	free(s->calls);
	free(s->id);
	free(s->model);
	free(s->text);
	json_decref(s->echo);
	json_decref(s->names);
	json_decref(s->output);
	memset(s, 0, sizeof *s);
}

void
responses_stream_begin(struct responses_stream *s, struct evbuffer *out)
{
	if (s->started)
		return;
	s->started = true;
	responses_event(s, out, "response.created", json_pack("{s:o}", "response",
	    responses_stream_object(s, "in_progress", NULL, NULL, NULL)));
	responses_event(s, out, "response.in_progress", json_pack("{s:o}", "response",
	    responses_stream_object(s, "in_progress", NULL, NULL, NULL)));
}

/* Append n bytes to a growing string. */
static int
responses_grow(char **p, size_t *len, const char *s, size_t n)
{
	char *q = realloc(*p, *len + n + 1);

	if (q == NULL)
		return -1;
	memcpy(q + *len, s, n);
	*len += n;
	q[*len] = '\0';
	*p = q;
	return 0;
}

/* The open item's id. */
static const char *
responses_open_id(struct responses_stream *s)
{
	return json_string_value(json_object_get(json_array_get(s->output, s->open_item), "id"));
}

/* A call's final events and item. */
static int
responses_call_close(struct responses_stream *s, struct responses_call *c, struct evbuffer *out)
{
	json_t *item = json_array_get(s->output, c->item), *done;
	const char *id = json_string_value(json_object_get(item, "id"));
	const char *args = c->args != NULL ? c->args : "";
	int rc = 0;

	c->closed = true;
	done = responses_call_item(json_incref(json_object_get(item, "id")), c->call_id, c->name,
	    c->space, c->custom, args, c->args_len, "completed");
	if (done == NULL)
		return -1;
	if (c->custom) {
		json_t *input = json_object_get(done, "input");
		rc = responses_event(s, out, "response.custom_tool_call_input.delta",
		    json_pack("{s:s, s:I, s:O}", "item_id", id, "output_index", (json_int_t)c->item,
		    "delta", input));
		if (rc == 0)
			rc = responses_event(s, out, "response.custom_tool_call_input.done",
			    json_pack("{s:s, s:I, s:O}", "item_id", id, "output_index",
			    (json_int_t)c->item, "input", input));
	} else
		rc = responses_event(s, out, "response.function_call_arguments.done",
		    json_pack("{s:s, s:I, s:s%, s:s}", "item_id", id, "output_index",
		    (json_int_t)c->item, "arguments", args, c->args_len, "name", c->name));
	if (rc == 0)
		rc = responses_event(s, out, "response.output_item.done", json_pack("{s:I, s:O}",
		    "output_index", (json_int_t)c->item, "item", done));
	json_array_set_new(s->output, c->item, done);
	return rc;
}

/* Finish the open item: its done events, and its final form in output. */
static int
responses_item_close(struct responses_stream *s, struct evbuffer *out, const char *status)
{
	json_t *item, *part;
	const char *id;
	const char *text = s->text != NULL ? s->text : "";
	bool reasoning = s->open == RESPONSES_ITEM_REASONING;
	int rc = 0;

	if (s->open == RESPONSES_ITEM_NONE)
		return 0;
	if (s->open == RESPONSES_ITEM_CALL) {
		s->open = RESPONSES_ITEM_NONE;
		for (size_t i = 0; i < s->n_calls; i++)
			if (s->calls[i].item == s->open_item && !s->calls[i].closed)
				return responses_call_close(s, &s->calls[i], out);
		return 0;
	}
	s->open = RESPONSES_ITEM_NONE;
	id = responses_open_id(s);
	part = reasoning ? json_pack("{s:s, s:s%}", "type", "reasoning_text", "text", text,
	    s->text_len) : responses_text_part(text, s->text_len);
	item = reasoning ? responses_reasoning_item(json_string(id), text, s->text_len) :
	    responses_message_item(json_string(id), status, text, s->text_len);
	if (part == NULL || item == NULL) {
		json_decref(part);
		json_decref(item);
		return -1;
	}
	rc = responses_event(s, out, reasoning ? "response.reasoning_text.done" :
	    "response.output_text.done", json_pack("{s:s, s:I, s:i, s:s%, s:[]}", "item_id", id,
	    "output_index", (json_int_t)s->open_item, "content_index", 0, "text", text,
	    s->text_len, "logprobs"));
	if (rc == 0)
		rc = responses_event(s, out, "response.content_part.done", json_pack("{s:s, s:I, "
		    "s:i, s:O}", "item_id", id, "output_index", (json_int_t)s->open_item,
		    "content_index", 0, "part", part));
	if (rc == 0)
		rc = responses_event(s, out, "response.output_item.done", json_pack("{s:I, s:O}",
		    "output_index", (json_int_t)s->open_item, "item", item));
	json_decref(part);
	json_array_set_new(s->output, s->open_item, item);
	free(s->text);
	s->text = NULL;
	s->text_len = 0;
	return rc;
}

/* Open a message or reasoning item: output_item.added, content_part.added. */
static int
responses_item_open(struct responses_stream *s, enum responses_item kind, struct evbuffer *out)
{
	bool reasoning = kind == RESPONSES_ITEM_REASONING;
	size_t n = json_array_size(s->output);
	json_t *id = responses_item_id(reasoning ? "rs" : "msg", s->id, n), *item;

	if (responses_item_close(s, out, "completed") == -1 || id == NULL) {
		json_decref(id);
		return -1;
	}
	item = reasoning ? json_pack("{s:O, s:s, s:[], s:[], s:n}", "id", id, "type", "reasoning",
	    "summary", "content", "encrypted_content") : json_pack("{s:O, s:s, s:s, s:s, s:[]}",
	    "id", id, "type", "message", "status", "in_progress", "role", "assistant", "content");
	if (item == NULL || json_array_append(s->output, item) != 0) {
		json_decref(item);
		json_decref(id);
		return -1;
	}
	s->open = kind;
	s->open_item = n;
	if (responses_event(s, out, "response.output_item.added", json_pack("{s:I, s:o}",
	    "output_index", (json_int_t)n, "item", item)) == -1 ||
	    responses_event(s, out, "response.content_part.added", json_pack("{s:O, s:I, s:i, s:o}",
	    "item_id", id, "output_index", (json_int_t)n, "content_index", 0, "part", reasoning ?
	    json_pack("{s:s, s:s}", "type", "reasoning_text", "text", "") :
	    responses_text_part("", 0))) == -1) {
		json_decref(id);
		return -1;
	}
	json_decref(id);
	return 0;
}

/* Text or reasoning appended to its item. */
static int
responses_stream_text(struct responses_stream *s, enum responses_item kind, const char *text,
    struct evbuffer *out)
{
	size_t n = strlen(text);

	if (n == 0)
		return 0;
	if (s->open != kind && responses_item_open(s, kind, out) == -1)
		return -1;
	if (responses_grow(&s->text, &s->text_len, text, n) == -1)
		return -1;
	if (kind == RESPONSES_ITEM_REASONING)
		return responses_event(s, out, "response.reasoning_text.delta", json_pack("{s:s, s:I, "
		    "s:i, s:s%}", "item_id", responses_open_id(s), "output_index",
		    (json_int_t)s->open_item, "content_index", 0, "delta", text, n));
	return responses_event(s, out, "response.output_text.delta", json_pack("{s:s, s:I, s:i, "
	    "s:s%, s:[]}", "item_id", responses_open_id(s), "output_index", (json_int_t)s->open_item,
	    "content_index", 0, "delta", text, n, "logprobs"));
}

/* One tool call fragment: a call item opened, or its arguments continued. */
static int
responses_stream_call(struct responses_stream *s, json_t *frag, struct evbuffer *out)
{
	json_t *fn = json_object_get(frag, "function"), *args = json_object_get(fn, "arguments");
	json_t *jid = json_object_get(frag, "id"), *item, *iid;
	struct responses_call *c = NULL, *grown;
	int64_t index;
	char *argtext = NULL;
	const char *text = NULL;
	size_t len = 0, i;
	int rc = 0;

	if (!json_is_object(frag))
		return 0;
	if (json_is_integer(json_object_get(frag, "index")))
		index = json_integer_value(json_object_get(frag, "index"));
	else if (json_string_length(jid) > 0 || s->n_calls == 0)
		index = s->n_calls > 0 ? s->calls[s->n_calls - 1].openai_index + 1 : 0;
	else
		index = s->calls[s->n_calls - 1].openai_index;
	for (i = 0; i < s->n_calls; i++)
		if (s->calls[i].openai_index == index)
			c = &s->calls[i];
	if (c == NULL) {
		const char *chat_name = json_string_value(json_object_get(fn, "name"));
		const char *name, *space;
		bool custom;
		char gen[160];
		if (responses_item_close(s, out, "completed") == -1 ||
		    (grown = realloc(s->calls, (s->n_calls + 1) * sizeof *grown)) == NULL)
			return -1;
		s->calls = grown;
		c = &s->calls[s->n_calls];
		memset(c, 0, sizeof *c);
		responses_origin(s->names, chat_name != NULL ? chat_name : "", &name, &space, &custom);
		snprintf(gen, sizeof gen, "call_%s_%zu", s->id, s->n_calls);
		c->openai_index = index;
		c->custom = custom;
		c->item = json_array_size(s->output);
		if ((c->call_id = strdup(json_string_length(jid) > 0 ? json_string_value(jid) :
		    gen)) == NULL || (c->name = strdup(name)) == NULL ||
		    (space != NULL && (c->space = strdup(space)) == NULL)) {
			free(c->call_id);
			free(c->name);
			return -1;
		}
		s->n_calls++;
		iid = responses_item_id(custom ? "ctc" : "fc", s->id, c->item);
		item = responses_call_item(iid, c->call_id, c->name, c->space, false, "", 0,
		    "in_progress");
		if (item != NULL && custom) {
			json_object_set_new(item, "type", json_string("custom_tool_call"));
			json_object_del(item, "arguments");
			json_object_set_new(item, "input", json_string(""));
		}
		if (item == NULL || json_array_append(s->output, item) != 0) {
			json_decref(item);
			return -1;
		}
		s->open = RESPONSES_ITEM_CALL;
		s->open_item = c->item;
		if (responses_event(s, out, "response.output_item.added", json_pack("{s:I, s:o}",
		    "output_index", (json_int_t)c->item, "item", item)) == -1)
			return -1;
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
	if (len > 0) {
		if (responses_grow(&c->args, &c->args_len, text, len) == -1)
			rc = -1;
		else if (c->closed) {
			/* a late fragment of a call already done: its item takes it in */
			json_t *done = responses_call_item(json_incref(json_object_get(json_array_get(
			    s->output, c->item), "id")), c->call_id, c->name, c->space, c->custom,
			    c->args, c->args_len, "completed");
			if (done == NULL || json_array_set_new(s->output, c->item, done) != 0)
				rc = -1;
		}
		if (rc == 0 && !c->custom)
			rc = responses_event(s, out, "response.function_call_arguments.delta",
			    json_pack("{s:O, s:I, s:s%}", "item_id", json_object_get(json_array_get(
			    s->output, c->item), "id"), "output_index", (json_int_t)c->item, "delta",
			    text, len));
	}
	free(argtext);
	return rc;
}

int
responses_stream_delta(struct responses_stream *s, const struct delta_reply *d,
    struct evbuffer *out)
{
	json_t *calls, *frag;
	size_t i;
	int rc = 0;

	if (s->ended)
		return 0;
	responses_stream_begin(s, out);
	if (d->reasoning != NULL &&
	    responses_stream_text(s, RESPONSES_ITEM_REASONING, d->reasoning, out) == -1)
		return -1;
	if (d->content != NULL && responses_stream_text(s, RESPONSES_ITEM_MESSAGE, d->content,
	    out) == -1)
		return -1;
	if (d->tool_calls.data == NULL)
		return 0;
	calls = openai_msgpack_to_json(d->tool_calls.data, d->tool_calls.len);
	if (json_is_object(calls))
		rc = responses_stream_call(s, calls, out);
	json_array_foreach(calls, i, frag)
		if ((rc = responses_stream_call(s, frag, out)) == -1)
			break;
	json_decref(calls);
	return rc;
}

int
responses_stream_done(struct responses_stream *s, const struct done_reply *d,
    struct evbuffer *out)
{
	bool cut = d->finish_reason != NULL && strcmp(d->finish_reason, "length") == 0;

	if (s->ended)
		return 0;
	responses_stream_begin(s, out);
	s->ended = true;
	if (responses_item_close(s, out, cut ? "incomplete" : "completed") == -1)
		return -1;
	/* calls left open by a late fragment */
	for (size_t i = 0; i < s->n_calls; i++)
		if (!s->calls[i].closed && responses_call_close(s, &s->calls[i], out) == -1)
			return -1;
	return responses_event(s, out, cut ? "response.incomplete" : "response.completed",
	    json_pack("{s:o}", "response", responses_stream_object(s, cut ? "incomplete" :
	    "completed", responses_usage_json(&d->usage), NULL, cut ? "max_output_tokens" : NULL)));
}

void
responses_stream_error(struct responses_stream *s, const char *code, const char *message,
    struct evbuffer *out)
{
	if (s->ended)
		return;
	responses_stream_begin(s, out);
	s->ended = true;
	responses_event(s, out, "response.failed", json_pack("{s:o}", "response",
	    responses_stream_object(s, "failed", NULL, responses_error_json(code, message), NULL)));
}
