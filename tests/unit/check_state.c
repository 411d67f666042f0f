/*
 * check_state.c - unit tests for the shared-state store (policy/state.c,
 * policy/state_redis.c): the memory store on a synthetic clock (sliding
 * counts, greylisting triplets, auto_allow, a clock that steps back, the
 * entry cap), and the Redis store against a real redis-server: two loops
 * sharing counts, the same greylisting answers, a server that is not there
 * and comes back, a hung one (SIGSTOP) and the timeout, an error reply,
 * AUTH, cancel and a loop that ends with calls in flight.
 *
 * main() starts redis-server (needs it on PATH: scripts/install-deps.sh
 * installs it) on 127.0.0.1 on a free port with no persistence, runs the
 * suite and kills it by its PID.  Each test runs in its own process, so
 * each gets a fresh store (state_get makes one per process).
 */
#include "config.h"

#include <check.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include <event2/event.h>

#include "conf.h"
#include "util.h"
#include "state.h"
#include "unit.h"
#include "dnstest.h"

static unsigned redis_port;	/* the suite's server */
static pid_t redis_pid = -1;
static char redis_dir[64];

/* --- a redis-server of our own ----------------------------------------------------- */

/* redis_spawn - redis-server on port (password or NULL), ready for PING; its pid or -1 */
static pid_t
redis_spawn(unsigned port, const char *password)
{
	char portstr[16], cmd[256], log[128], sock[128];
	pid_t pid;
	int i, rc;

	snprintf(portstr, sizeof(portstr), "%u", port);
	snprintf(sock, sizeof(sock), "%s/redis-%u.sock", redis_dir, port);
	snprintf(log, sizeof(log), "%s/redis-%u.log", redis_dir, port);
	if ((pid = fork()) == 0) {
		if (password != NULL)
			execlp("redis-server", "redis-server", "--port", portstr, "--bind", "127.0.0.1",
			    "--save", "", "--appendonly", "no", "--dir", redis_dir, "--logfile", log,
			    "--requirepass", password, (char *)NULL);
		else
			execlp("redis-server", "redis-server", "--port", portstr, "--bind", "127.0.0.1",
			    "--save", "", "--appendonly", "no", "--dir", redis_dir, "--logfile", log,
			    "--unixsocket", sock, "--unixsocketperm", "700", (char *)NULL);
		_exit(127);
	}
	if (pid < 0)
		return -1;
	snprintf(cmd, sizeof(cmd), "redis-cli -p %u %s%s PING 2>/dev/null | grep -q -e PONG -e NOAUTH",
	    port, password != NULL ? "--no-auth-warning -a " : "", password != NULL ? password : "");
	for (i = 0; i < 100; i++) {
		if ((rc = system(cmd)) == 0)
			return pid;
		if (waitpid(pid, NULL, WNOHANG) == pid)
			return -1;
		usleep(50000);
	}
	kill(pid, SIGKILL);
	waitpid(pid, NULL, 0);
	return -1;
}

/* free_port - a loopback port free for TCP (dnstest_free_port may find none at a try) */
static unsigned
free_port(void)
{
	unsigned port = 0;
	int i;

	for (i = 0; i < 50 && port == 0; i++)
		port = dnstest_free_port();
	ck_assert_uint_ne(port, 0);
	return port;
}

/* redis_kill - stop a server of ours by its pid */
static void
redis_kill(pid_t pid)
{
	if (pid <= 0)
		return;
	kill(pid, SIGCONT);
	kill(pid, SIGKILL);
	waitpid(pid, NULL, 0);
}

/* --- helpers ---------------------------------------------------------------------- */

struct answer {
	int calls;
	struct state_reply rep;
	char error[160];
};

/* answer_cb - a done callback: keep a copy */
static void
answer_cb(void *arg, const struct state_reply *rep)
{
	struct answer *a = arg;

	a->calls++;
	a->rep = *rep;
	a->rep.error = NULL;
	snprintf(a->error, sizeof(a->error), "%s", rep->error != NULL ? rep->error : "");
}

/* wait_answer - run base until a answered (or seconds passed) */
static void
wait_answer(struct event_base *base, struct answer *a, unsigned seconds)
{
	unsigned long long end = now_ms() + seconds * 1000ULL;
	struct timeval tick = { 0, 20000 };

	while (a->calls == 0 && now_ms() < end) {
		event_base_loopexit(base, &tick);
		event_base_dispatch(base);
	}
}

/* run_for - run base for ms */
static void
run_for(struct event_base *base, unsigned ms)
{
	struct timeval tv = { ms / 1000, (ms % 1000) * 1000 };

	event_base_loopexit(base, &tv);
	event_base_dispatch(base);
}

