/*
 * check_spool.c - unit tests for the message spool: memory below and at the
 * bound, an unlinked close-on-exec temp file over it, reads across the
 * switch, truncate and reuse, descriptor accounting, error texts.
 *
 * Works in a private directory under /tmp that it removes; never touches
 * anything else on the file system.
 */
#include "config.h"

#include <check.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

#include "buf.h"
#include "spool.h"
#include "unit.h"

static char testdir[64];

/* setup - a private, empty temp directory for each test */
static void
setup(void)
{
	str_copy(testdir, "/tmp/check_spool.XXXXXX", sizeof(testdir));
	ck_assert_ptr_nonnull(mkdtemp(testdir));
}

/* teardown - remove the directory (it must be empty: files are unlinked) */
static void
teardown(void)
{
	chmod(testdir, 0700);
	ck_assert_msg(rmdir(testdir) == 0, "rmdir %s: %s", testdir, strerror(errno));
}

/* count_fds - open descriptors of this process */
static int
count_fds(void)
{
	DIR *d = opendir("/proc/self/fd");
	struct dirent *e;
	int n = 0;

	ck_assert_ptr_nonnull(d);
	while ((e = readdir(d)) != NULL)
		if (e->d_name[0] != '.')
			n++;
	closedir(d);
	return n - 1;	/* the one opendir holds */
}

/* find_spool_fd - the descriptor whose target lies in dir and is deleted, or -1 */
static int
find_spool_fd(const char *dir)
{
	char path[64], target[512];
	ssize_t n;
	int fd;

	for (fd = 0; fd < 1024; fd++) {
		snprintf(path, sizeof(path), "/proc/self/fd/%d", fd);
		n = readlink(path, target, sizeof(target) - 1);
		if (n < 0)
			continue;
		target[n] = '\0';
		if (strncmp(target, dir, strlen(dir)) == 0 && strstr(target, "(deleted)") != NULL)
			return fd;
	}
	return -1;
}

/* dir_is_empty - no entries but . and .. */
static bool
dir_is_empty(const char *dir)
{
	DIR *d = opendir(dir);
	struct dirent *e;
	bool empty = true;

	ck_assert_ptr_nonnull(d);
	while ((e = readdir(d)) != NULL)
		if (strcmp(e->d_name, ".") != 0 && strcmp(e->d_name, "..") != 0)
			empty = false;
	closedir(d);
	return empty;
}

/* write_ok - spool_write that must succeed */
static void
write_ok(struct spool *s, const void *p, size_t n)
{
	const char *err = NULL;

	ck_assert_msg(spool_write(s, p, n, &err), "spool_write: %s", err ? err : "?");
}

/* check_content - read everything back through spool_pread and compare */
static void
check_content(struct spool *s, const struct buf *want)
{
	char *got = malloc(want->len + 1);
	ssize_t n;

	ck_assert_ptr_nonnull(got);
	ck_assert_uint_eq(spool_size(s), want->len);
	n = spool_pread(s, got, want->len + 1, 0);
	ck_assert_int_eq(n, (ssize_t)want->len);
	if (want->len > 0)
		ck_assert_mem_eq(got, want->data, want->len);
	free(got);
}

START_TEST(test_below_and_at_bound)
{
	struct spool *s = spool_new(16, testdir);
	struct buf want;

	buf_init(&want);
	ck_assert_str_eq(spool_mem(s), "");
	ck_assert_uint_eq(spool_size(s), 0);
	write_ok(s, "0123456789", 10);
	buf_append(&want, "0123456789", 10);
	ck_assert_ptr_nonnull(spool_mem(s));
	ck_assert_mem_eq(spool_mem(s), "0123456789", 10);
	write_ok(s, "abcdef", 6);	/* exactly 16: still memory */
	buf_append(&want, "abcdef", 6);
	ck_assert_ptr_nonnull(spool_mem(s));
	ck_assert_int_eq(find_spool_fd(testdir), -1);
	check_content(s, &want);
	spool_free(s);
	buf_free(&want);
}
END_TEST

