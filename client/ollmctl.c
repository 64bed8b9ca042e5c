/* ollmctl.c: the command-line client of openllmd: options and commands. */
#include "config.h"

#include <sys/types.h>

#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <locale.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sysexits.h>
#include <time.h>
#include <unistd.h>
#include <sys/random.h>

#include <openssl/evp.h>

#include <jansson.h>

#include "client/ollmctl.h"

#define OLLMCTL_MAX_INPUT (16u * 1024 * 1024)

const char *ollmctl_socket;             /* -S, or NULL */

struct ollmctl_cmd {
	const char *name;
	int (*fn)(int, char **);
	const char *usage;
	const char *help;
};

static int cmd_stats(int, char **);
static int cmd_models(int, char **);
static int cmd_ping(int, char **);
static int cmd_tokens(int, char **);
static int cmd_key(int, char **);
static int cmd_reset(int, char **);
static int ollmctl_json_flag(const char *, int, char **);
static int ollmctl_print_json(FILE *, json_t *);

static const struct ollmctl_cmd ollmctl_cmds[] = {
	{ "chat", cmd_chat,
	  "chat [-m MODEL] [-s SYSTEM] [--max-tokens N] [--temperature T]\n"
	  "               [--no-stream] [--tag TAG] [-c | --cid ID] [--no-save] [PROMPT...]",
	  "Talk to the model. With PROMPT: one message, the reply goes to stdout.\n"
	  "Else on a terminal: a conversation (/help inside lists the slash commands;\n"
	  "Ctrl-C stops a reply, Ctrl-D leaves); else all of stdin is one message.\n"
	  "Conversations are kept in $XDG_STATE_HOME/ollmctl/conversations\n"
	  "(~/.local/state/ollmctl/conversations); the daemon keeps no prompt text.\n"
	  "While a reply waits for a rate limit or a retry, a line on stderr says why.\n"
	  "  -m, --model MODEL    the model to ask (default: the daemon's first)\n"
	  "  -s, --system TEXT    a system message before the conversation\n"
	  "      --max-tokens N   the longest reply, in tokens\n"
	  "      --temperature T  sampling temperature (0 or more)\n"
	  "      --no-stream      wait for the whole reply instead of streaming it\n"
	  "      --tag TAG        an accounting label (stats --by tag)\n"
	  "  -c, --continue       continue the last conversation\n"
	  "      --cid ID         continue conversation ID, or start it under that name\n"
	  "      --no-save        do not keep this conversation\n"
	  "Defaults for -m, -s, --max-tokens and --tag may be set as model, system,\n"
	  "max_tokens and tag in $XDG_CONFIG_HOME/ollmctl/config (key = value).\n" },
	{ "conversations", cmd_conversations, "conversations",
	  "The saved conversations, newest first: id, last change, turns, first words.\n"
	  "Continue one with `ollmctl chat --cid ID`.\n" },
	{ "stats", cmd_stats, "stats [--json] [--fleet] [--by model|user|tag|day] [--since TIME]",
	  "Usage the daemon has counted: requests, tokens, cost, budgets.\n"
	  "      --json           the stats op's JSON instead of tables\n"
	  "      --fleet          every node's usage, from the shared database\n"
	  "                       (fleet_postgres), with a breakdown by node\n"
	  "      --by WHAT        only one breakdown: model, user, tag or day\n"
	  "                       (day also draws tokens per day as bars)\n"
	  "      --since TIME     only requests that finished since TIME, exactly:\n"
	  "                       Ns, Nm, Nh, Nd, Nw ago (30m, 1h), HH:MM[:SS] today,\n"
	  "                       YYYY-MM-DD, YYYY-MM-DDTHH:MM[:SS][Z|+HH:MM],\n"
	  "                       @EPOCH, today, yesterday (UTC unless an offset is\n"
	  "                       given); a time in the future is refused\n" },
	{ "logs", cmd_logs,
	  "logs [--fleet] [--since DATE] [--until DATE] [--user USER] [--tag TAG]\n"
	  "               [-m MODEL] [--status done|error|cancelled] [-n N] [--json]",
	  "Finished requests from the daemon's journal, newest first: time, user, tag,\n"
	  "model, upstream, status, tokens (~: counted locally), cost, latency and time\n"
	  "to the first token. You see your own requests; root and the daemon's user\n"
	  "see everyone's.\n"
	  "      --fleet          every node's requests, from the shared database\n"
	  "                       (fleet_postgres), with the node that served each\n"
	  "      --since DATE     only requests that finished at or after DATE\n"
	  "      --until DATE     only requests that finished before DATE (dates as\n"
	  "                       for stats: YYYY-MM-DD, @EPOCH, today, 12h, ...)\n"
	  "      --user USER      only this user's requests (a name or a uid; a name\n"
	  "                       that is no system user is an API key's named user)\n"
	  "      --tag TAG        only requests with this tag (\"\" for untagged)\n"
	  "  -m, --model MODEL    only requests for this model\n"
	  "      --status STATUS  only done, error or cancelled requests\n"
	  "  -n, --limit N        at most N rows (default 50, at most 1000)\n"
	  "      --json           the logs op's JSON instead of a table\n" },
	{ "top", cmd_top, "top [-b] [-d SECONDS] [-n N]",
	  "A live view of the daemon: chats in flight (user, model, state, age, tokens\n"
	  "so far), tokens per second per model, queues per upstream, budgets left.\n"
	  "Refreshes in place until q; space refreshes at once.\n"
	  "  -b, --batch          print snapshots one after another (the default when\n"
	  "                       not on a terminal, with -n 1)\n"
	  "  -d, --delay SECONDS  time between refreshes (default 1)\n"
	  "  -n, --iterations N   stop after N snapshots\n" },
	{ "models", cmd_models, "models [--json]",
	  "The model servers (upstreams) the daemon uses, and their models.\n"
	  "      --json           the models op's result as JSON\n" },
	{ "ping", cmd_ping, "ping [--json]",
	  "Check that the daemon answers: version, uptime, requests in flight.\n"
	  "      --json           the ping op's result (and the round trip) as JSON\n" },
	{ "tokens", cmd_tokens, "tokens [-e ENCODING | -m MODEL] [--ids] [--json] [FILE]",
	  "Count the tokens of FILE (or stdin) with the daemon's tokenizer.\n"
	  "  -e, --encoding NAME  cl100k_base or o200k_base\n"
	  "  -m, --model MODEL    the tokenizer of the upstream serving MODEL\n"
	  "      --ids            print the token ids instead of the count\n"
	  "      --json           count, encoding (and ids) as JSON\n" },
	{ "reset", cmd_reset, "reset [-y|--yes]",
	  "Start the usage counters from zero (the daemon archives the old ledger;\n"
	  "root or the daemon's user only). Asks first on a terminal; without one,\n"
	  "--yes is required.\n"
	  "  -y, --yes            do not ask\n" },
	{ "key", cmd_key, "key new --user NAME [--tag TAG]",
	  "Make an API key for the HTTP front: prints the key (shown only this once)\n"
	  "and the api_keys line for openllmd.conf, which holds only its SHA-256.\n"
	  "      --user NAME      who the key bills: a system user name or a uid, or\n"
	  "                       any other name (billed by that name)\n"
	  "      --tag TAG        the accounting label of its requests\n" },
};
#define OLLMCTL_NCMDS (sizeof ollmctl_cmds / sizeof ollmctl_cmds[0])

