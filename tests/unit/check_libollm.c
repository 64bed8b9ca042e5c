/*
 * Unit tests for the client side: libollm against an in-process fake daemon
 * (real frames on a real Unix socket), socket resolution, and what ollmctl
 * parses and prints.
 */
#include "config.h"

#include <sys/types.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>

#include <check.h>
#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <math.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "client/ollm.h"
#include "client/ollmctl.h"
#include "client/sockpath.h"
#include "protocol/frame.h"
#include "protocol/message.h"

/* --- the fake daemon -------------------------------------------------------- */

static char fake_dir[64];
static char fake_path[128];
static int fake_listen_fd = -1;

struct fake_conn {
	int fd;
	struct frame_reader fr;
	uint8_t buf[65536];
	size_t pos, len;
};

/* Fill a Unix socket address. */
static void
unix_addr(struct sockaddr_un *sun, const char *path)
{
	memset(sun, 0, sizeof *sun);
	sun->sun_family = AF_UNIX;
	ck_assert_uint_lt(strlen(path), sizeof sun->sun_path);
	memcpy(sun->sun_path, path, strlen(path) + 1);
}

/* Write all bytes, ignoring a peer that went away. */
static void
fake_write(int fd, const void *p, size_t len)
{
	const char *s = p;
	ssize_t n;

	while (len > 0) {
		n = send(fd, s, len, MSG_NOSIGNAL);
		if (n <= 0) {
			if (n == -1 && errno == EINTR)
				continue;
			return;
		}
		s += n;
		len -= (size_t)n;
	}
}

/* Encode and send one reply. */
static void
fake_send(struct fake_conn *fc, const struct reply *rp)
{
	msgpack_sbuffer sb;

	msgpack_sbuffer_init(&sb);
	if (message_reply_encode(&sb, rp) != 0)
		abort();
	fake_write(fc->fd, sb.data, sb.size);
	msgpack_sbuffer_destroy(&sb);
}

/*
 * The next request, waiting at most timeout_ms (-1: forever). NULL on EOF,
 * timeout or a bad frame; *eof tells EOF apart.
 */
static struct request *
fake_next(struct fake_conn *fc, int timeout_ms, int *eof)
{
	struct message_error err;
	struct request *rq;
	struct pollfd pfd;
	const uint8_t *body;
	size_t used, blen;
	enum frame_status fs;
	char cause[128];
	ssize_t n;

	*eof = 0;
	for (;;) {
		while (fc->pos < fc->len) {
			fs = frame_reader_feed(&fc->fr, fc->buf + fc->pos, fc->len - fc->pos,
			    &used, &body, &blen, cause, sizeof cause);
			fc->pos += used;
			if (fs == FRAME_ERROR) {
				*eof = 1;
				return NULL;
			}
			if (fs == FRAME_READY) {
				if (message_request_decode(body, blen, &rq, &err) != 0)
					return NULL;
				return rq;
			}
		}
		fc->pos = fc->len = 0;
		pfd.fd = fc->fd;
		pfd.events = POLLIN;
		if (poll(&pfd, 1, timeout_ms) == 0)
			return NULL;
		n = recv(fc->fd, fc->buf, sizeof fc->buf, 0);
		if (n <= 0) {
			*eof = 1;
			return NULL;
		}
		fc->len = (size_t)n;
	}
}

/* Send an error reply. */
static void
fake_error(struct fake_conn *fc, uint64_t id, const char *code, const char *msg,
    double retry_after, int64_t status)
{
	struct reply rp;

	message_reply_init(&rp, REPLY_ERROR, OP_CHAT);
	rp.id = id;
	rp.u.error.code = (char *)code;
	rp.u.error.message = (char *)msg;
	rp.u.error.retry_after = retry_after;
	rp.u.error.status = status;
	fake_send(fc, &rp);
}

/* Send a content delta. */
static void
fake_delta(struct fake_conn *fc, uint64_t id, const char *content, const char *reasoning)
{
	struct reply rp;

	message_reply_init(&rp, REPLY_DELTA, OP_CHAT);
	rp.id = id;
	rp.u.delta.content = (char *)content;
	rp.u.delta.reasoning = (char *)reasoning;
	fake_send(fc, &rp);
}

/* Send a done reply with fixed usage. */
static void
fake_done(struct fake_conn *fc, uint64_t id, const char *content)
{
	struct reply rp;

	message_reply_init(&rp, REPLY_DONE, OP_CHAT);
	rp.id = id;
	rp.u.done.finish_reason = (char *)"stop";
	rp.u.done.usage.prompt_tokens = 3;
	rp.u.done.usage.completion_tokens = 2;
	rp.u.done.usage.total_tokens = 5;
	rp.u.done.usage.estimated = true;
	rp.u.done.cost = 0.5;
	rp.u.done.model = (char *)"m";
	rp.u.done.upstream = (char *)"u";
	rp.u.done.ttft_ms = 10;
	rp.u.done.latency_ms = 20;
	rp.u.done.content = (char *)content;
	fake_send(fc, &rp);
}

/* A chat with a long stream: deltas until a cancel for it comes. */
static void
fake_long(struct fake_conn *fc, uint64_t id)
{
	struct request *rq;
	struct reply rp;
	int i, eof;

	for (i = 0; i < 100000; i++) {
		fake_delta(fc, id, "x", NULL);
		if ((rq = fake_next(fc, 2, &eof)) == NULL) {
			if (eof)
				return;
			continue;
		}
		if (rq->op == OP_CANCEL && rq->u.cancel_target == id) {
			fake_error(fc, id, "cancelled", "cancelled by request", NAN, -1);
			message_reply_init(&rp, REPLY_RESULT, OP_CANCEL);
			rp.id = rq->id;
			rp.u.result.u.ok = true;
			fake_send(fc, &rp);
			message_request_free(rq);
			return;
		}
		message_request_free(rq);
	}
	fake_done(fc, id, NULL);
}

