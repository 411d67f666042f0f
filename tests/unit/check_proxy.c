/*
 * check_proxy.c - unit tests for the PROXY protocol header parser and the
 * proxy_trusted check (proxy.c, cidr.c): v1 and v2 headers good and bad, each fed
 * whole and one octet more at a time, and networks IPv4, IPv6 and mapped.
 */
#include "config.h"

#include <arpa/inet.h>
#include <check.h>
#include <netinet/in.h>
#include <string.h>

#include "proxy.h"
#include "util.h"
#include "unit.h"

#define SIG	"\r\n\r\n\0\r\nQUIT\n"
#define V2(rest)	SIG rest
#define V2_TCP4	V2("\x21\x11\x00\x0c" "\xc0\x00\x02\x01" "\x7f\x00\x00\x01" "\x30\x39" "\x00\x19")

static const struct pcase {
	const char *in;
	size_t len;		/* 0: strlen(in) */
	enum proxy_status st;
	size_t consumed;	/* with OK */
	const char *kind;	/* with OK */
	const char *src;	/* with OK and addresses */
	unsigned sport;
	const char *dst;
	unsigned dport;
	const char *reason;	/* with BAD: a substring */
} cases[] = {
	{ "PROXY TCP4 192.0.2.1 198.51.100.2 12345 25\r\nEHLO x\r\n", 0, PROXY_OK, 44, "TCP4",
	  "192.0.2.1", 12345, "198.51.100.2", 25, NULL },
	{ "PROXY TCP6 2001:db8::1 ::1 65535 0\r\n", 0, PROXY_OK, 36, "TCP6", "2001:db8::1", 65535,
	  "::1", 0, NULL },
	{ "PROXY UNKNOWN\r\n", 0, PROXY_OK, 15, "UNKNOWN", NULL, 0, NULL, 0, NULL },
	{ "PROXY UNKNOWN 1.2.3.4 x y z\r\nQUIT\r\n", 0, PROXY_OK, 29, "UNKNOWN", NULL, 0, NULL, 0,
	  NULL },
	{ "PROXY TCP4 192.0.2.1 198.51.100.2 12345", 0, PROXY_MORE, 0, NULL, NULL, 0, NULL, 0, NULL },
	{ "PROX", 0, PROXY_MORE, 0, NULL, NULL, 0, NULL, 0, NULL },
	{ "", 0, PROXY_MORE, 0, NULL, NULL, 0, NULL, 0, NULL },
	{ "EHLO client.example\r\n", 0, PROXY_BAD, 0, NULL, NULL, 0, NULL, 0, "no PROXY header" },
	{ "PROXY TCP4 192.0.2.1 198.51.100.2 12345 25\n", 0, PROXY_BAD, 0, NULL, NULL, 0, NULL, 0,
	  "bare LF" },
	{ "PROXY TCP4 2001:db8::1 ::1 1 2\r\n", 0, PROXY_BAD, 0, NULL, NULL, 0, NULL, 0,
	  "family does not match" },
	{ "PROXY TCP6 192.0.2.1 192.0.2.2 1 2\r\n", 0, PROXY_BAD, 0, NULL, NULL, 0, NULL, 0,
	  "family does not match" },
	{ "PROXY TCP4 192.0.2.1 198.51.100.2 012 25\r\n", 0, PROXY_BAD, 0, NULL, NULL, 0, NULL, 0,
	  "bad port" },
	{ "PROXY TCP4 192.0.2.1 198.51.100.2 65536 25\r\n", 0, PROXY_BAD, 0, NULL, NULL, 0, NULL, 0,
	  "bad port" },
	{ "PROXY TCP4 192.0.2.1  198.51.100.2 1 25\r\n", 0, PROXY_BAD, 0, NULL, NULL, 0, NULL, 0,
	  "single spaces" },
	{ "PROXY TCP4 192.0.2.1 198.51.100.2 1 25 \r\n", 0, PROXY_BAD, 0, NULL, NULL, 0, NULL, 0,
	  "single spaces" },
	{ "PROXY UDP4 192.0.2.1 198.51.100.2 1 25\r\n", 0, PROXY_BAD, 0, NULL, NULL, 0, NULL, 0,
	  "not TCP4" },
	{ "PROXY TCP4 192.0.2.256 198.51.100.2 1 25\r\n", 0, PROXY_BAD, 0, NULL, NULL, 0, NULL, 0,
	  "bad address" },
	{ "PROXY TCP4 1.2.3.4\r5.6.7.8 1 2\r\n", 0, PROXY_BAD, 0, NULL, NULL, 0, NULL, 0, "bare CR" },
	{ "PROXY UNKNOWN \x01\r\n", 0, PROXY_BAD, 0, NULL, NULL, 0, NULL, 0, "control" },
	/* 106 octets and CRLF: one too many */
	{ "PROXY UNKNOWN xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx"
	  "xxxxxxxxxxxxxxxxxxxxxxxxxx\r\n", 0, PROXY_BAD, 0, NULL, NULL, 0, NULL, 0, "longer than 107" },
	/* 105 octets and CRLF: the longest */
	{ "PROXY UNKNOWN xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx"
	  "xxxxxxxxxxxxxxxxxxxxxxxxx\r\n", 0, PROXY_OK, 107, "UNKNOWN", NULL, 0, NULL, 0, NULL },
	{ V2_TCP4 "EHLO", 28 + 4, PROXY_OK, 28, "TCP4", "192.0.2.1", 12345, "127.0.0.1", 25, NULL },
	{ V2("\x21\x21\x00\x24" "\x20\x01\x0d\xb8\0\0\0\0\0\0\0\0\0\0\0\x07"
	  "\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\x01" "\x01\x00" "\x00\x19"), 52, PROXY_OK, 52, "TCP6",
	  "2001:db8::7", 256, "::1", 25, NULL },
	/* TLVs after the addresses are skipped */
	{ V2("\x21\x11\x00\x10" "\xc0\x00\x02\x01" "\x7f\x00\x00\x01" "\x30\x39" "\x00\x19"
	  "\x04\x00\x01\x00"), 32, PROXY_OK, 32, "TCP4", "192.0.2.1", 12345, "127.0.0.1", 25, NULL },
	{ V2("\x20\x00\x00\x00"), 16, PROXY_OK, 16, "LOCAL", NULL, 0, NULL, 0, NULL },
	{ V2("\x20\x11\x00\x0c" "\xc0\x00\x02\x01" "\x7f\x00\x00\x01" "\x30\x39" "\x00\x19"), 28,
	  PROXY_OK, 28, "LOCAL", NULL, 0, NULL, 0, NULL },
	{ V2("\x21\x00\x00\x00"), 16, PROXY_OK, 16, "UNSPEC", NULL, 0, NULL, 0, NULL },
	{ V2("\x21\x31\x00\x00"), 16, PROXY_BAD, 0, NULL, NULL, 0, NULL, 0, "too short" },
	{ V2_TCP4, 27, PROXY_MORE, 0, NULL, NULL, 0, NULL, 0, NULL },
	{ SIG, 11, PROXY_MORE, 0, NULL, NULL, 0, NULL, 0, NULL },
	{ "\r\n\r\nQUIT", 0, PROXY_BAD, 0, NULL, NULL, 0, NULL, 0, "bad v2 signature" },
	{ V2("\x11\x11\x00\x0c"), 16, PROXY_BAD, 0, NULL, NULL, 0, NULL, 0, "version" },
	{ V2("\x22\x11\x00\x0c"), 16, PROXY_BAD, 0, NULL, NULL, 0, NULL, 0, "command" },
	{ V2("\x21\x11\xff\xff"), 16, PROXY_BAD, 0, NULL, NULL, 0, NULL, 0, "length over" },
	{ V2("\x21\x11\x00\x08" "\xc0\x00\x02\x01" "\x7f\x00\x00\x01"), 24, PROXY_BAD, 0, NULL, NULL,
	  0, NULL, 0, "too short" },
	{ V2("\x21\x21\x00\x0c" "\xc0\x00\x02\x01" "\x7f\x00\x00\x01" "\x30\x39" "\x00\x19"), 28,
	  PROXY_BAD, 0, NULL, NULL, 0, NULL, 0, "too short" },
	{ V2("\x21\x41\x00\x00"), 16, PROXY_BAD, 0, NULL, NULL, 0, NULL, 0, "unknown address family" },
	{ V2("\x21\x12\x00\x0c" "\xc0\x00\x02\x01" "\x7f\x00\x00\x01" "\x30\x39" "\x00\x19"), 28,
	  PROXY_BAD, 0, NULL, NULL, 0, NULL, 0, "not STREAM" },
	{ V2("\x21\x13\x00\x0c" "\xc0\x00\x02\x01" "\x7f\x00\x00\x01" "\x30\x39" "\x00\x19"), 28,
	  PROXY_BAD, 0, NULL, NULL, 0, NULL, 0, "unknown transport" },
};

