/*
 * check_dsn.c - unit tests for RFC 3464 delivery status notifications (dsn.c).
 *
 * Each built message is taken apart again (top headers, MIME parts, the
 * delivery-status field blocks) and checked field by field; every message is
 * also checked for CRLF-only line ends, no NULs and lines under 998 octets.
 */
#include "config.h"

#include <check.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "buf.h"
#include "dsn.h"
#include "util.h"
#include "unit.h"

#define MAX_PARTS 4

/* A built DSN taken apart; every string is an owned copy. */
struct parsed {
	char *headers;			/* top-level header block */
	char boundary[128];
	size_t nparts;
	char *part_headers[MAX_PARTS];
	char *part_body[MAX_PARTS];
	bool closed;			/* the close delimiter ends the message */
};

static const char ORIG_HEADERS[] =
    "Received: from client.example.org by mx.example.test\r\n"
    "From: Alice <alice@example.org>\r\n"
    "To: bob@example.test, carol@example.test\r\n"
    "Subject: lunch\r\n"
    "Message-ID: <1@example.org>\r\n";

static const struct dsn_rcpt ONE_RCPT[] = {
	{ "bob@example.test", NULL, 550, "5.1.1", "<bob@example.test>: User unknown" },
};

/* info_for - a dsn_info with sensible defaults around rcpts */
static struct dsn_info
info_for(const struct dsn_rcpt *rcpts, size_t n)
{
	struct dsn_info info = {
		.hostname = "mx.example.test",
		.sender = "alice@example.org",
		.envid = NULL,
		.remote_mta = "lmtp.example.test",
		.queue_id = "4f2a9c01",
		.arrival = 1000000000,
		.rcpts = rcpts,
		.nrcpts = n,
		.orig_headers = ORIG_HEADERS,
		.orig_headers_len = sizeof(ORIG_HEADERS) - 1,
	};
	return info;
}

/* check_lines - CRLF only, no NUL, every line under 998 octets */
static void
check_lines(const char *s, size_t len)
{
	size_t i, col = 0;

	ck_assert_msg(strlen(s) == len, "NUL inside the message at %zu", strlen(s));
	ck_assert(len >= 2 && s[len - 2] == '\r' && s[len - 1] == '\n');
	for (i = 0; i < len; i++) {
		if (s[i] == '\r') {
			ck_assert_msg(i + 1 < len && s[i + 1] == '\n', "bare CR at %zu", i);
			ck_assert_msg(col < 998, "line of %zu octets ending at %zu", col, i);
			col = 0;
			i++;
			continue;
		}
		ck_assert_msg(s[i] != '\n', "bare LF at %zu", i);
		col++;
	}
}

/* parse - take a built DSN apart (asserting its MIME shape) */
static void
parse(const struct buf *m, struct parsed *p)
{
	const char *s, *b, *end, *sep;
	char *delim;
	size_t dlen;

	check_lines(m->data, m->len);
	memset(p, 0, sizeof(*p));
	sep = strstr(m->data, "\r\n\r\n");
	ck_assert_ptr_nonnull(sep);
	p->headers = xstrndup(m->data, (size_t)(sep - m->data) + 2);
	b = strstr(p->headers, "boundary=\"");
	ck_assert_ptr_nonnull(b);
	b += strlen("boundary=\"");
	end = strchr(b, '"');
	ck_assert_ptr_nonnull(end);
	/* RFC 2046: 1 to 70 characters */
	ck_assert(end - b >= 1 && end - b <= 70);
	memcpy(p->boundary, b, (size_t)(end - b));

	delim = xasprintf("\r\n--%s", p->boundary);
	dlen = strlen(delim);
	/* the header block's last CRLF may open the first delimiter: search from it */
	s = strstr(sep + 2, delim);
	ck_assert_ptr_nonnull(s);
	for (;;) {
		s += dlen;
		if (strcmp(s, "--\r\n") == 0) {
			p->closed = true;
			break;
		}
		ck_assert(strncmp(s, "\r\n", 2) == 0);
		s += 2;
		ck_assert_uint_lt(p->nparts, MAX_PARTS);
		end = strstr(s, delim);
		ck_assert_ptr_nonnull(end);
		sep = strstr(s, "\r\n\r\n");
		ck_assert(sep != NULL && sep < end);
		p->part_headers[p->nparts] = xstrndup(s, (size_t)(sep - s) + 2);
		p->part_body[p->nparts] = xstrndup(sep + 4, (size_t)(end - sep - 4));
		p->nparts++;
		s = end;
	}
	free(delim);
}

