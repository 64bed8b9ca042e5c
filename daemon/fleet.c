/* fleet.c: ship the ledger to a shared PostgreSQL table; fleet-wide stats and budgets. */
#include "config.h"

#include <errno.h>
#include <inttypes.h>
#include <limits.h>
#include <math.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/queue.h>
#include <time.h>
#include <unistd.h>

#include <event2/event.h>
#include <libpq-fe.h>

#include "daemon/budget.h"
#include "daemon/conf.h"
#include "daemon/fleet.h"
#include "daemon/ledger.h"
#include "daemon/log.h"
#include "daemon/openllmd.h"

/*
 * One connection, one statement in flight at a time, a queue behind it.
 * The shipping position is read back from the database at every connect
 * (max(seq) of this node), so no local state is kept: a batch is one
 * INSERT of consecutive records, atomic, keyed by (node, seq) with ON
 * CONFLICT DO NOTHING, so a batch sent twice (the answer lost with the
 * connection, a kill -9 before the answer) is stored once.
 *
 * Fleet budgets (schema version 2). ollm_budget holds, per budget key and
 * period, the fleet's used and reserved amounts (tokens, or billionths of
 * money); ollm_reservation the open reservations, per (node, id, budget).
 * The protocol:
 *
 * - Reserve: one call of ollm_reserve(), one transaction. It locks the rows
 *   of every budget the request claims, in key order (no deadlock between
 *   nodes), and either adds every claim to reserved and inserts the
 *   reservation rows, or, when a claim does not fit used + reserved + amount
 *   <= limit, changes nothing and names it. The limit checked is the
 *   reserving node's own (nodes that disagree each enforce theirs).
 * - Settle: the request's ledger record carries the reservation id. The
 *   statement that ships a batch inserts the records and, for exactly the
 *   records it inserted (not those already there), deletes their
 *   reservation rows, takes them off reserved, and adds the records' usage
 *   to used: shipping is exactly once, so settling is too. Usage counts in
 *   the period the reservation was made in; a record without one (admitted
 *   while the database was away) in the period of its time. The budgets
 *   that apply to a record are this node's, as configured when it ships.
 * - Crash: a kill -9 leaves reservation rows that over-count, never
 *   under-count. Ids are this run's start time in microseconds plus a
 *   counter, so a restart never reuses one (the clock is assumed not to step
 *   back past the last run). Once a restarted node has shipped every record
 *   of its earlier runs (each settling its own reservation), it drops its
 *   remaining older reservations (id below this run's first): those requests
 *   died with no record.
 * - Between the end of a request and the shipping of its record (a second
 *   or so) the fleet holds its reservation, its worst case: it over-counts.
 */

#define FLEET_BACKOFF_MIN_MS	1000
#define FLEET_BACKOFF_MAX_MS	15000
#define FLEET_CONNECT_TIMEOUT_MS 10000
#define FLEET_QUERY_TIMEOUT_MS	30000
#define FLEET_COLS		14      /* per record, besides the node and the usage arrays */
#define FLEET_SHIP_FIXED	5       /* $1 node, $2-$5 the usage arrays */

enum fleet_state { FLEET_DOWN, FLEET_CONNECTING, FLEET_READY };

struct fleet_op;
typedef void (*fleet_done_cb)(struct fleet *, struct fleet_op *, PGresult *, const char *err);

/* One statement to run; params are owned. */
struct fleet_op {
	char *sql;
	int n_params;
	char **params;
	fleet_done_cb done;
	struct session *session;    /* stats: who asked (NULL once gone) */
	uint64_t req_id;
	char *by;
	uint64_t top;               /* ship: the highest seq in the batch */
	struct budget_claim *claims;  /* reserve: what was asked */
	size_t n_claims;
	fleet_reserve_cb cb;        /* reserve: who waits (NULL once answered or gone) */
	void *arg;
	int64_t asked_ms;           /* monotonic */
	TAILQ_ENTRY(fleet_op) entry;
};
TAILQ_HEAD(fleet_op_list, fleet_op);

struct fleet {
	struct server *srv;
	char *conninfo;
	char *node;
	PGconn *conn;
	enum fleet_state state;
	struct event *ev;
	int64_t deadline_ms;        /* connect or query gives up then */
	int64_t retry_ms;
	int backoff_ms;
	bool outage_logged;
	bool flushing;              /* the statement is not all sent yet: wait for writable too */
	struct fleet_op_list queue;
	struct fleet_op *cur;
	PGresult *last;
	char *err;
	bool positioned;            /* shipped is known */
	bool shipping;              /* a batch is queued or in flight */
	bool incompatible;          /* the database's schema is newer than ours */
	uint64_t shipped;           /* every record up to this seq is in the database */
	uint64_t from_seq;          /* journal file to read from */
	uint64_t idle_at;           /* last rid when a read found nothing to ship */
	uint64_t rsv_base;          /* this run's first reservation id */
	uint64_t rsv_next;
	uint64_t boot_rid;          /* the last record of earlier runs */
	bool stale_dropped;         /* older runs' leftover reservations are gone */
	bool stale_pending;
	struct budget_shares *shares;  /* learnt at each contact, for fleet_offline "local" */
	struct event *pump_ev;      /* sends a queued reservation from the loop */
};

static void fleet_pump(struct fleet *);
static void fleet_ship(struct fleet *);
static void fleet_watch(struct fleet *, short what);