/* The usage line of a command, to f. */
static void
ollmctl_usage_cmd(FILE *f, const char *name)
{
	size_t i;

	for (i = 0; i < OLLMCTL_NCMDS; i++) {
		if (strcmp(ollmctl_cmds[i].name, name) == 0)
			fprintf(f, "usage: ollmctl %s\n", ollmctl_cmds[i].usage);
	}
}

/* The whole usage, to f. */
static void
ollmctl_usage(FILE *f)
{
	size_t i;

	fprintf(f, "usage: ollmctl [-S SOCKET] [-V] COMMAND [ARGS] [-S SOCKET]\n");
	for (i = 0; i < OLLMCTL_NCMDS; i++)
		fprintf(f, "       ollmctl %s\n", ollmctl_cmds[i].usage);
	fprintf(f, "\n"
	    "Commands:\n"
	    "  chat           talk to the model: one prompt, a REPL, or stdin as one message\n"
	    "  conversations  the saved conversations (chat -c, chat --cid ID)\n"
	    "  stats          usage counted by the daemon (tokens, cost, budgets)\n"
	    "  logs           finished requests, newest first\n"
	    "  top            a live view of the daemon\n"
	    "  models         the model servers and the models they serve\n"
	    "  ping           check that the daemon answers\n"
	    "  tokens         count the tokens of a text\n"
	    "  reset          start the usage counters from zero\n"
	    "  key            make an API key for the HTTP front\n"
	    "\n"
	    "The socket is -S (before or after the command), else $OPENLLMD_SOCKET,\n"
	    "else the default (see ollmctl(1)). Colour only on a terminal, never\n"
	    "with NO_COLOR set. Defaults for chat come from\n"
	    "$XDG_CONFIG_HOME/ollmctl/config (see ollmctl(1)).\n"
	    "ollmctl COMMAND --help shows a command's options.\n");
}

