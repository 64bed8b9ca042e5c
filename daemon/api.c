/* The HTTP front: OpenAI's API over evhttp, translated to and from chats. */
#include "config.h"

#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/http.h>
#include <event2/keyvalq_struct.h>
#include <event2/listener.h>
#include <jansson.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>

#ifdef HAVE_SYSTEMD
#include <systemd/sd-daemon.h>
#endif

#include "daemon/api.h"
#include "daemon/api_body.h"
#include "daemon/api_head.h"
#include "daemon/log.h"
#include "daemon/metrics.h"
#include "daemon/openai.h"
#include "daemon/openllmd.h"
#include "daemon/peer.h"
#include "daemon/pretok.h"

#define API_SSE_DONE "data: [DONE]\n\n"         /* a stream's last event */
#define API_HIGH_WATERMARK (1024 * 1024)    /* pause the transfer above this much unsent output */
#define API_TAG_MAX 256                     /* longest X-Ollm-Tag */

struct api_conn;

/* One OpenAI request answered by a chat. */
struct api_req {
	struct api *api;
	struct api_conn *conn;      /* NULL once the client went away */
	struct evhttp_request *req;
	struct chat *chat;          /* NULL once released */
	bool stream;
	bool include_usage;
	bool started;               /* stream: 200 and the role chunk are sent */
	bool finished;              /* the last reply went out */
	bool over_watermark;        /* blocked() said so; resume when the output drains */
	struct evbuffer *pend;      /* events held while a chunk is written, then sent as one */
	bool chunk_in_flight;       /* a chunk is being written: api_chunk_written_cb will come */
	bool passthrough;           /* completions, embeddings: the server's bytes go back as they are */
	struct event *watch;        /* the client's socket, to see it close while no byte goes out */
	char id[64];
	int64_t created;
	char *model;                /* as the client named it */
	char *delta_prefix;         /* a content delta's event up to its content, made once */
	size_t delta_prefix_len;
};

/* Whom a connection cap counts a connection against: a local user, or an address. */
struct api_party {
	bool by_uid;
	uint32_t uid;
	struct in6_addr addr;       /* IPv4 as ::ffff:a.b.c.d; all zero: unknown */
	int conns;                  /* HTTP connections open */
	struct api_party *next;     /* in its hash bucket */
};

#define API_PARTY_BUCKETS 256
#define API_LINGER_MAX 64           /* refused connections read out at once, at most */
#define API_LINGER_MS 2000          /* how long a refused connection is read out */
#define API_LINGER_BYTES (16u * 1024 * 1024)    /* and how much of it */

/*
 * A connection's life: made by api_bev_cb at accept (NEW), adopted from the
 * loop once evhttp has set it up (OPEN), refused (CLOSING: the answer is
 * written and evhttp let go of it from the loop), then read out a moment so
 * that the client sees the answer before the close (LINGER).
 */
enum api_conn_state { API_CONN_NEW, API_CONN_OPEN, API_CONN_CLOSING, API_CONN_LINGER };

/* What a connection's timer waits for. */
enum api_deadline { API_DEADLINE_NONE, API_DEADLINE_HEADER, API_DEADLINE_BODY };

/* One HTTP connection, from accept to close, and who is at its other end. */
struct api_conn {
	struct api *api;
	enum api_conn_state state;
	struct bufferevent *bev;    /* made for evhttp by api_bev_cb */
	struct evhttp_connection *evcon;    /* NULL until adopted, and once let go of */
	struct peer peer;
	bool identified;
	char ident_error[160];
	struct api_party *party;    /* NULL until adopted */
	struct api_req *active;     /* evhttp answers one request of a connection at a time */
	bool answering;             /* a request was handed over and its answer is not all written */
	int fd;                     /* its index in api->by_fd, -1: not there */
	struct api_head head;       /* the request being read, byte by byte */
	struct event *timer;        /* the phase's deadline, a refusal, the linger's end */
	enum api_deadline deadline;
	size_t body_reserved;       /* bytes of http_max_inflight_body held */
	char *refuse_text;          /* the whole answer of a refusal; NULL: close without one */
	struct event *linger_ev;    /* LINGER: reading out what the client still sends */
	int linger_fd;
	size_t linger_bytes;
	bool idle;                  /* in api->idle */
	TAILQ_ENTRY(api_conn) entry;    /* api->fresh, then api->conns */
	TAILQ_ENTRY(api_conn) idle_entry;
};
TAILQ_HEAD(api_conn_list, api_conn);

/* Logging at most once a second for one cause. */
enum api_log_cause {
	API_LOG_ACCEPT, API_LOG_FULL, API_LOG_PARTY, API_LOG_IDLE, API_LOG_TIMEOUT, API_LOG_REFUSED,
	API_LOG_KEY, API_LOG_IDENTITY, API_LOG_N
};

struct api_log_gate {
	int64_t last_ms;
	unsigned quiet;             /* lines not written since */
};

struct api {
	struct server *server;
	struct evhttp *http;
	struct evhttp_bound_socket **bound;
	char **unix_paths;          /* socket files we made, removed at close */
	size_t n_bound;
	struct api_conn_list fresh; /* accepted, waiting for api_adopt_cb */
	struct api_conn_list conns; /* every other, oldest first */
	size_t n_conns;             /* in conns, lingering ones too: they hold a descriptor */
	struct api_conn_list idle;  /* between requests, the longest idle first */
	size_t n_linger;
	struct api_party *parties[API_PARTY_BUCKETS];
	struct api_conn **by_fd;    /* the connection of each descriptor, for a request's lookup */
	size_t n_by_fd;
	uint64_t next_id;
	struct event *drain_timer;
	struct event *adopt_ev;
	struct event *accept_retry; /* accepting again after running out of descriptors */
	bool accept_paused;
	size_t max_body;            /* max_frame when opened: larger bodies are refused */
	size_t body_in_flight;      /* bytes of bodies being read, against http_max_inflight_body */
	struct api_log_gate gates[API_LOG_N];
};

static void api_request_cb(struct evhttp_request *, void *);
static void api_conn_close_cb(struct evhttp_connection *, void *);

/* --- replies ------------------------------------------------------------ */

/* OpenAI's error type for one of our error codes, and its HTTP status. */
static int
api_status(const char *code, int64_t upstream_status, const char **type)
{
	*type = "api_error";
	if (strcmp(code, "bad_request") == 0 || strcmp(code, "bad_frame") == 0) {
		*type = "invalid_request_error";
		return 400;
	}
	if (strcmp(code, "invalid_api_key") == 0 || strcmp(code, "missing_api_key") == 0) {
		*type = "invalid_request_error";
		return 401;
	}
	if (strcmp(code, "forbidden") == 0) {
		*type = "permission_error";
		return 403;
	}
	if (strcmp(code, "budget_exceeded") == 0) {
		*type = "insufficient_quota";
		return 402;
	}
	if (strcmp(code, "unknown_model") == 0 || strcmp(code, "model_not_found") == 0 ||
	    strcmp(code, "unknown_url") == 0) {
		*type = "invalid_request_error";
		return 404;
	}
	if (strcmp(code, "method_not_allowed") == 0) {
		*type = "invalid_request_error";
		return 405;
	}
	if (strcmp(code, "too_large") == 0 || strcmp(code, "request_too_large") == 0) {
		*type = "invalid_request_error";
		return 413;
	}
	if (strcmp(code, "request_timeout") == 0) {
		*type = "invalid_request_error";
		return 408;
	}
	if (strcmp(code, "length_required") == 0) {
		*type = "invalid_request_error";
		return 411;
	}
	if (strcmp(code, "rate_limited") == 0) {
		*type = "rate_limit_error";
		return 429;
	}
	if (strcmp(code, "upstream_error") == 0) {
		/* a model server's refusal of the request itself is the client's error */
		if (upstream_status >= 400 && upstream_status < 500 && upstream_status != 401 &&
		    upstream_status != 403 && upstream_status != 429) {
			*type = "invalid_request_error";
			return (int)upstream_status;
		}
		return 502;
	}
	if (strcmp(code, "upstream_unavailable") == 0 || strcmp(code, "shutting_down") == 0 ||
	    strcmp(code, "too_many_clients") == 0 || strcmp(code, "fleet_unavailable") == 0 ||
	    strcmp(code, "server_busy") == 0)
		return 503;
	if (strcmp(code, "timeout") == 0)
		return 504;
	return 500;
}

/* {"error": {"message", "type", "param", "code"}} plus, for a budget, which one and what is left. */
static json_t *
api_error_json(const char *code, const char *message, const char *type, const char *param,
    const struct message_raw *detail)
{
	json_t *err = json_pack("{s:s, s:s, s:o, s:s}", "message", message, "type", type,
	    "param", param != NULL ? json_string(param) : json_null(), "code", code);

	if (err != NULL && detail != NULL && detail->data != NULL) {
		json_t *d = openai_msgpack_to_json(detail->data, detail->len);
		if (d != NULL)
			json_object_set_new(err, "budget", d);
	}
	return json_pack("{s:o}", "error", err != NULL ? err : json_object());
}

/* The reason phrase of a status we send. */
static const char *
api_reason(int status)
{
	switch (status) {
	case 200: return "OK";
	case 400: return "Bad Request";
	case 401: return "Unauthorized";
	case 402: return "Payment Required";
	case 403: return "Forbidden";
	case 404: return "Not Found";
	case 405: return "Method Not Allowed";
	case 408: return "Request Timeout";
	case 411: return "Length Required";
	case 413: return "Payload Too Large";
	case 429: return "Too Many Requests";
	case 502: return "Bad Gateway";
	case 503: return "Service Unavailable";
	case 504: return "Gateway Timeout";
	case 500: return "Internal Server Error";
	default: return "Error";
	}
}

/* Send a whole JSON reply and let evhttp free the request once written. */
static void
api_send_json(struct evhttp_request *req, int status, json_t *body)
{
	struct evbuffer *out = evbuffer_new();
	char *text = body != NULL ? json_dumps(body, JSON_COMPACT) : NULL;

	evhttp_add_header(evhttp_request_get_output_headers(req), "Content-Type", "application/json");
	if (out != NULL && text != NULL) {
		evbuffer_add(out, text, strlen(text));
		evbuffer_add(out, "\n", 1);
	}
	evhttp_send_reply(req, status, api_reason(status), out);
	if (out != NULL)
		evbuffer_free(out);
	free(text);
	json_decref(body);
}

/* Answer with an OpenAI error; retry_after (seconds) becomes a Retry-After header. */
static void
api_send_error(struct evhttp_request *req, const char *code, const char *message,
    const char *param, double retry_after, int64_t upstream_status,
    const struct message_raw *detail)
{
	const char *type;
	int status = api_status(code, upstream_status, &type);
	struct evkeyvalq *h = evhttp_request_get_output_headers(req);
	char ra[32];

	if (status == 429 || (status == 503 && isfinite(retry_after))) {
		double s = isfinite(retry_after) && retry_after > 0 ? ceil(retry_after) : 1;
		snprintf(ra, sizeof ra, "%.0f", s);
		evhttp_add_header(h, "Retry-After", ra);
	}
	if (status == 401)
		evhttp_add_header(h, "WWW-Authenticate", "Bearer");
	api_send_json(req, status, api_error_json(code, message, type, param, detail));
}

