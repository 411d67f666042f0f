/*
 * check_data_reader.c - unit tests for the DATA/BDAT content reader.
 *
 * Every table case is fed whole, one octet at a time, cut in two at every
 * position and in random pieces; all must give the same output, consumed
 * count, status and error.  A plain per-octet reference model, written from
 * the rules in data_reader.h, is compared with the reader on random inputs.
 * Never touches the network or the file system.
 */
#include "config.h"

#include <check.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "buf.h"
#include "data_reader.h"
#include "unit.h"

#define DOT DATA_READER_DOT
#define RAW DATA_READER_RAW
#define REJ DATA_READER_BARE_REJECT
#define NRM DATA_READER_BARE_NORMALIZE
#define MORE DATA_READER_MORE
#define END DATA_READER_END
#define OK DATA_READER_OK
#define LONG DATA_READER_LINE_TOO_LONG
#define BARE DATA_READER_BARE_NEWLINE
#define NUL DATA_READER_NUL
#define BIG DATA_READER_TOO_BIG

/* S - a string literal and its length, NULs included */
#define S(s) s, sizeof(s) - 1

struct dr_case {
	const char *name;
	enum data_reader_mode mode;
	enum data_reader_bare bare;
	size_t max_line;
	size_t max_size;
	const char *in;
	size_t inlen;
	enum data_reader_status status;
	size_t rest;		/* octets left after the terminator (END) */
	const char *out;
	size_t outlen;
	enum data_reader_error err;
	bool finish;		/* RAW: data_reader_finish at the end */
};

#define QUIT "QUIT\r\n"
#define SMUG "MAIL FROM:<e>\r\n"

