/* The daemon's shared state: server, sessions, upstreams and in-flight chats. */
#ifndef OLLM_OPENLLMD_H
#define OLLM_OPENLLMD_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/queue.h>
#include <sys/types.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/event.h>
#include <msgpack.h>

#include "daemon/budget.h"
#include "daemon/conf.h"
#include "daemon/limiter.h"
#include "protocol/frame.h"
#include "protocol/message.h"

struct http;
struct http_transfer;
struct ledger;
struct tokenizer;
struct chat;
struct budgets;
struct budget_reservation;
struct api;

/* One model server. Retired upstreams (after a reload) live until their last chat ends. */
struct upstream {
	struct server *server;
	struct upstream_conf conf;  /* owned copy */
	struct tokenizer *tokenizer;  /* shared, owned by the server's registry */
	bool healthy;
	int failures;               /* consecutive connection-level failures */
	int64_t in_flight;
	char **models;              /* last GET /models answer */
	size_t n_models;
	struct http_transfer *probe;
	char *probe_body;           /* GET /models reply so far */
	size_t probe_len;
	struct event *probe_timer;
	struct limiter *limiter;    /* rpm, tpm, concurrency and the wait queue */
	struct event *limiter_timer;
	bool retired;
	TAILQ_ENTRY(upstream) entry;
};
TAILQ_HEAD(upstream_list, upstream);

/*
 * What a front (the msgpack session, the HTTP front) gives the chats it
 * starts. None of these may free the chat or the owner: a front that must
 * drop a client defers it to the event loop.
 */
struct chat_front {
	/* One reply: deltas (and statuses), then done or error last. */
	void (*reply)(void *owner, struct chat *, const struct reply *);
	/* Whether the owner's output is full: the transfer pauses until chat_resume. */
	bool (*blocked)(void *owner);
	/* The chat ends and is freed once this returns: forget it. */
	void (*release)(void *owner, struct chat *);
};

/*
 * A request passed through to the model server as it came (POST /completions,
 * /embeddings), admitted and accounted like a chat. Its replies carry the
 * server's bytes: each delta's content is one SSE event's data, and done's
 * content the whole JSON body of a reply that was not streamed.
 */
struct chat_passthrough {
	const char *path;           /* "/completions" or "/embeddings"; static */
	char *body;                 /* the client's JSON object: owned by the chat once passed */
	char *prompt_text;          /* what to count locally (owned likewise); NULL: nothing */
	size_t prompt_len;          /* its bytes: it may hold NUL (U+0000), counted like any character */
	int64_t prompt_ids;         /* prompt tokens the client sent as ids */
	bool usage_wanted;          /* stream: pass the usage-only chunk on */
	bool embeddings;            /* no completion tokens: none reserved */
};