/* check_addr - ss holds text and port */
static void
check_addr(const struct sockaddr_storage *ss, const char *text, unsigned port)
{
	char buf[INET6_ADDRSTRLEN];

	ck_assert(sockaddr_text((const struct sockaddr *)ss, buf, sizeof(buf)));
	ck_assert_str_eq(buf, text);
	ck_assert_uint_eq(sockaddr_port((const struct sockaddr *)ss), port);
}

START_TEST(test_parse)
{
	const struct pcase *c = &cases[_i];
	size_t len = c->len ? c->len : strlen(c->in), i;
	const unsigned char *p = (const unsigned char *)c->in;
	struct proxy_result r, part;
	enum proxy_status st = proxy_parse(p, len, &r), pst;

	ck_assert_int_eq(st, c->st);
	if (st == PROXY_BAD)
		ck_assert_msg(strstr(r.reason, c->reason) != NULL, "case %d: reason \"%s\"", _i,
		    r.reason);
	if (st == PROXY_OK) {
		ck_assert_uint_eq(r.consumed, c->consumed);
		ck_assert_str_eq(r.kind, c->kind);
		ck_assert_int_eq(r.has_addr, c->src != NULL);
		if (c->src != NULL) {
			check_addr(&r.src, c->src, c->sport);
			check_addr(&r.dst, c->dst, c->dport);
		}
	}
	/* Fed one octet more at a time: MORE until the same answer. */
	for (i = 0; i < len; i++) {
		pst = proxy_parse(p, i, &part);
		if (pst == PROXY_MORE)
			continue;
		ck_assert_int_eq(pst, st);
		if (st == PROXY_BAD)
			ck_assert_str_eq(part.reason, r.reason);
		else
			ck_assert_uint_ge(i, r.consumed);
	}
}
END_TEST

