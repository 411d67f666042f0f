/*
 * connlimit.h - live sessions per client address and per client network
 * (postscreen's and anvil's concurrency limits), counted in this process.
 *
 * A table counts the sessions of one listener; connlimit_acquire takes a
 * slot for a new session or says which limit it would pass, and
 * connlimit_release gives the slot back.  Entries exist only while a
 * session holds them, so a table never holds more than two per live
 * session.  Thread-safe: every loop of the process shares the tables.
 */
#ifndef PORTIER_CONNLIMIT_H
#define PORTIER_CONNLIMIT_H

#include <stdbool.h>
#include <stddef.h>
#include <sys/socket.h>

#include "cidr.h"

struct connlimit;
struct connlimit_entry;

/* What a listener allows (conf_listener's keys); 0 for a limit: none. */
struct connlimit_policy {
	unsigned client_limit;		/* live sessions from one address */
	unsigned network_limit;		/* live sessions from one network */
	unsigned prefix4;		/* the IPv4 network's length, 0..32 */
	unsigned prefix6;		/* the IPv6 network's length, 0..128 */
	const struct cidr *exempt;	/* never counted nor limited */
	size_t nexempt;
};

/* A session's slots: zeroed before connlimit_acquire, given back once. */
struct connlimit_hold {
	struct connlimit *table;	/* NULL: nothing held */
	struct connlimit_entry *client, *network;
};

/*
 * A refusal, and whether to log it: a flood from one address or network is
 * logged at most once every CONNLIMIT_LOG_MS, the line after a quiet spell
 * carrying the refusals left out since the one before.
 */
#define CONNLIMIT_LOG_MS	1000
struct connlimit_refusal {
	unsigned count;		/* sessions already live there */
	bool log;		/* log this one */
	unsigned suppressed;	/* with log: refusals of that entry not logged since its last line */
};

enum connlimit_result {
	CONNLIMIT_OK,		/* counted (or nothing to count: no limit, not IP) */
	CONNLIMIT_EXEMPT,	/* inside exempt: not counted */
	CONNLIMIT_CLIENT,	/* client_limit sessions from this address already */
	CONNLIMIT_NETWORK,	/* network_limit sessions from its network already */
};

/* connlimit_new - an empty table (tests; the daemon uses connlimit_listener) */
struct connlimit *connlimit_new(void);
/* connlimit_free - a table nobody holds a slot of any more */
void connlimit_free(struct connlimit *t);
/*
 * connlimit_listener - the process's table of the listener called name,
 * made on first use, kept for the process's life (a reload keeps the
 * counts of a listener that keeps its name)
 */
struct connlimit *connlimit_listener(const char *name);

/*
 * connlimit_acquire - a new session from sa: OK or EXEMPT, its slots in *h
 * (to release), or the limit it would pass and *ref (nothing held).  An
 * IPv4-mapped IPv6 address counts as the IPv4 address it carries.
 */
enum connlimit_result connlimit_acquire(struct connlimit *t, const struct connlimit_policy *p,
    const struct sockaddr *sa, struct connlimit_hold *h, struct connlimit_refusal *ref);
/* connlimit_release - give back what h holds (nothing if nothing); h is empty after */
void connlimit_release(struct connlimit_hold *h);
/* connlimit_count - live sessions counted for sa's address (tests, logs) */
unsigned connlimit_count(struct connlimit *t, const struct sockaddr *sa);
/* connlimit_entries - entries in the table (tests: bounded memory) */
size_t connlimit_entries(struct connlimit *t);

#endif