/* count_on - one state_count on base, answered inline or through the loop */
static void
count_on(struct state *st, struct event_base *base, const char *key, unsigned add,
    unsigned window, struct answer *a)
{
	struct state_reply rep;

	memset(a, 0, sizeof(*a));
	if (state_count(st, base, key, add, window, &rep, answer_cb, a) == NULL)
		answer_cb(a, &rep);
	else
		wait_answer(base, a, 5);
	ck_assert_int_eq(a->calls, 1);
}

/* count_many_on - one state_count_many on base, answered inline or through the loop */
static void
count_many_on(struct state *st, struct event_base *base, size_t n, const char *const *keys,
    const unsigned *windows, unsigned add, struct answer *a)
{
	struct state_reply rep;

	memset(a, 0, sizeof(*a));
	if (state_count_many(st, base, n, keys, windows, add, &rep, answer_cb, a) == NULL)
		answer_cb(a, &rep);
	else
		wait_answer(base, a, 5);
	ck_assert_int_eq(a->calls, 1);
}

/* grey_on - one state_grey on base */
static void
grey_on(struct state *st, struct event_base *base, const char *key, const char *client,
    const struct state_grey_params *p, struct answer *a)
{
	struct state_reply rep;

	memset(a, 0, sizeof(*a));
	if (state_grey(st, base, key, client, p, &rep, answer_cb, a) == NULL)
		answer_cb(a, &rep);
	else
		wait_answer(base, a, 5);
	ck_assert_int_eq(a->calls, 1);
}

static struct conf test_conf;

/* memory_store - a fresh memory store on the synthetic clock */
static int64_t fake_now;

static int64_t
fake_clock(void)
{
	return fake_now;
}

static struct state *
memory_store(unsigned entries)
{
	struct state *st;

	memset(&test_conf, 0, sizeof(test_conf));
	test_conf.state_entries = entries;
	st = state_get(&test_conf);
	ck_assert(!state_is_redis(st));
	ck_assert_str_eq(state_name(st), "memory");
	fake_now = 1000;
	state_memory_set_clock(st, fake_clock);
	return st;
}

/* redis_store - a fresh Redis store on port (0: the suite's server's unix socket) */
static struct state *
redis_store(unsigned port, unsigned timeout, const char *password, const char *prefix)
{
	static char server[128];
	struct state *st;

	if (port == 0)
		snprintf(server, sizeof(server), "unix:%s/redis-%u.sock", redis_dir, redis_port);
	else
		snprintf(server, sizeof(server), "127.0.0.1:%u", port);
	memset(&test_conf, 0, sizeof(test_conf));
	test_conf.state_entries = 1000;
	test_conf.redis_server = server;
	test_conf.redis_timeout = timeout;
	test_conf.redis_password = (char *)password;
	test_conf.redis_prefix = (char *)prefix;
	st = state_get(&test_conf);
	ck_assert(state_is_redis(st));
	return st;
}

/* --- memory: counters ------------------------------------------------------------------ */

START_TEST(test_memory_count)
{
	struct state *st = memory_store(1000);
	struct answer a;
	int i;

	for (i = 1; i <= 5; i++) {
		count_on(st, NULL, "rl:c:192.0.2.1", 1, 60, &a);
		ck_assert_str_eq(a.error, "");
		ck_assert_uint_eq(a.rep.counts[0].count, (uint64_t)i);
		ck_assert_uint_ge(a.rep.counts[0].reset, 1);
		ck_assert_uint_le(a.rep.counts[0].reset, 60 + 4);	/* one step more at most */
	}
	count_on(st, NULL, "rl:c:192.0.2.1", 0, 60, &a);	/* a read adds nothing */
	ck_assert_uint_eq(a.rep.counts[0].count, 5);
	count_on(st, NULL, "rl:c:192.0.2.2", 1, 60, &a);	/* another key */
	ck_assert_uint_eq(a.rep.counts[0].count, 1);
	count_on(st, NULL, "rl:c:192.0.2.1", 0, 30, &a);	/* another window is another counter */
	ck_assert_uint_eq(a.rep.counts[0].count, 0);
	state_shutdown();
}
END_TEST

