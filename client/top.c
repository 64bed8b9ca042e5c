/* top.c: ollmctl top: a live view of the daemon, refreshed in place until q. */
#include "config.h"

#include <sys/ioctl.h>

#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sysexits.h>
#include <termios.h>
#include <time.h>
#include <unistd.h>

#include "client/ollmctl.h"

#define TOP_ENTER "\033[?1049h\033[?25l"        /* alternate screen, cursor hidden */
#define TOP_LEAVE "\033[?25h\033[?1049l"

/* The terminal as it was, restored on every way out (also from signal handlers). */
static struct termios top_saved;
static volatile sig_atomic_t top_raw;
static volatile sig_atomic_t top_winch;

/* Put the terminal back as it was; async-signal-safe. */
static void
top_restore(void)
{
	ssize_t n;

	if (!top_raw)
		return;
	top_raw = 0;
	tcsetattr(STDIN_FILENO, TCSAFLUSH, &top_saved);
	n = write(STDOUT_FILENO, TOP_LEAVE, sizeof TOP_LEAVE - 1);
	(void)n;
}

/* Keys one at a time, no echo, signals still on; the alternate screen. */
static int
top_enter(void)
{
	struct termios t = top_saved;
	ssize_t n;

	t.c_lflag &= ~(tcflag_t)(ICANON | ECHO);
	t.c_cc[VMIN] = 1;
	t.c_cc[VTIME] = 0;
	if (tcsetattr(STDIN_FILENO, TCSAFLUSH, &t) == -1)
		return -1;
	top_raw = 1;
	n = write(STDOUT_FILENO, TOP_ENTER, sizeof TOP_ENTER - 1);
	(void)n;
	return 0;
}

/* SIGINT, SIGTERM, SIGHUP, SIGQUIT: restore the terminal, then die of the signal. */
static void
top_die_handler(int sig)
{
	top_restore();
	signal(sig, SIG_DFL);
	raise(sig);
}

/* ^Z: restore the terminal before stopping, go raw again on SIGCONT. */
static void
top_stop_handler(int sig)
{
	int saved = errno;

	top_restore();
	signal(sig, SIG_DFL);
	raise(sig);
	/* continued */
	signal(sig, top_stop_handler);
	top_enter();
	top_winch = 1;
	errno = saved;
}

static void
top_winch_handler(int sig)
{
	(void)sig;
	top_winch = 1;
}

/* One screen line, cut at the terminal's width (bytes; the text is ASCII but names). */
struct top_screen {
	FILE *f;
	int cols, rows, line;
	int raw;
};

static void __attribute__((format(printf, 2, 3)))
top_line(struct top_screen *sc, const char *fmt, ...)
{
	char buf[1024];
	va_list ap;
	size_t n;

	if (sc->raw && sc->line >= sc->rows - 1)
		return;
	va_start(ap, fmt);
	vsnprintf(buf, sizeof buf, fmt, ap);
	va_end(ap);
	n = strlen(buf);
	if (sc->raw && sc->cols > 0 && n > (size_t)sc->cols)
		buf[sc->cols] = '\0';
	fputs(buf, sc->f);
	fputs(sc->raw ? "\033[K\r\n" : "\n", sc->f);
	sc->line++;
}

