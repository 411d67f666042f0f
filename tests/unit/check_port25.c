/*
 * check_port25.c - unit tests for port25's subscriber networks
 * (policy/port25.c): parsing subscriber_networks and
 * subscriber_networks_file, and matching IPv4, IPv6 and IPv4-mapped
 * clients against them.  The CONNECT refusal itself is in
 * tests/integration/test_port25.py.
 */
#include "config.h"

#include <arpa/inet.h>
#include <check.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "conf.h"
#include "filter.h"
#include "util.h"
#include "../policy/port25.h"
#include "unit.h"

static struct conf test_conf;

/* configure - port25 with one key = value; NULL and *err_r on refusal */
static void *
configure(const char *key, const char *value, char **err_r)
{
	struct conf_kv kv = { .key = (char *)key, .value = (char *)value, .line = 3 };
	struct conf_section sec = { .type = (char *)"filter", .name = (char *)"port25",
	    .line = 2, .kv = &kv, .nkv = key != NULL };

	*err_r = NULL;
	return port25_ops.configure(&test_conf, &sec, err_r);
}

/* inside - is the numeric address addr inside inst's networks? */
static bool
inside(void *inst, const char *addr)
{
	struct sockaddr_storage ss;
	struct sockaddr_in *sin = (struct sockaddr_in *)&ss;
	struct sockaddr_in6 *sin6 = (struct sockaddr_in6 *)&ss;

	memset(&ss, 0, sizeof(ss));
	if (inet_pton(AF_INET, addr, &sin->sin_addr) == 1)
		sin->sin_family = AF_INET;
	else {
		ck_assert_int_eq(inet_pton(AF_INET6, addr, &sin6->sin6_addr), 1);
		sin6->sin6_family = AF_INET6;
	}
	return port25_subscriber(inst, (struct sockaddr *)&ss);
}

static const struct {
	const char *nets;
	const char *addr;
	bool in;
} match_cases[] = {
	{ "192.0.2.0/24", "192.0.2.77", true },
	{ "192.0.2.0/24", "192.0.3.1", false },
	{ "192.0.2.0/24", "::ffff:192.0.2.9", true },	/* IPv4-mapped */
	{ "192.0.2.0/24", "2001:db8::1", false },
	{ "10.0.0.0/7", "11.255.255.255", true },
	{ "10.0.0.0/7", "12.0.0.0", false },
	{ "10.9.9.9/8", "10.1.1.1", true },		/* host bits ignored */
	{ "127.0.0.2", "127.0.0.2", true },
	{ "127.0.0.2", "127.0.0.3", false },
	{ "0.0.0.0/0", "203.0.113.5", true },
	{ "0.0.0.0/0", "::1", false },
	{ "2001:db8::/32", "2001:db8:ffff::1", true },
	{ "2001:db8::/32", "2001:db9::1", false },
	{ "2001:db8:abcd:12::/63", "2001:db8:abcd:13::5", true },
	{ "2001:db8:abcd:12::/63", "2001:db8:abcd:14::5", false },
	{ "::/0", "fe80::1", true },
	{ "::1", "::1", true },
	{ "198.51.100.0/24, 2001:db8::/32  203.0.113.0/25", "203.0.113.127", true },
	{ "198.51.100.0/24, 2001:db8::/32  203.0.113.0/25", "203.0.113.128", false },
	{ "", "192.0.2.1", false },
};

START_TEST(test_match)
{
	char *err;
	void *inst = configure("subscriber_networks", match_cases[_i].nets, &err);

	ck_assert_msg(inst != NULL, "%s", err ? err : "");
	ck_assert_msg(inside(inst, match_cases[_i].addr) == match_cases[_i].in, "%s in %s",
	    match_cases[_i].addr, match_cases[_i].nets);
	port25_ops.destroy(inst);
}
END_TEST

static const struct {
	const char *key, *value, *err;
} bad_cases[] = {
	{ "subscriber_networks", "192.0.2.0/33", "subscriber_networks: \"192.0.2.0/33\" is not "
	    "an address or network; write e.g. 192.0.2.0/24 or 2001:db8::/32" },
	{ "subscriber_networks", "2001:db8::/129", NULL },
	{ "subscriber_networks", "192.0.2.0/", NULL },
	{ "subscriber_networks", "192.0.2.0/-1", NULL },
	{ "subscriber_networks", "192.0.2/24", NULL },
	{ "subscriber_networks", "example.test", NULL },
	{ "subscriber_networks_file", "/nonexistent/port25-nets", "subscriber_networks_file: "
	    "/nonexistent/port25-nets: No such file or directory" },
	{ "timeout", "5", "unknown key \"timeout\" at line 3; port25 takes subscriber_networks "
	    "and subscriber_networks_file" },
};

START_TEST(test_refused)
{
	char *err;

	ck_assert_ptr_null(configure(bad_cases[_i].key, bad_cases[_i].value, &err));
	ck_assert_ptr_nonnull(err);
	if (bad_cases[_i].err)
		ck_assert_str_eq(err, bad_cases[_i].err);
	free(err);
}
END_TEST

/* test_file - one network per line, comments and blank lines skipped, errors name the line */
START_TEST(test_file)
{
	char path[] = "/tmp/check_port25.XXXXXX", *err;
	const char *text = "# residential pools\n\n192.0.2.0/24   # DSL\n  2001:db8::/32 198.18.0.0/15\n";
	int fd = mkstemp(path);
	void *inst;

	ck_assert_int_ge(fd, 0);
	ck_assert_int_eq(write(fd, text, strlen(text)), (int)strlen(text));
	close(fd);
	inst = configure("subscriber_networks_file", path, &err);
	ck_assert_msg(inst != NULL, "%s", err ? err : "");
	ck_assert(inside(inst, "192.0.2.200"));
	ck_assert(inside(inst, "2001:db8::25"));
	ck_assert(inside(inst, "198.19.1.1"));
	ck_assert(!inside(inst, "198.51.100.1"));
	port25_ops.destroy(inst);
	fd = open(path, O_WRONLY | O_APPEND);
	ck_assert_int_ge(fd, 0);
	ck_assert_int_eq(write(fd, "bogus/8\n", 8), 8);
	close(fd);
	ck_assert_ptr_null(configure("subscriber_networks_file", path, &err));
	ck_assert_str_eq(err, "subscriber_networks_file line 5: \"bogus/8\" is not an address or "
	    "network; write e.g. 192.0.2.0/24 or 2001:db8::/32");
	free(err);
	unlink(path);
}
END_TEST

/* test_no_section - the instance an mx listener gets without [filter port25]: nobody inside */
START_TEST(test_no_section)
{
	char *err = NULL;
	void *inst = port25_ops.configure(&test_conf, NULL, &err);

	ck_assert_ptr_nonnull(inst);
	ck_assert(!inside(inst, "127.0.0.1"));
	ck_assert(!inside(inst, "::1"));
	port25_ops.destroy(inst);
}
END_TEST

static Suite *
port25_suite(void)
{
	Suite *s = suite_create("port25");
	TCase *tc = tcase_create("core");

	tcase_add_loop_test(tc, test_match, 0, sizeof(match_cases) / sizeof(match_cases[0]));
	tcase_add_loop_test(tc, test_refused, 0, sizeof(bad_cases) / sizeof(bad_cases[0]));
	tcase_add_test(tc, test_file);
	tcase_add_test(tc, test_no_section);
	suite_add_tcase(s, tc);
	return s;
}

UNIT_MAIN(port25_suite)
