/*
 * log.c - event logging to stderr or syslog (see log.h).
 *
 * One write(2) per line on stderr so lines from several threads never
 * interleave; an event loop thread may batch its lines instead (log_batch),
 * each write(2) still whole lines and at most PIPE_BUF octets, which a pipe
 * writes atomically.  Never logs anything it was not handed already escaped.
 */
#include "config.h"

#include <limits.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>
#include <syslog.h>
#include <time.h>
#include <unistd.h>

#include "log.h"

static bool log_syslog;
static long log_pid;	/* cached: one getpid(2) per line adds up */
static bool log_debug_on;

/* A loop thread's lines since its turn began (log_batch). */
static _Thread_local bool batch_on;
static _Thread_local size_t batch_len;
static _Thread_local char batch[PIPE_BUF];

/* The "YYYY-MM-DDTHH:MM:SS" of the second last formatted, per thread. */
static _Thread_local time_t stamp_sec = -1;
static _Thread_local char stamp[32];
static _Thread_local size_t stamp_len;

static const char *const level_names[] = {
	[LOG_LEVEL_CRIT] = "crit",
	[LOG_LEVEL_ERR] = "error",
	[LOG_LEVEL_WARN] = "warning",
	[LOG_LEVEL_INFO] = "info",
	[LOG_LEVEL_DEBUG] = "debug",
};

static const int syslog_prio[] = {
	[LOG_LEVEL_CRIT] = LOG_CRIT,
	[LOG_LEVEL_ERR] = LOG_ERR,
	[LOG_LEVEL_WARN] = LOG_WARNING,
	[LOG_LEVEL_INFO] = LOG_INFO,
	[LOG_LEVEL_DEBUG] = LOG_DEBUG,
};

/* log_init - choose the log target */
bool
log_init(const char *target)
{
	log_pid = (long)getpid();
	if (target == NULL || strcmp(target, "stderr") == 0) {
		log_syslog = false;
		return true;
	}
	if (strcmp(target, "syslog") == 0) {
		openlog("portier", LOG_PID | LOG_NDELAY, LOG_MAIL);
		log_syslog = true;
		return true;
	}
	return false;
}

/* log_set_debug - enable or disable debug lines */
void
log_set_debug(bool on)
{
	log_debug_on = on;
}

/* log_msg - write one event line */
void
log_msg(enum log_level level, const char *fmt, ...)
{
	char line[4096];
	size_t off = 0;
	va_list ap;
	int n;

	if (level == LOG_LEVEL_DEBUG && !log_debug_on)
		return;
	if (!log_syslog) {
		struct timespec ts;

		clock_gettime(CLOCK_REALTIME, &ts);
		if (ts.tv_sec != stamp_sec) {
			struct tm tm;

			gmtime_r(&ts.tv_sec, &tm);
			stamp_len = strftime(stamp, sizeof(stamp), "%Y-%m-%dT%H:%M:%S", &tm);
			stamp_sec = ts.tv_sec;
		}
		memcpy(line, stamp, stamp_len);
		off = stamp_len;
		n = snprintf(line + off, sizeof(line) - off, ".%03ldZ portier[%ld]: %s: ",
		    ts.tv_nsec / 1000000L, log_pid ? log_pid : (long)getpid(), level_names[level]);
		if (n > 0)
			off += (size_t)n;
	}
	va_start(ap, fmt);
	n = vsnprintf(line + off, sizeof(line) - off - 1, fmt, ap);
	va_end(ap);
	if (n < 0)
		return;
	off += (size_t)n;
	if (off > sizeof(line) - 2)
		off = sizeof(line) - 2;
	if (log_syslog) {
		line[off] = '\0';
		syslog(syslog_prio[level], "%s: %s", level_names[level], line);
		return;
	}
	line[off++] = '\n';
	if (batch_on && level >= LOG_LEVEL_INFO) {
		if (batch_len + off > sizeof(batch))
			log_flush();
		if (off <= sizeof(batch)) {
			memcpy(batch + batch_len, line, off);
			batch_len += off;
			return;
		}
	}
	/* Warnings and worse go out at once, after what came before them. */
	log_flush();
	if (write(STDERR_FILENO, line, off) < 0) {
		/* nowhere left to report it */
	}
}

/* log_batch - on: this thread's info and debug lines wait for log_flush */
void
log_batch(bool on)
{
	if (!on)
		log_flush();
	batch_on = on;
}

/* log_flush - write this thread's waiting lines */
void
log_flush(void)
{
	if (batch_len == 0)
		return;
	if (write(STDERR_FILENO, batch, batch_len) < 0) {
		/* nowhere left to report it */
	}
	batch_len = 0;
}

/* log_escape_width - octets log_escape writes for c */
static size_t
log_escape_width(unsigned char c)
{
	return (c < 0x20 || c >= 0x7f || c == '"' || c == '\\') ? 4 : 1;
}

/* log_escape - make client text safe for a log line */
char *
log_escape(char *dst, size_t dstsize, const char *src, size_t srclen)
{
	static const char hex[] = "0123456789abcdef";
	size_t o = 0, i, full = 0, room;

	if (dstsize == 0)
		return dst;
	for (i = 0; i < srclen; i++)
		full += log_escape_width((unsigned char)src[i]);
	/* Keep room for "..." only when the whole text will not fit. */
	room = full < dstsize ? dstsize : (dstsize >= 4 ? dstsize - 3 : 0);
	for (i = 0; i < srclen; i++) {
		unsigned char c = (unsigned char)src[i];
		size_t need = log_escape_width(c);

		if (o + need + 1 > room)
			break;
		if (need == 1) {
			dst[o++] = (char)c;
		} else {
			dst[o++] = '\\';
			dst[o++] = 'x';
			dst[o++] = hex[c >> 4];
			dst[o++] = hex[c & 15];
		}
	}
	if (i < srclen && o + 4 <= dstsize) {
		memcpy(dst + o, "...", 3);
		o += 3;
	}
	dst[o] = '\0';
	return dst;
}