static const struct dr_case cases[] = {
	/* Plain messages and dot-stuffing. */
	{ "plain", DOT, REJ, 1000, 0, S("Subject: x\r\n\r\nbody\r\n.\r\n"), END, 0,
	    S("Subject: x\r\n\r\nbody\r\n"), OK, false },
	{ "empty", DOT, REJ, 1000, 0, S(".\r\n"), END, 0, S(""), OK, false },
	{ "one empty line", DOT, REJ, 1000, 0, S("\r\n.\r\n"), END, 0, S("\r\n"), OK, false },
	{ "stuffed", DOT, REJ, 1000, 0, S("..x\r\n.\r\n"), END, 0, S(".x\r\n"), OK, false },
	{ "stuffed dot line", DOT, REJ, 1000, 0, S("a\r\n..\r\n.\r\n"), END, 0,
	    S("a\r\n.\r\n"), OK, false },
	{ "triple dot", DOT, REJ, 1000, 0, S("...\r\n.\r\n"), END, 0, S("..\r\n"), OK, false },
	{ "dot inside line", DOT, REJ, 1000, 0, S("a.b\r\n.\r\n"), END, 0, S("a.b\r\n"), OK, false },
	{ "unstuffed leading dot", DOT, REJ, 1000, 0, S(".b\r\n.\r\n"), END, 0, S("b\r\n"), OK, false },
	{ "dot space", DOT, REJ, 1000, 0, S(". \r\n.\r\n"), END, 0, S(" \r\n"), OK, false },
	{ "8bit", DOT, REJ, 1000, 0, S("caf\xc3\xa9\r\n.\r\n"), END, 0, S("caf\xc3\xa9\r\n"), OK, false },

	/* Pipelined commands after the terminator stay with the caller. */
	{ "pipelined quit", DOT, REJ, 1000, 0, S("x\r\n.\r\n" QUIT), END, 6, S("x\r\n"), OK, false },
	{ "pipelined dot", DOT, REJ, 1000, 0, S("x\r\n.\r\n.\r\n"), END, 3, S("x\r\n"), OK, false },
	{ "pipelined empty", DOT, REJ, 1000, 0, S(".\r\n" SMUG), END, 15, S(""), OK, false },

	/* Incomplete input: everything consumed, CR and dot held back. */
	{ "no end", DOT, REJ, 1000, 0, S("x\r\n"), MORE, 0, S("x\r\n"), OK, false },
	{ "held dot cr", DOT, REJ, 1000, 0, S("x\r\n.\r"), MORE, 0, S("x\r\n"), OK, false },
	{ "held dot", DOT, REJ, 1000, 0, S("x\r\n."), MORE, 0, S("x\r\n"), OK, false },
	{ "held cr", DOT, REJ, 1000, 0, S("x\r"), MORE, 0, S("x"), OK, false },
	{ "nothing", DOT, REJ, 1000, 0, S(""), MORE, 0, S(""), OK, false },

	/* SMTP smuggling: none of these end the message; the real CRLF.CRLF does. */
	{ "smuggle lf.lf rej", DOT, REJ, 1000, 0, S("a\n.\n" SMUG ".\r\n" QUIT), END, 6,
	    S("a"), BARE, false },
	{ "smuggle lf.lf nrm", DOT, NRM, 1000, 0, S("a\n.\n" SMUG ".\r\n" QUIT), END, 6,
	    S("a\r\n\r\n" SMUG), OK, false },
	{ "smuggle crlf.lf rej", DOT, REJ, 1000, 0, S("a\r\n.\n" SMUG ".\r\n" QUIT), END, 6,
	    S("a\r\n"), BARE, false },
	{ "smuggle crlf.lf nrm", DOT, NRM, 1000, 0, S("a\r\n.\n" SMUG ".\r\n" QUIT), END, 6,
	    S("a\r\n\r\n" SMUG), OK, false },
	{ "smuggle lf.crlf rej", DOT, REJ, 1000, 0, S("a\n.\r\n" SMUG ".\r\n" QUIT), END, 6,
	    S("a"), BARE, false },
	{ "smuggle lf.crlf nrm", DOT, NRM, 1000, 0, S("a\n.\r\n" SMUG ".\r\n" QUIT), END, 6,
	    S("a\r\n\r\n" SMUG), OK, false },
	{ "smuggle cr.crlf rej", DOT, REJ, 1000, 0, S("a\r.\r\n" SMUG ".\r\n" QUIT), END, 6,
	    S("a"), BARE, false },
	{ "smuggle cr.crlf nrm", DOT, NRM, 1000, 0, S("a\r.\r\n" SMUG ".\r\n" QUIT), END, 6,
	    S("a\r\n\r\n" SMUG), OK, false },
	{ "smuggle crlf.cr rej", DOT, REJ, 1000, 0, S("a\r\n.\r" SMUG ".\r\n" QUIT), END, 6,
	    S("a\r\n"), BARE, false },
	{ "smuggle crlf.cr nrm", DOT, NRM, 1000, 0, S("a\r\n.\r" SMUG ".\r\n" QUIT), END, 6,
	    S("a\r\n\r\n" SMUG), OK, false },
	{ "smuggle crlf cr.crlf nrm", DOT, NRM, 1000, 0, S("a\r\n\r.\r\n" SMUG ".\r\n" QUIT), END, 6,
	    S("a\r\n\r\n\r\n" SMUG), OK, false },
	{ "smuggle crlf lf.crlf rej", DOT, REJ, 1000, 0, S("a\r\n\n.\r\n" SMUG ".\r\n" QUIT), END, 6,
	    S("a\r\n"), BARE, false },
	{ "smuggle crlf lf.crlf nrm", DOT, NRM, 1000, 0, S("a\r\n\n.\r\n" SMUG ".\r\n" QUIT), END, 6,
	    S("a\r\n\r\n\r\n" SMUG), OK, false },
	{ "smuggle first .lf rej", DOT, REJ, 1000, 0, S(".\n" SMUG ".\r\n" QUIT), END, 6,
	    S(""), BARE, false },
	{ "smuggle first .lf nrm", DOT, NRM, 1000, 0, S(".\n" SMUG ".\r\n" QUIT), END, 6,
	    S("\r\n" SMUG), OK, false },
	{ "smuggle first lf.crlf nrm", DOT, NRM, 1000, 0, S("\n.\r\n" SMUG ".\r\n" QUIT), END, 6,
	    S("\r\n\r\n" SMUG), OK, false },
	{ "smuggle first cr.crlf nrm", DOT, NRM, 1000, 0, S("\r.\r\n" SMUG ".\r\n" QUIT), END, 6,
	    S("\r\n\r\n" SMUG), OK, false },
	{ "smuggle .lf then crlf.crlf", DOT, NRM, 1000, 0, S("a\r\n.\n\r\n.\r\n" QUIT), END, 6,
	    S("a\r\n\r\n\r\n"), OK, false },
	{ "smuggle . cr cr lf", DOT, NRM, 1000, 0, S("a\r\n.\r\r\nb\r\n.\r\n" QUIT), END, 6,
	    S("a\r\n\r\nb\r\n"), OK, false },
	/* CR CR LF "." CR LF contains CRLF.CRLF: it is the end, whatever the policy. */
	{ "cr crlf.crlf rej", DOT, REJ, 1000, 0, S("a\r\r\n.\r\n" QUIT), END, 6, S("a"), BARE, false },
	{ "cr crlf.crlf nrm", DOT, NRM, 1000, 0, S("a\r\r\n.\r\n" QUIT), END, 6, S("a\r\n"), OK, false },
	{ ". cr crlf.crlf", DOT, NRM, 1000, 0, S("a\r\n.\r\r\n.\r\n" QUIT), END, 6,
	    S("a\r\n\r\n"), OK, false },
	{ "crlf cr crlf.crlf rej", DOT, REJ, 1000, 0, S("a\r\n\r\r\n.\r\n"), END, 0,
	    S("a\r\n"), BARE, false },
	{ "normalized then stuffed", DOT, NRM, 1000, 0, S("a\n..b\r\n.\r\n"), END, 0,
	    S("a\r\n.b\r\n"), OK, false },

	/* Bare line ends. */
	{ "bare lf rej", DOT, REJ, 1000, 0, S("a\nb\r\n.\r\n"), END, 0, S("a"), BARE, false },
	{ "bare lf nrm", DOT, NRM, 1000, 0, S("a\nb\r\n.\r\n"), END, 0, S("a\r\nb\r\n"), OK, false },
	{ "bare cr rej", DOT, REJ, 1000, 0, S("a\rb\r\n.\r\n"), END, 0, S("a"), BARE, false },
	{ "bare cr nrm", DOT, NRM, 1000, 0, S("a\rb\r\n.\r\n"), END, 0, S("a\r\nb\r\n"), OK, false },
	{ "cr cr lf nrm", DOT, NRM, 1000, 0, S("a\r\r\nb\r\n.\r\n"), END, 0, S("a\r\nb\r\n"), OK, false },
	{ "cr run nrm", DOT, NRM, 1000, 0, S("a\r\r\rb\r\n.\r\n"), END, 0, S("a\r\nb\r\n"), OK, false },
	{ "lf lf nrm", DOT, NRM, 1000, 0, S("a\n\nb\r\n.\r\n"), END, 0, S("a\r\n\r\nb\r\n"), OK, false },
	{ "lf cr nrm", DOT, NRM, 1000, 0, S("a\n\rb\r\n.\r\n"), END, 0, S("a\r\n\r\nb\r\n"), OK, false },
	{ "first lf rej", DOT, REJ, 1000, 0, S("\n.\r\n.\r\n"), END, 0, S(""), BARE, false },
	{ "bare lf then nul", DOT, REJ, 1000, 0, S("a\n\0\r\n.\r\n"), END, 0, S("a"), BARE, false },

	/* NUL. */
	{ "nul", DOT, REJ, 1000, 0, S("a\0b\r\n.\r\n"), END, 0, S("a"), NUL, false },
	{ "nul first", DOT, REJ, 1000, 0, S("\0\r\n.\r\n"), END, 0, S(""), NUL, false },
	{ "nul then end", DOT, REJ, 1000, 0, S("a\r\n\0.\r\n.\r\n" QUIT), END, 6, S("a\r\n"), NUL, false },
	{ "nul after cr nrm", DOT, NRM, 1000, 0, S("a\r\0\r\n.\r\n"), END, 0, S("a\r\n"), NUL, false },

	/* Line length: wire octets incl. the line end, minus an unstuffed dot. */
	{ "line at limit", DOT, REJ, 10, 0, S("12345678\r\n.\r\n"), END, 0, S("12345678\r\n"), OK, false },
	{ "line over at lf", DOT, REJ, 10, 0, S("123456789\r\n.\r\n"), END, 0, S("123456789"), LONG, false },
	{ "line over at cr", DOT, REJ, 10, 0, S("1234567890\r\n.\r\n"), END, 0, S("1234567890"), LONG, false },
	{ "line over in text", DOT, REJ, 10, 0, S("12345678901234\r\n.\r\n" QUIT), END, 6,
	    S("1234567890"), LONG, false },
	{ "stuffed line at limit", DOT, REJ, 10, 0, S("..2345678\r\n.\r\n"), END, 0,
	    S(".2345678\r\n"), OK, false },
	{ "stuffed line over", DOT, REJ, 10, 0, S("..23456789\r\n.\r\n"), END, 0,
	    S(".23456789"), LONG, false },
	/* A bare LF or CR counts with the CR or LF it lacks: output lines fit. */
	{ "lf line at limit nrm", DOT, NRM, 10, 0, S("12345678\nx\r\n.\r\n"), END, 0,
	    S("12345678\r\nx\r\n"), OK, false },
	{ "lf line over nrm", DOT, NRM, 10, 0, S("123456789\nx\r\n.\r\n"), END, 0,
	    S("123456789"), LONG, false },
	{ "cr line at limit nrm", DOT, NRM, 10, 0, S("12345678\rx\r\n.\r\n"), END, 0,
	    S("12345678\r\nx\r\n"), OK, false },
	{ "cr line over nrm", DOT, NRM, 10, 0, S("123456789\rx\r\n.\r\n"), END, 0,
	    S("123456789"), LONG, false },
	{ "cr run counts", DOT, NRM, 10, 0, S("12345678\r\r\n.\r\n"), END, 0, S("12345678"), LONG, false },
	{ "lines reset", DOT, REJ, 10, 0, S("12345678\r\n12345678\r\n.\r\n"), END, 0,
	    S("12345678\r\n12345678\r\n"), OK, false },
	{ "min limit ok", DOT, REJ, 3, 0, S("a\r\n\r\n.\r\n"), END, 0, S("a\r\n\r\n"), OK, false },
	{ "min limit over", DOT, REJ, 3, 0, S("ab\r\n.\r\n"), END, 0, S("ab"), LONG, false },
	{ "unlimited line", DOT, REJ, 0, 0, S("12345678901234567890\r\n.\r\n"), END, 0,
	    S("12345678901234567890\r\n"), OK, false },

	/* Size: output octets. */
	{ "size at limit", DOT, REJ, 1000, 6, S("abcd\r\n.\r\n"), END, 0, S("abcd\r\n"), OK, false },
	{ "size over at crlf", DOT, REJ, 1000, 6, S("abcde\r\n.\r\n"), END, 0, S("abcde"), BIG, false },
	{ "size over in text", DOT, REJ, 1000, 6, S("abcdefg\r\n.\r\n" QUIT), END, 6,
	    S("abcdef"), BIG, false },
	{ "size counts unstuffed", DOT, REJ, 1000, 6, S("..bcd\r\n.\r\n"), END, 0, S(".bcd\r\n"), OK, false },
	{ "size lf nrm at limit", DOT, NRM, 1000, 9, S("abcd\nx\r\n.\r\n"), END, 0,
	    S("abcd\r\nx\r\n"), OK, false },
	{ "size lf nrm over", DOT, NRM, 1000, 6, S("abcde\nx\r\n.\r\n"), END, 0, S("abcde"), BIG, false },
	{ "size second line", DOT, REJ, 1000, 6, S("ab\r\ncd\r\n.\r\n"), END, 0, S("ab\r\ncd"), BIG, false },
	{ "size empty line", DOT, REJ, 1000, 2, S("\r\n.\r\n"), END, 0, S("\r\n"), OK, false },
	{ "size one", DOT, REJ, 1000, 1, S("\r\n.\r\n"), END, 0, S(""), BIG, false },
	{ "size empty message", DOT, REJ, 1000, 1, S(".\r\n"), END, 0, S(""), OK, false },
	{ "tie line over size", DOT, REJ, 5, 5, S("abcdef\r\n.\r\n"), END, 0, S("abcde"), LONG, false },
	{ "tie nul over line", DOT, REJ, 3, 0, S("abc\0\r\n.\r\n"), END, 0, S("abc"), NUL, false },

	/* RAW (BDAT): no dots, no terminator, finish at LAST. */
	{ "raw plain", RAW, REJ, 1000, 0, S("abc\r\n"), MORE, 0, S("abc\r\n"), OK, true },
	{ "raw dots kept", RAW, REJ, 1000, 0, S(".\r\n..x\r\n" QUIT), MORE, 0,
	    S(".\r\n..x\r\n" QUIT), OK, true },
	{ "raw no final crlf", RAW, REJ, 1000, 0, S("abc"), MORE, 0, S("abc\r\n"), OK, true },
	{ "raw final cr rej", RAW, REJ, 1000, 0, S("abc\r"), MORE, 0, S("abc"), BARE, true },
	{ "raw final cr nrm", RAW, NRM, 1000, 0, S("abc\r"), MORE, 0, S("abc\r\n"), OK, true },
	{ "raw final cr run nrm", RAW, NRM, 1000, 0, S("a\r\r"), MORE, 0, S("a\r\n"), OK, true },
	{ "raw empty", RAW, REJ, 1000, 0, S(""), MORE, 0, S(""), OK, true },
	{ "raw finish size ok", RAW, REJ, 1000, 5, S("abc"), MORE, 0, S("abc\r\n"), OK, true },
	{ "raw finish size over", RAW, REJ, 1000, 5, S("abcd"), MORE, 0, S("abcd"), BIG, true },
	{ "raw lf nrm", RAW, NRM, 1000, 0, S("a\nb"), MORE, 0, S("a\r\nb\r\n"), OK, true },
	{ "raw lf rej", RAW, REJ, 1000, 0, S("a\nb"), MORE, 0, S("a"), BARE, true },
	{ "raw cr cr lf nrm", RAW, NRM, 1000, 0, S("a\r\r\nb\r\n"), MORE, 0, S("a\r\nb\r\n"), OK, true },
	{ "raw held cr", RAW, REJ, 1000, 0, S("abc\r"), MORE, 0, S("abc"), OK, false },
	{ "raw line over", RAW, REJ, 10, 0, S("123456789\r\n"), MORE, 0, S("123456789"), LONG, true },
	{ "raw finish line at limit", RAW, REJ, 10, 0, S("12345678"), MORE, 0, S("12345678\r\n"), OK, true },
	{ "raw finish line over", RAW, REJ, 10, 0, S("123456789"), MORE, 0, S("123456789"), LONG, true },
	{ "raw finish cr at limit", RAW, NRM, 10, 0, S("12345678\r"), MORE, 0, S("12345678\r\n"), OK, true },
	{ "raw finish cr over", RAW, NRM, 10, 0, S("123456789\r"), MORE, 0, S("123456789"), LONG, true },
	/* Found by fuzz_data_reader: the CRLF added at LAST must fit the line limit. */
	{ "fuzz raw finish tiny limit", RAW, NRM, 4, 0, S("s/Q\x14"), MORE, 0, S("s/Q\x14"), LONG, true },
	{ "raw nul", RAW, REJ, 1000, 0, S("a\0b\r\n"), MORE, 0, S("a"), NUL, true },
};

