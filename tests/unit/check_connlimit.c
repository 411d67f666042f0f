/*
 * check_connlimit.c - unit tests for policy/connlimit.c: counting live
 * sessions per address and per network (IPv4 /N, IPv6 /M, IPv4-mapped
 * IPv6 as IPv4), release giving every slot back, exempt networks, the
 * table emptying itself, and threads sharing one table.  The 421 a
 * session gets is in tests/integration/test_connlimit.py.
 */
#include "config.h"

#include <arpa/inet.h>
#include <check.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cidr.h"
#include "util.h"
#include "../policy/connlimit.h"
#include "unit.h"

#define HOLDS_MAX	64

/* acquire - connlimit_acquire for the address text */
static enum connlimit_result
acquire(struct connlimit *t, const struct connlimit_policy *p, const char *text,
    struct connlimit_hold *h, unsigned *count_r)
{
	struct sockaddr_storage ss;
	struct connlimit_refusal ref;
	enum connlimit_result r;

	memset(h, 0, sizeof(*h));
	r = connlimit_acquire(t, p, unit_sockaddr(text, &ss), h, &ref);
	if (count_r != NULL)
		*count_r = ref.count;
	return r;
}

/*
 * A table-driven case: the policy, then addresses connecting in order,
 * each with the result expected (no release in between).
 */
struct step {
	const char *addr;
	enum connlimit_result want;
	unsigned count;		/* *count_r for a refusal */
};

static const struct {
	const char *name;
	struct connlimit_policy p;
	struct step steps[8];
} cases[] = {
	{ "no limits count nothing", { 0, 0, 24, 64, NULL, 0 }, {
		{ "192.0.2.1", CONNLIMIT_OK, 0 }, { "192.0.2.1", CONNLIMIT_OK, 0 },
		{ "192.0.2.1", CONNLIMIT_OK, 0 } } },
	{ "client limit 2", { 2, 0, 24, 64, NULL, 0 }, {
		{ "192.0.2.1", CONNLIMIT_OK, 0 }, { "192.0.2.1", CONNLIMIT_OK, 0 },
		{ "192.0.2.1", CONNLIMIT_CLIENT, 2 }, { "192.0.2.2", CONNLIMIT_OK, 0 },
		{ "192.0.2.2", CONNLIMIT_OK, 0 }, { "192.0.2.2", CONNLIMIT_CLIENT, 2 } } },
	{ "network /24", { 0, 3, 24, 64, NULL, 0 }, {
		{ "192.0.2.1", CONNLIMIT_OK, 0 }, { "192.0.2.2", CONNLIMIT_OK, 0 },
		{ "192.0.2.200", CONNLIMIT_OK, 0 }, { "192.0.2.3", CONNLIMIT_NETWORK, 3 },
		{ "192.0.3.1", CONNLIMIT_OK, 0 } } },
	{ "network /32 is per address", { 0, 1, 32, 128, NULL, 0 }, {
		{ "192.0.2.1", CONNLIMIT_OK, 0 }, { "192.0.2.2", CONNLIMIT_OK, 0 },
		{ "192.0.2.1", CONNLIMIT_NETWORK, 1 } } },
	{ "network /25 splits a /24", { 0, 1, 25, 64, NULL, 0 }, {
		{ "192.0.2.1", CONNLIMIT_OK, 0 }, { "192.0.2.129", CONNLIMIT_OK, 0 },
		{ "192.0.2.127", CONNLIMIT_NETWORK, 1 } } },
	{ "client before network", { 1, 5, 24, 64, NULL, 0 }, {
		{ "192.0.2.1", CONNLIMIT_OK, 0 }, { "192.0.2.1", CONNLIMIT_CLIENT, 1 },
		{ "192.0.2.2", CONNLIMIT_OK, 0 } } },
	{ "network counts across clients", { 2, 3, 24, 64, NULL, 0 }, {
		{ "192.0.2.1", CONNLIMIT_OK, 0 }, { "192.0.2.1", CONNLIMIT_OK, 0 },
		{ "192.0.2.2", CONNLIMIT_OK, 0 }, { "192.0.2.2", CONNLIMIT_NETWORK, 3 },
		{ "192.0.2.1", CONNLIMIT_CLIENT, 2 } } },
	{ "IPv6 /64", { 0, 2, 24, 64, NULL, 0 }, {
		{ "2001:db8:1:2::1", CONNLIMIT_OK, 0 }, { "2001:db8:1:2:ffff::9", CONNLIMIT_OK, 0 },
		{ "2001:db8:1:2::77", CONNLIMIT_NETWORK, 2 }, { "2001:db8:1:3::1", CONNLIMIT_OK, 0 } } },
	{ "IPv6 /48", { 0, 1, 24, 48, NULL, 0 }, {
		{ "2001:db8:1:2::1", CONNLIMIT_OK, 0 }, { "2001:db8:1:ffff::1", CONNLIMIT_NETWORK, 1 },
		{ "2001:db8:2::1", CONNLIMIT_OK, 0 } } },
	{ "IPv6 client", { 1, 0, 24, 64, NULL, 0 }, {
		{ "2001:db8::1", CONNLIMIT_OK, 0 }, { "2001:db8::2", CONNLIMIT_OK, 0 },
		{ "2001:db8::1", CONNLIMIT_CLIENT, 1 } } },
	{ "IPv4-mapped is IPv4", { 1, 2, 24, 64, NULL, 0 }, {
		{ "192.0.2.1", CONNLIMIT_OK, 0 }, { "::ffff:192.0.2.1", CONNLIMIT_CLIENT, 1 },
		{ "::ffff:192.0.2.9", CONNLIMIT_OK, 0 }, { "192.0.2.10", CONNLIMIT_NETWORK, 2 } } },
	{ "families apart", { 0, 1, 8, 16, NULL, 0 }, {
		{ "32.1.2.3", CONNLIMIT_OK, 0 }, { "2001::1", CONNLIMIT_OK, 0 },
		{ "2000::1", CONNLIMIT_OK, 0 } } },
};

