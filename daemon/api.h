/* api.c: the OpenAI-compatible HTTP front (evhttp). */
#ifndef OLLM_API_H
#define OLLM_API_H

#include <stdbool.h>
#include <stddef.h>
#include <sys/types.h>

struct chat;
struct server;

/* Listen on http_listen (or the sockets systemd passed after the first); -1 with cause. */
int api_open(struct server *, char *cause, size_t cause_len);
/* Stop accepting connections; requests in flight go on. */
void api_stop(struct server *);
/* Whether no HTTP answer is left to write. */
bool api_flushed(struct server *);
void api_free(struct server *);
/* HTTP connections open (refused ones still being read out too): each holds a descriptor. */
size_t api_conns(const struct server *);
/* HTTP connections open from local user uid. */
int api_uid_conns(const struct server *, uid_t);
/* Call cb for each chat in flight on an HTTP connection (cb must not end it). */
void api_foreach_chat(struct server *, void (*cb)(struct chat *, void *), void *arg);

#endif
