/*
 * server.c - the config snapshot, the event loops and their session
 * registry, accepting connections, signals and the privilege drop.
 *
 * main() hands a checked snapshot to server_run, which has server_bind.c
 * size the session bound to RLIMIT_NOFILE and bind every listen address
 * once per loop (SO_REUSEPORT: the kernel spreads connections) after making
 * sure no other process holds it, drops privileges for good, then runs one
 * thread per loop while the main thread waits for signals.  SIGTERM: stop
 * accepting, let sessions finish up to drain_timeout, then 421 the rest and
 * exit 0.  SIGHUP: load the config again; new sessions get the new
 * snapshot, live ones keep theirs; each bound address goes to the listener
 * that lists it now (server_bind.c), never by position.
 *
 * Must never: serve as root, block a loop, spin on a failing accept(2), or
 * let a thread other than a session's own loop touch that session.
 */
#include "config.h"

#include <assert.h>
#include <errno.h>
#include <grp.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <pthread.h>
#include <pwd.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <event2/bufferevent.h>
#include <event2/bufferevent_ssl.h>
#include <event2/event.h>
#include <event2/listener.h>
#include <event2/thread.h>
#include <event2/util.h>

#include "filter.h"
#include "log.h"
#include "relay.h"
#include "resolver.h"
#include "sendbatch.h"
#include "server.h"
#include "server_priv.h"
#include "smtp_reply.h"
#include "smtp_session.h"
#include "tls.h"
#include "../policy/auth.h"
#include "../policy/builtin.h"
#include "../policy/state.h"
#include "util.h"
#include "workers.h"

#define DRAIN_GRACE	5	/* seconds after drain_timeout for sessions waiting on the backend */
#define ACCEPT_PAUSE	1	/* seconds a loop stops accepting after accept(2) failed */
#define ACCEPT_QUIET	10	/* seconds without a failed accept(2) that end a spell of them */
#define ACCEPT_REMIND	60	/* seconds between two accept_paused lines in one spell */

/* A listener's live sessions, found by name: a session may outlive its listener's config. */
struct server_count {
	char *name;
	atomic_uint n;
	struct server_count *next;
};

struct session_slot {
	uint64_t id;
	struct session *s;
	struct server_count *count;	/* the listener it counts on; NULL until server_session_begin */
	struct session_slot *next;
};

static pthread_mutex_t snap_lock = PTHREAD_MUTEX_INITIALIZER;
static struct snapshot *snap_current;
static atomic_uint_fast64_t session_counter;
static atomic_uint sessions_live;	/* the process's, for the process bound */
static pthread_mutex_t count_lock = PTHREAD_MUTEX_INITIALIZER;
static struct server_count *count_list;	/* never shrinks; guarded by count_lock */
static struct workers *pools[SERVER_POOLS];

static void loop_accept_resume(struct loop *l);

static bool conf_uses_tls(const struct conf *conf);

/* server_count_get - the session count of the listener called name (made on first use) */
static struct server_count *
server_count_get(const char *name)
{
	struct server_count *c;

	pthread_mutex_lock(&count_lock);
	for (c = count_list; c != NULL; c = c->next)
		if (strcmp(c->name, name) == 0)
			break;
	if (c == NULL) {
		c = xcalloc(1, sizeof(*c));
		c->name = xstrdup(name);
		atomic_init(&c->n, 0);
		c->next = count_list;
		count_list = c;
	}
	pthread_mutex_unlock(&count_lock);
	return c;
}

/*
 * snapshot_auth - the credential backend, when [auth] is set (the sender map
 * is auth-enforce's, loaded by its configure)
 */
static bool
snapshot_auth(struct snapshot *s, const struct conf *conf, char **err_r)
{
	char *err = NULL;

	if (conf->auth_passwd_file == NULL && conf->auth_dovecot == NULL)
		return true;
	s->auth = auth_backend_new(conf, &err);
	if (s->auth == NULL) {
		*err_r = xasprintf("%s", err ? err : "[auth]: cannot set up the credential check");
		free(err);
		return false;
	}
	return true;
}

/*
 * snapshot_chain - listener l's chain: its role's safety filter first
 * (conf_role_filter), then "filters =" without it.  Listed or not, the
 * safety filter runs once and first: no position in "filters =" moves it.
 */
struct filter_chain *
snapshot_chain(const struct conf *conf, const struct conf_listener *l, char **err_r)
{
	const char *safety = conf_role_filter(l->role);
	struct filter_chain *chain;
	char **names = xcalloc(l->nfilters + 1, sizeof(*names));
	size_t i, n = 0;

	names[n++] = xstrdup(safety);
	for (i = 0; i < l->nfilters; i++)
		if (strcmp(l->filters[i], safety) != 0)
			names[n++] = l->filters[i];
	chain = filter_chain_new(conf, names, n, err_r);
	free(names[0]);
	free(names);
	return chain;
}

