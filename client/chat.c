/* chat.c: ollmctl chat: a REPL on a terminal, one message from a pipe. */
#include "config.h"

#include <sys/types.h>
#include <sys/stat.h>

#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <histedit.h>
#include <inttypes.h>
#include <limits.h>
#include <pwd.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sysexits.h>
#include <time.h>
#include <unistd.h>
#include <wchar.h>

#include <jansson.h>

#include "client/ollmctl.h"

#define CHAT_HISTORY_SIZE 1000
#define CHAT_DIM "\033[2m"
#define CHAT_UNDIM "\033[22m"
#define CHAT_PASTE_ON "\033[?2004h"
#define CHAT_PASTE_OFF "\033[?2004l"
#define CHAT_PASTE_END "\033[201~"

struct chat_buf {
	char *p;                        /* NUL-terminated when not NULL */
	size_t len;
	size_t cap;
};

struct chat_turn {
	const char *role;               /* "user" or "assistant" */
	char *content;
};

struct chat {
	struct ollm *conn;
	struct ollm_chat_opts opts;
	char *model;                    /* -m or /model; NULL: the daemon's default */
	char *system;                   /* -s or /system; NULL: none */
	struct chat_turn *turns;        /* the conversation, oldest first */
	size_t n_turns;
	size_t cap_turns;
	char *last_user;                /* what /retry sends again */
	size_t last_added;              /* turns the last exchange added */
	int show_usage;
	int repl;                       /* on a terminal (else a pipe or one prompt) */
	int save;                       /* keep the conversation on disk */
	int save_failed;                /* said once that it could not be saved */
	char conv_id[72];               /* "" until it is first saved */
	int64_t conv_created;
	int colour;                     /* stdout is a terminal and NO_COLOR is not set */
	int model_given;                /* -m on the command line: wins over a saved one */
	int system_given;               /* -s on the command line */
	struct ollmctl_config cfg;      /* defaults from ollmctl's config file */
	json_t *tool_calls;             /* the reply's tool calls: [{name, arguments}] by index */

	/* The reply being received. */
	struct chat_buf reply;
	int in_reasoning;
	int last_char;                  /* the last byte written to stdout, or -1 */

	/* Line editing. */
	EditLine *el;
	History *hist;
	char histfile[PATH_MAX];
	const char *prompt;
	int paste_mode;                 /* bracketed paste asked of the terminal */
	int interrupted;                /* ^C at the prompt */
	int has_paste;                  /* a paste of several lines is in paste */
	struct chat_buf paste;
};

/* The connection the SIGINT handler cancels on; set around each request. */
static struct ollm *volatile chat_sigconn;
static volatile sig_atomic_t chat_sigint;

static int chat_ensure_connected(struct chat *);

/* SIGINT: stop the reply being generated. */
static void
chat_sigint_handler(int sig)
{
	struct ollm *c = chat_sigconn;

	(void)sig;
	chat_sigint = 1;
	if (c != NULL)
		ollm_cancel(c, 0);
}

/* Append len bytes to a buffer; -1 when out of memory. */
static int
chat_buf_add(struct chat_buf *b, const char *s, size_t len)
{
	size_t cap;
	char *p;

	if (b->len + len + 1 > b->cap) {
		cap = b->cap == 0 ? 256 : b->cap;
		while (cap < b->len + len + 1)
			cap *= 2;
		if ((p = realloc(b->p, cap)) == NULL)
			return -1;
		b->p = p;
		b->cap = cap;
	}
	memcpy(b->p + b->len, s, len);
	b->len += len;
	b->p[b->len] = '\0';
	return 0;
}

/* Empty a buffer, keeping its memory. */
static void
chat_buf_reset(struct chat_buf *b)
{
	b->len = 0;
	if (b->p != NULL)
		b->p[0] = '\0';
}

/* Take a buffer's string (never NULL) and leave the buffer empty. */
static char *
chat_buf_take(struct chat_buf *b)
{
	char *s = b->p != NULL ? b->p : strdup("");

	memset(b, 0, sizeof *b);
	return s;
}

/* Write text of the reply to stdout, remembering the last byte. */
static void
chat_out(struct chat *ch, const char *s)
{
	size_t n = strlen(s);

	if (n == 0)
		return;
	fwrite(s, 1, n, stdout);
	ch->last_char = (unsigned char)s[n - 1];
}

/* Leave the dimmed reasoning text. */
static void
chat_end_reasoning(struct chat *ch)
{
	if (!ch->in_reasoning)
		return;
	ch->in_reasoning = 0;
	if (ch->colour)
		fputs(CHAT_UNDIM, stdout);
	if (ch->last_char != '\n')
		chat_out(ch, "\n");
}

/* Show reasoning text, dimmed on a terminal; only in the REPL. */
static void
chat_reasoning(struct chat *ch, const char *s)
{
	if (!ch->repl || *s == '\0')
		return;
	if (!ch->in_reasoning) {
		ch->in_reasoning = 1;
		if (ch->colour)
			fputs(CHAT_DIM, stdout);
	}
	chat_out(ch, s);
}

/* Show the next piece of the answer and keep it for the conversation. */
static void
chat_content(struct chat *ch, const char *s)
{
	if (*s == '\0')
		return;
	chat_end_reasoning(ch);
	chat_out(ch, s);
	chat_buf_add(&ch->reply, s, strlen(s));
}

/*
 * Merge tool-call pieces (a JSON array of OpenAI tool_calls, whole or
 * streamed fragments keyed by index) into ch->tool_calls.
 */
