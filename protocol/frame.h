/* frame.c: v1 framing, a 4-byte big-endian length then that many bytes. */
#ifndef OLLM_FRAME_H
#define OLLM_FRAME_H

#include <stddef.h>
#include <stdint.h>

#define FRAME_HEADER_LEN 4
#define FRAME_MAX_DEFAULT (16u * 1024 * 1024)

/*
 * Incremental reader: feed it bytes as they arrive, take whole frames out in
 * order. The declared length is checked against max_frame before any byte of
 * the body is buffered. After an error the reader stays failed.
 */
struct frame_reader {
	size_t max_frame;
	uint8_t header[FRAME_HEADER_LEN];
	size_t header_have;
	uint32_t body_len;      /* declared length of the frame being read */
	uint8_t *body;          /* the body_have bytes of the body received so far */
	size_t body_have;
	size_t body_cap;        /* allocated size of body; grows with the bytes received */
	int failed;
};

enum frame_status {
	FRAME_NEED_MORE = 0,    /* all input consumed, no whole frame yet */
	FRAME_READY = 1,        /* a whole frame is available */
	FRAME_ERROR = -1        /* length 0 or over max_frame (body_len says which); cause filled */
};

void frame_reader_init(struct frame_reader *, size_t max_frame);
void frame_reader_clear(struct frame_reader *);

/*
 * Consume up to len bytes of input; *consumed says how many were taken.
 * On FRAME_READY, *body and *body_len point at the frame's bytes, owned by the
 * reader and valid until the next call; the caller feeds the rest of the input
 * (from data + *consumed) afterwards.
 */
enum frame_status frame_reader_feed(struct frame_reader *, const uint8_t *data,
    size_t len, size_t *consumed, const uint8_t **body, size_t *body_len,
    char *cause, size_t cause_len);

/* Write the 4-byte big-endian header for a body of len bytes. */
void frame_header_write(uint8_t out[FRAME_HEADER_LEN], uint32_t len);

#endif
