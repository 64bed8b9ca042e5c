/* Unit tests for daemon/budget.c, on a simulated wall clock. */
#include "config.h"

#include <check.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "daemon/budget.h"

#define DAY_MS          INT64_C(86400000)
#define T_2024_01_01    INT64_C(1704067200000)
#define T_2024_01_31    INT64_C(1706659200000)
#define T_2024_02_01    INT64_C(1706745600000)
#define T_2024_02_29    INT64_C(1709164800000)
#define T_2024_03_01    INT64_C(1709251200000)
#define T_2024_03_15    INT64_C(1710460800000)
#define T_2024_03_16    INT64_C(1710547200000)
#define T_2025_01_01    INT64_C(1735689600000)
#define NOON            (12 * INT64_C(3600000))

/* Add a budget that must be valid. */
static void
add(struct budgets *bs, enum budget_scope scope, uint32_t uid,
    const char *name, enum budget_unit unit, enum budget_period period,
    double limit)
{
	struct budget_def def;
	char cause[256];

	memset(&def, 0, sizeof def);
	def.scope = scope;
	def.uid = uid;
	def.name = name;
	def.unit = unit;
	def.period = period;
	def.limit = limit;
	cause[0] = '\0';
	ck_assert_msg(budgets_add(bs, &def, cause, sizeof cause) == 0, "%s", cause);
}

/* Budget index as it stands at now. */
static struct budget_state
status(struct budgets *bs, size_t i, int64_t now)
{
	struct budget_state st;

	ck_assert_int_eq(budgets_get(bs, i, now, &st), 0);
	return st;
}

/* budgets_apply says whether a request needs its prompt counted before it is sent. */
START_TEST(test_apply)
{
	struct budgets *bs = budgets_new();

	ck_assert(!budgets_apply(bs, 1, NULL, "t", "m"));
	add(bs, BUDGET_TAG, 0, "batch", BUDGET_TOKENS, BUDGET_DAY, 100);
	add(bs, BUDGET_MODEL, 0, "big", BUDGET_MONEY, BUDGET_MONTH, 5);
	add(bs, BUDGET_USER, 7, NULL, BUDGET_MONEY, BUDGET_EVER, 5);
	ck_assert(!budgets_apply(bs, 1, NULL, NULL, "m"));
	ck_assert(!budgets_apply(bs, 1, NULL, "chat", NULL));
	ck_assert(budgets_apply(bs, 1, NULL, "batch", "m"));
	ck_assert(budgets_apply(bs, 1, NULL, NULL, "big"));
	ck_assert(budgets_apply(bs, 7, NULL, NULL, "m"));
	add(bs, BUDGET_ALL, 0, NULL, BUDGET_MONEY, BUDGET_EVER, 10);
	ck_assert(budgets_apply(bs, 1, NULL, NULL, NULL));
	budgets_free(bs);
}
END_TEST

START_TEST(test_race_exactly_ten)
{
	struct budgets *bs = budgets_new();
	struct budget_reservation *r[50];
	struct budget_refusal why;
	struct budget_state st;
	int i, ok = 0;

	add(bs, BUDGET_ALL, 0, NULL, BUDGET_TOKENS, BUDGET_DAY, 1000);
	add(bs, BUDGET_USER, 7, NULL, BUDGET_MONEY, BUDGET_EVER, 1.0);
	for (i = 0; i < 50; i++) {
		r[i] = NULL;
		if (budgets_reserve(bs, 7, NULL, NULL, "m", 100, 0.1, T_2024_03_15,
		    &r[i], &why) == 0) {
			ck_assert_ptr_nonnull(r[i]);
			ok++;
		} else {
			ck_assert_ptr_null(r[i]);
			ck_assert(why.index == 0 || why.index == 1);
			ck_assert(why.budget.left == 0);
		}
		st = status(bs, 0, T_2024_03_15);
		ck_assert(st.used + st.reserved <= 1000);
		st = status(bs, 1, T_2024_03_15);
		ck_assert(st.used + st.reserved <= 1.0);
	}
	ck_assert_int_eq(ok, 10);
	st = status(bs, 0, T_2024_03_15);
	ck_assert(st.reserved == 1000 && st.used == 0 && st.left == 0);
	st = status(bs, 1, T_2024_03_15);
	ck_assert(st.reserved == 1.0 && st.left == 0);

	/* Each used 40 tokens and 0.04: 600 tokens and 0.6 come free, room for six. */
	for (i = 0; i < 10; i++)
		budgets_settle(r[i], 40, 0.04, T_2024_03_15 + 1);
	st = status(bs, 0, T_2024_03_15 + 1);
	ck_assert(st.used == 400 && st.reserved == 0 && st.left == 600);
	st = status(bs, 1, T_2024_03_15 + 1);
	ck_assert(fabs(st.used - 0.4) < 1e-12 && st.reserved == 0);
	for (ok = 0, i = 0; i < 50; i++) {
		if (budgets_reserve(bs, 7, NULL, NULL, "m", 100, 0.1, T_2024_03_15 + 2,
		    &r[ok], &why) == 0)
			ok++;
	}
	ck_assert_int_eq(ok, 6);
	for (i = 0; i < ok; i++)
		budgets_release(r[i]);
	st = status(bs, 0, T_2024_03_15 + 3);
	ck_assert(st.used == 400 && st.reserved == 0);
	budgets_free(bs);
}
END_TEST

START_TEST(test_overshoot_by_one)
{
	struct budgets *bs = budgets_new();
	struct budget_reservation *a, *b, *c;
	struct budget_refusal why;

	add(bs, BUDGET_TAG, 0, "batch", BUDGET_TOKENS, BUDGET_EVER, 1000);
	add(bs, BUDGET_MODEL, 0, "gpt", BUDGET_MONEY, BUDGET_EVER, 0.5);
	ck_assert_int_eq(budgets_reserve(bs, 1, NULL, "batch", NULL, 999, 0, 0, &a, &why), 0);
	/* Exactly the limit is allowed. */
	ck_assert_int_eq(budgets_reserve(bs, 1, NULL, "batch", NULL, 1, 0, 0, &b, &why), 0);
	/* One more token is not. */
	ck_assert_int_eq(budgets_reserve(bs, 1, NULL, "batch", NULL, 1, 0, 0, &c, &why), -1);
	ck_assert_uint_eq(why.index, 0);
	ck_assert(why.needed == 1 && why.budget.left == 0);
	ck_assert_int_eq(why.budget.def.scope, BUDGET_TAG);
	ck_assert_str_eq(why.budget.def.name, "batch");
	ck_assert_str_eq(why.message,
	    "budget tag:batch (tokens/ever) exceeded: 0 left, 1 needed");
	budgets_release(a);
	budgets_release(b);

	/* Money: the exact limit fits, a billionth more does not. */
	ck_assert_int_eq(budgets_reserve(bs, 1, NULL, NULL, "gpt", 10, 0.5, 0, &a, &why), 0);
	ck_assert_int_eq(budgets_reserve(bs, 1, NULL, NULL, "gpt", 10, 1e-9, 0, &b, &why), -1);
	ck_assert_uint_eq(why.index, 1);
	ck_assert_str_eq(why.message,
	    "budget model:gpt (money/ever) exceeded: 0 left, 1e-09 needed");
	budgets_settle(a, 10, 0.25, 0);
	ck_assert_int_eq(budgets_reserve(bs, 1, NULL, NULL, "gpt", 10, 0.25, 0, &b, &why), 0);
	ck_assert_int_eq(budgets_reserve(bs, 1, NULL, NULL, "gpt", 10, 1e-9, 0, &c, &why), -1);
	budgets_settle(b, 10, 0.25, 0);
	ck_assert(status(bs, 1, 0).used == 0.5);
	budgets_free(bs);
}
END_TEST