/* test_cases - each case's steps on a fresh table, then every slot back */
START_TEST(test_cases)
{
	struct connlimit *t = connlimit_new();
	struct connlimit_hold holds[8];
	const struct step *st;
	unsigned count;
	size_t i;

	for (i = 0; i < 8 && (st = &cases[_i].steps[i])->addr != NULL; i++) {
		enum connlimit_result r = acquire(t, &cases[_i].p, st->addr, &holds[i], &count);

		ck_assert_msg(r == st->want, "%s: step %zu (%s): %d, want %d", cases[_i].name, i,
		    st->addr, (int)r, (int)st->want);
		if (r == CONNLIMIT_CLIENT || r == CONNLIMIT_NETWORK) {
			ck_assert_uint_eq(count, st->count);
			ck_assert_ptr_null(holds[i].table);
		}
	}
	while (i-- > 0)
		connlimit_release(&holds[i]);
	ck_assert_uint_eq(connlimit_entries(t), 0);
	connlimit_free(t);
}
END_TEST

/* test_release - a released slot is free again, a second release is nothing */
START_TEST(test_release)
{
	struct connlimit *t = connlimit_new();
	struct connlimit_policy p = { 2, 3, 24, 64, NULL, 0 };
	struct connlimit_hold a, b, c;
	struct sockaddr_storage ss;

	ck_assert_int_eq(acquire(t, &p, "198.51.100.7", &a, NULL), CONNLIMIT_OK);
	ck_assert_int_eq(acquire(t, &p, "198.51.100.7", &b, NULL), CONNLIMIT_OK);
	ck_assert_uint_eq(connlimit_count(t, unit_sockaddr("198.51.100.7", &ss)), 2);
	ck_assert_uint_eq(connlimit_entries(t), 2);	/* the address and its /24 */
	ck_assert_int_eq(acquire(t, &p, "198.51.100.7", &c, NULL), CONNLIMIT_CLIENT);
	connlimit_release(&c);		/* holds nothing: changes nothing */
	connlimit_release(&a);
	connlimit_release(&a);		/* twice: the second is nothing */
	ck_assert_uint_eq(connlimit_count(t, unit_sockaddr("198.51.100.7", &ss)), 1);
	ck_assert_int_eq(acquire(t, &p, "198.51.100.7", &a, NULL), CONNLIMIT_OK);
	connlimit_release(&a);
	connlimit_release(&b);
	ck_assert_uint_eq(connlimit_count(t, unit_sockaddr("198.51.100.7", &ss)), 0);
	ck_assert_uint_eq(connlimit_entries(t), 0);
	connlimit_free(t);
}
END_TEST

