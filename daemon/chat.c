/* A chat request from admission to the ledger record and its done frame. */
#include "config.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "daemon/budget.h"
#include "daemon/fleet.h"
#include "daemon/http.h"
#include "daemon/ledger.h"
#include "daemon/log.h"
#include "daemon/metrics.h"
#include "daemon/openai.h"
#include "daemon/openllmd.h"
#include "daemon/sse.h"
#include "daemon/tokenizer.h"

#define CHAT_MAX_EVENT (4 * 1024 * 1024)    /* largest SSE event accepted from a server */
#define CHAT_MAX_ERROR_BODY (64 * 1024)     /* error bodies are cut here */
#define CHAT_MAX_TEXT (64 * 1024 * 1024)    /* reply text kept for local counting; past it the estimate is a floor */

struct strbuf {
	char *p;
	size_t len, cap;
};

/* What has been read of the upstream's reply, for one attempt. */
struct chat_parse {
	struct sse_parser sse;
	bool is_sse;
	bool saw_done;
	bool saw_error;
	bool too_large;
	size_t cut_check_len;       /* text length at the last check of the cut by count */
	long status;
	struct strbuf raw;          /* non-stream body or error body */
	struct strbuf text;         /* content, reasoning and tool arguments so far */
	struct strbuf content;      /* non-stream: the reply's content */
	struct strbuf reasoning;    /* non-stream: the reply's reasoning */
	struct message_raw tool_calls;  /* non-stream: the reply's tool calls */
	bool has_usage;
	struct usage usage;
	char *finish_reason;
	char *model;
	char *error;
	int64_t deltas;
	struct chat_parse *next_free;   /* in chat_parse_pool */
};

#define CHAT_PARSE_POOL 128         /* parse states of ended attempts kept for the next ones */
#define CHAT_PARSE_KEEP (16 * 1024) /* buffers larger than this are not kept */

/*
 * Parse states of ended attempts with their SSE and text buffers, ready for
 * the next attempt (the loop is single-threaded): a request then allocates
 * neither the state nor, usually, the buffers its events are read into.
 */
static struct chat_parse *chat_parse_pool;
static size_t chat_parse_pooled;

static int chat_sse_event_cb(void *, const char *, const char *, size_t);
static void chat_attempt(struct chat *);
static void chat_retry(struct chat *);
static void chat_budget_detail(struct chat *, const struct budget_refusal *);
static void chat_admit(struct chat *);
static void chat_reserve(struct chat *, bool may_wait);
static void chat_budget_wait(struct chat *, const char *why);
static void chat_budget_unwait(struct chat *);
static void chat_arm_timer(struct chat *, double seconds);
static int chat_build_body(struct chat *);
static void chat_fleet_refused(struct chat *, const struct fleet_verdict *);
static void chat_fleet_reserve(struct chat *, double worst);
static void chat_budget_ask(const struct chat *, int64_t completion, struct budget_ask *);
static double chat_ask_cost(const struct budget_ask *);
static void chat_finish(struct chat *, const char *code, const char *message, long status,
    double retry_after);

/* Append len bytes, keeping a NUL after them; false when over limit. */
static bool
strbuf_add(struct strbuf *b, const char *p, size_t len, size_t limit)
{
	if (b->len + len > limit)
		return false;
	if (b->len + len + 1 > b->cap) {
		size_t cap = b->cap ? b->cap : 256;
		while (cap < b->len + len + 1)
			cap *= 2;
		char *grown = realloc(b->p, cap);
		if (grown == NULL)
			return false;
		b->p = grown;
		b->cap = cap;
	}
	memcpy(b->p + b->len, p, len);
	b->len += len;
	b->p[b->len] = '\0';
	return true;
}

static void
strbuf_clear(struct strbuf *b)
{
	free(b->p);
	memset(b, 0, sizeof *b);
}

/* Free what one attempt's reading left in a parse state, besides its SSE and text buffers. */
static void
chat_parse_drop_result(struct chat_parse *p)
{
	strbuf_clear(&p->raw);
	strbuf_clear(&p->content);
	strbuf_clear(&p->reasoning);
	free(p->tool_calls.data);
	free(p->finish_reason);
	free(p->model);
	free(p->error);
}

/* Free a parse state and its buffers for good. */
static void
chat_parse_destroy(struct chat_parse *p)
{
	sse_parser_clear(&p->sse);
	strbuf_clear(&p->text);
	chat_parse_drop_result(p);
	free(p);
}

/*
 * An attempt's parse state is done with: back to the pool, emptied, with
 * its SSE buffers and its text buffer when they are not large; else freed.
 */
static void
chat_parse_free(struct chat_parse *p)
{
	struct sse_parser sse;
	struct strbuf text;

	if (p == NULL)
		return;
	if (chat_parse_pooled >= CHAT_PARSE_POOL) {
		chat_parse_destroy(p);
		return;
	}
	sse = p->sse;
	text = p->text;
	p->sse.data = p->sse.event = NULL;
	p->text.p = NULL;
	if (sse.data_size > CHAT_PARSE_KEEP || sse.event_size > CHAT_PARSE_KEEP) {
		sse_parser_clear(&sse);
		sse_parser_init(&sse, CHAT_MAX_EVENT, NULL, NULL);
	}
	if (text.cap > CHAT_PARSE_KEEP)
		strbuf_clear(&text);
	chat_parse_drop_result(p);
	memset(p, 0, sizeof *p);
	sse_parser_reset(&sse);
	p->sse = sse;
	text.len = 0;
	p->text = text;
	p->next_free = chat_parse_pool;
	chat_parse_pool = p;
	chat_parse_pooled++;
}

/* A parse state for a new attempt of c: from the pool, else a new one. */
static struct chat_parse *
chat_parse_new(struct chat *c)
{
	struct chat_parse *p = chat_parse_pool;

	if (p != NULL) {
		chat_parse_pool = p->next_free;
		chat_parse_pooled--;
		p->next_free = NULL;
		p->sse.max_event = CHAT_MAX_EVENT;
		p->sse.cb = chat_sse_event_cb;
		p->sse.arg = c;
		return p;
	}
	if ((p = calloc(1, sizeof *p)) == NULL)
		return NULL;
	sse_parser_init(&p->sse, CHAT_MAX_EVENT, chat_sse_event_cb, c);
	return p;
}

/* Free the parse states kept for reuse (at exit). */
void
chat_parse_pool_free(void)
{
	struct chat_parse *p;

	while ((p = chat_parse_pool) != NULL) {
		chat_parse_pool = p->next_free;
		chat_parse_destroy(p);
	}
	chat_parse_pooled = 0;
}

/* Pieces streamed to the client so far (about one token each), for top. */
int64_t
chat_streamed(const struct chat *c)
{
	const struct chat_parse *p = c->parse;

	return p != NULL ? p->deltas : 0;
}

/* Tell the front the chat ends, then free it; its transfer must be gone. */
static void
chat_free(struct chat *c)
{
	struct server *srv = c->server;
	bool served = c->upstream != NULL;  /* refused before routing: not a request served */

	c->front->release(c->owner, c);
	chat_budget_unwait(c);
	if (c->fleet_wait)
		fleet_reserve_forget(srv->fleet, c);
	if (c->transfer != NULL)
		http_transfer_cancel(c->transfer);
	if (c->timer != NULL)
		event_free(c->timer);
	upstream_release(c->upstream);
	chat_parse_free(c->parse);
	message_request_free(c->req);
	free(c->body);
	free(c->model);
	free(c->user);
	free(c->error_detail.data);
	free(c->pass.body);
	free(c->pass.prompt_text);
	free(c->fin.message);
	free(c->fin.cause);
	free(c);
	srv->in_flight--;
	if (served)
		srv->served++;
	server_check_drained(srv);
}

/* Send a reply to whoever asked. */
static void
chat_reply(struct chat *c, const struct reply *r)
{
	c->front->reply(c->owner, c, r);
}

/* Send one delta frame for what a stream chunk carried. */
static void
chat_send_delta(struct chat *c, const struct openai_chunk *ch)
{
	struct reply r;

	memset(&r, 0, sizeof r);
	r.id = c->id;
	r.type = REPLY_DELTA;
	r.u.delta.content = ch->content;
	r.u.delta.content_len = ch->content_len;
	r.u.delta.reasoning = ch->reasoning;
	r.u.delta.reasoning_len = ch->reasoning_len;
	r.u.delta.tool_calls = ch->tool_calls;
	if (c->first_delta_ms < 0)
		c->first_delta_ms = now_mono_ms();
	chat_reply(c, &r);
}

