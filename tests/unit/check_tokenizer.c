/* Unit tests for the tokenizer: loading, known ids, counting, messages. */
#include "config.h"

#include <sys/stat.h>

#include <check.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "daemon/pretok.h"
#include "daemon/tokenizer.h"

static struct tokenizer *cl100k, *o200k;

/* Point the loader at the tree's vocabularies and load both once. */
static void
setup(void)
{
	char		 dir[4096], cause[256];
	const char	*top = getenv("top_srcdir");

	if (getenv("OPENLLMD_TOKENIZER_DIR") == NULL) {
		snprintf(dir, sizeof dir, "%s/tokenizers", top ? top : ".");
		setenv("OPENLLMD_TOKENIZER_DIR", dir, 1);
	}
	cl100k = tokenizer_load("cl100k_base", cause, sizeof cause);
	ck_assert_msg(cl100k != NULL, "cl100k_base: %s", cause);
	o200k = tokenizer_load("o200k_base", cause, sizeof cause);
	ck_assert_msg(o200k != NULL, "o200k_base: %s", cause);
}

static void
teardown(void)
{
	tokenizer_free(cl100k);
	tokenizer_free(o200k);
}

/* Write contents to a new temporary file; its path in path. */
static void
write_temp(char *path, size_t size, const char *contents)
{
	FILE	*f;
	int	 fd;

	snprintf(path, size, "/tmp/check_tokenizer.XXXXXX");
	fd = mkstemp(path);
	ck_assert_int_ne(fd, -1);
	f = fdopen(fd, "w");
	ck_assert_ptr_nonnull(f);
	fputs(contents, f);
	fclose(f);
}

/* A .tiktoken text with every single byte and the given extra lines. */
static char *
byte_vocab(const char *extra)
{
	static const char b64[] =
	    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
	char	*s = malloc(256 * 16 + strlen(extra) + 1), *p = s;
	int	 i;

	ck_assert_ptr_nonnull(s);
	for (i = 0; i < 256; i++)
		p += sprintf(p, "%c%c== %d\n", b64[i >> 2], b64[(i & 3) << 4], i);
	strcpy(p, extra);
	return s;
}

/* Load a temporary file holding contents; NULL with cause on error. */
static struct tokenizer *
load_text(const char *contents, char *cause, size_t cause_len)
{
	struct tokenizer	*t;
	char			 path[64];

	write_temp(path, sizeof path, contents);
	t = tokenizer_load(path, cause, cause_len);
	unlink(path);
	return t;
}

/* Assert that text encodes to the ids want (n of them). */
static void
assert_ids(const struct tokenizer *t, const char *text, const uint32_t *want,
    size_t n)
{
	uint32_t	*ids;
	size_t		 n_ids, i;
	char		 cause[128];

	ck_assert_int_eq(tokenizer_encode(t, text, strlen(text), &ids, &n_ids,
	    cause, sizeof cause), 0);
	ck_assert_msg(n_ids == n, "%s: %zu ids, want %zu", text, n_ids, n);
	for (i = 0; i < n; i++)
		ck_assert_msg(ids[i] == want[i], "%s: id %zu is %u, want %u",
		    text, i, ids[i], want[i]);
	ck_assert_int_eq(tokenizer_count(t, text, strlen(text)), (int64_t)n);
	free(ids);
}

#define IDS(...)	(const uint32_t[]){ __VA_ARGS__ }, \
	sizeof (const uint32_t[]){ __VA_ARGS__ } / sizeof (uint32_t)

/* Assert that pattern splits text into the NULL-terminated pieces want. */
static void
assert_pieces(enum pretok_pattern pattern, const char *text,
    const char *const *want)
{
	struct pretok	 pt;
	const char	*piece;
	size_t		 len, i = 0;

	pretok_init(&pt, pattern, text, strlen(text));
	while (pretok_next(&pt, &piece, &len)) {
		ck_assert_msg(want[i] != NULL, "%s: extra piece %.*s", text,
		    (int)len, piece);
		ck_assert_msg(strlen(want[i]) == len &&
		    memcmp(want[i], piece, len) == 0,
		    "%s: piece %zu is \"%.*s\", want \"%s\"", text, i, (int)len,
		    piece, want[i]);
		i++;
	}
	ck_assert_msg(want[i] == NULL, "%s: missing piece %s", text, want[i]);
}

#define PIECES(...)	(const char *const[]){ __VA_ARGS__, NULL }

