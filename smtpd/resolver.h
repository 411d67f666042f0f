/*
 * resolver.h - DNS over libunbound: one context (and so one cache) per event
 * loop, shared by the session (the client's reverse name) and every filter
 * of that loop, plus a synchronous path for pool threads.
 *
 * Asynchronous queries run on the loop itself: the context is in
 * libunbound's event mode (its state machines are events on the loop's
 * event_base, no thread of its own), and each answer is handed to its
 * caller from an event of the resolver's, never from inside libunbound.
 * Every query is bounded by resolver_timeout: when it passes the query is
 * cancelled and completes as RESOLVER_TIMEOUT.
 * Every wait is owned: a query's callback runs exactly once, unless the
 * owner calls resolver_cancel first, after which nothing of the query
 * touches the owner's memory.  A resolver never blocks its loop.
 *
 * Threads: a struct resolver and its queries belong to the loop thread of
 * its base; resolver_sync runs on any thread, on a context of that thread's
 * own (see resolver_sync).  Answers handed to callbacks are the resolver's,
 * valid for the call only.
 */
#ifndef PORTIER_RESOLVER_H
#define PORTIER_RESOLVER_H

#include <stdbool.h>
#include <stddef.h>

struct conf;
struct event_base;
struct resolver;
struct resolver_query;
struct ub_result;
struct sockaddr;

/* DNS types the callers use (RFC 1035, 3596) */
#define RESOLVER_A	1
#define RESOLVER_PTR	12
#define RESOLVER_MX	15
#define RESOLVER_TXT	16
#define RESOLVER_AAAA	28

enum resolver_status {
	RESOLVER_OK,		/* NOERROR with records */
	RESOLVER_NODATA,	/* NOERROR, no record of that type */
	RESOLVER_NXDOMAIN,	/* the name does not exist */
	RESOLVER_SERVFAIL,	/* SERVFAIL, REFUSED, a bogus DNSSEC answer: a temporary error */
	RESOLVER_TIMEOUT,	/* no answer within resolver_timeout */
	RESOLVER_ERROR,		/* libunbound failed (its text in why) */
};

struct resolver_answer {
	enum resolver_status status;
	int rcode;		/* DNS rcode, -1 without an answer */
	bool secure;		/* DNSSEC validated (the AD state); never without a trust anchor */
	bool bogus;		/* validation failed: status is RESOLVER_SERVFAIL */
	const char *why;	/* why bogus, or libunbound's error; NULL otherwise */
	size_t count;		/* records (rdata) */
	char *const *data;	/* each record's rdata, wire form */
	const int *len;
};

/* resolver_status_name - "ok", "nxdomain", "timeout"... for log lines */
const char *resolver_status_name(enum resolver_status st);

/*
 * resolver_new - a context on base from conf's [server] resolver,
 * resolver_timeout and resolver_trust_anchor.  NULL + *err_r (malloc'd) if
 * libunbound refuses them.
 */
struct resolver *resolver_new(struct event_base *base, const struct conf *conf, char **err_r);
/*
 * resolver_key - the settings it was built from, as one string: a loop
 * compares it with a reloaded config's to know whether a new one is due.
 */
char *resolver_key(const struct conf *conf);
/*
 * resolver_check - what portier -t and a reload check: the servers and the
 * trust anchor load (no query leaves the host).  False + *err_r.
 */
bool resolver_check(const struct conf *conf, char **err_r);
bool resolver_matches(const struct resolver *res, const char *key);
/*
 * resolver_free - now, with queries in flight: they are cancelled and their
 * callbacks never run (their owners must not use their handles any more).
 */
void resolver_free(struct resolver *res);
/*
 * resolver_idle - no query in flight: a context a reload replaced (which
 * its loop keeps until then, see loop_resolver) can be freed.
 */
bool resolver_idle(const struct resolver *res);
unsigned resolver_timeout(const struct resolver *res);
struct event_base *resolver_base(const struct resolver *res);

typedef void (*resolver_cb)(void *arg, const struct resolver_answer *a);
/*
 * resolver_query - look up name/rrtype; cb(arg, answer) runs later on the
 * loop, exactly once, unless resolver_cancel comes first.  Never calls cb
 * from inside this call.  NULL + *err_r (static text) if it cannot start.
 */
struct resolver_query *resolver_query(struct resolver *res, const char *name, int rrtype,
    resolver_cb cb, void *arg, const char **err_r);
/* resolver_cancel - cb will not run; the handle is freed.  NULL is a no-op. */
void resolver_cancel(struct resolver_query *q);

/*
 * resolver_sync - the same lookup, blocking, bounded by resolver_timeout,
 * for libraries that only call back synchronously (on a pool thread, never
 * on a loop).  Each thread keeps a context of its own for conf's settings,
 * in event mode on an event_base of its own that resolver_sync turns until
 * the answer or the deadline (built at its first call, rebuilt when they
 * change, freed when the thread exits): ub_resolve on one shared context
 * would serialize the threads on its locks and could not be bounded.
 * *ub_r holds the answer whenever libunbound gave one, a SERVFAIL or bogus
 * one too, as a struct ub_result the resolver builds from libunbound's
 * answer packet (data, len, rcode, havedata, nxdomain, secure, bogus,
 * why_bogus; free it with resolver_sync_free, never ub_resolve_free); NULL
 * on a timeout or a libunbound error.  answer (its records and why) points
 * into it.
 */
enum resolver_status resolver_sync(const struct conf *conf, const char *name, int rrtype,
    struct resolver_answer *a, struct ub_result **ub_r);
void resolver_sync_free(struct ub_result *ub);
/* resolver_sync_thread_end - free the calling thread's context now (thread exit does it too). */
void resolver_sync_thread_end(void);

/* Reading answers */
/* resolver_name - rdata i of a PTR/MX(+2)/CNAME answer as a dotted name, no final dot */
bool resolver_name(const struct resolver_answer *a, size_t i, size_t off, char *out, size_t size);
/*
 * resolver_name_any - the same for names that need not be host names (an
 * SPF domain-spec may hold any visible octet but '%'): a label with '.',
 * '\\' or an octet outside 0x21..0x7e is refused
 */
bool resolver_name_any(const struct resolver_answer *a, size_t i, size_t off, char *out, size_t size);
/* resolver_txt - rdata i of a TXT answer, its strings joined; false if it does not fit */
bool resolver_txt(const struct resolver_answer *a, size_t i, char *out, size_t size);
/* resolver_reverse_name - "4.3.2.1.in-addr.arpa" / nibbles ".ip6.arpa" for sa */
bool resolver_reverse_name(const struct sockaddr *sa, char *out, size_t size);

#endif
