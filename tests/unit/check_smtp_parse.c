/*
 * check_smtp_parse.c - unit tests for smtpd/smtp_parse.c, table-driven.
 *
 * Every framing case is fed whole, one byte at a time, in prefixes capped at
 * max_line and in pseudo-random splits; all must give the same events.
 * Every command-argument case also travels the whole way: framed byte by
 * byte, split by smtp_parse_command, parsed, and its canonical form parsed
 * again.  Tests never touch the network or the file system.
 */
#include "config.h"

#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "buf.h"
#include "smtp_parse.h"
#include "smtp_reply.h"
#include "unit.h"

/* Input that may hold NULs: a literal and its length. */
#define S(lit)	{ lit, sizeof(lit) - 1 }

struct bytes {
	const char *p;
	size_t len;
};

/* --- helpers --------------------------------------------------------------- */

/* escape - printable rendering of bytes into out (for event strings) */
static void
escape(struct buf *out, const char *p, size_t n)
{
	size_t i;
	unsigned char c;

	for (i = 0; i < n; i++) {
		c = (unsigned char)p[i];
		if (c == '\r')
			buf_puts(out, "\\r");
		else if (c == '\n')
			buf_puts(out, "\\n");
		else if (c < 32 || c == 127)
			buf_printf(out, "\\x%02x", c);
		else
			buf_putc(out, (char)c);
	}
}

enum feed_mode {
	FEED_WHOLE,		/* everything at once */
	FEED_BYTES,		/* one byte at a time */
	FEED_CAPPED,		/* whole, but offering at most max_line bytes per call */
	FEED_RANDOM,		/* pseudo-random chunks, seeded */
};

/* next_rand - a small LCG so random splits are reproducible */
static unsigned
next_rand(unsigned *state)
{
	*state = *state * 1103515245u + 12345u;
	return (*state >> 16) & 0x7fff;
}

/*
 * feed - run in through a reader in the given mode, appending one event per
 * line ("OK:line", "BARE:line", "TOO_LONG", "NUL") and "rest=N" for the bytes
 * still pending at the end.  Checks the reader's promises on every call.
 */
static void
feed(const char *in, size_t len, size_t max_line, enum feed_mode mode,
    unsigned seed, struct buf *events)
{
	struct smtp_parse_reader r;
	struct buf pending;
	enum smtp_parse_line_status st;
	const char *line;
	size_t linelen, consumed, offered, pos = 0, chunk;

	smtp_parse_reader_init(&r, max_line);
	buf_init(&pending);
	while (pos < len) {
		switch (mode) {
		case FEED_BYTES:
			chunk = 1;
			break;
		case FEED_RANDOM:
			chunk = 1 + next_rand(&seed) % (2 * max_line);
			break;
		default:
			chunk = len;
			break;
		}
		if (chunk > len - pos)
			chunk = len - pos;
		buf_append(&pending, in + pos, chunk);
		pos += chunk;
		while (pending.len > 0) {
			offered = pending.len;
			if (mode == FEED_CAPPED && offered > max_line)
				offered = max_line;
			st = smtp_parse_line(&r, pending.data, offered, &line,
			    &linelen, &consumed);
			ck_assert_uint_le(consumed, offered);
			if (st == SMTP_PARSE_LINE_OK || st == SMTP_PARSE_LINE_BARE_NEWLINE) {
				ck_assert_ptr_nonnull(line);
				ck_assert(line >= pending.data);
				ck_assert(line + linelen < pending.data + consumed);
			} else {
				ck_assert_ptr_null(line);
				ck_assert_uint_eq(linelen, 0);
			}
			switch (st) {
			case SMTP_PARSE_LINE_OK:
				buf_puts(events, "OK:");
				escape(events, line, linelen);
				buf_putc(events, '\n');
				break;
			case SMTP_PARSE_LINE_BARE_NEWLINE:
				buf_puts(events, "BARE:");
				escape(events, line, linelen);
				buf_putc(events, '\n');
				break;
			case SMTP_PARSE_LINE_TOO_LONG:
				ck_assert_uint_gt(consumed, 0);
				buf_puts(events, "TOO_LONG\n");
				break;
			case SMTP_PARSE_LINE_NUL:
				ck_assert_uint_gt(consumed, 0);
				buf_puts(events, "NUL\n");
				break;
			case SMTP_PARSE_LINE_NEED_MORE:
				break;
			}
			buf_consume(&pending, consumed);
			if (st == SMTP_PARSE_LINE_NEED_MORE && consumed == 0)
				break;
		}
	}
	buf_printf(events, "rest=%zu", pending.len);
	buf_free(&pending);
}

/*
 * frame_one - frame "text\r\n" whole and byte by byte, insist on one OK line
 * equal to text in both, and return it in line (a NUL-terminated copy).
 */
static void
frame_one(const char *text, struct buf *line)
{
	struct buf whole, bytes, in, want;

	buf_init(&whole);
	buf_init(&bytes);
	buf_init(&in);
	buf_init(&want);
	buf_printf(&in, "%s\r\n", text);
	feed(in.data, in.len, 512, FEED_WHOLE, 0, &whole);
	feed(in.data, in.len, 512, FEED_BYTES, 0, &bytes);
	buf_puts(&want, "OK:");
	escape(&want, text, strlen(text));
	buf_puts(&want, "\nrest=0");
	ck_assert_str_eq(whole.data, want.data);
	ck_assert_str_eq(bytes.data, want.data);
	buf_reset(line);
	buf_append(line, in.data, in.len - 2);
	buf_free(&whole);
	buf_free(&bytes);
	buf_free(&in);
	buf_free(&want);
}

/* repeat - n copies of c, NUL-terminated, in a static buffer of its own */
static const char *
repeat(char *dst, size_t size, char c, size_t n)
{
	ck_assert_uint_lt(n, size);
	memset(dst, c, n);
	dst[n] = '\0';
	return dst;
}

/*
 * through_reader - frame "VERB args" whole and byte by byte, split it, and
 * say whether the arguments came back unchanged (false for inputs that
 * cannot travel in one line, or that trimming changes).
 */
static bool
through_reader(const char *verb, const char *args, size_t len, enum smtp_parse_verb want,
    struct buf *line, struct smtp_parse_cmd *cmd)
{
	struct buf text;
	bool same;

	if (memchr(args, '\0', len) || memchr(args, '\r', len) || memchr(args, '\n', len))
		return false;
	buf_init(&text);
	buf_printf(&text, "%s %.*s", verb, (int)len, args);
	frame_one(text.data, line);
	smtp_parse_command(line->data, line->len, cmd);
	ck_assert_int_eq(cmd->verb, want);
	same = cmd->argslen == len && memcmp(cmd->args, args, len) == 0;
	buf_free(&text);
	return same;
}

/* --- line framing ------------------------------------------------------------ */

static const struct {
	struct bytes in;
	size_t max_line;
	const char *events;
} line_cases[] = {
	{ S(""), 512, "rest=0" },
	{ S("NOOP\r\n"), 512, "OK:NOOP\nrest=0" },
	{ S("\r\n"), 512, "OK:\nrest=0" },
	{ S("NOOP"), 512, "rest=4" },
	{ S("NOOP\r"), 512, "rest=5" },
	{ S("QUIT\r\nMAIL FR"), 512, "OK:QUIT\nrest=7" },
	/* Pipelining: several commands in one read. */
	{ S("EHLO a.example\r\nMAIL FROM:<a@b.example>\r\nRCPT TO:<c@d.example>\r\nDATA\r\n"),
	  512, "OK:EHLO a.example\nOK:MAIL FROM:<a@b.example>\nOK:RCPT TO:<c@d.example>\n"
	  "OK:DATA\nrest=0" },
	/* Bare LF, bare CR, CR CR LF. */
	{ S("NOOP\n"), 512, "BARE:NOOP\nrest=0" },
	{ S("\n"), 512, "BARE:\nrest=0" },
	{ S("NO\rOP\r\nQUIT\r\n"), 512, "BARE:NO\\rOP\nOK:QUIT\nrest=0" },
	{ S("NOOP\r\r\n"), 512, "BARE:NOOP\\r\nrest=0" },
	{ S("NOOP\rQUIT\n"), 512, "BARE:NOOP\\rQUIT\nrest=0" },
	{ S("MAIL FROM:<a@b>\nRCPT TO:<c@d>\r\n"), 512,
	  "BARE:MAIL FROM:<a@b>\nOK:RCPT TO:<c@d>\nrest=0" },
	/* NUL anywhere in the line; the next line is fine. */
	{ S("NO\0OP\r\nQUIT\r\n"), 512, "NUL\nOK:QUIT\nrest=0" },
	{ S("\0\r\n"), 512, "NUL\nrest=0" },
	{ S("NOOP\0\n"), 512, "NUL\nrest=0" },
	/* The limit counts CRLF: 16 octets fit in 16, 17 do not. */
	{ S("0123456789012\r\n"), 16, "OK:0123456789012\nrest=0" },
	{ S("01234567890123\r\n"), 16, "OK:01234567890123\nrest=0" },
	{ S("012345678901234\r\n"), 16, "TOO_LONG\nrest=0" },
	{ S("012345678901234\n"), 16, "BARE:012345678901234\nrest=0" },
	{ S("0123456789012345\n"), 16, "TOO_LONG\nrest=0" },
	{ S("0123456789012345"), 16, "TOO_LONG\nrest=0" },
	{ S("012345678901234"), 16, "rest=15" },
	{ S("012345678901234\r"), 16, "TOO_LONG\nrest=0" },
	/* One reply per over-long line, then back in sync. */
	{ S("xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx\r\nQUIT\r\n"), 16,
	  "TOO_LONG\nOK:QUIT\nrest=0" },
	{ S("xxxxxxxxxxxxxxxxxxxx\r\nyyyyyyyyyyyyyyyyyyyy\r\nQUIT\r\n"), 16,
	  "TOO_LONG\nTOO_LONG\nOK:QUIT\nrest=0" },
	{ S("xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx"), 16,
	  "TOO_LONG\nrest=0" },
	{ S("xxxxxxxxxxxxxxxxxxxxxxxxxxxx\nQUIT\r\n"), 16,
	  "TOO_LONG\nOK:QUIT\nrest=0" },
	/* Too long wins over NUL and bare CR inside the line. */
	{ S("xxxxxx\0xxxxx\rxxxxxxxxxxx\r\nNOOP\r\n"), 16,
	  "TOO_LONG\nOK:NOOP\nrest=0" },
	/* A NUL after the limit is part of the skipped tail, not a new error. */
	{ S("xxxxxxxxxxxxxxxxxxxx\0\r\nNOOP\r\nQUI"), 16,
	  "TOO_LONG\nOK:NOOP\nrest=3" },
	{ S("QUIT\r\nxxxxxxxxxxxxxxxxxxxxxxxx\r\n\r\n"), 16,
	  "OK:QUIT\nTOO_LONG\nOK:\nrest=0" },
	/* The smallest reader still works. */
	{ S("\r\n\r\nx\r\n"), 2, "OK:\nOK:\nTOO_LONG\nrest=0" },
};