/*
 * snapshot_resolver - the resolver settings load (trust anchor included),
 * as -t and a reload check them: FILE:LINE of the key at fault
 */
static bool
snapshot_resolver(const struct conf *conf, char **err_r)
{
	const struct conf_section *sec = conf_section_find(conf, "server", NULL);
	const char *key = conf->resolver_trust_anchor ? "resolver_trust_anchor" : "resolver";
	char *err = NULL;
	int line = 0;
	size_t k;

	if (resolver_check(conf, &err))
		return true;
	for (k = 0; sec && k < sec->nkv; k++)
		if (strcmp(sec->kv[k].key, key) == 0)
			line = sec->kv[k].line;
	*err_r = xasprintf("%s:%d: [server] %s: %s", conf->path, line, key, err);
	free(err);
	return false;
}

/* snapshot_new - a config plus its listeners' filter chains */
struct snapshot *
snapshot_new(struct conf *conf, char **err_r)
{
	struct snapshot *s = xcalloc(1, sizeof(*s));
	size_t i;

	s->refcnt = 1;
	s->conf = conf;
	/* Every role's safety filter must be known wherever a snapshot is built. */
	filter_builtins_register();
	if (conf_uses_tls(conf)) {
		char *err = NULL;

		s->tls = tls_server_ctx_new(conf, &err);
		if (s->tls == NULL) {
			*err_r = xasprintf("%s: %s", conf->path, err ? err : "[tls]: TLS setup failed");
			free(err);
			free(s);
			return NULL;
		}
	}
	if (conf->relay_tls != RELAY_TLS_NONE) {
		char *err = NULL;

		s->tls_client = tls_client_ctx_new(conf, &err);
		if (s->tls_client == NULL) {
			*err_r = xasprintf("%s: %s", conf->path,
			    err ? err : "[backend] relay_tls: TLS setup failed");
			free(err);
			if (s->tls)
				tls_ctx_unref(s->tls);
			free(s);
			return NULL;
		}
	}
	if (!snapshot_resolver(conf, err_r) || !snapshot_auth(s, conf, err_r)) {
		if (s->tls)
			tls_ctx_unref(s->tls);
		if (s->tls_client)
			tls_ctx_unref(s->tls_client);
		free(s);
		return NULL;
	}
	s->chains = xcalloc(conf->nlisteners, sizeof(*s->chains));
	for (i = 0; i < conf->nlisteners; i++) {
		struct conf_listener *l = &conf->listeners[i];
		char *err = NULL;

		s->chains[i] = snapshot_chain(conf, l, &err);
		if (s->chains[i] == NULL) {
			const struct conf_section *sec = conf_section_find(conf, "listener", l->name);
			const char *v = sec ? conf_section_get(sec, "filters") : NULL;
			int line = l->line;
			size_t k;

			for (k = 0; v && k < sec->nkv; k++)
				if (strcmp(sec->kv[k].key, "filters") == 0)
					line = sec->kv[k].line;
			*err_r = xasprintf("%s:%d: [listener %s] filters: %s", conf->path, line,
			    l->name, err ? err : "error");
			free(err);
			s->conf = NULL;	/* the caller still owns conf */
			while (i-- > 0)
				filter_chain_free(s->chains[i]);
			if (s->tls)
				tls_ctx_unref(s->tls);
			free(s->chains);
			free(s);
			return NULL;
		}
	}
	s->counts = xcalloc(conf->nlisteners, sizeof(*s->counts));
	for (i = 0; i < conf->nlisteners; i++)
		s->counts[i] = server_count_get(conf->listeners[i].name);
	return s;
}

/* snapshot_ref - one more holder */
struct snapshot *
snapshot_ref(struct snapshot *s)
{
	__atomic_add_fetch(&s->refcnt, 1, __ATOMIC_RELAXED);
	return s;
}

/* snapshot_unref - last holder frees chains and config */
void
snapshot_unref(struct snapshot *s)
{
	size_t i;

	if (s == NULL || __atomic_sub_fetch(&s->refcnt, 1, __ATOMIC_ACQ_REL) != 0)
		return;
	for (i = 0; i < s->conf->nlisteners; i++)
		filter_chain_free(s->chains[i]);
	free(s->chains);
	free(s->counts);
	free(s->bound_li);
	if (s->tls)
		tls_ctx_unref(s->tls);
	if (s->tls_client)
		tls_ctx_unref(s->tls_client);
	auth_backend_free(s->auth);
	conf_unref(s->conf);
	free(s);
}

