/* Budgets: limits on money or tokens per scope and period, with reservations. */
#include "config.h"

#include <inttypes.h>
#include <math.h>
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

/*
 * Fill why for a claim refused elsewhere (where: e.g. "across the fleet"),
 * used and reserved being what the budget held there. why->budget.def.name
 * points into the claim.
 */
void
budget_claim_refusal(const struct budget_claim *cl, int64_t used, int64_t reserved,
    const char *where, struct budget_refusal *why)
{
	int64_t left = cl->limit - used - reserved;
	char who[BUDGET_NAME_MAX + 16];

	memset(why, 0, sizeof *why);
	if (left < 0)
		left = 0;
	why->index = 0;
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
	if (cl->unit == BUDGET_TOKENS)
		snprintf(why->message, sizeof why->message, "budget %s (tokens/%s) exceeded %s: %"
		    PRId64 " left, %" PRId64 " needed", who, budget_period_names[cl->period], where,
		    left, cl->amount);
	else
		snprintf(why->message, sizeof why->message, "budget %s (money/%s) exceeded %s: "
		    "%.6g left, %.6g needed", who, budget_period_names[cl->period], where,
		    why->budget.left, why->needed);
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