/* Append one SSE event holding a JSON object. */
static void
api_sse_json(struct evbuffer *out, json_t *obj)
{
	char *text = json_dumps(obj, JSON_COMPACT);

	if (text != NULL) {
		evbuffer_add(out, "data: ", 6);
		evbuffer_add(out, text, strlen(text));
		evbuffer_add(out, "\n\n", 2);
		free(text);
	}
	json_decref(obj);
}

static void api_chunk_written_cb(struct evhttp_connection *, void *);

/* Bytes not yet written to the client's connection. */
static size_t
api_unsent(const struct api_req *ar)
{
	struct bufferevent *bev = evhttp_connection_get_bufferevent(ar->conn->evcon);

	return evbuffer_get_length(bufferevent_get_output(bev)) +
	    (ar->pend != NULL ? evbuffer_get_length(ar->pend) : 0);
}

/*
 * Send what out holds as a chunk of the stream; out is emptied. While the
 * last chunk is still being written, events are copied into pend and go out
 * together once it is (api_chunk_written_cb): a client that is behind costs
 * its bytes, not a buffer per event.
 */
static void
api_sse_send(struct api_req *ar, struct evbuffer *out)
{
	size_t n = evbuffer_get_length(out);

	if (ar->conn == NULL) {
		evbuffer_drain(out, n);
		return;
	}
	if (ar->chunk_in_flight && (ar->pend != NULL || (ar->pend = evbuffer_new()) != NULL)) {
		evbuffer_add(ar->pend, evbuffer_pullup(out, -1), n);
		evbuffer_drain(out, n);
		return;
	}
	ar->chunk_in_flight = true;
	evhttp_send_reply_chunk_with_cb(ar->req, out, api_chunk_written_cb, ar);
}

/* Send the events held back, before the stream's last chunk. */
static void
api_sse_send_pending(struct api_req *ar)
{
	if (ar->conn != NULL && ar->pend != NULL && evbuffer_get_length(ar->pend) > 0) {
		ar->chunk_in_flight = true;
		evhttp_send_reply_chunk_with_cb(ar->req, ar->pend, api_chunk_written_cb, ar);
	}
}

/* A chat.completion.chunk with one choice (delta, finish_reason) or none, as a document. */
static json_t *
api_chunk(struct api_req *ar, json_t *delta, const char *finish_reason)
{
	return openai_stream_chunk_json(ar->id, ar->created, ar->model, delta, finish_reason, NULL);
}

/*
 * Append a chunk without a delta's content (the role, the finish, the
 * usage) as its SSE event: written straight, or through a document when a
 * string is not valid UTF-8. delta is a JSON object's text or NULL.
 */
static void
api_sse_chunk(struct api_req *ar, struct evbuffer *out, const char *delta,
    const char *finish_reason, const struct usage *usage)
{
	size_t len;
	char *text = openai_stream_chunk(ar->id, ar->created, ar->model, delta, finish_reason,
	    usage, &len);
	json_t *d;

	if (text != NULL) {
		evbuffer_add(out, text, len);
		free(text);
		return;
	}
	d = delta != NULL ? json_loads(delta, 0, NULL) : NULL;
	api_sse_json(out, openai_stream_chunk_json(ar->id, ar->created, ar->model, d,
	    finish_reason, usage));
}

/* X-Ollm-Max-Tokens: the limit the model server was sent; X-Ollm-Budget-Shrunk: what it was before a budget lowered it. */
static void
api_limit_headers(struct evkeyvalq *h, int64_t sent, bool shrunk, int64_t wanted)
{
	char n[32];

	if (sent <= 0)
		return;
	snprintf(n, sizeof n, "%lld", (long long)sent);
	evhttp_add_header(h, "X-Ollm-Max-Tokens", n);
	if (!shrunk)
		return;
	snprintf(n, sizeof n, "%lld", (long long)wanted);
	evhttp_add_header(h, "X-Ollm-Budget-Shrunk", n);
}

/* Stream: the status line, headers and (for a chat) the first chunk carrying the role. */
static void
api_stream_start(struct api_req *ar)
{
	struct evkeyvalq *h;
	struct evbuffer *out;

	if (ar->started || ar->conn == NULL)
		return;
	ar->started = true;
	h = evhttp_request_get_output_headers(ar->req);
	evhttp_add_header(h, "Content-Type", "text/event-stream");
	evhttp_add_header(h, "Cache-Control", "no-cache");
	if (ar->chat != NULL)
		api_limit_headers(h, ar->chat->max_tokens_sent, ar->chat->budget_shrunk,
		    ar->chat->max_tokens_wanted);
	evhttp_send_reply_start(ar->req, 200, "OK");
	if (ar->passthrough || (out = evbuffer_new()) == NULL)
		return;
	api_sse_chunk(ar, out, "{\"role\":\"assistant\",\"content\":\"\"}", NULL, NULL);
	api_sse_send(ar, out);
	evbuffer_free(out);
}

static json_t *
api_usage_json(const struct usage *u)
{
	return json_pack("{s:I, s:I, s:I}", "prompt_tokens", (json_int_t)u->prompt_tokens,
	    "completion_tokens", (json_int_t)u->completion_tokens,
	    "total_tokens", (json_int_t)u->total_tokens);
}

/*
 * Append len bytes of s as a JSON string (quoted, escaped: U+0000 as
 * \u0000); -1, nothing appended, unless they are valid UTF-8.
 */
static int
api_json_stringn(struct evbuffer *out, const char *s, size_t len)
{
	static const char hex[] = "0123456789abcdef";
	size_t i, start = 0;
	char esc[6] = { '\\', 'u', '0', '0', 0, 0 };

	if (pretok_utf8_valid(s, len) != len)
		return -1;
	evbuffer_add(out, "\"", 1);
	for (i = 0; i < len; i++) {
		unsigned char ch = (unsigned char)s[i];
		if (ch >= 0x20 && ch != '"' && ch != '\\')
			continue;
		evbuffer_add(out, s + start, i - start);
		start = i + 1;
		switch (ch) {
		case '"': evbuffer_add(out, "\\\"", 2); break;
		case '\\': evbuffer_add(out, "\\\\", 2); break;
		case '\n': evbuffer_add(out, "\\n", 2); break;
		case '\r': evbuffer_add(out, "\\r", 2); break;
		case '\t': evbuffer_add(out, "\\t", 2); break;
		default:
			esc[4] = hex[ch >> 4];
			esc[5] = hex[ch & 15];
			evbuffer_add(out, esc, 6);
		}
	}
	evbuffer_add(out, s + start, len - start);
	evbuffer_add(out, "\"", 1);
	return 0;
}

/* The same for a NUL-terminated string. */
static int
api_json_string(struct evbuffer *out, const char *s)
{
	return api_json_stringn(out, s, strlen(s));
}

/* Make the part of a content delta's event before the content: the same for every delta. */
static int
api_delta_prefix(struct api_req *ar)
{
	static const char mid[] = ",\"system_fingerprint\":null,\"choices\":[{\"index\":0,"
	    "\"delta\":{\"content\":";
	struct evbuffer *b = evbuffer_new();
	int rc = -1;

	if (b == NULL)
		return -1;
	evbuffer_add_printf(b, "data: {\"id\":\"%s\",\"object\":\"chat.completion.chunk\","
	    "\"created\":%lld,\"model\":", ar->id, (long long)ar->created);
	if (api_json_string(b, ar->model) == 0 && evbuffer_add(b, mid, sizeof mid - 1) == 0) {
		ar->delta_prefix_len = evbuffer_get_length(b);
		if ((ar->delta_prefix = malloc(ar->delta_prefix_len)) != NULL) {
			evbuffer_remove(b, ar->delta_prefix, ar->delta_prefix_len);
			rc = 0;
		}
	}
	evbuffer_free(b);
	return rc;
}

/*
 * The usual delta, content alone, written straight as its SSE event: the
 * same chunk api_chunk builds, without a JSON document per delta. -1 when
 * the delta is not that kind (the caller builds it with jansson).
 */
static int
api_delta_fast(struct api_req *ar, const struct delta_reply *d, struct evbuffer *out)
{
	static const char end[] = "},\"finish_reason\":null,\"logprobs\":null}]}\n\n";

	if (d->content == NULL || d->reasoning != NULL || d->tool_calls.data != NULL)
		return -1;
	if (ar->delta_prefix == NULL && api_delta_prefix(ar) == -1)
		return -1;
	evbuffer_add(out, ar->delta_prefix, ar->delta_prefix_len);
	if (api_json_stringn(out, d->content, message_text_len(d->content, d->content_len)) == -1)
		goto slow;
	evbuffer_add(out, end, sizeof end - 1);
	return 0;
slow:
	evbuffer_drain(out, evbuffer_get_length(out));
	return -1;
}

/* A delta of the stream. */
static void
api_reply_delta(struct api_req *ar, const struct delta_reply *d)
{
	/* one buffer for every delta: the chunk is moved out of it (single-threaded loop) */
	static struct evbuffer *fast;
	json_t *delta;
	struct evbuffer *out;

	api_stream_start(ar);
	if (fast == NULL)
		fast = evbuffer_new();
	if (fast != NULL && api_delta_fast(ar, d, fast) == 0) {
		api_sse_send(ar, fast);
		return;
	}
	delta = json_object();
	if (d->content != NULL)
		json_object_set_new(delta, "content", json_stringn(d->content,
		    message_text_len(d->content, d->content_len)));
	if (d->reasoning != NULL)
		json_object_set_new(delta, "reasoning_content", json_stringn(d->reasoning,
		    message_text_len(d->reasoning, d->reasoning_len)));
	if (d->tool_calls.data != NULL) {
		json_t *tc = openai_msgpack_to_json(d->tool_calls.data, d->tool_calls.len);
		if (tc != NULL)
			json_object_set_new(delta, "tool_calls", tc);
	}
	if ((out = evbuffer_new()) == NULL) {
		json_decref(delta);
		return;
	}
	api_sse_json(out, api_chunk(ar, delta, NULL));
	api_sse_send(ar, out);
	evbuffer_free(out);
}

/* The end of a stream: finish_reason, usage when asked, [DONE]. */
static void
api_reply_done_stream(struct api_req *ar, const struct done_reply *d)
{
	struct evbuffer *out;

	api_stream_start(ar);
	if (ar->conn == NULL || (out = evbuffer_new()) == NULL)
		return;
	api_sse_chunk(ar, out, "{}", d->finish_reason != NULL ? d->finish_reason : "stop", NULL);
	if (ar->include_usage)
		api_sse_chunk(ar, out, NULL, NULL, &d->usage);
	evbuffer_add(out, API_SSE_DONE, sizeof API_SSE_DONE - 1);
	api_sse_send_pending(ar);
	evhttp_send_reply_chunk(ar->req, out);
	evbuffer_free(out);
	evhttp_send_reply_end(ar->req);
}

