/*
 * resolver.c - DNS over libunbound (see resolver.h): one ub_ctx per loop,
 * answers delivered on the loop, every query bounded by a timer of ours.
 *
 * Why a timer of ours: libunbound has no per-query deadline (its own
 * retries to a server that does not answer last minutes), so a query not
 * answered within resolver_timeout is ub_cancel()ed and completes as
 * RESOLVER_TIMEOUT.  A cancelled query's answer, if it comes, is dropped
 * inside libunbound (it looks the query up by id and finds nothing).
 *
 * Never: block the loop (ub_resolve is only called through resolver_sync,
 * on pool threads), call a callback after resolver_cancel, or free a
 * context from inside ub_process.
 */
#include "config.h"

#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <netinet/in.h>
#include <sys/socket.h>

#include <event2/event.h>
#include <unbound.h>

#include "conf.h"
#include "log.h"
#include "resolver.h"
#include "util.h"

struct resolver {
	struct ub_ctx *ctx;
	struct event *ev;		/* ub_fd readable */
	struct event_base *base;
	char *key;
	unsigned timeout;		/* seconds */
	struct resolver_query *queries;	/* in flight, doubly linked */
};

struct resolver_query {
	struct resolver *res;
	struct resolver_query *prev, *next;
	int id;				/* libunbound's async_id */
	struct event *timer;
	resolver_cb cb;
	void *arg;
};

static const char *const resolver_status_names[] = {
	"ok", "nodata", "nxdomain", "servfail", "timeout", "error",
};

const char *
resolver_status_name(enum resolver_status st)
{
	return resolver_status_names[st];
}

/* resolver_key - what the context is built from: servers, timeout, trust anchor */
char *
resolver_key(const struct conf *conf)
{
	return xasprintf("%s|%u|%s", conf->resolver, conf->resolver_timeout,
	    conf->resolver_trust_anchor ? conf->resolver_trust_anchor : "");
}

/* resolver_ctx_fail - the error text for rc, and the context freed */
static struct ub_ctx *
resolver_ctx_fail(struct ub_ctx *ctx, const char *what, const char *arg, int rc, char **err_r)
{
	*err_r = xasprintf("resolver: %s %s: %s", what, arg,
	    rc == UB_READFILE ? strerror(errno) : ub_strerror(rc));
	ub_ctx_delete(ctx);
	return NULL;
}

/* resolver_ctx_new - a threaded-async context for conf's servers and trust anchor */
static struct ub_ctx *
resolver_ctx_new(const struct conf *conf, char **err_r)
{
	struct ub_ctx *ctx = ub_ctx_create();
	char *list, *tok, *save = NULL;
	int rc;

	if (ctx == NULL) {
		*err_r = xstrdup("resolver: ub_ctx_create failed");
		return NULL;
	}
	/* A thread of libunbound's, not a forked process: the daemon has threads and dropped root. */
	if ((rc = ub_ctx_async(ctx, 1)) != 0)
		return resolver_ctx_fail(ctx, "async", "mode", rc, err_r);
	if (str_casecmp(conf->resolver, "system") == 0) {
		rc = ub_ctx_resolvconf(ctx, NULL);
		/* No resolv.conf at all: the C library's default, a server on this host. */
		if (rc == UB_READFILE && errno == ENOENT) {
			(void)ub_ctx_set_option(ctx, "do-not-query-localhost:", "no");
			rc = ub_ctx_set_fwd(ctx, "127.0.0.1");
		}
		if (rc != 0)
			return resolver_ctx_fail(ctx, "reading", "/etc/resolv.conf", rc, err_r);
		/* As getnameinfo does: /etc/hosts first (a missing file is no error). */
		(void)ub_ctx_hosts(ctx, NULL);
	} else {
		/* Servers on loopback are the usual case (a local cache): query them. */
		(void)ub_ctx_set_option(ctx, "do-not-query-localhost:", "no");
		list = xstrdup(conf->resolver);
		for (tok = strtok_r(list, " \t", &save); tok; tok = strtok_r(NULL, " \t", &save)) {
			if ((rc = ub_ctx_set_fwd(ctx, tok)) != 0) {
				ctx = resolver_ctx_fail(ctx, "server", tok, rc, err_r);
				free(list);
				return NULL;
			}
		}
		free(list);
	}
	/*
	 * libunbound answers some names itself (NXDOMAIN), as unbound does:
	 * RFC 6761's test. and the reverse zones of private and documentation
	 * networks (10.in-addr.arpa, 2.0.192.in-addr.arpa...).  A stub with
	 * servers of its own lets them decide instead: an MX's internal relays
	 * have PTR names on 10/8, and test and lab zones work.  ("nodefault"
	 * is ignored through ub_ctx_set_option: "transparent" lets the query
	 * through.)
	 */
	(void)ub_ctx_set_option(ctx, "unblock-lan-zones:", "yes");
	(void)ub_ctx_set_option(ctx, "insecure-lan-zones:", "yes");
	(void)ub_ctx_set_option(ctx, "local-zone:", "test. transparent");
	/* 127.0.0.1 stays "localhost"; the rest of 127/8 (loopback aliases) asks the servers. */
	(void)ub_ctx_set_option(ctx, "local-zone:", "127.in-addr.arpa. transparent");
	(void)ub_ctx_set_option(ctx, "local-data:", "1.0.0.127.in-addr.arpa. 10800 IN PTR localhost.");
	if (conf->resolver_trust_anchor &&
	    (rc = ub_ctx_add_ta_file(ctx, conf->resolver_trust_anchor)) != 0)
		return resolver_ctx_fail(ctx, "trust anchor", conf->resolver_trust_anchor, rc, err_r);
	return ctx;
}

