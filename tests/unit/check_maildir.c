/*
 * check_maildir.c - unit tests for the embedded Maildir backend (maildir.c).
 *
 * Every test delivers into its own fresh directory under $TMPDIR (or /tmp)
 * and never touches anything outside it.  Covers exact bytes, unique names,
 * the recipient-to-path mapping against hostile local parts, failures that
 * must leave nothing in tmp/, file-backed spools and concurrent delivery.
 */
#include "config.h"

#include <check.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

#include "buf.h"
#include "maildir.h"
#include "spool.h"
#include "util.h"
#include "unit.h"

static const char HEAD[] = "Return-Path: <a@b.test>\r\nReceived: from x by y\r\n";
static const char BODY[] = "Subject: hi\r\n\r\nline one\r\n.. dotted\r\n";

/* sandbox: a fresh directory; root is a not yet existing child of it */
static char sandbox[PATH_MAX];
static char root[PATH_MAX];

/* setup - make the sandbox and pick the root inside it */
static void
setup(void)
{
	const char *t = getenv("TMPDIR");

	ck_assert(snprintf(sandbox, sizeof(sandbox), "%s/check_maildir.XXXXXX",
	    t && *t ? t : "/tmp") < (int)sizeof(sandbox));
	ck_assert_ptr_nonnull(mkdtemp(sandbox));
	ck_assert(snprintf(root, sizeof(root), "%s/mail", sandbox) < (int)sizeof(root));
}

/* rm_tree - remove a directory tree (test cleanup) */
static void
rm_tree(const char *path)
{
	DIR *d = opendir(path);
	struct dirent *de;
	char sub[PATH_MAX];

	if (d == NULL) {
		unlink(path);
		return;
	}
	while ((de = readdir(d)) != NULL) {
		if (strcmp(de->d_name, ".") == 0 || strcmp(de->d_name, "..") == 0)
			continue;
		if (snprintf(sub, sizeof(sub), "%s/%s", path, de->d_name) >= (int)sizeof(sub))
			continue;
		chmod(sub, 0700);
		rm_tree(sub);
	}
	closedir(d);
	rmdir(path);
}

/* teardown - remove the sandbox */
static void
teardown(void)
{
	chmod(sandbox, 0700);
	rm_tree(sandbox);
}

/* spool_of - a spool holding n bytes of s, in memory if mem_limit allows */
static struct spool *
spool_of(const char *s, size_t n, size_t mem_limit)
{
	struct spool *sp = spool_new(mem_limit, NULL);
	const char *err = NULL;

	ck_assert_msg(spool_write(sp, s, n, &err), "spool_write: %s", err ? err : "?");
	return sp;
}

/* list_dir - the names in dir (not . or ..), into names_r (caller frees each); count */
static size_t
list_dir(const char *dir, char **names_r, size_t max)
{
	DIR *d = opendir(dir);
	struct dirent *de;
	size_t n = 0;

	ck_assert_msg(d != NULL, "opendir %s: %s", dir, strerror(errno));
	while ((de = readdir(d)) != NULL) {
		if (strcmp(de->d_name, ".") == 0 || strcmp(de->d_name, "..") == 0)
			continue;
		ck_assert(n < max);
		names_r[n++] = xstrdup(de->d_name);
	}
	closedir(d);
	return n;
}

/* count_dir - number of entries in dir, -1 if it does not exist */
static int
count_dir(const char *dir)
{
	char *names[256];
	size_t i, n;

	if (access(dir, F_OK) == -1)
		return -1;
	n = list_dir(dir, names, ARRAY_SIZE(names));
	for (i = 0; i < n; i++)
		free(names[i]);
	return (int)n;
}

/* read_file - whole contents of path into b */
static void
read_file(const char *path, struct buf *b)
{
	char chunk[8192];
	ssize_t r;
	int fd = open(path, O_RDONLY);

	ck_assert_msg(fd != -1, "open %s: %s", path, strerror(errno));
	buf_reset(b);
	while ((r = read(fd, chunk, sizeof(chunk))) > 0)
		buf_append(b, chunk, (size_t)r);
	ck_assert(r == 0);
	close(fd);
}

