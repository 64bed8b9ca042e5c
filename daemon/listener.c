/* The Unix socket: bind or take it from systemd, accept, read peer credentials. */
#include "config.h"

#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#ifdef HAVE_SYSTEMD
#include <systemd/sd-daemon.h>
#endif

#include "daemon/api.h"
#include "daemon/log.h"
#include "daemon/openllmd.h"

/* Tell whether a daemon answers on path. */
static bool
listener_in_use(const struct sockaddr_un *sun)
{
	int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	bool used;

	if (fd == -1)
		return false;
	used = connect(fd, (const struct sockaddr *)sun, sizeof *sun) == 0;
	close(fd);
	return used;
}

/* Fail early, before touching state, when a daemon already answers on path. */
int
listener_check(const char *path, char *cause, size_t cause_len)
{
	struct sockaddr_un sun;

	memset(&sun, 0, sizeof sun);
	sun.sun_family = AF_UNIX;
	if (strlen(path) >= sizeof sun.sun_path) {
		snprintf(cause, cause_len, "socket path too long: %s", path);
		return -1;
	}
	strcpy(sun.sun_path, path);
	if (listener_in_use(&sun)) {
		snprintf(cause, cause_len, "another openllmd already answers on %s", path);
		return -1;
	}
	return 0;
}

/* Create the socket's directory (one level) when it is missing. */
static void
listener_make_dir(const char *path)
{
	char dir[sizeof(((struct sockaddr_un *)0)->sun_path)];
	char *slash;

	snprintf(dir, sizeof dir, "%s", path);
	if ((slash = strrchr(dir, '/')) == NULL || slash == dir)
		return;
	*slash = '\0';
	if (mkdir(dir, 0755) == -1 && errno != EEXIST)
		log_warn("cannot create %s: %s", dir, strerror(errno));
}

/*
 * Connections open from uid, msgpack and HTTP together; the sessions are
 * counted only when the total could reach the per-uid cap.
 */
int
listener_uid_count(const struct server *s, uid_t uid)
{
	const struct session *se;
	int n = api_uid_conns(s, uid);

	if (s->n_sessions + (size_t)n < (size_t)s->max_clients_per_uid)
		return n;
	TAILQ_FOREACH(se, &s->sessions, entry)
		n += se->uid == uid;
	return n;
}

/*
 * Turn a client away: one error frame (id 0) written straight to the new
 * socket, which has room for it, then close. At most one log line a second.
 */
static void
listener_refuse(struct server *s, int fd, const struct ucred *cred, const char *code,
    const char *why)
{
	static msgpack_sbuffer sb;
	struct reply r;
	int64_t now = now_mono_ms();

	memset(&r, 0, sizeof r);
	r.type = REPLY_ERROR;
	r.u.error.code = (char *)code;
	r.u.error.message = (char *)why;
	r.u.error.retry_after = NAN;
	r.u.error.status = -1;
	sb.size = 0;
	if (message_reply_encode(&sb, &r) == 0 && write(fd, sb.data, sb.size) == -1)
		log_debug("refusing client pid %d: write: %s", (int)cred->pid, strerror(errno));
	close(fd);
	if (now - s->refused_log_ms < 1000) {
		s->refused_quiet++;
		return;
	}
	if (s->refused_quiet > 0)
		log_warn("refusing client pid %d uid %u: %s (%u more refused in the last second)",
		    (int)cred->pid, (unsigned)cred->uid, why, s->refused_quiet);
	else
		log_warn("refusing client pid %d uid %u: %s", (int)cred->pid, (unsigned)cred->uid, why);
	s->refused_log_ms = now;
	s->refused_quiet = 0;
}

/*
 * A client connects: read its credentials, check the caps, start a session.
 * Root and the daemon's own user are not held to max_clients_per_uid.
 */
