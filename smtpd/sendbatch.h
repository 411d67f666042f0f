/*
 * sendbatch.h - the socket writes of one loop turn, in one system call.
 *
 * When a loop turn ends, the replies it made go to their clients and the
 * commands it made go to their backends: one write(2) per socket.  On a
 * busy machine each write also wakes the reader, which may take the CPU
 * from the loop before its next write; the loop is then switched out and
 * back once per socket, and the readers wake once per write instead of
 * once per turn.  A sendbatch hands the writes to io_uring together: one
 * io_uring_enter(2) makes them all (non-blocking, in order of addition)
 * before any reader can run.
 *
 * Without io_uring (not built in, refused by the kernel or by a seccomp
 * filter, turned off with "io_uring = no", or a kernel whose io_uring send
 * waits on a full socket despite MSG_DONTWAIT: sendbatch_new tries one)
 * sendbatch_add writes at once with writev(2): what reaches the sockets is
 * the same, only the number of system calls and wake-ups differs.
 *
 * Use: sendbatch_add for each socket, then sendbatch_run.  Between the two
 * nobody may touch the buffers or close the sockets.  Afterwards each
 * buffer has lost what was sent; what is left (the socket was full, or an
 * error) is the caller's to queue in its bufferevent, which then reports
 * the error or writes the rest when the socket drains.
 */

#ifndef PORTIER_SENDBATCH_H
#define PORTIER_SENDBATCH_H

#include <stdbool.h>

#include <event2/buffer.h>
#include <event2/util.h>

struct sendbatch;

/* sendbatch_new - a batch; with use_uring false, or io_uring unavailable, a plain writer */
struct sendbatch *sendbatch_new(bool use_uring);
void sendbatch_free(struct sendbatch *sb);

/*
 * sendbatch_add - send buf's contents to fd (now, or at sendbatch_run); sb
 * may be NULL: now.  A buffer added again before the run is sent once.
 */
void sendbatch_add(struct sendbatch *sb, evutil_socket_t fd, struct evbuffer *buf);

/* sendbatch_run - make the sends added since the last run; drains what each sent */
void sendbatch_run(struct sendbatch *sb);

/* sendbatch_uring - true when the batch goes through io_uring */
bool sendbatch_uring(const struct sendbatch *sb);

/* sendbatch_uring_why - why io_uring is not used ("" when it is) */
const char *sendbatch_uring_why(const struct sendbatch *sb);

#endif
