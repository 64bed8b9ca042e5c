/* sockpath.c: where the daemon's socket is, and the private fallback directory. */
#ifndef OLLM_SOCKPATH_H
#define OLLM_SOCKPATH_H

#include <sys/types.h>

#include <stddef.h>

#define SOCKPATH_SYSTEM "/run/openllmd/openllmd.sock"

/*
 * Resolve the socket path into buf: path if not NULL or empty, else
 * env_socket (OPENLLMD_SOCKET) if not NULL or empty, else system for root,
 * else xdg_runtime/openllmd.sock (xdg_runtime absolute, else
 * /tmp/openllmd-UID/openllmd.sock); a user whose own socket does not exist
 * while the system one does gets the system one. -1 when the result does not
 * fit.
 */
int sockpath_resolve(const char *path, const char *env_socket, uid_t euid,
    const char *xdg_runtime, const char *system, char *buf, size_t len);

/* The private directory used without XDG_RUNTIME_DIR: /tmp/openllmd-UID. -1 when it does not fit. */
int sockpath_private_dir(uid_t euid, char *buf, size_t len);

/*
 * When path lies inside euid's private directory, check that directory: a
 * real directory (not a symbolic link) owned by euid with no access for group
 * or others; with create, make it (mode 0700) when missing. 0 when path is
 * elsewhere or the directory is fine; -1 with cause saying what is wrong.
 */
int sockpath_check_private(const char *path, uid_t euid, int create, char *cause, size_t cause_len);

#endif