/* Answer one chat by what its last message says. */
static void
fake_chat(struct fake_conn *fc, const struct request *rq)
{
	const struct chat_request *cr = &rq->u.chat;
	const char *text = cr->messages[cr->n_messages - 1].content;
	struct reply rp;
	msgpack_sbuffer sb;
	msgpack_packer pk;
	uint8_t zero[4] = { 0, 0, 0, 0 };
	char buf[256];
	uint64_t id = rq->id;

	if (text == NULL)
		text = "";
	if (strcmp(text, "hello") == 0) {
		if (!cr->stream) {
			fake_done(fc, id, "Hello");
			return;
		}
		fake_delta(fc, id, NULL, "think");
		fake_delta(fc, id, "Hel", NULL);
		fake_delta(fc, id, "lo", NULL);
		fake_done(fc, id, NULL);
	} else if (strcmp(text, "tools") == 0) {
		msgpack_sbuffer_init(&sb);
		msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
		msgpack_pack_array(&pk, 1);
		msgpack_pack_map(&pk, 3);
		msgpack_pack_str_with_body(&pk, "index", 5);
		msgpack_pack_int(&pk, 0);
		msgpack_pack_str_with_body(&pk, "id", 2);
		msgpack_pack_str_with_body(&pk, "c\"1", 3);
		msgpack_pack_str_with_body(&pk, "function", 8);
		msgpack_pack_map(&pk, 2);
		msgpack_pack_str_with_body(&pk, "name", 4);
		msgpack_pack_str_with_body(&pk, "f", 1);
		msgpack_pack_str_with_body(&pk, "arguments", 9);
		msgpack_pack_str_with_body(&pk, "{\"a\":-1.5}\n", 11);
		message_reply_init(&rp, REPLY_DELTA, OP_CHAT);
		rp.id = id;
		rp.u.delta.tool_calls.data = (uint8_t *)sb.data;
		rp.u.delta.tool_calls.len = sb.size;
		fake_send(fc, &rp);
		fake_done(fc, id, NULL);
		msgpack_sbuffer_destroy(&sb);
	} else if (strcmp(text, "budget") == 0)
		fake_error(fc, id, "budget_exceeded", "over the budget", NAN, -1);
	else if (strcmp(text, "rate") == 0)
		fake_error(fc, id, "rate_limited", "slow down", 2.5, -1);
	else if (strcmp(text, "upstream") == 0)
		fake_error(fc, id, "upstream_error", "bad gateway", NAN, 502);
	else if (strcmp(text, "weird") == 0)
		fake_error(fc, id, "brand_new_code", "from the future", NAN, -1);
	else if (strcmp(text, "long") == 0)
		fake_long(fc, id);
	else if (strcmp(text, "silent") == 0)
		return;
	else if (strcmp(text, "garbage") == 0)
		fake_write(fc->fd, zero, sizeof zero);
	else if (strcmp(text, "badframe") == 0) {
		fake_error(fc, 0, "bad_frame", "cannot read that", NAN, -1);
		shutdown(fc->fd, SHUT_RDWR);
	} else if (strcmp(text, "other-id") == 0) {
		/* A reply for an id the client is not waiting for comes first. */
		fake_error(fc, id + 1000, "cancelled", "not yours", NAN, -1);
		fake_done(fc, id, "mine");
	} else if (strcmp(text, "waits") == 0) {
		/* A reply type from the future, then status frames if asked for. */
		msgpack_sbuffer_init(&sb);
		msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
		msgpack_sbuffer_write(&sb, (const char *)zero, sizeof zero);
		msgpack_pack_map(&pk, 3);
		msgpack_pack_str_with_body(&pk, "id", 2);
		msgpack_pack_uint64(&pk, id);
		msgpack_pack_str_with_body(&pk, "type", 4);
		msgpack_pack_str_with_body(&pk, "progress", 8);
		msgpack_pack_str_with_body(&pk, "percent", 7);
		msgpack_pack_int(&pk, 50);
		frame_header_write((uint8_t *)sb.data, (uint32_t)(sb.size - 4));
		fake_write(fc->fd, sb.data, sb.size);
		msgpack_sbuffer_destroy(&sb);
		if (cr->status) {
			message_reply_init(&rp, REPLY_STATUS, OP_CHAT);
			rp.id = id;
			rp.u.status.state = (char *)"queued";
			rp.u.status.reason = (char *)"rpm";
			rp.u.status.message = (char *)"upstream u allows 2 requests a minute";
			rp.u.status.wait_s = 5.75;
			fake_send(fc, &rp);
			message_reply_init(&rp, REPLY_STATUS, OP_CHAT);
			rp.id = id;
			rp.u.status.state = (char *)"retrying";
			rp.u.status.reason = (char *)"connection refused";
			rp.u.status.message = (char *)"retry 2 of 5";
			rp.u.status.wait_s = 1;
			rp.u.status.attempt = 2;
			rp.u.status.of = 5;
			fake_send(fc, &rp);
		}
		fake_delta(fc, id, cr->status ? "asked" : "not asked", NULL);
		fake_done(fc, id, NULL);
	} else if (strcmp(text, "count") == 0) {
		snprintf(buf, sizeof buf, "%zu messages", cr->n_messages);
		fake_delta(fc, id, buf, NULL);
		fake_done(fc, id, NULL);
	} else {
		fake_delta(fc, id, "re: ", NULL);
		fake_delta(fc, id, text, NULL);
		fake_done(fc, id, NULL);
	}
}

/* Answer one request of any op. */
static void
fake_answer(struct fake_conn *fc, const struct request *rq)
{
	static char m_key[] = "m", u_key[] = "0", d_key[] = "2024-05-01";
	static char *models[] = { (char *)"m", (char *)"n" };
	static uint32_t ids[] = { 1, 2, 3 };
	struct counters_entry by_model[1], by_user[1], by_day[1];
	struct budget_status budget;
	struct upstream_info up;
	struct reply rp;

	switch (rq->op) {
	case OP_CHAT:
		fake_chat(fc, rq);
		return;
	case OP_PING:
		message_reply_init(&rp, REPLY_RESULT, OP_PING);
		rp.u.result.u.ping.version = (char *)"9.9.9";
		rp.u.result.u.ping.uptime_s = 42;
		rp.u.result.u.ping.in_flight = 1;
		break;
	case OP_TOKENS:
		message_reply_init(&rp, REPLY_RESULT, OP_TOKENS);
		rp.u.result.u.tokens.count = rq->u.tokens.text != NULL ?
		    (int64_t)rq->u.tokens.text_len : (int64_t)rq->u.tokens.n_messages;
		rp.u.result.u.tokens.encoding = (char *)(rq->u.tokens.encoding != NULL ?
		    rq->u.tokens.encoding : "cl100k_base");
		if (rq->u.tokens.ids) {
			rp.u.result.u.tokens.ids = ids;
			rp.u.result.u.tokens.n_ids = 3;
		}
		break;
	case OP_STATS:
		message_reply_init(&rp, REPLY_RESULT, OP_STATS);
		memset(by_model, 0, sizeof by_model);
		by_model[0].key = m_key;
		by_model[0].c.requests = 1234567;
		by_model[0].c.total_tokens = 5;
		by_model[0].c.cost = 1.25;
		by_user[0] = by_model[0];
		by_user[0].key = u_key;
		by_day[0] = by_model[0];
		by_day[0].key = d_key;
		rp.u.result.u.stats.since = rq->u.stats.since >= 0 ? rq->u.stats.since : 0;
		rp.u.result.u.stats.total = by_model[0].c;
		if (rq->u.stats.by == NULL || strcmp(rq->u.stats.by, "model") == 0) {
			rp.u.result.u.stats.by_model.entries = by_model;
			rp.u.result.u.stats.by_model.n = 1;
		}
		if (rq->u.stats.by == NULL || strcmp(rq->u.stats.by, "user") == 0) {
			rp.u.result.u.stats.by_user.entries = by_user;
			rp.u.result.u.stats.by_user.n = 1;
		}
		rp.u.result.u.stats.by_day.entries = by_day;
		rp.u.result.u.stats.by_day.n = 1;
		rp.u.result.u.stats.max_budget = 10;
		rp.u.result.u.stats.budget_left = 8.75;
		budget.scope = (char *)"all";
		budget.unit = (char *)"money";
		budget.period = (char *)"month";
		budget.limit = 10;
		budget.used = 1.25;
		budget.left = 8.75;
		rp.u.result.u.stats.budgets = &budget;
		rp.u.result.u.stats.n_budgets = 1;
		break;
	case OP_MODELS:
		message_reply_init(&rp, REPLY_RESULT, OP_MODELS);
		up.name = (char *)"u";
		up.base_url = (char *)"http://127.0.0.1:1/v1";
		up.model = (char *)"m";
		up.healthy = true;
		up.in_flight = 1;
		up.models = models;
		up.n_models = 2;
		rp.u.result.u.models.upstreams = &up;
		rp.u.result.u.models.n = 1;
		break;
	case OP_RESET:
	case OP_CANCEL:
		message_reply_init(&rp, REPLY_RESULT, rq->op);
		rp.u.result.u.ok = rq->op == OP_RESET;
		break;
	default:
		return;
	}
	rp.id = rq->id;
	fake_send(fc, &rp);
}

/* One client connection of the fake daemon. */
static void *
fake_conn_main(void *arg)
{
	struct fake_conn *fc = arg;
	struct request *rq;
	int eof;

	frame_reader_init(&fc->fr, FRAME_MAX_DEFAULT);
	for (;;) {
		rq = fake_next(fc, -1, &eof);
		if (rq == NULL) {
			if (eof)
				break;
			continue;
		}
		fake_answer(fc, rq);
		message_request_free(rq);
	}
	frame_reader_clear(&fc->fr);
	close(fc->fd);
	free(fc);
	return NULL;
}

/* Accept connections, one thread each. */
static void *
fake_accept_main(void *arg)
{
	struct fake_conn *fc;
	pthread_t t;
	int fd;

	(void)arg;
	for (;;) {
		if ((fd = accept(fake_listen_fd, NULL, NULL)) == -1) {
			if (errno == EINTR)
				continue;
			return NULL;
		}
		if ((fc = calloc(1, sizeof *fc)) == NULL)
			abort();
		fc->fd = fd;
		if (pthread_create(&t, NULL, fake_conn_main, fc) != 0)
			abort();
		pthread_detach(t);
	}
}

/* Start the fake daemon on a private socket (each test runs in its own process). */
static void
fake_start(void)
{
	struct sockaddr_un sun;
	pthread_t t;

	/* /tmp, not $TMPDIR: the socket path must fit in sun_path. */
	snprintf(fake_dir, sizeof fake_dir, "/tmp/check_libollm.XXXXXX");
	ck_assert_ptr_nonnull(mkdtemp(fake_dir));
	snprintf(fake_path, sizeof fake_path, "%s/sock", fake_dir);
	unix_addr(&sun, fake_path);
	fake_listen_fd = socket(AF_UNIX, SOCK_STREAM, 0);
	ck_assert_int_ne(fake_listen_fd, -1);
	ck_assert_int_eq(bind(fake_listen_fd, (struct sockaddr *)&sun, sizeof sun), 0);
	ck_assert_int_eq(listen(fake_listen_fd, 16), 0);
	ck_assert_int_eq(pthread_create(&t, NULL, fake_accept_main, NULL), 0);
	pthread_detach(t);
	signal(SIGPIPE, SIG_IGN);
}