/* test_line - each case gives the same events however it is split */
START_TEST(test_line)
{
	static const enum feed_mode modes[] = { FEED_WHOLE, FEED_BYTES, FEED_CAPPED };
	struct buf events;
	size_t m;
	unsigned seed;

	buf_init(&events);
	for (m = 0; m < ARRAY_SIZE(modes); m++) {
		buf_reset(&events);
		feed(line_cases[_i].in.p, line_cases[_i].in.len, line_cases[_i].max_line,
		    modes[m], 0, &events);
		ck_assert_msg(strcmp(events.data, line_cases[_i].events) == 0,
		    "case %d mode %zu: got \"%s\", want \"%s\"", _i, m, events.data,
		    line_cases[_i].events);
	}
	for (seed = 1; seed <= 20; seed++) {
		buf_reset(&events);
		feed(line_cases[_i].in.p, line_cases[_i].in.len, line_cases[_i].max_line,
		    FEED_RANDOM, seed, &events);
		ck_assert_msg(strcmp(events.data, line_cases[_i].events) == 0,
		    "case %d seed %u: got \"%s\"", _i, seed, events.data);
	}
	buf_free(&events);
}
END_TEST

/* test_line_limit_512 - the RFC 5321 limit at its edge, whole and byte by byte */
START_TEST(test_line_limit_512)
{
	char text[600];
	struct buf in, whole, bytes, want;

	buf_init(&in);
	buf_init(&whole);
	buf_init(&bytes);
	buf_init(&want);
	/* 510 + CRLF = 512: accepted. */
	buf_printf(&in, "%s\r\n", repeat(text, sizeof(text), 'a', 510));
	feed(in.data, in.len, 512, FEED_WHOLE, 0, &whole);
	feed(in.data, in.len, 512, FEED_BYTES, 0, &bytes);
	buf_printf(&want, "OK:%s\nrest=0", text);
	ck_assert_str_eq(whole.data, want.data);
	ck_assert_str_eq(bytes.data, want.data);
	/* 511 + CRLF = 513: refused once, then the next line is read. */
	buf_reset(&in);
	buf_reset(&whole);
	buf_reset(&bytes);
	buf_printf(&in, "%s\r\nQUIT\r\n", repeat(text, sizeof(text), 'a', 511));
	feed(in.data, in.len, 512, FEED_WHOLE, 0, &whole);
	feed(in.data, in.len, 512, FEED_BYTES, 0, &bytes);
	ck_assert_str_eq(whole.data, "TOO_LONG\nOK:QUIT\nrest=0");
	ck_assert_str_eq(bytes.data, "TOO_LONG\nOK:QUIT\nrest=0");
	buf_free(&in);
	buf_free(&whole);
	buf_free(&bytes);
	buf_free(&want);
}
END_TEST

/* test_line_skip_state - skipping spans calls; reset forgets it */
START_TEST(test_line_skip_state)
{
	struct smtp_parse_reader r;
	const char *line;
	size_t linelen, consumed;

	smtp_parse_reader_init(&r, 8);
	ck_assert_int_eq(smtp_parse_line(&r, NULL, 0, &line, &linelen, &consumed),
	    SMTP_PARSE_LINE_NEED_MORE);
	ck_assert_uint_eq(consumed, 0);
	ck_assert_int_eq(smtp_parse_line(&r, "abcdefghij", 10, &line, &linelen, &consumed),
	    SMTP_PARSE_LINE_TOO_LONG);
	ck_assert_uint_eq(consumed, 10);
	ck_assert(r.skipping);
	/* More of the same line: swallowed silently. */
	ck_assert_int_eq(smtp_parse_line(&r, "klm", 3, &line, &linelen, &consumed),
	    SMTP_PARSE_LINE_NEED_MORE);
	ck_assert_uint_eq(consumed, 3);
	/* Its end, then a real line in the same call. */
	ck_assert_int_eq(smtp_parse_line(&r, "n\r\nQUIT\r\n", 9, &line, &linelen, &consumed),
	    SMTP_PARSE_LINE_OK);
	ck_assert_uint_eq(consumed, 9);
	ck_assert_uint_eq(linelen, 4);
	ck_assert(memcmp(line, "QUIT", 4) == 0);
	ck_assert(!r.skipping);
	/* After STARTTLS the session resets: a pending skip is forgotten. */
	ck_assert_int_eq(smtp_parse_line(&r, "abcdefghij", 10, &line, &linelen, &consumed),
	    SMTP_PARSE_LINE_TOO_LONG);
	smtp_parse_reader_reset(&r);
	ck_assert_int_eq(smtp_parse_line(&r, "NOOP\r\n", 6, &line, &linelen, &consumed),
	    SMTP_PARSE_LINE_OK);
	ck_assert_uint_eq(consumed, 6);
	/* Skipped bytes then an incomplete line: only the skip is consumed. */
	ck_assert_int_eq(smtp_parse_line(&r, "abcdefghij", 10, &line, &linelen, &consumed),
	    SMTP_PARSE_LINE_TOO_LONG);
	ck_assert_int_eq(smtp_parse_line(&r, "xy\nNO", 5, &line, &linelen, &consumed),
	    SMTP_PARSE_LINE_NEED_MORE);
	ck_assert_uint_eq(consumed, 3);
}
END_TEST

/* --- verbs --------------------------------------------------------------------- */

static const struct {
	const char *line;
	enum smtp_parse_status status;
	enum smtp_parse_verb verb;
	const char *args;
} cmd_cases[] = {
	{ "MAIL FROM:<a@b.example>", SMTP_PARSE_OK, SMTP_PARSE_VERB_MAIL, "FROM:<a@b.example>" },
	{ "mail from:<a@b.example>", SMTP_PARSE_OK, SMTP_PARSE_VERB_MAIL, "from:<a@b.example>" },
	{ "MaIl FROM:<>", SMTP_PARSE_OK, SMTP_PARSE_VERB_MAIL, "FROM:<>" },
	{ "MAILX FROM:<a@b.example>", SMTP_PARSE_UNKNOWN_CMD, SMTP_PARSE_VERB_UNKNOWN, "FROM:<a@b.example>" },
	{ "MAI", SMTP_PARSE_UNKNOWN_CMD, SMTP_PARSE_VERB_UNKNOWN, "" },
	{ "MAIL", SMTP_PARSE_SYNTAX, SMTP_PARSE_VERB_MAIL, "" },
	{ "MAIL   ", SMTP_PARSE_SYNTAX, SMTP_PARSE_VERB_MAIL, "" },
	{ "MAIL\tFROM:<a@b.example>", SMTP_PARSE_UNKNOWN_CMD, SMTP_PARSE_VERB_UNKNOWN, "" },
	{ " MAIL FROM:<>", SMTP_PARSE_UNKNOWN_CMD, SMTP_PARSE_VERB_UNKNOWN, "MAIL FROM:<>" },
	{ "RCPT TO:<c@d.example>", SMTP_PARSE_OK, SMTP_PARSE_VERB_RCPT, "TO:<c@d.example>" },
	{ "EHLO  mx.example.com \t ", SMTP_PARSE_OK, SMTP_PARSE_VERB_EHLO, "mx.example.com" },
	{ "HELO mx.example.com", SMTP_PARSE_OK, SMTP_PARSE_VERB_HELO, "mx.example.com" },
	{ "HELO", SMTP_PARSE_SYNTAX, SMTP_PARSE_VERB_HELO, "" },
	{ "EHLO", SMTP_PARSE_SYNTAX, SMTP_PARSE_VERB_EHLO, "" },
	{ "DATA", SMTP_PARSE_OK, SMTP_PARSE_VERB_DATA, "" },
	{ "data  ", SMTP_PARSE_OK, SMTP_PARSE_VERB_DATA, "" },
	{ "DATA x", SMTP_PARSE_SYNTAX, SMTP_PARSE_VERB_DATA, "x" },
	{ "BDAT 100 LAST", SMTP_PARSE_OK, SMTP_PARSE_VERB_BDAT, "100 LAST" },
	{ "BDAT", SMTP_PARSE_SYNTAX, SMTP_PARSE_VERB_BDAT, "" },
	{ "RSET", SMTP_PARSE_OK, SMTP_PARSE_VERB_RSET, "" },
	{ "rset now", SMTP_PARSE_SYNTAX, SMTP_PARSE_VERB_RSET, "now" },
	{ "NOOP", SMTP_PARSE_OK, SMTP_PARSE_VERB_NOOP, "" },
	{ "NOOP hello there", SMTP_PARSE_OK, SMTP_PARSE_VERB_NOOP, "hello there" },
	{ "QUIT", SMTP_PARSE_OK, SMTP_PARSE_VERB_QUIT, "" },
	{ "QUIT bye", SMTP_PARSE_OK, SMTP_PARSE_VERB_QUIT, "bye" },
	{ "VRFY", SMTP_PARSE_SYNTAX, SMTP_PARSE_VERB_VRFY, "" },
	{ "VRFY postmaster", SMTP_PARSE_OK, SMTP_PARSE_VERB_VRFY, "postmaster" },
	{ "EXPN staff", SMTP_PARSE_OK, SMTP_PARSE_VERB_EXPN, "staff" },
	{ "HELP", SMTP_PARSE_OK, SMTP_PARSE_VERB_HELP, "" },
	{ "help mail", SMTP_PARSE_OK, SMTP_PARSE_VERB_HELP, "mail" },
	{ "STARTTLS", SMTP_PARSE_OK, SMTP_PARSE_VERB_STARTTLS, "" },
	{ "StartTls", SMTP_PARSE_OK, SMTP_PARSE_VERB_STARTTLS, "" },
	{ "STARTTLS now", SMTP_PARSE_SYNTAX, SMTP_PARSE_VERB_STARTTLS, "now" },
	{ "AUTH PLAIN", SMTP_PARSE_OK, SMTP_PARSE_VERB_AUTH, "PLAIN" },
	{ "AUTH", SMTP_PARSE_SYNTAX, SMTP_PARSE_VERB_AUTH, "" },
	{ "", SMTP_PARSE_UNKNOWN_CMD, SMTP_PARSE_VERB_UNKNOWN, "" },
	{ "XCLIENT ADDR=192.0.2.1", SMTP_PARSE_UNKNOWN_CMD, SMTP_PARSE_VERB_UNKNOWN, "ADDR=192.0.2.1" },
	{ "\xc3\x89HLO x", SMTP_PARSE_UNKNOWN_CMD, SMTP_PARSE_VERB_UNKNOWN, "x" },
};

