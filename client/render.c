/* render.c: what ollmctl prints: numbers, tables, usage lines and JSON. */
#include "config.h"

#include <sys/types.h>

#include <inttypes.h>
#include <langinfo.h>
#include <math.h>
#include <pwd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <jansson.h>

#include "client/ollmctl.h"

#define RENDER_COLUMNS 8
#define RENDER_CELL 64
#define RENDER_BAR_WIDTH 40      /* columns of the longest bar */

/* A table: a header row, then rows; column 0 left-aligned, the rest right. */
struct render_table {
	char (*cells)[RENDER_COLUMNS][RENDER_CELL];
	size_t rows;
	size_t cap;
	size_t cols;
};

/* Digits of v in groups of three: 1234567 -> "1,234,567". */
void
render_thousands(char *buf, size_t len, uint64_t v)
{
	char digits[24], out[32];
	size_t n, i, o = 0;

	n = (size_t)snprintf(digits, sizeof digits, "%" PRIu64, v);
	for (i = 0; i < n; i++) {
		if (i > 0 && (n - i) % 3 == 0)
			out[o++] = ',';
		out[o++] = digits[i];
	}
	out[o] = '\0';
	snprintf(buf, len, "%s", out);
}

/* Money with four decimals and grouped thousands: 12345.6 -> "12,345.6000". */
void
render_money(char *buf, size_t len, double v)
{
	char whole[32];
	double w, frac;
	unsigned int cents;
	const char *sign = "";

	if (!isfinite(v)) {
		snprintf(buf, len, "-");
		return;
	}
	if (v < 0) {
		sign = "-";
		v = -v;
	}
	/* Round to 1/10000 first so 0.99995 does not print as 0.10000. */
	v = floor(v * 10000 + 0.5) / 10000;
	w = floor(v);
	frac = v - w;
	cents = (unsigned int)floor(frac * 10000 + 0.5);
	if (cents >= 10000) {
		cents -= 10000;
		w += 1;
	}
	if (w >= 1e19) {
		snprintf(buf, len, "%s%.4e", sign, v);
		return;
	}
	render_thousands(whole, sizeof whole, (uint64_t)w);
	snprintf(buf, len, "%s%s.%04u", sign, whole, cents);
}

/* A length of time: "3d 4h", "2h 5m", "4m 10s", "12s". */
void
render_duration(char *buf, size_t len, int64_t s)
{
	if (s < 0)
		s = 0;
	if (s >= 86400)
		snprintf(buf, len, "%" PRId64 "d %" PRId64 "h", s / 86400, s % 86400 / 3600);
	else if (s >= 3600)
		snprintf(buf, len, "%" PRId64 "h %" PRId64 "m", s / 3600, s % 3600 / 60);
	else if (s >= 60)
		snprintf(buf, len, "%" PRId64 "m %" PRId64 "s", s / 60, s % 60);
	else
		snprintf(buf, len, "%" PRId64 "s", s);
}

/* An epoch time as "YYYY-MM-DD HH:MM:SS UTC". */
void
render_time(char *buf, size_t len, int64_t t)
{
	struct tm tm;
	time_t tt = (time_t)t;

	if (gmtime_r(&tt, &tm) == NULL || strftime(buf, len, "%Y-%m-%d %H:%M:%S UTC", &tm) == 0)
		snprintf(buf, len, "@%" PRId64, t);
}

/* One line about a failure: "budget exceeded: MESSAGE (retry after 2 s)". */
void
render_error(char *buf, size_t len, const struct ollm_error *e)
{
	const char *what = ollm_strerror(e->code);
	char extra[64] = "", status[16];
	size_t n;

	snprintf(status, sizeof status, "%d", e->status);
	if (e->code == OLLM_ERR_RATE_LIMITED && e->retry_after >= 0)
		snprintf(extra, sizeof extra, " (retry after %.0f s)", ceil(e->retry_after));
	else if (e->code == OLLM_ERR_UPSTREAM_ERROR && e->status >= 0 &&
	    strstr(e->message, status) == NULL)
		snprintf(extra, sizeof extra, " (HTTP %d)", e->status);
	n = strlen(what);
	if (e->message[0] == '\0' || strcmp(e->message, what) == 0 ||
	    (strncmp(e->message, what, n) == 0 && e->message[n] == ':'))
		snprintf(buf, len, "%s%s", e->message[0] != '\0' ? e->message : what, extra);
	else
		snprintf(buf, len, "%s: %s%s", what, e->message, extra);
}

