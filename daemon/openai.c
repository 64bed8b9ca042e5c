/* openai.c: the OpenAI chat API as real servers speak it. */
#include "config.h"

#include <ctype.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/types.h>
#ifdef __SSE2__
#include <emmintrin.h>
#endif

#include "daemon/openai.h"

static json_t *openai_mp_value(const uint8_t **, size_t *, int);

/* --- free-form values ------------------------------------------------- */

/* Read n big-endian bytes as an unsigned integer. */
static uint64_t
openai_mp_be(const uint8_t *p, size_t n)
{
	uint64_t	v = 0;

	while (n-- > 0)
		v = (v << 8) | *p++;
	return (v);
}

/* Take n bytes from the input, or fail if fewer are left. */
static const uint8_t *
openai_mp_take(const uint8_t **p, size_t *left, size_t n)
{
	const uint8_t	*at = *p;

	if (n > *left)
		return (NULL);
	*p += n;
	*left -= n;
	return (at);
}

/* A msgpack string as JSON: valid UTF-8; a NUL is a character (\u0000). */
static json_t *
openai_mp_string(const uint8_t **p, size_t *left, size_t n)
{
	const uint8_t	*s;

	if ((s = openai_mp_take(p, left, n)) == NULL)
		return (NULL);
	return (json_stringn((const char *)s, n));
}

/* A msgpack array of n values. */
static json_t *
openai_mp_array(const uint8_t **p, size_t *left, size_t n, int depth)
{
	json_t	*a, *v;
	size_t	 i;

	if (n > *left || depth >= OPENAI_MAX_DEPTH)
		return (NULL);
	if ((a = json_array()) == NULL)
		return (NULL);
	for (i = 0; i < n; i++) {
		if ((v = openai_mp_value(p, left, depth + 1)) == NULL ||
		    json_array_append_new(a, v) != 0) {
			json_decref(a);
			return (NULL);
		}
	}
	return (a);
}

/* A msgpack map of n pairs; keys must be strings. */
static json_t *
openai_mp_map(const uint8_t **p, size_t *left, size_t n, int depth)
{
	json_t		*o, *k, *v;
	size_t		 i;

	if (n > *left / 2 || depth >= OPENAI_MAX_DEPTH)
		return (NULL);
	if ((o = json_object()) == NULL)
		return (NULL);
	for (i = 0; i < n; i++) {
		k = openai_mp_value(p, left, depth + 1);
		/* a jansson key is a C string: one holding NUL is refused */
		if (k == NULL || !json_is_string(k) ||
		    strlen(json_string_value(k)) != json_string_length(k)) {
			json_decref(k);
			json_decref(o);
			return (NULL);
		}
		v = openai_mp_value(p, left, depth + 1);
		if (v == NULL || json_object_set_new(o, json_string_value(k),
		    v) != 0) {
			json_decref(k);
			json_decref(o);
			return (NULL);
		}
		json_decref(k);
	}
	return (o);
}

/* One msgpack value as JSON, or NULL for anything JSON cannot hold. */
static json_t *
openai_mp_value(const uint8_t **p, size_t *left, int depth)
{
	const uint8_t	*b;
	uint8_t		 t;
	uint64_t	 u;
	uint32_t	 f32;
	float		 f;
	double		 d;
	size_t		 n;

	if ((b = openai_mp_take(p, left, 1)) == NULL)
		return (NULL);
	t = *b;
	if (t <= 0x7f)
		return (json_integer(t));
	if (t >= 0xe0)
		return (json_integer((int8_t)t));
	if (t >= 0x80 && t <= 0x8f)
		return (openai_mp_map(p, left, t & 0x0f, depth));
	if (t >= 0x90 && t <= 0x9f)
		return (openai_mp_array(p, left, t & 0x0f, depth));
	if (t >= 0xa0 && t <= 0xbf)
		return (openai_mp_string(p, left, t & 0x1f));

	switch (t) {
	case 0xc0:
		return (json_null());
	case 0xc2:
		return (json_false());
	case 0xc3:
		return (json_true());
	case 0xca:
		if ((b = openai_mp_take(p, left, 4)) == NULL)
			return (NULL);
		f32 = (uint32_t)openai_mp_be(b, 4);
		memcpy(&f, &f32, sizeof f);
		return (json_real(f));  /* NULL for NaN and infinities */
	case 0xcb:
		if ((b = openai_mp_take(p, left, 8)) == NULL)
			return (NULL);
		u = openai_mp_be(b, 8);
		memcpy(&d, &u, sizeof d);
		return (json_real(d));
	case 0xcc:
	case 0xcd:
	case 0xce:
	case 0xcf:
		n = (size_t)1 << (t - 0xcc);
		if ((b = openai_mp_take(p, left, n)) == NULL)
			return (NULL);
		u = openai_mp_be(b, n);
		if (u > INT64_MAX)
			return (NULL);
		return (json_integer((json_int_t)u));
	case 0xd0:
		if ((b = openai_mp_take(p, left, 1)) == NULL)
			return (NULL);
		return (json_integer((int8_t)b[0]));
	case 0xd1:
		if ((b = openai_mp_take(p, left, 2)) == NULL)
			return (NULL);
		return (json_integer((int16_t)openai_mp_be(b, 2)));
	case 0xd2:
		if ((b = openai_mp_take(p, left, 4)) == NULL)
			return (NULL);
		return (json_integer((int32_t)openai_mp_be(b, 4)));
	case 0xd3:
		if ((b = openai_mp_take(p, left, 8)) == NULL)
			return (NULL);
		return (json_integer((json_int_t)(int64_t)openai_mp_be(b, 8)));
	case 0xd9:
	case 0xda:
	case 0xdb:
		n = (size_t)1 << (t - 0xd9);
		if ((b = openai_mp_take(p, left, n)) == NULL)
			return (NULL);
		return (openai_mp_string(p, left, openai_mp_be(b, n)));
	case 0xdc:
	case 0xdd:
		n = t == 0xdc ? 2 : 4;
		if ((b = openai_mp_take(p, left, n)) == NULL)
			return (NULL);
		return (openai_mp_array(p, left, openai_mp_be(b, n), depth));
	case 0xde:
	case 0xdf:
		n = t == 0xde ? 2 : 4;
		if ((b = openai_mp_take(p, left, n)) == NULL)
			return (NULL);
		return (openai_mp_map(p, left, openai_mp_be(b, n), depth));
	}
	/* 0xc1 (never used), bin, ext and fixext. */
	return (NULL);
}

/* Turn the msgpack bytes of exactly one value into JSON. */
json_t *
openai_msgpack_to_json(const uint8_t *buf, size_t len)
{
	json_t	*v;

	if (buf == NULL)
		return (NULL);
	v = openai_mp_value(&buf, &len, 0);
	if (v != NULL && len != 0) {
		json_decref(v);
		return (NULL);
	}
	return (v);
}

/* Pack one JSON value, refusing what msgpack peers could not read back. */
static int
openai_pack(json_t *v, msgpack_packer *pk, int depth)
{
	const char	*key, *s;
	json_t		*item;
	size_t		 i, n;

	if (depth > OPENAI_MAX_DEPTH)
		return (-1);
	switch (json_typeof(v)) {
	case JSON_OBJECT:
		if (depth == OPENAI_MAX_DEPTH)
			return (-1);
		if (msgpack_pack_map(pk, json_object_size(v)) != 0)
			return (-1);
		json_object_foreach(v, key, item) {
			n = strlen(key);
			if (msgpack_pack_str(pk, n) != 0 ||
			    msgpack_pack_str_body(pk, key, n) != 0 ||
			    openai_pack(item, pk, depth + 1) != 0)
				return (-1);
		}
		return (0);
	case JSON_ARRAY:
		if (depth == OPENAI_MAX_DEPTH)
			return (-1);
		if (msgpack_pack_array(pk, json_array_size(v)) != 0)
			return (-1);
		json_array_foreach(v, i, item) {
			if (openai_pack(item, pk, depth + 1) != 0)
				return (-1);
		}
		return (0);
	case JSON_STRING:
		s = json_string_value(v);
		n = json_string_length(v);
		if (msgpack_pack_str(pk, n) != 0 ||
		    msgpack_pack_str_body(pk, s, n) != 0)
			return (-1);
		return (0);
	case JSON_INTEGER:
		return (msgpack_pack_int64(pk, json_integer_value(v)));
	case JSON_REAL:
		return (msgpack_pack_double(pk, json_real_value(v)));
	case JSON_TRUE:
		return (msgpack_pack_true(pk));
	case JSON_FALSE:
		return (msgpack_pack_false(pk));
	case JSON_NULL:
		return (msgpack_pack_nil(pk));
	}
	return (-1);
}

/* Pack a free-form JSON value as msgpack. */
int
openai_json_to_msgpack(json_t *v, msgpack_packer *pk)
{
	if (v == NULL)
		return (-1);
	return (openai_pack(v, pk, 0) == 0 ? 0 : -1);
}

