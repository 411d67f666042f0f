/*
 * check_spf.c - unit tests for the spf filter (filters/spf*.c) against a
 * real unbound (tests/unit/dnstest.c), and the RFC 7208 test suite.
 *
 * The suite (tests/suites/spf/rfc7208-tests.yml, or $SPF_SUITE) is
 * turned into lines by tests/unit/spf_suite.py (/usr/bin/python3 with
 * python3-yaml); each scenario's zone is served by an unbound of its own
 * (names collide between scenarios), and every test goes through
 * spf_check(), the function the filter calls.  It prints
 * "rfc7208: N/203 passed" and the failures, and fails under 195.
 *
 * With SPF_SUITE_RESULTS naming a file, test_rfc7208 also writes there one
 * line per suite test, "SCENARIO<TAB>TEST<TAB>RESULT" (the scenario's
 * description, the test's name, the result word spf_check gave: pass fail
 * softfail neutral none temperror permerror), for
 * tests/integration/test_spf_pyspf.py to compare with pyspf's.
 */
#include "config.h"

#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "conf.h"
#include "resolver.h"
#include "spf.h"
#include "spf_priv.h"
#include "util.h"
#include "dnstest.h"
#include "unit.h"

#define SPF_SUITE_MIN	195

/* ---- the RFC 7208 suite ---- */

/* unescape - spf_suite.py's \xHH, in place */
static void
unescape(char *s)
{
	char *d = s;
	unsigned v;

	while (*s != '\0') {
		if (s[0] == '\\' && s[1] == 'x' && sscanf(s + 2, "%2x", &v) == 1) {
			*d++ = (char)v;
			s += 4;
		} else
			*d++ = *s++;
	}
	*d = '\0';
}

/* split - the TAB-separated fields of line, unescaped; how many */
static int
split(char *line, char **f, int max)
{
	int n = 0;
	char *p = line;

	line[strcspn(line, "\n")] = '\0';
	while (n < max) {
		f[n] = p;
		p = strchr(p, '\t');
		unescape(f[n++]);
		if (p == NULL)
			break;
		*p++ = '\0';
	}
	return n;
}

struct suite_run {
	struct buf data;		/* the scenario's server: lines */
	struct buf servfail;		/* its TIMEOUT names */
	struct dnstest dns;
	bool dns_up;
	int total, passed;
	struct buf failures;
	char scenario[512];		/* its description */
	FILE *results;			/* $SPF_SUITE_RESULTS, or NULL */
};

/* suite_dns - the scenario's server, started at its first test */
static bool
suite_dns(struct suite_run *sr)
{
	struct dnstest_zones z = { 0 };

	if (sr->dns_up)
		return true;
	buf_putc(&sr->data, '\0');
	buf_putc(&sr->servfail, '\0');
	z.data = sr->data.data;
	z.servfail = sr->servfail.data;
	if (!dnstest_start(&sr->dns, &z)) {
		fprintf(stderr, "rfc7208: unbound would not start (see %s)\n", sr->dns.dir);
		return false;
	}
	sr->dns_up = true;
	return true;
}

/* suite_test - one test: spf_check against the scenario's server */
static void
suite_test(struct suite_run *sr, char **f)
{
	struct conf conf;
	struct spf_request req;
	struct spf_outcome out;
	const char *got;
	char results[128];
	bool ok;

	sr->total++;
	memset(&conf, 0, sizeof(conf));
	conf.resolver = sr->dns.servers;
	conf.resolver_timeout = 2;
	conf.hostname = (char *)"receiver.test";
	memset(&req, 0, sizeof(req));
	req.conf = &conf;
	req.helo = f[2];
	req.client_addr = f[3];
	req.mail_from = f[4];
	spf_check(&req, &out);
	got = spf_result_name(out.result);
	if (sr->results != NULL)
		fprintf(sr->results, "%s\t%s\t%s\n", sr->scenario, f[1], got);
	snprintf(results, sizeof(results), ",%s,", f[5]);
	{
		char want[32];

		snprintf(want, sizeof(want), ",%s,", got);
		ok = strstr(results, want) != NULL;
	}
	/*
	 * The explanation: "DEFAULT" is the verifier's own, so the record's
	 * must not have been taken; else the text, but for case, which means
	 * nothing in the DNS names and %-escapes (RFC 3986 §6.2.2.1) it holds.
	 */
	if (ok && f[6][0] != '\0' && out.result == SPF_FAIL)
		ok = strcmp(f[6], "DEFAULT") == 0 ? out.explanation[0] == '\0' :
		    str_casecmp(out.explanation, f[6]) == 0;
	if (ok) {
		sr->passed++;
		return;
	}
	buf_printf(&sr->failures, "  %s: got %s (%s)%s%s, want %s%s%s\n", f[1], got, out.why,
	    out.explanation[0] ? " exp=" : "", out.explanation, f[5],
	    f[6][0] ? " exp=" : "", f[6]);
}

