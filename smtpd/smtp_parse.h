/*
 * smtp_parse.h - the SMTP command-phase parser: line framing, verbs,
 * MAIL/RCPT paths and ESMTP parameters, HELO/EHLO, BDAT and AUTH arguments.
 *
 * Pure functions over bytes: no I/O, no event loop, no logging, no
 * allocation, no globals.  Input is never trusted and never assumed to be
 * NUL-terminated; every length is bounded and every number overflow-checked.
 * It never decides policy (who may relay, which extensions are offered): the
 * caller says what it advertised and acts on the result.
 *
 * Ownership: results live in caller-provided structs with fixed-size arrays
 * and own no heap memory.  Pointers in a result (a line, command arguments,
 * an AUTH initial response) point into the caller's input and live as long
 * as it does.  Every `why` text is static.
 *
 * Every error here but a bad BDAT leaves the session in sync: the caller
 * replies (the comment on each status names the reply) and goes on reading
 * commands, counting the error toward its 421 limit.
 */
#ifndef PORTIER_SMTP_PARSE_H
#define PORTIER_SMTP_PARSE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "buf.h"

/* RFC 5321 4.5.3.1: octet limits, enforced on what the client sent. */
#define SMTP_PARSE_LOCAL_MAX	64	/* local part */
#define SMTP_PARSE_DOMAIN_MAX	255	/* domain */
#define SMTP_PARSE_PATH_MAX	256	/* "<...>" with punctuation and any source route */
/* A buffer of this size always holds smtp_parse_addr_format's output. */
#define SMTP_PARSE_ADDR_SIZE	(SMTP_PARSE_LOCAL_MAX + 1 + SMTP_PARSE_DOMAIN_MAX + 1)

#define SMTP_PARSE_ENVID_MAX	100	/* RFC 3461 4.4, decoded octets */
#define SMTP_PARSE_XTEXT_MAX	500	/* ORCPT (RFC 3461 4.2), AUTH=, stored ENVID */
#define SMTP_PARSE_HELO_MAX	255
#define SMTP_PARSE_MECH_MAX	20	/* SASL mechanism name, RFC 4422 3.1 */

/* --- line framing --------------------------------------------------------- */

enum smtp_parse_line_status {
	SMTP_PARSE_LINE_OK,		/* a line ending in CRLF */
	SMTP_PARSE_LINE_NEED_MORE,	/* no complete line yet: read more input */
	SMTP_PARSE_LINE_TOO_LONG,	/* 500 5.5.2; reported once per over-long line */
	SMTP_PARSE_LINE_BARE_NEWLINE,	/* 500 5.5.2; bare CR inside, or bare LF at the end */
	SMTP_PARSE_LINE_NUL,		/* 500 5.5.2; a NUL octet in the line */
};

/*
 * The reader keeps no copy of the input: the caller keeps unconsumed bytes
 * and offers them again with more appended.  Its only state is whether it is
 * discarding the tail of an over-long line, so that state must survive
 * between calls on one connection (reset it after STARTTLS).
 */
struct smtp_parse_reader {
	size_t max_line;	/* octets including CRLF; RFC 5321: 512 */
	bool skipping;		/* inside an over-long line, discarding through the next LF */
};

/* smtp_parse_reader_init - a reader for lines of at most max_line octets (>= 2) */
void smtp_parse_reader_init(struct smtp_parse_reader *r, size_t max_line);
/* smtp_parse_reader_reset - forget any partial over-long line */
void smtp_parse_reader_reset(struct smtp_parse_reader *r);

/*
 * smtp_parse_line - frame the next command line in buf[0..len).
 *
 * *consumed_r is always set: the caller drops that many bytes from the
 * front of its input, whatever the status.  On OK, *line_r and *linelen_r
 * give the line without CRLF (inside buf, possibly after skipped bytes).  On
 * BARE_NEWLINE they give the line without its final LF (and CR, if CRLF),
 * for a session that chooses to be lenient; otherwise NULL and 0.  TOO_LONG
 * wins over NUL, NUL over BARE_NEWLINE.
 *
 * The caller offers all its pending input, or a prefix of at least max_line
 * bytes of it (so a contiguous max_line-byte pull-up is enough); an
 * over-long line is then reported as soon as max_line bytes have arrived,
 * without waiting for its end.  The rest of that line is skipped silently
 * across calls, so the client gets one reply per bad line.
 */
