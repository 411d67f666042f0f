/*
 * maildir.c - the embedded Maildir backend (see maildir.h).
 *
 * Delivery follows the Maildir protocol: a unique name
 * (time.M<usec>P<pid>Q<n>.<host>), an exclusive create in tmp/, full writes,
 * fsync, rename into new/, fsync of new/; only then is the message ours.
 * Directories below ROOT are walked with *at() calls and O_NOFOLLOW from a
 * descriptor on ROOT, and every component is escaped, so no recipient can
 * reach outside ROOT.  Must never run on an event loop and never report
 * success for a message that is not durable.
 */
#include "config.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <unistd.h>

#include "maildir.h"
#include "spool.h"
#include "util.h"

#ifndef NAME_MAX
#define NAME_MAX 255
#endif
#ifndef HOST_NAME_MAX
#define HOST_NAME_MAX 255
#endif

#define MAILDIR_COPY_CHUNK	(64 * 1024)
#define MAILDIR_CREATE_TRIES	8

/* Deliveries made by this process: the Q field of unique names. */
static atomic_ulong maildir_seq;

/* An open Maildir: descriptors on it and its tmp/ and new/, for error texts its path. */
struct maildir_box {
	char *path;
	int dirfd;
	int tmpfd;
	int newfd;
};

/* maildir_safe_byte - whether c may appear unescaped in a path component */
static bool
maildir_safe_byte(unsigned char c)
{
	return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') ||
	    (c >= '0' && c <= '9') || c == '.' || c == '_' || c == '+' ||
	    c == '=' || c == '-';
}

/* maildir_escape - one path component from n bytes of s; false if too long or empty */
static bool
maildir_escape(char *dst, size_t size, const char *s, size_t n, bool lower)
{
	static const char hex[] = "0123456789ABCDEF";
	size_t i, o = 0;

	if (n == 0)
		return false;
	for (i = 0; i < n; i++) {
		unsigned char c = (unsigned char)s[i];

		if (lower && c >= 'A' && c <= 'Z')
			c = (unsigned char)(c + ('a' - 'A'));
		if (maildir_safe_byte(c) && !(i == 0 && c == '.')) {
			if (o + 1 >= size)
				return false;
			dst[o++] = (char)c;
			continue;
		}
		if (o + 3 >= size)
			return false;
		dst[o++] = '%';
		dst[o++] = hex[c >> 4];
		dst[o++] = hex[c & 15];
	}
	dst[o] = '\0';
	return true;
}

/* maildir_split - escaped domain and local part of rcpt; false + *err_r if it names no mailbox */
static bool
maildir_split(const char *rcpt, char *dom, char *loc, size_t size, char **err_r)
{
	const char *s = rcpt, *at = NULL, *p;
	size_t len = strlen(rcpt);

	if (len >= 2 && s[0] == '<' && s[len - 1] == '>') {
		s++;
		len -= 2;
	}
	/* The domain never contains '@'; a quoted local part may. */
	for (p = s; p < s + len; p++)
		if (*p == '@')
			at = p;
	if (at == NULL) {
		if (len != 10 || str_ncasecmp(s, "postmaster", 10) != 0) {
			*err_r = xasprintf("recipient has no domain");
			return false;
		}
		str_copy(dom, "localhost", size);
		str_copy(loc, "postmaster", size);
		return true;
	}
	if (at == s || at == s + len - 1) {
		*err_r = xasprintf("recipient has an empty local part or domain");
		return false;
	}
	if (!maildir_escape(dom, size, at + 1, (size_t)(s + len - at - 1), true) ||
	    !maildir_escape(loc, size, s, (size_t)(at - s), false)) {
		*err_r = xasprintf("recipient too long for a mailbox name");
		return false;
	}
	/* RFC 5321 4.5.1: postmaster is recognised in any case. */
	if (str_casecmp(loc, "postmaster") == 0)
		str_lower(loc);
	return true;
}

/* maildir_path - the Maildir directory rcpt maps to under root */
char *
maildir_path(const char *root, const char *rcpt, char **err_r)
{
	char dom[NAME_MAX + 1], loc[NAME_MAX + 1];

	*err_r = NULL;
	if (!maildir_split(rcpt, dom, loc, sizeof(dom), err_r))
		return NULL;
	return xasprintf("%s/%s/%s", root, dom, loc);
}

/* maildir_mkdirs - mkdir -p for the root given by the administrator */
static bool
maildir_mkdirs(const char *root, char **err_r)
{
	char *path, *p;
	bool last;

	if (*root == '\0') {
		*err_r = xasprintf("empty maildir root");
		return false;
	}
	path = xstrdup(root);
	for (p = path + 1, last = false; !last; p++) {
		if (*p != '/' && *p != '\0')
			continue;
		last = *p == '\0';
		*p = '\0';
		if (mkdir(path, 0700) == -1 && errno != EEXIST) {
			*err_r = xasprintf("mkdir %s: %s", path, strerror(errno));
			free(path);
			return false;
		}
		if (!last)
			*p = '/';
	}
	free(path);
	return true;
}

