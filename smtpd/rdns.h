/*
 * rdns.h - the client's forward-confirmed reverse name (FCrDNS): the PTR
 * names of its address, then the A or AAAA records of each (at most
 * RDNS_MAX_NAMES), and the first name, in PTR order, that maps back to the
 * address.  Postfix's convention: a name that does not map back is not the
 * client's name ("unknown"), but the PTR name is given too ({client_ptr}).
 *
 * Asynchronous on a resolver's loop, bounded as a whole by its
 * resolver_timeout.  cb runs once, later (never inside rdns_start), unless
 * rdns_cancel comes first; then nothing of the lookup touches the caller.
 */
#ifndef PORTIER_RDNS_H
#define PORTIER_RDNS_H

#include <sys/socket.h>

struct resolver;
struct rdns;

#define RDNS_MAX_NAMES	4	/* PTR names whose addresses are looked up */
#define RDNS_NAME_MAX	254	/* a dotted name and its NUL */

enum rdns_result {
	RDNS_VERIFIED,		/* name maps back to the address */
	RDNS_UNVERIFIED,	/* PTR names, none of which maps back */
	RDNS_NONE,		/* no PTR record (NXDOMAIN, NODATA, unusable names) */
	RDNS_TEMPFAIL,		/* SERVFAIL or a resolver error on the way */
	RDNS_TIMEOUT,		/* resolver_timeout passed */
};

struct rdns_answer {
	enum rdns_result result;
	const char *name;	/* the verified name, NULL unless RDNS_VERIFIED */
	const char *ptr;	/* the first usable PTR name, NULL if none */
};

/* rdns_result_name - "verified", "unverified", "none", "tempfail", "timeout" */
const char *rdns_result_name(enum rdns_result r);

typedef void (*rdns_cb)(void *arg, const struct rdns_answer *a);

/*
 * rdns_known - true and *a when the answer needs no query: 127.0.0.1 and
 * ::1 (also IPv4-mapped) are "localhost", the resolver's own local data,
 * known without a query (and the loop turn its delivery would take)
 */
bool rdns_known(const struct sockaddr *sa, struct rdns_answer *a);
/* rdns_start - look up sa's name on res; NULL if it cannot start (no IP address, a resolver error) */
struct rdns *rdns_start(struct resolver *res, const struct sockaddr *sa, rdns_cb cb, void *arg);
/* rdns_cancel - cb will not run; frees r.  NULL is a no-op. */
void rdns_cancel(struct rdns *r);

#endif
