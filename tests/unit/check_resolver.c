/*
 * check_resolver.c - unit tests for the resolver (smtpd/resolver.c) and the
 * client's FCrDNS name (smtpd/rdns.c) against a real unbound.
 *
 * main() starts unbound (tests/unit/dnstest.c) on 127.0.0.1 on a free port
 * with local-data test zones and the failure names: drop.test is silently
 * dropped, so a query times out; servfail.test answers SERVFAIL.  It runs
 * the suite, and kills unbound by its PID.  No mock: the answers come over
 * UDP from a DNS server.  A second unbound serves signed.example, a zone
 * signed at start-up with ldnsutils, for the DNSSEC tests (see dnssec_setup).
 */
#include "config.h"

#include <arpa/inet.h>
#include <check.h>
#include <errno.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <event2/event.h>
#include <unbound.h>

#include "conf.h"
#include "rdns.h"
#include "resolver.h"
#include "util.h"
#include "unit.h"
#include "dnstest.h"

static struct dnstest dns;
static char *dns_dir = dns.dir;
static char *dns_servers = dns.servers;

/* The test zones: data, the stalled names, the SERVFAIL name */
static char dns_data[2048];

static const struct dnstest_zones dns_zones = {
	.data = dns_data,
	.stall = "drop.test 3.0.192.in-addr.arpa",
	.servfail = "servfail.test",
};

/* dns_write_data - the zones' local-data (a TXT of two strings: 255 + 45 octets) */
static void
dns_write_data(void)
{
	char a[256], b[46];

	memset(a, 'a', 255);
	a[255] = '\0';
	memset(b, 'b', 45);
	b[45] = '\0';
	snprintf(dns_data, sizeof(dns_data),
	    "  local-zone: \".\" refuse\n"
	    "  local-zone: \"example.test.\" static\n"
	    "  local-data: \"example.test. 300 IN A 192.0.2.10\"\n"
	    "  local-data: \"example.test. 300 IN AAAA 2001:db8::10\"\n"
	    "  local-data: 'example.test. 300 IN TXT \"v=spf1 ip4:192.0.2.0/24 -all\"'\n"
	    "  local-data: 'long.example.test. 300 IN TXT \"%s\" \"%s\"'\n"
	    "  local-data: \"mx.example.test. 300 IN A 192.0.2.25\"\n"
	    "  local-data: \"liar.example.test. 300 IN A 192.0.2.99\"\n"
	    "  local-data: \"v6.example.test. 300 IN AAAA 2001:db8::25\"\n"
	    "  local-zone: \"2.0.192.in-addr.arpa.\" static\n"
	    "  local-data-ptr: \"192.0.2.25 mx.example.test.\"\n"
	    "  local-data-ptr: \"192.0.2.26 liar.example.test.\"\n"
	    "  local-data: \"27.2.0.192.in-addr.arpa. 300 IN PTR a.drop.test.\"\n"
	    "  local-zone: \"8.b.d.0.1.0.0.2.ip6.arpa.\" static\n"
	    "  local-data-ptr: \"2001:db8::25 v6.example.test.\"\n", a, b);
}

/* free_port - a port nothing listens on now */
static unsigned
free_port(void)
{
	return dnstest_free_port();
}

/* ---- a loop and what the callbacks saw ---- */

struct got {
	int calls;
	struct resolver_answer a;	/* status, rcode, count, secure, bogus only */
	char first[600];		/* rdata 0 decoded: name, TXT or address */
	char why[512];			/* a.why copied ("" without), valid after the call */
	int rrtype;
};

static struct event_base *base;
static struct conf test_conf;

static void
setup(void)
{
	base = event_base_new();
	ck_assert_ptr_nonnull(base);
	memset(&test_conf, 0, sizeof(test_conf));
	test_conf.resolver = dns_servers;
	test_conf.resolver_timeout = 2;
}

static void
teardown(void)
{
	event_base_free(base);
}

