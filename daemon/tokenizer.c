/* tiktoken-compatible byte pair encoding: loading, encoding, counting. */
#include "config.h"

#include <sys/stat.h>

#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "daemon/pretok.h"
#include "daemon/tokenizer.h"

#ifndef PKGDATADIR
#define PKGDATADIR "/usr/local/share/openllmd"
#endif

#define TOKENIZER_MAX_FILE	(256u << 20)
#define TOKENIZER_MAX_RANK	((1u << 24) - 1)
#define TOKENIZER_NONE		UINT32_MAX
/* Pieces up to this length merge by tiktoken's own linear scan. */
#define TOKENIZER_SMALL		32

struct tokenizer_special {
	const char	*text;
	uint32_t	 id;
};

struct tokenizer_builtin {
	const char			*name;
	enum pretok_pattern		 pattern;
	const struct tokenizer_special	*specials;
	size_t				 n_specials;
};

static const struct tokenizer_special tokenizer_cl100k_specials[] = {
	{ "<|endoftext|>", 100257 },
	{ "<|fim_prefix|>", 100258 },
	{ "<|fim_middle|>", 100259 },
	{ "<|fim_suffix|>", 100260 },
	{ "<|endofprompt|>", 100276 },
};

static const struct tokenizer_special tokenizer_o200k_specials[] = {
	{ "<|endoftext|>", 199999 },
	{ "<|endofprompt|>", 200018 },
};

static const struct tokenizer_builtin tokenizer_builtins[] = {
	{ "cl100k_base", PRETOK_CL100K, tokenizer_cl100k_specials,
	  sizeof tokenizer_cl100k_specials / sizeof tokenizer_cl100k_specials[0] },
	{ "o200k_base", PRETOK_O200K, tokenizer_o200k_specials,
	  sizeof tokenizer_o200k_specials / sizeof tokenizer_o200k_specials[0] },
};

/* One slot of the rank table: the token's hash and rank + 1, or 0s. */
struct tokenizer_slot {
	uint32_t	hash;
	uint32_t	rank1;		/* 0 when empty */
};

struct tokenizer {
	char				*name;
	enum pretok_pattern		 pattern;
	uint32_t			 n_ranks;	/* every rank is below */
	uint32_t			 max_len;	/* longest token */
	uint32_t			*off;		/* n_ranks + 1 offsets */
	unsigned char			*bytes;		/* tokens in rank order */
	struct tokenizer_slot		*slots;		/* linear probing */
	uint32_t			 mask;
	uint32_t			*pair;		/* rank of 2-byte tokens */
	uint32_t			 byte_rank[256];
	const struct tokenizer_special	*specials;
	size_t				 n_specials;
};

/* Where encoding puts its tokens: an array, or only their number. */
struct tokenizer_out {
	uint32_t	*ids;		/* NULL when counting */
	size_t		 n;
	size_t		 cap;
	int		 failed;	/* out of memory */
};

/* Append one token to out. */
static inline void
tokenizer_emit(struct tokenizer_out *out, uint32_t rank)
{
	uint32_t	*ids;
	size_t		 cap;

	if (out->ids != NULL) {
		if (out->n == out->cap) {
			cap = out->cap * 2;
			if ((ids = realloc(out->ids, cap * sizeof *ids)) == NULL) {
				out->failed = 1;
				return;
			}
			out->ids = ids;
			out->cap = cap;
		}
		out->ids[out->n] = rank;
	}
	out->n++;
}

/* Load 8 bytes from any address. */
static inline uint64_t
tokenizer_load64(const unsigned char *p)
{
	uint64_t	v;

	memcpy(&v, p, sizeof v);
	return v;
}

/* Load 4 bytes from any address. */
static inline uint64_t
tokenizer_load32(const unsigned char *p)
{
	uint32_t	v;

	memcpy(&v, p, sizeof v);
	return v;
}

/* Scramble the bits of h. */
static inline uint64_t
tokenizer_mix(uint64_t h)
{
	h ^= h >> 32;
	h *= 0xd6e8feb86659fd93ULL;
	h ^= h >> 32;
	return h;
}