/* test_command - verbs, argument rules and trimming */
START_TEST(test_command)
{
	struct smtp_parse_cmd cmd;
	struct buf line;
	enum smtp_parse_status st;

	buf_init(&line);
	frame_one(cmd_cases[_i].line, &line);
	st = smtp_parse_command(line.data, line.len, &cmd);
	ck_assert_msg(st == cmd_cases[_i].status, "\"%s\": got %s", cmd_cases[_i].line,
	    smtp_parse_status_name(st));
	ck_assert_int_eq(cmd.verb, cmd_cases[_i].verb);
	if (cmd.verb != SMTP_PARSE_VERB_UNKNOWN || cmd_cases[_i].args[0] != '\0') {
		ck_assert_uint_eq(cmd.argslen, strlen(cmd_cases[_i].args));
		ck_assert(memcmp(cmd.args, cmd_cases[_i].args, cmd.argslen) == 0);
	}
	ck_assert_str_ne(smtp_parse_verb_name(cmd.verb), "?");
	buf_free(&line);
}
END_TEST

/* --- MAIL ----------------------------------------------------------------------- */

#define ALL	SMTP_PARSE_PARAM_ALL
#define NO_UTF8	(SMTP_PARSE_PARAM_ALL & ~SMTP_PARSE_PARAM_SMTPUTF8)

static const struct {
	const char *args;
	unsigned allowed;
	enum smtp_parse_status status;
	const char *canon;	/* when OK */
	const char *params;	/* when OK */
} mail_cases[] = {
	{ "FROM:<a@b.example>", ALL, SMTP_PARSE_OK, "a@b.example", "" },
	{ "from:<A@B.Example>", ALL, SMTP_PARSE_OK, "A@b.example", "" },
	{ "From: <a@b.example>", ALL, SMTP_PARSE_OK, "a@b.example", "" },
	{ "FROM:   <a@b.example>", ALL, SMTP_PARSE_OK, "a@b.example", "" },
	{ "FROM:<>", ALL, SMTP_PARSE_OK, "", "" },
	{ "FROM: <>", ALL, SMTP_PARSE_OK, "", "" },
	{ "FROM:<> BODY=8BITMIME", ALL, SMTP_PARSE_OK, "", "BODY=8BITMIME" },
	{ "FROM:<@relay.example:a@b.example>", ALL, SMTP_PARSE_OK, "a@b.example", "" },
	{ "FROM:<a@B.example.>", ALL, SMTP_PARSE_OK, "a@b.example", "" },
	{ "FROM:<a@b.example..>", ALL, SMTP_PARSE_SYNTAX, NULL, NULL },
	{ "FROM:a@b.example", ALL, SMTP_PARSE_SYNTAX, NULL, NULL },
	{ "FROM:<a@b.example", ALL, SMTP_PARSE_SYNTAX, NULL, NULL },
	{ "FROM <a@b.example>", ALL, SMTP_PARSE_SYNTAX, NULL, NULL },
	{ "FROM:", ALL, SMTP_PARSE_SYNTAX, NULL, NULL },
	{ "FROM", ALL, SMTP_PARSE_SYNTAX, NULL, NULL },
	{ "TO:<a@b.example>", ALL, SMTP_PARSE_SYNTAX, NULL, NULL },
	{ "FROM:<postmaster>", ALL, SMTP_PARSE_SYNTAX, NULL, NULL },
	{ "FROM:<<>>", ALL, SMTP_PARSE_SYNTAX, NULL, NULL },
	{ "FROM:<a@b.example>>", ALL, SMTP_PARSE_SYNTAX, NULL, NULL },
	{ "FROM:<a@b.example>SIZE=1", ALL, SMTP_PARSE_SYNTAX, NULL, NULL },
	/* SIZE */
	{ "FROM:<a@b.example> SIZE=1234", ALL, SMTP_PARSE_OK, "a@b.example", "SIZE=1234" },
	{ "FROM:<a@b.example> SIZE=0", ALL, SMTP_PARSE_OK, "a@b.example", "SIZE=0" },
	{ "FROM:<a@b.example> SIZE=007", ALL, SMTP_PARSE_OK, "a@b.example", "SIZE=7" },
	{ "FROM:<a@b.example> SIZE=18446744073709551615", ALL, SMTP_PARSE_OK, "a@b.example",
	  "SIZE=18446744073709551615" },
	{ "FROM:<a@b.example> SIZE=18446744073709551616", ALL, SMTP_PARSE_BAD_PARAM, NULL, NULL },
	{ "FROM:<a@b.example> SIZE=99999999999999999999999", ALL, SMTP_PARSE_BAD_PARAM, NULL, NULL },
	{ "FROM:<a@b.example> SIZE=", ALL, SMTP_PARSE_BAD_PARAM, NULL, NULL },
	{ "FROM:<a@b.example> SIZE", ALL, SMTP_PARSE_BAD_PARAM, NULL, NULL },
	{ "FROM:<a@b.example> SIZE=-1", ALL, SMTP_PARSE_BAD_PARAM, NULL, NULL },
	{ "FROM:<a@b.example> SIZE=+1", ALL, SMTP_PARSE_BAD_PARAM, NULL, NULL },
	{ "FROM:<a@b.example> SIZE=12a", ALL, SMTP_PARSE_BAD_PARAM, NULL, NULL },
	{ "FROM:<a@b.example> SIZE=1 SIZE=2", ALL, SMTP_PARSE_BAD_PARAM, NULL, NULL },
	{ "FROM:<a@b.example> SIZE=1 size=1", ALL, SMTP_PARSE_BAD_PARAM, NULL, NULL },
	{ "FROM:<a@b.example> SIZE=1", SMTP_PARSE_PARAM_BODY, SMTP_PARSE_UNKNOWN_PARAM, NULL, NULL },
	/* BODY, RET, ENVID, AUTH, REQUIRETLS, SMTPUTF8 */
	{ "FROM:<a@b.example> body=8bitmime", ALL, SMTP_PARSE_OK, "a@b.example", "BODY=8BITMIME" },
	{ "FROM:<a@b.example> BODY=7BIT", ALL, SMTP_PARSE_OK, "a@b.example", "BODY=7BIT" },
	{ "FROM:<a@b.example> BODY=BINARYMIME", ALL, SMTP_PARSE_OK, "a@b.example", "BODY=BINARYMIME" },
	{ "FROM:<a@b.example> BODY=8BIT", ALL, SMTP_PARSE_BAD_PARAM, NULL, NULL },
	{ "FROM:<a@b.example> BODY", ALL, SMTP_PARSE_BAD_PARAM, NULL, NULL },
	{ "FROM:<a@b.example> RET=FULL", ALL, SMTP_PARSE_OK, "a@b.example", "RET=FULL" },
	{ "FROM:<a@b.example> ret=hdrs", ALL, SMTP_PARSE_OK, "a@b.example", "RET=HDRS" },
	{ "FROM:<a@b.example> RET=BOTH", ALL, SMTP_PARSE_BAD_PARAM, NULL, NULL },
	{ "FROM:<a@b.example> ENVID=abc", ALL, SMTP_PARSE_OK, "a@b.example", "ENVID=abc" },
	{ "FROM:<a@b.example> ENVID=QQ+2B+3D12", ALL, SMTP_PARSE_OK, "a@b.example", "ENVID=QQ+2B+3D12" },
	{ "FROM:<a@b.example> ENVID=a+2bb", ALL, SMTP_PARSE_BAD_PARAM, NULL, NULL },
	{ "FROM:<a@b.example> ENVID=a+2", ALL, SMTP_PARSE_BAD_PARAM, NULL, NULL },
	{ "FROM:<a@b.example> ENVID=a+", ALL, SMTP_PARSE_BAD_PARAM, NULL, NULL },
	{ "FROM:<a@b.example> ENVID=a+GG", ALL, SMTP_PARSE_BAD_PARAM, NULL, NULL },
	{ "FROM:<a@b.example> ENVID", ALL, SMTP_PARSE_BAD_PARAM, NULL, NULL },
	{ "FROM:<a@b.example> AUTH=<>", ALL, SMTP_PARSE_OK, "a@b.example", "AUTH=<>" },
	{ "FROM:<a@b.example> AUTH=user+40b.example", ALL, SMTP_PARSE_OK, "a@b.example",
	  "AUTH=user+40b.example" },
	{ "FROM:<a@b.example> AUTH=", ALL, SMTP_PARSE_BAD_PARAM, NULL, NULL },
	{ "FROM:<a@b.example> AUTH=a+4", ALL, SMTP_PARSE_BAD_PARAM, NULL, NULL },
	{ "FROM:<a@b.example> REQUIRETLS", ALL, SMTP_PARSE_OK, "a@b.example", "REQUIRETLS" },
	{ "FROM:<a@b.example> REQUIRETLS=yes", ALL, SMTP_PARSE_BAD_PARAM, NULL, NULL },
	{ "FROM:<a@b.example> SMTPUTF8", ALL, SMTP_PARSE_OK, "a@b.example", "SMTPUTF8" },
	{ "FROM:<a@b.example> SMTPUTF8=yes", ALL, SMTP_PARSE_BAD_PARAM, NULL, NULL },
	{ "FROM:<a@b.example> SMTPUTF8", NO_UTF8, SMTP_PARSE_UNKNOWN_PARAM, NULL, NULL },
	/* All together, in any order, normalized into one. */
	{ "FROM:<a@b.example> SIZE=1234 BODY=8BITMIME RET=HDRS ENVID=abc SMTPUTF8", ALL,
	  SMTP_PARSE_OK, "a@b.example", "SIZE=1234 BODY=8BITMIME RET=HDRS ENVID=abc SMTPUTF8" },
	{ "FROM:<a@b.example>  smtputf8   envid=abc ret=Hdrs Body=8bitMIME size=01234", ALL,
	  SMTP_PARSE_OK, "a@b.example", "SIZE=1234 BODY=8BITMIME RET=HDRS ENVID=abc SMTPUTF8" },
	{ "FROM:<a@b.example> REQUIRETLS AUTH=<> SIZE=1", ALL, SMTP_PARSE_OK, "a@b.example",
	  "SIZE=1 AUTH=<> REQUIRETLS" },
	/* Unknown, misplaced or malformed parameters. */
	{ "FROM:<a@b.example> XFOO=bar", ALL, SMTP_PARSE_UNKNOWN_PARAM, NULL, NULL },
	{ "FROM:<a@b.example> XFOO", ALL, SMTP_PARSE_UNKNOWN_PARAM, NULL, NULL },
	{ "FROM:<a@b.example> NOTIFY=NEVER", ALL, SMTP_PARSE_UNKNOWN_PARAM, NULL, NULL },
	{ "FROM:<a@b.example> ORCPT=rfc822;a@b.example", ALL, SMTP_PARSE_UNKNOWN_PARAM, NULL, NULL },
	{ "FROM:<a@b.example> =1", ALL, SMTP_PARSE_BAD_PARAM, NULL, NULL },
	{ "FROM:<a@b.example> SIZE=1=2", ALL, SMTP_PARSE_BAD_PARAM, NULL, NULL },
	{ "FROM:<a@b.example> -X=1", ALL, SMTP_PARSE_BAD_PARAM, NULL, NULL },
	{ "FROM:<a@b.example> X_Y=1", ALL, SMTP_PARSE_BAD_PARAM, NULL, NULL },
	{ "FROM:<a@b.example> SIZE=1\tBODY=7BIT", ALL, SMTP_PARSE_BAD_PARAM, NULL, NULL },
	/* UTF-8 needs SMTPUTF8 in the same command, and must be well formed. */
	{ "FROM:<pelé@exämple.com> SMTPUTF8", ALL, SMTP_PARSE_OK, "pelé@exämple.com", "SMTPUTF8" },
	{ "FROM:<pelé@example.com>", ALL, SMTP_PARSE_NEED_SMTPUTF8, NULL, NULL },
	{ "FROM:<user@exämple.com>", ALL, SMTP_PARSE_NEED_SMTPUTF8, NULL, NULL },
	{ "FROM:<\"pelé\"@example.com>", ALL, SMTP_PARSE_NEED_SMTPUTF8, NULL, NULL },
	{ "FROM:<pelé@example.com> SMTPUTF8", NO_UTF8, SMTP_PARSE_UNKNOWN_PARAM, NULL, NULL },
	{ "FROM:<pel\xc3@example.com> SMTPUTF8", ALL, SMTP_PARSE_SYNTAX, NULL, NULL },
	{ "FROM:<\xc0\xaf" "a@example.com> SMTPUTF8", ALL, SMTP_PARSE_SYNTAX, NULL, NULL },
	{ "FROM:<\xed\xa0\x80@example.com> SMTPUTF8", ALL, SMTP_PARSE_SYNTAX, NULL, NULL },
	{ "FROM:<\xf4\x90\x80\x80@example.com> SMTPUTF8", ALL, SMTP_PARSE_SYNTAX, NULL, NULL },
	{ "FROM:<a@example.com\xff> SMTPUTF8", ALL, SMTP_PARSE_SYNTAX, NULL, NULL },
};

