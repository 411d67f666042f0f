/*
 * main.c - portier's entry point.
 *
 * portier [-t] [-d] -c FILE: see cli.c and portier(8).
 */
#include "config.h"

#include "cli.h"

int
main(int argc, char *argv[])
{
	return portier_main(argc, argv);
}
