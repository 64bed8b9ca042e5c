/*
 * ollm.h: libollm, the C client library of openllmd.
 *
 * A connection (struct ollm) talks to the daemon over its Unix socket with
 * blocking calls: each call sends one request and returns when its reply has
 * arrived, the connection's timeout has passed, or it failed. Every call
 * returns OLLM_OK (0) or an enum ollm_err; the details of the last failure
 * are in ollm_last_error().
 *
 * Threads: there is no global state. A connection is used by one thread at a
 * time, except ollm_cancel(), which any thread, the delta callback or a
 * signal handler may call at any moment. Two threads with two connections
 * need no locking at all.
 *
 * Memory: strings and arrays in results are owned by the result and released
 * by its _clear function; a cleared or zeroed result may be cleared again.
 */
#ifndef OLLM_H
#define OLLM_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define OLLM_DEFAULT_TIMEOUT_MS (11 * 60 * 1000)

enum ollm_err {
	OLLM_OK = 0,
	OLLM_ERR_UNAVAILABLE,           /* the daemon cannot be reached */
	OLLM_ERR_BAD_REQUEST,           /* the daemon refused the request's fields */
	OLLM_ERR_BUDGET_EXCEEDED,       /* a budget would be overshot */
	OLLM_ERR_RATE_LIMITED,          /* see retry_after */
	OLLM_ERR_UPSTREAM_ERROR,        /* the model server failed; see status */
	OLLM_ERR_UPSTREAM_UNAVAILABLE,  /* the model server cannot be reached */
	OLLM_ERR_TIMEOUT,               /* the model server, or the daemon, did not answer in time */
	OLLM_ERR_CANCELLED,             /* ollm_cancel() or the delta callback stopped it */
	OLLM_ERR_FORBIDDEN,             /* this user may not do that (or use the socket) */
	OLLM_ERR_UNKNOWN_MODEL,         /* no upstream serves the model, or no such encoding */
	OLLM_ERR_TOO_LARGE,             /* the request is bigger than the daemon or model accepts */
	OLLM_ERR_INTERNAL,              /* a fault inside the daemon (or an error code unknown here) */
	OLLM_ERR_IO,                    /* the connection failed or was closed */
	OLLM_ERR_PROTOCOL,              /* the daemon sent something unreadable, or cannot read us */
	OLLM_ERR_UNSUPPORTED,           /* the daemon does not know this op or protocol version */
	OLLM_ERR_INVALID,               /* a bad argument: NULL, not UTF-8, not connected */
	OLLM_ERR_NOMEM,                 /* out of memory */
	OLLM_ERR_UNTRUSTED,             /* the socket or the process behind it is not one to trust */
	OLLM_ERR_FLEET_UNAVAILABLE      /* the fleet's shared database cannot be reached, or the
	                                   daemon has no fleet (fleet stats and logs, fleet budgets) */
};

/* The last failure on a connection. */
struct ollm_error {
	enum ollm_err code;
	char daemon_code[32];           /* the daemon's code ("budget_exceeded"), or "" */
	char message[512];              /* for humans */
	double retry_after;             /* seconds; < 0 when not given */
	int status;                     /* the model server's HTTP status; -1 when not given */
	char detail_json[512];          /* the error's detail map as JSON (budget_exceeded:
	                                   scope, unit, period, left, needed), or "" */
};

struct ollm;

/* A new, unconnected connection; NULL when out of memory. */
struct ollm *ollm_new(void);

/* Close and free; NULL is fine. */
void ollm_free(struct ollm *);

/*
 * Resolve the daemon's socket: path if not NULL or empty, else
 * $OPENLLMD_SOCKET, else /run/openllmd/openllmd.sock for root, else
 * $XDG_RUNTIME_DIR/openllmd.sock (or /tmp/openllmd-UID.sock without
 * XDG_RUNTIME_DIR), except that a user whose own socket does not exist uses
 * the system one when that exists. OLLM_ERR_INVALID when it does not fit.
 */
int ollm_socket_path(const char *path, char *buf, size_t len);