static const char fleet_schema_sql[] =
    "BEGIN;"
    "SELECT pg_advisory_xact_lock(7310547512);"
    "CREATE TABLE IF NOT EXISTS ollm_schema_version ("
    " version integer PRIMARY KEY,"
    " applied timestamptz NOT NULL DEFAULT now());"
    "CREATE TABLE IF NOT EXISTS ollm_usage ("
    " node text NOT NULL,"
    " seq bigint NOT NULL,"
    " time timestamptz NOT NULL,"
    " uid bigint NOT NULL,"
    " tag text NOT NULL,"
    " model text NOT NULL,"
    " upstream text NOT NULL,"
    " prompt_tokens bigint NOT NULL,"
    " completion_tokens bigint NOT NULL,"
    " estimated boolean NOT NULL,"
    " cost double precision NOT NULL,"
    " status text NOT NULL,"
    " error_code text,"
    " latency_ms bigint NOT NULL,"
    " PRIMARY KEY (node, seq));"
    "CREATE INDEX IF NOT EXISTS ollm_usage_time ON ollm_usage (time);"
    /* version 2: fleet budgets */
    "CREATE TABLE IF NOT EXISTS ollm_budget ("
    " budget text NOT NULL,"
    " period_start timestamptz NOT NULL,"
    " used bigint NOT NULL DEFAULT 0,"
    " reserved bigint NOT NULL DEFAULT 0,"
    " budget_limit bigint,"
    " PRIMARY KEY (budget, period_start));"
    "CREATE TABLE IF NOT EXISTS ollm_reservation ("
    " node text NOT NULL,"
    " id bigint NOT NULL,"
    " budget text NOT NULL,"
    " period_start timestamptz NOT NULL,"
    " amount bigint NOT NULL,"
    " created timestamptz NOT NULL DEFAULT now(),"
    " PRIMARY KEY (node, id, budget));"
    "CREATE TABLE IF NOT EXISTS ollm_node ("
    " node text PRIMARY KEY,"
    " seen timestamptz NOT NULL);"
    "ALTER TABLE ollm_usage ADD COLUMN IF NOT EXISTS reservation bigint;"
    "CREATE OR REPLACE FUNCTION ollm_reserve(p_node text, p_id bigint, p_keys text[],"
    " p_starts bigint[], p_limits bigint[], p_amounts bigint[])"
    " RETURNS TABLE (k integer, b_used bigint, b_reserved bigint, b_nodes bigint,"
    " b_refused boolean) LANGUAGE plpgsql AS $f$"
    " #variable_conflict use_column\n"
    " DECLARE n integer := coalesce(array_length(p_keys, 1), 0); i integer;"
    " bad integer := 0; u bigint; r bigint; cnt bigint;"
    " BEGIN"
    "  INSERT INTO ollm_node (node, seen) VALUES (p_node, now())"
    "   ON CONFLICT (node) DO UPDATE SET seen = now();"
    "  SELECT count(*) INTO cnt FROM ollm_node WHERE seen > now() - interval '1 hour';"
    "  INSERT INTO ollm_budget (budget, period_start, budget_limit)"
    "   SELECT t.b, to_timestamp(t.s / 1000.0), t.l FROM unnest(p_keys, p_starts, p_limits)"
    "   AS t(b, s, l) ORDER BY 1, 2 ON CONFLICT DO NOTHING;"
    "  PERFORM 1 FROM ollm_budget x, unnest(p_keys, p_starts) AS t(b, s)"
    "   WHERE x.budget = t.b AND x.period_start = to_timestamp(t.s / 1000.0)"
    "   ORDER BY x.budget, x.period_start FOR UPDATE OF x;"
    "  FOR i IN 1 .. n LOOP"
    "   SELECT x.used, x.reserved INTO u, r FROM ollm_budget x WHERE x.budget = p_keys[i]"
    "    AND x.period_start = to_timestamp(p_starts[i] / 1000.0);"
    "   IF bad = 0 AND p_amounts[i] > 0 AND"
    "    u::numeric + r + p_amounts[i] > p_limits[i] THEN bad := i; END IF;"
    "  END LOOP;"
    "  IF bad = 0 THEN"
    "   UPDATE ollm_budget x SET reserved = least(x.reserved::numeric + t.a,"
    "    4611686018427387904)::bigint, budget_limit = t.l"
    "    FROM unnest(p_keys, p_starts, p_limits, p_amounts) AS t(b, s, l, a)"
    "    WHERE x.budget = t.b AND x.period_start = to_timestamp(t.s / 1000.0);"
    "   INSERT INTO ollm_reservation (node, id, budget, period_start, amount)"
    "    SELECT p_node, p_id, t.b, to_timestamp(t.s / 1000.0), t.a"
    "    FROM unnest(p_keys, p_starts, p_amounts) AS t(b, s, a);"
    "  END IF;"
    "  RETURN QUERY SELECT t.i::integer, x.used, x.reserved, cnt, t.i = bad"
    "   FROM unnest(p_keys, p_starts) WITH ORDINALITY AS t(b, s, i)"
    "   JOIN ollm_budget x ON x.budget = t.b AND x.period_start = to_timestamp(t.s / 1000.0)"
    "   ORDER BY t.i;"
    " END $f$;"
    "INSERT INTO ollm_schema_version (version) VALUES (1), (2) ON CONFLICT DO NOTHING;"
    "COMMIT;";

static const char fleet_position_sql[] =
    "SELECT (SELECT max(version) FROM ollm_schema_version),"
    " (SELECT coalesce(max(seq), 0) FROM ollm_usage WHERE node = $1)";

/* --- the statement queue -------------------------------------------------- */

/* Free an op and what it owns. */
static void
fleet_op_free(struct fleet_op *op)
{
	for (int i = 0; i < op->n_params; i++)
		free(op->params[i]);
	free(op->params);
	free(op->sql);
	free(op->by);
	free(op->claims);
	free(op);
}

/* Queue a statement (sql is taken over); run it when the connection is free. */
static void
fleet_enqueue(struct fleet *f, struct fleet_op *op)
{
	TAILQ_INSERT_TAIL(&f->queue, op, entry);
	fleet_pump(f);
}

/* Drop the connection: fail what is in flight and queued, retry after the backoff. */
static void
fleet_fail(struct fleet *f, const char *what, const char *err)
{
	struct fleet_op *op;
	char msg[512];
	size_t n;

	snprintf(msg, sizeof msg, "%s", err != NULL && *err != '\0' ? err : "connection lost");
	for (char *p = msg; *p != '\0'; p++)    /* libpq's messages span lines */
		if (*p == '\n' || *p == '\t')
			*p = ' ';
	n = strlen(msg);
	while (n > 0 && msg[n - 1] == ' ')
		msg[--n] = '\0';
	if (!f->outage_logged) {
		log_warn("fleet: %s: %s; serving on, shipping resumes when the database is back",
		    what, msg);
		f->outage_logged = true;
	} else {
		log_debug("fleet: %s: %s", what, msg);
	}
	if (f->ev != NULL) {
		event_free(f->ev);
		f->ev = NULL;
	}
	if (f->conn != NULL) {
		PQfinish(f->conn);
		f->conn = NULL;
	}
	if (f->last != NULL) {
		PQclear(f->last);
		f->last = NULL;
	}
	free(f->err);
	f->err = NULL;
	f->state = FLEET_DOWN;
	f->positioned = false;
	f->flushing = false;
	if ((op = f->cur) != NULL) {
		f->cur = NULL;
		op->done(f, op, NULL, msg);
		fleet_op_free(op);
	}
	while ((op = TAILQ_FIRST(&f->queue)) != NULL) {
		TAILQ_REMOVE(&f->queue, op, entry);
		op->done(f, op, NULL, msg);
		fleet_op_free(op);
	}
	f->retry_ms = now_mono_ms() + f->backoff_ms;
	f->backoff_ms = f->backoff_ms * 2 > FLEET_BACKOFF_MAX_MS ? FLEET_BACKOFF_MAX_MS :
	    f->backoff_ms * 2;
}

/* Send the next queued statement when the connection is free. */
static void
fleet_pump(struct fleet *f)
{
	struct fleet_op *op;
	int ok, fl;

	if (f->state != FLEET_READY || f->cur != NULL || (op = TAILQ_FIRST(&f->queue)) == NULL)
		return;
	TAILQ_REMOVE(&f->queue, op, entry);
	f->cur = op;
	if (op->n_params == 0)
		ok = PQsendQuery(f->conn, op->sql);
	else
		ok = PQsendQueryParams(f->conn, op->sql, op->n_params, NULL,
		    (const char *const *)op->params, NULL, NULL, 0);
	if (!ok) {
		fleet_fail(f, "sending a statement", PQerrorMessage(f->conn));
		return;
	}
	f->deadline_ms = now_mono_ms() + FLEET_QUERY_TIMEOUT_MS;
	if ((fl = PQflush(f->conn)) == -1) {
		fleet_fail(f, "sending a statement", PQerrorMessage(f->conn));
		return;
	}
	f->flushing = fl == 1;
	fleet_watch(f, f->flushing ? EV_READ | EV_WRITE : EV_READ);
}

