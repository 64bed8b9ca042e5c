/* Configuration: one typed table per level, shared by parsing, defaults and docs checks. */
#include "config.h"

#include <errno.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <libconfig.h>
#include <libpq-fe.h>
#include <pwd.h>

#include "client/sockpath.h"
#include "daemon/budget.h"

#include "daemon/conf.h"
#include "daemon/ledger.h"
#include "daemon/tokenizer.h"
#include "protocol/message.h"

/* CONF_AUTO: an integer, or the string "auto" stored as 0. */
enum conf_type { CONF_STRING, CONF_INT, CONF_AUTO, CONF_SIZE, CONF_DOUBLE, CONF_BOOL, CONF_MODE,
	CONF_LOGLEVEL };

struct conf_setting {
	const char *name;
	enum conf_type type;
	size_t offset;
	double min, max;            /* for numbers */
	const char *choices;        /* for strings: "a|b|c", NULL for any */
};

#define TOP(name, type, field, min, max, choices) \
	{ name, type, offsetof(struct conf, field), min, max, choices }
#define UP(name, type, field, min, max) \
	{ name, type, offsetof(struct upstream_conf, field), min, max, NULL }

static const struct conf_setting conf_top_settings[] = {
	TOP("socket", CONF_STRING, socket_path, 0, 0, NULL),
	TOP("socket_mode", CONF_MODE, socket_mode, 0, 0777, NULL),
	TOP("state_dir", CONF_STRING, state_dir, 0, 0, NULL),
	TOP("log_level", CONF_LOGLEVEL, log_level, 0, 0, NULL),
	TOP("calc_usage", CONF_BOOL, calc_usage, 0, 0, NULL),
	TOP("max_budget", CONF_DOUBLE, max_budget, 0, 1e12, NULL),
	TOP("budget_fit", CONF_STRING, budget_fit, 0, 0, "shrink|refuse"),
	TOP("budget_min_reply", CONF_INT, budget_min_reply, 1, 1e7, NULL),
	TOP("fsync", CONF_STRING, fsync, 0, 0, "always|everysec|no"),
	TOP("retention_days", CONF_INT, retention_days, 0, 36500, NULL),
	TOP("on_ledger_error", CONF_STRING, on_ledger_error, 0, 0, "refuse|serve"),
	TOP("max_frame", CONF_SIZE, max_frame, 1024, 1 << 30, NULL),
	TOP("max_clients", CONF_AUTO, max_clients, 1, 1000000, NULL),
	TOP("max_clients_per_uid", CONF_AUTO, max_clients_per_uid, 1, 1000000, NULL),
	TOP("max_clients_per_address", CONF_AUTO, max_clients_per_address, 1, 1000000, NULL),
	TOP("stats_visibility", CONF_STRING, stats_visibility, 0, 0, "own|all"),
	TOP("shutdown_grace", CONF_DOUBLE, shutdown_grace, 0, 86400, NULL),
	TOP("frame_timeout", CONF_DOUBLE, frame_timeout, 0, 86400, NULL),
	TOP("stall_timeout", CONF_DOUBLE, stall_timeout, 0, 86400, NULL),
	TOP("max_output_total", CONF_SIZE, max_output_total, 0, 1e12, NULL),
	TOP("max_output_per_client", CONF_SIZE, max_output_per_client, 1024, 1e12, NULL),
	TOP("require_key", CONF_BOOL, require_key, 0, 0, NULL),
	TOP("http_max_header", CONF_SIZE, http_max_header, 1024, 1 << 24, NULL),
	TOP("http_timeout", CONF_DOUBLE, http_timeout, 0.1, 86400, NULL),
	TOP("http_header_timeout", CONF_DOUBLE, http_header_timeout, 0.1, 86400, NULL),
	TOP("http_body_timeout", CONF_DOUBLE, http_body_timeout, 0.1, 86400, NULL),
	TOP("http_body_min_rate", CONF_SIZE, http_body_min_rate, 1024, 1e12, NULL),
	TOP("http_max_inflight_body", CONF_SIZE, http_max_inflight_body, 1024, 1e12, NULL),
	TOP("fleet_postgres", CONF_STRING, fleet_postgres, 0, 0, NULL),
	TOP("fleet_node", CONF_STRING, fleet_node, 0, 0, NULL),
	TOP("fleet_offline", CONF_STRING, fleet_offline, 0, 0, "refuse|local"),
	TOP("default_model", CONF_STRING, default_model, 0, 0, NULL),
	TOP("fleet_lease_ttl", CONF_DOUBLE, fleet_lease_ttl, 1, 3600, NULL),
	TOP("fleet_retention_days", CONF_INT, fleet_retention_days, 0, 36500, NULL),
};

static const struct conf_setting conf_upstream_settings[] = {
	UP("name", CONF_STRING, name, 0, 0),
	UP("base_url", CONF_STRING, base_url, 0, 0),
	UP("model", CONF_STRING, model, 0, 0),
	UP("api_key", CONF_STRING, api_key, 0, 0),
	UP("tokenizer", CONF_STRING, tokenizer, 0, 0),
	UP("rpm", CONF_INT, rpm, 0, 1e9),
	UP("tpm", CONF_INT, tpm, 0, 2e9),
	UP("max_concurrency", CONF_INT, max_concurrency, 0, 100000),
	UP("queue_max", CONF_INT, queue_max, 0, 1000000),
	UP("queue_timeout", CONF_DOUBLE, queue_timeout, 0, 86400),
	UP("timeout", CONF_DOUBLE, timeout, 0.001, 86400),
	UP("connect_timeout", CONF_DOUBLE, connect_timeout, 0.001, 3600),
	UP("first_byte_timeout", CONF_DOUBLE, first_byte_timeout, 0, 86400),
	UP("idle_timeout", CONF_DOUBLE, idle_timeout, 0, 86400),
	UP("retries", CONF_INT, retries, 0, 100),
	UP("default_max_tokens", CONF_INT, default_max_tokens, 1, 10000000),
	UP("prompt_price", CONF_DOUBLE, prompt_price, 0, 1e6),
	UP("completion_price", CONF_DOUBLE, completion_price, 0, 1e6),
};

