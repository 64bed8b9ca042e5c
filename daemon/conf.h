/* conf.c: openllmd.conf (libconfig) -> struct conf, validated with file:line errors. */
#ifndef OLLM_CONF_H
#define OLLM_CONF_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "daemon/log.h"

struct upstream_conf {
	char *name;
	char *base_url;             /* without a trailing slash */
	char *model;
	char *api_key;              /* NULL: no Authorization header */
	char *tokenizer;
	int rpm;                    /* 0: no limit */
	int tpm;                    /* 0: no limit */
	int max_concurrency;        /* 0: no limit */
	int queue_max;
	double queue_timeout;       /* seconds */
	double timeout;             /* whole request, seconds */
	double connect_timeout;
	double first_byte_timeout;  /* 0: none */
	double idle_timeout;        /* longest gap between stream chunks; 0: none */
	int retries;
	int default_max_tokens;     /* reserved against budgets when a request names none */
	double prompt_price;        /* per 1,000 tokens */
	double completion_price;
};

/* One entry of the budgets list, validated. */
struct budget_conf {
	char *scope;                /* all | user | tag | model */
	char *who;                  /* user name or uid, tag, or model; NULL for all */
	uint32_t uid;               /* resolved for scope user */
	bool named;                 /* scope user: who is an api_keys named user, not a uid */
	char *unit;                 /* money | tokens */
	char *period;               /* day | month | ever */
	char *fit;                  /* shrink | refuse; NULL: budget_fit */
	double limit;
};

/* One entry of api_keys: a key known only by its SHA-256, and whom it bills. */
struct api_key_conf {
	char sha256[65];            /* lowercase hex */
	char *user;                 /* a system user name, a uid, or any other name */
	uint32_t uid;               /* resolved from user; LEDGER_UID_NAMED when named */
	bool named;                 /* user is no system user: requests are billed to the name */
	char *tag;                  /* NULL: none */
	bool tag_override;          /* X-Ollm-Tag may replace tag */
};

/* One model alias: requests for name are served as model. */
struct conf_alias {
	char *name;
	char *model;
};

#define CONF_HTTP_LISTEN_DEFAULT "127.0.0.1:8642"

struct conf {
	char *path;                 /* NULL: built-in defaults */
	char *socket_path;
	mode_t socket_mode;
	char *state_dir;
	enum log_level log_level;
	bool calc_usage;
	double max_budget;          /* 0 or less: none */
	char *budget_fit;           /* shrink | refuse: a request that does not fit what is left */
	int budget_min_reply;       /* the shortest reply a shrunk request may be sent with */
	char *fsync;                /* always | everysec | no */
	int retention_days;
	char *on_ledger_error;      /* refuse | serve */
	size_t max_frame;
	int max_clients;            /* 0: auto, from the descriptor limit */
	int max_clients_per_uid;    /* 0: auto, 256 or half of max_clients */
	int max_clients_per_address;  /* HTTP clients not on this host; 0: auto, max_clients_per_uid */
	char *stats_visibility;     /* own | all */
	double shutdown_grace;      /* seconds */
	double frame_timeout;       /* longest silence inside a half-read frame; 0: none */
	double stall_timeout;       /* longest a chat waits for its client to read; 0: none */
	size_t max_output_total;    /* bytes buffered for all clients together; 0: no cap */
	size_t max_output_per_client;  /* a client this far behind is dropped */
	char **http_listen;         /* "HOST:PORT", "[::1]:PORT" or "unix:/path" */
	size_t n_http_listen;
	bool http_listen_default;   /* not set: the default, whose bind failure is not fatal */
	bool require_key;           /* HTTP: no identity without an API key */
	size_t http_max_header;     /* bytes of request line and headers */
	double http_timeout;        /* HTTP: longest silence while reading a request or idle */
	double http_header_timeout; /* HTTP: from a request's first byte to its headers' end */
	double http_body_timeout;   /* HTTP: for a body, plus its length at http_body_min_rate */
	size_t http_body_min_rate;  /* HTTP: bytes a second a large body must keep up */
	size_t http_max_inflight_body;  /* HTTP: body bytes being read on all connections at once */
	struct api_key_conf *api_keys;
	size_t n_api_keys;
	char *fleet_postgres;       /* libpq conninfo; NULL: no fleet */
	char *fleet_node;           /* this host's name in the fleet; NULL: the host name */
	char *fleet_offline;        /* "refuse" or "local": budgeted requests while the database is away */
	double fleet_lease_ttl;     /* seconds a node's leases outlive its last word to the database */
	int fleet_retention_days;   /* raw fleet records older than this are dropped; 0: kept */
	struct upstream_conf *upstreams;
	size_t n_upstreams;
	struct budget_conf *budgets;
	size_t n_budgets;
	struct conf_alias *aliases;
	size_t n_aliases;
	char *default_model;        /* serves names no upstream serves or aliases; NULL: none */
};

/* The model an alias names, or NULL when name is no alias. */
const char *conf_alias_model(const struct conf *, const char *name);

/*
 * Load path (NULL: built-in defaults plus the environment). Every problem is
 * appended to errors as "FILE:LINE: message\n"; returns NULL when there was any.
 */
struct conf *conf_load(const char *path, char **errors);
void conf_free(struct conf *);
void conf_upstream_copy(struct upstream_conf *dst, const struct upstream_conf *src);
void conf_upstream_clear(struct upstream_conf *);

/*
 * The configuration file to use: -c, $OPENLLMD_CONFIG, then for a user other
 * than root $XDG_CONFIG_HOME/openllmd/openllmd.conf (~/.config without it),
 * then the system one, each only if it exists; NULL: built-in defaults.
 */
const char *conf_default_path(const char *from_command_line);
/* The same for a given effective uid. */
const char *conf_lookup_path(const char *from_command_line, uid_t euid);

/* Every setting name the parser knows, NULL-terminated (for docs checks). */
const char *const *conf_setting_names(void);

#endif
