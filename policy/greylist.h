/*
 * greylist.h - the "greylist" policy filter: a recipient of an unknown
 * (client, sender, recipient) triplet is deferred until the client retries
 * after a delay (see greylist.c).
 */
#ifndef PORTIER_GREYLIST_H
#define PORTIER_GREYLIST_H

#include <stddef.h>

#include "filter.h"

extern const struct filter_ops greylist_ops;

#define GREYLIST_KEY_BUF	(5 + 32 + 1)	/* "gl:t:" + 32 hex digits + NUL */

/*
 * greylist_triplet_key - the store key of a triplet: "gl:t:" and the first
 * 32 hex digits of SHA-256(client NUL sender NUL recipient), sender and
 * recipient lower-cased, into key (GREYLIST_KEY_BUF octets)
 */
void greylist_triplet_key(const char *client, const char *sender, const char *rcpt,
    char key[GREYLIST_KEY_BUF]);

#endif
