/* libollm.c: the client library: one blocking connection to openllmd. */
#include "config.h"

#include <sys/types.h>
#include <sys/socket.h>
#include <sys/un.h>

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <math.h>
#include <poll.h>
#include <pwd.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <msgpack.h>

#include "client/ollm.h"
#include "client/sockpath.h"
#include "protocol/frame.h"
#include "protocol/message.h"

#define OLLM_READ_CHUNK 65536
#define OLLM_CANCEL_ANY UINT64_MAX
#define OLLM_SERVICE_USER "openllm"     /* the user the packaged daemon runs as */

/*
 * One connection. Only the thread inside a call touches the socket, the
 * reader and the error. ollm_cancel (any thread, or a signal handler) only
 * stores cancel_target and writes a byte to the wake pipe; the thread that
 * waits for a frame sees the byte and sends the cancel itself, so frames are
 * never written from two threads.
 */
struct ollm {
	int fd;                         /* -1 when not connected */
	int wake[2];                    /* self-pipe that ollm_cancel writes */
	int timeout_ms;
	uint64_t next_id;
	uint64_t cur_id;                /* the request being waited for, 0 none */
	enum message_op cur_op;
	int cancel_sent;                /* a cancel for cur_id went out */
	_Atomic uint64_t cancel_target; /* 0 none, OLLM_CANCEL_ANY: cur_id */
	struct frame_reader fr;
	size_t rpos, rlen;              /* unread input in rbuf */
	char path[sizeof ((struct sockaddr_un *)0)->sun_path];
	struct ollm_error err;
	ollm_status_cb status_cb;       /* NULL: no status frames are asked for */
	void *status_arg;
	uint8_t rbuf[OLLM_READ_CHUNK];
};

static const struct {
	const char *name;               /* the daemon's code */
	enum ollm_err code;
	const char *text;
} ollm_errors[] = {
	{ "ok", OLLM_OK, "success" },
	{ "unavailable", OLLM_ERR_UNAVAILABLE, "daemon unavailable" },
	{ "bad_request", OLLM_ERR_BAD_REQUEST, "bad request" },
	{ "budget_exceeded", OLLM_ERR_BUDGET_EXCEEDED, "budget exceeded" },
	{ "rate_limited", OLLM_ERR_RATE_LIMITED, "rate limited" },
	{ "upstream_error", OLLM_ERR_UPSTREAM_ERROR, "model server error" },
	{ "upstream_unavailable", OLLM_ERR_UPSTREAM_UNAVAILABLE, "model server unavailable" },
	{ "timeout", OLLM_ERR_TIMEOUT, "timed out" },
	{ "cancelled", OLLM_ERR_CANCELLED, "cancelled" },
	{ "forbidden", OLLM_ERR_FORBIDDEN, "forbidden" },
	{ "unknown_model", OLLM_ERR_UNKNOWN_MODEL, "unknown model" },
	{ "too_large", OLLM_ERR_TOO_LARGE, "request too large" },
	{ "internal", OLLM_ERR_INTERNAL, "internal daemon error" },
	{ "io", OLLM_ERR_IO, "connection error" },
	{ "protocol", OLLM_ERR_PROTOCOL, "protocol error" },
	{ "unsupported", OLLM_ERR_UNSUPPORTED, "not supported by the daemon" },
	{ "invalid", OLLM_ERR_INVALID, "invalid argument" },
	{ "nomem", OLLM_ERR_NOMEM, "out of memory" },
	{ "untrusted", OLLM_ERR_UNTRUSTED, "daemon not trusted" },
	{ "fleet_unavailable", OLLM_ERR_FLEET_UNAVAILABLE, "fleet database unavailable" },
	/* Daemon codes that map onto the ones above. */
	{ "bad_frame", OLLM_ERR_PROTOCOL, NULL },
	{ "unknown_op", OLLM_ERR_UNSUPPORTED, NULL },
	{ "unsupported_version", OLLM_ERR_UNSUPPORTED, NULL },
};
#define OLLM_NERRORS (sizeof ollm_errors / sizeof ollm_errors[0])

/* Short description of an error code. */
const char *
ollm_strerror(int code)
{
	size_t i;

	for (i = 0; i < OLLM_NERRORS; i++) {
		if ((int)ollm_errors[i].code == code && ollm_errors[i].text != NULL)
			return ollm_errors[i].text;
	}
	return "unknown error";
}

/* Name of an error code, as the daemon spells it where it has one. */
const char *
ollm_err_name(int code)
{
	size_t i;

	for (i = 0; i < OLLM_NERRORS; i++) {
		if ((int)ollm_errors[i].code == code && ollm_errors[i].text != NULL)
			return ollm_errors[i].name;
	}
	return "unknown";
}

/* Map the daemon's error code onto ours; unknown codes count as internal. */
static enum ollm_err
ollm_err_parse(const char *name)
{
	size_t i;

	for (i = 0; i < OLLM_NERRORS; i++) {
		if (strcmp(ollm_errors[i].name, name) == 0)
			return ollm_errors[i].code;
	}
	return OLLM_ERR_INTERNAL;
}

/* Record a local failure; returns its code. */
static int __attribute__((format(printf, 3, 4)))
ollm_fail(struct ollm *c, enum ollm_err code, const char *fmt, ...)
{
	va_list ap;

	c->err.code = code;
	c->err.daemon_code[0] = '\0';
	c->err.retry_after = -1;
	c->err.status = -1;
	c->err.detail_json[0] = '\0';
	va_start(ap, fmt);
	vsnprintf(c->err.message, sizeof c->err.message, fmt, ap);
	va_end(ap);
	return code;
}

/* Forget the last failure. */
static void
ollm_ok(struct ollm *c)
{
	c->err.code = OLLM_OK;
	c->err.daemon_code[0] = '\0';
	c->err.message[0] = '\0';
	c->err.retry_after = -1;
	c->err.status = -1;
	c->err.detail_json[0] = '\0';
}

/* Drop the connection; later calls fail until ollm_connect. */
static void
ollm_disconnect(struct ollm *c)
{
	if (c->fd != -1)
		close(c->fd);
	c->fd = -1;
	frame_reader_clear(&c->fr);
	frame_reader_init(&c->fr, FRAME_MAX_DEFAULT);
	c->rpos = c->rlen = 0;
	c->cur_id = 0;
}