/* The line /usage shows after a reply: tokens, cost and speed. */
void
render_usage(char *buf, size_t len, const struct ollm_done *d)
{
	char p[32], c[32], t[32], cost[40], speed[48] = "", ttft[48] = "";
	double secs;
	int64_t gen_ms;

	render_thousands(p, sizeof p, (uint64_t)(d->usage.prompt_tokens > 0 ? d->usage.prompt_tokens : 0));
	render_thousands(c, sizeof c, (uint64_t)(d->usage.completion_tokens > 0 ? d->usage.completion_tokens : 0));
	render_thousands(t, sizeof t, (uint64_t)(d->usage.total_tokens > 0 ? d->usage.total_tokens : 0));
	render_money(cost, sizeof cost, d->cost);
	if (d->latency_ms > 0 && d->usage.completion_tokens > 0) {
		/* Generation speed: from the first token to the end when known. */
		gen_ms = d->latency_ms;
		if (d->ttft_ms >= 0 && d->latency_ms > d->ttft_ms &&
		    d->usage.completion_tokens > 1)
			gen_ms = d->latency_ms - d->ttft_ms;
		secs = (double)gen_ms / 1000.0;
		snprintf(speed, sizeof speed, ", %.1f tokens/s", (double)d->usage.completion_tokens / secs);
	}
	if (d->ttft_ms >= 0)
		snprintf(ttft, sizeof ttft, ", first token %" PRId64 " ms", d->ttft_ms);
	snprintf(buf, len, "[%s prompt + %s completion = %s tokens%s, cost %s%s%s%s]",
	    p, c, t, d->usage.estimated ? " (estimated)" : "", cost, speed, ttft,
	    d->durable ? "" : "; not yet recorded by the daemon's ledger");
}

/* A user's name from a decimal uid key; "uid N" when unknown; a named user's key as it is. */
const char *
render_user(char *buf, size_t len, const char *key)
{
	struct passwd pw, *res = NULL;
	char pwbuf[1024];
	int64_t uid;

	if (*key == '\0' || strspn(key, "0123456789") != strlen(key)) {
		snprintf(buf, len, "%s", key);     /* a named user's: never all digits */
		return buf;
	}
	if (parse_int(key, 0, UINT32_MAX - 1, &uid) == 0 &&
	    getpwuid_r((uid_t)uid, &pw, pwbuf, sizeof pwbuf, &res) == 0 && res != NULL) {
		snprintf(buf, len, "%s", pw.pw_name);
		return buf;
	}
	snprintf(buf, len, "uid %s", key);
	return buf;
}

/* Add a row (ncells strings) to a table; rows that do not fit are dropped. */
static void
render_table_row(struct render_table *t, const char **cells, size_t ncells)
{
	void *p;
	size_t i, cap;

	if (t->rows == t->cap) {
		cap = t->cap == 0 ? 16 : t->cap * 2;
		if ((p = realloc(t->cells, cap * sizeof *t->cells)) == NULL)
			return;
		t->cells = p;
		t->cap = cap;
	}
	for (i = 0; i < RENDER_COLUMNS; i++)
		snprintf(t->cells[t->rows][i], RENDER_CELL, "%s", i < ncells ? cells[i] : "");
	if (ncells > t->cols)
		t->cols = ncells;
	t->rows++;
}

/* Print a table with columns as wide as their widest cell, then free it. */
static void
render_table_print(FILE *f, struct render_table *t)
{
	size_t w[RENDER_COLUMNS] = { 0 }, r, i, n;

	for (r = 0; r < t->rows; r++) {
		for (i = 0; i < t->cols; i++) {
			if ((n = strlen(t->cells[r][i])) > w[i])
				w[i] = n;
		}
	}
	for (r = 0; r < t->rows; r++) {
		for (i = 0; i < t->cols; i++) {
			if (i == 0)
				fprintf(f, "%-*s", (int)w[i], t->cells[r][i]);
			else
				fprintf(f, "  %*s", (int)w[i], t->cells[r][i]);
		}
		fputc('\n', f);
	}
	free(t->cells);
	memset(t, 0, sizeof *t);
}

/* A counters row labelled name. */
static void
render_counters_row(struct render_table *t, const char *name, const struct ollm_counters *c)
{
	char v[7][RENDER_CELL];
	const char *cells[8];

	render_thousands(v[0], sizeof v[0], c->requests);
	render_thousands(v[1], sizeof v[1], c->errors);
	render_thousands(v[2], sizeof v[2], c->prompt_tokens);
	render_thousands(v[3], sizeof v[3], c->completion_tokens);
	render_thousands(v[4], sizeof v[4], c->total_tokens);
	render_thousands(v[5], sizeof v[5], c->estimated);
	render_money(v[6], sizeof v[6], c->cost);
	cells[0] = name;
	cells[1] = v[0];
	cells[2] = v[1];
	cells[3] = v[2];
	cells[4] = v[3];
	cells[5] = v[4];
	cells[6] = v[5];
	cells[7] = v[6];
	render_table_row(t, cells, 8);
}

