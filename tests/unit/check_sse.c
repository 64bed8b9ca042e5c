/* check_sse.c: unit tests of the server-sent-events parser. */
#include "config.h"

#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "daemon/sse.h"

#define MAX_EVENTS 64

struct got {
	size_t n;
	char *event[MAX_EVENTS];    /* "" for none */
	char *data[MAX_EVENTS];
	size_t len[MAX_EVENTS];
	size_t stop_after;          /* return -1 after this many; 0: never */
};

/* Record each event. */
static int
record_cb(void *arg, const char *event, const char *data, size_t len)
{
	struct got	*g = arg;

	ck_assert_uint_lt(g->n, MAX_EVENTS);
	ck_assert_uint_eq(strlen(data), len);
	g->event[g->n] = strdup(event != NULL ? event : "");
	g->data[g->n] = malloc(len + 1);
	memcpy(g->data[g->n], data, len + 1);
	g->len[g->n] = len;
	g->n++;
	if (g->stop_after != 0 && g->n >= g->stop_after)
		return (-1);
	return (0);
}

/* Free what was recorded. */
static void
got_free(struct got *g)
{
	size_t	i;

	for (i = 0; i < g->n; i++) {
		free(g->event[i]);
		free(g->data[i]);
	}
	memset(g, 0, sizeof *g);
}

/* Feed a whole string in one piece and finish; the finish result. */
static int
parse_all(const char *s, size_t len, size_t max, struct got *g)
{
	struct sse_parser	p;
	char			cause[128];
	int			rc;

	sse_parser_init(&p, max, record_cb, g);
	ck_assert_int_eq(sse_parser_feed(&p, s, len, cause, sizeof cause), 0);
	rc = sse_parser_finish(&p, cause, sizeof cause);
	sse_parser_clear(&p);
	return (rc);
}

/* Check that two recordings are equal. */
static void
got_eq(const struct got *a, const struct got *b)
{
	size_t	i;

	ck_assert_uint_eq(a->n, b->n);
	for (i = 0; i < a->n; i++) {
		ck_assert_str_eq(a->event[i], b->event[i]);
		ck_assert_uint_eq(a->len[i], b->len[i]);
		ck_assert(memcmp(a->data[i], b->data[i], a->len[i]) == 0);
	}
}

START_TEST(test_simple)
{
	struct got	g = { 0 };
	const char     *s = "data: hello\n\n";

	ck_assert_int_eq(parse_all(s, strlen(s), 1024, &g), 0);
	ck_assert_uint_eq(g.n, 1);
	ck_assert_str_eq(g.event[0], "");
	ck_assert_str_eq(g.data[0], "hello");
	got_free(&g);
}
END_TEST

START_TEST(test_line_endings)
{
	const char	*lf = "event: a\ndata: 1\ndata: 2\n\ndata: 3\n\n";
	const char	*crlf = "event: a\r\ndata: 1\r\ndata: 2\r\n\r\n"
	    "data: 3\r\n\r\n";
	const char	*cr = "event: a\rdata: 1\rdata: 2\r\rdata: 3\r\r";
	const char	*mixed = "event: a\r\ndata: 1\rdata: 2\n\r\ndata: 3\r\n\n";
	struct got	 a = { 0 }, b = { 0 }, c = { 0 }, d = { 0 };

	ck_assert_int_eq(parse_all(lf, strlen(lf), 1024, &a), 0);
	ck_assert_int_eq(parse_all(crlf, strlen(crlf), 1024, &b), 0);
	ck_assert_int_eq(parse_all(cr, strlen(cr), 1024, &c), 0);
	ck_assert_int_eq(parse_all(mixed, strlen(mixed), 1024, &d), 0);
	ck_assert_uint_eq(a.n, 2);
	ck_assert_str_eq(a.event[0], "a");
	ck_assert_str_eq(a.data[0], "1\n2");
	ck_assert_str_eq(a.event[1], "");
	ck_assert_str_eq(a.data[1], "3");
	got_eq(&a, &b);
	got_eq(&a, &c);
	got_eq(&a, &d);
	got_free(&a);
	got_free(&b);
	got_free(&c);
	got_free(&d);
}
END_TEST