/* test_exempt - an exempt client is never counted nor refused; others are */
START_TEST(test_exempt)
{
	struct cidr ex[2];
	struct connlimit *t = connlimit_new();
	struct connlimit_policy p = { 1, 1, 24, 64, ex, 2 };
	struct connlimit_hold h[4];
	int i;

	ck_assert(cidr_parse("192.0.2.0/28", &ex[0]));
	ck_assert(cidr_parse("2001:db8::/32", &ex[1]));
	for (i = 0; i < 4; i++) {
		ck_assert_int_eq(acquire(t, &p, "192.0.2.5", &h[i], NULL), CONNLIMIT_EXEMPT);
		ck_assert_ptr_null(h[i].table);
	}
	ck_assert_int_eq(acquire(t, &p, "::ffff:192.0.2.6", &h[0], NULL), CONNLIMIT_EXEMPT);
	ck_assert_int_eq(acquire(t, &p, "2001:db8:5::1", &h[0], NULL), CONNLIMIT_EXEMPT);
	ck_assert_uint_eq(connlimit_entries(t), 0);
	/* 192.0.2.17 is outside the /28 but inside 192.0.2.0/24: counted */
	ck_assert_int_eq(acquire(t, &p, "192.0.2.17", &h[0], NULL), CONNLIMIT_OK);
	ck_assert_int_eq(acquire(t, &p, "192.0.2.18", &h[1], NULL), CONNLIMIT_NETWORK);
	ck_assert_int_eq(acquire(t, &p, "192.0.2.5", &h[2], NULL), CONNLIMIT_EXEMPT);
	connlimit_release(&h[0]);
	ck_assert_uint_eq(connlimit_entries(t), 0);
	connlimit_free(t);
}
END_TEST

/* test_not_ip - a client that is no IP address is not counted */
START_TEST(test_not_ip)
{
	struct connlimit *t = connlimit_new();
	struct connlimit_policy p = { 1, 1, 24, 64, NULL, 0 };
	struct sockaddr_storage ss;
	struct connlimit_hold h;
	struct connlimit_refusal ref;

	memset(&ss, 0, sizeof(ss));
	ss.ss_family = AF_UNIX;
	memset(&h, 0, sizeof(h));
	ck_assert_int_eq(connlimit_acquire(t, &p, (struct sockaddr *)&ss, &h, &ref),
	    CONNLIMIT_OK);
	ck_assert_ptr_null(h.table);
	ck_assert_uint_eq(connlimit_entries(t), 0);
	connlimit_free(t);
}
END_TEST

/*
 * test_refusal_log - a flood is logged once a second per entry: the first
 * refusal, then the first after CONNLIMIT_LOG_MS, counting those left out;
 * the network's entry keeps its own account
 */
START_TEST(test_refusal_log)
{
	struct connlimit *t = connlimit_new();
	struct connlimit_policy p = { 1, 2, 24, 64, NULL, 0 };
	struct connlimit_hold held[2], h;
	struct connlimit_refusal ref;
	struct sockaddr_storage ss;
	int i;

	ck_assert_int_eq(acquire(t, &p, "192.0.2.1", &held[0], NULL), CONNLIMIT_OK);
	memset(&h, 0, sizeof(h));
	ck_assert_int_eq(connlimit_acquire(t, &p, unit_sockaddr("192.0.2.1", &ss), &h, &ref),
	    CONNLIMIT_CLIENT);
	ck_assert(ref.log);
	ck_assert_uint_eq(ref.suppressed, 0);
	ck_assert_uint_eq(ref.count, 1);
	for (i = 0; i < 5; i++) {
		ck_assert_int_eq(connlimit_acquire(t, &p, unit_sockaddr("192.0.2.1", &ss), &h,
		    &ref), CONNLIMIT_CLIENT);
		ck_assert(!ref.log);
		ck_assert_uint_eq(ref.count, 1);
	}
	/* the network's first refusal is its own entry's: logged */
	ck_assert_int_eq(acquire(t, &p, "192.0.2.2", &held[1], NULL), CONNLIMIT_OK);
	ck_assert_int_eq(connlimit_acquire(t, &p, unit_sockaddr("192.0.2.3", &ss), &h, &ref),
	    CONNLIMIT_NETWORK);
	ck_assert(ref.log);
	ck_assert_uint_eq(ref.count, 2);
	usleep((CONNLIMIT_LOG_MS + 100) * 1000);
	ck_assert_int_eq(connlimit_acquire(t, &p, unit_sockaddr("192.0.2.1", &ss), &h, &ref),
	    CONNLIMIT_CLIENT);
	ck_assert(ref.log);
	ck_assert_uint_eq(ref.suppressed, 5);
	ck_assert_int_eq(connlimit_acquire(t, &p, unit_sockaddr("192.0.2.1", &ss), &h, &ref),
	    CONNLIMIT_CLIENT);
	ck_assert(!ref.log);
	ck_assert_ptr_null(h.table);		/* a refusal holds nothing */
	connlimit_release(&held[0]);
	connlimit_release(&held[1]);
	ck_assert_uint_eq(connlimit_entries(t), 0);
	connlimit_free(t);
}
END_TEST