/* check_canon_reparse - the canonical form parses back to itself */
static void
check_canon_reparse(const struct smtp_addr *a, unsigned flags)
{
	char canon[SMTP_PARSE_ADDR_SIZE], again[SMTP_PARSE_ADDR_SIZE];
	struct smtp_addr b;
	struct buf path;
	const char *why = NULL;

	ck_assert(smtp_parse_addr_format(a, canon, sizeof(canon)));
	buf_init(&path);
	buf_printf(&path, "<%s>", canon);
	ck_assert_msg(smtp_parse_path(path.data, path.len, flags, &b, &why) == SMTP_PARSE_OK,
	    "%s does not reparse: %s", path.data, why);
	ck_assert(smtp_parse_addr_format(&b, again, sizeof(again)));
	ck_assert_str_eq(canon, again);
	ck_assert_int_eq(a->is_quoted, b.is_quoted);
	ck_assert_int_eq(a->is_literal, b.is_literal);
	ck_assert_int_eq(a->is_utf8, b.is_utf8);
	buf_free(&path);
}

/* test_mail - MAIL arguments, directly and through framing and the verb split */
START_TEST(test_mail)
{
	struct smtp_parse_mail m, m2;
	struct smtp_parse_cmd cmd;
	struct buf line, params;
	char canon[SMTP_PARSE_ADDR_SIZE];
	enum smtp_parse_status st;
	const char *args = mail_cases[_i].args;

	buf_init(&line);
	buf_init(&params);
	st = smtp_parse_mail(args, strlen(args), mail_cases[_i].allowed, &m);
	ck_assert_msg(st == mail_cases[_i].status, "\"%s\": got %s (%s)", args,
	    smtp_parse_status_name(st), m.why ? m.why : "");
	if (st == SMTP_PARSE_OK) {
		ck_assert(smtp_parse_addr_format(&m.from, canon, sizeof(canon)));
		ck_assert_str_eq(canon, mail_cases[_i].canon);
		ck_assert_int_eq(m.from.is_null, canon[0] == '\0');
		smtp_parse_mail_params(&m, &params);
		ck_assert_str_eq(params.len ? params.data : "", mail_cases[_i].params);
		check_canon_reparse(&m.from, SMTP_PARSE_PATH_NULL_OK | SMTP_PARSE_PATH_UTF8);
	} else
		ck_assert_ptr_nonnull(m.why);

	/* The same through the line reader and the verb split. */
	buf_printf(&params, "|MAIL %s", args);
	frame_one(strchr(params.data, '|') + 1, &line);
	ck_assert_int_eq(smtp_parse_command(line.data, line.len, &cmd), SMTP_PARSE_OK);
	ck_assert_int_eq(cmd.verb, SMTP_PARSE_VERB_MAIL);
	ck_assert_int_eq(smtp_parse_mail(cmd.args, cmd.argslen, mail_cases[_i].allowed, &m2), st);
	ck_assert(memcmp(&m.from, &m2.from, sizeof(m.from)) == 0);
	buf_free(&line);
	buf_free(&params);
}
END_TEST

/* --- RCPT, with the relay tester's address forms ------------------------------- */

