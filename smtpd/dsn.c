/*
 * dsn.c - build RFC 3464 delivery status notifications (see dsn.h).
 *
 * Every value that comes from a client or a backend goes through dsn_wrap,
 * which keeps printable US-ASCII only, folds at spaces and cuts over-long
 * words, so no input can add a header line, a bare CR/LF or a NUL, or push a
 * line past RFC 5322's 998 octets.  The original header block keeps its
 * bytes (8-bit included, then declared 8bit) with line ends normalised.
 * The parts are built first and the MIME boundary chosen to occur in none of
 * them.  Must never do I/O and never report to the null sender.
 */
#include "config.h"

#include <assert.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#include "buf.h"
#include "dsn.h"
#include "util.h"

#define DSN_WRAP	78	/* fold lines longer than this where there is a space */
#define DSN_WORD_MAX	900	/* a word longer than this is cut (plus "...") */
#define DSN_VALUE_MAX	4000	/* a value with more non-space octets than this is cut */
#define DSN_LINE_MAX	990	/* original header lines are cut here */
#define DSN_HEADERS_MAX	65536	/* original header block is cut here (at a line end) */

/* Uniquifies Message-IDs and boundaries made in the same microsecond. */
static atomic_ulong dsn_seq;

/* dsn_owed - never bounce to the null sender (RFC 5321 6.1) */
bool
dsn_owed(const char *sender)
{
	return sender != NULL && *sender != '\0' && strcmp(sender, "<>") != 0;
}

/* dsn_clean - printable US-ASCII copy of s: controls become spaces, 8-bit bytes '?' */
static void
dsn_clean(struct buf *out, const char *s)
{
	buf_reset(out);
	for (; *s; s++) {
		unsigned char c = (unsigned char)*s;

		if (c < 0x20 || c == 0x7f)
			buf_putc(out, ' ');
		else if (c >= 0x80)
			buf_putc(out, '?');
		else
			buf_putc(out, (char)c);
	}
}

/*
 * dsn_wrap - write prefix then value, folded at spaces after DSN_WRAP columns
 * with cont opening each continuation line (" " in header fields), then CRLF.
 * Words past DSN_WORD_MAX and values past DSN_VALUE_MAX end in "...".
 */
static void
dsn_wrap(struct buf *out, const char *prefix, const char *value, const char *cont)
{
	struct buf v;
	const char *p, *end;
	size_t col = strlen(prefix), total = 0, wlen, shown;
	bool bol = true;	/* nothing after the prefix on this line yet */

	buf_init(&v);
	dsn_clean(&v, value);
	buf_puts(out, prefix);
	for (p = v.len ? v.data : "", end = p + v.len; p < end; p += wlen) {
		while (p < end && *p == ' ')
			p++;
		if (p == end)
			break;
		for (wlen = 0; p + wlen < end && p[wlen] != ' '; wlen++)
			;
		shown = wlen > DSN_WORD_MAX ? DSN_WORD_MAX : wlen;
		if (total + shown > DSN_VALUE_MAX) {
			buf_puts(out, bol ? "..." : " ...");
			break;
		}
		if (!bol && col + 1 + shown > DSN_WRAP) {
			buf_puts(out, "\r\n");
			buf_puts(out, cont);
			col = strlen(cont);
			bol = true;
		}
		if (!bol) {
			buf_putc(out, ' ');
			col++;
		}
		buf_append(out, p, shown);
		if (shown < wlen) {
			buf_puts(out, "...");
			col += 3;
		}
		col += shown;
		total += shown;
		bol = false;
	}
	buf_puts(out, "\r\n");
	buf_free(&v);
}

/* dsn_field - one header-style field "Name: value", folded; nothing if value is NULL or empty */
static void
dsn_field(struct buf *out, const char *name, const char *value)
{
	char prefix[64];
	int n;

	if (value == NULL || *value == '\0')
		return;
	n = snprintf(prefix, sizeof(prefix), "%s: ", name);
	assert(n > 0 && (size_t)n < sizeof(prefix));
	dsn_wrap(out, prefix, value, " ");
}

