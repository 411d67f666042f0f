/*
 * smtp_session.c - one SMTP session: the RFC 5321 state machine.
 *
 * Input is parsed from the bufferevent's input buffer one command at a time.
 * A command that needs the backend or a blocking filter pauses the session:
 * reading stops, pipelined commands wait (in our buffer or the kernel's),
 * and the completion resumes processing, so replies always leave in order.
 * Each verb has a check (state and syntax; replies on failure) and a proceed
 * (filters, then the relay) step.  The transaction is its own object, freed
 * on RSET, on HELO/EHLO, and after the final reply to its message.
 *
 * Must never: answer 250 to end of data before the backend did, let the
 * backend see a message the client did not finish (CRLF.CRLF only), free
 * itself inside one of its own callbacks (it is reaped at the end of the
 * loop turn), or log client text unescaped.
 */
#include "config.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/bufferevent_ssl.h>
#include <event2/event.h>
#include <openssl/err.h>
#include <openssl/ssl.h>

#include "data_reader.h"
#include "dsn.h"
#include "filter.h"
#include "log.h"
#include "relay.h"
#include "server.h"
#include "smtp_parse.h"
#include "smtp_reply.h"
#include "smtp_session.h"
#include "spool.h"
#include "tls.h"
#include "workers.h"
#include "../policy/auth.h"
#include "../policy/authfail.h"
#include "../policy/sender_login.h"
#include "util.h"

#define SESSION_OUT_FLUSH	(64 * 1024)	/* spool decoded data in chunks this big */
#define SESSION_HEADER_MAX	(256 * 1024)	/* header block examined by filters */
#define SESSION_AUTH_LINE_MAX	12288		/* RFC 4954 4: at least 12288 octets */
#define SESSION_LINGER_TURNS	100		/* x 10 ms a last reply may take to leave */

enum session_state {
	S_GREET_PAUSE,	/* waiting greet_pause; talking now is an error */
	S_CMD,		/* reading commands */
	S_DATA,		/* reading DATA content */
	S_BDAT,		/* reading a BDAT chunk */
	S_AUTH,		/* reading SASL responses */
	S_CLOSING,	/* flushing the last reply, then close */
	S_DEAD,		/* waiting to be reaped */
};

enum txn_result { TXN_DELIVERED, TXN_REJECTED, TXN_TEMPFAIL, TXN_DISCARDED, TXN_ABORTED };

static const char *const txn_result_names[] = {
	"delivered", "rejected", "tempfail", "discarded", "aborted",
};

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
	struct buf dsn_head;
	struct relay_result final;	/* the reply that ends the message */
	bool had_separator;		/* the header block ended with an empty line */
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
	struct evbuffer *pending;	/* replies not yet handed to the socket */
	enum session_state state;
	struct smtp_parse_reader reader;
	bool paused;		/* an async step is in progress */
	bool in_process;	/* session_process is on the stack */
	bool filter_pending;	/* a filter job references our memory */
	unsigned errors;
	unsigned ntxn;
	char addr[INET6_ADDRSTRLEN];
	char *helo;
	bool esmtp;
	struct filter_session fsess;
	struct filter_state *fstate;
	struct txn *txn;
	struct event *ev;	/* greet pause timer, then the reaper */
	void (*fnext)(struct session *, const struct filter_result *);	/* after a pending stage */
	struct auth_sasl *sasl;	/* the AUTH exchange in progress */
	struct smtp_parse_reader auth_reader;
	char *auth_user;	/* the login, once authenticated */
	bool tls_active;	/* the handshake completed */
	bool tls_handshaking;
	bool closed_cleanly;	/* we ended it (QUIT, 421): send close_notify */
	unsigned linger;	/* reaper turns spent waiting for the last reply */
	bool alert_only;	/* linger for a TLS alert below, not for replies */
	char tls_desc[128];	/* "TLSv1.3 TLS_AES_256_GCM_SHA384 256/256" */
	uint64_t bdat_left;	/* octets of the current chunk still to read */
	bool bdat_last;
	enum smtp_reply_id bdat_discard;	/* R_MAX, or the error once the chunk is read */
};

static void session_process(struct session *s);
static void read_cb(struct bufferevent *bev, void *arg);
static void write_cb(struct bufferevent *bev, void *arg);
static void event_cb(struct bufferevent *bev, short what, void *arg);
static void *session_auth_backend(const struct session *s);
static bool output_pending(struct session *s);
static void session_close(struct session *s);
static void session_resume(struct session *s);
static void data_end(struct session *s);
static void txn_end(struct session *s, enum txn_result result, const char *reply);

/* ---- replies -------------------------------------------------------------- */

/* out - where replies collect until session_flush */
static struct evbuffer *
out(struct session *s)
{
	return s->pending;
}

/*
 * session_flush - send the collected replies.  On a plain socket with
 * nothing queued, write(2) them directly: handing them to the bufferevent
 * would cost an epoll_ctl to add EV_WRITE and another to drop it, for
 * every reply.  Whatever the socket does not take (and everything under
 * TLS) goes through the bufferevent as usual.
 */
static void
session_flush(struct session *s)
{
	struct evbuffer *bout;

	if (evbuffer_get_length(s->pending) == 0 || s->bev == NULL)
		return;
	bout = bufferevent_get_output(s->bev);
	if (!s->tls_active && !s->tls_handshaking && evbuffer_get_length(bout) == 0 &&
	    bufferevent_openssl_get_ssl(s->bev) == NULL) {
		evutil_socket_t fd = bufferevent_getfd(s->bev);

		if (fd >= 0)
			evbuffer_write(s->pending, fd);	/* drains what was written */
	}
	if (evbuffer_get_length(s->pending) > 0)
		evbuffer_add_buffer(bout, s->pending);
}

/* reply - a table reply */
static void
reply(struct session *s, enum smtp_reply_id id)
{
	struct buf b;

	buf_init(&b);
	smtp_reply_format(&b, id, s->conf->hostname);
	evbuffer_add(out(s), b.data, b.len);
	buf_free(&b);
}

/* reply_custom - a reply with text from a filter or the backend */
static void
reply_custom(struct session *s, int code, const char *ecode, const char *text)
{
	struct buf b;

	buf_init(&b);
	smtp_reply_custom(&b, code, ecode, text);
	evbuffer_add(out(s), b.data, b.len);
	buf_free(&b);
}

/* reply_result - a relay result as a reply */
static void
reply_result(struct session *s, const struct relay_result *r)
{
	reply_custom(s, r->code, r->ecode, r->text[0] ? r->text : "Ok");
}

/* reply_close - a final reply (421 etc.), then close once it is written */
static void
reply_close(struct session *s, enum smtp_reply_id id)
{
	reply(s, id);
	session_close(s);
}

/* client_error - reply and count toward max_errors */
static void
client_error(struct session *s, enum smtp_reply_id id)
{
	reply(s, id);
	if (++s->errors >= s->lim->max_errors) {
		log_info("id=%s event=too_many_errors client=%s errors=%u", s->idstr, s->addr,
		    s->errors);
		reply_close(s, R_TOO_MANY_ERRORS);
	}
}

/* reply_filter - a filter's verdict as a reply */
static void
reply_filter(struct session *s, const struct filter_result *res)
{
	if (res->reply.code)
		reply_custom(s, res->reply.code, res->reply.ecode, res->reply.text);
	else
		reply(s, res->verdict == FILTER_TEMPFAIL ? R_FILTER_TEMPFAIL : R_FILTER_REJECT);
}

/* ---- lifetime ---------------------------------------------------------------- */

/* txn_free - release a transaction and its backend transaction */
static void
txn_free(struct txn *t)
{
	if (t == NULL)
		return;
	relay_txn_free(t->relay);
	relay_txn_free(t->dsn_relay);
	filter_txn_reset(&t->ftx);
	if (t->spool)
		spool_free(t->spool);
	if (t->dsn_spool)
		spool_free(t->dsn_spool);
	buf_free(&t->mail_params);
	buf_free(&t->rcpt_params);
	free(t->rinfo);
	buf_free(&t->out);
	buf_free(&t->head);
	buf_free(&t->dsn_head);
	free(t);
}

/* session_free - the last step; only from the reaper */
static void
session_free(struct session *s)
{
	if (s->txn) {
		txn_end(s, TXN_ABORTED, "");
	}
	if (s->fstate) {
		struct filter_ctx ctx = { NULL, &s->fsess, NULL };

		filter_state_free(s->fstate, &ctx);
	}
	log_info("id=%s event=disconnect client=%s transactions=%u errors=%u", s->idstr,
	    s->addr, s->ntxn, s->errors);
	loop_session_remove(s->loop, s, s->id);
	if (s->bev) {
		SSL *ssl = bufferevent_openssl_get_ssl(s->bev);

		/* close_notify keeps the TLS session resumable (OpenSSL drops it otherwise). */
		if (ssl != NULL && s->tls_active && s->closed_cleanly)
			SSL_shutdown(ssl);
		bufferevent_free(s->bev);
	}
	if (s->ev)
		event_free(s->ev);
	evbuffer_free(s->pending);
	free(s->helo);
	free(s->auth_user);
	auth_sasl_free(s->sasl);
	snapshot_unref(s->snap);
	free(s);
	server_session_done();
}