/* Read what the server sent; finish the statement in flight once all its results are in. */
static void
fleet_read(struct fleet *f)
{
	PGresult *r;
	struct fleet_op *op;
	ExecStatusType st;

	if (!PQconsumeInput(f->conn)) {
		fleet_fail(f, "reading", PQerrorMessage(f->conn));
		return;
	}
	while (f->cur != NULL && !PQisBusy(f->conn)) {
		if ((r = PQgetResult(f->conn)) == NULL) {
			op = f->cur;
			f->cur = NULL;
			op->done(f, op, f->err == NULL ? f->last : NULL, f->err);
			fleet_op_free(op);
			if (f->last != NULL)
				PQclear(f->last);
			f->last = NULL;
			free(f->err);
			f->err = NULL;
			if (f->state != FLEET_READY)
				return;
			fleet_pump(f);
			continue;
		}
		st = PQresultStatus(r);
		if (st != PGRES_COMMAND_OK && st != PGRES_TUPLES_OK && f->err == NULL)
			f->err = strdup(PQresultErrorMessage(r));
		if (f->last != NULL)
			PQclear(f->last);
		f->last = r;
	}
	if (f->state != FLEET_READY)
		return;
	if (f->cur == NULL && PQstatus(f->conn) == CONNECTION_BAD) {
		fleet_fail(f, "idle connection", PQerrorMessage(f->conn));
		return;
	}
	/* idle too: notice a server that goes away */
	fleet_watch(f, f->flushing ? EV_READ | EV_WRITE : EV_READ);
}

/* --- connecting ----------------------------------------------------------- */

/* Ask for the schema, then the shipping position. */
static void
fleet_setup(struct fleet *f);

/* The server's notices ("relation already exists, skipping") are for the debug log. */
static void
fleet_notice_cb(void *arg, const char *message)
{
	(void)arg;
	log_debug("fleet: the database says: %.*s", (int)strcspn(message, "\n"), message);
}

/* The connection is up: make it non-blocking and set the schema up. */
static void
fleet_connected(struct fleet *f)
{
	if (PQsetnonblocking(f->conn, 1) == -1) {
		fleet_fail(f, "connecting", PQerrorMessage(f->conn));
		return;
	}
	if (f->outage_logged)
		log_info("fleet: connected to the database again");
	else
		log_info("fleet: connected to the database as node \"%s\"", f->node);
	f->outage_logged = false;
	f->backoff_ms = FLEET_BACKOFF_MIN_MS;
	f->state = FLEET_READY;
	f->from_seq = 0;
	f->idle_at = 0;
	fleet_setup(f);
}

/* Advance the connection handshake as PQconnectPoll asks. */
static void
fleet_connect_step(struct fleet *f)
{
	switch (PQconnectPoll(f->conn)) {
	case PGRES_POLLING_READING:
		fleet_watch(f, EV_READ);
		break;
	case PGRES_POLLING_WRITING:
		fleet_watch(f, EV_WRITE);
		break;
	case PGRES_POLLING_OK:
		fleet_connected(f);
		break;
	default:
		fleet_fail(f, "connecting", PQerrorMessage(f->conn));
		break;
	}
}

/* Start connecting; failures are retried after the backoff. */
static void
fleet_connect(struct fleet *f)
{
	const char *const keys[] = { "dbname", "client_encoding", "fallback_application_name", NULL };
	const char *const values[] = { f->conninfo, "UTF8", "openllmd", NULL };

	f->conn = PQconnectStartParams(keys, values, 1);
	if (f->conn == NULL) {
		fleet_fail(f, "connecting", "out of memory");
		return;
	}
	if (PQstatus(f->conn) == CONNECTION_BAD) {
		fleet_fail(f, "connecting", PQerrorMessage(f->conn));
		return;
	}
	PQsetNoticeProcessor(f->conn, fleet_notice_cb, NULL);
	f->state = FLEET_CONNECTING;
	f->deadline_ms = now_mono_ms() + FLEET_CONNECT_TIMEOUT_MS;
	fleet_watch(f, EV_WRITE);
}

/* Socket activity: advance the handshake or the statement in flight. */
static void
fleet_io_cb(evutil_socket_t fd, short what, void *arg)
{
	struct fleet *f = arg;
	int fl;

	(void)fd;
	if (f->state == FLEET_CONNECTING) {
		fleet_connect_step(f);
		return;
	}
	if (f->state != FLEET_READY)
		return;
	if (what & EV_WRITE) {
		if ((fl = PQflush(f->conn)) == -1) {
			fleet_fail(f, "sending a statement", PQerrorMessage(f->conn));
			return;
		}
		if (fl == 1) {
			fleet_watch(f, EV_READ | EV_WRITE);
			return;
		}
		f->flushing = false;
	}
	fleet_read(f);
}

/* Wait for the connection's socket (which may change while connecting) to become ready. */
static void
fleet_watch(struct fleet *f, short what)
{
	int fd = PQsocket(f->conn);

	if (f->ev != NULL)
		event_free(f->ev);
	f->ev = NULL;
	if (fd < 0) {
		fleet_fail(f, "connecting", "no socket");
		return;
	}
	if ((f->ev = event_new(f->srv->base, fd, what, fleet_io_cb, f)) == NULL ||
	    event_add(f->ev, NULL) == -1)
		fleet_fail(f, "watching the socket", "out of memory");
}

/* --- shipping ------------------------------------------------------------- */

/* The schema statement finished. */
static void
fleet_schema_done(struct fleet *f, struct fleet_op *op, PGresult *r, const char *err)
{
	(void)op;
	(void)r;
	if (err != NULL && f->state == FLEET_READY)
		fleet_fail(f, "creating the schema", err);
}

/* The position statement finished: ship from the database's max(seq) on. */
static void
fleet_position_done(struct fleet *f, struct fleet_op *op, PGresult *r, const char *err)
{
	long long version;

	(void)op;
	if (err != NULL || r == NULL || PQntuples(r) != 1 || PQnfields(r) != 2) {
		if (f->state == FLEET_READY)
			fleet_fail(f, "reading the shipping position", err ? err : "unexpected answer");
		return;
	}
	version = PQgetisnull(r, 0, 0) ? 0 : strtoll(PQgetvalue(r, 0, 0), NULL, 10);
	if (version > FLEET_SCHEMA_VERSION) {
		if (!f->incompatible)
			log_error("fleet: the database's schema is version %lld, newer than this "
			    "openllmd knows (%d): not shipping", version, FLEET_SCHEMA_VERSION);
		f->incompatible = true;
		return;
	}
	f->incompatible = false;
	f->shipped = strtoull(PQgetvalue(r, 0, 1), NULL, 10);
	f->positioned = true;
	if (f->shipped > ledger_last_rid(f->srv->ledger))
		log_error("fleet: the database holds records of node \"%s\" up to number %" PRIu64
		    ", the local ledger only up to %" PRIu64 ": another daemon uses this "
		    "fleet_node, or the state directory is new; local records up to %" PRIu64
		    " are not shipped", f->node, f->shipped, ledger_last_rid(f->srv->ledger),
		    f->shipped);
	log_debug("fleet: node \"%s\" shipped up to record %" PRIu64, f->node, f->shipped);
	fleet_ship(f);
}