/* dsn_fieldf - dsn_field with a formatted value */
static void PRINTF_LIKE(3, 4)
dsn_fieldf(struct buf *out, const char *name, const char *fmt, ...)
{
	va_list ap;
	struct buf v;
	int n;

	buf_init(&v);
	va_start(ap, fmt);
	n = vsnprintf(NULL, 0, fmt, ap);
	va_end(ap);
	if (n < 0)
		fatal("dsn_fieldf: bad format");
	buf_reserve(&v, (size_t)n);
	va_start(ap, fmt);
	vsnprintf(v.data, (size_t)n + 1, fmt, ap);
	va_end(ap);
	v.len = (size_t)n;
	dsn_field(out, name, v.data);
	buf_free(&v);
}

/* dsn_date - RFC 5322 date-time of t in local time, locale independent */
static void
dsn_date(char *dst, size_t size, time_t t)
{
	static const char *const days[] = { "Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat" };
	static const char *const months[] = { "Jan", "Feb", "Mar", "Apr", "May", "Jun",
	    "Jul", "Aug", "Sep", "Oct", "Nov", "Dec" };
	struct tm tm;
	long off;
	int n;

	localtime_r(&t, &tm);
	off = tm.tm_gmtoff / 60;
	n = snprintf(dst, size, "%s, %02d %s %04d %02d:%02d:%02d %c%02ld%02ld",
	    days[tm.tm_wday], tm.tm_mday, months[tm.tm_mon], tm.tm_year + 1900,
	    tm.tm_hour, tm.tm_min, tm.tm_sec, off < 0 ? '-' : '+',
	    (off < 0 ? -off : off) / 60, (off < 0 ? -off : off) % 60);
	if (n < 0 || (size_t)n >= size)
		fatal("dsn_date: buffer too small");
}

/* dsn_status - Status: ecode if well-formed and permanent (5.x.x), else 5.0.0 */
static void
dsn_status(char *dst, size_t size, const struct dsn_rcpt *r)
{
	const char *e = r->ecode;
	size_t a, b;

	if (e != NULL && e[0] == '5' && e[1] == '.') {
		a = strspn(e + 2, "0123456789");
		if (a >= 1 && a <= 3 && e[2 + a] == '.') {
			b = strspn(e + 3 + a, "0123456789");
			if (b >= 1 && b <= 3 && e[3 + a + b] == '\0') {
				str_copy(dst, e, size);
				return;
			}
		}
	}
	str_copy(dst, "5.0.0", size);
}

/* dsn_diag - "<code>[ <ecode>] <text>": the backend's reply as it gave it */
static char *
dsn_diag(const struct dsn_rcpt *r)
{
	return xasprintf("%d%s%s %s", r->code, r->ecode ? " " : "", r->ecode ? r->ecode : "",
	    r->text ? r->text : "");
}

/* dsn_human - the text/plain part: what happened, in words */
static void
dsn_human(struct buf *out, const struct dsn_info *info)
{
	struct buf line;
	size_t i;

	buf_init(&line);
	buf_printf(&line, "This is the mail system at host %s.", info->hostname);
	dsn_wrap(out, "", line.data, "");
	buf_puts(out, "\r\n");
	buf_puts(out, "Your message could not be delivered to one or more of its\r\n"
	    "recipients.  The mail system's reply for each is below.\r\n");
	if (info->queue_id != NULL && *info->queue_id != '\0') {
		buf_puts(out, "\r\n");
		dsn_wrap(out, "Queue ID: ", info->queue_id, "    ");
	}
	for (i = 0; i < info->nrcpts; i++) {
		const struct dsn_rcpt *r = &info->rcpts[i];
		char *diag = dsn_diag(r);

		buf_reset(&line);
		if (info->remote_mta != NULL && *info->remote_mta != '\0')
			buf_printf(&line, "<%s>: host %s said: %s", r->addr, info->remote_mta,
			    diag);
		else
			buf_printf(&line, "<%s>: %s", r->addr, diag);
		buf_puts(out, "\r\n");
		dsn_wrap(out, "", line.data, "    ");
		free(diag);
	}
	buf_free(&line);
}

/* dsn_hexval - value of one hex digit, -1 if c is none */
static int
dsn_hexval(char c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'A' && c <= 'F')
		return c - 'A' + 10;
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	return -1;
}

