/* ledger.c: the durable usage ledger: journal, aggregates, snapshot, queries. */
#ifndef OLLM_LEDGER_H
#define OLLM_LEDGER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "protocol/message.h"

/*
 * Files under the state directory:
 *
 *   lock                 flock(2)ed while a ledger is open: one owner at a time
 *   journal/journal-<seq>.olj
 *                        append-only; seq is a zero-padded decimal >= 1. A
 *                        record is [u32 big-endian body length][u32 big-endian
 *                        CRC32C of the body][body: a msgpack map, see ledger.c],
 *                        written with one write(2).
 *   snapshot.olm         "OLLMSNAP" [u32 length][u32 CRC32C][msgpack body]:
 *                        the aggregate rows, `since`, and `upto`, the highest
 *                        journal seq whose records the rows include. Replaced
 *                        atomically (temp file, fsync, rename, fsync of the
 *                        directory). Journal files with seq <= upto are never
 *                        counted again; they stay only for per-record history
 *                        until retention_days have passed.
 *   archive/<UTC time>/  what ledger_reset moved aside (snapshot.olm, journal/)
 *
 * A failed fdatasync is never retried on the same file (the kernel may have
 * dropped its dirty pages and report success the next time): the file is
 * closed for good and the records written to it since its last good
 * fdatasync are written again, in order, to a new journal file, which is
 * then synced. Each record carries a number (rid) that is never reused, so
 * replay and history count a record found in both files once.
 *
 * Recovery at open: the last journal file's torn or corrupt tail (a short
 * header or body, a bad CRC, an undecodable body with nothing valid after it)
 * is cut with a warning saying how many bytes went. A corrupt stretch followed
 * by valid records is skipped (the scan resumes at the next offset where a
 * whole record verifies) with an error-level message, and nothing after it is
 * lost or rewritten. An unreadable or corrupt snapshot makes ledger_open fail:
 * counting from zero would silently lift every budget.
 */

#define LEDGER_STRING_MAX	1024	/* longer strings are cut at a character boundary */
#define LEDGER_RECORD_MAX	16384	/* body bytes; larger lengths are corruption */
#define LEDGER_PENDING_MAX	100000	/* unwritten records kept in memory by default */
#define LEDGER_ROTATE_BYTES	((size_t)64 * 1024 * 1024)
#define LEDGER_RETENTION_DAYS	30

enum ledger_status { LEDGER_DONE, LEDGER_ERROR, LEDGER_CANCELLED };

enum ledger_fsync {
	LEDGER_FSYNC_EVERYSEC,      /* ledger_tick fdatasyncs when something was written */
	LEDGER_FSYNC_ALWAYS,        /* every append is fdatasynced before it returns */
	LEDGER_FSYNC_NO             /* left to the kernel */
};

struct ledger_options {
	enum ledger_fsync fsync;
	int retention_days;         /* folded journal files older than this are deleted; 0: at once */
	size_t rotate_bytes;        /* a journal file is closed past this size; 0: default; at most 1 GiB */
	size_t pending_max;         /* unwritten records kept in memory; 0: default */
};

/*
 * The uid of a named user's records: (uid_t)-1, which no account can have
 * (setuid(2) reads it as "unchanged"; the configuration refuses it as a uid).
 * Named users' rows are kept apart by name, and a query scoped to one local
 * uid (stats_visibility "own", logs of one's own rows) never matches them.
 */
#define LEDGER_UID_NAMED	UINT32_MAX

/*
 * One finished, failed or cancelled chat request. Strings are borrowed for
 * the call. A non-empty user makes the record a named user's: it is stored
 * with uid LEDGER_UID_NAMED whatever uid says, and counted under the name.
 * NULL model or upstream is stored as "". A NULL or empty tag is
 * "no tag". error_code is kept only when status is not LEDGER_DONE. Negative
 * counts and a negative or non-finite cost are stored as 0; bytes that are not
 * UTF-8 become '?'.
 */
struct ledger_record {
	int64_t time_ms;            /* ms since the epoch, UTC */
	uint32_t uid;               /* LEDGER_UID_NAMED when user is set */
	const char *user;           /* a named user (an API key's, not a system account); NULL or "": uid's */
	const char *tag;
	const char *model;
	const char *upstream;
	int64_t prompt_tokens;
	int64_t completion_tokens;
	bool estimated;
	double cost;
	enum ledger_status status;
	const char *error_code;
	int64_t latency_ms;
	bool has_ttft;              /* ttft_ms was measured (records before it have none) */
	int64_t ttft_ms;            /* ms from the request to the first token */
	uint64_t reservation;       /* the fleet reservation it settles; 0: none */
};

