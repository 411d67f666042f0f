/*
 * check_greylist.c - unit tests for the greylist filter (policy/greylist.c)
 * on the memory store with a clock of the test's (state_memory_set_clock):
 * a new triplet deferred, an early retry deferred with the time left, a
 * retry after the delay passing, a passed triplet forgotten after its
 * lifetime and a waiting one after retry_window, auto_allow, the client
 * network as the triplet's client part, the SPF-validated domain instead
 * (identity = spf), exempt networks, authenticated sessions, the store key,
 * and the section's errors.  Each test runs in its own process (Check's
 * fork mode), so each has a fresh store.  The SMTP side, Redis and two
 * nodes are in tests/integration/test_greylist.py.
 */
#include "config.h"

#include <arpa/inet.h>
#include <check.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "conf.h"
#include "filter.h"
#include "util.h"
#include "state.h"
#include "../policy/greylist.h"
#include "unit.h"

static struct conf test_conf;
static int64_t fake_now = 1000;

static int64_t
fake_clock(void)
{
	return fake_now;
}

/* configure - greylist with the NULL-terminated key, value pairs; NULL + *err_r on refusal */
static void *
configure(const char *const *pairs, char **err_r)
{
	struct conf_kv kv[16];
	struct conf_section sec = { .type = (char *)"filter", .name = (char *)"greylist",
	    .line = 1, .kv = kv, .nkv = 0 };
	void *inst;

	memset(kv, 0, sizeof(kv));
	for (; pairs != NULL && pairs[0] != NULL; pairs += 2, sec.nkv++) {
		kv[sec.nkv].key = (char *)pairs[0];
		kv[sec.nkv].value = (char *)pairs[1];
		kv[sec.nkv].line = 2 + (int)sec.nkv;
	}
	*err_r = NULL;
	inst = greylist_ops.configure(&test_conf, &sec, err_r);
	state_memory_set_clock(state_get(&test_conf), fake_clock);
	return inst;
}

/* make - configure, which must succeed */
static void *
make(const char *const *pairs)
{
	char *err;
	void *inst = configure(pairs, &err);

	ck_assert_msg(inst != NULL, "%s", err != NULL ? err : "");
	return inst;
}

/* A client's call: who it is, what it sends */
struct call {
	const char *addr;	/* numeric IPv4 or IPv6 */
	const char *auth;	/* AUTH login, NULL without */
	const char *from;
	const char *rcpt;
	const char *spf_domain;	/* a fact spf=pass for it, scope mailfrom; NULL: none */
	const char *spf_scope;	/* "mailfrom" when NULL */
};

/* rcpt - one RCPT through the filter in a session of its own; the verdict and *r */
static enum filter_verdict
rcpt(void *inst, const struct call *c, struct filter_reply *r)
{
	struct filter_session sess;
	struct filter_txn txn;
	struct filter_ctx ctx;
	struct sockaddr_in *sin = (struct sockaddr_in *)&sess.client_sa;
	struct sockaddr_in6 *sin6 = (struct sockaddr_in6 *)&sess.client_sa;
	void *priv = NULL;
	enum filter_verdict v;

	memset(&sess, 0, sizeof(sess));
	memset(&ctx, 0, sizeof(ctx));
	memset(r, 0, sizeof(*r));
	filter_txn_init(&txn);
	if (c->addr == NULL)
		sess.client_addr = "unknown";
	else if (inet_pton(AF_INET, c->addr, &sin->sin_addr) == 1)
		sin->sin_family = AF_INET;
	else {
		ck_assert_int_eq(inet_pton(AF_INET6, c->addr, &sin6->sin6_addr), 1);
		sin6->sin6_family = AF_INET6;
	}
	if (c->addr != NULL)
		sess.client_addr = c->addr;
	sess.id = 42;
	sess.auth_user = c->auth;
	sess.conf = &test_conf;
	txn.mail_from = xstrdup(c->from);
	if (c->spf_domain != NULL)
		filter_auth_fact(&txn, "spf", "pass", c->spf_domain,
		    c->spf_scope != NULL ? c->spf_scope : "mailfrom");
	ctx.priv = &priv;
	ctx.sess = &sess;
	ctx.txn = &txn;
	v = greylist_ops.mail(inst, &ctx, c->from, r);
	ck_assert_int_eq(v, FILTER_CONTINUE);
	v = greylist_ops.rcpt(inst, &ctx, c->rcpt, r);
	ck_assert_int_ne(v, FILTER_PENDING);
	ctx.txn = NULL;
	greylist_ops.close(inst, &ctx);
	ck_assert_ptr_null(priv);
	filter_txn_reset(&txn);
	return v;
}

