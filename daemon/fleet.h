/* fleet.c: ship the ledger to a shared PostgreSQL table; fleet-wide stats from it. */
#ifndef OLLM_FLEET_H
#define OLLM_FLEET_H

#include <stddef.h>
#include <stdint.h>

struct fleet;
struct server;
struct session;
struct request;

/* The schema version this daemon creates and understands. */
#define FLEET_SCHEMA_VERSION	1
/* Records per INSERT. */
#define FLEET_BATCH_MAX		500

/*
 * Start shipping srv->ledger to the database named by conf->fleet_postgres
 * as node conf->fleet_node (or the host name). Connecting is asynchronous;
 * NULL with cause only when the node name cannot be found or memory is short.
 */
struct fleet *fleet_start(struct server *srv, char *cause, size_t cause_len);

/* Once a second: reconnect when due, time out a stuck connection or query, ship the backlog. */
void fleet_tick(struct fleet *, int64_t now_ms);

/* Answer a stats request with fleet: true from the database, later; takes ownership of nothing. */
void fleet_stats(struct fleet *, struct session *, const struct request *);

/* Answer a logs request with fleet: true from the database, later; uid -1: every user's rows. */
void fleet_logs(struct fleet *, struct session *, const struct request *, int64_t uid);

/* A session is going away: drop its pending answers. */
void fleet_forget(struct fleet *, struct session *);

/* Close the connection and free; queued stats requests are answered with an error. */
void fleet_free(struct fleet *);

#endif
