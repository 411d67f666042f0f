/*
 * xforward.h - Postfix's XFORWARD extension (XFORWARD_README): which
 * attributes a backend's EHLO line offers, and the commands that pass the
 * original client's facts on to it.  Pure: no I/O, nothing kept.
 */
#ifndef PORTIER_XFORWARD_H
#define PORTIER_XFORWARD_H

#include <stdbool.h>
#include <stddef.h>

#include "buf.h"

#define XFORWARD_NAME		0x01
#define XFORWARD_ADDR		0x02
#define XFORWARD_PORT		0x04
#define XFORWARD_PROTO		0x08
#define XFORWARD_HELO		0x10
#define XFORWARD_IDENT		0x20
#define XFORWARD_SOURCE		0x40

#define XFORWARD_LINE_MAX	512	/* octets per command, CRLF included */

/* The facts passed on; NULL (or port 0) means unknown: [UNAVAILABLE]. */
struct xforward_client {
	const char *name;	/* verified client name; "unknown" counts as unknown */
	const char *addr;	/* "192.0.2.1", "2001:db8::1" */
	unsigned port;
	const char *helo;
	bool esmtp;		/* PROTO=ESMTP, else SMTP */
	const char *ident;	/* our transaction (queue) id */
};

unsigned xforward_attrs(const char *params, size_t len);
size_t xforward_cmds(unsigned attrs, const struct xforward_client *cl, struct buf *out);

#endif
