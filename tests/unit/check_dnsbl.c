/*
 * check_dnsbl.c - unit tests for the dnsbl filter (filters/dnsbl.c): the
 * zone list parser (Postfix's postscreen_dnsbl_sites syntax), the answer
 * filter (127/8 only, the refusal codes, =filter and weights) and the query
 * names (reversed octets, reversed IPv6 nibbles, IPv4-mapped as IPv4), and
 * the section's keys through dnsbl_ops.configure.  Table-driven; no I/O (the
 * lookups are in tests/integration/test_dnsbl.py).
 */
#include "config.h"

#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <netinet/in.h>
#include <arpa/inet.h>

#include "filter.h"
#include "resolver.h"
#include "util.h"
#include "dnsbl.h"
#include "unit.h"

/* ---- the parser ---- */

static const struct {
	const char *spec;
	bool ok;
	size_t nzones, nsites;
	int weight0;		/* the first entry's weight */
	const char *err;	/* part of the error text */
} parse_cases[] = {
	{ "zen.spamhaus.example", true, 1, 1, 1, NULL },
	{ "zen.spamhaus.example*2 bl.example=127.0.0.[2..11]*3 wl.example=127.0.[0..255].2*-2",
	  true, 3, 3, 2, NULL },
	{ " a.test,b.test ,\tc.test*+4 ", true, 3, 3, 1, NULL },
	{ "a.test\n  b.test\r\n", true, 2, 2, 1, NULL },
	{ "l.test=127.0.0.2*1 l.test=127.0.0.3*-3 L.TEST", true, 1, 3, 1, NULL },
	{ "x.test=127.0.0.[2;4..5]", true, 1, 1, 1, NULL },
	{ "x.test*100000", true, 1, 1, 100000, NULL },
	{ "x.test*-100000", true, 1, 1, -100000, NULL },
	{ "_dnswl.x-y.test", true, 1, 1, 1, NULL },
	{ "", true, 0, 0, 0, NULL },
	{ "x.test*", false, 0, 0, 0, "weight" },
	{ "x.test*a", false, 0, 0, 0, "weight" },
	{ "x.test*100001", false, 0, 0, 0, "weight" },
	{ "x.test*2*3", false, 0, 0, 0, "zone" },
	{ "x.test*--1", false, 0, 0, 0, "weight" },
	{ "x.test=127.0.0", false, 0, 0, 0, "filter" },
	{ "x.test=127.0.0.256", false, 0, 0, 0, "filter" },
	{ "x.test=127.0.0.2.", false, 0, 0, 0, "filter" },
	{ "x.test=127.0.0.[5..2]", false, 0, 0, 0, "filter" },
	{ "x.test=127.0.0.[2", false, 0, 0, 0, "filter" },
	{ "x.test=127.0.0.[2;]", false, 0, 0, 0, "filter" },
	{ "x.test=127.0.0.[]", false, 0, 0, 0, "filter" },
	{ "x.test=127.0.0.2..3", false, 0, 0, 0, "filter" },
	{ "x.test=", false, 0, 0, 0, "filter" },
	{ "x.test=127.0.0.%s", false, 0, 0, 0, "filter" },
	{ "=127.0.0.2", false, 0, 0, 0, "zone" },
	{ "*2", false, 0, 0, 0, "zone" },
	{ "a..test", false, 0, 0, 0, "zone" },
	{ ".a.test", false, 0, 0, 0, "zone" },
	{ "a.test.", false, 0, 0, 0, "zone" },
	{ "bad%szone.test", false, 0, 0, 0, "zone" },
	{ "ok.test bad!.test", false, 0, 0, 0, "bad!.test" },
};

START_TEST(test_parse)
{
	struct dnsbl_sites l;
	char *err = NULL;
	bool ok;

	memset(&l, 0, sizeof(l));
	ok = dnsbl_sites_parse(parse_cases[_i].spec, &l, &err);
	ck_assert_msg(ok == parse_cases[_i].ok, "%s: %s", parse_cases[_i].spec, err ? err : "ok");
	if (ok) {
		ck_assert_uint_eq(l.nzones, parse_cases[_i].nzones);
		ck_assert_uint_eq(l.nsites, parse_cases[_i].nsites);
		if (l.nsites > 0)
			ck_assert_int_eq(l.sites[0].weight, parse_cases[_i].weight0);
	} else {
		ck_assert_ptr_nonnull(err);
		ck_assert_msg(strstr(err, parse_cases[_i].err) != NULL, "%s: %s",
		    parse_cases[_i].spec, err);
	}
	free(err);
	dnsbl_sites_free(&l);
}
END_TEST

