/* Budgets: limits on money or tokens per scope and period, with reservations. */
#include "config.h"

#include <inttypes.h>
#include <math.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "daemon/budget.h"

#define BUDGET_MONEY_SCALE      1e9             /* money is kept in billionths */
#define BUDGET_AMOUNT_MAX       ((int64_t)1 << 62)
#define BUDGET_DAY_MS           INT64_C(86400000)

/*
 * One budget. It is shared, counted by refs: by the set that lists it and by
 * every reservation against it, so a reservation can be settled after a
 * reload replaced or dropped the set.
 */
struct budget {
	unsigned int refs;
	enum budget_scope scope;
	uint32_t uid;
	bool named;                 /* BUDGET_USER: name is a named user, not uid */
	char *name;
	enum budget_unit unit;
	enum budget_period period;
	enum budget_fit fit;
	double limit_def;           /* as configured */
	int64_t limit;              /* amounts: tokens, or billionths of money */
	int64_t used;
	int64_t reserved;
	int64_t period_start;       /* ms; INT64_MIN until first used */
};

struct budgets {
	struct budget **v;
	size_t n;
};

struct budget_reservation {
	size_t n;
	struct {
		struct budget *b;
		int64_t amount;
	} items[];
};

static const char *budget_scope_names[] = { "all", "user", "tag", "model" };
static const char *budget_unit_names[] = { "money", "tokens" };
static const char *budget_period_names[] = { "day", "month", "ever" };
static const char *budget_fit_names[] = { "default", "shrink", "refuse" };

/* Add two non-negative amounts, saturating at BUDGET_AMOUNT_MAX. */
static int64_t
budget_sat_add(int64_t a, int64_t b)
{
	if (a > BUDGET_AMOUNT_MAX - b)
		return BUDGET_AMOUNT_MAX;
	return a + b;
}

/* Add two token counts, negatives as 0, saturating at INT64_MAX. */
int64_t
budget_tokens_add(int64_t a, int64_t b)
{
	if (a < 0)
		a = 0;
	if (b < 0)
		b = 0;
	if (a > INT64_MAX - b)
		return INT64_MAX;
	return a + b;
}

/* A token count from the caller as an amount. */
static int64_t
budget_tokens_amount(int64_t tokens)
{
	if (tokens < 0)
		return 0;
	return tokens > BUDGET_AMOUNT_MAX ? BUDGET_AMOUNT_MAX : tokens;
}

/* Money from the caller as an amount of billionths (negative or NaN: 0). */
static int64_t
budget_money_amount(double money)
{
	double v;

	if (!(money > 0))
		return 0;
	v = money * BUDGET_MONEY_SCALE;
	if (v >= (double)BUDGET_AMOUNT_MAX)
		return BUDGET_AMOUNT_MAX;
	return (int64_t)(v + 0.5);
}

/* A count of tokens given as a double (a sum from the ledger) as an amount. */
static int64_t
budget_count_amount(double count)
{
	if (!(count > 0))
		return 0;
	if (count >= (double)BUDGET_AMOUNT_MAX)
		return BUDGET_AMOUNT_MAX;
	return (int64_t)(count + 0.5);
}

/* What a request of tokens and cost amounts to in budget b's unit. */
static int64_t
budget_amount(const struct budget *b, int64_t tokens, double cost)
{
	if (b->unit == BUDGET_TOKENS)
		return budget_tokens_amount(tokens);
	return budget_money_amount(cost);
}

/* An amount of budget b's unit as a number for people. */
static double
budget_value(const struct budget *b, int64_t amount)
{
	if (b->unit == BUDGET_TOKENS)
		return (double)amount;
	return (double)amount / BUDGET_MONEY_SCALE;
}

/* Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's days_from_civil). */
static int64_t
budget_days_from_civil(int64_t y, int m, int d)
{
	int64_t era, yoe, doy, doe;

	y -= m <= 2;
	era = (y >= 0 ? y : y - 399) / 400;
	yoe = y - era * 400;
	doy = (153 * (m + (m > 2 ? -3 : 9)) + 2) / 5 + d - 1;
	doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
	return era * 146097 + doe - 719468;
}

/* Year and month of a day counted from 1970-01-01 (civil_from_days). */
static void
budget_civil_from_days(int64_t z, int64_t *year, int *month)
{
	int64_t era, doe, yoe, doy, mp;

	z += 719468;
	era = (z >= 0 ? z : z - 146096) / 146097;
	doe = z - era * 146097;
	yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
	doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
	mp = (5 * doy + 2) / 153;
	*month = (int)(mp < 10 ? mp + 3 : mp - 9);
	*year = yoe + era * 400 + (*month <= 2);
}

