/*
 * proxy_bench: the load generator of `make bench`'s proxy comparison. It
 * speaks HTTP/1.1 (keep-alive POSTs, reading SSE bodies of a known size) to
 * nginx, direct or through its proxy, and msgpack frames to openllmd's
 * socket, from one thread with epoll, so that every path pays the same
 * client cost.
 *
 * A target is http://HOST:PORT/PATH, http://HOST:PORT/PATH#MODEL (a server
 * that streams its own SSE, openllmd's HTTP front: the request names MODEL
 * and a reply is checked by its number of events) or unix:SOCKET#MODEL.
 *
 * proxy_bench latency N DELTAS TARGET...
 *     Sends N requests to each target in turn, one connection each, one
 *     request at a time, alternating between targets; prints one line per
 *     target: "target=I p50_us=.. p99_us=.. mean_us=..". PROXY_BENCH_DUMP=FILE
 *     writes each request there too: "TARGET START_US LATENCY_US".
 * proxy_bench load TARGET CONNS SECONDS DELTAS
 *     CONNS connections, each sending its next request when the last one
 *     ended, for SECONDS; prints "requests=.. rps=.. deltas=.. deltas_s=..
 *     errors=..". PROXY_BENCH_PROMPT replaces the user message (on every
 *     path). Every reply is checked: an SSE body of the expected length,
 *     or DELTAS delta frames and then a done frame.
 */
#include "config.h"

#include <errno.h>
#include <stdarg.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <arpa/inet.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <poll.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "protocol/message.h"

#define BENCH_PROMPT "Write a short poem about proxies."

enum kind { KIND_HTTP, KIND_OLLM };

struct target {
	enum kind kind;
	struct sockaddr_storage addr;
	socklen_t addr_len;
	char *request;              /* the bytes of one request */
	size_t request_len;
	size_t expect_body;         /* SSE body length, learned from the first reply */
	bool count_events;          /* check the number of SSE events, not the length */
	size_t expect_events;       /* learned from the first reply likewise */
};

/* One connection and the reply it is reading. */
struct conn {
	struct target *t;
	int fd;
	size_t sent;                /* bytes of the request written */
	bool busy;                  /* a request is outstanding */
	double started_us;
	uint8_t *in;                /* bytes read and not yet consumed */
	size_t in_len, in_cap;
	/* HTTP */
	bool headers_done;
	bool chunked;
	int64_t body_left;          /* Content-Length left, or the current chunk's */
	int chunk_state;            /* 0 size line, 1 data, 2 CRLF after data, 3 trailer */
	size_t body_bytes;
	size_t events;              /* blank lines ending SSE events in the body */
	uint8_t last_byte;
	/* msgpack */
	uint64_t deltas;
	bool want_out;              /* EPOLLOUT armed: the request did not fit the socket */
};

static int expect_deltas;
static uint64_t n_errors;

static double
now_us(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec * 1e6 + (double)ts.tv_nsec / 1e3;
}

static void __attribute__((noreturn, format(printf, 1, 2)))
die(const char *fmt, ...)
{
	va_list ap;

	fputs("proxy_bench: ", stderr);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputc('\n', stderr);
	exit(1);
}

/* The JSON body every HTTP request carries (what openllmd would send). */
static const char *
http_body(const char *model)
{
	static char body[1024];
	const char *prompt = getenv("PROXY_BENCH_PROMPT");

	if (prompt == NULL)
		prompt = BENCH_PROMPT;
	if (strpbrk(prompt, "\"\\") != NULL)
		die("PROXY_BENCH_PROMPT may hold no quote or backslash");
	if ((size_t)snprintf(body, sizeof body,
	    "{\"model\":\"%s\",\"messages\":[{\"role\":\"user\",\"content\":\"%s\"}],"
	    "\"stream\":true,\"stream_options\":{\"include_usage\":true}}", model, prompt) >= sizeof body)
		die("PROXY_BENCH_PROMPT is too long");
	return body;
}