/* A label of 63 octets is fine, 64 is not; the whole zone at most DNSBL_ZONE_MAX. */
START_TEST(test_parse_lengths)
{
	struct dnsbl_sites l;
	char spec[400], *err = NULL;

	memset(&l, 0, sizeof(l));
	memset(spec, 'a', 63);
	strcpy(spec + 63, ".test");
	ck_assert(dnsbl_sites_parse(spec, &l, &err));
	memset(spec, 'a', 64);
	strcpy(spec + 64, ".test");
	ck_assert(!dnsbl_sites_parse(spec, &l, &err));
	free(err);
	err = NULL;
	/* labels of 62, 62, 63 and dots: 189 octets fit; 62, 62, 62, 1: 190 do not */
	memset(spec, 'b', 189);
	spec[62] = spec[125] = '.';
	spec[189] = '\0';
	ck_assert(dnsbl_sites_parse(spec, &l, &err));
	spec[188] = '.';
	strcpy(spec + 189, "c");
	ck_assert(!dnsbl_sites_parse(spec, &l, &err));
	ck_assert_msg(strstr(err, "at most 189") != NULL, "%s", err);
	free(err);
	ck_assert_uint_eq(l.nsites, 2);
	ck_assert_uint_eq(l.nzones, 2);
	dnsbl_sites_free(&l);
}
END_TEST

/* Zones are shared by their entries, case-insensitively, lower-cased. */
START_TEST(test_parse_zones_shared)
{
	struct dnsbl_sites l;
	char *err = NULL;

	memset(&l, 0, sizeof(l));
	ck_assert(dnsbl_sites_parse("A.Test=127.0.0.2 b.test a.test*-1", &l, &err));
	ck_assert(dnsbl_sites_parse("b.test*5", &l, &err));
	ck_assert_uint_eq(l.nzones, 2);
	ck_assert_uint_eq(l.nsites, 4);
	ck_assert_str_eq(l.zones[0], "a.test");
	ck_assert_str_eq(l.zones[1], "b.test");
	ck_assert_uint_eq(l.sites[0].zone, 0);
	ck_assert_uint_eq(l.sites[1].zone, 1);
	ck_assert_uint_eq(l.sites[2].zone, 0);
	ck_assert_uint_eq(l.sites[3].zone, 1);
	ck_assert(l.sites[0].filtered && !l.sites[1].filtered);
	ck_assert_int_eq(l.sites[2].weight, -1);
	ck_assert_int_eq(l.sites[3].weight, 5);
	dnsbl_sites_free(&l);
}
END_TEST

/* ---- the filter on one answer address ---- */

static const struct {
	const char *site;
	const char *addr;
	bool match;
} match_cases[] = {
	{ "x.test", "127.0.0.2", true },
	{ "x.test", "127.1.2.3", true },
	{ "x.test=127.0.0.2", "127.0.0.2", true },
	{ "x.test=127.0.0.2", "127.0.0.3", false },
	{ "x.test=127.0.0.[2..11]", "127.0.0.2", true },
	{ "x.test=127.0.0.[2..11]", "127.0.0.11", true },
	{ "x.test=127.0.0.[2..11]", "127.0.0.1", false },
	{ "x.test=127.0.0.[2..11]", "127.0.0.12", false },
	{ "x.test=127.0.0.[2..11]", "127.0.1.2", false },
	{ "x.test=127.0.[0..255].2", "127.0.255.2", true },
	{ "x.test=127.0.[0..255].2", "127.0.7.3", false },
	{ "x.test=127.[0..255].[0..255].0", "127.9.9.0", true },
	{ "x.test=127.0.0.[2;4..5]", "127.0.0.2", true },
	{ "x.test=127.0.0.[2;4..5]", "127.0.0.3", false },
	{ "x.test=127.0.0.[2;4..5]", "127.0.0.4", true },
	{ "x.test=127.0.0.[2;4..5]", "127.0.0.5", true },
	{ "x.test=127.0.0.[2;4..5]", "127.0.0.6", false },
	{ "x.test=127.0.0.[0..255]", "127.0.0.0", true },
	{ "x.test=[126;128].0.0.1", "127.0.0.1", false },
	{ "x.test=[126;128].0.0.1", "128.0.0.1", true },
};