/* Start (epoch ms) of the UTC day, UTC month, or 0 for ever, that holds now_ms. */
int64_t
budget_period_start(enum budget_period period, int64_t now_ms)
{
	int64_t days, year;
	int month;

	if (period == BUDGET_EVER)
		return 0;
	days = now_ms / BUDGET_DAY_MS;
	if (now_ms % BUDGET_DAY_MS < 0)
		days--;
	if (period == BUDGET_MONTH) {
		budget_civil_from_days(days, &year, &month);
		days = budget_days_from_civil(year, month, 1);
	}
	return days * BUDGET_DAY_MS;
}

/* Move budget b to the period holding now: a new period starts with no usage. */
static void
budget_roll(struct budget *b, int64_t now_ms)
{
	int64_t start = budget_period_start(b->period, now_ms);

	if (b->period_start == INT64_MIN || start > b->period_start) {
		if (b->period_start != INT64_MIN)
			b->used = 0;
		b->period_start = start;
	}
}

/* Drop a reference to budget b, freeing it with the last. */
static void
budget_unref(struct budget *b)
{
	if (--b->refs > 0)
		return;
	free(b->name);
	free(b);
}

/* Whether budget b counts a request of uid or named user, tag and model. */
static int
budget_applies(const struct budget *b, uint32_t uid, const char *user, const char *tag,
    const char *model)
{
	bool named = user != NULL && *user != '\0';

	switch (b->scope) {
	case BUDGET_ALL:
		return 1;
	case BUDGET_USER:
		if (b->named)
			return named && strcmp(b->name, user) == 0;
		return !named && b->uid == uid;
	case BUDGET_TAG:
		return tag != NULL && strcmp(b->name, tag) == 0;
	case BUDGET_MODEL:
		return model != NULL && strcmp(b->name, model) == 0;
	}
	return 0;
}

/* Whether any budget counts a request of uid or named user, tag and model. */
bool
budgets_apply(const struct budgets *bs, uint32_t uid, const char *user, const char *tag,
    const char *model)
{
	size_t i;

	for (i = 0; i < bs->n; i++)
		if (budget_applies(bs->v[i], uid, user, tag, model))
			return true;
	return false;
}

/* Whether two budgets count the same thing the same way (a reload keeps its state). */
static int
budget_same(const struct budget *a, const struct budget *b)
{
	if (a->scope != b->scope || a->unit != b->unit || a->period != b->period)
		return 0;
	switch (a->scope) {
	case BUDGET_ALL:
		return 1;
	case BUDGET_USER:
		if (a->named || b->named)
			return a->named && b->named && strcmp(a->name, b->name) == 0;
		return a->uid == b->uid;
	case BUDGET_TAG:
	case BUDGET_MODEL:
		return strcmp(a->name, b->name) == 0;
	}
	return 0;
}

/* Fill st with budget b's state at now. */
static void
budget_status_fill(struct budget *b, int64_t now_ms, struct budget_state *st)
{
	int64_t left;

	budget_roll(b, now_ms);
	memset(st, 0, sizeof *st);
	st->def.scope = b->scope;
	st->def.uid = b->uid;
	st->def.named = b->named;
	st->def.name = b->name;
	st->def.unit = b->unit;
	st->def.period = b->period;
	st->def.fit = b->fit;
	st->def.limit = b->limit_def;
	st->used = budget_value(b, b->used);
	st->reserved = budget_value(b, b->reserved);
	left = b->limit - b->used - b->reserved;
	st->left = left > 0 ? budget_value(b, left) : 0;
	st->period_start_ms = b->period_start;
}

/* Write "scope:who" for budget b into buf, e.g. "user:1000", "tag:batch", "all". */
static void
budget_describe(const struct budget *b, char *buf, size_t len)
{
	switch (b->scope) {
	case BUDGET_ALL:
		snprintf(buf, len, "all");
		break;
	case BUDGET_USER:
		if (b->name != NULL)
			snprintf(buf, len, "user:%s", b->name);
		else
			snprintf(buf, len, "user:%u", b->uid);
		break;
	case BUDGET_TAG:
	case BUDGET_MODEL:
		snprintf(buf, len, "%s:%s", budget_scope_names[b->scope], b->name);
		break;
	}
}

/* Create an empty set of budgets. */
struct budgets *
budgets_new(void)
{
	return calloc(1, sizeof (struct budgets));
}

/* Free a set. Budgets with reservations in flight live on until those are settled. */
void
budgets_free(struct budgets *bs)
{
	size_t i;

	if (bs == NULL)
		return;
	for (i = 0; i < bs->n; i++)
		budget_unref(bs->v[i]);
	free(bs->v);
	free(bs);
}

/*
 * Validate a budget and add it to the set; its index is the number of budgets
 * added before it. The name is copied. Two budgets of the same scope, who,
 * unit and period are refused.
 */
