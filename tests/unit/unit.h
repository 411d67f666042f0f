/*
 * unit.h - what every Check program shares: running its suite.
 *
 * unit_run(suite) runs it in Check's normal (forking) mode and returns the
 * exit status: EXIT_SUCCESS only when every test passed.  UNIT_MAIN(fn) is
 * the main() of a program with nothing to set up: it runs fn()'s suite.
 */
#ifndef PORTIER_UNIT_H
#define PORTIER_UNIT_H

#include <check.h>
#include <stdlib.h>

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

#define UNIT_MAIN(suite_fn)	int main(void) { return unit_run(suite_fn()); }

#endif