START_TEST(test_match)
{
	struct dnsbl_sites l;
	struct in_addr in;
	char *err = NULL;

	memset(&l, 0, sizeof(l));
	ck_assert(dnsbl_sites_parse(match_cases[_i].site, &l, &err));
	ck_assert_int_eq(inet_pton(AF_INET, match_cases[_i].addr, &in), 1);
	ck_assert_msg(dnsbl_site_match(&l.sites[0], (const unsigned char *)&in) ==
	    match_cases[_i].match, "%s vs %s", match_cases[_i].site, match_cases[_i].addr);
	dnsbl_sites_free(&l);
}
END_TEST

static const struct {
	const char *addr;
	enum dnsbl_code code;
} code_cases[] = {
	{ "127.0.0.2", DNSBL_CODE_LISTED },
	{ "127.0.0.1", DNSBL_CODE_LISTED },
	{ "127.255.255.251", DNSBL_CODE_LISTED },
	{ "127.255.255.252", DNSBL_CODE_REFUSED },
	{ "127.255.255.254", DNSBL_CODE_REFUSED },
	{ "127.255.255.255", DNSBL_CODE_REFUSED },
	{ "126.255.255.255", DNSBL_CODE_OUTSIDE },
	{ "128.0.0.2", DNSBL_CODE_OUTSIDE },
	{ "10.0.0.2", DNSBL_CODE_OUTSIDE },
	{ "0.0.0.0", DNSBL_CODE_OUTSIDE },
};

START_TEST(test_code)
{
	struct in_addr in;

	ck_assert_int_eq(inet_pton(AF_INET, code_cases[_i].addr, &in), 1);
	ck_assert_int_eq(dnsbl_code((const unsigned char *)&in), code_cases[_i].code);
}
END_TEST

/* ---- a zone's whole answer ---- */

#define MAXREC	3

static const struct {
	enum resolver_status st;
	const char *addrs[MAXREC];	/* the A records (NULL ends) */
	size_t zone;		/* which zone of ANSWER_SITES answered */
	enum dnsbl_zone_result want;
	const char *hits;	/* '1' per entry of ANSWER_SITES hit */
	const char *bad;
} answer_cases[] = {
#define ANSWER_SITES "bl.test=127.0.0.[2..11]*3 wl.test=127.0.[0..255].2*-2 bl.test*1 any.test"
	{ RESOLVER_OK, { "127.0.0.2" }, 0, DNSBL_ZONE_LISTED, "1010", NULL },
	{ RESOLVER_OK, { "127.0.0.20" }, 0, DNSBL_ZONE_LISTED, "0010", NULL },
	{ RESOLVER_OK, { "127.0.0.20", "127.0.0.4" }, 0, DNSBL_ZONE_LISTED, "1010", NULL },
	{ RESOLVER_OK, { "127.0.5.2" }, 1, DNSBL_ZONE_LISTED, "0100", NULL },
	{ RESOLVER_OK, { "127.0.5.3" }, 1, DNSBL_ZONE_CLEAN, "0000", NULL },
	{ RESOLVER_OK, { "127.0.0.2", "10.1.2.3" }, 0, DNSBL_ZONE_BAD, "0000", "10.1.2.3" },
	{ RESOLVER_OK, { "127.255.255.254" }, 0, DNSBL_ZONE_BAD, "0000", "127.255.255.254" },
	{ RESOLVER_OK, { "127.255.255.252" }, 2, DNSBL_ZONE_BAD, "0000", "127.255.255.252" },
	{ RESOLVER_OK, { "192.0.2.1" }, 2, DNSBL_ZONE_BAD, "0000", "192.0.2.1" },
	{ RESOLVER_OK, { "127.0.0.1" }, 2, DNSBL_ZONE_LISTED, "0001", NULL },
	{ RESOLVER_NXDOMAIN, { NULL }, 0, DNSBL_ZONE_CLEAN, "0000", NULL },
	{ RESOLVER_NODATA, { NULL }, 0, DNSBL_ZONE_CLEAN, "0000", NULL },
	{ RESOLVER_SERVFAIL, { NULL }, 0, DNSBL_ZONE_TEMP, "0000", NULL },
	{ RESOLVER_TIMEOUT, { NULL }, 0, DNSBL_ZONE_TEMP, "0000", NULL },
	{ RESOLVER_ERROR, { NULL }, 0, DNSBL_ZONE_TEMP, "0000", NULL },
};