/* The header row of a counters table. */
static void
render_counters_header(struct render_table *t, const char *what)
{
	const char *cells[8] = { what, "requests", "errors", "prompt", "completion",
	    "total", "estimated", "cost" };

	render_table_row(t, cells, 8);
}

/* Order breakdown rows: most tokens first, then by key. */
static int
render_cmp_tokens(const void *a, const void *b)
{
	const struct ollm_counters_entry *x = a, *y = b;

	if (x->c.total_tokens != y->c.total_tokens)
		return x->c.total_tokens > y->c.total_tokens ? -1 : 1;
	if (x->c.requests != y->c.requests)
		return x->c.requests > y->c.requests ? -1 : 1;
	return strcmp(x->key, y->key);
}

/* Order day rows by date. */
static int
render_cmp_key(const void *a, const void *b)
{
	const struct ollm_counters_entry *x = a, *y = b;

	return strcmp(x->key, y->key);
}

/* One breakdown as its own table, after a blank line; nothing when empty. */
static void
render_breakdown(FILE *f, const char *what, const struct ollm_counters_map *m,
    int by_date, int users)
{
	struct render_table t = { NULL, 0, 0, 0 };
	struct ollm_counters_entry *e;
	char name[RENDER_CELL];
	size_t i;

	if (m->n == 0)
		return;
	if ((e = malloc(m->n * sizeof *e)) == NULL)
		return;
	memcpy(e, m->entries, m->n * sizeof *e);
	qsort(e, m->n, sizeof *e, by_date ? render_cmp_key : render_cmp_tokens);
	render_counters_header(&t, what);
	for (i = 0; i < m->n; i++) {
		if (users)
			render_user(name, sizeof name, e[i].key);
		else if (e[i].key[0] == '\0')
			snprintf(name, sizeof name, "(none)");
		else
			snprintf(name, sizeof name, "%s", e[i].key);
		render_counters_row(&t, name, &e[i].c);
	}
	free(e);
	fputc('\n', f);
	render_table_print(f, &t);
}

/* Whether the locale's characters are UTF-8 (block characters can be drawn). */
int
render_utf8(void)
{
	const char *cs = nl_langinfo(CODESET);

	return cs != NULL && (strcmp(cs, "UTF-8") == 0 || strcmp(cs, "utf8") == 0);
}

/*
 * Tokens per day as horizontal bars after a blank line, the longest
 * RENDER_BAR_WIDTH columns: Unicode blocks in eighths when utf8, else '#'.
 */
void
render_day_chart(FILE *f, const struct ollm_counters_map *m, int utf8)
{
	static const char *const eighths[] = { "", "\u258F", "\u258E", "\u258D",
	    "\u258C", "\u258B", "\u258A", "\u2589" };
	struct ollm_counters_entry *e;
	uint64_t most = 0;
	char num[32];
	size_t i, j, units, keyw = 0;

	if (m->n == 0)
		return;
	if ((e = malloc(m->n * sizeof *e)) == NULL)
		return;
	memcpy(e, m->entries, m->n * sizeof *e);
	qsort(e, m->n, sizeof *e, render_cmp_key);
	for (i = 0; i < m->n; i++) {
		if (e[i].c.total_tokens > most)
			most = e[i].c.total_tokens;
		if (strlen(e[i].key) > keyw)
			keyw = strlen(e[i].key);
	}
	fprintf(f, "\nTokens per day (UTC)\n");
	for (i = 0; i < m->n; i++) {
		/* In eighths of a column, rounded; a day with any tokens shows something. */
		units = most == 0 ? 0 : (size_t)((long double)e[i].c.total_tokens *
		    RENDER_BAR_WIDTH * 8 / most + 0.5L);
		if (units == 0 && e[i].c.total_tokens > 0)
			units = 1;
		fprintf(f, "%-*s  ", (int)keyw, e[i].key);
		if (utf8) {
			for (j = 0; j < units / 8; j++)
				fputs("\u2588", f);
			fputs(eighths[units % 8], f);
		} else {
			for (j = 0; j < (units + 4) / 8; j++)
				fputc('#', f);
			if ((units + 4) / 8 == 0 && units > 0)
				fputc('.', f);
		}
		render_thousands(num, sizeof num, e[i].c.total_tokens);
		fprintf(f, " %s\n", num);
	}
	free(e);
}