/* conf_uses_tls - does any listener speak TLS? */
static bool
conf_uses_tls(const struct conf *conf)
{
	size_t i;

	for (i = 0; i < conf->nlisteners; i++)
		if (conf->listeners[i].tls != TLS_NONE)
			return true;
	return false;
}

/* snapshot_get - the live snapshot, referenced */
static struct snapshot *
snapshot_get(void)
{
	struct snapshot *s;

	pthread_mutex_lock(&snap_lock);
	s = snapshot_ref(snap_current);
	pthread_mutex_unlock(&snap_lock);
	return s;
}

/* snapshot_set - install s as live (takes the caller's reference) */
static void
snapshot_set(struct snapshot *s)
{
	struct snapshot *old;

	pthread_mutex_lock(&snap_lock);
	old = snap_current;
	snap_current = s;
	pthread_mutex_unlock(&snap_lock);
	if (old)
		snapshot_unref(old);
}

struct event_base *
loop_base(struct loop *l)
{
	return l->base;
}

struct workers_loop *
loop_workers(struct loop *l, enum server_pool pool)
{
	return l->wl[pool];
}

struct relay_pool *
loop_relay(struct loop *l)
{
	return l->relay;
}

/* loop_resolver_sweep - free the retired contexts with nothing in flight */
static void
loop_resolver_sweep(struct loop *l)
{
	size_t i = 0;

	while (i < l->nretired) {
		if (resolver_idle(l->retired[i])) {
			resolver_free(l->retired[i]);
			l->retired[i] = l->retired[--l->nretired];
		} else
			i++;
	}
}

struct resolver *
loop_resolver(struct loop *l, const struct conf *conf)
{
	struct resolver *res;
	char *key, *err = NULL;

	/* A string per connection: a conf pointer could be reused by a later reload's. */
	key = resolver_key(conf);
	if (l->res != NULL && resolver_matches(l->res, key)) {
		free(key);
		return l->res;
	}
	loop_resolver_sweep(l);
	free(key);
	if ((res = resolver_new(l->base, conf, &err)) == NULL) {
		log_warn("event=resolver_error error=\"%s\"", err);
		free(err);
		return l->res;
	}
	if (l->res != NULL) {
		l->retired = xreallocarray(l->retired, l->nretired + 1, sizeof(*l->retired));
		l->retired[l->nretired++] = l->res;
		loop_resolver_sweep(l);
	}
	l->res = res;
	return res;
}

/* server_new_session_id - unique over the process and across restarts */
uint64_t
server_new_session_id(void)
{
	return atomic_fetch_add(&session_counter, 1);
}

/* loop_session_add - register s under id */
void
loop_session_add(struct loop *l, struct session *s, uint64_t id)
{
	struct session_slot *slot;
	size_t b;

	if (l->nsessions >= l->nbuckets) {
		size_t i, nb = l->nbuckets ? l->nbuckets * 2 : 256;
		struct session_slot **nbk = xcalloc(nb, sizeof(*nbk));

		for (i = 0; i < l->nbuckets; i++) {
			while ((slot = l->buckets[i]) != NULL) {
				l->buckets[i] = slot->next;
				slot->next = nbk[slot->id & (nb - 1)];
				nbk[slot->id & (nb - 1)] = slot;
			}
		}
		free(l->buckets);
		l->buckets = nbk;
		l->nbuckets = nb;
	}
	slot = xmalloc(sizeof(*slot));
	slot->id = id;
	slot->s = s;
	slot->count = NULL;
	b = id & (l->nbuckets - 1);
	slot->next = l->buckets[b];
	l->buckets[b] = slot;
	l->nsessions++;
}

/* loop_session_remove - unregister id and give back what it counted on */
void
loop_session_remove(struct loop *l, struct session *s, uint64_t id)
{
	struct session_slot **pp, *slot;

	for (pp = &l->buckets[id & (l->nbuckets - 1)]; (slot = *pp) != NULL; pp = &slot->next) {
		if (slot->id == id) {
			*pp = slot->next;
			if (slot->count != NULL) {
				atomic_fetch_sub(&slot->count->n, 1);
				atomic_fetch_sub(&sessions_live, 1);
			}
			free(slot);
			l->nsessions--;
			break;
		}
	}
	if (l->nsessions == 0 && atomic_load(&l->draining))
		event_base_loopbreak(l->base);
	/* A descriptor came free: a loop paused by EMFILE may try again now. */
	if (l->accept_paused && !atomic_load(&l->draining))
		loop_accept_resume(l);
}

/*
 * loop_flush_later - a session's replies are ready: flush them when the
 * loop turn ends, with every other session's, so the clients wake up once
 * for the lot.  False when no turn is running (tests drive loops by hand):
 * the caller flushes now.
 */
