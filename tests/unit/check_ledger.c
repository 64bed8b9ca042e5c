/* Unit tests for the usage ledger: durability, recovery, queries. */
#include "config.h"

#include <sys/stat.h>
#include <sys/types.h>
#include <sys/wait.h>

#include <check.h>
#include <dirent.h>
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <msgpack.h>

#include "daemon/ledger.h"
#include "daemon/log.h"

#define DAY_MS	INT64_C(86400000)

static char rundir[180];        /* this run's temp dir, removed by main */
static char tdir[200];          /* this test's temp dir in it */
static char sdir[256];          /* the state dir in it */
static char flag[256];          /* the failwrite shim's flag file */
static int64_t base_ms;         /* start of tomorrow (UTC) */

/* --- fixtures and helpers --------------------------------------------------- */

static void
setup(void)
{
	char prefix[sizeof sdir + 2];

	snprintf(tdir, sizeof tdir, "%s/t-XXXXXX", rundir);
	ck_assert_ptr_nonnull(mkdtemp(tdir));
	snprintf(sdir, sizeof sdir, "%s/state", tdir);
	snprintf(flag, sizeof flag, "%s/failflag", tdir);
	snprintf(prefix, sizeof prefix, "%s/", sdir);
	setenv("OLLM_FAILWRITE_FLAG", flag, 1);
	setenv("OLLM_FAILWRITE_PREFIX", prefix, 1);
	base_ms = (ledger_day((int64_t)time(NULL) * 1000) + 1) * DAY_MS;
	log_set_level(LOG_LEVEL_WARN);
}

static int
rm_cb(const char *path, const struct stat *st, int type, struct FTW *ftw)
{
	return remove(path);
}

static void
teardown(void)
{
	unlink(flag);
	nftw(tdir, rm_cb, 16, FTW_DEPTH | FTW_PHYS);
}

/* Make the shim fail calls on the state dir's files in a mode, or stop ("" mode stops). */
static void
fail_writes(const char *mode)
{
	FILE *f;

	if (*mode == '\0') {
		ck_assert_int_eq(unlink(flag), 0);
		return;
	}
	ck_assert_ptr_nonnull(f = fopen(flag, "w"));
	fputs(mode, f);
	ck_assert_int_eq(fclose(f), 0);
}

static struct ledger_options
opts(enum ledger_fsync fs, int retention, size_t rotate)
{
	struct ledger_options o;

	ledger_options_default(&o);
	o.fsync = fs;
	o.retention_days = retention;
	o.rotate_bytes = rotate;
	return o;
}

static struct ledger *
open_ok(const char *dir, const struct ledger_options *o)
{
	char cause[512] = "";
	struct ledger *l = ledger_open(dir, o, cause, sizeof cause);

	ck_assert_msg(l != NULL, "ledger_open: %s", cause);
	return l;
}

/* Deterministic record number i: times every 7 minutes from base_ms, varied keys. */
static char tagbuf[8][16];

static void
rec_make(struct ledger_record *r, int i)
{
	static const char *models[] = { "qwen", "llama", "mistral" };

	memset(r, 0, sizeof *r);
	r->time_ms = base_ms + (int64_t)i * 7 * 60 * 1000;
	r->uid = (uint32_t)(i % 3 == 0 ? 0 : i % 3 == 1 ? 1000 : 65534);
	snprintf(tagbuf[i % 4], sizeof tagbuf[0], "app%d", i % 4);
	r->tag = i % 4 == 0 ? NULL : tagbuf[i % 4];
	r->model = models[i % 3];
	r->upstream = i % 2 ? "local" : "remote";
	r->prompt_tokens = 3 * i + 1;
	r->completion_tokens = 2 * i;
	r->estimated = i % 5 == 0;
	r->cost = (double)i / 64.0;         /* exact binary fractions: sums are exact */
	r->status = i % 7 == 3 ? LEDGER_ERROR : i % 7 == 5 ? LEDGER_CANCELLED : LEDGER_DONE;
	r->error_code = r->status == LEDGER_ERROR ? "upstream_error" :
	    r->status == LEDGER_CANCELLED ? "cancelled" : NULL;
	r->latency_ms = 100 + i;
}

/* Counters the records a..b-1 (minus skip, -1 none) add up to. */
static struct counters
expect(int a, int b, int skip)
{
	struct counters c;
	struct ledger_record r;

	memset(&c, 0, sizeof c);
	for (int i = a; i < b; i++) {
		if (i == skip)
			continue;
		rec_make(&r, i);
		c.requests++;
		c.errors += r.status != LEDGER_DONE;
		c.prompt_tokens += (uint64_t)r.prompt_tokens;
		c.completion_tokens += (uint64_t)r.completion_tokens;
		c.total_tokens += (uint64_t)(r.prompt_tokens + r.completion_tokens);
		c.estimated += r.estimated;
		c.cost += r.cost;
	}
	return c;
}

static void
counters_eq(const struct counters *x, const struct counters *y)
{
	ck_assert_uint_eq(x->requests, y->requests);
	ck_assert_uint_eq(x->errors, y->errors);
	ck_assert_uint_eq(x->prompt_tokens, y->prompt_tokens);
	ck_assert_uint_eq(x->completion_tokens, y->completion_tokens);
	ck_assert_uint_eq(x->total_tokens, y->total_tokens);
	ck_assert_uint_eq(x->estimated, y->estimated);
	ck_assert_msg(x->cost == y->cost, "cost %.17g != %.17g", x->cost, y->cost);
}

static void
maps_eq(const struct counters_map *x, const struct counters_map *y)
{
	ck_assert_uint_eq(x->n, y->n);
	for (size_t i = 0; i < x->n; i++) {
		ck_assert_str_eq(x->entries[i].key, y->entries[i].key);
		counters_eq(&x->entries[i].c, &y->entries[i].c);
	}
}

static void
stats_eq(const struct stats_result *x, const struct stats_result *y)
{
	counters_eq(&x->total, &y->total);
	maps_eq(&x->by_model, &y->by_model);
	maps_eq(&x->by_user, &y->by_user);
	maps_eq(&x->by_tag, &y->by_tag);
	maps_eq(&x->by_day, &y->by_day);
}

static struct counters
total(struct ledger *l)
{
	struct stats_result s;
	struct counters c;

	ck_assert_int_eq(ledger_stats(l, "model", -1, &s), 0);
	c = s.total;
	ledger_stats_clear(&s);
	return c;
}

static void
total_is(struct ledger *l, int a, int b, int skip)
{
	struct counters want = expect(a, b, skip), got = total(l);

	counters_eq(&got, &want);
}

static void
append_ok(struct ledger *l, int i)
{
	struct ledger_record r;
	char cause[512] = "";

	rec_make(&r, i);
	ck_assert_msg(ledger_append(l, &r, cause, sizeof cause) == 0, "append %d: %s", i, cause);
}

static void
append_fails(struct ledger *l, int i, const char *want)
{
	struct ledger_record r;
	char cause[512] = "";

	rec_make(&r, i);
	ck_assert_int_eq(ledger_append(l, &r, cause, sizeof cause), -1);
	ck_assert_msg(strstr(cause, want) != NULL, "cause \"%s\" lacks \"%s\"", cause, want);
	ck_assert_msg(strstr(cause, sdir) != NULL, "cause \"%s\" names no file", cause);
}

/* In a child: open, append records a..b-1 (ticking when asked), then die without closing. */
static void
crash_after(const struct ledger_options *o, int a, int b, bool tick)
{
	pid_t pid = fork();
	int status;

	ck_assert_int_ne(pid, -1);
	if (pid == 0) {
		char cause[512];
		struct ledger *l = ledger_open(sdir, o, cause, sizeof cause);
		if (l == NULL)
			_exit(2);
		for (int i = a; i < b; i++) {
			struct ledger_record r;
			rec_make(&r, i);
			if (ledger_append(l, &r, cause, sizeof cause) == -1)
				_exit(3);
			if (tick)
				ledger_tick(l, r.time_ms);
		}
		_exit(0);
	}
	ck_assert_int_eq(waitpid(pid, &status, 0), pid);
	ck_assert_msg(WIFEXITED(status) && WEXITSTATUS(status) == 0, "child status %d", status);
}

static void
journal_path(uint64_t seq, char *out, size_t len)
{
	snprintf(out, len, "%s/journal/journal-%016llu.olj", sdir, (unsigned long long)seq);
}

static off_t
file_size(const char *path)
{
	struct stat st;

	ck_assert_msg(stat(path, &st) == 0, "%s: %s", path, strerror(errno));
	return st.st_size;
}

static bool
file_exists(const char *path)
{
	return access(path, F_OK) == 0;
}

static uint8_t *
file_read(const char *path, size_t *len)
{
	FILE *f = fopen(path, "rb");
	uint8_t *buf;
	long n;

	ck_assert_ptr_nonnull(f);
	fseek(f, 0, SEEK_END);
	n = ftell(f);
	rewind(f);
	buf = malloc((size_t)n + 1);
	ck_assert_ptr_nonnull(buf);
	ck_assert_uint_eq(fread(buf, 1, (size_t)n, f), (size_t)n);
	fclose(f);
	*len = (size_t)n;
	return buf;
}

static void
file_write(const char *path, const void *buf, size_t len, const char *mode)
{
	FILE *f = fopen(path, mode);

	ck_assert_ptr_nonnull(f);
	ck_assert_uint_eq(fwrite(buf, 1, len, f), len);
	ck_assert_int_eq(fclose(f), 0);
}

static size_t
journal_count(void)
{
	char path[PATH_MAX];
	DIR *d;
	struct dirent *de;
	size_t n = 0;

	snprintf(path, sizeof path, "%s/journal", sdir);
	ck_assert_ptr_nonnull(d = opendir(path));
	while ((de = readdir(d)) != NULL)
		n += strncmp(de->d_name, "journal-", 8) == 0;
	closedir(d);
	return n;
}

/* Offset of record k (0-based) in a journal buffer. */
static size_t
record_offset(const uint8_t *buf, size_t len, int k)
{
	size_t off = 0;

	for (int i = 0; i < k; i++) {
		ck_assert_uint_le(off + 8, len);
		off += 8 + ((size_t)buf[off] << 24 | (size_t)buf[off + 1] << 16 |
		    (size_t)buf[off + 2] << 8 | buf[off + 3]);
	}
	return off;
}

/* Run open with stderr captured into log; returns the ledger. */
static struct ledger *
open_capture(const struct ledger_options *o, char *log, size_t log_len)
{
	char path[PATH_MAX];
	struct ledger *l;
	int saved, fd;
	size_t n;
	uint8_t *buf;

	snprintf(path, sizeof path, "%s/stderr.txt", tdir);
	fflush(stderr);
	saved = dup(2);
	ck_assert_int_ne(fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0600), -1);
	dup2(fd, 2);
	close(fd);
	l = open_ok(sdir, o);
	fflush(stderr);
	dup2(saved, 2);
	close(saved);
	buf = file_read(path, &n);
	snprintf(log, log_len, "%.*s", (int)n, (const char *)buf);
	free(buf);
	return l;
}

struct collect {
	int n;
	int64_t last_time;
	bool ordered;
	int stop_at;
};

static int
collect_cb(const struct ledger_record *r, void *arg)
{
	struct collect *c = arg;

	if (r->time_ms < c->last_time)
		c->ordered = false;
	c->last_time = r->time_ms;
	c->n++;
	return c->stop_at > 0 && c->n == c->stop_at;
}

static struct collect
history(struct ledger *l, int64_t since_ms)
{
	struct collect c = { 0, INT64_MIN, true, 0 };
	char cause[512];

	ck_assert_int_eq(ledger_foreach_record(l, since_ms, collect_cb, &c, cause, sizeof cause), 0);
	return c;
}

/* --- tests --------------------------------------------------------------------- */

/* The CRC32C one byte at a time, as the journal format defines it. */
static uint32_t
crc32c_bytewise(const uint8_t *p, size_t len)
{
	uint32_t crc = ~0u;

	while (len-- > 0) {
		crc ^= *p++;
		for (int k = 0; k < 8; k++)
			crc = (crc & 1) ? (crc >> 1) ^ 0x82f63b78u : crc >> 1;
	}
	return ~crc;
}

/* Eight bytes at a time gives the bytewise CRC at every length, alignment and split. */
START_TEST(test_crc32c_sliced)
{
	uint8_t buf[300];

	for (size_t i = 0; i < sizeof buf; i++)
		buf[i] = (uint8_t)(i * 131 + 7 + (i >> 3));
	for (size_t off = 0; off < 9; off++)
		for (size_t len = 0; len + off <= sizeof buf; len++) {
			uint32_t want = crc32c_bytewise(buf + off, len);
			size_t cut = len / 3;
			ck_assert_uint_eq(ledger_crc32c(0, buf + off, len), want);
			ck_assert_uint_eq(ledger_crc32c(ledger_crc32c(0, buf + off, cut), buf + off + cut,
			    len - cut), want);
		}
}
END_TEST