/* A new unconnected connection. */
struct ollm *
ollm_new(void)
{
	struct ollm *c;

	if ((c = calloc(1, sizeof *c)) == NULL)
		return NULL;
	if (pipe2(c->wake, O_NONBLOCK | O_CLOEXEC) == -1) {
		free(c);
		return NULL;
	}
	c->fd = -1;
	c->timeout_ms = OLLM_DEFAULT_TIMEOUT_MS;
	c->next_id = 1;
	atomic_init(&c->cancel_target, 0);
	frame_reader_init(&c->fr, FRAME_MAX_DEFAULT);
	ollm_ok(c);
	return c;
}

/* Close and free a connection. */
void
ollm_free(struct ollm *c)
{
	if (c == NULL)
		return;
	if (c->fd != -1)
		close(c->fd);
	close(c->wake[0]);
	close(c->wake[1]);
	frame_reader_clear(&c->fr);
	free(c);
}

/* Set the longest wait for one step. */
void
ollm_set_timeout(struct ollm *c, int timeout_ms)
{
	c->timeout_ms = timeout_ms;
}

/* The last failure. */
const struct ollm_error *
ollm_last_error(const struct ollm *c)
{
	return &c->err;
}

/* Whether the connection is open. */
int
ollm_connected(const struct ollm *c)
{
	return c->fd != -1;
}

/* The path of the last connect. */
const char *
ollm_path(const struct ollm *c)
{
	return c->path;
}

/* Resolve the socket path from the argument and the environment. */
int
ollm_socket_path(const char *path, char *buf, size_t len)
{
	if (sockpath_resolve(path, getenv("OPENLLMD_SOCKET"), geteuid(),
	    getenv("XDG_RUNTIME_DIR"), SOCKPATH_SYSTEM, buf, len) != 0)
		return OLLM_ERR_INVALID;
	return OLLM_OK;
}

/* Milliseconds on the monotonic clock. */
static int64_t
ollm_now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Time left until deadline for poll: -1 for no deadline, else >= 0. */
static int
ollm_poll_timeout(int64_t deadline)
{
	int64_t left;

	if (deadline < 0)
		return -1;
	left = deadline - ollm_now_ms();
	if (left < 0)
		return 0;
	return left > INT32_MAX ? INT32_MAX : (int)left;
}

/* Deadline for one step from now, or -1. */
static int64_t
ollm_deadline(const struct ollm *c)
{
	return c->timeout_ms > 0 ? ollm_now_ms() + c->timeout_ms : -1;
}

/* Whether a daemon running as uid may be told our prompts: root, us, or the service user. */
static int
ollm_peer_trusted(uid_t uid)
{
	struct passwd pw, *found = NULL;
	char buf[1024];

	if (uid == 0 || uid == geteuid())
		return 1;
	if (getpwnam_r(OLLM_SERVICE_USER, &pw, buf, sizeof buf, &found) == 0 && found != NULL)
		return found->pw_uid == uid;
	return 0;
}

/* Check who answers on the connected socket fd; OLLM_OK or OLLM_ERR_UNTRUSTED. */
static int
ollm_check_peer(struct ollm *c, int fd)
{
	struct ucred cred;
	socklen_t len = sizeof cred;

	if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &len) == -1)
		return ollm_fail(c, OLLM_ERR_UNTRUSTED, "%s: cannot tell who answers there: %s",
		    c->path, strerror(errno));
	if (!ollm_peer_trusted(cred.uid))
		return ollm_fail(c, OLLM_ERR_UNTRUSTED, "refusing the daemon on %s: it runs as uid "
		    "%u, which is neither root, you (uid %u), nor the service user %s",
		    c->path, (unsigned)cred.uid, (unsigned)geteuid(), OLLM_SERVICE_USER);
	return OLLM_OK;
}

/* Connect to the daemon's socket, then check who answers before anything is sent. */
int
ollm_connect(struct ollm *c, const char *path)
{
	char cause[256];
	struct sockaddr_un sun;
	struct pollfd pfd;
	socklen_t sl;
	int64_t deadline;
	int fd, r, e;

	if (c == NULL)
		return OLLM_ERR_INVALID;
	ollm_disconnect(c);
	ollm_ok(c);
	if (ollm_socket_path(path, c->path, sizeof c->path) != OLLM_OK) {
		c->path[0] = '\0';
		return ollm_fail(c, OLLM_ERR_INVALID, "socket path too long");
	}
	if (sockpath_check_private(c->path, geteuid(), 0, cause, sizeof cause) == -1)
		return ollm_fail(c, OLLM_ERR_UNTRUSTED, "refusing %s: %s", c->path, cause);
	memset(&sun, 0, sizeof sun);
	sun.sun_family = AF_UNIX;
	memcpy(sun.sun_path, c->path, strlen(c->path) + 1);

	fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (fd == -1)
		return ollm_fail(c, OLLM_ERR_IO, "socket: %s", strerror(errno));
	deadline = ollm_deadline(c);
	for (;;) {
		if (connect(fd, (struct sockaddr *)&sun, sizeof sun) == 0)
			break;
		e = errno;
		if (e == EINTR)
			continue;
		if (e == EAGAIN) {
			/* The listen backlog is full: try again shortly. */
			if (deadline >= 0 && ollm_now_ms() >= deadline)
				goto timeout;
			poll(NULL, 0, 10);
			continue;
		}
		if (e == EINPROGRESS) {
			pfd.fd = fd;
			pfd.events = POLLOUT;
			r = poll(&pfd, 1, ollm_poll_timeout(deadline));
			if (r == -1 && errno == EINTR)
				continue;
			if (r == 0)
				goto timeout;
			sl = sizeof e;
			if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &e, &sl) == -1)
				e = errno;
			if (e == 0)
				break;
		}
		close(fd);
		if (e == EACCES || e == EPERM) {
			return ollm_fail(c, OLLM_ERR_FORBIDDEN, "cannot connect to %s: %s",
			    c->path, strerror(e));
		}
		return ollm_fail(c, OLLM_ERR_UNAVAILABLE, "cannot connect to %s: %s",
		    c->path, strerror(e));
	}
	if ((r = ollm_check_peer(c, fd)) != OLLM_OK) {
		close(fd);
		return r;
	}
	c->fd = fd;
	c->next_id = 1;
	return OLLM_OK;

timeout:
	close(fd);
	return ollm_fail(c, OLLM_ERR_UNAVAILABLE, "cannot connect to %s: timed out",
	    c->path);
}

static int ollm_fail_reply(struct ollm *, const struct error_reply *);

/*
 * The daemon hung up while we wrote (err: EPIPE or ECONNRESET). A daemon that
 * turns a connection away writes one error with id 0 first: report that when
 * it is waiting to be read, else the failed send. Closes the connection.
 */
