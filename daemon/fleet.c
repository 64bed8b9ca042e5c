/* fleet.c: ship the ledger to a shared PostgreSQL table; fleet-wide stats, budgets and leases. */
#include "config.h"

#include <arpa/inet.h>
#include <errno.h>
#include <inttypes.h>
#include <limits.h>
#include <math.h>
#include <poll.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/queue.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <event2/dns.h>
#include <event2/event.h>
#include <event2/util.h>
#include <libpq-fe.h>

#include "daemon/budget.h"
#include "daemon/conf.h"
#include "daemon/fleet.h"
#include "daemon/fleet_lease.h"
#include "daemon/ledger.h"
#include "daemon/log.h"
#include "daemon/openllmd.h"

/*
 * One connection, one statement in flight at a time, a queue behind it.
 *
 * Shipping. A batch is one call of ollm_ship(): the records as arrays, one
 * per column. ollm_node.shipped is the node's position, read at every
 * connect; the call locks that row, stores the records above it and moves
 * it, so a batch sent twice (the answer lost with the connection, a kill -9
 * before the answer) is stored once. The same call adds the records to
 * ollm_rollup (per node, UTC hour, uid or named user, tag, model and
 * status) and ollm_rollup_day (the same per UTC day), which fleet stats
 * read: their cost does not grow with the raw rows. Raw rows live in monthly partitions of ollm_usage (ollm_partition
 * lists them); the month's partition is made when first needed, the next
 * one ahead of time, and those older than fleet_retention_days are dropped
 * (hourly; raw records older than that are not stored, their rollups are).
 *
 * Fleet budgets. ollm_budget holds, per budget key and period, the fleet's
 * used, reserved (per request) and leased amounts (tokens, or billionths of
 * money); every statement that adds to reserved or leased checks, under the
 * rows' locks, that used + reserved + leased stays within the limit (the
 * calling node's own). Rows are locked in key order by every statement, and
 * lease rows after budget rows, so nodes never deadlock.
 *
 * - Leases (ollm_lease, one row per node, budget and period): a node takes a
 *   slice of a budget in one ollm_lease() call and admits requests against
 *   it locally (fleet_lease.c sizes it), with no round trip. The admission
 *   id is FLEET_LEASE_FLAG | the time in microseconds, and the request's
 *   ledger record carries it (as a reservation id would). The local slice
 *   is settled by reading the record from the journal; the database's by
 *   shipping it: its usage moves from the lease (leased) to used, in the
 *   period of the admission, for the lease row taken before the admission
 *   (since <= the id's time). One ollm_lease() call carries every change
 *   (grow, give back, close) and is the heartbeat: each refreshes the
 *   node's rows' expiry (fleet_lease_ttl), and expires the rows of nodes
 *   that stopped. An expired lease is charged as used (what it held may
 *   have been spent) until its node's records come (they count against the
 *   charge, not again) and the node closes it, which gives the rest back.
 * - Fallback: when the fleet has less left than a slice, or a request does
 *   not fit a slice, a request reserves its worst case with one ollm_reserve()
 *   call, all its budgets or none, as before leases; its record carries the
 *   reservation id and its shipping deletes the reservation rows, taking
 *   them off reserved. A reservation refused only because of open
 *   reservations and leases waits (retried as records are shipped) until
 *   its deadline.
 * - Crash: a kill -9 leaves lease rows (they expire) and reservation rows
 *   that over-count, never under-count. Ids are this run's start time in
 *   microseconds plus a counter, so a restart never reuses one. Once a
 *   restarted node has shipped every record of its earlier runs, it drops
 *   its older reservations and closes its older leases.
 * - fleet_offline "local": while the database is away, requests are
 *   admitted against the leases held; what they spend was charged to the
 *   fleet when the leases expired, so the fleet stays within its budgets.
 *
 * Named users (schema version 3): ollm_usage.user_name holds an API key's
 * user with no system account, whose records have uid LEDGER_UID_NAMED; ''
 * for a uid's record. Their budgets are keyed by the name.
 *
 * Host names in fleet_postgres are resolved with libevent's evdns (name
 * servers of /etc/resolv.conf, and /etc/hosts) and passed to libpq as
 * hostaddr, so that its connect never blocks the loop on DNS.
 */

#define FLEET_BACKOFF_MIN_MS	1000
#define FLEET_BACKOFF_MAX_MS	15000
#define FLEET_CONNECT_TIMEOUT_MS 10000
#define FLEET_QUERY_TIMEOUT_MS	30000
#define FLEET_SCHEMA_TIMEOUT_MS	600000  /* moving a large table to version 4 */
#define FLEET_MAINTAIN_MS	3600000
#define FLEET_FAST_MS		20      /* settle and ship this often while requests wait or run */
#define FLEET_RETRY_MS		200     /* a reservation refused for others' holds is tried again */
#define FLEET_TICKET_MAX_MS	7200000 /* a lease admission with no record by then is settled as spent */
#define FLEET_STOP_MS		2000    /* at exit: ship and give the leases back, for this long */
#define FLEET_FALLBACK_KEEP_MS	60000   /* a budget in fallback, unused, is forgotten after this */
#define FLEET_SHIP_PARAMS	22
#define FLEET_TICKET_BUCKETS	1024

enum fleet_state { FLEET_DOWN, FLEET_RESOLVING, FLEET_CONNECTING, FLEET_READY };

struct fleet_op;
struct fleet_waiter;
typedef void (*fleet_done_cb)(struct fleet *, struct fleet_op *, PGresult *, const char *err);

/* One statement to run; params are owned. */
struct fleet_op {
	char *sql;
	int n_params;
	char **params;
	fleet_done_cb done;
	int64_t timeout_ms;         /* 0: FLEET_QUERY_TIMEOUT_MS */
	struct session *session;    /* stats: who asked (NULL once gone) */
	uint64_t req_id;
	char *by;
	uint64_t top;               /* ship: the highest seq in the batch */
	struct budget_claim *claims;  /* stats: the budgets to show */
	size_t n_claims;
	struct stats_result *stats; /* stats: the counters, waiting for the budgets */
	struct fleet_waiter *waiter;  /* reserve: who waits (NULL once gone) */
	struct fleet_lease **leases;  /* lease: the leases it changes */
	int64_t *sent;              /* lease: the change asked for each */
	bool *closing;              /* lease: whether each is closed */
	size_t n_leases;
	int64_t asked_ms;           /* monotonic */
	TAILQ_ENTRY(fleet_op) entry;
};
TAILQ_HEAD(fleet_op_list, fleet_op);

/* A request waiting to be admitted. */
struct fleet_waiter {
	struct budget_claim *claims;
	size_t n;
	fleet_reserve_cb cb;
	void *arg;
	uint64_t rsv_id;            /* its reservation's id, if it reserves */
	bool rsv_sent;              /* a reservation went out: it stays with it */
	bool rsv_busy;              /* one is in flight */
	int64_t asked_ms;           /* monotonic: when it came */
	int64_t deadline_ms;        /* monotonic: waiting for others' holds ends then */
	int64_t retry_ms;           /* monotonic: the next reservation */
	struct fleet_verdict verdict;  /* once answered */
	const char *why;            /* UNREACHABLE: why (static) */
	char why_buf[160];
	TAILQ_ENTRY(fleet_waiter) entry;
};
TAILQ_HEAD(fleet_waiter_list, fleet_waiter);

/* A request admitted against leases, until its record settles it. */
struct fleet_ticket {
	uint64_t id;
	int64_t at_ms;              /* monotonic */
	struct fleet_ticket *next;  /* hash chain */
	size_t n;
	struct fleet_ticket_item {
		struct fleet_lease *lease;
		int64_t worst;
	} items[];
};

/* A host name of fleet_postgres being resolved; it frees itself if abandoned. */
struct fleet_lookup {
	struct fleet *f;            /* NULL once abandoned */
	struct evutil_addrinfo *res;
	int err;
	bool done;
};

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
	char down_why[256];         /* why the database is not reachable */
	bool positioned;            /* shipped is known */
	bool shipping;              /* a batch is queued or in flight */
	bool incompatible;          /* the database's schema is newer than ours */
	uint64_t shipped;           /* every record up to this seq is in the database */
	struct ledger_cursor ship_cur;
	uint64_t idle_at;           /* last rid when a read found nothing to ship */
	uint64_t rsv_base;          /* this run's first reservation id */
	uint64_t rsv_next;
	uint64_t boot_rid;          /* the last record of earlier runs */
	bool stale_dropped;         /* older runs' leftover reservations are gone */
	bool stale_pending;
	struct event *pump_ev;      /* sends what is queued, and answers waiters, from the loop */
	struct event *fast_ev;      /* settles and ships while requests wait or run */
	int64_t maintain_ms;        /* monotonic: the next partition upkeep */
	/* DNS */
	struct evdns_base *dns;
	struct fleet_lookup **lookups;  /* per host entry; NULL for one not looked up */
	size_t n_lookups, lookups_left;
	PQconninfoOption *opts;
	/* budgets */
	struct fleet_lease **leases;
	size_t n_leases;
	bool lease_busy;            /* a lease statement is in flight */
	int64_t heartbeat_ms;       /* monotonic: the next lease statement, changes or not */
	int64_t stamp_us;           /* the last admission time handed out */
	struct fleet_waiter_list waiters;
	struct fleet_waiter_list ready;  /* answered, to be told */
	struct fleet_ticket *tickets[FLEET_TICKET_BUCKETS];
	size_t n_tickets;
	struct ledger_cursor settle_cur;
	uint64_t settled;           /* local leases settled by every record up to this rid */
};

static void fleet_pump(struct fleet *);
static void fleet_ship(struct fleet *);
static void fleet_watch(struct fleet *, short what);
static int fleet_claim_params(const struct budget_claim *, size_t n, char **params);
static void fleet_admit(struct fleet *);
static void fleet_lease_sync(struct fleet *);
static void fleet_soon(struct fleet *);
static void fleet_connect_start(struct fleet *);

/*
 * The schema: version 1 (ollm_usage), 2 (budgets), 3 (named users), 4
 * (leases, rollups, partitions by month). A table of version 3 or before
 * becomes the first partition of the new ollm_usage (its rows up to the end
 * of the month of its newest), after its rows are added to the rollups and
 * each node's position is taken from it.
 */