/* deferred - the call is greylisted with "try again in wait seconds" */
static void
deferred(void *inst, const struct call *c, unsigned wait)
{
	struct filter_reply r;
	char text[64];

	ck_assert_int_eq(rcpt(inst, c, &r), FILTER_TEMPFAIL);
	ck_assert_int_eq(r.code, 451);
	ck_assert_str_eq(r.ecode, "4.7.1");
	snprintf(text, sizeof(text), "Greylisted, try again in %u seconds", wait);
	ck_assert_str_eq(r.text, text);
}

/* passes - the call goes through */
static void
passes(void *inst, const struct call *c)
{
	struct filter_reply r;

	ck_assert_int_eq(rcpt(inst, c, &r), FILTER_CONTINUE);
}

static const struct call alice = { "192.0.2.1", NULL, "alice@origin.test", "bob@example.test",
    NULL, NULL };

/* test_new_early_pass - deferred, deferred with the time left, then passed and kept */
START_TEST(test_new_early_pass)
{
	void *inst = make(NULL);

	deferred(inst, &alice, 300);
	fake_now += 100;
	deferred(inst, &alice, 200);
	fake_now += 199;
	deferred(inst, &alice, 1);
	fake_now += 1;
	passes(inst, &alice);
	fake_now += 86400;
	passes(inst, &alice);
	greylist_ops.destroy(inst);
}
END_TEST

/* test_triplet_parts - each part of the triplet counts; addresses compare lower-cased */
START_TEST(test_triplet_parts)
{
	static const char *const pairs[] = { "delay", "10", NULL };
	void *inst = make(pairs);
	struct call c = alice;

	deferred(inst, &alice, 10);
	fake_now += 10;
	c.from = "ALICE@Origin.Test";
	c.rcpt = "Bob@EXAMPLE.test";
	passes(inst, &c);		/* the same triplet, in other case */
	c.from = "carol@origin.test";
	deferred(inst, &c, 10);		/* another sender */
	c = alice;
	c.rcpt = "dave@example.test";
	deferred(inst, &c, 10);		/* another recipient */
	c = alice;
	c.from = "";
	deferred(inst, &c, 10);		/* the null sender too */
	fake_now += 10;
	passes(inst, &c);
	greylist_ops.destroy(inst);
}
END_TEST

/* test_lifetime - a passed triplet is kept lifetime seconds after its last use */
START_TEST(test_lifetime)
{
	static const char *const pairs[] = { "delay", "10", "lifetime", "100", NULL };
	void *inst = make(pairs);

	deferred(inst, &alice, 10);
	fake_now += 10;
	passes(inst, &alice);
	fake_now += 99;
	passes(inst, &alice);		/* used: kept another 100 s */
	fake_now += 99;
	passes(inst, &alice);
	fake_now += 100;
	deferred(inst, &alice, 10);	/* forgotten: new again */
	greylist_ops.destroy(inst);
}
END_TEST

/* test_retry_window - a triplet not retried within retry_window starts over */
START_TEST(test_retry_window)
{
	static const char *const pairs[] = { "delay", "10", "retry_window", "50", NULL };
	void *inst = make(pairs);
	struct call c = alice;

	deferred(inst, &alice, 10);
	fake_now += 49;
	passes(inst, &alice);
	fake_now += 1;
	passes(inst, &alice);		/* passed: kept lifetime now, not retry_window */

	c.rcpt = "other@example.test";
	deferred(inst, &c, 10);
	fake_now += 50;
	deferred(inst, &c, 10);		/* expired unretried: new, the delay again */
	fake_now += 10;
	passes(inst, &c);
	greylist_ops.destroy(inst);
}
END_TEST

