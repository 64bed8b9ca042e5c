/* Unit tests for daemon/limiter.c, on a simulated clock. */
#include "config.h"

#include <check.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "daemon/limiter.h"

/* A limiter configuration in one line. */
static struct limiter_conf
conf_make(int rpm, int tpm, int max_concurrency, int queue_max,
    int64_t queue_timeout_ms)
{
	struct limiter_conf c;

	memset(&c, 0, sizeof c);
	c.rpm = rpm;
	c.tpm = tpm;
	c.max_concurrency = max_concurrency;
	c.queue_max = queue_max;
	c.queue_timeout_ms = queue_timeout_ms;
	return c;
}

/* Queued and in-flight counts. */
static size_t
queued(const struct limiter *l)
{
	struct limiter_stats st;

	limiter_stats(l, &st);
	return st.queued;
}

static size_t
in_flight(const struct limiter *l)
{
	struct limiter_stats st;

	limiter_stats(l, &st);
	return st.in_flight;
}

START_TEST(test_rpm_burst_then_every_6s)
{
	struct limiter_conf c = conf_make(10, 0, 0, 1000, 0);
	struct limiter *l = limiter_new(&c);
	struct limiter_waiter w[40], *got;
	int i, n;
	int64_t t;

	ck_assert_ptr_nonnull(l);
	for (i = 0; i < 10; i++)
		ck_assert_int_eq(limiter_admit(l, &w[i], 1, 0, 0), LIMITER_ADMITTED);
	ck_assert_int_eq(limiter_admit(l, &w[10], 1, 0, 0), LIMITER_QUEUED);
	ck_assert_int_eq(limiter_next_wakeup(l, 0), 6000);
	ck_assert_int_eq(limiter_poll(l, 5999, &got), LIMITER_NONE);
	ck_assert_ptr_null(got);
	ck_assert_int_eq(limiter_poll(l, 6000, &got), LIMITER_ADMITTED);
	ck_assert_ptr_eq(got, &w[10]);
	ck_assert_int_eq(limiter_poll(l, 6000, &got), LIMITER_NONE);
	ck_assert_int_eq(limiter_next_wakeup(l, 6000), -1);

	/* Twenty more at once: one every 6 s, following the wakeups exactly. */
	for (i = 11; i < 31; i++)
		ck_assert_int_eq(limiter_admit(l, &w[i], 1, 0, 6000), LIMITER_QUEUED);
	t = 6000;
	for (i = 11; i < 31; i++) {
		t = limiter_next_wakeup(l, t);
		ck_assert_int_eq(t, 6000 + (i - 10) * 6000);
		ck_assert_int_eq(limiter_poll(l, t - 1, &got), LIMITER_NONE);
		ck_assert_int_eq(limiter_poll(l, t, &got), LIMITER_ADMITTED);
		ck_assert_ptr_eq(got, &w[i]);
	}
	/* Over each simulated minute from here, exactly 10 go when demand is high. */
	ck_assert_int_eq(t, 126000);
	for (i = 31; i < 40; i++)
		ck_assert_int_eq(limiter_admit(l, &w[i], 1, 0, t), LIMITER_QUEUED);
	for (n = 0; limiter_poll(l, t + 54000, &got) == LIMITER_ADMITTED; n++)
		;
	ck_assert_int_eq(n, 9);

	/* A minute idle refills the whole burst, and no more. */
	t += 54000 + 60000;
	for (i = 0; i < 10; i++)
		ck_assert_int_eq(limiter_admit(l, &w[i], 2, 0, t), LIMITER_ADMITTED);
	ck_assert_int_eq(limiter_admit(l, &w[10], 2, 0, t + 600000), LIMITER_ADMITTED);
	limiter_free(l);
}
END_TEST

