/* One client connection: frames in, replies out, output watermarks, the msgpack front. */
#include "config.h"

#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>

#include "daemon/fleet.h"
#include "daemon/log.h"
#include "daemon/openllmd.h"

#define SESSION_HIGH_WATERMARK (1024 * 1024)        /* pause transfers above this */
#define SESSION_LOW_WATERMARK (256 * 1024)          /* resume them below this */
#define SESSION_MAX_CHATS 1024                      /* chats in flight on one connection */

static void session_read_cb(evutil_socket_t, short, void *);
static void session_write_cb(struct bufferevent *, void *);
static void session_event_cb(struct bufferevent *, short, void *);
static void session_close_cb(evutil_socket_t, short, void *);
static void session_output_cb(struct evbuffer *, const struct evbuffer_cb_info *, void *);

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
	s->close_ev = event_new(srv->base, -1, 0, session_close_cb, s);
	s->read_ev = event_new(srv->base, fd, EV_READ | EV_PERSIST, session_read_cb, s);
	if (s->bev == NULL || s->close_ev == NULL || s->read_ev == NULL) {
		if (s->read_ev != NULL)
			event_free(s->read_ev);
		if (s->bev != NULL)
			bufferevent_free(s->bev);
		else
			close(fd);
		if (s->close_ev != NULL)
			event_free(s->close_ev);
		free(s);
		return;
	}
	bufferevent_setcb(s->bev, NULL, session_write_cb, session_event_cb, s);
	bufferevent_setwatermark(s->bev, EV_WRITE, SESSION_LOW_WATERMARK, 0);
	evbuffer_add_cb(bufferevent_get_output(s->bev), session_output_cb, s);
	/*
	 * Frames are read by session_read_cb (one read(2) each time, no FIONREAD
	 * first); replies are written by session_flush. The bufferevent writes
	 * only what the socket refused (its write side is on by default).
	 */
	bufferevent_disable(s->bev, EV_READ | EV_WRITE);
	event_add(s->read_ev, NULL);
	TAILQ_INSERT_TAIL(&srv->sessions, s, entry);
	srv->n_sessions++;
	log_debug("client pid %d uid %u connected", (int)pid, (unsigned)uid);
}

/* Keep the server-wide count of bytes waiting in client outputs. */
static void
session_output_cb(struct evbuffer *buf, const struct evbuffer_cb_info *info, void *arg)
{
	struct session *s = arg;

	(void)buf;
	s->server->output_bytes += info->n_added;
	s->server->output_bytes -= info->n_deleted;
}

/* Free a dead session from the loop, once no callback holds it. */
static void
session_free_cb(evutil_socket_t fd, short what, void *arg)
{
	struct session *s = arg;

	(void)fd;
	(void)what;
	frame_reader_clear(&s->reader);
	event_free(s->close_ev);
	free(s);
}

/*
 * End a session now: cancel its chats (they are still recorded), unlink it,
 * free it later. Only for callers that no chat or send of this session is
 * inside: the loop itself (events, close_ev) and shutdown.
 */
void
session_close(struct session *s)
{
	struct evbuffer *out;
	struct chat *c;

	if (s->dead)
		return;
	s->dead = true;
	s->doomed = true;
	event_del(s->close_ev);
	if (s->flush_pending) {
		TAILQ_REMOVE(&s->server->flush_list, s, flush_entry);
		s->flush_pending = false;
	}
	while ((c = TAILQ_FIRST(&s->chats)) != NULL)
		chat_cancel(c, "cancelled", "client disconnected");
	fleet_forget(s->server->fleet, s);
	TAILQ_REMOVE(&s->server->sessions, s, entry);
	s->server->n_sessions--;
	out = bufferevent_get_output(s->bev);
	s->server->output_bytes -= evbuffer_get_length(out);
	evbuffer_remove_cb(out, session_output_cb, s);
	event_free(s->read_ev);         /* before the descriptor is closed */
	s->read_ev = NULL;
	bufferevent_free(s->bev);
	s->bev = NULL;
	log_debug("client pid %d uid %u disconnected", (int)s->pid, (unsigned)s->uid);
	event_base_once(s->server->base, -1, EV_TIMEOUT, session_free_cb, s, NULL);
	server_check_drained(s->server);
}

static void
session_close_cb(evutil_socket_t fd, short what, void *arg)
{
	(void)fd;
	(void)what;
	session_close(arg);
}

/* Close from the loop, soon: safe from inside a send or a chat callback. */
void
session_close_soon(struct session *s)
{
	if (s->dead || s->doomed)
		return;
	s->doomed = true;
	s->over_watermark = true;   /* no transfer delivers to it any more */
	event_del(s->read_ev);
	event_active(s->close_ev, EV_TIMEOUT, 1);
}

void
session_close_all(struct server *srv)
{
	struct session *s;

	while ((s = TAILQ_FIRST(&srv->sessions)) != NULL)
		session_close(s);
}

