/*
 * server_bind.c - what portier takes from the system at start: its listen
 * addresses (each probed, then bound once per loop) and its share of file
 * descriptors (the process's session bound); and, on each reload, which
 * listener of the new config serves each address bound at start.
 *
 * Must never: share an address with another process, bind after the
 * privilege drop (a reload only maps and logs what a restart would bind or
 * close), or let a loop thread see the bound table change: it is written
 * before the loops start and freed after they stopped.
 */
#include "config.h"

#include <errno.h>
#include <limits.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

#include <event2/util.h>

#include "log.h"
#include "server.h"
#include "server_priv.h"
#include "util.h"

/*
 * The descriptor budget (fd_budget): what one session may hold at once (its
 * client, a backend connection, a spooled body), and what the process holds
 * whatever the sessions do.  Estimates on the high side: an overdrawn budget
 * means EMFILE in a session's relay or spool, which only the client sees.
 */
#define FD_PER_SESSION	3
#define FD_RESERVE	16	/* stdio, the main loop and its signal pipe, syslog, reload's files */
#define FD_PER_LOOP	6	/* epoll, wake-up eventfd and pipe, io_uring ring, spares */
#define FD_PER_WORKER	4	/* a Maildir delivery's directories and file, or a Dovecot socket */

/* An address bound at start: each loop has a socket on it. */
struct bound_addr {
	char *listener;		/* the [listener] that had it at start */
	char *spec;		/* as written there */
	struct sockaddr_storage ss;
	socklen_t len;
};

static struct bound_addr *bound;	/* set before the loops start, then read-only */
static size_t nbound;
static unsigned fd_session_max = UINT_MAX;	/* sessions RLIMIT_NOFILE leaves room for; set at start */

/* bind_spec - bound address bi as written in the config */
const char *
bind_spec(size_t bi)
{
	return bound[bi].spec;
}

/* bind_session_max - the sessions the descriptor limit leaves room for (UINT_MAX: no limit known) */
unsigned
bind_session_max(void)
{
	return fd_session_max;
}

/* parse_listen - "HOST:PORT" or "[V6]:PORT" into a sockaddr */
static bool
parse_listen(const char *spec, struct sockaddr_storage *ss, socklen_t *len_r)
{
	char host[128];
	const char *colon, *port;
	struct evutil_addrinfo hints, *ai = NULL;

	if (spec[0] == '[') {
		const char *rb = strchr(spec, ']');

		if (rb == NULL || rb[1] != ':' || (size_t)(rb - spec - 1) >= sizeof(host))
			return false;
		memcpy(host, spec + 1, (size_t)(rb - spec - 1));
		host[rb - spec - 1] = '\0';
		port = rb + 2;
	} else {
		colon = strrchr(spec, ':');
		if (colon == NULL || (size_t)(colon - spec) >= sizeof(host))
			return false;
		memcpy(host, spec, (size_t)(colon - spec));
		host[colon - spec] = '\0';
		port = colon + 1;
	}
	if (strcmp(host, "*") == 0)
		str_copy(host, "0.0.0.0", sizeof(host));
	else if (strcmp(host, "localhost") == 0)
		str_copy(host, "127.0.0.1", sizeof(host));
	memset(&hints, 0, sizeof(hints));
	hints.ai_family = AF_UNSPEC;
	hints.ai_socktype = SOCK_STREAM;
	hints.ai_flags = EVUTIL_AI_NUMERICHOST | EVUTIL_AI_NUMERICSERV | EVUTIL_AI_PASSIVE;
	if (evutil_getaddrinfo(host, port, &hints, &ai) != 0 || ai == NULL)
		return false;
	memcpy(ss, ai->ai_addr, ai->ai_addrlen);
	*len_r = (socklen_t)ai->ai_addrlen;
	evutil_freeaddrinfo(ai);
	return true;
}

/*
 * loop_cpu - the CPU whose connections loop i takes: the i-th CPU this
 * process may run on, round robin; -1 if unknown.
 */
static int
loop_cpu(unsigned i)
{
	cpu_set_t set;
	int cpu, n = 0, k;

	if (sched_getaffinity(0, sizeof(set), &set) != 0 || (n = CPU_COUNT(&set)) == 0)
		return -1;
	k = (int)(i % (unsigned)n);
	for (cpu = 0; cpu < CPU_SETSIZE; cpu++)
		if (CPU_ISSET(cpu, &set) && k-- == 0)
			return cpu;
	return -1;
}

