/*
 * state_priv.h - between the store's front (state.c: the interface and the
 * memory store) and its Redis back (state_redis.c).  Nothing else includes
 * it.
 */
#ifndef PORTIER_STATE_PRIV_H
#define PORTIER_STATE_PRIV_H

#include "state.h"

struct state_redis;

enum state_call {
	STATE_CALL_COUNT,	/* KEYS: counter bases (1 to STATE_COUNT_MAX); ARGV: add, their windows */
	STATE_CALL_GREY,	/* KEYS: triplet, client; ARGV: delay, retry_window, lifetime, auto_allow */
};

/*
 * state_redis_new - the Redis back of conf's [redis] (server already
 * checked by conf.c); no connection yet: each loop connects on its first
 * call.  NULL + *err_r when the server's address does not resolve.
 */
struct state_redis *state_redis_new(const struct conf *conf, char **err_r);
void state_redis_free(struct state_redis *r);
/*
 * state_redis_call - one script call with nkeys keys (the back prefixes
 * them) and nargs numeric arguments, on base's connection: NULL + rep->error
 * when it cannot be sent, else the handle (done later, exactly once, unless
 * cancelled)
 */
struct state_op *state_redis_call(struct state_redis *r, struct event_base *base,
    enum state_call call, const char *const *keys, size_t nkeys, const unsigned *args,
    size_t nargs, struct state_reply *rep, state_done_fn done, void *arg);
void state_redis_cancel(struct state_op *op);
void state_redis_base_gone(struct state_redis *r, struct event_base *base);

#endif
