/* sse.c: incremental server-sent-events parser. */
#include "config.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "daemon/sse.h"

enum {
	SSE_LINE_START,             /* nothing of the line read yet */
	SSE_FIELD,                  /* reading the field name */
	SSE_VALUE_START,            /* after the colon: one space may follow */
	SSE_VALUE,                  /* reading the value */
	SSE_COMMENT                 /* skipping a comment line */
};

enum {
	SSE_FIELD_SKIP,             /* id, retry or unknown: not stored */
	SSE_FIELD_DATA,
	SSE_FIELD_EVENT,
	SSE_FIELD_ERROR             /* llama.cpp's "error:" lines */
};

static const char sse_bom[3] = { '\xef', '\xbb', '\xbf' };

static int sse_parser_bytes(struct sse_parser *, const char *, size_t,
    char *, size_t);

/* Set up an empty parser. */
void
sse_parser_init(struct sse_parser *p, size_t max_event, sse_event_cb cb,
    void *arg)
{
	memset(p, 0, sizeof *p);
	p->max_event = max_event;
	p->cb = cb;
	p->arg = arg;
	p->state = SSE_LINE_START;
}

/* Release the buffers. */
void
sse_parser_clear(struct sse_parser *p)
{
	free(p->data);
	free(p->event);
	memset(p, 0, sizeof *p);
}

/* Drop the event being read, keeping the buffers. */
static void
sse_parser_drop_event(struct sse_parser *p)
{
	p->data_len = 0;
	p->n_data = 0;
	p->error_field = false;
	p->event_len = 0;
	p->has_event = false;
}

/* Start over on a new stream. */
void
sse_parser_reset(struct sse_parser *p)
{
	sse_parser_drop_event(p);
	p->state = SSE_LINE_START;
	p->after_cr = false;
	p->failed = false;
	p->bom_done = false;
	p->bom_len = 0;
	p->field_len = 0;
	p->field_kind = SSE_FIELD_SKIP;
}

/* Fail the parser with a message. */
static int
sse_parser_fail(struct sse_parser *p, char *cause, size_t cause_len,
    const char *msg)
{
	p->failed = true;
	if (cause_len > 0)
		snprintf(cause, cause_len, "%s", msg);
	return (-1);
}

/* Make room for n more bytes (and a NUL) in a buffer, within the bound. */
static int
sse_parser_grow(struct sse_parser *p, char **buf, size_t *size, size_t len,
    size_t n, char *cause, size_t cause_len)
{
	size_t	 want, new_size;
	char	*new_buf;

	if (n > p->max_event || p->data_len + p->event_len > p->max_event - n) {
		p->failed = true;
		if (cause_len > 0)
			snprintf(cause, cause_len,
			    "server-sent event larger than %zu bytes",
			    p->max_event);
		return (-1);
	}
	want = len + n + 1;
	if (want <= *size)
		return (0);
	new_size = *size < 256 ? 256 : *size;
	while (new_size < want)
		new_size *= 2;
	if (new_size > p->max_event + 1)
		new_size = p->max_event + 1;
	if (new_size < want)
		new_size = want;
	new_buf = realloc(*buf, new_size);
	if (new_buf == NULL)
		return (sse_parser_fail(p, cause, cause_len, "out of memory"));
	*buf = new_buf;
	*size = new_size;
	return (0);
}

/* Append bytes to the value of the current field. */
static int
sse_parser_append(struct sse_parser *p, const char *buf, size_t len,
    char *cause, size_t cause_len)
{
	switch (p->field_kind) {
	case SSE_FIELD_DATA:
	case SSE_FIELD_ERROR:
		if (sse_parser_grow(p, &p->data, &p->data_size, p->data_len,
		    len, cause, cause_len) != 0)
			return (-1);
		memcpy(p->data + p->data_len, buf, len);
		p->data_len += len;
		break;
	case SSE_FIELD_EVENT:
		if (sse_parser_grow(p, &p->event, &p->event_size, p->event_len,
		    len, cause, cause_len) != 0)
			return (-1);
		memcpy(p->event + p->event_len, buf, len);
		p->event_len += len;
		break;
	}
	return (0);
}

/* The field name is complete: decide what its value is for. */
static int
sse_parser_begin_value(struct sse_parser *p, char *cause, size_t cause_len)
{
	const char	*f = p->field;
	size_t		 n = p->field_len;

	if (n == 4 && memcmp(f, "data", 4) == 0)
		p->field_kind = SSE_FIELD_DATA;
	else if (n == 5 && memcmp(f, "event", 5) == 0)
		p->field_kind = SSE_FIELD_EVENT;
	else if (n == 5 && memcmp(f, "error", 5) == 0)
		p->field_kind = SSE_FIELD_ERROR;
	else
		p->field_kind = SSE_FIELD_SKIP;

	switch (p->field_kind) {
	case SSE_FIELD_ERROR:
		p->error_field = true;
		/* FALLTHROUGH */
	case SSE_FIELD_DATA:
		/* Lines of one event are joined with "\n". */
		if (p->n_data > 0 &&
		    sse_parser_append(p, "\n", 1, cause, cause_len) != 0)
			return (-1);
		p->n_data++;
		break;
	case SSE_FIELD_EVENT:
		p->event_len = 0;
		p->has_event = true;
		break;
	}
	return (0);
}