static void
chat_tool_calls_add(struct chat *ch, const char *json)
{
	json_t *arr, *call, *fn, *slot, *v;
	const char *args;
	size_t i, idx;
	char *joined;

	if ((arr = json_loads(json, JSON_DECODE_ANY, NULL)) == NULL)
		return;
	if (ch->tool_calls == NULL)
		ch->tool_calls = json_array();
	json_array_foreach(arr, i, call) {
		if (!json_is_object(call) || ch->tool_calls == NULL)
			continue;
		v = json_object_get(call, "index");
		idx = json_is_integer(v) && json_integer_value(v) >= 0 &&
		    json_integer_value(v) < 64 ? (size_t)json_integer_value(v) : i;
		while (json_array_size(ch->tool_calls) <= idx)
			json_array_append_new(ch->tool_calls, json_pack("{s:s, s:s}",
			    "name", "", "arguments", ""));
		slot = json_array_get(ch->tool_calls, idx);
		fn = json_object_get(call, "function");
		if (!json_is_object(fn))
			continue;
		if (json_is_string(v = json_object_get(fn, "name")) && json_string_length(v) > 0)
			json_object_set(slot, "name", v);
		v = json_object_get(fn, "arguments");
		if (json_is_string(v))
			args = json_string_value(v);
		else if (v != NULL && !json_is_null(v))
			args = NULL;            /* an object: printed as JSON below */
		else
			continue;
		if (args == NULL) {
			if ((joined = json_dumps(v, JSON_COMPACT)) != NULL) {
				json_object_set_new(slot, "arguments", json_string(joined));
				free(joined);
			}
			continue;
		}
		if (asprintf(&joined, "%s%s", json_string_value(json_object_get(slot,
		    "arguments")), args) != -1) {
			json_object_set_new(slot, "arguments", json_string(joined));
			free(joined);
		}
	}
	json_decref(arr);
}

/* Print the reply's tool calls, one line each: "tool call: NAME(ARGUMENTS)". */
static void
chat_tool_calls_print(struct chat *ch)
{
	json_t *slot;
	size_t i;

	if (ch->tool_calls == NULL)
		return;
	json_array_foreach(ch->tool_calls, i, slot) {
		printf("tool call: %s(%s)\n", json_string_value(json_object_get(slot, "name")),
		    json_string_value(json_object_get(slot, "arguments")));
		ch->last_char = '\n';
	}
	json_decref(ch->tool_calls);
	ch->tool_calls = NULL;
}

/*
 * After budget_exceeded: say how the request would fit, from the error's
 * detail: the largest max_tokens that fits (fit), else what is left.
 */
static void
chat_budget_hint(struct chat *ch)
{
	json_t *d, *fit;
	const char *scope, *unit;
	double left;

	if ((d = json_loads(ollm_last_error(ch->conn)->detail_json, 0, NULL)) == NULL)
		return;
	fit = json_object_get(d, "fit");
	scope = json_string_value(json_object_get(d, "scope"));
	unit = json_string_value(json_object_get(d, "unit"));
	left = json_number_value(json_object_get(d, "left"));
	if (json_is_integer(fit) && json_integer_value(fit) >= 1)
		fprintf(stderr, "%s: it fits with %s %" PRId64 " (budget %s has %g%s left)\n",
		    ch->repl ? "hint" : "ollmctl chat", ch->repl ? "/max-tokens" : "--max-tokens",
		    (int64_t)json_integer_value(fit), scope != NULL ? scope : "?", left,
		    unit != NULL && strcmp(unit, "tokens") == 0 ? " tokens" : "");
	else if (json_is_integer(fit))
		fprintf(stderr, "%s: the prompt alone takes more than budget %s has left%s\n",
		    ch->repl ? "hint" : "ollmctl chat", scope != NULL ? scope : "?",
		    ch->repl ? "; /clear forgets the conversation" : "");
	json_decref(d);
}

/* Each delta of a streamed reply goes straight to the terminal. */
static int
chat_delta_cb(struct ollm *c, uint64_t id, const struct ollm_delta *d, void *arg)
{
	struct chat *ch = arg;

	(void)c;
	(void)id;
	if (d->reasoning != NULL)
		chat_reasoning(ch, d->reasoning);
	if (d->content != NULL)
		chat_content(ch, d->content);
	if (d->tool_calls_json != NULL)
		chat_tool_calls_add(ch, d->tool_calls_json);
	fflush(stdout);
	return 0;
}

/* Print a line dimmed (on a terminal) to stdout. */
static void
chat_note(struct chat *ch, const char *s)
{
	if (ch->colour)
		printf(CHAT_DIM "%s" CHAT_UNDIM "\n", s);
	else
		printf("%s\n", s);
}

/* Add a turn to the conversation; the content is copied. */
static int
chat_add_turn(struct chat *ch, const char *role, const char *content)
{
	struct chat_turn *t;
	size_t cap;

	if (ch->n_turns == ch->cap_turns) {
		cap = ch->cap_turns == 0 ? 16 : ch->cap_turns * 2;
		if ((t = realloc(ch->turns, cap * sizeof *t)) == NULL)
			return -1;
		ch->turns = t;
		ch->cap_turns = cap;
	}
	if ((ch->turns[ch->n_turns].content = strdup(content)) == NULL)
		return -1;
	ch->turns[ch->n_turns].role = role;
	ch->n_turns++;
	return 0;
}

/* Forget the last n turns. */
static void
chat_drop_turns(struct chat *ch, size_t n)
{
	while (n-- > 0 && ch->n_turns > 0)
		free(ch->turns[--ch->n_turns].content);
}