/*
 * Whether a stream has run past the limit it was sent, before a delta with
 * text is passed on: a server that keeps its limit sends at most that many
 * such deltas (each holds at least one of its tokens), and does not write
 * more than twice the limit in this side's tokens (the prompt ratio's
 * bound), which is counted whenever the text has doubled past 8 bytes a
 * token. The reply is cut there and billed at the limit.
 */
static bool
chat_past_limit(struct chat *c, struct chat_parse *p)
{
	int64_t most = c->max_tokens_sent;

	if (most <= 0)
		return false;
	if (p->deltas >= most)
		return true;
	if (p->text.len <= (size_t)most * 8 || p->text.len < p->cut_check_len * 2 ||
	    c->upstream->tokenizer == NULL)
		return false;
	p->cut_check_len = p->text.len;
	return tokenizer_count(c->upstream->tokenizer, p->text.p, p->text.len) > 2 * most;
}

/* The server wrote past its limit: end the reply here, as a server that kept it would. */
static void
chat_cut(struct chat *c, struct chat_parse *p)
{
	if (!c->cut)
		log_warn("chat %llu: upstream %s writes past the max_tokens %lld it was sent; the "
		    "reply is cut there", (unsigned long long)c->id, c->upstream->conf.name,
		    (long long)c->max_tokens_sent);
	c->cut = true;
	free(p->finish_reason);
	p->finish_reason = strdup("length");
}

/* Fold what one chunk says into the attempt's state; a delta goes to the client at once. */
static void
chat_take_chunk(struct chat *c, struct chat_parse *p, struct openai_chunk *ch)
{
	bool stream = c->req->u.chat.stream;

	if (ch->error_message != NULL) {
		p->saw_error = true;
		free(p->error);
		p->error = strdup(ch->error_message);
		return;
	}
	if (stream && (ch->content != NULL || ch->reasoning != NULL || ch->tool_calls.data != NULL) &&
	    chat_past_limit(c, p)) {
		chat_cut(c, p);
		return;
	}
	/* the reply's text may hold U+0000: counted and sent on like any character */
	if (ch->content != NULL) {
		strbuf_add(&p->text, ch->content, ch->content_len, CHAT_MAX_TEXT);
		if (!stream && !strbuf_add(&p->content, ch->content, ch->content_len,
		    c->server->conf->max_frame))
			p->too_large = true;
	}
	if (ch->reasoning != NULL) {
		strbuf_add(&p->text, ch->reasoning, ch->reasoning_len, CHAT_MAX_TEXT);
		if (!stream && !strbuf_add(&p->reasoning, ch->reasoning, ch->reasoning_len,
		    c->server->conf->max_frame))
			p->too_large = true;
	}
	if (!stream && ch->tool_calls.data != NULL && p->tool_calls.data == NULL) {
		p->tool_calls = ch->tool_calls;
		ch->tool_calls.data = NULL;
		ch->tool_calls.len = 0;
	}
	if (ch->finish_reason != NULL && !c->cut) {
		free(p->finish_reason);
		p->finish_reason = strdup(ch->finish_reason);
	}
	if (ch->model != NULL && p->model == NULL)
		p->model = strdup(ch->model);
	if (ch->has_usage) {
		p->has_usage = true;
		p->usage = ch->usage;
	}
	if (stream && (ch->content != NULL || ch->reasoning != NULL || ch->tool_calls.data != NULL)) {
		p->deltas++;
		chat_send_delta(c, ch);
	}
}

/* Fold what a passed-through reply or chunk says: usage, text, finish_reason, model. */
static void
chat_raw_fold(struct chat_parse *p, json_t *j)
{
	json_t *u = json_object_get(j, "usage"), *ch;
	size_t i;
	const char *s;

	if (json_is_object(u)) {
		p->has_usage = true;
		p->usage.prompt_tokens = json_integer_value(json_object_get(u, "prompt_tokens"));
		p->usage.completion_tokens = json_integer_value(json_object_get(u, "completion_tokens"));
		p->usage.total_tokens = json_integer_value(json_object_get(u, "total_tokens"));
	}
	json_array_foreach(json_object_get(j, "choices"), i, ch) {
		if ((s = json_string_value(json_object_get(ch, "text"))) != NULL)
			strbuf_add(&p->text, s, json_string_length(json_object_get(ch, "text")),
			    CHAT_MAX_TEXT);
		if ((s = json_string_value(json_object_get(ch, "finish_reason"))) != NULL) {
			free(p->finish_reason);
			p->finish_reason = strdup(s);
		}
	}
	if (p->model == NULL && (s = json_string_value(json_object_get(j, "model"))) != NULL)
		p->model = strdup(s);
}

/* Whether a passed-through chunk carries text of the reply. */
static bool
chat_raw_has_text(json_t *j)
{
	json_t *ch;
	size_t i;

	json_array_foreach(json_object_get(j, "choices"), i, ch)
		if (json_string_length(json_object_get(ch, "text")) > 0)
			return true;
	return false;
}

/* The error message of a passed-through body, or NULL. */
static char *
chat_raw_error(json_t *j)
{
	json_t *e = json_object_get(j, "error");
	const char *m;

	if (e == NULL)
		return NULL;
	m = json_is_string(e) ? json_string_value(e) : json_string_value(json_object_get(e, "message"));
	return strdup(m != NULL ? m : "error from the model server");
}

/* One SSE event of a passed-through stream: fold it, and hand its data on as it is. */
static int
chat_raw_event(struct chat *c, struct chat_parse *p, const char *data, size_t len)
{
	json_t *j;
	struct reply r;

	if (len == 6 && memcmp(data, "[DONE]", 6) == 0) {
		p->saw_done = true;
		return 0;
	}
	if ((j = json_loadb(data, len, JSON_ALLOW_NUL, NULL)) == NULL || !json_is_object(j)) {
		json_decref(j);
		p->saw_error = true;
		free(p->error);
		p->error = strdup("malformed stream chunk: not a JSON object");
		return -1;
	}
	if ((p->error = chat_raw_error(j)) != NULL) {
		p->saw_error = true;
		json_decref(j);
		return -1;
	}
	if (c->max_tokens_sent > 0 && chat_raw_has_text(j) && chat_past_limit(c, p)) {
		json_decref(j);
		chat_cut(c, p);
		return -1;
	}
	chat_raw_fold(p, j);
	bool usage_only = json_array_size(json_object_get(j, "choices")) == 0 &&
	    json_object_get(j, "usage") != NULL;
	json_decref(j);
	if (usage_only && !c->pass.usage_wanted)
		return 0;
	char *copy = strndup(data, len);
	if (copy == NULL)
		return -1;
	memset(&r, 0, sizeof r);
	r.id = c->id;
	r.type = REPLY_DELTA;
	r.u.delta.content = copy;
	if (c->first_delta_ms < 0)
		c->first_delta_ms = now_mono_ms();
	p->deltas++;
	chat_reply(c, &r);
	free(copy);
	return 0;
}

/* One SSE event from the upstream. */
static int
chat_sse_event_cb(void *arg, const char *event, const char *data, size_t len)
{
	struct chat *c = arg;
	struct chat_parse *p = c->parse;
	struct openai_chunk ch;
	char cause[256];

	if (c->passthrough)
		return chat_raw_event(c, p, data, len);
	memset(&ch, 0, sizeof ch);
	ch.model_known = p->model != NULL;
	if (openai_parse_event(event, data, len, &ch, cause, sizeof cause) == -1) {
		p->saw_error = true;
		free(p->error);
		if (asprintf(&p->error, "malformed stream chunk: %s", cause) == -1)
			p->error = NULL;
		return -1;
	}
	if (ch.done) {
		p->saw_done = true;
		openai_chunk_clear(&ch);
		return 0;
	}
	chat_take_chunk(c, p, &ch);
	openai_chunk_clear(&ch);
	return p->saw_error || c->cut ? -1 : 0;
}