/* Queue a statement with no parameters but the node, ahead of the queue (reservations may wait there). */
static int
fleet_enqueue_first(struct fleet *f, const char *sql, fleet_done_cb done, bool with_node)
{
	struct fleet_op *op = calloc(1, sizeof *op);

	if (op == NULL || (op->sql = strdup(sql)) == NULL)
		goto fail;
	op->done = done;
	if (with_node) {
		if ((op->params = calloc(1, sizeof *op->params)) == NULL ||
		    (op->params[0] = strdup(f->node)) == NULL)
			goto fail;
		op->n_params = 1;
	}
	TAILQ_INSERT_HEAD(&f->queue, op, entry);
	return 0;
fail:
	if (op != NULL)
		fleet_op_free(op);
	return -1;
}

static void
fleet_setup(struct fleet *f)
{
	/* the position goes first in the queue, then the schema before it */
	if (fleet_enqueue_first(f, fleet_position_sql, fleet_position_done, true) == -1 ||
	    fleet_enqueue_first(f, fleet_schema_sql, fleet_schema_done, false) == -1)
		fleet_fail(f, "setting up", "out of memory");
	else
		fleet_pump(f);
}

/* A growing PostgreSQL array literal, "{...}". */
struct fleet_array {
	char *p;
	size_t len, cap;
};

/* A batch being built from the journal. */
struct fleet_batch {
	char **params;
	int n;                      /* records */
	uint64_t top;
	bool oom;
	struct budgets *budgets;
	struct budget_claim *claims;  /* room for one record's, budgets_count of them */
	size_t max_claims;
	struct fleet_array seqs, keys, starts, amounts;  /* the records' usage, per budget */
};

/* Append len bytes to an array literal. */
static bool
fleet_array_put(struct fleet_array *a, const char *s, size_t len)
{
	if (a->len + len + 2 > a->cap) {
		size_t cap = a->cap ? a->cap : 256;
		while (cap < a->len + len + 2)
			cap *= 2;
		char *grown = realloc(a->p, cap);
		if (grown == NULL)
			return false;
		a->p = grown;
		a->cap = cap;
	}
	memcpy(a->p + a->len, s, len);
	a->len += len;
	a->p[a->len] = '\0';
	return true;
}

/* Add one element (quoted for text) to an array literal. */
static bool
fleet_array_add(struct fleet_array *a, const char *elem, bool text)
{
	if (!fleet_array_put(a, a->len == 0 ? "{" : ",", 1))
		return false;
	if (!text)
		return fleet_array_put(a, elem, strlen(elem));
	if (!fleet_array_put(a, "\"", 1))
		return false;
	for (const char *c = elem; *c != '\0'; c++) {
		if ((*c == '"' || *c == '\\') && !fleet_array_put(a, "\\", 1))
			return false;
		if (!fleet_array_put(a, c, 1))
			return false;
	}
	return fleet_array_put(a, "\"", 1);
}

/* The finished literal, owned by the caller ("{}" when empty); NULL when out of memory. */
static char *
fleet_array_end(struct fleet_array *a)
{
	char *s;

	if (a->len == 0)
		return strdup("{}");
	if (!fleet_array_put(a, "}", 1))
		return NULL;
	s = a->p;
	memset(a, 0, sizeof *a);
	return s;
}

/* Add the budgets one record counts against to the batch's usage arrays. */
static void
fleet_batch_usage(struct fleet_batch *b, const struct ledger_record *r, uint64_t rid)
{
	struct budget_claim *cl = b->claims;
	size_t n;
	char num[32];

	if (cl == NULL)
		return;
	n = budgets_claims(b->budgets, r->uid, r->user, r->tag, r->model,
	    budget_tokens_add(r->prompt_tokens, r->completion_tokens), r->cost, r->time_ms,
	    cl, b->max_claims);
	for (size_t i = 0; i < n; i++) {
		if (cl[i].amount == 0)
			continue;
		snprintf(num, sizeof num, "%" PRIu64, rid);
		if (!fleet_array_add(&b->seqs, num, false) ||
		    !fleet_array_add(&b->keys, cl[i].key, true))
			b->oom = true;
		snprintf(num, sizeof num, "%" PRId64, cl[i].period_start_ms);
		if (!fleet_array_add(&b->starts, num, false))
			b->oom = true;
		snprintf(num, sizeof num, "%" PRId64, cl[i].amount);
		if (!fleet_array_add(&b->amounts, num, false))
			b->oom = true;
	}
}

/* Format a value as a parameter string. */
static char *
fleet_fmt(struct fleet_batch *b, const char *fmt, ...)
{
	va_list ap;
	char *s;

	va_start(ap, fmt);
	if (vasprintf(&s, fmt, ap) == -1) {
		s = NULL;
		b->oom = true;
	}
	va_end(ap);
	return s;
}

/* Add one record to the batch; stop when it is full. */
static int
fleet_batch_cb(const struct ledger_record *r, uint64_t rid, void *arg)
{
	struct fleet_batch *b = arg;
	char **p = b->params + FLEET_SHIP_FIXED + (size_t)b->n * FLEET_COLS;
	time_t secs = (time_t)(r->time_ms / 1000);
	struct tm tm;
	char when[64];

	gmtime_r(&secs, &tm);
	strftime(when, sizeof when, "%Y-%m-%dT%H:%M:%S", &tm);
	p[0] = fleet_fmt(b, "%" PRIu64, rid);
	p[1] = fleet_fmt(b, "%s.%03dZ", when, (int)(r->time_ms % 1000));
	p[2] = fleet_fmt(b, "%" PRIu32, r->uid);
	p[3] = fleet_fmt(b, "%s", r->tag ? r->tag : "");
	p[4] = fleet_fmt(b, "%s", r->model ? r->model : "");
	p[5] = fleet_fmt(b, "%s", r->upstream ? r->upstream : "");
	p[6] = fleet_fmt(b, "%" PRId64, r->prompt_tokens);
	p[7] = fleet_fmt(b, "%" PRId64, r->completion_tokens);
	p[8] = fleet_fmt(b, "%s", r->estimated ? "t" : "f");
	p[9] = fleet_fmt(b, "%.17g", r->cost);
	p[10] = fleet_fmt(b, "%s", ledger_status_name(r->status));
	p[11] = r->error_code != NULL && *r->error_code != '\0' ?
	    fleet_fmt(b, "%s", r->error_code) : NULL;
	p[12] = fleet_fmt(b, "%" PRId64, r->latency_ms);
	p[13] = r->reservation != 0 ? fleet_fmt(b, "%" PRIu64, r->reservation) : NULL;
	fleet_batch_usage(b, r, rid);
	b->n++;
	b->top = rid;
	return b->n >= FLEET_BATCH_MAX || b->oom;
}

/* A batch is stored (or was already): move the position and send the next. */
static void
fleet_ship_done(struct fleet *f, struct fleet_op *op, PGresult *r, const char *err)
{
	(void)r;
	f->shipping = false;
	if (err != NULL) {
		if (f->state == FLEET_READY)
			fleet_fail(f, "shipping records", err);
		return;
	}
	f->shipped = op->top;
	fleet_ship(f);
}

/*
 * Insert the records, and settle in the same statement (see the top of the
 * file): for the records inserted now, their reservations are deleted and
 * taken off reserved, and their usage ($2-$5: seq, budget key, period start
 * in ms, amount) added to used, in the reservation's period when there was
 * one. Budget rows are updated in key order, as ollm_reserve locks them.
 */
static const char fleet_ship_head[] =
    "WITH ins AS (INSERT INTO ollm_usage (node, seq, time, uid, tag, model, "
    "upstream, prompt_tokens, completion_tokens, estimated, cost, status, error_code, "
    "latency_ms, reservation) VALUES ";
