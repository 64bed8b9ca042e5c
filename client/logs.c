/* logs.c: ollmctl logs: finished requests from the daemon's journal. */
#include "config.h"

#include <sys/types.h>

#include <getopt.h>
#include <inttypes.h>
#include <pwd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sysexits.h>
#include <time.h>

#include <jansson.h>

#include "client/ollmctl.h"

#define LOGS_COLS 12
#define LOGS_CELL 48

/* The rows as the logs op's JSON: {"rows": [...], "truncated": bool}. */
static int
logs_json(FILE *f, const struct ollm_logs *l)
{
	json_t *o, *rows, *row;
	size_t i;
	int r;

	rows = json_array();
	for (i = 0; i < l->n; i++) {
		const struct ollm_log_row *w = &l->rows[i];

		row = json_pack("{s:I, s:I, s:s?, s:s, s:s, s:s, s:s?, s:I, s:I, s:b, s:f, s:I}",
		    "time_ms", (json_int_t)w->time_ms, "uid", (json_int_t)w->uid,
		    "tag", w->tag, "model", w->model, "upstream", w->upstream,
		    "status", w->status, "error", w->error,
		    "prompt_tokens", (json_int_t)w->prompt_tokens,
		    "completion_tokens", (json_int_t)w->completion_tokens,
		    "estimated", w->estimated, "cost", w->cost,
		    "latency_ms", (json_int_t)w->latency_ms);
		if (row == NULL)
			break;
		if (w->ttft_ms >= 0)
			json_object_set_new(row, "ttft_ms", json_integer(w->ttft_ms));
		if (w->node != NULL)
			json_object_set_new(row, "node", json_string(w->node));
		if (w->user != NULL)
			json_object_set_new(row, "user", json_string(w->user));
		json_array_append_new(rows, row);
	}
	if ((o = json_pack("{s:o, s:b}", "rows", rows, "truncated", l->truncated)) == NULL)
		return -1;
	r = json_dumpf(o, f, JSON_INDENT(2));
	fputc('\n', f);
	json_decref(o);
	return r;
}

/* Milliseconds as "850ms" or "12.3s"; "-" when absent. */
static void
logs_ms(char *buf, size_t len, int64_t ms)
{
	if (ms < 0)
		snprintf(buf, len, "-");
	else if (ms < 1000)
		snprintf(buf, len, "%" PRId64 "ms", ms);
	else
		snprintf(buf, len, "%.1fs", (double)ms / 1000);
}

/* The rows as a table; token counts counted locally are marked with ~; NODE for fleet rows. */
static void
logs_table(FILE *f, const struct ollm_logs *l, int fleet)
{
	static const char *head[LOGS_COLS] = { "TIME", "NODE", "USER", "TAG", "MODEL",
	    "UPSTREAM", "STATUS", "PROMPT", "COMPL", "COST", "LATENCY", "TTFT" };
	char (*cells)[LOGS_COLS][LOGS_CELL];
	size_t w[LOGS_COLS], i, k;
	char user[64], uid[16], num[32];

	if (l->n == 0) {
		fprintf(f, "no requests match\n");
		return;
	}
	if ((cells = calloc(l->n, sizeof *cells)) == NULL)
		return;
	for (k = 0; k < LOGS_COLS; k++)
		w[k] = strlen(head[k]);
	for (i = 0; i < l->n; i++) {
		const struct ollm_log_row *r = &l->rows[i];
		time_t t = (time_t)(r->time_ms / 1000);
		struct tm tm;

		if (localtime_r(&t, &tm) == NULL ||
		    strftime(cells[i][0], LOGS_CELL, "%Y-%m-%d %H:%M:%S", &tm) == 0)
			snprintf(cells[i][0], LOGS_CELL, "@%" PRId64, r->time_ms / 1000);
		snprintf(cells[i][1], LOGS_CELL, "%s", r->node != NULL ? r->node : "-");
		snprintf(uid, sizeof uid, "%" PRIu32, r->uid);
		snprintf(cells[i][2], LOGS_CELL, "%s", r->user != NULL ? r->user :
		    render_user(user, sizeof user, uid));
		snprintf(cells[i][3], LOGS_CELL, "%s", r->tag != NULL ? r->tag : "-");
		snprintf(cells[i][4], LOGS_CELL, "%s", r->model);
		snprintf(cells[i][5], LOGS_CELL, "%s", r->upstream);
		snprintf(cells[i][6], LOGS_CELL, "%s", r->error != NULL ? r->error : r->status);
		render_thousands(num, sizeof num, (uint64_t)r->prompt_tokens);
		snprintf(cells[i][7], LOGS_CELL, "%s%s", r->estimated ? "~" : "", num);
		render_thousands(num, sizeof num, (uint64_t)r->completion_tokens);
		snprintf(cells[i][8], LOGS_CELL, "%s%s", r->estimated ? "~" : "", num);
		render_money(cells[i][9], LOGS_CELL, r->cost);
		logs_ms(cells[i][10], LOGS_CELL, r->latency_ms);
		logs_ms(cells[i][11], LOGS_CELL, r->ttft_ms);
		for (k = 0; k < LOGS_COLS; k++)
			if (strlen(cells[i][k]) > w[k])
				w[k] = strlen(cells[i][k]);
	}
	for (k = 0; k < LOGS_COLS; k++)
		if (k != 1 || fleet)
			fprintf(f, k < 7 ? "%-*s%s" : "%*s%s", (int)w[k], head[k],
			    k + 1 < LOGS_COLS ? "  " : "\n");
	for (i = 0; i < l->n; i++)
		for (k = 0; k < LOGS_COLS; k++)
			if (k != 1 || fleet)
				fprintf(f, k < 7 ? "%-*s%s" : "%*s%s", (int)w[k], cells[i][k],
				    k + 1 < LOGS_COLS ? "  " : "\n");
	free(cells);
	if (l->truncated)
		fprintf(f, "(the daemon stopped reading its journal here: older requests may match; "
		    "narrow it with --since or --until)\n");
}

