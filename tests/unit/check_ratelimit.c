/*
 * check_ratelimit.c - unit tests for the ratelimit filter (policy/ratelimit.c)
 * on the memory store, its clock moved by the tests: windows slide, every
 * attempt counts, exempt networks, client networks (IPv4, IPv6), logins,
 * sender domains, long subjects (hashed keys), the order in which limits
 * are judged, a store that fails (open, closed) and the configuration's
 * errors.  With real SMTP clients, Redis and two nodes:
 * tests/integration/test_ratelimit.py.
 */
#include "config.h"

#include <arpa/inet.h>
#include <check.h>
#include <netinet/in.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "conf.h"
#include "filter.h"
#include "util.h"
#include "../policy/state.h"
#include "../policy/ratelimit.h"
#include "unit.h"

static struct conf test_conf;
static int64_t fake_now = 600;	/* the start of a 60-second step */

static int64_t
fake_clock(void)
{
	return fake_now;
}

/* configure - ratelimit with n "key=value" pairs from kvs; NULL and *err_r on refusal */
static void *
configure_sec(const char *type, const char *name, const char *const *kvs, size_t n,
    char **err_r)
{
	struct conf_kv kv[16];
	struct conf_section sec = { .type = (char *)type, .name = (char *)name, .line = 2,
	    .kv = kv, .nkv = n };
	size_t i;
	void *inst;

	ck_assert_uint_le(n, 16);
	for (i = 0; i < n; i++) {
		kv[i].key = (char *)kvs[2 * i];
		kv[i].value = (char *)kvs[2 * i + 1];
		kv[i].line = 3 + (int)i;
	}
	*err_r = NULL;
	inst = ratelimit_ops.configure(&test_conf, &sec, err_r);
	state_memory_set_clock(state_get(&test_conf), fake_clock);
	return inst;
}

/* cfg - ratelimit [filter ratelimit] with key, value, ... NULL; it must be taken */
static void *
cfg(const char *key, ...)
{
	const char *kvs[32];
	size_t n = 0;
	va_list ap;
	char *err;
	void *inst;

	va_start(ap, key);
	for (; key != NULL && n < 32; key = va_arg(ap, const char *)) {
		kvs[n++] = key;
		kvs[n++] = va_arg(ap, const char *);
	}
	va_end(ap);
	inst = configure_sec("filter", "ratelimit", kvs, n / 2, &err);
	ck_assert_msg(inst != NULL, "%s", err != NULL ? err : "");
	return inst;
}

/* A session from addr (numeric), authenticated as login (or NULL) */
struct sess {
	struct filter_session fs;
	struct filter_txn txn;
	void *priv;
	struct filter_ctx ctx;
	struct filter_reply r;
};

static void
sess_init(struct sess *s, const char *addr, const char *login)
{
	struct sockaddr_in *sin = (struct sockaddr_in *)&s->fs.client_sa;
	struct sockaddr_in6 *sin6 = (struct sockaddr_in6 *)&s->fs.client_sa;

	memset(s, 0, sizeof(*s));
	if (inet_pton(AF_INET, addr, &sin->sin_addr) == 1)
		sin->sin_family = AF_INET;
	else {
		ck_assert_int_eq(inet_pton(AF_INET6, addr, &sin6->sin6_addr), 1);
		sin6->sin6_family = AF_INET6;
	}
	s->fs.id = 42;
	s->fs.client_addr = addr;
	s->fs.auth_user = login;
	filter_txn_init(&s->txn);
	s->ctx.priv = &s->priv;
	s->ctx.sess = &s->fs;
}

static void
sess_done(struct sess *s)
{
	ratelimit_ops.close(NULL, &s->ctx);
	filter_txn_reset(&s->txn);
}

static enum filter_verdict
do_connect(void *inst, struct sess *s)
{
	memset(&s->r, 0, sizeof(s->r));
	s->ctx.txn = NULL;
	return ratelimit_ops.connect(inst, &s->ctx, &s->r);
}

static enum filter_verdict
do_mail(void *inst, struct sess *s, const char *from)
{
	memset(&s->r, 0, sizeof(s->r));
	filter_txn_reset(&s->txn);
	s->txn.mail_from = xstrdup(from);
	s->ctx.txn = &s->txn;
	return ratelimit_ops.mail(inst, &s->ctx, from, &s->r);
}

