/*
 * spf.h - the "spf" filter (RFC 7208 Sender Policy Framework) and the check
 * it runs, over libspf2 with a DNS layer of portier's (filters/spf_dns.c).
 *
 * spf_check() is the whole evaluation of one identity, blocking (its DNS
 * goes through resolver_sync on the calling thread): the filter calls it on
 * the filter pool, the unit tests and the RFC 7208 suite call it directly.
 * It never fails as a function: every problem is one of the results.
 */
#ifndef PORTIER_SPF_H
#define PORTIER_SPF_H

#include <stdbool.h>

#include "filter.h"

extern const struct filter_ops spf_ops;

/* RFC 7208 §2.6 results, in RFC 8601's words (spf_result_name) */
enum spf_result {
	SPF_NONE,
	SPF_NEUTRAL,
	SPF_PASS,
	SPF_FAIL,
	SPF_SOFTFAIL,
	SPF_TEMPERROR,
	SPF_PERMERROR,
};
#define SPF_NRESULTS	(SPF_PERMERROR + 1)

struct spf_request {
	const struct conf *conf;	/* resolver, resolver_timeout; hostname is %{r} */
	const char *client_addr;	/* "192.0.2.1", "2001:db8::1", "::ffff:192.0.2.1" (as IPv4) */
	const char *helo;		/* the HELO/EHLO name, NULL or "" if none */
	const char *mail_from;		/* "" (or NULL): check the HELO identity, postmaster@helo */
};

struct spf_outcome {
	enum spf_result result;
	bool helo_identity;		/* the identity checked was HELO's (scope "helo") */
	char domain[256];		/* the identity's domain (the HELO name for helo) */
	char sender[520];		/* "local@domain" as checked (postmaster@helo for helo) */
	char explanation[256];		/* fail: the record's exp= text, printable ASCII, "" if none */
	char why[160];			/* what decided it, for the log: "matched -all", "void lookup limit" */
	unsigned queries;		/* DNS queries made */
};

/* spf_check - evaluate check_host() for req; never blocks longer than its DNS allows */
void spf_check(const struct spf_request *req, struct spf_outcome *out);
/* spf_result_name - "pass", "fail", ... (RFC 8601) */
const char *spf_result_name(enum spf_result r);

#endif
