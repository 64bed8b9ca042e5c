/* What the Messages and Responses fronts share: joined text, a growing message list, raw values. */
#include "config.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>
#include <msgpack.h>

#include "daemon/api_body.h"
#include "daemon/openai.h"
#include "daemon/translate.h"

int
translate_text_add(struct translate_text *t, const char *s, size_t n, const char *sep)
{
	size_t sl = t->any && sep != NULL ? strlen(sep) : 0, need = t->len + sl + n + 1;

	if (need > t->cap) {
		size_t cap = t->cap < 64 ? 64 : t->cap;
		char *p;
		while (cap < need)
			cap *= 2;
		if ((p = realloc(t->p, cap)) == NULL)
			return -1;
		t->p = p;
		t->cap = cap;
	}
	if (sl > 0)
		memcpy(t->p + t->len, sep, sl);
	if (n > 0)
		memcpy(t->p + t->len + sl, s, n);
	t->len += sl + n;
	t->p[t->len] = '\0';
	t->any = true;
	return 0;
}

int
translate_text_add_json(struct translate_text *t, json_t *v, const char *sep)
{
	if (!json_is_string(v))
		return -1;
	return translate_text_add(t, json_string_value(v), json_string_length(v), sep);
}

void
translate_text_move(struct translate_text *t, struct chat_message *m)
{
	free(m->content);
	m->content = NULL;
	m->content_len = 0;
	if (t->any) {
		if (t->p == NULL)
			translate_text_add(t, "", 0, NULL);
		m->content = t->p;
		m->content_len = t->len;
		t->p = NULL;
	}
	t->len = t->cap = 0;
	t->any = false;
}

void
translate_text_clear(struct translate_text *t)
{
	free(t->p);
	memset(t, 0, sizeof *t);
}

struct chat_message *
translate_message_add(struct chat_request *cr, size_t *cap, const char *role)
{
	struct chat_message *m;

	if (cr->n_messages == *cap) {
		size_t n = *cap < 8 ? 8 : *cap * 2;
		if ((m = realloc(cr->messages, n * sizeof *m)) == NULL)
			return NULL;
		cr->messages = m;
		*cap = n;
	}
	m = &cr->messages[cr->n_messages];
	memset(m, 0, sizeof *m);
	if ((m->role = strdup(role)) == NULL)
		return NULL;
	cr->n_messages++;
	return m;
}

int
translate_raw_set(struct message_raw *raw, json_t *v)
{
	msgpack_sbuffer sb;
	msgpack_packer pk;

	msgpack_sbuffer_init(&sb);
	msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
	if (openai_json_to_msgpack(v, &pk) != 0) {
		msgpack_sbuffer_destroy(&sb);
		return -1;
	}
	raw->data = (uint8_t *)sb.data;
	raw->len = sb.size;
	return 0;
}

int
translate_tool_call_add(json_t *calls, const char *id, const char *name, const char *arguments)
{
	json_t *call = json_pack("{s:s, s:s, s:{s:s, s:s}}", "id", id, "type", "function",
	    "function", "name", name, "arguments", arguments);

	if (call == NULL)
		return -1;
	return json_array_append_new(calls, call);
}

bool
translate_max_tokens(json_t *v, int64_t *out)
{
	if (!json_is_integer(v) || json_integer_value(v) < 1 ||
	    json_integer_value(v) > MESSAGE_MAX_TOKENS)
		return false;
	*out = json_integer_value(v);
	return true;
}

int
translate_stop(struct chat_request *cr, json_t *v, bool string_allowed, const char *field,
    char *cause, size_t cause_len)
{
	size_t n, k;

	if (json_is_string(v) && string_allowed)
		n = 1;
	else if (json_is_array(v))
		n = json_array_size(v);
	else
		goto bad;
	if (n == 0)
		return 0;
	if ((cr->stop = calloc(n, sizeof *cr->stop)) == NULL) {
		snprintf(cause, cause_len, "out of memory");
		return -1;
	}
	for (k = 0; k < n; k++) {
		json_t *s = json_is_array(v) ? json_array_get(v, k) : v;
		if ((cr->stop[k] = api_body_strdup(s)) == NULL)
			goto bad;
		cr->n_stop++;
	}
	return 0;
bad:
	snprintf(cause, cause_len, "%s: must be %san array of strings without NUL", field,
	    string_allowed ? "a string or " : "");
	return -1;
}

char *
translate_json_text(json_t *v)
{
	if (v == NULL)
		return strdup("{}");
	return json_dumps(v, JSON_COMPACT | JSON_ENCODE_ANY);
}

bool
translate_is(json_t *v, const char *s)
{
	return json_is_string(v) && json_string_length(v) == strlen(s) &&
	    strcmp(json_string_value(v), s) == 0;
}