static const char fleet_ship_tail[] =
    " ON CONFLICT DO NOTHING RETURNING seq, reservation),"
    " del AS (DELETE FROM ollm_reservation x USING ins WHERE x.node = $1"
    "  AND x.id = ins.reservation RETURNING ins.seq, x.budget, x.period_start, x.amount),"
    " u AS (SELECT t.b AS budget, coalesce(d.period_start, to_timestamp(t.s / 1000.0))"
    "  AS period_start, t.a AS amount"
    "  FROM unnest($2::bigint[], $3::text[], $4::bigint[], $5::bigint[]) AS t(seq, b, s, a)"
    "  JOIN ins ON ins.seq = t.seq LEFT JOIN del d ON d.seq = t.seq AND d.budget = t.b),"
    " c AS (SELECT budget, period_start, amount AS used, 0::bigint AS freed FROM u"
    "  UNION ALL SELECT budget, period_start, 0, amount FROM del)"
    " INSERT INTO ollm_budget AS x (budget, period_start, used, reserved)"
    " SELECT budget, period_start, least(sum(used), 4611686018427387904)::bigint,"
    "  -least(sum(freed), 4611686018427387904)::bigint FROM c GROUP BY 1, 2 ORDER BY 1, 2"
    " ON CONFLICT (budget, period_start) DO UPDATE SET"
    " used = least(x.used::numeric + excluded.used, 4611686018427387904)::bigint,"
    " reserved = greatest(0, x.reserved + excluded.reserved)";

/* Drop this node's reservations of earlier runs, and take them off reserved. */
static const char fleet_stale_sql[] =
    "WITH del AS (DELETE FROM ollm_reservation WHERE node = $1 AND id < $2::bigint"
    "  RETURNING budget, period_start, amount),"
    " s AS (SELECT budget, period_start, sum(amount) AS a FROM del GROUP BY 1, 2)"
    " UPDATE ollm_budget x SET reserved = greatest(0, x.reserved - s.a)::bigint FROM s"
    " WHERE x.budget = s.budget AND x.period_start = s.period_start";

/* The stale reservations are gone (or not: tried again at the next connect). */
static void
fleet_stale_done(struct fleet *f, struct fleet_op *op, PGresult *r, const char *err)
{
	(void)op;
	(void)r;
	f->stale_pending = false;
	if (err != NULL) {
		log_warn("fleet: dropping the reservations of this node's earlier runs: %s", err);
		return;
	}
	f->stale_dropped = true;
	log_debug("fleet: reservations of node \"%s\" before this run dropped", f->node);
}

/* Once every record of earlier runs is shipped: drop their leftover reservations. */
static void
fleet_drop_stale(struct fleet *f)
{
	struct fleet_op *op;

	if (f->stale_dropped || f->stale_pending || !f->positioned || f->shipped < f->boot_rid)
		return;
	if ((op = calloc(1, sizeof *op)) == NULL || (op->sql = strdup(fleet_stale_sql)) == NULL ||
	    (op->params = calloc(2, sizeof *op->params)) == NULL ||
	    (op->params[0] = strdup(f->node)) == NULL ||
	    asprintf(&op->params[1], "%" PRIu64, f->rsv_base) == -1) {
		if (op != NULL) {
			if (op->params != NULL)
				op->params[1] = NULL;
			op->n_params = op->params != NULL ? 2 : 0;
			fleet_op_free(op);
		}
		return;
	}
	op->n_params = 2;
	op->done = fleet_stale_done;
	f->stale_pending = true;
	fleet_enqueue(f, op);
}

/* Send the next batch of records the database does not have yet. */
static void
fleet_ship(struct fleet *f)
{
	struct fleet_batch b = { 0 };
	struct fleet_op *op;
	uint64_t from = f->from_seq;
	char cause[PATH_MAX + 128];
	size_t cap, len, nparams;
	char *sql;

	if (f->state != FLEET_READY || !f->positioned || f->shipping || f->incompatible)
		return;
	fleet_drop_stale(f);
	if (ledger_last_rid(f->srv->ledger) <= f->shipped ||
	    ledger_last_rid(f->srv->ledger) == f->idle_at)
		return;
	nparams = FLEET_SHIP_FIXED + (size_t)FLEET_BATCH_MAX * FLEET_COLS;
	if ((b.params = calloc(nparams, sizeof *b.params)) == NULL)
		return;
	b.budgets = f->srv->budgets;
	b.max_claims = budgets_count(b.budgets);
	if (b.max_claims > 0 && (b.claims = calloc(b.max_claims, sizeof *b.claims)) == NULL) {
		free(b.params);
		return;
	}
	if (ledger_foreach_after(f->srv->ledger, f->shipped, &from, fleet_batch_cb, &b,
	    cause, sizeof cause) == -1)
		log_warn("fleet: reading the journal: %s", cause);
	if (b.n == 0 && f->from_seq != 0)
		f->from_seq = 0;        /* a reset numbers journal files from 1 again: read them all */
	else if (b.n == 0 && ledger_pending(f->srv->ledger) == 0)
		f->idle_at = ledger_last_rid(f->srv->ledger);  /* gone before shipping: reset, retention */
	if (b.oom || b.n == 0)
		goto drop;
	/* WITH ins AS (INSERT ... VALUES ($1, $6, ... $19), ($1, $20, ...) ...) ... */
	cap = sizeof fleet_ship_head + sizeof fleet_ship_tail + (size_t)b.n * FLEET_COLS * 12;
	if ((sql = malloc(cap)) == NULL)
		goto drop;
	len = (size_t)snprintf(sql, cap, "%s", fleet_ship_head);
	for (int i = 0; i < b.n; i++) {
		int base = FLEET_SHIP_FIXED + 1 + i * FLEET_COLS;
		len += (size_t)snprintf(sql + len, cap - len, "%s($1", i ? "," : "");
		for (int k = 0; k < FLEET_COLS; k++)
			len += (size_t)snprintf(sql + len, cap - len, ",$%d", base + k);
		len += (size_t)snprintf(sql + len, cap - len, ")");
	}
	snprintf(sql + len, cap - len, "%s", fleet_ship_tail);
	if ((op = calloc(1, sizeof *op)) == NULL || (b.params[0] = strdup(f->node)) == NULL ||
	    (b.params[1] = fleet_array_end(&b.seqs)) == NULL ||
	    (b.params[2] = fleet_array_end(&b.keys)) == NULL ||
	    (b.params[3] = fleet_array_end(&b.starts)) == NULL ||
	    (b.params[4] = fleet_array_end(&b.amounts)) == NULL) {
		free(op);
		free(sql);
		goto drop;
	}
	op->sql = sql;
	op->params = b.params;
	op->n_params = FLEET_SHIP_FIXED + b.n * FLEET_COLS;
	op->done = fleet_ship_done;
	op->top = b.top;
	f->from_seq = from;
	f->shipping = true;
	free(b.claims);
	fleet_enqueue(f, op);
	return;
drop:
	free(b.claims);
	for (size_t i = 0; i < nparams; i++)
		free(b.params[i]);
	free(b.params);
	free(b.seqs.p);
	free(b.keys.p);
	free(b.starts.p);
	free(b.amounts.p);
}

/* --- stats ---------------------------------------------------------------- */

/*
 * One row per (dimension, key) with the counters, the dimensions of one
 * query: "total", and model, user, tag, day, node (those asked for).
 */