/* The stats as tables: totals, then the breakdowns, then the budgets. */
void
render_stats(FILE *f, const struct ollm_stats *s, const char *by)
{
	struct render_table t = { NULL, 0, 0, 0 };
	char since[64], a[64], b[64], c[64];
	size_t i;

	if (s->since > 0) {
		render_time(since, sizeof since, s->since);
		fprintf(f, "Usage since %s\n\n", since);
	} else
		fprintf(f, "Usage since the ledger began\n\n");
	render_counters_header(&t, "");
	render_counters_row(&t, "total", &s->total);
	render_table_print(f, &t);

	if (by == NULL || strcmp(by, "model") == 0)
		render_breakdown(f, "model", &s->by_model, 0, 0);
	if (by == NULL || strcmp(by, "user") == 0)
		render_breakdown(f, "user", &s->by_user, 0, 1);
	if (by == NULL || strcmp(by, "tag") == 0)
		render_breakdown(f, "tag", &s->by_tag, 0, 0);
	if (by != NULL && strcmp(by, "day") == 0) {
		render_breakdown(f, "day (UTC)", &s->by_day, 1, 0);
		render_day_chart(f, &s->by_day, render_utf8());
	}
	if (s->by_node.n > 0)
		render_breakdown(f, "node", &s->by_node, 0, 0);

	fputc('\n', f);
	if (s->has_max_budget) {
		render_money(a, sizeof a, s->max_budget);
		render_money(b, sizeof b, s->budget_left);
		fprintf(f, "Budget: %s, left %s\n", a, b);
	} else if (s->n_budgets == 0)
		fprintf(f, "Budget: none\n");
	for (i = 0; i < s->n_budgets; i++) {
		/* max_budget is also the budget "all" in money for ever: shown once. */
		if (s->has_max_budget && strcmp(s->budgets[i].scope, "all") == 0 &&
		    strcmp(s->budgets[i].unit, "money") == 0 &&
		    strcmp(s->budgets[i].period, "ever") == 0 &&
		    s->budgets[i].limit == s->max_budget)
			continue;
		if (strcmp(s->budgets[i].unit, "money") == 0) {
			render_money(a, sizeof a, s->budgets[i].used);
			render_money(b, sizeof b, s->budgets[i].limit);
			render_money(c, sizeof c, s->budgets[i].left);
		} else {
			render_thousands(a, sizeof a, (uint64_t)fmax(0, s->budgets[i].used));
			render_thousands(b, sizeof b, (uint64_t)fmax(0, s->budgets[i].limit));
			render_thousands(c, sizeof c, (uint64_t)fmax(0, s->budgets[i].left));
		}
		fprintf(f, "Budget %s (%s per %s): used %s of %s, left %s\n",
		    s->budgets[i].scope, s->budgets[i].unit, s->budgets[i].period, a, b, c);
	}
}

/* Counters as a JSON object. */
static json_t *
render_counters_json(const struct ollm_counters *c)
{
	return json_pack("{s:I, s:I, s:I, s:I, s:I, s:I, s:f}",
	    "requests", (json_int_t)c->requests,
	    "errors", (json_int_t)c->errors,
	    "prompt_tokens", (json_int_t)c->prompt_tokens,
	    "completion_tokens", (json_int_t)c->completion_tokens,
	    "total_tokens", (json_int_t)c->total_tokens,
	    "estimated", (json_int_t)c->estimated,
	    "cost", c->cost);
}

/* A counters map as a JSON object keyed as the daemon keys it. */
static json_t *
render_map_json(const struct ollm_counters_map *m)
{
	json_t *o;
	size_t i;

	if ((o = json_object()) == NULL)
		return NULL;
	for (i = 0; i < m->n; i++) {
		if (json_object_set_new(o, m->entries[i].key,
		    render_counters_json(&m->entries[i].c)) != 0) {
			json_decref(o);
			return NULL;
		}
	}
	return o;
}