/* only_message - path of the single file in DIR/new (caller frees); checks tmp/ is empty */
static char *
only_message(const char *dir)
{
	char *names[4], *sub, *path;
	size_t n;

	sub = xasprintf("%s/new", dir);
	n = list_dir(sub, names, ARRAY_SIZE(names));
	ck_assert_msg(n == 1, "%s holds %zu files", sub, n);
	path = xasprintf("%s/%s", sub, names[0]);
	free(names[0]);
	free(sub);
	sub = xasprintf("%s/tmp", dir);
	ck_assert_int_eq(count_dir(sub), 0);
	free(sub);
	sub = xasprintf("%s/cur", dir);
	ck_assert_int_eq(count_dir(sub), 0);
	free(sub);
	return path;
}

/* deliver_ok - deliver HEAD + BODY to rcpt under root, asserting success */
static void
deliver_ok(const char *rcpt, const char *host)
{
	struct spool *sp = spool_of(BODY, strlen(BODY), 1 << 20);
	char *err = NULL;
	bool ok;

	ok = maildir_deliver(root, rcpt, host, HEAD, strlen(HEAD), sp, 0, &err);
	ck_assert_msg(ok, "deliver %s: %s", rcpt, err ? err : "?");
	ck_assert_ptr_null(err);
	spool_free(sp);
}

/* name_ok - whether name has the shape time.M<usec>P<pid>Q<n>.<host> */
static bool
name_ok(const char *name, const char *host)
{
	unsigned long long t, usec, pid, q;
	int end = 0;

	if (sscanf(name, "%llu.M%6lluP%lluQ%llu.%n", &t, &usec, &pid, &q, &end) != 4 ||
	    end == 0)
		return false;
	return pid == (unsigned long long)getpid() && strcmp(name + end, host) == 0;
}

START_TEST(test_exact_bytes)
{
	struct buf got, want;
	char *dir, *path, *err;

	deliver_ok("user@Example.TEST", "mx.example.test");
	dir = maildir_path(root, "user@Example.TEST", &err);
	ck_assert_ptr_nonnull(dir);
	ck_assert_ptr_null(err);
	ck_assert_str_eq(dir + strlen(root), "/example.test/user");
	path = only_message(dir);
	ck_assert(name_ok(strrchr(path, '/') + 1, "mx.example.test"));

	buf_init(&got);
	buf_init(&want);
	buf_puts(&want, HEAD);
	buf_puts(&want, BODY);
	read_file(path, &got);
	ck_assert_uint_eq(got.len, want.len);
	ck_assert(memcmp(got.data, want.data, want.len) == 0);

	struct stat st;
	ck_assert_int_eq(stat(path, &st), 0);
	ck_assert_uint_eq(st.st_mode & 0777, 0600);
	ck_assert_int_eq(stat(dir, &st), 0);
	ck_assert_uint_eq(st.st_mode & 0777, 0700);
	buf_free(&got);
	buf_free(&want);
	free(path);
	free(dir);
}
END_TEST

START_TEST(test_no_body_and_empty_head)
{
	struct buf got;
	char *err = NULL, *dir, *path;

	ck_assert(maildir_deliver(root, "a@b.test", "h", HEAD, strlen(HEAD), NULL, 0, &err));
	dir = maildir_path(root, "a@b.test", &err);
	path = only_message(dir);
	buf_init(&got);
	read_file(path, &got);
	ck_assert_str_eq(got.data, HEAD);
	unlink(path);
	free(path);

	struct spool *sp = spool_of(BODY, strlen(BODY), 1 << 20);
	ck_assert(maildir_deliver(root, "a@b.test", "h", NULL, 0, sp, 0, &err));
	path = only_message(dir);
	read_file(path, &got);
	ck_assert_str_eq(got.data, BODY);
	spool_free(sp);
	buf_free(&got);
	free(path);
	free(dir);
}
END_TEST