/* The hash of the n bytes at p. */
static inline uint32_t
tokenizer_hash(const unsigned char *p, size_t n)
{
	const unsigned char	*last;
	uint64_t		 x, h = 0x9e3779b97f4a7c15ULL * (n + 1);

	if (n >= 4 && n <= 8)
		x = tokenizer_load32(p) | (tokenizer_load32(p + n - 4) << 32);
	else if (n > 8) {
		for (last = p + n - 8; p < last; p += 8)
			h = tokenizer_mix(h ^ tokenizer_load64(p)) *
			    0x9fb21c651e98df25ULL;
		x = tokenizer_load64(last);
	} else if (n > 0)
		x = ((uint64_t)p[0] << 16) | ((uint64_t)p[n >> 1] << 8) |
		    p[n - 1];
	else
		x = 0;
	return (uint32_t)tokenizer_mix((h ^ x) * 0xbf58476d1ce4e5b9ULL);
}

/* Whether the n bytes at a and b are the same. */
static inline int
tokenizer_equal(const unsigned char *a, const unsigned char *b, size_t n)
{
	size_t	i;

	if (n >= 8) {
		for (i = 0; i + 8 < n; i += 8) {
			if (tokenizer_load64(a + i) != tokenizer_load64(b + i))
				return 0;
		}
		return tokenizer_load64(a + n - 8) == tokenizer_load64(b + n - 8);
	}
	if (n >= 4)
		return tokenizer_load32(a) == tokenizer_load32(b) &&
		    tokenizer_load32(a + n - 4) == tokenizer_load32(b + n - 4);
	for (i = 0; i < n; i++) {
		if (a[i] != b[i])
			return 0;
	}
	return 1;
}

/* The rank of the token made of the n bytes at p, or TOKENIZER_NONE. */
static inline uint32_t
tokenizer_rank(const struct tokenizer *t, const unsigned char *p, size_t n)
{
	const struct tokenizer_slot	*s;
	uint32_t			 h, i, r;

	if (n > t->max_len)
		return TOKENIZER_NONE;
	h = tokenizer_hash(p, n);
	for (i = h & t->mask;; i = (i + 1) & t->mask) {
		s = &t->slots[i];
		if (s->rank1 == 0)
			return TOKENIZER_NONE;
		r = s->rank1 - 1;
		if (s->hash == h && t->off[r + 1] - t->off[r] == n &&
		    tokenizer_equal(t->bytes + t->off[r], p, n))
			return r;
	}
}

/* The rank of the bytes from a to b (b > a) of piece. */
static inline uint32_t
tokenizer_span(const struct tokenizer *t, const unsigned char *piece,
    uint32_t a, uint32_t b)
{
	if (b - a == 1)
		return t->byte_rank[piece[a]];
	if (b - a == 2)
		return t->pair[(piece[a] << 8) | piece[a + 1]];
	return tokenizer_rank(t, piece + a, b - a);
}

/*
 * Merge a piece of 2 to TOKENIZER_SMALL bytes as tiktoken does: parts start
 * as single bytes; repeatedly, the adjacent pair whose concatenation has the
 * lowest rank (the leftmost on a tie) becomes one part, until no pair is a
 * token.
 */
static void
tokenizer_merge_small(const struct tokenizer *t, const unsigned char *piece,
    size_t n, struct tokenizer_out *out)
{
	uint32_t	pos[TOKENIZER_SMALL + 1], rank[TOKENIZER_SMALL + 1];
	uint32_t	min;
	size_t		m = n + 1, i, best;

	for (i = 0; i <= n; i++)
		pos[i] = (uint32_t)i;
	for (i = 0; i + 2 < m; i++)
		rank[i] = t->pair[(piece[i] << 8) | piece[i + 1]];
	rank[m - 2] = rank[m - 1] = TOKENIZER_NONE;
	for (;;) {
		min = TOKENIZER_NONE;
		best = 0;
		for (i = 0; i + 1 < m; i++) {
			if (rank[i] < min) {
				min = rank[i];
				best = i;
			}
		}
		if (min == TOKENIZER_NONE)
			break;
		i = best;
		if (i > 0)
			rank[i - 1] = tokenizer_span(t, piece, pos[i - 1],
			    pos[i + 2]);
		rank[i] = i + 3 < m ?
		    tokenizer_span(t, piece, pos[i], pos[i + 3]) :
		    TOKENIZER_NONE;
		memmove(&pos[i + 1], &pos[i + 2], (m - i - 2) * sizeof pos[0]);
		memmove(&rank[i + 1], &rank[i + 2], (m - i - 2) * sizeof rank[0]);
		m--;
	}
	for (i = 0; i + 1 < m; i++)
		tokenizer_emit(out, tokenizer_span(t, piece, pos[i], pos[i + 1]));
}

