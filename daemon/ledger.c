/* The durable usage ledger: journal of records, aggregates by day and key, snapshot. */
#include "config.h"

#include <sys/file.h>
#include <sys/stat.h>
#include <sys/types.h>

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <msgpack.h>

#include "daemon/ledger.h"
#include "protocol/pack.h"
#include "daemon/log.h"

/*
 * A journal record body is a msgpack map with these keys (unknown keys are
 * skipped, so later versions may add some):
 *   v (1), time (ms), uid, tag (str or nil), model, upstream, prompt_tokens,
 *   completion_tokens, estimated (bool), cost (float64), status ("done",
 *   "error", "cancelled"), error (str or nil), latency_ms, rid, and
 *   ttft_ms when it was measured (records written before it was added have
 *   none), rsv, the fleet reservation the record settles (fleet.c), when
 *   there was one, and user (str) for a named user's record only (uid is
 *   then LEDGER_UID_NAMED; records without it, older ones included, belong
 *   to their uid).
 * rid numbers records from 1 up, never reused (records of older versions
 * have none, 0 here). A record may be in the journal twice: after a failed
 * fdatasync the file is abandoned and the records it held that were not
 * known durable are written again to a new file. Replay and history count a
 * rid once.
 * The snapshot body is a map {v: 1, since: s, upto: seq, rid: r, rows:
 * [row...]} where rid is the highest record number folded into the rows and
 * a row is [day, model, upstream, uid, tag, requests, errors,
 * prompt_tokens, completion_tokens, total_tokens, estimated, cost], followed
 * by the user name for a named user's row (13 items); a system user's row
 * keeps the 12 items older versions wrote and read.
 *
 * Records hold C strings, so no NUL byte can occur inside a string; a record
 * header always starts with a zero byte (lengths are < 2^24). A client's tag
 * therefore cannot smuggle a whole fake record into the journal that the
 * resynchronising scan would mistake for a real one.
 */

#define LEDGER_VERSION		1
#define LEDGER_HEADER		8
#define LEDGER_BODY_MIN		8
#define LEDGER_SNAP_MAGIC	"OLLMSNAP"
#define LEDGER_SNAP_HEADER	16
#define LEDGER_TIME_MAX		INT64_C(253402300799999)	/* 9999-12-31T23:59:59.999Z */
#define LEDGER_FLUSH_CHUNK	((size_t)1024 * 1024)
#define LEDGER_FILE_MAX		((off_t)1 << 32)	/* larger files are not read whole */
#define LEDGER_ROTATE_MAX	((size_t)1 << 30)
#define LEDGER_DEPTH_MAX	16
#define LEDGER_MS_PER_DAY	INT64_C(86400000)
#define LEDGER_DAY_UNSET	INT64_MIN
#define LEDGER_BATCH_DAYS	4	/* day changes one batch splits at; more join the last */

/* One aggregate row: counters of one (day, model, upstream, uid, user, tag). */
struct ledger_row {
	int64_t day;
	uint32_t uid;
	uint64_t hash;
	char *model;
	char *upstream;
	char *tag;                  /* "" when untagged */
	char *user;                 /* a named user; "" for a system user's row */
	struct counters c;
	struct ledger_row *next;    /* hash chain */
	char strings[];
};

/* A growable byte buffer, also the msgpack packer's sink. */
struct ledger_buf {
	uint8_t *p;
	size_t len;
	size_t cap;
	bool oom;
};

/* A record decoded from a journal, or a sanitised copy of one being appended. */
struct ledger_decoded {
	struct ledger_record r;
	uint64_t rid;               /* 0: none (an older version's record) */
	char tag[LEDGER_STRING_MAX + 1];
	char user[LEDGER_STRING_MAX + 1];
	char model[LEDGER_STRING_MAX + 1];
	char upstream[LEDGER_STRING_MAX + 1];
	char error_code[LEDGER_STRING_MAX + 1];
};

struct ledger {
	char *dir;
	char *jdir;
	struct ledger_options opt;
	int lock_fd;
	int64_t since;              /* epoch seconds */

	struct ledger_row **rows;   /* in creation order */
	size_t n_rows;
	size_t cap_rows;
	struct ledger_row **buckets;
	size_t n_buckets;           /* power of two */

	uint64_t upto;              /* journal seqs <= upto are in the snapshot */
	uint64_t last_seq;          /* highest seq that exists (or upto) */
	int cur_fd;                 /* journal file being appended, -1 none */
	uint64_t cur_seq;
	off_t cur_size;
	int64_t cur_day;            /* UTC day of its records, LEDGER_DAY_UNSET */
	bool dirty;                 /* written since the last fdatasync */
	bool sync_failed;           /* records from an abandoned file wait to be made durable */

	struct ledger_buf unsynced; /* framed records written to cur_fd since its last fdatasync */
	size_t unsynced_n;
	uint64_t next_rid;

	struct ledger_buf pend;     /* whole framed records not yet written, in order */
	size_t pend_off;
	size_t pend_n;
	uint64_t dropped;

	struct ledger_buf rec;      /* encoding of the record being appended */
	int64_t compact_retry_ms;

	/*
	 * Records staged since the last commit, framed, in order: written with
	 * one write(2) by ledger_commit. They are counted already. seg splits
	 * them where the UTC day changes, so each day's records go to its file.
	 */
	struct ledger_buf batch;
	size_t batch_n;
	struct { size_t end; int64_t day; } seg[LEDGER_BATCH_DAYS];
	size_t n_seg;
	bool batch_failed;          /* committed from inside (snapshot, close) and not written */
	char batch_cause[256];
};

/* What a scan of one journal buffer found. */
struct ledger_scan {
	size_t good_end;            /* where the valid prefix ends */
	size_t n;                   /* valid records */
	size_t skipped;             /* corrupt bytes skipped in the middle */
	bool torn;                  /* bytes after good_end are not records */
	int64_t last_time;          /* time_ms of the last valid record, -1 none */
	int64_t first_time;
	size_t at;                  /* offset of the record passed to the callback */
};

static void ledger_commit_inside(struct ledger *);

typedef int (*ledger_scan_cb)(const struct ledger_decoded *, void *);

/* A set of record numbers as sorted, disjoint, non-adjacent spans. */
struct ledger_rids {
	struct {
		uint64_t lo, hi;
	} *v;
	size_t n;
	size_t cap;
};

static uint32_t ledger_crc_table[8][256];
static bool ledger_crc_ready;

/* Fill cause with a printf-style message. */
static void __attribute__((format(printf, 3, 4)))
ledger_cause(char *cause, size_t cause_len, const char *fmt, ...)
{
	va_list ap;

	if (cause == NULL || cause_len == 0)
		return;
	va_start(ap, fmt);
	vsnprintf(cause, cause_len, fmt, ap);
	va_end(ap);
}

/* Build the tables for the reflected Castagnoli polynomial: byte k of a word of eight. */
static void
ledger_crc_init(void)
{
	for (uint32_t i = 0; i < 256; i++) {
		uint32_t c = i;
		for (int k = 0; k < 8; k++)
			c = (c & 1) ? (c >> 1) ^ 0x82f63b78u : c >> 1;
		ledger_crc_table[0][i] = c;
	}
	for (uint32_t i = 0; i < 256; i++)
		for (int k = 1; k < 8; k++)
			ledger_crc_table[k][i] = ledger_crc_table[0][ledger_crc_table[k - 1][i] & 0xff] ^
			    (ledger_crc_table[k - 1][i] >> 8);
	ledger_crc_ready = true;
}

