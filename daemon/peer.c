/* Who is at the other end of a local socket: SO_PEERCRED, or the kernel's socket table (sock_diag). */
#include "config.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <arpa/inet.h>
#include <linux/inet_diag.h>
#include <linux/netlink.h>
#include <linux/sock_diag.h>
#include <netinet/in.h>
#include <netinet/tcp.h>

#include "daemon/peer.h"

/* Whether an address is loopback: 127.0.0.0/8, ::1 or ::ffff:127.0.0.0/104. */
bool
peer_is_loopback(const struct sockaddr_storage *ss)
{
	if (ss->ss_family == AF_INET) {
		const struct sockaddr_in *sin = (const struct sockaddr_in *)ss;
		return (ntohl(sin->sin_addr.s_addr) >> 24) == 127;
	}
	if (ss->ss_family == AF_INET6) {
		const struct in6_addr *a = &((const struct sockaddr_in6 *)ss)->sin6_addr;
		if (IN6_IS_ADDR_LOOPBACK(a))
			return true;
		return IN6_IS_ADDR_V4MAPPED(a) && a->s6_addr[12] == 127;
	}
	return false;
}

/*
 * The uid owning the TCP socket whose local end is `peer` and remote end is
 * `local`: the client's socket of our connection, which on loopback lives in
 * this kernel. Asked with one NETLINK_SOCK_DIAG request (what `ss -e` shows)
 * for an established socket only. An exact lookup answers whatever socket
 * has the addresses, whatever states were asked: one its process has
 * closed lingers in FIN_WAIT or TIME_WAIT, where the kernel keeps no owner
 * and answers uid 0. So the answer's state is checked, and one without an
 * inode (a socket no process holds) refused.
 */
static int
peer_tcp_uid(const struct sockaddr_storage *local, const struct sockaddr_storage *peer,
    uid_t *uid, char *cause, size_t cause_len)
{
	struct {
		struct nlmsghdr nlh;
		struct inet_diag_req_v2 req;
	} msg;
	struct sockaddr_nl sa;
	char buf[8192];
	int fd, rc = -1;
	bool found = false;

	memset(&msg, 0, sizeof msg);
	msg.nlh.nlmsg_len = sizeof msg;
	msg.nlh.nlmsg_type = SOCK_DIAG_BY_FAMILY;
	msg.nlh.nlmsg_flags = NLM_F_REQUEST;
	msg.req.sdiag_family = (uint8_t)peer->ss_family;
	msg.req.sdiag_protocol = IPPROTO_TCP;
	msg.req.idiag_states = 1u << TCP_ESTABLISHED;
	msg.req.id.idiag_cookie[0] = INET_DIAG_NOCOOKIE;
	msg.req.id.idiag_cookie[1] = INET_DIAG_NOCOOKIE;
	if (peer->ss_family == AF_INET) {
		const struct sockaddr_in *p = (const struct sockaddr_in *)peer;
		const struct sockaddr_in *l = (const struct sockaddr_in *)local;
		msg.req.id.idiag_sport = p->sin_port;
		msg.req.id.idiag_dport = l->sin_port;
		memcpy(msg.req.id.idiag_src, &p->sin_addr, 4);
		memcpy(msg.req.id.idiag_dst, &l->sin_addr, 4);
	} else {
		const struct sockaddr_in6 *p = (const struct sockaddr_in6 *)peer;
		const struct sockaddr_in6 *l = (const struct sockaddr_in6 *)local;
		msg.req.id.idiag_sport = p->sin6_port;
		msg.req.id.idiag_dport = l->sin6_port;
		memcpy(msg.req.id.idiag_src, &p->sin6_addr, 16);
		memcpy(msg.req.id.idiag_dst, &l->sin6_addr, 16);
	}
	if ((fd = socket(AF_NETLINK, SOCK_DGRAM | SOCK_CLOEXEC, NETLINK_SOCK_DIAG)) == -1) {
		snprintf(cause, cause_len, "NETLINK_SOCK_DIAG: %s", strerror(errno));
		return -1;
	}
	struct timeval tv = { 1, 0 };   /* the kernel answers at once; never hang the loop */
	setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
	memset(&sa, 0, sizeof sa);
	sa.nl_family = AF_NETLINK;
	if (sendto(fd, &msg, sizeof msg, 0, (struct sockaddr *)&sa, sizeof sa) == -1) {
		snprintf(cause, cause_len, "sock_diag request: %s", strerror(errno));
		goto out;
	}
	for (;;) {
		ssize_t n = recv(fd, buf, sizeof buf, 0);
		if (n <= 0) {
			snprintf(cause, cause_len, "sock_diag answer: %s", n == 0 ? "end of file" :
			    strerror(errno));
			goto out;
		}
		for (struct nlmsghdr *h = (struct nlmsghdr *)buf; NLMSG_OK(h, (size_t)n);
		    h = NLMSG_NEXT(h, n)) {
			if (h->nlmsg_type == NLMSG_DONE)
				goto done;
			if (h->nlmsg_type == NLMSG_ERROR) {
				const struct nlmsgerr *err = NLMSG_DATA(h);
				snprintf(cause, cause_len, "sock_diag: %s", strerror(-err->error));
				goto out;
			}
			if (h->nlmsg_type != SOCK_DIAG_BY_FAMILY ||
			    h->nlmsg_len < NLMSG_LENGTH(sizeof(struct inet_diag_msg)))
				continue;
			const struct inet_diag_msg *m = NLMSG_DATA(h);
			if (m->idiag_state != TCP_ESTABLISHED || m->idiag_inode == 0) {
				snprintf(cause, cause_len, "the client's socket is no longer held "
				    "by any process");
				goto out;
			}
			*uid = m->idiag_uid;
			found = true;
			/* an exact lookup answers one message and no NLMSG_DONE */
			goto done;
		}
	}
done:
	if (found)
		rc = 0;
	else
		snprintf(cause, cause_len, "the kernel knows no open socket for the client's address "
		    "(it has closed it)");
out:
	close(fd);
	return rc;
}

