/* Op name -> handler: every request but chat is answered here at once. */
#include "config.h"

#include <errno.h>
#include <math.h>
#include <pwd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "daemon/fleet.h"
#include "daemon/ledger.h"
#include "daemon/log.h"
#include "daemon/openllmd.h"
#include "daemon/tokenizer.h"

/* The tokenizer called name, loaded once and shared by every request. */
struct tokenizer *
dispatch_tokenizer(struct server *srv, const char *name, char *cause, size_t cause_len)
{
	struct tokenizer_entry *e;

	for (e = srv->tokenizers; e != NULL; e = e->next)
		if (strcmp(e->name, name) == 0)
			return e->tokenizer;
	struct tokenizer *t = tokenizer_load(name, cause, cause_len);
	if (t == NULL)
		return NULL;
	if ((e = calloc(1, sizeof *e)) == NULL || (e->name = strdup(name)) == NULL) {
		free(e);
		tokenizer_free(t);
		snprintf(cause, cause_len, "out of memory");
		return NULL;
	}
	e->tokenizer = t;
	e->next = srv->tokenizers;
	srv->tokenizers = e;
	return t;
}

/*
 * Whether a client may name this encoding: a built-in vocabulary or one an
 * upstream's `tokenizer` setting names. Anything else, a path above all, is
 * never opened on a client's word.
 */
static bool
dispatch_encoding_known(const struct server *srv, const char *name)
{
	const char *b;

	for (size_t i = 0; (b = tokenizer_builtin(i)) != NULL; i++)
		if (strcmp(b, name) == 0)
			return true;
	for (size_t i = 0; i < srv->conf->n_upstreams; i++)
		if (strcmp(srv->conf->upstreams[i].tokenizer, name) == 0)
			return true;
	return false;
}

/* The encodings a client may name, ", "-separated, for an error message. */
static void
dispatch_encoding_list(const struct server *srv, char *buf, size_t len)
{
	const char *b, *sep = "";
	size_t n = 0;

	buf[0] = '\0';
	for (size_t i = 0; (b = tokenizer_builtin(i)) != NULL && n < len; i++) {
		n += (size_t)snprintf(buf + n, len - n, "%s%s", sep, b);
		sep = ", ";
	}
	for (size_t i = 0; i < srv->conf->n_upstreams && n < len; i++) {
		const char *t = srv->conf->upstreams[i].tokenizer;
		bool seen = false;
		for (size_t j = 0; (b = tokenizer_builtin(j)) != NULL; j++)
			seen |= strcmp(b, t) == 0;
		for (size_t j = 0; j < i; j++)
			seen |= strcmp(srv->conf->upstreams[j].tokenizer, t) == 0;
		if (!seen)
			n += (size_t)snprintf(buf + n, len - n, "%s%s", sep, t);
	}
}

/* Start a result reply for req. */
static void
dispatch_result_init(struct reply *r, const struct request *req)
{
	memset(r, 0, sizeof *r);
	r->id = req->id;
	r->type = REPLY_RESULT;
	r->u.result.op = req->op;
}

static void
dispatch_ping(struct session *s, struct request *req)
{
	struct reply r;

	dispatch_result_init(&r, req);
	r.u.result.u.ping.version = (char *)PACKAGE_VERSION;
	r.u.result.u.ping.uptime_s = (now_mono_ms() - s->server->started_ms) / 1000;
	r.u.result.u.ping.in_flight = s->server->in_flight;
	session_send(s, &r);
}