/* Draw one snapshot. */
static void
top_draw(struct top_screen *sc, const char *version, const struct ollm_top *t)
{
	char up[32], when[32], user[64], uid[16], tag[64], lim[40], used[40], left[40];
	time_t now = time(NULL);
	struct tm tm;
	size_t i;

	render_duration(up, sizeof up, t->uptime_s);
	if (localtime_r(&now, &tm) == NULL || strftime(when, sizeof when, "%H:%M:%S", &tm) == 0)
		snprintf(when, sizeof when, "-");
	top_line(sc, "openllmd %s, up %s, %" PRId64 " in flight    %s%s", version, up,
	    t->in_flight, when, sc->raw ? "    (q quits)" : "");
	top_line(sc, "%s", "");
	top_line(sc, "%-20s %-8s %9s %7s", "UPSTREAM", "HEALTH", "IN FLIGHT", "QUEUED");
	for (i = 0; i < t->n_upstreams; i++)
		top_line(sc, "%-20s %-8s %9" PRId64 " %7" PRId64, t->upstreams[i].name,
		    t->upstreams[i].healthy ? "up" : "down", t->upstreams[i].in_flight,
		    t->upstreams[i].queued);
	if (t->n_budgets > 0) {
		top_line(sc, "%s", "");
		top_line(sc, "%-24s %-6s %-6s %14s %14s %14s", "BUDGET", "UNIT", "PERIOD", "LIMIT",
		    "USED", "LEFT");
		for (i = 0; i < t->n_budgets; i++) {
			const struct ollm_budget *b = &t->budgets[i];
			if (strcmp(b->unit, "money") == 0) {
				render_money(lim, sizeof lim, b->limit);
				render_money(used, sizeof used, b->used);
				render_money(left, sizeof left, b->left);
			} else {
				render_thousands(lim, sizeof lim, b->limit > 0 ? (uint64_t)b->limit : 0);
				render_thousands(used, sizeof used, b->used > 0 ? (uint64_t)b->used : 0);
				render_thousands(left, sizeof left, b->left > 0 ? (uint64_t)b->left : 0);
			}
			top_line(sc, "%-24s %-6s %-6s %14s %14s %14s", b->scope, b->unit, b->period,
			    lim, used, left);
		}
	}
	top_line(sc, "%s", "");
	top_line(sc, "%-24s %9s %9s", "MODEL", "IN FLIGHT", "TOKENS/S");
	for (i = 0; i < t->n_models; i++)
		top_line(sc, "%-24s %9" PRId64 " %9.1f", t->models[i].model,
		    t->models[i].in_flight, t->models[i].tokens_per_s);
	top_line(sc, "%s", "");
	top_line(sc, "%-12s %-20s %-12s %-8s %7s %7s %8s  %s", "USER", "MODEL", "UPSTREAM",
	    "STATE", "AGE", "TOKENS", "TOKENS/S", "TAG");
	for (i = 0; i < t->n_chats; i++) {
		const struct ollm_top_chat *c = &t->chats[i];
		char age[32];

		snprintf(uid, sizeof uid, "%" PRIu32, c->uid);
		if (c->user != NULL)
			snprintf(user, sizeof user, "%s", c->user);
		else
			render_user(user, sizeof user, uid);
		snprintf(age, sizeof age, "%.1fs", (double)c->age_ms / 1000);
		snprintf(tag, sizeof tag, "%s", c->tag != NULL ? c->tag : "-");
		top_line(sc, "%-12s %-20s %-12s %-8s %7s %7" PRId64 " %8.1f  %s", user, c->model,
		    c->upstream, c->state, age, c->tokens, c->tokens_per_s, tag);
	}
	if (t->in_flight > (int64_t)t->n_chats)
		top_line(sc, "(%" PRId64 " more not listed)", t->in_flight - (int64_t)t->n_chats);
}

/* Fetch and draw one snapshot; a libollm result. */
static int
top_once(struct ollm *c, struct top_screen *sc, const char *version)
{
	struct ollm_top t;
	struct winsize ws;
	int r;

	if ((r = ollm_top(c, &t)) != OLLM_OK)
		return r;
	sc->line = 0;
	if (sc->raw) {
		sc->cols = 80;
		sc->rows = 24;
		if (ioctl(STDOUT_FILENO, TIOCGWINSZ, &ws) == 0 && ws.ws_col > 0) {
			sc->cols = ws.ws_col;
			sc->rows = ws.ws_row;
		}
		fputs("\033[H", sc->f);
	}
	top_draw(sc, version, &t);
	if (sc->raw)
		fputs("\033[J", sc->f);
	fflush(sc->f);
	ollm_top_clear(&t);
	return OLLM_OK;
}

/* Wait for the next refresh: 1 when q was pressed, 0 otherwise. */
static int
top_wait(int delay_ms)
{
	struct pollfd pfd = { STDIN_FILENO, POLLIN, 0 };
	struct timespec t0, t1;
	char key[16];
	ssize_t n;
	int left = delay_ms;

	clock_gettime(CLOCK_MONOTONIC, &t0);
	while (left > 0 && !top_winch) {
		if (poll(&pfd, 1, left) == 1) {
			if ((n = read(STDIN_FILENO, key, sizeof key)) == 0)
				return 1;       /* end of input */
			for (ssize_t i = 0; i < n; i++)
				if (key[i] == 'q' || key[i] == 'Q')
					return 1;
			if (n > 0 && memchr(key, ' ', (size_t)n) != NULL)
				return 0;       /* space: refresh now */
		}
		clock_gettime(CLOCK_MONOTONIC, &t1);
		left = delay_ms - (int)((t1.tv_sec - t0.tv_sec) * 1000 +
		    (t1.tv_nsec - t0.tv_nsec) / 1000000);
	}
	top_winch = 0;
	return 0;
}