static void
loop_break_cb(evutil_socket_t fd, short what, void *arg)
{
	*(bool *)arg = true;
}

/* run_until - turn the loop until *done, or ms passed; the elapsed ms */
static unsigned long long
run_until(const int *calls, int want, unsigned ms)
{
	bool expired = false;
	struct timeval tv = { ms / 1000, (ms % 1000) * 1000 };
	struct event *t = evtimer_new(base, loop_break_cb, &expired);
	unsigned long long start = now_ms();

	evtimer_add(t, &tv);
	while (!expired && (calls == NULL || *calls < want))
		event_base_loop(base, EVLOOP_ONCE);
	event_free(t);
	return now_ms() - start;
}

static void
got_cb(void *arg, const struct resolver_answer *a)
{
	struct got *g = arg;

	g->calls++;
	g->a = *a;
	g->a.data = NULL;
	g->a.len = NULL;
	str_copy(g->why, a->why ? a->why : "", sizeof(g->why));
	g->a.why = NULL;
	g->first[0] = '\0';
	if (a->status != RESOLVER_OK)
		return;
	if (g->rrtype == RESOLVER_PTR)
		ck_assert(resolver_name(a, 0, 0, g->first, sizeof(g->first)));
	else if (g->rrtype == RESOLVER_TXT)
		ck_assert(resolver_txt(a, 0, g->first, sizeof(g->first)));
	else
		ck_assert_ptr_nonnull(inet_ntop(g->rrtype == RESOLVER_A ? AF_INET : AF_INET6,
		    a->data[0], g->first, sizeof(g->first)));
}

/* res_new - a loop and a resolver on the test server with timeout seconds */
static struct resolver *
res_new(unsigned timeout)
{
	struct resolver *res;
	char *e = NULL;

	setup();
	test_conf.resolver_timeout = timeout;
	res = resolver_new(base, &test_conf, &e);
	ck_assert_msg(res != NULL, "%s", e ? e : "");
	return res;
}

/* res_done - free both */
static void
res_done(struct resolver *res)
{
	resolver_free(res);
	teardown();
}

/* ask - start name/rrtype, answered into g */
static struct resolver_query *
ask(struct resolver *res, const char *name, int rrtype, struct got *g)
{
	struct resolver_query *q;
	const char *err = NULL;

	memset(g, 0, sizeof(*g));
	g->rrtype = rrtype;
	q = resolver_query(res, name, rrtype, got_cb, g, &err);
	ck_assert_msg(q != NULL, "%s", err ? err : "");
	/* never from inside resolver_query */
	ck_assert_int_eq(g->calls, 0);
	return q;
}

static const struct {
	const char *name;
	int rrtype;
	enum resolver_status status;
	const char *first;
} answer_cases[] = {
	{ "example.test", RESOLVER_A, RESOLVER_OK, "192.0.2.10" },
	{ "example.test", RESOLVER_AAAA, RESOLVER_OK, "2001:db8::10" },
	{ "example.test", RESOLVER_TXT, RESOLVER_OK, "v=spf1 ip4:192.0.2.0/24 -all" },
	{ "25.2.0.192.in-addr.arpa", RESOLVER_PTR, RESOLVER_OK, "mx.example.test" },
	{ "nope.example.test", RESOLVER_A, RESOLVER_NXDOMAIN, "" },
	{ "example.test", RESOLVER_MX, RESOLVER_NODATA, "" },
	{ "a.servfail.test", RESOLVER_A, RESOLVER_SERVFAIL, "" },
	{ "example.com", RESOLVER_A, RESOLVER_SERVFAIL, "" },	/* REFUSED */
};

/* test_answers - each answer kind, from the real server, one loop */
START_TEST(test_answers)
{
	struct got g;
	struct resolver *res = res_new(2);

	ask(res, answer_cases[_i].name, answer_cases[_i].rrtype, &g);
	run_until(&g.calls, 1, 5000);
	ck_assert_int_eq(g.calls, 1);
	ck_assert_msg(g.a.status == answer_cases[_i].status, "%s: %s", answer_cases[_i].name,
	    resolver_status_name(g.a.status));
	ck_assert_str_eq(g.first, answer_cases[_i].first);
	ck_assert(!g.a.secure);
	ck_assert(resolver_idle(res));
	res_done(res);
}
END_TEST

