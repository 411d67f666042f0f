/*
 * check_authfail.c - unit tests for policy/authfail.c: thresholds, the
 * sliding window on synthetic clocks, keys (IPv4, IPv6 /64, mapped),
 * the address cap and eviction, reloads, and exact counts under threads.
 *
 * Time is always passed in; no test sleeps.  The window property test
 * compares against an exact sliding window computed here from the log of
 * failure times.
 */
#include "config.h"

#include <check.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "authfail.h"
#include "util.h"
#include "unit.h"

/* --- thresholds ------------------------------------------------------------------ */

struct threshold_case {
	unsigned max;
	unsigned failures;	/* recorded at one instant */
	bool blocked;
};

static const struct threshold_case threshold_cases[] = {
	{ 1, 0, false }, { 1, 1, true }, { 1, 2, true },
	{ 3, 2, false }, { 3, 3, true }, { 3, 4, true },
	{ 5, 4, false }, { 5, 5, true }, { 5, 9, true },
};

START_TEST(test_threshold)
{
	const struct threshold_case *c = &threshold_cases[_i];
	struct authfail *a = authfail_new(c->max, 600, 0);
	unsigned i;

	for (i = 1; i <= c->failures; i++) {
		ck_assert(!authfail_blocked(a, "192.0.2.1", 1000) == (i - 1 < c->max));
		ck_assert_uint_eq(authfail_record(a, "192.0.2.1", 1000), i);
	}
	ck_assert(authfail_blocked(a, "192.0.2.1", 1000) == c->blocked);
	ck_assert(!authfail_blocked(a, "192.0.2.2", 1000));
	ck_assert_uint_eq(authfail_tracked(a), c->failures > 0 ? 1 : 0);
	authfail_free(a);
}
END_TEST

/* --- the window ------------------------------------------------------------------ */

START_TEST(test_window_exact)
{
	/* window <= AUTHFAIL_SLOTS: one-second steps, an exact sliding window */
	struct authfail *a = authfail_new(3, 10, 0);

	ck_assert_uint_eq(authfail_record(a, "192.0.2.1", 100), 1);
	ck_assert_uint_eq(authfail_record(a, "192.0.2.1", 101), 2);
	ck_assert(!authfail_blocked(a, "192.0.2.1", 101));
	ck_assert_uint_eq(authfail_record(a, "192.0.2.1", 102), 3);
	ck_assert(authfail_blocked(a, "192.0.2.1", 102));
	ck_assert(authfail_blocked(a, "192.0.2.1", 109));	/* 100 still counts */
	ck_assert(!authfail_blocked(a, "192.0.2.1", 110));	/* 100 aged out */
	ck_assert_uint_eq(authfail_record(a, "192.0.2.1", 110), 3);	/* 101 102 110 */
	ck_assert(authfail_blocked(a, "192.0.2.1", 110));
	ck_assert(!authfail_blocked(a, "192.0.2.1", 112));
	ck_assert_uint_eq(authfail_record(a, "192.0.2.1", 119), 2);	/* 110 119 */
	ck_assert_uint_eq(authfail_record(a, "192.0.2.1", 500), 1);	/* long quiet */
	/* a clock that steps back keeps counting what it has */
	ck_assert_uint_eq(authfail_record(a, "192.0.2.1", 400), 2);
	ck_assert_uint_eq(authfail_record(a, "192.0.2.1", 0), 3);
	ck_assert(authfail_blocked(a, "192.0.2.1", 450));
	ck_assert(!authfail_blocked(a, "192.0.2.1", 510));
	authfail_free(a);
}
END_TEST

static const unsigned window_sizes[] = { 1, 2, 7, 10, 16, 17, 60, 100, 600, 3600, 86400 };

/* exact_count - failures in log[0..n) with now - t < window */
static unsigned
exact_count(const time_t *log, size_t n, time_t now, time_t window)
{
	unsigned c = 0;
	size_t i;

	for (i = 0; i < n; i++)
		if (log[i] <= now && now - log[i] < window)
			c++;
	return c;
}