/* Print a usage error for a command and return EX_USAGE. */
static int
ollmctl_bad_usage(const char *cmd, const char *fmt, const char *arg)
{
	fprintf(stderr, "ollmctl %s: ", cmd);
	fprintf(stderr, fmt, arg);
	fputc('\n', stderr);
	ollmctl_usage_cmd(stderr, cmd);
	return EX_USAGE;
}

/*
 * Exit status for a libollm result (sysexits.h); c, if not NULL, tells a
 * model server that refused the request (HTTP 4xx: bad input) from one that
 * failed.
 */
int
ollmctl_status(struct ollm *c, int code)
{
	const struct ollm_error *e;

	switch (code) {
	case OLLM_OK:
		return EX_OK;
	case OLLM_ERR_UPSTREAM_ERROR:
		e = c != NULL ? ollm_last_error(c) : NULL;
		if (e != NULL && e->status >= 400 && e->status < 500)
			return EX_DATAERR;
		return EX_UNAVAILABLE;
	case OLLM_ERR_BAD_REQUEST:
	case OLLM_ERR_UNKNOWN_MODEL:
	case OLLM_ERR_TOO_LARGE:
	case OLLM_ERR_INVALID:
		return EX_DATAERR;
	case OLLM_ERR_UNAVAILABLE:
	case OLLM_ERR_UPSTREAM_UNAVAILABLE:
	case OLLM_ERR_IO:
	case OLLM_ERR_UNTRUSTED:
		return EX_UNAVAILABLE;
	case OLLM_ERR_RATE_LIMITED:
	case OLLM_ERR_TIMEOUT:
		return EX_TEMPFAIL;
	case OLLM_ERR_BUDGET_EXCEEDED:
	case OLLM_ERR_FORBIDDEN:
		return EX_NOPERM;
	case OLLM_ERR_CANCELLED:
		return 128 + 2;         /* as if killed by SIGINT */
	case OLLM_ERR_PROTOCOL:
	case OLLM_ERR_UNSUPPORTED:
		return EX_PROTOCOL;
	case OLLM_ERR_NOMEM:
		return EX_OSERR;
	default:
		return EX_SOFTWARE;
	}
}

/* Print a failure as one line on stderr. */
void
ollmctl_report(struct ollm *c, int code)
{
	const struct ollm_error *e = ollm_last_error(c);
	char line[1024];

	if (code == OLLM_ERR_UNAVAILABLE && e->daemon_code[0] == '\0') {
		fprintf(stderr, "ollmctl: %s; is openllmd running? Start it with "
		    "`openllmd -f` or `systemctl start openllmd`\n", e->message);
		return;
	}
	render_error(line, sizeof line, e);
	fprintf(stderr, "ollmctl: %s\n", line);
}

/* Connect to the daemon; on failure report it and return the exit status. */
int
ollmctl_connect(struct ollm **out)
{
	struct ollm *c;
	int r;

	*out = NULL;
	if ((c = ollm_new()) == NULL) {
		fprintf(stderr, "ollmctl: out of memory\n");
		return EX_OSERR;
	}
	if ((r = ollm_connect(c, ollmctl_socket)) != OLLM_OK) {
		ollmctl_report(c, r);
		r = ollmctl_status(c, r);
		ollm_free(c);
		return r;
	}
	*out = c;
	return EX_OK;
}

