/*
 * check_sendbatch.c - unit tests for smtpd/sendbatch.c, a turn's writes in one call.
 *
 * Real sockets (AF_UNIX stream pairs), both ways a batch can work (loop
 * tests: pass 0 through io_uring when the kernel allows it here, and the
 * test says so when it does not; pass 1 plain writev(2)).  Checked: nothing
 * leaves before sendbatch_run when batched, every socket gets its bytes in
 * order, more sends than one submission holds, a buffer of more chains than
 * one send takes, a full socket (the rest stays, the run does not wait), a
 * peer that is gone (no SIGPIPE, the bytes stay for the caller), a buffer
 * added twice (sent once), and the NULL batch that writes at once.
 */
#include "config.h"

#include <check.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <event2/buffer.h>

#include "sendbatch.h"
#include "unit.h"

#define NSOCKS 150		/* more than one submission (64) holds */

static void
pair(int sv[2])
{
	ck_assert_int_eq(socketpair(AF_UNIX, SOCK_STREAM, 0, sv), 0);
	ck_assert_int_eq(fcntl(sv[0], F_SETFL, O_NONBLOCK), 0);
	ck_assert_int_eq(fcntl(sv[1], F_SETFL, O_NONBLOCK), 0);
}

/* pending - octets waiting to be read on fd (0 when none) */
static size_t
pending(int fd)
{
	char buf[65536];
	ssize_t n = recv(fd, buf, sizeof(buf), MSG_PEEK | MSG_DONTWAIT);

	return n > 0 ? (size_t)n : 0;
}

/* drain_all - read everything waiting on fd into out (NUL-terminated), returns its length */
static size_t
drain_all(int fd, char *out, size_t cap)
{
	size_t got = 0;
	ssize_t n;

	while (got + 1 < cap && (n = read(fd, out + got, cap - 1 - got)) > 0)
		got += (size_t)n;
	out[got] = '\0';
	return got;
}

static struct sendbatch *
batch(bool uring)
{
	struct sendbatch *sb = sendbatch_new(uring);

	if (uring && !sendbatch_uring(sb))
		fprintf(stderr, "check_sendbatch: io_uring unavailable here (%s): "
		    "the batched path is tested as writev\n", sendbatch_uring_why(sb));
	return sb;
}

/* Every socket gets its own bytes, in order; with io_uring none before the run. */
START_TEST(test_many_sockets)
{
	bool uring = _i == 0;	/* loop test: 0 io_uring, 1 writev */
	struct sendbatch *sb = batch(uring);
	int (*sv)[2] = calloc(NSOCKS, sizeof(*sv));
	struct evbuffer **buf = calloc(NSOCKS, sizeof(*buf));
	char want[64], got[256];
	int i;

	ck_assert_ptr_nonnull(sv);
	ck_assert_ptr_nonnull(buf);
	for (i = 0; i < NSOCKS; i++) {
		pair(sv[i]);
		buf[i] = evbuffer_new();
		evbuffer_add_printf(buf[i], "250 2.0.0 socket %d\r\n", i);
		evbuffer_add_printf(buf[i], "250 2.0.0 again %d\r\n", i);
		sendbatch_add(sb, sv[i][0], buf[i]);
	}
	if (sendbatch_uring(sb)) {
		/* The first SB_ENTRIES (64) went out when the 65th was added; the last did not. */
		ck_assert_uint_eq(pending(sv[NSOCKS - 1][1]), 0);
		ck_assert_uint_gt(evbuffer_get_length(buf[NSOCKS - 1]), 0);
	}
	sendbatch_run(sb);
	for (i = 0; i < NSOCKS; i++) {
		snprintf(want, sizeof(want), "250 2.0.0 socket %d\r\n250 2.0.0 again %d\r\n", i, i);
		drain_all(sv[i][1], got, sizeof(got));
		ck_assert_str_eq(got, want);
		ck_assert_uint_eq(evbuffer_get_length(buf[i]), 0);
		evbuffer_free(buf[i]);
		close(sv[i][0]);
		close(sv[i][1]);
	}
	sendbatch_free(sb);
	free(buf);
	free(sv);
}
END_TEST

