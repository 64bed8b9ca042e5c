/* Admission control: rpm/tpm token buckets, concurrency slots, a fair bounded queue. */
#include "config.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "daemon/limiter.h"

/*
 * Buckets count in units of 1/60000 of a request or token, so that a rate of
 * r per minute adds exactly r units per millisecond and every wait is an
 * exact whole number of milliseconds.
 */
#define LIMITER_UNIT            60000
#define LIMITER_TOKENS_MAX      ((int64_t)1 << 40)
#define LIMITER_LEVEL_MIN       (-((int64_t)1 << 62))
#define LIMITER_TIME_UNSET      INT64_MIN
#define LIMITER_SLOT_RETRY_MS   1000    /* retry hint when only a slot is missing */

struct limiter_bucket {
	int64_t rate;               /* units per ms; 0: no limit */
	int64_t cap;                /* units */
	int64_t level;              /* units; negative is debt */
	int64_t last;               /* ms of the last refill */
};

/* The waiters of one party (a uid, or a named user), a member of the ring while it has any. */
struct limiter_uid {
	uint32_t uid;
	char *name;                 /* a named user's; NULL: the uid's */
	TAILQ_HEAD(, limiter_waiter) waiters;
	TAILQ_ENTRY(limiter_uid) entry;
};

struct limiter {
	struct limiter_conf conf;
	struct limiter_bucket rpm;
	struct limiter_bucket tpm;
	int64_t now;                /* newest time seen */
	size_t in_flight;
	size_t queued;
	int64_t queued_tokens;
	TAILQ_HEAD(, limiter_uid) ring;
	struct limiter_uid *turn;   /* the uid served next; NULL when the ring is empty */
	TAILQ_HEAD(, limiter_waiter) all;   /* every waiter, oldest first */
	uint64_t admitted;
	uint64_t refused;
	uint64_t expired;
};

/* Clamp a token count from the caller to [0, LIMITER_TOKENS_MAX]. */
static int64_t
limiter_clamp_tokens(int64_t tokens)
{
	if (tokens < 0)
		return 0;
	if (tokens > LIMITER_TOKENS_MAX)
		return LIMITER_TOKENS_MAX;
	return tokens;
}

/* Set a bucket's rate per minute, keeping what it holds (a new limit starts full). */
static void
limiter_bucket_set(struct limiter_bucket *b, int per_minute)
{
	int64_t rate = per_minute > 0 ? per_minute : 0;

	if (rate == 0) {
		b->rate = b->cap = b->level = 0;
		return;
	}
	if (b->rate == 0)
		b->level = rate * LIMITER_UNIT;
	b->rate = rate;
	b->cap = rate * LIMITER_UNIT;
	if (b->level > b->cap)
		b->level = b->cap;
}

/* What a bucket holds at now, without changing it. */
static int64_t
limiter_bucket_level(const struct limiter_bucket *b, int64_t now)
{
	int64_t elapsed, room;

	if (b->rate == 0 || b->last == LIMITER_TIME_UNSET || now <= b->last ||
	    b->level >= b->cap)
		return b->level;
	elapsed = now - b->last;
	room = b->cap - b->level;
	if (elapsed >= room / b->rate + 1)
		return b->cap;
	if (b->level + elapsed * b->rate > b->cap)
		return b->cap;
	return b->level + elapsed * b->rate;
}

/* Bring a bucket up to now. */
static void
limiter_bucket_sync(struct limiter_bucket *b, int64_t now)
{
	b->level = limiter_bucket_level(b, now);
	b->last = now;
}

/* Add delta units to a bucket, keeping it within [LIMITER_LEVEL_MIN, cap]. */
static void
limiter_bucket_add(struct limiter_bucket *b, int64_t delta)
{
	if (b->rate == 0)
		return;
	if (delta > 0 && b->level > b->cap - delta)
		b->level = b->cap;
	else if (delta < 0 && b->level < LIMITER_LEVEL_MIN - delta)
		b->level = LIMITER_LEVEL_MIN;
	else
		b->level += delta;
}

/* What a request of cost units needs in the bucket to go: all of it, or a full bucket. */
static int64_t
limiter_bucket_need(const struct limiter_bucket *b, int64_t cost)
{
	return cost < b->cap ? cost : b->cap;
}

/* Milliseconds from now until the bucket holds need units (0: it does). */
static int64_t
limiter_bucket_wait(const struct limiter_bucket *b, int64_t need, int64_t now)
{
	int64_t level;

	if (b->rate == 0)
		return 0;
	level = limiter_bucket_level(b, now);
	if (level >= need)
		return 0;
	return (need - level + b->rate - 1) / b->rate;
}

