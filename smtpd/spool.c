/*
 * spool.c - the held message body (see spool.h): a memory buffer up to
 * mem_limit octets, then an unlinked temp file holding everything.
 *
 * Never a queue: the file is unlinked the moment it is created, so nothing
 * survives the process, and it is close-on-exec so no child inherits it.
 * Never leaks a descriptor: the only one is closed by spool_truncate and
 * spool_free.  Writes and reads go through pwrite/pread at explicit offsets
 * (no shared file position), retried on EINTR and on short counts.
 *
 * Error texts: *err_r points to per-thread static storage holding the last
 * error of this thread ("cannot create temp file in DIR: REASON"); it stays
 * valid after spool_free and until this thread's next spool error.  After a
 * failed write the spool refuses further writes (the body is incomplete)
 * until spool_truncate.
 */
#include "config.h"

#include <assert.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "buf.h"
#include "spool.h"
#include "util.h"

struct spool {
	unsigned refs;		/* see spool.h: atomic */
	size_t mem_limit;
	char *tmpdir;		/* NULL: $TMPDIR or /tmp, looked up when needed */
	struct buf mem;		/* the body while fd < 0 */
	int fd;			/* unlinked temp file, or -1 */
	size_t size;		/* octets written */
	bool failed;		/* a write failed: refuse more until truncate */
	char err[256];		/* text of that failure */
};

static _Thread_local char spool_errbuf[256];

/* spool_error - report the spool's failure text through per-thread storage */
static const char *
spool_error(struct spool *s)
{
	str_copy(spool_errbuf, s->err, sizeof(spool_errbuf));
	return spool_errbuf;
}

/* spool_fail - record a failure with errno's text */
static void
spool_fail(struct spool *s, const char *what, const char *dir, int errnum)
{
	/* strerror is thread-safe on the libcs we build on (glibc >= 2.32, musl). */
	const char *r = strerror(errnum);

	/* A long dir is cut short, never the reason. */
	snprintf(s->err, sizeof(s->err), "%s in %.160s: %s", what, dir, r);
	s->failed = true;
}

/* spool_new - an empty spool in memory */
struct spool *
spool_new(size_t mem_limit, const char *tmpdir)
{
	struct spool *s = xcalloc(1, sizeof(*s));

	s->refs = 1;
	s->mem_limit = mem_limit;
	s->tmpdir = tmpdir != NULL ? xstrdup(tmpdir) : NULL;
	buf_init(&s->mem);
	s->fd = -1;
	return s;
}

/* spool_ref - another reference (an asynchronous reader's) */
struct spool *
spool_ref(struct spool *s)
{
	assert(__atomic_load_n(&s->refs, __ATOMIC_RELAXED) > 0);
	__atomic_add_fetch(&s->refs, 1, __ATOMIC_RELAXED);
	return s;
}

/* spool_free - drop a reference; the last one releases memory and closes the file */
void
spool_free(struct spool *s)
{
	if (s == NULL)
		return;
	if (__atomic_sub_fetch(&s->refs, 1, __ATOMIC_ACQ_REL) > 0)
		return;
	if (s->fd >= 0)
		close(s->fd);
	buf_free(&s->mem);
	free(s->tmpdir);
	free(s);
}

/* spool_dir - where temp files go: the configured dir, $TMPDIR, /tmp */
static const char *
spool_dir(const struct spool *s)
{
	const char *d;

	if (s->tmpdir != NULL && *s->tmpdir != '\0')
		return s->tmpdir;
	d = getenv("TMPDIR");
	return d != NULL && *d != '\0' ? d : "/tmp";
}

/* spool_pwrite_all - write n octets at off, through EINTR and short writes */
static bool
spool_pwrite_all(int fd, const void *p, size_t n, size_t off)
{
	const char *c = p;
	ssize_t w;

	while (n > 0) {
		w = pwrite(fd, c, n, (off_t)off);
		if (w < 0) {
			if (errno == EINTR)
				continue;
			return false;
		}
		if (w == 0) {
			errno = ENOSPC;
			return false;
		}
		c += w;
		n -= (size_t)w;
		off += (size_t)w;
	}
	return true;
}

