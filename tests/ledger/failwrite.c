/*
 * An LD_PRELOAD shim that makes writes and fsyncs to chosen files fail on
 * demand, so tests running as root can still see a full or broken disk.
 *
 *   OLLM_FAILWRITE_FLAG    path of a file; while it exists, calls on matching
 *                          descriptors fail. Its first word says how:
 *                          "enospc" (also when empty) or "eio": writes and
 *                          fsyncs fail with that errno; "short": write(2)
 *                          writes half and returns the short count; "fsync":
 *                          only fsync and fdatasync fail, with EIO.
 *   OLLM_FAILWRITE_PREFIX  only regular files whose path starts with this are
 *                          affected (default: every regular file).
 *
 * Interposed: write, pwrite, pwrite64, writev, fsync, fdatasync. The symbol
 * ollm_failwrite_loaded tells a program that the shim is in place.
 */
#include "config.h"

#include <sys/stat.h>
#include <sys/types.h>
#include <sys/uio.h>

#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

enum failwrite_mode { FW_NONE, FW_ENOSPC, FW_EIO, FW_SHORT, FW_FSYNC };

int ollm_failwrite_loaded = 1;

ssize_t write(int, const void *, size_t);
ssize_t pwrite(int, const void *, size_t, off_t);
ssize_t pwrite64(int, const void *, size_t, off_t);
ssize_t writev(int, const struct iovec *, int);
int fsync(int);
int fdatasync(int);

/* The next definition of a symbol (libc's, or a sanitizer's interceptor). */
static void *
failwrite_next(const char *name)
{
	void *p = dlsym(RTLD_NEXT, name);

	if (p == NULL)
		abort();
	return p;
}

/* How calls on fd should fail right now. */
static enum failwrite_mode
failwrite_mode(int fd)
{
	const char *flag = getenv("OLLM_FAILWRITE_FLAG");
	const char *prefix = getenv("OLLM_FAILWRITE_PREFIX");
	char link[64], path[PATH_MAX], word[16];
	struct stat st;
	ssize_t n;
	int ffd;

	if (flag == NULL || *flag == '\0' || access(flag, F_OK) == -1)
		return FW_NONE;
	if (fstat(fd, &st) == -1 || !S_ISREG(st.st_mode))
		return FW_NONE;
	if (prefix != NULL && *prefix != '\0') {
		snprintf(link, sizeof link, "/proc/self/fd/%d", fd);
		if ((n = readlink(link, path, sizeof path - 1)) == -1)
			return FW_NONE;
		path[n] = '\0';
		if (strncmp(path, prefix, strlen(prefix)) != 0)
			return FW_NONE;
	}
	if ((ffd = open(flag, O_RDONLY | O_CLOEXEC)) == -1)
		return FW_ENOSPC;
	n = read(ffd, word, sizeof word - 1);
	close(ffd);
	word[n > 0 ? n : 0] = '\0';
	word[strcspn(word, " \t\r\n")] = '\0';
	if (strcmp(word, "eio") == 0)
		return FW_EIO;
	if (strcmp(word, "short") == 0)
		return FW_SHORT;
	if (strcmp(word, "fsync") == 0)
		return FW_FSYNC;
	return FW_ENOSPC;
}

/* write(2), failing on demand. */
ssize_t
write(int fd, const void *buf, size_t len)
{
	static ssize_t (*next)(int, const void *, size_t);

	if (next == NULL)
		next = failwrite_next("write");
	switch (failwrite_mode(fd)) {
	case FW_ENOSPC:
		errno = ENOSPC;
		return -1;
	case FW_EIO:
		errno = EIO;
		return -1;
	case FW_SHORT:
		if (len >= 2)
			return next(fd, buf, len / 2);
		errno = ENOSPC;
		return -1;
	default:
		return next(fd, buf, len);
	}
}

/* pwrite(2), failing on demand. */
ssize_t
pwrite(int fd, const void *buf, size_t len, off_t off)
{
	static ssize_t (*next)(int, const void *, size_t, off_t);

	if (next == NULL)
		next = failwrite_next("pwrite");
	switch (failwrite_mode(fd)) {
	case FW_ENOSPC:
		errno = ENOSPC;
		return -1;
	case FW_EIO:
		errno = EIO;
		return -1;
	case FW_SHORT:
		if (len >= 2)
			return next(fd, buf, len / 2, off);
		errno = ENOSPC;
		return -1;
	default:
		return next(fd, buf, len, off);
	}
}

/* The large-file name of pwrite. */
ssize_t
pwrite64(int fd, const void *buf, size_t len, off_t off)
{
	return pwrite(fd, buf, len, off);
}

/* writev(2), failing on demand (never short). */
ssize_t
writev(int fd, const struct iovec *iov, int cnt)
{
	static ssize_t (*next)(int, const struct iovec *, int);

	if (next == NULL)
		next = failwrite_next("writev");
	switch (failwrite_mode(fd)) {
	case FW_ENOSPC:
	case FW_SHORT:
		errno = ENOSPC;
		return -1;
	case FW_EIO:
		errno = EIO;
		return -1;
	default:
		return next(fd, iov, cnt);
	}
}

/* fsync(2), failing on demand. */
int
fsync(int fd)
{
	static int (*next)(int);

	if (next == NULL)
		next = failwrite_next("fsync");
	switch (failwrite_mode(fd)) {
	case FW_ENOSPC:
		errno = ENOSPC;
		return -1;
	case FW_EIO:
	case FW_FSYNC:
		errno = EIO;
		return -1;
	default:
		return next(fd);
	}
}

/* fdatasync(2), failing on demand. */
int
fdatasync(int fd)
{
	static int (*next)(int);

	if (next == NULL)
		next = failwrite_next("fdatasync");
	switch (failwrite_mode(fd)) {
	case FW_ENOSPC:
		errno = ENOSPC;
		return -1;
	case FW_EIO:
	case FW_FSYNC:
		errno = EIO;
		return -1;
	default:
		return next(fd);
	}
}