START_TEST(test_window_bounds)
{
	/*
	 * Against exact sliding windows on a random failure log: the count is
	 * never below the exact count for window and never above the one for
	 * window + step, when recording and (through max) when only looking.
	 */
	const time_t window = window_sizes[_i];
	const time_t step = (window + AUTHFAIL_SLOTS - 1) / AUTHFAIL_SLOTS;
	const unsigned max = 5;
	struct authfail *a = authfail_new(max, (unsigned)window, 0);
	time_t log[400], now = 1700000000, probe;
	unsigned got, lo, hi, seed = 12345 + (unsigned)_i;
	size_t n = 0;

	while (n < ARRAY_SIZE(log)) {
		seed = seed * 1103515245u + 12345u;
		now += (time_t)((seed >> 16) % (unsigned)(window / 3 + 2));
		log[n++] = now;
		got = authfail_record(a, "2001:db8::1", now);
		lo = exact_count(log, n, now, window);
		hi = exact_count(log, n, now, window + step);
		ck_assert_msg(got >= lo && got <= hi, "window %ld at %ld: %u not in [%u, %u]",
		    (long)window, (long)now, got, lo, hi);
		for (probe = now; probe <= now + window + step; probe += step) {
			if (exact_count(log, n, probe, window) >= max)
				ck_assert(authfail_blocked(a, "2001:db8::1", probe));
			if (exact_count(log, n, probe, window + step) < max)
				ck_assert(!authfail_blocked(a, "2001:db8::1", probe));
		}
	}
	authfail_free(a);
}
END_TEST

START_TEST(test_window_blocked_bounds)
{
	/* max 1: blocked exactly while the last failure is within the window (give or take a step) */
	const time_t window = window_sizes[_i];
	const time_t step = (window + AUTHFAIL_SLOTS - 1) / AUTHFAIL_SLOTS;
	struct authfail *a = authfail_new(1, (unsigned)window, 0);
	time_t t0 = 1700000000 + 13, dt;

	ck_assert_uint_eq(authfail_record(a, "192.0.2.7", t0), 1);
	for (dt = 0; dt < window; dt += (window > 100 ? window / 97 : 1))
		ck_assert_msg(authfail_blocked(a, "192.0.2.7", t0 + dt),
		    "window %ld: not blocked %ld s after", (long)window, (long)dt);
	ck_assert(authfail_blocked(a, "192.0.2.7", t0 + window - 1));
	ck_assert(!authfail_blocked(a, "192.0.2.7", t0 + window + step));
	if (step == 1)
		ck_assert(!authfail_blocked(a, "192.0.2.7", t0 + window));
	authfail_free(a);
}
END_TEST

/* --- keys ------------------------------------------------------------------------ */

struct key_case {
	const char *a;
	const char *b;
	bool same;
};

static const struct key_case key_cases[] = {
	{ "192.0.2.1", "192.0.2.1", true },
	{ "192.0.2.1", "192.0.2.2", false },
	{ "192.0.2.1", "::ffff:192.0.2.1", true },
	{ "192.0.2.1", "::ffff:c000:0201", true },
	{ "2001:db8::1", "2001:db8::2", true },
	{ "2001:db8::1", "2001:DB8:0:0:ffff:ffff:ffff:ffff", true },
	{ "2001:db8::1", "2001:db8:0:1::1", false },
	{ "2001:db8:0:1::1", "2001:db8:0:1:8000::", true },
	{ "::1", "::2", true },
	{ "192.0.2.1", "::c000:201", false },
	{ "unix:/run/x", "unix:/run/x", true },
	{ "unix:/run/x", "unix:/run/y", false },
	{ "", "", true },
};

START_TEST(test_keys)
{
	const struct key_case *c = &key_cases[_i];
	struct authfail *a = authfail_new(2, 60, 0);

	authfail_record(a, c->a, 1000);
	ck_assert_uint_eq(authfail_record(a, c->b, 1000), c->same ? 2 : 1);
	ck_assert(authfail_blocked(a, c->a, 1000) == c->same);
	ck_assert_uint_eq(authfail_tracked(a), c->same ? 1 : 2);
	authfail_free(a);
}
END_TEST