/* A status frame: why the reply waits, on stderr. */
static void
chat_status_cb(struct ollm *c, uint64_t id, const struct ollm_status *st, void *arg)
{
	struct chat *ch = arg;
	char line[512];

	(void)c;
	(void)id;
	render_status(line, sizeof line, st);
	if (ch->repl && isatty(STDERR_FILENO))
		fprintf(stderr, CHAT_DIM "%s" CHAT_UNDIM "\n", line);
	else
		fprintf(stderr, "ollmctl: %s\n", line);
}

/* Write the conversation to its file, starting a new one at the first save. */
static void
chat_save(struct chat *ch)
{
	struct conv cv;
	char err[512];
	size_t i;

	if (!ch->save || ch->n_turns == 0)
		return;
	memset(&cv, 0, sizeof cv);
	if (ch->conv_id[0] == '\0') {
		conv_new_id(ch->conv_id, sizeof ch->conv_id);
		ch->conv_created = time(NULL);
	}
	snprintf(cv.id, sizeof cv.id, "%s", ch->conv_id);
	cv.created = ch->conv_created;
	cv.model = ch->model;
	cv.system = ch->system;
	if ((cv.msgs = calloc(ch->n_turns, sizeof *cv.msgs)) == NULL)
		return;
	for (i = 0; i < ch->n_turns; i++) {
		cv.msgs[i].role = (char *)ch->turns[i].role;
		cv.msgs[i].content = ch->turns[i].content;
	}
	cv.n = ch->n_turns;
	if (conv_save(&cv, err, sizeof err) != 0 && !ch->save_failed) {
		ch->save_failed = 1;
		fprintf(stderr, "ollmctl: cannot save the conversation: %s\n", err);
	}
	free(cv.msgs);
}

/* Reconnect when an earlier failure closed the connection. */
static int
chat_ensure_connected(struct chat *ch)
{
	if (ollm_connected(ch->conn))
		return OLLM_OK;
	return ollm_connect(ch->conn, ollmctl_socket);
}

/*
 * Send the conversation plus text as the next user message and show the
 * reply. In the REPL the exchange joins the conversation; a failure is one
 * line and the session goes on. Returns the libollm result.
 */
static int
chat_send(struct chat *ch, const char *text)
{
	struct ollm_message *msgs;
	struct ollm_done done;
	char line[1024];
	size_t n = 0, i;
	int r;

	if ((msgs = calloc(ch->n_turns + 2, sizeof *msgs)) == NULL) {
		fprintf(stderr, "ollmctl: out of memory\n");
		return OLLM_ERR_NOMEM;
	}
	if (ch->system != NULL) {
		msgs[n].role = "system";
		msgs[n++].content = ch->system;
	}
	for (i = 0; i < ch->n_turns; i++) {
		msgs[n].role = ch->turns[i].role;
		msgs[n++].content = ch->turns[i].content;
	}
	msgs[n].role = "user";
	msgs[n++].content = text;

	chat_buf_reset(&ch->reply);
	ch->in_reasoning = 0;
	ch->last_char = -1;
	ch->opts.model = ch->model;
	memset(&done, 0, sizeof done);

	if ((r = chat_ensure_connected(ch)) == OLLM_OK) {
		/* From a pipe, a SIGINT before the request went out ends it too. */
		chat_sigconn = ch->conn;
		if (ch->repl)
			chat_sigint = 0;
		if (chat_sigint)
			r = OLLM_ERR_CANCELLED;
		else
			r = ollm_chat(ch->conn, msgs, n, &ch->opts, chat_delta_cb, ch, &done);
		chat_sigconn = NULL;
	}
	if (r == OLLM_OK && !ch->opts.stream) {
		if (done.reasoning != NULL)
			chat_reasoning(ch, done.reasoning);
		if (done.content != NULL)
			chat_content(ch, done.content);
		if (done.tool_calls_json != NULL)
			chat_tool_calls_add(ch, done.tool_calls_json);
	}
	chat_end_reasoning(ch);
	if (ch->last_char != -1 && ch->last_char != '\n')
		chat_out(ch, "\n");
	chat_tool_calls_print(ch);
	fflush(stdout);
	if (r == OLLM_OK && done.finish_reason != NULL &&
	    strcmp(done.finish_reason, "length") == 0) {
		if (done.budget_shrunk)
			fprintf(stderr, "%s: the reply was cut at max_tokens %" PRId64 ", lowered from "
			    "%" PRId64 " to fit a budget (ollmctl stats shows what is left)\n",
			    ch->repl ? "note" : "ollmctl chat", done.max_tokens, done.max_tokens_asked);
		else if (done.cut)
			fprintf(stderr, "%s: the model server wrote past max_tokens %" PRId64 "; the "
			    "reply was cut there\n", ch->repl ? "note" : "ollmctl chat", done.max_tokens);
		else if (ch->opts.max_tokens > 0)
			fprintf(stderr, "%s: the reply was cut at max_tokens (%" PRId64 "); %s "
			    "raises it\n", ch->repl ? "note" : "ollmctl chat",
			    ch->opts.max_tokens, ch->repl ? "/max-tokens N" : "--max-tokens N");
		else
			fprintf(stderr, "%s: the reply was cut at the model server's token "
			    "limit; %s asks for more\n", ch->repl ? "note" : "ollmctl chat",
			    ch->repl ? "/max-tokens N" : "--max-tokens N");
	}

	if (r == OLLM_OK && !done.durable)
		fprintf(stderr, "ollmctl: warning: the daemon could not record this reply's "
		    "usage in its ledger (see its log)\n");
	if (!ch->repl) {
		if (r != OLLM_OK && r != OLLM_ERR_CANCELLED)
			ollmctl_report(ch->conn, r);
		if (r == OLLM_ERR_BUDGET_EXCEEDED)
			chat_budget_hint(ch);
		free(msgs);
		if (r == OLLM_OK && ch->save && chat_add_turn(ch, "user", text) == 0 &&
		    chat_add_turn(ch, "assistant", ch->reply.p != NULL ? ch->reply.p : "") == 0)
			chat_save(ch);
		ollm_done_clear(&done);
		return r;
	}

	free(ch->last_user);
	ch->last_user = strdup(text);
	ch->last_added = 0;
	if (r == OLLM_OK || (r == OLLM_ERR_CANCELLED && ch->reply.len > 0)) {
		if (chat_add_turn(ch, "user", text) == 0) {
			ch->last_added = 1;
			if (chat_add_turn(ch, "assistant",
			    ch->reply.p != NULL ? ch->reply.p : "") == 0)
				ch->last_added = 2;
		}
		chat_save(ch);
	}
	if (r == OLLM_OK && ch->show_usage) {
		render_usage(line, sizeof line, &done);
		chat_note(ch, line);
	} else if (r == OLLM_ERR_CANCELLED)
		chat_note(ch, "[stopped]");
	else if (r != OLLM_OK) {
		render_error(line, sizeof line, ollm_last_error(ch->conn));
		fprintf(stderr, "error: %s\n", line);
		if (r == OLLM_ERR_BUDGET_EXCEEDED)
			chat_budget_hint(ch);
	}
	free(msgs);
	ollm_done_clear(&done);
	return r;
}