START_TEST(test_basics)
{
	enum ledger_fsync f;
	const char *check = "123456789";

	ck_assert_uint_eq(ledger_crc32c(0, check, 9), 0xe3069283u);
	ck_assert_uint_eq(ledger_crc32c(ledger_crc32c(0, check, 4), check + 4, 5), 0xe3069283u);
	ck_assert_int_eq(ledger_parse_fsync("always", &f), 0);
	ck_assert_int_eq(f, LEDGER_FSYNC_ALWAYS);
	ck_assert_int_eq(ledger_parse_fsync("everysec", &f), 0);
	ck_assert_int_eq(f, LEDGER_FSYNC_EVERYSEC);
	ck_assert_int_eq(ledger_parse_fsync("no", &f), 0);
	ck_assert_int_eq(f, LEDGER_FSYNC_NO);
	ck_assert_int_eq(ledger_parse_fsync("sometimes", &f), -1);
	ck_assert_int_eq(ledger_parse_fsync(NULL, &f), -1);
	ck_assert_str_eq(ledger_fsync_name(LEDGER_FSYNC_NO), "no");
	ck_assert_str_eq(ledger_status_name(LEDGER_CANCELLED), "cancelled");
	ck_assert_int_eq(ledger_day(0), 0);
	ck_assert_int_eq(ledger_day(DAY_MS - 1), 0);
	ck_assert_int_eq(ledger_day(DAY_MS), 1);
	ck_assert_int_eq(ledger_day(-1), -1);
}
END_TEST

START_TEST(test_reopen_identical)
{
	struct ledger_options o = opts(LEDGER_FSYNC_ALWAYS, 30, 0);
	struct ledger *l = open_ok(sdir, &o);
	struct stats_result a, b, ad, bd;

	for (int i = 0; i < 400; i++)
		append_ok(l, i);
	ck_assert(ledger_healthy(l));
	total_is(l, 0, 400, -1);
	ck_assert_int_eq(ledger_stats(l, NULL, -1, &a), 0);
	ck_assert_int_eq(ledger_stats(l, "day", -1, &ad), 0);
	ledger_close(l);

	l = open_ok(sdir, &o);
	ck_assert_int_eq(ledger_stats(l, NULL, -1, &b), 0);
	ck_assert_int_eq(ledger_stats(l, "day", -1, &bd), 0);
	stats_eq(&a, &b);
	stats_eq(&ad, &bd);
	ck_assert_int_eq(a.since, b.since);
	ck_assert_uint_eq(history(l, 0).n, 400);
	ledger_close(l);

	/* and once more, with records both in the snapshot and in a journal */
	l = open_ok(sdir, &o);
	append_ok(l, 400);
	ledger_close(l);
	l = open_ok(sdir, &o);
	total_is(l, 0, 401, -1);
	ledger_close(l);
	ledger_stats_clear(&a);
	ledger_stats_clear(&b);
	ledger_stats_clear(&ad);
	ledger_stats_clear(&bd);
}
END_TEST

START_TEST(test_crash_keeps_everything)
{
	struct ledger_options o = opts(_i == 0 ? LEDGER_FSYNC_EVERYSEC : LEDGER_FSYNC_NO, 30, 0);
	struct ledger *l;

	crash_after(&o, 0, 60, false);
	l = open_ok(sdir, &o);
	total_is(l, 0, 60, -1);
	ledger_close(l);
	crash_after(&o, 60, 90, false);
	crash_after(&o, 90, 100, false);
	l = open_ok(sdir, &o);
	total_is(l, 0, 100, -1);
	ck_assert_uint_eq(history(l, 0).n, 100);
	ledger_close(l);
}
END_TEST

START_TEST(test_torn_tail)
{
	struct ledger_options o = opts(LEDGER_FSYNC_NO, 30, 0);
	char path[PATH_MAX], log[4096];
	static const uint8_t garbage[] = "\x7f\x13\xfe garbage that is not a record \x01\x02";
	off_t s19, s20;
	struct ledger *l;

	crash_after(&o, 0, 19, false);
	journal_path(1, path, sizeof path);
	s19 = file_size(path);
	crash_after(&o, 19, 20, false);
	s20 = file_size(path);
	ck_assert_int_gt(s20, s19 + 20);
	ck_assert_int_eq(truncate(path, s20 - 10), 0);
	file_write(path, garbage, sizeof garbage, "ab");

	l = open_capture(&o, log, sizeof log);
	total_is(l, 0, 19, -1);
	ck_assert_int_eq(file_size(path), s19);
	ck_assert_msg(strstr(log, "cut") != NULL && strstr(log, path) != NULL, "log: %s", log);
	ck_assert_ptr_nonnull(strstr(log, "warn"));
	/* appending goes on right after the last good record */
	append_ok(l, 19);
	ledger_close(l);
	l = open_ok(sdir, &o);
	total_is(l, 0, 20, -1);
	ledger_close(l);
}
END_TEST

START_TEST(test_torn_header)
{
	struct ledger_options o = opts(LEDGER_FSYNC_NO, 30, 0);
	char path[PATH_MAX];
	off_t s;
	struct ledger *l;

	/* a tail shorter than a header */
	crash_after(&o, 0, 5, false);
	journal_path(1, path, sizeof path);
	s = file_size(path);
	file_write(path, "\0\0\0", 3, "ab");
	l = open_ok(sdir, &o);
	total_is(l, 0, 5, -1);
	ck_assert_int_eq(file_size(path), s);
	ledger_close(l);
}
END_TEST

START_TEST(test_empty_last_file)
{
	struct ledger_options o = opts(LEDGER_FSYNC_NO, 30, 0);
	char path[PATH_MAX];
	struct ledger *l;

	crash_after(&o, 0, 5, false);
	journal_path(2, path, sizeof path);
	file_write(path, "", 0, "wb");
	l = open_ok(sdir, &o);
	total_is(l, 0, 5, -1);
	append_ok(l, 5);
	ck_assert_int_gt(file_size(path), 0);     /* appends go on in the empty last file */
	ledger_close(l);
	l = open_ok(sdir, &o);
	total_is(l, 0, 6, -1);
	ledger_close(l);
}
END_TEST

START_TEST(test_corrupt_middle)
{
	struct ledger_options o = opts(LEDGER_FSYNC_NO, 30, 0);
	char path[PATH_MAX], log[4096];
	uint8_t *buf;
	size_t len, off;
	struct ledger *l;
	/* _i: 0 flips a body byte, 1 a length byte, 2 a CRC byte */
	int k = 10;

	crash_after(&o, 0, 30, false);
	journal_path(1, path, sizeof path);
	buf = file_read(path, &len);
	off = record_offset(buf, len, k);
	if (_i == 0)
		buf[off + 8 + 20] ^= 0x40;
	else if (_i == 1)
		buf[off + 2] ^= 0x01;
	else
		buf[off + 5] ^= 0xff;
	file_write(path, buf, len, "wb");
	free(buf);

	l = open_capture(&o, log, sizeof log);
	total_is(l, 0, 30, k);
	ck_assert_int_eq(file_size(path), (off_t)len);
	ck_assert_msg(strstr(log, "skipped") != NULL, "log: %s", log);
	ck_assert_uint_eq(history(l, 0).n, 29);
	append_ok(l, 30);
	ledger_close(l);

	l = open_ok(sdir, &o);
	struct counters want = expect(0, 31, k), got = total(l);
	counters_eq(&got, &want);
	ledger_close(l);
}
END_TEST

/* A frame whose checksum is right but whose body is not a version-1 record. */
static void
bad_body_frame(uint8_t *out, size_t *len)
{
	static const uint8_t body[] = {
		0x82, 0xa1, 'v', 0x02, 0xa4, 't', 'i', 'm', 'e', 0x00, 0xc0, 0xc0, 0xc0
	};
	uint32_t n = sizeof body, crc = ledger_crc32c(0, body, n);

	out[0] = n >> 24; out[1] = n >> 16; out[2] = n >> 8; out[3] = n;
	out[4] = crc >> 24; out[5] = crc >> 16; out[6] = crc >> 8; out[7] = crc;
	memcpy(out + 8, body, n);
	*len = 8 + n;
}

START_TEST(test_undecodable_records)
{
	struct ledger_options o = opts(LEDGER_FSYNC_NO, 30, 0);
	char path[PATH_MAX];
	uint8_t frame[64];
	size_t flen;
	off_t s;
	struct ledger *l;

	uint8_t *buf, *nbuf;
	size_t len, off;

	bad_body_frame(frame, &flen);
	crash_after(&o, 0, 8, false);
	journal_path(1, path, sizeof path);
	/* in the middle: skipped, the records after it kept, the file left alone */
	buf = file_read(path, &len);
	off = record_offset(buf, len, 5);
	ck_assert_ptr_nonnull(nbuf = malloc(len + flen));
	memcpy(nbuf, buf, off);
	memcpy(nbuf + off, frame, flen);
	memcpy(nbuf + off + flen, buf + off, len - off);
	file_write(path, nbuf, len + flen, "wb");
	free(buf);
	free(nbuf);
	l = open_ok(sdir, &o);
	total_is(l, 0, 8, -1);
	ck_assert_int_eq(file_size(path), (off_t)(len + flen));
	ledger_close(l);

	/* at the tail of the last file: cut */
	crash_after(&o, 8, 10, false);
	journal_path(2, path, sizeof path);
	s = file_size(path);
	file_write(path, frame, flen, "ab");
	l = open_ok(sdir, &o);
	total_is(l, 0, 10, -1);
	ck_assert_int_eq(file_size(path), s);
	ledger_close(l);
}
END_TEST

START_TEST(test_rotation_compaction)
{
	struct ledger_options o = opts(LEDGER_FSYNC_EVERYSEC, 30, 2048);
	struct ledger *l;
	struct stats_result a, b;
	int n = 700;                /* about 3.4 days of records */

	l = open_ok(sdir, &o);
	for (int i = 0; i < n / 2; i++) {
		struct ledger_record r;
		append_ok(l, i);
		rec_make(&r, i);
		ledger_tick(l, r.time_ms);
	}
	ck_assert_uint_gt(journal_count(), 10);
	ledger_close(l);
	/* half the records again, then a crash */
	crash_after(&o, n / 2, n, true);
	l = open_ok(sdir, &o);
	total_is(l, 0, n, -1);
	ck_assert_int_eq(ledger_stats(l, "day", -1, &a), 0);
	ck_assert_uint_eq(a.by_day.n, 4);
	ck_assert_uint_eq(history(l, 0).n, (size_t)n);
	ck_assert(history(l, 0).ordered);
	ck_assert_int_eq(ledger_snapshot(l, NULL, 0), 0);
	ledger_close(l);
	l = open_ok(sdir, &o);
	ck_assert_int_eq(ledger_stats(l, "day", -1, &b), 0);
	stats_eq(&a, &b);
	ledger_close(l);
	ledger_stats_clear(&a);
	ledger_stats_clear(&b);
}
END_TEST

/* write(2)-like system calls this process has made (syscw of /proc/self/io). */
static unsigned long long
write_calls(void)
{
	unsigned long long n = 0;
	char line[128];
	FILE *f = fopen("/proc/self/io", "r");

	if (f == NULL)      /* no ck_assert: Check reports each one with a write(2) */
		abort();
	while (fgets(line, sizeof line, f) != NULL)
		if (sscanf(line, "syscw: %llu", &n) == 1)
			break;
	fclose(f);
	return n;
}

static void
stage_ok(struct ledger *l, int i)
{
	struct ledger_record r;
	char cause[512] = "";

	rec_make(&r, i);
	ck_assert_msg(ledger_stage(l, &r, cause, sizeof cause) == 0, "stage %d: %s", i, cause);
}

/* In a child: open, stage records a..b-1, commit them, then die without closing. */
static void
crash_after_batch(const struct ledger_options *o, int a, int b)
{
	pid_t pid = fork();
	int status;

	ck_assert_int_ne(pid, -1);
	if (pid == 0) {
		char cause[512];
		struct ledger *l = ledger_open(sdir, o, cause, sizeof cause);
		if (l == NULL)
			_exit(2);
		for (int i = a; i < b; i++) {
			struct ledger_record r;
			rec_make(&r, i);
			if (ledger_stage(l, &r, cause, sizeof cause) == -1)
				_exit(3);
		}
		_exit(ledger_commit(l, cause, sizeof cause) == 0 ? 0 : 4);
	}
	ck_assert_int_eq(waitpid(pid, &status, 0), pid);
	ck_assert_msg(WIFEXITED(status) && WEXITSTATUS(status) == 0, "child status %d", status);
}

START_TEST(test_batch_one_write)
{
	struct ledger_options o = opts(LEDGER_FSYNC_EVERYSEC, 30, 64 << 20);
	struct ledger *l = open_ok(sdir, &o);
	char cause[512] = "";
	unsigned long long w;
	int rc;

	append_ok(l, 0);                            /* the journal file exists */
	for (int i = 1; i < 41; i++)
		stage_ok(l, i);
	ck_assert_uint_eq(ledger_staged(l), 40);
	total_is(l, 0, 41, -1);                     /* counted at once */
	/* (no assertion in between: Check reports each one through a pipe) */
	w = write_calls();
	rc = ledger_commit(l, cause, sizeof cause);
	w = write_calls() - w;
	ck_assert_msg(rc == 0, "commit: %s", cause);
	ck_assert_uint_eq(w, 1);                    /* forty records, one write(2) */
	ck_assert_uint_eq(ledger_staged(l), 0);
	w = write_calls();
	rc = ledger_commit(l, cause, sizeof cause);
	w = write_calls() - w;
	ck_assert_int_eq(rc, 0);
	ck_assert_uint_eq(w, 0);                    /* nothing staged, nothing written */
	ledger_close(l);

	/* committed means in the journal: a crash right after loses nothing */
	crash_after_batch(&o, 41, 60);
	l = open_ok(sdir, &o);
	total_is(l, 0, 60, -1);
	ledger_close(l);
}
END_TEST

