/* Unit tests of api_head.c: requests split as evhttp splits them, whole or a byte at a time. */
#include "config.h"

#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "daemon/api_head.h"

/* What a stream of bytes made the scanner say, in order, as letters (S H B E). */
struct trace {
	char events[64];
	size_t n;
	int64_t content_length[8];
	char method[8][8];
	char auth[8][64];
	uint64_t body[8];
	int status;
	const char *error;
};

/* Feed data in pieces of step bytes (0: all at once); stop at an error. */
static void
feed(const char *data, size_t len, size_t step, struct trace *t)
{
	struct api_head h;
	size_t heads = 0;

	memset(t, 0, sizeof *t);
	api_head_init(&h);
	for (size_t off = 0; off < len;) {
		size_t n = step == 0 || len - off < step ? len - off : step, used;
		const char *p = data + off;
		off += n;
		while (n > 0) {
			enum api_head_event ev = api_head_feed(&h, p, n, &used);
			p += used;
			n -= used;
			switch (ev) {
			case API_HEAD_STARTED:
				t->events[t->n++] = 'S';
				break;
			case API_HEAD_HEADERS:
				t->events[t->n++] = 'H';
				if (heads < 8) {
					t->content_length[heads] = h.content_length;
					strcpy(t->method[heads], h.method);
					snprintf(t->auth[heads], sizeof t->auth[heads], "%s",
					    h.authorization != NULL ? h.authorization :
					    h.authorization_long ? "<long>" : "<none>");
					t->body[heads] = api_head_body_length(&h);
					heads++;
				}
				break;
			case API_HEAD_BODY_DONE:
				t->events[t->n++] = 'B';
				break;
			case API_HEAD_ERROR:
				t->events[t->n++] = 'E';
				t->status = h.status;
				t->error = h.error;
				api_head_clear(&h);
				return;
			case API_HEAD_MORE:
				ck_assert_uint_eq(n, 0);
				break;
			}
		}
	}
	api_head_clear(&h);
}

/* The same events whether the bytes come at once or one by one. */
static void
check(const char *data, const char *want, struct trace *t)
{
	struct trace one;

	feed(data, strlen(data), 1, &one);
	feed(data, strlen(data), 0, t);
	ck_assert_str_eq(t->events, want);
	ck_assert_str_eq(one.events, want);
	ck_assert_int_eq(one.status, t->status);
}

START_TEST(test_requests)
{
	struct trace t;

	check("GET /health HTTP/1.1\r\nHost: x\r\n\r\n", "SH", &t);
	ck_assert_str_eq(t.method[0], "GET");
	ck_assert_uint_eq(t.body[0], 0);
	ck_assert_str_eq(t.auth[0], "<none>");
	/* a body, then a second request on the same connection; LF alone ends a line too */
	check("POST /v1/chat/completions HTTP/1.1\r\nauthorization:   Bearer sk-1  \r\n"
	    "content-LENGTH: 5\r\n\r\nhelloGET / HTTP/1.1\n\n", "SHBSH", &t);
	ck_assert_str_eq(t.method[0], "POST");
	ck_assert_int_eq(t.content_length[0], 5);
	ck_assert_uint_eq(t.body[0], 5);
	ck_assert_str_eq(t.auth[0], "Bearer sk-1");
	ck_assert_str_eq(t.method[1], "GET");
	ck_assert_int_eq(t.content_length[1], -1);
	/* the first Authorization counts; the same length twice is one length */
	check("POST / HTTP/1.1\r\nAuthorization: Bearer a\r\nAuthorization: Bearer b\r\n"
	    "Content-Length: 2\r\nContent-Length: 2\r\n\r\nok", "SHB", &t);
	ck_assert_str_eq(t.auth[0], "Bearer a");
	/* HEAD has no body whatever it says, as in evhttp: the bytes are the next request */
	check("HEAD / HTTP/1.1\r\nContent-Length: 24\r\n\r\nGET / HTTP/1.1\r\nA: b\r\n\r\n", "SHSH",
	    &t);
	ck_assert_uint_eq(t.body[0], 0);
	/* a name with a space before its colon is another header, which evhttp ignores too */
	check("POST / HTTP/1.1\r\nContent-Length : 9\r\n\r\n", "SH", &t);
	ck_assert_uint_eq(t.body[0], 0);
	/* a CR alone inside a line is part of it */
	check("GET / HTTP/1.1\r\nX: a\rb\r\n\r\n", "SH", &t);
}
END_TEST

START_TEST(test_refused)
{
	struct trace t;
	char *big;

	check("POST / HTTP/1.1\r\nContent-Length: 5\r\nContent-Length: 50\r\n\r\nhello", "SE", &t);
	ck_assert_int_eq(t.status, 400);
	ck_assert_ptr_nonnull(strstr(t.error, "two Content-Length headers that differ"));
	check("POST / HTTP/1.1\r\nContent-Length: +5\r\n\r\n", "SE", &t);
	check("POST / HTTP/1.1\r\nContent-Length: 5, 5\r\n\r\n", "SE", &t);
	check("POST / HTTP/1.1\r\nContent-Length: 1234567890123456789\r\n\r\n", "SE", &t);
	check("POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n", "SE", &t);
	ck_assert_int_eq(t.status, 411);
	check("POST / HTTP/1.1\r\nTransfer-Encoding: gzip, chunked\r\nContent-Length: 1\r\n\r\n",
	    "SE", &t);
	ck_assert_int_eq(t.status, 400);
	check("POST / HTTP/1.1\r\nX: a\r\n folded\r\n\r\n", "SE", &t);
	check("POST / HTTP/1.1\r\nno colon\r\n\r\n", "SE", &t);
	check("\r\n", "SE", &t);
	check("GET\r\n", "SE", &t);
	/* an Authorization over 1 KiB is not kept, and says so */
	big = malloc(3000);
	snprintf(big, 3000, "GET / HTTP/1.1\r\nAuthorization: Bearer %02000d\r\n\r\n", 7);
	check(big, "SH", &t);
	ck_assert_str_eq(t.auth[0], "<long>");
	free(big);
	/* a method evhttp does not know has no body; its name is not kept when long */
	check("BREW / HTTP/1.1\r\nContent-Length: 4\r\n\r\nGET / HTTP/1.1\r\n\r\n", "SHSH", &t);
	ck_assert_str_eq(t.method[0], "BREW");
	ck_assert_uint_eq(t.body[0], 0);
	check("VERYLONGMETHOD / HTTP/1.1\r\n\r\n", "SH", &t);
	ck_assert_str_eq(t.method[0], "");
}
END_TEST

int
main(void)
{
	Suite *s = suite_create("api_head");
	TCase *tc = tcase_create("api_head");
	SRunner *sr;
	int failed;

	tcase_add_test(tc, test_requests);
	tcase_add_test(tc, test_refused);
	suite_add_tcase(s, tc);
	sr = srunner_create(s);
	srunner_run_all(sr, CK_NORMAL);
	failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed == 0 ? 0 : 1;
}