/* reap_cb - free outside any of the session's own callbacks */
static void
reap_cb(evutil_socket_t fd, short what, void *arg)
{
	struct session *s = arg;

	if (s->filter_pending)
		return;	/* the filter completion reaps us */
	if (s->closed_cleanly && s->linger < SESSION_LINGER_TURNS && output_pending(s)) {
		/* The last reply is still on its way (a TLS filter's socket): wait for it. */
		struct timeval tv = { 0, 10000 };

		s->linger++;
		evtimer_add(s->ev, &tv);
		return;
	}
	session_free(s);
}

/* output_pending - replies not yet on the wire, ours or a TLS filter's socket's */
static bool
output_pending(struct session *s)
{
	struct bufferevent *under;

	if (s->bev == NULL)
		return false;
	if (!s->alert_only && evbuffer_get_length(bufferevent_get_output(s->bev)) > 0)
		return true;
	under = bufferevent_get_underlying(s->bev);
	return under != NULL && evbuffer_get_length(bufferevent_get_output(under)) > 0;
}

/* session_reap - schedule the free */
static void
session_reap(struct session *s)
{
	s->state = S_DEAD;
	/* While a last reply lingers (reap_cb) writing goes on, and reading, to see EOF. */
	if (s->bev && !s->closed_cleanly)
		bufferevent_disable(s->bev, EV_READ | EV_WRITE);
	if (s->ev)
		event_free(s->ev);
	s->ev = event_new(loop_base(s->loop), -1, 0, reap_cb, s);
	event_active(s->ev, 0, 0);
}

/* session_close - stop reading; close once the output is flushed */
static void
session_close(struct session *s)
{
	if (s->state == S_CLOSING || s->state == S_DEAD)
		return;
	s->state = S_CLOSING;
	s->closed_cleanly = true;	/* read_cb now drains input unread; EOF still shows */
	session_flush(s);
	if (!output_pending(s) || s->tls_active)
		session_reap(s);
	/* else the write callback reaps once the buffer drained */
}

/* session_shutdown - the drain deadline passed */
void
session_shutdown(struct session *s, bool force)
{
	if (s->state == S_CLOSING || s->state == S_DEAD)
		return;
	if (s->paused && !force) {
		/* Mid-transaction with the backend: let it answer, once more. */
		return;
	}
	/* Forced: the backend transaction is abandoned (never acknowledged: the client retries). */
	reply_close(s, R_SHUTDOWN);
}

/* session_shutdown_idle - SIGTERM: a session between transactions ends now (421 4.3.2) */
void
session_shutdown_idle(struct session *s)
{
	if (s->state == S_CMD && s->txn == NULL && !s->paused)
		reply_close(s, R_SHUTDOWN);
}

/* set_timeout - command or data deadline on reads */
static void
set_timeout(struct session *s, unsigned secs)
{
	struct timeval tv = { secs, 0 };

	bufferevent_set_timeouts(s->bev, &tv, &tv);
}

/*
 * session_pause - stop processing while an async step runs.  Reading goes
 * on (pipelined input waits in the buffer, bounded by the read watermark):
 * toggling EV_READ would cost two epoll_ctl calls per backend round trip.
 */
static void
session_pause(struct session *s)
{
	s->paused = true;
}

/* session_resume - the async step finished: go on with buffered input */
static void
session_resume(struct session *s)
{
	s->paused = false;
	if (s->state == S_CLOSING || s->state == S_DEAD || s->in_process) {
		session_flush(s);
		return;
	}
	session_process(s);
}

/* ---- transaction ------------------------------------------------------------ */

/* to_list - "<a>,<b>" for the summary line */
static void
to_list(const struct txn *t, struct buf *b)
{
	size_t i;
	char esc[SMTP_PARSE_ADDR_SIZE * 4];

	for (i = 0; i < t->ftx.nrcpts; i++) {
		const char *r = t->ftx.rcpts[i];

		buf_printf(b, "%s<%s>", i ? "," : "", log_escape(esc, sizeof(esc), r, strlen(r)));
	}
}

/* txn_end - log the summary line and drop the transaction */
static void
txn_end(struct session *s, enum txn_result result, const char *replytext)
{
	struct txn *t = s->txn;
	struct buf to;
	char from[SMTP_PARSE_ADDR_SIZE * 4], helo[256], rep[600];
	unsigned long long delay;

	if (t == NULL)
		return;
	s->txn = NULL;
	if (result != TXN_DELIVERED && result != TXN_DISCARDED && s->fstate) {
		struct filter_ctx ctx = { NULL, &s->fsess, &t->ftx };
		struct filter_result res;

		/* Abort never blocks a loop: inline part only, result ignored. */
		if (filter_run(s->fstate, FILTER_STAGE_ABORT, &ctx, NULL, &res, NULL, NULL,
		    NULL) == FILTER_RUN_PENDING)
			log_warn("id=%s event=filter_abort_pending", s->idstr);
	}
	buf_init(&to);
	to_list(t, &to);
	delay = now_ms() - t->start_ms;
	log_info("id=%s event=txn txn=%u client=%s helo=%s from=<%s> to=%s size=%llu result=%s "
	    "relay=%s reply=\"%s\" delay=%llu.%03llu filters=%s",
	    s->idstr, t->seq, s->addr,
	    log_escape(helo, sizeof(helo), s->helo ? s->helo : "", s->helo ? strlen(s->helo) : 0),
	    log_escape(from, sizeof(from), t->from, strlen(t->from)),
	    to.len ? to.data : "none",
	    (unsigned long long)data_reader_out_octets(&t->dr), txn_result_names[result],
	    s->conf->relay.spec ? s->conf->relay.spec : "none",
	    log_escape(rep, sizeof(rep), replytext, strlen(replytext)), delay / 1000,
	    delay % 1000, filter_chain_names(s->chain)[0] ? filter_chain_names(s->chain) : "none");
	buf_free(&to);
	txn_free(t);
}

/* txn_reset - RSET semantics: drop any transaction without delivery */
static void
txn_reset(struct session *s)
{
	if (s->txn)
		txn_end(s, TXN_ABORTED, "");
}

/* ---- filters ------------------------------------------------------------------- */

typedef void (*stage_next_fn)(struct session *s, const struct filter_result *res);

/* filter_done - a blocking stage finished (on our loop) */
static void
filter_done(uint64_t id, void *arg, const struct filter_result *res)
{
	struct session *s = loop_session_find(arg, id);

	if (s == NULL)
		return;
	s->filter_pending = false;
	if (s->state == S_DEAD) {
		session_free(s);
		return;
	}
	s->paused = false;
	s->fnext(s, res);
	if (!s->paused)
		session_resume(s);
}

/* run_stage - run a filter stage, then next (now, or when the pool is done) */
static void
run_stage(struct session *s, enum filter_stage stage, const char *arg, stage_next_fn next)
{
	struct filter_ctx ctx = { NULL, &s->fsess, s->txn ? &s->txn->ftx : NULL };
	struct filter_result res;

	if (filter_chain_empty(s->chain)) {
		memset(&res, 0, sizeof(res));
		res.verdict = FILTER_CONTINUE;
		next(s, &res);
		return;
	}
	if (filter_run(s->fstate, stage, &ctx, arg, &res, loop_workers(s->loop), filter_done,
	    s->loop) == FILTER_RUN_DONE) {
		next(s, &res);
		return;
	}
	s->fnext = next;
	s->filter_pending = true;
	session_pause(s);
}

/* verdict_stops - does this verdict end the command with a reply? */
static bool
verdict_stops(struct session *s, const struct filter_result *res)
{
	if (res->verdict != FILTER_REJECT && res->verdict != FILTER_TEMPFAIL)
		return false;
	log_info("id=%s event=filter_%s filter=%s reply=\"%d %s %s\"", s->idstr,
	    filter_verdict_name(res->verdict), res->filter ? res->filter : "?",
	    res->reply.code, res->reply.ecode, res->reply.text);
	reply_filter(s, res);
	return true;
}

/* session_auth_backend - the credential backend of the snapshot */
static void *
session_auth_backend(const struct session *s)
{
	return s->snap->auth;
}

/* ---- HELO / EHLO ------------------------------------------------------------- */

/* starttls_offered - STARTTLS is advertised on plain STARTTLS listeners */
static bool
starttls_offered(const struct session *s)
{
	return s->lconf->tls == TLS_STARTTLS && s->snap->tls != NULL && !s->tls_active;
}

/* auth_offered - AUTH only on submission listeners, and only under TLS */
static bool
auth_offered(const struct session *s)
{
	return s->lconf->role != ROLE_MX && s->tls_active && s->fsess.auth_user == NULL &&
	    session_auth_backend(s) != NULL;
}

/* helo_proceed - after the HELO filters */
static void
helo_proceed(struct session *s, const struct filter_result *res)
{
	if (verdict_stops(s, res)) {
		free(s->helo);
		s->helo = NULL;
		s->fsess.helo = NULL;
		return;
	}
	if (!s->esmtp) {
		reply(s, R_HELO);
		return;
	}
	evbuffer_add_printf(out(s),
	    "250-%s\r\n250-PIPELINING\r\n250-SIZE %zu\r\n250-8BITMIME\r\n"
	    "250-ENHANCEDSTATUSCODES\r\n250-SMTPUTF8\r\n250-CHUNKING\r\n",
	    s->conf->hostname, s->lim->max_message_size);
	if (starttls_offered(s))
		evbuffer_add(out(s), "250-STARTTLS\r\n", 14);
	if (auth_offered(s))
		evbuffer_add(out(s), "250-AUTH PLAIN LOGIN\r\n", 22);
	if (s->tls_active)
		evbuffer_add(out(s), "250-REQUIRETLS\r\n", 16);
	evbuffer_add(out(s), "250 DSN\r\n", 9);
}