/* The stats in the shape of the stats op, as JSON on f; -1 on failure. */
int
render_stats_json(FILE *f, const struct ollm_stats *s)
{
	json_t *root, *budgets, *b;
	size_t i;
	int r;

	budgets = json_array();
	for (i = 0; budgets != NULL && i < s->n_budgets; i++) {
		b = json_pack("{s:s, s:s, s:s, s:f, s:f, s:f}",
		    "scope", s->budgets[i].scope, "unit", s->budgets[i].unit,
		    "period", s->budgets[i].period, "limit", s->budgets[i].limit,
		    "used", s->budgets[i].used, "left", s->budgets[i].left);
		if (b == NULL || json_array_append_new(budgets, b) != 0) {
			json_decref(budgets);
			budgets = NULL;
		}
	}
	root = json_pack("{s:I, s:o, s:o, s:o, s:o, s:o, s:o, s:o, s:o}",
	    "since", (json_int_t)s->since,
	    "total", render_counters_json(&s->total),
	    "by_model", render_map_json(&s->by_model),
	    "by_user", render_map_json(&s->by_user),
	    "by_tag", render_map_json(&s->by_tag),
	    "by_day", render_map_json(&s->by_day),
	    "max_budget", s->has_max_budget ? json_real(s->max_budget) : json_null(),
	    "budget_left", s->has_max_budget ? json_real(s->budget_left) : json_null(),
	    "budgets", budgets);
	if (root == NULL)
		return -1;
	if (s->by_node.n > 0 && json_object_set_new(root, "by_node", render_map_json(&s->by_node)) != 0) {
		json_decref(root);
		return -1;
	}
	r = json_dumpf(root, f, JSON_INDENT(2) | JSON_REAL_PRECISION(15));
	json_decref(root);
	if (r != 0)
		return -1;
	fputc('\n', f);
	return 0;
}

/* The upstreams and their models. */
void
render_models(FILE *f, const struct ollm_models *m)
{
	const struct ollm_upstream *u;
	size_t i, j;

	if (m->n == 0)
		fprintf(f, "no upstreams configured\n");
	for (i = 0; i < m->n; i++) {
		u = &m->upstreams[i];
		fprintf(f, "%s  %s  %s, %" PRId64 " in flight\n", u->name, u->base_url,
		    u->healthy ? "healthy" : "unhealthy", u->in_flight);
		if (u->model != NULL)
			fprintf(f, "  default model: %s\n", u->model);
		if (u->n_models > 0) {
			fprintf(f, "  serves:");
			for (j = 0; j < u->n_models; j++)
				fprintf(f, "%s %s", j > 0 ? "," : "", u->models[j]);
			fputc('\n', f);
		}
	}
}

/* The upstreams as the models op's JSON on f; -1 on failure. */
int
render_models_json(FILE *f, const struct ollm_models *m)
{
	json_t *root, *ups, *u, *names;
	size_t i, j;
	int r;

	if ((ups = json_array()) == NULL)
		return -1;
	for (i = 0; i < m->n; i++) {
		const struct ollm_upstream *x = &m->upstreams[i];

		if ((names = json_array()) == NULL) {
			json_decref(ups);
			return -1;
		}
		for (j = 0; j < x->n_models; j++)
			json_array_append_new(names, json_string(x->models[j]));
		u = json_pack("{s:s, s:s, s:o, s:b, s:I, s:o}", "name", x->name,
		    "base_url", x->base_url,
		    "model", x->model != NULL ? json_string(x->model) : json_null(),
		    "healthy", x->healthy, "in_flight", (json_int_t)x->in_flight,
		    "models", names);
		if (u == NULL || json_array_append_new(ups, u) != 0) {
			json_decref(ups);
			return -1;
		}
	}
	if ((root = json_pack("{s:o}", "upstreams", ups)) == NULL)
		return -1;
	r = json_dumpf(root, f, JSON_INDENT(2));
	json_decref(root);
	if (r != 0)
		return -1;
	fputc('\n', f);
	return 0;
}

/* One line about a waiting chat: "waiting for rpm, 5.8 s", "retrying 2/5: connection refused". */
void
render_status(char *buf, size_t len, const struct ollm_status *st)
{
	const char *reason = st->reason != NULL && *st->reason != '\0' ? st->reason : "?";

	if (strcmp(st->state, "retrying") == 0) {
		if (st->attempt > 0 && st->of > 0)
			snprintf(buf, len, "retrying %d/%d: %s", st->attempt, st->of, reason);
		else
			snprintf(buf, len, "retrying: %s", reason);
		if (st->wait_s >= 0)
			snprintf(buf + strlen(buf), len - strlen(buf), " (in %.1f s)", st->wait_s);
	} else if (strcmp(st->state, "queued") == 0) {
		if (strcmp(reason, "concurrency") == 0)
			snprintf(buf, len, "waiting for a free slot (concurrency)");
		else if (strcmp(reason, "queue") == 0)
			snprintf(buf, len, "waiting in the queue");
		else
			snprintf(buf, len, "waiting for %s", reason);
		if (st->wait_s >= 0)
			snprintf(buf + strlen(buf), len - strlen(buf), ", %.1f s", st->wait_s);
	} else
		snprintf(buf, len, "%s: %s", st->state, st->message != NULL ? st->message : reason);
}
