/* Model servers: routing, health, and what each one's GET /models lists. */
#include "config.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "daemon/http.h"
#include "daemon/limiter.h"
#include "daemon/log.h"
#include "daemon/openai.h"
#include "daemon/openllmd.h"

#define UPSTREAM_PROBE_HEALTHY_S 30     /* probe interval while healthy */
#define UPSTREAM_PROBE_SICK_S 2         /* and while taken out */
#define UPSTREAM_MAX_FAILURES 3         /* consecutive failures before it is taken out */
#define UPSTREAM_MAX_MODELS_BODY (1024 * 1024)

static void upstream_probe_start(struct upstream *);

static void
upstream_free_models(struct upstream *up)
{
	openai_models_free(up->models, up->n_models);
	up->models = NULL;
	up->n_models = 0;
}

/* Free an upstream that has no chat left. */
static void
upstream_free(struct upstream *up)
{
	if (up->probe != NULL)
		http_transfer_cancel(up->probe);
	free(up->probe_body);
	if (up->probe_timer != NULL)
		event_free(up->probe_timer);
	if (up->limiter_timer != NULL)
		event_free(up->limiter_timer);
	limiter_free(up->limiter);
	upstream_free_models(up);
	conf_upstream_clear(&up->conf);
	free(up);
}

/* Schedule the next health probe. */
static void
upstream_probe_later(struct upstream *up)
{
	struct timeval tv = { up->healthy ? UPSTREAM_PROBE_HEALTHY_S : UPSTREAM_PROBE_SICK_S, 0 };

	evtimer_add(up->probe_timer, &tv);
}

static enum http_data_action
upstream_probe_data_cb(void *arg, const struct http_response *resp, const char *buf, size_t len)
{
	struct upstream *up = arg;

	(void)resp;
	if (up->probe_len + len > UPSTREAM_MAX_MODELS_BODY)
		return HTTP_DATA_ABORT;
	char *grown = realloc(up->probe_body, up->probe_len + len + 1);
	if (grown == NULL)
		return HTTP_DATA_ABORT;
	up->probe_body = grown;
	memcpy(up->probe_body + up->probe_len, buf, len);
	up->probe_len += len;
	up->probe_body[up->probe_len] = '\0';
	return HTTP_DATA_OK;
}

/* A probe answered: record health and the model list. */
static void
upstream_probe_done_cb(void *arg, const struct http_response *resp)
{
	struct upstream *up = arg;
	char cause[256];
	char **names;
	size_t n;

	up->probe = NULL;
	if (resp->result == CURLE_OK && resp->status == 200 &&
	    openai_parse_models(up->probe_body ? up->probe_body : "", up->probe_len, &names, &n, cause, sizeof cause) == 0) {
		upstream_free_models(up);
		up->models = names;
		up->n_models = n;
		if (!up->healthy)
			log_info("upstream %s (%s) is back", up->conf.name, up->conf.base_url);
		up->healthy = true;
		up->failures = 0;
	} else if (resp->result == CURLE_OK && resp->status > 0 && resp->status < 500) {
		/* It answers, though without a usable model list: it can still serve. */
		if (!up->healthy)
			log_info("upstream %s (%s) is back", up->conf.name, up->conf.base_url);
		up->healthy = true;
		up->failures = 0;
	} else {
		if (up->healthy)
			log_warn("upstream %s (%s) does not answer: %s", up->conf.name, up->conf.base_url,
			    resp->result != CURLE_OK ? resp->error : "bad status");
		up->healthy = false;
	}
	free(up->probe_body);
	up->probe_body = NULL;
	up->probe_len = 0;
	if (!up->retired)
		upstream_probe_later(up);
}

/* Ask the server for GET {base_url}/models. */
static void
upstream_probe_start(struct upstream *up)
{
	static const struct http_callbacks cbs = { upstream_probe_data_cb, upstream_probe_done_cb };
	struct http_request hr;
	char url[2048], cause[256];

	if (up->probe != NULL)
		return;
	snprintf(url, sizeof url, "%s/models", up->conf.base_url);
	memset(&hr, 0, sizeof hr);
	hr.method = "GET";
	hr.url = url;
	hr.api_key = up->conf.api_key;
	hr.connect_timeout_ms = (long)(up->conf.connect_timeout * 1000);
	hr.timeout_ms = 10000;
	up->probe = http_transfer_start(up->server->http, &hr, &cbs, up, cause, sizeof cause);
	if (up->probe == NULL)
		upstream_probe_later(up);
}

static void
upstream_probe_timer_cb(evutil_socket_t fd, short what, void *arg)
{
	(void)fd;
	(void)what;
	upstream_probe_start(arg);
}

/* The limiter settings of an upstream. */
static void
upstream_limiter_conf(const struct upstream_conf *u, struct limiter_conf *lc)
{
	lc->rpm = u->rpm;
	lc->tpm = u->tpm;
	lc->max_concurrency = u->max_concurrency;
	lc->queue_max = u->queue_max;
	lc->queue_timeout_ms = (int64_t)(u->queue_timeout * 1000);
}