/* MetaGPT's names for the single upstream, accepted at the top level; and the lists. */
static const char *const conf_metagpt_settings[] = {
	"open_llm_api_base", "open_llm_api_model", "rpm", "upstreams", "budgets", "http_listen",
	"api_keys", "aliases", NULL
};

/* Settings of one API key. */
static const char *const conf_key_settings[] = {
	"sha256", "user", "tag", "tag_override", NULL
};

/* Settings of one budget; values are checked by conf_read_budgets. */
static const char *const conf_budget_settings[] = {
	"scope", "who", "unit", "period", "limit", "fit", NULL
};

#define N_TOP (sizeof conf_top_settings / sizeof conf_top_settings[0])
#define N_UP (sizeof conf_upstream_settings / sizeof conf_upstream_settings[0])

struct conf_errors {
	char *buf;
	size_t len;
	const char *file;
};

/* Append one "FILE:LINE: message" line. */
static void __attribute__((format(printf, 3, 4)))
conf_error(struct conf_errors *e, int line, const char *fmt, ...)
{
	char msg[512], where[600];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(msg, sizeof msg, fmt, ap);
	va_end(ap);
	if (line > 0)
		snprintf(where, sizeof where, "%s:%d: %s\n", e->file, line, msg);
	else
		snprintf(where, sizeof where, "%s: %s\n", e->file, msg);
	size_t n = strlen(where);
	char *grown = realloc(e->buf, e->len + n + 1);
	if (grown == NULL)
		return;
	e->buf = grown;
	memcpy(e->buf + e->len, where, n + 1);
	e->len += n;
}

/* Fill an upstream with the defaults: no rpm limit, which a local server does not need. */
static void
conf_upstream_defaults(struct upstream_conf *u)
{
	memset(u, 0, sizeof *u);
	u->name = strdup("local");
	u->base_url = strdup("http://127.0.0.1:8080/v1");
	u->model = strdup("default");
	u->api_key = strdup("sk-xxx");
	u->tokenizer = strdup("cl100k_base");
	u->rpm = 0;
	u->max_concurrency = 8;
	u->queue_max = 256;
	u->queue_timeout = 60;
	u->timeout = 600;
	u->connect_timeout = 10;
	u->first_byte_timeout = 0;
	u->idle_timeout = 0;
	u->retries = 5;
	u->default_max_tokens = 4096;
}

/* Free an upstream's strings; the API key is wiped first. */
void
conf_upstream_clear(struct upstream_conf *u)
{
	if (u->api_key != NULL)
		explicit_bzero(u->api_key, strlen(u->api_key));
	free(u->name);
	free(u->base_url);
	free(u->model);
	free(u->api_key);
	free(u->tokenizer);
}

/* Deep-copy an upstream's settings. */
void
conf_upstream_copy(struct upstream_conf *dst, const struct upstream_conf *src)
{
	*dst = *src;
	dst->name = strdup(src->name);
	dst->base_url = strdup(src->base_url);
	dst->model = strdup(src->model);
	dst->api_key = src->api_key ? strdup(src->api_key) : NULL;
	dst->tokenizer = strdup(src->tokenizer);
}

/* Socket and state defaults: system paths for root, XDG paths for a user. */
static void
conf_path_defaults(struct conf *c)
{
	const char *env;
	char buf[4096], priv[64];

	/* Under systemd, the directories it made for us (RuntimeDirectory=, StateDirectory=). */
	if ((env = getenv("RUNTIME_DIRECTORY")) != NULL && *env == '/' && strchr(env, ':') == NULL) {
		snprintf(buf, sizeof buf, "%s/openllmd.sock", env);
		c->socket_path = strdup(buf);
	}
	if ((env = getenv("STATE_DIRECTORY")) != NULL && *env == '/' && strchr(env, ':') == NULL)
		c->state_dir = strdup(env);
	if (geteuid() == 0) {
		if (c->socket_path == NULL)
			c->socket_path = strdup("/run/openllmd/openllmd.sock");
		if (c->state_dir == NULL)
			c->state_dir = strdup("/var/lib/openllmd");
		return;
	}
	if (c->socket_path != NULL && c->state_dir != NULL)
		return;
	/* Without XDG directories, a directory of our own in /tmp (checked before use). */
	sockpath_private_dir(geteuid(), priv, sizeof priv);
	if (c->socket_path == NULL) {
		if ((env = getenv("XDG_RUNTIME_DIR")) != NULL && *env == '/')
			snprintf(buf, sizeof buf, "%s/openllmd.sock", env);
		else
			snprintf(buf, sizeof buf, "%s/openllmd.sock", priv);
		c->socket_path = strdup(buf);
	}
	if (c->state_dir != NULL)
		return;
	if ((env = getenv("XDG_STATE_HOME")) != NULL && *env == '/')
		snprintf(buf, sizeof buf, "%s/openllmd", env);
	else if ((env = getenv("HOME")) != NULL && *env == '/')
		snprintf(buf, sizeof buf, "%s/.local/state/openllmd", env);
	else
		snprintf(buf, sizeof buf, "%s/state", priv);
	c->state_dir = strdup(buf);
}

