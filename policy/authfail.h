/*
 * authfail.h - failed-AUTH counters per client address, against password
 * guessing: after `max` failures within `window` seconds the address is
 * blocked (the session answers 421 4.7.0) until enough of its failures have
 * aged out of the window.
 *
 * Storage-agnostic on purpose: this is the in-memory store; a Redis store
 * ([redis] server) will sit behind the same calls, so callers treat every
 * call as possibly blocking (run them where AUTH already runs: on the worker
 * pool) and keep nothing but the returned values.
 *
 * Semantics every store keeps:
 *  - Keys: an IPv4 address is counted alone; an IPv6 address by its /64
 *    (one subscriber or LAN, which an attacker could otherwise rotate
 *    through); an IPv4-mapped IPv6 address as its IPv4 address.  Any other
 *    string (say, a unix socket peer) is a key as it is, first
 *    AUTHFAIL_KEY_MAX - 1 octets.
 *  - The window slides in AUTHFAIL_SLOTS steps: a failure counts for at
 *    least `window` seconds and at most window/AUTHFAIL_SLOTS (rounded up)
 *    seconds more; with window <= AUTHFAIL_SLOTS it is exact (a failure at
 *    t counts while now - t < window).
 *  - `now` is the caller's clock in seconds (time(NULL), or a monotonic
 *    one); a clock that steps back never makes failures disappear early.
 *  - Bounded memory: at most `cap` addresses are tracked; a new one evicts
 *    the one whose last failure is the oldest, and addresses whose failures
 *    all aged out are dropped as new ones arrive.
 *
 * Thread-safe (one mutex; AUTH failures are rare enough).  Never logs and
 * never keeps the caller's strings.  authfail_free releases everything.
 */
#ifndef PORTIER_AUTHFAIL_H
#define PORTIER_AUTHFAIL_H

#include <stdbool.h>
#include <stddef.h>
#include <time.h>

#define AUTHFAIL_CAP_DEFAULT	100000	/* addresses tracked */
#define AUTHFAIL_SLOTS		16	/* steps the window slides in */
#define AUTHFAIL_KEY_MAX	64	/* octets of a key, NUL included */

struct authfail;

/*
 * authfail_new - counters blocking after max (>= 1) failures within window
 * (>= 1) seconds, tracking at most cap addresses (0: AUTHFAIL_CAP_DEFAULT).
 */
struct authfail *authfail_new(unsigned max, unsigned window, size_t cap);
/* authfail_free - release everything (NULL is fine) */
void authfail_free(struct authfail *a);
/*
 * authfail_set_limits - new max and window on config reload.  A new max
 * applies to the failures already counted; a new window restarts counting
 * (old failures cannot be placed in the new steps).
 */
void authfail_set_limits(struct authfail *a, unsigned max, unsigned window);
/* authfail_blocked - has ip reached max failures within the window? */
bool authfail_blocked(struct authfail *a, const char *ip, time_t now);
/*
 * authfail_record - count one failed AUTH from ip at now; returns the
 * failures within the window, this one included (blocked once >= max).
 */
unsigned authfail_record(struct authfail *a, const char *ip, time_t now);
/* authfail_tracked - addresses currently tracked (metrics, tests) */
size_t authfail_tracked(struct authfail *a);

#endif