/* parsed_free - release parse()'s copies */
static void
parsed_free(struct parsed *p)
{
	size_t i;

	free(p->headers);
	for (i = 0; i < p->nparts; i++) {
		free(p->part_headers[i]);
		free(p->part_body[i]);
	}
}

/* field - the unfolded value of the first "name:" field in block, or NULL (caller frees) */
static char *
field(const char *block, const char *name)
{
	size_t nlen = strlen(name);
	const char *line = block, *v, *e;
	struct buf out;

	while (line && *line) {
		if (str_ncasecmp(line, name, nlen) == 0 && line[nlen] == ':') {
			v = line + nlen + 1;
			while (*v == ' ' || *v == '\t')
				v++;
			buf_init(&out);
			buf_puts(&out, "");
			for (;;) {
				e = strstr(v, "\r\n");
				ck_assert_ptr_nonnull(e);
				buf_append(&out, v, (size_t)(e - v));
				if (e[2] != ' ' && e[2] != '\t')
					break;
				v = e + 2;
			}
			return out.data;
		}
		line = strstr(line, "\r\n");
		if (line)
			line += 2;
	}
	return NULL;
}

/* assert_field - block has name with exactly want (NULL: has no such field) */
static void
assert_field(const char *block, const char *name, const char *want)
{
	char *got = field(block, name);

	if (want == NULL) {
		ck_assert_msg(got == NULL, "unexpected %s: %s", name, got);
		return;
	}
	ck_assert_msg(got != NULL, "no %s field in:\n%s", name, block);
	ck_assert_str_eq(got, want);
	free(got);
}

/* status_block - the n-th blank-line separated block of the delivery-status body (caller frees) */
static char *
status_block(const char *body, size_t n)
{
	const char *s = body, *e;

	for (; n > 0; n--) {
		s = strstr(s, "\r\n\r\n");
		if (s == NULL)
			return NULL;
		s += 4;
	}
	e = strstr(s, "\r\n\r\n");
	return e ? xstrndup(s, (size_t)(e - s) + 2) : xstrdup(s);
}

/* build - dsn_build into a fresh buffer and parse it */
static void
build(const struct dsn_info *info, struct buf *m, struct parsed *p)
{
	buf_init(m);
	dsn_build(m, info);
	parse(m, p);
}

START_TEST(test_structure)
{
	struct dsn_info info = info_for(ONE_RCPT, 1);
	struct buf m;
	struct parsed p;
	size_t i;

	build(&info, &m, &p);
	ck_assert(p.closed);
	ck_assert_uint_eq(p.nparts, 3);
	assert_field(p.headers, "MIME-Version", "1.0");
	char *ct = field(p.headers, "Content-Type");
	ck_assert_ptr_nonnull(strstr(ct, "multipart/report;"));
	ck_assert_ptr_nonnull(strstr(ct, "report-type=delivery-status;"));
	free(ct);
	assert_field(p.part_headers[0], "Content-Type", "text/plain; charset=us-ascii");
	assert_field(p.part_headers[1], "Content-Type", "message/delivery-status");
	assert_field(p.part_headers[2], "Content-Type", "text/rfc822-headers");
	ck_assert_str_eq(p.part_body[2], ORIG_HEADERS);
	for (i = 0; i < p.nparts; i++) {
		ck_assert(strstr(p.part_body[i], p.boundary) == NULL);
		ck_assert(strstr(p.part_headers[i], p.boundary) == NULL);
	}
	/* the boundary occurs exactly as delimiters: 3 openings and one close */
	size_t count = 0;
	const char *s = m.data;
	while ((s = strstr(s, p.boundary)) != NULL) {
		count++;
		s++;
	}
	ck_assert_uint_eq(count, 1 + 3 + 1);	/* Content-Type parameter too */
	parsed_free(&p);
	buf_free(&m);
}
END_TEST