/* maildir_subdir - create (mode 0700) if needed and open name below parent */
static int
maildir_subdir(int parent, const char *parentpath, const char *name, char **err_r)
{
	int fd;

	/*
	 * maildir_escape guarantees this; checked again because *at() with an
	 * absolute name ignores parent.
	 */
	if (*name == '\0' || strchr(name, '/') != NULL || strcmp(name, ".") == 0 ||
	    strcmp(name, "..") == 0)
		fatal("maildir_subdir: unsafe path component");
	if (mkdirat(parent, name, 0700) == 0) {
		/* A new directory entry is durable only once its parent is synced. */
		if (fsync(parent) == -1) {
			*err_r = xasprintf("fsync %s: %s", parentpath, strerror(errno));
			return -1;
		}
	} else if (errno != EEXIST) {
		*err_r = xasprintf("mkdir %s/%s: %s", parentpath, name, strerror(errno));
		return -1;
	}
	fd = openat(parent, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
	if (fd == -1)
		*err_r = xasprintf("open %s/%s: %s", parentpath, name, strerror(errno));
	return fd;
}

/* maildir_close_box - release what maildir_open_box opened */
static void
maildir_close_box(struct maildir_box *box)
{
	if (box->dirfd != -1)
		close(box->dirfd);
	if (box->tmpfd != -1)
		close(box->tmpfd);
	if (box->newfd != -1)
		close(box->newfd);
	free(box->path);
}

/* maildir_open_box - open (creating) ROOT/dom/loc and its tmp/, new/, cur/ */
static bool
maildir_open_box(struct maildir_box *box, const char *root, const char *dom,
    const char *loc, char **err_r)
{
	char *dompath;
	int rootfd, domfd, curfd;

	box->path = xasprintf("%s/%s/%s", root, dom, loc);
	box->dirfd = box->tmpfd = box->newfd = -1;
	if (!maildir_mkdirs(root, err_r))
		return false;
	rootfd = open(root, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (rootfd == -1) {
		*err_r = xasprintf("open %s: %s", root, strerror(errno));
		return false;
	}
	domfd = maildir_subdir(rootfd, root, dom, err_r);
	close(rootfd);
	if (domfd == -1)
		return false;
	dompath = xasprintf("%s/%s", root, dom);
	box->dirfd = maildir_subdir(domfd, dompath, loc, err_r);
	close(domfd);
	free(dompath);
	if (box->dirfd == -1)
		return false;
	if ((box->tmpfd = maildir_subdir(box->dirfd, box->path, "tmp", err_r)) == -1 ||
	    (box->newfd = maildir_subdir(box->dirfd, box->path, "new", err_r)) == -1 ||
	    (curfd = maildir_subdir(box->dirfd, box->path, "cur", err_r)) == -1)
		return false;
	close(curfd);
	return true;
}

/* maildir_unique - a fresh Maildir file name in dst (size > 64) */
static void
maildir_unique(char *dst, size_t size, const char *host)
{
	struct timeval tv;
	unsigned long q = atomic_fetch_add(&maildir_seq, 1) + 1;
	size_t o;
	int n;

	gettimeofday(&tv, NULL);
	n = snprintf(dst, size, "%lld.M%06ldP%ldQ%lu.", (long long)tv.tv_sec,
	    (long)tv.tv_usec, (long)getpid(), q);
	if (n < 0 || (size_t)n >= size)
		fatal("maildir_unique: name buffer too small");
	/*
	 * The spec writes '/' and ':' in the host part as octal escapes.  A host
	 * name too long for NAME_MAX is cut: time, pid and Q already make the
	 * name unique on this host.
	 */
	for (o = (size_t)n; *host; host++) {
		const char *esc = *host == '/' ? "\\057" : *host == ':' ? "\\072" : NULL;
		size_t len = esc ? 4 : 1;

		if (o + len >= size)
			break;
		memcpy(dst + o, esc ? esc : host, len);
		o += len;
	}
	dst[o] = '\0';
}

/* maildir_write_all - write n bytes, riding out EINTR and short writes; 0 or an errno */
static int
maildir_write_all(int fd, const char *p, size_t n)
{
	ssize_t w;

	while (n > 0) {
		w = write(fd, p, n);
		if (w == -1) {
			if (errno == EINTR)
				continue;
			return errno;
		}
		if (w == 0)
			return EIO;
		p += w;
		n -= (size_t)w;
	}
	return 0;
}

/* maildir_copy_body - append the spool from off on to fd; 0 or an errno (*what_r: which side) */
static int
maildir_copy_body(int fd, struct spool *body, size_t off, const char **what_r)
{
	size_t size = spool_size(body);
	const char *mem = spool_mem(body);
	char *chunk;
	ssize_t r;
	int e = 0;

	*what_r = "write";
	if (off >= size)
		return 0;
	if (mem != NULL)
		return maildir_write_all(fd, mem + off, size - off);
	chunk = xmalloc(MAILDIR_COPY_CHUNK);
	while (off < size) {
		size_t want = size - off < MAILDIR_COPY_CHUNK ? size - off : MAILDIR_COPY_CHUNK;

		errno = 0;
		r = spool_pread(body, chunk, want, off);
		if (r <= 0) {
			*what_r = "read spool for";
			e = (r == -1 && errno != 0) ? errno : EIO;
			break;
		}
		if ((e = maildir_write_all(fd, chunk, (size_t)r)) != 0)
			break;
		off += (size_t)r;
	}
	free(chunk);
	return e;
}

/* maildir_create - exclusive create of a uniquely named file in tmp/; fd or -1 */
static int
maildir_create(struct maildir_box *box, const char *host, char *name, size_t size,
    char **err_r)
{
	int fd, i;

	for (i = 0; i < MAILDIR_CREATE_TRIES; i++) {
		maildir_unique(name, size, host);
		fd = openat(box->tmpfd, name, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC |
		    O_NOFOLLOW, 0600);
		if (fd != -1 || errno != EEXIST)
			break;
	}
	if (fd == -1)
		*err_r = xasprintf("create %s/tmp/%s: %s", box->path, name, strerror(errno));
	return fd;
}

/* maildir_fill - write, sync and close the tmp file; false + *err_r, fd closed either way */
static bool
maildir_fill(struct maildir_box *box, int fd, const char *name, const char *head,
    size_t headlen, struct spool *body, size_t body_off, char **err_r)
{
	const char *what = "write";
	int e;

	e = maildir_write_all(fd, head, headlen);
	if (e == 0 && body != NULL)
		e = maildir_copy_body(fd, body, body_off, &what);
	if (e == 0 && fsync(fd) == -1) {
		what = "fsync";
		e = errno;
	}
	/* close() reports delayed write errors on some file systems (NFS). */
	if (close(fd) == -1 && e == 0) {
		what = "close";
		e = errno;
	}
	if (e != 0) {
		*err_r = xasprintf("%s %s/tmp/%s: %s", what, box->path, name, strerror(e));
		return false;
	}
	return true;
}

/* maildir_deliver - deliver head + body to rcpt's Maildir under root */
bool
maildir_deliver(const char *root, const char *rcpt, const char *hostname,
    const char *head, size_t headlen, struct spool *body, size_t body_off, char **err_r)
{
	char dom[NAME_MAX + 1], loc[NAME_MAX + 1], name[NAME_MAX + 1];
	char hostbuf[HOST_NAME_MAX + 1];
	struct maildir_box box = { NULL, -1, -1, -1 };
	bool ok = false;
	int fd;

	*err_r = NULL;
	if (!maildir_split(rcpt, dom, loc, sizeof(dom), err_r))
		return false;
	if (hostname == NULL || *hostname == '\0') {
		if (gethostname(hostbuf, sizeof(hostbuf)) == -1)
			hostbuf[0] = '\0';
		hostbuf[sizeof(hostbuf) - 1] = '\0';
		if (hostbuf[0] == '\0')
			str_copy(hostbuf, "localhost", sizeof(hostbuf));
		hostname = hostbuf;
	}
	if (!maildir_open_box(&box, root, dom, loc, err_r))
		goto out;
	if ((fd = maildir_create(&box, hostname, name, sizeof(name), err_r)) == -1)
		goto out;
	if (!maildir_fill(&box, fd, name, head, headlen, body, body_off, err_r)) {
		unlinkat(box.tmpfd, name, 0);
		goto out;
	}
	if (renameat(box.tmpfd, name, box.newfd, name) == -1) {
		*err_r = xasprintf("rename %s/tmp/%s to new/: %s", box.path, name,
		    strerror(errno));
		unlinkat(box.tmpfd, name, 0);
		goto out;
	}
	if (fsync(box.newfd) == -1) {
		/*
		 * Not durable: withdraw it so the client, which still holds the
		 * message, retries instead of us claiming a delivery.
		 */
		*err_r = xasprintf("fsync %s/new: %s", box.path, strerror(errno));
		unlinkat(box.newfd, name, 0);
		goto out;
	}
	ok = true;
out:
	maildir_close_box(&box);
	return ok;
}