/* Remove the socket and its directory. */
static void
fake_stop(void)
{
	unlink(fake_path);
	rmdir(fake_dir);
}

/* A connection to the fake daemon. */
static struct ollm *
fake_client(void)
{
	struct ollm *c = ollm_new();

	ck_assert_ptr_nonnull(c);
	ck_assert_int_eq(ollm_connect(c, fake_path), OLLM_OK);
	ck_assert_int_eq(ollm_connected(c), 1);
	ck_assert_str_eq(ollm_path(c), fake_path);
	return c;
}

/* What a chat's callback saw. */
struct seen {
	char content[4096];
	char reasoning[256];
	char tools[512];
	int deltas;
	int stop_after;                 /* return 1 at this delta; 0: never */
	int cancel_after;               /* call ollm_cancel at this delta; 0: never */
	pthread_mutex_t mu;
	pthread_cond_t cv;
};

/* A fresh record of what a callback saw. */
static void
seen_init(struct seen *s)
{
	memset(s, 0, sizeof *s);
	pthread_mutex_init(&s->mu, NULL);
	pthread_cond_init(&s->cv, NULL);
}

/* The delta callback of the tests: record, and cancel when told to. */
static int
seen_cb(struct ollm *c, uint64_t id, const struct ollm_delta *d, void *arg)
{
	struct seen *s = arg;

	ck_assert_uint_ge(id, 1);
	if (d->content != NULL)
		strncat(s->content, d->content, sizeof s->content - strlen(s->content) - 1);
	if (d->reasoning != NULL)
		strncat(s->reasoning, d->reasoning, sizeof s->reasoning - strlen(s->reasoning) - 1);
	if (d->tool_calls_json != NULL) {
		ck_assert_ptr_nonnull(d->tool_calls_raw);
		ck_assert_uint_gt(d->tool_calls_raw_len, 0);
		snprintf(s->tools, sizeof s->tools, "%s", d->tool_calls_json);
	}
	pthread_mutex_lock(&s->mu);
	s->deltas++;
	pthread_cond_broadcast(&s->cv);
	pthread_mutex_unlock(&s->mu);
	if (s->cancel_after != 0 && s->deltas == s->cancel_after)
		ollm_cancel(c, 0);
	return s->stop_after != 0 && s->deltas >= s->stop_after;
}

/* Chat one user message. */
static int
say(struct ollm *c, const char *text, struct seen *s, struct ollm_done *done)
{
	struct ollm_message m = { "user", text, NULL, 0 };

	return ollm_chat(c, &m, 1, NULL, seen_cb, s, done);
}

/* --- libollm ------------------------------------------------------------------ */

START_TEST(test_ping)
{
	struct ollm *c = fake_client();
	struct ollm_ping p;

	ck_assert_int_eq(ollm_ping(c, &p), OLLM_OK);
	ck_assert_str_eq(p.version, "9.9.9");
	ck_assert_int_eq(p.uptime_s, 42);
	ck_assert_int_eq(p.in_flight, 1);
	ck_assert_int_eq(ollm_last_error(c)->code, OLLM_OK);
	ollm_free(c);
}
END_TEST

START_TEST(test_chat_stream)
{
	struct ollm *c = fake_client();
	struct ollm_done done;
	struct seen s;

	seen_init(&s);
	ck_assert_int_eq(say(c, "hello", &s, &done), OLLM_OK);
	ck_assert_str_eq(s.content, "Hello");
	ck_assert_str_eq(s.reasoning, "think");
	ck_assert_int_eq(s.deltas, 3);
	ck_assert_str_eq(done.finish_reason, "stop");
	ck_assert_int_eq(done.usage.prompt_tokens, 3);
	ck_assert_int_eq(done.usage.completion_tokens, 2);
	ck_assert_int_eq(done.usage.total_tokens, 5);
	ck_assert_int_eq(done.usage.estimated, 1);
	ck_assert(fabs(done.cost - 0.5) < 1e-12);
	ck_assert_str_eq(done.model, "m");
	ck_assert_str_eq(done.upstream, "u");
	ck_assert_int_eq(done.ttft_ms, 10);
	ck_assert_int_eq(done.latency_ms, 20);
	ck_assert_ptr_null(done.content);
	ollm_done_clear(&done);
	ollm_done_clear(&done);

	/* The same connection carries on. */
	seen_init(&s);
	ck_assert_int_eq(say(c, "again", &s, NULL), OLLM_OK);
	ck_assert_str_eq(s.content, "re: again");
	ollm_free(c);
}
END_TEST

START_TEST(test_chat_options_and_non_stream)
{
	struct ollm *c = fake_client();
	struct ollm_chat_opts o;
	struct ollm_message m[2] = { { "system", "be brief", NULL, 0 }, { "user", "hello", NULL, 0 } };
	const char *stop[] = { "\n\n" };
	struct ollm_done done;
	struct seen s;

	seen_init(&s);
	ollm_chat_opts_init(&o);
	ck_assert_int_eq(o.stream, 1);
	ck_assert(o.temperature < 0 && o.top_p < 0);
	o.stream = 0;
	o.model = "m";
	o.tag = "t";
	o.max_tokens = 7;
	o.temperature = 0.2;
	o.stop = stop;
	o.n_stop = 1;
	o.has_seed = 1;
	o.seed = -3;
	ck_assert_int_eq(ollm_chat(c, m, 2, &o, seen_cb, &s, &done), OLLM_OK);
	ck_assert_int_eq(s.deltas, 0);
	ck_assert_str_eq(done.content, "Hello");
	ollm_done_clear(&done);
	ollm_free(c);
}
END_TEST

START_TEST(test_tool_calls_json)
{
	struct ollm *c = fake_client();
	struct seen s;
	json_error_t je;
	json_t *j;

	seen_init(&s);
	ck_assert_int_eq(say(c, "tools", &s, NULL), OLLM_OK);
	ck_assert_str_eq(s.tools,
	    "[{\"index\":0,\"id\":\"c\\\"1\",\"function\":{\"name\":\"f\","
	    "\"arguments\":\"{\\\"a\\\":-1.5}\\n\"}}]");
	j = json_loads(s.tools, 0, &je);
	ck_assert_ptr_nonnull(j);
	ck_assert_str_eq(json_string_value(json_object_get(json_object_get(
	    json_array_get(j, 0), "function"), "arguments")), "{\"a\":-1.5}\n");
	json_decref(j);
	ollm_free(c);
}
END_TEST

START_TEST(test_daemon_errors)
{
	struct ollm *c = fake_client();
	const struct ollm_error *e = ollm_last_error(c);
	struct ollm_ping p;
	struct seen s;

	seen_init(&s);
	ck_assert_int_eq(say(c, "budget", &s, NULL), OLLM_ERR_BUDGET_EXCEEDED);
	ck_assert_int_eq(e->code, OLLM_ERR_BUDGET_EXCEEDED);
	ck_assert_str_eq(e->daemon_code, "budget_exceeded");
	ck_assert_str_eq(e->message, "over the budget");
	ck_assert(e->retry_after < 0);
	ck_assert_int_eq(e->status, -1);

	ck_assert_int_eq(say(c, "rate", &s, NULL), OLLM_ERR_RATE_LIMITED);
	ck_assert(fabs(e->retry_after - 2.5) < 1e-12);

	ck_assert_int_eq(say(c, "upstream", &s, NULL), OLLM_ERR_UPSTREAM_ERROR);
	ck_assert_int_eq(e->status, 502);
	ck_assert_str_eq(e->message, "bad gateway");

	/* A code this library does not know counts as internal. */
	ck_assert_int_eq(say(c, "weird", &s, NULL), OLLM_ERR_INTERNAL);
	ck_assert_str_eq(e->daemon_code, "brand_new_code");

	/* None of these hurts the connection. */
	ck_assert_int_eq(ollm_connected(c), 1);
	ck_assert_int_eq(ollm_ping(c, &p), OLLM_OK);
	ck_assert_int_eq(e->code, OLLM_OK);
	ollm_free(c);
}
END_TEST

START_TEST(test_reply_for_another_id_is_skipped)
{
	struct ollm *c = fake_client();
	struct ollm_done done;
	struct seen s;

	seen_init(&s);
	ck_assert_int_eq(say(c, "other-id", &s, &done), OLLM_OK);
	ck_assert_str_eq(done.content, "mine");
	ollm_done_clear(&done);
	ollm_free(c);
}
END_TEST