START_TEST(test_top_headers)
{
	struct dsn_info info = info_for(ONE_RCPT, 1);
	struct buf m;
	struct parsed p;
	char *v, wday[4], mon[4], zone[6];
	int day, year, hh, mm, ss;

	build(&info, &m, &p);
	assert_field(p.headers, "From", "MAILER-DAEMON@mx.example.test (Mail Delivery System)");
	assert_field(p.headers, "To", "<alice@example.org>");
	assert_field(p.headers, "Subject", "Undelivered Mail Returned to Sender");
	assert_field(p.headers, "Auto-Submitted", "auto-replied");
	assert_field(p.headers, "Content-Transfer-Encoding", "7bit");
	v = field(p.headers, "Message-ID");
	ck_assert_ptr_nonnull(v);
	ck_assert(v[0] == '<' && strstr(v, "@mx.example.test>") != NULL);
	ck_assert(strchr(v, ' ') == NULL);
	free(v);
	v = field(p.headers, "Date");
	ck_assert_ptr_nonnull(v);
	ck_assert_int_eq(sscanf(v, "%3s, %2d %3s %4d %2d:%2d:%2d %5s", wday, &day, mon, &year,
	    &hh, &mm, &ss, zone), 8);
	ck_assert(wday[0] >= 'A' && wday[0] <= 'Z' && (zone[0] == '+' || zone[0] == '-'));
	free(v);
	/* the header block ends right before the preamble */
	ck_assert_ptr_nonnull(strstr(m.data, "\r\n\r\nThis is a MIME-encapsulated message.\r\n"));
	parsed_free(&p);
	buf_free(&m);
}
END_TEST

START_TEST(test_per_message_fields)
{
	struct dsn_info info = info_for(ONE_RCPT, 1);
	struct buf m;
	struct parsed p;
	char *blk;

	setenv("TZ", "UTC", 1);
	tzset();
	info.envid = "QQ+2B314+3D159+";	/* xtext as sent: decoded in the DSN */
	build(&info, &m, &p);
	blk = status_block(p.part_body[1], 0);
	assert_field(blk, "Reporting-MTA", "dns; mx.example.test");
	assert_field(blk, "Original-Envelope-Id", "QQ+314=159+");
	assert_field(blk, "Arrival-Date", "Sun, 09 Sep 2001 01:46:40 +0000");
	assert_field(blk, "X-Portier-Queue-ID", "4f2a9c01");
	assert_field(blk, "Final-Recipient", NULL);
	free(blk);
	parsed_free(&p);
	buf_free(&m);

	info.envid = NULL;
	info.arrival = 0;
	info.queue_id = NULL;
	build(&info, &m, &p);
	blk = status_block(p.part_body[1], 0);
	assert_field(blk, "Reporting-MTA", "dns; mx.example.test");
	assert_field(blk, "Original-Envelope-Id", NULL);
	assert_field(blk, "Arrival-Date", NULL);
	assert_field(blk, "X-Portier-Queue-ID", NULL);
	free(blk);
	parsed_free(&p);
	buf_free(&m);
}
END_TEST

/* One recipient's reply and the fields it must produce. */
static const struct {
	int code;
	const char *ecode;
	const char *text;
	const char *status;
	const char *diag;
} rcpt_cases[] = {
	{ 550, "5.1.1", "User unknown", "5.1.1", "smtp; 550 5.1.1 User unknown" },
	{ 550, NULL, "No such user", "5.0.0", "smtp; 550 No such user" },
	{ 554, NULL, "Rejected", "5.0.0", "smtp; 554 Rejected" },
	{ 552, "5.2.2", "Quota exceeded", "5.2.2", "smtp; 552 5.2.2 Quota exceeded" },
	{ 550, "5.7.1", "Delivery not authorized", "5.7.1",
	    "smtp; 550 5.7.1 Delivery not authorized" },
	{ 550, "5.123.456", "x", "5.123.456", "smtp; 550 5.123.456 x" },
	/* malformed or contradicting enhanced codes: derived from the reply code */
	{ 550, "4.2.2", "class mismatch", "5.0.0", "smtp; 550 4.2.2 class mismatch" },
	{ 550, "5.1234.1", "x", "5.0.0", "smtp; 550 5.1234.1 x" },
	{ 550, "5.1.1x", "x", "5.0.0", "smtp; 550 5.1.1x x" },
	{ 550, "5..1", "x", "5.0.0", "smtp; 550 5..1 x" },
	{ 550, "bogus", "x", "5.0.0", "smtp; 550 bogus x" },
	{ 550, "", "x", "5.0.0", "smtp; 550 x" },
	{ 550, "2.0.0", "x", "5.0.0", "smtp; 550 2.0.0 x" },
	/* no text, multi-line text */
	{ 550, "5.1.1", NULL, "5.1.1", "smtp; 550 5.1.1" },
	{ 550, "5.1.1", "first line\r\n550-5.1.1 second line", "5.1.1",
	    "smtp; 550 5.1.1 first line 550-5.1.1 second line" },
};