int
budgets_add(struct budgets *bs, const struct budget_def *def, char *cause,
    size_t cause_len)
{
	struct budget *b, **v;
	size_t i, len = 0;

	if ((unsigned int)def->scope > BUDGET_MODEL) {
		snprintf(cause, cause_len, "unknown budget scope");
		return -1;
	}
	if ((unsigned int)def->unit > BUDGET_TOKENS) {
		snprintf(cause, cause_len, "unknown budget unit");
		return -1;
	}
	if ((unsigned int)def->period > BUDGET_EVER) {
		snprintf(cause, cause_len, "unknown budget period");
		return -1;
	}
	if ((unsigned int)def->fit > BUDGET_FIT_REFUSE) {
		snprintf(cause, cause_len, "unknown budget fit");
		return -1;
	}
	if (def->name != NULL)
		len = strlen(def->name);
	if ((def->scope == BUDGET_TAG || def->scope == BUDGET_MODEL ||
	    (def->scope == BUDGET_USER && def->named)) && len == 0) {
		snprintf(cause, cause_len, "a %s budget needs a name",
		    budget_scope_names[def->scope]);
		return -1;
	}
	if (len > BUDGET_NAME_MAX) {
		snprintf(cause, cause_len, "budget name longer than %d bytes",
		    BUDGET_NAME_MAX);
		return -1;
	}
	if (!isfinite(def->limit) || def->limit < 0) {
		snprintf(cause, cause_len, "budget limit must be a number >= 0");
		return -1;
	}
	if (def->unit == BUDGET_MONEY && def->limit > BUDGET_MONEY_MAX) {
		snprintf(cause, cause_len, "money budget limit above %g",
		    BUDGET_MONEY_MAX);
		return -1;
	}
	if (def->unit == BUDGET_TOKENS && (def->limit > BUDGET_TOKENS_MAX ||
	    def->limit != (double)(int64_t)def->limit)) {
		snprintf(cause, cause_len,
		    "token budget limit must be a whole number up to 2^53");
		return -1;
	}

	if ((b = calloc(1, sizeof *b)) == NULL)
		goto nomem;
	b->refs = 1;
	b->scope = def->scope;
	b->uid = def->scope == BUDGET_USER && !def->named ? def->uid : 0;
	b->named = def->scope == BUDGET_USER && def->named;
	if (def->scope != BUDGET_ALL && len > 0 &&
	    (b->name = strdup(def->name)) == NULL) {
		free(b);
		goto nomem;
	}
	b->unit = def->unit;
	b->period = def->period;
	b->fit = def->fit;
	b->limit_def = def->limit;
	if (def->unit == BUDGET_TOKENS)
		b->limit = (int64_t)def->limit;
	else
		b->limit = budget_money_amount(def->limit);
	b->period_start = INT64_MIN;

	for (i = 0; i < bs->n; i++) {
		if (budget_same(bs->v[i], b)) {
			snprintf(cause, cause_len, "duplicate budget");
			budget_unref(b);
			return -1;
		}
	}
	if ((v = reallocarray(bs->v, bs->n + 1, sizeof *v)) == NULL) {
		budget_unref(b);
		goto nomem;
	}
	bs->v = v;
	bs->v[bs->n++] = b;
	return 0;

nomem:
	snprintf(cause, cause_len, "out of memory");
	return -1;
}

/*
 * After a reload: each budget of to that counts the same thing as one of
 * from (scope, who, unit, period) takes over its usage and reservations in
 * flight, keeping its new limit. Then from can be freed.
 */
void
budgets_carry(struct budgets *to, struct budgets *from)
{
	struct budget *old;
	size_t i, j;

	for (i = 0; i < to->n; i++) {
		for (j = 0; j < from->n; j++) {
			old = from->v[j];
			if (old == to->v[i] || !budget_same(old, to->v[i]))
				continue;
			old->limit_def = to->v[i]->limit_def;
			old->limit = to->v[i]->limit;
			old->fit = to->v[i]->fit;
			budget_unref(to->v[i]);
			old->refs++;
			to->v[i] = old;
			break;
		}
	}
}

/* How many budgets the set has. */
size_t
budgets_count(const struct budgets *bs)
{
	return bs->n;
}

/* Describe budget index as it stands at now_ms (for stats). */
int
budgets_get(struct budgets *bs, size_t index, int64_t now_ms,
    struct budget_state *st)
{
	if (index >= bs->n)
		return -1;
	budget_status_fill(bs->v[index], now_ms, st);
	return 0;
}

/*
 * Set the usage of budget index in its current period (at now_ms), as summed
 * by the caller from the ledger's records of that period.
 */
int
budgets_set_used(struct budgets *bs, size_t index, double used, int64_t now_ms)
{
	struct budget *b;

	if (index >= bs->n)
		return -1;
	b = bs->v[index];
	budget_roll(b, now_ms);
	if (b->unit == BUDGET_TOKENS)
		b->used = budget_count_amount(used);
	else
		b->used = budget_money_amount(used);
	return 0;
}

/*
 * Count one ledger record (finished at when_ms) into every budget it applies
 * to whose current period at now_ms holds when_ms: the replay at start.
 */