static const char fleet_schema_sql[] =
    "BEGIN;\n"
    "SELECT pg_advisory_xact_lock(7310547512);\n"
    "CREATE TABLE IF NOT EXISTS ollm_schema_version (\n"
    " version integer PRIMARY KEY,\n"
    " applied timestamptz NOT NULL DEFAULT now());\n"
    "DO $d$ DECLARE m timestamptz; hi timestamptz; BEGIN\n"
    " -- tables change only when the database is older than this version: a\n"
    " -- statement on an existing table would lock it against every node's shipping\n"
    " IF coalesce((SELECT max(version) FROM ollm_schema_version), 0) < 4 THEN\n"
    " IF to_regclass('ollm_usage') IS NULL THEN\n"
    "   CREATE TABLE ollm_usage (\n"
    "    node text NOT NULL, seq bigint NOT NULL, time timestamptz NOT NULL, uid bigint NOT NULL,\n"
    "    tag text NOT NULL, model text NOT NULL, upstream text NOT NULL,\n"
    "    prompt_tokens bigint NOT NULL, completion_tokens bigint NOT NULL,\n"
    "    estimated boolean NOT NULL, cost double precision NOT NULL, status text NOT NULL,\n"
    "    error_code text, latency_ms bigint NOT NULL, reservation bigint,\n"
    "    user_name text NOT NULL DEFAULT '') PARTITION BY RANGE (time);\n"
    "  END IF;\n"
    " CREATE INDEX IF NOT EXISTS ollm_usage_time ON ollm_usage (time);\n"
    " CREATE TABLE IF NOT EXISTS ollm_budget (\n"
    "  budget text NOT NULL,\n"
    "  period_start timestamptz NOT NULL,\n"
    "  used bigint NOT NULL DEFAULT 0,\n"
    "  reserved bigint NOT NULL DEFAULT 0,\n"
    "  budget_limit bigint,\n"
    "  PRIMARY KEY (budget, period_start));\n"
    " CREATE TABLE IF NOT EXISTS ollm_reservation (\n"
    "  node text NOT NULL,\n"
    "  id bigint NOT NULL,\n"
    "  budget text NOT NULL,\n"
    "  period_start timestamptz NOT NULL,\n"
    "  amount bigint NOT NULL,\n"
    "  created timestamptz NOT NULL DEFAULT now(),\n"
    "  PRIMARY KEY (node, id, budget));\n"
    " CREATE TABLE IF NOT EXISTS ollm_node (\n"
    "  node text PRIMARY KEY,\n"
    "  seen timestamptz NOT NULL);\n"
    " ALTER TABLE ollm_usage ADD COLUMN IF NOT EXISTS reservation bigint;\n"
    " ALTER TABLE ollm_usage ADD COLUMN IF NOT EXISTS user_name text NOT NULL DEFAULT '';\n"
    " ALTER TABLE ollm_budget ADD COLUMN IF NOT EXISTS leased bigint NOT NULL DEFAULT 0;\n"
    " ALTER TABLE ollm_node ADD COLUMN IF NOT EXISTS shipped bigint;\n"
    " CREATE TABLE IF NOT EXISTS ollm_lease (\n"
    "  node text NOT NULL,\n"
    "  budget text NOT NULL,\n"
    "  period_start timestamptz NOT NULL,\n"
    "  amount bigint NOT NULL DEFAULT 0,\n"
    "  charge bigint NOT NULL DEFAULT 0,\n"
    "  expired boolean NOT NULL DEFAULT false,\n"
    "  since bigint NOT NULL,\n"
    "  wanted bigint NOT NULL DEFAULT 0,\n"
    "  expires timestamptz NOT NULL,\n"
    "  PRIMARY KEY (node, budget, period_start));\n"
    " CREATE TABLE IF NOT EXISTS ollm_rollup (\n"
    "  node text NOT NULL,\n"
    "  hour timestamptz NOT NULL,\n"
    "  uid bigint NOT NULL,\n"
    "  user_name text NOT NULL,\n"
    "  tag text NOT NULL,\n"
    "  model text NOT NULL,\n"
    "  status text NOT NULL,\n"
    "  requests bigint NOT NULL,\n"
    "  prompt_tokens bigint NOT NULL,\n"
    "  completion_tokens bigint NOT NULL,\n"
    "  estimated bigint NOT NULL,\n"
    "  cost double precision NOT NULL,\n"
    "  latency_ms bigint NOT NULL,\n"
    "  PRIMARY KEY (node, hour, uid, user_name, tag, model, status));\n"
    " CREATE INDEX IF NOT EXISTS ollm_rollup_hour ON ollm_rollup (hour);\n"
    " CREATE TABLE IF NOT EXISTS ollm_rollup_day (\n"
    "  node text NOT NULL,\n"
    "  day timestamptz NOT NULL,\n"
    "  uid bigint NOT NULL,\n"
    "  user_name text NOT NULL,\n"
    "  tag text NOT NULL,\n"
    "  model text NOT NULL,\n"
    "  status text NOT NULL,\n"
    "  requests bigint NOT NULL,\n"
    "  prompt_tokens bigint NOT NULL,\n"
    "  completion_tokens bigint NOT NULL,\n"
    "  estimated bigint NOT NULL,\n"
    "  cost double precision NOT NULL,\n"
    "  latency_ms bigint NOT NULL,\n"
    "  PRIMARY KEY (node, day, uid, user_name, tag, model, status));\n"
    " CREATE TABLE IF NOT EXISTS ollm_partition (\n"
    "  name text PRIMARY KEY,\n"
    "  lo timestamptz NOT NULL,\n"
    "  hi timestamptz NOT NULL);\n"
    " IF (SELECT relkind FROM pg_class WHERE oid = 'ollm_usage'::regclass) = 'r' THEN\n"
    "   INSERT INTO ollm_node AS o (node, seen, shipped)\n"
    "    SELECT node, now(), max(seq) FROM ollm_usage GROUP BY node\n"
    "    ON CONFLICT (node) DO UPDATE SET shipped = greatest(coalesce(o.shipped, 0), excluded.shipped);\n"
    "   INSERT INTO ollm_rollup (node, hour, uid, user_name, tag, model, status, requests,\n"
    "    prompt_tokens, completion_tokens, estimated, cost, latency_ms)\n"
    "    SELECT node, date_trunc('hour', time, 'UTC'), uid, user_name, tag, model, status, count(*),\n"
    "     sum(prompt_tokens), sum(completion_tokens), count(*) FILTER (WHERE estimated), sum(cost),\n"
    "     sum(latency_ms)\n"
    "    FROM ollm_usage GROUP BY 1, 2, 3, 4, 5, 6, 7\n"
    "    ON CONFLICT DO NOTHING;\n"
    "   INSERT INTO ollm_rollup_day (node, day, uid, user_name, tag, model, status, requests,\n"
    "    prompt_tokens, completion_tokens, estimated, cost, latency_ms)\n"
    "    SELECT node, date_trunc('day', hour, 'UTC'), uid, user_name, tag, model, status, sum(requests),\n"
    "     sum(prompt_tokens), sum(completion_tokens), sum(estimated), sum(cost), sum(latency_ms)\n"
    "    FROM ollm_rollup GROUP BY 1, 2, 3, 4, 5, 6, 7\n"
    "    ON CONFLICT DO NOTHING;\n"
    "   SELECT max(time) INTO m FROM ollm_usage;\n"
    "   ALTER TABLE ollm_usage RENAME TO ollm_usage_v3;\n"
    "   ALTER INDEX ollm_usage_time RENAME TO ollm_usage_v3_time;\n"
    "   CREATE TABLE ollm_usage (LIKE ollm_usage_v3 INCLUDING DEFAULTS) PARTITION BY RANGE (time);\n"
    "   CREATE INDEX ollm_usage_time ON ollm_usage (time);\n"
    "   IF m IS NULL THEN\n"
    "    DROP TABLE ollm_usage_v3;\n"
    "   ELSE\n"
    "    hi := (date_trunc('month', m, 'UTC') AT TIME ZONE 'UTC' + interval '1 month') AT TIME ZONE 'UTC';\n"
    "    EXECUTE format('ALTER TABLE ollm_usage ATTACH PARTITION ollm_usage_v3 FOR VALUES FROM (MINVALUE) TO (%L)', hi);\n"
    "    INSERT INTO ollm_partition VALUES ('ollm_usage_v3', '-infinity', hi);\n"
    "   END IF;\n"
    "  END IF;\n"
    " END IF;\n"
    "END $d$;\n"
    "CREATE OR REPLACE FUNCTION ollm_usage_partitions(p_from timestamptz, p_to timestamptz)\n"
    " RETURNS void LANGUAGE plpgsql AS $f$\n"
    " DECLARE m timestamptz := date_trunc('month', p_from, 'UTC'); nm timestamptz; name text;\n"
    " BEGIN\n"
    "  WHILE m <= p_to LOOP\n"
    "   nm := (m AT TIME ZONE 'UTC' + interval '1 month') AT TIME ZONE 'UTC';\n"
    "   IF NOT EXISTS (SELECT 1 FROM ollm_partition WHERE lo <= m AND m < hi) THEN\n"
    "    PERFORM pg_advisory_xact_lock(7310547513);\n"
    "    IF NOT EXISTS (SELECT 1 FROM ollm_partition WHERE lo <= m AND m < hi) THEN\n"
    "     name := 'ollm_usage_' || to_char(m AT TIME ZONE 'UTC', 'YYYYMM');\n"
    "     EXECUTE format('CREATE TABLE IF NOT EXISTS %I PARTITION OF ollm_usage FOR VALUES FROM (%L) TO (%L)',\n"
    "      name, m, nm);\n"
    "     INSERT INTO ollm_partition VALUES (name, m, nm);\n"
    "    END IF;\n"
    "   END IF;\n"
    "   m := nm;\n"
    "  END LOOP;\n"
    " END $f$;\n"
    "CREATE OR REPLACE FUNCTION ollm_usage_maintain(p_retention_days integer)\n"
    " RETURNS integer LANGUAGE plpgsql AS $f$\n"
    " DECLARE p record; n integer := 0;\n"
    " BEGIN\n"
    "  PERFORM set_config('lock_timeout', '5s', true);\n"
    "  PERFORM ollm_usage_partitions(now(), now() + interval '1 month');\n"
    "  IF p_retention_days > 0 THEN\n"
    "   FOR p IN SELECT name FROM ollm_partition\n"
    "    WHERE hi <= now() - p_retention_days * interval '1 day' ORDER BY hi LOOP\n"
    "    EXECUTE format('DROP TABLE IF EXISTS %I', p.name);\n"
    "    DELETE FROM ollm_partition WHERE name = p.name;\n"
    "    n := n + 1;\n"
    "   END LOOP;\n"
    "  END IF;\n"
    "  RETURN n;\n"
    " END $f$;\n"
    "CREATE OR REPLACE FUNCTION ollm_lock(p_keys text[], p_starts bigint[], p_limits bigint[])\n"
    " RETURNS void LANGUAGE plpgsql AS $f$\n"
    " DECLARE en text[]; eb text[]; ep timestamptz[];\n"
    " BEGIN\n"
    "  INSERT INTO ollm_budget (budget, period_start, budget_limit)\n"
    "   SELECT t.b, to_timestamp(t.s / 1000.0), t.l FROM unnest(p_keys, p_starts, p_limits) AS t(b, s, l)\n"
    "   ORDER BY 1, 2 ON CONFLICT DO NOTHING;\n"
    "  SELECT array_agg(node), array_agg(budget), array_agg(period_start) INTO en, eb, ep\n"
    "   FROM ollm_lease WHERE NOT expired AND expires < now();\n"
    "  PERFORM 1 FROM ollm_budget x WHERE (x.budget, x.period_start) IN (\n"
    "    SELECT t.b, to_timestamp(t.s / 1000.0) FROM unnest(p_keys, p_starts) AS t(b, s)\n"
    "    UNION SELECT e.b, e.p FROM unnest(eb, ep) AS e(b, p))\n"
    "   ORDER BY x.budget, x.period_start FOR UPDATE OF x;\n"
    "  IF en IS NOT NULL THEN\n"
    "   WITH l AS (SELECT l.node, l.budget, l.period_start FROM ollm_lease l, unnest(en, eb, ep) AS e(n, b, p)\n"
    "     WHERE l.node = e.n AND l.budget = e.b AND l.period_start = e.p AND NOT l.expired\n"
    "     AND l.expires < now() FOR UPDATE OF l SKIP LOCKED),\n"
    "    e AS (UPDATE ollm_lease x SET expired = true, charge = x.charge + x.amount, amount = 0 FROM l\n"
    "     WHERE x.node = l.node AND x.budget = l.budget AND x.period_start = l.period_start\n"
    "     RETURNING x.budget, x.period_start, x.charge),\n"
    "    s AS (SELECT budget, period_start, sum(charge) AS a FROM e GROUP BY 1, 2)\n"
    "   UPDATE ollm_budget x SET leased = greatest(0, x.leased - s.a)::bigint,\n"
    "    used = least(x.used::numeric + s.a, 4611686018427387904)::bigint\n"
    "    FROM s WHERE x.budget = s.budget AND x.period_start = s.period_start;\n"
    "  END IF;\n"
    " END $f$;\n"
    "DO $d$ BEGIN\n"
    " IF EXISTS (SELECT 1 FROM pg_proc WHERE proname = 'ollm_reserve'\n"
    "  AND NOT 'b_leased' = ANY (proargnames)) THEN\n"
    "  DROP FUNCTION ollm_reserve(text, bigint, text[], bigint[], bigint[], bigint[]);\n"
    " END IF;\n"
    "END $d$;\n"
    "CREATE OR REPLACE FUNCTION ollm_reserve(p_node text, p_id bigint, p_keys text[],\n"
    " p_starts bigint[], p_limits bigint[], p_amounts bigint[], p_ttl_ms bigint DEFAULT 3600000)\n"
    " RETURNS TABLE (k integer, b_used bigint, b_reserved bigint, b_leased bigint, b_nodes bigint,\n"
    " b_refused boolean) LANGUAGE plpgsql AS $f$\n"
    " #variable_conflict use_column\n"
    " DECLARE n integer := coalesce(array_length(p_keys, 1), 0); i integer;\n"
    "  bad integer := 0; u bigint; r bigint; le bigint; cnt bigint;\n"
    " BEGIN\n"
    "  INSERT INTO ollm_node (node, seen) VALUES (p_node, now())\n"
    "   ON CONFLICT (node) DO UPDATE SET seen = now();\n"
    "  SELECT count(*) INTO cnt FROM ollm_node WHERE seen > now() - p_ttl_ms * interval '1 millisecond';\n"
    "  PERFORM ollm_lock(p_keys, p_starts, p_limits);\n"
    "  IF NOT EXISTS (SELECT 1 FROM ollm_reservation WHERE node = p_node AND id = p_id) THEN\n"
    "   FOR i IN 1 .. n LOOP\n"
    "    SELECT x.used, x.reserved, x.leased INTO u, r, le FROM ollm_budget x WHERE x.budget = p_keys[i]\n"
    "     AND x.period_start = to_timestamp(p_starts[i] / 1000.0);\n"
    "    IF bad = 0 AND p_amounts[i] > 0 AND\n"
    "     u::numeric + r + le + p_amounts[i] > p_limits[i] THEN bad := i; END IF;\n"
    "   END LOOP;\n"
    "   IF bad = 0 THEN\n"
    "    UPDATE ollm_budget x SET reserved = least(x.reserved::numeric + t.a,\n"
    "     4611686018427387904)::bigint, budget_limit = t.l\n"
    "     FROM unnest(p_keys, p_starts, p_limits, p_amounts) AS t(b, s, l, a)\n"
    "     WHERE x.budget = t.b AND x.period_start = to_timestamp(t.s / 1000.0);\n"
    "    INSERT INTO ollm_reservation (node, id, budget, period_start, amount)\n"
    "     SELECT p_node, p_id, t.b, to_timestamp(t.s / 1000.0), t.a\n"
    "     FROM unnest(p_keys, p_starts, p_amounts) AS t(b, s, a);\n"
    "   END IF;\n"
    "  END IF;\n"
    "  RETURN QUERY SELECT t.i::integer, x.used, x.reserved, x.leased, cnt, t.i = bad\n"
    "   FROM unnest(p_keys, p_starts) WITH ORDINALITY AS t(b, s, i)\n"
    "   JOIN ollm_budget x ON x.budget = t.b AND x.period_start = to_timestamp(t.s / 1000.0)\n"
    "   ORDER BY t.i;\n"
    " END $f$;\n"
    "CREATE OR REPLACE FUNCTION ollm_lease(p_node text, p_ttl_ms bigint, p_since bigint,\n"
    " p_keys text[], p_starts bigint[], p_limits bigint[], p_changes bigint[], p_wants bigint[],\n"
    " p_close boolean[])\n"
    " RETURNS TABLE (k integer, l_change bigint, l_expired boolean, l_row boolean, b_used bigint,\n"
    " b_reserved bigint, b_leased bigint, b_nodes bigint, b_wanted bigint) LANGUAGE plpgsql AS $f$\n"
    " #variable_conflict use_column\n"
    " DECLARE n integer := coalesce(array_length(p_keys, 1), 0); i integer; ps timestamptz;\n"
    "  lr ollm_lease%ROWTYPE; b ollm_budget%ROWTYPE; have boolean; g bigint; cnt bigint;\n"
    "  ttl interval := p_ttl_ms * interval '1 millisecond';\n"
    "  changes bigint[] := '{}'; gone boolean[] := '{}';\n"
    " BEGIN\n"
    "  INSERT INTO ollm_node (node, seen) VALUES (p_node, now())\n"
    "   ON CONFLICT (node) DO UPDATE SET seen = now();\n"
    "  SELECT count(*) INTO cnt FROM ollm_node WHERE seen > now() - ttl;\n"
    "  PERFORM ollm_lock(p_keys, p_starts, p_limits);\n"
    "  UPDATE ollm_lease SET expires = now() + ttl WHERE node = p_node AND NOT expired;\n"
    "  FOR i IN 1 .. n LOOP\n"
    "   ps := to_timestamp(p_starts[i] / 1000.0);\n"
    "   SELECT * INTO lr FROM ollm_lease x WHERE x.node = p_node AND x.budget = p_keys[i]\n"
    "    AND x.period_start = ps FOR UPDATE;\n"
    "   have := FOUND;\n"
    "   SELECT * INTO b FROM ollm_budget x WHERE x.budget = p_keys[i] AND x.period_start = ps;\n"
    "   g := 0;\n"
    "   IF p_close[i] THEN\n"
    "    IF have THEN\n"
    "     UPDATE ollm_budget x SET leased = greatest(0, x.leased - lr.amount),\n"
    "      used = greatest(0, x.used - lr.charge) WHERE x.budget = p_keys[i] AND x.period_start = ps;\n"
    "     DELETE FROM ollm_lease x WHERE x.node = p_node AND x.budget = p_keys[i] AND x.period_start = ps;\n"
    "     g := -lr.amount;\n"
    "    END IF;\n"
    "   ELSIF have AND lr.expired THEN\n"
    "    NULL;\n"
    "   ELSIF p_changes[i] > 0 THEN\n"
    "    g := greatest(0, least(p_changes[i]::numeric,\n"
    "     p_limits[i]::numeric - b.used - b.reserved - b.leased,\n"
    "     floor((p_limits[i]::numeric - b.used - b.reserved) / greatest(cnt, 1))\n"
    "      - coalesce(lr.amount, 0)))::bigint;\n"
    "    IF have THEN\n"
    "     UPDATE ollm_lease x SET amount = x.amount + g, wanted = p_wants[i]\n"
    "      WHERE x.node = p_node AND x.budget = p_keys[i] AND x.period_start = ps;\n"
    "    ELSIF g > 0 OR p_wants[i] > 0 THEN\n"
    "     INSERT INTO ollm_lease (node, budget, period_start, amount, since, wanted, expires)\n"
    "      VALUES (p_node, p_keys[i], ps, g, p_since, p_wants[i], now() + ttl);\n"
    "    END IF;\n"
    "    UPDATE ollm_budget x SET leased = x.leased + g, budget_limit = p_limits[i]\n"
    "     WHERE x.budget = p_keys[i] AND x.period_start = ps;\n"
    "   ELSIF have THEN\n"
    "    IF p_changes[i] < 0 THEN\n"
    "     g := -least(-p_changes[i], lr.amount);\n"
    "     UPDATE ollm_budget x SET leased = greatest(0, x.leased + g)\n"
    "      WHERE x.budget = p_keys[i] AND x.period_start = ps;\n"
    "    END IF;\n"
    "    UPDATE ollm_lease x SET amount = x.amount + g, wanted = p_wants[i]\n"
    "     WHERE x.node = p_node AND x.budget = p_keys[i] AND x.period_start = ps;\n"
    "   END IF;\n"
    "   changes := changes || g;\n"
    "   gone := gone || (have AND lr.expired AND NOT p_close[i]);\n"
    "  END LOOP;\n"
    "  RETURN QUERY SELECT t.i::integer, changes[t.i], gone[t.i],\n"
    "   EXISTS (SELECT 1 FROM ollm_lease o WHERE o.node = p_node AND o.budget = t.b\n"
    "    AND o.period_start = to_timestamp(t.s / 1000.0)),\n"
    "   x.used, x.reserved, x.leased, greatest(cnt, 1),\n"
    "   coalesce((SELECT sum(o.wanted) FROM ollm_lease o WHERE o.budget = t.b\n"
    "    AND o.period_start = to_timestamp(t.s / 1000.0) AND o.node <> p_node AND NOT o.expired), 0)::bigint\n"
    "   FROM unnest(p_keys, p_starts) WITH ORDINALITY AS t(b, s, i)\n"
    "   JOIN ollm_budget x ON x.budget = t.b AND x.period_start = to_timestamp(t.s / 1000.0)\n"
    "   ORDER BY t.i;\n"
    " END $f$;\n"
    "CREATE OR REPLACE FUNCTION ollm_ship(p_node text, p_top bigint, p_retention_days integer,\n"
    " p_seq bigint[], p_ms bigint[], p_uid bigint[], p_tag text[], p_model text[], p_upstream text[],\n"
    " p_prompt bigint[], p_completion bigint[], p_estimated boolean[], p_cost double precision[],\n"
    " p_status text[], p_error text[], p_latency bigint[], p_rsv bigint[], p_user text[],\n"
    " p_useq bigint[], p_ukey text[], p_ustart bigint[], p_uamount bigint[])\n"
    " RETURNS bigint LANGUAGE plpgsql AS $f$\n"
    " DECLARE pos bigint; cutoff bigint; lo bigint; hi bigint;\n"
    " BEGIN\n"
    "  INSERT INTO ollm_node (node, seen, shipped) VALUES (p_node, now(), 0)\n"
    "   ON CONFLICT (node) DO NOTHING;\n"
    "  SELECT coalesce(shipped, 0) INTO pos FROM ollm_node WHERE node = p_node FOR UPDATE;\n"
    "  IF pos >= p_top THEN RETURN pos; END IF;\n"
    "  IF p_retention_days > 0 THEN\n"
    "   cutoff := floor(extract(epoch FROM now() - p_retention_days * interval '1 day') * 1000);\n"
    "  END IF;\n"
    "  SELECT min(t.ms), max(t.ms) INTO lo, hi FROM unnest(p_seq, p_ms) AS t(s, ms)\n"
    "   WHERE t.s > pos AND (cutoff IS NULL OR t.ms >= cutoff);\n"
    "  IF lo IS NOT NULL THEN\n"
    "   PERFORM ollm_usage_partitions(to_timestamp(lo / 1000.0), to_timestamp(hi / 1000.0));\n"
    "  END IF;\n"
    "  INSERT INTO ollm_usage (node, seq, time, uid, tag, model, upstream, prompt_tokens,\n"
    "   completion_tokens, estimated, cost, status, error_code, latency_ms, reservation, user_name)\n"
    "   SELECT p_node, t.s, to_timestamp(t.ms / 1000.0), t.uid, t.tag, t.model, t.up, t.p, t.c, t.e,\n"
    "    t.cost, t.st, t.err, t.lat, t.rsv, t.u\n"
    "   FROM unnest(p_seq, p_ms, p_uid, p_tag, p_model, p_upstream, p_prompt, p_completion,\n"
    "    p_estimated, p_cost, p_status, p_error, p_latency, p_rsv, p_user)\n"
    "    AS t(s, ms, uid, tag, model, up, p, c, e, cost, st, err, lat, rsv, u)\n"
    "   WHERE t.s > pos AND (cutoff IS NULL OR t.ms >= cutoff);\n"
    "  INSERT INTO ollm_rollup AS r (node, hour, uid, user_name, tag, model, status, requests,\n"
    "   prompt_tokens, completion_tokens, estimated, cost, latency_ms)\n"
    "   SELECT p_node, date_trunc('hour', to_timestamp(t.ms / 1000.0), 'UTC'), t.uid, t.u, t.tag,\n"
    "    t.model, t.st, count(*), sum(t.p), sum(t.c), count(*) FILTER (WHERE t.e), sum(t.cost),\n"
    "    sum(t.lat)\n"
    "   FROM unnest(p_seq, p_ms, p_uid, p_tag, p_model, p_prompt, p_completion, p_estimated, p_cost,\n"
    "    p_status, p_latency, p_user) AS t(s, ms, uid, tag, model, p, c, e, cost, st, lat, u)\n"
    "   WHERE t.s > pos GROUP BY 1, 2, 3, 4, 5, 6, 7\n"
    "   ON CONFLICT (node, hour, uid, user_name, tag, model, status) DO UPDATE SET\n"
    "    requests = r.requests + excluded.requests,\n"
    "    prompt_tokens = r.prompt_tokens + excluded.prompt_tokens,\n"
    "    completion_tokens = r.completion_tokens + excluded.completion_tokens,\n"
    "    estimated = r.estimated + excluded.estimated, cost = r.cost + excluded.cost,\n"
    "    latency_ms = r.latency_ms + excluded.latency_ms;\n"
    "  INSERT INTO ollm_rollup_day AS r (node, day, uid, user_name, tag, model, status, requests,\n"
    "   prompt_tokens, completion_tokens, estimated, cost, latency_ms)\n"
    "   SELECT p_node, date_trunc('day', to_timestamp(t.ms / 1000.0), 'UTC'), t.uid, t.u, t.tag,\n"
    "    t.model, t.st, count(*), sum(t.p), sum(t.c), count(*) FILTER (WHERE t.e), sum(t.cost),\n"
    "    sum(t.lat)\n"
    "   FROM unnest(p_seq, p_ms, p_uid, p_tag, p_model, p_prompt, p_completion, p_estimated, p_cost,\n"
    "    p_status, p_latency, p_user) AS t(s, ms, uid, tag, model, p, c, e, cost, st, lat, u)\n"
    "   WHERE t.s > pos GROUP BY 1, 2, 3, 4, 5, 6, 7\n"
    "   ON CONFLICT (node, day, uid, user_name, tag, model, status) DO UPDATE SET\n"
    "    requests = r.requests + excluded.requests,\n"
    "    prompt_tokens = r.prompt_tokens + excluded.prompt_tokens,\n"
    "    completion_tokens = r.completion_tokens + excluded.completion_tokens,\n"
    "    estimated = r.estimated + excluded.estimated, cost = r.cost + excluded.cost,\n"
    "    latency_ms = r.latency_ms + excluded.latency_ms;\n"
    "  IF coalesce(array_length(p_useq, 1), 0) > 0 OR EXISTS (SELECT 1 FROM unnest(p_seq, p_rsv)\n"
    "   AS t(s, id) WHERE t.s > pos AND t.id < 4611686018427387904) THEN\n"
    "   PERFORM 1 FROM ollm_budget x WHERE (x.budget, x.period_start) IN (\n"
    "     SELECT u.b, to_timestamp(u.st / 1000.0) FROM unnest(p_useq, p_ukey, p_ustart) AS u(s, b, st)\n"
    "     WHERE u.s > pos\n"
    "     UNION SELECT v.budget, v.period_start FROM ollm_reservation v, unnest(p_seq, p_rsv) AS t(s, id)\n"
    "     WHERE t.s > pos AND v.node = p_node AND v.id = t.id)\n"
    "    ORDER BY x.budget, x.period_start FOR UPDATE OF x;\n"
    "   PERFORM 1 FROM ollm_lease l WHERE l.node = p_node AND (l.budget, l.period_start) IN (\n"
    "     SELECT u.b, to_timestamp(u.st / 1000.0) FROM unnest(p_useq, p_ukey, p_ustart) AS u(s, b, st)\n"
    "     WHERE u.s > pos) FOR UPDATE OF l;\n"
    "   WITH t AS (SELECT t.s, CASE WHEN t.id < 4611686018427387904 THEN t.id END AS rsv,\n"
    "     CASE WHEN t.id >= 4611686018427387904 THEN t.id - 4611686018427387904 END AS stamp\n"
    "     FROM unnest(p_seq, p_rsv) AS t(s, id) WHERE t.s > pos),\n"
    "    del AS (DELETE FROM ollm_reservation x USING t WHERE x.node = p_node AND x.id = t.rsv\n"
    "     RETURNING t.s, x.budget, x.period_start, x.amount),\n"
    "    u AS (SELECT u.b AS budget, coalesce(d.period_start, to_timestamp(u.st / 1000.0)) AS period_start,\n"
    "     u.a AS amount, t.stamp\n"
    "     FROM unnest(p_useq, p_ukey, p_ustart, p_uamount) AS u(s, b, st, a) JOIN t ON t.s = u.s\n"
    "     LEFT JOIN del d ON d.s = u.s AND d.budget = u.b),\n"
    "    lz AS (SELECT l.budget, l.period_start, l.expired,\n"
    "     least(CASE WHEN l.expired THEN l.charge ELSE l.amount END, sum(u.amount)) AS d\n"
    "     FROM u JOIN ollm_lease l ON l.node = p_node AND l.budget = u.budget\n"
    "     AND l.period_start = u.period_start AND l.since <= u.stamp\n"
    "     GROUP BY l.budget, l.period_start, l.expired, l.charge, l.amount),\n"
    "    lu AS (UPDATE ollm_lease l SET amount = l.amount - CASE WHEN lz.expired THEN 0 ELSE lz.d END,\n"
    "     charge = l.charge - CASE WHEN lz.expired THEN lz.d ELSE 0 END FROM lz\n"
    "     WHERE l.node = p_node AND l.budget = lz.budget AND l.period_start = lz.period_start),\n"
    "    c AS (SELECT budget, period_start, amount::numeric AS used, 0::numeric AS freed,\n"
    "     0::numeric AS unleased FROM u\n"
    "     UNION ALL SELECT budget, period_start, 0, amount, 0 FROM del\n"
    "     UNION ALL SELECT budget, period_start, CASE WHEN expired THEN -d ELSE 0 END, 0,\n"
    "     CASE WHEN expired THEN 0 ELSE d END FROM lz)\n"
    "   INSERT INTO ollm_budget AS x (budget, period_start, used, reserved, leased)\n"
    "    SELECT budget, period_start, least(greatest(sum(used), 0), 4611686018427387904)::bigint,\n"
    "     -least(sum(freed), 4611686018427387904)::bigint,\n"
    "     -least(sum(unleased), 4611686018427387904)::bigint\n"
    "    FROM c GROUP BY 1, 2 ORDER BY 1, 2\n"
    "    ON CONFLICT (budget, period_start) DO UPDATE SET\n"
    "     used = least(x.used::numeric + excluded.used, 4611686018427387904)::bigint,\n"
    "     reserved = greatest(0, x.reserved + excluded.reserved),\n"
    "     leased = greatest(0, x.leased + excluded.leased);\n"
    "  END IF;\n"
    "  UPDATE ollm_node SET shipped = p_top, seen = now() WHERE node = p_node;\n"
    "  RETURN p_top;\n"
    " END $f$;\n"
    "INSERT INTO ollm_schema_version (version) VALUES (1), (2), (3), (4) ON CONFLICT DO NOTHING;\n"
    "COMMIT;\n";