START_TEST(test_rcpt_fields)
{
	struct dsn_rcpt r = { "bob@example.test", NULL, rcpt_cases[_i].code,
	    rcpt_cases[_i].ecode, rcpt_cases[_i].text };
	struct dsn_info info = info_for(&r, 1);
	struct buf m;
	struct parsed p;
	char *blk;

	build(&info, &m, &p);
	blk = status_block(p.part_body[1], 1);
	ck_assert_ptr_nonnull(blk);
	assert_field(blk, "Original-Recipient", NULL);
	assert_field(blk, "Final-Recipient", "rfc822; bob@example.test");
	assert_field(blk, "Action", "failed");
	assert_field(blk, "Status", rcpt_cases[_i].status);
	assert_field(blk, "Remote-MTA", "dns; lmtp.example.test");
	assert_field(blk, "Diagnostic-Code", rcpt_cases[_i].diag);
	free(blk);
	ck_assert_ptr_null(status_block(p.part_body[1], 2));
	parsed_free(&p);
	buf_free(&m);
}
END_TEST

START_TEST(test_several_rcpts)
{
	static const struct dsn_rcpt rcpts[] = {
		{ "bob@example.test", "rfc822;Bob+2Btag@Example.TEST", 550, "5.1.1",
		    "User unknown" },
		{ "carol@example.test", NULL, 552, "5.2.2", "Mailbox full" },
		{ "dave@example.test", "dave@example.test", 554, NULL, "Transaction failed" },
		{ "erin@example.test", "utf-8; erin@example.test", 550, NULL, "Nope" },
	};
	static const char *const final[] = { "rfc822; bob@example.test",
	    "rfc822; carol@example.test", "rfc822; dave@example.test",
	    "rfc822; erin@example.test" };
	static const char *const orig[] = { "rfc822; Bob+tag@Example.TEST", NULL,
	    "rfc822; dave@example.test", "utf-8; erin@example.test" };
	static const char *const status[] = { "5.1.1", "5.2.2", "5.0.0", "5.0.0" };
	struct dsn_info info = info_for(rcpts, ARRAY_SIZE(rcpts));
	struct buf m;
	struct parsed p;
	char *blk;
	size_t i;

	build(&info, &m, &p);
	for (i = 0; i < ARRAY_SIZE(rcpts); i++) {
		blk = status_block(p.part_body[1], i + 1);
		ck_assert_ptr_nonnull(blk);
		assert_field(blk, "Original-Recipient", orig[i]);
		assert_field(blk, "Final-Recipient", final[i]);
		assert_field(blk, "Action", "failed");
		assert_field(blk, "Status", status[i]);
		free(blk);
		/* the human part names each recipient and its reply */
		char *want = xasprintf("<%s>: host lmtp.example.test said: %d", rcpts[i].addr,
		    rcpts[i].code);
		ck_assert_msg(strstr(p.part_body[0], want) != NULL, "%s not in:\n%s", want,
		    p.part_body[0]);
		ck_assert(strstr(p.part_body[0], rcpts[i].text) != NULL);
		free(want);
	}
	ck_assert_ptr_null(status_block(p.part_body[1], ARRAY_SIZE(rcpts) + 1));
	ck_assert(strstr(p.part_body[0], "mx.example.test") != NULL);
	ck_assert(strstr(p.part_body[0], "4f2a9c01") != NULL);
	parsed_free(&p);
	buf_free(&m);
}
END_TEST

