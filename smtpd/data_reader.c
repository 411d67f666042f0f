/*
 * data_reader.c - DATA/BDAT content decoding; data_reader.h states the rules
 * on line ends, dots, the terminator and errors.
 *
 * Never does I/O, never consumes an octet past the terminator, never appends
 * to the output after an error.  The output buffer belongs to the caller.
 *
 * Speed: line content is found with memchr and copied in spans.  A span is a
 * stretch of input whose output is the same octets (text and genuine CRLFs);
 * it is appended with one buf_append and cut only where the output differs
 * from the input: a dropped dot, a normalized line end, an error, a CR held
 * back at the end of the input.  A whole well-formed message fed at once
 * costs one append per dot-stuffed line plus one.
 *
 * Exactness: every limit is checked at the octet that crosses it, also inside
 * a run of text, so any split of the input gives the same output, consumed
 * count and error as the whole (the unit tests and the fuzzer check this).
 */
#include "config.h"

#include <assert.h>
#include <string.h>

#include "data_reader.h"

/* The cursor of one feed call. */
struct dr_feed {
	struct data_reader *r;
	struct buf *out;
	const unsigned char *end;
	const unsigned char *span;	/* input not yet copied whose output is itself */
	const unsigned char *cr;	/* the pending CR if it is in this input, else NULL */
	const unsigned char *lf;	/* next LF at or after the cursor, or end */
	bool lf_ok;			/* lf is valid */
};

/* dr_set_error - record err unless an earlier error is already recorded */
static void
dr_set_error(struct data_reader *r, enum data_reader_error err)
{
	if (r->error == DATA_READER_OK)
		r->error = err;
}

/* dr_emit - append to the output unless an error has stopped it */
static void
dr_emit(struct dr_feed *f, const void *p, size_t n)
{
	if (f->r->error == DATA_READER_OK && f->out != NULL && n > 0)
		buf_append(f->out, p, n);
}

/* dr_flush - copy the span up to upto, restart it at next */
static void
dr_flush(struct dr_feed *f, const unsigned char *upto, const unsigned char *next)
{
	assert(upto >= f->span);
	dr_emit(f, f->span, (size_t)(upto - f->span));
	f->span = next;
}

/* dr_fail - first error wins; the output keeps exactly what precedes cut */
static void
dr_fail(struct dr_feed *f, enum data_reader_error err, const unsigned char *cut)
{
	if (f->r->error != DATA_READER_OK)
		return;
	dr_flush(f, cut, cut);
	f->r->error = err;
}

/* dr_line_octets - count n line-end octets; cut is where output stops on error */
static void
dr_line_octets(struct dr_feed *f, unsigned n, const unsigned char *cut)
{
	struct data_reader *r = f->r;

	r->line_len += n;
	if (r->max_text_line != 0 && r->line_len > r->max_text_line)
		dr_fail(f, DATA_READER_LINE_TOO_LONG, cut);
}

/* dr_out_crlf - count the two output octets of a line end against max_size */
static void
dr_out_crlf(struct dr_feed *f, const unsigned char *cut)
{
	struct data_reader *r = f->r;

	r->out_octets += 2;
	if (r->max_size != 0 && r->out_octets > r->max_size)
		dr_fail(f, DATA_READER_TOO_BIG, cut);
}

/* dr_bare - a bare CR or LF ends the output at cut under the REJECT policy */
static void
dr_bare(struct dr_feed *f, const unsigned char *cut)
{
	if (f->r->bare == DATA_READER_BARE_REJECT)
		dr_fail(f, DATA_READER_BARE_NEWLINE, cut);
}

/* dr_next_line - the state at the start of a line after a genuine or normalized end */
static void
dr_next_line(struct data_reader *r, bool genuine)
{
	r->line_len = 0;
	if (r->mode == DATA_READER_RAW)
		r->state = DATA_READER_S_TEXT;
	else
		r->state = genuine ? DATA_READER_S_BOL : DATA_READER_S_BOL_NORM;
}

/* dr_newline - write a line end that is not in the input: CRLF instead of cut..next */
static void
dr_newline(struct dr_feed *f, const unsigned char *cut, const unsigned char *next,
    bool genuine)
{
	dr_out_crlf(f, cut);
	dr_flush(f, cut, next);
	dr_emit(f, "\r\n", 2);
	dr_next_line(f->r, genuine);
}

/* dr_has_8bit - whether any of n octets has the high bit set (vectorizes) */
static bool
dr_has_8bit(const unsigned char *p, size_t n)
{
	unsigned char acc = 0;
	size_t i;

	for (i = 0; i < n; i++)
		acc |= p[i];
	return (acc & 0x80) != 0;
}

