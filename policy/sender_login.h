/*
 * sender_login.h - who may send as whom: the envelope sender and the From:
 * header of an authenticated session must belong to its login.
 *
 * Ownership comes from the map file ([auth] sender_login_map = FILE) or,
 * with no map, from the login itself: a login that is an address owns
 * exactly that address, any other login owns nothing.  With a map, the map
 * is the whole truth (a login it does not list owns nothing, even if the
 * login is an address), as with Postfix's smtpd_sender_login_maps.
 *
 * Matching: logins are compared exactly (bytes, case-sensitive); addresses
 * in their smtp_parse canonical form, so the domain is case-insensitive and
 * the local part is not; "@domain" owns every local part of exactly that
 * domain (not its subdomains).  The null sender <> is allowed for every
 * login (bounces, vacation replies), like reject_sender_login_mismatch.
 *
 * Never does I/O after load, never logs, never keeps client text.  The map
 * is immutable once loaded and may be shared by any number of threads;
 * sender_login_map_free releases it and everything in it.  Every `why` text
 * is static.
 */
#ifndef PORTIER_SENDER_LOGIN_H
#define PORTIER_SENDER_LOGIN_H

#include <stdbool.h>
#include <stddef.h>

#include "buf.h"
#include "smtp_parse.h"

#define SENDER_LOGIN_LOGIN_MAX	512	/* octets in a login */
#define SENDER_LOGIN_LINE_MAX	65536	/* octets in one map line */
#define SENDER_LOGIN_ERRORS_MAX	100	/* load errors reported before giving up */
#define SENDER_LOGIN_FROM_MAX	16384	/* octets in a From: value, folding included */

struct sender_login_map;

/*
 * sender_login_map_load - read the map FILE.  Its format:
 *
 *	# comment
 *	alice	alice@example.test, a.smith@example.test
 *	bob	bob@example.test @bob.example.test
 *		"bob the builder"@example.test	# continues bob's line
 *
 * A login, whitespace, then addresses separated by commas and/or
 * whitespace; "@domain" owns the whole domain; a line starting with
 * whitespace continues the previous login's list (as in Postfix tables).
 * A token starting with '#' (and a line whose first non-blank is '#')
 * starts a comment; quote a local part that begins with '#'.  CRLF line
 * ends are accepted.  A login may appear on one entry line only.
 *
 * Returns the map, or NULL with one "FILE:LINE: what is wrong" line per
 * error appended to errors (at most SENDER_LOGIN_ERRORS_MAX of them).
 */
struct sender_login_map *sender_login_map_load(const char *path, struct buf *errors);
/* sender_login_map_free - release the map (NULL is fine) */
void sender_login_map_free(struct sender_login_map *m);
/* sender_login_map_logins - how many logins the map lists (for the load log line) */
size_t sender_login_map_logins(const struct sender_login_map *m);

/*
 * sender_login_allowed - may login send as addr?  m NULL means no map.
 * addr is "local@domain" (canonical or not: it is canonicalized here, UTF-8
 * allowed) or "" for the null sender, which is always allowed.  An addr
 * that does not parse, and a NULL or empty login, are never allowed.
 */
bool sender_login_allowed(const struct sender_login_map *m, const char *login,
    const char *addr);

enum sender_login_from {
	SENDER_LOGIN_FROM_OK,		/* every mailbox belongs to the login */
	SENDER_LOGIN_FROM_MISMATCH,	/* 553 5.7.1: some mailbox does not */
	SENDER_LOGIN_FROM_UNPARSEABLE,	/* 553 5.7.1: not a mailbox-list we trust */
};

struct sender_login_from_result {
	unsigned nmailboxes;		/* mailboxes found (so far, if UNPARSEABLE) */
	char mailbox[SMTP_PARSE_ADDR_SIZE];	/* MISMATCH: the first foreign one, canonical */
	const char *why;		/* UNPARSEABLE: static reason; else NULL */
};

/*
 * sender_login_check_from - parse the value of a From: header (the bytes
 * after "From:", len octets, folding CRLF/LF + WSP allowed anywhere FWS is,
 * one final line end tolerated) as an RFC 5322 mailbox-list (display names,
 * quoted strings, nested comments, angle-addrs, RFC 6532 UTF-8) and check
 * each mailbox with sender_login_allowed.  OK only when there is at least
 * one mailbox and every one belongs to the login.
 *
 * Strict where readers disagree, because a value two programs read as two
 * different senders is a spoofing tool: groups, source routes, an unquoted
 * '@' in a display name, several angle-addrs for one mailbox, control
 * characters, and anything over SENDER_LOGIN_FROM_MAX octets are
 * UNPARSEABLE.  UNPARSEABLE wins over MISMATCH.  Runs in time linear in len
 * with no recursion and no allocation.  res_r may be NULL.
 */
enum sender_login_from sender_login_check_from(const struct sender_login_map *m,
    const char *login, const char *value, size_t len,
    struct sender_login_from_result *res_r);
/* sender_login_from_name - "OK", "MISMATCH", "UNPARSEABLE" for logs and tests */
const char *sender_login_from_name(enum sender_login_from r);

#endif
