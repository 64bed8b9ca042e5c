/* Prometheus counters of every chat, fed where each one ends (chat_finish), rendered for GET /metrics. */
#include "config.h"

#include <math.h>
#include <pwd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <event2/buffer.h>

#include "daemon/metrics.h"
#include "daemon/openllmd.h"

/* Requests, tokens and cost of one (model, user, tag, status). */
struct metrics_series {
	char *model;
	uint32_t uid;
	bool named;                 /* user is a named user's name, not uid's account name */
	char *user;
	char *tag;
	char *status;
	uint64_t requests;
	uint64_t prompt_tokens;
	uint64_t completion_tokens;
	double cost;
	struct metrics_series *next;
};

static const double metrics_buckets[] = {
	0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300
};
#define N_BUCKETS (sizeof metrics_buckets / sizeof metrics_buckets[0])

struct metrics_histogram {
	uint64_t counts[N_BUCKETS + 1];     /* the last: +Inf only */
	uint64_t n;
	double sum;
};

#define METRICS_MAX_SERIES 10000    /* past this, new label sets fold into "other" */
#define METRICS_MAX_MODELS 256      /* histograms kept per model; past this, "other" */

/* The time to the first token and the latency of one model's requests. */
struct metrics_model {
	char *model;
	struct metrics_histogram ttft, latency;
	struct metrics_model *next;
};

static struct metrics_series *metrics_list;
static size_t metrics_n;
static struct metrics_model *metrics_models;
static size_t metrics_n_models;

/* The name of a uid, or the uid in decimal. */
static char *
metrics_user_name(uint32_t uid)
{
	struct passwd *pw = getpwuid((uid_t)uid);
	char buf[16];

	if (pw != NULL)
		return strdup(pw->pw_name);
	snprintf(buf, sizeof buf, "%u", (unsigned)uid);
	return strdup(buf);
}

static bool
metrics_str_eq(const char *a, const char *b)
{
	return strcmp(a != NULL ? a : "", b != NULL ? b : "") == 0;
}

/* The series of a label set, created when new; NULL when memory runs out. */
static struct metrics_series *
metrics_series_get(const char *model, uint32_t uid, const char *named, const char *tag,
    const char *status)
{
	struct metrics_series *s;

	if (named != NULL && *named == '\0')
		named = NULL;

	if (metrics_n >= METRICS_MAX_SERIES) {
		model = "other";
		tag = "other";
	}
	for (s = metrics_list; s != NULL; s = s->next)
		if (s->uid == uid && s->named == (named != NULL) &&
		    (named == NULL || strcmp(s->user, named) == 0) &&
		    metrics_str_eq(s->model, model) && metrics_str_eq(s->tag, tag) &&
		    strcmp(s->status, status) == 0)
			return s;
	if ((s = calloc(1, sizeof *s)) == NULL)
		return NULL;
	s->model = strdup(model != NULL ? model : "");
	s->tag = strdup(tag != NULL ? tag : "");
	s->status = strdup(status);
	s->uid = uid;
	s->named = named != NULL;
	s->user = named != NULL ? strdup(named) : metrics_user_name(uid);
	if (s->model == NULL || s->tag == NULL || s->status == NULL || s->user == NULL) {
		free(s->model);
		free(s->tag);
		free(s->status);
		free(s->user);
		free(s);
		return NULL;
	}
	s->next = metrics_list;
	metrics_list = s;
	metrics_n++;
	return s;
}

static void
metrics_observe(struct metrics_histogram *h, double seconds)
{
	size_t i;

	for (i = 0; i < N_BUCKETS && seconds > metrics_buckets[i]; i++)
		;
	h->counts[i]++;
	h->n++;
	h->sum += seconds;
}

/* The histograms of a model, made when new; NULL when memory runs out. */
static struct metrics_model *
metrics_model_get(const char *model)
{
	struct metrics_model *m;

	if (metrics_n_models >= METRICS_MAX_MODELS)
		model = "other";
	for (m = metrics_models; m != NULL; m = m->next)
		if (strcmp(m->model, model) == 0)
			return m;
	if ((m = calloc(1, sizeof *m)) == NULL || (m->model = strdup(model)) == NULL) {
		free(m);
		return NULL;
	}
	m->next = metrics_models;
	metrics_models = m;
	metrics_n_models++;
	return m;
}