START_TEST(test_batch_day_split)
{
	struct ledger_options o = opts(LEDGER_FSYNC_NO, 30, 64 << 20);
	struct ledger *l = open_ok(sdir, &o);
	char cause[512] = "";
	unsigned long long w;
	int rc;

	for (int i = 0; i < 200; i++)     /* 200 * 7 min: day 0 ends at record 205 */
		append_ok(l, i);
	ck_assert_uint_eq(journal_count(), 1);
	for (int i = 200; i < 210; i++)
		stage_ok(l, i);
	w = write_calls();
	rc = ledger_commit(l, cause, sizeof cause);
	w = write_calls() - w;
	ck_assert_msg(rc == 0, "commit: %s", cause);
	ck_assert_uint_eq(w, 2);                    /* one write per day */
	ck_assert_uint_eq(journal_count(), 2);      /* the new day's records in a new file */
	ledger_close(l);
	l = open_ok(sdir, &o);
	total_is(l, 0, 210, -1);
	ledger_close(l);
}
END_TEST

START_TEST(test_batch_write_fails)
{
	struct ledger_options o = opts(LEDGER_FSYNC_EVERYSEC, 30, 64 << 20);
	struct ledger *l = open_ok(sdir, &o);
	char cause[512] = "";

	append_ok(l, 0);
	fail_writes("enospc");
	for (int i = 1; i < 6; i++)
		stage_ok(l, i);
	ck_assert_int_eq(ledger_commit(l, cause, sizeof cause), -1);
	ck_assert_msg(strstr(cause, "No space left on device") != NULL && strstr(cause, sdir) != NULL,
	    "cause: %s", cause);
	ck_assert_uint_eq(ledger_staged(l), 0);
	ck_assert_uint_eq(ledger_pending(l), 5);   /* every record of the batch kept, in order */
	ck_assert(!ledger_healthy(l));
	total_is(l, 0, 6, -1);
	fail_writes("");
	ck_assert_int_eq(ledger_probe(l, cause, sizeof cause), 0);
	ck_assert_uint_eq(ledger_pending(l), 0);
	ck_assert(ledger_healthy(l));
	ledger_close(l);
	crash_after_batch(&o, 6, 8);
	l = open_ok(sdir, &o);
	total_is(l, 0, 8, -1);
	ledger_close(l);
}
END_TEST

/* A record whose write failed and whose client heard an error is written, and counted, as an error. */
START_TEST(test_amend_error)
{
	struct ledger_options o = opts(LEDGER_FSYNC_EVERYSEC, 30, 64 << 20);
	struct ledger *l = open_ok(sdir, &o);
	struct counters want, got;
	uint64_t rid[6];
	char cause[512] = "";

	append_ok(l, 0);
	rid[0] = ledger_last_rid(l);
	fail_writes("enospc");
	for (int i = 1; i < 6; i++) {
		stage_ok(l, i);
		rid[i] = ledger_last_rid(l);
	}
	ck_assert_int_eq(ledger_commit(l, cause, sizeof cause), -1);
	ck_assert_uint_eq(ledger_pending(l), 5);
	/* records 2 and 4 were done: their clients were told otherwise */
	ck_assert_int_eq(ledger_amend_error(l, rid[2], "internal"), 0);
	ck_assert_int_eq(ledger_amend_error(l, rid[4], "internal"), 0);
	/* record 3 failed anyway, record 0 is in the journal, 99 never was */
	ck_assert_int_eq(ledger_amend_error(l, rid[3], "internal"), -1);
	ck_assert_int_eq(ledger_amend_error(l, rid[0], "internal"), -1);
	ck_assert_int_eq(ledger_amend_error(l, rid[5] + 99, "internal"), -1);
	ck_assert_uint_eq(ledger_pending(l), 5);
	want = expect(0, 6, -1);
	want.errors += 2;
	got = total(l);
	counters_eq(&got, &want);
	fail_writes("");
	ck_assert_int_eq(ledger_probe(l, cause, sizeof cause), 0);
	ck_assert_uint_eq(ledger_pending(l), 0);
	ck_assert_int_eq(ledger_amend_error(l, rid[1], "internal"), -1);    /* written now */
	ledger_close(l);
	l = open_ok(sdir, &o);
	got = total(l);
	counters_eq(&got, &want);
	ledger_close(l);
}
END_TEST

/* A snapshot writes the staged records first; a failure there is answered by the next commit. */
START_TEST(test_batch_before_snapshot)
{
	struct ledger_options o = opts(LEDGER_FSYNC_EVERYSEC, 30, 64 << 20);
	struct ledger *l = open_ok(sdir, &o);
	char cause[512] = "";

	append_ok(l, 0);
	stage_ok(l, 1);
	stage_ok(l, 2);
	ck_assert_msg(ledger_snapshot(l, cause, sizeof cause) == 0, "snapshot: %s", cause);
	ck_assert_uint_eq(ledger_staged(l), 0);
	ck_assert_int_eq(ledger_commit(l, cause, sizeof cause), 0);

	stage_ok(l, 3);
	fail_writes("enospc");
	ck_assert_int_eq(ledger_snapshot(l, cause, sizeof cause), -1);
	ck_assert_uint_eq(ledger_staged(l), 0);
	cause[0] = '\0';
	ck_assert_int_eq(ledger_commit(l, cause, sizeof cause), -1);
	ck_assert_msg(strstr(cause, "No space left on device") != NULL, "cause: %s", cause);
	ck_assert_int_eq(ledger_commit(l, cause, sizeof cause), 0);   /* told once */
	fail_writes("");
	ck_assert_int_eq(ledger_probe(l, cause, sizeof cause), 0);
	ledger_close(l);
	l = open_ok(sdir, &o);
	total_is(l, 0, 4, -1);
	ledger_close(l);
}
END_TEST

START_TEST(test_day_rotation)
{
	struct ledger_options o = opts(LEDGER_FSYNC_NO, 30, 0);
	struct ledger *l = open_ok(sdir, &o);
	char snap[PATH_MAX];
	off_t s0;

	snprintf(snap, sizeof snap, "%s/snapshot.olm", sdir);
	s0 = file_size(snap);
	for (int i = 0; i < 200; i++)     /* 200 * 7 min: day 0 ends at record 205 */
		append_ok(l, i);
	ledger_tick(l, base_ms + 1000);
	ck_assert_int_eq(file_size(snap), s0);     /* same day: nothing to compact */
	ck_assert_uint_eq(journal_count(), 1);
	for (int i = 200; i < 210; i++)
		append_ok(l, i);
	ck_assert_uint_eq(journal_count(), 2);    /* a new file for the new day */
	ledger_tick(l, base_ms + DAY_MS + 1000);
	ck_assert_int_gt(file_size(snap), s0);     /* day 0 folded in */
	for (int i = 210; i < 220; i++)
		append_ok(l, i);
	ck_assert_uint_eq(journal_count(), 3);
	ledger_close(l);
	l = open_ok(sdir, &o);
	total_is(l, 0, 220, -1);
	ledger_close(l);
}
END_TEST

START_TEST(test_crash_between_snapshot_and_delete)
{
	struct ledger_options o = opts(LEDGER_FSYNC_NO, 0, 1024);
	struct ledger *l;
	pid_t pid;
	int status;

	pid = fork();
	ck_assert_int_ne(pid, -1);
	if (pid == 0) {
		/* fill some journal files, save them, snapshot (deleting them), put them back */
		struct ledger *cl = open_ok(sdir, &o);
		uint8_t *saved[64];
		size_t lens[64], n;
		char path[PATH_MAX];

		for (int i = 0; i < 50; i++)
			append_ok(cl, i);
		n = journal_count();
		ck_assert_uint_gt(n, 3);
		ck_assert_uint_le(n, 64);
		for (size_t s = 0; s < n; s++) {
			journal_path(s + 1, path, sizeof path);
			saved[s] = file_read(path, &lens[s]);
		}
		ck_assert_int_eq(ledger_snapshot(cl, NULL, 0), 0);
		ck_assert_uint_eq(journal_count(), 0);
		for (size_t s = 0; s < n; s++) {
			journal_path(s + 1, path, sizeof path);
			file_write(path, saved[s], lens[s], "wb");
		}
		_exit(0);
	}
	ck_assert_int_eq(waitpid(pid, &status, 0), pid);
	ck_assert(WIFEXITED(status) && WEXITSTATUS(status) == 0);
	ck_assert_uint_gt(journal_count(), 3);
	l = open_ok(sdir, &o);
	total_is(l, 0, 50, -1);
	ck_assert_uint_eq(journal_count(), 0);     /* folded, so retention 0 removed them */
	append_ok(l, 50);
	ledger_close(l);
	l = open_ok(sdir, &o);
	total_is(l, 0, 51, -1);
	ledger_close(l);
}
END_TEST

START_TEST(test_folded_files_not_recounted)
{
	struct ledger_options o = opts(LEDGER_FSYNC_NO, 30, 1024);
	struct ledger *l = open_ok(sdir, &o);

	for (int i = 0; i < 50; i++)
		append_ok(l, i);
	ck_assert_int_eq(ledger_snapshot(l, NULL, 0), 0);
	ck_assert_uint_gt(journal_count(), 3);     /* folded, kept for history */
	ledger_close(l);
	crash_after(&o, 50, 60, false);
	l = open_ok(sdir, &o);
	total_is(l, 0, 60, -1);
	ck_assert_uint_eq(history(l, 0).n, 60);
	ledger_close(l);
}
END_TEST

START_TEST(test_lock)
{
	struct ledger *l = open_ok(sdir, NULL), *m;
	char cause[512] = "";

	m = ledger_open(sdir, NULL, cause, sizeof cause);
	ck_assert_ptr_null(m);
	ck_assert_msg(strstr(cause, "in use") != NULL, "cause: %s", cause);
	ledger_close(l);
	ck_assert_ptr_nonnull(m = ledger_open(sdir, NULL, cause, sizeof cause));
	ledger_close(m);
}
END_TEST

/* One user's view: the total and the maps count only their rows. */
START_TEST(test_stats_scoped_to_a_uid)
{
	struct ledger *l = open_ok(sdir, NULL);
	struct stats_result all, mine;
	struct counters sum;
	struct ledger_scope scope = { NULL, NULL, NULL, 1000, NULL };

	for (int i = 0; i < 30; i++)
		append_ok(l, i);
	ck_assert_int_eq(ledger_stats(l, NULL, -1, &all), 0);
	ck_assert_int_eq(ledger_stats_scoped(l, NULL, -1, 1000, &mine), 0);
	ck_assert_uint_eq(all.total.requests, 30);
	ck_assert_uint_eq(mine.total.requests, 10);
	ck_assert_uint_eq(mine.by_user.n, 1);
	ck_assert_str_eq(mine.by_user.entries[0].key, "1000");
	ck_assert_uint_eq(all.by_user.n, 3);
	ledger_usage(l, &scope, -1, &sum);
	counters_eq(&mine.by_user.entries[0].c, &sum);
	counters_eq(&mine.total, &sum);
	/* uid 1000 has records i % 3 == 1: models llama only */
	ck_assert_uint_eq(mine.by_model.n, 1);
	ck_assert_str_eq(mine.by_model.entries[0].key, "llama");
	ledger_stats_clear(&all);
	ledger_stats_clear(&mine);
	ck_assert_int_eq(ledger_stats_scoped(l, "day", -1, 4242, &mine), 0);
	ck_assert_uint_eq(mine.by_day.n, 0);
	ck_assert_uint_eq(mine.total.requests, 0);
	ledger_stats_clear(&mine);
	ledger_close(l);
}
END_TEST

/* A symbolic link planted as a journal file, the journal directory or the lock is refused, not followed. */
START_TEST(test_symlinks_refused)
{
	struct ledger *l;
	char path[PATH_MAX], target[PATH_MAX], cause[PATH_MAX + 128] = "";
	struct stat st;

	l = open_ok(sdir, NULL);
	append_ok(l, 1);
	ledger_close(l);
	/* a journal file the next open replays: left after the snapshot by a crash */
	snprintf(target, sizeof target, "%s/target", tdir);
	file_write(target, "precious", 8, "wb");
	snprintf(path, sizeof path, "%s/journal/journal-%016d.olj", sdir, 99);
	ck_assert_int_eq(symlink(target, path), 0);
	ck_assert_ptr_null(ledger_open(sdir, NULL, cause, sizeof cause));
	ck_assert_msg(strstr(cause, "is a symbolic link; refusing to follow it") != NULL &&
	    strstr(cause, path) != NULL, "cause: %s", cause);
	unlink(path);
	/* the journal directory */
	snprintf(path, sizeof path, "%s/journal", sdir);
	nftw(path, rm_cb, 16, FTW_DEPTH | FTW_PHYS);
	ck_assert_int_eq(symlink(tdir, path), 0);
	ck_assert_ptr_null(ledger_open(sdir, NULL, cause, sizeof cause));
	ck_assert_msg(strstr(cause, "journal is a symbolic link") != NULL, "cause: %s", cause);
	unlink(path);
	/* the lock */
	snprintf(path, sizeof path, "%s/lock", sdir);
	unlink(path);
	ck_assert_int_eq(symlink(target, path), 0);
	ck_assert_ptr_null(ledger_open(sdir, NULL, cause, sizeof cause));
	ck_assert_msg(strstr(cause, "lock is a symbolic link") != NULL, "cause: %s", cause);
	ck_assert_int_eq(lstat(target, &st), 0);
	ck_assert_int_eq(st.st_size, 8);
}
END_TEST

