/*
 * relay.h - the backend side: SMTP/LMTP client and Maildir delivery behind
 * one asynchronous interface, with a per-loop pool of reusable connections.
 *
 * The envelope goes to the backend as it arrives (MAIL, RCPT) so the backend
 * can refuse at RCPT time; the body goes after the filters passed.  Every
 * failure of the backend (down, slow, garbled) becomes a 4xx 4.4.x result,
 * never a 2xx.  Callbacks run on the owning loop, never inside the call that
 * started the operation; freeing a relay_txn cancels its pending callback.
 * relay_txn objects belong to their session.
 */
#ifndef PORTIER_RELAY_H
#define PORTIER_RELAY_H

#include <stdbool.h>
#include <stddef.h>

#include "buf.h"
#include "conf.h"

struct event_base;
struct workers_loop;
struct spool;
struct relay_pool;
struct sendbatch;
struct relay_txn;

struct relay_result {
	int code;
	char ecode[16];		/* always set: backend's or derived from code */
	char text[512];		/* lines joined by '\n', without codes */
};

typedef void (*relay_cb)(void *arg, const struct relay_result *res);
/* One result per accepted recipient (LMTP, Maildir), or one for SMTP. */
typedef void (*relay_data_cb)(void *arg, const struct relay_result *res, size_t nres);

struct relay_pool *relay_pool_new(struct event_base *base, struct workers_loop *wl);
void relay_pool_free(struct relay_pool *pool);
/*
 * relay_pool_cork/uncork - while corked, commands and bodies for plain
 * backend connections are held; relay_pool_send writes them and
 * relay_pool_uncork queues the rest: the loop corks before running a turn's
 * callbacks and sends and uncorks after.
 */
void relay_pool_cork(struct relay_pool *pool);
void relay_pool_uncork(struct relay_pool *pool);
/*
 * relay_pool_send - before relay_pool_uncork, hand what is held for idle
 * plain sockets to the turn's batch; relay_pool_uncork then (after
 * sendbatch_run) queues what the sockets did not take in the bufferevents.
 */
void relay_pool_send(struct relay_pool *pool, struct sendbatch *sb);

/* relay_txn_new - a transaction toward target; connects lazily at relay_mail. */
struct relay_txn *relay_txn_new(struct relay_pool *pool, const struct conf *conf,
    const struct conf_relay *target, const char *session_id);
struct ssl_ctx_st;
/* relay_txn_set_tls - STARTTLS toward the backend with this client context. */
void relay_txn_set_tls(struct relay_txn *rt, struct ssl_ctx_st *ctx);
/* relay_txn_set_requiretls - RFC 8689: refuse unless the link is verified TLS (or local delivery). */
void relay_txn_set_requiretls(struct relay_txn *rt, bool on);
struct xforward_client;
/* relay_txn_set_client - the client facts XFORWARD passes on when the backend offers it (copied). */
void relay_txn_set_client(struct relay_txn *rt, const struct xforward_client *cl);
/* relay_txn_free - give the connection back (RSET unless completed) or close it. */
void relay_txn_free(struct relay_txn *rt);

/* params: accepted ESMTP parameters "SIZE=1 BODY=8BITMIME ..."; unsupported ones are dropped. */
void relay_mail(struct relay_txn *rt, const char *from, const char *params, relay_cb cb, void *arg);
void relay_rcpt(struct relay_txn *rt, const char *rcpt, const char *params, relay_cb cb, void *arg);
/*
 * relay_data - send head (header block incl. the empty line) then body from
 * off.  The relay copies head and takes a reference to body (spool_ref), so
 * the caller may free its own at any time, even while a job still reads them.
 */
void relay_data(struct relay_txn *rt, const struct buf *head, struct spool *body, size_t off,
    relay_data_cb cb, void *arg);
/*
 * relay_envelope - a filter edited the envelope: from (with its MAIL
 * parameters) and the n recipients (each with its RCPT parameters, in
 * order, no duplicates, n > 0) replace what the backend was given at
 * MAIL/RCPT time.  Nothing is sent now.  relay_data then replays the new
 * envelope on a fresh backend transaction (the connection in use is closed
 * when DATA went out early, else reset with RSET and taken again from the
 * pool) before it sends DATA; Maildir simply delivers to the new list.
 * MAIL refused on the replay: every result of relay_data is 451 4.1.0 (the
 * client has our 250 for its sender).  Every RCPT accepted: DATA follows
 * at once.  Some refused: before DATA, refused(arg, res, n) gets one result
 * per recipient of this list, and the caller either frees the transaction
 * or calls relay_envelope_go; relay_data's results are then for the
 * accepted recipients only (one each from LMTP and Maildir, one for SMTP).
 * The lists are copied.
 */
void relay_envelope(struct relay_txn *rt, const char *from, const char *mail_params,
    char *const *rcpts, char *const *rcpt_params, size_t n, relay_data_cb refused, void *arg);
/* relay_envelope_go - after relay_envelope's refused callback: DATA to the accepted recipients. */
void relay_envelope_go(struct relay_txn *rt);
/* relay_data_begin - send DATA early (optional; relay_data still follows or the txn is freed). */
void relay_data_begin(struct relay_txn *rt);
/* relay_is_per_rcpt - true when relay_data gives one result per recipient. */
bool relay_is_per_rcpt(const struct relay_txn *rt);

/* relay_result_set - fill a result (helper for callers and tests). */
void relay_result_set(struct relay_result *r, int code, const char *ecode, const char *text);

#endif