/* mails - n MAILs from a@example.test in s, each answered want */
static void
mails(void *inst, struct sess *s, int n, enum filter_verdict want)
{
	int i;

	for (i = 0; i < n; i++)
		ck_assert_int_eq(do_mail(inst, s, "a@example.test"), want);
}

static enum filter_verdict
do_rcpt(void *inst, struct sess *s, const char *rcpt)
{
	memset(&s->r, 0, sizeof(s->r));
	s->ctx.txn = &s->txn;
	return ratelimit_ops.rcpt(inst, &s->ctx, rcpt, &s->r);
}

/* refused - s's last verdict was a tempfail code/ecode whose text contains what */
static void
refused(const struct sess *s, enum filter_verdict v, int code, const char *ecode,
    const char *what)
{
	ck_assert_int_eq(v, FILTER_TEMPFAIL);
	ck_assert_int_eq(s->r.code, code);
	ck_assert_str_eq(s->r.ecode, ecode);
	ck_assert_msg(strstr(s->r.text, what) != NULL, "\"%s\" not in \"%s\"", what, s->r.text);
}

/*
 * The window slides (the store's steps are 4 s for 60 s): what was counted
 * leaves it 60 to 63 s later, one add after another, not all at once
 */
START_TEST(test_window_slides)
{
	void *rl = cfg("client_messages", "3/60", NULL);
	struct sess s;

	sess_init(&s, "192.0.2.1", NULL);
	mails(rl, &s, 2, FILTER_CONTINUE);
	fake_now = 630;
	ck_assert_int_eq(do_mail(rl, &s, "a@example.test"), FILTER_CONTINUE);
	fake_now = 631;
	refused(&s, do_mail(rl, &s, "a@example.test"), 451, "4.7.0",
	    "Rate limit exceeded: too many messages from [192.0.2.1], try again in 32 seconds");
	/* the two of 600 left, those of 630 and 631 stay: room for one */
	fake_now = 664;
	ck_assert_int_eq(do_mail(rl, &s, "a@example.test"), FILTER_CONTINUE);
	refused(&s, do_mail(rl, &s, "a@example.test"), 451, "4.7.0", "[192.0.2.1]");
	/* a whole window without anything: clean */
	fake_now = 800;
	mails(rl, &s, 3, FILTER_CONTINUE);
	sess_done(&s);
	ratelimit_ops.destroy(rl);
}
END_TEST

/* Every attempt counts: a refused client that keeps trying stays refused */
START_TEST(test_hammering)
{
	void *rl = cfg("client_messages", "2/60", NULL);
	struct sess s;

	sess_init(&s, "192.0.2.1", NULL);
	mails(rl, &s, 2, FILTER_CONTINUE);
	for (fake_now = 600; fake_now < 720; fake_now += 10)
		mails(rl, &s, 1, FILTER_TEMPFAIL);
	sess_done(&s);
	ratelimit_ops.destroy(rl);
}
END_TEST

/* Connections: 421 at CONNECT; another address is not limited */
START_TEST(test_connections)
{
	void *rl = cfg("client_connections", "2/60", NULL);
	struct sess s, t;

	sess_init(&s, "192.0.2.1", NULL);
	sess_init(&t, "::ffff:192.0.2.2", NULL);	/* mapped: counts as 192.0.2.2 */
	ck_assert_int_eq(do_connect(rl, &s), FILTER_CONTINUE);
	ck_assert_int_eq(do_connect(rl, &s), FILTER_CONTINUE);
	refused(&s, do_connect(rl, &s), 421, "4.7.0", "too many connections from [192.0.2.1]");
	ck_assert_int_eq(do_connect(rl, &t), FILTER_CONTINUE);
	ck_assert_int_eq(do_connect(rl, &t), FILTER_CONTINUE);
	refused(&t, do_connect(rl, &t), 421, "4.7.0", "from [192.0.2.2]");
	/* a connection limit counts nothing at MAIL or RCPT */
	ck_assert_int_eq(do_mail(rl, &s, "a@example.test"), FILTER_CONTINUE);
	ck_assert_int_eq(do_rcpt(rl, &s, "b@example.test"), FILTER_CONTINUE);
	sess_done(&s);
	sess_done(&t);
	ratelimit_ops.destroy(rl);
}
END_TEST