START_TEST(test_pieces)
{
	static const char s1[] = "Hello  world's 12345!!\n\n  x\t y  ";
	static const char s2[] = "getHTTPResponse don'T a/b//\n c\xc2\xa0" "d";
	static const char s3[] = "I'M \xc3\x89" "COLE'S na\xc3\xafve";

	assert_pieces(PRETOK_CL100K, s1, PIECES("Hello", " ", " world",
	    "'s", " ", "123", "45", "!!\n\n", " ", " x", "\t", " y", "  "));
	assert_pieces(PRETOK_O200K, s1, PIECES("Hello", " ", " world's", " ",
	    "123", "45", "!!\n\n", " ", " x", "\t", " y", "  "));
	assert_pieces(PRETOK_CL100K, s2, PIECES("getHTTPResponse", " don",
	    "'T", " a", "/b", "//\n", " c", "\xc2\xa0" "d"));
	assert_pieces(PRETOK_O200K, s2, PIECES("get", "HTTPResponse",
	    " don'T", " a", "/b", "//\n", " c", "\xc2\xa0" "d"));
	assert_pieces(PRETOK_CL100K, s3, PIECES("I", "'M", " \xc3\x89" "COLE",
	    "'S", " na\xc3\xafve"));
	assert_pieces(PRETOK_O200K, s3, PIECES("I'M", " \xc3\x89" "COLE'S",
	    " na\xc3\xafve"));
	assert_pieces(PRETOK_CL100K, "", PIECES(NULL));
}
END_TEST

START_TEST(test_names)
{
	char			 cause[256];
	struct tokenizer	*t;

	ck_assert_str_eq(tokenizer_name(cl100k), "cl100k_base");
	ck_assert_str_eq(tokenizer_name(o200k), "o200k_base");
	t = tokenizer_load(NULL, cause, sizeof cause);
	ck_assert_msg(t != NULL, "%s", cause);
	ck_assert_str_eq(tokenizer_name(t), "cl100k_base");
	tokenizer_free(t);
}
END_TEST

START_TEST(test_load_missing)
{
	char	cause[256] = "";

	ck_assert_ptr_null(tokenizer_load("/nonexistent/x.tiktoken", cause,
	    sizeof cause));
	ck_assert_ptr_nonnull(strstr(cause, "No such file"));
	ck_assert_ptr_null(tokenizer_load("/", cause, sizeof cause));
	ck_assert_ptr_nonnull(strstr(cause, "not a regular file"));
}
END_TEST

/* A FIFO with no writer is refused at once, not waited on in open(). */
START_TEST(test_load_fifo)
{
	char	path[64], cause[256] = "";

	snprintf(path, sizeof path, "/tmp/check_tokenizer.fifo.%ld", (long)getpid());
	unlink(path);
	ck_assert_int_eq(mkfifo(path, 0600), 0);
	alarm(10);
	ck_assert_ptr_null(tokenizer_load(path, cause, sizeof cause));
	alarm(0);
	unlink(path);
	ck_assert_msg(strstr(cause, "not a regular file") != NULL, "%s", cause);
}
END_TEST

/* Assert that the len bytes of text encode to the ids want (n of them). */
static void
assert_ids_len(const struct tokenizer *t, const char *text, size_t len,
    const uint32_t *want, size_t n)
{
	uint32_t	*ids;
	size_t		 n_ids, i;
	char		 cause[128];

	ck_assert_int_eq(tokenizer_encode(t, text, len, &ids, &n_ids, cause,
	    sizeof cause), 0);
	ck_assert_msg(n_ids == n, "%zu ids, want %zu", n_ids, n);
	for (i = 0; i < n; i++)
		ck_assert_msg(ids[i] == want[i], "id %zu is %u, want %u", i,
		    ids[i], want[i]);
	ck_assert_int_eq(tokenizer_count(t, text, len), (int64_t)n);
	free(ids);
}

/*
 * U+0000 is a character like any other. The ids are tiktoken's (npm
 * tiktoken 1.0.22, encode_ordinary), printed once by
 *   node -e 'const t = require("./tokenizers/npm/node_modules/tiktoken");
 *     const e = t.get_encoding(ENC);
 *     console.log(Array.from(e.encode_ordinary(TEXT)).join(","))'
 */
