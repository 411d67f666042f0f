/*
 * dnstest.h - a private DNS server for unit tests: unbound on 127.0.0.1 on a
 * free port, answering from local-data lines, started and killed by the test.
 *
 * No mock: the answers come over UDP from a real server, so what a test
 * checks is what the resolver (smtpd/resolver.c) and the code above it do
 * with real answers.  Two kinds of failing names come with every server:
 *   stall     queries are dropped: the resolver's query times out;
 *   servfail  queries of a type without local-data are answered SERVFAIL
 *             (unbound forwards them to an address it will not query);
 * the caller names them (see struct dnstest_zones), e.g. "drop.test" and
 * "servfail.test".  Everything else is the caller's "server:" lines, usually
 * a local-zone: and its local-data:.
 *
 * Needs /usr/sbin/unbound (or $UNBOUND).  A server lives until dnstest_stop,
 * which kills it by its PID and removes its directory; a test that wants the
 * server to vanish under a running check calls dnstest_kill first.
 * Single-threaded use only (the test's main process, or one forked test).
 */
#ifndef PORTIER_DNSTEST_H
#define PORTIER_DNSTEST_H

#include <stdbool.h>
#include <sys/types.h>

struct dnstest_zones {
	const char *data;	/* "server:" lines, one a line ('\n'), or NULL */
	const char *stall;	/* names, space-separated, whose queries are dropped, or NULL */
	const char *servfail;	/* names, space-separated, answered SERVFAIL, or NULL */
};

struct dnstest {
	char dir[64];		/* the server's directory: unbound.conf, unbound.log */
	unsigned port;
	pid_t pid;		/* -1 once killed */
	char servers[64];	/* "127.0.0.1@PORT": what conf.resolver takes */
};

/* dnstest_free_port - a loopback port nothing listens on now (UDP and TCP), 0 if none */
unsigned dnstest_free_port(void);
/*
 * dnstest_start - a server for z in *d (up to 5 tries on fresh ports).
 * False if unbound would not start (it refuses a line it cannot parse): its
 * log is left in d->dir then, and dnstest_stop still cleans up.
 */
bool dnstest_start(struct dnstest *d, const struct dnstest_zones *z);
/* dnstest_kill - the server disappears (SIGKILL); its directory stays */
void dnstest_kill(struct dnstest *d);
/* dnstest_stop - kill it if running and remove its directory */
void dnstest_stop(struct dnstest *d);

#endif