/* Store a JSON value as raw msgpack bytes. */
static int
openai_raw_set(struct message_raw *raw, json_t *v)
{
	msgpack_sbuffer	 sb;
	msgpack_packer	 pk;

	msgpack_sbuffer_init(&sb);
	msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
	if (openai_json_to_msgpack(v, &pk) != 0 || sb.size == 0) {
		msgpack_sbuffer_destroy(&sb);
		return (-1);
	}
	raw->data = (uint8_t *)sb.data;     /* ownership moves to raw */
	raw->len = sb.size;
	return (0);
}

/* --- request body ----------------------------------------------------- */

/* Whether every real in v prints exactly with 15 significant digits. */
static bool
openai_reals_short(json_t *v)
{
	const char	*key;
	json_t		*item;
	size_t		 i;
	char		 buf[64];
	double		 d;

	switch (json_typeof(v)) {
	case JSON_REAL:
		d = json_real_value(v);
		snprintf(buf, sizeof buf, "%.15g", d);
		return (strtod(buf, NULL) == d);
	case JSON_OBJECT:
		json_object_foreach(v, key, item) {
			if (!openai_reals_short(item))
				return (false);
		}
		return (true);
	case JSON_ARRAY:
		json_array_foreach(v, i, item) {
			if (!openai_reals_short(item))
				return (false);
		}
		return (true);
	default:
		return (true);
	}
}

/* Set key to a new string value, failing on invalid UTF-8. */
static int
openai_set_string(json_t *o, const char *key, const char *s)
{
	json_t	*v;

	if ((v = json_string(s)) == NULL)
		return (-1);
	return (json_object_set_new(o, key, v));
}

/* One message of the conversation as JSON. */
static json_t *
openai_message_json(const struct chat_message *m, size_t idx, char *cause,
    size_t cause_len)
{
	json_t	*o, *tc = NULL;
	int	 rc = 0;

	if ((o = json_object()) == NULL)
		goto nomem;
	if (m->role == NULL || openai_set_string(o, "role", m->role) != 0) {
		snprintf(cause, cause_len, "messages[%zu]: bad role", idx);
		goto fail;
	}
	if (m->tool_calls.data != NULL) {
		tc = openai_msgpack_to_json(m->tool_calls.data,
		    m->tool_calls.len);
		if (tc == NULL || !json_is_array(tc)) {
			json_decref(tc);
			snprintf(cause, cause_len,
			    "messages[%zu]: tool_calls is not an array", idx);
			goto fail;
		}
	}
	/* An assistant turn that only calls tools has null content. */
	if (m->content != NULL)
		/* length-aware: a NUL in the content goes out as \u0000 */
		rc = json_object_set_new(o, "content", json_stringn(m->content,
		    m->content_len != 0 ? m->content_len : strlen(m->content)));
	else if (tc != NULL)
		rc = json_object_set_new(o, "content", json_null());
	else
		rc = openai_set_string(o, "content", "");
	if (rc == 0 && m->name != NULL)
		rc = openai_set_string(o, "name", m->name);
	if (rc == 0 && m->tool_call_id != NULL)
		rc = openai_set_string(o, "tool_call_id", m->tool_call_id);
	if (rc == 0 && tc != NULL) {
		rc = json_object_set_new(o, "tool_calls", tc);
		tc = NULL;
	}
	json_decref(tc);
	if (rc != 0) {
		snprintf(cause, cause_len,
		    "messages[%zu]: invalid UTF-8 or out of memory", idx);
		goto fail;
	}
	return (o);

nomem:
	snprintf(cause, cause_len, "out of memory");
fail:
	json_decref(o);
	return (NULL);
}

const char *const openai_length_keys[] = {
	"max_tokens", "max_completion_tokens", "n_predict", "num_predict", "max_new_tokens", NULL
};

/* Whether key names a reply's length limit in some dialect. */
bool
openai_length_key(const char *key)
{
	size_t	 i;

	for (i = 0; openai_length_keys[i] != NULL; i++)
		if (strcmp(key, openai_length_keys[i]) == 0)
			return (true);
	return (false);
}

/*
 * Keys of the body that `extra` may not set: what routing, the reply's
 * parsing and the accounting (the reservation of prompt + max_tokens, one
 * choice, the uid as the only identity) rely on; and every length key.
 */
static const char *const openai_extra_refused[] = {
	"model", "messages", "prompt", "stream", "stream_options", "n", "best_of", "user",
	NULL
};

/* Whether extra may set key to v; stream_options may only be removed (null). */
static bool
openai_extra_allowed(const char *key, const json_t *v)
{
	size_t	 i;

	if (strcmp(key, "stream_options") == 0 && json_is_null(v))
		return (true);
	if (openai_length_key(key))
		return (false);
	for (i = 0; openai_extra_refused[i] != NULL; i++)
		if (strcmp(key, openai_extra_refused[i]) == 0)
			return (false);
	return (true);
}

/* Merge the client's `extra` map into the body; null deletes a key. */
static int
openai_merge_extra(json_t *root, const struct message_raw *extra,
    char *cause, size_t cause_len)
{
	json_t		*x, *v;
	const char	*key;

	x = openai_msgpack_to_json(extra->data, extra->len);
	if (x == NULL || !json_is_object(x)) {
		json_decref(x);
		snprintf(cause, cause_len, "extra is not a map of JSON values");
		return (-1);
	}
	json_object_foreach(x, key, v) {
		if (!openai_extra_allowed(key, v)) {
			snprintf(cause, cause_len, "extra.%s: may not be set through extra "
			    "(the daemon sets it%s)", key, strcmp(key, "stream_options") == 0 ?
			    "; only null, to remove it, is allowed" : "");
			json_decref(x);
			return (-1);
		}
		if (json_is_null(v))
			json_object_del(root, key);
		else if (json_object_set(root, key, v) != 0) {
			json_decref(x);
			snprintf(cause, cause_len, "out of memory");
			return (-1);
		}
	}
	json_decref(x);
	return (0);
}

/* A growable text the fast body writer fills. */
struct openai_out {
	char	*p;
	size_t	 len;
	size_t	 cap;
	int	 oom;
};

static size_t openai_utf8_len(const unsigned char *, size_t);

static void
openai_out_add(struct openai_out *o, const char *s, size_t n)
{
	if (o->oom)
		return;
	if (o->len + n + 1 > o->cap) {
		size_t	 cap = o->cap ? o->cap : 512;
		char	*p;

		while (cap < o->len + n + 1)
			cap *= 2;
		if ((p = realloc(o->p, cap)) == NULL) {
			o->oom = 1;
			return;
		}
		o->p = p;
		o->cap = cap;
	}
	memcpy(o->p + o->len, s, n);
	o->len += n;
	o->p[o->len] = '\0';
}

/*
 * Append s as a JSON string exactly as json_dumps writes it (compact, no
 * ASCII escaping); -1 when s is not valid UTF-8 (jansson then says why).
 */
static int
openai_out_string(struct openai_out *o, const char *s, size_t len)
{
	static const char hex[] = "0123456789ABCDEF";
	const unsigned char *u = (const unsigned char *)s;
	size_t	 i = 0, start = 0, n;
	char	 esc[6] = { '\\', 'u', '0', '0', 0, 0 };

	openai_out_add(o, "\"", 1);
	while (i < len) {
		if (u[i] >= 0x80) {
			if ((n = openai_utf8_len(u + i, len - i)) == 0)
				return (-1);
			i += n;
			continue;
		}
		if (u[i] >= 0x20 && u[i] != '"' && u[i] != '\\') {
			i++;
			continue;
		}
		openai_out_add(o, s + start, i - start);
		switch (u[i]) {
		case '"':	openai_out_add(o, "\\\"", 2); break;
		case '\\':	openai_out_add(o, "\\\\", 2); break;
		case '\b':	openai_out_add(o, "\\b", 2); break;
		case '\f':	openai_out_add(o, "\\f", 2); break;
		case '\n':	openai_out_add(o, "\\n", 2); break;
		case '\r':	openai_out_add(o, "\\r", 2); break;
		case '\t':	openai_out_add(o, "\\t", 2); break;
		default:
			esc[4] = hex[u[i] >> 4];
			esc[5] = hex[u[i] & 15];
			openai_out_add(o, esc, 6);
		}
		start = ++i;
	}
	openai_out_add(o, s + start, len - start);
	openai_out_add(o, "\"", 1);
	return (0);
}

static void
openai_out_key(struct openai_out *o, const char *key)
{
	openai_out_add(o, ",\"", 2);
	openai_out_add(o, key, strlen(key));
	openai_out_add(o, "\":", 2);
}

#define OPENAI_OUT_LIT(o, lit) openai_out_add((o), (lit), sizeof(lit) - 1)

