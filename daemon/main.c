/* openllmd: options, start-up, signals, graceful shutdown. */
#include "config.h"

#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sysexits.h>
#include <time.h>
#include <unistd.h>

#include <curl/curl.h>
#include <event2/event.h>

#ifdef HAVE_SYSTEMD
#include <systemd/sd-daemon.h>
#endif

#include "daemon/fleet.h"
#include "client/sockpath.h"
#include "daemon/api.h"
#include "daemon/http.h"
#include "daemon/ledger.h"
#include "daemon/log.h"
#include "daemon/openllmd.h"
#include "daemon/tokenizer.h"

struct server *server;

#define SERVER_FD_RESERVE 32        /* stdio, event loop, curl, log, ledger files, listener, accept */
#define SERVER_FD_POOL 64           /* connections kept for an upstream without max_concurrency */
#define SERVER_PER_UID_DEFAULT 256  /* max_clients_per_uid "auto", or half of max_clients */

static void
usage(FILE *out)
{
	fprintf(out,
	    "usage: openllmd [-c FILE] [-f] [-t] [-v] [-V]\n"
	    "  -c FILE  configuration file (default: $OPENLLMD_CONFIG, then, when not\n"
	    "           root, $XDG_CONFIG_HOME/openllmd/openllmd.conf, then\n"
	    "           " SYSCONFDIR "/openllmd/openllmd.conf, then built-in defaults)\n"
	    "  -f       stay in the foreground and log to stderr\n"
	    "  -t       check the configuration as a start would (tokenizers, state_dir,\n"
	    "           socket directory) without starting; print FILE:LINE: message for\n"
	    "           each problem; exit 0, or 78 when there is any\n"
	    "  -v       more verbose logging (debug)\n"
	    "  -V       print the version and exit\n"
	    "  -h       this help\n"
	    "Environment: OPENLLMD_SOCKET (socket path), OPENLLMD_CONFIG,\n"
	    "OPEN_LLM_API_BASE and OPEN_LLM_API_MODEL (the single upstream),\n"
	    "OPENLLMD_TOKENIZER_DIR (where .tiktoken files are looked up),\n"
	    "http_proxy, https_proxy, all_proxy, no_proxy (read once, at start).\n");
}

/* Wall-clock milliseconds since the epoch. */
int64_t
now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_REALTIME, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Monotonic milliseconds, for durations. */
int64_t
now_mono_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Raise the soft descriptor limit to the hard one; the limit in effect. */
static unsigned long long
server_raise_nofile(void)
{
	struct rlimit rl;
	rlim_t want;

	if (getrlimit(RLIMIT_NOFILE, &rl) == -1) {
		log_warn("getrlimit RLIMIT_NOFILE: %s", strerror(errno));
		return 1024;
	}
	want = rl.rlim_max == RLIM_INFINITY ? (rlim_t)1 << 20 : rl.rlim_max;
	if (rl.rlim_cur != RLIM_INFINITY && rl.rlim_cur < want) {
		struct rlimit raised = { want, rl.rlim_max };
		if (setrlimit(RLIMIT_NOFILE, &raised) == 0)
			rl.rlim_cur = want;
		else
			log_warn("cannot raise the descriptor limit from %llu to %llu: %s",
			    (unsigned long long)rl.rlim_cur, (unsigned long long)want, strerror(errno));
	}
	return rl.rlim_cur == RLIM_INFINITY ? (unsigned long long)1 << 20 :
	    (unsigned long long)rl.rlim_cur;
}

/* Descriptors kept out of max_clients: the daemon's own and every upstream's connections. */
static unsigned long long
server_fd_reserve(const struct conf *c)
{
	unsigned long long r = SERVER_FD_RESERVE;

	for (size_t i = 0; i < c->n_upstreams; i++) {
		int mc = c->upstreams[i].max_concurrency;
		r += (unsigned long long)(mc > 0 ? mc : SERVER_FD_POOL) + 2;  /* + probe, resolver */
	}
	return r;
}

