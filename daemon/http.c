/* libcurl's multi_socket API driven by libevent, after curl's hiperfifo.c. */
#include "config.h"

#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <curl/curl.h>
#include <event2/event.h>

#include "daemon/http.h"
#include "daemon/log.h"

#define HTTP_POOL_MAX 64         /* idle easy handles kept for reuse */

/* One transfer, attached to its easy handle with CURLOPT_PRIVATE. */
struct http_transfer {
	struct http *http;
	CURL *easy;                 /* kept with its options set when pooled */
	struct curl_slist *headers; /* built for api_key and has_body, kept with the handle */
	char *headers_key;          /* the api_key the list carries, NULL for none */
	bool headers_body;          /* the list has Content-Type */
	char *body;                 /* a copy of the request body, its buffer reused */
	size_t body_cap;
	struct http_callbacks cb;
	void *arg;
	char error[CURL_ERROR_SIZE];
	int paused;
	long status;                /* cached once the body starts */
	const char *content_type;
	bool have_headers;
	struct http_transfer *next_free;
};

struct http {
	struct event_base *base;
	CURLM *multi;
	struct event *timer;
	size_t active;
	struct http_transfer *pool; /* idle transfers, their easy handles ready */
	bool in_curl;               /* inside curl_multi_socket_action */
	size_t n_pool;
};

/* One socket curl watches, attached with curl_multi_assign, freed on CURL_POLL_REMOVE. */
struct http_socket {
	struct event *ev;
	short kind;                 /* the events ev is set for */
};

static void http_check_done(struct http *);

/* Tell curl that a socket is ready, then collect finished transfers. */
static void
http_event_cb(evutil_socket_t fd, short what, void *arg)
{
	struct http *h = arg;
	int action = ((what & EV_READ) ? CURL_CSELECT_IN : 0) |
	    ((what & EV_WRITE) ? CURL_CSELECT_OUT : 0);
	int running;

	h->in_curl = true;
	curl_multi_socket_action(h->multi, fd, action, &running);
	h->in_curl = false;
	http_check_done(h);
}

/* curl's timer fired. */
static void
http_timer_cb(evutil_socket_t fd, short what, void *arg)
{
	struct http *h = arg;
	int running;

	(void)fd;
	(void)what;
	h->in_curl = true;
	curl_multi_socket_action(h->multi, CURL_SOCKET_TIMEOUT, 0, &running);
	h->in_curl = false;
	http_check_done(h);
}

/* curl asks for its timer to be set: only re-arm, never call back into curl. */
static int
http_multi_timer_cb(CURLM *multi, long timeout_ms, void *arg)
{
	struct http *h = arg;
	struct timeval tv;

	(void)multi;
	if (timeout_ms < 0) {
		evtimer_del(h->timer);
		return 0;
	}
	if (timeout_ms == 0 && !h->in_curl) {
		/*
		 * A transfer was added or resumed: run in this loop pass, not after
		 * another epoll_wait. From inside curl the timer waits for the
		 * next pass, so that curl cannot keep the loop from polling.
		 */
		evtimer_del(h->timer);
		event_active(h->timer, EV_TIMEOUT, 1);
		return 0;
	}
	tv.tv_sec = timeout_ms / 1000;
	tv.tv_usec = (timeout_ms % 1000) * 1000;
	evtimer_add(h->timer, &tv);
	return 0;
}

/* curl asks to watch, change or forget a socket. */
static int
http_socket_cb(CURL *easy, curl_socket_t fd, int what, void *arg, void *socketp)
{
	struct http *h = arg;
	struct http_socket *s = socketp;
	short kind;

	(void)easy;
	if (what == CURL_POLL_REMOVE) {
		if (s != NULL) {
			event_free(s->ev);
			free(s);
			curl_multi_assign(h->multi, fd, NULL);
		}
		return 0;
	}
	kind = EV_PERSIST | ((what & CURL_POLL_IN) ? EV_READ : 0) |
	    ((what & CURL_POLL_OUT) ? EV_WRITE : 0);
	if (s == NULL) {
		if ((s = calloc(1, sizeof *s)) == NULL)
			return -1;
		if ((s->ev = event_new(h->base, fd, kind, http_event_cb, h)) == NULL) {
			free(s);
			return -1;
		}
		curl_multi_assign(h->multi, fd, s);
	} else if (s->kind == kind)
		return 0;       /* already watched for these events */
	else {
		event_del(s->ev);
		event_assign(s->ev, h->base, fd, kind, http_event_cb, h);
	}
	s->kind = kind;
	event_add(s->ev, NULL);
	return 0;
}

/* Body bytes from curl: hand them to the owner, which may pause. */
static size_t
http_write_cb(char *ptr, size_t size, size_t nmemb, void *arg)
{
	struct http_transfer *t = arg;
	size_t len = size * nmemb;
	struct http_response resp = { 0, NULL, CURLE_OK, NULL, true, -1, 0 };

	if (!t->have_headers) {
		/* the body has started: status and type are final */
		curl_easy_getinfo(t->easy, CURLINFO_RESPONSE_CODE, &t->status);
		curl_easy_getinfo(t->easy, CURLINFO_CONTENT_TYPE, &t->content_type);
		t->have_headers = true;
	}
	resp.status = t->status;
	resp.content_type = t->content_type;
	switch (t->cb.data_cb(t->arg, &resp, ptr, len)) {
	case HTTP_DATA_OK:
		return len;
	case HTTP_DATA_PAUSE:
		t->paused = 1;
		return CURL_WRITEFUNC_PAUSE;
	case HTTP_DATA_ABORT:
		break;
	}
	return 0;
}

