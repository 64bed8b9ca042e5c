/* anthropic.c: Anthropic's Messages API as chat requests and replies; a native upstream's usage. */
#ifndef OLLM_ANTHROPIC_H
#define OLLM_ANTHROPIC_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <event2/buffer.h>

#include "protocol/message.h"

#define ANTHROPIC_VERSION "2023-06-01"  /* the anthropic-version this speaks */

/* Why a body was refused: a message for the client, and the field at fault. */
struct anthropic_error {
	char message[300];
	char field[64];             /* "messages.0.content.1", as Anthropic names fields; "" for none */
};

/* What rendering a reply needs to know of its request. */
struct anthropic_meta {
	bool stream;
	bool thinking;              /* reasoning the server reports is shown as thinking blocks */
};

/*
 * A POST /v1/messages body (untrusted bytes) as an OP_CHAT request (id 0;
 * freed with message_request_free), or NULL with err filled.
 *
 * `system` (a string or text blocks; Claude Code's per-request
 * "x-anthropic-billing-header: ..." block left out, as it would defeat the
 * model server's prompt cache) is the first message; then each
 * message in order, its content a string or blocks. Text blocks are joined
 * with "\n" (content may hold U+0000; content_len says its length). In an
 * assistant turn, tool_use blocks become OpenAI tool_calls (arguments: the
 * input as JSON text). In a user turn, each tool_result block becomes a
 * "tool" message (tool_call_id, its text), before the turn's own text, as
 * OpenAI wants the results right after the calls. A "system" turn (Claude
 * Code sends them mid-conversation) stays a system message where it is.
 * thinking and redacted_thinking blocks are left out of the prompt: their
 * text belongs to the turn that made them, and OpenAI-compatible servers
 * drop (or refuse) earlier reasoning. A text document is its text. Images,
 * other documents and block types this does not know are refused, naming
 * the block: chat content is text only.
 *
 * `tools` become OpenAI function tools in extra (name, description,
 * parameters = input_schema); a tool with defer_loading is left out unless
 * a tool_reference block in a tool result names it (the model has loaded
 * it then); Anthropic's server tools (a type other than "custom") are left
 * out, as the model server cannot run them. tool_choice auto, any, tool,
 * none become auto, required, the function, none; disable_parallel_tool_use
 * becomes parallel_tool_calls false. max_tokens is required (1 ..
 * MESSAGE_MAX_TOKENS); stop_sequences, temperature and top_p map to theirs,
 * top_k goes in extra; output_config.format json_schema becomes
 * response_format. The model is passed as given. `thinking` (enabled or
 * adaptive, unless display is "omitted") sets meta->thinking; it is not
 * sent on. metadata, cache_control, citations and every unknown field are
 * ignored, as Anthropic does.
 */
struct request *anthropic_parse_messages(const char *body, size_t len,
    struct anthropic_meta *meta, struct anthropic_error *err);

/* A POST /v1/messages/count_tokens body: the same request, max_tokens not needed (-1). */
struct request *anthropic_parse_count_tokens(const char *body, size_t len,
    struct anthropic_error *err);

/*
 * Anthropic's error type for one of the daemon's error codes, and the HTTP
 * status: bad_request 400 invalid_request_error, invalid_api_key 401
 * authentication_error, budget_exceeded 402 billing_error, forbidden 403
 * permission_error, unknown_model 404 not_found_error, too_large 413
 * request_too_large, rate_limited 429 rate_limit_error, timeout 504
 * timeout_error, upstream_unavailable (and shutting_down, too_many_clients,
 * fleet_unavailable) 529 overloaded_error; upstream_error is the model
 * server's 4xx (other than 401, 403, 429) as invalid_request_error (404
 * not_found_error), else 502 api_error; anything else 500 api_error.
 * upstream_status is an upstream_error's status, or -1.
 */
int anthropic_error_status(const char *code, int64_t upstream_status, const char **type);

/*
 * Append the error body {"type":"error","error":{"type","message"}} (with
 * "budget" in error when detail holds one) and return the HTTP status.
 */
int anthropic_error_write(struct evbuffer *out, const char *code, const char *message,
    int64_t upstream_status, const struct message_raw *detail);

/* Append a count_tokens answer: {"input_tokens":N}. */
void anthropic_count_write(struct evbuffer *out, int64_t input_tokens);

/*
 * Append a whole Message for a non-stream reply: id, type, role, model,
 * content blocks (thinking when meta thinking and reasoning, text, then a
 * tool_use per tool call, its input the arguments parsed: {} when empty,
 * {"arguments": TEXT} when they are not a JSON object), stop_reason,
 * stop_sequence, usage. stop_sequence names the stop sequence that ended
 * the reply when the model server said so (NULL: not known). -1 when
 * memory runs out.
 */
