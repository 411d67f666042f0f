/*
 * smtp_session_priv.h - what the three files of the SMTP session share:
 * smtp_session.c (replies, lifetime, filters, commands, I/O), smtp_data.c
 * (DATA, BDAT, end of message, DSN) and smtp_auth.c (STARTTLS, AUTH).
 *
 * Private to those files: nothing else includes it.  A session and its
 * transaction belong to one event loop; every function here runs on it.
 */
#ifndef PORTIER_SMTP_SESSION_PRIV_H
#define PORTIER_SMTP_SESSION_PRIV_H

#include <arpa/inet.h>
#include <stdbool.h>
#include <stdint.h>

#include "buf.h"
#include "connlimit.h"
#include "data_reader.h"
#include "rdns.h"
#include "filter.h"
#include "relay.h"
#include "smtp_parse.h"
#include "smtp_reply.h"
#include "smtp_session.h"

struct evbuffer;
struct bufferevent;
struct loop;
struct snapshot;
struct auth_sasl;
struct envelope;

#define SESSION_OUT_FLUSH	(64 * 1024)	/* spool decoded data in chunks this big */
#define SESSION_HEADER_CHUNK	(64 * 1024)	/* header block read from a spool file in chunks this big */
#define SESSION_AUTH_LINE_MAX	12288		/* RFC 4954 4: at least 12288 octets */
#define SESSION_LINGER_TURNS	100		/* x 10 ms a last reply may take to leave */
#define SESSION_INPUT_HIGH	(256 * 1024)	/* client input buffered before reading pauses */
#define SESSION_DATA_BLOCK	(64 * 1024)	/* content octets each data_timeout allows */
#define SESSION_TLS_WIRE_HIGH	(64 * 1024)	/* TLS records queued on the socket before encrypting waits */

enum session_state {
	S_GREET_PAUSE,	/* waiting greet_pause; talking now is an error */
	S_PROXY,	/* waiting for the PROXY header (smtp_proxy.c) */
	S_CMD,		/* reading commands */
	S_DATA,		/* reading DATA content */
	S_BDAT,		/* reading a BDAT chunk */
	S_AUTH,		/* reading SASL responses */
	S_CLOSING,	/* flushing the last reply, then close */
	S_DEAD,		/* waiting to be reaped */
};

/*
 * What the session waits for, one thing at a time, changed only by
 * session_enter_wait.  While it waits nothing is read as a command
 * (pipelined input stays buffered) and replies stay in order.  Each wait
 * owns what its completion reads, or is cancelled or matched by id:
 *   SESSION_WAIT_FILTER is a stage of the filter chain: a filter waiting on
 *     the loop (its handle is detached and the filter's cancel() called) or
 *     a blocking call on the filter pool (it reads its own copies and is
 *     left to finish alone); an interruption (command timeout, flood, drain)
 *     or EOF cancels it with filter_cancel, and the chain's per-filter
 *     timeouts bound it;
 *   SESSION_WAIT_AUTH owns its job (user, password, snapshot) and finds the
 *     session by id: a late completion is dropped;
 *   SESSION_WAIT_RELAY is cancelled by freeing the relay transaction, which
 *     owns what the backend transfer or Maildir job reads;
 *   SESSION_WAIT_TLS is the STARTTLS handshake on our own bufferevent;
 *   SESSION_WAIT_OUTPUT waits for the client to read: more than max_output
 *     octets of replies are queued, reading stops until they drained;
 *   SESSION_WAIT_RDNS is the client's reverse name at connect (rdns.c),
 *     before the CONNECT filters and the banner: the session owns the
 *     lookup (s->rdns) and cancels it wherever it ends (interrupt, reap),
 *     so its completion never finds the session gone; resolver_timeout
 *     bounds it.
 * Every completion starts with session_wait_over.  The client's deadline
 * (command_timeout per command line, data_timeout per SESSION_DATA_BLOCK of
 * content) runs only while the session waits for the client: not while it
 * waits for a filter, the credential check or the backend, whose own
 * deadlines apply (session_rearm).
 */
