/*
 * libFuzzer target for the v1 protocol: the input goes through a frame reader
 * in chunks derived from the input; every frame (and the whole input, taken as
 * one body) is decoded as a request and as a reply to each op. Whatever
 * decodes must encode, and the encoding must decode to the same encoding.
 */
#include "config.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "protocol/frame.h"
#include "protocol/message.h"

/* Stop the run: an invariant broke. */
static void
fuzz_fail(void)
{
	abort();
}

/* The body of the one frame in sb. */
static const uint8_t *
fuzz_frame_body(const msgpack_sbuffer *sb, size_t *len)
{
	const uint8_t *p = (const uint8_t *)sb->data;

	if (sb->size <= FRAME_HEADER_LEN)
		fuzz_fail();
	*len = (size_t)p[0] << 24 | (size_t)p[1] << 16 | (size_t)p[2] << 8 | p[3];
	if (*len != sb->size - FRAME_HEADER_LEN)
		fuzz_fail();
	return p + FRAME_HEADER_LEN;
}

/* A failed decode must say why. */
static void
fuzz_check_error(const struct message_error *err)
{
	if (err->code == NULL || err->message[0] == '\0')
		fuzz_fail();
}

/* Decode as a request; on success re-encode twice and compare. */
static void
fuzz_request(const uint8_t *body, size_t len)
{
	struct message_error err;
	struct request *rq, *rq2;
	msgpack_sbuffer a, b;
	const uint8_t *p;
	size_t plen;

	if (message_request_decode(body, len, &rq, &err) != 0) {
		fuzz_check_error(&err);
		return;
	}
	msgpack_sbuffer_init(&a);
	msgpack_sbuffer_init(&b);
	if (message_request_encode(&a, rq) != 0)
		fuzz_fail();
	p = fuzz_frame_body(&a, &plen);
	if (message_request_decode(p, plen, &rq2, &err) != 0)
		fuzz_fail();
	if (rq2->id != rq->id || rq2->op != rq->op)
		fuzz_fail();
	if (message_request_encode(&b, rq2) != 0)
		fuzz_fail();
	if (a.size != b.size || memcmp(a.data, b.data, a.size) != 0)
		fuzz_fail();
	message_request_free(rq);
	message_request_free(rq2);
	msgpack_sbuffer_destroy(&a);
	msgpack_sbuffer_destroy(&b);
}

/* Decode as a reply to op; on success re-encode twice and compare. */
static void
fuzz_reply(const uint8_t *body, size_t len, enum message_op op)
{
	struct message_error err;
	struct reply *rp, *rp2;
	msgpack_sbuffer a, b;
	const uint8_t *p;
	size_t plen;

	if (message_reply_decode(body, len, op, &rp, &err) != 0) {
		fuzz_check_error(&err);
		return;
	}
	msgpack_sbuffer_init(&a);
	msgpack_sbuffer_init(&b);
	if (message_reply_encode(&a, rp) != 0)
		fuzz_fail();
	p = fuzz_frame_body(&a, &plen);
	if (message_reply_decode(p, plen, op, &rp2, &err) != 0)
		fuzz_fail();
	if (rp2->id != rp->id || rp2->type != rp->type)
		fuzz_fail();
	if (message_reply_encode(&b, rp2) != 0)
		fuzz_fail();
	if (a.size != b.size || memcmp(a.data, b.data, a.size) != 0)
		fuzz_fail();
	message_reply_free(rp);
	message_reply_free(rp2);
	msgpack_sbuffer_destroy(&a);
	msgpack_sbuffer_destroy(&b);
}

/* Everything one body can be decoded as. */
static void
fuzz_body(const uint8_t *body, size_t len)
{
	int op;

	fuzz_request(body, len);
	for (op = OP_CHAT; op <= OP_TOP; op++)
		fuzz_reply(body, len, (enum message_op)op);
}

int LLVMFuzzerTestOneInput(const uint8_t *, size_t);

/* One input: a stream of frames, fed in pieces. */
int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct frame_reader r;
	enum frame_status st;
	const uint8_t *body;
	size_t off = 0, chunk, used, blen, i;
	uint32_t x = 2166136261u;
	char cause[128];

	/* Chunk sizes come from a xorshift seeded with a hash of the input. */
	for (i = 0; i < size; i++)
		x = (x ^ data[i]) * 16777619u;
	if (x == 0)
		x = 1;
	frame_reader_init(&r, 1 << 20);
	while (off < size) {
		x ^= x << 13;
		x ^= x >> 17;
		x ^= x << 5;
		chunk = 1 + x % 64;
		if (chunk > size - off)
			chunk = size - off;
		while (chunk > 0) {
			st = frame_reader_feed(&r, data + off, chunk, &used, &body, &blen,
			    cause, sizeof cause);
			if (used > chunk)
				fuzz_fail();
			off += used;
			chunk -= used;
			if (st == FRAME_ERROR) {
				if (cause[0] == '\0')
					fuzz_fail();
				goto out;
			}
			if (st == FRAME_NEED_MORE) {
				if (chunk != 0)
					fuzz_fail();
				break;
			}
			if (blen == 0 || blen > r.max_frame)
				fuzz_fail();
			fuzz_body(body, blen);
		}
	}
out:
	frame_reader_clear(&r);
	if (size > 0)
		fuzz_body(data, size);
	return 0;
}