/*
 * bind_one - a listening socket with SO_REUSEPORT on address b for loop i.
 *
 * SO_INCOMING_CPU: among the SO_REUSEPORT listeners of one address, the
 * kernel (Linux 6.2 and later; earlier ones hash) gives a new connection to
 * the listener whose CPU processed its handshake, so a session lives on the
 * loop of the CPU its packets arrive on.  Connections arriving on one CPU (one
 * NIC queue, or a local client) share one loop, which then serves them with
 * fewer thread wake-ups than if they were spread over every loop.
 */
static evutil_socket_t
bind_one(const struct bound_addr *b, unsigned i, char **err_r)
{
	int cpu = loop_cpu(i);
	evutil_socket_t fd;
	int on = 1;

	fd = socket(b->ss.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (fd < 0) {
		*err_r = xasprintf("socket: %s", strerror(errno));
		return -1;
	}
	setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &on, sizeof(on));
	setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &on, sizeof(on));
	if (cpu >= 0)
		setsockopt(fd, SOL_SOCKET, SO_INCOMING_CPU, &cpu, sizeof(cpu));
	/* Replies are whole; never let Nagle hold one back.  Accepted sockets inherit it. */
	setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &on, sizeof(on));
	if (b->ss.ss_family == AF_INET6)
		setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &on, sizeof(on));
	/* listen() comes after the privilege drop: nobody connects to a root process. */
	if (bind(fd, (const struct sockaddr *)&b->ss, b->len) < 0) {
		*err_r = xstrdup(strerror(errno));
		close(fd);
		return -1;
	}
	return fd;
}

/*
 * bind_probe - is address b free?  SO_REUSEPORT lets any socket of the same
 * user join a group, another program's included, and the kernel would then
 * share the connections out between us without a word.  A plain bind (no
 * SO_REUSEPORT; SO_REUSEADDR so that our own previous run's TIME_WAIT
 * connections do not count) fails when anyone holds the address, with or
 * without SO_REUSEPORT.  IPv6 addresses are probed V6ONLY, as bind_one binds
 * them: [::]:25 does not take 0.0.0.0:25's connections, so a server there
 * is no conflict.  NULL when free, else why not (caller frees).
 */
static char *
bind_probe(const struct bound_addr *b)
{
	evutil_socket_t fd;
	int on = 1;
	char *why = NULL;

	fd = socket(b->ss.ss_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return xasprintf("socket: %s", strerror(errno));
	setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &on, sizeof(on));
	if (b->ss.ss_family == AF_INET6)
		setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &on, sizeof(on));
	if (bind(fd, (const struct sockaddr *)&b->ss, b->len) < 0)
		why = errno == EADDRINUSE ? xstrdup("address already in use by another process") :
		    xstrdup(strerror(errno));
	close(fd);
	return why;
}

/* bind_forget - forget the bound addresses */
void
bind_forget(void)
{
	size_t i;

	for (i = 0; i < nbound; i++) {
		free(bound[i].listener);
		free(bound[i].spec);
	}
	free(bound);
	bound = NULL;
	nbound = 0;
}

/*
 * bind_collect - every listen address of conf, parsed, into bound[], each
 * probed: false (logged, naming listener and address) when one is not ours
 * to take.  All are probed before any is bound, so that our own 0.0.0.0:25
 * group never makes 127.0.0.1:25 look taken.
 */
bool
bind_collect(const struct conf *conf)
{
	size_t li, a;

	for (li = 0; li < conf->nlisteners; li++) {
		const struct conf_listener *cl = &conf->listeners[li];

		for (a = 0; a < cl->nlisten; a++) {
			struct bound_addr *b;
			char *why;

			bound = xreallocarray(bound, nbound + 1, sizeof(*bound));
			b = &bound[nbound++];
			b->listener = xstrdup(cl->name);
			b->spec = xstrdup(cl->listen[a]);
			if (!parse_listen(b->spec, &b->ss, &b->len))
				why = xstrdup("not HOST:PORT with a numeric host");
			else
				why = bind_probe(b);
			if (why != NULL) {
				log_err("event=bind_error listener=%s listen=%s error=\"%s\"",
				    cl->name, b->spec, why);
				free(why);
				return false;
			}
		}
	}
	return true;
}

