/* Typed encode and decode of every v1 request and reply. */
#include "config.h"

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "protocol/frame.h"
#include "protocol/message.h"
#include "protocol/pack.h"
#include "protocol/scan.h"

/* Field flags for the decoders. */
#define MESSAGE_ZONE_CHUNK 960       /* a decode zone's first chunk: see message_request_decode */
#define F_REQ      0x1          /* absent is an error */
#define F_NONEMPTY 0x2          /* a string must not be empty */
#define F_NUL      0x4          /* a string may hold NUL (U+0000) */

/* One known key of a map: where its value is, once looked up. */
struct field {
	const char *name;
	const msgpack_object *o;    /* NULL when absent or nil */
	int seen;                   /* the key was there (maybe with nil) */
};

/* Encoder state: the packer writes straight into the caller's sbuffer. */
struct enc {
	msgpack_packer pk;
	int failed;
};

static const char *const message_op_names[] = {
	NULL, "chat", "tokens", "stats", "models", "ping", "cancel", "reset", "logs", "top"
};
#define MESSAGE_N_OPS (sizeof message_op_names / sizeof message_op_names[0])

static const char *const message_reply_names[] = {
	NULL, "delta", "done", "result", "error", "status"
};

/* Name of an op, or NULL for a value outside the enum. */
const char *
message_op_name(enum message_op op)
{
	if ((unsigned int)op == 0 || (unsigned int)op >= MESSAGE_N_OPS)
		return NULL;
	return message_op_names[op];
}

/* Map an op name of len bytes to its enum value. */
int
message_op_parse(const char *s, size_t len, enum message_op *op)
{
	size_t i;

	for (i = 1; i < MESSAGE_N_OPS; i++) {
		if (strlen(message_op_names[i]) == len &&
		    memcmp(message_op_names[i], s, len) == 0) {
			*op = (enum message_op)i;
			return 0;
		}
	}
	return -1;
}

/* The length of a text that may hold NUL: len, or strlen(s) when len is 0. */
size_t
message_text_len(const char *s, size_t len)
{
	return len != 0 ? len : strlen(s);
}

/* Strict UTF-8: shortest form only, no surrogates, nothing above U+10FFFF. */
bool
message_utf8_valid(const char *s, size_t len)
{
	const unsigned char *p = (const unsigned char *)s, *end = p + len;
	unsigned char c, lo, hi;
	size_t need, i;
	uint64_t w;

	while (p < end) {
		if (end - p >= 8) {
			memcpy(&w, p, 8);
			if ((w & 0x8080808080808080ULL) == 0) {
				p += 8;
				continue;
			}
		}
		c = *p;
		if (c < 0x80) {
			p++;
			continue;
		}
		lo = 0x80;
		hi = 0xbf;
		if (c >= 0xc2 && c <= 0xdf)
			need = 1;
		else if (c >= 0xe0 && c <= 0xef) {
			need = 2;
			if (c == 0xe0)
				lo = 0xa0;      /* overlong */
			else if (c == 0xed)
				hi = 0x9f;      /* surrogates */
		} else if (c >= 0xf0 && c <= 0xf4) {
			need = 3;
			if (c == 0xf0)
				lo = 0x90;      /* overlong */
			else if (c == 0xf4)
				hi = 0x8f;      /* above U+10FFFF */
		} else
			return false;
		if ((size_t)(end - p) <= need)
			return false;
		if (p[1] < lo || p[1] > hi)
			return false;
		for (i = 2; i <= need; i++) {
			if (p[i] < 0x80 || p[i] > 0xbf)
				return false;
		}
		p += need + 1;
	}
	return true;
}

/* --- decoding helpers --------------------------------------------------- */

/* Fill err and return -1. */
static int __attribute__((format(printf, 3, 4)))
message_fail(struct message_error *err, const char *code, const char *fmt, ...)
{
	va_list ap;

	err->code = code;
	va_start(ap, fmt);
	vsnprintf(err->message, sizeof err->message, fmt, ap);
	va_end(ap);
	return -1;
}

/* Copy an untrusted string for an error message: short, printable ASCII. */
static void
message_quote(char *out, size_t outlen, const char *s, size_t len)
{
	size_t i, n = 0;

	for (i = 0; i < len && n + 4 < outlen; i++)
		out[n++] = (s[i] >= 0x20 && s[i] < 0x7f) ? s[i] : '?';
	if (i < len && n + 3 < outlen) {
		memcpy(out + n, "...", 3);
		n += 3;
	}
	out[n] = '\0';
}

/* Read the n-byte big-endian unsigned integer at p. */
static uint64_t
message_be(const uint8_t *p, size_t n)
{
	uint64_t v = 0;

	while (n-- > 0)
		v = v << 8 | *p++;
	return v;
}

/*
 * A request over MESSAGE_MAX_OBJECTS: walk its top-level map (no
 * allocation) to find the id for the reply and the field holding the most
 * objects, and fail with too_large naming it; bad_frame if the bytes turn
 * out malformed on the way.
 */
static int
message_too_many(const uint8_t *body, size_t len, struct message_error *err)
{
	char cause[128], key[48] = "", name[48] = "";
	size_t off, hdr, used, objects, most = 0, i, n;
	const uint8_t *k;
	uint8_t b = body[0];

	if (b <= 0x8f) {
		n = b & 0x0f;
		off = 1;
	} else {
		hdr = b == 0xde ? 2 : 4;
		if (len < 1 + hdr)
			return message_fail(err, "bad_frame", "msgpack truncated at byte 1");
		n = (size_t)message_be(body + 1, hdr);
		off = 1 + hdr;
	}
	for (i = 0; i < 2 * n; i++) {
		if (scan_object(body + off, len - off, MESSAGE_MAX_DEPTH - 1, 0, &used,
		    &objects, cause, sizeof cause) != 0) {
			err->id = 0;
			return message_fail(err, "bad_frame", "%s (in the value at byte %zu)",
			    cause, off);
		}
		k = body + off;
		if (i % 2 == 0) {
			/* a key: remember it if it is a string */
			b = k[0];
			hdr = (b >= 0xa0 && b <= 0xbf) ? 1 : b == 0xd9 ? 2 :
			    b == 0xda ? 3 : b == 0xdb ? 5 : 0;
			if (hdr != 0)
				message_quote(key, sizeof key, (const char *)k + hdr, used - hdr);
			else
				snprintf(key, sizeof key, "(a key that is not a string)");
		} else {
			if (strcmp(key, "id") == 0 && err->id == 0) {
				b = k[0];
				if (b <= 0x7f)
					err->id = b;
				else if (b >= 0xcc && b <= 0xcf)
					err->id = message_be(k + 1, (size_t)1 << (b - 0xcc));
			}
			if (objects > most) {
				most = objects;
				memcpy(name, key, sizeof name);
			}
		}
		off += used;
	}
	if (off != len) {
		err->id = 0;
		return message_fail(err, "bad_frame",
		    "%zu bytes after the map at the end of the frame", len - off);
	}
	if (most > MESSAGE_MAX_OBJECTS / 2)
		return message_fail(err, "too_large",
		    "%s: %zu msgpack objects; a request holds at most %d in all",
		    name, most, MESSAGE_MAX_OBJECTS);
	return message_fail(err, "too_large",
	    "request: more than %d msgpack objects in all (%zu fields)",
	    MESSAGE_MAX_OBJECTS, n);
}

/*
 * Check the body with the bounded scan, then unpack it. The scan guarantees
 * one map, no trailing bytes, nesting within MESSAGE_MAX_DEPTH, every
 * declared count backed by bytes and, for a request (max_objects not 0), at
 * most max_objects objects, so msgpack-c allocates a bounded amount (strings
 * are referenced, not copied).
 */
static int
message_unpack(const uint8_t *body, size_t len, size_t max_objects,
    msgpack_zone *zone, msgpack_object *obj, struct message_error *err)
{
	char cause[128];
	size_t used, off = 0;
	msgpack_unpack_return rc;
	int r;

	if (len == 0 || !((body[0] >= 0x80 && body[0] <= 0x8f) ||
	    body[0] == 0xde || body[0] == 0xdf))
		return message_fail(err, "bad_frame", "frame body is not a msgpack map");
	r = scan_object(body, len, MESSAGE_MAX_DEPTH, max_objects, &used, NULL, cause,
	    sizeof cause);
	if (r == SCAN_TOO_MANY)
		return message_too_many(body, len, err);
	if (r != 0)
		return message_fail(err, "bad_frame", "%s", cause);
	if (used != len)
		return message_fail(err, "bad_frame",
		    "%zu bytes after the map at the end of the frame", len - used);
	rc = msgpack_unpack((const char *)body, len, &off, zone, obj);
	if (rc != MSGPACK_UNPACK_SUCCESS || off != len || obj->type != MSGPACK_OBJECT_MAP) {
		if (rc == MSGPACK_UNPACK_NOMEM_ERROR)
			return message_fail(err, "internal", "out of memory");
		return message_fail(err, "bad_frame", "frame body is not one msgpack map");
	}
	return 0;
}

/* Look the known keys of f up in a map; a known key twice is an error. */
static int
message_fields(const msgpack_object *map, struct field *f, size_t nf,
    const char *pre, struct message_error *err)
{
	const msgpack_object_kv *kv;
	const char *k;
	size_t i, j, klen;

	for (i = 0; i < map->via.map.size; i++) {
		kv = &map->via.map.ptr[i];
		if (kv->key.type != MSGPACK_OBJECT_STR)
			continue;
		k = kv->key.via.str.ptr;
		klen = kv->key.via.str.size;
		for (j = 0; j < nf; j++) {
			if (klen == 0 || f[j].name[0] != k[0] ||
			    strlen(f[j].name) != klen ||
			    memcmp(f[j].name, k, klen) != 0)
				continue;
			if (f[j].seen)
				return message_fail(err, "bad_request",
				    "%s%s: duplicate key", pre, f[j].name);
			f[j].seen = 1;
			if (kv->val.type != MSGPACK_OBJECT_NIL)
				f[j].o = &kv->val;
			break;
		}
	}
	return 0;
}

/* Tell whether a field has a value: 1 yes, 0 absent (keep the default), -1 error. */
static int
field_present(const struct field *f, const char *pre, unsigned int flags,
    const char *what, struct message_error *err)
{
	if (f->o != NULL)
		return 1;
	if (~flags & F_REQ)
		return 0;
	if (f->seen)
		return message_fail(err, "bad_request", "%s%s: expected %s", pre,
		    f->name, what);
	return message_fail(err, "bad_request", "%s%s: missing", pre, f->name);
}

/*
 * Copy a string value: UTF-8, no NUL unless flags has F_NUL, NUL-terminated
 * copy; its length in *out_len when that is not NULL.
 */
static int
obj_strn(const msgpack_object *o, const char *pre, const char *name,
    unsigned int flags, char **out, size_t *out_len, struct message_error *err)
{
	const char *s;
	size_t len;
	char *p;

	if (o->type != MSGPACK_OBJECT_STR)
		return message_fail(err, "bad_request", "%s%s: expected string", pre, name);
	s = o->via.str.ptr;
	len = o->via.str.size;
	if ((flags & F_NONEMPTY) && len == 0)
		return message_fail(err, "bad_request", "%s%s: must not be empty", pre, name);
	if (len > 0 && (~flags & F_NUL) && memchr(s, '\0', len) != NULL)
		return message_fail(err, "bad_request", "%s%s: contains a NUL byte", pre, name);
	if (!message_utf8_valid(s, len))
		return message_fail(err, "bad_request", "%s%s: not valid UTF-8", pre, name);
	if ((p = malloc(len + 1)) == NULL)
		return message_fail(err, "internal", "out of memory");
	if (len > 0)
		memcpy(p, s, len);
	p[len] = '\0';
	*out = p;
	if (out_len != NULL)
		*out_len = len;
	return 0;
}

/* Copy a string value that may not hold NUL. */
static int
obj_str(const msgpack_object *o, const char *pre, const char *name,
    unsigned int flags, char **out, struct message_error *err)
{
	return obj_strn(o, pre, name, flags & ~F_NUL, out, NULL, err);
}

/* Read a signed integer >= min. */
static int
obj_int(const msgpack_object *o, const char *pre, const char *name, int64_t min,
    int64_t *out, struct message_error *err)
{
	int64_t v;

	if (o->type == MSGPACK_OBJECT_POSITIVE_INTEGER) {
		if (o->via.u64 > INT64_MAX)
			return message_fail(err, "bad_request", "%s%s: out of range", pre, name);
		v = (int64_t)o->via.u64;
	} else if (o->type == MSGPACK_OBJECT_NEGATIVE_INTEGER)
		v = o->via.i64;
	else
		return message_fail(err, "bad_request", "%s%s: expected integer", pre, name);
	if (v < min)
		return message_fail(err, "bad_request", "%s%s: must be >= %lld", pre, name,
		    (long long)min);
	*out = v;
	return 0;
}