START_TEST(test_answer)
{
	struct dnsbl_sites l;
	struct resolver_answer a;
	struct in_addr in[MAXREC];
	char *data[MAXREC], *err = NULL, bad[DNSBL_ADDR_BUF] = "";
	int len[MAXREC];
	bool hits[4] = { false };
	size_t i, n = 0;

	memset(&l, 0, sizeof(l));
	ck_assert(dnsbl_sites_parse(ANSWER_SITES, &l, &err));
	ck_assert_uint_eq(l.nsites, 4);
	for (i = 0; i < MAXREC && answer_cases[_i].addrs[i] != NULL; i++, n++) {
		ck_assert_int_eq(inet_pton(AF_INET, answer_cases[_i].addrs[i], &in[i]), 1);
		data[i] = (char *)&in[i];
		len[i] = 4;
	}
	memset(&a, 0, sizeof(a));
	a.status = answer_cases[_i].st;
	a.count = n;
	a.data = data;
	a.len = len;
	ck_assert_int_eq(dnsbl_zone_answer(&l, answer_cases[_i].zone == 2 ? 2 :
	    answer_cases[_i].zone, &a, hits, bad), answer_cases[_i].want);
	for (i = 0; i < 4; i++)
		ck_assert_msg(hits[i] == (answer_cases[_i].hits[i] == '1'), "entry %zu", i);
	if (answer_cases[_i].bad != NULL)
		ck_assert_str_eq(bad, answer_cases[_i].bad);
	dnsbl_sites_free(&l);
}
END_TEST

/* A record that is no A record (a CNAME's rdata, say) is neither listing nor error. */
START_TEST(test_answer_not_a)
{
	struct dnsbl_sites l;
	struct resolver_answer a;
	char rec[] = "\003foo\004test", *data[1] = { rec }, *err = NULL, bad[DNSBL_ADDR_BUF];
	int len[1] = { (int)sizeof(rec) };
	bool hits[1] = { false };

	memset(&l, 0, sizeof(l));
	ck_assert(dnsbl_sites_parse("x.test", &l, &err));
	memset(&a, 0, sizeof(a));
	a.status = RESOLVER_OK;
	a.count = 1;
	a.data = data;
	a.len = len;
	ck_assert_int_eq(dnsbl_zone_answer(&l, 0, &a, hits, bad), DNSBL_ZONE_CLEAN);
	ck_assert(!hits[0]);
	dnsbl_sites_free(&l);
}
END_TEST

/* ---- query names ---- */

static const struct {
	int family;
	const char *addr;
	const char *zone;
	const char *want;	/* NULL: no name */
} qname_cases[] = {
	{ AF_INET, "192.0.2.1", "zen.example", "1.2.0.192.zen.example" },
	{ AF_INET, "127.0.0.2", "bl.test", "2.0.0.127.bl.test" },
	{ AF_INET6, "2001:db8::1", "bl.test",
	  "1.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.8.b.d.0.1.0.0.2.bl.test" },
	{ AF_INET6, "::1", "v6.test",
	  "1.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.v6.test" },
	{ AF_INET6, "2a01:4f8:c0c:abcd::ef", "x.test",
	  "f.e.0.0.0.0.0.0.0.0.0.0.0.0.0.0.d.c.b.a.c.0.c.0.8.f.4.0.1.0.a.2.x.test" },
	/* IPv4-mapped: looked up as IPv4 */
	{ AF_INET6, "::ffff:198.51.100.7", "bl.test", "7.100.51.198.bl.test" },
};

START_TEST(test_qname)
{
	struct sockaddr_storage ss, look;
	char out[DNSBL_QNAME_BUF];

	memset(&ss, 0, sizeof(ss));
	ss.ss_family = (sa_family_t)qname_cases[_i].family;
	if (qname_cases[_i].family == AF_INET)
		ck_assert_int_eq(inet_pton(AF_INET, qname_cases[_i].addr,
		    &((struct sockaddr_in *)&ss)->sin_addr), 1);
	else
		ck_assert_int_eq(inet_pton(AF_INET6, qname_cases[_i].addr,
		    &((struct sockaddr_in6 *)&ss)->sin6_addr), 1);
	ck_assert(dnsbl_client((struct sockaddr *)&ss, &look));
	ck_assert(dnsbl_qname((struct sockaddr *)&look, qname_cases[_i].zone, out, sizeof(out)));
	ck_assert_str_eq(out, qname_cases[_i].want);
}
END_TEST

