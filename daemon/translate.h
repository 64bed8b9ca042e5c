/* translate.c: what the Messages and Responses fronts share in building a chat request. */
#ifndef OLLM_TRANSLATE_H
#define OLLM_TRANSLATE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <jansson.h>

#include "protocol/message.h"

/* Text being joined from parts; it may hold NUL (U+0000), as a message's content may. */
struct translate_text {
	char *p;                    /* NUL-terminated once anything was added; NULL before */
	size_t len;
	size_t cap;
	bool any;                   /* some part was added (maybe empty) */
};

/* Append n bytes, first sep when something came before; -1 when memory runs out. */
int translate_text_add(struct translate_text *, const char *s, size_t n, const char *sep);

/* Append a JSON string value (length-aware); -1 when v is not a string or memory runs out. */
int translate_text_add_json(struct translate_text *, json_t *v, const char *sep);

/* Move the text into a message's content (content_len set); the text is left empty. */
void translate_text_move(struct translate_text *, struct chat_message *);

void translate_text_clear(struct translate_text *);

/*
 * A new message at the end of chat's list, its role copied and every other
 * field empty; *cap is the list's room, grown as needed (start it at 0 with
 * an empty list). NULL when memory runs out.
 */
struct chat_message *translate_message_add(struct chat_request *, size_t *cap, const char *role);

/* The msgpack bytes of v in raw (which must be empty); -1 when v cannot be passed on. */
int translate_raw_set(struct message_raw *, json_t *v);

/*
 * An OpenAI tool call {"id","type":"function","function":{"name","arguments"}},
 * appended to calls (a JSON array); arguments is JSON text. -1 when memory runs out.
 */
int translate_tool_call_add(json_t *calls, const char *id, const char *name,
    const char *arguments);

/* A JSON integer in 1 .. MESSAGE_MAX_TOKENS; false otherwise. */
bool translate_max_tokens(json_t *v, int64_t *out);

/*
 * The stop strings of an array (or of a single string, when one is
 * allowed) into chat's stop list; -1 with cause naming field otherwise.
 */
int translate_stop(struct chat_request *, json_t *v, bool string_allowed, const char *field,
    char *cause, size_t cause_len);

/* A JSON value's text (JSON_COMPACT), malloc'd; "{}" for NULL. NULL when memory runs out. */
char *translate_json_text(json_t *v);

/* Whether v is a JSON string equal to s. */
bool translate_is(json_t *v, const char *s);

#endif
