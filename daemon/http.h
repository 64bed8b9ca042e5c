/* http.c: the only file that touches the curl multi handle (libevent glue). */
#ifndef OLLM_HTTP_H
#define OLLM_HTTP_H

#include <stdbool.h>
#include <stddef.h>

#include <curl/curl.h>
#include <event2/event.h>

struct http;
struct http_transfer;

/* What is known of the response so far. */
struct http_response {
	long status;                /* 0 until headers arrived */
	const char *content_type;   /* NULL when not sent */
	CURLcode result;            /* done_cb only */
	const char *error;          /* done_cb only: curl's message when result != CURLE_OK */
	bool connected;             /* done_cb only: the TCP connection was made */
	double retry_after;         /* done_cb only: Retry-After in seconds, -1 if absent */
	int os_errno;               /* done_cb only: the system error of a failed connect, or 0 */
};

enum http_data_action { HTTP_DATA_OK = 0, HTTP_DATA_PAUSE = 1, HTTP_DATA_ABORT = -1 };

/*
 * Callbacks of one transfer. data_cb is called from inside libcurl: it must
 * not cancel or free the transfer (return HTTP_DATA_ABORT instead). done_cb is
 * called once the transfer has left the multi handle; the transfer is freed
 * right after it returns. Neither is called after http_transfer_cancel.
 */
struct http_callbacks {
	enum http_data_action (*data_cb)(void *arg, const struct http_response *, const char *buf,
	    size_t len);
	void (*done_cb)(void *arg, const struct http_response *);
};

struct http_request {
	const char *method;         /* "GET" or "POST" */
	const char *url;
	const char *body;           /* NULL for GET; JSON */
	const char *api_key;        /* sent as a Bearer token, NULL for none */
	long connect_timeout_ms;
	long timeout_ms;            /* 0: none */
};

struct http *http_new(struct event_base *);
void http_free(struct http *);

/* Start a transfer; NULL with cause on failure (no callback is then called). */
struct http_transfer *http_transfer_start(struct http *, const struct http_request *,
    const struct http_callbacks *, void *arg, char *cause, size_t cause_len);

/* Stop a transfer now and free it: safe from any callback but the transfer's own data_cb. */
void http_transfer_cancel(struct http_transfer *);

/* Resume a transfer that data_cb paused. */
void http_transfer_resume(struct http_transfer *);

/* Number of transfers in the multi handle. */
size_t http_active(const struct http *);

#endif
