/* tokenizer.c: tiktoken-compatible byte pair encoding. */
#ifndef OLLM_TOKENIZER_H
#define OLLM_TOKENIZER_H

#include <stddef.h>
#include <stdint.h>

/*
 * A loaded vocabulary. It is never changed after tokenizer_load returns, so
 * one tokenizer may serve any number of callers at once; every call keeps
 * its scratch space to itself.
 */
struct tokenizer;

/*
 * One chat message; NULL fields are absent. content may hold NUL (U+0000):
 * content_len is its length in bytes, 0 meaning strlen(content).
 */
struct tokenizer_message {
	const char	*role;
	const char	*content;
	const char	*name;
	const char	*tool_call_id;
	size_t		 content_len;
};

#define TOKENIZER_DEFAULT	"cl100k_base"

struct tokenizer *tokenizer_load(const char *, char *, size_t);
const char	*tokenizer_builtin(size_t);
void		 tokenizer_free(struct tokenizer *);
const char	*tokenizer_name(const struct tokenizer *);
int		 tokenizer_encode(const struct tokenizer *, const char *, size_t,
		     uint32_t **, size_t *, char *, size_t);
int64_t		 tokenizer_count(const struct tokenizer *, const char *, size_t);
int64_t		 tokenizer_count_messages(const struct tokenizer *,
		     const struct tokenizer_message *, size_t);
int		 tokenizer_decode(const struct tokenizer *, const uint32_t *,
		     size_t, char **, size_t *, char *, size_t);

#endif
