/* log.c: levelled logging to stderr (journald aware) or syslog. */
#ifndef OLLM_LOG_H
#define OLLM_LOG_H

#include <stdarg.h>

enum log_level { LOG_LEVEL_ERROR, LOG_LEVEL_WARN, LOG_LEVEL_INFO, LOG_LEVEL_DEBUG };

void log_init(const char *ident, int foreground);
void log_set_level(enum log_level);
enum log_level log_get_level(void);
int log_level_parse(const char *, enum log_level *);
void log_error(const char *, ...) __attribute__((format(printf, 1, 2)));
void log_warn(const char *, ...) __attribute__((format(printf, 1, 2)));
void log_info(const char *, ...) __attribute__((format(printf, 1, 2)));
void log_debug(const char *, ...) __attribute__((format(printf, 1, 2)));
void fatal(const char *, ...) __attribute__((format(printf, 1, 2), noreturn));

#endif