/* Whether slots are all taken. */
static int
limiter_slots_full(const struct limiter *l)
{
	return l->conf.max_concurrency > 0 &&
	    l->in_flight >= (size_t)l->conf.max_concurrency;
}

/* Milliseconds until the buckets let a request of tokens go (slots aside). */
static int64_t
limiter_wait(const struct limiter *l, int64_t tokens, int64_t now)
{
	int64_t a, b;

	a = limiter_bucket_wait(&l->rpm,
	    limiter_bucket_need(&l->rpm, LIMITER_UNIT), now);
	b = limiter_bucket_wait(&l->tpm,
	    limiter_bucket_need(&l->tpm, tokens * LIMITER_UNIT), now);
	return a > b ? a : b;
}

/* Take a slot, an rpm token and the tpm tokens for one request. */
static void
limiter_take(struct limiter *l, int64_t tokens)
{
	l->in_flight++;
	limiter_bucket_add(&l->rpm, -LIMITER_UNIT);
	limiter_bucket_add(&l->tpm, -tokens * LIMITER_UNIT);
	l->admitted++;
}

/*
 * Seconds after which a new request of tokens, behind everyone queued, could
 * expect to go: when the buckets will have refilled for all of them, or a
 * second when only a slot is missing (a release cannot be foreseen).
 */
static double
limiter_retry_after(const struct limiter *l, int64_t tokens)
{
	double ms = 0, t;
	int64_t level;

	if (l->rpm.rate != 0) {
		level = limiter_bucket_level(&l->rpm, l->now);
		t = ((double)(l->queued + 1) * LIMITER_UNIT - (double)level) /
		    (double)l->rpm.rate;
		if (t > ms)
			ms = t;
	}
	if (l->tpm.rate != 0) {
		level = limiter_bucket_level(&l->tpm, l->now);
		t = ((double)l->queued_tokens + (double)tokens) * LIMITER_UNIT -
		    (double)level;
		t /= (double)l->tpm.rate;
		if (t > ms)
			ms = t;
	}
	if (limiter_slots_full(l) && ms < LIMITER_SLOT_RETRY_MS)
		ms = LIMITER_SLOT_RETRY_MS;
	if (ms < 1)
		ms = 1;
	return (double)(int64_t)(ms + 0.999999) / 1000.0;
}

/* Take the newest of now and the times already seen. */
static int64_t
limiter_clock(struct limiter *l, int64_t now)
{
	if (l->now == LIMITER_TIME_UNSET || now > l->now)
		l->now = now;
	limiter_bucket_sync(&l->rpm, l->now);
	limiter_bucket_sync(&l->tpm, l->now);
	return l->now;
}

/* The uid after q in the ring, wrapping round (q itself when alone). */
static struct limiter_uid *
limiter_ring_next(struct limiter *l, struct limiter_uid *q)
{
	struct limiter_uid *next = TAILQ_NEXT(q, entry);

	return next != NULL ? next : TAILQ_FIRST(&l->ring);
}

/*
 * Unlink a queued waiter. When its uid has no waiters left, the uid leaves
 * the ring; if it was the uid's turn, the turn passes on (next_turn says
 * whether the turn passes on anyway, after an admission).
 */
static void
limiter_unlink(struct limiter *l, struct limiter_waiter *w, int next_turn)
{
	struct limiter_uid *q = w->q, *next;

	TAILQ_REMOVE(&q->waiters, w, uid_entry);
	TAILQ_REMOVE(&l->all, w, all_entry);
	w->q = NULL;
	l->queued--;
	l->queued_tokens -= w->tokens;

	next = limiter_ring_next(l, q);
	if (TAILQ_EMPTY(&q->waiters)) {
		if (l->turn == q)
			l->turn = next != q ? next : NULL;
		TAILQ_REMOVE(&l->ring, q, entry);
		free(q->name);
		free(q);
	} else if (next_turn && l->turn == q)
		l->turn = next;
}

/* Find the queue of a party, or add one at the end of the round (just before the turn). */
static struct limiter_uid *
limiter_uid_get(struct limiter *l, uint32_t uid, const char *name)
{
	struct limiter_uid *q;

	TAILQ_FOREACH(q, &l->ring, entry) {
		if (q->uid == uid && (q->name == NULL ? name == NULL :
		    name != NULL && strcmp(q->name, name) == 0))
			return q;
	}
	if ((q = calloc(1, sizeof *q)) == NULL)
		return NULL;
	if (name != NULL && (q->name = strdup(name)) == NULL) {
		free(q);
		return NULL;
	}
	q->uid = uid;
	TAILQ_INIT(&q->waiters);
	if (l->turn == NULL) {
		TAILQ_INSERT_TAIL(&l->ring, q, entry);
		l->turn = q;
	} else
		TAILQ_INSERT_BEFORE(l->turn, q, entry);
	return q;
}

