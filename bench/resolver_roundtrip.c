/*
 * resolver_roundtrip.c - what one cached DNS answer costs through
 * libunbound, the way smtpd/resolver.c asks (bench/resolver_roundtrip.sh).
 *
 *   async   ub_resolve_async on a context in thread mode (ub_ctx_async 1):
 *           the loop's path, and resolver_sync's (which polls ub_fd);
 *           every answer, cached or not, crosses libunbound's thread
 *           through a socketpair.
 *   sync    ub_resolve in the calling thread: no thread, but a fresh
 *           worker per call, and no bound on how long it waits.
 *
 * Usage: resolver_roundtrip ADDR@PORT NAME [N]  (TXT queries, N = 20000)
 */
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#include <unbound.h>

static int answered;

/* roundtrip_cb - libunbound's answer: counted, freed */
static void
roundtrip_cb(void *arg, int err, struct ub_result *r)
{
	answered = err == 0 ? 1 : -1;
	if (r != NULL)
		ub_resolve_free(r);
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
	struct ub_ctx *actx, *sctx;
	struct ub_result *r;
	double t0, t1, t2;
	long i, n;

	if (argc < 3) {
		fprintf(stderr, "usage: resolver_roundtrip ADDR@PORT NAME [N]\n");
		return 2;
	}
	n = argc > 3 ? atol(argv[3]) : 20000;
	actx = ub_ctx_create();
	sctx = ub_ctx_create();
	if (actx == NULL || sctx == NULL || ub_ctx_set_fwd(actx, argv[1]) != 0 ||
	    ub_ctx_set_fwd(sctx, argv[1]) != 0 || ub_ctx_async(actx, 1) != 0) {
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
	printf("cached TXT %s, %ld queries each:\n", argv[2], n);
	printf("  async (libunbound's thread, as portier asks): %.1f us a query\n", (t1 - t0) / n * 1e6);
	printf("  sync  (ub_resolve in the caller's thread):     %.1f us a query\n", (t2 - t1) / n * 1e6);
	ub_ctx_delete(actx);
	ub_ctx_delete(sctx);
	return 0;
}
