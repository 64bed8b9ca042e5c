/*
 * fuzz_responses.c: the Responses API translation on random bytes. The first
 * byte picks what is fed: a body (parsed, then a reply rendered whole and as
 * a stream with what it asked), or a script of chat deltas rendered as a
 * stream. A body is refused with a bounded message naming a parameter, or
 * becomes a request whose promises hold and whose upstream body is JSON;
 * what is rendered is well-formed SSE, numbered from 0, whose items are
 * added before they are filled, and whose last response holds them all.
 */
#include "config.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <event2/buffer.h>
#include <jansson.h>

#include "daemon/openai.h"
#include "daemon/responses.h"
#include "daemon/translate.h"

int LLVMFuzzerTestOneInput(const uint8_t *, size_t);

/* A parsed request: every promise of message.h and an upstream body that is JSON. */
static void
check_request(struct request *rq)
{
	struct chat_request *cr = &rq->u.chat;
	char cause[256], *body;
	json_t *j;

	if (rq->op != OP_CHAT || cr->n_messages == 0 || cr->messages == NULL)
		abort();
	for (size_t i = 0; i < cr->n_messages; i++) {
		const struct chat_message *m = &cr->messages[i];
		if (m->role == NULL || (m->content != NULL && m->content[m->content_len] != '\0') ||
		    (m->content == NULL && m->tool_calls.data == NULL))
			abort();
		if (strcmp(m->role, "tool") == 0 && m->tool_call_id == NULL)
			abort();
	}
	if (cr->max_tokens == 0 || cr->max_tokens < -1 || cr->max_tokens > MESSAGE_MAX_TOKENS)
		abort();
	body = openai_chat_body(cr, "m", cr->stream, cause, sizeof cause);
	if (body == NULL) {
		if (cause[0] == '\0')
			abort();
		return;
	}
	if ((j = json_loads(body, JSON_ALLOW_NUL, NULL)) == NULL || !json_is_object(j))
		abort();
	json_decref(j);
	free(body);
}

static char *
drain(struct evbuffer *b)
{
	size_t n = evbuffer_get_length(b);
	char *s = malloc(n + 1);

	if (s == NULL)
		abort();
	evbuffer_remove(b, s, n);
	s[n] = '\0';
	return s;
}

/*
 * Rendered events: framing, type == event name, sequence_number 0, 1, ...;
 * an item's events come after its output_item.added; the last event is the
 * final response, whose output has an item for each one added.
 */
static void
check_events(struct evbuffer *b, bool ended)
{
	char *s = drain(b), *p = s, *nl, *end;
	json_int_t seq = 0, added = 0;
	json_t *last = NULL;

	while (*p != '\0') {
		json_t *d;
		const char *name = p + 7, *type;
		if (strncmp(p, "event: ", 7) != 0 || (nl = strchr(p, '\n')) == NULL ||
		    strncmp(nl + 1, "data: ", 6) != 0 || (end = strstr(nl + 7, "\n\n")) == NULL)
			abort();
		*nl = *end = '\0';
		if ((d = json_loads(nl + 7, 0, NULL)) == NULL ||
		    (type = json_string_value(json_object_get(d, "type"))) == NULL ||
		    strcmp(type, name) != 0 ||
		    json_integer_value(json_object_get(d, "sequence_number")) != seq++)
			abort();
		if (strcmp(name, "response.output_item.added") == 0) {
			if (json_integer_value(json_object_get(d, "output_index")) != added++)
				abort();
		} else if (json_object_get(d, "output_index") != NULL &&
		    json_integer_value(json_object_get(d, "output_index")) >= added)
			abort();
		json_decref(last);
		last = d;
		p = end + 2;
	}
	if (ended) {
		json_t *r = json_object_get(last, "response");
		const char *t = json_string_value(json_object_get(last, "type"));
		if (t == NULL || (strcmp(t, "response.completed") != 0 &&
		    strcmp(t, "response.incomplete") != 0 && strcmp(t, "response.failed") != 0) ||
		    (json_integer_value(json_object_get(json_object_get(r, "usage"), "total_tokens")) < 0) ||
		    (json_int_t)json_array_size(json_object_get(r, "output")) != added)
			abort();
	}
	json_decref(last);
	free(s);
}