/* --- line editing ---------------------------------------------------------- */

/* The prompt libedit shows. */
static char *
chat_prompt_cb(EditLine *el)
{
	struct chat *ch;

	el_get(el, EL_CLIENTDATA, &ch);
	return (char *)ch->prompt;
}

/* End the line as Enter would, by queueing a newline after the cursor moves to the end. */
static void
chat_el_finish(EditLine *el)
{
	const LineInfo *li = el_line(el);

	el_cursor(el, (int)(li->lastchar - li->cursor));
	el_push(el, "\n");
}

/* ^C at the prompt: drop the line and prompt again. */
static unsigned char
chat_el_interrupt_cb(EditLine *el, int c)
{
	struct chat *ch;

	(void)c;
	el_get(el, EL_CLIENTDATA, &ch);
	ch->interrupted = 1;
	chat_el_finish(el);
	el_insertstr(el, "^C");
	return CC_REFRESH;
}

/* ^Z at the prompt: stop as the shell expects (ISIG is off while editing). */
static unsigned char
chat_el_suspend_cb(EditLine *el, int c)
{
	(void)c;
	el_set(el, EL_PREP_TERM, 0);
	kill(getpid(), SIGTSTP);
	el_set(el, EL_PREP_TERM, 1);
	return CC_REDISPLAY;
}

/*
 * Bracketed paste: the terminal sends ESC [200~, the text, ESC [201~. Text
 * without a newline is inserted into the line; text with newlines is kept
 * whole and the line ends, so the REPL can take it as one message.
 */
static unsigned char
chat_el_paste_cb(EditLine *el, int c)
{
	struct chat *ch;
	wchar_t wc;
	mbstate_t ps;
	char mb[MB_LEN_MAX];
	size_t n, endlen = strlen(CHAT_PASTE_END);

	(void)c;
	el_get(el, EL_CLIENTDATA, &ch);
	chat_buf_reset(&ch->paste);
	memset(&ps, 0, sizeof ps);
	while (el_wgetc(el, &wc) == 1) {
		if (wc == L'\r')
			wc = L'\n';
		if ((n = wcrtomb(mb, wc, &ps)) == (size_t)-1) {
			memset(&ps, 0, sizeof ps);
			continue;
		}
		if (chat_buf_add(&ch->paste, mb, n) != 0)
			break;
		if (ch->paste.len >= endlen &&
		    memcmp(ch->paste.p + ch->paste.len - endlen, CHAT_PASTE_END, endlen) == 0) {
			ch->paste.len -= endlen;
			ch->paste.p[ch->paste.len] = '\0';
			break;
		}
	}
	while (ch->paste.len > 0 && ch->paste.p[ch->paste.len - 1] == '\n')
		ch->paste.p[--ch->paste.len] = '\0';
	if (ch->paste.len == 0)
		return CC_NORM;
	if (strchr(ch->paste.p, '\n') == NULL) {
		el_insertstr(el, ch->paste.p);
		chat_buf_reset(&ch->paste);
		return CC_REFRESH;
	}
	ch->has_paste = 1;
	chat_el_finish(el);
	return CC_REFRESH;
}

/* Where the history lives: $XDG_STATE_HOME/ollmctl/history or ~/.local/state/ollmctl/history. */
static int
chat_history_path(char *buf, size_t len)
{
	const char *base, *home;
	struct passwd *pw;
	char dir[PATH_MAX], *p;
	int n;

	if ((base = getenv("XDG_STATE_HOME")) != NULL && *base == '/')
		n = snprintf(dir, sizeof dir, "%s/ollmctl", base);
	else {
		if ((home = getenv("HOME")) == NULL || *home != '/') {
			if ((pw = getpwuid(getuid())) == NULL)
				return -1;
			home = pw->pw_dir;
		}
		n = snprintf(dir, sizeof dir, "%s/.local/state/ollmctl", home);
	}
	if (n <= 0 || (size_t)n >= sizeof dir)
		return -1;
	/* mkdir -p, private. */
	for (p = dir + 1; *p != '\0'; p++) {
		if (*p != '/')
			continue;
		*p = '\0';
		if (mkdir(dir, 0700) == -1 && errno != EEXIST)
			return -1;
		*p = '/';
	}
	if (mkdir(dir, 0700) == -1 && errno != EEXIST)
		return -1;
	n = snprintf(buf, len, "%s/history", dir);
	if (n <= 0 || (size_t)n >= len)
		return -1;
	return 0;
}