START_TEST(test_nul)
{
	static const char text[] = "hello\0world\0\0 \0x";
	static const char sys[] = "You are a\0helpful assistant.";
	struct tokenizer_message	 m = { "system", sys, NULL, NULL, sizeof sys - 1 };

	assert_ids_len(cl100k, "a\0b", 3, IDS(64, 188, 65));
	assert_ids_len(cl100k, "\0", 1, IDS(188));
	assert_ids_len(cl100k, text, sizeof text - 1,
	    IDS(15339, 188, 14957, 188, 188, 220, 188, 87));
	assert_ids_len(o200k, "a\0b", 3, IDS(64, 188, 65));
	assert_ids_len(o200k, text, sizeof text - 1,
	    IDS(24912, 188, 24169, 156344, 220, 188, 87));
	/* A message: 3 + "system" (1) + the 8 tokens of sys + 3. */
	assert_ids_len(cl100k, sys, sizeof sys - 1,
	    IDS(2675, 527, 264, 188, 8823, 1285, 18328, 13));
	ck_assert_int_eq(tokenizer_count_messages(cl100k, &m, 1), 3 + 1 + 8 + 3);
	/* content_len 0 means up to the first NUL: "You are a". */
	m.content_len = 0;
	ck_assert_int_eq(tokenizer_count_messages(cl100k, &m, 1), 3 + 1 + 3 + 3);
}
END_TEST

START_TEST(test_load_errors)
{
	static const struct {
		const char	*extra;
		const char	*cause;
	} bad[] = {
		{ "YWI=\n", ":257: malformed line" },
		{ "YWI= x\n", ":257: malformed line" },
		{ "YWI= 256 7\n", ":257: malformed line" },
		{ " 256\n", ":257: malformed line" },
		{ "YW*= 256\n", ":257: bad base64" },
		{ "YWI 256\n", ":257: bad base64" },
		{ "Y=I= 256\n", ":257: bad base64" },
		{ "YWI= 99999999999\n", ":257: rank too large" },
		{ "YWI= 255\n", "rank 255 appears twice" },
		{ "QQ== 256\n", "have the same token" },
	};
	char			 cause[256], *text;
	struct tokenizer	*t;
	size_t			 i;

	for (i = 0; i < sizeof bad / sizeof bad[0]; i++) {
		text = byte_vocab(bad[i].extra);
		cause[0] = '\0';
		t = load_text(text, cause, sizeof cause);
		ck_assert_msg(t == NULL, "loaded with %s", bad[i].extra);
		ck_assert_msg(strstr(cause, bad[i].cause) != NULL,
		    "%s: cause \"%s\", want \"%s\"", bad[i].extra, cause,
		    bad[i].cause);
		free(text);
	}

	t = load_text("", cause, sizeof cause);
	ck_assert_ptr_null(t);
	ck_assert_ptr_nonnull(strstr(cause, "no tokens"));
	t = load_text("QQ== 0\n", cause, sizeof cause);
	ck_assert_ptr_null(t);
	ck_assert_ptr_nonnull(strstr(cause, "no token for the byte 0x00"));
}
END_TEST

START_TEST(test_load_custom)
{
	char			 cause[256], *text, *back;
	struct tokenizer	*t;
	uint32_t		*ids;
	size_t			 n, len;

	/* "ab" = 256, "abc" = 257 (with a CRLF and a blank line). */
	text = byte_vocab("YWI= 256\r\n\nYWJj   257\n");
	t = load_text(text, cause, sizeof cause);
	ck_assert_msg(t != NULL, "%s", cause);
	assert_ids(t, "abc", IDS(257));
	assert_ids(t, "abcd ab", IDS(257, 'd', ' ', 256));
	assert_ids(t, "xab", IDS('x', 256));
	ck_assert_int_eq(tokenizer_encode(t, "abab", 4, &ids, &n, cause,
	    sizeof cause), 0);
	ck_assert_int_eq(tokenizer_decode(t, ids, n, &back, &len, cause,
	    sizeof cause), 0);
	ck_assert_uint_eq(len, 4);
	ck_assert_str_eq(back, "abab");
	free(back);
	free(ids);
	ck_assert_int_eq(tokenizer_decode(t, (const uint32_t[]){ 258 }, 1,
	    &back, &len, cause, sizeof cause), -1);
	ck_assert_str_eq(cause, "unknown token 258");
	tokenizer_free(t);
	free(text);
}
END_TEST