/* Read an unsigned integer in [min, max]. */
static int
obj_uint(const msgpack_object *o, const char *pre, const char *name, uint64_t min,
    uint64_t max, uint64_t *out, struct message_error *err)
{
	if (o->type == MSGPACK_OBJECT_NEGATIVE_INTEGER)
		return message_fail(err, "bad_request", "%s%s: must be >= %llu", pre, name,
		    (unsigned long long)min);
	if (o->type != MSGPACK_OBJECT_POSITIVE_INTEGER)
		return message_fail(err, "bad_request", "%s%s: expected integer", pre, name);
	if (o->via.u64 < min)
		return message_fail(err, "bad_request", "%s%s: must be >= %llu", pre, name,
		    (unsigned long long)min);
	if (o->via.u64 > max)
		return message_fail(err, "bad_request", "%s%s: must be <= %llu", pre, name,
		    (unsigned long long)max);
	*out = o->via.u64;
	return 0;
}

/* Read a finite number (integer or float) in [min, max]. */
static int
obj_double(const msgpack_object *o, const char *pre, const char *name, double min,
    double max, double *out, struct message_error *err)
{
	double v;

	switch (o->type) {
	case MSGPACK_OBJECT_POSITIVE_INTEGER:
		v = (double)o->via.u64;
		break;
	case MSGPACK_OBJECT_NEGATIVE_INTEGER:
		v = (double)o->via.i64;
		break;
	case MSGPACK_OBJECT_FLOAT32:
	case MSGPACK_OBJECT_FLOAT64:
		v = o->via.f64;
		break;
	default:
		return message_fail(err, "bad_request", "%s%s: expected number", pre, name);
	}
	if (!isfinite(v))
		return message_fail(err, "bad_request", "%s%s: expected a finite number",
		    pre, name);
	if (v < min || v > max)
		return message_fail(err, "bad_request", "%s%s: out of range", pre, name);
	*out = v;
	return 0;
}

/* Read a boolean. */
static int
obj_bool(const msgpack_object *o, const char *pre, const char *name, bool *out,
    struct message_error *err)
{
	if (o->type != MSGPACK_OBJECT_BOOLEAN)
		return message_fail(err, "bad_request", "%s%s: expected boolean", pre, name);
	*out = o->via.boolean;
	return 0;
}

/*
 * Check that a free-form value maps onto JSON: string keys, UTF-8, no bin or
 * ext. *count grows by the number of objects it holds.
 */
static int
raw_check(const msgpack_object *o, const char *pre, const char *name,
    size_t *count, struct message_error *err)
{
	const msgpack_object_kv *kv;
	uint32_t i;

	(*count)++;
	switch (o->type) {
	case MSGPACK_OBJECT_NIL:
	case MSGPACK_OBJECT_BOOLEAN:
	case MSGPACK_OBJECT_POSITIVE_INTEGER:
	case MSGPACK_OBJECT_NEGATIVE_INTEGER:
		return 0;
	case MSGPACK_OBJECT_FLOAT32:
	case MSGPACK_OBJECT_FLOAT64:
		if (!isfinite(o->via.f64))
			return message_fail(err, "bad_request",
			    "%s%s: holds a number that is not finite", pre, name);
		return 0;
	case MSGPACK_OBJECT_STR:
		if (!message_utf8_valid(o->via.str.ptr, o->via.str.size))
			return message_fail(err, "bad_request",
			    "%s%s: holds a string that is not valid UTF-8", pre, name);
		return 0;
	case MSGPACK_OBJECT_ARRAY:
		for (i = 0; i < o->via.array.size; i++) {
			if (raw_check(&o->via.array.ptr[i], pre, name, count, err) != 0)
				return -1;
		}
		return 0;
	case MSGPACK_OBJECT_MAP:
		for (i = 0; i < o->via.map.size; i++) {
			kv = &o->via.map.ptr[i];
			if (kv->key.type != MSGPACK_OBJECT_STR)
				return message_fail(err, "bad_request",
				    "%s%s: holds a map key that is not a string", pre, name);
			if (raw_check(&kv->key, pre, name, count, err) != 0 ||
			    raw_check(&kv->val, pre, name, count, err) != 0)
				return -1;
		}
		return 0;
	default:
		return message_fail(err, "bad_request",
		    "%s%s: holds a bin or ext value", pre, name);
	}
}

/*
 * Keep a free-form map or array as msgpack bytes of its own; with max_bytes
 * not 0, one of more than max_objects objects or max_bytes encoded bytes is
 * too_large.
 */
static int
obj_raw(const msgpack_object *o, const char *pre, const char *name,
    msgpack_object_type want, size_t max_objects, size_t max_bytes,
    struct message_raw *out, struct message_error *err)
{
	msgpack_sbuffer sb;
	msgpack_packer pk;
	size_t count = 0;

	if (o->type != want)
		return message_fail(err, "bad_request", "%s%s: expected %s", pre, name,
		    want == MSGPACK_OBJECT_MAP ? "map" : "array");
	if (raw_check(o, pre, name, &count, err) != 0)
		return -1;
	if (max_objects != 0 && count > max_objects)
		return message_fail(err, "too_large",
		    "%s%s: %zu msgpack objects, at most %zu", pre, name, count, max_objects);
	msgpack_sbuffer_init(&sb);
	msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
	if (msgpack_pack_object(&pk, *o) != 0) {
		msgpack_sbuffer_destroy(&sb);
		return message_fail(err, "internal", "out of memory");
	}
	if (max_bytes != 0 && sb.size > max_bytes) {
		count = sb.size;
		msgpack_sbuffer_destroy(&sb);
		return message_fail(err, "too_large",
		    "%s%s: %zu bytes encoded, at most %zu", pre, name, count, max_bytes);
	}
	out->len = sb.size;
	out->data = (uint8_t *)msgpack_sbuffer_release(&sb);
	return 0;
}

/* Read an array of strings; *out is non-NULL even when the array is empty. */
static int
obj_str_array(const msgpack_object *o, const char *pre, const char *name,
    char ***out, size_t *n, struct message_error *err)
{
	char elem[96];
	uint32_t i, count;

	if (o->type != MSGPACK_OBJECT_ARRAY)
		return message_fail(err, "bad_request", "%s%s: expected array of strings",
		    pre, name);
	count = o->via.array.size;
	if ((*out = calloc(count != 0 ? count : 1, sizeof **out)) == NULL)
		return message_fail(err, "internal", "out of memory");
	*n = count;
	for (i = 0; i < count; i++) {
		snprintf(elem, sizeof elem, "%s[%u]", name, i);
		if (obj_str(&o->via.array.ptr[i], pre, elem, 0, &(*out)[i], err) != 0)
			return -1;
	}
	return 0;
}

/* A string field: presence first, then the typed reader (so for all field_*). */
static int
field_str(const struct field *f, const char *pre, unsigned int flags, char **out,
    struct message_error *err)
{
	int r = field_present(f, pre, flags, "string", err);

	return r <= 0 ? r : obj_str(f->o, pre, f->name, flags, out, err);
}

/* An integer field >= min. */
static int
field_int(const struct field *f, const char *pre, unsigned int flags, int64_t min,
    int64_t *out, struct message_error *err)
{
	int r = field_present(f, pre, flags, "integer", err);

	return r <= 0 ? r : obj_int(f->o, pre, f->name, min, out, err);
}

/* An unsigned integer field in [min, max]. */
static int
field_uint(const struct field *f, const char *pre, unsigned int flags, uint64_t min,
    uint64_t max, uint64_t *out, struct message_error *err)
{
	int r = field_present(f, pre, flags, "integer", err);

	return r <= 0 ? r : obj_uint(f->o, pre, f->name, min, max, out, err);
}

/* A number field in [min, max]. */
static int
field_double(const struct field *f, const char *pre, unsigned int flags, double min,
    double max, double *out, struct message_error *err)
{
	int r = field_present(f, pre, flags, "number", err);

	return r <= 0 ? r : obj_double(f->o, pre, f->name, min, max, out, err);
}

/* A boolean field. */
static int
field_bool(const struct field *f, const char *pre, unsigned int flags, bool *out,
    struct message_error *err)
{
	int r = field_present(f, pre, flags, "boolean", err);

	return r <= 0 ? r : obj_bool(f->o, pre, f->name, out, err);
}

/* A string field that may hold NUL; its length in *len. */
static int
field_text(const struct field *f, const char *pre, unsigned int flags, char **out,
    size_t *len, struct message_error *err)
{
	int r = field_present(f, pre, flags, "string", err);

	return r <= 0 ? r : obj_strn(f->o, pre, f->name, flags | F_NUL, out, len, err);
}

/* A free-form map or array field, kept as msgpack bytes. */
static int
field_raw(const struct field *f, const char *pre, unsigned int flags,
    msgpack_object_type want, struct message_raw *out, struct message_error *err)
{
	int r = field_present(f, pre, flags,
	    want == MSGPACK_OBJECT_MAP ? "map" : "array", err);

	return r <= 0 ? r : obj_raw(f->o, pre, f->name, want, 0, 0, out, err);
}

/* Check a field is a map or an array before its elements are read. */
static int
field_container(const struct field *f, const char *pre, unsigned int flags,
    msgpack_object_type want, struct message_error *err)
{
	const char *what = want == MSGPACK_OBJECT_MAP ? "map" : "array";
	int r = field_present(f, pre, flags, what, err);

	if (r <= 0)
		return r;
	if (f->o->type != want)
		return message_fail(err, "bad_request", "%s%s: expected %s", pre,
		    f->name, what);
	return 1;
}

/* --- freeing ------------------------------------------------------------ */

/* Free a raw value. */
static void
raw_free(struct message_raw *r)
{
	free(r->data);
	r->data = NULL;
	r->len = 0;
}

/* Free an array of n strings. */
static void
strings_free(char **v, size_t n)
{
	size_t i;

	if (v == NULL)
		return;
	for (i = 0; i < n; i++)
		free(v[i]);
	free(v);
}

/* Free an array of chat messages. */
static void
chat_messages_free(struct chat_message *m, size_t n)
{
	size_t i;

	if (m == NULL)
		return;
	for (i = 0; i < n; i++) {
		free(m[i].role);
		free(m[i].content);
		free(m[i].name);
		free(m[i].tool_call_id);
		raw_free(&m[i].tool_calls);
	}
	free(m);
}

/* Free a decoded request. */
void
message_request_free(struct request *rq)
{
	struct chat_request *c;
	struct tokens_request *t;

	if (rq == NULL)
		return;
	switch (rq->op) {
	case OP_CHAT:
		c = &rq->u.chat;
		chat_messages_free(c->messages, c->n_messages);
		free(c->model);
		strings_free(c->stop, c->n_stop);
		free(c->tag);
		raw_free(&c->extra);
		break;
	case OP_TOKENS:
		t = &rq->u.tokens;
		free(t->text);
		chat_messages_free(t->messages, t->n_messages);
		free(t->encoding);
		free(t->model);
		break;
	case OP_STATS:
		free(rq->u.stats.by);
		break;
	case OP_LOGS:
		free(rq->u.logs.user_name);
		free(rq->u.logs.tag);
		free(rq->u.logs.model);
		free(rq->u.logs.status);
		break;
	default:
		break;
	}
	free(rq);
}

/* Free the entries of a counters map. */
static void
counters_map_free(struct counters_map *m)
{
	size_t i;

	if (m->entries == NULL)
		return;
	for (i = 0; i < m->n; i++)
		free(m->entries[i].key);
	free(m->entries);
}

/* Free budgets and their strings. */
static void
budgets_free(struct budget_status *b, size_t n)
{
	size_t i;

	if (b == NULL)
		return;
	for (i = 0; i < n; i++) {
		free(b[i].scope);
		free(b[i].unit);
		free(b[i].period);
	}
	free(b);
}

/* Free what a logs result owns. */
static void
logs_result_free(struct logs_result *l)
{
	size_t i;

	if (l->rows == NULL)
		return;
	for (i = 0; i < l->n; i++) {
		free(l->rows[i].tag);
		free(l->rows[i].model);
		free(l->rows[i].upstream);
		free(l->rows[i].status);
		free(l->rows[i].error);
		free(l->rows[i].node);
		free(l->rows[i].user);
	}
	free(l->rows);
}

/* Free what a top result owns. */
static void
top_result_free(struct top_result *t)
{
	size_t i;

	if (t->chats != NULL) {
		for (i = 0; i < t->n_chats; i++) {
			free(t->chats[i].model);
			free(t->chats[i].upstream);
			free(t->chats[i].tag);
			free(t->chats[i].state);
			free(t->chats[i].user);
		}
		free(t->chats);
	}
	if (t->models != NULL) {
		for (i = 0; i < t->n_models; i++)
			free(t->models[i].model);
		free(t->models);
	}
	if (t->upstreams != NULL) {
		for (i = 0; i < t->n_upstreams; i++)
			free(t->upstreams[i].name);
		free(t->upstreams);
	}
	budgets_free(t->budgets, t->n_budgets);
}