/* Turned off or NULL: the bytes leave at sendbatch_add. */
START_TEST(test_unbatched_writes_at_once)
{
	struct sendbatch *sb = sendbatch_new(false);
	struct evbuffer *b = evbuffer_new();
	int sv[2];

	ck_assert(!sendbatch_uring(sb));
	ck_assert_str_eq(sendbatch_uring_why(sb), "turned off");
	pair(sv);
	evbuffer_add(b, "221 2.0.0 Bye\r\n", 15);
	sendbatch_add(sb, sv[0], b);
	ck_assert_uint_eq(pending(sv[1]), 15);
	ck_assert_uint_eq(evbuffer_get_length(b), 0);
	evbuffer_add(b, "250 2.0.0 Ok\r\n", 14);
	sendbatch_add(NULL, sv[0], b);
	ck_assert_uint_eq(pending(sv[1]), 29);
	sendbatch_run(sb);
	sendbatch_run(NULL);
	ck_assert_uint_eq(pending(sv[1]), 29);
	evbuffer_free(b);
	sendbatch_free(sb);
	close(sv[0]);
	close(sv[1]);
}
END_TEST

/* A buffer of many chains: one send takes some, the rest stays in order. */
START_TEST(test_many_chains)
{
	bool uring = _i == 0;	/* loop test: 0 io_uring, 1 writev */
	struct sendbatch *sb = batch(uring);
	struct evbuffer *b = evbuffer_new(), *chunk;
	char line[32], *want, *got;
	size_t wlen = 0, glen;
	int sv[2], i;

	pair(sv);
	want = malloc(100 * sizeof(line));
	got = malloc(100 * sizeof(line) + 1);
	ck_assert_ptr_nonnull(want);
	ck_assert_ptr_nonnull(got);
	for (i = 0; i < 100; i++) {
		int n = snprintf(line, sizeof(line), "line %03d\r\n", i);

		/* A buffer of its own per line, moved whole: one chain each. */
		chunk = evbuffer_new();
		evbuffer_add(chunk, line, (size_t)n);
		evbuffer_add_buffer(b, chunk);
		evbuffer_free(chunk);
		memcpy(want + wlen, line, (size_t)n);
		wlen += (size_t)n;
	}
	sendbatch_add(sb, sv[0], b);
	sendbatch_run(sb);
	glen = drain_all(sv[1], got, 100 * sizeof(line) + 1);
	ck_assert_uint_gt(glen, 0);
	ck_assert_uint_eq(glen + evbuffer_get_length(b), wlen);
	ck_assert(memcmp(got, want, glen) == 0);
	/* What stayed is the rest, in order. */
	if (glen < wlen)
		ck_assert(memcmp(evbuffer_pullup(b, -1), want + glen, wlen - glen) == 0);
	free(want);
	free(got);
	evbuffer_free(b);
	sendbatch_free(sb);
	close(sv[0]);
	close(sv[1]);
}
END_TEST

/* A full socket: part is sent, the rest stays, and the run does not wait for the reader. */
START_TEST(test_full_socket)
{
	bool uring = _i == 0;	/* loop test: 0 io_uring, 1 writev */
	struct sendbatch *sb = batch(uring);
	struct evbuffer *b = evbuffer_new();
	size_t total = 4 * 1024 * 1024, left;
	char *big = malloc(total);
	int sv[2], small = 4096;

	ck_assert_ptr_nonnull(big);
	pair(sv);
	ck_assert_int_eq(setsockopt(sv[0], SOL_SOCKET, SO_SNDBUF, &small, sizeof(small)), 0);
	memset(big, 'x', total);
	evbuffer_add(b, big, total);
	sendbatch_add(sb, sv[0], b);
	sendbatch_run(sb);	/* would hang here if a send waited for room */
	left = evbuffer_get_length(b);
	ck_assert_uint_gt(left, 0);
	ck_assert_uint_lt(left, total);
	ck_assert_uint_gt(pending(sv[1]), 0);
	free(big);
	evbuffer_free(b);
	sendbatch_free(sb);
	close(sv[0]);
	close(sv[1]);
}
END_TEST