/* CRC32C, table-driven, eight bytes at a time (slicing-by-8), the rest one by one. */
uint32_t
ledger_crc32c(uint32_t crc, const void *data, size_t len)
{
	const uint8_t *p = data;

	if (!ledger_crc_ready)
		ledger_crc_init();
	crc = ~crc;
	while (len >= 8) {
		uint32_t lo = crc ^ ((uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 |
		    (uint32_t)p[3] << 24);
		crc = ledger_crc_table[7][lo & 0xff] ^ ledger_crc_table[6][(lo >> 8) & 0xff] ^
		    ledger_crc_table[5][(lo >> 16) & 0xff] ^ ledger_crc_table[4][lo >> 24] ^
		    ledger_crc_table[3][p[4]] ^ ledger_crc_table[2][p[5]] ^
		    ledger_crc_table[1][p[6]] ^ ledger_crc_table[0][p[7]];
		p += 8;
		len -= 8;
	}
	while (len-- > 0)
		crc = ledger_crc_table[0][(crc ^ *p++) & 0xff] ^ (crc >> 8);
	return ~crc;
}

/* Big-endian helpers. */
static uint32_t
ledger_get32(const uint8_t *p)
{
	return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

/* Store a big-endian u32. */
static void
ledger_put32(uint8_t *p, uint32_t v)
{
	p[0] = v >> 24;
	p[1] = v >> 16;
	p[2] = v >> 8;
	p[3] = v;
}

/* Load an n-byte big-endian unsigned integer. */
static uint64_t
ledger_getn(const uint8_t *p, size_t n)
{
	uint64_t v = 0;

	while (n-- > 0)
		v = v << 8 | *p++;
	return v;
}

/* UTC day of a time: floor division, so times before 1970 land on the right day. */
int64_t
ledger_day(int64_t time_ms)
{
	int64_t d = time_ms / LEDGER_MS_PER_DAY;

	if (time_ms % LEDGER_MS_PER_DAY < 0)
		d--;
	return d;
}

/* Name of a status, as stored in records. */
const char *
ledger_status_name(enum ledger_status s)
{
	switch (s) {
	case LEDGER_DONE:
		return "done";
	case LEDGER_ERROR:
		return "error";
	case LEDGER_CANCELLED:
		return "cancelled";
	}
	return "error";
}

/* Parse the fsync setting. */
int
ledger_parse_fsync(const char *s, enum ledger_fsync *out)
{
	if (s == NULL)
		return -1;
	if (strcmp(s, "always") == 0)
		*out = LEDGER_FSYNC_ALWAYS;
	else if (strcmp(s, "everysec") == 0)
		*out = LEDGER_FSYNC_EVERYSEC;
	else if (strcmp(s, "no") == 0)
		*out = LEDGER_FSYNC_NO;
	else
		return -1;
	return 0;
}

/* Name of an fsync policy. */
const char *
ledger_fsync_name(enum ledger_fsync f)
{
	switch (f) {
	case LEDGER_FSYNC_ALWAYS:
		return "always";
	case LEDGER_FSYNC_EVERYSEC:
		return "everysec";
	case LEDGER_FSYNC_NO:
		return "no";
	}
	return "everysec";
}

/* Fill the default options. */
void
ledger_options_default(struct ledger_options *o)
{
	memset(o, 0, sizeof *o);
	o->fsync = LEDGER_FSYNC_EVERYSEC;
	o->retention_days = LEDGER_RETENTION_DAYS;
	o->rotate_bytes = LEDGER_ROTATE_BYTES;
	o->pending_max = LEDGER_PENDING_MAX;
}

/* --- buffers and encoding ---------------------------------------------- */

/* Make room for n more bytes. */
static int
ledger_buf_reserve(struct ledger_buf *b, size_t n)
{
	size_t cap;
	uint8_t *p;

	if (b->cap - b->len >= n)
		return 0;
	if (n > SIZE_MAX / 2 - b->len) {
		b->oom = true;
		return -1;
	}
	cap = b->cap ? b->cap : 256;
	while (cap - b->len < n)
		cap *= 2;
	if ((p = realloc(b->p, cap)) == NULL) {
		b->oom = true;
		return -1;
	}
	b->p = p;
	b->cap = cap;
	return 0;
}

/* Append bytes; failures are remembered in oom. */
static int
ledger_buf_add(struct ledger_buf *b, const void *data, size_t n)
{
	if (ledger_buf_reserve(b, n) == -1)
		return -1;
	if (n > 0)
		memcpy(b->p + b->len, data, n);
	b->len += n;
	return 0;
}

/* msgpack packer sink. */
static int
ledger_buf_write_cb(void *data, const char *buf, size_t len)
{
	return ledger_buf_add(data, buf, len);
}

/* Release a buffer and empty it. */
static void
ledger_buf_free(struct ledger_buf *b)
{
	free(b->p);
	memset(b, 0, sizeof *b);
}

/* Pack a C string as a msgpack str. */
static void
ledger_pack_str(msgpack_packer *pk, const char *s)
{
	pack_str(pk, s, strlen(s));
}

/* Length of the valid UTF-8 sequence at s (at most n bytes), 0 if invalid. */
static size_t
ledger_utf8_len(const unsigned char *s, size_t n)
{
	unsigned char c = s[0];
	size_t len;
	uint32_t cp;

	if (c < 0x80)
		return 1;
	if (c >= 0xc2 && c <= 0xdf) {
		len = 2;
		cp = c & 0x1f;
	} else if (c >= 0xe0 && c <= 0xef) {
		len = 3;
		cp = c & 0x0f;
	} else if (c >= 0xf0 && c <= 0xf4) {
		len = 4;
		cp = c & 0x07;
	} else
		return 0;
	if (n < len)
		return 0;
	for (size_t i = 1; i < len; i++) {
		if ((s[i] & 0xc0) != 0x80)
			return 0;
		cp = cp << 6 | (s[i] & 0x3f);
	}
	if ((len == 3 && cp < 0x800) || (len == 4 && (cp < 0x10000 || cp > 0x10ffff)) ||
	    (cp >= 0xd800 && cp <= 0xdfff))
		return 0;
	return len;
}

/* Copy s into out (LEDGER_STRING_MAX + 1 bytes): invalid bytes become '?', cut at a character. */
static void
ledger_clean_string(const char *s, char *out)
{
	const unsigned char *p = (const unsigned char *)(s ? s : "");
	size_t n = strlen((const char *)p), o = 0;

	while (n > 0) {
		size_t k = ledger_utf8_len(p, n);
		if (k == 0) {
			if (o + 1 > LEDGER_STRING_MAX)
				break;
			out[o++] = '?';
			p++;
			n--;
			continue;
		}
		if (o + k > LEDGER_STRING_MAX)
			break;
		memcpy(out + o, p, k);
		o += k;
		p += k;
		n -= k;
	}
	out[o] = '\0';
}

/* True if len bytes are valid UTF-8. */
static bool
ledger_utf8_valid(const char *s, size_t len)
{
	const unsigned char *p = (const unsigned char *)s;

	while (len > 0) {
		size_t k = ledger_utf8_len(p, len);
		if (k == 0)
			return false;
		p += k;
		len -= k;
	}
	return true;
}

/* Copy rec into d with every field made storable; -1 for an unknown status. */
static int
ledger_sanitize(const struct ledger_record *rec, struct ledger_decoded *d)
{
	if (rec->status != LEDGER_DONE && rec->status != LEDGER_ERROR &&
	    rec->status != LEDGER_CANCELLED)
		return -1;
	memset(&d->r, 0, sizeof d->r);
	d->r.time_ms = rec->time_ms < 0 ? 0 : rec->time_ms > LEDGER_TIME_MAX ?
	    LEDGER_TIME_MAX : rec->time_ms;
	d->r.uid = rec->uid;
	ledger_clean_string(rec->tag, d->tag);
	ledger_clean_string(rec->user, d->user);
	d->r.user = d->user[0] != '\0' ? d->user : NULL;
	if (d->r.user != NULL)
		d->r.uid = LEDGER_UID_NAMED;
	ledger_clean_string(rec->model, d->model);
	ledger_clean_string(rec->upstream, d->upstream);
	ledger_clean_string(rec->status == LEDGER_DONE ? NULL : rec->error_code, d->error_code);
	d->r.tag = d->tag[0] != '\0' ? d->tag : NULL;
	d->r.model = d->model;
	d->r.upstream = d->upstream;
	d->r.error_code = d->error_code[0] != '\0' ? d->error_code : NULL;
	d->r.prompt_tokens = rec->prompt_tokens < 0 ? 0 : rec->prompt_tokens;
	d->r.completion_tokens = rec->completion_tokens < 0 ? 0 : rec->completion_tokens;
	d->r.estimated = rec->estimated;
	d->r.cost = isfinite(rec->cost) && rec->cost > 0 ? rec->cost : 0.0;
	d->r.status = rec->status;
	d->r.latency_ms = rec->latency_ms < 0 ? 0 : rec->latency_ms;
	d->r.has_ttft = rec->has_ttft;
	d->r.ttft_ms = rec->ttft_ms < 0 ? 0 : rec->ttft_ms;
	d->r.reservation = rec->reservation;
	return 0;
}

/* Encode a sanitised record as one framed journal record into b (replacing its contents). */
static int
ledger_encode(struct ledger_buf *b, const struct ledger_record *r, uint64_t rid)
{
	static const uint8_t zero[LEDGER_HEADER];
	msgpack_packer pk;
	size_t body;

	b->len = 0;
	b->oom = false;
	ledger_buf_add(b, zero, sizeof zero);
	msgpack_packer_init(&pk, b, ledger_buf_write_cb);
	msgpack_pack_map(&pk, 14 + (r->has_ttft ? 1 : 0) + (r->reservation != 0 ? 1 : 0) +
	    (r->user != NULL ? 1 : 0));
	ledger_pack_str(&pk, "v");
	msgpack_pack_uint32(&pk, LEDGER_VERSION);
	ledger_pack_str(&pk, "time");
	msgpack_pack_int64(&pk, r->time_ms);
	ledger_pack_str(&pk, "uid");
	msgpack_pack_uint32(&pk, r->uid);
	ledger_pack_str(&pk, "tag");
	if (r->tag != NULL)
		ledger_pack_str(&pk, r->tag);
	else
		msgpack_pack_nil(&pk);
	ledger_pack_str(&pk, "model");
	ledger_pack_str(&pk, r->model);
	ledger_pack_str(&pk, "upstream");
	ledger_pack_str(&pk, r->upstream);
	ledger_pack_str(&pk, "prompt_tokens");
	msgpack_pack_int64(&pk, r->prompt_tokens);
	ledger_pack_str(&pk, "completion_tokens");
	msgpack_pack_int64(&pk, r->completion_tokens);
	ledger_pack_str(&pk, "estimated");
	if (r->estimated)
		msgpack_pack_true(&pk);
	else
		msgpack_pack_false(&pk);
	ledger_pack_str(&pk, "cost");
	msgpack_pack_double(&pk, r->cost);
	ledger_pack_str(&pk, "status");
	ledger_pack_str(&pk, ledger_status_name(r->status));
	ledger_pack_str(&pk, "error");
	if (r->error_code != NULL)
		ledger_pack_str(&pk, r->error_code);
	else
		msgpack_pack_nil(&pk);
	ledger_pack_str(&pk, "latency_ms");
	msgpack_pack_int64(&pk, r->latency_ms);
	ledger_pack_str(&pk, "rid");
	msgpack_pack_uint64(&pk, rid);
	if (r->has_ttft) {
		ledger_pack_str(&pk, "ttft_ms");
		msgpack_pack_int64(&pk, r->ttft_ms);
	}
	if (r->reservation != 0) {
		ledger_pack_str(&pk, "rsv");
		msgpack_pack_uint64(&pk, r->reservation);
	}
	if (r->user != NULL) {
		ledger_pack_str(&pk, "user");
		ledger_pack_str(&pk, r->user);
	}
	if (b->oom)
		return -1;
	body = b->len - LEDGER_HEADER;
	ledger_put32(b->p, (uint32_t)body);
	ledger_put32(b->p + 4, ledger_crc32c(0, b->p + LEDGER_HEADER, body));
	return 0;
}

/* --- a bounded msgpack reader (nothing is allocated from declared sizes) -- */

struct mpr {
	const uint8_t *p;
	const uint8_t *end;
};

/* Bytes left to read. */
static size_t
mpr_left(const struct mpr *r)
{
	return (size_t)(r->end - r->p);
}

/* Read a map (kind 'm') or array (kind 'a') header; counts beyond the bytes left fail. */
static int
mpr_count(struct mpr *r, int kind, uint32_t *n)
{
	uint8_t b;
	size_t w;

	if (mpr_left(r) < 1)
		return -1;
	b = *r->p;
	if (kind == 'm' && b >= 0x80 && b <= 0x8f) {
		*n = b & 0x0f;
		w = 0;
	} else if (kind == 'a' && b >= 0x90 && b <= 0x9f) {
		*n = b & 0x0f;
		w = 0;
	} else if ((kind == 'm' && b == 0xde) || (kind == 'a' && b == 0xdc))
		w = 2;
	else if ((kind == 'm' && b == 0xdf) || (kind == 'a' && b == 0xdd))
		w = 4;
	else
		return -1;
	if (mpr_left(r) < 1 + w)
		return -1;
	if (w > 0)
		*n = (uint32_t)ledger_getn(r->p + 1, w);
	r->p += 1 + w;
	if ((uint64_t)*n * (kind == 'm' ? 2 : 1) > mpr_left(r))
		return -1;
	return 0;
}

/* Read a string (not NUL-terminated). */
static int
mpr_str(struct mpr *r, const char **s, uint32_t *len)
{
	uint8_t b;
	size_t w;

	if (mpr_left(r) < 1)
		return -1;
	b = *r->p;
	if (b >= 0xa0 && b <= 0xbf) {
		*len = b & 0x1f;
		w = 0;
	} else if (b == 0xd9)
		w = 1;
	else if (b == 0xda)
		w = 2;
	else if (b == 0xdb)
		w = 4;
	else
		return -1;
	if (mpr_left(r) < 1 + w)
		return -1;
	if (w > 0)
		*len = (uint32_t)ledger_getn(r->p + 1, w);
	r->p += 1 + w;
	if (*len > mpr_left(r))
		return -1;
	*s = (const char *)r->p;
	r->p += *len;
	return 0;
}

/* Consume a nil: 1 if there was one, 0 if the next object is something else. */
static int
mpr_nil(struct mpr *r)
{
	if (mpr_left(r) >= 1 && *r->p == 0xc0) {
		r->p++;
		return 1;
	}
	return 0;
}

/* Read any integer that fits int64. */
static int
mpr_int(struct mpr *r, int64_t *v)
{
	uint8_t b;
	size_t w;
	uint64_t u;

	if (mpr_left(r) < 1)
		return -1;
	b = *r->p;
	if (b <= 0x7f) {
		*v = b;
		r->p++;
		return 0;
	}
	if (b >= 0xe0) {
		*v = (int8_t)b;
		r->p++;
		return 0;
	}
	if (b >= 0xcc && b <= 0xcf)
		w = (size_t)1 << (b - 0xcc);
	else if (b >= 0xd0 && b <= 0xd3)
		w = (size_t)1 << (b - 0xd0);
	else
		return -1;
	if (mpr_left(r) < 1 + w)
		return -1;
	u = ledger_getn(r->p + 1, w);
	if (b >= 0xcc && b <= 0xcf) {
		if (u > INT64_MAX)
			return -1;
		*v = (int64_t)u;
	} else {
		switch (w) {
		case 1:
			*v = (int8_t)u;
			break;
		case 2:
			*v = (int16_t)u;
			break;
		case 4:
			*v = (int32_t)u;
			break;
		default:
			*v = (int64_t)u;
			break;
		}
	}
	r->p += 1 + w;
	return 0;
}

/* Read a float32, float64 or integer as a double. */
static int
mpr_double(struct mpr *r, double *v)
{
	int64_t i;

	if (mpr_left(r) >= 5 && *r->p == 0xca) {
		uint32_t u = ledger_get32(r->p + 1);
		float f;
		memcpy(&f, &u, sizeof f);
		*v = f;
		r->p += 5;
		return 0;
	}
	if (mpr_left(r) >= 9 && *r->p == 0xcb) {
		uint64_t u = ledger_getn(r->p + 1, 8);
		memcpy(v, &u, sizeof *v);
		r->p += 9;
		return 0;
	}
	if (mpr_int(r, &i) == -1)
		return -1;
	*v = (double)i;
	return 0;
}

/* Read a boolean. */
static int
mpr_bool(struct mpr *r, bool *v)
{
	if (mpr_left(r) < 1 || (*r->p != 0xc2 && *r->p != 0xc3))
		return -1;
	*v = *r->p == 0xc3;
	r->p++;
	return 0;
}

/* Skip one object of any type, nesting at most depth levels. */
static int
mpr_skip(struct mpr *r, int depth)
{
	uint8_t b;
	uint32_t n;
	size_t skip;
	const char *s;

	if (mpr_left(r) < 1 || depth <= 0)
		return -1;
	b = *r->p;
	if (b <= 0x7f || b >= 0xe0 || b == 0xc0 || b == 0xc2 || b == 0xc3) {
		r->p++;
		return 0;
	}
	if ((b >= 0x80 && b <= 0x8f) || b == 0xde || b == 0xdf) {
		if (mpr_count(r, 'm', &n) == -1)
			return -1;
		for (uint64_t i = 0; i < (uint64_t)n * 2; i++)
			if (mpr_skip(r, depth - 1) == -1)
				return -1;
		return 0;
	}
	if ((b >= 0x90 && b <= 0x9f) || b == 0xdc || b == 0xdd) {
		if (mpr_count(r, 'a', &n) == -1)
			return -1;
		for (uint32_t i = 0; i < n; i++)
			if (mpr_skip(r, depth - 1) == -1)
				return -1;
		return 0;
	}
	if ((b >= 0xa0 && b <= 0xbf) || (b >= 0xd9 && b <= 0xdb))
		return mpr_str(r, &s, &n);
	switch (b) {
	case 0xc4: case 0xc5: case 0xc6:        /* bin 8/16/32 */
		skip = (size_t)1 << (b - 0xc4);
		if (mpr_left(r) < 1 + skip)
			return -1;
		skip += ledger_getn(r->p + 1, skip);
		break;
	case 0xc7: case 0xc8: case 0xc9:        /* ext 8/16/32 */
		n = (uint32_t)1 << (b - 0xc7);
		if (mpr_left(r) < 1 + n)
			return -1;
		skip = n + 1 + ledger_getn(r->p + 1, n);
		break;
	case 0xca:
		skip = 4;
		break;
	case 0xcb:
		skip = 8;
		break;
	case 0xcc: case 0xcd: case 0xce: case 0xcf:
		skip = (size_t)1 << (b - 0xcc);
		break;
	case 0xd0: case 0xd1: case 0xd2: case 0xd3:
		skip = (size_t)1 << (b - 0xd0);
		break;
	case 0xd4: case 0xd5: case 0xd6: case 0xd7: case 0xd8:  /* fixext */
		skip = 1 + ((size_t)1 << (b - 0xd4));
		break;
	default:
		return -1;
	}
	if (mpr_left(r) - 1 < skip)
		return -1;
	r->p += 1 + skip;
	return 0;
}

/* Compare a msgpack key with a C string. */
static bool
mpr_key_is(const char *k, uint32_t klen, const char *name)
{
	return strlen(name) == klen && memcmp(k, name, klen) == 0;
}

/* Read a string into out (LEDGER_STRING_MAX + 1 bytes): bounded, UTF-8, no NUL. */
static int
mpr_cstr(struct mpr *r, char *out)
{
	const char *s;
	uint32_t len;

	if (mpr_str(r, &s, &len) == -1 || len > LEDGER_STRING_MAX ||
	    memchr(s, '\0', len) != NULL || !ledger_utf8_valid(s, len))
		return -1;
	memcpy(out, s, len);
	out[len] = '\0';
	return 0;
}

/* Decode a record body into d; -1 when it is not a valid version-1 record. */
static int
ledger_decode(const uint8_t *body, size_t len, struct ledger_decoded *d)
{
	struct mpr r = { body, body + len };
	uint32_t n, klen;
	const char *k, *s;
	int64_t v = -1;
	bool have_time = false, have_model = false, have_upstream = false, have_status = false;

	memset(&d->r, 0, sizeof d->r);
	d->rid = 0;
	d->tag[0] = d->user[0] = d->model[0] = d->upstream[0] = d->error_code[0] = '\0';
	if (mpr_count(&r, 'm', &n) == -1)
		return -1;
	for (uint32_t i = 0; i < n; i++) {
		if (mpr_str(&r, &k, &klen) == -1)
			return -1;
		if (mpr_key_is(k, klen, "v")) {
			if (mpr_int(&r, &v) == -1 || v != LEDGER_VERSION)
				return -1;
		} else if (mpr_key_is(k, klen, "time")) {
			if (mpr_int(&r, &d->r.time_ms) == -1 || d->r.time_ms < 0 ||
			    d->r.time_ms > LEDGER_TIME_MAX)
				return -1;
			have_time = true;
		} else if (mpr_key_is(k, klen, "uid")) {
			int64_t uid;
			if (mpr_int(&r, &uid) == -1 || uid < 0 || uid > UINT32_MAX)
				return -1;
			d->r.uid = (uint32_t)uid;
		} else if (mpr_key_is(k, klen, "tag")) {
			if (!mpr_nil(&r) && mpr_cstr(&r, d->tag) == -1)
				return -1;
		} else if (mpr_key_is(k, klen, "user")) {
			if (!mpr_nil(&r) && mpr_cstr(&r, d->user) == -1)
				return -1;
		} else if (mpr_key_is(k, klen, "model")) {
			if (mpr_cstr(&r, d->model) == -1)
				return -1;
			have_model = true;
		} else if (mpr_key_is(k, klen, "upstream")) {
			if (mpr_cstr(&r, d->upstream) == -1)
				return -1;
			have_upstream = true;
		} else if (mpr_key_is(k, klen, "prompt_tokens")) {
			if (mpr_int(&r, &d->r.prompt_tokens) == -1 || d->r.prompt_tokens < 0)
				return -1;
		} else if (mpr_key_is(k, klen, "completion_tokens")) {
			if (mpr_int(&r, &d->r.completion_tokens) == -1 || d->r.completion_tokens < 0)
				return -1;
		} else if (mpr_key_is(k, klen, "estimated")) {
			if (mpr_bool(&r, &d->r.estimated) == -1)
				return -1;
		} else if (mpr_key_is(k, klen, "cost")) {
			if (mpr_double(&r, &d->r.cost) == -1 || !isfinite(d->r.cost) || d->r.cost < 0)
				return -1;
		} else if (mpr_key_is(k, klen, "status")) {
			uint32_t slen;
			if (mpr_str(&r, &s, &slen) == -1)
				return -1;
			if (mpr_key_is(s, slen, "done"))
				d->r.status = LEDGER_DONE;
			else if (mpr_key_is(s, slen, "error"))
				d->r.status = LEDGER_ERROR;
			else if (mpr_key_is(s, slen, "cancelled"))
				d->r.status = LEDGER_CANCELLED;
			else
				return -1;
			have_status = true;
		} else if (mpr_key_is(k, klen, "error")) {
			if (!mpr_nil(&r) && mpr_cstr(&r, d->error_code) == -1)
				return -1;
		} else if (mpr_key_is(k, klen, "latency_ms")) {
			if (mpr_int(&r, &d->r.latency_ms) == -1 || d->r.latency_ms < 0)
				return -1;
		} else if (mpr_key_is(k, klen, "ttft_ms")) {
			if (mpr_int(&r, &d->r.ttft_ms) == -1 || d->r.ttft_ms < 0)
				return -1;
			d->r.has_ttft = true;
		} else if (mpr_key_is(k, klen, "rsv")) {
			int64_t rsv;
			if (mpr_int(&r, &rsv) == -1 || rsv < 1)
				return -1;
			d->r.reservation = (uint64_t)rsv;
		} else if (mpr_key_is(k, klen, "rid")) {
			int64_t rid;
			if (mpr_int(&r, &rid) == -1 || rid < 1)
				return -1;
			d->rid = (uint64_t)rid;
		} else if (mpr_skip(&r, LEDGER_DEPTH_MAX) == -1)
			return -1;
	}
	if (r.p != r.end || v != LEDGER_VERSION || !have_time || !have_model ||
	    !have_upstream || !have_status)
		return -1;
	d->r.tag = d->tag[0] != '\0' ? d->tag : NULL;
	d->r.user = d->user[0] != '\0' ? d->user : NULL;
	if (d->r.user != NULL)
		d->r.uid = LEDGER_UID_NAMED;
	d->r.model = d->model;
	d->r.upstream = d->upstream;
	d->r.error_code = d->r.status != LEDGER_DONE && d->error_code[0] != '\0' ?
	    d->error_code : NULL;
	return 0;
}

/*
 * Check the record at buf (avail bytes): 1 when whole, checksummed and
 * decodable (d filled), 0 when its header, length or CRC is wrong, -1 when
 * its frame verifies but the body does not decode. *flen gets the frame
 * length whenever the frame verifies.
 */
static int
ledger_frame_at(const uint8_t *buf, size_t avail, struct ledger_decoded *d, size_t *flen)
{
	uint32_t len;

	if (avail < LEDGER_HEADER)
		return 0;
	len = ledger_get32(buf);
	if (len < LEDGER_BODY_MIN || len > LEDGER_RECORD_MAX || len > avail - LEDGER_HEADER)
		return 0;
	if ((buf[LEDGER_HEADER] & 0xf0) != 0x80 && buf[LEDGER_HEADER] != 0xde)
		return 0;
	if (ledger_crc32c(0, buf + LEDGER_HEADER, len) != ledger_get32(buf + 4))
		return 0;
	*flen = LEDGER_HEADER + (size_t)len;
	return ledger_decode(buf + LEDGER_HEADER, len, d) == 0 ? 1 : -1;
}

/*
 * Walk the records of one journal buffer, calling cb (if any) for each
 * valid one. A bad stretch followed by a valid record is skipped; one that
 * runs to the end is reported as torn (good_end tells where it starts).
 * name is used in messages; quiet suppresses them. A non-zero cb stops the
 * walk and is returned.
 */
static int
ledger_scan_buf(const uint8_t *buf, size_t len, const char *name, bool quiet,
    ledger_scan_cb cb, void *arg, struct ledger_scan *sc)
{
	struct ledger_decoded *d;
	size_t pos = 0, flen, bad, q;
	int rc = 0, k;

	memset(sc, 0, sizeof *sc);
	sc->last_time = sc->first_time = -1;
	if ((d = malloc(sizeof *d)) == NULL)
		return -1;
	while (pos < len) {
		k = ledger_frame_at(buf + pos, len - pos, d, &flen);
		if (k == 1) {
			if (sc->first_time == -1)
				sc->first_time = d->r.time_ms;
			sc->last_time = d->r.time_ms;
			sc->n++;
			sc->at = pos;
			pos += flen;
			sc->good_end = pos;
			if (cb != NULL && (rc = cb(d, arg)) != 0)
				break;
			continue;
		}
		bad = pos;
		q = k == -1 ? pos + flen : pos + 1;
		for (; q + LEDGER_HEADER <= len; q++) {
			if (buf[q] != 0)
				continue;
			if (ledger_frame_at(buf + q, len - q, d, &flen) == 1)
				break;
		}
		if (q + LEDGER_HEADER > len) {
			sc->torn = true;
			break;
		}
		sc->skipped += q - bad;
		if (!quiet)
			log_error("usage ledger: %s: skipped %zu corrupt bytes at offset %zu "
			    "(at least one record lost); the %zu bytes from offset %zu on are intact",
			    name, q - bad, bad, len - q, q);
		pos = q;
	}
	if (!sc->torn && rc == 0)
		sc->good_end = len;
	free(d);
	return rc;
}

/* --- record numbers -------------------------------------------------------- */

/* Add rid to the set: 1 when it is new, 0 when already there, -1 out of memory. */
static int
ledger_rids_add(struct ledger_rids *s, uint64_t rid)
{
	size_t lo = 0, hi = s->n, i;

	if (s->n > 0 && rid > s->v[s->n - 1].hi) {
		if (rid == s->v[s->n - 1].hi + 1) {
			s->v[s->n - 1].hi = rid;
			return 1;
		}
		lo = s->n;
	} else {
		while (lo < hi) {       /* first span starting above rid */
			size_t mid = lo + (hi - lo) / 2;
			if (s->v[mid].lo > rid)
				hi = mid;
			else
				lo = mid + 1;
		}
	}
	i = lo;
	if (i > 0 && rid <= s->v[i - 1].hi)
		return 0;
	if (i > 0 && rid == s->v[i - 1].hi + 1) {
		s->v[i - 1].hi = rid;
		if (i < s->n && s->v[i].lo == rid + 1) {
			s->v[i - 1].hi = s->v[i].hi;
			memmove(&s->v[i], &s->v[i + 1], (s->n - i - 1) * sizeof s->v[0]);
			s->n--;
		}
		return 1;
	}
	if (i < s->n && s->v[i].lo == rid + 1) {
		s->v[i].lo = rid;
		return 1;
	}
	if (s->n == s->cap) {
		size_t cap = s->cap ? s->cap * 2 : 8;
		void *v = reallocarray(s->v, cap, sizeof s->v[0]);
		if (v == NULL)
			return -1;
		s->v = v;
		s->cap = cap;
	}
	memmove(&s->v[i + 1], &s->v[i], (s->n - i) * sizeof s->v[0]);
	s->v[i].lo = s->v[i].hi = rid;
	s->n++;
	return 1;
}

/* Free a set of record numbers. */
static void
ledger_rids_free(struct ledger_rids *s)
{
	free(s->v);
	memset(s, 0, sizeof *s);
}

/* --- aggregates ---------------------------------------------------------- */

/* FNV-1a over some bytes. */
static uint64_t
ledger_hash_bytes(uint64_t h, const void *data, size_t len)
{
	const uint8_t *p = data;

	while (len-- > 0) {
		h ^= *p++;
		h *= UINT64_C(0x100000001b3);
	}
	return h;
}

/* Hash of a row key; strings include their terminating NUL so fields cannot run together. */
static uint64_t
ledger_row_hash(int64_t day, const char *model, const char *upstream, uint32_t uid,
    const char *user, const char *tag)
{
	uint64_t h = UINT64_C(0xcbf29ce484222325);

	h = ledger_hash_bytes(h, &day, sizeof day);
	h = ledger_hash_bytes(h, &uid, sizeof uid);
	h = ledger_hash_bytes(h, model, strlen(model) + 1);
	h = ledger_hash_bytes(h, upstream, strlen(upstream) + 1);
	h = ledger_hash_bytes(h, tag, strlen(tag) + 1);
	h = ledger_hash_bytes(h, user, strlen(user) + 1);
	return h;
}

/* Double the hash table. */
static int
ledger_rows_grow(struct ledger *l)
{
	size_t nb = l->n_buckets ? l->n_buckets * 2 : 64;
	struct ledger_row **b;

	if ((b = calloc(nb, sizeof *b)) == NULL)
		return -1;
	for (size_t i = 0; i < l->n_rows; i++) {
		struct ledger_row *row = l->rows[i];
		row->next = b[row->hash & (nb - 1)];
		b[row->hash & (nb - 1)] = row;
	}
	free(l->buckets);
	l->buckets = b;
	l->n_buckets = nb;
	return 0;
}

/* Find or create the row for a key; NULL when out of memory. */
static struct ledger_row *
ledger_row_get(struct ledger *l, int64_t day, const char *model, const char *upstream,
    uint32_t uid, const char *user, const char *tag)
{
	uint64_t h;
	struct ledger_row *row;
	size_t lm, lu, lt, ln;

	if (tag == NULL)
		tag = "";
	if (user == NULL)
		user = "";
	h = ledger_row_hash(day, model, upstream, uid, user, tag);
	if (l->n_buckets > 0) {
		for (row = l->buckets[h & (l->n_buckets - 1)]; row != NULL; row = row->next) {
			if (row->hash == h && row->day == day && row->uid == uid &&
			    strcmp(row->model, model) == 0 && strcmp(row->upstream, upstream) == 0 &&
			    strcmp(row->tag, tag) == 0 && strcmp(row->user, user) == 0)
				return row;
		}
	}
	if (l->n_rows >= l->n_buckets && ledger_rows_grow(l) == -1)
		return NULL;
	if (l->n_rows == l->cap_rows) {
		size_t cap = l->cap_rows ? l->cap_rows * 2 : 64;
		struct ledger_row **rows = reallocarray(l->rows, cap, sizeof *rows);
		if (rows == NULL)
			return NULL;
		l->rows = rows;
		l->cap_rows = cap;
	}
	lm = strlen(model) + 1;
	lu = strlen(upstream) + 1;
	lt = strlen(tag) + 1;
	ln = strlen(user) + 1;
	if ((row = calloc(1, sizeof *row + lm + lu + lt + ln)) == NULL)
		return NULL;
	row->day = day;
	row->uid = uid;
	row->hash = h;
	row->model = row->strings;
	row->upstream = row->model + lm;
	row->tag = row->upstream + lu;
	row->user = row->tag + lt;
	memcpy(row->model, model, lm);
	memcpy(row->upstream, upstream, lu);
	memcpy(row->tag, tag, lt);
	memcpy(row->user, user, ln);
	row->next = l->buckets[h & (l->n_buckets - 1)];
	l->buckets[h & (l->n_buckets - 1)] = row;
	l->rows[l->n_rows++] = row;
	return row;
}

/* Add, saturating instead of wrapping. */
static uint64_t
ledger_sat_add(uint64_t a, uint64_t b)
{
	return a > UINT64_MAX - b ? UINT64_MAX : a + b;
}

/* Add b into a. */
static void
ledger_counters_add(struct counters *a, const struct counters *b)
{
	a->requests = ledger_sat_add(a->requests, b->requests);
	a->errors = ledger_sat_add(a->errors, b->errors);
	a->prompt_tokens = ledger_sat_add(a->prompt_tokens, b->prompt_tokens);
	a->completion_tokens = ledger_sat_add(a->completion_tokens, b->completion_tokens);
	a->total_tokens = ledger_sat_add(a->total_tokens, b->total_tokens);
	a->estimated = ledger_sat_add(a->estimated, b->estimated);
	a->cost += b->cost;
}

/* Count one (sanitised or decoded) record in the aggregates. */
static int
ledger_count(struct ledger *l, const struct ledger_record *r)
{
	struct ledger_row *row;
	struct counters c;

	row = ledger_row_get(l, ledger_day(r->time_ms), r->model, r->upstream, r->uid, r->user, r->tag);
	if (row == NULL)
		return -1;
	memset(&c, 0, sizeof c);
	c.requests = 1;
	c.errors = r->status != LEDGER_DONE;
	c.prompt_tokens = (uint64_t)r->prompt_tokens;
	c.completion_tokens = (uint64_t)r->completion_tokens;
	c.total_tokens = ledger_sat_add(c.prompt_tokens, c.completion_tokens);
	c.estimated = r->estimated;
	c.cost = r->cost;
	ledger_counters_add(&row->c, &c);
	return 0;
}

/* Drop every row. */
static void
ledger_rows_free(struct ledger *l)
{
	for (size_t i = 0; i < l->n_rows; i++)
		free(l->rows[i]);
	free(l->rows);
	free(l->buckets);
	l->rows = l->buckets = NULL;
	l->n_rows = l->cap_rows = l->n_buckets = 0;
}

/* --- files --------------------------------------------------------------- */

/* Path of journal file seq. */
static int
ledger_journal_path(const struct ledger *l, uint64_t seq, char *out, size_t len)
{
	int n = snprintf(out, len, "%s/journal-%016llu.olj", l->jdir, (unsigned long long)seq);

	return n < 0 || (size_t)n >= len ? -1 : 0;
}

/* Path of a file in the state directory. */
static int
ledger_path(const struct ledger *l, const char *name, char *out, size_t len)
{
	int n = snprintf(out, len, "%s/%s", l->dir, name);

	return n < 0 || (size_t)n >= len ? -1 : 0;
}

/* fsync a directory so renames, creations and deletions in it are durable. */
static int
ledger_fsync_dir(const char *path)
{
	int fd, rc, saved;

	if ((fd = open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC)) == -1)
		return -1;
	rc = fsync(fd);
	saved = errno;
	close(fd);
	errno = saved;
	return rc;
}

/*
 * Create a directory unless a directory is already there. Only the state
 * directory itself (follow) may be a symbolic link: the ledger's own
 * directories inside it never are, so one planted there is refused.
 */
static int
ledger_mkdir_follow(const char *path, bool follow, char *cause, size_t cause_len)
{
	struct stat st;

	if (mkdir(path, 0750) == 0)
		return 0;
	if (errno == EEXIST && (follow ? stat(path, &st) : lstat(path, &st)) == 0) {
		if (S_ISDIR(st.st_mode))
			return 0;
		if (S_ISLNK(st.st_mode)) {
			ledger_cause(cause, cause_len, "%s is a symbolic link; refusing to follow it", path);
			errno = ELOOP;
			return -1;
		}
	}
	if (errno == EEXIST)
		errno = ENOTDIR;
	ledger_cause(cause, cause_len, "%s: %s", path, strerror(errno));
	return -1;
}

/* Create one of the ledger's directories inside the state directory. */
static int
ledger_mkdir(const char *path, char *cause, size_t cause_len)
{
	return ledger_mkdir_follow(path, false, cause, cause_len);
}

/* Open a file of the ledger without following a symbolic link; cause says so when it is one. */
static int
ledger_open_file(const char *path, int flags, char *cause, size_t cause_len)
{
	int fd = open(path, flags | O_NOFOLLOW | O_CLOEXEC, 0640);
	int saved;

	if (fd != -1)
		return fd;
	saved = errno;
	if (saved == ELOOP)
		ledger_cause(cause, cause_len, "%s is a symbolic link; refusing to follow it", path);
	else
		ledger_cause(cause, cause_len, "%s: %s", path, strerror(saved));
	errno = saved;
	return -1;
}

/* Create a directory and any missing parents. */
static int
ledger_mkdirs(const char *path, char *cause, size_t cause_len)
{
	char buf[PATH_MAX];
	size_t len = strlen(path);

	if (len >= sizeof buf) {
		ledger_cause(cause, cause_len, "%s: path too long", path);
		return -1;
	}
	memcpy(buf, path, len + 1);
	for (char *p = buf + 1; *p != '\0'; p++) {
		if (*p != '/')
			continue;
		*p = '\0';
		if (mkdir(buf, 0755) == -1 && errno != EEXIST) {
			ledger_cause(cause, cause_len, "%s: %s", buf, strerror(errno));
			return -1;
		}
		*p = '/';
	}
	return ledger_mkdir_follow(path, true, cause, cause_len);
}

/* Read a whole regular file into a malloc'd buffer. */
static int
ledger_read_file(const char *path, uint8_t **out, size_t *out_len, char *cause, size_t cause_len)
{
	struct stat st;
	uint8_t *buf = NULL;
	size_t got = 0;
	ssize_t n;
	int fd, saved;

	*out = NULL;
	*out_len = 0;
	if ((fd = ledger_open_file(path, O_RDONLY, cause, cause_len)) == -1)
		return -1;
	if (fstat(fd, &st) == -1)
		goto fail;
	if (!S_ISREG(st.st_mode)) {
		errno = EINVAL;
		goto fail;
	}
	if (st.st_size >= LEDGER_FILE_MAX) {
		errno = EFBIG;
		goto fail;
	}
	if ((buf = malloc((size_t)st.st_size + 1)) == NULL)
		goto fail;
	while (got < (size_t)st.st_size) {
		n = read(fd, buf + got, (size_t)st.st_size - got);
		if (n == -1 && errno == EINTR)
			continue;
		if (n == -1)
			goto fail;
		if (n == 0)
			break;
		got += (size_t)n;
	}
	close(fd);
	*out = buf;
	*out_len = got;
	return 0;

fail:
	saved = errno;
	free(buf);
	close(fd);
	ledger_cause(cause, cause_len, "%s: %s", path, strerror(saved));
	errno = saved;
	return -1;
}

/* qsort order of journal seqs. */
static int
ledger_seq_cmp(const void *a, const void *b)
{
	uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;

	return x < y ? -1 : x > y;
}

/* Parse "journal-<digits>.olj"; 0 for anything else. */
static uint64_t
ledger_journal_seq(const char *name)
{
	const char *p;
	uint64_t seq = 0;

	if (strncmp(name, "journal-", 8) != 0)
		return 0;
	for (p = name + 8; *p >= '0' && *p <= '9'; p++) {
		if (seq > (UINT64_MAX - 9) / 10)
			return 0;
		seq = seq * 10 + (uint64_t)(*p - '0');
	}
	if (p == name + 8 || strcmp(p, ".olj") != 0)
		return 0;
	return seq;
}

/* The sorted seqs of the journal files present. */
static int
ledger_journal_list(const struct ledger *l, uint64_t **out, size_t *n_out, char *cause,
    size_t cause_len)
{
	DIR *dir;
	struct dirent *de;
	uint64_t *seqs = NULL, *ns, seq;
	size_t n = 0, cap = 0;

	if ((dir = opendir(l->jdir)) == NULL) {
		ledger_cause(cause, cause_len, "%s: %s", l->jdir, strerror(errno));
		return -1;
	}
	while ((de = readdir(dir)) != NULL) {
		if ((seq = ledger_journal_seq(de->d_name)) == 0)
			continue;
		if (n == cap) {
			cap = cap ? cap * 2 : 16;
			if ((ns = reallocarray(seqs, cap, sizeof *seqs)) == NULL) {
				free(seqs);
				closedir(dir);
				ledger_cause(cause, cause_len, "%s: out of memory", l->jdir);
				return -1;
			}
			seqs = ns;
		}
		seqs[n++] = seq;
	}
	closedir(dir);
	if (n > 0)
		qsort(seqs, n, sizeof *seqs, ledger_seq_cmp);
	*out = seqs;
	*n_out = n;
	return 0;
}

/* Forget the records written since the last fdatasync: they are durable now. */
static void
ledger_unsynced_clear(struct ledger *l)
{
	l->unsynced.len = 0;
	l->unsynced_n = 0;
	if (l->unsynced.cap > LEDGER_FLUSH_CHUNK)
		ledger_buf_free(&l->unsynced);
}

/*
 * Put the records not known durable back in front of the pending queue, to
 * be written again to a new file. -1 when out of memory (they are then only
 * in the abandoned file).
 */
static int
ledger_unsynced_requeue(struct ledger *l)
{
	struct ledger_buf b = { 0 };
	size_t n = l->unsynced_n;

	if (n == 0)
		return 0;
	if (ledger_buf_add(&b, l->unsynced.p, l->unsynced.len) == -1 ||
	    ledger_buf_add(&b, l->pend.p + l->pend_off, l->pend.len - l->pend_off) == -1) {
		ledger_buf_free(&b);
		log_error("usage ledger: out of memory keeping %zu records to write again; they "
		    "are only in a journal file whose fdatasync failed", n);
		ledger_unsynced_clear(l);
		return -1;
	}
	ledger_buf_free(&l->pend);
	l->pend = b;
	l->pend_off = 0;
	l->pend_n += n;
	ledger_unsynced_clear(l);
	return 0;
}

/*
 * fdatasync the current journal file. After a failure the kernel may have
 * dropped the dirty pages and a second fdatasync could succeed without them,
 * so the file is never synced again: it is closed (its records stay there,
 * counted once by rid) and those written since its last good fdatasync are
 * queued to be written to a new file, which is synced in turn.
 */
static int
ledger_sync(struct ledger *l, char *cause, size_t cause_len)
{
	char path[PATH_MAX];

	if (l->cur_fd == -1)
		return 0;
	if (fdatasync(l->cur_fd) == -1) {
		int saved = errno;
		ledger_journal_path(l, l->cur_seq, path, sizeof path);
		ledger_cause(cause, cause_len, "%s: fdatasync: %s", path, strerror(saved));
		log_error("usage ledger: %s: fdatasync: %s; the file is abandoned and its %zu "
		    "records not known to be on disk go to a new one", path, strerror(saved),
		    l->unsynced_n);
		close(l->cur_fd);
		l->cur_fd = -1;
		l->cur_day = LEDGER_DAY_UNSET;
		l->dirty = false;
		l->sync_failed = true;
		ledger_unsynced_requeue(l);
		errno = saved;
		return -1;
	}
	l->dirty = false;
	l->sync_failed = false;
	ledger_unsynced_clear(l);
	return 0;
}

/* Close the current journal file (fsynced unless the policy is "no"). */
static void
ledger_journal_finish(struct ledger *l)
{
	char cause[PATH_MAX + 64];

	if (l->cur_fd == -1)
		return;
	if (l->opt.fsync != LEDGER_FSYNC_NO && l->dirty && ledger_sync(l, cause, sizeof cause) == -1)
		return;     /* abandoned and closed; its records wait to be written again */
	close(l->cur_fd);
	l->cur_fd = -1;
	l->cur_day = LEDGER_DAY_UNSET;
	l->dirty = false;
}

/* Create the next journal file and make it current. */
static int
ledger_journal_create(struct ledger *l, char *cause, size_t cause_len)
{
	char path[PATH_MAX];
	uint64_t seq = l->last_seq + 1;
	int fd, saved;

	if (ledger_journal_path(l, seq, path, sizeof path) == -1) {
		ledger_cause(cause, cause_len, "%s: path too long", l->jdir);
		return -1;
	}
	fd = ledger_open_file(path, O_WRONLY | O_CREAT | O_EXCL | O_APPEND, cause, cause_len);
	if (fd == -1)
		return -1;
	if (l->opt.fsync != LEDGER_FSYNC_NO && ledger_fsync_dir(l->jdir) == -1) {
		saved = errno;
		close(fd);
		unlink(path);
		ledger_cause(cause, cause_len, "%s: fsync: %s", l->jdir, strerror(saved));
		return -1;
	}
	l->cur_fd = fd;
	l->cur_seq = seq;
	l->last_seq = seq;
	l->cur_size = 0;
	l->cur_day = LEDGER_DAY_UNSET;
	l->dirty = false;
	return 0;
}

/*
 * Write framed records with one write(2). A failed or short write is cut
 * back with ftruncate so no half record stays; if even that fails the file
 * is abandoned (its torn tail is ignored at the next open) and the next
 * write starts a new one.
 */
static int
ledger_write(struct ledger *l, const uint8_t *buf, size_t len, char *cause, size_t cause_len)
{
	char path[PATH_MAX];
	ssize_t n;
	int saved;

	if (l->cur_fd == -1 && ledger_journal_create(l, cause, cause_len) == -1)
		return -1;
	do
		n = write(l->cur_fd, buf, len);
	while (n == -1 && errno == EINTR);
	if (n >= 0 && (size_t)n == len) {
		l->cur_size += (off_t)len;
		l->dirty = true;
		if (l->opt.fsync != LEDGER_FSYNC_NO) {
			size_t k = 0, recs = 0;
			for (; k + LEDGER_HEADER <= len; k += LEDGER_HEADER + ledger_get32(buf + k))
				recs++;
			if (ledger_buf_add(&l->unsynced, buf, len) == 0)
				l->unsynced_n += recs;
			else
				log_error("usage ledger: out of memory remembering %zu records until "
				    "the next fdatasync", recs);
		}
		return 0;
	}
	saved = n == -1 ? errno : EIO;
	ledger_journal_path(l, l->cur_seq, path, sizeof path);
	if (n == -1)
		ledger_cause(cause, cause_len, "%s: write: %s", path, strerror(saved));
	else
		ledger_cause(cause, cause_len, "%s: short write (%zd of %zu bytes)", path, n, len);
	if (n > 0 && ftruncate(l->cur_fd, l->cur_size) == -1) {
		char sc[PATH_MAX + 64];
		log_error("usage ledger: %s: cannot cut a partial record back to %lld bytes: %s; "
		    "continuing in a new journal file", path, (long long)l->cur_size, strerror(errno));
		/* what it holds is synced now, or written again to the next file */
		if (l->opt.fsync != LEDGER_FSYNC_NO && l->dirty)
			ledger_sync(l, sc, sizeof sc);
		if (l->cur_fd != -1)
			close(l->cur_fd);
		l->cur_fd = -1;
		l->cur_day = LEDGER_DAY_UNSET;
		l->dirty = false;
	}
	errno = saved;
	return -1;
}

/* --- pending records ----------------------------------------------------- */

/* Keep a framed record that could not be written; -1 when the queue is full. */
static int
ledger_pend_push(struct ledger *l, const uint8_t *buf, size_t len)
{
	if (l->pend_n >= l->opt.pending_max || ledger_buf_add(&l->pend, buf, len) == -1) {
		l->dropped++;
		log_error("usage ledger: %zu records are waiting to be written; one more "
		    "(%zu bytes) is dropped from the journal (%llu so far), its usage is still "
		    "counted until restart", l->pend_n, len, (unsigned long long)l->dropped);
		return -1;
	}
	l->pend_n++;
	return 0;
}

/* Forget the written prefix of the pending queue. */
static void
ledger_pend_consume(struct ledger *l, size_t bytes, size_t n)
{
	l->pend_off += bytes;
	l->pend_n -= n;
	if (l->pend_n == 0) {
		l->pend.len = l->pend_off = 0;
		if (l->pend.cap > LEDGER_FLUSH_CHUNK)
			ledger_buf_free(&l->pend);
	} else if (l->pend_off > l->pend.len / 2) {
		memmove(l->pend.p, l->pend.p + l->pend_off, l->pend.len - l->pend_off);
		l->pend.len -= l->pend_off;
		l->pend_off = 0;
	}
}

/*
 * Write the pending records in order: the first alone (a cheap test while
 * the disk is still failing), the rest in chunks of whole records.
 */
static int
ledger_flush(struct ledger *l, char *cause, size_t cause_len)
{
	size_t total = l->pend_n, limit = 1;

	while (l->pend_n > 0) {
		const uint8_t *p = l->pend.p + l->pend_off;
		size_t avail = l->pend.len - l->pend_off, chunk = 0, n = 0;

		while (chunk < avail && n < limit) {
			size_t rl = LEDGER_HEADER + ledger_get32(p + chunk);
			if (n > 0 && chunk + rl > LEDGER_FLUSH_CHUNK)
				break;
			chunk += rl;
			n++;
		}
		if (ledger_write(l, p, chunk, cause, cause_len) == -1)
			return -1;
		ledger_pend_consume(l, chunk, n);
		limit = SIZE_MAX;
	}
	if (total > 0)
		log_info("usage ledger: wrote %zu records that had been waiting", total);
	return 0;
}

/* --- snapshot ------------------------------------------------------------ */

/* Encode the snapshot (header and body) into b. */
static int
ledger_snapshot_encode(const struct ledger *l, uint64_t upto, struct ledger_buf *b)
{
	static const uint8_t header[LEDGER_SNAP_HEADER] = LEDGER_SNAP_MAGIC;
	msgpack_packer pk;
	size_t body;

	ledger_buf_add(b, header, sizeof header);
	msgpack_packer_init(&pk, b, ledger_buf_write_cb);
	msgpack_pack_map(&pk, 5);
	ledger_pack_str(&pk, "v");
	msgpack_pack_uint32(&pk, LEDGER_VERSION);
	ledger_pack_str(&pk, "since");
	msgpack_pack_int64(&pk, l->since);
	ledger_pack_str(&pk, "upto");
	msgpack_pack_uint64(&pk, upto);
	ledger_pack_str(&pk, "rid");
	msgpack_pack_uint64(&pk, l->next_rid - 1);
	ledger_pack_str(&pk, "rows");
	msgpack_pack_array(&pk, l->n_rows);
	for (size_t i = 0; i < l->n_rows; i++) {
		const struct ledger_row *row = l->rows[i];
		msgpack_pack_array(&pk, row->user[0] != '\0' ? 13 : 12);
		msgpack_pack_int64(&pk, row->day);
		ledger_pack_str(&pk, row->model);
		ledger_pack_str(&pk, row->upstream);
		msgpack_pack_uint32(&pk, row->uid);
		if (row->tag[0] != '\0')
			ledger_pack_str(&pk, row->tag);
		else
			msgpack_pack_nil(&pk);
		msgpack_pack_uint64(&pk, row->c.requests);
		msgpack_pack_uint64(&pk, row->c.errors);
		msgpack_pack_uint64(&pk, row->c.prompt_tokens);
		msgpack_pack_uint64(&pk, row->c.completion_tokens);
		msgpack_pack_uint64(&pk, row->c.total_tokens);
		msgpack_pack_uint64(&pk, row->c.estimated);
		msgpack_pack_double(&pk, row->c.cost);
		if (row->user[0] != '\0')
			ledger_pack_str(&pk, row->user);
	}
	if (b->oom)
		return -1;
	body = b->len - LEDGER_SNAP_HEADER;
	if (body > UINT32_MAX)
		return -1;
	ledger_put32(b->p + 8, (uint32_t)body);
	ledger_put32(b->p + 12, ledger_crc32c(0, b->p + LEDGER_SNAP_HEADER, body));
	return 0;
}

/* Replace snapshot.olm atomically: temp file, fsync, rename, fsync of the directory. */
static int
ledger_snapshot_write(const struct ledger *l, uint64_t upto, char *cause, size_t cause_len)
{
	char tmp[PATH_MAX], path[PATH_MAX];
	struct ledger_buf b = { 0 };
	const char *what = tmp, *op = "open";
	size_t off = 0;
	ssize_t n;
	int fd = -1, saved;

	if (ledger_path(l, "snapshot.olm.tmp", tmp, sizeof tmp) == -1 ||
	    ledger_path(l, "snapshot.olm", path, sizeof path) == -1) {
		ledger_cause(cause, cause_len, "%s: path too long", l->dir);
		return -1;
	}
	if (ledger_snapshot_encode(l, upto, &b) == -1) {
		ledger_buf_free(&b);
		ledger_cause(cause, cause_len, "%s: out of memory encoding %zu rows", path, l->n_rows);
		return -1;
	}
	if ((fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_NOFOLLOW | O_CLOEXEC, 0640)) == -1)
		goto fail;
	op = "write";
	while (off < b.len) {
		n = write(fd, b.p + off, b.len - off);
		if (n == -1 && errno == EINTR)
			continue;
		if (n == -1)
			goto fail;
		if (n == 0) {
			errno = EIO;
			goto fail;
		}
		off += (size_t)n;
	}
	op = "fsync";
	if (fsync(fd) == -1)
		goto fail;
	op = "close";
	n = close(fd);
	fd = -1;
	if (n == -1)
		goto fail;
	op = "rename";
	if (rename(tmp, path) == -1)
		goto fail;
	ledger_buf_free(&b);
	/*
	 * The new snapshot is in effect from the rename on: the caller must not
	 * append to a journal file it covers, so this cannot fail any more. If
	 * the rename is lost to a power cut, the old snapshot and the journal
	 * files after it still give the same totals.
	 */
	if (ledger_fsync_dir(l->dir) == -1)
		log_warn("usage ledger: %s: fsync: %s", l->dir, strerror(errno));
	return 0;

fail:
	saved = errno;
	if (fd != -1)
		close(fd);
	unlink(tmp);
	ledger_buf_free(&b);
	ledger_cause(cause, cause_len, "%s: %s: %s", what, op, strerror(saved));
	errno = saved;
	return -1;
}