enum session_wait {
	SESSION_WAIT_NONE,
	SESSION_WAIT_TLS,
	SESSION_WAIT_FILTER,
	SESSION_WAIT_AUTH,
	SESSION_WAIT_RELAY,
	SESSION_WAIT_OUTPUT,
	SESSION_WAIT_RDNS,
};

enum txn_result { TXN_DELIVERED, TXN_REJECTED, TXN_TEMPFAIL, TXN_DISCARDED, TXN_ABORTED };


/* What a DSN needs to know of each accepted recipient. */
struct rcpt_info {
	char orcpt[SMTP_PARSE_XTEXT_MAX + 1];
	unsigned notify;	/* SMTP_PARSE_NOTIFY_*, 0 = not given */
};

struct txn {
	unsigned seq;
	unsigned long long start_ms;
	struct smtp_parse_mail mail;
	char from[SMTP_PARSE_ADDR_SIZE];
	struct buf mail_params;
	struct smtp_parse_rcpt rcpt;	/* the RCPT in progress */
	char rcpt_addr[SMTP_PARSE_ADDR_SIZE];
	struct buf rcpt_params;
	struct rcpt_info *rinfo;	/* per accepted rcpt, parallel to ftx.rcpts */
	unsigned long long arrival;	/* wall clock seconds at MAIL */
	unsigned rcpt_attempts;
	struct filter_txn ftx;
	struct relay_txn *relay;
	struct spool *spool;
	struct data_reader dr;
	struct buf out;			/* decoded content not yet spooled */
	bool bdat_used;
	bool data_failed;		/* spool write failed */
	struct buf head;		/* what goes before the body */
	size_t body_off;
	struct relay_txn *dsn_relay;
	struct spool *dsn_spool;
	struct buf dsn_head;		/* empty: the DSN is a whole message in dsn_spool */
	bool dsn_rcpt_sent;
	struct relay_result final;	/* the reply that ends the message */
	size_t delivered;		/* recipients the backend took, when a DSN is owed */
	bool had_separator;		/* the header block ended with an empty line */
	struct envelope *env;		/* the filters edited the envelope (smtp_envelope.c) */
};

struct session {
	uint64_t id;
	char idstr[20];
	struct loop *loop;
	struct snapshot *snap;
	const struct conf *conf;
	const struct conf_listener *lconf;
	const struct conf_limits *lim;
	const struct filter_chain *chain;
	struct bufferevent *bev;
	struct sockin *sin;	/* reads a plain socket (NULL under TLS) */
	struct evbuffer *pending;	/* replies not yet handed to the socket */
	enum session_state state;
	struct smtp_parse_reader reader;
	enum session_wait wait;	/* see enum session_wait */
	bool shutdown_owed;	/* drain: 421 once the wait's own reply went out */
	bool in_process;	/* session_process is on the stack */
	unsigned errors;
	unsigned ntxn;
	char addr[INET6_ADDRSTRLEN];
	char local_addr[INET6_ADDRSTRLEN];	/* "" unless the socket is IP */
	char proxy_addr[INET6_ADDRSTRLEN];	/* the balancer's, once a PROXY header came */
	char connect_extra[128];	/* the PROXY header's part of the connect line, or "" */
	bool connect_logged;	/* event=connect said (session_log_connect) */
	bool quiet;		/* a refusal a flood's summary left out: no disconnect line */
	struct rdns *rdns;	/* the reverse lookup in progress (SESSION_WAIT_RDNS) */
	unsigned long long rdns_start_ms;
	char client_name[RDNS_NAME_MAX];	/* verified reverse name, or "unknown" */
	char client_ptr[RDNS_NAME_MAX];	/* first PTR name, "" if none */
	struct connlimit_hold climit;	/* client_limit/network_limit slots; session_free gives them back */
	char *helo;
	bool esmtp;
	struct filter_session fsess;
	struct filter_state *fstate;
	struct txn *txn;
	struct event *ev;	/* greet pause timer, then the reaper */
	struct event *deadline;	/* the client's deadline (session_rearm) */
	size_t block_octets;	/* content read since the data deadline was set */
	void (*fnext)(struct session *, const struct filter_result *);	/* after a pending stage */
	struct auth_sasl *sasl;	/* the AUTH exchange in progress */
	struct smtp_parse_reader auth_reader;
	char *auth_user;
	const char *auth_mech;	/* the AUTH exchange's mechanism name (static) */	/* the login, once authenticated */
	bool tls_active;	/* the handshake completed */
	bool tls_handshaking;
	bool closed_cleanly;	/* we ended it (QUIT, 421): send close_notify */
	unsigned linger;	/* reaper turns spent waiting for the last reply */
	bool alert_only;	/* linger for a TLS alert below, not for replies */
	char tls_desc[128];	/* "TLSv1.3 TLS_AES_256_GCM_SHA384 256/256" */
	char *tls_peer_subject;	/* the client certificate's subject, NULL without one */
	uint64_t bdat_left;	/* octets of the current chunk still to read */
	bool bdat_last;
	enum smtp_reply_id bdat_discard;	/* R_MAX, or the error once the chunk is read */
};

