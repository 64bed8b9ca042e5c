/* responses.c: OpenAI's Responses API as chat requests and replies, stateless. */
#ifndef OLLM_RESPONSES_H
#define OLLM_RESPONSES_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <event2/buffer.h>
#include <jansson.h>

#include "protocol/message.h"

#define RESPONSES_NAMESPACE_SEP "__"    /* a namespaced tool's chat name: NAMESPACE__NAME */

/* Why a body was refused: a message for the client, and the parameter at fault. */
struct responses_error {
	char message[300];
	char param[64];             /* "input[3].content[0]", as OpenAI names them; "" for none */
};

/*
 * What rendering a reply needs of its request: the fields a response
 * object repeats (echo: instructions, max_output_tokens, tools as given,
 * tool_choice, parallel_tool_calls, temperature, top_p, text, reasoning,
 * metadata), and the tools the model was shown under another name (names:
 * chat function name -> {"name", "namespace"?, "custom"?}). Both owned;
 * release with responses_meta_clear.
 */
struct responses_meta {
	bool stream;
	json_t *echo;
	json_t *names;
};

void responses_meta_clear(struct responses_meta *);

/*
 * A POST /v1/responses body (untrusted bytes) as an OP_CHAT request (id 0;
 * freed with message_request_free), or NULL with err filled.
 *
 * Stateless: previous_response_id, conversation, a stored prompt and
 * background are refused (nothing is kept here; send the whole
 * conversation in input); store is accepted and nothing is stored.
 * instructions is the first message (system). input is a string (one user
 * message) or items: message (role user, assistant, system, or developer,
 * sent as system; content a string or input_text, output_text and refusal
 * parts, joined with "\n"), function_call and custom_tool_call (tool calls
 * of the assistant message before them, or of a new one),
 * function_call_output and custom_tool_call_output ("tool" messages with
 * tool_call_id; output a string or text parts). reasoning items are left
 * out of the prompt. input_image, input_file and other parts, and item
 * types this does not know (item_reference included), are refused, naming
 * the item: chat content is text only.
 *
 * Function tools become chat function tools; a namespace's functions are
 * shown as NAMESPACE__NAME; a custom (freeform) tool as a function taking
 * {"input": string}, its grammar, if any, added to its description; hosted
 * tools (web_search, file_search, ...) are left out, as the model server
 * cannot run them. tool_choice maps to chat's; parallel_tool_calls is
 * passed on; max_output_tokens is the length limit; temperature, top_p,
 * stream as given; text.format json_schema or json_object becomes
 * response_format. include, reasoning, metadata, store, truncation, user
 * and every unknown field are not sent on.
 */
struct request *responses_parse(const char *body, size_t len, struct responses_meta *meta,
    struct responses_error *err);

/*
 * The error object of a failed response for one of the daemon's error
 * codes ({"code","message"}: budget_exceeded as insufficient_quota,
 * rate_limited as rate_limit_exceeded, others as they are). Errors before a
 * response starts are the chat front's own JSON errors, same shape.
 */
json_t *responses_error_json(const char *code, const char *message);

/* One tool call being streamed as an output item. */
struct responses_call {
	int64_t openai_index;
	size_t item;                /* its index in output */
	bool custom;                /* a custom tool's call: input, not arguments */
	bool closed;
	char *call_id;
	char *name;                 /* as the client knows it */
	char *space;                /* its namespace, or NULL */
	char *args;                 /* arguments so far */
	size_t args_len;
};

enum responses_item { RESPONSES_ITEM_NONE, RESPONSES_ITEM_MESSAGE,
    RESPONSES_ITEM_REASONING, RESPONSES_ITEM_CALL };

/*
 * A stream of chat deltas rendered as the Responses API's events:
 * response.created and response.in_progress; per output item
 * response.output_item.added, then for a message
 * response.content_part.added, response.output_text.delta...,
 * response.output_text.done, response.content_part.done; for reasoning the
 * same with reasoning_text parts and response.reasoning_text.delta; for a
 * function call response.function_call_arguments.delta... and .done; for a
 * custom tool's call response.custom_tool_call_input.delta and .done; then
 * response.output_item.done; at the end response.completed (or
 * response.incomplete when the length limit cut the reply) with the whole
 * output and usage {input_tokens, output_tokens, total_tokens}, or
 * response.failed. Each event is "event: TYPE\ndata: JSON\n\n" with a
 * sequence_number from 0. The text of the reply is held until the end,
 * as the done events and the final response repeat it.
 */
struct responses_stream {
	char *id;                   /* "resp_..." */
	char *model;
	int64_t created_at;
	json_t *echo;               /* the meta's, referenced */
	json_t *names;
	int64_t input_tokens;
	int64_t seq;
	bool started;
	bool ended;
	json_t *output;             /* every item so far, as last sent */
	enum responses_item open;
	size_t open_item;
	char *text;                 /* the open message's or reasoning's text */
	size_t text_len;
	struct responses_call *calls;
	size_t n_calls;
};

/*
 * Start a stream of the response id for model (created_at in epoch
 * seconds; input_tokens: the prompt as counted before the reply, for
 * nothing but the caller's own use). -1 when memory runs out.
 */
int responses_stream_init(struct responses_stream *, const char *id, const char *model,
    int64_t created_at, const struct responses_meta *);
void responses_stream_clear(struct responses_stream *);

/* response.created and response.in_progress, once; the other writers call it first. */
void responses_stream_begin(struct responses_stream *, struct evbuffer *out);

/* The events of one delta; -1 when memory runs out (the stream is then broken). */
int responses_stream_delta(struct responses_stream *, const struct delta_reply *,
    struct evbuffer *out);

/* The end: the open item done, then response.completed or response.incomplete. */
int responses_stream_done(struct responses_stream *, const struct done_reply *,
    struct evbuffer *out);

/* response.failed, ending the stream. */
void responses_stream_error(struct responses_stream *, const char *code, const char *message,
    struct evbuffer *out);

/*
 * Append a whole response object for a non-stream reply: its output items
 * (reasoning, the message, then the tool calls), status completed (or
 * incomplete: max_output_tokens), usage. -1 when memory runs out.
 */
int responses_object_write(struct evbuffer *out, const char *id, const char *model,
    int64_t created_at, const struct responses_meta *, const struct done_reply *);

#endif