/* suite_end - a scenario is over: its server goes */
static void
suite_end(struct suite_run *sr)
{
	if (sr->dns_up)
		dnstest_stop(&sr->dns);
	sr->dns_up = false;
	/* a new server may get the old port: no cache may survive */
	resolver_sync_thread_end();
	buf_reset(&sr->data);
	buf_reset(&sr->servfail);
}

/* suite_path - where the YAML is */
static const char *
suite_path(char *buf, size_t size)
{
	const char *srcdir = getenv("srcdir") ? getenv("srcdir") : ".";

	if (getenv("SPF_SUITE") != NULL)
		return getenv("SPF_SUITE");
	snprintf(buf, size, "%s/tests/suites/spf/rfc7208-tests.yml", srcdir);
	return buf;
}

START_TEST(test_rfc7208)
{
	const char *srcdir = getenv("srcdir") ? getenv("srcdir") : ".";
	char path[512], cmd[1200], line[8192], *f[8];
	struct suite_run sr;
	FILE *p;
	int n;

	memset(&sr, 0, sizeof(sr));
	buf_init(&sr.data);
	buf_init(&sr.servfail);
	buf_init(&sr.failures);
	suite_path(path, sizeof(path));
	ck_assert_msg(access(path, R_OK) == 0, "rfc7208: no suite at %s", path);
	snprintf(cmd, sizeof(cmd), "/usr/bin/python3 '%s/tests/unit/spf_suite.py' '%s'", srcdir,
	    path);
	if (getenv("SPF_SUITE_RESULTS") != NULL)
		ck_assert_msg((sr.results = fopen(getenv("SPF_SUITE_RESULTS"), "w")) != NULL,
		    "rfc7208: cannot write %s", getenv("SPF_SUITE_RESULTS"));
	ck_assert_ptr_nonnull(p = popen(cmd, "r"));
	while (fgets(line, sizeof(line), p) != NULL) {
		n = split(line, f, 8);
		if (strcmp(f[0], "data") == 0 && n == 2)
			buf_printf(&sr.data, "  %s\n", f[1]);
		else if (strcmp(f[0], "servfail") == 0 && n == 2)
			buf_printf(&sr.servfail, "%s ", f[1]);
		else if (strcmp(f[0], "scenario") == 0) {
			buf_puts(&sr.data, "  local-zone: \".\" static\n");
			snprintf(sr.scenario, sizeof(sr.scenario), "%s", n == 2 ? f[1] : "");
		} else if (strcmp(f[0], "test") == 0 && n == 7) {
			ck_assert(suite_dns(&sr));
			suite_test(&sr, f);
		} else if (strcmp(f[0], "end") == 0)
			suite_end(&sr);
	}
	ck_assert_int_eq(pclose(p), 0);
	if (sr.results != NULL)
		ck_assert_msg(fclose(sr.results) == 0, "rfc7208: cannot write %s",
		    getenv("SPF_SUITE_RESULTS"));
	printf("rfc7208: %d/%d passed\n", sr.passed, sr.total);
	if (sr.failures.len > 0)
		printf("rfc7208 failures:\n%.*s", (int)sr.failures.len, sr.failures.data);
	fflush(stdout);
	ck_assert_int_eq(sr.total, 203);
	ck_assert_msg(sr.passed >= SPF_SUITE_MIN, "rfc7208: %d/%d passed, fewer than %d",
	    sr.passed, sr.total, SPF_SUITE_MIN);
	buf_free(&sr.data);
	buf_free(&sr.servfail);
	buf_free(&sr.failures);
}
END_TEST


/* ---- the filter's own cases, against one server ---- */

static struct dnstest unit_dns;

