/* The HTTP front's request bodies: bytes -> JSON -> struct request, or what was wrong. */
#include "config.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>
#include <msgpack.h>

#include "daemon/api_body.h"
#include "daemon/openai.h"

/* A body of len bytes as a JSON object; NULL with cause. */
json_t *
api_body_json(const char *body, size_t len, char *cause, size_t cause_len)
{
	json_error_t err;
	json_t *j;

	/* U+0000 is a character like any other in what is counted and sent on (as msgpack's) */
	j = json_loadb(body, len, JSON_REJECT_DUPLICATES | JSON_ALLOW_NUL, &err);
	if (j == NULL) {
		snprintf(cause, cause_len, "the body is not valid JSON: %s at line %d column %d",
		    err.text, err.line, err.column);
		return NULL;
	}
	if (!json_is_object(j)) {
		snprintf(cause, cause_len, "the body must be a JSON object");
		json_decref(j);
		return NULL;
	}
	return j;
}

/* A string with no NUL in it, copied; NULL when v is not one. */
char *
api_body_strdup(json_t *v)
{
	if (!json_is_string(v) || strlen(json_string_value(v)) != json_string_length(v))
		return NULL;
	return strdup(json_string_value(v));
}

/*
 * A message's content: a string, null, or text parts joined, which may hold
 * NUL (*out_len its bytes, as chat_message's content_len); -1 with cause
 * otherwise.
 */
static int
api_body_content(json_t *v, char **out, size_t *out_len, char *cause, size_t cause_len, size_t i)
{
	size_t k, n = 0, total = 0;
	json_t *part, *type, *text;
	char *p;

	*out = NULL;
	*out_len = 0;
	if (v == NULL || json_is_null(v))
		return 0;
	if (json_is_string(v))
		total = json_string_length(v);
	else if (!json_is_array(v)) {
		snprintf(cause, cause_len, "messages[%zu].content must be a string or an array of "
		    "parts", i);
		return -1;
	} else {
		json_array_foreach(v, k, part) {
			type = json_object_get(part, "type");
			text = json_object_get(part, "text");
			if (!json_is_string(type) || json_string_length(type) != 4 ||
			    strcmp(json_string_value(type), "text") != 0 || !json_is_string(text)) {
				snprintf(cause, cause_len, "messages[%zu].content[%zu]: only parts of "
				    "type \"text\" with a string text are supported", i, k);
				return -1;
			}
			total += json_string_length(text);     /* bounded by the body's length */
		}
	}
	if ((p = malloc(total + 1)) == NULL) {
		snprintf(cause, cause_len, "out of memory");
		return -1;
	}
	if (json_is_string(v))
		memcpy(p, json_string_value(v), total);
	else {
		json_array_foreach(v, k, part) {
			text = json_object_get(part, "text");
			memcpy(p + n, json_string_value(text), json_string_length(text));
			n += json_string_length(text);
		}
	}
	p[total] = '\0';
	*out = p;
	*out_len = total;
	return 0;
}

int
api_body_length(json_t *body, int64_t *asked, struct api_body_error *err)
{
	*asked = -1;
	for (size_t i = 0; openai_length_keys[i] != NULL; i++) {
		const char *key = openai_length_keys[i];
		json_t *v = json_object_get(body, key);
		bool standard = i < 2;
		json_int_t n;

		if (v == NULL || json_is_null(v))
			continue;
		if (!json_is_integer(v) || (standard && (json_integer_value(v) < 1 ||
		    json_integer_value(v) > MESSAGE_MAX_TOKENS))) {
			if (standard)
				snprintf(err->message, sizeof err->message, "%s must be an integer from 1 "
				    "to %d", key, MESSAGE_MAX_TOKENS);
			else
				snprintf(err->message, sizeof err->message, "%s must be an integer", key);
			snprintf(err->param, sizeof err->param, "%s", key);
			return -1;
		}
		n = json_integer_value(v);
		if (n > MESSAGE_MAX_TOKENS)
			n = MESSAGE_MAX_TOKENS;     /* a dialect's "as long as it likes" */
		if (n >= 1 && (*asked == -1 || n < *asked))
			*asked = n;
	}
	return 0;
}