START_TEST(test_memory_slide)
{
	struct state *st = memory_store(1000);
	struct answer a;

	/* window <= STATE_STEPS: exact, an add at t counts while now - t < window */
	fake_now = 100;
	count_on(st, NULL, "k", 4, 10, &a);
	ck_assert_uint_eq(a.rep.counts[0].count, 4);
	ck_assert_uint_eq(a.rep.counts[0].reset, 10);
	fake_now = 105;
	count_on(st, NULL, "k", 1, 10, &a);
	ck_assert_uint_eq(a.rep.counts[0].count, 5);
	ck_assert_uint_eq(a.rep.counts[0].reset, 5);	/* the oldest leaves first */
	fake_now = 109;
	count_on(st, NULL, "k", 0, 10, &a);
	ck_assert_uint_eq(a.rep.counts[0].count, 5);
	fake_now = 110;
	count_on(st, NULL, "k", 0, 10, &a);
	ck_assert_uint_eq(a.rep.counts[0].count, 1);
	ck_assert_uint_eq(a.rep.counts[0].reset, 5);
	fake_now = 115;
	count_on(st, NULL, "k", 0, 10, &a);
	ck_assert_uint_eq(a.rep.counts[0].count, 0);
	ck_assert_uint_eq(a.rep.counts[0].reset, 1);

	/* 60 s in steps of 4 s: an add at 1000 counts 60 s at least, one step more at most */
	fake_now = 1000;
	count_on(st, NULL, "m", 1, 60, &a);
	ck_assert_uint_eq(a.rep.counts[0].count, 1);
	ck_assert_uint_eq(a.rep.counts[0].reset, 63);
	fake_now = 1059;
	count_on(st, NULL, "m", 0, 60, &a);
	ck_assert_uint_eq(a.rep.counts[0].count, 1);
	fake_now = 1062;
	count_on(st, NULL, "m", 0, 60, &a);
	ck_assert_uint_eq(a.rep.counts[0].count, 1);
	ck_assert_uint_eq(a.rep.counts[0].reset, 1);
	fake_now = 1063;
	count_on(st, NULL, "m", 0, 60, &a);
	ck_assert_uint_eq(a.rep.counts[0].count, 0);
	state_shutdown();
}
END_TEST

START_TEST(test_memory_cap)
{
	struct state *st = memory_store(1000);
	struct answer a;
	char key[32];
	int i;

	for (i = 0; i < 5000; i++) {
		snprintf(key, sizeof(key), "k%d", i);
		count_on(st, NULL, key, 1, 60, &a);
	}
	ck_assert_uint_le(state_memory_entries(st), 1000);
	count_on(st, NULL, "k4999", 0, 60, &a);		/* the newest stay */
	ck_assert_uint_eq(a.rep.counts[0].count, 1);
	count_on(st, NULL, "k0", 0, 60, &a);		/* the stalest went */
	ck_assert_uint_eq(a.rep.counts[0].count, 0);
	fake_now += 1000;				/* all expired: dropped as new ones come */
	for (i = 0; i < 20; i++) {
		snprintf(key, sizeof(key), "n%d", i);
		count_on(st, NULL, key, 1, 60, &a);
	}
	ck_assert_uint_lt(state_memory_entries(st), 1000);
	state_shutdown();
}
END_TEST

START_TEST(test_key_too_long)
{
	struct state *st = memory_store(1000);
	char key[STATE_KEY_MAX + 2];
	struct answer a;

	memset(key, 'x', sizeof(key) - 1);
	key[sizeof(key) - 1] = '\0';
	count_on(st, NULL, key, 1, 60, &a);
	ck_assert_str_eq(a.error, "key too long");
	state_shutdown();
}
END_TEST

/* --- memory: greylisting -------------------------------------------------------------- */

static const struct state_grey_params grey_params = { 60, 600, 3600, 2 };

START_TEST(test_memory_grey)
{
	struct state *st = memory_store(1000);
	struct answer a;

	grey_on(st, NULL, "t1", "c1", &grey_params, &a);
	ck_assert_int_eq(a.rep.grey.verdict, STATE_GREY_NEW);
	ck_assert_uint_eq(a.rep.grey.wait, 60);
	fake_now += 20;
	grey_on(st, NULL, "t1", "c1", &grey_params, &a);
	ck_assert_int_eq(a.rep.grey.verdict, STATE_GREY_EARLY);
	ck_assert_uint_eq(a.rep.grey.wait, 40);
	fake_now += 40;
	grey_on(st, NULL, "t1", "c1", &grey_params, &a);
	ck_assert_int_eq(a.rep.grey.verdict, STATE_GREY_PASSED);
	fake_now += 3000;				/* passed triplets are kept lifetime from each use */
	grey_on(st, NULL, "t1", "c1", &grey_params, &a);
	ck_assert_int_eq(a.rep.grey.verdict, STATE_GREY_PASSED);
	fake_now += 3601;				/* unused for longer than lifetime: new again */
	grey_on(st, NULL, "t1", "c9", &grey_params, &a);
	ck_assert_int_eq(a.rep.grey.verdict, STATE_GREY_NEW);
	/* a new triplet not retried within retry_window starts over */
	grey_on(st, NULL, "t2", "c9", &grey_params, &a);
	ck_assert_int_eq(a.rep.grey.verdict, STATE_GREY_NEW);
	fake_now += 601;
	grey_on(st, NULL, "t2", "c9", &grey_params, &a);
	ck_assert_int_eq(a.rep.grey.verdict, STATE_GREY_NEW);
	state_shutdown();
}
END_TEST

