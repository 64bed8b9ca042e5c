/* message.c: typed encode/decode of every v1 request and reply. */
#ifndef OLLM_MESSAGE_H
#define OLLM_MESSAGE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <msgpack.h>

#define PROTOCOL_VERSION 1
#define MESSAGE_MAX_DEPTH 32    /* deeper nesting is refused */
#define MESSAGE_MAX_TOKENS 16777216    /* largest chat max_tokens (2^24) */
/*
 * A request frame holds at most this many msgpack objects (every value, key
 * and container counts one), checked before it is unpacked: unpacked, each
 * takes some 24 bytes however small its encoding.
 */
#define MESSAGE_MAX_OBJECTS 65536
#define MESSAGE_MAX_EXTRA (256u * 1024)     /* encoded bytes of a chat's extra */
#define MESSAGE_MAX_EXTRA_OBJECTS 16384     /* objects in a chat's extra */

/*
 * Ownership: a decoded request or reply owns all its memory (strings are
 * copied and NUL-terminated; strings holding NUL bytes are rejected, except
 * the text that is counted and sent on: a message's content, a tokens
 * request's text, and a reply's content and reasoning, which may hold U+0000
 * and carry their length) and is
 * released with message_request_free / message_reply_free. "Raw" fields hold
 * the msgpack bytes of a free-form value (a map or array), copied.
 * Optional integers use -1 for "absent", optional doubles NAN.
 */

enum message_op {
	OP_CHAT = 1, OP_TOKENS, OP_STATS, OP_MODELS, OP_PING, OP_CANCEL, OP_RESET,
	OP_LOGS, OP_TOP
};

#define LOGS_LIMIT_DEFAULT 50   /* rows of a logs reply when no limit is asked */
#define LOGS_LIMIT_MAX 1000     /* the most rows one logs request may ask for */

struct message_raw {
	uint8_t *data;              /* msgpack bytes of one object, NULL if absent */
	size_t len;
};

struct chat_message {
	char *role;                 /* required */
	char *content;              /* NULL when absent or nil */
	char *name;                 /* optional */
	char *tool_call_id;         /* optional */
	struct message_raw tool_calls;  /* optional array */
	size_t content_len;         /* bytes of content, NUL included; 0: strlen(content) */
};

struct chat_request {
	struct chat_message *messages;
	size_t n_messages;          /* >= 1 */
	char *model;                /* optional */
	bool stream;                /* default true */
	int64_t max_tokens;         /* -1 absent, else 1 .. MESSAGE_MAX_TOKENS */
	double temperature;         /* NAN absent */
	double top_p;               /* NAN absent */
	char **stop;                /* `stop` may be a string or an array of strings */
	size_t n_stop;
	int64_t seed;
	bool has_seed;
	char *tag;                  /* optional accounting label */
	struct message_raw extra;   /* optional map merged into the upstream body */
	bool status;                /* the client wants status frames (default false) */
};

struct tokens_request {
	char *text;                 /* exactly one of text and messages */
	size_t text_len;            /* bytes of text, NUL included; 0: strlen(text) */
	struct chat_message *messages;
	size_t n_messages;
	char *encoding;             /* optional */
	char *model;                /* optional */
	bool ids;
};

struct stats_request {
	char *by;                   /* optional: model, user, tag, day */
	int64_t since;              /* -1 absent, else epoch seconds */
	bool fleet;                 /* answer for the whole fleet, from the shared database */
};

/* logs: journal rows, newest first. */
struct logs_request {
	int64_t since;              /* -1 absent, else epoch seconds */
	int64_t until;              /* -1 absent, else epoch seconds (exclusive) */
	int64_t user;               /* -1 absent, else a uid */
	char *user_name;            /* `user` as a string: a named user's rows; NULL otherwise */
	char *tag;                  /* optional; "" matches untagged rows */
	char *model;                /* optional */
	char *status;               /* optional: done, error, cancelled */
	int64_t limit;              /* -1 absent, else 1 .. LOGS_LIMIT_MAX */
	bool fleet;                 /* every node's rows, from the shared database */
};

struct request {
	uint64_t id;                /* >= 1 */
	enum message_op op;
	union {
		struct chat_request chat;
		struct tokens_request tokens;
		struct stats_request stats;
		struct logs_request logs;
		uint64_t cancel_target; /* OP_CANCEL */
	} u;
};

