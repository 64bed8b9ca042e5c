/*
 * tokenizer_bench load ENCODING: time to load, and resident memory after.
 * tokenizer_bench run ENCODING FILE [SECONDS]: count the tokens of FILE
 * again and again for about SECONDS (default 2), print bytes/s and tokens/s.
 * Output is one line of "key=value" fields for tests/bench/tokenizer.sh.
 */
#include "config.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "daemon/tokenizer.h"

/* Seconds since some fixed point. */
static double
bench_now(void)
{
	struct timespec	ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* The resident set size in KiB, from /proc/self/status. */
static long
bench_rss_kib(void)
{
	FILE	*f;
	char	 line[256];
	long	 kib = -1;

	if ((f = fopen("/proc/self/status", "r")) == NULL)
		return -1;
	while (fgets(line, sizeof line, f) != NULL) {
		if (strncmp(line, "VmRSS:", 6) == 0) {
			kib = strtol(line + 6, NULL, 10);
			break;
		}
	}
	fclose(f);
	return kib;
}

/* Read all of path. */
static char *
bench_read(const char *path, size_t *len)
{
	FILE	*f;
	char	*b;
	long	 n;

	if ((f = fopen(path, "rb")) == NULL || fseek(f, 0, SEEK_END) == -1 ||
	    (n = ftell(f)) < 0 || fseek(f, 0, SEEK_SET) == -1) {
		perror(path);
		exit(1);
	}
	if ((b = malloc((size_t)n + 1)) == NULL ||
	    fread(b, 1, (size_t)n, f) != (size_t)n) {
		perror(path);
		exit(1);
	}
	fclose(f);
	*len = (size_t)n;
	return b;
}

int
main(int argc, char **argv)
{
	struct tokenizer	*t;
	char			 cause[256], *text;
	double			 t0, t1, seconds = 2, best = 1e30, total = 0;
	long			 rss0, rss1;
	size_t			 len, runs = 0;
	int64_t			 n = 0;
	uint32_t		*ids;
	size_t			 n_ids;

	if (argc < 3 || (strcmp(argv[1], "load") != 0 &&
	    strcmp(argv[1], "run") != 0) ||
	    (strcmp(argv[1], "run") == 0 && argc < 4)) {
		fprintf(stderr, "usage: tokenizer_bench load ENCODING\n"
		    "       tokenizer_bench run ENCODING FILE [SECONDS]\n");
		return 64;
	}
	rss0 = bench_rss_kib();
	t0 = bench_now();
	if ((t = tokenizer_load(argv[2], cause, sizeof cause)) == NULL) {
		fprintf(stderr, "tokenizer_bench: %s\n", cause);
		return 1;
	}
	t1 = bench_now();
	rss1 = bench_rss_kib();
	if (strcmp(argv[1], "load") == 0) {
		printf("load_ms=%.1f rss_kib=%ld rss_added_kib=%ld\n",
		    (t1 - t0) * 1e3, rss1, rss1 - rss0);
		tokenizer_free(t);
		return 0;
	}
	if (argc > 4)
		seconds = atof(argv[4]);
	text = bench_read(argv[3], &len);

	/* The ids once, to check that encode and count agree. */
	if (tokenizer_encode(t, text, len, &ids, &n_ids, cause,
	    sizeof cause) == -1) {
		fprintf(stderr, "tokenizer_bench: %s\n", cause);
		return 1;
	}
	free(ids);
	do {
		t0 = bench_now();
		n = tokenizer_count(t, text, len);
		t1 = bench_now();
		if (n != (int64_t)n_ids) {
			fprintf(stderr, "tokenizer_bench: count %lld, encode %zu\n",
			    (long long)n, n_ids);
			return 1;
		}
		if (t1 - t0 < best)
			best = t1 - t0;
		total += t1 - t0;
		runs++;
	} while (total < seconds);
	printf("bytes=%zu tokens=%lld runs=%zu best_s=%.6f mb_s=%.2f "
	    "tokens_s=%.0f\n", len, (long long)n, runs, best,
	    (double)len / best / 1e6, (double)n / best);
	free(text);
	tokenizer_free(t);
	return 0;
}
