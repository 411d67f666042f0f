/*
 * cli.h - the daemon's command line, shared by portier and the test build
 * (tests/filters/portier-test), which registers its test filters first.
 */
#ifndef PORTIER_CLI_H
#define PORTIER_CLI_H

#include <stdbool.h>

struct conf;

/* portier_main - parse options, load and check the configuration, run the server */
int portier_main(int argc, char *argv[]);
/*
 * cli_conf_load - register the built-in filters, set debug logging, load
 * FILE; NULL after printing every error ("FILE:LINE: ...") on stderr.
 * Shared with portier-milter.
 */
struct conf *cli_conf_load(const char *path, bool debug);

#endif