bool
loop_flush_later(struct loop *l, uint64_t id)
{
	if (!l->in_turn)
		return false;
	if (l->nlater == l->alater) {
		l->alater = l->alater ? 2 * l->alater : 64;
		l->later = xreallocarray(l->later, l->alater, sizeof(*l->later));
	}
	l->later[l->nlater++] = id;
	return true;
}

/*
 * loop_flush_sessions - the turn ended: send the replies it made and the
 * backend commands it held, all in one batch; then what the sockets did not
 * take goes to the bufferevents (sessions gone since are skipped)
 */
static void
loop_flush_sessions(struct loop *l)
{
	size_t i;

	l->in_turn = false;
	for (i = 0; i < l->nlater; i++) {
		struct session *s = loop_session_find(l, l->later[i]);

		if (s != NULL)
			session_send(s, l->sb);
	}
	relay_pool_send(l->relay, l->sb);
	sendbatch_run(l->sb);
	for (i = 0; i < l->nlater; i++) {
		struct session *s = loop_session_find(l, l->later[i]);

		if (s != NULL)
			session_queue(s);
	}
	l->nlater = 0;
	relay_pool_uncork(l->relay);
}

/* loop_slot_find - the registry entry of id, or NULL */
static struct session_slot *
loop_slot_find(struct loop *l, uint64_t id)
{
	struct session_slot *slot;

	if (l->nbuckets == 0)
		return NULL;
	for (slot = l->buckets[id & (l->nbuckets - 1)]; slot; slot = slot->next)
		if (slot->id == id)
			return slot;
	return NULL;
}

/* loop_session_find - the live session with id, or NULL */
struct session *
loop_session_find(struct loop *l, uint64_t id)
{
	struct session_slot *slot = loop_slot_find(l, id);

	return slot != NULL ? slot->s : NULL;
}

/* loop_accept_set - enable or disable every listener of l that is still open */
static void
loop_accept_set(struct loop *l, bool on)
{
	size_t i;

	for (i = 0; i < l->nsocks; i++) {
		if (l->lev[i] == NULL)
			continue;
		if (on)
			evconnlistener_enable(l->lev[i]);
		else
			evconnlistener_disable(l->lev[i]);
	}
}

/* loop_accept_resume - end an accept pause: take connections again */
static void
loop_accept_resume(struct loop *l)
{
	evtimer_del(l->accept_timer);
	l->accept_paused = false;
	loop_accept_set(l, true);
}

/* accept_timer_cb - the pause is over (a drain has closed the listeners meanwhile) */
static void
accept_timer_cb(evutil_socket_t fd, short what, void *arg)
{
	struct loop *l = arg;

	if (!atomic_load(&l->draining))
		loop_accept_resume(l);
}

/*
 * accept_error_cb - accept(2) failed (EMFILE, ENFILE, ENOBUFS...): the
 * connection stays in the kernel's queue and the socket stays readable, so
 * trying again at once would spin.  Stop accepting on this loop for
 * ACCEPT_PAUSE seconds, or until one of its sessions ends and gives a
 * descriptor back.  While descriptors are short every session's end brings
 * another pause: one line starts the spell and one a minute recalls it,
 * with the pauses since; ACCEPT_QUIET seconds without a failure end it.
 */
static void
accept_error_cb(struct evconnlistener *lev, void *arg)
{
	struct listen_sock *ls = arg;
	struct loop *l = ls->loop;
	int err = EVUTIL_SOCKET_ERROR();
	struct timeval tv = { ACCEPT_PAUSE, 0 };
	unsigned long long now = now_ms();

	if (l->accept_trouble && now - l->accept_failed_ms >= ACCEPT_QUIET * 1000ULL)
		l->accept_trouble = false;
	l->accept_pauses++;
	if (!l->accept_trouble || now - l->accept_logged_ms >= ACCEPT_REMIND * 1000ULL) {
		log_warn("event=accept_paused listen=%s error=\"%s\" sessions=%zu pause=%ds "
		    "pauses=%u", bind_spec(ls->bi), evutil_socket_error_to_string(err),
		    l->nsessions, ACCEPT_PAUSE, l->accept_pauses);
		l->accept_logged_ms = now;
		l->accept_pauses = 0;
	}
	l->accept_trouble = true;
	l->accept_failed_ms = now;
	l->accept_paused = true;
	loop_accept_set(l, false);
	evtimer_add(l->accept_timer, &tv);
}