void
budgets_add_usage(struct budgets *bs, uint32_t uid, const char *user, const char *tag,
    const char *model, int64_t tokens, double cost, int64_t when_ms,
    int64_t now_ms)
{
	struct budget *b;
	size_t i;

	for (i = 0; i < bs->n; i++) {
		b = bs->v[i];
		if (!budget_applies(b, uid, user, tag, model))
			continue;
		budget_roll(b, now_ms);
		if (budget_period_start(b->period, when_ms) != b->period_start)
			continue;
		b->used = budget_sat_add(b->used, budget_amount(b, tokens, cost));
	}
}

/*
 * Reserve tokens (prompt + max_tokens) and cost (their worst-case price)
 * against every budget that applies to uid (or to the named user, when user
 * is neither NULL nor ""), tag and model (tag and model may be NULL), all or
 * none. Returns 0 with *out set (NULL when no budget applies), or -1 with
 * why filled: the first budget that could not take it.
 */
int
budgets_reserve(struct budgets *bs, uint32_t uid, const char *user, const char *tag,
    const char *model, int64_t tokens, double cost, int64_t now_ms,
    struct budget_reservation **out, struct budget_refusal *why)
{
	struct budget_reservation *r;
	struct budget *b;
	int64_t amount, left;
	size_t i, n = 0;
	char who[BUDGET_NAME_MAX + 16];

	*out = NULL;
	memset(why, 0, sizeof *why);
	why->fit = BUDGET_FIT_UNKNOWN;
	for (i = 0; i < bs->n; i++) {
		b = bs->v[i];
		if (!budget_applies(b, uid, user, tag, model))
			continue;
		budget_roll(b, now_ms);
		amount = budget_amount(b, tokens, cost);
		left = b->limit - b->used - b->reserved;
		if (amount > 0 && amount > left) {
			why->index = i;
			budget_status_fill(b, now_ms, &why->budget);
			why->needed = budget_value(b, amount);
			budget_describe(b, who, sizeof who);
			if (b->unit == BUDGET_TOKENS)
				snprintf(why->message, sizeof why->message,
				    "budget %s (tokens/%s) exceeded: %" PRId64
				    " left, %" PRId64 " needed", who,
				    budget_period_names[b->period],
				    left > 0 ? left : 0, amount);
			else
				snprintf(why->message, sizeof why->message,
				    "budget %s (money/%s) exceeded: %.6g left, "
				    "%.6g needed", who,
				    budget_period_names[b->period],
				    why->budget.left, why->needed);
			return -1;
		}
		n++;
	}
	if (n == 0)
		return 0;

	r = malloc(sizeof *r + n * sizeof r->items[0]);
	if (r == NULL) {
		why->index = BUDGET_INDEX_NONE;
		snprintf(why->message, sizeof why->message, "out of memory");
		return -1;
	}
	r->n = 0;
	for (i = 0; i < bs->n; i++) {
		b = bs->v[i];
		if (!budget_applies(b, uid, user, tag, model))
			continue;
		amount = budget_amount(b, tokens, cost);
		b->reserved += amount;
		b->refs++;
		r->items[r->n].b = b;
		r->items[r->n].amount = amount;
		r->n++;
	}
	*out = r;
	return 0;
}

/* What a request asking completion tokens amounts to in a unit. */
static int64_t
budget_ask_amount(enum budget_unit unit, const struct budget_ask *a, int64_t completion)
{
	if (unit == BUDGET_TOKENS)
		return budget_tokens_amount(budget_tokens_add(a->prompt, completion));
	return budget_money_amount(((double)(a->prompt > 0 ? a->prompt : 0) * a->prompt_price +
	    (double)completion * a->completion_price) / 1000.0);
}

/* Whether a request asking completion tokens fits room, in a unit; nothing always fits. */
static bool
budget_ask_fits(enum budget_unit unit, const struct budget_ask *a, int64_t completion,
    int64_t room)
{
	int64_t amount = budget_ask_amount(unit, a, completion);

	return amount == 0 || amount <= room;
}

/* The largest completion up to the one asked that fits room, in a unit; -1: not even none. */
static int64_t
budget_ask_fit(enum budget_unit unit, const struct budget_ask *a, int64_t room)
{
	int64_t lo = 0, hi = a->completion > 0 ? a->completion : 0, mid;

	if (!budget_ask_fits(unit, a, 0, room))
		return -1;
	if (budget_ask_fits(unit, a, hi, room))
		return hi;
	/* lo fits, hi does not: amounts grow with the completion */
	while (hi - lo > 1) {
		mid = lo + (hi - lo) / 2;
		if (budget_ask_fits(unit, a, mid, room))
			lo = mid;
		else
			hi = mid;
	}
	return lo;
}


/* Whether budget b shrinks a request that does not fit rather than refuse it. */
static bool
budget_shrinks(const struct budget *b, const struct budget_ask *a)
{
	return b->fit == BUDGET_FIT_DEFAULT ? a->shrink : b->fit == BUDGET_FIT_SHRINK;
}