/* cmd_helo - HELO and EHLO */
static void
cmd_helo(struct session *s, const struct smtp_parse_cmd *cmd, bool esmtp)
{
	struct smtp_parse_helo h;

	if (smtp_parse_helo(cmd->args, cmd->argslen, &h) != SMTP_PARSE_OK) {
		client_error(s, R_HELO_SYNTAX);
		return;
	}
	txn_reset(s);
	free(s->helo);
	s->helo = xstrdup(h.name);
	s->fsess.helo = s->helo;
	s->esmtp = esmtp;
	run_stage(s, FILTER_STAGE_HELO, s->helo, helo_proceed);
}

/* ---- MAIL ---------------------------------------------------------------------- */

/* mail_proceed - after the MAIL filters: open the backend transaction */
static void
mail_proceed(struct session *s, const struct filter_result *res)
{
	struct txn *t = s->txn;

	if (verdict_stops(s, res)) {
		txn_end(s, res->verdict == FILTER_TEMPFAIL ? TXN_TEMPFAIL : TXN_REJECTED,
		    res->reply.text);
		return;
	}
	t->relay = relay_txn_new(loop_relay(s->loop), s->conf, &s->conf->relay, s->idstr);
	if (s->snap->tls_client)
		relay_txn_set_tls(t->relay, s->snap->tls_client);
	relay_txn_set_requiretls(t->relay, (t->mail.params & SMTP_PARSE_PARAM_REQUIRETLS) != 0);
	/* Lazy: MAIL goes to the backend with the first RCPT (its refusal answers that RCPT). */
	relay_mail(t->relay, t->from, t->mail_params.data ? t->mail_params.data : "", NULL, s);
	reply(s, R_MAIL_OK);
}

/* mail_status_reply - the reply for a MAIL parse failure */
static enum smtp_reply_id
mail_status_reply(enum smtp_parse_status st)
{
	switch (st) {
	case SMTP_PARSE_BAD_PARAM:
		return R_SYNTAX;
	case SMTP_PARSE_UNKNOWN_PARAM:
		return R_PARAM_UNKNOWN;
	case SMTP_PARSE_NEED_SMTPUTF8:
		return R_SMTPUTF8_NEEDED;
	default:
		return R_FROM_SYNTAX;
	}
}

/* cmd_mail - MAIL FROM */
static void
cmd_mail(struct session *s, const struct smtp_parse_cmd *cmd)
{
	struct smtp_parse_mail m;
	enum smtp_parse_status st;
	struct txn *t;
	unsigned allowed = SMTP_PARSE_PARAM_SIZE | SMTP_PARSE_PARAM_BODY |
	    SMTP_PARSE_PARAM_SMTPUTF8 | SMTP_PARSE_PARAM_RET | SMTP_PARSE_PARAM_ENVID;

	if (s->helo == NULL) {
		client_error(s, R_NEED_HELO);
		return;
	}
	if (s->txn) {
		client_error(s, R_NESTED_MAIL);
		return;
	}
	if (s->lconf->tls_required && !s->tls_active) {
		client_error(s, R_TLS_REQUIRED);
		return;
	}
	if (s->lconf->role != ROLE_MX && s->fsess.auth_user == NULL) {
		client_error(s, R_AUTH_REQUIRED);
		return;
	}
	if (s->lconf->role != ROLE_MX && s->snap->auth != NULL)
		allowed |= SMTP_PARSE_PARAM_AUTH;	/* RFC 4954 5: accepted, not passed on */
	if (s->tls_active)
		allowed |= SMTP_PARSE_PARAM_REQUIRETLS;	/* RFC 8689: offered under TLS only */
	if (!s->esmtp)
		allowed = 0;
	st = smtp_parse_mail(cmd->args, cmd->argslen, allowed, &m);
	if (st != SMTP_PARSE_OK) {
		client_error(s, mail_status_reply(st));
		return;
	}
	if (m.body == SMTP_PARSE_BODY_BINARYMIME) {
		client_error(s, R_BODY_UNSUPPORTED);
		return;
	}
	if ((m.params & SMTP_PARSE_PARAM_SIZE) && m.size > s->lim->max_message_size) {
		reply(s, R_SIZE_DECLARED);
		return;
	}
	if (s->auth_user != NULL) {
		char addr[SMTP_PARSE_ADDR_SIZE];

		smtp_parse_addr_format(&m.from, addr, sizeof(addr));
		if (!sender_login_allowed(s->snap->senders, s->auth_user, addr)) {
			char esc[SMTP_PARSE_ADDR_SIZE * 4], uesc[600];

			log_info("id=%s event=sender_login_mismatch user=%s from=<%s>", s->idstr,
			    log_escape(uesc, sizeof(uesc), s->auth_user, strlen(s->auth_user)),
			    log_escape(esc, sizeof(esc), addr, strlen(addr)));
			client_error(s, R_SENDER_NOT_OWNED);
			return;
		}
	}
	t = xcalloc(1, sizeof(*t));
	t->seq = ++s->ntxn;
	t->start_ms = now_ms();
	t->mail = m;
	smtp_parse_addr_format(&m.from, t->from, sizeof(t->from));
	buf_init(&t->mail_params);
	smtp_parse_mail_params(&m, &t->mail_params);
	buf_init(&t->rcpt_params);
	t->arrival = (unsigned long long)time(NULL);
	buf_init(&t->out);
	buf_init(&t->head);
	buf_init(&t->dsn_head);
	filter_txn_init(&t->ftx);
	t->ftx.mail_from = xstrdup(t->from);
	data_reader_init(&t->dr, DATA_READER_DOT, 0, 0, DATA_READER_BARE_REJECT);
	s->txn = t;
	run_stage(s, FILTER_STAGE_MAIL, t->from, mail_proceed);
}

/* ---- RCPT ----------------------------------------------------------------------- */

/* rcpt_relayed - the backend answered RCPT */
static void
rcpt_relayed(void *arg, const struct relay_result *r)
{
	struct session *s = arg;
	struct txn *t = s->txn;

	s->paused = false;
	if (r->code / 100 == 2) {
		struct filter_txn *f = &t->ftx;

		f->rcpts = xreallocarray(f->rcpts, f->nrcpts + 1, sizeof(*f->rcpts));
		t->rinfo = xreallocarray(t->rinfo, f->nrcpts + 1, sizeof(*t->rinfo));
		str_copy(t->rinfo[f->nrcpts].orcpt, t->rcpt.orcpt, sizeof(t->rinfo->orcpt));
		t->rinfo[f->nrcpts].notify = t->rcpt.notify;
		f->rcpts[f->nrcpts++] = xstrdup(t->rcpt_addr);
		reply(s, R_RCPT_OK);
	} else {
		char esc[SMTP_PARSE_ADDR_SIZE * 4];

		log_info("id=%s event=rcpt_refused rcpt=<%s> reply=\"%d %s\"", s->idstr,
		    log_escape(esc, sizeof(esc), t->rcpt_addr, strlen(t->rcpt_addr)), r->code,
		    r->ecode);
		reply_result(s, r);
	}
	session_resume(s);
}

/*
 * rcpt_proceed - after the RCPT filters: ask the backend.  The first RCPT
 * carries the transaction's MAIL with it (relay_mail is lazy): if the
 * backend refuses MAIL, every RCPT gets that refusal, as Postfix does with
 * smtpd_delay_reject.
 */
static void
rcpt_proceed(struct session *s, const struct filter_result *res)
{
	struct txn *t = s->txn;

	if (verdict_stops(s, res))
		return;
	session_pause(s);
	relay_rcpt(t->relay, t->rcpt_addr, t->rcpt_params.data ? t->rcpt_params.data : "",
	    rcpt_relayed, s);
}

/*
 * rcpt_allowed - relay control for the listener's role.  On mx only a local
 * domain is accepted, and its local part must not carry routing of its own:
 * '%' (percent hack), '!' (bang path) and '@' (quoted) would let a backend
 * that honours them (Postfix's allow_percent_hack and swap_bangpath are on
 * by default) relay for us.  Source routes are dropped by the parser.
 */
static bool
rcpt_allowed(struct session *s, const struct smtp_addr *a)
{
	if (s->lconf->role != ROLE_MX)
		return true;	/* submission: authenticated before MAIL */
	if (a->is_postmaster)
		return true;
	if (strpbrk(a->local, "%!@") != NULL)
		return false;
	return !a->is_literal && conf_is_local_domain(s->conf, a->domain);
}