/* Admit whoever the limiter lets go now, refuse who waited too long, re-arm. */
static void
upstream_limiter_cb(evutil_socket_t fd, short what, void *arg)
{
	struct upstream *up = arg;
	struct limiter_waiter *w;
	enum limiter_status st;
	int64_t now = now_mono_ms(), next;

	(void)fd;
	(void)what;
	while ((st = limiter_poll(up->limiter, now, &w)) != LIMITER_NONE)
		chat_admitted(w->data, st, w->retry_after);
	if ((next = limiter_next_wakeup(up->limiter, now)) >= 0) {
		int64_t wait = next > now ? next - now : 0;
		struct timeval tv = { (time_t)(wait / 1000), (suseconds_t)(wait % 1000) * 1000 };
		evtimer_add(up->limiter_timer, &tv);
	}
}

/* Run the limiter from the loop soon when someone waits: a waiter may go now. */
void
upstream_limiter_kick(struct upstream *up)
{
	struct timeval now = { 0, 0 };
	struct limiter_stats st;

	/* with nobody queued there is nothing to run, and the timer cost a loop pass */
	limiter_stats(up->limiter, &st);
	if (st.queued > 0)
		evtimer_add(up->limiter_timer, &now);
}

/* Find a live upstream by name. */
static struct upstream *
upstream_find(struct server *srv, const char *name)
{
	struct upstream *up;

	TAILQ_FOREACH(up, &srv->upstreams, entry)
		if (strcmp(up->conf.name, name) == 0)
			return up;
	return NULL;
}

/*
 * Apply a configuration: an upstream whose name stays keeps its state (limiter
 * buckets, queue, health) and takes the new settings; new names start fresh;
 * upstreams no longer named retire and are freed with their last chat.
 */
int
upstream_setup(struct server *srv, const struct conf *conf, char *cause, size_t cause_len)
{
	struct upstream_list keep;
	struct upstream *up;
	struct tokenizer **toks;
	struct limiter_conf lc;

	if ((toks = calloc(conf->n_upstreams ? conf->n_upstreams : 1, sizeof *toks)) == NULL) {
		snprintf(cause, cause_len, "out of memory");
		return -1;
	}
	for (size_t i = 0; i < conf->n_upstreams; i++) {
		toks[i] = dispatch_tokenizer(srv, conf->upstreams[i].tokenizer, cause, cause_len);
		if (toks[i] == NULL) {
			free(toks);
			return -1;
		}
	}
	TAILQ_INIT(&keep);
	for (size_t i = 0; i < conf->n_upstreams; i++) {
		const struct upstream_conf *uc = &conf->upstreams[i];
		upstream_limiter_conf(uc, &lc);
		if ((up = upstream_find(srv, uc->name)) != NULL) {
			TAILQ_REMOVE(&srv->upstreams, up, entry);
			conf_upstream_clear(&up->conf);
			conf_upstream_copy(&up->conf, uc);
			limiter_reconfigure(up->limiter, &lc, now_mono_ms());
			upstream_limiter_kick(up);
		} else {
			if ((up = calloc(1, sizeof *up)) == NULL)
				fatal("out of memory");
			up->server = srv;
			conf_upstream_copy(&up->conf, uc);
			up->healthy = true;
			up->probe_timer = evtimer_new(srv->base, upstream_probe_timer_cb, up);
			up->limiter_timer = evtimer_new(srv->base, upstream_limiter_cb, up);
			if ((up->limiter = limiter_new(&lc)) == NULL)
				fatal("out of memory");
			struct timeval now = { 0, 0 };
			evtimer_add(up->probe_timer, &now);
		}
		up->tokenizer = toks[i];
		TAILQ_INSERT_TAIL(&keep, up, entry);
	}
	free(toks);
	while ((up = TAILQ_FIRST(&srv->upstreams)) != NULL) {
		TAILQ_REMOVE(&srv->upstreams, up, entry);
		if (up->in_flight == 0)
			upstream_free(up);
		else {
			up->retired = true;
			evtimer_del(up->probe_timer);
			TAILQ_INSERT_TAIL(&srv->retired, up, entry);
		}
	}
	TAILQ_CONCAT(&srv->upstreams, &keep, entry);
	return 0;
}

void
upstream_teardown(struct server *srv)
{
	struct upstream *up;

	while ((up = TAILQ_FIRST(&srv->upstreams)) != NULL) {
		TAILQ_REMOVE(&srv->upstreams, up, entry);
		upstream_free(up);
	}
	while ((up = TAILQ_FIRST(&srv->retired)) != NULL) {
		TAILQ_REMOVE(&srv->retired, up, entry);
		upstream_free(up);
	}
	upstream_reap(srv);
}

/* How well an upstream serves model: 2 configured for it, 1 lists it, 0 not at all. */
static int
upstream_serves(const struct upstream *up, const char *model)
{
	if (strcmp(up->conf.model, model) == 0)
		return 2;
	for (size_t i = 0; i < up->n_models; i++)
		if (strcmp(up->models[i], model) == 0)
			return 1;
	return 0;
}