START_TEST(test_memory_grey_auto_allow)
{
	struct state *st = memory_store(1000);
	struct answer a;
	const char *t[] = { "ta", "tb", "tc" };
	int i;

	for (i = 0; i < 2; i++) {		/* auto_allow = 2 triplets passed */
		grey_on(st, NULL, t[i], "net1", &grey_params, &a);
		ck_assert_int_eq(a.rep.grey.verdict, STATE_GREY_NEW);
		fake_now += 61;
		grey_on(st, NULL, t[i], "net1", &grey_params, &a);
		ck_assert_int_eq(a.rep.grey.verdict, STATE_GREY_PASSED);
	}
	grey_on(st, NULL, t[2], "net1", &grey_params, &a);
	ck_assert_int_eq(a.rep.grey.verdict, STATE_GREY_ALLOWED);
	grey_on(st, NULL, t[2], "net2", &grey_params, &a);	/* another client is not */
	ck_assert_int_eq(a.rep.grey.verdict, STATE_GREY_NEW);
	state_shutdown();
}
END_TEST

START_TEST(test_memory_grey_no_delay)
{
	struct state *st = memory_store(1000);
	const struct state_grey_params p = { 0, 600, 3600, 2 };
	struct answer a;

	grey_on(st, NULL, "t1", "c", &p, &a);		/* delay 0: passes at once... */
	ck_assert_int_eq(a.rep.grey.verdict, STATE_GREY_PASSED);
	grey_on(st, NULL, "t1", "c", &p, &a);		/* ...and is kept */
	ck_assert_int_eq(a.rep.grey.verdict, STATE_GREY_PASSED);
	grey_on(st, NULL, "t2", "c", &p, &a);		/* counted toward auto_allow */
	ck_assert_int_eq(a.rep.grey.verdict, STATE_GREY_PASSED);
	grey_on(st, NULL, "t3", "c", &p, &a);
	ck_assert_int_eq(a.rep.grey.verdict, STATE_GREY_ALLOWED);
	state_shutdown();
}
END_TEST

START_TEST(test_memory_grey_clock_back)
{
	struct state *st = memory_store(1000);
	struct answer a;

	grey_on(st, NULL, "t", "c", &grey_params, &a);
	ck_assert_int_eq(a.rep.grey.verdict, STATE_GREY_NEW);
	fake_now -= 500;			/* a clock stepping back never passes a triplet */
	grey_on(st, NULL, "t", "c", &grey_params, &a);
	ck_assert_int_eq(a.rep.grey.verdict, STATE_GREY_EARLY);
	ck_assert_uint_eq(a.rep.grey.wait, 60);
	state_shutdown();
}
END_TEST

/* --- Redis --------------------------------------------------------------------------- */

/* unique - a key of this test run (the suite's server is shared by its tests) */
static const char *
unique(const char *tag)
{
	static char buf[4][64];
	static int n;

	snprintf(buf[n % 4], sizeof(buf[0]), "%s-%d-%llu", tag, (int)getpid(), now_ms());
	return buf[n++ % 4];
}

START_TEST(test_redis_count_two_loops)
{
	struct state *st = redis_store(redis_port, 2, NULL, NULL);
	struct event_base *b1 = event_base_new(), *b2 = event_base_new();
	const char *key = unique("rl");
	struct answer a;
	int i;

	for (i = 1; i <= 3; i++) {
		count_on(st, i % 2 ? b1 : b2, key, 1, 3600, &a);
		ck_assert_str_eq(a.error, "");
		ck_assert_uint_ge(a.rep.counts[0].count, (uint64_t)i);	/* a step may have just turned */
		ck_assert_uint_le(a.rep.counts[0].count, 3);
		ck_assert_uint_ge(a.rep.counts[0].reset, 1);
		ck_assert_uint_le(a.rep.counts[0].reset, 3600 + 225);
	}
	count_on(st, b2, key, 0, 3600, &a);
	ck_assert_uint_eq(a.rep.counts[0].count, 3);
	state_base_gone(b1);
	state_base_gone(b2);
	event_base_free(b1);
	event_base_free(b2);
	state_shutdown();
}
END_TEST

