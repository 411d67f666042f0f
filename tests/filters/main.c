/*
 * main.c - portier-test: the daemon with the test filters of tests/filters
 * registered besides the built-in ones, for the integration tests
 * (PORTIER_TEST names it).  Never installed.
 */
#include "config.h"

#include "cli.h"
#include "testfilters.h"

int
main(int argc, char *argv[])
{
	testfilters_register();
	return portier_main(argc, argv);
}