/* Have the output written before the loop sleeps, unless the bufferevent is already at it. */
static void
session_flush_soon(struct session *s)
{
	if (s->flush_pending || s->write_armed)
		return;
	s->flush_pending = true;
	TAILQ_INSERT_TAIL(&s->server->flush_list, s, flush_entry);
	server_flush_soon(s->server);
}

/*
 * Append one encoded reply to the client's output, to be written at the end
 * of the loop pass; a client too far behind is dropped soon.
 */
void
session_send(struct session *s, const struct reply *r)
{
	/* One encode buffer for every reply (the loop is single-threaded). */
	static msgpack_sbuffer sb;
	const struct conf *conf = s->server->conf;

	if (s->dead || s->doomed)
		return;
	sb.size = 0;
	if (message_reply_encode(&sb, r) == 0) {
		bufferevent_write(s->bev, sb.data, sb.size);
		session_flush_soon(s);
	} else
		log_error("cannot encode a reply for id %llu", (unsigned long long)r->id);
	if (sb.alloc > SESSION_LOW_WATERMARK) {
		/* a large non-stream reply: do not keep its buffer */
		msgpack_sbuffer_destroy(&sb);
		msgpack_sbuffer_init(&sb);
	}
	size_t out = evbuffer_get_length(bufferevent_get_output(s->bev));
	if (out > conf->max_output_per_client) {
		log_warn("client pid %d uid %u is %zu bytes behind; dropping it", (int)s->pid,
		    (unsigned)s->uid, out);
		session_close_soon(s);
	} else if (conf->max_output_total > 0 && s->server->output_bytes > conf->max_output_total &&
	    out > SESSION_HIGH_WATERMARK) {
		log_warn("clients hold %zu bytes of output (max_output_total %zu); dropping client "
		    "pid %d uid %u, %zu bytes behind", s->server->output_bytes, conf->max_output_total,
		    (int)s->pid, (unsigned)s->uid, out);
		session_close_soon(s);
	} else if (out > SESSION_HIGH_WATERMARK ||
	    (conf->max_output_total > 0 && s->server->output_bytes > conf->max_output_total))
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

/* Stop reading and close once everything queued has been written. */
void
session_close_after_flush(struct session *s)
{
	if (s->dead || s->doomed)
		return;
	event_del(s->read_ev);      /* reading and the partial-frame timeout */
	bufferevent_setwatermark(s->bev, EV_WRITE, 0, 0);
	s->over_watermark = true;
	s->closing = true;
	if (evbuffer_get_length(bufferevent_get_output(s->bev)) == 0)
		session_close_soon(s);
}

/* The msgpack front's side of a chat: replies become frames. */
static void
session_chat_reply(void *owner, struct chat *c, const struct reply *r)
{
	(void)c;
	session_send(owner, r);
}

static bool
session_chat_blocked(void *owner)
{
	const struct session *s = owner;

	return s->dead || s->doomed || s->over_watermark;
}

static void
session_chat_release(void *owner, struct chat *c)
{
	struct session *s = owner;

	TAILQ_REMOVE(&s->chats, c, entry);
	s->n_chats--;
}

static const struct chat_front session_chat_front = {
	session_chat_reply, session_chat_blocked, session_chat_release
};

struct chat *
session_find_chat(struct session *s, uint64_t id)
{
	struct chat *c;

	TAILQ_FOREACH(c, &s->chats, entry)
		if (c->id == id)
			return c;
	return NULL;
}

/* A chat request arrived: check what is the connection's to check, then hand it on. */
void
session_start_chat(struct session *s, struct request *req)
{
	struct chat *c;

	if (s->server->draining)
		session_send_error(s, req->id, "upstream_unavailable", "openllmd is shutting down");
	else if (s->n_chats >= SESSION_MAX_CHATS)
		session_send_error(s, req->id, "rate_limited",
		    "too many chats in flight on one connection (at most %d)", SESSION_MAX_CHATS);
	else if (session_find_chat(s, req->id) != NULL)
		session_send_error(s, req->id, "bad_request",
		    "id %llu is already in flight on this connection", (unsigned long long)req->id);
	else if ((c = chat_new(s->server, &session_chat_front, s, (uint32_t)s->uid, NULL, req)) == NULL)
		session_send_error(s, req->id, "internal", "out of memory");
	else {
		TAILQ_INSERT_TAIL(&s->chats, c, entry);
		s->n_chats++;
		chat_start(c);
		return;
	}
	message_request_free(req);
}

/* Arm the partial-frame timeout while a frame is half read, disarm it otherwise. */
static void
session_arm_frame_timeout(struct session *s)
{
	const struct frame_reader *r = &s->reader;
	double t = s->server->conf->frame_timeout;
	bool partial = r->header_have > 0 &&
	    !(r->header_have == FRAME_HEADER_LEN && r->body_have == r->body_len);

	if (partial && t > 0 && !s->frame_timer_armed) {
		struct timeval tv = { (time_t)t, (suseconds_t)((t - (double)(time_t)t) * 1e6) };
		event_add(s->read_ev, &tv);
		s->frame_timer_armed = true;
	} else if (!partial && s->frame_timer_armed) {
		event_add(s->read_ev, NULL);
		s->frame_timer_armed = false;
	}
}

/* A frame was begun and nothing more came for frame_timeout. */
static void
session_frame_timeout(struct session *s)
{
	log_warn("client pid %d uid %u sent part of a frame and nothing for %.0fs; closing it",
	    (int)s->pid, (unsigned)s->uid, s->server->conf->frame_timeout);
	session_send_error(s, 0, "timeout", "no byte of the rest of a frame for %.0fs "
	    "(frame_timeout)", s->server->conf->frame_timeout);
	session_close_after_flush(s);
}

/* Frames arrive: read what is there, cut it into frames, decode, dispatch. */
static void
session_read_cb(evutil_socket_t fd, short what, void *arg)
{
	struct session *s = arg;
	/* one buffer for every session (the loop is single-threaded); frames are copied out */
	static uint8_t buf[65536];
	char cause[256];
	ssize_t n;
	size_t off = 0;

	if (what & EV_TIMEOUT) {
		session_frame_timeout(s);
		return;
	}
	do
		n = read(fd, buf, sizeof buf);
	while (n == -1 && errno == EINTR);
	if (n == -1 && (errno == EAGAIN || errno == EWOULDBLOCK))
		return;
	if (n <= 0) {
		if (n == -1)
			log_debug("client pid %d uid %u: read: %s", (int)s->pid, (unsigned)s->uid,
			    strerror(errno));
		session_close(s);       /* from the loop: no chat or send is inside */
		return;
	}
	while (!s->dead && !s->doomed && !s->closing && off < (size_t)n) {
		const uint8_t *body;
		size_t used, body_len;

		enum frame_status st = frame_reader_feed(&s->reader, buf + off, (size_t)n - off, &used,
		    &body, &body_len, cause, sizeof cause);
		off += used;
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
	if (!s->dead && !s->doomed && !s->closing)
		session_arm_frame_timeout(s);
}

/* Output drained below the low watermark: resume paused transfers, or finish closing. */
static void
session_drained(struct session *s)
{
	struct chat *c, *next;

	if (s->doomed)
		return;
	if (s->closing) {
		if (evbuffer_get_length(bufferevent_get_output(s->bev)) == 0)
			session_close_soon(s);
		return;
	}
	if (!s->over_watermark)
		return;
	s->over_watermark = false;
	for (c = TAILQ_FIRST(&s->chats); c != NULL; c = next) {
		next = TAILQ_NEXT(c, entry);
		chat_resume(c);
		if (s->doomed || s->over_watermark)
			break;
	}
}

/*
 * The bufferevent wrote what the socket had refused (down to the low
 * watermark). Once all is out, writing goes back to session_flush, so a
 * reply costs no epoll_ctl and no extra loop pass.
 */
static void
session_write_cb(struct bufferevent *bev, void *arg)
{
	struct session *s = arg;

	if (s->write_armed && evbuffer_get_length(bufferevent_get_output(bev)) == 0) {
		bufferevent_disable(bev, EV_WRITE);
		s->write_armed = false;
	}
	session_drained(s);
}

/*
 * Write a session's output now, straight to the socket, as the loop is
 * about to sleep; what the socket refuses is left to the bufferevent, which
 * arms the write event (Redis's beforeSleep and handleClientsWithPendingWrites).
 */
static void
session_flush(struct session *s)
{
	struct evbuffer *out;
	int n, err;

	if (s->dead || s->doomed || s->write_armed)
		return;
	out = bufferevent_get_output(s->bev);
	if (evbuffer_get_length(out) > 0) {
		/* the bufferevent keeps the front of its output frozen between its own writes */
		evbuffer_unfreeze(out, 1);
		n = evbuffer_write(out, bufferevent_getfd(s->bev));
		err = errno;
		evbuffer_freeze(out, 1);
		if (n == -1 && err != EAGAIN && err != EWOULDBLOCK && err != EINTR) {
			log_debug("client pid %d uid %u: write: %s", (int)s->pid, (unsigned)s->uid,
			    strerror(err));
			session_close_soon(s);
			return;
		}
		if (evbuffer_get_length(out) > 0) {
			s->write_armed = true;
			bufferevent_enable(s->bev, EV_WRITE);
			return;
		}
	}
	session_drained(s);
}

/* Write the output of every session that has some (server_flush). */
void
session_flush_all(struct server *srv)
{
	struct session *s;

	while ((s = TAILQ_FIRST(&srv->flush_list)) != NULL) {
		TAILQ_REMOVE(&srv->flush_list, s, flush_entry);
		s->flush_pending = false;
		session_flush(s);
	}
}

/* An error writing to the client socket. */
static void
session_event_cb(struct bufferevent *bev, short what, void *arg)
{
	struct session *s = arg;

	(void)bev;
	if (what & (BEV_EVENT_EOF | BEV_EVENT_ERROR))
		session_close(s);
}
