/*
 * fuzz_anthropic.c: the Messages API translation on random bytes. The first
 * byte picks what is fed: a Messages body, a count_tokens body, a native
 * upstream's stream events (one "NAME DATA" a line) or whole reply and the
 * body forwarded to it, or a script of chat deltas rendered as a stream and
 * as a whole Message. A body is refused with a bounded message, or becomes a
 * request whose promises hold and whose upstream body is JSON; what is
 * rendered is well-formed SSE whose blocks open, fill and stop in order.
 */
#include "config.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <event2/buffer.h>
#include <jansson.h>

#include "daemon/anthropic.h"
#include "daemon/openai.h"
#include "daemon/translate.h"

int LLVMFuzzerTestOneInput(const uint8_t *, size_t);

/* A string the parser promised (its NUL-free copy is checked by reading it whole). */
static void
check_name(const char *s)
{
	if (s == NULL || strlen(s) > 1u << 26)
		abort();
}

/* A parsed request: every promise of message.h and an upstream body that is JSON. */
static void
check_request(struct request *rq, bool count)
{
	struct chat_request *cr = &rq->u.chat;
	char cause[256], *body;
	json_t *j;

	if (rq->op != OP_CHAT || cr->n_messages == 0 || cr->messages == NULL)
		abort();
	for (size_t i = 0; i < cr->n_messages; i++) {
		const struct chat_message *m = &cr->messages[i];
		check_name(m->role);
		if (m->tool_call_id != NULL)
			check_name(m->tool_call_id);
		if (m->content != NULL && m->content[m->content_len] != '\0')
			abort();
		if (m->content == NULL && (m->content_len != 0 || m->tool_calls.data == NULL))
			abort();
	}
	if (cr->model != NULL)
		check_name(cr->model);
	for (size_t i = 0; i < cr->n_stop; i++)
		check_name(cr->stop[i]);
	if (count ? cr->max_tokens != -1 || cr->stream :
	    cr->max_tokens < 1 || cr->max_tokens > MESSAGE_MAX_TOKENS)
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

/* Take the bytes of an evbuffer as a string. */
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
 * Rendered events: "event: N\ndata: JSON\n\n" each, data.type N; message_start
 * first (or an error alone); a block starts at the next index and only one is open, a delta goes
 * to a block that started; done ends with message_delta, message_stop.
 */
static void
check_events(struct evbuffer *b, bool done, bool error)
{
	char *s = drain(b), *p = s, *nl, *end;
	int64_t started = 0, open = -1;
	const char *last = "";
	size_t n = 0;

	while (*p != '\0') {
		json_t *d;
		const char *name = p + 7, *type;
		if (strncmp(p, "event: ", 7) != 0 || (nl = strchr(p, '\n')) == NULL ||
		    strncmp(nl + 1, "data: ", 6) != 0 || (end = strstr(nl + 7, "\n\n")) == NULL)
			abort();
		*nl = *end = '\0';
		if ((d = json_loads(nl + 7, 0, NULL)) == NULL || !json_is_object(d) ||
		    (type = json_string_value(json_object_get(d, "type"))) == NULL ||
		    strcmp(type, name) != 0)
			abort();
		/* message_start first, unless an error came before anything */
		if ((n == 0) != (strcmp(name, "message_start") == 0) &&
		    !(n == 0 && strcmp(name, "error") == 0))
			abort();
		if (strcmp(name, "content_block_start") == 0) {
			if (open != -1 || json_integer_value(json_object_get(d, "index")) != started)
				abort();
			open = started++;
		} else if (strcmp(name, "content_block_stop") == 0) {
			if (open == -1 || json_integer_value(json_object_get(d, "index")) != open)
				abort();
			open = -1;
		} else if (strcmp(name, "content_block_delta") == 0) {
			json_int_t i = json_integer_value(json_object_get(d, "index"));
			if (i < 0 || i >= started)
				abort();
		}
		json_decref(d);
		last = name;
		n++;
		p = end + 2;
	}
	if (done && !error && (strcmp(last, "message_stop") != 0 || open != -1))
		abort();
	if (error && strcmp(last, "error") != 0)
		abort();
	free(s);
}

/* Render a script of deltas: op byte, length byte, then that many bytes. */
static void
render(const uint8_t *data, size_t size, bool thinking)
{
	struct anthropic_stream s;
	struct evbuffer *b = evbuffer_new();
	struct done_reply done;
	struct translate_text content = { 0 }, reasoning = { 0 };
	json_t *calls = json_array();
	bool ended = false, error = false;
	static const char *const finishes[] = { "stop", "length", "tool_calls", NULL };

	if (b == NULL || calls == NULL || anthropic_stream_init(&s, "msg_f", "m", thinking, 3) == -1)
		abort();
	while (size >= 2 && !ended) {
		uint8_t op = data[0], n = data[1];
		struct delta_reply d;
		char *text;
		if ((size_t)n > size - 2)
			n = (uint8_t)(size - 2);
		text = strndup((const char *)data + 2, n);
		data += 2 + n;
		size -= 2 + (size_t)n;
		memset(&d, 0, sizeof d);
		switch (op % 5) {
		case 0:
		case 1:
			if (!message_utf8_valid(text, strlen(text)))
				break;
			if (op % 5 == 0) {
				d.content = text;
				translate_text_add(&content, text, strlen(text), NULL);
			} else {
				d.reasoning = text;
				translate_text_add(&reasoning, text, strlen(text), NULL);
			}
			if (anthropic_stream_delta(&s, &d, b) == -1)
				abort();
			break;
		case 2: {
			json_t *j = json_loads(text, JSON_DECODE_ANY, NULL);
			if (j != NULL && translate_raw_set(&d.tool_calls, j) == 0) {
				if (anthropic_stream_delta(&s, &d, b) == -1)
					abort();
				if (json_is_array(j))
					json_array_extend(calls, j);
				free(d.tool_calls.data);
			}
			json_decref(j);
			break;
		}
		case 3:
			anthropic_stream_ping(&s, b);
			break;
		default:
			if (op & 0x80) {
				anthropic_stream_error(&s, (op & 0x40) ? "rate_limited" : "upstream_error",
				    text, op & 0x3f, b);
				error = true;
			}
			ended = true;
		}
		free(text);
	}
	memset(&done, 0, sizeof done);
	done.finish_reason = (char *)finishes[size % 4];
	done.content = content.p;
	done.reasoning = reasoning.p;
	done.usage.prompt_tokens = 3;
	done.usage.completion_tokens = (int64_t)size;
	if (!error && anthropic_stream_done(&s, &done, (size & 1) ? "END" : NULL, b) == -1)
		abort();
	check_events(b, true, error);
	/* the same reply whole */
	if (json_array_size(calls) > 0 && translate_raw_set(&done.tool_calls, calls) == -1)
		abort();
	if (anthropic_message_write(b, "msg_f", "m", &done, thinking, NULL) == 0) {
		char *m = drain(b);
		json_t *j = json_loads(m, 0, NULL);
		if (j == NULL || !json_is_array(json_object_get(j, "content")))
			abort();
		json_decref(j);
		free(m);
	}
	free(done.tool_calls.data);
	json_decref(calls);
	translate_text_clear(&content);
	translate_text_clear(&reasoning);
	anthropic_stream_clear(&s);
	evbuffer_free(b);
}

/* A native stream: one event a line, "NAME DATA". */
static void
native(const char *text, size_t len)
{
	struct anthropic_native n;
	char cause[256], *copy = strndup(text, len), *line, *save, *sp;

	memset(&n, 0, sizeof n);
	for (line = strtok_r(copy, "\n", &save); line != NULL; line = strtok_r(NULL, "\n", &save)) {
		sp = strchr(line, ' ');
		if (sp != NULL)
			*sp++ = '\0';
		if (anthropic_native_event(&n, line, sp != NULL ? sp : "", sp != NULL ? strlen(sp) : 0,
		    cause, sizeof cause) == -1 && cause[0] == '\0')
			abort();
		if (n.usage.prompt_tokens < 0 || n.usage.completion_tokens < 0 ||
		    n.usage.total_tokens != n.usage.prompt_tokens + n.usage.completion_tokens)
			abort();
	}
	if (n.model != NULL)
		check_name(n.model);
	if (n.stop_reason != NULL)
		check_name(n.stop_reason);
	anthropic_native_clear(&n);
	free(copy);
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct anthropic_error err;
	struct anthropic_meta meta;
	struct anthropic_native n;
	struct request *rq;
	const char *body = (const char *)data + 1;
	char cause[256], *out;
	size_t len = size - 1;

	if (size == 0)
		return 0;
	switch (data[0] % 6) {
	case 0:
	case 1:
		rq = data[0] % 6 == 0 ? anthropic_parse_messages(body, len, &meta, &err) :
		    anthropic_parse_count_tokens(body, len, &err);
		if (rq == NULL) {
			size_t m = strnlen(err.message, sizeof err.message);
			if (m == 0 || m == sizeof err.message ||
			    strnlen(err.field, sizeof err.field) == sizeof err.field)
				abort();
			return 0;
		}
		check_request(rq, data[0] % 6 == 1);
		if (data[0] % 6 == 0 && meta.stream != rq->u.chat.stream)
			abort();
		message_request_free(rq);
		break;
	case 2:
		native(body, len);
		break;
	case 3:
		memset(&n, 0, sizeof n);
		if (anthropic_native_response(&n, body, len, cause, sizeof cause) == -1 &&
		    cause[0] == '\0')
			abort();
		anthropic_native_clear(&n);
		if ((out = anthropic_native_body(body, len, "m", 100, cause, sizeof cause)) != NULL) {
			json_t *j = json_loads(out, JSON_ALLOW_NUL, NULL);
			if (j == NULL || json_integer_value(json_object_get(j, "max_tokens")) != 100)
				abort();
			json_decref(j);
			free(out);
		}
		break;
	default:
		render(data + 1, len, data[0] % 6 == 4);
	}
	return 0;
}