/* dsn_xtext - decode RFC 3461 xtext ("+XX") into out: DSN fields carry it decoded (6.3) */
static void
dsn_xtext(struct buf *out, const char *s)
{
	int hi, lo;

	buf_reset(out);
	buf_puts(out, "");
	for (; *s; s++) {
		if (*s == '+' && (hi = dsn_hexval(s[1])) >= 0 && (lo = dsn_hexval(s[2])) >= 0) {
			buf_putc(out, (char)(hi << 4 | lo));
			s += 2;
		} else
			buf_putc(out, *s);
	}
}

/* dsn_orcpt - Original-Recipient: "type; address", rfc822 assumed without a type */
static void
dsn_orcpt(struct buf *out, const char *orcpt)
{
	const char *semi = strchr(orcpt, ';');
	const char *addr = semi ? semi + 1 : orcpt;
	int tlen = semi ? (int)(semi - orcpt) : 0;
	struct buf dec;

	while (*addr == ' ')
		addr++;
	if (*addr == '\0')
		return;
	while (tlen > 0 && orcpt[tlen - 1] == ' ')
		tlen--;
	buf_init(&dec);
	dsn_xtext(&dec, addr);
	if (semi == NULL || tlen == 0)
		dsn_fieldf(out, "Original-Recipient", "rfc822; %s", dec.data);
	else
		dsn_fieldf(out, "Original-Recipient", "%.*s; %s", tlen, orcpt, dec.data);
	buf_free(&dec);
}

/* dsn_report - the message/delivery-status part: per-message then per-recipient fields */
static void
dsn_report(struct buf *out, const struct dsn_info *info)
{
	char date[64], status[16];
	size_t i;

	/* In RFC 3464's order: envelope id, reporting MTA, arrival, extensions. */
	if (info->envid != NULL) {
		struct buf dec;

		buf_init(&dec);
		dsn_xtext(&dec, info->envid);
		dsn_field(out, "Original-Envelope-Id", dec.data);
		buf_free(&dec);
	}
	dsn_fieldf(out, "Reporting-MTA", "dns; %s", info->hostname);
	if (info->arrival != 0) {
		dsn_date(date, sizeof(date), info->arrival);
		dsn_field(out, "Arrival-Date", date);
	}
	dsn_field(out, "X-Portier-Queue-ID", info->queue_id);
	dsn_fieldf(out, "X-Portier-Sender", "rfc822; %s", info->sender);
	for (i = 0; i < info->nrcpts; i++) {
		const struct dsn_rcpt *r = &info->rcpts[i];
		char *diag = dsn_diag(r);

		buf_puts(out, "\r\n");
		if (r->orcpt != NULL)
			dsn_orcpt(out, r->orcpt);
		dsn_fieldf(out, "Final-Recipient", "rfc822; %s", r->addr);
		buf_puts(out, "Action: failed\r\n");
		dsn_status(status, sizeof(status), r);
		dsn_field(out, "Status", status);
		if (info->remote_mta != NULL && *info->remote_mta != '\0')
			dsn_fieldf(out, "Remote-MTA", "dns; %s", info->remote_mta);
		dsn_fieldf(out, "Diagnostic-Code", "smtp; %s", diag);
		free(diag);
	}
}

/* dsn_headers - original header block: CRLF, no NULs, cut to limits; true if 8-bit */
static bool
dsn_headers(struct buf *out, const char *h, size_t len)
{
	const char *p = h, *end = h + len, *nl;
	bool eight = false;
	size_t n, i, start = out->len;

	while (p < end) {
		nl = memchr(p, '\n', (size_t)(end - p));
		n = nl ? (size_t)(nl - p) : (size_t)(end - p);
		if (n > 0 && p[n - 1] == '\r')
			n--;
		/* the blank line ends the header block; anything after is body */
		if (n == 0)
			break;
		if (out->len - start + (n < DSN_LINE_MAX ? n : DSN_LINE_MAX) + 2 > DSN_HEADERS_MAX)
			break;
		for (i = 0; i < n && i < DSN_LINE_MAX; i++) {
			unsigned char c = (unsigned char)p[i];

			if (c == '\0' || c == '\r')
				c = ' ';
			eight |= c >= 0x80;
			buf_putc(out, (char)c);
		}
		buf_puts(out, "\r\n");
		p = nl ? nl + 1 : end;
	}
	return eight;
}

