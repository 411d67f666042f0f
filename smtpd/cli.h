/*
 * cli.h - the daemon's command line, shared by portier and the test build
 * (tests/filters/portier-test), which registers its test filters first.
 */
#ifndef PORTIER_CLI_H
#define PORTIER_CLI_H

/* portier_main - parse options, load and check the configuration, run the server */
int portier_main(int argc, char *argv[]);

#endif