static const struct {
	const char *p4, *p6;		/* network_prefix4/6, NULL: default */
	const char *a, *b;		/* same network */
	const char *other;		/* another one */
	const char *shown;		/* network text in the reply */
} net_cases[] = {
	{ NULL, NULL, "192.0.2.1", "192.0.2.254", "192.0.3.1", "network 192.0.2.0/24" },
	{ "16", NULL, "198.51.1.1", "198.51.200.7", "198.52.0.1", "network 198.51.0.0/16" },
	{ "32", NULL, "203.0.113.9", "203.0.113.9", "203.0.113.10", "network 203.0.113.9/32" },
	{ NULL, NULL, "2001:db8:1:2::1", "2001:db8:1:2:ffff::9", "2001:db8:1:3::1",
	    "network 2001:db8:1:2::/64" },
	{ NULL, "48", "2001:db8:1:2::1", "2001:db8:1:ffff::1", "2001:db8:2::1",
	    "network 2001:db8:1::/48" },
};

/* Networks: two addresses of one network share its count; others do not */
START_TEST(test_networks)
{
	const char *kvs[6] = { "network_messages", "2/60", "network_prefix4", "24",
		"network_prefix6", "64" };
	struct sess a, b, o;
	char *err;
	void *rl;

	if (net_cases[_i].p4 != NULL)
		kvs[3] = net_cases[_i].p4;
	if (net_cases[_i].p6 != NULL)
		kvs[5] = net_cases[_i].p6;
	rl = configure_sec("filter", "ratelimit", kvs, 3, &err);
	ck_assert_msg(rl != NULL, "%s", err != NULL ? err : "");
	sess_init(&a, net_cases[_i].a, NULL);
	sess_init(&b, net_cases[_i].b, NULL);
	sess_init(&o, net_cases[_i].other, NULL);
	ck_assert_int_eq(do_mail(rl, &a, "x@example.test"), FILTER_CONTINUE);
	ck_assert_int_eq(do_mail(rl, &b, "x@example.test"), FILTER_CONTINUE);
	refused(&a, do_mail(rl, &a, "x@example.test"), 451, "4.7.0", net_cases[_i].shown);
	refused(&b, do_mail(rl, &b, "x@example.test"), 451, "4.7.0", net_cases[_i].shown);
	ck_assert_int_eq(do_mail(rl, &o, "x@example.test"), FILTER_CONTINUE);
	ck_assert_int_eq(do_mail(rl, &o, "x@example.test"), FILTER_CONTINUE);
	sess_done(&a);
	sess_done(&b);
	sess_done(&o);
	ratelimit_ops.destroy(rl);
}
END_TEST

/* Exempt clients are neither limited nor counted */
START_TEST(test_exempt)
{
	void *ex = cfg("client_recipients", "2/60", "network_connections", "1/60",
	    "exempt", "192.0.2.0/25 2001:db8::/32", NULL);
	void *plain = cfg("client_recipients", "2/60", NULL);
	struct sess s, t;
	int i;

	sess_init(&s, "192.0.2.7", NULL);
	sess_init(&t, "2001:db8::5", NULL);
	for (i = 0; i < 10; i++) {
		ck_assert_int_eq(do_connect(ex, &s), FILTER_CONTINUE);
		ck_assert_int_eq(do_connect(ex, &t), FILTER_CONTINUE);
		ck_assert_int_eq(do_rcpt(ex, &s, "r@example.test"), FILTER_CONTINUE);
	}
	/* the same counters without exempt: nothing was counted before */
	ck_assert_int_eq(do_rcpt(plain, &s, "r@example.test"), FILTER_CONTINUE);
	ck_assert_int_eq(do_rcpt(plain, &s, "r@example.test"), FILTER_CONTINUE);
	refused(&s, do_rcpt(plain, &s, "r@example.test"), 451, "4.7.0",
	    "too many recipients from [192.0.2.7]");
	/* 192.0.2.128 is outside 192.0.2.0/25 */
	sess_done(&s);
	sess_init(&s, "192.0.2.128", NULL);
	ck_assert_int_eq(do_connect(ex, &s), FILTER_CONTINUE);
	refused(&s, do_connect(ex, &s), 421, "4.7.0",
	    "too many connections from network 192.0.2.0/24");
	sess_done(&s);
	sess_done(&t);
	ratelimit_ops.destroy(ex);
	ratelimit_ops.destroy(plain);
}
END_TEST

