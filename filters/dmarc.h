/*
 * dmarc.h - the "dmarc" filter (RFC 7489) over libopendmarc, and the pieces
 * of it the unit tests drive on their own: the From: parser, the record
 * test and the organizational domain.
 *
 * Nothing here does I/O; the strings returned are the caller's buffers.
 */
#ifndef PORTIER_DMARC_H
#define PORTIER_DMARC_H

#include <stdbool.h>
#include <stddef.h>

#include "filter.h"

extern const struct filter_ops dmarc_ops;

/* The default public suffix list (Debian's publicsuffix package). */
#define DMARC_PSL_DEFAULT	"/usr/share/publicsuffix/public_suffix_list.dat"

/* A domain in text, no final dot (253 octets), and its NUL */
#define DMARC_DOMAIN_BUF	254

/* What a From: field's value holds (RFC 5322 3.4 mailbox-list, with groups and 4.4 obs-). */
enum dmarc_from {
	DMARC_FROM_OK,		/* one address: its domain, lower case */
	DMARC_FROM_EMPTY,	/* no address at all (empty, or an empty group) */
	DMARC_FROM_MANY,	/* several addresses */
	DMARC_FROM_NODOMAIN,	/* one address without a DNS domain (local part only, [literal]) */
	DMARC_FROM_SYNTAX,	/* not an address list, or a domain no DNS name can be */
};

/*
 * dmarc_from_parse - the author domain of a From: value (raw, folding
 * kept): DMARC_FROM_OK with the domain in domain_r (size DMARC_DOMAIN_BUF), else why
 * there is none.  Comments, quoted strings, display names, angle brackets,
 * obsolete routes and groups are understood.
 */
enum dmarc_from dmarc_from_parse(const char *value, char *domain_r, size_t size);

/* dmarc_from_name - "several addresses in From:" etc. for logs and replies */
const char *dmarc_from_name(enum dmarc_from f);

/* dmarc_is_record - does a TXT string start a DMARC record ("v=DMARC1" then ';' or its end)? */
bool dmarc_is_record(const char *txt);

/*
 * dmarc_org_domain - the organizational domain of domain (lower case) by
 * the public suffix list loaded (libopendmarc's), or by the list's default
 * rule "*" (the last two labels) when no rule matches.
 */
void dmarc_org_domain(const char *domain, char *out, size_t size);

#endif
