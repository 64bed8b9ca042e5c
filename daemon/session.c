/* One client connection: frames in, replies out, output watermarks. */
#include "config.h"

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>

#include "daemon/log.h"
#include "daemon/openllmd.h"

#define SESSION_HIGH_WATERMARK (1024 * 1024)        /* pause transfers above this */
#define SESSION_LOW_WATERMARK (256 * 1024)          /* resume them below this */
#define SESSION_HARD_LIMIT (64 * 1024 * 1024)       /* drop a client this far behind */

static void session_read_cb(struct bufferevent *, void *);
static void session_write_cb(struct bufferevent *, void *);
static void session_event_cb(struct bufferevent *, short, void *);

/* Start serving a freshly accepted client. */
void
session_new(struct server *srv, int fd, uid_t uid, pid_t pid)
{
	struct session *s = calloc(1, sizeof *s);

	if (s == NULL) {
		close(fd);
		return;
	}
	s->server = srv;
	s->uid = uid;
	s->pid = pid;
	TAILQ_INIT(&s->chats);
	frame_reader_init(&s->reader, srv->conf->max_frame);
	s->bev = bufferevent_socket_new(srv->base, fd, BEV_OPT_CLOSE_ON_FREE);
	if (s->bev == NULL) {
		close(fd);
		free(s);
		return;
	}
	bufferevent_setcb(s->bev, session_read_cb, session_write_cb, session_event_cb, s);
	bufferevent_setwatermark(s->bev, EV_WRITE, SESSION_LOW_WATERMARK, 0);
	bufferevent_enable(s->bev, EV_READ | EV_WRITE);
	TAILQ_INSERT_TAIL(&srv->sessions, s, entry);
	srv->n_sessions++;
	log_debug("client pid %d uid %u connected", (int)pid, (unsigned)uid);
}

/* Free a dead session from the loop, once no callback holds it. */
static void
session_free_cb(evutil_socket_t fd, short what, void *arg)
{
	struct session *s = arg;

	(void)fd;
	(void)what;
	frame_reader_clear(&s->reader);
	free(s);
}

/* End a session: cancel its chats (they are still recorded), unlink it, free it later. */
void
session_close(struct session *s)
{
	struct chat *c;

	if (s->dead)
		return;
	s->dead = true;
	while ((c = TAILQ_FIRST(&s->chats)) != NULL)
		chat_cancel(c, "cancelled", "client disconnected");
	TAILQ_REMOVE(&s->server->sessions, s, entry);
	s->server->n_sessions--;
	bufferevent_free(s->bev);
	s->bev = NULL;
	log_debug("client pid %d uid %u disconnected", (int)s->pid, (unsigned)s->uid);
	event_base_once(s->server->base, -1, EV_TIMEOUT, session_free_cb, s, NULL);
	server_check_drained(s->server);
}

void
session_close_all(struct server *srv)
{
	struct session *s;

	while ((s = TAILQ_FIRST(&srv->sessions)) != NULL)
		session_close(s);
}

/* Append one encoded reply to the client's output. */
void
session_send(struct session *s, const struct reply *r)
{
	/* One encode buffer for every reply (the loop is single-threaded). */
	static msgpack_sbuffer sb;

	if (s->dead)
		return;
	sb.size = 0;
	if (message_reply_encode(&sb, r) == 0)
		bufferevent_write(s->bev, sb.data, sb.size);
	else
		log_error("cannot encode a reply for id %llu", (unsigned long long)r->id);
	if (sb.alloc > SESSION_LOW_WATERMARK) {
		/* a large non-stream reply: do not keep its buffer */
		msgpack_sbuffer_destroy(&sb);
		msgpack_sbuffer_init(&sb);
	}
	size_t out = evbuffer_get_length(bufferevent_get_output(s->bev));
	if (out > SESSION_HARD_LIMIT) {
		log_warn("client pid %d is %zu bytes behind; dropping it", (int)s->pid, out);
		session_close(s);
	} else if (out > SESSION_HIGH_WATERMARK)
		s->over_watermark = true;
}

void
session_send_error(struct session *s, uint64_t id, const char *code, const char *fmt, ...)
{
	struct reply r;
	char message[512];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(message, sizeof message, fmt, ap);
	va_end(ap);
	memset(&r, 0, sizeof r);
	r.id = id;
	r.type = REPLY_ERROR;
	r.u.error.code = (char *)code;
	r.u.error.message = message;
	r.u.error.retry_after = NAN;
	r.u.error.status = -1;
	session_send(s, &r);
}

bool
session_over_watermark(const struct session *s)
{
	return s->dead || s->over_watermark;
}

/* Stop reading and close once everything queued has been written. */
void
session_close_after_flush(struct session *s)
{
	bufferevent_disable(s->bev, EV_READ);
	bufferevent_setwatermark(s->bev, EV_WRITE, 0, 0);
	s->over_watermark = true;
	s->closing = true;
	if (evbuffer_get_length(bufferevent_get_output(s->bev)) == 0)
		session_close(s);
}

/* Frames arrive: cut them out, decode, dispatch. */
static void
session_read_cb(struct bufferevent *bev, void *arg)
{
	struct session *s = arg;
	struct evbuffer *in = bufferevent_get_input(bev);
	char cause[256];

	while (!s->dead && !s->closing && evbuffer_get_length(in) > 0) {
		struct evbuffer_iovec v;
		const uint8_t *body;
		size_t used, body_len;

		if (evbuffer_peek(in, -1, NULL, &v, 1) < 1)
			break;
		enum frame_status st = frame_reader_feed(&s->reader, v.iov_base, v.iov_len, &used,
		    &body, &body_len, cause, sizeof cause);
		evbuffer_drain(in, used);
		if (st == FRAME_ERROR) {
			session_send_error(s, 0, s->reader.body_len > s->reader.max_frame ? "too_large" :
			    "bad_frame", "%s", cause);
			session_close_after_flush(s);
			return;
		}
		if (st != FRAME_READY)
			continue;

		struct request *req;
		struct message_error err;
		if (message_request_decode(body, body_len, &req, &err) == -1) {
			session_send_error(s, err.id, err.code, "%s", err.message);
			if (strcmp(err.code, "bad_frame") == 0) {
				session_close_after_flush(s);
				return;
			}
			continue;
		}
		dispatch_request(s, req);
	}
}

/* Output drained below the low watermark: resume paused transfers, or finish closing. */
static void
session_write_cb(struct bufferevent *bev, void *arg)
{
	struct session *s = arg;
	struct chat *c, *next;

	if (s->closing) {
		if (evbuffer_get_length(bufferevent_get_output(bev)) == 0)
			session_close(s);
		return;
	}
	if (!s->over_watermark)
		return;
	s->over_watermark = false;
	for (c = TAILQ_FIRST(&s->chats); c != NULL; c = next) {
		next = TAILQ_NEXT(c, entry);
		chat_resume(c);
		if (s->dead || s->over_watermark)
			break;
	}
}

/* EOF or error on the client socket. */
static void
session_event_cb(struct bufferevent *bev, short what, void *arg)
{
	struct session *s = arg;

	(void)bev;
	if (what & (BEV_EVENT_EOF | BEV_EVENT_ERROR))
		session_close(s);
}