static const struct {
	const char *args;
	bool utf8;
	enum smtp_parse_status status;
	const char *canon;
	const char *params;
} rcpt_cases[] = {
	{ "TO:<user@example.com>", false, SMTP_PARSE_OK, "user@example.com", "" },
	{ "To: <User@Example.COM>", false, SMTP_PARSE_OK, "User@example.com", "" },
	{ "TO:<USER@LOCAL.TEST>", false, SMTP_PARSE_OK, "USER@local.test", "" },
	{ "TO:<postmaster>", false, SMTP_PARSE_OK, "postmaster", "" },
	{ "TO:<PostMaster>", false, SMTP_PARSE_OK, "postmaster", "" },
	{ "TO:<postmaster> NOTIFY=NEVER", false, SMTP_PARSE_OK, "postmaster", "NOTIFY=NEVER" },
	{ "TO:<postmaster@Example.com>", false, SMTP_PARSE_OK, "postmaster@example.com", "" },
	{ "TO:<Postmaster@example.com>", false, SMTP_PARSE_OK, "Postmaster@example.com", "" },
	{ "TO:<postmasterx>", false, SMTP_PARSE_SYNTAX, NULL, NULL },
	{ "TO:<\"postmaster\">", false, SMTP_PARSE_SYNTAX, NULL, NULL },
	{ "TO:<>", false, SMTP_PARSE_SYNTAX, NULL, NULL },
	{ "TO:<user>", false, SMTP_PARSE_SYNTAX, NULL, NULL },
	{ "TO:user@example.com", false, SMTP_PARSE_SYNTAX, NULL, NULL },
	{ "TO:", false, SMTP_PARSE_SYNTAX, NULL, NULL },
	{ "FROM:<user@example.com>", false, SMTP_PARSE_SYNTAX, NULL, NULL },
	{ "TO:<user@example.com >", false, SMTP_PARSE_SYNTAX, NULL, NULL },
	{ "TO:< user@example.com>", false, SMTP_PARSE_SYNTAX, NULL, NULL },
	{ "TO:<user @example.com>", false, SMTP_PARSE_SYNTAX, NULL, NULL },

	/* Relay tests (local.test is ours, foreign.test is not). */
	{ "TO:<user@foreign.test>", false, SMTP_PARSE_OK, "user@foreign.test", "" },
	{ "TO:<user%foreign.test@local.test>", false, SMTP_PARSE_OK, "user%foreign.test@local.test", "" },
	{ "TO:<foreign.test!user@local.test>", false, SMTP_PARSE_OK, "foreign.test!user@local.test", "" },
	{ "TO:<\"user@foreign.test\"@local.test>", false, SMTP_PARSE_OK,
	  "\"user@foreign.test\"@local.test", "" },
	{ "TO:<\"user%foreign.test\"@local.test>", false, SMTP_PARSE_OK,
	  "user%foreign.test@local.test", "" },
	{ "TO:<\"foreign.test!user\"@local.test>", false, SMTP_PARSE_OK,
	  "foreign.test!user@local.test", "" },
	{ "TO:<\"user\\@foreign.test\"@local.test>", false, SMTP_PARSE_OK,
	  "\"user@foreign.test\"@local.test", "" },
	{ "TO:<\"user\"@local.test>", false, SMTP_PARSE_OK, "user@local.test", "" },
	{ "TO:<user@foreign.test@local.test>", false, SMTP_PARSE_SYNTAX, NULL, NULL },
	{ "TO:<user@local.test@foreign.test>", false, SMTP_PARSE_SYNTAX, NULL, NULL },
	{ "TO:<user\\@foreign.test@local.test>", false, SMTP_PARSE_SYNTAX, NULL, NULL },
	{ "TO:<foreign.test:user@local.test>", false, SMTP_PARSE_SYNTAX, NULL, NULL },
	{ "TO:<@local.test:user@foreign.test>", false, SMTP_PARSE_OK, "user@foreign.test", "" },
	{ "TO:<@a.example,@b.example:user@c.example>", false, SMTP_PARSE_OK, "user@c.example", "" },
	{ "TO:<@local.test,user@foreign.test>", false, SMTP_PARSE_SYNTAX, NULL, NULL },
	{ "TO:<@:user@foreign.test>", false, SMTP_PARSE_SYNTAX, NULL, NULL },
	{ "TO:<@local.test:@foreign.test>", false, SMTP_PARSE_SYNTAX, NULL, NULL },
	{ "TO:<@local.test,@:user@foreign.test>", false, SMTP_PARSE_SYNTAX, NULL, NULL },
	{ "TO:<@[192.0.2.1]:user@foreign.test>", false, SMTP_PARSE_SYNTAX, NULL, NULL },
	{ "TO:<user@[192.0.2.1]>", false, SMTP_PARSE_OK, "user@[192.0.2.1]", "" },
	{ "TO:<user%foreign.test@[192.0.2.1]>", false, SMTP_PARSE_OK,
	  "user%foreign.test@[192.0.2.1]", "" },
	{ "TO:<user@[IPv6:2001:DB8:0:0:0:0:0:1]>", false, SMTP_PARSE_OK, "user@[IPv6:2001:db8::1]", "" },
	{ "TO:<user@[ipv6:::1]>", false, SMTP_PARSE_OK, "user@[IPv6:::1]", "" },
	{ "TO:<user@[IPv6:::ffff:192.0.2.1]>", false, SMTP_PARSE_OK, "user@[IPv6:::ffff:192.0.2.1]", "" },
	{ "TO:<user@[192.0.2.256]>", false, SMTP_PARSE_SYNTAX, NULL, NULL },
	{ "TO:<user@[192.0.2]>", false, SMTP_PARSE_SYNTAX, NULL, NULL },
	{ "TO:<user@[192.0.02.1]>", false, SMTP_PARSE_SYNTAX, NULL, NULL },
	{ "TO:<user@[2001:db8::1]>", false, SMTP_PARSE_SYNTAX, NULL, NULL },
	{ "TO:<user@[IPv6:192.0.2.1]>", false, SMTP_PARSE_SYNTAX, NULL, NULL },
	{ "TO:<user@[tag:anything]>", false, SMTP_PARSE_SYNTAX, NULL, NULL },
	{ "TO:<user@[]>", false, SMTP_PARSE_SYNTAX, NULL, NULL },
	{ "TO:<user@[192.0.2.1>", false, SMTP_PARSE_SYNTAX, NULL, NULL },
	{ "TO:<user@[192.0.2.1].example>", false, SMTP_PARSE_SYNTAX, NULL, NULL },
	{ "TO:<user@192.0.2.1>", false, SMTP_PARSE_OK, "user@192.0.2.1", "" },
	/* One root dot is the same domain, dropped; two dots or a dot alone never are. */
	{ "TO:<user@local.test.>", false, SMTP_PARSE_OK, "user@local.test", "" },
	{ "TO:<User@Local.TEST.>", false, SMTP_PARSE_OK, "User@local.test", "" },
	{ "TO:<postmaster@local.test.>", false, SMTP_PARSE_OK, "postmaster@local.test", "" },
	{ "TO:<user@localhost.> NOTIFY=NEVER", false, SMTP_PARSE_OK, "user@localhost",
	  "NOTIFY=NEVER" },
	{ "TO:<@relay.test:user@local.test.>", false, SMTP_PARSE_OK, "user@local.test", "" },
	{ "TO:<user@local.test..>", false, SMTP_PARSE_SYNTAX, NULL, NULL },
	{ "TO:<user@local.test. >", false, SMTP_PARSE_SYNTAX, NULL, NULL },
	{ "TO:<user@local.test.x.>", false, SMTP_PARSE_OK, "user@local.test.x", "" },
	{ "TO:<user@.>", false, SMTP_PARSE_SYNTAX, NULL, NULL },
	{ "TO:<user@..>", false, SMTP_PARSE_SYNTAX, NULL, NULL },
	{ "TO:<user@local-.>", false, SMTP_PARSE_SYNTAX, NULL, NULL },
	{ "TO:<user@[192.0.2.1].>", false, SMTP_PARSE_SYNTAX, NULL, NULL },
	{ "TO:<@relay.test.:user@local.test>", false, SMTP_PARSE_SYNTAX, NULL, NULL },
	{ "TO:<user@local.test.", false, SMTP_PARSE_SYNTAX, NULL, NULL },
	{ "TO:<user.@local.test.>", false, SMTP_PARSE_SYNTAX, NULL, NULL },
	{ "TO:<user@.local.test>", false, SMTP_PARSE_SYNTAX, NULL, NULL },
	{ "TO:<user@local..test>", false, SMTP_PARSE_SYNTAX, NULL, NULL },
	{ "TO:<user@>", false, SMTP_PARSE_SYNTAX, NULL, NULL },
	{ "TO:<@local.test>", false, SMTP_PARSE_SYNTAX, NULL, NULL },
	{ "TO:<user@-local.test>", false, SMTP_PARSE_SYNTAX, NULL, NULL },
	{ "TO:<user@local-.test>", false, SMTP_PARSE_SYNTAX, NULL, NULL },
	{ "TO:<user@lo_cal.test>", false, SMTP_PARSE_SYNTAX, NULL, NULL },
	{ "TO:<user@lo-cal.test>", false, SMTP_PARSE_OK, "user@lo-cal.test", "" },
	{ "TO:<user@LOCAL.Test>", false, SMTP_PARSE_OK, "user@local.test", "" },
	{ "TO:<user@localhost>", false, SMTP_PARSE_OK, "user@localhost", "" },
	{ "TO:<user@123.example>", false, SMTP_PARSE_OK, "user@123.example", "" },

	/* Local parts: dot-strings and quoted strings. */
	{ "TO:<User.Name+tag@local.test>", false, SMTP_PARSE_OK, "User.Name+tag@local.test", "" },
	{ "TO:<!#$%&'*+-/=?^_`{|}~@local.test>", false, SMTP_PARSE_OK,
	  "!#$%&'*+-/=?^_`{|}~@local.test", "" },
	{ "TO:<user.@local.test>", false, SMTP_PARSE_SYNTAX, NULL, NULL },
	{ "TO:<.user@local.test>", false, SMTP_PARSE_SYNTAX, NULL, NULL },
	{ "TO:<us..er@local.test>", false, SMTP_PARSE_SYNTAX, NULL, NULL },
	{ "TO:<us(er)@local.test>", false, SMTP_PARSE_SYNTAX, NULL, NULL },
	{ "TO:<\"us..er\"@local.test>", false, SMTP_PARSE_OK, "\"us..er\"@local.test", "" },
	{ "TO:<\"a b\"@local.test>", false, SMTP_PARSE_OK, "\"a b\"@local.test", "" },
	{ "TO:<\"a\\\"b\"@local.test>", false, SMTP_PARSE_OK, "\"a\\\"b\"@local.test", "" },
	{ "TO:<\"a\\b\"@local.test>", false, SMTP_PARSE_OK, "ab@local.test", "" },
	{ "TO:<\"a\\ b\"@local.test>", false, SMTP_PARSE_OK, "\"a b\"@local.test", "" },
	{ "TO:<\"a\\\\b\"@local.test>", false, SMTP_PARSE_OK, "\"a\\\\b\"@local.test", "" },
	{ "TO:<\"\"@local.test>", false, SMTP_PARSE_OK, "\"\"@local.test", "" },
	{ "TO:<\"a.b\"@local.test>", false, SMTP_PARSE_OK, "a.b@local.test", "" },
	{ "TO:<\".a\"@local.test>", false, SMTP_PARSE_OK, "\".a\"@local.test", "" },
	{ "TO:<\"abc@local.test>", false, SMTP_PARSE_SYNTAX, NULL, NULL },
	{ "TO:<a\"b\"@local.test>", false, SMTP_PARSE_SYNTAX, NULL, NULL },
	{ "TO:<\"a\"b@local.test>", false, SMTP_PARSE_SYNTAX, NULL, NULL },
	{ "TO:<\"a\"\"b\"@local.test>", false, SMTP_PARSE_SYNTAX, NULL, NULL },
	{ "TO:<\"a\tb\"@local.test>", false, SMTP_PARSE_SYNTAX, NULL, NULL },
	{ "TO:<\"a\\\tb\"@local.test>", false, SMTP_PARSE_SYNTAX, NULL, NULL },

	/* Limits: 64 for the local part, 256 for the whole path. */
	{ "TO:<1234567890123456789012345678901234567890123456789012345678901234@local.test>",
	  false, SMTP_PARSE_OK,
	  "1234567890123456789012345678901234567890123456789012345678901234@local.test", "" },
	{ "TO:<12345678901234567890123456789012345678901234567890123456789012345@local.test>",
	  false, SMTP_PARSE_TOO_LONG, NULL, NULL },
	{ "TO:<\"12345678901234567890123456789012345678901234567890123456789012\"@local.test>",
	  false, SMTP_PARSE_OK,
	  "12345678901234567890123456789012345678901234567890123456789012@local.test", "" },
	{ "TO:<\"123456789012345678901234567890123456789012345678901234567890123\"@local.test>",
	  false, SMTP_PARSE_TOO_LONG, NULL, NULL },
	{ "TO:<u@123456789012345678901234567890123456789012345678901234567890123.example>",
	  false, SMTP_PARSE_OK,
	  "u@123456789012345678901234567890123456789012345678901234567890123.example", "" },
	{ "TO:<u@1234567890123456789012345678901234567890123456789012345678901234.example>",
	  false, SMTP_PARSE_SYNTAX, NULL, NULL },
	{ "TO:<u@123456789012345678901234567890123456789012345678901234567890123.example.>",
	  false, SMTP_PARSE_OK,
	  "u@123456789012345678901234567890123456789012345678901234567890123.example", "" },

	/* Parameters. */
	{ "TO:<u@l.test> NOTIFY=SUCCESS,FAILURE", false, SMTP_PARSE_OK, "u@l.test",
	  "NOTIFY=SUCCESS,FAILURE" },
	{ "TO:<u@l.test> notify=delay,success", false, SMTP_PARSE_OK, "u@l.test",
	  "NOTIFY=SUCCESS,DELAY" },
	{ "TO:<u@l.test> NOTIFY=DELAY,FAILURE,SUCCESS", false, SMTP_PARSE_OK, "u@l.test",
	  "NOTIFY=SUCCESS,FAILURE,DELAY" },
	{ "TO:<u@l.test> NOTIFY=NEVER", false, SMTP_PARSE_OK, "u@l.test", "NOTIFY=NEVER" },
	{ "TO:<u@l.test> NOTIFY=NEVER,DELAY", false, SMTP_PARSE_BAD_PARAM, NULL, NULL },
	{ "TO:<u@l.test> NOTIFY=NEVER,NEVER", false, SMTP_PARSE_BAD_PARAM, NULL, NULL },
	{ "TO:<u@l.test> NOTIFY=SUCCESS,SUCCESS", false, SMTP_PARSE_BAD_PARAM, NULL, NULL },
	{ "TO:<u@l.test> NOTIFY=", false, SMTP_PARSE_BAD_PARAM, NULL, NULL },
	{ "TO:<u@l.test> NOTIFY", false, SMTP_PARSE_BAD_PARAM, NULL, NULL },
	{ "TO:<u@l.test> NOTIFY=SUCCESS,", false, SMTP_PARSE_BAD_PARAM, NULL, NULL },
	{ "TO:<u@l.test> NOTIFY=,SUCCESS", false, SMTP_PARSE_BAD_PARAM, NULL, NULL },
	{ "TO:<u@l.test> NOTIFY=SOMETIMES", false, SMTP_PARSE_BAD_PARAM, NULL, NULL },
	{ "TO:<u@l.test> ORCPT=rfc822;u+40l.test", false, SMTP_PARSE_OK, "u@l.test",
	  "ORCPT=rfc822;u+40l.test" },
	{ "TO:<u@l.test> ORCPT=rfc822;u@l.test NOTIFY=FAILURE", false, SMTP_PARSE_OK, "u@l.test",
	  "NOTIFY=FAILURE ORCPT=rfc822;u@l.test" },
	{ "TO:<u@l.test> ORCPT=rfc822;", false, SMTP_PARSE_BAD_PARAM, NULL, NULL },
	{ "TO:<u@l.test> ORCPT=u@l.test", false, SMTP_PARSE_BAD_PARAM, NULL, NULL },
	{ "TO:<u@l.test> ORCPT=;u@l.test", false, SMTP_PARSE_BAD_PARAM, NULL, NULL },
	{ "TO:<u@l.test> ORCPT=rfc822;u+4", false, SMTP_PARSE_BAD_PARAM, NULL, NULL },
	{ "TO:<u@l.test> ORCPT=rfc822;a ORCPT=rfc822;b", false, SMTP_PARSE_BAD_PARAM, NULL, NULL },
	{ "TO:<u@l.test> SIZE=1", false, SMTP_PARSE_UNKNOWN_PARAM, NULL, NULL },
	{ "TO:<u@l.test> XRCPTFORWARD=abc", false, SMTP_PARSE_UNKNOWN_PARAM, NULL, NULL },
	{ "TO:<u@l.test>NOTIFY=NEVER", false, SMTP_PARSE_SYNTAX, NULL, NULL },

	/* UTF-8 only in an SMTPUTF8 transaction. */
	{ "TO:<δοκιμή@παράδειγμα.δοκιμή>", false, SMTP_PARSE_NEED_SMTPUTF8, NULL, NULL },
	{ "TO:<δοκιμή@παράδειγμα.δοκιμή>", true, SMTP_PARSE_OK, "δοκιμή@παράδειγμα.δοκιμή", "" },
	{ "TO:<δοκιμή@παράδειγμα.δοκιμή.>", true, SMTP_PARSE_OK, "δοκιμή@παράδειγμα.δοκιμή", "" },
	{ "TO:<ÜSER@ÉXAMPLE.Test>", true, SMTP_PARSE_OK, "ÜSER@Éxample.test", "" },
	{ "TO:<\"ü ser\"@example.test>", true, SMTP_PARSE_OK, "\"ü ser\"@example.test", "" },
	{ "TO:<\"üser\"@example.test>", true, SMTP_PARSE_OK, "üser@example.test", "" },
	{ "TO:<@exämple.test:u@example.test>", true, SMTP_PARSE_SYNTAX, NULL, NULL },
	{ "TO:<u@[IPv6:::1\xc3\xa9]>", true, SMTP_PARSE_SYNTAX, NULL, NULL },
	{ "TO:<u@l.test> ORCPT=utf-8;δ@l.test", true, SMTP_PARSE_OK, "u@l.test",
	  "ORCPT=utf-8;δ@l.test" },
	{ "TO:<u@l.test> ORCPT=utf-8;δ@l.test", false, SMTP_PARSE_BAD_PARAM, NULL, NULL },
	{ "TO:<u@l.test> ORCPT=rfc822;δ@l.test", true, SMTP_PARSE_BAD_PARAM, NULL, NULL },
};