/* Write a refusal's message, cut if it must be. */
static void __attribute__((format(printf, 2, 3)))
budget_message(struct budget_refusal *why, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(why->message, sizeof why->message, fmt, ap);
	va_end(ap);
}

/* A value of a unit as people read it: "40 tokens", "0.0125". */
static void
budget_format(enum budget_unit unit, int64_t amount, char *buf, size_t len)
{
	if (unit == BUDGET_TOKENS)
		snprintf(buf, len, "%" PRId64 " tokens", amount);
	else
		snprintf(buf, len, "%.6g", (double)amount / BUDGET_MONEY_SCALE);
}

/*
 * Write why's message, one sentence: the budget (who, unit, period), what it
 * has left (room, where: "" or " across the fleet"; held: what requests in
 * flight hold, when it was counted), and for an ask the largest max_tokens
 * that fits (fit) and why that does not do.
 */
static void
budget_refusal_text(struct budget_refusal *why, const char *who, enum budget_unit unit,
    enum budget_period period, int64_t room, int64_t held, const char *where,
    const struct budget_ask *a, int64_t fit, bool shrinks)
{
	char left[64], need[64], prompt[64], tail[200];

	char at[80];

	snprintf(at, sizeof at, "%s%s", where[0] != '\0' ? " " : "", where);
	where = at;
	budget_format(unit, room > 0 ? room : 0, left, sizeof left);
	if (held > 0) {
		char h[64];
		budget_format(unit, held, h, sizeof h);
		snprintf(tail, sizeof tail, " (after %s held by requests in flight)", h);
	} else
		tail[0] = '\0';
	if (a == NULL) {
		budget_message(why, "budget %s (%s/%s) has %s left%s%s", who, budget_unit_names[unit],
		    budget_period_names[period], left, where, tail);
		return;
	}
	budget_format(unit, budget_ask_amount(unit, a, a->completion), need, sizeof need);
	budget_format(unit, budget_ask_amount(unit, a, 0), prompt, sizeof prompt);
	if (fit < 0)
		budget_message(why, "budget %s (%s/%s) has %s left%s%s, less than the prompt alone "
		    "(%s)", who, budget_unit_names[unit], budget_period_names[period], left, where, tail,
		    prompt);
	else if (!shrinks)
		budget_message(why, "budget %s (%s/%s) has %s left%s%s, %s needed, and refuses rather "
		    "than shrink (fit is refuse): the largest max_tokens that fits is %" PRId64, who,
		    budget_unit_names[unit], budget_period_names[period], left, where, tail, need, fit);
	else if (fit < (a->min_completion < a->completion ? a->min_completion : a->completion))
		budget_message(why, "budget %s (%s/%s) has %s left%s%s: the largest max_tokens that "
		    "fits is %" PRId64 ", under the %" PRId64 " a reply needs (budget_min_reply)", who,
		    budget_unit_names[unit], budget_period_names[period], left, where, tail, fit,
		    a->min_completion < a->completion ? a->min_completion : a->completion);
	else
		budget_message(why, "budget %s (%s/%s) has %s left%s%s: the largest max_tokens that "
		    "fits is %" PRId64, who, budget_unit_names[unit], budget_period_names[period], left,
		    where, tail, fit);
}

/*
 * Fill why for budget index i of bs, which stops a request: room is what it
 * has left for the request (in flight counted or not), fit the largest
 * completion that fits it.
 */
static void
budget_admit_refusal(struct budgets *bs, size_t i, const struct budget_ask *a, int64_t room,
    int64_t fit, bool in_flight_counted, int64_t now_ms, struct budget_refusal *why)
{
	struct budget *b = bs->v[i];
	char who[BUDGET_NAME_MAX + 16];

	why->index = i;
	budget_status_fill(b, now_ms, &why->budget);
	why->needed = budget_value(b, budget_ask_amount(b->unit, a, a->completion));
	why->fit = fit;
	budget_describe(b, who, sizeof who);
	budget_refusal_text(why, who, b->unit, b->period, room, in_flight_counted ? b->reserved : 0,
	    "", a, fit, budget_shrinks(b, a));
}

/*
 * Admit a request asking a (prompt, completion and prices) against every
 * budget that applies to uid (or the named user), tag and model, all or
 * none.
 *
 * A request that fits what each budget has left (limit - used) is reserved
 * when requests in flight leave room for it, else BUDGET_WAIT: it may be
 * asked again once they settle. One that does not fit what is left is
 * shrunk to the largest completion that fits every budget, when each
 * budget it does not fit shrinks and that completion is at least
 * min_completion (or all that was asked); else BUDGET_REFUSED with why. With
 * may_wait false, what requests in flight hold counts as used: the request
 * is shrunk to what they leave, or refused, never told to wait.
 *
 * BUDGET_RESERVED sets *out (NULL when no budget applies) and *completion,
 * the limit reserved: the one to send.
 */
