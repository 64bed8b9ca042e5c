/* Split text into pieces per tiktoken's cl100k_base and o200k_base patterns. */
#include "config.h"

#include <stdint.h>
#include <string.h>

#include "daemon/pretok.h"
#include "daemon/unicode_tables.h"

/* The class pretok_class gives past the end of the text. */
#define UC_END		0x80

/* [^\s\p{L}\p{N}], and not the end of the text. */
#define UC_OTHER(c)	(((c) & (UC_L | UC_N | UC_WS | UC_END)) == 0)

/* The class of the character at p (valid UTF-8), its length in *n. */
static inline unsigned
pretok_class(const unsigned char *p, const unsigned char *end, size_t *n)
{
	uint32_t	cp;

	if (p >= end) {
		*n = 0;
		return UC_END;
	}
	if (p[0] < 0x80) {
		*n = 1;
		return uc_class(p[0]);
	}
	if (p[0] < 0xe0) {
		*n = 2;
		cp = ((uint32_t)(p[0] & 0x1f) << 6) | (p[1] & 0x3f);
	} else if (p[0] < 0xf0) {
		*n = 3;
		cp = ((uint32_t)(p[0] & 0x0f) << 12) |
		    ((uint32_t)(p[1] & 0x3f) << 6) | (p[2] & 0x3f);
	} else {
		*n = 4;
		cp = ((uint32_t)(p[0] & 0x07) << 18) |
		    ((uint32_t)(p[1] & 0x3f) << 12) |
		    ((uint32_t)(p[2] & 0x3f) << 6) | (p[3] & 0x3f);
	}
	return uc_class(cp);
}

/* The end of the run of characters from p having a class in want. */
static inline const unsigned char *
pretok_run(const unsigned char *p, const unsigned char *end, unsigned want)
{
	size_t	n;

	while (p < end) {
		if (*p < 0x80) {
			if ((uc_class(*p) & want) == 0)
				break;
			p++;
			continue;
		}
		if ((pretok_class(p, end, &n) & want) == 0)
			break;
		p += n;
	}
	return p;
}

/* The end of the run of [^\s\p{L}\p{N}] characters from p. */
static const unsigned char *
pretok_run_other(const unsigned char *p, const unsigned char *end)
{
	size_t	n;

	while (p < end && UC_OTHER(pretok_class(p, end, &n)))
		p += n;
	return p;
}

/* The length of (?i:'s|'t|'re|'ve|'m|'ll|'d) at p, or 0. */
static size_t
pretok_contraction(const unsigned char *p, const unsigned char *end)
{
	if (end - p < 2 || p[0] != '\'')
		return 0;
	switch (p[1] | 0x20) {
	case 's':
	case 't':
	case 'm':
	case 'd':
		return 2;
	case 'r':
	case 'v':
		return (end - p >= 3 && (p[2] | 0x20) == 'e') ? 3 : 0;
	case 'l':
		return (end - p >= 3 && (p[2] | 0x20) == 'l') ? 3 : 0;
	}
	/* U+017F LATIN SMALL LETTER LONG S folds to s. */
	if (p[1] == 0xc5 && end - p >= 3 && p[2] == 0xbf)
		return 3;
	return 0;
}

/* \p{N}{1,3} at p, whose first character (n bytes) is a number. */
static const unsigned char *
pretok_digits(const unsigned char *p, const unsigned char *end, size_t n)
{
	int	i;

	p += n;
	for (i = 1; i < 3; i++) {
		if ((pretok_class(p, end, &n) & UC_N) == 0)
			break;
		p += n;
	}
	return p;
}

/* ' ?[^\s\p{L}\p{N}]+' and its tail of [\r\n] (and / for o200k), or NULL. */
static const unsigned char *
pretok_punct(const unsigned char *p, const unsigned char *end, unsigned c0,
    int slash)
{
	const unsigned char	*q;
	size_t			 n;

	if (p[0] == ' ' && UC_OTHER(pretok_class(p + 1, end, &n)))
		q = p + 1;
	else if (UC_OTHER(c0))
		q = p;
	else
		return NULL;
	q = pretok_run_other(q, end);
	while (q < end && (*q == '\r' || *q == '\n' || (slash && *q == '/')))
		q++;
	return q;
}

/*
 * \s*[\r\n]+|\s+(?!\S)|\s+ at p, whose character is white space: up to the
 * last CR or LF of the run if it has one; else the whole run at the end of
 * the text; else the run less its last character, which goes with what
 * follows; else the one character.
 */
static const unsigned char *
pretok_space(const unsigned char *p, const unsigned char *end)
{
	const unsigned char	*q = p, *last = p, *nl = NULL;
	unsigned		 c;
	size_t			 n;

	while (q < end && ((c = pretok_class(q, end, &n)) & UC_WS)) {
		if (c & UC_CRLF)
			nl = q + n;
		last = q;
		q += n;
	}
	if (nl != NULL)
		return nl;
	if (q == end || last == p)
		return q;
	return last;
}