/*
 * Fit max_clients to the descriptors left after the reserve (lowering a
 * setting that does not fit, with a warning) and derive max_clients_per_uid.
 */
void
server_limits(struct server *s, const struct conf *c)
{
	unsigned long long reserve = server_fd_reserve(c);
	long long fit = (long long)s->nofile - (long long)reserve;
	int max, per, per_address;

	if (fit < 1) {
		log_error("the descriptor limit %llu leaves nothing for clients once %llu are kept "
		    "for upstream connections and files: accepting one client; raise LimitNOFILE "
		    "or lower max_concurrency", s->nofile, reserve);
		fit = 1;
	}
	if (fit > 1000000)
		fit = 1000000;
	max = c->max_clients;
	if (max == 0)
		max = (int)fit;
	else if (max > fit) {
		log_warn("max_clients %d does not fit in the descriptor limit %llu once %llu are kept "
		    "for upstream connections and files: lowered to %lld", max, s->nofile, reserve, fit);
		max = (int)fit;
	}
	per = c->max_clients_per_uid;
	if (per == 0)
		per = max / 2 < SERVER_PER_UID_DEFAULT ? (max / 2 > 0 ? max / 2 : 1) : SERVER_PER_UID_DEFAULT;
	if (per > max)
		per = max;
	per_address = c->max_clients_per_address > 0 ? c->max_clients_per_address : per;
	if (per_address > max)
		per_address = max;
	if (max != s->max_clients || per != s->max_clients_per_uid)
		log_info("accepting up to %d clients, %d per user (descriptor limit %llu, %llu kept "
		    "for upstream connections and files)", max, per, s->nofile, reserve);
	s->max_clients = max;
	s->max_clients_per_uid = per;
	s->max_clients_per_address = per_address;
}

/* Tell systemd (when present) how we are doing. */
static void
server_notify_status(struct server *s)
{
#ifdef HAVE_SYSTEMD
	sd_notifyf(0, "STATUS=%llu requests served, %lld in flight, %zu clients",
	    (unsigned long long)s->served, (long long)s->in_flight, s->n_sessions);
#else
	(void)s;
#endif
}

static void
server_drain_recheck_cb(evutil_socket_t fd, short what, void *arg)
{
	(void)fd;
	(void)what;
	server_check_drained(arg);
}

/*
 * Once draining and nothing is in flight (msgpack or HTTP), close every client after its last
 * reply is written, then leave the loop.
 */
void
server_check_drained(struct server *s)
{
	struct session *se, *next;

	if (!s->draining || s->in_flight > 0)
		return;
	if (!api_flushed(s)) {
		/* HTTP answers are still being written: look again shortly */
		struct timeval tv = { 0, 50 * 1000 };
		if (s->drain_ev == NULL)
			s->drain_ev = evtimer_new(s->base, server_drain_recheck_cb, s);
		if (s->drain_ev != NULL && !evtimer_pending(s->drain_ev, NULL))
			evtimer_add(s->drain_ev, &tv);
		return;
	}
	if (!s->flushing) {
		s->flushing = true;
		for (se = TAILQ_FIRST(&s->sessions); se != NULL; se = next) {
			next = TAILQ_NEXT(se, entry);
			if (!se->closing)
				session_close_after_flush(se);
		}
	}
	if (s->n_sessions == 0)
		event_base_loopexit(s->base, NULL);
}

/*
 * What the loop does before it sleeps: write the ledger records of the chats
 * that ended and answer them, then write every client's output. Answers can
 * resume paused transfers and those can end chats, so it goes round until
 * nothing is left.
 */
void
server_flush(struct server *s)
{
	do {
		chat_commit(s);
		if (s->budget_freed)
			chat_budget_retry(s);
		session_flush_all(s);
	} while (!TAILQ_EMPTY(&s->finishing) || !TAILQ_EMPTY(&s->flush_list));
}

static void
server_flush_cb(evutil_socket_t fd, short what, void *arg)
{
	struct server *s = arg;

	(void)fd;
	(void)what;
	server_flush(s);
	s->flush_armed = false;
}

