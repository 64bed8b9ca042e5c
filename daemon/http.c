/* libcurl's multi_socket API driven by libevent, after curl's hiperfifo.c. */
#include "config.h"

#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include <curl/curl.h>
#include <event2/event.h>

#include "daemon/http.h"
#include "daemon/log.h"

#define HTTP_POOL_MAX 64         /* idle easy handles kept for reuse */
#define HTTP_URLS_MAX 64         /* URLs kept parsed */

/* One transfer, attached to its easy handle with CURLOPT_PRIVATE. */
struct http_transfer {
	struct http *http;
	CURL *easy;                 /* kept with its options set when pooled */
	struct curl_slist *headers; /* built for api_key and has_body, kept with the handle */
	char *headers_key;          /* the api_key the list carries, NULL for none */
	bool headers_body;          /* the list has Content-Type */
	int proxy_scheme;           /* which of http's proxies is set: -1 none yet, 0 http, 1 https */
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
	size_t peak;                /* most transfers under way at once so far */
	struct http_transfer *pool; /* idle transfers, their easy handles ready */
	size_t n_pool;
	bool in_curl;               /* inside curl_multi_socket_action */
	struct http_socket **socks; /* by descriptor: the sockets our opensocket callback made */
	size_t n_socks;
	/* the proxy environment, read once: curl would read it for every transfer */
	char *proxy[2];             /* for http:// and https:// URLs, "" for none */
	char *noproxy;
	/* URLs curl parsed once, handed to each transfer (CURLOPT_CURLU) */
	struct http_url {
		char *url;
		CURLU *parsed;
	} urls[HTTP_URLS_MAX];
	size_t n_urls;
};

/*
 * One socket curl watches. Those of connections (made by http_open_cb) live
 * until curl closes them (http_close_cb): between two transfers on a kept
 * connection the read event stays in epoll, so a request costs no
 * epoll_ctl to add it and none to remove it. Others (the resolver's) are
 * freed when curl stops watching them.
 */
struct http_socket {
	struct event *ev;
	short kind;                 /* the events ev is set for */
	bool added;                 /* ev is in the loop */
	bool watched;               /* curl wants to hear of it (not CURL_POLL_REMOVE) */
	bool kept;                  /* a connection's: kept until curl closes it */
};

static void http_check_done(struct http *);

/* Our record of a connection socket, or NULL. */
static struct http_socket *
http_socket_find(const struct http *h, curl_socket_t fd)
{
	return fd >= 0 && (size_t)fd < h->n_socks ? h->socks[fd] : NULL;
}

/* Stop watching a socket and forget it (the descriptor stays open). */
static void
http_socket_free(struct http *h, curl_socket_t fd, struct http_socket *s)
{
	if (s->kept && (size_t)fd < h->n_socks)
		h->socks[fd] = NULL;
	else
		curl_multi_assign(h->multi, fd, NULL);
	event_free(s->ev);
	free(s);
}