static struct conf *
conf_defaults(void)
{
	struct conf *c = calloc(1, sizeof *c);

	if (c == NULL)
		return NULL;
	conf_path_defaults(c);
	c->socket_mode = 0660;
	c->log_level = LOG_LEVEL_INFO;
	c->calc_usage = true;
	c->max_budget = 0;
	c->budget_fit = strdup("shrink");
	c->budget_min_reply = 16;
	c->fsync = strdup("everysec");
	c->retention_days = 30;
	c->on_ledger_error = strdup("refuse");
	c->max_frame = 16u * 1024 * 1024;
	c->max_clients = 0;             /* auto */
	c->max_clients_per_uid = 0;     /* auto */
	c->stats_visibility = strdup("own");
	c->fleet_offline = strdup("refuse");
	c->fleet_lease_ttl = 30;
	c->fleet_retention_days = 90;
	c->shutdown_grace = 30;
	c->frame_timeout = 30;
	c->stall_timeout = 120;
	c->max_output_total = 256u * 1024 * 1024;
	c->max_output_per_client = 64u * 1024 * 1024;
	c->http_max_header = 64 * 1024;
	c->http_timeout = 60;
	c->http_header_timeout = 10;
	c->http_body_timeout = 10;
	c->http_body_min_rate = 256u * 1024;
	c->http_max_inflight_body = 64u * 1024 * 1024;
	if ((c->http_listen = calloc(1, sizeof *c->http_listen)) != NULL &&
	    (c->http_listen[0] = strdup(CONF_HTTP_LISTEN_DEFAULT)) != NULL)
		c->n_http_listen = 1;
	c->http_listen_default = true;
	return c;
}

/* Check a string against "a|b|c". */
static bool
conf_choice_ok(const char *choices, const char *s)
{
	size_t n = strlen(s);

	for (const char *p = choices; *p != '\0';) {
		const char *bar = strchr(p, '|');
		size_t len = bar ? (size_t)(bar - p) : strlen(p);
		if (len == n && strncmp(p, s, n) == 0)
			return true;
		if (bar == NULL)
			break;
		p = bar + 1;
	}
	return false;
}

/* Store one setting into base + def->offset, checking type and range. */
static void
conf_store(struct conf_errors *e, const struct conf_setting *def, config_setting_t *s, void *base)
{
	int line = config_setting_source_line(s);
	int type = config_setting_type(s);
	void *field = (char *)base + def->offset;
	double v = 0;

	switch (def->type) {
	case CONF_STRING:
	case CONF_LOGLEVEL:
	case CONF_MODE: {
		if (type != CONFIG_TYPE_STRING) {
			conf_error(e, line, "%s must be a string", def->name);
			return;
		}
		const char *str = config_setting_get_string(s);
		if (def->type == CONF_LOGLEVEL) {
			if (log_level_parse(str, field) == -1)
				conf_error(e, line, "log_level must be error, warn, info or debug, not \"%s\"", str);
			return;
		}
		if (def->type == CONF_MODE) {
			char *end;
			errno = 0;
			unsigned long mode = strtoul(str, &end, 8);
			if (*str == '\0' || *end != '\0' || errno != 0 || mode > 0777)
				conf_error(e, line, "socket_mode must be an octal mode like \"0660\", not \"%s\"", str);
			else
				*(mode_t *)field = (mode_t)mode;
			return;
		}
		if (def->choices != NULL && !conf_choice_ok(def->choices, str)) {
			conf_error(e, line, "%s must be one of %s, not \"%s\"", def->name, def->choices, str);
			return;
		}
		if (*str == '\0' && strcmp(def->name, "api_key") != 0) {
			conf_error(e, line, "%s must not be empty", def->name);
			return;
		}
		if (strcmp(def->name, "fleet_node") == 0 && strlen(str) > 255) {
			conf_error(e, line, "fleet_node is at most 255 bytes long");
			return;
		}
		if (strcmp(def->name, "fleet_postgres") == 0) {
			char *why = NULL;
			PQconninfoOption *o = PQconninfoParse(str, &why);
			if (o == NULL) {
				size_t n = why != NULL ? strcspn(why, "\n") : 0;
				conf_error(e, line, "fleet_postgres is not a PostgreSQL connection "
				    "string: %.*s", (int)n, why != NULL ? why : "out of memory");
				PQfreemem(why);
				return;
			}
			PQconninfoFree(o);
		}
		free(*(char **)field);
		*(char **)field = strdup(str);
		return;
	}
	case CONF_BOOL:
		if (type != CONFIG_TYPE_BOOL) {
			conf_error(e, line, "%s must be true or false", def->name);
			return;
		}
		*(bool *)field = config_setting_get_bool(s);
		return;
	case CONF_AUTO:
		if (type == CONFIG_TYPE_STRING) {
			const char *str = config_setting_get_string(s);
			if (strcmp(str, "auto") == 0)
				*(int *)field = 0;
			else
				conf_error(e, line, "%s must be \"auto\" or an integer, not \"%s\"",
				    def->name, str);
			return;
		}
		/* FALLTHROUGH */
	case CONF_INT:
	case CONF_SIZE:
		if (type != CONFIG_TYPE_INT && type != CONFIG_TYPE_INT64) {
			conf_error(e, line, "%s must be an integer", def->name);
			return;
		}
		v = (double)config_setting_get_int64(s);
		break;
	case CONF_DOUBLE:
		if (type == CONFIG_TYPE_FLOAT)
			v = config_setting_get_float(s);
		else if (type == CONFIG_TYPE_INT || type == CONFIG_TYPE_INT64)
			v = (double)config_setting_get_int64(s);
		else {
			conf_error(e, line, "%s must be a number", def->name);
			return;
		}
		break;
	}
	if (v < def->min) {
		conf_error(e, line, "%s must be >= %g", def->name, def->min);
		return;
	}
	if (v > def->max) {
		conf_error(e, line, "%s must be <= %g", def->name, def->max);
		return;
	}
	if (def->type == CONF_INT || def->type == CONF_AUTO)
		*(int *)field = (int)v;
	else if (def->type == CONF_SIZE)
		*(size_t *)field = (size_t)v;
	else
		*(double *)field = v;
}

