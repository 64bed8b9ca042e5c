/*
 * fuzz_api.c: the HTTP front's chat body parser on random bytes. A body is
 * either refused with a bounded message naming a known field, or becomes a
 * request whose every promise holds: named strings without NUL, content with
 * its length, and an upstream body that is valid JSON again.
 */
#include "config.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "daemon/api_body.h"
#include "daemon/openai.h"

int LLVMFuzzerTestOneInput(const uint8_t *, size_t);

/* A NUL-free string the parser promised. */
static void
check_name(const char *s)
{
	if (s == NULL || memchr(s, '\0', strlen(s) + 1) != s + strlen(s))
		abort();
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct api_body_error err;
	struct request *rq;
	struct chat_request *cr;
	bool include_usage;
	char cause[256], *body;
	json_t *j;

	rq = api_body_chat((const char *)data, size, &include_usage, &err);
	if (rq == NULL) {
		size_t n = strnlen(err.message, sizeof err.message);
		if (n == 0 || n == sizeof err.message)
			abort();
		if (strnlen(err.param, sizeof err.param) == sizeof err.param)
			abort();
		return 0;
	}
	cr = &rq->u.chat;
	if (rq->op != OP_CHAT || cr->n_messages == 0 || cr->messages == NULL)
		abort();
	for (size_t i = 0; i < cr->n_messages; i++) {
		const struct chat_message *m = &cr->messages[i];
		check_name(m->role);
		if (m->name != NULL)
			check_name(m->name);
		if (m->tool_call_id != NULL)
			check_name(m->tool_call_id);
		if (m->content != NULL && m->content[m->content_len] != '\0')
			abort();
		if (m->content == NULL && m->content_len != 0)
			abort();
	}
	if (cr->model != NULL)
		check_name(cr->model);
	for (size_t i = 0; i < cr->n_stop; i++)
		check_name(cr->stop[i]);
	if (cr->max_tokens == 0 || cr->max_tokens < -1 || cr->max_tokens > MESSAGE_MAX_TOKENS)
		abort();
	/* what goes upstream is JSON again, NUL as \u0000 */
	body = openai_chat_body(cr, cr->model != NULL ? cr->model : "m", cr->stream, cause,
	    sizeof cause);
	if (body != NULL) {
		if ((j = json_loads(body, JSON_ALLOW_NUL, NULL)) == NULL || !json_is_object(j))
			abort();
		json_decref(j);
		free(body);
	} else if (cause[0] == '\0')
		abort();
	message_request_free(rq);
	return 0;
}
