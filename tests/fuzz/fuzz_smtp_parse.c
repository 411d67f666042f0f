/*
 * fuzz_smtp_parse.c - libFuzzer target for smtpd/smtp_parse.c.
 *
 * The first two input bytes choose the line limit and the split seed; the
 * rest is client input.  It is framed whole, in pseudo-random splits and
 * (when short) one byte at a time, and all three must give the same lines.
 * Every line, and the raw input itself, then goes through every argument
 * parser, and the invariants a session relies on are checked: canonical
 * addresses and normalized parameters parse back to themselves, results
 * stay inside their limits.  Any broken invariant aborts, which libFuzzer
 * reports as a crash.  Never touches files, sockets or global state.
 */
#include "config.h"

#include <inttypes.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "buf.h"
#include "smtp_parse.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define FUZZ_ASSERT(c) do {						\
	if (!(c)) {							\
		fprintf(stderr, "%s:%d: invariant failed: %s\n",	\
		    __FILE__, __LINE__, #c);				\
		abort();						\
	}								\
} while (0)

enum split {
	SPLIT_WHOLE,
	SPLIT_RANDOM,
	SPLIT_BYTES,
};

/* next_rand - a small LCG; splits must be reproducible from the input */
static unsigned
next_rand(unsigned *state)
{
	*state = *state * 1103515245u + 12345u;
	return (*state >> 16) & 0x7fff;
}

/*
 * frame - feed in through one reader split as asked; append each event to
 * out as status byte, length and bytes, and end with the pending count.
 */
static void
frame(const char *in, size_t len, size_t max_line, enum split how, unsigned seed,
    struct buf *out)
{
	struct smtp_parse_reader r;
	struct buf pending;
	enum smtp_parse_line_status st;
	const char *line;
	size_t linelen, consumed, pos = 0, chunk;

	smtp_parse_reader_init(&r, max_line);
	buf_init(&pending);
	while (pos < len) {
		chunk = how == SPLIT_BYTES ? 1 : how == SPLIT_RANDOM ?
		    1 + next_rand(&seed) % (2 * max_line + 3) : len;
		if (chunk > len - pos)
			chunk = len - pos;
		buf_append(&pending, in + pos, chunk);
		pos += chunk;
		while (pending.len > 0) {
			st = smtp_parse_line(&r, pending.data, pending.len, &line,
			    &linelen, &consumed);
			FUZZ_ASSERT(consumed <= pending.len);
			FUZZ_ASSERT(st <= SMTP_PARSE_LINE_NUL);
			if (st == SMTP_PARSE_LINE_OK || st == SMTP_PARSE_LINE_BARE_NEWLINE) {
				FUZZ_ASSERT(line >= pending.data);
				FUZZ_ASSERT(line + linelen < pending.data + consumed);
				FUZZ_ASSERT(linelen + 1 <= max_line);
				if (st == SMTP_PARSE_LINE_OK) {
					FUZZ_ASSERT(memchr(line, '\r', linelen) == NULL);
					FUZZ_ASSERT(memchr(line, '\n', linelen) == NULL);
					FUZZ_ASSERT(memchr(line, '\0', linelen) == NULL);
				}
			} else
				FUZZ_ASSERT(line == NULL && linelen == 0);
			if (st != SMTP_PARSE_LINE_NEED_MORE) {
				FUZZ_ASSERT(consumed > 0);
				buf_putc(out, (char)('0' + st));
				buf_append(out, &linelen, sizeof(linelen));
				if (line != NULL)
					buf_append(out, line, linelen);
			}
			buf_consume(&pending, consumed);
			if (st == SMTP_PARSE_LINE_NEED_MORE && consumed == 0)
				break;
		}
	}
	buf_printf(out, "|%zu", pending.len);
	buf_free(&pending);
}

/* check_addr - limits hold and the canonical form parses back to itself */
static void
check_addr(const struct smtp_addr *a, unsigned flags)
{
	char canon[SMTP_PARSE_ADDR_SIZE], again[SMTP_PARSE_ADDR_SIZE];
	struct smtp_addr b;
	struct buf path;
	const char *why = NULL, *d;

	FUZZ_ASSERT(strlen(a->local) <= SMTP_PARSE_LOCAL_MAX);
	FUZZ_ASSERT(strlen(a->domain) <= SMTP_PARSE_DOMAIN_MAX);
	if (!a->is_literal)
		for (d = a->domain; *d; d++)
			FUZZ_ASSERT(!(*d >= 'A' && *d <= 'Z'));
	FUZZ_ASSERT(smtp_parse_addr_format(a, canon, sizeof(canon)));
	buf_init(&path);
	buf_printf(&path, "<%s>", canon);
	FUZZ_ASSERT(smtp_parse_path(path.data, path.len, flags, &b, &why) == SMTP_PARSE_OK);
	FUZZ_ASSERT(smtp_parse_addr_format(&b, again, sizeof(again)));
	FUZZ_ASSERT(strcmp(canon, again) == 0);
	FUZZ_ASSERT(memcmp(a, &b, sizeof(b)) == 0);
	buf_free(&path);
}