/* Decode one snapshot row and add it to the aggregates. */
static int
ledger_snapshot_row(struct ledger *l, struct mpr *r, char *model, char *upstream, char *tag,
    char *user)
{
	uint32_t n;
	int64_t day, uid, v[6];
	struct counters c;
	struct ledger_row *row;

	if (mpr_count(r, 'a', &n) == -1 || (n != 12 && n != 13) || mpr_int(r, &day) == -1 ||
	    day < 0 || day > ledger_day(LEDGER_TIME_MAX) ||
	    mpr_cstr(r, model) == -1 || mpr_cstr(r, upstream) == -1 ||
	    mpr_int(r, &uid) == -1 || uid < 0 || uid > UINT32_MAX)
		return -1;
	tag[0] = '\0';
	if (!mpr_nil(r) && mpr_cstr(r, tag) == -1)
		return -1;
	for (int i = 0; i < 6; i++)
		if (mpr_int(r, &v[i]) == -1 || v[i] < 0)
			return -1;
	memset(&c, 0, sizeof c);
	if (mpr_double(r, &c.cost) == -1 || !isfinite(c.cost) || c.cost < 0)
		return -1;
	c.requests = (uint64_t)v[0];
	c.errors = (uint64_t)v[1];
	c.prompt_tokens = (uint64_t)v[2];
	c.completion_tokens = (uint64_t)v[3];
	c.total_tokens = (uint64_t)v[4];
	c.estimated = (uint64_t)v[5];
	user[0] = '\0';
	if (n == 13 && !mpr_nil(r) && mpr_cstr(r, user) == -1)
		return -1;
	if (user[0] != '\0')
		uid = LEDGER_UID_NAMED;
	if ((row = ledger_row_get(l, day, model, upstream, (uint32_t)uid, user, tag)) == NULL)
		return -2;
	ledger_counters_add(&row->c, &c);
	return 0;
}