static void
dispatch_tokens(struct session *s, struct request *req)
{
	struct tokens_request *tr = &req->u.tokens;
	struct tokenizer *tok;
	struct reply r;
	char cause[256];
	const char *encoding = tr->encoding;

	if (encoding == NULL) {
		struct upstream *up = upstream_route(s->server, tr->model);
		if (up == NULL) {
			session_send_error(s, req->id, "unknown_model", "no upstream serves model \"%s\"",
			    tr->model ? tr->model : "");
			return;
		}
		encoding = up->conf.tokenizer;
		upstream_release(up);
	} else if (!dispatch_encoding_known(s->server, encoding)) {
		char valid[256];
		dispatch_encoding_list(s->server, valid, sizeof valid);
		session_send_error(s, req->id, "bad_request",
		    "encoding \"%.64s\" is not known; use one of: %s", encoding, valid);
		return;
	}
	if ((tok = dispatch_tokenizer(s->server, encoding, cause, sizeof cause)) == NULL) {
		session_send_error(s, req->id, "bad_request", "encoding \"%s\": %s", encoding, cause);
		return;
	}
	dispatch_result_init(&r, req);
	r.u.result.u.tokens.encoding = (char *)encoding;
	if (tr->text != NULL && tr->ids) {
		uint32_t *ids;
		size_t n;
		if (tokenizer_encode(tok, tr->text, message_text_len(tr->text, tr->text_len), &ids, &n,
		    cause, sizeof cause) == -1) {
			session_send_error(s, req->id, "bad_request", "text: %s", cause);
			return;
		}
		r.u.result.u.tokens.ids = ids;
		r.u.result.u.tokens.n_ids = n;
		r.u.result.u.tokens.count = (int64_t)n;
		session_send(s, &r);
		free(ids);
		return;
	}
	if (tr->text != NULL)
		r.u.result.u.tokens.count = tokenizer_count(tok, tr->text,
		    message_text_len(tr->text, tr->text_len));
	else {
		struct tokenizer_message *tm = calloc(tr->n_messages ? tr->n_messages : 1, sizeof *tm);
		if (tm == NULL) {
			session_send_error(s, req->id, "internal", "out of memory");
			return;
		}
		for (size_t i = 0; i < tr->n_messages; i++) {
			tm[i].role = tr->messages[i].role;
			tm[i].content = tr->messages[i].content;
			tm[i].content_len = tr->messages[i].content_len;
			tm[i].name = tr->messages[i].name;
			tm[i].tool_call_id = tr->messages[i].tool_call_id;
		}
		r.u.result.u.tokens.count = tokenizer_count_messages(tok, tm, tr->n_messages);
		free(tm);
	}
	if (r.u.result.u.tokens.count < 0) {
		session_send_error(s, req->id, "bad_request", "text is not valid UTF-8");
		return;
	}
	session_send(s, &r);
}

/* "all", "user:NAME", "tag:NAME" or "model:NAME". */
void
dispatch_budget_label(const struct budget_def *def, char *buf, size_t len)
{
	struct passwd *pw;

	switch (def->scope) {
	case BUDGET_ALL:
		snprintf(buf, len, "all");
		break;
	case BUDGET_USER:
		if (def->named)
			snprintf(buf, len, "user:%s", def->name ? def->name : "");
		else if ((pw = getpwuid(def->uid)) != NULL)
			snprintf(buf, len, "user:%s", pw->pw_name);
		else
			snprintf(buf, len, "user:%u", (unsigned)def->uid);
		break;
	case BUDGET_TAG:
		snprintf(buf, len, "tag:%s", def->name ? def->name : "");
		break;
	case BUDGET_MODEL:
		snprintf(buf, len, "model:%s", def->name ? def->name : "");
		break;
	}
}

/*
 * Each budget with its limit, what is used or reserved, and what is left;
 * the overall money budget also in max_budget and budget_left (NAN: none).
 * uid >= 0 leaves out other users' budgets.
 */
void
dispatch_fill_budgets(struct server *srv, int64_t uid, struct budget_status **budgets,
    size_t *n_budgets, double *max_budget, double *budget_left)
{
	size_t n = budgets_count(srv->budgets);
	int64_t now = now_ms();
	char label[300];

	*max_budget = NAN;
	*budget_left = NAN;
	*n_budgets = 0;
	if (n == 0 || (*budgets = calloc(n, sizeof **budgets)) == NULL)
		return;
	for (size_t i = 0; i < n; i++) {
		struct budget_state b;
		if (budgets_get(srv->budgets, i, now, &b) == -1)
			continue;
		if (uid >= 0 && b.def.scope == BUDGET_USER && (b.def.named || (int64_t)b.def.uid != uid))
			continue;
		struct budget_status *out = &(*budgets)[(*n_budgets)++];
		dispatch_budget_label(&b.def, label, sizeof label);
		out->scope = strdup(label);
		out->unit = strdup(budget_unit_name(b.def.unit));
		out->period = strdup(budget_period_name(b.def.period));
		out->limit = b.def.limit;
		out->used = b.used + b.reserved;
		out->left = b.left;
		if (b.def.scope == BUDGET_ALL && b.def.unit == BUDGET_MONEY &&
		    b.def.period == BUDGET_EVER && isnan(*max_budget)) {
			*max_budget = b.def.limit;
			*budget_left = b.left;
		}
	}
}