/*
 * The same merge for long pieces in O(n log n). Parts form a linked list
 * (a part is named by its first byte) and a 4-ary min-heap holds keys
 * (rank << 32 | part) for the pair each part starts: the lowest rank comes
 * first, the leftmost on a tie. Keys go stale when a pair changes and are
 * skipped: a pair only ever grows, so its rank never comes back.
 */
struct tokenizer_heap {
	uint64_t	*keys;
	size_t		 size;
	size_t		 cap;
};

/* Add key to the heap; -1 when out of memory. */
static int
tokenizer_heap_push(struct tokenizer_heap *h, uint64_t key)
{
	uint64_t	*keys;
	size_t		 i, parent;

	if (h->size == h->cap) {
		if ((keys = realloc(h->keys, 2 * h->cap * sizeof *keys)) == NULL)
			return -1;
		h->keys = keys;
		h->cap *= 2;
	}
	for (i = h->size++; i > 0; i = parent) {
		parent = (i - 1) / 4;
		if (h->keys[parent] <= key)
			break;
		h->keys[i] = h->keys[parent];
	}
	h->keys[i] = key;
	return 0;
}

/* Move key down from index i of the heap to its place. */
static void
tokenizer_heap_down(struct tokenizer_heap *h, size_t i, uint64_t key)
{
	size_t	child, best, end;

	for (;;) {
		child = 4 * i + 1;
		if (child >= h->size)
			break;
		end = child + 4 < h->size ? child + 4 : h->size;
		for (best = child++; child < end; child++) {
			if (h->keys[child] < h->keys[best])
				best = child;
		}
		if (h->keys[best] >= key)
			break;
		h->keys[i] = h->keys[best];
		i = best;
	}
	h->keys[i] = key;
}

/* Take the lowest key out of the (non-empty) heap. */
static uint64_t
tokenizer_heap_pop(struct tokenizer_heap *h)
{
	uint64_t	top = h->keys[0];

	if (--h->size > 0)
		tokenizer_heap_down(h, 0, h->keys[h->size]);
	return top;
}

/* Merge a long piece; -1 when out of memory. */
static int
tokenizer_merge_large(const struct tokenizer *t, const unsigned char *piece,
    size_t n, struct tokenizer_out *out)
{
	struct tokenizer_heap	 h;
	uint32_t		*mem, *next, *prev, *rank, a, b, r;
	uint64_t		 key;
	size_t			 i;

	if (n >= UINT32_MAX || (mem = malloc(3 * n * sizeof *mem)) == NULL)
		return -1;
	h.cap = n;
	h.size = 0;
	if ((h.keys = malloc(h.cap * sizeof *h.keys)) == NULL) {
		free(mem);
		return -1;
	}
	next = mem;
	prev = mem + n;
	rank = mem + 2 * n;
	for (i = 0; i < n; i++) {
		next[i] = (uint32_t)i + 1;
		prev[i] = (uint32_t)i - 1;
		rank[i] = i + 1 < n ?
		    t->pair[(piece[i] << 8) | piece[i + 1]] : TOKENIZER_NONE;
		if (rank[i] != TOKENIZER_NONE)
			h.keys[h.size++] = (uint64_t)rank[i] << 32 | i;
	}
	for (i = h.size / 4 + 1; i-- > 0;) {
		if (i < h.size)
			tokenizer_heap_down(&h, i, h.keys[i]);
	}

	while (h.size > 0) {
		key = tokenizer_heap_pop(&h);
		a = (uint32_t)key;
		if (rank[a] != (uint32_t)(key >> 32))
			continue;
		b = next[a];
		rank[b] = TOKENIZER_NONE;
		next[a] = next[b];
		if (next[a] < n)
			prev[next[a]] = a;
		r = next[a] < n ?
		    tokenizer_span(t, piece, a, next[next[a]]) : TOKENIZER_NONE;
		if ((rank[a] = r) != TOKENIZER_NONE &&
		    tokenizer_heap_push(&h, (uint64_t)r << 32 | a) == -1)
			goto nomem;
		if (a > 0) {
			b = prev[a];
			r = tokenizer_span(t, piece, b, next[a]);
			if ((rank[b] = r) != TOKENIZER_NONE &&
			    tokenizer_heap_push(&h, (uint64_t)r << 32 | b) == -1)
				goto nomem;
		}
	}
	for (a = 0; a < n; a = next[a])
		tokenizer_emit(out, tokenizer_span(t, piece, a, next[a]));
	free(h.keys);
	free(mem);
	return 0;

nomem:
	free(h.keys);
	free(mem);
	return -1;
}