/* test_ref - the file stays open and readable until the last reference goes */
START_TEST(test_ref)
{
	struct spool *s = spool_new(4, testdir);
	struct buf want;
	int before = count_fds();

	buf_init(&want);
	write_ok(s, "0123456789", 10);
	buf_append(&want, "0123456789", 10);
	ck_assert_ptr_eq(spool_ref(s), s);
	spool_free(s);			/* the transaction lets go */
	ck_assert_int_eq(count_fds(), before + 1);
	check_content(s, &want);	/* the job still reads it */
	spool_free(s);
	ck_assert_int_eq(count_fds(), before);
	buf_free(&want);
}
END_TEST

START_TEST(test_over_bound)
{
	struct spool *s = spool_new(16, testdir);
	struct buf want;
	int fd, before = count_fds();

	buf_init(&want);
	write_ok(s, "0123456789abcdef", 16);
	write_ok(s, "X", 1);		/* 17: everything moves to the file */
	buf_append(&want, "0123456789abcdefX", 17);
	ck_assert_ptr_null(spool_mem(s));
	ck_assert_int_eq(count_fds(), before + 1);
	fd = find_spool_fd(testdir);
	ck_assert_int_ge(fd, 0);
	ck_assert(fcntl(fd, F_GETFD) & FD_CLOEXEC);
	ck_assert(dir_is_empty(testdir));
	check_content(s, &want);
	spool_free(s);
	ck_assert_int_eq(count_fds(), before);
	buf_free(&want);
}
END_TEST

START_TEST(test_pread_across_switch)
{
	struct spool *s = spool_new(10, testdir);
	char got[32];

	write_ok(s, "abcdefgh", 8);
	ck_assert_int_eq(spool_pread(s, got, 4, 6), 2);	/* clipped at the end */
	ck_assert_mem_eq(got, "gh", 2);
	write_ok(s, "ijklmnop", 8);			/* now in the file */
	ck_assert_ptr_null(spool_mem(s));
	ck_assert_int_eq(spool_pread(s, got, 6, 5), 6);	/* spans the old bound */
	ck_assert_mem_eq(got, "fghijk", 6);
	ck_assert_int_eq(spool_pread(s, got, 100, 12), 4);
	ck_assert_mem_eq(got, "mnop", 4);
	ck_assert_int_eq(spool_pread(s, got, 4, 16), 0);	/* at the end */
	ck_assert_int_eq(spool_pread(s, got, 4, 1000), 0);	/* past it */
	ck_assert_int_eq(spool_pread(s, got, 0, 3), 0);
	spool_free(s);
}
END_TEST

START_TEST(test_random_writes)
{
	struct spool *s = spool_new(5000, testdir);
	struct buf want;
	char chunk[3000], got[3000];
	uint64_t x = 88172645463325252ULL;
	size_t i, n, off;
	ssize_t r;

	buf_init(&want);
	for (i = 0; i < 200; i++) {
		n = (size_t)(x % sizeof(chunk));
		for (off = 0; off < n; off++) {
			x ^= x << 13;
			x ^= x >> 7;
			x ^= x << 17;
			chunk[off] = (char)x;
		}
		write_ok(s, chunk, n);
		buf_append(&want, chunk, n);
		off = (size_t)(x % (want.len + 1));
		r = spool_pread(s, got, sizeof(got), off);
		n = want.len - off < sizeof(got) ? want.len - off : sizeof(got);
		ck_assert_int_eq(r, (ssize_t)n);
		if (n > 0)
			ck_assert_mem_eq(got, want.data + off, n);
	}
	check_content(s, &want);
	spool_free(s);
	buf_free(&want);
}
END_TEST

START_TEST(test_truncate_reuse)
{
	struct spool *s = spool_new(8, testdir);
	struct buf want;
	int before = count_fds(), i;

	buf_init(&want);
	for (i = 0; i < 100; i++) {
		write_ok(s, "0123456789", 10);
		ck_assert_ptr_null(spool_mem(s));
		spool_truncate(s);
		ck_assert_uint_eq(spool_size(s), 0);
		ck_assert_str_eq(spool_mem(s), "");
		ck_assert_int_eq(count_fds(), before);
		write_ok(s, "abc", 3);
		ck_assert_ptr_nonnull(spool_mem(s));
		ck_assert_mem_eq(spool_mem(s), "abc", 3);
		spool_truncate(s);
	}
	write_ok(s, "xyz", 3);
	buf_append(&want, "xyz", 3);
	check_content(s, &want);
	spool_free(s);
	ck_assert_int_eq(count_fds(), before);
	ck_assert(dir_is_empty(testdir));
	buf_free(&want);
}
END_TEST

