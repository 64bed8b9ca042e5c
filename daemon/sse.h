/* sse.c: incremental server-sent-events parser. */
#ifndef OLLM_SSE_H
#define OLLM_SSE_H

#include <stdbool.h>
#include <stddef.h>

/*
 * One dispatched event. event is the `event:` field, NULL when the server
 * gave none (the default "message" type). data is the joined `data:` lines,
 * NUL-terminated (len excludes the NUL); it is valid only during the call.
 * Return 0 to go on, -1 to stop: the feed then returns -1.
 */
typedef int (*sse_event_cb)(void *arg, const char *event, const char *data,
    size_t len);

/*
 * Parsing follows the WHATWG event-stream rules: lines end with "\r\n",
 * "\n" or "\r"; a line starting with ':' is a comment; "field: value" loses
 * one leading space of the value; several `data:` lines join with "\n";
 * a blank line dispatches the event if it had at least one `data:` field;
 * `id:`, `retry:` and unknown fields are skipped; a leading UTF-8 BOM is
 * dropped. One extension: an `error:` field (older llama.cpp servers report
 * a failure mid-stream as "error: {json}") counts as data of an event typed
 * "error", so it is not lost.
 *
 * Memory is bounded: the data and the event name of one event may hold at
 * most max_event bytes together; comments and skipped fields are never
 * stored. Exceeding the bound is an error, after which every feed fails.
 */
struct sse_parser {
	size_t max_event;
	sse_event_cb cb;
	void *arg;

	int state;                  /* where in a line the next byte falls */
	bool after_cr;              /* a "\r" ended the last line */
	bool failed;                /* an error or a stop: feeds fail */
	bool bom_done;              /* past the point where a BOM may be */
	size_t bom_len;             /* bytes of a BOM held back so far */

	char field[8];              /* field name read so far */
	size_t field_len;
	int field_kind;             /* the field the current value belongs to */

	char *data;                 /* NUL-terminated, len excludes the NUL */
	size_t data_len;
	size_t data_size;
	size_t n_data;              /* data fields in the current event */
	bool error_field;           /* the event had an `error:` field */

	char *event;
	size_t event_len;
	size_t event_size;
	bool has_event;
};

void sse_parser_init(struct sse_parser *, size_t max_event, sse_event_cb cb,
    void *arg);
void sse_parser_clear(struct sse_parser *);

/* Forget the stream so far (for a new response); buffers are kept. */
void sse_parser_reset(struct sse_parser *);

/* Parse len more bytes, calling cb for each complete event; 0 or -1. */
int sse_parser_feed(struct sse_parser *, const char *buf, size_t len,
    char *cause, size_t cause_len);

/*
 * The stream has ended. An unterminated event is discarded, as the spec
 * says, and reported: -1 when bytes of an event (not of a mere comment)
 * were left without the blank line that ends it.
 */
int sse_parser_finish(struct sse_parser *, char *cause, size_t cause_len);

#endif