struct dr_result {
	struct buf out;
	enum data_reader_status status;
	size_t consumed;
	enum data_reader_error err;
	bool eightbit;
	uint64_t wire;
	uint64_t outn;
};

/* rng_next - xorshift64: reproducible pseudo-random numbers for splits */
static uint64_t
rng_next(uint64_t *s)
{
	*s ^= *s << 13;
	*s ^= *s >> 7;
	*s ^= *s << 17;
	return *s;
}

/* feed_pieces - run the reader over in, cut into the given piece lengths */
static void
feed_pieces(enum data_reader_mode mode, enum data_reader_bare bare, size_t max_line,
    size_t max_size, bool finish, const char *in, const size_t *pieces, size_t npieces,
    struct dr_result *res)
{
	struct data_reader r;
	enum data_reader_status st = MORE, st2;
	size_t i, off = 0, got;

	data_reader_init(&r, mode, max_line, max_size, bare);
	buf_init(&res->out);
	res->consumed = 0;
	for (i = 0; i < npieces; i++) {
		got = (size_t)-1;
		st2 = data_reader_feed(&r, in + off, pieces[i], &res->out, &got);
		ck_assert_uint_le(got, pieces[i]);
		if (st == END)
			ck_assert(st2 == END && got == 0);
		if (st2 == MORE)
			ck_assert_uint_eq(got, pieces[i]);
		res->consumed += got;
		off += pieces[i];
		st = st2;
	}
	if (finish)
		ck_assert_int_eq(data_reader_finish(&r, &res->out), data_reader_error(&r));
	res->status = st;
	res->err = data_reader_error(&r);
	res->eightbit = data_reader_8bit(&r);
	res->wire = data_reader_wire_octets(&r);
	res->outn = data_reader_out_octets(&r);
}

