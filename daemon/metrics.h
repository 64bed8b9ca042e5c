/* metrics.c: Prometheus counters of finished requests, and gauges of the server now. */
#ifndef OLLM_METRICS_H
#define OLLM_METRICS_H

#include <stdint.h>

struct evbuffer;
struct server;

/* One request that ended; strings are borrowed for the call. */
struct metrics_event {
	const char *model;          /* served, or an alias; NULL: "other" (a name nobody serves) */
	uint32_t uid;
	const char *tag;            /* NULL: none */
	const char *status;         /* "done" or the error code, as logs show it */
	int64_t prompt_tokens;
	int64_t completion_tokens;
	double cost;
	int64_t ttft_ms;            /* -1: no token reached the client */
	int64_t latency_ms;         /* -1: never admitted */
	const char *user;           /* a named user (labelled by name); NULL: uid's */
};

void metrics_record(const struct metrics_event *);
/* Append the Prometheus text exposition (version 0.0.4) of everything to out. */
void metrics_render(struct server *, struct evbuffer *out);
void metrics_free(void);

#endif