START_TEST(test_zero_limit)
{
	struct spool *s = spool_new(0, testdir);
	const char *err = NULL;

	ck_assert_str_eq(spool_mem(s), "");
	ck_assert(spool_write(s, "", 0, &err));
	ck_assert_str_eq(spool_mem(s), "");		/* nothing written, no file */
	write_ok(s, "a", 1);
	ck_assert_ptr_null(spool_mem(s));
	ck_assert_int_ge(find_spool_fd(testdir), 0);
	spool_free(s);
}
END_TEST

START_TEST(test_tmpdir_env)
{
	struct spool *s;
	const char *old = getenv("TMPDIR");
	char *saved = old != NULL ? strdup(old) : NULL;

	ck_assert_int_eq(setenv("TMPDIR", testdir, 1), 0);
	s = spool_new(4, NULL);
	write_ok(s, "0123456789", 10);
	ck_assert_int_ge(find_spool_fd(testdir), 0);
	spool_free(s);
	ck_assert_int_eq(find_spool_fd(testdir), -1);
	if (saved != NULL)
		setenv("TMPDIR", saved, 1);
	else
		unsetenv("TMPDIR");
	free(saved);
}
END_TEST

START_TEST(test_missing_tmpdir)
{
	struct spool *s = spool_new(4, "/nonexistent/portier-check");
	const char *err = NULL;
	char got[8];
	int before = count_fds();

	write_ok(s, "abc", 3);
	ck_assert(!spool_write(s, "defgh", 5, &err));
	ck_assert_ptr_nonnull(err);
	ck_assert_msg(strstr(err, "cannot create temp file in /nonexistent/portier-check") != NULL &&
	    strstr(err, strerror(ENOENT)) != NULL, "error text: %s", err);
	/* Sticky: the body is incomplete, no more writes. */
	err = NULL;
	ck_assert(!spool_write(s, "x", 1, &err));
	ck_assert_ptr_nonnull(err);
	ck_assert_int_eq(count_fds(), before);
	/* What was written is still there. */
	ck_assert_uint_eq(spool_size(s), 3);
	ck_assert_int_eq(spool_pread(s, got, sizeof(got), 0), 3);
	ck_assert_mem_eq(got, "abc", 3);
	/* Truncate clears the failure; memory-sized bodies work again. */
	spool_truncate(s);
	write_ok(s, "ab", 2);
	spool_free(s);
	/* The text outlives the spool (per-thread static storage). */
	ck_assert_ptr_nonnull(strstr(err, "cannot create temp file"));
}
END_TEST

START_TEST(test_unwritable_tmpdir)
{
	struct spool *s;
	const char *err = NULL;
	char file[128];
	int fd;

	/* A regular file as the directory fails even for root. */
	snprintf(file, sizeof(file), "%s/plainfile", testdir);
	fd = open(file, O_WRONLY | O_CREAT | O_CLOEXEC, 0600);
	ck_assert_int_ge(fd, 0);
	close(fd);
	s = spool_new(0, file);
	ck_assert(!spool_write(s, "x", 1, &err));
	ck_assert_msg(strstr(err, "cannot create temp file in") != NULL &&
	    strstr(err, strerror(ENOTDIR)) != NULL, "error text: %s", err);
	spool_free(s);
	unlink(file);

	/* A read-only directory, when not root (root ignores the mode). */
	if (geteuid() != 0) {
		ck_assert_int_eq(chmod(testdir, 0500), 0);
		s = spool_new(0, testdir);
		ck_assert(!spool_write(s, "x", 1, &err));
		ck_assert_msg(strstr(err, strerror(EACCES)) != NULL, "error text: %s", err);
		spool_free(s);
		chmod(testdir, 0700);
	}
}
END_TEST