/*
 * Have server_flush run at the end of this loop pass: the event is made
 * active, so it runs after the events already active, without a trip
 * through epoll.
 */
void
server_flush_soon(struct server *s)
{
	if (s->flush_armed || s->flush_ev == NULL)
		return;
	s->flush_armed = true;
	event_active(s->flush_ev, EV_TIMEOUT, 1);
}

/* Start a graceful shutdown: stop accepting, let chats finish within the grace period. */
static void
server_drain(struct server *s)
{
	if (s->draining)
		return;
	s->draining = true;
	s->drain_deadline_ms = now_mono_ms() + (int64_t)(s->conf->shutdown_grace * 1000);
	log_info("shutting down: %lld chats in flight, waiting up to %.0fs",
	    (long long)s->in_flight, s->conf->shutdown_grace);
#ifdef HAVE_SYSTEMD
	sd_notify(0, "STOPPING=1");
#endif
	listener_close(s);
	api_stop(s);
	server_check_drained(s);
}

/*
 * Build the budgets of a configuration, their usage so far read from the
 * ledger; budgets that stay keep their reservations of chats in flight.
 */
int
server_budgets_load(struct server *s, const struct conf *c, char *cause, size_t cause_len)
{
	struct budgets *b = budgets_new();
	struct budget_def def;
	int64_t now = now_ms();

	if (b == NULL) {
		snprintf(cause, cause_len, "out of memory");
		return -1;
	}
	if (c->max_budget > 0) {
		memset(&def, 0, sizeof def);
		def.scope = BUDGET_ALL;
		def.unit = BUDGET_MONEY;
		def.period = BUDGET_EVER;
		def.limit = c->max_budget;
		if (budgets_add(b, &def, cause, cause_len) == -1)
			goto fail;
	}
	for (size_t i = 0; i < c->n_budgets; i++) {
		const struct budget_conf *bc = &c->budgets[i];
		memset(&def, 0, sizeof def);
		if (budget_scope_parse(bc->scope, &def.scope) == -1 ||
		    budget_unit_parse(bc->unit, &def.unit) == -1 ||
		    budget_period_parse(bc->period, &def.period) == -1) {
			snprintf(cause, cause_len, "budgets[%zu]: invalid", i);
			goto fail;
		}
		def.uid = bc->uid;
		def.named = bc->named;
		def.name = bc->who;
		def.limit = bc->limit;
		if (bc->fit != NULL && budget_fit_parse(bc->fit, &def.fit) == -1) {
			snprintf(cause, cause_len, "budgets[%zu]: invalid fit", i);
			goto fail;
		}
		if (budgets_add(b, &def, cause, cause_len) == -1)
			goto fail;
	}
	for (size_t i = 0; i < budgets_count(b); i++) {
		struct budget_state st;
		struct ledger_scope scope = { NULL, NULL, NULL, -1, NULL };
		struct counters used;
		budgets_get(b, i, now, &st);
		if (st.def.scope == BUDGET_USER && st.def.named) {
			scope.uid = LEDGER_UID_NAMED;
			scope.user = st.def.name;
		} else if (st.def.scope == BUDGET_USER) {
			scope.uid = st.def.uid;
			scope.user = "";
		}
		else if (st.def.scope == BUDGET_TAG)
			scope.tag = st.def.name;
		else if (st.def.scope == BUDGET_MODEL)
			scope.model = st.def.name;
		ledger_usage(s->ledger, &scope,
		    st.period_start_ms > 0 ? ledger_day(st.period_start_ms) : -1, &used);
		budgets_set_used(b, i, st.def.unit == BUDGET_MONEY ? used.cost :
		    (double)used.total_tokens, now);
	}
	if (s->budgets != NULL) {
		budgets_carry(b, s->budgets);
		budgets_free(s->budgets);
	}
	s->budgets = b;
	return 0;
fail:
	budgets_free(b);
	return -1;
}