/* spool_to_file - create the unlinked temp file and move the memory there */
static bool
spool_to_file(struct spool *s)
{
	const char *dir = spool_dir(s);
	char path[4096];
	int fd, n;

	n = snprintf(path, sizeof(path), "%s/portier-spool.XXXXXX", dir);
	if (n < 0 || (size_t)n >= sizeof(path)) {
		spool_fail(s, "cannot create temp file", dir, ENAMETOOLONG);
		return false;
	}
	fd = mkostemp(path, O_CLOEXEC);
	if (fd < 0) {
		spool_fail(s, "cannot create temp file", dir, errno);
		return false;
	}
	/* Unlinked at once: the body never outlives the process. */
	if (unlink(path) < 0) {
		spool_fail(s, "cannot unlink temp file", dir, errno);
		close(fd);
		return false;
	}
	if (!spool_pwrite_all(fd, s->mem.data, s->size, 0)) {
		spool_fail(s, "cannot write temp file", dir, errno);
		close(fd);
		return false;
	}
	s->fd = fd;
	buf_free(&s->mem);
	return true;
}

/* spool_write - append n octets; past mem_limit everything moves to a file */
bool
spool_write(struct spool *s, const void *p, size_t n, const char **err_r)
{
	if (s->failed) {
		*err_r = spool_error(s);
		return false;
	}
	if (n == 0)
		return true;
	if (n > (size_t)-1 - s->size) {
		snprintf(s->err, sizeof(s->err), "spool size overflow");
		s->failed = true;
		*err_r = spool_error(s);
		return false;
	}
	if (s->fd < 0 && s->size + n <= s->mem_limit) {
		buf_append(&s->mem, p, n);
		s->size += n;
		return true;
	}
	if (s->fd < 0 && !spool_to_file(s)) {
		*err_r = spool_error(s);
		return false;
	}
	if (!spool_pwrite_all(s->fd, p, n, s->size)) {
		spool_fail(s, "cannot write temp file", spool_dir(s), errno);
		*err_r = spool_error(s);
		return false;
	}
	s->size += n;
	return true;
}

/* spool_size - octets written */
size_t
spool_size(const struct spool *s)
{
	return s->size;
}

/* spool_mem - the body if still in memory ("" when empty), else NULL */
const char *
spool_mem(const struct spool *s)
{
	if (s->fd >= 0)
		return NULL;
	return s->mem.data != NULL ? s->mem.data : "";
}

/* spool_pread - up to n octets at off; 0 at or past the end, -1 on error */
ssize_t
spool_pread(struct spool *s, void *p, size_t n, size_t off)
{
	char *c = p;
	size_t done = 0;
	ssize_t got;

	if (off >= s->size)
		return 0;
	if (n > s->size - off)
		n = s->size - off;
	if ((size_t)SSIZE_MAX < n)
		n = (size_t)SSIZE_MAX;
	if (s->fd < 0) {
		memcpy(p, s->mem.data + off, n);
		return (ssize_t)n;
	}
	while (done < n) {
		got = pread(s->fd, c + done, n - done, (off_t)(off + done));
		if (got < 0) {
			if (errno == EINTR)
				continue;
			return -1;
		}
		if (got == 0)
			break;	/* the file shrank under us: report what we have */
		done += (size_t)got;
	}
	return (ssize_t)done;
}

/* spool_truncate - empty the spool for the next message, back in memory */
void
spool_truncate(struct spool *s)
{
	if (s->fd >= 0) {
		close(s->fd);
		s->fd = -1;
	}
	buf_reset(&s->mem);
	s->size = 0;
	s->failed = false;
	s->err[0] = '\0';
}