/* One chat request in flight; its front keeps it in a list through entry. */
struct chat {
	struct server *server;
	const struct chat_front *front;
	void *owner;                /* the front's object, passed to its callbacks */
	uint32_t uid;               /* who is billed (LEDGER_UID_NAMED for a named user) */
	char *user;                 /* the named user billed (an API key's); NULL: uid */
	struct request *req;        /* owns the decoded request */
	uint64_t id;
	struct upstream *upstream;
	char *model;                /* the model asked for, or the upstream's */
	struct http_transfer *transfer;
	void *parse;                /* upstream reply parser state, chat.c's */
	char *body;                 /* JSON sent upstream, kept for retries */
	int attempt;
	int unconnected;            /* attempts that ended before connecting */
	struct event *timer;        /* retry backoff, first byte and idle timeouts */
	int64_t prompt_estimate;    /* local count of what the server renders, -1: not counted */
	int64_t prompt_reserved;    /* what the budgets hold for the prompt: the count x the ratio */
	int64_t max_tokens_asked;   /* the client's length limit, -1: none */
	int64_t max_tokens_sent;    /* the length limit sent upstream, -1: none */
	int64_t max_tokens_wanted;  /* the limit before any budget shrank it: asked, or the default */
	bool budget_shrunk;         /* max_tokens_sent is less than asked, to fit a budget */
	bool fleet_shrunk;          /* shrunk once already to what the fleet had left */
	bool budget_waiting;        /* in the server's budget_waiters, for others to settle */
	bool cut;                   /* the server wrote past max_tokens_sent: cut there */
	int64_t started_ms;
	int64_t first_delta_ms;     /* -1 until the first delta reached the client */
	bool paused;                /* the front is blocked: transfer paused, stall timer armed */
	bool queued;                /* waiting in the upstream's limiter */
	bool admitted;              /* holds a limiter slot until it ends */
	int64_t reserved_tokens;    /* prompt + max_tokens, held against tpm and budgets */
	int64_t reserved_completion;    /* of which the completion: billed when a reply is cut */
	struct budget_reservation *reservation;
	uint64_t fleet_rsv;         /* the fleet reservation asked for, 0: none; the record carries it */
	bool fleet_wait;            /* waiting for the fleet database's answer */
	struct limiter_waiter waiter;
	struct message_raw error_detail;  /* detail map of the error reply, if any */
	bool passthrough;
	struct chat_passthrough pass;
	TAILQ_ENTRY(chat) entry;
	TAILQ_ENTRY(chat) wait_entry;   /* in budget_waiters */
	/*
	 * Ended: its record is staged in the ledger, the answer waits for the
	 * commit at the end of the loop pass (server_flush); still linked by
	 * its front until then.
	 */
	struct {
		bool finishing;
		bool committed;         /* the batch holding its record was written, or failed */
		bool durable;           /* ... and its record is in the journal */
		const char *code;       /* NULL: done; else a static error code */
		char *message;
		char *cause;            /* why the record is not durable */
		uint64_t rid;           /* the record's number in the ledger; 0: none */
		long status;
		double retry_after;
		double cost;
		int64_t end_ms;
		struct usage usage;
		TAILQ_ENTRY(chat) entry;
	} fin;
};
TAILQ_HEAD(chat_list, chat);

/*
 * One client connection. Closing is always deferred to the loop (close_ev),
 * so a send or a chat callback never frees the session it was given; a dead
 * session is unlinked at once and freed from the loop later still.
 */
struct session {
	struct server *server;
	struct bufferevent *bev;    /* writes what the socket refused; never reads */
	struct event *read_ev;      /* frames in; its timeout is frame_timeout */
	struct event *close_ev;     /* closes the session from the loop */
	uid_t uid;
	pid_t pid;
	struct frame_reader reader;
	struct chat_list chats;
	size_t n_chats;
	bool dead;                  /* closed: unlinked, bev freed, waiting to be freed */
	bool doomed;                /* will be closed from the loop; nothing more is read or sent */
	bool closing;               /* close once the output is written */
	bool over_watermark;        /* output above the high watermark: transfers paused */
	bool frame_timer_armed;     /* a frame is half read: frame_timeout runs */
	bool write_armed;           /* the socket was full: the bufferevent writes the rest */
	bool flush_pending;         /* in the server's flush list */
	TAILQ_ENTRY(session) entry;
	TAILQ_ENTRY(session) flush_entry;
};
TAILQ_HEAD(session_list, session);

struct tokenizer_entry {
	char *name;
	struct tokenizer *tokenizer;
	struct tokenizer_entry *next;
};

struct server {
	struct event_base *base;
	struct conf *conf;
	char *conf_path;
	struct http *http;
	struct api *api;            /* the HTTP front, api.c's */
	struct event *drain_ev;     /* re-checks the drain while HTTP answers are being written */
	struct ledger *ledger;
	struct upstream_list upstreams;
	struct upstream_list retired;
	struct upstream_list dead_upstreams;  /* retired with no chat left, freed from the loop */
	struct event *reap_ev;
	struct session_list sessions;
	size_t n_sessions;
	/*
	 * Work done once per loop pass, before the loop sleeps again: the
	 * ledger records of the chats that ended are written with one write(2),
	 * then their answers sent, then every client output written
	 * (server_flush, from flush_ev).
	 */
	struct event *flush_ev;
	bool flush_armed;
	struct chat_list finishing;     /* chats ended, waiting for their record's commit */
	struct session_list flush_list; /* sessions with output to write */
	size_t output_bytes;        /* bytes waiting in every session's output */
	struct tokenizer_entry *tokenizers;
	int listen_fd;
	struct event *listen_ev;
	struct event *accept_retry;
	struct event *tick;
	int64_t started_ms;
	uint64_t served;            /* chat requests finished */
	int64_t in_flight;          /* chats started and not finished */
	bool draining;
	bool flushing;              /* closing every session after its last reply */
	int64_t drain_deadline_ms;
	uid_t own_uid;
	unsigned long long nofile;  /* the descriptor limit, raised to the hard one */
	int max_clients;            /* in effect: the setting fitted to nofile */
	int max_clients_per_uid;
	int max_clients_per_address;    /* HTTP clients not on this host, by address */
	int64_t refused_log_ms;     /* last refusal logged (monotonic) */
	unsigned refused_quiet;     /* refusals since, not logged */
	double total_cost;
	struct budgets *budgets;
	struct budget_ratios *prompt_ratios;    /* server's prompt count per local count */
	/* chats whose budgets are held by requests in flight, in order; asked again as those settle */
	struct chat_list budget_waiters;
	bool budget_freed;          /* a reservation was settled since the waiters were last asked */
	struct fleet *fleet;        /* NULL: no fleet_postgres */
};