char *
openai_stream_chunk(const char *id, int64_t created, const char *model,
    const char *delta, const char *finish_reason, const struct usage *usage, size_t *len)
{
	struct openai_out	 o = { NULL, 0, 0, 0 };
	char			 num[80];
	int			 n;

	OPENAI_OUT_LIT(&o, "data: {\"id\":");
	if (openai_out_string(&o, id, strlen(id)) == -1)
		goto fail;
	n = snprintf(num, sizeof num, ",\"object\":\"chat.completion.chunk\",\"created\":%lld,"
	    "\"model\":", (long long)created);
	openai_out_add(&o, num, (size_t)n);
	if (openai_out_string(&o, model, strlen(model)) == -1)
		goto fail;
	OPENAI_OUT_LIT(&o, ",\"system_fingerprint\":null,\"choices\":[");
	if (delta != NULL) {
		OPENAI_OUT_LIT(&o, "{\"index\":0,\"delta\":");
		openai_out_add(&o, delta, strlen(delta));
		OPENAI_OUT_LIT(&o, ",\"finish_reason\":");
		if (finish_reason == NULL)
			OPENAI_OUT_LIT(&o, "null");
		else if (openai_out_string(&o, finish_reason, strlen(finish_reason)) == -1)
			goto fail;
		OPENAI_OUT_LIT(&o, ",\"logprobs\":null}");
	}
	OPENAI_OUT_LIT(&o, "]");
	if (usage != NULL) {
		n = snprintf(num, sizeof num, ",\"usage\":{\"prompt_tokens\":%lld,"
		    "\"completion_tokens\":%lld,", (long long)usage->prompt_tokens,
		    (long long)usage->completion_tokens);
		openai_out_add(&o, num, (size_t)n);
		n = snprintf(num, sizeof num, "\"total_tokens\":%lld}",
		    (long long)usage->total_tokens);
		openai_out_add(&o, num, (size_t)n);
	}
	OPENAI_OUT_LIT(&o, "}\n\n");
	if (o.oom)
		goto fail;
	*len = o.len;
	return (o.p);
fail:
	free(o.p);
	return (NULL);
}

json_t *
openai_stream_chunk_json(const char *id, int64_t created, const char *model,
    json_t *delta, const char *finish_reason, const struct usage *usage)
{
	json_t	*choices = json_array(), *chunk;

	if (delta != NULL)
		json_array_append_new(choices, json_pack("{s:i, s:o, s:o, s:n}", "index", 0,
		    "delta", delta, "finish_reason",
		    finish_reason != NULL ? json_string(finish_reason) : json_null(),
		    "logprobs"));
	chunk = json_pack("{s:s, s:s, s:I, s:s, s:n, s:o}", "id", id, "object",
	    "chat.completion.chunk", "created", (json_int_t)created, "model", model,
	    "system_fingerprint", "choices", choices);
	if (chunk != NULL && usage != NULL)
		json_object_set_new(chunk, "usage", json_pack("{s:I, s:I, s:I}",
		    "prompt_tokens", (json_int_t)usage->prompt_tokens,
		    "completion_tokens", (json_int_t)usage->completion_tokens,
		    "total_tokens", (json_int_t)usage->total_tokens));
	return (chunk);
}

/*
 * The usual chat body written straight, byte for byte what the jansson
 * document below dumps to: 1 with *out set (NULL when out of memory), 0 when
 * the request has what only the document handles (tool calls, extra keys,
 * reals, text that is not UTF-8, which it reports).
 */
static int
openai_chat_body_fast(const struct chat_request *req, const char *model,
    bool stream, char **out)
{
	struct openai_out o = { NULL, 0, 0, 0 };
	char	 num[32];
	size_t	 i;

	if (req->extra.data != NULL || isfinite(req->temperature) ||
	    isfinite(req->top_p))
		return (0);
	for (i = 0; i < req->n_messages; i++)
		if (req->messages[i].tool_calls.data != NULL ||
		    req->messages[i].role == NULL)
			return (0);
	openai_out_add(&o, "{", 1);
	if (model != NULL) {
		openai_out_add(&o, "\"model\":", 8);
		if (openai_out_string(&o, model, strlen(model)) == -1)
			goto slow;
		openai_out_add(&o, ",", 1);
	}
	openai_out_add(&o, "\"messages\":[", 12);
	for (i = 0; i < req->n_messages; i++) {
		const struct chat_message *m = &req->messages[i];

		openai_out_add(&o, i > 0 ? ",{\"role\":" : "{\"role\":", i > 0 ? 9 : 8);
		if (openai_out_string(&o, m->role, strlen(m->role)) == -1)
			goto slow;
		openai_out_key(&o, "content");
		if (openai_out_string(&o, m->content != NULL ? m->content : "",
		    m->content == NULL ? 0 : m->content_len != 0 ? m->content_len :
		    strlen(m->content)) == -1)
			goto slow;
		if (m->name != NULL) {
			openai_out_key(&o, "name");
			if (openai_out_string(&o, m->name, strlen(m->name)) == -1)
				goto slow;
		}
		if (m->tool_call_id != NULL) {
			openai_out_key(&o, "tool_call_id");
			if (openai_out_string(&o, m->tool_call_id,
			    strlen(m->tool_call_id)) == -1)
				goto slow;
		}
		openai_out_add(&o, "}", 1);
	}
	openai_out_add(&o, "]", 1);
	openai_out_key(&o, "stream");
	openai_out_add(&o, stream ? "true" : "false", stream ? 4 : 5);
	if (stream) {
		openai_out_key(&o, "stream_options");
		openai_out_add(&o, "{\"include_usage\":true}", 22);
	}
	if (req->max_tokens >= 1) {
		openai_out_key(&o, "max_tokens");
		snprintf(num, sizeof num, "%lld", (long long)req->max_tokens);
		openai_out_add(&o, num, strlen(num));
	}
	if (req->n_stop > 0) {
		openai_out_key(&o, "stop");
		for (i = 0; i < req->n_stop; i++) {
			openai_out_add(&o, i > 0 ? "," : "[", 1);
			if (openai_out_string(&o, req->stop[i],
			    strlen(req->stop[i])) == -1)
				goto slow;
		}
		openai_out_add(&o, "]", 1);
	}
	if (req->has_seed) {
		openai_out_key(&o, "seed");
		snprintf(num, sizeof num, "%lld", (long long)req->seed);
		openai_out_add(&o, num, strlen(num));
	}
	openai_out_add(&o, "}", 1);
	if (o.oom) {
		free(o.p);
		o.p = NULL;
	}
	*out = o.p;
	return (1);
slow:
	free(o.p);
	return (0);
}

/* Build the JSON body of a chat completion request. */
char *
openai_chat_body(const struct chat_request *req, const char *model,
    bool stream, char *cause, size_t cause_len)
{
	json_t	*root, *msgs, *m, *stop, *so;
	char	*body;
	size_t	 i, flags;
	int	 rc = 0;

	if (openai_chat_body_fast(req, model != NULL ? model : req->model,
	    stream, &body) == 1) {
		if (body == NULL)
			snprintf(cause, cause_len, "out of memory");
		return (body);
	}

	if ((root = json_object()) == NULL || (msgs = json_array()) == NULL) {
		json_decref(root);
		snprintf(cause, cause_len, "out of memory");
		return (NULL);
	}
	if (model == NULL)
		model = req->model;
	if (model != NULL && openai_set_string(root, "model", model) != 0) {
		json_decref(msgs);
		snprintf(cause, cause_len, "bad model name");
		goto fail;
	}
	if (json_object_set_new(root, "messages", msgs) != 0)
		goto nomem;
	for (i = 0; i < req->n_messages; i++) {
		m = openai_message_json(&req->messages[i], i, cause, cause_len);
		if (m == NULL)
			goto fail;
		if (json_array_append_new(msgs, m) != 0)
			goto nomem;
	}

	rc |= json_object_set_new(root, "stream", json_boolean(stream));
	if (stream) {
		if ((so = json_pack("{s:b}", "include_usage", 1)) == NULL)
			goto nomem;
		rc |= json_object_set_new(root, "stream_options", so);
	}
	if (req->max_tokens >= 1)
		rc |= json_object_set_new(root, "max_tokens",
		    json_integer(req->max_tokens));
	if (isfinite(req->temperature))
		rc |= json_object_set_new(root, "temperature",
		    json_real(req->temperature));
	if (isfinite(req->top_p))
		rc |= json_object_set_new(root, "top_p", json_real(req->top_p));
	if (req->n_stop > 0) {
		if ((stop = json_array()) == NULL)
			goto nomem;
		rc |= json_object_set_new(root, "stop", stop);
		for (i = 0; i < req->n_stop; i++) {
			if (json_array_append_new(stop,
			    json_string(req->stop[i])) != 0) {
				snprintf(cause, cause_len, "bad stop string");
				goto fail;
			}
		}
	}
	if (req->has_seed)
		rc |= json_object_set_new(root, "seed", json_integer(req->seed));
	if (rc != 0)
		goto nomem;
	if (req->extra.data != NULL &&
	    openai_merge_extra(root, &req->extra, cause, cause_len) != 0)
		goto fail;

	/* Print reals briefly ("0.7") when that loses nothing. */
	flags = JSON_COMPACT;
	if (openai_reals_short(root))
		flags |= JSON_REAL_PRECISION(15);
	if ((body = json_dumps(root, flags)) == NULL)
		goto nomem;
	json_decref(root);
	return (body);

nomem:
	snprintf(cause, cause_len, "out of memory");
fail:
	json_decref(root);
	return (NULL);
}

