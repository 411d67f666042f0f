/*
 * log.h - one key=value line per event, to stderr or syslog.
 *
 * Callers escape client-supplied text with log_escape() before logging it;
 * AUTH data is never logged.  Thread-safe: each call writes one whole line.
 */
#ifndef PORTIER_LOG_H
#define PORTIER_LOG_H

#include <stddef.h>
#include "util.h"

enum log_level {
	LOG_LEVEL_CRIT,
	LOG_LEVEL_ERR,
	LOG_LEVEL_WARN,
	LOG_LEVEL_INFO,
	LOG_LEVEL_DEBUG,
};

/* target: "stderr" or "syslog"; returns false for anything else. */
bool log_init(const char *target);
void log_set_debug(bool on);
void log_msg(enum log_level level, const char *fmt, ...) PRINTF_LIKE(2, 3);
/*
 * log_batch - an event loop thread may hold its info and debug lines (stderr
 * only) and write them with log_flush at the end of each loop turn: one
 * write(2) for many lines.  Warnings and worse flush at once.
 */
void log_batch(bool on);
void log_flush(void);

#define log_info(...) log_msg(LOG_LEVEL_INFO, __VA_ARGS__)
#define log_warn(...) log_msg(LOG_LEVEL_WARN, __VA_ARGS__)
#define log_err(...) log_msg(LOG_LEVEL_ERR, __VA_ARGS__)
#define log_debug(...) log_msg(LOG_LEVEL_DEBUG, __VA_ARGS__)

/*
 * log_escape - copy at most srclen bytes of client text into dst (size dstsize),
 * replacing quotes, backslashes, control and non-ASCII bytes with \xHH, and
 * truncating with "..." when it does not fit.  Always NUL-terminates; returns dst.
 */
char *log_escape(char *dst, size_t dstsize, const char *src, size_t srclen);

#endif