/* Parse a target and build its request. */
static void
target_parse(struct target *t, const char *spec)
{
	memset(t, 0, sizeof *t);
	if (strncmp(spec, "http://", 7) == 0) {
		char host[64], path[512];
		const char *slash = strchr(spec + 7, '/');
		const char *hash = strchr(spec + 7, '#');
		const char *colon = strchr(spec + 7, ':');
		struct sockaddr_in *sin = (struct sockaddr_in *)&t->addr;
		if (slash == NULL || colon == NULL || colon > slash || colon - spec - 7 >= (long)sizeof host)
			die("bad target %s", spec);
		memcpy(host, spec + 7, (size_t)(colon - spec - 7));
		host[colon - spec - 7] = '\0';
		sin->sin_family = AF_INET;
		sin->sin_port = htons((uint16_t)atoi(colon + 1));
		if (inet_pton(AF_INET, host, &sin->sin_addr) != 1)
			die("bad address %s", host);
		t->addr_len = sizeof *sin;
		t->kind = KIND_HTTP;
		size_t path_len = hash != NULL ? (size_t)(hash - slash) : strlen(slash);
		if (path_len >= sizeof path)
			die("bad target %s", spec);
		memcpy(path, slash, path_len);
		path[path_len] = '\0';
		t->count_events = hash != NULL;
		const char *body = http_body(hash != NULL ? hash + 1 : "bench-model");
		if (asprintf(&t->request, "POST %s HTTP/1.1\r\nHost: %s\r\nUser-Agent: proxy_bench\r\n"
		    "Accept: application/json, text/event-stream\r\nContent-Type: application/json\r\n"
		    "Content-Length: %zu\r\n\r\n%s", path, host, strlen(body), body) == -1)
			die("out of memory");
		t->request_len = strlen(t->request);
	} else if (strncmp(spec, "unix:", 5) == 0) {
		struct sockaddr_un *sun = (struct sockaddr_un *)&t->addr;
		const char *hash = strchr(spec, '#');
		const char *prompt = getenv("PROXY_BENCH_PROMPT");
		struct chat_message msg;
		memset(&msg, 0, sizeof msg);
		msg.role = (char *)"user";
		msg.content = (char *)(prompt ? prompt : BENCH_PROMPT);
		msg.content_len = strlen(msg.content);
		struct request req;
		msgpack_sbuffer sb;
		if (hash == NULL || (size_t)(hash - spec - 5) >= sizeof sun->sun_path)
			die("bad target %s", spec);
		sun->sun_family = AF_UNIX;
		memcpy(sun->sun_path, spec + 5, (size_t)(hash - spec - 5));
		t->addr_len = sizeof *sun;
		t->kind = KIND_OLLM;
		message_request_init(&req, OP_CHAT);
		req.id = 1;     /* one request at a time per connection: one id is enough */
		req.u.chat.messages = &msg;
		req.u.chat.n_messages = 1;
		req.u.chat.model = (char *)hash + 1;
		msgpack_sbuffer_init(&sb);
		if (message_request_encode(&sb, &req) == -1)
			die("cannot encode the chat request");
		t->request = sb.data;
		t->request_len = sb.size;
	} else
		die("bad target %s (http://HOST:PORT/PATH or unix:SOCKET#MODEL)", spec);
}

