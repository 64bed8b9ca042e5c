/* Unit tests for daemon/fleet_lease.c: lease admission and sizing, on a simulated clock. */
#include "config.h"

#include <check.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "daemon/fleet_lease.h"

#define T0 INT64_C(1000000)

/* A lease of a budget of limit, taken at T0. */
static void
lease(struct fleet_lease *l, int64_t limit)
{
	struct budget_claim cl;

	memset(&cl, 0, sizeof cl);
	strcpy(cl.key, "tag:batch tokens/day");
	cl.period_start_ms = 86400000;
	cl.limit = limit;
	fleet_lease_init(l, &cl, T0);
	ck_assert_str_eq(l->key, "tag:batch tokens/day");
	ck_assert_int_eq(l->mode, FLEET_LEASE_NONE);
	ck_assert(!l->known);
}

/* A steady rate is learnt, a slice is FLEET_LEASE_SLICE_MS of it; it decays when idle. */
START_TEST(test_rate_and_slice)
{
	struct fleet_lease l;
	int64_t t = T0, slice;

	lease(&l, 1000000000);
	for (int i = 0; i < 1000; i++, t += 10)
		fleet_lease_note(&l, 100, t);       /* 10,000 a second for 10 s */
	ck_assert_double_eq_tol(fleet_lease_rate(&l, t), 10000, 600);
	slice = fleet_lease_slice(&l, t);
	ck_assert_int_ge(slice, 2 * 10000 * 94 / 100);
	ck_assert_int_le(slice, 2 * 10000 * 106 / 100);
	/* idle for 3 time constants: e^-3 of it */
	ck_assert_double_eq_tol(fleet_lease_rate(&l, t + 3 * FLEET_LEASE_RATE_MS),
	    fleet_lease_rate(&l, t) * 0.0498, 30);
	/* a clock that steps back changes nothing */
	ck_assert_double_eq(fleet_lease_rate(&l, t - 5000), l.rate);
	/* the slice is never below the largest request, nor below what waits */
	ck_assert_int_eq(fleet_lease_slice(&l, t + 60000), 100);
	l.waiting = 5000;
	ck_assert_int_eq(fleet_lease_slice(&l, t + 60000), 5000);
	/* nothing asked is no demand */
	fleet_lease_note(&l, 0, t + 60000);
	fleet_lease_note(&l, -7, t + 60000);
	ck_assert_int_eq(l.biggest, 100);
}
END_TEST

/* The fair share is what the fleet has left (leases count as left) over the nodes. */
START_TEST(test_fair_share)
{
	struct fleet_lease l;

	lease(&l, 1000);
	ck_assert_int_eq(fleet_lease_fair(&l), INT64_MAX);     /* not known yet */
	fleet_lease_figures(&l, 100, 0, 500, 3, T0);
	ck_assert(l.known);
	ck_assert_int_eq(fleet_lease_fair(&l), 300);
	fleet_lease_figures(&l, 100, 200, 0, 0, T0);        /* nodes 0 counts as 1 */
	ck_assert_int_eq(l.nodes, 1);
	ck_assert_int_eq(fleet_lease_fair(&l), 700);
	fleet_lease_figures(&l, 900, 300, 0, 2, T0);        /* over: nothing */
	ck_assert_int_eq(fleet_lease_fair(&l), 0);
}
END_TEST

/* Admission: only against a live lease with room; settling gives the worst case back. */
START_TEST(test_fits_take_settle)
{
	struct fleet_lease l;

	lease(&l, 100000);
	ck_assert(!fleet_lease_fits(&l, 1));
	ck_assert(fleet_lease_fits(&l, 0));         /* nothing always fits */
	fleet_lease_learn(&l, 500, false, 0, 0, 500, 2, 0, T0);
	ck_assert_int_eq(l.mode, FLEET_LEASE_LIVE);
	ck_assert_int_eq(l.held, 500);
	ck_assert(fleet_lease_fits(&l, 500));
	ck_assert(!fleet_lease_fits(&l, 501));
	fleet_lease_take(&l, 300, T0 + 5);
	fleet_lease_take(&l, 200, T0 + 6);
	ck_assert_int_eq(l.in_flight, 500);
	ck_assert_int_eq(l.used_ms, T0 + 6);
	ck_assert(!fleet_lease_fits(&l, 1));
	/* the first used 120 of its 300: 180 come back */
	fleet_lease_settle(&l, 300, 120);
	ck_assert_int_eq(l.in_flight, 200);
	ck_assert_int_eq(l.held, 380);
	ck_assert(fleet_lease_fits(&l, 180));
	ck_assert(!fleet_lease_fits(&l, 181));
	/* usage above the lease leaves nothing, never less than nothing */
	fleet_lease_settle(&l, 200, 1000);
	ck_assert_int_eq(l.in_flight, 0);
	ck_assert_int_eq(l.held, 0);
	fleet_lease_settle(&l, 50, -5);
	ck_assert_int_eq(l.in_flight, 0);
	ck_assert_int_eq(l.held, 0);
}
END_TEST