/* True when argv holds --help or -h before any "--". */
static int
ollmctl_wants_help(int argc, char **argv)
{
	int i;

	for (i = 1; i < argc; i++) {
		if (strcmp(argv[i], "--") == 0)
			return 0;
		if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0)
			return 1;
	}
	return 0;
}

/* stats: usage counters as tables or JSON. */
static int
cmd_stats(int argc, char **argv)
{
	static const struct option longopts[] = {
		{ "json", no_argument, NULL, 'j' },
		{ "fleet", no_argument, NULL, 'f' },
		{ "by", required_argument, NULL, 'b' },
		{ "since", required_argument, NULL, 's' },
		{ NULL, 0, NULL, 0 }
	};
	struct ollm_stats st;
	struct ollm *c;
	const char *by = NULL;
	int64_t since = -1;
	time_t now;
	int ch, json = 0, fleet = 0, r;

	while ((ch = getopt_long(argc, argv, "", longopts, NULL)) != -1) {
		switch (ch) {
		case 'j':
			json = 1;
			break;
		case 'f':
			fleet = 1;
			break;
		case 'b':
			if (strcmp(optarg, "model") != 0 && strcmp(optarg, "user") != 0 &&
			    strcmp(optarg, "tag") != 0 && strcmp(optarg, "day") != 0)
				return ollmctl_bad_usage("stats",
				    "--by takes model, user, tag or day, not \"%s\"", optarg);
			by = optarg;
			break;
		case 's':
			now = time(NULL);
			if (parse_since(optarg, now, &since) != 0)
				return ollmctl_bad_usage("stats", "bad --since time \"%s\" "
				    "(30m, 1h, 7d, HH:MM, YYYY-MM-DD, 2024-05-01T12:00Z, "
				    "@EPOCH, today)", optarg);
			if (since > (int64_t)now) {
				char when[64], at[64];

				render_time(when, sizeof when, since);
				render_time(at, sizeof at, (int64_t)now);
				fprintf(stderr, "ollmctl stats: --since %s is %s, in the future "
				    "(it is now %s)\n", optarg, when, at);
				return EX_USAGE;
			}
			break;
		default:
			ollmctl_usage_cmd(stderr, "stats");
			return EX_USAGE;
		}
	}
	if (optind != argc)
		return ollmctl_bad_usage("stats", "unexpected argument \"%s\"", argv[optind]);

	if ((r = ollmctl_connect(&c)) != EX_OK)
		return r;
	r = fleet ? ollm_stats_fleet(c, by, since, &st) : ollm_stats(c, by, since, &st);
	if (r != OLLM_OK) {
		ollmctl_report(c, r);
		r = ollmctl_status(c, r);
		ollm_free(c);
		return r;
	}
	ollm_free(c);
	if (since >= 0 && st.since < since && !json) {
		char when[64];

		render_time(when, sizeof when, st.since);
		fprintf(stderr, "ollmctl stats: counted from %s, the start of that day: the "
		    "daemon's journal no longer holds all of it\n", when);
	}
	if (json)
		r = render_stats_json(stdout, &st);
	else
		render_stats(stdout, &st, by);
	ollm_stats_clear(&st);
	if (r != 0) {
		fprintf(stderr, "ollmctl: out of memory\n");
		return EX_OSERR;
	}
	return EX_OK;
}