/* Parse a snapshot body into since, upto and the rows. */
static int
ledger_snapshot_parse(struct ledger *l, const uint8_t *body, size_t len, const char *path,
    char *cause, size_t cause_len)
{
	struct mpr r = { body, body + len };
	uint32_t n, klen, nrows;
	const char *k;
	int64_t v = -1, since = -1, upto = -1, rid = 0;
	bool have_rows = false;
	char *s;
	int rc;

	if ((s = malloc(4 * (LEDGER_STRING_MAX + 1))) == NULL) {
		ledger_cause(cause, cause_len, "%s: out of memory", path);
		return -1;
	}
	if (mpr_count(&r, 'm', &n) == -1)
		goto bad;
	for (uint32_t i = 0; i < n; i++) {
		if (mpr_str(&r, &k, &klen) == -1)
			goto bad;
		if (mpr_key_is(k, klen, "v")) {
			if (mpr_int(&r, &v) == -1 || v != LEDGER_VERSION)
				goto bad;
		} else if (mpr_key_is(k, klen, "since")) {
			if (mpr_int(&r, &since) == -1 || since < 0)
				goto bad;
		} else if (mpr_key_is(k, klen, "upto")) {
			if (mpr_int(&r, &upto) == -1 || upto < 0)
				goto bad;
		} else if (mpr_key_is(k, klen, "rid")) {
			if (mpr_int(&r, &rid) == -1 || rid < 0 || rid == INT64_MAX)
				goto bad;
		} else if (mpr_key_is(k, klen, "rows")) {
			if (have_rows || mpr_count(&r, 'a', &nrows) == -1)
				goto bad;
			have_rows = true;
			for (uint32_t j = 0; j < nrows; j++) {
				rc = ledger_snapshot_row(l, &r, s, s + LEDGER_STRING_MAX + 1,
				    s + 2 * (LEDGER_STRING_MAX + 1), s + 3 * (LEDGER_STRING_MAX + 1));
				if (rc == -2) {
					free(s);
					ledger_cause(cause, cause_len, "%s: out of memory", path);
					return -1;
				}
				if (rc == -1)
					goto bad;
			}
		} else if (mpr_skip(&r, LEDGER_DEPTH_MAX) == -1)
			goto bad;
	}
	if (r.p != r.end || v != LEDGER_VERSION || since < 0 || upto < 0 || !have_rows)
		goto bad;
	free(s);
	l->since = since;
	l->upto = (uint64_t)upto;
	l->next_rid = (uint64_t)rid + 1;
	return 0;

bad:
	free(s);
	ledger_cause(cause, cause_len, "%s: not a valid version %d snapshot (offset %zu); "
	    "move it aside to rebuild the totals from the journal files left", path,
	    LEDGER_VERSION, (size_t)(r.p - body));
	return -1;
}