/* cmd_rcpt - RCPT TO */
static void
cmd_rcpt(struct session *s, const struct smtp_parse_cmd *cmd)
{
	struct txn *t = s->txn;
	enum smtp_parse_status st;
	unsigned allowed = s->esmtp ? SMTP_PARSE_PARAM_NOTIFY | SMTP_PARSE_PARAM_ORCPT : 0;

	if (t == NULL) {
		client_error(s, R_NEED_MAIL);
		return;
	}
	if (t->ftx.nrcpts >= s->lim->max_recipients) {
		reply(s, R_TOO_MANY_RCPTS);
		return;
	}
	st = smtp_parse_rcpt(cmd->args, cmd->argslen, allowed,
	    (t->mail.params & SMTP_PARSE_PARAM_SMTPUTF8) != 0, &t->rcpt);
	if (st != SMTP_PARSE_OK) {
		client_error(s, st == SMTP_PARSE_UNKNOWN_PARAM ? R_PARAM_UNKNOWN :
		    st == SMTP_PARSE_BAD_PARAM ? R_SYNTAX :
		    st == SMTP_PARSE_NEED_SMTPUTF8 ? R_SMTPUTF8_NEEDED : R_ADDR_SYNTAX);
		return;
	}
	smtp_parse_addr_format(&t->rcpt.to, t->rcpt_addr, sizeof(t->rcpt_addr));
	if (t->rcpt.to.is_postmaster) {
		/* RFC 5321 4.5.1: <postmaster> is ours; give the backend a full address. */
		snprintf(t->rcpt_addr, sizeof(t->rcpt_addr), "postmaster@%s",
		    s->conf->nlocal_domains ? s->conf->local_domains[0] : s->conf->hostname);
	}
	if (!rcpt_allowed(s, &t->rcpt.to)) {
		char esc[SMTP_PARSE_ADDR_SIZE * 4];

		log_info("id=%s event=relay_denied client=%s rcpt=<%s>", s->idstr, s->addr,
		    log_escape(esc, sizeof(esc), t->rcpt_addr, strlen(t->rcpt_addr)));
		client_error(s, R_RELAY_DENIED);
		return;
	}
	t->rcpt_attempts++;
	buf_reset(&t->rcpt_params);
	smtp_parse_rcpt_params(&t->rcpt, &t->rcpt_params);
	run_stage(s, FILTER_STAGE_RCPT, t->rcpt_addr, rcpt_proceed);
}

/* ---- DATA and BDAT --------------------------------------------------------------- */

/* content_begin - first DATA or BDAT of a transaction */
static void
content_begin(struct session *s, enum data_reader_mode mode)
{
	struct txn *t = s->txn;
	enum data_reader_bare bare = s->lconf->bare_newline == BARE_NEWLINE_NORMALIZE ?
	    DATA_READER_BARE_NORMALIZE : DATA_READER_BARE_REJECT;

	data_reader_init(&t->dr, mode, s->lim->max_text_line, s->lim->max_message_size, bare);
	t->spool = spool_new(s->lim->spool_memory, NULL);
	set_timeout(s, s->lim->data_timeout);
}

/* cmd_data - DATA */
static void
cmd_data(struct session *s)
{
	struct txn *t = s->txn;

	if (t == NULL) {
		client_error(s, R_NEED_MAIL);
		return;
	}
	if (t->bdat_used) {
		client_error(s, R_BDAT_DATA_MIX);
		return;
	}
	if (t->ftx.nrcpts == 0) {
		client_error(s, R_NEED_RCPT);
		return;
	}
	content_begin(s, DATA_READER_DOT);
	relay_data_begin(t->relay);
	reply(s, R_DATA_GO);
	s->state = S_DATA;
}

/* cmd_bdat - BDAT size [LAST] */
static void
cmd_bdat(struct session *s, const struct smtp_parse_cmd *cmd)
{
	struct txn *t = s->txn;
	uint64_t size;
	bool last;

	if (smtp_parse_bdat(cmd->args, cmd->argslen, &size, &last) != SMTP_PARSE_OK) {
		/* We cannot know how many octets follow: the session is lost. */
		reply(s, R_BDAT_SYNTAX);
		session_close(s);
		return;
	}
	s->state = S_BDAT;
	s->bdat_left = size;
	s->bdat_last = last;
	set_timeout(s, s->lim->data_timeout);
	if (t == NULL || t->ftx.nrcpts == 0) {
		/* RFC 3030: read the chunk, throw it away, then refuse. */
		s->bdat_discard = t == NULL ? R_NEED_MAIL : R_NEED_RCPT;
		return;
	}
	s->bdat_discard = R_MAX;
	if (!t->bdat_used) {
		t->bdat_used = true;
		content_begin(s, DATA_READER_RAW);
		relay_data_begin(t->relay);
	}
}

/* spool_flush - move decoded content into the spool */
static void
spool_flush(struct session *s)
{
	struct txn *t = s->txn;
	const char *err;

	if (t->out.len == 0)
		return;
	if (!t->data_failed && !spool_write(t->spool, t->out.data, t->out.len, &err)) {
		log_err("id=%s event=spool_error error=\"%s\"", s->idstr, err);
		t->data_failed = true;
	}
	buf_reset(&t->out);
}

/* read_data - feed DATA content; true when the terminator was seen */
static bool
read_data(struct session *s, struct evbuffer *in)
{
	struct txn *t = s->txn;

	while (evbuffer_get_length(in) > 0) {
		struct evbuffer_iovec v;
		size_t used;
		enum data_reader_status st;

		if (evbuffer_peek(in, -1, NULL, &v, 1) < 1)
			break;
		st = data_reader_feed(&t->dr, v.iov_base, v.iov_len, &t->out, &used);
		evbuffer_drain(in, used);
		if (t->out.len >= SESSION_OUT_FLUSH)
			spool_flush(s);
		if (st == DATA_READER_END) {
			spool_flush(s);
			return true;
		}
	}
	return false;
}

/* read_bdat - consume the current chunk; true when it is complete */
static bool
read_bdat(struct session *s, struct evbuffer *in)
{
	while (s->bdat_left > 0 && evbuffer_get_length(in) > 0) {
		struct evbuffer_iovec v;
		size_t n, used;

		if (evbuffer_peek(in, -1, NULL, &v, 1) < 1)
			break;
		n = v.iov_len;
		if (n > s->bdat_left)
			n = (size_t)s->bdat_left;
		if (s->bdat_discard == R_MAX) {
			struct txn *t = s->txn;

			data_reader_feed(&t->dr, v.iov_base, n, &t->out, &used);
			if (t->out.len >= SESSION_OUT_FLUSH)
				spool_flush(s);
		}
		evbuffer_drain(in, n);
		s->bdat_left -= n;
	}
	return s->bdat_left == 0;
}

/* content_error_reply - the reply for a data_reader error */
static enum smtp_reply_id
content_error_reply(enum data_reader_error e)
{
	switch (e) {
	case DATA_READER_LINE_TOO_LONG:
		return R_LINE_TOO_LONG;
	case DATA_READER_BARE_NEWLINE:
		return R_BARE_NEWLINE_DATA;
	case DATA_READER_NUL:
		return R_NUL_DATA;
	case DATA_READER_TOO_BIG:
		return R_SIZE_EXCEEDED;
	default:
		return R_LOCAL_ERROR;
	}
}

/* bdat_chunk_done - a complete chunk: acknowledge, or end the message */
static void
bdat_chunk_done(struct session *s)
{
	struct txn *t = s->txn;
	enum data_reader_error e;
	char text[64];

	s->state = S_CMD;
	set_timeout(s, s->lim->command_timeout);
	if (s->bdat_discard != R_MAX) {
		client_error(s, s->bdat_discard);
		return;
	}
	if (s->bdat_last) {
		data_reader_finish(&t->dr, &t->out);
		spool_flush(s);
		data_end(s);
		return;
	}
	e = data_reader_error(&t->dr);
	if (e != DATA_READER_OK) {
		/* Refuse now; the rest of this message's chunks are thrown away. */
		txn_end(s, TXN_REJECTED, data_reader_strerror(e));
		if (e == DATA_READER_TOO_BIG)
			reply(s, R_SIZE_EXCEEDED);
		else
			client_error(s, content_error_reply(e));
		return;
	}
	snprintf(text, sizeof(text), "%llu octets received",
	    (unsigned long long)data_reader_wire_octets(&t->dr));
	reply_custom(s, 250, "2.0.0", text);
}

/* ---- end of message --------------------------------------------------------------- */

/* rfc5322_date - "Mon, 23 Nov 2026 18:00:00 +0000" */
static void
rfc5322_date(char *dst, size_t size)
{
	time_t now = time(NULL);
	struct tm tm;

	gmtime_r(&now, &tm);
	strftime(dst, size, "%a, %d %b %Y %H:%M:%S +0000", &tm);
}

/* build_head - Received (and Return-Path for Maildir), then the filtered headers */
static void
build_head(struct session *s, bool had_separator)
{
	struct txn *t = s->txn;
	char date[64];
	static const char *const protos[2][2][2] = {	/* [esmtp][tls][auth] */
		{ { "SMTP", "SMTPA" }, { "SMTPS", "SMTPSA" } },
		{ { "ESMTP", "ESMTPA" }, { "ESMTPS", "ESMTPSA" } },
	};
	const char *proto = protos[s->esmtp][s->tls_active][s->fsess.auth_user != NULL];

	buf_reset(&t->head);
	if (s->conf->relay.kind == RELAY_MAILDIR)
		buf_printf(&t->head, "Return-Path: <%s>\r\n", t->from);
	rfc5322_date(date, sizeof(date));
	buf_printf(&t->head, "Received: from %s (%s [%s])\r\n", s->helo, s->fsess.client_name,
	    s->addr);
	if (s->tls_active)
		buf_printf(&t->head, "\t(using %s)\r\n", s->tls_desc);
	buf_printf(&t->head, "\tby %s (portier) with %s id %s.%u", s->conf->hostname, proto,
	    s->idstr, t->seq);
	if (t->ftx.nrcpts == 1)
		buf_printf(&t->head, "\r\n\tfor <%s>", t->ftx.rcpts[0]);
	buf_printf(&t->head, ";\r\n\t%s\r\n", date);
	if (t->ftx.quarantine)
		buf_printf(&t->head, "X-Portier-Quarantine: %s\r\n", t->ftx.quarantine);
	filter_compose_headers(&t->ftx, s->conf->hostname, &t->head);
	if (had_separator)
		buf_puts(&t->head, "\r\n");
}