/* A whole chat.completion. */
static void
api_reply_done(struct api_req *ar, const struct done_reply *d)
{
	json_t *msg, *body;
	struct evkeyvalq *h = evhttp_request_get_output_headers(ar->req);
	char cost[64];

	msg = json_pack("{s:s, s:o}", "role", "assistant", "content", d->content != NULL ?
	    json_stringn(d->content, message_text_len(d->content, d->content_len)) : json_null());
	if (d->reasoning != NULL)
		json_object_set_new(msg, "reasoning_content", json_stringn(d->reasoning,
		    message_text_len(d->reasoning, d->reasoning_len)));
	if (d->tool_calls.data != NULL) {
		json_t *tc = openai_msgpack_to_json(d->tool_calls.data, d->tool_calls.len);
		if (tc != NULL)
			json_object_set_new(msg, "tool_calls", tc);
	}
	body = json_pack("{s:s, s:s, s:I, s:s, s:n, s:[{s:i, s:o, s:s, s:n}], s:o}",
	    "id", ar->id, "object", "chat.completion", "created", (json_int_t)ar->created,
	    "model", d->model != NULL ? d->model : ar->model, "system_fingerprint",
	    "choices", "index", 0, "message", msg,
	    "finish_reason", d->finish_reason != NULL ? d->finish_reason : "stop", "logprobs",
	    "usage", api_usage_json(&d->usage));
	snprintf(cost, sizeof cost, "%.6f", d->cost);
	evhttp_add_header(h, "X-Ollm-Cost", cost);
	if (d->upstream != NULL)
		evhttp_add_header(h, "X-Ollm-Upstream", d->upstream);
	if (d->usage.estimated)
		evhttp_add_header(h, "X-Ollm-Usage", "estimated");
	if (ar->chat != NULL)
		api_limit_headers(h, d->max_tokens, d->budget_shrunk, ar->chat->max_tokens_wanted);
	api_send_json(ar->req, 200, body);
}

/* An error: an HTTP error before anything was sent, else an error event ending the stream. */
static void
api_reply_error(struct api_req *ar, const struct error_reply *e)
{
	struct evbuffer *out;
	const char *type;

	if (ar->conn == NULL)
		return;
	if (!ar->started) {
		api_send_error(ar->req, e->code, e->message, NULL, e->retry_after, e->status,
		    &e->detail);
		return;
	}
	api_status(e->code, e->status, &type);
	api_sse_send_pending(ar);
	if ((out = evbuffer_new()) != NULL) {
		api_sse_json(out, api_error_json(e->code, e->message, type, NULL, &e->detail));
		evhttp_send_reply_chunk(ar->req, out);
		evbuffer_free(out);
	}
	evhttp_send_reply_end(ar->req);
}

/* A passed-through reply: SSE events with the server's data, or its whole JSON body. */
static void
api_reply_raw(struct api_req *ar, const struct reply *r)
{
	struct evbuffer *out;

	if (r->type == REPLY_DONE && !ar->stream) {
		const char *body = r->u.done.content != NULL ? r->u.done.content : "{}";
		if ((out = evbuffer_new()) == NULL)
			return;
		evbuffer_add(out, body, strlen(body));
		evhttp_add_header(evhttp_request_get_output_headers(ar->req), "Content-Type",
		    "application/json");
		if (ar->chat != NULL)
			api_limit_headers(evhttp_request_get_output_headers(ar->req), r->u.done.max_tokens,
			    r->u.done.budget_shrunk, ar->chat->max_tokens_wanted);
		evhttp_send_reply(ar->req, 200, "OK", out);
		evbuffer_free(out);
		return;
	}
	api_stream_start(ar);
	if ((out = evbuffer_new()) == NULL)
		return;
	if (r->type == REPLY_DELTA) {
		evbuffer_add_printf(out, "data: %s\n\n", r->u.delta.content != NULL ?
		    r->u.delta.content : "{}");
		api_sse_send(ar, out);
	} else {
		evbuffer_add(out, API_SSE_DONE, sizeof API_SSE_DONE - 1);
		api_sse_send_pending(ar);
		evhttp_send_reply_chunk(ar->req, out);
		evhttp_send_reply_end(ar->req);
	}
	evbuffer_free(out);
}

/* --- the chat front ----------------------------------------------------- */

/* A reply of the chat: translate it; done and error end the HTTP request. */
static void
api_chat_reply(void *owner, struct chat *c, const struct reply *r)
{
	struct api_req *ar = owner;

	(void)c;
	if (ar->finished)
		return;
	switch (r->type) {
	case REPLY_DELTA:
		if (ar->conn != NULL && ar->passthrough)
			api_reply_raw(ar, r);
		else if (ar->conn != NULL)
			api_reply_delta(ar, &r->u.delta);
		return;
	case REPLY_DONE:
		ar->finished = true;
		if (ar->conn == NULL)
			break;
		if (ar->passthrough)
			api_reply_raw(ar, r);
		else if (ar->stream)
			api_reply_done_stream(ar, &r->u.done);
		else
			api_reply_done(ar, &r->u.done);
		return;
	case REPLY_ERROR:
		ar->finished = true;
		if (ar->conn == NULL)
			break;
		api_reply_error(ar, &r->u.error);
		return;
	default:
		return;
	}
	/* The client went away: a request evhttp let go of is ours to free. */
	if (evhttp_request_get_connection(ar->req) == NULL)
		evhttp_send_reply_end(ar->req);
}

/* Whether the client's connection holds more unsent output than the watermark. */
static bool
api_chat_blocked(void *owner)
{
	struct api_req *ar = owner;

	if (ar->conn == NULL)
		return true;
	if (api_unsent(ar) > API_HIGH_WATERMARK) {
		ar->over_watermark = true;
		return true;
	}
	return false;
}

/* The chat ends: forget it and free the request's state. */
static void
api_chat_release(void *owner, struct chat *c)
{
	struct api_req *ar = owner;

	(void)c;
	ar->chat = NULL;
	if (!ar->finished && ar->conn != NULL) {
		ar->finished = true;
		if (ar->started) {
			api_sse_send_pending(ar);
			evhttp_send_reply_end(ar->req);
		}
		else
			api_send_error(ar->req, "internal", "the request ended without an answer", NULL,
			    NAN, -1, NULL);
	}
	if (ar->conn != NULL && ar->conn->active == ar)
		ar->conn->active = NULL;
	if (ar->watch != NULL)
		event_free(ar->watch);
	if (ar->pend != NULL)
		evbuffer_free(ar->pend);
	free(ar->delta_prefix);
	free(ar->model);
	free(ar);
}

/*
 * The client's socket is readable while its request runs: evhttp reads
 * nothing until it has answered, so an end of file here means the client
 * went away (a waiting or non-streamed request would otherwise run to its
 * end unseen). Bytes of a next request are evhttp's: stop watching.
 */
static void
api_watch_cb(evutil_socket_t fd, short what, void *arg)
{
	struct api_req *ar = arg;
	char b;
	ssize_t n = recv(fd, &b, 1, MSG_PEEK | MSG_DONTWAIT);

	(void)what;
	if (n > 0) {
		event_del(ar->watch);
		return;
	}
	if (n == -1 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR))
		return;
	event_del(ar->watch);
	if (ar->chat != NULL)
		chat_cancel(ar->chat, "cancelled", "client disconnected");
}

/* Watch the client's socket for its end while the chat runs. */
static void
api_watch(struct api_req *ar)
{
	struct bufferevent *bev = evhttp_connection_get_bufferevent(ar->conn->evcon);

	ar->watch = event_new(ar->api->server->base, bufferevent_getfd(bev), EV_READ | EV_PERSIST,
	    api_watch_cb, ar);
	if (ar->watch != NULL)
		event_add(ar->watch, NULL);
}

static const struct chat_front api_chat_front = {
	api_chat_reply, api_chat_blocked, api_chat_release
};

/* Every chunk written: a stream paused for this client may go on. */
static void
api_chunk_written_cb(struct evhttp_connection *evcon, void *arg)
{
	struct api_req *ar = arg;

	(void)evcon;
	ar->chunk_in_flight = false;
	api_sse_send_pending(ar);
	if (ar->over_watermark && ar->chat != NULL) {
		ar->over_watermark = false;
		chat_resume(ar->chat);
	}
}

/* --- connections and identity ------------------------------------------ */

/* Log a line for cause at most once a second; the lines held back are counted in the next. */
static void __attribute__((format(printf, 4, 5)))
api_log(struct api *api, enum api_log_cause cause, bool warn, const char *fmt, ...)
{
	struct api_log_gate *g = &api->gates[cause];
	int64_t now = now_mono_ms();
	char line[600];
	va_list ap;

	if (g->last_ms != 0 && now - g->last_ms < 1000) {
		g->quiet++;
		return;
	}
	va_start(ap, fmt);
	vsnprintf(line, sizeof line, fmt, ap);
	va_end(ap);
	if (warn && g->quiet > 0)
		log_warn("%s (and %u more like it since)", line, g->quiet);
	else if (warn)
		log_warn("%s", line);
	else if (g->quiet > 0)
		log_info("%s (and %u more like it since)", line, g->quiet);
	else
		log_info("%s", line);
	g->last_ms = now;
	g->quiet = 0;
}

/* The bucket of a party's key. */
static size_t
api_party_hash(bool by_uid, uint32_t uid, const struct in6_addr *a)
{
	uint32_t h = by_uid ? uid * 2654435761u : 0x9e3779b9u;

	for (size_t i = 0; !by_uid && i < sizeof a->s6_addr; i++)
		h = (h ^ a->s6_addr[i]) * 16777619u;
	return h % API_PARTY_BUCKETS;
}

/* Count ac against its party (its user when known and local, else its address); NULL: no memory. */
static struct api_party *
api_party_join(struct api *api, const struct api_conn *ac)
{
	bool by_uid = ac->peer.local && ac->identified;
	uint32_t uid = by_uid ? (uint32_t)ac->peer.uid : 0;
	struct in6_addr a;
	struct api_party *p;
	size_t b;

	memset(&a, 0, sizeof a);
	if (!by_uid && ac->peer.addr.ss_family == AF_INET6)
		a = ((const struct sockaddr_in6 *)&ac->peer.addr)->sin6_addr;
	else if (!by_uid && ac->peer.addr.ss_family == AF_INET) {
		a.s6_addr[10] = a.s6_addr[11] = 0xff;
		memcpy(&a.s6_addr[12], &((const struct sockaddr_in *)&ac->peer.addr)->sin_addr, 4);
	}
	b = api_party_hash(by_uid, uid, &a);
	for (p = api->parties[b]; p != NULL; p = p->next)
		if (p->by_uid == by_uid && p->uid == uid && memcmp(&p->addr, &a, sizeof a) == 0)
			break;
	if (p == NULL) {
		if ((p = calloc(1, sizeof *p)) == NULL)
			return NULL;
		p->by_uid = by_uid;
		p->uid = uid;
		p->addr = a;
		p->next = api->parties[b];
		api->parties[b] = p;
	}
	p->conns++;
	return p;
}