/* --- replies ---------------------------------------------------------- */

/* Length of the valid UTF-8 sequence at s (0 if invalid). */
static size_t
openai_utf8_len(const unsigned char *s, size_t left)
{
	unsigned int	c = s[0], cp;
	size_t		n, i;

	if (c < 0x80)
		return (1);
	if (c >= 0xc2 && c <= 0xdf) {
		n = 2;
		cp = c & 0x1f;
	} else if (c >= 0xe0 && c <= 0xef) {
		n = 3;
		cp = c & 0x0f;
	} else if (c >= 0xf0 && c <= 0xf4) {
		n = 4;
		cp = c & 0x07;
	} else
		return (0);
	if (n > left)
		return (0);
	for (i = 1; i < n; i++) {
		if ((s[i] & 0xc0) != 0x80)
			return (0);
		cp = (cp << 6) | (s[i] & 0x3f);
	}
	if ((n == 3 && cp < 0x800) || (n == 4 && cp < 0x10000) ||
	    cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff))
		return (0);
	return (n);
}

/*
 * One bounded line of text: controls (C0, DEL, C1) become spaces, runs of
 * spaces shrink to one, invalid UTF-8 becomes '?', and past
 * OPENAI_ERROR_MAX bytes the text is cut at a character and ends in "...".
 */
static char *
openai_oneline(const char *in, size_t len)
{
	const unsigned char	*s = (const unsigned char *)in, *rep;
	char			*out;
	size_t			 i = 0, o = 0, n, rn, keep = 0;
	bool			 space = false, cut = false;

	if ((out = malloc(OPENAI_ERROR_MAX + 1)) == NULL)
		return (NULL);
	while (i < len) {
		n = openai_utf8_len(s + i, len - i);
		if (n == 0) {
			rep = (const unsigned char *)"?";
			rn = 1;
			n = 1;
		} else if (s[i] <= ' ' || s[i] == 0x7f ||
		    (n == 2 && s[i] == 0xc2 && s[i + 1] < 0xa0)) {
			space = true;
			i += n;
			continue;
		} else {
			rep = s + i;
			rn = n;
		}
		if (space && o > 0) {
			if (o + 1 + rn > OPENAI_ERROR_MAX) {
				cut = true;
				break;
			}
			out[o++] = ' ';
		} else if (o + rn > OPENAI_ERROR_MAX) {
			cut = true;
			break;
		}
		space = false;
		memcpy(out + o, rep, rn);
		o += rn;
		i += n;
		if (o <= OPENAI_ERROR_MAX - 3)
			keep = o;
	}
	if (cut) {
		/* keep is a character boundary with room left for "...". */
		o = keep;
		memcpy(out + o, "...", 3);
		o += 3;
	}
	out[o] = '\0';
	return (out);
}

/* A bounded one-line copy of a JSON value: its text or its compact form. */
static char *
openai_json_text(json_t *v)
{
	char	*dump, *line;

	if (json_is_string(v))
		return (openai_oneline(json_string_value(v),
		    json_string_length(v)));
	if ((dump = json_dumps(v, JSON_COMPACT | JSON_ENCODE_ANY)) == NULL)
		return (NULL);
	line = openai_oneline(dump, strlen(dump));
	free(dump);
	return (line);
}

/* Copy of a string value, NULL when absent, not a string, empty or holding NUL. */
static char *
openai_strdup(json_t *v)
{
	if (!json_is_string(v) || json_string_length(v) == 0 ||
	    strlen(json_string_value(v)) != json_string_length(v))
		return (NULL);
	return (strdup(json_string_value(v)));
}

/* Copy of a text value, which may hold NUL: *len its bytes; NULL when absent, not a string or empty. */
static char *
openai_text_dup(json_t *v, size_t *len)
{
	char	*s;

	*len = 0;
	if (!json_is_string(v) || json_string_length(v) == 0 ||
	    (s = malloc(json_string_length(v) + 1)) == NULL)
		return (NULL);
	*len = json_string_length(v);
	memcpy(s, json_string_value(v), *len + 1);
	return (s);
}

/* Message text: a string, or the text parts of a content array; *out_len its bytes. */
static char *
openai_text(json_t *v, size_t *out_len)
{
	json_t	*part, *text;
	char	*s;
	size_t	 i, len = 0, n;

	*out_len = 0;
	if (!json_is_array(v))
		return (openai_text_dup(v, out_len));
	json_array_foreach(v, i, part) {
		text = json_is_string(part) ? part :
		    json_object_get(part, "text");
		if (json_is_string(text))
			len += json_string_length(text);
	}
	if (len == 0 || (s = malloc(len + 1)) == NULL)
		return (NULL);
	len = 0;
	json_array_foreach(v, i, part) {
		text = json_is_string(part) ? part :
		    json_object_get(part, "text");
		if (json_is_string(text)) {
			n = json_string_length(text);
			memcpy(s + len, json_string_value(text), n);
			len += n;
		}
	}
	s[len] = '\0';
	*out_len = len;
	return (s);
}

/* A token count: a non-negative integer (or integral real), not absurd. */
static bool
openai_count(json_t *v, int64_t *out)
{
	double	d;

	if (json_is_integer(v)) {
		if (json_integer_value(v) < 0 ||
		    json_integer_value(v) > OPENAI_USAGE_MAX)
			return (false);
		*out = json_integer_value(v);
		return (true);
	}
	if (json_is_real(v)) {
		d = json_real_value(v);
		if (!(d >= 0 && d <= OPENAI_USAGE_MAX) || d != floor(d))
			return (false);
		*out = (int64_t)d;
		return (true);
	}
	return (false);
}

/* Usage from a `usage` object; ignored unless both counts are sane. */
static void
openai_usage(json_t *u, struct openai_chunk *c)
{
	int64_t	p, k, t;

	if (!openai_count(json_object_get(u, "prompt_tokens"), &p) ||
	    !openai_count(json_object_get(u, "completion_tokens"), &k))
		return;
	if (!openai_count(json_object_get(u, "total_tokens"), &t) || t < p + k)
		t = p + k;
	c->has_usage = true;
	c->usage.prompt_tokens = p;
	c->usage.completion_tokens = k;
	c->usage.total_tokens = t;
	c->usage.estimated = false;
}

/* Usage from llama.cpp's `timings`, used only when `usage` is missing. */
static void
openai_timings(json_t *t, struct openai_chunk *c)
{
	int64_t	cached, prompt, predicted;

	if (!openai_count(json_object_get(t, "cache_n"), &cached) ||
	    !openai_count(json_object_get(t, "prompt_n"), &prompt) ||
	    !openai_count(json_object_get(t, "predicted_n"), &predicted))
		return;
	c->has_usage = true;
	c->usage.prompt_tokens = cached + prompt;
	c->usage.completion_tokens = predicted;
	c->usage.total_tokens = cached + prompt + predicted;
	c->usage.estimated = false;
}

/* An HTTP status carried in an error, if it looks like one. */
static int
openai_status(json_t *v)
{
	json_int_t	s;

	if (!json_is_integer(v))
		return (0);
	s = json_integer_value(v);
	return (s >= 100 && s <= 599 ? (int)s : 0);
}

/* FastAPI's `detail`: a string, or a list of {loc, msg}. */
static char *
openai_detail_text(json_t *detail)
{
	json_t		*item, *loc, *part, *msg;
	char		*line, *buf = NULL;
	size_t		 i, j, size = 0;
	FILE		*f;

	if (!json_is_array(detail))
		return (openai_json_text(detail));
	if ((f = open_memstream(&buf, &size)) == NULL)
		return (NULL);
	json_array_foreach(detail, i, item) {
		if (i > 0)
			fputs("; ", f);
		loc = json_object_get(item, "loc");
		json_array_foreach(loc, j, part) {
			if (json_is_string(part))
				fprintf(f, "%s%s", j > 0 ? "." : "",
				    json_string_value(part));
			else if (json_is_integer(part))
				fprintf(f, "%s%lld", j > 0 ? "." : "",
				    (long long)json_integer_value(part));
		}
		msg = json_object_get(item, "msg");
		if (json_is_string(msg))
			fprintf(f, "%s%s", json_array_size(loc) > 0 ? ": " : "",
			    json_string_value(msg));
		if (size > OPENAI_ERROR_MAX * 2)
			break;
	}
	if (fclose(f) != 0) {
		free(buf);
		return (NULL);
	}
	line = openai_oneline(buf, size);
	free(buf);
	return (line);
}