/* check_case - compare one run with the table's expectation */
static void
check_case(const struct dr_case *c, const struct dr_result *res, const char *how)
{
	size_t want = c->status == END ? c->inlen - c->rest : c->inlen;

	ck_assert_msg(res->status == c->status, "%s/%s: status %d", c->name, how, res->status);
	ck_assert_msg(res->consumed == want, "%s/%s: consumed %zu want %zu", c->name, how,
	    res->consumed, want);
	ck_assert_msg(res->err == c->err, "%s/%s: error %s want %s", c->name, how,
	    data_reader_strerror(res->err), data_reader_strerror(c->err));
	ck_assert_msg(res->out.len == c->outlen && (c->outlen == 0 ||
	    memcmp(res->out.data, c->out, c->outlen) == 0),
	    "%s/%s: output \"%.*s\" (%zu) want \"%s\"", c->name, how, (int)res->out.len,
	    res->out.data ? res->out.data : "", res->out.len, c->out);
	ck_assert_msg(res->wire == want, "%s/%s: wire octets", c->name, how);
	if (c->err == OK)
		ck_assert_msg(res->outn == c->outlen, "%s/%s: out octets %llu", c->name, how,
		    (unsigned long long)res->outn);
	else
		ck_assert_msg(res->outn >= res->out.len, "%s/%s: out octets", c->name, how);
	ck_assert_msg(res->eightbit == (memchr(c->in, 0xc3, c->inlen) != NULL),
	    "%s/%s: 8bit", c->name, how);
}