/* The chat request of a parsed body; NULL with cause and *param (a key of body, or NULL). */
static struct request *
api_body_chat_request(json_t *body, bool *include_usage, char *cause, size_t cause_len,
    const char **param)
{
	struct request *rq = calloc(1, sizeof *rq);
	struct chat_request *cr;
	json_t *v, *extra = NULL;
	const char *key;
	size_t i;

	if (rq == NULL) {
		snprintf(cause, cause_len, "out of memory");
		return NULL;
	}
	message_request_init(rq, OP_CHAT);
	cr = &rq->u.chat;
	cr->stream = false;
	*param = NULL;

	v = json_object_get(body, "messages");
	if (!json_is_array(v) || json_array_size(v) == 0) {
		*param = "messages";
		snprintf(cause, cause_len, "messages must be a non-empty array");
		goto fail;
	}
	if ((cr->messages = calloc(json_array_size(v), sizeof *cr->messages)) == NULL)
		goto nomem;
	for (i = 0; i < json_array_size(v); i++) {
		json_t *m = json_array_get(v, i), *tc;
		struct chat_message *cm = &cr->messages[i];
		cr->n_messages++;
		*param = "messages";
		if (!json_is_object(m) || (cm->role = api_body_strdup(json_object_get(m, "role"))) == NULL) {
			snprintf(cause, cause_len, "messages[%zu] must be an object with a string role", i);
			goto fail;
		}
		if (api_body_content(json_object_get(m, "content"), &cm->content, &cm->content_len, cause,
		    cause_len, i) == -1)
			goto fail;
		if (json_object_get(m, "name") != NULL &&
		    (cm->name = api_body_strdup(json_object_get(m, "name"))) == NULL) {
			snprintf(cause, cause_len, "messages[%zu].name must be a string", i);
			goto fail;
		}
		if (json_is_string(json_object_get(m, "tool_call_id")) &&
		    (cm->tool_call_id = api_body_strdup(json_object_get(m, "tool_call_id"))) == NULL) {
			snprintf(cause, cause_len, "messages[%zu].tool_call_id holds a NUL character", i);
			goto fail;
		}
		if ((tc = json_object_get(m, "tool_calls")) != NULL && !json_is_null(tc)) {
			msgpack_sbuffer sb;
			msgpack_packer pk;
			if (!json_is_array(tc)) {
				snprintf(cause, cause_len, "messages[%zu].tool_calls must be an array", i);
				goto fail;
			}
			msgpack_sbuffer_init(&sb);
			msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
			if (openai_json_to_msgpack(tc, &pk) != 0) {
				msgpack_sbuffer_destroy(&sb);
				snprintf(cause, cause_len, "messages[%zu].tool_calls cannot be passed on", i);
				goto fail;
			}
			cm->tool_calls.data = (uint8_t *)sb.data;
			cm->tool_calls.len = sb.size;
		}
	}
	*param = NULL;

	json_object_foreach(body, key, v) {
		if (strcmp(key, "messages") == 0 || json_is_null(v))
			continue;
		*param = key;
		if (strcmp(key, "model") == 0) {
			if ((cr->model = api_body_strdup(v)) == NULL) {
				snprintf(cause, cause_len, "model must be a string");
				goto fail;
			}
		} else if (strcmp(key, "stream") == 0) {
			if (!json_is_boolean(v)) {
				snprintf(cause, cause_len, "stream must be true or false");
				goto fail;
			}
			cr->stream = json_is_true(v);
		} else if (strcmp(key, "stream_options") == 0) {
			json_t *iu = json_object_get(v, "include_usage");
			if (!json_is_object(v) || (iu != NULL && !json_is_boolean(iu))) {
				snprintf(cause, cause_len, "stream_options must be an object; its "
				    "include_usage true or false");
				goto fail;
			}
			*include_usage = json_is_true(iu);
		} else if (openai_length_key(key)) {
			continue;       /* read by api_body_length below */
		} else if (strcmp(key, "temperature") == 0 || strcmp(key, "top_p") == 0) {
			if (!json_is_number(v)) {
				snprintf(cause, cause_len, "%s must be a number", key);
				goto fail;
			}
			*(key[0] == 't' && key[1] == 'e' ? &cr->temperature : &cr->top_p) =
			    json_number_value(v);
		} else if (strcmp(key, "seed") == 0) {
			if (!json_is_integer(v)) {
				snprintf(cause, cause_len, "seed must be an integer");
				goto fail;
			}
			cr->seed = (int64_t)json_integer_value(v);
			cr->has_seed = true;
		} else if (strcmp(key, "n") == 0) {
			if (!json_is_integer(v) || json_integer_value(v) != 1) {
				snprintf(cause, cause_len, "n must be 1: one choice per request");
				goto fail;
			}
		} else if (strcmp(key, "stop") == 0) {
			size_t n = json_is_array(v) ? json_array_size(v) : 1;
			if ((cr->stop = calloc(n, sizeof *cr->stop)) == NULL)
				goto nomem;
			for (size_t k = 0; k < n; k++) {
				json_t *sv = json_is_array(v) ? json_array_get(v, k) : v;
				if ((cr->stop[k] = api_body_strdup(sv)) == NULL) {
					snprintf(cause, cause_len, "stop must be a string or an array of strings");
					goto fail;
				}
				cr->n_stop++;
			}
		} else {
			/* anything else goes to the model server as it came */
			if (extra == NULL && (extra = json_object()) == NULL)
				goto nomem;
			json_object_set(extra, key, v);
		}
	}
	*param = NULL;
	{
		struct api_body_error le;
		if (api_body_length(body, &cr->max_tokens, &le) == -1) {
			snprintf(cause, cause_len, "%s", le.message);
			*param = json_object_iter_key(json_object_iter_at(body, le.param));
			goto fail;
		}
	}
	if (extra != NULL) {
		msgpack_sbuffer sb;
		msgpack_packer pk;
		msgpack_sbuffer_init(&sb);
		msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
		if (openai_json_to_msgpack(extra, &pk) != 0) {
			msgpack_sbuffer_destroy(&sb);
			snprintf(cause, cause_len, "some fields cannot be passed on to the model server");
			goto fail;
		}
		cr->extra.data = (uint8_t *)sb.data;
		cr->extra.len = sb.size;
		json_decref(extra);
	}
	return rq;
nomem:
	snprintf(cause, cause_len, "out of memory");
fail:
	json_decref(extra);
	message_request_free(rq);
	return NULL;
}


