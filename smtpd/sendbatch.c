/*
 * sendbatch.c - a loop turn's socket writes through io_uring, or writev(2)
 *
 * Each send is an IORING_OP_SENDMSG over the buffer's chains with
 * MSG_DONTWAIT: io_uring then makes it during the submission and, when the
 * socket is full, completes it with EAGAIN instead of waiting for room.  So
 * sendbatch_run never waits for a peer; it waits only for completions that
 * the submission itself produces.  A stream socket may take part of a send;
 * the rest stays in the buffer, as after a short writev(2).
 */
#include "config.h"

#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <unistd.h>

#ifdef HAVE_LIBURING
#include <liburing.h>
#endif

#include "sendbatch.h"
#include "util.h"

#define SB_ENTRIES	64	/* sends per submission; more are submitted in rounds */
#define SB_IOV		32	/* chains per send; the rest is left for the bufferevent */
#define SB_RETRIES	1000	/* io_uring_enter refusals (EAGAIN, EINTR) in a row before giving up */

struct sb_send {
	struct evbuffer *buf;
	struct msghdr msg;
	struct iovec iov[SB_IOV];
};

struct sendbatch {
	bool uring;
	char why[128];		/* why not, when !uring */
#ifdef HAVE_LIBURING
	struct io_uring ring;
	unsigned n;
	struct sb_send send[SB_ENTRIES];
#endif
};

#ifdef HAVE_LIBURING
/*
 * probe - does this kernel's io_uring send to a full socket with MSG_DONTWAIT
 * without waiting?  Recent kernels complete it with EAGAIN.  One that armed a
 * poll instead would stall the whole loop on a client that stopped reading,
 * so the answer is tried on a full socketpair, not assumed.  NULL or why not.
 */
static const char *
probe(struct io_uring *ring)
{
	struct io_uring_sqe *sqe;
	struct io_uring_cqe *cqe;
	struct __kernel_timespec wait = { 0, 200 * 1000 * 1000 };
	struct msghdr msg;
	struct iovec iov;
	char fill[4096];
	const char *why = NULL;
	int sv[2], small = 1, rc;

	if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, sv) != 0)
		return "socketpair failed";
	(void)setsockopt(sv[0], SOL_SOCKET, SO_SNDBUF, &small, sizeof(small));
	memset(fill, 'x', sizeof(fill));
	while (send(sv[0], fill, sizeof(fill), MSG_DONTWAIT | MSG_NOSIGNAL) > 0)
		;
	iov.iov_base = fill;
	iov.iov_len = 1;
	memset(&msg, 0, sizeof(msg));
	msg.msg_iov = &iov;
	msg.msg_iovlen = 1;
	if ((sqe = io_uring_get_sqe(ring)) == NULL) {
		why = "no submission entry";
		goto out;
	}
	io_uring_prep_sendmsg(sqe, sv[0], &msg, MSG_DONTWAIT | MSG_NOSIGNAL);
	if ((rc = io_uring_submit(ring)) != 1) {
		why = "io_uring_enter refused a send";
		goto out;
	}
	rc = io_uring_wait_cqe_timeout(ring, &cqe, &wait);
	if (rc == 0) {
		if (cqe->res != -EAGAIN)
			why = cqe->res == -EINVAL ? "IORING_OP_SENDMSG not supported" :
			    "a send to a full socket did not fail with EAGAIN";
		io_uring_cqe_seen(ring, cqe);
		goto out;
	}
	/* The send waits for room: the kernel ignores MSG_DONTWAIT. Closing the peer ends it. */
	why = "a send to a full socket waited (MSG_DONTWAIT ignored)";
	close(sv[1]);
	sv[1] = -1;
	if (io_uring_wait_cqe_timeout(ring, &cqe, &wait) == 0)
		io_uring_cqe_seen(ring, cqe);
out:
	close(sv[0]);
	if (sv[1] >= 0)
		close(sv[1]);
	return why;
}
#endif

