/*
 * portier_milter.c - portier-milter: portier's built-in filters served to
 * Postfix or Sendmail through libmilter (portier-milter(8)).
 *
 * portier-milter [-t] [-f] [-d] -c FILE.  FILE is portier.conf, read by
 * conf_load as the daemon reads it; [milter-server] says where to listen,
 * which filters run (with their [filter NAME] sections) and the role whose
 * safety filter heads the chain.  -t checks the file and the chain and
 * exits 0, or 2 after naming file, line and key of every error.  -f removes
 * a unix socket left by an earlier run.  -d logs debug lines.
 *
 * The socket is opened as the starting user, then [server] user is taken
 * for good (refusing to serve as root), as portier does.  SIGTERM (and
 * SIGINT) stop it: libmilter's signal thread closes the socket and
 * smfi_main returns; the callbacks running get [server] drain_timeout, the
 * connections left open are closed through the chain, exit 0.  SIGHUP does
 * the same: libmilter's signal thread owns SIGHUP too, so portier-milter
 * cannot reload; a supervisor restarts it (it keeps no state, and the MTA
 * applies its milter_default_action meanwhile).  Never forks.
 */
#include "config.h"

#include <errno.h>
#include <pthread.h>
#include <pwd.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <event2/thread.h>
#include <libmilter/mfapi.h>
#include <openssl/crypto.h>

#include "util.h"
#include "conf.h"
#include "log.h"
#include "resolver.h"
#include "server.h"
#include "workers.h"
#include "cli.h"
#include "filter.h"
#include "pmilter.h"
#include "state.h"

#define EXIT_CONFIG 2

/* usage - print the synopsis */
static void
usage(void)
{
	fprintf(stderr, "usage: portier-milter [-t] [-f] [-d] -c FILE\n");
	exit(EXIT_CONFIG);
}

/* key_line - the line of key in section [type], else the section's, else 1 */
static int
key_line(const struct conf *conf, const char *type, const char *key)
{
	const struct conf_section *s = conf_section_find(conf, type, NULL);
	size_t i;

	for (i = 0; s != NULL && i < s->nkv; i++)
		if (strcmp(s->kv[i].key, key) == 0)
			return s->kv[i].line;
	return s != NULL ? s->line : 1;
}

/*
 * milter_check - what conf_load cannot check: a [milter-server] section, the
 * resolver settings, the chain (filter names, their sections, keys they
 * load).  The chain, or NULL after printing FILE:LINE: errors.
 */
static struct filter_chain *
milter_check(const struct conf *conf)
{
	struct filter_chain *chain;
	char *err = NULL;

	if (conf->milter_server == NULL) {
		fprintf(stderr, "%s:1: [milter-server]: missing; add it with listen = "
		    "inet:127.0.0.1:8891 and filters = spf dkim-verify dmarc\n", conf->path);
		return NULL;
	}
	if (!resolver_check(conf, &err)) {
		fprintf(stderr, "%s:%d: [server] resolver: %s\n", conf->path,
		    key_line(conf, "server", "resolver"), err);
		free(err);
		return NULL;
	}
	if ((chain = snapshot_chain(conf, &conf->milter_server->l, &err)) == NULL) {
		fprintf(stderr, "%s:%d: [milter-server] filters: %s\n", conf->path,
		    key_line(conf, "milter-server", "filters"), err != NULL ? err : "error");
		free(err);
	}
	return chain;
}

/*
 * milter_socket - libmilter's socket, opened as the starting user; a unix
 * one gets socket_mode and, as root, [server] user as owner (it keeps
 * working after the privilege drop, and the MTA's user joins its group)
 */
static bool
milter_socket(const struct conf *conf, bool force)
{
	const struct conf_milter_server *ms = conf->milter_server;
	const char *path = ms->socket + 5;
	struct passwd *pw;

	if (smfi_setconn(ms->socket) != MI_SUCCESS || smfi_opensocket(force) != MI_SUCCESS) {
		log_err("event=startup listen=%s error=\"cannot open the socket%s\"", ms->l.listen[0],
		    strncmp(ms->socket, "unix:", 5) == 0 && !force ?
		    " (a stale one? -f removes it)" : "");
		return false;
	}
	if (strncmp(ms->socket, "unix:", 5) != 0)
		return true;
	if (geteuid() == 0 && conf->user != NULL && (pw = getpwnam(conf->user)) != NULL &&
	    chown(path, pw->pw_uid, pw->pw_gid) != 0) {
		log_err("event=startup listen=%s error=\"chown: %s\"", ms->l.listen[0],
		    strerror(errno));
		return false;
	}
	if (chmod(path, (mode_t)ms->socket_mode) != 0) {
		log_err("event=startup listen=%s error=\"chmod: %s\"", ms->l.listen[0],
		    strerror(errno));
		return false;
	}
	return true;
}

