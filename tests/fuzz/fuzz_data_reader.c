/*
 * fuzz_data_reader.c - libFuzzer target for the DATA/BDAT content reader.
 *
 * The first four octets choose the setup: octet 0 the mode (bit 0 RAW),
 * policy (bit 1 NORMALIZE), BDAT LAST (bit 2), line limit (bits 3-4) and
 * size limit (bits 5-6); octets 1 and 2 the limits; octet 3 seeds the
 * splits.  The rest is fed whole, one octet at a time and in pseudo-random
 * pieces, and the runs must agree in every respect.  Then the invariants:
 * consumed <= len; in DOT mode END exactly at the first CRLF.CRLF (with the
 * DATA command's CRLF before the input); the output never holds a bare CR,
 * a bare LF or a NUL and never exceeds max_size; without an error every
 * output line fits the line limit, a finished message ends with CRLF, and
 * the output, dot-stuffed again as a relay would send it, reads back to
 * itself and ends exactly where it should (no smuggling downstream).
 *
 * Never writes files; aborts (for libFuzzer to report) on any violation.
 */
#include "config.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "buf.h"
#include "data_reader.h"
#include "fuzz.h"

struct fuzz_setup {
	enum data_reader_mode mode;
	enum data_reader_bare bare;
	bool finish;
	size_t max_line;
	size_t max_size;
	uint64_t seed;
};

struct fuzz_run {
	struct buf out;
	enum data_reader_status status;
	size_t consumed;
	enum data_reader_error err;
	bool eightbit;
	uint64_t wire;
	uint64_t outn;
};

/* fuzz_rng - xorshift64 for the split points */
static uint64_t
fuzz_rng(uint64_t *s)
{
	*s ^= *s << 13;
	*s ^= *s >> 7;
	*s ^= *s << 17;
	return *s;
}

/* fuzz_feed - run the reader; maxpiece 0: whole, else pieces of 1..maxpiece */
static void
fuzz_feed(const struct fuzz_setup *fs, const uint8_t *in, size_t len, size_t maxpiece,
    struct fuzz_run *run)
{
	struct data_reader r;
	enum data_reader_status st = DATA_READER_MORE, st2;
	uint64_t seed = fs->seed;
	size_t off = 0, n, want, got;

	data_reader_init(&r, fs->mode, fs->max_line, fs->max_size, fs->bare);
	buf_init(&run->out);
	run->consumed = 0;
	do {
		n = len - off;
		if (maxpiece != 0) {
			want = 1 + (size_t)(fuzz_rng(&seed) % maxpiece);
			if (want < n)
				n = want;
		}
		got = (size_t)-1;
		st2 = data_reader_feed(&r, in + off, n, &run->out, &got);
		FUZZ_CHECK(got <= n);
		if (st == DATA_READER_END)
			FUZZ_CHECK(st2 == DATA_READER_END && got == 0);
		if (st2 == DATA_READER_MORE)
			FUZZ_CHECK(got == n);
		if (fs->mode == DATA_READER_RAW)
			FUZZ_CHECK(st2 == DATA_READER_MORE);
		run->consumed += got;
		off += n;
		st = st2;
	} while (off < len);
	if (fs->finish)
		FUZZ_CHECK(data_reader_finish(&r, &run->out) == data_reader_error(&r));
	run->status = st;
	run->err = data_reader_error(&r);
	run->eightbit = data_reader_8bit(&r);
	run->wire = data_reader_wire_octets(&r);
	run->outn = data_reader_out_octets(&r);
}

/* fuzz_same - two runs agree in every respect */
static void
fuzz_same(const struct fuzz_run *a, const struct fuzz_run *b)
{
	FUZZ_CHECK(a->status == b->status);
	FUZZ_CHECK(a->consumed == b->consumed);
	FUZZ_CHECK(a->err == b->err);
	FUZZ_CHECK(a->eightbit == b->eightbit);
	FUZZ_CHECK(a->wire == b->wire);
	FUZZ_CHECK(a->outn == b->outn);
	FUZZ_CHECK(a->out.len == b->out.len);
	FUZZ_CHECK(a->out.len == 0 || memcmp(a->out.data, b->out.data, a->out.len) == 0);
}

/* fuzz_terminator - end of the first CRLF.CRLF in CRLF+in, 0 if none */
static size_t
fuzz_terminator(const uint8_t *in, size_t len)
{
	const uint8_t *p;

	/* Only ".\r\n" at the start completes the virtual CRLF before the input. */
	if (len >= 3 && memcmp(in, ".\r\n", 3) == 0)
		return 3;
	for (p = in; len >= 5 && p <= in + len - 5; p++) {
		p = memchr(p, '\r', (size_t)(in + len - 4 - p));
		if (p == NULL)
			break;
		if (memcmp(p, "\r\n.\r\n", 5) == 0)
			return (size_t)(p - in) + 5;
	}
	return 0;
}