/* The peer is gone: no SIGPIPE, the bytes stay, the other sends of the batch go out. */
START_TEST(test_peer_gone)
{
	bool uring = _i == 0;	/* loop test: 0 io_uring, 1 writev */
	struct sendbatch *sb = batch(uring);
	struct evbuffer *dead = evbuffer_new(), *live = evbuffer_new();
	char got[64];
	int a[2], b[2];

	/* writev(2) has no MSG_NOSIGNAL: the daemon ignores SIGPIPE, and so does this test. */
	signal(SIGPIPE, SIG_IGN);
	pair(a);
	pair(b);
	close(a[1]);
	evbuffer_add(dead, "250 2.0.0 Ok\r\n", 14);
	evbuffer_add(live, "354 go ahead\r\n", 14);
	sendbatch_add(sb, a[0], dead);
	sendbatch_add(sb, b[0], live);
	sendbatch_run(sb);
	ck_assert_uint_eq(evbuffer_get_length(dead), 14);
	ck_assert_uint_eq(evbuffer_get_length(live), 0);
	drain_all(b[1], got, sizeof(got));
	ck_assert_str_eq(got, "354 go ahead\r\n");
	/* The error is the caller's to see: its write fails the same way. */
	errno = 0;
	ck_assert_int_lt(send(a[0], "x", 1, MSG_NOSIGNAL), 0);
	ck_assert_int_eq(errno, EPIPE);
	evbuffer_free(dead);
	evbuffer_free(live);
	sendbatch_free(sb);
	close(a[0]);
	close(b[0]);
	close(b[1]);
}
END_TEST

/* The same buffer added twice before the run is sent once. */
START_TEST(test_added_twice_sent_once)
{
	struct sendbatch *sb = batch(true);
	struct evbuffer *b = evbuffer_new();
	char got[64];
	int sv[2];

	pair(sv);
	evbuffer_add(b, "501 5.5.4 Syntax\r\n", 18);
	sendbatch_add(sb, sv[0], b);
	sendbatch_add(sb, sv[0], b);
	sendbatch_run(sb);
	drain_all(sv[1], got, sizeof(got));
	ck_assert_str_eq(got, "501 5.5.4 Syntax\r\n");
	ck_assert_uint_eq(evbuffer_get_length(b), 0);
	evbuffer_free(b);
	sendbatch_free(sb);
	close(sv[0]);
	close(sv[1]);
}
END_TEST

/* An empty buffer is no send at all, and a run with nothing added returns. */
START_TEST(test_empty)
{
	struct sendbatch *sb = batch(true);
	struct evbuffer *b = evbuffer_new();
	int sv[2];

	pair(sv);
	sendbatch_add(sb, sv[0], b);
	sendbatch_run(sb);
	sendbatch_run(sb);
	ck_assert_uint_eq(pending(sv[1]), 0);
	evbuffer_free(b);
	sendbatch_free(sb);
	close(sv[0]);
	close(sv[1]);
}
END_TEST

static Suite *
sendbatch_suite(void)
{
	Suite *s = suite_create("sendbatch");
	TCase *tc = tcase_create("core");

	tcase_set_timeout(tc, 20);
	tcase_add_loop_test(tc, test_many_sockets, 0, 2);
	tcase_add_test(tc, test_unbatched_writes_at_once);
	tcase_add_loop_test(tc, test_many_chains, 0, 2);
	tcase_add_loop_test(tc, test_full_socket, 0, 2);
	tcase_add_loop_test(tc, test_peer_gone, 0, 2);
	tcase_add_test(tc, test_added_twice_sent_once);
	tcase_add_test(tc, test_empty);
	suite_add_tcase(s, tc);
	return s;
}

UNIT_MAIN(sendbatch_suite)
