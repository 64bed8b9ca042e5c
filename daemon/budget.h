/* budget.c: money and token budgets with reservations, per period. */
#ifndef OLLM_BUDGET_H
#define OLLM_BUDGET_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/*
 * A budget caps the usage of everything (max_budget), of one uid, one named
 * user (an API key's user that is no system account), one tag or one model, in money or in tokens, over the current UTC day, UTC month, or
 * ever. Pure: no I/O; every call takes now_ms, wall-clock milliseconds since
 * the epoch (a clock stepped back never reopens a finished period).
 *
 * A request reserves its worst case (prompt + max_tokens, and their cost)
 * against every budget that applies, all or none, so that used + reserved
 * never exceeds a limit however many requests run at once; at its end the
 * reservation is settled to the real usage. Usage counts in the period in
 * which it is settled (the ledger stamps a record when the request ends); a
 * reservation made before a period rolls over stays reserved in the new one.
 * A reservation of nothing always fits: a zero-priced model is never stopped
 * by a money budget, even an exhausted one. Usage above the reservation (a
 * local estimate that fell short) is recorded as it is and may take a budget
 * past its limit; nothing more is then admitted against it.
 *
 * Money is kept in integer billionths, so reservations and settlements add
 * and cancel exactly.
 */

enum budget_scope { BUDGET_ALL, BUDGET_USER, BUDGET_TAG, BUDGET_MODEL };
enum budget_unit { BUDGET_MONEY, BUDGET_TOKENS };
enum budget_period { BUDGET_DAY, BUDGET_MONTH, BUDGET_EVER };

#define BUDGET_NAME_MAX 255
#define BUDGET_MONEY_MAX 1e9
#define BUDGET_TOKENS_MAX 9007199254740992.0    /* 2^53 */

struct budget_def {
	enum budget_scope scope;
	uint32_t uid;               /* BUDGET_USER, not named */
	bool named;                 /* BUDGET_USER: name is a named user (an API key's), not a uid */
	const char *name;           /* the tag, model or named user; for a uid, an optional label */
	enum budget_unit unit;
	enum budget_period period;
	double limit;               /* money, or a whole number of tokens */
};

/* One budget now; def.name points into the budget and lives as long as it. */
struct budget_state {
	struct budget_def def;
	double used;                /* in the current period */
	double reserved;
	double left;                /* limit - used - reserved, 0 at least */
	int64_t period_start_ms;    /* start of the current period; 0 for ever */
};

#define BUDGET_INDEX_NONE ((size_t)-1)

/* Why a reservation was refused. */
struct budget_refusal {
	size_t index;               /* the budget that refused; BUDGET_INDEX_NONE: out of memory */
	struct budget_state budget;
	double needed;
	char message[512];          /* e.g. "budget tag:batch (tokens/day) exceeded: 40 left, 500 needed" */
};

struct budgets;
struct budget_reservation;

struct budgets *budgets_new(void);
void budgets_free(struct budgets *);
int budgets_add(struct budgets *, const struct budget_def *, char *cause,
    size_t cause_len);
void budgets_carry(struct budgets *to, struct budgets *from);
size_t budgets_count(const struct budgets *);
int budgets_get(struct budgets *, size_t index, int64_t now_ms,
    struct budget_state *);
int budgets_set_used(struct budgets *, size_t index, double used,
    int64_t now_ms);
/* user: a named user (NULL or "": the request is uid's); a uid budget never counts it. */
void budgets_add_usage(struct budgets *, uint32_t uid, const char *user, const char *tag,
    const char *model, int64_t tokens, double cost, int64_t when_ms,
    int64_t now_ms);
bool budgets_apply(const struct budgets *, uint32_t uid, const char *user, const char *tag,
    const char *model);
int budgets_reserve(struct budgets *, uint32_t uid, const char *user, const char *tag,
    const char *model, int64_t tokens, double cost, int64_t now_ms,
    struct budget_reservation **, struct budget_refusal *);
void budgets_settle(struct budget_reservation *, int64_t tokens, double cost,
    int64_t now_ms);
void budgets_release(struct budget_reservation *);

/*
 * Fleet budgets (fleet.c): each budget that applies to a request is one
 * claim, named by a key that is the same on every node that configures the
 * budget ("tag:batch tokens/day", "user:1000 money/month", "all money/ever";
 * a user by uid, a named user by name: "user:alice tokens/day"), in the
 * period holding the time given. Amounts are the
 * budget's: tokens, or billionths of money.
 */
#define BUDGET_KEY_MAX (BUDGET_NAME_MAX + 48)

struct budget_claim {
	enum budget_scope scope;
	uint32_t uid;
	bool named;                 /* BUDGET_USER: name is a named user */
	enum budget_unit unit;
	enum budget_period period;
	double limit_def;           /* as configured */
	char name[BUDGET_NAME_MAX + 1];  /* the tag or model, or a user's label */
	char key[BUDGET_KEY_MAX];
	int64_t period_start_ms;
	int64_t limit;
	int64_t amount;
};

size_t budgets_claims(const struct budgets *, uint32_t uid, const char *user, const char *tag,
    const char *model, int64_t tokens, double cost, int64_t when_ms,
    struct budget_claim *out, size_t max);
int budgets_claim_of(const struct budgets *, size_t index, int64_t when_ms,
    struct budget_claim *out);
double budget_claim_value(const struct budget_claim *, int64_t amount);
void budget_claim_refusal(const struct budget_claim *, int64_t used, int64_t reserved,
    const char *where, struct budget_refusal *why);

/*
 * Add two token counts for a reservation or a usage total: a negative count
 * is 0 and the sum saturates at INT64_MAX instead of wrapping, so a hostile
 * max_tokens or a server's absurd usage can only ask for more, never less.
 */
int64_t budget_tokens_add(int64_t a, int64_t b);

int64_t budget_period_start(enum budget_period, int64_t now_ms);
int budget_scope_parse(const char *, enum budget_scope *);
int budget_unit_parse(const char *, enum budget_unit *);
int budget_period_parse(const char *, enum budget_period *);
const char *budget_scope_name(enum budget_scope);
const char *budget_unit_name(enum budget_unit);
const char *budget_period_name(enum budget_period);

#endif
