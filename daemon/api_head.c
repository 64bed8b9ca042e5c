/* An HTTP connection's bytes as evhttp will split them: request line, headers, body. */
#include "config.h"

#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "daemon/api_head.h"

void
api_head_init(struct api_head *h)
{
	memset(h, 0, sizeof *h);
	h->content_length = -1;
}

/* Forget the last request's fields. */
static void
api_head_reset(struct api_head *h)
{
	free(h->authorization);
	h->authorization = NULL;
	h->authorization_long = false;
	h->method[0] = '\0';
	h->body_method = false;
	h->content_length = -1;
	h->transfer_encoding = false;
	h->chunked = false;
	h->body_left = 0;
	h->line_len = 0;
	h->line_cut = false;
	h->line_cr = false;
}

void
api_head_clear(struct api_head *h)
{
	api_head_reset(h);
	free(h->line_long);
	h->line_long = NULL;
}

/* The line being read. */
static char *
api_head_line(struct api_head *h)
{
	return h->line_long != NULL ? h->line_long : h->line_inline;
}

uint64_t
api_head_body_length(const struct api_head *h)
{
	return h->body_method && h->content_length > 0 ? (uint64_t)h->content_length : 0;
}

static enum api_head_event
api_head_fail(struct api_head *h, int status, const char *why)
{
	h->status = status;
	h->error = why;
	return API_HEAD_ERROR;
}

/* The request line: its method, and whether evhttp reads a body for it. */
static enum api_head_event
api_head_request_line(struct api_head *h)
{
	static const char *const with_body[] = {
		"POST", "PUT", "PATCH", "GET", "DELETE", "OPTIONS", "CONNECT"
	};
	const char *line = api_head_line(h);
	const char *sp = memchr(line, ' ', h->line_len);
	size_t n;

	if (h->line_len == 0 && !h->line_cut)
		return api_head_fail(h, 400, "the request line is empty");
	if (sp == NULL && !h->line_cut)
		return api_head_fail(h, 400, "the request line is not METHOD TARGET VERSION");
	n = sp != NULL ? (size_t)(sp - line) : h->line_len;
	if (n < sizeof h->method) {
		memcpy(h->method, line, n);
		h->method[n] = '\0';
	}
	for (size_t i = 0; i < sizeof with_body / sizeof with_body[0]; i++)
		if (strcmp(h->method, with_body[i]) == 0)
			h->body_method = true;
	h->state = API_HEAD_FIELDS;
	return API_HEAD_MORE;
}

/* Whether the header line's name (before its first colon) is name, without case. */
static bool
api_head_named(const char *line, size_t name_len, const char *name)
{
	return name_len == strlen(name) && strncasecmp(line, name, name_len) == 0;
}