/* Apply every member of group s found in table defs; unknown names are errors. */
static void
conf_apply_group(struct conf_errors *e, config_setting_t *group, const struct conf_setting *defs,
    size_t n_defs, void *base, const char *const *also_known)
{
	int count = config_setting_length(group);

	for (int i = 0; i < count; i++) {
		config_setting_t *s = config_setting_get_elem(group, i);
		const char *name = config_setting_name(s);
		size_t j;

		if (name == NULL)
			continue;
		for (j = 0; j < n_defs; j++)
			if (strcmp(defs[j].name, name) == 0)
				break;
		if (j < n_defs) {
			conf_store(e, &defs[j], s, base);
			continue;
		}
		bool known = false;
		for (size_t k = 0; also_known != NULL && also_known[k] != NULL; k++)
			if (strcmp(also_known[k], name) == 0)
				known = true;
		if (!known)
			conf_error(e, config_setting_source_line(s), "unknown setting \"%s\"", name);
	}
}

static void conf_check_url(struct conf_errors *, int, char *);
static int conf_resolve_user(const char *, uint32_t *);

/*
 * A tokenizer is a built-in vocabulary's name or, since only this file may
 * name one, the absolute path of a .tiktoken file; never a relative path,
 * which would depend on the daemon's working directory.
 */
static void
conf_check_tokenizer(struct conf_errors *e, int line, const char *name)
{
	const char *b;

	if (name[0] == '/')
		return;
	for (size_t i = 0; (b = tokenizer_builtin(i)) != NULL; i++)
		if (strcmp(b, name) == 0)
			return;
	conf_error(e, line, "tokenizer must be cl100k_base, o200k_base or the absolute path "
	    "of a .tiktoken file, not \"%s\"", name);
}

/* A string member of a budget group, or NULL; wrong types are errors. */
static const char *
conf_budget_string(struct conf_errors *e, config_setting_t *g, const char *name, int i)
{
	config_setting_t *s = config_setting_get_member(g, name);

	if (s == NULL)
		return NULL;
	if (config_setting_type(s) != CONFIG_TYPE_STRING) {
		conf_error(e, config_setting_source_line(s), "budgets[%d]: %s must be a string", i, name);
		return NULL;
	}
	return config_setting_get_string(s);
}

/* Read the `budgets` list: { scope; who; unit; period; limit; } each. */
static void
conf_read_budgets(struct conf_errors *e, struct conf *c, config_setting_t *list)
{
	int n = config_setting_length(list);

	if (!config_setting_is_list(list)) {
		conf_error(e, config_setting_source_line(list), "budgets must be a list: ( { ... }, ... )");
		return;
	}
	c->budgets = calloc(n ? (size_t)n : 1, sizeof *c->budgets);
	if (c->budgets == NULL)
		return;
	for (int i = 0; i < n; i++) {
		config_setting_t *g = config_setting_get_elem(list, i);
		struct budget_conf *b = &c->budgets[c->n_budgets];
		int line = config_setting_source_line(g);
		enum budget_scope scope;
		enum budget_unit unit;
		enum budget_period period;
		config_setting_t *lim;

		if (!config_setting_is_group(g)) {
			conf_error(e, line, "budgets[%d] must be a group { ... }", i);
			continue;
		}
		for (int k = 0; k < config_setting_length(g); k++) {
			config_setting_t *m = config_setting_get_elem(g, k);
			bool known = false;
			for (const char *const *nm = conf_budget_settings; *nm != NULL; nm++)
				known |= strcmp(*nm, config_setting_name(m)) == 0;
			if (!known)
				conf_error(e, config_setting_source_line(m), "unknown setting \"%s\"",
				    config_setting_name(m));
		}
		const char *sc = conf_budget_string(e, g, "scope", i);
		const char *who = conf_budget_string(e, g, "who", i);
		const char *un = conf_budget_string(e, g, "unit", i);
		const char *pe = conf_budget_string(e, g, "period", i);
		const char *fit = conf_budget_string(e, g, "fit", i);
		enum budget_fit fit_v;
		if (sc == NULL)
			sc = "all";
		if (un == NULL)
			un = "money";
		if (pe == NULL)
			pe = "ever";
		if (budget_scope_parse(sc, &scope) == -1) {
			conf_error(e, line, "budgets[%d]: scope must be all, user, tag or model, not \"%s\"", i, sc);
			continue;
		}
		if (budget_unit_parse(un, &unit) == -1) {
			conf_error(e, line, "budgets[%d]: unit must be money or tokens, not \"%s\"", i, un);
			continue;
		}
		if (budget_period_parse(pe, &period) == -1) {
			conf_error(e, line, "budgets[%d]: period must be day, month or ever, not \"%s\"", i, pe);
			continue;
		}
		if (fit != NULL && budget_fit_parse(fit, &fit_v) == -1) {
			conf_error(e, line, "budgets[%d]: fit must be shrink or refuse, not \"%s\"", i, fit);
			continue;
		}
		if (scope != BUDGET_ALL && (who == NULL || *who == '\0')) {
			conf_error(e, line, "budgets[%d]: who is required for scope %s", i, sc);
			continue;
		}
		if (scope == BUDGET_USER && conf_resolve_user(who, &b->uid) == -1) {
			for (size_t j = 0; j < c->n_api_keys && !b->named; j++)
				b->named = c->api_keys[j].named && strcmp(c->api_keys[j].user, who) == 0;
			if (!b->named) {
				conf_error(e, line, "budgets[%d]: no user \"%s\" (a system user name, a uid, "
				    "or the user of an api_keys entry)", i, who);
				continue;
			}
		}
		lim = config_setting_get_member(g, "limit");
		if (lim == NULL || (config_setting_type(lim) != CONFIG_TYPE_INT &&
		    config_setting_type(lim) != CONFIG_TYPE_INT64 &&
		    config_setting_type(lim) != CONFIG_TYPE_FLOAT)) {
			conf_error(e, lim ? (int)config_setting_source_line(lim) : line,
			    "budgets[%d]: limit must be a number", i);
			continue;
		}
		b->limit = config_setting_type(lim) == CONFIG_TYPE_FLOAT ?
		    config_setting_get_float(lim) : (double)config_setting_get_int64(lim);
		if (b->limit < 0) {
			conf_error(e, config_setting_source_line(lim), "budgets[%d]: limit must be >= 0", i);
			continue;
		}
		b->scope = strdup(sc);
		b->who = who ? strdup(who) : NULL;
		b->unit = strdup(un);
		b->period = strdup(pe);
		b->fit = fit != NULL ? strdup(fit) : NULL;
		c->n_budgets++;
	}
}