/* A connection of p closed. */
static void
api_party_leave(struct api *api, struct api_party *p)
{
	struct api_party **pp;

	if (p == NULL || --p->conns > 0)
		return;
	for (pp = &api->parties[api_party_hash(p->by_uid, p->uid, &p->addr)]; *pp != NULL;
	    pp = &(*pp)->next) {
		if (*pp == p) {
			*pp = p->next;
			free(p);
			return;
		}
	}
}

/* HTTP connections open from local user uid. */
int
api_uid_conns(const struct server *srv, uid_t uid)
{
	const struct api *api = srv->api;
	struct in6_addr none;
	const struct api_party *p;

	if (api == NULL)
		return 0;
	memset(&none, 0, sizeof none);
	for (p = api->parties[api_party_hash(true, (uint32_t)uid, &none)]; p != NULL; p = p->next)
		if (p->by_uid && p->uid == (uint32_t)uid)
			return p->conns;
	return 0;
}

/* HTTP connections open, lingering ones included: they hold a descriptor each. */
size_t
api_conns(const struct server *srv)
{
	return srv->api != NULL ? srv->api->n_conns : 0;
}

/* A connection between requests joins the idle list, the longest idle first. */
static void
api_conn_set_idle(struct api_conn *ac)
{
	if (ac->idle || ac->state != API_CONN_OPEN || ac->head.state != API_HEAD_IDLE ||
	    ac->answering || ac->active != NULL)
		return;
	ac->idle = true;
	TAILQ_INSERT_TAIL(&ac->api->idle, ac, idle_entry);
}

static void
api_conn_set_busy(struct api_conn *ac)
{
	if (!ac->idle)
		return;
	ac->idle = false;
	TAILQ_REMOVE(&ac->api->idle, ac, idle_entry);
}

/* Give back bytes of http_max_inflight_body. */
static void
api_body_release(struct api_conn *ac, size_t n)
{
	if (n > ac->body_reserved)
		n = ac->body_reserved;
	ac->body_reserved -= n;
	ac->api->body_in_flight -= n;
}

/* Arm the connection's deadline (API_DEADLINE_NONE: disarm it). */
static void
api_conn_arm(struct api_conn *ac, enum api_deadline which, double seconds)
{
	struct timeval tv;

	if (which == API_DEADLINE_NONE) {
		if (ac->deadline != API_DEADLINE_NONE)
			evtimer_del(ac->timer);
		ac->deadline = which;
		return;
	}
	ac->deadline = which;
	tv.tv_sec = (time_t)seconds;
	tv.tv_usec = (suseconds_t)((seconds - (double)tv.tv_sec) * 1e6);
	evtimer_add(ac->timer, &tv);
}

/* Accept on every listener again. */
static void
api_accept_resume(struct api *api)
{
	if (!api->accept_paused)
		return;
	api->accept_paused = false;
	evtimer_del(api->accept_retry);
	for (size_t i = 0; i < api->n_bound; i++)
		evconnlistener_enable(evhttp_bound_socket_get_listener(api->bound[i]));
}

static void
api_accept_retry_cb(evutil_socket_t fd, short what, void *arg)
{
	(void)fd;
	(void)what;
	api_accept_resume(arg);
}

/*
 * accept(2) failed. Out of descriptors (or memory), the listeners would be
 * woken again at once for ever: they pause until a connection closes, or a
 * second passes.
 */
static void
api_accept_error_cb(struct evconnlistener *lev, void *arg)
{
	struct api *api = server != NULL ? server->api : NULL;
	int err = EVUTIL_SOCKET_ERROR();
	struct timeval one = { 1, 0 };

	(void)lev;
	(void)arg;
	if (api == NULL)
		return;
	if (err != EMFILE && err != ENFILE && err != ENOBUFS && err != ENOMEM) {
		api_log(api, API_LOG_ACCEPT, true, "HTTP: accept: %s", strerror(err));
		return;
	}
	api_log(api, API_LOG_ACCEPT, true, "HTTP: accept: %s; no new connection until a "
	    "descriptor is free", strerror(err));
	if (api->accept_paused)
		return;
	api->accept_paused = true;
	for (size_t i = 0; i < api->n_bound; i++)
		evconnlistener_disable(evhttp_bound_socket_get_listener(api->bound[i]));
	evtimer_add(api->accept_retry, &one);
}

/* Free a connection that evhttp has let go of. */
static void
api_conn_free(struct api_conn *ac)
{
	struct api *api = ac->api;

	TAILQ_REMOVE(&api->conns, ac, entry);
	api->n_conns--;
	api_party_leave(api, ac->party);
	if (ac->timer != NULL)
		event_free(ac->timer);
	free(ac->refuse_text);
	api_head_clear(&ac->head);
	free(ac);
	api_accept_resume(api);     /* a descriptor is free */
}

static void api_input_cb(struct evbuffer *, const struct evbuffer_cb_info *, void *);

/*
 * evhttp lets go of the connection: a chat still running is cancelled (and
 * recorded as such). A refused connection being read out stays until then.
 */
static void
api_conn_close_cb(struct evhttp_connection *evcon, void *arg)
{
	struct api_conn *ac = arg;
	struct api *api = ac->api;
	struct api_req *ar = ac->active;

	(void)evcon;
	evbuffer_remove_cb(bufferevent_get_input(ac->bev), api_input_cb, ac);
	api_conn_set_busy(ac);
	if (ac->fd >= 0 && (size_t)ac->fd < api->n_by_fd && api->by_fd[ac->fd] == ac)
		api->by_fd[ac->fd] = NULL;
	ac->fd = -1;
	ac->evcon = NULL;
	ac->bev = NULL;
	api_body_release(ac, ac->body_reserved);
	if (ar != NULL) {
		ar->conn = NULL;
		ac->active = NULL;
		if (ar->chat != NULL)
			chat_cancel(ar->chat, "cancelled", "client disconnected");
	}
	if (ac->state != API_CONN_LINGER)
		api_conn_free(ac);
}

/* The end of reading out a refused connection. */
static void
api_linger_end(struct api_conn *ac)
{
	event_free(ac->linger_ev);
	close(ac->linger_fd);
	ac->api->n_linger--;
	api_conn_free(ac);
}

/* A refused client still sends: read it out, so that the close resets nothing it has not read. */
static void
api_linger_cb(evutil_socket_t fd, short what, void *arg)
{
	struct api_conn *ac = arg;
	char buf[16384];
	ssize_t n;

	(void)what;
	while ((n = recv(fd, buf, sizeof buf, MSG_DONTWAIT)) > 0) {
		ac->linger_bytes += (size_t)n;
		if (ac->linger_bytes > API_LINGER_BYTES)
			break;
	}
	if (n == -1 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR))
		return;
	api_linger_end(ac);
}

/* A JSON error as a whole HTTP response, to write on a socket ourselves. */
static char *
api_raw_answer(const char *code, const char *message, double retry_after, const char *headers)
{
	const char *type;
	json_t *j;
	char *body, *text = NULL, ra[48] = "";
	int status = api_status(code, -1, &type);

	if ((j = api_error_json(code, message, type, NULL, NULL)) == NULL)
		return NULL;
	body = json_dumps(j, JSON_COMPACT);
	json_decref(j);
	if (body == NULL)
		return NULL;
	if (isfinite(retry_after))
		snprintf(ra, sizeof ra, "Retry-After: %.0f\r\n", ceil(retry_after > 0 ? retry_after : 1));
	if (asprintf(&text, "HTTP/1.1 %d %s\r\nContent-Type: application/json\r\n"
	    "Content-Length: %zu\r\nConnection: close\r\n%s%s%s\r\n%s\n", status, api_reason(status),
	    strlen(body) + 1, ra, status == 401 ? "WWW-Authenticate: Bearer\r\n" : "",
	    headers != NULL ? headers : "", body) == -1)
		text = NULL;
	free(body);
	return text;
}

/*
 * Send a refusal and let evhttp go of the connection, from the loop: the
 * answer is written straight to the socket (evhttp has read this request's
 * headers at most, and answered nothing), then what the client still sends
 * is read out for a moment.
 */
static void
api_conn_let_go(struct api_conn *ac)
{
	struct api *api = ac->api;
	char *text = ac->refuse_text;
	struct timeval tv = { API_LINGER_MS / 1000, (API_LINGER_MS % 1000) * 1000 };
	int lfd = -1;

	ac->refuse_text = NULL;
	evbuffer_drain(bufferevent_get_output(ac->bev), evbuffer_get_length(
	    bufferevent_get_output(ac->bev)));      /* a 100 Continue evhttp may have queued */
	if (text != NULL) {
		if (send(ac->fd, text, strlen(text), MSG_NOSIGNAL | MSG_DONTWAIT) == -1)
			log_debug("http client: writing a refusal: %s", strerror(errno));
		else if (api->n_linger < API_LINGER_MAX)
			lfd = fcntl(ac->fd, F_DUPFD_CLOEXEC, 0);
		free(text);
	}
	if (lfd >= 0) {
		ac->state = API_CONN_LINGER;
		ac->linger_fd = lfd;
		api->n_linger++;
	}
	evhttp_connection_free(ac->evcon);  /* api_conn_close_cb frees ac unless it lingers */
	if (lfd < 0)
		return;
	if ((ac->linger_ev = event_new(api->server->base, lfd, EV_READ | EV_PERSIST, api_linger_cb,
	    ac)) == NULL) {
		close(lfd);
		api->n_linger--;
		api_conn_free(ac);
		return;
	}
	event_add(ac->linger_ev, NULL);
	evtimer_add(ac->timer, &tv);
}

/*
 * Refuse what comes on the connection: stop reading it now, answer code
 * (NULL: none) and close from the loop, never from inside evhttp's reading.
 * A connection with an answer under way is closed without one.
 */
static void
api_conn_refuse(struct api_conn *ac, const char *code, const char *message, double retry_after,
    const char *headers)
{
	if (ac->state != API_CONN_OPEN)
		return;
	ac->state = API_CONN_CLOSING;
	bufferevent_disable(ac->bev, EV_READ);
	api_conn_set_busy(ac);
	if (code != NULL && !ac->answering && ac->active == NULL)
		ac->refuse_text = api_raw_answer(code, message, retry_after, headers);
	evtimer_del(ac->timer);
	ac->deadline = API_DEADLINE_NONE;
	event_active(ac->timer, EV_TIMEOUT, 1);
}