/* Re-arm the first-byte or idle timer. */
static void
chat_arm_timer(struct chat *c, double seconds)
{
	struct timeval tv;

	if (seconds <= 0) {
		evtimer_del(c->timer);
		return;
	}
	tv.tv_sec = (time_t)seconds;
	tv.tv_usec = (suseconds_t)((seconds - (double)tv.tv_sec) * 1e6);
	evtimer_add(c->timer, &tv);
}

/* Bytes from the upstream: pause when the client is behind, else parse. */
static enum http_data_action
chat_data_cb(void *arg, const struct http_response *resp, const char *buf, size_t len)
{
	struct chat *c = arg;
	struct chat_parse *p = c->parse;
	char cause[256];

	if (c->front->blocked(c->owner)) {
		if (!c->paused)
			log_debug("chat %llu: the client is behind; transfer paused",
			    (unsigned long long)c->id);
		c->paused = true;
		chat_arm_timer(c, c->server->conf->stall_timeout);
		return HTTP_DATA_PAUSE;
	}
	chat_arm_timer(c, c->upstream->conf.idle_timeout);
	if (p->status == 0) {
		p->status = resp->status;
		p->is_sse = resp->status < 300 && resp->content_type != NULL &&
		    strncasecmp(resp->content_type, "text/event-stream", 17) == 0;
	}
	if (p->status >= 300) {
		size_t room = CHAT_MAX_ERROR_BODY - p->raw.len;
		strbuf_add(&p->raw, buf, len < room ? len : room, CHAT_MAX_ERROR_BODY);
		return HTTP_DATA_OK;
	}
	if (!p->is_sse) {
		if (!strbuf_add(&p->raw, buf, len, c->server->conf->max_frame)) {
			p->too_large = true;
			return HTTP_DATA_ABORT;
		}
		return HTTP_DATA_OK;
	}
	if (sse_parser_feed(&p->sse, buf, len, cause, sizeof cause) == -1) {
		if (!p->saw_error && !c->cut) {
			p->saw_error = true;
			free(p->error);
			p->error = strdup(cause);
		}
		return HTTP_DATA_ABORT;
	}
	return HTTP_DATA_OK;
}

/* Backoff before attempt n (1-based): 0.5 s doubling, capped at 20 s, with +-50% jitter. */
static double
chat_backoff(int attempt)
{
	double base = 0.5 * (double)(1 << (attempt > 6 ? 6 : attempt - 1));

	if (base > 20)
		base = 20;
	return base * (0.5 + (double)random() / (double)RAND_MAX);
}

/* Try again after a pause when the failure is retryable and nothing reached the client. */
static bool
chat_maybe_retry(struct chat *c, const char *reason, const char *why, double retry_after)
{
	struct chat_parse *p = c->parse;
	double wait;

	if (c->first_delta_ms >= 0 || p->deltas > 0 || c->attempt > c->upstream->conf.retries)
		return false;
	wait = retry_after > 0 ? retry_after : chat_backoff(c->attempt);
	if (wait > 60)
		return false;
	log_info("chat %llu: %s; retry %d of %d in %.1fs", (unsigned long long)c->id, why,
	    c->attempt, c->upstream->conf.retries, wait);
	chat_parse_free(c->parse);
	c->parse = NULL;
	c->transfer = NULL;
	chat_arm_timer(c, wait);
	status_retrying(c, reason, why, wait);
	return true;
}

/* Whether a transfer's failure means the request cannot have left this host. */
static bool
chat_never_connected(CURLcode result)
{
	return result == CURLE_COULDNT_CONNECT || result == CURLE_COULDNT_RESOLVE_HOST ||
	    result == CURLE_COULDNT_RESOLVE_PROXY;
}

/* The transfer ended: retry, fail, or finish with usage. */
static void
chat_done_cb(void *arg, const struct http_response *resp)
{
	struct chat *c = arg;
	struct chat_parse *p = c->parse;
	char cause[256], why[320], reason[128];
	long status = p->status ? p->status : resp->status;

	c->transfer = NULL;
	evtimer_del(c->timer);
	if (!resp->connected && chat_never_connected(resp->result))
		c->unconnected++;
	if (p->too_large) {
		chat_finish(c, "too_large", "the model server's reply is larger than max_frame", -1, NAN);
		return;
	}
	if (c->cut) {
		upstream_record_result(c->upstream, true);
		chat_finish(c, NULL, NULL, 200, NAN);
		return;
	}
	if (resp->result != CURLE_OK && !p->saw_error) {
		bool timeout = resp->result == CURLE_OPERATION_TIMEDOUT;
		const char *which = !resp->connected ? "connect" : "total";
		upstream_record_result(c->upstream, false);
		snprintf(why, sizeof why, "%s: %s", c->upstream->conf.base_url, resp->error);
		status_cause(resp, 0, reason, sizeof reason);
		if (!timeout && !resp->connected && p->deltas == 0 && status_upstream_down(c)) {
			snprintf(why, sizeof why, "upstream %s (%s) is down: %s; no other upstream "
			    "serves model %s", c->upstream->conf.name, c->upstream->conf.base_url,
			    reason, c->model);
			chat_finish(c, "upstream_unavailable", why, -1, NAN);
			return;
		}
		if (!timeout && chat_maybe_retry(c, reason, why, -1))
			return;
		if (timeout)
			chat_finish(c, "timeout", which[0] == 'c' ? "timeout: connect to the model server" :
			    "timeout: whole request exceeded the upstream timeout", -1, NAN);
		else
			chat_finish(c, p->deltas > 0 ? "upstream_error" : "upstream_unavailable", why, -1, NAN);
		return;
	}
	if (status >= 300) {
		char *msg = openai_error_message(p->raw.p ? p->raw.p : "", p->raw.len);
		/*
		 * Retried only where another try can help: a server that is busy or
		 * restarting (429, 502, 503, 504). A 500 is often the same answer to
		 * the same body (a template the server cannot render): tried once
		 * more, unless the server says when to come back. Anything else
		 * (400, 401, 403, 404, 413, 422, ...) is the request's own fault.
		 */
		bool retryable = status == 429 || status == 502 || status == 503 || status == 504 ||
		    (status == 500 && (c->attempt == 1 || resp->retry_after > 0));
		upstream_record_result(c->upstream, status < 500);
		snprintf(why, sizeof why, "HTTP %ld: %s", status, msg);
		snprintf(reason, sizeof reason, "HTTP %ld", status);
		if (retryable && chat_maybe_retry(c, reason, why, resp->retry_after)) {
			free(msg);
			return;
		}
		snprintf(why, sizeof why, "model server answered %ld: %s", status, msg);
		free(msg);
		chat_finish(c, status == 429 ? "rate_limited" : "upstream_error", why, status,
		    resp->retry_after > 0 ? resp->retry_after : NAN);
		return;
	}
	upstream_record_result(c->upstream, true);
	if (p->is_sse) {
		if (!p->saw_error && sse_parser_finish(&p->sse, cause, sizeof cause) == -1) {
			p->saw_error = true;
			free(p->error);
			p->error = strdup(cause);
		}
		if (!p->saw_error && !p->saw_done) {
			p->saw_error = true;
			p->error = strdup("the stream ended without [DONE]");
		}
	} else if (p->status > 0 && c->passthrough) {
		json_t *j = json_loadb(p->raw.p ? p->raw.p : "", p->raw.len, JSON_ALLOW_NUL, NULL);
		if (!json_is_object(j)) {
			p->saw_error = true;
			p->error = strdup("malformed reply from the model server: not a JSON object");
		} else if ((p->error = chat_raw_error(j)) != NULL)
			p->saw_error = true;
		else
			chat_raw_fold(p, j);
		json_decref(j);
	} else if (p->status > 0) {
		struct openai_chunk ch;
		memset(&ch, 0, sizeof ch);
		if (openai_parse_response(p->raw.p ? p->raw.p : "", p->raw.len, &ch, cause,
		    sizeof cause) == -1) {
			p->saw_error = true;
			if (asprintf(&p->error, "malformed reply from the model server: %s", cause) == -1)
				p->error = NULL;
		} else {
			/* A whole JSON reply; for a stream request (a server that ignored
			 * stream=true) it becomes one delta. */
			chat_take_chunk(c, p, &ch);
		}
		openai_chunk_clear(&ch);
	}
	if (p->saw_error) {
		snprintf(why, sizeof why, "%s", p->error ? p->error : "error from the model server");
		chat_finish(c, "upstream_error", why, -1, NAN);
		return;
	}
	chat_finish(c, NULL, NULL, 200, NAN);
}

