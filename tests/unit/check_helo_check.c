/*
 * check_helo_check.c - unit tests for the "helo-check" filter
 * (policy/helo_check.c): each HELO name against each key, the replies and
 * their codes, the loopback exemption, address literals of the address
 * connected to (IPv4, IPv6, IPv4-mapped) and of this host's interfaces,
 * and the section's keys refused.  Sessions over the network are in
 * tests/integration/test_connstage.py.
 */
#include "config.h"

#include <arpa/inet.h>
#include <check.h>
#include <netinet/in.h>
#include <stdlib.h>
#include <string.h>

#include "conf.h"
#include "filter.h"
#include "util.h"
#include "../policy/helo_check.h"
#include "unit.h"

static char *local_domains[] = { "example.test", "other.test" };
static struct conf test_conf;

/* configure - helo-check with up to four "key=value" words; NULL and *err_r on refusal */
static void *
configure(const char *const *kvs, char **err_r)
{
	struct conf_kv kv[4];
	struct conf_section sec = { .type = (char *)"filter", .name = (char *)"helo-check",
	    .line = 1, .kv = kv, .nkv = 0 };
	char buf[4][128];
	size_t i;

	test_conf.hostname = (char *)"mx.example.test";
	test_conf.local_domains = local_domains;
	test_conf.nlocal_domains = 2;
	for (i = 0; kvs != NULL && kvs[i] != NULL; i++) {
		str_copy(buf[i], kvs[i], sizeof(buf[i]));
		kv[i].key = buf[i];
		kv[i].value = strchr(buf[i], '=') + 1;
		kv[i].value[-1] = '\0';
		kv[i].line = (int)i + 2;
		sec.nkv++;
	}
	*err_r = NULL;
	return helo_check_ops.configure(&test_conf, &sec, err_r);
}

/* helo - run the filter on name for a client at client connected to local: the reply code, 0 if passed */
static int
helo(void *inst, const char *client, const char *local, const char *name, char *ecode_r)
{
	struct filter_session sess;
	struct filter_ctx ctx;
	struct filter_reply r;
	void *priv = NULL;
	enum filter_verdict v;

	memset(&sess, 0, sizeof(sess));
	sess.id = 7;
	sess.client_addr = client;
	sess.local_addr = local;
	unit_sockaddr(client, &sess.client_sa);
	unit_sockaddr(local, &sess.local_sa);
	sess.conf = &test_conf;
	memset(&ctx, 0, sizeof(ctx));
	ctx.priv = &priv;
	ctx.sess = &sess;
	memset(&r, 0, sizeof(r));
	v = helo_check_ops.helo(inst, &ctx, name, &r);
	if (v == FILTER_CONTINUE)
		return 0;
	ck_assert_int_eq(v, FILTER_REJECT);
	if (ecode_r != NULL)
		str_copy(ecode_r, r.ecode, 16);
	return r.code;
}

static const struct {
	const char *keys[4];
	const char *client, *local, *name;
	int code;
	const char *ecode;
} cases[] = {
	/* defaults: reject_invalid, reject_own, loopback exempt */
	{ { NULL }, "192.0.2.9", "198.51.100.25", "client.example.org", 0, NULL },
	{ { NULL }, "192.0.2.9", "198.51.100.25", "client.example.org.", 0, NULL },
	{ { NULL }, "192.0.2.9", "198.51.100.25", "localhost", 0, NULL },
	{ { NULL }, "192.0.2.9", "198.51.100.25", "[192.0.2.9]", 0, NULL },
	{ { NULL }, "192.0.2.9", "198.51.100.25", "[IPv6:2001:db8::1]", 0, NULL },
	{ { NULL }, "192.0.2.9", "198.51.100.25", "bad..name", 501, "5.5.2" },
	{ { NULL }, "192.0.2.9", "198.51.100.25", "-leading.example", 501, "5.5.2" },
	{ { NULL }, "192.0.2.9", "198.51.100.25", "under_score!", 501, "5.5.2" },
	{ { NULL }, "192.0.2.9", "198.51.100.25", "[300.1.1.1]", 501, "5.5.2" },
	{ { NULL }, "192.0.2.9", "198.51.100.25", "[192.0.2.9", 501, "5.5.2" },
	{ { NULL }, "192.0.2.9", "198.51.100.25", "[IPv6:zz::1]", 501, "5.5.2" },
	{ { NULL }, "192.0.2.9", "198.51.100.25", "name.", 0, NULL },
	{ { NULL }, "192.0.2.9", "198.51.100.25", "mx.example.test", 550, "5.7.1" },
	{ { NULL }, "192.0.2.9", "198.51.100.25", "MX.Example.TEST.", 550, "5.7.1" },
	{ { NULL }, "192.0.2.9", "198.51.100.25", "other.test", 550, "5.7.1" },
	{ { NULL }, "192.0.2.9", "198.51.100.25", "sub.other.test", 0, NULL },
	{ { NULL }, "192.0.2.9", "198.51.100.25", "[198.51.100.25]", 550, "5.7.1" },
	{ { NULL }, "192.0.2.9", "198.51.100.26", "[198.51.100.25]", 0, NULL },
	{ { NULL }, "192.0.2.9", "::ffff:198.51.100.25", "[198.51.100.25]", 550, "5.7.1" },
	{ { NULL }, "2001:db8::9", "2001:db8::25", "[IPv6:2001:DB8::25]", 550, "5.7.1" },
	{ { NULL }, "2001:db8::9", "2001:db8::25", "[IPv6:2001:db8::26]", 0, NULL },
	/* this host's interfaces: loopback is always one */
	{ { NULL }, "192.0.2.9", "198.51.100.25", "[127.0.0.1]", 550, "5.7.1" },
	/* loopback clients are exempt from every check */
	{ { NULL }, "127.0.0.1", "127.0.0.1", "mx.example.test", 0, NULL },
	{ { NULL }, "::1", "::1", "bad..name", 0, NULL },
	{ { "exempt=" }, "127.0.0.1", "127.0.0.1", "mx.example.test", 550, "5.7.1" },
	{ { "exempt=192.0.2.0/24" }, "192.0.2.9", "198.51.100.25", "bad..name", 0, NULL },
	{ { "exempt=192.0.2.0/24" }, "127.0.0.1", "127.0.0.1", "bad..name", 501, "5.5.2" },
	/* reject_non_fqdn */
	{ { "reject_non_fqdn=yes" }, "192.0.2.9", "198.51.100.25", "localhost", 504, "5.5.2" },
	{ { "reject_non_fqdn=yes" }, "192.0.2.9", "198.51.100.25", "name.", 504, "5.5.2" },
	{ { "reject_non_fqdn=yes" }, "192.0.2.9", "198.51.100.25", "a.b", 0, NULL },
	{ { "reject_non_fqdn=yes" }, "192.0.2.9", "198.51.100.25", "[192.0.2.9]", 0, NULL },
	{ { "reject_non_fqdn=yes" }, "192.0.2.9", "198.51.100.25", "bad..name", 501, "5.5.2" },
	{ { "reject_non_fqdn=yes", "reject_invalid=no" }, "192.0.2.9", "198.51.100.25",
	    "bad_name", 504, "5.5.2" },
	/* each check off */
	{ { "reject_invalid=no" }, "192.0.2.9", "198.51.100.25", "bad..name", 0, NULL },
	{ { "reject_own=no" }, "192.0.2.9", "198.51.100.25", "mx.example.test", 0, NULL },
	{ { "reject_own=off" }, "192.0.2.9", "198.51.100.25", "[198.51.100.25]", 0, NULL },
};