/* A blank line: hand the event over if it had data. */
static int
sse_parser_dispatch(struct sse_parser *p, char *cause, size_t cause_len)
{
	const char	*event = NULL;
	int		 rc;

	if (p->n_data == 0) {
		sse_parser_drop_event(p);
		return (0);
	}
	if (p->data == NULL &&
	    sse_parser_grow(p, &p->data, &p->data_size, 0, 0, cause,
	    cause_len) != 0)
		return (-1);
	p->data[p->data_len] = '\0';
	if (p->has_event && p->event_len > 0) {
		p->event[p->event_len] = '\0';
		event = p->event;
	} else if (p->error_field)
		event = "error";

	rc = p->cb(p->arg, event, p->data, p->data_len);
	sse_parser_drop_event(p);
	if (rc != 0)
		return (sse_parser_fail(p, cause, cause_len,
		    "stopped by the event handler"));
	return (0);
}

/* A line ended. */
static int
sse_parser_end_line(struct sse_parser *p, char *cause, size_t cause_len)
{
	int	state = p->state;

	p->state = SSE_LINE_START;
	switch (state) {
	case SSE_LINE_START:
		return (sse_parser_dispatch(p, cause, cause_len));
	case SSE_FIELD:
		/* A field name alone: its value is empty. */
		return (sse_parser_begin_value(p, cause, cause_len));
	}
	return (0);
}

/* Offset of the first '\n' or '\r' at or after i, or len: memchr runs a word at a time. */
static size_t
sse_line_end(const char *buf, size_t i, size_t len)
{
	const char	*nl = memchr(buf + i, '\n', len - i);
	size_t		 end = nl != NULL ? (size_t)(nl - buf) : len;
	const char	*cr = memchr(buf + i, '\r', end - i);

	return (cr != NULL ? (size_t)(cr - buf) : end);
}

/* Parse bytes after any BOM has been dealt with. */
static int
sse_parser_bytes(struct sse_parser *p, const char *buf, size_t len,
    char *cause, size_t cause_len)
{
	size_t	i = 0, j;
	char	c;

	while (i < len) {
		c = buf[i];
		if (p->after_cr) {
			p->after_cr = false;
			if (c == '\n') {
				i++;
				continue;
			}
		}
		if (c == '\r' || c == '\n') {
			p->after_cr = (c == '\r');
			i++;
			if (sse_parser_end_line(p, cause, cause_len) != 0)
				return (-1);
			continue;
		}

		switch (p->state) {
		case SSE_LINE_START:
			if (c == ':') {
				p->state = SSE_COMMENT;
				i++;
				break;
			}
			p->field_len = 0;
			p->state = SSE_FIELD;
			/* FALLTHROUGH */
		case SSE_FIELD:
			i++;
			if (c == ':') {
				if (sse_parser_begin_value(p, cause,
				    cause_len) != 0)
					return (-1);
				p->state = SSE_VALUE_START;
				break;
			}
			/* Longer names are unknown fields: count, not keep. */
			if (p->field_len < sizeof p->field)
				p->field[p->field_len] = c;
			if (p->field_len <= sizeof p->field)
				p->field_len++;
			break;
		case SSE_VALUE_START:
			p->state = SSE_VALUE;
			if (c == ' ') {
				i++;
				break;
			}
			/* FALLTHROUGH */
		case SSE_VALUE:
		case SSE_COMMENT:
			j = sse_line_end(buf, i, len);
			if (p->state == SSE_VALUE && p->field_kind !=
			    SSE_FIELD_SKIP && sse_parser_append(p, buf + i,
			    j - i, cause, cause_len) != 0)
				return (-1);
			i = j;
			break;
		}
	}
	return (0);
}

/* Parse len more bytes of the stream. */
int
sse_parser_feed(struct sse_parser *p, const char *buf, size_t len,
    char *cause, size_t cause_len)
{
	size_t	held;

	if (p->failed)
		return (sse_parser_fail(p, cause, cause_len,
		    "server-sent events parser already failed"));

	/* Hold the first bytes back until it is known whether they are a BOM. */
	while (!p->bom_done && len > 0) {
		if (buf[0] != sse_bom[p->bom_len]) {
			p->bom_done = true;
			held = p->bom_len;
			p->bom_len = 0;
			if (held > 0 && sse_parser_bytes(p, sse_bom, held, cause,
			    cause_len) != 0)
				return (-1);
			break;
		}
		buf++;
		len--;
		if (++p->bom_len == sizeof sse_bom) {
			p->bom_done = true;
			p->bom_len = 0;
		}
	}
	if (len == 0)
		return (0);
	return (sse_parser_bytes(p, buf, len, cause, cause_len));
}

/* The stream ended: report an event cut short, then start over. */
int
sse_parser_finish(struct sse_parser *p, char *cause, size_t cause_len)
{
	bool	partial;

	if (p->failed) {
		sse_parser_reset(p);
		if (cause_len > 0)
			snprintf(cause, cause_len,
			    "server-sent events parser already failed");
		return (-1);
	}
	partial = p->n_data > 0 || p->bom_len > 0 ||
	    p->state == SSE_FIELD || p->state == SSE_VALUE_START ||
	    p->state == SSE_VALUE;
	sse_parser_reset(p);
	if (partial) {
		if (cause_len > 0)
			snprintf(cause, cause_len,
			    "stream ended inside a server-sent event");
		return (-1);
	}
	return (0);
}