/* Ask the upstream's limiter for a slot: start now, wait in its queue, or be refused. */
static void
chat_admit(struct chat *c)
{
	struct upstream *up = c->upstream;
	char cause[256];

	switch (limiter_admit_named(up->limiter, &c->waiter, c->uid, c->user, c->reserved_tokens,
	    now_mono_ms())) {
	case LIMITER_ADMITTED:
		c->admitted = true;
		chat_attempt(c);
		break;
	case LIMITER_QUEUED:
		c->queued = true;
		status_queued(c);
		upstream_limiter_kick(up);
		break;
	default:
		snprintf(cause, sizeof cause, "upstream %s: %d requests already wait in its queue",
		    up->conf.name, up->conf.queue_max);
		chat_finish(c, "rate_limited", cause, -1, c->waiter.retry_after);
		break;
	}
}

/*
 * A retry's backoff ended: go again, on another upstream serving the model
 * when that one is healthier or less busy (failover); the limiter slot moves
 * with the request.
 */
static void
chat_retry(struct chat *c)
{
	struct server *srv = c->server;
	struct upstream *alt = upstream_route(srv, c->model);

	if (alt == NULL || alt == c->upstream || !alt->healthy) {
		upstream_release(alt);
		chat_attempt(c);
		return;
	}
	log_info("chat %llu: failing over from upstream %s to %s", (unsigned long long)c->id,
	    c->upstream->conf.name, alt->conf.name);
	if (c->admitted) {
		limiter_release(c->upstream->limiter, c->reserved_tokens, 0, now_mono_ms());
		upstream_limiter_kick(c->upstream);
		c->admitted = false;
	}
	upstream_release(c->upstream);
	c->upstream = alt;
	chat_admit(c);
}

/* First byte or idle timeout fired, or a retry's backoff ended. */
static void
chat_timer_cb(evutil_socket_t fd, short what, void *arg)
{
	struct chat *c = arg;
	struct chat_parse *p = c->parse;

	(void)fd;
	(void)what;
	if (c->budget_waiting) {
		/* waited queue_timeout for others to settle: what they leave, or nothing */
		chat_budget_unwait(c);
		chat_reserve(c, false);
		return;
	}
	if (c->transfer == NULL) {
		chat_retry(c);
		return;
	}
	http_transfer_cancel(c->transfer);
	c->transfer = NULL;
	if (c->paused) {
		char why[160];
		snprintf(why, sizeof why, "timeout: the client read nothing for %.0fs (stall_timeout)",
		    c->server->conf->stall_timeout);
		chat_finish(c, "timeout", why, -1, NAN);
		return;
	}
	upstream_record_result(c->upstream, false);
	if (p->status == 0)
		chat_finish(c, "timeout", "timeout: no first byte from the model server in time", -1, NAN);
	else
		chat_finish(c, "timeout", "timeout: the model server went idle in the middle of the reply",
		    -1, NAN);
}

static const struct http_callbacks chat_http_callbacks = { chat_data_cb, chat_done_cb };

/* Start one attempt of the upstream request. */
static void
chat_attempt(struct chat *c)
{
	struct upstream_conf *u = &c->upstream->conf;
	struct http_request hr;
	char url[2048], cause[256];

	c->attempt++;
	c->parse = chat_parse_new(c);
	if (c->parse == NULL) {
		c->unconnected++;
		chat_finish(c, "internal", "out of memory", -1, NAN);
		return;
	}
	const char *path = c->passthrough ? c->pass.path : "/chat/completions";
	size_t base_len = strlen(u->base_url), path_len = strlen(path);
	if (base_len + path_len >= sizeof url) {
		c->unconnected++;
		chat_finish(c, "internal", "the upstream's URL is too long", -1, NAN);
		return;
	}
	memcpy(url, u->base_url, base_len);
	memcpy(url + base_len, path, path_len + 1);
	memset(&hr, 0, sizeof hr);
	hr.method = "POST";
	hr.url = url;
	hr.body = c->body;
	hr.api_key = u->api_key;
	hr.connect_timeout_ms = (long)(u->connect_timeout * 1000);
	hr.timeout_ms = (long)(u->timeout * 1000);
	c->transfer = http_transfer_start(c->server->http, &hr, &chat_http_callbacks, c,
	    cause, sizeof cause);
	if (c->transfer == NULL) {
		c->unconnected++;
		chat_finish(c, "internal", cause, -1, NAN);
		return;
	}
	chat_arm_timer(c, u->first_byte_timeout);
}

/* Keys of a chat body that the server renders into the prompt, besides the messages. */
static const char *const chat_rendered_keys[] = {
	"tools", "tool_choice", "response_format", "functions", "function_call", NULL
};

/* Count a value of the body (tool calls, tool definitions) as the JSON text the server renders. */
static int64_t
chat_count_json(const struct tokenizer *tok, json_t *v)
{
	char *text;
	int64_t n = 0;

	if (v == NULL)
		return 0;
	if (json_is_string(v))
		n = tokenizer_count(tok, json_string_value(v), json_string_length(v));
	else if ((text = json_dumps(v, JSON_COMPACT | JSON_ENCODE_ANY)) != NULL) {
		n = tokenizer_count(tok, text, strlen(text));
		free(text);
	}
	return n > 0 ? n : 0;
}

/*
 * Count the prompt with the upstream's tokenizer, once, when calc_usage is
 * on: every message (the seed's formula: 3 per message, 1 per name, 3 to
 * prime the reply) with its tool calls, and what the server renders besides
 * them: the tool definitions, tool_choice and the response format.
 */
static void
chat_count_prompt(struct chat *c)
{
	struct chat_request *cr = &c->req->u.chat;
	struct tokenizer *tok = c->upstream->tokenizer;
	struct tokenizer_message *tm;
	int64_t n;

	if (c->prompt_estimate >= 0 || !c->server->conf->calc_usage || tok == NULL)
		return;
	if ((tm = calloc(cr->n_messages ? cr->n_messages : 1, sizeof *tm)) == NULL)
		return;
	for (size_t i = 0; i < cr->n_messages; i++) {
		tm[i].role = cr->messages[i].role;
		tm[i].content = cr->messages[i].content;
		tm[i].content_len = cr->messages[i].content_len;
		tm[i].name = cr->messages[i].name;
		tm[i].tool_call_id = cr->messages[i].tool_call_id;
	}
	n = tokenizer_count_messages(tok, tm, cr->n_messages);
	free(tm);
	if (n < 0)
		return;
	for (size_t i = 0; i < cr->n_messages; i++) {
		const struct message_raw *tc = &cr->messages[i].tool_calls;
		json_t *j;
		if (tc->data == NULL || (j = openai_msgpack_to_json(tc->data, tc->len)) == NULL)
			continue;
		n = budget_tokens_add(n, chat_count_json(tok, j));
		json_decref(j);
	}
	if (cr->extra.data != NULL) {
		json_t *x = openai_msgpack_to_json(cr->extra.data, cr->extra.len);
		for (size_t k = 0; json_is_object(x) && chat_rendered_keys[k] != NULL; k++)
			n = budget_tokens_add(n, chat_count_json(tok,
			    json_object_get(x, chat_rendered_keys[k])));
		json_decref(x);
	}
	c->prompt_estimate = n;
}

