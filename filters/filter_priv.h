/*
 * filter_priv.h - what filter.c (registry, chains, transactions, headers)
 * and filter_run.c (running a stage: inline, on the loop, on the pool)
 * share.  Not for filters.
 */
#ifndef PORTIER_FILTER_PRIV_H
#define PORTIER_FILTER_PRIV_H

#include "filter.h"

#define FILTER_DEFAULT_TIMEOUT	60	/* seconds a stage waits for a filter ("timeout =") */
#define FILTER_QUARANTINE_NAME	"X-Portier-Quarantine"
#define FILTER_BODY_CHUNK	(64 * 1024)	/* body() gets at most this much at once */

struct filter_link {
	const struct filter_ops *ops;
	void *inst;
	char *name;		/* as written in "filters =" */
	unsigned timeout;	/* seconds a stage may wait for it; 0: no limit */
	unsigned threads;	/* a blocking filter's own pool; 0: the shared filter pool */
	enum filter_verdict on_fail;	/* default_action: ACCEPT, REJECT or TEMPFAIL */
};

/*
 * A chain is shared by the sessions of a listener and referenced by the
 * blocking calls that outlived their session (their close() still needs
 * the instance): the last filter_chain_free destroys it.
 */
struct filter_chain {
	struct filter_link *links;
	size_t n;
	char *names;		/* "a,b,c" */
	unsigned stages;	/* bit (1 << stage) for each stage some filter works at */
	bool dns;		/* some filter has ops->dns */
	unsigned refs;		/* atomic */
};

const char *filter_stage_name(enum filter_stage s);
/* filter_has_stage - does a filter with these ops do anything at stage */
bool filter_has_stage(const struct filter_ops *ops, enum filter_stage stage);
/* filter_chain_hold - one more reference (any thread) */
struct filter_chain *filter_chain_hold(const struct filter_chain *chain);
/* filter_txn_copy - a deep copy for a blocking call (body: a reference, head: copied) */
void filter_txn_copy(struct filter_txn *dst, const struct filter_txn *src);

#endif