START_TEST(test_known_ids)
{
	assert_ids(cl100k, "hello world", IDS(15339, 1917));
	assert_ids(cl100k, "Hello, World!", IDS(9906, 11, 4435, 0));
	assert_ids(cl100k, "I'LL don't", IDS(40, 6, 4178, 1541, 956));
	assert_ids(cl100k, "  x\n\n", IDS(220, 865, 271));
	assert_ids(cl100k, "1234567", IDS(4513, 10961, 22));
	assert_ids(cl100k, "\xe4\xbb\x8a\xe5\xa4\xa9\xe5\xa4\xa9\xe6\xb0\x94"
	    "\xe5\xbe\x88\xe5\xa5\xbd", IDS(37271, 36827, 36827, 30320, 242,
	    17599, 230, 53901));
	assert_ids(o200k, "hello world", IDS(24912, 2375));
	assert_ids(o200k, "Hello, World!", IDS(13225, 11, 5922, 0));
	assert_ids(o200k, "I'LL don't", IDS(40, 6, 7454, 4128));
	assert_ids(o200k, "1234567", IDS(7633, 19354, 22));
	assert_ids(o200k, "\xe4\xbb\x8a\xe5\xa4\xa9\xe5\xa4\xa9\xe6\xb0\x94"
	    "\xe5\xbe\x88\xe5\xa5\xbd", IDS(10941, 1487, 25896, 148483));
	assert_ids(cl100k, "", NULL, 0);
}
END_TEST

START_TEST(test_endoftext_is_text)
{
	char		*back, cause[64];
	uint32_t	*ids;
	size_t		 n, len;

	assert_ids(cl100k, "<|endoftext|>", IDS(27, 91, 8862, 728, 428, 91, 29));
	assert_ids(o200k, "<|endoftext|>", IDS(27, 91, 419, 1440, 919, 91, 29));

	/* The special token's id still decodes to its text. */
	ck_assert_int_eq(tokenizer_decode(cl100k, (const uint32_t[]){ 100257 },
	    1, &back, &len, cause, sizeof cause), 0);
	ck_assert_str_eq(back, "<|endoftext|>");
	free(back);
	ck_assert_int_eq(tokenizer_encode(o200k, "a<|endofprompt|>b", 17, &ids,
	    &n, cause, sizeof cause), 0);
	ck_assert_uint_gt(n, 3);
	while (n-- > 0)
		ck_assert_uint_lt(ids[n], 199998);
	free(ids);
}
END_TEST

START_TEST(test_long_piece)
{
	char		*text, *back, cause[64];
	uint32_t	*ids;
	size_t		 n, len, i;

	/* 200 letters, past the linear merge: 25 tokens of 8 "a"s. */
	text = malloc(200001);
	ck_assert_ptr_nonnull(text);
	memset(text, 'a', 200);
	text[200] = '\0';
	ck_assert_int_eq(tokenizer_encode(cl100k, text, 200, &ids, &n, cause,
	    sizeof cause), 0);
	ck_assert_uint_eq(n, 25);
	for (i = 0; i < n; i++)
		ck_assert_uint_eq(ids[i], 70540);
	free(ids);

	/* One long mixed piece still decodes back exactly. */
	for (i = 0; i < 200000; i++)
		text[i] = "abcXYZqrs"[(i * 7 + i / 13) % 9];
	ck_assert_int_eq(tokenizer_encode(o200k, text, 200000, &ids, &n, cause,
	    sizeof cause), 0);
	ck_assert_int_eq(tokenizer_count(o200k, text, 200000), (int64_t)n);
	ck_assert_int_eq(tokenizer_decode(o200k, ids, n, &back, &len, cause,
	    sizeof cause), 0);
	ck_assert_uint_eq(len, 200000);
	ck_assert_int_eq(memcmp(back, text, len), 0);
	free(back);
	free(ids);
	free(text);
}
END_TEST

START_TEST(test_count_is_encode_length)
{
	static const char *texts[] = {
		"The quick brown fox jumps over the lazy dog.",
		"  \t\r\n\n x = f(y) // it's 12345678 o'clock\n",
		("\xf0\x9f\x91\xa8\xe2\x80\x8d\xf0\x9f\x91\xa9\xe2\x80\x8d"
		    "\xf0\x9f\x91\xa7 caf\xc3\xa9 \xe6\x97\xa5\xe6\x9c\xac"),
	};
	uint32_t	*ids;
	size_t		 i, n;
	char		 cause[64];

	for (i = 0; i < sizeof texts / sizeof texts[0]; i++) {
		ck_assert_int_eq(tokenizer_encode(cl100k, texts[i],
		    strlen(texts[i]), &ids, &n, cause, sizeof cause), 0);
		ck_assert_int_eq(tokenizer_count(cl100k, texts[i],
		    strlen(texts[i])), (int64_t)n);
		free(ids);
		ck_assert_int_eq(tokenizer_encode(o200k, texts[i],
		    strlen(texts[i]), &ids, &n, cause, sizeof cause), 0);
		ck_assert_int_eq(tokenizer_count(o200k, texts[i],
		    strlen(texts[i])), (int64_t)n);
		free(ids);
	}
}
END_TEST