/* Re-read the configuration and swap it in only if it is valid. */
static void
server_reload(struct server *s)
{
	char *errors = NULL, cause[256];
	struct conf *c;

#ifdef HAVE_SYSTEMD
	sd_notify(0, "RELOADING=1");
#endif
	c = conf_load(s->conf_path, &errors);
	if (c == NULL) {
		log_error("reload refused, keeping the running configuration:\n%s", errors ? errors : "");
		free(errors);
		goto out;
	}
	if (strcmp(c->socket_path, s->conf->socket_path) != 0)
		log_warn("reload: a new socket path takes effect at restart");
	if (strcmp(c->state_dir, s->conf->state_dir) != 0)
		log_warn("reload: a new state_dir takes effect at restart");
	if (upstream_setup(s, c, cause, sizeof cause) == -1 ||
	    server_budgets_load(s, c, cause, sizeof cause) == -1) {
		log_error("reload refused, keeping the running configuration: %s", cause);
		conf_free(c);
		goto out;
	}
	free(c->socket_path);
	c->socket_path = strdup(s->conf->socket_path);
	free(c->state_dir);
	c->state_dir = strdup(s->conf->state_dir);
	server_limits(s, c);
	conf_free(s->conf);
	s->conf = c;
	log_set_level(c->log_level);
	log_info("configuration reloaded from %s", c->path ? c->path : "built-in defaults");
out:
#ifdef HAVE_SYSTEMD
	sd_notify(0, "READY=1");
#endif
	return;
}

static void
server_signal_cb(evutil_socket_t sig, short what, void *arg)
{
	struct server *s = arg;

	(void)what;
	if (sig == SIGHUP)
		server_reload(s);
	else
		server_drain(s);
}

/* Once a second: ledger upkeep, the drain deadline, systemd status and watchdog. */
static void
server_tick_cb(evutil_socket_t fd, short what, void *arg)
{
	struct server *s = arg;

	(void)fd;
	(void)what;
	ledger_tick(s->ledger, now_ms());
	fleet_tick(s->fleet, now_ms());
	if (s->draining && now_mono_ms() >= s->drain_deadline_ms) {
		if (s->in_flight > 0)
			log_warn("grace period over: cancelling %lld chats", (long long)s->in_flight);
		session_close_all(s);
		event_base_loopexit(s->base, NULL);
	}
	server_notify_status(s);
#ifdef HAVE_SYSTEMD
	sd_notify(0, "WATCHDOG=1");
#endif
}

/* Free from the loop what callbacks let go of. */
static void
server_reap_cb(evutil_socket_t fd, short what, void *arg)
{
	(void)fd;
	(void)what;
	upstream_reap(arg);
}

/* Create a directory and its parents. */
static int
mkdir_p(const char *path, mode_t mode)
{
	char buf[4096];

	snprintf(buf, sizeof buf, "%s", path);
	for (char *p = buf + 1; *p != '\0'; p++) {
		if (*p != '/')
			continue;
		*p = '\0';
		if (mkdir(buf, 0755) == -1 && errno != EEXIST)
			return -1;
		*p = '/';
	}
	if (mkdir(buf, mode) == -1 && errno != EEXIST)
		return -1;
	return 0;
}

/* Detach from the terminal: fork, setsid, fork, stdio to /dev/null. */
static void
daemonize(void)
{
	int fd;

	switch (fork()) {
	case -1:
		fatal("fork: %s", strerror(errno));
	case 0:
		break;
	default:
		_exit(0);
	}
	setsid();
	switch (fork()) {
	case -1:
		fatal("fork: %s", strerror(errno));
	case 0:
		break;
	default:
		_exit(0);
	}
	if (chdir("/") == -1)
		fatal("chdir /: %s", strerror(errno));
	if ((fd = open("/dev/null", O_RDWR)) != -1) {
		dup2(fd, STDIN_FILENO);
		dup2(fd, STDOUT_FILENO);
		dup2(fd, STDERR_FILENO);
		if (fd > STDERR_FILENO)
			close(fd);
	}
}