/* Usage of a finished or abandoned attempt: the server's numbers, else our count. */
static void
chat_usage(struct chat *c, struct usage *out)
{
	struct chat_parse *p = c->parse;
	struct tokenizer *tok = c->upstream->tokenizer;
	int64_t most = c->max_tokens_sent;

	memset(out, 0, sizeof *out);
	if (p != NULL && p->has_usage && !c->cut) {
		*out = p->usage;
		if (out->prompt_tokens < 0)
			out->prompt_tokens = 0;
		if (out->completion_tokens < 0)
			out->completion_tokens = 0;
	} else {
		chat_count_prompt(c);
		if (c->prompt_estimate < 0 || tok == NULL) {
			if (c->cut)
				out->completion_tokens = most;
			out->total_tokens = out->completion_tokens;
			return;
		}
		out->estimated = true;
		out->prompt_tokens = c->prompt_estimate;
		if (p != NULL && p->text.len > 0) {
			int64_t n = tokenizer_count(tok, p->text.p, p->text.len);
			out->completion_tokens = n > 0 ? n : 0;
		}
		if (c->cut)
			out->completion_tokens = most;
	}
	/* a reply is billed up to the limit it was sent with, whatever the server wrote past it */
	if (most > 0 && out->completion_tokens > most) {
		log_warn("chat %llu: upstream %s wrote %lld completion tokens past the max_tokens %lld "
		    "it was sent; billed %lld", (unsigned long long)c->id, c->upstream->conf.name,
		    (long long)out->completion_tokens, (long long)most, (long long)most);
		out->completion_tokens = most;
		out->total_tokens = 0;
	}
	if (out->total_tokens < budget_tokens_add(out->prompt_tokens, out->completion_tokens))
		out->total_tokens = budget_tokens_add(out->prompt_tokens, out->completion_tokens);
}

/*
 * A non-streamed reply cut before it came (the client left or cancelled,
 * the daemon stopped): the model server may have done all the work it was
 * asked and says nothing of it, so the completion it was allowed (the
 * reservation's) is billed, marked estimated, never 0. A stream's tokens
 * are those that came.
 */
static void
chat_usage_cut(struct chat *c, struct usage *us)
{
	const struct chat_parse *p = c->parse;

	if (c->req->u.chat.stream || (p != NULL && p->has_usage) ||
	    us->completion_tokens >= c->reserved_completion)
		return;
	us->completion_tokens = c->reserved_completion;
	us->total_tokens = budget_tokens_add(us->prompt_tokens, us->completion_tokens);
	us->estimated = true;
}

/*
 * Whether the request may have reached the model server: some attempt
 * started and did not fail before connecting. One still in flight, cut by a
 * timeout or cancelled counts as sent.
 */
static bool
chat_was_sent(const struct chat *c)
{
	return c->attempt > c->unconnected;
}

/* Cost from per-1,000-token prices. */
static double
chat_cost(const struct upstream_conf *u, const struct usage *us)
{
	return ((double)us->prompt_tokens * u->prompt_price +
	    (double)us->completion_tokens * u->completion_price) / 1000.0;
}

/*
 * End a chat: settle its budget and limiter slot, stage its ledger record,
 * and leave the answer (done or error) to chat_commit at the end of the loop
 * pass, once the record is written. code NULL means success. The record is
 * written before the client hears.
 */
static void
chat_finish(struct chat *c, const char *code, const char *message, long status, double retry_after)
{
	struct server *srv = c->server;
	struct usage us;
	struct ledger_record rec;
	char cause[256];
	int64_t end = now_mono_ms();
	bool sent = chat_was_sent(c);
	bool cut = c->transfer != NULL;     /* the model server may be at work on it */

	if (c->fin.finishing)
		return;
	if (c->transfer != NULL) {
		http_transfer_cancel(c->transfer);
		c->transfer = NULL;
	}
	if (c->fleet_wait) {
		/* no verdict may reach a chat that has ended */
		fleet_reserve_forget(srv->fleet, c);
		c->fleet_wait = false;
	}
	evtimer_del(c->timer);
	chat_budget_unwait(c);
	/* A request that never reached the model server costs nothing. */
	if (sent)
		chat_usage(c, &us);
	else
		memset(&us, 0, sizeof us);
	if (sent && cut)
		chat_usage_cut(c, &us);
	double cost = sent ? chat_cost(&c->upstream->conf, &us) : 0;
	if (sent && !c->passthrough && !us.estimated && c->prompt_estimate > 0 &&
	    budget_ratio_learn(srv->prompt_ratios, c->upstream->conf.name, c->model,
	    us.prompt_tokens, c->prompt_estimate) == -1)
		log_warn("chat %llu: out of memory learning the prompt ratio", (unsigned long long)c->id);
	if (c->queued) {
		limiter_cancel(c->upstream->limiter, &c->waiter);
		c->queued = false;
		upstream_limiter_kick(c->upstream);
	}
	if (c->admitted) {
		limiter_release(c->upstream->limiter, c->reserved_tokens, us.total_tokens, now_mono_ms());
		c->admitted = false;
		upstream_limiter_kick(c->upstream);
	}
	if (c->reservation != NULL) {
		/* The tokens the ledger will count, so a rebuild from it agrees. */
		if (sent)
			budgets_settle(c->reservation, budget_tokens_add(us.prompt_tokens,
			    us.completion_tokens), cost, now_ms());
		else
			budgets_release(c->reservation);
		c->reservation = NULL;
		if (!TAILQ_EMPTY(&srv->budget_waiters))
			srv->budget_freed = true;
	}
	memset(&rec, 0, sizeof rec);
	rec.time_ms = now_ms();
	rec.uid = c->uid;
	rec.user = c->user;
	rec.tag = c->req->u.chat.tag;
	rec.model = c->model != NULL ? c->model : c->upstream->conf.model;
	rec.upstream = c->upstream->conf.name;
	rec.prompt_tokens = us.prompt_tokens;
	rec.completion_tokens = us.completion_tokens;
	rec.estimated = us.estimated;
	rec.cost = cost;
	rec.status = code == NULL ? LEDGER_DONE :
	    strcmp(code, "cancelled") == 0 ? LEDGER_CANCELLED : LEDGER_ERROR;
	rec.error_code = code;
	rec.latency_ms = end - c->started_ms;
	rec.has_ttft = c->first_delta_ms >= 0;
	rec.ttft_ms = c->first_delta_ms - c->started_ms;
	rec.reservation = c->fleet_rsv;
	uint64_t last = ledger_last_rid(srv->ledger);
	if (ledger_stage(srv->ledger, &rec, cause, sizeof cause) == -1) {
		log_error("usage ledger: %s", cause);
		c->fin.cause = strdup(cause);
		c->fin.committed = true;        /* nothing of it is in the batch */
	}
	if (ledger_last_rid(srv->ledger) != last)
		c->fin.rid = ledger_last_rid(srv->ledger);
	c->fin.finishing = true;
	c->fin.code = code;
	c->fin.message = message != NULL ? strdup(message) : NULL;
	c->fin.status = status;
	c->fin.retry_after = retry_after;
	c->fin.cost = cost;
	c->fin.end_ms = end;
	c->fin.usage = us;
	srv->total_cost += cost;
	TAILQ_INSERT_TAIL(&srv->finishing, c, fin.entry);
	server_flush_soon(srv);
}