int
peer_identify(int fd, struct peer *p, char *cause, size_t cause_len)
{
	struct sockaddr_storage local;
	socklen_t len = sizeof p->addr;

	memset(p, 0, sizeof *p);
	p->uid = (uid_t)-1;
	if (getpeername(fd, (struct sockaddr *)&p->addr, &len) == -1) {
		snprintf(cause, cause_len, "getpeername: %s", strerror(errno));
		return -1;
	}
	if (p->addr.ss_family == AF_UNIX) {
		struct ucred cred;
		socklen_t cl = sizeof cred;
		p->local = true;
		if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &cl) == -1) {
			snprintf(cause, cause_len, "SO_PEERCRED: %s", strerror(errno));
			return -1;
		}
		p->uid = cred.uid;
		p->known = true;
		return 0;
	}
	if (p->addr.ss_family != AF_INET && p->addr.ss_family != AF_INET6) {
		snprintf(cause, cause_len, "address family %d", (int)p->addr.ss_family);
		return -1;
	}
	if (!peer_is_loopback(&p->addr))
		return 0;
	p->local = true;
	len = sizeof local;
	if (getsockname(fd, (struct sockaddr *)&local, &len) == -1) {
		snprintf(cause, cause_len, "getsockname: %s", strerror(errno));
		return -1;
	}
	if (peer_tcp_uid(&local, &p->addr, &p->uid, cause, cause_len) == -1)
		return -1;
	p->known = true;
	return 0;
}

void
peer_format(const struct peer *p, char *buf, size_t len)
{
	char host[INET6_ADDRSTRLEN];

	if (p->addr.ss_family == AF_INET) {
		const struct sockaddr_in *s = (const struct sockaddr_in *)&p->addr;
		inet_ntop(AF_INET, &s->sin_addr, host, sizeof host);
		snprintf(buf, len, "%s:%u", host, (unsigned)ntohs(s->sin_port));
	} else if (p->addr.ss_family == AF_INET6) {
		const struct sockaddr_in6 *s = (const struct sockaddr_in6 *)&p->addr;
		inet_ntop(AF_INET6, &s->sin6_addr, host, sizeof host);
		snprintf(buf, len, "[%s]:%u", host, (unsigned)ntohs(s->sin6_port));
	} else
		snprintf(buf, len, "unix");
}