/* Resolve a system user name or uid; -1 when neither ((uid_t)-1 is no uid: see ledger.h). */
static int
conf_resolve_user(const char *who, uint32_t *uid)
{
	struct passwd *pw = getpwnam(who);
	char *end;
	unsigned long long n;

	if (pw != NULL && pw->pw_uid != (uid_t)LEDGER_UID_NAMED) {
		*uid = (uint32_t)pw->pw_uid;
		return 0;
	}
	errno = 0;
	n = strtoull(who, &end, 10);
	if (*who < '0' || *who > '9' || *end != '\0' || errno != 0 || n >= LEDGER_UID_NAMED)
		return -1;
	*uid = (uint32_t)n;
	return 0;
}

/* Check one http_listen address: "HOST:PORT" (HOST an address), "[V6]:PORT" or "unix:/path". */
static bool
conf_listen_valid(const char *a, const char **why)
{
	const char *colon;
	char *end;
	unsigned long port;

	if (strncmp(a, "unix:", 5) == 0) {
		*why = "unix: needs an absolute path of at most 107 bytes";
		return a[5] == '/' && strlen(a + 5) < 108;
	}
	*why = "expected \"127.0.0.1:PORT\", \"[::1]:PORT\" or \"unix:/path\"";
	if ((colon = strrchr(a, ':')) == NULL || colon == a)
		return false;
	if (a[0] == '[' && colon[-1] != ']')
		return false;
	errno = 0;
	port = strtoul(colon + 1, &end, 10);
	if (colon[1] == '\0' || *end != '\0' || errno != 0 || port > 65535) {
		*why = "the port must be 0 to 65535";
		return false;
	}
	return true;
}

/* Read http_listen: one string or a list of strings. */
static void
conf_read_listen(struct conf_errors *e, struct conf *c, config_setting_t *s)
{
	int line = config_setting_source_line(s);
	int n = config_setting_type(s) == CONFIG_TYPE_STRING ? 1 : config_setting_length(s);
	const char *why;

	if (config_setting_type(s) != CONFIG_TYPE_STRING && !config_setting_is_aggregate(s)) {
		conf_error(e, line, "http_listen must be a list of strings: ( \"127.0.0.1:8642\" )");
		return;
	}
	for (size_t i = 0; i < c->n_http_listen; i++)
		free(c->http_listen[i]);
	free(c->http_listen);
	c->http_listen = calloc(n > 0 ? (size_t)n : 1, sizeof *c->http_listen);
	c->n_http_listen = 0;
	c->http_listen_default = false;
	if (c->http_listen == NULL)
		return;
	for (int i = 0; i < n; i++) {
		config_setting_t *m = config_setting_type(s) == CONFIG_TYPE_STRING ? s :
		    config_setting_get_elem(s, i);
		const char *a = config_setting_get_string(m);
		if (a == NULL) {
			conf_error(e, config_setting_source_line(m), "http_listen[%d] must be a string", i);
			continue;
		}
		if (!conf_listen_valid(a, &why)) {
			conf_error(e, config_setting_source_line(m), "http_listen[%d] \"%s\": %s", i, a, why);
			continue;
		}
		c->http_listen[c->n_http_listen++] = strdup(a);
	}
}

/*
 * Why an api_keys user that is no system user cannot be billed by name, or
 * NULL when it can: 1 to 64 bytes of UTF-8 without control characters, and
 * not all digits (that would be a uid, which must be below 4294967295).
 */
static const char *
conf_user_name_invalid(const char *u)
{
	size_t len = strlen(u);
	const unsigned char *p = (const unsigned char *)u;

	if (len == 0 || len > 64)
		return "a name must be 1 to 64 bytes";
	if (strspn(u, "0123456789") == len)
		return "a uid must be below 4294967295";
	for (size_t i = 0; i < len; i++)
		if (p[i] < 0x20 || p[i] == 0x7f)
			return "a name must not contain control characters";
	/* strictly, as the ledger stores it: a name it would change could not be matched */
	if (!message_utf8_valid(u, len))
		return "a name must be UTF-8";
	return NULL;
}

