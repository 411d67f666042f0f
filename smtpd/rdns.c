/*
 * rdns.c - the client's forward-confirmed reverse name (see rdns.h).
 *
 * One PTR query, then one A (IPv4 client) or AAAA (IPv6) query per PTR
 * name, all in flight at once; a timer of our own bounds the whole at
 * resolver_timeout (each query has that bound too, but a PTR answer that
 * takes nearly all of it must not double the wait).  An IPv4-mapped IPv6
 * client is looked up as the IPv4 address it is.
 *
 * Never: call cb from inside rdns_start or after rdns_cancel.
 */
#include "config.h"

#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <arpa/inet.h>
#include <netinet/in.h>

#include <event2/event.h>

#include "rdns.h"
#include "resolver.h"
#include "util.h"

struct rdns;

/* One forward query: which name it checks. */
struct rdns_fwd {
	struct rdns *r;
	struct resolver_query *q;	/* NULL once answered */
	bool matched;
};

struct rdns {
	struct resolver *res;
	int family;			/* AF_INET or AF_INET6: what the address is */
	unsigned char addr[16];
	struct resolver_query *ptrq;	/* NULL once answered */
	struct event *timer;		/* the whole lookup's deadline */
	char names[RDNS_MAX_NAMES][RDNS_NAME_MAX];
	struct rdns_fwd fwd[RDNS_MAX_NAMES];
	size_t nnames, pending;
	bool tempfail;			/* a forward query failed temporarily */
	rdns_cb cb;
	void *arg;
};

static const char *const rdns_result_names[] = {
	"verified", "unverified", "none", "tempfail", "timeout",
};

const char *
rdns_result_name(enum rdns_result r)
{
	return rdns_result_names[r];
}

/* rdns_free - stop every query and timer of r */
static void
rdns_free(struct rdns *r)
{
	size_t i;

	resolver_cancel(r->ptrq);
	for (i = 0; i < r->nnames; i++)
		resolver_cancel(r->fwd[i].q);
	if (r->timer)
		event_free(r->timer);
	free(r);
}

/* rdns_finish - the answer to the caller, then free */
static void
rdns_finish(struct rdns *r, enum rdns_result result)
{
	struct rdns_answer a = { result, NULL, NULL };
	rdns_cb cb = r->cb;
	void *arg = r->arg;
	char name[RDNS_NAME_MAX], ptr[RDNS_NAME_MAX];
	size_t i;

	/* r is freed before cb runs: cb may start or cancel lookups of its own. */
	for (i = 0; result == RDNS_VERIFIED && i < r->nnames; i++)
		if (r->fwd[i].matched) {
			str_copy(name, r->names[i], sizeof(name));
			a.name = name;
			break;
		}
	if (r->nnames > 0) {
		str_copy(ptr, r->names[0], sizeof(ptr));
		a.ptr = ptr;
	}
	rdns_free(r);
	cb(arg, &a);
}

/* rdns_fwd_cb - the addresses of one PTR name */
static void
rdns_fwd_cb(void *arg, const struct resolver_answer *a)
{
	struct rdns_fwd *f = arg;
	struct rdns *r = f->r;
	size_t i, alen = r->family == AF_INET ? 4 : 16;

	f->q = NULL;
	r->pending--;
	/*
	 * Started after the lookup's own timer, with the same timeout: the
	 * lookup's time is up as well (when both fall in one tick of the loop's
	 * clock libevent may run this query's timer first).
	 */
	if (a->status == RESOLVER_TIMEOUT) {
		rdns_finish(r, RDNS_TIMEOUT);
		return;
	}
	for (i = 0; a->status == RESOLVER_OK && i < a->count; i++)
		if (a->len[i] == (int)alen && memcmp(a->data[i], r->addr, alen) == 0)
			f->matched = true;
	if (a->status == RESOLVER_SERVFAIL || a->status == RESOLVER_TIMEOUT ||
	    a->status == RESOLVER_ERROR)
		r->tempfail = true;
	if (r->pending > 0)
		return;
	for (i = 0; i < r->nnames; i++)
		if (r->fwd[i].matched) {
			rdns_finish(r, RDNS_VERIFIED);
			return;
		}
	/* Postfix: a name that failed to confirm for a temporary reason is "unknown" too. */
	rdns_finish(r, r->tempfail ? RDNS_TEMPFAIL : RDNS_UNVERIFIED);
}