/* dr_text_limits - find the first octet of a text run that breaks a rule */
static void
dr_text_limits(struct dr_feed *f, const unsigned char *p, size_t n)
{
	struct data_reader *r = f->r;
	enum data_reader_error err = DATA_READER_OK;
	const unsigned char *nul;
	size_t at = n;

	/* Without an error line_len <= max_text_line and out_octets <= max_size. */
	nul = memchr(p, '\0', n);
	if (nul != NULL) {
		at = (size_t)(nul - p);
		err = DATA_READER_NUL;
	}
	if (r->max_text_line != 0 && r->line_len + n > r->max_text_line &&
	    r->max_text_line - r->line_len < at) {
		at = (size_t)(r->max_text_line - r->line_len);
		err = DATA_READER_LINE_TOO_LONG;
	}
	if (r->max_size != 0 && r->out_octets + n > r->max_size &&
	    r->max_size - r->out_octets < at) {
		at = (size_t)(r->max_size - r->out_octets);
		err = DATA_READER_TOO_BIG;
	}
	if (err != DATA_READER_OK)
		dr_fail(f, err, p + at);
}

/* dr_text - take the line content at p up to the next CR or LF; returns it */
static const unsigned char *
dr_text(struct dr_feed *f, const unsigned char *p)
{
	struct data_reader *r = f->r;
	const unsigned char *q;
	size_t n;

	/* The LF position is remembered so that runs of bare CRs stay linear. */
	if (!f->lf_ok || f->lf < p) {
		f->lf = memchr(p, '\n', (size_t)(f->end - p));
		if (f->lf == NULL)
			f->lf = f->end;
		f->lf_ok = true;
	}
	q = memchr(p, '\r', (size_t)(f->lf - p));
	if (q == NULL)
		q = f->lf;
	n = (size_t)(q - p);
	if (n == 0)
		return p;
	if (!r->eightbit)
		r->eightbit = dr_has_8bit(p, n);
	if (r->error == DATA_READER_OK)
		dr_text_limits(f, p, n);
	r->line_len += n;
	r->out_octets += n;
	return q;
}

/* dr_eol - a CR or LF inside a line (state TEXT) */
static const unsigned char *
dr_eol(struct dr_feed *f, const unsigned char *p)
{
	if (*p == '\r') {
		dr_line_octets(f, 1, p);
		f->cr = p;
		f->r->state = DATA_READER_S_CR;
		return p + 1;
	}
	dr_bare(f, p);
	/* The LF and the CR it lacks: the line is written with CRLF. */
	dr_line_octets(f, 2, p);
	dr_newline(f, p, p + 1, false);
	return p + 1;
}

/* dr_after_cr - the octet after a CR decides: CRLF, more CRs, or a bare CR */
static const unsigned char *
dr_after_cr(struct dr_feed *f, const unsigned char *p)
{
	struct data_reader *r = f->r;
	const unsigned char *cut = f->cr != NULL ? f->cr : p;

	if (*p == '\n') {
		dr_line_octets(f, 1, cut);
		if (f->cr != NULL) {
			/* The CR and LF are both in the span: copied as they are. */
			dr_out_crlf(f, cut);
			dr_next_line(r, true);
		} else
			dr_newline(f, p, p + 1, true);
		f->cr = NULL;
		return p + 1;
	}
	/* The CR before p is bare; a run of CRs is one line end. */
	dr_bare(f, cut);
	if (*p == '\r') {
		dr_line_octets(f, 1, cut);
		dr_flush(f, cut, p);
		f->cr = p;
		return p + 1;
	}
	/* The LF the line end lacks. */
	dr_line_octets(f, 1, cut);
	dr_newline(f, cut, p, false);
	f->cr = NULL;
	return p;
}

/* dr_bol - the first octet of a line (DOT mode): a dot is dropped */
static const unsigned char *
dr_bol(struct dr_feed *f, const unsigned char *p)
{
	struct data_reader *r = f->r;

	if (*p != '.') {
		r->state = DATA_READER_S_TEXT;
		return p;
	}
	/* RFC 5321 4.5.3.1.6: the dot added for transparency is not counted. */
	dr_flush(f, p, p + 1);
	r->state = r->state == DATA_READER_S_BOL ? DATA_READER_S_DOT : DATA_READER_S_TEXT;
	return p + 1;
}

/* dr_dot - the octet after a "." that followed a genuine CRLF */
static const unsigned char *
dr_dot(struct dr_feed *f, const unsigned char *p)
{
	if (*p != '\r') {
		f->r->state = DATA_READER_S_TEXT;
		return p;
	}
	dr_line_octets(f, 1, p);
	f->cr = p;
	f->r->state = DATA_READER_S_DOT_CR;
	return p + 1;
}

/* data_reader_init - start a message */
void
data_reader_init(struct data_reader *r, enum data_reader_mode mode,
    size_t max_text_line, size_t max_size, enum data_reader_bare bare)
{
	/* The terminator line alone is 3 octets. */
	assert(max_text_line == 0 || max_text_line >= 3);
	memset(r, 0, sizeof(*r));
	r->mode = mode;
	r->bare = bare;
	r->max_text_line = max_text_line;
	r->max_size = max_size;
	r->error = DATA_READER_OK;
	/* DOT starts right after the CRLF of the DATA command. */
	r->state = mode == DATA_READER_DOT ? DATA_READER_S_BOL : DATA_READER_S_TEXT;
}