/* Read api_keys: ( { sha256 = "HEX"; user = "NAME"; tag = "TAG"; }, ... ). */
static void
conf_read_keys(struct conf_errors *e, struct conf *c, config_setting_t *list)
{
	int n = config_setting_length(list);

	if (!config_setting_is_list(list)) {
		conf_error(e, config_setting_source_line(list), "api_keys must be a list: ( { ... }, ... )");
		return;
	}
	c->api_keys = calloc(n ? (size_t)n : 1, sizeof *c->api_keys);
	if (c->api_keys == NULL)
		return;
	for (int i = 0; i < n; i++) {
		config_setting_t *g = config_setting_get_elem(list, i);
		struct api_key_conf *k = &c->api_keys[c->n_api_keys];
		int line = config_setting_source_line(g);
		const char *hex = NULL, *user = NULL, *tag = NULL;
		bool tag_override = false;

		if (!config_setting_is_group(g)) {
			conf_error(e, line, "api_keys[%d] must be a group { ... }", i);
			continue;
		}
		bool bad = false;
		for (int j = 0; j < config_setting_length(g); j++) {
			config_setting_t *m = config_setting_get_elem(g, j);
			const char *name = config_setting_name(m);
			bool known = false;
			for (const char *const *nm = conf_key_settings; *nm != NULL; nm++)
				known |= strcmp(*nm, name) == 0;
			if (!known) {
				conf_error(e, config_setting_source_line(m), "unknown setting \"%s\"", name);
				bad = true;
			} else if (strcmp(name, "tag_override") == 0) {
				if (config_setting_type(m) != CONFIG_TYPE_BOOL) {
					conf_error(e, config_setting_source_line(m), "api_keys[%d]: "
					    "tag_override must be true or false", i);
					bad = true;
				} else
					tag_override = config_setting_get_bool(m);
			} else if (config_setting_type(m) != CONFIG_TYPE_STRING) {
				conf_error(e, config_setting_source_line(m), "api_keys[%d]: %s must be a string",
				    i, name);
				bad = true;
			} else if (strcmp(name, "sha256") == 0)
				hex = config_setting_get_string(m);
			else if (strcmp(name, "user") == 0)
				user = config_setting_get_string(m);
			else
				tag = config_setting_get_string(m);
		}
		if (bad)
			continue;
		if (hex == NULL || strlen(hex) != 64 || strspn(hex, "0123456789abcdefABCDEF") != 64) {
			conf_error(e, line, "api_keys[%d]: sha256 must be 64 hex digits (ollmctl key new "
			    "prints it)", i);
			continue;
		}
		if (user == NULL || *user == '\0') {
			conf_error(e, line, "api_keys[%d]: user is required", i);
			continue;
		}
		k->named = false;
		if (conf_resolve_user(user, &k->uid) == -1) {
			const char *why = conf_user_name_invalid(user);
			if (why != NULL) {
				conf_error(e, line, "api_keys[%d]: user \"%.64s\": %s", i, user, why);
				continue;
			}
			k->uid = LEDGER_UID_NAMED;
			k->named = true;
		}
		for (size_t j = 0; j < 64; j++)
			k->sha256[j] = (char)(hex[j] >= 'A' && hex[j] <= 'F' ? hex[j] - 'A' + 'a' : hex[j]);
		for (size_t j = 0; j < c->n_api_keys; j++)
			if (strcmp(c->api_keys[j].sha256, k->sha256) == 0)
				conf_error(e, line, "api_keys[%d]: the same key as api_keys[%zu]", i, j);
		k->user = strdup(user);
		k->tag = tag != NULL && *tag != '\0' ? strdup(tag) : NULL;
		k->tag_override = tag_override;
		c->n_api_keys++;
	}
}

/* Add one alias, checked against those before it. */
static void
conf_add_alias(struct conf_errors *e, struct conf *c, int line, const char *name, const char *model)
{
	if (name == NULL || *name == '\0' || model == NULL || *model == '\0') {
		conf_error(e, line, "aliases: an alias and its model must be non-empty strings");
		return;
	}
	if (strcmp(name, model) == 0) {
		conf_error(e, line, "aliases: \"%s\" is an alias of itself", name);
		return;
	}
	for (size_t i = 0; i < c->n_aliases; i++) {
		if (strcmp(c->aliases[i].name, name) == 0) {
			conf_error(e, line, "aliases: \"%s\" is given twice", name);
			return;
		}
	}
	c->aliases[c->n_aliases].name = strdup(name);
	c->aliases[c->n_aliases].model = strdup(model);
	c->n_aliases++;
}

/*
 * Read `aliases`: a group { claude-sonnet-4-5 = "qwen2.5-coder-32b"; } for
 * names libconfig takes as setting names, or a list of groups
 * ( { name = "gpt-4.1"; model = "qwen2.5-7b-instruct"; } ) for any name.
 */
static void
conf_read_aliases(struct conf_errors *e, struct conf *c, config_setting_t *set)
{
	int n = config_setting_length(set), line = config_setting_source_line(set);

	if (!config_setting_is_group(set) && !config_setting_is_list(set)) {
		conf_error(e, line, "aliases must be a group { alias = \"model\"; } or a list "
		    "( { name = \"alias\"; model = \"model\"; } )");
		return;
	}
	if ((c->aliases = calloc(n > 0 ? (size_t)n : 1, sizeof *c->aliases)) == NULL)
		return;
	for (int i = 0; i < n; i++) {
		config_setting_t *m = config_setting_get_elem(set, i);
		int ml = config_setting_source_line(m);
		const char *name = NULL, *model = NULL;
		if (config_setting_is_group(set)) {
			name = config_setting_name(m);
			model = config_setting_get_string(m);
			if (model == NULL) {
				conf_error(e, ml, "aliases: %s must be a string, the model it names", name);
				continue;
			}
		} else if (!config_setting_is_group(m) ||
		    config_setting_lookup_string(m, "name", &name) != CONFIG_TRUE ||
		    config_setting_lookup_string(m, "model", &model) != CONFIG_TRUE ||
		    config_setting_length(m) != 2) {
			conf_error(e, ml, "aliases[%d] must be { name = \"alias\"; model = \"model\"; }", i);
			continue;
		}
		conf_add_alias(e, c, ml, name, model);
	}
	for (size_t i = 0; i < c->n_aliases; i++) {
		if (conf_alias_model(c, c->aliases[i].model) != NULL)
			conf_error(e, line, "aliases: \"%s\" names \"%s\", itself an alias; name a "
			    "model", c->aliases[i].name, c->aliases[i].model);
		for (size_t k = 0; k < c->n_upstreams; k++)
			if (strcmp(c->upstreams[k].model, c->aliases[i].name) == 0)
				conf_error(e, line, "aliases: \"%s\" is the model of upstream %s; an "
				    "alias cannot hide it", c->aliases[i].name, c->upstreams[k].name);
	}
}

