/*
 * check_sockin.c - unit tests for smtpd/sockin.c, the plain-socket reader.
 *
 * A real socketpair and a real event base: bytes written on one end arrive
 * in the bufferevent's input in one read however large (up to
 * SOCKIN_READ_MAX), EOF and a read error are reported with
 * BEV_EVENT_READING, the timeout fires only after silence, reading pauses at
 * the high mark and resumes when the owner drains, and a disabled sockin
 * reads nothing.
 */
#include "config.h"

#include <check.h>
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <netinet/in.h>
#include <arpa/inet.h>
#include <unistd.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/event.h>

#include "sockin.h"
#include "unit.h"

struct fixture {
	struct event_base *base;
	struct bufferevent *bev;
	struct sockin *si;
	int peer;		/* the other end */
	unsigned reads;		/* read_cb calls */
	short events;		/* last event_cb flags */
	int err;		/* errno at the last event_cb */
	unsigned nevents;
	size_t take;		/* read_cb drains this much each call (0: nothing) */
};

static void
read_cb(struct bufferevent *bev, void *arg)
{
	struct fixture *f = arg;

	f->reads++;
	if (f->take)
		evbuffer_drain(bufferevent_get_input(bev), f->take);
}

static void
event_cb(struct bufferevent *bev, short what, void *arg)
{
	struct fixture *f = arg;

	(void)bev;
	f->err = errno;
	f->events = what;
	f->nevents++;
}

static void
setup(struct fixture *f, size_t high)
{
	int sv[2];

	memset(f, 0, sizeof(*f));
	ck_assert_int_eq(socketpair(AF_UNIX, SOCK_STREAM, 0, sv), 0);
	ck_assert_int_eq(fcntl(sv[0], F_SETFL, O_NONBLOCK), 0);
	f->base = event_base_new();
	ck_assert_ptr_nonnull(f->base);
	f->bev = bufferevent_socket_new(f->base, sv[0], BEV_OPT_CLOSE_ON_FREE);
	ck_assert_ptr_nonnull(f->bev);
	f->peer = sv[1];
	f->si = sockin_new(f->base, f->bev, high, read_cb, event_cb, f);
}

static void
teardown(struct fixture *f)
{
	sockin_free(f->si);
	bufferevent_free(f->bev);
	if (f->peer >= 0)
		close(f->peer);
	event_base_free(f->base);
}

static void
put(struct fixture *f, const void *p, size_t n)
{
	ck_assert_int_eq(write(f->peer, p, n), (ssize_t)n);
}

static void
turn(struct fixture *f)
{
	event_base_loop(f->base, EVLOOP_NONBLOCK);
}

static size_t
inlen(struct fixture *f)
{
	return evbuffer_get_length(bufferevent_get_input(f->bev));
}

START_TEST(test_one_read_for_large_input)
{
	struct fixture f;
	static char big[20000];

	setup(&f, 256 * 1024);
	memset(big, 'x', sizeof(big));
	sockin_enable(f.si);
	put(&f, big, sizeof(big));
	turn(&f);
	/* libevent's own reader would take 4096 octets per loop turn. */
	ck_assert_uint_eq(f.reads, 1);
	ck_assert_uint_eq(inlen(&f), sizeof(big));
	put(&f, "QUIT\r\n", 6);
	turn(&f);
	ck_assert_uint_eq(f.reads, 2);
	ck_assert_uint_eq(inlen(&f), sizeof(big) + 6);
	ck_assert_uint_eq(f.nevents, 0);
	teardown(&f);
}
END_TEST

START_TEST(test_disabled_reads_nothing)
{
	struct fixture f;

	setup(&f, 1024);
	put(&f, "HELO x\r\n", 8);
	turn(&f);
	ck_assert_uint_eq(f.reads, 0);
	sockin_enable(f.si);
	sockin_disable(f.si);
	turn(&f);
	ck_assert_uint_eq(f.reads, 0);
	sockin_enable(f.si);
	turn(&f);
	ck_assert_uint_eq(f.reads, 1);
	ck_assert_uint_eq(inlen(&f), 8);
	teardown(&f);
}
END_TEST

START_TEST(test_eof)
{
	struct fixture f;

	setup(&f, 1024);
	sockin_enable(f.si);
	put(&f, "DATA\r\n", 6);
	close(f.peer);
	f.peer = -1;
	turn(&f);
	turn(&f);
	ck_assert_uint_eq(f.reads, 1);
	ck_assert_uint_eq(f.nevents, 1);
	ck_assert_int_eq(f.events, BEV_EVENT_READING | BEV_EVENT_EOF);
	/* Reading stopped: no second report. */
	turn(&f);
	ck_assert_uint_eq(f.nevents, 1);
	teardown(&f);
}
END_TEST

/* tcp_pair - a connected loopback TCP pair: sv[0] accepted, sv[1] connected */
static void
tcp_pair(int sv[2])
{
	struct sockaddr_in sin;
	socklen_t len = sizeof(sin);
	int l = socket(AF_INET, SOCK_STREAM, 0);

	ck_assert_int_ge(l, 0);
	memset(&sin, 0, sizeof(sin));
	sin.sin_family = AF_INET;
	sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	ck_assert_int_eq(bind(l, (struct sockaddr *)&sin, sizeof(sin)), 0);
	ck_assert_int_eq(listen(l, 1), 0);
	ck_assert_int_eq(getsockname(l, (struct sockaddr *)&sin, &len), 0);
	sv[1] = socket(AF_INET, SOCK_STREAM, 0);
	ck_assert_int_eq(connect(sv[1], (struct sockaddr *)&sin, sizeof(sin)), 0);
	sv[0] = accept(l, NULL, NULL);
	ck_assert_int_ge(sv[0], 0);
	close(l);
}