START_TEST(test_rpm_zero_unlimited)
{
	struct limiter_conf c = conf_make(0, 0, 0, 0, 0);
	struct limiter *l = limiter_new(&c);
	struct limiter_waiter w;
	int i;

	for (i = 0; i < 100000; i++)
		ck_assert_int_eq(limiter_admit(l, &w, (uint32_t)i, 1000, 5), LIMITER_ADMITTED);
	ck_assert_uint_eq(in_flight(l), 100000);
	ck_assert_int_eq(limiter_next_wakeup(l, 5), -1);
	limiter_free(l);
}
END_TEST

START_TEST(test_tpm_refund_and_debt)
{
	struct limiter_conf c = conf_make(0, 1000, 0, 10, 0);
	struct limiter *l = limiter_new(&c);
	struct limiter_waiter a, b, d, e, *got;

	ck_assert_int_eq(limiter_admit(l, &a, 1, 600, 0), LIMITER_ADMITTED);
	/* 400 left, 600 needed: 200 tokens at 1000/min is 12 s. */
	ck_assert_int_eq(limiter_admit(l, &b, 1, 600, 0), LIMITER_QUEUED);
	ck_assert_int_eq(limiter_next_wakeup(l, 0), 12000);
	/* a used only 100 of its 600: the refund of 500 lets b go at once. */
	limiter_release(l, 600, 100, 1000);
	ck_assert_int_eq(limiter_next_wakeup(l, 1000), 1000);
	ck_assert_int_eq(limiter_poll(l, 1000, &got), LIMITER_ADMITTED);
	ck_assert_ptr_eq(got, &b);
	/* 400 + 1000 ms of refill (16.66) + 500 - 600 = 316 (whole tokens), */
	/* then b used 1600 of its 600: 1000 more debited, the bucket owes 684. */
	limiter_release(l, 600, 1600, 1000);
	ck_assert_int_eq(limiter_admit(l, &d, 2, 0, 1000), LIMITER_QUEUED);
	/* Level -683.33 tokens: repaid in 683.33 * 60 ms = 41000 ms. */
	ck_assert_int_eq(limiter_next_wakeup(l, 1000), 1000 + 41000);
	ck_assert_int_eq(limiter_poll(l, 41999, &got), LIMITER_NONE);
	ck_assert_int_eq(limiter_poll(l, 42000, &got), LIMITER_ADMITTED);
	ck_assert_ptr_eq(got, &d);

	/* A refund never fills the bucket beyond its capacity. */
	limiter_release(l, 100000, 0, 42000);
	ck_assert_int_eq(limiter_admit(l, &e, 2, 1000, 42000), LIMITER_ADMITTED);
	ck_assert_int_eq(limiter_admit(l, &e, 2, 1, 42000), LIMITER_QUEUED);
	ck_assert_int_eq(limiter_next_wakeup(l, 42000), 42060);
	limiter_free(l);
}
END_TEST

START_TEST(test_tpm_larger_than_capacity)
{
	struct limiter_conf c = conf_make(0, 1000, 0, 10, 0);
	struct limiter *l = limiter_new(&c);
	struct limiter_waiter a, b, d, *got;

	/* Full bucket: a request of 5000 goes and leaves a debt of 4000. */
	ck_assert_int_eq(limiter_admit(l, &a, 1, 5000, 0), LIMITER_ADMITTED);
	ck_assert_int_eq(limiter_admit(l, &b, 1, 1, 0), LIMITER_QUEUED);
	ck_assert_int_eq(limiter_next_wakeup(l, 0), 4001 * 60);
	ck_assert_int_eq(limiter_poll(l, 4001 * 60, &got), LIMITER_ADMITTED);
	/* From an empty bucket, the big one waits the whole minute it takes to fill. */
	ck_assert_int_eq(limiter_admit(l, &d, 1, 5000, 4001 * 60), LIMITER_QUEUED);
	ck_assert_int_eq(limiter_next_wakeup(l, 4001 * 60), 5001 * 60);
	ck_assert_int_eq(limiter_poll(l, 5001 * 60 - 1, &got), LIMITER_NONE);
	ck_assert_int_eq(limiter_poll(l, 5001 * 60, &got), LIMITER_ADMITTED);
	ck_assert_ptr_eq(got, &d);
	limiter_free(l);
}
END_TEST