/* A deadline passed, a refusal is due, or a lingering connection has been read out long enough. */
static void
api_conn_timer_cb(evutil_socket_t fd, short what, void *arg)
{
	struct api_conn *ac = arg;
	const struct conf *conf = ac->api->server->conf;
	char where[80], msg[300];
	enum api_deadline which = ac->deadline;

	(void)fd;
	(void)what;
	switch (ac->state) {
	case API_CONN_CLOSING:
		api_conn_let_go(ac);
		return;
	case API_CONN_LINGER:
		api_linger_end(ac);
		return;
	default:
		break;
	}
	ac->deadline = API_DEADLINE_NONE;
	if (which == API_DEADLINE_HEADER)
		snprintf(msg, sizeof msg, "the request line and headers took longer than "
		    "http_header_timeout (%gs)", conf->http_header_timeout);
	else if (which == API_DEADLINE_BODY)
		snprintf(msg, sizeof msg, "the request body of %llu bytes took longer than "
		    "http_body_timeout (%gs) and its length at http_body_min_rate (%zu bytes/s)",
		    (unsigned long long)api_head_body_length(&ac->head), conf->http_body_timeout,
		    conf->http_body_min_rate);
	else
		return;
	peer_format(&ac->peer, where, sizeof where);
	api_log(ac->api, API_LOG_TIMEOUT, true, "http client %s: %s; closed", where, msg);
	api_conn_refuse(ac, "request_timeout", msg, NAN, NULL);
}

/* Constant-time lookup of a bearer token among the configured keys' SHA-256. */
static const struct api_key_conf *
api_key_find(const struct conf *conf, const char *token)
{
	unsigned char md[EVP_MAX_MD_SIZE];
	unsigned int md_len = 0;
	char hex[65];
	const struct api_key_conf *found = NULL;

	if (EVP_Digest(token, strlen(token), md, &md_len, EVP_sha256(), NULL) != 1 || md_len != 32)
		return NULL;
	for (unsigned i = 0; i < 32; i++)
		snprintf(hex + 2 * i, 3, "%02x", md[i]);
	for (size_t i = 0; i < conf->n_api_keys; i++)
		if (CRYPTO_memcmp(conf->api_keys[i].sha256, hex, 64) == 0)
			found = &conf->api_keys[i];
	return found;
}

/*
 * Who asks, from the Authorization header (NULL: none) and the connection:
 * a key's user (*user its name when it is no system user, else NULL), else
 * the kernel's word for a local client, never a default. -1 with the error
 * code and message of a 401.
 */
static int
api_identify(struct api *api, struct api_conn *ac, const char *auth, uint32_t *uid,
    const char **user, const struct api_key_conf **key, const char **code, char *msg,
    size_t msg_len)
{
	const struct conf *conf = api->server->conf;
	char where[80];

	*key = NULL;
	*user = NULL;
	*code = "missing_api_key";
	if (auth != NULL) {
		const struct api_key_conf *k;
		*code = "invalid_api_key";
		if (strncasecmp(auth, "Bearer ", 7) != 0) {
			snprintf(msg, msg_len, "the Authorization header must be \"Bearer KEY\"");
			return -1;
		}
		auth += 7;
		while (*auth == ' ')
			auth++;
		if ((k = api_key_find(conf, auth)) == NULL) {
			peer_format(&ac->peer, where, sizeof where);
			api_log(api, API_LOG_KEY, true, "http client %s: wrong API key", where);
			snprintf(msg, msg_len, "Incorrect API key provided.");
			return -1;
		}
		*uid = k->uid;
		*user = k->named ? k->user : NULL;
		*key = k;
		return 0;
	}
	if (conf->require_key) {
		snprintf(msg, msg_len, "an API key is required (require_key): send Authorization: "
		    "Bearer KEY");
		return -1;
	}
	if (!ac->peer.local) {
		snprintf(msg, msg_len, "an API key is required for clients that are not on this "
		    "machine");
		return -1;
	}
	if (!ac->identified) {
		snprintf(msg, msg_len, "cannot tell which user this client runs as (%s); send an "
		    "API key", ac->ident_error);
		return -1;
	}
	*uid = (uint32_t)ac->peer.uid;
	return 0;
}

/* api_identify for a request evhttp has read; false after a 401. */
static bool
api_authenticate(struct api *api, struct evhttp_request *req, struct api_conn *ac, uint32_t *uid,
    const char **user, const struct api_key_conf **key)
{
	const char *auth = evhttp_find_header(evhttp_request_get_input_headers(req), "Authorization");
	const char *code;
	char msg[300];

	if (api_identify(api, ac, auth, uid, user, key, &code, msg, sizeof msg) == 0)
		return true;
	api_send_error(req, code, msg, NULL, NAN, -1, NULL);
	return false;
}

/*
 * A request's headers have come and its body not yet: refuse now what would
 * be refused once read (a method not served; for a body, a client that
 * cannot be identified, a body over max_frame), or a body that does not fit
 * in http_max_inflight_body; else hold its bytes and time the body.
 */
static void
api_check_head(struct api_conn *ac)
{
	struct api *api = ac->api;
	struct server *srv = api->server;
	const struct conf *conf = srv->conf;
	const struct api_head *h = &ac->head;
	uint64_t body = api_head_body_length(h);
	const struct api_key_conf *key;
	const char *code, *user;
	char msg[300], where[80];
	uint32_t uid;

	if (strcmp(h->method, "GET") != 0 && strcmp(h->method, "POST") != 0 &&
	    strcmp(h->method, "HEAD") != 0) {
		snprintf(msg, sizeof msg, "the method %s is not served: GET, POST or HEAD",
		    h->method[0] != '\0' ? h->method : "asked for");
		api_conn_refuse(ac, "method_not_allowed", msg, NAN, "Allow: GET, POST, HEAD\r\n");
		return;
	}
	if (body == 0)
		return;
	if (srv->draining) {
		api_conn_refuse(ac, "shutting_down", "openllmd is shutting down", NAN, NULL);
		return;
	}
	if (h->authorization_long) {
		snprintf(msg, sizeof msg, "the Authorization header is longer than %d bytes",
		    API_HEAD_KEY_MAX);
		api_conn_refuse(ac, "invalid_api_key", msg, NAN, NULL);
		return;
	}
	if (api_identify(api, ac, h->authorization, &uid, &user, &key, &code, msg,
	    sizeof msg) == -1) {
		api_conn_refuse(ac, code, msg, NAN, NULL);
		return;
	}
	if (body > api->max_body) {
		snprintf(msg, sizeof msg, "the request body is %llu bytes; at most %zu are accepted "
		    "(max_frame)", (unsigned long long)body, api->max_body);
		api_conn_refuse(ac, "request_too_large", msg, NAN, NULL);
		return;
	}
	if (api->body_in_flight > 0 && body > conf->http_max_inflight_body - (api->body_in_flight <
	    conf->http_max_inflight_body ? api->body_in_flight : conf->http_max_inflight_body)) {
		peer_format(&ac->peer, where, sizeof where);
		snprintf(msg, sizeof msg, "request bodies being read hold %zu bytes, and this one of "
		    "%llu would pass http_max_inflight_body (%zu); try again shortly",
		    api->body_in_flight, (unsigned long long)body, conf->http_max_inflight_body);
		api_log(api, API_LOG_REFUSED, true, "http client %s: %s", where, msg);
		api_conn_refuse(ac, "server_busy", msg, 1, NULL);
		return;
	}
	ac->body_reserved += body;
	api->body_in_flight += body;
}

/*
 * Follow n bytes that came on the connection through its requests' phases.
 * A phase's deadline is armed by api_conn_time once the bytes at hand are
 * taken: a request that comes whole in one read arms none.
 */
static void
api_conn_scan(struct api_conn *ac, const char *p, size_t n)
{
	size_t used;

	while (n > 0 && ac->state == API_CONN_OPEN) {
		enum api_head_event ev = api_head_feed(&ac->head, p, n, &used);
		p += used;
		n -= used;
		switch (ev) {
		case API_HEAD_STARTED:
			api_conn_set_busy(ac);
			break;
		case API_HEAD_HEADERS:
			api_conn_arm(ac, API_DEADLINE_NONE, 0);
			api_check_head(ac);
			break;
		case API_HEAD_BODY_DONE:
			api_conn_arm(ac, API_DEADLINE_NONE, 0);
			break;
		case API_HEAD_ERROR:
			api_conn_refuse(ac, ac->head.status == 411 ? "length_required" :
			    ac->head.status == 503 ? "server_busy" : "bad_request", ac->head.error, NAN,
			    NULL);
			return;
		case API_HEAD_MORE:
			break;
		}
	}
}

/* Arm the deadline of the phase the connection is in, unless it runs already. */
static void
api_conn_time(struct api_conn *ac)
{
	const struct conf *conf = ac->api->server->conf;

	if (ac->state != API_CONN_OPEN)
		return;
	if (ac->head.state == API_HEAD_LINE || ac->head.state == API_HEAD_FIELDS) {
		if (ac->deadline != API_DEADLINE_HEADER)
			api_conn_arm(ac, API_DEADLINE_HEADER, conf->http_header_timeout);
	} else if (ac->head.state == API_HEAD_BODY) {
		if (ac->deadline != API_DEADLINE_BODY)
			api_conn_arm(ac, API_DEADLINE_BODY, conf->http_body_timeout +
			    (double)api_head_body_length(&ac->head) / (double)conf->http_body_min_rate);
	} else
		api_conn_arm(ac, API_DEADLINE_NONE, 0);
}

static bool api_adopt(struct api_conn *);

/*
 * Bytes came on a connection. This runs as they are added, before evhttp
 * reads them: the new bytes are the last n_added of the buffer.
 */
static void
api_input_cb(struct evbuffer *buf, const struct evbuffer_cb_info *info, void *arg)
{
	struct api_conn *ac = arg;
	struct evbuffer_iovec vec[8];
	struct evbuffer_ptr pos;
	size_t left = info->n_added;

	if (left == 0 || (ac->state == API_CONN_NEW && !api_adopt(ac)) ||
	    ac->state != API_CONN_OPEN ||
	    evbuffer_ptr_set(buf, &pos, evbuffer_get_length(buf) - left, EVBUFFER_PTR_SET) == -1)
		return;
	while (left > 0 && ac->state == API_CONN_OPEN) {
		int n = evbuffer_peek(buf, (ev_ssize_t)left, &pos, vec, 8);
		if (n <= 0)
			break;
		for (int i = 0; i < n && i < 8 && left > 0 && ac->state == API_CONN_OPEN; i++) {
			size_t len = vec[i].iov_len < left ? vec[i].iov_len : left;
			api_conn_scan(ac, vec[i].iov_base, len);
			left -= len;
			if (left > 0 && evbuffer_ptr_set(buf, &pos, len, EVBUFFER_PTR_ADD) == -1)
				left = 0;
		}
	}
	api_conn_time(ac);
}

/* Index a connection by its descriptor, for a request's lookup. */
static void
api_conn_index(struct api *api, struct api_conn *ac)
{
	int fd = ac->fd;

	if ((size_t)fd >= api->n_by_fd) {
		size_t n = api->n_by_fd ? api->n_by_fd : 64;
		struct api_conn **grown;
		while (n <= (size_t)fd)
			n *= 2;
		if ((grown = realloc(api->by_fd, n * sizeof *grown)) != NULL) {
			memset(grown + api->n_by_fd, 0, (n - api->n_by_fd) * sizeof *grown);
			api->by_fd = grown;
			api->n_by_fd = n;
		}
	}
	if ((size_t)fd < api->n_by_fd)
		api->by_fd[fd] = ac;    /* found by the list when the table could not grow */
}