/* Decode failure: the error code to send, a message, and the id if it was read. */
struct message_error {
	const char *code;           /* bad_frame, bad_request, too_large, unknown_op, unsupported_version; internal: out of memory */
	uint64_t id;                /* 0 when the id could not be read */
	bool unknown_type;          /* a reply of a type this side does not know: skip it */
	char message[256];
};

/* --- replies ------------------------------------------------------------ */

enum reply_type { REPLY_DELTA = 1, REPLY_DONE, REPLY_RESULT, REPLY_ERROR, REPLY_STATUS };

struct usage {
	int64_t prompt_tokens;
	int64_t completion_tokens;
	int64_t total_tokens;
	bool estimated;
};

struct delta_reply {
	char *content;              /* optional */
	char *reasoning;            /* optional */
	struct message_raw tool_calls;  /* optional array */
	size_t content_len;         /* bytes of content, NUL included; 0: strlen(content) */
	size_t reasoning_len;       /* the same for reasoning */
};

struct done_reply {
	char *finish_reason;        /* optional */
	struct usage usage;
	double cost;
	char *model;
	char *upstream;
	int64_t ttft_ms;            /* -1 absent */
	int64_t latency_ms;
	char *content;              /* non-stream only */
	char *reasoning;            /* non-stream only */
	struct message_raw tool_calls;  /* non-stream only */
	bool not_durable;           /* the ledger could not record it: "durable": false */
	int64_t max_tokens;         /* -1 absent; the length limit the model server was sent */
	bool budget_shrunk;         /* max_tokens was lowered to fit a budget */
	int64_t max_tokens_asked;   /* -1 absent; with budget_shrunk: the limit before (asked or default) */
	bool cut;                   /* the server wrote past max_tokens: the reply was cut there */
	size_t content_len;         /* bytes of content, NUL included; 0: strlen(content) */
	size_t reasoning_len;       /* the same for reasoning */
};

struct error_reply {
	char *code;
	char *message;
	double retry_after;         /* NAN absent; seconds */
	int64_t status;             /* -1 absent; upstream HTTP status */
	struct message_raw detail;  /* optional map, e.g. budget left */
};

/* status: a chat waits (in a limiter queue, or before a retry); sent only when asked. */
struct status_reply {
	char *state;                /* "queued" or "retrying" */
	char *reason;               /* queued: rpm, tpm, concurrency, queue; retrying: the cause */
	char *message;              /* for humans */
	double wait_s;              /* NAN absent; expected wait or the backoff */
	int64_t attempt;            /* -1 absent; retrying: the attempt that failed, 1-based */
	int64_t of;                 /* -1 absent; retrying: the attempts allowed in all */
};

struct counters {
	uint64_t requests, errors, prompt_tokens, completion_tokens, total_tokens, estimated;
	double cost;
};

struct counters_entry {
	char *key;
	struct counters c;
};

struct counters_map {
	struct counters_entry *entries;
	size_t n;
};

struct budget_status {
	char *scope;                /* "all", "user:NAME", "tag:NAME", "model:NAME" */
	char *unit;                 /* "money" or "tokens" */
	char *period;               /* "day", "month", "ever" */
	double limit;
	double used;                /* settled plus reserved */
	double left;
};

struct stats_result {
	int64_t since;
	struct counters total;
	struct counters_map by_model, by_user, by_tag, by_day;
	struct counters_map by_node;    /* fleet stats only */
	double max_budget;          /* NAN: none */
	double budget_left;         /* NAN: none */
	struct budget_status *budgets;
	size_t n_budgets;
};

struct upstream_info {
	char *name;
	char *base_url;
	char *model;
	bool healthy;
	int64_t in_flight;
	char **models;              /* what GET /v1/models listed */
	size_t n_models;
};

struct models_result {
	struct upstream_info *upstreams;
	size_t n;
};

struct ping_result {
	char *version;
	int64_t uptime_s;
	int64_t in_flight;
};

struct tokens_result {
	int64_t count;
	char *encoding;
	uint32_t *ids;              /* NULL unless asked */
	size_t n_ids;
};