/* top: refresh until q; one snapshot (or -n of them) when not on a terminal or with -b. */
int
cmd_top(int argc, char **argv)
{
	static const struct option longopts[] = {
		{ "delay", required_argument, NULL, 'd' },
		{ "iterations", required_argument, NULL, 'n' },
		{ "batch", no_argument, NULL, 'b' },
		{ NULL, 0, NULL, 0 }
	};
	static const char usage[] = "usage: ollmctl top [-b] [-d SECONDS] [-n N]\n";
	struct top_screen sc = { stdout, 80, 24, 0, 0 };
	struct sigaction sa;
	struct ollm_ping p;
	struct ollm *c;
	double delay = 1;
	int64_t iterations = -1, i;
	int ch, r, batch = 0;

	while ((ch = getopt_long(argc, argv, "bd:n:", longopts, NULL)) != -1) {
		switch (ch) {
		case 'b':
			batch = 1;
			break;
		case 'd':
			if (parse_double(optarg, 0.1, 3600, &delay) != 0) {
				fprintf(stderr, "ollmctl top: -d takes seconds from 0.1 to 3600, "
				    "not \"%s\"\n%s", optarg, usage);
				return EX_USAGE;
			}
			break;
		case 'n':
			if (parse_int(optarg, 1, INT32_MAX, &iterations) != 0) {
				fprintf(stderr, "ollmctl top: -n takes a number of 1 or more, "
				    "not \"%s\"\n%s", optarg, usage);
				return EX_USAGE;
			}
			break;
		default:
			fputs(usage, stderr);
			return EX_USAGE;
		}
	}
	if (optind != argc) {
		fprintf(stderr, "ollmctl top: unexpected argument \"%s\"\n%s", argv[optind], usage);
		return EX_USAGE;
	}
	if (!isatty(STDIN_FILENO) || !isatty(STDOUT_FILENO))
		batch = 1;
	if (batch && iterations < 0)
		iterations = 1;
	if ((r = ollmctl_connect(&c)) != EX_OK)
		return r;
	ollm_set_timeout(c, 10000);
	if ((r = ollm_ping(c, &p)) != OLLM_OK)
		goto fail;
	if (!batch) {
		if (tcgetattr(STDIN_FILENO, &top_saved) == -1) {
			fprintf(stderr, "ollmctl top: the terminal: %s\n", strerror(errno));
			ollm_free(c);
			return EX_OSERR;
		}
		memset(&sa, 0, sizeof sa);
		sigemptyset(&sa.sa_mask);
		sa.sa_handler = top_die_handler;
		sigaction(SIGINT, &sa, NULL);
		sigaction(SIGTERM, &sa, NULL);
		sigaction(SIGHUP, &sa, NULL);
		sigaction(SIGQUIT, &sa, NULL);
		sa.sa_handler = top_stop_handler;
		sigaction(SIGTSTP, &sa, NULL);
		sa.sa_handler = top_winch_handler;
		sigaction(SIGWINCH, &sa, NULL);
		if (top_enter() == -1) {
			fprintf(stderr, "ollmctl top: the terminal: %s\n", strerror(errno));
			ollm_free(c);
			return EX_OSERR;
		}
		sc.raw = 1;
	}
	for (i = 0; iterations < 0 || i < iterations; i++) {
		if (i > 0 && batch)
			putchar('\n');
		if ((r = top_once(c, &sc, p.version)) != OLLM_OK)
			break;
		if (iterations >= 0 && i + 1 >= iterations)
			break;
		if (batch) {
			struct timespec ts = { (time_t)delay, (long)((delay - (double)(time_t)delay) * 1e9) };
			nanosleep(&ts, NULL);
		} else if (top_wait((int)(delay * 1000)))
			break;
	}
	top_restore();
	if (r != OLLM_OK)
		goto fail;
	ollm_free(c);
	return EX_OK;

fail:
	ollmctl_report(c, r);
	r = ollmctl_status(c, r);
	ollm_free(c);
	return r;
}
