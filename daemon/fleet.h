/* fleet.c: ship the ledger to a shared PostgreSQL table; fleet-wide stats and budgets. */
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
#define FLEET_SCHEMA_VERSION	2
/* Records per INSERT. */
#define FLEET_BATCH_MAX		500

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

/* Answer a logs request with fleet: true from the database, later; uid -1: every user's rows. */
void fleet_logs(struct fleet *, struct session *, const struct request *, int64_t uid);

/* A session is going away: drop its pending answers. */
void fleet_forget(struct fleet *, struct session *);

/* What the database said of a reservation. */
enum fleet_verdict_kind {
	FLEET_RESERVED,             /* every claim is held in the database */
	FLEET_REFUSED,              /* claims[refused] does not fit: used and reserved say why */
	FLEET_UNREACHABLE           /* no answer (down, an error, or not within FLEET_RESERVE_WAIT_MS) */
};

struct fleet_verdict {
	enum fleet_verdict_kind kind;
	const struct budget_claim *claims;  /* what was asked, for the call */
	size_t n;
	size_t refused;
	int64_t used, reserved;     /* FLEET_REFUSED: the refusing budget's, fleet-wide */
	const char *why;            /* FLEET_UNREACHABLE */
};

typedef void (*fleet_reserve_cb)(void *arg, const struct fleet_verdict *);

/* How long a reservation may wait for the database before it counts as unreachable. */
#define FLEET_RESERVE_WAIT_MS	3000

/*
 * Reserve n claims (copied) in the shared budgets, all or none, as
 * reservation *id (set in any case; 0 when nothing was sent): cb(arg) is
 * called once later from the loop, unless fleet_reserve_forget(arg) comes
 * first. -1 when the database is not connected now: cb is not called.
 * Whatever was sent, the ledger record of the request must carry *id: its
 * shipping settles the reservation (see fleet.c).
 */
int fleet_reserve(struct fleet *, const struct budget_claim *, size_t n, fleet_reserve_cb cb,
    void *arg, uint64_t *id);

/* arg goes away: its reservation's answer is not wanted any more. */
void fleet_reserve_forget(struct fleet *, void *arg);

/*
 * While the database is away: take n claims out of this node's local shares,
 * all or none (budget_shares_take). With *refused and *left when not.
 */
int fleet_offline_take(struct fleet *, const struct budget_claim *, size_t n, size_t *refused,
    int64_t *left);

/* Close the connection and free; queued stats requests are answered with an error. */
void fleet_free(struct fleet *);

#endif