/* Logins: only authenticated sessions count, each login apart, from any address */
START_TEST(test_login)
{
	void *rl = cfg("login_messages", "2/3600", "login_recipients", "3/3600", NULL);
	struct sess a1, a2, b, anon;
	int i;

	sess_init(&a1, "192.0.2.1", "alice@example.test");
	sess_init(&a2, "198.51.100.1", "alice@example.test");
	sess_init(&b, "192.0.2.1", "bob@example.test");
	sess_init(&anon, "192.0.2.1", NULL);
	ck_assert_int_eq(do_mail(rl, &a1, "alice@example.test"), FILTER_CONTINUE);
	ck_assert_int_eq(do_mail(rl, &a2, "alice@example.test"), FILTER_CONTINUE);
	refused(&a1, do_mail(rl, &a1, "alice@example.test"), 451, "4.7.0",
	    "too many messages from login alice@example.test, try again in 3674 seconds");
	ck_assert_int_eq(do_mail(rl, &b, "bob@example.test"), FILTER_CONTINUE);
	for (i = 0; i < 5; i++)
		ck_assert_int_eq(do_mail(rl, &anon, "x@example.test"), FILTER_CONTINUE);
	for (i = 0; i < 3; i++)
		ck_assert_int_eq(do_rcpt(rl, &b, "r@example.test"), FILTER_CONTINUE);
	refused(&b, do_rcpt(rl, &b, "r@example.test"), 451, "4.7.0",
	    "too many recipients from login bob@example.test");
	ck_assert_int_eq(do_rcpt(rl, &a1, "r@example.test"), FILTER_CONTINUE);
	sess_done(&a1);
	sess_done(&a2);
	sess_done(&b);
	sess_done(&anon);
	ratelimit_ops.destroy(rl);
}
END_TEST

/* Sender domains: lower-cased, the null sender not counted, recipients by MAIL's domain */
START_TEST(test_domain)
{
	void *rl = cfg("sender_domain_messages", "2/60", "sender_domain_recipients", "3/60", NULL);
	struct sess s, t;
	int i;

	sess_init(&s, "192.0.2.1", NULL);
	sess_init(&t, "203.0.113.1", NULL);
	ck_assert_int_eq(do_mail(rl, &s, "a@Example.ORG"), FILTER_CONTINUE);
	ck_assert_int_eq(do_mail(rl, &t, "b@example.org"), FILTER_CONTINUE);
	refused(&t, do_mail(rl, &t, "c@EXAMPLE.org"), 451, "4.7.0",
	    "too many messages from sender domain example.org");
	for (i = 0; i < 5; i++) {
		ck_assert_int_eq(do_mail(rl, &s, ""), FILTER_CONTINUE);
		ck_assert_int_eq(do_rcpt(rl, &s, "r@example.test"), FILTER_CONTINUE);
	}
	ck_assert_int_eq(do_mail(rl, &s, "a@other.example"), FILTER_CONTINUE);
	for (i = 0; i < 3; i++)
		ck_assert_int_eq(do_rcpt(rl, &s, "r@example.test"), FILTER_CONTINUE);
	refused(&s, do_rcpt(rl, &s, "r@example.test"), 451, "4.7.0",
	    "too many recipients from sender domain other.example");
	sess_done(&s);
	sess_done(&t);
	ratelimit_ops.destroy(rl);
}
END_TEST

/* Several limits over at once: the first in the order client, network, login, domain */
START_TEST(test_order)
{
	void *rl = cfg("sender_domain_messages", "1/60", "login_messages", "1/60",
	    "network_messages", "1/60", "client_messages", "1/60", NULL);
	struct sess s, t;

	sess_init(&s, "192.0.2.1", "alice@example.test");
	ck_assert_int_eq(do_mail(rl, &s, "alice@example.test"), FILTER_CONTINUE);
	refused(&s, do_mail(rl, &s, "alice@example.test"), 451, "4.7.0", "from [192.0.2.1]");
	sess_init(&t, "192.0.2.2", "alice@example.test");
	refused(&t, do_mail(rl, &t, "alice@example.test"), 451, "4.7.0",
	    "from network 192.0.2.0/24");
	sess_done(&t);
	sess_init(&t, "198.51.100.1", "alice@example.test");
	refused(&t, do_mail(rl, &t, "alice@example.test"), 451, "4.7.0",
	    "from login alice@example.test");
	sess_done(&t);
	sess_init(&t, "203.0.113.1", "bob@example.test");
	refused(&t, do_mail(rl, &t, "bob@example.test"), 451, "4.7.0",
	    "from sender domain example.test");
	sess_done(&t);
	sess_done(&s);
	ratelimit_ops.destroy(rl);
}
END_TEST

