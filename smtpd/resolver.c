/*
 * resolver.c - DNS over libunbound (see resolver.h): one ub_ctx per loop in
 * libunbound's event mode, so that its state machines run on the loop's own
 * event_base and no answer crosses a thread; every query bounded by a timer
 * of ours.
 *
 * Event mode hands each answer over as a DNS packet, valid for the call
 * only: libldns parses it into a struct ub_result of our own, the form
 * libunbound's thread mode would have given (resolver_result_new), and the
 * caller's callback runs later from the query's own event, never from
 * inside libunbound (which may answer inside ub_resolve_event, from its
 * cache or local data): a callback may then start, cancel or free anything.
 *
 * Why a timer of ours: libunbound has no per-query deadline (its own
 * retries to a server that does not answer last minutes), so a query not
 * answered within resolver_timeout is ub_cancel()ed and completes as
 * RESOLVER_TIMEOUT.  A cancelled query's answer, if it comes, is dropped
 * inside libunbound (the query is marked cancelled, its callback skipped).
 *
 * Never: block the loop, call a callback after resolver_cancel, or call
 * one (or free a context) from inside a libunbound callback.
 */
#include "config.h"

#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <netinet/in.h>
#include <sys/socket.h>

#include <event2/event.h>
#include <ldns/ldns.h>
#include <unbound.h>
#include <unbound-event.h>

#include "conf.h"
#include "log.h"
#include "resolver.h"
#include "util.h"

struct resolver {
	struct ub_ctx *ctx;		/* event mode, on base */
	struct event_base *base;
	char *key;
	unsigned timeout;		/* seconds */
	struct resolver_query *queries;	/* in flight or answered not yet delivered, doubly linked */
};

