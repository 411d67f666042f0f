/*
 * resolver_roundtrip.c - what one cached DNS answer costs through
 * libunbound, the ways smtpd/resolver.c asks and asked (bench/resolver_roundtrip.sh).
 *
 *   async   ub_resolve_async on a context in thread mode (ub_ctx_async 1):
 *           the way the resolver asked before event mode (ub_fd watched,
 *           ub_process); every answer, cached or not, crosses
 *           libunbound's thread through a socketpair.
 *   event   ub_resolve_event on a context in event mode
 *           (ub_ctx_create_event) on an event_base of the caller's, turned
 *           until the answer: the way the resolver asks since it left
 *           thread mode; a cached answer never leaves the thread.
 *   +ldns   the same, each answer packet parsed by ldns_wire2pkt, as the
 *           resolver turns it into records.
 *   sync    ub_resolve in the calling thread: no thread, but a fresh
 *           worker per call, and no bound on how long it waits.
 *
 * Usage: resolver_roundtrip ADDR@PORT NAME [N]  (TXT queries, N = 20000)
 */
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#include <event2/event.h>
#include <ldns/ldns.h>
#include <unbound.h>
#include <unbound-event.h>

static int answered;
static int parse;		/* the event-mode answers parsed by libldns */

/* roundtrip_cb - libunbound's answer: counted, freed */
static void
roundtrip_cb(void *arg, int err, struct ub_result *r)
{
	answered = err == 0 ? 1 : -1;
	if (r != NULL)
		ub_resolve_free(r);
}

/* roundtrip_event_cb - the event-mode answer (a DNS packet): counted */
static void
roundtrip_event_cb(void *arg, int rcode, void *packet, int len, int sec, char *why, int rl)
{
	ldns_pkt *pkt = NULL;

	(void)arg, (void)sec, (void)why, (void)rl;
	answered = rcode == 0 && packet != NULL && len > 12 ? 1 : -1;
	if (answered > 0 && parse) {
		if (ldns_wire2pkt(&pkt, packet, (size_t)len) != LDNS_STATUS_OK)
			answered = -1;
		ldns_pkt_free(pkt);
	}
}

/* roundtrip_event - n event-mode queries on base: 0, or -1 if one failed */
static int
roundtrip_event(struct ub_ctx *ctx, struct event_base *base, const char *name, long n)
{
	long i;

	for (i = 0; i < n; i++) {
		answered = 0;
		if (ub_resolve_event(ctx, name, 16, 1, NULL, roundtrip_event_cb, NULL) != 0)
			return -1;
		while (answered == 0)
			if (event_base_loop(base, EVLOOP_ONCE) != 0)
				return -1;
		if (answered < 0)
			return -1;
	}
	return 0;
}

/* roundtrip_now - monotonic seconds */
static double
roundtrip_now(void)
{
	struct timespec t;

	clock_gettime(CLOCK_MONOTONIC, &t);
	return (double)t.tv_sec + (double)t.tv_nsec / 1e9;
}

int
main(int argc, char **argv)
{
	struct ub_ctx *actx, *sctx, *ectx;
	struct event_base *base;
	struct ub_result *r;
	double t0, t1, t2, t3, t4;
	long i, n;

	if (argc < 3) {
		fprintf(stderr, "usage: resolver_roundtrip ADDR@PORT NAME [N]\n");
		return 2;
	}
	n = argc > 3 ? atol(argv[3]) : 20000;
	actx = ub_ctx_create();
	sctx = ub_ctx_create();
	base = event_base_new();
	ectx = base ? ub_ctx_create_event(base) : NULL;
	if (actx == NULL || sctx == NULL || ectx == NULL || ub_ctx_set_fwd(actx, argv[1]) != 0 ||
	    ub_ctx_set_fwd(sctx, argv[1]) != 0 || ub_ctx_set_fwd(ectx, argv[1]) != 0 ||
	    ub_ctx_async(actx, 1) != 0) {
		fprintf(stderr, "resolver_roundtrip: libunbound refused %s\n", argv[1]);
		return 1;
	}
	t0 = roundtrip_now();
	for (i = 0; i < n; i++) {
		answered = 0;
		if (ub_resolve_async(actx, argv[2], 16, 1, NULL, roundtrip_cb, NULL) != 0)
			return 1;
		while (answered == 0) {
			struct pollfd p = { ub_fd(actx), POLLIN, 0 };

			if (poll(&p, 1, 5000) <= 0)
				return 1;
			ub_process(actx);
		}
		if (answered < 0)
			return 1;
	}
	t1 = roundtrip_now();
	for (i = 0; i < n; i++) {
		if (ub_resolve(sctx, argv[2], 16, 1, &r) != 0)
			return 1;
		ub_resolve_free(r);
	}
	t2 = roundtrip_now();
	if (roundtrip_event(ectx, base, argv[2], n) != 0)
		return 1;
	t3 = roundtrip_now();
	parse = 1;
	if (roundtrip_event(ectx, base, argv[2], n) != 0)
		return 1;
	t4 = roundtrip_now();
	printf("cached TXT %s, %ld queries each:\n", argv[2], n);
	printf("  async (libunbound's thread, as portier asked): %.1f us a query\n", (t1 - t0) / n * 1e6);
	printf("  sync  (ub_resolve in the caller's thread):     %.1f us a query\n", (t2 - t1) / n * 1e6);
	printf("  event (ub_resolve_event on our event_base):    %.1f us a query\n", (t3 - t2) / n * 1e6);
	printf("  event + ldns_wire2pkt (as portier asks now):   %.1f us a query\n", (t4 - t3) / n * 1e6);
	ub_ctx_delete(actx);
	ub_ctx_delete(sctx);
	ub_ctx_delete(ectx);
	event_base_free(base);
	return 0;
}