static const char fleet_stats_sql[] =
    "WITH u AS (SELECT * FROM ollm_usage WHERE $1::bigint < 0 OR"
    " time >= to_timestamp($1::bigint * 86400)),"
    " k AS ("
    "  SELECT 'total' AS dim, '' AS key, 0::bigint AS num, * FROM u"
    "  UNION ALL SELECT 'model', model, 0, * FROM u WHERE $2 IN ('', 'model')"
    "  UNION ALL SELECT 'user', uid::text, uid, * FROM u WHERE $2 IN ('', 'user')"
    "  UNION ALL SELECT 'tag', tag, 0, * FROM u WHERE $2 IN ('', 'tag')"
    "  UNION ALL SELECT 'day', to_char(time AT TIME ZONE 'UTC', 'YYYY-MM-DD'), 0, * FROM u"
    "   WHERE $2 = 'day'"
    "  UNION ALL SELECT 'node', node, 0, * FROM u)"
    " SELECT dim, key, count(*), count(*) FILTER (WHERE status <> 'done'),"
    " coalesce(sum(prompt_tokens), 0), coalesce(sum(completion_tokens), 0),"
    " coalesce(sum(prompt_tokens + completion_tokens), 0),"
    " count(*) FILTER (WHERE estimated), coalesce(sum(cost), 0),"
    " (SELECT floor(extract(epoch FROM min(time)) / 86400)::bigint * 86400 FROM u)"
    " FROM k GROUP BY dim, key, num ORDER BY dim, num, key COLLATE \"C\"";

/* The row's counters. */
static void
fleet_counters(PGresult *r, int row, struct counters *c)
{
	c->requests = strtoull(PQgetvalue(r, row, 2), NULL, 10);
	c->errors = strtoull(PQgetvalue(r, row, 3), NULL, 10);
	c->prompt_tokens = strtoull(PQgetvalue(r, row, 4), NULL, 10);
	c->completion_tokens = strtoull(PQgetvalue(r, row, 5), NULL, 10);
	c->total_tokens = strtoull(PQgetvalue(r, row, 6), NULL, 10);
	c->estimated = strtoull(PQgetvalue(r, row, 7), NULL, 10);
	c->cost = strtod(PQgetvalue(r, row, 8), NULL);
}

/* Append one keyed entry to a map. */
static int
fleet_map_add(struct counters_map *m, const char *key, const struct counters *c)
{
	struct counters_entry *e = reallocarray(m->entries, m->n + 1, sizeof *e);

	if (e == NULL)
		return -1;
	m->entries = e;
	if ((e[m->n].key = strdup(key)) == NULL)
		return -1;
	e[m->n].c = *c;
	m->n++;
	return 0;
}

/* The stats statement finished: answer the session that asked, if it is still there. */
static void
fleet_stats_done(struct fleet *f, struct fleet_op *op, PGresult *r, const char *err)
{
	struct reply rp;
	struct stats_result *st;
	struct counters c;
	int bad = 0;

	if (op->session == NULL)
		return;
	if (err != NULL || r == NULL) {
		session_send_error(op->session, op->req_id, "fleet_unavailable",
		    "fleet stats: the database: %s", err ? err : "no answer");
		return;
	}
	memset(&rp, 0, sizeof rp);
	rp.type = REPLY_RESULT;
	rp.id = op->req_id;
	rp.u.result.op = OP_STATS;
	st = &rp.u.result.u.stats;
	st->max_budget = NAN;
	st->budget_left = NAN;
	st->since = op->top != UINT64_MAX ? (int64_t)op->top * 86400 : 0;
	for (int i = 0; i < PQntuples(r) && bad == 0; i++) {
		const char *dim = PQgetvalue(r, i, 0), *key = PQgetvalue(r, i, 1);
		fleet_counters(r, i, &c);
		if (strcmp(dim, "total") == 0) {
			st->total = c;
			/* without since: the start of the UTC day of the earliest record */
			if (op->top == UINT64_MAX && !PQgetisnull(r, i, 9))
				st->since = strtoll(PQgetvalue(r, i, 9), NULL, 10);
		} else if (strcmp(dim, "model") == 0) {
			bad = fleet_map_add(&st->by_model, key, &c);
		} else if (strcmp(dim, "user") == 0) {
			bad = fleet_map_add(&st->by_user, key, &c);
		} else if (strcmp(dim, "tag") == 0) {
			bad = fleet_map_add(&st->by_tag, key, &c);
		} else if (strcmp(dim, "day") == 0) {
			bad = fleet_map_add(&st->by_day, key, &c);
		} else if (strcmp(dim, "node") == 0) {
			bad = fleet_map_add(&st->by_node, key, &c);
		}
	}
	if (bad)
		session_send_error(op->session, op->req_id, "internal", "fleet stats: out of memory");
	else
		session_send(op->session, &rp);
	ledger_stats_clear(st);
}

/* Ask the database; the answer goes to the session later. */
void
fleet_stats(struct fleet *f, struct session *s, const struct request *req)
{
	struct fleet_op *op;
	const char *by = req->u.stats.by ? req->u.stats.by : "";
	int64_t since_day = req->u.stats.since >= 0 ? req->u.stats.since / 86400 : -1;

	if (*by != '\0' && strcmp(by, "model") != 0 && strcmp(by, "user") != 0 &&
	    strcmp(by, "tag") != 0 && strcmp(by, "day") != 0) {
		session_send_error(s, req->id, "bad_request",
		    "by must be model, user, tag or day, not \"%s\"", by);
		return;
	}
	if (f == NULL) {
		session_send_error(s, req->id, "fleet_unavailable",
		    "fleet stats: this daemon has no fleet (fleet_postgres is unset)");
		return;
	}
	if (f->state != FLEET_READY) {
		session_send_error(s, req->id, "fleet_unavailable",
		    "fleet stats: the database is not reachable now");
		return;
	}
	if ((op = calloc(1, sizeof *op)) == NULL || (op->sql = strdup(fleet_stats_sql)) == NULL ||
	    (op->params = calloc(2, sizeof *op->params)) == NULL ||
	    (op->params[1] = strdup(by)) == NULL ||
	    asprintf(&op->params[0], "%" PRId64, since_day) == -1) {
		if (op != NULL) {
			if (op->params != NULL)
				op->params[0] = NULL;
			op->n_params = 2;
			fleet_op_free(op);
		}
		session_send_error(s, req->id, "internal", "fleet stats: out of memory");
		return;
	}
	op->n_params = 2;
	op->top = since_day >= 0 ? (uint64_t)since_day : UINT64_MAX;
	op->done = fleet_stats_done;
	op->session = s;
	op->req_id = req->id;
	fleet_enqueue(f, op);
}

/* --- logs ----------------------------------------------------------------- */

/* Rows newest first, filtered as the logs op asks; NULL parameters match anything. */
static const char fleet_logs_sql[] =
    "SELECT node, floor(extract(epoch FROM time) * 1000)::bigint, uid, tag, model, upstream,"
    " status, error_code, prompt_tokens, completion_tokens, estimated, cost, latency_ms"
    " FROM ollm_usage"
    " WHERE ($1::bigint IS NULL OR time >= to_timestamp($1::bigint))"
    " AND ($2::bigint IS NULL OR time < to_timestamp($2::bigint))"
    " AND ($3::bigint IS NULL OR uid = $3::bigint)"
    " AND ($4::text IS NULL OR tag = $4::text)"
    " AND ($5::text IS NULL OR model = $5::text)"
    " AND ($6::text IS NULL OR status = $6::text)"
    " ORDER BY time DESC, node COLLATE \"C\", seq DESC LIMIT $7::bigint";