/* resolver_check - build a context for conf and load it (trust anchor file included), no query sent */
bool
resolver_check(const struct conf *conf, char **err_r)
{
	struct ub_ctx *ctx = resolver_ctx_new(conf, err_r);
	struct ub_result *r = NULL;
	int rc;

	if (ctx == NULL)
		return false;
	/*
	 * libunbound reads the trust anchor when the first query finalizes the
	 * context: ask for "localhost", which its built-in local zone answers
	 * without any server.
	 */
	rc = ub_ctx_set_option(ctx, "do-ip4:", "no");
	if (rc == 0)
		rc = ub_ctx_set_option(ctx, "do-ip6:", "no");
	if (rc == 0)
		rc = ub_resolve(ctx, "localhost.", RESOLVER_A, 1, &r);
	ub_resolve_free(r);
	if (rc != 0) {
		*err_r = xasprintf("resolver: %s%s%s", ub_strerror(rc),
		    conf->resolver_trust_anchor ? ": cannot load the trust anchor " : "",
		    conf->resolver_trust_anchor ? conf->resolver_trust_anchor : "");
		ub_ctx_delete(ctx);
		return false;
	}
	ub_ctx_delete(ctx);
	return true;
}

/* resolver_answer_from - the caller's view of libunbound's result */
static void
resolver_answer_from(struct resolver_answer *a, int err, const struct ub_result *r)
{
	memset(a, 0, sizeof(*a));
	a->rcode = -1;
	if (err != 0 || r == NULL) {
		a->status = RESOLVER_ERROR;
		a->why = ub_strerror(err);
		return;
	}
	a->rcode = r->rcode;
	a->secure = r->secure != 0;
	if (r->bogus) {
		a->status = RESOLVER_SERVFAIL;
		a->bogus = true;
		a->why = r->why_bogus ? r->why_bogus : "bogus";
		return;
	}
	if (r->rcode == 0 && r->havedata) {
		a->status = RESOLVER_OK;
		for (a->count = 0; r->data[a->count] != NULL; a->count++)
			;
		a->data = r->data;
		a->len = r->len;
	} else if (r->rcode == 0)
		a->status = RESOLVER_NODATA;
	else if (r->rcode == 3)
		a->status = RESOLVER_NXDOMAIN;
	else
		a->status = RESOLVER_SERVFAIL;
}

/* resolver_unlink - take q out of its resolver's list and free it */
static void
resolver_unlink(struct resolver_query *q)
{
	struct resolver *res = q->res;

	if (q->prev)
		q->prev->next = q->next;
	else
		res->queries = q->next;
	if (q->next)
		q->next->prev = q->prev;
	event_free(q->timer);
	free(q);
}