/* Not IP (a unix socket, no socket at all): nothing to look up. */
START_TEST(test_qname_not_ip)
{
	struct sockaddr_storage ss, look;
	char out[DNSBL_QNAME_BUF];

	memset(&ss, 0, sizeof(ss));
	ck_assert(!dnsbl_client((struct sockaddr *)&ss, &look));
	ss.ss_family = AF_UNIX;
	ck_assert(!dnsbl_client((struct sockaddr *)&ss, &look));
	ck_assert(!dnsbl_qname((struct sockaddr *)&ss, "x.test", out, sizeof(out)));
}
END_TEST

/* The longest zone still takes the IPv6 name; a buffer too small is refused. */
START_TEST(test_qname_lengths)
{
	struct sockaddr_in6 s6;
	char zone[DNSBL_ZONE_MAX + 2], out[DNSBL_QNAME_BUF];

	memset(&s6, 0, sizeof(s6));
	s6.sin6_family = AF_INET6;
	memset(zone, 'z', DNSBL_ZONE_MAX);
	zone[DNSBL_ZONE_MAX] = '\0';
	ck_assert(dnsbl_qname((struct sockaddr *)&s6, zone, out, sizeof(out)));
	ck_assert_uint_eq(strlen(out), 253);
	zone[DNSBL_ZONE_MAX] = 'z';
	zone[DNSBL_ZONE_MAX + 1] = '\0';
	ck_assert(!dnsbl_qname((struct sockaddr *)&s6, zone, out, sizeof(out)));
	ck_assert(!dnsbl_qname((struct sockaddr *)&s6, "x.test", out, 20));
}
END_TEST

/* ---- configuration through the filter's ops ---- */

static const struct {
	const char *key, *value;
	bool ok;
} conf_cases[] = {
	{ "zones", "bl.test*2 wl.test*-1", true },
	{ "zones", "", false },
	{ "zones", "bl.test=1.2.3", false },
	{ "threshold", "0", false },
	{ "threshold", "100001", false },
	{ "reply", "554 %s", false },
	{ "temperror", "tempfail", true },
	{ "temperror", "ignore", true },
	{ "temperror", "reject", false },
	{ "timeout", "5", true },
};

START_TEST(test_configure)
{
	struct conf_kv kv[2];
	struct conf_section sec;
	char *err = NULL;
	void *inst;

	memset(kv, 0, sizeof(kv));
	memset(&sec, 0, sizeof(sec));
	kv[0].key = (char *)"zones";
	kv[0].value = (char *)"bl.test";
	kv[0].line = 2;
	kv[1].key = (char *)conf_cases[_i].key;
	kv[1].value = (char *)conf_cases[_i].value;
	kv[1].line = 3;
	sec.kv = kv;
	sec.nkv = strcmp(conf_cases[_i].key, "zones") == 0 ? 1 : 2;
	if (sec.nkv == 1)
		kv[0] = kv[1];
	inst = dnsbl_ops.configure(NULL, &sec, &err);
	ck_assert_msg((inst != NULL) == conf_cases[_i].ok, "%s = %s: %s", conf_cases[_i].key,
	    conf_cases[_i].value, err ? err : "ok");
	if (inst == NULL)
		ck_assert_msg(strstr(err, "line") != NULL, "%s", err);
	else
		dnsbl_ops.destroy(inst);
	free(err);
	/* No section at all: zones is required. */
	err = NULL;
	ck_assert_ptr_null(dnsbl_ops.configure(NULL, NULL, &err));
	ck_assert_ptr_nonnull(err);
	free(err);
}
END_TEST

static Suite *
dnsbl_suite(void)
{
	Suite *s = suite_create("dnsbl");
	TCase *tc = tcase_create("core");

	tcase_add_loop_test(tc, test_parse, 0, (int)ARRAY_SIZE(parse_cases));
	tcase_add_test(tc, test_parse_lengths);
	tcase_add_test(tc, test_parse_zones_shared);
	tcase_add_loop_test(tc, test_match, 0, (int)ARRAY_SIZE(match_cases));
	tcase_add_loop_test(tc, test_code, 0, (int)ARRAY_SIZE(code_cases));
	tcase_add_loop_test(tc, test_answer, 0, (int)ARRAY_SIZE(answer_cases));
	tcase_add_test(tc, test_answer_not_a);
	tcase_add_loop_test(tc, test_qname, 0, (int)ARRAY_SIZE(qname_cases));
	tcase_add_test(tc, test_qname_not_ip);
	tcase_add_test(tc, test_qname_lengths);
	tcase_add_loop_test(tc, test_configure, 0, (int)ARRAY_SIZE(conf_cases));
	suite_add_tcase(s, tc);
	return s;
}

UNIT_MAIN(dnsbl_suite)