/* Parse a POST /v1/chat/completions body: the request, or NULL with err filled. */
struct request *
api_body_chat(const char *body, size_t len, bool *include_usage, struct api_body_error *err)
{
	json_t *j;
	struct request *rq;
	const char *param = NULL;

	*include_usage = false;
	err->message[0] = '\0';
	err->param[0] = '\0';
	if ((j = api_body_json(body, len, err->message, sizeof err->message)) == NULL)
		return NULL;
	if ((rq = api_body_chat_request(j, include_usage, err->message, sizeof err->message,
	    &param)) == NULL && param != NULL)
		snprintf(err->param, sizeof err->param, "%s", param);  /* a key of j */
	json_decref(j);
	return rq;
}

/* A growing text: the prompt's strings to count. */
struct api_body_text {
	char *p;
	size_t len, cap;
	bool failed;
};

static void
api_body_text_add(struct api_body_text *t, const char *s, size_t n)
{
	if (t->failed)
		return;
	if (t->len + n + 1 > t->cap) {
		size_t cap = t->cap ? t->cap : 256;
		char *grown;
		while (cap < t->len + n + 1)
			cap *= 2;
		if ((grown = realloc(t->p, cap)) == NULL) {
			t->failed = true;
			return;
		}
		t->p = grown;
		t->cap = cap;
	}
	memcpy(t->p + t->len, s, n);
	t->len += n;
	t->p[t->len] = '\0';
}

