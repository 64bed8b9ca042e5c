/* openai.c: the OpenAI chat API as real servers speak it. */
#ifndef OLLM_OPENAI_H
#define OLLM_OPENAI_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <jansson.h>
#include <msgpack.h>

#include "protocol/message.h"

#define OPENAI_MAX_DEPTH MESSAGE_MAX_DEPTH  /* nesting of free-form values */
#define OPENAI_USAGE_MAX 1000000000LL       /* larger token counts are ignored */
#define OPENAI_ERROR_MAX 300                /* bytes of an error message */
#define OPENAI_MODELS_MAX 4096              /* names kept from a models list */
#define OPENAI_MODEL_NAME_MAX 512           /* longer names are skipped */

/*
 * What one stream event or one whole response says. Strings are malloc'd,
 * NUL-terminated UTF-8 (jansson has checked them) and NULL when absent,
 * null or empty; the reply's text (content and reasoning) may hold U+0000
 * like any character, and carries its length, the others never hold it. A parse clears the struct first: pass a zeroed struct or
 * one that holds an earlier result, and release it with openai_chunk_clear.
 *
 * Dialects handled: content null or absent; a role-only first chunk; the
 * reasoning text as `reasoning_content` (vLLM, llama.cpp, DeepSeek) or
 * `reasoning` (Ollama, newer vLLM; when both are present, one is taken);
 * tool_calls as an array of fragments, or as one object (older TGI), an
 * empty array being absent; usage in the chunk carrying finish_reason, in
 * a separate chunk with empty `choices`, null, or only as llama.cpp's
 * `timings` (cache_n + prompt_n, predicted_n); errors as {"error":{...}},
 * {"error":"..","error_type":".."} (TGI), {"object":"error",...} (older
 * vLLM) or {"detail":..} (FastAPI). When several chunks of a stream carry
 * usage (vLLM's continuous_usage_stats), each is cumulative: keep the last.
 */
struct openai_chunk {
	bool done;                  /* the stream's "[DONE]" */
	char *content;
	size_t content_len;         /* its bytes, NUL included */
	char *reasoning;
	size_t reasoning_len;
	struct message_raw tool_calls;  /* msgpack of the JSON tool_calls array */
	char *finish_reason;
	bool has_usage;
	struct usage usage;         /* estimated is false */
	char *model;                /* not read from a stream chunk when model_known */
	bool model_known;           /* set by the caller, kept by the parse: it has the model */
	char *error_message;        /* the server reported an error */
	char *error_type;
	int error_status;           /* HTTP status given in the error, 0 if none */
};

/*
 * The JSON body of POST /chat/completions, malloc'd. model names the
 * upstream's model (NULL: the request's). Messages carry role, content,
 * name, tool_call_id and tool_calls; stream_options.include_usage is asked
 * when streaming; max_tokens, temperature, top_p, stop (always an array)
 * and seed when given. Then every key of `extra` is set, overriding what
 * was there, and a null value removes the key; keys that routing, parsing
 * or accounting rely on (model, messages, prompt, stream, max_tokens and
 * its aliases, n, best_of, user; stream_options except its removal) make
 * the call fail with cause "extra.KEY: ...".
 */
char *openai_chat_body(const struct chat_request *, const char *model,
    bool stream, char *cause, size_t cause_len);

/*
 * Parse one stream event. event is the SSE event name (NULL or "message"
 * for chunks; "error" for an error event, whose data may be any dialect's
 * error JSON or plain text); events with other names are ignored. Returns
 * -1 on data that is not a JSON object; an error reported in the stream
 * fills error_message and returns 0.
 */
int openai_parse_event(const char *event, const char *data, size_t len,
    struct openai_chunk *, char *cause, size_t cause_len);

/*
 * One chat.completion.chunk of a stream the HTTP front sends, as its SSE
 * event ("data: {...}\n\n"): id, created, model, system_fingerprint null,
 * then one choice whose delta is the JSON object text delta (written as it
 * is) with finish_reason (NULL: null), or no choice when delta is NULL;
 * then usage, when not NULL. Byte for byte what openai_stream_chunk_json's
 * document dumps to. malloc'd, *len set; NULL when a string is not valid
 * UTF-8 (the document then decides) or memory runs out.
 */
char *openai_stream_chunk(const char *id, int64_t created, const char *model,
    const char *delta, const char *finish_reason, const struct usage *usage, size_t *len);

/* The same chunk as a jansson document; delta (an object or NULL) is stolen. */
json_t *openai_stream_chunk_json(const char *id, int64_t created, const char *model,
    json_t *delta, const char *finish_reason, const struct usage *usage);

/* Parse the data of one stream chunk (or "[DONE]"); as openai_parse_event. */
int openai_parse_chunk(const char *json, size_t len, struct openai_chunk *,
    char *cause, size_t cause_len);

/*
 * The same, always through a jansson document: openai_parse_chunk reads the
 * usual chunk in place and must agree with this on everything (tests).
 */
int openai_parse_chunk_json(const char *json, size_t len,
    struct openai_chunk *, char *cause, size_t cause_len);

/* Parse a whole non-stream response: choices[0].message, usage, errors. */
int openai_parse_response(const char *json, size_t len, struct openai_chunk *,
    char *cause, size_t cause_len);

void openai_chunk_clear(struct openai_chunk *);

/*
 * A readable one-line message from an HTTP error body of any dialect (JSON
 * errors, FastAPI details, an HTML page's title, plain text). Never NULL
 * (unless out of memory), at most OPENAI_ERROR_MAX bytes, valid UTF-8
 * without control characters. malloc'd.
 */
char *openai_error_message(const char *body, size_t len);

/*
 * The model names of a GET /models reply: data[].id, or Ollama's
 * models[].name. *names is a malloc'd array of malloc'd strings, freed with
 * openai_models_free.
 */
int openai_parse_models(const char *json, size_t len, char ***names,
    size_t *n, char *cause, size_t cause_len);
void openai_models_free(char **names, size_t n);

/*
 * Free-form values between JSON and msgpack: integers stay integers, reals
 * reals; nesting deeper than OPENAI_MAX_DEPTH, binary and ext values,
 * non-string map keys and keys holding NUL, strings of invalid UTF-8 and
 * integers beyond int64 are refused; a NUL in a string value is kept. openai_msgpack_to_json takes exactly one object
 * and checks every declared length against the bytes left, so it can be
 * given anything.
 */
int openai_json_to_msgpack(json_t *, msgpack_packer *);
json_t *openai_msgpack_to_json(const uint8_t *, size_t);

/*
 * The keys of a reply's length limit in the dialects servers read, the
 * standard two first (max_tokens, max_completion_tokens), NULL-terminated.
 * A client's are never forwarded: the daemon sends its own limit.
 */
extern const char *const openai_length_keys[];
bool openai_length_key(const char *key);

#endif
