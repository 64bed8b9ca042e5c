/* ollmctl: the command-line client of openllmd (private declarations). */
#ifndef OLLMCTL_H
#define OLLMCTL_H

#include <stdint.h>
#include <stdio.h>
#include <time.h>

#include "client/ollm.h"

/* ollmctl.c */
extern const char *ollmctl_socket;
int ollmctl_connect(struct ollm **);
int ollmctl_status(struct ollm *, int);
void ollmctl_report(struct ollm *, int);
int ollmctl_read(const char *, char **, size_t *);

/* chat.c */
int cmd_chat(int, char **);

/* conv.c: a saved conversation (user and assistant messages, oldest first) */
struct conv_msg {
	char *role;
	char *content;
};

struct conv {
	char id[72];
	int64_t created;
	int64_t updated;
	char *model;                    /* NULL: the daemon's default */
	char *system;                   /* NULL: none */
	struct conv_msg *msgs;
	size_t n;
};

int conv_dir(char *, size_t, int);
int conv_valid_id(const char *);
void conv_new_id(char *, size_t);
int conv_save(const struct conv *, char *, size_t);
int conv_last(char *, size_t);
int conv_load(const char *, struct conv *, char *, size_t);
void conv_clear(struct conv *);
int cmd_conversations(int, char **);

/* logs.c */
int cmd_logs(int, char **);

/* top.c */
int cmd_top(int, char **);

/* render.c */
struct render_table;
void render_thousands(char *, size_t, uint64_t);
void render_money(char *, size_t, double);
void render_duration(char *, size_t, int64_t);
void render_time(char *, size_t, int64_t);
void render_error(char *, size_t, const struct ollm_error *);
void render_usage(char *, size_t, const struct ollm_done *);
const char *render_user(char *, size_t, const char *);
void render_stats(FILE *, const struct ollm_stats *, const char *);
int render_stats_json(FILE *, const struct ollm_stats *);
void render_models(FILE *, const struct ollm_models *);
void render_status(char *, size_t, const struct ollm_status *);

/* parse.c */
int parse_since(const char *, time_t, int64_t *);
int parse_int(const char *, int64_t, int64_t, int64_t *);
int parse_double(const char *, double, double, double *);

#endif
