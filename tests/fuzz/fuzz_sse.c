/*
 * fuzz_sse.c: the server-sent-events parser on random bytes fed in random
 * pieces, checked against the same bytes fed at once: splits must never
 * change what is parsed.
 */
#include "config.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "daemon/sse.h"

int LLVMFuzzerTestOneInput(const uint8_t *, size_t);

/* A running digest of the events seen. */
struct digest {
	uint64_t h;
	size_t n;
};

/* Mix bytes into a digest (FNV-1a). */
static void
digest_add(struct digest *d, const void *p, size_t len)
{
	const uint8_t	*b = p;

	while (len-- > 0)
		d->h = (d->h ^ *b++) * 1099511628211ULL;
}

/* Fold one event into the digest. */
static int
digest_cb(void *arg, const char *event, const char *data, size_t len)
{
	struct digest	*d = arg;

	if (data[len] != '\0')
		abort();
	digest_add(d, event != NULL ? event : "", event != NULL ?
	    strlen(event) + 1 : 1);
	digest_add(d, &len, sizeof len);
	digest_add(d, data, len);
	d->n++;
	return (0);
}

/* Parse buf in pieces chosen by seed (0: at once); the final status. */
static int
run(const uint8_t *buf, size_t len, size_t max, uint32_t seed,
    struct digest *d)
{
	struct sse_parser	 p;
	char			 cause[128];
	size_t			 off = 0, n;
	int			 rc = 0;

	d->h = 14695981039346656037ULL;
	d->n = 0;
	sse_parser_init(&p, max, digest_cb, d);
	while (off < len && rc == 0) {
		if (seed == 0)
			n = len - off;
		else {
			seed = seed * 1103515245 + 12345;
			n = (seed >> 16) % 9;   /* empty pieces too */
			if (n > len - off)
				n = len - off;
		}
		rc = sse_parser_feed(&p, (const char *)buf + off, n, cause,
		    sizeof cause);
		off += n;
	}
	if (rc == 0)
		rc = sse_parser_finish(&p, cause, sizeof cause) == 0 ? 0 : 1;
	else
		rc = 2;
	sse_parser_clear(&p);
	return (rc);
}

/* One input: split feeding must match feeding at once. */
int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct digest	a, b;
	size_t		max;
	uint32_t	seed;
	int		ra, rb;

	if (size < 3)
		return (0);
	max = 1 + ((size_t)data[0] << 4);
	seed = 1 + data[1] + ((uint32_t)data[2] << 8);
	data += 3;
	size -= 3;

	ra = run(data, size, max, 0, &a);
	rb = run(data, size, max, seed, &b);
	if (ra != rb || a.n != b.n || a.h != b.h)
		abort();
	return (0);
}