/*
 * Encode text into out, as tiktoken's encode_ordinary: special tokens are
 * never produced, their text is encoded like any other.
 */
static int
tokenizer_run(const struct tokenizer *t, const char *text, size_t len,
    struct tokenizer_out *out, char *cause, size_t cause_len)
{
	struct pretok		 pt;
	const char		*piece;
	const unsigned char	*p;
	size_t			 n, bad;
	uint32_t		 r;

	if ((bad = pretok_utf8_valid(text, len)) != len) {
		snprintf(cause, cause_len, "invalid UTF-8 at byte %zu", bad);
		return -1;
	}
	pretok_init(&pt, t->pattern, text, len);
	while (pretok_next(&pt, &piece, &n)) {
		p = (const unsigned char *)piece;
		if (n == 1)
			tokenizer_emit(out, t->byte_rank[p[0]]);
		else if ((r = tokenizer_rank(t, p, n)) != TOKENIZER_NONE)
			tokenizer_emit(out, r);
		else if (n <= TOKENIZER_SMALL)
			tokenizer_merge_small(t, p, n, out);
		else if (tokenizer_merge_large(t, p, n, out) == -1)
			out->failed = 1;
		if (out->failed) {
			snprintf(cause, cause_len, "out of memory");
			return -1;
		}
	}
	return 0;
}

/* The ids of the tokens of text in *ids (malloc'd) and their number. */
int
tokenizer_encode(const struct tokenizer *t, const char *text, size_t len,
    uint32_t **ids, size_t *n_ids, char *cause, size_t cause_len)
{
	struct tokenizer_out	out;

	*ids = NULL;
	*n_ids = 0;
	out.n = 0;
	out.failed = 0;
	out.cap = len / 4 + 16;
	if ((out.ids = malloc(out.cap * sizeof *out.ids)) == NULL) {
		snprintf(cause, cause_len, "out of memory");
		return -1;
	}
	if (tokenizer_run(t, text, len, &out, cause, cause_len) == -1) {
		free(out.ids);
		return -1;
	}
	*ids = out.ids;
	*n_ids = out.n;
	return 0;
}

/* The number of tokens of text; -1 if it is not valid UTF-8 (or on ENOMEM). */
int64_t
tokenizer_count(const struct tokenizer *t, const char *text, size_t len)
{
	struct tokenizer_out	out;
	char			cause[64];

	out.ids = NULL;
	out.n = out.cap = 0;
	out.failed = 0;
	if (tokenizer_run(t, text, len, &out, cause, sizeof cause) == -1)
		return -1;
	return (int64_t)out.n;
}

/* Add the tokens of the len bytes at s (0: strlen(s)), if present, to *total. */
static int
tokenizer_count_add(const struct tokenizer *t, const char *s, size_t len,
    int64_t *total)
{
	int64_t	n;

	if (s == NULL)
		return 0;
	if ((n = tokenizer_count(t, s, len != 0 ? len : strlen(s))) == -1)
		return -1;
	*total += n;
	return 0;
}

/*
 * The prompt tokens of a chat, by the formula of MetaGPT's
 * count_message_tokens for gpt-3.5-turbo and gpt-4 (tokens_per_message = 3,
 * tokens_per_name = 1): each message costs 3 tokens, plus the tokens of each
 * of its string values (role, content, name and tool_call_id, when present),
 * plus 1 when it has a name; the reply is primed with 3 more
 * (<|start|>assistant<|message|>). -1 if a string is not valid UTF-8.
 */
int64_t
tokenizer_count_messages(const struct tokenizer *t,
    const struct tokenizer_message *msgs, size_t n)
{
	const struct tokenizer_message	*m;
	int64_t				 total = 0;
	size_t				 i;

	for (i = 0; i < n; i++) {
		m = &msgs[i];
		total += 3;
		if (tokenizer_count_add(t, m->role, 0, &total) == -1 ||
		    tokenizer_count_add(t, m->content, m->content_len, &total) == -1 ||
		    tokenizer_count_add(t, m->name, 0, &total) == -1 ||
		    tokenizer_count_add(t, m->tool_call_id, 0, &total) == -1)
			return -1;
		if (m->name != NULL)
			total += 1;
	}
	return total + 3;
}

