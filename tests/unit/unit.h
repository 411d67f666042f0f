/*
 * unit.h - what every Check program shares: running its suite.
 *
 * unit_run(suite) runs it in Check's normal (forking) mode and returns the
 * exit status: EXIT_SUCCESS only when every test passed.  UNIT_MAIN(fn) is
 * the main() of a program with nothing to set up: it runs fn()'s suite.
 * unit_sockaddr() makes a socket address of a numeric one.
 */
#ifndef PORTIER_UNIT_H
#define PORTIER_UNIT_H

#include <arpa/inet.h>
#include <check.h>
#include <netinet/in.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

static inline int
unit_run(Suite *s)
{
	SRunner *sr = srunner_create(s);
	int failed;

	srunner_run_all(sr, CK_NORMAL);
	failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}

/* unit_sockaddr - a numeric IPv4 or IPv6 address into *ss, as a socket address */
static inline const struct sockaddr *
unit_sockaddr(const char *text, struct sockaddr_storage *ss)
{
	struct sockaddr_in *sin = (struct sockaddr_in *)ss;
	struct sockaddr_in6 *sin6 = (struct sockaddr_in6 *)ss;

	memset(ss, 0, sizeof(*ss));
	if (inet_pton(AF_INET, text, &sin->sin_addr) == 1) {
		sin->sin_family = AF_INET;
	} else {
		ck_assert_int_eq(inet_pton(AF_INET6, text, &sin6->sin6_addr), 1);
		sin6->sin6_family = AF_INET6;
	}
	return (const struct sockaddr *)ss;
}

#define UNIT_MAIN(suite_fn)	int main(void) { return unit_run(suite_fn()); }

#endif