/* Close the longest idle connection but ac, to make room; false: none. */
static bool
api_close_idle(struct api *api, const struct api_conn *ac)
{
	struct api_conn *victim;
	char where[80];

	TAILQ_FOREACH(victim, &api->idle, idle_entry)
		if (victim != ac)
			break;
	if (victim == NULL)
		return false;
	peer_format(&victim->peer, where, sizeof where);
	api_log(api, API_LOG_IDLE, false, "HTTP: closing the idle connection of %s to make room",
	    where);
	evhttp_connection_free(victim->evcon);
	return true;
}

/*
 * Take over a connection evhttp has just set up: who is at its other end,
 * and whether it fits under its user's or address's cap, then under
 * max_clients (the longest idle connection, anyone's, is closed to make
 * room first); false when it is gone.
 */
static bool
api_adopt(struct api_conn *ac)
{
	struct api *api = ac->api;
	struct server *srv = api->server;
	struct bufferevent *bev = ac->bev;
	void *evcon = NULL;
	char cause[160], where[80], msg[200];
	int cap = 0;

	TAILQ_REMOVE(&api->fresh, ac, entry);
	/* evhttp gives a connection's bufferevent the connection as its argument */
	bufferevent_getcb(bev, NULL, NULL, NULL, &evcon);
	ac->fd = bufferevent_getfd(bev);
	if (evcon == NULL || ac->fd < 0 ||
	    (ac->timer = evtimer_new(srv->base, api_conn_timer_cb, ac)) == NULL) {
		evbuffer_remove_cb(bufferevent_get_input(bev), api_input_cb, ac);
		if (evcon != NULL)
			evhttp_connection_free(evcon);
		bufferevent_decref(bev);
		api_head_clear(&ac->head);
		free(ac);
		return false;
	}
	ac->evcon = evcon;
	ac->state = API_CONN_OPEN;
	TAILQ_INSERT_TAIL(&api->conns, ac, entry);
	api->n_conns++;
	evhttp_connection_set_closecb(ac->evcon, api_conn_close_cb, ac);
	bufferevent_decref(bev);    /* evhttp's alone from now on */
	api_conn_index(api, ac);
	if (peer_identify(ac->fd, &ac->peer, cause, sizeof cause) == -1) {
		snprintf(ac->ident_error, sizeof ac->ident_error, "%s", cause);
		api_log(api, API_LOG_IDENTITY, true, "http client: cannot tell who it is: %s", cause);
	}
	ac->identified = ac->peer.known;
	/*
	 * A stream is many small writes: Nagle would hold each one after the
	 * first until the client's delayed ACK, 40 ms a stream. (A Unix socket
	 * refuses the option, and needs none.)
	 */
	if (ac->peer.addr.ss_family == AF_INET || ac->peer.addr.ss_family == AF_INET6)
		setsockopt(ac->fd, IPPROTO_TCP, TCP_NODELAY, &(int){ 1 }, sizeof(int));
	if ((ac->party = api_party_join(api, ac)) == NULL) {
		api_conn_refuse(ac, "server_busy", "out of memory", 1, NULL);
		return true;
	}
	api_conn_set_idle(ac);
	peer_format(&ac->peer, where, sizeof where);
	if (srv->draining) {
		api_conn_refuse(ac, "shutting_down", "openllmd is shutting down", NAN, NULL);
		return true;
	}
	if (ac->party->by_uid) {
		uid_t uid = (uid_t)ac->party->uid;
		if (uid != 0 && uid != srv->own_uid &&
		    listener_uid_count(srv, uid) > srv->max_clients_per_uid)
			cap = srv->max_clients_per_uid;
		if (cap > 0)
			snprintf(msg, sizeof msg, "uid %u already has %d connections "
			    "(max_clients_per_uid %d)", (unsigned)uid, cap, cap);
	} else if (ac->party->conns > srv->max_clients_per_address) {
		cap = srv->max_clients_per_address;
		snprintf(msg, sizeof msg, "this address already has %d connections "
		    "(max_clients_per_address %d)", cap, cap);
	}
	if (cap > 0) {
		api_log(api, API_LOG_PARTY, true, "refusing http client %s: %s", where, msg);
		api_conn_refuse(ac, "too_many_clients", msg, 1, NULL);
		return true;
	}
	if (srv->n_sessions + api->n_conns > (size_t)srv->max_clients &&
	    !api_close_idle(api, ac)) {
		snprintf(msg, sizeof msg, "too many clients (max_clients %d)", srv->max_clients);
		api_log(api, API_LOG_FULL, true, "refusing http client %s: %s", where, msg);
		api_conn_refuse(ac, "too_many_clients", msg, 1, NULL);
	}
	return true;
}

/* Adopt the connections accepted in this pass of the loop. */
static void
api_adopt_cb(evutil_socket_t fd, short what, void *arg)
{
	struct api *api = arg;
	struct api_conn *ac;

	(void)fd;
	(void)what;
	while ((ac = TAILQ_FIRST(&api->fresh)) != NULL)
		api_adopt(ac);
}

/*
 * A connection is accepted: make its bufferevent for evhttp, with a
 * watch on what comes in, and adopt it from the loop once evhttp has set it
 * up (a reference is held until then: evhttp may let go of it first).
 */
static struct bufferevent *
api_bev_cb(struct event_base *base, void *arg)
{
	struct api *api = arg;
	struct api_conn *ac = calloc(1, sizeof *ac);

	if (ac == NULL)
		return NULL;
	if ((ac->bev = bufferevent_socket_new(base, -1, 0)) == NULL ||
	    evbuffer_add_cb(bufferevent_get_input(ac->bev), api_input_cb, ac) == NULL) {
		if (ac->bev != NULL)
			bufferevent_free(ac->bev);
		free(ac);
		return NULL;
	}
	ac->api = api;
	ac->fd = -1;
	ac->linger_fd = -1;
	api_head_init(&ac->head);
	bufferevent_incref(ac->bev);
	TAILQ_INSERT_TAIL(&api->fresh, ac, entry);
	event_active(api->adopt_ev, EV_TIMEOUT, 1);
	return ac->bev;
}

/* The connection of a request; NULL when it was never adopted (no memory at accept). */
static struct api_conn *
api_conn_get(struct api *api, struct evhttp_request *req)
{
	struct evhttp_connection *evcon = evhttp_request_get_connection(req);
	struct api_conn *ac;
	int fd;

	if (evcon == NULL)
		return NULL;
	fd = bufferevent_getfd(evhttp_connection_get_bufferevent(evcon));
	if (fd >= 0 && (size_t)fd < api->n_by_fd && api->by_fd[fd] != NULL &&
	    api->by_fd[fd]->evcon == evcon)
		return api->by_fd[fd];
	TAILQ_FOREACH(ac, &api->conns, entry)
		if (ac->evcon == evcon)
			return ac;
	return NULL;
}

/* A request's answer is all written: its connection may be idle again. */
static void
api_request_done_cb(struct evhttp_request *req, void *arg)
{
	struct api_conn *ac = arg;

	(void)req;
	ac->answering = false;
	api_conn_set_idle(ac);
}

/* --- requests ----------------------------------------------------------- */

/*
 * The request's tag: the key's, which X-Ollm-Tag may replace only for a
 * request without a key or with a key made with tag_override; -1 after a
 * 400 for a bad header or a 403 for a tag the key does not allow.
 */
static int
api_tag(struct evhttp_request *req, const struct api_key_conf *key, const char **tag)
{
	const char *h = evhttp_find_header(evhttp_request_get_input_headers(req), "X-Ollm-Tag");
	const char *own = key != NULL ? key->tag : NULL;
	char msg[400];

	*tag = own;
	if (h == NULL)
		return 0;
	if (strlen(h) > API_TAG_MAX || !message_utf8_valid(h, strlen(h))) {
		api_send_error(req, "bad_request", "X-Ollm-Tag must be UTF-8 of at most 256 bytes",
		    NULL, NAN, -1, NULL);
		return -1;
	}
	if (key != NULL && !key->tag_override && strcmp(h, own != NULL ? own : "") != 0) {
		snprintf(msg, sizeof msg, "X-Ollm-Tag \"%.64s\" is not this API key's tag (%s%.64s%s): "
		    "a key's requests are billed to its own tag unless it was made with tag_override",
		    h, own != NULL ? "\"" : "", own != NULL ? own : "it has none", own != NULL ? "\"" : "");
		api_send_error(req, "forbidden", msg, NULL, NAN, -1, NULL);
		return -1;
	}
	*tag = h;
	return 0;
}

/* Start the chat made for ar on its connection; NULL c: out of memory, answered and freed. */
static void
api_launch(struct api_conn *ac, struct api_req *ar, struct chat *c, struct request *rq)
{
	if (c == NULL) {
		api_send_error(ar->req, "internal", "out of memory", NULL, NAN, -1, NULL);
		free(ar->model);
		free(ar);
		message_request_free(rq);
		return;
	}
	ar->chat = c;
	ac->active = ar;
	api_watch(ar);
	chat_start(c);
}

/* POST /v1/chat/completions */
static void
api_chat(struct api *api, struct evhttp_request *req, struct api_conn *ac, uint32_t uid,
    const char *user, const struct api_key_conf *key)
{
	struct evbuffer *in = evhttp_request_get_input_buffer(req);
	struct api_body_error err;
	struct api_req *ar;
	struct request *rq;
	struct chat *c;
	const char *tag;

	if (ac->active != NULL) {
		api_send_error(req, "bad_request", "a request is already in flight on this connection",
		    NULL, NAN, -1, NULL);
		return;
	}
	if ((ar = calloc(1, sizeof *ar)) == NULL) {
		api_send_error(req, "internal", "out of memory", NULL, NAN, -1, NULL);
		return;
	}
	ar->api = api;
	rq = api_body_chat((const char *)evbuffer_pullup(in, -1), evbuffer_get_length(in),
	    &ar->include_usage, &err);
	if (rq == NULL) {
		free(ar);
		api_send_error(req, "bad_request", err.message, err.param[0] != '\0' ? err.param : NULL,
		    NAN, -1, NULL);
		return;
	}
	if (api_tag(req, key, &tag) == -1) {
		free(ar);
		message_request_free(rq);
		return;
	}
	if (tag != NULL && *tag != '\0' && (rq->u.chat.tag = strdup(tag)) == NULL) {
		free(ar);
		message_request_free(rq);
		api_send_error(req, "internal", "out of memory", NULL, NAN, -1, NULL);
		return;
	}
	rq->id = ++api->next_id;
	ar->stream = rq->u.chat.stream;
	ar->req = req;
	ar->conn = ac;
	ar->created = now_ms() / 1000;
	snprintf(ar->id, sizeof ar->id, "chatcmpl-ollm%llx%06llx",
	    (unsigned long long)(api->server->started_ms & 0xffffffff), (unsigned long long)rq->id);
	ar->model = strdup(rq->u.chat.model != NULL ? rq->u.chat.model : "");
	c = ar->model != NULL ? chat_new(api->server, &api_chat_front, ar, uid, user, rq) : NULL;
	api_launch(ac, ar, c, rq);
}

