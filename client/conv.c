/* conv.c: saved conversations of ollmctl chat, and ollmctl conversations. */
#include "config.h"

#include <sys/types.h>
#include <sys/stat.h>

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <limits.h>
#include <pwd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sysexits.h>
#include <time.h>
#include <unistd.h>

#include <jansson.h>

#include "client/ollmctl.h"

#define CONV_FIRST_WORDS 48                     /* bytes of the first message listed */

/*
 * Where conversations live: $XDG_STATE_HOME/ollmctl/conversations, else
 * ~/.local/state/ollmctl/conversations; created (mode 0700) when create is set.
 */
int
conv_dir(char *buf, size_t len, int create)
{
	const char *base, *home;
	struct passwd *pw;
	char *p;
	int n;

	if ((base = getenv("XDG_STATE_HOME")) != NULL && *base == '/')
		n = snprintf(buf, len, "%s/ollmctl/conversations", base);
	else {
		if ((home = getenv("HOME")) == NULL || *home != '/') {
			if ((pw = getpwuid(getuid())) == NULL)
				return -1;
			home = pw->pw_dir;
		}
		n = snprintf(buf, len, "%s/.local/state/ollmctl/conversations", home);
	}
	if (n <= 0 || (size_t)n >= len)
		return -1;
	if (!create)
		return 0;
	for (p = buf + 1; *p != '\0'; p++) {
		if (*p != '/')
			continue;
		*p = '\0';
		if (mkdir(buf, 0700) == -1 && errno != EEXIST)
			return -1;
		*p = '/';
	}
	if (mkdir(buf, 0700) == -1 && errno != EEXIST)
		return -1;
	return 0;
}

/* A conversation id: 1 to 64 of [A-Za-z0-9._-], not starting with a dot. */
int
conv_valid_id(const char *id)
{
	size_t n = strspn(id, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
	    "0123456789._-");

	return n > 0 && n <= 64 && id[n] == '\0' && id[0] != '.' && strcmp(id, "last") != 0;
}

/* A fresh id: the local time and a few random bits, e.g. 20261129-223012-4f1a. */
void
conv_new_id(char *buf, size_t len)
{
	struct timespec ts;
	struct tm tm;
	char when[32] = "conversation";
	unsigned int r;

	clock_gettime(CLOCK_REALTIME, &ts);
	if (localtime_r(&ts.tv_sec, &tm) != NULL)
		strftime(when, sizeof when, "%Y%m%d-%H%M%S", &tm);
	r = (unsigned int)(ts.tv_nsec ^ (getpid() << 8)) & 0xffff;
	snprintf(buf, len, "%s-%04x", when, r);
}

/* The path of a file in the conversations directory. */
static int
conv_path(const char *name, const char *suffix, char *buf, size_t len, int create)
{
	char dir[PATH_MAX];
	int n;

	if (conv_dir(dir, sizeof dir, create) != 0)
		return -1;
	n = snprintf(buf, len, "%s/%s%s", dir, name, suffix);
	return n > 0 && (size_t)n < len ? 0 : -1;
}

/* Write a file whole and private: a temp file, then rename over the old one. */
static int
conv_write(const char *path, const char *data, size_t len, char *err, size_t errlen)
{
	char tmp[PATH_MAX + 16];
	ssize_t n;
	size_t off = 0;
	int fd;

	snprintf(tmp, sizeof tmp, "%s.%ld.tmp", path, (long)getpid());
	if ((fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600)) == -1) {
		snprintf(err, errlen, "%s: %s", tmp, strerror(errno));
		return -1;
	}
	while (off < len) {
		if ((n = write(fd, data + off, len - off)) == -1) {
			if (errno == EINTR)
				continue;
			snprintf(err, errlen, "%s: %s", tmp, strerror(errno));
			close(fd);
			unlink(tmp);
			return -1;
		}
		off += (size_t)n;
	}
	if (close(fd) == -1 || rename(tmp, path) == -1) {
		snprintf(err, errlen, "%s: %s", path, strerror(errno));
		unlink(tmp);
		return -1;
	}
	return 0;
}