/* rdns_ptr_cb - the PTR names: look up each one's addresses */
static void
rdns_ptr_cb(void *arg, const struct resolver_answer *a)
{
	struct rdns *r = arg;
	const char *err = NULL;
	size_t i;

	r->ptrq = NULL;
	if (a->status == RESOLVER_SERVFAIL || a->status == RESOLVER_ERROR) {
		rdns_finish(r, RDNS_TEMPFAIL);
		return;
	}
	if (a->status == RESOLVER_TIMEOUT) {
		rdns_finish(r, RDNS_TIMEOUT);
		return;
	}
	for (i = 0; a->status == RESOLVER_OK && i < a->count && r->nnames < RDNS_MAX_NAMES; i++)
		if (resolver_name(a, i, 0, r->names[r->nnames], RDNS_NAME_MAX))
			r->nnames++;
	if (r->nnames == 0) {
		rdns_finish(r, RDNS_NONE);
		return;
	}
	for (i = 0; i < r->nnames; i++) {
		r->fwd[i].r = r;
		r->fwd[i].q = resolver_query(r->res, r->names[i],
		    r->family == AF_INET ? RESOLVER_A : RESOLVER_AAAA, rdns_fwd_cb, &r->fwd[i], &err);
		if (r->fwd[i].q == NULL)
			r->tempfail = true;
		else
			r->pending++;
	}
	if (r->pending == 0)
		rdns_finish(r, RDNS_TEMPFAIL);
}

/* rdns_timer_cb - resolver_timeout for the whole lookup */
static void
rdns_timer_cb(evutil_socket_t fd, short what, void *arg)
{
	rdns_finish(arg, RDNS_TIMEOUT);
}

/* rdns_unmap - sa into ss, an IPv4-mapped IPv6 address as IPv4; false if not IP */
static bool
rdns_unmap(const struct sockaddr *sa, struct sockaddr_storage *ss)
{
	static const unsigned char mapped[12] = { 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff };

	memset(ss, 0, sizeof(*ss));
	if (sa->sa_family == AF_INET) {
		memcpy(ss, sa, sizeof(struct sockaddr_in));
	} else if (sa->sa_family == AF_INET6) {
		const struct sockaddr_in6 *s6 = (const struct sockaddr_in6 *)(const void *)sa;

		if (memcmp(s6->sin6_addr.s6_addr, mapped, 12) == 0) {
			struct sockaddr_in *s4 = (struct sockaddr_in *)ss;

			s4->sin_family = AF_INET;
			memcpy(&s4->sin_addr, s6->sin6_addr.s6_addr + 12, 4);
		} else
			memcpy(ss, sa, sizeof(struct sockaddr_in6));
	} else
		return false;
	return true;
}

/* rdns_addr - the address to look up (an IPv4-mapped IPv6 one as IPv4); false if not IP */
static bool
rdns_addr(struct rdns *r, const struct sockaddr *sa, struct sockaddr_storage *ss)
{
	if (!rdns_unmap(sa, ss))
		return false;
	r->family = ss->ss_family;
	if (r->family == AF_INET)
		memcpy(r->addr, &((struct sockaddr_in *)ss)->sin_addr, 4);
	else
		memcpy(r->addr, ((struct sockaddr_in6 *)ss)->sin6_addr.s6_addr, 16);
	return true;
}

/* rdns_known - an answer without a query: 127.0.0.1 and ::1 are "localhost" (resolver.c's local data) */
bool
rdns_known(const struct sockaddr *sa, struct rdns_answer *a)
{
	struct sockaddr_storage ss;
	bool loop;

	if (!rdns_unmap(sa, &ss))
		return false;
	if (ss.ss_family == AF_INET)
		loop = ((struct sockaddr_in *)&ss)->sin_addr.s_addr == htonl(INADDR_LOOPBACK);
	else
		loop = IN6_IS_ADDR_LOOPBACK(&((struct sockaddr_in6 *)&ss)->sin6_addr);
	if (!loop)
		return false;
	a->result = RDNS_VERIFIED;
	a->name = a->ptr = "localhost";
	return true;
}

struct rdns *
rdns_start(struct resolver *res, const struct sockaddr *sa, rdns_cb cb, void *arg)
{
	struct rdns *r = xcalloc(1, sizeof(*r));
	struct sockaddr_storage ss;
	char name[80];
	const char *err = NULL;
	struct timeval tv = { resolver_timeout(res), 0 };

	r->res = res;
	r->cb = cb;
	r->arg = arg;
	if (!rdns_addr(r, sa, &ss) || !resolver_reverse_name((struct sockaddr *)&ss, name,
	    sizeof(name)) || (r->ptrq = resolver_query(res, name, RESOLVER_PTR, rdns_ptr_cb, r,
	    &err)) == NULL) {
		free(r);
		return NULL;
	}
	r->timer = evtimer_new(resolver_base(res), rdns_timer_cb, r);
	if (r->timer == NULL)
		fatal("rdns: evtimer_new failed");
	evtimer_add(r->timer, &tv);
	return r;
}

void
rdns_cancel(struct rdns *r)
{
	if (r != NULL)
		rdns_free(r);
}