/* The nearest directory of path that exists, in buf; -1 when none can be named. */
static int
check_existing_parent(const char *path, char *buf, size_t len)
{
	struct stat st;
	char *slash;

	if ((size_t)snprintf(buf, len, "%s", path) >= len)
		return -1;
	while (stat(buf, &st) == -1) {
		if ((errno != ENOENT && errno != ENOTDIR) || (slash = strrchr(buf, '/')) == NULL)
			return -1;
		if (slash == buf)
			slash[1] = '\0';
		else
			*slash = '\0';
	}
	return 0;
}

/* Whether the directory dir exists and is writable, or could be created; cause when not. */
static int
check_dir_usable(const char *dir, char *cause, size_t cause_len)
{
	char near[4096];
	struct stat st;

	if (check_existing_parent(dir, near, sizeof near) == -1) {
		snprintf(cause, cause_len, "%s: %s", dir, strerror(errno));
		return -1;
	}
	if (stat(near, &st) == -1 || !S_ISDIR(st.st_mode)) {
		snprintf(cause, cause_len, "%s: %s is not a directory", dir, near);
		return -1;
	}
	if (access(near, W_OK | X_OK) == -1) {
		snprintf(cause, cause_len, "%s: %s is not writable: %s", dir, near,
		    strerror(errno));
		return -1;
	}
	return 0;
}

/*
 * What a start would refuse beyond the file's syntax: tokenizers that do not
 * load, a state directory or socket directory that cannot be made or written,
 * a socket path too long. Nothing is created or bound. Problems are appended
 * to *errors as "FILE: message" lines; the number of problems is returned.
 */
static int
check_runtime(const struct conf *conf, const char *file, char **errors)
{
	char cause[9000], line[12000], dir[4096], *slash, *grown;
	struct sockaddr_un sun;
	struct tokenizer *t;
	size_t have = *errors != NULL ? strlen(*errors) : 0, n;
	int problems = 0;

	for (size_t i = 0; i < conf->n_upstreams + 2; i++) {
		line[0] = '\0';
		if (i < conf->n_upstreams) {
			/* An earlier upstream with the same tokenizer was already checked. */
			size_t j;
			for (j = 0; j < i; j++)
				if (strcmp(conf->upstreams[j].tokenizer, conf->upstreams[i].tokenizer) == 0)
					break;
			if (j < i)
				continue;
			if ((t = tokenizer_load(conf->upstreams[i].tokenizer, cause, sizeof cause)) != NULL)
				tokenizer_free(t);
			else
				snprintf(line, sizeof line, "%s: upstream %s: tokenizer %s: %s\n", file,
				    conf->upstreams[i].name, conf->upstreams[i].tokenizer, cause);
		} else if (i == conf->n_upstreams) {
			if (check_dir_usable(conf->state_dir, cause, sizeof cause) == -1)
				snprintf(line, sizeof line, "%s: state_dir %s\n", file, cause);
		} else if (getenv("LISTEN_FDS") == NULL) {
			if (strlen(conf->socket_path) >= sizeof sun.sun_path)
				snprintf(line, sizeof line, "%s: socket path too long (at most %zu bytes): %s\n",
				    file, sizeof sun.sun_path - 1, conf->socket_path);
			else {
				snprintf(dir, sizeof dir, "%s", conf->socket_path);
				if ((slash = strrchr(dir, '/')) != NULL)
					*slash = '\0';
				if (slash == NULL || dir[0] == '\0')
					snprintf(dir, sizeof dir, "%s", slash != NULL ? "/" : ".");
				if (check_dir_usable(dir, cause, sizeof cause) == -1)
					snprintf(line, sizeof line, "%s: socket %s: directory %s\n", file,
					    conf->socket_path, cause);
			}
		}
		if (line[0] == '\0')
			continue;
		problems++;
		n = strlen(line);
		if ((grown = realloc(*errors, have + n + 1)) == NULL)
			continue;
		memcpy(grown + have, line, n + 1);
		*errors = grown;
		have += n;
	}
	return problems;
}

