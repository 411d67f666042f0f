/*
 * sockin.h - reading a plain socket into a bufferevent's input buffer.
 *
 * libevent 2.1's socket bufferevent asks the kernel how much is waiting
 * (ioctl FIONREAD) before every read, and reads at most 4,096 octets at a
 * time, so a 5 KB message costs two reads and two loop turns.  A sockin
 * reads with one read(2) of up to SOCKIN_READ_MAX octets instead, into the
 * input buffer of the bufferevent that still does the writing, and reports
 * to the same callbacks, with the same BEV_EVENT_* flags.
 *
 * The bufferevent's own reading must stay disabled while a sockin reads its
 * socket.  Under TLS there is no sockin: OpenSSL reads through the
 * bufferevent.  To hand the socket back (STARTTLS), free the sockin first:
 * sockin_starttls does that and wraps the bufferevent in TLS.
 */
#ifndef PORTIER_SOCKIN_H
#define PORTIER_SOCKIN_H

#include <stddef.h>
#include <event2/bufferevent.h>
#include <event2/event.h>
#include <event2/bufferevent_ssl.h>
#include <openssl/ssl.h>

#define SOCKIN_READ_MAX	65536	/* octets per read(2) */

struct sockin;

/*
 * sockin_new - read fd into bev's input buffer.  read_cb runs after data
 * arrived; event_cb gets BEV_EVENT_READING with BEV_EVENT_EOF,
 * BEV_EVENT_ERROR (errno kept) or BEV_EVENT_TIMEOUT, after which reading is
 * disabled.  Reading pauses while high octets or more wait in the buffer
 * and resumes once they are taken.  Starts disabled.
 */
struct sockin *sockin_new(struct event_base *base, struct bufferevent *bev, size_t high,
    bufferevent_data_cb read_cb, bufferevent_event_cb event_cb, void *arg);
void sockin_free(struct sockin *si);
void sockin_enable(struct sockin *si);
void sockin_disable(struct sockin *si);
/* sockin_set_timeout - no data for secs seconds is BEV_EVENT_TIMEOUT (0: none) */
void sockin_set_timeout(struct sockin *si, unsigned secs);
/*
 * sockin_timeouts - the deadlines of a socket read by si (or, si NULL, by bev
 * itself): reads on si if there is one, else on bev; writes on bev.  Seconds,
 * 0 for none.
 */
void sockin_timeouts(struct sockin *si, struct bufferevent *bev, unsigned rsecs,
    unsigned wsecs);

/*
 * sockin_starttls - start TLS over the plain bev: *sin (if any) is freed and
 * set to NULL, since OpenSSL reads through bev from now on.  Returns the TLS
 * filter bufferevent, which owns bev and ssl, with the callbacks set and
 * reading and writing enabled; state is BUFFEREVENT_SSL_ACCEPTING or
 * BUFFEREVENT_SSL_CONNECTING.  Never NULL (out of memory is fatal).
 */
struct bufferevent *sockin_starttls(struct sockin **sin, struct event_base *base,
    struct bufferevent *bev, SSL *ssl, enum bufferevent_ssl_state state,
    bufferevent_data_cb read_cb, bufferevent_data_cb write_cb, bufferevent_event_cb event_cb,
    void *arg);

#endif