/* smtp_session.c: replies, lifetime, filters and the command loop */
struct evbuffer *session_out(struct session *s);
void session_reply(struct session *s, enum smtp_reply_id id);
void session_reply_custom(struct session *s, int code, const char *ecode, const char *text);
void session_reply_result(struct session *s, const struct relay_result *r);
void session_reply_close(struct session *s, enum smtp_reply_id id);
void session_client_error(struct session *s, enum smtp_reply_id id);
void session_count_error(struct session *s);
void session_close(struct session *s);
void session_enter_wait(struct session *s, enum session_wait w);
bool session_wait_over(struct session *s);
void session_continue(struct session *s);
void session_interrupt(struct session *s, enum smtp_reply_id id);
void session_io_timeouts(struct session *s, bool handshake);
void session_rearm(struct session *s);
void session_tls_watermark(struct session *s);
void session_txn_end(struct session *s, enum txn_result result, const char *reply);
void session_txn_reset(struct session *s);
bool session_txn_discarded(struct session *s, const struct filter_result *res);
typedef void (*stage_next_fn)(struct session *s, const struct filter_result *res);
void session_run_stage(struct session *s, enum filter_stage stage, const char *arg, stage_next_fn next);
bool session_verdict_stops(struct session *s, const struct filter_result *res);
bool session_frame_line(struct smtp_parse_reader *r, struct evbuffer *in,
    enum smtp_parse_line_status *st_r, const char **line_r, size_t *linelen_r,
    size_t *consumed_r, bool *more_r);
void session_read_cb(struct bufferevent *bev, void *arg);
void session_write_cb(struct bufferevent *bev, void *arg);
void session_event_cb(struct bufferevent *bev, short what, void *arg);
void session_connected(struct session *s);
void session_log_connect(struct session *s);

/* smtp_proxy.c: the PROXY protocol header before the greeting */
void smtp_proxy_start(struct session *s);
void smtp_proxy_read(struct session *s, struct evbuffer *in);
void smtp_proxy_refuse(struct session *s, const char *reason);

/* smtp_data.c: DATA, BDAT and the end of a message */
void smtp_data_data(struct session *s);
void smtp_data_bdat(struct session *s, const struct smtp_parse_cmd *cmd);
bool smtp_data_read(struct session *s, struct evbuffer *in);
bool smtp_data_read_bdat(struct session *s, struct evbuffer *in);
void smtp_data_chunk_done(struct session *s);
void smtp_data_end(struct session *s);

/* smtp_envelope.c: the filters' envelope edits, replayed to the backend */
bool smtp_envelope_apply(struct session *s);
struct relay_result *smtp_envelope_results(struct session *s, const struct relay_result *res,
    size_t *n_r);
void smtp_envelope_free(struct envelope *env);

/* smtp_auth.c: STARTTLS and AUTH */
void smtp_auth_starttls(struct session *s);
void smtp_auth_tls_established(struct session *s);
void smtp_auth_cmd(struct session *s, const struct smtp_parse_cmd *cmd);
bool smtp_auth_read_line(struct session *s, struct evbuffer *in);

#endif