/* Set up libedit and load the history. */
static int
chat_el_init(struct chat *ch)
{
	HistEvent ev;
	const char *term;
	int fd;

	if ((ch->el = el_init("ollmctl", stdin, stdout, stderr)) == NULL)
		return -1;
	if ((ch->hist = history_init()) == NULL)
		return -1;
	history(ch->hist, &ev, H_SETSIZE, CHAT_HISTORY_SIZE);
	history(ch->hist, &ev, H_SETUNIQUE, 1);
	if (chat_history_path(ch->histfile, sizeof ch->histfile) == 0) {
		/* Created private before libedit writes it. */
		if ((fd = open(ch->histfile, O_WRONLY | O_CREAT | O_CLOEXEC, 0600)) != -1)
			close(fd);
		history(ch->hist, &ev, H_LOAD, ch->histfile);
	} else
		ch->histfile[0] = '\0';

	el_set(ch->el, EL_CLIENTDATA, ch);
	el_set(ch->el, EL_EDITOR, "emacs");
	el_set(ch->el, EL_SIGNAL, 1);
	el_set(ch->el, EL_PROMPT, chat_prompt_cb);
	el_set(ch->el, EL_HIST, history, ch->hist);
	/* ^C and ^Z reach the editor as keys while a line is edited. */
	el_set(ch->el, EL_SETTY, "-d", "-isig", NULL);
	/* The wide call keeps the names as given; the narrow one leaks copies. */
	el_wset(ch->el, EL_ADDFN, L"ollm-interrupt", L"drop the line", chat_el_interrupt_cb);
	el_wset(ch->el, EL_ADDFN, L"ollm-suspend", L"suspend ollmctl", chat_el_suspend_cb);
	el_wset(ch->el, EL_ADDFN, L"ollm-paste", L"bracketed paste", chat_el_paste_cb);
	el_set(ch->el, EL_BIND, "^C", "ollm-interrupt", NULL);
	el_set(ch->el, EL_BIND, "^Z", "ollm-suspend", NULL);
	el_set(ch->el, EL_BIND, "\\e[200~", "ollm-paste", NULL);
	el_source(ch->el, NULL);
	term = getenv("TERM");
	ch->paste_mode = ch->colour && term != NULL && strcmp(term, "dumb") != 0;
	return 0;
}

/* Release libedit. */
static void
chat_el_free(struct chat *ch)
{
	if (ch->el != NULL)
		el_end(ch->el);
	if (ch->hist != NULL)
		history_end(ch->hist);
}

/* Remember a line in the history, on disk at once. */
static void
chat_history_add(struct chat *ch, const char *line)
{
	HistEvent ev;

	if (*line == '\0')
		return;
	history(ch->hist, &ev, H_ENTER, line);
	if (ch->histfile[0] != '\0')
		history(ch->hist, &ev, H_SAVE, ch->histfile);
}

/*
 * Read one line (without its newline) after prompt. NULL at end of input.
 * ch->interrupted says the line was dropped with ^C; ch->has_paste that a
 * paste of several lines followed it.
 */
static char *
chat_readline(struct chat *ch, const char *prompt)
{
	const char *line;
	char *s;
	size_t n;
	int count;

	ch->prompt = prompt;
	ch->interrupted = 0;
	ch->has_paste = 0;
	if (ch->paste_mode) {
		fputs(CHAT_PASTE_ON, stdout);
		fflush(stdout);
	}
	line = el_gets(ch->el, &count);
	if (ch->paste_mode) {
		fputs(CHAT_PASTE_OFF, stdout);
		fflush(stdout);
	}
	if (line == NULL) {
		if (count == -1 && errno == EINTR) {
			/* A signal (SIGINT from kill) while editing: a fresh prompt. */
			ch->interrupted = 1;
			fputc('\n', stdout);
			return strdup("");
		}
		return NULL;
	}
	if ((s = strdup(line)) == NULL)
		return NULL;
	n = strlen(s);
	while (n > 0 && (s[n - 1] == '\n' || s[n - 1] == '\r'))
		s[--n] = '\0';
	return s;
}

/* Add line and the pending paste to a message; the paste is echoed. */
static void
chat_take_paste(struct chat *ch, struct chat_buf *msg, const char *line)
{
	if (msg->len > 0)
		chat_buf_add(msg, "\n", 1);
	chat_buf_add(msg, line, strlen(line));
	if (!ch->has_paste)
		return;
	if (*line != '\0')
		chat_buf_add(msg, "\n", 1);
	chat_buf_add(msg, ch->paste.p, ch->paste.len);
	fputs(ch->paste.p, stdout);
	fputc('\n', stdout);
	fflush(stdout);
	chat_buf_reset(&ch->paste);
	ch->has_paste = 0;
}

/*
 * A multi-line message: after a paste, lines until an empty one; after a
 * line starting with """, lines until one ending with """. NULL when ^C
 * drops it.
 */
static char *
chat_read_more(struct chat *ch, struct chat_buf *msg, int quoted)
{
	char *line;
	size_t n;

	for (;;) {
		if ((line = chat_readline(ch, "... ")) == NULL)
			break;          /* ^D sends what there is */
		if (ch->interrupted) {
			free(line);
			free(chat_buf_take(msg));
			return NULL;
		}
		n = strlen(line);
		if (quoted && n >= 3 && strcmp(line + n - 3, "\"\"\"") == 0) {
			line[n - 3] = '\0';
			if (line[0] != '\0' || ch->has_paste)
				chat_take_paste(ch, msg, line);
			free(line);
			break;
		}
		if (!quoted && n == 0 && !ch->has_paste) {
			free(line);
			break;
		}
		chat_take_paste(ch, msg, line);
		free(line);
	}
	return chat_buf_take(msg);
}