const char *
conf_alias_model(const struct conf *c, const char *name)
{
	for (size_t i = 0; name != NULL && i < c->n_aliases; i++)
		if (strcmp(c->aliases[i].name, name) == 0)
			return c->aliases[i].model;
	return NULL;
}

/* Read the `upstreams` list. */
static void
conf_read_upstreams(struct conf_errors *e, struct conf *c, config_setting_t *list)
{
	int n = config_setting_length(list);
	int line = config_setting_source_line(list);

	if (!config_setting_is_list(list) && !config_setting_is_array(list)) {
		conf_error(e, line, "upstreams must be a list: ( { ... }, { ... } )");
		return;
	}
	if (n == 0) {
		conf_error(e, line, "upstreams must not be empty");
		return;
	}
	c->upstreams = calloc((size_t)n, sizeof *c->upstreams);
	if (c->upstreams == NULL)
		return;
	c->n_upstreams = (size_t)n;
	for (int i = 0; i < n; i++) {
		config_setting_t *g = config_setting_get_elem(list, i);
		struct upstream_conf *u = &c->upstreams[i];
		char name[32];

		conf_upstream_defaults(u);
		snprintf(name, sizeof name, "upstream%d", i + 1);
		free(u->name);
		u->name = strdup(i == 0 ? "local" : name);
		if (!config_setting_is_group(g)) {
			conf_error(e, config_setting_source_line(g), "upstreams[%d] must be a group { ... }", i);
			continue;
		}
		if (config_setting_get_member(g, "base_url") == NULL)
			conf_error(e, config_setting_source_line(g), "upstreams[%d]: base_url is required", i);
		conf_apply_group(e, g, conf_upstream_settings, N_UP, u, NULL);
		config_setting_t *url = config_setting_get_member(g, "base_url");
		if (url != NULL)
			conf_check_url(e, config_setting_source_line(url), u->base_url);
		config_setting_t *tok = config_setting_get_member(g, "tokenizer");
		if (tok != NULL)
			conf_check_tokenizer(e, config_setting_source_line(tok), u->tokenizer);
		for (int j = 0; j < i; j++)
			if (strcmp(c->upstreams[j].name, u->name) == 0)
				conf_error(e, config_setting_source_line(g), "upstream name \"%s\" is used twice", u->name);
	}
}

/* Check that a base URL is http(s) and drop trailing slashes. */
static void
conf_check_url(struct conf_errors *e, int line, char *url)
{
	if (strncmp(url, "http://", 7) != 0 && strncmp(url, "https://", 8) != 0) {
		conf_error(e, line, "base_url must start with http:// or https://, not \"%s\"", url);
		return;
	}
	size_t n = strlen(url);
	while (n > 8 && url[n - 1] == '/')
		url[--n] = '\0';
}

/* The single MetaGPT-style upstream from top-level names and the environment. */
static void
conf_single_upstream(struct conf_errors *e, struct conf *c, config_t *cfg)
{
	const char *s;
	config_setting_t *st;
	int line = 0;

	c->upstreams = calloc(1, sizeof *c->upstreams);
	if (c->upstreams == NULL)
		return;
	c->n_upstreams = 1;
	conf_upstream_defaults(c->upstreams);
	if (cfg != NULL) {
		if ((st = config_lookup(cfg, "open_llm_api_base")) != NULL) {
			static const struct conf_setting def = UP("open_llm_api_base", CONF_STRING, base_url, 0, 0);
			conf_store(e, &def, st, c->upstreams);
			line = config_setting_source_line(st);
		}
		if ((st = config_lookup(cfg, "open_llm_api_model")) != NULL) {
			static const struct conf_setting def = UP("open_llm_api_model", CONF_STRING, model, 0, 0);
			conf_store(e, &def, st, c->upstreams);
		}
		if ((st = config_lookup(cfg, "rpm")) != NULL) {
			static const struct conf_setting def = UP("rpm", CONF_INT, rpm, 0, 1e9);
			conf_store(e, &def, st, c->upstreams);
		}
	}
	if ((s = getenv("OPEN_LLM_API_BASE")) != NULL && *s != '\0') {
		free(c->upstreams->base_url);
		c->upstreams->base_url = strdup(s);
	}
	if ((s = getenv("OPEN_LLM_API_MODEL")) != NULL && *s != '\0') {
		free(c->upstreams->model);
		c->upstreams->model = strdup(s);
	}
	conf_check_url(e, line, c->upstreams->base_url);
}