START_TEST(test_write_error)
{
	struct spool *s = spool_new(0, testdir);
	struct rlimit old, rl;
	const char *err = NULL;
	char big[300];
	int before = count_fds();

	/* A file size limit gives a short write, then EFBIG. */
	memset(big, 'z', sizeof(big));
	ck_assert_int_eq(getrlimit(RLIMIT_FSIZE, &old), 0);
	signal(SIGXFSZ, SIG_IGN);
	rl = old;
	rl.rlim_cur = 100;
	ck_assert_int_eq(setrlimit(RLIMIT_FSIZE, &rl), 0);
	write_ok(s, big, 60);
	ck_assert(!spool_write(s, big, sizeof(big), &err));
	ck_assert_msg(strstr(err, "cannot write temp file") != NULL &&
	    strstr(err, strerror(EFBIG)) != NULL, "error text: %s", err);
	ck_assert_int_eq(setrlimit(RLIMIT_FSIZE, &old), 0);
	ck_assert(!spool_write(s, "x", 1, &err));	/* sticky */
	spool_truncate(s);
	ck_assert_int_eq(count_fds(), before);
	write_ok(s, big, sizeof(big));
	ck_assert_uint_eq(spool_size(s), sizeof(big));
	spool_free(s);
	ck_assert_int_eq(count_fds(), before);
}
END_TEST

START_TEST(test_move_error)
{
	struct spool *s = spool_new(200, testdir);
	struct rlimit old, rl;
	const char *err = NULL;
	char big[150];
	int before = count_fds();

	/* Moving the memory to the file fails half-way: no fd is left open. */
	memset(big, 'm', sizeof(big));
	write_ok(s, big, sizeof(big));
	ck_assert_int_eq(getrlimit(RLIMIT_FSIZE, &old), 0);
	signal(SIGXFSZ, SIG_IGN);
	rl = old;
	rl.rlim_cur = 100;
	ck_assert_int_eq(setrlimit(RLIMIT_FSIZE, &rl), 0);
	ck_assert(!spool_write(s, big, 100, &err));
	ck_assert_int_eq(setrlimit(RLIMIT_FSIZE, &old), 0);
	ck_assert_msg(strstr(err, "cannot write temp file") != NULL, "error text: %s", err);
	ck_assert_int_eq(count_fds(), before);
	ck_assert_uint_eq(spool_size(s), sizeof(big));
	ck_assert_ptr_nonnull(spool_mem(s));
	spool_free(s);
	ck_assert(dir_is_empty(testdir));
}
END_TEST

START_TEST(test_long_tmpdir)
{
	char dir[5000];
	struct spool *s;
	const char *err = NULL;

	memset(dir, 'd', sizeof(dir) - 1);
	dir[0] = '/';
	dir[sizeof(dir) - 1] = '\0';
	s = spool_new(0, dir);
	ck_assert(!spool_write(s, "x", 1, &err));
	ck_assert_msg(strstr(err, strerror(ENAMETOOLONG)) != NULL, "error text: %.80s", err);
	spool_free(s);
}
END_TEST

START_TEST(test_free_null)
{
	spool_free(NULL);
}
END_TEST

/* spool_suite - all cases */
static Suite *
spool_suite(void)
{
	Suite *s = suite_create("spool");
	TCase *tc = tcase_create("spool");

	tcase_add_checked_fixture(tc, setup, teardown);
	tcase_add_test(tc, test_below_and_at_bound);
	tcase_add_test(tc, test_over_bound);
	tcase_add_test(tc, test_ref);
	tcase_add_test(tc, test_pread_across_switch);
	tcase_add_test(tc, test_random_writes);
	tcase_add_test(tc, test_truncate_reuse);
	tcase_add_test(tc, test_zero_limit);
	tcase_add_test(tc, test_tmpdir_env);
	tcase_add_test(tc, test_missing_tmpdir);
	tcase_add_test(tc, test_unwritable_tmpdir);
	tcase_add_test(tc, test_write_error);
	tcase_add_test(tc, test_move_error);
	tcase_add_test(tc, test_long_tmpdir);
	tcase_add_test(tc, test_free_null);
	suite_add_tcase(s, tc);
	return s;
}

UNIT_MAIN(spool_suite)
