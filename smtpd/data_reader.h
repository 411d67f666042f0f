/*
 * data_reader.h - the message-content reader for DATA and BDAT: turns the
 * octets a client sends after DATA (dot-stuffed, ended by CRLF "." CRLF) or
 * in BDAT chunks (raw) into the message with CRLF line ends.
 *
 * Pure: no I/O, no allocation of its own, no logging.  It resumes on any
 * partial input (one octet at a time gives the same result as the whole),
 * so the session feeds it whatever the socket delivered.  It must never
 * consume an octet after the end-of-data terminator: those are the next
 * pipelined commands and belong to the caller.
 *
 * End of data (DOT mode) is the first CR LF "." CR LF in the stream, the
 * first CR LF being the one that ended the DATA command, and nothing else:
 * "\n.\n", "\r\n.\n", "\n.\r\n", "\r.\r\n" and friends never end a message
 * (SMTP smuggling, 2023).  The terminator is recognized the same way in both
 * bare-newline policies and after an error.
 *
 * Line ends.  A line ends at an LF, at CR LF, or at CRs followed by
 * something else; a run of CRs belongs to the line end it precedes, so
 * "\r\r\n" is ONE line end (with a bare CR in it) and "a\r\rb" is one line
 * end between "a" and "b".  A CR not immediately followed by LF is a bare
 * CR; an LF not immediately preceded by CR is a bare LF.  Each line end is
 * written as exactly one CRLF (with REJECT the output stops at the error
 * anyway), so the output never holds a bare CR or LF.
 *
 * Dots (DOT mode).  A line that begins with "." loses that first dot, after
 * any line end, genuine or normalized; the only exception is the genuine
 * terminator.  So "..x" gives ".x", and "\n.\r\n" (a "." line after a bare
 * LF, which never ends the message) gives an empty line.
 *
 * Errors are sticky, the first one wins, and each is taken at the exact
 * octet that causes it (same result whatever the feed splits): at that point
 * the output holds everything decoded before that octet and nothing after;
 * the reader keeps scanning for the terminator so the session replies once,
 * at the end, and stays in sync.  Ties at one octet: NUL or BARE_NEWLINE,
 * then LINE_TOO_LONG, then TOO_BIG.
 *
 * Ownership: the caller owns the struct (embed it; no free needed) and the
 * output buffer; the reader only appends to it.
 */
#ifndef PORTIER_DATA_READER_H
#define PORTIER_DATA_READER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "buf.h"

enum data_reader_mode {
	DATA_READER_DOT,	/* DATA: dot-stuffed, ends at CRLF.CRLF */
	DATA_READER_RAW,	/* BDAT chunks: no dots, no terminator */
};

enum data_reader_bare {
	DATA_READER_BARE_REJECT,	/* bare CR or LF is an error */
	DATA_READER_BARE_NORMALIZE,	/* bare CR or LF is a line end, written CRLF */
};

enum data_reader_status {
	DATA_READER_MORE,	/* all input consumed, want more */
	DATA_READER_END,	/* DOT: terminator consumed, nothing after it */
};

enum data_reader_error {
	DATA_READER_OK,
	DATA_READER_LINE_TOO_LONG,	/* line over max_text_line (see data_reader_init) */
	DATA_READER_BARE_NEWLINE,	/* bare CR or LF, REJECT policy */
	DATA_READER_NUL,		/* a NUL octet */
	DATA_READER_TOO_BIG,		/* output over max_size octets */
};

/* Private states; listed here only so the struct can be embedded. */
enum data_reader_state {
	DATA_READER_S_BOL,	/* after a genuine CRLF: "." may begin the terminator */
	DATA_READER_S_BOL_NORM,	/* after a normalized line end: "." is stuffing only */
	DATA_READER_S_TEXT,	/* inside a line */
	DATA_READER_S_CR,	/* inside a line after a CR; the next octet decides */
	DATA_READER_S_DOT,	/* "." after a genuine CRLF */
	DATA_READER_S_DOT_CR,	/* "." CR after a genuine CRLF: LF ends the message */
	DATA_READER_S_DONE,	/* terminator seen (DOT) or finished (RAW) */
};

/* Fields are read through the getters below; never written by callers. */
struct data_reader {
	enum data_reader_mode mode;
	enum data_reader_bare bare;
	size_t max_text_line;		/* 0 = unlimited, else >= 3 */
	size_t max_size;		/* 0 = unlimited */
	enum data_reader_state state;
	enum data_reader_error error;
	uint64_t line_len;		/* octets of the current line so far */
	uint64_t wire_octets;		/* consumed, terminator included */
	uint64_t out_octets;		/* decoded size, counted on past an error */
	bool eightbit;			/* an octet >= 0x80 was seen */
};

/*
 * data_reader_init - start a message.  max_text_line (RFC 5321 4.5.3.1.6:
 * 1000) counts a line's wire octets including its line end, in both modes,
 * except a leading dot removed by unstuffing (as the RFC says), and counting
 * a CR or LF missing from the line end as if present (the line is written
 * with CRLF), so every output line fits with its CRLF.  max_size counts
 * output octets.  0 disables either.  Call again to reuse the struct.
 */
void data_reader_init(struct data_reader *r, enum data_reader_mode mode,
    size_t max_text_line, size_t max_size, enum data_reader_bare bare);

/*
 * data_reader_feed - decode len octets of input, appending the message to
 * out (NULL: decode and count only).  *consumed_r is len, except on END in
 * DOT mode, where it stops right after the terminator's LF.  Once END has
 * been returned, further calls return END and consume nothing.  RAW mode
 * always consumes everything and returns MORE.
 */
enum data_reader_status data_reader_feed(struct data_reader *r, const void *in,
    size_t len, struct buf *out, size_t *consumed_r);

/*
 * data_reader_finish - RAW mode only, at BDAT LAST: a CR pending at the end
 * is a bare CR (REJECT: error; NORMALIZE: a line end); a final line without
 * a line end gets a CRLF (counted in out_octets, against max_size and in the
 * line length), so the output always ends with CRLF unless empty.
 * Returns the reader's error.  No feed may follow.
 */
enum data_reader_error data_reader_finish(struct data_reader *r, struct buf *out);

/* data_reader_error - the first error, or DATA_READER_OK. */
enum data_reader_error data_reader_error(const struct data_reader *r);
/* data_reader_strerror - static text for logs, e.g. "line too long". */
const char *data_reader_strerror(enum data_reader_error err);
/* data_reader_wire_octets - octets consumed so far, terminator included. */
uint64_t data_reader_wire_octets(const struct data_reader *r);
/* data_reader_out_octets - decoded message size (counted on past errors). */
uint64_t data_reader_out_octets(const struct data_reader *r);
/* data_reader_8bit - whether any octet >= 0x80 was seen in the content. */
bool data_reader_8bit(const struct data_reader *r);

#endif