/* unit_data - the zones of the cases below */
static void
unit_data(struct buf *b)
{
	int i;

	buf_puts(b, "  local-zone: \"unit.test.\" static\n");
#define TXT(name, rec)	buf_printf(b, "  local-data: '%s.unit.test. 300 IN TXT \"%s\"'\n", name, rec)
	TXT("pass", "v=spf1 ip4:192.0.2.0/24 -all");
	TXT("soft", "v=spf1 ip4:192.0.2.1 ~all");
	TXT("syntax", "v=spf1 ip4:192.0.2.0/24 foo:bar -all");
	TXT("notop", "v=spf1 a:example -all");
	TXT("badcidr", "v=spf1 ip4:192.0.2.0/33 -all");
	TXT("twice", "v=spf1 redirect=pass.unit.test redirect=pass.unit.test");
	TXT("loop", "v=spf1 include:loop2.unit.test -all");
	TXT("loop2", "v=spf1 include:loop.unit.test -all");
	TXT("void", "v=spf1 a:n1.unit.test a:n2.unit.test a:n3.unit.test ip4:192.0.2.0/24 -all");
	TXT("void2", "v=spf1 a:n1.unit.test a:n2.unit.test ip4:192.0.2.0/24 -all");
	TXT("stall", "v=spf1 a:x.drop.test ip4:192.0.2.0/24 -all");
	TXT("servfail", "v=spf1 include:x.servfail.test -all");
	TXT("two", "v=spf1 -all");
	TXT("two", "v=spf1 +all");
	TXT("exp", "v=spf1 -all exp=why.unit.test");
	TXT("why", "%{i} is not one of %{d}\\039s  senders");
	TXT("mx", "v=spf1 a -all");
	buf_puts(b, "  local-data: 'mx.unit.test. 300 IN A 192.0.2.25'\n");
	/* an include bomb: 11 includes, each one DNS term */
	buf_puts(b, "  local-data: 'bomb.unit.test. 300 IN TXT \"v=spf1");
	for (i = 0; i < 11; i++)
		buf_printf(b, " include:b%d.unit.test", i);
	buf_puts(b, " -all\"'\n");
	for (i = 0; i < 11; i++)
		buf_printf(b, "  local-data: 'b%d.unit.test. 300 IN TXT \"v=spf1 ip4:203.0.113.%d\"'\n",
		    i, i);
	/* a record of three strings, over 512 octets, the match at its end */
	buf_puts(b, "  local-data: 'long.unit.test. 300 IN TXT \"v=spf1");
	for (i = 0; i < 40; i++) {
		if (i > 0 && i % 12 == 0)
			buf_puts(b, "\" \"");
		buf_printf(b, " ip4:198.51.100.%d", i + 100);
	}
	buf_puts(b, " ip4:192.0.2.7 -all\"'\n");
#undef TXT
}

struct unit_case {
	const char *client, *helo, *from;
	enum spf_result result;
	const char *why;	/* a part of out.why, or NULL */
};

static const struct unit_case unit_cases[] = {
	{ "192.0.2.5", "h.unit.test", "a@pass.unit.test", SPF_PASS, NULL },
	{ "198.51.100.1", "h.unit.test", "a@pass.unit.test", SPF_FAIL, NULL },
	{ "::ffff:192.0.2.5", "h.unit.test", "a@pass.unit.test", SPF_PASS, NULL },
	{ "2001:db8::1", "h.unit.test", "a@pass.unit.test", SPF_FAIL, NULL },
	{ "198.51.100.1", "h.unit.test", "a@soft.unit.test", SPF_SOFTFAIL, NULL },
	{ "192.0.2.5", "h.unit.test", "a@nothing.unit.test", SPF_NONE, NULL },
	{ "192.0.2.5", "h.unit.test", "a@syntax.unit.test", SPF_PERMERROR, "foo:bar" },
	{ "192.0.2.5", "h.unit.test", "a@notop.unit.test", SPF_PERMERROR, "a:example" },
	{ "192.0.2.5", "h.unit.test", "a@badcidr.unit.test", SPF_PERMERROR, "/33" },
	{ "192.0.2.5", "h.unit.test", "a@twice.unit.test", SPF_PERMERROR, "more than once" },
	{ "192.0.2.5", "h.unit.test", "a@loop.unit.test", SPF_PERMERROR, "DNS lookup" },
	{ "192.0.2.5", "h.unit.test", "a@bomb.unit.test", SPF_PERMERROR, "DNS lookup" },
	{ "192.0.2.5", "h.unit.test", "a@void.unit.test", SPF_PERMERROR, "void lookup" },
	{ "192.0.2.5", "h.unit.test", "a@void2.unit.test", SPF_PASS, NULL },
	{ "192.0.2.5", "h.unit.test", "a@stall.unit.test", SPF_TEMPERROR, "timeout" },
	{ "192.0.2.5", "h.unit.test", "a@servfail.unit.test", SPF_TEMPERROR, "servfail" },
	{ "192.0.2.5", "h.unit.test", "a@two.unit.test", SPF_PERMERROR, "several" },
	{ "192.0.2.7", "h.unit.test", "a@long.unit.test", SPF_PASS, NULL },
	{ "192.0.2.8", "h.unit.test", "a@long.unit.test", SPF_FAIL, NULL },
	/* the null sender: the HELO identity */
	{ "192.0.2.25", "mx.unit.test", "", SPF_PASS, NULL },
	{ "192.0.2.26", "mx.unit.test", "", SPF_FAIL, NULL },
	{ "192.0.2.26", "[192.0.2.26]", "", SPF_NONE, "not a usable" },
	{ "192.0.2.26", "nodots", "", SPF_NONE, "not a usable" },
};