void
metrics_record(const struct metrics_event *e)
{
	const char *model = e->model != NULL && *e->model != '\0' ? e->model : "other";
	struct metrics_series *s = metrics_series_get(model, e->uid, e->user, e->tag, e->status);
	struct metrics_model *m = metrics_model_get(model);

	if (s != NULL) {
		s->requests++;
		s->prompt_tokens += e->prompt_tokens > 0 ? (uint64_t)e->prompt_tokens : 0;
		s->completion_tokens += e->completion_tokens > 0 ? (uint64_t)e->completion_tokens : 0;
		if (isfinite(e->cost) && e->cost > 0)
			s->cost += e->cost;
	}
	if (m != NULL && e->ttft_ms >= 0)
		metrics_observe(&m->ttft, (double)e->ttft_ms / 1000.0);
	if (m != NULL && e->latency_ms >= 0)
		metrics_observe(&m->latency, (double)e->latency_ms / 1000.0);
}

/* Append v as the shortest decimal that reads back as v (0.3255, not 0.32550000000000001). */
static void
metrics_number(struct evbuffer *out, double v)
{
	char buf[40];

	if (v == floor(v) && fabs(v) < 1e15) {
		evbuffer_add_printf(out, "%.0f", v);
		return;
	}
	for (int digits = 1; digits <= 17; digits++) {
		snprintf(buf, sizeof buf, "%.*g", digits, v);
		if (strtod(buf, NULL) == v)
			break;
	}
	evbuffer_add(out, buf, strlen(buf));
}

/* Append a label value escaped as the text format wants (\\, \", \n). */
static void
metrics_escape(struct evbuffer *out, const char *v)
{
	for (const char *p = v; *p != '\0'; p++) {
		if (*p == '\\')
			evbuffer_add(out, "\\\\", 2);
		else if (*p == '"')
			evbuffer_add(out, "\\\"", 2);
		else if (*p == '\n')
			evbuffer_add(out, "\\n", 2);
		else
			evbuffer_add(out, p, 1);
	}
}

static void
metrics_labels(struct evbuffer *out, const struct metrics_series *s)
{
	evbuffer_add_printf(out, "{model=\"");
	metrics_escape(out, s->model);
	evbuffer_add_printf(out, "\",user=\"");
	metrics_escape(out, s->user);
	evbuffer_add_printf(out, "\",tag=\"");
	metrics_escape(out, s->tag);
	evbuffer_add_printf(out, "\",status=\"");
	metrics_escape(out, s->status);
	evbuffer_add_printf(out, "\"}");
}

/* One histogram family with a series per model. */
static void
metrics_histogram_render(struct evbuffer *out, const char *name, const char *help, bool ttft)
{
	evbuffer_add_printf(out, "# HELP %s %s\n# TYPE %s histogram\n", name, help, name);
	for (const struct metrics_model *m = metrics_models; m != NULL; m = m->next) {
		const struct metrics_histogram *h = ttft ? &m->ttft : &m->latency;
		uint64_t cum = 0;
		for (size_t i = 0; i <= N_BUCKETS; i++) {
			cum += h->counts[i];
			evbuffer_add_printf(out, "%s_bucket{model=\"", name);
			metrics_escape(out, m->model);
			if (i < N_BUCKETS)
				evbuffer_add_printf(out, "\",le=\"%g\"} %llu\n", metrics_buckets[i],
				    (unsigned long long)cum);
			else
				evbuffer_add_printf(out, "\",le=\"+Inf\"} %llu\n", (unsigned long long)h->n);
		}
		evbuffer_add_printf(out, "%s_sum{model=\"", name);
		metrics_escape(out, m->model);
		evbuffer_add_printf(out, "\"} ");
		metrics_number(out, h->sum);
		evbuffer_add_printf(out, "\n%s_count{model=\"", name);
		metrics_escape(out, m->model);
		evbuffer_add_printf(out, "\"} %llu\n", (unsigned long long)h->n);
	}
}