struct conf *
conf_load(const char *path, char **errors)
{
	struct conf_errors e = { NULL, 0, path ? path : "(defaults)" };
	struct conf *c = conf_defaults();
	config_t cfg;
	config_setting_t *list = NULL;
	bool have_cfg = false;
	const char *env;

	*errors = NULL;
	if (c == NULL)
		return NULL;
	config_init(&cfg);
	if (path != NULL) {
		c->path = strdup(path);
		if (config_read_file(&cfg, path) != CONFIG_TRUE) {
			if (config_error_type(&cfg) == CONFIG_ERR_FILE_IO)
				conf_error(&e, 0, "cannot read: %s", strerror(errno ? errno : ENOENT));
			else
				conf_error(&e, config_error_line(&cfg), "%s", config_error_text(&cfg));
			goto out;
		}
		have_cfg = true;
		conf_apply_group(&e, config_root_setting(&cfg), conf_top_settings, N_TOP, c,
		    conf_metagpt_settings);
		list = config_lookup(&cfg, "upstreams");
	}
	if (list != NULL) {
		conf_read_upstreams(&e, c, list);
		static const char *const single[] = { "open_llm_api_base", "open_llm_api_model", "rpm" };
		for (size_t i = 0; i < 3; i++) {
			config_setting_t *st = config_lookup(&cfg, single[i]);
			if (st != NULL)
				conf_error(&e, config_setting_source_line(st),
				    "%s applies only without an upstreams list; set it in each upstream",
				    single[i]);
		}
	} else
		conf_single_upstream(&e, c, have_cfg ? &cfg : NULL);
	/* api_keys first: a user budget may name one of their named users */
	if (have_cfg && (list = config_lookup(&cfg, "api_keys")) != NULL)
		conf_read_keys(&e, c, list);
	if (have_cfg && (list = config_lookup(&cfg, "budgets")) != NULL)
		conf_read_budgets(&e, c, list);
	if (have_cfg && (list = config_lookup(&cfg, "http_listen")) != NULL)
		conf_read_listen(&e, c, list);
	if (have_cfg && (list = config_lookup(&cfg, "aliases")) != NULL)
		conf_read_aliases(&e, c, list);
	if ((env = getenv("OPENLLMD_SOCKET")) != NULL && *env != '\0') {
		free(c->socket_path);
		c->socket_path = strdup(env);
	}
	if (strlen(c->socket_path) >= 108)
		conf_error(&e, 0, "socket path is too long (%zu bytes, at most 107): %s",
		    strlen(c->socket_path), c->socket_path);
out:
	config_destroy(&cfg);
	if (e.len > 0) {
		*errors = e.buf;
		conf_free(c);
		return NULL;
	}
	return c;
}

void
conf_free(struct conf *c)
{
	if (c == NULL)
		return;
	for (size_t i = 0; i < c->n_upstreams; i++)
		conf_upstream_clear(&c->upstreams[i]);
	free(c->upstreams);
	for (size_t i = 0; i < c->n_aliases; i++) {
		free(c->aliases[i].name);
		free(c->aliases[i].model);
	}
	free(c->aliases);
	free(c->default_model);
	for (size_t i = 0; i < c->n_budgets; i++) {
		free(c->budgets[i].scope);
		free(c->budgets[i].who);
		free(c->budgets[i].unit);
		free(c->budgets[i].period);
		free(c->budgets[i].fit);
	}
	free(c->budgets);
	for (size_t i = 0; i < c->n_http_listen; i++)
		free(c->http_listen[i]);
	free(c->http_listen);
	for (size_t i = 0; i < c->n_api_keys; i++) {
		free(c->api_keys[i].user);
		free(c->api_keys[i].tag);
	}
	free(c->api_keys);
	free(c->path);
	free(c->socket_path);
	free(c->state_dir);
	free(c->fsync);
	free(c->on_ledger_error);
	free(c->budget_fit);
	free(c->fleet_postgres);
	free(c->fleet_node);
	free(c->fleet_offline);
	free(c->stats_visibility);
	free(c);
}

/* A user's own file: $XDG_CONFIG_HOME/openllmd/openllmd.conf, else under ~/.config. */
static int
conf_user_path(char *buf, size_t len)
{
	const char *env;
	int n;

	if ((env = getenv("XDG_CONFIG_HOME")) != NULL && *env == '/')
		n = snprintf(buf, len, "%s/openllmd/openllmd.conf", env);
	else if ((env = getenv("HOME")) != NULL && *env == '/')
		n = snprintf(buf, len, "%s/.config/openllmd/openllmd.conf", env);
	else
		return -1;
	return n > 0 && (size_t)n < len ? 0 : -1;
}

const char *
conf_default_path(const char *from_command_line)
{
	return conf_lookup_path(from_command_line, geteuid());
}

const char *
conf_lookup_path(const char *from_command_line, uid_t euid)
{
	static char user[4096];
	const char *env;

	if (from_command_line != NULL)
		return from_command_line;
	if ((env = getenv("OPENLLMD_CONFIG")) != NULL && *env != '\0')
		return env;
	if (euid != 0 && conf_user_path(user, sizeof user) == 0 && access(user, F_OK) == 0)
		return user;
	if (access(SYSCONFDIR "/openllmd/openllmd.conf", F_OK) == 0)
		return SYSCONFDIR "/openllmd/openllmd.conf";
	return NULL;
}

const char *const *
conf_setting_names(void)
{
	static const char *names[N_TOP + N_UP + 24];

	if (names[0] == NULL) {
		size_t n = 0;
		for (size_t i = 0; i < N_TOP; i++)
			names[n++] = conf_top_settings[i].name;
		for (size_t i = 0; i < N_UP; i++)
			names[n++] = conf_upstream_settings[i].name;
		names[n++] = "upstreams";
		names[n++] = "budgets";
		for (size_t i = 0; conf_budget_settings[i] != NULL; i++)
			names[n++] = conf_budget_settings[i];
		names[n++] = "open_llm_api_base";
		names[n++] = "open_llm_api_model";
		names[n++] = "http_listen";
		names[n++] = "api_keys";
		for (size_t i = 0; conf_key_settings[i] != NULL; i++)
			names[n++] = conf_key_settings[i];
		names[n++] = "aliases";
		names[n] = NULL;
	}
	return names;
}