START_TEST(test_slots)
{
	struct limiter_conf c = conf_make(0, 0, 2, 10, 0);
	struct limiter *l = limiter_new(&c);
	struct limiter_waiter w[4], *got;

	ck_assert_int_eq(limiter_admit(l, &w[0], 1, 0, 0), LIMITER_ADMITTED);
	ck_assert_int_eq(limiter_admit(l, &w[1], 1, 0, 0), LIMITER_ADMITTED);
	ck_assert_int_eq(limiter_admit(l, &w[2], 1, 0, 0), LIMITER_QUEUED);
	/* Only a release can help: no timer to arm. */
	ck_assert_int_eq(limiter_next_wakeup(l, 0), -1);
	ck_assert_int_eq(limiter_poll(l, 100000, &got), LIMITER_NONE);
	limiter_release(l, 0, 0, 100000);
	ck_assert_int_eq(limiter_next_wakeup(l, 100000), 100000);
	ck_assert_int_eq(limiter_poll(l, 100000, &got), LIMITER_ADMITTED);
	ck_assert_ptr_eq(got, &w[2]);
	ck_assert_uint_eq(in_flight(l), 2);
	/* Nobody overtakes a waiter, even when it could go at once. */
	ck_assert_int_eq(limiter_admit(l, &w[2], 1, 0, 100000), LIMITER_QUEUED);
	limiter_release(l, 0, 0, 100000);
	ck_assert_int_eq(limiter_admit(l, &w[3], 2, 0, 100000), LIMITER_QUEUED);
	ck_assert_int_eq(limiter_poll(l, 100000, &got), LIMITER_ADMITTED);
	ck_assert_ptr_eq(got, &w[2]);
	ck_assert_int_eq(limiter_poll(l, 100000, &got), LIMITER_NONE);
	ck_assert_uint_eq(queued(l), 1);
	limiter_free(l);
}
END_TEST

START_TEST(test_queue_full_refused)
{
	struct limiter_conf c = conf_make(10, 0, 0, 2, 0);
	struct limiter *l = limiter_new(&c);
	struct limiter_waiter w[13];
	struct limiter_stats st;
	int i;

	for (i = 0; i < 10; i++)
		ck_assert_int_eq(limiter_admit(l, &w[i], 1, 0, 0), LIMITER_ADMITTED);
	ck_assert_int_eq(limiter_admit(l, &w[10], 1, 0, 0), LIMITER_QUEUED);
	ck_assert_int_eq(limiter_admit(l, &w[11], 2, 0, 0), LIMITER_QUEUED);
	/* Behind two waiters: its token comes with the third, 18 s from now. */
	ck_assert_int_eq(limiter_admit(l, &w[12], 3, 0, 0), LIMITER_REFUSED);
	ck_assert(w[12].retry_after == 18.0);
	ck_assert_ptr_null(w[12].q);
	/* 1.5 s later, 16.5 s. */
	ck_assert_int_eq(limiter_admit(l, &w[12], 3, 0, 1500), LIMITER_REFUSED);
	ck_assert(w[12].retry_after == 16.5);
	limiter_stats(l, &st);
	ck_assert_uint_eq(st.refused, 2);
	ck_assert_uint_eq(st.queued, 2);
	limiter_free(l);

	/* Slots only: the release cannot be foreseen, retry in a second. */
	c = conf_make(0, 0, 1, 1, 0);
	l = limiter_new(&c);
	ck_assert_int_eq(limiter_admit(l, &w[0], 1, 0, 0), LIMITER_ADMITTED);
	ck_assert_int_eq(limiter_admit(l, &w[1], 1, 0, 0), LIMITER_QUEUED);
	ck_assert_int_eq(limiter_admit(l, &w[2], 1, 0, 0), LIMITER_REFUSED);
	ck_assert(w[2].retry_after == 1.0);
	limiter_free(l);

	/* No queue at all: refused at once. */
	c = conf_make(1, 0, 0, 0, 0);
	l = limiter_new(&c);
	ck_assert_int_eq(limiter_admit(l, &w[0], 1, 0, 0), LIMITER_ADMITTED);
	ck_assert_int_eq(limiter_admit(l, &w[1], 1, 0, 0), LIMITER_REFUSED);
	ck_assert(w[1].retry_after == 60.0);
	limiter_free(l);
}
END_TEST