/* Whether a model name is served by an upstream or is an alias: a name for metrics' labels. */
bool
upstream_known_model(struct server *srv, const char *model)
{
	struct upstream *up;

	if (model == NULL || *model == '\0' || conf_alias_model(srv->conf, model) != NULL)
		return true;
	TAILQ_FOREACH(up, &srv->upstreams, entry)
		if (upstream_serves(up, model) > 0)
			return true;
	return false;
}

/* Every model served and every alias, each once, comma-separated, cut to fit len. */
void
upstream_model_names(struct server *srv, char *buf, size_t len)
{
	struct upstream *up;
	size_t n = 0;

	if (len == 0)
		return;
	buf[0] = '\0';
	TAILQ_FOREACH(up, &srv->upstreams, entry) {
		for (size_t i = 0; i <= up->n_models; i++) {
			const char *m = i == 0 ? up->conf.model : up->models[i - 1];
			size_t ml = strlen(m);
			char *at;
			/* listed already? (whole names only) */
			for (at = strstr(buf, m); at != NULL; at = strstr(at + 1, m))
				if ((at == buf || at[-1] == ' ') && (at[ml] == ',' || at[ml] == '\0'))
					break;
			if (at != NULL)
				continue;
			n += (size_t)snprintf(buf + n, len - n, "%s%s", n > 0 ? ", " : "", m);
			if (n >= len)
				return;
		}
	}
	for (size_t i = 0; i < srv->conf->n_aliases && n < len; i++)
		n += (size_t)snprintf(buf + n, len - n, "%s%s (an alias)", n > 0 ? ", " : "",
		    srv->conf->aliases[i].name);
}

/*
 * Pick the upstream for model (NULL: the first upstream's model): those
 * configured for it before those that merely list it, healthy ones first,
 * then the fewest requests outstanding. The caller holds it until
 * upstream_release.
 */
struct upstream *
upstream_route(struct server *srv, const char *model)
{
	struct upstream *up, *best = NULL;
	int best_rank = 0;

	if (model == NULL || *model == '\0') {
		if ((up = TAILQ_FIRST(&srv->upstreams)) == NULL)
			return NULL;
		model = up->conf.model;
	}
	TAILQ_FOREACH(up, &srv->upstreams, entry) {
		int rank = upstream_serves(up, model);
		if (rank == 0)
			continue;
		if (best == NULL || rank > best_rank ||
		    (rank == best_rank && up->healthy && !best->healthy) ||
		    (rank == best_rank && up->healthy == best->healthy && up->in_flight < best->in_flight)) {
			best = up;
			best_rank = rank;
		}
	}
	if (best != NULL)
		best->in_flight++;
	return best;
}

/*
 * A chat let go of its upstream. A retired one goes with its last chat, but
 * from the loop: the caller may be inside the upstream's own limiter callback.
 */
void
upstream_release(struct upstream *up)
{
	if (up == NULL)
		return;
	up->in_flight--;
	if (up->retired && up->in_flight == 0) {
		struct server *srv = up->server;
		TAILQ_REMOVE(&srv->retired, up, entry);
		TAILQ_INSERT_TAIL(&srv->dead_upstreams, up, entry);
		event_active(srv->reap_ev, EV_TIMEOUT, 1);
	}
}

/* Free the upstreams that retired and lost their last chat. */
void
upstream_reap(struct server *srv)
{
	struct upstream *up;

	while ((up = TAILQ_FIRST(&srv->dead_upstreams)) != NULL) {
		TAILQ_REMOVE(&srv->dead_upstreams, up, entry);
		upstream_free(up);
	}
}

/* Count consecutive failures; take the upstream out and probe it when they pile up. */
void
upstream_record_result(struct upstream *up, bool ok)
{
	if (ok) {
		up->failures = 0;
		return;
	}
	if (++up->failures >= UPSTREAM_MAX_FAILURES && up->healthy) {
		log_warn("upstream %s (%s) failed %d times in a row; probing it", up->conf.name,
		    up->conf.base_url, up->failures);
		up->healthy = false;
		if (!up->retired) {
			evtimer_del(up->probe_timer);
			upstream_probe_later(up);
		}
	}
}

/* The models op: each configured upstream with its health and model list. */
void
upstream_fill_models(struct server *srv, struct models_result *out)
{
	struct upstream *up;
	size_t n = 0;

	TAILQ_FOREACH(up, &srv->upstreams, entry)
		n++;
	out->upstreams = calloc(n ? n : 1, sizeof *out->upstreams);
	out->n = 0;
	if (out->upstreams == NULL)
		return;
	TAILQ_FOREACH(up, &srv->upstreams, entry) {
		struct upstream_info *ui = &out->upstreams[out->n++];
		ui->name = up->conf.name;
		ui->base_url = up->conf.base_url;
		ui->model = up->conf.model;
		ui->healthy = up->healthy;
		ui->in_flight = up->in_flight;
		ui->models = up->models;
		ui->n_models = up->n_models;
	}
}