/* run_case - feed with one split and check */
static void
run_case(const struct dr_case *c, const size_t *pieces, size_t npieces, const char *how)
{
	struct dr_result res;

	feed_pieces(c->mode, c->bare, c->max_line, c->max_size, c->finish, c->in, pieces,
	    npieces, &res);
	check_case(c, &res, how);
	buf_free(&res.out);
}

START_TEST(test_table)
{
	const struct dr_case *c = &cases[_i];
	size_t *pieces = calloc(c->inlen + 2, sizeof(*pieces));
	size_t i, n, left;
	uint64_t seed = 0x9e3779b97f4a7c15ULL + (uint64_t)_i;
	char how[64];

	ck_assert_ptr_nonnull(pieces);
	pieces[0] = c->inlen;
	run_case(c, pieces, 1, "whole");

	for (i = 0; i < c->inlen; i++)
		pieces[i] = 1;
	run_case(c, pieces, c->inlen, "bytewise");

	for (i = 0; i <= c->inlen; i++) {
		pieces[0] = i;
		pieces[1] = c->inlen - i;
		snprintf(how, sizeof(how), "cut at %zu", i);
		run_case(c, pieces, 2, how);
	}

	for (i = 0; i < 50; i++) {
		for (n = 0, left = c->inlen; left > 0; n++) {
			pieces[n] = 1 + (size_t)(rng_next(&seed) % (i % 2 ? 4 : 17));
			if (pieces[n] > left)
				pieces[n] = left;
			left -= pieces[n];
		}
		snprintf(how, sizeof(how), "random %zu", i);
		run_case(c, pieces, n, how);
	}
	free(pieces);
}
END_TEST