/* A header line, or the empty line that ends them. */
static enum api_head_event
api_head_field(struct api_head *h)
{
	const char *line = api_head_line(h), *colon, *v, *end;
	size_t name_len, vlen;

	if (h->line_len == 0 && !h->line_cut) {
		free(h->line_long);
		h->line_long = NULL;
		if (h->body_method && h->transfer_encoding)
			return h->chunked ? api_head_fail(h, 411, "a request body must come with "
			    "Content-Length: chunked bodies are not accepted") :
			    api_head_fail(h, 400, "Transfer-Encoding is not supported: send the body "
			    "with Content-Length");
		if ((h->body_left = api_head_body_length(h)) > 0)
			h->state = API_HEAD_BODY;
		else
			h->state = API_HEAD_IDLE;
		return API_HEAD_HEADERS;
	}
	if (line[0] == ' ' || line[0] == '\t')
		return api_head_fail(h, 400, "a folded header line (obsolete line folding is not "
		    "accepted)");
	if ((colon = memchr(line, ':', h->line_len)) == NULL) {
		if (h->line_cut)
			return API_HEAD_MORE;   /* a name longer than any read here */
		return api_head_fail(h, 400, "a header line without a colon");
	}
	name_len = (size_t)(colon - line);
	v = colon + 1;
	end = line + h->line_len;
	while (v < end && *v == ' ')
		v++;
	while (end > v && (end[-1] == ' ' || end[-1] == '\t'))
		end--;
	vlen = (size_t)(end - v);
	if (api_head_named(line, name_len, "content-length")) {
		int64_t n = 0;
		if (h->line_cut || vlen == 0 || vlen > 18)
			return api_head_fail(h, 400, "Content-Length must be a number of bytes");
		for (size_t i = 0; i < vlen; i++) {
			if (v[i] < '0' || v[i] > '9')
				return api_head_fail(h, 400, "Content-Length must be a number of bytes");
			n = n * 10 + (v[i] - '0');
		}
		if (h->content_length >= 0 && h->content_length != n)
			return api_head_fail(h, 400, "two Content-Length headers that differ "
			    "(RFC 9112, section 6.3)");
		h->content_length = n;
	} else if (api_head_named(line, name_len, "transfer-encoding")) {
		if (!h->transfer_encoding)
			h->chunked = !h->line_cut && vlen == 7 && strncasecmp(v, "chunked", 7) == 0;
		h->transfer_encoding = true;
	} else if (api_head_named(line, name_len, "authorization") &&
	    h->authorization == NULL && !h->authorization_long) {
		if (h->line_cut || vlen > API_HEAD_KEY_MAX)
			h->authorization_long = true;
		else if ((h->authorization = malloc(vlen + 1)) == NULL)
			return api_head_fail(h, 503, "out of memory");
		else {
			memcpy(h->authorization, v, vlen);
			h->authorization[vlen] = '\0';
		}
	}
	return API_HEAD_MORE;
}

/*
 * Append the bytes of a line (without its LF), keeping the first
 * API_HEAD_LINE_MAX; a line longer than the struct holds moves to a buffer
 * of its own until the headers end (without memory, it is cut shorter).
 */
static void
api_head_keep(struct api_head *h, const char *p, size_t n)
{
	size_t cap = h->line_long != NULL ? API_HEAD_LINE_MAX : API_HEAD_LINE_INLINE, room;

	if (n == 0)
		return;
	h->line_cr = p[n - 1] == '\r';
	if (h->line_len + n > cap && cap < API_HEAD_LINE_MAX &&
	    (h->line_long = malloc(API_HEAD_LINE_MAX)) != NULL) {
		memcpy(h->line_long, h->line_inline, h->line_len);
		cap = API_HEAD_LINE_MAX;
	}
	room = cap - h->line_len;
	if (n > room) {
		h->line_cut = true;
		n = room;
	}
	memcpy(api_head_line(h) + h->line_len, p, n);
	h->line_len += n;
}

enum api_head_event
api_head_feed(struct api_head *h, const char *p, size_t n, size_t *used)
{
	enum api_head_event ev;
	const char *lf;
	size_t k;

	*used = 0;
	if (h->status != 0)
		return API_HEAD_ERROR;
	while (*used < n) {
		switch (h->state) {
		case API_HEAD_IDLE:
			api_head_reset(h);
			h->state = API_HEAD_LINE;
			return API_HEAD_STARTED;
		case API_HEAD_BODY:
			k = n - *used < h->body_left ? n - *used : (size_t)h->body_left;
			*used += k;
			h->body_left -= k;
			if (h->body_left == 0) {
				h->state = API_HEAD_IDLE;
				return API_HEAD_BODY_DONE;
			}
			break;
		case API_HEAD_LINE:
		case API_HEAD_FIELDS:
			lf = memchr(p + *used, '\n', n - *used);
			k = lf != NULL ? (size_t)(lf - (p + *used)) : n - *used;
			api_head_keep(h, p + *used, k);
			*used += k;
			if (lf == NULL)
				break;
			(*used)++;
			if (h->line_cr && !h->line_cut)
				h->line_len--;
			ev = h->state == API_HEAD_LINE ? api_head_request_line(h) : api_head_field(h);
			h->line_len = 0;
			h->line_cut = false;
			h->line_cr = false;
			if (ev != API_HEAD_MORE)
				return ev;
			break;
		}
	}
	return API_HEAD_MORE;
}