/* Growth: to in flight + a slice, within the fair share and what no one holds. */
START_TEST(test_grow)
{
	struct fleet_lease l;

	lease(&l, 100000);
	fleet_lease_note(&l, 50, T0);
	/* not known yet: the slice, uncapped (one request of 50 is a rate of 50 a second) */
	ck_assert_int_eq(fleet_lease_slice(&l, T0), 100);
	ck_assert_int_eq(fleet_lease_change(&l, T0), 100);
	l.waiting = 400;
	ck_assert_int_eq(fleet_lease_change(&l, T0), 400);
	l.waiting = 0;
	/* capped by the fair share: (100000 - 10000) / 3 */
	l.biggest = 50000;
	fleet_lease_figures(&l, 10000, 0, 0, 3, T0);
	ck_assert_int_eq(l.mode, FLEET_LEASE_NONE);
	ck_assert_int_eq(fleet_lease_change(&l, T0), 30000);
	/* and by what no lease or reservation holds */
	fleet_lease_figures(&l, 10000, 5000, 80000, 3, T0);
	ck_assert_int_eq(fleet_lease_change(&l, T0), 5000);
	/* enough held (half a slice or more): nothing asked */
	l.biggest = 100;
	fleet_lease_figures(&l, 10000, 0, 0, 3, T0);
	fleet_lease_learn(&l, 100, false, 10000, 0, 100, 3, 0, T0);
	ck_assert_int_eq(l.mode, FLEET_LEASE_LIVE);
	ck_assert_int_eq(fleet_lease_change(&l, T0), 0);
	/* less than half a slice left: topped up to in flight + a slice */
	fleet_lease_take(&l, 60, T0);
	ck_assert_int_eq(fleet_lease_change(&l, T0), 60);
}
END_TEST

/* Giving back: all that is unused when idle; the excess over a fair share when others want. */
START_TEST(test_give_back)
{
	struct fleet_lease l;

	lease(&l, 100000);
	fleet_lease_note(&l, 1000, T0);
	fleet_lease_learn(&l, 10000, false, 0, 0, 10000, 2, 0, T0);
	fleet_lease_take(&l, 1000, T0);
	ck_assert_int_eq(fleet_lease_change(&l, T0 + 10), 0);
	/* others want, and this node holds more than half of what is left */
	fleet_lease_learn(&l, 0, false, 80000, 0, 15000, 2, 500, T0 + 20);
	ck_assert_int_eq(fleet_lease_fair(&l), 10000);
	ck_assert_int_eq(fleet_lease_change(&l, T0 + 20), 0);      /* 10000 is the fair share */
	fleet_lease_learn(&l, 0, false, 90000, 0, 10000, 2, 500, T0 + 30);
	ck_assert_int_eq(fleet_lease_fair(&l), 5000);
	ck_assert_int_eq(fleet_lease_change(&l, T0 + 30), -5000);
	/* idle: everything unused goes back, what is in flight stays */
	l.others_want = 0;
	l.used_ms = T0;
	ck_assert_int_eq(fleet_lease_change(&l, T0 + FLEET_LEASE_IDLE_MS), -9000);
	ck_assert(!fleet_lease_done(&l, T0 + FLEET_LEASE_IDLE_MS));  /* 1000 in flight */
	fleet_lease_settle(&l, 1000, 800);
	ck_assert(fleet_lease_done(&l, T0 + FLEET_LEASE_IDLE_MS));
	ck_assert(!fleet_lease_done(&l, T0 + FLEET_LEASE_IDLE_MS - 1));
}
END_TEST