static const char fleet_position_sql[] =
    "SELECT (SELECT max(version) FROM ollm_schema_version),"
    " (SELECT coalesce(shipped, 0) FROM ollm_node WHERE node = $1)";

/* This node's lease rows, as the database has them. */
static const char fleet_own_leases_sql[] =
    "SELECT budget, floor(extract(epoch FROM period_start) * 1000)::bigint, amount, charge,"
    " expired, since FROM ollm_lease WHERE node = $1";

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
	free(op->leases);
	free(op->sent);
	free(op->closing);
	if (op->stats != NULL) {
		ledger_stats_clear(op->stats);
		free(op->stats);
	}
	free(op);
}

/* A new op running sql with n_params parameters (all NULL); NULL when out of memory. */
static struct fleet_op *
fleet_op_new(const char *sql, int n_params, fleet_done_cb done)
{
	struct fleet_op *op = calloc(1, sizeof *op);

	if (op == NULL)
		return NULL;
	if ((op->sql = strdup(sql)) == NULL ||
	    (n_params > 0 && (op->params = calloc((size_t)n_params, sizeof *op->params)) == NULL)) {
		fleet_op_free(op);
		return NULL;
	}
	op->n_params = n_params;
	op->done = done;
	op->asked_ms = now_mono_ms();
	return op;
}

/* Queue a statement; run it when the connection is free. */
static void
fleet_enqueue(struct fleet *f, struct fleet_op *op)
{
	TAILQ_INSERT_TAIL(&f->queue, op, entry);
	fleet_pump(f);
}

/* Stop resolving: lookups still running are orphaned, and free themselves when they end. */
static void
fleet_lookups_abandon(struct fleet *f)
{
	for (size_t i = 0; i < f->n_lookups; i++) {
		struct fleet_lookup *lk = f->lookups[i];
		if (lk == NULL)
			continue;
		if (!lk->done) {
			lk->f = NULL;
			continue;
		}
		if (lk->res != NULL)
			evutil_freeaddrinfo(lk->res);
		free(lk);
	}
	free(f->lookups);
	f->lookups = NULL;
	f->n_lookups = 0;
	f->lookups_left = 0;
}

/*
 * Free the resolver (never from its own callbacks): the lookups it still has
 * end with an error from the loop, and free themselves then.
 */