int
main(int argc, char **argv)
{
	static const struct option longopts[] = {
		{ "help", no_argument, NULL, 'h' },
		{ "version", no_argument, NULL, 'V' },
		{ NULL, 0, NULL, 0 }
	};
	const char *conf_arg = NULL;
	int foreground = 0, check_only = 0, verbose = 0, ch;
	char *errors = NULL, cause[512];
	struct server srv;
	struct event *sig_hup, *sig_term, *sig_int;

	while ((ch = getopt_long(argc, argv, "c:ftvVh", longopts, NULL)) != -1) {
		switch (ch) {
		case 'c':
			conf_arg = optarg;
			break;
		case 'f':
			foreground = 1;
			break;
		case 't':
			check_only = 1;
			break;
		case 'v':
			verbose++;
			break;
		case 'V':
			printf("openllmd %s\n", PACKAGE_VERSION);
			return 0;
		case 'h':
			usage(stdout);
			return 0;
		default:
			usage(stderr);
			return 64;
		}
	}
	if (optind != argc) {
		usage(stderr);
		return 64;
	}

	memset(&srv, 0, sizeof srv);
	srv.conf_path = (char *)conf_default_path(conf_arg);
	srv.conf = conf_load(srv.conf_path, &errors);
	if (srv.conf == NULL || check_runtime(srv.conf, srv.conf_path != NULL ?
	    srv.conf_path : "(built-in defaults)", &errors) > 0) {
		fputs(errors ? errors : "configuration invalid\n", check_only ? stdout : stderr);
		free(errors);
		conf_free(srv.conf);
		return EX_CONFIG;
	}
	if (check_only) {
		printf("%s: configuration OK\n", srv.conf_path ? srv.conf_path : "(built-in defaults)");
		conf_free(srv.conf);
		return 0;
	}
	log_init("openllmd", 1);
	log_set_level(verbose ? LOG_LEVEL_DEBUG : srv.conf->log_level);

	signal(SIGPIPE, SIG_IGN);
	srandom((unsigned)(now_ms() ^ getpid()));
	if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK)
		fatal("curl_global_init failed");
	server = &srv;
	srv.listen_fd = -1;
	srv.own_uid = geteuid();
	srv.nofile = server_raise_nofile();
	server_limits(&srv, srv.conf);
	srv.started_ms = now_mono_ms();
	TAILQ_INIT(&srv.upstreams);
	TAILQ_INIT(&srv.retired);
	TAILQ_INIT(&srv.dead_upstreams);
	TAILQ_INIT(&srv.sessions);
	TAILQ_INIT(&srv.finishing);
	TAILQ_INIT(&srv.flush_list);
	TAILQ_INIT(&srv.budget_waiters);
	if ((srv.prompt_ratios = budget_ratios_new()) == NULL)
		fatal("out of memory");
	if ((srv.base = event_base_new()) == NULL)
		fatal("event_base_new failed");
	if ((srv.flush_ev = event_new(srv.base, -1, 0, server_flush_cb, &srv)) == NULL)
		fatal("event_new failed");
	if ((srv.reap_ev = event_new(srv.base, -1, 0, server_reap_cb, &srv)) == NULL)
		fatal("event_new failed");
	if ((srv.http = http_new(srv.base)) == NULL)
		fatal("cannot set up libcurl's multi handle");

	if (getenv("LISTEN_FDS") == NULL &&
	    (sockpath_check_private(srv.conf->socket_path, srv.own_uid, 1, cause, sizeof cause) == -1 ||
	    listener_check(srv.conf->socket_path, cause, sizeof cause) == -1))
		fatal("%s", cause);
	if (sockpath_check_private(srv.conf->state_dir, srv.own_uid, 1, cause, sizeof cause) == -1)
		fatal("state_dir %s: %s", srv.conf->state_dir, cause);
	if (mkdir_p(srv.conf->state_dir, 0700) == -1)
		fatal("cannot create state_dir %s: %s", srv.conf->state_dir, strerror(errno));
	struct ledger_options lo;
	ledger_options_default(&lo);
	if (ledger_parse_fsync(srv.conf->fsync, &lo.fsync) == -1)
		fatal("fsync: unknown policy %s", srv.conf->fsync);
	lo.retention_days = srv.conf->retention_days;
	srv.ledger = ledger_open(srv.conf->state_dir, &lo, cause, sizeof cause);
	if (srv.ledger == NULL)
		fatal("usage ledger: %s", cause);
	{
		struct stats_result st;
		memset(&st, 0, sizeof st);
		if (ledger_stats(srv.ledger, NULL, -1, &st) == 0)
			srv.total_cost = st.total.cost;
		ledger_stats_clear(&st);
	}
	if (upstream_setup(&srv, srv.conf, cause, sizeof cause) == -1)
		fatal("%s", cause);
	if (server_budgets_load(&srv, srv.conf, cause, sizeof cause) == -1)
		fatal("budgets: %s", cause);
	if (listener_open(&srv, cause, sizeof cause) == -1)
		fatal("%s", cause);
	if (api_open(&srv, cause, sizeof cause) == -1)
		fatal("%s", cause);

	if (!foreground) {
		daemonize();
		log_init("openllmd", 0);
		if (event_reinit(srv.base) == -1)
			fatal("event_reinit failed");
	}
	sig_hup = evsignal_new(srv.base, SIGHUP, server_signal_cb, &srv);
	sig_term = evsignal_new(srv.base, SIGTERM, server_signal_cb, &srv);
	sig_int = evsignal_new(srv.base, SIGINT, server_signal_cb, &srv);
	evsignal_add(sig_hup, NULL);
	evsignal_add(sig_term, NULL);
	evsignal_add(sig_int, NULL);
	if (srv.conf->fleet_postgres != NULL &&
	    (srv.fleet = fleet_start(&srv, cause, sizeof cause)) == NULL)
		fatal("fleet: %s", cause);
	srv.tick = event_new(srv.base, -1, EV_PERSIST, server_tick_cb, &srv);
	struct timeval one = { 1, 0 };
	evtimer_add(srv.tick, &one);

	struct upstream *up;
	TAILQ_FOREACH(up, &srv.upstreams, entry)
		log_info("upstream %s: %s model %s, rpm %d, tokenizer %s", up->conf.name,
		    up->conf.base_url, up->conf.model, up->conf.rpm, up->conf.tokenizer);
	log_info("openllmd %s ready; state in %s", PACKAGE_VERSION, srv.conf->state_dir);