/* What the status callback saw. */
struct statuses {
	int n;
	char lines[4][128];
};

static void
statuses_cb(struct ollm *c, uint64_t id, const struct ollm_status *st, void *arg)
{
	struct statuses *ss = arg;

	ck_assert_uint_ge(id, 1);
	if (ss->n < 4) {
		render_status(ss->lines[ss->n], sizeof ss->lines[0], st);
		if (strcmp(st->state, "retrying") == 0) {
			ck_assert_int_eq(st->attempt, 2);
			ck_assert_int_eq(st->of, 5);
		} else {
			ck_assert_int_eq(st->attempt, 0);
			ck_assert_str_eq(st->message, "upstream u allows 2 requests a minute");
		}
	}
	ss->n++;
}

/* Unknown reply types are skipped; status frames come only when asked for. */
START_TEST(test_status_frames)
{
	struct ollm *c = fake_client();
	struct statuses ss;
	struct seen s;

	seen_init(&s);
	ck_assert_int_eq(say(c, "waits", &s, NULL), OLLM_OK);
	ck_assert_str_eq(s.content, "not asked");
	ck_assert_int_eq(ollm_connected(c), 1);

	memset(&ss, 0, sizeof ss);
	ollm_set_status_cb(c, statuses_cb, &ss);
	seen_init(&s);
	ck_assert_int_eq(say(c, "waits", &s, NULL), OLLM_OK);
	ck_assert_str_eq(s.content, "asked");
	ck_assert_int_eq(ss.n, 2);
	ck_assert_str_eq(ss.lines[0], "waiting for rpm, 5.8 s");
	ck_assert_str_eq(ss.lines[1], "retrying 2/5: connection refused (in 1.0 s)");

	ollm_set_status_cb(c, NULL, NULL);
	seen_init(&s);
	ck_assert_int_eq(say(c, "waits", &s, NULL), OLLM_OK);
	ck_assert_str_eq(s.content, "not asked");
	ck_assert_int_eq(ss.n, 2);
	ollm_free(c);
}
END_TEST

START_TEST(test_cancel_from_callback_return)
{
	struct ollm *c = fake_client();
	struct ollm_ping p;
	struct seen s;

	seen_init(&s);
	s.stop_after = 3;
	ck_assert_int_eq(say(c, "long", &s, NULL), OLLM_ERR_CANCELLED);
	ck_assert_int_ge(s.deltas, 3);
	ck_assert_int_eq(ollm_connected(c), 1);
	/* The cancel's own reply comes after; the next call skips it. */
	ck_assert_int_eq(ollm_ping(c, &p), OLLM_OK);
	seen_init(&s);
	ck_assert_int_eq(say(c, "hello", &s, NULL), OLLM_OK);
	ck_assert_str_eq(s.content, "Hello");
	ollm_free(c);
}
END_TEST

START_TEST(test_cancel_inside_callback)
{
	struct ollm *c = fake_client();
	struct seen s;

	seen_init(&s);
	s.cancel_after = 2;
	ck_assert_int_eq(say(c, "long", &s, NULL), OLLM_ERR_CANCELLED);
	ck_assert_str_eq(ollm_last_error(c)->daemon_code, "cancelled");
	ollm_free(c);
}
END_TEST

struct canceller {
	struct ollm *c;
	struct seen *s;
};

/* Wait until the chat has seen a delta, then cancel it from this thread. */
static void *
canceller_main(void *arg)
{
	struct canceller *k = arg;

	pthread_mutex_lock(&k->s->mu);
	while (k->s->deltas < 5)
		pthread_cond_wait(&k->s->cv, &k->s->mu);
	pthread_mutex_unlock(&k->s->mu);
	ollm_cancel(k->c, 0);
	return NULL;
}

START_TEST(test_cancel_from_another_thread)
{
	struct ollm *c = fake_client();
	struct canceller k;
	struct seen s;
	pthread_t t;

	seen_init(&s);
	k.c = c;
	k.s = &s;
	ck_assert_int_eq(pthread_create(&t, NULL, canceller_main, &k), 0);
	ck_assert_int_eq(say(c, "long", &s, NULL), OLLM_ERR_CANCELLED);
	pthread_join(t, NULL);
	ck_assert_int_ge(s.deltas, 5);
	ollm_free(c);
}
END_TEST

START_TEST(test_stale_cancel_is_ignored)
{
	struct ollm *c = fake_client();
	struct seen s;

	/* A cancel with nothing in flight must not hit the next request. */
	ollm_cancel(c, 0);
	ollm_cancel(c, 77);
	seen_init(&s);
	ck_assert_int_eq(say(c, "hello", &s, NULL), OLLM_OK);
	ck_assert_str_eq(s.content, "Hello");
	ollm_free(c);
}
END_TEST

START_TEST(test_timeout_closes)
{
	struct ollm *c = fake_client();
	struct ollm_ping p;
	struct seen s;

	seen_init(&s);
	ollm_set_timeout(c, 100);
	ck_assert_int_eq(say(c, "silent", &s, NULL), OLLM_ERR_TIMEOUT);
	ck_assert_int_eq(ollm_connected(c), 0);
	ck_assert_int_eq(ollm_ping(c, &p), OLLM_ERR_IO);
	/* Connecting again works. */
	ck_assert_int_eq(ollm_connect(c, fake_path), OLLM_OK);
	ck_assert_int_eq(ollm_ping(c, &p), OLLM_OK);
	ollm_free(c);
}
END_TEST

START_TEST(test_bad_frames)
{
	struct ollm *c = fake_client();
	struct seen s;

	seen_init(&s);
	ck_assert_int_eq(say(c, "garbage", &s, NULL), OLLM_ERR_PROTOCOL);
	ck_assert_int_eq(ollm_connected(c), 0);
	ck_assert_ptr_nonnull(strstr(ollm_last_error(c)->message, "bad frame"));

	ck_assert_int_eq(ollm_connect(c, fake_path), OLLM_OK);
	ck_assert_int_eq(say(c, "badframe", &s, NULL), OLLM_ERR_PROTOCOL);
	ck_assert_str_eq(ollm_last_error(c)->daemon_code, "bad_frame");
	ck_assert_int_eq(ollm_connected(c), 0);
	ollm_free(c);
}
END_TEST

START_TEST(test_invalid_arguments)
{
	struct ollm *c = fake_client();
	struct ollm_message bad = { "user", "\xff\xfe", NULL, 0 };
	struct ollm_message norole = { NULL, "x", NULL, 0 };
	struct ollm_tokens_req tr;
	struct ollm_tokens t;
	struct ollm_ping p;

	ck_assert_int_eq(ollm_chat(c, &bad, 1, NULL, NULL, NULL, NULL), OLLM_ERR_INVALID);
	ck_assert_ptr_nonnull(strstr(ollm_last_error(c)->message, "UTF-8"));
	ck_assert_int_eq(ollm_chat(c, &norole, 1, NULL, NULL, NULL, NULL), OLLM_ERR_INVALID);
	ck_assert_int_eq(ollm_chat(c, NULL, 0, NULL, NULL, NULL, NULL), OLLM_ERR_INVALID);
	memset(&tr, 0, sizeof tr);
	ck_assert_int_eq(ollm_tokens(c, &tr, &t), OLLM_ERR_INVALID);
	tr.text = "\xc0\xaf";
	ck_assert_int_eq(ollm_tokens(c, &tr, &t), OLLM_ERR_INVALID);
	/* Nothing was sent: the connection is as good as before. */
	ck_assert_int_eq(ollm_ping(c, &p), OLLM_OK);
	ollm_free(c);

	c = ollm_new();
	ck_assert_int_eq(ollm_ping(c, &p), OLLM_ERR_IO);
	ollm_free(c);
	ollm_free(NULL);
}
END_TEST

START_TEST(test_unavailable)
{
	struct ollm *c = ollm_new();
	char path[256];
	int fd;

	snprintf(path, sizeof path, "%s/nothing.sock", fake_dir);
	ck_assert_int_eq(ollm_connect(c, path), OLLM_ERR_UNAVAILABLE);
	ck_assert_ptr_nonnull(strstr(ollm_last_error(c)->message, path));
	ck_assert_int_eq(ollm_connected(c), 0);

	/* A socket file nobody listens on. */
	snprintf(path, sizeof path, "%s/dead.sock", fake_dir);
	{
		struct sockaddr_un sun;

		unix_addr(&sun, path);
		fd = socket(AF_UNIX, SOCK_STREAM, 0);
		ck_assert_int_eq(bind(fd, (struct sockaddr *)&sun, sizeof sun), 0);
		close(fd);
	}
	ck_assert_int_eq(ollm_connect(c, path), OLLM_ERR_UNAVAILABLE);
	unlink(path);

	memset(path, 'a', sizeof path - 1);
	path[0] = '/';
	path[sizeof path - 1] = '\0';
	ck_assert_int_eq(ollm_connect(c, path), OLLM_ERR_INVALID);
	ollm_free(c);
}
END_TEST