/* test_cases - one name, one client, one section */
START_TEST(test_cases)
{
	char *err = NULL, ecode[16];
	void *inst = configure(cases[_i].keys, &err);
	int code;

	ck_assert_msg(inst != NULL, "case %d: %s", _i, err ? err : "");
	code = helo(inst, cases[_i].client, cases[_i].local, cases[_i].name, ecode);
	ck_assert_msg(code == cases[_i].code, "case %d (%s): %d, want %d", _i, cases[_i].name,
	    code, cases[_i].code);
	if (code != 0)
		ck_assert_str_eq(ecode, cases[_i].ecode);
	helo_check_ops.destroy(inst);
}
END_TEST

/* test_texts - the reply texts */
START_TEST(test_texts)
{
	static const char *const keys[] = { "reject_non_fqdn=yes", NULL };
	struct filter_session sess;
	struct filter_ctx ctx;
	struct filter_reply r;
	char *err = NULL;
	void *inst = configure(keys, &err), *priv = NULL;

	ck_assert_ptr_nonnull(inst);
	memset(&sess, 0, sizeof(sess));
	sess.client_addr = "192.0.2.9";
	unit_sockaddr("192.0.2.9", &sess.client_sa);
	unit_sockaddr("198.51.100.25", &sess.local_sa);
	sess.conf = &test_conf;
	memset(&ctx, 0, sizeof(ctx));
	ctx.priv = &priv;
	ctx.sess = &sess;
	ck_assert_int_eq(helo_check_ops.helo(inst, &ctx, "a..b", &r), FILTER_REJECT);
	ck_assert_str_eq(r.text, "Invalid HELO name");
	ck_assert_int_eq(helo_check_ops.helo(inst, &ctx, "ab", &r), FILTER_REJECT);
	ck_assert_str_eq(r.text, "Helo command rejected: need fully-qualified hostname");
	ck_assert_int_eq(helo_check_ops.helo(inst, &ctx, "mx.example.test", &r), FILTER_REJECT);
	ck_assert_str_eq(r.text, "Client claims to be us");
	helo_check_ops.destroy(inst);
}
END_TEST

static const struct {
	const char *keys[2];
	const char *want;
} bad_cases[] = {
	{ { "reject_invalid=maybe" }, "reject_invalid = \"maybe\" at line 2: expected yes or no" },
	{ { "reject_own=" }, "reject_own = \"\" at line 2: expected yes or no" },
	{ { "exempt=10.0.0.0/33" }, "exempt at line 2: \"10.0.0.0/33\" is not an address" },
	{ { "timeout=5" }, "unknown key \"timeout\" at line 2" },
	{ { "reject_helo=yes" }, "unknown key \"reject_helo\" at line 2" },
};

/* test_refused - bad keys and values are refused, naming them */
START_TEST(test_refused)
{
	char *err = NULL;
	void *inst = configure(bad_cases[_i].keys, &err);

	ck_assert_ptr_null(inst);
	ck_assert_ptr_nonnull(err);
	ck_assert_msg(strstr(err, bad_cases[_i].want) != NULL, "%s", err);
	free(err);
}
END_TEST

static Suite *
helo_check_suite(void)
{
	Suite *s = suite_create("helo_check");
	TCase *tc = tcase_create("core");

	tcase_add_loop_test(tc, test_cases, 0, sizeof(cases) / sizeof(cases[0]));
	tcase_add_test(tc, test_texts);
	tcase_add_loop_test(tc, test_refused, 0, sizeof(bad_cases) / sizeof(bad_cases[0]));
	suite_add_tcase(s, tc);
	return s;
}

UNIT_MAIN(helo_check_suite)
