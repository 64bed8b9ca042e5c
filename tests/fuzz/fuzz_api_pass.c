/*
 * fuzz_api_pass.c: the HTTP front's passed-through body parser on random
 * bytes, as POST /v1/completions (fuzz_completions) or /v1/embeddings
 * (fuzz_embeddings, built with FUZZ_EMBEDDINGS). A body is either refused
 * with a bounded message naming a known field, or says what admission
 * needs within its bounds, and what goes on to the model server is a JSON
 * object again.
 */
#include "config.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "daemon/api_body.h"

#ifndef FUZZ_EMBEDDINGS
#define FUZZ_EMBEDDINGS 0
#endif

int LLVMFuzzerTestOneInput(const uint8_t *, size_t);

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static const char *const params[] = { "", "prompt", "input", "model", "stream",
		"max_tokens", "n" };
	struct api_body_error err;
	struct api_body_pass p;
	json_t *j;
	bool known = false;

	if (api_body_passthrough((const char *)data, size, FUZZ_EMBEDDINGS, &p, &err) == -1) {
		size_t n = strnlen(err.message, sizeof err.message);
		if (n == 0 || n == sizeof err.message)
			abort();
		for (size_t i = 0; i < sizeof params / sizeof params[0]; i++)
			known |= strcmp(err.param, params[i]) == 0;
		if (!known)
			abort();
		return 0;
	}
	if (p.model != NULL && memchr(p.model, '\0', strlen(p.model) + 1) != p.model + strlen(p.model))
		abort();
	if (p.max_tokens != -1 && (p.max_tokens < 1 || p.max_tokens > MESSAGE_MAX_TOKENS))
		abort();
	if (FUZZ_EMBEDDINGS && (p.stream || p.max_tokens != -1 || p.usage_wanted))
		abort();
	if (p.prompt_text == NULL || p.prompt_text[p.prompt_len] != '\0' || p.prompt_ids < 0 ||
	    p.prompt_len > size * 2 + 1)
		abort();
	if (p.body == NULL || (j = json_loads(p.body, JSON_ALLOW_NUL, NULL)) == NULL ||
	    !json_is_object(j))
		abort();
	json_decref(j);
	api_body_pass_clear(&p);
	return 0;
}