/* Free what a result owns. */
static void
result_free(struct result_reply *r)
{
	struct stats_result *s;
	struct models_result *m;
	size_t i;

	switch (r->op) {
	case OP_PING:
		free(r->u.ping.version);
		break;
	case OP_TOKENS:
		free(r->u.tokens.encoding);
		free(r->u.tokens.ids);
		break;
	case OP_STATS:
		s = &r->u.stats;
		counters_map_free(&s->by_model);
		counters_map_free(&s->by_user);
		counters_map_free(&s->by_tag);
		counters_map_free(&s->by_day);
		counters_map_free(&s->by_node);
		budgets_free(s->budgets, s->n_budgets);
		break;
	case OP_MODELS:
		m = &r->u.models;
		if (m->upstreams != NULL) {
			for (i = 0; i < m->n; i++) {
				free(m->upstreams[i].name);
				free(m->upstreams[i].base_url);
				free(m->upstreams[i].model);
				strings_free(m->upstreams[i].models, m->upstreams[i].n_models);
			}
			free(m->upstreams);
		}
		break;
	case OP_LOGS:
		logs_result_free(&r->u.logs);
		break;
	case OP_TOP:
		top_result_free(&r->u.top);
		break;
	default:
		break;
	}
}

/* Free a decoded reply. */
void
message_reply_free(struct reply *rp)
{
	if (rp == NULL)
		return;
	switch (rp->type) {
	case REPLY_DELTA:
		free(rp->u.delta.content);
		free(rp->u.delta.reasoning);
		raw_free(&rp->u.delta.tool_calls);
		break;
	case REPLY_DONE:
		free(rp->u.done.finish_reason);
		free(rp->u.done.model);
		free(rp->u.done.upstream);
		free(rp->u.done.content);
		free(rp->u.done.reasoning);
		raw_free(&rp->u.done.tool_calls);
		break;
	case REPLY_RESULT:
		result_free(&rp->u.result);
		break;
	case REPLY_ERROR:
		free(rp->u.error.code);
		free(rp->u.error.message);
		raw_free(&rp->u.error.detail);
		break;
	case REPLY_STATUS:
		free(rp->u.status.state);
		free(rp->u.status.reason);
		free(rp->u.status.message);
		break;
	}
	free(rp);
}

/* --- defaults ----------------------------------------------------------- */

/* Zero a request and set the defaults of its op. */
void
message_request_init(struct request *rq, enum message_op op)
{
	memset(rq, 0, sizeof *rq);
	rq->op = op;
	switch (op) {
	case OP_CHAT:
		rq->u.chat.stream = true;
		rq->u.chat.max_tokens = -1;
		rq->u.chat.temperature = NAN;
		rq->u.chat.top_p = NAN;
		break;
	case OP_STATS:
		rq->u.stats.since = -1;
		break;
	case OP_LOGS:
		rq->u.logs.since = -1;
		rq->u.logs.until = -1;
		rq->u.logs.user = -1;
		rq->u.logs.limit = -1;
		break;
	default:
		break;
	}
}

/* Zero a reply and set the defaults of its type (and op, for a result). */
void
message_reply_init(struct reply *rp, enum reply_type type, enum message_op op)
{
	memset(rp, 0, sizeof *rp);
	rp->type = type;
	switch (type) {
	case REPLY_DONE:
		rp->u.done.ttft_ms = -1;
		rp->u.done.latency_ms = -1;
		rp->u.done.max_tokens = -1;
		rp->u.done.max_tokens_asked = -1;
		break;
	case REPLY_ERROR:
		rp->u.error.retry_after = NAN;
		rp->u.error.status = -1;
		break;
	case REPLY_STATUS:
		rp->u.status.wait_s = NAN;
		rp->u.status.attempt = -1;
		rp->u.status.of = -1;
		break;
	case REPLY_RESULT:
		rp->u.result.op = op;
		if (op == OP_STATS) {
			rp->u.result.u.stats.max_budget = NAN;
			rp->u.result.u.stats.budget_left = NAN;
		}
		break;
	default:
		break;
	}
}

/* --- request decoding --------------------------------------------------- */

/* Decode one chat message map; pre is its path ("messages[2]."). */
static int
decode_chat_message(const msgpack_object *o, const char *pre,
    struct chat_message *m, struct message_error *err)
{
	enum { ROLE, CONTENT, NAME, TOOL_CALL_ID, TOOL_CALLS, NF };
	struct field f[NF] = {
		{ "role", NULL, 0 }, { "content", NULL, 0 }, { "name", NULL, 0 },
		{ "tool_call_id", NULL, 0 }, { "tool_calls", NULL, 0 }
	};

	if (message_fields(o, f, NF, pre, err) != 0 ||
	    field_str(&f[ROLE], pre, F_REQ | F_NONEMPTY, &m->role, err) != 0 ||
	    field_text(&f[CONTENT], pre, 0, &m->content, &m->content_len, err) != 0 ||
	    field_str(&f[NAME], pre, 0, &m->name, err) != 0 ||
	    field_str(&f[TOOL_CALL_ID], pre, 0, &m->tool_call_id, err) != 0 ||
	    field_raw(&f[TOOL_CALLS], pre, 0, MSGPACK_OBJECT_ARRAY, &m->tool_calls, err) != 0)
		return -1;
	return 0;
}

/* Decode `messages`: a non-empty array of message maps. */
static int
decode_messages(const struct field *f, unsigned int flags,
    struct chat_message **out, size_t *n, struct message_error *err)
{
	const msgpack_object *a;
	char pre[48];
	uint32_t i;
	int r;

	if ((r = field_container(f, "", flags, MSGPACK_OBJECT_ARRAY, err)) <= 0)
		return r;
	a = f->o;
	if (a->via.array.size == 0)
		return message_fail(err, "bad_request", "messages: must not be empty");
	if ((*out = calloc(a->via.array.size, sizeof **out)) == NULL)
		return message_fail(err, "internal", "out of memory");
	*n = a->via.array.size;
	for (i = 0; i < a->via.array.size; i++) {
		snprintf(pre, sizeof pre, "messages[%u].", i);
		if (a->via.array.ptr[i].type != MSGPACK_OBJECT_MAP)
			return message_fail(err, "bad_request", "messages[%u]: expected map", i);
		if (decode_chat_message(&a->via.array.ptr[i], pre, &(*out)[i], err) != 0)
			return -1;
	}
	return 0;
}

/* Decode the fields of a chat request. */
static int
decode_chat(const msgpack_object *root, struct chat_request *c,
    struct message_error *err)
{
	enum { MESSAGES, MODEL, STREAM, MAX_TOKENS, TEMPERATURE, TOP_P, STOP, SEED,
	    TAG, EXTRA, STATUS, NF };
	struct field f[NF] = {
		{ "messages", NULL, 0 }, { "model", NULL, 0 }, { "stream", NULL, 0 },
		{ "max_tokens", NULL, 0 }, { "temperature", NULL, 0 },
		{ "top_p", NULL, 0 }, { "stop", NULL, 0 }, { "seed", NULL, 0 },
		{ "tag", NULL, 0 }, { "extra", NULL, 0 }, { "status", NULL, 0 }
	};
	const msgpack_object *s;

	if (message_fields(root, f, NF, "", err) != 0 ||
	    decode_messages(&f[MESSAGES], F_REQ, &c->messages, &c->n_messages, err) != 0 ||
	    field_str(&f[MODEL], "", F_NONEMPTY, &c->model, err) != 0 ||
	    field_bool(&f[STREAM], "", 0, &c->stream, err) != 0 ||
	    field_int(&f[MAX_TOKENS], "", 0, 1, &c->max_tokens, err) != 0 ||
	    field_double(&f[TEMPERATURE], "", 0, 0, HUGE_VAL, &c->temperature, err) != 0 ||
	    field_double(&f[TOP_P], "", 0, 0, 1, &c->top_p, err) != 0 ||
	    field_int(&f[SEED], "", 0, INT64_MIN, &c->seed, err) != 0 ||
	    field_str(&f[TAG], "", 0, &c->tag, err) != 0 ||
	    field_bool(&f[STATUS], "", 0, &c->status, err) != 0)
		return -1;
	if (f[EXTRA].o != NULL && obj_raw(f[EXTRA].o, "", "extra", MSGPACK_OBJECT_MAP,
	    MESSAGE_MAX_EXTRA_OBJECTS, MESSAGE_MAX_EXTRA, &c->extra, err) != 0)
		return -1;
	if (c->max_tokens > MESSAGE_MAX_TOKENS)
		return message_fail(err, "bad_request", "max_tokens: must be <= %d",
		    MESSAGE_MAX_TOKENS);
	c->has_seed = f[SEED].o != NULL;
	if ((s = f[STOP].o) == NULL)
		return 0;
	if (s->type == MSGPACK_OBJECT_STR) {
		if ((c->stop = calloc(1, sizeof *c->stop)) == NULL)
			return message_fail(err, "internal", "out of memory");
		c->n_stop = 1;
		return obj_str(s, "", "stop", 0, &c->stop[0], err);
	}
	if (s->type != MSGPACK_OBJECT_ARRAY)
		return message_fail(err, "bad_request",
		    "stop: expected string or array of strings");
	if (obj_str_array(s, "", "stop", &c->stop, &c->n_stop, err) != 0)
		return -1;
	if (c->n_stop == 0) {
		free(c->stop);
		c->stop = NULL;
	}
	return 0;
}

/* Decode the fields of a tokens request. */
static int
decode_tokens(const msgpack_object *root, struct tokens_request *t,
    struct message_error *err)
{
	enum { TEXT, MESSAGES, ENCODING, MODEL, IDS, NF };
	struct field f[NF] = {
		{ "text", NULL, 0 }, { "messages", NULL, 0 }, { "encoding", NULL, 0 },
		{ "model", NULL, 0 }, { "ids", NULL, 0 }
	};

	if (message_fields(root, f, NF, "", err) != 0 ||
	    field_text(&f[TEXT], "", 0, &t->text, &t->text_len, err) != 0 ||
	    decode_messages(&f[MESSAGES], 0, &t->messages, &t->n_messages, err) != 0 ||
	    field_str(&f[ENCODING], "", F_NONEMPTY, &t->encoding, err) != 0 ||
	    field_str(&f[MODEL], "", F_NONEMPTY, &t->model, err) != 0 ||
	    field_bool(&f[IDS], "", 0, &t->ids, err) != 0)
		return -1;
	if ((t->text == NULL) == (t->messages == NULL))
		return message_fail(err, "bad_request",
		    "text, messages: exactly one of them is required");
	return 0;
}

/* Decode the fields of a stats request. */
static int
decode_stats(const msgpack_object *root, struct stats_request *s,
    struct message_error *err)
{
	enum { BY, SINCE, FLEET, NF };
	struct field f[NF] = { { "by", NULL, 0 }, { "since", NULL, 0 }, { "fleet", NULL, 0 } };

	if (message_fields(root, f, NF, "", err) != 0 ||
	    field_str(&f[BY], "", 0, &s->by, err) != 0 ||
	    field_int(&f[SINCE], "", 0, 0, &s->since, err) != 0 ||
	    field_bool(&f[FLEET], "", 0, &s->fleet, err) != 0)
		return -1;
	if (s->by != NULL && strcmp(s->by, "model") != 0 &&
	    strcmp(s->by, "user") != 0 && strcmp(s->by, "tag") != 0 &&
	    strcmp(s->by, "day") != 0)
		return message_fail(err, "bad_request",
		    "by: expected one of model, user, tag, day");
	return 0;
}

/* Decode the fields of a logs request. */
static int
decode_logs(const msgpack_object *root, struct logs_request *l,
    struct message_error *err)
{
	enum { SINCE, UNTIL, USER, TAG, MODEL, STATUS, LIMIT, FLEET, NF };
	struct field f[NF] = {
		{ "since", NULL, 0 }, { "until", NULL, 0 }, { "user", NULL, 0 },
		{ "tag", NULL, 0 }, { "model", NULL, 0 }, { "status", NULL, 0 },
		{ "limit", NULL, 0 }, { "fleet", NULL, 0 }
	};
	uint64_t u;