/* Render a script of deltas (op byte, length byte, bytes) for a request's meta. */
static void
render(const uint8_t *data, size_t size, const struct responses_meta *meta)
{
	struct responses_stream s;
	struct evbuffer *b = evbuffer_new();
	struct done_reply done;
	bool failed = false;
	static const char *const finishes[] = { "stop", "length", "tool_calls", NULL };

	if (b == NULL || responses_stream_init(&s, "resp_f", "m", 1, meta) == -1)
		abort();
	while (size >= 2 && !failed) {
		uint8_t op = data[0], n = data[1];
		struct delta_reply d;
		char *text;
		if ((size_t)n > size - 2)
			n = (uint8_t)(size - 2);
		text = strndup((const char *)data + 2, n);
		data += 2 + n;
		size -= 2 + (size_t)n;
		memset(&d, 0, sizeof d);
		switch (op % 4) {
		case 0:
		case 1:
			if (!message_utf8_valid(text, strlen(text)))
				break;
			*(op % 4 == 0 ? &d.content : &d.reasoning) = text;
			if (responses_stream_delta(&s, &d, b) == -1)
				abort();
			break;
		case 2: {
			json_t *j = json_loads(text, JSON_DECODE_ANY, NULL);
			if (j != NULL && translate_raw_set(&d.tool_calls, j) == 0) {
				if (responses_stream_delta(&s, &d, b) == -1)
					abort();
				free(d.tool_calls.data);
			}
			json_decref(j);
			break;
		}
		default:
			if (op & 0x80) {
				responses_stream_error(&s, (op & 0x40) ? "budget_exceeded" : "timeout", text,
				    b);
				failed = true;
			}
		}
		free(text);
	}
	memset(&done, 0, sizeof done);
	done.finish_reason = (char *)finishes[size % 4];
	done.usage.prompt_tokens = 3;
	done.usage.completion_tokens = (int64_t)size;
	if (!failed && responses_stream_done(&s, &done, b) == -1)
		abort();
	check_events(b, true);
	responses_stream_clear(&s);
	evbuffer_free(b);
}

/* A whole response for a request's meta: JSON, with as many items as the reply has parts. */
static void
whole(const struct responses_meta *meta, const uint8_t *data, size_t size)
{
	struct evbuffer *b = evbuffer_new();
	struct done_reply done;
	json_t *calls = json_loads((const char *)data, JSON_DECODE_ANY | JSON_DISABLE_EOF_CHECK,
	    NULL);
	char *s;

	(void)size;
	memset(&done, 0, sizeof done);
	done.content = "text";
	done.reasoning = "thought";
	done.finish_reason = "stop";
	if (json_is_array(calls) && translate_raw_set(&done.tool_calls, calls) == -1)
		abort();
	if (responses_object_write(b, "resp_w", "m", 1, meta, &done) == 0) {
		json_t *j;
		s = drain(b);
		if ((j = json_loads(s, 0, NULL)) == NULL ||
		    json_array_size(json_object_get(j, "output")) < 2)
			abort();
		json_decref(j);
		free(s);
	}
	free(done.tool_calls.data);
	json_decref(calls);
	evbuffer_free(b);
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct responses_error err;
	struct responses_meta meta;
	struct request *rq;

	if (size == 0)
		return 0;
	if (data[0] % 2 == 1) {
		render(data + 1, size - 1, NULL);
		return 0;
	}
	rq = responses_parse((const char *)data + 1, size - 1, &meta, &err);
	if (rq == NULL) {
		size_t m = strnlen(err.message, sizeof err.message);
		if (m == 0 || m == sizeof err.message ||
		    strnlen(err.param, sizeof err.param) == sizeof err.param ||
		    meta.echo != NULL || meta.names != NULL)
			abort();
		return 0;
	}
	check_request(rq);
	if (meta.stream != rq->u.chat.stream || !json_is_object(meta.echo) ||
	    !json_is_object(meta.names))
		abort();
	/* the reply to it, rendered with what it asked: the calls are its own tools' */
	{
		json_t *x = rq->u.chat.extra.data != NULL ? openai_msgpack_to_json(
		    rq->u.chat.extra.data, rq->u.chat.extra.len) : NULL, *t, *calls = json_array();
		size_t i;
		char *text;
		json_array_foreach(json_object_get(x, "tools"), i, t)
			json_array_append_new(calls, json_pack("{s:s, s:O}", "type", "function",
			    "function", json_object_get(t, "function")));
		text = json_dumps(calls, JSON_COMPACT);
		if (text != NULL)
			whole(&meta, (const uint8_t *)text, strlen(text));
		free(text);
		json_decref(calls);
		json_decref(x);
	}
	render(data + 1, size - 1, &meta);
	responses_meta_clear(&meta);
	message_request_free(rq);
	return 0;
}
