/*
 * fake_upstream.c: a deterministic OpenAI-compatible model server for tests
 * and benchmarks, speaking the dialect of OpenAI, llama.cpp, vLLM, Ollama or
 * TGI, with faults on demand.
 *
 * fake_upstream [-q] [-p PORT] [-m MODEL]... [--dialect D] [--delay-ms N]
 *     [--chunks N] [--api LIST]
 * binds 127.0.0.1:PORT (default 0: any free port), prints the port and a
 * newline on stdout, and serves until SIGTERM or SIGINT (exit 0). -q keeps
 * stderr quiet; otherwise one line is logged per request. --api, a
 * comma-separated list of chat (always served), anthropic and responses,
 * adds the APIs a server may speak besides chat completions.
 *
 * Endpoints (with or without the /v1 prefix):
 *   GET  /v1/models            {"object":"list","data":[{"id":MODEL,...}]}
 *                              for each -m (default "fake-model")
 *   POST /v1/chat/completions  stream or not, in the dialect asked
 *   POST /v1/completions       "echo: PROMPT" as a text_completion, stream or
 *                              not; usage counts words (prompt + 1, reply)
 *   POST /v1/embeddings        eight numbers per input; usage counts words
 *   POST /v1/messages          (--api anthropic) Anthropic's Messages API:
 *                              a Message, or its events (message_start with
 *                              usage input_tokens and output_tokens 1, a
 *                              ping after the first content_block_start,
 *                              thinking blocks ending with a signature_delta,
 *                              text, tool_use with input_json_delta pieces,
 *                              message_delta with usage output_tokens,
 *                              message_stop); errors in Anthropic's shape
 *   POST /v1/messages/count_tokens  (--api anthropic) {"input_tokens": N}
 *   POST /v1/responses         (--api responses) OpenAI's Responses API: a
 *                              response, or its events (response.created,
 *                              .in_progress, items added, their deltas and
 *                              done events, response.completed or
 *                              .incomplete with usage); errors as OpenAI's
 *   GET  /stats                counters, as JSON:
 *       requests, chat_requests, native_requests (the last two APIs),
 *       models_requests, in_flight,
 *       max_concurrent, arrivals_ms (epoch ms of each chat request, the
 *       last 10000), authorization (the last Authorization header, or null),
 *       last_body (the last chat body: parsed JSON, or a string if it was
 *       not JSON), last_completions_body (the same for /v1/completions),
 *       last_native_body (the same for the Messages and Responses APIs),
 *       last_request (the last chat, Messages or Responses request's target
 *       as sent, an absolute URL when it came through a proxy, and its
 *       headers: {"target": T, "headers": {NAME: VALUE}}), fail_counts
 *       {KEY: failures served}
 *   POST /reset                zero the counters (max_concurrent restarts
 *                              from in_flight)
 *
 * Directives choose the behaviour of one chat request. They come from the
 * X-Fake request header, and from "[[...]]" anywhere in the last user
 * message (these win), as space-separated KEY=VALUE words:
 *   dialect=D          openai (default: --dialect), llamacpp, vllm, ollama, tgi
 *   chunks=N           content pieces (default: --chunks, else 4)
 *   delay_ms=N         pause before each piece (default: --delay-ms, else 0);
 *                      a non-stream reply waits N times the pieces
 *   words=N            reply "w1 w2 ... wN" (chunks then defaults to N)
 *   usage=0|1          report usage (default 1)
 *   reasoning=N        N reasoning pieces "r1 " ... before the content
 *   tools=1            reply with a get_weather tool call instead of text
 *   ignore_max_tokens=1  write the whole reply whatever max_tokens says
 *   nul=1              send each "~" of the reply's text as U+0000
 *   retry_after=N      add "Retry-After: N" to an error status
 *   fail_first=N       only the first N requests with the same key get the
 *                      fault (default fault: status:503); later ones succeed
 *   key=NAME           the fail_first counter key (default: all directives)
 *   fault=F            one of
 *       status:CODE        reply CODE with the dialect's error body
 *       cut_before_headers close the connection without a reply
 *       cut_after:N        close the connection after N text pieces
 *       stall              send the headers, then nothing
 *       stall_after:N      send N text pieces, then nothing (stream only)
 *       stall_before_headers  send nothing at all
 *       drip               send the reply one byte at a time
 *       error_after:N      after N text pieces, an error in the stream
 *                          (non-stream: status 500)
 *       event_error_after:N  the same as an "event: error" event
 *       error_field_after:N  the same as old llama.cpp's "error: {...}" line
 *       malformed_after:N  after N text pieces, a chunk of broken JSON
 *                          (non-stream: a broken body)
 *       no_done            end the stream without "data: [DONE]"
 *
 * Replies are deterministic. The text is "echo: " and the last user
 * message with its directive removed and spaces trimmed, or the words of
 * words=N; it is split into min(chunks, units) pieces, a unit being a
 * character (or a word with words=N). A request's max_tokens caps the
 * pieces, with finish_reason "length". Usage: prompt_tokens is the number
 * of bytes of every message's content as sent (text parts of a content
 * array included); completion_tokens is the number of pieces sent
 * (reasoning, text, tool call fragments). Usage is sent as each server
 * does: non-stream in the body; streaming, in a chunk with empty choices
 * when the request set stream_options.include_usage, else not at all
 * (llama.cpp then gives `timings` in its last chunk).
 *
 * The Messages and Responses APIs answer the same way: the directives come
 * from X-Fake and the last user message's text (its text blocks or parts,
 * else its tool results; in the Responses API a function_call_output
 * counts as the last user message too); max_tokens (Messages) or
 * max_output_tokens (Responses) caps the pieces; prompt_tokens is the
 * bytes of the system (instructions) and every message's text, tool
 * results included. tools=1 calls get_weather (toolu_fake_1, call_fake_1);
 * reasoning=N gives thinking blocks or reasoning items; usage=0 leaves
 * usage out. Of the faults, status, cut_before_headers, cut_after, stall,
 * stall_after, stall_before_headers, drip, error_after (an error event;
 * response.failed), event_error_after (the same) and malformed_after apply
 * to a stream; status, error_after (status 500) and malformed_after to a
 * whole reply.
 */
#include "config.h"

#include <sys/types.h>
#include <sys/queue.h>
#include <sys/socket.h>
#include <sys/time.h>

#include <netinet/in.h>
#include <netinet/tcp.h>

#include <errno.h>
#include <getopt.h>
#include <limits.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/event.h>
#include <event2/http.h>
#include <event2/keyvalq_struct.h>

#include <jansson.h>

#define FAKE_MAX_BODY       (64 * 1024 * 1024)
#define FAKE_MAX_ARRIVALS   10000
#define FAKE_MAX_COUNT      1000000
#define FAKE_TOOL_ARGS      "{\"location\": \"Paris\", \"unit\": \"celsius\"}"

enum dialect { D_OPENAI, D_LLAMACPP, D_VLLM, D_OLLAMA, D_TGI };
static const char *dialect_names[] = {
	"openai", "llamacpp", "vllm", "ollama", "tgi"
};

enum fault {
	F_NONE, F_STATUS, F_CUT_BEFORE_HEADERS, F_CUT_AFTER, F_STALL_AFTER, F_STALL,
	F_STALL_BEFORE_HEADERS, F_DRIP, F_ERROR_AFTER, F_EVENT_ERROR_AFTER,
	F_ERROR_FIELD_AFTER, F_MALFORMED_AFTER, F_NO_DONE
};

/* What to do once the pieces are sent. */
enum ending { END_REPLY, END_CUT, END_STALL };

struct directives {
	enum dialect dialect;
	long chunks;                /* -1: default */
	long delay_ms;
	long words;                 /* 0: echo */
	bool usage;
	long reasoning;
	bool tools;
	bool ignore_limit;          /* write past max_tokens, as a server that ignores it */
	long retry_after;           /* -1: none */
	bool nul;                   /* "~" in the text goes out as U+0000 */
	long fail_first;            /* -1: always fault */
	char key[128];
	enum fault fault;
	long fault_arg;
	char canon[512];            /* all directive words, the default key */
};

struct piece {
	char *data;
	size_t len;
	bool text;                  /* carries reasoning, content or a tool call */
};

/* One chat request being answered. */
struct stream {
	TAILQ_ENTRY(stream) entry;
	struct evhttp_request *req;     /* NULL once libevent has freed it */
	struct evhttp_connection *conn; /* NULL once closed */
	struct event *timer;
	struct event *watch;        /* notices a client leaving a silent wait */
	bool owns_req;              /* detached from a dead connection: ours */
	bool chunked;               /* a streamed (chunked) reply */
	bool started;               /* headers sent */
	bool finished;              /* nothing more to do: free it */
	struct piece *pieces;
	size_t n, next;
	long delay_ms;
	enum ending ending;
	char *body;                 /* non-stream body */
	const char *content_type;
};

struct fail_counter {
	LIST_ENTRY(fail_counter) entry;
	char *key;
	long count;
};

static struct {
	struct event_base *base;
	struct evhttp *http;
	bool quiet;
	char **models;
	size_t n_models;
	enum dialect dialect;
	long delay_ms;
	long chunks;

	TAILQ_HEAD(, stream) streams;
	LIST_HEAD(, fail_counter) fails;

	unsigned long requests, chat_requests, models_requests;
	long in_flight, max_concurrent;
	long long *arrivals;
	size_t n_arrivals;
	char *authorization;
	json_t *last_body;
	json_t *last_completions_body;
	json_t *last_request;
	unsigned long seq;
	bool api_anthropic;         /* --api anthropic: POST /v1/messages served */
	bool api_responses;         /* --api responses: POST /v1/responses served */
	unsigned long native_requests;
	json_t *last_native_body;
} fake;

static void stream_timer_cb(evutil_socket_t, short, void *);

/* Log a line on stderr unless quiet. */
static void __attribute__((format(printf, 1, 2)))
fake_log(const char *fmt, ...)
{
	va_list	ap;

	if (fake.quiet)
		return;
	va_start(ap, fmt);
	fputs("fake_upstream: ", stderr);
	vfprintf(stderr, fmt, ap);
	fputc('\n', stderr);
	va_end(ap);
}

/* Die at start-up. */
static void __attribute__((format(printf, 1, 2), noreturn))
fake_fatal(const char *fmt, ...)
{
	va_list	ap;

	va_start(ap, fmt);
	fputs("fake_upstream: ", stderr);
	vfprintf(stderr, fmt, ap);
	fputc('\n', stderr);
	va_end(ap);
	exit(1);
}

/* Allocate or die: a test server has no better answer. */
static void *
xmalloc(size_t n)
{
	void	*p = malloc(n == 0 ? 1 : n);

	if (p == NULL)
		fake_fatal("out of memory");
	return (p);
}