/* Load snapshot.olm: 0 loaded, 1 missing, -1 unreadable or corrupt. */
static int
ledger_snapshot_load(struct ledger *l, char *cause, size_t cause_len)
{
	char path[PATH_MAX];
	uint8_t *buf;
	size_t len;
	uint32_t blen;
	int rc;

	if (ledger_path(l, "snapshot.olm", path, sizeof path) == -1) {
		ledger_cause(cause, cause_len, "%s: path too long", l->dir);
		return -1;
	}
	if (ledger_read_file(path, &buf, &len, cause, cause_len) == -1)
		return errno == ENOENT ? 1 : -1;
	if (len < LEDGER_SNAP_HEADER || memcmp(buf, LEDGER_SNAP_MAGIC, 8) != 0 ||
	    (blen = ledger_get32(buf + 8)) != len - LEDGER_SNAP_HEADER ||
	    ledger_crc32c(0, buf + LEDGER_SNAP_HEADER, blen) != ledger_get32(buf + 12)) {
		free(buf);
		ledger_cause(cause, cause_len, "%s: bad header, length or checksum; move it "
		    "aside to rebuild the totals from the journal files left", path);
		return -1;
	}
	rc = ledger_snapshot_parse(l, buf + LEDGER_SNAP_HEADER, blen, path, cause, cause_len);
	free(buf);
	return rc;
}

/* Delete folded journal files older than the retention period. */
static void
ledger_retain(struct ledger *l)
{
	uint64_t *seqs;
	size_t n;
	char path[PATH_MAX], cause[PATH_MAX + 64];
	struct stat st;
	time_t cutoff = time(NULL) - (time_t)l->opt.retention_days * 86400;
	size_t gone = 0;

	if (ledger_journal_list(l, &seqs, &n, cause, sizeof cause) == -1) {
		log_warn("usage ledger: %s", cause);
		return;
	}
	for (size_t i = 0; i < n && seqs[i] <= l->upto; i++) {
		if (l->cur_fd != -1 && seqs[i] == l->cur_seq)
			continue;
		if (ledger_journal_path(l, seqs[i], path, sizeof path) == -1 || stat(path, &st) == -1)
			continue;
		if (l->opt.retention_days > 0 && st.st_mtime >= cutoff)
			continue;
		if (unlink(path) == -1)
			log_warn("usage ledger: %s: %s", path, strerror(errno));
		else
			gone++;
	}
	free(seqs);
	if (gone > 0)
		log_debug("usage ledger: deleted %zu journal files past retention", gone);
}

/*
 * Fold everything counted into a new snapshot whose upto is the newest
 * journal file, then close that file so nothing more lands in it. Records
 * still pending are folded too when fold_pending (they are then dropped from
 * the queue: the snapshot holds them); otherwise their presence refuses.
 */
static int
ledger_compact(struct ledger *l, bool fold_pending, char *cause, size_t cause_len)
{
	char sc[PATH_MAX + 64];
	uint64_t upto = l->last_seq;

	if (l->pend_n > 0 && !fold_pending) {
		ledger_cause(cause, cause_len, "%zu records are waiting to be written", l->pend_n);
		return -1;
	}
	if (l->cur_fd != -1 && l->opt.fsync != LEDGER_FSYNC_NO && l->dirty &&
	    ledger_sync(l, sc, sizeof sc) == -1)
		log_error("usage ledger: %s", sc);
	if (ledger_snapshot_write(l, upto, cause, cause_len) == -1)
		return -1;
	l->upto = upto;
	ledger_journal_finish(l);
	if (l->pend_n > 0) {
		log_warn("usage ledger: %zu records that could not be written to the journal "
		    "are in the snapshot's totals, without per-request history", l->pend_n);
		ledger_pend_consume(l, l->pend.len - l->pend_off, l->pend_n);
	}
	ledger_unsynced_clear(l);       /* the snapshot holds them */
	l->sync_failed = false;
	ledger_retain(l);
	return 0;
}

/* --- open and close -------------------------------------------------------- */

struct ledger_replay {
	struct ledger *l;
	struct ledger_rids *seen;
	size_t counted;
	size_t twice;               /* records already counted from an earlier file */
	bool oom;
};

/* Count one replayed record, once per rid. */
static int
ledger_replay_cb(const struct ledger_decoded *d, void *arg)
{
	struct ledger_replay *rp = arg;
	int fresh = 1;

	if (d->rid != 0) {
		if ((fresh = ledger_rids_add(rp->seen, d->rid)) == -1) {
			rp->oom = true;
			return 1;
		}
		if (d->rid >= rp->l->next_rid)
			rp->l->next_rid = d->rid + 1;
	}
	if (!fresh) {
		rp->twice++;
		return 0;
	}
	if (ledger_count(rp->l, &d->r) == -1) {
		rp->oom = true;
		return 1;
	}
	rp->counted++;
	return 0;
}

/*
 * Replay journal file seq into the aggregates. The last file's torn tail is
 * cut, and it is reopened for appending when under the rotation size.
 */
static int
ledger_replay_file(struct ledger *l, struct ledger_rids *seen, uint64_t seq, bool last,
    int64_t *first_time, size_t *records, char *cause, size_t cause_len)
{
	char path[PATH_MAX];
	uint8_t *buf;
	size_t len;
	struct ledger_scan sc;
	struct ledger_replay rp = { l, seen, 0, 0, false };
	int fd;

	if (ledger_journal_path(l, seq, path, sizeof path) == -1) {
		ledger_cause(cause, cause_len, "%s: path too long", l->jdir);
		return -1;
	}
	if (ledger_read_file(path, &buf, &len, cause, cause_len) == -1)
		return -1;
	if (ledger_scan_buf(buf, len, path, false, ledger_replay_cb, &rp, &sc) != 0 || rp.oom) {
		free(buf);
		ledger_cause(cause, cause_len, "%s: out of memory", path);
		return -1;
	}
	free(buf);
	*records += rp.counted;
	if (rp.twice > 0)
		log_info("usage ledger: %s: %zu records written again after a failed fdatasync "
		    "were counted once", path, rp.twice);
	if (sc.first_time != -1 && (*first_time == -1 || sc.first_time < *first_time))
		*first_time = sc.first_time;
	if (sc.torn && !last)
		log_warn("usage ledger: %s: ignoring %zu bytes of a torn or corrupt tail at "
		    "offset %zu (not the last journal file: left as it is)", path,
		    len - sc.good_end, sc.good_end);
	if (!last)
		return 0;
	if (sc.torn) {
		if (truncate(path, (off_t)sc.good_end) == -1) {
			ledger_cause(cause, cause_len, "%s: cutting a torn tail at offset %zu: %s",
			    path, sc.good_end, strerror(errno));
			return -1;
		}
		log_warn("usage ledger: %s: cut %zu bytes of a torn or corrupt tail at offset %zu; "
		    "the %zu records before it are kept", path, len - sc.good_end, sc.good_end, sc.n);
	}
	if (sc.good_end >= l->opt.rotate_bytes)
		return 0;
	if ((fd = ledger_open_file(path, O_WRONLY | O_APPEND, cause, cause_len)) == -1)
		return -1;
	if (sc.torn && l->opt.fsync != LEDGER_FSYNC_NO)
		fdatasync(fd);
	l->cur_fd = fd;
	l->cur_seq = seq;
	l->cur_size = (off_t)sc.good_end;
	l->cur_day = sc.last_time != -1 ? ledger_day(sc.last_time) : LEDGER_DAY_UNSET;
	return 0;
}

