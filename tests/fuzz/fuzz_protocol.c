/*
 * libFuzzer target for the v1 protocol: the input goes through a frame reader
 * in chunks derived from the input; every frame (and the whole input, taken as
 * one body) is decoded as a request and as a reply to each op. Whatever
 * decodes must encode, and the encoding must decode to the same encoding.
 * A decoded request keeps the caps (objects per frame, extra's size) and the
 * exact bytes of content and text, NUL included. The input is also sent as
 * the content of a chat and the text of a tokens request, and, for some
 * inputs, a chat whose extra holds a number of objects read from the input
 * checks that the caps refuse exactly what is over them.
 */
#include "config.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "protocol/frame.h"
#include "protocol/message.h"
#include "protocol/scan.h"

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

/* What a decoded request promises: within the caps, texts of their length. */
static void
fuzz_check_request(const uint8_t *body, size_t len, const struct request *rq)
{
	const struct chat_message *m = NULL;
	size_t n = 0, i, used, objects;
	char cause[128];

	if (scan_object(body, len, MESSAGE_MAX_DEPTH, 0, &used, &objects, cause,
	    sizeof cause) != 0 || used != len || objects > MESSAGE_MAX_OBJECTS)
		fuzz_fail();
	if (rq->op == OP_CHAT) {
		if (rq->u.chat.extra.len > MESSAGE_MAX_EXTRA)
			fuzz_fail();
		m = rq->u.chat.messages;
		n = rq->u.chat.n_messages;
	} else if (rq->op == OP_TOKENS) {
		if (rq->u.tokens.text != NULL &&
		    (rq->u.tokens.text[rq->u.tokens.text_len] != '\0' ||
		    strlen(rq->u.tokens.text) > rq->u.tokens.text_len))
			fuzz_fail();
		m = rq->u.tokens.messages;
		n = rq->u.tokens.n_messages;
	}
	for (i = 0; i < n; i++) {
		if (m[i].content != NULL && (m[i].content[m[i].content_len] != '\0' ||
		    strlen(m[i].content) > m[i].content_len))
			fuzz_fail();
	}
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
	fuzz_check_request(body, len, rq);
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

/* Pack a string key. */
static void
fuzz_key(msgpack_packer *pk, const char *k)
{
	msgpack_pack_str_with_body(pk, k, strlen(k));
}

/*
 * The input as a chat's content and as a tokens request's text: decoded
 * exactly, NUL bytes included, when it is UTF-8; refused otherwise.
 */
static void
fuzz_as_text(const uint8_t *data, size_t size)
{
	struct message_error err;
	struct request *rq;
	msgpack_sbuffer sb;
	msgpack_packer pk;
	int tokens, r;

	for (tokens = 0; tokens < 2; tokens++) {
		msgpack_sbuffer_init(&sb);
		msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
		msgpack_pack_map(&pk, 4);
		fuzz_key(&pk, "v");
		msgpack_pack_int(&pk, 1);
		fuzz_key(&pk, "id");
		msgpack_pack_int(&pk, 1);
		fuzz_key(&pk, "op");
		fuzz_key(&pk, tokens ? "tokens" : "chat");
		if (tokens)
			fuzz_key(&pk, "text");
		else {
			fuzz_key(&pk, "messages");
			msgpack_pack_array(&pk, 1);
			msgpack_pack_map(&pk, 2);
			fuzz_key(&pk, "role");
			fuzz_key(&pk, "user");
			fuzz_key(&pk, "content");
		}
		msgpack_pack_str_with_body(&pk, data, size);
		r = message_request_decode((const uint8_t *)sb.data, sb.size, &rq, &err);
		if (r != 0) {
			if (message_utf8_valid((const char *)data, size))
				fuzz_fail();
		} else {
			const char *t = tokens ? rq->u.tokens.text :
			    rq->u.chat.messages[0].content;
			size_t tl = tokens ? rq->u.tokens.text_len :
			    rq->u.chat.messages[0].content_len;
			if (tl != size || memcmp(t, data, size) != 0)
				fuzz_fail();
			message_request_free(rq);
			fuzz_request((const uint8_t *)sb.data, sb.size);
		}
		msgpack_sbuffer_destroy(&sb);
	}
}

/*
 * An input "X" + a 24-bit count n + values: a chat whose extra is
 * {"a": [n small integers]}, decoded when within MESSAGE_MAX_EXTRA_OBJECTS,
 * else too_large naming extra (past the frame's MESSAGE_MAX_OBJECTS too),
 * the id kept. Small inputs thus reach frames of up to 140,000 objects.
 */
static void
fuzz_extra_cap(const uint8_t *data, size_t size)
{
	struct message_error err;
	struct request *rq;
	msgpack_sbuffer sb;
	msgpack_packer pk;
	size_t n, i;
	int r;

	if (size < 4 || data[0] != 'X')
		return;
	n = ((size_t)data[1] << 16 | (size_t)data[2] << 8 | data[3]) % 140000;
	msgpack_sbuffer_init(&sb);
	msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
	msgpack_pack_map(&pk, 5);
	fuzz_key(&pk, "v");
	msgpack_pack_int(&pk, 1);
	fuzz_key(&pk, "id");
	msgpack_pack_int(&pk, 5);
	fuzz_key(&pk, "op");
	fuzz_key(&pk, "chat");
	fuzz_key(&pk, "messages");
	msgpack_pack_array(&pk, 1);
	msgpack_pack_map(&pk, 1);
	fuzz_key(&pk, "role");
	fuzz_key(&pk, "user");
	fuzz_key(&pk, "extra");
	msgpack_pack_map(&pk, 1);
	fuzz_key(&pk, "a");
	msgpack_pack_array(&pk, (uint32_t)n);
	for (i = 0; i < n; i++)
		msgpack_pack_int(&pk, size > 4 ? data[4 + i % (size - 4)] & 0x7f : 0);
	r = message_request_decode((const uint8_t *)sb.data, sb.size, &rq, &err);
	if (n + 3 <= MESSAGE_MAX_EXTRA_OBJECTS) {
		if (r != 0)
			fuzz_fail();
		message_request_free(rq);
	} else if (r == 0 || strcmp(err.code, "too_large") != 0 || err.id != 5 ||
	    strncmp(err.message, "extra: ", 7) != 0)
		fuzz_fail();
	msgpack_sbuffer_destroy(&sb);
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
	fuzz_as_text(data, size);
	fuzz_extra_cap(data, size);
	return 0;
}