START_TEST(test_open_fails)
{
	char path[PATH_MAX + 32], cause[512] = "";

	/* the state dir lies under a regular file */
	snprintf(path, sizeof path, "%s/file", tdir);
	file_write(path, "x", 1, "wb");
	snprintf(path, sizeof path, "%s/file/state", tdir);
	ck_assert_ptr_null(ledger_open(path, NULL, cause, sizeof cause));
	ck_assert_msg(strstr(cause, "Not a directory") != NULL, "cause: %s", cause);

	/* a new ledger whose first snapshot cannot be written */
	fail_writes("enospc");
	ck_assert_ptr_null(ledger_open(sdir, NULL, cause, sizeof cause));
	ck_assert_msg(strstr(cause, "snapshot.olm") != NULL &&
	    strstr(cause, "No space left on device") != NULL, "cause: %s", cause);
	fail_writes("");
	ledger_close(open_ok(sdir, NULL));
}
END_TEST

START_TEST(test_corrupt_snapshot_refused)
{
	struct ledger *l = open_ok(sdir, NULL);
	char snap[PATH_MAX], cause[512] = "";
	uint8_t *buf;
	size_t len;

	for (int i = 0; i < 20; i++)
		append_ok(l, i);
	ledger_close(l);
	snprintf(snap, sizeof snap, "%s/snapshot.olm", sdir);
	buf = file_read(snap, &len);
	buf[len / 2] ^= 0x10;
	file_write(snap, buf, len, "wb");
	free(buf);
	ck_assert_ptr_null(ledger_open(sdir, NULL, cause, sizeof cause));
	ck_assert_msg(strstr(cause, "snapshot.olm") != NULL, "cause: %s", cause);
}
END_TEST

START_TEST(test_write_failure_recovery)
{
	struct ledger_options o = opts(LEDGER_FSYNC_ALWAYS, 30, 0);
	struct ledger *l = open_ok(sdir, &o);
	char cause[512];
	struct collect c;

	for (int i = 0; i < 5; i++)
		append_ok(l, i);
	fail_writes(_i == 0 ? "enospc" : "eio");
	append_fails(l, 5, _i == 0 ? "No space left on device" : "Input/output error");
	append_fails(l, 6, "journal-");
	append_fails(l, 7, "write");
	ck_assert(!ledger_healthy(l));
	ck_assert_uint_eq(ledger_pending(l), 3);
	total_is(l, 0, 8, -1);                     /* counted at once */
	ck_assert_int_eq(ledger_probe(l, cause, sizeof cause), -1);
	ledger_tick(l, base_ms);
	ck_assert(!ledger_healthy(l));
	c = history(l, 0);
	ck_assert_int_eq(c.n, 8);                  /* the pending ones are history too */

	fail_writes("");
	ck_assert_int_eq(ledger_probe(l, cause, sizeof cause), 0);
	ck_assert(ledger_healthy(l));
	ck_assert_uint_eq(ledger_pending(l), 0);
	append_ok(l, 8);

	/* and recovery through the next append rather than a probe */
	fail_writes("enospc");
	append_fails(l, 9, "No space");
	fail_writes("");
	append_ok(l, 10);
	ck_assert(ledger_healthy(l));

	c = history(l, 0);
	ck_assert_int_eq(c.n, 11);
	ck_assert(c.ordered);
	ledger_close(l);
	crash_after(&o, 11, 12, false);
	l = open_ok(sdir, &o);
	total_is(l, 0, 12, -1);
	c = history(l, 0);
	ck_assert_int_eq(c.n, 12);
	ck_assert(c.ordered);
	ledger_close(l);
}
END_TEST

START_TEST(test_short_write_leaves_no_half_record)
{
	struct ledger_options o = opts(LEDGER_FSYNC_NO, 30, 0);
	struct ledger *l = open_ok(sdir, &o);
	char path[PATH_MAX], log[4096];
	off_t s;

	for (int i = 0; i < 5; i++)
		append_ok(l, i);
	journal_path(1, path, sizeof path);
	s = file_size(path);
	fail_writes("short");
	append_fails(l, 5, "short write");
	append_fails(l, 6, "short write");
	ck_assert_int_eq(file_size(path), s);
	ck_assert_uint_eq(ledger_pending(l), 2);
	fail_writes("");
	ledger_tick(l, base_ms);
	ck_assert(ledger_healthy(l));
	append_ok(l, 7);
	ledger_close(l);
	/* the journal alone must hold all 8, cleanly: rebuild without the snapshot */
	snprintf(path, sizeof path, "%s/snapshot.olm", sdir);
	ck_assert_int_eq(unlink(path), 0);
	l = open_capture(&o, log, sizeof log);
	total_is(l, 0, 8, -1);
	ck_assert_msg(strstr(log, "cut") == NULL && strstr(log, "skipped") == NULL, "log: %s", log);
	ledger_close(l);
}
END_TEST

/* Whole records in a journal file. */
static int
file_records(const char *path)
{
	size_t len, off = 0;
	uint8_t *buf = file_read(path, &len);
	int n = 0;

	while (off + 8 <= len) {
		off += 8 + ((size_t)buf[off] << 24 | (size_t)buf[off + 1] << 16 |
		    (size_t)buf[off + 2] << 8 | buf[off + 3]);
		n++;
	}
	free(buf);
	ck_assert_uint_eq(off, len);
	return n;
}

START_TEST(test_fsync_failure)
{
	struct ledger_options o = opts(LEDGER_FSYNC_ALWAYS, 30, 0);
	struct ledger *l = open_ok(sdir, &o);
	char cause[512];

	append_ok(l, 0);
	fail_writes("fsync");
	append_fails(l, 1, "fdatasync");
	ck_assert(!ledger_healthy(l));
	/* the file is not synced again: the record waits to be written to a new one */
	ck_assert_uint_eq(ledger_pending(l), 1);
	ck_assert_uint_eq(journal_count(), 2);      /* the retry's file failed too */
	ck_assert_int_eq(ledger_probe(l, cause, sizeof cause), -1);
	ck_assert_uint_eq(ledger_pending(l), 1);
	fail_writes("");
	ck_assert_int_eq(ledger_probe(l, cause, sizeof cause), 0);
	ck_assert(ledger_healthy(l));
	ck_assert_uint_eq(ledger_pending(l), 0);
	append_ok(l, 2);
	total_is(l, 0, 3, -1);
	ck_assert_uint_eq(history(l, 0).n, 3);      /* record 1 is in three files, once here */
	ledger_close(l);
	l = open_ok(sdir, &o);
	total_is(l, 0, 3, -1);
	ck_assert_uint_eq(history(l, 0).n, 3);
	ledger_close(l);

	/* everysec: the tick's fdatasync fails, then recovers */
	o.fsync = LEDGER_FSYNC_EVERYSEC;
	l = open_ok(sdir, &o);
	append_ok(l, 3);
	fail_writes("fsync");
	ledger_tick(l, base_ms);
	ck_assert(!ledger_healthy(l));
	ck_assert_uint_eq(ledger_pending(l), 1);
	fail_writes("");
	ledger_tick(l, base_ms + 1000);
	ck_assert(ledger_healthy(l));
	ledger_close(l);
	l = open_ok(sdir, &o);
	total_is(l, 0, 4, -1);
	ck_assert_uint_eq(history(l, 0).n, 4);
	ledger_close(l);
}
END_TEST

/*
 * One file's fdatasync fails: the records it holds that were not synced are
 * written to a new file and synced there, at once; after a crash each record
 * counts once though it is in both files. _i: 0 always, 1 everysec.
 */
START_TEST(test_fsync_failure_new_file)
{
	struct ledger_options o = opts(_i == 0 ? LEDGER_FSYNC_ALWAYS : LEDGER_FSYNC_EVERYSEC, 30, 0);
	char j1[PATH_MAX], j2[PATH_MAX];
	struct ledger *l;
	struct collect c;
	pid_t pid;
	int status;

	journal_path(1, j1, sizeof j1);
	journal_path(2, j2, sizeof j2);
	setenv("OLLM_FAILWRITE_PREFIX", j1, 1);     /* only the first file's fdatasync fails */
	pid = fork();
	ck_assert_int_ne(pid, -1);
	if (pid == 0) {
		l = open_ok(sdir, &o);
		append_ok(l, 0);
		if (_i == 1) {
			append_ok(l, 1);
			append_ok(l, 2);
		}
		fail_writes("fsync");
		if (_i == 0) {
			append_ok(l, 1);                    /* durable in journal 2 */
			ck_assert(ledger_healthy(l));
			append_ok(l, 2);
		} else {
			ledger_tick(l, base_ms);
			ck_assert(ledger_healthy(l));
		}
		ck_assert(file_exists(j2));
		ck_assert_int_eq(file_records(j2), _i == 0 ? 2 : 3);
		ck_assert_uint_eq(ledger_pending(l), 0);
		_exit(0);                               /* a crash: no close, no snapshot */
	}
	ck_assert_int_eq(waitpid(pid, &status, 0), pid);
	ck_assert_msg(WIFEXITED(status) && WEXITSTATUS(status) == 0, "child status %d", status);
	fail_writes("");
	ck_assert_int_eq(file_records(j1), _i == 0 ? 2 : 3);    /* the abandoned file keeps them */
	l = open_ok(sdir, &o);
	total_is(l, 0, 3, -1);
	c = history(l, 0);
	ck_assert_int_eq(c.n, 3);
	ck_assert(c.ordered);
	{
		/* newest first, the copies in the abandoned file counted once too */
		struct collect nc = { 0, INT64_MIN, true, 0 };
		char cause[256];
		bool truncated;

		ck_assert_int_eq(ledger_foreach_record_newest(l, -1, -1, 0, collect_cb, &nc,
		    &truncated, cause, sizeof cause), 0);
		ck_assert_int_eq(nc.n, 3);
	}
	append_ok(l, 3);                            /* numbering goes on after the highest */
	ledger_close(l);
	l = open_ok(sdir, &o);
	total_is(l, 0, 4, -1);
	ck_assert_int_eq(history(l, 0).n, 4);
	ledger_close(l);
}
END_TEST

START_TEST(test_pending_bound)
{
	struct ledger_options o = opts(LEDGER_FSYNC_NO, 30, 0);
	struct ledger *l;
	pid_t pid;
	int status;

	o.pending_max = 4;
	pid = fork();
	ck_assert_int_ne(pid, -1);
	if (pid == 0) {
		char cause[512];
		l = open_ok(sdir, &o);
		append_ok(l, 0);
		fail_writes("enospc");
		for (int i = 1; i < 7; i++)
			append_fails(l, i, "No space");
		ck_assert_uint_eq(ledger_pending(l), 4);
		total_is(l, 0, 7, -1);
		fail_writes("");
		ck_assert_int_eq(ledger_probe(l, cause, sizeof cause), 0);
		_exit(0);
	}
	ck_assert_int_eq(waitpid(pid, &status, 0), pid);
	ck_assert(WIFEXITED(status) && WEXITSTATUS(status) == 0);
	/* the journal has the first and the four kept: records 5 and 6 were dropped */
	l = open_ok(sdir, &o);
	total_is(l, 0, 5, -1);
	ledger_close(l);
}
END_TEST

START_TEST(test_pending_folded_into_snapshot)
{
	struct ledger_options o = opts(LEDGER_FSYNC_NO, 30, 0);
	struct ledger *l = open_ok(sdir, &o);
	char prefix[PATH_MAX + 16];

	append_ok(l, 0);
	/* journal writes fail, but the snapshot can be written */
	snprintf(prefix, sizeof prefix, "%s/journal/", sdir);
	setenv("OLLM_FAILWRITE_PREFIX", prefix, 1);
	fail_writes("enospc");
	append_fails(l, 1, "No space");
	append_fails(l, 2, "No space");
	ck_assert_uint_eq(ledger_pending(l), 2);
	ck_assert_int_eq(ledger_snapshot(l, NULL, 0), 0);
	ck_assert(ledger_healthy(l));
	ck_assert_uint_eq(ledger_pending(l), 0);
	fail_writes("");
	ledger_close(l);
	l = open_ok(sdir, &o);
	total_is(l, 0, 3, -1);
	ck_assert_uint_eq(history(l, 0).n, 1);    /* the folded two have no history */
	ledger_close(l);
}
END_TEST