/*
 * If root is an error of any dialect, fill the error fields and return
 * true. The message is never NULL afterwards, unless memory ran out.
 */
static bool
openai_error_fill(json_t *root, struct openai_chunk *c)
{
	json_t	*e, *msg = NULL, *type = NULL, *code = NULL, *detail;

	e = json_object_get(root, "error");
	if (json_is_object(e)) {
		/* OpenAI, llama.cpp, Ollama, vLLM, LocalAI. */
		msg = json_object_get(e, "message");
		type = json_object_get(e, "type");
		code = json_object_get(e, "code");
		if (!json_is_string(type) && json_is_string(code))
			type = code;
		c->error_status = openai_status(code);
		if (c->error_status == 0)
			c->error_status = openai_status(json_object_get(e,
			    "http_status_code"));
		/* Without a message, the type says it, or else the object. */
		if ((msg == NULL || json_is_null(msg)) && !json_is_string(type))
			msg = json_object_size(e) > 0 ? e : NULL;
	} else if (json_is_string(e) && json_string_length(e) > 0) {
		/* TGI: {"error": "...", "error_type": "..."}. */
		msg = e;
		type = json_object_get(root, "error_type");
	} else if (json_is_string(json_object_get(root, "object")) &&
	    strcmp(json_string_value(json_object_get(root, "object")),
	    "error") == 0) {
		/* vLLM before the nested form. */
		msg = json_object_get(root, "message");
		type = json_object_get(root, "type");
		c->error_status = openai_status(json_object_get(root, "code"));
	} else if ((detail = json_object_get(root, "detail")) != NULL &&
	    json_object_get(root, "choices") == NULL) {
		/* FastAPI's HTTPException and validation errors. */
		c->error_message = openai_detail_text(detail);
		goto done;
	} else
		return (false);

	if (msg != NULL && !json_is_null(msg))
		c->error_message = openai_json_text(msg);
	if (json_is_string(type) && json_string_length(type) > 0)
		c->error_type = openai_oneline(json_string_value(type),
		    json_string_length(type));
done:
	if (c->error_message != NULL && c->error_message[0] == '\0') {
		free(c->error_message);
		c->error_message = NULL;
	}
	if (c->error_message == NULL)
		c->error_message = strdup(c->error_type != NULL ?
		    c->error_type : "unknown error");
	return (true);
}

/* The choice with index 0 (or without an index). */
static json_t *
openai_choice(json_t *choices)
{
	json_t		*ch, *idx;
	size_t		 i;

	json_array_foreach(choices, i, ch) {
		if (!json_is_object(ch))
			continue;
		idx = json_object_get(ch, "index");
		if (idx == NULL || json_is_null(idx) ||
		    (json_is_integer(idx) && json_integer_value(idx) == 0))
			return (ch);
	}
	return (NULL);
}

/* --- stream chunks, read in place ------------------------------------- */

/*
 * jansson offers no pull parser: json_loadb builds a whole document (an
 * allocation per value, a hash table per object) that a stream chunk only
 * needs for four strings, and that was most of the daemon's time per delta.
 * The usual chunk is therefore read here in place, in one pass that checks
 * all of it as strict JSON (structure, numbers, escapes, UTF-8) and copies
 * out only what is kept. Anything it does not read exactly as openai_fill
 * would (errors, usage whose counts are not plain integers, timings, tool
 * calls, content parts, the "message" form, several choices, a repeated
 * key, an escaped key, a number jansson might refuse as too large, \u0000,
 * nesting past OPENAI_FAST_DEPTH) makes it give up, and jansson parses the
 * chunk: every malformed chunk is still refused by jansson, with its
 * message. check_openai compares both on a corpus and on every one-byte
 * damage of it.
 */
#define OPENAI_FAST_DEPTH 32

struct openai_fast {
	const char	*p, *end;
};

/* Four hex digits. */
static unsigned int
openai_fast_hex4(const char *s)
{
	unsigned int	v = 0;
	int		i;

	for (i = 0; i < 4; i++) {
		int c = (unsigned char)s[i];
		v = v << 4 | (unsigned int)(isdigit(c) ? c - '0' : (c | 0x20) - 'a' + 10);
	}
	return (v);
}

/* The first byte from p on that is not printable ASCII, or is a quote or backslash. */
static inline const unsigned char *
openai_fast_plain(const unsigned char *p, const unsigned char *end)
{
#ifdef __SSE2__
	const __m128i quote = _mm_set1_epi8('"'), backslash = _mm_set1_epi8('\\');
	const __m128i space = _mm_set1_epi8(0x20);

	while (end - p >= 16) {
		__m128i v = _mm_loadu_si128((const __m128i *)(const void *)p);
		/* signed: below 0x20 is a control byte or one of 0x80 and up */
		__m128i stop = _mm_or_si128(_mm_cmplt_epi8(v, space),
		    _mm_or_si128(_mm_cmpeq_epi8(v, quote), _mm_cmpeq_epi8(v, backslash)));
		int mask = _mm_movemask_epi8(stop);
		if (mask != 0)
			return p + __builtin_ctz((unsigned int)mask);
		p += 16;
	}
#endif
	while (p < end && *p >= 0x20 && *p < 0x80 && *p != '"' && *p != '\\')
		p++;
	return p;
}

/* A JSON string at f->p (on its quote): bounds of its body, escapes seen. */
static bool __attribute__((noinline))
openai_fast_string_any(struct openai_fast *f, const char **s, size_t *len,
    bool *escaped)
{
	const unsigned char	*p = (const unsigned char *)f->p + 1;
	const unsigned char	*end = (const unsigned char *)f->end;
	size_t			 n;
	unsigned int		 cp;
	int			 i;

	*escaped = false;
	while (p < end) {
		/* the bulk of a string: printable ASCII but the quote and backslash */
		p = openai_fast_plain(p, end);
		if (p >= end)
			break;
		if (*p == '"') {
			*s = f->p + 1;
			*len = (size_t)((const char *)p - *s);
			f->p = (const char *)p + 1;
			return (true);
		}
		if (*p == '\\') {
			*escaped = true;
			if (p + 1 >= end)
				return (false);
			if (p[1] == 'u') {
				/* \u0000 and unpaired surrogates are jansson's to judge */
				if (p + 6 > end)
					return (false);
				for (i = 2; i < 6; i++)
					if (!isxdigit(p[i]))
						return (false);
				cp = openai_fast_hex4((const char *)p + 2);
				p += 6;
				if (cp == 0 || (cp >= 0xdc00 && cp <= 0xdfff))
					return (false);
				if (cp >= 0xd800 && cp <= 0xdbff) {
					if (p + 6 > end || p[0] != '\\' || p[1] != 'u')
						return (false);
					for (i = 2; i < 6; i++)
						if (!isxdigit(p[i]))
							return (false);
					cp = openai_fast_hex4((const char *)p + 2);
					if (cp < 0xdc00 || cp > 0xdfff)
						return (false);
					p += 6;
				}
			} else if (strchr("\"\\/bfnrt", p[1]) != NULL && p[1] != '\0')
				p += 2;
			else
				return (false);
		} else if (*p < 0x20)
			return (false);
		else if (*p < 0x80)
			p++;
		else {
			if ((n = openai_utf8_len(p, (size_t)(end - p))) == 0)
				return (false);
			p += n;
		}
	}
	return (false);
}

/* The same; a string of plain printable ASCII, the usual kind, without a call. */
static inline bool
openai_fast_string(struct openai_fast *f, const char **s, size_t *len,
    bool *escaped)
{
	const unsigned char	*p = openai_fast_plain((const unsigned char *)f->p + 1,
	    (const unsigned char *)f->end);

	if (p < (const unsigned char *)f->end && *p == '"') {
		*escaped = false;
		*s = f->p + 1;
		*len = (size_t)((const char *)p - *s);
		f->p = (const char *)p + 1;
		return (true);
	}
	return (openai_fast_string_any(f, s, len, escaped));
}

/*
 * A malloc'd copy of a checked string body, escapes decoded; NULL (with
 * *fail false) for an empty string, *fail for what jansson must judge
 * (\u0000, a lone surrogate) or no memory.
 */