/* key new: a fresh random key, and the configuration line with its SHA-256. */
static int
cmd_key(int argc, char **argv)
{
	static const struct option longopts[] = {
		{ "user", required_argument, NULL, 'u' },
		{ "tag", required_argument, NULL, 't' },
		{ NULL, 0, NULL, 0 }
	};
	static const char b64[] =
	    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
	const char *user = NULL, *tag = NULL;
	unsigned char raw[30], md[EVP_MAX_MD_SIZE];
	unsigned int md_len = 0;
	char key[8 + 40 + 1];
	int ch;

	if (argc < 2 || strcmp(argv[1], "new") != 0)
		return ollmctl_bad_usage("key", "unknown subcommand \"%s\" (the only one is new)",
		    argc < 2 ? "" : argv[1]);
	argv++;
	argc--;
	while ((ch = getopt_long(argc, argv, "", longopts, NULL)) != -1) {
		switch (ch) {
		case 'u':
			user = optarg;
			break;
		case 't':
			tag = optarg;
			break;
		default:
			ollmctl_usage_cmd(stderr, "key");
			return EX_USAGE;
		}
	}
	if (optind != argc)
		return ollmctl_bad_usage("key", "unexpected argument \"%s\"", argv[optind]);
	if (user == NULL || *user == '\0')
		return ollmctl_bad_usage("key", "%s is required", "--user NAME");
	if (strpbrk(user, "\"\\\n") != NULL || (tag != NULL && strpbrk(tag, "\"\\\n") != NULL))
		return ollmctl_bad_usage("key", "%s cannot hold quotes, backslashes or newlines",
		    "--user or --tag");
	if (getrandom(raw, sizeof raw, 0) != (ssize_t)sizeof raw) {
		fprintf(stderr, "ollmctl: getrandom: %s\n", strerror(errno));
		return EX_OSERR;
	}
	/* 240 random bits as 40 base64url characters */
	memcpy(key, "sk-ollm-", 8);
	for (size_t i = 0; i < sizeof raw; i += 3) {
		uint32_t v = (uint32_t)raw[i] << 16 | (uint32_t)raw[i + 1] << 8 | raw[i + 2];
		for (int k = 0; k < 4; k++)
			key[8 + i / 3 * 4 + (size_t)k] = b64[(v >> (18 - 6 * k)) & 63];
	}
	key[sizeof key - 1] = '\0';
	if (EVP_Digest(key, strlen(key), md, &md_len, EVP_sha256(), NULL) != 1 || md_len != 32) {
		fprintf(stderr, "ollmctl: SHA-256 failed\n");
		return EX_SOFTWARE;
	}
	printf("%s\n", key);
	printf("api_keys = ( { sha256 = \"");
	for (unsigned i = 0; i < md_len; i++)
		printf("%02x", md[i]);
	printf("\"; user = \"%s\";", user);
	if (tag != NULL)
		printf(" tag = \"%s\";", tag);
	printf(" } );\n");
	fflush(stdout);
	return ferror(stdout) ? EX_IOERR : EX_OK;
}

/* models: the upstreams and their models. */
static int
cmd_models(int argc, char **argv)
{
	struct ollm_models m;
	struct ollm *c;
	int json, r;

	if ((json = ollmctl_json_flag("models", argc, argv)) < 0)
		return EX_USAGE;
	if ((r = ollmctl_connect(&c)) != EX_OK)
		return r;
	if ((r = ollm_models(c, &m)) != OLLM_OK) {
		ollmctl_report(c, r);
		r = ollmctl_status(c, r);
		ollm_free(c);
		return r;
	}
	ollm_free(c);
	r = EX_OK;
	if (!json)
		render_models(stdout, &m);
	else if (render_models_json(stdout, &m) != 0)
		r = EX_OSERR;
	ollm_models_clear(&m);
	return r;
}

/* ping: version, uptime and load of the daemon. */
static int
cmd_ping(int argc, char **argv)
{
	struct ollm_ping p;
	struct timespec t0, t1;
	struct ollm *c;
	char up[32];
	double ms;
	int json, r;

	if ((json = ollmctl_json_flag("ping", argc, argv)) < 0)
		return EX_USAGE;
	if ((r = ollmctl_connect(&c)) != EX_OK)
		return r;
	ollm_set_timeout(c, 10000);
	clock_gettime(CLOCK_MONOTONIC, &t0);
	r = ollm_ping(c, &p);
	clock_gettime(CLOCK_MONOTONIC, &t1);
	if (r != OLLM_OK) {
		ollmctl_report(c, r);
		r = ollmctl_status(c, r);
		ollm_free(c);
		return r;
	}
	ms = (double)(t1.tv_sec - t0.tv_sec) * 1e3 + (double)(t1.tv_nsec - t0.tv_nsec) / 1e6;
	if (json) {
		r = ollmctl_print_json(stdout, json_pack("{s:s, s:s, s:I, s:I, s:f}",
		    "version", p.version, "socket", ollm_path(c),
		    "uptime_s", (json_int_t)p.uptime_s, "in_flight", (json_int_t)p.in_flight,
		    "round_trip_ms", ms));
		ollm_free(c);
		return r;
	}
	render_duration(up, sizeof up, p.uptime_s);
	printf("openllmd %s on %s: up %s, %" PRId64 " in flight, %.2f ms round trip\n",
	    p.version, ollm_path(c), up, p.in_flight, ms);
	ollm_free(c);
	return EX_OK;
}

