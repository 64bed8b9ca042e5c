/*
 * latency_bench: the latency openllmd adds to a chat, measured side by side.
 * Alternates a streamed chat sent straight to the fake model server (libcurl,
 * keep-alive) with the same chat through the daemon's socket, and prints the
 * median and p99 of each and of their difference.
 *
 * latency_bench SOCKET BASE_URL [N]
 */
#include "config.h"

#include <curl/curl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "protocol/frame.h"
#include "protocol/message.h"

static const char *bench_body =
    "{\"model\":\"fake-model\",\"stream\":true,\"stream_options\":{\"include_usage\":true},"
    "\"messages\":[{\"role\":\"user\",\"content\":\"latency [[chunks=4]]\"}]}";

static double
now_us(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec * 1e6 + ts.tv_nsec / 1e3;
}

static size_t
sink_cb(char *p, size_t size, size_t n, void *arg)
{
	size_t *total = arg;

	(void)p;
	*total += size * n;
	return size * n;
}

/* One streamed chat straight to the server; microseconds. */
static double
direct_once(CURL *easy)
{
	size_t total = 0;
	double t0 = now_us();

	curl_easy_setopt(easy, CURLOPT_WRITEDATA, &total);
	if (curl_easy_perform(easy) != CURLE_OK || total == 0) {
		fprintf(stderr, "latency_bench: direct request failed\n");
		exit(1);
	}
	return now_us() - t0;
}

/* One streamed chat through the daemon, up to its done frame; microseconds. */
static double
daemon_once(int fd, uint64_t id)
{
	struct frame_reader fr;
	struct chat_message msg = { .role = (char *)"user", .content = (char *)"latency [[chunks=4]]" };
	struct request req;
	msgpack_sbuffer sb;
	uint8_t buf[65536];
	double t0 = now_us();
	char cause[128];

	message_request_init(&req, OP_CHAT);
	req.id = id;
	req.u.chat.messages = &msg;
	req.u.chat.n_messages = 1;
	msgpack_sbuffer_init(&sb);
	if (message_request_encode(&sb, &req) == -1 || write(fd, sb.data, sb.size) != (ssize_t)sb.size) {
		fprintf(stderr, "latency_bench: cannot send\n");
		exit(1);
	}
	msgpack_sbuffer_destroy(&sb);
	frame_reader_init(&fr, FRAME_MAX_DEFAULT);
	for (;;) {
		ssize_t n = read(fd, buf, sizeof buf);
		size_t off = 0;
		if (n <= 0) {
			fprintf(stderr, "latency_bench: daemon closed the connection\n");
			exit(1);
		}
		while (off < (size_t)n) {
			const uint8_t *body;
			size_t used, len;
			struct reply *r;
			struct message_error err;
			enum frame_status st = frame_reader_feed(&fr, buf + off, (size_t)n - off, &used,
			    &body, &len, cause, sizeof cause);
			off += used;
			if (st == FRAME_ERROR) {
				fprintf(stderr, "latency_bench: %s\n", cause);
				exit(1);
			}
			if (st != FRAME_READY)
				continue;
			if (message_reply_decode(body, len, OP_CHAT, &r, &err) == -1) {
				fprintf(stderr, "latency_bench: %s\n", err.message);
				exit(1);
			}
			enum reply_type type = r->type;
			message_reply_free(r);
			if (type == REPLY_ERROR) {
				fprintf(stderr, "latency_bench: the daemon answered with an error\n");
				exit(1);
			}
			if (type == REPLY_DONE) {
				frame_reader_clear(&fr);
				return now_us() - t0;
			}
		}
	}
}

static int
cmp_double(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;

	return x < y ? -1 : x > y;
}

static void
report(const char *what, double *v, int n)
{
	qsort(v, (size_t)n, sizeof *v, cmp_double);
	printf("%-22s median %8.1f us   p99 %8.1f us\n", what, v[n / 2], v[(n * 99) / 100]);
}

int
main(int argc, char **argv)
{
	struct sockaddr_un sun;
	char url[512];
	int n = argc > 3 ? atoi(argv[3]) : 2000, fd;
	double *direct, *daemon, *added;
	struct curl_slist *headers = NULL;
	CURL *easy;

	if (argc < 3 || n < 10) {
		fprintf(stderr, "usage: latency_bench SOCKET BASE_URL [N]\n");
		return 64;
	}
	memset(&sun, 0, sizeof sun);
	sun.sun_family = AF_UNIX;
	snprintf(sun.sun_path, sizeof sun.sun_path, "%s", argv[1]);
	if ((fd = socket(AF_UNIX, SOCK_STREAM, 0)) == -1 ||
	    connect(fd, (struct sockaddr *)&sun, sizeof sun) == -1) {
		perror("latency_bench: connect");
		return 69;
	}
	curl_global_init(CURL_GLOBAL_DEFAULT);
	easy = curl_easy_init();
	snprintf(url, sizeof url, "%s/chat/completions", argv[2]);
	headers = curl_slist_append(headers, "Content-Type: application/json");
	curl_easy_setopt(easy, CURLOPT_URL, url);
	curl_easy_setopt(easy, CURLOPT_HTTPHEADER, headers);
	curl_easy_setopt(easy, CURLOPT_POSTFIELDS, bench_body);
	curl_easy_setopt(easy, CURLOPT_WRITEFUNCTION, sink_cb);
	curl_easy_setopt(easy, CURLOPT_TCP_NODELAY, 1L);
	direct = calloc((size_t)n, sizeof *direct);
	daemon = calloc((size_t)n, sizeof *daemon);
	added = calloc((size_t)n, sizeof *added);
	for (int i = 0; i < 50; i++) {         /* warm up both paths */
		direct_once(easy);
		daemon_once(fd, (uint64_t)i + 1);
	}
	for (int i = 0; i < n; i++) {
		direct[i] = direct_once(easy);
		daemon[i] = daemon_once(fd, (uint64_t)i + 100);
		added[i] = daemon[i] - direct[i];
	}
	printf("%d streamed chats of 4 chunks each way, alternating\n", n);
	report("direct (curl)", direct, n);
	report("through openllmd", daemon, n);
	report("added by openllmd", added, n);
	curl_slist_free_all(headers);
	curl_easy_cleanup(easy);
	curl_global_cleanup();
	free(direct);
	free(daemon);
	free(added);
	close(fd);
	return 0;
}