/* The model replies come from: the one asked for, else the daemon's default. */
static const char *
chat_model_name(struct chat *ch, char *buf, size_t len)
{
	struct ollm_models m;

	if (ch->model != NULL)
		return ch->model;
	snprintf(buf, len, "(the daemon's default)");
	if (ollm_models(ch->conn, &m) == OLLM_OK) {
		if (m.n > 0 && m.upstreams[0].model != NULL)
			snprintf(buf, len, "%s", m.upstreams[0].model);
		ollm_models_clear(&m);
	}
	return buf;
}

/* Whether a model is served, per the models op; if not, say which are. */
static int
chat_model_known(struct chat *ch, const char *name)
{
	struct ollm_models m;
	const struct ollm_upstream *u;
	size_t i, j;
	int r, found = 0;

	if ((r = chat_ensure_connected(ch)) == OLLM_OK)
		r = ollm_models(ch->conn, &m);
	if (r != OLLM_OK) {
		char line[1024];

		render_error(line, sizeof line, ollm_last_error(ch->conn));
		printf("cannot check the model: %s; model unchanged\n", line);
		return 0;
	}
	for (i = 0; i < m.n && !found; i++) {
		u = &m.upstreams[i];
		found = u->model != NULL && strcmp(u->model, name) == 0;
		for (j = 0; j < u->n_models && !found; j++)
			found = strcmp(u->models[j], name) == 0;
	}
	if (!found) {
		printf("no upstream serves \"%s\"; model unchanged. Served:", name);
		for (i = 0; i < m.n; i++) {
			u = &m.upstreams[i];
			if (u->model != NULL)
				printf(" %s", u->model);
			for (j = 0; j < u->n_models; j++)
				if (u->model == NULL || strcmp(u->models[j], u->model) != 0)
					printf(" %s", u->models[j]);
		}
		printf("\n");
	}
	ollm_models_clear(&m);
	return found;
}

/* Text of /help. */
static void
chat_help(void)
{
	printf("Type a message and press Enter; the reply streams back.\n"
	    "A line starting with \"\"\" begins a message of several lines, ended by\n"
	    "a line ending with \"\"\". A pasted text of several lines waits for\n"
	    "more: an empty line sends it. Ctrl-C stops a reply, Ctrl-D leaves.\n"
	    "  /help           this text\n"
	    "  /system [TEXT]  set (or show) the system message\n"
	    "  /model [NAME]   ask another model (or show which)\n"
	    "  /max-tokens [N] the longest reply in tokens (0: the server's default)\n"
	    "  /clear          forget the conversation\n"
	    "  /usage          toggle a line of tokens, cost and speed after replies\n"
	    "  /retry          ask the last message again\n"
	    "  /exit           leave\n");
}

/* A slash command; 1 to leave the REPL. */
static int
chat_command(struct chat *ch, char *line)
{
	char *cmd = line + 1, *arg, name[128];
	size_t n;

	arg = cmd + strcspn(cmd, " \t");
	if (*arg != '\0')
		*arg++ = '\0';
	arg += strspn(arg, " \t");
	n = strlen(arg);
	while (n > 0 && (arg[n - 1] == ' ' || arg[n - 1] == '\t'))
		arg[--n] = '\0';

	if (strcmp(cmd, "exit") == 0 || strcmp(cmd, "quit") == 0)
		return 1;
	if (strcmp(cmd, "help") == 0 || strcmp(cmd, "?") == 0)
		chat_help();
	else if (strcmp(cmd, "system") == 0) {
		if (*arg == '\0')
			printf("system: %s\n", ch->system != NULL ? ch->system : "(none)");
		else {
			free(ch->system);
			ch->system = strdup(arg);
			printf("system message set\n");
		}
	} else if (strcmp(cmd, "model") == 0) {
		if (*arg == '\0')
			printf("model: %s\n", chat_model_name(ch, name, sizeof name));
		else if (chat_model_known(ch, arg)) {
			free(ch->model);
			ch->model = strdup(arg);
			printf("model: %s\n", arg);
		}
	} else if (strcmp(cmd, "max-tokens") == 0) {
		int64_t v;

		if (*arg == '\0' && ch->opts.max_tokens > 0)
			printf("max-tokens: %" PRId64 "\n", ch->opts.max_tokens);
		else if (*arg == '\0')
			printf("max-tokens: the model server's default\n");
		else if (parse_int(arg, 0, INT32_MAX, &v) != 0)
			printf("/max-tokens takes a number (0: the model server's default), "
			    "not \"%s\"\n", arg);
		else {
			ch->opts.max_tokens = v;
			if (v > 0)
				printf("max-tokens: %" PRId64 "\n", v);
			else
				printf("max-tokens: the model server's default\n");
		}
	} else if (strcmp(cmd, "clear") == 0) {
		chat_drop_turns(ch, ch->n_turns);
		ch->last_added = 0;
		ch->conv_id[0] = '\0';         /* the next message starts a new one */
		printf("conversation cleared\n");
	} else if (strcmp(cmd, "usage") == 0) {
		ch->show_usage = !ch->show_usage;
		printf("usage line %s\n", ch->show_usage ? "on" : "off");
	} else if (strcmp(cmd, "retry") == 0) {
		if (ch->last_user == NULL)
			printf("nothing to retry\n");
		else {
			char *text = ch->last_user;

			ch->last_user = NULL;
			chat_drop_turns(ch, ch->last_added);
			ch->last_added = 0;
			chat_send(ch, text);
			free(text);
		}
	} else
		printf("unknown command /%s (/help lists them)\n", cmd);
	fflush(stdout);
	return 0;
}

