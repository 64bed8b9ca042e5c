/* limiter.c: rpm and tpm token buckets, concurrency slots, a fair bounded queue. */
#ifndef OLLM_LIMITER_H
#define OLLM_LIMITER_H

#include <stddef.h>
#include <stdint.h>
#include <sys/queue.h>

/*
 * The limiter is pure: it does no I/O and keeps no timers. Every call takes
 * `now`, a monotonic clock in milliseconds (a value older than one already
 * seen is taken as the newest seen). The caller arms one timer at
 * limiter_next_wakeup() and drains limiter_poll() when it fires, and also
 * after LIMITER_QUEUED, limiter_release(), limiter_cancel() and
 * limiter_reconfigure(), which can all make a waiter admissible.
 *
 * rpm: a token bucket of capacity rpm refilled continuously at rpm per
 * minute: a burst of up to rpm requests goes at once, then one every 60/rpm
 * seconds (rpm = 10: ten at once, the eleventh 6 s later).
 * tpm: a token bucket of capacity tpm refilled at tpm per minute, debited by
 * a request's reserved tokens at admission and settled to the real usage by
 * limiter_release() (a refund, or a further debit that may leave the bucket
 * in debt, which later requests wait out). A request reserving more than the
 * whole capacity is admitted when the bucket is full and leaves it in debt;
 * otherwise it could never go.
 * Slots: max_concurrency requests in flight, from admission to release.
 *
 * Waiters are served round-robin across parties (one FIFO per party), so
 * one user's batch cannot starve another user's single request. A party is
 * a uid, or a named user (an API key's user with no account here, who
 * shares a uid with every other such user but is a party of its own). The
 * waiter whose turn it is holds the line until it can go, so a large tpm
 * request is not overtaken for ever by small ones.
 */

struct limiter_conf {
	int rpm;                    /* requests per minute; 0: no limit */
	int tpm;                    /* tokens per minute; 0: no limit */
	int max_concurrency;        /* requests in flight; 0: no limit */
	int queue_max;              /* waiters at most; 0: refuse instead of waiting */
	int64_t queue_timeout_ms;   /* longest wait; 0: no deadline */
};

enum limiter_status {
	LIMITER_NONE = 0,           /* limiter_poll: nothing to do now */
	LIMITER_ADMITTED,           /* slot, rpm token and tpm tokens taken */
	LIMITER_QUEUED,             /* waiting; limiter_poll will return it */
	LIMITER_REFUSED,            /* queue full; retry_after filled */
	LIMITER_EXPIRED             /* limiter_poll: waited queue_timeout; retry_after filled */
};

struct limiter_uid;

/*
 * One request, embedded in the caller's request struct. limiter_admit fills
 * uid, tokens and enqueued_ms; the caller owns data. A queued waiter must
 * stay in place until limiter_poll returns it or limiter_cancel removes it.
 */
struct limiter_waiter {
	uint32_t uid;
	int64_t tokens;             /* reserved: prompt + max_tokens */
	int64_t enqueued_ms;
	double retry_after;         /* seconds, when refused or expired */
	void *data;

	/* limiter.c's */
	struct limiter_uid *q;      /* NULL when not queued */
	TAILQ_ENTRY(limiter_waiter) uid_entry;
	TAILQ_ENTRY(limiter_waiter) all_entry;
};

struct limiter_stats {
	size_t queued;
	size_t in_flight;
	uint64_t admitted;          /* counters since limiter_new */
	uint64_t refused;
	uint64_t expired;
};

struct limiter *limiter_new(const struct limiter_conf *);
void limiter_free(struct limiter *);
void limiter_reconfigure(struct limiter *, const struct limiter_conf *,
    int64_t now);
enum limiter_status limiter_admit(struct limiter *, struct limiter_waiter *,
    uint32_t uid, int64_t tokens, int64_t now);
/* The same for a named user name (NULL: the uid's party), copied if kept. */
enum limiter_status limiter_admit_named(struct limiter *, struct limiter_waiter *,
    uint32_t uid, const char *name, int64_t tokens, int64_t now);
enum limiter_status limiter_poll(struct limiter *, int64_t now,
    struct limiter_waiter **);
int64_t limiter_next_wakeup(const struct limiter *, int64_t now);
void limiter_release(struct limiter *, int64_t reserved_tokens,
    int64_t used_tokens, int64_t now);
void limiter_cancel(struct limiter *, struct limiter_waiter *);
void limiter_stats(const struct limiter *, struct limiter_stats *);

/*
 * Why a queued waiter waits: "rpm" or "tpm" (a bucket must refill for it and
 * everyone ahead; *wait_s the seconds that takes), "concurrency" (every slot
 * is taken; *wait_s < 0: a release cannot be foreseen) or "queue" (behind
 * others only; *wait_s < 0).
 */
const char *limiter_reason(const struct limiter *, const struct limiter_waiter *,
    int64_t now, double *wait_s);

#endif