START_TEST(test_long_key)
{
	struct authfail *a = authfail_new(2, 60, 0);
	char k1[300], k2[300];

	memset(k1, 'x', sizeof(k1) - 1);
	k1[sizeof(k1) - 1] = '\0';
	memcpy(k2, k1, sizeof(k2));
	k2[sizeof(k2) - 2] = 'y';	/* differs only past the kept prefix */
	authfail_record(a, k1, 1000);
	ck_assert_uint_eq(authfail_record(a, k2, 1000), 2);
	ck_assert(authfail_blocked(a, k1, 1000));
	authfail_free(a);
}
END_TEST

/* --- the cap ----------------------------------------------------------------------- */

/* ip4 - the i-th test address, 10.x.y.z */
static void
ip4(char *dst, size_t size, unsigned i)
{
	snprintf(dst, size, "10.%u.%u.%u", (i >> 16) & 255, (i >> 8) & 255, i & 255);
}

START_TEST(test_cap_evicts_stalest)
{
	struct authfail *a = authfail_new(1, 3600, 1000);
	char ip[32];
	unsigned i;

	for (i = 0; i < 5000; i++) {
		ip4(ip, sizeof(ip), i);
		ck_assert_uint_eq(authfail_record(a, ip, 1000 + i / 100), 1);
		/* one address keeps failing: it is never the stalest */
		if (i % 100 == 0)
			authfail_record(a, "192.0.2.99", 1000 + i / 100);
		ck_assert_uint_le(authfail_tracked(a), 1000);
	}
	ck_assert_uint_eq(authfail_tracked(a), 1000);
	ck_assert(authfail_blocked(a, "192.0.2.99", 1060));
	for (i = 0; i < 5000; i++) {
		ip4(ip, sizeof(ip), i);
		/* the 999 most recent stay tracked (one slot went to 192.0.2.99) */
		ck_assert_msg(authfail_blocked(a, ip, 1060) == (i >= 5000 - 999),
		    "address %u", i);
	}
	authfail_free(a);
}
END_TEST

START_TEST(test_cap_default)
{
	struct authfail *a = authfail_new(3, 600, 0);
	char ip[48];
	unsigned i;

	for (i = 0; i < AUTHFAIL_CAP_DEFAULT + 20000; i++) {
		snprintf(ip, sizeof(ip), "2001:db8:%x:%x::1", i >> 16, i & 0xffff);
		authfail_record(a, ip, 5000);
	}
	ck_assert_uint_eq(authfail_tracked(a), AUTHFAIL_CAP_DEFAULT);
	authfail_free(a);
}
END_TEST

START_TEST(test_aged_out_dropped)
{
	struct authfail *a = authfail_new(1, 60, 1000);
	char ip[32];
	unsigned i;

	for (i = 0; i < 50; i++) {
		ip4(ip, sizeof(ip), i);
		authfail_record(a, ip, 1000);
	}
	ck_assert_uint_eq(authfail_tracked(a), 50);
	/* much later, new failures sweep the aged-out entries away */
	for (i = 50; i < 60; i++) {
		ip4(ip, sizeof(ip), i);
		authfail_record(a, ip, 2000);
	}
	ck_assert_uint_eq(authfail_tracked(a), 10);
	authfail_free(a);
}
END_TEST

/* --- reload ---------------------------------------------------------------------- */

START_TEST(test_set_limits)
{
	struct authfail *a = authfail_new(5, 600, 0);

	authfail_record(a, "192.0.2.1", 1000);
	authfail_record(a, "192.0.2.1", 1001);
	ck_assert_uint_eq(authfail_record(a, "192.0.2.1", 1002), 3);
	ck_assert(!authfail_blocked(a, "192.0.2.1", 1003));
	authfail_set_limits(a, 3, 600);		/* same window: counts kept */
	ck_assert(authfail_blocked(a, "192.0.2.1", 1003));
	ck_assert_uint_eq(authfail_tracked(a), 1);
	authfail_set_limits(a, 3, 60);		/* new window: counting restarts */
	ck_assert(!authfail_blocked(a, "192.0.2.1", 1003));
	ck_assert_uint_eq(authfail_tracked(a), 0);
	ck_assert_uint_eq(authfail_record(a, "192.0.2.1", 1004), 1);
	ck_assert(!authfail_blocked(a, "192.0.2.1", 1064));
	authfail_free(a);
	authfail_free(NULL);
}
END_TEST

