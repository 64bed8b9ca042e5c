/* The top op: the chats in flight, rates per model, queues per upstream, budgets. */
#include "config.h"

#include <stdlib.h>
#include <string.h>

#include "daemon/api.h"
#include "daemon/openllmd.h"

#define TOP_MAX_CHATS 500       /* chats listed at most; in_flight counts them all */

/* The entry of model in the models array, added when missing; NULL when full. */
static struct top_model *
top_model_get(struct top_result *t, size_t cap, const char *model)
{
	for (size_t i = 0; i < t->n_models; i++)
		if (strcmp(t->models[i].model, model) == 0)
			return &t->models[i];
	if (t->n_models == cap)
		return NULL;
	t->models[t->n_models].model = (char *)model;
	return &t->models[t->n_models++];
}

/* What top_chat_cb fills. */
struct top_fill {
	struct top_result *t;
	size_t cap;
	int64_t now;
	int64_t uid;                /* >= 0: that user's chats only (stats_visibility own) */
};

/* One row for chat c (and its model's rates), while there is room. */
static void
top_chat_cb(struct chat *c, void *arg)
{
	struct top_fill *f = arg;
	struct top_result *t = f->t;
	const char *model = c->model != NULL ? c->model : c->upstream->conf.model;
	int64_t tokens = chat_streamed(c);
	double secs = c->first_delta_ms >= 0 ? (double)(f->now - c->first_delta_ms) / 1000 : 0;
	double tps = tokens > 0 ? (double)tokens / (secs > 1 ? secs : 1) : 0;
	struct top_model *m;

	if (f->uid >= 0 && (c->user != NULL || (int64_t)c->uid != f->uid))
		return;
	if ((m = top_model_get(t, f->cap, model)) != NULL) {
		m->in_flight++;
		m->tokens_per_s += tps;
	}
	if (t->n_chats == f->cap)
		return;
	struct top_chat *tc = &t->chats[t->n_chats++];
	tc->id = c->id;
	tc->uid = c->uid;
	tc->model = (char *)model;
	tc->upstream = c->upstream->conf.name;
	tc->tag = c->req->u.chat.tag;
	tc->user = c->user;
	tc->state = c->queued ? "queued" : c->transfer == NULL && c->admitted ?
	    "retrying" : "running";
	tc->age_ms = f->now - c->started_ms;
	tc->tokens = tokens;
	tc->tokens_per_s = tps;
}

/*
 * One row per chat in flight (uid >= 0: that user's only): the msgpack
 * sessions' from the oldest on, then the HTTP front's.
 */
static void
top_fill_chats(struct server *srv, struct top_result *t, size_t cap, int64_t uid)
{
	struct top_fill f = { t, cap, now_mono_ms(), uid };
	struct session *s;
	struct chat *c;

	TAILQ_FOREACH(s, &srv->sessions, entry)
		TAILQ_FOREACH(c, &s->chats, entry)
			top_chat_cb(c, &f);
	api_foreach_chat(srv, top_chat_cb, &f);
}

/*
 * Answer a top request; strings are borrowed from the live state while it is
 * encoded. Under stats_visibility "own" a user other than root and the
 * daemon's own sees only their own chats, and the models' rates of those;
 * the counts in flight and queued are the machine's, as ping tells them.
 */
void
top_answer(struct session *s, struct request *req)
{
	struct server *srv = s->server;
	struct top_result *t;
	struct upstream *up;
	struct reply r;
	size_t cap = 0, n_up = 0;
	double max_budget, budget_left;

	message_reply_init(&r, REPLY_RESULT, OP_TOP);
	r.id = req->id;
	t = &r.u.result.u.top;
	t->uptime_s = (now_mono_ms() - srv->started_ms) / 1000;
	t->in_flight = srv->in_flight;
	cap = srv->in_flight > 0 ? (size_t)srv->in_flight : 1;
	if (cap > TOP_MAX_CHATS)
		cap = TOP_MAX_CHATS;
	TAILQ_FOREACH(up, &srv->upstreams, entry)
		n_up++;
	t->chats = calloc(cap, sizeof *t->chats);
	t->models = calloc(cap, sizeof *t->models);
	t->upstreams = calloc(n_up ? n_up : 1, sizeof *t->upstreams);
	if (t->chats == NULL || t->models == NULL || t->upstreams == NULL) {
		free(t->chats);
		free(t->models);
		free(t->upstreams);
		session_send_error(s, req->id, "internal", "out of memory");
		return;
	}
	top_fill_chats(srv, t, cap, dispatch_visible_uid(s));
	TAILQ_FOREACH(up, &srv->upstreams, entry) {
		struct limiter_stats ls;
		struct top_upstream *tu = &t->upstreams[t->n_upstreams++];

		limiter_stats(up->limiter, &ls);
		tu->name = up->conf.name;
		tu->healthy = up->healthy;
		tu->in_flight = (int64_t)ls.in_flight;
		tu->queued = (int64_t)ls.queued;
	}
	dispatch_fill_budgets(srv, dispatch_visible_uid(s), &t->budgets, &t->n_budgets,
	    &max_budget, &budget_left);
	session_send(s, &r);
	free(t->chats);
	free(t->models);
	free(t->upstreams);
	for (size_t i = 0; i < t->n_budgets; i++) {
		free(t->budgets[i].scope);
		free(t->budgets[i].unit);
		free(t->budgets[i].period);
	}
	free(t->budgets);
}