/* Free a transfer and its easy handle for good. */
static void
http_transfer_destroy(struct http_transfer *t)
{
	curl_easy_cleanup(t->easy);
	curl_slist_free_all(t->headers);
	free(t->headers_key);
	free(t->body);
	free(t);
}

/*
 * Remove a transfer from the multi handle; keep it, options and all, for the
 * next one when it ran to its end and the pool has room, else free it.
 */
static void
http_transfer_free(struct http_transfer *t, bool finished)
{
	struct http *h = t->http;

	curl_multi_remove_handle(h->multi, t->easy);
	h->active--;
	if (!finished || t->paused || h->n_pool >= HTTP_POOL_MAX) {
		http_transfer_destroy(t);
		return;
	}
	t->cb.data_cb = NULL;
	t->cb.done_cb = NULL;
	t->arg = NULL;
	t->next_free = h->pool;
	h->pool = t;
	h->n_pool++;
}

/* Drain finished transfers; each leaves the multi handle before its owner hears of it. */
static void
http_check_done(struct http *h)
{
	CURLMsg *msg;
	int left;

	while ((msg = curl_multi_info_read(h->multi, &left)) != NULL) {
		struct http_transfer *t;
		struct http_response resp = { 0, NULL, CURLE_OK, NULL, false, -1, 0 };
		long os_errno = 0;
		char error[CURL_ERROR_SIZE], content_type[128] = "";
		const char *ct = NULL;
		curl_off_t retry_after = 0;
		double connect_time = 0;

		if (msg->msg != CURLMSG_DONE)
			continue;
		curl_easy_getinfo(msg->easy_handle, CURLINFO_PRIVATE, (char **)&t);
		curl_easy_getinfo(t->easy, CURLINFO_RESPONSE_CODE, &resp.status);
		if (curl_easy_getinfo(t->easy, CURLINFO_CONTENT_TYPE, &ct) == CURLE_OK && ct != NULL) {
			snprintf(content_type, sizeof content_type, "%s", ct);
			resp.content_type = content_type;
		}
		if (curl_easy_getinfo(t->easy, CURLINFO_RETRY_AFTER, &retry_after) == CURLE_OK &&
		    retry_after > 0)
			resp.retry_after = (double)retry_after;
		curl_easy_getinfo(t->easy, CURLINFO_CONNECT_TIME, &connect_time);
		resp.connected = connect_time > 0 || resp.status > 0;
		resp.result = msg->data.result;
		if (resp.result != CURLE_OK &&
		    curl_easy_getinfo(t->easy, CURLINFO_OS_ERRNO, &os_errno) == CURLE_OK)
			resp.os_errno = (int)os_errno;
		snprintf(error, sizeof error, "%s", t->error[0] ? t->error : curl_easy_strerror(resp.result));
		resp.error = error;
		struct http_callbacks cb = t->cb;
		void *arg = t->arg;
		http_transfer_free(t, true);
		cb.done_cb(arg, &resp);
	}
}

struct http *
http_new(struct event_base *base)
{
	struct http *h = calloc(1, sizeof *h);

	if (h == NULL)
		return NULL;
	h->base = base;
	h->multi = curl_multi_init();
	h->timer = evtimer_new(base, http_timer_cb, h);
	if (h->multi == NULL || h->timer == NULL) {
		http_free(h);
		return NULL;
	}
	curl_multi_setopt(h->multi, CURLMOPT_SOCKETFUNCTION, http_socket_cb);
	curl_multi_setopt(h->multi, CURLMOPT_SOCKETDATA, h);
	curl_multi_setopt(h->multi, CURLMOPT_TIMERFUNCTION, http_multi_timer_cb);
	curl_multi_setopt(h->multi, CURLMOPT_TIMERDATA, h);
	/*
	 * CURLMOPT_MAXCONNECTS stays curl's default, four times the transfers
	 * under way: every finished transfer keeps its connection while the
	 * load lasts, instead of reconnecting once more than a fixed number
	 * run at once.
	 */
	return h;
}

void
http_free(struct http *h)
{
	if (h == NULL)
		return;
	while (h->pool != NULL) {
		struct http_transfer *t = h->pool;
		h->pool = t->next_free;
		http_transfer_destroy(t);
	}
	if (h->multi != NULL)
		curl_multi_cleanup(h->multi);
	if (h->timer != NULL)
		event_free(h->timer);
	free(h);
}