static char *
openai_fast_copy(const char *s, size_t len, bool escaped, bool *fail)
{
	char		*out, *o;
	const char	*end = s + len;
	unsigned int	 cp, lo;

	*fail = false;
	if (len == 0)
		return (NULL);
	if ((out = malloc(len + 1)) == NULL) {
		*fail = true;
		return (NULL);
	}
	if (!escaped) {
		memcpy(out, s, len);
		out[len] = '\0';
		return (out);
	}
	for (o = out; s < end; ) {
		if (*s != '\\') {
			*o++ = *s++;
			continue;
		}
		switch (s[1]) {
		case 'b': *o++ = '\b'; s += 2; continue;
		case 'f': *o++ = '\f'; s += 2; continue;
		case 'n': *o++ = '\n'; s += 2; continue;
		case 'r': *o++ = '\r'; s += 2; continue;
		case 't': *o++ = '\t'; s += 2; continue;
		case 'u': break;
		default: *o++ = s[1]; s += 2; continue;
		}
		cp = openai_fast_hex4(s + 2);
		s += 6;
		if (cp >= 0xd800 && cp <= 0xdbff) {
			if (end - s < 6 || s[0] != '\\' || s[1] != 'u')
				goto judge;
			lo = openai_fast_hex4(s + 2);
			if (lo < 0xdc00 || lo > 0xdfff)
				goto judge;
			cp = 0x10000 + ((cp - 0xd800) << 10) + (lo - 0xdc00);
			s += 6;
		} else if (cp == 0 || (cp >= 0xdc00 && cp <= 0xdfff))
			goto judge;
		if (cp < 0x80)
			*o++ = (char)cp;
		else if (cp < 0x800) {
			*o++ = (char)(0xc0 | cp >> 6);
			*o++ = (char)(0x80 | (cp & 0x3f));
		} else if (cp < 0x10000) {
			*o++ = (char)(0xe0 | cp >> 12);
			*o++ = (char)(0x80 | ((cp >> 6) & 0x3f));
			*o++ = (char)(0x80 | (cp & 0x3f));
		} else {
			*o++ = (char)(0xf0 | cp >> 18);
			*o++ = (char)(0x80 | ((cp >> 12) & 0x3f));
			*o++ = (char)(0x80 | ((cp >> 6) & 0x3f));
			*o++ = (char)(0x80 | (cp & 0x3f));
		}
	}
	*o = '\0';
	if (o == out) {
		free(out);
		return (NULL);
	}
	return (out);
judge:
	free(out);
	*fail = true;
	return (NULL);
}

static void
openai_fast_ws(struct openai_fast *f)
{
	while (f->p < f->end && (*f->p == ' ' || *f->p == '\t' || *f->p == '\n' ||
	    *f->p == '\r'))
		f->p++;
}

/* Whether the next bytes are the literal word. */
static bool
openai_fast_word(struct openai_fast *f, const char *word)
{
	size_t	n = strlen(word);

	if ((size_t)(f->end - f->p) < n || memcmp(f->p, word, n) != 0)
		return (false);
	f->p += n;
	return (true);
}

/* A number of at most 15 characters without an exponent (jansson takes those). */
static bool
openai_fast_number(struct openai_fast *f)
{
	const char	*p = f->p, *start = f->p;

	if (p < f->end && *p == '-')
		p++;
	if (p < f->end && *p == '0')
		p++;
	else if (p < f->end && *p >= '1' && *p <= '9')
		while (p < f->end && isdigit((unsigned char)*p))
			p++;
	else
		return (false);
	if (p < f->end && *p == '.') {
		p++;
		if (p >= f->end || !isdigit((unsigned char)*p))
			return (false);
		while (p < f->end && isdigit((unsigned char)*p))
			p++;
	}
	if (p < f->end && (*p == 'e' || *p == 'E'))
		return (false);
	if (p - start > 15)
		return (false);
	f->p = p;
	return (true);
}

/* The integer 0 (not 0.0 nor 0e0: jansson makes those reals). */
static bool
openai_fast_zero(struct openai_fast *f)
{
	if (!openai_fast_word(f, "0"))
		return (false);
	return (f->p >= f->end || (*f->p != '.' && *f->p != 'e' && *f->p != 'E' &&
	    !isdigit((unsigned char)*f->p)));
}

/* Skip one value, checking it. */
static bool
openai_fast_skip(struct openai_fast *f, int depth)
{
	const char	*s;
	size_t		 len;
	bool		 esc, first = true;
	char		 close;

	openai_fast_ws(f);
	if (f->p >= f->end)
		return (false);
	switch (*f->p) {
	case '"':
		return (openai_fast_string(f, &s, &len, &esc));
	case 't':
		return (openai_fast_word(f, "true"));
	case 'f':
		return (openai_fast_word(f, "false"));
	case 'n':
		return (openai_fast_word(f, "null"));
	case '{':
	case '[':
		break;
	default:
		return (openai_fast_number(f));
	}
	if (depth >= OPENAI_FAST_DEPTH)
		return (false);
	close = *f->p == '{' ? '}' : ']';
	f->p++;
	for (;;) {
		openai_fast_ws(f);
		if (f->p < f->end && *f->p == close && first) {
			f->p++;
			return (true);
		}
		if (close == '}') {
			if (f->p >= f->end || *f->p != '"' ||
			    !openai_fast_string(f, &s, &len, &esc))
				return (false);
			openai_fast_ws(f);
			if (f->p >= f->end || *f->p++ != ':')
				return (false);
		}
		if (!openai_fast_skip(f, depth + 1))
			return (false);
		openai_fast_ws(f);
		if (f->p < f->end && *f->p == ',') {
			f->p++;
			first = false;
			continue;
		}
		if (f->p < f->end && *f->p == close) {
			f->p++;
			return (true);
		}
		return (false);
	}
}

/*
 * Walk an object's members: cb gets each key (unescaped keys only) with
 * f->p on its value and must consume the value. false gives up.
 */
static bool
openai_fast_object(struct openai_fast *f, bool (*cb)(struct openai_fast *,
    const char *, size_t, void *), void *arg)
{
	const char	*key;
	size_t		 klen;
	bool		 esc, first = true;

	openai_fast_ws(f);
	if (f->p >= f->end || *f->p != '{')
		return (false);
	f->p++;
	for (;;) {
		openai_fast_ws(f);
		if (first && f->p < f->end && *f->p == '}') {
			f->p++;
			return (true);
		}
		if (f->p >= f->end || *f->p != '"' ||
		    !openai_fast_string(f, &key, &klen, &esc) || esc)
			return (false);
		openai_fast_ws(f);
		if (f->p >= f->end || *f->p++ != ':')
			return (false);
		openai_fast_ws(f);
		if (!cb(f, key, klen, arg))
			return (false);
		openai_fast_ws(f);
		if (f->p < f->end && *f->p == ',') {
			f->p++;
			first = false;
			continue;
		}
		if (f->p < f->end && *f->p == '}') {
			f->p++;
			return (true);
		}
		return (false);
	}
}

/* What the walk has found, and which keys it has met (a repeat gives up). */
struct openai_fast_chunk {
	struct openai_chunk	*c;
	unsigned int		 seen;
	char			*reasoning_content;
	char			*reasoning;
};

enum {
	FAST_CHOICES = 1 << 0, FAST_MODEL = 1 << 1, FAST_USAGE = 1 << 2,
	FAST_OBJECT = 1 << 3, FAST_INDEX = 1 << 4, FAST_DELTA = 1 << 5,
	FAST_FINISH = 1 << 6, FAST_CONTENT = 1 << 7, FAST_RC = 1 << 8,
	FAST_R = 1 << 9, FAST_TOOLS = 1 << 10, FAST_UP = 1 << 11,
	FAST_UC = 1 << 12, FAST_UT = 1 << 13
};

/* Whether key (len klen) is name. */
static bool
openai_fast_is(const char *key, size_t klen, const char *name)
{
	return (strlen(name) == klen && memcmp(key, name, klen) == 0);
}

/* Mark a key met; false when it was met before. */
static bool
openai_fast_once(struct openai_fast_chunk *fc, unsigned int bit)
{
	if (fc->seen & bit)
		return (false);
	fc->seen |= bit;
	return (true);
}

/* A string or null into *out (NULL for null or ""); anything else gives up. */
static bool
openai_fast_text(struct openai_fast *f, char **out)
{
	const char	*s;
	size_t		 len;
	bool		 esc, fail;

	if (f->p < f->end && *f->p == 'n')
		return (openai_fast_word(f, "null"));
	if (f->p >= f->end || *f->p != '"' || !openai_fast_string(f, &s, &len, &esc))
		return (false);
	*out = openai_fast_copy(s, len, esc, &fail);
	return (!fail);
}

static bool
openai_fast_delta_cb(struct openai_fast *f, const char *key, size_t klen,
    void *arg)
{
	struct openai_fast_chunk	*fc = arg;

	if (openai_fast_is(key, klen, "content"))
		return (openai_fast_once(fc, FAST_CONTENT) &&
		    openai_fast_text(f, &fc->c->content));
	if (openai_fast_is(key, klen, "reasoning_content"))
		return (openai_fast_once(fc, FAST_RC) &&
		    openai_fast_text(f, &fc->reasoning_content));
	if (openai_fast_is(key, klen, "reasoning"))
		return (openai_fast_once(fc, FAST_R) &&
		    openai_fast_text(f, &fc->reasoning));
	if (openai_fast_is(key, klen, "tool_calls")) {
		/* null or [] carry nothing; calls go to jansson */
		if (!openai_fast_once(fc, FAST_TOOLS))
			return (false);
		if (openai_fast_word(f, "null"))
			return (true);
		if (!openai_fast_word(f, "["))
			return (false);
		openai_fast_ws(f);
		return (openai_fast_word(f, "]"));
	}
	return (openai_fast_skip(f, 3));
}