/* Save a conversation as $dir/ID.json and make it the last one. */
int
conv_save(const struct conv *cv, char *err, size_t errlen)
{
	char path[PATH_MAX];
	json_t *o, *msgs;
	char *text;
	size_t i;
	int r;

	if (conv_path(cv->id, ".json", path, sizeof path, 1) != 0) {
		snprintf(err, errlen, "cannot create the conversations directory");
		return -1;
	}
	msgs = json_array();
	for (i = 0; i < cv->n; i++)
		json_array_append_new(msgs, json_pack("{s:s, s:s}", "role", cv->msgs[i].role,
		    "content", cv->msgs[i].content));
	o = json_pack("{s:s, s:I, s:I, s:s?, s:s?, s:o}", "id", cv->id,
	    "created", (json_int_t)cv->created, "updated", (json_int_t)time(NULL),
	    "model", cv->model, "system", cv->system, "messages", msgs);
	if (o == NULL || (text = json_dumps(o, JSON_INDENT(1))) == NULL) {
		json_decref(o);
		snprintf(err, errlen, "out of memory");
		return -1;
	}
	json_decref(o);
	r = conv_write(path, text, strlen(text), err, errlen);
	free(text);
	if (r == 0 && conv_path("last", "", path, sizeof path, 1) == 0)
		r = conv_write(path, cv->id, strlen(cv->id), err, errlen);
	return r;
}

/* The id of the conversation saved last; -1 when there is none. */
int
conv_last(char *id, size_t len)
{
	char path[PATH_MAX];
	FILE *f;
	size_t n;

	if (conv_path("last", "", path, sizeof path, 0) != 0 || (f = fopen(path, "r")) == NULL)
		return -1;
	n = fread(id, 1, len - 1, f);
	fclose(f);
	id[n] = '\0';
	id[strcspn(id, "\n")] = '\0';
	return conv_valid_id(id) ? 0 : -1;
}

/* Free what a loaded conversation holds. */
void
conv_clear(struct conv *cv)
{
	size_t i;

	for (i = 0; i < cv->n; i++) {
		free(cv->msgs[i].role);
		free(cv->msgs[i].content);
	}
	free(cv->msgs);
	free(cv->model);
	free(cv->system);
	memset(cv, 0, sizeof *cv);
}

/* Read a conversation file into cv; 1 when it does not exist, -1 with err when unreadable. */
static int
conv_read(const char *path, struct conv *cv, char *err, size_t errlen)
{
	json_error_t je;
	json_t *o, *msgs, *m;
	const char *s;
	size_t i;

	memset(cv, 0, sizeof *cv);
	if ((o = json_load_file(path, 0, &je)) == NULL) {
		if (access(path, F_OK) == -1 && errno == ENOENT)
			return 1;
		snprintf(err, errlen, "%s:%d: %s", path, je.line, je.text);
		return -1;
	}
	if (!json_is_object(o) || !json_is_array(msgs = json_object_get(o, "messages"))) {
		snprintf(err, errlen, "%s: not a conversation (no messages array)", path);
		json_decref(o);
		return -1;
	}
	if ((s = json_string_value(json_object_get(o, "id"))) != NULL)
		snprintf(cv->id, sizeof cv->id, "%s", s);
	cv->created = json_integer_value(json_object_get(o, "created"));
	cv->updated = json_integer_value(json_object_get(o, "updated"));
	if ((s = json_string_value(json_object_get(o, "model"))) != NULL)
		cv->model = strdup(s);
	if ((s = json_string_value(json_object_get(o, "system"))) != NULL)
		cv->system = strdup(s);
	if ((cv->msgs = calloc(json_array_size(msgs) + 1, sizeof *cv->msgs)) == NULL) {
		json_decref(o);
		snprintf(err, errlen, "out of memory");
		return -1;
	}
	json_array_foreach(msgs, i, m) {
		const char *role = json_string_value(json_object_get(m, "role"));
		const char *content = json_string_value(json_object_get(m, "content"));

		if (role == NULL || content == NULL ||
		    (strcmp(role, "user") != 0 && strcmp(role, "assistant") != 0)) {
			snprintf(err, errlen, "%s: messages[%zu]: expected a user or assistant "
			    "message with text", path, i);
			json_decref(o);
			conv_clear(cv);
			return -1;
		}
		cv->msgs[cv->n].role = strdup(role);
		cv->msgs[cv->n].content = strdup(content);
		cv->n++;
	}
	json_decref(o);
	return 0;
}