START_TEST(test_day_rollover)
{
	struct budgets *bs = budgets_new();
	struct budget_reservation *a, *b, *keep;
	struct budget_refusal why;
	struct budget_state st;
	int64_t last_ms = T_2024_03_16 - 1;

	add(bs, BUDGET_USER, 1000, "alice", BUDGET_TOKENS, BUDGET_DAY, 100);
	ck_assert_int_eq(budgets_reserve(bs, 1000, NULL, NULL, NULL, 100, 0, T_2024_03_15, &a, &why), 0);
	budgets_settle(a, 100, 0, T_2024_03_15 + NOON);
	ck_assert_int_eq(budgets_reserve(bs, 1000, NULL, NULL, NULL, 1, 0, last_ms, &a, &why), -1);
	ck_assert_str_eq(why.message,
	    "budget user:alice (tokens/day) exceeded: 0 left, 1 needed");
	/* Other uids are not counted. */
	ck_assert_int_eq(budgets_reserve(bs, 1001, NULL, NULL, NULL, 1000, 0, last_ms, &a, &why), 0);
	ck_assert_ptr_null(a);
	/* UTC midnight: a new day with nothing used. */
	ck_assert_int_eq(budgets_reserve(bs, 1000, NULL, NULL, NULL, 60, 0, T_2024_03_16, &keep, &why), 0);
	st = status(bs, 0, T_2024_03_16);
	ck_assert(st.used == 0 && st.reserved == 60);
	ck_assert_int_eq(st.period_start_ms, T_2024_03_16);

	/* Reserved before midnight, still reserved after; usage counts when settled. */
	ck_assert_int_eq(budgets_reserve(bs, 1000, NULL, NULL, NULL, 40, 0, T_2024_03_16 + DAY_MS - 1, &b, &why), 0);
	st = status(bs, 0, T_2024_03_16 + DAY_MS);
	ck_assert(st.used == 0 && st.reserved == 100 && st.left == 0);
	ck_assert_int_eq(budgets_reserve(bs, 1000, NULL, NULL, NULL, 1, 0, T_2024_03_16 + DAY_MS, &a, &why), -1);
	budgets_settle(b, 30, 0, T_2024_03_16 + DAY_MS + 5);
	st = status(bs, 0, T_2024_03_16 + DAY_MS + 5);
	ck_assert(st.used == 30 && st.reserved == 60 && st.left == 10);
	/* A clock stepped back does not reopen yesterday. */
	st = status(bs, 0, T_2024_03_16);
	ck_assert(st.used == 30);
	budgets_free(bs);
	/* The reservation of 60 is still in flight: it outlives the set. */
	budgets_release(keep);
	budgets_release(NULL);
}
END_TEST

START_TEST(test_month_rollover)
{
	struct budgets *bs = budgets_new();
	struct budget_reservation *a;
	struct budget_refusal why;
	struct budget_state st;

	add(bs, BUDGET_ALL, 0, NULL, BUDGET_MONEY, BUDGET_MONTH, 5.0);
	add(bs, BUDGET_ALL, 0, NULL, BUDGET_MONEY, BUDGET_EVER, 100.0);
	ck_assert_int_eq(budgets_reserve(bs, 1, NULL, NULL, NULL, 1, 5.0, T_2024_01_01, &a, &why), 0);
	budgets_settle(a, 1, 5.0, T_2024_01_31 + NOON);
	ck_assert_int_eq(budgets_reserve(bs, 1, NULL, NULL, NULL, 1, 0.01, T_2024_02_01 - 1, &a, &why), -1);
	ck_assert_uint_eq(why.index, 0);
	ck_assert_int_eq(budgets_reserve(bs, 1, NULL, NULL, NULL, 1, 5.0, T_2024_02_01, &a, &why), 0);
	budgets_settle(a, 1, 5.0, T_2024_02_29 + NOON);
	st = status(bs, 0, T_2024_02_29 + DAY_MS - 1);
	ck_assert(st.used == 5.0);
	ck_assert_int_eq(st.period_start_ms, T_2024_02_01);
	/* Leap day over, March begins. */
	st = status(bs, 0, T_2024_03_01);
	ck_assert(st.used == 0 && st.left == 5.0);
	ck_assert_int_eq(st.period_start_ms, T_2024_03_01);
	/* Ever never rolls. */
	st = status(bs, 1, T_2025_01_01);
	ck_assert(st.used == 10.0 && st.left == 90.0);
	ck_assert_int_eq(st.period_start_ms, 0);

	ck_assert_int_eq(budget_period_start(BUDGET_MONTH, T_2024_03_15 + NOON), T_2024_03_01);
	ck_assert_int_eq(budget_period_start(BUDGET_DAY, T_2024_03_15 + NOON), T_2024_03_15);
	ck_assert_int_eq(budget_period_start(BUDGET_MONTH, T_2025_01_01 - 1), T_2025_01_01 - 31 * DAY_MS);
	ck_assert_int_eq(budget_period_start(BUDGET_MONTH, T_2025_01_01), T_2025_01_01);
	ck_assert_int_eq(budget_period_start(BUDGET_DAY, -1), -DAY_MS);
	ck_assert_int_eq(budget_period_start(BUDGET_MONTH, -1), -31 * DAY_MS);
	ck_assert_int_eq(budget_period_start(BUDGET_EVER, T_2025_01_01), 0);
	budgets_free(bs);
}
END_TEST