/*
 * Connect to the socket that ollm_socket_path(path) names. Before anything
 * is sent: a socket in the private /tmp/openllmd-UID directory is used only
 * when that directory is a real directory of ours with mode 0700, and the
 * process that answers (SO_PEERCRED) must run as root, as the caller's own
 * user, or as the service user openllm. Otherwise OLLM_ERR_UNTRUSTED: no
 * prompt ever goes to a socket another user may have put in its place.
 */
int ollm_connect(struct ollm *, const char *path);

/* 1 while connected; a failure of the connection itself (io, protocol, a
 * timeout waiting for the daemon) closes it, and ollm_connect opens it again. */
int ollm_connected(const struct ollm *);

/* The socket path of the last ollm_connect, or "". */
const char *ollm_path(const struct ollm *);

/* Longest wait for the daemon in one step (connect, send, next frame); <= 0: none. */
void ollm_set_timeout(struct ollm *, int timeout_ms);

const struct ollm_error *ollm_last_error(const struct ollm *);

/* A short description of a code ("budget exceeded"). */
const char *ollm_strerror(int code);

/* The code's name as the daemon spells it ("budget_exceeded"), "ok", "io", ... */
const char *ollm_err_name(int code);

/* --- chat ----------------------------------------------------------------- */

struct ollm_message {
	const char *role;               /* "system", "user", "assistant", "tool" */
	const char *content;            /* NULL: none */
	const char *name;               /* optional */
	size_t content_len;             /* bytes of content, which may hold NUL; 0: strlen */
};

struct ollm_chat_opts {
	const char *model;              /* NULL: the daemon's default */
	const char *tag;                /* accounting label; NULL: none */
	int stream;                     /* deltas as they come (default 1) */
	int64_t max_tokens;             /* <= 0: the model server's default; at most 16777216 */
	double temperature;             /* < 0: not sent */
	double top_p;                   /* < 0: not sent */
	const char *const *stop;        /* n_stop stop sequences */
	size_t n_stop;
	int has_seed;
	int64_t seed;
	const void *extra;              /* msgpack bytes of one map merged into the */
	size_t extra_len;               /* model server's JSON body (tools, ...) */
};

/* One piece of a streamed reply; the pointers are valid during the callback. */
struct ollm_delta {
	const char *content;            /* NULL when the piece has none */
	const char *reasoning;          /* NULL when the piece has none */
	const char *tool_calls_json;    /* tool-call deltas as JSON text, or NULL */
	const void *tool_calls_raw;     /* the same as msgpack bytes */
	size_t tool_calls_raw_len;
};

struct ollm_usage {
	int64_t prompt_tokens;
	int64_t completion_tokens;
	int64_t total_tokens;
	int estimated;                  /* counted locally, not reported by the model server */
};

/* The end of a chat that succeeded. */
struct ollm_done {
	char *finish_reason;            /* NULL when not given */
	struct ollm_usage usage;
	double cost;
	char *model;                    /* NULL when not known */
	char *upstream;
	int64_t ttft_ms;                /* -1 when not measured */
	int64_t latency_ms;             /* -1 when not measured */
	char *content;                  /* stream 0 only, else NULL */
	char *reasoning;                /* stream 0 only */
	char *tool_calls_json;          /* stream 0 only */
	int durable;                    /* 0: served, but the daemon's ledger could not record it */
	int64_t max_tokens;             /* the length limit the model server was sent; -1: none */
	int budget_shrunk;              /* 1: max_tokens was lowered to fit a budget */
	int64_t max_tokens_asked;       /* with budget_shrunk: the limit before (asked, or the default) */
	int cut;                        /* 1: the server wrote past max_tokens; the reply was cut */
};

/*
 * Called for each delta of a streamed chat with the request's id. Return 0 to
 * go on, anything else to cancel the request (ollm_chat then ends with
 * OLLM_ERR_CANCELLED, unless the reply was already complete).
 */
typedef int (*ollm_delta_cb)(struct ollm *, uint64_t id,
    const struct ollm_delta *, void *arg);

/*
 * A chat is waiting: queued behind a rate or concurrency limit (state
 * "queued", reason "rpm", "tpm", "concurrency" or "queue"), or about to try
 * the model server again (state "retrying", reason the cause, e.g.
 * "connection refused"). The pointers are valid during the callback.
 */