	if (message_fields(root, f, NF, "", err) != 0 ||
	    field_int(&f[SINCE], "", 0, 0, &l->since, err) != 0 ||
	    field_int(&f[UNTIL], "", 0, 0, &l->until, err) != 0 ||
	    field_str(&f[TAG], "", 0, &l->tag, err) != 0 ||
	    field_str(&f[MODEL], "", F_NONEMPTY, &l->model, err) != 0 ||
	    field_str(&f[STATUS], "", 0, &l->status, err) != 0 ||
	    field_int(&f[LIMIT], "", 0, 1, &l->limit, err) != 0 ||
	    field_bool(&f[FLEET], "", 0, &l->fleet, err) != 0)
		return -1;
	if (f[USER].o != NULL && f[USER].o->type == MSGPACK_OBJECT_STR) {
		if (field_str(&f[USER], "", F_NONEMPTY, &l->user_name, err) != 0)
			return -1;
	} else if (f[USER].o != NULL) {
		if (field_uint(&f[USER], "", 0, 0, UINT32_MAX, &u, err) != 0)
			return -1;
		l->user = (int64_t)u;
	}
	if (l->limit > LOGS_LIMIT_MAX)
		return message_fail(err, "bad_request", "limit: at most %d rows",
		    LOGS_LIMIT_MAX);
	if (l->status != NULL && strcmp(l->status, "done") != 0 &&
	    strcmp(l->status, "error") != 0 && strcmp(l->status, "cancelled") != 0)
		return message_fail(err, "bad_request",
		    "status: expected one of done, error, cancelled");
	return 0;
}

/* Decode the fields of a cancel request. */
static int
decode_cancel(const msgpack_object *root, uint64_t *target,
    struct message_error *err)
{
	struct field f[1] = { { "target", NULL, 0 } };

	if (message_fields(root, f, 1, "", err) != 0 ||
	    field_uint(&f[0], "", F_REQ, 1, UINT64_MAX, target, err) != 0)
		return -1;
	return 0;
}

/* The request's id if it can be read at all, for the error reply; else 0. */
static uint64_t
message_peek_id(const msgpack_object *root)
{
	const msgpack_object_kv *kv;
	uint32_t i;

	for (i = 0; i < root->via.map.size; i++) {
		kv = &root->via.map.ptr[i];
		if (kv->key.type == MSGPACK_OBJECT_STR && kv->key.via.str.size == 2 &&
		    memcmp(kv->key.via.str.ptr, "id", 2) == 0)
			return kv->val.type == MSGPACK_OBJECT_POSITIVE_INTEGER ?
			    kv->val.via.u64 : 0;
	}
	return 0;
}

/* Decode the header (v, id, op) and the fields of one request. */
static int
decode_request(const msgpack_object *root, struct request *rq,
    struct message_error *err)
{
	enum { V, ID, OP, NF };
	struct field f[NF] = { { "v", NULL, 0 }, { "id", NULL, 0 }, { "op", NULL, 0 } };
	const msgpack_object *o;
	enum message_op op;
	uint64_t id;
	char q[48];

	err->id = message_peek_id(root);
	if (message_fields(root, f, NF, "", err) != 0)
		return -1;

	if ((o = f[V].o) == NULL)
		return message_fail(err, "bad_request", f[V].seen ?
		    "v: expected integer" : "v: missing");
	if (o->type == MSGPACK_OBJECT_NEGATIVE_INTEGER)
		return message_fail(err, "unsupported_version",
		    "protocol version %lld is not supported (this side speaks %d)",
		    (long long)o->via.i64, PROTOCOL_VERSION);
	if (o->type != MSGPACK_OBJECT_POSITIVE_INTEGER)
		return message_fail(err, "bad_request", "v: expected integer");
	if (o->via.u64 != PROTOCOL_VERSION)
		return message_fail(err, "unsupported_version",
		    "protocol version %llu is not supported (this side speaks %d)",
		    (unsigned long long)o->via.u64, PROTOCOL_VERSION);

	if (field_uint(&f[ID], "", F_REQ, 1, UINT64_MAX, &id, err) != 0)
		return -1;

	if (field_present(&f[OP], "", F_REQ, "string", err) < 0)
		return -1;
	o = f[OP].o;
	if (o->type != MSGPACK_OBJECT_STR)
		return message_fail(err, "bad_request", "op: expected string");
	if (message_op_parse(o->via.str.ptr, o->via.str.size, &op) != 0) {
		message_quote(q, sizeof q, o->via.str.ptr, o->via.str.size);
		return message_fail(err, "unknown_op", "op: unknown op \"%s\"", q);
	}
	message_request_init(rq, op);
	rq->id = id;

	switch (op) {
	case OP_CHAT:
		return decode_chat(root, &rq->u.chat, err);
	case OP_TOKENS:
		return decode_tokens(root, &rq->u.tokens, err);
	case OP_STATS:
		return decode_stats(root, &rq->u.stats, err);
	case OP_CANCEL:
		return decode_cancel(root, &rq->u.cancel_target, err);
	case OP_LOGS:
		return decode_logs(root, &rq->u.logs, err);
	default:
		return 0;
	}
}

/* Decode one frame body as a request. */
int
message_request_decode(const uint8_t *body, size_t len, struct request **out,
    struct message_error *err)
{
	msgpack_zone zone;
	msgpack_object obj;
	struct request *rq;
	int r = -1;

	err->code = NULL;
	err->id = 0;
	err->unknown_type = false;
	err->message[0] = '\0';
	*out = NULL;
	/*
	 * The zone's first chunk is under 1 KiB, which malloc's thread cache
	 * serves: msgpack-c's 8 KiB default cost a large allocation per frame,
	 * and each one consolidated malloc's fast bins. A bigger request
	 * grows the zone. The decoded request holds copies.
	 */
	if (!msgpack_zone_init(&zone, MESSAGE_ZONE_CHUNK))
		return message_fail(err, "internal", "out of memory");
	if (message_unpack(body, len, MESSAGE_MAX_OBJECTS, &zone, &obj, err) != 0)
		;
	else if ((rq = calloc(1, sizeof *rq)) == NULL)
		message_fail(err, "internal", "out of memory");
	else if (decode_request(&obj, rq, err) != 0)
		message_request_free(rq);
	else {
		*out = rq;
		r = 0;
	}
	msgpack_zone_destroy(&zone);
	return r;
}

/* --- reply decoding ----------------------------------------------------- */

/* Decode the fields of a delta. */
static int
decode_delta(const msgpack_object *root, struct delta_reply *d,
    struct message_error *err)
{
	enum { CONTENT, REASONING, TOOL_CALLS, NF };
	struct field f[NF] = {
		{ "content", NULL, 0 }, { "reasoning", NULL, 0 }, { "tool_calls", NULL, 0 }
	};

	if (message_fields(root, f, NF, "", err) != 0 ||
	    field_text(&f[CONTENT], "", 0, &d->content, &d->content_len, err) != 0 ||
	    field_text(&f[REASONING], "", 0, &d->reasoning, &d->reasoning_len, err) != 0 ||
	    field_raw(&f[TOOL_CALLS], "", 0, MSGPACK_OBJECT_ARRAY, &d->tool_calls, err) != 0)
		return -1;
	return 0;
}

/* Decode a usage map. */
static int
decode_usage(const struct field *uf, struct usage *u, struct message_error *err)
{
	enum { PROMPT, COMPLETION, TOTAL, ESTIMATED, NF };
	struct field f[NF] = {
		{ "prompt_tokens", NULL, 0 }, { "completion_tokens", NULL, 0 },
		{ "total_tokens", NULL, 0 }, { "estimated", NULL, 0 }
	};

	if (field_container(uf, "", F_REQ, MSGPACK_OBJECT_MAP, err) < 0)
		return -1;
	if (message_fields(uf->o, f, NF, "usage.", err) != 0 ||
	    field_int(&f[PROMPT], "usage.", F_REQ, 0, &u->prompt_tokens, err) != 0 ||
	    field_int(&f[COMPLETION], "usage.", F_REQ, 0, &u->completion_tokens, err) != 0 ||
	    field_int(&f[TOTAL], "usage.", F_REQ, 0, &u->total_tokens, err) != 0 ||
	    field_bool(&f[ESTIMATED], "usage.", 0, &u->estimated, err) != 0)
		return -1;
	return 0;
}

/* Decode the fields of a done reply. */
static int
decode_done(const msgpack_object *root, struct done_reply *d,
    struct message_error *err)
{
	enum { FINISH, USAGE, COST, MODEL, UPSTREAM, TTFT, LATENCY, CONTENT,
	    REASONING, TOOL_CALLS, DURABLE, MAX_TOKENS, SHRUNK, ASKED, CUT, NF };
	struct field f[NF] = {
		{ "finish_reason", NULL, 0 }, { "usage", NULL, 0 }, { "cost", NULL, 0 },
		{ "model", NULL, 0 }, { "upstream", NULL, 0 }, { "ttft_ms", NULL, 0 },
		{ "latency_ms", NULL, 0 }, { "content", NULL, 0 },
		{ "reasoning", NULL, 0 }, { "tool_calls", NULL, 0 }, { "durable", NULL, 0 },
		{ "max_tokens", NULL, 0 }, { "budget_shrunk", NULL, 0 },
		{ "max_tokens_asked", NULL, 0 }, { "cut", NULL, 0 }
	};
	bool durable = true;

	d->max_tokens = -1;
	d->max_tokens_asked = -1;
	if (message_fields(root, f, NF, "", err) != 0 ||
	    field_str(&f[FINISH], "", 0, &d->finish_reason, err) != 0 ||
	    decode_usage(&f[USAGE], &d->usage, err) != 0 ||
	    field_double(&f[COST], "", F_REQ, 0, HUGE_VAL, &d->cost, err) != 0 ||
	    field_str(&f[MODEL], "", 0, &d->model, err) != 0 ||
	    field_str(&f[UPSTREAM], "", 0, &d->upstream, err) != 0 ||
	    field_int(&f[TTFT], "", 0, 0, &d->ttft_ms, err) != 0 ||
	    field_int(&f[LATENCY], "", 0, 0, &d->latency_ms, err) != 0 ||
	    field_text(&f[CONTENT], "", 0, &d->content, &d->content_len, err) != 0 ||
	    field_text(&f[REASONING], "", 0, &d->reasoning, &d->reasoning_len, err) != 0 ||
	    field_raw(&f[TOOL_CALLS], "", 0, MSGPACK_OBJECT_ARRAY, &d->tool_calls, err) != 0 ||
	    field_bool(&f[DURABLE], "", 0, &durable, err) != 0 ||
	    field_int(&f[MAX_TOKENS], "", 0, 0, &d->max_tokens, err) != 0 ||
	    field_bool(&f[SHRUNK], "", 0, &d->budget_shrunk, err) != 0 ||
	    field_int(&f[ASKED], "", 0, 0, &d->max_tokens_asked, err) != 0 ||
	    field_bool(&f[CUT], "", 0, &d->cut, err) != 0)
		return -1;
	d->not_durable = !durable;
	return 0;
}

/* Decode the fields of an error reply. */
static int
decode_error(const msgpack_object *root, struct error_reply *e,
    struct message_error *err)
{
	enum { CODE, MESSAGE, RETRY_AFTER, STATUS, DETAIL, NF };
	struct field f[NF] = {
		{ "code", NULL, 0 }, { "message", NULL, 0 }, { "retry_after", NULL, 0 },
		{ "status", NULL, 0 }, { "detail", NULL, 0 }
	};

	if (message_fields(root, f, NF, "", err) != 0 ||
	    field_str(&f[CODE], "", F_REQ | F_NONEMPTY, &e->code, err) != 0 ||
	    field_str(&f[MESSAGE], "", F_REQ, &e->message, err) != 0 ||
	    field_double(&f[RETRY_AFTER], "", 0, 0, HUGE_VAL, &e->retry_after, err) != 0 ||
	    field_int(&f[STATUS], "", 0, 0, &e->status, err) != 0 ||
	    field_raw(&f[DETAIL], "", 0, MSGPACK_OBJECT_MAP, &e->detail, err) != 0)
		return -1;
	return 0;
}

/* Decode the fields of a ping result. */
static int
decode_ping_result(const msgpack_object *root, struct ping_result *p,
    struct message_error *err)
{
	enum { VERS, UPTIME, IN_FLIGHT, NF };
	struct field f[NF] = {
		{ "version", NULL, 0 }, { "uptime_s", NULL, 0 }, { "in_flight", NULL, 0 }
	};

	if (message_fields(root, f, NF, "", err) != 0 ||
	    field_str(&f[VERS], "", F_REQ, &p->version, err) != 0 ||
	    field_int(&f[UPTIME], "", F_REQ, 0, &p->uptime_s, err) != 0 ||
	    field_int(&f[IN_FLIGHT], "", F_REQ, 0, &p->in_flight, err) != 0)
		return -1;
	return 0;
}

/* Decode the fields of a tokens result. */
static int
decode_tokens_result(const msgpack_object *root, struct tokens_result *t,
    struct message_error *err)
{
	enum { COUNT, ENCODING, IDS, NF };
	struct field f[NF] = {
		{ "count", NULL, 0 }, { "encoding", NULL, 0 }, { "ids", NULL, 0 }
	};
	const msgpack_object *a;
	char name[32];
	uint64_t v;
	uint32_t i;
	int r;