START_TEST(test_queue_timeout)
{
	struct limiter_conf c = conf_make(10, 0, 0, 10, 5000);
	struct limiter *l = limiter_new(&c);
	struct limiter_waiter w[13], *got;
	struct limiter_stats st;
	int i;

	for (i = 0; i < 10; i++)
		ck_assert_int_eq(limiter_admit(l, &w[i], 1, 0, 0), LIMITER_ADMITTED);
	ck_assert_int_eq(limiter_admit(l, &w[10], 1, 0, 0), LIMITER_QUEUED);
	ck_assert_int_eq(limiter_admit(l, &w[11], 2, 0, 1000), LIMITER_QUEUED);
	ck_assert_int_eq(limiter_next_wakeup(l, 0), 5000);
	ck_assert_int_eq(limiter_poll(l, 4999, &got), LIMITER_NONE);
	ck_assert_int_eq(limiter_poll(l, 5000, &got), LIMITER_EXPIRED);
	ck_assert_ptr_eq(got, &w[10]);
	/* The next token at 6 s, and w[11] ahead of a newcomer: 7 s. */
	ck_assert(got->retry_after == 7.0);
	ck_assert_int_eq(limiter_poll(l, 5000, &got), LIMITER_NONE);
	ck_assert_int_eq(limiter_next_wakeup(l, 5000), 6000);
	ck_assert_int_eq(limiter_poll(l, 6000, &got), LIMITER_EXPIRED);
	ck_assert_ptr_eq(got, &w[11]);
	ck_assert_int_eq(limiter_next_wakeup(l, 6000), -1);
	limiter_stats(l, &st);
	ck_assert_uint_eq(st.expired, 2);
	ck_assert_uint_eq(st.queued, 0);
	/* The token not taken by the expired ones is still there. */
	ck_assert_int_eq(limiter_admit(l, &w[12], 1, 0, 6000), LIMITER_ADMITTED);
	limiter_free(l);
}
END_TEST

