/*
 * dkim_verify.h - the "dkim-verify" filter (RFC 6376, RFC 8463 Ed25519)
 * over libopendkim, with its keys fetched through the loop's resolver.
 *
 * Beside the ops, the verification of one message apart from DNS (a "job"),
 * which the filter drives and the unit tests drive with keys of their own:
 *   job_new(fields)     the header block: the signatures parsed, the key
 *                       names to fetch listed (dkim_verify_job_key)
 *   job_answer(i, ...)  what DNS said for key name i
 *   job_body(chunk)     the body, in pieces (CRLF line ends)
 *   job_finish()        libopendkim's verification, a result per signature
 * A job never does DNS itself and never blocks: libopendkim reads the keys
 * through a key-lookup callback from the answers given.  It owns its memory;
 * dkim_verify_job_free frees it at any point.
 */
#ifndef PORTIER_DKIM_VERIFY_H
#define PORTIER_DKIM_VERIFY_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "filter.h"

extern const struct filter_ops dkim_verify_ops;

struct dkim_verify_job;

/* What DNS said for a key name (the resolver's status, folded). */
enum dkim_verify_key {
	DKIM_VERIFY_KEY_PENDING,	/* not answered yet: a temporary error if it stays so */
	DKIM_VERIFY_KEY_FOUND,		/* a TXT record: the key record */
	DKIM_VERIFY_KEY_NONE,		/* NXDOMAIN, no TXT record: no key (permerror) */
	DKIM_VERIFY_KEY_TEMP,		/* SERVFAIL, timeout: temperror */
};

/* One signature's outcome (strings owned by the job, "" when the signature lacks them). */
struct dkim_verify_result {
	const char *result;	/* RFC 8601: pass fail policy neutral temperror permerror */
	const char *domain;	/* d= */
	const char *selector;	/* s= */
	const char *algorithm;	/* a= as libopendkim names it ("rsa-sha256") */
	const char *b;		/* the first octets of b= (RFC 6008), unique among the signatures */
	const char *why;	/* libopendkim's reason for anything but pass, NULL on pass */
	unsigned bits;		/* key size, 0 if no key was loaded */
};

/*
 * dkim_verify_job_new - the header block (fields only, each with its CRLF,
 * as received; no empty line) read by libopendkim for instance inst (from
 * dkim_verify_ops.configure).  At most the instance's max_signatures
 * DKIM-Signature fields are taken, from the top; *skipped_r counts the others.
 */
struct dkim_verify_job *dkim_verify_job_new(const void *inst, uint64_t session_id,
    const char *fields, size_t len, size_t *skipped_r);
/* dkim_verify_job_signed - false when the message carries no signature taken (dkim=none) */
bool dkim_verify_job_signed(const struct dkim_verify_job *job);
/* dkim_verify_job_nkeys, _key - the key names to fetch ("sel._domainkey.example.com") */
size_t dkim_verify_job_nkeys(const struct dkim_verify_job *job);
const char *dkim_verify_job_key(const struct dkim_verify_job *job, size_t i);
/* dkim_verify_job_answer - key name i: st, and for FOUND the record (record, len) */
void dkim_verify_job_answer(struct dkim_verify_job *job, size_t i, enum dkim_verify_key st,
    const char *record, size_t len);
/* dkim_verify_job_body - more of the body; false once libopendkim refused it (its error kept) */
bool dkim_verify_job_body(struct dkim_verify_job *job, const char *chunk, size_t len);
/*
 * dkim_verify_job_finish - verify: a result per signature taken, in the
 * header's order, into *res_r (owned by the job); returns their count (0:
 * unsigned).  Once only.
 */
size_t dkim_verify_job_finish(struct dkim_verify_job *job, const struct dkim_verify_result **res_r);
void dkim_verify_job_free(struct dkim_verify_job *job);

/*
 * dkim_verify_record - the results into txn: one Authentication-Results
 * item and one fact per signature ("dkim=none" without any), a log line each.
 */
void dkim_verify_record(struct filter_txn *txn, uint64_t session_id,
    const struct dkim_verify_result *res, size_t n);

#endif