/* Send a finished chat's answer (its record's fate known), then free it. */
static void
chat_answer(struct chat *c)
{
	struct server *srv = c->server;
	struct chat_parse *p = c->parse;
	struct usage us = c->fin.usage;
	const char *code = c->fin.code;
	const char *message = c->fin.message;
	const char *model = c->model != NULL ? c->model : c->upstream->conf.model;
	char refused[512];
	int64_t end = c->fin.end_ms;
	double cost = c->fin.cost;
	bool durable = c->fin.durable;

	if (!durable && code == NULL && strcmp(srv->conf->on_ledger_error, "refuse") == 0) {
		/* done means recorded: without a record, the client hears an error */
		snprintf(refused, sizeof refused, "the usage ledger could not record this request "
		    "(on_ledger_error is refuse): %s", c->fin.cause ? c->fin.cause : "out of memory");
		code = "internal";
		message = refused;
		/* told it failed: its record, written once the disk allows, must not say done */
		if (ledger_amend_error(srv->ledger, c->fin.rid, code) == -1)
			log_warn("chat %llu: its record could not be marked failed (it is in the journal "
			    "already, or dropped)", (unsigned long long)c->id);
	}
	struct metrics_event me = { model, c->uid, c->req->u.chat.tag, code != NULL ? code : "done",
		us.prompt_tokens, us.completion_tokens, cost,
		c->first_delta_ms >= 0 ? c->first_delta_ms - c->started_ms : -1, end - c->started_ms,
		c->user };
	metrics_record(&me);
	if (log_get_level() >= LOG_LEVEL_INFO) {
		char who[80];
		if (c->user != NULL)
			snprintf(who, sizeof who, "user %s", c->user);
		else
			snprintf(who, sizeof who, "uid %u", (unsigned)c->uid);
		log_info("chat %llu %s model %s upstream %s: %s | prompt_tokens: %lld, "
		    "completion_tokens: %lld%s | cost $%.3f | Total running cost: $%.3f | "
		    "Max budget: $%.3f", (unsigned long long)c->id, who, model,
		    c->upstream->conf.name, code ? code : "done", (long long)us.prompt_tokens,
		    (long long)us.completion_tokens, us.estimated ? " (estimated)" : "", cost,
		    srv->total_cost, srv->conf->max_budget);
	}

	if (code != NULL) {
		struct reply r;
		memset(&r, 0, sizeof r);
		r.id = c->id;
		r.type = REPLY_ERROR;
		r.u.error.code = (char *)code;
		r.u.error.message = (char *)(message ? message : code);
		r.u.error.retry_after = c->fin.retry_after;
		r.u.error.status = strcmp(code, "upstream_error") == 0 && c->fin.status > 0 ?
		    c->fin.status : -1;
		r.u.error.detail = c->error_detail;
		chat_reply(c, &r);
	} else {
		struct reply r;
		memset(&r, 0, sizeof r);
		r.id = c->id;
		r.type = REPLY_DONE;
		r.u.done.finish_reason = p->finish_reason;
		r.u.done.usage = us;
		r.u.done.cost = cost;
		r.u.done.model = p->model != NULL ? p->model : (char *)model;
		r.u.done.upstream = c->upstream->conf.name;
		r.u.done.ttft_ms = c->first_delta_ms >= 0 ? c->first_delta_ms - c->started_ms : -1;
		r.u.done.latency_ms = end - c->started_ms;
		r.u.done.not_durable = !durable;
		r.u.done.max_tokens = c->max_tokens_sent;
		r.u.done.budget_shrunk = c->budget_shrunk;
		r.u.done.max_tokens_asked = c->budget_shrunk ? c->max_tokens_wanted : -1;
		r.u.done.cut = c->cut;
		if (c->passthrough)
			r.u.done.content = !c->req->u.chat.stream && p->raw.p ? p->raw.p : NULL;
		else if (!c->req->u.chat.stream) {
			r.u.done.content = p->content.p ? p->content.p : "";
			r.u.done.content_len = p->content.len;
			r.u.done.reasoning = p->reasoning.p;
			r.u.done.reasoning_len = p->reasoning.len;
			r.u.done.tool_calls = p->tool_calls;
		}
		chat_reply(c, &r);
	}
	chat_free(c);
}

/*
 * Write the records of the chats that ended (one write(2) for all of them),
 * then answer those chats in the order they ended. A chat that ends while
 * the answers go out waits for the next commit.
 */
void
chat_commit(struct server *srv)
{
	struct chat *c;
	char cause[256];
	bool ok = true;

	if (ledger_staged(srv->ledger) > 0 || !TAILQ_EMPTY(&srv->finishing)) {
		if ((ok = ledger_commit(srv->ledger, cause, sizeof cause) == 0) == false)
			log_error("usage ledger: %s", cause);
	}
	TAILQ_FOREACH(c, &srv->finishing, fin.entry) {
		if (c->fin.committed)
			continue;       /* its record could not be staged: not durable */
		c->fin.committed = true;
		c->fin.durable = ok;
		if (!ok)
			c->fin.cause = strdup(cause);
	}
	while ((c = TAILQ_FIRST(&srv->finishing)) != NULL && c->fin.committed) {
		TAILQ_REMOVE(&srv->finishing, c, fin.entry);
		chat_answer(c);
	}
}

/* Cancel: stop the transfer, record the tokens so far, answer with code, all before returning. */
void
chat_cancel(struct chat *c, const char *code, const char *message)
{
	if (!c->fin.finishing)
		chat_finish(c, code, message, -1, NAN);
	chat_commit(c->server);     /* the front expects it gone when this returns */
}

/* The client caught up: let the transfer deliver again. */
void
chat_resume(struct chat *c)
{
	if (!c->paused || c->transfer == NULL)
		return;
	c->paused = false;
	chat_arm_timer(c, c->upstream->conf.idle_timeout);
	http_transfer_resume(c->transfer);
}

/* Refuse a chat that never reached admission: an error, no ledger record. */
static void
chat_refuse(struct chat *c, const char *code, const char *message)
{
	struct reply r;

	memset(&r, 0, sizeof r);
	r.id = c->id;
	r.type = REPLY_ERROR;
	r.u.error.code = (char *)code;
	r.u.error.message = (char *)message;
	r.u.error.retry_after = NAN;
	r.u.error.status = -1;
	const char *named = c->req->u.chat.model;
	if ((named == NULL || *named == '\0') && !TAILQ_EMPTY(&c->server->upstreams))
		named = TAILQ_FIRST(&c->server->upstreams)->conf.model;
	struct metrics_event me = { upstream_known_model(c->server, named) ? named : NULL, c->uid,
		c->req->u.chat.tag, code, 0, 0, 0, -1, -1, c->user };
	metrics_record(&me);
	chat_reply(c, &r);
	chat_free(c);
}

/*
 * A chat for req (owned from now on) on behalf of uid or, when user is
 * neither NULL nor "", of that named user (copied; billed with uid
 * LEDGER_UID_NAMED), reporting to front; NULL when memory runs out. The
 * front links it, then calls chat_start.
 */
struct chat *
chat_new(struct server *srv, const struct chat_front *front, void *owner, uint32_t uid,
    const char *user, struct request *req)
{
	struct chat *c;

	if ((c = calloc(1, sizeof *c)) == NULL)
		return NULL;
	if (user != NULL && *user != '\0') {
		if ((c->user = strdup(user)) == NULL) {
			free(c);
			return NULL;
		}
		uid = LEDGER_UID_NAMED;
	}
	if ((c->timer = evtimer_new(srv->base, chat_timer_cb, c)) == NULL) {
		free(c->user);
		free(c);
		return NULL;
	}
	c->server = srv;
	c->front = front;
	c->owner = owner;
	c->uid = uid;
	c->req = req;
	c->id = req->id;
	c->first_delta_ms = -1;
	c->prompt_estimate = -1;
	c->max_tokens_asked = -1;
	c->max_tokens_sent = -1;
	c->started_ms = now_mono_ms();
	srv->in_flight++;
	return c;
}

/*
 * A passed-through request: pass (its body and prompt_text are the chat's
 * from now on, even on failure) says where to send what. NULL when memory
 * runs out.
 */
struct chat *
chat_new_passthrough(struct server *srv, const struct chat_front *front, void *owner,
    uint32_t uid, const char *user, struct request *req, struct chat_passthrough *pass)
{
	struct chat *c = chat_new(srv, front, owner, uid, user, req);

	if (c == NULL) {
		free(pass->body);
		free(pass->prompt_text);
		return NULL;
	}
	c->passthrough = true;
	c->pass = *pass;
	return c;
}

/*
 * The body of a passed-through request: the client's, naming our model,
 * asking for usage, with the daemon's length limit in place of every one
 * the client gave (in any dialect's key).
 */
static char *
chat_passthrough_body(struct chat *c, char *cause, size_t cause_len)
{
	json_t *j = json_loads(c->pass.body, JSON_ALLOW_NUL, NULL), *so, *nested;
	const char *key;
	void *tmp;
	char *out = NULL;

	if (!json_is_object(j)) {
		snprintf(cause, cause_len, "the body is not a JSON object");
		json_decref(j);
		return NULL;
	}
	json_object_set_new(j, "model", json_string(c->model));
	json_object_foreach_safe(j, tmp, key, so)
		if (openai_length_key(key))
			json_object_del(j, key);
	if (json_is_object(nested = json_object_get(j, "options")))
		json_object_del(nested, "num_predict");
	if (json_is_object(nested = json_object_get(j, "parameters")))
		json_object_del(nested, "max_new_tokens");
	if (c->max_tokens_sent > 0)
		json_object_set_new(j, "max_tokens", json_integer(c->max_tokens_sent));
	if (c->req->u.chat.stream) {
		if (!json_is_object(so = json_object_get(j, "stream_options"))) {
			so = json_object();
			json_object_set_new(j, "stream_options", so);
		}
		json_object_set_new(so, "include_usage", json_true());
	}
	if ((out = json_dumps(j, JSON_COMPACT)) == NULL)
		snprintf(cause, cause_len, "out of memory");
	json_decref(j);
	return out;
}