START_TEST(test_tokens_stats_models_reset)
{
	struct ollm *c = fake_client();
	struct ollm_message m[2] = { { "user", "a", NULL, 0 }, { "assistant", "b", NULL, 0 } };
	struct ollm_tokens_req tr;
	struct ollm_tokens t;
	struct ollm_stats st;
	struct ollm_models mo;

	memset(&tr, 0, sizeof tr);
	tr.text = "hello world";
	tr.encoding = "o200k_base";
	ck_assert_int_eq(ollm_tokens(c, &tr, &t), OLLM_OK);
	ck_assert_int_eq(t.count, 11);
	ck_assert_str_eq(t.encoding, "o200k_base");
	ck_assert_ptr_null(t.ids);
	ollm_tokens_clear(&t);
	/* a text holding NUL goes whole, by its length */
	memset(&tr, 0, sizeof tr);
	tr.text = "a\0b";
	tr.text_len = 3;
	ck_assert_int_eq(ollm_tokens(c, &tr, &t), OLLM_OK);
	ck_assert_int_eq(t.count, 3);
	ollm_tokens_clear(&t);
	memset(&tr, 0, sizeof tr);
	tr.messages = m;
	tr.n_messages = 2;
	tr.ids = 1;
	ck_assert_int_eq(ollm_tokens(c, &tr, &t), OLLM_OK);
	ck_assert_int_eq(t.count, 2);
	ck_assert_uint_eq(t.n_ids, 3);
	ck_assert_uint_eq(t.ids[2], 3);
	ollm_tokens_clear(&t);

	ck_assert_int_eq(ollm_stats(c, NULL, -1, &st), OLLM_OK);
	ck_assert_uint_eq(st.total.requests, 1234567);
	ck_assert_uint_eq(st.by_model.n, 1);
	ck_assert_str_eq(st.by_model.entries[0].key, "m");
	ck_assert_uint_eq(st.by_user.n, 1);
	ck_assert_uint_eq(st.by_day.n, 1);
	ck_assert_uint_eq(st.by_tag.n, 0);
	ck_assert_int_eq(st.has_max_budget, 1);
	ck_assert(fabs(st.budget_left - 8.75) < 1e-12);
	ck_assert_uint_eq(st.n_budgets, 1);
	ck_assert_str_eq(st.budgets[0].period, "month");
	ollm_stats_clear(&st);
	ck_assert_int_eq(ollm_stats(c, "model", 1700000000, &st), OLLM_OK);
	ck_assert_int_eq(st.since, 1700000000);
	ck_assert_uint_eq(st.by_user.n, 0);
	ollm_stats_clear(&st);
	ollm_stats_clear(&st);

	ck_assert_int_eq(ollm_models(c, &mo), OLLM_OK);
	ck_assert_uint_eq(mo.n, 1);
	ck_assert_str_eq(mo.upstreams[0].base_url, "http://127.0.0.1:1/v1");
	ck_assert_int_eq(mo.upstreams[0].healthy, 1);
	ck_assert_uint_eq(mo.upstreams[0].n_models, 2);
	ck_assert_str_eq(mo.upstreams[0].models[1], "n");
	ollm_models_clear(&mo);

	ck_assert_int_eq(ollm_reset(c), OLLM_OK);
	ollm_free(c);
}
END_TEST

struct worker {
	int n;
	int ok;
};

/* One thread, one connection, many chats; each reply must be its own. */
static void *
worker_main(void *arg)
{
	struct worker *w = arg;
	struct ollm *c = ollm_new();
	char text[64], want[80];
	struct seen s;
	int i;

	if (c == NULL || ollm_connect(c, fake_path) != OLLM_OK)
		return NULL;
	for (i = 0; i < 200; i++) {
		seen_init(&s);
		snprintf(text, sizeof text, "thread %d message %d", w->n, i);
		snprintf(want, sizeof want, "re: %s", text);
		if (say(c, text, &s, NULL) != OLLM_OK || strcmp(s.content, want) != 0)
			break;
		w->ok++;
	}
	ollm_free(c);
	return NULL;
}

START_TEST(test_two_threads_two_connections)
{
	struct worker w[2] = { { 0, 0 }, { 1, 0 } };
	pthread_t t[2];
	int i;

	for (i = 0; i < 2; i++)
		ck_assert_int_eq(pthread_create(&t[i], NULL, worker_main, &w[i]), 0);
	for (i = 0; i < 2; i++)
		pthread_join(t[i], NULL);
	ck_assert_int_eq(w[0].ok, 200);
	ck_assert_int_eq(w[1].ok, 200);
}
END_TEST

START_TEST(test_error_names)
{
	int code;

	for (code = OLLM_OK; code <= OLLM_ERR_UNTRUSTED; code++) {
		ck_assert_str_ne(ollm_strerror(code), "unknown error");
		ck_assert_str_ne(ollm_err_name(code), "unknown");
	}
	ck_assert_str_eq(ollm_err_name(OLLM_ERR_BUDGET_EXCEEDED), "budget_exceeded");
	ck_assert_str_eq(ollm_err_name(OLLM_ERR_UPSTREAM_UNAVAILABLE), "upstream_unavailable");
	ck_assert_str_eq(ollm_strerror(999), "unknown error");
}
END_TEST

/* --- socket resolution --------------------------------------------------------- */

START_TEST(test_sockpath)
{
	char buf[108], dir[64], user[128], sys[128], longp[300];
	int fd;

	ck_assert_int_eq(sockpath_resolve("/x.sock", "/env.sock", 1000, "/run/user/1000",
	    "/sys.sock", buf, sizeof buf), 0);
	ck_assert_str_eq(buf, "/x.sock");
	ck_assert_int_eq(sockpath_resolve("", "/env.sock", 1000, NULL, "/sys.sock", buf,
	    sizeof buf), 0);
	ck_assert_str_eq(buf, "/env.sock");
	ck_assert_int_eq(sockpath_resolve(NULL, "", 0, "/run/user/0", "/sys.sock", buf,
	    sizeof buf), 0);
	ck_assert_str_eq(buf, "/sys.sock");

	/* A user: XDG_RUNTIME_DIR, else /tmp; relative XDG is ignored. */
	ck_assert_int_eq(sockpath_resolve(NULL, NULL, 1000, "/nonexistent/run",
	    "/nonexistent/sys.sock", buf, sizeof buf), 0);
	ck_assert_str_eq(buf, "/nonexistent/run/openllmd.sock");
	ck_assert_int_eq(sockpath_resolve(NULL, NULL, 1000, NULL,
	    "/nonexistent/sys.sock", buf, sizeof buf), 0);
	ck_assert_str_eq(buf, "/tmp/openllmd-1000/openllmd.sock");
	ck_assert_int_eq(sockpath_resolve(NULL, NULL, 1000, "run",
	    "/nonexistent/sys.sock", buf, sizeof buf), 0);
	ck_assert_str_eq(buf, "/tmp/openllmd-1000/openllmd.sock");

	/* The user's socket is missing and the system one exists: the system one. */
	snprintf(dir, sizeof dir, "/tmp/check_sockpath.XXXXXX");
	ck_assert_ptr_nonnull(mkdtemp(dir));
	snprintf(sys, sizeof sys, "%s/sys.sock", dir);
	snprintf(user, sizeof user, "%s/openllmd.sock", dir);
	fd = open(sys, O_CREAT | O_WRONLY, 0600);
	ck_assert_int_ne(fd, -1);
	close(fd);
	ck_assert_int_eq(sockpath_resolve(NULL, NULL, 1000, dir, sys, buf, sizeof buf), 0);
	ck_assert_str_eq(buf, sys);
	/* ... but the user's own socket wins when it is there. */
	fd = open(user, O_CREAT | O_WRONLY, 0600);
	ck_assert_int_ne(fd, -1);
	close(fd);
	ck_assert_int_eq(sockpath_resolve(NULL, NULL, 1000, dir, sys, buf, sizeof buf), 0);
	ck_assert_str_eq(buf, user);
	unlink(user);
	unlink(sys);
	rmdir(dir);

	/* Too long for the buffer. */
	memset(longp, 'a', sizeof longp - 1);
	longp[0] = '/';
	longp[sizeof longp - 1] = '\0';
	ck_assert_int_eq(sockpath_resolve(longp, NULL, 0, NULL, "/s", buf, sizeof buf), -1);
	ck_assert_int_eq(sockpath_resolve(NULL, NULL, 1000, longp, "/s", buf, sizeof buf), -1);

	/* The public call reads OPENLLMD_SOCKET. */
	setenv("OPENLLMD_SOCKET", "/from/env.sock", 1);
	ck_assert_int_eq(ollm_socket_path(NULL, buf, sizeof buf), OLLM_OK);
	ck_assert_str_eq(buf, "/from/env.sock");
	ck_assert_int_eq(ollm_socket_path("/arg.sock", buf, sizeof buf), OLLM_OK);
	ck_assert_str_eq(buf, "/arg.sock");
	unsetenv("OPENLLMD_SOCKET");
	ck_assert_int_eq(ollm_socket_path(NULL, buf, 4), OLLM_ERR_INVALID);
}
END_TEST

