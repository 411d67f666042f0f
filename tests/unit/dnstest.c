/*
 * dnstest.c - a private unbound for unit tests (see dnstest.h).
 *
 * The configuration: the caller's lines, each stall name a "deny" local
 * zone (queries dropped), each servfail name a "typetransparent" local
 * zone (its local-data, if any, is answered; every other type is resolved)
 * forwarded to ::1@53, an address this unbound (do-ip6: no) will not query,
 * so it answers SERVFAIL at once.  The iterator is the only module: no
 * validation, no query leaves the host.
 */
#include "config.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "dnstest.h"

/* dnstest_free_port - bind UDP to port 0, then make sure TCP is free there too */
unsigned
dnstest_free_port(void)
{
	struct sockaddr_in sin;
	socklen_t len = sizeof(sin);
	int fd = socket(AF_INET, SOCK_DGRAM, 0), tfd;
	unsigned port;

	memset(&sin, 0, sizeof(sin));
	sin.sin_family = AF_INET;
	sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	if (fd < 0 || bind(fd, (struct sockaddr *)&sin, sizeof(sin)) != 0 ||
	    getsockname(fd, (struct sockaddr *)&sin, &len) != 0) {
		if (fd >= 0)
			close(fd);
		return 0;
	}
	port = ntohs(sin.sin_port);
	close(fd);
	tfd = socket(AF_INET, SOCK_STREAM, 0);
	if (tfd < 0 || bind(tfd, (struct sockaddr *)&sin, sizeof(sin)) != 0)
		port = 0;
	if (tfd >= 0)
		close(tfd);
	return port;
}

enum dnstest_kind { DNSTEST_STALL, DNSTEST_SERVFAIL_ZONE, DNSTEST_SERVFAIL_FORWARD };

/* dnstest_names - the configuration lines of kind for each space-separated name of list */
static void
dnstest_names(FILE *f, const char *list, enum dnstest_kind kind)
{
	const char *dot;
	size_t n;
	int len;

	while (list != NULL && *list != '\0') {
		list += strspn(list, " ");
		if ((n = strcspn(list, " ")) == 0 || n > 255)
			break;
		len = (int)n;
		dot = list[n - 1] == '.' ? "" : ".";
		if (kind == DNSTEST_STALL)
			fprintf(f, "  local-zone: \"%.*s%s\" deny\n", len, list, dot);
		else if (kind == DNSTEST_SERVFAIL_ZONE)
			fprintf(f, "  local-zone: \"%.*s%s\" typetransparent\n", len, list, dot);
		else
			fprintf(f, "forward-zone:\n  name: \"%.*s%s\"\n  forward-addr: ::1@53\n",
			    len, list, dot);
		list += n;
	}
}

/* dnstest_write_conf - unbound.conf for z on d->port */
static bool
dnstest_write_conf(const struct dnstest *d, const struct dnstest_zones *z, const char *path)
{
	FILE *f = fopen(path, "w");

	if (f == NULL)
		return false;
	fprintf(f,
	    "server:\n"
	    "  interface: 127.0.0.1\n  port: %u\n  do-ip6: no\n  do-daemonize: no\n"
	    "  username: \"\"\n  chroot: \"\"\n  directory: \"%s\"\n  pidfile: \"%s/unbound.pid\"\n"
	    "  use-syslog: no\n  logfile: \"%s/unbound.log\"\n  verbosity: 1\n"
	    "  access-control: 127.0.0.0/8 allow\n  module-config: \"iterator\"\n"
	    "  num-threads: 1\n",
	    d->port, d->dir, d->dir, d->dir);
	if (z->data != NULL)
		fprintf(f, "%s\n", z->data);
	dnstest_names(f, z->stall, DNSTEST_STALL);
	dnstest_names(f, z->servfail, DNSTEST_SERVFAIL_ZONE);
	dnstest_names(f, z->servfail, DNSTEST_SERVFAIL_FORWARD);
	return fclose(f) == 0;
}

/* dnstest_ready - unbound logged its start */
static bool
dnstest_ready(const struct dnstest *d)
{
	char path[128], line[512];
	FILE *f;
	bool ok = false;

	snprintf(path, sizeof(path), "%s/unbound.log", d->dir);
	if ((f = fopen(path, "r")) == NULL)
		return false;
	while (!ok && fgets(line, sizeof(line), f))
		ok = strstr(line, "start of service") != NULL;
	fclose(f);
	return ok;
}

/* dnstest_start - write the configuration, fork unbound -d, wait for its start */
bool
dnstest_start(struct dnstest *d, const struct dnstest_zones *z)
{
	const char *bin = getenv("UNBOUND") ? getenv("UNBOUND") : "/usr/sbin/unbound";
	char conf[128];
	int tries, i;

	memset(d, 0, sizeof(*d));
	d->pid = -1;
	snprintf(d->dir, sizeof(d->dir), "/tmp/dnstest.XXXXXX");
	if (mkdtemp(d->dir) == NULL) {
		d->dir[0] = '\0';
		return false;
	}
	snprintf(conf, sizeof(conf), "%s/unbound.conf", d->dir);
	for (tries = 0; tries < 5; tries++) {
		if ((d->port = dnstest_free_port()) == 0 || !dnstest_write_conf(d, z, conf))
			continue;
		if ((d->pid = fork()) == 0) {
			execl(bin, bin, "-d", "-c", conf, (char *)NULL);
			_exit(127);
		}
		for (i = 0; i < 200 && !dnstest_ready(d); i++) {
			struct timespec ts = { 0, 25 * 1000 * 1000 };

			if (waitpid(d->pid, NULL, WNOHANG) == d->pid) {
				d->pid = -1;
				break;
			}
			nanosleep(&ts, NULL);
		}
		if (d->pid > 0 && dnstest_ready(d)) {
			snprintf(d->servers, sizeof(d->servers), "127.0.0.1@%u", d->port);
			return true;
		}
		dnstest_kill(d);
	}
	return false;
}

/* dnstest_kill - SIGKILL and reap: the server vanishes without a word */
void
dnstest_kill(struct dnstest *d)
{
	if (d->pid > 0) {
		kill(d->pid, SIGKILL);
		waitpid(d->pid, NULL, 0);
	}
	d->pid = -1;
}

/* dnstest_stop - kill and remove the directory */
void
dnstest_stop(struct dnstest *d)
{
	char cmd[160];

	dnstest_kill(d);
	if (d->dir[0] == '\0')
		return;
	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", d->dir);
	if (system(cmd) != 0)
		fprintf(stderr, "dnstest: could not remove %s\n", d->dir);
	d->dir[0] = '\0';
}
