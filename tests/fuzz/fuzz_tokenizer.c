/*
 * libFuzzer target: random bytes through both encodings. Invalid UTF-8 must
 * be refused (-1); valid UTF-8 must encode, count the same, and decode back
 * to exactly the input. The input is also repaired into valid UTF-8 (each
 * bad byte becoming a character of a class the split patterns care about)
 * and checked the same way. Counted as a message's content (NUL bytes
 * included, by its length), it costs its tokens plus the fixed overhead.
 * The vocabularies come from $OPENLLMD_TOKENIZER_DIR.
 */
#include "config.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "daemon/tokenizer.h"

int LLVMFuzzerInitialize(int *, char ***);
int LLVMFuzzerTestOneInput(const uint8_t *, size_t);

static struct tokenizer *fuzz_tok[2];

/* Whether s is valid UTF-8, checked apart from the tokenizer's own check. */
static int
fuzz_utf8(const uint8_t *s, size_t len)
{
	uint32_t	cp;
	size_t		i = 0, n, k;

	while (i < len) {
		if (s[i] < 0x80) {
			i++;
			continue;
		}
		if ((s[i] & 0xe0) == 0xc0) {
			n = 1;
			cp = s[i] & 0x1f;
		} else if ((s[i] & 0xf0) == 0xe0) {
			n = 2;
			cp = s[i] & 0x0f;
		} else if ((s[i] & 0xf8) == 0xf0) {
			n = 3;
			cp = s[i] & 0x07;
		} else
			return 0;
		if (len - i <= n)
			return 0;
		for (k = 1; k <= n; k++) {
			if ((s[i + k] & 0xc0) != 0x80)
				return 0;
			cp = (cp << 6) | (s[i + k] & 0x3f);
		}
		if ((n == 1 && cp < 0x80) || (n == 2 && cp < 0x800) ||
		    (n == 3 && cp < 0x10000) || cp > 0x10ffff ||
		    (cp >= 0xd800 && cp < 0xe000))
			return 0;
		i += n + 1;
	}
	return 1;
}

int
LLVMFuzzerInitialize(int *argc, char ***argv)
{
	static const char	*names[2] = { "cl100k_base", "o200k_base" };
	char			 cause[256];
	int			 i;

	for (i = 0; i < 2; i++) {
		fuzz_tok[i] = tokenizer_load(names[i], cause, sizeof cause);
		if (fuzz_tok[i] == NULL) {
			fprintf(stderr, "fuzz_tokenizer: %s (set "
			    "OPENLLMD_TOKENIZER_DIR)\n", cause);
			exit(1);
		}
	}
	return 0;
}

/* Check one input against both encodings. */
static void
fuzz_one(const uint8_t *data, size_t size)
{
	const char	*text = (const char *)data;
	uint32_t	*ids;
	size_t		 n, len;
	char		*back, cause[128];
	int		 i, valid = fuzz_utf8(data, size), r;

	for (i = 0; i < 2; i++) {
		r = tokenizer_encode(fuzz_tok[i], text, size, &ids, &n, cause,
		    sizeof cause);
		if (!valid) {
			if (r != -1 || tokenizer_count(fuzz_tok[i], text, size) !=
			    -1)
				abort();
			continue;
		}
		if (r != 0 || tokenizer_count(fuzz_tok[i], text, size) !=
		    (int64_t)n)
			abort();
		if (tokenizer_decode(fuzz_tok[i], ids, n, &back, &len, cause,
		    sizeof cause) != 0 || len != size ||
		    memcmp(back, data, size) != 0)
			abort();
		{
			struct tokenizer_message m = { "user", text, NULL, NULL, size };

			/* 3 + "user" (1 token) + the text + 3 to prime the reply */
			if (size > 0 && tokenizer_count_messages(fuzz_tok[i], &m, 1) !=
			    (int64_t)n + 7)
				abort();
		}
		free(back);
		free(ids);
	}
}

/* data with each byte that starts no valid sequence replaced, in out. */
static size_t
fuzz_repair(const uint8_t *data, size_t size, uint8_t *out)
{
	/* nbsp, marks, Lt, Lm, Lu, Ll, Lo, Nd, Nl, spaces, emoji, long s. */
	static const char *const chars[16] = {
		"\xc2\xa0", "\xcc\x81", "\xc7\x85", "\xca\xb0", "\xc3\x89",
		"\xc3\xa9", "\xe4\xb8\x80", "\xd9\xa1", "\xe2\x85\xa0",
		"\xe3\x80\x80", "\xe2\x80\xa8", "\xf0\x9f\x98\x80", "\xc5\xbf",
		"\xc2\x85", "\xf0\x9f\x87\xab", "\xe0\xa4\xbf",
	};
	size_t	i = 0, o = 0, k, n;

	while (i < size) {
		for (n = 1; n <= 4 && i + n <= size; n++) {
			if (fuzz_utf8(data + i, n))
				break;
		}
		if (n <= 4 && i + n <= size) {
			memcpy(out + o, data + i, n);
			o += n;
			i += n;
			continue;
		}
		k = strlen(chars[data[i] & 15]);
		memcpy(out + o, chars[data[i] & 15], k);
		o += k;
		i++;
	}
	return o;
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	uint8_t	*fixed;

	fuzz_one(data, size);
	if ((fixed = malloc(4 * size + 1)) == NULL)
		return 0;
	fuzz_one(fixed, fuzz_repair(data, size, fixed));
	free(fixed);
	return 0;
}