	if (message_fields(root, f, NF, "", err) != 0 ||
	    field_int(&f[COUNT], "", F_REQ, 0, &t->count, err) != 0 ||
	    field_str(&f[ENCODING], "", F_REQ, &t->encoding, err) != 0)
		return -1;
	if ((r = field_container(&f[IDS], "", 0, MSGPACK_OBJECT_ARRAY, err)) <= 0)
		return r;
	a = f[IDS].o;
	if ((t->ids = calloc(a->via.array.size != 0 ? a->via.array.size : 1,
	    sizeof *t->ids)) == NULL)
		return message_fail(err, "internal", "out of memory");
	t->n_ids = a->via.array.size;
	for (i = 0; i < a->via.array.size; i++) {
		snprintf(name, sizeof name, "ids[%u]", i);
		if (obj_uint(&a->via.array.ptr[i], "", name, 0, UINT32_MAX, &v, err) != 0)
			return -1;
		t->ids[i] = (uint32_t)v;
	}
	return 0;
}

/* Decode one counters map; pre is its path ("by_model[3]."). */
static int
decode_counters(const msgpack_object *o, const char *pre, struct counters *c,
    struct message_error *err)
{
	enum { REQUESTS, ERRORS, PROMPT, COMPLETION, TOTAL, ESTIMATED, COST, NF };
	struct field f[NF] = {
		{ "requests", NULL, 0 }, { "errors", NULL, 0 },
		{ "prompt_tokens", NULL, 0 }, { "completion_tokens", NULL, 0 },
		{ "total_tokens", NULL, 0 }, { "estimated", NULL, 0 }, { "cost", NULL, 0 }
	};

	if (message_fields(o, f, NF, pre, err) != 0 ||
	    field_uint(&f[REQUESTS], pre, F_REQ, 0, UINT64_MAX, &c->requests, err) != 0 ||
	    field_uint(&f[ERRORS], pre, F_REQ, 0, UINT64_MAX, &c->errors, err) != 0 ||
	    field_uint(&f[PROMPT], pre, F_REQ, 0, UINT64_MAX, &c->prompt_tokens, err) != 0 ||
	    field_uint(&f[COMPLETION], pre, F_REQ, 0, UINT64_MAX, &c->completion_tokens,
	    err) != 0 ||
	    field_uint(&f[TOTAL], pre, F_REQ, 0, UINT64_MAX, &c->total_tokens, err) != 0 ||
	    field_uint(&f[ESTIMATED], pre, F_REQ, 0, UINT64_MAX, &c->estimated, err) != 0 ||
	    field_double(&f[COST], pre, F_REQ, 0, HUGE_VAL, &c->cost, err) != 0)
		return -1;
	return 0;
}

/* Decode a map of key -> counters (by_model, by_user, ...). */
static int
decode_counters_map(const struct field *f, struct counters_map *m,
    struct message_error *err)
{
	const msgpack_object *o;
	const msgpack_object_kv *kv;
	char pre[48];
	uint32_t i;
	int r;

	if ((r = field_container(f, "", 0, MSGPACK_OBJECT_MAP, err)) <= 0)
		return r;
	o = f->o;
	if (o->via.map.size == 0)
		return 0;
	if ((m->entries = calloc(o->via.map.size, sizeof *m->entries)) == NULL)
		return message_fail(err, "internal", "out of memory");
	m->n = o->via.map.size;
	for (i = 0; i < o->via.map.size; i++) {
		kv = &o->via.map.ptr[i];
		snprintf(pre, sizeof pre, "%s[%u]", f->name, i);
		if (obj_str(&kv->key, "", pre, 0, &m->entries[i].key, err) != 0)
			return -1;
		if (kv->val.type != MSGPACK_OBJECT_MAP)
			return message_fail(err, "bad_request", "%s: expected map", pre);
		snprintf(pre, sizeof pre, "%s[%u].", f->name, i);
		if (decode_counters(&kv->val, pre, &m->entries[i].c, err) != 0)
			return -1;
	}
	return 0;
}

/* Decode a budgets array (of a stats or top result). */
static int
decode_budgets(const struct field *f, struct budget_status **out, size_t *n_out,
    struct message_error *err)
{
	enum { SCOPE, UNIT, PERIOD, LIMIT, USED, LEFT, NF };
	const msgpack_object *a;
	struct budget_status *b;
	char pre[32];
	uint32_t i;
	int r;

	if ((r = field_container(f, "", 0, MSGPACK_OBJECT_ARRAY, err)) <= 0)
		return r;
	a = f->o;
	if (a->via.array.size == 0)
		return 0;
	if ((*out = calloc(a->via.array.size, sizeof **out)) == NULL)
		return message_fail(err, "internal", "out of memory");
	*n_out = a->via.array.size;
	for (i = 0; i < a->via.array.size; i++) {
		struct field bf[NF] = {
			{ "scope", NULL, 0 }, { "unit", NULL, 0 }, { "period", NULL, 0 },
			{ "limit", NULL, 0 }, { "used", NULL, 0 }, { "left", NULL, 0 }
		};

		b = &(*out)[i];
		if (a->via.array.ptr[i].type != MSGPACK_OBJECT_MAP)
			return message_fail(err, "bad_request", "budgets[%u]: expected map", i);
		snprintf(pre, sizeof pre, "budgets[%u].", i);
		if (message_fields(&a->via.array.ptr[i], bf, NF, pre, err) != 0 ||
		    field_str(&bf[SCOPE], pre, F_REQ, &b->scope, err) != 0 ||
		    field_str(&bf[UNIT], pre, F_REQ, &b->unit, err) != 0 ||
		    field_str(&bf[PERIOD], pre, F_REQ, &b->period, err) != 0 ||
		    field_double(&bf[LIMIT], pre, F_REQ, -HUGE_VAL, HUGE_VAL, &b->limit,
		    err) != 0 ||
		    field_double(&bf[USED], pre, F_REQ, -HUGE_VAL, HUGE_VAL, &b->used,
		    err) != 0 ||
		    field_double(&bf[LEFT], pre, F_REQ, -HUGE_VAL, HUGE_VAL, &b->left,
		    err) != 0)
			return -1;
	}
	return 0;
}

/* Decode the fields of a stats result. */
static int
decode_stats_result(const msgpack_object *root, struct stats_result *s,
    struct message_error *err)
{
	enum { SINCE, TOTAL, BY_MODEL, BY_USER, BY_TAG, BY_DAY, MAX_BUDGET,
	    BUDGET_LEFT, BUDGETS, BY_NODE, NF };
	struct field f[NF] = {
		{ "since", NULL, 0 }, { "total", NULL, 0 }, { "by_model", NULL, 0 },
		{ "by_user", NULL, 0 }, { "by_tag", NULL, 0 }, { "by_day", NULL, 0 },
		{ "max_budget", NULL, 0 }, { "budget_left", NULL, 0 },
		{ "budgets", NULL, 0 }, { "by_node", NULL, 0 }
	};

	s->max_budget = NAN;
	s->budget_left = NAN;
	if (message_fields(root, f, NF, "", err) != 0 ||
	    field_int(&f[SINCE], "", F_REQ, INT64_MIN, &s->since, err) != 0 ||
	    field_container(&f[TOTAL], "", F_REQ, MSGPACK_OBJECT_MAP, err) < 0 ||
	    decode_counters(f[TOTAL].o, "total.", &s->total, err) != 0 ||
	    decode_counters_map(&f[BY_MODEL], &s->by_model, err) != 0 ||
	    decode_counters_map(&f[BY_USER], &s->by_user, err) != 0 ||
	    decode_counters_map(&f[BY_TAG], &s->by_tag, err) != 0 ||
	    decode_counters_map(&f[BY_DAY], &s->by_day, err) != 0 ||
	    decode_counters_map(&f[BY_NODE], &s->by_node, err) != 0 ||
	    field_double(&f[MAX_BUDGET], "", 0, -HUGE_VAL, HUGE_VAL, &s->max_budget,
	    err) != 0 ||
	    field_double(&f[BUDGET_LEFT], "", 0, -HUGE_VAL, HUGE_VAL, &s->budget_left,
	    err) != 0 ||
	    decode_budgets(&f[BUDGETS], &s->budgets, &s->n_budgets, err) != 0)
		return -1;
	return 0;
}

/* Decode one upstream of a models result. */
static int
decode_upstream(const msgpack_object *o, const char *pre, struct upstream_info *u,
    struct message_error *err)
{
	enum { NAME, BASE_URL, MODEL, HEALTHY, IN_FLIGHT, MODELS, NF };
	struct field f[NF] = {
		{ "name", NULL, 0 }, { "base_url", NULL, 0 }, { "model", NULL, 0 },
		{ "healthy", NULL, 0 }, { "in_flight", NULL, 0 }, { "models", NULL, 0 }
	};
	int r;

	if (message_fields(o, f, NF, pre, err) != 0 ||
	    field_str(&f[NAME], pre, F_REQ, &u->name, err) != 0 ||
	    field_str(&f[BASE_URL], pre, F_REQ, &u->base_url, err) != 0 ||
	    field_str(&f[MODEL], pre, 0, &u->model, err) != 0 ||
	    field_bool(&f[HEALTHY], pre, F_REQ, &u->healthy, err) != 0 ||
	    field_int(&f[IN_FLIGHT], pre, F_REQ, 0, &u->in_flight, err) != 0)
		return -1;
	if ((r = field_present(&f[MODELS], pre, 0, "array", err)) <= 0)
		return r;
	if (obj_str_array(f[MODELS].o, pre, "models", &u->models, &u->n_models, err) != 0)
		return -1;
	if (u->n_models == 0) {
		free(u->models);
		u->models = NULL;
	}
	return 0;
}

/* Decode the fields of a models result. */
static int
decode_models_result(const msgpack_object *root, struct models_result *m,
    struct message_error *err)
{
	struct field f[1] = { { "upstreams", NULL, 0 } };
	const msgpack_object *a;
	char pre[32];
	uint32_t i;

	if (message_fields(root, f, 1, "", err) != 0 ||
	    field_container(&f[0], "", F_REQ, MSGPACK_OBJECT_ARRAY, err) < 0)
		return -1;
	a = f[0].o;
	if (a->via.array.size == 0)
		return 0;
	if ((m->upstreams = calloc(a->via.array.size, sizeof *m->upstreams)) == NULL)
		return message_fail(err, "internal", "out of memory");
	m->n = a->via.array.size;
	for (i = 0; i < a->via.array.size; i++) {
		if (a->via.array.ptr[i].type != MSGPACK_OBJECT_MAP)
			return message_fail(err, "bad_request", "upstreams[%u]: expected map", i);
		snprintf(pre, sizeof pre, "upstreams[%u].", i);
		if (decode_upstream(&a->via.array.ptr[i], pre, &m->upstreams[i], err) != 0)
			return -1;
	}
	return 0;
}

/* Decode one row of a logs result. */
static int
decode_log_row(const msgpack_object *o, const char *pre, struct log_row *w,
    struct message_error *err)
{
	enum { TIME, UID, TAG, MODEL, UPSTREAM, STATUS, ERROR, PROMPT, COMPLETION,
	    ESTIMATED, COST, LATENCY, TTFT, NODE, USER, NF };
	struct field f[NF] = {
		{ "time_ms", NULL, 0 }, { "uid", NULL, 0 }, { "tag", NULL, 0 },
		{ "model", NULL, 0 }, { "upstream", NULL, 0 }, { "status", NULL, 0 },
		{ "error", NULL, 0 }, { "prompt_tokens", NULL, 0 },
		{ "completion_tokens", NULL, 0 }, { "estimated", NULL, 0 },
		{ "cost", NULL, 0 }, { "latency_ms", NULL, 0 }, { "ttft_ms", NULL, 0 },
		{ "node", NULL, 0 }, { "user", NULL, 0 }
	};
	uint64_t uid;

	w->ttft_ms = -1;
	if (message_fields(o, f, NF, pre, err) != 0 ||
	    field_int(&f[TIME], pre, F_REQ, 0, &w->time_ms, err) != 0 ||
	    field_uint(&f[UID], pre, F_REQ, 0, UINT32_MAX, &uid, err) != 0 ||
	    field_str(&f[TAG], pre, 0, &w->tag, err) != 0 ||
	    field_str(&f[MODEL], pre, F_REQ, &w->model, err) != 0 ||
	    field_str(&f[UPSTREAM], pre, F_REQ, &w->upstream, err) != 0 ||
	    field_str(&f[STATUS], pre, F_REQ | F_NONEMPTY, &w->status, err) != 0 ||
	    field_str(&f[ERROR], pre, 0, &w->error, err) != 0 ||
	    field_int(&f[PROMPT], pre, F_REQ, 0, &w->prompt_tokens, err) != 0 ||
	    field_int(&f[COMPLETION], pre, F_REQ, 0, &w->completion_tokens, err) != 0 ||
	    field_bool(&f[ESTIMATED], pre, F_REQ, &w->estimated, err) != 0 ||
	    field_double(&f[COST], pre, F_REQ, 0, HUGE_VAL, &w->cost, err) != 0 ||
	    field_int(&f[LATENCY], pre, F_REQ, 0, &w->latency_ms, err) != 0 ||
	    field_int(&f[TTFT], pre, 0, 0, &w->ttft_ms, err) != 0 ||
	    field_str(&f[NODE], pre, F_NONEMPTY, &w->node, err) != 0 ||
	    field_str(&f[USER], pre, 0, &w->user, err) != 0)
		return -1;
	w->uid = (uint32_t)uid;
	return 0;
}