enum smtp_parse_line_status smtp_parse_line(struct smtp_parse_reader *r,
    const char *buf, size_t len, const char **line_r, size_t *linelen_r,
    size_t *consumed_r);

/* --- results shared by the argument parsers --------------------------------- */

enum smtp_parse_status {
	SMTP_PARSE_OK,
	SMTP_PARSE_UNKNOWN_CMD,		/* 500 5.5.2 */
	SMTP_PARSE_SYNTAX,		/* 501: 5.1.7 (MAIL) / 5.1.3 (RCPT) / 5.5.4 (other) */
	SMTP_PARSE_BAD_PARAM,		/* 501 5.5.4: known parameter, bad value or repeated */
	SMTP_PARSE_UNKNOWN_PARAM,	/* 555 5.5.4: unknown or not advertised */
	SMTP_PARSE_NEED_SMTPUTF8,	/* 553 5.6.7: non-ASCII address without SMTPUTF8 */
	SMTP_PARSE_TOO_LONG,		/* 501 5.1.3: local part, domain or path over its limit */
};

/* smtp_parse_status_name - "OK", "SYNTAX", ... for logs and tests */
const char *smtp_parse_status_name(enum smtp_parse_status s);
/* smtp_parse_line_status_name - "OK", "NEED_MORE", ... for logs and tests */
const char *smtp_parse_line_status_name(enum smtp_parse_line_status s);

/* --- verbs ----------------------------------------------------------------- */

enum smtp_parse_verb {
	SMTP_PARSE_VERB_UNKNOWN,
	SMTP_PARSE_VERB_HELO,
	SMTP_PARSE_VERB_EHLO,
	SMTP_PARSE_VERB_MAIL,
	SMTP_PARSE_VERB_RCPT,
	SMTP_PARSE_VERB_DATA,
	SMTP_PARSE_VERB_BDAT,
	SMTP_PARSE_VERB_RSET,
	SMTP_PARSE_VERB_NOOP,
	SMTP_PARSE_VERB_QUIT,
	SMTP_PARSE_VERB_VRFY,
	SMTP_PARSE_VERB_EXPN,
	SMTP_PARSE_VERB_HELP,
	SMTP_PARSE_VERB_STARTTLS,
	SMTP_PARSE_VERB_AUTH,
};

struct smtp_parse_cmd {
	enum smtp_parse_verb verb;
	const char *args;	/* into the line, surrounding SP/HTAB trimmed; never NULL */
	size_t argslen;
};

/*
 * smtp_parse_command - split a line (from smtp_parse_line) into verb and
 * arguments.  The verb is case-insensitive and must be followed by SP or the
 * end of the line.  Returns UNKNOWN_CMD (verb UNKNOWN), SYNTAX when arguments
 * are missing (HELO EHLO MAIL RCPT BDAT AUTH VRFY EXPN) or present where none
 * are allowed (DATA RSET STARTTLS; QUIT, NOOP and HELP ignore theirs), or OK.
 * cmd_r is filled in every case.
 */
enum smtp_parse_status smtp_parse_command(const char *line, size_t len,
    struct smtp_parse_cmd *cmd_r);
/* smtp_parse_verb_name - "MAIL", ...; "UNKNOWN" for SMTP_PARSE_VERB_UNKNOWN */
const char *smtp_parse_verb_name(enum smtp_parse_verb verb);

/* --- addresses --------------------------------------------------------------- */

/*
 * One canonical form, by construction: the domain is lower-cased (ASCII
 * letters only; U-labels are kept as sent), an address literal is rewritten
 * by inet_ntop as "[192.0.2.1]" or "[IPv6:2001:db8::1]", the local part keeps
 * its case, a quoted local part whose content is a Dot-string loses its
 * quotes, and any other quoted one keeps them with only '"' and '\' escaped.
 * Source routes are dropped.  Two spellings of one mailbox give equal strings.
 */
