/*
 * relay_priv.h - what relay.c (transactions) and relay_conn.c (backend
 * connections) share: the structures and the calls between the two layers.
 * Nothing outside the relay module includes it.
 */
#ifndef PORTIER_RELAY_PRIV_H
#define PORTIER_RELAY_PRIV_H

#include <stdbool.h>
#include <stddef.h>

#include <event2/bufferevent.h>
#include <openssl/ssl.h>

#include "buf.h"
#include "conf.h"
#include "relay.h"

#define RELAY_MAX_REPLY_LINE	4096	/* a longer backend line is garbage */
#define RELAY_MAX_REPLY_LINES	64
#define RELAY_SEND_HIGH		(256 * 1024)	/* refill body output below this */
#define RELAY_IDLE_TIMEOUT	60		/* seconds a pooled connection may idle */
#define RELAY_INPUT_HIGH	(64 * 1024)	/* backend input buffered before reading pauses */

enum relay_state {
	RS_CONNECTING,
	RS_GREETING,
	RS_EHLO,
	RS_HELO,
	RS_STARTTLS,	/* waiting for 220 to STARTTLS */
	RS_HANDSHAKE,	/* TLS handshake with the backend */
	RS_IDLE,	/* ready, no command outstanding */
	RS_MAIL,
	RS_RCPT,
	RS_DATA,	/* waiting for 354 */
	RS_DATA_READY,	/* 354 came before the body was ready (early DATA) */
	RS_BODY,	/* sending the message */
	RS_DOT,		/* waiting for the final reply (or one per recipient) */
	RS_RSET,
	RS_DEAD,
};

enum relay_op { OP_NONE, OP_MAIL, OP_RCPT, OP_DATA };

struct relay_conn {
	struct relay_pool *pool;
	struct bufferevent *bev;
	struct sockin *sin;	/* reads the plain socket once connected (NULL under TLS) */
	enum relay_state state;
	bool lmtp;
	char *spec;		/* target spec, to match pool entries */
	unsigned caps;
	unsigned xfwd_attrs;	/* XFORWARD_* the EHLO reply listed */
	unsigned xfwd_due;	/* XFORWARD commands in xfwd, to go before the next command */
	unsigned xfwd_wait;	/* XFORWARD replies still to come */
	struct evbuffer *xfwd;	/* XFORWARD commands (then the command after them) not yet sent */
	bool reused;		/* came from the pool: may be stale */
	bool tls;		/* TLS is up on this connection */
	bool tls_verified;	/* and the backend's certificate was verified */
	bool got_reply;		/* any reply on this use */
	bool listed;		/* on the pool's held list */
	struct evbuffer *held;	/* output held until the end of the loop turn */
	struct relay_txn *txn;	/* NULL while pooled */
	struct relay_conn *next;	/* pool list */
	/* reply assembly */
	int code;
	char ecode[16];
	struct buf text;
	unsigned nlines;
};

#define CAP_SIZE	0x01
#define CAP_8BITMIME	0x02
#define CAP_SMTPUTF8	0x04
#define CAP_DSN		0x08
#define CAP_PIPELINING	0x10
#define CAP_STARTTLS	0x20
#define CAP_REQUIRETLS	0x40
#define CAP_XFORWARD	0x80

struct relay_pool {
	struct event_base *base;
	struct workers_loop *wl;
	struct relay_conn *idle;	/* singly linked */
	unsigned nidle;
	struct evbuffer *stage;	/* scratch for relay_conn_flush, empty between calls */
	bool corked;		/* hold plain writes until relay_pool_uncork */
	struct relay_conn **held;	/* connections with held output (NULL: freed) */
	size_t nheld, aheld;
};