/* A new easy handle with the options every transfer shares. */
static struct http_transfer *
http_transfer_new(struct http *h)
{
	struct http_transfer *t = calloc(1, sizeof *t);

	if (t == NULL || (t->easy = curl_easy_init()) == NULL) {
		free(t);
		return NULL;
	}
	t->http = h;
	curl_easy_setopt(t->easy, CURLOPT_PRIVATE, t);
	curl_easy_setopt(t->easy, CURLOPT_ERRORBUFFER, t->error);
	curl_easy_setopt(t->easy, CURLOPT_WRITEFUNCTION, http_write_cb);
	curl_easy_setopt(t->easy, CURLOPT_WRITEDATA, t);
	curl_easy_setopt(t->easy, CURLOPT_NOSIGNAL, 1L);
	curl_easy_setopt(t->easy, CURLOPT_TCP_NODELAY, 1L);
	curl_easy_setopt(t->easy, CURLOPT_TCP_KEEPALIVE, 1L);
	curl_easy_setopt(t->easy, CURLOPT_PROTOCOLS_STR, "http,https");
	curl_easy_setopt(t->easy, CURLOPT_USERAGENT, "openllmd/" PACKAGE_VERSION);
	curl_easy_setopt(t->easy, CURLOPT_ACCEPT_ENCODING, "");
	return t;
}

/* The header list for this request: the one kept with the handle when it fits. */
static int
http_transfer_headers(struct http_transfer *t, const struct http_request *req)
{
	const char *key = req->api_key != NULL && *req->api_key != '\0' ? req->api_key : NULL;
	bool body = req->body != NULL;
	struct curl_slist *list;
	char auth[1024];

	if (t->headers != NULL && t->headers_body == body &&
	    (key == NULL ? t->headers_key == NULL :
	    t->headers_key != NULL && strcmp(key, t->headers_key) == 0))
		return 0;
	list = curl_slist_append(NULL, "Accept: application/json, text/event-stream");
	if (list != NULL && body)
		list = curl_slist_append(list, "Content-Type: application/json");
	if (list != NULL)
		list = curl_slist_append(list, "Expect:");
	if (list != NULL && key != NULL) {
		snprintf(auth, sizeof auth, "Authorization: Bearer %s", key);
		list = curl_slist_append(list, auth);
		explicit_bzero(auth, sizeof auth);
	}
	if (list == NULL)
		return -1;
	if (t->headers != NULL)
		curl_slist_free_all(t->headers);
	if (t->headers_key != NULL) {
		explicit_bzero(t->headers_key, strlen(t->headers_key));
		free(t->headers_key);
	}
	t->headers = list;
	t->headers_key = key != NULL ? strdup(key) : NULL;
	t->headers_body = body;
	curl_easy_setopt(t->easy, CURLOPT_HTTPHEADER, t->headers);
	return key != NULL && t->headers_key == NULL ? -1 : 0;
}

struct http_transfer *
http_transfer_start(struct http *h, const struct http_request *req,
    const struct http_callbacks *cb, void *arg, char *cause, size_t cause_len)
{
	struct http_transfer *t = h->pool;

	if (t != NULL) {
		h->pool = t->next_free;
		h->n_pool--;
	} else if ((t = http_transfer_new(h)) == NULL) {
		snprintf(cause, cause_len, "out of memory");
		return NULL;
	}
	t->next_free = NULL;
	t->cb = *cb;
	t->arg = arg;
	t->error[0] = '\0';
	t->paused = 0;
	t->have_headers = false;
	t->status = 0;
	t->content_type = NULL;
	if (http_transfer_headers(t, req) == -1) {
		snprintf(cause, cause_len, "out of memory");
		http_transfer_destroy(t);
		return NULL;
	}
	curl_easy_setopt(t->easy, CURLOPT_URL, req->url);
	curl_easy_setopt(t->easy, CURLOPT_CONNECTTIMEOUT_MS, req->connect_timeout_ms);
	curl_easy_setopt(t->easy, CURLOPT_TIMEOUT_MS, req->timeout_ms);
	if (req->body != NULL) {
		size_t len = strlen(req->body);
		if (len + 1 > t->body_cap) {
			char *grown = realloc(t->body, len + 1);
			if (grown == NULL) {
				snprintf(cause, cause_len, "out of memory");
				http_transfer_destroy(t);
				return NULL;
			}
			t->body = grown;
			t->body_cap = len + 1;
		}
		memcpy(t->body, req->body, len + 1);
		curl_easy_setopt(t->easy, CURLOPT_POSTFIELDS, t->body);
		curl_easy_setopt(t->easy, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)len);
	} else
		curl_easy_setopt(t->easy, CURLOPT_HTTPGET, 1L);
	if (curl_multi_add_handle(h->multi, t->easy) != CURLM_OK) {
		snprintf(cause, cause_len, "cannot add transfer to the multi handle");
		http_transfer_destroy(t);
		return NULL;
	}
	h->active++;
	return t;
}

void
http_transfer_cancel(struct http_transfer *t)
{
	if (t != NULL)
		http_transfer_free(t, false);
}

void
http_transfer_resume(struct http_transfer *t)
{
	if (t == NULL || !t->paused)
		return;
	t->paused = 0;
	curl_easy_pause(t->easy, CURLPAUSE_CONT);
}

size_t
http_active(const struct http *h)
{
	return h->active;
}