/* bind_close - close what bind_loops opened (a failed start) */
void
bind_close(struct loop *loops, unsigned nloops)
{
	unsigned i;
	size_t k;

	for (i = 0; i < nloops; i++) {
		for (k = 0; k < loops[i].nsocks; k++)
			close(loops[i].socks[k].fd);
		free(loops[i].socks);
		loops[i].socks = NULL;
		loops[i].nsocks = 0;
	}
}

/* bind_loops - every bound address, once per loop */
bool
bind_loops(struct loop *loops, unsigned nloops)
{
	unsigned i;
	size_t bi;

	for (i = 0; i < nloops; i++) {
		loops[i].socks = xcalloc(nbound ? nbound : 1, sizeof(*loops[i].socks));
		for (bi = 0; bi < nbound; bi++) {
			struct listen_sock *ls;
			char *err = NULL;
			evutil_socket_t fd = bind_one(&bound[bi], i, &err);

			if (fd < 0) {
				log_err("event=bind_error listener=%s listen=%s error=\"%s\"",
				    bound[bi].listener, bound[bi].spec, err);
				free(err);
				return false;
			}
			ls = &loops[i].socks[loops[i].nsocks++];
			ls->loop = &loops[i];
			ls->fd = fd;
			ls->bi = bi;
		}
	}
	return true;
}

/* sockaddr_same - one address and port? */
static bool
sockaddr_same(const struct sockaddr_storage *a, const struct sockaddr_storage *b)
{
	if (a->ss_family != b->ss_family)
		return false;
	if (a->ss_family == AF_INET) {
		const struct sockaddr_in *x = (const void *)a, *y = (const void *)b;

		return x->sin_port == y->sin_port && x->sin_addr.s_addr == y->sin_addr.s_addr;
	}
	if (a->ss_family == AF_INET6) {
		const struct sockaddr_in6 *x = (const void *)a, *y = (const void *)b;

		return x->sin6_port == y->sin6_port && x->sin6_scope_id == y->sin6_scope_id &&
		    memcmp(&x->sin6_addr, &y->sin6_addr, sizeof(x->sin6_addr)) == 0;
	}
	return false;
}

/* listener_with_addr - the listener of conf listing bound address b, or SIZE_MAX */
static size_t
listener_with_addr(const struct conf *conf, const struct bound_addr *b)
{
	struct sockaddr_storage ss;
	socklen_t len;
	size_t li, a;

	for (li = 0; li < conf->nlisteners; li++)
		for (a = 0; a < conf->listeners[li].nlisten; a++)
			if (parse_listen(conf->listeners[li].listen[a], &ss, &len) &&
			    sockaddr_same(&ss, &b->ss))
				return li;
	return SIZE_MAX;
}

/* listener_named - the listener of conf called name, or SIZE_MAX */
static size_t
listener_named(const struct conf *conf, const char *name)
{
	size_t li;

	for (li = 0; li < conf->nlisteners; li++)
		if (strcmp(conf->listeners[li].name, name) == 0)
			return li;
	return SIZE_MAX;
}

/* addr_is_bound - is spec one of the addresses bound at start? */
static bool
addr_is_bound(const char *spec)
{
	struct bound_addr b;
	size_t bi;

	if (!parse_listen(spec, &b.ss, &b.len))
		return false;
	for (bi = 0; bi < nbound; bi++)
		if (sockaddr_same(&bound[bi].ss, &b.ss))
			return true;
	return false;
}

/*
 * bind_map - which listener of snap serves each bound address: the one
 * that lists it, else (its address was changed) the one of the name that
 * bound it, else none (its connections get 421).  Sockets are bound only at
 * start (after the privilege drop, ports below 1024 could not be bound
 * again), so a reload logs every address a restart would bind or close;
 * returns how many.
 */