/* Gather a prompt or input (a string, strings, token ids, arrays of ids) for counting; -1 if none of those. */
static int
api_body_prompt(json_t *v, struct api_body_text *text, int64_t *ids)
{
	size_t i;
	json_t *e;

	if (json_is_string(v)) {
		api_body_text_add(text, json_string_value(v), json_string_length(v));
		api_body_text_add(text, "\n", 1);
		return 0;
	}
	if (json_is_integer(v)) {
		(*ids)++;
		return 0;
	}
	if (!json_is_array(v))
		return -1;
	json_array_foreach(v, i, e) {
		if (json_is_array(e) ? api_body_prompt(e, text, ids) == -1 :
		    !json_is_string(e) && !json_is_integer(e))
			return -1;
		if (!json_is_array(e))
			api_body_prompt(e, text, ids);
	}
	return 0;
}

void
api_body_pass_clear(struct api_body_pass *p)
{
	free(p->model);
	free(p->prompt_text);
	free(p->body);
	memset(p, 0, sizeof *p);
	p->max_tokens = -1;
}

int
api_body_passthrough(const char *body, size_t len, bool embeddings, struct api_body_pass *out,
    struct api_body_error *err)
{
	const char *field = embeddings ? "input" : "prompt";
	struct api_body_text text = { NULL, 0, 0, false };
	const char *bad = NULL;
	json_t *j, *v;

	memset(out, 0, sizeof *out);
	out->max_tokens = -1;
	err->message[0] = '\0';
	err->param[0] = '\0';
	if ((j = api_body_json(body, len, err->message, sizeof err->message)) == NULL)
		return -1;
	if (api_body_prompt(json_object_get(j, field), &text, &out->prompt_ids) == -1)
		bad = field;
	else if ((v = json_object_get(j, "model")) != NULL && !json_is_null(v) &&
	    (out->model = api_body_strdup(v)) == NULL)
		bad = "model";
	else if (!embeddings && (v = json_object_get(j, "stream")) != NULL && !json_is_null(v) &&
	    !json_is_boolean(v))
		bad = "stream";
	else if (!embeddings && (((v = json_object_get(j, "n")) != NULL && !json_is_null(v) &&
	    json_integer_value(v) != 1) || ((v = json_object_get(j, "best_of")) != NULL &&
	    !json_is_null(v) && json_integer_value(v) != 1)))
		bad = "n";
	if (bad != NULL) {
		if (bad == field)
			snprintf(err->message, sizeof err->message, "%s must be a string, an array of "
			    "strings, or token ids", bad);
		else if (strcmp(bad, "n") == 0)
			snprintf(err->message, sizeof err->message, "n and best_of must be 1");
		else
			snprintf(err->message, sizeof err->message, "%s has the wrong type or value", bad);
		snprintf(err->param, sizeof err->param, "%s", bad);
		goto fail;
	}
	if (!embeddings) {
		if (api_body_length(j, &out->max_tokens, err) == -1)
			goto fail;
		out->stream = json_is_true(json_object_get(j, "stream"));
		out->usage_wanted = json_is_true(json_object_get(json_object_get(j,
		    "stream_options"), "include_usage"));
	}
	api_body_text_add(&text, "", 0);
	out->prompt_text = text.p;
	out->prompt_len = text.len;
	text.p = NULL;
	if (text.failed || (out->body = json_dumps(j, JSON_COMPACT)) == NULL) {
		snprintf(err->message, sizeof err->message, "out of memory");
		goto fail;
	}
	json_decref(j);
	return 0;
fail:
	free(text.p);
	json_decref(j);
	api_body_pass_clear(out);
	return -1;
}