struct ollm_status {
	const char *state;              /* "queued" or "retrying" */
	const char *reason;
	const char *message;            /* for humans */
	double wait_s;                  /* the expected wait or the backoff; < 0 unknown */
	int attempt;                    /* retrying: the attempt that failed, 1-based; 0 absent */
	int of;                         /* retrying: the attempts allowed in all; 0 absent */
};

typedef void (*ollm_status_cb)(struct ollm *, uint64_t id,
    const struct ollm_status *, void *arg);

/*
 * Ask for status frames on the chats of this connection and hand them to cb
 * (NULL: stop asking). Without it the daemon sends none.
 */
void ollm_set_status_cb(struct ollm *, ollm_status_cb cb, void *arg);

/* Defaults: stream 1, temperature and top_p not sent, the rest absent. */
void ollm_chat_opts_init(struct ollm_chat_opts *);

/*
 * Send one chat (the whole conversation, oldest message first) and wait for
 * its end, calling cb for each delta. done, if not NULL, is filled on
 * success; release it with ollm_done_clear. opts NULL means the defaults.
 */
int ollm_chat(struct ollm *, const struct ollm_message *msgs, size_t n_msgs,
    const struct ollm_chat_opts *opts, ollm_delta_cb cb, void *arg,
    struct ollm_done *done);
void ollm_done_clear(struct ollm_done *);

/*
 * Cancel the request with this id, or with id 0 whatever request is in flight
 * on the connection. Returns at once; the thread in ollm_chat sends the
 * cancel and its call ends with OLLM_ERR_CANCELLED. Safe from any thread,
 * from the delta callback and from a signal handler. No effect when nothing
 * is in flight.
 */
void ollm_cancel(struct ollm *, uint64_t id);

/* --- tokens --------------------------------------------------------------- */

struct ollm_tokens_req {
	const char *text;               /* exactly one of text and messages */
	size_t text_len;                /* bytes of text, which may hold NUL; 0: strlen */
	const struct ollm_message *messages;
	size_t n_messages;
	const char *encoding;           /* "cl100k_base", "o200k_base"; or NULL */
	const char *model;              /* use this model's tokenizer; or NULL */
	int ids;                        /* also return the token ids */
};

struct ollm_tokens {
	int64_t count;
	char *encoding;
	uint32_t *ids;                  /* NULL unless asked */
	size_t n_ids;
};

int ollm_tokens(struct ollm *, const struct ollm_tokens_req *, struct ollm_tokens *);
void ollm_tokens_clear(struct ollm_tokens *);

/* --- stats ---------------------------------------------------------------- */

struct ollm_counters {
	uint64_t requests;              /* chat requests that finished */
	uint64_t errors;                /* of those, the ones that did not end done */
	uint64_t prompt_tokens;
	uint64_t completion_tokens;
	uint64_t total_tokens;
	uint64_t estimated;             /* requests whose tokens were counted locally */
	double cost;
};

struct ollm_counters_entry {
	char *key;                      /* model, uid in decimal, tag or YYYY-MM-DD */
	struct ollm_counters c;
};

struct ollm_counters_map {
	struct ollm_counters_entry *entries;
	size_t n;
};

struct ollm_budget {
	char *scope;                    /* "all", "user:NAME", "tag:NAME", "model:NAME" */
	char *unit;                     /* "money" or "tokens" */
	char *period;                   /* "day", "month" or "ever" */
	double limit;
	double used;
	double left;
};

struct ollm_stats {
	int64_t since;                  /* epoch seconds */
	struct ollm_counters total;
	struct ollm_counters_map by_model, by_user, by_tag, by_day;
	int has_max_budget;
	double max_budget;
	double budget_left;
	struct ollm_budget *budgets;
	size_t n_budgets;
	struct ollm_counters_map by_node;  /* ollm_stats_fleet only */
};