enum budget_verdict
budgets_admit(struct budgets *bs, uint32_t uid, const char *user, const char *tag,
    const char *model, const struct budget_ask *a, bool may_wait, int64_t now_ms,
    struct budget_reservation **out, int64_t *completion, struct budget_refusal *why)
{
	struct budget_reservation *r;
	struct budget *b;
	int64_t asked = a->completion > 0 ? a->completion : 0, want = asked, fit, room;
	int64_t least = a->min_completion < asked ? a->min_completion : asked;
	size_t i, n = 0;

	*out = NULL;
	*completion = asked;
	memset(why, 0, sizeof *why);
	if (least < 0)
		least = 0;
	for (i = 0; i < bs->n; i++) {
		b = bs->v[i];
		if (!budget_applies(b, uid, user, tag, model))
			continue;
		n++;
		budget_roll(b, now_ms);
		room = b->limit - b->used - (may_wait ? 0 : b->reserved);
		if (budget_ask_fits(b->unit, a, asked, room))
			continue;
		fit = budget_ask_fit(b->unit, a, room);
		if (fit < least || !budget_shrinks(b, a)) {
			budget_admit_refusal(bs, i, a, room, fit, !may_wait, now_ms, why);
			return BUDGET_REFUSED;
		}
		if (fit < want)
			want = fit;
	}
	if (n == 0)
		return BUDGET_RESERVED;
	for (i = 0; i < bs->n; i++) {
		b = bs->v[i];
		if (!budget_applies(b, uid, user, tag, model))
			continue;
		room = b->limit - b->used - b->reserved;
		if (!budget_ask_fits(b->unit, a, want, room)) {
			/* only with may_wait: without it, room was this already */
			fit = budget_ask_fit(b->unit, a, room);
			budget_admit_refusal(bs, i, a, room, fit, true, now_ms, why);
			return BUDGET_WAIT;
		}
	}
	if ((r = malloc(sizeof *r + n * sizeof r->items[0])) == NULL) {
		why->index = BUDGET_INDEX_NONE;
		snprintf(why->message, sizeof why->message, "out of memory");
		return BUDGET_REFUSED;
	}
	r->n = 0;
	for (i = 0; i < bs->n; i++) {
		b = bs->v[i];
		if (!budget_applies(b, uid, user, tag, model))
			continue;
		r->items[r->n].amount = budget_ask_amount(b->unit, a, want);
		b->reserved += r->items[r->n].amount;
		b->refs++;
		r->items[r->n].b = b;
		r->n++;
	}
	*out = r;
	*completion = want;
	return BUDGET_RESERVED;
}

/*
 * End a reservation with the real usage (tokens and cost), counted in the
 * period holding now_ms, and free it. NULL is a no-op.
 */
void
budgets_settle(struct budget_reservation *r, int64_t tokens, double cost,
    int64_t now_ms)
{
	struct budget *b;
	size_t i;

	if (r == NULL)
		return;
	for (i = 0; i < r->n; i++) {
		b = r->items[i].b;
		b->reserved -= r->items[i].amount;
		budget_roll(b, now_ms);
		b->used = budget_sat_add(b->used, budget_amount(b, tokens, cost));
		budget_unref(b);
	}
	free(r);
}

/* End a reservation that used nothing (the request never reached the model). */
void
budgets_release(struct budget_reservation *r)
{
	struct budget *b;
	size_t i;

	if (r == NULL)
		return;
	for (i = 0; i < r->n; i++) {
		b = r->items[i].b;
		b->reserved -= r->items[i].amount;
		budget_unref(b);
	}
	free(r);
}

/* Write the fleet key of budget b: "scope[:who] unit/period", a user by uid. */
static void
budget_key(const struct budget *b, char *buf, size_t len)
{
	const char *unit = budget_unit_names[b->unit], *period = budget_period_names[b->period];

	switch (b->scope) {
	case BUDGET_ALL:
		snprintf(buf, len, "all %s/%s", unit, period);
		break;
	case BUDGET_USER:
		if (b->named)
			snprintf(buf, len, "user:%s %s/%s", b->name, unit, period);
		else
			snprintf(buf, len, "user:%u %s/%s", (unsigned)b->uid, unit, period);
		break;
	case BUDGET_TAG:
	case BUDGET_MODEL:
		snprintf(buf, len, "%s:%s %s/%s", budget_scope_names[b->scope], b->name, unit, period);
		break;
	}
}

/* Fill cl with budget b's claim, amount 0, in the period holding when_ms. */
static void
budget_claim_fill(const struct budget *b, int64_t when_ms, struct budget_claim *cl)
{
	memset(cl, 0, sizeof *cl);
	cl->scope = b->scope;
	cl->uid = b->uid;
	cl->named = b->named;
	cl->unit = b->unit;
	cl->period = b->period;
	cl->limit_def = b->limit_def;
	cl->fit = b->fit;
	if (b->name != NULL)
		snprintf(cl->name, sizeof cl->name, "%s", b->name);
	budget_key(b, cl->key, sizeof cl->key);
	cl->period_start_ms = budget_period_start(b->period, when_ms);
	cl->limit = b->limit;
}