/* One counter family over every series; which: 0 requests, 1 prompt, 2 completion, 3 cost. */
static void
metrics_family(struct evbuffer *out, const char *name, const char *help, int which)
{
	evbuffer_add_printf(out, "# HELP %s %s\n# TYPE %s counter\n", name, help, name);
	for (const struct metrics_series *s = metrics_list; s != NULL; s = s->next) {
		evbuffer_add_printf(out, "%s", name);
		metrics_labels(out, s);
		switch (which) {
		case 0:
			evbuffer_add_printf(out, " %llu\n", (unsigned long long)s->requests);
			break;
		case 1:
			evbuffer_add_printf(out, " %llu\n", (unsigned long long)s->prompt_tokens);
			break;
		case 2:
			evbuffer_add_printf(out, " %llu\n", (unsigned long long)s->completion_tokens);
			break;
		default:
			evbuffer_add(out, " ", 1);
			metrics_number(out, s->cost);
			evbuffer_add(out, "\n", 1);
			break;
		}
	}
}

void
metrics_render(struct server *srv, struct evbuffer *out)
{
	struct upstream *up;
	struct limiter_stats ls;
	size_t queued = 0;

	metrics_family(out, "openllmd_requests_total", "Chat and API requests by model, user, tag "
	    "and status.", 0);
	metrics_family(out, "openllmd_prompt_tokens_total", "Prompt tokens billed.", 1);
	metrics_family(out, "openllmd_completion_tokens_total", "Completion tokens billed.", 2);
	metrics_family(out, "openllmd_cost_total", "Cost billed, in the currency of the prices.", 3);
	TAILQ_FOREACH(up, &srv->upstreams, entry) {
		limiter_stats(up->limiter, &ls);
		queued += ls.queued;
	}
	evbuffer_add_printf(out, "# HELP openllmd_in_flight Requests started and not finished.\n"
	    "# TYPE openllmd_in_flight gauge\nopenllmd_in_flight %lld\n", (long long)srv->in_flight);
	evbuffer_add_printf(out, "# HELP openllmd_queued Requests waiting in an upstream's queue.\n"
	    "# TYPE openllmd_queued gauge\nopenllmd_queued %zu\n", queued);
	metrics_histogram_render(out, "openllmd_ttft_seconds", "Time to the first streamed token, "
	    "by model.", true);
	metrics_histogram_render(out, "openllmd_latency_seconds", "Time from admission to the end "
	    "of a request, by model.", false);
	evbuffer_add_printf(out, "# HELP openllmd_upstream_up Whether an upstream answers (1) or "
	    "not (0).\n# TYPE openllmd_upstream_up gauge\n");
	TAILQ_FOREACH(up, &srv->upstreams, entry) {
		evbuffer_add_printf(out, "openllmd_upstream_up{upstream=\"");
		metrics_escape(out, up->conf.name);
		evbuffer_add_printf(out, "\"} %d\n", up->healthy ? 1 : 0);
	}
	evbuffer_add_printf(out, "# HELP openllmd_budget_remaining What is left of a budget in its "
	    "period (money or tokens).\n# TYPE openllmd_budget_remaining gauge\n");
	for (size_t i = 0; srv->budgets != NULL && i < budgets_count(srv->budgets); i++) {
		struct budget_state st;
		char scope[300];
		if (budgets_get(srv->budgets, i, now_ms(), &st) == -1)
			continue;
		dispatch_budget_label(&st.def, scope, sizeof scope);
		evbuffer_add_printf(out, "openllmd_budget_remaining{scope=\"");
		metrics_escape(out, scope);
		evbuffer_add_printf(out, "\",unit=\"%s\",period=\"%s\"} ",
		    budget_unit_name(st.def.unit), budget_period_name(st.def.period));
		metrics_number(out, st.left);
		evbuffer_add(out, "\n", 1);
	}
}

void
metrics_free(void)
{
	struct metrics_series *s;
	struct metrics_model *m;

	while ((s = metrics_list) != NULL) {
		metrics_list = s->next;
		free(s->model);
		free(s->user);
		free(s->tag);
		free(s->status);
		free(s);
	}
	metrics_n = 0;
	while ((m = metrics_models) != NULL) {
		metrics_models = m->next;
		free(m->model);
		free(m);
	}
	metrics_n_models = 0;
}