static const struct tcase {
	const char *addr;
	const char *nets;	/* space-separated */
	bool trusted;
} tcases[] = {
	{ "127.0.0.1", "127.0.0.0/8", true },
	{ "127.0.0.1", "127.0.0.1", true },
	{ "127.0.0.2", "127.0.0.1", false },
	{ "10.1.2.3", "10.1.2.0/23 192.0.2.0/24", true },
	{ "10.1.4.3", "10.1.2.0/23", false },
	{ "10.1.3.255", "10.1.2.0/23", true },
	{ "192.0.2.200", "192.0.2.128/25", true },
	{ "192.0.2.100", "192.0.2.128/25", false },
	{ "8.8.8.8", "0.0.0.0/0", true },
	{ "8.8.8.8", "::/0", false },
	{ "::ffff:10.0.0.1", "10.0.0.0/8", true },
	{ "2001:db8::1", "2001:db8::/32", true },
	{ "2001:db9::1", "2001:db8::/32", false },
	{ "fd12::1", "fd00::/7 10.0.0.0/8", true },
	{ "::1", "::1", true },
	{ "::1", "127.0.0.1", false },
	{ "10.0.0.1", "10.0.0.0/33", false },
	{ "10.0.0.1", "10.0.0.0/", false },
	{ "10.0.0.1", "10.0.0.0/8x", false },
	{ "10.0.0.1", "garbage 10.0.0.0/8", true },
	{ "2001:db8::1", "2001:db8::/129 ::/0", true },
};

START_TEST(test_trusted)
{
	const struct tcase *c = &tcases[_i];
	struct sockaddr_storage ss;
	char nets[128], *v[4], *w;
	size_t n = 0;

	memset(&ss, 0, sizeof(ss));
	if (strchr(c->addr, ':') != NULL) {
		struct sockaddr_in6 *s6 = (struct sockaddr_in6 *)&ss;

		s6->sin6_family = AF_INET6;
		ck_assert_int_eq(inet_pton(AF_INET6, c->addr, &s6->sin6_addr), 1);
	} else {
		struct sockaddr_in *s4 = (struct sockaddr_in *)&ss;

		s4->sin_family = AF_INET;
		ck_assert_int_eq(inet_pton(AF_INET, c->addr, &s4->sin_addr), 1);
	}
	str_copy(nets, c->nets, sizeof(nets));
	for (w = strtok(nets, " "); w != NULL && n < 4; w = strtok(NULL, " "))
		v[n++] = w;
	ck_assert_msg(proxy_trusted((struct sockaddr *)&ss, v, n) == c->trusted, "%s in %s",
	    c->addr, c->nets);
}
END_TEST

static Suite *
proxy_suite(void)
{
	Suite *s = suite_create("proxy");
	TCase *tc = tcase_create("core");

	tcase_add_loop_test(tc, test_parse, 0, sizeof(cases) / sizeof(cases[0]));
	tcase_add_loop_test(tc, test_trusted, 0, sizeof(tcases) / sizeof(tcases[0]));
	suite_add_tcase(s, tc);
	return s;
}

UNIT_MAIN(proxy_suite)