static void
conn_open(struct conn *c, struct target *t, bool nonblock)
{
	int one = 1;

	memset(c, 0, sizeof *c);
	c->t = t;
	c->fd = socket(t->addr.ss_family, SOCK_STREAM, 0);
	if (c->fd == -1)
		die("socket: %s", strerror(errno));
	if (t->kind == KIND_HTTP)
		setsockopt(c->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
	/* blocking: a full listen queue makes it wait, not fail */
	if (connect(c->fd, (struct sockaddr *)&t->addr, t->addr_len) == -1)
		die("connect: %s", strerror(errno));
	if (nonblock && fcntl(c->fd, F_SETFL, fcntl(c->fd, F_GETFL) | O_NONBLOCK) == -1)
		die("fcntl: %s", strerror(errno));
	c->in_cap = 65536;
	if ((c->in = malloc(c->in_cap)) == NULL)
		die("out of memory");
}

/* Start the next request on a connection. */
static void
conn_begin(struct conn *c)
{
	c->busy = true;
	c->sent = 0;
	c->started_us = now_us();
	c->headers_done = false;
	c->chunked = false;
	c->body_left = -1;
	c->chunk_state = 0;
	c->body_bytes = 0;
	c->events = 0;
	c->last_byte = 0;
	c->deltas = 0;
}

/* Write what is left of the request; false on EAGAIN. */
static bool
conn_write(struct conn *c)
{
	while (c->sent < c->t->request_len) {
		ssize_t n = write(c->fd, c->t->request + c->sent, c->t->request_len - c->sent);
		if (n == -1 && (errno == EAGAIN || errno == EINTR))
			return false;
		if (n <= 0)
			die("write: %s", strerror(errno));
		c->sent += (size_t)n;
	}
	return true;
}

/* Headers of an HTTP reply are in: status, length or chunking. 0 or -1. */
static int
http_headers(struct conn *c, const char *h, size_t len)
{
	const char *line = h, *end = h + len;

	if (len < 12 || memcmp(h, "HTTP/1.1 200", 12) != 0) {
		fprintf(stderr, "proxy_bench: reply %.*s\n", (int)(len < 60 ? len : 60), h);
		return -1;
	}
	while (line < end) {
		const char *eol = memchr(line, '\n', (size_t)(end - line));
		if (eol == NULL)
			eol = end;
		if (strncasecmp(line, "Content-Length:", 15) == 0)
			c->body_left = strtoll(line + 15, NULL, 10);
		else if (strncasecmp(line, "Transfer-Encoding:", 18) == 0 &&
		    strstr(line, "chunked") != NULL && strstr(line, "chunked") < eol)
			c->chunked = true;
		line = eol + 1;
	}
	if (!c->chunked && c->body_left < 0)
		return -1;
	return 0;
}

/* Consume read bytes of an HTTP reply; 1 when it is complete, 0 for more, -1. */
static int
http_feed(struct conn *c)
{
	size_t off = 0;

	if (!c->headers_done) {
		uint8_t *e = memmem(c->in, c->in_len, "\r\n\r\n", 4);
		if (e == NULL)
			return 0;
		off = (size_t)(e - c->in) + 4;
		if (http_headers(c, (const char *)c->in, off) == -1)
			return -1;
		c->headers_done = true;
	}
	while (off < c->in_len) {
		size_t avail = c->in_len - off;
		if (!c->chunked || c->chunk_state == 1) {
			size_t take = avail < (size_t)c->body_left ? avail : (size_t)c->body_left;
			if (c->t->count_events) {
				const uint8_t *b = c->in + off, *end = b + take;
				for (; b < end; b++) {
					c->events += *b == '\n' && c->last_byte == '\n';
					c->last_byte = *b;
				}
			}
			c->body_left -= (int64_t)take;
			c->body_bytes += take;
			off += take;
			if (c->body_left > 0)
				continue;
			if (!c->chunked) {
				c->in_len = 0;  /* nothing is pipelined */
				return 1;
			}
			c->chunk_state = 2;
			continue;
		}
		uint8_t *nl = memchr(c->in + off, '\n', avail);
		if (nl == NULL)
			break;
		size_t line_len = (size_t)(nl - (c->in + off)) + 1;
		if (c->chunk_state == 0) {
			c->body_left = strtoll((const char *)c->in + off, NULL, 16);
			c->chunk_state = c->body_left == 0 ? 3 : 1;
		} else if (c->chunk_state == 2)
			c->chunk_state = 0;
		else if (line_len <= 2) {      /* the blank line after the last chunk */
			c->in_len = 0;
			return 1;
		}
		off += line_len;
	}
	memmove(c->in, c->in + off, c->in_len - off);
	c->in_len -= off;
	return 0;
}

/* Consume read frames; 1 when the done frame came, 0 for more, -1 on an error frame. */
static int
ollm_feed(struct conn *c)
{
	size_t off = 0;
	int rc = 0;

	while (c->in_len - off >= 4) {
		const uint8_t *p = c->in + off;
		size_t n = (size_t)p[0] << 24 | (size_t)p[1] << 16 | (size_t)p[2] << 8 | p[3];
		if (c->in_len - off - 4 < n)
			break;
		const uint8_t *body = p + 4;
		if (memmem(body, n < 24 ? n : 24, "\xa4type\xa5" "delta", 11) != NULL)
			c->deltas++;
		else if (memmem(body, n < 24 ? n : 24, "\xa4type\xa4" "done", 10) != NULL)
			rc = 1;
		else {
			fprintf(stderr, "proxy_bench: reply frame: ");
			for (size_t i = 0; i < n && i < 200; i++)
				fputc(body[i] >= 32 && body[i] < 127 ? body[i] : '.', stderr);
			fputc('\n', stderr);
			rc = -1;
		}
		off += 4 + n;
		if (rc != 0)
			break;
	}
	memmove(c->in, c->in + off, c->in_len - off);
	c->in_len -= off;
	return rc;
}

/* Read what is there; 1 when the reply is complete, 0 for more (EAGAIN), -1. */
static int
conn_read(struct conn *c)
{
	for (;;) {
		if (c->in_cap - c->in_len < 16384) {
			c->in_cap *= 2;
			if ((c->in = realloc(c->in, c->in_cap)) == NULL)
				die("out of memory");
		}
		ssize_t n = read(c->fd, c->in + c->in_len, c->in_cap - c->in_len);
		if (n == -1 && errno == EINTR)
			continue;
		if (n == -1 && errno == EAGAIN)
			return 0;
		if (n <= 0) {
			fprintf(stderr, "proxy_bench: the server closed a connection\n");
			return -1;
		}
		c->in_len += (size_t)n;
		int rc = c->t->kind == KIND_HTTP ? http_feed(c) : ollm_feed(c);
		if (rc != 0)
			return rc;
	}
}

/* A reply ended: check it. */
static bool
conn_check(struct conn *c)
{
	if (c->t->kind == KIND_OLLM) {
		if (c->deltas != (uint64_t)expect_deltas) {
			fprintf(stderr, "proxy_bench: %llu deltas, expected %d\n",
			    (unsigned long long)c->deltas, expect_deltas);
			return false;
		}
		return true;
	}
	if (c->t->count_events) {
		if (c->t->expect_events == 0) {
			if (c->events < (size_t)expect_deltas + 1) {
				fprintf(stderr, "proxy_bench: %zu SSE events for %d deltas\n", c->events,
				    expect_deltas);
				return false;
			}
			c->t->expect_events = c->events;
		}
		if (c->events != c->t->expect_events) {
			fprintf(stderr, "proxy_bench: %zu SSE events, expected %zu\n", c->events,
			    c->t->expect_events);
			return false;
		}
		return true;
	}
	if (c->t->expect_body == 0)
		c->t->expect_body = c->body_bytes;
	if (c->body_bytes != c->t->expect_body) {
		fprintf(stderr, "proxy_bench: body of %zu bytes, expected %zu\n", c->body_bytes,
		    c->t->expect_body);
		return false;
	}
	return true;
}

/*
 * One whole request on a non-blocking connection, waiting in poll(2) as
 * libollm does; microseconds. (A read(2) blocked on a Unix socket is also
 * woken when the daemon reads the request, by the kernel's write-space
 * wakeup: an extra wakeup per request that poll's event mask filters out.)
 */
static double
conn_roundtrip(struct conn *c)
{
	struct pollfd pfd = { .fd = c->fd };
	int rc;

	conn_begin(c);
	while (!conn_write(c)) {
		pfd.events = POLLOUT;
		poll(&pfd, 1, -1);
	}
	pfd.events = POLLIN;
	while ((rc = conn_read(c)) == 0)
		poll(&pfd, 1, -1);
	if (rc != 1 || !conn_check(c))
		die("a request failed");
	return now_us() - c->started_us;
}

static int
cmp_double(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;

	return x < y ? -1 : x > y;
}

static int
cmd_latency(int n, int argc, char **argv)
{
	int nt = argc;
	struct target *t = calloc((size_t)nt, sizeof *t);
	struct conn *c = calloc((size_t)nt, sizeof *c);
	double **lat = calloc((size_t)nt, sizeof *lat);

	for (int i = 0; i < nt; i++) {
		target_parse(&t[i], argv[i]);
		conn_open(&c[i], &t[i], true);
		lat[i] = calloc((size_t)n, sizeof **lat);
	}
	for (int r = 0; r < 200; r++)        /* warm up: pools, caches, page faults */
		for (int i = 0; i < nt; i++)
			conn_roundtrip(&c[i]);
	const char *dump_path = getenv("PROXY_BENCH_DUMP");
	FILE *dump = dump_path != NULL && *dump_path != '\0' ? fopen(dump_path, "w") : NULL;
	double t0 = now_us();
	for (int r = 0; r < n; r++)
		for (int i = 0; i < nt; i++) {
			double at = now_us() - t0;
			lat[i][r] = conn_roundtrip(&c[i]);
			if (dump != NULL)
				fprintf(dump, "%d %.1f %.1f\n", i, at, lat[i][r]);
		}
	if (dump != NULL)
		fclose(dump);
	for (int i = 0; i < nt; i++) {
		double sum = 0;
		for (int r = 0; r < n; r++)
			sum += lat[i][r];
		qsort(lat[i], (size_t)n, sizeof **lat, cmp_double);
		printf("target=%d p50_us=%.1f p99_us=%.1f mean_us=%.1f\n", i, lat[i][n / 2],
		    lat[i][(n * 99) / 100], sum / n);
		close(c[i].fd);
		free(c[i].in);
		free(lat[i]);
		free(t[i].request);
	}
	free(t);
	free(c);
	free(lat);
	return 0;
}

/*
 * Write what is left of a request, arming EPOLLOUT only while the socket
 * refuses it, as libevent does: a Unix socket signals write space each time
 * the peer reads (TCP only once it was full), so an EPOLLOUT always armed
 * would wake the generator once per request on the msgpack path alone.
 */
static void
conn_send(int ep, struct conn *c)
{
	bool sent = conn_write(c);
	struct epoll_event ev = { .data.ptr = c };

	if (sent == !c->want_out)
		return;
	c->want_out = !sent;
	ev.events = EPOLLIN | EPOLLET | (c->want_out ? EPOLLOUT : 0);
	if (epoll_ctl(ep, EPOLL_CTL_MOD, c->fd, &ev) == -1)
		die("epoll_ctl: %s", strerror(errno));
}

static int
cmd_load(const char *spec, int conns, double seconds)
{
	struct target t;
	struct conn *c = calloc((size_t)conns, sizeof *c);
	struct epoll_event ev, *evs = calloc((size_t)conns, sizeof *evs);
	int ep = epoll_create1(0);
	uint64_t done = 0, deltas = 0;
	double t0, end;
	bool stopping = false;
	int busy = 0;

	target_parse(&t, spec);
	for (int i = 0; i < conns; i++) {
		conn_open(&c[i], &t, true);
		ev.events = EPOLLIN | EPOLLET;
		ev.data.ptr = &c[i];
		if (epoll_ctl(ep, EPOLL_CTL_ADD, c[i].fd, &ev) == -1)
			die("epoll_ctl: %s", strerror(errno));
	}
	t0 = now_us();
	end = t0 + seconds * 1e6;
	for (int i = 0; i < conns; i++) {
		conn_begin(&c[i]);
		conn_send(ep, &c[i]);
		busy++;
	}
	while (busy > 0) {
		int n = epoll_wait(ep, evs, conns, 1000);
		if (n == -1 && errno == EINTR)
			continue;
		if (n == -1)
			die("epoll_wait: %s", strerror(errno));
		double now = now_us();
		if (now >= end)
			stopping = true;
		for (int i = 0; i < n; i++) {
			struct conn *k = evs[i].data.ptr;
			if (!k->busy)
				continue;
			if (evs[i].events & EPOLLOUT)
				conn_send(ep, k);
			if (!(evs[i].events & (EPOLLIN | EPOLLHUP | EPOLLERR)))
				continue;
			for (;;) {
				int rc = conn_read(k);
				if (rc == 0)
					break;
				if (rc == -1 || !conn_check(k)) {
					n_errors++;
					if (n_errors > 10)
						die("too many failed requests");
					stopping = true;
				}
				done++;
				deltas += k->t->kind == KIND_OLLM ? k->deltas : (uint64_t)expect_deltas;
				if (stopping || rc == -1) {
					k->busy = false;
					busy--;
					break;
				}
				/* the next request; its reply may already be readable later */
				conn_begin(k);
				conn_send(ep, k);
			}
		}
	}
	double elapsed = (now_us() - t0) / 1e6;
	printf("requests=%llu seconds=%.3f rps=%.1f deltas=%llu deltas_s=%.0f errors=%llu\n",
	    (unsigned long long)done, elapsed, done / elapsed, (unsigned long long)deltas,
	    deltas / elapsed, (unsigned long long)n_errors);
	for (int i = 0; i < conns; i++) {
		close(c[i].fd);
		free(c[i].in);
	}
	free(c);
	free(evs);
	free(t.request);
	close(ep);
	return n_errors > 0;
}

int
main(int argc, char **argv)
{
	if (argc >= 5 && strcmp(argv[1], "latency") == 0) {
		int n = atoi(argv[2]);
		expect_deltas = atoi(argv[3]);
		if (n < 10)
			die("N must be at least 10");
		return cmd_latency(n, argc - 4, argv + 4);
	}
	if (argc == 6 && strcmp(argv[1], "load") == 0) {
		expect_deltas = atoi(argv[5]);
		return cmd_load(argv[2], atoi(argv[3]), atof(argv[4]));
	}
	fprintf(stderr, "usage: proxy_bench latency N DELTAS TARGET...\n"
	    "       proxy_bench load TARGET CONNS SECONDS DELTAS\n");
	return 64;
}
