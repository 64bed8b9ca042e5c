/*
 * translate_server.c: a model server that speaks Anthropic's Messages API
 * and OpenAI's Responses API through daemon/anthropic.c and
 * daemon/responses.c, so that the real clients (the SDKs, claude, codex)
 * test those translations end to end. In place of a model, a
 * deterministic reply is made from the translated chat request, as the
 * daemon's chat would stream it.
 *
 * translate_server [-q] [-p PORT]
 * binds 127.0.0.1:PORT (default 0: any free port), prints the port and a
 * newline on stdout, and serves until SIGTERM or SIGINT (exit 0).
 *
 * Endpoints (with or without the /v1 prefix; a query string is ignored):
 *   POST /v1/messages               a Message, or its stream of events
 *   POST /v1/messages/count_tokens  {"input_tokens": N}
 *   POST /v1/responses              a response, or its stream of events
 *   GET  /stats                     {"requests", "bodies": [{"path", "bytes",
 *                                   "stream", "chat": the translated chat
 *                                   body (openai_chat_body), or "error"}]}
 *                                   for the last 100 requests
 *
 * The reply to a chat whose last message is a tool result is "tool said: "
 * and the result, its newlines and tabs made spaces. Otherwise the last user message decides,
 * with the fake model server's directives in "[[...]]": "[[call NAME
 * JSON]]" makes a call of the tool NAME (when offered) with the arguments
 * JSON, in two fragments; tools=1 a call of get_weather (when offered) as
 * the fake makes it; reasoning=N the reasoning pieces "r1 " ... first;
 * words=N the reply "w1 ... wN"; else the reply is "echo: " and the last
 * line of the message, directives removed. The text is streamed a word at
 * a time; max_tokens caps the pieces (finish "length"). Usage:
 * prompt_tokens is the bytes of every message's content; completion_tokens
 * the pieces sent.
 */
#include "config.h"

#include <sys/types.h>
#include <sys/socket.h>

#include <netinet/in.h>

#include <errno.h>
#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <event2/buffer.h>
#include <event2/event.h>
#include <event2/http.h>
#include <event2/keyvalq_struct.h>
#include <jansson.h>

#include "daemon/anthropic.h"
#include "daemon/openai.h"
#include "daemon/responses.h"
#include "daemon/translate.h"

#define TS_MAX_BODY (64 * 1024 * 1024)
#define TS_BODIES 100

static struct {
	struct event_base *base;
	bool quiet;
	unsigned long requests, seq;
	json_t *bodies;
} ts;

/* A piece of the reply: a delta as the chat sends it. */
struct ts_reply {
	struct delta_reply *deltas;
	size_t n;
	struct done_reply done;
	char *text;                 /* the whole content, for a non-stream reply */
	char *reasoning;
};

/* Keep what was asked and how it was translated (consumes entry). */
static void
ts_record(json_t *entry)
{
	if (json_array_size(ts.bodies) == TS_BODIES)
		json_array_remove(ts.bodies, 0);
	json_array_append_new(ts.bodies, entry);
}

/* The body of a request, NUL-terminated; *len its bytes. */
static char *
ts_body(struct evhttp_request *req, size_t *len)
{
	struct evbuffer *in = evhttp_request_get_input_buffer(req);
	char *b;

	*len = evbuffer_get_length(in);
	if ((b = malloc(*len + 1)) == NULL)
		return NULL;
	evbuffer_copyout(in, b, *len);
	b[*len] = '\0';
	return b;
}

/* Send a whole body. */
static void
ts_send(struct evhttp_request *req, int status, const char *type, struct evbuffer *out)
{
	evhttp_add_header(evhttp_request_get_output_headers(req), "Content-Type", type);
	evhttp_send_reply(req, status, status == 200 ? "OK" : "Error", out);
}

/* A message's content as a C string (a NUL in it ends it here). */
static const char *
ts_content(const struct chat_message *m)
{
	return m->content != NULL ? m->content : "";
}

/* The last line of s that is not blank, malloc'd, directives removed. */
static char *
ts_last_line(const char *s)
{
	char *copy = strdup(s), *line = NULL, *p, *save, *open, *close;

	if (copy == NULL)
		return NULL;
	while ((open = strstr(copy, "[[")) != NULL && (close = strstr(open, "]]")) != NULL)
		memmove(open, close + 2, strlen(close + 2) + 1);
	for (p = strtok_r(copy, "\n", &save); p != NULL; p = strtok_r(NULL, "\n", &save)) {
		while (*p == ' ')
			p++;
		if (*p != '\0')
			line = p;
	}
	line = strdup(line != NULL ? line : "");
	free(copy);
	return line;
}