START_TEST(test_comments)
{
	struct got	 g = { 0 };
	const char	*s = ": keep-alive\n\n:\n\ndata: x\n: in the middle\n"
	    "data: y\n\n: trailing";

	ck_assert_int_eq(parse_all(s, strlen(s), 1024, &g), 0);
	ck_assert_uint_eq(g.n, 1);
	ck_assert_str_eq(g.data[0], "x\ny");
	got_free(&g);
}
END_TEST

START_TEST(test_space_after_colon)
{
	struct got	 g = { 0 };
	const char	*s = "data:x\n\ndata:  two\n\ndata:\n\ndata\n\n"
	    "data: \n\n";

	ck_assert_int_eq(parse_all(s, strlen(s), 1024, &g), 0);
	ck_assert_uint_eq(g.n, 5);
	ck_assert_str_eq(g.data[0], "x");
	ck_assert_str_eq(g.data[1], " two");
	ck_assert_str_eq(g.data[2], "");
	ck_assert_str_eq(g.data[3], "");
	ck_assert_str_eq(g.data[4], "");
	got_free(&g);
}
END_TEST

START_TEST(test_multiline_data)
{
	struct got	 g = { 0 };
	const char	*s = "data: {\"a\":\ndata:  1}\ndata:\n\n";

	ck_assert_int_eq(parse_all(s, strlen(s), 1024, &g), 0);
	ck_assert_uint_eq(g.n, 1);
	ck_assert_str_eq(g.data[0], "{\"a\":\n 1}\n");
	got_free(&g);
}
END_TEST

START_TEST(test_event_names)
{
	struct got	 g = { 0 };
	const char	*s = "event: error\ndata: {\"error\":1}\n\n"
	    "data: plain\n\n"
	    "event: first\nevent: second\ndata: z\n\n"
	    "event:\ndata: empty name\n\n"
	    "event: no data\n\n"
	    "data: after\n\n";

	ck_assert_int_eq(parse_all(s, strlen(s), 1024, &g), 0);
	ck_assert_uint_eq(g.n, 5);
	ck_assert_str_eq(g.event[0], "error");
	ck_assert_str_eq(g.data[0], "{\"error\":1}");
	ck_assert_str_eq(g.event[1], "");
	ck_assert_str_eq(g.event[2], "second");
	ck_assert_str_eq(g.event[3], "");
	ck_assert_str_eq(g.data[3], "empty name");
	/* An event without data is dropped and its name does not leak. */
	ck_assert_str_eq(g.event[4], "");
	ck_assert_str_eq(g.data[4], "after");
	got_free(&g);
}
END_TEST

START_TEST(test_skipped_fields)
{
	struct got	 g = { 0 };
	const char	*s = "id: 7\nretry: 1000\nfoo: bar\nverylongfieldname: x\n"
	    "dat: no\ndataa: no\nDATA: no\ndata: yes\n\n";

	ck_assert_int_eq(parse_all(s, strlen(s), 1024, &g), 0);
	ck_assert_uint_eq(g.n, 1);
	ck_assert_str_eq(g.data[0], "yes");
	got_free(&g);
}
END_TEST

START_TEST(test_error_field)
{
	struct got	 g = { 0 };
	const char	*s = "error: {\"code\":400,\"message\":\"too long\"}\n\n"
	    "event: custom\nerror: x\n\n";

	ck_assert_int_eq(parse_all(s, strlen(s), 1024, &g), 0);
	ck_assert_uint_eq(g.n, 2);
	ck_assert_str_eq(g.event[0], "error");
	ck_assert_str_eq(g.data[0], "{\"code\":400,\"message\":\"too long\"}");
	ck_assert_str_eq(g.event[1], "custom");
	got_free(&g);
}
END_TEST