/* A user name or uid. */
static int
logs_parse_user(const char *s, int64_t *uid)
{
	struct passwd *pw;

	if (parse_int(s, 0, UINT32_MAX, uid) == 0)
		return 0;
	if ((pw = getpwnam(s)) == NULL)
		return -1;
	*uid = pw->pw_uid;
	return 0;
}

/* logs: per-request history, newest first. */
int
cmd_logs(int argc, char **argv)
{
	static const struct option longopts[] = {
		{ "since", required_argument, NULL, 's' },
		{ "until", required_argument, NULL, 'u' },
		{ "user", required_argument, NULL, 'U' },
		{ "tag", required_argument, NULL, 'g' },
		{ "model", required_argument, NULL, 'm' },
		{ "status", required_argument, NULL, 'S' },
		{ "limit", required_argument, NULL, 'n' },
		{ "json", no_argument, NULL, 'j' },
		{ "fleet", no_argument, NULL, 'f' },
		{ NULL, 0, NULL, 0 }
	};
	static const char usage[] = "usage: ollmctl logs [--fleet] [--since DATE] [--until DATE] "
	    "[--user USER] [--tag TAG]\n"
	    "                   [-m MODEL] [--status done|error|cancelled] [-n N] [--json]\n";
	struct ollm_logs_req q;
	struct ollm_logs l;
	struct ollm *c;
	int64_t v;
	int ch, r, json = 0;

	memset(&q, 0, sizeof q);
	q.since = q.until = q.user = -1;
	while ((ch = getopt_long(argc, argv, "m:n:", longopts, NULL)) != -1) {
		switch (ch) {
		case 's':
		case 'u':
			if (parse_since(optarg, time(NULL), &v) != 0) {
				fprintf(stderr, "ollmctl logs: bad --%s date \"%s\" (YYYY-MM-DD, "
				    "\"YYYY-MM-DD HH:MM\", @EPOCH, today, 7d, 12h)\n%s",
				    ch == 's' ? "since" : "until", optarg, usage);
				return EX_USAGE;
			}
			if (ch == 's')
				q.since = v;
			else
				q.until = v;
			break;
		case 'U':
			/* no system user: a named user (an API key's user with no account) */
			if (logs_parse_user(optarg, &q.user) != 0) {
				if (*optarg == '\0' || strspn(optarg, "0123456789") == strlen(optarg)) {
					fprintf(stderr, "ollmctl logs: no such user \"%s\"\n%s", optarg,
					    usage);
					return EX_USAGE;
				}
				q.user_name = optarg;
			}
			break;
		case 'g':
			q.tag = optarg;
			break;
		case 'm':
			q.model = optarg;
			break;
		case 'S':
			if (strcmp(optarg, "done") != 0 && strcmp(optarg, "error") != 0 &&
			    strcmp(optarg, "cancelled") != 0) {
				fprintf(stderr, "ollmctl logs: --status takes done, error or "
				    "cancelled, not \"%s\"\n%s", optarg, usage);
				return EX_USAGE;
			}
			q.status = optarg;
			break;
		case 'n':
			if (parse_int(optarg, 1, 1000, &v) != 0) {
				fprintf(stderr, "ollmctl logs: --limit takes 1 to 1000, not \"%s\"\n%s",
				    optarg, usage);
				return EX_USAGE;
			}
			q.limit = (int)v;
			break;
		case 'j':
			json = 1;
			break;
		case 'f':
			q.fleet = 1;
			break;
		default:
			fputs(usage, stderr);
			return EX_USAGE;
		}
	}
	if (optind != argc) {
		fprintf(stderr, "ollmctl logs: unexpected argument \"%s\"\n%s", argv[optind], usage);
		return EX_USAGE;
	}
	if ((r = ollmctl_connect(&c)) != EX_OK)
		return r;
	if ((r = ollm_logs(c, &q, &l)) != OLLM_OK) {
		ollmctl_report(c, r);
		r = ollmctl_status(c, r);
		ollm_free(c);
		return r;
	}
	ollm_free(c);
	if (json)
		r = logs_json(stdout, &l);
	else
		logs_table(stdout, &l, q.fleet);
	ollm_logs_clear(&l);
	if (r != 0) {
		fprintf(stderr, "ollmctl: out of memory\n");
		return EX_OSERR;
	}
	return EX_OK;
}