static int
ollm_hangup(struct ollm *c, int err)
{
	uint8_t buf[4096];
	struct message_error merr;
	struct reply *rp;
	ssize_t n;
	uint32_t blen;
	int r;

	n = c->rlen == 0 ? recv(c->fd, buf, sizeof buf, MSG_DONTWAIT) : -1;
	if (n >= 4) {
		blen = (uint32_t)buf[0] << 24 | (uint32_t)buf[1] << 16 | (uint32_t)buf[2] << 8 | buf[3];
		if (blen > 0 && blen <= (size_t)n - 4 &&
		    message_reply_decode(buf + 4, blen, OP_PING, &rp, &merr) == 0) {
			if (rp->id == 0 && rp->type == REPLY_ERROR) {
				r = ollm_fail_reply(c, &rp->u.error);
				message_reply_free(rp);
				ollm_disconnect(c);
				return r;
			}
			message_reply_free(rp);
		}
	}
	ollm_disconnect(c);
	return ollm_fail(c, OLLM_ERR_IO, "send to %s: %s", c->path, strerror(err));
}

/* Write all of buf, waiting at most the timeout for the socket each time. */
static int
ollm_send(struct ollm *c, const void *buf, size_t len)
{
	const char *p = buf;
	struct pollfd pfd;
	ssize_t n;
	int r;

	while (len > 0) {
		n = send(c->fd, p, len, MSG_NOSIGNAL);
		if (n > 0) {
			p += n;
			len -= (size_t)n;
			continue;
		}
		if (n == -1 && errno == EINTR)
			continue;
		if (n == -1 && errno == EAGAIN) {
			pfd.fd = c->fd;
			pfd.events = POLLOUT;
			r = poll(&pfd, 1, c->timeout_ms > 0 ? c->timeout_ms : -1);
			if (r == -1 && errno == EINTR)
				continue;
			if (r == 0) {
				ollm_disconnect(c);
				return ollm_fail(c, OLLM_ERR_TIMEOUT,
				    "the daemon did not read the request within %d ms",
				    c->timeout_ms);
			}
			continue;
		}
		r = errno;
		if (r == EPIPE || r == ECONNRESET)
			return ollm_hangup(c, r);
		ollm_disconnect(c);
		return ollm_fail(c, OLLM_ERR_IO, "send to %s: %s", c->path, strerror(r));
	}
	return OLLM_OK;
}

/* Encode and send one request. */
static int
ollm_send_request(struct ollm *c, const struct request *rq)
{
	msgpack_sbuffer sb;
	int r;

	msgpack_sbuffer_init(&sb);
	if (message_request_encode(&sb, rq) != 0) {
		msgpack_sbuffer_destroy(&sb);
		return ollm_fail(c, OLLM_ERR_INVALID,
		    "cannot encode the request (a string that is not UTF-8, or out of memory)");
	}
	r = ollm_send(c, sb.data, sb.size);
	msgpack_sbuffer_destroy(&sb);
	return r;
}

/* Send a cancel for the request in flight, once. */
static int
ollm_send_cancel(struct ollm *c)
{
	struct request rq;

	if (c->cancel_sent || c->cur_id == 0 || c->cur_op != OP_CHAT)
		return OLLM_OK;
	c->cancel_sent = 1;
	message_request_init(&rq, OP_CANCEL);
	rq.id = c->next_id++;
	rq.u.cancel_target = c->cur_id;
	return ollm_send_request(c, &rq);
}

/* Ask for the request in flight to be cancelled (async-signal-safe). */
void
ollm_cancel(struct ollm *c, uint64_t id)
{
	int saved = errno;
	ssize_t n;

	atomic_store(&c->cancel_target, id == 0 ? OLLM_CANCEL_ANY : id);
	do {
		n = write(c->wake[1], "", 1);
	} while (n == -1 && errno == EINTR);
	errno = saved;
}

/* Empty the wake pipe and act on a pending cancel. */
static int
ollm_woken(struct ollm *c)
{
	char buf[64];
	uint64_t t;

	while (read(c->wake[0], buf, sizeof buf) > 0)
		;
	t = atomic_exchange(&c->cancel_target, 0);
	if (t != 0 && (t == OLLM_CANCEL_ANY || t == c->cur_id))
		return ollm_send_cancel(c);
	return OLLM_OK;
}

/*
 * Wait for the next whole frame. *body points into the reader and is valid
 * until the next call. Any failure closes the connection.
 */
static int
ollm_read_frame(struct ollm *c, const uint8_t **body, size_t *len)
{
	struct pollfd pfd[2];
	enum frame_status fs;
	char cause[128];
	size_t used;
	ssize_t n;
	int64_t deadline;
	int r;

	deadline = ollm_deadline(c);
	for (;;) {
		while (c->rpos < c->rlen) {
			fs = frame_reader_feed(&c->fr, c->rbuf + c->rpos,
			    c->rlen - c->rpos, &used, body, len, cause, sizeof cause);
			c->rpos += used;
			if (fs == FRAME_READY)
				return OLLM_OK;
			if (fs == FRAME_ERROR) {
				ollm_disconnect(c);
				return ollm_fail(c, OLLM_ERR_PROTOCOL,
				    "bad frame from the daemon: %s", cause);
			}
		}
		c->rpos = c->rlen = 0;

		pfd[0].fd = c->fd;
		pfd[0].events = POLLIN;
		pfd[1].fd = c->wake[0];
		pfd[1].events = POLLIN;
		pfd[0].revents = pfd[1].revents = 0;
		r = poll(pfd, 2, ollm_poll_timeout(deadline));
		if (r == -1) {
			if (errno == EINTR)
				continue;
			r = errno;
			ollm_disconnect(c);
			return ollm_fail(c, OLLM_ERR_IO, "poll: %s", strerror(r));
		}
		if (r == 0) {
			ollm_disconnect(c);
			return ollm_fail(c, OLLM_ERR_TIMEOUT,
			    "no reply from the daemon within %d ms", c->timeout_ms);
		}
		if (pfd[1].revents & POLLIN) {
			if ((r = ollm_woken(c)) != OLLM_OK)
				return r;
		}
		if (pfd[0].revents & (POLLIN | POLLHUP | POLLERR)) {
			n = recv(c->fd, c->rbuf, sizeof c->rbuf, 0);
			if (n == -1 && (errno == EINTR || errno == EAGAIN))
				continue;
			if (n <= 0) {
				r = n == 0 ? 0 : errno;
				ollm_disconnect(c);
				if (r == 0)
					return ollm_fail(c, OLLM_ERR_IO,
					    "the daemon closed the connection");
				return ollm_fail(c, OLLM_ERR_IO, "recv from %s: %s",
				    c->path, strerror(r));
			}
			c->rlen = (size_t)n;
		}
	}
}