/* by: NULL, "model", "user", "tag" or "day"; since: epoch seconds, < 0 for all. */
int ollm_stats(struct ollm *, const char *by, int64_t since, struct ollm_stats *);
/* The same for the whole fleet, from the shared database, with by_node. */
int ollm_stats_fleet(struct ollm *, const char *by, int64_t since, struct ollm_stats *);
void ollm_stats_clear(struct ollm_stats *);

/* --- models, ping, reset -------------------------------------------------- */

struct ollm_upstream {
	char *name;
	char *base_url;
	char *model;                    /* its default model, or NULL */
	int healthy;
	int64_t in_flight;
	char **models;                  /* what the model server listed */
	size_t n_models;
};

struct ollm_models {
	struct ollm_upstream *upstreams;
	size_t n;
};

int ollm_models(struct ollm *, struct ollm_models *);
void ollm_models_clear(struct ollm_models *);

struct ollm_ping {
	char version[64];
	int64_t uptime_s;
	int64_t in_flight;
};

int ollm_ping(struct ollm *, struct ollm_ping *);

/* Reset the daemon's usage counters (root or the daemon's user only). */
int ollm_reset(struct ollm *);

/* --- logs: finished requests from the journal, newest first ---------------- */

struct ollm_logs_req {
	int64_t since;                  /* epoch seconds; < 0: no bound */
	int64_t until;                  /* epoch seconds, exclusive; < 0: no bound */
	int64_t user;                   /* a uid; < 0: yours (all, for root) */
	const char *tag;                /* "" for untagged; NULL: any */
	const char *model;              /* NULL: any */
	const char *status;             /* "done", "error", "cancelled"; NULL: any */
	int limit;                      /* rows at most; <= 0: 50 (the daemon caps it at 1000) */
	int fleet;                      /* every node's rows, from the shared database */
	const char *user_name;          /* a named user's rows (an API key's user with no
	                                   account; root or the daemon's user only); NULL: user */
};

struct ollm_log_row {
	int64_t time_ms;                /* when it finished, ms since the epoch */
	uint32_t uid;
	char *tag;                      /* NULL: untagged */
	char *model;
	char *upstream;
	char *status;                   /* "done", "error", "cancelled" */
	char *error;                    /* the error code, or NULL */
	int64_t prompt_tokens;
	int64_t completion_tokens;
	int estimated;
	double cost;
	int64_t latency_ms;
	int64_t ttft_ms;                /* -1 when not recorded */
	char *node;                     /* fleet rows: the node that served it; else NULL */
	char *user;                     /* a named user (an API key's, no system account; uid is
	                                   then 4294967295); NULL: the uid's */
};

struct ollm_logs {
	struct ollm_log_row *rows;
	size_t n;
	int truncated;                  /* the daemon stopped scanning: older rows may match */
};

/* A request of NULL means the defaults. */
int ollm_logs(struct ollm *, const struct ollm_logs_req *, struct ollm_logs *);
void ollm_logs_clear(struct ollm_logs *);

/* --- top: what the daemon is doing now ------------------------------------- */

struct ollm_top_chat {
	uint64_t id;                    /* the request id on its own connection */
	uint32_t uid;
	char *model;
	char *upstream;
	char *tag;                      /* NULL: untagged */
	char *state;                    /* "queued", "running", "retrying" */
	int64_t age_ms;
	int64_t tokens;                 /* streamed pieces so far (about a token each) */
	double tokens_per_s;
	char *user;                     /* a named user (an API key's, no system account); NULL */
};

struct ollm_top_model {
	char *model;
	int64_t in_flight;
	double tokens_per_s;
};

struct ollm_top_upstream {
	char *name;
	int healthy;
	int64_t in_flight;
	int64_t queued;
};

struct ollm_top {
	int64_t uptime_s;
	int64_t in_flight;
	struct ollm_top_chat *chats;
	size_t n_chats;
	struct ollm_top_model *models;
	size_t n_models;
	struct ollm_top_upstream *upstreams;
	size_t n_upstreams;
	struct ollm_budget *budgets;
	size_t n_budgets;
};

int ollm_top(struct ollm *, struct ollm_top *);
void ollm_top_clear(struct ollm_top *);

#ifdef __cplusplus
}
#endif

#endif