/*
 * A usage filter: NULL strings and uid -1 match anything; tag "" matches
 * untagged rows, user "" system users' rows.
 */
struct ledger_scope {
	const char *model;
	const char *upstream;
	const char *tag;
	int64_t uid;
	const char *user;           /* a named user's rows only */
};

/* Called per record; return non-zero to stop. Strings live until the callback returns. */
typedef int (*ledger_record_cb)(const struct ledger_record *, void *);

struct ledger;

/* Defaults: everysec, 30 days, 64 MiB, 100000 pending records. */
void ledger_options_default(struct ledger_options *);

/*
 * Open (creating when missing) the ledger in state_dir and rebuild the
 * aggregates from snapshot and journal; opts NULL means defaults. NULL with
 * cause filled when the directory cannot be used, another process holds it,
 * or a file cannot be read.
 */
struct ledger *ledger_open(const char *state_dir, const struct ledger_options *opts,
    char *cause, size_t cause_len);

/* Write what is pending, fsync, fold everything into a snapshot and free. */
void ledger_close(struct ledger *);

/*
 * Record one request. It is counted in the aggregates at once. 0 once its
 * bytes are in the journal (write(2) returned; under "always" also
 * fdatasynced, if need be in a new file after the current one's fdatasync
 * failed). -1 with cause naming the file and the error when it is not: the
 * record is then kept in memory (up to pending_max, beyond which it is
 * logged and dropped from the journal) and written, in order, by the next
 * append, ledger_probe or ledger_tick; ledger_healthy is false until then.
 */
int ledger_append(struct ledger *, const struct ledger_record *, char *cause, size_t cause_len);

/*
 * The same in two steps, so that the records finished in one pass of the
 * event loop are written with one write(2): ledger_stage counts a record
 * and adds it to a batch (-1 with cause when it cannot be encoded, or memory
 * for the batch runs out: it is then pending as after a failed write);
 * ledger_commit writes the whole batch and answers for all of it as
 * ledger_append does for one record (also for a batch that a snapshot,
 * reset or close had to write first). Staged records are counted at once.
 */
int ledger_stage(struct ledger *, const struct ledger_record *, char *cause, size_t cause_len);
int ledger_commit(struct ledger *, char *cause, size_t cause_len);

/* Records staged and not yet committed. */
size_t ledger_staged(const struct ledger *);

/*
 * A record still waiting to be written (its write failed) ends otherwise
 * than it was staged: its client was told error code instead of done. It
 * is written with status LEDGER_ERROR and that code, and counted as an
 * error. -1 when it is not waiting (already in the journal, or dropped).
 */
int ledger_amend_error(struct ledger *, uint64_t rid, const char *code);

/* Once a second: retry failed writes, fsync under everysec, compact when due. */
void ledger_tick(struct ledger *, int64_t now_ms);

/*
 * Retry pending writes (after a failed fsync, into a new file) and sync that
 * file; 0 when the ledger is healthy afterwards.
 */
int ledger_probe(struct ledger *, char *cause, size_t cause_len);

/* False while records wait in memory or an fsync failed. */
bool ledger_healthy(const struct ledger *);

/* Records waiting in memory to be written. */
size_t ledger_pending(const struct ledger *);

/* Epoch second the ledger began (first open, or the last reset). */
int64_t ledger_since(const struct ledger *);

/*
 * Fill out (which the caller clears with ledger_stats_clear): total plus, for
 * by NULL, by_model, by_user and by_tag; for by "model", "user", "tag" or
 * "day", only that map. since (epoch seconds, -1 none) has day granularity:
 * it selects whole UTC days from the one holding since. out->since is the
 * later of the ledger's start and the start of that day. Keys: the model
 * name; the uid in decimal, or a named user's name; the tag, with untagged
 * requests under ""; the UTC date as YYYY-MM-DD. Entries are sorted by key
 * (uids and days numerically, named users after the uids by name).
 * max_budget and budget_left are NAN, budgets empty: budgets are the
 * caller's. -1 with errno EINVAL for an unknown by, ENOMEM.
 */
int ledger_stats(struct ledger *, const char *by, int64_t since, struct stats_result *out);

/* As ledger_stats, but the total and the maps count only the rows of uid (-1: all). */
int ledger_stats_scoped(struct ledger *, const char *by, int64_t since, int64_t uid,
    struct stats_result *out);