/* Write a msgpack object as JSON text. */
static void
ollm_json_object(FILE *f, const msgpack_object *o)
{
	const unsigned char *s;
	uint32_t i;
	int first = 1;

	switch (o->type) {
	case MSGPACK_OBJECT_NIL:
		fputs("null", f);
		break;
	case MSGPACK_OBJECT_BOOLEAN:
		fputs(o->via.boolean ? "true" : "false", f);
		break;
	case MSGPACK_OBJECT_POSITIVE_INTEGER:
		fprintf(f, "%" PRIu64, o->via.u64);
		break;
	case MSGPACK_OBJECT_NEGATIVE_INTEGER:
		fprintf(f, "%" PRId64, o->via.i64);
		break;
	case MSGPACK_OBJECT_FLOAT32:
	case MSGPACK_OBJECT_FLOAT64:
		if (isfinite(o->via.f64))
			fprintf(f, "%.17g", o->via.f64);
		else
			fputs("null", f);
		break;
	case MSGPACK_OBJECT_STR:
		fputc('"', f);
		s = (const unsigned char *)o->via.str.ptr;
		for (i = 0; i < o->via.str.size; i++) {
			if (s[i] == '"' || s[i] == '\\')
				fprintf(f, "\\%c", s[i]);
			else if (s[i] == '\n')
				fputs("\\n", f);
			else if (s[i] == '\t')
				fputs("\\t", f);
			else if (s[i] == '\r')
				fputs("\\r", f);
			else if (s[i] < 0x20)
				fprintf(f, "\\u%04x", s[i]);
			else
				fputc(s[i], f);
		}
		fputc('"', f);
		break;
	case MSGPACK_OBJECT_ARRAY:
		fputc('[', f);
		for (i = 0; i < o->via.array.size; i++) {
			if (i > 0)
				fputc(',', f);
			ollm_json_object(f, &o->via.array.ptr[i]);
		}
		fputc(']', f);
		break;
	case MSGPACK_OBJECT_MAP:
		fputc('{', f);
		for (i = 0; i < o->via.map.size; i++) {
			if (o->via.map.ptr[i].key.type != MSGPACK_OBJECT_STR)
				continue;
			if (!first)
				fputc(',', f);
			first = 0;
			ollm_json_object(f, &o->via.map.ptr[i].key);
			fputc(':', f);
			ollm_json_object(f, &o->via.map.ptr[i].val);
		}
		fputc('}', f);
		break;
	default:
		/* bin and ext never reach a client: the decoder refuses them. */
		fputs("null", f);
		break;
	}
}

/* JSON text of a raw msgpack value, or NULL when absent or out of memory. */
static char *
ollm_json(const struct message_raw *raw)
{
	msgpack_unpacked up;
	size_t off = 0, size;
	char *out = NULL;
	FILE *f;

	if (raw->data == NULL)
		return NULL;
	msgpack_unpacked_init(&up);
	if (msgpack_unpack_next(&up, (const char *)raw->data, raw->len, &off) !=
	    MSGPACK_UNPACK_SUCCESS) {
		msgpack_unpacked_destroy(&up);
		return NULL;
	}
	if ((f = open_memstream(&out, &size)) != NULL) {
		ollm_json_object(f, &up.data);
		if (ferror(f)) {
			fclose(f);
			free(out);
			out = NULL;
		} else
			fclose(f);
	}
	msgpack_unpacked_destroy(&up);
	return out;
}

/* Hand one delta to the callback; cancel when it says so. */
static int
ollm_deliver(struct ollm *c, const struct delta_reply *d, ollm_delta_cb cb,
    void *arg)
{
	struct ollm_delta od;
	char *json;
	int stop;

	if (cb == NULL)
		return OLLM_OK;
	json = ollm_json(&d->tool_calls);
	od.content = d->content;
	od.reasoning = d->reasoning;
	od.tool_calls_json = json;
	od.tool_calls_raw = d->tool_calls.data;
	od.tool_calls_raw_len = d->tool_calls.len;
	stop = cb(c, c->cur_id, &od, arg);
	free(json);
	if (stop)
		return ollm_send_cancel(c);
	return OLLM_OK;
}

/* Ask for status frames from now on. */
void
ollm_set_status_cb(struct ollm *c, ollm_status_cb cb, void *arg)
{
	c->status_cb = cb;
	c->status_arg = arg;
}

/* Hand a status frame of the chat in flight to the callback. */
static void
ollm_deliver_status(struct ollm *c, const struct status_reply *st)
{
	struct ollm_status os;

	if (c->status_cb == NULL || c->cur_op != OP_CHAT)
		return;
	os.state = st->state;
	os.reason = st->reason;
	os.message = st->message;
	os.wait_s = isnan(st->wait_s) ? -1 : st->wait_s;
	os.attempt = st->attempt > 0 && st->attempt < INT32_MAX ? (int)st->attempt : 0;
	os.of = st->of > 0 && st->of < INT32_MAX ? (int)st->of : 0;
	c->status_cb(c, c->cur_id, &os, c->status_arg);
}

/* Fill the connection's error from an error reply; returns its code. */
static int
ollm_fail_reply(struct ollm *c, const struct error_reply *e)
{
	char *json;

	c->err.code = ollm_err_parse(e->code);
	snprintf(c->err.daemon_code, sizeof c->err.daemon_code, "%s", e->code);
	snprintf(c->err.message, sizeof c->err.message, "%s",
	    e->message != NULL && *e->message != '\0' ? e->message :
	    ollm_strerror(c->err.code));
	c->err.retry_after = isnan(e->retry_after) ? -1 : e->retry_after;
	c->err.status = e->status >= 0 && e->status <= 999 ? (int)e->status : -1;
	c->err.detail_json[0] = '\0';
	if (e->detail.len > 0 && (json = ollm_json(&e->detail)) != NULL) {
		if (strlen(json) < sizeof c->err.detail_json)
			memcpy(c->err.detail_json, json, strlen(json) + 1);
		free(json);
	}
	return c->err.code;
}

/*
 * Send a request and wait for its end: deltas go to cb, and on success *out
 * is the done or result reply (the caller frees it).
 */
static int
ollm_roundtrip(struct ollm *c, struct request *rq, ollm_delta_cb cb, void *arg,
    struct reply **out)
{
	struct message_error merr;
	struct reply *rp;
	const uint8_t *body;
	size_t len;
	int r;