START_TEST(test_all_or_nothing)
{
	struct budgets *bs = budgets_new();
	struct budget_reservation *a, *b, *c;
	struct budget_refusal why;
	int64_t t = T_2024_03_15;

	add(bs, BUDGET_ALL, 0, NULL, BUDGET_MONEY, BUDGET_EVER, 10.0);
	add(bs, BUDGET_USER, 1000, NULL, BUDGET_TOKENS, BUDGET_DAY, 500);
	add(bs, BUDGET_TAG, 0, "batch", BUDGET_MONEY, BUDGET_MONTH, 1.0);
	add(bs, BUDGET_MODEL, 0, "gpt", BUDGET_TOKENS, BUDGET_EVER, 300);

	ck_assert_int_eq(budgets_reserve(bs, 1000, NULL, "batch", "gpt", 200, 0.2, t, &a, &why), 0);
	ck_assert(status(bs, 0, t).reserved == 0.2);
	ck_assert(status(bs, 1, t).reserved == 200);
	ck_assert(status(bs, 2, t).reserved == 0.2);
	ck_assert(status(bs, 3, t).reserved == 200);
	/* The model budget says no: none of the others is touched. */
	ck_assert_int_eq(budgets_reserve(bs, 1000, NULL, "batch", "gpt", 200, 0.2, t, &b, &why), -1);
	ck_assert_uint_eq(why.index, 3);
	ck_assert(why.budget.left == 100 && why.needed == 200);
	ck_assert_ptr_null(b);
	ck_assert(status(bs, 0, t).reserved == 0.2);
	ck_assert(status(bs, 1, t).reserved == 200);
	ck_assert(status(bs, 2, t).reserved == 0.2);
	ck_assert(status(bs, 3, t).reserved == 200);
	/* Another user, tag and model: only the global budget applies. */
	ck_assert_int_eq(budgets_reserve(bs, 2000, NULL, "chat", "llama", 5000, 1.0, t, &c, &why), 0);
	ck_assert(status(bs, 0, t).reserved == 1.2);
	ck_assert(status(bs, 1, t).reserved == 200);
	ck_assert(status(bs, 3, t).reserved == 200);
	/* The user budget refuses first when it is the one short. */
	ck_assert_int_eq(budgets_reserve(bs, 1000, NULL, NULL, NULL, 301, 0, t, &b, &why), -1);
	ck_assert_uint_eq(why.index, 1);
	ck_assert_str_eq(why.message,
	    "budget user:1000 (tokens/day) exceeded: 300 left, 301 needed");
	budgets_settle(a, 150, 0.15, t);
	ck_assert(status(bs, 1, t).used == 150);
	ck_assert(status(bs, 3, t).used == 150);
	ck_assert(status(bs, 3, t).reserved == 0);
	budgets_free(bs);
	/* c (the global budget only) outlives the set and is settled after it. */
	budgets_settle(c, 10, 0.01, t);
}
END_TEST

START_TEST(test_zero_price_exhausted)
{
	struct budgets *bs = budgets_new();
	struct budget_reservation *a;
	struct budget_refusal why;
	struct budget_state st;

	add(bs, BUDGET_ALL, 0, NULL, BUDGET_MONEY, BUDGET_EVER, 1.0);
	ck_assert_int_eq(budgets_set_used(bs, 0, 2.5, 0), 0);
	st = status(bs, 0, 0);
	ck_assert(st.used == 2.5 && st.left == 0);
	/* A zero-priced model is never stopped by a money budget. */
	ck_assert_int_eq(budgets_reserve(bs, 1, NULL, NULL, "free", 100000, 0.0, 0, &a, &why), 0);
	ck_assert_ptr_nonnull(a);
	budgets_settle(a, 90000, 0.0, 0);
	/* A priced one is. */
	ck_assert_int_eq(budgets_reserve(bs, 1, NULL, NULL, "paid", 1, 1e-6, 0, &a, &why), -1);
	ck_assert_str_eq(why.message,
	    "budget all (money/ever) exceeded: 0 left, 1e-06 needed");
	ck_assert(status(bs, 0, 0).used == 2.5);
	/* Negative or NaN costs count as nothing. */
	ck_assert_int_eq(budgets_reserve(bs, 1, NULL, NULL, "x", 1, -5.0, 0, &a, &why), 0);
	budgets_release(a);
	ck_assert_int_eq(budgets_reserve(bs, 1, NULL, NULL, "x", 1, NAN, 0, &a, &why), 0);
	budgets_release(a);
	ck_assert_int_eq(budgets_set_used(bs, 1, 0, 0), -1);
	budgets_free(bs);
}
END_TEST

START_TEST(test_tokens_and_replay)
{
	struct budgets *bs = budgets_new();
	struct budget_reservation *a;
	struct budget_refusal why;
	int64_t now = T_2024_03_15 + NOON;

	add(bs, BUDGET_TAG, 0, "batch", BUDGET_TOKENS, BUDGET_DAY, 200000);
	add(bs, BUDGET_TAG, 0, "batch", BUDGET_TOKENS, BUDGET_MONTH, 1000000);
	add(bs, BUDGET_TAG, 0, "batch", BUDGET_MONEY, BUDGET_EVER, 50);
	/* Replaying the ledger: each record counts where its time falls. */
	budgets_add_usage(bs, 1, NULL, "batch", "m", 1000, 1.0, T_2024_03_15 + 5, now);
	budgets_add_usage(bs, 1, NULL, "batch", "m", 2000, 2.0, T_2024_03_01 + 5, now);
	budgets_add_usage(bs, 1, NULL, "batch", "m", 4000, 4.0, T_2024_02_29, now);
	budgets_add_usage(bs, 1, NULL, "chat", "m", 8000, 8.0, T_2024_03_15, now);
	budgets_add_usage(bs, 1, NULL, NULL, "m", 8000, 8.0, T_2024_03_15, now);
	ck_assert(status(bs, 0, now).used == 1000);
	ck_assert(status(bs, 1, now).used == 3000);
	ck_assert(status(bs, 2, now).used == 7.0);
	/* 199000 left today. */
	ck_assert_int_eq(budgets_reserve(bs, 5, NULL, "batch", "m", 199001, 0, now, &a, &why), -1);
	ck_assert_uint_eq(why.index, 0);
	ck_assert_int_eq(budgets_reserve(bs, 5, NULL, "batch", "m", 199000, 0, now, &a, &why), 0);
	budgets_settle(a, 100, 0.5, now);
	ck_assert(status(bs, 0, now).used == 1100);
	ck_assert(status(bs, 1, now).used == 3100);
	ck_assert(status(bs, 2, now).used == 7.5);
	ck_assert_int_eq(budgets_set_used(bs, 1, 999999.0, now), 0);
	ck_assert_int_eq(budgets_reserve(bs, 5, NULL, "batch", "m", 2, 0, now, &a, &why), -1);
	ck_assert_uint_eq(why.index, 1);
	ck_assert_int_eq(budgets_reserve(bs, 5, NULL, "batch", "m", 1, 0, now, &a, &why), 0);
	budgets_release(a);
	ck_assert_uint_eq(budgets_count(bs), 3);
	budgets_free(bs);
}
END_TEST

/* Token sums saturate: a hostile max_tokens cannot wrap a reservation to a small one. */
START_TEST(test_tokens_add_saturates)
{
	struct budgets *bs = budgets_new();
	struct budget_reservation *a;
	struct budget_refusal why;
	int64_t sum;

	ck_assert_int_eq(budget_tokens_add(3, 4), 7);
	ck_assert_int_eq(budget_tokens_add(0, 0), 0);
	ck_assert_int_eq(budget_tokens_add(-5, 4), 4);
	ck_assert_int_eq(budget_tokens_add(4, INT64_MIN), 4);
	ck_assert_int_eq(budget_tokens_add(INT64_MAX, 1), INT64_MAX);
	ck_assert_int_eq(budget_tokens_add(1, INT64_MAX), INT64_MAX);
	ck_assert_int_eq(budget_tokens_add(INT64_MAX, INT64_MAX), INT64_MAX);
	ck_assert_int_eq(budget_tokens_add(INT64_MAX - 1, 1), INT64_MAX);
	ck_assert_int_eq(budget_tokens_add(INT64_MAX / 2, INT64_MAX / 2 + 1), INT64_MAX);

	/* 12 prompt tokens + max_tokens 2^63-1 against an exhausted budget: refused */
	add(bs, BUDGET_ALL, 0, NULL, BUDGET_TOKENS, BUDGET_EVER, 100);
	ck_assert_int_eq(budgets_set_used(bs, 0, 100, 0), 0);
	sum = budget_tokens_add(12, INT64_MAX);
	ck_assert_int_gt(sum, 0);
	ck_assert_int_eq(budgets_reserve(bs, 1, NULL, NULL, "m", sum, 0, 0, &a, &why), -1);
	ck_assert_uint_eq(why.index, 0);
	budgets_free(bs);
}
END_TEST