START_TEST(test_redis_grey)
{
	struct state *st = redis_store(redis_port, 2, NULL, "portier-test:");
	struct event_base *b = event_base_new();
	const struct state_grey_params p = { 1, 60, 60, 1 };
	const char *t = unique("t"), *c = unique("c"), *t2 = unique("t2");
	struct answer a;

	grey_on(st, b, t, c, &p, &a);
	ck_assert_str_eq(a.error, "");
	ck_assert_int_eq(a.rep.grey.verdict, STATE_GREY_NEW);
	ck_assert_uint_eq(a.rep.grey.wait, 1);
	grey_on(st, b, t, c, &p, &a);
	ck_assert_int_eq(a.rep.grey.verdict, STATE_GREY_EARLY);
	usleep(2100000);
	grey_on(st, b, t, c, &p, &a);
	ck_assert_int_eq(a.rep.grey.verdict, STATE_GREY_PASSED);
	grey_on(st, b, t, c, &p, &a);		/* auto_allow = 1: the client passed one */
	ck_assert_int_eq(a.rep.grey.verdict, STATE_GREY_ALLOWED);
	grey_on(st, b, t2, c, &p, &a);
	ck_assert_int_eq(a.rep.grey.verdict, STATE_GREY_ALLOWED);
	{
		const struct state_grey_params p0 = { 0, 60, 60, 0 };
		const char *t3 = unique("t3");

		grey_on(st, b, t3, c, &p0, &a);		/* delay 0: passes at once, and is kept */
		ck_assert_int_eq(a.rep.grey.verdict, STATE_GREY_PASSED);
		grey_on(st, b, t3, c, &p0, &a);
		ck_assert_int_eq(a.rep.grey.verdict, STATE_GREY_PASSED);
	}
	state_base_gone(b);
	event_base_free(b);
	state_shutdown();
}
END_TEST

START_TEST(test_redis_error_reply)
{
	struct state *st = redis_store(redis_port, 2, NULL, "portier-test:");
	struct event_base *b = event_base_new();
	const struct state_grey_params p = { 1, 60, 60, 0 };
	const char *t = unique("bad");
	char cmd[200];
	struct answer a;

	/* a triplet that holds no time: the script fails, the call says so */
	snprintf(cmd, sizeof(cmd), "redis-cli -p %u SET portier-test:%s garbage >/dev/null",
	    redis_port, t);
	ck_assert_int_eq(system(cmd), 0);
	grey_on(st, b, t, "c", &p, &a);
	ck_assert_msg(strncmp(a.error, "redis: ", 7) == 0, "error \"%s\"", a.error);
	/* the connection stays usable */
	count_on(st, b, unique("after"), 1, 60, &a);
	ck_assert_str_eq(a.error, "");
	ck_assert_uint_eq(a.rep.counts[0].count, 1);
	state_base_gone(b);
	event_base_free(b);
	state_shutdown();
}
END_TEST

START_TEST(test_redis_script_flushed)
{
	struct state *st = redis_store(redis_port, 2, NULL, NULL);
	struct event_base *b = event_base_new();
	const char *key = unique("f");
	char cmd[128];
	struct answer a;

	count_on(st, b, key, 1, 60, &a);
	ck_assert_str_eq(a.error, "");
	snprintf(cmd, sizeof(cmd), "redis-cli -p %u SCRIPT FLUSH >/dev/null", redis_port);
	ck_assert_int_eq(system(cmd), 0);
	count_on(st, b, key, 1, 60, &a);	/* NOSCRIPT: sent again whole */
	ck_assert_str_eq(a.error, "");
	ck_assert_uint_eq(a.rep.counts[0].count, 2);
	count_on(st, b, key, 1, 60, &a);	/* and EVALSHA works again */
	ck_assert_uint_eq(a.rep.counts[0].count, 3);
	state_base_gone(b);
	event_base_free(b);
	state_shutdown();
}
END_TEST