	*out = NULL;
	if (c->fd == -1)
		return ollm_fail(c, OLLM_ERR_IO, "not connected");
	ollm_ok(c);
	/* A cancel that came before this request is not for it. */
	ollm_woken(c);
	rq->id = c->next_id++;
	c->cur_id = rq->id;
	c->cur_op = rq->op;
	c->cancel_sent = 0;
	if ((r = ollm_send_request(c, rq)) != OLLM_OK)
		goto out;

	for (;;) {
		if ((r = ollm_read_frame(c, &body, &len)) != OLLM_OK)
			goto out;
		if (message_reply_decode(body, len, c->cur_op, &rp, &merr) != 0) {
			if (merr.id != 0 && merr.id != c->cur_id)
				continue;       /* not ours: an earlier cancel's answer */
			if (merr.unknown_type)
				continue;       /* a newer reply type: skipped */
			r = strcmp(merr.code, "internal") == 0 ? OLLM_ERR_NOMEM :
			    OLLM_ERR_PROTOCOL;
			ollm_disconnect(c);
			r = ollm_fail(c, r, "unreadable reply from the daemon: %s",
			    merr.message);
			goto out;
		}
		if (rp->id == 0 && rp->type == REPLY_ERROR) {
			/*
			 * The daemon hangs up: it could not read our frame, or it
			 * turned the connection away (too many connections, shutting down).
			 */
			r = ollm_fail_reply(c, &rp->u.error);
			if (r != OLLM_ERR_TOO_LARGE && r != OLLM_ERR_RATE_LIMITED &&
			    r != OLLM_ERR_UPSTREAM_UNAVAILABLE)
				c->err.code = r = OLLM_ERR_PROTOCOL;
			message_reply_free(rp);
			ollm_disconnect(c);
			goto out;
		}
		if (rp->id != c->cur_id) {
			message_reply_free(rp);
			continue;
		}
		switch (rp->type) {
		case REPLY_DELTA:
			if (c->cur_op != OP_CHAT) {
				message_reply_free(rp);
				ollm_disconnect(c);
				r = ollm_fail(c, OLLM_ERR_PROTOCOL,
				    "delta for a request that is not a chat");
				goto out;
			}
			r = ollm_deliver(c, &rp->u.delta, cb, arg);
			message_reply_free(rp);
			if (r != OLLM_OK)
				goto out;
			continue;
		case REPLY_STATUS:
			ollm_deliver_status(c, &rp->u.status);
			message_reply_free(rp);
			continue;
		case REPLY_ERROR:
			r = ollm_fail_reply(c, &rp->u.error);
			message_reply_free(rp);
			goto out;
		case REPLY_DONE:
		case REPLY_RESULT:
			if ((rp->type == REPLY_DONE) != (c->cur_op == OP_CHAT)) {
				message_reply_free(rp);
				ollm_disconnect(c);
				r = ollm_fail(c, OLLM_ERR_PROTOCOL,
				    "reply type does not fit the request");
				goto out;
			}
			*out = rp;
			r = OLLM_OK;
			goto out;
		}
	}
out:
	c->cur_id = 0;
	return r;
}

/* Steal a string out of a decoded reply. */
static char *
ollm_take(char **p)
{
	char *s = *p;

	*p = NULL;
	return s;
}

/* Check that every string of a message list can be sent. */
static int
ollm_check_messages(struct ollm *c, const struct ollm_message *m, size_t n)
{
	size_t i;

	if (m == NULL || n == 0)
		return ollm_fail(c, OLLM_ERR_INVALID, "no messages");
	for (i = 0; i < n; i++) {
		if (m[i].role == NULL || *m[i].role == '\0')
			return ollm_fail(c, OLLM_ERR_INVALID, "messages[%zu]: no role", i);
		if (m[i].content != NULL && !message_utf8_valid(m[i].content,
		    message_text_len(m[i].content, m[i].content_len)))
			return ollm_fail(c, OLLM_ERR_INVALID,
			    "messages[%zu]: the text is not valid UTF-8", i);
	}
	return OLLM_OK;
}

/* Copy a message list into the protocol's shape (strings are shared). */
static struct chat_message *
ollm_messages(const struct ollm_message *m, size_t n)
{
	struct chat_message *cm;
	size_t i;

	if ((cm = calloc(n, sizeof *cm)) == NULL)
		return NULL;
	for (i = 0; i < n; i++) {
		cm[i].role = (char *)m[i].role;
		cm[i].content = (char *)m[i].content;
		cm[i].content_len = m[i].content_len;
		cm[i].name = (char *)m[i].name;
	}
	return cm;
}

/* Default chat options. */
void
ollm_chat_opts_init(struct ollm_chat_opts *o)
{
	memset(o, 0, sizeof *o);
	o->stream = 1;
	o->temperature = -1;
	o->top_p = -1;
}

/* Release what a done holds. */
void
ollm_done_clear(struct ollm_done *d)
{
	if (d == NULL)
		return;
	free(d->finish_reason);
	free(d->model);
	free(d->upstream);
	free(d->content);
	free(d->reasoning);
	free(d->tool_calls_json);
	memset(d, 0, sizeof *d);
	d->ttft_ms = d->latency_ms = -1;
	d->max_tokens = d->max_tokens_asked = -1;
	d->durable = 1;
}

/* One chat: send the conversation, stream deltas to cb, fill done. */
int
ollm_chat(struct ollm *c, const struct ollm_message *msgs, size_t n_msgs,
    const struct ollm_chat_opts *opts, ollm_delta_cb cb, void *arg,
    struct ollm_done *done)
{
	struct ollm_chat_opts defaults;
	struct request rq;
	struct chat_request *cr;
	struct done_reply *d;
	struct reply *rp;
	int r;