/* Add a delta holding a copy of content or reasoning, or tool_calls (JSON text). */
static void
ts_delta(struct ts_reply *r, const char *content, const char *reasoning, const char *calls)
{
	struct delta_reply *d;
	json_t *j;

	r->deltas = realloc(r->deltas, (r->n + 1) * sizeof *r->deltas);
	if (r->deltas == NULL)
		abort();
	d = &r->deltas[r->n++];
	memset(d, 0, sizeof *d);
	d->content = content != NULL ? strdup(content) : NULL;
	d->reasoning = reasoning != NULL ? strdup(reasoning) : NULL;
	if (calls != NULL) {
		j = json_loads(calls, 0, NULL);
		if (j == NULL || translate_raw_set(&d->tool_calls, j) == -1)
			abort();
		json_decref(j);
	}
}

/* Whether the chat offers a tool named name. */
static bool
ts_has_tool(const struct chat_request *cr, const char *name)
{
	json_t *x, *t;
	size_t i;
	bool found = false;

	if (cr->extra.data == NULL)
		return false;
	x = openai_msgpack_to_json(cr->extra.data, cr->extra.len);
	json_array_foreach(json_object_get(x, "tools"), i, t)
		if (translate_is(json_object_get(json_object_get(t, "function"), "name"), name))
			found = true;
	json_decref(x);
	return found;
}

/* A directive's number in [[...]] of s ("words=3"), or -1. */
static long
ts_directive(const char *s, const char *key)
{
	const char *open = strstr(s, "[["), *close = open != NULL ? strstr(open, "]]") : NULL;
	const char *p;
	size_t kl = strlen(key);

	for (p = open != NULL ? open + 2 : NULL; p != NULL && p < close; p++)
		if ((p[-1] == '[' || p[-1] == ' ') && strncmp(p, key, kl) == 0 && p[kl] == '=')
			return strtol(p + kl + 1, NULL, 10);
	return -1;
}

/* Add a tool call in fragments: the name and the first half, then the rest. */
static void
ts_call(struct ts_reply *r, const char *name, const char *args, size_t n_frags)
{
	size_t len = strlen(args), at = 0;
	json_t *calls;
	char *ctext;

	for (size_t i = 0; i < n_frags; i++) {
		size_t upto = (i + 1) * len / n_frags;
		calls = i == 0 ? json_pack("[{s:i, s:s, s:s, s:{s:s, s:s%}}]", "index", 0, "id",
		    "call_ts_1", "type", "function", "function", "name", name, "arguments", args,
		    upto) : json_pack("[{s:i, s:{s:s%}}]", "index", 0, "function", "arguments",
		    args + at, upto - at);
		at = upto;
		ctext = json_dumps(calls, JSON_COMPACT);
		ts_delta(r, NULL, NULL, ctext);
		free(ctext);
		json_decref(calls);
	}
	calls = json_pack("[{s:s, s:s, s:{s:s, s:s}}]", "id", "call_ts_1", "type", "function",
	    "function", "name", name, "arguments", args);
	translate_raw_set(&r->done.tool_calls, calls);
	json_decref(calls);
	r->done.finish_reason = "tool_calls";
}

