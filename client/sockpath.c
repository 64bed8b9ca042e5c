/* sockpath.c: where the daemon's socket is, and the private fallback directory. */
#include "config.h"

#include <sys/types.h>
#include <sys/stat.h>

#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "client/sockpath.h"

/* Copy a path into buf; -1 when it is empty or does not fit. */
static int
sockpath_copy(const char *src, char *buf, size_t len)
{
	int n;

	n = snprintf(buf, len, "%s", src);
	if (n <= 0 || (size_t)n >= len)
		return -1;
	return 0;
}

/* /tmp/openllmd-UID: a directory only its owner may use. */
int
sockpath_private_dir(uid_t euid, char *buf, size_t len)
{
	int n = snprintf(buf, len, "/tmp/openllmd-%u", (unsigned)euid);

	return n <= 0 || (size_t)n >= len ? -1 : 0;
}

/* Resolve the daemon's socket as DESIGN.md says (see sockpath.h). */
int
sockpath_resolve(const char *path, const char *env_socket, uid_t euid,
    const char *xdg_runtime, const char *system, char *buf, size_t len)
{
	struct stat sb;
	char dir[64];
	int n;

	if (path != NULL && *path != '\0')
		return sockpath_copy(path, buf, len);
	if (env_socket != NULL && *env_socket != '\0')
		return sockpath_copy(env_socket, buf, len);
	if (euid == 0)
		return sockpath_copy(system, buf, len);
	if (xdg_runtime != NULL && *xdg_runtime == '/')
		n = snprintf(buf, len, "%s/openllmd.sock", xdg_runtime);
	else if (sockpath_private_dir(euid, dir, sizeof dir) == 0)
		n = snprintf(buf, len, "%s/openllmd.sock", dir);
	else
		return -1;
	if (n <= 0 || (size_t)n >= len)
		return -1;
	if (lstat(buf, &sb) == -1 && stat(system, &sb) == 0)
		return sockpath_copy(system, buf, len);
	return 0;
}

/* Check (and with create, make) the private directory that holds path. */
int
sockpath_check_private(const char *path, uid_t euid, int create, char *cause, size_t cause_len)
{
	char dir[64];
	struct stat sb;
	size_t n;

	if (sockpath_private_dir(euid, dir, sizeof dir) == -1)
		return 0;
	n = strlen(dir);
	if (strncmp(path, dir, n) != 0 || path[n] != '/')
		return 0;
	if (create && mkdir(dir, 0700) == -1 && errno != EEXIST) {
		snprintf(cause, cause_len, "cannot create %s: %s", dir, strerror(errno));
		return -1;
	}
	if (lstat(dir, &sb) == -1) {
		snprintf(cause, cause_len, "%s: %s", dir, strerror(errno));
		return -1;
	}
	if (!S_ISDIR(sb.st_mode)) {
		snprintf(cause, cause_len, "%s is not a directory (%s); someone else may have "
		    "put it there: remove it, or set XDG_RUNTIME_DIR", dir,
		    S_ISLNK(sb.st_mode) ? "a symbolic link" : "another kind of file");
		return -1;
	}
	if (sb.st_uid != euid) {
		snprintf(cause, cause_len, "%s belongs to uid %u, not to you (uid %u); someone "
		    "else may have made it: remove it, or set XDG_RUNTIME_DIR", dir,
		    (unsigned)sb.st_uid, (unsigned)euid);
		return -1;
	}
	if ((sb.st_mode & 077) != 0) {
		snprintf(cause, cause_len, "%s has mode %04o: it must be private to its owner "
		    "(chmod 700 %s)", dir, (unsigned)(sb.st_mode & 07777), dir);
		return -1;
	}
	return 0;
}
