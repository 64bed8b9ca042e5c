/* pretok.c: split text into pieces the way tiktoken's split patterns do. */
#ifndef OLLM_PRETOK_H
#define OLLM_PRETOK_H

#include <stddef.h>

/*
 * The two split patterns, matched by hand with the semantics of the
 * backtracking engine tiktoken uses (leftmost alternative, greedy, and the
 * backtracking of \s+(?!\S)):
 *
 * cl100k_base (also Llama 3):
 *   (?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}|
 *   ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+
 *
 * o200k_base:
 *   [^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+
 *   (?i:'s|'t|'re|'ve|'m|'ll|'d)?|
 *   [^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+[\p{Ll}\p{Lm}\p{Lo}\p{M}]*
 *   (?i:'s|'t|'re|'ve|'m|'ll|'d)?|
 *   \p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n/]*|\s*[\r\n]+|\s+(?!\S)|\s+
 */
enum pretok_pattern {
	PRETOK_CL100K,
	PRETOK_O200K
};

/* An iterator over the pieces of one valid UTF-8 text. */
struct pretok {
	const unsigned char	*p;
	const unsigned char	*end;
	enum pretok_pattern	 pattern;
};

size_t	pretok_utf8_valid(const char *, size_t);
void	pretok_init(struct pretok *, enum pretok_pattern, const char *,
	    size_t);
int	pretok_next(struct pretok *, const char **, size_t *);
const char *pretok_unicode_version(void);

#endif