/* The deterministic reply to a chat request. */
static void
ts_make_reply(const struct chat_request *cr, struct ts_reply *r)
{
	const struct chat_message *last = &cr->messages[cr->n_messages - 1];
	const char *user = "", *call;
	char *text = NULL, *word, *save, *copy;
	long words, reasoning;
	size_t i, n_reason = 0;

	memset(r, 0, sizeof *r);
	r->done.ttft_ms = -1;
	r->done.max_tokens = -1;
	r->done.max_tokens_asked = -1;
	r->done.finish_reason = "stop";
	for (i = 0; i < cr->n_messages; i++)
		r->done.usage.prompt_tokens += (int64_t)message_text_len(cr->messages[i].content != NULL ?
		    cr->messages[i].content : "", cr->messages[i].content_len);
	for (i = cr->n_messages; i > 0; i--)
		if (strcmp(cr->messages[i - 1].role, "user") == 0) {
			user = ts_content(&cr->messages[i - 1]);
			break;
		}
	if (strcmp(last->role, "tool") == 0) {
		char *flat = strdup(ts_content(last));
		for (char *p = flat; *p != '\0'; p++)
			if (*p == '\n' || *p == '\t')
				*p = ' ';
		if (asprintf(&text, "tool said: %s", flat) == -1)
			abort();
		free(flat);
	} else if ((call = strstr(user, "[[call ")) != NULL) {
		char name[128] = "";
		const char *end = strstr(call, "]]");
		if (end != NULL && sscanf(call + 7, "%127s", name) == 1 && ts_has_tool(cr, name)) {
			const char *a = call + 7 + strlen(name);
			char *args = strndup(a, (size_t)(end - a));
			ts_call(r, name, args, 2);
			free(args);
			goto out;
		}
	} else if (ts_directive(user, "tools") == 1 && ts_has_tool(cr, "get_weather")) {
		ts_call(r, "get_weather", "{\"location\": \"Paris\", \"unit\": \"celsius\"}", 3);
		goto out;
	}
	if (strcmp(last->role, "tool") != 0 && (reasoning = ts_directive(user, "reasoning")) > 0) {
		char piece[32], *all = calloc((size_t)reasoning, 16);
		for (long k = 1; k <= reasoning; k++) {
			snprintf(piece, sizeof piece, "r%ld ", k);
			ts_delta(r, NULL, piece, NULL);
			strcat(all, piece);
		}
		n_reason = (size_t)reasoning;
		r->reasoning = all;
		r->done.reasoning = all;
	}
	if (text == NULL && (words = ts_directive(user, "words")) > 0) {
		text = calloc((size_t)words, 12);
		for (long k = 1; k <= words; k++)
			sprintf(text + strlen(text), "%sw%ld", k > 1 ? " " : "", k);
	} else if (text == NULL) {
		char *line = ts_last_line(user);
		if (asprintf(&text, "echo: %s", line) == -1)
			abort();
		free(line);
	}
	copy = strdup(text);
	for (word = strtok_r(copy, " ", &save), i = 0; word != NULL;
	    word = strtok_r(NULL, " ", &save), i++) {
		char *piece;
		if (asprintf(&piece, "%s%s", i > 0 ? " " : "", word) == -1)
			abort();
		ts_delta(r, piece, NULL, NULL);
		free(piece);
	}
	free(copy);
	r->text = text;
	r->done.content = text;
	if (cr->max_tokens > 0 && (size_t)cr->max_tokens < r->n) {
		/* cut at the limit: the pieces kept are the reply */
		size_t keep = (size_t)cr->max_tokens, at = 0, rat = 0;
		for (i = 0; i < keep; i++) {
			if (r->deltas[i].content != NULL)
				at += strlen(r->deltas[i].content);
			if (r->deltas[i].reasoning != NULL)
				rat += strlen(r->deltas[i].reasoning);
		}
		for (i = keep; i < r->n; i++) {
			free(r->deltas[i].content);
			free(r->deltas[i].reasoning);
		}
		r->n = keep;
		text[at < strlen(text) ? at : strlen(text)] = '\0';
		if (keep < n_reason)
			r->reasoning[rat] = '\0';
		r->done.finish_reason = "length";
	}
out:
	r->done.usage.completion_tokens = (int64_t)r->n;
	r->done.usage.total_tokens = r->done.usage.prompt_tokens + (int64_t)r->n;
}

static void
ts_reply_free(struct ts_reply *r)
{
	for (size_t i = 0; i < r->n; i++) {
		free(r->deltas[i].content);
		free(r->deltas[i].reasoning);
		free(r->deltas[i].tool_calls.data);
	}
	free(r->deltas);
	free(r->text);
	free(r->reasoning);
	free(r->done.tool_calls.data);
}

/* Note the request and the chat body it became. */
static void
ts_note(const char *path, size_t len, const struct chat_request *cr, const char *error)
{
	json_t *e = json_pack("{s:s, s:I}", "path", path, "bytes", (json_int_t)len);
	char cause[256];

	if (cr != NULL) {
		char *body = openai_chat_body(cr, cr->model != NULL ? cr->model : "m", cr->stream,
		    cause, sizeof cause);
		json_object_set_new(e, "stream", json_boolean(cr->stream));
		json_object_set_new(e, "chat", body != NULL ? json_loads(body, JSON_ALLOW_NUL, NULL) :
		    json_string(cause));
		free(body);
	}
	if (error != NULL)
		json_object_set_new(e, "error", json_string(error));
	ts_record(e);
}