/* Wall-clock milliseconds. */
static long long
now_ms(void)
{
	struct timespec	ts;

	clock_gettime(CLOCK_REALTIME, &ts);
	return ((long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000);
}

/* Compact JSON text of v (which is consumed), or die. */
static char *
json_text(json_t *v)
{
	char	*s;

	if (v == NULL || (s = json_dumps(v, JSON_COMPACT | JSON_ENCODE_ANY)) ==
	    NULL)
		fake_fatal("cannot build JSON");
	json_decref(v);
	return (s);
}

/* Parse a dialect name. */
static int
dialect_parse(const char *s, enum dialect *d)
{
	size_t	i;

	for (i = 0; i < sizeof dialect_names / sizeof dialect_names[0]; i++) {
		if (strcmp(s, dialect_names[i]) == 0) {
			*d = (enum dialect)i;
			return (0);
		}
	}
	return (-1);
}

/* Parse a count in [0, max]. */
static int
count_parse(const char *s, long max, long *out)
{
	char	*end;
	long	 v;

	errno = 0;
	v = strtol(s, &end, 10);
	if (errno != 0 || end == s || *end != '\0' || v < 0 || v > max)
		return (-1);
	*out = v;
	return (0);
}

/* --- directives ------------------------------------------------------- */

/* Apply one KEY=VALUE word; -1 with a message for a bad one. */
static int
directive_word(struct directives *d, const char *word, char *err,
    size_t errlen)
{
	char		 key[64], *value, *arg;
	const char	*eq = strchr(word, '=');
	long		 v;

	if (eq == NULL || (size_t)(eq - word) >= sizeof key) {
		snprintf(err, errlen, "bad directive \"%s\"", word);
		return (-1);
	}
	memcpy(key, word, eq - word);
	key[eq - word] = '\0';
	value = (char *)eq + 1;

	if (strcmp(key, "dialect") == 0) {
		if (dialect_parse(value, &d->dialect) != 0)
			goto bad;
	} else if (strcmp(key, "key") == 0) {
		if (strlen(value) >= sizeof d->key)
			goto bad;
		snprintf(d->key, sizeof d->key, "%s", value);
	} else if (strcmp(key, "fault") == 0) {
		arg = strchr(value, ':');
		if (arg != NULL)
			*arg++ = '\0';
		d->fault_arg = 0;
		if (strcmp(value, "status") == 0)
			d->fault = F_STATUS;
		else if (strcmp(value, "cut_before_headers") == 0)
			d->fault = F_CUT_BEFORE_HEADERS;
		else if (strcmp(value, "cut_after") == 0)
			d->fault = F_CUT_AFTER;
		else if (strcmp(value, "stall_after") == 0)
			d->fault = F_STALL_AFTER;
		else if (strcmp(value, "stall") == 0)
			d->fault = F_STALL;
		else if (strcmp(value, "stall_before_headers") == 0)
			d->fault = F_STALL_BEFORE_HEADERS;
		else if (strcmp(value, "drip") == 0)
			d->fault = F_DRIP;
		else if (strcmp(value, "error_after") == 0)
			d->fault = F_ERROR_AFTER;
		else if (strcmp(value, "event_error_after") == 0)
			d->fault = F_EVENT_ERROR_AFTER;
		else if (strcmp(value, "error_field_after") == 0)
			d->fault = F_ERROR_FIELD_AFTER;
		else if (strcmp(value, "malformed_after") == 0)
			d->fault = F_MALFORMED_AFTER;
		else if (strcmp(value, "no_done") == 0)
			d->fault = F_NO_DONE;
		else
			goto bad;
		if (d->fault == F_STATUS) {
			if (arg == NULL || count_parse(arg, 599, &v) != 0 ||
			    v < 100)
				goto bad;
			d->fault_arg = v;
		} else if (d->fault == F_CUT_AFTER ||
		    d->fault == F_STALL_AFTER ||
		    d->fault == F_ERROR_AFTER ||
		    d->fault == F_EVENT_ERROR_AFTER ||
		    d->fault == F_ERROR_FIELD_AFTER ||
		    d->fault == F_MALFORMED_AFTER) {
			if (arg == NULL ||
			    count_parse(arg, FAKE_MAX_COUNT, &v) != 0)
				goto bad;
			d->fault_arg = v;
		} else if (arg != NULL)
			goto bad;
	} else {
		if (count_parse(value, FAKE_MAX_COUNT, &v) != 0)
			goto bad;
		if (strcmp(key, "chunks") == 0 && v >= 1)
			d->chunks = v;
		else if (strcmp(key, "delay_ms") == 0 && v <= 3600000)
			d->delay_ms = v;
		else if (strcmp(key, "words") == 0)
			d->words = v;
		else if (strcmp(key, "usage") == 0 && v <= 1)
			d->usage = v;
		else if (strcmp(key, "reasoning") == 0)
			d->reasoning = v;
		else if (strcmp(key, "tools") == 0 && v <= 1)
			d->tools = v;
		else if (strcmp(key, "ignore_max_tokens") == 0 && v <= 1)
			d->ignore_limit = v;
		else if (strcmp(key, "nul") == 0 && v <= 1)
			d->nul = v;
		else if (strcmp(key, "retry_after") == 0)
			d->retry_after = v;
		else if (strcmp(key, "fail_first") == 0)
			d->fail_first = v;
		else
			goto bad;
	}
	return (0);

bad:
	snprintf(err, errlen, "bad directive \"%s\"", word);
	return (-1);
}

/* Apply a space-separated list of directives. */
static int
directives_parse(struct directives *d, const char *s, size_t len, char *err,
    size_t errlen)
{
	char	*copy, *word, *last;
	size_t	 used;
	int	 rc = 0;

	copy = xmalloc(len + 1);
	memcpy(copy, s, len);
	copy[len] = '\0';
	for (word = strtok_r(copy, " \t\r\n", &last); word != NULL;
	    word = strtok_r(NULL, " \t\r\n", &last)) {
		used = strlen(d->canon);
		if (used + strlen(word) + 2 < sizeof d->canon)
			snprintf(d->canon + used, sizeof d->canon - used, "%s%s",
			    used > 0 ? " " : "", word);
		if ((rc = directive_word(d, word, err, errlen)) != 0)
			break;
	}
	free(copy);
	return (rc);
}

/* --- request content -------------------------------------------------- */

/* Bytes of a message content: a string or the text parts of an array. */
static size_t
content_bytes(json_t *content)
{
	json_t	*part, *text;
	size_t	 i, n = 0;

	if (json_is_string(content))
		return (json_string_length(content));
	json_array_foreach(content, i, part) {
		text = json_is_string(part) ? part : json_object_get(part, "text");
		if (json_is_string(text))
			n += json_string_length(text);
	}
	return (n);
}

/* The text of the last user message (malloc'd, maybe empty). */
static char *
last_user_text(json_t *messages)
{
	json_t	*m, *content, *part, *text;
	size_t	 i, j, n;
	char	*s;

	for (i = json_array_size(messages); i > 0; i--) {
		m = json_array_get(messages, i - 1);
		if (!json_is_string(json_object_get(m, "role")) ||
		    strcmp(json_string_value(json_object_get(m, "role")),
		    "user") != 0)
			continue;
		content = json_object_get(m, "content");
		s = xmalloc(content_bytes(content) + 1);
		n = 0;
		if (json_is_string(content)) {
			memcpy(s, json_string_value(content),
			    json_string_length(content));
			n = json_string_length(content);
		}
		json_array_foreach(content, j, part) {
			text = json_is_string(part) ? part :
			    json_object_get(part, "text");
			if (json_is_string(text)) {
				memcpy(s + n, json_string_value(text),
				    json_string_length(text));
				n += json_string_length(text);
			}
		}
		s[n] = '\0';
		return (s);
	}
	return (strdup(""));
}

/* --- replies in each dialect ------------------------------------------ */

/* The error body a dialect sends with an HTTP status. */
static char *
error_body(enum dialect d, int status, const char *msg)
{
	const char	*type;

	switch (d) {
	case D_LLAMACPP:
		type = status == 400 ? "invalid_request_error" :
		    status == 401 ? "authentication_error" :
		    status == 404 ? "not_found_error" :
		    status == 501 ? "not_supported_error" :
		    status == 503 ? "unavailable_error" : "server_error";
		return (json_text(json_pack("{s:{s:i,s:s,s:s}}", "error",
		    "code", status, "message", msg, "type", type)));
	case D_VLLM:
		type = status == 400 ? "BadRequestError" :
		    status == 404 ? "NotFoundError" :
		    status == 429 ? "RateLimitError" :
		    status == 503 ? "ServiceUnavailableError" :
		    "InternalServerError";
		return (json_text(json_pack("{s:{s:s,s:s,s:n,s:i}}", "error",
		    "message", msg, "type", type, "param", "code", status)));
	case D_OLLAMA:
		type = status == 400 ? "invalid_request_error" :
		    status == 404 ? "not_found_error" : "api_error";
		return (json_text(json_pack("{s:{s:s,s:s,s:n,s:n}}", "error",
		    "message", msg, "type", type, "param", "code")));
	case D_TGI:
		type = status == 429 ? "overloaded" :
		    status == 422 || status == 400 ? "validation" :
		    status == 424 ? "generation" : "incomplete_generation";
		return (json_text(json_pack("{s:s,s:s}", "error", msg,
		    "error_type", type)));
	case D_OPENAI:
		break;
	}
	if (status == 429)
		return (json_text(json_pack("{s:{s:s,s:s,s:n,s:s}}", "error",
		    "message", msg, "type", "requests", "param", "code",
		    "rate_limit_exceeded")));
	type = status < 500 ? "invalid_request_error" : "server_error";
	return (json_text(json_pack("{s:{s:s,s:s,s:n,s:n}}", "error",
	    "message", msg, "type", type, "param", "code")));
}

/* The error a dialect puts inside a stream (JSON text). */
static char *
stream_error_json(enum dialect d, const char *msg)
{
	switch (d) {
	case D_LLAMACPP:
		return (json_text(json_pack("{s:{s:i,s:s,s:s}}", "error",
		    "code", 500, "message", msg, "type", "server_error")));
	case D_VLLM:
		return (json_text(json_pack("{s:{s:s,s:s,s:n,s:i}}", "error",
		    "message", msg, "type", "InternalServerError", "param",
		    "code", 500)));
	case D_TGI:
		return (json_text(json_pack("{s:s,s:s}", "error", msg,
		    "error_type", "generation")));
	default:
		return (error_body(d, 500, msg));
	}
}

/* Context of one reply being built. */
struct reply {
	enum dialect dialect;
	const char *model;
	char id[64];
	long long created;
	bool include_usage;
	long prompt_tokens;
	long completion_tokens;
};

/* Wrap JSON text as one SSE event (consumes json). */
static struct piece
sse_piece(enum dialect d, char *json, bool text)
{
	struct piece	p;

	/* TGI (axum) writes "data:" without the space. */
	if (asprintf(&p.data, "%s%s\n\n", d == D_TGI ? "data:" : "data: ",
	    json) < 0)
		fake_fatal("out of memory");
	free(json);
	p.len = strlen(p.data);
	p.text = text;
	return (p);
}

/* A raw piece copied from s. */
static struct piece
raw_piece(const char *s, size_t len, bool text)
{
	struct piece	p;

	p.data = xmalloc(len + 1);
	memcpy(p.data, s, len);
	p.data[len] = '\0';
	p.len = len;
	p.text = text;
	return (p);
}

/* One chat.completion.chunk; delta is consumed, finish may be NULL. */
static char *
chunk_json(struct reply *r, json_t *delta, const char *finish)
{
	json_t	*choice, *chunk;

	choice = json_object();
	json_object_set_new(choice, "index", json_integer(0));
	json_object_set_new(choice, "delta", delta);
	if (r->dialect != D_LLAMACPP && r->dialect != D_OLLAMA)
		json_object_set_new(choice, "logprobs", json_null());
	json_object_set_new(choice, "finish_reason",
	    finish != NULL ? json_string(finish) : json_null());
	if (r->dialect == D_VLLM && finish != NULL)
		json_object_set_new(choice, "stop_reason", json_null());

	chunk = json_object();
	json_object_set_new(chunk, "id", json_string(r->dialect == D_TGI ? "" :
	    r->id));
	json_object_set_new(chunk, "object",
	    json_string("chat.completion.chunk"));
	json_object_set_new(chunk, "created", json_integer(r->created));
	json_object_set_new(chunk, "model", json_string(r->model));
	switch (r->dialect) {
	case D_OPENAI:
		json_object_set_new(chunk, "system_fingerprint",
		    json_string("fp_fake"));
		break;
	case D_LLAMACPP:
		json_object_set_new(chunk, "system_fingerprint",
		    json_string("b0000-fake"));
		break;
	case D_OLLAMA:
		json_object_set_new(chunk, "system_fingerprint",
		    json_string("fp_ollama"));
		break;
	case D_TGI:
		json_object_set_new(chunk, "system_fingerprint",
		    json_string("3.0.1-fake"));
		break;
	case D_VLLM:
		break;
	}
	json_object_set_new(chunk, "choices", json_pack("[o]", choice));
	if ((r->dialect == D_OPENAI && r->include_usage) || r->dialect == D_TGI)
		json_object_set_new(chunk, "usage", json_null());
	return (json_text(chunk));
}

/* A delta holding one field; Ollama and TGI always name the role. */
static json_t *
delta_of(struct reply *r, const char *key, json_t *value)
{
	json_t	*delta = json_object();

	if (r->dialect == D_OLLAMA || r->dialect == D_TGI)
		json_object_set_new(delta, "role", json_string("assistant"));
	if (r->dialect == D_OLLAMA && strcmp(key, "content") != 0)
		json_object_set_new(delta, "content", json_string(""));
	json_object_set_new(delta, key, value);
	return (delta);
}

/* The usage object of a reply. */
static json_t *
usage_json(struct reply *r)
{
	return (json_pack("{s:i,s:i,s:i}", "prompt_tokens", r->prompt_tokens,
	    "completion_tokens", r->completion_tokens, "total_tokens",
	    r->prompt_tokens + r->completion_tokens));
}

/* llama.cpp's timings for a reply. */
static json_t *
timings_json(struct reply *r)
{
	return (json_pack("{s:i,s:i,s:f,s:f,s:f,s:i,s:f,s:f,s:f}",
	    "cache_n", 0, "prompt_n", r->prompt_tokens, "prompt_ms", 1.5,
	    "prompt_per_token_ms", 0.125, "prompt_per_second", 10000.0,
	    "predicted_n", r->completion_tokens, "predicted_ms", 2.5,
	    "predicted_per_token_ms", 0.5, "predicted_per_second", 2000.0));
}

/* The text units of a reply: characters, or words. */
static size_t
text_units(const char *text, bool words, size_t **starts)
{
	size_t	 len = strlen(text), i, n = 0;

	*starts = xmalloc((len + 1) * sizeof **starts);
	for (i = 0; i < len; i++) {
		if (words ? (i == 0 || text[i] == ' ') :
		    ((unsigned char)text[i] & 0xc0) != 0x80)
			(*starts)[n++] = i;
	}
	(*starts)[n] = len;
	return (n);
}

/* Append a piece to an array. */
static void
pieces_add(struct piece **ps, size_t *n, struct piece p)
{
	/* Grow at powers of two: a dripped reply has a piece per byte. */
	if ((*n & (*n - 1)) == 0) {
		*ps = realloc(*ps, (*n < 8 ? 8 : *n * 2) * sizeof **ps);
		if (*ps == NULL)
			fake_fatal("out of memory");
	}
	(*ps)[(*n)++] = p;
}

/* Free an array of pieces. */
static void
pieces_free(struct piece *ps, size_t n)
{
	size_t	i;

	for (i = 0; i < n; i++)
		free(ps[i].data);
	free(ps);
}

/*
 * Build the text pieces of a reply: reasoning, content, tool call
 * fragments, as delta JSON objects (not yet wrapped). Returns the finish
 * reason.
 */
static const char *
reply_deltas(struct reply *r, const struct directives *d, const char *text,
    long max_tokens, json_t *deltas)
{
	size_t		*starts, units, k, i, a, b;
	long		 total, n_reason, n_text, limit;
	const char	*finish = d->tools ? "tool_calls" : "stop";
	const char	*frags[3] = { "{\"location\": ", "\"Paris\", ",
	    "\"unit\": \"celsius\"}" };
	char		 buf[32], *piece;
	json_t		*call;

	units = text_units(text, d->words > 0, &starts);
	k = d->chunks > 0 ? (size_t)d->chunks : (d->words > 0 ?
	    (size_t)d->words : (fake.chunks > 0 ? (size_t)fake.chunks : 4));
	if (k > units)
		k = units;
	n_reason = r->dialect == D_TGI ? 0 : d->reasoning;
	n_text = d->tools ? (r->dialect == D_OLLAMA ? 1 : 3) : (long)k;
	total = n_reason + n_text;
	limit = max_tokens >= 1 && max_tokens < total ? max_tokens : total;
	if (limit < total)
		finish = "length";

	for (i = 0; i < (size_t)n_reason && (long)i < limit; i++) {
		snprintf(buf, sizeof buf, "r%zu ", i + 1);
		json_array_append_new(deltas, delta_of(r,
		    r->dialect == D_OLLAMA ? "reasoning" : "reasoning_content",
		    json_string(buf)));
	}
	for (i = 0; i < (size_t)n_text && (long)i + n_reason < limit; i++) {
		if (d->tools) {
			if (r->dialect == D_OLLAMA)
				call = json_pack("{s:s,s:i,s:s,s:{s:s,s:s}}",
				    "id", "call_fake_1", "index", 0, "type",
				    "function", "function", "name",
				    "get_weather", "arguments", FAKE_TOOL_ARGS);
			else if (r->dialect == D_TGI)
				call = json_pack("{s:i,s:s,s:s,s:{s:o,s:s}}",
				    "index", 0, "id", "", "type", "function",
				    "function", "name", i == 0 ?
				    json_string("get_weather") : json_null(),
				    "arguments", frags[i]);
			else if (i == 0)
				call = json_pack("{s:i,s:s,s:s,s:{s:s,s:s}}",
				    "index", 0, "id", "call_fake_1", "type",
				    "function", "function", "name",
				    "get_weather", "arguments", frags[0]);
			else
				call = json_pack("{s:i,s:{s:s}}", "index", 0,
				    "function", "arguments", frags[i]);
			json_array_append_new(deltas, delta_of(r, "tool_calls",
			    json_pack("[o]", call)));
			continue;
		}
		a = starts[i * units / k];
		b = starts[(i + 1) * units / k];
		piece = xmalloc(b - a + 1);
		memcpy(piece, text + a, b - a);
		piece[b - a] = '\0';
		for (size_t c = 0; d->nul && c < b - a; c++)
			if (piece[c] == '~')
				piece[c] = '\0';
		json_array_append_new(deltas, delta_of(r, "content",
		    json_stringn(piece, b - a)));
		free(piece);
	}
	free(starts);
	r->completion_tokens = (long)json_array_size(deltas);
	return (finish);
}

/* Insert the fault's extra event after the Nth text piece. */
static void
fault_piece(struct reply *r, const struct directives *d, struct piece **ps,
    size_t *n)
{
	struct piece	 p;
	size_t		 i, seen = 0, at = *n;
	char		*s, *err;

	for (i = 0; i < *n; i++) {
		if (seen == (size_t)d->fault_arg) {
			at = i;
			break;
		}
		if ((*ps)[i].text && ++seen == (size_t)d->fault_arg) {
			at = i + 1;
			break;
		}
	}
	/* Skip the role-only chunk, which is not a text piece. */
	if (d->fault_arg == 0 && at < *n && !(*ps)[at].text && at == 0)
		at = 1 < *n ? 1 : *n;

	switch (d->fault) {
	case F_CUT_AFTER:
	case F_STALL_AFTER:
		for (i = at; i < *n; i++)
			free((*ps)[i].data);
		*n = at;
		return;
	case F_ERROR_AFTER:
		p = sse_piece(r->dialect, stream_error_json(r->dialect,
		    "fake failure in the stream"), false);
		break;
	case F_EVENT_ERROR_AFTER:
		err = stream_error_json(r->dialect, "fake error event");
		if (asprintf(&s, "event: error\ndata: %s\n\n", err) < 0)
			fake_fatal("out of memory");
		free(err);
		p = raw_piece(s, strlen(s), false);
		free(s);
		break;
	case F_ERROR_FIELD_AFTER:
		s = "error: {\"code\":500,\"message\":\"fake error field\","
		    "\"type\":\"server_error\"}\n\n";
		p = raw_piece(s, strlen(s), false);
		break;
	case F_MALFORMED_AFTER:
		s = r->dialect == D_TGI ? "data:{\"choices\":[{\"delta\":\n\n" :
		    "data: {\"choices\":[{\"delta\":\n\n";
		p = raw_piece(s, strlen(s), false);
		break;
	default:
		return;
	}
	pieces_add(ps, n, p);
	memmove(&(*ps)[at + 1], &(*ps)[at], (*n - 1 - at) * sizeof **ps);
	(*ps)[at] = p;
	/* An error ends the stream: llama.cpp stops, vLLM adds [DONE]. */
	if (d->fault == F_ERROR_AFTER || d->fault == F_EVENT_ERROR_AFTER ||
	    d->fault == F_ERROR_FIELD_AFTER) {
		for (i = at + 1; i < *n; i++)
			free((*ps)[i].data);
		*n = at + 1;
		if (r->dialect == D_VLLM)
			pieces_add(ps, n, raw_piece("data: [DONE]\n\n", 14,
			    false));
	}
}

/* The SSE pieces of a streamed reply. */
static void
stream_pieces(struct reply *r, const struct directives *d, const char *text,
    long max_tokens, struct piece **ps, size_t *n)
{
	json_t		*deltas = json_array(), *delta, *last;
	json_t		*chunk;
	const char	*finish;
	size_t		 i, nd;
	bool		 fold;

	finish = reply_deltas(r, d, text, max_tokens, deltas);
	nd = json_array_size(deltas);

	/* A role-only first chunk, as OpenAI, llama.cpp and vLLM send. */
	if (r->dialect == D_OPENAI)
		pieces_add(ps, n, sse_piece(r->dialect, chunk_json(r,
		    json_pack("{s:s,s:s,s:n}", "role", "assistant", "content",
		    "", "refusal"), NULL), false));
	else if (r->dialect == D_LLAMACPP)
		pieces_add(ps, n, sse_piece(r->dialect, chunk_json(r,
		    json_pack("{s:s,s:n}", "role", "assistant", "content"),
		    NULL), false));
	else if (r->dialect == D_VLLM)
		pieces_add(ps, n, sse_piece(r->dialect, chunk_json(r,
		    json_pack("{s:s,s:s}", "role", "assistant", "content", ""),
		    NULL), false));

	/* vLLM and TGI send finish_reason with the last token. */
	fold = (r->dialect == D_VLLM || r->dialect == D_TGI) && nd > 0;
	for (i = 0; i < nd; i++) {
		delta = json_incref(json_array_get(deltas, i));
		pieces_add(ps, n, sse_piece(r->dialect, chunk_json(r, delta,
		    fold && i == nd - 1 ? finish : NULL), true));
	}
	if (!fold) {
		delta = r->dialect == D_OLLAMA ? json_pack("{s:s,s:s}", "role",
		    "assistant", "content", "") : json_object();
		pieces_add(ps, n, sse_piece(r->dialect, chunk_json(r, delta,
		    finish), false));
	}
	json_decref(deltas);

	if (d->usage && r->include_usage) {
		chunk = json_pack("{s:s,s:s,s:I,s:s,s:[],s:o}", "id",
		    r->dialect == D_TGI ? "" : r->id, "object",
		    "chat.completion.chunk", "created", (json_int_t)r->created,
		    "model", r->model, "choices", "usage", usage_json(r));
		if (r->dialect == D_LLAMACPP)
			json_object_set_new(chunk, "timings", timings_json(r));
		pieces_add(ps, n, sse_piece(r->dialect, json_text(chunk),
		    false));
	} else if (d->usage && r->dialect == D_LLAMACPP) {
		/* The finish chunk carries timings; re-render it with them. */
		last = json_loads((*ps)[*n - 1].data + 6, 0, NULL);
		if (last != NULL) {
			json_object_set_new(last, "timings", timings_json(r));
			free((*ps)[*n - 1].data);
			(*ps)[*n - 1] = sse_piece(r->dialect, json_text(last),
			    false);
		}
	}
	if (d->fault != F_NO_DONE)
		pieces_add(ps, n, raw_piece(d->dialect == D_TGI ?
		    "data:[DONE]\n\n" : "data: [DONE]\n\n",
		    d->dialect == D_TGI ? 13 : 14, false));
}

/* The body of a non-stream reply. */
static char *
response_body(struct reply *r, const struct directives *d, const char *text,
    long max_tokens)
{
	json_t		*deltas = json_array(), *delta, *msg, *calls, *tc, *res;
	json_t		*fn, *v;
	const char	*finish, *key, *rkey, *prev;
	size_t		 i, content_len = 0, reasoning_len = 0, *len;
	char		*content = NULL, *reasoning = NULL, *s, **to;

	finish = reply_deltas(r, d, text, max_tokens, deltas);
	rkey = r->dialect == D_OLLAMA ? "reasoning" : "reasoning_content";
	calls = json_array();
	tc = NULL;
	json_array_foreach(deltas, i, delta) {
		json_object_foreach(delta, key, v) {
			if (strcmp(key, "content") == 0 ||
			    strcmp(key, rkey) == 0) {
				if (json_string_length(v) == 0)
					continue;
				/* joined by length: the text may hold U+0000 */
				to = strcmp(key, "content") == 0 ? &content :
				    &reasoning;
				len = to == &content ? &content_len :
				    &reasoning_len;
				if ((s = realloc(*to, *len +
				    json_string_length(v) + 1)) == NULL)
					fake_fatal("out of memory");
				memcpy(s + *len, json_string_value(v),
				    json_string_length(v) + 1);
				*len += json_string_length(v);
				*to = s;
			} else if (strcmp(key, "tool_calls") == 0) {
				/* Join the fragments into one whole call. */
				v = json_array_get(v, 0);
				fn = json_object_get(v, "function");
				if (tc == NULL) {
					tc = json_pack("{s:s,s:s,s:{s:s,s:s}}",
					    "id", "call_fake_1", "type",
					    "function", "function", "name",
					    "get_weather", "arguments", "");
					json_array_append_new(calls, tc);
				}
				prev = json_string_value(json_object_get(
				    json_object_get(tc, "function"),
				    "arguments"));
				if (asprintf(&s, "%s%s", prev, json_string_value(
				    json_object_get(fn, "arguments"))) < 0)
					fake_fatal("out of memory");
				json_object_set_new(json_object_get(tc,
				    "function"), "arguments", json_string(s));
				free(s);
			}
		}
	}
	json_decref(deltas);

	msg = json_pack("{s:s,s:o}", "role", "assistant", "content",
	    content != NULL ? json_stringn(content, content_len) : json_null());
	if (reasoning != NULL)
		json_object_set_new(msg, rkey, json_stringn(reasoning,
		    reasoning_len));
	if (json_array_size(calls) > 0)
		json_object_set_new(msg, "tool_calls", calls);
	else
		json_decref(calls);
	free(content);
	free(reasoning);

	res = json_pack("{s:s,s:s,s:I,s:s,s:[{s:i,s:o,s:s}]}", "id", r->id,
	    "object", "chat.completion", "created", (json_int_t)r->created,
	    "model", r->model, "choices", "index", 0, "message", msg,
	    "finish_reason", finish);
	if (r->dialect == D_OLLAMA)
		json_object_set_new(res, "system_fingerprint",
		    json_string("fp_ollama"));
	if (d->usage) {
		json_object_set_new(res, "usage", usage_json(r));
		if (r->dialect == D_LLAMACPP)
			json_object_set_new(res, "timings", timings_json(r));
	}
	return (json_text(res));
}

/* --- serving ---------------------------------------------------------- */

/* Send a complete reply with a body. */
static void
send_body(struct evhttp_request *req, int status, const char *type,
    const char *body, long retry_after)
{
	struct evbuffer	*buf = evbuffer_new();
	struct evkeyvalq *h = evhttp_request_get_output_headers(req);
	char		 ra[32];

	evhttp_add_header(h, "Content-Type", type);
	if (retry_after >= 0) {
		snprintf(ra, sizeof ra, "%ld", retry_after);
		evhttp_add_header(h, "Retry-After", ra);
	}
	evbuffer_add(buf, body, strlen(body));
	evhttp_send_reply(req, status, status == 200 ? "OK" : "Error", buf);
	evbuffer_free(buf);
}

/* Send a JSON error in a dialect. */
static void
send_error(struct evhttp_request *req, enum dialect d, int status,
    const char *msg, long retry_after)
{
	char	*body = error_body(d, status, msg);

	send_body(req, status, "application/json", body, retry_after);
	free(body);
}

/* Stop tracking a stream, once nothing of libevent refers to it. */
static void
stream_free(struct stream *s)
{
	if (s->conn != NULL)
		evhttp_connection_set_closecb(s->conn, NULL, NULL);
	if (s->owns_req && s->req != NULL)
		evhttp_request_free(s->req);
	TAILQ_REMOVE(&fake.streams, s, entry);
	event_free(s->timer);
	if (s->watch != NULL)
		event_free(s->watch);
	pieces_free(s->pieces, s->n);
	free(s->body);
	fake.in_flight--;
	free(s);
}

/* Arm the stream's timer. */
static void
stream_arm(struct stream *s, long ms)
{
	struct timeval	tv;

	tv.tv_sec = ms / 1000;
	tv.tv_usec = (ms % 1000) * 1000;
	evtimer_add(s->timer, &tv);
}

/* The client's connection closed: forget it, free later from the loop. */
static void
stream_close_cb(struct evhttp_connection *conn, void *arg)
{
	struct stream	*s = arg;

	/*
	 * A request still attached is freed by libevent right after this; a
	 * detached one (the client went away mid-reply) is ours to free.
	 */
	if (s->req != NULL) {
		if (evhttp_request_get_connection(s->req) == NULL)
			s->owns_req = true;
		else
			s->req = NULL;
	}
	s->conn = NULL;
	s->finished = true;
	stream_arm(s, 0);
}

/* A piece has been written: go on after the delay. */
static void
stream_written_cb(struct evhttp_connection *conn, void *arg)
{
	struct stream	*s = arg;

	stream_arm(s, s->next < s->n ? s->delay_ms : 0);
}

/* Send the next piece, or end the reply. */
static void
stream_timer_cb(evutil_socket_t fd, short events, void *arg)
{
	struct stream	*s = arg;
	struct evbuffer	*buf;
	struct evhttp_connection *conn;

	if (s->finished || s->req == NULL || s->conn == NULL) {
		stream_free(s);
		return;
	}
	if (!s->chunked) {
		/* A non-stream reply, after its delay. */
		if (s->ending == END_REPLY) {
			send_body(s->req, 200, s->content_type, s->body, -1);
			s->req = NULL;
			stream_free(s);
		} else if (s->ending == END_CUT) {
			conn = s->conn;
			evhttp_connection_free(conn);   /* closecb frees s later */
		}
		return;
	}
	if (!s->started) {
		evhttp_add_header(evhttp_request_get_output_headers(s->req),
		    "Content-Type", s->content_type);
		evhttp_add_header(evhttp_request_get_output_headers(s->req),
		    "Cache-Control", "no-cache");
		evhttp_send_reply_start(s->req, 200, "OK");
		s->started = true;
		if (s->n > 0)
			stream_arm(s, s->delay_ms);
		else if (s->ending != END_STALL)
			stream_arm(s, 0);
		return;
	}
	if (s->next < s->n) {
		buf = evbuffer_new();
		evbuffer_add(buf, s->pieces[s->next].data,
		    s->pieces[s->next].len);
		s->next++;
		evhttp_send_reply_chunk_with_cb(s->req, buf, stream_written_cb,
		    s);
		evbuffer_free(buf);
		return;
	}
	switch (s->ending) {
	case END_REPLY:
		evhttp_send_reply_end(s->req);
		s->req = NULL;
		stream_free(s);
		break;
	case END_CUT:
		conn = s->conn;
		evhttp_connection_free(conn);   /* closecb frees s later */
		break;
	case END_STALL:
		break;
	}
}

/* Start answering a request through the event loop. */
static struct stream *
stream_new(struct evhttp_request *req)
{
	struct stream		*s;
	struct evhttp_connection *conn = evhttp_request_get_connection(req);

	s = xmalloc(sizeof *s);
	memset(s, 0, sizeof *s);
	s->req = req;
	s->conn = conn;
	s->timer = evtimer_new(fake.base, stream_timer_cb, s);
	if (s->timer == NULL)
		fake_fatal("evtimer_new failed");
	TAILQ_INSERT_TAIL(&fake.streams, s, entry);
	evhttp_connection_set_closecb(conn, stream_close_cb, s);
	return (s);
}

/*
 * The socket became readable while nothing is being sent: libevent does not
 * look for the client leaving then, so see whether it did.
 */
static void
stream_watch_cb(evutil_socket_t fd, short events, void *arg)
{
	struct stream	*s = arg;
	char		 c;
	ssize_t		 n;

	n = recv(fd, &c, 1, MSG_PEEK);
	if (n > 0 || (n < 0 && (errno == EAGAIN || errno == EINTR))) {
		if (n < 0)
			event_add(s->watch, NULL);
		return;
	}
	if (s->conn != NULL)
		evhttp_connection_free(s->conn);    /* closecb frees s later */
}

/* Watch a silent request's socket for the client leaving. */
static void
stream_watch(struct stream *s)
{
	struct bufferevent	*bev;
	evutil_socket_t		 fd;

	if (s->conn == NULL ||
	    (bev = evhttp_connection_get_bufferevent(s->conn)) == NULL ||
	    (fd = bufferevent_getfd(bev)) < 0)
		return;
	s->watch = event_new(fake.base, fd, EV_READ, stream_watch_cb, s);
	if (s->watch == NULL || event_add(s->watch, NULL) != 0)
		fake_fatal("cannot watch a connection");
}

/* Disable Nagle so that dripped bytes leave one by one. */
static void
set_nodelay(struct evhttp_request *req)
{
	struct evhttp_connection	*conn;
	struct bufferevent		*bev;
	int				 one = 1;
	evutil_socket_t			 fd;

	if ((conn = evhttp_request_get_connection(req)) == NULL ||
	    (bev = evhttp_connection_get_bufferevent(conn)) == NULL ||
	    (fd = bufferevent_getfd(bev)) < 0)
		return;
	setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
}

/* Whether this request with these directives gets its fault. */
static bool
fault_applies(const struct directives *d)
{
	struct fail_counter	*fc;
	const char		*key = d->key[0] != '\0' ? d->key : d->canon;

	if (d->fail_first < 0)
		return (d->fault != F_NONE);
	LIST_FOREACH(fc, &fake.fails, entry) {
		if (strcmp(fc->key, key) == 0)
			break;
	}
	if (fc == NULL) {
		fc = xmalloc(sizeof *fc);
		if ((fc->key = strdup(key)) == NULL)
			fake_fatal("out of memory");
		fc->count = 0;
		LIST_INSERT_HEAD(&fake.fails, fc, entry);
	}
	if (fc->count >= d->fail_first)
		return (false);
	fc->count++;
	return (true);
}

/* Record a chat request's arrival and body. */
static void
chat_record(const char *body, size_t len)
{
	json_t	*v;

	fake.chat_requests++;
	if (fake.n_arrivals == FAKE_MAX_ARRIVALS) {
		memmove(fake.arrivals, fake.arrivals + 1,
		    (FAKE_MAX_ARRIVALS - 1) * sizeof *fake.arrivals);
		fake.n_arrivals--;
	}
	fake.arrivals[fake.n_arrivals++] = now_ms();
	if ((v = json_loadb(body, len, JSON_ALLOW_NUL, NULL)) == NULL &&
	    (v = json_stringn(body, len)) == NULL)
		v = json_string("(a body that is not UTF-8)");
	json_decref(fake.last_body);
	fake.last_body = v;
}

/* Record a chat request's target and headers. */
static void
chat_record_request(struct evhttp_request *req)
{
	struct evkeyval	*h;
	json_t		*headers = json_object();

	TAILQ_FOREACH(h, evhttp_request_get_input_headers(req), next)
		json_object_set_new(headers, h->key, json_string(h->value));
	json_decref(fake.last_request);
	fake.last_request = json_pack("{s:s,s:o}", "target", evhttp_request_get_uri(req),
	    "headers", headers);
}

/* POST /v1/chat/completions */
static void
serve_chat(struct evhttp_request *req)
{
	struct evbuffer		*in = evhttp_request_get_input_buffer(req);
	struct evkeyvalq	*hdrs = evhttp_request_get_input_headers(req);
	struct directives	 d;
	struct reply		 r;
	struct stream		*s;
	json_t			*root, *messages, *m, *so;
	const char		*hv, *open, *close;
	char			*body, *text, *clean, *t, err[256] = "";
	size_t			 len, i, cut;
	long			 max_tokens = -1, status;
	bool			 stream, fault;

	len = evbuffer_get_length(in);
	body = xmalloc(len + 1);
	evbuffer_copyout(in, body, len);
	body[len] = '\0';
	chat_record(body, len);
	chat_record_request(req);
	fake.in_flight++;
	if (fake.in_flight > fake.max_concurrent)
		fake.max_concurrent = fake.in_flight;

	memset(&d, 0, sizeof d);
	d.dialect = fake.dialect;
	d.chunks = -1;
	d.delay_ms = fake.delay_ms;
	d.usage = true;
	d.retry_after = -1;
	d.fail_first = -1;

	root = json_loadb(body, len, JSON_ALLOW_NUL, NULL);
	free(body);
	messages = json_object_get(root, "messages");
	if (!json_is_array(messages)) {
		send_error(req, d.dialect, 400, "fake: the body has no "
		    "messages array", -1);
		fake.in_flight--;
		json_decref(root);
		return;
	}

	/* Directives: the X-Fake header, then the last user message's. */
	text = last_user_text(messages);
	clean = text;
	if ((hv = evhttp_find_header(hdrs, "X-Fake")) != NULL &&
	    directives_parse(&d, hv, strlen(hv), err, sizeof err) != 0)
		goto bad;
	if ((open = strstr(text, "[[")) != NULL &&
	    (close = strstr(open + 2, "]]")) != NULL) {
		if (directives_parse(&d, open + 2, close - open - 2, err,
		    sizeof err) != 0)
			goto bad;
		cut = close + 2 - text;
		memmove((char *)open, text + cut, strlen(text + cut) + 1);
	}
	while (*clean == ' ' || *clean == '\t' || *clean == '\n' ||
	    *clean == '\r')
		clean++;
	for (t = clean + strlen(clean); t > clean && (t[-1] == ' ' ||
	    t[-1] == '\t' || t[-1] == '\n' || t[-1] == '\r'); t--)
		t[-1] = '\0';

	memset(&r, 0, sizeof r);
	r.dialect = d.dialect;
	hv = json_string_value(json_object_get(root, "model"));
	r.model = hv != NULL ? hv : fake.models[0];
	snprintf(r.id, sizeof r.id, "chatcmpl-fake%lu", ++fake.seq);
	r.created = now_ms() / 1000;
	json_array_foreach(messages, i, m)
		r.prompt_tokens += (long)content_bytes(json_object_get(m,
		    "content"));
	stream = json_is_true(json_object_get(root, "stream"));
	so = json_object_get(root, "stream_options");
	r.include_usage = json_is_true(json_object_get(so, "include_usage"));
	if (json_is_integer(json_object_get(root, "max_tokens")) && !d.ignore_limit)
		max_tokens = (long)json_integer_value(json_object_get(root,
		    "max_tokens"));

	if (d.words > 0) {
		free(text);
		text = xmalloc((size_t)d.words * 9 + 1);
		text[0] = '\0';
		for (i = 0, t = text; i < (size_t)d.words; i++)
			t += sprintf(t, "%sw%zu", i > 0 ? " " : "", i + 1);
		clean = text;
	} else {
		if (asprintf(&t, "echo: %s", clean) < 0)
			fake_fatal("out of memory");
		free(text);
		text = clean = t;
	}

	fault = fault_applies(&d);
	if (d.fail_first >= 0 && d.fault == F_NONE && fault) {
		d.fault = F_STATUS;
		d.fault_arg = 503;
	}
	if (!fault)
		d.fault = F_NONE;
	fake_log("chat %s stream=%d dialect=%s fault=%d directives=\"%s\"",
	    r.model, stream, dialect_names[d.dialect], (int)d.fault, d.canon);

	if (!stream && d.fault == F_ERROR_AFTER) {
		d.fault = F_STATUS;
		d.fault_arg = 500;
	}
	if (d.fault == F_STATUS) {
		status = d.fault_arg;
		send_error(req, d.dialect, (int)status, status == 429 ?
		    "fake: rate limit reached" : "fake: failure on demand",
		    d.retry_after);
		fake.in_flight--;
		goto out;
	}

	set_nodelay(req);
	s = stream_new(req);
	s->delay_ms = d.delay_ms;
	s->ending = END_REPLY;
	switch (d.fault) {
	case F_CUT_BEFORE_HEADERS:
		s->chunked = false;
		s->ending = END_CUT;
		stream_arm(s, 0);
		goto out;
	case F_STALL_BEFORE_HEADERS:
		stream_watch(s);
		goto out;
	default:
		break;
	}

	if (!stream) {
		s->body = response_body(&r, &d, clean, max_tokens);
		s->content_type = "application/json";
		if (d.fault == F_MALFORMED_AFTER)
			s->body[strlen(s->body) / 2] = '\0';
		if (d.fault == F_CUT_AFTER || d.fault == F_STALL ||
		    d.fault == F_DRIP) {
			/* Send the body as a chunked reply to cut or stall it. */
			s->chunked = true;
			len = strlen(s->body);
			if (d.fault == F_DRIP) {
				for (i = 0; i < len; i++)
					pieces_add(&s->pieces, &s->n,
					    raw_piece(s->body + i, 1, true));
			} else if (d.fault == F_CUT_AFTER)
				pieces_add(&s->pieces, &s->n,
				    raw_piece(s->body, len / 2, true));
			s->ending = d.fault == F_CUT_AFTER ? END_CUT :
			    d.fault == F_STALL ? END_STALL : END_REPLY;
			stream_arm(s, 0);
			goto out;
		}
		stream_arm(s, d.delay_ms * (r.completion_tokens > 0 ?
		    r.completion_tokens : 1));
		goto out;
	}

	s->chunked = true;
	s->content_type = "text/event-stream";
	if (d.fault != F_STALL)
		stream_pieces(&r, &d, clean, max_tokens, &s->pieces, &s->n);
	switch (d.fault) {
	case F_STALL:
		s->ending = END_STALL;
		break;
	case F_CUT_AFTER:
		fault_piece(&r, &d, &s->pieces, &s->n);
		s->ending = END_CUT;
		break;
	case F_STALL_AFTER:
		fault_piece(&r, &d, &s->pieces, &s->n);
		s->ending = END_STALL;
		break;
	case F_ERROR_AFTER:
	case F_EVENT_ERROR_AFTER:
	case F_ERROR_FIELD_AFTER:
	case F_MALFORMED_AFTER:
		fault_piece(&r, &d, &s->pieces, &s->n);
		break;
	case F_DRIP: {
		struct piece	*bytes = NULL;
		size_t		 nb = 0, j;

		for (i = 0; i < s->n; i++)
			for (j = 0; j < s->pieces[i].len; j++)
				pieces_add(&bytes, &nb, raw_piece(
				    s->pieces[i].data + j, 1, true));
		pieces_free(s->pieces, s->n);
		s->pieces = bytes;
		s->n = nb;
		break;
	}
	default:
		break;
	}
	stream_arm(s, 0);
	goto out;

bad:
	send_error(req, d.dialect, 400, err, -1);
	fake.in_flight--;
out:
	free(text);
	json_decref(root);
}

/* --- the Messages and Responses APIs, natively (--api) ----------------- */

/* Append n bytes to a growing string. */
static void
text_append(char **s, size_t *len, const char *p, size_t n)
{
	*s = realloc(*s, *len + n + 1);
	if (*s == NULL)
		fake_fatal("out of memory");
	memcpy(*s + *len, p, n);
	*len += n;
	(*s)[*len] = '\0';
}

/*
 * Append the text of a content value: a string, or blocks and parts that
 * have a string text; with results, a tool_result's content too.
 */
static void
native_text(char **s, size_t *len, json_t *content, bool results)
{
	json_t	*b, *t;
	size_t	 i;

	if (json_is_string(content)) {
		text_append(s, len, json_string_value(content),
		    json_string_length(content));
		return;
	}
	json_array_foreach(content, i, b) {
		t = json_object_get(b, "text");
		if (json_is_string(t))
			text_append(s, len, json_string_value(t),
			    json_string_length(t));
		else if (results)
			native_text(s, len, json_object_get(b, "content"), false);
	}
}

/* Whether a JSON value is the string s. */
static bool
json_is(json_t *v, const char *s)
{
	return (json_is_string(v) && strcmp(json_string_value(v), s) == 0);
}

/*
 * The prompt of a native body, as one text: the system (or instructions)
 * and every message's text, tool results included. Its bytes are the
 * prompt tokens; *last is the text of the last user message (its text
 * blocks, or else its tool results) or function call output.
 */
static char *
native_prompt(json_t *root, bool responses, char **last)
{
	json_t	*msgs, *m, *c;
	char	*all = NULL, *l = NULL;
	size_t	 n = 0, ln, i;

	text_append(&all, &n, "", 0);
	native_text(&all, &n, json_object_get(root, responses ? "instructions" :
	    "system"), false);
	msgs = json_object_get(root, responses ? "input" : "messages");
	if (json_is_string(msgs)) {
		native_text(&all, &n, msgs, false);
		l = strdup(json_string_value(msgs));
	}
	json_array_foreach(msgs, i, m) {
		c = json_object_get(m, responses && json_object_get(m, "output") ?
		    "output" : "content");
		native_text(&all, &n, c, true);
		if (!json_is(json_object_get(m, "role"), "user") &&
		    !json_is(json_object_get(m, "type"), "function_call_output"))
			continue;
		free(l);
		l = NULL;
		ln = 0;
		text_append(&l, &ln, "", 0);
		native_text(&l, &ln, c, false);
		if (ln == 0)
			native_text(&l, &ln, c, true);
	}
	*last = l != NULL ? l : strdup("");
	return (all);
}

/* An error body in Anthropic's shape. */
static char *
anthropic_error_body(int status, const char *msg)
{
	const char	*type = status == 400 ? "invalid_request_error" :
	    status == 401 ? "authentication_error" :
	    status == 403 ? "permission_error" :
	    status == 404 ? "not_found_error" :
	    status == 413 ? "request_too_large" :
	    status == 429 ? "rate_limit_error" :
	    status == 529 ? "overloaded_error" : "api_error";

	return (json_text(json_pack("{s:s,s:{s:s,s:s}}", "type", "error",
	    "error", "type", type, "message", msg)));
}

/* Send an error of a native API. */
static void
native_error(struct evhttp_request *req, bool responses, int status,
    const char *msg, long retry_after)
{
	char	*body = responses ? error_body(D_OPENAI, status, msg) :
	    anthropic_error_body(status, msg);

	send_body(req, status, "application/json", body, retry_after);
	free(body);
}

/* One named SSE event (consumes json). */
static struct piece
event_piece(const char *name, char *json, bool text)
{
	struct piece	p;

	if (asprintf(&p.data, "event: %s\ndata: %s\n\n", name, json) < 0)
		fake_fatal("out of memory");
	free(json);
	p.len = strlen(p.data);
	p.text = text;
	return (p);
}

/* What a chunk delta carries: 'r'easoning, 'c'ontent or a 't'ool call. */
static int
delta_kind(json_t *delta, json_t **value)
{
	if ((*value = json_object_get(delta, "reasoning_content")) != NULL)
		return ('r');
	if ((*value = json_object_get(delta, "tool_calls")) != NULL)
		return ('t');
	*value = json_object_get(delta, "content");
	return ('c');
}

/* Anthropic's stop_reason for a finish_reason. */
static const char *
anthropic_stop(const char *finish)
{
	return (strcmp(finish, "length") == 0 ? "max_tokens" :
	    strcmp(finish, "tool_calls") == 0 ? "tool_use" : "end_turn");
}

/* usage as Anthropic gives it. */
static json_t *
anthropic_usage(long in, long out)
{
	return (json_pack("{s:i,s:i,s:i,s:i}", "input_tokens", (int)in,
	    "cache_creation_input_tokens", 0, "cache_read_input_tokens", 0,
	    "output_tokens", (int)out));
}

/* The SSE pieces of a Messages stream. */
static void
anthropic_pieces(struct reply *r, const struct directives *d, json_t *deltas,
    const char *finish, struct piece **ps, size_t *n)
{
	json_t	*delta, *v, *msg, *u;
	size_t	 i;
	int	 open = 0, kind, index = -1;

	msg = json_pack("{s:s,s:s,s:s,s:s,s:[],s:n,s:n}", "id", r->id, "type",
	    "message", "role", "assistant", "model", r->model, "content",
	    "stop_reason", "stop_sequence");
	if (d->usage)
		json_object_set_new(msg, "usage", anthropic_usage(r->prompt_tokens,
		    1));
	pieces_add(ps, n, event_piece("message_start", json_text(json_pack(
	    "{s:s,s:o}", "type", "message_start", "message", msg)), false));
	json_array_foreach(deltas, i, delta) {
		kind = delta_kind(delta, &v);
		if (kind != open) {
			if (open == 'r')
				pieces_add(ps, n, event_piece("content_block_delta",
				    json_text(json_pack("{s:s,s:i,s:{s:s,s:s}}", "type",
				    "content_block_delta", "index", index, "delta", "type",
				    "signature_delta", "signature", "fake-signature")),
				    false));
			if (open != 0)
				pieces_add(ps, n, event_piece("content_block_stop",
				    json_text(json_pack("{s:s,s:i}", "type",
				    "content_block_stop", "index", index)), false));
			open = kind;
			index++;
			pieces_add(ps, n, event_piece("content_block_start",
			    json_text(json_pack("{s:s,s:i,s:o}", "type",
			    "content_block_start", "index", index, "content_block",
			    kind == 'r' ? json_pack("{s:s,s:s,s:s}", "type", "thinking",
			    "thinking", "", "signature", "") : kind == 'c' ?
			    json_pack("{s:s,s:s}", "type", "text", "text", "") :
			    json_pack("{s:s,s:s,s:s,s:{}}", "type", "tool_use", "id",
			    "toolu_fake_1", "name", "get_weather", "input"))), false));
			if (index == 0)
				pieces_add(ps, n, event_piece("ping", json_text(json_pack(
				    "{s:s}", "type", "ping")), false));
		}
		pieces_add(ps, n, event_piece("content_block_delta", json_text(
		    json_pack("{s:s,s:i,s:o}", "type", "content_block_delta", "index",
		    index, "delta", kind == 'r' ? json_pack("{s:s,s:O}", "type",
		    "thinking_delta", "thinking", v) : kind == 'c' ?
		    json_pack("{s:s,s:O}", "type", "text_delta", "text", v) :
		    json_pack("{s:s,s:O}", "type", "input_json_delta", "partial_json",
		    json_object_get(json_object_get(json_array_get(v, 0), "function"),
		    "arguments")))), true));
	}
	if (open != 0)
		pieces_add(ps, n, event_piece("content_block_stop", json_text(
		    json_pack("{s:s,s:i}", "type", "content_block_stop", "index",
		    index)), false));
	u = d->usage ? json_pack("{s:i}", "output_tokens",
	    (int)r->completion_tokens) : json_object();
	pieces_add(ps, n, event_piece("message_delta", json_text(json_pack(
	    "{s:s,s:{s:s,s:n},s:o}", "type", "message_delta", "delta",
	    "stop_reason", anthropic_stop(finish), "stop_sequence", "usage", u)),
	    false));
	pieces_add(ps, n, event_piece("message_stop", json_text(json_pack("{s:s}",
	    "type", "message_stop")), false));
}

/* A whole Message. */
static char *
anthropic_body(struct reply *r, const struct directives *d, json_t *deltas,
    const char *finish)
{
	json_t	*delta, *v, *content = json_array(), *msg;
	char	*text = NULL, *reason = NULL, *args = NULL;
	size_t	 tl = 0, rl = 0, al = 0, i;

	json_array_foreach(deltas, i, delta) {
		switch (delta_kind(delta, &v)) {
		case 'r':
			native_text(&reason, &rl, v, false);
			break;
		case 'c':
			native_text(&text, &tl, v, false);
			break;
		default:
			v = json_object_get(json_object_get(json_array_get(v, 0),
			    "function"), "arguments");
			text_append(&args, &al, json_string_value(v),
			    json_string_length(v));
		}
	}
	if (reason != NULL)
		json_array_append_new(content, json_pack("{s:s,s:s,s:s}", "type",
		    "thinking", "thinking", reason, "signature", "fake-signature"));
	if (text != NULL)
		json_array_append_new(content, json_pack("{s:s,s:s}", "type", "text",
		    "text", text));
	if (args != NULL) {
		v = json_loads(args, 0, NULL);
		json_array_append_new(content, json_pack("{s:s,s:s,s:s,s:o}", "type",
		    "tool_use", "id", "toolu_fake_1", "name", "get_weather", "input",
		    v != NULL ? v : json_object()));
	}
	msg = json_pack("{s:s,s:s,s:s,s:s,s:o,s:s,s:n}", "id", r->id, "type",
	    "message", "role", "assistant", "model", r->model, "content", content,
	    "stop_reason", anthropic_stop(finish), "stop_sequence");
	if (d->usage)
		json_object_set_new(msg, "usage", anthropic_usage(r->prompt_tokens,
		    r->completion_tokens));
	free(text);
	free(reason);
	free(args);
	return (json_text(msg));
}

/* A Responses stream or reply being built. */
struct rstate {
	long		 seq;
	json_t		*output;	/* final items, in order */
	int		 open;		/* kind of the open item, or 0 */
	int		 index;		/* its output index */
	char		 id[64];
	char		*acc;		/* its text or arguments so far */
	size_t		 len;
	struct piece	**ps;		/* NULL: no events, a whole reply */
	size_t		*n;
};

/* Emit one event of the stream (consumes ev), numbered in order. */
static void
responses_event(struct rstate *st, json_t *ev, bool text)
{
	char	*name;

	if (st->ps == NULL) {
		json_decref(ev);
		return;
	}
	json_object_set_new(ev, "sequence_number", json_integer(st->seq++));
	name = strdup(json_string_value(json_object_get(ev, "type")));
	if (name == NULL)
		fake_fatal("out of memory");
	pieces_add(st->ps, st->n, event_piece(name, json_text(ev), text));
	free(name);
}

/* A response object (consumes output and usage). */
static json_t *
responses_object(struct reply *r, const char *status, json_t *output,
    json_t *usage, const char *incomplete)
{
	return (json_pack("{s:s,s:s,s:I,s:s,s:n,s:o,s:s,s:o,s:b,s:n,s:o}", "id",
	    r->id, "object", "response", "created_at", (json_int_t)r->created,
	    "status", status, "error", "incomplete_details", incomplete != NULL ?
	    json_pack("{s:s}", "reason", incomplete) : json_null(), "model",
	    r->model, "output", output, "parallel_tool_calls", 1,
	    "previous_response_id", "usage", usage != NULL ? usage : json_null()));
}

/* Finish the open item: its done events and its final form. */
static void
responses_close(struct rstate *st, const char *status)
{
	json_t	*item, *part = NULL;
	char	*t = st->acc != NULL ? st->acc : "";

	if (st->open == 0)
		return;
	if (st->open == 'r') {
		part = json_pack("{s:s,s:s}", "type", "reasoning_text", "text", t);
		responses_event(st, json_pack("{s:s,s:s,s:i,s:i,s:s}", "type",
		    "response.reasoning_text.done", "item_id", st->id, "output_index",
		    st->index, "content_index", 0, "text", t), false);
		item = json_pack("{s:s,s:s,s:[],s:[O]}", "id", st->id, "type",
		    "reasoning", "summary", "content", part);
	} else if (st->open == 'c') {
		part = json_pack("{s:s,s:s,s:[]}", "type", "output_text", "text", t,
		    "annotations");
		responses_event(st, json_pack("{s:s,s:s,s:i,s:i,s:s,s:[]}", "type",
		    "response.output_text.done", "item_id", st->id, "output_index",
		    st->index, "content_index", 0, "text", t, "logprobs"), false);
		item = json_pack("{s:s,s:s,s:s,s:s,s:[O]}", "id", st->id, "type",
		    "message", "status", status, "role", "assistant", "content", part);
	} else {
		responses_event(st, json_pack("{s:s,s:s,s:i,s:s}", "type",
		    "response.function_call_arguments.done", "item_id", st->id,
		    "output_index", st->index, "arguments", t), false);
		item = json_pack("{s:s,s:s,s:s,s:s,s:s,s:s}", "id", st->id, "type",
		    "function_call", "status", "completed", "call_id", "call_fake_1",
		    "name", "get_weather", "arguments", t);
	}
	if (part != NULL)
		responses_event(st, json_pack("{s:s,s:s,s:i,s:i,s:o}", "type",
		    "response.content_part.done", "item_id", st->id, "output_index",
		    st->index, "content_index", 0, "part", part), false);
	responses_event(st, json_pack("{s:s,s:i,s:O}", "type",
	    "response.output_item.done", "output_index", st->index, "item", item),
	    false);
	json_array_set_new(st->output, st->index, item);
	free(st->acc);
	st->acc = NULL;
	st->len = 0;
	st->open = 0;
}

/* Open an item of a kind: output_item.added, and its content part. */
static void
responses_open(struct rstate *st, int kind)
{
	json_t	*item;

	responses_close(st, "completed");
	st->open = kind;
	st->index = (int)json_array_size(st->output);
	snprintf(st->id, sizeof st->id, "%s_fake_%d", kind == 'r' ? "rs" :
	    kind == 'c' ? "msg" : "fc", st->index);
	item = kind == 'r' ? json_pack("{s:s,s:s,s:[]}", "id", st->id, "type",
	    "reasoning", "summary") : kind == 'c' ? json_pack("{s:s,s:s,s:s,s:s,"
	    "s:[]}", "id", st->id, "type", "message", "status", "in_progress",
	    "role", "assistant", "content") : json_pack("{s:s,s:s,s:s,s:s,s:s,"
	    "s:s}", "id", st->id, "type", "function_call", "status",
	    "in_progress", "call_id", "call_fake_1", "name", "get_weather",
	    "arguments", "");
	json_array_append(st->output, item);
	responses_event(st, json_pack("{s:s,s:i,s:o}", "type",
	    "response.output_item.added", "output_index", st->index, "item",
	    item), false);
	if (kind != 't')
		responses_event(st, json_pack("{s:s,s:s,s:i,s:i,s:o}", "type",
		    "response.content_part.added", "item_id", st->id, "output_index",
		    st->index, "content_index", 0, "part", kind == 'r' ?
		    json_pack("{s:s,s:s}", "type", "reasoning_text", "text", "") :
		    json_pack("{s:s,s:s,s:[]}", "type", "output_text", "text", "",
		    "annotations")), false);
}

/*
 * Run the deltas through a Responses stream: its events into ps (when not
 * NULL); returns the final response object.
 */
static json_t *
responses_run(struct reply *r, const struct directives *d, json_t *deltas,
    const char *finish, struct piece **ps, size_t *n)
{
	struct rstate	 st;
	json_t		*delta, *v, *usage = NULL;
	size_t		 i;
	int		 kind;
	long		 reasoning = 0;
	bool		 cut = strcmp(finish, "length") == 0;

	memset(&st, 0, sizeof st);
	st.output = json_array();
	st.ps = ps;
	st.n = n;
	responses_event(&st, json_pack("{s:s,s:o}", "type", "response.created",
	    "response", responses_object(r, "in_progress", json_array(), NULL,
	    NULL)), false);
	responses_event(&st, json_pack("{s:s,s:o}", "type",
	    "response.in_progress", "response", responses_object(r, "in_progress",
	    json_array(), NULL, NULL)), false);
	json_array_foreach(deltas, i, delta) {
		kind = delta_kind(delta, &v);
		if (kind == 'r')
			reasoning++;
		if (kind != st.open)
			responses_open(&st, kind);
		if (kind == 't')
			v = json_object_get(json_object_get(json_array_get(v, 0),
			    "function"), "arguments");
		text_append(&st.acc, &st.len, json_string_value(v),
		    json_string_length(v));
		responses_event(&st, kind == 'r' ? json_pack("{s:s,s:s,s:i,s:i,"
		    "s:O}", "type", "response.reasoning_text.delta", "item_id", st.id,
		    "output_index", st.index, "content_index", 0, "delta", v) :
		    kind == 'c' ? json_pack("{s:s,s:s,s:i,s:i,s:O,s:[]}", "type",
		    "response.output_text.delta", "item_id", st.id, "output_index",
		    st.index, "content_index", 0, "delta", v, "logprobs") :
		    json_pack("{s:s,s:s,s:i,s:O}", "type",
		    "response.function_call_arguments.delta", "item_id", st.id,
		    "output_index", st.index, "delta", v), true);
	}
	responses_close(&st, cut ? "incomplete" : "completed");
	if (d->usage)
		usage = json_pack("{s:i,s:{s:i},s:i,s:{s:i},s:i}", "input_tokens",
		    (int)r->prompt_tokens, "input_tokens_details", "cached_tokens", 0,
		    "output_tokens", (int)r->completion_tokens, "output_tokens_details",
		    "reasoning_tokens", (int)reasoning, "total_tokens",
		    (int)(r->prompt_tokens + r->completion_tokens));
	v = responses_object(r, cut ? "incomplete" : "completed", st.output,
	    usage, cut ? "max_output_tokens" : NULL);
	responses_event(&st, json_pack("{s:s,s:O}", "type", cut ?
	    "response.incomplete" : "response.completed", "response", v), false);
	return (v);
}

/* Insert an error event after the Nth text piece; the rest is dropped. */
static void
native_fault(const struct directives *d, bool responses, struct reply *r,
    struct piece **ps, size_t *n)
{
	struct piece	 p;
	size_t		 i, seen = 0, at = *n;
	char		*json;

	for (i = 0; i < *n; i++) {
		if (seen == (size_t)d->fault_arg) {
			at = i;
			break;
		}
		if ((*ps)[i].text && ++seen == (size_t)d->fault_arg) {
			at = i + 1;
			break;
		}
	}
	if (d->fault == F_MALFORMED_AFTER)
		p = raw_piece("event: content_block_delta\ndata: {\"type\":\n\n",
		    44, false);
	else if (responses) {
		json = json_text(json_pack("{s:s,s:o,s:i}", "type", "response.failed",
		    "response", responses_object(r, "failed", json_array(), NULL, NULL),
		    "sequence_number", (int)at));
		p = event_piece("response.failed", json, false);
	} else
		p = event_piece("error", anthropic_error_body(500,
		    "fake failure in the stream"), false);
	for (i = at; i < *n; i++)
		free((*ps)[i].data);
	*n = at;
	pieces_add(ps, n, p);
}

/* POST /v1/messages, /v1/messages/count_tokens, /v1/responses */
static void
serve_native(struct evhttp_request *req, bool responses, bool count)
{
	struct evbuffer		*in = evhttp_request_get_input_buffer(req);
	struct evkeyvalq	*hdrs = evhttp_request_get_input_headers(req);
	struct directives	 d;
	struct reply		 r;
	struct stream		*s;
	json_t			*root, *deltas, *v;
	const char		*hv, *open, *close, *finish;
	char			*body, *all, *text, *clean, *t, err[256] = "";
	size_t			 len, i, cut;
	long			 max_tokens = -1;
	bool			 stream, fault;

	len = evbuffer_get_length(in);
	body = xmalloc(len + 1);
	evbuffer_copyout(in, body, len);
	body[len] = '\0';
	fake.native_requests++;
	chat_record_request(req);
	root = json_loadb(body, len, JSON_ALLOW_NUL, NULL);
	json_decref(fake.last_native_body);
	fake.last_native_body = root != NULL ? json_incref(root) :
	    json_stringn(body, len);
	free(body);
	if (!json_is_object(root) || (responses ? json_object_get(root, "input") ==
	    NULL : !json_is_array(json_object_get(root, "messages")))) {
		native_error(req, responses, 400, responses ? "fake: the body has no "
		    "input" : "fake: the body has no messages array", -1);
		json_decref(root);
		return;
	}

	memset(&d, 0, sizeof d);
	d.dialect = D_OPENAI;
	d.chunks = -1;
	d.delay_ms = fake.delay_ms;
	d.usage = true;
	d.retry_after = -1;
	d.fail_first = -1;
	all = native_prompt(root, responses, &text);
	clean = text;
	if ((hv = evhttp_find_header(hdrs, "X-Fake")) != NULL &&
	    directives_parse(&d, hv, strlen(hv), err, sizeof err) != 0)
		goto bad;
	if ((open = strstr(text, "[[")) != NULL &&
	    (close = strstr(open + 2, "]]")) != NULL) {
		if (directives_parse(&d, open + 2, close - open - 2, err,
		    sizeof err) != 0)
			goto bad;
		cut = close + 2 - text;
		memmove((char *)open, text + cut, strlen(text + cut) + 1);
	}
	d.dialect = D_OPENAI;
	while (*clean == ' ' || *clean == '\t' || *clean == '\n' ||
	    *clean == '\r')
		clean++;
	for (t = clean + strlen(clean); t > clean && (t[-1] == ' ' ||
	    t[-1] == '\t' || t[-1] == '\n' || t[-1] == '\r'); t--)
		t[-1] = '\0';

	memset(&r, 0, sizeof r);
	r.dialect = D_OPENAI;
	hv = json_string_value(json_object_get(root, "model"));
	r.model = hv != NULL ? hv : fake.models[0];
	snprintf(r.id, sizeof r.id, "%s_fake%lu", responses ? "resp" : "msg",
	    ++fake.seq);
	r.created = now_ms() / 1000;
	r.prompt_tokens = (long)strlen(all);
	free(all);
	if (count) {
		body = json_text(json_pack("{s:i}", "input_tokens",
		    (int)r.prompt_tokens));
		send_body(req, 200, "application/json", body, -1);
		free(body);
		goto out;
	}
	stream = json_is_true(json_object_get(root, "stream"));
	v = json_object_get(root, responses ? "max_output_tokens" : "max_tokens");
	if (json_is_integer(v) && !d.ignore_limit)
		max_tokens = (long)json_integer_value(v);

	if (d.words > 0) {
		free(text);
		text = xmalloc((size_t)d.words * 9 + 1);
		text[0] = '\0';
		for (i = 0, t = text; i < (size_t)d.words; i++)
			t += sprintf(t, "%sw%zu", i > 0 ? " " : "", i + 1);
		clean = text;
	} else {
		if (asprintf(&t, "echo: %s", clean) < 0)
			fake_fatal("out of memory");
		free(text);
		text = clean = t;
	}

	fault = fault_applies(&d);
	if (d.fail_first >= 0 && d.fault == F_NONE && fault) {
		d.fault = F_STATUS;
		d.fault_arg = 503;
	}
	if (!fault)
		d.fault = F_NONE;
	fake_log("%s %s stream=%d fault=%d directives=\"%s\"", responses ?
	    "responses" : "messages", r.model, stream, (int)d.fault, d.canon);
	if (!stream && d.fault == F_ERROR_AFTER) {
		d.fault = F_STATUS;
		d.fault_arg = 500;
	}
	if (d.fault == F_STATUS) {
		native_error(req, responses, (int)d.fault_arg, d.fault_arg == 429 ?
		    "fake: rate limit reached" : "fake: failure on demand",
		    d.retry_after);
		goto out;
	}

	fake.in_flight++;
	if (fake.in_flight > fake.max_concurrent)
		fake.max_concurrent = fake.in_flight;
	set_nodelay(req);
	s = stream_new(req);
	s->delay_ms = d.delay_ms;
	s->ending = END_REPLY;
	if (d.fault == F_CUT_BEFORE_HEADERS) {
		s->ending = END_CUT;
		stream_arm(s, 0);
		goto out;
	}
	if (d.fault == F_STALL_BEFORE_HEADERS) {
		stream_watch(s);
		goto out;
	}
	deltas = json_array();
	finish = reply_deltas(&r, &d, clean, max_tokens, deltas);
	if (!stream) {
		s->body = responses ? json_text(responses_run(&r, &d, deltas, finish,
		    NULL, NULL)) : anthropic_body(&r, &d, deltas, finish);
		s->content_type = "application/json";
		if (d.fault == F_MALFORMED_AFTER)
			s->body[strlen(s->body) / 2] = '\0';
		json_decref(deltas);
		stream_arm(s, d.delay_ms * (r.completion_tokens > 0 ?
		    r.completion_tokens : 1));
		goto out;
	}
	s->chunked = true;
	s->content_type = "text/event-stream";
	if (d.fault != F_STALL) {
		if (responses)
			json_decref(responses_run(&r, &d, deltas, finish, &s->pieces,
			    &s->n));
		else
			anthropic_pieces(&r, &d, deltas, finish, &s->pieces, &s->n);
	}
	json_decref(deltas);
	switch (d.fault) {
	case F_STALL:
		s->ending = END_STALL;
		break;
	case F_CUT_AFTER:
	case F_STALL_AFTER:
		fault_piece(&r, &d, &s->pieces, &s->n);
		s->ending = d.fault == F_CUT_AFTER ? END_CUT : END_STALL;
		break;
	case F_ERROR_AFTER:
	case F_EVENT_ERROR_AFTER:
	case F_MALFORMED_AFTER:
		native_fault(&d, responses, &r, &s->pieces, &s->n);
		break;
	case F_DRIP: {
		struct piece	*bytes = NULL;
		size_t		 nb = 0, j;

		for (i = 0; i < s->n; i++)
			for (j = 0; j < s->pieces[i].len; j++)
				pieces_add(&bytes, &nb, raw_piece(
				    s->pieces[i].data + j, 1, true));
		pieces_free(s->pieces, s->n);
		s->pieces = bytes;
		s->n = nb;
		break;
	}
	default:
		break;
	}
	stream_arm(s, 0);
	goto out;

bad:
	native_error(req, responses, 400, err, -1);
	free(all);
out:
	free(text);
	json_decref(root);
}

/* Words of a string (runs of non-spaces). */
static long
word_count(const char *s)
{
	long n = 0;
	bool in = false;

	for (; *s != '\0'; s++) {
		bool sp = *s == ' ' || *s == '\n' || *s == '\t';
		if (!sp && !in)
			n++;
		in = !sp;
	}
	return n;
}

/* POST /v1/completions: OpenAI's legacy completions, one choice; the prompt may hold U+0000. */
static void
serve_completions(struct evhttp_request *req)
{
	struct evbuffer	*in = evhttp_request_get_input_buffer(req);
	json_t		*root, *prompt, *model;
	const char	*p;
	char		*text, *body;
	size_t		 len;
	long		 pt, ct;

	root = json_loadb((const char *)evbuffer_pullup(in, -1),
	    evbuffer_get_length(in), JSON_ALLOW_NUL, NULL);
	json_decref(fake.last_completions_body);
	fake.last_completions_body = json_incref(root);
	prompt = json_object_get(root, "prompt");
	model = json_object_get(root, "model");
	if (!json_is_string(prompt) || !json_is_string(model)) {
		send_error(req, D_OPENAI, 400, "fake: prompt and model must be strings", -1);
		json_decref(root);
		return;
	}
	p = json_string_value(prompt);
	len = 6 + json_string_length(prompt);
	text = xmalloc(len + 1);
	memcpy(text, "echo: ", 6);
	memcpy(text + 6, p, len - 6 + 1);
	pt = word_count(p) + 1;
	ct = word_count(text);
	if (json_is_true(json_object_get(root, "stream"))) {
		struct evbuffer *out = evbuffer_new();
		bool usage = json_is_true(json_object_get(json_object_get(root,
		    "stream_options"), "include_usage"));
		size_t half = len / 2;
		for (int i = 0; i < 3; i++) {
			json_t *ch = json_pack("{s:s,s:s,s:i,s:s,s:[{s:i,s:s%,s:o,s:n}]}",
			    "id", "cmpl-fake", "object", "text_completion", "created",
			    1700000000, "model", json_string_value(model), "choices",
			    "index", 0, "text", i == 0 ? text : i == 1 ? text + half : "",
			    (size_t)(i == 0 ? half : i == 1 ? len - half : 0),
			    "finish_reason", i == 2 ? json_string("stop") : json_null(),
			    "logprobs");
			body = json_text(ch);
			evbuffer_add_printf(out, "data: %s\n\n", body);
			free(body);
		}
		if (usage) {
			body = json_text(json_pack("{s:s,s:s,s:i,s:s,s:[],s:{s:i,s:i,s:i}}",
			    "id", "cmpl-fake", "object", "text_completion", "created",
			    1700000000, "model", json_string_value(model), "choices",
			    "usage", "prompt_tokens", (int)pt, "completion_tokens",
			    (int)ct, "total_tokens", (int)(pt + ct)));
			evbuffer_add_printf(out, "data: %s\n\n", body);
			free(body);
		}
		evbuffer_add_printf(out, "data: [DONE]\n\n");
		evhttp_add_header(evhttp_request_get_output_headers(req),
		    "Content-Type", "text/event-stream");
		evhttp_send_reply(req, 200, "OK", out);
		evbuffer_free(out);
	} else {
		body = json_text(json_pack("{s:s,s:s,s:i,s:s,s:[{s:i,s:s%,s:s,s:n}],"
		    "s:{s:i,s:i,s:i}}", "id", "cmpl-fake", "object", "text_completion",
		    "created", 1700000000, "model", json_string_value(model),
		    "choices", "index", 0, "text", text, len, "finish_reason", "stop",
		    "logprobs", "usage", "prompt_tokens", (int)pt,
		    "completion_tokens", (int)ct, "total_tokens", (int)(pt + ct)));
		send_body(req, 200, "application/json", body, -1);
		free(body);
	}
	free(text);
	json_decref(root);
}

/* POST /v1/embeddings: eight numbers for each input string. */
static void
serve_embeddings(struct evhttp_request *req)
{
	struct evbuffer	*in = evhttp_request_get_input_buffer(req);
	json_t		*root, *input, *data, *v;
	char		*body;
	size_t		 i;
	long		 pt = 0;

	root = json_loadb((const char *)evbuffer_pullup(in, -1),
	    evbuffer_get_length(in), 0, NULL);
	input = json_object_get(root, "input");
	if (json_is_string(input)) {
		json_t *one = json_array();
		json_array_append(one, input);
		input = one;
	} else
		json_incref(input);
	if (!json_is_array(input) || !json_is_string(json_object_get(root, "model"))) {
		send_error(req, D_OPENAI, 400, "fake: input and model are required", -1);
		json_decref(input);
		json_decref(root);
		return;
	}
	data = json_array();
	json_array_foreach(input, i, v) {
		json_t *vec = json_array();
		const char *t = json_is_string(v) ? json_string_value(v) : "";
		pt += word_count(t);
		for (int k = 0; k < 8; k++)
			json_array_append_new(vec, json_real((double)((strlen(t) + (size_t)k) % 7) / 7.0));
		json_array_append_new(data, json_pack("{s:s,s:i,s:o}", "object",
		    "embedding", "index", (int)i, "embedding", vec));
	}
	body = json_text(json_pack("{s:s,s:o,s:s,s:{s:i,s:i}}", "object", "list",
	    "data", data, "model", json_string_value(json_object_get(root, "model")),
	    "usage", "prompt_tokens", (int)pt, "total_tokens", (int)pt));
	send_body(req, 200, "application/json", body, -1);
	free(body);
	json_decref(input);
	json_decref(root);
}

/* GET /v1/models */
static void
serve_models(struct evhttp_request *req)
{
	json_t	*data = json_array();
	size_t	 i;
	char	*body;

	fake.models_requests++;
	for (i = 0; i < fake.n_models; i++)
		json_array_append_new(data, json_pack("{s:s,s:s,s:i,s:s}", "id",
		    fake.models[i], "object", "model", "created", 1700000000,
		    "owned_by", "fake"));
	body = json_text(json_pack("{s:s,s:o}", "object", "list", "data",
	    data));
	send_body(req, 200, "application/json", body, -1);
	free(body);
}

/* GET /stats */
static void
serve_stats(struct evhttp_request *req)
{
	struct fail_counter	*fc;
	json_t			*arr = json_array(), *fails = json_object();
	size_t			 i;
	char			*body;

	for (i = 0; i < fake.n_arrivals; i++)
		json_array_append_new(arr, json_integer(fake.arrivals[i]));
	LIST_FOREACH(fc, &fake.fails, entry)
		json_object_set_new(fails, fc->key, json_integer(fc->count));
	body = json_text(json_pack("{s:I,s:I,s:I,s:I,s:I,s:I,s:o,s:o,s:O,s:O,s:O,s:O,s:o}",
	    "requests", (json_int_t)fake.requests,
	    "chat_requests", (json_int_t)fake.chat_requests,
	    "native_requests", (json_int_t)fake.native_requests,
	    "models_requests", (json_int_t)fake.models_requests,
	    "in_flight", (json_int_t)fake.in_flight,
	    "max_concurrent", (json_int_t)fake.max_concurrent,
	    "arrivals_ms", arr,
	    "authorization", fake.authorization != NULL ?
	    json_string(fake.authorization) : json_null(),
	    "last_body", fake.last_body != NULL ? fake.last_body : json_null(),
	    "last_completions_body", fake.last_completions_body != NULL ?
	    fake.last_completions_body : json_null(),
	    "last_request", fake.last_request != NULL ? fake.last_request : json_null(),
	    "last_native_body", fake.last_native_body != NULL ?
	    fake.last_native_body : json_null(),
	    "fail_counts", fails));
	send_body(req, 200, "application/json", body, -1);
	free(body);
}

/* Forget the fail_first counters. */
static void
fails_free(void)
{
	struct fail_counter	*fc;

	while ((fc = LIST_FIRST(&fake.fails)) != NULL) {
		LIST_REMOVE(fc, entry);
		free(fc->key);
		free(fc);
	}
}

/* POST /reset */
static void
serve_reset(struct evhttp_request *req)
{
	fake.requests = fake.chat_requests = fake.models_requests = 0;
	fake.native_requests = 0;
	json_decref(fake.last_native_body);
	fake.last_native_body = NULL;
	fake.max_concurrent = fake.in_flight;
	fake.n_arrivals = 0;
	free(fake.authorization);
	fake.authorization = NULL;
	json_decref(fake.last_body);
	fake.last_body = NULL;
	json_decref(fake.last_completions_body);
	fake.last_completions_body = NULL;
	json_decref(fake.last_request);
	fake.last_request = NULL;
	fails_free();
	send_body(req, 200, "application/json", "{\"ok\":true}", -1);
}

/* Every request arrives here. */
static void
request_cb(struct evhttp_request *req, void *arg)
{
	const struct evhttp_uri	*uri = evhttp_request_get_evhttp_uri(req);
	const char		*path = uri != NULL ? evhttp_uri_get_path(uri) :
	    NULL, *auth;
	enum evhttp_cmd_type	 cmd = evhttp_request_get_command(req);

	fake.requests++;
	auth = evhttp_find_header(evhttp_request_get_input_headers(req),
	    "Authorization");
	if (auth != NULL) {
		free(fake.authorization);
		fake.authorization = strdup(auth);
	}
	if (path == NULL)
		path = "/";
	if (strncmp(path, "/v1/", 4) == 0)
		path += 3;
	fake_log("%s %s", cmd == EVHTTP_REQ_GET ? "GET" : cmd ==
	    EVHTTP_REQ_POST ? "POST" : "other", path);

	if (strcmp(path, "/models") == 0 && cmd == EVHTTP_REQ_GET)
		serve_models(req);
	else if (strcmp(path, "/chat/completions") == 0 &&
	    cmd == EVHTTP_REQ_POST)
		serve_chat(req);
	else if (strcmp(path, "/completions") == 0 && cmd == EVHTTP_REQ_POST)
		serve_completions(req);
	else if (strcmp(path, "/embeddings") == 0 && cmd == EVHTTP_REQ_POST)
		serve_embeddings(req);
	else if (strcmp(path, "/messages") == 0 && cmd == EVHTTP_REQ_POST &&
	    fake.api_anthropic)
		serve_native(req, false, false);
	else if (strcmp(path, "/messages/count_tokens") == 0 &&
	    cmd == EVHTTP_REQ_POST && fake.api_anthropic)
		serve_native(req, false, true);
	else if (strcmp(path, "/responses") == 0 && cmd == EVHTTP_REQ_POST &&
	    fake.api_responses)
		serve_native(req, true, false);
	else if (strcmp(path, "/stats") == 0 && cmd == EVHTTP_REQ_GET)
		serve_stats(req);
	else if (strcmp(path, "/reset") == 0 && cmd == EVHTTP_REQ_POST)
		serve_reset(req);
	else
		send_error(req, fake.dialect, 404, "fake: no such endpoint", -1);
}

/* SIGTERM, SIGINT: leave the loop. */
static void
signal_cb(evutil_socket_t sig, short events, void *arg)
{
	event_base_loopbreak(fake.base);
}

/* --api: a comma-separated list of chat, anthropic, responses. */
static int
api_parse(const char *list)
{
	char	*copy, *word, *last;
	int	 rc = 0;

	if ((copy = strdup(list)) == NULL)
		fake_fatal("out of memory");
	for (word = strtok_r(copy, ",", &last); word != NULL;
	    word = strtok_r(NULL, ",", &last)) {
		if (strcmp(word, "anthropic") == 0)
			fake.api_anthropic = true;
		else if (strcmp(word, "responses") == 0)
			fake.api_responses = true;
		else if (strcmp(word, "chat") != 0)
			rc = -1;
	}
	free(copy);
	return (rc);
}

/* Print usage and exit 64. */
static void __attribute__((noreturn))
usage(void)
{
	fprintf(stderr, "usage: fake_upstream [-q] [-p port] [-m model]... "
	    "[--dialect openai|llamacpp|vllm|ollama|tgi] [--delay-ms N] "
	    "[--chunks N] [--api chat,anthropic,responses]\n");
	exit(64);
}

/* Serve until told to stop. */
int
main(int argc, char **argv)
{
	static const struct option longopts[] = {
		{ "dialect", required_argument, NULL, 'D' },
		{ "delay-ms", required_argument, NULL, 'd' },
		{ "chunks", required_argument, NULL, 'c' },
		{ "api", required_argument, NULL, 'a' },
		{ "help", no_argument, NULL, 'h' },
		{ NULL, 0, NULL, 0 }
	};
	struct evhttp_bound_socket	*bound;
	struct event			*sigterm, *sigint;
	struct sockaddr_in		 sin;
	socklen_t			 slen = sizeof sin;
	struct stream			*s;
	long				 port = 0;
	int				 ch;

	TAILQ_INIT(&fake.streams);
	LIST_INIT(&fake.fails);
	fake.chunks = 4;
	fake.models = xmalloc(argc * sizeof *fake.models);
	while ((ch = getopt_long(argc, argv, "qp:m:h", longopts, NULL)) != -1) {
		switch (ch) {
		case 'q':
			fake.quiet = true;
			break;
		case 'p':
			if (count_parse(optarg, 65535, &port) != 0)
				usage();
			break;
		case 'm':
			fake.models[fake.n_models++] = optarg;
			break;
		case 'D':
			if (dialect_parse(optarg, &fake.dialect) != 0)
				usage();
			break;
		case 'd':
			if (count_parse(optarg, 3600000, &fake.delay_ms) != 0)
				usage();
			break;
		case 'c':
			if (count_parse(optarg, FAKE_MAX_COUNT, &fake.chunks) !=
			    0 || fake.chunks < 1)
				usage();
			break;
		case 'a':
			if (api_parse(optarg) != 0)
				usage();
			break;
		default:
			usage();
		}
	}
	if (optind != argc)
		usage();
	if (fake.n_models == 0)
		fake.models[fake.n_models++] = "fake-model";
	fake.arrivals = xmalloc(FAKE_MAX_ARRIVALS * sizeof *fake.arrivals);

	signal(SIGPIPE, SIG_IGN);
	if ((fake.base = event_base_new()) == NULL ||
	    (fake.http = evhttp_new(fake.base)) == NULL)
		fake_fatal("cannot set up libevent");
	evhttp_set_max_body_size(fake.http, FAKE_MAX_BODY);
	evhttp_set_allowed_methods(fake.http, EVHTTP_REQ_GET | EVHTTP_REQ_POST |
	    EVHTTP_REQ_HEAD);
	evhttp_set_gencb(fake.http, request_cb, NULL);
	bound = evhttp_bind_socket_with_handle(fake.http, "127.0.0.1",
	    (ev_uint16_t)port);
	if (bound == NULL)
		fake_fatal("cannot bind 127.0.0.1:%ld", port);
	if (getsockname(evhttp_bound_socket_get_fd(bound),
	    (struct sockaddr *)&sin, &slen) != 0)
		fake_fatal("getsockname: %s", strerror(errno));
	printf("%d\n", ntohs(sin.sin_port));
	fflush(stdout);

	sigterm = evsignal_new(fake.base, SIGTERM, signal_cb, NULL);
	sigint = evsignal_new(fake.base, SIGINT, signal_cb, NULL);
	if (sigterm == NULL || sigint == NULL || evsignal_add(sigterm, NULL) != 0 ||
	    evsignal_add(sigint, NULL) != 0)
		fake_fatal("cannot catch signals");

	event_base_dispatch(fake.base);

	while ((s = TAILQ_FIRST(&fake.streams)) != NULL)
		stream_free(s);
	evhttp_free(fake.http);
	event_free(sigterm);
	event_free(sigint);
	event_base_free(fake.base);
	fails_free();
	free(fake.arrivals);
	free(fake.models);
	free(fake.authorization);
	json_decref(fake.last_body);
	json_decref(fake.last_completions_body);
	json_decref(fake.last_request);
	json_decref(fake.last_native_body);
	return (0);
}