START_TEST(test_redis_down_then_up)
{
	unsigned port = free_port();
	struct state *st = redis_store(port, 2, NULL, NULL);
	struct event_base *b = event_base_new();
	struct answer a;
	pid_t pid;

	count_on(st, b, "k", 1, 60, &a);	/* nobody listens */
	ck_assert_msg(strncmp(a.error, "redis: ", 7) == 0, "error \"%s\"", a.error);
	count_on(st, b, "k", 1, 60, &a);	/* within a second: fails at once */
	ck_assert_str_eq(a.error, "redis: unreachable");
	pid = redis_spawn(port, NULL);
	ck_assert_int_gt(pid, 0);
	usleep(1100000);			/* the retry pause passes: it connects again */
	count_on(st, b, "k", 1, 60, &a);
	ck_assert_str_eq(a.error, "");
	ck_assert_uint_eq(a.rep.counts[0].count, 1);
	redis_kill(pid);			/* gone under an open connection */
	count_on(st, b, "k", 1, 60, &a);
	ck_assert_msg(strncmp(a.error, "redis: ", 7) == 0, "error \"%s\"", a.error);
	pid = redis_spawn(port, NULL);
	ck_assert_int_gt(pid, 0);
	usleep(1100000);
	count_on(st, b, "k", 1, 60, &a);
	ck_assert_str_eq(a.error, "");
	ck_assert_uint_eq(a.rep.counts[0].count, 1);	/* a fresh server: counting starts over */
	redis_kill(pid);
	state_base_gone(b);
	event_base_free(b);
	state_shutdown();
}
END_TEST

START_TEST(test_redis_hung)
{
	struct state *st = redis_store(redis_port, 1, NULL, NULL);
	struct event_base *b = event_base_new();
	unsigned long long t0;
	struct answer a;

	count_on(st, b, unique("h"), 1, 60, &a);	/* connected */
	ck_assert_str_eq(a.error, "");
	kill(redis_pid, SIGSTOP);
	t0 = now_ms();
	count_on(st, b, unique("h"), 1, 60, &a);
	kill(redis_pid, SIGCONT);
	ck_assert_str_eq(a.error, "redis: timeout");
	ck_assert_uint_ge(now_ms() - t0, 900);
	ck_assert_uint_lt(now_ms() - t0, 3000);
	usleep(1100000);
	count_on(st, b, unique("h"), 1, 60, &a);	/* back, on a new connection */
	ck_assert_str_eq(a.error, "");
	state_base_gone(b);
	event_base_free(b);
	state_shutdown();
}
END_TEST

START_TEST(test_redis_cancel_and_loop_gone)
{
	struct state *st = redis_store(redis_port, 2, NULL, NULL);
	struct event_base *b = event_base_new();
	struct state_reply rep;
	struct state_op *op;
	struct answer a, c;

	memset(&c, 0, sizeof(c));
	op = state_count(st, b, unique("x"), 1, 60, &rep, answer_cb, &c);
	ck_assert_ptr_nonnull(op);
	state_cancel(op);
	run_for(b, 300);			/* the reply comes and is dropped */
	ck_assert_int_eq(c.calls, 0);
	memset(&a, 0, sizeof(a));
	op = state_count(st, b, unique("y"), 1, 60, &rep, answer_cb, &a);
	ck_assert_ptr_nonnull(op);
	memset(&c, 0, sizeof(c));
	ck_assert_ptr_nonnull(state_count(st, b, unique("z"), 1, 60, &rep, answer_cb, &c));
	state_cancel(op);
	state_base_gone(b);			/* the loop ends with a call in flight */
	ck_assert_int_eq(a.calls, 0);		/* cancelled: never */
	ck_assert_int_eq(c.calls, 1);		/* not cancelled: an error, once */
	ck_assert_str_eq(c.error, "redis: connection lost");
	event_base_free(b);
	state_shutdown();
}
END_TEST

START_TEST(test_redis_unix_database_prefix)
{
	struct state *st;
	struct event_base *b = event_base_new();
	const char *key = unique("u");
	char cmd[256];
	struct answer a;

	test_conf.redis_database = 0;
	st = redis_store(0, 2, NULL, "p1:");
	ck_assert(strncmp(state_name(st), "redis unix:", 11) == 0);
	state_shutdown();
	test_conf.redis_database = 2;	/* redis_store keeps it: made again with it */
	{
		char server[128];

		snprintf(server, sizeof(server), "unix:%s/redis-%u.sock", redis_dir, redis_port);
		test_conf.redis_server = server;
		test_conf.redis_prefix = (char *)"p1:";
		st = state_get(&test_conf);
	}
	count_on(st, b, key, 7, 60, &a);
	ck_assert_str_eq(a.error, "");
	ck_assert_uint_eq(a.rep.counts[0].count, 7);
	/* the key went into database 2, under the prefix */
	snprintf(cmd, sizeof(cmd), "redis-cli -p %u -n 2 --scan --pattern 'p1:%s#60' | grep -q .",
	    redis_port, key);
	ck_assert_int_eq(system(cmd), 0);
	snprintf(cmd, sizeof(cmd), "redis-cli -p %u -n 0 --scan --pattern 'p1:%s#60' | grep -q .",
	    redis_port, key);
	ck_assert_int_ne(system(cmd), 0);
	state_base_gone(b);
	event_base_free(b);
	state_shutdown();
}
END_TEST