/* test_txt_split - a TXT record of two strings (255 + 45 octets) reads as one */
START_TEST(test_txt_split)
{
	struct got g;
	struct resolver *res = res_new(2);

	ask(res, "long.example.test", RESOLVER_TXT, &g);
	run_until(&g.calls, 1, 5000);
	ck_assert_int_eq(g.a.status, RESOLVER_OK);
	ck_assert_uint_eq(strlen(g.first), 300);
	ck_assert_int_eq(g.first[254], 'a');
	ck_assert_int_eq(g.first[255], 'b');
	res_done(res);
}
END_TEST

/* test_timeout - a query nobody answers completes as a timeout after resolver_timeout */
START_TEST(test_timeout)
{
	struct got g;
	struct resolver *res = res_new(1);
	unsigned long long ms;

	ask(res, "a.drop.test", RESOLVER_A, &g);
	ms = run_until(&g.calls, 1, 5000);
	ck_assert_int_eq(g.calls, 1);
	ck_assert_int_eq(g.a.status, RESOLVER_TIMEOUT);
	ck_assert_msg(ms >= 900 && ms < 1800, "took %llu ms", ms);
	ck_assert(resolver_idle(res));
	/* the late nothing: no second call */
	run_until(NULL, 0, 300);
	ck_assert_int_eq(g.calls, 1);
	res_done(res);
}
END_TEST

/* test_timeout_silent_port - a server address where nothing listens: bounded as well */
START_TEST(test_timeout_silent_port)
{
	struct got g;
	struct resolver *res;
	char *e = NULL, servers[64];
	unsigned long long ms;

	setup();
	snprintf(servers, sizeof(servers), "127.0.0.1@%u", free_port());
	test_conf.resolver = servers;
	test_conf.resolver_timeout = 1;
	ck_assert_ptr_nonnull(res = resolver_new(base, &test_conf, &e));
	ask(res, "example.test", RESOLVER_A, &g);
	ms = run_until(&g.calls, 1, 5000);
	ck_assert_int_eq(g.calls, 1);
	/* unbound may give up first (SERVFAIL), never later than the timeout */
	ck_assert_msg(g.a.status == RESOLVER_TIMEOUT || g.a.status == RESOLVER_SERVFAIL, "%s",
	    resolver_status_name(g.a.status));
	ck_assert_msg(ms < 1800, "took %llu ms", ms);
	res_done(res);
}
END_TEST

/* test_cancel - cancelled before the answer: the callback never runs */
START_TEST(test_cancel)
{
	struct got g1, g2;
	struct resolver *res = res_new(1);
	/* one that would be answered at once, one that would time out */
	struct resolver_query *q1 = ask(res, "example.test", RESOLVER_A, &g1);
	struct resolver_query *q2 = ask(res, "a.drop.test", RESOLVER_A, &g2);

	resolver_cancel(q1);
	resolver_cancel(q2);
	ck_assert(resolver_idle(res));
	run_until(NULL, 0, 1500);
	ck_assert_int_eq(g1.calls, 0);
	ck_assert_int_eq(g2.calls, 0);
	resolver_cancel(NULL);
	res_done(res);
}
END_TEST

/* test_free_in_flight - a context freed with queries in flight calls nobody back */
START_TEST(test_free_in_flight)
{
	struct got g[4];
	struct resolver *res = res_new(2);
	int i;

	for (i = 0; i < 4; i++)
		ask(res, i % 2 ? "a.drop.test" : "example.test", RESOLVER_A, &g[i]);
	ck_assert(!resolver_idle(res));
	resolver_free(res);
	run_until(NULL, 0, 500);
	for (i = 0; i < 4; i++)
		ck_assert_int_eq(g[i].calls, 0);
	teardown();
}
END_TEST