/* test_rcpt - RCPT arguments, directly and through framing and the verb split */
START_TEST(test_rcpt)
{
	struct smtp_parse_rcpt r, r2;
	struct smtp_parse_cmd cmd;
	struct buf line, params;
	char canon[SMTP_PARSE_ADDR_SIZE];
	enum smtp_parse_status st;
	const char *args = rcpt_cases[_i].args;

	buf_init(&line);
	buf_init(&params);
	st = smtp_parse_rcpt(args, strlen(args), ALL, rcpt_cases[_i].utf8, &r);
	ck_assert_msg(st == rcpt_cases[_i].status, "\"%s\": got %s (%s)", args,
	    smtp_parse_status_name(st), r.why ? r.why : "");
	if (st == SMTP_PARSE_OK) {
		ck_assert(smtp_parse_addr_format(&r.to, canon, sizeof(canon)));
		ck_assert_str_eq(canon, rcpt_cases[_i].canon);
		smtp_parse_rcpt_params(&r, &params);
		ck_assert_str_eq(params.len ? params.data : "", rcpt_cases[_i].params);
		check_canon_reparse(&r.to, SMTP_PARSE_PATH_POSTMASTER_OK |
		    (rcpt_cases[_i].utf8 ? SMTP_PARSE_PATH_UTF8 : 0));
		/* Nothing advertised: any parameter is unknown. */
		if (r.params != 0)
			ck_assert_int_eq(smtp_parse_rcpt(args, strlen(args), 0,
			    rcpt_cases[_i].utf8, &r2), SMTP_PARSE_UNKNOWN_PARAM);
	} else
		ck_assert_ptr_nonnull(r.why);

	buf_printf(&params, "|RCPT %s", args);
	frame_one(strchr(params.data, '|') + 1, &line);
	ck_assert_int_eq(smtp_parse_command(line.data, line.len, &cmd), SMTP_PARSE_OK);
	ck_assert_int_eq(cmd.verb, SMTP_PARSE_VERB_RCPT);
	ck_assert_int_eq(smtp_parse_rcpt(cmd.args, cmd.argslen, ALL, rcpt_cases[_i].utf8, &r2), st);
	ck_assert(memcmp(&r.to, &r2.to, sizeof(r.to)) == 0);
	buf_free(&line);
	buf_free(&params);
}
END_TEST