/* Decode the fields of a logs result. */
static int
decode_logs_result(const msgpack_object *root, struct logs_result *l,
    struct message_error *err)
{
	enum { ROWS, TRUNCATED, NF };
	struct field f[NF] = { { "rows", NULL, 0 }, { "truncated", NULL, 0 } };
	const msgpack_object *a;
	char pre[32];
	uint32_t i;

	if (message_fields(root, f, NF, "", err) != 0 ||
	    field_bool(&f[TRUNCATED], "", 0, &l->truncated, err) != 0 ||
	    field_container(&f[ROWS], "", F_REQ, MSGPACK_OBJECT_ARRAY, err) < 0)
		return -1;
	a = f[ROWS].o;
	if (a->via.array.size == 0)
		return 0;
	if ((l->rows = calloc(a->via.array.size, sizeof *l->rows)) == NULL)
		return message_fail(err, "internal", "out of memory");
	l->n = a->via.array.size;
	for (i = 0; i < a->via.array.size; i++) {
		if (a->via.array.ptr[i].type != MSGPACK_OBJECT_MAP)
			return message_fail(err, "bad_request", "rows[%u]: expected map", i);
		snprintf(pre, sizeof pre, "rows[%u].", i);
		if (decode_log_row(&a->via.array.ptr[i], pre, &l->rows[i], err) != 0)
			return -1;
	}
	return 0;
}

/*
 * Check that f holds an array of maps and allocate n elements of size each
 * for it: 1 when there are elements, 0 when absent or empty, -1 on error.
 */
static int
decode_map_array(const struct field *f, size_t size, void **out, size_t *n,
    struct message_error *err)
{
	const msgpack_object *a;
	uint32_t i;
	int r;

	if ((r = field_container(f, "", 0, MSGPACK_OBJECT_ARRAY, err)) <= 0)
		return r;
	a = f->o;
	if (a->via.array.size == 0)
		return 0;
	for (i = 0; i < a->via.array.size; i++) {
		if (a->via.array.ptr[i].type != MSGPACK_OBJECT_MAP)
			return message_fail(err, "bad_request", "%s[%u]: expected map",
			    f->name, i);
	}
	if ((*out = calloc(a->via.array.size, size)) == NULL)
		return message_fail(err, "internal", "out of memory");
	*n = a->via.array.size;
	return 1;
}

/* Decode the fields of a top result. */
static int
decode_top_result(const msgpack_object *root, struct top_result *t,
    struct message_error *err)
{
	enum { UPTIME, INFLIGHT, CHATS, MODELS, UPSTREAMS, BUDGETS, NF };
	struct field f[NF] = {
		{ "uptime_s", NULL, 0 }, { "in_flight", NULL, 0 }, { "chats", NULL, 0 },
		{ "models", NULL, 0 }, { "upstreams", NULL, 0 }, { "budgets", NULL, 0 }
	};
	char pre[40];
	uint64_t u;
	size_t i;
	int r;

	if (message_fields(root, f, NF, "", err) != 0 ||
	    field_int(&f[UPTIME], "", F_REQ, 0, &t->uptime_s, err) != 0 ||
	    field_int(&f[INFLIGHT], "", F_REQ, 0, &t->in_flight, err) != 0 ||
	    decode_budgets(&f[BUDGETS], &t->budgets, &t->n_budgets, err) != 0)
		return -1;
	if ((r = decode_map_array(&f[CHATS], sizeof *t->chats, (void **)&t->chats,
	    &t->n_chats, err)) < 0)
		return -1;
	for (i = 0; r > 0 && i < t->n_chats; i++) {
		enum { ID, UID, MODEL, UPSTREAM, TAG, STATE, AGE, TOKENS, TPS, USER, NC };
		struct field c[NC] = {
			{ "id", NULL, 0 }, { "uid", NULL, 0 }, { "model", NULL, 0 },
			{ "upstream", NULL, 0 }, { "tag", NULL, 0 }, { "state", NULL, 0 },
			{ "age_ms", NULL, 0 }, { "tokens", NULL, 0 },
			{ "tokens_per_s", NULL, 0 }, { "user", NULL, 0 }
		};
		struct top_chat *tc = &t->chats[i];

		snprintf(pre, sizeof pre, "chats[%zu].", i);
		if (message_fields(&f[CHATS].o->via.array.ptr[i], c, NC, pre, err) != 0 ||
		    field_uint(&c[ID], pre, F_REQ, 0, UINT64_MAX, &tc->id, err) != 0 ||
		    field_uint(&c[UID], pre, F_REQ, 0, UINT32_MAX, &u, err) != 0 ||
		    field_str(&c[MODEL], pre, F_REQ, &tc->model, err) != 0 ||
		    field_str(&c[UPSTREAM], pre, F_REQ, &tc->upstream, err) != 0 ||
		    field_str(&c[TAG], pre, 0, &tc->tag, err) != 0 ||
		    field_str(&c[STATE], pre, F_REQ, &tc->state, err) != 0 ||
		    field_int(&c[AGE], pre, F_REQ, 0, &tc->age_ms, err) != 0 ||
		    field_int(&c[TOKENS], pre, F_REQ, 0, &tc->tokens, err) != 0 ||
		    field_double(&c[TPS], pre, F_REQ, 0, HUGE_VAL, &tc->tokens_per_s,
		    err) != 0 ||
		    field_str(&c[USER], pre, 0, &tc->user, err) != 0)
			return -1;
		tc->uid = (uint32_t)u;
	}
	if ((r = decode_map_array(&f[MODELS], sizeof *t->models, (void **)&t->models,
	    &t->n_models, err)) < 0)
		return -1;
	for (i = 0; r > 0 && i < t->n_models; i++) {
		enum { MODEL, IN_FLIGHT, TPS, NC };
		struct field c[NC] = {
			{ "model", NULL, 0 }, { "in_flight", NULL, 0 }, { "tokens_per_s", NULL, 0 }
		};
		struct top_model *tm = &t->models[i];

		snprintf(pre, sizeof pre, "models[%zu].", i);
		if (message_fields(&f[MODELS].o->via.array.ptr[i], c, NC, pre, err) != 0 ||
		    field_str(&c[MODEL], pre, F_REQ, &tm->model, err) != 0 ||
		    field_int(&c[IN_FLIGHT], pre, F_REQ, 0, &tm->in_flight, err) != 0 ||
		    field_double(&c[TPS], pre, F_REQ, 0, HUGE_VAL, &tm->tokens_per_s,
		    err) != 0)
			return -1;
	}
	if ((r = decode_map_array(&f[UPSTREAMS], sizeof *t->upstreams,
	    (void **)&t->upstreams, &t->n_upstreams, err)) < 0)
		return -1;
	for (i = 0; r > 0 && i < t->n_upstreams; i++) {
		enum { NAME, HEALTHY, IN_FLIGHT, QUEUED, NC };
		struct field c[NC] = {
			{ "name", NULL, 0 }, { "healthy", NULL, 0 }, { "in_flight", NULL, 0 },
			{ "queued", NULL, 0 }
		};
		struct top_upstream *tu = &t->upstreams[i];

		snprintf(pre, sizeof pre, "upstreams[%zu].", i);
		if (message_fields(&f[UPSTREAMS].o->via.array.ptr[i], c, NC, pre, err) != 0 ||
		    field_str(&c[NAME], pre, F_REQ, &tu->name, err) != 0 ||
		    field_bool(&c[HEALTHY], pre, F_REQ, &tu->healthy, err) != 0 ||
		    field_int(&c[IN_FLIGHT], pre, F_REQ, 0, &tu->in_flight, err) != 0 ||
		    field_int(&c[QUEUED], pre, F_REQ, 0, &tu->queued, err) != 0)
			return -1;
	}
	return 0;
}

/* Decode the fields of a status reply. */
static int
decode_status(const msgpack_object *root, struct status_reply *st,
    struct message_error *err)
{
	enum { STATE, REASON, MESSAGE, WAIT, ATTEMPT, OF, NF };
	struct field f[NF] = {
		{ "state", NULL, 0 }, { "reason", NULL, 0 }, { "message", NULL, 0 },
		{ "wait_s", NULL, 0 }, { "attempt", NULL, 0 }, { "of", NULL, 0 }
	};

	if (message_fields(root, f, NF, "", err) != 0 ||
	    field_str(&f[STATE], "", F_REQ | F_NONEMPTY, &st->state, err) != 0 ||
	    field_str(&f[REASON], "", F_REQ, &st->reason, err) != 0 ||
	    field_str(&f[MESSAGE], "", F_REQ, &st->message, err) != 0 ||
	    field_double(&f[WAIT], "", 0, 0, HUGE_VAL, &st->wait_s, err) != 0 ||
	    field_int(&f[ATTEMPT], "", 0, 1, &st->attempt, err) != 0 ||
	    field_int(&f[OF], "", 0, 1, &st->of, err) != 0)
		return -1;
	return 0;
}

/* Decode the ok field of a cancel or reset result. */
static int
decode_ok_result(const msgpack_object *root, bool *ok, struct message_error *err)
{
	struct field f[1] = { { "ok", NULL, 0 } };

	if (message_fields(root, f, 1, "", err) != 0 ||
	    field_bool(&f[0], "", F_REQ, ok, err) != 0)
		return -1;
	return 0;
}

/* Decode a result; its shape is that of the op it answers. */
static int
decode_result(const msgpack_object *root, enum message_op op,
    struct result_reply *r, struct message_error *err)
{
	switch (op) {
	case OP_PING:
		return decode_ping_result(root, &r->u.ping, err);
	case OP_TOKENS:
		return decode_tokens_result(root, &r->u.tokens, err);
	case OP_STATS:
		return decode_stats_result(root, &r->u.stats, err);
	case OP_MODELS:
		return decode_models_result(root, &r->u.models, err);
	case OP_CANCEL:
	case OP_RESET:
		return decode_ok_result(root, &r->u.ok, err);
	case OP_LOGS:
		return decode_logs_result(root, &r->u.logs, err);
	case OP_TOP:
		return decode_top_result(root, &r->u.top, err);
	default:
		return message_fail(err, "bad_request", op == OP_CHAT ?
		    "type: a chat request is not answered by a result" :
		    "type: a result for a request of unknown op");
	}
}

/* Decode the header (id, type) and the fields of one reply. */
static int
decode_reply(const msgpack_object *root, enum message_op op, struct reply *rp,
    struct message_error *err)
{
	enum { ID, TYPE, NF };
	struct field f[NF] = { { "id", NULL, 0 }, { "type", NULL, 0 } };
	const msgpack_object *o;
	uint64_t id;
	char q[48];
	size_t i;

	err->id = message_peek_id(root);
	if (message_fields(root, f, NF, "", err) != 0)
		return -1;
	if (field_uint(&f[ID], "", F_REQ, 0, UINT64_MAX, &id, err) != 0)
		return -1;
	err->id = id;
	if (field_present(&f[TYPE], "", F_REQ, "string", err) < 0)
		return -1;
	o = f[TYPE].o;
	if (o->type != MSGPACK_OBJECT_STR)
		return message_fail(err, "bad_request", "type: expected string");
	for (i = 1; i < sizeof message_reply_names / sizeof message_reply_names[0]; i++) {
		if (strlen(message_reply_names[i]) == o->via.str.size &&
		    memcmp(message_reply_names[i], o->via.str.ptr, o->via.str.size) == 0)
			break;
	}
	if (i == sizeof message_reply_names / sizeof message_reply_names[0]) {
		message_quote(q, sizeof q, o->via.str.ptr, o->via.str.size);
		err->unknown_type = true;
		return message_fail(err, "bad_request", "type: unknown reply type \"%s\"", q);
	}
	message_reply_init(rp, (enum reply_type)i, op);
	rp->id = id;

	switch (rp->type) {
	case REPLY_DELTA:
		return decode_delta(root, &rp->u.delta, err);
	case REPLY_DONE:
		return decode_done(root, &rp->u.done, err);
	case REPLY_RESULT:
		return decode_result(root, op, &rp->u.result, err);
	case REPLY_ERROR:
		return decode_error(root, &rp->u.error, err);
	case REPLY_STATUS:
		return decode_status(root, &rp->u.status, err);
	}
	return 0;
}