/*
 * What the fleet said of the chat's claims, or that it could not say: go on
 * to the limiter, or end with budget_exceeded or fleet_unavailable. While
 * the database is away, fleet_offline "local" admits against this node's
 * leases (fleet.c decides; a refusal then names the lease).
 */
static void
chat_fleet_decide(struct chat *c, const struct fleet_verdict *v)
{
	struct server *srv = c->server;
	char msg[768];

	switch (v->kind) {
	case FLEET_RESERVED:
		c->fleet_rsv = v->id;
		chat_admit(c);
		return;
	case FLEET_REFUSED:
		chat_fleet_refused(c, v);
		return;
	case FLEET_UNREACHABLE:
		break;
	}
	if (strcmp(srv->conf->fleet_offline, "local") != 0)
		snprintf(msg, sizeof msg, "the fleet database cannot be reached (%.*s); requests under a "
		    "budget are refused until it can (fleet_offline is refuse)",
		    (int)strcspn(v->why, "\n"), v->why);
	else
		snprintf(msg, sizeof msg, "the fleet database cannot be reached (%.*s) and this node "
		    "cannot admit the request against its leases (fleet_offline is local)",
		    (int)strcspn(v->why, "\n"), v->why);
	chat_finish(c, "fleet_unavailable", msg, -1, NAN);
}

/*
 * The fleet has less left of a budget than the chat holds: ask once more
 * with max_tokens lowered to what is left, when the budget shrinks and a
 * reply worth sending fits, as a local budget would; else refuse, naming
 * the largest max_tokens that fits.
 */
static void
chat_fleet_refused(struct chat *c, const struct fleet_verdict *v)
{
	const struct budget_claim *cl = &v->claims[v->refused];
	struct budget_refusal why;
	struct budget_ask ask;
	int64_t fit, least;
	bool shrinks;

	chat_budget_ask(c, c->reserved_completion, &ask);
	shrinks = cl->fit == BUDGET_FIT_DEFAULT ? ask.shrink : cl->fit == BUDGET_FIT_SHRINK;
	fit = budget_claim_fit(cl, v->limit - v->used - v->reserved, &ask);
	least = ask.min_completion < ask.completion ? ask.min_completion : ask.completion;
	if (shrinks && !c->fleet_shrunk && fit >= least && fit < ask.completion &&
	    c->max_tokens_sent > 0) {
		log_info("chat %llu: max_tokens %lld shrunk to %lld to fit budget %s %s",
		    (unsigned long long)c->id, (long long)c->max_tokens_sent, (long long)fit, cl->key,
		    v->where);
		c->fleet_shrunk = true;
		c->budget_shrunk = true;
		c->max_tokens_sent = fit;
		c->reserved_completion = fit;
		c->reserved_tokens = budget_tokens_add(c->prompt_reserved, fit);
		if (chat_build_body(c) == -1)
			return;
		ask.completion = fit;
		chat_fleet_reserve(c, chat_ask_cost(&ask));
		return;
	}
	budget_claim_refusal(cl, v->used, v->reserved, v->where, &ask, shrinks, &why);
	chat_budget_detail(c, &why);
	chat_finish(c, "budget_exceeded", why.message, -1, NAN);
}

/* The fleet answered (or gave up on) the chat's claims. */
static void
chat_fleet_cb(void *arg, const struct fleet_verdict *v)
{
	struct chat *c = arg;

	c->fleet_wait = false;
	chat_fleet_decide(c, v);
}

/*
 * Hold the chat's worst case in the fleet's shared budgets too (the local
 * reservation is held as well): at once against this node's leases, or
 * when the fleet answers.
 */
static void
chat_fleet_reserve(struct chat *c, double worst)
{
	struct server *srv = c->server;
	struct budget_claim *cl;
	struct fleet_verdict v = { .kind = FLEET_UNREACHABLE, .why = "not connected" };
	int64_t deadline = now_mono_ms() + (int64_t)(c->upstream->conf.queue_timeout * 1000.0);
	size_t n;

	size_t max = budgets_count(srv->budgets);

	if ((cl = calloc(max > 0 ? max : 1, sizeof *cl)) == NULL) {
		chat_finish(c, "internal", "out of memory", -1, NAN);
		return;
	}
	n = budgets_claims(srv->budgets, c->uid, c->user, c->req->u.chat.tag, c->model,
	    c->reserved_tokens, worst, now_ms(), cl, max);
	if (n == 0) {
		free(cl);
		chat_admit(c);
		return;
	}
	switch (fleet_reserve(srv->fleet, cl, n, deadline, chat_fleet_cb, c, &c->fleet_rsv)) {
	case 1:
		free(cl);
		chat_admit(c);
		return;
	case 0:
		c->fleet_wait = true;
		free(cl);
		return;
	}
	v.claims = cl;
	v.n = n;
	chat_fleet_decide(c, &v);
	free(cl);
}

/*
 * The upstream for the model the chat names: through an alias, else as
 * named, else default_model for a name nobody serves (none named: the first
 * upstream's). *served is the model name to send, or NULL for the first
 * upstream's own.
 */
static struct upstream *
chat_route(struct chat *c, const char **served)
{
	const struct conf *conf = c->server->conf;
	const char *asked = c->req->u.chat.model, *alias;
	struct upstream *up;

	*served = asked;
	if ((alias = conf_alias_model(conf, asked)) != NULL)
		*served = alias;
	if ((up = upstream_route(c->server, *served)) == NULL && alias == NULL &&
	    conf->default_model != NULL && asked != NULL && *asked != '\0') {
		*served = conf->default_model;
		up = upstream_route(c->server, *served);
	}
	return up;
}

/* Refuse a chat for a model nobody serves, naming those that are served. */
static void
chat_unknown_model(struct chat *c)
{
	const char *asked = c->req->u.chat.model, *alias = conf_alias_model(c->server->conf, asked);
	char cause[512], names[320];

	upstream_model_names(c->server, names, sizeof names);
	if (alias != NULL)
		snprintf(cause, sizeof cause, "no upstream serves model \"%s\" (the alias \"%s\" "
		    "names it); served: %s", alias, asked, names);
	else
		snprintf(cause, sizeof cause, "no upstream serves model \"%s\"; served: %s",
		    asked != NULL ? asked : "", names);
	chat_refuse(c, "unknown_model", cause);
}

/* Admit a chat: route it, count its prompt, build the body, reserve, start or queue it. */
void
chat_start(struct chat *c)
{
	struct server *srv = c->server;
	struct chat_request *cr = &c->req->u.chat;
	struct upstream *up;
	const char *served;
	char cause[256];

	if (!ledger_healthy(srv->ledger) && strcmp(srv->conf->on_ledger_error, "refuse") == 0) {
		snprintf(cause, sizeof cause,
		    "the usage ledger in %s cannot be written; chats are refused until it can",
		    srv->conf->state_dir);
		chat_refuse(c, "internal", cause);
		return;
	}
	if ((up = chat_route(c, &served)) == NULL) {
		chat_unknown_model(c);
		return;
	}
	c->upstream = up;

	c->model = strdup(served != NULL && *served != '\0' ? served : up->conf.model);
	c->max_tokens_asked = cr->max_tokens > 0 ? cr->max_tokens : -1;
	/*
	 * A chat's prompt is counted before sending only when a budget or tpm
	 * needs the number to reserve; otherwise only when the server reports no
	 * usage. A passthrough's prompt is always counted.
	 */
	if (c->passthrough) {
		if (srv->conf->calc_usage && up->tokenizer != NULL) {
			const char *t = c->pass.prompt_text;
			int64_t n = t != NULL ? tokenizer_count(up->tokenizer, t, c->pass.prompt_len) : 0;
			c->prompt_estimate = (n > 0 ? n : 0) + c->pass.prompt_ids;
		}
	} else if (up->conf.tpm > 0 || budgets_apply(srv->budgets, c->uid, c->user, cr->tag, c->model))
		chat_count_prompt(c);
	c->prompt_reserved = budget_ratio_apply(budget_ratio(srv->prompt_ratios, up->conf.name,
	    c->model), c->prompt_estimate);
	c->waiter.data = c;
	chat_reserve(c, true);
}