/* check_mail - MAIL invariants, including the normalized parameters */
static void
check_mail(const char *args, size_t len, unsigned allowed)
{
	struct smtp_parse_mail m, m2;
	char canon[SMTP_PARSE_ADDR_SIZE];
	struct buf params, again, line;
	enum smtp_parse_status st;

	st = smtp_parse_mail(args, len, allowed, &m);
	FUZZ_ASSERT(st <= SMTP_PARSE_TOO_LONG && st != SMTP_PARSE_UNKNOWN_CMD);
	if (st != SMTP_PARSE_OK) {
		FUZZ_ASSERT(m.why != NULL);
		return;
	}
	FUZZ_ASSERT((m.params & ~allowed) == 0);
	FUZZ_ASSERT(!m.from.is_utf8 || (m.params & SMTP_PARSE_PARAM_SMTPUTF8));
	FUZZ_ASSERT(!m.from.is_postmaster);
	check_addr(&m.from, SMTP_PARSE_PATH_NULL_OK | SMTP_PARSE_PATH_UTF8);

	buf_init(&params);
	buf_init(&again);
	buf_init(&line);
	smtp_parse_mail_params(&m, &params);
	FUZZ_ASSERT(smtp_parse_addr_format(&m.from, canon, sizeof(canon)));
	buf_printf(&line, "FROM:<%s>%s%s", canon, params.len ? " " : "",
	    params.len ? params.data : "");
	FUZZ_ASSERT(smtp_parse_mail(line.data, line.len, allowed, &m2) == SMTP_PARSE_OK);
	smtp_parse_mail_params(&m2, &again);
	FUZZ_ASSERT(params.len == again.len);
	FUZZ_ASSERT(params.len == 0 || strcmp(params.data, again.data) == 0);
	FUZZ_ASSERT(m2.params == m.params && m2.size == m.size && m2.body == m.body);
	buf_free(&params);
	buf_free(&again);
	buf_free(&line);
}

/* check_rcpt - RCPT invariants, including the normalized parameters */
static void
check_rcpt(const char *args, size_t len, unsigned allowed, bool utf8)
{
	struct smtp_parse_rcpt r, r2;
	char canon[SMTP_PARSE_ADDR_SIZE];
	struct buf params, again, line;
	enum smtp_parse_status st;

	st = smtp_parse_rcpt(args, len, allowed, utf8, &r);
	FUZZ_ASSERT(st <= SMTP_PARSE_TOO_LONG && st != SMTP_PARSE_UNKNOWN_CMD);
	if (st != SMTP_PARSE_OK) {
		FUZZ_ASSERT(r.why != NULL);
		return;
	}
	FUZZ_ASSERT((r.params & ~allowed) == 0);
	FUZZ_ASSERT(utf8 || !r.to.is_utf8);
	FUZZ_ASSERT(!r.to.is_null);
	FUZZ_ASSERT(!(r.notify & SMTP_PARSE_NOTIFY_NEVER) || r.notify == SMTP_PARSE_NOTIFY_NEVER);
	check_addr(&r.to, SMTP_PARSE_PATH_POSTMASTER_OK | (utf8 ? SMTP_PARSE_PATH_UTF8 : 0));

	buf_init(&params);
	buf_init(&again);
	buf_init(&line);
	smtp_parse_rcpt_params(&r, &params);
	FUZZ_ASSERT(smtp_parse_addr_format(&r.to, canon, sizeof(canon)));
	buf_printf(&line, "TO:<%s>%s%s", canon, params.len ? " " : "",
	    params.len ? params.data : "");
	FUZZ_ASSERT(smtp_parse_rcpt(line.data, line.len, allowed, utf8, &r2) == SMTP_PARSE_OK);
	smtp_parse_rcpt_params(&r2, &again);
	FUZZ_ASSERT(params.len == again.len);
	FUZZ_ASSERT(params.len == 0 || strcmp(params.data, again.data) == 0);
	FUZZ_ASSERT(r2.params == r.params && r2.notify == r.notify);
	buf_free(&params);
	buf_free(&again);
	buf_free(&line);
}