#ifdef HAVE_SYSTEMD
	sd_notify(0, "READY=1");
#endif
	event_base_dispatch(srv.base);

	session_close_all(&srv);
	listener_close(&srv);
	api_free(&srv);
	server_flush(&srv);
	/* after the last records are written: it ships them and gives its leases back */
	fleet_free(srv.fleet);
	srv.fleet = NULL;
	upstream_teardown(&srv);
	budgets_free(srv.budgets);
	budget_ratios_free(srv.prompt_ratios);
	ledger_close(srv.ledger);
	event_free(sig_hup);
	event_free(sig_term);
	event_free(sig_int);
	event_free(srv.tick);
	event_free(srv.reap_ev);
	event_free(srv.flush_ev);
	srv.flush_ev = NULL;
	if (srv.drain_ev != NULL)
		event_free(srv.drain_ev);
	http_free(srv.http);
	while (srv.tokenizers != NULL) {
		struct tokenizer_entry *e = srv.tokenizers;
		srv.tokenizers = e->next;
		tokenizer_free(e->tokenizer);
		free(e->name);
		free(e);
	}
	/* let deferred frees run */
	event_base_loop(srv.base, EVLOOP_NONBLOCK);
	chat_parse_pool_free();
	event_base_free(srv.base);
	conf_free(srv.conf);
	curl_global_cleanup();
	log_info("openllmd stopped");
	return 0;
}
