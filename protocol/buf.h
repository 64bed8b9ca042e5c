/* buf.c: a growable byte buffer, kept NUL-terminated, that remembers running out of memory. */
#ifndef OLLM_BUF_H
#define OLLM_BUF_H

#include <stdbool.h>
#include <stddef.h>

/*
 * Zeroed, a buffer is empty and owns nothing. Whatever it holds is followed
 * by a NUL that len does not count, so text in it is a C string (unless it
 * holds NUL itself). A failed add leaves the contents as they were and sets
 * oom, so a run of adds can be checked once at its end.
 */
struct buf {
	char *p;                    /* NULL until something is added */
	size_t len;
	size_t cap;
	bool oom;
};

/* Room for n more bytes (and the NUL); -1, oom set, when memory or size_t runs out. */
int buf_reserve(struct buf *, size_t n);
/* Append n bytes; -1 as buf_reserve. */
int buf_add(struct buf *, const void *data, size_t n);
/* Append a C string. */
int buf_adds(struct buf *, const char *s);
/* Append printf-style text; -1 as buf_reserve. */
int buf_printf(struct buf *, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* Empty it, keeping its memory; oom is cleared. */
void buf_reset(struct buf *);
/* Free its memory and zero it. */
void buf_free(struct buf *);
/* Take its memory (NUL-terminated, len bytes; NULL when nothing was added): it is zeroed. */
char *buf_take(struct buf *, size_t *len);
/* A msgpack_packer sink: data is a struct buf. */
int buf_msgpack_write(void *data, const char *p, size_t n);

#endif
