/*
 * server.h - processes and loops: the config snapshot with its filter
 * chains, one event loop per core with its own SO_REUSEPORT listeners, the
 * session registry of each loop, the session bounds (per listener, per
 * process, from the descriptor limit), signals (SIGTERM drains, SIGHUP
 * reloads).
 *
 * Only server.c creates threads.  Sessions live on one loop for their whole
 * life; anything crossing threads (worker completions) finds its session by
 * 64-bit id through loop_session_find, never by pointer.
 */
#ifndef PORTIER_SERVER_H
#define PORTIER_SERVER_H

#include <stdbool.h>
#include <stdint.h>

#include "conf.h"

struct event_base;
struct workers_loop;
struct relay_pool;
struct resolver;
struct filter_chain;
struct session;

/* What a session starts with: the config and the chains built from it. */
struct snapshot {
	int refcnt;
	struct conf *conf;
	struct filter_chain **chains;	/* one per conf->listeners[i] */
	struct ssl_ctx_st *tls;		/* server SSL_CTX when a listener uses TLS, else NULL */
	struct ssl_ctx_st *tls_client;	/* toward the backend when relay_tls != none */
	struct auth_backend *auth;	/* credential check when [auth] is set, else NULL */
	struct server_count **counts;	/* per listener: its live sessions, kept by name across reloads */
	size_t *bound_li;	/* per address bound at start: its listener here, SIZE_MAX: none */
};

struct loop;

struct snapshot *snapshot_new(struct conf *conf, char **err_r);
struct snapshot *snapshot_ref(struct snapshot *s);
void snapshot_unref(struct snapshot *s);

/*
 * snapshot_chain - a listener's chain: its role's safety filter first, then
 * "filters =" without it (portier-milter builds its [milter-server] chain so).
 */
struct filter_chain *snapshot_chain(const struct conf *conf, const struct conf_listener *l,
    char **err_r);

/* server_run - bind, drop privileges, serve until SIGTERM; exit status. */
int server_run(struct snapshot *snap, const char *config_path);
/*
 * server_drop_privileges - as root, become user ([server] user) for good;
 * false, logged, when user is unset, unknown or root, or the drop fails.
 * Nothing when not root.  Shared with portier-milter.
 */
bool server_drop_privileges(const char *user);

/*
 * The bounded pools of blocking work, one per class, so that one slow
 * dependency (a DNS server, a milter) cannot stall delivery or AUTH: each
 * has its own threads and its own queue bound ([server] filter_threads,
 * auth_threads, delivery_threads, pool_queue).
 */
enum server_pool {
	SERVER_POOL_FILTER,	/* filters that may block: DNS-bound libraries, policy servers */
	SERVER_POOL_AUTH,	/* password checks: crypt, Dovecot */
	SERVER_POOL_DELIVERY,	/* Maildir writes */
	SERVER_POOLS
};

struct workers;
/* loop_new - a loop on base without listeners (for tests); loop_free undoes it. */
struct loop *loop_new(struct event_base *base, struct workers *const pools[SERVER_POOLS]);
void loop_free(struct loop *l);

/* Per-loop facilities a session uses. */
struct event_base *loop_base(struct loop *l);
struct workers_loop *loop_workers(struct loop *l, enum server_pool pool);
struct relay_pool *loop_relay(struct loop *l);
/*
 * loop_resolver - the loop's DNS context for conf's resolver settings, made
 * at first use; NULL (logged) if libunbound refuses them.  When a reload
 * changed them, a new one is made for new sessions and the old one is kept
 * until the queries in flight on it are answered, time out or are
 * cancelled (loop_resolver frees it at a later call, or loop teardown).
 */
struct resolver *loop_resolver(struct loop *l, const struct conf *conf);
void loop_session_add(struct loop *l, struct session *s, uint64_t id);
void loop_session_remove(struct loop *l, struct session *s, uint64_t id);
struct session *loop_session_find(struct loop *l, uint64_t id);
bool loop_flush_later(struct loop *l, uint64_t id);
uint64_t server_new_session_id(void);

/*
 * server_session_begin - count session id (registered on l) on listener li of
 * snap and on the process; false if that makes more than the listener's
 * max_sessions or the process's bound ([server] max_sessions, lowered to fit
 * RLIMIT_NOFILE).  Counted either way: loop_session_remove gives the slot back.
 */
bool server_session_begin(struct loop *l, uint64_t id, const struct snapshot *snap, size_t li);

#endif