static void
fleet_dns_free(struct fleet *f)
{
	fleet_lookups_abandon(f);
	if (f->dns != NULL)
		evdns_base_free(f->dns, 1);
	f->dns = NULL;
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
	snprintf(f->down_why, sizeof f->down_why, "%s: %s", what, msg);
	if (!f->outage_logged) {
		log_warn("fleet: %s: %s; serving on, shipping resumes when the database is back",
		    what, msg);
		f->outage_logged = true;
	} else {
		log_debug("fleet: %s: %s", what, msg);
	}
	if (f->state == FLEET_RESOLVING)
		fleet_lookups_abandon(f);
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
	fleet_soon(f);              /* waiters learn that the database is away */
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
	f->deadline_ms = now_mono_ms() + (op->timeout_ms > 0 ? op->timeout_ms :
	    FLEET_QUERY_TIMEOUT_MS);
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

/* Ask for the schema, the shipping position and this node's leases. */
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

/* The value of keyword in the parsed conninfo, NULL when unset. */
static const char *
fleet_opt(const PQconninfoOption *o, const char *keyword)
{
	for (; o != NULL && o->keyword != NULL; o++)
		if (strcmp(o->keyword, keyword) == 0)
			return o->val != NULL && *o->val != '\0' ? o->val : NULL;
	return NULL;
}

/* Split a comma-separated libpq list; the parts are owned by *out. -1 when out of memory. */
static int
fleet_split(const char *s, char ***out, size_t *n)
{
	char **v = NULL, **grown;
	size_t k = 0;
	const char *p = s, *c;

	for (;;) {
		c = strchr(p, ',');
		if ((grown = reallocarray(v, k + 1, sizeof *v)) == NULL)
			goto fail;
		v = grown;
		if ((v[k] = strndup(p, c != NULL ? (size_t)(c - p) : strlen(p))) == NULL)
			goto fail;
		k++;
		if (c == NULL)
			break;
		p = c + 1;
	}
	*out = v;
	*n = k;
	return 0;
fail:
	while (k > 0)
		free(v[--k]);
	free(v);
	return -1;
}

static void
fleet_split_free(char **v, size_t n)
{
	for (size_t i = 0; i < n; i++)
		free(v[i]);
	free(v);
}

/* Whether a libpq host entry needs no name lookup: empty, a socket directory, or an address. */
static bool
fleet_host_literal(const char *h)
{
	struct in6_addr a6;
	struct in_addr a4;

	return *h == '\0' || *h == '/' || *h == '@' || inet_pton(AF_INET, h, &a4) == 1 ||
	    inet_pton(AF_INET6, h, &a6) == 1;
}

/* Start libpq's connect with the parsed options, host, hostaddr and port replaced when given. */
static void
fleet_connect_with(struct fleet *f, const char *host, const char *hostaddr, const char *port)
{
	const char *keys[64], *values[64];
	size_t n = 0;

	for (PQconninfoOption *o = f->opts; o != NULL && o->keyword != NULL; o++) {
		if (o->val == NULL || n >= 58)
			continue;
		if ((host != NULL && strcmp(o->keyword, "host") == 0) ||
		    (hostaddr != NULL && strcmp(o->keyword, "hostaddr") == 0) ||
		    (port != NULL && strcmp(o->keyword, "port") == 0) ||
		    strcmp(o->keyword, "client_encoding") == 0)
			continue;
		keys[n] = o->keyword;
		values[n++] = o->val;
	}
	if (host != NULL) {
		keys[n] = "host";
		values[n++] = host;
	}
	if (hostaddr != NULL) {
		keys[n] = "hostaddr";
		values[n++] = hostaddr;
	}
	if (port != NULL) {
		keys[n] = "port";
		values[n++] = port;
	}
	keys[n] = "client_encoding";
	values[n++] = "UTF8";
	if (fleet_opt(f->opts, "application_name") == NULL &&
	    fleet_opt(f->opts, "fallback_application_name") == NULL) {
		keys[n] = "fallback_application_name";
		values[n++] = "openllmd";
	}
	keys[n] = NULL;
	values[n] = NULL;
	f->conn = PQconnectStartParams(keys, values, 0);
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

/* Append s and a separator to a growing list; false when out of memory. */
static bool
fleet_list_add(char **list, size_t *len, const char *s)
{
	size_t add = strlen(s) + 1;
	char *grown = realloc(*list, *len + add + 1);

	if (grown == NULL)
		return false;
	*list = grown;
	if (*len > 0)
		(*list)[(*len)++] = ',';
	memcpy(*list + *len, s, add - 1);
	*len += add - 1;
	(*list)[*len] = '\0';
	return true;
}

/*
 * Every name is resolved: connect with one entry per address found (the name
 * kept as host, for TLS and the password file; the address as hostaddr), the
 * other entries as they were.
 */
static void
fleet_resolved_all(struct fleet *f)
{
	const char *hostv = fleet_opt(f->opts, "host"), *portv = fleet_opt(f->opts, "port");
	char **hosts = NULL, **ports = NULL, *h = NULL, *a = NULL, *p = NULL, addr[INET6_ADDRSTRLEN];
	size_t nh = 0, np = 0, lh = 0, la = 0, lp = 0, entries = 0;
	bool ok = true;
	char failed[300] = "";

	if (hostv == NULL)
		hostv = getenv("PGHOST");
	if (portv == NULL)
		portv = getenv("PGPORT");
	if (hostv == NULL || fleet_split(hostv, &hosts, &nh) == -1 || nh != f->n_lookups ||
	    (portv != NULL && fleet_split(portv, &ports, &np) == -1)) {
		fleet_lookups_abandon(f);
		fleet_split_free(hosts, nh);
		fleet_fail(f, "resolving the database's host name", "out of memory");
		return;
	}
	for (size_t i = 0; i < nh && ok; i++) {
		const char *port = np == nh ? ports[i] : np == 1 ? ports[0] : "";
		struct fleet_lookup *lk = f->lookups[i];

		if (fleet_host_literal(hosts[i])) {
			ok = fleet_list_add(&h, &lh, hosts[i]) &&
			    fleet_list_add(&a, &la, fleet_host_literal(hosts[i]) && *hosts[i] != '/' &&
			    *hosts[i] != '@' ? hosts[i] : "") && fleet_list_add(&p, &lp, port);
			entries++;
			continue;
		}
		if (lk->err != 0 || lk->res == NULL) {
			snprintf(failed, sizeof failed, "could not resolve host name \"%s\": %s",
			    hosts[i], lk->err != 0 ? evutil_gai_strerror(lk->err) : "no address");
			continue;
		}
		for (struct evutil_addrinfo *ai = lk->res; ai != NULL && ok; ai = ai->ai_next) {
			const void *src = ai->ai_family == AF_INET ?
			    (const void *)&((struct sockaddr_in *)ai->ai_addr)->sin_addr :
			    ai->ai_family == AF_INET6 ?
			    (const void *)&((struct sockaddr_in6 *)ai->ai_addr)->sin6_addr : NULL;
			if (src == NULL || evutil_inet_ntop(ai->ai_family, src, addr, sizeof addr) == NULL)
				continue;
			ok = fleet_list_add(&h, &lh, hosts[i]) && fleet_list_add(&a, &la, addr) &&
			    fleet_list_add(&p, &lp, port);
			entries++;
		}
	}
	fleet_lookups_abandon(f);
	fleet_split_free(hosts, nh);
	fleet_split_free(ports, np);
	if (!ok)
		fleet_fail(f, "resolving the database's host name", "out of memory");
	else if (entries == 0)
		fleet_fail(f, "connecting", failed[0] ? failed : "no host to connect to");
	else
		fleet_connect_with(f, h, a, np > 0 ? p : NULL);
	free(h);
	free(a);
	free(p);
}

/* One name is resolved (or failed, or was abandoned). */
static void
fleet_resolved_cb(int err, struct evutil_addrinfo *res, void *arg)
{
	struct fleet_lookup *lk = arg;
	struct fleet *f = lk->f;

	if (f == NULL) {            /* abandoned */
		if (res != NULL)
			evutil_freeaddrinfo(res);
		free(lk);
		return;
	}
	lk->done = true;
	lk->err = err;
	lk->res = res;
	if (--f->lookups_left == 0)
		fleet_resolved_all(f);
}

/*
 * Start connecting; failures are retried after the backoff. Host names are
 * resolved first, without blocking; addresses, socket directories and a
 * given hostaddr go to libpq as they are.
 */
static void
fleet_connect_start(struct fleet *f)
{
	const char *host, *hostaddr;
	char *err = NULL, **hosts = NULL;
	size_t nh = 0, names = 0;
	struct evutil_addrinfo hints;

	fleet_dns_free(f);
	PQconninfoFree(f->opts);
	if ((f->opts = PQconninfoParse(f->conninfo, &err)) == NULL) {
		fleet_fail(f, "connecting", err != NULL ? err : "out of memory");
		PQfreemem(err);
		return;
	}
	host = fleet_opt(f->opts, "host");
	hostaddr = fleet_opt(f->opts, "hostaddr");
	if (host == NULL)
		host = getenv("PGHOST");
	if (hostaddr == NULL && getenv("PGHOSTADDR") != NULL && *getenv("PGHOSTADDR") != '\0')
		hostaddr = getenv("PGHOSTADDR");
	if (hostaddr != NULL || host == NULL) {
		fleet_connect_with(f, NULL, NULL, NULL);
		return;
	}
	if (fleet_split(host, &hosts, &nh) == -1) {
		fleet_fail(f, "connecting", "out of memory");
		return;
	}
	for (size_t i = 0; i < nh; i++)
		names += !fleet_host_literal(hosts[i]);
	if (names == 0) {
		fleet_split_free(hosts, nh);
		fleet_connect_with(f, NULL, NULL, NULL);
		return;
	}
	if ((f->dns = evdns_base_new(f->srv->base, EVDNS_BASE_INITIALIZE_NAMESERVERS |
	    EVDNS_BASE_DISABLE_WHEN_INACTIVE)) == NULL &&
	    (f->dns = evdns_base_new(f->srv->base, EVDNS_BASE_DISABLE_WHEN_INACTIVE)) != NULL)
		evdns_base_load_hosts(f->dns, NULL);    /* no resolv.conf: /etc/hosts alone */
	if (f->dns == NULL || (f->lookups = calloc(nh, sizeof *f->lookups)) == NULL) {
		fleet_split_free(hosts, nh);
		fleet_fail(f, "resolving the database's host name", "out of memory");
		return;
	}
	f->n_lookups = nh;
	f->lookups_left = names + 1;    /* one more while they are being asked */
	f->state = FLEET_RESOLVING;
	f->deadline_ms = now_mono_ms() + FLEET_CONNECT_TIMEOUT_MS;
	memset(&hints, 0, sizeof hints);
	hints.ai_family = AF_UNSPEC;
	hints.ai_socktype = SOCK_STREAM;
	hints.ai_protocol = IPPROTO_TCP;
	for (size_t i = 0; i < nh && f->state == FLEET_RESOLVING; i++) {
		struct fleet_lookup *lk;

		if (fleet_host_literal(hosts[i]))
			continue;
		if ((lk = calloc(1, sizeof *lk)) == NULL) {
			fleet_split_free(hosts, nh);
			fleet_fail(f, "resolving the database's host name", "out of memory");
			return;
		}
		lk->f = f;
		f->lookups[i] = lk;
		/* the answer may come before this returns (/etc/hosts) */
		evdns_getaddrinfo(f->dns, hosts[i], NULL, &hints, fleet_resolved_cb, lk);
	}
	fleet_split_free(hosts, nh);
	if (f->state == FLEET_RESOLVING && --f->lookups_left == 0)
		fleet_resolved_all(f);
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

/* The position statement finished: ship from the node's position on. */
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
	f->shipped = PQgetisnull(r, 0, 1) ? 0 : strtoull(PQgetvalue(r, 0, 1), NULL, 10);
	f->positioned = true;
	memset(&f->ship_cur, 0, sizeof f->ship_cur);
	if (f->shipped > ledger_last_rid(f->srv->ledger))
		log_error("fleet: the database holds records of node \"%s\" up to number %" PRIu64
		    ", the local ledger only up to %" PRIu64 ": another daemon uses this "
		    "fleet_node, or the state directory is new; local records up to %" PRIu64
		    " are not shipped", f->node, f->shipped, ledger_last_rid(f->srv->ledger),
		    f->shipped);
	log_debug("fleet: node \"%s\" shipped up to record %" PRIu64, f->node, f->shipped);
	fleet_ship(f);
}

static void fleet_own_leases_done(struct fleet *, struct fleet_op *, PGresult *, const char *);

/* Queue a statement with no parameters but the node, ahead of the queue (reservations may wait there). */
static int
fleet_enqueue_first(struct fleet *f, const char *sql, fleet_done_cb done, bool with_node,
    int64_t timeout_ms)
{
	struct fleet_op *op = fleet_op_new(sql, with_node ? 1 : 0, done);

	if (op == NULL || (with_node && (op->params[0] = strdup(f->node)) == NULL)) {
		if (op != NULL)
			fleet_op_free(op);
		return -1;
	}
	op->timeout_ms = timeout_ms;
	TAILQ_INSERT_HEAD(&f->queue, op, entry);
	return 0;
}

static void
fleet_setup(struct fleet *f)
{
	/* the schema first, then the position, then this node's leases */
	f->maintain_ms = now_mono_ms();
	if (fleet_enqueue_first(f, fleet_own_leases_sql, fleet_own_leases_done, true, 0) == -1 ||
	    fleet_enqueue_first(f, fleet_position_sql, fleet_position_done, true, 0) == -1 ||
	    fleet_enqueue_first(f, fleet_schema_sql, fleet_schema_done, false,
	    FLEET_SCHEMA_TIMEOUT_MS) == -1)
		fleet_fail(f, "setting up", "out of memory");
	else
		fleet_pump(f);
}

/* A growing PostgreSQL array literal, "{...}". */
struct fleet_array {
	char *p;
	size_t len, cap;
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

/* Add one element (quoted for text; NULL: SQL NULL) to an array literal. */
static bool
fleet_array_add(struct fleet_array *a, const char *elem, bool text)
{
	if (!fleet_array_put(a, a->len == 0 ? "{" : ",", 1))
		return false;
	if (elem == NULL)
		return fleet_array_put(a, "NULL", 4);
	if (!text)
		return fleet_array_put(a, elem, strlen(elem));
	if (!fleet_array_put(a, "\"", 1))
		return false;
	for (const char *c = elem; *c != '\0'; c++) {
		size_t run = strcspn(c, "\"\\");
		if (run > 0) {
			if (!fleet_array_put(a, c, run))
				return false;
			c += run;
			if (*c == '\0')
				break;
		}
		if (!fleet_array_put(a, "\\", 1) || !fleet_array_put(a, c, 1))
			return false;
	}
	return fleet_array_put(a, "\"", 1);
}

/* Add an integer element. */
static bool
fleet_array_int(struct fleet_array *a, int64_t v)
{
	char num[24], *p = num + sizeof num;
	uint64_t u = v < 0 ? (uint64_t)0 - (uint64_t)v : (uint64_t)v;

	*--p = '\0';
	do
		*--p = (char)('0' + u % 10);
	while ((u /= 10) != 0);
	if (v < 0)
		*--p = '-';
	return fleet_array_add(a, p, false);
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

/* The columns of a batch, in ollm_ship's order. */
enum {
	FB_SEQ, FB_MS, FB_UID, FB_TAG, FB_MODEL, FB_UPSTREAM, FB_PROMPT, FB_COMPLETION,
	FB_ESTIMATED, FB_COST, FB_STATUS, FB_ERROR, FB_LATENCY, FB_RSV, FB_USER,
	FB_USEQ, FB_UKEY, FB_USTART, FB_UAMOUNT, FB_N
};

/* A batch being built from the journal. */
struct fleet_batch {
	struct fleet_array a[FB_N];
	int n;                      /* records */
	uint64_t top;
	bool oom;
	struct budgets *budgets;
	struct budget_claim *claims;  /* room for one record's, budgets_count of them */
	size_t max_claims;
};

/*
 * The budgets a record counts against, as claims of its usage: in the period
 * of its admission for a lease admission, else of its time. How many.
 */
static size_t
fleet_record_claims(struct budgets *bs, const struct ledger_record *r, struct budget_claim *cl,
    size_t max)
{
	int64_t when = r->time_ms;

	if (cl == NULL || max == 0)
		return 0;
	if (r->reservation & FLEET_LEASE_FLAG)
		when = (int64_t)((r->reservation & ~FLEET_LEASE_FLAG) / 1000);
	return budgets_claims(bs, r->uid, r->user, r->tag, r->model,
	    budget_tokens_add(r->prompt_tokens, r->completion_tokens), r->cost, when, cl, max);
}

/* Add the budgets one record counts against to the batch's usage arrays. */
static void
fleet_batch_usage(struct fleet_batch *b, const struct ledger_record *r, uint64_t rid)
{
	struct budget_claim *cl = b->claims;
	size_t n = fleet_record_claims(b->budgets, r, cl, b->max_claims);

	for (size_t i = 0; i < n; i++) {
		if (cl[i].amount == 0)
			continue;
		if (!fleet_array_int(&b->a[FB_USEQ], (int64_t)rid) ||
		    !fleet_array_add(&b->a[FB_UKEY], cl[i].key, true) ||
		    !fleet_array_int(&b->a[FB_USTART], cl[i].period_start_ms) ||
		    !fleet_array_int(&b->a[FB_UAMOUNT], cl[i].amount))
			b->oom = true;
	}
}

/* Add one record to the batch; stop when it is full. */
static int
fleet_batch_cb(const struct ledger_record *r, uint64_t rid, void *arg)
{
	struct fleet_batch *b = arg;
	struct fleet_array *a = b->a;
	char cost[32];
	bool ok;

	snprintf(cost, sizeof cost, "%.17g", r->cost);
	ok = fleet_array_int(&a[FB_SEQ], (int64_t)rid) &&
	    fleet_array_int(&a[FB_MS], r->time_ms) &&
	    fleet_array_int(&a[FB_UID], r->uid) &&
	    fleet_array_add(&a[FB_TAG], r->tag ? r->tag : "", true) &&
	    fleet_array_add(&a[FB_MODEL], r->model ? r->model : "", true) &&
	    fleet_array_add(&a[FB_UPSTREAM], r->upstream ? r->upstream : "", true) &&
	    fleet_array_int(&a[FB_PROMPT], r->prompt_tokens) &&
	    fleet_array_int(&a[FB_COMPLETION], r->completion_tokens) &&
	    fleet_array_add(&a[FB_ESTIMATED], r->estimated ? "t" : "f", false) &&
	    fleet_array_add(&a[FB_COST], cost, false) &&
	    fleet_array_add(&a[FB_STATUS], ledger_status_name(r->status), true) &&
	    fleet_array_add(&a[FB_ERROR], r->error_code != NULL && *r->error_code != '\0' ?
	    r->error_code : NULL, true) &&
	    fleet_array_int(&a[FB_LATENCY], r->latency_ms) &&
	    (r->reservation != 0 ? fleet_array_int(&a[FB_RSV], (int64_t)r->reservation) :
	    fleet_array_add(&a[FB_RSV], NULL, false)) &&
	    fleet_array_add(&a[FB_USER], r->user != NULL ? r->user : "", true);
	if (!ok)
		b->oom = true;
	fleet_batch_usage(b, r, rid);
	b->n++;
	b->top = rid;
	return b->n >= FLEET_BATCH_MAX || b->oom;
}

/* Free what a batch holds. */
static void
fleet_batch_clear(struct fleet_batch *b)
{
	for (int i = 0; i < FB_N; i++)
		free(b->a[i].p);
	free(b->claims);
}

/* A batch is stored (or was already): move the position and send the next. */
static void
fleet_ship_done(struct fleet *f, struct fleet_op *op, PGresult *r, const char *err)
{
	struct fleet_waiter *w;

	f->shipping = false;
	if (err != NULL || r == NULL || PQntuples(r) != 1) {
		if (f->state == FLEET_READY)
			fleet_fail(f, "shipping records", err != NULL ? err : "unexpected answer");
		return;
	}
	f->shipped = op->top;
	/* what waits on reservations may fit now that these are settled */
	TAILQ_FOREACH(w, &f->waiters, entry)
		w->retry_ms = 0;
	fleet_ship(f);
	fleet_soon(f);
}

/* Drop this node's reservations of earlier runs, and take them off reserved. */
static const char fleet_stale_sql[] =
    "WITH del AS (DELETE FROM ollm_reservation WHERE node = $1 AND id < $2::bigint"
    "  RETURNING budget, period_start, amount),"
    " s AS (SELECT budget, period_start, sum(amount) AS a FROM del GROUP BY 1, 2 ORDER BY 1, 2)"
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
	if ((op = fleet_op_new(fleet_stale_sql, 2, fleet_stale_done)) == NULL ||
	    (op->params[0] = strdup(f->node)) == NULL ||
	    asprintf(&op->params[1], "%" PRIu64, f->rsv_base) == -1) {
		if (op != NULL) {
			op->params[1] = NULL;
			fleet_op_free(op);
		}
		return;
	}
	f->stale_pending = true;
	fleet_enqueue(f, op);
}

/* Send the next batch of records the database does not have yet. */
static void
fleet_ship(struct fleet *f)
{
	struct fleet_batch b;
	struct fleet_op *op;
	struct ledger_cursor before = f->ship_cur;
	char cause[PATH_MAX + 128];

	if (f->state != FLEET_READY || !f->positioned || f->shipping || f->incompatible)
		return;
	fleet_drop_stale(f);
	if (ledger_last_rid(f->srv->ledger) <= f->shipped ||
	    ledger_last_rid(f->srv->ledger) == f->idle_at)
		return;
	memset(&b, 0, sizeof b);
	b.budgets = f->srv->budgets;
	b.max_claims = budgets_count(b.budgets);
	if (b.max_claims > 0 && (b.claims = calloc(b.max_claims, sizeof *b.claims)) == NULL)
		return;
	if (ledger_read_after(f->srv->ledger, f->shipped, &f->ship_cur, fleet_batch_cb, &b,
	    cause, sizeof cause) == -1)
		log_warn("fleet: reading the journal: %s", cause);
	if (b.n == 0 && ledger_pending(f->srv->ledger) == 0 && ledger_staged(f->srv->ledger) == 0)
		f->idle_at = ledger_last_rid(f->srv->ledger);  /* gone before shipping: reset, retention */
	if (b.oom || b.n == 0)
		goto drop;
	if ((op = fleet_op_new("SELECT ollm_ship($1, $2::bigint, $3::integer, $4::bigint[],"
	    " $5::bigint[], $6::bigint[], $7::text[], $8::text[], $9::text[], $10::bigint[],"
	    " $11::bigint[], $12::boolean[], $13::float8[], $14::text[], $15::text[], $16::bigint[],"
	    " $17::bigint[], $18::text[], $19::bigint[], $20::text[], $21::bigint[], $22::bigint[])",
	    FLEET_SHIP_PARAMS, fleet_ship_done)) == NULL)
		goto drop;
	bool ok = (op->params[0] = strdup(f->node)) != NULL &&
	    asprintf(&op->params[1], "%" PRIu64, b.top) != -1 &&
	    asprintf(&op->params[2], "%d", f->srv->conf->fleet_retention_days) != -1;
	if (!ok)
		op->params[1] = op->params[2] = NULL;
	for (int i = 0; i < FB_N && ok; i++)
		ok = (op->params[3 + i] = fleet_array_end(&b.a[i])) != NULL;
	if (!ok) {
		fleet_op_free(op);
		goto drop;
	}
	op->top = b.top;
	f->shipping = true;
	fleet_batch_clear(&b);
	fleet_enqueue(f, op);
	return;
drop:
	f->ship_cur = before;       /* read again next time */
	fleet_batch_clear(&b);
}

/* --- settling leases from the journal -------------------------------------- */

/* The ticket of a lease admission, or NULL. */
static struct fleet_ticket **
fleet_ticket_slot(struct fleet *f, uint64_t id)
{
	struct fleet_ticket **p = &f->tickets[(id ^ (id >> 17)) % FLEET_TICKET_BUCKETS];

	while (*p != NULL && (*p)->id != id)
		p = &(*p)->next;
	return p;
}

/* Settle a ticket's leases: each gives its worst case back and loses the usage. */
static void
fleet_ticket_settle(struct fleet *f, struct fleet_ticket **slot, const struct budget_claim *cl,
    size_t n, bool spent)
{
	struct fleet_ticket *t = *slot;

	for (size_t i = 0; i < t->n; i++) {
		struct fleet_lease *l = t->items[i].lease;
		int64_t usage = spent ? t->items[i].worst : 0;
		for (size_t k = 0; k < n && !spent; k++)
			if (cl[k].period_start_ms == l->period_start_ms && strcmp(cl[k].key, l->key) == 0)
				usage = cl[k].amount;
		fleet_lease_settle(l, t->items[i].worst, usage);
	}
	*slot = t->next;
	free(t);
	f->n_tickets--;
}

struct fleet_settling {
	struct fleet *f;
	struct budget_claim *claims;
	size_t max;
	bool any;
};

/* One record from the journal: if it was admitted against leases, settle them. */
static int
fleet_settle_cb(const struct ledger_record *r, uint64_t rid, void *arg)
{
	struct fleet_settling *s = arg;
	struct fleet_ticket **slot;
	size_t n;

	if (rid > s->f->settled)
		s->f->settled = rid;
	if (!(r->reservation & FLEET_LEASE_FLAG))
		return 0;
	if (*(slot = fleet_ticket_slot(s->f, r->reservation)) == NULL)
		return 0;               /* an earlier run's */
	n = fleet_record_claims(s->f->srv->budgets, r, s->claims, s->max);
	fleet_ticket_settle(s->f, slot, s->claims, n, false);
	s->any = true;
	return 0;
}

/* Settle the leases by the records written since the last look. */
static void
fleet_settle(struct fleet *f)
{
	struct fleet_settling s = { f, NULL, 0, false };
	char cause[PATH_MAX + 128];

	if (f->n_tickets == 0 || ledger_last_rid(f->srv->ledger) <= f->settled)
		return;
	s.max = budgets_count(f->srv->budgets);
	if (s.max > 0 && (s.claims = calloc(s.max, sizeof *s.claims)) == NULL)
		return;
	if (ledger_read_after(f->srv->ledger, f->boot_rid, &f->settle_cur, fleet_settle_cb, &s,
	    cause, sizeof cause) == -1)
		log_warn("fleet: reading the journal: %s", cause);
	free(s.claims);
	if (s.any)
		fleet_soon(f);
}

/* Tickets with no record after FLEET_TICKET_MAX_MS (it could not be written): spent. */
static void
fleet_tickets_expire(struct fleet *f)
{
	int64_t now = now_mono_ms();

	for (size_t b = 0; b < FLEET_TICKET_BUCKETS && f->n_tickets > 0; b++) {
		struct fleet_ticket **p = &f->tickets[b];
		while (*p != NULL) {
			if (now - (*p)->at_ms >= FLEET_TICKET_MAX_MS)
				fleet_ticket_settle(f, p, NULL, 0, true);
			else
				p = &(*p)->next;
		}
	}
}

/* --- stats ---------------------------------------------------------------- */

/*
 * One row per (dimension, key) with the counters, from the daily rollups:
 * "total", model, user, tag, node and, for --by day, day; the total's last
 * column is the start of the earliest day. Users are keyed as the local
 * stats key them: by uid, a named user by name (its uid, LEDGER_UID_NAMED,
 * sorts it after the uids).
 */
static const char fleet_stats_sql[] =
    "SELECT CASE WHEN GROUPING(node) = 0 THEN 'node' WHEN GROUPING(model) = 0 THEN 'model'"
    "  WHEN GROUPING(tag) = 0 THEN 'tag' WHEN GROUPING(ukey) = 0 THEN 'user'"
    "  WHEN GROUPING(dkey) = 0 THEN 'day' ELSE 'total' END,"
    " coalesce(node, model, tag, ukey, dkey, ''),"
    " sum(requests), coalesce(sum(requests) FILTER (WHERE status <> 'done'), 0),"
    " sum(prompt_tokens), sum(completion_tokens), sum(prompt_tokens + completion_tokens),"
    " sum(estimated), sum(cost), floor(extract(epoch FROM min(day)) / 86400)::bigint * 86400"
    " FROM (SELECT *, CASE WHEN user_name <> '' THEN user_name ELSE uid::text END AS ukey,"
    "  CASE WHEN $2 = 'day' THEN to_char(day AT TIME ZONE 'UTC', 'YYYY-MM-DD') END AS dkey"
    "  FROM ollm_rollup_day WHERE $1::bigint < 0 OR day >= to_timestamp($1::bigint * 86400)) z"
    " GROUP BY GROUPING SETS ((), (node), (model), (tag), (ukey, uid), (dkey))"
    " ORDER BY 1, CASE WHEN GROUPING(ukey) = 0 THEN uid ELSE 0 END,"
    " coalesce(node, model, tag, ukey, dkey, '') COLLATE \"C\"";

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

/*
 * The budgets of this node in the fleet: per key ($1) and period start in ms
 * ($2), what the fleet has used, and reserved or leased (0 for a period with
 * no row yet).
 */
static const char fleet_budgets_sql[] =
    "SELECT t.i, coalesce(x.used, 0), coalesce(x.reserved, 0) + coalesce(x.leased, 0)"
    " FROM unnest($1::text[], $2::bigint[]) WITH ORDINALITY AS t(b, s, i)"
    " LEFT JOIN ollm_budget x ON x.budget = t.b AND x.period_start = to_timestamp(t.s / 1000.0)"
    " ORDER BY t.i";

/* Send the finished stats to the session that asked. */
static void
fleet_stats_send(struct fleet_op *op, struct stats_result *st)
{
	struct reply rp;

	message_reply_init(&rp, REPLY_RESULT, OP_STATS);
	rp.id = op->req_id;
	rp.u.result.u.stats = *st;
	session_send(op->session, &rp);
}

/* The budgets statement finished: add them to the stats and answer. */
static void
fleet_budgets_done(struct fleet *f, struct fleet_op *op, PGresult *r, const char *err)
{
	struct stats_result *st = op->stats;
	char label[BUDGET_KEY_MAX + 16];

	(void)f;
	if (op->session == NULL)
		return;
	if (err != NULL || r == NULL || PQnfields(r) != 3 || PQntuples(r) != (int)op->n_claims) {
		session_send_error(op->session, op->req_id, "fleet_unavailable",
		    "fleet stats: the database: %s", err ? err : "unexpected answer");
		return;
	}
	if ((st->budgets = calloc(op->n_claims, sizeof *st->budgets)) == NULL) {
		session_send_error(op->session, op->req_id, "internal", "fleet stats: out of memory");
		return;
	}
	for (int i = 0; i < PQntuples(r); i++) {
		const struct budget_claim *cl = &op->claims[i];
		struct budget_status *out = &st->budgets[st->n_budgets++];
		struct budget_def def = {
			.scope = cl->scope, .uid = cl->uid, .named = cl->named,
			.name = cl->name[0] ? cl->name : NULL,
			.unit = cl->unit, .period = cl->period, .limit = cl->limit_def,
		};
		int64_t used = strtoll(PQgetvalue(r, i, 1), NULL, 10);
		int64_t reserved = strtoll(PQgetvalue(r, i, 2), NULL, 10);
		int64_t left = cl->limit - used - reserved;

		dispatch_budget_label(&def, label, sizeof label);
		out->scope = strdup(label);
		out->unit = strdup(budget_unit_name(cl->unit));
		out->period = strdup(budget_period_name(cl->period));
		if (out->scope == NULL || out->unit == NULL || out->period == NULL) {
			session_send_error(op->session, op->req_id, "internal",
			    "fleet stats: out of memory");
			return;
		}
		out->limit = cl->limit_def;
		out->used = budget_claim_value(cl, used);
		out->left = budget_claim_value(cl, left > 0 ? left : 0);
		if (cl->scope == BUDGET_ALL && cl->unit == BUDGET_MONEY &&
		    cl->period == BUDGET_EVER && isnan(st->max_budget)) {
			st->max_budget = out->limit;
			st->budget_left = out->left;
		}
	}
	fleet_stats_send(op, st);
}

/* Queue the budgets statement for op's session next, handing it the stats and the claims. */
static int
fleet_budgets_ask(struct fleet *f, struct fleet_op *stats_op, struct stats_result *st)
{
	struct fleet_op *op = fleet_op_new(fleet_budgets_sql, 4, fleet_budgets_done);

	if (op == NULL || fleet_claim_params(stats_op->claims, stats_op->n_claims, op->params) == -1 ||
	    (op->stats = malloc(sizeof *op->stats)) == NULL) {
		if (op != NULL)
			fleet_op_free(op);
		return -1;
	}
	free(op->params[2]);        /* limits and amounts are not asked for */
	free(op->params[3]);
	op->params[2] = op->params[3] = NULL;
	op->n_params = 2;
	*op->stats = *st;
	op->claims = stats_op->claims;
	op->n_claims = stats_op->n_claims;
	stats_op->claims = NULL;
	op->session = stats_op->session;
	op->req_id = stats_op->req_id;
	/* next, before what is queued: fleet_read sends it once this answer is done */
	TAILQ_INSERT_HEAD(&f->queue, op, entry);
	return 0;
}

/* The stats statement finished: ask for the budgets, or answer the session that asked. */
static void
fleet_stats_done(struct fleet *f, struct fleet_op *op, PGresult *r, const char *err)
{
	struct stats_result stats, *st = &stats;
	struct counters c;
	const char *by = op->by != NULL ? op->by : "";
	int bad = 0;

	if (op->session == NULL)
		return;
	if (err != NULL || r == NULL) {
		session_send_error(op->session, op->req_id, "fleet_unavailable",
		    "fleet stats: the database: %s", err ? err : "no answer");
		return;
	}
	memset(st, 0, sizeof *st);
	st->max_budget = NAN;
	st->budget_left = NAN;
	st->since = op->top != UINT64_MAX ? (int64_t)op->top * 86400 : 0;
	for (int i = 0; i < PQntuples(r) && bad == 0; i++) {
		const char *dim = PQgetvalue(r, i, 0), *key = PQgetvalue(r, i, 1);
		if (strcmp(dim, "total") != 0 && strcmp(dim, "node") != 0 && strcmp(dim, by) != 0 &&
		    (*by != '\0' || strcmp(dim, "day") == 0))
			continue;       /* a dimension not asked for */
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
	if (bad) {
		session_send_error(op->session, op->req_id, "internal", "fleet stats: out of memory");
	} else if (op->n_claims > 0) {
		if (fleet_budgets_ask(f, op, st) == 0)
			return;         /* the stats are the budgets op's now */
		session_send_error(op->session, op->req_id, "internal", "fleet stats: out of memory");
	} else {
		fleet_stats_send(op, st);
	}
	ledger_stats_clear(st);
}

/* The claims of every budget this node has, in the current periods: what fleet stats show. */
static int
fleet_stats_claims(struct fleet *f, struct fleet_op *op)
{
	size_t n = budgets_count(f->srv->budgets);
	int64_t now = now_ms();

	if (n == 0)
		return 0;
	if ((op->claims = calloc(n, sizeof *op->claims)) == NULL)
		return -1;
	for (size_t i = 0; i < n; i++)
		if (budgets_claim_of(f->srv->budgets, i, now, &op->claims[op->n_claims]) == 0)
			op->n_claims++;
	return 0;
}

/* Whether the database can be asked now; if not, the session is told why. */
static bool
fleet_can_ask(struct fleet *f, struct session *s, uint64_t req_id, const char *what)
{
	if (f == NULL)
		session_send_error(s, req_id, "fleet_unavailable",
		    "fleet %s: this daemon has no fleet (fleet_postgres is unset)", what);
	else if (f->state != FLEET_READY)
		session_send_error(s, req_id, "fleet_unavailable",
		    "fleet %s: the database is not reachable now", what);
	return f != NULL && f->state == FLEET_READY;
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
	if (!fleet_can_ask(f, s, req->id, "stats"))
		return;
	if ((op = fleet_op_new(fleet_stats_sql, 2, fleet_stats_done)) == NULL ||
	    (op->params[1] = strdup(by)) == NULL || (op->by = strdup(by)) == NULL ||
	    asprintf(&op->params[0], "%" PRId64, since_day) == -1) {
		if (op != NULL) {
			op->params[0] = NULL;
			fleet_op_free(op);
		}
		session_send_error(s, req->id, "internal", "fleet stats: out of memory");
		return;
	}
	if (fleet_stats_claims(f, op) == -1) {
		fleet_op_free(op);
		session_send_error(s, req->id, "internal", "fleet stats: out of memory");
		return;
	}
	op->top = since_day >= 0 ? (uint64_t)since_day : UINT64_MAX;
	op->session = s;
	op->req_id = req->id;
	fleet_enqueue(f, op);
}

/* --- logs ----------------------------------------------------------------- */
/* --- logs ----------------------------------------------------------------- */

/*
 * Rows newest first, filtered as the logs op asks (NULL parameters match
 * anything): the time index of each monthly partition, newest first, read
 * until the LIMIT is reached.
 */
static const char fleet_logs_sql[] =
    "SELECT node, floor(extract(epoch FROM time) * 1000)::bigint, uid, tag, model, upstream,"
    " status, error_code, prompt_tokens, completion_tokens, estimated, cost, latency_ms,"
    " user_name"
    " FROM ollm_usage"
    " WHERE time >= coalesce(to_timestamp($1::bigint), '-infinity')"
    " AND time < coalesce(to_timestamp($2::bigint), 'infinity')"
    " AND ($3::bigint IS NULL OR uid = $3::bigint)"
    " AND ($4::text IS NULL OR tag = $4::text)"
    " AND ($5::text IS NULL OR model = $5::text)"
    " AND ($6::text IS NULL OR status = $6::text)"
    " AND ($8::text IS NULL OR user_name = $8::text)"
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
		const char *tag = PQgetvalue(r, i, 3), *user = PQgetvalue(r, i, 13);

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
		w->user = *user != '\0' ? strdup(user) : NULL;
		if (w->node == NULL || w->model == NULL || w->upstream == NULL ||
		    w->status == NULL || (*tag != '\0' && w->tag == NULL) ||
		    (*user != '\0' && w->user == NULL) ||
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

	if (!fleet_can_ask(f, s, req->id, "logs"))
		return;
	if ((op = fleet_op_new(fleet_logs_sql, 8, fleet_logs_done)) == NULL) {
		session_send_error(s, req->id, "internal", "fleet logs: out of memory");
		return;
	}
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
	if (q->user_name != NULL)
		oom |= (op->params[7] = strdup(q->user_name)) == NULL;
	oom |= asprintf(&op->params[6], "%" PRId64,
	    q->limit > 0 ? q->limit : (int64_t)LOGS_LIMIT_DEFAULT) == -1;
	if (oom) {
		fleet_op_free(op);
		session_send_error(s, req->id, "internal", "fleet logs: out of memory");
		return;
	}
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
/* --- budgets: leases ------------------------------------------------------- */

/* How often a lease statement goes out even without changes: the heartbeat. */
static int64_t
fleet_heartbeat_ms(const struct fleet *f)
{
	int64_t ms = (int64_t)(f->srv->conf->fleet_lease_ttl * 1000.0 / 3.0);

	return ms < 200 ? 200 : ms > 2000 ? 2000 : ms;
}

/* A new admission time in microseconds, above every one handed out before. */
static uint64_t
fleet_stamp(struct fleet *f)
{
	struct timespec ts;
	int64_t us;

	clock_gettime(CLOCK_REALTIME, &ts);
	us = (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
	if (us <= f->stamp_us)
		us = f->stamp_us + 1;
	f->stamp_us = us;
	return (uint64_t)us;
}

/* The lease of a claim's budget and period; made (none held) when create. NULL: none, or no memory. */
static struct fleet_lease *
fleet_lease_of(struct fleet *f, const struct budget_claim *cl, bool create)
{
	struct fleet_lease *l, **grown;

	for (size_t i = 0; i < f->n_leases; i++) {
		l = f->leases[i];
		if (l->period_start_ms == cl->period_start_ms && strcmp(l->key, cl->key) == 0) {
			l->limit = cl->limit;
			return l;
		}
	}
	if (!create)
		return NULL;
	if ((l = malloc(sizeof *l)) == NULL)
		return NULL;
	if ((grown = reallocarray(f->leases, f->n_leases + 1, sizeof *grown)) == NULL) {
		free(l);
		return NULL;
	}
	f->leases = grown;
	fleet_lease_init(l, cl, now_mono_ms());
	f->leases[f->n_leases++] = l;
	return l;
}

/* Free the leases nothing holds or refers to any more. */
static void
fleet_leases_gc(struct fleet *f)
{
	int64_t now = now_mono_ms();
	size_t k = 0;

	for (size_t i = 0; i < f->n_leases; i++) {
		struct fleet_lease *l = f->leases[i];
		/* fallback is remembered a while: what is left is small */
		if (!l->row && !l->asked && l->in_flight == 0 && l->held == 0 && l->waiting == 0 &&
		    l->mode != FLEET_LEASE_CLOSING && now - l->used_ms >= (l->mode ==
		    FLEET_LEASE_FALLBACK ? FLEET_FALLBACK_KEEP_MS : FLEET_LEASE_IDLE_MS)) {
			free(l);
			continue;
		}
		f->leases[k++] = l;
	}
	f->n_leases = k;
}

enum fleet_route { FLEET_ROUTE_ADMIT, FLEET_ROUTE_WAIT, FLEET_ROUTE_RESERVE };

/*
 * How n claims can be admitted now: against the leases (every one fits),
 * by waiting for more lease (*which: a claim that does not fit yet), or by a
 * reservation (a budget is in fallback, or closing). With count, what waits
 * is added to the leases' waiting.
 */
static enum fleet_route
fleet_route(struct fleet *f, const struct budget_claim *cl, size_t n, bool count, size_t *which)
{
	bool wait = false, reserve = false;
	struct fleet_lease *l;

	for (size_t i = 0; i < n; i++) {
		if (cl[i].amount <= 0)
			continue;
		if ((l = fleet_lease_of(f, &cl[i], true)) == NULL ||
		    l->mode == FLEET_LEASE_FALLBACK || l->mode == FLEET_LEASE_CLOSING) {
			reserve = true;
			continue;
		}
		if (!fleet_lease_fits(l, cl[i].amount)) {
			if (!wait)
				*which = i;
			wait = true;
			if (count)
				l->waiting = budget_tokens_add(l->waiting, cl[i].amount);
		}
	}
	return reserve ? FLEET_ROUTE_RESERVE : wait ? FLEET_ROUTE_WAIT : FLEET_ROUTE_ADMIT;
}

/* Admit n claims that fit against their leases: a ticket until the record settles it. */
static int
fleet_lease_admit(struct fleet *f, const struct budget_claim *cl, size_t n, uint64_t *id)
{
	struct fleet_ticket *t, **slot;
	size_t k = 0;
	int64_t now = now_mono_ms();

	if ((t = malloc(sizeof *t + n * sizeof t->items[0])) == NULL)
		return -1;
	for (size_t i = 0; i < n; i++) {
		struct fleet_lease *l;
		if (cl[i].amount <= 0 || (l = fleet_lease_of(f, &cl[i], false)) == NULL)
			continue;
		fleet_lease_take(l, cl[i].amount, now);
		t->items[k].lease = l;
		t->items[k++].worst = cl[i].amount;
	}
	t->n = k;
	t->at_ms = now;
	t->id = FLEET_LEASE_FLAG | fleet_stamp(f);
	slot = fleet_ticket_slot(f, t->id);
	t->next = NULL;
	*slot = t;
	f->n_tickets++;
	*id = t->id;
	return 0;
}

/* The database answered a lease statement: each lease learns, then what waits may go. */
static void
fleet_lease_done_cb(struct fleet *f, struct fleet_op *op, PGresult *r, const char *err)
{
	int64_t now = now_mono_ms();
	bool ok = err == NULL && r != NULL && PQnfields(r) == 9;

	f->lease_busy = false;
	f->heartbeat_ms = now + fleet_heartbeat_ms(f);
	for (size_t i = 0; i < op->n_leases; i++)
		op->leases[i]->asked = false;
	if (!ok) {
		if (err != NULL && f->state == FLEET_READY)
			log_warn("fleet: a lease statement failed: %.*s", (int)strcspn(err, "\n"), err);
		fleet_soon(f);
		return;
	}
	for (int row = 0; row < PQntuples(r); row++) {
		long k = strtol(PQgetvalue(r, row, 0), NULL, 10) - 1;
		struct fleet_lease *l;
		int64_t change, used, reserved, leased, nodes, wanted;
		bool expired, has_row;

		if (k < 0 || (size_t)k >= op->n_leases)
			continue;
		l = op->leases[k];
		change = strtoll(PQgetvalue(r, row, 1), NULL, 10);
		expired = strcmp(PQgetvalue(r, row, 2), "t") == 0;
		has_row = strcmp(PQgetvalue(r, row, 3), "t") == 0;
		used = strtoll(PQgetvalue(r, row, 4), NULL, 10);
		reserved = strtoll(PQgetvalue(r, row, 5), NULL, 10);
		leased = strtoll(PQgetvalue(r, row, 6), NULL, 10);
		nodes = strtoll(PQgetvalue(r, row, 7), NULL, 10);
		wanted = strtoll(PQgetvalue(r, row, 8), NULL, 10);
		l->row = has_row;
		if (op->closing[k]) {
			if (!has_row) {     /* given back: start again, fallback stays */
				if (l->mode != FLEET_LEASE_FALLBACK)
					l->mode = FLEET_LEASE_NONE;
				l->held = 0;
				l->biggest = 0;
			}
			fleet_lease_figures(l, used, reserved, leased, nodes, now);
			continue;
		}
		if (expired && l->mode != FLEET_LEASE_CLOSING)
			log_info("fleet: the lease of budget %s expired in the database (no word from "
			    "this node for fleet_lease_ttl); it is closed once its requests are shipped",
			    l->key);
		/* grants count now; what was given back already did at sending */
		fleet_lease_learn(l, op->sent[k] > 0 ? change : 0, expired, used, reserved, leased,
		    nodes, wanted, now);
		log_debug("fleet: lease %s: %s, held %" PRId64 ", in flight %" PRId64 ", change %"
		    PRId64 " of %" PRId64 "; fleet used %" PRId64 ", reserved %" PRId64 ", leased %"
		    PRId64 " of %" PRId64 ", %" PRId64 " nodes", l->key, fleet_lease_mode_name(l->mode),
		    l->held, l->in_flight, change, op->sent[k], used, reserved, leased, l->limit, nodes);
	}
	fleet_leases_gc(f);
	fleet_soon(f);
}

/* Whether lease l may be closed now: nothing in flight, and every record settling it shipped. */
static bool
fleet_lease_closable(const struct fleet *f, const struct fleet_lease *l, int64_t now)
{
	return l->row && fleet_lease_done(l, now) && f->shipped >= f->settled &&
	    f->shipped >= f->boot_rid;
}

/*
 * Send one lease statement with every change due (grow, give back, close),
 * or with none when the heartbeat is due: it keeps this node's leases alive.
 */
static void
fleet_lease_sync(struct fleet *f)
{
	struct fleet_array keys = { 0 }, starts = { 0 }, limits = { 0 }, changes = { 0 },
	    wants = { 0 }, closes = { 0 };
	struct fleet_op *op;
	int64_t now = now_mono_ms();
	size_t n = 0;
	bool any = false, ok = true;

	if (f->state != FLEET_READY || !f->positioned || f->incompatible || f->lease_busy ||
	    f->stamp_us == 0)
		return;
	if (f->n_leases == 0 && budgets_count(f->srv->budgets) == 0)
		return;                 /* no budgets: no heartbeat, not counted among the nodes */
	if ((op = fleet_op_new("SELECT * FROM ollm_lease($1, $2::bigint, $3::bigint, $4::text[],"
	    " $5::bigint[], $6::bigint[], $7::bigint[], $8::bigint[], $9::boolean[])", 9,
	    fleet_lease_done_cb)) == NULL)
		return;
	if (f->n_leases > 0 && ((op->leases = calloc(f->n_leases, sizeof *op->leases)) == NULL ||
	    (op->sent = calloc(f->n_leases, sizeof *op->sent)) == NULL ||
	    (op->closing = calloc(f->n_leases, sizeof *op->closing)) == NULL)) {
		fleet_op_free(op);
		return;
	}
	for (size_t i = 0; i < f->n_leases && ok; i++) {
		struct fleet_lease *l = f->leases[i];
		int64_t change = 0;
		bool close = fleet_lease_closable(f, l, now);

		if (!close) {
			change = fleet_lease_change(l, now);
			/* what waits cannot fit however much is asked: a reservation per request */
			if ((l->mode == FLEET_LEASE_LIVE || l->mode == FLEET_LEASE_NONE) && l->known &&
			    l->waiting > l->held - l->in_flight && change <= 0) {
				l->mode = FLEET_LEASE_FALLBACK;
				change = fleet_lease_change(l, now);
				fleet_soon(f);
			}
		}
		if (!close && change == 0 && !l->row)
			continue;
		any |= close || change != 0;
		ok = fleet_array_add(&keys, l->key, true) &&
		    fleet_array_int(&starts, l->period_start_ms) && fleet_array_int(&limits, l->limit) &&
		    fleet_array_int(&changes, change) && fleet_array_int(&wants, l->waiting) &&
		    fleet_array_add(&closes, close ? "t" : "f", false);
		op->leases[n] = l;
		op->sent[n] = change;
		op->closing[n] = close;
		n++;
	}
	if (!ok || (!any && now < f->heartbeat_ms)) {
		free(keys.p);
		free(starts.p);
		free(limits.p);
		free(changes.p);
		free(wants.p);
		free(closes.p);
		fleet_op_free(op);
		return;
	}
	op->n_leases = n;
	if ((op->params[0] = strdup(f->node)) == NULL ||
	    asprintf(&op->params[1], "%" PRId64,
	    (int64_t)(f->srv->conf->fleet_lease_ttl * 1000.0)) == -1 ||
	    asprintf(&op->params[2], "%" PRIu64, fleet_stamp(f)) == -1 ||
	    (op->params[3] = fleet_array_end(&keys)) == NULL ||
	    (op->params[4] = fleet_array_end(&starts)) == NULL ||
	    (op->params[5] = fleet_array_end(&limits)) == NULL ||
	    (op->params[6] = fleet_array_end(&changes)) == NULL ||
	    (op->params[7] = fleet_array_end(&wants)) == NULL ||
	    (op->params[8] = fleet_array_end(&closes)) == NULL) {
		free(keys.p);
		free(starts.p);
		free(limits.p);
		free(changes.p);
		free(wants.p);
		free(closes.p);
		fleet_op_free(op);
		return;
	}
	for (size_t i = 0; i < n; i++) {
		struct fleet_lease *l = op->leases[i];
		l->asked = true;
		if (op->closing[i])
			l->held = 0;    /* given back at once: an answer lost over-counts, never under */
		else if (op->sent[i] < 0)
			l->held += op->sent[i];
	}
	f->lease_busy = true;
	fleet_enqueue(f, op);
}

/* At connect: this node's lease rows; those this run does not hold are closed when they can be. */
static void
fleet_own_leases_done(struct fleet *f, struct fleet_op *op, PGresult *r, const char *err)
{
	struct budget_claim cl;
	int64_t now = now_mono_ms();

	(void)op;
	if (err != NULL || r == NULL || PQnfields(r) != 6) {
		if (f->state == FLEET_READY)
			fleet_fail(f, "reading this node's leases", err ? err : "unexpected answer");
		return;
	}
	for (size_t i = 0; i < f->n_leases; i++)
		f->leases[i]->row = false;
	for (int row = 0; row < PQntuples(r); row++) {
		struct fleet_lease *l;
		bool expired = strcmp(PQgetvalue(r, row, 4), "t") == 0;
		uint64_t since = strtoull(PQgetvalue(r, row, 5), NULL, 10);

		memset(&cl, 0, sizeof cl);
		snprintf(cl.key, sizeof cl.key, "%s", PQgetvalue(r, row, 0));
		cl.period_start_ms = strtoll(PQgetvalue(r, row, 1), NULL, 10);
		if ((l = fleet_lease_of(f, &cl, false)) == NULL) {
			if ((l = fleet_lease_of(f, &cl, true)) == NULL)
				continue;
			l->limit = INT64_MAX;   /* not known until a request names it */
			l->mode = FLEET_LEASE_CLOSING;
		}
		l->row = true;
		if (expired || since < f->rsv_base) {
			if (expired && l->mode != FLEET_LEASE_CLOSING)
				log_info("fleet: the lease of budget %s expired in the database while it "
				    "could not be reached; it is closed once its requests are shipped", l->key);
			l->mode = FLEET_LEASE_CLOSING;
		}
	}
	/* leases this run held whose rows are gone: nothing backs them now */
	for (size_t i = 0; i < f->n_leases; i++) {
		struct fleet_lease *l = f->leases[i];
		if (!l->row && l->held > 0) {
			l->held = 0;
			if (l->mode == FLEET_LEASE_LIVE)
				l->mode = FLEET_LEASE_NONE;
		}
	}
	if (f->stamp_us == 0)
		f->stamp_us = (int64_t)f->rsv_base;     /* leases may be asked for from now on */
	f->heartbeat_ms = now;
	fleet_soon(f);
}

/* --- budgets: admission ------------------------------------------------------ */

/* Tell a waiter's request its verdict (later, from the loop): it leaves the waiters. */
static void
fleet_answer(struct fleet *f, struct fleet_waiter *w, enum fleet_verdict_kind kind)
{
	TAILQ_REMOVE(&f->waiters, w, entry);
	w->verdict.kind = kind;
	w->verdict.claims = w->claims;
	w->verdict.n = w->n;
	if (kind == FLEET_UNREACHABLE)
		w->verdict.why = w->why_buf;
	TAILQ_INSERT_TAIL(&f->ready, w, entry);
}

/* Answer UNREACHABLE, why formatted. */
static void __attribute__((format(printf, 3, 4)))
fleet_unreachable(struct fleet *f, struct fleet_waiter *w, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(w->why_buf, sizeof w->why_buf, fmt, ap);
	va_end(ap);
	fleet_answer(f, w, FLEET_UNREACHABLE);
}

/* Answer REFUSED for claim k, with the fleet's figures (reserved including leases). */
static void
fleet_refuse(struct fleet *f, struct fleet_waiter *w, size_t k, int64_t used, int64_t reserved,
    int64_t leased, const char *where)
{
	w->verdict.refused = k;
	w->verdict.limit = w->claims[k].limit;
	w->verdict.used = used;
	w->verdict.reserved = budget_tokens_add(reserved, leased);
	w->verdict.leased = leased;
	w->verdict.where = where;
	fleet_answer(f, w, FLEET_REFUSED);
}

/* Free a waiter. */
static void
fleet_waiter_free(struct fleet_waiter *w)
{
	free(w->claims);
	free(w);
}

/* The database answered a reservation: admitted, refused for good, or to be tried again. */
static void
fleet_reserve_done(struct fleet *f, struct fleet_op *op, PGresult *r, const char *err)
{
	struct fleet_waiter *w = op->waiter;
	int64_t now = now_mono_ms(), used = 0, reserved = 0, leased = 0;
	size_t bad = SIZE_MAX;

	if (w == NULL)
		return;                 /* gone, or answered as unreachable */
	w->rsv_busy = false;
	if (err != NULL || r == NULL || PQnfields(r) != 6 || PQntuples(r) != (int)w->n) {
		if (err != NULL && f->state == FLEET_READY)
			log_warn("fleet: a reservation failed: %.*s", (int)strcspn(err, "\n"), err);
		fleet_unreachable(f, w, "%.*s", (int)strcspn(err != NULL ? err : "", "\n"),
		    err != NULL ? err : "unexpected answer from the database");
		return;
	}
	for (int i = 0; i < PQntuples(r); i++) {
		long k = strtol(PQgetvalue(r, i, 0), NULL, 10) - 1;
		int64_t u, rs, le, nodes;
		struct fleet_lease *l;

		if (k < 0 || (size_t)k >= w->n)
			continue;
		u = strtoll(PQgetvalue(r, i, 1), NULL, 10);
		rs = strtoll(PQgetvalue(r, i, 2), NULL, 10);
		le = strtoll(PQgetvalue(r, i, 3), NULL, 10);
		nodes = strtoll(PQgetvalue(r, i, 4), NULL, 10);
		if (w->claims[k].amount > 0 && (l = fleet_lease_of(f, &w->claims[k], false)) != NULL)
			fleet_lease_figures(l, u, rs, le, nodes, now);
		if (strcmp(PQgetvalue(r, i, 5), "t") == 0) {
			bad = (size_t)k;
			used = u;
			reserved = rs;
			leased = le;
		}
	}
	if (bad == SIZE_MAX) {
		w->verdict.id = w->rsv_id;
		fleet_answer(f, w, FLEET_RESERVED);
		return;
	}
	/* it fits once others' reservations and leases are settled: wait for that */
	if (w->claims[bad].limit - used >= w->claims[bad].amount && now < w->deadline_ms) {
		w->retry_ms = now + FLEET_RETRY_MS;
		return;
	}
	fleet_refuse(f, w, bad, used, reserved, leased, "across the fleet");
}

/* Send a waiter's reservation, all its claims or none. */
static void
fleet_reserve_send(struct fleet *f, struct fleet_waiter *w)
{
	struct fleet_op *op;
	int64_t now_wall = now_ms();

	if ((op = fleet_op_new("SELECT * FROM ollm_reserve($1, $2::bigint, $3::text[], "
	    "$4::bigint[], $5::bigint[], $6::bigint[], $7::bigint)", 7, fleet_reserve_done)) == NULL)
		return;
	for (size_t i = 0; i < w->n; i++)     /* a wait across a period's end reserves in the next */
		w->claims[i].period_start_ms = budget_period_start(w->claims[i].period, now_wall);
	if ((op->params[0] = strdup(f->node)) == NULL ||
	    asprintf(&op->params[1], "%" PRIu64, w->rsv_id) == -1 ||
	    fleet_claim_params(w->claims, w->n, op->params + 2) == -1 ||
	    asprintf(&op->params[6], "%" PRId64,
	    (int64_t)(f->srv->conf->fleet_lease_ttl * 1000.0)) == -1) {
		op->params[1] = op->params[6] = NULL;
		fleet_op_free(op);
		return;
	}
	op->waiter = w;
	w->rsv_busy = true;
	w->rsv_sent = true;
	fleet_enqueue(f, op);
}

/* While the database is away: admit w against the leases held, or say why not. */
static void
fleet_admit_offline(struct fleet *f, struct fleet_waiter *w, enum fleet_route route, size_t k)
{
	struct fleet_lease *l;

	if (f->incompatible || w->rsv_sent || strcmp(f->srv->conf->fleet_offline, "local") != 0) {
		fleet_unreachable(f, w, "%s", f->incompatible ? "the database's schema is newer than "
		    "this openllmd knows" : f->down_why[0] ? f->down_why : "not connected");
		return;
	}
	if (route == FLEET_ROUTE_ADMIT) {
		if (fleet_lease_admit(f, w->claims, w->n, &w->verdict.id) == 0)
			fleet_answer(f, w, FLEET_RESERVED);
		else
			fleet_unreachable(f, w, "out of memory");
		return;
	}
	for (size_t i = 0; i < w->n; i++) {
		if (w->claims[i].amount <= 0)
			continue;
		l = fleet_lease_of(f, &w->claims[i], false);
		if (l == NULL || l->mode != FLEET_LEASE_LIVE) {
			w->verdict.refused = i;
			fleet_unreachable(f, w, "%s; this node holds no lease of budget %s",
			    f->down_why[0] ? f->down_why : "not connected", w->claims[i].key);
			return;
		}
		if (!fleet_lease_fits(l, w->claims[i].amount)) {
			fleet_refuse(f, w, i, w->claims[i].limit - (l->held - l->in_flight), 0, 0,
			    "in this node's lease while the fleet database cannot be reached");
			return;
		}
	}
	(void)k;
	fleet_unreachable(f, w, "%s", f->down_why[0] ? f->down_why : "not connected");
}

/* Look at every waiting request again: admit, reserve, refuse, or let it wait. */
static void
fleet_admit(struct fleet *f)
{
	struct fleet_waiter *w, *next;
	int64_t now = now_mono_ms(), now_wall = now_ms();
	bool ready = f->state == FLEET_READY && !f->incompatible && f->stamp_us != 0;

	for (size_t i = 0; i < f->n_leases; i++)
		f->leases[i]->waiting = 0;
	for (w = TAILQ_FIRST(&f->waiters); w != NULL; w = next) {
		enum fleet_route route;
		size_t k = 0;

		next = TAILQ_NEXT(w, entry);
		if (w->rsv_busy)
			continue;       /* its answer comes, or fleet_reserve_expire gives up */
		for (size_t i = 0; i < w->n; i++)
			w->claims[i].period_start_ms = budget_period_start(w->claims[i].period, now_wall);
		route = fleet_route(f, w->claims, w->n, true, &k);
		if (!ready) {
			if ((f->state == FLEET_CONNECTING || f->state == FLEET_RESOLVING ||
			    (f->state == FLEET_READY && f->stamp_us == 0)) && !f->incompatible &&
			    now - w->asked_ms < FLEET_RESERVE_WAIT_MS)
				continue;       /* the connection may come in time */
			fleet_admit_offline(f, w, route, k);
			continue;
		}
		if (route == FLEET_ROUTE_ADMIT && !w->rsv_sent) {
			if (fleet_lease_admit(f, w->claims, w->n, &w->verdict.id) == 0)
				fleet_answer(f, w, FLEET_RESERVED);
			continue;
		}
		if (route == FLEET_ROUTE_RESERVE || w->rsv_sent) {
			if (now >= w->retry_ms)
				fleet_reserve_send(f, w);
			continue;
		}
		if (now - w->asked_ms >= FLEET_RESERVE_WAIT_MS)
			fleet_unreachable(f, w, "no lease from the database within %d ms",
			    FLEET_RESERVE_WAIT_MS);
	}
}

/* Tell the requests answered; each may ask again from its callback. */
static void
fleet_deliver(struct fleet *f)
{
	struct fleet_waiter *w;

	while ((w = TAILQ_FIRST(&f->ready)) != NULL) {
		TAILQ_REMOVE(&f->ready, w, entry);
		w->cb(w->arg, &w->verdict);
		fleet_waiter_free(w);
	}
}

/* Format n claims' fields as the reservation's array parameters. */
static int
fleet_claim_params(const struct budget_claim *cl, size_t n, char **params)
{
	struct fleet_array keys = { 0 }, starts = { 0 }, limits = { 0 }, amounts = { 0 };
	bool ok = true;

	for (size_t i = 0; i < n && ok; i++)
		ok = fleet_array_add(&keys, cl[i].key, true) &&
		    fleet_array_int(&starts, cl[i].period_start_ms) &&
		    fleet_array_int(&limits, cl[i].limit) && fleet_array_int(&amounts, cl[i].amount);
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
fleet_reserve(struct fleet *f, const struct budget_claim *cl, size_t n, int64_t deadline_ms,
    fleet_reserve_cb cb, void *arg, uint64_t *id)
{
	struct fleet_waiter *w;
	int64_t now = now_mono_ms();
	size_t k = 0;
	bool reachable;

	*id = 0;
	if (f == NULL || n == 0 || f->incompatible)
		return -1;
	reachable = f->state == FLEET_READY && f->stamp_us != 0;
	for (size_t i = 0; i < n; i++) {
		struct fleet_lease *l;
		if (cl[i].amount > 0 && (l = fleet_lease_of(f, &cl[i], true)) != NULL)
			fleet_lease_note(l, cl[i].amount, now);
	}
	/* the common case: every budget's lease has room, no round trip */
	if ((reachable || strcmp(f->srv->conf->fleet_offline, "local") == 0) &&
	    TAILQ_EMPTY(&f->waiters) && fleet_route(f, cl, n, false, &k) == FLEET_ROUTE_ADMIT)
		return fleet_lease_admit(f, cl, n, id) == 0 ? 1 : -1;
	if (f->state == FLEET_DOWN && strcmp(f->srv->conf->fleet_offline, "local") != 0)
		return -1;
	if ((w = calloc(1, sizeof *w)) == NULL || (w->claims = calloc(n, sizeof *cl)) == NULL) {
		free(w);
		return -1;
	}
	memcpy(w->claims, cl, n * sizeof *cl);
	w->n = n;
	w->cb = cb;
	w->arg = arg;
	w->rsv_id = f->rsv_next++;
	w->asked_ms = now;
	w->deadline_ms = deadline_ms;
	w->verdict.refused = SIZE_MAX;
	*id = w->rsv_id;            /* a reservation may be sent: the record settles it */
	TAILQ_INSERT_TAIL(&f->waiters, w, entry);
	/* looked at from the loop, so that cb is never called before this returns */
	fleet_soon(f);
	return 0;
}

/* Forget arg's waiting request, wherever it is. */
void
fleet_reserve_forget(struct fleet *f, void *arg)
{
	struct fleet_waiter *w, *next;
	struct fleet_op *op;

	if (f == NULL)
		return;
	for (int list = 0; list < 2; list++) {
		struct fleet_waiter_list *h = list == 0 ? &f->waiters : &f->ready;
		for (w = TAILQ_FIRST(h); w != NULL; w = next) {
			next = TAILQ_NEXT(w, entry);
			if (w->arg != arg)
				continue;
			if (f->cur != NULL && f->cur->waiter == w)
				f->cur->waiter = NULL;
			TAILQ_FOREACH(op, &f->queue, entry)
				if (op->waiter == w)
					op->waiter = NULL;
			TAILQ_REMOVE(h, w, entry);
			fleet_waiter_free(w);
		}
	}
}

/* Reservations that waited too long for an answer: unreachable, sent or not. */
static void
fleet_reserve_expire(struct fleet *f)
{
	struct fleet_op *op;
	int64_t now = now_mono_ms();

	if (f->cur != NULL && f->cur->waiter != NULL &&
	    now - f->cur->asked_ms >= FLEET_RESERVE_WAIT_MS) {
		f->cur->waiter->rsv_busy = false;
		fleet_unreachable(f, f->cur->waiter, "no answer in time");
		f->cur->waiter = NULL;
	}
	TAILQ_FOREACH(op, &f->queue, entry)
		if (op->waiter != NULL && now - op->asked_ms >= FLEET_RESERVE_WAIT_MS) {
			op->waiter->rsv_busy = false;
			fleet_unreachable(f, op->waiter, "no answer in time");
			op->waiter = NULL;
		}
}

/* --- upkeep ----------------------------------------------------------------- */

/* The partition upkeep finished. */
static void
fleet_maintain_done(struct fleet *f, struct fleet_op *op, PGresult *r, const char *err)
{
	long n;

	(void)op;
	if (err != NULL || r == NULL || PQntuples(r) != 1) {
		if (err != NULL && f->state == FLEET_READY)
			log_warn("fleet: keeping the monthly partitions of ollm_usage: %.*s",
			    (int)strcspn(err, "\n"), err);
		return;
	}
	if ((n = strtol(PQgetvalue(r, 0, 0), NULL, 10)) > 0)
		log_info("fleet: dropped %ld monthly partitions of ollm_usage older than %d days "
		    "(fleet_retention_days)", n, f->srv->conf->fleet_retention_days);
}

/* Hourly: make next month's partition, drop those past fleet_retention_days. */
static void
fleet_maintain(struct fleet *f)
{
	struct fleet_op *op;

	if (f->state != FLEET_READY || !f->positioned || f->incompatible ||
	    now_mono_ms() < f->maintain_ms)
		return;
	f->maintain_ms = now_mono_ms() + FLEET_MAINTAIN_MS;
	if ((op = fleet_op_new("SELECT ollm_usage_maintain($1::integer)", 1,
	    fleet_maintain_done)) == NULL ||
	    asprintf(&op->params[0], "%d", f->srv->conf->fleet_retention_days) == -1) {
		if (op != NULL) {
			op->params[0] = NULL;
			fleet_op_free(op);
		}
		return;
	}
	fleet_enqueue(f, op);
}

/* --- life cycle ----------------------------------------------------------- */

/* Settle, ship, admit, ask for leases, and tell the requests answered. */
static void
fleet_work(struct fleet *f)
{
	fleet_settle(f);
	fleet_ship(f);
	fleet_admit(f);
	fleet_lease_sync(f);
	fleet_deliver(f);
	fleet_pump(f);
	if ((f->n_tickets > 0 || !TAILQ_EMPTY(&f->waiters)) && !evtimer_pending(f->fast_ev, NULL)) {
		struct timeval tv = { 0, FLEET_FAST_MS * 1000 };
		evtimer_add(f->fast_ev, &tv);
	}
}

/* From the loop: the work fleet_soon asked for. */
static void
fleet_pump_cb(evutil_socket_t fd, short what, void *arg)
{
	(void)fd;
	(void)what;
	fleet_work(arg);
}

/* Have fleet_work run from the loop, soon; never within a caller's call. */
static void
fleet_soon(struct fleet *f)
{
	if (f->pump_ev != NULL)
		event_active(f->pump_ev, EV_TIMEOUT, 0);
}

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
	TAILQ_INIT(&f->waiters);
	TAILQ_INIT(&f->ready);
	f->rsv_base = (uint64_t)now_ms() * 1000;
	f->rsv_next = f->rsv_base;
	f->boot_rid = ledger_last_rid(srv->ledger);
	f->settled = f->boot_rid;
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
	    (f->pump_ev = event_new(srv->base, -1, 0, fleet_pump_cb, f)) == NULL ||
	    (f->fast_ev = evtimer_new(srv->base, fleet_pump_cb, f)) == NULL) {
		snprintf(cause, cause_len, "out of memory");
		if (f->pump_ev != NULL)
			event_free(f->pump_ev);
		free(f->conninfo);
		free(f->node);
		free(f);
		return NULL;
	}
	fleet_connect_start(f);
	return f;
}

void
fleet_tick(struct fleet *f, int64_t now)
{
	(void)now;
	if (f == NULL)
		return;
	fleet_reserve_expire(f);
	fleet_tickets_expire(f);
	switch (f->state) {
	case FLEET_DOWN:
		if (now_mono_ms() >= f->retry_ms)
			fleet_connect_start(f);
		break;
	case FLEET_RESOLVING:
	case FLEET_CONNECTING:
		if (now_mono_ms() >= f->deadline_ms)
			fleet_fail(f, "connecting", "timed out");
		break;
	case FLEET_READY:
		if (f->cur != NULL && now_mono_ms() >= f->deadline_ms) {
			fleet_fail(f, "waiting for the database", "timed out");
			break;
		}
		fleet_maintain(f);
		break;
	}
	fleet_work(f);
}

/* Run the connection by hand until nothing is in flight or the deadline (at exit). */
static void
fleet_drain_sync(struct fleet *f, int64_t deadline)
{
	while (f->state == FLEET_READY && (f->cur != NULL || !TAILQ_EMPTY(&f->queue))) {
		struct pollfd p = { .fd = PQsocket(f->conn), .events = POLLIN };
		int64_t left = deadline - now_mono_ms();

		if (left <= 0 || p.fd < 0)
			return;
		fleet_pump(f);
		if (f->flushing)
			p.events |= POLLOUT;
		if (poll(&p, 1, (int)left) == -1 && errno != EINTR)
			return;
		if (p.revents != 0)
			fleet_io_cb(p.fd, (short)((p.revents & POLLOUT ? EV_WRITE : 0) | EV_READ), f);
	}
}

/*
 * At exit, with the connection up: ship what is left and give every lease
 * back (closed when all its records are shipped), within FLEET_STOP_MS.
 */
static void
fleet_stop(struct fleet *f)
{
	int64_t deadline = now_mono_ms() + FLEET_STOP_MS, now;

	if (f->state != FLEET_READY || !f->positioned || f->incompatible)
		return;
	fleet_drain_sync(f, deadline);
	fleet_settle(f);
	while (f->state == FLEET_READY && now_mono_ms() < deadline &&
	    ledger_last_rid(f->srv->ledger) > f->shipped &&
	    ledger_last_rid(f->srv->ledger) != f->idle_at) {
		fleet_ship(f);
		if (!f->shipping)
			break;
		fleet_drain_sync(f, deadline);
	}
	/* every lease unused now: idle, so that it is closed or given back */
	now = now_mono_ms();
	for (size_t i = 0; i < f->n_leases; i++) {
		f->leases[i]->used_ms = now - FLEET_LEASE_IDLE_MS;
		f->leases[i]->waiting = 0;
		f->leases[i]->others_want = 0;
	}
	f->heartbeat_ms = 0;
	fleet_lease_sync(f);
	fleet_drain_sync(f, deadline);
}

void
fleet_free(struct fleet *f)
{
	struct fleet_waiter *w;

	if (f == NULL)
		return;
	fleet_stop(f);
	f->outage_logged = true;        /* shutting down is not an outage to report */
	while ((w = TAILQ_FIRST(&f->waiters)) != NULL || (w = TAILQ_FIRST(&f->ready)) != NULL)
		fleet_reserve_forget(f, w->arg);    /* the chats waiting are cancelled after */
	event_free(f->pump_ev);
	f->pump_ev = NULL;
	fleet_fail(f, "shutting down", "closed");
	fleet_dns_free(f);
	PQconninfoFree(f->opts);
	event_free(f->fast_ev);
	for (size_t b = 0; b < FLEET_TICKET_BUCKETS; b++)
		while (f->tickets[b] != NULL) {
			struct fleet_ticket *t = f->tickets[b];
			f->tickets[b] = t->next;
			free(t);
		}
	for (size_t i = 0; i < f->n_leases; i++)
		free(f->leases[i]);
	free(f->leases);
	free(f->node);
	free(f->conninfo);
	free(f);
}
