/* sockpath.c: where the daemon's socket is, seen from a client. */
#ifndef OLLM_SOCKPATH_H
#define OLLM_SOCKPATH_H

#include <sys/types.h>

#include <stddef.h>

#define SOCKPATH_SYSTEM "/run/openllmd/openllmd.sock"

/*
 * Resolve the socket path into buf: path if not NULL or empty, else
 * env_socket (OPENLLMD_SOCKET) if not NULL or empty, else system for root,
 * else xdg_runtime/openllmd.sock (xdg_runtime absolute, else
 * /tmp/openllmd-UID.sock); a user whose own socket does not exist while the
 * system one does gets the system one. -1 when the result does not fit.
 */
int sockpath_resolve(const char *path, const char *env_socket, uid_t euid,
    const char *xdg_runtime, const char *system, char *buf, size_t len);

#endif