/* ---- FCrDNS ---- */

struct rgot {
	int calls;
	enum rdns_result result;
	char name[RDNS_NAME_MAX], ptr[RDNS_NAME_MAX];
};

static void
rgot_cb(void *arg, const struct rdns_answer *a)
{
	struct rgot *g = arg;

	g->calls++;
	g->result = a->result;
	str_copy(g->name, a->name ? a->name : "", sizeof(g->name));
	str_copy(g->ptr, a->ptr ? a->ptr : "", sizeof(g->ptr));
}

static const struct {
	const char *addr;
	enum rdns_result result;
	const char *name, *ptr;
} rdns_cases[] = {
	{ "192.0.2.25", RDNS_VERIFIED, "mx.example.test", "mx.example.test" },
	{ "::ffff:192.0.2.25", RDNS_VERIFIED, "mx.example.test", "mx.example.test" },
	{ "2001:db8::25", RDNS_VERIFIED, "v6.example.test", "v6.example.test" },
	{ "192.0.2.26", RDNS_UNVERIFIED, "", "liar.example.test" },	/* maps to .99 */
	{ "192.0.2.99", RDNS_NONE, "", "" },				/* no PTR */
	{ "192.0.2.27", RDNS_TIMEOUT, "", "a.drop.test" },		/* its A stalls */
	{ "192.0.3.1", RDNS_TIMEOUT, "", "" },				/* its PTR stalls */
	/* libunbound's own, whatever the servers say: a run without network names them */
	{ "127.0.0.1", RDNS_VERIFIED, "localhost", "localhost" },
	{ "::1", RDNS_VERIFIED, "localhost", "localhost" },
};

/* rdns_sockaddr - a sockaddr for a textual address */
static void
rdns_sockaddr(const char *addr, struct sockaddr_storage *ss)
{
	memset(ss, 0, sizeof(*ss));
	if (strchr(addr, ':') == NULL) {
		struct sockaddr_in *s4 = (struct sockaddr_in *)ss;

		s4->sin_family = AF_INET;
		ck_assert_int_eq(inet_pton(AF_INET, addr, &s4->sin_addr), 1);
	} else {
		struct sockaddr_in6 *s6 = (struct sockaddr_in6 *)ss;

		s6->sin6_family = AF_INET6;
		ck_assert_int_eq(inet_pton(AF_INET6, addr, &s6->sin6_addr), 1);
	}
}

/* test_rdns - verified, not mapping back, no PTR, stalled: each within resolver_timeout */
START_TEST(test_rdns)
{
	struct rgot g;
	struct resolver *res = res_new(1);
	struct sockaddr_storage ss;
	unsigned long long ms;

	rdns_sockaddr(rdns_cases[_i].addr, &ss);
	memset(&g, 0, sizeof(g));
	ck_assert_ptr_nonnull(rdns_start(res, (struct sockaddr *)&ss, rgot_cb, &g));
	ck_assert_int_eq(g.calls, 0);
	ms = run_until(&g.calls, 1, 5000);
	ck_assert_int_eq(g.calls, 1);
	ck_assert_msg(g.result == rdns_cases[_i].result, "%s: %s", rdns_cases[_i].addr,
	    rdns_result_name(g.result));
	ck_assert_str_eq(g.name, rdns_cases[_i].name);
	ck_assert_str_eq(g.ptr, rdns_cases[_i].ptr);
	/* the whole lookup is bounded by one resolver_timeout, not one per step */
	ck_assert_msg(ms < 1800, "took %llu ms", ms);
	ck_assert(resolver_idle(res));
	res_done(res);
}
END_TEST