/* POST /v1/messages and /v1/messages/count_tokens */
static void
ts_messages(struct evhttp_request *req, const char *path, bool count)
{
	struct anthropic_error err;
	struct anthropic_meta meta;
	struct evbuffer *out = evbuffer_new();
	struct request *rq;
	struct ts_reply r;
	size_t len;
	char *body = ts_body(req, &len), id[64];

	rq = count ? anthropic_parse_count_tokens(body, len, &err) :
	    anthropic_parse_messages(body, len, &meta, &err);
	free(body);
	ts_note(path, len, rq != NULL ? &rq->u.chat : NULL, rq == NULL ? err.message : NULL);
	if (rq == NULL) {
		int status = anthropic_error_write(out, "bad_request", err.message, -1, NULL);
		ts_send(req, status, "application/json", out);
		evbuffer_free(out);
		return;
	}
	ts_make_reply(&rq->u.chat, &r);
	if (count) {
		anthropic_count_write(out, r.done.usage.prompt_tokens);
		ts_send(req, 200, "application/json", out);
	} else if (!meta.stream) {
		snprintf(id, sizeof id, "msg_ts%lu", ++ts.seq);
		anthropic_message_write(out, id, rq->u.chat.model != NULL ? rq->u.chat.model : "ts",
		    &r.done, meta.thinking, NULL);
		ts_send(req, 200, "application/json", out);
	} else {
		struct anthropic_stream s;
		snprintf(id, sizeof id, "msg_ts%lu", ++ts.seq);
		anthropic_stream_init(&s, id, rq->u.chat.model != NULL ? rq->u.chat.model : "ts",
		    meta.thinking, r.done.usage.prompt_tokens);
		anthropic_stream_begin(&s, out);
		for (size_t i = 0; i < r.n; i++)
			anthropic_stream_delta(&s, &r.deltas[i], out);
		anthropic_stream_done(&s, &r.done, NULL, out);
		anthropic_stream_clear(&s);
		evhttp_add_header(evhttp_request_get_output_headers(req), "Cache-Control", "no-cache");
		ts_send(req, 200, "text/event-stream", out);
	}
	ts_reply_free(&r);
	message_request_free(rq);
	evbuffer_free(out);
}

/* POST /v1/responses */
static void
ts_responses(struct evhttp_request *req, const char *path)
{
	struct responses_error err;
	struct responses_meta meta;
	struct evbuffer *out = evbuffer_new();
	struct request *rq;
	struct ts_reply r;
	size_t len;
	char *body = ts_body(req, &len), id[64];
	const char *model;

	rq = responses_parse(body, len, &meta, &err);
	free(body);
	ts_note(path, len, rq != NULL ? &rq->u.chat : NULL, rq == NULL ? err.message : NULL);
	if (rq == NULL) {
		json_t *e = json_pack("{s:{s:s, s:s, s:s?, s:n}}", "error", "message", err.message,
		    "type", "invalid_request_error", "param", err.param[0] != '\0' ? err.param : NULL,
		    "code");
		char *text = json_dumps(e, JSON_COMPACT);
		evbuffer_add(out, text, strlen(text));
		free(text);
		json_decref(e);
		ts_send(req, 400, "application/json", out);
		evbuffer_free(out);
		return;
	}
	ts_make_reply(&rq->u.chat, &r);
	snprintf(id, sizeof id, "resp_ts%lu", ++ts.seq);
	model = rq->u.chat.model != NULL ? rq->u.chat.model : "ts";
	if (!meta.stream) {
		responses_object_write(out, id, model, (int64_t)time(NULL), &meta, &r.done);
		ts_send(req, 200, "application/json", out);
	} else {
		struct responses_stream s;
		responses_stream_init(&s, id, model, (int64_t)time(NULL), &meta);
		responses_stream_begin(&s, out);
		for (size_t i = 0; i < r.n; i++)
			responses_stream_delta(&s, &r.deltas[i], out);
		responses_stream_done(&s, &r.done, out);
		responses_stream_clear(&s);
		ts_send(req, 200, "text/event-stream", out);
	}
	ts_reply_free(&r);
	responses_meta_clear(&meta);
	message_request_free(rq);
	evbuffer_free(out);
}

