/*
 * check_log.c - unit tests for the batching of log lines (smtpd/log.c).
 *
 * stderr is pointed at a pipe: with log_batch on, info lines wait for
 * log_flush and leave in one write; a warning writes what waited first and
 * then itself, so the order of lines never changes; a batch that would grow
 * past PIPE_BUF octets is written first; log_batch(false) flushes.
 */
#include "config.h"

#include <check.h>
#include <fcntl.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "log.h"
#include "unit.h"

static int rfd = -1, saved = -1;

/* capture - stderr into a non-blocking pipe */
static void
capture(void)
{
	int p[2];

	ck_assert_int_eq(pipe(p), 0);
	ck_assert_int_eq(fcntl(p[0], F_SETFL, O_NONBLOCK), 0);
	saved = dup(STDERR_FILENO);
	ck_assert_int_eq(dup2(p[1], STDERR_FILENO), STDERR_FILENO);
	close(p[1]);
	rfd = p[0];
	ck_assert(log_init("stderr"));
}

static void
release(void)
{
	log_batch(false);
	dup2(saved, STDERR_FILENO);
	close(saved);
	close(rfd);
}

/* drain - what was written so far, NUL-terminated, into buf; returns its length */
static size_t
drain(char *buf, size_t size)
{
	size_t len = 0;
	ssize_t n;

	while (len < size - 1 && (n = read(rfd, buf + len, size - 1 - len)) > 0)
		len += (size_t)n;
	buf[len] = '\0';
	return len;
}

START_TEST(test_info_waits_for_flush)
{
	char out[8192];

	capture();
	log_batch(true);
	log_info("event=one");
	log_info("event=two");
	ck_assert_uint_eq(drain(out, sizeof(out)), 0);
	log_flush();
	drain(out, sizeof(out));
	ck_assert_ptr_nonnull(strstr(out, "info: event=one\n"));
	ck_assert_ptr_nonnull(strstr(out, "info: event=two\n"));
	ck_assert(strstr(out, "event=one") < strstr(out, "event=two"));
	/* Nothing is written twice. */
	log_flush();
	ck_assert_uint_eq(drain(out, sizeof(out)), 0);
	release();
}
END_TEST

START_TEST(test_warning_keeps_order)
{
	char out[8192];

	capture();
	log_batch(true);
	log_info("event=before");
	log_warn("event=trouble");
	drain(out, sizeof(out));
	ck_assert_ptr_nonnull(strstr(out, "event=before"));
	ck_assert_ptr_nonnull(strstr(out, "warning: event=trouble"));
	ck_assert(strstr(out, "event=before") < strstr(out, "event=trouble"));
	release();
}
END_TEST

START_TEST(test_batch_bounded_by_pipe_buf)
{
	char out[1 << 16];
	size_t len;
	int i;

	capture();
	log_batch(true);
	/* About 120 octets a line: 100 lines are well over PIPE_BUF. */
	for (i = 0; i < 100; i++)
		log_info("event=filler n=%03d pad=xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx", i);
	len = drain(out, sizeof(out));
	/* Full batches went out, whole lines only; the last line still waits. */
	ck_assert_uint_gt(len, 0);
	ck_assert_uint_le(len, 100 * 130);
	ck_assert_int_eq(out[len - 1], '\n');
	ck_assert_ptr_null(strstr(out, "n=099 "));
	log_batch(false);	/* flushes the rest */
	len += drain(out + len, sizeof(out) - len);
	ck_assert_ptr_nonnull(strstr(out, "n=000 "));
	ck_assert_ptr_nonnull(strstr(out, "n=099 "));
	release();
}
END_TEST

START_TEST(test_unbatched_writes_at_once)
{
	char out[8192];

	capture();
	log_info("event=direct");
	drain(out, sizeof(out));
	ck_assert_ptr_nonnull(strstr(out, "info: event=direct\n"));
	release();
}
END_TEST

static Suite *
log_suite(void)
{
	Suite *s = suite_create("log");
	TCase *tc = tcase_create("batch");

	tcase_add_test(tc, test_info_waits_for_flush);
	tcase_add_test(tc, test_warning_keeps_order);
	tcase_add_test(tc, test_batch_bounded_by_pipe_buf);
	tcase_add_test(tc, test_unbatched_writes_at_once);
	suite_add_tcase(s, tc);
	return s;
}

UNIT_MAIN(log_suite)