START_TEST(test_reset_archives)
{
	struct ledger *l = open_ok(sdir, NULL), *old;
	char cause[512] = "", arch[PATH_MAX], path[PATH_MAX * 2];
	DIR *d;
	struct dirent *de;
	int n = 0;
	int64_t before = time(NULL);

	for (int i = 0; i < 10; i++)
		append_ok(l, i);
	ck_assert_msg(ledger_reset(l, cause, sizeof cause) == 0, "reset: %s", cause);
	total_is(l, 0, 0, -1);
	ck_assert_int_ge(ledger_since(l), before);
	append_ok(l, 10);
	ledger_close(l);

	snprintf(arch, sizeof arch, "%s/archive", sdir);
	ck_assert_ptr_nonnull(d = opendir(arch));
	while ((de = readdir(d)) != NULL) {
		if (de->d_name[0] == '.')
			continue;
		n++;
		snprintf(path, sizeof path, "%s/%s/snapshot.olm", arch, de->d_name);
		ck_assert(file_exists(path));
		snprintf(path, sizeof path, "%s/%s/journal", arch, de->d_name);
		ck_assert(file_exists(path));
		snprintf(path, sizeof path, "%s/%s", arch, de->d_name);
	}
	closedir(d);
	ck_assert_int_eq(n, 1);
	/* the archive is itself a ledger holding the old totals */
	old = open_ok(path, NULL);
	total_is(old, 0, 10, -1);
	ledger_close(old);

	l = open_ok(sdir, NULL);
	struct counters want = expect(10, 11, -1), got = total(l);
	counters_eq(&got, &want);
	ck_assert_uint_eq(history(l, 0).n, 1);
	ck_assert_int_eq(ledger_reset(l, cause, sizeof cause), 0);  /* twice in a second */
	ledger_close(l);
}
END_TEST

static const struct counters_entry *
entry(const struct counters_map *m, const char *key)
{
	for (size_t i = 0; i < m->n; i++)
		if (strcmp(m->entries[i].key, key) == 0)
			return &m->entries[i];
	return NULL;
}

START_TEST(test_stats_dimensions)
{
	struct ledger *l = open_ok(sdir, NULL);
	struct stats_result s;
	struct ledger_record r;
	struct counters want, sum;
	const struct counters_entry *e;
	struct ledger_scope scope;
	char day[16];
	int n = 500;                /* records over 2.4 days */

	for (int i = 0; i < n; i++)
		append_ok(l, i);

	ck_assert_int_eq(ledger_stats(l, NULL, -1, &s), 0);
	ck_assert_uint_eq(s.by_day.n, 0);
	ck_assert(isnan(s.max_budget) && isnan(s.budget_left));
	ck_assert_int_eq(s.since, ledger_since(l));
	want = expect(0, n, -1);
	counters_eq(&s.total, &want);
	/* models, sorted by name */
	ck_assert_uint_eq(s.by_model.n, 3);
	ck_assert_str_eq(s.by_model.entries[0].key, "llama");
	ck_assert_str_eq(s.by_model.entries[1].key, "mistral");
	ck_assert_str_eq(s.by_model.entries[2].key, "qwen");
	memset(&want, 0, sizeof want);
	for (int i = 0; i < n; i += 3) {
		struct counters one = expect(i, i + 1, -1);
		want.requests += one.requests;
		want.prompt_tokens += one.prompt_tokens;
		want.cost += one.cost;
	}
	e = entry(&s.by_model, "qwen");
	ck_assert_uint_eq(e->c.requests, want.requests);
	ck_assert_uint_eq(e->c.prompt_tokens, want.prompt_tokens);
	ck_assert(e->c.cost == want.cost);
	/* users: numeric order, decimal keys */
	ck_assert_uint_eq(s.by_user.n, 3);
	ck_assert_str_eq(s.by_user.entries[0].key, "0");
	ck_assert_str_eq(s.by_user.entries[1].key, "1000");
	ck_assert_str_eq(s.by_user.entries[2].key, "65534");
	ck_assert_uint_eq(s.by_user.entries[1].c.requests, (uint64_t)(n + 1) / 3);
	/* tags: untagged under "" */
	ck_assert_uint_eq(s.by_tag.n, 4);
	ck_assert_str_eq(s.by_tag.entries[0].key, "");
	ck_assert_uint_eq(s.by_tag.entries[0].c.requests, (uint64_t)(n + 3) / 4);
	ck_assert_str_eq(s.by_tag.entries[3].key, "app3");
	memset(&sum, 0, sizeof sum);
	for (size_t i = 0; i < s.by_tag.n; i++)
		sum.requests += s.by_tag.entries[i].c.requests;
	ck_assert_uint_eq(sum.requests, (uint64_t)n);
	ledger_stats_clear(&s);

	/* by day: only by_day and total */
	ck_assert_int_eq(ledger_stats(l, "day", -1, &s), 0);
	ck_assert_uint_eq(s.by_model.n + s.by_user.n + s.by_tag.n, 0);
	ck_assert_uint_eq(s.by_day.n, 3);
	{
		time_t t = (time_t)(base_ms / 1000);
		struct tm tm;
		gmtime_r(&t, &tm);
		strftime(day, sizeof day, "%Y-%m-%d", &tm);
	}
	ck_assert_str_eq(s.by_day.entries[0].key, day);
	/* 24 * 60 / 7 = 205.7: records 0..205 fall on the first day */
	want = expect(0, 206, -1);
	counters_eq(&s.by_day.entries[0].c, &want);
	want = expect(206, 412, -1);
	counters_eq(&s.by_day.entries[1].c, &want);
	ck_assert_str_lt(s.by_day.entries[0].key, s.by_day.entries[1].key);
	ledger_stats_clear(&s);

	/* since: the whole UTC day holding it, and later days */
	ck_assert_int_eq(ledger_stats(l, "model", (base_ms + DAY_MS) / 1000 + 13 * 3600, &s), 0);
	want = expect(206, n, -1);
	counters_eq(&s.total, &want);
	ck_assert_int_eq(s.since, (base_ms + DAY_MS) / 1000);
	ck_assert_uint_eq(s.by_day.n, 0);
	ledger_stats_clear(&s);
	ck_assert_int_eq(ledger_stats(l, "user", (base_ms + 10 * DAY_MS) / 1000, &s), 0);
	ck_assert_uint_eq(s.total.requests, 0);
	ck_assert_uint_eq(s.by_user.n, 0);
	ledger_stats_clear(&s);

	errno = 0;
	ck_assert_int_eq(ledger_stats(l, "colour", -1, &s), -1);
	ck_assert_int_eq(errno, EINVAL);

	/* usage for budgets */
	scope = (struct ledger_scope){ NULL, NULL, NULL, -1, NULL };
	ledger_usage(l, &scope, -1, &sum);
	want = expect(0, n, -1);
	counters_eq(&sum, &want);
	ledger_usage(l, NULL, ledger_day(base_ms + DAY_MS), &sum);
	want = expect(206, n, -1);
	counters_eq(&sum, &want);
	scope.uid = 1000;
	scope.model = "llama";        /* i % 3 == 1 for both */
	ledger_usage(l, &scope, -1, &sum);
	ck_assert_uint_eq(sum.requests, (uint64_t)(n + 1) / 3);
	scope.model = "qwen";
	ledger_usage(l, &scope, -1, &sum);
	ck_assert_uint_eq(sum.requests, 0);
	scope = (struct ledger_scope){ NULL, "remote", "", -1, NULL };
	ledger_usage(l, &scope, -1, &sum);
	memset(&want, 0, sizeof want);
	for (int i = 0; i < n; i++) {
		rec_make(&r, i);
		want.requests += r.tag == NULL && strcmp(r.upstream, "remote") == 0;
	}
	ck_assert_uint_eq(want.requests, (uint64_t)n / 4);
	ck_assert_uint_eq(sum.requests, want.requests);
	ledger_close(l);
}
END_TEST

/* stats from an instant inside a day: that day's part counted from the journal. */
START_TEST(test_stats_exact_since)
{
	struct ledger *l = open_ok(sdir, NULL);
	struct stats_result s;
	struct counters want, sum;
	int64_t base = base_ms / 1000, since;
	int n = 500;                /* records every 7 minutes over 2.4 days */

	for (int i = 0; i < n; i++)
		append_ok(l, i);

	/* Just after record 10: 11.. count, and the heading is the instant. */
	since = base + 10 * 7 * 60 + 1;
	ck_assert_int_eq(ledger_stats_exact(l, NULL, since, -1, &s), 0);
	ck_assert_int_eq(s.since, since);
	want = expect(11, n, -1);
	counters_eq(&s.total, &want);
	memset(&sum, 0, sizeof sum);
	for (size_t i = 0; i < s.by_model.n; i++)
		sum.requests += s.by_model.entries[i].c.requests;
	ck_assert_uint_eq(sum.requests, want.requests);
	ledger_stats_clear(&s);

	/* At a record's own time, it counts; per day, the first day is partial. */
	since = base + 20 * 7 * 60;
	ck_assert_int_eq(ledger_stats_exact(l, "day", since, -1, &s), 0);
	want = expect(20, n, -1);
	counters_eq(&s.total, &want);
	ck_assert_uint_eq(s.by_day.n, 3);
	want = expect(20, 206, -1);             /* record 206 is the first of day 2 */
	counters_eq(&s.by_day.entries[0].c, &want);
	ledger_stats_clear(&s);

	/* Inside the second day. */
	since = base + 86400 + 5;
	ck_assert_int_eq(ledger_stats_exact(l, "user", since, -1, &s), 0);
	want = expect(206, n, -1);
	counters_eq(&s.total, &want);
	ledger_stats_clear(&s);

	/* A whole day, and before the ledger began: as ledger_stats. */
	ck_assert_int_eq(ledger_stats_exact(l, NULL, base, -1, &s), 0);
	want = expect(0, n, -1);
	counters_eq(&s.total, &want);
	ck_assert_int_eq(s.since, base);
	ledger_stats_clear(&s);
	ck_assert_int_eq(ledger_stats_exact(l, NULL, 0, -1, &s), 0);
	counters_eq(&s.total, &want);
	ck_assert_int_eq(s.since, ledger_since(l));
	ledger_stats_clear(&s);
	ck_assert_int_eq(ledger_stats_exact(l, "week", since, -1, &s), -1);
	ck_assert_int_eq(errno, EINVAL);
	ledger_close(l);
}
END_TEST

/* An exact since scoped to a uid: the total and the maps count that uid's rows of both the partial day and the whole days. */
START_TEST(test_stats_exact_since_scoped)
{
	struct ledger *l = open_ok(sdir, NULL);
	struct stats_result s;
	struct counters want;
	int64_t base = base_ms / 1000, since = base + 10 * 7 * 60 + 1;
	uint64_t mine = 0, days = 0;
	int n = 500;

	for (int i = 0; i < n; i++)
		append_ok(l, i);
	for (int i = 11; i < n; i++)
		mine += i % 3 == 1;
	ck_assert_int_eq(ledger_stats_exact(l, "user", since, 1000, &s), 0);
	ck_assert_int_eq(s.since, since);
	want = expect(11, n, -1);
	ck_assert_uint_eq(s.total.requests, mine);
	ck_assert_uint_lt(s.total.requests, want.requests);
	ck_assert_uint_eq(s.by_user.n, 1);
	ck_assert_str_eq(s.by_user.entries[0].key, "1000");
	ck_assert_uint_eq(s.by_user.entries[0].c.requests, mine);
	ledger_stats_clear(&s);
	ck_assert_int_eq(ledger_stats_exact(l, "day", since, 1000, &s), 0);
	ck_assert_uint_eq(s.by_day.n, 3);
	for (size_t i = 0; i < s.by_day.n; i++)
		days += s.by_day.entries[i].c.requests;
	ck_assert_uint_eq(days, mine);
	ledger_stats_clear(&s);
	ck_assert_int_eq(ledger_stats_exact(l, "model", since, 4242, &s), 0);
	ck_assert_uint_eq(s.by_model.n, 0);
	ck_assert_uint_eq(s.total.requests, 0);
	ledger_stats_clear(&s);
	ledger_close(l);
}
END_TEST

/* When retention has removed the day's records, the whole day is counted, and says so. */
START_TEST(test_stats_exact_since_after_retention)
{
	struct ledger_options o = opts(LEDGER_FSYNC_NO, 0, 0);
	struct ledger *l = open_ok(sdir, &o);
	struct stats_result s;
	struct counters want;
	int64_t base = base_ms / 1000;

	for (int i = 0; i < 50; i++)
		append_ok(l, i);
	ck_assert_int_eq(ledger_snapshot(l, NULL, 0), 0);      /* folded, and deleted */
	ck_assert_int_eq(ledger_stats_exact(l, NULL, base + 10 * 7 * 60 + 1, -1, &s), 0);
	ck_assert_int_eq(s.since, base);
	want = expect(0, 50, -1);
	counters_eq(&s.total, &want);
	ledger_stats_clear(&s);
	ledger_close(l);
}
END_TEST

START_TEST(test_history)
{
	struct ledger *l = open_ok(sdir, NULL);
	struct collect c = { 0, INT64_MIN, true, 7 };
	char cause[256];

	for (int i = 0; i < 30; i++)
		append_ok(l, i);
	ck_assert_int_eq(history(l, 0).n, 30);
	ck_assert_int_eq(history(l, base_ms + 10 * 7 * 60 * 1000).n, 20);
	ck_assert_int_eq(ledger_foreach_record(l, 0, collect_cb, &c, cause, sizeof cause), 0);
	ck_assert_int_eq(c.n, 7);
	ledger_close(l);
}
END_TEST