struct resolver_query {
	struct resolver *res;
	struct resolver_query *prev, *next;
	int id;				/* libunbound's async_id */
	int rrtype;
	struct event *ev;		/* the deadline; made active to deliver r */
	struct ub_result *r;		/* the answer once libunbound gave it, ours */
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

/* resolver_ctx_new - a context for conf: event mode on base, or a plain one (base NULL) */
static struct ub_ctx *
resolver_ctx_new(const struct conf *conf, struct event_base *base, char **err_r)
{
	struct ub_ctx *ctx = base ? ub_ctx_create_event(base) : ub_ctx_create();
	char *list, *tok, *save = NULL;
	int rc;

	if (ctx == NULL) {
		*err_r = xstrdup("resolver: ub_ctx_create failed");
		return NULL;
	}
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
	struct ub_ctx *ctx = resolver_ctx_new(conf, NULL, err_r);
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

/* ---- libunbound's answer packet, as a struct ub_result ---- */

/* resolver_result_free - a result resolver_result_new built */
static void
resolver_result_free(struct ub_result *r)
{
	char **p;

	if (r == NULL)
		return;
	if (r->data)
		for (p = r->data; *p; p++)
			free(*p);
	free(r->data);
	free(r->len);
	free(r->why_bogus);
	free(r);
}

/*
 * resolver_rrset_owner - the name whose records of the question's type
 * answer it: the question's name, or where its CNAME chain leads, taken in
 * the answer section's order as libunbound does (reply_find_answer_rrset);
 * NULL if the section holds none.
 */
static const ldns_rdf *
resolver_rrset_owner(const ldns_rr_list *an, const ldns_rr *question)
{
	const ldns_rdf *sname = ldns_rr_owner(question);
	ldns_rr_class cl = ldns_rr_get_class(question);
	ldns_rr_type type = ldns_rr_get_type(question);
	size_t i;

	for (i = 0; i < ldns_rr_list_rr_count(an); i++) {
		const ldns_rr *rr = ldns_rr_list_rr(an, i);

		if (ldns_rr_get_class(rr) != cl || ldns_dname_compare(ldns_rr_owner(rr), sname) != 0)
			continue;
		if (ldns_rr_get_type(rr) == type)
			return sname;
		if (ldns_rr_get_type(rr) == LDNS_RR_TYPE_CNAME && ldns_rr_rd_count(rr) > 0)
			sname = ldns_rr_rdf(rr, 0);
	}
	return NULL;
}

/* resolver_result_rrs - r's data/len: the rdata of the answer's records, wire form, uncompressed */
static void
resolver_result_rrs(struct ub_result *r, const ldns_pkt *pkt)
{
	const ldns_rr_list *an = ldns_pkt_answer(pkt), *qd = ldns_pkt_question(pkt);
	const ldns_rr *question;
	const ldns_rdf *owner;
	ldns_buffer *buf;
	size_t i, n = an ? ldns_rr_list_rr_count(an) : 0, k = 0;

	r->data = xcalloc(n + 1, sizeof(*r->data));
	r->len = xcalloc(n + 1, sizeof(*r->len));
	if (n == 0 || qd == NULL || ldns_rr_list_rr_count(qd) != 1)
		return;
	question = ldns_rr_list_rr(qd, 0);
	if ((owner = resolver_rrset_owner(an, question)) == NULL)
		return;
	if ((buf = ldns_buffer_new(512)) == NULL)
		fatal("resolver: out of memory");
	for (i = 0; i < n; i++) {
		const ldns_rr *rr = ldns_rr_list_rr(an, i);
		size_t len;

		if (ldns_rr_get_type(rr) != ldns_rr_get_type(question) ||
		    ldns_rr_get_class(rr) != ldns_rr_get_class(question) ||
		    ldns_dname_compare(ldns_rr_owner(rr), owner) != 0)
			continue;
		/* each rdata field as it is on the wire, names decompressed by ldns_wire2pkt */
		ldns_buffer_clear(buf);
		if (ldns_rr_rdata2buffer_wire(buf, rr) != LDNS_STATUS_OK)
			fatal("resolver: out of memory");
		len = ldns_buffer_position(buf);
		r->data[k] = xmalloc(len + 1);
		memcpy(r->data[k], ldns_buffer_begin(buf), len);
		r->len[k++] = (int)len;
	}
	ldns_buffer_free(buf);
}

/*
 * resolver_result_new - libunbound's event-mode answer (rcode, the packet,
 * sec 0 insecure / 1 bogus / 2 secure, why) as thread mode's ub_result
 * would hold it (libworker_enter_result): rcode and records from the
 * packet, the packet not inspected when rcode is set, SERVFAIL if it does
 * not parse (qname, canonname and answer_packet are not kept).  Copies
 * all it keeps: the packet and why are libunbound's.
 */
static struct ub_result *
resolver_result_new(int rrtype, int rcode, const void *packet, int len, int sec, const char *why)
{
	struct ub_result *r = xcalloc(1, sizeof(*r));
	ldns_pkt *pkt = NULL;

	r->qtype = rrtype;
	r->qclass = 1;
	r->rcode = LDNS_RCODE_SERVFAIL;
	if (rcode != 0) {
		r->rcode = rcode;
		r->data = xcalloc(1, sizeof(*r->data));
		r->len = xcalloc(1, sizeof(*r->len));
	} else if (packet != NULL && len > 0 &&
	    ldns_wire2pkt(&pkt, packet, (size_t)len) == LDNS_STATUS_OK) {
		r->rcode = (int)ldns_pkt_get_rcode(pkt);
		resolver_result_rrs(r, pkt);
		ldns_pkt_free(pkt);
	} else
		return r;
	r->havedata = r->data[0] != NULL;
	r->nxdomain = r->rcode == LDNS_RCODE_NXDOMAIN;
	r->secure = rcode == 0 && sec == 2;
	r->bogus = rcode == 0 && sec == 1;
	if (why != NULL)
		r->why_bogus = xstrdup(why);
	return r;
}

/* ---- the loop's path ---- */

/* resolver_unlink - take q out of its resolver's list and free it (an answer not delivered too) */
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
	event_free(q->ev);
	resolver_result_free(q->r);
	free(q);
}

/*
 * resolver_ub_cb - libunbound's answer, inside libunbound (maybe inside
 * ub_resolve_event): kept, and delivered from q's event on the next turn.
 */
static void
resolver_ub_cb(void *arg, int rcode, void *packet, int len, int sec, char *why, int ratelimited)
{
	struct resolver_query *q = arg;

	(void)ratelimited;
	q->r = resolver_result_new(q->rrtype, rcode, packet, len, sec, why);
	evtimer_del(q->ev);
	event_active(q->ev, EV_TIMEOUT, 1);
}

/* resolver_ev_cb - q's answer to deliver, or resolver_timeout passed: cancel and say so */
static void
resolver_ev_cb(evutil_socket_t fd, short what, void *arg)
{
	struct resolver_query *q = arg;
	resolver_cb cb = q->cb;
	void *cbarg = q->arg;
	struct ub_result *r = q->r;
	struct resolver_answer a;

	(void)fd;
	(void)what;
	q->r = NULL;
	if (r == NULL)
		(void)ub_cancel(q->res->ctx, q->id);
	resolver_unlink(q);
	if (r != NULL)
		resolver_answer_from(&a, 0, r);
	else {
		memset(&a, 0, sizeof(a));
		a.status = RESOLVER_TIMEOUT;
		a.rcode = -1;
	}
	cb(cbarg, &a);
	resolver_result_free(r);
}

struct resolver *
resolver_new(struct event_base *base, const struct conf *conf, char **err_r)
{
	struct ub_ctx *ctx = resolver_ctx_new(conf, base, err_r);
	struct resolver *res;

	if (ctx == NULL)
		return NULL;
	res = xcalloc(1, sizeof(*res));
	res->ctx = ctx;
	res->base = base;
	res->key = resolver_key(conf);
	res->timeout = conf->resolver_timeout;
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
	while (res->queries)
		resolver_cancel(res->queries);
	/* Takes libunbound's events off the base; what it still had in flight is dropped. */
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
	q->rrtype = rrtype;
	q->cb = cb;
	q->arg = arg;
	if ((q->ev = evtimer_new(res->base, resolver_ev_cb, q)) == NULL)
		fatal("resolver: evtimer_new failed");
	/* resolver_ub_cb may run in here (a cached or local answer): it only keeps the answer */
	rc = ub_resolve_event(res->ctx, name, rrtype, 1, q, resolver_ub_cb, &q->id);
	if (rc != 0) {
		*err_r = ub_strerror(rc);
		event_free(q->ev);
		resolver_result_free(q->r);
		free(q);
		return NULL;
	}
	if (q->r == NULL)
		evtimer_add(q->ev, &tv);
	q->next = res->queries;
	if (q->next)
		q->next->prev = q;
	res->queries = q;
	return q;
}

/* resolver_cancel - a kept answer dropped, or the query ub_cancel()ed (answered, its id is gone) */
void
resolver_cancel(struct resolver_query *q)
{
	if (q == NULL)
		return;
	if (q->r == NULL)
		(void)ub_cancel(q->res->ctx, q->id);
	resolver_unlink(q);
}

/* ---- the synchronous path ---- */

/*
 * The calling thread's context, on an event_base of its own that only
 * resolver_sync turns, and the settings it was built from; freed when the
 * thread exits (a pthread key's destructor: pool threads need not know
 * about it).
 */
struct resolver_sync_ctx {
	struct event_base *base;
	struct event *deadline;
	bool expired;
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
	/* the context first: it takes its events off the base */
	if (t->ctx)
		ub_ctx_delete(t->ctx);
	if (t->deadline)
		event_free(t->deadline);
	if (t->base)
		event_base_free(t->base);
	free(t->key);
	free(t);
}

static void
resolver_sync_key_make(void)
{
	if (pthread_key_create(&sync_tkey, resolver_sync_ctx_free) != 0)
		fatal("resolver: pthread_key_create failed");
}

/* one resolver_sync's question and, once libunbound answered, its answer */
struct resolver_sync_state {
	int rrtype;
	struct ub_result *r;
};

/* resolver_sync_cb - the answer, kept (the packet is libunbound's) */
static void
resolver_sync_cb(void *arg, int rcode, void *packet, int len, int sec, char *why, int ratelimited)
{
	struct resolver_sync_state *st = arg;

	(void)ratelimited;
	st->r = resolver_result_new(st->rrtype, rcode, packet, len, sec, why);
}

/* resolver_sync_expired - resolver_timeout passed */
static void
resolver_sync_expired(evutil_socket_t fd, short what, void *arg)
{
	(void)fd;
	(void)what;
	((struct resolver_sync_ctx *)arg)->expired = true;
}

/* resolver_sync_ctx - the thread's context for conf, built or rebuilt as needed */
static struct resolver_sync_ctx *
resolver_sync_ctx(const struct conf *conf, const char **why_r)
{
	struct resolver_sync_ctx *t;
	char *key = resolver_key(conf), *err = NULL;

	(void)pthread_once(&sync_once, resolver_sync_key_make);
	t = pthread_getspecific(sync_tkey);
	if (t != NULL && strcmp(t->key, key) == 0) {
		free(key);
		return t;
	}
	resolver_sync_thread_end();
	t = xcalloc(1, sizeof(*t));
	t->key = key;
	if ((t->base = event_base_new()) == NULL ||
	    (t->deadline = evtimer_new(t->base, resolver_sync_expired, t)) == NULL)
		fatal("resolver: event_base_new failed");
	if ((t->ctx = resolver_ctx_new(conf, t->base, &err)) == NULL) {
		free(err);
		resolver_sync_ctx_free(t);
		*why_r = "cannot set up the resolver";
		return NULL;
	}
	if (pthread_setspecific(sync_tkey, t) != 0)
		fatal("resolver: pthread_setspecific failed");
	return t;
}

void
resolver_sync_thread_end(void)
{
	(void)pthread_once(&sync_once, resolver_sync_key_make);
	resolver_sync_ctx_free(pthread_getspecific(sync_tkey));
	(void)pthread_setspecific(sync_tkey, NULL);
}

/*
 * resolver_sync - ub_resolve_event on the thread's context, then turn its
 * base until the answer or the deadline: a plain ub_resolve could not be
 * bounded by resolver_timeout.
 */
enum resolver_status
resolver_sync(const struct conf *conf, const char *name, int rrtype, struct resolver_answer *a,
    struct ub_result **ub_r)
{
	struct resolver_sync_state st = { rrtype, NULL };
	struct resolver_sync_ctx *t;
	struct timeval tv = { conf->resolver_timeout, 0 };
	const char *why = NULL;
	int id = 0, rc;