/* data_reader_feed - decode input, stop right after the terminator */
enum data_reader_status
data_reader_feed(struct data_reader *r, const void *in, size_t len,
    struct buf *out, size_t *consumed_r)
{
	const unsigned char *start = in, *p = start;
	struct dr_feed f;

	if (r->state == DATA_READER_S_DONE) {
		assert(r->mode == DATA_READER_DOT);
		*consumed_r = 0;
		return DATA_READER_END;
	}
	if (len == 0) {
		*consumed_r = 0;
		return DATA_READER_MORE;
	}
	f.r = r;
	f.out = out;
	f.end = start + len;
	f.span = start;
	f.cr = NULL;
	f.lf = start;
	f.lf_ok = false;

	while (p < f.end) {
		switch (r->state) {
		case DATA_READER_S_TEXT:
			p = dr_text(&f, p);
			if (p < f.end)
				p = dr_eol(&f, p);
			break;
		case DATA_READER_S_CR:
			p = dr_after_cr(&f, p);
			break;
		case DATA_READER_S_BOL:
		case DATA_READER_S_BOL_NORM:
			p = dr_bol(&f, p);
			break;
		case DATA_READER_S_DOT:
			p = dr_dot(&f, p);
			break;
		case DATA_READER_S_DOT_CR:
			if (*p != '\n') {
				r->state = DATA_READER_S_CR;
				break;
			}
			/* CRLF "." CRLF: the dot and CR were never copied. */
			assert(f.span == (f.cr != NULL ? f.cr : p));
			r->state = DATA_READER_S_DONE;
			r->line_len = 0;
			*consumed_r = (size_t)(p + 1 - start);
			r->wire_octets += *consumed_r;
			return DATA_READER_END;
		case DATA_READER_S_DONE:
			fatal("data_reader_feed: bad state");
		}
	}
	/* A CR still pending is held back: its meaning depends on the next octet. */
	if ((r->state == DATA_READER_S_CR || r->state == DATA_READER_S_DOT_CR) &&
	    f.cr != NULL)
		dr_flush(&f, f.cr, f.cr);
	else
		dr_flush(&f, p, p);
	*consumed_r = len;
	r->wire_octets += len;
	return DATA_READER_MORE;
}

/* data_reader_finish - end of a BDAT message: settle a pending CR, end the last line */
enum data_reader_error
data_reader_finish(struct data_reader *r, struct buf *out)
{
	assert(r->mode == DATA_READER_RAW);
	assert(r->state != DATA_READER_S_DONE);
	if (r->state == DATA_READER_S_CR || r->line_len > 0) {
		if (r->state == DATA_READER_S_CR && r->bare == DATA_READER_BARE_REJECT)
			dr_set_error(r, DATA_READER_BARE_NEWLINE);
		/* The missing LF, or CR and LF, count: the line is written with CRLF. */
		r->line_len += r->state == DATA_READER_S_CR ? 1 : 2;
		if (r->max_text_line != 0 && r->line_len > r->max_text_line)
			dr_set_error(r, DATA_READER_LINE_TOO_LONG);
		r->out_octets += 2;
		if (r->max_size != 0 && r->out_octets > r->max_size)
			dr_set_error(r, DATA_READER_TOO_BIG);
		if (r->error == DATA_READER_OK && out != NULL)
			buf_append(out, "\r\n", 2);
	}
	r->line_len = 0;
	r->state = DATA_READER_S_DONE;
	return r->error;
}

/* data_reader_error - the first error, or DATA_READER_OK */
enum data_reader_error
data_reader_error(const struct data_reader *r)
{
	return r->error;
}

/* data_reader_strerror - static text for logs */
const char *
data_reader_strerror(enum data_reader_error err)
{
	switch (err) {
	case DATA_READER_OK:
		return "ok";
	case DATA_READER_LINE_TOO_LONG:
		return "line too long";
	case DATA_READER_BARE_NEWLINE:
		return "bare CR or LF";
	case DATA_READER_NUL:
		return "NUL octet";
	case DATA_READER_TOO_BIG:
		return "message too big";
	}
	return "unknown error";
}

/* data_reader_wire_octets - octets consumed so far */
uint64_t
data_reader_wire_octets(const struct data_reader *r)
{
	return r->wire_octets;
}

/* data_reader_out_octets - decoded message size */
uint64_t
data_reader_out_octets(const struct data_reader *r)
{
	return r->out_octets;
}

/* data_reader_8bit - whether an 8-bit octet was seen */
bool
data_reader_8bit(const struct data_reader *r)
{
	return r->eightbit;
}