/* Take the state directory's lock so that one process owns the ledger. */
static int
ledger_lock(struct ledger *l, char *cause, size_t cause_len)
{
	char path[PATH_MAX];

	if (ledger_path(l, "lock", path, sizeof path) == -1) {
		ledger_cause(cause, cause_len, "%s: path too long", l->dir);
		return -1;
	}
	if ((l->lock_fd = ledger_open_file(path, O_RDWR | O_CREAT, cause, cause_len)) == -1)
		return -1;
	if (flock(l->lock_fd, LOCK_EX | LOCK_NB) == -1) {
		if (errno == EWOULDBLOCK)
			ledger_cause(cause, cause_len, "%s: the ledger in %s is in use by another "
			    "process", path, l->dir);
		else
			ledger_cause(cause, cause_len, "%s: flock: %s", path, strerror(errno));
		return -1;
	}
	return 0;
}

/* Free everything; the files are left as they are. */
static void
ledger_free(struct ledger *l)
{
	if (l->cur_fd != -1)
		close(l->cur_fd);
	if (l->lock_fd != -1)
		close(l->lock_fd);
	ledger_rows_free(l);
	ledger_buf_free(&l->pend);
	ledger_buf_free(&l->unsynced);
	ledger_buf_free(&l->rec);
	ledger_buf_free(&l->batch);
	free(l->dir);
	free(l->jdir);
	free(l);
}

/* Open the ledger: lock, load the snapshot, replay newer journal files. */
struct ledger *
ledger_open(const char *state_dir, const struct ledger_options *opts, char *cause, size_t cause_len)
{
	struct ledger *l;
	char path[PATH_MAX];
	uint64_t *seqs = NULL;
	size_t n = 0, records = 0, replayed = 0;
	int64_t first_time = -1;
	struct ledger_rids seen = { 0 };
	int snap;

	if ((l = calloc(1, sizeof *l)) == NULL) {
		ledger_cause(cause, cause_len, "out of memory");
		return NULL;
	}
	l->cur_fd = l->lock_fd = -1;
	l->cur_day = LEDGER_DAY_UNSET;
	l->next_rid = 1;
	if (opts != NULL)
		l->opt = *opts;
	else
		ledger_options_default(&l->opt);
	if (l->opt.rotate_bytes == 0)
		l->opt.rotate_bytes = LEDGER_ROTATE_BYTES;
	if (l->opt.rotate_bytes > LEDGER_ROTATE_MAX)
		l->opt.rotate_bytes = LEDGER_ROTATE_MAX;
	if (l->opt.pending_max == 0)
		l->opt.pending_max = LEDGER_PENDING_MAX;
	if (l->opt.retention_days < 0)
		l->opt.retention_days = 0;
	if ((l->dir = strdup(state_dir)) == NULL ||
	    asprintf(&l->jdir, "%s/journal", state_dir) == -1) {
		l->jdir = NULL;
		ledger_cause(cause, cause_len, "out of memory");
		goto fail;
	}
	if (strlen(l->jdir) + 64 >= PATH_MAX) {
		ledger_cause(cause, cause_len, "%s: path too long", state_dir);
		goto fail;
	}
	if (ledger_mkdirs(l->dir, cause, cause_len) == -1 || ledger_lock(l, cause, cause_len) == -1 ||
	    ledger_mkdir(l->jdir, cause, cause_len) == -1)
		goto fail;
	if (ledger_path(l, "snapshot.olm.tmp", path, sizeof path) == 0)
		unlink(path);
	if ((snap = ledger_snapshot_load(l, cause, cause_len)) == -1)
		goto fail;
	if (ledger_journal_list(l, &seqs, &n, cause, cause_len) == -1)
		goto fail;
	if (snap == 1 && n == 0) {
		l->since = time(NULL);
		if (ledger_snapshot_write(l, 0, cause, cause_len) == -1)
			goto fail;
	}
	/* records the snapshot holds are not counted again, whichever file has them */
	if (l->next_rid > 1 && (seen.v = malloc(sizeof seen.v[0])) != NULL) {
		seen.v[0].lo = 1;
		seen.v[0].hi = l->next_rid - 1;
		seen.n = seen.cap = 1;
	}
	for (size_t i = 0; i < n; i++) {
		if (seqs[i] <= l->upto)
			continue;
		if (ledger_replay_file(l, &seen, seqs[i], i == n - 1, &first_time, &records,
		    cause, cause_len) == -1)
			goto fail;
		replayed++;
	}
	ledger_rids_free(&seen);
	if (snap == 1 && n > 0) {
		l->since = first_time != -1 ? first_time / 1000 : time(NULL);
		log_warn("usage ledger: %s/snapshot.olm is missing: totals rebuilt from the %zu "
		    "journal files present", l->dir, n);
	}
	l->last_seq = n > 0 && seqs[n - 1] > l->upto ? seqs[n - 1] : l->upto;
	free(seqs);
	ledger_retain(l);
	log_info("usage ledger: %s: %zu rows, %zu records replayed from %zu journal files",
	    l->dir, l->n_rows, records, replayed);
	return l;

fail:
	free(seqs);
	ledger_rids_free(&seen);
	ledger_free(l);
	return NULL;
}

/* Flush, fold everything into the snapshot and free. */
void
ledger_close(struct ledger *l)
{
	char cause[PATH_MAX + 128];

	if (l == NULL)
		return;
	ledger_commit_inside(l);
	if (l->pend_n > 0 && ledger_flush(l, cause, sizeof cause) == -1)
		log_error("usage ledger: %s", cause);
	if (ledger_compact(l, true, cause, sizeof cause) == -1) {
		log_error("usage ledger: snapshot at close: %s", cause);
		if (l->pend_n > 0)
			log_error("usage ledger: %zu records could be written neither to the journal "
			    "nor to the snapshot and are lost", l->pend_n);
		if (l->cur_fd != -1 && l->opt.fsync != LEDGER_FSYNC_NO &&
		    ledger_sync(l, cause, sizeof cause) == -1)
			log_error("usage ledger: %s", cause);
	}
	ledger_free(l);
}

/* --- appending ------------------------------------------------------------ */

/* Keep every framed record of buf (whole records, in order) in the pending queue. */
static void
ledger_pend_push_all(struct ledger *l, const uint8_t *buf, size_t len)
{
	size_t k, rl;

	for (k = 0; k + LEDGER_HEADER <= len; k += rl) {
		rl = LEDGER_HEADER + ledger_get32(buf + k);
		ledger_pend_push(l, buf + k, rl);
	}
}

/*
 * Count a record and add it to the batch the next ledger_commit writes. -1
 * with cause when it cannot be encoded (it is then not counted), or when
 * memory for the batch runs out (counted, and kept pending like a record
 * whose write failed).
 */
int
ledger_stage(struct ledger *l, const struct ledger_record *rec, char *cause, size_t cause_len)
{
	struct ledger_decoded d;
	int64_t day;

	if (ledger_sanitize(rec, &d) == -1) {
		ledger_cause(cause, cause_len, "record with an unknown status %d", (int)rec->status);
		errno = EINVAL;
		return -1;
	}
	if (ledger_encode(&l->rec, &d.r, l->next_rid) == -1) {
		ledger_cause(cause, cause_len, "out of memory encoding a record");
		errno = ENOMEM;
		return -1;
	}
	l->next_rid++;
	if (ledger_count(l, &d.r) == -1)
		log_error("usage ledger: out of memory counting a record; the totals are short "
		    "until restart, the journal is not");
	if (ledger_buf_add(&l->batch, l->rec.p, l->rec.len) == -1) {
		ledger_pend_push(l, l->rec.p, l->rec.len);
		ledger_cause(cause, cause_len, "out of memory keeping a record to write");
		errno = ENOMEM;
		return -1;
	}
	l->batch_n++;
	day = ledger_day(d.r.time_ms);
	if (l->n_seg > 0 && (l->seg[l->n_seg - 1].day == day || l->n_seg == LEDGER_BATCH_DAYS))
		l->seg[l->n_seg - 1].end = l->batch.len;
	else {
		l->seg[l->n_seg].end = l->batch.len;
		l->seg[l->n_seg].day = day;
		l->n_seg++;
	}
	return 0;
}

/* Records staged and not yet committed. */
size_t
ledger_staged(const struct ledger *l)
{
	return l->batch_n;
}

int
ledger_amend_error(struct ledger *l, uint64_t rid, const char *code)
{
	struct ledger_decoded *d;
	struct ledger_row *row;
	struct ledger_buf rest;
	size_t pos = l->pend_off, flen = 0;
	int rc = -1;

	if (rid == 0 || l->pend_n == 0 || (d = malloc(sizeof *d)) == NULL)
		return -1;
	while (pos < l->pend.len) {
		if (ledger_frame_at(l->pend.p + pos, l->pend.len - pos, d, &flen) != 1)
			break;      /* the queue holds whole framed records only */
		if (d->rid == rid)
			break;
		pos += flen;
		flen = 0;
	}
	if (pos >= l->pend.len || flen == 0 || d->rid != rid || d->r.status != LEDGER_DONE)
		goto out;
	d->r.status = LEDGER_ERROR;
	ledger_clean_string(code, d->error_code);
	d->r.error_code = d->error_code;
	if (ledger_encode(&l->rec, &d->r, rid) == -1)
		goto out;
	/* splice the new encoding in place of the old */
	memset(&rest, 0, sizeof rest);
	if (ledger_buf_add(&rest, l->pend.p + pos + flen, l->pend.len - pos - flen) == -1)
		goto out;
	l->pend.len = pos;
	if (ledger_buf_add(&l->pend, l->rec.p, l->rec.len) == -1 ||
	    ledger_buf_add(&l->pend, rest.p, rest.len) == -1) {
		/* cannot happen without memory: the buffer held more a moment ago */
		ledger_buf_free(&rest);
		goto out;
	}
	ledger_buf_free(&rest);
	if ((row = ledger_row_get(l, ledger_day(d->r.time_ms), d->r.model, d->r.upstream, d->r.uid,
	    d->r.user, d->r.tag)) != NULL)
		row->c.errors++;
	rc = 0;
out:
	free(d);
	return rc;
}

/* Write the batch: one write(2) per UTC day it spans (after any pending records). */
static int
ledger_commit_batch(struct ledger *l, char *cause, size_t cause_len)
{
	size_t off = 0, i;
	int rc = 0;

	for (i = 0; i < l->n_seg; i++) {
		const uint8_t *p = l->batch.p + off;
		size_t len = l->seg[i].end - off;
		int64_t day = l->seg[i].day;

		off = l->seg[i].end;
		if (rc == 0) {
			if (l->cur_fd != -1 && l->cur_size > 0 &&
			    ((size_t)l->cur_size + len > l->opt.rotate_bytes ||
			    (l->cur_day != LEDGER_DAY_UNSET && l->cur_day != day)))
				ledger_journal_finish(l);
			if ((l->pend_n > 0 && ledger_flush(l, cause, cause_len) == -1) ||
			    ledger_write(l, p, len, cause, cause_len) == -1)
				rc = -1;
			else if (l->cur_day == LEDGER_DAY_UNSET)
				l->cur_day = day;
		}
		if (rc == -1)
			ledger_pend_push_all(l, p, len);
	}
	l->batch.len = 0;
	l->batch_n = 0;
	l->n_seg = 0;
	if (l->batch.cap > LEDGER_FLUSH_CHUNK)
		ledger_buf_free(&l->batch);
	if (rc == -1)
		return -1;
	if (l->opt.fsync != LEDGER_FSYNC_ALWAYS && !l->sync_failed)
		return 0;
	if (ledger_sync(l, cause, cause_len) == 0)
		return 0;
	/* the file is abandoned: one attempt to make the records durable in a new one */
	{
		char again[PATH_MAX + 128];
		if (ledger_probe(l, again, sizeof again) == 0) {
			log_warn("usage ledger: the records are now in %s/journal-%016llu.olj",
			    l->jdir, (unsigned long long)l->cur_seq);
			return 0;
		}
		log_error("usage ledger: %s", again);
	}
	return -1;
}

/*
 * Commit the batch before the ledger does anything else with its files
 * (snapshot, reset, close); a failure is kept for the next ledger_commit.
 */
static void
ledger_commit_inside(struct ledger *l)
{
	char cause[sizeof l->batch_cause];

	if (l->batch_n == 0)
		return;
	if (ledger_commit_batch(l, cause, sizeof cause) == -1 && !l->batch_failed) {
		l->batch_failed = true;
		snprintf(l->batch_cause, sizeof l->batch_cause, "%s", cause);
	}
}

/*
 * Write every staged record with one write(2) (one per UTC day the batch
 * spans), after any pending ones; under "always" also fdatasync. 0 when all
 * of them are in the journal, -1 with cause when not: they are then pending,
 * as for ledger_append.
 */
int
ledger_commit(struct ledger *l, char *cause, size_t cause_len)
{
	int rc = l->batch_n > 0 ? ledger_commit_batch(l, cause, cause_len) : 0;

	if (l->batch_failed) {
		if (rc == 0)
			ledger_cause(cause, cause_len, "%s", l->batch_cause);
		l->batch_failed = false;
		rc = -1;
	}
	return rc;
}

/* Count a record, then write it (after any pending or staged ones) with one write(2). */
int
ledger_append(struct ledger *l, const struct ledger_record *rec, char *cause, size_t cause_len)
{
	if (ledger_stage(l, rec, cause, cause_len) == -1)
		return -1;
	return ledger_commit(l, cause, cause_len);
}

/*
 * Retry what failed: pending records first (after a failed fdatasync, those
 * of the abandoned file, written to a new one), then the fdatasync of the
 * file they went to.
 */
int
ledger_probe(struct ledger *l, char *cause, size_t cause_len)
{
	if (l->pend_n > 0 && ledger_flush(l, cause, cause_len) == -1)
		return -1;
	if (l->sync_failed || (l->dirty && l->opt.fsync == LEDGER_FSYNC_ALWAYS)) {
		if (l->cur_fd == -1 && ledger_journal_create(l, cause, cause_len) == -1)
			return -1;
		if (ledger_sync(l, cause, cause_len) == -1)
			return -1;
	}
	return 0;
}

/* Whether everything counted is also written. */
bool
ledger_healthy(const struct ledger *l)
{
	return l->pend_n == 0 && !l->sync_failed;
}

/* Records waiting in memory. */
size_t
ledger_pending(const struct ledger *l)
{
	return l->pend_n;
}

/* When counting began, in epoch seconds. */
int64_t
ledger_since(const struct ledger *l)
{
	return l->since;
}

/* Periodic work: retry, fsync under everysec, compact when a file closed or the day changed. */
void
ledger_tick(struct ledger *l, int64_t now_ms)
{
	char cause[PATH_MAX + 128];
	bool due;

	if (!ledger_healthy(l)) {
		if (ledger_probe(l, cause, sizeof cause) == 0)
			log_info("usage ledger: %s is writable again", l->jdir);
		return;
	}
	if (l->opt.fsync == LEDGER_FSYNC_EVERYSEC && l->dirty &&
	    ledger_sync(l, cause, sizeof cause) == -1) {
		/* the file is abandoned: its records go to a new one at once */
		if (ledger_probe(l, cause, sizeof cause) == 0)
			log_warn("usage ledger: the records are now in %s/journal-%016llu.olj",
			    l->jdir, (unsigned long long)l->cur_seq);
		else
			log_error("usage ledger: %s", cause);
		return;
	}
	due = (l->last_seq > l->upto && (l->cur_fd == -1 || l->cur_seq > l->upto + 1)) ||
	    (l->cur_fd != -1 && l->cur_size > 0 && l->cur_day != LEDGER_DAY_UNSET &&
	    l->cur_day != ledger_day(now_ms));
	/* staged records are counted and not yet written: compact once they are */
	if (!due || now_ms < l->compact_retry_ms || l->batch_n > 0)
		return;
	if (ledger_compact(l, false, cause, sizeof cause) == -1) {
		log_error("usage ledger: snapshot: %s (retrying in a minute)", cause);
		l->compact_retry_ms = now_ms + 60000;
	}
}