/* test_rdns_cancel - cancelled midway (the forward query stalls): nobody is called */
START_TEST(test_rdns_cancel)
{
	struct rgot g;
	struct resolver *res = res_new(1);
	struct sockaddr_storage ss;
	struct rdns *r;

	rdns_sockaddr("192.0.2.27", &ss);
	memset(&g, 0, sizeof(g));
	ck_assert_ptr_nonnull(r = rdns_start(res, (struct sockaddr *)&ss, rgot_cb, &g));
	run_until(NULL, 0, 300);	/* the PTR is answered, the A stalls */
	ck_assert(!resolver_idle(res));
	rdns_cancel(r);
	ck_assert(resolver_idle(res));
	run_until(NULL, 0, 1500);
	ck_assert_int_eq(g.calls, 0);
	res_done(res);
}
END_TEST

/* sync_thread - a pool thread's lookup: its context goes with the thread (LeakSanitizer checks) */
static void *
sync_thread(void *arg)
{
	struct resolver_answer a;
	struct ub_result *ub;

	*(enum resolver_status *)arg = resolver_sync(&test_conf, "example.test", RESOLVER_AAAA,
	    &a, &ub);
	resolver_sync_free(ub);
	return NULL;
}

/* test_sync - the blocking path, answered and bounded */
START_TEST(test_sync)
{
	struct resolver_answer a;
	struct ub_result *ub;
	char addr[64];
	unsigned long long start;

	setup();
	test_conf.resolver_timeout = 1;
	ck_assert_int_eq(resolver_sync(&test_conf, "example.test", RESOLVER_A, &a, &ub),
	    RESOLVER_OK);
	ck_assert_uint_eq(a.count, 1);
	ck_assert_ptr_nonnull(inet_ntop(AF_INET, a.data[0], addr, sizeof(addr)));
	ck_assert_str_eq(addr, "192.0.2.10");
	resolver_sync_free(ub);
	ck_assert_int_eq(resolver_sync(&test_conf, "nope.example.test", RESOLVER_A, &a, &ub),
	    RESOLVER_NXDOMAIN);
	resolver_sync_free(ub);
	start = now_ms();
	ck_assert_int_eq(resolver_sync(&test_conf, "a.drop.test", RESOLVER_A, &a, &ub),
	    RESOLVER_TIMEOUT);
	ck_assert_ptr_null(ub);
	ck_assert_uint_lt(now_ms() - start, 1800);
	resolver_sync_thread_end();
	{
		pthread_t t;
		enum resolver_status st = RESOLVER_ERROR;

		ck_assert_int_eq(pthread_create(&t, NULL, sync_thread, &st), 0);
		ck_assert_int_eq(pthread_join(t, NULL), 0);
		ck_assert_int_eq(st, RESOLVER_OK);
	}
	teardown();
}
END_TEST

/* test_check - what -t checks: a bad server and an unloadable trust anchor */
START_TEST(test_check)
{
	char *err = NULL, path[128];
	FILE *f;

	setup();
	ck_assert(resolver_check(&test_conf, &err));
	test_conf.resolver = (char *)"192.0.2.300";
	ck_assert(!resolver_check(&test_conf, &err));
	ck_assert_msg(strstr(err, "192.0.2.300") != NULL, "%s", err);
	free(err);
	err = NULL;
	test_conf.resolver = dns_servers;
	snprintf(path, sizeof(path), "%s/bad.key", dns_dir);
	ck_assert_ptr_nonnull(f = fopen(path, "w"));
	fputs(". IN DS this is not a DS record\n", f);
	fclose(f);
	test_conf.resolver_trust_anchor = path;
	ck_assert(!resolver_check(&test_conf, &err));
	ck_assert_msg(strstr(err, "bad.key") != NULL, "%s", err);
	free(err);
	teardown();
}
END_TEST

/* ---- DNSSEC: a zone signed at test time, served by a second unbound ---- */