/* Tell curl that a socket is ready, then collect finished transfers. */
static void
http_event_cb(evutil_socket_t fd, short what, void *arg)
{
	struct http *h = arg;
	struct http_socket *s = http_socket_find(h, fd);
	int action = ((what & EV_READ) ? CURL_CSELECT_IN : 0) |
	    ((what & EV_WRITE) ? CURL_CSELECT_OUT : 0);
	int running;

	if (s != NULL && !s->watched) {
		/* a kept connection between transfers: the server closed it, or spoke out of turn */
		event_del(s->ev);
		s->added = false;
		return;
	}
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
	struct http_socket *s = socketp, *kept = http_socket_find(h, fd);
	short kind;

	(void)easy;
	if (kept != NULL)
		s = kept;
	if (what == CURL_POLL_REMOVE) {
		if (s == NULL)
			return 0;
		if (!s->kept) {
			http_socket_free(h, fd, s);
			return 0;
		}
		/* kept for the next transfer; a write event would fire at once */
		s->watched = false;
		if (s->added && (s->kind & EV_WRITE)) {
			event_del(s->ev);
			s->added = false;
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
	} else if (s->kind == kind && s->added) {
		s->watched = true;
		return 0;       /* already watched for these events */
	} else {
		if (s->added)
			event_del(s->ev);
		event_assign(s->ev, h->base, fd, kind, http_event_cb, h);
	}
	s->kind = kind;
	s->watched = true;
	s->added = event_add(s->ev, NULL) == 0;
	return 0;
}

/* curl opens a connection's socket: it is kept in the loop until http_close_cb. */
static curl_socket_t
http_open_cb(void *arg, curlsocktype purpose, struct curl_sockaddr *addr)
{
	struct http *h = arg;
	struct http_socket *s;
	curl_socket_t fd;

	(void)purpose;
	fd = socket(addr->family, addr->socktype, addr->protocol);
	if (fd == CURL_SOCKET_BAD)
		return fd;
	if ((size_t)fd >= h->n_socks) {
		size_t n = h->n_socks ? h->n_socks : 64;
		struct http_socket **grown;
		while (n <= (size_t)fd)
			n *= 2;
		if ((grown = realloc(h->socks, n * sizeof *grown)) == NULL)
			return fd;      /* watched the ordinary way */
		memset(grown + h->n_socks, 0, (n - h->n_socks) * sizeof *grown);
		h->socks = grown;
		h->n_socks = n;
	}
	if ((s = calloc(1, sizeof *s)) == NULL)
		return fd;
	if ((s->ev = event_new(h->base, fd, EV_PERSIST, http_event_cb, h)) == NULL) {
		free(s);
		return fd;
	}
	s->kept = true;
	s->kind = EV_PERSIST;
	h->socks[fd] = s;
	return fd;
}

/* curl closes a connection: its event leaves the loop before the descriptor is closed. */
static int
http_close_cb(void *arg, curl_socket_t fd)
{
	struct http *h = arg;
	struct http_socket *s = http_socket_find(h, fd);

	if (s != NULL)
		http_socket_free(h, fd, s);
	return close(fd);
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

/* Copy a string, cut to fit size (snprintf's "%s", without the formatting). */
static void
http_copy(char *dst, size_t size, const char *src)
{
	if (memccpy(dst, src, '\0', size) == NULL)
		dst[size - 1] = '\0';
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
			http_copy(content_type, sizeof content_type, ct);
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
		http_copy(error, sizeof error, t->error[0] ? t->error : curl_easy_strerror(resp.result));
		resp.error = error;
		struct http_callbacks cb = t->cb;
		void *arg = t->arg;
		http_transfer_free(t, true);
		cb.done_cb(arg, &resp);
	}
}

/* The first of the environment's variables (a NULL-ended list) that is set, copied; "" for none. */
static char *
http_getenv(const char *const *names)
{
	const char *v = NULL;

	while (v == NULL && *names != NULL)
		v = getenv(*names++);
	return strdup(v != NULL ? v : "");
}

/* Where curl looks, in its order; never HTTP_PROXY (CGI sets it from a request header). */
static const char *const http_proxy_env[] = { "http_proxy", "all_proxy", "ALL_PROXY", NULL };
static const char *const https_proxy_env[] = { "https_proxy", "HTTPS_PROXY", "all_proxy",
	"ALL_PROXY", NULL };
static const char *const no_proxy_env[] = { "no_proxy", "NO_PROXY", NULL };

struct http *
http_new(struct event_base *base)
{
	struct http *h = calloc(1, sizeof *h);

	if (h == NULL)
		return NULL;
	h->proxy[0] = http_getenv(http_proxy_env);
	h->proxy[1] = http_getenv(https_proxy_env);
	h->noproxy = http_getenv(no_proxy_env);
	if (h->proxy[0] == NULL || h->proxy[1] == NULL || h->noproxy == NULL) {
		http_free(h);
		return NULL;
	}
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
	 * CURLMOPT_MAXCONNECTS follows the most transfers under way at once
	 * (http_transfer_start): curl's default, four times the transfers in
	 * the multi handle now, closed a connection each time one ended while
	 * few others ran, so the next burst had to connect again.
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
		curl_multi_cleanup(h->multi);     /* closes the connections: http_close_cb */
	for (size_t i = 0; i < h->n_socks; i++)
		if (h->socks[i] != NULL) {
			event_free(h->socks[i]->ev);
			free(h->socks[i]);
		}
	free(h->socks);
	if (h->timer != NULL)
		event_free(h->timer);
	free(h->proxy[0]);
	free(h->proxy[1]);
	free(h->noproxy);
	for (size_t i = 0; i < h->n_urls; i++) {
		curl_url_cleanup(h->urls[i].parsed);
		free(h->urls[i].url);
	}
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
	t->proxy_scheme = -1;
	curl_easy_setopt(t->easy, CURLOPT_PRIVATE, t);
	curl_easy_setopt(t->easy, CURLOPT_ERRORBUFFER, t->error);
	curl_easy_setopt(t->easy, CURLOPT_WRITEFUNCTION, http_write_cb);
	curl_easy_setopt(t->easy, CURLOPT_WRITEDATA, t);
	curl_easy_setopt(t->easy, CURLOPT_NOSIGNAL, 1L);
	curl_easy_setopt(t->easy, CURLOPT_OPENSOCKETFUNCTION, http_open_cb);
	curl_easy_setopt(t->easy, CURLOPT_OPENSOCKETDATA, h);
	curl_easy_setopt(t->easy, CURLOPT_CLOSESOCKETFUNCTION, http_close_cb);
	curl_easy_setopt(t->easy, CURLOPT_CLOSESOCKETDATA, h);
	curl_easy_setopt(t->easy, CURLOPT_TCP_NODELAY, 1L);
	curl_easy_setopt(t->easy, CURLOPT_TCP_KEEPALIVE, 1L);
	curl_easy_setopt(t->easy, CURLOPT_PROTOCOLS_STR, "http,https");
	curl_easy_setopt(t->easy, CURLOPT_NOPROXY, h->noproxy);
	return t;
}

/*
 * url parsed by curl, kept for every transfer to it; NULL lets curl parse it
 * itself (the table is full, or curl refuses it and will say why). Parsing
 * and putting the URL back together took a tenth of curl's work per request.
 */
static CURLU *
http_url_parsed(struct http *h, const char *url)
{
	struct http_url *u;

	for (size_t i = 0; i < h->n_urls; i++)
		if (strcmp(h->urls[i].url, url) == 0)
			return h->urls[i].parsed;
	if (h->n_urls == HTTP_URLS_MAX)
		return NULL;
	u = &h->urls[h->n_urls];
	if ((u->parsed = curl_url()) == NULL || (u->url = strdup(url)) == NULL ||
	    curl_url_set(u->parsed, CURLUPART_URL, url, CURLU_GUESS_SCHEME |
	    CURLU_NON_SUPPORT_SCHEME) != CURLUE_OK) {
		curl_url_cleanup(u->parsed);
		free(u->url);
		return NULL;
	}
	h->n_urls++;
	return u->parsed;
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
	/*
	 * curl formats each header a byte at a time, and CURLOPT_USERAGENT
	 * twice: only the headers that matter, the user agent among them.
	 */
	list = curl_slist_append(NULL, "Expect:");
	if (list != NULL)
		list = curl_slist_append(list, "User-Agent: openllmd/" PACKAGE_VERSION);
	if (list != NULL && body)
		list = curl_slist_append(list, "Content-Type: application/json");
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
	int scheme = strncasecmp(req->url, "https:", 6) == 0;
	if (t->proxy_scheme != scheme) {
		curl_easy_setopt(t->easy, CURLOPT_PROXY, h->proxy[scheme]);
		t->proxy_scheme = scheme;
	}
	/* both: the string is what curl reports, the parsed form what it uses */
	curl_easy_setopt(t->easy, CURLOPT_URL, req->url);
	curl_easy_setopt(t->easy, CURLOPT_CURLU, http_url_parsed(h, req->url));
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
	if (h->active > h->peak) {
		/* keep a connection for every transfer that ran at once, and room */
		h->peak = h->active;
		curl_multi_setopt(h->multi, CURLMOPT_MAXCONNECTS, (long)(4 * h->peak));
	}
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