/* dsn_relayed - the DSN went out (or not): now answer the client */
static void
dsn_data_relayed(void *arg, const struct relay_result *res, size_t n)
{
	struct session *s = arg;
	struct txn *t = s->txn;

	s->paused = false;
	if (n >= 1 && res[0].code / 100 == 2) {
		log_info("id=%s event=dsn_sent to=<%s> reply=\"%d %s\"", s->idstr, t->from,
		    res[0].code, res[0].ecode);
		reply_result(s, &t->final);
		txn_end(s, TXN_DELIVERED, t->final.text);
	} else {
		log_warn("id=%s event=dsn_failed to=<%s> reply=\"%d %s %s\"", s->idstr, t->from,
		    n ? res[0].code : 0, n ? res[0].ecode : "", n ? res[0].text : "");
		reply(s, R_DSN_FAILED);
		txn_end(s, TXN_TEMPFAIL, "dsn failed");
	}
	session_resume(s);
}

/* dsn_step - MAIL and RCPT of the DSN transaction */
static void
dsn_step(void *arg, const struct relay_result *r)
{
	struct session *s = arg;
	struct txn *t = s->txn;

	if (r->code / 100 != 2) {
		dsn_data_relayed(s, r, 1);
		return;
	}
	if (t->dsn_head.len == 0) {
		/* MAIL FROM:<> accepted: now the one recipient. */
		buf_puts(&t->dsn_head, "rcpt");
		relay_rcpt(t->dsn_relay, t->from, "", dsn_step, s);
		return;
	}
	buf_reset(&t->dsn_head);
	relay_data(t->dsn_relay, &t->dsn_head, t->dsn_spool, 0, dsn_data_relayed, s);
}

/* send_dsn - report the refused recipients to the sender, then answer */
static void
send_dsn(struct session *s, const struct relay_result *res, size_t n)
{
	struct txn *t = s->txn;
	const struct conf_relay *target = s->conf->bounce_relay.kind != RELAY_NONE ?
	    &s->conf->bounce_relay : &s->conf->relay;
	struct dsn_rcpt *dr = xcalloc(n, sizeof(*dr));
	struct dsn_info info;
	struct buf msg, hdr;
	const char *err;
	size_t i, nd = 0;

	buf_init(&msg);
	buf_init(&hdr);
	buf_reserve(&hdr, t->body_off);
	if (spool_pread(t->spool, hdr.data, t->body_off, 0) == (ssize_t)t->body_off)
		hdr.len = t->body_off;
	for (i = 0; i < n && i < t->ftx.nrcpts; i++) {
		const struct rcpt_info *ri = &t->rinfo[i];

		if (res[i].code / 100 == 2)
			continue;
		if (ri->notify && !(ri->notify & SMTP_PARSE_NOTIFY_FAILURE))
			continue;	/* RFC 3461: the client asked for no failure notice */
		dr[nd].addr = t->ftx.rcpts[i];
		dr[nd].orcpt = ri->orcpt[0] ? ri->orcpt : NULL;
		dr[nd].code = res[i].code;
		dr[nd].ecode = res[i].ecode;
		dr[nd].text = res[i].text;
		nd++;
	}
	if (nd == 0) {
		free(dr);
		buf_free(&hdr);
		reply_result(s, &t->final);
		txn_end(s, TXN_DELIVERED, t->final.text);
		return;
	}
	memset(&info, 0, sizeof(info));
	info.hostname = s->conf->hostname;
	info.sender = t->from;
	info.envid = t->mail.envid[0] ? t->mail.envid : NULL;
	info.remote_mta = s->conf->relay.host;	/* NULL for unix sockets */
	info.queue_id = s->idstr;
	info.arrival = (time_t)t->arrival;
	info.rcpts = dr;
	info.nrcpts = nd;
	info.orig_headers = hdr.data;
	info.orig_headers_len = hdr.len;
	dsn_build(&msg, &info);
	free(dr);
	buf_free(&hdr);
	t->dsn_spool = spool_new(s->lim->spool_memory, NULL);
	if (!spool_write(t->dsn_spool, msg.data, msg.len, &err)) {
		buf_free(&msg);
		reply(s, R_DSN_FAILED);
		txn_end(s, TXN_TEMPFAIL, err);
		return;
	}
	buf_free(&msg);
	buf_reset(&t->dsn_head);
	t->dsn_relay = relay_txn_new(loop_relay(s->loop), s->conf, target, s->idstr);
	if (s->snap->tls_client)
		relay_txn_set_tls(t->dsn_relay, s->snap->tls_client);
	session_pause(s);
	relay_mail(t->dsn_relay, "", "", dsn_step, s);
}

/* data_relayed - the backend's verdict on the message */
static void
data_relayed(void *arg, const struct relay_result *res, size_t n)
{
	struct session *s = arg;
	struct txn *t = s->txn;
	const struct relay_result *first_ok = NULL, *first_temp = NULL, *first_perm = NULL;
	size_t i;

	s->paused = false;
	for (i = 0; i < n; i++) {
		const struct relay_result *r = &res[i];

		if (r->code / 100 == 2 && first_ok == NULL)
			first_ok = r;
		else if (r->code / 100 == 4 && first_temp == NULL)
			first_temp = r;
		else if (r->code / 100 != 2 && first_perm == NULL)
			first_perm = r;
	}
	if (first_ok && (first_temp || first_perm)) {
		/* Mixed per-recipient results: never a silent drop. */
		t->final = *first_ok;
		if (s->conf->lmtp_mixed == LMTP_MIXED_TEMPFAIL ||
		    s->conf->relay.kind == RELAY_MAILDIR) {
			reply(s, R_LMTP_MIXED);
			txn_end(s, TXN_TEMPFAIL, "mixed recipient results");
		} else if (!dsn_owed(t->from)) {
			log_warn("id=%s event=dsn_suppressed reason=null_sender", s->idstr);
			reply_result(s, first_ok);
			txn_end(s, TXN_DELIVERED, first_ok->text);
		} else {
			send_dsn(s, res, n);
			if (!s->paused)
				session_resume(s);
			return;
		}
	} else if (first_ok) {
		reply_result(s, first_ok);
		txn_end(s, TXN_DELIVERED, first_ok->text);
	} else {
		const struct relay_result *r = first_temp ? first_temp : first_perm;

		reply_result(s, r);
		txn_end(s, r->code / 100 == 4 ? TXN_TEMPFAIL : TXN_REJECTED, r->text);
	}
	session_resume(s);
}

/* data_filtered - after the DATA filters: compose and relay */
static void
data_filtered(struct session *s, const struct filter_result *res)
{
	struct txn *t = s->txn;
	size_t i;

	if (verdict_stops(s, res)) {
		txn_end(s, res->verdict == FILTER_TEMPFAIL ? TXN_TEMPFAIL : TXN_REJECTED,
		    res->reply.text);
		return;
	}
	if (res->verdict == FILTER_DISCARD) {
		log_info("id=%s event=discard filter=%s", s->idstr, res->filter ? res->filter : "?");
		reply(s, R_DISCARDED);
		txn_end(s, TXN_DISCARDED, "discarded");
		return;
	}
	if (res->verdict == FILTER_QUARANTINE && t->ftx.quarantine == NULL)
		t->ftx.quarantine = xstrdup(res->filter ? res->filter : "filter");
	for (i = 0; i < t->ftx.nedits; i++) {
		const struct filter_edit *e = &t->ftx.edits[i];

		if (e->kind == EDIT_REPLACE_BODY) {
			const char *err;
			struct spool *nb = spool_new(s->lim->spool_memory, NULL);

			if (!spool_write(nb, e->value, e->value_len, &err)) {
				spool_free(nb);
				reply(s, R_LOCAL_ERROR);
				txn_end(s, TXN_TEMPFAIL, err);
				return;
			}
			spool_free(t->spool);
			t->spool = nb;
			t->body_off = 0;
		} else if (e->kind == EDIT_CHANGE_FROM || e->kind == EDIT_ADD_RCPT ||
		    e->kind == EDIT_DELETE_RCPT) {
			/* The envelope already went to the backend at MAIL/RCPT time. */
			log_err("id=%s event=filter_error error=\"envelope edits are not supported\"",
			    s->idstr);
			reply(s, R_LOCAL_ERROR);
			txn_end(s, TXN_TEMPFAIL, "envelope edit");
			return;
		}
	}
	build_head(s, t->had_separator);
	session_pause(s);
	relay_data(t->relay, &t->head, t->spool, t->body_off, data_relayed, s);
}

/* from_headers_owned - every From: of the message belongs to the login */
static bool
from_headers_owned(struct session *s)
{
	const struct filter_txn *f = &s->txn->ftx;
	size_t i;

	for (i = 0; i < f->nheaders; i++) {
		struct sender_login_from_result r;
		enum sender_login_from st;
		char uesc[600];

		if (str_casecmp(f->headers[i].name, "From") != 0)
			continue;
		st = sender_login_check_from(s->snap->senders, s->auth_user, f->headers[i].value,
		    strlen(f->headers[i].value), &r);
		if (st != SENDER_LOGIN_FROM_OK) {
			log_info("id=%s event=from_login_mismatch user=%s result=%s", s->idstr,
			    log_escape(uesc, sizeof(uesc), s->auth_user, strlen(s->auth_user)),
			    sender_login_from_name(st));
			return false;
		}
	}
	return true;
}