/*
 * dnssec_setup (from main) makes signed.example in dns_dir with ldnsutils:
 * one ECDSA P-256 key (ldns-keygen; its DS is the trust anchor), the zone
 * signed by ldns-signzone, then forged.signed.example's TXT changed in the
 * signed file (its RRSIG no longer matches: a bogus answer).  A second
 * unbound serves that file as an auth-zone, authoritatively; the resolver
 * forwards to it and validates.  Whatever failed is kept in dnssec_err:
 * the DNSSEC tests fail with it (ldnsutils missing, unbound refusing the zone).
 */
#define DNSSEC_ZONE "signed.example"

static struct dnstest sdns;
static char dnssec_anchor[256];
static char dnssec_err[1024];
static char dnssec_data[512];

static const char dnssec_zone[] =
    "$ORIGIN " DNSSEC_ZONE ".\n"
    "$TTL 300\n"
    "@ IN SOA ns host 1 3600 600 86400 300\n"
    "@ IN NS ns\n"
    "ns IN A 127.0.0.1\n"
    "good IN A 192.0.2.1\n"
    "forged IN TXT \"as signed\"\n";

/* dnssec_forge - the signed file at path with forged.signed.example's TXT changed */
static bool
dnssec_forge(const char *path)
{
	static char buf[16384], out[16384 + 16];
	FILE *f = fopen(path, "r");
	size_t n;
	char *p;

	if (f == NULL)
		return false;
	n = fread(buf, 1, sizeof(buf) - 1, f);
	fclose(f);
	buf[n] = '\0';
	if (n == sizeof(buf) - 1 || (p = strstr(buf, "\"as signed\"")) == NULL)
		return false;
	snprintf(out, sizeof(out), "%.*s\"forged\"%s", (int)(p - buf), buf,
	    p + strlen("\"as signed\""));
	if ((f = fopen(path, "w")) == NULL)
		return false;
	fputs(out, f);
	return fclose(f) == 0;
}

/* dnssec_setup - key, signed zone, forged record, the authority: false + dnssec_err */
static bool
dnssec_setup(void)
{
	char path[256], cmd[512], key[128] = "", out[512] = "";
	/* no stall/servfail names: their server: lines would land in the auth-zone: clause */
	const struct dnstest_zones z = { .data = dnssec_data };
	FILE *f;
	size_t n;
	int rc;

	snprintf(path, sizeof(path), "%s/" DNSSEC_ZONE ".zone", dns_dir);
	if ((f = fopen(path, "w")) == NULL || fputs(dnssec_zone, f) < 0 || fclose(f) != 0) {
		snprintf(dnssec_err, sizeof(dnssec_err), "cannot write %s", path);
		return false;
	}
	/* prints the key files' base name, "Ksigned.example.+013+NNNNN" */
	snprintf(cmd, sizeof(cmd), "cd '%s' && ldns-keygen -a ECDSAP256SHA256 -k " DNSSEC_ZONE
	    " 2>&1", dns_dir);
	if ((f = popen(cmd, "r")) == NULL) {
		snprintf(dnssec_err, sizeof(dnssec_err), "cannot run ldns-keygen");
		return false;
	}
	n = fread(out, 1, sizeof(out) - 1, f);
	out[n] = '\0';
	rc = pclose(f);
	if (rc != 0 || sscanf(out, "%127s", key) != 1 ||
	    strncmp(key, "K" DNSSEC_ZONE ".+", strlen("K" DNSSEC_ZONE ".+")) != 0) {
		snprintf(dnssec_err, sizeof(dnssec_err), "ldns-keygen failed (exit %d): %s"
		    "(the DNSSEC tests need ldnsutils: scripts/install-deps.sh installs it)",
		    WIFEXITED(rc) ? WEXITSTATUS(rc) : -1, out);
		return false;
	}
	snprintf(cmd, sizeof(cmd), "cd '%s' && ldns-signzone -f signed.zone " DNSSEC_ZONE
	    ".zone '%s'", dns_dir, key);
	if ((rc = system(cmd)) != 0) {
		snprintf(dnssec_err, sizeof(dnssec_err), "ldns-signzone failed (exit %d)",
		    WIFEXITED(rc) ? WEXITSTATUS(rc) : -1);
		return false;
	}
	snprintf(path, sizeof(path), "%s/signed.zone", dns_dir);
	if (!dnssec_forge(path)) {
		snprintf(dnssec_err, sizeof(dnssec_err), "%s: no \"as signed\" TXT to forge", path);
		return false;
	}
	snprintf(dnssec_anchor, sizeof(dnssec_anchor), "%s/%s.ds", dns_dir, key);
	snprintf(dnssec_data, sizeof(dnssec_data),
	    "auth-zone:\n  name: \"" DNSSEC_ZONE ".\"\n  zonefile: \"%s\"\n"
	    "  for-downstream: yes\n  for-upstream: yes\n", path);
	if (!dnstest_start(&sdns, &z)) {
		snprintf(dnssec_err, sizeof(dnssec_err), "unbound would not serve %s (see %s)",
		    path, sdns.dir);
		return false;
	}
	return true;
}