struct numbered {
	uint64_t first, last;
	int n;
	bool consecutive;
	int stop_at;
};

static int
numbered_cb(const struct ledger_record *r, uint64_t rid, void *arg)
{
	struct numbered *c = arg;

	(void)r;
	if (c->n == 0)
		c->first = rid;
	else if (rid != c->last + 1)
		c->consecutive = false;
	c->last = rid;
	c->n++;
	return c->stop_at > 0 && c->n == c->stop_at;
}

/* Records come by number, once each, in order, resumable from a position and a file. */
START_TEST(test_foreach_after)
{
	struct ledger_options o = opts(LEDGER_FSYNC_EVERYSEC, 30, 2048);
	struct ledger *l = open_ok(sdir, &o);
	struct numbered a = { 0, 0, 0, true, 30 }, b = { 0, 0, 0, true, 0 }, c = { 0, 0, 0, true, 0 };
	uint64_t from = 0, from_b;
	char cause[512];

	ck_assert_uint_eq(ledger_last_rid(l), 0);
	for (int i = 0; i < 100; i++)
		append_ok(l, i);
	ck_assert_uint_eq(ledger_last_rid(l), 100);
	ck_assert_uint_gt(journal_count(), 3);
	ck_assert_int_eq(ledger_foreach_after(l, 0, &from, numbered_cb, &a, cause, sizeof cause), 0);
	ck_assert_int_eq(a.n, 30);
	ck_assert_uint_eq(a.first, 1);
	ck_assert_uint_eq(a.last, 30);
	ck_assert(a.consecutive);
	ck_assert_uint_gt(from, 1);     /* the next read skips the files before */
	from_b = from;
	ck_assert_int_eq(ledger_foreach_after(l, 30, &from_b, numbered_cb, &b, cause, sizeof cause), 0);
	ck_assert_int_eq(b.n, 70);
	ck_assert_uint_eq(b.first, 31);
	ck_assert_uint_eq(b.last, 100);
	ck_assert(b.consecutive);
	ledger_close(l);

	/* numbers survive a restart and a reset */
	l = open_ok(sdir, &o);
	ck_assert_uint_eq(ledger_last_rid(l), 100);
	ck_assert_int_eq(ledger_reset(l, cause, sizeof cause), 0);
	append_ok(l, 100);
	ck_assert_uint_eq(ledger_last_rid(l), 101);
	from = 0;
	ck_assert_int_eq(ledger_foreach_after(l, 100, &from, numbered_cb, &c, cause, sizeof cause), 0);
	ck_assert_int_eq(c.n, 1);
	ck_assert_uint_eq(c.first, 101);
	ledger_close(l);
}
END_TEST

/* Records by number, from a cursor: each read costs only what was appended since. */
START_TEST(test_read_after)
{
	struct ledger_options o = opts(LEDGER_FSYNC_EVERYSEC, 30, 2048);
	struct ledger *l = open_ok(sdir, &o);
	struct numbered a = { 0, 0, 0, true, 30 }, b = { 0, 0, 0, true, 0 }, c = { 0, 0, 0, true, 0 };
	struct numbered d = { 0, 0, 0, true, 0 }, e = { 0, 0, 0, true, 0 };
	struct ledger_cursor cur = { 0 }, at;
	char cause[512], path[PATH_MAX];
	static const uint8_t torn[5] = { 0, 0, 0, 40, 1 };

	for (int i = 0; i < 100; i++)
		append_ok(l, i);
	ck_assert_uint_gt(journal_count(), 3);
	ck_assert_int_eq(ledger_read_after(l, 0, &cur, numbered_cb, &a, cause, sizeof cause), 0);
	ck_assert_int_eq(a.n, 30);
	ck_assert_uint_eq(a.first, 1);
	ck_assert_uint_eq(a.last, 30);
	ck_assert_uint_eq(cur.top, 30);
	ck_assert_int_eq(ledger_read_after(l, 0, &cur, numbered_cb, &b, cause, sizeof cause), 0);
	ck_assert_int_eq(b.n, 70);
	ck_assert_uint_eq(b.first, 31);
	ck_assert_uint_eq(b.last, 100);
	ck_assert(b.consecutive);
	/* nothing new: nothing read again */
	at = cur;
	ck_assert_int_eq(ledger_read_after(l, 0, &cur, numbered_cb, &c, cause, sizeof cause), 0);
	ck_assert_int_eq(c.n, 0);
	ck_assert_uint_eq(cur.seq, at.seq);
	ck_assert_uint_eq(cur.offset, at.offset);
	/* a torn record at the end waits; what comes after it is read */
	journal_path(cur.seq, path, sizeof path);
	file_write(path, torn, sizeof torn, "ab");
	ck_assert_int_eq(ledger_read_after(l, 0, &cur, numbered_cb, &c, cause, sizeof cause), 0);
	ck_assert_int_eq(c.n, 0);
	ck_assert_uint_eq(cur.offset, at.offset);
	append_ok(l, 100);
	append_ok(l, 101);
	ck_assert_int_eq(ledger_read_after(l, 0, &cur, numbered_cb, &c, cause, sizeof cause), 0);
	ck_assert_int_eq(c.n, 2);
	ck_assert_uint_eq(c.first, 101);
	ck_assert_uint_eq(c.last, 102);
	/* records at or below after_rid are skipped */
	memset(&cur, 0, sizeof cur);
	ck_assert_int_eq(ledger_read_after(l, 95, &cur, numbered_cb, &d, cause, sizeof cause), 0);
	ck_assert_int_eq(d.n, 7);
	ck_assert_uint_eq(d.first, 96);
	/* a reset numbers the files from 1 again: the cursor starts over */
	ck_assert_int_eq(ledger_reset(l, cause, sizeof cause), 0);
	append_ok(l, 102);
	ck_assert_int_eq(ledger_read_after(l, 0, &cur, numbered_cb, &e, cause, sizeof cause), 0);
	ck_assert_int_eq(e.n, 1);
	ck_assert_uint_eq(e.first, 103);
	ledger_close(l);
}
END_TEST

/* Checks that record rid carries the fleet reservation rid * 1000 + 7 when rid is odd (rid 5: a lease admission). */
static int
reservation_cb(const struct ledger_record *r, uint64_t rid, void *arg)
{
	int *n = arg;

	if (rid == 5)
		ck_assert_uint_eq(r->reservation, (UINT64_C(1) << 62) | UINT64_C(1765000000123456));
	else
		ck_assert_uint_eq(r->reservation, rid % 2 ? rid * 1000 + 7 : 0);
	(*n)++;
	return 0;
}

/* A record's fleet reservation survives the journal and a restart. */
START_TEST(test_reservation_kept)
{
	struct ledger *l = open_ok(sdir, NULL);
	struct ledger_record r;
	uint64_t from = 0;
	char cause[512] = "";
	int n = 0;

	for (int i = 0; i < 10; i++) {
		rec_make(&r, i);
		r.reservation = (i + 1) % 2 ? (uint64_t)(i + 1) * 1000 + 7 : 0;
		if (i == 4)             /* a lease admission: bit 62 and a time in us */
			r.reservation = (UINT64_C(1) << 62) | UINT64_C(1765000000123456);
		ck_assert_msg(ledger_append(l, &r, cause, sizeof cause) == 0, "%s", cause);
	}
	ck_assert_int_eq(ledger_foreach_after(l, 0, &from, reservation_cb, &n, cause, sizeof cause), 0);
	ck_assert_int_eq(n, 10);
	ledger_close(l);
	l = open_ok(sdir, NULL);
	from = 0;
	n = 0;
	ck_assert_int_eq(ledger_foreach_after(l, 0, &from, reservation_cb, &n, cause, sizeof cause), 0);
	ck_assert_int_eq(n, 10);
	ledger_close(l);
}
END_TEST

/* Records newest first, with the time to the first token where it was measured. */
struct newest {
	int n;
	int64_t last_time;
	bool descending;
	int stop_at;
	int with_ttft;
	int64_t ttft_sum;
};

static int
newest_cb(const struct ledger_record *r, void *arg)
{
	struct newest *c = arg;

	if (r->time_ms > c->last_time)
		c->descending = false;
	c->last_time = r->time_ms;
	c->n++;
	if (r->has_ttft) {
		c->with_ttft++;
		c->ttft_sum += r->ttft_ms;
	}
	return c->stop_at > 0 && c->n == c->stop_at;
}

static struct newest
newest(struct ledger *l, int64_t since_ms, int64_t until_ms, size_t max_bytes, int stop_at,
    bool *truncated)
{
	struct newest c = { 0, INT64_MAX, true, stop_at, 0, 0 };
	char cause[512];

	ck_assert_int_eq(ledger_foreach_record_newest(l, since_ms, until_ms, max_bytes, newest_cb,
	    &c, truncated, cause, sizeof cause), 0);
	return c;
}

START_TEST(test_history_newest)
{
	struct ledger_options o = opts(LEDGER_FSYNC_NO, 30, 1024);
	struct ledger *l = open_ok(sdir, &o);
	struct ledger_record r;
	struct newest c;
	char cause[256];
	bool truncated;

	for (int i = 0; i < 40; i++) {
		rec_make(&r, i);
		r.has_ttft = i % 2 == 0;        /* odd ones stand for records written before ttft_ms */
		r.ttft_ms = i;
		ck_assert_int_eq(ledger_append(l, &r, cause, sizeof cause), 0);
	}
	ck_assert_uint_gt(journal_count(), 2);
	c = newest(l, -1, -1, 0, 0, &truncated);
	ck_assert_int_eq(c.n, 40);
	ck_assert(c.descending);
	ck_assert(!truncated);
	ck_assert_int_eq(c.with_ttft, 20);
	ck_assert_int_eq(c.ttft_sum, 380);     /* 0 + 2 + ... + 38 */
	ck_assert_int_eq(c.last_time, base_ms);

	/* [since, until): records 10 .. 19 */
	c = newest(l, base_ms + 10 * 7 * 60 * 1000, base_ms + 20 * 7 * 60 * 1000, 0, 0, &truncated);
	ck_assert_int_eq(c.n, 10);
	ck_assert_int_eq(c.last_time, base_ms + 10 * 7 * 60 * 1000);

	/* stopped by the callback after the newest 5 */
	c = newest(l, -1, -1, 0, 5, &truncated);
	ck_assert_int_eq(c.n, 5);
	ck_assert_int_eq(c.last_time, base_ms + 35 * 7 * 60 * 1000);

	/* a byte bound: one file at least, then truncated */
	c = newest(l, -1, -1, 1, 0, &truncated);
	ck_assert(truncated);
	ck_assert_int_gt(c.n, 0);
	ck_assert_int_lt(c.n, 40);
	ck_assert(c.descending);
	ledger_close(l);

	/* after a reopen the times to the first token are still there */
	l = open_ok(sdir, &o);
	c = newest(l, -1, -1, 0, 0, &truncated);
	ck_assert_int_eq(c.n, 40);
	ck_assert_int_eq(c.with_ttft, 20);
	ledger_close(l);
}
END_TEST

/* Records waiting in memory (the disk refused them) are the newest. */
START_TEST(test_history_newest_pending)
{
	struct ledger_options o = opts(LEDGER_FSYNC_NO, 30, 0);
	struct ledger *l = open_ok(sdir, &o);
	struct newest c;
	bool truncated;

	for (int i = 0; i < 5; i++)
		append_ok(l, i);
	fail_writes("enospc");
	for (int i = 5; i < 8; i++)
		append_fails(l, i, "");
	c = newest(l, -1, -1, 0, 0, &truncated);
	ck_assert_int_eq(c.n, 8);
	ck_assert(c.descending);
	c = newest(l, -1, -1, 0, 2, &truncated);
	ck_assert_int_eq(c.last_time, base_ms + 6 * 7 * 60 * 1000);
	fail_writes("");
	ledger_close(l);
}
END_TEST

/* A named record: the named user i % 2 ? "alice" : "bob", billed as uid 1000 by a careless caller. */
static void
named_make(struct ledger_record *r, int i)
{
	rec_make(r, i);
	r->uid = 1000;
	r->user = i % 2 ? "alice" : "bob";
}

struct named_seen {
	int named;
	int system;
	bool uid_ok;
};

/* Count the records of history by kind; a named one must carry LEDGER_UID_NAMED. */
static int
named_seen_cb(const struct ledger_record *r, void *arg)
{
	struct named_seen *ns = arg;

	if (r->user != NULL) {
		ns->named++;
		ns->uid_ok &= r->uid == LEDGER_UID_NAMED &&
		    (strcmp(r->user, "alice") == 0 || strcmp(r->user, "bob") == 0);
	} else
		ns->system++;
	return 0;
}

/*
 * Named users (an API key's user with no system account) are rows of their
 * own, apart from every uid: in stats, in usage scopes, in history, through a
 * crash (journal replay) and through a snapshot.
 */