/*
 * Fill out (up to max) with a claim per budget that applies to uid (or the
 * named user, when user is neither NULL nor ""), tag and model: tokens and
 * cost as amounts, in the period holding when_ms. Returns how many. Pure: no
 * budget's state changes.
 */
size_t
budgets_claims(const struct budgets *bs, uint32_t uid, const char *user, const char *tag,
    const char *model, int64_t tokens, double cost, int64_t when_ms, struct budget_claim *out,
    size_t max)
{
	const struct budget *b;
	struct budget_claim *cl;
	size_t i, n = 0;

	for (i = 0; i < bs->n && n < max; i++) {
		b = bs->v[i];
		if (!budget_applies(b, uid, user, tag, model))
			continue;
		cl = &out[n++];
		budget_claim_fill(b, when_ms, cl);
		cl->amount = budget_amount(b, tokens, cost);
	}
	return n;
}

/* The claim of budget index (amount 0) in the period holding when_ms; -1 past the end. */
int
budgets_claim_of(const struct budgets *bs, size_t index, int64_t when_ms, struct budget_claim *out)
{
	if (index >= bs->n)
		return -1;
	budget_claim_fill(bs->v[index], when_ms, out);
	return 0;
}

/* An amount of a claim's unit as a number for people. */
double
budget_claim_value(const struct budget_claim *cl, int64_t amount)
{
	return cl->unit == BUDGET_TOKENS ? (double)amount : (double)amount / BUDGET_MONEY_SCALE;
}

int64_t
budget_claim_fit(const struct budget_claim *cl, int64_t left, const struct budget_ask *a)
{
	return budget_ask_fit(cl->unit, a, left);
}

/*
 * Fill why for a claim refused elsewhere (where: e.g. "across the fleet"),
 * used and reserved being what the budget held there; with the request's
 * ask, the largest max_tokens that fits and whether shrinking could do (a
 * NULL ask: fit unknown). why->budget.def.name points into the claim.
 */
void
budget_claim_refusal(const struct budget_claim *cl, int64_t used, int64_t reserved,
    const char *where, const struct budget_ask *a, bool shrinks, struct budget_refusal *why)
{
	int64_t left = cl->limit - used - reserved;
	char who[BUDGET_NAME_MAX + 16];

	memset(why, 0, sizeof *why);
	if (left < 0)
		left = 0;
	why->index = 0;
	why->fit = a != NULL ? budget_claim_fit(cl, left, a) : BUDGET_FIT_UNKNOWN;
	why->budget.def.scope = cl->scope;
	why->budget.def.uid = cl->uid;
	why->budget.def.named = cl->named;
	why->budget.def.name = cl->name[0] != '\0' ? cl->name : NULL;
	why->budget.def.unit = cl->unit;
	why->budget.def.period = cl->period;
	why->budget.def.limit = cl->limit_def;
	why->budget.used = budget_claim_value(cl, used);
	why->budget.reserved = budget_claim_value(cl, reserved);
	why->budget.left = budget_claim_value(cl, left);
	why->budget.period_start_ms = cl->period_start_ms;
	why->needed = budget_claim_value(cl, cl->amount);
	switch (cl->scope) {
	case BUDGET_ALL:
		snprintf(who, sizeof who, "all");
		break;
	case BUDGET_USER:
		if (cl->name[0] != '\0')
			snprintf(who, sizeof who, "user:%s", cl->name);
		else
			snprintf(who, sizeof who, "user:%u", (unsigned)cl->uid);
		break;
	default:
		snprintf(who, sizeof who, "%s:%s", budget_scope_names[cl->scope], cl->name);
		break;
	}
	budget_refusal_text(why, who, cl->unit, cl->period, left, 0, where, a, why->fit, shrinks);
}

/* Look s up in a table of n names. */
static int
budget_lookup(const char *const *names, int n, const char *s)
{
	int i;

	for (i = 0; i < n; i++) {
		if (s != NULL && strcmp(names[i], s) == 0)
			return i;
	}
	return -1;
}

/* Parse "all", "user", "tag" or "model". */
int
budget_scope_parse(const char *s, enum budget_scope *out)
{
	int i = budget_lookup(budget_scope_names, 4, s);

	if (i == -1)
		return -1;
	*out = (enum budget_scope)i;
	return 0;
}

/* Parse "money" or "tokens". */
int
budget_unit_parse(const char *s, enum budget_unit *out)
{
	int i = budget_lookup(budget_unit_names, 2, s);

	if (i == -1)
		return -1;
	*out = (enum budget_unit)i;
	return 0;
}

/* Parse "day", "month" or "ever". */
int
budget_fit_parse(const char *s, enum budget_fit *out)
{
	int i = budget_lookup(budget_fit_names + 1, 2, s);

	if (i == -1)
		return -1;
	*out = (enum budget_fit)(i + 1);
	return 0;
}