/* data_end - the message is complete (DATA terminator or BDAT LAST) */
static void
data_end(struct session *s)
{
	struct txn *t = s->txn;
	enum data_reader_error e = data_reader_error(&t->dr);
	char *copy = NULL;
	const char *msg;
	size_t n;
	bool sep;

	if (e != DATA_READER_OK) {
		log_info("id=%s event=content_error error=\"%s\"", s->idstr, data_reader_strerror(e));
		txn_end(s, TXN_REJECTED, data_reader_strerror(e));
		if (e == DATA_READER_TOO_BIG)
			reply(s, R_SIZE_EXCEEDED);
		else
			client_error(s, content_error_reply(e));
		return;
	}
	if (t->data_failed) {
		reply(s, R_LOCAL_ERROR);
		txn_end(s, TXN_TEMPFAIL, "spool error");
		return;
	}
	n = spool_size(t->spool);
	msg = spool_mem(t->spool);
	if (msg == NULL) {
		ssize_t got;

		if (n > SESSION_HEADER_MAX)
			n = SESSION_HEADER_MAX;
		copy = xmalloc(n ? n : 1);
		got = spool_pread(t->spool, copy, n, 0);
		n = got > 0 ? (size_t)got : 0;
		msg = copy;
	}
	t->body_off = filter_parse_headers(&t->ftx, msg, n);
	sep = t->body_off >= 2 && msg[t->body_off - 1] == '\n' &&
	    (t->body_off == 2 || (t->body_off >= 4 && msg[t->body_off - 3] == '\n'));
	free(copy);
	t->had_separator = sep;
	if (s->auth_user != NULL && !from_headers_owned(s)) {
		reply(s, R_FROM_NOT_OWNED);
		txn_end(s, TXN_REJECTED, "From: not owned by the login");
		return;
	}
	if (s->auth_user != NULL && s->tls_active)	/* RFC 8601 has no TLS method: a comment */
		filter_auth_result(&t->ftx, "auth=pass (%s) smtp.auth=%s", s->tls_desc, s->auth_user);
	else if (s->auth_user != NULL)
		filter_auth_result(&t->ftx, "auth=pass smtp.auth=%s", s->auth_user);
	t->ftx.body = t->spool;
	t->ftx.body_offset = t->body_off;
	/* Filters judge what the client sent; our own headers come after them. */
	run_stage(s, FILTER_STAGE_DATA, NULL, data_filtered);
}

/* ---- commands ------------------------------------------------------------------------ */

/* cmd_starttls - RFC 3207: 220, then the handshake on the same connection */
static void
cmd_starttls(struct session *s)
{
	struct evbuffer *in = bufferevent_get_input(s->bev);
	struct bufferevent *tbev;
	size_t pending;
	SSL *ssl;

	if (s->lconf->tls != TLS_STARTTLS || s->snap->tls == NULL) {
		client_error(s, R_NOT_IMPLEMENTED);
		return;
	}
	if (s->tls_active) {
		client_error(s, R_TLS_ACTIVE);
		return;
	}
	ssl = tls_server_ssl_new(s->snap->tls);
	reply(s, R_STARTTLS_GO);
	session_flush(s);	/* the 220 goes out in clear, before the wrap */
	/*
	 * Whatever the client sent after STARTTLS came in plain text and may be
	 * an injection (CVE-2011-0411): throw it away.  The STARTTLS line itself
	 * is still in the buffer; the caller's drain of it then finds nothing.
	 */
	pending = evbuffer_get_length(in);
	evbuffer_drain(in, pending);
	if (pending > 10)
		log_warn("id=%s event=starttls_plaintext_discarded client=%s octets=%zu", s->idstr,
		    s->addr, pending - 10);
	/* RFC 3207 4.2: forget everything learned before TLS. */
	txn_reset(s);
	free(s->helo);
	s->helo = NULL;
	s->fsess.helo = NULL;
	s->esmtp = false;
	smtp_parse_reader_reset(&s->reader);
	tbev = bufferevent_openssl_filter_new(loop_base(s->loop), s->bev, ssl,
	    BUFFEREVENT_SSL_ACCEPTING, BEV_OPT_CLOSE_ON_FREE);
	if (tbev == NULL)
		fatal("bufferevent_openssl_filter_new failed");
	s->bev = tbev;
	bufferevent_setcb(tbev, read_cb, write_cb, event_cb, s);
	bufferevent_enable(tbev, EV_READ | EV_WRITE);
	set_timeout(s, s->conf->tls_handshake_timeout);
	s->tls_handshaking = true;
	s->paused = true;	/* nothing is read as a command until the handshake is done */
}

/* tls_established - the handshake completed (STARTTLS or implicit TLS) */
static void
tls_established(struct session *s)
{
	SSL *ssl = bufferevent_openssl_get_ssl(s->bev);

	s->tls_active = true;
	tls_describe(ssl, s->tls_desc, sizeof(s->tls_desc));
	s->fsess.tls_version = tls_version(ssl);
	s->fsess.tls_cipher = tls_cipher(ssl);
	log_info("id=%s event=tls client=%s tls=\"%s\"", s->idstr, s->addr, s->tls_desc);
	set_timeout(s, s->lim->command_timeout);
	if (s->tls_handshaking) {
		s->tls_handshaking = false;
		session_resume(s);
	}
}

/* ---- AUTH (RFC 4954) -------------------------------------------------------------- */

struct auth_job {
	uint64_t id;
	struct loop *loop;
	struct snapshot *snap;	/* keeps the backend alive */
	char *user;
	char *pass;
	char client_ip[INET6_ADDRSTRLEN];
	bool secured;
	enum auth_result result;
	char *err;
};

/* auth_job_free - wipe the password and release */
static void
auth_job_free(struct auth_job *j)
{
	if (j->pass) {
		OPENSSL_cleanse(j->pass, strlen(j->pass));
		free(j->pass);
	}
	free(j->user);
	free(j->err);
	snapshot_unref(j->snap);
	free(j);
}

/* auth_work - the blocking check, on a worker thread */
static void
auth_work(void *arg)
{
	struct auth_job *j = arg;

	j->result = auth_verify(j->snap->auth, j->user, j->pass, j->client_ip, NULL, j->secured,
	    &j->err);
}

/* auth_abort - leave the AUTH exchange */
static void
auth_abort(struct session *s)
{
	auth_sasl_free(s->sasl);
	s->sasl = NULL;
	if (s->state == S_AUTH)
		s->state = S_CMD;
}

/* auth_failed - count a failure for the client's address; 421 when it is over */
static void
auth_failed(struct session *s, const char *why)
{
	struct authfail *af = server_authfail();
	unsigned n = af ? authfail_record(af, s->addr, time(NULL)) : 0;

	log_info("id=%s event=auth result=failed client=%s failures=%u reason=\"%s\"", s->idstr,
	    s->addr, n, why ? why : "bad credentials");
	client_error(s, R_AUTH_FAILED);
	if (af && authfail_blocked(af, s->addr, time(NULL)) && s->state != S_CLOSING)
		reply_close(s, R_AUTH_BLOCKED);
}

/* auth_done - the worker's verdict, back on our loop */
static void
auth_done(void *arg)
{
	struct auth_job *j = arg;
	struct session *s = loop_session_find(j->loop, j->id);

	if (s == NULL || s->state == S_DEAD || s->state == S_CLOSING) {
		auth_job_free(j);
		return;
	}
	s->paused = false;
	switch (j->result) {
	case AUTH_OK: {
		char uesc[600];

		s->auth_user = xstrdup(j->user);
		s->fsess.auth_user = s->auth_user;
		log_info("id=%s event=auth result=ok client=%s user=%s", s->idstr, s->addr,
		    log_escape(uesc, sizeof(uesc), j->user, strlen(j->user)));
		reply(s, R_AUTH_OK);
		break;
	}
	case AUTH_FAIL:
		auth_failed(s, j->err);
		break;
	case AUTH_TEMPFAIL:
		log_warn("id=%s event=auth result=tempfail client=%s reason=\"%s\"", s->idstr,
		    s->addr, j->err ? j->err : "backend");
		reply(s, R_AUTH_TEMPFAIL);
		break;
	}
	auth_job_free(j);
	session_resume(s);
}

/* auth_verify_async - hand the credentials to the worker pool */
static void
auth_verify_async(struct session *s)
{
	struct auth_job *j = xcalloc(1, sizeof(*j));

	j->id = s->id;
	j->loop = s->loop;
	j->snap = snapshot_ref(s->snap);
	j->user = xstrdup(auth_sasl_user(s->sasl));
	j->pass = xstrdup(auth_sasl_password(s->sasl));
	str_copy(j->client_ip, s->addr, sizeof(j->client_ip));
	j->secured = s->tls_active;
	auth_abort(s);	/* wipes the exchange's copy */
	session_pause(s);
	if (!workers_submit(loop_workers(s->loop), auth_work, auth_done, j)) {
		auth_job_free(j);
		s->paused = false;
		reply(s, R_AUTH_TEMPFAIL);
		session_resume(s);
	}
}