START_TEST(test_add_validation)
{
	struct budgets *bs = budgets_new();
	struct budget_def def;
	char cause[256], longname[300];

	memset(&def, 0, sizeof def);
	def.scope = BUDGET_TAG;
	def.unit = BUDGET_TOKENS;
	def.period = BUDGET_DAY;
	def.limit = 10;
	ck_assert_int_eq(budgets_add(bs, &def, cause, sizeof cause), -1);
	ck_assert_str_eq(cause, "a tag budget needs a name");
	def.name = "";
	ck_assert_int_eq(budgets_add(bs, &def, cause, sizeof cause), -1);
	memset(longname, 'x', sizeof longname - 1);
	longname[sizeof longname - 1] = '\0';
	def.name = longname;
	ck_assert_int_eq(budgets_add(bs, &def, cause, sizeof cause), -1);
	def.name = "t";
	def.limit = 10.5;
	ck_assert_int_eq(budgets_add(bs, &def, cause, sizeof cause), -1);
	def.limit = -1;
	ck_assert_int_eq(budgets_add(bs, &def, cause, sizeof cause), -1);
	def.limit = NAN;
	ck_assert_int_eq(budgets_add(bs, &def, cause, sizeof cause), -1);
	def.limit = INFINITY;
	ck_assert_int_eq(budgets_add(bs, &def, cause, sizeof cause), -1);
	def.limit = 1e300;
	ck_assert_int_eq(budgets_add(bs, &def, cause, sizeof cause), -1);
	def.unit = BUDGET_MONEY;
	def.limit = 2e9;
	ck_assert_int_eq(budgets_add(bs, &def, cause, sizeof cause), -1);
	def.limit = 0.5;
	def.scope = (enum budget_scope)9;
	ck_assert_int_eq(budgets_add(bs, &def, cause, sizeof cause), -1);
	ck_assert_str_eq(cause, "unknown budget scope");
	def.scope = BUDGET_TAG;
	def.period = (enum budget_period)-1;
	ck_assert_int_eq(budgets_add(bs, &def, cause, sizeof cause), -1);
	def.period = BUDGET_DAY;
	def.unit = (enum budget_unit)2;
	ck_assert_int_eq(budgets_add(bs, &def, cause, sizeof cause), -1);
	def.unit = BUDGET_MONEY;
	ck_assert_uint_eq(budgets_count(bs), 0);
	ck_assert_int_eq(budgets_add(bs, &def, cause, sizeof cause), 0);
	ck_assert_int_eq(budgets_add(bs, &def, cause, sizeof cause), -1);
	ck_assert_str_eq(cause, "duplicate budget");
	def.period = BUDGET_MONTH;
	ck_assert_int_eq(budgets_add(bs, &def, cause, sizeof cause), 0);
	def.limit = 0;                          /* a zero limit is a valid budget */
	def.unit = BUDGET_TOKENS;
	ck_assert_int_eq(budgets_add(bs, &def, cause, sizeof cause), 0);
	ck_assert_uint_eq(budgets_count(bs), 3);
	ck_assert_int_eq(budgets_get(bs, 3, 0, &(struct budget_state){ 0 }), -1);
	budgets_free(bs);
}
END_TEST

START_TEST(test_carry_over_reload)
{
	struct budgets *old = budgets_new(), *new = budgets_new();
	struct budget_reservation *a, *b;
	struct budget_refusal why;
	struct budget_state st;
	int64_t t = T_2024_03_15;

	add(old, BUDGET_ALL, 0, NULL, BUDGET_MONEY, BUDGET_EVER, 10.0);
	add(old, BUDGET_TAG, 0, "gone", BUDGET_TOKENS, BUDGET_EVER, 100);
	ck_assert_int_eq(budgets_reserve(old, 1, NULL, "gone", NULL, 50, 4.0, t, &a, &why), 0);
	budgets_settle(a, 50, 3.0, t);
	ck_assert_int_eq(budgets_reserve(old, 1, NULL, "gone", NULL, 50, 4.0, t, &a, &why), 0);

	/* The reload lowers the global limit and adds a user budget. */
	add(new, BUDGET_USER, 1, NULL, BUDGET_TOKENS, BUDGET_DAY, 1000);
	add(new, BUDGET_ALL, 0, NULL, BUDGET_MONEY, BUDGET_EVER, 8.0);
	budgets_carry(new, old);
	budgets_free(old);
	st = status(new, 1, t);
	ck_assert(st.def.limit == 8.0 && st.used == 3.0 && st.reserved == 4.0 && st.left == 1.0);
	ck_assert_int_eq(budgets_reserve(new, 1, NULL, NULL, NULL, 10, 1.5, t, &b, &why), -1);
	ck_assert_uint_eq(why.index, 1);
	/* Settling the reservation made before the reload frees room in the new set. */
	budgets_settle(a, 10, 0.5, t);
	st = status(new, 1, t);
	ck_assert(st.used == 3.5 && st.reserved == 0);
	ck_assert_int_eq(budgets_reserve(new, 1, NULL, NULL, NULL, 10, 1.5, t, &b, &why), 0);
	ck_assert(status(new, 0, t).reserved == 10);
	budgets_release(b);
	budgets_free(new);
}
END_TEST