struct smtp_addr {
	char local[SMTP_PARSE_LOCAL_MAX + 1];	/* "" for the null path */
	char domain[SMTP_PARSE_DOMAIN_MAX + 1];	/* "" for the null path and <postmaster> */
	bool is_null;		/* "<>" */
	bool is_postmaster;	/* "<postmaster>" with no domain (RCPT only) */
	bool is_quoted;		/* local is a quoted-string */
	bool is_literal;	/* domain is an address literal */
	bool is_utf8;		/* non-ASCII octets in local part or domain */
};

/* Flags for smtp_parse_path. */
#define SMTP_PARSE_PATH_NULL_OK		0x01u	/* accept "<>" (reverse-path) */
#define SMTP_PARSE_PATH_POSTMASTER_OK	0x02u	/* accept "<postmaster>" (forward-path) */
#define SMTP_PARSE_PATH_UTF8		0x04u	/* SMTPUTF8 in effect: non-ASCII allowed */

/*
 * smtp_parse_path - parse exactly one "<...>" path occupying all of s[0..len).
 * Returns OK, SYNTAX, TOO_LONG or NEED_SMTPUTF8; *why_r (may be NULL) gets a
 * short static reason on error.
 */
enum smtp_parse_status smtp_parse_path(const char *s, size_t len,
    unsigned flags, struct smtp_addr *addr_r, const char **why_r);

/*
 * smtp_parse_addr_format - the canonical "local@domain" ("" for the null
 * path, "postmaster" for <postmaster>) into dst; false if it did not fit.
 * A dst of SMTP_PARSE_ADDR_SIZE always fits.
 */
bool smtp_parse_addr_format(const struct smtp_addr *a, char *dst, size_t size);

/* --- MAIL and RCPT ------------------------------------------------------------- */

/* ESMTP parameters: bits for `allowed` (what the session advertised) and `params`. */
#define SMTP_PARSE_PARAM_SIZE		0x001u	/* RFC 1870 */
#define SMTP_PARSE_PARAM_BODY		0x002u	/* RFC 6152, RFC 3030 */
#define SMTP_PARSE_PARAM_SMTPUTF8	0x004u	/* RFC 6531 */
#define SMTP_PARSE_PARAM_RET		0x008u	/* RFC 3461 */
#define SMTP_PARSE_PARAM_ENVID		0x010u	/* RFC 3461 */
#define SMTP_PARSE_PARAM_AUTH		0x020u	/* RFC 4954 */
#define SMTP_PARSE_PARAM_REQUIRETLS	0x040u	/* RFC 8689 */
#define SMTP_PARSE_PARAM_NOTIFY		0x080u	/* RFC 3461 */
#define SMTP_PARSE_PARAM_ORCPT		0x100u	/* RFC 3461 */
#define SMTP_PARSE_PARAM_ALL		0x1ffu

enum smtp_parse_body {
	SMTP_PARSE_BODY_NONE,
	SMTP_PARSE_BODY_7BIT,
	SMTP_PARSE_BODY_8BITMIME,
	SMTP_PARSE_BODY_BINARYMIME,
};

enum smtp_parse_ret {
	SMTP_PARSE_RET_NONE,
	SMTP_PARSE_RET_FULL,
	SMTP_PARSE_RET_HDRS,
};

/* NOTIFY bits; NEVER is never combined with the others. */
#define SMTP_PARSE_NOTIFY_NEVER		0x01u
#define SMTP_PARSE_NOTIFY_SUCCESS	0x02u
#define SMTP_PARSE_NOTIFY_FAILURE	0x04u
#define SMTP_PARSE_NOTIFY_DELAY		0x08u

struct smtp_parse_mail {
	struct smtp_addr from;
	unsigned params;	/* SMTP_PARSE_PARAM_* that were given */
	uint64_t size;		/* SIZE= */
	enum smtp_parse_body body;
	enum smtp_parse_ret ret;
	char envid[SMTP_PARSE_XTEXT_MAX + 1];	/* ENVID=, xtext as sent */
	char auth[SMTP_PARSE_XTEXT_MAX + 1];	/* AUTH=, xtext as sent, or "<>" */
	const char *why;	/* static reason when not OK */
};