START_TEST(test_named_users)
{
	struct ledger_options o = opts(LEDGER_FSYNC_NO, 30, 0);
	struct ledger *l;
	struct stats_result s, again, mine;
	struct ledger_record r;
	struct counters alice, bob, uid1000, sum;
	struct ledger_scope scope;
	struct named_seen ns = { 0, 0, true };
	char cause[512];
	pid_t pid;
	int status;

	memset(&alice, 0, sizeof alice);
	bob = uid1000 = alice;
	/* records 0..19 by a child that dies without closing: the journal is all there is */
	ck_assert_int_ne(pid = fork(), -1);
	if (pid == 0) {
		if ((l = ledger_open(sdir, &o, cause, sizeof cause)) == NULL)
			_exit(2);
		for (int i = 0; i < 20; i++) {
			if (i % 3 == 0)
				named_make(&r, i);
			else
				rec_make(&r, i);
			if (ledger_append(l, &r, cause, sizeof cause) == -1)
				_exit(3);
		}
		_exit(0);
	}
	ck_assert_int_eq(waitpid(pid, &status, 0), pid);
	ck_assert(WIFEXITED(status) && WEXITSTATUS(status) == 0);
	for (int i = 0; i < 20; i++) {
		struct counters *c = i % 3 != 0 ? (i % 3 == 1 ? &uid1000 : NULL) : i % 2 ? &alice : &bob;
		if (c == NULL)
			continue;
		rec_make(&r, i);
		c->requests++;
		c->errors += r.status != LEDGER_DONE;
		c->prompt_tokens += (uint64_t)r.prompt_tokens;
		c->completion_tokens += (uint64_t)r.completion_tokens;
		c->total_tokens += (uint64_t)(r.prompt_tokens + r.completion_tokens);
		c->estimated += r.estimated;
		c->cost += r.cost;
	}

	l = open_ok(sdir, &o);
	ck_assert_int_eq(ledger_stats(l, "user", -1, &s), 0);
	/* uids numerically, then the names: 1000 (i % 3 == 1), 65534, alice, bob */
	ck_assert_uint_eq(s.by_user.n, 4);
	ck_assert_str_eq(s.by_user.entries[0].key, "1000");
	ck_assert_str_eq(s.by_user.entries[1].key, "65534");
	ck_assert_str_eq(s.by_user.entries[2].key, "alice");
	ck_assert_str_eq(s.by_user.entries[3].key, "bob");
	counters_eq(&s.by_user.entries[0].c, &uid1000);
	counters_eq(&s.by_user.entries[2].c, &alice);
	counters_eq(&s.by_user.entries[3].c, &bob);
	total_is(l, 0, 20, -1);

	/* budgets' scopes: a name's rows, a uid's rows without the names billed "as" it */
	scope = (struct ledger_scope){ NULL, NULL, NULL, LEDGER_UID_NAMED, "alice" };
	ledger_usage(l, &scope, -1, &sum);
	counters_eq(&sum, &alice);
	scope = (struct ledger_scope){ NULL, NULL, NULL, 1000, "" };
	ledger_usage(l, &scope, -1, &sum);
	counters_eq(&sum, &uid1000);
	scope = (struct ledger_scope){ NULL, NULL, NULL, 1000, NULL };
	ledger_usage(l, &scope, -1, &sum);
	counters_eq(&sum, &uid1000);

	/* stats_visibility own: uid 1000 sees its own rows only, never a name's */
	ck_assert_int_eq(ledger_stats_scoped(l, NULL, -1, 1000, &mine), 0);
	ck_assert_uint_eq(mine.by_user.n, 1);
	ck_assert_str_eq(mine.by_user.entries[0].key, "1000");
	ledger_stats_clear(&mine);
	ck_assert_int_eq(ledger_stats_exact(l, "user", base_ms / 1000 + 1, 1000, &mine), 0);
	ck_assert_uint_eq(mine.by_user.n, 1);
	ck_assert_str_eq(mine.by_user.entries[0].key, "1000");
	ledger_stats_clear(&mine);
	/* an exact since counts a name's records of the partial day under the name */
	ck_assert_int_eq(ledger_stats_exact(l, "user", base_ms / 1000 + 1, -1, &mine), 0);
	ck_assert_ptr_nonnull(entry(&mine.by_user, "alice"));
	ck_assert_ptr_nonnull(entry(&mine.by_user, "bob"));
	ledger_stats_clear(&mine);

	/* history carries the name */
	ck_assert_int_eq(ledger_foreach_record(l, 0, named_seen_cb, &ns, cause, sizeof cause), 0);
	ck_assert_int_eq(ns.named, 7);
	ck_assert_int_eq(ns.system, 13);
	ck_assert(ns.uid_ok);

	/* through a snapshot: close folds the rows, a reopen reads them back the same */
	ledger_close(l);
	l = open_ok(sdir, &o);
	ck_assert_int_eq(ledger_stats(l, NULL, -1, &again), 0);
	maps_eq(&s.by_user, &again.by_user);
	ledger_stats_clear(&again);
	/* more of alice after the snapshot add to the same row */
	named_make(&r, 21);
	ck_assert_int_eq(ledger_append(l, &r, cause, sizeof cause), 0);
	ledger_close(l);
	l = open_ok(sdir, &o);
	ck_assert_int_eq(ledger_stats(l, "user", -1, &again), 0);
	ck_assert_uint_eq(again.by_user.n, 4);
	ck_assert_uint_eq(entry(&again.by_user, "alice")->c.requests, alice.requests + 1);
	ledger_stats_clear(&again);
	ledger_stats_clear(&s);
	ledger_close(l);
}
END_TEST

/* Frame a msgpack body as a journal record: [u32 length][u32 CRC32C][body]. */
static void
frame_append(msgpack_sbuffer *out, const msgpack_sbuffer *body)
{
	uint8_t h[8];
	uint32_t len = (uint32_t)body->size, crc = ledger_crc32c(0, body->data, body->size);

	h[0] = len >> 24; h[1] = len >> 16; h[2] = len >> 8; h[3] = len;
	h[4] = crc >> 24; h[5] = crc >> 16; h[6] = crc >> 8; h[7] = crc;
	msgpack_sbuffer_write(out, (const char *)h, 8);
	msgpack_sbuffer_write(out, body->data, body->size);
}

static void
pack_cstr(msgpack_packer *pk, const char *s)
{
	msgpack_pack_str(pk, strlen(s));
	msgpack_pack_str_body(pk, s, strlen(s));
}

/*
 * A journal and snapshot as versions before named users wrote them (no user
 * key in records, 12-item rows) still read: their rows are the uids', and
 * named users' records added afterwards stay apart.
 */
START_TEST(test_old_format_reads)
{
	char path[PATH_MAX], cause[512];
	msgpack_sbuffer body, file;
	msgpack_packer pk;
	struct ledger *l;
	struct stats_result s;
	struct ledger_record r;
	struct named_seen ns = { 0, 0, true };
	int64_t day = ledger_day(base_ms);
	const struct counters_entry *e;

	snprintf(path, sizeof path, "%s", sdir);
	ck_assert_int_eq(mkdir(path, 0700), 0);
	snprintf(path, sizeof path, "%s/journal", sdir);
	ck_assert_int_eq(mkdir(path, 0700), 0);

	/* the snapshot: one row of uid 1000, 3 requests, 30 tokens */
	msgpack_sbuffer_init(&body);
	msgpack_packer_init(&pk, &body, msgpack_sbuffer_write);
	msgpack_pack_map(&pk, 5);
	pack_cstr(&pk, "v");
	msgpack_pack_uint32(&pk, 1);
	pack_cstr(&pk, "since");
	msgpack_pack_int64(&pk, base_ms / 1000 - 86400);
	pack_cstr(&pk, "upto");
	msgpack_pack_uint64(&pk, 0);
	pack_cstr(&pk, "rid");
	msgpack_pack_uint64(&pk, 3);
	pack_cstr(&pk, "rows");
	msgpack_pack_array(&pk, 1);
	msgpack_pack_array(&pk, 12);
	msgpack_pack_int64(&pk, day);
	pack_cstr(&pk, "qwen");
	pack_cstr(&pk, "local");
	msgpack_pack_uint32(&pk, 1000);
	msgpack_pack_nil(&pk);
	msgpack_pack_uint64(&pk, 3);        /* requests */
	msgpack_pack_uint64(&pk, 0);        /* errors */
	msgpack_pack_uint64(&pk, 20);       /* prompt */
	msgpack_pack_uint64(&pk, 10);       /* completion */
	msgpack_pack_uint64(&pk, 30);       /* total */
	msgpack_pack_uint64(&pk, 0);        /* estimated */
	msgpack_pack_double(&pk, 0.5);
	msgpack_sbuffer_init(&file);
	msgpack_sbuffer_write(&file, "OLLMSNAP\0\0\0\0\0\0\0\0", 16);
	{
		uint32_t len = (uint32_t)body.size, crc = ledger_crc32c(0, body.data, body.size);
		uint8_t *h = (uint8_t *)file.data + 8;
		h[0] = len >> 24; h[1] = len >> 16; h[2] = len >> 8; h[3] = len;
		h[4] = crc >> 24; h[5] = crc >> 16; h[6] = crc >> 8; h[7] = crc;
	}
	msgpack_sbuffer_write(&file, body.data, body.size);
	snprintf(path, sizeof path, "%s/snapshot.olm", sdir);
	file_write(path, file.data, file.size, "wb");
	msgpack_sbuffer_destroy(&file);

	/* the journal: two records of uid 1000 in the old shape (14 keys, no user) */
	msgpack_sbuffer_init(&file);
	for (int i = 0; i < 2; i++) {
		msgpack_sbuffer_clear(&body);
		msgpack_pack_map(&pk, 14);
		pack_cstr(&pk, "v");
		msgpack_pack_uint32(&pk, 1);
		pack_cstr(&pk, "time");
		msgpack_pack_int64(&pk, base_ms + 1000 * i);
		pack_cstr(&pk, "uid");
		msgpack_pack_uint32(&pk, 1000);
		pack_cstr(&pk, "tag");
		msgpack_pack_nil(&pk);
		pack_cstr(&pk, "model");
		pack_cstr(&pk, "qwen");
		pack_cstr(&pk, "upstream");
		pack_cstr(&pk, "local");
		pack_cstr(&pk, "prompt_tokens");
		msgpack_pack_int64(&pk, 7);
		pack_cstr(&pk, "completion_tokens");
		msgpack_pack_int64(&pk, 3);
		pack_cstr(&pk, "estimated");
		msgpack_pack_false(&pk);
		pack_cstr(&pk, "cost");
		msgpack_pack_double(&pk, 0.25);
		pack_cstr(&pk, "status");
		pack_cstr(&pk, "done");
		pack_cstr(&pk, "error");
		msgpack_pack_nil(&pk);
		pack_cstr(&pk, "latency_ms");
		msgpack_pack_int64(&pk, 100);
		pack_cstr(&pk, "rid");
		msgpack_pack_uint64(&pk, (uint64_t)(4 + i));
		frame_append(&file, &body);
	}
	journal_path(1, path, sizeof path);
	file_write(path, file.data, file.size, "wb");
	msgpack_sbuffer_destroy(&file);
	msgpack_sbuffer_destroy(&body);

	l = open_ok(sdir, NULL);
	ck_assert_int_eq(ledger_stats(l, "user", -1, &s), 0);
	ck_assert_uint_eq(s.by_user.n, 1);
	ck_assert_str_eq(s.by_user.entries[0].key, "1000");
	ck_assert_uint_eq(s.by_user.entries[0].c.requests, 5);
	ck_assert_uint_eq(s.by_user.entries[0].c.total_tokens, 50);
	ledger_stats_clear(&s);
	ck_assert_int_eq(ledger_foreach_record(l, 0, named_seen_cb, &ns, cause, sizeof cause), 0);
	ck_assert_int_eq(ns.system, 2);
	ck_assert_int_eq(ns.named, 0);

	/* a named user's record next to them, then a new snapshot with both kinds of rows */
	rec_make(&r, 1);
	r.time_ms = base_ms + 5000;
	r.uid = 1000;
	r.model = "qwen";
	r.upstream = "local";
	r.tag = NULL;
	r.user = "alice";
	ck_assert_int_eq(ledger_append(l, &r, cause, sizeof cause), 0);
	ledger_close(l);
	l = open_ok(sdir, NULL);
	ck_assert_int_eq(ledger_stats(l, "user", -1, &s), 0);
	ck_assert_uint_eq(s.by_user.n, 2);
	ck_assert_ptr_nonnull(e = entry(&s.by_user, "1000"));
	ck_assert_uint_eq(e->c.requests, 5);
	ck_assert_ptr_nonnull(e = entry(&s.by_user, "alice"));
	ck_assert_uint_eq(e->c.requests, 1);
	ledger_stats_clear(&s);
	ledger_close(l);
}
END_TEST

