/* api_head.c: an HTTP connection's bytes, seen before evhttp reads them. */
#ifndef OLLM_API_HEAD_H
#define OLLM_API_HEAD_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/*
 * evhttp (libevent 2.1) reads a request's whole body before it calls the
 * server back, and offers no hook on an incoming request's headers. This
 * scanner follows the bytes of one connection as they arrive, exactly as
 * evhttp will split them: where a request's line and headers end, what
 * they say of its body and key, and where the body ends, so that the front
 * can refuse a request (a wrong key, a body too large, two Content-Lengths
 * that differ) before its body is read, and time each phase.
 *
 * Lines end at LF, a CR before it dropped (evhttp's EVBUFFER_EOL_CRLF). A
 * header's name is what precedes its first colon, compared without case;
 * its value follows, leading spaces and trailing white space removed. The
 * methods evhttp gives a body to are POST, PUT, PATCH, GET, DELETE, OPTIONS
 * and CONNECT; a request without Content-Length has none. Whatever evhttp
 * would read differently from this (a folded header line, a Content-Length
 * not all digits, two that differ) is an error here.
 */

#define API_HEAD_LINE_MAX 1100      /* bytes of a line kept: enough for a key of 1 KiB */
#define API_HEAD_LINE_INLINE 256    /* ... in the struct; a longer one in a buffer of its own */
#define API_HEAD_KEY_MAX 1024       /* longest Authorization value read */

enum api_head_event {
	API_HEAD_MORE,              /* every byte given was taken */
	API_HEAD_STARTED,           /* a request's first byte is next (nothing taken) */
	API_HEAD_HEADERS,           /* its headers ended: the fields below describe it */
	API_HEAD_BODY_DONE,         /* the last byte of its body was taken */
	API_HEAD_ERROR              /* evhttp would not read it as said: status and error */
};

enum api_head_state { API_HEAD_IDLE, API_HEAD_LINE, API_HEAD_FIELDS, API_HEAD_BODY };

struct api_head {
	enum api_head_state state;
	char line_inline[API_HEAD_LINE_INLINE];  /* the line being read, its first bytes */
	char *line_long;            /* ... its first API_HEAD_LINE_MAX when longer; NULL: none */
	size_t line_len;
	bool line_cut;              /* the line was longer than that */
	bool line_cr;               /* its last byte taken was a CR */
	/* what the request line and headers said (from API_HEAD_HEADERS on) */
	char method[8];             /* "" when longer */
	bool body_method;           /* evhttp reads a body for this method */
	int64_t content_length;     /* -1: none */
	bool transfer_encoding;     /* a Transfer-Encoding header came */
	bool chunked;               /* ... and the first says chunked */
	char *authorization;        /* the first Authorization header's value; NULL: none */
	bool authorization_long;    /* ... longer than API_HEAD_KEY_MAX: not kept */
	uint64_t body_left;         /* bytes of the body still to come */
	/* API_HEAD_ERROR */
	int status;                 /* 400 */
	const char *error;          /* why, for the client */
};

void api_head_init(struct api_head *);
void api_head_clear(struct api_head *);

/* The body this request has, in bytes (0 for none), once its headers ended. */
uint64_t api_head_body_length(const struct api_head *);

/*
 * Take bytes p[0..n) of the connection; *used says how many. Returns at
 * each event: call again with what is left. After API_HEAD_ERROR nothing
 * more can be read on this connection.
 */
enum api_head_event api_head_feed(struct api_head *, const char *p, size_t n, size_t *used);

#endif
