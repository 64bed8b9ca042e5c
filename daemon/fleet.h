/* fleet.c: ship the ledger to a shared PostgreSQL table; fleet-wide stats, budgets and leases. */
#ifndef OLLM_FLEET_H
#define OLLM_FLEET_H

#include <stddef.h>
#include <stdint.h>

struct fleet;
struct budget_claim;
struct server;
struct session;
struct request;

/* The schema version this daemon creates and understands. */
#define FLEET_SCHEMA_VERSION	4
/* Records per shipping statement. */
#define FLEET_BATCH_MAX		2000

/*
 * Start shipping srv->ledger to the database named by conf->fleet_postgres
 * as node conf->fleet_node (or the host name). Connecting is asynchronous;
 * NULL with cause only when the node name cannot be found or memory is short.
 */
struct fleet *fleet_start(struct server *srv, char *cause, size_t cause_len);

/* Once a second: reconnect when due, time out a stuck connection or query, ship the backlog. */
void fleet_tick(struct fleet *, int64_t now_ms);

/* Answer a stats request with fleet: true from the database, later; takes ownership of nothing. */
void fleet_stats(struct fleet *, struct session *, const struct request *);

/*
 * Answer a logs request with fleet: true from the database, later; uid -1:
 * every user's rows; the request's user_name: that named user's only.
 */
void fleet_logs(struct fleet *, struct session *, const struct request *, int64_t uid);

/* A session is going away: drop its pending answers. */
void fleet_forget(struct fleet *, struct session *);

/* What the fleet said of a request's claims. */
enum fleet_verdict_kind {
	FLEET_RESERVED,             /* every claim is held: against this node's leases, or reserved */
	FLEET_REFUSED,              /* claims[refused] does not fit: limit, used and reserved say why */
	FLEET_UNREACHABLE           /* no answer (down, an error, or not within FLEET_RESERVE_WAIT_MS) */
};

struct fleet_verdict {
	enum fleet_verdict_kind kind;
	const struct budget_claim *claims;  /* what was asked, for the call */
	size_t n;
	uint64_t id;                /* FLEET_RESERVED: what the request's ledger record must carry */
	size_t refused;             /* FLEET_REFUSED: the claim; FLEET_UNREACHABLE: the claim with
	                               no lease (fleet_offline "local"), else SIZE_MAX */
	/*
	 * FLEET_REFUSED, in the claim's amounts: the limit, the fleet's used and
	 * reserved, reserved counting the slices nodes hold (leased, also given
	 * alone). What is left is limit - used - reserved; a request asking at
	 * most that may fit (it was refused because its amount was larger).
	 */
	int64_t limit, used, reserved, leased;
	const char *where;          /* FLEET_REFUSED: "across the fleet", or in this node's lease */
	const char *why;            /* FLEET_UNREACHABLE */
};

typedef void (*fleet_reserve_cb)(void *arg, const struct fleet_verdict *);

/* How long a request may wait for the database's answer before it counts as unreachable. */
#define FLEET_RESERVE_WAIT_MS	3000

/*
 * Admit a request's n claims (copied) in the fleet's budgets, all or none.
 *
 * 1: admitted now, against this node's leases (no round trip); *id is what
 *    the request's ledger record carries; cb is not called.
 * 0: the verdict comes later through cb(arg), called once from the loop
 *    (never before this returns) unless fleet_reserve_forget(arg) comes
 *    first. It waits for a lease, or reserves per request (fallback);
 *    refused only because of others' open reservations and leases, it waits
 *    and tries again until deadline_ms (monotonic; e.g. the upstream's
 *    queue_timeout), then FLEET_REFUSED. *id is set now and must be in the
 *    record unless FLEET_RESERVED gives another (verdict.id).
 * -1: the database is not reachable now (and fleet_offline is "refuse"),
 *    or out of memory: cb is not called; *id is 0.
 *
 * A request admitted against a lease, or by a reservation, is settled by
 * its ledger record alone: the lease locally when the record is written,
 * the database's figures when it is shipped (see fleet.c).
 */
int fleet_reserve(struct fleet *, const struct budget_claim *, size_t n, int64_t deadline_ms,
    fleet_reserve_cb cb, void *arg, uint64_t *id);

/* arg goes away: its request's verdict is not wanted any more. */
void fleet_reserve_forget(struct fleet *, void *arg);

/* Close the connection and free; queued stats requests are answered with an error. */
void fleet_free(struct fleet *);

#endif