/* The bytes of tokens ids in *out (malloc'd, NUL-terminated) and *out_len. */
int
tokenizer_decode(const struct tokenizer *t, const uint32_t *ids, size_t n,
    char **out, size_t *out_len, char *cause, size_t cause_len)
{
	const struct tokenizer_special	*sp;
	size_t				 i, j, len = 0, k;
	char				*buf;

	*out = NULL;
	*out_len = 0;
	for (i = 0; i < n; i++) {
		if (ids[i] < t->n_ranks && t->off[ids[i] + 1] != t->off[ids[i]]) {
			len += t->off[ids[i] + 1] - t->off[ids[i]];
			continue;
		}
		for (j = 0; j < t->n_specials; j++) {
			if (t->specials[j].id == ids[i])
				break;
		}
		if (j == t->n_specials) {
			snprintf(cause, cause_len, "unknown token %u", ids[i]);
			return -1;
		}
		len += strlen(t->specials[j].text);
	}
	if ((buf = malloc(len + 1)) == NULL) {
		snprintf(cause, cause_len, "out of memory");
		return -1;
	}
	for (i = 0, len = 0; i < n; i++) {
		if (ids[i] < t->n_ranks && t->off[ids[i] + 1] != t->off[ids[i]]) {
			k = t->off[ids[i] + 1] - t->off[ids[i]];
			memcpy(buf + len, t->bytes + t->off[ids[i]], k);
			len += k;
			continue;
		}
		for (sp = t->specials; sp->id != ids[i]; sp++)
			;
		k = strlen(sp->text);
		memcpy(buf + len, sp->text, k);
		len += k;
	}
	buf[len] = '\0';
	*out = buf;
	*out_len = len;
	return 0;
}

/* The name of the i-th built-in vocabulary, NULL past the last. */
const char *
tokenizer_builtin(size_t i)
{
	if (i >= sizeof tokenizer_builtins / sizeof tokenizer_builtins[0])
		return NULL;
	return tokenizer_builtins[i].name;
}

/* The name the tokenizer was loaded by. */
const char *
tokenizer_name(const struct tokenizer *t)
{
	return t->name;
}

/* Free a tokenizer. */
void
tokenizer_free(struct tokenizer *t)
{
	if (t == NULL)
		return;
	free(t->name);
	free(t->off);
	free(t->bytes);
	free(t->slots);
	free(t->pair);
	free(t);
}

/* Each base64 digit's value + 1; 0 for anything else. */
static const unsigned char tokenizer_b64[256] = {
	['A'] = 1, ['B'] = 2, ['C'] = 3, ['D'] = 4, ['E'] = 5, ['F'] = 6,
	['G'] = 7, ['H'] = 8, ['I'] = 9, ['J'] = 10, ['K'] = 11, ['L'] = 12,
	['M'] = 13, ['N'] = 14, ['O'] = 15, ['P'] = 16, ['Q'] = 17,
	['R'] = 18, ['S'] = 19, ['T'] = 20, ['U'] = 21, ['V'] = 22,
	['W'] = 23, ['X'] = 24, ['Y'] = 25, ['Z'] = 26, ['a'] = 27,
	['b'] = 28, ['c'] = 29, ['d'] = 30, ['e'] = 31, ['f'] = 32,
	['g'] = 33, ['h'] = 34, ['i'] = 35, ['j'] = 36, ['k'] = 37,
	['l'] = 38, ['m'] = 39, ['n'] = 40, ['o'] = 41, ['p'] = 42,
	['q'] = 43, ['r'] = 44, ['s'] = 45, ['t'] = 46, ['u'] = 47,
	['v'] = 48, ['w'] = 49, ['x'] = 50, ['y'] = 51, ['z'] = 52,
	['0'] = 53, ['1'] = 54, ['2'] = 55, ['3'] = 56, ['4'] = 57,
	['5'] = 58, ['6'] = 59, ['7'] = 60, ['8'] = 61, ['9'] = 62,
	['+'] = 63, ['/'] = 64
};

/*
 * Decode the standard base64 text from p to end (padded) in place; its
 * length in *len, or -1.
 */