/* test_auto_allow - after auto_allow passed triplets the client network is let through */
START_TEST(test_auto_allow)
{
	static const char *const pairs[] = { "delay", "10", "auto_allow", "2", NULL };
	static const char *const off[] = { "delay", "10", "auto_allow", "0", NULL };
	void *inst = make(pairs);
	struct call c = alice, other = alice;

	deferred(inst, &c, 10);
	c.rcpt = "r2@example.test";
	deferred(inst, &c, 10);
	fake_now += 10;
	passes(inst, &c);		/* one passed */
	c.rcpt = "r3@example.test";
	deferred(inst, &c, 10);		/* not yet allowed */
	c = alice;
	passes(inst, &c);		/* two passed: allowed from now on */
	passes(inst, &c);		/* a triplet passing again counts no more */
	c.from = "new@elsewhere.test";
	c.addr = "192.0.2.200";		/* the same /24 */
	passes(inst, &c);
	c.addr = "192.0.3.1";		/* another network */
	deferred(inst, &c, 10);
	greylist_ops.destroy(inst);

	inst = make(off);		/* auto_allow = 0: never */
	other.rcpt = "x@example.test";
	deferred(inst, &other, 10);
	other.rcpt = "y@example.test";
	deferred(inst, &other, 10);
	other.rcpt = "z@example.test";
	deferred(inst, &other, 10);
	fake_now += 10;
	other.rcpt = "x@example.test";
	passes(inst, &other);
	other.rcpt = "y@example.test";
	passes(inst, &other);
	other.rcpt = "z@example.test";
	passes(inst, &other);
	other.rcpt = "fresh@example.test";
	deferred(inst, &other, 10);
	greylist_ops.destroy(inst);
}
END_TEST

/* test_auto_allow_lifetime - a network's count of passed triplets goes after lifetime */
START_TEST(test_auto_allow_lifetime)
{
	static const char *const pairs[] = { "delay", "10", "lifetime", "100", "auto_allow", "1",
	    NULL };
	void *inst = make(pairs);
	struct call c = alice;

	deferred(inst, &c, 10);
	fake_now += 10;
	passes(inst, &c);		/* passed: the network is allowed */
	c.rcpt = "r2@example.test";
	passes(inst, &c);
	fake_now += 100;
	c.rcpt = "r3@example.test";
	deferred(inst, &c, 10);		/* its count is gone with lifetime */
	greylist_ops.destroy(inst);
}
END_TEST

/* A retry from another address: passes or not, by the prefixes */
static const struct {
	const char *prefix4, *prefix6;
	const char *first, *retry;
	bool pass;
} net_cases[] = {
	{ "24", "64", "192.0.2.1", "192.0.2.254", true },
	{ "24", "64", "192.0.2.1", "192.0.3.1", false },
	{ "32", "64", "192.0.2.1", "192.0.2.2", false },
	{ "32", "64", "192.0.2.1", "192.0.2.1", true },
	{ "16", "64", "192.0.2.1", "192.0.77.1", true },
	{ "24", "64", "192.0.2.1", "::ffff:192.0.2.9", true },	/* IPv4-mapped is IPv4 */
	{ "24", "64", "2001:db8:1:2::1", "2001:db8:1:2:ffff::9", true },
	{ "24", "64", "2001:db8:1:2::1", "2001:db8:1:3::1", false },
	{ "24", "48", "2001:db8:1:2::1", "2001:db8:1:3::1", true },
	{ "24", "128", "2001:db8:1:2::1", "2001:db8:1:2::2", false },
};