/*
 * milter_serve - libmilter's main loop over the chain, until a signal
 * stops it; the exit status.  Every thread is started here with SIGTERM,
 * SIGINT and SIGHUP blocked: libmilter's signal thread takes them with
 * sigwait.  Frees chain and conf, unless a callback still runs on them.
 */
static int
milter_serve(struct conf *conf, struct filter_chain *chain, bool force)
{
	const struct conf_section *server = conf_section_find(conf, "server", NULL);
	struct pmilter_server srv;
	struct smfiDesc desc;
	struct workers *pool;
	sigset_t set;
	int rc;

	sigemptyset(&set);
	sigaddset(&set, SIGTERM);
	sigaddset(&set, SIGINT);
	sigaddset(&set, SIGHUP);
	pthread_sigmask(SIG_BLOCK, &set, NULL);
	signal(SIGPIPE, SIG_IGN);
	evthread_use_pthreads();

	memset(&srv, 0, sizeof(srv));
	srv.conf = conf;
	srv.l = &conf->milter_server->l;
	srv.chain = chain;
	/* Our name in Authentication-Results: [server] hostname, else the MTA's (j). */
	srv.authserv_id = conf_section_get(server, "hostname") != NULL ? conf->hostname : NULL;
	pmilter_cb_desc(&srv, &desc);
	if (smfi_register(desc) != MI_SUCCESS) {
		log_err("event=startup error=\"smfi_register failed\"");
		rc = 1;
		goto out;
	}
	if (!milter_socket(conf, force) || !server_drop_privileges(conf->user)) {
		rc = 1;
		goto out;
	}
	pool = workers_new(conf->filter_threads, conf->pool_queue);
	srv.loops = pmilter_loops_new(pool, conf, filter_chain_dns(chain));
	log_info("event=startup listen=%s role=%s filters=%s", srv.l->listen[0],
	    srv.l->role == ROLE_MX ? "mx" : "submission", filter_chain_names(chain));

	rc = smfi_main() == MI_SUCCESS ? 0 : 1;

	log_info("event=shutdown state=draining");
	if (!pmilter_cb_shutdown(conf->drain_timeout)) {
		/* A callback still runs on what we would free: leave it all to the exit. */
		log_info("event=shutdown state=done");
		return rc;
	}
	pmilter_loops_free(srv.loops);
	workers_free(pool);
	filter_pools_free();
	state_shutdown();
	log_info("event=shutdown state=done");
out:
	filter_chain_free(chain);
	conf_unref(conf);
	return rc;
}

/* main - options, the configuration and its check, then serve */
int
main(int argc, char *argv[])
{
	const char *path = NULL;
	bool check_only = false, debug = false, force = false;
	struct filter_chain *chain;
	struct conf *conf;
	int ch, rc;

	while ((ch = getopt(argc, argv, "c:dft")) != -1) {
		switch (ch) {
		case 'c':
			path = optarg;
			break;
		case 'd':
			debug = true;
			break;
		case 'f':
			force = true;
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
	/*
	 * Before anything touches OpenSSL: no OPENSSL_cleanup at exit.
	 * libmilter's workers are detached threads that run the chain (DKIM
	 * on them) and end on their own, some while this process exits; the
	 * exit handler would delete OpenSSL's thread-local keys under them (a
	 * worker ending then never frees its OpenSSL state) and free what a
	 * callback left running by the drain still uses.  The exit frees it.
	 */
	if (OPENSSL_init_crypto(OPENSSL_INIT_NO_ATEXIT, NULL) != 1)
		fatal("OpenSSL initialisation failed");
	if ((conf = cli_conf_load(path, debug)) == NULL)
		return EXIT_CONFIG;
	if ((chain = milter_check(conf)) == NULL) {
		conf_unref(conf);
		return EXIT_CONFIG;
	}
	if (!check_only && log_init(conf->log))
		return milter_serve(conf, chain, force);
	if (check_only) {
		printf("%s: configuration ok\n", path);
		rc = 0;
	} else {
		fprintf(stderr, "%s: [server] log: \"%s\" is neither stderr nor syslog\n", path,
		    conf->log);
		rc = EXIT_CONFIG;
	}
	filter_chain_free(chain);
	conf_unref(conf);
	return rc;
}