/* test_many - many addresses grow the table; releasing them empties it */
START_TEST(test_many)
{
	enum { N = 5000 };
	struct connlimit *t = connlimit_new();
	struct connlimit_policy p = { 1, 0, 24, 64, NULL, 0 };
	struct connlimit_hold *h = xcalloc(N, sizeof(*h)), extra;
	char text[64];
	unsigned count;
	int i;

	for (i = 0; i < N; i++) {
		snprintf(text, sizeof(text), "2001:db8::%x:%x", i >> 8, i & 0xff);
		ck_assert_int_eq(acquire(t, &p, text, &h[i], &count), CONNLIMIT_OK);
	}
	ck_assert_uint_eq(connlimit_entries(t), N);
	ck_assert_int_eq(acquire(t, &p, "2001:db8::13:87", &extra, &count), CONNLIMIT_CLIENT);
	for (i = 0; i < N; i++)
		connlimit_release(&h[i]);
	ck_assert_uint_eq(connlimit_entries(t), 0);
	free(h);
	connlimit_free(t);
}
END_TEST

/* thread_run - take and give back slots of two addresses many times */
static void *
thread_run(void *arg)
{
	struct connlimit *t = arg;
	struct connlimit_policy p = { 1000, 0, 24, 64, NULL, 0 };
	struct sockaddr_storage a, b;
	struct connlimit_hold ha, hb;
	struct connlimit_refusal ref;
	int i;

	unit_sockaddr("203.0.113.1", &a);
	unit_sockaddr("203.0.113.2", &b);
	for (i = 0; i < 20000; i++) {
		memset(&ha, 0, sizeof(ha));
		memset(&hb, 0, sizeof(hb));
		if (connlimit_acquire(t, &p, (struct sockaddr *)&a, &ha, &ref) != CONNLIMIT_OK ||
		    connlimit_acquire(t, &p, (struct sockaddr *)&b, &hb, &ref) != CONNLIMIT_OK)
			return (void *)1;
		connlimit_release(&hb);
		connlimit_release(&ha);
	}
	return NULL;
}

/* test_threads - four threads on one table leave it empty */
START_TEST(test_threads)
{
	struct connlimit *t = connlimit_new();
	pthread_t th[4];
	void *ret;
	int i;

	for (i = 0; i < 4; i++)
		ck_assert_int_eq(pthread_create(&th[i], NULL, thread_run, t), 0);
	for (i = 0; i < 4; i++) {
		ck_assert_int_eq(pthread_join(th[i], &ret), 0);
		ck_assert_ptr_null(ret);
	}
	ck_assert_uint_eq(connlimit_entries(t), 0);
	connlimit_free(t);
}
END_TEST

/* test_listener - one table per listener name, the same on every call */
START_TEST(test_listener)
{
	struct connlimit *a = connlimit_listener("mx"), *b = connlimit_listener("submission");

	ck_assert_ptr_nonnull(a);
	ck_assert_ptr_ne(a, b);
	ck_assert_ptr_eq(connlimit_listener("mx"), a);
}
END_TEST

/* test_cidr_of - networks of addresses, host bits cleared */
START_TEST(test_cidr_of)
{
	struct sockaddr_storage ss;
	struct cidr n, want;

	ck_assert(cidr_of(unit_sockaddr("192.0.2.201", &ss), 25, 64, &n));
	ck_assert(cidr_parse("192.0.2.128/25", &want));
	ck_assert_mem_eq(&n, &want, sizeof(n));
	ck_assert(cidr_of(unit_sockaddr("::ffff:192.0.2.201", &ss), 24, 64, &n));
	ck_assert(cidr_parse("192.0.2.0/24", &want));
	ck_assert_mem_eq(&n, &want, sizeof(n));
	ck_assert(cidr_of(unit_sockaddr("2001:db8:aa:bbcc:1::1", &ss), 24, 60, &n));
	ck_assert(cidr_parse("2001:db8:aa:bbc0::/60", &want));
	ck_assert_mem_eq(&n, &want, sizeof(n));
	ck_assert(cidr_any(&want, 1, unit_sockaddr("2001:db8:aa:bbcf::1", &ss)));
	ck_assert(!cidr_any(&want, 1, unit_sockaddr("2001:db8:aa:bbd0::1", &ss)));
	ck_assert(!cidr_any(NULL, 0, unit_sockaddr("2001:db8:aa:bbd0::1", &ss)));
}
END_TEST

static Suite *
connlimit_suite(void)
{
	Suite *s = suite_create("connlimit");
	TCase *tc = tcase_create("core");

	tcase_add_loop_test(tc, test_cases, 0, sizeof(cases) / sizeof(cases[0]));
	tcase_add_test(tc, test_release);
	tcase_add_test(tc, test_exempt);
	tcase_add_test(tc, test_not_ip);
	tcase_add_test(tc, test_refusal_log);
	tcase_add_test(tc, test_many);
	tcase_add_test(tc, test_threads);
	tcase_add_test(tc, test_listener);
	tcase_add_test(tc, test_cidr_of);
	suite_add_tcase(s, tc);
	return s;
}

UNIT_MAIN(connlimit_suite)