/* Read all of a file (or stdin for NULL or "-") as a string; an exit status. */
int
ollmctl_read(const char *path, char **out, size_t *outlen)
{
	FILE *f = stdin;
	char *buf = NULL, *p;
	size_t len = 0, cap = 0, n;
	int e;

	*out = NULL;
	if (path != NULL && strcmp(path, "-") != 0 && (f = fopen(path, "r")) == NULL) {
		fprintf(stderr, "ollmctl: %s: %s\n", path, strerror(errno));
		return EX_NOINPUT;
	}
	for (;;) {
		if (len + 1 >= cap) {
			cap = cap == 0 ? 65536 : cap * 2;
			if (cap > OLLMCTL_MAX_INPUT + 1) {
				fprintf(stderr, "ollmctl: %s: more than %u bytes\n",
				    path != NULL ? path : "stdin", OLLMCTL_MAX_INPUT);
				free(buf);
				if (f != stdin)
					fclose(f);
				return EX_DATAERR;
			}
			if ((p = realloc(buf, cap)) == NULL) {
				free(buf);
				if (f != stdin)
					fclose(f);
				fprintf(stderr, "ollmctl: out of memory\n");
				return EX_OSERR;
			}
			buf = p;
		}
		n = fread(buf + len, 1, cap - len - 1, f);
		len += n;
		if (n == 0)
			break;
	}
	e = ferror(f) ? errno : 0;
	if (f != stdin)
		fclose(f);
	if (e != 0) {
		fprintf(stderr, "ollmctl: %s: %s\n", path != NULL ? path : "stdin", strerror(e));
		free(buf);
		return EX_IOERR;
	}
	buf[len] = '\0';
	if (memchr(buf, '\0', len) != NULL) {
		fprintf(stderr, "ollmctl: %s: holds NUL bytes, not text\n",
		    path != NULL ? path : "stdin");
		free(buf);
		return EX_DATAERR;
	}
	*out = buf;
	if (outlen != NULL)
		*outlen = len;
	return EX_OK;
}