/* unit_check - spf_check against the unit server with timeout seconds */
static void
unit_check(const char *servers, const char *client, const char *helo, const char *from,
    struct spf_outcome *out)
{
	struct conf conf;
	struct spf_request req = { &conf, client, helo, from };

	memset(&conf, 0, sizeof(conf));
	conf.resolver = (char *)servers;
	conf.resolver_timeout = 1;
	conf.hostname = (char *)"mx.receiver.test";
	spf_check(&req, out);
}

/* test_cases - each result, and every bad input, bounded in time */
START_TEST(test_cases)
{
	const struct unit_case *c = &unit_cases[_i];
	struct spf_outcome out;
	unsigned long long start = now_ms();

	unit_check(unit_dns.servers, c->client, c->helo, c->from, &out);
	ck_assert_msg(out.result == c->result, "%s from %s: %s (%s), want %s", c->from, c->client,
	    spf_result_name(out.result), out.why, spf_result_name(c->result));
	if (c->why != NULL)
		ck_assert_msg(strstr(out.why, c->why) != NULL, "%s: why \"%s\"", c->from, out.why);
	/* one stalled query at most: resolver_timeout, not one per term */
	ck_assert_msg(now_ms() - start < 1800, "%s took %llu ms", c->from, now_ms() - start);
	ck_assert(out.helo_identity == (c->from[0] == '\0'));
}
END_TEST

/* test_explanation - exp= text expanded, spaces kept, shown only on fail */
START_TEST(test_explanation)
{
	struct spf_outcome out;

	unit_check(unit_dns.servers, "192.0.2.9", "h.unit.test", "u@exp.unit.test", &out);
	ck_assert_int_eq(out.result, SPF_FAIL);
	ck_assert_str_eq(out.explanation, "192.0.2.9 is not one of exp.unit.test's  senders");
	ck_assert_str_eq(out.domain, "exp.unit.test");
	ck_assert_str_eq(out.sender, "u@exp.unit.test");
}
END_TEST

/* test_server_gone - the DNS server disappears between two checks: temperror, bounded */
START_TEST(test_server_gone)
{
	struct dnstest d;
	struct dnstest_zones z = {
		.data = "  local-zone: \"gone.test.\" static\n"
		    "  local-data: 'a.gone.test. 300 IN TXT \"v=spf1 ip4:192.0.2.0/24 -all\"'\n"
		    "  local-data: 'b.gone.test. 300 IN TXT \"v=spf1 ip4:192.0.2.0/24 -all\"'\n",
	};
	struct spf_outcome out;
	unsigned long long start;

	ck_assert(dnstest_start(&d, &z));
	unit_check(d.servers, "192.0.2.1", "h.gone.test", "x@a.gone.test", &out);
	ck_assert_int_eq(out.result, SPF_PASS);
	dnstest_kill(&d);
	start = now_ms();
	unit_check(d.servers, "192.0.2.1", "h.gone.test", "x@b.gone.test", &out);
	ck_assert_msg(out.result == SPF_TEMPERROR, "%s", spf_result_name(out.result));
	ck_assert_uint_lt(now_ms() - start, 1800);
	dnstest_stop(&d);
}
END_TEST