START_TEST(test_distinct_names)
{
	char *names[4], *dir, *sub, *err;
	size_t n;

	deliver_ok("user@example.test", "mx");
	deliver_ok("user@example.test", "mx");
	dir = maildir_path(root, "user@example.test", &err);
	sub = xasprintf("%s/new", dir);
	n = list_dir(sub, names, ARRAY_SIZE(names));
	ck_assert_uint_eq(n, 2);
	ck_assert_str_ne(names[0], names[1]);
	ck_assert(name_ok(names[0], "mx"));
	ck_assert(name_ok(names[1], "mx"));
	free(names[0]);
	free(names[1]);
	free(sub);
	free(dir);
}
END_TEST

START_TEST(test_hostname_escaped)
{
	char *names[2], *dir, *sub, *err;

	deliver_ok("user@example.test", "a/b:c");
	dir = maildir_path(root, "user@example.test", &err);
	sub = xasprintf("%s/new", dir);
	ck_assert_uint_eq(list_dir(sub, names, ARRAY_SIZE(names)), 1);
	ck_assert(name_ok(names[0], "a\\057b\\072c"));
	free(names[0]);
	free(sub);
	free(dir);

	/* NULL and "" fall back to the system's name; still one valid file */
	deliver_ok("other@example.test", NULL);
	deliver_ok("other@example.test", "");
	dir = maildir_path(root, "other@example.test", &err);
	sub = xasprintf("%s/new", dir);
	ck_assert_int_eq(count_dir(sub), 2);
	free(sub);
	free(dir);
}
END_TEST

/* Recipient to directory, relative to ROOT; NULL: no mailbox. */
static const struct {
	const char *rcpt;
	const char *path;
} path_cases[] = {
	{ "user@example.test", "example.test/user" },
	{ "<user@EXAMPLE.Test>", "example.test/user" },
	{ "User.Name+tag@example.test", "example.test/User.Name+tag" },
	{ "postmaster", "localhost/postmaster" },
	{ "<PostMaster>", "localhost/postmaster" },
	{ "POSTMASTER@example.test", "example.test/postmaster" },
	{ "../../etc@example.test", "example.test/%2E.%2F..%2Fetc" },
	{ "a/b@example.test", "example.test/a%2Fb" },
	{ ".hidden@example.test", "example.test/%2Ehidden" },
	{ ".@example.test", "example.test/%2E" },
	{ "..@example.test", "example.test/%2E." },
	{ "\"x y\"@example.test", "example.test/%22x%20y%22" },
	{ "\"a@b\"@example.test", "example.test/%22a%40b%22" },
	{ "50%@example.test", "example.test/50%25" },
	{ "50%25@example.test", "example.test/50%2525" },
	{ "\"\\\"\"@example.test", "example.test/%22%5C%22%22" },
	{ "caf\xc3\xa9@example.test", "example.test/caf%C3%A9" },
	{ "user@..", "%2E./user" },
	{ "user@[192.0.2.1]", "%5B192.0.2.1%5D/user" },
	{ "user@[IPv6:2001:db8::1]", "%5Bipv6%3A2001%3Adb8%3A%3A1%5D/user" },
	{ "", NULL },
	{ "<>", NULL },
	{ "user", NULL },
	{ "@example.test", NULL },
	{ "user@", NULL },
};

START_TEST(test_path_mapping)
{
	char *path, *err = NULL;

	path = maildir_path("/R", path_cases[_i].rcpt, &err);
	if (path_cases[_i].path == NULL) {
		ck_assert_msg(path == NULL, "%s mapped to %s", path_cases[_i].rcpt, path);
		ck_assert_ptr_nonnull(err);
		free(err);
		return;
	}
	ck_assert_msg(path != NULL, "%s: %s", path_cases[_i].rcpt, err);
	ck_assert_ptr_null(err);
	ck_assert_str_eq(path + 3, path_cases[_i].path);
	ck_assert(strncmp(path, "/R/", 3) == 0);
	free(path);
}
END_TEST

