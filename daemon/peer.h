/* peer.c: the identity of a local client from the kernel, never from what it says. */
#ifndef OLLM_PEER_H
#define OLLM_PEER_H

#include <stdbool.h>
#include <stddef.h>
#include <sys/socket.h>
#include <sys/types.h>

struct peer {
	struct sockaddr_storage addr;
	bool local;                 /* Unix socket or loopback TCP */
	bool known;                 /* uid is the kernel's word */
	uid_t uid;
};

/*
 * Identify the client of connected socket fd: over a Unix socket its
 * SO_PEERCRED uid; over loopback TCP the uid owning its socket (sock_diag);
 * for another address nothing (local false). -1 with cause when the kernel
 * could not say.
 */
int peer_identify(int fd, struct peer *, char *cause, size_t cause_len);
bool peer_is_loopback(const struct sockaddr_storage *);
void peer_format(const struct peer *, char *buf, size_t len);

#endif