/* Create a limiter; its buckets start full. */
struct limiter *
limiter_new(const struct limiter_conf *conf)
{
	struct limiter *l;

	if ((l = calloc(1, sizeof *l)) == NULL)
		return NULL;
	l->now = LIMITER_TIME_UNSET;
	l->rpm.last = l->tpm.last = LIMITER_TIME_UNSET;
	TAILQ_INIT(&l->ring);
	TAILQ_INIT(&l->all);
	l->conf = *conf;
	limiter_bucket_set(&l->rpm, conf->rpm);
	limiter_bucket_set(&l->tpm, conf->tpm);
	return l;
}

/* Free a limiter. Waiters still queued are the caller's; they are left unlinked. */
void
limiter_free(struct limiter *l)
{
	struct limiter_waiter *w;
	struct limiter_uid *q;

	if (l == NULL)
		return;
	while ((w = TAILQ_FIRST(&l->all)) != NULL) {
		TAILQ_REMOVE(&l->all, w, all_entry);
		w->q = NULL;
	}
	while ((q = TAILQ_FIRST(&l->ring)) != NULL) {
		TAILQ_REMOVE(&l->ring, q, entry);
		free(q->name);
		free(q);
	}
	free(l);
}

/*
 * Apply new limits. Buckets keep what they hold (capped to the new capacity;
 * a limit that was off starts full); requests in flight keep their slots even
 * above a lower max_concurrency; waiters stay queued even above a lower
 * queue_max, and the new queue_timeout applies to them.
 */
void
limiter_reconfigure(struct limiter *l, const struct limiter_conf *conf,
    int64_t now)
{
	limiter_clock(l, now);
	l->conf = *conf;
	limiter_bucket_set(&l->rpm, conf->rpm);
	limiter_bucket_set(&l->tpm, conf->tpm);
}

/*
 * Ask to start a request of tokens for uid. It is admitted at once only when
 * nobody is waiting (no overtaking) and a slot and the tokens are there;
 * otherwise it waits if the queue has room, else it is refused with
 * w->retry_after. Out of memory is a refusal too.
 */
enum limiter_status
limiter_admit(struct limiter *l, struct limiter_waiter *w, uint32_t uid,
    int64_t tokens, int64_t now)
{
	return limiter_admit_named(l, w, uid, NULL, tokens, now);
}

enum limiter_status
limiter_admit_named(struct limiter *l, struct limiter_waiter *w, uint32_t uid,
    const char *name, int64_t tokens, int64_t now)
{
	struct limiter_uid *q;

	now = limiter_clock(l, now);
	w->uid = uid;
	w->tokens = limiter_clamp_tokens(tokens);
	w->enqueued_ms = now;
	w->retry_after = 0;
	w->q = NULL;

	if (l->queued == 0 && !limiter_slots_full(l) &&
	    limiter_wait(l, w->tokens, now) == 0) {
		limiter_take(l, w->tokens);
		return LIMITER_ADMITTED;
	}
	if (l->conf.queue_max <= 0 || l->queued >= (size_t)l->conf.queue_max ||
	    (q = limiter_uid_get(l, uid, name)) == NULL) {
		w->retry_after = limiter_retry_after(l, w->tokens);
		l->refused++;
		return LIMITER_REFUSED;
	}
	w->q = q;
	TAILQ_INSERT_TAIL(&q->waiters, w, uid_entry);
	TAILQ_INSERT_TAIL(&l->all, w, all_entry);
	l->queued++;
	l->queued_tokens += w->tokens;
	return LIMITER_QUEUED;
}

/*
 * Take the next waiter that must be answered now: one whose wait has expired
 * (LIMITER_EXPIRED, retry_after filled), else the one whose turn it is if it
 * can go (LIMITER_ADMITTED). Returns LIMITER_NONE when there is neither. Call
 * it until it returns LIMITER_NONE; the limiter is consistent between calls.
 */