START_TEST(test_redis_auth)
{
	unsigned port = free_port();
	pid_t pid = redis_spawn(port, "s3cret");
	struct state *st;
	struct event_base *b = event_base_new();
	struct answer a;

	ck_assert_int_gt(pid, 0);
	st = redis_store(port, 2, "s3cret", NULL);
	count_on(st, b, "k", 1, 60, &a);
	ck_assert_str_eq(a.error, "");
	ck_assert_uint_eq(a.rep.counts[0].count, 1);
	state_base_gone(b);
	event_base_free(b);
	state_shutdown();
	/* without the password, the server's refusal reaches the caller */
	b = event_base_new();
	st = redis_store(port, 2, NULL, NULL);
	count_on(st, b, "k", 1, 60, &a);
	ck_assert_msg(strstr(a.error, "NOAUTH") != NULL, "error \"%s\"", a.error);
	state_base_gone(b);
	event_base_free(b);
	state_shutdown();
	redis_kill(pid);
}
END_TEST

/* The counting key: IPv4 as it is, IPv6 by its /64, IPv4-mapped as IPv4. */
START_TEST(test_client_key)
{
	char key[STATE_KEY_MAX];

	state_client_key("192.0.2.7", key, sizeof(key));
	ck_assert_str_eq(key, "192.0.2.7");
	state_client_key("2001:db8:1:2:3:4:5:6", key, sizeof(key));
	ck_assert_str_eq(key, "2001:db8:1:2::/64");
	state_client_key("::ffff:198.51.100.1", key, sizeof(key));
	ck_assert_str_eq(key, "198.51.100.1");
	state_client_key("unknown", key, sizeof(key));
	ck_assert_str_eq(key, "unknown");
}
END_TEST