START_TEST(test_bom)
{
	struct sse_parser	 p;
	struct got		 g = { 0 };
	char			 cause[128];
	const char		*s = "\xef\xbb\xbf" "data: x\n\n";

	ck_assert_int_eq(parse_all(s, strlen(s), 1024, &g), 0);
	ck_assert_uint_eq(g.n, 1);
	ck_assert_str_eq(g.data[0], "x");
	got_free(&g);

	/* Split inside the BOM. */
	sse_parser_init(&p, 1024, record_cb, &g);
	ck_assert_int_eq(sse_parser_feed(&p, "\xef", 1, cause, sizeof cause), 0);
	ck_assert_int_eq(sse_parser_feed(&p, "\xbb", 1, cause, sizeof cause), 0);
	ck_assert_int_eq(sse_parser_feed(&p, "\xbf" "data: y\n\n", 10, cause,
	    sizeof cause), 0);
	ck_assert_uint_eq(g.n, 1);
	ck_assert_str_eq(g.data[0], "y");

	/* Only at the start: a later BOM is part of a field name. */
	ck_assert_int_eq(sse_parser_feed(&p, "\xef\xbb\xbf" "data: z\n\n", 12,
	    cause, sizeof cause), 0);
	ck_assert_uint_eq(g.n, 1);
	sse_parser_clear(&p);
	got_free(&g);

	/* Bytes that only start like a BOM are kept. */
	sse_parser_init(&p, 1024, record_cb, &g);
	ck_assert_int_eq(sse_parser_feed(&p, "\xef\xbb", 2, cause, sizeof cause),
	    0);
	ck_assert_int_eq(sse_parser_feed(&p, ": c\ndata: w\n\n", 13, cause,
	    sizeof cause), 0);
	ck_assert_uint_eq(g.n, 1);
	ck_assert_str_eq(g.data[0], "w");
	sse_parser_clear(&p);
	got_free(&g);
}
END_TEST

/* A stream shaped as real servers send it, with every kind of line end. */
static const char realistic[] =
    ": ping - 2024-05-01 12:00:00\r\n\r\n"
    "data: {\"id\":\"chatcmpl-1\",\"choices\":[{\"index\":0,\"delta\":"
    "{\"role\":\"assistant\",\"content\":\"\"},\"finish_reason\":null}]}\n\n"
    "data:{\"choices\":[{\"delta\":{\"content\":\"Hel\"}}]}\r\n\r\n"
    "data: {\"choices\":[{\"delta\":{\"content\":\"lo \\u00e9\xc3\xa9\"}}]}\r\r"
    "event: message\nid: 3\ndata: {\"a\":\ndata: 2}\n\n"
    "retry: 100\n: comment\n\n"
    "error: {\"code\":500,\"message\":\"x\"}\n\n"
    "event: error\r\ndata: {\"error\":\"boom\",\"error_type\":\"gen\"}\r\n\r\n"
    "data: {\"choices\":[],\"usage\":{\"prompt_tokens\":5,"
    "\"completion_tokens\":2}}\n\n"
    "data: [DONE]\n\n";

START_TEST(test_every_split)
{
	struct sse_parser	 p;
	struct got		 whole = { 0 }, g;
	char			 cause[128];
	size_t			 len = sizeof realistic - 1, i;

	ck_assert_int_eq(parse_all(realistic, len, 4096, &whole), 0);
	ck_assert_uint_eq(whole.n, 8);
	ck_assert_str_eq(whole.data[2], "{\"choices\":[{\"delta\":{\"content\":"
	    "\"lo \\u00e9\xc3\xa9\"}}]}");
	ck_assert_str_eq(whole.event[3], "message");
	ck_assert_str_eq(whole.data[3], "{\"a\":\n2}");
	ck_assert_str_eq(whole.event[4], "error");
	ck_assert_str_eq(whole.event[5], "error");
	ck_assert_str_eq(whole.data[7], "[DONE]");

	/* Two pieces, split at every offset. */
	for (i = 0; i <= len; i++) {
		memset(&g, 0, sizeof g);
		sse_parser_init(&p, 4096, record_cb, &g);
		ck_assert_int_eq(sse_parser_feed(&p, realistic, i, cause,
		    sizeof cause), 0);
		ck_assert_int_eq(sse_parser_feed(&p, realistic + i, len - i,
		    cause, sizeof cause), 0);
		ck_assert_int_eq(sse_parser_finish(&p, cause, sizeof cause), 0);
		got_eq(&whole, &g);
		sse_parser_clear(&p);
		got_free(&g);
	}

	/* One byte at a time, with empty feeds in between. */
	memset(&g, 0, sizeof g);
	sse_parser_init(&p, 4096, record_cb, &g);
	for (i = 0; i < len; i++) {
		ck_assert_int_eq(sse_parser_feed(&p, realistic + i, 1, cause,
		    sizeof cause), 0);
		ck_assert_int_eq(sse_parser_feed(&p, realistic + i, 0, cause,
		    sizeof cause), 0);
	}
	ck_assert_int_eq(sse_parser_finish(&p, cause, sizeof cause), 0);
	got_eq(&whole, &g);
	sse_parser_clear(&p);
	got_free(&g);
	got_free(&whole);
}
END_TEST