START_TEST(test_error)
{
	struct fixture f;
	struct linger lg = { 1, 0 };
	int sv[2];

	memset(&f, 0, sizeof(f));
	tcp_pair(sv);
	ck_assert_int_eq(fcntl(sv[0], F_SETFL, O_NONBLOCK), 0);
	f.base = event_base_new();
	f.bev = bufferevent_socket_new(f.base, sv[0], BEV_OPT_CLOSE_ON_FREE);
	f.peer = sv[1];
	f.si = sockin_new(f.base, f.bev, 1024, read_cb, event_cb, &f);
	sockin_enable(f.si);
	put(&f, "RCPT", 4);
	turn(&f);
	ck_assert_uint_eq(f.reads, 1);
	/* Zero linger: close sends a reset, and the next read fails with ECONNRESET. */
	ck_assert_int_eq(setsockopt(f.peer, SOL_SOCKET, SO_LINGER, &lg, sizeof(lg)), 0);
	close(f.peer);
	f.peer = -1;
	for (int i = 0; i < 100 && f.nevents == 0; i++)
		event_base_loop(f.base, EVLOOP_ONCE);
	ck_assert_uint_eq(f.nevents, 1);
	ck_assert_int_eq(f.events, BEV_EVENT_READING | BEV_EVENT_ERROR);
	ck_assert_int_eq(f.err, ECONNRESET);
	ck_assert_uint_eq(inlen(&f), 4);
	teardown(&f);
}
END_TEST

START_TEST(test_timeout_after_silence)
{
	struct fixture f;
	struct timeval start, now;

	setup(&f, 1024);
	sockin_set_timeout(f.si, 1);
	sockin_enable(f.si);
	gettimeofday(&start, NULL);
	while (f.nevents == 0) {
		event_base_loop(f.base, EVLOOP_ONCE);
		gettimeofday(&now, NULL);
		ck_assert_int_lt(now.tv_sec - start.tv_sec, 5);
	}
	ck_assert_int_eq(f.events, BEV_EVENT_READING | BEV_EVENT_TIMEOUT);
	ck_assert_int_ge((now.tv_sec - start.tv_sec) * 1000000 + (now.tv_usec - start.tv_usec),
	    900000);
	teardown(&f);
}
END_TEST

START_TEST(test_high_mark_pauses_and_resumes)
{
	struct fixture f;
	static char chunk[3000];

	setup(&f, 4096);
	memset(chunk, 'y', sizeof(chunk));
	sockin_enable(f.si);
	put(&f, chunk, sizeof(chunk));
	turn(&f);
	ck_assert_uint_eq(inlen(&f), 3000);
	put(&f, chunk, sizeof(chunk));
	turn(&f);
	/* Never more than the high mark: 1096 more, the rest waits in the socket. */
	ck_assert_uint_eq(inlen(&f), 4096);
	turn(&f);
	turn(&f);
	ck_assert_uint_eq(inlen(&f), 4096);
	ck_assert_uint_eq(f.reads, 2);
	/* The owner takes some: reading resumes by itself. */
	evbuffer_drain(bufferevent_get_input(f.bev), 4096);
	turn(&f);
	ck_assert_uint_eq(inlen(&f), 1904);
	ck_assert_uint_eq(f.reads, 3);
	ck_assert_uint_eq(f.nevents, 0);
	teardown(&f);
}
END_TEST

START_TEST(test_timeout_rearmed_by_data)
{
	struct fixture f;
	struct timeval start, now;

	setup(&f, 1024);
	f.take = 1;
	sockin_set_timeout(f.si, 2);
	sockin_enable(f.si);
	gettimeofday(&start, NULL);
	/* A byte every ~0.5 s for 3 s keeps a 2 s timeout from firing. */
	for (int i = 0; i < 6; i++) {
		struct timeval tv = { 0, 500000 };

		event_base_loopexit(f.base, &tv);
		event_base_dispatch(f.base);
		put(&f, "z", 1);
		turn(&f);
	}
	gettimeofday(&now, NULL);
	ck_assert_int_ge(now.tv_sec - start.tv_sec, 2);
	ck_assert_uint_eq(f.nevents, 0);
	ck_assert_uint_eq(f.reads, 6);
	teardown(&f);
}
END_TEST

static Suite *
sockin_suite(void)
{
	Suite *s = suite_create("sockin");
	TCase *tc = tcase_create("core");

	tcase_set_timeout(tc, 20);
	tcase_add_test(tc, test_one_read_for_large_input);
	tcase_add_test(tc, test_disabled_reads_nothing);
	tcase_add_test(tc, test_eof);
	tcase_add_test(tc, test_error);
	tcase_add_test(tc, test_timeout_after_silence);
	tcase_add_test(tc, test_high_mark_pauses_and_resumes);
	tcase_add_test(tc, test_timeout_rearmed_by_data);
	suite_add_tcase(s, tc);
	return s;
}

UNIT_MAIN(sockin_suite)