int64_t
dispatch_visible_uid(const struct session *s)
{
	const struct server *srv = s->server;

	if (strcmp(srv->conf->stats_visibility, "own") == 0 && s->uid != 0 && s->uid != srv->own_uid)
		return (int64_t)s->uid;
	return -1;
}

/*
 * stats: under stats_visibility "own" a user other than root and the
 * daemon's own sees only their own rows, in the total as in the breakdowns
 * (by_user, by_model, by_tag, by_day), and only their own user budgets.
 */
static void
dispatch_stats(struct session *s, struct request *req)
{
	struct server *srv = s->server;
	struct reply r;
	int64_t uid = dispatch_visible_uid(s);

	if (req->u.stats.fleet && uid >= 0) {
		session_send_error(s, req->id, "forbidden", "fleet stats are for root and the "
		    "daemon's own user under stats_visibility \"own\" (you are uid %u)",
		    (unsigned)s->uid);
		return;
	}
	if (req->u.stats.fleet) {
		fleet_stats(srv->fleet, s, req);
		return;
	}
	dispatch_result_init(&r, req);
	if (ledger_stats_exact(srv->ledger, req->u.stats.by, req->u.stats.since, uid,
	    &r.u.result.u.stats) == -1) {
		if (errno == EINVAL)
			session_send_error(s, req->id, "bad_request",
			    "by must be model, user, tag or day, not \"%s\"", req->u.stats.by);
		else
			session_send_error(s, req->id, "internal", "stats: %s", strerror(errno));
		return;
	}
	dispatch_fill_budgets(srv, uid, &r.u.result.u.stats.budgets, &r.u.result.u.stats.n_budgets,
	    &r.u.result.u.stats.max_budget, &r.u.result.u.stats.budget_left);
	session_send(s, &r);
	ledger_stats_clear(&r.u.result.u.stats);
}

static void
dispatch_models(struct session *s, struct request *req)
{
	struct reply r;

	dispatch_result_init(&r, req);
	upstream_fill_models(s->server, &r.u.result.u.models);
	session_send(s, &r);
	free(r.u.result.u.models.upstreams);
}

static void
dispatch_cancel(struct session *s, struct request *req)
{
	struct chat *c = session_find_chat(s, req->u.cancel_target);
	struct reply r;

	dispatch_result_init(&r, req);
	r.u.result.u.ok = c != NULL;
	if (c != NULL)
		chat_cancel(c, "cancelled", "cancelled by the client");
	session_send(s, &r);
}

static void
dispatch_reset(struct session *s, struct request *req)
{
	struct server *srv = s->server;
	struct reply r;
	char cause[256];

	if (s->uid != 0 && s->uid != srv->own_uid) {
		session_send_error(s, req->id, "forbidden",
		    "reset is allowed to root and to the daemon's own user only (you are uid %u)",
		    (unsigned)s->uid);
		return;
	}
	if (ledger_reset(srv->ledger, cause, sizeof cause) == -1) {
		session_send_error(s, req->id, "internal", "reset: %s", cause);
		return;
	}
	srv->total_cost = 0;
	budgets_free(srv->budgets);     /* usage starts over; reservations in flight stay valid */
	srv->budgets = NULL;
	if (server_budgets_load(srv, srv->conf, cause, sizeof cause) == -1)
		log_error("budgets after reset: %s", cause);
	log_info("usage ledger reset by uid %u (archived)", (unsigned)s->uid);
	dispatch_result_init(&r, req);
	r.u.result.u.ok = true;
	session_send(s, &r);
}

static const struct {
	enum message_op op;
	void (*handler)(struct session *, struct request *);
} dispatch_table[] = {
	{ OP_PING, dispatch_ping },
	{ OP_TOKENS, dispatch_tokens },
	{ OP_STATS, dispatch_stats },
	{ OP_MODELS, dispatch_models },
	{ OP_CANCEL, dispatch_cancel },
	{ OP_RESET, dispatch_reset },
	{ OP_LOGS, logs_answer },
	{ OP_TOP, top_answer },
};

/* Answer one decoded request; takes ownership of req. */
void
dispatch_request(struct session *s, struct request *req)
{
	if (req->op == OP_CHAT) {
		session_start_chat(s, req);
		return;
	}
	for (size_t i = 0; i < sizeof dispatch_table / sizeof dispatch_table[0]; i++) {
		if (dispatch_table[i].op == req->op) {
			dispatch_table[i].handler(s, req);
			break;
		}
	}
	message_request_free(req);
}