/* accept_refuse - a connection to an address no listener has since a reload: 421, close */
static void
accept_refuse(const struct snapshot *snap, const struct listen_sock *ls, evutil_socket_t fd,
    const struct sockaddr *sa)
{
	char line[SMTP_REPLY_LINE_MAX], client[INET6_ADDRSTRLEN];
	size_t n = smtp_reply_line(line, sizeof(line), R_SHUTDOWN, snap->conf->hostname);

	/* A new socket's buffer takes one line; if not, the client just sees the close. */
	if (send(fd, line, n, MSG_DONTWAIT | MSG_NOSIGNAL) < 0)
		log_debug("event=refused error=\"%s\"", strerror(errno));
	evutil_closesocket(fd);
	if (!sockaddr_text(sa, client, sizeof(client)))
		str_copy(client, "unknown", sizeof(client));
	log_info("event=refused listen=%s client=%s reason=\"no listener has this address since "
	    "the reload\"", bind_spec(ls->bi), client);
}

/* accept_cb - a new client on one of this loop's sockets */
static void
accept_cb(struct evconnlistener *lev, evutil_socket_t fd, struct sockaddr *sa, int salen,
    void *arg)
{
	struct listen_sock *ls = arg;
	struct loop *l = ls->loop;
	struct snapshot *snap = snapshot_get();
	size_t li = snap->bound_li[ls->bi];
	struct bufferevent *bev;

	if (l->accept_trouble && now_ms() - l->accept_failed_ms >= ACCEPT_QUIET * 1000ULL) {
		log_info("event=accept_resumed listen=%s pauses=%u", bind_spec(ls->bi),
		    l->accept_pauses);
		l->accept_trouble = false;
		l->accept_pauses = 0;
	}
	if (li == SIZE_MAX) {
		accept_refuse(snap, ls, fd, sa);
		snapshot_unref(snap);
		return;
	}
	/* TCP_NODELAY comes from the listening socket (Linux copies it to accepted ones). */
	if (snap->conf->listeners[li].tls == TLS_IMPLICIT && snap->tls != NULL)
		bev = bufferevent_openssl_socket_new(l->base, fd, tls_server_ssl_new(snap->tls),
		    BUFFEREVENT_SSL_ACCEPTING, BEV_OPT_CLOSE_ON_FREE);
	else
		bev = bufferevent_socket_new(l->base, fd, BEV_OPT_CLOSE_ON_FREE);
	if (bev == NULL)
		fatal("bufferevent_socket_new failed");
	session_start(l, snap, li, bev, sa, (socklen_t)salen);
	snapshot_unref(snap);
}

/* server_session_begin - count a session on its listener and the process; false when over */
bool
server_session_begin(struct loop *l, uint64_t id, const struct snapshot *snap, size_t li)
{
	struct session_slot *slot = loop_slot_find(l, id);
	const struct conf *conf = snap->conf;
	unsigned pmax = conf->limits.max_sessions, fdmax = bind_session_max();
	bool ok;

	assert(slot != NULL && slot->count == NULL && li < conf->nlisteners);
	if (pmax > fdmax)
		pmax = fdmax;
	slot->count = snap->counts[li];
	ok = atomic_fetch_add(&slot->count->n, 1) < conf->listeners[li].limits.max_sessions;
	return atomic_fetch_add(&sessions_live, 1) < pmax && ok;
}

/* server_drop_privileges - become user for good, in every thread (none exist yet) */
bool
server_drop_privileges(const char *user)
{
	struct passwd *pw;

	if (geteuid() != 0)
		return true;
	if (user == NULL || *user == '\0') {
		log_err("event=startup error=\"refusing to serve as root: set user = in [server]\"");
		return false;
	}
	pw = getpwnam(user);
	if (pw == NULL) {
		log_err("event=startup error=\"user %s: no such user\"", user);
		return false;
	}
	if (pw->pw_uid == 0) {
		log_err("event=startup error=\"user %s is root: choose an unprivileged user\"", user);
		return false;
	}
	if (setgroups(1, &pw->pw_gid) < 0 || setresgid(pw->pw_gid, pw->pw_gid, pw->pw_gid) < 0 ||
	    setresuid(pw->pw_uid, pw->pw_uid, pw->pw_uid) < 0) {
		log_err("event=startup error=\"cannot drop privileges to %s: %s\"", user,
		    strerror(errno));
		return false;
	}
	if (setuid(0) == 0) {
		log_err("event=startup error=\"privilege drop did not stick\"");
		return false;
	}
	prctl(PR_SET_DUMPABLE, 1, 0, 0, 0);
	log_info("event=privileges user=%s uid=%u gid=%u", user, (unsigned)pw->pw_uid,
	    (unsigned)pw->pw_gid);
	return true;
}