/* dsn_boundary - a MIME boundary that occurs in none of the parts */
static void
dsn_boundary(char *dst, size_t size, const struct buf *parts, size_t nparts)
{
	struct timeval tv;
	size_t i;
	bool clash;
	int n;

	gettimeofday(&tv, NULL);
	do {
		n = snprintf(dst, size, "=_portier_%lld_%06ld_%ld_%lu", (long long)tv.tv_sec,
		    (long)tv.tv_usec, (long)getpid(), atomic_fetch_add(&dsn_seq, 1));
		if (n < 0 || (size_t)n >= size)
			fatal("dsn_boundary: buffer too small");
		clash = false;
		for (i = 0; i < nparts && !clash; i++)
			clash = parts[i].len > 0 &&
			    memmem(parts[i].data, parts[i].len, dst, (size_t)n) != NULL;
	} while (clash);
}

/* dsn_build - the whole notification (see dsn.h) */
void
dsn_build(struct buf *out, const struct dsn_info *info)
{
	static const char *const part_types[] = {
		"Content-Description: Notification\r\n"
		"Content-Type: text/plain; charset=us-ascii\r\n",
		"Content-Description: Delivery report\r\n"
		"Content-Type: message/delivery-status\r\n",
		"Content-Description: Undelivered Message Headers\r\n"
		"Content-Type: text/rfc822-headers\r\n",
	};
	struct buf parts[3];
	char boundary[128], date[64];
	struct timeval tv;
	size_t i, nparts = 2;
	bool eight = false;

	assert(info->nrcpts > 0 && info->hostname != NULL && info->sender != NULL);
	for (i = 0; i < info->nrcpts; i++)
		if (info->rcpts[i].code / 100 != 5)	/* a deferral reported as failed would be lost */
			fatal("dsn_build: reply %d for <%s> is not a permanent failure",
			    info->rcpts[i].code, info->rcpts[i].addr);
	for (i = 0; i < ARRAY_SIZE(parts); i++)
		buf_init(&parts[i]);
	dsn_human(&parts[0], info);
	dsn_report(&parts[1], info);
	if (info->orig_headers != NULL && info->orig_headers_len > 0) {
		eight = dsn_headers(&parts[2], info->orig_headers, info->orig_headers_len);
		if (parts[2].len > 0)
			nparts = 3;
	}
	dsn_boundary(boundary, sizeof(boundary), parts, nparts);

	gettimeofday(&tv, NULL);
	dsn_date(date, sizeof(date), tv.tv_sec);
	dsn_field(out, "Date", date);
	dsn_fieldf(out, "From", "MAILER-DAEMON@%s (Mail Delivery System)", info->hostname);
	dsn_fieldf(out, "To", "<%s>", info->sender);
	buf_puts(out, "Subject: Undelivered Mail Returned to Sender\r\n");
	dsn_fieldf(out, "Message-ID", "<%lld.%06ld.%ld.%lu@%s>", (long long)tv.tv_sec,
	    (long)tv.tv_usec, (long)getpid(), atomic_fetch_add(&dsn_seq, 1), info->hostname);
	buf_puts(out, "Auto-Submitted: auto-replied\r\n");
	buf_puts(out, "MIME-Version: 1.0\r\n");
	buf_printf(out, "Content-Type: multipart/report; report-type=delivery-status;\r\n"
	    "\tboundary=\"%s\"\r\n", boundary);
	buf_printf(out, "Content-Transfer-Encoding: %s\r\n", eight ? "8bit" : "7bit");
	buf_puts(out, "\r\nThis is a MIME-encapsulated message.\r\n");
	for (i = 0; i < nparts; i++) {
		buf_printf(out, "\r\n--%s\r\n", boundary);
		buf_puts(out, part_types[i]);
		if (i == 2 && eight)
			buf_puts(out, "Content-Transfer-Encoding: 8bit\r\n");
		buf_puts(out, "\r\n");
		buf_append(out, parts[i].data, parts[i].len);
	}
	buf_printf(out, "\r\n--%s--\r\n", boundary);
	for (i = 0; i < ARRAY_SIZE(parts); i++)
		buf_free(&parts[i]);
}