	if (c == NULL)
		return OLLM_ERR_INVALID;
	if (done != NULL) {
		memset(done, 0, sizeof *done);
		done->ttft_ms = done->latency_ms = -1;
		done->max_tokens = done->max_tokens_asked = -1;
		done->durable = 1;
	}
	if (opts == NULL) {
		ollm_chat_opts_init(&defaults);
		opts = &defaults;
	}
	if ((r = ollm_check_messages(c, msgs, n_msgs)) != OLLM_OK)
		return r;
	message_request_init(&rq, OP_CHAT);
	cr = &rq.u.chat;
	if ((cr->messages = ollm_messages(msgs, n_msgs)) == NULL)
		return ollm_fail(c, OLLM_ERR_NOMEM, "out of memory");
	cr->n_messages = n_msgs;
	cr->model = (char *)opts->model;
	cr->tag = (char *)opts->tag;
	cr->stream = opts->stream != 0;
	cr->max_tokens = opts->max_tokens > 0 ? opts->max_tokens : -1;
	cr->temperature = opts->temperature >= 0 ? opts->temperature : NAN;
	cr->top_p = opts->top_p >= 0 ? opts->top_p : NAN;
	cr->stop = (char **)opts->stop;
	cr->n_stop = opts->stop != NULL ? opts->n_stop : 0;
	cr->has_seed = opts->has_seed != 0;
	cr->seed = opts->seed;
	cr->extra.data = (uint8_t *)opts->extra;
	cr->extra.len = opts->extra != NULL ? opts->extra_len : 0;
	cr->status = c->status_cb != NULL;

	r = ollm_roundtrip(c, &rq, cb, arg, &rp);
	free(cr->messages);
	if (r != OLLM_OK)
		return r;
	if (done != NULL) {
		d = &rp->u.done;
		done->finish_reason = ollm_take(&d->finish_reason);
		done->usage.prompt_tokens = d->usage.prompt_tokens;
		done->usage.completion_tokens = d->usage.completion_tokens;
		done->usage.total_tokens = d->usage.total_tokens;
		done->usage.estimated = d->usage.estimated;
		done->cost = d->cost;
		done->model = ollm_take(&d->model);
		done->upstream = ollm_take(&d->upstream);
		done->ttft_ms = d->ttft_ms;
		done->latency_ms = d->latency_ms;
		done->content = ollm_take(&d->content);
		done->reasoning = ollm_take(&d->reasoning);
		done->tool_calls_json = ollm_json(&d->tool_calls);
		done->durable = !d->not_durable;
		done->max_tokens = d->max_tokens;
		done->budget_shrunk = d->budget_shrunk;
		done->max_tokens_asked = d->max_tokens_asked;
		done->cut = d->cut;
	}
	message_reply_free(rp);
	return OLLM_OK;
}

/* Release what a tokens result holds. */
void
ollm_tokens_clear(struct ollm_tokens *t)
{
	if (t == NULL)
		return;
	free(t->encoding);
	free(t->ids);
	memset(t, 0, sizeof *t);
}

/* Count tokens of a text or a conversation. */
int
ollm_tokens(struct ollm *c, const struct ollm_tokens_req *tr, struct ollm_tokens *out)
{
	struct request rq;
	struct tokens_request *q;
	struct tokens_result *t;
	struct reply *rp;
	int r;

	if (c == NULL)
		return OLLM_ERR_INVALID;
	memset(out, 0, sizeof *out);
	if ((tr->text == NULL) == (tr->messages == NULL))
		return ollm_fail(c, OLLM_ERR_INVALID, "give exactly one of text and messages");
	message_request_init(&rq, OP_TOKENS);
	q = &rq.u.tokens;
	if (tr->text != NULL) {
		if (!message_utf8_valid(tr->text, message_text_len(tr->text, tr->text_len)))
			return ollm_fail(c, OLLM_ERR_INVALID, "the text is not valid UTF-8");
		q->text = (char *)tr->text;
		q->text_len = tr->text_len;
	} else {
		if ((r = ollm_check_messages(c, tr->messages, tr->n_messages)) != OLLM_OK)
			return r;
		if ((q->messages = ollm_messages(tr->messages, tr->n_messages)) == NULL)
			return ollm_fail(c, OLLM_ERR_NOMEM, "out of memory");
		q->n_messages = tr->n_messages;
	}
	q->encoding = (char *)tr->encoding;
	q->model = (char *)tr->model;
	q->ids = tr->ids != 0;

	r = ollm_roundtrip(c, &rq, NULL, NULL, &rp);
	free(q->messages);
	if (r != OLLM_OK)
		return r;
	t = &rp->u.result.u.tokens;
	out->count = t->count;
	out->encoding = ollm_take(&t->encoding);
	out->ids = t->ids;
	out->n_ids = t->n_ids;
	t->ids = NULL;
	t->n_ids = 0;
	message_reply_free(rp);
	return OLLM_OK;
}

/* Copy counters across. */
static void
ollm_counters_copy(struct ollm_counters *dst, const struct counters *src)
{
	dst->requests = src->requests;
	dst->errors = src->errors;
	dst->prompt_tokens = src->prompt_tokens;
	dst->completion_tokens = src->completion_tokens;
	dst->total_tokens = src->total_tokens;
	dst->estimated = src->estimated;
	dst->cost = src->cost;
}

/* Move a counters map across; -1 when out of memory. */
static int
ollm_counters_map_take(struct ollm_counters_map *dst, struct counters_map *src)
{
	size_t i;

	dst->entries = NULL;
	dst->n = 0;
	if (src->n == 0)
		return 0;
	if ((dst->entries = calloc(src->n, sizeof *dst->entries)) == NULL)
		return -1;
	for (i = 0; i < src->n; i++) {
		dst->entries[i].key = ollm_take(&src->entries[i].key);
		ollm_counters_copy(&dst->entries[i].c, &src->entries[i].c);
	}
	dst->n = src->n;
	return 0;
}

/* Release a counters map. */
static void
ollm_counters_map_clear(struct ollm_counters_map *m)
{
	size_t i;

	for (i = 0; i < m->n; i++)
		free(m->entries[i].key);
	free(m->entries);
	m->entries = NULL;
	m->n = 0;
}

/* Release what a stats result holds. */
void
ollm_stats_clear(struct ollm_stats *s)
{
	size_t i;

	if (s == NULL)
		return;
	ollm_counters_map_clear(&s->by_model);
	ollm_counters_map_clear(&s->by_user);
	ollm_counters_map_clear(&s->by_tag);
	ollm_counters_map_clear(&s->by_day);
	ollm_counters_map_clear(&s->by_node);
	for (i = 0; i < s->n_budgets; i++) {
		free(s->budgets[i].scope);
		free(s->budgets[i].unit);
		free(s->budgets[i].period);
	}
	free(s->budgets);
	memset(s, 0, sizeof *s);
}