/* The end of the cl100k_base piece starting at p. */
static const unsigned char *
pretok_cl100k(const unsigned char *p, const unsigned char *end)
{
	const unsigned char	*q;
	unsigned		 c0, c1;
	size_t			 n0, n1, k;

	if (p[0] == '\'' && (k = pretok_contraction(p, end)) != 0)
		return p + k;
	c0 = pretok_class(p, end, &n0);
	if (c0 & UC_L)
		return pretok_run(p + n0, end, UC_L);
	if ((c0 & (UC_N | UC_CRLF)) == 0) {
		c1 = pretok_class(p + n0, end, &n1);
		if (c1 & UC_L)
			return pretok_run(p + n0 + n1, end, UC_L);
	}
	if (c0 & UC_N)
		return pretok_digits(p, end, n0);
	if ((q = pretok_punct(p, end, c0, 0)) != NULL)
		return q;
	return pretok_space(p, end);
}

/*
 * [UP]*[LO]+ from p, UP and LO being o200k's upper and lower case classes
 * (which share Lm, Lo and M), or NULL. When the greedy [UP]* leaves no [LO]
 * after it, it gives back characters until the last one that is also [LO].
 */
static const unsigned char *
pretok_o200k_case(const unsigned char *p, const unsigned char *end)
{
	const unsigned char	*last = NULL;
	unsigned		 c;
	size_t			 n;

	while ((c = pretok_class(p, end, &n)) & UC_UP) {
		if (c & UC_LO)
			last = p + n;
		p += n;
	}
	if (c & UC_LO)
		return pretok_run(p + n, end, UC_LO);
	return last;
}

/* The first two o200k_base alternatives, before the contraction, or NULL. */
static const unsigned char *
pretok_o200k_word(const unsigned char *p, const unsigned char *end,
    unsigned c0, size_t n0)
{
	const unsigned char	*q, *s = p + n0;
	unsigned		 c1;
	size_t			 n1;
	int			 prefix;

	prefix = (c0 & (UC_L | UC_N | UC_CRLF)) == 0;
	if (prefix && (q = pretok_o200k_case(s, end)) != NULL)
		return q;
	if ((q = pretok_o200k_case(p, end)) != NULL)
		return q;
	if (prefix && ((c1 = pretok_class(s, end, &n1)) & UC_UP)) {
		q = pretok_run(s + n1, end, UC_UP);
		return pretok_run(q, end, UC_LO);
	}
	if (c0 & UC_UP) {
		q = pretok_run(s, end, UC_UP);
		return pretok_run(q, end, UC_LO);
	}
	return NULL;
}

/* The end of the o200k_base piece starting at p. */
static const unsigned char *
pretok_o200k(const unsigned char *p, const unsigned char *end)
{
	const unsigned char	*q;
	unsigned		 c0;
	size_t			 n0;

	c0 = pretok_class(p, end, &n0);
	if ((q = pretok_o200k_word(p, end, c0, n0)) != NULL)
		return q + pretok_contraction(q, end);
	if (c0 & UC_N)
		return pretok_digits(p, end, n0);
	if ((q = pretok_punct(p, end, c0, 1)) != NULL)
		return q;
	return pretok_space(p, end);
}

/*
 * The length of the longest valid UTF-8 prefix of s: len when all of it is
 * valid, else the offset of the first bad sequence. Overlong forms,
 * surrogates and code points past U+10FFFF are invalid.
 */
size_t
pretok_utf8_valid(const char *s, size_t len)
{
	const unsigned char	*p = (const unsigned char *)s, *end = p + len;
	uint64_t		 w;
	unsigned		 lo, hi;
	size_t			 need, i;

	while (p < end) {
		if (*p < 0x80) {
			while (end - p >= 8) {
				memcpy(&w, p, 8);
				if (w & 0x8080808080808080ULL)
					break;
				p += 8;
			}
			while (p < end && *p < 0x80)
				p++;
			continue;
		}
		lo = 0x80;
		hi = 0xbf;
		if (*p < 0xc2)
			break;
		else if (*p < 0xe0)
			need = 1;
		else if (*p < 0xf0) {
			need = 2;
			if (*p == 0xe0)
				lo = 0xa0;
			else if (*p == 0xed)
				hi = 0x9f;
		} else if (*p < 0xf5) {
			need = 3;
			if (*p == 0xf0)
				lo = 0x90;
			else if (*p == 0xf4)
				hi = 0x8f;
		} else
			break;
		if ((size_t)(end - p) <= need || p[1] < lo || p[1] > hi)
			break;
		for (i = 2; i <= need; i++) {
			if ((p[i] & 0xc0) != 0x80)
				break;
		}
		if (i <= need)
			break;
		p += need + 1;
	}
	return (size_t)(p - (const unsigned char *)s);
}

/* Start splitting s (len bytes of valid UTF-8) by pattern. */
void
pretok_init(struct pretok *pt, enum pretok_pattern pattern, const char *s,
    size_t len)
{
	pt->p = (const unsigned char *)s;
	pt->end = pt->p + len;
	pt->pattern = pattern;
}

/* The next piece in *piece and *len: 1, or 0 at the end of the text. */
int
pretok_next(struct pretok *pt, const char **piece, size_t *len)
{
	const unsigned char	*q;

	if (pt->p >= pt->end)
		return 0;
	if (pt->pattern == PRETOK_O200K)
		q = pretok_o200k(pt->p, pt->end);
	else
		q = pretok_cl100k(pt->p, pt->end);
	*piece = (const char *)pt->p;
	*len = (size_t)(q - pt->p);
	pt->p = q;
	return 1;
}

/* The Unicode version of the character classes. */
const char *
pretok_unicode_version(void)
{
	return UNICODE_TABLES_VERSION;
}