/* prepare_maildir - create the Maildir root for the unprivileged user */
static void
prepare_maildir(const struct conf *conf)
{
	struct passwd *pw;
	const char *p = conf->relay.path;
	char path[4096];
	size_t i;

	if (conf->relay.kind != RELAY_MAILDIR || p == NULL)
		return;
	/* mkdir -p */
	for (i = 0; p[i] && i + 1 < sizeof(path); i++) {
		path[i] = p[i];
		if (p[i] == '/' && i > 0) {
			path[i] = '\0';
			mkdir(path, 0755);
			path[i] = '/';
		}
	}
	path[i] = '\0';
	mkdir(path, 0700);
	if (geteuid() == 0 && conf->user && (pw = getpwnam(conf->user)) != NULL) {
		if (chown(path, pw->pw_uid, pw->pw_gid) < 0)
			log_warn("event=startup path=%s error=\"chown: %s\"", path, strerror(errno));
	}
}

/* drain_timer_cb - drain_timeout passed: 421 the rest */
static void
drain_timer_cb(evutil_socket_t fd, short what, void *arg)
{
	struct loop *l = arg;
	struct timeval tv = { DRAIN_GRACE, 0 };
	size_t b;

	/* First pass spares sessions waiting on the backend; DRAIN_GRACE later, none. */
	l->drain_passes++;
	for (b = 0; b < l->nbuckets; b++) {
		struct session_slot *slot, *next;

		for (slot = l->buckets[b]; slot; slot = next) {
			next = slot->next;
			session_shutdown(slot->s, l->drain_passes > 1);
		}
	}
	if (l->nsessions > 0)
		evtimer_add(l->drain_timer, &tv);
}

/* ctl_cb - the main thread asked this loop to drain */
static void
ctl_cb(evutil_socket_t fd, short what, void *arg)
{
	struct loop *l = arg;
	struct snapshot *snap = snapshot_get();
	struct timeval tv = { snap->conf->drain_timeout, 0 };
	size_t i;

	snapshot_unref(snap);
	evtimer_del(l->accept_timer);
	l->accept_paused = false;
	for (i = 0; i < l->nsocks; i++) {
		if (l->lev[i]) {
			evconnlistener_free(l->lev[i]);
			l->lev[i] = NULL;
		}
	}
	if (l->nsessions == 0) {
		event_base_loopbreak(l->base);
		return;
	}
	/* Sessions between transactions lose nothing: end them now, wait for the rest. */
	{
		size_t b;

		for (b = 0; b < l->nbuckets; b++) {
			struct session_slot *slot;

			for (slot = l->buckets[b]; slot; slot = slot->next)
				session_shutdown_idle(slot->s);
		}
	}
	l->drain_timer = evtimer_new(l->base, drain_timer_cb, l);
	evtimer_add(l->drain_timer, &tv);
}

/* loop_main - one event loop thread */
static void *
loop_main(void *arg)
{
	struct loop *l = arg;

	/*
	 * One turn at a time: backend writes made by a turn's callbacks are held
	 * and written together when it ends (relay_pool_uncork), so the backend
	 * wakes once for all of them instead of once per session.  The clients'
	 * replies wait for the turn's end the same way (loop_flush_later), and
	 * the turn's log lines go out in one write(2).
	 */
	log_batch(true);
	for (;;) {
		int rc;

		l->in_turn = true;
		relay_pool_cork(l->relay);
		rc = event_base_loop(l->base, EVLOOP_ONCE);
		loop_flush_sessions(l);
		log_flush();
		if (rc != 0 || event_base_got_break(l->base) || event_base_got_exit(l->base))
			break;
	}
	log_batch(false);
	return NULL;
}

/* loop_init - base, a channel to each pool and the relay pool (no listeners) */
static void
loop_init(struct loop *l, unsigned index, struct event_base *base,
    struct workers *const w[SERVER_POOLS])
{
	size_t i;

	l->index = index;
	l->base = base;
	for (i = 0; i < SERVER_POOLS; i++)
		l->wl[i] = workers_attach(w[i], l->base);
	l->relay = relay_pool_new(l->base, l->wl[SERVER_POOL_DELIVERY]);
	l->ctl = event_new(l->base, -1, 0, ctl_cb, l);
	l->accept_timer = evtimer_new(l->base, accept_timer_cb, l);
	if (l->ctl == NULL || l->accept_timer == NULL)
		fatal("event_new failed");
}

/* loop_fini - undo loop_init, and free the sessions' lookup and the turn's lists */
static void
loop_fini(struct loop *l)
{
	size_t i;

	event_free(l->ctl);
	event_free(l->accept_timer);
	relay_pool_free(l->relay);
	/* Every session is gone: nothing owns a query any more. */
	resolver_free(l->res);
	for (i = 0; i < l->nretired; i++)
		resolver_free(l->retired[i]);
	free(l->retired);
	for (i = 0; i < SERVER_POOLS; i++)
		workers_detach(l->wl[i]);
	free(l->buckets);
	free(l->later);
	sendbatch_free(l->sb);
}

