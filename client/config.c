/* config.c: ollmctl's own configuration file: defaults for chat. */
#include "config.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "client/ollmctl.h"

/* Where the file is: $XDG_CONFIG_HOME/ollmctl/config, else ~/.config/ollmctl/config. */
int
config_path(char *buf, size_t len)
{
	const char *env;
	int n;

	if ((env = getenv("XDG_CONFIG_HOME")) != NULL && *env == '/')
		n = snprintf(buf, len, "%s/ollmctl/config", env);
	else if ((env = getenv("HOME")) != NULL && *env == '/')
		n = snprintf(buf, len, "%s/.config/ollmctl/config", env);
	else
		return -1;
	return n > 0 && (size_t)n < len ? 0 : -1;
}

/* Free what a configuration holds and zero it. */
void
config_clear(struct ollmctl_config *cfg)
{
	free(cfg->model);
	free(cfg->tag);
	free(cfg->system);
	memset(cfg, 0, sizeof *cfg);
}

/* Replace a string setting with a copy of v; -1 when out of memory. */
static int
config_set(char **dst, const char *v)
{
	char *p = strdup(v);

	if (p == NULL)
		return -1;
	free(*dst);
	*dst = p;
	return 0;
}

/*
 * Read path: lines "key = value" (value optionally in double quotes), blank
 * lines and lines starting with # ignored. Keys: model, tag, system,
 * max_tokens. A missing file is no error. Each problem goes to err as
 * "PATH:LINE: message"; -1 when there was any.
 */
int
config_load(const char *path, struct ollmctl_config *cfg, FILE *err)
{
	char line[8192], *key, *val, *end;
	int64_t n;
	int lineno = 0, bad = 0;
	size_t len;
	FILE *f;

	if ((f = fopen(path, "r")) == NULL) {
		if (errno == ENOENT || errno == ENOTDIR)
			return 0;
		fprintf(err, "%s: %s\n", path, strerror(errno));
		return -1;
	}
	while (fgets(line, sizeof line, f) != NULL) {
		lineno++;
		len = strlen(line);
		if (len == sizeof line - 1 && line[len - 1] != '\n') {
			fprintf(err, "%s:%d: line too long\n", path, lineno);
			bad = 1;
			break;
		}
		while (len > 0 && (line[len - 1] == '\n' || line[len - 1] == '\r' ||
		    line[len - 1] == ' ' || line[len - 1] == '\t'))
			line[--len] = '\0';
		key = line + strspn(line, " \t");
		if (*key == '\0' || *key == '#')
			continue;
		if ((val = strchr(key, '=')) == NULL) {
			fprintf(err, "%s:%d: expected key = value\n", path, lineno);
			bad = 1;
			continue;
		}
		end = val;
		while (end > key && (end[-1] == ' ' || end[-1] == '\t'))
			end--;
		*end = '\0';
		val++;
		val += strspn(val, " \t");
		len = strlen(val);
		if (len >= 2 && val[0] == '"' && val[len - 1] == '"') {
			val[len - 1] = '\0';
			val++;
		}
		if (strcmp(key, "model") == 0)
			bad |= config_set(&cfg->model, val) != 0;
		else if (strcmp(key, "tag") == 0)
			bad |= config_set(&cfg->tag, val) != 0;
		else if (strcmp(key, "system") == 0)
			bad |= config_set(&cfg->system, val) != 0;
		else if (strcmp(key, "max_tokens") == 0) {
			if (parse_int(val, 1, INT32_MAX, &n) != 0) {
				fprintf(err, "%s:%d: max_tokens takes a number of 1 or more, "
				    "not \"%s\"\n", path, lineno, val);
				bad = 1;
			} else
				cfg->max_tokens = n;
		} else {
			fprintf(err, "%s:%d: unknown key \"%s\" (model, tag, system, "
			    "max_tokens)\n", path, lineno, key);
			bad = 1;
		}
	}
	if (ferror(f)) {
		fprintf(err, "%s: %s\n", path, strerror(errno));
		bad = 1;
	}
	fclose(f);
	return bad ? -1 : 0;
}
