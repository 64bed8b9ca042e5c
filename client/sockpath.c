/* sockpath.c: where the daemon's socket is, seen from a client. */
#include "config.h"

#include <sys/types.h>
#include <sys/stat.h>

#include <stdio.h>

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

/* Resolve the daemon's socket as DESIGN.md says (see sockpath.h). */
int
sockpath_resolve(const char *path, const char *env_socket, uid_t euid,
    const char *xdg_runtime, const char *system, char *buf, size_t len)
{
	struct stat sb;
	int n;

	if (path != NULL && *path != '\0')
		return sockpath_copy(path, buf, len);
	if (env_socket != NULL && *env_socket != '\0')
		return sockpath_copy(env_socket, buf, len);
	if (euid == 0)
		return sockpath_copy(system, buf, len);
	if (xdg_runtime != NULL && *xdg_runtime == '/')
		n = snprintf(buf, len, "%s/openllmd.sock", xdg_runtime);
	else
		n = snprintf(buf, len, "/tmp/openllmd-%u.sock", (unsigned)euid);
	if (n <= 0 || (size_t)n >= len)
		return -1;
	if (lstat(buf, &sb) == -1 && stat(system, &sb) == 0)
		return sockpath_copy(system, buf, len);
	return 0;
}