/*
 * As ledger_stats, but since is exact: whole UTC days after the one holding
 * since come from the aggregates, and that day's part from since on from the
 * journal's records (ledger_foreach_record). When retention has already
 * removed some of that day's records, or the journal cannot be read, the
 * whole day is counted and out->since says so. out->since is the later of
 * the ledger's start and the instant counted from. The total and the maps
 * count only the rows of uid (-1: all), as ledger_stats_scoped.
 */
int ledger_stats_exact(struct ledger *, const char *by, int64_t since, int64_t uid,
    struct stats_result *out);

/* Free what a stats_result holds (maps, and budgets with their strings) and zero it. */
void ledger_stats_clear(struct stats_result *);

/* Sum the rows matching scope from UTC day from_day on (-1: all days). Cost: one pass over the rows. */
void ledger_usage(const struct ledger *, const struct ledger_scope *, int64_t from_day,
    struct counters *out);

/*
 * Fold everything into a snapshot, move snapshot.olm and journal/ to
 * archive/<UTC time>/ and start empty with since = now. Nothing is deleted.
 */
int ledger_reset(struct ledger *, char *cause, size_t cause_len);

/*
 * Write the snapshot now, folding in the current journal file (which is then
 * closed) and any records that could not be written, and apply retention.
 */
int ledger_snapshot(struct ledger *, char *cause, size_t cause_len);

/*
 * Call cb for each record with time_ms >= since_ms still in the journal
 * files (retained history), in file order, then for records waiting in
 * memory. Reads the files synchronously: the cost grows with retention.
 * 0 when done or stopped by cb, -1 with cause when a file cannot be read.
 */
int ledger_foreach_record(struct ledger *, int64_t since_ms, ledger_record_cb cb, void *arg,
    char *cause, size_t cause_len);

/* Called per numbered record (rid: its number); return non-zero to stop. */
typedef int (*ledger_numbered_cb)(const struct ledger_record *, uint64_t rid, void *);

/*
 * Call cb, in ascending rid order and once per rid, for each record written
 * to a journal file still present whose number is above after_rid, reading
 * the files from seq *from_seq on (start with 0). *from_seq is moved to the
 * file that held the last record passed, so the next call starts there.
 * Records waiting in memory and records of older versions (no number) are
 * not passed. 0 when done or stopped by cb, -1 with cause.
 */
int ledger_foreach_after(struct ledger *, uint64_t after_rid, uint64_t *from_seq,
    ledger_numbered_cb cb, void *arg, char *cause, size_t cause_len);

/* Where a reader of the journal stands; all zero: at the start. */
struct ledger_cursor {
	uint64_t seq;               /* the journal file */
	uint64_t offset;            /* the bytes of it read */
	uint64_t top;               /* the highest rid passed */
};

/*
 * As ledger_foreach_after, but reading only what was appended since the
 * cursor (which it moves past each record passed): the cost is that of the
 * new records, not of the files. A reset or a file replaced starts over.
 */
int ledger_read_after(struct ledger *, uint64_t after_rid, struct ledger_cursor *,
    ledger_numbered_cb cb, void *arg, char *cause, size_t cause_len);

/* The number of the last record appended (written or not), 0 before the first. */
uint64_t ledger_last_rid(const struct ledger *);
/*
 * Call cb for each record with since_ms <= time_ms < until_ms (-1: no bound),
 * newest first, each record once: the records waiting in memory, then the
 * journal files from the newest back. A file is read whole; once max_bytes (0: no bound) have
 * been read, the walk stops before the next file and sets *truncated. The
 * walk also stops at the first record older than since_ms. 0 when done or
 * stopped by cb, -1 with cause when a file cannot be read.
 */
int ledger_foreach_record_newest(struct ledger *, int64_t since_ms, int64_t until_ms,
    size_t max_bytes, ledger_record_cb cb, void *arg, bool *truncated,
    char *cause, size_t cause_len);

/* "always", "everysec" or "no"; -1 for anything else. */
int ledger_parse_fsync(const char *, enum ledger_fsync *);
const char *ledger_fsync_name(enum ledger_fsync);

/* "done", "error", "cancelled". */
const char *ledger_status_name(enum ledger_status);

/* UTC day (days since the epoch) of a time in ms. */
int64_t ledger_day(int64_t time_ms);

/* CRC32C (Castagnoli) of len bytes, continuing from crc (start with 0). */
uint32_t ledger_crc32c(uint32_t crc, const void *, size_t len);

#endif