/* --- ollmctl: parsing ------------------------------------------------------------ */

/* The private /tmp/openllmd-UID directory: refused unless a real 0700 directory of that uid. */
START_TEST(test_private_dir)
{
	/* a uid no one has, so that its directory is ours to make and remove */
	uid_t fake = (uid_t)(3000000000u + (unsigned)getpid() % 1000000u);
	char dir[64], sock[128], cause[256];

	ck_assert_int_eq(sockpath_private_dir(fake, dir, sizeof dir), 0);
	snprintf(sock, sizeof sock, "%s/openllmd.sock", dir);
	rmdir(dir);
	unlink(dir);
	/* elsewhere: not checked */
	ck_assert_int_eq(sockpath_check_private("/run/openllmd/openllmd.sock", fake, 0,
	    cause, sizeof cause), 0);
	ck_assert_int_eq(sockpath_check_private(dir, fake, 0, cause, sizeof cause), 0);
	/* missing and not to be made */
	ck_assert_int_eq(sockpath_check_private(sock, fake, 0, cause, sizeof cause), -1);
	ck_assert_msg(strstr(cause, "No such file") != NULL, "%s", cause);
	/* made by us, so owned by someone other than fake */
	ck_assert_int_eq(sockpath_check_private(sock, fake, 1, cause, sizeof cause), -1);
	ck_assert_msg(strstr(cause, "belongs to uid") != NULL &&
	    strstr(cause, "not to you") != NULL, "%s", cause);
	rmdir(dir);
	/* a symbolic link */
	ck_assert_int_eq(symlink("/tmp", dir), 0);
	ck_assert_int_eq(sockpath_check_private(sock, fake, 1, cause, sizeof cause), -1);
	ck_assert_msg(strstr(cause, "not a directory (a symbolic link)") != NULL, "%s", cause);
	unlink(dir);
}
END_TEST

START_TEST(test_parse_numbers)
{
	int64_t v;
	double d;

	ck_assert_int_eq(parse_int("42", 1, 100, &v), 0);
	ck_assert_int_eq(v, 42);
	ck_assert_int_eq(parse_int("0", 1, 100, &v), -1);
	ck_assert_int_eq(parse_int("101", 1, 100, &v), -1);
	ck_assert_int_eq(parse_int("4x", 1, 100, &v), -1);
	ck_assert_int_eq(parse_int("", 1, 100, &v), -1);
	ck_assert_int_eq(parse_int("99999999999999999999", 0, INT64_MAX, &v), -1);
	ck_assert_int_eq(parse_double("0.7", 0, 10, &d), 0);
	ck_assert(fabs(d - 0.7) < 1e-12);
	ck_assert_int_eq(parse_double("-0.1", 0, 10, &d), -1);
	ck_assert_int_eq(parse_double("nan", 0, 10, &d), -1);
	ck_assert_int_eq(parse_double("inf", 0, INFINITY, &d), -1);
	ck_assert_int_eq(parse_double("1e", 0, 10, &d), -1);
}
END_TEST

START_TEST(test_parse_since)
{
	time_t now = 1714600000;        /* 2024-05-01 21:46:40 UTC */
	int64_t v;

	ck_assert_int_eq(parse_since("2024-05-01", now, &v), 0);
	ck_assert_int_eq(v, 1714521600);
	ck_assert_int_eq(parse_since("2024-05-01 12:30", now, &v), 0);
	ck_assert_int_eq(v, 1714521600 + 12 * 3600 + 30 * 60);
	ck_assert_int_eq(parse_since("2024-05-01T12:30:15", now, &v), 0);
	ck_assert_int_eq(v, 1714521600 + 12 * 3600 + 30 * 60 + 15);
	ck_assert_int_eq(parse_since("@123", now, &v), 0);
	ck_assert_int_eq(v, 123);
	ck_assert_int_eq(parse_since("today", now, &v), 0);
	ck_assert_int_eq(v, 1714521600);
	ck_assert_int_eq(parse_since("yesterday", now, &v), 0);
	ck_assert_int_eq(v, 1714521600 - 86400);
	ck_assert_int_eq(parse_since("7d", now, &v), 0);
	ck_assert_int_eq(v, now - 7 * 86400);
	ck_assert_int_eq(parse_since("12h", now, &v), 0);
	ck_assert_int_eq(v, now - 12 * 3600);
	ck_assert_int_eq(parse_since("30m", now, &v), 0);
	ck_assert_int_eq(v, now - 1800);
	ck_assert_int_eq(parse_since("2w", now, &v), 0);
	ck_assert_int_eq(v, now - 14 * 86400);

	ck_assert_int_eq(parse_since("2024-02-30", now, &v), -1);
	ck_assert_int_eq(parse_since("2024-13-01", now, &v), -1);
	ck_assert_int_eq(parse_since("2024-05-01 25:00", now, &v), -1);
	ck_assert_int_eq(parse_since("2024-05-01x", now, &v), -1);
	ck_assert_int_eq(parse_since("2024- 5-01", now, &v), -1);
	ck_assert_int_eq(parse_since("+2024-05-01", now, &v), -1);
	ck_assert_int_eq(parse_since("7y", now, &v), -1);
	ck_assert_int_eq(parse_since("d", now, &v), -1);
	ck_assert_int_eq(parse_since("@-5", now, &v), -1);
	ck_assert_int_eq(parse_since("99999999999d", now, &v), -1);
	ck_assert_int_eq(parse_since("", now, &v), -1);

	/* A time of today, and ISO 8601 instants with Z or an offset. */
	ck_assert_int_eq(parse_since("12:30", now, &v), 0);
	ck_assert_int_eq(v, 1714521600 + 12 * 3600 + 30 * 60);
	ck_assert_int_eq(parse_since("21:46:30", now, &v), 0);
	ck_assert_int_eq(v, now - 10);
	ck_assert_int_eq(parse_since("1h", now, &v), 0);
	ck_assert_int_eq(v, now - 3600);
	ck_assert_int_eq(parse_since("2024-05-01T12:30:15Z", now, &v), 0);
	ck_assert_int_eq(v, 1714521600 + 12 * 3600 + 30 * 60 + 15);
	ck_assert_int_eq(parse_since("2024-05-01T12:30:15.250Z", now, &v), 0);
	ck_assert_int_eq(v, 1714521600 + 12 * 3600 + 30 * 60 + 15);
	ck_assert_int_eq(parse_since("2024-05-01T14:30:15+02:00", now, &v), 0);
	ck_assert_int_eq(v, 1714521600 + 12 * 3600 + 30 * 60 + 15);
	ck_assert_int_eq(parse_since("2024-05-01T07:00-0530", now, &v), 0);
	ck_assert_int_eq(v, 1714521600 + 12 * 3600 + 30 * 60);
	ck_assert_int_eq(parse_since("2024-05-01T14:30+02", now, &v), 0);
	ck_assert_int_eq(v, 1714521600 + 12 * 3600 + 30 * 60);
	/* Later than now parses; cmd_stats refuses it. */
	ck_assert_int_eq(parse_since("23:00", now, &v), 0);
	ck_assert_int_gt(v, now);
	ck_assert_int_eq(parse_since("24:00", now, &v), -1);
	ck_assert_int_eq(parse_since("2024-05-01T12:30Q", now, &v), -1);
	ck_assert_int_eq(parse_since("2024-05-01T12:30+25:00", now, &v), -1);
	ck_assert_int_eq(parse_since("2024-05-01T12:30+02:61", now, &v), -1);
	ck_assert_int_eq(parse_since("2024-05-01T12:30:1Z", now, &v), -1);
	ck_assert_int_eq(parse_since("2024-05-01T12:30:15.Z", now, &v), -1);
	ck_assert_int_eq(parse_since("1:30", now, &v), -1);
}
END_TEST