START_TEST(test_fairness)
{
	struct limiter_conf c = conf_make(0, 0, 1, 1000, 0);
	struct limiter *l = limiter_new(&c);
	struct limiter_waiter a[101], b, d[3], *got;
	int i, k, b_at = -1, next_a = 1;

	ck_assert_int_eq(limiter_admit(l, &a[0], 100, 0, 0), LIMITER_ADMITTED);
	for (i = 1; i <= 100; i++)
		ck_assert_int_eq(limiter_admit(l, &a[i], 100, 0, i), LIMITER_QUEUED);
	ck_assert_int_eq(limiter_admit(l, &b, 200, 0, 200), LIMITER_QUEUED);
	for (k = 0; k < 101; k++) {
		limiter_release(l, 0, 0, 300 + k);
		ck_assert_int_eq(limiter_poll(l, 300 + k, &got), LIMITER_ADMITTED);
		if (got == &b)
			b_at = k;
		else
			ck_assert_ptr_eq(got, &a[next_a++]);   /* FIFO within a uid */
		ck_assert_int_eq(limiter_poll(l, 300 + k, &got), LIMITER_NONE);
	}
	ck_assert_int_ge(b_at, 0);
	ck_assert_int_lt(b_at, 2);
	ck_assert_int_eq(next_a, 101);
	limiter_free(l);

	/* Three uids take turns; a newcomer joins at the end of the round. */
	l = limiter_new(&c);
	ck_assert_int_eq(limiter_admit(l, &a[0], 1, 0, 0), LIMITER_ADMITTED);
	for (i = 1; i <= 3; i++)
		ck_assert_int_eq(limiter_admit(l, &a[i], 1, 0, 0), LIMITER_QUEUED);
	for (i = 0; i < 3; i++)
		ck_assert_int_eq(limiter_admit(l, &d[i], 2, 0, 0), LIMITER_QUEUED);
	ck_assert_int_eq(limiter_admit(l, &b, 3, 0, 0), LIMITER_QUEUED);
	{
		struct limiter_waiter *order[] = { &a[1], &d[0], &b, &a[2],
		    &d[1], &a[3], &d[2] };

		for (k = 0; k < 7; k++) {
			limiter_release(l, 0, 0, 1);
			ck_assert_int_eq(limiter_poll(l, 1, &got), LIMITER_ADMITTED);
			ck_assert_ptr_eq(got, order[k]);
		}
	}
	ck_assert_uint_eq(queued(l), 0);
	limiter_free(l);

	/*
	 * Named users share a uid but are parties of their own: one busy name
	 * does not starve another, nor the uid's own requests.
	 */
	l = limiter_new(&c);
	ck_assert_int_eq(limiter_admit_named(l, &a[0], 7, "ann", 0, 0), LIMITER_ADMITTED);
	for (i = 1; i <= 50; i++)
		ck_assert_int_eq(limiter_admit_named(l, &a[i], 7, "ann", 0, i), LIMITER_QUEUED);
	ck_assert_int_eq(limiter_admit_named(l, &b, 7, "bob", 0, 60), LIMITER_QUEUED);
	ck_assert_int_eq(limiter_admit_named(l, &d[0], 7, NULL, 0, 61), LIMITER_QUEUED);
	{
		struct limiter_waiter *order[] = { &a[1], &b, &d[0], &a[2], &a[3] };

		for (k = 0; k < 5; k++) {
			limiter_release(l, 0, 0, 100 + k);
			ck_assert_int_eq(limiter_poll(l, 100 + k, &got), LIMITER_ADMITTED);
			ck_assert_ptr_eq(got, order[k]);
		}
	}
	limiter_free(l);
}
END_TEST

START_TEST(test_cancel)
{
	struct limiter_conf c = conf_make(0, 0, 1, 10, 10000);
	struct limiter *l = limiter_new(&c);
	struct limiter_waiter a, b, d, e, *got;

	ck_assert_int_eq(limiter_admit(l, &a, 1, 0, 0), LIMITER_ADMITTED);
	ck_assert_int_eq(limiter_admit(l, &b, 1, 0, 0), LIMITER_QUEUED);
	ck_assert_int_eq(limiter_admit(l, &d, 2, 0, 10), LIMITER_QUEUED);
	ck_assert_int_eq(limiter_admit(l, &e, 1, 0, 20), LIMITER_QUEUED);
	ck_assert_uint_eq(queued(l), 3);
	/* Cancel the oldest: the next expiry is now d's. */
	limiter_cancel(l, &b);
	ck_assert_ptr_null(b.q);
	ck_assert_uint_eq(queued(l), 2);
	limiter_cancel(l, &b);                  /* twice is harmless */
	limiter_cancel(l, &a);                  /* admitted: nothing to do */
	ck_assert_uint_eq(queued(l), 2);
	ck_assert_uint_eq(in_flight(l), 1);
	limiter_release(l, 0, 0, 30);
	/* uid 1 still has e, and its turn: e goes before d. */
	ck_assert_int_eq(limiter_poll(l, 30, &got), LIMITER_ADMITTED);
	ck_assert_ptr_eq(got, &e);
	ck_assert_int_eq(limiter_next_wakeup(l, 30), 10010);
	/* Cancelling the last waiter leaves nothing to wake up for. */
	limiter_cancel(l, &d);
	ck_assert_int_eq(limiter_next_wakeup(l, 30), -1);
	limiter_release(l, 0, 0, 40);
	ck_assert_int_eq(limiter_poll(l, 20000, &got), LIMITER_NONE);
	ck_assert_uint_eq(queued(l), 0);
	ck_assert_uint_eq(in_flight(l), 0);
	limiter_free(l);
}
END_TEST