extern struct server *server;

/* main.c */
int64_t now_ms(void);
int64_t now_mono_ms(void);
void server_check_drained(struct server *);
void server_flush_soon(struct server *);
void server_flush(struct server *);
void server_limits(struct server *, const struct conf *);
int server_budgets_load(struct server *, const struct conf *, char *cause, size_t cause_len);

/* listener.c */
int listener_check(const char *path, char *cause, size_t cause_len);
int listener_open(struct server *, char *cause, size_t cause_len);
void listener_close(struct server *);
void listener_pause(struct server *);
/* Connections open from uid, msgpack and HTTP (exact once they could reach the per-uid cap). */
int listener_uid_count(const struct server *, uid_t);

/* session.c */
void session_new(struct server *, int fd, uid_t uid, pid_t pid);
void session_send(struct session *, const struct reply *);
void session_send_error(struct session *, uint64_t id, const char *code, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
void session_close(struct session *);
void session_close_soon(struct session *);
void session_close_after_flush(struct session *);
void session_close_all(struct server *);
void session_flush_all(struct server *);
void session_start_chat(struct session *, struct request *);
struct chat *session_find_chat(struct session *, uint64_t id);

/* dispatch.c */
void dispatch_request(struct session *, struct request *);
struct tokenizer *dispatch_tokenizer(struct server *, const char *name, char *cause, size_t cause_len);
void dispatch_budget_label(const struct budget_def *, char *buf, size_t len);
/* -1 when s may see every user's rows and budgets, else its own uid. */
int64_t dispatch_visible_uid(const struct session *s);
void dispatch_fill_budgets(struct server *, int64_t uid, struct budget_status **, size_t *,
    double *max_budget, double *budget_left);

/* upstream.c */
int upstream_setup(struct server *, const struct conf *, char *cause, size_t cause_len);
void upstream_teardown(struct server *);
struct upstream *upstream_route(struct server *, const char *model);
void upstream_model_names(struct server *, char *buf, size_t len);
bool upstream_known_model(struct server *, const char *model);
void upstream_release(struct upstream *);
void upstream_record_result(struct upstream *, bool ok);
void upstream_fill_models(struct server *, struct models_result *);
void upstream_limiter_kick(struct upstream *);
void upstream_reap(struct server *);


/* status.c */
struct http_response;
void status_queued(struct chat *);
void status_retrying(struct chat *, const char *reason, const char *why, double wait_s);
void status_budget_wait(struct chat *, const char *why, double wait_s);
void status_cause(const struct http_response *, long status, char *buf, size_t len);
bool status_upstream_down(struct chat *);

/* logs.c */
void logs_answer(struct session *, struct request *);

/* top.c */
void top_answer(struct session *, struct request *);

/* chat.c */
int64_t chat_streamed(const struct chat *);
void chat_parse_pool_free(void);
struct chat *chat_new(struct server *, const struct chat_front *, void *owner, uint32_t uid,
    const char *user, struct request *);
struct chat *chat_new_passthrough(struct server *, const struct chat_front *, void *owner,
    uint32_t uid, const char *user, struct request *, struct chat_passthrough *);
void chat_start(struct chat *);
void chat_cancel(struct chat *, const char *code, const char *message);
void chat_resume(struct chat *);
void chat_admitted(struct chat *, int status, double retry_after);
void chat_commit(struct server *);
void chat_budget_retry(struct server *);

#endif