/* Usage counters of this daemon or the fleet, whole or broken down one way. */
static int
ollm_stats_ask(struct ollm *c, const char *by, int64_t since, bool fleet, struct ollm_stats *out)
{
	struct request rq;
	struct stats_result *s;
	struct reply *rp;
	size_t i;
	int r;

	if (c == NULL)
		return OLLM_ERR_INVALID;
	memset(out, 0, sizeof *out);
	message_request_init(&rq, OP_STATS);
	rq.u.stats.by = (char *)by;
	rq.u.stats.since = since >= 0 ? since : -1;
	rq.u.stats.fleet = fleet;
	if ((r = ollm_roundtrip(c, &rq, NULL, NULL, &rp)) != OLLM_OK)
		return r;
	s = &rp->u.result.u.stats;
	out->since = s->since;
	ollm_counters_copy(&out->total, &s->total);
	out->has_max_budget = !isnan(s->max_budget);
	out->max_budget = out->has_max_budget ? s->max_budget : 0;
	out->budget_left = out->has_max_budget && !isnan(s->budget_left) ?
	    s->budget_left : 0;
	if (ollm_counters_map_take(&out->by_model, &s->by_model) != 0 ||
	    ollm_counters_map_take(&out->by_user, &s->by_user) != 0 ||
	    ollm_counters_map_take(&out->by_tag, &s->by_tag) != 0 ||
	    ollm_counters_map_take(&out->by_day, &s->by_day) != 0 ||
	    ollm_counters_map_take(&out->by_node, &s->by_node) != 0)
		goto nomem;
	if (s->n_budgets > 0) {
		if ((out->budgets = calloc(s->n_budgets, sizeof *out->budgets)) == NULL)
			goto nomem;
		for (i = 0; i < s->n_budgets; i++) {
			out->budgets[i].scope = ollm_take(&s->budgets[i].scope);
			out->budgets[i].unit = ollm_take(&s->budgets[i].unit);
			out->budgets[i].period = ollm_take(&s->budgets[i].period);
			out->budgets[i].limit = s->budgets[i].limit;
			out->budgets[i].used = s->budgets[i].used;
			out->budgets[i].left = s->budgets[i].left;
		}
		out->n_budgets = s->n_budgets;
	}
	message_reply_free(rp);
	return OLLM_OK;

nomem:
	message_reply_free(rp);
	ollm_stats_clear(out);
	return ollm_fail(c, OLLM_ERR_NOMEM, "out of memory");
}

/* Usage counters, whole or broken down one way. */
int
ollm_stats(struct ollm *c, const char *by, int64_t since, struct ollm_stats *out)
{
	return ollm_stats_ask(c, by, since, false, out);
}

/* Usage counters of every node, from the shared database. */
int
ollm_stats_fleet(struct ollm *c, const char *by, int64_t since, struct ollm_stats *out)
{
	return ollm_stats_ask(c, by, since, true, out);
}

/* Release what a models result holds. */
void
ollm_models_clear(struct ollm_models *m)
{
	size_t i, j;

	if (m == NULL)
		return;
	for (i = 0; i < m->n; i++) {
		free(m->upstreams[i].name);
		free(m->upstreams[i].base_url);
		free(m->upstreams[i].model);
		for (j = 0; j < m->upstreams[i].n_models; j++)
			free(m->upstreams[i].models[j]);
		free(m->upstreams[i].models);
	}
	free(m->upstreams);
	memset(m, 0, sizeof *m);
}

/* The daemon's upstreams and the models they serve. */
int
ollm_models(struct ollm *c, struct ollm_models *out)
{
	struct request rq;
	struct models_result *m;
	struct upstream_info *u;
	struct reply *rp;
	size_t i;
	int r;

	if (c == NULL)
		return OLLM_ERR_INVALID;
	memset(out, 0, sizeof *out);
	message_request_init(&rq, OP_MODELS);
	if ((r = ollm_roundtrip(c, &rq, NULL, NULL, &rp)) != OLLM_OK)
		return r;
	m = &rp->u.result.u.models;
	if (m->n > 0 && (out->upstreams = calloc(m->n, sizeof *out->upstreams)) == NULL) {
		message_reply_free(rp);
		return ollm_fail(c, OLLM_ERR_NOMEM, "out of memory");
	}
	for (i = 0; i < m->n; i++) {
		u = &m->upstreams[i];
		out->upstreams[i].name = ollm_take(&u->name);
		out->upstreams[i].base_url = ollm_take(&u->base_url);
		out->upstreams[i].model = ollm_take(&u->model);
		out->upstreams[i].healthy = u->healthy;
		out->upstreams[i].in_flight = u->in_flight;
		out->upstreams[i].models = u->models;
		out->upstreams[i].n_models = u->n_models;
		u->models = NULL;
		u->n_models = 0;
	}
	out->n = m->n;
	message_reply_free(rp);
	return OLLM_OK;
}

/* Is the daemon there, and what is it. */
int
ollm_ping(struct ollm *c, struct ollm_ping *out)
{
	struct request rq;
	struct ping_result *p;
	struct reply *rp;
	int r;

	if (c == NULL)
		return OLLM_ERR_INVALID;
	memset(out, 0, sizeof *out);
	message_request_init(&rq, OP_PING);
	if ((r = ollm_roundtrip(c, &rq, NULL, NULL, &rp)) != OLLM_OK)
		return r;
	p = &rp->u.result.u.ping;
	snprintf(out->version, sizeof out->version, "%s",
	    p->version != NULL ? p->version : "");
	out->uptime_s = p->uptime_s;
	out->in_flight = p->in_flight;
	message_reply_free(rp);
	return OLLM_OK;
}

/* Reset the daemon's usage counters. */
int
ollm_reset(struct ollm *c)
{
	struct request rq;
	struct reply *rp;
	int r;

	if (c == NULL)
		return OLLM_ERR_INVALID;
	message_request_init(&rq, OP_RESET);
	if ((r = ollm_roundtrip(c, &rq, NULL, NULL, &rp)) != OLLM_OK)
		return r;
	r = rp->u.result.u.ok ? OLLM_OK :
	    ollm_fail(c, OLLM_ERR_FORBIDDEN, "the daemon did not reset");
	message_reply_free(rp);
	return r;
}

/* Release what a logs result holds. */
void
ollm_logs_clear(struct ollm_logs *l)
{
	size_t i;

	if (l == NULL)
		return;
	for (i = 0; i < l->n; i++) {
		free(l->rows[i].tag);
		free(l->rows[i].model);
		free(l->rows[i].upstream);
		free(l->rows[i].status);
		free(l->rows[i].error);
		free(l->rows[i].node);
		free(l->rows[i].user);
	}
	free(l->rows);
	memset(l, 0, sizeof *l);
}