/* POST /v1/completions and /v1/embeddings: passed through, admitted and accounted like a chat. */
static void
api_passthrough(struct api *api, struct evhttp_request *req, struct api_conn *ac, uint32_t uid,
    const char *user, const struct api_key_conf *key, bool embeddings)
{
	struct evbuffer *in = evhttp_request_get_input_buffer(req);
	struct chat_passthrough pass;
	struct api_body_error err;
	struct api_body_pass pb;
	struct api_req *ar;
	struct request *rq;
	struct chat *c;
	const char *tag;

	if (ac->active != NULL) {
		api_send_error(req, "bad_request", "a request is already in flight on this connection",
		    NULL, NAN, -1, NULL);
		return;
	}
	if (api_tag(req, key, &tag) == -1)
		return;
	if (api_body_passthrough((const char *)evbuffer_pullup(in, -1), evbuffer_get_length(in),
	    embeddings, &pb, &err) == -1) {
		api_send_error(req, "bad_request", err.message, err.param[0] != '\0' ? err.param : NULL,
		    NAN, -1, NULL);
		return;
	}
	if ((rq = calloc(1, sizeof *rq)) == NULL) {
		api_body_pass_clear(&pb);
		api_send_error(req, "internal", "out of memory", NULL, NAN, -1, NULL);
		return;
	}
	message_request_init(rq, OP_CHAT);
	rq->u.chat.stream = pb.stream;
	rq->u.chat.max_tokens = pb.max_tokens;
	rq->u.chat.model = pb.model;
	memset(&pass, 0, sizeof pass);
	pass.path = embeddings ? "/embeddings" : "/completions";
	pass.embeddings = embeddings;
	pass.usage_wanted = pb.usage_wanted;
	pass.prompt_text = pb.prompt_text;
	pass.prompt_len = pb.prompt_len;
	pass.prompt_ids = pb.prompt_ids;
	pass.body = pb.body;
	if (tag != NULL && *tag != '\0')
		rq->u.chat.tag = strdup(tag);
	rq->id = ++api->next_id;
	if ((ar = calloc(1, sizeof *ar)) == NULL ||
	    (ar->model = strdup(rq->u.chat.model != NULL ? rq->u.chat.model : "")) == NULL) {
		free(ar);
		free(pass.body);
		free(pass.prompt_text);
		message_request_free(rq);
		api_send_error(req, "internal", "out of memory", NULL, NAN, -1, NULL);
		return;
	}
	ar->api = api;
	ar->passthrough = true;
	ar->stream = rq->u.chat.stream;
	ar->req = req;
	ar->conn = ac;
	ar->created = now_ms() / 1000;
	c = chat_new_passthrough(api->server, &api_chat_front, ar, uid, user, rq, &pass);
	api_launch(ac, ar, c, rq);
}

/*
 * GET /v1/models: every model an upstream serves, each once, with the
 * upstreams that serve it and whether one of them is up; then the aliases,
 * each with the model it names (alias_of).
 */
static void
api_models(struct api *api, struct evhttp_request *req)
{
	const struct conf *conf = api->server->conf;
	struct upstream *up;
	json_t *data = json_array(), *seen = json_object(), *m;

	TAILQ_FOREACH(up, &api->server->upstreams, entry) {
		for (size_t i = 0; i <= up->n_models; i++) {
			const char *name = i == 0 ? up->conf.model : up->models[i - 1];
			if (name == NULL)
				continue;
			if ((m = json_object_get(seen, name)) == NULL) {
				m = json_pack("{s:s, s:s, s:i, s:s, s:[], s:b}", "id", name, "object",
				    "model", "created", 0, "owned_by", up->conf.name, "upstreams",
				    "available", 0);
				if (m == NULL)
					continue;
				json_object_set(seen, name, m);
				json_array_append_new(data, m);
			}
			json_t *ups = json_object_get(m, "upstreams"), *u;
			size_t k;
			json_array_foreach(ups, k, u)
				if (strcmp(json_string_value(u), up->conf.name) == 0)
					break;
			if (k == json_array_size(ups))
				json_array_append_new(ups, json_string(up->conf.name));
			if (up->healthy)
				json_object_set_new(m, "available", json_true());
		}
	}
	for (size_t i = 0; i < conf->n_aliases; i++) {
		const json_t *target = json_object_get(seen, conf->aliases[i].model);
		json_array_append_new(data, json_pack("{s:s, s:s, s:i, s:s, s:s, s:b}", "id",
		    conf->aliases[i].name, "object", "model", "created", 0, "owned_by", "openllmd",
		    "alias_of", conf->aliases[i].model, "available",
		    json_is_true(json_object_get(target, "available"))));
	}
	json_decref(seen);
	api_send_json(req, 200, json_pack("{s:s, s:o}", "object", "list", "data", data));
}

/* GET /health: 200 while serving, 503 while shutting down. */
static void
api_health(struct api *api, struct evhttp_request *req)
{
	struct upstream *up;
	json_t *ups = json_array();

	TAILQ_FOREACH(up, &api->server->upstreams, entry)
		json_array_append_new(ups, json_pack("{s:s, s:b, s:I}", "name", up->conf.name,
		    "healthy", up->healthy, "in_flight", (json_int_t)up->in_flight));
	api_send_json(req, api->server->draining ? 503 : 200, json_pack("{s:s, s:I, s:o}",
	    "status", api->server->draining ? "shutting_down" : "ok",
	    "in_flight", (json_int_t)api->server->in_flight, "upstreams", ups));
}

/* GET /metrics */
static void
api_metrics(struct api *api, struct evhttp_request *req)
{
	struct evbuffer *out = evbuffer_new();

	if (out == NULL) {
		api_send_error(req, "internal", "out of memory", NULL, NAN, -1, NULL);
		return;
	}
	metrics_render(api->server, out);
	evhttp_add_header(evhttp_request_get_output_headers(req), "Content-Type",
	    "text/plain; version=0.0.4; charset=utf-8");
	evhttp_send_reply(req, 200, "OK", out);
	evbuffer_free(out);
}

/* Whether two Content-Length headers of a request differ (RFC 9112, section 6.3: 400). */
static bool
api_length_conflict(struct evhttp_request *req)
{
	struct evkeyval *h;
	const char *first = NULL;

	TAILQ_FOREACH(h, evhttp_request_get_input_headers(req), next) {
		if (strcasecmp(h->key, "Content-Length") != 0)
			continue;
		if (first == NULL)
			first = h->value;
		else if (strtoull(first, NULL, 10) != strtoull(h->value, NULL, 10))
			return true;
	}
	return false;
}

/* Route, authenticate, answer. */
static void
api_route(struct api *api, struct evhttp_request *req, struct api_conn *ac)
{
	struct server *srv = api->server;
	const struct evhttp_uri *uri = evhttp_request_get_evhttp_uri(req);
	const char *path = uri != NULL ? evhttp_uri_get_path(uri) : NULL;
	enum evhttp_cmd_type cmd = evhttp_request_get_command(req);
	const struct api_key_conf *key;
	const char *user;
	uint32_t uid;
	char msg[300];

	if (path == NULL || *path == '\0')
		path = "/";
	if (api_length_conflict(req)) {
		evhttp_add_header(evhttp_request_get_output_headers(req), "Connection", "close");
		api_send_error(req, "bad_request", "two Content-Length headers that differ "
		    "(RFC 9112, section 6.3)", NULL, NAN, -1, NULL);
		return;
	}
	if (strcmp(path, "/health") == 0 && cmd == EVHTTP_REQ_GET) {
		api_health(api, req);
		return;
	}
	if (srv->draining) {
		evhttp_add_header(evhttp_request_get_output_headers(req), "Connection", "close");
		api_send_error(req, "shutting_down", "openllmd is shutting down", NULL, NAN, -1, NULL);
		return;
	}
	if (evbuffer_get_length(evhttp_request_get_input_buffer(req)) > api->max_body) {
		snprintf(msg, sizeof msg, "the request body is %zu bytes; at most %zu are accepted "
		    "(max_frame)", evbuffer_get_length(evhttp_request_get_input_buffer(req)),
		    api->max_body);
		api_send_error(req, "request_too_large", msg, NULL, NAN, -1, NULL);
		return;
	}
	bool completions = strcmp(path, "/v1/completions") == 0;
	bool embeddings = strcmp(path, "/v1/embeddings") == 0;
	bool chat = strcmp(path, "/v1/chat/completions") == 0 || completions || embeddings;
	bool models = strcmp(path, "/v1/models") == 0;
	bool metrics = strcmp(path, "/metrics") == 0;
	if (!chat && !models && !metrics) {
		snprintf(msg, sizeof msg, "Unknown request URL: %.200s", path);
		api_send_error(req, "unknown_url", msg, NULL, NAN, -1, NULL);
		return;
	}
	if ((chat && cmd != EVHTTP_REQ_POST) || (!chat && cmd != EVHTTP_REQ_GET)) {
		snprintf(msg, sizeof msg, "%.200s takes %s", path, chat ? "POST" : "GET");
		evhttp_add_header(evhttp_request_get_output_headers(req), "Allow", chat ? "POST" : "GET");
		api_send_error(req, "method_not_allowed", msg, NULL, NAN, -1, NULL);
		return;
	}
	if (!api_authenticate(api, req, ac, &uid, &user, &key))
		return;
	if (metrics && strcmp(srv->conf->stats_visibility, "own") == 0 &&
	    (user != NULL || (uid != 0 && uid != (uint32_t)srv->own_uid))) {
		/* everyone's usage by user and tag: as ollmctl stats shows it only to the admin */
		api_send_error(req, "forbidden", "/metrics shows every user's usage: only root and "
		    "the daemon's user may read it (stats_visibility is own)", NULL, NAN, -1, NULL);
		return;
	}
	if (completions || embeddings)
		api_passthrough(api, req, ac, uid, user, key, embeddings);
	else if (chat)
		api_chat(api, req, ac, uid, user, key);
	else if (models)
		api_models(api, req);
	else
		api_metrics(api, req);
}

/*
 * Every request evhttp has read whole. Its body is dropped once handled
 * (what is kept was parsed out of it), and its bytes of
 * http_max_inflight_body given back.
 */
static void
api_request_cb(struct evhttp_request *req, void *arg)
{
	struct api *api = arg;
	struct evbuffer *in = evhttp_request_get_input_buffer(req);
	size_t body = evbuffer_get_length(in);
	struct api_conn *ac;

	if ((ac = api_conn_get(api, req)) == NULL) {
		evhttp_add_header(evhttp_request_get_output_headers(req), "Connection", "close");
		api_send_error(req, "server_busy", "out of memory", NULL, 1, -1, NULL);
		return;
	}
	if (ac->state != API_CONN_OPEN)
		return;     /* refused as its headers came: api_conn_let_go answers and frees it */
	ac->answering = true;
	api_conn_set_busy(ac);
	evhttp_request_set_on_complete_cb(req, api_request_done_cb, ac);
	api_route(api, req, ac);
	evbuffer_drain(in, evbuffer_get_length(in));
	api_body_release(ac, body);
}