enum limiter_status
limiter_poll(struct limiter *l, int64_t now, struct limiter_waiter **wp)
{
	struct limiter_waiter *w;

	*wp = NULL;
	now = limiter_clock(l, now);

	w = TAILQ_FIRST(&l->all);
	if (w != NULL && l->conf.queue_timeout_ms > 0 &&
	    now - w->enqueued_ms >= l->conf.queue_timeout_ms) {
		limiter_unlink(l, w, 0);
		w->retry_after = limiter_retry_after(l, w->tokens);
		l->expired++;
		*wp = w;
		return LIMITER_EXPIRED;
	}

	if (l->turn == NULL || limiter_slots_full(l))
		return LIMITER_NONE;
	w = TAILQ_FIRST(&l->turn->waiters);
	if (limiter_wait(l, w->tokens, now) != 0)
		return LIMITER_NONE;
	limiter_unlink(l, w, 1);
	limiter_take(l, w->tokens);
	*wp = w;
	return LIMITER_ADMITTED;
}

/*
 * When to poll next: now if a waiter can go, else the earliest of the next
 * expiry and the time the buckets let the next waiter go; -1 when nothing
 * will change by itself (no waiters, or only a release can help).
 */
int64_t
limiter_next_wakeup(const struct limiter *l, int64_t now)
{
	const struct limiter_waiter *w;
	int64_t at = -1, t;

	if (l->now != LIMITER_TIME_UNSET && now < l->now)
		now = l->now;
	if ((w = TAILQ_FIRST(&l->all)) == NULL)
		return -1;
	if (l->conf.queue_timeout_ms > 0) {
		t = w->enqueued_ms + l->conf.queue_timeout_ms;
		at = t > now ? t : now;
	}
	if (!limiter_slots_full(l)) {
		w = TAILQ_FIRST(&l->turn->waiters);
		t = now + limiter_wait(l, w->tokens, now);
		if (at == -1 || t < at)
			at = t;
	}
	return at;
}

/*
 * A request admitted earlier has ended: free its slot and settle the tpm
 * bucket from the reserved tokens to those used (a refund, or a debit that
 * may leave it in debt).
 */
void
limiter_release(struct limiter *l, int64_t reserved_tokens, int64_t used_tokens,
    int64_t now)
{
	int64_t delta;

	limiter_clock(l, now);
	if (l->in_flight > 0)
		l->in_flight--;
	delta = limiter_clamp_tokens(reserved_tokens) -
	    limiter_clamp_tokens(used_tokens);
	limiter_bucket_add(&l->tpm, delta * LIMITER_UNIT);
}

/* Remove a waiter that is still queued (its client went away); others are left alone. */
void
limiter_cancel(struct limiter *l, struct limiter_waiter *w)
{
	if (w->q == NULL)
		return;
	limiter_unlink(l, w, 0);
}

/* Fill the counts for stats. */
void
limiter_stats(const struct limiter *l, struct limiter_stats *st)
{
	memset(st, 0, sizeof *st);
	st->queued = l->queued;
	st->in_flight = l->in_flight;
	st->admitted = l->admitted;
	st->refused = l->refused;
	st->expired = l->expired;
}

/* Milliseconds until a bucket has refilled for tokens units' worth of waiters, 0 when unlimited. */
static double
limiter_bucket_eta(const struct limiter_bucket *b, double units, int64_t now)
{
	double t;

	if (b->rate == 0)
		return 0;
	t = (units - (double)limiter_bucket_level(b, now)) / (double)b->rate;
	return t > 0 ? t : 0;
}

/* Why a waiter waits, and for how long a bucket will hold it. */
const char *
limiter_reason(const struct limiter *l, const struct limiter_waiter *w, int64_t now,
    double *wait_s)
{
	const struct limiter_waiter *x;
	double requests = 0, tokens = 0, rpm_ms, tpm_ms;

	if (l->now != LIMITER_TIME_UNSET && now < l->now)
		now = l->now;
	/* Everyone up to and including w must be served first. */
	TAILQ_FOREACH(x, &l->all, all_entry) {
		requests += 1;
		tokens += (double)x->tokens;
		if (x == w)
			break;
	}
	rpm_ms = limiter_bucket_eta(&l->rpm, requests * LIMITER_UNIT, now);
	tpm_ms = limiter_bucket_eta(&l->tpm, tokens * LIMITER_UNIT, now);
	*wait_s = -1;
	if (rpm_ms > 0 || tpm_ms > 0) {
		*wait_s = (rpm_ms > tpm_ms ? rpm_ms : tpm_ms) / 1000.0;
		return rpm_ms >= tpm_ms ? "rpm" : "tpm";
	}
	if (limiter_slots_full(l))
		return "concurrency";
	return "queue";
}
