/*
 * fuzz_api_head.c: the HTTP front's request scanner on random bytes. The
 * first byte picks how the rest is cut into pieces; the scanner must say
 * the same of them as of the bytes given at once, never take more than it
 * is given, and keep what it reports within bounds.
 */
#include "config.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "daemon/api_head.h"

int LLVMFuzzerTestOneInput(const uint8_t *, size_t);

#define EVENTS_MAX 4096

/* Feed data in pieces of step bytes (0: at once); the events, as letters, in out. */
static size_t
run(const char *data, size_t size, size_t step, char *out, uint64_t *bodies)
{
	struct api_head h;
	size_t n_ev = 0;

	*bodies = 0;
	api_head_init(&h);
	for (size_t off = 0; off < size && n_ev < EVENTS_MAX;) {
		size_t n = step == 0 || size - off < step ? size - off : step, used;
		const char *p = data + off;
		off += n;
		while (n > 0 && n_ev < EVENTS_MAX) {
			enum api_head_event ev = api_head_feed(&h, p, n, &used);
			if (used > n)
				abort();
			p += used;
			n -= used;
			if (ev == API_HEAD_MORE && n != 0)
				abort();
			if (ev == API_HEAD_HEADERS) {
				if (h.content_length < -1 || strlen(h.method) >= sizeof h.method ||
				    (h.authorization != NULL &&
				    strlen(h.authorization) > API_HEAD_KEY_MAX))
					abort();
				*bodies += api_head_body_length(&h);
			}
			if (ev == API_HEAD_ERROR) {
				if (h.error == NULL || (h.status != 400 && h.status != 411 &&
				    h.status != 503))
					abort();
				out[n_ev++] = 'E';
				api_head_clear(&h);
				return n_ev;
			}
			if (ev != API_HEAD_MORE)
				out[n_ev++] = "MSHBE"[ev];
		}
	}
	api_head_clear(&h);
	return n_ev;
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static char whole[EVENTS_MAX], cut[EVENTS_MAX];
	uint64_t bodies_whole, bodies_cut;
	size_t n_whole, n_cut, step;

	if (size == 0)
		return 0;
	step = data[0] % 17 + 1;
	n_whole = run((const char *)data + 1, size - 1, 0, whole, &bodies_whole);
	n_cut = run((const char *)data + 1, size - 1, step, cut, &bodies_cut);
	if (n_whole != n_cut || memcmp(whole, cut, n_whole) != 0 || bodies_whole != bodies_cut)
		abort();
	return 0;
}