/* --- ollmctl: rendering ---------------------------------------------------------- */

START_TEST(test_thousands_and_money)
{
	char b[64];

	render_thousands(b, sizeof b, 0);
	ck_assert_str_eq(b, "0");
	render_thousands(b, sizeof b, 999);
	ck_assert_str_eq(b, "999");
	render_thousands(b, sizeof b, 1000);
	ck_assert_str_eq(b, "1,000");
	render_thousands(b, sizeof b, 1234567);
	ck_assert_str_eq(b, "1,234,567");
	render_thousands(b, sizeof b, 100000);
	ck_assert_str_eq(b, "100,000");
	render_thousands(b, sizeof b, UINT64_MAX);
	ck_assert_str_eq(b, "18,446,744,073,709,551,615");
	render_thousands(b, 4, 1234567);
	ck_assert_str_eq(b, "1,2");

	render_money(b, sizeof b, 0);
	ck_assert_str_eq(b, "0.0000");
	render_money(b, sizeof b, 12345.6);
	ck_assert_str_eq(b, "12,345.6000");
	render_money(b, sizeof b, 0.99995);
	ck_assert_str_eq(b, "1.0000");
	render_money(b, sizeof b, 0.00004);
	ck_assert_str_eq(b, "0.0000");
	render_money(b, sizeof b, -1.5);
	ck_assert_str_eq(b, "-1.5000");
	render_money(b, sizeof b, NAN);
	ck_assert_str_eq(b, "-");
}
END_TEST

START_TEST(test_durations_times_users)
{
	char b[64];

	render_duration(b, sizeof b, 5);
	ck_assert_str_eq(b, "5s");
	render_duration(b, sizeof b, 125);
	ck_assert_str_eq(b, "2m 5s");
	render_duration(b, sizeof b, 7384);
	ck_assert_str_eq(b, "2h 3m");
	render_duration(b, sizeof b, 3 * 86400 + 4 * 3600 + 5);
	ck_assert_str_eq(b, "3d 4h");
	render_time(b, sizeof b, 1714521600);
	ck_assert_str_eq(b, "2024-05-01 00:00:00 UTC");
	ck_assert_str_eq(render_user(b, sizeof b, "0"), "root");
	ck_assert_str_eq(render_user(b, sizeof b, "4000000000"), "uid 4000000000");
	/* a key that is no uid is a named user's (an API key's user with no account) */
	ck_assert_str_eq(render_user(b, sizeof b, "alice"), "alice");
	ck_assert_str_eq(render_user(b, sizeof b, "4294967295"), "uid 4294967295");
}
END_TEST

START_TEST(test_error_and_usage_lines)
{
	struct ollm_error e;
	struct ollm_done d;
	char b[512];

	memset(&e, 0, sizeof e);
	e.code = OLLM_ERR_RATE_LIMITED;
	e.retry_after = 1.2;
	e.status = -1;
	snprintf(e.message, sizeof e.message, "queue full");
	render_error(b, sizeof b, &e);
	ck_assert_str_eq(b, "rate limited: queue full (retry after 2 s)");
	e.code = OLLM_ERR_UPSTREAM_ERROR;
	e.status = 503;
	e.retry_after = -1;
	snprintf(e.message, sizeof e.message, "model server said no");
	render_error(b, sizeof b, &e);
	ck_assert_str_eq(b, "model server error: model server said no (HTTP 503)");
	e.code = OLLM_ERR_BUDGET_EXCEEDED;
	e.message[0] = '\0';
	render_error(b, sizeof b, &e);
	ck_assert_str_eq(b, "budget exceeded");

	memset(&d, 0, sizeof d);
	d.usage.prompt_tokens = 1200;
	d.usage.completion_tokens = 101;
	d.usage.total_tokens = 1301;
	d.cost = 0.25;
	d.ttft_ms = 100;
	d.latency_ms = 1100;
	d.durable = 1;
	render_usage(b, sizeof b, &d);
	ck_assert_str_eq(b, "[1,200 prompt + 101 completion = 1,301 tokens, cost 0.2500, "
	    "101.0 tokens/s, first token 100 ms]");
	d.usage.estimated = 1;
	d.ttft_ms = -1;
	d.latency_ms = -1;
	render_usage(b, sizeof b, &d);
	ck_assert_str_eq(b, "[1,200 prompt + 101 completion = 1,301 tokens (estimated), "
	    "cost 0.2500]");
	d.durable = 0;
	render_usage(b, sizeof b, &d);
	ck_assert_str_eq(b, "[1,200 prompt + 101 completion = 1,301 tokens (estimated), "
	    "cost 0.2500; not yet recorded by the daemon's ledger]");
}
END_TEST

/* A stats result built by hand. */
static void
stats_sample(struct ollm_stats *s, struct ollm_counters_entry *models,
    struct ollm_counters_entry *users, struct ollm_budget *b)
{
	memset(s, 0, sizeof *s);
	s->since = 1714521600;
	s->total.requests = 1500;
	s->total.errors = 2;
	s->total.prompt_tokens = 1234567;
	s->total.completion_tokens = 7654321;
	s->total.total_tokens = 8888888;
	s->total.cost = 12.5;
	models[0].key = (char *)"small";
	models[0].c = s->total;
	models[0].c.total_tokens = 10;
	models[1].key = (char *)"big-model-name";
	models[1].c = s->total;
	models[1].c.total_tokens = 8888878;
	s->by_model.entries = models;
	s->by_model.n = 2;
	users[0].key = (char *)"0";
	users[0].c = s->total;
	s->by_user.entries = users;
	s->by_user.n = 1;
	s->has_max_budget = 1;
	s->max_budget = 100;
	s->budget_left = 87.5;
	b->scope = (char *)"tag:ci";
	b->unit = (char *)"tokens";
	b->period = (char *)"day";
	b->limit = 100000;
	b->used = 2500;
	b->left = 97500;
	s->budgets = b;
	s->n_budgets = 1;
}

START_TEST(test_stats_table)
{
	struct ollm_counters_entry models[2], users[1];
	struct ollm_budget b;
	struct ollm_stats s;
	char *out = NULL;
	size_t len;
	FILE *f;

	stats_sample(&s, models, users, &b);
	f = open_memstream(&out, &len);
	render_stats(f, &s, NULL);
	fclose(f);
	ck_assert_ptr_nonnull(strstr(out, "Usage since 2024-05-01 00:00:00 UTC"));
	ck_assert_ptr_nonnull(strstr(out, "1,234,567"));
	ck_assert_ptr_nonnull(strstr(out, "8,888,888"));
	ck_assert_ptr_nonnull(strstr(out, "12.5000"));
	/* Most tokens first, users by name, budgets with what is left. */
	ck_assert_ptr_nonnull(strstr(out, "big-model-name"));
	ck_assert(strstr(out, "big-model-name") < strstr(out, "small"));
	ck_assert_ptr_nonnull(strstr(out, "\nroot "));
	ck_assert_ptr_nonnull(strstr(out, "Budget: 100.0000, left 87.5000"));
	ck_assert_ptr_nonnull(strstr(out, "Budget tag:ci (tokens per day): used 2,500 of 100,000, left 97,500"));
	/* Columns line up: every row of the model table is as long as its header. */
	{
		char *h = strstr(out, "\nmodel "), *r1, *r2;

		ck_assert_ptr_nonnull(h);
		h++;
		r1 = strchr(h, '\n') + 1;
		r2 = strchr(r1, '\n') + 1;
		ck_assert_int_eq(strchr(h, '\n') - h, strchr(r1, '\n') - r1);
		ck_assert_int_eq(strchr(r1, '\n') - r1, strchr(r2, '\n') - r2);
	}
	free(out);

	f = open_memstream(&out, &len);
	render_stats(f, &s, "user");
	fclose(f);
	ck_assert_ptr_null(strstr(out, "big-model-name"));
	ck_assert_ptr_nonnull(strstr(out, "\nroot "));
	free(out);
}
END_TEST