/* What the chat asks of the budgets: its prompt as reserved, completion tokens at their prices. */
static void
chat_budget_ask(const struct chat *c, int64_t completion, struct budget_ask *ask)
{
	const struct upstream_conf *u = &c->upstream->conf;

	memset(ask, 0, sizeof *ask);
	ask->prompt = c->prompt_reserved;
	ask->completion = completion;
	ask->min_completion = c->server->conf->budget_min_reply;
	ask->prompt_price = u->prompt_price;
	ask->completion_price = u->completion_price;
	ask->shrink = strcmp(c->server->conf->budget_fit, "refuse") != 0;
}

/* The worst-case cost of an ask. */
static double
chat_ask_cost(const struct budget_ask *ask)
{
	return ((double)ask->prompt * ask->prompt_price +
	    (double)ask->completion * ask->completion_price) / 1000.0;
}

/*
 * Reserve the chat's worst case against the budgets that apply: its prompt
 * as the server will count it and the length limit it is sent with, which
 * is the client's or default_max_tokens, shrunk to what is left when a
 * budget allows it. When only requests in flight stand in the way, the chat
 * waits for them (may_wait) in the server's budget_waiters. Then the body
 * goes out with that limit, through the fleet's budgets and the limiter.
 */
static void
chat_reserve(struct chat *c, bool may_wait)
{
	struct server *srv = c->server;
	struct chat_request *cr = &c->req->u.chat;
	struct upstream *up = c->upstream;
	struct budget_refusal why;
	struct budget_ask ask;
	int64_t sent;

	chat_budget_ask(c, c->passthrough && c->pass.embeddings ? 0 :
	    c->max_tokens_asked > 0 ? c->max_tokens_asked : up->conf.default_max_tokens, &ask);
	switch (budgets_admit(srv->budgets, c->uid, c->user, cr->tag, c->model, &ask, may_wait,
	    now_ms(), &c->reservation, &sent, &why)) {
	case BUDGET_WAIT:
		chat_budget_wait(c, why.message);
		return;
	case BUDGET_REFUSED:
		chat_budget_unwait(c);
		chat_budget_detail(c, &why);
		chat_finish(c, "budget_exceeded", why.message, -1, NAN);
		return;
	case BUDGET_RESERVED:
		break;
	}
	chat_budget_unwait(c);
	/* What is reserved is what is sent: a limit goes out whenever one is held. */
	if (ask.completion > 0 && (c->reservation != NULL || c->max_tokens_asked > 0 ||
	    up->conf.tpm > 0))
		c->max_tokens_sent = sent;
	c->budget_shrunk = sent < ask.completion;
	c->max_tokens_wanted = ask.completion;
	if (c->budget_shrunk)
		log_info("chat %llu: max_tokens %lld shrunk to %lld to fit a budget",
		    (unsigned long long)c->id, (long long)ask.completion, (long long)sent);
	c->reserved_completion = ask.completion > 0 ? sent : 0;
	c->reserved_tokens = budget_tokens_add(c->prompt_reserved, c->reserved_completion);
	if (chat_build_body(c) == -1)
		return;
	if (srv->fleet != NULL && c->reservation != NULL) {
		ask.completion = c->reserved_completion;
		chat_fleet_reserve(c, chat_ask_cost(&ask));
		return;
	}
	chat_admit(c);
}

/* Build the body sent upstream, with the length limit the chat holds; -1: the chat ended. */
static int
chat_build_body(struct chat *c)
{
	struct chat_request *cr = &c->req->u.chat;
	char cause[256];

	free(c->body);
	if (!c->passthrough)
		cr->max_tokens = c->max_tokens_sent;
	c->body = c->passthrough ? chat_passthrough_body(c, cause, sizeof cause) :
	    openai_chat_body(cr, c->model, cr->stream, cause, sizeof cause);
	if (c->body == NULL) {
		chat_finish(c, "bad_request", cause, -1, NAN);
		return -1;
	}
	return 0;
}

/*
 * Others' reservations stand in the way: wait in the server's list until
 * they settle (chat_budget_retry), at most the upstream's queue_timeout;
 * then the chat is shrunk to what they leave, or refused.
 */
static void
chat_budget_wait(struct chat *c, const char *why)
{
	struct server *srv = c->server;
	double limit = c->upstream->conf.queue_timeout;

	if (c->budget_waiting)
		return;
	if (limit <= 0) {
		chat_reserve(c, false);
		return;
	}
	log_debug("chat %llu: waits for requests in flight: %s", (unsigned long long)c->id, why);
	c->budget_waiting = true;
	TAILQ_INSERT_TAIL(&srv->budget_waiters, c, wait_entry);
	chat_arm_timer(c, limit);
	status_budget_wait(c, why, NAN);
}

/* Leave the budget waiters, if the chat is there. */
static void
chat_budget_unwait(struct chat *c)
{
	if (!c->budget_waiting)
		return;
	TAILQ_REMOVE(&c->server->budget_waiters, c, wait_entry);
	c->budget_waiting = false;
	evtimer_del(c->timer);
}

/*
 * Reservations were settled: ask the waiting chats again, in the order they
 * came. Each is reserved, shrunk or refused now, or waits on.
 */
void
chat_budget_retry(struct server *srv)
{
	struct chat_list asking;
	struct chat *c;

	srv->budget_freed = false;
	TAILQ_INIT(&asking);
	TAILQ_CONCAT(&asking, &srv->budget_waiters, wait_entry);
	while ((c = TAILQ_FIRST(&asking)) != NULL) {
		TAILQ_REMOVE(&asking, c, wait_entry);
		TAILQ_INSERT_TAIL(&srv->budget_waiters, c, wait_entry);
		chat_reserve(c, true);
	}
}

/* The limiter let a queued chat go, or it waited too long. */
void
chat_admitted(struct chat *c, int status, double retry_after)
{
	char cause[256];

	c->queued = false;
	if (status == LIMITER_ADMITTED) {
		c->admitted = true;
		chat_attempt(c);
		return;
	}
	snprintf(cause, sizeof cause, "waited %.0fs in the queue of upstream %s (rpm %d, tpm %d, "
	    "max_concurrency %d)", c->upstream->conf.queue_timeout, c->upstream->conf.name,
	    c->upstream->conf.rpm, c->upstream->conf.tpm, c->upstream->conf.max_concurrency);
	chat_finish(c, "rate_limited", cause, -1, retry_after);
}

/* The detail map of a budget_exceeded error: which budget, what is left, what was needed. */
static void
chat_budget_detail(struct chat *c, const struct budget_refusal *why)
{
	msgpack_sbuffer sb;
	msgpack_packer pk;
	char scope[300];

	if (why->index == BUDGET_INDEX_NONE)
		return;
	dispatch_budget_label(&why->budget.def, scope, sizeof scope);
	msgpack_sbuffer_init(&sb);
	msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
	msgpack_pack_map(&pk, 5 + (why->fit != BUDGET_FIT_UNKNOWN));
	msgpack_pack_str_with_body(&pk, "scope", 5);
	msgpack_pack_str_with_body(&pk, scope, strlen(scope));
	msgpack_pack_str_with_body(&pk, "unit", 4);
	const char *unit = budget_unit_name(why->budget.def.unit);
	msgpack_pack_str_with_body(&pk, unit, strlen(unit));
	msgpack_pack_str_with_body(&pk, "period", 6);
	const char *period = budget_period_name(why->budget.def.period);
	msgpack_pack_str_with_body(&pk, period, strlen(period));
	msgpack_pack_str_with_body(&pk, "left", 4);
	msgpack_pack_double(&pk, why->budget.left);
	msgpack_pack_str_with_body(&pk, "needed", 6);
	msgpack_pack_double(&pk, why->needed);
	if (why->fit != BUDGET_FIT_UNKNOWN) {
		msgpack_pack_str_with_body(&pk, "fit", 3);
		msgpack_pack_int64(&pk, why->fit);
	}
	c->error_detail.data = (uint8_t *)sb.data;
	c->error_detail.len = sb.size;
}