/* loop_new - a loop without listeners on an existing base (tests drive sessions on it) */
struct loop *
loop_new(struct event_base *base, struct workers *const w[SERVER_POOLS])
{
	struct loop *l = xcalloc(1, sizeof(*l));

	loop_init(l, 0, base, w);
	return l;
}

/* loop_free - undo loop_new; every session must be gone */
void
loop_free(struct loop *l)
{
	loop_fini(l);
	free(l);
}

/* loop_setup - base, listeners, worker channel and relay pool of one loop */
static void
loop_setup(struct loop *l, unsigned index, const struct conf *conf)
{
	size_t i;
	struct event_base *base = event_base_new();

	if (base == NULL)
		fatal("event_base_new failed");
	loop_init(l, index, base, pools);
	l->sb = sendbatch_new(conf->io_uring);
	l->lev = xcalloc(l->nsocks ? l->nsocks : 1, sizeof(*l->lev));
	for (i = 0; i < l->nsocks; i++) {
		l->lev[i] = evconnlistener_new(l->base, accept_cb, &l->socks[i],
		    LEV_OPT_CLOSE_ON_FREE, -1, l->socks[i].fd);
		if (l->lev[i] == NULL)
			fatal("evconnlistener_new failed");
		evconnlistener_set_error_cb(l->lev[i], accept_error_cb);
	}
}

/* loop_teardown - free what loop_setup made */
static void
loop_teardown(struct loop *l)
{
	size_t i;

	for (i = 0; i < l->nsocks; i++)
		if (l->lev[i])
			evconnlistener_free(l->lev[i]);
	free(l->lev);
	free(l->socks);
	if (l->drain_timer)
		event_free(l->drain_timer);
	state_base_gone(l->base);	/* its calls' answers may look for sessions: before loop_fini */
	loop_fini(l);
	event_base_free(l->base);
}

struct signal_ctx {
	struct event_base *base;
	const char *config_path;
	struct loop *loops;
	unsigned nloops;
	bool draining;
};

/*
 * reload_failed_log - conf_load's errors (one per line, quoting the values
 * they refuse) as one log line: joined with "; " and escaped
 */
static void
reload_failed_log(const struct buf *errors)
{
	struct buf joined;
	char esc[4096];
	size_t i;

	buf_init(&joined);
	for (i = 0; i < errors->len; i++) {
		if (errors->data[i] != '\n')
			buf_putc(&joined, errors->data[i]);
		else if (i + 1 < errors->len)
			buf_puts(&joined, "; ");
	}
	log_err("event=reload result=failed errors=\"%s\"",
	    log_escape(esc, sizeof(esc), joined.data ? joined.data : "", joined.len));
	buf_free(&joined);
}

/* sighup_cb - reload: new snapshot for new sessions */
static void
sighup_cb(evutil_socket_t sig, short what, void *arg)
{
	struct signal_ctx *sc = arg;
	struct buf errors;
	struct conf *conf;
	struct snapshot *snap;
	char *err = NULL;
	unsigned restart;

	buf_init(&errors);
	conf = conf_load(sc->config_path, &errors);
	if (conf == NULL) {
		reload_failed_log(&errors);
		buf_free(&errors);
		return;
	}
	buf_free(&errors);
	snap = snapshot_new(conf, &err);
	if (snap == NULL) {
		char esc[4096];

		/* e.g. a filter's key file the unprivileged user cannot read: the old one stays */
		log_err("event=reload result=failed error=\"%s\" action=kept_previous",
		    log_escape(esc, sizeof(esc), err, strlen(err)));
		free(err);
		conf_unref(conf);
		return;
	}
	restart = bind_map(snap);
	if (conf->limits.max_sessions > bind_session_max())
		log_warn("event=max_sessions_lowered configured=%u max_sessions=%u reason=nofile",
		    conf->limits.max_sessions, bind_session_max());
	snapshot_set(snap);
	log_info("event=reload result=ok config=%s restart_needed=%s", sc->config_path,
	    restart > 0 ? "yes" : "no");
}

/* sigterm_cb - drain every loop */
static void
sigterm_cb(evutil_socket_t sig, short what, void *arg)
{
	struct signal_ctx *sc = arg;
	unsigned i;

	if (sc->draining)
		return;
	sc->draining = true;
	log_info("event=shutdown signal=%d state=draining", (int)sig);
	for (i = 0; i < sc->nloops; i++) {
		atomic_store(&sc->loops[i].draining, 1);
		event_active(sc->loops[i].ctl, 0, 0);
	}
	event_base_loopbreak(sc->base);
}