/* tokens: count the tokens of FILE or stdin. */
static int
cmd_tokens(int argc, char **argv)
{
	static const struct option longopts[] = {
		{ "encoding", required_argument, NULL, 'e' },
		{ "model", required_argument, NULL, 'm' },
		{ "ids", no_argument, NULL, 'i' },
		{ "json", no_argument, NULL, 'j' },
		{ NULL, 0, NULL, 0 }
	};
	json_t *ids;
	int json = 0;
	struct ollm_tokens_req tr;
	struct ollm_tokens t;
	struct ollm *c;
	char *text;
	size_t i;
	int ch, r;

	memset(&tr, 0, sizeof tr);
	while ((ch = getopt_long(argc, argv, "e:m:", longopts, NULL)) != -1) {
		switch (ch) {
		case 'e':
			tr.encoding = optarg;
			break;
		case 'm':
			tr.model = optarg;
			break;
		case 'i':
			tr.ids = 1;
			break;
		case 'j':
			json = 1;
			break;
		default:
			ollmctl_usage_cmd(stderr, "tokens");
			return EX_USAGE;
		}
	}
	if (tr.encoding != NULL && tr.model != NULL)
		return ollmctl_bad_usage("tokens", "%s", "-e and -m exclude each other");
	if (argc - optind > 1)
		return ollmctl_bad_usage("tokens", "unexpected argument \"%s\"", argv[optind + 1]);
	if ((r = ollmctl_read(optind < argc ? argv[optind] : NULL, &text, NULL)) != EX_OK)
		return r;
	tr.text = text;
	if ((r = ollmctl_connect(&c)) != EX_OK) {
		free(text);
		return r;
	}
	r = ollm_tokens(c, &tr, &t);
	free(text);
	if (r != OLLM_OK) {
		ollmctl_report(c, r);
		r = ollmctl_status(c, r);
		ollm_free(c);
		return r;
	}
	ollm_free(c);
	if (json) {
		ids = NULL;
		if (tr.ids && (ids = json_array()) != NULL)
			for (i = 0; i < t.n_ids; i++)
				json_array_append_new(ids, json_integer((json_int_t)t.ids[i]));
		r = ollmctl_print_json(stdout, tr.ids ?
		    json_pack("{s:I, s:s, s:o}", "count", (json_int_t)t.count,
			"encoding", t.encoding != NULL ? t.encoding : "", "ids", ids) :
		    json_pack("{s:I, s:s}", "count", (json_int_t)t.count,
			"encoding", t.encoding != NULL ? t.encoding : ""));
		ollm_tokens_clear(&t);
		return r;
	}
	if (tr.ids) {
		for (i = 0; i < t.n_ids; i++)
			printf("%s%" PRIu32, i > 0 ? " " : "", t.ids[i]);
		putchar('\n');
	} else
		printf("%" PRId64 "\n", t.count);
	ollm_tokens_clear(&t);
	return EX_OK;
}

/* A command whose only option is --json: 1 with it, 0 without, -1 after a usage error. */
static int
ollmctl_json_flag(const char *cmd, int argc, char **argv)
{
	static const struct option longopts[] = {
		{ "json", no_argument, NULL, 'j' },
		{ NULL, 0, NULL, 0 }
	};
	int ch, json = 0;

	while ((ch = getopt_long(argc, argv, "", longopts, NULL)) != -1) {
		if (ch != 'j') {
			ollmctl_usage_cmd(stderr, cmd);
			return -1;
		}
		json = 1;
	}
	if (optind != argc) {
		ollmctl_bad_usage(cmd, "unexpected argument \"%s\"", argv[optind]);
		return -1;
	}
	return json;
}

/* Print a JSON value (taking the reference) and a newline; an exit status. */
static int
ollmctl_print_json(FILE *f, json_t *v)
{
	int r;

	if (v == NULL) {
		fprintf(stderr, "ollmctl: out of memory\n");
		return EX_OSERR;
	}
	r = json_dumpf(v, f, JSON_INDENT(2) | JSON_REAL_PRECISION(15));
	json_decref(v);
	if (r != 0) {
		fprintf(stderr, "ollmctl: stdout: cannot write JSON\n");
		return EX_IOERR;
	}
	fputc('\n', f);
	return EX_OK;
}

/* reset: the usage counters from zero, after a confirmation on a terminal. */
static int
cmd_reset(int argc, char **argv)
{
	static const struct option longopts[] = {
		{ "yes", no_argument, NULL, 'y' },
		{ NULL, 0, NULL, 0 }
	};
	struct ollm *c;
	char answer[16];
	int ch, yes = 0, r;

	while ((ch = getopt_long(argc, argv, "y", longopts, NULL)) != -1) {
		if (ch != 'y') {
			ollmctl_usage_cmd(stderr, "reset");
			return EX_USAGE;
		}
		yes = 1;
	}
	if (optind != argc)
		return ollmctl_bad_usage("reset", "unexpected argument \"%s\"", argv[optind]);
	if (!yes && !isatty(STDIN_FILENO)) {
		fprintf(stderr, "ollmctl reset: refusing without a terminal to ask on; "
		    "add --yes to reset the usage counters\n");
		return EX_USAGE;
	}
	if ((r = ollmctl_connect(&c)) != EX_OK)
		return r;
	if (!yes) {
		fprintf(stderr, "Reset the usage counters of openllmd on %s? They start "
		    "from zero; the old ledger is archived, not deleted. [y/N] ", ollm_path(c));
		fflush(stderr);
		if (fgets(answer, sizeof answer, stdin) == NULL ||
		    (answer[0] != 'y' && answer[0] != 'Y')) {
			fprintf(stderr, "ollmctl reset: nothing changed\n");
			ollm_free(c);
			return EX_OK;
		}
	}
	if ((r = ollm_reset(c)) != OLLM_OK) {
		ollmctl_report(c, r);
		r = ollmctl_status(c, r);
		ollm_free(c);
		return r;
	}
	ollm_free(c);
	printf("usage counters reset\n");
	return EX_OK;
}