/* Decode one frame body as a reply to a request of the given op. */
int
message_reply_decode(const uint8_t *body, size_t len, enum message_op op,
    struct reply **out, struct message_error *err)
{
	msgpack_zone zone;
	msgpack_object obj;
	struct reply *rp;
	int r = -1;

	err->code = NULL;
	err->id = 0;
	err->unknown_type = false;
	err->message[0] = '\0';
	*out = NULL;
	if (!msgpack_zone_init(&zone, MESSAGE_ZONE_CHUNK))
		return message_fail(err, "internal", "out of memory");
	if (message_unpack(body, len, 0, &zone, &obj, err) != 0)
		;
	else if ((rp = calloc(1, sizeof *rp)) == NULL)
		message_fail(err, "internal", "out of memory");
	else if (decode_reply(&obj, op, rp, err) != 0)
		message_reply_free(rp);
	else {
		*out = rp;
		r = 0;
	}
	msgpack_zone_destroy(&zone);
	return r;
}

/* --- encoding ----------------------------------------------------------- */

/* Pack a string of len bytes; NULL or invalid UTF-8 fails the encoding. */
static void
enc_strn(struct enc *e, const char *s, size_t len)
{
	if (s == NULL || len > UINT32_MAX || !message_utf8_valid(s, len)) {
		e->failed = 1;
		return;
	}
	if (pack_str(&e->pk, s, len) != 0)
		e->failed = 1;
}

/* Pack a NUL-terminated string. */
static void
enc_str(struct enc *e, const char *s)
{
	if (s == NULL) {
		e->failed = 1;
		return;
	}
	enc_strn(e, s, strlen(s));
}

/* Pack a map key (a constant ASCII name). */
static void
enc_key(struct enc *e, const char *k)
{
	if (pack_str(&e->pk, k, strlen(k)) != 0)
		e->failed = 1;
}

/* Pack a map header of n entries. */
static void
enc_map(struct enc *e, size_t n)
{
	if (n > UINT32_MAX || msgpack_pack_map(&e->pk, n) != 0)
		e->failed = 1;
}

/* Pack an array header of n elements. */
static void
enc_array(struct enc *e, size_t n)
{
	if (n > UINT32_MAX || msgpack_pack_array(&e->pk, n) != 0)
		e->failed = 1;
}

/* Pack key and string value. */
static void
enc_kstr(struct enc *e, const char *k, const char *v)
{
	enc_key(e, k);
	enc_str(e, v);
}

/* Pack key and a text that may hold NUL: len bytes, or strlen(v) when len is 0. */
static void
enc_ktext(struct enc *e, const char *k, const char *v, size_t len)
{
	enc_key(e, k);
	if (v == NULL) {
		e->failed = 1;
		return;
	}
	enc_strn(e, v, message_text_len(v, len));
}

/* Pack key and signed integer value. */
static void
enc_kint(struct enc *e, const char *k, int64_t v)
{
	enc_key(e, k);
	if (msgpack_pack_int64(&e->pk, v) != 0)
		e->failed = 1;
}

/* Pack key and unsigned integer value. */
static void
enc_kuint(struct enc *e, const char *k, uint64_t v)
{
	enc_key(e, k);
	if (msgpack_pack_uint64(&e->pk, v) != 0)
		e->failed = 1;
}

/* Pack a finite double; NAN packs as nil where nil_ok, else fails. */
static void
enc_kdouble(struct enc *e, const char *k, double v, int nil_ok)
{
	enc_key(e, k);
	if (nil_ok && isnan(v)) {
		if (msgpack_pack_nil(&e->pk) != 0)
			e->failed = 1;
		return;
	}
	if (!isfinite(v) || msgpack_pack_double(&e->pk, v) != 0)
		e->failed = 1;
}

/* Pack key and boolean value. */
static void
enc_kbool(struct enc *e, const char *k, bool v)
{
	enc_key(e, k);
	if ((v ? msgpack_pack_true(&e->pk) : msgpack_pack_false(&e->pk)) != 0)
		e->failed = 1;
}

/*
 * Copy a raw value, after checking it is one whole msgpack map or array that
 * fits the nesting left under `depth` enclosing containers.
 */
static void
enc_kraw(struct enc *e, const char *k, const struct message_raw *r, int is_map,
    unsigned int depth)
{
	char cause[128];
	size_t used;
	uint8_t b;

	enc_key(e, k);
	if (r->data == NULL || r->len == 0) {
		e->failed = 1;
		return;
	}
	b = r->data[0];
	if (is_map ? !((b >= 0x80 && b <= 0x8f) || b == 0xde || b == 0xdf) :
	    !((b >= 0x90 && b <= 0x9f) || b == 0xdc || b == 0xdd)) {
		e->failed = 1;
		return;
	}
	if (scan_object(r->data, r->len, MESSAGE_MAX_DEPTH - depth, 0, &used, NULL,
	    cause, sizeof cause) != 0 || used != r->len) {
		e->failed = 1;
		return;
	}
	if (e->pk.callback(e->pk.data, (const char *)r->data, r->len) != 0)
		e->failed = 1;
}

/* Reserve the frame header in sb and point the packer at it. */
static int
enc_begin(struct enc *e, msgpack_sbuffer *sb, size_t *start)
{
	static const char zero[FRAME_HEADER_LEN];

	*start = sb->size;
	e->failed = 0;
	msgpack_packer_init(&e->pk, sb, msgpack_sbuffer_write);
	if (msgpack_sbuffer_write(sb, zero, sizeof zero) != 0)
		return -1;
	return 0;
}

/* Patch the frame header, or roll sb back if anything failed. */
static int
enc_end(struct enc *e, msgpack_sbuffer *sb, size_t start)
{
	size_t len = sb->size - start - FRAME_HEADER_LEN;

	if (e->failed || len == 0 || len > UINT32_MAX) {
		sb->size = start;
		return -1;
	}
	frame_header_write((uint8_t *)sb->data + start, (uint32_t)len);
	return 0;
}

/* Pack chat messages; depth is the number of enclosing containers of each map. */
static void
enc_messages(struct enc *e, const struct chat_message *m, size_t n)
{
	const struct chat_message *cm;
	size_t i;

	enc_key(e, "messages");
	if (m == NULL && n > 0) {
		e->failed = 1;
		return;
	}
	enc_array(e, n);
	for (i = 0; i < n && !e->failed; i++) {
		cm = &m[i];
		enc_map(e, 1 + (cm->content != NULL) + (cm->name != NULL) +
		    (cm->tool_call_id != NULL) + (cm->tool_calls.data != NULL));
		enc_kstr(e, "role", cm->role);
		if (cm->content != NULL) {
			enc_key(e, "content");
			enc_strn(e, cm->content, message_text_len(cm->content,
			    cm->content_len));
		}
		if (cm->name != NULL)
			enc_kstr(e, "name", cm->name);
		if (cm->tool_call_id != NULL)
			enc_kstr(e, "tool_call_id", cm->tool_call_id);
		if (cm->tool_calls.data != NULL)
			enc_kraw(e, "tool_calls", &cm->tool_calls, 0, 3);
	}
}

/* Pack the header fields every request carries. */
static void
enc_request_head(struct enc *e, const struct request *rq, size_t nfields)
{
	enc_map(e, 3 + nfields);
	enc_kuint(e, "v", PROTOCOL_VERSION);
	enc_kuint(e, "id", rq->id);
	enc_kstr(e, "op", message_op_name(rq->op));
}

/* Append one request frame to sb. */
int
message_request_encode(msgpack_sbuffer *sb, const struct request *rq)
{
	const struct chat_request *c;
	const struct tokens_request *t;
	const struct stats_request *s;
	const struct logs_request *l;
	struct enc e;
	size_t start, i;

	if (rq->id == 0 || message_op_name(rq->op) == NULL)
		return -1;
	if (enc_begin(&e, sb, &start) != 0)
		return -1;
	switch (rq->op) {
	case OP_CHAT:
		c = &rq->u.chat;
		enc_request_head(&e, rq, 2 + (c->model != NULL) + (c->max_tokens != -1) +
		    !isnan(c->temperature) + !isnan(c->top_p) + (c->n_stop > 0) +
		    c->has_seed + (c->tag != NULL) + (c->extra.data != NULL) + c->status);
		enc_messages(&e, c->messages, c->n_messages);
		if (c->model != NULL)
			enc_kstr(&e, "model", c->model);
		enc_kbool(&e, "stream", c->stream);
		if (c->max_tokens != -1)
			enc_kint(&e, "max_tokens", c->max_tokens);
		if (!isnan(c->temperature))
			enc_kdouble(&e, "temperature", c->temperature, 0);
		if (!isnan(c->top_p))
			enc_kdouble(&e, "top_p", c->top_p, 0);
		if (c->n_stop > 0) {
			enc_key(&e, "stop");
			enc_array(&e, c->n_stop);
			for (i = 0; i < c->n_stop; i++)
				enc_str(&e, c->stop[i]);
		}
		if (c->has_seed)
			enc_kint(&e, "seed", c->seed);
		if (c->tag != NULL)
			enc_kstr(&e, "tag", c->tag);
		if (c->extra.data != NULL)
			enc_kraw(&e, "extra", &c->extra, 1, 1);
		if (c->status)
			enc_kbool(&e, "status", true);
		break;
	case OP_TOKENS:
		t = &rq->u.tokens;
		enc_request_head(&e, rq, (t->text != NULL) + (t->messages != NULL) +
		    (t->encoding != NULL) + (t->model != NULL) + 1);
		if (t->text != NULL) {
			enc_key(&e, "text");
			enc_strn(&e, t->text, message_text_len(t->text, t->text_len));
		}
		if (t->messages != NULL)
			enc_messages(&e, t->messages, t->n_messages);
		if (t->encoding != NULL)
			enc_kstr(&e, "encoding", t->encoding);
		if (t->model != NULL)
			enc_kstr(&e, "model", t->model);
		enc_kbool(&e, "ids", t->ids);
		break;
	case OP_STATS:
		s = &rq->u.stats;
		enc_request_head(&e, rq, (s->by != NULL) + (s->since != -1) + s->fleet);
		if (s->by != NULL)
			enc_kstr(&e, "by", s->by);
		if (s->since != -1)
			enc_kint(&e, "since", s->since);
		if (s->fleet)
			enc_kbool(&e, "fleet", true);
		break;
	case OP_CANCEL:
		enc_request_head(&e, rq, 1);
		enc_kuint(&e, "target", rq->u.cancel_target);
		break;
	case OP_LOGS:
		l = &rq->u.logs;
		enc_request_head(&e, rq, (l->since != -1) + (l->until != -1) +
		    (l->user != -1 || l->user_name != NULL) + (l->tag != NULL) + (l->model != NULL) +
		    (l->status != NULL) + (l->limit != -1) + l->fleet);
		if (l->since != -1)
			enc_kint(&e, "since", l->since);
		if (l->until != -1)
			enc_kint(&e, "until", l->until);
		if (l->user_name != NULL)
			enc_kstr(&e, "user", l->user_name);
		else if (l->user != -1)
			enc_kint(&e, "user", l->user);
		if (l->tag != NULL)
			enc_kstr(&e, "tag", l->tag);
		if (l->model != NULL)
			enc_kstr(&e, "model", l->model);
		if (l->status != NULL)
			enc_kstr(&e, "status", l->status);
		if (l->limit != -1)
			enc_kint(&e, "limit", l->limit);
		if (l->fleet)
			enc_kbool(&e, "fleet", true);
		break;
	default:
		enc_request_head(&e, rq, 0);
		break;
	}
	return enc_end(&e, sb, start);
}

/* Pack a counters map value. */
static void
enc_counters(struct enc *e, const struct counters *c)
{
	enc_map(e, 7);
	enc_kuint(e, "requests", c->requests);
	enc_kuint(e, "errors", c->errors);
	enc_kuint(e, "prompt_tokens", c->prompt_tokens);
	enc_kuint(e, "completion_tokens", c->completion_tokens);
	enc_kuint(e, "total_tokens", c->total_tokens);
	enc_kuint(e, "estimated", c->estimated);
	enc_kdouble(e, "cost", c->cost, 0);
}

/* Pack key -> counters. */
static void
enc_counters_map(struct enc *e, const char *k, const struct counters_map *m)
{
	size_t i;

	enc_key(e, k);
	if (m->entries == NULL && m->n > 0) {
		e->failed = 1;
		return;
	}
	enc_map(e, m->n);
	for (i = 0; i < m->n && !e->failed; i++) {
		enc_str(e, m->entries[i].key);
		enc_counters(e, &m->entries[i].c);
	}
}

/* Pack key -> an array of budgets. */
static void
enc_budgets(struct enc *e, const struct budget_status *bs, size_t n)
{
	const struct budget_status *b;
	size_t i;

	enc_key(e, "budgets");
	if (bs == NULL && n > 0) {
		e->failed = 1;
		return;
	}
	enc_array(e, n);
	for (i = 0; i < n && !e->failed; i++) {
		b = &bs[i];
		enc_map(e, 6);
		enc_kstr(e, "scope", b->scope);
		enc_kstr(e, "unit", b->unit);
		enc_kstr(e, "period", b->period);
		enc_kdouble(e, "limit", b->limit, 0);
		enc_kdouble(e, "used", b->used, 0);
		enc_kdouble(e, "left", b->left, 0);
	}
}