unsigned
bind_map(struct snapshot *snap)
{
	const struct conf *conf = snap->conf;
	unsigned restart = 0;
	size_t bi, li, a;

	snap->bound_li = xcalloc(nbound ? nbound : 1, sizeof(*snap->bound_li));
	for (bi = 0; bi < nbound; bi++) {
		const struct bound_addr *b = &bound[bi];

		li = listener_with_addr(conf, b);
		if (li != SIZE_MAX && strcmp(conf->listeners[li].name, b->listener) != 0)
			log_info("event=reload listen=%s listener=%s was=%s", b->spec,
			    conf->listeners[li].name, b->listener);
		if (li == SIZE_MAX && (li = listener_named(conf, b->listener)) != SIZE_MAX) {
			log_warn("event=reload listener=%s listen=%s warning=\"no longer listed; "
			    "still served by this listener until portier is restarted\"",
			    b->listener, b->spec);
			restart++;
		} else if (li == SIZE_MAX) {
			log_warn("event=reload listen=%s warning=\"no listener has this address: "
			    "connections get 421 until portier is restarted\"", b->spec);
			restart++;
		}
		snap->bound_li[bi] = li;
	}
	for (li = 0; li < conf->nlisteners; li++) {
		for (a = 0; a < conf->listeners[li].nlisten; a++) {
			if (addr_is_bound(conf->listeners[li].listen[a]))
				continue;
			log_warn("event=reload listener=%s listen=%s warning=\"not bound: restart "
			    "portier to listen there\"", conf->listeners[li].name,
			    conf->listeners[li].listen[a]);
			restart++;
		}
	}
	return restart;
}

/*
 * fd_budget - the sessions RLIMIT_NOFILE leaves room for, after the
 * process's own descriptors (FD_RESERVE, per loop its listening sockets,
 * wake-ups and idle backend connections, per worker thread), at
 * FD_PER_SESSION each.  Raises the soft limit toward the hard one first when
 * max_sessions needs it.  0 when not even one session fits.
 */
static unsigned
fd_budget(const struct conf *conf, unsigned nloops, rlim_t *nofile_r, rlim_t *reserve_r)
{
	struct rlimit rl;
	unsigned threads = conf->filter_threads + conf->auth_threads + conf->delivery_threads;
	rlim_t reserve, want, room;

	reserve = FD_RESERVE + (rlim_t)nloops * (FD_PER_LOOP + nbound + conf->relay_pool) +
	    (rlim_t)threads * FD_PER_WORKER;
	want = reserve + (rlim_t)FD_PER_SESSION * conf->limits.max_sessions;
	*reserve_r = reserve;
	*nofile_r = RLIM_INFINITY;
	if (getrlimit(RLIMIT_NOFILE, &rl) != 0 || rl.rlim_cur == RLIM_INFINITY)
		return UINT_MAX;
	if (rl.rlim_cur < want && rl.rlim_max > rl.rlim_cur) {
		struct rlimit up = { rl.rlim_max < want ? rl.rlim_max : want, rl.rlim_max };

		if (setrlimit(RLIMIT_NOFILE, &up) == 0)
			rl.rlim_cur = up.rlim_cur;
	}
	*nofile_r = rl.rlim_cur;
	if (rl.rlim_cur < reserve + FD_PER_SESSION)
		return 0;
	room = (rl.rlim_cur - reserve) / FD_PER_SESSION;
	return room < UINT_MAX ? (unsigned)room : UINT_MAX;
}

/* bind_size_sessions - set the process bound from RLIMIT_NOFILE; false (logged) if none fits */
bool
bind_size_sessions(const struct conf *conf, unsigned nloops)
{
	rlim_t nofile, reserve;
	unsigned max = fd_budget(conf, nloops, &nofile, &reserve);

	if (max == 0) {
		log_err("event=startup error=\"RLIMIT_NOFILE %llu leaves no descriptor for a session: "
		    "%llu needed, plus %d a session; raise the limit (ulimit -n, LimitNOFILE=) or "
		    "lower workers, the *_threads or relay_pool\"", (unsigned long long)nofile,
		    (unsigned long long)reserve, FD_PER_SESSION);
		return false;
	}
	fd_session_max = max;
	if (max < conf->limits.max_sessions)
		log_warn("event=max_sessions_lowered configured=%u max_sessions=%u nofile=%llu "
		    "reserve=%llu per_session=%d", conf->limits.max_sessions, max,
		    (unsigned long long)nofile, (unsigned long long)reserve, FD_PER_SESSION);
	return true;
}