/* Long logins are hashed into the key: still counted, and apart from one another */
START_TEST(test_long_subject)
{
	void *rl = cfg("login_messages", "1/60", NULL);
	char a[301], b[301];
	struct sess s, t;

	memset(a, 'a', 300);
	a[300] = '\0';
	memcpy(b, a, sizeof(b));
	b[299] = 'b';
	a[10] = '\n';		/* shown escaped, never raw, in the reply */
	sess_init(&s, "192.0.2.1", a);
	sess_init(&t, "192.0.2.1", b);
	ck_assert_int_eq(do_mail(rl, &s, "x@example.test"), FILTER_CONTINUE);
	ck_assert_int_eq(do_mail(rl, &t, "x@example.test"), FILTER_CONTINUE);
	refused(&s, do_mail(rl, &s, "x@example.test"), 451, "4.7.0", "from login aaaaaaaaaa\\x0a");
	ck_assert_ptr_null(strchr(s.r.text, '\n'));
	refused(&t, do_mail(rl, &t, "x@example.test"), 451, "4.7.0", "from login aaaa");
	sess_done(&s);
	sess_done(&t);
	ratelimit_ops.destroy(rl);
}
END_TEST

/* Instances: [filter ratelimit] and [ratelimit NAME] count apart; one name, one count */
START_TEST(test_instances)
{
	static const char *const kvs[] = { "client_messages", "1/60" };
	struct sess s;
	char *err;
	void *d = configure_sec("filter", "ratelimit", kvs, 1, &err);
	void *x = configure_sec("ratelimit", "x", kvs, 1, &err);
	void *x2 = configure_sec("ratelimit", "x", kvs, 1, &err);
	void *y = configure_sec("ratelimit", "y", kvs, 1, &err);

	sess_init(&s, "192.0.2.1", NULL);
	ck_assert_int_eq(do_mail(d, &s, "a@example.test"), FILTER_CONTINUE);
	ck_assert_int_eq(do_mail(x, &s, "a@example.test"), FILTER_CONTINUE);
	ck_assert_int_eq(do_mail(x2, &s, "a@example.test"), FILTER_TEMPFAIL);
	ck_assert_int_eq(do_mail(y, &s, "a@example.test"), FILTER_CONTINUE);
	ck_assert_int_eq(do_mail(d, &s, "a@example.test"), FILTER_TEMPFAIL);
	sess_done(&s);
	ratelimit_ops.destroy(d);
	ratelimit_ops.destroy(x);
	ratelimit_ops.destroy(x2);
	ratelimit_ops.destroy(y);
}
END_TEST

/* A store that fails (Redis without a loop to answer on): on_error open passes, closed 4.3.0 */
START_TEST(test_store_error)
{
	bool closed = _i == 1;
	void *rl;
	struct sess s;

	test_conf.redis_server = (char *)"127.0.0.1:1";
	test_conf.redis_on_error = (char *)(closed ? "closed" : "open");
	rl = cfg("client_connections", "1/60", "client_messages", "1/60", NULL);
	sess_init(&s, "192.0.2.1", NULL);
	if (!closed) {
		ck_assert_int_eq(do_connect(rl, &s), FILTER_CONTINUE);
		ck_assert_int_eq(do_mail(rl, &s, "a@example.test"), FILTER_CONTINUE);
		ck_assert_int_eq(do_mail(rl, &s, "a@example.test"), FILTER_CONTINUE);
	} else {
		refused(&s, do_connect(rl, &s), 421, "4.3.0",
		    "Rate limit state unavailable, try again later");
		refused(&s, do_mail(rl, &s, "a@example.test"), 451, "4.3.0", "state unavailable");
	}
	sess_done(&s);
	ratelimit_ops.destroy(rl);
}
END_TEST