/* test_path_limits - the 256-octet path and 255-octet domain at their edges */
START_TEST(test_path_limits)
{
	char label[64], dom[300], path[400];
	struct smtp_addr a;
	const char *why;
	int n;

	/* Four 62-octet labels and a 4-octet one, dots between: 256 octets. */
	repeat(label, sizeof(label), 'd', 62);
	snprintf(dom, sizeof(dom), "%s.%s.%s.%s.abcd", label, label, label, label);
	ck_assert_uint_eq(strlen(dom), 256);
	/* "<a@" + 252-octet domain + ">" = 256: the longest path. */
	n = snprintf(path, sizeof(path), "<a@%s>", dom + 4);
	ck_assert_int_eq(n, 256);
	ck_assert_int_eq(smtp_parse_path(path, (size_t)n, 0, &a, &why), SMTP_PARSE_OK);
	ck_assert_str_eq(a.domain, dom + 4);
	n = snprintf(path, sizeof(path), "<ab@%s>", dom + 4);
	ck_assert_int_eq(smtp_parse_path(path, (size_t)n, 0, &a, &why), SMTP_PARSE_TOO_LONG);
	ck_assert_str_eq(why, "address too long");
	/* A root dot counts toward the path as sent; the domain is without it. */
	n = snprintf(path, sizeof(path), "<a@%s.>", dom + 4);
	ck_assert_int_eq(smtp_parse_path(path, (size_t)n, 0, &a, &why), SMTP_PARSE_TOO_LONG);
	n = snprintf(path, sizeof(path), "<a@%s.>", dom + 5);
	ck_assert_int_eq(n, 256);
	ck_assert_int_eq(smtp_parse_path(path, (size_t)n, 0, &a, &why), SMTP_PARSE_OK);
	ck_assert_str_eq(a.domain, dom + 5);
	/* A 256-octet domain is too long whatever else. */
	n = snprintf(path, sizeof(path), "<a@%s>", dom);
	ck_assert_int_eq(smtp_parse_path(path, (size_t)n, 0, &a, &why), SMTP_PARSE_TOO_LONG);
	/* A source route counts toward the path, though it is dropped. */
	n = snprintf(path, sizeof(path), "<@%s:a@b.example>", dom + 4);
	ck_assert_int_eq(smtp_parse_path(path, (size_t)n, 0, &a, &why), SMTP_PARSE_TOO_LONG);
	n = snprintf(path, sizeof(path), "<@%s:a@b.example>", dom + 60);
	ck_assert_int_eq(smtp_parse_path(path, (size_t)n, 0, &a, &why), SMTP_PARSE_OK);
	ck_assert_str_eq(a.local, "a");
	ck_assert_str_eq(a.domain, "b.example");
	/* Trailing text after a path is refused by smtp_parse_path. */
	ck_assert_int_eq(smtp_parse_path("<a@b.example> ", 14, 0, &a, &why), SMTP_PARSE_SYNTAX);
	ck_assert_int_eq(smtp_parse_path("<>", 2, 0, &a, &why), SMTP_PARSE_SYNTAX);
	ck_assert_int_eq(smtp_parse_path("<>", 2, SMTP_PARSE_PATH_NULL_OK, &a, &why),
	    SMTP_PARSE_OK);
	ck_assert(a.is_null);
	ck_assert_int_eq(smtp_parse_path("<", 1, SMTP_PARSE_PATH_NULL_OK, &a, &why),
	    SMTP_PARSE_SYNTAX);
	ck_assert_int_eq(smtp_parse_path("", 0, SMTP_PARSE_PATH_NULL_OK, &a, &why),
	    SMTP_PARSE_SYNTAX);
}
END_TEST

/* test_addr_format - truncation is reported, never silent */
START_TEST(test_addr_format)
{
	struct smtp_addr a;
	char small[8], big[SMTP_PARSE_ADDR_SIZE];

	ck_assert_int_eq(smtp_parse_path("<abc@d.example>", 15, 0, &a, NULL), SMTP_PARSE_OK);
	ck_assert(!smtp_parse_addr_format(&a, small, sizeof(small)));
	ck_assert(smtp_parse_addr_format(&a, big, sizeof(big)));
	ck_assert_str_eq(big, "abc@d.example");
	ck_assert(!a.is_quoted && !a.is_literal && !a.is_null && !a.is_postmaster);
}
END_TEST

/* --- HELO/EHLO, BDAT, AUTH ------------------------------------------------------ */

static const struct {
	struct bytes in;
	enum smtp_parse_status status;
	bool is_domain;
	bool is_literal;
} helo_cases[] = {
	{ S("mx.example.com"), SMTP_PARSE_OK, true, false },
	{ S("MX.Example.COM"), SMTP_PARSE_OK, true, false },
	{ S("localhost"), SMTP_PARSE_OK, true, false },
	{ S("[192.0.2.1]"), SMTP_PARSE_OK, false, true },
	{ S("[IPv6:2001:db8::1]"), SMTP_PARSE_OK, false, true },
	{ S("[192.0.2.999]"), SMTP_PARSE_OK, false, false },
	{ S("my_host"), SMTP_PARSE_OK, false, false },
	{ S("mx.example.com."), SMTP_PARSE_OK, false, false },
	{ S("192.0.2.1"), SMTP_PARSE_OK, true, false },
	{ S("exämple.com"), SMTP_PARSE_OK, true, false },
	{ S("\"quoted\""), SMTP_PARSE_OK, false, false },
	{ S(""), SMTP_PARSE_SYNTAX, false, false },
	{ S("a b"), SMTP_PARSE_SYNTAX, false, false },
	{ S("a\tb"), SMTP_PARSE_SYNTAX, false, false },
	{ S("a\0b"), SMTP_PARSE_SYNTAX, false, false },
	{ S("a\x7f"), SMTP_PARSE_SYNTAX, false, false },
	{ S("\xff"), SMTP_PARSE_SYNTAX, false, false },
	{ S("ex\xc3mple.com"), SMTP_PARSE_SYNTAX, false, false },
};

/* test_helo - lenient one-token check with domain/literal flags */
START_TEST(test_helo)
{
	struct smtp_parse_helo h, h2;
	struct smtp_parse_cmd cmd;
	struct buf line;
	enum smtp_parse_status st;

	st = smtp_parse_helo(helo_cases[_i].in.p, helo_cases[_i].in.len, &h);
	ck_assert_msg(st == helo_cases[_i].status, "case %d: got %s", _i,
	    smtp_parse_status_name(st));
	ck_assert_int_eq(h.is_domain, helo_cases[_i].is_domain);
	ck_assert_int_eq(h.is_literal, helo_cases[_i].is_literal);
	if (st == SMTP_PARSE_OK) {
		ck_assert_uint_eq(strlen(h.name), helo_cases[_i].in.len);
		ck_assert(memcmp(h.name, helo_cases[_i].in.p, helo_cases[_i].in.len) == 0);
		ck_assert_ptr_null(h.why);
	} else
		ck_assert_ptr_nonnull(h.why);

	buf_init(&line);
	if (through_reader("EHLO", helo_cases[_i].in.p, helo_cases[_i].in.len,
	    SMTP_PARSE_VERB_EHLO, &line, &cmd)) {
		ck_assert_int_eq(smtp_parse_helo(cmd.args, cmd.argslen, &h2), st);
		ck_assert(memcmp(&h, &h2, sizeof(h)) == 0);
	}
	buf_free(&line);
}
END_TEST

/* test_helo_length - SMTP_PARSE_HELO_MAX octets and not one more */
START_TEST(test_helo_length)
{
	char name[300];
	struct smtp_parse_helo h;

	repeat(name, sizeof(name), 'h', SMTP_PARSE_HELO_MAX + 1);
	ck_assert_int_eq(smtp_parse_helo(name, SMTP_PARSE_HELO_MAX, &h), SMTP_PARSE_OK);
	ck_assert(!h.is_domain);	/* one 255-octet label */
	ck_assert_int_eq(smtp_parse_helo(name, SMTP_PARSE_HELO_MAX + 1, &h), SMTP_PARSE_SYNTAX);
}
END_TEST

static const struct {
	const char *args;
	enum smtp_parse_status status;
	uint64_t size;
	bool last;
} bdat_cases[] = {
	{ "0", SMTP_PARSE_OK, 0, false },
	{ "0 LAST", SMTP_PARSE_OK, 0, true },
	{ "100", SMTP_PARSE_OK, 100, false },
	{ "100 LAST", SMTP_PARSE_OK, 100, true },
	{ "100 last", SMTP_PARSE_OK, 100, true },
	{ "100  LaSt", SMTP_PARSE_OK, 100, true },
	{ "0042", SMTP_PARSE_OK, 42, false },
	{ "18446744073709551615", SMTP_PARSE_OK, UINT64_MAX, false },
	{ "18446744073709551616", SMTP_PARSE_SYNTAX, 0, false },
	{ "184467440737095516150", SMTP_PARSE_SYNTAX, 0, false },
	{ "", SMTP_PARSE_SYNTAX, 0, false },
	{ "LAST", SMTP_PARSE_SYNTAX, 0, false },
	{ "100 LASTX", SMTP_PARSE_SYNTAX, 0, false },
	{ "100 LAS", SMTP_PARSE_SYNTAX, 0, false },
	{ "100 LAST x", SMTP_PARSE_SYNTAX, 0, false },
	{ "100LAST", SMTP_PARSE_SYNTAX, 0, false },
	{ "100\tLAST", SMTP_PARSE_SYNTAX, 0, false },
	{ "-1", SMTP_PARSE_SYNTAX, 0, false },
	{ "+1", SMTP_PARSE_SYNTAX, 0, false },
	{ "1a", SMTP_PARSE_SYNTAX, 0, false },
	{ "1 2", SMTP_PARSE_SYNTAX, 0, false },
	{ "0x10", SMTP_PARSE_SYNTAX, 0, false },
};