START_TEST(test_reconfigure)
{
	struct limiter_conf c = conf_make(0, 0, 0, 10, 0);
	struct limiter *l = limiter_new(&c);
	struct limiter_waiter w[4], *got;

	ck_assert_int_eq(limiter_admit(l, &w[0], 1, 0, 0), LIMITER_ADMITTED);
	/* A new rpm starts full. */
	c = conf_make(2, 0, 0, 10, 0);
	limiter_reconfigure(l, &c, 0);
	ck_assert_int_eq(limiter_admit(l, &w[0], 1, 0, 0), LIMITER_ADMITTED);
	ck_assert_int_eq(limiter_admit(l, &w[1], 1, 0, 0), LIMITER_ADMITTED);
	ck_assert_int_eq(limiter_admit(l, &w[2], 1, 0, 0), LIMITER_QUEUED);
	ck_assert_int_eq(limiter_next_wakeup(l, 0), 30000);
	/* Lifting the limit lets the waiter go at once. */
	c = conf_make(0, 0, 0, 10, 0);
	limiter_reconfigure(l, &c, 10);
	ck_assert_int_eq(limiter_poll(l, 10, &got), LIMITER_ADMITTED);
	ck_assert_ptr_eq(got, &w[2]);
	/* Fewer slots than in flight: nothing more goes until enough end. */
	c = conf_make(0, 0, 2, 10, 0);
	limiter_reconfigure(l, &c, 20);
	ck_assert_int_eq(limiter_admit(l, &w[3], 1, 0, 20), LIMITER_QUEUED);
	limiter_release(l, 0, 0, 30);
	limiter_release(l, 0, 0, 30);
	ck_assert_int_eq(limiter_poll(l, 30, &got), LIMITER_NONE);
	limiter_release(l, 0, 0, 30);
	ck_assert_int_eq(limiter_poll(l, 30, &got), LIMITER_ADMITTED);
	limiter_free(l);
}
END_TEST

/* xorshift64*: a small seeded PRNG so the property test repeats exactly. */
static uint64_t
rnd(uint64_t *s)
{
	*s ^= *s >> 12;
	*s ^= *s << 25;
	*s ^= *s >> 27;
	return *s * UINT64_C(2685821657736338717);
}

struct prop_req {
	struct limiter_waiter w;
	int seq;                    /* order of arrival within its uid */
	int state;                  /* 0 new, 1 queued, 2 running, 3 done */
	int64_t tokens;
};

#define PROP_N 4000
#define PROP_UIDS 5

