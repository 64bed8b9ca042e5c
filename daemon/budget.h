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
/* What to do with a request that does not fit what is left: the request's default, or this. */
enum budget_fit { BUDGET_FIT_DEFAULT, BUDGET_FIT_SHRINK, BUDGET_FIT_REFUSE };

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
	enum budget_fit fit;
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
#define BUDGET_FIT_UNKNOWN (-2)

/* Why a reservation was refused (or waits). */
struct budget_refusal {
	size_t index;               /* the budget that refused; BUDGET_INDEX_NONE: out of memory */
	struct budget_state budget;
	double needed;
	int64_t fit;                /* the largest max_tokens that fits it; -1: not the prompt; BUDGET_FIT_UNKNOWN */
	char message[512];          /* e.g. "budget tag:batch (tokens/day) has 40 tokens left, 500 needed" */
};

/*
 * What a request asks of the budgets (budgets_admit): its prompt as the
 * server will count it, the reply's length limit, and their prices. A
 * request that does not fit what a budget has left is shrunk to the largest
 * completion that fits, unless that is under min_completion or the budget
 * (or, for a budget that does not say, shrink false) refuses instead.
 */
struct budget_ask {
	int64_t prompt;             /* tokens */
	int64_t completion;         /* the reply's length limit: max_tokens, 0 for none (embeddings) */
	int64_t min_completion;     /* the shortest reply worth sending (budget_min_reply) */
	double prompt_price;        /* per 1,000 tokens */
	double completion_price;
	bool shrink;                /* budget_fit for budgets with BUDGET_FIT_DEFAULT */
};

enum budget_verdict {
	BUDGET_RESERVED,            /* held, with the completion that fits */
	BUDGET_WAIT,                /* fits what is left, not what requests in flight leave: ask again */
	BUDGET_REFUSED
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
enum budget_verdict budgets_admit(struct budgets *, uint32_t uid, const char *user,
    const char *tag, const char *model, const struct budget_ask *, bool may_wait,
    int64_t now_ms, struct budget_reservation **, int64_t *completion,
    struct budget_refusal *);
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
	enum budget_fit fit;        /* as configured */
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
struct budget_ask;
/* The largest completion of an ask that fits left of a claim's budget; -1: not the prompt. */
int64_t budget_claim_fit(const struct budget_claim *, int64_t left, const struct budget_ask *);
void budget_claim_refusal(const struct budget_claim *, int64_t used, int64_t reserved,
    const char *where, const struct budget_ask *, bool shrinks, struct budget_refusal *why);

/*
 * How many tokens a model's server counts for a prompt per token counted
 * here (its chat template, its tokenizer), per upstream and model: learnt
 * from every reply whose server reported usage, as a moving average bounded
 * to 1.0 .. 2.0, with the average deviation from it, as TCP keeps its round
 * trip time. A prompt is reserved as the local count times the average plus
 * twice the deviation (2.0 at most, and 2.0 before anything is learnt),
 * rounded up: a prompt counts as the server will count it, with the margin
 * its variation asks, so that a budget spent to its last token is not passed.
 */
#define BUDGET_RATIO_MIN 1.0
#define BUDGET_RATIO_MAX 2.0
#define BUDGET_RATIO_WEIGHT 0.25    /* of each new sample in the average and deviation */

struct budget_ratios;

struct budget_ratios *budget_ratios_new(void);
void budget_ratios_free(struct budget_ratios *);
/* The ratio to reserve with: average + 2 x deviation, bounded; BUDGET_RATIO_MAX before any. */
double budget_ratio(const struct budget_ratios *, const char *upstream, const char *model);
int budget_ratio_learn(struct budget_ratios *, const char *upstream, const char *model,
    int64_t reported, int64_t counted);
int64_t budget_ratio_apply(double ratio, int64_t counted);

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
int budget_fit_parse(const char *, enum budget_fit *);
const char *budget_scope_name(enum budget_scope);
const char *budget_unit_name(enum budget_unit);
const char *budget_period_name(enum budget_period);

#endif