START_TEST(test_no_remote_mta_no_headers)
{
	struct dsn_info info = info_for(ONE_RCPT, 1);
	struct buf m;
	struct parsed p;
	char *blk;

	info.remote_mta = NULL;
	info.orig_headers = NULL;
	info.orig_headers_len = 0;
	build(&info, &m, &p);
	ck_assert_uint_eq(p.nparts, 2);
	ck_assert(p.closed);
	blk = status_block(p.part_body[1], 1);
	assert_field(blk, "Remote-MTA", NULL);
	assert_field(blk, "Diagnostic-Code",
	    "smtp; 550 5.1.1 <bob@example.test>: User unknown");
	free(blk);
	ck_assert(strstr(p.part_body[0], "<bob@example.test>: 550 5.1.1") != NULL);
	parsed_free(&p);
	buf_free(&m);
}
END_TEST

static const struct {
	const char *sender;
	bool owed;
} owed_cases[] = {
	{ "", false },
	{ "<>", false },
	{ NULL, false },
	{ "alice@example.org", true },
	{ "postmaster", true },
	{ "MAILER-DAEMON@example.org", true },
};

START_TEST(test_owed)
{
	ck_assert_int_eq(dsn_owed(owed_cases[_i].sender), owed_cases[_i].owed);
}
END_TEST

START_TEST(test_long_diagnostic_folded)
{
	struct dsn_rcpt r = { "bob@example.test", NULL, 550, "5.1.1", NULL };
	struct dsn_info info = info_for(&r, 1);
	struct buf text, m, want;
	struct parsed p;
	char *blk, *diag;
	int i;

	buf_init(&text);
	for (i = 0; text.len < 3000; i++)
		buf_printf(&text, "word%d ", i);
	text.data[--text.len] = '\0';
	r.text = text.data;
	build(&info, &m, &p);
	blk = status_block(p.part_body[1], 1);
	/* folded into many lines, none long, and unfolding gives the text back */
	ck_assert(strstr(blk, "\r\n ") != NULL);
	diag = field(blk, "Diagnostic-Code");
	buf_init(&want);
	buf_printf(&want, "smtp; 550 5.1.1 %s", text.data);
	ck_assert_str_eq(diag, want.data);
	free(diag);
	free(blk);
	parsed_free(&p);
	buf_free(&m);
	buf_free(&want);
	buf_free(&text);
}
END_TEST

START_TEST(test_long_word_cut)
{
	struct dsn_rcpt r = { "bob@example.test", NULL, 550, "5.1.1", NULL };
	struct dsn_info info = info_for(&r, 1);
	struct buf text, m;
	struct parsed p;
	char *blk, *diag;

	/* 5000 octets with no space: no place to fold, so it is cut */
	buf_init(&text);
	buf_puts(&text, "short ");
	while (text.len < 5000)
		buf_putc(&text, 'x');
	buf_puts(&text, " tail");
	r.text = text.data;
	build(&info, &m, &p);	/* parse() checks every line < 998 */
	blk = status_block(p.part_body[1], 1);
	diag = field(blk, "Diagnostic-Code");
	ck_assert_ptr_nonnull(strstr(diag, "smtp; 550 5.1.1 short xxx"));
	ck_assert_ptr_nonnull(strstr(diag, "xxx... tail"));
	ck_assert_uint_lt(strlen(diag), 1000);
	free(diag);
	free(blk);
	parsed_free(&p);
	buf_free(&m);

	/* a whole value past the bound is cut too, however many spaces */
	buf_reset(&text);
	while (text.len < 100000)
		buf_puts(&text, "ab ");
	r.text = text.data;
	build(&info, &m, &p);
	ck_assert_uint_lt(m.len, 20000);
	parsed_free(&p);
	buf_free(&m);
	buf_free(&text);
}
END_TEST