/* The logs statement finished: answer the session that asked, if it is still there. */
static void
fleet_logs_done(struct fleet *f, struct fleet_op *op, PGresult *r, const char *err)
{
	struct reply *rp;
	struct logs_result *l;
	int n;

	(void)f;
	if (op->session == NULL)
		return;
	if (err != NULL || r == NULL) {
		session_send_error(op->session, op->req_id, "fleet_unavailable",
		    "fleet logs: the database: %s", err ? err : "no answer");
		return;
	}
	n = PQntuples(r);
	if ((rp = malloc(sizeof *rp)) == NULL)
		goto oom;
	message_reply_init(rp, REPLY_RESULT, OP_LOGS);
	rp->id = op->req_id;
	l = &rp->u.result.u.logs;
	if (n > 0 && (l->rows = calloc((size_t)n, sizeof *l->rows)) == NULL)
		goto oom;
	for (int i = 0; i < n; i++) {
		struct log_row *w = &l->rows[i];
		const char *tag = PQgetvalue(r, i, 3);

		l->n++;
		w->node = strdup(PQgetvalue(r, i, 0));
		w->time_ms = strtoll(PQgetvalue(r, i, 1), NULL, 10);
		w->uid = (uint32_t)strtoul(PQgetvalue(r, i, 2), NULL, 10);
		w->tag = *tag != '\0' ? strdup(tag) : NULL;
		w->model = strdup(PQgetvalue(r, i, 4));
		w->upstream = strdup(PQgetvalue(r, i, 5));
		w->status = strdup(PQgetvalue(r, i, 6));
		w->error = PQgetisnull(r, i, 7) ? NULL : strdup(PQgetvalue(r, i, 7));
		w->prompt_tokens = strtoll(PQgetvalue(r, i, 8), NULL, 10);
		w->completion_tokens = strtoll(PQgetvalue(r, i, 9), NULL, 10);
		w->estimated = strcmp(PQgetvalue(r, i, 10), "t") == 0;
		w->cost = strtod(PQgetvalue(r, i, 11), NULL);
		w->latency_ms = strtoll(PQgetvalue(r, i, 12), NULL, 10);
		w->ttft_ms = -1;        /* not shipped */
		if (w->node == NULL || w->model == NULL || w->upstream == NULL ||
		    w->status == NULL || (*tag != '\0' && w->tag == NULL) ||
		    (!PQgetisnull(r, i, 7) && w->error == NULL))
			goto oom;
	}
	session_send(op->session, rp);
	message_reply_free(rp);
	return;
oom:
	message_reply_free(rp);
	session_send_error(op->session, op->req_id, "internal", "fleet logs: out of memory");
}

/* Ask the database for every node's rows; uid -1: everyone's. The answer goes to the session later. */
void
fleet_logs(struct fleet *f, struct session *s, const struct request *req, int64_t uid)
{
	const struct logs_request *q = &req->u.logs;
	struct fleet_op *op;
	bool oom = false;

	if (f == NULL) {
		session_send_error(s, req->id, "fleet_unavailable",
		    "fleet logs: this daemon has no fleet (fleet_postgres is unset)");
		return;
	}
	if (f->state != FLEET_READY) {
		session_send_error(s, req->id, "fleet_unavailable",
		    "fleet logs: the database is not reachable now");
		return;
	}
	if ((op = calloc(1, sizeof *op)) == NULL || (op->params = calloc(7, sizeof *op->params)) ==
	    NULL || (op->sql = strdup(fleet_logs_sql)) == NULL) {
		if (op != NULL) {
			free(op->params);
			free(op);
		}
		session_send_error(s, req->id, "internal", "fleet logs: out of memory");
		return;
	}
	op->n_params = 7;
	if (q->since >= 0)
		oom |= asprintf(&op->params[0], "%" PRId64, q->since) == -1;
	if (q->until >= 0)
		oom |= asprintf(&op->params[1], "%" PRId64, q->until) == -1;
	if (uid >= 0)
		oom |= asprintf(&op->params[2], "%" PRId64, uid) == -1;
	if (q->tag != NULL)
		oom |= (op->params[3] = strdup(q->tag)) == NULL;
	if (q->model != NULL)
		oom |= (op->params[4] = strdup(q->model)) == NULL;
	if (q->status != NULL)
		oom |= (op->params[5] = strdup(q->status)) == NULL;
	oom |= asprintf(&op->params[6], "%" PRId64,
	    q->limit > 0 ? q->limit : (int64_t)LOGS_LIMIT_DEFAULT) == -1;
	if (oom) {
		fleet_op_free(op);
		session_send_error(s, req->id, "internal", "fleet logs: out of memory");
		return;
	}
	op->done = fleet_logs_done;
	op->session = s;
	op->req_id = req->id;
	fleet_enqueue(f, op);
}

/* Drop every reference to a session that is going away. */
void
fleet_forget(struct fleet *f, struct session *s)
{
	struct fleet_op *op;

	if (f == NULL)
		return;
	if (f->cur != NULL && f->cur->session == s)
		f->cur->session = NULL;
	TAILQ_FOREACH(op, &f->queue, entry)
		if (op->session == s)
			op->session = NULL;
}

/* --- budgets -------------------------------------------------------------- */

/* Tell the waiting request, once. */
static void
fleet_verdict_send(struct fleet_op *op, struct fleet_verdict *v)
{
	fleet_reserve_cb cb = op->cb;

	if (cb == NULL)
		return;
	op->cb = NULL;
	v->claims = op->claims;
	v->n = op->n_claims;
	cb(op->arg, v);
}

/* The database answered a reservation: learn the shares, tell the request. */
static void
fleet_reserve_done(struct fleet *f, struct fleet_op *op, PGresult *r, const char *err)
{
	struct fleet_verdict v = { .kind = FLEET_UNREACHABLE };
	int64_t used, reserved, nodes;
	long k;

	if (err != NULL || r == NULL || PQnfields(r) != 5 || PQntuples(r) != (int)op->n_claims) {
		if (err != NULL && f->state == FLEET_READY)
			log_warn("fleet: a reservation failed: %.*s", (int)strcspn(err, "\n"), err);
		v.why = err != NULL ? err : "unexpected answer from the database";
		fleet_verdict_send(op, &v);
		return;
	}
	v.kind = FLEET_RESERVED;
	for (int i = 0; i < PQntuples(r); i++) {
		k = strtol(PQgetvalue(r, i, 0), NULL, 10) - 1;
		if (k < 0 || (size_t)k >= op->n_claims)
			continue;
		used = strtoll(PQgetvalue(r, i, 1), NULL, 10);
		reserved = strtoll(PQgetvalue(r, i, 2), NULL, 10);
		nodes = strtoll(PQgetvalue(r, i, 3), NULL, 10);
		if (budget_shares_learn(f->shares, &op->claims[k], used, reserved, nodes) == -1)
			log_warn("fleet: out of memory for the local shares of budgets");
		if (strcmp(PQgetvalue(r, i, 4), "t") == 0) {
			v.kind = FLEET_REFUSED;
			v.refused = (size_t)k;
			v.used = used;
			v.reserved = reserved;
		}
	}
	fleet_verdict_send(op, &v);
}