static const struct {
	const char *key, *value, *err;
} bad_cases[] = {
	{ "client_messages", "0/60", "client_messages (line 3): \"0/60\" is not N/SECONDS "
	    "(e.g. 100/3600: at most 100 in any 3600 seconds; N 1..1000000000, SECONDS "
	    "1..2592000)" },
	{ "client_messages", "100/0", NULL },
	{ "client_messages", "100", NULL },
	{ "client_messages", "100/", NULL },
	{ "client_messages", "/60", NULL },
	{ "client_messages", "100/60s", NULL },
	{ "client_messages", "-1/60", NULL },
	{ "client_messages", "+1/60", NULL },
	{ "client_messages", "1/ 60", NULL },
	{ "client_messages", "1000000001/60", NULL },
	{ "client_messages", "100/2592001", NULL },
	{ "client_messages", "99999999999999999999/60", NULL },
	{ "network_recipients", "ten/hour", NULL },
	{ "login_connections", "10/60", "login_connections (line 3): a connection has no login "
	    "yet (it comes with AUTH): limit login_messages or login_recipients instead" },
	{ "sender_domain_connections", "10/60", "sender_domain_connections (line 3): a "
	    "connection has no sender yet (it comes with MAIL): limit sender_domain_messages or "
	    "sender_domain_recipients instead" },
	{ "client_mesages", "10/60", "unknown key \"client_mesages\" (line 3); the keys are "
	    "client_, network_, login_ and sender_domain_ messages and recipients, client_ and "
	    "network_ connections, network_prefix4, network_prefix6, exempt, timeout and "
	    "default_action" },
	{ "network_prefix4", "33", NULL },
	{ "network_prefix4", "7", NULL },
	{ "network_prefix6", "129", NULL },
	{ "exempt", "192.0.2.0/33", "exempt (line 3): \"192.0.2.0/33\" is not an address or "
	    "network; write e.g. 192.0.2.0/24 or 2001:db8::/32" },
	{ "exempt", "mail.example.test", NULL },
	{ "timeout", "5", "no limit set (e.g. client_messages = 100/3600)" },
};

START_TEST(test_config_refused)
{
	const char *kvs[2] = { bad_cases[_i].key, bad_cases[_i].value };
	char *err;

	ck_assert_ptr_null(configure_sec("filter", "ratelimit", kvs, 1, &err));
	ck_assert_ptr_nonnull(err);
	if (bad_cases[_i].err != NULL)
		ck_assert_str_eq(err, bad_cases[_i].err);
	free(err);
}
END_TEST

/* No section at all: refused the same way */
START_TEST(test_config_none)
{
	char *err = NULL;

	ck_assert_ptr_null(ratelimit_ops.configure(&test_conf, NULL, &err));
	ck_assert_str_eq(err, "no limit set (e.g. client_messages = 100/3600)");
	free(err);
}
END_TEST

/* Every limit key, the chain's keys and the largest values are taken */
START_TEST(test_config_ok)
{
	void *rl = cfg("client_connections", "1000000000/2592000",
	    "network_connections", "1/1", "client_messages", "5/60", "network_messages", "5/60",
	    "login_messages", "5/60", "sender_domain_messages", "5/60",
	    "client_recipients", "5/60", "network_recipients", "5/60", "login_recipients", "5/60",
	    "sender_domain_recipients", "5/60", "network_prefix4", "8", "network_prefix6", "128",
	    "timeout", "3", "default_action", "accept", NULL);

	ratelimit_ops.destroy(rl);
}
END_TEST

/* fresh - each test on a new, empty store at time 600, forked or not */
static void
fresh(void)
{
	memset(&test_conf, 0, sizeof(test_conf));
	fake_now = 600;
}

static void
store_gone(void)
{
	state_shutdown();
}

static Suite *
ratelimit_suite(void)
{
	Suite *s = suite_create("ratelimit");
	TCase *tc = tcase_create("core");

	tcase_add_checked_fixture(tc, fresh, store_gone);

	tcase_add_test(tc, test_window_slides);
	tcase_add_test(tc, test_hammering);
	tcase_add_test(tc, test_connections);
	tcase_add_loop_test(tc, test_networks, 0, sizeof(net_cases) / sizeof(net_cases[0]));
	tcase_add_test(tc, test_exempt);
	tcase_add_test(tc, test_login);
	tcase_add_test(tc, test_domain);
	tcase_add_test(tc, test_order);
	tcase_add_test(tc, test_long_subject);
	tcase_add_test(tc, test_instances);
	tcase_add_loop_test(tc, test_store_error, 0, 2);
	tcase_add_loop_test(tc, test_config_refused, 0, sizeof(bad_cases) / sizeof(bad_cases[0]));
	tcase_add_test(tc, test_config_none);
	tcase_add_test(tc, test_config_ok);
	suite_add_tcase(s, tc);
	return s;
}

UNIT_MAIN(ratelimit_suite)