/* fuzz_output_shape - no bare CR/LF, no NUL; lines fit; finished ends in CRLF */
static void
fuzz_output_shape(const struct fuzz_setup *fs, const struct fuzz_run *run, bool complete)
{
	const char *o = run->out.data;
	size_t i, linestart = 0, n = run->out.len;

	FUZZ_CHECK(n == 0 || memchr(o, '\0', n) == NULL);
	for (i = 0; i < n; i++) {
		if (o[i] == '\r')
			FUZZ_CHECK(i + 1 < n && o[i + 1] == '\n');
		if (o[i] == '\n') {
			FUZZ_CHECK(i > 0 && o[i - 1] == '\r');
			/* A line is output only once its end passed the limit. */
			if (fs->max_line != 0)
				FUZZ_CHECK(i + 1 - linestart <= fs->max_line);
			linestart = i + 1;
		}
	}
	if (fs->max_size != 0)
		FUZZ_CHECK(n <= fs->max_size);
	FUZZ_CHECK(run->outn >= n);
	if (run->err == DATA_READER_OK) {
		FUZZ_CHECK(run->outn == n);
		if (complete)
			FUZZ_CHECK(n == 0 || (n >= 2 && o[n - 2] == '\r' && o[n - 1] == '\n'));
	}
}

/* fuzz_relay_roundtrip - the output, dot-stuffed and terminated, reads back to itself */
static void
fuzz_relay_roundtrip(const struct fuzz_run *run)
{
	struct fuzz_setup plain = { DATA_READER_DOT, DATA_READER_BARE_REJECT, false, 0, 0, 1 };
	struct fuzz_run back;
	struct buf wire;
	const char *o = run->out.data;
	size_t i, n = run->out.len;

	buf_init(&wire);
	for (i = 0; i < n; i++) {
		if (o[i] == '.' && (i == 0 || o[i - 1] == '\n'))
			buf_putc(&wire, '.');
		buf_putc(&wire, o[i]);
	}
	buf_puts(&wire, ".\r\nQUIT\r\n");
	fuzz_feed(&plain, (const uint8_t *)wire.data, wire.len, 0, &back);
	FUZZ_CHECK(back.status == DATA_READER_END);
	FUZZ_CHECK(back.err == DATA_READER_OK);
	FUZZ_CHECK(back.consumed == wire.len - 6);
	FUZZ_CHECK(back.out.len == n && (n == 0 || memcmp(back.out.data, o, n) == 0));
	buf_free(&back.out);
	buf_free(&wire);
}

/* LLVMFuzzerTestOneInput - one setup, three ways of feeding, all invariants */
int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct fuzz_setup fs;
	struct fuzz_run whole, bytes, pieces;
	const uint8_t *in;
	size_t len, term;
	bool complete;

	if (size < 4)
		return 0;
	fs.mode = data[0] & 1 ? DATA_READER_RAW : DATA_READER_DOT;
	fs.bare = data[0] & 2 ? DATA_READER_BARE_NORMALIZE : DATA_READER_BARE_REJECT;
	fs.finish = fs.mode == DATA_READER_RAW && (data[0] & 4) != 0;
	switch ((data[0] >> 3) & 3) {
	case 1:
		fs.max_line = 3 + data[1] % 40;
		break;
	case 2:
		fs.max_line = 1000;
		break;
	case 3:
		fs.max_line = 3 + (size_t)data[1];
		break;
	default:
		fs.max_line = 0;
	}
	switch ((data[0] >> 5) & 3) {
	case 1:
		fs.max_size = 1 + data[2];
		break;
	case 2:
		fs.max_size = 1 + (size_t)data[2] * 16;
		break;
	default:
		fs.max_size = 0;
	}
	fs.seed = 0x9e3779b97f4a7c15ULL ^ ((uint64_t)data[3] << 32 | size);
	in = data + 4;
	len = size - 4;

	fuzz_feed(&fs, in, len, 0, &whole);
	fuzz_feed(&fs, in, len, 1, &bytes);
	fuzz_feed(&fs, in, len, 1 + (size_t)(data[3] % 64), &pieces);
	fuzz_same(&whole, &bytes);
	fuzz_same(&whole, &pieces);

	FUZZ_CHECK(whole.consumed <= len);
	FUZZ_CHECK(whole.wire == whole.consumed);
	if (fs.mode == DATA_READER_DOT) {
		term = fuzz_terminator(in, len);
		FUZZ_CHECK(whole.status == (term != 0 ? DATA_READER_END : DATA_READER_MORE));
		FUZZ_CHECK(whole.consumed == (term != 0 ? term : len));
	} else
		FUZZ_CHECK(whole.consumed == len);

	complete = whole.status == DATA_READER_END || fs.finish;
	fuzz_output_shape(&fs, &whole, complete);
	if (whole.err == DATA_READER_OK && complete)
		fuzz_relay_roundtrip(&whole);

	buf_free(&whole.out);
	buf_free(&bytes.out);
	buf_free(&pieces.out);
	return 0;
}
