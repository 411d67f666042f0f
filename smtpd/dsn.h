/*
 * dsn.h - RFC 3464 delivery status notifications for recipients a backend
 * refused after the message was taken (LMTP per-recipient replies).
 *
 * Builds the message only; sending it (through bounce_relay) is the relay's
 * job.  Never builds a notification for the null sender (no bounce loops:
 * ask dsn_owed first).  Never copies raw control bytes, bare CR/LF or NULs
 * from its inputs into the result: client and backend text cannot inject
 * header lines.  ENVID and ORCPT are taken as sent (xtext) and decoded
 * here (RFC 3461 6.3).  Recipients that asked for no failure notice
 * (NOTIFY=NEVER, or NOTIFY without FAILURE) must not be passed in.  The
 * caller owns every input and the output buffer.
 */
#ifndef PORTIER_DSN_H
#define PORTIER_DSN_H

#include <stdbool.h>
#include <stddef.h>
#include <time.h>

#include "buf.h"

/*
 * One failed recipient and the backend's reply for it: a permanent failure
 * (5xx) only.  A deferral (4xx) is no failure (RFC 3464 "Action: failed"
 * would tell the sender it is lost); dsn_build treats one as a broken
 * invariant (fatal).
 */
struct dsn_rcpt {
	const char *addr;	/* the recipient as given to the backend */
	const char *orcpt;	/* ORCPT "type;xtext" as sent; NULL: none */
	int code;		/* the backend's reply code, 5xx, e.g. 550 */
	const char *ecode;	/* its enhanced code, e.g. "5.1.1"; NULL: none given */
	const char *text;	/* its reply text; a multi-line reply may be CRLF-joined */
};

/* The message being reported on. */
struct dsn_info {
	const char *hostname;		/* ours: Reporting-MTA, From, Message-ID */
	const char *sender;		/* envelope sender (no brackets): the DSN goes there */
	const char *envid;		/* ENVID as sent (xtext); NULL: none */
	const char *remote_mta;		/* the backend's host name; NULL: unknown */
	const char *queue_id;		/* our transaction id; NULL: none */
	time_t arrival;			/* when the message came in; 0: unknown */
	const struct dsn_rcpt *rcpts;	/* at least one */
	size_t nrcpts;
	const char *orig_headers;	/* the message's header block; NULL: none */
	size_t orig_headers_len;
};

/* dsn_owed - whether a failure for this envelope sender may be reported (never to <>). */
bool dsn_owed(const char *sender);

/*
 * dsn_build - append to out a complete multipart/report message (headers,
 * human-readable part, message/delivery-status, text/rfc822-headers when
 * there are original headers), CRLF line ends, every line under 998 octets.
 * Long reply texts are folded and over-long words cut with "...".
 */
void dsn_build(struct buf *out, const struct dsn_info *info);

#endif