/* resolver_ub_cb - libunbound's answer (inside ub_process, on the loop) */
static void
resolver_ub_cb(void *arg, int err, struct ub_result *r)
{
	struct resolver_query *q = arg;
	resolver_cb cb = q->cb;
	void *cbarg = q->arg;
	struct resolver_answer a;

	resolver_unlink(q);
	resolver_answer_from(&a, err, r);
	cb(cbarg, &a);
	ub_resolve_free(r);
}

/* resolver_timer_cb - resolver_timeout passed: cancel and say so */
static void
resolver_timer_cb(evutil_socket_t fd, short what, void *arg)
{
	struct resolver_query *q = arg;
	resolver_cb cb = q->cb;
	void *cbarg = q->arg;
	struct resolver_answer a;

	(void)ub_cancel(q->res->ctx, q->id);
	resolver_unlink(q);
	memset(&a, 0, sizeof(a));
	a.status = RESOLVER_TIMEOUT;
	a.rcode = -1;
	cb(cbarg, &a);
}

/* resolver_fd_cb - answers are waiting in libunbound's pipe */
static void
resolver_fd_cb(evutil_socket_t fd, short what, void *arg)
{
	struct resolver *res = arg;
	int rc = ub_process(res->ctx);

	if (rc != 0) {
		/* Its thread is gone (the pipe closed): stop watching, the timers end the queries. */
		log_err("event=resolver_error error=\"%s\"", ub_strerror(rc));
		event_del(res->ev);
	}
}

struct resolver *
resolver_new(struct event_base *base, const struct conf *conf, char **err_r)
{
	struct ub_ctx *ctx = resolver_ctx_new(conf, err_r);
	struct resolver *res;

	if (ctx == NULL)
		return NULL;
	res = xcalloc(1, sizeof(*res));
	res->ctx = ctx;
	res->base = base;
	res->key = resolver_key(conf);
	res->timeout = conf->resolver_timeout;
	res->ev = event_new(base, ub_fd(ctx), EV_READ | EV_PERSIST, resolver_fd_cb, res);
	if (res->ev == NULL || event_add(res->ev, NULL) != 0)
		fatal("resolver: event_new failed");
	return res;
}

bool
resolver_matches(const struct resolver *res, const char *key)
{
	return strcmp(res->key, key) == 0;
}

bool
resolver_idle(const struct resolver *res)
{
	return res->queries == NULL;
}

unsigned
resolver_timeout(const struct resolver *res)
{
	return res->timeout;
}

struct event_base *
resolver_base(const struct resolver *res)
{
	return res->base;
}

/* resolver_free - cancel what is in flight (no callback runs) and free */
void
resolver_free(struct resolver *res)
{
	if (res == NULL)
		return;
	while (res->queries) {
		(void)ub_cancel(res->ctx, res->queries->id);
		resolver_unlink(res->queries);
	}
	event_free(res->ev);
	/* Stops libunbound's thread; answers still in its pipe are dropped. */
	ub_ctx_delete(res->ctx);
	free(res->key);
	free(res);
}

struct resolver_query *
resolver_query(struct resolver *res, const char *name, int rrtype, resolver_cb cb, void *arg,
    const char **err_r)
{
	struct resolver_query *q = xcalloc(1, sizeof(*q));
	struct timeval tv = { res->timeout, 0 };
	int rc;

	q->res = res;
	q->cb = cb;
	q->arg = arg;
	rc = ub_resolve_async(res->ctx, name, rrtype, 1, q, resolver_ub_cb, &q->id);
	if (rc != 0) {
		*err_r = ub_strerror(rc);
		free(q);
		return NULL;
	}
	q->timer = evtimer_new(res->base, resolver_timer_cb, q);
	if (q->timer == NULL)
		fatal("resolver: evtimer_new failed");
	evtimer_add(q->timer, &tv);
	q->next = res->queries;
	if (q->next)
		q->next->prev = q;
	res->queries = q;
	return q;
}