/*
 * The reference model: the rules of data_reader.h applied one octet at a
 * time, with no spans and no runs.  Deliberately naive.
 */
struct model {
	struct buf out;
	enum data_reader_status status;
	size_t consumed;
	enum data_reader_error err;
	bool eightbit;
	uint64_t outn;
};

/* model_fail - first error wins */
static void
model_fail(struct model *m, enum data_reader_error err)
{
	if (m->err == OK)
		m->err = err;
}

/* model_put - output unless failed */
static void
model_put(struct model *m, const void *p, size_t n)
{
	if (m->err == OK)
		buf_append(&m->out, p, n);
}

/* model_crlf - one output line end */
static void
model_crlf(struct model *m, size_t max_size)
{
	m->outn += 2;
	if (max_size != 0 && m->outn > max_size)
		model_fail(m, BIG);
	model_put(m, "\r\n", 2);
}

/* model_line - one more octet in the line */
static void
model_line(struct model *m, uint64_t *line, size_t max_line)
{
	(*line)++;
	if (max_line != 0 && *line > max_line)
		model_fail(m, LONG);
}

/* model_run - decode in with the naive model */
static void
model_run(enum data_reader_mode mode, enum data_reader_bare bare, size_t max_line,
    size_t max_size, bool finish, const unsigned char *in, size_t len, struct model *m)
{
	int bol = mode == DOT ? 1 : 0;	/* 1 after a genuine CRLF, 2 after another end */
	bool dot = false;		/* a "." began the line after a genuine CRLF */
	size_t crs = 0, i;		/* CRs pending */
	uint64_t line = 0;
	unsigned char c;

	memset(m, 0, sizeof(*m));
	buf_init(&m->out);
	for (i = 0; i < len; i++) {
		c = in[i];
		if (crs > 0) {
			if (c == '\n') {
				if (dot && crs == 1) {
					m->status = END;
					m->consumed = i + 1;
					return;
				}
				model_line(m, &line, max_line);
				model_crlf(m, max_size);
				crs = 0;
				line = 0;
				dot = false;
				bol = mode == DOT ? 1 : 0;
				continue;
			}
			if (bare == REJ)
				model_fail(m, BARE);
			if (c == '\r') {
				model_line(m, &line, max_line);
				crs++;
				continue;
			}
			model_line(m, &line, max_line);		/* the missing LF */
			model_crlf(m, max_size);
			crs = 0;
			line = 0;
			dot = false;
			bol = mode == DOT ? 2 : 0;
		}
		if (c == '\r') {
			model_line(m, &line, max_line);
			crs = 1;
			bol = 0;
			continue;
		}
		if (c == '\n') {
			if (bare == REJ)
				model_fail(m, BARE);
			line++;					/* the missing CR */
			model_line(m, &line, max_line);
			model_crlf(m, max_size);
			line = 0;
			dot = false;
			bol = mode == DOT ? 2 : 0;
			continue;
		}
		if (bol != 0 && c == '.') {
			dot = bol == 1;
			bol = 0;
			continue;
		}
		bol = 0;
		dot = false;
		if (c >= 0x80)
			m->eightbit = true;
		if (c == '\0')
			model_fail(m, NUL);
		model_line(m, &line, max_line);
		m->outn++;
		if (max_size != 0 && m->outn > max_size)
			model_fail(m, BIG);
		model_put(m, &c, 1);
	}
	m->status = MORE;
	m->consumed = len;
	if (finish && (crs > 0 || line > 0)) {
		if (crs > 0 && bare == REJ)
			model_fail(m, BARE);
		line += crs > 0 ? 0 : 1;		/* the missing CR */
		model_line(m, &line, max_line);		/* the missing LF */
		model_crlf(m, max_size);
	}
}

/* first_terminator - end of the first CRLF.CRLF in CRLF+in, or 0 if none */
static size_t
first_terminator(const unsigned char *in, size_t len)
{
	static const char term[] = "\r\n.\r\n";
	size_t i, j;

	for (i = 0; i + 3 <= len + 2; i++) {
		/* i indexes the virtual stream "\r\n" + in */
		for (j = 0; j < 5; j++) {
			size_t k = i + j;
			unsigned char ch;

			if (k >= len + 2)
				break;
			ch = k < 2 ? (unsigned char)"\r\n"[k] : in[k - 2];
			if (ch != (unsigned char)term[j])
				break;
		}
		if (j == 5)
			return i + 5 - 2;
	}
	return 0;
}