/* The REPL: read, send, show, until ^D or /exit. */
static int
chat_repl(struct chat *ch)
{
	struct ollm_ping p;
	struct chat_buf msg = { NULL, 0, 0 };
	char *line, *text, name[128];
	int r;

	if ((r = ollm_ping(ch->conn, &p)) != OLLM_OK) {
		ollmctl_report(ch->conn, r);
		return ollmctl_status(ch->conn, r);
	}
	if (chat_el_init(ch) != 0) {
		chat_el_free(ch);
		fprintf(stderr, "ollmctl: cannot set up line editing\n");
		return EX_OSERR;
	}
	printf("openllmd %s, model %s. /help for commands, Ctrl-D to leave.\n",
	    p.version, chat_model_name(ch, name, sizeof name));
	if (ch->n_turns > 0)
		printf("continuing conversation %s (%zu messages)\n", ch->conv_id, ch->n_turns);
	for (;;) {
		if ((line = chat_readline(ch, "> ")) == NULL) {
			fputc('\n', stdout);
			break;
		}
		if (ch->interrupted) {
			free(line);
			continue;
		}
		if (ch->has_paste) {
			chat_take_paste(ch, &msg, line);
			free(line);
			if ((text = chat_read_more(ch, &msg, 0)) == NULL)
				continue;
		} else if (strncmp(line, "\"\"\"", 3) == 0) {
			size_t n = strlen(line);

			if (n >= 6 && strcmp(line + n - 3, "\"\"\"") == 0) {
				line[n - 3] = '\0';
				text = strdup(line + 3);
			} else {
				if (line[3] != '\0')
					chat_buf_add(&msg, line + 3, n - 3);
				text = chat_read_more(ch, &msg, 1);
			}
			free(line);
			if (text == NULL)
				continue;
		} else if (line[0] == '/' && line[1] != '/') {
			chat_history_add(ch, line);
			r = chat_command(ch, line);
			free(line);
			if (r)
				break;
			continue;
		} else {
			chat_history_add(ch, line);
			/* "//text" sends "/text". */
			text = strdup(line[0] == '/' ? line + 1 : line);
			free(line);
		}
		if (text == NULL)
			break;
		if (text[strspn(text, " \t\n")] != '\0')
			chat_send(ch, text);
		free(text);
	}
	free(msg.p);
	chat_el_free(ch);
	return EX_OK;
}

/* Pipe mode: all of stdin is one message; the reply goes to stdout. */
static int
chat_pipe(struct chat *ch)
{
	char *text;
	size_t len;
	int r;

	if ((r = ollmctl_read(NULL, &text, &len)) != EX_OK)
		return r;
	if (len == 0) {
		fprintf(stderr, "ollmctl chat: stdin is empty: nothing to send\n");
		free(text);
		return EX_DATAERR;
	}
	r = chat_send(ch, text);
	free(text);
	return ollmctl_status(ch->conn, r);
}

/* Defaults from ollmctl's config file; the options parsed after it win. */
static int
chat_config(struct chat *ch)
{
	char path[PATH_MAX];

	if (config_path(path, sizeof path) != 0)
		return EX_OK;
	if (config_load(path, &ch->cfg, stderr) != 0)
		return EX_CONFIG;
	if (ch->cfg.model != NULL && (ch->model = strdup(ch->cfg.model)) == NULL)
		return EX_OSERR;
	if (ch->cfg.system != NULL && (ch->system = strdup(ch->cfg.system)) == NULL)
		return EX_OSERR;
	ch->opts.tag = ch->cfg.tag;
	if (ch->cfg.max_tokens > 0)
		ch->opts.max_tokens = ch->cfg.max_tokens;
	return EX_OK;
}

/* One prompt from the arguments: the reply goes to stdout. */
static int
chat_once(struct chat *ch, const char *prompt)
{
	int r;

	if (prompt[strspn(prompt, " \t\n")] == '\0') {
		fprintf(stderr, "ollmctl chat: the prompt is empty: nothing to send\n");
		return EX_DATAERR;
	}
	r = chat_send(ch, prompt);
	return ollmctl_status(ch->conn, r);
}

/* The arguments after the options as one prompt, joined by spaces; NULL when none. */
static char *
chat_join(int argc, char **argv)
{
	size_t len = 1;
	char *s;
	int i;

	if (argc <= 0)
		return NULL;
	for (i = 0; i < argc; i++)
		len += strlen(argv[i]) + 1;
	if ((s = calloc(1, len)) == NULL)
		return NULL;
	for (i = 0; i < argc; i++) {
		if (i > 0)
			strcat(s, " ");
		strcat(s, argv[i]);
	}
	return s;
}