static bool
openai_fast_choice_cb(struct openai_fast *f, const char *key, size_t klen,
    void *arg)
{
	struct openai_fast_chunk	*fc = arg;

	if (openai_fast_is(key, klen, "index"))
		return (openai_fast_once(fc, FAST_INDEX) &&
		    (openai_fast_word(f, "null") || openai_fast_zero(f)));
	if (openai_fast_is(key, klen, "delta"))
		return (openai_fast_once(fc, FAST_DELTA) &&
		    openai_fast_object(f, openai_fast_delta_cb, fc));
	if (openai_fast_is(key, klen, "finish_reason"))
		return (openai_fast_once(fc, FAST_FINISH) &&
		    openai_fast_text(f, &fc->c->finish_reason));
	if (openai_fast_is(key, klen, "message"))
		return (false);
	return (openai_fast_skip(f, 2));
}

/* A token count as jansson reads it: a plain integer from 0 to OPENAI_USAGE_MAX. */
static bool
openai_fast_count(struct openai_fast *f, int64_t *out)
{
	const char	*p = f->p;
	int64_t		 v = 0;

	if (p >= f->end || !isdigit((unsigned char)*p))
		return (false);     /* negative, real, null, a string: jansson decides */
	if (*p == '0' && p + 1 < f->end && isdigit((unsigned char)p[1]))
		return (false);     /* a leading zero is not JSON */
	while (p < f->end && isdigit((unsigned char)*p)) {
		v = v * 10 + (*p++ - '0');
		if (v > OPENAI_USAGE_MAX)
			return (false);
	}
	if (p < f->end && (*p == '.' || *p == 'e' || *p == 'E'))
		return (false);     /* jansson makes a real of it */
	*out = v;
	f->p = p;
	return (true);
}

static bool
openai_fast_usage_cb(struct openai_fast *f, const char *key, size_t klen,
    void *arg)
{
	struct openai_fast_chunk	*fc = arg;
	struct usage			*u = &fc->c->usage;

	if (openai_fast_is(key, klen, "prompt_tokens"))
		return (openai_fast_once(fc, FAST_UP) &&
		    openai_fast_count(f, &u->prompt_tokens));
	if (openai_fast_is(key, klen, "completion_tokens"))
		return (openai_fast_once(fc, FAST_UC) &&
		    openai_fast_count(f, &u->completion_tokens));
	if (openai_fast_is(key, klen, "total_tokens"))
		return (openai_fast_once(fc, FAST_UT) &&
		    openai_fast_count(f, &u->total_tokens));
	return (openai_fast_skip(f, 2));
}

/*
 * A usage object whose counts are plain integers, as openai_usage reads it;
 * anything else (a count missing, real, negative or too large, which leaves
 * the timings to decide) goes to jansson.
 */
static bool
openai_fast_usage(struct openai_fast *f, struct openai_fast_chunk *fc)
{
	struct usage	*u = &fc->c->usage;

	if (!openai_fast_object(f, openai_fast_usage_cb, fc) ||
	    (fc->seen & (FAST_UP | FAST_UC)) != (FAST_UP | FAST_UC))
		return (false);
	if (!(fc->seen & FAST_UT) ||
	    u->total_tokens < u->prompt_tokens + u->completion_tokens)
		u->total_tokens = u->prompt_tokens + u->completion_tokens;
	u->estimated = false;
	fc->c->has_usage = true;
	return (true);
}

static bool
openai_fast_root_cb(struct openai_fast *f, const char *key, size_t klen,
    void *arg)
{
	struct openai_fast_chunk	*fc = arg;
	const char			*s;
	size_t				 len;
	bool				 esc;

	if (openai_fast_is(key, klen, "choices")) {
		if (!openai_fast_once(fc, FAST_CHOICES) || !openai_fast_word(f, "["))
			return (false);
		openai_fast_ws(f);
		if (openai_fast_word(f, "]"))
			return (true);
		if (!openai_fast_object(f, openai_fast_choice_cb, fc))
			return (false);
		openai_fast_ws(f);
		return (openai_fast_word(f, "]"));     /* one choice only */
	}
	if (openai_fast_is(key, klen, "model")) {
		if (!openai_fast_once(fc, FAST_MODEL))
			return (false);
		if (fc->c->model_known && f->p < f->end && *f->p == '"')
			return (openai_fast_string(f, &s, &len, &esc));
		return (openai_fast_text(f, &fc->c->model));
	}
	if (openai_fast_is(key, klen, "usage")) {
		if (!openai_fast_once(fc, FAST_USAGE))
			return (false);
		if (openai_fast_word(f, "null"))
			return (true);
		return (openai_fast_usage(f, fc));
	}
	if (openai_fast_is(key, klen, "object")) {
		if (!openai_fast_once(fc, FAST_OBJECT))
			return (false);
		if (f->p < f->end && *f->p == '"') {
			if (!openai_fast_string(f, &s, &len, &esc) || esc)
				return (false);
			return (!(len == 5 && memcmp(s, "error", 5) == 0));
		}
		return (openai_fast_skip(f, 1));
	}
	if (openai_fast_is(key, klen, "error") ||
	    openai_fast_is(key, klen, "detail") ||
	    openai_fast_is(key, klen, "timings"))
		return (false);
	return (openai_fast_skip(f, 1));
}

/*
 * Read a usual stream chunk in place: 1 when c is filled, 0 when jansson
 * must parse it (c is then cleared).
 */
static int
openai_fast_chunk(const char *json, size_t len, struct openai_chunk *c)
{
	struct openai_fast		f = { json, json + len };
	struct openai_fast_chunk	fc;

	memset(&fc, 0, sizeof fc);
	fc.c = c;
	if (!openai_fast_object(&f, openai_fast_root_cb, &fc))
		goto slow;
	openai_fast_ws(&f);
	if (f.p != f.end)
		goto slow;
	if (fc.reasoning_content != NULL) {
		c->reasoning = fc.reasoning_content;
		free(fc.reasoning);
	} else
		c->reasoning = fc.reasoning;
	/* what is read here holds no NUL: \u0000 goes to jansson */
	c->content_len = c->content != NULL ? strlen(c->content) : 0;
	c->reasoning_len = c->reasoning != NULL ? strlen(c->reasoning) : 0;
	return (1);
slow:
	free(fc.reasoning_content);
	free(fc.reasoning);
	openai_chunk_clear(c);
	return (0);
}

/* Fill a chunk from a parsed reply: a stream chunk or a whole response. */
static int
openai_fill(json_t *root, bool stream, struct openai_chunk *c, char *cause,
    size_t cause_len)
{
	json_t	*ch, *msg, *tc, *arr, *u, *r;

	if (!json_is_object(root)) {
		snprintf(cause, cause_len, "reply is not a JSON object");
		return (-1);
	}
	if (openai_error_fill(root, c))
		return (0);

	c->model = openai_strdup(json_object_get(root, "model"));
	if ((ch = openai_choice(json_object_get(root, "choices"))) != NULL) {
		msg = json_object_get(ch, stream ? "delta" : "message");
		if (!json_is_object(msg))
			msg = json_object_get(ch, stream ? "message" : "delta");
		if (json_is_object(msg)) {
			c->content = openai_text(json_object_get(msg,
			    "content"), &c->content_len);
			r = json_object_get(msg, "reasoning_content");
			if (!json_is_string(r) || json_string_length(r) == 0)
				r = json_object_get(msg, "reasoning");
			c->reasoning = openai_text_dup(r, &c->reasoning_len);

			tc = json_object_get(msg, "tool_calls");
			arr = NULL;
			if (json_is_object(tc)) {
				/* Older TGI sends one call, not an array. */
				if ((arr = json_array()) == NULL ||
				    json_array_append(arr, tc) != 0) {
					json_decref(arr);
					goto nomem;
				}
				tc = arr;
			}
			if (json_is_array(tc) && json_array_size(tc) > 0 &&
			    openai_raw_set(&c->tool_calls, tc) != 0) {
				json_decref(arr);
				snprintf(cause, cause_len,
				    "tool_calls cannot be converted");
				return (-1);
			}
			json_decref(arr);
		}
		c->finish_reason = openai_strdup(json_object_get(ch,
		    "finish_reason"));
	}

	u = json_object_get(root, "usage");
	if (json_is_object(u))
		openai_usage(u, c);
	if (!c->has_usage && json_is_object(json_object_get(root, "timings")))
		openai_timings(json_object_get(root, "timings"), c);
	return (0);

nomem:
	snprintf(cause, cause_len, "out of memory");
	return (-1);
}

/* Parse JSON text and fill the chunk. */
static int
openai_parse(const char *json, size_t len, bool stream,
    struct openai_chunk *c, char *cause, size_t cause_len)
{
	json_error_t	 err;
	json_t		*root;
	int		 rc;