static int
tokenizer_b64_decode(unsigned char *p, const unsigned char *end, size_t *len)
{
	unsigned char	*start = p, *w = p;
	int		 v[4], i, pad;

	if ((end - p) % 4 != 0)
		return -1;
	while (p < end) {
		pad = 0;
		for (i = 0; i < 4; i++) {
			if (p[i] == '=' && p + 4 == end && i >= 2) {
				v[i] = 0;
				pad++;
			} else if (pad > 0 || (v[i] = tokenizer_b64[p[i]] - 1) == -1)
				return -1;
		}
		*w++ = (unsigned char)((v[0] << 2) | (v[1] >> 4));
		if (pad < 2)
			*w++ = (unsigned char)(((v[1] & 0xf) << 4) | (v[2] >> 2));
		if (pad < 1)
			*w++ = (unsigned char)(((v[2] & 0x3) << 6) | v[3]);
		p += 4;
	}
	*len = (size_t)(w - start);
	return 0;
}

/* Read the whole regular file path into *buf (malloc'd) and *len. */
static int
tokenizer_read(const char *path, unsigned char **buf, size_t *len,
    char *cause, size_t cause_len)
{
	struct stat	 st;
	unsigned char	*b;
	size_t		 size, got = 0;
	ssize_t		 r;
	int		 fd;

	/* O_NONBLOCK: a FIFO or device must not block the daemon in open(). */
	if ((fd = open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK | O_NOCTTY)) == -1) {
		snprintf(cause, cause_len, "%s: %s", path, strerror(errno));
		return -1;
	}
	if (fstat(fd, &st) == -1) {
		snprintf(cause, cause_len, "%s: %s", path, strerror(errno));
		close(fd);
		return -1;
	}
	if (!S_ISREG(st.st_mode) || (uint64_t)st.st_size > TOKENIZER_MAX_FILE) {
		snprintf(cause, cause_len, "%s: %s", path, S_ISREG(st.st_mode) ?
		    "file too large" : "not a regular file");
		close(fd);
		return -1;
	}
	size = (size_t)st.st_size;
	if ((b = malloc(size + 1)) == NULL) {
		snprintf(cause, cause_len, "%s: out of memory", path);
		close(fd);
		return -1;
	}
	while (got < size) {
		if ((r = read(fd, b + got, size - got)) == -1) {
			if (errno == EINTR)
				continue;
			snprintf(cause, cause_len, "%s: %s", path, strerror(errno));
			free(b);
			close(fd);
			return -1;
		}
		if (r == 0)
			break;
		got += (size_t)r;
	}
	close(fd);
	*buf = b;
	*len = got;
	return 0;
}

/* One parsed line: where its decoded token lies in the file buffer. */
struct tokenizer_entry {
	uint32_t	off;
	uint32_t	len;
	uint32_t	rank;
};

/*
 * Parse the lines "BASE64 RANK" of a .tiktoken file, decoding each token in
 * place; empty lines are skipped. The entries in *entries (malloc'd).
 */
static int
tokenizer_parse(const char *path, unsigned char *buf, size_t len,
    struct tokenizer_entry **entries, size_t *n_entries, char *cause,
    size_t cause_len)
{
	struct tokenizer_entry	*e, *ne;
	unsigned char		*p = buf, *end = buf + len, *tok, *tok_end;
	size_t			 cap = len / 16 + 16, n = 0, line = 0, tlen;
	uint32_t		 rank;

	if ((e = malloc(cap * sizeof *e)) == NULL)
		goto nomem;
	while (p < end) {
		line++;
		for (tok = p; p < end && (tokenizer_b64[*p] != 0 || *p == '=');)
			p++;
		tok_end = p;
		if (p < end && *p != ' ' && *p != '\t' && *p != '\r' &&
		    *p != '\n')
			goto bad_base64;
		if (tok_end == tok) {
			if (p < end && *p == '\r')
				p++;
			if (p == end || *p++ == '\n')
				continue;	/* an empty line */
			goto malformed;
		}
		if (p == end || (*p != ' ' && *p != '\t'))
			goto malformed;
		while (p < end && (*p == ' ' || *p == '\t'))
			p++;
		if (p == end || *p < '0' || *p > '9')
			goto malformed;
		for (rank = 0; p < end && *p >= '0' && *p <= '9'; p++) {
			rank = rank * 10 + (uint32_t)(*p - '0');
			if (rank > TOKENIZER_MAX_RANK) {
				snprintf(cause, cause_len,
				    "%s:%zu: rank too large", path, line);
				goto fail;
			}
		}
		while (p < end && (*p == ' ' || *p == '\t' || *p == '\r'))
			p++;
		if (p < end && *p++ != '\n')
			goto malformed;
		if (tokenizer_b64_decode(tok, tok_end, &tlen) == -1)
			goto bad_base64;
		if (n == cap) {
			cap *= 2;
			if ((ne = realloc(e, cap * sizeof *e)) == NULL)
				goto nomem;
			e = ne;
		}
		e[n].off = (uint32_t)(tok - buf);
		e[n].len = (uint32_t)tlen;
		e[n].rank = rank;
		n++;
	}
	if (n == 0) {
		snprintf(cause, cause_len, "%s: no tokens", path);
		goto fail;
	}
	*entries = e;
	*n_entries = n;
	return 0;

malformed:
	snprintf(cause, cause_len, "%s:%zu: malformed line", path, line);
	goto fail;
bad_base64:
	snprintf(cause, cause_len, "%s:%zu: bad base64", path, line);
	goto fail;
nomem:
	snprintf(cause, cause_len, "%s: out of memory", path);
fail:
	free(e);
	return -1;
}

