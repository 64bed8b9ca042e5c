/* api_body.c: the HTTP front's request bodies, parsed apart from any connection. */
#ifndef OLLM_API_BODY_H
#define OLLM_API_BODY_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <jansson.h>

#include "protocol/message.h"

/* Why a body was refused: a message for the client, and the field at fault. */
struct api_body_error {
	char message[300];
	char param[64];             /* "" when no one field is at fault */
};

/*
 * A body of len bytes (any bytes: untrusted) as a JSON object, strings
 * allowed to hold U+0000; NULL with cause. The caller decrefs it.
 */
json_t *api_body_json(const char *body, size_t len, char *cause, size_t cause_len);

/* A JSON string without NUL, copied; NULL when v is not one (or out of memory). */
char *api_body_strdup(json_t *v);

/*
 * The reply's length limit a body asks, in any dialect's key: max_tokens,
 * max_completion_tokens (integers from 1 to MESSAGE_MAX_TOKENS), llama.cpp's
 * n_predict, Ollama's num_predict, TGI's max_new_tokens (integers; <= 0
 * means none, more than MESSAGE_MAX_TOKENS that many), the least
 * of those given; -1 when none. -1 returned with err (param the key) when a
 * key has the wrong type or value. None of these keys is ever forwarded: the
 * daemon sends its own limit.
 */
int api_body_length(json_t *body, int64_t *asked, struct api_body_error *err);

/*
 * A POST /v1/chat/completions body as an OP_CHAT request (id 0, stream
 * false unless asked, content with its length as the msgpack front keeps
 * it; the caller frees it with message_request_free), *include_usage from
 * stream_options. NULL with err filled when the body is not one.
 */
struct request *api_body_chat(const char *body, size_t len, bool *include_usage,
    struct api_body_error *err);

/* What a POST /v1/completions or /v1/embeddings body says, for admission. */
struct api_body_pass {
	char *model;                /* NULL: absent */
	bool stream;                /* completions only */
	int64_t max_tokens;         /* -1: absent, else 1 .. MESSAGE_MAX_TOKENS; completions only */
	bool usage_wanted;          /* stream_options.include_usage */
	char *prompt_text;          /* prompt's (input's) strings, each and a newline, to count */
	size_t prompt_len;          /* its bytes: it may hold NUL (U+0000) */
	int64_t prompt_ids;         /* token ids, counted one each */
	char *body;                 /* the body as compact JSON, to send on */
};

/*
 * Parse a body of len bytes (any bytes: untrusted) passed through to
 * /completions (embeddings false) or /embeddings: 0 with out filled (the
 * caller releases it with api_body_pass_clear), or -1 with err filled.
 */
int api_body_passthrough(const char *body, size_t len, bool embeddings, struct api_body_pass *out,
    struct api_body_error *err);
void api_body_pass_clear(struct api_body_pass *);

#endif
