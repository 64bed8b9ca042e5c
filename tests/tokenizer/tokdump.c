/*
 * The C side of tests/tokenizer/exact.sh, printing what oracle.cjs prints
 * with tiktoken:
 *
 * tokdump ENCODING CORPUS: the token ids of each record "LENGTH\nBYTES\n"
 * of CORPUS, one line per record. Each record is also checked: its count
 * equals its number of ids, and its ids decode back to it.
 *
 * tokdump classes: the code points of each character class of the split
 * patterns, as ranges.
 */
#include "config.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "daemon/pretok.h"
#include "daemon/tokenizer.h"
#include "daemon/unicode_tables.h"

/* The UTF-8 encoding of cp in buf; its length. */
static size_t
tokdump_utf8(uint32_t cp, char *buf)
{
	if (cp < 0x80) {
		buf[0] = (char)cp;
		return 1;
	}
	if (cp < 0x800) {
		buf[0] = (char)(0xc0 | (cp >> 6));
		buf[1] = (char)(0x80 | (cp & 0x3f));
		return 2;
	}
	if (cp < 0x10000) {
		buf[0] = (char)(0xe0 | (cp >> 12));
		buf[1] = (char)(0x80 | ((cp >> 6) & 0x3f));
		buf[2] = (char)(0x80 | (cp & 0x3f));
		return 3;
	}
	buf[0] = (char)(0xf0 | (cp >> 18));
	buf[1] = (char)(0x80 | ((cp >> 12) & 0x3f));
	buf[2] = (char)(0x80 | ((cp >> 6) & 0x3f));
	buf[3] = (char)(0x80 | (cp & 0x3f));
	return 4;
}

/* The length of the first cl100k_base piece of head, then c, then tail. */
static size_t
tokdump_first(const char *head, uint32_t c, const char *tail, size_t tail_len)
{
	struct pretok	 pt;
	char		 buf[32];
	const char	*piece;
	size_t		 n, len;

	n = strlen(head);
	memcpy(buf, head, n);
	n += tokdump_utf8(c, buf + n);
	memcpy(buf + n, tail, tail_len);
	pretok_init(&pt, PRETOK_CL100K, buf, n + tail_len);
	pretok_next(&pt, &piece, &len);
	return len;
}

/*
 * Whether the contractions' case-insensitive letters include c: seen as a
 * contraction ending at c, as the first letter (s t m d; r and v before e;
 * l before l) or the second (e after r, l after l).
 */
static int
tokdump_fold(uint32_t c)
{
	char	tail[8];
	size_t	n;

	n = tokdump_utf8(c, tail + 1);
	if (tokdump_first("'", c, tail + 1, n) == 1 + n ||
	    tokdump_first("'r", c, tail + 1, n) == 2 + n ||
	    tokdump_first("'l", c, tail + 1, n) == 2 + n)
		return 1;
	tail[0] = 'e';
	if (tokdump_first("'", c, tail, n + 1) == 2 + n)
		return 1;
	tail[0] = 'l';
	return tokdump_first("'", c, tail, n + 1) == 2 + n;
}

/* Print the ranges of code points of each class, as oracle.cjs does. */
static int
tokdump_classes(void)
{
	static const struct {
		const char	*name;
		unsigned	 mask;
	} classes[] = {
		{ "L", UC_L }, { "N", UC_N }, { "WS", UC_WS }, { "UP", UC_UP },
		{ "LO", UC_LO }, { "FOLD", 0 },
	};
	uint32_t	c, start = 0;
	size_t		i;
	int		in, was;

	for (i = 0; i < sizeof classes / sizeof classes[0]; i++) {
		fputs(classes[i].name, stdout);
		was = 0;
		for (c = 0; c <= 0x110000; c++) {
			if (c == 0x110000 || (c >= 0xd800 && c < 0xe000))
				in = 0;
			else if (classes[i].mask == 0)
				in = tokdump_fold(c);
			else
				in = (uc_class(c) & classes[i].mask) != 0;
			if (in && !was)
				start = c;
			else if (!in && was)
				printf(" %x-%x", start, c - 1);
			was = in;
		}
		putchar('\n');
	}
	return fflush(stdout) == 0 ? 0 : 1;
}

/* Read all of path into *buf and *len. */
static int
tokdump_read(const char *path, char **buf, size_t *len)
{
	FILE	*f;
	char	*b = NULL, *nb;
	size_t	 cap = 0, n = 0, r;

	if ((f = fopen(path, "rb")) == NULL)
		return -1;
	for (;;) {
		if (n == cap) {
			cap = cap ? cap * 2 : 1 << 20;
			if ((nb = realloc(b, cap)) == NULL) {
				free(b);
				fclose(f);
				return -1;
			}
			b = nb;
		}
		if ((r = fread(b + n, 1, cap - n, f)) == 0)
			break;
		n += r;
	}
	fclose(f);
	*buf = b;
	*len = n;
	return 0;
}

int
main(int argc, char **argv)
{
	struct tokenizer	*t;
	char			 cause[256], *buf, *end, *p, *text, *back;
	uint32_t		*ids;
	size_t			 len, n, i, back_len, records = 0;
	unsigned long		 rlen;

	if (argc == 2 && strcmp(argv[1], "classes") == 0)
		return tokdump_classes();
	if (argc != 3) {
		fprintf(stderr, "usage: tokdump ENCODING CORPUS\n"
		    "       tokdump classes\n");
		return 64;
	}
	if ((t = tokenizer_load(argv[1], cause, sizeof cause)) == NULL) {
		fprintf(stderr, "tokdump: %s\n", cause);
		return 1;
	}
	if (tokdump_read(argv[2], &buf, &len) == -1) {
		perror(argv[2]);
		return 1;
	}
	for (p = buf, end = buf + len; p < end; p = text + rlen + 1) {
		rlen = strtoul(p, &text, 10);
		if (*text != '\n' || rlen > (size_t)(end - text - 1)) {
			fprintf(stderr, "tokdump: bad record at %zu\n",
			    (size_t)(p - buf));
			return 1;
		}
		text++;
		if (tokenizer_encode(t, text, rlen, &ids, &n, cause,
		    sizeof cause) == -1) {
			fprintf(stderr, "tokdump: record %zu: %s\n", records,
			    cause);
			return 1;
		}
		if (tokenizer_count(t, text, rlen) != (int64_t)n) {
			fprintf(stderr, "tokdump: record %zu: count differs\n",
			    records);
			return 1;
		}
		if (tokenizer_decode(t, ids, n, &back, &back_len, cause,
		    sizeof cause) == -1 || back_len != rlen ||
		    memcmp(back, text, rlen) != 0) {
			fprintf(stderr, "tokdump: record %zu: decode differs\n",
			    records);
			return 1;
		}
		free(back);
		for (i = 0; i < n; i++)
			printf(i ? " %u" : "%u", ids[i]);
		putchar('\n');
		free(ids);
		records++;
	}
	free(buf);
	tokenizer_free(t);
	return fflush(stdout) == 0 ? 0 : 1;
}