struct sendbatch *
sendbatch_new(bool use_uring)
{
	struct sendbatch *sb = xcalloc(1, sizeof(*sb));

#ifdef HAVE_LIBURING
	if (use_uring) {
		int rc = io_uring_queue_init(SB_ENTRIES, &sb->ring, 0);
		const char *why;

		if (rc != 0)
			snprintf(sb->why, sizeof(sb->why), "io_uring_setup: %s", strerror(-rc));
		else if ((why = probe(&sb->ring)) != NULL) {
			/* Exiting the ring cancels a send the probe left waiting. */
			io_uring_queue_exit(&sb->ring);
			snprintf(sb->why, sizeof(sb->why), "%s", why);
		} else
			sb->uring = true;
	} else
		snprintf(sb->why, sizeof(sb->why), "turned off");
#else
	(void)use_uring;
	snprintf(sb->why, sizeof(sb->why), "not built in (liburing was not found)");
#endif
	return sb;
}

void
sendbatch_free(struct sendbatch *sb)
{
	if (sb == NULL)
		return;
#ifdef HAVE_LIBURING
	if (sb->uring) {
		sendbatch_run(sb);
		io_uring_queue_exit(&sb->ring);
	}
#endif
	free(sb);
}

bool
sendbatch_uring(const struct sendbatch *sb)
{
	return sb != NULL && sb->uring;
}

const char *
sendbatch_uring_why(const struct sendbatch *sb)
{
	return sb == NULL ? "no batch" : sb->why;
}

void
sendbatch_add(struct sendbatch *sb, evutil_socket_t fd, struct evbuffer *buf)
{
	if (evbuffer_get_length(buf) == 0)
		return;
#ifdef HAVE_LIBURING
	if (sb != NULL && sb->uring) {
		struct sb_send *s;
		struct io_uring_sqe *sqe;
		unsigned i;
		int n;

		/* Added twice: its bytes are on their way once already. */
		for (i = 0; i < sb->n; i++)
			if (sb->send[i].buf == buf)
				return;
		if (sb->n == SB_ENTRIES)
			sendbatch_run(sb);
		s = &sb->send[sb->n];
		n = evbuffer_peek(buf, -1, NULL, s->iov, SB_IOV);
		memset(&s->msg, 0, sizeof(s->msg));
		s->msg.msg_iov = s->iov;
		s->msg.msg_iovlen = (size_t)(n < SB_IOV ? n : SB_IOV);
		s->buf = buf;
		if ((sqe = io_uring_get_sqe(&sb->ring)) == NULL)
			fatal("sendbatch: io_uring submission queue full with %u of %d entries", sb->n,
			    SB_ENTRIES);
		io_uring_prep_sendmsg(sqe, fd, &s->msg, MSG_DONTWAIT | MSG_NOSIGNAL);
		io_uring_sqe_set_data(sqe, s);
		sb->n++;
		return;
	}
#else
	(void)sb;
#endif
	(void)evbuffer_write(buf, fd);
}

#ifdef HAVE_LIBURING
/* reap - take the completions there are; returns how many */
static unsigned
reap(struct sendbatch *sb)
{
	struct io_uring_cqe *cqe;
	unsigned head, seen = 0;

	io_uring_for_each_cqe(&sb->ring, head, cqe) {
		struct sb_send *s = io_uring_cqe_get_data(cqe);

		/* Errors (EAGAIN, EPIPE...) leave the bytes: the bufferevent takes them. */
		if (cqe->res > 0)
			evbuffer_drain(s->buf, (size_t)cqe->res);
		seen++;
	}
	io_uring_cq_advance(&sb->ring, seen);
	return seen;
}
#endif

void
sendbatch_run(struct sendbatch *sb)
{
#ifdef HAVE_LIBURING
	unsigned left, tries = 0;

	if (sb == NULL || !sb->uring || sb->n == 0)
		return;
	left = sb->n;
	while (left > 0) {
		/*
		 * Once taken, a submission cannot be withdrawn, and a send cannot
		 * be made a second way while it may still run: a refusal is retried.
		 * MSG_DONTWAIT makes every completion arrive during the submission.
		 */
		int rc = io_uring_submit_and_wait(&sb->ring, left);

		if (rc < 0 && rc != -EAGAIN && rc != -EINTR && rc != -EBUSY)
			fatal("sendbatch: io_uring_enter: %s", strerror(-rc));
		left -= reap(sb);
		if (rc < 0 && ++tries > SB_RETRIES)
			fatal("sendbatch: io_uring_enter refused %u times: %s", tries,
			    strerror(-rc));
	}
	sb->n = 0;
#else
	(void)sb;
#endif
}
