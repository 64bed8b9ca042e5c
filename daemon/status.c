/* Status frames: tell a waiting chat's client why it waits and for how long. */
#include "config.h"

#include <ctype.h>
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "daemon/http.h"
#include "daemon/limiter.h"
#include "daemon/openllmd.h"

/* Send one status frame, only to a client that asked for them. */
static void
status_send(struct chat *c, const char *state, const char *reason, const char *message,
    double wait_s, int attempt, int of)
{
	struct reply r;

	if (!c->req->u.chat.status)
		return;
	message_reply_init(&r, REPLY_STATUS, 0);
	r.id = c->id;
	r.u.status.state = (char *)state;
	r.u.status.reason = (char *)reason;
	r.u.status.message = (char *)message;
	r.u.status.wait_s = wait_s >= 0 && isfinite(wait_s) ? wait_s : NAN;
	r.u.status.attempt = attempt > 0 ? attempt : -1;
	r.u.status.of = of > 0 ? of : -1;
	c->front->reply(c->owner, c, &r);
}

/* The chat has just entered its upstream's limiter queue. */
void
status_queued(struct chat *c)
{
	const struct upstream_conf *u = &c->upstream->conf;
	struct limiter_stats ls;
	char message[512];
	double wait_s;
	const char *why;

	if (!c->req->u.chat.status)
		return;
	why = limiter_reason(c->upstream->limiter, &c->waiter, now_mono_ms(), &wait_s);
	limiter_stats(c->upstream->limiter, &ls);
	if (strcmp(why, "rpm") == 0)
		snprintf(message, sizeof message, "upstream %s allows %d requests a minute; "
		    "about %.1f s to wait", u->name, u->rpm, wait_s);
	else if (strcmp(why, "tpm") == 0)
		snprintf(message, sizeof message, "upstream %s allows %d tokens a minute; "
		    "about %.1f s to wait", u->name, u->tpm, wait_s);
	else if (strcmp(why, "concurrency") == 0)
		snprintf(message, sizeof message, "upstream %s serves %d requests at a time, "
		    "all taken; %zu waiting", u->name, u->max_concurrency, ls.queued);
	else
		snprintf(message, sizeof message, "upstream %s: %zu requests wait ahead",
		    u->name, ls.queued > 0 ? ls.queued - 1 : 0);
	status_send(c, "queued", why, message, wait_s, 0, 0);
}

/* The chat waits for requests in flight to settle what they hold of a budget. */
void
status_budget_wait(struct chat *c, const char *why, double wait_s)
{
	char message[640];

	snprintf(message, sizeof message, "waiting for requests in flight: %s", why);
	status_send(c, "queued", "budget", message, wait_s, 0, 0);
}

/* The chat will try its upstream again after wait_s: attempt n of the retries allowed. */
void
status_retrying(struct chat *c, const char *reason, const char *why, double wait_s)
{
	char message[512];

	snprintf(message, sizeof message, "retry %d of %d in %.1f s: %s", c->attempt,
	    c->upstream->conf.retries, wait_s, why);
	status_send(c, "retrying", reason, message, wait_s, c->attempt, c->upstream->conf.retries);
}

/* A short cause of a failed transfer: "connection refused", "HTTP 503", ... */
void
status_cause(const struct http_response *resp, long status, char *buf, size_t len)
{
	if (resp->result == CURLE_OK) {
		snprintf(buf, len, "HTTP %ld", status);
		return;
	}
	if (resp->os_errno != 0)
		snprintf(buf, len, "%s", strerror(resp->os_errno));
	else if (resp->result == CURLE_COULDNT_RESOLVE_HOST)
		snprintf(buf, len, "host not found");
	else if (resp->result == CURLE_OPERATION_TIMEDOUT)
		snprintf(buf, len, "timed out");
	else if (resp->result == CURLE_GOT_NOTHING || resp->result == CURLE_RECV_ERROR ||
	    resp->result == CURLE_SEND_ERROR || resp->result == CURLE_PARTIAL_FILE)
		snprintf(buf, len, "connection lost");
	else
		snprintf(buf, len, "%s", curl_easy_strerror(resp->result));
	if (len > 0 && isupper((unsigned char)buf[0]))
		buf[0] = (char)tolower((unsigned char)buf[0]);
}

/*
 * After a connection-level failure: true when retrying cannot help, because
 * the upstream is marked down and no healthy upstream also serves the model.
 */
bool
status_upstream_down(struct chat *c)
{
	struct upstream *alt;
	bool down;

	if (c->upstream->healthy)
		return false;
	alt = upstream_route(c->server, c->model);
	down = alt == NULL || alt == c->upstream || !alt->healthy;
	upstream_release(alt);
	return down;
}