START_TEST(test_path_too_long)
{
	char local[300], *err = NULL, *path;
	struct buf b;

	/* 100 escaped bytes are 300 octets: over NAME_MAX, refused, not cut */
	memset(local, '/', 100);
	local[100] = '\0';
	buf_init(&b);
	buf_printf(&b, "%s@example.test", local);
	path = maildir_path("/R", b.data, &err);
	ck_assert_ptr_null(path);
	ck_assert_ptr_nonnull(err);
	free(err);
	err = NULL;
	ck_assert(!maildir_deliver(root, b.data, "h", HEAD, strlen(HEAD), NULL, 0, &err));
	ck_assert_ptr_nonnull(err);
	free(err);
	buf_free(&b);
}
END_TEST

/* walk - count regular files under dir; assert every entry is a plain dir or file */
static int
walk(const char *dir)
{
	DIR *d = opendir(dir);
	struct dirent *de;
	struct stat st;
	int files = 0;

	ck_assert_msg(d != NULL, "opendir %s", dir);
	while ((de = readdir(d)) != NULL) {
		char *sub;

		if (strcmp(de->d_name, ".") == 0 || strcmp(de->d_name, "..") == 0)
			continue;
		sub = xasprintf("%s/%s", dir, de->d_name);
		ck_assert_int_eq(lstat(sub, &st), 0);
		if (S_ISDIR(st.st_mode))
			files += walk(sub);
		else if (S_ISREG(st.st_mode))
			files++;
		else
			ck_abort_msg("unexpected file type at %s", sub);
		free(sub);
	}
	closedir(d);
	return files;
}

static const char *const hostile[] = {
	"../../etc@example.test",
	"../../../../../../../../tmp/x@example.test",
	"a/b@example.test",
	".hidden@example.test",
	"\"x y\"@example.test",
	".@example.test",
	"..@example.test",
	"/@example.test",
	"user@../..",
	"user@/etc",
	"\"../\"@..",
};

START_TEST(test_hostile_stay_under_root)
{
	char *dir, *err, *path;
	char real[PATH_MAX], realroot[PATH_MAX];

	deliver_ok(hostile[_i], "h");
	dir = maildir_path(root, hostile[_i], &err);
	ck_assert_ptr_nonnull(dir);
	path = only_message(dir);
	ck_assert_ptr_nonnull(realpath(path, real));
	ck_assert_ptr_nonnull(realpath(root, realroot));
	ck_assert(strncmp(real, realroot, strlen(realroot)) == 0 &&
	    real[strlen(realroot)] == '/');
	/* exactly ROOT/<domain>/<local>/new/<file>: two components below ROOT */
	const char *rest = real + strlen(realroot) + 1;
	int slashes = 0;
	for (; *rest; rest++)
		slashes += *rest == '/';
	ck_assert_int_eq(slashes, 3);
	/* the sandbox holds nothing but ROOT, and ROOT one file */
	ck_assert_int_eq(count_dir(sandbox), 1);
	ck_assert_int_eq(walk(root), 1);
	free(path);
	free(dir);
}
END_TEST

START_TEST(test_root_not_a_directory)
{
	char *err = NULL;
	int fd;

	fd = open(root, O_WRONLY | O_CREAT | O_EXCL, 0600);
	ck_assert_int_ne(fd, -1);
	close(fd);
	ck_assert(!maildir_deliver(root, "user@example.test", "h", HEAD, strlen(HEAD),
	    NULL, 0, &err));
	ck_assert_ptr_nonnull(err);
	ck_assert_msg(strstr(err, root) != NULL, "error does not name the path: %s", err);
	ck_assert_msg(strstr(err, strerror(ENOTDIR)) != NULL, "no strerror: %s", err);
	free(err);
}
END_TEST

START_TEST(test_root_unwritable)
{
	char *err = NULL;

	/* Permission bits do not stop root; that case is test_root_not_a_directory. */
	if (geteuid() == 0)
		return;
	ck_assert_int_eq(mkdir(root, 0500), 0);
	ck_assert(!maildir_deliver(root, "user@example.test", "h", HEAD, strlen(HEAD),
	    NULL, 0, &err));
	ck_assert_ptr_nonnull(err);
	ck_assert_msg(strstr(err, root) != NULL, "error does not name the path: %s", err);
	ck_assert_msg(strstr(err, strerror(EACCES)) != NULL, "no strerror: %s", err);
	ck_assert_int_eq(count_dir(root), 0);
	free(err);
}
END_TEST