/* --- listeners ---------------------------------------------------------- */

/* A listening socket for "HOST:PORT", "[V6]:PORT" or "unix:/path"; -1 with cause. */
static int
api_listen_socket(const struct conf *conf, const char *spec, char *cause, size_t cause_len)
{
	struct sockaddr_storage ss;
	socklen_t len;
	int fd, one = 1;

	memset(&ss, 0, sizeof ss);
	if (strncmp(spec, "unix:", 5) == 0) {
		struct sockaddr_un *sun = (struct sockaddr_un *)&ss;
		struct stat st;
		sun->sun_family = AF_UNIX;
		snprintf(sun->sun_path, sizeof sun->sun_path, "%s", spec + 5);
		if (lstat(sun->sun_path, &st) == 0 && S_ISSOCK(st.st_mode)) {
			if (listener_check(sun->sun_path, cause, cause_len) == -1)
				return -1;
			unlink(sun->sun_path);
		}
		len = sizeof *sun;
	} else {
		char host[128];
		const char *colon = strrchr(spec, ':');
		size_t hl = (size_t)(colon - spec);
		int port = atoi(colon + 1);
		if (spec[0] == '[') {
			hl = hl >= 2 ? hl - 2 : 0;
			spec++;
		}
		snprintf(host, sizeof host, "%.*s", (int)(hl < sizeof host ? hl : sizeof host - 1), spec);
		struct sockaddr_in *sin = (struct sockaddr_in *)&ss;
		struct sockaddr_in6 *sin6 = (struct sockaddr_in6 *)&ss;
		if (inet_pton(AF_INET, host, &sin->sin_addr) == 1) {
			sin->sin_family = AF_INET;
			sin->sin_port = htons((uint16_t)port);
			len = sizeof *sin;
		} else if (inet_pton(AF_INET6, host, &sin6->sin6_addr) == 1) {
			sin6->sin6_family = AF_INET6;
			sin6->sin6_port = htons((uint16_t)port);
			len = sizeof *sin6;
		} else {
			snprintf(cause, cause_len, "http_listen %s: %s is not an IP address", spec, host);
			return -1;
		}
	}
	if ((fd = socket(ss.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0)) == -1) {
		snprintf(cause, cause_len, "http_listen %s: socket: %s", spec, strerror(errno));
		return -1;
	}
	if (ss.ss_family != AF_UNIX)
		setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
	if (ss.ss_family == AF_INET6)
		setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof one);
	mode_t old = umask(0777 & ~conf->socket_mode);
	int rc = bind(fd, (struct sockaddr *)&ss, len);
	int saved = errno;
	umask(old);
	if (rc == -1 || listen(fd, 128) == -1) {
		snprintf(cause, cause_len, "http_listen %s: %s: %s", spec, rc == -1 ? "bind" : "listen",
		    strerror(rc == -1 ? saved : errno));
		close(fd);
		return -1;
	}
	return fd;
}

/* Hand a listening socket to evhttp. */
static int
api_bind_fd(struct api *api, int fd, const char *unix_path, char *cause, size_t cause_len)
{
	struct evhttp_bound_socket *b = evhttp_accept_socket_with_handle(api->http, fd);
	struct evhttp_bound_socket **nb;
	char **np;

	if (b == NULL) {
		snprintf(cause, cause_len, "evhttp cannot accept on a socket");
		close(fd);
		return -1;
	}
	evconnlistener_set_error_cb(evhttp_bound_socket_get_listener(b), api_accept_error_cb);
	nb = realloc(api->bound, (api->n_bound + 1) * sizeof *nb);
	np = nb != NULL ? realloc(api->unix_paths, (api->n_bound + 1) * sizeof *np) : NULL;
	if (nb != NULL)
		api->bound = nb;
	if (np == NULL) {
		evhttp_del_accept_socket(api->http, b);
		snprintf(cause, cause_len, "out of memory");
		return -1;
	}
	api->unix_paths = np;
	api->bound[api->n_bound] = b;
	api->unix_paths[api->n_bound] = unix_path != NULL ? strdup(unix_path) : NULL;
	api->n_bound++;
	return 0;
}

/* The address a bound socket has, for the log ("127.0.0.1:8642"). */
static void
api_socket_name(int fd, char *buf, size_t len)
{
	struct peer p;
	socklen_t sl = sizeof p.addr;

	memset(&p, 0, sizeof p);
	if (getsockname(fd, (struct sockaddr *)&p.addr, &sl) == -1)
		snprintf(buf, len, "?");
	else
		peer_format(&p, buf, len);
}

int
api_open(struct server *srv, char *cause, size_t cause_len)
{
	struct api *api = calloc(1, sizeof *api);
	const struct conf *conf = srv->conf;
	char name[128];
	int n_systemd = 0;

	if (api == NULL || (api->http = evhttp_new(srv->base)) == NULL) {
		free(api);
		snprintf(cause, cause_len, "cannot set up the HTTP server");
		return -1;
	}
	api->server = srv;
	TAILQ_INIT(&api->fresh);
	TAILQ_INIT(&api->conns);
	TAILQ_INIT(&api->idle);
	srv->api = api;
	if ((api->adopt_ev = event_new(srv->base, -1, 0, api_adopt_cb, api)) == NULL ||
	    (api->accept_retry = evtimer_new(srv->base, api_accept_retry_cb, api)) == NULL) {
		snprintf(cause, cause_len, "cannot set up the HTTP server: out of memory");
		return -1;
	}
	evhttp_set_gencb(api->http, api_request_cb, api);
	evhttp_set_bevcb(api->http, api_bev_cb, api);
	evhttp_set_max_headers_size(api->http, (ev_ssize_t)conf->http_max_header);
	/*
	 * A body over max_frame is refused as its headers come (api_check_head),
	 * in the OpenAI shape and before a byte of it is read; evhttp's own limit
	 * (an HTML page) is only a second guard.
	 */
	api->max_body = conf->max_frame;
	evhttp_set_max_body_size(api->http, (ev_ssize_t)conf->max_frame);
	struct timeval tv = { (time_t)conf->http_timeout,
		(suseconds_t)((conf->http_timeout - (double)(time_t)conf->http_timeout) * 1e6) };
	evhttp_set_timeout_tv(api->http, &tv);
	evhttp_set_allowed_methods(api->http, EVHTTP_REQ_GET | EVHTTP_REQ_POST | EVHTTP_REQ_HEAD);
	evhttp_set_default_content_type(api->http, "application/json");

#ifdef HAVE_SYSTEMD
	/* systemd's second socket and after: the HTTP front's (the first is the Unix socket) */
	int n = sd_listen_fds(1);   /* listener_open has read them; unset LISTEN_FDS now */
	for (int i = 1; i < n; i++) {
		int fd = SD_LISTEN_FDS_START + i;
		fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK);
		fcntl(fd, F_SETFD, FD_CLOEXEC);
		if (api_bind_fd(api, fd, NULL, cause, cause_len) == -1)
			return -1;
		api_socket_name(fd, name, sizeof name);
		log_info("HTTP: listening on %s, passed by systemd", name);
		n_systemd++;
	}
#endif
	for (size_t i = 0; n_systemd == 0 && i < conf->n_http_listen; i++) {
		const char *spec = conf->http_listen[i];
		int fd = api_listen_socket(conf, spec, cause, cause_len);
		if (fd == -1) {
			if (conf->http_listen_default) {
				log_warn("%s; the HTTP front is off (set http_listen)", cause);
				return 0;
			}
			return -1;
		}
		bool is_unix = strncmp(spec, "unix:", 5) == 0;
		if (api_bind_fd(api, fd, is_unix ? spec + 5 : NULL, cause, cause_len) == -1)
			return -1;
		if (is_unix)
			snprintf(name, sizeof name, "%s", spec + 5);
		else
			api_socket_name(fd, name, sizeof name);
		log_info("HTTP: listening on %s", name);
	}
	return 0;
}

/* Call cb for each chat in flight on an HTTP connection. */
void
api_foreach_chat(struct server *srv, void (*cb)(struct chat *, void *), void *arg)
{
	struct api *api = srv->api;
	struct api_conn *ac;

	if (api == NULL)
		return;
	TAILQ_FOREACH(ac, &api->conns, entry)
		if (ac->active != NULL && ac->active->chat != NULL)
			cb(ac->active->chat, arg);
}

/* Stop accepting HTTP connections (shutdown); requests in flight go on. */
void
api_stop(struct server *srv)
{
	struct api *api = srv->api;

	if (api == NULL)
		return;
	for (size_t i = 0; i < api->n_bound; i++) {
		evhttp_del_accept_socket(api->http, api->bound[i]);
		if (api->unix_paths[i] != NULL) {
			unlink(api->unix_paths[i]);
			free(api->unix_paths[i]);
		}
	}
	free(api->bound);
	free(api->unix_paths);
	api->bound = NULL;
	api->unix_paths = NULL;
	api->n_bound = 0;
	api->accept_paused = false;
	evtimer_del(api->accept_retry);
}

/* Whether every HTTP answer has been written (connections may stay open, idle). */
bool
api_flushed(struct server *srv)
{
	struct api *api = srv->api;
	struct api_conn *ac;

	if (api == NULL)
		return true;
	TAILQ_FOREACH(ac, &api->conns, entry) {
		if (ac->state != API_CONN_OPEN)
			continue;
		struct bufferevent *bev = evhttp_connection_get_bufferevent(ac->evcon);
		if (ac->active != NULL || evbuffer_get_length(bufferevent_get_output(bev)) > 0)
			return false;
	}
	return true;
}

/* Cancel what runs and free the HTTP server. */
void
api_free(struct server *srv)
{
	struct api *api = srv->api;
	struct api_conn *ac;

	if (api == NULL)
		return;
	api_stop(srv);
	while (!TAILQ_EMPTY(&api->fresh))
		api_adopt_cb(-1, 0, api);
	TAILQ_FOREACH(ac, &api->conns, entry)
		if (ac->active != NULL && ac->active->chat != NULL)
			chat_cancel(ac->active->chat, "cancelled", "openllmd is stopping");
	evhttp_free(api->http);     /* closes connections: their close callbacks free them */
	while ((ac = TAILQ_FIRST(&api->conns)) != NULL)
		api_linger_end(ac);     /* all that is left: refused ones being read out */
	if (api->drain_timer != NULL)
		event_free(api->drain_timer);
	if (api->adopt_ev != NULL)
		event_free(api->adopt_ev);
	if (api->accept_retry != NULL)
		event_free(api->accept_retry);
	free(api->by_fd);
	free(api);
	srv->api = NULL;
	metrics_free();
}
