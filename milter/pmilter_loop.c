/*
 * pmilter_loop.c - event loops of portier-milter's own, so that the filter
 * chain runs as on portier's loops: a filter waits on the loop (dkim-verify,
 * dmarc: DNS through the loop's resolver, filter_wait_begin), a blocking one
 * (spf) runs on the filter pool and completes on the loop, each filter's
 * timeout is a timer on it.
 *
 * libmilter calls back on its own threads and wants each answer before the
 * callback returns.  A connection takes a loop at its first callback and
 * gives it back when it closes; pmilter_loop_run turns that loop on the
 * calling thread until the stage is decided.  libmilter never runs two
 * callbacks of one connection at once, so a loop has one thread at a time
 * (its events, resolver and pool channel need no more).  Loops given back
 * are kept for the next connections (their resolvers keep their caches), up
 * to PMILTER_LOOPS_KEPT.
 *
 * Must never: run a loop that another connection holds, or return from
 * pmilter_loop_run with the stage pending.  Ownership: the set owns its
 * loops; a taken loop is the taker's until given back.
 */
#include "config.h"

#include <pthread.h>
#include <stdlib.h>

#include <event2/event.h>

#include "util.h"
#include "log.h"
#include "resolver.h"
#include "workers.h"
#include "filter.h"
#include "pmilter.h"
#include "state.h"

/* The loop waits for a pool completion at most this long between checks (it never needs to). */
#define PMILTER_LOOP_IDLE	3600
/* Loops kept for later connections; more, given back after a burst, are freed. */
#define PMILTER_LOOPS_KEPT	64

struct pmilter_loop {
	struct event_base *base;
	struct workers_loop *wl;	/* the filter pool's completions come here */
	struct resolver *res;		/* NULL without dns, or when libunbound refused */
	struct event *idle;		/* keeps the base waiting while only a pool job runs */
	struct pmilter_loop *next;	/* in the free list */
};

struct pmilter_loops {
	pthread_mutex_t mtx;		/* guards free and nfree */
	struct pmilter_loop *free;
	unsigned nfree;
	struct workers *pool;
	const struct conf *conf;
	bool dns;
};

/* pmilter_loop_idle - nothing to do: the timer only keeps event_base_loop waiting */
static void
pmilter_loop_idle(evutil_socket_t fd, short what, void *arg)
{
	(void)fd;
	(void)what;
	(void)arg;
}

/* pmilter_loops_new - an empty set; loops are made as connections need them */
struct pmilter_loops *
pmilter_loops_new(struct workers *pool, const struct conf *conf, bool dns)
{
	struct pmilter_loops *lps = xcalloc(1, sizeof(*lps));

	if (pthread_mutex_init(&lps->mtx, NULL) != 0)
		fatal("pmilter_loops_new: cannot initialise lock");
	lps->pool = pool;
	lps->conf = conf;
	lps->dns = dns;
	return lps;
}

/* pmilter_loop_new - a base, its pool channel, its resolver */
static struct pmilter_loop *
pmilter_loop_new(struct pmilter_loops *lps)
{
	struct pmilter_loop *l = xcalloc(1, sizeof(*l));
	struct timeval tv = { PMILTER_LOOP_IDLE, 0 };
	char *err = NULL;

	if ((l->base = event_base_new()) == NULL)
		fatal("pmilter_loop_new: event_base_new failed");
	l->wl = workers_attach(lps->pool, l->base);
	if ((l->idle = event_new(l->base, -1, EV_PERSIST, pmilter_loop_idle, NULL)) == NULL)
		fatal("pmilter_loop_new: event_new failed");
	event_add(l->idle, &tv);
	if (lps->dns && (l->res = resolver_new(l->base, lps->conf, &err)) == NULL) {
		log_warn("event=resolver_error error=\"%s\"", err);
		free(err);
	}
	return l;
}

/* pmilter_loop_free - a loop nobody holds: queries cancelled, pool jobs dropped */
static void
pmilter_loop_free(struct pmilter_loop *l)
{
	if (l->res != NULL)
		resolver_free(l->res);
	workers_detach(l->wl);
	event_free(l->idle);
	state_base_gone(l->base);
	event_base_free(l->base);
	free(l);
}

/* pmilter_loops_free - every loop, once all are back */
void
pmilter_loops_free(struct pmilter_loops *lps)
{
	struct pmilter_loop *l;

	if (lps == NULL)
		return;
	while ((l = lps->free) != NULL) {
		lps->free = l->next;
		pmilter_loop_free(l);
	}
	pthread_mutex_destroy(&lps->mtx);
	free(lps);
}

/* pmilter_loop_take - a loop given back earlier, else a new one */
struct pmilter_loop *
pmilter_loop_take(struct pmilter_loops *lps)
{
	struct pmilter_loop *l;

	pthread_mutex_lock(&lps->mtx);
	if ((l = lps->free) != NULL) {
		lps->free = l->next;
		lps->nfree--;
	}
	pthread_mutex_unlock(&lps->mtx);
	return l != NULL ? l : pmilter_loop_new(lps);
}

/* pmilter_loop_give - back for the next connection, or freed past PMILTER_LOOPS_KEPT */
void
pmilter_loop_give(struct pmilter_loops *lps, struct pmilter_loop *l)
{
	bool keep;

	if (l == NULL)
		return;
	pthread_mutex_lock(&lps->mtx);
	if ((keep = lps->nfree < PMILTER_LOOPS_KEPT)) {
		l->next = lps->free;
		lps->free = l;
		lps->nfree++;
	}
	pthread_mutex_unlock(&lps->mtx);
	if (!keep)
		pmilter_loop_free(l);
}

/* A stage the loop turns for. */
struct pmilter_stage {
	bool done;
	struct filter_result *res;
};

/* pmilter_loop_done - filter_run's completion, on the loop: the stage is decided */
static void
pmilter_loop_done(uint64_t session_id, void *arg, const struct filter_result *res)
{
	struct pmilter_stage *ps = arg;

	(void)session_id;
	*ps->res = *res;
	ps->done = true;
}

/* pmilter_loop_run - run the stage, turning the loop until it is decided */
void
pmilter_loop_run(struct pmilter_loop *l, struct filter_state *st, enum filter_stage stage,
    struct filter_ctx *ctx, const char *arg, struct filter_result *res)
{
	struct pmilter_stage ps = { false, res };

	ctx->resolver = l->res;
	if (filter_run(st, stage, ctx, arg, res, l->wl, pmilter_loop_done, &ps) ==
	    FILTER_RUN_DONE)
		return;
	while (!ps.done)
		if (event_base_loop(l->base, EVLOOP_ONCE) < 0)
			fatal("pmilter_loop_run: event_base_loop failed");
}