/* auth_continue - act on one step of the exchange */
static void
auth_continue(struct session *s, enum auth_sasl_status st, const char *challenge)
{
	switch (st) {
	case AUTH_SASL_CHALLENGE:
		evbuffer_add_printf(out(s), "334 %s\r\n", challenge ? challenge : "");
		s->state = S_AUTH;
		return;
	case AUTH_SASL_DONE:
		s->state = S_CMD;
		auth_verify_async(s);
		return;
	case AUTH_SASL_REFUSED:
		auth_abort(s);
		auth_failed(s, "unusable credentials");
		return;
	case AUTH_SASL_CANCEL:
		auth_abort(s);
		reply(s, R_AUTH_CANCEL);
		return;
	case AUTH_SASL_BAD_BASE64:
	case AUTH_SASL_MALFORMED:
		auth_abort(s);
		client_error(s, R_AUTH_BASE64);
		return;
	}
}

/* cmd_auth - AUTH mechanism [initial-response] */
static void
cmd_auth(struct session *s, const struct smtp_parse_cmd *cmd)
{
	struct smtp_parse_auth a;
	const char *challenge = NULL;
	char *initial = NULL;
	enum auth_sasl_status st;
	int mech;

	if (s->lconf->role == ROLE_MX || s->snap->auth == NULL) {
		client_error(s, R_AUTH_NOT_OFFERED);
		return;
	}
	if (!s->tls_active) {
		client_error(s, R_TLS_REQUIRED);	/* credentials never cross in clear */
		return;
	}
	if (s->helo == NULL) {
		client_error(s, R_NEED_HELO);
		return;
	}
	if (s->auth_user != NULL) {
		client_error(s, R_AUTH_ALREADY);
		return;
	}
	if (s->txn != NULL) {
		client_error(s, R_AUTH_IN_TXN);
		return;
	}
	if (server_authfail() && authfail_blocked(server_authfail(), s->addr, time(NULL))) {
		log_info("id=%s event=auth result=blocked client=%s", s->idstr, s->addr);
		reply_close(s, R_AUTH_BLOCKED);
		return;
	}
	if (smtp_parse_auth(cmd->args, cmd->argslen, &a) != SMTP_PARSE_OK) {
		/* A bad initial response is bad base64 (RFC 4954 4: 501 5.5.2). */
		client_error(s, memchr(cmd->args, ' ', cmd->argslen) ? R_AUTH_BASE64 : R_SYNTAX);
		return;
	}
	if ((mech = auth_mech_lookup(a.mech)) < 0) {
		client_error(s, R_AUTH_MECH);
		return;
	}
	if (a.initial)
		initial = xstrndup(a.initial, a.initiallen);
	s->sasl = auth_sasl_new((enum auth_mech)mech);
	smtp_parse_reader_init(&s->auth_reader, SESSION_AUTH_LINE_MAX);
	st = auth_sasl_start(s->sasl, initial, &challenge);
	if (initial) {
		OPENSSL_cleanse(initial, strlen(initial));
		free(initial);
	}
	auth_continue(s, st, challenge);
}

/*
 * frame_line - frame the next line of at most r->max_line octets at the
 * front of in.  Returns false when in is empty; else *st_r, the line (into
 * in's first chunk, valid until in is drained) and how many octets to drain.
 * *more_r tells whether input remains after those octets.
 */
static bool
frame_line(struct smtp_parse_reader *r, struct evbuffer *in, enum smtp_parse_line_status *st_r,
    const char **line_r, size_t *linelen_r, size_t *consumed_r, bool *more_r)
{
	size_t len = evbuffer_get_length(in), n;
	const char *p;

	if (len == 0)
		return false;
	n = len < r->max_line ? len : r->max_line;
	p = (const char *)evbuffer_pullup(in, (ev_ssize_t)n);
	*line_r = NULL;
	*linelen_r = 0;
	*st_r = smtp_parse_line(r, p, n, line_r, linelen_r, consumed_r);
	*more_r = *consumed_r < len;
	return true;
}

/* read_auth_line - one SASL response line; false when more input is needed */
static bool
read_auth_line(struct session *s, struct evbuffer *in)
{
	size_t linelen, consumed;
	const char *line, *challenge = NULL;
	enum smtp_parse_line_status st;
	bool more;
	char *copy;

	if (!frame_line(&s->auth_reader, in, &st, &line, &linelen, &consumed, &more))
		return false;
	switch (st) {
	case SMTP_PARSE_LINE_OK:
		copy = xstrndup(line, linelen);
		evbuffer_drain(in, consumed);
		{
			enum auth_sasl_status ast = auth_sasl_step(s->sasl, copy, &challenge);

			OPENSSL_cleanse(copy, linelen);
			free(copy);
			auth_continue(s, ast, challenge);
		}
		return true;
	case SMTP_PARSE_LINE_NEED_MORE:
		evbuffer_drain(in, consumed);
		return consumed > 0 && more;
	case SMTP_PARSE_LINE_TOO_LONG:
		evbuffer_drain(in, consumed);
		s->reader.skipping = s->auth_reader.skipping;	/* the rest is skipped as a command */
		auth_abort(s);
		client_error(s, R_AUTH_LINE_TOO_LONG);
		return true;
	default:
		evbuffer_drain(in, consumed);
		auth_abort(s);
		client_error(s, R_AUTH_BASE64);
		return true;
	}
}

/* syntax_reply - the reply for a command whose arguments are missing or extra */
static enum smtp_reply_id
syntax_reply(enum smtp_parse_verb verb)
{
	switch (verb) {
	case SMTP_PARSE_VERB_HELO:
	case SMTP_PARSE_VERB_EHLO:
		return R_HELO_SYNTAX;
	case SMTP_PARSE_VERB_MAIL:
		return R_FROM_SYNTAX;
	case SMTP_PARSE_VERB_RCPT:
		return R_ADDR_SYNTAX;
	default:
		return R_SYNTAX;
	}
}

/* dispatch - one command line */
static void
dispatch(struct session *s, const char *line, size_t len)
{
	struct smtp_parse_cmd cmd;
	enum smtp_parse_status st = smtp_parse_command(line, len, &cmd);

	if (cmd.verb == SMTP_PARSE_VERB_AUTH) {
		log_debug("id=%s event=command verb=AUTH", s->idstr);	/* never AUTH data */
	} else {
		char esc[600];

		log_debug("id=%s event=command line=\"%s\"", s->idstr,
		    log_escape(esc, sizeof(esc), line, len));
	}
	if (st == SMTP_PARSE_UNKNOWN_CMD) {
		client_error(s, R_UNKNOWN_CMD);
		return;
	}
	if (st != SMTP_PARSE_OK) {
		if (cmd.verb == SMTP_PARSE_VERB_BDAT) {
			reply(s, R_BDAT_SYNTAX);
			session_close(s);
			return;
		}
		client_error(s, syntax_reply(cmd.verb));
		return;
	}
	switch (cmd.verb) {
	case SMTP_PARSE_VERB_HELO:
		cmd_helo(s, &cmd, false);
		break;
	case SMTP_PARSE_VERB_EHLO:
		cmd_helo(s, &cmd, true);
		break;
	case SMTP_PARSE_VERB_MAIL:
		cmd_mail(s, &cmd);
		break;
	case SMTP_PARSE_VERB_RCPT:
		cmd_rcpt(s, &cmd);
		break;
	case SMTP_PARSE_VERB_DATA:
		cmd_data(s);
		break;
	case SMTP_PARSE_VERB_BDAT:
		cmd_bdat(s, &cmd);
		break;
	case SMTP_PARSE_VERB_RSET:
		txn_reset(s);
		reply(s, R_RSET);
		break;
	case SMTP_PARSE_VERB_NOOP:
		reply(s, R_NOOP);
		break;
	case SMTP_PARSE_VERB_QUIT:
		reply_close(s, R_BYE);
		break;
	case SMTP_PARSE_VERB_VRFY:
		reply(s, R_VRFY);
		break;
	case SMTP_PARSE_VERB_HELP:
		reply(s, R_HELP);
		break;
	case SMTP_PARSE_VERB_STARTTLS:
		cmd_starttls(s);
		break;
	case SMTP_PARSE_VERB_AUTH:
		cmd_auth(s, &cmd);
		break;
	case SMTP_PARSE_VERB_EXPN:
	default:
		client_error(s, R_NOT_IMPLEMENTED);
		break;
	}
}

/* read_command - frame and run one command; false when more input is needed */
static bool
read_command(struct session *s, struct evbuffer *in)
{
	size_t linelen, consumed;
	const char *line;
	enum smtp_parse_line_status st;
	bool more;

	if (!frame_line(&s->reader, in, &st, &line, &linelen, &consumed, &more))
		return false;
	switch (st) {
	case SMTP_PARSE_LINE_OK:
		dispatch(s, line, linelen);
		evbuffer_drain(in, consumed);
		return true;
	case SMTP_PARSE_LINE_NEED_MORE:
		/* Skipping the tail of an over-long line consumes without a line. */
		evbuffer_drain(in, consumed);
		return consumed > 0 && more;
	case SMTP_PARSE_LINE_TOO_LONG:
		evbuffer_drain(in, consumed);
		client_error(s, R_CMD_TOO_LONG);
		return true;
	case SMTP_PARSE_LINE_BARE_NEWLINE:
		evbuffer_drain(in, consumed);
		client_error(s, R_BARE_NEWLINE_CMD);
		return true;
	case SMTP_PARSE_LINE_NUL:
		evbuffer_drain(in, consumed);
		client_error(s, R_NUL_CMD);
		return true;
	}
	return false;
}