/* A named user's budget counts that name's requests only; a uid's budget never counts a name's. */
START_TEST(test_named_user)
{
	struct budgets *bs = budgets_new(), *re;
	struct budget_reservation *a, *b;
	struct budget_refusal why;
	struct budget_def def;
	char cause[256];

	memset(&def, 0, sizeof def);
	def.scope = BUDGET_USER;
	def.named = true;
	def.name = "alice";
	def.unit = BUDGET_TOKENS;
	def.period = BUDGET_EVER;
	def.limit = 100;
	ck_assert_int_eq(budgets_add(bs, &def, cause, sizeof cause), 0);
	add(bs, BUDGET_USER, 1000, NULL, BUDGET_TOKENS, BUDGET_EVER, 10);
	/* the same name twice is a duplicate; a named user needs a name */
	ck_assert_int_eq(budgets_add(bs, &def, cause, sizeof cause), -1);
	def.name = "";
	ck_assert_int_eq(budgets_add(bs, &def, cause, sizeof cause), -1);

	ck_assert(budgets_apply(bs, 7, "alice", NULL, NULL));
	ck_assert(!budgets_apply(bs, 7, "bob", NULL, NULL));
	ck_assert(!budgets_apply(bs, 7, NULL, NULL, NULL));
	ck_assert(budgets_apply(bs, 1000, NULL, NULL, NULL));
	ck_assert(budgets_apply(bs, 1000, "", NULL, NULL));
	/* a name billed under the uid of a system user is still only the name */
	ck_assert(!budgets_apply(bs, 1000, "bob", NULL, NULL));

	ck_assert_int_eq(budgets_reserve(bs, 1000, "alice", NULL, NULL, 60, 0, 0, &a, &why), 0);
	ck_assert_ptr_nonnull(a);
	ck_assert_double_eq(status(bs, 0, 0).reserved, 60);
	ck_assert_double_eq(status(bs, 1, 0).reserved, 0);
	ck_assert_int_eq(budgets_reserve(bs, 1000, "alice", NULL, NULL, 41, 0, 0, &b, &why), -1);
	ck_assert_msg(strstr(why.message, "budget user:alice (tokens/ever) exceeded: 40 left, 41 needed")
	    != NULL, "%s", why.message);
	ck_assert_uint_eq(why.index, 0);
	ck_assert(why.budget.def.named);
	ck_assert_str_eq(why.budget.def.name, "alice");
	budgets_settle(a, 90, 0, 0);
	ck_assert_double_eq(status(bs, 0, 0).used, 90);
	/* bob and uid 1000 are not held back by alice's budget */
	ck_assert_int_eq(budgets_reserve(bs, 1000, "bob", NULL, NULL, 1000, 0, 0, &b, &why), 0);
	ck_assert_ptr_null(b);
	ck_assert_int_eq(budgets_reserve(bs, 1000, NULL, NULL, NULL, 10, 0, 0, &b, &why), 0);
	budgets_release(b);
	/* the replay counts a name's records into its budget */
	budgets_add_usage(bs, UINT32_MAX, "alice", NULL, NULL, 5, 0, 0, 0);
	ck_assert_double_eq(status(bs, 0, 0).used, 95);

	/* a reload keeps the name's usage, and a uid budget is not the same as a name's */
	re = budgets_new();
	def.name = "alice";
	def.limit = 200;
	ck_assert_int_eq(budgets_add(re, &def, cause, sizeof cause), 0);
	add(re, BUDGET_USER, 0, NULL, BUDGET_TOKENS, BUDGET_EVER, 10);
	budgets_carry(re, bs);
	budgets_free(bs);
	ck_assert_double_eq(status(re, 0, 0).used, 95);
	ck_assert_double_eq(status(re, 0, 0).left, 105);
	ck_assert_double_eq(status(re, 1, 0).used, 0);
	/* fleet claims name a named user by name, never as uid 0 */
	{
		struct budget_claim cl[4];
		struct budget_refusal w;
		ck_assert_uint_eq(budgets_claims(re, 7, "alice", NULL, NULL, 10, 0, 0, cl, 4), 1);
		ck_assert_str_eq(cl[0].key, "user:alice tokens/ever");
		ck_assert(cl[0].named);
		budget_claim_refusal(&cl[0], 200, 0, "across the fleet", NULL, true, &w);
		ck_assert(w.budget.def.named);
		ck_assert_msg(strstr(w.message, "budget user:alice (tokens/ever) has 0 tokens left "
		    "across the fleet") != NULL, "%s", w.message);
		ck_assert_uint_eq(budgets_claims(re, 0, NULL, NULL, NULL, 10, 0, 0, cl, 4), 1);
		ck_assert_str_eq(cl[0].key, "user:0 tokens/ever");
		ck_assert(!cl[0].named);
	}
	budgets_free(re);
}
END_TEST

START_TEST(test_parse_names)
{
	enum budget_scope sc;
	enum budget_unit un;
	enum budget_period pe;

	ck_assert_int_eq(budget_scope_parse("user", &sc), 0);
	ck_assert_int_eq(sc, BUDGET_USER);
	ck_assert_int_eq(budget_scope_parse("model", &sc), 0);
	ck_assert_int_eq(sc, BUDGET_MODEL);
	ck_assert_int_eq(budget_scope_parse("users", &sc), -1);
	ck_assert_int_eq(budget_scope_parse(NULL, &sc), -1);
	ck_assert_int_eq(budget_unit_parse("tokens", &un), 0);
	ck_assert_int_eq(un, BUDGET_TOKENS);
	ck_assert_int_eq(budget_unit_parse("Money", &un), -1);
	ck_assert_int_eq(budget_period_parse("month", &pe), 0);
	ck_assert_int_eq(pe, BUDGET_MONTH);
	ck_assert_int_eq(budget_period_parse("week", &pe), -1);
	ck_assert_str_eq(budget_scope_name(BUDGET_TAG), "tag");
	ck_assert_str_eq(budget_unit_name(BUDGET_MONEY), "money");
	ck_assert_str_eq(budget_period_name(BUDGET_EVER), "ever");
	ck_assert_str_eq(budget_period_name((enum budget_period)7), "?");
}
END_TEST

/* Fleet claims: one per budget that applies, keyed the same on every node, in the period of when. */
START_TEST(test_claims)
{
	struct budgets *bs = budgets_new();
	struct budget_claim cl[8];
	size_t n;

	add(bs, BUDGET_ALL, 0, NULL, BUDGET_MONEY, BUDGET_EVER, 10.0);
	add(bs, BUDGET_USER, 1000, "alice", BUDGET_TOKENS, BUDGET_DAY, 500);
	add(bs, BUDGET_TAG, 0, "batch", BUDGET_TOKENS, BUDGET_MONTH, 900);
	add(bs, BUDGET_MODEL, 0, "m", BUDGET_MONEY, BUDGET_DAY, 2.5);
	n = budgets_claims(bs, 1000, NULL, "batch", "other", 120, 0.25, T_2024_03_15 + NOON, cl, 8);
	ck_assert_uint_eq(n, 3);
	ck_assert_str_eq(cl[0].key, "all money/ever");
	ck_assert_int_eq(cl[0].period_start_ms, 0);
	ck_assert_int_eq(cl[0].limit, INT64_C(10000000000));
	ck_assert_int_eq(cl[0].amount, INT64_C(250000000));
	ck_assert_str_eq(cl[1].key, "user:1000 tokens/day");    /* by uid, not by label */
	ck_assert_int_eq(cl[1].period_start_ms, T_2024_03_15);
	ck_assert_int_eq(cl[1].amount, 120);
	ck_assert_str_eq(cl[2].key, "tag:batch tokens/month");
	ck_assert_int_eq(cl[2].period_start_ms, T_2024_03_01);
	ck_assert_int_eq(cl[2].limit, 900);
	/* claims change nothing */
	struct budget_state st;
	ck_assert_int_eq(budgets_get(bs, 1, T_2024_03_15, &st), 0);
	ck_assert(st.used == 0 && st.reserved == 0);
	/* max bounds the count */
	ck_assert_uint_eq(budgets_claims(bs, 1000, NULL, "batch", "m", 1, 1, T_2024_03_15, cl, 2), 2);
	ck_assert_uint_eq(budgets_claims(bs, 7, NULL, NULL, "x", 1, 1, T_2024_03_15, cl, 8), 1);
	budgets_free(bs);
}
END_TEST