START_TEST(test_model)
{
	static const unsigned char alphabet[] = "aaaaaaab..........\r\r\r\r\r\r\n\n\n\n\n\n\0\xc3 ";
	unsigned char in[80];
	size_t pieces[80];
	uint64_t seed = 0x1234567887654321ULL;
	struct model m;
	struct dr_result res;
	enum data_reader_mode mode;
	enum data_reader_bare bare;
	size_t len, i, n, left, max_line, max_size, term;
	bool finish;
	int iter, split;

	for (iter = 0; iter < 8000; iter++) {
		len = (size_t)(rng_next(&seed) % sizeof(in));
		for (i = 0; i < len; i++)
			in[i] = alphabet[rng_next(&seed) % (sizeof(alphabet) - 1)];
		mode = rng_next(&seed) % 3 ? DOT : RAW;
		bare = rng_next(&seed) % 2 ? REJ : NRM;
		max_line = rng_next(&seed) % 3 ? 3 + (size_t)(rng_next(&seed) % 12) : 0;
		max_size = rng_next(&seed) % 3 ? 1 + (size_t)(rng_next(&seed) % 40) : 0;
		finish = mode == RAW && rng_next(&seed) % 2;

		model_run(mode, bare, max_line, max_size, finish, in, len, &m);
		if (mode == DOT) {
			term = first_terminator(in, len);
			ck_assert_msg(m.status == (term ? END : MORE), "model terminator");
			if (term)
				ck_assert_uint_eq(m.consumed, term);
		}
		for (split = 0; split < 4; split++) {
			if (split == 0) {
				pieces[0] = len;
				n = 1;
			} else {
				for (n = 0, left = len; left > 0; n++) {
					pieces[n] = 1 + (size_t)(rng_next(&seed) % (split == 1 ? 2 : 9));
					if (pieces[n] > left)
						pieces[n] = left;
					left -= pieces[n];
				}
			}
			feed_pieces(mode, bare, max_line, max_size, finish, (const char *)in,
			    pieces, n, &res);
			ck_assert_msg(res.status == m.status && res.consumed == m.consumed &&
			    res.err == m.err && res.eightbit == m.eightbit &&
			    res.outn == m.outn && res.out.len == m.out.len &&
			    (m.out.len == 0 || memcmp(res.out.data, m.out.data, m.out.len) == 0),
			    "iteration %d split %d: reader and model disagree (err %d/%d, "
			    "consumed %zu/%zu, out %zu/%zu)", iter, split, res.err, m.err,
			    res.consumed, m.consumed, res.out.len, m.out.len);
			buf_free(&res.out);
		}
		buf_free(&m.out);
	}
}
END_TEST

START_TEST(test_after_end)
{
	struct data_reader r;
	struct buf out;
	size_t got;

	buf_init(&out);
	data_reader_init(&r, DOT, 1000, 0, REJ);
	ck_assert_int_eq(data_reader_feed(&r, "a\r\n.\r\nQUIT\r\n", 12, &out, &got), END);
	ck_assert_uint_eq(got, 6);
	ck_assert_int_eq(data_reader_feed(&r, "QUIT\r\n", 6, &out, &got), END);
	ck_assert_uint_eq(got, 0);
	ck_assert_uint_eq(data_reader_wire_octets(&r), 6);
	ck_assert_uint_eq(data_reader_out_octets(&r), 3);

	/* Reuse for the next message. */
	buf_reset(&out);
	data_reader_init(&r, DOT, 1000, 0, REJ);
	ck_assert_int_eq(data_reader_feed(&r, "..\r\n.\r\n", 7, &out, &got), END);
	ck_assert_str_eq(out.data, ".\r\n");
	ck_assert_int_eq(data_reader_error(&r), OK);
	buf_free(&out);
}
END_TEST

START_TEST(test_null_out)
{
	struct data_reader r;
	size_t got;

	data_reader_init(&r, DOT, 1000, 0, REJ);
	ck_assert_int_eq(data_reader_feed(&r, "ab\r\n..c\r\n.\r\n", 12, NULL, &got), END);
	ck_assert_uint_eq(got, 12);
	ck_assert_uint_eq(data_reader_out_octets(&r), 8);
	ck_assert_int_eq(data_reader_error(&r), OK);
}
END_TEST