START_TEST(test_property_slots_fifo)
{
	/* Even rounds with a queue timeout, odd ones without. */
	int64_t timeout = _i % 2 == 0 ? 20000 : 0;
	struct limiter_conf c = conf_make(600, 60000, 3, 20, timeout);
	struct limiter *l;
	static struct prop_req req[PROP_N];
	struct limiter_waiter *got;
	struct limiter_stats st;
	int running[PROP_N], n_running = 0, next = 0, last_seq[PROP_UIDS];
	int seqs[PROP_UIDS] = { 0 };
	int n_admitted = 0, n_expired = 0, n_refused = 0, n_cancelled = 0;
	int64_t now = 0, wake;
	uint64_t seed = UINT64_C(0x9e3779b97f4a7c15) ^ (uint64_t)_i;
	enum limiter_status s;
	int i, step, uid, k, burst;

	memset(req, 0, sizeof req);
	for (i = 0; i < PROP_UIDS; i++)
		last_seq[i] = -1;
	l = limiter_new(&c);
	for (step = 0; next < PROP_N || n_running > 0 || queued(l) > 0; step++) {
		ck_assert_int_lt(step, 1000000);
		switch (rnd(&seed) % 8) {
		case 0: case 1: case 2:         /* requests arrive, now and then a batch */
			uid = (int)(rnd(&seed) % PROP_UIDS);
			burst = rnd(&seed) % 16 == 0 ? 1 + (int)(rnd(&seed) % 30) : 1;
			for (; burst > 0 && next < PROP_N; burst--, next++) {
				req[next].seq = seqs[uid]++;
				req[next].tokens = (int64_t)(rnd(&seed) % 2000);
				req[next].w.data = &req[next];
				s = limiter_admit(l, &req[next].w, (uint32_t)uid,
				    req[next].tokens, now);
				if (s == LIMITER_ADMITTED) {
					ck_assert_int_gt(req[next].seq, last_seq[uid]);
					last_seq[uid] = req[next].seq;
					req[next].state = 2;
					running[n_running++] = next;
					n_admitted++;
				} else if (s == LIMITER_QUEUED)
					req[next].state = 1;
				else {
					ck_assert_int_eq(s, LIMITER_REFUSED);
					ck_assert(req[next].w.retry_after > 0);
					req[next].state = 3;
					n_refused++;
				}
			}
			break;
		case 3: case 4:                 /* one ends */
			if (n_running == 0)
				break;
			k = (int)(rnd(&seed) % (uint64_t)n_running);
			limiter_release(l, req[running[k]].tokens,
			    (int64_t)(rnd(&seed) % 2500), now);
			req[running[k]].state = 3;
			running[k] = running[--n_running];
			break;
		case 5:                         /* a client goes away */
			k = next - 1 - (int)(rnd(&seed) % 32);
			if (k >= 0 && req[k].state == 1) {
				limiter_cancel(l, &req[k].w);
				req[k].state = 3;
				n_cancelled++;
			}
			break;
		default:                        /* time passes, the timer fires */
			wake = limiter_next_wakeup(l, now);
			ck_assert(wake == -1 || wake >= now);
			if (wake != -1 && rnd(&seed) % 2 == 0)
				now = wake;
			else
				now += (int64_t)(rnd(&seed) % 3000);
			break;
		}
		while ((s = limiter_poll(l, now, &got)) != LIMITER_NONE) {
			struct prop_req *r = got->data;

			ck_assert_int_eq(r->state, 1);
			uid = (int)got->uid;
			if (s == LIMITER_ADMITTED) {
				ck_assert_int_gt(r->seq, last_seq[uid]);
				last_seq[uid] = r->seq;
				r->state = 2;
				running[n_running++] = (int)(r - req);
				n_admitted++;
			} else {
				ck_assert_int_eq(s, LIMITER_EXPIRED);
				ck_assert_int_gt(timeout, 0);
				ck_assert_int_ge(now - got->enqueued_ms, timeout);
				ck_assert(got->retry_after > 0);
				r->state = 3;
				n_expired++;
			}
		}
		limiter_stats(l, &st);
		ck_assert_uint_le(st.in_flight, 3);
		ck_assert_uint_eq(st.in_flight, (size_t)n_running);
		ck_assert_uint_le(st.queued, 20);
		/* After a poll, someone waits only for a slot, a token or its turn. */
		wake = limiter_next_wakeup(l, now);
		if (st.queued == 0)
			ck_assert_int_eq(wake, -1);
		else if (timeout == 0 && n_running == 3)
			ck_assert_int_eq(wake, -1);     /* only a release helps */
		else
			ck_assert_int_gt(wake, now);
	}
	for (i = 0; i < PROP_N; i++)
		ck_assert_int_eq(req[i].state, 3);
	limiter_stats(l, &st);
	ck_assert_int_eq(n_admitted + n_expired + n_refused + n_cancelled, PROP_N);
	ck_assert_uint_eq(st.admitted, (uint64_t)n_admitted);
	ck_assert_uint_eq(st.expired, (uint64_t)n_expired);
	ck_assert_uint_eq(st.refused, (uint64_t)n_refused);
	/* Every path was taken. */
	ck_assert_int_gt(n_admitted, 0);
	if (timeout > 0)
		ck_assert_int_gt(n_expired, 0);
	else
		ck_assert_int_eq(n_expired, 0);
	ck_assert_int_gt(n_refused, 0);
	ck_assert_int_gt(n_cancelled, 0);
	limiter_free(l);
}
END_TEST