/* Format n claims' fields as the reservation's array parameters. */
static int
fleet_claim_params(const struct budget_claim *cl, size_t n, char **params)
{
	struct fleet_array keys = { 0 }, starts = { 0 }, limits = { 0 }, amounts = { 0 };
	char num[32];
	bool ok = true;

	for (size_t i = 0; i < n && ok; i++) {
		ok = fleet_array_add(&keys, cl[i].key, true);
		snprintf(num, sizeof num, "%" PRId64, cl[i].period_start_ms);
		ok = ok && fleet_array_add(&starts, num, false);
		snprintf(num, sizeof num, "%" PRId64, cl[i].limit);
		ok = ok && fleet_array_add(&limits, num, false);
		snprintf(num, sizeof num, "%" PRId64, cl[i].amount);
		ok = ok && fleet_array_add(&amounts, num, false);
	}
	if (ok && (params[0] = fleet_array_end(&keys)) != NULL &&
	    (params[1] = fleet_array_end(&starts)) != NULL &&
	    (params[2] = fleet_array_end(&limits)) != NULL &&
	    (params[3] = fleet_array_end(&amounts)) != NULL)
		return 0;
	free(keys.p);
	free(starts.p);
	free(limits.p);
	free(amounts.p);
	return -1;
}

int
fleet_reserve(struct fleet *f, const struct budget_claim *cl, size_t n, fleet_reserve_cb cb,
    void *arg, uint64_t *id)
{
	struct fleet_op *op;
	char num[32];

	*id = 0;
	if (f == NULL || n == 0 || f->incompatible ||
	    (f->state != FLEET_READY && f->state != FLEET_CONNECTING))
		return -1;
	if ((op = calloc(1, sizeof *op)) == NULL ||
	    (op->sql = strdup("SELECT * FROM ollm_reserve($1, $2::bigint, $3::text[], "
	    "$4::bigint[], $5::bigint[], $6::bigint[])")) == NULL ||
	    (op->params = calloc(6, sizeof *op->params)) == NULL ||
	    (op->claims = calloc(n, sizeof *op->claims)) == NULL)
		goto fail;
	op->n_params = 6;
	memcpy(op->claims, cl, n * sizeof *cl);
	op->n_claims = n;
	snprintf(num, sizeof num, "%" PRIu64, f->rsv_next);
	if ((op->params[0] = strdup(f->node)) == NULL || (op->params[1] = strdup(num)) == NULL ||
	    fleet_claim_params(cl, n, op->params + 2) == -1)
		goto fail;
	op->done = fleet_reserve_done;
	op->cb = cb;
	op->arg = arg;
	op->asked_ms = now_mono_ms();
	*id = f->rsv_next++;
	/* sent from the loop, so that cb is never called before this returns */
	TAILQ_INSERT_TAIL(&f->queue, op, entry);
	event_active(f->pump_ev, EV_TIMEOUT, 0);
	return 0;
fail:
	if (op != NULL)
		fleet_op_free(op);
	return -1;
}

/* Send what is queued, from the loop. */
static void
fleet_pump_cb(evutil_socket_t fd, short what, void *arg)
{
	(void)fd;
	(void)what;
	fleet_pump(arg);
}

/* Forget arg in every queued reservation. */
void
fleet_reserve_forget(struct fleet *f, void *arg)
{
	struct fleet_op *op;

	if (f == NULL)
		return;
	if (f->cur != NULL && f->cur->arg == arg)
		f->cur->cb = NULL;
	TAILQ_FOREACH(op, &f->queue, entry)
		if (op->arg == arg)
			op->cb = NULL;
}

int
fleet_offline_take(struct fleet *f, const struct budget_claim *cl, size_t n, size_t *refused,
    int64_t *left)
{
	return (int)budget_shares_take(f->shares, cl, n, refused, left);
}

/* Reservations that waited too long: answered as unreachable, sent or not. */
static void
fleet_reserve_expire(struct fleet *f)
{
	struct fleet_verdict v = { .kind = FLEET_UNREACHABLE, .why = "no answer in time" };
	struct fleet_op *op;
	int64_t now = now_mono_ms();

	if (f->cur != NULL && f->cur->cb != NULL && now - f->cur->asked_ms >= FLEET_RESERVE_WAIT_MS)
		fleet_verdict_send(f->cur, &v);
	TAILQ_FOREACH(op, &f->queue, entry)
		if (op->cb != NULL && now - op->asked_ms >= FLEET_RESERVE_WAIT_MS)
			fleet_verdict_send(op, &v);
}

/* --- life cycle ----------------------------------------------------------- */

struct fleet *
fleet_start(struct server *srv, char *cause, size_t cause_len)
{
	struct fleet *f = calloc(1, sizeof *f);
	char host[256];

	if (f == NULL) {
		snprintf(cause, cause_len, "out of memory");
		return NULL;
	}
	f->srv = srv;
	TAILQ_INIT(&f->queue);
	f->rsv_base = (uint64_t)now_ms() * 1000;
	f->rsv_next = f->rsv_base;
	f->boot_rid = ledger_last_rid(srv->ledger);
	f->backoff_ms = FLEET_BACKOFF_MIN_MS;
	if (srv->conf->fleet_node != NULL) {
		f->node = strdup(srv->conf->fleet_node);
	} else if (gethostname(host, sizeof host) == 0) {
		host[sizeof host - 1] = '\0';
		f->node = strdup(host);
	} else {
		snprintf(cause, cause_len, "fleet_node is unset and the host name is unknown: %s",
		    strerror(errno));
		free(f);
		return NULL;
	}
	if (f->node == NULL || (f->conninfo = strdup(srv->conf->fleet_postgres)) == NULL ||
	    (f->shares = budget_shares_new()) == NULL ||
	    (f->pump_ev = evtimer_new(srv->base, fleet_pump_cb, f)) == NULL) {
		snprintf(cause, cause_len, "out of memory");
		budget_shares_free(f->shares);
		free(f->conninfo);
		free(f->node);
		free(f);
		return NULL;
	}
	fleet_connect(f);
	return f;
}

void
fleet_tick(struct fleet *f, int64_t now)
{
	(void)now;
	if (f == NULL)
		return;
	fleet_reserve_expire(f);
	switch (f->state) {
	case FLEET_DOWN:
		if (now_mono_ms() >= f->retry_ms)
			fleet_connect(f);
		break;
	case FLEET_CONNECTING:
		if (now_mono_ms() >= f->deadline_ms)
			fleet_fail(f, "connecting", "timed out");
		break;
	case FLEET_READY:
		if (f->cur != NULL && now_mono_ms() >= f->deadline_ms)
			fleet_fail(f, "waiting for the database", "timed out");
		else
			fleet_ship(f);
		break;
	}
}

void
fleet_free(struct fleet *f)
{
	struct fleet_op *op;

	if (f == NULL)
		return;
	f->outage_logged = true;        /* shutting down is not an outage to report */
	if (f->cur != NULL)
		f->cur->cb = NULL;      /* the chats waiting are cancelled after */
	TAILQ_FOREACH(op, &f->queue, entry)
		op->cb = NULL;
	fleet_fail(f, "shutting down", "closed");
	budget_shares_free(f->shares);
	event_free(f->pump_ev);
	free(f->node);
	free(f->conninfo);
	free(f);
}