START_TEST(test_error_stops_output)
{
	struct data_reader r;
	struct buf out;
	char chunk[4096];
	size_t got, i;

	/* After an error the output stops growing but the terminator is still found. */
	buf_init(&out);
	data_reader_init(&r, DOT, 1000, 0, REJ);
	ck_assert_int_eq(data_reader_feed(&r, "x\0\r\n", 4, &out, &got), MORE);
	memset(chunk, 'y', sizeof(chunk));
	for (i = 0; i < sizeof(chunk); i += 100)
		memcpy(chunk + i, "\r\n", 2);
	for (i = 0; i < 100; i++)
		ck_assert_int_eq(data_reader_feed(&r, chunk, sizeof(chunk), &out, &got), MORE);
	ck_assert_int_eq(data_reader_feed(&r, "\r\n.\r\n", 5, &out, &got), END);
	ck_assert_uint_eq(out.len, 1);
	ck_assert_int_eq(data_reader_error(&r), NUL);
	ck_assert_uint_eq(data_reader_wire_octets(&r), 4 + 100 * sizeof(chunk) + 5);
	buf_free(&out);
}
END_TEST

START_TEST(test_bdat_chunks)
{
	struct data_reader r;
	struct buf out;
	size_t got;

	/* CRLF split across two BDAT chunks, then BDAT 0 LAST. */
	buf_init(&out);
	data_reader_init(&r, RAW, 1000, 0, REJ);
	ck_assert_int_eq(data_reader_feed(&r, "Subject: a\r", 11, &out, &got), MORE);
	ck_assert_uint_eq(got, 11);
	ck_assert_uint_eq(out.len, 10);
	ck_assert_int_eq(data_reader_feed(&r, "\n\r\nbody", 7, &out, &got), MORE);
	ck_assert_int_eq(data_reader_finish(&r, &out), OK);
	ck_assert_str_eq(out.data, "Subject: a\r\n\r\nbody\r\n");
	ck_assert_uint_eq(data_reader_wire_octets(&r), 18);
	ck_assert_uint_eq(data_reader_out_octets(&r), 20);
	buf_free(&out);
}
END_TEST

START_TEST(test_strerror)
{
	ck_assert_str_eq(data_reader_strerror(OK), "ok");
	ck_assert_str_eq(data_reader_strerror(LONG), "line too long");
	ck_assert_str_eq(data_reader_strerror(BARE), "bare CR or LF");
	ck_assert_str_eq(data_reader_strerror(NUL), "NUL octet");
	ck_assert_str_eq(data_reader_strerror(BIG), "message too big");
}
END_TEST

START_TEST(test_big_message)
{
	struct data_reader r;
	struct buf in, out, want;
	size_t got, i, off, n;
	uint64_t seed = 42;

	/* A 1 MB message in odd pieces: the span copy must match line by line. */
	buf_init(&in);
	buf_init(&out);
	buf_init(&want);
	for (i = 0; in.len < (1 << 20); i++) {
		if (i % 7 == 0) {
			buf_printf(&in, "..line %zu\r\n", i);
			buf_printf(&want, ".line %zu\r\n", i);
		} else {
			buf_printf(&in, "line %zu with some text \xe2\x82\xac\r\n", i);
			buf_printf(&want, "line %zu with some text \xe2\x82\xac\r\n", i);
		}
	}
	buf_puts(&in, ".\r\nQUIT\r\n");
	data_reader_init(&r, DOT, 1000, 0, REJ);
	for (off = 0;; off += got) {
		n = 1 + (size_t)(rng_next(&seed) % 3000);
		if (n > in.len - off)
			n = in.len - off;
		if (data_reader_feed(&r, in.data + off, n, &out, &got) == END)
			break;
		ck_assert_uint_eq(got, n);
	}
	ck_assert_uint_eq(off + got, in.len - 6);
	ck_assert_int_eq(data_reader_error(&r), OK);
	ck_assert(data_reader_8bit(&r));
	ck_assert_uint_eq(out.len, want.len);
	ck_assert_mem_eq(out.data, want.data, want.len);
	buf_free(&in);
	buf_free(&out);
	buf_free(&want);
}
END_TEST

/* data_reader_suite - all cases */
static Suite *
data_reader_suite(void)
{
	Suite *s = suite_create("data_reader");
	TCase *tc;

	tc = tcase_create("table");
	tcase_add_loop_test(tc, test_table, 0, (int)(sizeof(cases) / sizeof(cases[0])));
	suite_add_tcase(s, tc);

	tc = tcase_create("model");
	tcase_set_timeout(tc, 120);
	tcase_add_test(tc, test_model);
	suite_add_tcase(s, tc);

	tc = tcase_create("api");
	tcase_set_timeout(tc, 60);
	tcase_add_test(tc, test_after_end);
	tcase_add_test(tc, test_null_out);
	tcase_add_test(tc, test_error_stops_output);
	tcase_add_test(tc, test_bdat_chunks);
	tcase_add_test(tc, test_strerror);
	tcase_add_test(tc, test_big_message);
	suite_add_tcase(s, tc);
	return s;
}

UNIT_MAIN(data_reader_suite)