static const struct {
	const char *name;
	int rrtype;
	bool anchor;		/* resolver_trust_anchor: the zone's DS */
	enum resolver_status status;
	bool secure, bogus;
	const char *first;
} dnssec_cases[] = {
	{ "good.signed.example", RESOLVER_A, true, RESOLVER_OK, true, false, "192.0.2.1" },
	/* denials, proven by the zone's NSEC records */
	{ "nope.signed.example", RESOLVER_A, true, RESOLVER_NXDOMAIN, true, false, "" },
	{ "good.signed.example", RESOLVER_TXT, true, RESOLVER_NODATA, true, false, "" },
	/* changed after signing */
	{ "forged.signed.example", RESOLVER_TXT, true, RESOLVER_SERVFAIL, false, true, "" },
	/* without the anchor: nothing is validated, the forgery goes through */
	{ "good.signed.example", RESOLVER_A, false, RESOLVER_OK, false, false, "192.0.2.1" },
	{ "forged.signed.example", RESOLVER_TXT, false, RESOLVER_OK, false, false, "forged" },
};

/* dnssec_conf - test_conf on the authority, with the zone's DS as trust anchor or none */
static void
dnssec_conf(bool anchor)
{
	ck_assert_msg(dnssec_err[0] == '\0', "DNSSEC set-up: %s", dnssec_err);
	setup();
	test_conf.resolver = sdns.servers;
	test_conf.resolver_timeout = 3;
	test_conf.resolver_trust_anchor = anchor ? dnssec_anchor : NULL;
}

/* dnssec_check - an answer as dnssec_cases[i] says, why set exactly when bogus */
static void
dnssec_check(int i, const struct resolver_answer *a, const char *first, const char *why)
{
	ck_assert_msg(a->status == dnssec_cases[i].status, "%s: %s (%s)", dnssec_cases[i].name,
	    resolver_status_name(a->status), why ? why : "");
	ck_assert_msg(a->secure == dnssec_cases[i].secure, "%s: secure %d", dnssec_cases[i].name,
	    a->secure);
	ck_assert_msg(a->bogus == dnssec_cases[i].bogus, "%s: bogus %d", dnssec_cases[i].name,
	    a->bogus);
	ck_assert_str_eq(first, dnssec_cases[i].first);
	if (dnssec_cases[i].bogus)
		ck_assert_msg(why != NULL && strstr(why, dnssec_cases[i].name) != NULL,
		    "why: %s", why ? why : "(none)");
	else
		ck_assert_msg(why == NULL || why[0] == '\0', "why: %s", why);
}

/* test_dnssec - validated, proven absent and bogus answers on a loop */
START_TEST(test_dnssec)
{
	struct got g;
	struct resolver *res;
	char *e = NULL;

	dnssec_conf(dnssec_cases[_i].anchor);
	res = resolver_new(base, &test_conf, &e);
	ck_assert_msg(res != NULL, "%s", e ? e : "");
	ask(res, dnssec_cases[_i].name, dnssec_cases[_i].rrtype, &g);
	run_until(&g.calls, 1, 5000);
	ck_assert_int_eq(g.calls, 1);
	dnssec_check(_i, &g.a, g.first, g.why);
	res_done(res);
}
END_TEST