struct smtp_parse_rcpt {
	struct smtp_addr to;
	unsigned params;	/* SMTP_PARSE_PARAM_* that were given */
	unsigned notify;	/* SMTP_PARSE_NOTIFY_* */
	char orcpt[SMTP_PARSE_XTEXT_MAX + 1];	/* ORCPT= "addr-type;xtext" as sent */
	const char *why;	/* static reason when not OK */
};

/*
 * smtp_parse_mail - the arguments of MAIL: "FROM:" (any case), optional
 * spaces, a reverse-path, then ESMTP parameters.  A known parameter outside
 * `allowed` is UNKNOWN_PARAM.  Non-ASCII in the path needs the SMTPUTF8
 * parameter (NEED_SMTPUTF8 otherwise).
 */
enum smtp_parse_status smtp_parse_mail(const char *args, size_t len,
    unsigned allowed, struct smtp_parse_mail *mail_r);

/*
 * smtp_parse_rcpt - the arguments of RCPT: "TO:", optional spaces, a
 * forward-path (or <postmaster>), then ESMTP parameters.  utf8: the
 * transaction's MAIL carried SMTPUTF8.
 */
enum smtp_parse_status smtp_parse_rcpt(const char *args, size_t len,
    unsigned allowed, bool utf8, struct smtp_parse_rcpt *rcpt_r);

/*
 * smtp_parse_mail_params - append the accepted MAIL parameters, normalized
 * and in a fixed order, to out ("SIZE=1234 BODY=8BITMIME SMTPUTF8 ...");
 * appends nothing when there are none.  Ready for a backend's MAIL command.
 */
void smtp_parse_mail_params(const struct smtp_parse_mail *m, struct buf *out);
/* smtp_parse_rcpt_params - the same for RCPT ("NOTIFY=SUCCESS,DELAY ORCPT=...") */
void smtp_parse_rcpt_params(const struct smtp_parse_rcpt *r, struct buf *out);

/* --- HELO/EHLO, BDAT, AUTH ------------------------------------------------------- */

struct smtp_parse_helo {
	char name[SMTP_PARSE_HELO_MAX + 1];	/* as sent, case kept */
	bool is_domain;		/* a valid Domain (RFC 5321; U-labels allowed) */
	bool is_literal;	/* a valid address literal */
	const char *why;
};

/*
 * smtp_parse_helo - the HELO/EHLO argument: one token of printable ASCII or
 * well-formed UTF-8, at most SMTP_PARSE_HELO_MAX octets.  Lenient like
 * Postfix: any such token is OK; is_domain/is_literal tell filters whether
 * it is also a proper name.  SYNTAX otherwise.
 */
enum smtp_parse_status smtp_parse_helo(const char *args, size_t len,
    struct smtp_parse_helo *helo_r);

/*
 * smtp_parse_bdat - "<chunk-size> [LAST]" (LAST in any case); size
 * overflow-checked.  SYNTAX for anything else.  The caller cannot know how
 * many octets follow a bad BDAT: it should reply and close the session.
 */
enum smtp_parse_status smtp_parse_bdat(const char *args, size_t len,
    uint64_t *size_r, bool *last_r);

struct smtp_parse_auth {
	char mech[SMTP_PARSE_MECH_MAX + 1];	/* upper-cased */
	const char *initial;	/* into args: the initial response, or NULL */
	size_t initiallen;	/* "=" (empty response) has length 1 */
	const char *why;
};

/*
 * smtp_parse_auth - "MECHANISM [initial-response]": a SASL mechanism name
 * and an optional initial response in padded base64 (or "="), checked for
 * form but not decoded.  SYNTAX otherwise.  Never log the initial response.
 */
enum smtp_parse_status smtp_parse_auth(const char *args, size_t len,
    struct smtp_parse_auth *auth_r);

#endif