int anthropic_message_write(struct evbuffer *out, const char *id, const char *model,
    const struct done_reply *, bool thinking, const char *stop_sequence);

/* Anthropic's stop_reason for a chat's finish_reason. */
const char *anthropic_stop_reason(const char *finish_reason, bool tool_calls,
    const char *stop_sequence);

enum anthropic_block { ANTHROPIC_BLOCK_NONE, ANTHROPIC_BLOCK_TEXT,
    ANTHROPIC_BLOCK_THINKING, ANTHROPIC_BLOCK_TOOL };

/* One OpenAI tool call index, and the content block it streams into. */
struct anthropic_tool_block {
	int64_t openai_index;
	int64_t block;
};

/*
 * A stream of chat deltas rendered as Anthropic's events: message_start
 * (usage: input_tokens, output_tokens 0) and a ping; per block
 * content_block_start, content_block_delta (text_delta, thinking_delta,
 * input_json_delta) and content_block_stop, one block open at a time;
 * message_delta (stop_reason, stop_sequence; usage: input_tokens,
 * output_tokens) and message_stop; or an error event. Each event is
 * "event: NAME\ndata: JSON\n\n". A tool call fragment of a call whose
 * block was already stopped (servers stream calls one after another, so
 * this is rare) still goes to that block's index.
 */
struct anthropic_stream {
	char *id;
	char *model;
	bool thinking;
	int64_t input_tokens;
	bool started;
	bool ended;
	enum anthropic_block open;
	int64_t open_index;         /* the open block's index */
	int64_t next_index;         /* the next block's index */
	struct anthropic_tool_block *tools;
	size_t n_tools;
	bool saw_tool;
};

/*
 * Start a stream: id ("msg_..."), the model it names, whether reasoning is
 * shown, and the prompt's tokens as counted before the reply (the final
 * count goes in message_delta). -1 when memory runs out.
 */
int anthropic_stream_init(struct anthropic_stream *, const char *id, const char *model,
    bool thinking, int64_t input_tokens);
void anthropic_stream_clear(struct anthropic_stream *);

/* message_start and a ping, once; the other writers call it first themselves. */
void anthropic_stream_begin(struct anthropic_stream *, struct evbuffer *out);

/* The events of one delta. -1 when memory runs out (the stream is then broken). */
int anthropic_stream_delta(struct anthropic_stream *, const struct delta_reply *,
    struct evbuffer *out);

/* The end: the open block stopped, message_delta, message_stop. */
int anthropic_stream_done(struct anthropic_stream *, const struct done_reply *,
    const char *stop_sequence, struct evbuffer *out);

/* An error event ending the stream. */
void anthropic_stream_error(struct anthropic_stream *, const char *code, const char *message,
    int64_t upstream_status, struct evbuffer *out);

/* A ping event, to keep a quiet stream's connection alive (after message_start). */
void anthropic_stream_ping(struct anthropic_stream *, struct evbuffer *out);

/*
 * What a native upstream (one that speaks /v1/messages itself) says in its
 * stream events or its whole reply, accumulated over a stream: usage
 * (prompt_tokens = input_tokens + cache_creation_input_tokens +
 * cache_read_input_tokens, from message_start, each overwritten by a
 * later event that gives it; completion_tokens = output_tokens, the last),
 * the model, the stop_reason, an error. text is set by each event that
 * carries generated text, thinking or tool input, and cleared by the others.
 * Strings are malloc'd; release with anthropic_native_clear.
 */
struct anthropic_native {
	bool has_usage;
	struct usage usage;
	char *model;
	char *stop_reason;
	bool stopped;               /* message_stop was seen */
	bool text;
	char *error_type;
	char *error_message;        /* the server reported an error */
	int64_t input_tokens;       /* the parts of prompt_tokens, as last given */
	int64_t cache_creation;
	int64_t cache_read;
};

/*
 * Fold one SSE event of a native stream (event: its name, or NULL; data:
 * its JSON). -1 with cause when data is not a JSON object; an error event
 * fills error_message and returns 0.
 */
int anthropic_native_event(struct anthropic_native *, const char *event, const char *data,
    size_t len, char *cause, size_t cause_len);

/* Fold a whole native reply (a Message or an error body); as anthropic_native_event. */
int anthropic_native_response(struct anthropic_native *, const char *json, size_t len,
    char *cause, size_t cause_len);

void anthropic_native_clear(struct anthropic_native *);

/*
 * The body to forward to a native upstream: the client's, naming model
 * (NULL: kept), its max_tokens replaced by the daemon's limit (<= 0: the
 * key removed, for count_tokens). malloc'd; NULL with cause when the body
 * is not a JSON object.
 */
char *anthropic_native_body(const char *body, size_t len, const char *model,
    int64_t max_tokens, char *cause, size_t cause_len);

#endif