/* server_run - serve until SIGTERM */
int
server_run(struct snapshot *snap, const char *config_path)
{
	struct conf *conf = snap->conf;
	unsigned nloops = conf->workers ? conf->workers : 1, i;
	struct loop *loops = xcalloc(nloops, sizeof(*loops));
	struct signal_ctx sc;
	struct event *ev_term, *ev_int, *ev_hup;
	sigset_t all, old;
	bool uring;

	evthread_use_pthreads();
	atomic_store(&session_counter, ((uint64_t)time(NULL) << 20) ^ ((uint64_t)getpid() << 44));
	if (geteuid() == 0 && (conf->user == NULL || *conf->user == '\0')) {
		log_err("event=startup error=\"refusing to serve as root: set user = in [server]\"");
		goto fail;
	}
	if (!bind_collect(conf) || !bind_size_sessions(conf, nloops) || !bind_loops(loops, nloops))
		goto fail;
	bind_map(snap);
	snapshot_set(snapshot_ref(snap));
	prepare_maildir(conf);
	if (!server_drop_privileges(conf->user))
		goto fail;
	for (i = 0; i < nloops; i++) {
		size_t k;

		for (k = 0; k < loops[i].nsocks; k++) {
			if (listen(loops[i].socks[k].fd, 1024) < 0) {
				log_err("event=listen_error listen=%s error=\"%s\"",
				    bind_spec(loops[i].socks[k].bi), strerror(errno));
				goto fail;
			}
		}
	}
	signal(SIGPIPE, SIG_IGN);
	pools[SERVER_POOL_FILTER] = workers_new(conf->filter_threads, conf->pool_queue);
	pools[SERVER_POOL_AUTH] = workers_new(conf->auth_threads, conf->pool_queue);
	pools[SERVER_POOL_DELIVERY] = workers_new(conf->delivery_threads, conf->pool_queue);
	for (i = 0; i < nloops; i++)
		loop_setup(&loops[i], i, conf);
	uring = sendbatch_uring(loops[0].sb);	/* nloops >= 1 */
	if (conf->io_uring && !uring)
		log_warn("event=startup io_uring=unavailable reason=\"%s\" writes=writev",
		    sendbatch_uring_why(loops[0].sb));

	memset(&sc, 0, sizeof(sc));
	sc.base = event_base_new();
	sc.config_path = config_path;
	sc.loops = loops;
	sc.nloops = nloops;
	ev_term = evsignal_new(sc.base, SIGTERM, sigterm_cb, &sc);
	ev_int = evsignal_new(sc.base, SIGINT, sigterm_cb, &sc);
	ev_hup = evsignal_new(sc.base, SIGHUP, sighup_cb, &sc);
	evsignal_add(ev_term, NULL);
	evsignal_add(ev_int, NULL);
	evsignal_add(ev_hup, NULL);

	/* Loop threads never see signals: the main thread takes them all. */
	sigfillset(&all);
	pthread_sigmask(SIG_BLOCK, &all, &old);
	for (i = 0; i < nloops; i++)
		if (pthread_create(&loops[i].thread, NULL, loop_main, &loops[i]) != 0)
			fatal("pthread_create failed");
	pthread_sigmask(SIG_SETMASK, &old, NULL);
	log_info("event=startup loops=%u listeners=%zu max_sessions=%u relay=%s writes=%s", nloops,
	    conf->nlisteners, conf->limits.max_sessions < bind_session_max() ?
	    conf->limits.max_sessions : bind_session_max(),
	    conf->relay.spec ? conf->relay.spec : "none",
	    uring ? "io_uring" : "writev");

	event_base_dispatch(sc.base);

	for (i = 0; i < nloops; i++)
		pthread_join(loops[i].thread, NULL);
	log_info("event=shutdown state=done");
	for (i = 0; i < nloops; i++)
		loop_teardown(&loops[i]);
	for (i = 0; i < SERVER_POOLS; i++)
		workers_free(pools[i]);
	filter_pools_free();
	state_shutdown();
	/*
	 * Freeing the signal events restores the default actions: a SIGTERM sent
	 * again must not kill the exit.  Only this thread is left: block, ignore.
	 */
	sigemptyset(&all);
	sigaddset(&all, SIGTERM);
	sigaddset(&all, SIGINT);
	sigaddset(&all, SIGHUP);
	pthread_sigmask(SIG_BLOCK, &all, NULL);
	event_free(ev_term);
	event_free(ev_int);
	event_free(ev_hup);
	signal(SIGTERM, SIG_IGN);
	signal(SIGINT, SIG_IGN);
	signal(SIGHUP, SIG_IGN);
	event_base_free(sc.base);
	free(loops);
	bind_forget();
	snapshot_set(NULL);
	return 0;

fail:
	bind_close(loops, nloops);
	free(loops);
	bind_forget();
	snapshot_set(NULL);
	return 1;
}
