/*
 * check_rdns_check.c - unit tests for the "rdns-check" filter
 * (policy/rdns_check.c): each result of the session's reverse lookup
 * against require = fcrdns and require = ptr, the codes (550 5.7.25, 450
 * 4.7.25) and texts, and the section's keys refused.  Lookups over DNS
 * are in tests/integration/test_connstage.py.
 */
#include "config.h"

#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "conf.h"
#include "filter.h"
#include "util.h"
#include "../policy/rdns_check.h"
#include "unit.h"

/* configure - rdns-check with key = value (NULL: no section) */
static void *
configure(const char *key, const char *value, char **err_r)
{
	static struct conf conf;
	struct conf_kv kv = { .key = (char *)key, .value = (char *)value, .line = 4 };
	struct conf_section sec = { .type = (char *)"filter", .name = (char *)"rdns-check",
	    .line = 3, .kv = &kv, .nkv = 1 };

	*err_r = NULL;
	return rdns_check_ops.configure(&conf, key != NULL ? &sec : NULL, err_r);
}

static const struct {
	const char *require;	/* NULL: the default */
	const char *rdns;	/* the session's client_rdns */
	enum filter_verdict v;
	int code;
	const char *ecode;
} cases[] = {
	{ NULL, "verified", FILTER_CONTINUE, 0, NULL },
	{ NULL, "unverified", FILTER_REJECT, 550, "5.7.25" },
	{ NULL, "none", FILTER_REJECT, 550, "5.7.25" },
	{ NULL, "tempfail", FILTER_TEMPFAIL, 450, "4.7.25" },
	{ NULL, "timeout", FILTER_TEMPFAIL, 450, "4.7.25" },
	{ NULL, NULL, FILTER_CONTINUE, 0, NULL },
	{ "fcrdns", "unverified", FILTER_REJECT, 550, "5.7.25" },
	{ "fcrdns", "verified", FILTER_CONTINUE, 0, NULL },
	{ "ptr", "verified", FILTER_CONTINUE, 0, NULL },
	{ "ptr", "unverified", FILTER_CONTINUE, 0, NULL },
	{ "ptr", "none", FILTER_REJECT, 550, "5.7.25" },
	{ "ptr", "tempfail", FILTER_TEMPFAIL, 450, "4.7.25" },
	{ "ptr", "timeout", FILTER_TEMPFAIL, 450, "4.7.25" },
};

/* test_cases - one lookup result against one require */
START_TEST(test_cases)
{
	struct filter_session sess;
	struct filter_ctx ctx;
	struct filter_reply r;
	char *err = NULL, want[128];
	void *inst = configure(cases[_i].require ? "require" : NULL, cases[_i].require, &err);
	void *priv = NULL;
	enum filter_verdict v;

	ck_assert_ptr_nonnull(inst);
	memset(&sess, 0, sizeof(sess));
	sess.client_addr = "192.0.2.9";
	sess.client_name = "unknown";
	sess.client_rdns = cases[_i].rdns;
	memset(&ctx, 0, sizeof(ctx));
	ctx.priv = &priv;
	ctx.sess = &sess;
	memset(&r, 0, sizeof(r));
	v = rdns_check_ops.connect(inst, &ctx, &r);
	ck_assert_int_eq(v, cases[_i].v);
	if (v != FILTER_CONTINUE) {
		ck_assert_int_eq(r.code, cases[_i].code);
		ck_assert_str_eq(r.ecode, cases[_i].ecode);
		snprintf(want, sizeof(want), "Client host rejected: cannot find your %shostname, "
		    "[192.0.2.9]", cases[_i].require && strcmp(cases[_i].require, "ptr") == 0 ?
		    "reverse " : "");
		ck_assert_str_eq(r.text, want);
	}
	rdns_check_ops.destroy(inst);
}
END_TEST

/* test_refused - a bad require or another key */
START_TEST(test_refused)
{
	char *err = NULL;

	ck_assert_ptr_null(configure("require", "name", &err));
	ck_assert_str_eq(err, "require = \"name\" at line 4: expected fcrdns or ptr");
	free(err);
	ck_assert_ptr_null(configure("timeout", "5", &err));
	ck_assert_str_eq(err, "unknown key \"timeout\" at line 4; rdns-check takes require");
	free(err);
}
END_TEST

static Suite *
rdns_check_suite(void)
{
	Suite *s = suite_create("rdns_check");
	TCase *tc = tcase_create("core");

	tcase_add_loop_test(tc, test_cases, 0, sizeof(cases) / sizeof(cases[0]));
	tcase_add_test(tc, test_refused);
	suite_add_tcase(s, tc);
	return s;
}

UNIT_MAIN(rdns_check_suite)