START_TEST(test_missing_parents_created)
{
	char *deep;

	deep = xasprintf("%s/a/b/c", root);
	ck_assert(str_copy(root, deep, sizeof(root)));
	free(deep);
	deliver_ok("user@example.test", "h");
	ck_assert_int_eq(count_dir(root), 1);
}
END_TEST

START_TEST(test_write_failure_leaves_no_tmp)
{
	struct rlimit rl = { 4096, 4096 };
	struct spool *sp;
	char *err = NULL, *dir, *sub;
	char big[16384];

	/* Check runs each test in its own process: the limit dies with it. */
	deliver_ok("user@example.test", "h");
	dir = maildir_path(root, "user@example.test", &err);
	sub = xasprintf("%s/new", dir);
	ck_assert_int_eq(count_dir(sub), 1);
	memset(big, 'x', sizeof(big));
	sp = spool_of(big, sizeof(big), 1 << 20);
	signal(SIGXFSZ, SIG_IGN);
	ck_assert_int_eq(setrlimit(RLIMIT_FSIZE, &rl), 0);
	ck_assert(!maildir_deliver(root, "user@example.test", "h", HEAD, strlen(HEAD), sp, 0,
	    &err));
	ck_assert_ptr_nonnull(err);
	ck_assert_msg(strstr(err, "/tmp/") != NULL && strstr(err, strerror(EFBIG)) != NULL,
	    "unexpected error: %s", err);
	free(err);
	free(sub);
	sub = xasprintf("%s/tmp", dir);
	ck_assert_int_eq(count_dir(sub), 0);
	free(sub);
	sub = xasprintf("%s/new", dir);
	ck_assert_int_eq(count_dir(sub), 1);
	free(sub);
	free(dir);
	spool_free(sp);
}
END_TEST

START_TEST(test_large_file_spool)
{
	const size_t total = 5 * 1024 * 1024 + 4321;
	struct spool *sp = spool_new(64 * 1024, NULL);
	struct buf want, got;
	const char *serr = NULL;
	char *err = NULL, *dir, *path;
	size_t i;

	buf_init(&want);
	buf_puts(&want, HEAD);
	for (i = 0; want.len - strlen(HEAD) < total; i++)
		buf_printf(&want, "line %zu of a long message\r\n", i);
	ck_assert(spool_write(sp, want.data + strlen(HEAD), want.len - strlen(HEAD), &serr));
	ck_assert_ptr_null(spool_mem(sp));
	ck_assert_uint_eq(spool_size(sp), want.len - strlen(HEAD));
	ck_assert_msg(maildir_deliver(root, "big@example.test", "h", HEAD, strlen(HEAD), sp, 0,
	    &err), "deliver: %s", err);
	dir = maildir_path(root, "big@example.test", &err);
	path = only_message(dir);
	buf_init(&got);
	read_file(path, &got);
	ck_assert_uint_eq(got.len, want.len);
	ck_assert(memcmp(got.data, want.data, want.len) == 0);
	buf_free(&got);
	buf_free(&want);
	spool_free(sp);
	free(path);
	free(dir);
}
END_TEST

/* body_off cases: where the body starts in the spool, and which spool */
static const struct {
	size_t off;
	size_t mem_limit;
} off_cases[] = {
	{ 0, 1 << 20 },
	{ 13, 1 << 20 },		/* past the original "Subject: hi\r\n" */
	{ 100000, 1 << 20 },
	{ 0, 1024 },
	{ 13, 1024 },
	{ 70001, 1024 },		/* across the 64 KiB copy chunks */
	{ 199999, 1024 },		/* the last byte only */
	{ 200000, 1024 },		/* exactly the end: head only */
	{ 300000, 1024 },		/* beyond the end: head only */
};

