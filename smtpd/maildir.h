/*
 * maildir.h - the embedded backend: deliver one held message to one
 * recipient's Maildir under a root directory, synchronously and durably.
 *
 * Blocks on disk I/O and fsync: run it on a worker thread, never on an event
 * loop.  Never lets a recipient name a path outside ROOT, never reports
 * success before the message is fsynced and renamed into new/, never leaves a
 * file in tmp/ behind.  Thread-safe.  The message bytes are written exactly as
 * given (CRLF line ends included; Dovecot reads both).  Error texts returned
 * through err_r are allocated and belong to the caller (free()).
 */
#ifndef PORTIER_MAILDIR_H
#define PORTIER_MAILDIR_H

#include <stdbool.h>
#include <stddef.h>

struct spool;

/*
 * maildir_deliver - write head (headlen bytes) then the body spool from
 * offset body_off to its end (body NULL: none) as one new message in
 * ROOT/<domain>/<local>/new/, creating the directories (mode 0700) as needed.
 * rcpt is an RFC 5321 address, with or without angle brackets; "postmaster"
 * without a domain goes to ROOT/localhost/postmaster.  hostname names this
 * host in the unique file name (NULL: gethostname()).  On failure returns
 * false and sets *err_r (naming the path and the system error).
 */
bool maildir_deliver(const char *root, const char *rcpt, const char *hostname,
    const char *head, size_t headlen, struct spool *body, size_t body_off, char **err_r);

/*
 * maildir_path - the Maildir directory ROOT/<domain>/<local> that rcpt maps to
 * (nothing is touched on disk).  The domain is lower-cased, the local part
 * kept as given (but "postmaster" in any case is lower-cased); in both, bytes
 * outside [A-Za-z0-9._+=-] and a leading '.' are written as %HH, so a
 * component is never empty, "." or "..", and never holds '/'.  Returns an
 * allocated string, or NULL and *err_r for an address that names no mailbox.
 */
char *maildir_path(const char *root, const char *rcpt, char **err_r);

#endif