	openai_chunk_clear(c);
	/* U+0000 is a character like any other in a reply's text */
	if ((root = json_loadb(json, len, JSON_ALLOW_NUL, &err)) == NULL) {
		snprintf(cause, cause_len, "malformed JSON at %d:%d: %s",
		    err.line, err.column, err.text);
		return (-1);
	}
	rc = openai_fill(root, stream, c, cause, cause_len);
	json_decref(root);
	if (rc != 0)
		openai_chunk_clear(c);
	return (rc);
}

/* Whether data is the stream terminator, spaces around it allowed. */
static bool
openai_is_done(const char *s, size_t len)
{
	while (len > 0 && isspace((unsigned char)*s)) {
		s++;
		len--;
	}
	while (len > 0 && isspace((unsigned char)s[len - 1]))
		len--;
	return (len == 6 && memcmp(s, "[DONE]", 6) == 0);
}

/* Parse one stream chunk's data. */
int
openai_parse_chunk(const char *json, size_t len, struct openai_chunk *c,
    char *cause, size_t cause_len)
{
	bool model_known = c->model_known;

	if (openai_is_done(json, len)) {
		openai_chunk_clear(c);
		c->done = true;
		return (0);
	}
	openai_chunk_clear(c);
	c->model_known = model_known;
	if (openai_fast_chunk(json, len, c) == 1)
		return (0);
	return (openai_parse(json, len, true, c, cause, cause_len));
}

/* Parse one stream chunk's data through a jansson document only. */
int
openai_parse_chunk_json(const char *json, size_t len, struct openai_chunk *c,
    char *cause, size_t cause_len)
{
	if (openai_is_done(json, len)) {
		openai_chunk_clear(c);
		c->done = true;
		return (0);
	}
	return (openai_parse(json, len, true, c, cause, cause_len));
}

/* Parse one stream event, named or not. */
int
openai_parse_event(const char *event, const char *data, size_t len,
    struct openai_chunk *c, char *cause, size_t cause_len)
{
	json_t	*root, *wrap;

	if (event == NULL || strcmp(event, "message") == 0)
		return (openai_parse_chunk(data, len, c, cause, cause_len));
	openai_chunk_clear(c);
	if (strcmp(event, "error") != 0)
		return (0);

	/*
	 * An error event: any dialect's error JSON, a bare error object (old
	 * llama.cpp's "error: {code, message, type}"), other JSON, or text.
	 */
	root = json_loadb(data, len, 0, NULL);
	if (json_is_object(root) && !json_is_object(json_object_get(root,
	    "error")) && json_is_string(json_object_get(root, "message"))) {
		wrap = json_pack("{s:O}", "error", root);
		json_decref(root);
		root = wrap;
	}
	if (root == NULL || !json_is_object(root) ||
	    !openai_error_fill(root, c)) {
		openai_chunk_clear(c);
		c->error_message = root != NULL ? openai_json_text(root) :
		    openai_oneline(data, len);
		if (c->error_message != NULL && c->error_message[0] == '\0') {
			free(c->error_message);
			c->error_message = strdup("error event without data");
		}
	}
	json_decref(root);
	if (c->error_message == NULL) {
		snprintf(cause, cause_len, "out of memory");
		return (-1);
	}
	return (0);
}

/* Parse a whole non-stream response. */
int
openai_parse_response(const char *json, size_t len, struct openai_chunk *c,
    char *cause, size_t cause_len)
{
	return (openai_parse(json, len, false, c, cause, cause_len));
}

/* Release what a chunk holds and zero it. */
void
openai_chunk_clear(struct openai_chunk *c)
{
	/* cleared twice per chunk, mostly empty: only what is held is freed */
	if (c->content != NULL)
		free(c->content);
	if (c->reasoning != NULL)
		free(c->reasoning);
	if (c->tool_calls.data != NULL)
		free(c->tool_calls.data);
	if (c->finish_reason != NULL)
		free(c->finish_reason);
	if (c->model != NULL)
		free(c->model);
	if (c->error_message != NULL)
		free(c->error_message);
	if (c->error_type != NULL)
		free(c->error_type);
	memset(c, 0, sizeof *c);
}

/* Find needle in s ignoring ASCII case; the offset or -1. */
static ssize_t
openai_find_nocase(const char *s, size_t len, const char *needle)
{
	size_t	n = strlen(needle), i;

	for (i = 0; n <= len && i <= len - n; i++) {
		if (strncasecmp(s + i, needle, n) == 0)
			return ((ssize_t)i);
	}
	return (-1);
}

/* Text of an HTML error page: its title, or the text between tags. */
static char *
openai_html_text(const char *s, size_t len)
{
	ssize_t	 a, b;
	char	*text, *line;
	size_t	 i, o = 0;
	bool	 tag = false;

	if ((a = openai_find_nocase(s, len, "<title>")) >= 0) {
		a += 7;
		b = openai_find_nocase(s + a, len - a, "</title>");
		if (b > 0)
			return (openai_oneline(s + a, b));
	}
	if ((text = malloc(len + 1)) == NULL)
		return (NULL);
	for (i = 0; i < len; i++) {
		if (s[i] == '<')
			tag = true;
		else if (s[i] == '>') {
			tag = false;
			text[o++] = ' ';
		} else if (!tag)
			text[o++] = s[i];
	}
	line = openai_oneline(text, o);
	free(text);
	return (line);
}

/* A readable one-line message from an HTTP error body. */
char *
openai_error_message(const char *body, size_t len)
{
	struct openai_chunk	 c;
	json_t			*root, *m;
	char			*msg = NULL, *both;
	size_t			 i;

	if (body == NULL)
		len = 0;
	for (i = 0; i < len && isspace((unsigned char)body[i]); i++)
		;
	if (i == len)
		return (strdup("empty response body"));

	if ((root = json_loadb(body, len, 0, NULL)) != NULL) {
		memset(&c, 0, sizeof c);
		if (json_is_object(root) && openai_error_fill(root, &c)) {
			msg = c.error_message;
			c.error_message = NULL;
			if (msg != NULL && c.error_type != NULL &&
			    strcmp(msg, c.error_type) != 0 &&
			    asprintf(&both, "%s (%s)", msg, c.error_type) >= 0) {
				free(msg);
				msg = openai_oneline(both, strlen(both));
				free(both);
			}
			openai_chunk_clear(&c);
		} else if (json_is_object(root) &&
		    json_is_string(m = json_object_get(root, "message")))
			msg = openai_json_text(m);
		else
			msg = openai_json_text(root);
		json_decref(root);
	} else if (body[i] == '<')
		msg = openai_html_text(body + i, len - i);
	else
		msg = openai_oneline(body + i, len - i);

	if (msg != NULL && msg[0] == '\0') {
		free(msg);
		msg = strdup("unreadable error body");
	}
	return (msg);
}

/* Free a list of model names. */
void
openai_models_free(char **names, size_t n)
{
	size_t	i;

	for (i = 0; i < n; i++)
		free(names[i]);
	free(names);
}

/* The model names of a GET /models reply. */
int
openai_parse_models(const char *json, size_t len, char ***names, size_t *n,
    char *cause, size_t cause_len)
{
	json_error_t	 err;
	json_t		*root, *list, *item, *name;
	const char	*key = "id";
	char		**out = NULL;
	size_t		 i, count = 0, size;

	*names = NULL;
	*n = 0;
	if ((root = json_loadb(json, len, 0, &err)) == NULL) {
		snprintf(cause, cause_len, "malformed JSON at %d:%d: %s",
		    err.line, err.column, err.text);
		return (-1);
	}
	list = json_object_get(root, "data");
	if (!json_is_array(list)) {
		list = json_object_get(root, "models");     /* Ollama /api/tags */
		key = "name";
	}
	if (!json_is_array(list)) {
		json_decref(root);
		snprintf(cause, cause_len, "no model list in the reply");
		return (-1);
	}
	size = json_array_size(list);
	if (size > OPENAI_MODELS_MAX)
		size = OPENAI_MODELS_MAX;
	if (size > 0 && (out = calloc(size, sizeof *out)) == NULL)
		goto nomem;
	json_array_foreach(list, i, item) {
		if (count == size)
			break;
		name = json_object_get(item, key);
		if (!json_is_string(name))
			name = json_object_get(item, "model");
		if (!json_is_string(name) || json_string_length(name) == 0 ||
		    json_string_length(name) > OPENAI_MODEL_NAME_MAX)
			continue;
		if ((out[count] = strdup(json_string_value(name))) == NULL)
			goto nomem;
		count++;
	}
	json_decref(root);
	if (count == 0) {
		free(out);
		out = NULL;
	}
	*names = out;
	*n = count;
	return (0);

nomem:
	openai_models_free(out, count);
	json_decref(root);
	snprintf(cause, cause_len, "out of memory");
	return (-1);
}