/* The claim of any budget by index, whoever it applies to: what fleet stats look up. */
START_TEST(test_claim_of)
{
	struct budgets *bs = budgets_new();
	struct budget_claim cl;

	add(bs, BUDGET_ALL, 0, NULL, BUDGET_MONEY, BUDGET_EVER, 10.0);
	add(bs, BUDGET_USER, 1000, "alice", BUDGET_TOKENS, BUDGET_DAY, 500);
	add(bs, BUDGET_TAG, 0, "batch", BUDGET_TOKENS, BUDGET_MONTH, 900);
	ck_assert_int_eq(budgets_claim_of(bs, 2, T_2024_03_15 + NOON, &cl), 0);
	ck_assert_str_eq(cl.key, "tag:batch tokens/month");
	ck_assert_int_eq(cl.period_start_ms, T_2024_03_01);
	ck_assert_int_eq(cl.limit, 900);
	ck_assert_int_eq(cl.amount, 0);
	ck_assert_double_eq(budget_claim_value(&cl, 42), 42);
	ck_assert_int_eq(budgets_claim_of(bs, 1, T_2024_03_15 + NOON, &cl), 0);
	ck_assert_str_eq(cl.key, "user:1000 tokens/day");
	ck_assert_str_eq(cl.name, "alice");
	ck_assert_int_eq(budgets_claim_of(bs, 0, T_2024_03_15, &cl), 0);
	ck_assert_str_eq(cl.key, "all money/ever");
	ck_assert_int_eq(cl.limit, INT64_C(10000000000));
	ck_assert_double_eq_tol(budget_claim_value(&cl, INT64_C(2500000000)), 2.5, 1e-12);
	ck_assert_int_eq(budgets_claim_of(bs, 3, T_2024_03_15, &cl), -1);
	budgets_free(bs);
}
END_TEST

/* A refusal from the fleet reads like a local one, with what is left fleet-wide. */
START_TEST(test_claim_refusal)
{
	struct budgets *bs = budgets_new();
	struct budget_claim cl[2];
	struct budget_refusal why;
	struct budget_ask a = { 100, 400, 16, 0, 0, true };

	add(bs, BUDGET_TAG, 0, "batch", BUDGET_TOKENS, BUDGET_DAY, 1000);
	add(bs, BUDGET_ALL, 0, NULL, BUDGET_MONEY, BUDGET_EVER, 10.0);
	ck_assert_uint_eq(budgets_claims(bs, 1, NULL, "batch", "m", 500, 3.0, T_2024_01_01, cl, 2), 2);
	/* without the ask, what is left */
	budget_claim_refusal(&cl[0], 700, 260, "across the fleet", NULL, true, &why);
	ck_assert_str_eq(why.message, "budget tag:batch (tokens/day) has 40 tokens left across the fleet");
	ck_assert(why.budget.left == 40 && why.needed == 500 && why.budget.used == 700);
	ck_assert_int_eq(why.fit, BUDGET_FIT_UNKNOWN);
	ck_assert_str_eq(why.budget.def.name, "batch");
	ck_assert_int_eq(why.budget.def.scope, BUDGET_TAG);
	ck_assert(why.index != BUDGET_INDEX_NONE);
	/* with it, the largest max_tokens that fits, and why it does not do */
	ck_assert_int_eq(budget_claim_fit(&cl[0], 140, &a), 40);
	budget_claim_refusal(&cl[0], 700, 160, "across the fleet", &a, true, &why);
	ck_assert_int_eq(why.fit, 40);
	ck_assert_str_eq(why.message, "budget tag:batch (tokens/day) has 140 tokens left across the "
	    "fleet: the largest max_tokens that fits is 40");
	budget_claim_refusal(&cl[0], 700, 260, "across the fleet", &a, true, &why);
	ck_assert_int_eq(why.fit, -1);
	ck_assert_str_eq(why.message, "budget tag:batch (tokens/day) has 40 tokens left across the "
	    "fleet, less than the prompt alone (100 tokens)");
	budget_claim_refusal(&cl[0], 700, 150, "across the fleet", &a, false, &why);
	ck_assert_int_eq(why.fit, 50);
	ck_assert_msg(strstr(why.message, "fit is refuse): the largest max_tokens that fits is 50")
	    != NULL, "%s", why.message);
	/* over the limit already: nothing left, never negative */
	budget_claim_refusal(&cl[1], INT64_C(9500000000), INT64_C(900000000), "across the fleet",
	    NULL, true, &why);
	ck_assert(why.budget.left == 0);
	ck_assert(fabs(why.needed - 3.0) < 1e-12);
	ck_assert_ptr_null(why.budget.def.name);
	ck_assert_str_eq(why.message, "budget all (money/ever) has 0 left across the fleet");
	budgets_free(bs);
}
END_TEST

/* An ask of prompt and completion tokens at prices per 1,000, shrinking to at least 16. */
static struct budget_ask
ask(int64_t prompt, int64_t completion, double pp, double cp)
{
	struct budget_ask a = { prompt, completion, 16, pp, cp, true };

	return a;
}

/* A request without max_tokens under a 300-token budget is sent with what fits, not refused. */
START_TEST(test_admit_shrinks_to_what_is_left)
{
	struct budgets *bs = budgets_new();
	struct budget_reservation *r;
	struct budget_refusal why;
	struct budget_ask a = ask(12, 4096, 0, 0);
	struct budget_state st;
	int64_t sent;

	add(bs, BUDGET_USER, 7, NULL, BUDGET_TOKENS, BUDGET_DAY, 300);
	ck_assert_int_eq(budgets_admit(bs, 7, NULL, NULL, "m", &a, true, T_2024_03_15, &r, &sent,
	    &why), BUDGET_RESERVED);
	ck_assert_ptr_nonnull(r);
	ck_assert_int_eq(sent, 288);
	st = status(bs, 0, T_2024_03_15);
	ck_assert(st.reserved == 300 && st.left == 0);
	budgets_settle(r, 12 + 288, 0, T_2024_03_15);
	/* nothing left: the prompt alone does not fit */
	ck_assert_int_eq(budgets_admit(bs, 7, NULL, NULL, "m", &a, true, T_2024_03_15, &r, &sent,
	    &why), BUDGET_REFUSED);
	ck_assert_ptr_null(r);
	ck_assert_int_eq(why.fit, -1);
	ck_assert_msg(strstr(why.message, "budget user:7 (tokens/day) has 0 tokens left, less than "
	    "the prompt alone (12 tokens)") != NULL, "%s", why.message);
	ck_assert(strstr(why.message, "exceeded") == NULL);
	/* another user is not under it */
	ck_assert_int_eq(budgets_admit(bs, 8, NULL, NULL, "m", &a, true, T_2024_03_15, &r, &sent,
	    &why), BUDGET_RESERVED);
	ck_assert_ptr_null(r);
	ck_assert_int_eq(sent, 4096);
	budgets_free(bs);
}
END_TEST