/* --- threads ----------------------------------------------------------------------- */

#define HAMMER_THREADS	2
#define HAMMER_EACH	50000

struct hammer {
	struct authfail *a;
	unsigned char *seen;	/* seen[n]: how many records returned n */
	pthread_mutex_t *mu;
	const char *ip;
};

/* hammer_run - record HAMMER_EACH failures; note every count returned */
static void *
hammer_run(void *arg)
{
	struct hammer *h = arg;
	unsigned i, n, last = 0;
	bool ok = true;

	for (i = 0; i < HAMMER_EACH; i++) {
		n = authfail_record(h->a, h->ip, 1000 + i / 10000);
		/* another address in between, to exercise the table concurrently */
		authfail_blocked(h->a, "198.51.100.1", 1000);
		if (n <= last || n > HAMMER_THREADS * HAMMER_EACH)
			ok = false;
		last = n;
		pthread_mutex_lock(h->mu);
		if (n <= HAMMER_THREADS * HAMMER_EACH)
			h->seen[n]++;
		pthread_mutex_unlock(h->mu);
	}
	return ok ? h : NULL;
}

START_TEST(test_threads_exact)
{
	struct authfail *a = authfail_new(HAMMER_THREADS * HAMMER_EACH, 3600, 0);
	pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
	struct hammer h[HAMMER_THREADS];
	pthread_t tid[HAMMER_THREADS];
	unsigned char *seen = xcalloc(HAMMER_THREADS * HAMMER_EACH + 1, 1);
	void *ret;
	unsigned i;

	for (i = 0; i < HAMMER_THREADS; i++) {
		h[i].a = a;
		h[i].seen = seen;
		h[i].mu = &mu;
		h[i].ip = i % 2 ? "2001:db8::1" : "2001:db8::2";	/* one /64 */
		ck_assert_int_eq(pthread_create(&tid[i], NULL, hammer_run, &h[i]), 0);
	}
	for (i = 0; i < HAMMER_THREADS; i++) {
		ck_assert_int_eq(pthread_join(tid[i], &ret), 0);
		ck_assert_msg(ret != NULL, "thread %u saw counts out of order", i);
	}
	/* every count from 1 to the total was handed out exactly once */
	for (i = 1; i <= HAMMER_THREADS * HAMMER_EACH; i++)
		ck_assert_msg(seen[i] == 1, "count %u returned %u times", i, seen[i]);
	ck_assert(authfail_blocked(a, "2001:db8::3", 1005));
	ck_assert_uint_eq(authfail_tracked(a), 1);
	free(seen);
	authfail_free(a);
}
END_TEST

/* authfail_suite - every test case above */
static Suite *
authfail_suite(void)
{
	Suite *s = suite_create("authfail");
	TCase *tc;

	tc = tcase_create("threshold");
	tcase_add_loop_test(tc, test_threshold, 0, (int)ARRAY_SIZE(threshold_cases));
	suite_add_tcase(s, tc);

	tc = tcase_create("window");
	tcase_add_test(tc, test_window_exact);
	tcase_add_loop_test(tc, test_window_bounds, 0, (int)ARRAY_SIZE(window_sizes));
	tcase_add_loop_test(tc, test_window_blocked_bounds, 0, (int)ARRAY_SIZE(window_sizes));
	suite_add_tcase(s, tc);

	tc = tcase_create("keys");
	tcase_add_loop_test(tc, test_keys, 0, (int)ARRAY_SIZE(key_cases));
	tcase_add_test(tc, test_long_key);
	suite_add_tcase(s, tc);

	tc = tcase_create("cap");
	tcase_set_timeout(tc, 60);
	tcase_add_test(tc, test_cap_evicts_stalest);
	tcase_add_test(tc, test_cap_default);
	tcase_add_test(tc, test_aged_out_dropped);
	tcase_add_test(tc, test_set_limits);
	suite_add_tcase(s, tc);

	tc = tcase_create("threads");
	tcase_set_timeout(tc, 60);
	tcase_add_test(tc, test_threads_exact);
	suite_add_tcase(s, tc);
	return s;
}

/* main - run the suite; the exit status tells make check */
UNIT_MAIN(authfail_suite)