/* Load conversation id; 1 when it does not exist yet. */
int
conv_load(const char *id, struct conv *cv, char *err, size_t errlen)
{
	char path[PATH_MAX];
	int r;

	if (conv_path(id, ".json", path, sizeof path, 0) != 0) {
		snprintf(err, errlen, "cannot find the conversations directory");
		return -1;
	}
	if ((r = conv_read(path, cv, err, errlen)) == 0)
		snprintf(cv->id, sizeof cv->id, "%s", id);
	return r;
}

struct conv_entry {
	char id[72];
	int64_t updated;
	size_t turns;
	char first[CONV_FIRST_WORDS * 4 + 8];
};

/* Newest first. */
static int
conv_entry_cmp(const void *a, const void *b)
{
	const struct conv_entry *x = a, *y = b;

	if (x->updated != y->updated)
		return x->updated < y->updated ? 1 : -1;
	return strcmp(y->id, x->id);
}

/* The first words of s on one line, cut at a character boundary. */
static void
conv_first_words(char *out, size_t len, const char *s)
{
	size_t o = 0, i = 0;

	s += strspn(s, " \t\n");
	while (s[i] != '\0' && i < CONV_FIRST_WORDS && o + 5 < len) {
		unsigned char ch = (unsigned char)s[i];
		out[o++] = ch == '\n' || ch == '\t' || ch == '\r' ? ' ' : (char)ch;
		i++;
	}
	while (i > 0 && o > 0 && ((unsigned char)s[i] & 0xc0) == 0x80) {
		o--;            /* do not end inside a UTF-8 sequence */
		i--;
	}
	out[o] = '\0';
	if (s[i] != '\0')
		snprintf(out + o, len - o, "...");
}

/* conversations: the saved conversations, newest first. */
int
cmd_conversations(int argc, char **argv)
{
	struct conv_entry *list = NULL, *grown;
	struct dirent *de;
	struct conv cv;
	char dir[PATH_MAX], path[PATH_MAX + 300], when[32], err[512];
	size_t n = 0, cap = 0, i, k, idw = 2;
	DIR *d;

	if (argc > 1) {
		fprintf(stderr, "ollmctl conversations: unexpected argument \"%s\"\n"
		    "usage: ollmctl conversations\n", argv[1]);
		return EX_USAGE;
	}
	if (conv_dir(dir, sizeof dir, 0) != 0 || (d = opendir(dir)) == NULL) {
		printf("no saved conversations\n");
		return EX_OK;
	}
	while ((de = readdir(d)) != NULL) {
		size_t len = strlen(de->d_name);
		if (len <= 5 || strcmp(de->d_name + len - 5, ".json") != 0)
			continue;
		snprintf(path, sizeof path, "%s/%s", dir, de->d_name);
		if (conv_read(path, &cv, err, sizeof err) != 0) {
			fprintf(stderr, "ollmctl: %s\n", err);
			continue;
		}
		if (n == cap) {
			cap = cap ? cap * 2 : 32;
			if ((grown = realloc(list, cap * sizeof *list)) == NULL) {
				conv_clear(&cv);
				break;
			}
			list = grown;
		}
		snprintf(list[n].id, sizeof list[n].id, "%.*s", (int)(len - 5), de->d_name);
		list[n].updated = cv.updated;
		list[n].turns = 0;
		list[n].first[0] = '\0';
		for (k = 0; k < cv.n; k++) {
			if (strcmp(cv.msgs[k].role, "user") != 0)
				continue;
			if (list[n].turns++ == 0)
				conv_first_words(list[n].first, sizeof list[n].first, cv.msgs[k].content);
		}
		if (strlen(list[n].id) > idw)
			idw = strlen(list[n].id);
		n++;
		conv_clear(&cv);
	}
	closedir(d);
	if (n == 0) {
		printf("no saved conversations\n");
		free(list);
		return EX_OK;
	}
	qsort(list, n, sizeof *list, conv_entry_cmp);
	printf("%-*s  %-16s  %5s  %s\n", (int)idw, "ID", "UPDATED", "TURNS", "FIRST WORDS");
	for (i = 0; i < n; i++) {
		time_t t = (time_t)list[i].updated;
		struct tm tm;

		if (localtime_r(&t, &tm) == NULL || strftime(when, sizeof when, "%Y-%m-%d %H:%M", &tm) == 0)
			snprintf(when, sizeof when, "-");
		printf("%-*s  %-16s  %5zu  %s\n", (int)idw, list[i].id, when, list[i].turns,
		    list[i].first);
	}
	free(list);
	return EX_OK;
}