static void
listener_accept_cb(evutil_socket_t lfd, short what, void *arg)
{
	struct server *s = arg;
	struct ucred cred;
	socklen_t len;
	char why[160];
	int fd;

	(void)what;
	for (int burst = 0; burst < 64; burst++) {
		fd = accept4(lfd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
		if (fd == -1) {
			if (errno == EMFILE || errno == ENFILE || errno == ENOBUFS || errno == ENOMEM) {
				log_warn("accept: %s; pausing new connections for a second", strerror(errno));
				listener_pause(s);
			} else if (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR &&
			    errno != ECONNABORTED)
				log_warn("accept: %s", strerror(errno));
			return;
		}
		len = sizeof cred;
		if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &len) == -1) {
			log_warn("SO_PEERCRED: %s", strerror(errno));
			close(fd);
			continue;
		}
		if (s->draining) {
			listener_refuse(s, fd, &cred, "upstream_unavailable", "openllmd is shutting down");
			continue;
		}
		if (s->n_sessions + api_conns(s) >= (size_t)s->max_clients) {
			snprintf(why, sizeof why, "too many clients (max_clients %d)", s->max_clients);
			listener_refuse(s, fd, &cred, "rate_limited", why);
			continue;
		}
		if (cred.uid != 0 && cred.uid != s->own_uid &&
		    listener_uid_count(s, cred.uid) >= s->max_clients_per_uid) {
			snprintf(why, sizeof why, "uid %u already has %d connections "
			    "(max_clients_per_uid %d)", (unsigned)cred.uid, s->max_clients_per_uid,
			    s->max_clients_per_uid);
			listener_refuse(s, fd, &cred, "rate_limited", why);
			continue;
		}
		session_new(s, fd, cred.uid, cred.pid);
	}
}

/* Accept again after a pause. */
static void
listener_retry_cb(evutil_socket_t fd, short what, void *arg)
{
	struct server *s = arg;

	(void)fd;
	(void)what;
	if (s->listen_ev != NULL)
		event_add(s->listen_ev, NULL);
}

void
listener_pause(struct server *s)
{
	struct timeval one = { 1, 0 };

	event_del(s->listen_ev);
	evtimer_add(s->accept_retry, &one);
}

int
listener_open(struct server *s, char *cause, size_t cause_len)
{
	struct sockaddr_un sun;
	const char *path = s->conf->socket_path;
	int fd = -1;
	mode_t old;

#ifdef HAVE_SYSTEMD
	/* the first socket is ours; any after it are the HTTP front's (api_open) */
	int n = sd_listen_fds(0);
	if (n >= 1) {
		fd = SD_LISTEN_FDS_START;
		if (sd_is_socket_unix(fd, SOCK_STREAM, 1, NULL, 0) <= 0) {
			snprintf(cause, cause_len, "the socket systemd passed is not a listening Unix stream socket");
			return -1;
		}
		fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK);
		fcntl(fd, F_SETFD, FD_CLOEXEC);
		log_info("listening on the socket passed by systemd");
	}
#endif
	if (fd == -1) {
		if (listener_check(path, cause, cause_len) == -1)
			return -1;
		memset(&sun, 0, sizeof sun);
		sun.sun_family = AF_UNIX;
		strcpy(sun.sun_path, path);
		listener_make_dir(path);
		if (unlink(path) == 0)
			log_info("replaced stale socket %s", path);
		fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
		if (fd == -1) {
			snprintf(cause, cause_len, "socket: %s", strerror(errno));
			return -1;
		}
		old = umask(0777 & ~s->conf->socket_mode);
		if (bind(fd, (struct sockaddr *)&sun, sizeof sun) == -1) {
			int saved = errno;
			umask(old);
			close(fd);
			snprintf(cause, cause_len, "bind %s: %s", path, strerror(saved));
			return -1;
		}
		umask(old);
		if (chmod(path, s->conf->socket_mode) == -1)
			log_warn("chmod %s: %s", path, strerror(errno));
		if (listen(fd, 128) == -1) {
			snprintf(cause, cause_len, "listen %s: %s", path, strerror(errno));
			close(fd);
			return -1;
		}
		log_info("listening on %s (mode %04o)", path, (unsigned)s->conf->socket_mode);
	}
	s->listen_fd = fd;
	s->listen_ev = event_new(s->base, fd, EV_READ | EV_PERSIST, listener_accept_cb, s);
	s->accept_retry = evtimer_new(s->base, listener_retry_cb, s);
	event_add(s->listen_ev, NULL);
	return 0;
}

/* Stop accepting; remove the socket file unless systemd owns it. */
void
listener_close(struct server *s)
{
	if (s->listen_ev != NULL) {
		event_free(s->listen_ev);
		s->listen_ev = NULL;
	}
	if (s->accept_retry != NULL) {
		event_free(s->accept_retry);
		s->accept_retry = NULL;
	}
	if (s->listen_fd != -1) {
		struct stat st;
		bool ours = true;
#ifdef HAVE_SYSTEMD
		ours = s->listen_fd != SD_LISTEN_FDS_START;
#endif
		close(s->listen_fd);
		s->listen_fd = -1;
		if (ours && stat(s->conf->socket_path, &st) == 0 && S_ISSOCK(st.st_mode))
			unlink(s->conf->socket_path);
	}
}
