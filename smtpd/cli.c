/*
 * cli.c - portier's command line: options, config check, then the server.
 *
 * portier [-t] [-d] -c FILE.  -t checks the configuration and exits 0, or 2
 * after naming file, line and key of every error.  Never forks: process
 * supervision is the init system's job.
 */
#include "config.h"

#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

#include "builtin.h"
#include "cli.h"
#include "conf.h"
#include "filter.h"
#include "log.h"
#include "server.h"

#define EXIT_CONFIG 2

/* usage - print the synopsis */
static void
usage(void)
{
	fprintf(stderr, "usage: portier [-t] [-d] -c FILE\n");
	exit(EXIT_CONFIG);
}

/* cli_conf_load - the built-in filters registered, FILE loaded; NULL after printing its errors */
struct conf *
cli_conf_load(const char *path, bool debug)
{
	struct buf errors;
	struct conf *conf;

	filter_builtins_register();
	log_set_debug(debug);
	buf_init(&errors);
	if ((conf = conf_load(path, &errors)) == NULL)
		fputs(errors.data ? errors.data : "configuration error\n", stderr);
	buf_free(&errors);
	return conf;
}

/* portier_main - the daemon's main(); the built-in filters are registered here */
int
portier_main(int argc, char *argv[])
{
	const char *path = NULL;
	bool check_only = false, debug = false;
	struct conf *conf;
	struct snapshot *snap;
	char *err = NULL;
	int ch, rc;

	while ((ch = getopt(argc, argv, "c:dt")) != -1) {
		switch (ch) {
		case 'c':
			path = optarg;
			break;
		case 'd':
			debug = true;
			break;
		case 't':
			check_only = true;
			break;
		default:
			usage();
		}
	}
	if (path == NULL || optind != argc)
		usage();
	if ((conf = cli_conf_load(path, debug)) == NULL)
		return EXIT_CONFIG;
	if (conf->nlisteners == 0) {
		/* conf_load takes a file with only [milter-server]: portier-milter's. */
		fprintf(stderr, "%s: no [listener]; this file serves portier-milter only: add a "
		    "[listener NAME] with listen = HOST:PORT for portier\n", path);
		conf_unref(conf);
		return EXIT_CONFIG;
	}
	snap = snapshot_new(conf, &err);
	if (snap == NULL) {
		fprintf(stderr, "%s\n", err);
		free(err);
		conf_unref(conf);
		return EXIT_CONFIG;
	}
	if (check_only) {
		printf("%s: configuration ok\n", path);
		snapshot_unref(snap);
		return 0;
	}
	if (!log_init(conf->log)) {
		fprintf(stderr, "%s: [server] log: \"%s\" is neither stderr nor syslog\n", path,
		    conf->log);
		snapshot_unref(snap);
		return EXIT_CONFIG;
	}
	rc = server_run(snap, path);
	snapshot_unref(snap);
	return rc;
}