void
resolver_cancel(struct resolver_query *q)
{
	if (q == NULL)
		return;
	(void)ub_cancel(q->res->ctx, q->id);
	resolver_unlink(q);
}

/* ---- the synchronous path ---- */

struct resolver_sync_state {
	bool done;
	int err;
	struct ub_result *r;
};

/*
 * The calling thread's context and the settings it was built from, freed
 * when the thread exits (a pthread key's destructor: pool threads need not
 * know about it).
 */
struct resolver_sync_ctx {
	struct ub_ctx *ctx;
	char *key;
};
static pthread_key_t sync_tkey;
static pthread_once_t sync_once = PTHREAD_ONCE_INIT;

static void
resolver_sync_ctx_free(void *p)
{
	struct resolver_sync_ctx *t = p;

	if (t == NULL)
		return;
	if (t->ctx)
		ub_ctx_delete(t->ctx);
	free(t->key);
	free(t);
}

static void
resolver_sync_key_make(void)
{
	if (pthread_key_create(&sync_tkey, resolver_sync_ctx_free) != 0)
		fatal("resolver: pthread_key_create failed");
}

static void
resolver_sync_cb(void *arg, int err, struct ub_result *r)
{
	struct resolver_sync_state *st = arg;

	st->done = true;
	st->err = err;
	st->r = r;
}

/* resolver_sync_ctx - the thread's context for conf, built or rebuilt as needed */
static struct ub_ctx *
resolver_sync_ctx(const struct conf *conf, const char **why_r)
{
	struct resolver_sync_ctx *t;
	char *key = resolver_key(conf), *err = NULL;

	(void)pthread_once(&sync_once, resolver_sync_key_make);
	t = pthread_getspecific(sync_tkey);
	if (t != NULL && strcmp(t->key, key) == 0) {
		free(key);
		return t->ctx;
	}
	resolver_sync_thread_end();
	t = xcalloc(1, sizeof(*t));
	t->ctx = resolver_ctx_new(conf, &err);
	if (t->ctx == NULL) {
		free(err);
		free(key);
		free(t);
		*why_r = "cannot set up the resolver";
		return NULL;
	}
	t->key = key;
	if (pthread_setspecific(sync_tkey, t) != 0)
		fatal("resolver: pthread_setspecific failed");
	return t->ctx;
}

void
resolver_sync_thread_end(void)
{
	(void)pthread_once(&sync_once, resolver_sync_key_make);
	resolver_sync_ctx_free(pthread_getspecific(sync_tkey));
	(void)pthread_setspecific(sync_tkey, NULL);
}

/*
 * resolver_sync - ub_resolve_async on the thread's context, then poll its
 * fd until the answer or the deadline: a plain ub_resolve could not be
 * bounded by resolver_timeout.
 */
enum resolver_status
resolver_sync(const struct conf *conf, const char *name, int rrtype, struct resolver_answer *a,
    struct ub_result **ub_r)
{
	struct resolver_sync_state st = { false, 0, NULL };
	struct ub_ctx *ctx;
	const char *why = NULL;
	unsigned long long deadline = now_ms() + 1000ULL * conf->resolver_timeout;
	int id, rc;

	*ub_r = NULL;
	memset(a, 0, sizeof(*a));
	a->rcode = -1;
	a->status = RESOLVER_ERROR;
	if ((ctx = resolver_sync_ctx(conf, &why)) == NULL) {
		a->why = why;
		return a->status;
	}
	if ((rc = ub_resolve_async(ctx, name, rrtype, 1, &st, resolver_sync_cb, &id)) != 0) {
		a->why = ub_strerror(rc);
		return a->status;
	}
	while (!st.done) {
		unsigned long long now = now_ms();
		struct pollfd pfd = { ub_fd(ctx), POLLIN, 0 };

		if (now >= deadline) {
			(void)ub_cancel(ctx, id);
			a->status = RESOLVER_TIMEOUT;
			return a->status;
		}
		if (poll(&pfd, 1, (int)(deadline - now)) > 0)
			(void)ub_process(ctx);
	}
	resolver_answer_from(a, st.err, st.r);
	*ub_r = st.r;
	return a->status;
}