struct relay_txn {
	struct relay_pool *pool;
	const struct conf *conf;
	const struct conf_relay *target;
	char *spec;
	char sid[32];
	struct relay_conn *conn;
	SSL_CTX *tls_ctx;	/* for relay_tls; NULL = plain text */
	bool requiretls;	/* RFC 8689: only over verified TLS */
	bool completed;		/* DATA finished: no RSET needed */
	bool failed;		/* sticky 4xx: conn is gone */
	struct relay_result fail;
	struct event *defer;	/* delivers results outside the caller's stack */
	/* the operation in flight */
	enum relay_op op;
	relay_cb cb;
	relay_data_cb dcb;
	void *arg;
	struct relay_result res;
	struct buf cmd;		/* command to (re)send */
	bool retried;
	/* envelope, kept for Maildir and per-recipient counting */
	char *from;
	char **rcpts;		/* accepted recipients */
	char **rcpt_args;	/* and the parameters each was sent with (for a replay) */
	size_t nrcpts;
	char *pending_rcpt;
	char *rcpt_params;
	char *mail_params;
	bool mail_held;		/* MAIL waits to go out with the first RCPT */
	bool mail_inflight;	/* MAIL sent with an RCPT, not answered yet */
	bool rcpt_pipelined;	/* that RCPT went in the same write */
	bool rcpt_drain;	/* MAIL failed: the pipelined RCPT's reply is dropped */
	bool mail_failed;	/* every RCPT gets mail_res */
	struct relay_result mail_res;
	/* body: what a transfer or a Maildir job reads is owned here, never the session's */
	struct buf head;	/* a copy of the caller's head */
	struct spool *body;	/* a reference (spool_ref) */
	size_t body_off;
	size_t send_off;
	bool line_start;
	struct relay_result *dres;
	size_t ndres;
	bool early;		/* DATA went out while the client was still sending */
	bool early_failed;	/* and the backend refused it: early_res */
	struct relay_result early_res;
	bool early_lost;	/* and the backend closed meanwhile: relay_data replays */
	bool replay;		/* the envelope goes again on a fresh connection */
	bool replayed;		/* it did once: no second time */
	size_t replay_rcpts;	/* RCPTs of the replay answered so far */
	/*
	 * An envelope a filter edited (relay_envelope): replayed at relay_data
	 * on a fresh backend transaction.  env_rcpts/env_params are the whole
	 * edited list, env_res each one's RCPT verdict; rcpts/rcpt_args become
	 * the accepted ones, the list relay_data's results are for.
	 */
	bool env_set;		/* relay_envelope was called: replay before DATA */
	bool env_edit;		/* the replay in progress is of an edited envelope */
	bool env_report;	/* the deferred callback is ecb's (refusals), not the op's */
	char **env_rcpts;
	char **env_params;
	size_t env_n;
	struct relay_result *env_res;
	relay_data_cb ecb;
	void *earg;
	bool maildir_busy;	/* a worker job reads us (head, body, envelope, the two below) */
	bool free_pending;	/* the session let go meanwhile: free on the job's completion */
	bool xf_set;		/* relay_txn_set_client was called: XFORWARD if offered */
	char *xf_name, *xf_addr, *xf_helo, *xf_ident;
	unsigned xf_port;
	bool xf_esmtp;
	char *maildir_root;	/* copies of the config the job reads (the snapshot may go) */
	char *hostname;
};

/* relay_conn.c: the connection layer */
bool relay_conn_flush(struct relay_conn *c);
void relay_conn_free(struct relay_conn *c);
struct relay_conn *relay_conn_new(struct relay_txn *rt);
size_t relay_conn_queued(struct relay_conn *c);
void relay_conn_read_on(struct relay_conn *c);
void relay_conn_result(struct relay_conn *c, struct relay_result *r);
void relay_conn_send_cmd(struct relay_conn *c, const struct buf *cmd);
void relay_conn_xforward(struct relay_conn *c, const struct buf *cmds, unsigned n);
void relay_conn_reply_due(struct relay_conn *c, bool due);
struct relay_conn *relay_conn_pool_get(struct relay_pool *pool, const char *spec);
void relay_conn_pool_put(struct relay_pool *pool, struct relay_conn *c, unsigned max);

/* relay.c: the transaction layer, called back by the connection layer */
bool relay_body_fill(struct relay_txn *rt);
bool relay_op_reply(struct relay_conn *c);
void relay_ready(struct relay_conn *c);
bool relay_txn_attach(struct relay_txn *rt, bool allow_pool);
bool relay_txn_early_lost(struct relay_txn *rt);
void relay_txn_fail(struct relay_txn *rt, int code, const char *ecode, const char *text);
void relay_txn_release(struct relay_txn *rt);

#endif
