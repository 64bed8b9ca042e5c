/* v1 framing: a 4-byte big-endian length, then that many bytes of body. */
#include "config.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "protocol/frame.h"

/* Initial body buffer; it doubles as bytes arrive, up to the declared length. */
#define FRAME_BODY_MIN  4096
/* A buffer up to this size is kept for the next frame; a larger one is freed. */
#define FRAME_BODY_KEEP (64 * 1024)

/* Set up a reader that refuses frames longer than max_frame (0: the default). */
void
frame_reader_init(struct frame_reader *r, size_t max_frame)
{
	memset(r, 0, sizeof *r);
	if (max_frame == 0)
		max_frame = FRAME_MAX_DEFAULT;
	if (max_frame > UINT32_MAX)
		max_frame = UINT32_MAX;
	r->max_frame = max_frame;
}

/* Release the reader's buffer. */
void
frame_reader_clear(struct frame_reader *r)
{
	free(r->body);
	r->body = NULL;
	r->body_cap = 0;
	r->header_have = 0;
	r->body_have = 0;
	r->body_len = 0;
}

/* Forget the frame just returned, keeping a small buffer for the next one. */
static void
frame_reader_reset(struct frame_reader *r)
{
	if (r->body_cap > FRAME_BODY_KEEP) {
		free(r->body);
		r->body = NULL;
		r->body_cap = 0;
	}
	r->header_have = 0;
	r->body_have = 0;
	r->body_len = 0;
}

/* Fail the reader for good. */
static enum frame_status __attribute__((format(printf, 4, 5)))
frame_reader_fail(struct frame_reader *r, char *cause, size_t cause_len,
    const char *fmt, ...)
{
	va_list ap;

	r->failed = 1;
	if (cause != NULL && cause_len > 0) {
		va_start(ap, fmt);
		vsnprintf(cause, cause_len, fmt, ap);
		va_end(ap);
	}
	return FRAME_ERROR;
}

/* Make room for need bytes of body, growing geometrically up to body_len. */
static int
frame_reader_grow(struct frame_reader *r, size_t need)
{
	size_t cap;
	uint8_t *p;

	if (need <= r->body_cap)
		return 0;
	cap = r->body_cap != 0 ? r->body_cap : FRAME_BODY_MIN;
	while (cap < need)
		cap *= 2;
	if (cap > r->body_len)
		cap = r->body_len;
	if ((p = realloc(r->body, cap)) == NULL)
		return -1;
	r->body = p;
	r->body_cap = cap;
	return 0;
}

/* Consume input until one whole frame is available or the input runs out. */
enum frame_status
frame_reader_feed(struct frame_reader *r, const uint8_t *data, size_t len,
    size_t *consumed, const uint8_t **body, size_t *body_len,
    char *cause, size_t cause_len)
{
	size_t off = 0, n;
	uint32_t declared;

	*consumed = 0;
	*body = NULL;
	*body_len = 0;
	if (r->failed)
		return frame_reader_fail(r, cause, cause_len,
		    "frame reader failed earlier");
	if (r->header_have == FRAME_HEADER_LEN && r->body_have == r->body_len)
		frame_reader_reset(r);	/* the previous frame was returned */

	if (r->header_have < FRAME_HEADER_LEN) {
		n = FRAME_HEADER_LEN - r->header_have;
		if (n > len)
			n = len;
		if (n == 0)
			return FRAME_NEED_MORE;
		memcpy(r->header + r->header_have, data, n);
		r->header_have += n;
		off += n;
		*consumed = off;
		if (r->header_have < FRAME_HEADER_LEN)
			return FRAME_NEED_MORE;
		declared = (uint32_t)r->header[0] << 24 | (uint32_t)r->header[1] << 16 |
		    (uint32_t)r->header[2] << 8 | (uint32_t)r->header[3];
		r->body_len = declared;	/* kept on error: 0, or over max_frame */
		if (declared == 0)
			return frame_reader_fail(r, cause, cause_len,
			    "frame length 0 is not allowed");
		if (declared > r->max_frame)
			return frame_reader_fail(r, cause, cause_len,
			    "frame length %lu is over the limit of %zu",
			    (unsigned long)declared, r->max_frame);
		r->body_have = 0;
	}

	n = r->body_len - r->body_have;
	if (n > len - off)
		n = len - off;
	if (n > 0) {
		if (frame_reader_grow(r, r->body_have + n) != 0)
			return frame_reader_fail(r, cause, cause_len,
			    "out of memory for a frame of %lu bytes",
			    (unsigned long)r->body_len);
		memcpy(r->body + r->body_have, data + off, n);
		r->body_have += n;
		off += n;
	}
	*consumed = off;
	if (r->body_have < r->body_len)
		return FRAME_NEED_MORE;
	*body = r->body;
	*body_len = r->body_len;
	return FRAME_READY;
}

/* Write the 4-byte big-endian header for a body of len bytes. */
void
frame_header_write(uint8_t out[FRAME_HEADER_LEN], uint32_t len)
{
	out[0] = len >> 24;
	out[1] = len >> 16;
	out[2] = len >> 8;
	out[3] = len;
}