/* Finished requests from the daemon's journal, newest first. */
int
ollm_logs(struct ollm *c, const struct ollm_logs_req *q, struct ollm_logs *out)
{
	struct ollm_logs_req defaults;
	struct request rq;
	struct logs_request *lr;
	struct logs_result *l;
	struct reply *rp;
	size_t i;
	int r;

	if (c == NULL || out == NULL)
		return OLLM_ERR_INVALID;
	memset(out, 0, sizeof *out);
	if (q == NULL) {
		memset(&defaults, 0, sizeof defaults);
		defaults.since = defaults.until = defaults.user = -1;
		q = &defaults;
	}
	message_request_init(&rq, OP_LOGS);
	lr = &rq.u.logs;
	lr->since = q->since >= 0 ? q->since : -1;
	lr->until = q->until >= 0 ? q->until : -1;
	lr->user = q->user >= 0 && q->user <= UINT32_MAX ? q->user : -1;
	lr->user_name = q->user_name != NULL && *q->user_name != '\0' ? (char *)q->user_name : NULL;
	lr->tag = (char *)q->tag;
	lr->model = q->model != NULL && *q->model != '\0' ? (char *)q->model : NULL;
	lr->status = (char *)q->status;
	lr->limit = q->limit > 0 ? q->limit : -1;
	lr->fleet = q->fleet != 0;
	if ((r = ollm_roundtrip(c, &rq, NULL, NULL, &rp)) != OLLM_OK)
		return r;
	l = &rp->u.result.u.logs;
	if (l->n > 0 && (out->rows = calloc(l->n, sizeof *out->rows)) == NULL) {
		message_reply_free(rp);
		return ollm_fail(c, OLLM_ERR_NOMEM, "out of memory");
	}
	for (i = 0; i < l->n; i++) {
		struct log_row *w = &l->rows[i];
		struct ollm_log_row *o = &out->rows[i];

		o->time_ms = w->time_ms;
		o->uid = w->uid;
		o->tag = ollm_take(&w->tag);
		o->model = ollm_take(&w->model);
		o->upstream = ollm_take(&w->upstream);
		o->status = ollm_take(&w->status);
		o->error = ollm_take(&w->error);
		o->prompt_tokens = w->prompt_tokens;
		o->completion_tokens = w->completion_tokens;
		o->estimated = w->estimated;
		o->cost = w->cost;
		o->latency_ms = w->latency_ms;
		o->ttft_ms = w->ttft_ms;
		o->node = ollm_take(&w->node);
		o->user = ollm_take(&w->user);
	}
	out->n = l->n;
	out->truncated = l->truncated;
	message_reply_free(rp);
	return OLLM_OK;
}

/* Release what a top result holds. */
void
ollm_top_clear(struct ollm_top *t)
{
	size_t i;

	if (t == NULL)
		return;
	for (i = 0; i < t->n_chats; i++) {
		free(t->chats[i].model);
		free(t->chats[i].upstream);
		free(t->chats[i].tag);
		free(t->chats[i].state);
		free(t->chats[i].user);
	}
	free(t->chats);
	for (i = 0; i < t->n_models; i++)
		free(t->models[i].model);
	free(t->models);
	for (i = 0; i < t->n_upstreams; i++)
		free(t->upstreams[i].name);
	free(t->upstreams);
	for (i = 0; i < t->n_budgets; i++) {
		free(t->budgets[i].scope);
		free(t->budgets[i].unit);
		free(t->budgets[i].period);
	}
	free(t->budgets);
	memset(t, 0, sizeof *t);
}

/* What the daemon is doing now: chats in flight, rates, queues, budgets. */
int
ollm_top(struct ollm *c, struct ollm_top *out)
{
	struct request rq;
	struct top_result *t;
	struct reply *rp;
	size_t i;
	int r;

	if (c == NULL || out == NULL)
		return OLLM_ERR_INVALID;
	memset(out, 0, sizeof *out);
	message_request_init(&rq, OP_TOP);
	if ((r = ollm_roundtrip(c, &rq, NULL, NULL, &rp)) != OLLM_OK)
		return r;
	t = &rp->u.result.u.top;
	out->uptime_s = t->uptime_s;
	out->in_flight = t->in_flight;
	if ((t->n_chats > 0 && (out->chats = calloc(t->n_chats, sizeof *out->chats)) == NULL) ||
	    (t->n_models > 0 && (out->models = calloc(t->n_models, sizeof *out->models)) == NULL) ||
	    (t->n_upstreams > 0 &&
	    (out->upstreams = calloc(t->n_upstreams, sizeof *out->upstreams)) == NULL) ||
	    (t->n_budgets > 0 && (out->budgets = calloc(t->n_budgets, sizeof *out->budgets)) == NULL)) {
		message_reply_free(rp);
		ollm_top_clear(out);
		return ollm_fail(c, OLLM_ERR_NOMEM, "out of memory");
	}
	for (i = 0; i < t->n_chats; i++) {
		struct top_chat *tc = &t->chats[i];
		struct ollm_top_chat *o = &out->chats[i];

		o->id = tc->id;
		o->uid = tc->uid;
		o->model = ollm_take(&tc->model);
		o->upstream = ollm_take(&tc->upstream);
		o->tag = ollm_take(&tc->tag);
		o->state = ollm_take(&tc->state);
		o->age_ms = tc->age_ms;
		o->tokens = tc->tokens;
		o->tokens_per_s = tc->tokens_per_s;
		o->user = ollm_take(&tc->user);
	}
	out->n_chats = t->n_chats;
	for (i = 0; i < t->n_models; i++) {
		out->models[i].model = ollm_take(&t->models[i].model);
		out->models[i].in_flight = t->models[i].in_flight;
		out->models[i].tokens_per_s = t->models[i].tokens_per_s;
	}
	out->n_models = t->n_models;
	for (i = 0; i < t->n_upstreams; i++) {
		out->upstreams[i].name = ollm_take(&t->upstreams[i].name);
		out->upstreams[i].healthy = t->upstreams[i].healthy;
		out->upstreams[i].in_flight = t->upstreams[i].in_flight;
		out->upstreams[i].queued = t->upstreams[i].queued;
	}
	out->n_upstreams = t->n_upstreams;
	for (i = 0; i < t->n_budgets; i++) {
		out->budgets[i].scope = ollm_take(&t->budgets[i].scope);
		out->budgets[i].unit = ollm_take(&t->budgets[i].unit);
		out->budgets[i].period = ollm_take(&t->budgets[i].period);
		out->budgets[i].limit = t->budgets[i].limit;
		out->budgets[i].used = t->budgets[i].used;
		out->budgets[i].left = t->budgets[i].left;
	}
	out->n_budgets = t->n_budgets;
	message_reply_free(rp);
	return OLLM_OK;
}