START_TEST(test_max_size)
{
	struct sse_parser	 p;
	struct got		 g = { 0 };
	char			 cause[128], big[4096];

	/* Exactly at the bound is fine. */
	sse_parser_init(&p, 16, record_cb, &g);
	ck_assert_int_eq(sse_parser_feed(&p, "data: 0123456789abcdef\n\n", 24,
	    cause, sizeof cause), 0);
	ck_assert_uint_eq(g.n, 1);
	ck_assert_uint_eq(g.len[0], 16);

	/* One more byte fails, and the parser stays failed. */
	ck_assert_int_eq(sse_parser_feed(&p, "data: 0123456789abcdefg\n\n", 25,
	    cause, sizeof cause), -1);
	ck_assert(strstr(cause, "larger than 16") != NULL);
	ck_assert_int_eq(sse_parser_feed(&p, "data: x\n\n", 9, cause,
	    sizeof cause), -1);
	ck_assert_uint_eq(g.n, 1);
	sse_parser_clear(&p);
	got_free(&g);

	/* Many short lines count together, joins included. */
	sse_parser_init(&p, 16, record_cb, &g);
	ck_assert_int_eq(sse_parser_feed(&p, "data: 12345\ndata: 12345\n", 24,
	    cause, sizeof cause), 0);
	ck_assert_int_eq(sse_parser_feed(&p, "data: 12345\n", 12, cause,
	    sizeof cause), -1);
	sse_parser_clear(&p);

	/* The event name counts too. */
	sse_parser_init(&p, 16, record_cb, &g);
	ck_assert_int_eq(sse_parser_feed(&p, "event: 0123456789\ndata: 1234567",
	    31, cause, sizeof cause), -1);
	sse_parser_clear(&p);

	/* Comments and skipped fields are not stored, whatever their size. */
	sse_parser_init(&p, 16, record_cb, &g);
	memset(big, 'x', sizeof big);
	ck_assert_int_eq(sse_parser_feed(&p, ":", 1, cause, sizeof cause), 0);
	ck_assert_int_eq(sse_parser_feed(&p, big, sizeof big, cause,
	    sizeof cause), 0);
	ck_assert_int_eq(sse_parser_feed(&p, "\nid: ", 5, cause, sizeof cause),
	    0);
	ck_assert_int_eq(sse_parser_feed(&p, big, sizeof big, cause,
	    sizeof cause), 0);
	ck_assert_int_eq(sse_parser_feed(&p, "\ndata: ok\n\n", 11, cause,
	    sizeof cause), 0);
	ck_assert_uint_eq(g.n, 1);
	ck_assert_str_eq(g.data[0], "ok");
	sse_parser_clear(&p);
	got_free(&g);
}
END_TEST

START_TEST(test_finish)
{
	struct sse_parser	 p;
	struct got		 g = { 0 };
	char			 cause[128];

	sse_parser_init(&p, 1024, record_cb, &g);

	/* A complete stream. */
	ck_assert_int_eq(sse_parser_feed(&p, "data: a\n\n", 9, cause,
	    sizeof cause), 0);
	ck_assert_int_eq(sse_parser_finish(&p, cause, sizeof cause), 0);

	/* Data lines without the blank line: discarded and reported. */
	ck_assert_int_eq(sse_parser_feed(&p, "data: b\n", 8, cause,
	    sizeof cause), 0);
	ck_assert_int_eq(sse_parser_finish(&p, cause, sizeof cause), -1);
	ck_assert(strstr(cause, "inside") != NULL);

	/* Half a line. */
	ck_assert_int_eq(sse_parser_feed(&p, "data: {\"cho", 11, cause,
	    sizeof cause), 0);
	ck_assert_int_eq(sse_parser_finish(&p, cause, sizeof cause), -1);
	ck_assert_int_eq(sse_parser_feed(&p, "da", 2, cause, sizeof cause), 0);
	ck_assert_int_eq(sse_parser_finish(&p, cause, sizeof cause), -1);

	/* A comment cut short or a lone "\r" is not an event. */
	ck_assert_int_eq(sse_parser_feed(&p, ": keep", 6, cause, sizeof cause),
	    0);
	ck_assert_int_eq(sse_parser_finish(&p, cause, sizeof cause), 0);
	ck_assert_int_eq(sse_parser_feed(&p, "data: c\n\n\r", 10, cause,
	    sizeof cause), 0);
	ck_assert_int_eq(sse_parser_finish(&p, cause, sizeof cause), 0);

	/* Only a and c were dispatched. */
	ck_assert_uint_eq(g.n, 2);
	ck_assert_str_eq(g.data[0], "a");
	ck_assert_str_eq(g.data[1], "c");
	sse_parser_clear(&p);
	got_free(&g);
}
END_TEST