/* Less left than a slice: a reservation per request, until there is twice a slice again. */
START_TEST(test_fallback)
{
	struct fleet_lease l;

	lease(&l, 10000);
	l.biggest = 1000;
	fleet_lease_learn(&l, 1000, false, 2000, 0, 1000, 2, 0, T0);
	ck_assert_int_eq(l.mode, FLEET_LEASE_LIVE);
	fleet_lease_take(&l, 400, T0);
	fleet_lease_learn(&l, 0, false, 9200, 0, 1000, 2, 0, T0);     /* 800 left */
	ck_assert_int_eq(l.mode, FLEET_LEASE_FALLBACK);
	ck_assert(!fleet_lease_fits(&l, 1));
	/* in fallback the unused part goes back at once */
	ck_assert_int_eq(fleet_lease_change(&l, T0), -600);
	ck_assert(!fleet_lease_done(&l, T0));
	fleet_lease_settle(&l, 400, 400);
	ck_assert(fleet_lease_done(&l, T0));
	/* a new limit (a reload, a new period): twice a slice left ends it */
	l.limit = 20000;
	fleet_lease_figures(&l, 9200, 0, 600, 2, T0);
	ck_assert_int_eq(l.mode, FLEET_LEASE_LIVE);
	l.held = 0;
	fleet_lease_figures(&l, 9200, 0, 0, 2, T0);
	ck_assert_int_eq(l.mode, FLEET_LEASE_NONE);
	/* between one and two slices: it stays as it is */
	l.mode = FLEET_LEASE_FALLBACK;
	fleet_lease_figures(&l, 18500, 0, 0, 2, T0);
	ck_assert_int_eq(l.mode, FLEET_LEASE_FALLBACK);
	/* what waits cannot fit, and no more is to be had: fallback */
	lease(&l, 10000);
	l.waiting = 3000;
	fleet_lease_learn(&l, 2000, false, 0, 0, 10000, 2, 0, T0);
	ck_assert_int_eq(l.mode, FLEET_LEASE_FALLBACK);
}
END_TEST

/* A lease that expired in the database is closed, never grown or used. */
START_TEST(test_expired)
{
	struct fleet_lease l;

	lease(&l, 100000);
	fleet_lease_learn(&l, 5000, false, 0, 0, 5000, 1, 0, T0);
	fleet_lease_take(&l, 100, T0);
	fleet_lease_learn(&l, 0, true, 5000, 0, 0, 1, 0, T0 + 40000);
	ck_assert_int_eq(l.mode, FLEET_LEASE_CLOSING);
	ck_assert(!fleet_lease_fits(&l, 1));
	ck_assert_int_eq(fleet_lease_change(&l, T0 + 40000), 0);
	ck_assert(!fleet_lease_done(&l, T0 + 40000));      /* its request is still out */
	fleet_lease_settle(&l, 100, 90);
	ck_assert(fleet_lease_done(&l, T0 + 40000));
	/* figures do not reopen it */
	fleet_lease_figures(&l, 0, 0, 0, 1, T0 + 40000);
	ck_assert_int_eq(l.mode, FLEET_LEASE_CLOSING);
	ck_assert_str_eq(fleet_lease_mode_name(FLEET_LEASE_CLOSING), "closing");
	ck_assert_str_eq(fleet_lease_mode_name((enum fleet_lease_mode)9), "?");
}
END_TEST

static Suite *
fleet_lease_suite(void)
{
	Suite *s = suite_create("fleet_lease");
	TCase *tc = tcase_create("core");

	tcase_add_test(tc, test_rate_and_slice);
	tcase_add_test(tc, test_fair_share);
	tcase_add_test(tc, test_fits_take_settle);
	tcase_add_test(tc, test_grow);
	tcase_add_test(tc, test_give_back);
	tcase_add_test(tc, test_fallback);
	tcase_add_test(tc, test_expired);
	suite_add_tcase(s, tc);
	return s;
}

int
main(void)
{
	SRunner *sr = srunner_create(fleet_lease_suite());
	int failed;

	srunner_run_all(sr, CK_NORMAL);
	failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