/* Why a waiter waits, and the wait a bucket foresees for it and those ahead. */
START_TEST(test_reason)
{
	struct limiter_conf c = conf_make(10, 0, 0, 10, 0);
	struct limiter *l = limiter_new(&c);
	struct limiter_waiter w[16];
	double wait;
	int i;

	for (i = 0; i < 10; i++)
		ck_assert_int_eq(limiter_admit(l, &w[i], 1, 0, 0), LIMITER_ADMITTED);
	ck_assert_int_eq(limiter_admit(l, &w[10], 1, 0, 0), LIMITER_QUEUED);
	ck_assert_str_eq(limiter_reason(l, &w[10], 0, &wait), "rpm");
	ck_assert_double_eq_tol(wait, 6.0, 1e-9);
	ck_assert_int_eq(limiter_admit(l, &w[11], 2, 0, 1000), LIMITER_QUEUED);
	ck_assert_str_eq(limiter_reason(l, &w[11], 1000, &wait), "rpm");
	ck_assert_double_eq_tol(wait, 11.0, 1e-9);    /* behind w[10]: 12 s from 0 */
	limiter_free(l);

	/* tokens per minute: 600 tokens a minute, 300 wanted, none left */
	c = conf_make(0, 600, 0, 10, 0);
	l = limiter_new(&c);
	ck_assert_int_eq(limiter_admit(l, &w[0], 1, 600, 0), LIMITER_ADMITTED);
	ck_assert_int_eq(limiter_admit(l, &w[1], 1, 300, 0), LIMITER_QUEUED);
	ck_assert_str_eq(limiter_reason(l, &w[1], 0, &wait), "tpm");
	ck_assert_double_eq_tol(wait, 30.0, 1e-9);
	limiter_free(l);

	/* slots: nothing to foresee */
	c = conf_make(0, 0, 1, 10, 0);
	l = limiter_new(&c);
	ck_assert_int_eq(limiter_admit(l, &w[0], 1, 0, 0), LIMITER_ADMITTED);
	ck_assert_int_eq(limiter_admit(l, &w[1], 1, 0, 0), LIMITER_QUEUED);
	ck_assert_str_eq(limiter_reason(l, &w[1], 0, &wait), "concurrency");
	ck_assert(wait < 0);
	limiter_free(l);
}
END_TEST

static Suite *
limiter_suite(void)
{
	Suite *s = suite_create("limiter");
	TCase *tc = tcase_create("core");

	tcase_add_test(tc, test_rpm_burst_then_every_6s);
	tcase_add_test(tc, test_rpm_zero_unlimited);
	tcase_add_test(tc, test_tpm_refund_and_debt);
	tcase_add_test(tc, test_tpm_larger_than_capacity);
	tcase_add_test(tc, test_slots);
	tcase_add_test(tc, test_queue_full_refused);
	tcase_add_test(tc, test_queue_timeout);
	tcase_add_test(tc, test_fairness);
	tcase_add_test(tc, test_cancel);
	tcase_add_test(tc, test_reconfigure);
	tcase_add_test(tc, test_reason);
	tcase_add_loop_test(tc, test_property_slots_fifo, 0, 8);
	suite_add_tcase(s, tc);
	return s;
}

int
main(void)
{
	SRunner *sr = srunner_create(limiter_suite());
	int failed;

	srunner_run_all(sr, CK_NORMAL);
	failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