/* Under budget_min_reply, or where the budget says fit = refuse, it is refused with the largest fit. */
START_TEST(test_admit_refuses_what_is_too_small)
{
	struct budgets *bs = budgets_new();
	struct budget_reservation *r;
	struct budget_refusal why;
	struct budget_ask a = ask(20, 100, 0, 0);
	struct budget_def def;
	char cause[256];
	int64_t sent;

	add(bs, BUDGET_TAG, 0, "batch", BUDGET_TOKENS, BUDGET_EVER, 50);
	ck_assert_int_eq(budgets_admit(bs, 1, NULL, "batch", NULL, &a, true, 0, &r, &sent, &why),
	    BUDGET_RESERVED);
	ck_assert_int_eq(sent, 30);
	budgets_settle(r, 35, 0, 0);
	/* 15 left: 20 of prompt do not fit */
	ck_assert_int_eq(budgets_admit(bs, 1, NULL, "batch", NULL, &a, true, 0, &r, &sent, &why),
	    BUDGET_REFUSED);
	/* a smaller prompt leaves 5, under 16 */
	a.prompt = 10;
	ck_assert_int_eq(budgets_admit(bs, 1, NULL, "batch", NULL, &a, true, 0, &r, &sent, &why),
	    BUDGET_REFUSED);
	ck_assert_int_eq(why.fit, 5);
	ck_assert_msg(strstr(why.message, "budget tag:batch (tokens/ever) has 15 tokens left: the "
	    "largest max_tokens that fits is 5, under the 16 a reply needs (budget_min_reply)") != NULL,
	    "%s", why.message);
	/* asking for 5 or fewer is not shrinking */
	a.completion = 5;
	ck_assert_int_eq(budgets_admit(bs, 1, NULL, "batch", NULL, &a, true, 0, &r, &sent, &why),
	    BUDGET_RESERVED);
	ck_assert_int_eq(sent, 5);
	budgets_release(r);
	/* asking for 6 with min 16: the least worth sending is what was asked, 6: refused */
	a.completion = 6;
	ck_assert_int_eq(budgets_admit(bs, 1, NULL, "batch", NULL, &a, true, 0, &r, &sent, &why),
	    BUDGET_REFUSED);

	/* fit = refuse on the budget, or shrink false for budgets that do not say */
	memset(&def, 0, sizeof def);
	def.scope = BUDGET_MODEL;
	def.name = "big";
	def.unit = BUDGET_TOKENS;
	def.period = BUDGET_EVER;
	def.limit = 1000;
	def.fit = BUDGET_FIT_REFUSE;
	ck_assert_int_eq(budgets_add(bs, &def, cause, sizeof cause), 0);
	a = ask(100, 2000, 0, 0);
	ck_assert_int_eq(budgets_admit(bs, 1, NULL, NULL, "big", &a, true, 0, &r, &sent, &why),
	    BUDGET_REFUSED);
	ck_assert_int_eq(why.fit, 900);
	ck_assert_msg(strstr(why.message, "budget model:big (tokens/ever) has 1000 tokens left, 2100 "
	    "tokens needed, and refuses rather than shrink (fit is refuse): the largest max_tokens that fits "
	    "is 900") != NULL, "%s", why.message);
	a.completion = 900;
	ck_assert_int_eq(budgets_admit(bs, 1, NULL, NULL, "big", &a, true, 0, &r, &sent, &why),
	    BUDGET_RESERVED);
	budgets_release(r);
	add(bs, BUDGET_MODEL, 0, "small", BUDGET_TOKENS, BUDGET_EVER, 1000);
	a = ask(100, 2000, 0, 0);
	a.shrink = false;
	ck_assert_int_eq(budgets_admit(bs, 1, NULL, NULL, "small", &a, true, 0, &r, &sent, &why),
	    BUDGET_REFUSED);
	a.shrink = true;
	ck_assert_int_eq(budgets_admit(bs, 1, NULL, NULL, "small", &a, true, 0, &r, &sent, &why),
	    BUDGET_RESERVED);
	ck_assert_int_eq(sent, 900);
	budgets_release(r);
	budgets_free(bs);
}
END_TEST

/* What only requests in flight hold makes a request wait, not fail; without waiting it shrinks. */
START_TEST(test_admit_waits_for_reservations)
{
	struct budgets *bs = budgets_new();
	struct budget_reservation *first, *r;
	struct budget_refusal why;
	struct budget_ask a = ask(100, 800, 0, 0), b = ask(50, 450, 0, 0);
	int64_t sent;

	add(bs, BUDGET_ALL, 0, NULL, BUDGET_TOKENS, BUDGET_DAY, 1000);
	ck_assert_int_eq(budgets_admit(bs, 1, NULL, NULL, NULL, &a, true, T_2024_03_15, &first,
	    &sent, &why), BUDGET_RESERVED);
	ck_assert_int_eq(budgets_admit(bs, 1, NULL, NULL, NULL, &b, true, T_2024_03_15, &r, &sent,
	    &why), BUDGET_WAIT);
	ck_assert_ptr_null(r);
	/* not waiting: shrunk to what the first leaves (100 - 50 of prompt) */
	ck_assert_int_eq(budgets_admit(bs, 1, NULL, NULL, NULL, &b, false, T_2024_03_15, &r, &sent,
	    &why), BUDGET_RESERVED);
	ck_assert_int_eq(sent, 50);
	budgets_release(r);
	/* the first used 150: now it fits whole */
	budgets_settle(first, 150, 0, T_2024_03_15);
	ck_assert_int_eq(budgets_admit(bs, 1, NULL, NULL, NULL, &b, true, T_2024_03_15, &r, &sent,
	    &why), BUDGET_RESERVED);
	ck_assert_int_eq(sent, 450);
	budgets_release(r);
	/* without waiting and with too little left after those in flight, refused, saying so */
	ck_assert_int_eq(budgets_admit(bs, 1, NULL, NULL, NULL, &a, true, T_2024_03_15, &first,
	    &sent, &why), BUDGET_RESERVED);
	ck_assert_int_eq(sent, 750);
	ck_assert_int_eq(budgets_admit(bs, 1, NULL, NULL, NULL, &b, false, T_2024_03_15, &r, &sent,
	    &why), BUDGET_REFUSED);
	ck_assert_msg(strstr(why.message, "has 0 tokens left (after 850 tokens held by requests in flight)")
	    != NULL, "%s", why.message);
	budgets_release(first);
	budgets_free(bs);
}
END_TEST

/*
 * 50 requests at once against max_budget 0.5 at 1 per 1,000 tokens, each
 * worth 0.06 at worst and 0.02 in fact: waiting and shrinking spend nearly
 * all of it, and never more.
 */