/* test_dnssec_sync - the same on the blocking path (and -t accepts the anchor) */
START_TEST(test_dnssec_sync)
{
	struct resolver_answer a;
	struct ub_result *ub;
	char first[600] = "", *err = NULL;

	dnssec_conf(dnssec_cases[_i].anchor);
	ck_assert_msg(resolver_check(&test_conf, &err), "%s", err ? err : "");
	resolver_sync(&test_conf, dnssec_cases[_i].name, dnssec_cases[_i].rrtype, &a, &ub);
	if (a.status == RESOLVER_OK && dnssec_cases[_i].rrtype == RESOLVER_TXT)
		ck_assert(resolver_txt(&a, 0, first, sizeof(first)));
	else if (a.status == RESOLVER_OK)
		ck_assert_ptr_nonnull(inet_ntop(AF_INET, a.data[0], first, sizeof(first)));
	dnssec_check(_i, &a, first, a.why);
	resolver_sync_free(ub);
	resolver_sync_thread_end();
	teardown();
}
END_TEST

/* test_reverse_name - the PTR names of addresses */
START_TEST(test_reverse_name)
{
	struct sockaddr_storage ss;
	char name[80];

	rdns_sockaddr("192.0.2.25", &ss);
	ck_assert(resolver_reverse_name((struct sockaddr *)&ss, name, sizeof(name)));
	ck_assert_str_eq(name, "25.2.0.192.in-addr.arpa");
	rdns_sockaddr("2001:db8::25", &ss);
	ck_assert(resolver_reverse_name((struct sockaddr *)&ss, name, sizeof(name)));
	ck_assert_str_eq(name,
	    "5.2.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.8.b.d.0.1.0.0.2.ip6.arpa");
	ck_assert(!resolver_reverse_name((struct sockaddr *)&ss, name, 40));
}
END_TEST

static Suite *
resolver_suite(void)
{
	Suite *s = suite_create("resolver");
	TCase *tc = tcase_create("core");

	tcase_set_timeout(tc, 30);
	tcase_add_loop_test(tc, test_answers, 0, sizeof(answer_cases) / sizeof(answer_cases[0]));
	tcase_add_test(tc, test_txt_split);
	tcase_add_test(tc, test_timeout);
	tcase_add_test(tc, test_timeout_silent_port);
	tcase_add_test(tc, test_cancel);
	tcase_add_test(tc, test_free_in_flight);
	tcase_add_loop_test(tc, test_rdns, 0, sizeof(rdns_cases) / sizeof(rdns_cases[0]));
	tcase_add_test(tc, test_rdns_cancel);
	tcase_add_test(tc, test_sync);
	tcase_add_test(tc, test_check);
	tcase_add_loop_test(tc, test_dnssec, 0, sizeof(dnssec_cases) / sizeof(dnssec_cases[0]));
	tcase_add_loop_test(tc, test_dnssec_sync, 0,
	    sizeof(dnssec_cases) / sizeof(dnssec_cases[0]));
	tcase_add_test(tc, test_reverse_name);
	suite_add_tcase(s, tc);
	return s;
}

int
main(void)
{
	int rc;

	dns_write_data();
	if (!dnstest_start(&dns, &dns_zones)) {
		fprintf(stderr, "check_resolver: unbound would not start (see %s)\n", dns_dir);
		dnstest_stop(&dns);
		return EXIT_FAILURE;
	}
	/* a failure here fails the DNSSEC tests, with its reason */
	if (!dnssec_setup())
		fprintf(stderr, "check_resolver: DNSSEC set-up: %s\n", dnssec_err);
	rc = unit_run(resolver_suite());
	dnstest_stop(&sdns);
	dnstest_stop(&dns);
	return rc;
}