void
resolver_sync_free(struct ub_result *ub)
{
	ub_resolve_free(ub);
}

/* ---- reading answers ---- */

/* resolver_ldh - a letter, digit or hyphen (RFC 952, 1123) */
static bool
resolver_ldh(unsigned char c)
{
	return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
	    c == '-';
}

/* resolver_label_ok - an octet of a label: LDH and '_', or (any) every visible one but '.' and '\\' */
static bool
resolver_label_ok(unsigned char c, bool any)
{
	if (any)
		return c >= 0x21 && c <= 0x7e && c != '.' && c != '\\';
	return resolver_ldh(c) || c == '_';
}

/* resolver_name_chars - a wire-form name in rdata i from offset off, its octets as any says */
static bool
resolver_name_chars(const struct resolver_answer *a, size_t i, size_t off, char *out, size_t size,
    bool any)
{
	const unsigned char *p;
	size_t len, o = 0, k;

	if (i >= a->count || size == 0 || a->len[i] < 0 || (size_t)a->len[i] <= off)
		return false;
	p = (const unsigned char *)a->data[i] + off;
	len = (size_t)a->len[i] - off;
	while (len > 0 && *p != 0) {
		size_t l = *p++;

		/* uncompressed by libunbound: a label is at most 63 octets */
		if (l > 63 || l + 1 > len)
			return false;
		len -= l + 1;
		if (o > 0) {
			if (o + 1 >= size)
				return false;
			out[o++] = '.';
		}
		for (k = 0; k < l; k++, p++) {
			if (!resolver_label_ok(*p, any) || o + 1 >= size)
				return false;
			out[o++] = (char)*p;
		}
	}
	if (len == 0 || o == 0)
		return false;
	out[o] = '\0';
	return true;
}

/* resolver_name - a wire-form name in rdata i from offset off; only LDH and '_' labels */
bool
resolver_name(const struct resolver_answer *a, size_t i, size_t off, char *out, size_t size)
{
	return resolver_name_chars(a, i, off, out, size, false);
}

/* resolver_name_any - the same, any visible octet but '.' and '\\' in a label */
bool
resolver_name_any(const struct resolver_answer *a, size_t i, size_t off, char *out, size_t size)
{
	return resolver_name_chars(a, i, off, out, size, true);
}

/* resolver_txt - a TXT rdata's character-strings joined */
bool
resolver_txt(const struct resolver_answer *a, size_t i, char *out, size_t size)
{
	const unsigned char *p;
	size_t len, o = 0;

	if (i >= a->count || size == 0 || a->len[i] < 0)
		return false;
	p = (const unsigned char *)a->data[i];
	len = (size_t)a->len[i];
	while (len > 0) {
		size_t l = *p++;

		if (l + 1 > len || o + l >= size)
			return false;
		memcpy(out + o, p, l);
		o += l;
		p += l;
		len -= l + 1;
	}
	out[o] = '\0';
	return true;
}

/* resolver_reverse_name - the PTR name of an IPv4 or IPv6 address */
bool
resolver_reverse_name(const struct sockaddr *sa, char *out, size_t size)
{
	static const char hex[] = "0123456789abcdef";
	size_t o = 0;
	int i, n;

	if (sa->sa_family == AF_INET) {
		const unsigned char *b = (const unsigned char *)
		    &((const struct sockaddr_in *)(const void *)sa)->sin_addr;

		n = snprintf(out, size, "%u.%u.%u.%u.in-addr.arpa", b[3], b[2], b[1], b[0]);
		return n > 0 && (size_t)n < size;
	}
	if (sa->sa_family != AF_INET6 || size < 16 * 4 + sizeof("ip6.arpa"))
		return false;
	{
		const unsigned char *b = ((const struct sockaddr_in6 *)(const void *)sa)->
		    sin6_addr.s6_addr;

		for (i = 15; i >= 0; i--) {
			out[o++] = hex[b[i] & 15];
			out[o++] = '.';
			out[o++] = hex[b[i] >> 4];
			out[o++] = '.';
		}
	}
	memcpy(out + o, "ip6.arpa", sizeof("ip6.arpa"));
	return true;
}
