/*
 * state.h - the shared-state store of the policies: counters over a sliding
 * window (rate limits, AUTH failures) and greylisting triplets.  One
 * interface, two stores:
 *   memory  this process only (the default): a bounded table under a mutex;
 *           every call answers at once.
 *   Redis   [redis] server set: shared by every node of a fleet.  Each event
 *           loop has its own connection (hiredis async on that loop); a call
 *           sends one EVAL and answers later, on the loop, through done.
 *           Time comes from the Redis server (TIME inside the script), so
 *           the nodes' clocks never disagree about a window.
 * A caller writes one path for both: a call returns NULL when it answered
 * at once (*rep is filled), else a handle, and done(arg, rep) runs later on
 * the same loop, exactly once, unless state_cancel comes first.  rep->error
 * says the store could not answer (Redis down, slow, an error reply): the
 * caller applies its fail-open or fail-closed rule and logs.
 *
 * Ownership: strings passed in are copied; rep and its strings live for the
 * call of done only.  The handle belongs to the store; after state_cancel
 * the caller forgets it, and a late reply is dropped.  Redis connections
 * die with their loop: whoever frees an event_base a call ran on calls
 * state_base_gone(base) first (pending calls then complete with an error,
 * unless cancelled).
 *
 * Never logs a key's content.  Reconnects by itself: a connection that failed is
 * retried at most once a second per loop; calls in between fail at once
 * ("redis: unreachable"), and transitions are logged (event=redis_down,
 * event=redis_up).
 */
#ifndef PORTIER_STATE_H
#define PORTIER_STATE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct conf;
struct event_base;
struct state;
struct state_op;

/*
 * state_count's answer.  The window slides in STATE_STEPS steps of
 * window/STATE_STEPS seconds (rounded up): an add counts for at least window
 * seconds and at most one step more; with window <= STATE_STEPS it is
 * exact (an add at t counts while now - t < window).
 */
struct state_count {
	uint64_t count;		/* adds within the window, this one included */
	unsigned reset;		/* seconds until the oldest add counted leaves it (>= 1): a retry hint */
};

#define STATE_STEPS	16

enum state_grey_verdict {
	STATE_GREY_NEW,		/* first seen now: wait `wait` seconds */
	STATE_GREY_EARLY,	/* seen, retried too early: `wait` seconds left */
	STATE_GREY_PASSED,	/* retried after the delay (now or before): let it through */
	STATE_GREY_ALLOWED,	/* the client passed auto_allow triplets: let it through */
};

struct state_grey {
	enum state_grey_verdict verdict;
	unsigned wait;		/* NEW, EARLY: seconds until a retry passes */
};

struct state_grey_params {
	unsigned delay;		/* seconds a new triplet waits; 0: it passes at once (and is kept) */
	unsigned retry_window;	/* seconds a new triplet is kept waiting for its retry */
	unsigned lifetime;	/* seconds a passed triplet (and an auto-allow count) is kept */
	unsigned auto_allow;	/* passed triplets after which the client skips greylisting; 0: never */
};

#define STATE_COUNT_MAX	4	/* counters one state_count_many adds to */

struct state_reply {
	const char *error;	/* NULL: answered; else why not ("redis: timeout") */
	struct state_count counts[STATE_COUNT_MAX];	/* state_count: [0]; state_count_many: in keys' order */
	struct state_grey grey;	/* state_grey */
};

typedef void (*state_done_fn)(void *arg, const struct state_reply *rep);

/* The [redis] section's defaults */
#define STATE_REDIS_TIMEOUT	2	/* seconds a call waits for its reply */
#define STATE_MEMORY_ENTRIES	200000	/* keys the memory store keeps */
#define STATE_KEY_MAX		200	/* octets of a key, prefix excluded */

/*
 * state_get - the process's store: Redis when conf has [redis] server, else
 * memory.  Made on the first call, then the same one for the process's
 * life: a reload that changes [redis] keeps the old store and logs
 * event=redis_reload_ignored (a restart applies it).  Thread-safe.
 */
struct state *state_get(const struct conf *conf);
/* state_name - "memory" or "redis 127.0.0.1:6379", for logs */
const char *state_name(const struct state *st);
bool state_is_redis(const struct state *st);
/* state_fail_open - [redis] on_error = open (the default): a call that failed lets the client pass */
bool state_fail_open(const struct state *st);

/*
 * state_count - add `add` (0 reads) to key's counter and read its count over
 * the last window (>= 1) seconds, in rep->counts[0].  base: the caller's loop (a Redis call
 * answers there).  NULL and *rep now, or a handle and done later.
 */
struct state_op *state_count(struct state *st, struct event_base *base, const char *key,
    unsigned add, unsigned window, struct state_reply *rep, state_done_fn done, void *arg);

/*
 * state_count_many - state_count on n (1 to STATE_COUNT_MAX) counters at
 * once, keys[i] over windows[i], each given `add`: one call (in Redis one
 * script, so a stage that counts a client, its network, its login and its
 * sender domain costs one round trip), rep->counts[i] for keys[i].  All
 * answered or all failed.
 */
struct state_op *state_count_many(struct state *st, struct event_base *base, size_t n,
    const char *const *keys, const unsigned *windows, unsigned add, struct state_reply *rep,
    state_done_fn done, void *arg);

/*
 * state_grey - look up a greylisting triplet (key) for a client (client_key,
 * whose passed triplets count toward auto_allow): a new triplet is recorded
 * and waits p->delay; a retry after the delay passes and is kept
 * p->lifetime, counting one toward the client's auto_allow.  A clock that
 * steps back never lets a triplet pass early.
 */
struct state_op *state_grey(struct state *st, struct event_base *base, const char *key,
    const char *client_key, const struct state_grey_params *p, struct state_reply *rep,
    state_done_fn done, void *arg);

/*
 * state_client_key - a client address as a counting key: IPv4 as it is, an
 * IPv6 address by its /64 (one subscriber, who could otherwise rotate
 * through it), IPv4-mapped IPv6 as IPv4, anything else as given (truncated
 * to size)
 */
void state_client_key(const char *ip, char *key, size_t size);

/*
 * state_key_digest - how a policy shortens what it keys on: the first
 * nbytes (at most 32) of the SHA-256 of data, as 2 * nbytes lowercase hex
 * digits and a NUL in out
 */
void state_key_digest(const void *data, size_t len, size_t nbytes, char *out);

/* state_cancel - done will not run for op; a late reply is dropped.  NULL is fine. */
void state_cancel(struct state_op *op);

/* state_base_gone - base is about to be freed: close its Redis connection (loop thread) */
void state_base_gone(struct event_base *base);

/* state_shutdown - free the store (at exit, every loop gone) */
void state_shutdown(void);

/* For tests: the memory store's clock and size */
void state_memory_set_clock(struct state *st, int64_t (*now)(void));
uint64_t state_memory_entries(const struct state *st);

#endif