START_TEST(test_no_injection)
{
	struct dsn_rcpt r = { "bob@example.test\r\nBcc: evil@example.net", "rfc822;x+0ABcc:+20y",
	    550, "5.1.1", "bad\r\nBcc: evil@example.net\nX-Injected: 1\rX-Also: 2\t\x01\x7f" };
	struct dsn_info info = info_for(&r, 1);
	struct buf m;
	struct parsed p;
	const char *s, *e;

	info.sender = "alice@example.org\r\nBcc: evil@example.net";
	info.envid = "id+0D+0ABcc:+20evil@example.net+0D+0A";
	info.hostname = "mx.example.test\nX-Host: 1";
	build(&info, &m, &p);
	/* no line anywhere starts with an injected field */
	for (s = m.data; s != NULL; s = (e = strstr(s, "\r\n")) ? e + 2 : NULL) {
		ck_assert(strncmp(s, "Bcc:", 4) != 0);
		ck_assert(strncmp(s, "X-Injected:", 11) != 0);
		ck_assert(strncmp(s, "X-Also:", 7) != 0);
		ck_assert(strncmp(s, "X-Host:", 7) != 0);
	}
	ck_assert(strchr(m.data, '\x01') == NULL && strchr(m.data, '\x7f') == NULL);
	/* the only tab is the one folding our own Content-Type */
	ck_assert(strchr(m.data, '\t') == strrchr(m.data, '\t'));
	ck_assert(strchr(m.data, '\t') == strstr(m.data, "\tboundary="));
	ck_assert_uint_eq(p.nparts, 3);
	parsed_free(&p);
	buf_free(&m);
}
END_TEST

START_TEST(test_orig_headers_normalised)
{
	static const char h[] =
	    "Subject: bare LF\n"
	    "X-Nul: a\0b\r\n"
	    "X-Cr: a\rb\r\n"
	    "X-Folded: one\r\n\ttwo\r\n"
	    "\r\n"
	    "Body line must not be returned\r\n";
	struct dsn_info info = info_for(ONE_RCPT, 1);
	struct buf m;
	struct parsed p;

	info.orig_headers = h;
	info.orig_headers_len = sizeof(h) - 1;
	build(&info, &m, &p);
	ck_assert_str_eq(p.part_body[2],
	    "Subject: bare LF\r\nX-Nul: a b\r\nX-Cr: a b\r\nX-Folded: one\r\n\ttwo\r\n");
	ck_assert(strstr(m.data, "Body line") == NULL);
	parsed_free(&p);
	buf_free(&m);
}
END_TEST

START_TEST(test_orig_headers_limits)
{
	struct dsn_info info = info_for(ONE_RCPT, 1);
	struct buf h, m;
	struct parsed p;
	int i;

	/* one 3000-octet header line: cut, not folded or dropped */
	buf_init(&h);
	buf_puts(&h, "X-Long: ");
	while (h.len < 3000)
		buf_putc(&h, 'y');
	buf_puts(&h, "\r\nSubject: after\r\n");
	info.orig_headers = h.data;
	info.orig_headers_len = h.len;
	build(&info, &m, &p);
	ck_assert(strncmp(p.part_body[2], "X-Long: yyy", 11) == 0);
	ck_assert(strstr(p.part_body[2], "\r\nSubject: after\r\n") != NULL);
	parsed_free(&p);
	buf_free(&m);

	/* a huge header block: cut at a line end, bounded */
	buf_reset(&h);
	for (i = 0; h.len < 500000; i++)
		buf_printf(&h, "X-Many-%d: some value\r\n", i);
	info.orig_headers = h.data;
	info.orig_headers_len = h.len;
	build(&info, &m, &p);
	ck_assert_uint_le(strlen(p.part_body[2]), 65536);
	ck_assert(strncmp(p.part_body[2], "X-Many-0: some value\r\n", 22) == 0);
	parsed_free(&p);
	buf_free(&m);
	buf_free(&h);
}
END_TEST

START_TEST(test_8bit)
{
	static const char h[] = "Subject: caf\xc3\xa9\r\nFrom: a@b\r\n";
	struct dsn_rcpt r = { "b\xc3\xb6@example.test", NULL, 550, "5.1.1",
	    "r\xc3\xa9ject\xc3\xa9" };
	struct dsn_info info = info_for(&r, 1);
	struct buf m;
	struct parsed p;
	size_t i;

	info.orig_headers = h;
	info.orig_headers_len = sizeof(h) - 1;
	build(&info, &m, &p);
	assert_field(p.headers, "Content-Transfer-Encoding", "8bit");
	assert_field(p.part_headers[2], "Content-Transfer-Encoding", "8bit");
	ck_assert_str_eq(p.part_body[2], h);
	/* the two generated parts stay US-ASCII */
	for (i = 0; i < 2; i++) {
		const unsigned char *s = (const unsigned char *)p.part_body[i];

		for (; *s; s++)
			ck_assert_uint_lt(*s, 0x80);
	}
	parsed_free(&p);
	buf_free(&m);
}
END_TEST