/* test_network - the triplet's client part is the client's network */
START_TEST(test_network)
{
	const char *const pairs[] = { "delay", "5", "network_prefix4", net_cases[_i].prefix4,
	    "network_prefix6", net_cases[_i].prefix6, NULL };
	void *inst = make(pairs);
	struct call c = alice;

	c.addr = net_cases[_i].first;
	deferred(inst, &c, 5);
	fake_now += 5;
	c.addr = net_cases[_i].retry;
	if (net_cases[_i].pass)
		passes(inst, &c);
	else
		deferred(inst, &c, 5);
	greylist_ops.destroy(inst);
}
END_TEST

/* test_spf_identity - with SPF pass for the MAIL FROM domain, any allowed address retries */
START_TEST(test_spf_identity)
{
	static const char *const pairs[] = { "delay", "5", "identity", "spf", NULL };
	static const char *const net[] = { "delay", "5", NULL };
	struct call c = alice;
	void *inst = make(pairs);

	c.spf_domain = "origin.test";
	deferred(inst, &c, 5);
	fake_now += 5;
	c.addr = "198.51.100.7";	/* another network, SPF pass for the same domain */
	c.spf_domain = "ORIGIN.test";
	passes(inst, &c);
	c.addr = "203.0.113.9";		/* without the fact: the network is the client part */
	c.spf_domain = NULL;
	deferred(inst, &c, 5);
	c.spf_domain = "other.test";	/* a pass for another domain does not count */
	c.rcpt = "x@example.test";
	deferred(inst, &c, 5);
	c.spf_domain = "origin.test";	/* a HELO pass does not count */
	c.spf_scope = "helo";
	c.addr = "203.0.114.9";
	deferred(inst, &c, 5);
	greylist_ops.destroy(inst);

	inst = make(net);		/* identity = network: the fact is ignored */
	c = alice;
	c.rcpt = "y@example.test";
	c.spf_domain = "origin.test";
	deferred(inst, &c, 5);
	fake_now += 5;
	c.addr = "198.51.100.7";
	deferred(inst, &c, 5);
	greylist_ops.destroy(inst);
}
END_TEST

/* test_exempt - exempt networks are never greylisted, others are */
START_TEST(test_exempt)
{
	static const char *const pairs[] = { "exempt", "192.0.2.0/24, 2001:db8::/32 10.0.0.1",
	    NULL };
	void *inst = make(pairs);
	struct call c = alice;

	passes(inst, &c);
	c.addr = "2001:db8:ffff::1";
	passes(inst, &c);
	c.addr = "10.0.0.1";
	passes(inst, &c);
	c.addr = "10.0.0.2";
	deferred(inst, &c, 300);
	c.addr = "192.0.3.1";
	deferred(inst, &c, 300);
	ck_assert_uint_eq(state_memory_entries(state_get(&test_conf)), 2);
	greylist_ops.destroy(inst);
}
END_TEST

/* test_authenticated - skipped with AUTH, unless authenticated = greylist */
START_TEST(test_authenticated)
{
	static const char *const greylist[] = { "authenticated", "greylist", NULL };
	static const char *const skip[] = { "authenticated", "skip", NULL };
	struct call c = alice;
	void *inst = make(NULL);

	c.auth = "alice";
	passes(inst, &c);
	greylist_ops.destroy(inst);
	inst = make(skip);
	passes(inst, &c);
	greylist_ops.destroy(inst);
	ck_assert_uint_eq(state_memory_entries(state_get(&test_conf)), 0);
	inst = make(greylist);
	deferred(inst, &c, 300);
	greylist_ops.destroy(inst);
}
END_TEST

/* test_no_ip - a client without an IP address (a local socket) is not greylisted */
START_TEST(test_no_ip)
{
	void *inst = make(NULL);
	struct call c = alice;

	c.addr = NULL;
	passes(inst, &c);
	ck_assert_uint_eq(state_memory_entries(state_get(&test_conf)), 0);
	greylist_ops.destroy(inst);
}
END_TEST