/*
 * Take -S SOCKET (also -SSOCKET, --socket SOCKET, --socket=SOCKET) out of a
 * command's arguments, before any "--", so it may follow the command; -1
 * when -S lacks its value.
 */
static int
ollmctl_take_socket(int *argc, char **argv)
{
	int i = 1, j, take;

	while (i < *argc) {
		take = 0;
		if (strcmp(argv[i], "--") == 0)
			break;
		if (strcmp(argv[i], "-S") == 0 || strcmp(argv[i], "--socket") == 0) {
			if (i + 1 >= *argc)
				return -1;
			ollmctl_socket = argv[i + 1];
			take = 2;
		} else if (strncmp(argv[i], "-S", 2) == 0) {
			ollmctl_socket = argv[i] + 2;
			take = 1;
		} else if (strncmp(argv[i], "--socket=", 9) == 0) {
			ollmctl_socket = argv[i] + 9;
			take = 1;
		}
		if (take == 0) {
			i++;
			continue;
		}
		for (j = i; j + take <= *argc; j++)
			argv[j] = argv[j + take];       /* argv[argc] is NULL: it moves too */
		*argc -= take;
	}
	return 0;
}

int
main(int argc, char **argv)
{
	static const struct option longopts[] = {
		{ "help", no_argument, NULL, 'h' },
		{ "version", no_argument, NULL, 'V' },
		{ "socket", required_argument, NULL, 'S' },
		{ NULL, 0, NULL, 0 }
	};
	static char progname[] = "ollmctl";
	static char cmdname[64];
	size_t i;
	int ch, r;

	setlocale(LC_CTYPE, "");
	argv[0] = progname;     /* what getopt puts before its messages */
	while ((ch = getopt_long(argc, argv, "+S:Vh", longopts, NULL)) != -1) {
		switch (ch) {
		case 'S':
			ollmctl_socket = optarg;
			break;
		case 'V':
			printf("ollmctl %s\n", PACKAGE_VERSION);
			return EX_OK;
		case 'h':
			ollmctl_usage(stdout);
			return EX_OK;
		default:
			ollmctl_usage(stderr);
			return EX_USAGE;
		}
	}
	argc -= optind;
	argv += optind;
	if (argc == 0) {
		ollmctl_usage(stderr);
		return EX_USAGE;
	}
	if (strcmp(argv[0], "help") == 0) {
		if (argc > 1)
			ollmctl_usage_cmd(stdout, argv[1]);
		else
			ollmctl_usage(stdout);
		return EX_OK;
	}
	for (i = 0; i < OLLMCTL_NCMDS; i++) {
		if (strcmp(argv[0], ollmctl_cmds[i].name) != 0)
			continue;
		if (ollmctl_wants_help(argc, argv)) {
			ollmctl_usage_cmd(stdout, argv[0]);
			printf("\n%s", ollmctl_cmds[i].help);
			return EX_OK;
		}
		if (ollmctl_take_socket(&argc, argv) != 0)
			return ollmctl_bad_usage(argv[0], "%s", "-S needs a socket path");
		snprintf(cmdname, sizeof cmdname, "ollmctl %s", ollmctl_cmds[i].name);
		argv[0] = cmdname;
		optind = 0;     /* glibc: start over with a new argv */
		r = ollmctl_cmds[i].fn(argc, argv);
		if (fflush(stdout) != 0 && r == EX_OK) {
			fprintf(stderr, "ollmctl: stdout: %s\n", strerror(errno));
			r = EX_IOERR;
		}
		return r;
	}
	fprintf(stderr, "ollmctl: unknown command \"%s\"\n", argv[0]);
	ollmctl_usage(stderr);
	return EX_USAGE;
}
