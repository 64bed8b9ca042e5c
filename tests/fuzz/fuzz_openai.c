/*
 * fuzz_openai.c: every parser of upstream replies on random bytes, with
 * the promises of each checked: bounded clean error messages, tool calls
 * that convert back, values that survive a msgpack round trip.
 */
#include "config.h"

#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "daemon/openai.h"

int LLVMFuzzerTestOneInput(const uint8_t *, size_t);

/* A message must be bounded, valid UTF-8 and free of control bytes. */
static void
check_line(const char *s)
{
	json_t	*v;
	size_t	 i, len;

	if (s == NULL)
		abort();
	len = strlen(s);
	if (len > OPENAI_ERROR_MAX)
		abort();
	for (i = 0; i < len; i++) {
		if ((unsigned char)s[i] < 0x20 || s[i] == 0x7f)
			abort();
	}
	if ((v = json_stringn(s, len)) == NULL)
		abort();
	json_decref(v);
}

/* A reply's text: its length (U+0000 may be in it) and valid UTF-8, or none at all. */
static void
check_text(const char *s, size_t len)
{
	json_t	*v;

	if (s == NULL) {
		if (len != 0)
			abort();
		return;
	}
	if (len == 0 || s[len] != '\0' || (v = json_stringn(s, len)) == NULL)
		abort();
	json_decref(v);
}

/* What a parsed chunk promises. */
static void
check_chunk(const struct openai_chunk *c)
{
	json_t	*v;

	check_text(c->content, c->content_len);
	check_text(c->reasoning, c->reasoning_len);
	if (c->tool_calls.data != NULL) {
		v = openai_msgpack_to_json(c->tool_calls.data,
		    c->tool_calls.len);
		if (v == NULL || !json_is_array(v) || json_array_size(v) == 0)
			abort();
		json_decref(v);
	}
	if (c->error_message != NULL)
		check_line(c->error_message);
	if (c->has_usage && (c->usage.prompt_tokens < 0 ||
	    c->usage.completion_tokens < 0 || c->usage.total_tokens <
	    c->usage.prompt_tokens + c->usage.completion_tokens ||
	    c->usage.prompt_tokens > OPENAI_USAGE_MAX))
		abort();
}

/* msgpack -> JSON -> msgpack -> JSON gives the same value. */
static void
round_trip(const uint8_t *data, size_t size)
{
	msgpack_sbuffer	 sb;
	msgpack_packer	 pk;
	json_t		*a, *b;

	if ((a = openai_msgpack_to_json(data, size)) == NULL)
		return;
	msgpack_sbuffer_init(&sb);
	msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
	if (openai_json_to_msgpack(a, &pk) != 0)
		abort();
	b = openai_msgpack_to_json((uint8_t *)sb.data, sb.size);
	if (b == NULL || !json_equal(a, b))
		abort();
	json_decref(a);
	json_decref(b);
	msgpack_sbuffer_destroy(&sb);
}

/* The body built around random `extra` bytes is JSON or refused. */
static void
body(const uint8_t *data, size_t size)
{
	struct chat_message	 m = { 0 };
	struct chat_request	 req = { 0 };
	json_t			*v;
	char			 cause[256], *b;

	m.role = "user";
	m.content = "hello";
	req.messages = &m;
	req.n_messages = 1;
	req.max_tokens = -1;
	req.temperature = NAN;
	req.top_p = NAN;
	req.extra.data = (uint8_t *)data;
	req.extra.len = size;
	if ((b = openai_chat_body(&req, "model", true, cause,
	    sizeof cause)) == NULL)
		return;
	v = json_loads(b, JSON_ALLOW_NUL, NULL);
	if (!json_is_object(v) ||
	    !json_is_true(json_object_get(v, "stream")))
		abort();
	json_decref(v);
	free(b);
}

/* One input: the first byte picks the parser, the rest is its input. */
int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct openai_chunk	 c = { 0 };
	char			 cause[256], **names, *msg;
	const char		*text;
	size_t			 n, i;

	if (size < 1)
		return (0);
	text = (const char *)data + 1;
	n = size - 1;
	switch (data[0] % 7) {
	case 0:
		/* the first byte's high bit: the caller has the model already */
		c.model_known = data[0] & 0x80;
		if (openai_parse_chunk(text, n, &c, cause, sizeof cause) == 0)
			check_chunk(&c);
		break;
	case 1:
		if (openai_parse_response(text, n, &c, cause,
		    sizeof cause) == 0)
			check_chunk(&c);
		break;
	case 2:
		msg = openai_error_message(text, n);
		check_line(msg);
		free(msg);
		break;
	case 3:
		if (openai_parse_models(text, n, &names, &i, cause,
		    sizeof cause) == 0)
			openai_models_free(names, i);
		break;
	case 4:
		round_trip(data + 1, n);
		break;
	case 5:
		if (openai_parse_event("error", text, n, &c, cause,
		    sizeof cause) != 0 || c.error_message == NULL)
			abort();
		check_chunk(&c);
		break;
	case 6:
		body(data + 1, n);
		break;
	}
	openai_chunk_clear(&c);
	return (0);
}
