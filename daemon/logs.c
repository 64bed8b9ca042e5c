/* The logs op: finished requests from the usage journal, newest first. */
#include "config.h"

#include <stdlib.h>
#include <string.h>

#include "daemon/fleet.h"
#include "daemon/ledger.h"
#include "daemon/log.h"
#include "daemon/openllmd.h"

/* Journal bytes one logs request may read; older rows are then reported as truncated. */
#define LOGS_MAX_BYTES ((size_t)128 * 1024 * 1024)

struct logs_collect {
	const struct logs_request *q;
	int64_t uid;                /* -1: every user's rows */
	const char *user;           /* a named user's rows only; NULL: by uid */
	struct log_row *rows;
	size_t n, limit;
	bool oom;
};

/* Keep a copy of a row that matches; stop once there are enough. */
static int
logs_collect_cb(const struct ledger_record *rec, void *arg)
{
	struct logs_collect *lc = arg;
	const struct logs_request *q = lc->q;
	const char *tag = rec->tag != NULL ? rec->tag : "";
	struct log_row *w;

	if ((lc->uid >= 0 && (uint32_t)lc->uid != rec->uid) ||
	    (lc->user != NULL && (rec->user == NULL || strcmp(lc->user, rec->user) != 0)) ||
	    (q->model != NULL && strcmp(q->model, rec->model) != 0) ||
	    (q->tag != NULL && strcmp(q->tag, tag) != 0) ||
	    (q->status != NULL && strcmp(q->status, ledger_status_name(rec->status)) != 0))
		return 0;
	w = &lc->rows[lc->n];
	memset(w, 0, sizeof *w);
	w->time_ms = rec->time_ms;
	w->uid = rec->uid;
	w->tag = rec->tag != NULL ? strdup(rec->tag) : NULL;
	w->user = rec->user != NULL ? strdup(rec->user) : NULL;
	w->model = strdup(rec->model);
	w->upstream = strdup(rec->upstream);
	w->status = strdup(ledger_status_name(rec->status));
	w->error = rec->error_code != NULL ? strdup(rec->error_code) : NULL;
	w->prompt_tokens = rec->prompt_tokens;
	w->completion_tokens = rec->completion_tokens;
	w->estimated = rec->estimated;
	w->cost = rec->cost;
	w->latency_ms = rec->latency_ms;
	w->ttft_ms = rec->has_ttft ? rec->ttft_ms : -1;
	lc->n++;
	if (w->model == NULL || w->upstream == NULL || w->status == NULL ||
	    (rec->tag != NULL && w->tag == NULL) || (rec->error_code != NULL && w->error == NULL) ||
	    (rec->user != NULL && w->user == NULL)) {
		lc->oom = true;
		return 1;
	}
	return lc->n == lc->limit;
}

/* Free the rows collected. */
static void
logs_rows_free(struct log_row *rows, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		free(rows[i].tag);
		free(rows[i].model);
		free(rows[i].upstream);
		free(rows[i].status);
		free(rows[i].error);
		free(rows[i].user);
	}
	free(rows);
}

/*
 * Answer a logs request. A user sees only their own rows; root and the
 * daemon's own user see everyone's, or one user's with `user`.
 */
void
logs_answer(struct session *s, struct request *req)
{
	const struct logs_request *q = &req->u.logs;
	struct server *srv = s->server;
	struct logs_collect lc;
	struct reply r;
	char cause[256];
	bool privileged = s->uid == 0 || s->uid == srv->own_uid, truncated = false;

	memset(&lc, 0, sizeof lc);
	lc.q = q;
	lc.uid = q->user;
	if (q->user_name != NULL) {
		/* no local uid owns a named user's rows */
		if (!privileged) {
			session_send_error(s, req->id, "forbidden", "user %s: you may read only your "
			    "own rows (you are uid %u)", q->user_name, (unsigned)s->uid);
			return;
		}
		if (q->fleet) {
			session_send_error(s, req->id, "bad_request", "user %s: fleet rows carry no "
			    "named users", q->user_name);
			return;
		}
		lc.uid = LEDGER_UID_NAMED;
		lc.user = q->user_name;
	}
	if (!privileged) {
		if (q->user >= 0 && (uid_t)q->user != s->uid) {
			session_send_error(s, req->id, "forbidden", "user %lld: you may read only your "
			    "own rows (you are uid %u)", (long long)q->user, (unsigned)s->uid);
			return;
		}
		lc.uid = s->uid;
	}
	if (q->fleet) {
		/* a uid names different people on different hosts */
		if (!privileged)
			session_send_error(s, req->id, "forbidden", "fleet logs are for root and "
			    "the daemon's user: a uid means different people on different hosts");
		else
			fleet_logs(srv->fleet, s, req, lc.uid);
		return;
	}
	lc.limit = q->limit > 0 ? (size_t)q->limit : LOGS_LIMIT_DEFAULT;
	if ((lc.rows = calloc(lc.limit, sizeof *lc.rows)) == NULL) {
		session_send_error(s, req->id, "internal", "out of memory");
		return;
	}
	if (ledger_foreach_record_newest(srv->ledger, q->since >= 0 ? q->since * 1000 : -1,
	    q->until >= 0 ? q->until * 1000 : -1, LOGS_MAX_BYTES, logs_collect_cb, &lc,
	    &truncated, cause, sizeof cause) == -1 || lc.oom) {
		logs_rows_free(lc.rows, lc.n);
		if (lc.oom)
			snprintf(cause, sizeof cause, "out of memory");
		log_error("logs: %s", cause);
		session_send_error(s, req->id, "internal", "logs: %s", cause);
		return;
	}
	message_reply_init(&r, REPLY_RESULT, OP_LOGS);
	r.id = req->id;
	r.u.result.u.logs.rows = lc.rows;
	r.u.result.u.logs.n = lc.n;
	r.u.result.u.logs.truncated = truncated && lc.n < lc.limit;
	session_send(s, &r);
	logs_rows_free(lc.rows, lc.n);
}