/* max_budget is also in the budgets list (all, money, ever): it is shown once. */
START_TEST(test_stats_budget_once)
{
	struct ollm_counters_entry models[2], users[1];
	struct ollm_budget b[2];
	struct ollm_stats s;
	char *out = NULL, *p;
	size_t len;
	int n = 0;
	FILE *f;

	stats_sample(&s, models, users, &b[1]);
	b[0].scope = (char *)"all";
	b[0].unit = (char *)"money";
	b[0].period = (char *)"ever";
	b[0].limit = 100;
	b[0].used = 12.5;
	b[0].left = 87.5;
	s.budgets = b;
	s.n_budgets = 2;
	f = open_memstream(&out, &len);
	render_stats(f, &s, NULL);
	fclose(f);
	for (p = out; (p = strstr(p, "100.0000")) != NULL; p++)
		n++;
	ck_assert_msg(n == 1, "max_budget shown %d times:\n%s", n, out);
	ck_assert_ptr_nonnull(strstr(out, "Budget tag:ci (tokens per day)"));
	ck_assert_ptr_null(strstr(out, "Budget: none"));
	free(out);
}
END_TEST

/* stats --by day: bars proportional to tokens, in blocks or in ASCII. */
START_TEST(test_day_chart)
{
	struct ollm_counters_entry days[3];
	struct ollm_counters_map m = { days, 3 };
	char *out = NULL, *l1, *l2, *l3;
	size_t len;
	FILE *f;

	memset(days, 0, sizeof days);
	days[0].key = (char *)"2024-05-03";
	days[0].c.total_tokens = 1;
	days[1].key = (char *)"2024-05-01";
	days[1].c.total_tokens = 1000;
	days[2].key = (char *)"2024-05-02";
	days[2].c.total_tokens = 500;

	f = open_memstream(&out, &len);
	render_day_chart(f, &m, 0);
	fclose(f);
	ck_assert_ptr_nonnull(l1 = strstr(out, "\n2024-05-01  "));
	ck_assert_ptr_nonnull(l2 = strstr(out, "\n2024-05-02  "));
	ck_assert_ptr_nonnull(l3 = strstr(out, "\n2024-05-03  "));
	ck_assert(l1 < l2 && l2 < l3);          /* by date */
	ck_assert_ptr_nonnull(strstr(l1, "  ######################################## 1,000\n"));
	ck_assert_ptr_nonnull(strstr(l2, "  #################### 500\n"));
	ck_assert_ptr_nonnull(strstr(l3, "  . 1\n"));
	ck_assert_ptr_null(strstr(out, "\xe2"));
	free(out);

	f = open_memstream(&out, &len);
	render_day_chart(f, &m, 1);
	fclose(f);
	/* 40 full blocks; 20; and an eighth for the smallest day that is not zero. */
	ck_assert_ptr_nonnull(strstr(out, "2024-05-01  \u2588\u2588\u2588\u2588\u2588\u2588"
	    "\u2588\u2588\u2588\u2588\u2588\u2588\u2588\u2588\u2588\u2588\u2588\u2588\u2588\u2588"
	    "\u2588\u2588\u2588\u2588\u2588\u2588\u2588\u2588\u2588\u2588\u2588\u2588\u2588\u2588"
	    "\u2588\u2588\u2588\u2588\u2588\u2588 1,000\n"));
	ck_assert_ptr_nonnull(strstr(out, "2024-05-03  \u258F 1\n"));
	free(out);
}
END_TEST

START_TEST(test_stats_json_shape)
{
	struct ollm_counters_entry models[2], users[1];
	struct ollm_budget b;
	struct ollm_stats s;
	const char *keys[] = { "since", "total", "by_model", "by_user", "by_tag", "by_day",
	    "max_budget", "budget_left", "budgets" };
	const char *ckeys[] = { "requests", "errors", "prompt_tokens", "completion_tokens",
	    "total_tokens", "estimated", "cost" };
	json_error_t je;
	json_t *j, *c;
	char *out = NULL;
	size_t len, i;
	FILE *f;

	stats_sample(&s, models, users, &b);
	f = open_memstream(&out, &len);
	ck_assert_int_eq(render_stats_json(f, &s), 0);
	fclose(f);
	j = json_loads(out, 0, &je);
	ck_assert_ptr_nonnull(j);
	ck_assert_uint_eq(json_object_size(j), sizeof keys / sizeof keys[0]);
	for (i = 0; i < sizeof keys / sizeof keys[0]; i++)
		ck_assert_ptr_nonnull(json_object_get(j, keys[i]));
	c = json_object_get(j, "total");
	ck_assert_uint_eq(json_object_size(c), sizeof ckeys / sizeof ckeys[0]);
	for (i = 0; i < sizeof ckeys / sizeof ckeys[0]; i++)
		ck_assert_ptr_nonnull(json_object_get(c, ckeys[i]));
	ck_assert_int_eq(json_integer_value(json_object_get(c, "prompt_tokens")), 1234567);
	ck_assert(fabs(json_real_value(json_object_get(c, "cost")) - 12.5) < 1e-12);
	ck_assert_int_eq(json_integer_value(json_object_get(j, "since")), 1714521600);
	/* by_user is keyed by uid, as the daemon sends it. */
	ck_assert_ptr_nonnull(json_object_get(json_object_get(j, "by_user"), "0"));
	ck_assert_uint_eq(json_object_size(json_object_get(j, "by_model")), 2);
	ck_assert_uint_eq(json_object_size(json_object_get(j, "by_tag")), 0);
	ck_assert(fabs(json_real_value(json_object_get(j, "budget_left")) - 87.5) < 1e-12);
	json_decref(j);
	free(out);

	s.has_max_budget = 0;
	f = open_memstream(&out, &len);
	ck_assert_int_eq(render_stats_json(f, &s), 0);
	fclose(f);
	j = json_loads(out, 0, &je);
	ck_assert(json_is_null(json_object_get(j, "max_budget")));
	ck_assert(json_is_null(json_object_get(j, "budget_left")));
	json_decref(j);
	free(out);
}
END_TEST

START_TEST(test_models_listing)
{
	char *names[] = { (char *)"a", (char *)"b" };
	struct ollm_upstream u = { (char *)"local", (char *)"http://h/v1", (char *)"a", 1, 2, names, 2 };
	struct ollm_models m = { &u, 1 };
	char *out = NULL;
	size_t len;
	FILE *f;

	f = open_memstream(&out, &len);
	render_models(f, &m);
	fclose(f);
	ck_assert_str_eq(out, "local  http://h/v1  healthy, 2 in flight\n"
	    "  default model: a\n  serves: a, b\n");
	free(out);
}
END_TEST

/* Every test: connection, socket resolution, ollmctl's parsing and printing. */
static Suite *
libollm_suite(void)
{
	Suite *s = suite_create("libollm");
	TCase *tc;

	tc = tcase_create("connection");
	tcase_add_checked_fixture(tc, fake_start, fake_stop);
	tcase_add_test(tc, test_ping);
	tcase_add_test(tc, test_chat_stream);
	tcase_add_test(tc, test_chat_options_and_non_stream);
	tcase_add_test(tc, test_tool_calls_json);
	tcase_add_test(tc, test_daemon_errors);
	tcase_add_test(tc, test_reply_for_another_id_is_skipped);
	tcase_add_test(tc, test_status_frames);
	tcase_add_test(tc, test_cancel_from_callback_return);
	tcase_add_test(tc, test_cancel_inside_callback);
	tcase_add_test(tc, test_cancel_from_another_thread);
	tcase_add_test(tc, test_stale_cancel_is_ignored);
	tcase_add_test(tc, test_timeout_closes);
	tcase_add_test(tc, test_bad_frames);
	tcase_add_test(tc, test_invalid_arguments);
	tcase_add_test(tc, test_unavailable);
	tcase_add_test(tc, test_tokens_stats_models_reset);
	tcase_add_test(tc, test_two_threads_two_connections);
	tcase_add_test(tc, test_error_names);
	suite_add_tcase(s, tc);

	tc = tcase_create("sockpath");
	tcase_add_test(tc, test_sockpath);
	tcase_add_test(tc, test_private_dir);
	suite_add_tcase(s, tc);

	tc = tcase_create("ollmctl");
	tcase_add_test(tc, test_parse_numbers);
	tcase_add_test(tc, test_parse_since);
	tcase_add_test(tc, test_thousands_and_money);
	tcase_add_test(tc, test_durations_times_users);
	tcase_add_test(tc, test_error_and_usage_lines);
	tcase_add_test(tc, test_stats_table);
	tcase_add_test(tc, test_stats_budget_once);
	tcase_add_test(tc, test_day_chart);
	tcase_add_test(tc, test_stats_json_shape);
	tcase_add_test(tc, test_models_listing);
	suite_add_tcase(s, tc);
	return s;
}

int
main(void)
{
	SRunner *sr = srunner_create(libollm_suite());
	int failed;

	srunner_run_all(sr, CK_NORMAL);
	failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