/* FIPS 180-2's "abc": the whole digest, and its first 16 octets. */
START_TEST(test_key_digest)
{
	char out[65];

	state_key_digest("abc", 3, 32, out);
	ck_assert_str_eq(out, "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
	memset(out, 'x', sizeof(out));
	state_key_digest("abc", 3, 16, out);
	ck_assert_str_eq(out, "ba7816bf8f01cfea414140de5dae2223");
}
END_TEST

/*
 * Several counters in one call, each over its own window, are the counters
 * state_count sees; a bad count of keys, or one key too long, counts none.
 */
START_TEST(test_memory_count_many)
{
	struct state *st = memory_store(1000);
	const char *keys[3] = { "rl:a", "rl:b", "rl:c" }, *five[5] = { "1", "2", "3", "4", "5" };
	const char *bad[2] = { "rl:a", NULL };
	const unsigned windows[5] = { 60, 3600, 10, 1, 1 };
	char longkey[STATE_KEY_MAX + 2];
	struct answer a;
	int i;

	for (i = 1; i <= 3; i++) {
		count_many_on(st, NULL, 3, keys, windows, 1, &a);
		ck_assert_str_eq(a.error, "");
		ck_assert_uint_eq(a.rep.counts[0].count, (uint64_t)i);
		ck_assert_uint_eq(a.rep.counts[1].count, (uint64_t)i);
		ck_assert_uint_eq(a.rep.counts[2].count, (uint64_t)i);
		ck_assert_uint_le(a.rep.counts[2].reset, 10 + 1);
		ck_assert_uint_gt(a.rep.counts[1].reset, 60);
	}
	count_on(st, NULL, "rl:b", 0, 3600, &a);
	ck_assert_uint_eq(a.rep.counts[0].count, 3);
	fake_now += 12;				/* past c's window, within a's and b's */
	count_many_on(st, NULL, 3, keys, windows, 1, &a);
	ck_assert_uint_eq(a.rep.counts[0].count, 4);
	ck_assert_uint_eq(a.rep.counts[1].count, 4);
	ck_assert_uint_eq(a.rep.counts[2].count, 1);

	count_many_on(st, NULL, 0, keys, windows, 1, &a);
	ck_assert_str_eq(a.error, "bad number of counters");
	count_many_on(st, NULL, 5, five, windows, 1, &a);
	ck_assert_str_eq(a.error, "bad number of counters");
	memset(longkey, 'k', sizeof(longkey) - 1);
	longkey[sizeof(longkey) - 1] = '\0';
	bad[1] = longkey;
	count_many_on(st, NULL, 2, bad, windows, 1, &a);
	ck_assert_str_eq(a.error, "key too long");
	count_on(st, NULL, "rl:a", 0, 60, &a);	/* the refused call counted nothing */
	ck_assert_uint_eq(a.rep.counts[0].count, 4);
}
END_TEST

/* The same in Redis, in one script call, with a counter state_count started. */
START_TEST(test_redis_count_many)
{
	struct state *st = redis_store(redis_port, 2, NULL, NULL);
	struct event_base *b = event_base_new();
	char k0[64], k1[64], k2[64], k3[64];
	const char *keys[4] = { k0, k1, k2, k3 };
	const unsigned windows[4] = { 3600, 60, 600, 3600 };
	struct answer a;
	size_t i;

	snprintf(k0, sizeof(k0), "%s", unique("m0"));
	snprintf(k1, sizeof(k1), "%s", unique("m1"));
	snprintf(k2, sizeof(k2), "%s", unique("m2"));
	snprintf(k3, sizeof(k3), "%s", unique("m3"));
	count_on(st, b, k2, 5, 600, &a);
	ck_assert_str_eq(a.error, "");
	count_many_on(st, b, 4, keys, windows, 1, &a);
	ck_assert_str_eq(a.error, "");
	for (i = 0; i < 4; i++) {
		ck_assert_uint_eq(a.rep.counts[i].count, i == 2 ? 6 : 1);
		ck_assert_uint_ge(a.rep.counts[i].reset, 1);
		ck_assert_uint_le(a.rep.counts[i].reset, windows[i] + windows[i] / 16 + 1);
	}
	count_many_on(st, b, 2, keys + 2, windows + 2, 2, &a);
	ck_assert_uint_eq(a.rep.counts[0].count, 8);
	ck_assert_uint_eq(a.rep.counts[1].count, 3);
	count_on(st, b, k3, 0, 3600, &a);
	ck_assert_uint_eq(a.rep.counts[0].count, 3);
	count_on(st, b, k3, 0, 60, &a);		/* another window is another counter */
	ck_assert_uint_eq(a.rep.counts[0].count, 0);
	state_base_gone(b);
	event_base_free(b);
	state_shutdown();
}
END_TEST

static Suite *
state_suite(void)
{
	Suite *s = suite_create("state");
	TCase *mem = tcase_create("memory"), *red = tcase_create("redis");

	tcase_add_test(mem, test_client_key);
	tcase_add_test(mem, test_key_digest);
	tcase_add_test(mem, test_memory_count);
	tcase_add_test(mem, test_memory_count_many);
	tcase_add_test(mem, test_memory_slide);
	tcase_add_test(mem, test_memory_cap);
	tcase_add_test(mem, test_key_too_long);
	tcase_add_test(mem, test_memory_grey);
	tcase_add_test(mem, test_memory_grey_auto_allow);
	tcase_add_test(mem, test_memory_grey_no_delay);
	tcase_add_test(mem, test_memory_grey_clock_back);
	suite_add_tcase(s, mem);
	tcase_set_timeout(red, 30);
	tcase_add_test(red, test_redis_count_two_loops);
	tcase_add_test(red, test_redis_count_many);
	tcase_add_test(red, test_redis_grey);
	tcase_add_test(red, test_redis_error_reply);
	tcase_add_test(red, test_redis_script_flushed);
	tcase_add_test(red, test_redis_down_then_up);
	tcase_add_test(red, test_redis_hung);
	tcase_add_test(red, test_redis_cancel_and_loop_gone);
	tcase_add_test(red, test_redis_auth);
	tcase_add_test(red, test_redis_unix_database_prefix);
	suite_add_tcase(s, red);
	return s;
}

int
main(void)
{
	char cmd[128];
	int rc;

	snprintf(redis_dir, sizeof(redis_dir), "/tmp/check_state.XXXXXX");
	if (mkdtemp(redis_dir) == NULL) {
		perror("mkdtemp");
		return EXIT_FAILURE;
	}
	for (rc = 0; rc < 5 && redis_pid < 0; rc++)
		if ((redis_port = dnstest_free_port()) != 0)
			redis_pid = redis_spawn(redis_port, NULL);
	if (redis_pid < 0) {
		fprintf(stderr, "check_state: redis-server did not start (scripts/install-deps.sh "
		    "installs it); log in %s\n", redis_dir);
		return EXIT_FAILURE;
	}
	rc = unit_run(state_suite());
	redis_kill(redis_pid);
	snprintf(cmd, sizeof(cmd), "rm -rf %s", redis_dir);
	if (system(cmd) != 0)
		fprintf(stderr, "check_state: could not remove %s\n", redis_dir);
	return rc;
}
