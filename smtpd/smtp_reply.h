/*
 * smtp_reply.h - every fixed reply portier sends, in one table.
 *
 * Each entry has its code, its RFC 3463 enhanced code and its words; a
 * session formats them with smtp_reply_line.  Replies that carry text from
 * elsewhere (backend, filters) are built by the session, never here.
 */
#ifndef PORTIER_SMTP_REPLY_H
#define PORTIER_SMTP_REPLY_H

#include "buf.h"

enum smtp_reply_id {
	R_BANNER,		/* 220 HOST ESMTP portier */
	R_GREET_PAUSE,		/* 554 5.5.1 talked before the banner */
	R_TOO_MANY_SESSIONS,	/* 421 4.7.0 */
	R_SHUTDOWN,		/* 421 4.3.2 */
	R_BYE,			/* 221 2.0.0 */
	R_NOOP,			/* 250 2.0.0 Ok */
	R_RSET,			/* 250 2.0.0 Ok */
	R_HELO,			/* 250 HOST */
	R_MAIL_OK,		/* 250 2.1.0 Ok */
	R_RCPT_OK,		/* 250 2.1.5 Ok */
	R_DATA_GO,		/* 354 */
	R_BDAT_OK,		/* 250 2.0.0 N octets received */
	R_VRFY,			/* 252 2.5.0 */
	R_HELP,			/* 214 2.0.0 */
	R_UNKNOWN_CMD,		/* 500 5.5.2 */
	R_CMD_TOO_LONG,		/* 500 5.5.2 line too long */
	R_BARE_NEWLINE_CMD,	/* 500 5.5.2 bare CR/LF in command */
	R_NUL_CMD,		/* 500 5.5.2 NUL in command */
	R_SYNTAX,		/* 501 5.5.4 syntax error in parameters */
	R_HELO_SYNTAX,		/* 501 5.5.4 */
	R_ADDR_SYNTAX,		/* 501 5.1.3 bad address syntax */
	R_FROM_SYNTAX,		/* 501 5.1.7 bad sender address syntax */
	R_PARAM_UNKNOWN,	/* 555 5.5.4 unsupported parameter */
	R_NOT_IMPLEMENTED,	/* 502 5.5.1 */
	R_NEED_HELO,		/* 503 5.5.1 send HELO/EHLO first */
	R_NEED_MAIL,		/* 503 5.5.1 need MAIL */
	R_NEED_RCPT,		/* 503 5.5.1 need RCPT */
	R_NESTED_MAIL,		/* 503 5.5.1 nested MAIL */
	R_BDAT_DATA_MIX,	/* 503 5.5.1 DATA after BDAT */
	R_BDAT_RCPT_MIX,	/* 503 5.5.1 RCPT after BDAT */
	R_TOO_MANY_RCPTS,	/* 452 4.5.3 */
	R_SIZE_EXCEEDED,	/* 552 5.3.4 */
	R_SIZE_DECLARED,	/* 552 5.3.4 declared SIZE too big */
	R_HEADER_TOO_BIG,	/* 552 5.3.4 header block over max_header_size */
	R_LINE_TOO_LONG,	/* 554 5.6.0 text line over limit */
	R_BARE_NEWLINE_DATA,	/* 554 5.6.0 bare CR/LF in message */
	R_NUL_DATA,		/* 554 5.6.0 NUL in message */
	R_BDAT_SYNTAX,		/* 501 5.5.4 */
	R_TOO_MANY_ERRORS,	/* 421 4.7.0 */
	R_PIPELINE_FLOOD,	/* 421 4.7.0 */
	R_TIMEOUT,		/* 421 4.4.2 */
	R_LOCAL_ERROR,		/* 451 4.3.0 local error */
	R_BACKEND_DOWN,		/* 451 4.4.1 backend unavailable */
	R_BACKEND_TIMEOUT,	/* 451 4.4.2 backend timeout */
	R_BACKEND_GARBLED,	/* 451 4.4.0 backend protocol error */
	R_SMTPUTF8_NEEDED,	/* 553 5.6.7 */
	R_FILTER_REJECT,	/* 550 5.7.1 rejected by policy */
	R_FILTER_TEMPFAIL,	/* 451 4.7.1 try again later */
	R_DISCARDED,		/* 250 2.0.0 Ok (discarded) -- logged, not delivered */
	R_RELAY_DENIED,		/* 550 5.7.1 relay access denied */
	R_AUTH_REQUIRED,	/* 530 5.7.0 authentication required */
	R_BODY_UNSUPPORTED,	/* 555 5.5.4 BODY=BINARYMIME not offered */
	R_LMTP_MIXED,		/* 451 4.3.0 some recipients failed */
	R_DSN_FAILED,		/* 451 4.3.0 could not send the DSN */
	R_CONNECT_REFUSED,	/* 554 5.7.1 connection refused by policy */
	R_STARTTLS_GO,		/* 220 2.0.0 Ready to start TLS */
	R_TLS_ACTIVE,		/* 503 5.5.1 TLS already active */
	R_TLS_REQUIRED,		/* 530 5.7.0 STARTTLS first */
	R_AUTH_OK,		/* 235 2.7.0 */
	R_AUTH_FAILED,		/* 535 5.7.8 */
	R_AUTH_CANCEL,		/* 501 5.0.0 */
	R_AUTH_BASE64,		/* 501 5.5.2 */
	R_AUTH_MECH,		/* 504 5.5.4 */
	R_AUTH_TEMPFAIL,	/* 454 4.7.0 */
	R_AUTH_ALREADY,		/* 503 5.5.1 */
	R_AUTH_IN_TXN,		/* 503 5.5.1 */
	R_AUTH_NOT_OFFERED,	/* 503 5.5.1 */
	R_AUTH_BLOCKED,		/* 421 4.7.0 */
	R_AUTH_LINE_TOO_LONG,	/* 500 5.5.6 */
	R_SENDER_NOT_OWNED,	/* 553 5.7.1 */
	R_FROM_NOT_OWNED,	/* 553 5.7.1 */
	R_MAX
};

struct smtp_reply_entry {
	int code;
	const char *ecode;	/* "5.5.2"; NULL for 220/221 greetings without one */
	const char *text;	/* may contain one %s for the host name */
};

const struct smtp_reply_entry *smtp_reply_get(enum smtp_reply_id id);

/*
 * smtp_reply_line - "CODE ECODE TEXT\r\n" into dst (NUL-terminated), host
 * filling %s, the text cut to fit; returns the length.
 * smtp_reply_custom - append a reply from parts; multi-line text (\n inside)
 * becomes a multi-line reply with CODE- continuation lines.
 */
#define SMTP_REPLY_LINE_MAX	512	/* RFC 5321 4.5.3.1.5: a reply line, CRLF included */
size_t smtp_reply_line(char *dst, size_t size, enum smtp_reply_id id, const char *host);
void smtp_reply_custom(struct buf *out, int code, const char *ecode, const char *text);

#endif