/* Build the rank-ordered token store and the rank table from entries. */
static int
tokenizer_build(struct tokenizer *t, const char *path,
    const unsigned char *buf, const struct tokenizer_entry *e, size_t n,
    char *cause, size_t cause_len)
{
	struct tokenizer_slot	*s;
	uint32_t		*hashes = NULL, r, h, i, cap, max_rank = 0;
	size_t			 k, total = 0;
	unsigned char		 b;

	for (k = 0; k < n; k++) {
		if (e[k].rank > max_rank)
			max_rank = e[k].rank;
		total += e[k].len;
		if (e[k].len > t->max_len)
			t->max_len = e[k].len;
	}
	if (total > UINT32_MAX - 1) {
		snprintf(cause, cause_len, "%s: too many tokens", path);
		return -1;
	}
	t->n_ranks = max_rank + 1;
	if ((t->off = calloc((size_t)t->n_ranks + 1, sizeof *t->off)) == NULL ||
	    (t->bytes = malloc(total)) == NULL)
		goto nomem;
	for (k = 0; k < n; k++) {
		if (t->off[e[k].rank + 1] != 0) {
			snprintf(cause, cause_len, "%s: rank %u appears twice",
			    path, e[k].rank);
			return -1;
		}
		t->off[e[k].rank + 1] = e[k].len;
	}
	for (r = 0; r < t->n_ranks; r++)
		t->off[r + 1] += t->off[r];
	for (k = 0; k < n; k++)
		memcpy(t->bytes + t->off[e[k].rank], buf + e[k].off, e[k].len);

	/* Hash everything first, so that each slot can be fetched ahead. */
	for (cap = 1024; cap < 2 * n; cap *= 2)
		;
	if ((t->slots = calloc(cap, sizeof *t->slots)) == NULL ||
	    (hashes = malloc(n * sizeof *hashes)) == NULL)
		goto nomem;
	t->mask = cap - 1;
	for (k = 0; k < n; k++)
		hashes[k] = tokenizer_hash(t->bytes + t->off[e[k].rank], e[k].len);
	for (k = 0; k < n; k++) {
		if (k + 16 < n)
			__builtin_prefetch(&t->slots[hashes[k + 16] & t->mask]);
		r = e[k].rank;
		h = hashes[k];
		for (i = h & t->mask;; i = (i + 1) & t->mask) {
			s = &t->slots[i];
			if (s->rank1 == 0)
				break;
			if (s->hash == h && t->off[s->rank1] -
			    t->off[s->rank1 - 1] == e[k].len &&
			    memcmp(t->bytes + t->off[s->rank1 - 1],
			    t->bytes + t->off[r], e[k].len) == 0) {
				snprintf(cause, cause_len, "%s: ranks %u and %u "
				    "have the same token", path, s->rank1 - 1, r);
				free(hashes);
				return -1;
			}
		}
		s->hash = h;
		s->rank1 = r + 1;
	}
	free(hashes);
	hashes = NULL;

	for (i = 0; i < 256; i++) {
		b = (unsigned char)i;
		if ((t->byte_rank[i] = tokenizer_rank(t, &b, 1)) ==
		    TOKENIZER_NONE) {
			snprintf(cause, cause_len,
			    "%s: no token for the byte 0x%02x", path, i);
			return -1;
		}
	}
	if ((t->pair = malloc(65536 * sizeof *t->pair)) == NULL)
		goto nomem;
	for (i = 0; i < 65536; i++)
		t->pair[i] = TOKENIZER_NONE;
	for (k = 0; k < n; k++) {
		if (e[k].len == 2) {
			const unsigned char *p = t->bytes + t->off[e[k].rank];

			t->pair[(p[0] << 8) | p[1]] = e[k].rank;
		}
	}
	return 0;

nomem:
	free(hashes);
	snprintf(cause, cause_len, "%s: out of memory", path);
	return -1;
}