/* Compact now, folding in even records that cannot be written. */
int
ledger_snapshot(struct ledger *l, char *cause, size_t cause_len)
{
	char fc[PATH_MAX + 128];

	ledger_commit_inside(l);
	if (l->pend_n > 0 && ledger_flush(l, fc, sizeof fc) == -1)
		log_warn("usage ledger: %s", fc);
	return ledger_compact(l, true, cause, cause_len);
}

/* --- reset ------------------------------------------------------------------ */

/* Create archive/<UTC time>[-N] and return its path. */
static int
ledger_archive_dir(struct ledger *l, char *out, size_t len, char *cause, size_t cause_len)
{
	char base[PATH_MAX], stamp[32];
	time_t now = time(NULL);
	struct tm tm;
	int n;

	if (ledger_path(l, "archive", base, sizeof base) == -1) {
		ledger_cause(cause, cause_len, "%s: path too long", l->dir);
		return -1;
	}
	if (ledger_mkdir(base, cause, cause_len) == -1)
		return -1;
	gmtime_r(&now, &tm);
	strftime(stamp, sizeof stamp, "%Y%m%dT%H%M%SZ", &tm);
	for (int i = 1; i < 1000; i++) {
		if (i == 1)
			n = snprintf(out, len, "%s/%s", base, stamp);
		else
			n = snprintf(out, len, "%s/%s-%d", base, stamp, i);
		if (n < 0 || (size_t)n >= len) {
			ledger_cause(cause, cause_len, "%s: path too long", base);
			return -1;
		}
		if (mkdir(out, 0750) == 0)
			return 0;
		if (errno != EEXIST) {
			ledger_cause(cause, cause_len, "%s: %s", out, strerror(errno));
			return -1;
		}
	}
	ledger_cause(cause, cause_len, "%s: too many archives named %s", base, stamp);
	return -1;
}

/* Archive the ledger and start from zero. */
int
ledger_reset(struct ledger *l, char *cause, size_t cause_len)
{
	char arch[PATH_MAX], to[PATH_MAX], snap[PATH_MAX], base[PATH_MAX];
	int n;

	if (ledger_snapshot(l, cause, cause_len) == -1)
		return -1;
	if (ledger_archive_dir(l, arch, sizeof arch, cause, cause_len) == -1)
		return -1;
	n = snprintf(to, sizeof to, "%s/journal", arch);
	if (n < 0 || (size_t)n >= sizeof to || ledger_path(l, "snapshot.olm", snap, sizeof snap) == -1 ||
	    ledger_path(l, "archive", base, sizeof base) == -1) {
		ledger_cause(cause, cause_len, "%s: path too long", arch);
		return -1;
	}
	/*
	 * The snapshot just written holds every record, so the journal files
	 * can go first: a crash after this step still opens to the old totals
	 * (new files continue above upto), one after the next opens empty.
	 */
	if (rename(l->jdir, to) == -1) {
		ledger_cause(cause, cause_len, "rename %s to %s: %s", l->jdir, to, strerror(errno));
		return -1;
	}
	n = snprintf(to, sizeof to, "%s/snapshot.olm", arch);
	if (n < 0 || (size_t)n >= sizeof to || rename(snap, to) == -1) {
		int saved = n < 0 || (size_t)n >= sizeof to ? ENAMETOOLONG : errno;
		ledger_cause(cause, cause_len, "rename %s to %s: %s; the totals are unchanged",
		    snap, to, strerror(saved));
		if (mkdir(l->jdir, 0750) == -1 && errno != EEXIST)
			log_error("usage ledger: %s: %s", l->jdir, strerror(errno));
		return -1;
	}
	if (ledger_fsync_dir(arch) == -1 || ledger_fsync_dir(base) == -1 ||
	    ledger_fsync_dir(l->dir) == -1)
		log_warn("usage ledger: fsync after archiving to %s: %s", arch, strerror(errno));
	ledger_rows_free(l);
	l->since = time(NULL);
	l->upto = l->last_seq = 0;
	l->compact_retry_ms = 0;
	log_info("usage ledger: reset; the previous ledger is in %s", arch);
	if (ledger_mkdir(l->jdir, cause, cause_len) == -1)
		return -1;
	return ledger_snapshot_write(l, 0, cause, cause_len);
}

/* --- queries ---------------------------------------------------------------- */

enum ledger_dim { DIM_MODEL, DIM_USER, DIM_TAG, DIM_DAY };

/* qsort orders of rows along each dimension. */
static int
ledger_cmp_model(const void *a, const void *b)
{
	return strcmp((*(struct ledger_row *const *)a)->model, (*(struct ledger_row *const *)b)->model);
}

static int
ledger_cmp_user(const void *a, const void *b)
{
	const struct ledger_row *ra = *(struct ledger_row *const *)a, *rb = *(struct ledger_row *const *)b;

	if (ra->uid != rb->uid)
		return ra->uid < rb->uid ? -1 : 1;
	return strcmp(ra->user, rb->user);
}

static int
ledger_cmp_tag(const void *a, const void *b)
{
	return strcmp((*(struct ledger_row *const *)a)->tag, (*(struct ledger_row *const *)b)->tag);
}

static int
ledger_cmp_day(const void *a, const void *b)
{
	int64_t x = (*(struct ledger_row *const *)a)->day, y = (*(struct ledger_row *const *)b)->day;

	return x < y ? -1 : x > y;
}

/* YYYY-MM-DD of a day since the epoch (proleptic Gregorian). */
static void
ledger_day_format(int64_t day, char *out, size_t len)
{
	int64_t z = day + 719468, era, doe, yoe, y, doy, mp, d, m;

	era = (z >= 0 ? z : z - 146096) / 146097;
	doe = z - era * 146097;
	yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
	y = yoe + era * 400;
	doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
	mp = (5 * doy + 2) / 153;
	d = doy - (153 * mp + 2) / 5 + 1;
	m = mp < 10 ? mp + 3 : mp - 9;
	if (m <= 2)
		y++;
	snprintf(out, len, "%04lld-%02u-%02u", (long long)y, (unsigned)m % 100u, (unsigned)d % 100u);
}

/* Key of a row along a dimension. */
static const char *
ledger_row_key(const struct ledger_row *row, enum ledger_dim dim, char *buf, size_t len)
{
	switch (dim) {
	case DIM_MODEL:
		return row->model;
	case DIM_TAG:
		return row->tag;
	case DIM_USER:
		if (row->user[0] != '\0')
			return row->user;
		snprintf(buf, len, "%u", (unsigned)row->uid);
		return buf;
	case DIM_DAY:
		ledger_day_format(row->day, buf, len);
		return buf;
	}
	return "";
}

/* Group the selected rows (sorted copy in sel) along dim into map. */
static int
ledger_group(struct ledger_row **sel, size_t n, enum ledger_dim dim, struct counters_map *map)
{
	static int (*const cmp[])(const void *, const void *) = {
		ledger_cmp_model, ledger_cmp_user, ledger_cmp_tag, ledger_cmp_day
	};
	char kb[32];
	const char *key;

	map->entries = NULL;
	map->n = 0;
	if (n == 0)
		return 0;
	qsort(sel, n, sizeof *sel, cmp[dim]);
	if ((map->entries = calloc(n, sizeof *map->entries)) == NULL)
		return -1;
	for (size_t i = 0; i < n; i++) {
		key = ledger_row_key(sel[i], dim, kb, sizeof kb);
		if (map->n == 0 || strcmp(map->entries[map->n - 1].key, key) != 0) {
			if ((map->entries[map->n].key = strdup(key)) == NULL)
				return -1;
			map->n++;
		}
		ledger_counters_add(&map->entries[map->n - 1].c, &sel[i]->c);
	}
	return 0;
}

/* Free a counters map. */
static void
ledger_map_clear(struct counters_map *m)
{
	for (size_t i = 0; i < m->n; i++)
		free(m->entries[i].key);
	free(m->entries);
	m->entries = NULL;
	m->n = 0;
}

/* Free what a stats_result holds. */
void
ledger_stats_clear(struct stats_result *r)
{
	ledger_map_clear(&r->by_model);
	ledger_map_clear(&r->by_user);
	ledger_map_clear(&r->by_tag);
	ledger_map_clear(&r->by_day);
	ledger_map_clear(&r->by_node);
	for (size_t i = 0; i < r->n_budgets; i++) {
		free(r->budgets[i].scope);
		free(r->budgets[i].unit);
		free(r->budgets[i].period);
	}
	free(r->budgets);
	memset(r, 0, sizeof *r);
	r->max_budget = r->budget_left = NAN;
}

/* Answer a stats query from the rows. */
int
ledger_stats(struct ledger *l, const char *by, int64_t since, struct stats_result *out)
{
	return ledger_stats_scoped(l, by, since, -1, out);
}

/* The breakdowns a stats query fills: all but day for NULL; -1 (EINVAL) for an unknown one. */
static int
ledger_parse_by(const char *by, bool want[4])
{
	if (by == NULL)
		want[DIM_MODEL] = want[DIM_USER] = want[DIM_TAG] = true;
	else if (strcmp(by, "model") == 0)
		want[DIM_MODEL] = true;
	else if (strcmp(by, "user") == 0)
		want[DIM_USER] = true;
	else if (strcmp(by, "tag") == 0)
		want[DIM_TAG] = true;
	else if (strcmp(by, "day") == 0)
		want[DIM_DAY] = true;
	else {
		errno = EINVAL;
		return -1;
	}
	return 0;
}

/* A stats query whose total and breakdowns count only uid's rows (uid -1: everyone's). */
int
ledger_stats_scoped(struct ledger *l, const char *by, int64_t since, int64_t uid,
    struct stats_result *out)
{
	struct ledger_row **sel = NULL;
	struct counters_map *maps[4];
	bool want[4] = { false, false, false, false };
	int64_t since_day = since >= 0 ? ledger_day(since > INT64_MAX / 1000 ?
	    LEDGER_TIME_MAX : since * 1000) : INT64_MIN;
	size_t n = 0;

	memset(out, 0, sizeof *out);
	out->max_budget = out->budget_left = NAN;
	maps[DIM_MODEL] = &out->by_model;
	maps[DIM_USER] = &out->by_user;
	maps[DIM_TAG] = &out->by_tag;
	maps[DIM_DAY] = &out->by_day;
	if (ledger_parse_by(by, want) == -1)
		return -1;
	out->since = l->since;
	if (since >= 0 && since_day * 86400 > out->since)
		out->since = since_day * 86400;
	if (l->n_rows > 0 && (sel = calloc(l->n_rows, sizeof *sel)) == NULL)
		goto oom;
	for (size_t i = 0; i < l->n_rows; i++) {
		if (l->rows[i]->day < since_day || (uid >= 0 && (uint64_t)uid != l->rows[i]->uid))
			continue;
		ledger_counters_add(&out->total, &l->rows[i]->c);
		sel[n++] = l->rows[i];
	}
	for (int d = 0; d < 4; d++)
		if (want[d] && ledger_group(sel, n, (enum ledger_dim)d, maps[d]) == -1)
			goto oom;
	free(sel);
	return 0;

oom:
	free(sel);
	ledger_stats_clear(out);
	errno = ENOMEM;
	return -1;
}

/* Sum the rows in a scope, for budgets. */
void
ledger_usage(const struct ledger *l, const struct ledger_scope *s, int64_t from_day,
    struct counters *out)
{
	memset(out, 0, sizeof *out);
	for (size_t i = 0; i < l->n_rows; i++) {
		const struct ledger_row *row = l->rows[i];
		if (from_day >= 0 && row->day < from_day)
			continue;
		if (s != NULL && ((s->model != NULL && strcmp(s->model, row->model) != 0) ||
		    (s->upstream != NULL && strcmp(s->upstream, row->upstream) != 0) ||
		    (s->tag != NULL && strcmp(s->tag, row->tag) != 0) ||
		    (s->uid >= 0 && (uint64_t)s->uid != row->uid) ||
		    (s->user != NULL && strcmp(s->user, row->user) != 0)))
			continue;
		ledger_counters_add(out, &row->c);
	}
}

struct ledger_foreach {
	int64_t since_ms;
	ledger_record_cb cb;
	void *arg;
	struct ledger_rids seen;
};

/* Pass a record on when it is recent enough and not seen in an earlier file. */
static int
ledger_foreach_cb(const struct ledger_decoded *d, void *arg)
{
	struct ledger_foreach *f = arg;
	int fresh;

	if (d->rid != 0 && (fresh = ledger_rids_add(&f->seen, d->rid)) != 1)
		return fresh == -1 ? -1 : 0;
	if (d->r.time_ms < f->since_ms)
		return 0;
	return f->cb(&d->r, f->arg) != 0 ? 1 : 0;
}

/* Walk the retained per-request history. */
int
ledger_foreach_record(struct ledger *l, int64_t since_ms, ledger_record_cb cb, void *arg,
    char *cause, size_t cause_len)
{
	struct ledger_foreach f = { since_ms, cb, arg, { 0 } };
	struct ledger_scan sc;
	uint64_t *seqs;
	size_t n;
	char path[PATH_MAX];
	uint8_t *buf;
	size_t len;
	int rc = 0;

	if (ledger_journal_list(l, &seqs, &n, cause, cause_len) == -1)
		return -1;
	for (size_t i = 0; i < n && rc == 0; i++) {
		if (ledger_journal_path(l, seqs[i], path, sizeof path) == -1)
			continue;
		if (ledger_read_file(path, &buf, &len, cause, cause_len) == -1) {
			if (errno == ENOENT)
				continue;
			free(seqs);
			ledger_rids_free(&f.seen);
			return -1;
		}
		rc = ledger_scan_buf(buf, len, path, true, ledger_foreach_cb, &f, &sc);
		free(buf);
	}
	free(seqs);
	if (rc == 0 && l->pend_n > 0)
		rc = ledger_scan_buf(l->pend.p + l->pend_off, l->pend.len - l->pend_off, "pending",
		    true, ledger_foreach_cb, &f, &sc);
	ledger_rids_free(&f.seen);
	if (rc == -1) {
		ledger_cause(cause, cause_len, "out of memory");
		return -1;
	}
	return 0;
}

/* The records of one day from an instant on, for ledger_stats_exact. */
struct ledger_partial {
	int64_t since_ms;
	int64_t day;
	uint64_t day_requests;      /* every record of that day seen in the journal */
	struct ledger_row **rows;   /* one per record from since_ms on */
	size_t n;
	size_t cap;
	bool oom;
};