	*ub_r = NULL;
	memset(a, 0, sizeof(*a));
	a->rcode = -1;
	a->status = RESOLVER_ERROR;
	if ((t = resolver_sync_ctx(conf, &why)) == NULL) {
		a->why = why;
		return a->status;
	}
	/* resolver_sync_cb may run in here (a cached or local answer) */
	if ((rc = ub_resolve_event(t->ctx, name, rrtype, 1, &st, resolver_sync_cb, &id)) != 0) {
		resolver_result_free(st.r);
		a->why = ub_strerror(rc);
		return a->status;
	}
	t->expired = false;
	if (st.r == NULL)
		evtimer_add(t->deadline, &tv);
	/* libunbound's events for this query (and any it still runs for cancelled ones) */
	while (st.r == NULL && !t->expired)
		(void)event_base_loop(t->base, EVLOOP_ONCE);
	evtimer_del(t->deadline);
	if (st.r == NULL) {
		(void)ub_cancel(t->ctx, id);
		a->status = RESOLVER_TIMEOUT;
		return a->status;
	}
	resolver_answer_from(a, 0, st.r);
	*ub_r = st.r;
	return a->status;
}

void
resolver_sync_free(struct ub_result *ub)
{
	resolver_result_free(ub);
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

		/* uncompressed (ldns_wire2pkt expands pointers): a label is at most 63 octets */
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