int
budget_period_parse(const char *s, enum budget_period *out)
{
	int i = budget_lookup(budget_period_names, 3, s);

	if (i == -1)
		return -1;
	*out = (enum budget_period)i;
	return 0;
}

/* The configuration name of a scope. */
const char *
budget_scope_name(enum budget_scope scope)
{
	if ((unsigned int)scope > BUDGET_MODEL)
		return "?";
	return budget_scope_names[scope];
}

/* The configuration name of a unit. */
const char *
budget_unit_name(enum budget_unit unit)
{
	if ((unsigned int)unit > BUDGET_TOKENS)
		return "?";
	return budget_unit_names[unit];
}

/* The configuration name of a period. */
const char *
budget_period_name(enum budget_period period)
{
	if ((unsigned int)period > BUDGET_EVER)
		return "?";
	return budget_period_names[period];
}

/* --- prompt ratios ---------------------------------------------------------- */

/* The ratio of one upstream and model: "upstream\0model" as its key. */
struct budget_ratio_entry {
	char *key;
	size_t key_len;
	double mean;                /* moving average of the samples */
	double dev;                 /* moving average of their distance from it */
};

struct budget_ratios {
	struct budget_ratio_entry *v;
	size_t n;
};

struct budget_ratios *
budget_ratios_new(void)
{
	return calloc(1, sizeof (struct budget_ratios));
}

void
budget_ratios_free(struct budget_ratios *rs)
{
	if (rs == NULL)
		return;
	for (size_t i = 0; i < rs->n; i++)
		free(rs->v[i].key);
	free(rs->v);
	free(rs);
}

/* The entry of upstream and model, or NULL. */
static struct budget_ratio_entry *
budget_ratio_find(const struct budget_ratios *rs, const char *upstream, const char *model)
{
	size_t ul = strlen(upstream), ml = strlen(model);

	for (size_t i = 0; i < rs->n; i++) {
		struct budget_ratio_entry *e = &rs->v[i];
		if (e->key_len == ul + 1 + ml && memcmp(e->key, upstream, ul + 1) == 0 &&
		    memcmp(e->key + ul + 1, model, ml) == 0)
			return e;
	}
	return NULL;
}

double
budget_ratio(const struct budget_ratios *rs, const char *upstream, const char *model)
{
	const struct budget_ratio_entry *e;
	double r;

	if (rs == NULL || upstream == NULL || model == NULL ||
	    (e = budget_ratio_find(rs, upstream, model)) == NULL)
		return BUDGET_RATIO_MAX;
	r = e->mean + 2 * e->dev;
	return r > BUDGET_RATIO_MAX ? BUDGET_RATIO_MAX : r;
}

/*
 * Learn from a reply: the server counted reported prompt tokens where this
 * side counted counted. Nothing is learnt from a count of 0 on either side.
 * -1 when memory runs out (the ratio is then unchanged).
 */
int
budget_ratio_learn(struct budget_ratios *rs, const char *upstream, const char *model,
    int64_t reported, int64_t counted)
{
	struct budget_ratio_entry *e, *v;
	double sample;
	size_t ul, ml;

	if (rs == NULL || upstream == NULL || model == NULL || reported <= 0 || counted <= 0)
		return 0;
	sample = (double)reported / (double)counted;
	if (sample < BUDGET_RATIO_MIN)
		sample = BUDGET_RATIO_MIN;
	if (sample > BUDGET_RATIO_MAX)
		sample = BUDGET_RATIO_MAX;
	if ((e = budget_ratio_find(rs, upstream, model)) != NULL) {
		e->dev += BUDGET_RATIO_WEIGHT * (fabs(sample - e->mean) - e->dev);
		e->mean += BUDGET_RATIO_WEIGHT * (sample - e->mean);
		return 0;
	}
	if ((v = reallocarray(rs->v, rs->n + 1, sizeof *v)) == NULL)
		return -1;
	rs->v = v;
	e = &rs->v[rs->n];
	ul = strlen(upstream);
	ml = strlen(model);
	if ((e->key = malloc(ul + 1 + ml + 1)) == NULL)
		return -1;
	memcpy(e->key, upstream, ul + 1);
	memcpy(e->key + ul + 1, model, ml + 1);
	e->key_len = ul + 1 + ml;
	e->mean = sample;
	e->dev = sample / 4;        /* unsure of one sample */
	rs->n++;
	return 0;
}

/* A local prompt count corrected by ratio, rounded up. */
int64_t
budget_ratio_apply(double ratio, int64_t counted)
{
	double v;

	if (counted <= 0)
		return 0;
	if (!(ratio > BUDGET_RATIO_MIN))
		return counted;
	if (ratio > BUDGET_RATIO_MAX)
		ratio = BUDGET_RATIO_MAX;
	v = ceil((double)counted * ratio - 1e-9);
	return v >= 9.2e18 ? INT64_MAX : (int64_t)v;
}