/* Take up a saved conversation (the last one for NULL); an exit status. */
static int
chat_continue(struct chat *ch, const char *cid)
{
	struct conv cv;
	char id[72], err[512];
	size_t i;
	int r;

	if (cid == NULL && conv_last(id, sizeof id) != 0) {
		fprintf(stderr, "ollmctl chat: no saved conversation to continue\n");
		return EX_NOINPUT;
	}
	if (cid != NULL)
		snprintf(id, sizeof id, "%s", cid);
	if ((r = conv_load(id, &cv, err, sizeof err)) == -1) {
		fprintf(stderr, "ollmctl chat: %s\n", err);
		return EX_DATAERR;
	}
	snprintf(ch->conv_id, sizeof ch->conv_id, "%s", id);
	if (r == 1) {                   /* --cid names a new conversation */
		ch->conv_created = time(NULL);
		return EX_OK;
	}
	ch->conv_created = cv.created;
	for (i = 0; i < cv.n; i++) {
		if (chat_add_turn(ch, strcmp(cv.msgs[i].role, "user") == 0 ? "user" : "assistant",
		    cv.msgs[i].content) != 0) {
			conv_clear(&cv);
			fprintf(stderr, "ollmctl: out of memory\n");
			return EX_OSERR;
		}
	}
	/* The conversation's model and system win over the config file's, not over -m and -s. */
	if (!ch->model_given && cv.model != NULL) {
		free(ch->model);
		ch->model = strdup(cv.model);
	}
	if (!ch->system_given && cv.system != NULL) {
		free(ch->system);
		ch->system = strdup(cv.system);
	}
	conv_clear(&cv);
	return EX_OK;
}

/* chat: parse the options, then a REPL, one prompt, or one message from stdin. */
int
cmd_chat(int argc, char **argv)
{
	static const struct option longopts[] = {
		{ "model", required_argument, NULL, 'm' },
		{ "system", required_argument, NULL, 's' },
		{ "max-tokens", required_argument, NULL, 'n' },
		{ "temperature", required_argument, NULL, 't' },
		{ "no-stream", no_argument, NULL, 'N' },
		{ "tag", required_argument, NULL, 'g' },
		{ "continue", no_argument, NULL, 'c' },
		{ "cid", required_argument, NULL, 'i' },
		{ "no-save", no_argument, NULL, 'X' },
		{ NULL, 0, NULL, 0 }
	};
	struct sigaction sa;
	struct chat ch;
	const char *cid = NULL;
	char *prompt = NULL;
	int64_t n;
	int c, r, resume = 0;

	memset(&ch, 0, sizeof ch);
	ch.save = 1;
	ollm_chat_opts_init(&ch.opts);
	if ((r = chat_config(&ch)) != EX_OK)
		goto out;
	while ((c = getopt_long(argc, argv, "m:s:c", longopts, NULL)) != -1) {
		switch (c) {
		case 'c':
			resume = 1;
			break;
		case 'i':
			if (!conv_valid_id(optarg)) {
				fprintf(stderr, "ollmctl chat: --cid takes 1 to 64 letters, digits, "
				    "'.', '_' or '-' (not starting with '.'), not \"%s\"\n", optarg);
				r = EX_USAGE;
				goto out;
			}
			cid = optarg;
			break;
		case 'X':
			ch.save = 0;
			break;
		case 'm':
			free(ch.model);
			ch.model = strdup(optarg);
			ch.model_given = 1;
			break;
		case 's':
			free(ch.system);
			ch.system = strdup(optarg);
			ch.system_given = 1;
			break;
		case 'n':
			if (parse_int(optarg, 1, INT32_MAX, &n) != 0) {
				fprintf(stderr, "ollmctl chat: --max-tokens takes a number "
				    "of 1 or more, not \"%s\"\n", optarg);
				r = EX_USAGE;
				goto out;
			}
			ch.opts.max_tokens = n;
			break;
		case 't':
			if (parse_double(optarg, 0, 1e6, &ch.opts.temperature) != 0) {
				fprintf(stderr, "ollmctl chat: --temperature takes a number "
				    "of 0 or more, not \"%s\"\n", optarg);
				r = EX_USAGE;
				goto out;
			}
			break;
		case 'N':
			ch.opts.stream = 0;
			break;
		case 'g':
			ch.opts.tag = optarg;
			break;
		default:
			fprintf(stderr, "usage: ollmctl chat [-m MODEL] [-s SYSTEM] "
			    "[--max-tokens N] [--temperature T] [--no-stream] [--tag TAG]\n"
			    "                    [-c | --cid ID] [--no-save] [PROMPT...]\n");
			r = EX_USAGE;
			goto out;
		}
	}
	if (resume && cid != NULL) {
		fprintf(stderr, "ollmctl chat: -c and --cid exclude each other\n");
		r = EX_USAGE;
		goto out;
	}
	if (optind < argc && (prompt = chat_join(argc - optind, argv + optind)) == NULL) {
		fprintf(stderr, "ollmctl: out of memory\n");
		r = EX_OSERR;
		goto out;
	}
	if ((resume || cid != NULL) && (r = chat_continue(&ch, cid)) != EX_OK)
		goto out;
	ch.repl = prompt == NULL && isatty(STDIN_FILENO);
	ch.colour = isatty(STDOUT_FILENO) && (getenv("NO_COLOR") == NULL ||
	    *getenv("NO_COLOR") == '\0');
	ch.last_char = -1;

	memset(&sa, 0, sizeof sa);
	sa.sa_handler = chat_sigint_handler;
	sigemptyset(&sa.sa_mask);
	sa.sa_flags = 0;        /* no SA_RESTART: a wait ends at once */
	sigaction(SIGINT, &sa, NULL);

	if ((r = ollmctl_connect(&ch.conn)) != EX_OK)
		goto out;
	ollm_set_status_cb(ch.conn, chat_status_cb, &ch);
	if (prompt != NULL)
		r = chat_once(&ch, prompt);
	else
		r = ch.repl ? chat_repl(&ch) : chat_pipe(&ch);

out:
	free(prompt);
	ollm_free(ch.conn);
	chat_drop_turns(&ch, ch.n_turns);
	free(ch.turns);
	free(ch.reply.p);
	free(ch.paste.p);
	free(ch.last_user);
	free(ch.model);
	free(ch.system);
	config_clear(&ch.cfg);
	json_decref(ch.tool_calls);
	return r;
}