START_TEST(test_retention)
{
	struct ledger_options o = opts(LEDGER_FSYNC_NO, 2, 1024);
	struct ledger *l = open_ok(sdir, &o);
	char path[PATH_MAX];
	struct timespec old[2];
	size_t n;

	for (int i = 0; i < 40; i++)
		append_ok(l, i);
	ck_assert_int_eq(ledger_snapshot(l, NULL, 0), 0);
	n = journal_count();
	ck_assert_uint_gt(n, 2);               /* folded but recent: kept */
	journal_path(1, path, sizeof path);
	old[0].tv_sec = old[1].tv_sec = time(NULL) - 3 * 86400;
	old[0].tv_nsec = old[1].tv_nsec = 0;
	ck_assert_int_eq(utimensat(AT_FDCWD, path, old, 0), 0);
	ck_assert_int_eq(ledger_snapshot(l, NULL, 0), 0);
	ck_assert(!file_exists(path));
	ck_assert_uint_eq(journal_count(), n - 1);
	ledger_close(l);
	l = open_ok(sdir, &o);
	total_is(l, 0, 40, -1);
	ledger_close(l);
}
END_TEST

START_TEST(test_sanitized_records)
{
	struct ledger *l = open_ok(sdir, NULL);
	struct ledger_record r;
	struct stats_result s;
	char longtag[3000], cause[256];

	memset(longtag, 'a', sizeof longtag - 1);
	longtag[sizeof longtag - 1] = '\0';
	longtag[LEDGER_STRING_MAX - 1] = (char)0xc3;     /* a 2-byte character across the limit */
	longtag[LEDGER_STRING_MAX] = (char)0xa9;
	memset(&r, 0, sizeof r);
	r.time_ms = base_ms;
	r.model = NULL;
	r.upstream = "up\xff";
	r.tag = longtag;
	r.prompt_tokens = -5;
	r.completion_tokens = 7;
	r.cost = NAN;
	r.status = LEDGER_DONE;
	r.error_code = "ignored";
	ck_assert_int_eq(ledger_append(l, &r, cause, sizeof cause), 0);
	r.tag = "";
	r.cost = -1;
	ck_assert_int_eq(ledger_append(l, &r, cause, sizeof cause), 0);
	r.status = (enum ledger_status)42;
	ck_assert_int_eq(ledger_append(l, &r, cause, sizeof cause), -1);
	ck_assert(ledger_healthy(l));
	ledger_close(l);

	l = open_ok(sdir, NULL);
	ck_assert_int_eq(ledger_stats(l, NULL, -1, &s), 0);
	ck_assert_uint_eq(s.total.requests, 2);
	ck_assert_uint_eq(s.total.prompt_tokens, 0);
	ck_assert_uint_eq(s.total.total_tokens, 14);
	ck_assert(s.total.cost == 0);
	ck_assert_uint_eq(s.by_model.n, 1);
	ck_assert_str_eq(s.by_model.entries[0].key, "");
	ck_assert_uint_eq(s.by_tag.n, 2);
	ck_assert_str_eq(s.by_tag.entries[0].key, "");
	ck_assert_uint_eq(strlen(s.by_tag.entries[1].key), LEDGER_STRING_MAX - 1);
	ledger_stats_clear(&s);
	ledger_close(l);
}
END_TEST

/* A small deterministic generator. */
static uint64_t rng_state;

static uint32_t
rng(void)
{
	rng_state ^= rng_state << 13;
	rng_state ^= rng_state >> 7;
	rng_state ^= rng_state << 17;
	return (uint32_t)(rng_state >> 11);
}

START_TEST(test_fuzz_open)
{
	struct ledger_options o = opts(LEDGER_FSYNC_NO, 30, 0);
	char path[PATH_MAX], snap[PATH_MAX], cause[512];
	uint8_t *good, *buf;
	size_t len, blen;
	int nrec = 25, saved_err, null;

	crash_after(&o, 0, nrec, false);
	journal_path(1, path, sizeof path);
	snprintf(snap, sizeof snap, "%s/snapshot.olm", sdir);
	good = file_read(path, &len);
	buf = malloc(len * 2 + 256);
	ck_assert_ptr_nonnull(buf);
	rng_state = 0x9e3779b97f4a7c15u;
	/* every corruption is logged: keep the test log readable */
	fflush(stderr);
	ck_assert_int_ne(saved_err = dup(2), -1);
	ck_assert_int_ne(null = open("/dev/null", O_WRONLY), -1);
	dup2(null, 2);
	close(null);
	for (int iter = 0; iter < 400; iter++) {
		struct ledger *l;
		struct counters c;
		int kind = iter % 4;

		memcpy(buf, good, len);
		blen = len;
		if (kind == 0) {            /* flip bytes */
			for (int k = 0, m = 1 + rng() % 8; k < m; k++)
				buf[rng() % blen] ^= (uint8_t)(1 + rng() % 255);
		} else if (kind == 1) {     /* cut, then maybe garbage */
			blen = rng() % len;
			for (int k = 0, m = rng() % 40; k < m; k++)
				buf[blen++] = (uint8_t)rng();
		} else if (kind == 2) {     /* insert a random chunk */
			size_t at = rng() % len, m = 1 + rng() % 64;
			memmove(buf + at + m, buf + at, len - at);
			for (size_t k = 0; k < m; k++)
				buf[at + k] = (uint8_t)(rng() % 3 == 0 ? 0 : rng());
			blen = len + m;
		} else {                    /* noise */
			blen = rng() % 512;
			for (size_t k = 0; k < blen; k++)
				buf[k] = (uint8_t)(rng() % 4 == 0 ? 0 : rng());
		}
		unlink(snap);
		file_write(path, buf, blen, "wb");
		l = ledger_open(sdir, &o, cause, sizeof cause);
		ck_assert_msg(l != NULL, "iteration %d: %s", iter, cause);
		c = total(l);
		ck_assert_uint_le(c.requests, (uint64_t)nrec);
		ck_assert_uint_eq(history(l, 0).n, c.requests);
		/* whatever was repaired stays repaired: a reopen from the journal agrees */
		append_ok(l, nrec);
		ck_assert_int_eq(ledger_snapshot(l, NULL, 0), 0);
		ledger_close(l);
		unlink(snap);
		l = ledger_open(sdir, &o, cause, sizeof cause);
		ck_assert_msg(l != NULL, "iteration %d reopen: %s", iter, cause);
		ck_assert_uint_eq(total(l).requests, c.requests + 1);
		ledger_close(l);
		/* leave one journal file for the next round */
		nftw(sdir, rm_cb, 16, FTW_DEPTH | FTW_PHYS);
		ck_assert_int_eq(mkdir(sdir, 0750), 0);
		snprintf(cause, sizeof cause, "%s/journal", sdir);
		ck_assert_int_eq(mkdir(cause, 0750), 0);
	}
	dup2(saved_err, 2);
	close(saved_err);
	free(buf);
	free(good);
}
END_TEST

START_TEST(test_fuzz_snapshot)
{
	char snap[PATH_MAX], cause[512];
	uint8_t *good, *buf;
	size_t len;
	struct ledger *l = open_ok(sdir, NULL);

	for (int i = 0; i < 60; i++)
		append_ok(l, i);
	ledger_close(l);
	snprintf(snap, sizeof snap, "%s/snapshot.olm", sdir);
	good = file_read(snap, &len);
	buf = malloc(len);
	rng_state = 0x1234567887654321u;
	for (int iter = 0; iter < 300; iter++) {
		size_t blen = len;
		memcpy(buf, good, len);
		if (iter % 2 == 0)
			buf[rng() % len] ^= (uint8_t)(1 + rng() % 255);
		else
			blen = rng() % len;
		file_write(snap, buf, blen, "wb");
		cause[0] = '\0';
		l = ledger_open(sdir, NULL, cause, sizeof cause);
		/* a changed snapshot never passes its checksum */
		ck_assert_ptr_null(l);
		ck_assert_msg(strstr(cause, "snapshot.olm") != NULL, "cause: %s", cause);
	}
	file_write(snap, good, len, "wb");
	l = open_ok(sdir, NULL);
	total_is(l, 0, 60, -1);
	ledger_close(l);
	free(buf);
	free(good);
}
END_TEST

/* --- main ---------------------------------------------------------------------- */

/*
 * The write-failure tests need tests/ledger/failwrite.so preloaded: when it
 * is not, run this program again with it in LD_PRELOAD.
 */
static void
preload_shim(char **argv)
{
	const char *top = getenv("top_builddir");
	const char *pre = getenv("LD_PRELOAD");
	const char *asan = getenv("ASAN_OPTIONS");
	char shim[PATH_MAX], env[PATH_MAX * 2], aenv[1024];

	if (dlsym(RTLD_DEFAULT, "ollm_failwrite_loaded") != NULL)
		return;
	if (getenv("CHECK_LEDGER_REEXEC") != NULL) {
		fprintf(stderr, "check_ledger: LD_PRELOAD did not load the failwrite shim\n");
		exit(99);
	}
	snprintf(shim, sizeof shim, "%s/tests/ledger/.libs/failwrite.so", top ? top : ".");
	if (access(shim, R_OK) == -1) {
		fprintf(stderr, "check_ledger: %s: %s (build it with make check, or set "
		    "top_builddir)\n", shim, strerror(errno));
		exit(99);
	}
	snprintf(env, sizeof env, "%s%s%s", shim, pre ? ":" : "", pre ? pre : "");
	setenv("LD_PRELOAD", env, 1);
	/* sanitizer runtimes must otherwise come first in the preload list */
	snprintf(aenv, sizeof aenv, "%s%sverify_asan_link_order=0", asan ? asan : "",
	    asan && *asan ? ":" : "");
	setenv("ASAN_OPTIONS", aenv, 1);
	setenv("CHECK_LEDGER_REEXEC", "1", 1);
	execv("/proc/self/exe", argv);
	fprintf(stderr, "check_ledger: exec: %s\n", strerror(errno));
	exit(99);
}

static Suite *
ledger_suite(void)
{
	Suite *s = suite_create("ledger");
	TCase *tc = tcase_create("ledger");

	tcase_add_checked_fixture(tc, setup, teardown);
	tcase_set_timeout(tc, 120);
	tcase_add_test(tc, test_basics);
	tcase_add_test(tc, test_crc32c_sliced);
	tcase_add_test(tc, test_stats_exact_since);
	tcase_add_test(tc, test_stats_exact_since_scoped);
	tcase_add_test(tc, test_stats_exact_since_after_retention);
	tcase_add_test(tc, test_reopen_identical);
	tcase_add_loop_test(tc, test_crash_keeps_everything, 0, 2);
	tcase_add_test(tc, test_torn_tail);
	tcase_add_test(tc, test_torn_header);
	tcase_add_test(tc, test_empty_last_file);
	tcase_add_loop_test(tc, test_corrupt_middle, 0, 3);
	tcase_add_test(tc, test_undecodable_records);
	tcase_add_test(tc, test_rotation_compaction);
	tcase_add_test(tc, test_day_rotation);
	tcase_add_test(tc, test_batch_one_write);
	tcase_add_test(tc, test_batch_day_split);
	tcase_add_test(tc, test_batch_write_fails);
	tcase_add_test(tc, test_amend_error);
	tcase_add_test(tc, test_batch_before_snapshot);
	tcase_add_test(tc, test_crash_between_snapshot_and_delete);
	tcase_add_test(tc, test_folded_files_not_recounted);
	tcase_add_test(tc, test_lock);
	tcase_add_test(tc, test_stats_scoped_to_a_uid);
	tcase_add_test(tc, test_symlinks_refused);
	tcase_add_test(tc, test_open_fails);
	tcase_add_test(tc, test_corrupt_snapshot_refused);
	tcase_add_loop_test(tc, test_write_failure_recovery, 0, 2);
	tcase_add_test(tc, test_short_write_leaves_no_half_record);
	tcase_add_test(tc, test_fsync_failure);
	tcase_add_loop_test(tc, test_fsync_failure_new_file, 0, 2);
	tcase_add_test(tc, test_pending_bound);
	tcase_add_test(tc, test_pending_folded_into_snapshot);
	tcase_add_test(tc, test_reset_archives);
	tcase_add_test(tc, test_stats_dimensions);
	tcase_add_test(tc, test_history);
	tcase_add_test(tc, test_foreach_after);
	tcase_add_test(tc, test_read_after);
	tcase_add_test(tc, test_reservation_kept);
	tcase_add_test(tc, test_history_newest);
	tcase_add_test(tc, test_history_newest_pending);
	tcase_add_test(tc, test_retention);
	tcase_add_test(tc, test_named_users);
	tcase_add_test(tc, test_old_format_reads);
	tcase_add_test(tc, test_sanitized_records);
	tcase_add_test(tc, test_fuzz_open);
	tcase_add_test(tc, test_fuzz_snapshot);
	suite_add_tcase(s, tc);
	return s;
}

int
main(int argc, char **argv)
{
	const char *t = getenv("TMPDIR");
	SRunner *sr;
	int failed;

	preload_shim(argv);
	log_init("check_ledger", 1);
	if (t == NULL || *t == '\0' || strlen(t) > 150)
		t = "/tmp";
	snprintf(rundir, sizeof rundir, "%s/check_ledger-XXXXXX", t);
	if (mkdtemp(rundir) == NULL) {
		fprintf(stderr, "check_ledger: %s: %s\n", rundir, strerror(errno));
		return 99;
	}
	sr = srunner_create(ledger_suite());
	srunner_run_all(sr, CK_NORMAL);
	failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	nftw(rundir, rm_cb, 16, FTW_DEPTH | FTW_PHYS);
	return failed == 0 ? 0 : 1;
}