/* test_key - "gl:t:" and 32 hex digits of SHA-256(client NUL sender NUL recipient) */
START_TEST(test_key)
{
	char key[GREYLIST_KEY_BUF];

	/* python3: hashlib.sha256(b'192.0.2.0/24\0alice@origin.test\0bob@example.test') */
	greylist_triplet_key("192.0.2.0/24", "Alice@Origin.test", "bob@EXAMPLE.TEST", key);
	ck_assert_str_eq(key, "gl:t:211191aa4b711b08fd3737205b6eb0d8");
	greylist_triplet_key("spf:origin.test", "", "bob@example.test", key);
	ck_assert_str_eq(key, "gl:t:8b3061a8671aef0d0655e2bafe7698ce");
}
END_TEST

static const struct {
	const char *key, *value, *err;
} bad_cases[] = {
	{ "delay", "86401", "delay \"86401\" at line 2: expected 0 to 86400" },
	{ "delay", "5m", "delay \"5m\" at line 2: expected 0 to 86400" },
	{ "retry_window", "300", "retry_window (300) must be longer than delay (300): no retry "
	    "could pass" },
	{ "lifetime", "-1", "lifetime \"-1\" at line 2: expected 1 to 31536000" },
	{ "auto_allow", "many", "auto_allow \"many\" at line 2: expected 0 to 1000000" },
	{ "network_prefix4", "33", "network_prefix4 \"33\" at line 2: expected 8 to 32" },
	{ "network_prefix6", "8", "network_prefix6 \"8\" at line 2: expected 16 to 128" },
	{ "identity", "ip", "identity \"ip\" at line 2: expected network or spf" },
	{ "authenticated", "yes", "authenticated \"yes\" at line 2: expected skip or greylist" },
	{ "exempt", "192.0.2.0/24 example.test", "exempt (line 2): \"example.test\" is not an "
	    "address or network; write e.g. 192.0.2.0/24 or 2001:db8::/32" },
	{ "exempt", "192.0.2.0/33", NULL },
	{ "max_age", "35", "unknown key \"max_age\" (line 2); the keys are delay, retry_window, "
	    "lifetime, auto_allow, network_prefix4, network_prefix6, identity, exempt, "
	    "authenticated, timeout and default_action" },
};

/* test_refused - each bad key is refused with a message naming it and its line */
START_TEST(test_refused)
{
	const char *const pairs[] = { bad_cases[_i].key, bad_cases[_i].value, NULL };
	char *err;

	ck_assert_ptr_null(configure(pairs, &err));
	ck_assert_ptr_nonnull(err);
	if (bad_cases[_i].err != NULL)
		ck_assert_str_eq(err, bad_cases[_i].err);
	free(err);
}
END_TEST

/* test_accepted - the chain's keys and every key at a bound */
START_TEST(test_accepted)
{
	static const char *const pairs[] = { "timeout", "5", "default_action", "accept",
	    "delay", "86400", "retry_window", "2592000", "lifetime", "1", "auto_allow", "0",
	    "network_prefix4", "8", "network_prefix6", "128", "identity", "network",
	    "exempt", "::1", NULL };

	greylist_ops.destroy(make(pairs));
	greylist_ops.destroy(make(NULL));
}
END_TEST

static Suite *
greylist_suite(void)
{
	Suite *s = suite_create("greylist");
	TCase *tc = tcase_create("core");

	tcase_add_test(tc, test_new_early_pass);
	tcase_add_test(tc, test_triplet_parts);
	tcase_add_test(tc, test_lifetime);
	tcase_add_test(tc, test_retry_window);
	tcase_add_test(tc, test_auto_allow);
	tcase_add_test(tc, test_auto_allow_lifetime);
	tcase_add_loop_test(tc, test_network, 0, sizeof(net_cases) / sizeof(net_cases[0]));
	tcase_add_test(tc, test_spf_identity);
	tcase_add_test(tc, test_exempt);
	tcase_add_test(tc, test_authenticated);
	tcase_add_test(tc, test_no_ip);
	tcase_add_test(tc, test_key);
	tcase_add_loop_test(tc, test_refused, 0, sizeof(bad_cases) / sizeof(bad_cases[0]));
	tcase_add_test(tc, test_accepted);
	suite_add_tcase(s, tc);
	return s;
}

UNIT_MAIN(greylist_suite)