START_TEST(test_invalid_utf8)
{
	static const struct {
		const char	*s;
		size_t		 bad;
	} bad[] = {
		{ "abc\x80", 3 },		/* lone continuation */
		{ "\xc3", 0 },			/* truncated */
		{ "ab\xc0\xaf", 2 },		/* overlong */
		{ "\xe0\x80\xaf", 0 },		/* overlong */
		{ "x\xed\xa0\x80", 1 },		/* surrogate */
		{ "\xf4\x90\x80\x80", 0 },	/* past U+10FFFF */
		{ "\xf8\x88\x80\x80\x80", 0 },
		{ "\xe6\x97", 0 },
		{ "ok \xff", 3 },
	};
	struct tokenizer_message	 m = { "user", NULL, NULL, NULL, 0 };
	uint32_t			*ids = (uint32_t *)1;
	size_t				 i, n = 1;
	char				 cause[64], want[64];

	for (i = 0; i < sizeof bad / sizeof bad[0]; i++) {
		ck_assert_uint_eq(pretok_utf8_valid(bad[i].s, strlen(bad[i].s)),
		    bad[i].bad);
		ck_assert_int_eq(tokenizer_count(cl100k, bad[i].s,
		    strlen(bad[i].s)), -1);
		ck_assert_int_eq(tokenizer_count(o200k, bad[i].s,
		    strlen(bad[i].s)), -1);
		ck_assert_int_eq(tokenizer_encode(cl100k, bad[i].s,
		    strlen(bad[i].s), &ids, &n, cause, sizeof cause), -1);
		ck_assert_ptr_null(ids);
		ck_assert_uint_eq(n, 0);
		snprintf(want, sizeof want, "invalid UTF-8 at byte %zu",
		    bad[i].bad);
		ck_assert_str_eq(cause, want);
		m.content = bad[i].s;
		ck_assert_int_eq(tokenizer_count_messages(cl100k, &m, 1), -1);
	}
	ck_assert_uint_eq(pretok_utf8_valid("\xf4\x8f\xbf\xbf\xef\xbf\xbf"
	    "\xed\x9f\xbf", 10), 10);
	ck_assert_int_eq(tokenizer_count(cl100k, "a\0b", 3), 3);
}
END_TEST

/*
 * MetaGPT's formula on a worked example (cl100k_base):
 *   system: 3 + "system" 1 + "You are a helpful assistant." 6     = 10
 *   user:   3 + "user" 1 + "Hello!" 2 + "bob" 1 + 1 for the name  =  8
 *   tool:   3 + "tool" 1 + "The answer is 42." 6 + "call_abc123" 4 = 14
 *   reply primer                                                   =  3
 */
START_TEST(test_messages)
{
	const struct tokenizer_message msgs[] = {
		{ "system", "You are a helpful assistant.", NULL, NULL, 0 },
		{ "user", "Hello!", "bob", NULL, 0 },
		{ "tool", "The answer is 42.", NULL, "call_abc123", 0 },
	};

	ck_assert_int_eq(tokenizer_count_messages(cl100k, msgs, 3), 35);
	ck_assert_int_eq(tokenizer_count_messages(cl100k, msgs, 1), 13);
	ck_assert_int_eq(tokenizer_count_messages(cl100k, NULL, 0), 3);
	/* o200k_base: 10 + 8 + 14 + 3 with the same token counts. */
	ck_assert_int_eq(tokenizer_count_messages(o200k, msgs, 3), 35);
}
END_TEST

static Suite *
tokenizer_suite(void)
{
	Suite	*s = suite_create("tokenizer");
	TCase	*tc = tcase_create("core");

	tcase_add_checked_fixture(tc, setup, teardown);
	tcase_add_test(tc, test_pieces);
	tcase_add_test(tc, test_names);
	tcase_add_test(tc, test_load_missing);
	tcase_add_test(tc, test_load_fifo);
	tcase_add_test(tc, test_nul);
	tcase_add_test(tc, test_load_errors);
	tcase_add_test(tc, test_load_custom);
	tcase_add_test(tc, test_known_ids);
	tcase_add_test(tc, test_endoftext_is_text);
	tcase_add_test(tc, test_long_piece);
	tcase_add_test(tc, test_count_is_encode_length);
	tcase_add_test(tc, test_invalid_utf8);
	tcase_add_test(tc, test_messages);
	suite_add_tcase(s, tc);
	return s;
}

int
main(void)
{
	SRunner	*sr = srunner_create(tokenizer_suite());
	int	 failed;

	srunner_run_all(sr, CK_NORMAL);
	failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