START_TEST(test_admit_spends_to_the_last_token)
{
	struct budgets *bs = budgets_new();
	struct budget_reservation *held[50];
	int64_t sent[50];
	bool done[50] = { false };
	struct budget_refusal why;
	struct budget_ask a = ask(10, 50, 1.0, 1.0);
	struct budget_state st;
	int served = 0, refused = 0, round;
	double spent = 0;

	add(bs, BUDGET_ALL, 0, NULL, BUDGET_MONEY, BUDGET_EVER, 0.5);
	for (int i = 0; i < 50; i++)
		held[i] = NULL;
	for (round = 0; round < 100 && served + refused < 50; round++) {
		/* everyone waiting asks (again), in order */
		for (int i = 0; i < 50; i++) {
			if (done[i] || held[i] != NULL)
				continue;
			switch (budgets_admit(bs, 1, NULL, NULL, NULL, &a, true, 0, &held[i], &sent[i],
			    &why)) {
			case BUDGET_RESERVED:
				ck_assert_ptr_nonnull(held[i]);
				break;
			case BUDGET_WAIT:
				break;
			case BUDGET_REFUSED:
				done[i] = true;
				refused++;
				break;
			}
			st = status(bs, 0, 0);
			ck_assert(st.used + st.reserved <= 0.5 + 1e-12);
		}
		/* the oldest in flight ends, having used 10 + min(10, sent) tokens */
		for (int i = 0; i < 50; i++) {
			if (held[i] == NULL)
				continue;
			int64_t reply = sent[i] < 10 ? sent[i] : 10;
			budgets_settle(held[i], 10 + reply, (10.0 + (double)reply) / 1000.0, 0);
			spent += (10.0 + (double)reply) / 1000.0;
			held[i] = NULL;
			done[i] = true;
			served++;
			break;
		}
	}
	ck_assert_int_eq(served + refused, 50);
	st = status(bs, 0, 0);
	ck_assert(st.used <= 0.5 + 1e-12 && st.reserved == 0);
	ck_assert_msg(spent >= 0.85 * 0.5, "spent %g of 0.5 (%d served)", spent, served);
	budgets_free(bs);
}
END_TEST

/* Money rounds to billionths: the completion that fits is the largest whose cost fits. */
START_TEST(test_admit_money_fit_is_exact)
{
	struct budgets *bs = budgets_new();
	struct budget_reservation *r;
	struct budget_refusal why;
	struct budget_ask a = ask(333, 100000, 0.7, 2.1);
	struct budget_state st;
	int64_t sent;

	add(bs, BUDGET_USER, 9, NULL, BUDGET_MONEY, BUDGET_MONTH, 0.4998);
	ck_assert_int_eq(budgets_admit(bs, 9, NULL, NULL, NULL, &a, true, T_2024_03_15, &r, &sent,
	    &why), BUDGET_RESERVED);
	/* (333 * 0.7 + c * 2.1) / 1000 <= 0.4998, to the last billionth */
	ck_assert_int_eq(sent, 127);
	st = status(bs, 0, T_2024_03_15);
	ck_assert(st.reserved == 0.4998 && st.left == 0);
	budgets_release(r);
	/* a zero-priced model is never stopped by a money budget */
	a = ask(333, 100000, 0, 0);
	ck_assert_int_eq(budgets_admit(bs, 9, NULL, NULL, NULL, &a, false, T_2024_03_15, &r, &sent,
	    &why), BUDGET_RESERVED);
	ck_assert_int_eq(sent, 100000);
	budgets_release(r);
	budgets_free(bs);
}
END_TEST

/*
 * The server's count per local count, per upstream and model: a moving
 * average bounded 1.0 .. 2.0, reserved with twice its deviation, and 2.0
 * before anything is learnt.
 */
START_TEST(test_prompt_ratio)
{
	struct budget_ratios *rs = budget_ratios_new();

	ck_assert(budget_ratio(rs, "local", "qwen") == 2.0);
	ck_assert_int_eq(budget_ratio_learn(rs, "local", "qwen", 130, 100), 0);
	ck_assert(fabs(budget_ratio(rs, "local", "qwen") - (1.3 + 2 * 0.325)) < 1e-12);
	ck_assert_int_eq(budget_ratio_learn(rs, "local", "qwen", 110, 100), 0);
	ck_assert(fabs(budget_ratio(rs, "local", "qwen") - (1.25 + 2 * 0.29375)) < 1e-12);
	/* the same ratio again and again: the margin goes, the average stays */
	for (int i = 0; i < 60; i++)
		ck_assert_int_eq(budget_ratio_learn(rs, "local", "qwen", 125, 100), 0);
	ck_assert(fabs(budget_ratio(rs, "local", "qwen") - 1.25) < 1e-6);
	ck_assert(budget_ratio(rs, "local", "qwen") >= 1.25);
	/* apart per upstream and per model, and the key is not fooled by where the split falls */
	ck_assert(budget_ratio(rs, "local", "qwen2") == 2.0);
	ck_assert(budget_ratio(rs, "localq", "wen") == 2.0);
	ck_assert_int_eq(budget_ratio_learn(rs, "other", "qwen", 900, 100), 0);
	ck_assert(budget_ratio(rs, "other", "qwen") == 2.0);
	/* fewer than counted is 1.0: never reserve under the local count */
	ck_assert_int_eq(budget_ratio_learn(rs, "low", "m", 10, 100), 0);
	ck_assert(fabs(budget_ratio(rs, "low", "m") - 1.5) < 1e-12);
	/* nothing to learn from nothing */
	ck_assert_int_eq(budget_ratio_learn(rs, "none", "m", 0, 100), 0);
	ck_assert_int_eq(budget_ratio_learn(rs, "none", "m", 100, 0), 0);
	ck_assert(budget_ratio(rs, "none", "m") == 2.0);
	ck_assert_int_eq(budget_ratio_apply(1.25, 100), 125);
	ck_assert_int_eq(budget_ratio_apply(1.25, 101), 127);
	ck_assert_int_eq(budget_ratio_apply(1.0, 101), 101);
	ck_assert_int_eq(budget_ratio_apply(2.0, 0), 0);
	ck_assert_int_eq(budget_ratio_apply(2.0, INT64_MAX / 2 + 7), INT64_MAX);
	budget_ratios_free(rs);
	ck_assert(budget_ratio(NULL, "a", "b") == 2.0);
}
END_TEST

static Suite *
budget_suite(void)
{
	Suite *s = suite_create("budget");
	TCase *tc = tcase_create("core");

	tcase_add_test(tc, test_apply);
	tcase_add_test(tc, test_race_exactly_ten);
	tcase_add_test(tc, test_overshoot_by_one);
	tcase_add_test(tc, test_day_rollover);
	tcase_add_test(tc, test_month_rollover);
	tcase_add_test(tc, test_all_or_nothing);
	tcase_add_test(tc, test_zero_price_exhausted);
	tcase_add_test(tc, test_tokens_and_replay);
	tcase_add_test(tc, test_tokens_add_saturates);
	tcase_add_test(tc, test_add_validation);
	tcase_add_test(tc, test_carry_over_reload);
	tcase_add_test(tc, test_parse_names);
	tcase_add_test(tc, test_named_user);
	tcase_add_test(tc, test_claims);
	tcase_add_test(tc, test_claim_of);
	tcase_add_test(tc, test_claim_refusal);
	tcase_add_test(tc, test_admit_shrinks_to_what_is_left);
	tcase_add_test(tc, test_admit_refuses_what_is_too_small);
	tcase_add_test(tc, test_admit_waits_for_reservations);
	tcase_add_test(tc, test_admit_spends_to_the_last_token);
	tcase_add_test(tc, test_admit_money_fit_is_exact);
	tcase_add_test(tc, test_prompt_ratio);
	suite_add_tcase(s, tc);
	return s;
}

int
main(void)
{
	SRunner *sr = srunner_create(budget_suite());
	int failed;

	srunner_run_all(sr, CK_NORMAL);
	failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
