/* fleet_lease.c: the slices of fleet budgets a node holds, and how large each should be. */
#ifndef OLLM_FLEET_LEASE_H
#define OLLM_FLEET_LEASE_H

#include <stdbool.h>
#include <stdint.h>

#include "daemon/budget.h"

/*
 * A node admits requests under a fleet budget against a lease: a slice of
 * the budget it took from the database in one transaction, which keeps
 * used + reserved + leased <= limit for the whole fleet. An admission takes
 * the request's worst case out of the slice (in_flight); the request's
 * ledger record settles it (in_flight gives the worst case back, held loses
 * the usage), and the database does the same when the record is shipped.
 *
 * A slice is about FLEET_LEASE_SLICE_MS of the node's traffic under the
 * budget (its rate, a moving average of the amounts asked), at least the
 * largest request seen, never more than a fair share of what is left (left /
 * nodes, the database's figures). It is topped up before it runs out (less
 * than half a slice left), given back when unused for FLEET_LEASE_IDLE_MS
 * or when other nodes want more than they get, and given up (fallback: one
 * reservation per request, exact to the last token) once the fleet has
 * less left than a slice. Pure: no I/O, the clock passed in.
 */

#define FLEET_LEASE_SLICE_MS	2000    /* a slice is this much of the node's traffic */
#define FLEET_LEASE_RATE_MS	1000    /* the rate's time constant */
#define FLEET_LEASE_IDLE_MS	5000    /* a slice unused this long is given back */
/* An admission id with this bit is a lease admission: the bits below are its time in us. */
#define FLEET_LEASE_FLAG	(UINT64_C(1) << 62)

enum fleet_lease_mode {
	FLEET_LEASE_NONE,           /* nothing held: the next request asks for a slice */
	FLEET_LEASE_LIVE,           /* held: requests are admitted against it */
	FLEET_LEASE_FALLBACK,       /* the fleet has less left than a slice: a reservation per request */
	FLEET_LEASE_CLOSING         /* lost (expired) or of an earlier run: settle, then close */
};

struct fleet_lease {
	char key[BUDGET_KEY_MAX];
	int64_t period_start_ms;
	int64_t limit;
	enum fleet_lease_mode mode;
	int64_t held;               /* granted, less usage settled and what was given back */
	int64_t in_flight;          /* worst cases of requests admitted and not settled */
	int64_t waiting;            /* amounts of requests waiting for more */
	bool asked;                 /* a statement about it is in flight */
	bool row;                   /* the database has a row of it */
	double rate;                /* amount asked per second, moving average */
	int64_t rate_ms;            /* when rate was last brought up to date */
	int64_t biggest;            /* the largest amount asked since the slice was taken */
	int64_t used_ms;            /* the last admission against it */
	/* the database's figures at its last answer */
	bool known;
	int64_t used, reserved, leased, nodes, others_want;
};

void fleet_lease_init(struct fleet_lease *, const struct budget_claim *, int64_t now_ms);
/* A request asks amount (admitted now or not): its rate and largest request. */
void fleet_lease_note(struct fleet_lease *, int64_t amount, int64_t now_ms);
/* Whether amount can be admitted against the lease now. */
bool fleet_lease_fits(const struct fleet_lease *, int64_t amount);
void fleet_lease_take(struct fleet_lease *, int64_t amount, int64_t now_ms);
/* A request admitted with worst case worst settles at usage. */
void fleet_lease_settle(struct fleet_lease *, int64_t worst, int64_t usage);
/* The rate decayed to now. */
double fleet_lease_rate(const struct fleet_lease *, int64_t now_ms);
/* About FLEET_LEASE_SLICE_MS of traffic, at least the largest request and what waits. */
int64_t fleet_lease_slice(const struct fleet_lease *, int64_t now_ms);
/* What the fleet has left (leases count as left), / nodes; INT64_MAX when not known yet. */
int64_t fleet_lease_fair(const struct fleet_lease *);
/*
 * The change to ask the database for now: > 0 to grow (the database grants
 * what fits), < 0 to give back, 0 for none.
 */
int64_t fleet_lease_change(const struct fleet_lease *, int64_t now_ms);
/* Whether nothing is in flight and the lease is no longer wanted: it may be closed. */
bool fleet_lease_done(const struct fleet_lease *, int64_t now_ms);
/*
 * The database answered a lease statement: change (granted > 0, given back
 * < 0), whether the lease had expired there, and the budget's figures.
 */
void fleet_lease_learn(struct fleet_lease *, int64_t change, bool expired, int64_t used,
    int64_t reserved, int64_t leased, int64_t nodes, int64_t others_want, int64_t now_ms);
/* The database's figures from a reservation's answer: fallback may end. */
void fleet_lease_figures(struct fleet_lease *, int64_t used, int64_t reserved, int64_t leased,
    int64_t nodes, int64_t now_ms);
const char *fleet_lease_mode_name(enum fleet_lease_mode);

#endif
