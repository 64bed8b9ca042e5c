/*
 * libFuzzer target: open a ledger whose state directory holds the input.
 * The first byte picks what the rest is (modulo 3):
 *   0  the raw bytes of a journal file;
 *   1  a snapshot body, given a valid header and checksum here so that the
 *      decoder behind the checksum is reached;
 *   2  journal record bodies, each prefixed in the input by a 2-byte
 *      big-endian length, framed here with valid lengths and checksums.
 * The ledger is then queried, appended to and closed. Corruption is logged
 * at error level: run with -close_fd_mask=2 to keep the output short.
 */
#include "config.h"

#include <sys/stat.h>

#include <dirent.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "daemon/ledger.h"

int LLVMFuzzerTestOneInput(const uint8_t *, size_t);

static char fuzz_dir[64];
static char fuzz_jdir[96];

/* Remove every file the previous run left. */
static void
fuzz_clean(void)
{
	char path[256];
	DIR *d;
	struct dirent *de;

	if ((d = opendir(fuzz_jdir)) != NULL) {
		while ((de = readdir(d)) != NULL) {
			if (de->d_name[0] == '.')
				continue;
			snprintf(path, sizeof path, "%s/%s", fuzz_jdir, de->d_name);
			unlink(path);
		}
		closedir(d);
	}
	snprintf(path, sizeof path, "%s/snapshot.olm", fuzz_dir);
	unlink(path);
}

/* Write a file from two pieces. */
static void
fuzz_write(const char *path, const void *a, size_t alen, const void *b, size_t blen)
{
	FILE *f = fopen(path, "wb");

	if (f == NULL)
		abort();
	if (alen > 0)
		fwrite(a, 1, alen, f);
	if (blen > 0)
		fwrite(b, 1, blen, f);
	fclose(f);
}

/* Store a big-endian u32. */
static void
fuzz_put32(uint8_t *p, uint32_t v)
{
	p[0] = v >> 24;
	p[1] = v >> 16;
	p[2] = v >> 8;
	p[3] = v;
}

/* Count history records. */
static int
fuzz_count_cb(const struct ledger_record *r, void *arg)
{
	(*(size_t *)arg)++;
	return r->model == NULL;
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static bool ready;
	struct ledger_options o;
	struct ledger_record rec;
	struct stats_result s;
	struct ledger *l;
	char path[256], cause[512];
	uint8_t hdr[16], *buf;
	size_t n = 0, blen = 0;
	int kind;

	if (!ready) {
		snprintf(fuzz_dir, sizeof fuzz_dir, "/tmp/fuzz_ledger-XXXXXX");
		if (mkdtemp(fuzz_dir) == NULL)
			abort();
		snprintf(fuzz_jdir, sizeof fuzz_jdir, "%s/journal", fuzz_dir);
		if (mkdir(fuzz_jdir, 0700) == -1)
			abort();
		ready = true;
	}
	if (size < 1)
		return 0;
	kind = data[0] % 3;
	data++;
	size--;
	fuzz_clean();
	snprintf(path, sizeof path, "%s/journal-%016d.olj", fuzz_jdir, 1);
	if (kind == 0)
		fuzz_write(path, data, size, NULL, 0);
	else if (kind == 1) {
		memcpy(hdr, "OLLMSNAP", 8);
		fuzz_put32(hdr + 8, (uint32_t)size);
		fuzz_put32(hdr + 12, ledger_crc32c(0, data, size));
		snprintf(path, sizeof path, "%s/snapshot.olm", fuzz_dir);
		fuzz_write(path, hdr, sizeof hdr, data, size);
	} else {
		if ((buf = malloc(size / 2 * 8 + size + 8)) == NULL)
			return 0;
		for (size_t i = 0; i + 2 <= size;) {
			size_t len = (size_t)data[i] << 8 | data[i + 1];
			i += 2;
			if (len > size - i)
				len = size - i;
			fuzz_put32(buf + blen, (uint32_t)len);
			fuzz_put32(buf + blen + 4, ledger_crc32c(0, data + i, len));
			memcpy(buf + blen + 8, data + i, len);
			blen += 8 + len;
			i += len;
		}
		fuzz_write(path, buf, blen, NULL, 0);
		free(buf);
	}

	ledger_options_default(&o);
	o.fsync = LEDGER_FSYNC_NO;
	if ((l = ledger_open(fuzz_dir, &o, cause, sizeof cause)) == NULL)
		return 0;
	if (ledger_stats(l, NULL, -1, &s) == 0)
		ledger_stats_clear(&s);
	if (ledger_stats(l, "day", 0, &s) == 0)
		ledger_stats_clear(&s);
	ledger_foreach_record(l, 0, fuzz_count_cb, &n, cause, sizeof cause);
	memset(&rec, 0, sizeof rec);
	rec.time_ms = 1700000000000;
	rec.model = "m";
	rec.upstream = "u";
	rec.status = LEDGER_DONE;
	ledger_append(l, &rec, cause, sizeof cause);
	ledger_close(l);
	return 0;
}