/* Pack the rows of a logs result. */
static void
enc_logs(struct enc *e, const struct logs_result *l)
{
	const struct log_row *w;
	size_t i;

	enc_key(e, "rows");
	if (l->rows == NULL && l->n > 0) {
		e->failed = 1;
		return;
	}
	enc_array(e, l->n);
	for (i = 0; i < l->n && !e->failed; i++) {
		w = &l->rows[i];
		enc_map(e, 10 + (w->tag != NULL) + (w->error != NULL) + (w->ttft_ms >= 0) +
		    (w->node != NULL) + (w->user != NULL));
		enc_kint(e, "time_ms", w->time_ms);
		enc_kuint(e, "uid", w->uid);
		if (w->tag != NULL)
			enc_kstr(e, "tag", w->tag);
		enc_kstr(e, "model", w->model);
		enc_kstr(e, "upstream", w->upstream);
		enc_kstr(e, "status", w->status);
		if (w->error != NULL)
			enc_kstr(e, "error", w->error);
		enc_kint(e, "prompt_tokens", w->prompt_tokens);
		enc_kint(e, "completion_tokens", w->completion_tokens);
		enc_kbool(e, "estimated", w->estimated);
		enc_kdouble(e, "cost", w->cost, 0);
		enc_kint(e, "latency_ms", w->latency_ms);
		if (w->ttft_ms >= 0)
			enc_kint(e, "ttft_ms", w->ttft_ms);
		if (w->node != NULL)
			enc_kstr(e, "node", w->node);
		if (w->user != NULL)
			enc_kstr(e, "user", w->user);
	}
	enc_kbool(e, "truncated", l->truncated);
}

/* Pack the fields of a top result. */
static void
enc_top(struct enc *e, const struct top_result *t)
{
	size_t i;

	enc_kint(e, "uptime_s", t->uptime_s);
	enc_kint(e, "in_flight", t->in_flight);
	enc_key(e, "chats");
	if ((t->chats == NULL && t->n_chats > 0) || (t->models == NULL && t->n_models > 0) ||
	    (t->upstreams == NULL && t->n_upstreams > 0)) {
		e->failed = 1;
		return;
	}
	enc_array(e, t->n_chats);
	for (i = 0; i < t->n_chats && !e->failed; i++) {
		const struct top_chat *c = &t->chats[i];
		enc_map(e, 8 + (c->tag != NULL) + (c->user != NULL));
		enc_kuint(e, "id", c->id);
		enc_kuint(e, "uid", c->uid);
		enc_kstr(e, "model", c->model);
		enc_kstr(e, "upstream", c->upstream);
		if (c->tag != NULL)
			enc_kstr(e, "tag", c->tag);
		enc_kstr(e, "state", c->state);
		enc_kint(e, "age_ms", c->age_ms);
		enc_kint(e, "tokens", c->tokens);
		enc_kdouble(e, "tokens_per_s", c->tokens_per_s, 0);
		if (c->user != NULL)
			enc_kstr(e, "user", c->user);
	}
	enc_key(e, "models");
	enc_array(e, t->n_models);
	for (i = 0; i < t->n_models && !e->failed; i++) {
		enc_map(e, 3);
		enc_kstr(e, "model", t->models[i].model);
		enc_kint(e, "in_flight", t->models[i].in_flight);
		enc_kdouble(e, "tokens_per_s", t->models[i].tokens_per_s, 0);
	}
	enc_key(e, "upstreams");
	enc_array(e, t->n_upstreams);
	for (i = 0; i < t->n_upstreams && !e->failed; i++) {
		enc_map(e, 4);
		enc_kstr(e, "name", t->upstreams[i].name);
		enc_kbool(e, "healthy", t->upstreams[i].healthy);
		enc_kint(e, "in_flight", t->upstreams[i].in_flight);
		enc_kint(e, "queued", t->upstreams[i].queued);
	}
	enc_budgets(e, t->budgets, t->n_budgets);
}

/* Pack a whole result map. */
static void
enc_result(struct enc *e, uint64_t id, const struct result_reply *r)
{
	const struct stats_result *s;
	const struct models_result *m;
	const struct upstream_info *u;
	size_t i, j;

	switch (r->op) {
	case OP_PING:
		enc_map(e, 2 + 3);
		break;
	case OP_TOKENS:
		enc_map(e, 2 + 2 + (r->u.tokens.ids != NULL));
		break;
	case OP_STATS:
		enc_map(e, 2 + 9 + (r->u.stats.by_node.n > 0));
		break;
	case OP_MODELS:
		enc_map(e, 2 + 1);
		break;
	case OP_CANCEL:
	case OP_RESET:
		enc_map(e, 2 + 1);
		break;
	case OP_LOGS:
		enc_map(e, 2 + 2);
		break;
	case OP_TOP:
		enc_map(e, 2 + 6);
		break;
	default:
		e->failed = 1;
		return;
	}
	enc_kuint(e, "id", id);
	enc_kstr(e, "type", "result");
	switch (r->op) {
	case OP_PING:
		enc_kstr(e, "version", r->u.ping.version);
		enc_kint(e, "uptime_s", r->u.ping.uptime_s);
		enc_kint(e, "in_flight", r->u.ping.in_flight);
		break;
	case OP_TOKENS:
		enc_kint(e, "count", r->u.tokens.count);
		enc_kstr(e, "encoding", r->u.tokens.encoding);
		if (r->u.tokens.ids != NULL) {
			enc_key(e, "ids");
			enc_array(e, r->u.tokens.n_ids);
			for (i = 0; i < r->u.tokens.n_ids && !e->failed; i++) {
				if (msgpack_pack_uint32(&e->pk, r->u.tokens.ids[i]) != 0)
					e->failed = 1;
			}
		}
		break;
	case OP_STATS:
		s = &r->u.stats;
		enc_kint(e, "since", s->since);
		enc_key(e, "total");
		enc_counters(e, &s->total);
		enc_counters_map(e, "by_model", &s->by_model);
		enc_counters_map(e, "by_user", &s->by_user);
		enc_counters_map(e, "by_tag", &s->by_tag);
		enc_counters_map(e, "by_day", &s->by_day);
		if (s->by_node.n > 0)
			enc_counters_map(e, "by_node", &s->by_node);
		enc_kdouble(e, "max_budget", s->max_budget, 1);
		enc_kdouble(e, "budget_left", s->budget_left, 1);
		enc_budgets(e, s->budgets, s->n_budgets);
		break;
	case OP_MODELS:
		m = &r->u.models;
		enc_key(e, "upstreams");
		if (m->upstreams == NULL && m->n > 0) {
			e->failed = 1;
			break;
		}
		enc_array(e, m->n);
		for (i = 0; i < m->n && !e->failed; i++) {
			u = &m->upstreams[i];
			enc_map(e, 5 + (u->model != NULL));
			enc_kstr(e, "name", u->name);
			enc_kstr(e, "base_url", u->base_url);
			if (u->model != NULL)
				enc_kstr(e, "model", u->model);
			enc_kbool(e, "healthy", u->healthy);
			enc_kint(e, "in_flight", u->in_flight);
			enc_key(e, "models");
			if (u->models == NULL && u->n_models > 0) {
				e->failed = 1;
				break;
			}
			enc_array(e, u->n_models);
			for (j = 0; j < u->n_models; j++)
				enc_str(e, u->models[j]);
		}
		break;
	case OP_LOGS:
		enc_logs(e, &r->u.logs);
		break;
	case OP_TOP:
		enc_top(e, &r->u.top);
		break;
	default:
		enc_kbool(e, "ok", r->u.ok);
		break;
	}
}

/* Append one reply frame to sb. */
int
message_reply_encode(msgpack_sbuffer *sb, const struct reply *rp)
{
	const struct delta_reply *d;
	const struct done_reply *dn;
	const struct error_reply *er;
	const struct status_reply *st;
	struct enc e;
	size_t start;

	if (enc_begin(&e, sb, &start) != 0)
		return -1;
	switch (rp->type) {
	case REPLY_DELTA:
		d = &rp->u.delta;
		enc_map(&e, 2 + (d->content != NULL) + (d->reasoning != NULL) +
		    (d->tool_calls.data != NULL));
		enc_kuint(&e, "id", rp->id);
		enc_kstr(&e, "type", "delta");
		if (d->content != NULL)
			enc_ktext(&e, "content", d->content, d->content_len);
		if (d->reasoning != NULL)
			enc_ktext(&e, "reasoning", d->reasoning, d->reasoning_len);
		if (d->tool_calls.data != NULL)
			enc_kraw(&e, "tool_calls", &d->tool_calls, 0, 1);
		break;
	case REPLY_DONE:
		dn = &rp->u.done;
		enc_map(&e, 4 + (dn->finish_reason != NULL) + (dn->model != NULL) +
		    (dn->upstream != NULL) + (dn->ttft_ms != -1) + (dn->latency_ms != -1) +
		    (dn->content != NULL) + (dn->reasoning != NULL) +
		    (dn->tool_calls.data != NULL) + dn->not_durable + (dn->max_tokens != -1) +
		    dn->budget_shrunk + (dn->max_tokens_asked != -1) + dn->cut);
		enc_kuint(&e, "id", rp->id);
		enc_kstr(&e, "type", "done");
		if (dn->finish_reason != NULL)
			enc_kstr(&e, "finish_reason", dn->finish_reason);
		enc_key(&e, "usage");
		enc_map(&e, 4);
		enc_kint(&e, "prompt_tokens", dn->usage.prompt_tokens);
		enc_kint(&e, "completion_tokens", dn->usage.completion_tokens);
		enc_kint(&e, "total_tokens", dn->usage.total_tokens);
		enc_kbool(&e, "estimated", dn->usage.estimated);
		enc_kdouble(&e, "cost", dn->cost, 0);
		if (dn->model != NULL)
			enc_kstr(&e, "model", dn->model);
		if (dn->upstream != NULL)
			enc_kstr(&e, "upstream", dn->upstream);
		if (dn->ttft_ms != -1)
			enc_kint(&e, "ttft_ms", dn->ttft_ms);
		if (dn->latency_ms != -1)
			enc_kint(&e, "latency_ms", dn->latency_ms);
		if (dn->content != NULL)
			enc_ktext(&e, "content", dn->content, dn->content_len);
		if (dn->reasoning != NULL)
			enc_ktext(&e, "reasoning", dn->reasoning, dn->reasoning_len);
		if (dn->tool_calls.data != NULL)
			enc_kraw(&e, "tool_calls", &dn->tool_calls, 0, 1);
		if (dn->not_durable)
			enc_kbool(&e, "durable", false);
		if (dn->max_tokens != -1)
			enc_kint(&e, "max_tokens", dn->max_tokens);
		if (dn->budget_shrunk)
			enc_kbool(&e, "budget_shrunk", true);
		if (dn->max_tokens_asked != -1)
			enc_kint(&e, "max_tokens_asked", dn->max_tokens_asked);
		if (dn->cut)
			enc_kbool(&e, "cut", true);
		break;
	case REPLY_RESULT:
		enc_result(&e, rp->id, &rp->u.result);
		break;
	case REPLY_ERROR:
		er = &rp->u.error;
		enc_map(&e, 4 + !isnan(er->retry_after) + (er->status != -1) +
		    (er->detail.data != NULL));
		enc_kuint(&e, "id", rp->id);
		enc_kstr(&e, "type", "error");
		enc_kstr(&e, "code", er->code);
		enc_kstr(&e, "message", er->message);
		if (!isnan(er->retry_after))
			enc_kdouble(&e, "retry_after", er->retry_after, 0);
		if (er->status != -1)
			enc_kint(&e, "status", er->status);
		if (er->detail.data != NULL)
			enc_kraw(&e, "detail", &er->detail, 1, 1);
		break;
	case REPLY_STATUS:
		st = &rp->u.status;
		enc_map(&e, 5 + !isnan(st->wait_s) + (st->attempt > 0) + (st->of > 0));
		enc_kuint(&e, "id", rp->id);
		enc_kstr(&e, "type", "status");
		enc_kstr(&e, "state", st->state);
		enc_kstr(&e, "reason", st->reason);
		enc_kstr(&e, "message", st->message);
		if (!isnan(st->wait_s))
			enc_kdouble(&e, "wait_s", st->wait_s, 0);
		if (st->attempt > 0)
			enc_kint(&e, "attempt", st->attempt);
		if (st->of > 0)
			enc_kint(&e, "of", st->of);
		break;
	default:
		e.failed = 1;
		break;
	}
	return enc_end(&e, sb, start);
}
