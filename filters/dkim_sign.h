/*
 * dkim_sign.h - the "dkim-sign" filter: DKIM signatures (RFC 6376, RSA-SHA256;
 * RFC 8463, Ed25519-SHA256) made with libopendkim at the final stage, over
 * the header block and body exactly as the backend receives them.
 *
 * Keys come from "keys = domain:selector:/path ..." and/or "key_table = FILE"
 * and are read by configure() (as root at start, as the unprivileged user on
 * SIGHUP: an unreadable key fails the reload, naming the file).  The key is
 * chosen by the domain of the single From: field; on a session with a login,
 * the login's domain is the fallback when the From: domain has no key.  A
 * domain with an RSA and an Ed25519 key gets both signatures.  See
 * portier.conf(5), "dkim-sign", for every key and rule.
 *
 * Inline (CPU only), never blocks, never waits on DNS.  The instance is
 * immutable after configure() and shared by every loop thread.
 */
#ifndef PORTIER_DKIM_SIGN_H
#define PORTIER_DKIM_SIGN_H

#include "filter.h"

extern const struct filter_ops dkim_sign_ops;

#endif