/* session_process - run buffered input until it runs out or we must wait */
static void
session_process(struct session *s)
{
	struct evbuffer *in = bufferevent_get_input(s->bev);

	s->in_process = true;
	while (!s->paused) {
		if (s->state == S_DATA) {
			if (!read_data(s, in))
				break;
			s->state = S_CMD;
			set_timeout(s, s->lim->command_timeout);
			data_end(s);
		} else if (s->state == S_BDAT) {
			if (!read_bdat(s, in))
				break;
			bdat_chunk_done(s);
		} else if (s->state == S_CMD) {
			if (!read_command(s, in))
				break;
		} else if (s->state == S_AUTH) {
			if (!read_auth_line(s, in))
				break;
		} else {
			break;
		}
	}
	s->in_process = false;
	session_flush(s);
}

/* pipeline_flooded - more complete commands waiting than max_pipelined */
static bool
pipeline_flooded(struct session *s, struct evbuffer *in)
{
	size_t len = evbuffer_get_length(in), max = s->lim->max_pipelined, n = 0;
	const char *p, *end, *nl;

	if (len < 2 * max)	/* cannot hold that many lines */
		return false;
	if (len > (size_t)max * s->lim->max_command_line)
		len = (size_t)max * s->lim->max_command_line;
	p = (const char *)evbuffer_pullup(in, (ev_ssize_t)len);
	end = p + len;
	for (; p < end && (nl = memchr(p, '\n', (size_t)(end - p))) != NULL; p = nl + 1) {
		/* Content follows DATA or BDAT: those lines are not commands. */
		if (str_ncasecmp(p, "DATA", 4) == 0 || str_ncasecmp(p, "BDAT", 4) == 0)
			return false;
		if (++n > max)
			return true;
	}
	return false;
}

/* ---- I/O callbacks ---------------------------------------------------------------------- */

/* read_cb - client input */
static void
read_cb(struct bufferevent *bev, void *arg)
{
	struct session *s = arg;

	if (s->state == S_DEAD || s->state == S_CLOSING) {
		/* Nothing more is read as a command; keep the buffer from growing. */
		struct evbuffer *in = bufferevent_get_input(bev);

		evbuffer_drain(in, evbuffer_get_length(in));
		return;
	}
	if (s->state == S_GREET_PAUSE) {
		log_info("id=%s event=greet_pause_violation client=%s", s->idstr, s->addr);
		reply_close(s, R_GREET_PAUSE);
		return;
	}
	if (s->state == S_CMD && pipeline_flooded(s, bufferevent_get_input(bev))) {
		log_info("id=%s event=pipeline_flood client=%s", s->idstr, s->addr);
		txn_reset(s);
		reply_close(s, R_PIPELINE_FLOOD);
		return;
	}
	if (!s->paused && !s->in_process)
		session_process(s);
}

/* write_cb - output drained */
static void
write_cb(struct bufferevent *bev, void *arg)
{
	struct session *s = arg;

	/* The reaper waits for whatever is still on its way (reap_cb). */
	if (s->state == S_CLOSING)
		session_reap(s);
}

/* event_cb - EOF, error, timeout */
static void
event_cb(struct bufferevent *bev, short what, void *arg)
{
	struct session *s = arg;

	if (s->state == S_DEAD) {
		/* Lingering for a last reply, and the peer is gone: free now. */
		if ((what & (BEV_EVENT_EOF | BEV_EVENT_ERROR)) && s->ev != NULL) {
			s->linger = SESSION_LINGER_TURNS;
			event_active(s->ev, 0, 0);
		}
		return;
	}
	if (what & BEV_EVENT_CONNECTED) {
		tls_established(s);
		return;
	}
	if ((what & BEV_EVENT_ERROR) && bufferevent_openssl_get_ssl(bev) != NULL) {
		char err[256];
		unsigned long e = bufferevent_get_openssl_error(bev);

		/* libevent keeps OpenSSL's errors per bufferevent, not in the thread's queue. */
		if (e != 0)
			ERR_error_string_n(e, err, sizeof(err));
		else if (EVUTIL_SOCKET_ERROR() != 0 && (what & BEV_EVENT_EOF) == 0)
			str_copy(err, evutil_socket_error_to_string(EVUTIL_SOCKET_ERROR()), sizeof(err));
		else
			str_copy(err, "peer closed the connection", sizeof(err));
		log_info("id=%s event=tls_error client=%s state=%s error=\"%s\"", s->idstr, s->addr,
		    s->tls_active ? "established" : "handshake", err);
		/*
		 * A failed STARTTLS handshake leaves OpenSSL's alert in the plain
		 * socket's buffer: let that (and only that) reach the client.
		 */
		s->closed_cleanly = !s->tls_active;
		s->alert_only = true;
		session_reap(s);
		return;
	}
	if ((what & BEV_EVENT_TIMEOUT) && !s->tls_active &&
	    (s->tls_handshaking || bufferevent_openssl_get_ssl(bev) != NULL)) {
		log_info("id=%s event=timeout client=%s state=tls_handshake", s->idstr, s->addr);
		session_reap(s);
		return;
	}
	if (what & BEV_EVENT_TIMEOUT) {
		log_info("id=%s event=timeout client=%s state=%s", s->idstr, s->addr,
		    s->state == S_CMD ? "command" : s->state == S_CLOSING ? "closing" : "data");
		if (s->state == S_CLOSING) {
			session_reap(s);
			return;
		}
		txn_reset(s);
		reply_close(s, R_TIMEOUT);
		return;
	}
	if (s->state == S_DATA || s->state == S_BDAT)
		log_info("id=%s event=lost_connection client=%s state=data", s->idstr, s->addr);
	session_reap(s);
}

/* connect_proceed - after the CONNECT filters: greet or refuse */
static void
connect_proceed(struct session *s, const struct filter_result *res)
{
	if (res->verdict == FILTER_REJECT || res->verdict == FILTER_TEMPFAIL) {
		log_info("id=%s event=connect_refused filter=%s", s->idstr,
		    res->filter ? res->filter : "?");
		if (res->reply.code)
			reply_custom(s, res->reply.code, res->reply.ecode, res->reply.text);
		else
			reply(s, R_CONNECT_REFUSED);
		session_close(s);
		return;
	}
	s->state = S_CMD;
	reply(s, R_BANNER);
}

/* greet_cb - greet_pause passed quietly */
static void
greet_cb(evutil_socket_t fd, short what, void *arg)
{
	struct session *s = arg;

	if (s->state != S_GREET_PAUSE)
		return;
	run_stage(s, FILTER_STAGE_CONNECT, NULL, connect_proceed);
	session_flush(s);
}

/* session_start - a new client */
void
session_start(struct loop *loop, struct snapshot *snap, size_t li, struct bufferevent *bev,
    const struct sockaddr *sa, socklen_t salen)
{
	struct session *s = xcalloc(1, sizeof(*s));

	s->loop = loop;
	s->snap = snapshot_ref(snap);
	s->conf = snap->conf;
	s->lconf = &snap->conf->listeners[li];
	s->lim = &s->lconf->limits;
	s->chain = snap->chains[li];
	s->id = server_new_session_id();
	snprintf(s->idstr, sizeof(s->idstr), SESSION_ID_FMT, SESSION_ID(s->id));
	s->bdat_discard = R_MAX;
	if (sa->sa_family == AF_INET)
		inet_ntop(AF_INET, &((const struct sockaddr_in *)sa)->sin_addr, s->addr,
		    sizeof(s->addr));
	else if (sa->sa_family == AF_INET6)
		inet_ntop(AF_INET6, &((const struct sockaddr_in6 *)sa)->sin6_addr, s->addr,
		    sizeof(s->addr));
	else
		str_copy(s->addr, "unknown", sizeof(s->addr));
	memcpy(&s->fsess.client_sa, sa, salen < sizeof(s->fsess.client_sa) ? salen :
	    sizeof(s->fsess.client_sa));
	s->fsess.id = s->id;
	s->fsess.listener = s->lconf->name;
	s->fsess.role = s->lconf->role;
	s->fsess.client_addr = s->addr;
	s->fsess.client_name = "unknown";
	s->fsess.conf = s->conf;
	smtp_parse_reader_init(&s->reader, s->lim->max_command_line);
	s->bev = bev;
	s->pending = evbuffer_new();
	if (s->pending == NULL)
		fatal("evbuffer_new failed");
	bufferevent_setcb(s->bev, read_cb, write_cb, event_cb, s);
	bufferevent_setwatermark(s->bev, EV_READ, 0, 256 * 1024);
	set_timeout(s, bufferevent_openssl_get_ssl(bev) != NULL ? s->conf->tls_handshake_timeout :
	    s->lim->command_timeout);
	loop_session_add(loop, s, s->id);
	log_info("id=%s event=connect client=%s listener=%s", s->idstr, s->addr, s->lconf->name);

	if (!server_session_begin(s->lim->max_sessions)) {
		log_warn("id=%s event=too_many_sessions client=%s max=%u", s->idstr, s->addr,
		    s->lim->max_sessions);
		bufferevent_enable(s->bev, EV_WRITE);
		reply_close(s, R_TOO_MANY_SESSIONS);
		return;
	}
	if (!filter_chain_empty(s->chain))
		s->fstate = filter_state_new(s->chain);
	bufferevent_enable(s->bev, EV_READ | EV_WRITE);
	s->state = S_GREET_PAUSE;
	if (s->lconf->greet_pause > 0) {
		struct timeval tv = { s->lconf->greet_pause, 0 };

		s->ev = evtimer_new(loop_base(loop), greet_cb, s);
		evtimer_add(s->ev, &tv);
		return;
	}
	run_stage(s, FILTER_STAGE_CONNECT, NULL, connect_proceed);
	session_flush(s);
}
