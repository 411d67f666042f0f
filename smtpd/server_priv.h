/*
 * server_priv.h - what server.c (snapshot, loops and their session registry,
 * accept, signals, drain) and server_bind.c (listen addresses, the
 * descriptor budget, mapping addresses to listeners on reload) share.
 * Nothing outside the server module includes it.
 */
#ifndef PORTIER_SERVER_PRIV_H
#define PORTIER_SERVER_PRIV_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <event2/util.h>

#include "server.h"

struct conf;
struct snapshot;
struct event;
struct event_base;
struct evconnlistener;
struct relay_pool;
struct resolver;
struct sendbatch;
struct session_slot;
struct workers_loop;

struct listen_sock {
	struct loop *loop;
	evutil_socket_t fd;
	size_t bi;		/* which bound address (server_bind.c: bind_spec) */
};

struct loop {
	unsigned index;
	pthread_t thread;
	struct event_base *base;
	struct workers_loop *wl[SERVER_POOLS];	/* completion channels, one per pool */
	struct relay_pool *relay;
	struct evconnlistener **lev;
	struct listen_sock *socks;	/* this loop's own sockets */
	size_t nsocks;
	struct event *ctl;		/* drain/stop requests from the main thread */
	struct event *drain_timer;
	struct event *accept_timer;	/* ends an accept pause */
	bool accept_paused;		/* listeners disabled until accept_timer or a session ends */
	bool accept_trouble;		/* in a spell of failed accept(2)s (see accept_error_cb) */
	unsigned long long accept_failed_ms;	/* now_ms() of the last failure */
	unsigned long long accept_logged_ms;	/* now_ms() of the last accept_paused line */
	unsigned accept_pauses;		/* pauses since that line */
	atomic_int draining;
	unsigned drain_passes;
	struct session_slot **buckets;
	size_t nbuckets;
	size_t nsessions;
	bool in_turn;		/* loop_main is running callbacks: replies wait for its end */
	uint64_t *later;	/* sessions with replies to flush at the turn's end */
	size_t nlater, alater;
	struct sendbatch *sb;	/* the turn's writes, in one system call */
	struct resolver *res;	/* this loop's DNS context (loop_resolver), NULL until used */
	struct resolver **retired;	/* replaced by a reload, freed once idle */
	size_t nretired;
};

/* server_bind.c */
/* bind_collect - parse and probe every listen address of conf; false (logged) if one is taken. */
bool bind_collect(const struct conf *conf);
/* bind_size_sessions - the process's session bound from RLIMIT_NOFILE; false (logged) if none fits. */
bool bind_size_sessions(const struct conf *conf, unsigned nloops);
unsigned bind_session_max(void);
/* bind_loops - a socket on every collected address for each loop (not listening yet). */
bool bind_loops(struct loop *loops, unsigned nloops);
void bind_close(struct loop *loops, unsigned nloops);
void bind_forget(void);
/* bind_map - set snap->bound_li; logs and counts what only a restart would bind or close. */
unsigned bind_map(struct snapshot *snap);
const char *bind_spec(size_t bi);

#endif