/* check_others - HELO, BDAT, AUTH and bare-path invariants */
static void
check_others(const char *args, size_t len)
{
	struct smtp_parse_helo h;
	struct smtp_parse_auth a;
	struct smtp_addr addr;
	uint64_t size, size2;
	bool last, last2;
	char again[64];
	const char *why = NULL;
	size_t i;
	int n;

	if (smtp_parse_helo(args, len, &h) == SMTP_PARSE_OK) {
		FUZZ_ASSERT(strlen(h.name) == len && memcmp(h.name, args, len) == 0);
		FUZZ_ASSERT(!(h.is_domain && h.is_literal));
	} else
		FUZZ_ASSERT(h.why != NULL && !h.is_domain && !h.is_literal);

	if (smtp_parse_bdat(args, len, &size, &last) == SMTP_PARSE_OK) {
		n = snprintf(again, sizeof(again), "%" PRIu64 "%s", size, last ? " LAST" : "");
		FUZZ_ASSERT(n > 0 && (size_t)n < sizeof(again));
		FUZZ_ASSERT(smtp_parse_bdat(again, (size_t)n, &size2, &last2) == SMTP_PARSE_OK);
		FUZZ_ASSERT(size2 == size && last2 == last);
	} else
		FUZZ_ASSERT(size == 0 && !last);

	if (smtp_parse_auth(args, len, &a) == SMTP_PARSE_OK) {
		FUZZ_ASSERT(a.mech[0] != '\0' && strlen(a.mech) <= SMTP_PARSE_MECH_MAX);
		for (i = 0; a.mech[i]; i++)
			FUZZ_ASSERT(!(a.mech[i] >= 'a' && a.mech[i] <= 'z'));
		if (a.initial != NULL)
			FUZZ_ASSERT(a.initial > args && a.initial + a.initiallen <= args + len &&
			    a.initiallen > 0);
	} else
		FUZZ_ASSERT(a.why != NULL && a.initial == NULL);

	for (i = 0; i < 8; i++)
		if (smtp_parse_path(args, len, (unsigned)i, &addr, &why) == SMTP_PARSE_OK)
			check_addr(&addr, (unsigned)i);
}

/* check_line - one framed line through the verb split and every parser */
static void
check_line(const char *line, size_t len, unsigned mask)
{
	struct smtp_parse_cmd cmd;
	enum smtp_parse_status st;
	const char *args;
	size_t argslen;

	st = smtp_parse_command(line, len, &cmd);
	FUZZ_ASSERT(st == SMTP_PARSE_OK || st == SMTP_PARSE_UNKNOWN_CMD ||
	    st == SMTP_PARSE_SYNTAX);
	FUZZ_ASSERT((st == SMTP_PARSE_UNKNOWN_CMD) == (cmd.verb == SMTP_PARSE_VERB_UNKNOWN));
	FUZZ_ASSERT(cmd.verb <= SMTP_PARSE_VERB_AUTH);
	FUZZ_ASSERT(cmd.args >= line && cmd.args + cmd.argslen <= line + len);
	args = cmd.args;
	argslen = cmd.argslen;

	check_mail(args, argslen, SMTP_PARSE_PARAM_ALL);
	check_mail(args, argslen, mask);
	check_rcpt(args, argslen, SMTP_PARSE_PARAM_ALL, false);
	check_rcpt(args, argslen, SMTP_PARSE_PARAM_ALL, true);
	check_rcpt(args, argslen, mask, (mask & 1) != 0);
	check_others(args, argslen);
	/* The raw line too: parsers must not rely on the verb split. */
	check_mail(line, len, SMTP_PARSE_PARAM_ALL);
	check_rcpt(line, len, SMTP_PARSE_PARAM_ALL, true);
	check_others(line, len);
}

/* LLVMFuzzerTestOneInput - frame three ways, compare, then parse every line */
int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct buf whole, other;
	const char *in, *p, *end;
	size_t len, max_line, linelen;
	unsigned seed, mask;
	char ev;

	if (size < 2)
		return 0;
	/* Mostly the real limit; sometimes a tiny one to reach TOO_LONG. */
	max_line = (data[0] & 0x80) ? 2 + (data[0] & 0x3f) : 512;
	seed = data[1];
	mask = (unsigned)(data[0] * 37u + data[1]) & SMTP_PARSE_PARAM_ALL;
	in = (const char *)data + 2;
	len = size - 2;

	buf_init(&whole);
	buf_init(&other);
	frame(in, len, max_line, SPLIT_WHOLE, 0, &whole);
	frame(in, len, max_line, SPLIT_RANDOM, seed, &other);
	FUZZ_ASSERT(whole.len == other.len && memcmp(whole.data, other.data, whole.len) == 0);
	if (len <= 2048) {
		buf_reset(&other);
		frame(in, len, max_line, SPLIT_BYTES, 0, &other);
		FUZZ_ASSERT(whole.len == other.len &&
		    memcmp(whole.data, other.data, whole.len) == 0);
	}

	/* Parsers must also survive what framing never passes: NUL, CR, LF. */
	check_line(in, len < 4096 ? len : 4096, mask);

	/* Walk the recorded events and parse each line that was returned. */
	p = whole.data;
	end = whole.data + whole.len;
	while (p < end && *p != '|') {
		ev = *p++;
		memcpy(&linelen, p, sizeof(linelen));
		p += sizeof(linelen);
		if (ev == '0' + SMTP_PARSE_LINE_OK || ev == '0' + SMTP_PARSE_LINE_BARE_NEWLINE) {
			check_line(p, linelen, mask);
			p += linelen;
		}
	}
	buf_free(&whole);
	buf_free(&other);
	return 0;
}