/* Load the .tiktoken file path into a tokenizer named name. */
static struct tokenizer *
tokenizer_load_file(const char *path, const char *name,
    enum pretok_pattern pattern, const struct tokenizer_builtin *builtin,
    char *cause, size_t cause_len)
{
	struct tokenizer	*t;
	struct tokenizer_entry	*e = NULL;
	unsigned char		*buf;
	size_t			 len, n;

	if (tokenizer_read(path, &buf, &len, cause, cause_len) == -1)
		return NULL;
	if ((t = calloc(1, sizeof *t)) == NULL ||
	    (t->name = strdup(name)) == NULL) {
		snprintf(cause, cause_len, "out of memory");
		goto fail;
	}
	t->pattern = pattern;
	if (builtin != NULL) {
		t->specials = builtin->specials;
		t->n_specials = builtin->n_specials;
	}
	if (tokenizer_parse(path, buf, len, &e, &n, cause, cause_len) == -1 ||
	    tokenizer_build(t, path, buf, e, n, cause, cause_len) == -1)
		goto fail;
	free(e);
	free(buf);
	return t;

fail:
	free(e);
	free(buf);
	tokenizer_free(t);
	return NULL;
}

/*
 * Load a vocabulary: a built-in name (cl100k_base, the default, or
 * o200k_base) is looked up as NAME.tiktoken in $OPENLLMD_TOKENIZER_DIR, then
 * in PKGDATADIR/tokenizers; anything else is the path of a .tiktoken file,
 * split with cl100k_base's pattern unless its file name contains "o200k".
 */
struct tokenizer *
tokenizer_load(const char *name, char *cause, size_t cause_len)
{
	const struct tokenizer_builtin	*b = NULL;
	enum pretok_pattern		 pattern = PRETOK_CL100K;
	const char			*dir, *base;
	char				 path[4096];
	size_t				 i;

	if (name == NULL || *name == '\0')
		name = TOKENIZER_DEFAULT;
	for (i = 0; i < sizeof tokenizer_builtins / sizeof *b; i++) {
		if (strcmp(name, tokenizer_builtins[i].name) == 0)
			b = &tokenizer_builtins[i];
	}
	if (b == NULL) {
		base = strrchr(name, '/');
		base = base != NULL ? base + 1 : name;
		if (strstr(base, "o200k") != NULL)
			pattern = PRETOK_O200K;
		return tokenizer_load_file(name, name, pattern, NULL, cause,
		    cause_len);
	}

	dir = getenv("OPENLLMD_TOKENIZER_DIR");
	if (dir != NULL && *dir != '\0') {
		if ((size_t)snprintf(path, sizeof path, "%s/%s.tiktoken", dir,
		    name) >= sizeof path) {
			snprintf(cause, cause_len, "OPENLLMD_TOKENIZER_DIR too long");
			return NULL;
		}
		if (access(path, F_OK) == 0)
			return tokenizer_load_file(path, name, b->pattern, b,
			    cause, cause_len);
	}
	snprintf(path, sizeof path, "%s/tokenizers/%s.tiktoken", PKGDATADIR,
	    name);
	if (access(path, F_OK) == 0)
		return tokenizer_load_file(path, name, b->pattern, b, cause,
		    cause_len);
	snprintf(cause, cause_len, "%s: no %s.tiktoken in %s%s%s/tokenizers",
	    name, name, dir != NULL && *dir != '\0' ? dir : "",
	    dir != NULL && *dir != '\0' ? " or " : "", PKGDATADIR);
	return NULL;
}