/* test_syntax - the strict pass alone, table-driven */
static const struct {
	const char *record;
	bool ok;
} syntax_cases[] = {
	{ "v=spf1", true },
	{ "v=spf1 -all ", true },
	{ "v=spf1  a  mx/24//64 ptr ip4:192.0.2.0/24 ip6:2001:db8::/32 ~all", true },
	{ "v=spf1 a:%{d}.x mx:%{ir}.%{v}._spf.%{d2} exists:%{l1r-}.example.com", true },
	{ "v=spf1 include:example.com redirect=example.net exp=x.example.org", true },
	{ "v=spf1 moo.cow-far_out=man:dog/cat -all", true },
	{ "v=spf1 ip4:0.0.0.0/0 a/0 a//0", true },
	{ "v=spf1 a:foo:bar/baz.example.com", true },
	{ "v=spf1 foo", false },
	{ "v=spf1 a:example", false },
	{ "v=spf1 a:example.123", false },
	{ "v=spf1 ip4:192.0.2.01", false },
	{ "v=spf1 ip4:192.0.2.0/33", false },
	{ "v=spf1 ip6:::1/129", false },
	{ "v=spf1 a/01", false },
	{ "v=spf1 ptr/0", false },
	{ "v=spf1 exists:%{x}.example.com", false },
	{ "v=spf1 exists:%{c}.example.com", false },
	{ "v=spf1 exists:%(ir).example.com", false },
	/* §7.3: a DIGIT transformer is nonzero (fuzz_spf_record; libspf2 refuses it too) */
	{ "v=spf1 exists:%{l0r-}.example.com", false },
	{ "v=spf1 exists:%{d00}.example.com", false },
	{ "v=spf1 exists:%{d01r}.example.com", true },
	{ "v=spf1 -all\r", false },
	{ "v=spf1 a\tmx", false },
	{ "v=spf1 exp=a.example.com exp=b.example.com", false },
	{ "v=spf1 =foo", false },
	{ "v=spf1 \x80" "all", false },
};

START_TEST(test_syntax)
{
	char why[128] = "";

	ck_assert_msg(spf_syntax_record(syntax_cases[_i].record, why, sizeof(why)) ==
	    syntax_cases[_i].ok, "%s: %s", syntax_cases[_i].record, why);
	ck_assert(spf_syntax_explain("%{i} is not one of %{d}'s senders, see %{r} at %{t}"));
	ck_assert(!spf_syntax_explain("50% off"));
}
END_TEST

/*
 * test_rewrite_size - the worst term, "a/0" (4 octets with its space),
 * rewrites to 23 ("a//0" for an IPv6 client): SPF_REWRITE_SIZE holds it (fuzz_spf_record: twice the
 * record's length did not, and spf_dns.c's fatal() took the daemon down).
 */
START_TEST(test_rewrite_size)
{
	const char *term = _i != 0 ? " a//0" : " a/0";	/* "/0" for the client's family */
	char record[6 + 5 * 60 + 1], why[128] = "", *out;
	size_t i, len, size;

	memcpy(record, "v=spf1", 7);
	for (i = 0; i < 60; i++)
		memcpy(record + 6 + strlen(term) * i, term, strlen(term) + 1);
	len = strlen(record);
	ck_assert_msg(spf_syntax_record(record, why, sizeof(why)), "%s", why);
	size = SPF_REWRITE_SIZE(len);
	out = xmalloc(size);
	ck_assert(spf_syntax_rewrite(record, _i != 0, out, size));
	ck_assert_uint_eq(strlen(out), 6 + 60 * strlen(" a:%{d}." SPF_CIDR0_LABEL));
	ck_assert(!spf_syntax_rewrite(record, _i != 0, out, len * 2 + 64));
	free(out);
}
END_TEST

/* test_rewrite_macro_r - "R" is "r" (§7.1's ABNF is case-insensitive), which libspf2 alone refuses */
START_TEST(test_rewrite_macro_r)
{
	char out[256], why[128] = "";
	const char *record = "v=spf1 a:%{iR}.%%{iR}.%{d2R-}.example.com exp=%{L1R}.x.test";

	ck_assert_msg(spf_syntax_record(record, why, sizeof(why)), "%s", why);
	ck_assert(spf_syntax_rewrite(record, false, out, sizeof(out)));
	ck_assert_str_eq(out, "v=spf1 a:%{ir}.%%{iR}.%{d2r-}.example.com exp=%{L1r}.x.test");
}
END_TEST