START_TEST(test_stop_and_reset)
{
	struct sse_parser	 p;
	struct got		 g = { 0 };
	char			 cause[128];
	const char		*s = "data: 1\n\ndata: 2\n\ndata: 3\n\n";

	g.stop_after = 2;
	sse_parser_init(&p, 1024, record_cb, &g);
	ck_assert_int_eq(sse_parser_feed(&p, s, strlen(s), cause, sizeof cause),
	    -1);
	ck_assert_uint_eq(g.n, 2);
	ck_assert_int_eq(sse_parser_feed(&p, s, strlen(s), cause, sizeof cause),
	    -1);
	ck_assert_uint_eq(g.n, 2);

	/* A reset parser reads a new stream, a half line forgotten. */
	g.stop_after = 0;
	sse_parser_reset(&p);
	ck_assert_int_eq(sse_parser_feed(&p, "data: x", 7, cause, sizeof cause),
	    0);
	sse_parser_reset(&p);
	ck_assert_int_eq(sse_parser_feed(&p, "data: 4\n\n", 9, cause,
	    sizeof cause), 0);
	ck_assert_uint_eq(g.n, 3);
	ck_assert_str_eq(g.data[2], "4");
	sse_parser_clear(&p);
	got_free(&g);
}
END_TEST

START_TEST(test_crlf_split)
{
	struct sse_parser	 p;
	struct got		 g = { 0 };
	char			 cause[128];

	/* "\r" then "\n" in the next feed is one line end, not two. */
	sse_parser_init(&p, 1024, record_cb, &g);
	ck_assert_int_eq(sse_parser_feed(&p, "data: a\r", 8, cause, sizeof cause),
	    0);
	ck_assert_int_eq(sse_parser_feed(&p, "\ndata: b\r", 9, cause,
	    sizeof cause), 0);
	ck_assert_uint_eq(g.n, 0);
	ck_assert_int_eq(sse_parser_feed(&p, "\n\r", 2, cause, sizeof cause), 0);
	ck_assert_uint_eq(g.n, 1);
	ck_assert_str_eq(g.data[0], "a\nb");
	sse_parser_clear(&p);
	got_free(&g);
}
END_TEST

/* The tests of this module. */
static Suite *
sse_suite(void)
{
	Suite	*s = suite_create("sse");
	TCase	*tc = tcase_create("parser");

	tcase_add_test(tc, test_simple);
	tcase_add_test(tc, test_line_endings);
	tcase_add_test(tc, test_comments);
	tcase_add_test(tc, test_space_after_colon);
	tcase_add_test(tc, test_multiline_data);
	tcase_add_test(tc, test_event_names);
	tcase_add_test(tc, test_skipped_fields);
	tcase_add_test(tc, test_error_field);
	tcase_add_test(tc, test_bom);
	tcase_add_test(tc, test_every_split);
	tcase_add_test(tc, test_max_size);
	tcase_add_test(tc, test_finish);
	tcase_add_test(tc, test_stop_and_reset);
	tcase_add_test(tc, test_crlf_split);
	suite_add_tcase(s, tc);
	return (s);
}

/* Run the suite; the exit status says whether it passed. */
int
main(void)
{
	SRunner	*sr = srunner_create(sse_suite());
	int	 failed;

	srunner_run_all(sr, CK_NORMAL);
	failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return (failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE);
}
