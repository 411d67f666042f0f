/*
 * check_xforward.c - unit tests for the XFORWARD command builder
 * (xforward.c): the attributes an EHLO line offers, xtext, [UNAVAILABLE],
 * the IPv6: prefix, and splitting at XFORWARD_LINE_MAX.
 */
#include "config.h"

#include <check.h>
#include <string.h>

#include "buf.h"
#include "xforward.h"
#include "unit.h"

#define ALL	(XFORWARD_NAME | XFORWARD_ADDR | XFORWARD_PORT | XFORWARD_PROTO | \
		 XFORWARD_HELO | XFORWARD_IDENT | XFORWARD_SOURCE)

static const struct {
	const char *params;
	unsigned attrs;
} attr_cases[] = {
	{ " NAME ADDR PROTO HELO SOURCE PORT IDENT", ALL },
	{ " name addr", XFORWARD_NAME | XFORWARD_ADDR },
	{ "", 0 },
	{ " NAMES ADDRX HELO", XFORWARD_HELO },
	{ "  PORT  ", XFORWARD_PORT },
};

START_TEST(test_attrs)
{
	const char *p = attr_cases[_i].params;

	ck_assert_uint_eq(xforward_attrs(p, strlen(p)), attr_cases[_i].attrs);
}
END_TEST

/* build - the commands for attrs and cl as one string, and their count */
static size_t
build(unsigned attrs, const struct xforward_client *cl, struct buf *out)
{
	buf_init(out);
	return xforward_cmds(attrs, cl, out);
}

START_TEST(test_all_v4)
{
	struct xforward_client cl = { "mx.example.org", "192.0.2.7", 40000, "mx.example.org",
	    true, "abc.1" };
	struct buf b;

	ck_assert_uint_eq(build(ALL, &cl, &b), 1);
	ck_assert_str_eq(b.data, "XFORWARD NAME=mx.example.org ADDR=192.0.2.7 PORT=40000 "
	    "PROTO=ESMTP HELO=mx.example.org IDENT=abc.1 SOURCE=REMOTE\r\n");
	buf_free(&b);
}
END_TEST

START_TEST(test_unknowns_v6_xtext)
{
	struct xforward_client cl = { "unknown", "2001:db8::1", 0, "a b+c=d\x7f", false, NULL };
	struct buf b;

	ck_assert_uint_eq(build(ALL, &cl, &b), 1);
	ck_assert_str_eq(b.data, "XFORWARD NAME=[UNAVAILABLE] ADDR=IPv6:2001:db8::1 "
	    "PORT=[UNAVAILABLE] PROTO=SMTP HELO=a+20b+2Bc+3Dd+7F IDENT=[UNAVAILABLE] "
	    "SOURCE=REMOTE\r\n");
	buf_free(&b);
	cl.helo = NULL;
	cl.addr = "unknown";
	ck_assert_uint_eq(build(XFORWARD_ADDR | XFORWARD_HELO, &cl, &b), 1);
	ck_assert_str_eq(b.data, "XFORWARD ADDR=[UNAVAILABLE] HELO=[UNAVAILABLE]\r\n");
	buf_free(&b);
}
END_TEST

START_TEST(test_only_offered)
{
	struct xforward_client cl = { "h.example", "192.0.2.7", 25, "h", true, "q" };
	struct buf b;

	ck_assert_uint_eq(build(XFORWARD_ADDR | XFORWARD_SOURCE, &cl, &b), 1);
	ck_assert_str_eq(b.data, "XFORWARD ADDR=192.0.2.7 SOURCE=REMOTE\r\n");
	buf_free(&b);
	ck_assert_uint_eq(build(0, &cl, &b), 0);
	ck_assert_ptr_null(b.data);
	buf_free(&b);
}
END_TEST

/* test_split - long values spread over commands of at most XFORWARD_LINE_MAX octets */
START_TEST(test_split)
{
	char name[256], helo[400], huge[600];
	struct xforward_client cl = { name, "192.0.2.7", 25, helo, true, "q" };
	struct buf b;
	const char *p;
	size_t n, lines = 0;

	memset(name, 'n', sizeof(name) - 1);
	name[sizeof(name) - 1] = '\0';
	memset(helo, 'h', sizeof(helo) - 1);
	helo[sizeof(helo) - 1] = '\0';
	n = build(ALL, &cl, &b);
	ck_assert_uint_eq(n, 2);
	for (p = b.data; *p; lines++) {
		const char *eol = strstr(p, "\r\n");

		ck_assert_ptr_nonnull(eol);
		ck_assert_uint_le((size_t)(eol + 2 - p), XFORWARD_LINE_MAX);
		ck_assert(strncmp(p, "XFORWARD ", 9) == 0);
		p = eol + 2;
	}
	ck_assert_uint_eq(lines, n);
	ck_assert_ptr_nonnull(strstr(b.data, " HELO=hhh"));
	buf_free(&b);
	/* a value no command can hold goes as [UNAVAILABLE] */
	memset(huge, 'x', sizeof(huge) - 1);
	huge[sizeof(huge) - 1] = '\0';
	cl.helo = huge;
	ck_assert_uint_eq(build(XFORWARD_HELO, &cl, &b), 1);
	ck_assert_str_eq(b.data, "XFORWARD HELO=[UNAVAILABLE]\r\n");
	buf_free(&b);
}
END_TEST

static Suite *
xforward_suite(void)
{
	Suite *s = suite_create("xforward");
	TCase *tc = tcase_create("core");

	tcase_add_loop_test(tc, test_attrs, 0, sizeof(attr_cases) / sizeof(attr_cases[0]));
	tcase_add_test(tc, test_all_v4);
	tcase_add_test(tc, test_unknowns_v6_xtext);
	tcase_add_test(tc, test_only_offered);
	tcase_add_test(tc, test_split);
	suite_add_tcase(s, tc);
	return s;
}

UNIT_MAIN(xforward_suite)