/* a [filter spf] section from "key=value" words */
static struct conf_section *
unit_section(const char *const *kv, size_t n)
{
	static struct conf_kv kvs[8];
	static struct conf_section sec;
	size_t i;

	ck_assert_uint_le(n, 8);
	for (i = 0; i < n; i++) {
		const char *eq = strchr(kv[i], '=');

		free(kvs[i].key);
		free(kvs[i].value);
		kvs[i].key = xstrndup(kv[i], (size_t)(eq - kv[i]));
		kvs[i].value = xstrdup(eq + 1);
		kvs[i].line = (int)i + 10;
	}
	sec.type = (char *)"filter";
	sec.name = (char *)"spf";
	sec.kv = kvs;
	sec.nkv = n;
	return &sec;
}

/* test_configure - every key works; unknown keys and bad values named with their line */
START_TEST(test_configure)
{
	static const char *const good[] = { "fail=tag", "softfail=reject", "neutral=quarantine",
		"temperror=tag", "permerror=tempfail", "check_helo=no", "received_spf=yes",
		"timeout=20" };
	static const char *const unknown[] = { "pass=tag", "fial=reject" };
	static const char *const badval[] = { "fail=bounce" };
	static const char *const badbool[] = { "received_spf=maybe" };
	struct conf conf;
	char *err = NULL;
	void *inst;

	memset(&conf, 0, sizeof(conf));
	ck_assert_ptr_nonnull(inst = spf_ops.configure(&conf, NULL, &err));
	spf_ops.destroy(inst);
	ck_assert_ptr_nonnull(inst = spf_ops.configure(&conf, unit_section(good, 8), &err));
	spf_ops.destroy(inst);
	ck_assert_ptr_null(spf_ops.configure(&conf, unit_section(unknown, 2), &err));
	ck_assert_msg(strstr(err, "\"fial\"") != NULL && strstr(err, "line 11") != NULL, "%s", err);
	free(err);
	err = NULL;
	ck_assert_ptr_null(spf_ops.configure(&conf, unit_section(badval, 1), &err));
	ck_assert_msg(strstr(err, "bounce") != NULL && strstr(err, "line 10") != NULL, "%s", err);
	free(err);
	err = NULL;
	ck_assert_ptr_null(spf_ops.configure(&conf, unit_section(badbool, 1), &err));
	ck_assert_msg(strstr(err, "maybe") != NULL, "%s", err);
	free(err);
}
END_TEST

static Suite *
spf_suite(void)
{
	Suite *s = suite_create("spf");
	TCase *tc = tcase_create("core");
	TCase *rfc = tcase_create("rfc7208");

	tcase_set_timeout(tc, 30);
	tcase_add_loop_test(tc, test_cases, 0, sizeof(unit_cases) / sizeof(unit_cases[0]));
	tcase_add_test(tc, test_explanation);
	tcase_add_test(tc, test_server_gone);
	tcase_add_loop_test(tc, test_syntax, 0, sizeof(syntax_cases) / sizeof(syntax_cases[0]));
	tcase_add_loop_test(tc, test_rewrite_size, 0, 2);
	tcase_add_test(tc, test_rewrite_macro_r);
	tcase_add_test(tc, test_configure);
	suite_add_tcase(s, tc);
	tcase_set_timeout(rfc, 120);
	tcase_add_test(rfc, test_rfc7208);
	suite_add_tcase(s, rfc);
	return s;
}

int
main(void)
{
	struct buf data;
	struct dnstest_zones z = { .stall = "drop.test", .servfail = "servfail.test" };
	int rc;

	buf_init(&data);
	unit_data(&data);
	buf_putc(&data, '\0');
	z.data = data.data;
	if (!dnstest_start(&unit_dns, &z)) {
		fprintf(stderr, "check_spf: unbound would not start (see %s)\n", unit_dns.dir);
		dnstest_stop(&unit_dns);
		buf_free(&data);
		return EXIT_FAILURE;
	}
	rc = unit_run(spf_suite());
	dnstest_stop(&unit_dns);
	buf_free(&data);
	return rc;
}