START_TEST(test_body_offset)
{
	const size_t total = 200000;
	struct spool *sp = spool_new(off_cases[_i].mem_limit, NULL);
	struct buf body, want, got;
	const char *serr = NULL;
	char *err = NULL, *dir, *path;
	size_t off = off_cases[_i].off;
	size_t i;

	/* a spool of original headers + body; the head replaces what is before off */
	buf_init(&body);
	buf_puts(&body, "Subject: hi\r\n");
	for (i = 0; body.len < total; i++)
		buf_putc(&body, (char)('A' + i % 23));
	ck_assert(spool_write(sp, body.data, body.len, &serr));
	ck_assert_uint_eq(spool_size(sp), total);
	ck_assert((spool_mem(sp) == NULL) == (off_cases[_i].mem_limit < total));
	ck_assert_msg(maildir_deliver(root, "u@example.test", "h", HEAD, strlen(HEAD), sp, off,
	    &err), "deliver: %s", err);
	buf_init(&want);
	buf_puts(&want, HEAD);
	if (off < total)
		buf_append(&want, body.data + off, total - off);
	dir = maildir_path(root, "u@example.test", &err);
	path = only_message(dir);
	buf_init(&got);
	read_file(path, &got);
	ck_assert_uint_eq(got.len, want.len);
	ck_assert(memcmp(got.data, want.data, want.len) == 0);
	buf_free(&got);
	buf_free(&want);
	buf_free(&body);
	spool_free(sp);
	free(path);
	free(dir);
}
END_TEST

#define THREADS		4
#define PER_THREAD	25

/* deliver_many - thread body: PER_THREAD deliveries to the same mailbox */
static void *
deliver_many(void *arg)
{
	struct spool *sp = spool_of(BODY, strlen(BODY), 1 << 20);
	char *err;
	int i;

	for (i = 0; i < PER_THREAD; i++) {
		if (!maildir_deliver(root, "user@example.test", "h", HEAD, strlen(HEAD), sp, 0,
		    &err)) {
			free(err);
			spool_free(sp);
			return (void *)1;
		}
	}
	spool_free(sp);
	return NULL;
}

START_TEST(test_threads)
{
	pthread_t t[THREADS];
	void *res;
	char *dir, *sub, *err;
	int i;

	for (i = 0; i < THREADS; i++)
		ck_assert_int_eq(pthread_create(&t[i], NULL, deliver_many, NULL), 0);
	for (i = 0; i < THREADS; i++) {
		ck_assert_int_eq(pthread_join(t[i], &res), 0);
		ck_assert_ptr_null(res);
	}
	dir = maildir_path(root, "user@example.test", &err);
	sub = xasprintf("%s/new", dir);
	ck_assert_int_eq(count_dir(sub), THREADS * PER_THREAD);
	free(sub);
	sub = xasprintf("%s/tmp", dir);
	ck_assert_int_eq(count_dir(sub), 0);
	free(sub);
	free(dir);
}
END_TEST

/* maildir_suite - every maildir test */
static Suite *
maildir_suite(void)
{
	Suite *s = suite_create("maildir");
	TCase *tc = tcase_create("deliver");

	tcase_add_checked_fixture(tc, setup, teardown);
	tcase_set_timeout(tc, 60);
	tcase_add_test(tc, test_exact_bytes);
	tcase_add_test(tc, test_no_body_and_empty_head);
	tcase_add_test(tc, test_distinct_names);
	tcase_add_test(tc, test_hostname_escaped);
	tcase_add_loop_test(tc, test_path_mapping, 0, (int)ARRAY_SIZE(path_cases));
	tcase_add_test(tc, test_path_too_long);
	tcase_add_loop_test(tc, test_hostile_stay_under_root, 0, (int)ARRAY_SIZE(hostile));
	tcase_add_test(tc, test_root_not_a_directory);
	tcase_add_test(tc, test_root_unwritable);
	tcase_add_test(tc, test_missing_parents_created);
	tcase_add_test(tc, test_write_failure_leaves_no_tmp);
	tcase_add_test(tc, test_large_file_spool);
	tcase_add_loop_test(tc, test_body_offset, 0, (int)ARRAY_SIZE(off_cases));
	tcase_add_test(tc, test_threads);
	suite_add_tcase(s, tc);
	return s;
}

UNIT_MAIN(maildir_suite)