/* One journal record, as the logs op returns it. */
struct log_row {
	int64_t time_ms;            /* when it finished, ms since the epoch */
	uint32_t uid;
	char *tag;                  /* NULL: untagged */
	char *model;
	char *upstream;
	char *status;               /* done, error, cancelled */
	char *error;                /* the error code, when not done */
	int64_t prompt_tokens;
	int64_t completion_tokens;
	bool estimated;
	double cost;
	int64_t latency_ms;
	int64_t ttft_ms;            /* -1: not recorded */
	char *node;                 /* fleet logs: the node that served it; NULL otherwise */
	char *user;                 /* a named user (an API key's, not a system account); NULL: uid's */
};

struct logs_result {
	struct log_row *rows;       /* newest first */
	size_t n;
	bool truncated;             /* the scan stopped at its work bound: older rows may match */
};

/* A chat in flight, as the top op shows it. */
struct top_chat {
	uint64_t id;                /* the request id on its connection */
	uint32_t uid;
	char *model;
	char *upstream;
	char *tag;                  /* optional */
	char *state;                /* queued, running, retrying */
	int64_t age_ms;
	int64_t tokens;             /* streamed pieces so far (about one token each) */
	double tokens_per_s;        /* since the first piece; 0 before it */
	char *user;                 /* a named user (an API key's, not a system account); NULL: uid's */
};

struct top_model {
	char *model;
	int64_t in_flight;
	double tokens_per_s;        /* summed over its chats streaming now */
};

struct top_upstream {
	char *name;
	bool healthy;
	int64_t in_flight;          /* holding a limiter slot */
	int64_t queued;             /* waiting in its limiter queue */
};

struct top_result {
	int64_t uptime_s;
	int64_t in_flight;
	struct top_chat *chats;
	size_t n_chats;
	struct top_model *models;
	size_t n_models;
	struct top_upstream *upstreams;
	size_t n_upstreams;
	struct budget_status *budgets;
	size_t n_budgets;
};

/* What a `result` carries depends on the op of the request it answers. */
struct result_reply {
	enum message_op op;
	union {
		struct ping_result ping;
		struct tokens_result tokens;
		struct stats_result stats;
		struct models_result models;
		struct logs_result logs;
		struct top_result top;
		bool ok;                /* OP_CANCEL, OP_RESET */
	} u;
};

struct reply {
	uint64_t id;
	enum reply_type type;
	union {
		struct delta_reply delta;
		struct done_reply done;
		struct result_reply result;
		struct error_reply error;
		struct status_reply status;
	} u;
};

/*
 * Defaults for a request or reply built by hand: everything zero, optional
 * integers -1, optional doubles NAN, chat stream true. op is used when type is
 * REPLY_RESULT.
 */
void message_request_init(struct request *, enum message_op);
void message_reply_init(struct reply *, enum reply_type, enum message_op op);

/* Decode one frame body as a request; 0, or -1 with err filled. */
int message_request_decode(const uint8_t *body, size_t len, struct request **out,
    struct message_error *err);
void message_request_free(struct request *);

/*
 * Decode one frame body as a reply. A result's shape depends on the op it
 * answers, which the caller knows from the id: pass it as op.
 */
int message_reply_decode(const uint8_t *body, size_t len, enum message_op op,
    struct reply **out, struct message_error *err);
void message_reply_free(struct reply *);

/*
 * Append one whole frame (header and body) to sb. -1 when memory runs out or a
 * field cannot be sent (a required string NULL, a string not valid UTF-8, a
 * number not finite, a raw value that is not one msgpack map or array); sb is
 * then left as it was.
 */
int message_request_encode(msgpack_sbuffer *sb, const struct request *);
int message_reply_encode(msgpack_sbuffer *sb, const struct reply *);

/* Name of an op ("chat", ...) and back; -1 for an unknown name. */
const char *message_op_name(enum message_op);
int message_op_parse(const char *, size_t, enum message_op *);

/* The length of a text that may hold NUL: len, or strlen(s) when len is 0. */
size_t message_text_len(const char *s, size_t len);

/* Check that len bytes are valid UTF-8 (no overlongs, surrogates or > U+10FFFF). */
bool message_utf8_valid(const char *s, size_t len);

#endif