/* Keep a record of the partial day as a row of its own. */
static int
ledger_partial_cb(const struct ledger_record *r, void *arg)
{
	struct ledger_partial *p = arg;
	const char *model = r->model != NULL ? r->model : "";
	const char *upstream = r->upstream != NULL ? r->upstream : "";
	const char *tag = r->tag != NULL ? r->tag : "";
	const char *user = r->user != NULL ? r->user : "";
	size_t lm = strlen(model), lu = strlen(upstream), lt = strlen(tag), ln = strlen(user);
	struct ledger_row *row, **grown;

	if (ledger_day(r->time_ms) != p->day)
		return 0;
	p->day_requests++;
	if (r->time_ms < p->since_ms)
		return 0;
	if (p->n == p->cap) {
		size_t cap = p->cap == 0 ? 64 : p->cap * 2;
		if ((grown = realloc(p->rows, cap * sizeof *grown)) == NULL)
			goto oom;
		p->rows = grown;
		p->cap = cap;
	}
	if ((row = calloc(1, sizeof *row + lm + lu + lt + ln + 4)) == NULL)
		goto oom;
	row->day = p->day;
	row->uid = r->uid;
	row->model = row->strings;
	memcpy(row->model, model, lm + 1);
	row->upstream = row->model + lm + 1;
	memcpy(row->upstream, upstream, lu + 1);
	row->tag = row->upstream + lu + 1;
	memcpy(row->tag, tag, lt + 1);
	row->user = row->tag + lt + 1;
	memcpy(row->user, user, ln + 1);
	row->c.requests = 1;
	row->c.errors = r->status != LEDGER_DONE;
	row->c.prompt_tokens = r->prompt_tokens > 0 ? (uint64_t)r->prompt_tokens : 0;
	row->c.completion_tokens = r->completion_tokens > 0 ? (uint64_t)r->completion_tokens : 0;
	row->c.total_tokens = ledger_sat_add(row->c.prompt_tokens, row->c.completion_tokens);
	row->c.estimated = r->estimated;
	row->c.cost = isfinite(r->cost) && r->cost > 0 ? r->cost : 0;
	p->rows[p->n++] = row;
	return 0;
oom:
	p->oom = true;
	return 1;
}

/* Free the rows of a partial day. */
static void
ledger_partial_clear(struct ledger_partial *p)
{
	for (size_t i = 0; i < p->n; i++)
		free(p->rows[i]);
	free(p->rows);
	p->rows = NULL;
	p->n = p->cap = 0;
}

/* Answer a stats query from an exact instant: whole days from the rows, the first day's part from the journal; total and maps count only uid's (-1: all). */
int
ledger_stats_exact(struct ledger *l, const char *by, int64_t since, int64_t uid,
    struct stats_result *out)
{
	struct ledger_partial p;
	struct ledger_row **sel = NULL;
	struct counters_map *maps[4];
	bool want[4] = { false, false, false, false };
	uint64_t day_rows = 0;
	size_t n = 0;
	char cause[256];

	if (since < 0 || since <= l->since || since % 86400 == 0 || since > INT64_MAX / 1000)
		return ledger_stats_scoped(l, by, since <= l->since ? -1 : since, uid, out);
	if (ledger_parse_by(by, want) == -1)
		return -1;

	memset(&p, 0, sizeof p);
	p.since_ms = since * 1000;
	p.day = since / 86400;
	if (ledger_foreach_record(l, p.day * 86400 * 1000, ledger_partial_cb, &p, cause,
	    sizeof cause) == -1 || p.oom) {
		ledger_partial_clear(&p);
		if (p.oom)
			goto oom;
		log_warn("stats since %lld: %s; counting the whole day", (long long)since, cause);
		return ledger_stats_scoped(l, by, since, uid, out);
	}
	for (size_t i = 0; i < l->n_rows; i++)
		if (l->rows[i]->day == p.day)
			day_rows = ledger_sat_add(day_rows, l->rows[i]->c.requests);
	if (day_rows != p.day_requests) {
		/* Retention has removed some of that day's records: whole days it is. */
		ledger_partial_clear(&p);
		return ledger_stats_scoped(l, by, since, uid, out);
	}

	memset(out, 0, sizeof *out);
	out->max_budget = out->budget_left = NAN;
	out->since = since;
	maps[DIM_MODEL] = &out->by_model;
	maps[DIM_USER] = &out->by_user;
	maps[DIM_TAG] = &out->by_tag;
	maps[DIM_DAY] = &out->by_day;
	if (l->n_rows + p.n > 0 && (sel = calloc(l->n_rows + p.n, sizeof *sel)) == NULL)
		goto oom;
	for (size_t i = 0; i < l->n_rows; i++) {
		if (l->rows[i]->day <= p.day || (uid >= 0 && (uint64_t)uid != l->rows[i]->uid))
			continue;
		ledger_counters_add(&out->total, &l->rows[i]->c);
		sel[n++] = l->rows[i];
	}
	for (size_t i = 0; i < p.n; i++) {
		if (uid >= 0 && (uint64_t)uid != p.rows[i]->uid)
			continue;
		ledger_counters_add(&out->total, &p.rows[i]->c);
		sel[n++] = p.rows[i];
	}
	for (int d = 0; d < 4; d++)
		if (want[d] && ledger_group(sel, n, (enum ledger_dim)d, maps[d]) == -1)
			goto oom;
	free(sel);
	ledger_partial_clear(&p);
	return 0;

oom:
	free(sel);
	ledger_partial_clear(&p);
	ledger_stats_clear(out);
	errno = ENOMEM;
	return -1;
}

/* Offsets of the valid records of one buffer, collected by a forward scan. */
struct ledger_offsets {
	struct ledger_scan *sc;
	size_t *off;
	size_t n, cap;
};

static int
ledger_offsets_cb(const struct ledger_decoded *d, void *arg)
{
	struct ledger_offsets *o = arg;
	size_t *grown;

	(void)d;
	if (o->n == o->cap) {
		o->cap = o->cap ? o->cap * 2 : 256;
		if ((grown = reallocarray(o->off, o->cap, sizeof *grown)) == NULL)
			return -1;
		o->off = grown;
	}
	o->off[o->n++] = o->sc->at;
	return 0;
}

/*
 * Hand the records of one buffer to cb from the last back: 0 to go on to
 * older ones, 1 when stopped (by cb or by a record older than since_ms), -1
 * when out of memory.
 */
static int
ledger_buf_newest(const uint8_t *buf, size_t len, int64_t since_ms, int64_t until_ms,
    struct ledger_rids *seen, ledger_record_cb cb, void *arg)
{
	struct ledger_scan sc;
	struct ledger_offsets o = { &sc, NULL, 0, 0 };
	struct ledger_decoded *d;
	size_t flen;
	int rc = 0, fresh;

	if (ledger_scan_buf(buf, len, "journal", true, ledger_offsets_cb, &o, &sc) != 0 ||
	    (d = malloc(sizeof *d)) == NULL) {
		free(o.off);
		return -1;
	}
	for (size_t i = o.n; i-- > 0 && rc == 0;) {
		if (ledger_frame_at(buf + o.off[i], len - o.off[i], d, &flen) != 1)
			continue;
		if (d->rid != 0 && (fresh = ledger_rids_add(seen, d->rid)) != 1) {
			rc = fresh;     /* 0: a copy of a record already passed on */
			continue;
		}
		if (since_ms >= 0 && d->r.time_ms < since_ms)
			rc = 1;
		else if (until_ms < 0 || d->r.time_ms < until_ms)
			rc = cb(&d->r, arg) != 0 ? 1 : 0;
	}
	free(d);
	free(o.off);
	return rc;
}

/* Walk the retained per-request history from the newest record back. */
int
ledger_foreach_record_newest(struct ledger *l, int64_t since_ms, int64_t until_ms,
    size_t max_bytes, ledger_record_cb cb, void *arg, bool *truncated,
    char *cause, size_t cause_len)
{
	struct ledger_rids seen = { 0 };
	struct stat st;
	uint64_t *seqs;
	size_t n, read_bytes = 0, len;
	char path[PATH_MAX];
	uint8_t *buf;
	int rc = 0;

	*truncated = false;
	if (l->pend_n > 0)
		rc = ledger_buf_newest(l->pend.p + l->pend_off, l->pend.len - l->pend_off,
		    since_ms, until_ms, &seen, cb, arg);
	if (rc != 0)
		goto out;
	if (ledger_journal_list(l, &seqs, &n, cause, cause_len) == -1) {
		ledger_rids_free(&seen);
		return -1;
	}
	for (size_t i = n; i-- > 0 && rc == 0;) {
		if (ledger_journal_path(l, seqs[i], path, sizeof path) == -1)
			continue;
		if (stat(path, &st) == -1)
			continue;
		if (max_bytes > 0 && read_bytes > 0 && read_bytes + (size_t)st.st_size > max_bytes) {
			*truncated = true;
			break;
		}
		if (ledger_read_file(path, &buf, &len, cause, cause_len) == -1) {
			if (errno == ENOENT)
				continue;
			free(seqs);
			ledger_rids_free(&seen);
			return -1;
		}
		read_bytes += len;
		rc = ledger_buf_newest(buf, len, since_ms, until_ms, &seen, cb, arg);
		free(buf);
	}
	free(seqs);
out:
	ledger_rids_free(&seen);
	if (rc == -1) {
		ledger_cause(cause, cause_len, "out of memory");
		return -1;
	}
	return 0;
}

struct ledger_after {
	uint64_t after_rid;
	uint64_t top;               /* highest rid passed so far */
	uint64_t seq;               /* file being scanned */
	uint64_t *from_seq;
	ledger_numbered_cb cb;
	void *arg;
};

/* Pass a numbered record above the position on, each rid once and in ascending order. */
static int
ledger_after_cb(const struct ledger_decoded *d, void *arg)
{
	struct ledger_after *a = arg;

	if (d->rid == 0 || d->rid <= a->after_rid || d->rid <= a->top)
		return 0;
	a->top = d->rid;
	*a->from_seq = a->seq;
	return a->cb(&d->r, d->rid, a->arg) != 0 ? 1 : 0;
}

/* Walk the written records numbered above after_rid, from journal file *from_seq on. */
int
ledger_foreach_after(struct ledger *l, uint64_t after_rid, uint64_t *from_seq,
    ledger_numbered_cb cb, void *arg, char *cause, size_t cause_len)
{
	struct ledger_after a = { after_rid, after_rid, 0, from_seq, cb, arg };
	struct ledger_scan sc;
	uint64_t *seqs;
	size_t n;
	char path[PATH_MAX];
	uint8_t *buf;
	size_t len;
	int rc = 0;

	if (ledger_journal_list(l, &seqs, &n, cause, cause_len) == -1)
		return -1;
	for (size_t i = 0; i < n && rc == 0; i++) {
		if (seqs[i] < *from_seq || ledger_journal_path(l, seqs[i], path, sizeof path) == -1)
			continue;
		if (ledger_read_file(path, &buf, &len, cause, cause_len) == -1) {
			if (errno == ENOENT)
				continue;
			free(seqs);
			return -1;
		}
		a.seq = seqs[i];
		rc = ledger_scan_buf(buf, len, path, true, ledger_after_cb, &a, &sc);
		free(buf);
	}
	free(seqs);
	if (rc == -1) {
		ledger_cause(cause, cause_len, "out of memory");
		return -1;
	}
	return 0;
}

/* State of one ledger_read_after: the cursor and who is told. */
struct ledger_reader {
	uint64_t after_rid;
	struct ledger_cursor *cur;
	ledger_numbered_cb cb;
	void *arg;
};

/* Pass one record of a journal tail on, once per rid. */
static int
ledger_reader_cb(const struct ledger_decoded *d, void *arg)
{
	struct ledger_reader *rd = arg;

	if (d->rid == 0 || d->rid <= rd->after_rid || d->rid <= rd->cur->top)
		return 0;
	rd->cur->top = d->rid;
	return rd->cb(&d->r, d->rid, rd->arg) != 0 ? 1 : 0;
}

#define LEDGER_READ_CHUNK	((size_t)1 << 20)

/* Read file seq from cur->offset on in chunks; 1 when cb stopped, 0 at its end, -1 on error. */
static int
ledger_read_tail(const char *path, struct ledger_reader *rd, char *cause, size_t cause_len)
{
	struct ledger_cursor *cur = rd->cur;
	struct ledger_scan sc;
	struct stat st;
	uint8_t *buf = NULL;
	size_t cap = LEDGER_READ_CHUNK, len;
	ssize_t n;
	int fd, rc = 0, saved;

	if ((fd = ledger_open_file(path, O_RDONLY, cause, cause_len)) == -1)
		return -1;
	if (fstat(fd, &st) == -1)
		goto fail;
	if ((uint64_t)st.st_size < cur->offset)
		cur->offset = 0;        /* not the file read before */
	while (rc == 0 && cur->offset < (uint64_t)st.st_size) {
		if (buf == NULL && (buf = malloc(cap)) == NULL)
			goto fail;
		n = pread(fd, buf, cap, (off_t)cur->offset);
		if (n == -1 && errno == EINTR)
			continue;
		if (n == -1)
			goto fail;
		if (n == 0)
			break;
		len = (size_t)n;
		if ((rc = ledger_scan_buf(buf, len, path, true, ledger_reader_cb, rd, &sc)) == -1) {
			errno = ENOMEM;
			goto fail;
		}
		if (sc.good_end > 0) {
			cur->offset += sc.good_end;
			continue;
		}
		if (len < cap)
			break;              /* a torn record at the end: wait for the rest */
		free(buf);              /* a record longer than the chunk: read more at once */
		buf = NULL;
		cap *= 2;
		if (cap > ((size_t)LEDGER_RECORD_MAX + LEDGER_HEADER) * 4)
			break;
	}
	free(buf);
	close(fd);
	return rc;
fail:
	saved = errno;
	free(buf);
	close(fd);
	ledger_cause(cause, cause_len, "%s: %s", path, strerror(saved));
	errno = saved;
	return -1;
}

int
ledger_read_after(struct ledger *l, uint64_t after_rid, struct ledger_cursor *cur,
    ledger_numbered_cb cb, void *arg, char *cause, size_t cause_len)
{
	struct ledger_reader rd = { after_rid, cur, cb, arg };
	uint64_t *seqs;
	size_t n, i;
	char path[PATH_MAX];
	int rc = 0;

	if (ledger_journal_list(l, &seqs, &n, cause, cause_len) == -1)
		return -1;
	if (n > 0 && seqs[n - 1] < cur->seq) {
		cur->seq = 0;           /* a reset numbers the files from 1 again */
		cur->offset = 0;
		cur->top = 0;
	}
	for (i = 0; i < n && rc == 0; i++) {
		if (seqs[i] < cur->seq || ledger_journal_path(l, seqs[i], path, sizeof path) == -1)
			continue;
		if (seqs[i] != cur->seq) {
			cur->seq = seqs[i];
			cur->offset = 0;
		}
		if ((rc = ledger_read_tail(path, &rd, cause, cause_len)) == -1 && errno == ENOENT)
			rc = 0;             /* deleted meanwhile (retention) */
	}
	free(seqs);
	return rc == -1 ? -1 : 0;
}

/* The number of the last record appended, 0 before the first. */
uint64_t
ledger_last_rid(const struct ledger *l)
{
	return l->next_rid - 1;
}