/* test_bdat - chunk size and LAST */
START_TEST(test_bdat)
{
	uint64_t size;
	bool last;
	const char *a = bdat_cases[_i].args;
	struct smtp_parse_cmd cmd;
	struct buf line;

	ck_assert_msg(smtp_parse_bdat(a, strlen(a), &size, &last) == bdat_cases[_i].status,
	    "\"%s\"", a);
	ck_assert(size == bdat_cases[_i].size);
	ck_assert_int_eq(last, bdat_cases[_i].last);

	buf_init(&line);
	if (through_reader("BDAT", a, strlen(a), SMTP_PARSE_VERB_BDAT, &line, &cmd)) {
		ck_assert_int_eq(smtp_parse_bdat(cmd.args, cmd.argslen, &size, &last),
		    bdat_cases[_i].status);
		ck_assert(size == bdat_cases[_i].size);
		ck_assert_int_eq(last, bdat_cases[_i].last);
	}
	buf_free(&line);
}
END_TEST

static const struct {
	const char *args;
	enum smtp_parse_status status;
	const char *mech;
	const char *initial;	/* NULL: none */
} auth_cases[] = {
	{ "PLAIN", SMTP_PARSE_OK, "PLAIN", NULL },
	{ "plain dGVzdAB0ZXN0AHRlc3Q=", SMTP_PARSE_OK, "PLAIN", "dGVzdAB0ZXN0AHRlc3Q=" },
	{ "PLAIN AA==", SMTP_PARSE_OK, "PLAIN", "AA==" },
	{ "PLAIN  AAAA  ", SMTP_PARSE_OK, "PLAIN", "AAAA" },
	{ "LOGIN =", SMTP_PARSE_OK, "LOGIN", "=" },
	{ "CRAM-MD5", SMTP_PARSE_OK, "CRAM-MD5", NULL },
	{ "scram-sha-256", SMTP_PARSE_OK, "SCRAM-SHA-256", NULL },
	{ "X_MECH", SMTP_PARSE_OK, "X_MECH", NULL },
	{ "ABCDEFGHIJKLMNOPQRST", SMTP_PARSE_OK, "ABCDEFGHIJKLMNOPQRST", NULL },
	{ "ABCDEFGHIJKLMNOPQRSTU", SMTP_PARSE_SYNTAX, NULL, NULL },
	{ "", SMTP_PARSE_SYNTAX, NULL, NULL },
	{ " PLAIN", SMTP_PARSE_SYNTAX, NULL, NULL },
	{ "PL@IN", SMTP_PARSE_SYNTAX, NULL, NULL },
	{ "PLAIN abc", SMTP_PARSE_SYNTAX, NULL, NULL },
	{ "PLAIN ab=c", SMTP_PARSE_SYNTAX, NULL, NULL },
	{ "PLAIN a===", SMTP_PARSE_SYNTAX, NULL, NULL },
	{ "PLAIN ====", SMTP_PARSE_SYNTAX, NULL, NULL },
	{ "PLAIN AAA=AAAA", SMTP_PARSE_SYNTAX, NULL, NULL },
	{ "PLAIN AAAA AAAA", SMTP_PARSE_SYNTAX, NULL, NULL },
	{ "PLAIN A-A_", SMTP_PARSE_SYNTAX, NULL, NULL },
	{ "PLAIN ==", SMTP_PARSE_SYNTAX, NULL, NULL },
};

/* test_auth - mechanism and initial response */
START_TEST(test_auth)
{
	struct smtp_parse_auth a, a2;
	struct smtp_parse_cmd cmd;
	struct buf line;
	const char *args = auth_cases[_i].args;

	ck_assert_msg(smtp_parse_auth(args, strlen(args), &a) == auth_cases[_i].status,
	    "\"%s\"", args);
	buf_init(&line);
	if (through_reader("AUTH", args, strlen(args), SMTP_PARSE_VERB_AUTH, &line, &cmd)) {
		ck_assert_int_eq(smtp_parse_auth(cmd.args, cmd.argslen, &a2),
		    auth_cases[_i].status);
		ck_assert_str_eq(a2.mech, a.mech);
		ck_assert_uint_eq(a2.initiallen, a.initiallen);
	}
	buf_free(&line);
	if (auth_cases[_i].status != SMTP_PARSE_OK) {
		ck_assert_ptr_nonnull(a.why);
		ck_assert_ptr_null(a.initial);
		return;
	}
	ck_assert_str_eq(a.mech, auth_cases[_i].mech);
	if (auth_cases[_i].initial == NULL)
		ck_assert_ptr_null(a.initial);
	else {
		ck_assert_uint_eq(a.initiallen, strlen(auth_cases[_i].initial));
		ck_assert(memcmp(a.initial, auth_cases[_i].initial, a.initiallen) == 0);
		ck_assert(a.initial > args && a.initial + a.initiallen <= args + strlen(args));
	}
}
END_TEST

/* test_names - every status and verb has a name */
START_TEST(test_names)
{
	ck_assert_str_eq(smtp_parse_status_name(SMTP_PARSE_UNKNOWN_PARAM), "UNKNOWN_PARAM");
	ck_assert_str_eq(smtp_parse_line_status_name(SMTP_PARSE_LINE_BARE_NEWLINE), "BARE_NEWLINE");
	ck_assert_str_eq(smtp_parse_verb_name(SMTP_PARSE_VERB_STARTTLS), "STARTTLS");
	ck_assert_str_eq(smtp_parse_status_name((enum smtp_parse_status)99), "?");
}
END_TEST

/* smtp_parse_suite - every test case above */
/* Table replies: every entry formats as CODE SP [ECODE SP] TEXT CRLF, and is cut, never its CRLF. */
START_TEST(test_reply_line)
{
	char line[SMTP_REPLY_LINE_MAX], small[16];
	size_t n;
	int id;

	n = smtp_reply_line(line, sizeof(line), R_BANNER, "mx.example.test");
	ck_assert_str_eq(line, "220 mx.example.test ESMTP portier\r\n");
	ck_assert_uint_eq(n, strlen(line));
	n = smtp_reply_line(line, sizeof(line), R_MAIL_OK, "h");
	ck_assert_str_eq(line, "250 2.1.0 Sender ok\r\n");
	for (id = 0; id < R_MAX; id++) {
		const struct smtp_reply_entry *e = smtp_reply_get((enum smtp_reply_id)id);
		char want[SMTP_REPLY_LINE_MAX];

		n = smtp_reply_line(line, sizeof(line), (enum smtp_reply_id)id, "host.test");
		ck_assert_uint_eq(n, strlen(line));
		ck_assert_int_eq(atoi(line), e->code);
		ck_assert_msg(n >= 6 && memcmp(line + n - 2, "\r\n", 2) == 0, "reply %d: %s", id, line);
		snprintf(want, sizeof(want), "%d %s%s", e->code, e->ecode ? e->ecode : "",
		    e->ecode ? " " : "");
		ck_assert_msg(strncmp(line, want, strlen(want)) == 0, "reply %d: %s", id, line);
	}
	/* Too small: the text is cut, the line still ends with CRLF and fits. */
	n = smtp_reply_line(small, sizeof(small), R_BANNER, "a-very-long-host-name.example.test");
	ck_assert_uint_eq(n, sizeof(small) - 1);
	ck_assert_str_eq(small, "220 a-very-lo\r\n");
	n = smtp_reply_line(small, 4, R_BANNER, "h");
	ck_assert_uint_eq(n, 0);
	ck_assert_str_eq(small, "");
}
END_TEST

static Suite *
smtp_parse_suite(void)
{
	Suite *s = suite_create("smtp_parse");
	TCase *tc;

	tc = tcase_create("line");
	tcase_add_loop_test(tc, test_line, 0, (int)ARRAY_SIZE(line_cases));
	tcase_add_test(tc, test_line_limit_512);
	tcase_add_test(tc, test_line_skip_state);
	suite_add_tcase(s, tc);

	tc = tcase_create("command");
	tcase_add_loop_test(tc, test_command, 0, (int)ARRAY_SIZE(cmd_cases));
	tcase_add_test(tc, test_names);
	suite_add_tcase(s, tc);

	tc = tcase_create("mail");
	tcase_add_loop_test(tc, test_mail, 0, (int)ARRAY_SIZE(mail_cases));
	suite_add_tcase(s, tc);

	tc = tcase_create("rcpt");
	tcase_add_loop_test(tc, test_rcpt, 0, (int)ARRAY_SIZE(rcpt_cases));
	tcase_add_test(tc, test_path_limits);
	tcase_add_test(tc, test_addr_format);
	suite_add_tcase(s, tc);

	tc = tcase_create("args");
	tcase_add_loop_test(tc, test_helo, 0, (int)ARRAY_SIZE(helo_cases));
	tcase_add_test(tc, test_helo_length);
	tcase_add_loop_test(tc, test_bdat, 0, (int)ARRAY_SIZE(bdat_cases));
	tcase_add_loop_test(tc, test_auth, 0, (int)ARRAY_SIZE(auth_cases));
	suite_add_tcase(s, tc);

	tc = tcase_create("reply");
	tcase_add_test(tc, test_reply_line);
	suite_add_tcase(s, tc);
	return s;
}

/* main - run the suite; the exit status tells make check */
UNIT_MAIN(smtp_parse_suite)