/* GET /stats */
static void
ts_stats(struct evhttp_request *req)
{
	struct evbuffer *out = evbuffer_new();
	json_t *j = json_pack("{s:I, s:O}", "requests", (json_int_t)ts.requests, "bodies", ts.bodies);
	char *text = json_dumps(j, JSON_COMPACT);

	evbuffer_add(out, text, strlen(text));
	ts_send(req, 200, "application/json", out);
	free(text);
	json_decref(j);
	evbuffer_free(out);
}

/* Every request arrives here. */
static void
ts_request_cb(struct evhttp_request *req, void *arg)
{
	const struct evhttp_uri *uri = evhttp_request_get_evhttp_uri(req);
	const char *path = uri != NULL ? evhttp_uri_get_path(uri) : NULL;
	enum evhttp_cmd_type cmd = evhttp_request_get_command(req);
	struct evbuffer *out;

	(void)arg;
	ts.requests++;
	if (path == NULL)
		path = "/";
	if (strncmp(path, "/v1/", 4) == 0)
		path += 3;
	if (!ts.quiet)
		fprintf(stderr, "translate_server: %s %s\n", cmd == EVHTTP_REQ_GET ? "GET" : "POST",
		    evhttp_request_get_uri(req));
	if (cmd == EVHTTP_REQ_POST && strcmp(path, "/messages") == 0)
		ts_messages(req, path, false);
	else if (cmd == EVHTTP_REQ_POST && strcmp(path, "/messages/count_tokens") == 0)
		ts_messages(req, path, true);
	else if (cmd == EVHTTP_REQ_POST && strcmp(path, "/responses") == 0)
		ts_responses(req, path);
	else if (cmd == EVHTTP_REQ_GET && strcmp(path, "/stats") == 0)
		ts_stats(req);
	else {
		out = evbuffer_new();
		anthropic_error_write(out, "unknown_url", "no such endpoint", -1, NULL);
		ts_send(req, 404, "application/json", out);
		evbuffer_free(out);
	}
}

static void
ts_signal_cb(evutil_socket_t sig, short events, void *arg)
{
	(void)sig;
	(void)events;
	(void)arg;
	event_base_loopbreak(ts.base);
}

int
main(int argc, char **argv)
{
	struct evhttp *http;
	struct evhttp_bound_socket *bound;
	struct event *sigterm, *sigint;
	struct sockaddr_in sin;
	socklen_t slen = sizeof sin;
	long port = 0;
	int ch;

	while ((ch = getopt(argc, argv, "qp:")) != -1) {
		switch (ch) {
		case 'q':
			ts.quiet = true;
			break;
		case 'p':
			port = strtol(optarg, NULL, 10);
			break;
		default:
			fprintf(stderr, "usage: translate_server [-q] [-p port]\n");
			return 64;
		}
	}
	signal(SIGPIPE, SIG_IGN);
	ts.bodies = json_array();
	if ((ts.base = event_base_new()) == NULL || (http = evhttp_new(ts.base)) == NULL) {
		fprintf(stderr, "translate_server: cannot set up libevent\n");
		return 1;
	}
	evhttp_set_max_body_size(http, TS_MAX_BODY);
	evhttp_set_allowed_methods(http, EVHTTP_REQ_GET | EVHTTP_REQ_POST | EVHTTP_REQ_HEAD);
	evhttp_set_gencb(http, ts_request_cb, NULL);
	if ((bound = evhttp_bind_socket_with_handle(http, "127.0.0.1", (ev_uint16_t)port)) == NULL ||
	    getsockname(evhttp_bound_socket_get_fd(bound), (struct sockaddr *)&sin, &slen) != 0) {
		fprintf(stderr, "translate_server: cannot bind 127.0.0.1:%ld: %s\n", port,
		    strerror(errno));
		return 1;
	}
	printf("%d\n", ntohs(sin.sin_port));
	fflush(stdout);
	sigterm = evsignal_new(ts.base, SIGTERM, ts_signal_cb, NULL);
	sigint = evsignal_new(ts.base, SIGINT, ts_signal_cb, NULL);
	evsignal_add(sigterm, NULL);
	evsignal_add(sigint, NULL);
	event_base_dispatch(ts.base);
	event_free(sigterm);
	event_free(sigint);
	evhttp_free(http);
	event_base_free(ts.base);
	json_decref(ts.bodies);
	return 0;
}