START_TEST(test_boundary_unique)
{
	struct dsn_info info = info_for(ONE_RCPT, 1);
	struct buf m1, m2, h;
	struct parsed p1, p2;
	char *id1, *id2;

	build(&info, &m1, &p1);
	/* headers quoting the first DSN's boundary and lookalikes */
	buf_init(&h);
	buf_printf(&h, "X-Quote: --%s\r\nX-Also: =_portier_\r\n", p1.boundary);
	info.orig_headers = h.data;
	info.orig_headers_len = h.len;
	build(&info, &m2, &p2);
	ck_assert_str_ne(p1.boundary, p2.boundary);
	ck_assert_uint_eq(p2.nparts, 3);
	ck_assert_str_eq(p2.part_body[2], h.data);
	ck_assert(strstr(p2.part_body[2], p2.boundary) == NULL);
	id1 = field(p1.headers, "Message-ID");
	id2 = field(p2.headers, "Message-ID");
	ck_assert_str_ne(id1, id2);
	free(id1);
	free(id2);
	parsed_free(&p1);
	parsed_free(&p2);
	buf_free(&m1);
	buf_free(&m2);
	buf_free(&h);
}
END_TEST

START_TEST(test_appends)
{
	struct dsn_info info = info_for(ONE_RCPT, 1);
	struct buf m;

	buf_init(&m);
	buf_puts(&m, "Return-Path: <>\r\n");
	dsn_build(&m, &info);
	ck_assert(strncmp(m.data, "Return-Path: <>\r\nDate: ", 23) == 0);
	check_lines(m.data, m.len);
	buf_free(&m);
}
END_TEST

/* Replies that are no permanent failure: a DSN saying "failed" for them would lose mail. */
static const int not_failed[] = { 421, 450, 451, 452, 250, 354 };

START_TEST(test_deferral_is_fatal)
{
	struct dsn_rcpt r[2] = {
		{ "bob@example.test", NULL, 550, "5.1.1", "User unknown" },
		{ "carol@example.test", NULL, not_failed[_i], NULL, "try later" },
	};
	struct dsn_info info = info_for(r, 2);
	struct buf m;

	buf_init(&m);
	dsn_build(&m, &info);	/* aborts: the caller broke the contract */
	buf_free(&m);
}
END_TEST

/* dsn_suite - every dsn test */
static Suite *
dsn_suite(void)
{
	Suite *s = suite_create("dsn");
	TCase *tc = tcase_create("build");

	tcase_add_test(tc, test_structure);
	tcase_add_test(tc, test_top_headers);
	tcase_add_test(tc, test_per_message_fields);
	tcase_add_loop_test(tc, test_rcpt_fields, 0, (int)ARRAY_SIZE(rcpt_cases));
	tcase_add_test(tc, test_several_rcpts);
	tcase_add_test(tc, test_no_remote_mta_no_headers);
	tcase_add_loop_test(tc, test_owed, 0, (int)ARRAY_SIZE(owed_cases));
	tcase_add_test(tc, test_long_diagnostic_folded);
	tcase_add_test(tc, test_long_word_cut);
	tcase_add_test(tc, test_no_injection);
	tcase_add_test(tc, test_orig_headers_normalised);
	tcase_add_test(tc, test_orig_headers_limits);
	tcase_add_test(tc, test_8bit);
	tcase_add_test(tc, test_boundary_unique);
	tcase_add_test(tc, test_appends);
	tcase_add_loop_test_raise_signal(tc, test_deferral_is_fatal, SIGABRT, 0,
	    (int)ARRAY_SIZE(not_failed));
	suite_add_tcase(s, tc);
	return s;
}

UNIT_MAIN(dsn_suite)
