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
 * DATA/BDAT and the end of a message are in smtp_data.c, STARTTLS and AUTH
 * in smtp_auth.c; smtp_session_priv.h is what the three share.
 *
 * Must never: answer 250 to end of data before the backend did, let the
 * backend see a message the client did not finish (CRLF.CRLF only), free
 * itself inside one of its own callbacks (it is reaped at the end of the
 * loop turn), or log client text unescaped.
 */
#include "config.h"

#include <arpa/inet.h>
#include <assert.h>
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
#include "sendbatch.h"
#include "server.h"
#include "sockin.h"
#include "smtp_parse.h"
#include "smtp_reply.h"
#include "smtp_session.h"
#include "spool.h"
#include "tls.h"
#include "workers.h"
#include "xforward.h"
#include "../policy/auth.h"
#include "util.h"
#include "smtp_session_priv.h"

static const char *const txn_result_names[] = {
	"delivered", "rejected", "tempfail", "discarded", "aborted",
};

static void session_process(struct session *s);
static bool output_pending(struct session *s);
static bool output_over(struct session *s);
static void session_reading(struct session *s, bool on);
static void session_rdns_cancel(struct session *s);

/* ---- replies -------------------------------------------------------------- */

/* session_out - where replies collect until session_flush */
struct evbuffer *
session_out(struct session *s)
{
	return s->pending;
}

/*
 * session_send - write the collected replies on a plain socket with nothing
 * queued, directly or through the turn's batch sb (NULL: now): handing them
 * to the bufferevent would cost an epoll_ctl to add EV_WRITE and another to
 * drop it, for every reply.  What the socket does not take stays collected.
 */
void
session_send(struct session *s, struct sendbatch *sb)
{
	evutil_socket_t fd;

	if (evbuffer_get_length(s->pending) == 0 || s->bev == NULL)
		return;
	if (s->tls_active || s->tls_handshaking || bufferevent_openssl_get_ssl(s->bev) != NULL ||
	    evbuffer_get_length(bufferevent_get_output(s->bev)) != 0)
		return;
	if ((fd = bufferevent_getfd(s->bev)) >= 0)
		sendbatch_add(sb, fd, s->pending);	/* drains what was written */
}

/*
 * session_queue - hand what session_send left (everything, under TLS) to the
 * bufferevent, which writes it when the socket takes it and reports errors
 */
void
session_queue(struct session *s)
{
	if (s->bev != NULL && evbuffer_get_length(s->pending) > 0)
		evbuffer_add_buffer(bufferevent_get_output(s->bev), s->pending);
}

/* session_flush - send the collected replies now: session_send, then session_queue */
void
session_flush(struct session *s)
{
	session_send(s, NULL);
	session_queue(s);
}

/*
 * session_flush_soon - replies are ready: send them at the end of the loop
 * turn (loop_flush_later), or now when no turn is running
 */
static void
session_flush_soon(struct session *s)
{
	if (evbuffer_get_length(s->pending) == 0)
		return;
	if (!loop_flush_later(s->loop, s->id))
		session_flush(s);
}

/* session_reply - a table reply */
void
session_reply(struct session *s, enum smtp_reply_id id)
{
	char line[SMTP_REPLY_LINE_MAX];

	evbuffer_add(session_out(s), line, smtp_reply_line(line, sizeof(line), id,
	    s->conf->hostname));
}

/* session_reply_custom - a reply with text from a filter or the backend */
void
session_reply_custom(struct session *s, int code, const char *ecode, const char *text)
{
	struct buf b;

	buf_init(&b);
	smtp_reply_custom(&b, code, ecode, text);
	evbuffer_add(session_out(s), b.data, b.len);
	buf_free(&b);
}

/* session_reply_result - a relay result as a reply */
void
session_reply_result(struct session *s, const struct relay_result *r)
{
	session_reply_custom(s, r->code, r->ecode, r->text[0] ? r->text : "Ok");
}

/* session_reply_close - a final reply (421 etc.), then close once it is written */
void
session_reply_close(struct session *s, enum smtp_reply_id id)
{
	session_reply(s, id);
	session_close(s);
}

/* session_count_error - one more client error; 421 and close at max_errors */
void
session_count_error(struct session *s)
{
	if (++s->errors >= s->lim->max_errors) {
		log_info("id=%s event=too_many_errors client=%s errors=%u", s->idstr, s->addr,
		    s->errors);
		session_reply_close(s, R_TOO_MANY_ERRORS);
	}
}

/* session_client_error - reply and count toward max_errors */
void
session_client_error(struct session *s, enum smtp_reply_id id)
{
	session_reply(s, id);
	session_count_error(s);
}

/* reply_filter - a filter's verdict as a reply */
static void
reply_filter(struct session *s, const struct filter_result *res)
{
	if (res->reply.code)
		session_reply_custom(s, res->reply.code, res->reply.ecode, res->reply.text);
	else
		session_reply(s, res->verdict == FILTER_TEMPFAIL ? R_FILTER_TEMPFAIL : R_FILTER_REJECT);
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
	smtp_envelope_free(t->env);
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
		session_txn_end(s, TXN_ABORTED, "");
	}
	if (s->fstate) {
		struct filter_ctx ctx = { .sess = &s->fsess };

		filter_state_free(s->fstate, &ctx);
	}
	if (!s->quiet)
		log_info("id=%s event=disconnect client=%s transactions=%u errors=%u", s->idstr,
		    s->addr, s->ntxn, s->errors);
	loop_session_remove(s->loop, s, s->id);
	connlimit_release(&s->climit);
	if (s->bev) {
		SSL *ssl = bufferevent_openssl_get_ssl(s->bev);

		/*
		 * close_notify keeps the TLS session resumable (OpenSSL drops it
		 * otherwise): when we ended it, or the client did with its own.
		 */
		if (ssl != NULL && s->tls_active &&
		    (s->closed_cleanly || (SSL_get_shutdown(ssl) & SSL_RECEIVED_SHUTDOWN)))
			SSL_shutdown(ssl);
		sockin_free(s->sin);
		bufferevent_free(s->bev);
	}
	if (s->ev)
		event_free(s->ev);
	event_free(s->deadline);
	evbuffer_free(s->pending);
	free(s->helo);
	free(s->auth_user);
	free(s->tls_peer_subject);
	rdns_cancel(s->rdns);
	auth_sasl_free(s->sasl);
	snapshot_unref(s->snap);
	free(s);
}

/* reap_cb - free outside any of the session's own callbacks */
static void
reap_cb(evutil_socket_t fd, short what, void *arg)
{
	struct session *s = arg;

	if (s->wait == SESSION_WAIT_FILTER) {
		/* A blocking filter call reads its own copies: it is left to finish alone. */
		filter_cancel(s->fstate);
		session_enter_wait(s, SESSION_WAIT_NONE);
	}
	session_rdns_cancel(s);
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
	evtimer_del(s->deadline);
	/* While a last reply lingers (reap_cb) writing goes on, and reading, to see EOF. */
	if (s->bev && !s->closed_cleanly) {
		bufferevent_disable(s->bev, EV_READ | EV_WRITE);
		if (s->sin)
			sockin_disable(s->sin);
	}
	if (s->ev)
		event_free(s->ev);
	s->ev = event_new(loop_base(s->loop), -1, 0, reap_cb, s);
	event_active(s->ev, 0, 0);
}

/* session_close - stop reading; close once the output is flushed */
void
session_close(struct session *s)
{
	if (s->state == S_CLOSING || s->state == S_DEAD)
		return;
	s->state = S_CLOSING;
	s->closed_cleanly = true;	/* session_read_cb now drains input unread; EOF still shows */
	session_flush(s);
	if (!output_pending(s) || s->tls_active)
		session_reap(s);
	/* else the write callback reaps once the buffer drained */
}

/* session_shutdown - the drain deadline passed */
void
session_shutdown(struct session *s, bool force)
{
	if (s->wait != SESSION_WAIT_NONE && !force) {
		/* Waiting on the backend or a filter: its answer goes out first, then the 421. */
		s->shutdown_owed = true;
		return;
	}
	/* Forced: the transaction is abandoned (never acknowledged: the client retries). */
	session_interrupt(s, R_SHUTDOWN);
}

/*
 * session_shutdown_idle - SIGTERM: a session between transactions ends now
 * (421 4.3.2), one still waiting for its PROXY header unanswered
 */
void
session_shutdown_idle(struct session *s)
{
	if (s->state == S_CMD && s->txn == NULL && s->wait == SESSION_WAIT_NONE)
		session_reply_close(s, R_SHUTDOWN);
	else if (s->state == S_PROXY)
		smtp_proxy_refuse(s, "shutting down");
}

/*
 * session_io_timeouts - what the socket itself times: a TLS handshake both
 * ways; else writes only (command_timeout without progress), since the
 * client's input has the session's deadline (session_rearm)
 */
void
session_io_timeouts(struct session *s, bool handshake)
{
	unsigned hs = s->conf->tls_handshake_timeout;

	if (handshake)
		sockin_timeouts(s->sin, s->bev, hs, hs);
	else
		sockin_timeouts(s->sin, s->bev, 0, s->lim->command_timeout);
}

/*
 * session_rearm - start the client's clock for what the session now waits
 * from it: a command line (command_timeout) or the next SESSION_DATA_BLOCK
 * of content (data_timeout), or the drain of its replies (command_timeout).
 * A dribble of one octet per period no longer holds a session: the clock is
 * not restarted by every read, only by a whole line or block.  Stopped while
 * the session waits for anything else.
 */
void
session_rearm(struct session *s)
{
	struct timeval tv = { s->lim->command_timeout, 0 };

	if (s->state == S_CLOSING || s->state == S_DEAD)
		return;
	s->block_octets = 0;
	if (s->wait != SESSION_WAIT_NONE && s->wait != SESSION_WAIT_OUTPUT) {
		evtimer_del(s->deadline);
		return;
	}
	if (s->wait == SESSION_WAIT_NONE && (s->state == S_DATA || s->state == S_BDAT))
		tv.tv_sec = s->lim->data_timeout;
	evtimer_add(s->deadline, &tv);
}

/*
 * session_tls_watermark - under TLS, encrypt no further ahead than
 * SESSION_TLS_WIRE_HIGH octets on the socket: the rest of the replies stays
 * in our bufferevent, where output_over sees it and session_write_cb learns
 * that it drained
 */
void
session_tls_watermark(struct session *s)
{
	struct bufferevent *under = bufferevent_get_underlying(s->bev);

	if (under != NULL) {
		bufferevent_setwatermark(under, EV_WRITE, 0, SESSION_TLS_WIRE_HIGH);
		/*
		 * And read no further ahead than our own input watermark: when
		 * OpenSSL cannot write (a client that does not read), it stops
		 * decrypting too, and the socket's bytes would pile up below.
		 */
		bufferevent_setwatermark(under, EV_READ, 0, SESSION_INPUT_HIGH);
	}
}

/* session_state_name - what the client was expected to send, for the timeout log line */
static const char *
session_state_name(const struct session *s)
{
	if (s->wait == SESSION_WAIT_OUTPUT)
		return "output";
	switch (s->state) {
	case S_GREET_PAUSE:
		return "greeting";
	case S_DATA:
	case S_BDAT:
		return "data";
	case S_AUTH:
		return "auth";
	case S_CLOSING:
	case S_DEAD:
		return "closing";
	default:
		return "command";
	}
}

/* deadline_cb - the client took too long over the line or block we waited for */
static void
deadline_cb(evutil_socket_t fd, short what, void *arg)
{
	struct session *s = arg;

	if (s->state == S_DEAD)
		return;
	log_info("id=%s event=timeout client=%s state=%s", s->idstr, s->addr,
	    session_state_name(s));
	if (s->state == S_CLOSING || s->wait == SESSION_WAIT_OUTPUT) {
		/* It does not read: a 421 would not reach it either. */
		session_reap(s);
		return;
	}
	session_interrupt(s, R_TIMEOUT);
}

static const char *const session_wait_names[] = {
	"none", "tls", "filter", "auth", "relay", "output", "rdns",
};

/*
 * session_enter_wait - the one place that says what the session waits for.
 * Reading goes on while it waits (pipelined input stays in the buffer,
 * bounded by the read watermark): toggling EV_READ would cost two epoll_ctl
 * calls per backend round trip.
 */
void
session_enter_wait(struct session *s, enum session_wait w)
{
	if (s->wait == w)
		return;
	log_debug("id=%s event=wait from=%s to=%s", s->idstr, session_wait_names[s->wait],
	    session_wait_names[w]);
	s->wait = w;
	session_rearm(s);
}

/*
 * session_wait_over - a completion arrived: the wait ends.  False when the
 * session is closing meanwhile: the completion drops its result and must
 * not reply.
 */
bool
session_wait_over(struct session *s)
{
	session_enter_wait(s, SESSION_WAIT_NONE);
	return s->state != S_CLOSING && s->state != S_DEAD;
}

/*
 * session_interrupt - a command timeout, a pipelining flood or the drain
 * ends the session with reply id.  The wait in progress is cancelled with
 * the transaction: a filter stage (filter_cancel) as any other.
 */
void
session_interrupt(struct session *s, enum smtp_reply_id id)
{
	if (s->state == S_CLOSING || s->state == S_DEAD)
		return;
	if (s->wait == SESSION_WAIT_FILTER) {
		log_info("id=%s event=filter_cancelled reply=%d", s->idstr, smtp_reply_get(id)->code);
		filter_cancel(s->fstate);
		session_enter_wait(s, SESSION_WAIT_NONE);
	}
	session_rdns_cancel(s);
	session_txn_reset(s);
	session_reply_close(s, id);
}

/* session_continue - a wait ended: go on with buffered input */
void
session_continue(struct session *s)
{
	if (s->shutdown_owed && s->wait == SESSION_WAIT_NONE)
		session_interrupt(s, R_SHUTDOWN);
	if (s->state == S_CLOSING || s->state == S_DEAD || s->in_process ||
	    s->wait != SESSION_WAIT_NONE) {
		session_flush_soon(s);
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

/* session_txn_end - log the summary line and drop the transaction */
void
session_txn_end(struct session *s, enum txn_result result, const char *replytext)
{
	struct txn *t = s->txn;
	struct buf to;
	char from[SMTP_PARSE_ADDR_SIZE * 4], helo[256], rep[600];
	unsigned long long delay;

	if (t == NULL)
		return;
	/* A pending filter stage reads the transaction: it is cancelled first. */
	assert(s->wait != SESSION_WAIT_FILTER);
	s->txn = NULL;
	if (result != TXN_DELIVERED && result != TXN_DISCARDED && s->fstate) {
		struct filter_ctx ctx = { .sess = &s->fsess, .txn = &t->ftx };
		struct filter_result res;

		/* Abort runs every filter's abort inline and passes. */
		(void)filter_run(s->fstate, FILTER_STAGE_ABORT, &ctx, NULL, &res, NULL, NULL, NULL);
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

/* session_txn_reset - RSET semantics: drop any transaction without delivery */
void
session_txn_reset(struct session *s)
{
	if (s->txn)
		session_txn_end(s, TXN_ABORTED, "");
}

/* ---- filters ------------------------------------------------------------------- */

/* filter_done - a pending stage finished (on our loop); never after filter_cancel */
static void
filter_done(uint64_t id, void *arg, const struct filter_result *res)
{
	struct session *s = loop_session_find(arg, id);

	if (s == NULL || !session_wait_over(s))
		return;
	s->fnext(s, res);
	session_continue(s);
}

/* session_run_stage - run a filter stage, then next (now, or when the pool is done) */
void
session_run_stage(struct session *s, enum filter_stage stage, const char *arg, stage_next_fn next)
{
	struct filter_ctx ctx = { .sess = &s->fsess, .txn = s->txn ? &s->txn->ftx : NULL };
	struct filter_result res;

	if (filter_chain_empty(s->chain)) {
		memset(&res, 0, sizeof(res));
		res.verdict = FILTER_CONTINUE;
		next(s, &res);
		return;
	}
	if (filter_chain_dns(s->chain))
		ctx.resolver = loop_resolver(s->loop, s->conf);
	if (filter_run(s->fstate, stage, &ctx, arg, &res, loop_workers(s->loop, SERVER_POOL_FILTER), filter_done,
	    s->loop) == FILTER_RUN_DONE) {
		next(s, &res);
		return;
	}
	s->fnext = next;
	session_enter_wait(s, SESSION_WAIT_FILTER);
}

/*
 * session_count_refusal - a REJECT at MAIL or RCPT is a client error, as a
 * backend's 5xx to RCPT is: the role policies (port25's relay denial,
 * auth-enforce's 530 and 553) always counted toward max_errors, and so does
 * any filter's, so that probing for relays or addresses has a bound
 */
static void
session_count_refusal(struct session *s, const struct filter_result *res)
{
	if (res->verdict == FILTER_REJECT)
		session_count_error(s);
}

/* session_verdict_stops - does this verdict end the command with a reply? */
bool
session_verdict_stops(struct session *s, const struct filter_result *res)
{
	if (res->verdict != FILTER_REJECT && res->verdict != FILTER_TEMPFAIL)
		return false;
	log_info("id=%s event=filter_%s filter=%s reply=\"%d %s %s\"", s->idstr,
	    filter_verdict_name(res->verdict), res->filter ? res->filter : "?",
	    res->reply.code, res->reply.ecode, res->reply.text);
	reply_filter(s, res);
	return true;
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
	    s->snap->auth != NULL;
}

/* helo_proceed - after the HELO filters */
static void
helo_proceed(struct session *s, const struct filter_result *res)
{
	if (session_verdict_stops(s, res)) {
		free(s->helo);
		s->helo = NULL;
		s->fsess.helo = NULL;
		return;
	}
	if (!s->esmtp) {
		session_reply(s, R_HELO);
		return;
	}
	evbuffer_add_printf(session_out(s),
	    "250-%s\r\n250-PIPELINING\r\n250-SIZE %zu\r\n250-8BITMIME\r\n"
	    "250-ENHANCEDSTATUSCODES\r\n250-SMTPUTF8\r\n250-CHUNKING\r\n",
	    s->conf->hostname, s->lim->max_message_size);
	if (starttls_offered(s))
		evbuffer_add(session_out(s), "250-STARTTLS\r\n", 14);
	if (auth_offered(s))
		evbuffer_add(session_out(s), "250-AUTH PLAIN LOGIN\r\n", 22);
	if (s->tls_active)
		evbuffer_add(session_out(s), "250-REQUIRETLS\r\n", 16);
	evbuffer_add(session_out(s), "250 DSN\r\n", 9);
}

/* cmd_helo - HELO and EHLO */
static void
cmd_helo(struct session *s, const struct smtp_parse_cmd *cmd, bool esmtp)
{
	struct smtp_parse_helo h;

	if (smtp_parse_helo(cmd->args, cmd->argslen, &h) != SMTP_PARSE_OK) {
		session_client_error(s, R_HELO_SYNTAX);
		return;
	}
	session_txn_reset(s);
	free(s->helo);
	s->helo = xstrdup(h.name);
	s->fsess.helo = s->helo;
	s->esmtp = esmtp;
	s->fsess.esmtp = esmtp;
	session_run_stage(s, FILTER_STAGE_HELO, s->helo, helo_proceed);
}

/* ---- MAIL ---------------------------------------------------------------------- */

/*
 * session_txn_discarded - has a filter discarded the transaction?  Then the backend
 * hears nothing more of it: its backend transaction, if any, is given back
 * (RSET), and the client is answered as if all went well.
 */
bool
session_txn_discarded(struct session *s, const struct filter_result *res)
{
	struct txn *t = s->txn;

	if (res->verdict == FILTER_DISCARD)
		t->ftx.discard = true;
	if (!t->ftx.discard)
		return false;
	if (t->relay != NULL)	/* the backend transaction is open: it is news */
		log_info("id=%s event=discard filter=%s", s->idstr, res->filter ? res->filter : "?");
	relay_txn_free(t->relay);
	t->relay = NULL;
	return true;
}

/* mail_proceed - after the MAIL filters: open the backend transaction */
static void
mail_proceed(struct session *s, const struct filter_result *res)
{
	struct txn *t = s->txn;

	if (session_verdict_stops(s, res)) {
		session_txn_end(s, res->verdict == FILTER_TEMPFAIL ? TXN_TEMPFAIL : TXN_REJECTED,
		    res->reply.text);
		session_count_refusal(s, res);
		return;
	}
	if (session_txn_discarded(s, res)) {
		/* No backend transaction at all. */
		log_info("id=%s event=discard filter=%s", s->idstr, res->filter ? res->filter : "?");
		session_reply(s, R_MAIL_OK);
		return;
	}
	t->relay = relay_txn_new(loop_relay(s->loop), s->conf, &s->conf->relay, s->idstr);
	if (s->snap->tls_client)
		relay_txn_set_tls(t->relay, s->snap->tls_client);
	relay_txn_set_requiretls(t->relay, (t->mail.params & SMTP_PARSE_PARAM_REQUIRETLS) != 0);
	if (s->conf->relay_xforward) {
		struct xforward_client xc = { s->fsess.client_name, s->fsess.client_addr,
		    s->fsess.client_port, s->fsess.helo, s->fsess.esmtp, t->ftx.queue_id };

		relay_txn_set_client(t->relay, &xc);
	}
	/* Lazy: MAIL goes to the backend with the first RCPT (its refusal answers that RCPT). */
	relay_mail(t->relay, t->from, t->mail_params.data ? t->mail_params.data : "", NULL, s);
	session_reply(s, R_MAIL_OK);
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
	char from[SMTP_PARSE_ADDR_SIZE];
	struct txn *t;
	unsigned allowed = SMTP_PARSE_PARAM_SIZE | SMTP_PARSE_PARAM_BODY |
	    SMTP_PARSE_PARAM_SMTPUTF8 | SMTP_PARSE_PARAM_RET | SMTP_PARSE_PARAM_ENVID;

	if (s->helo == NULL) {
		session_client_error(s, R_NEED_HELO);
		return;
	}
	if (s->txn) {
		session_client_error(s, R_NESTED_MAIL);
		return;
	}
	if (s->lconf->tls_required && !s->tls_active) {
		session_client_error(s, R_TLS_REQUIRED);
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
		session_client_error(s, mail_status_reply(st));
		return;
	}
	if (m.body == SMTP_PARSE_BODY_BINARYMIME) {
		session_client_error(s, R_BODY_UNSUPPORTED);
		return;
	}
	if ((m.params & SMTP_PARSE_PARAM_SIZE) && m.size > s->lim->max_message_size) {
		session_reply(s, R_SIZE_DECLARED);
		return;
	}
	smtp_parse_addr_format(&m.from, from, sizeof(from));
	t = xcalloc(1, sizeof(*t));
	t->seq = ++s->ntxn;
	t->start_ms = now_ms();
	t->mail = m;
	str_copy(t->from, from, sizeof(t->from));
	buf_init(&t->mail_params);
	smtp_parse_mail_params(&m, &t->mail_params);
	buf_init(&t->rcpt_params);
	t->arrival = (unsigned long long)time(NULL);
	buf_init(&t->out);
	buf_init(&t->head);
	buf_init(&t->dsn_head);
	filter_txn_init(&t->ftx);
	t->ftx.queue_id = xasprintf("%s.%u", s->idstr, t->seq);	/* the Received: id too */
	t->ftx.mail_from = xstrdup(t->from);
	t->ftx.mail_params = xstrdup(t->mail_params.data ? t->mail_params.data : "");
	data_reader_init(&t->dr, DATA_READER_DOT, 0, 0, DATA_READER_BARE_REJECT);
	s->txn = t;
	session_run_stage(s, FILTER_STAGE_MAIL, t->from, mail_proceed);
}

/* ---- RCPT ----------------------------------------------------------------------- */

/* rcpt_add - the RCPT in progress joins the transaction's recipients */
static void
rcpt_add(struct txn *t)
{
	struct filter_txn *f = &t->ftx;

	f->rcpts = xreallocarray(f->rcpts, f->nrcpts + 1, sizeof(*f->rcpts));
	t->rinfo = xreallocarray(t->rinfo, f->nrcpts + 1, sizeof(*t->rinfo));
	str_copy(t->rinfo[f->nrcpts].orcpt, t->rcpt.orcpt, sizeof(t->rinfo->orcpt));
	t->rinfo[f->nrcpts].notify = t->rcpt.notify;
	f->rcpt_params = xreallocarray(f->rcpt_params, f->nrcpts + 1, sizeof(*f->rcpt_params));
	f->rcpt_params[f->nrcpts] = xstrdup(t->rcpt_params.data ? t->rcpt_params.data : "");
	f->rcpts[f->nrcpts++] = xstrdup(t->rcpt_addr);
}

/* rcpt_relayed - the backend answered RCPT */
static void
rcpt_relayed(void *arg, const struct relay_result *r)
{
	struct session *s = arg;
	struct txn *t = s->txn;

	if (!session_wait_over(s))
		return;
	if (r->code / 100 == 2) {
		rcpt_add(t);
		session_reply(s, R_RCPT_OK);
	} else {
		char esc[SMTP_PARSE_ADDR_SIZE * 4];

		log_info("id=%s event=rcpt_refused rcpt=<%s> reply=\"%d %s\"", s->idstr,
		    log_escape(esc, sizeof(esc), t->rcpt_addr, strlen(t->rcpt_addr)), r->code,
		    r->ecode);
		session_reply_result(s, r);
		/* A refused recipient is a client error: harvesting addresses has a bound. */
		if (r->code / 100 == 5)
			session_count_error(s);
	}
	session_continue(s);
}

/*
 * rcpt_proceed - after the RCPT filters: ask the backend.  The first RCPT
 * carries the transaction's MAIL with it (relay_mail is lazy): if the
 * backend refuses MAIL, every RCPT gets that refusal, as Postfix does with
 * smtpd_delay_reject.  A discarded transaction takes every recipient the
 * filters let through, without asking the backend.
 */
static void
rcpt_proceed(struct session *s, const struct filter_result *res)
{
	struct txn *t = s->txn;

	t->ftx.rcpt_params_cur = NULL;	/* the RCPT stage is over */
	if (session_verdict_stops(s, res)) {
		session_count_refusal(s, res);
		return;
	}
	if (session_txn_discarded(s, res)) {
		rcpt_add(t);
		session_reply(s, R_RCPT_OK);
		return;
	}
	session_enter_wait(s, SESSION_WAIT_RELAY);
	relay_rcpt(t->relay, t->rcpt_addr, t->rcpt_params.data ? t->rcpt_params.data : "",
	    rcpt_relayed, s);
}

/* cmd_rcpt - RCPT TO */
static void
cmd_rcpt(struct session *s, const struct smtp_parse_cmd *cmd)
{
	struct txn *t = s->txn;
	enum smtp_parse_status st;
	unsigned allowed = s->esmtp ? SMTP_PARSE_PARAM_NOTIFY | SMTP_PARSE_PARAM_ORCPT : 0;

	if (t == NULL) {
		session_client_error(s, R_NEED_MAIL);
		return;
	}
	if (t->bdat_used) {
		/* RFC 3030 3: the envelope is closed once content began (the backend has DATA). */
		session_client_error(s, R_BDAT_RCPT_MIX);
		return;
	}
	if (t->ftx.nrcpts >= s->lim->max_recipients) {
		session_reply(s, R_TOO_MANY_RCPTS);
		return;
	}
	st = smtp_parse_rcpt(cmd->args, cmd->argslen, allowed,
	    (t->mail.params & SMTP_PARSE_PARAM_SMTPUTF8) != 0, &t->rcpt);
	if (st != SMTP_PARSE_OK) {
		session_client_error(s, st == SMTP_PARSE_UNKNOWN_PARAM ? R_PARAM_UNKNOWN :
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
	t->rcpt_attempts++;
	buf_reset(&t->rcpt_params);
	smtp_parse_rcpt_params(&t->rcpt, &t->rcpt_params);
	t->ftx.rcpt_params_cur = t->rcpt_params.data ? t->rcpt_params.data : "";
	session_run_stage(s, FILTER_STAGE_RCPT, t->rcpt_addr, rcpt_proceed);
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
		session_client_error(s, R_UNKNOWN_CMD);
		return;
	}
	if (st != SMTP_PARSE_OK) {
		if (cmd.verb == SMTP_PARSE_VERB_BDAT) {
			session_reply(s, R_BDAT_SYNTAX);
			session_close(s);
			return;
		}
		session_client_error(s, syntax_reply(cmd.verb));
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
		smtp_data_data(s);
		break;
	case SMTP_PARSE_VERB_BDAT:
		smtp_data_bdat(s, &cmd);
		break;
	case SMTP_PARSE_VERB_RSET:
		session_txn_reset(s);
		session_reply(s, R_RSET);
		break;
	case SMTP_PARSE_VERB_NOOP:
		session_reply(s, R_NOOP);
		break;
	case SMTP_PARSE_VERB_QUIT:
		session_reply_close(s, R_BYE);
		break;
	case SMTP_PARSE_VERB_VRFY:
		session_reply(s, R_VRFY);
		break;
	case SMTP_PARSE_VERB_HELP:
		session_reply(s, R_HELP);
		break;
	case SMTP_PARSE_VERB_STARTTLS:
		smtp_auth_starttls(s);
		break;
	case SMTP_PARSE_VERB_AUTH:
		smtp_auth_cmd(s, &cmd);
		break;
	case SMTP_PARSE_VERB_EXPN:
	default:
		session_client_error(s, R_NOT_IMPLEMENTED);
		break;
	}
}

/*
 * session_frame_line - frame the next line of at most r->max_line octets at the
 * front of in.  Returns false when in is empty; else *st_r, the line (into
 * in's first chunk, valid until in is drained) and how many octets to drain.
 * *more_r tells whether input remains after those octets.
 */
bool
session_frame_line(struct smtp_parse_reader *r, struct evbuffer *in, enum smtp_parse_line_status *st_r,
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

/* read_command - frame and run one command; false when more input is needed */
static bool
read_command(struct session *s, struct evbuffer *in)
{
	size_t linelen, consumed;
	const char *line;
	enum smtp_parse_line_status st;
	bool more;

	if (!session_frame_line(&s->reader, in, &st, &line, &linelen, &consumed, &more))
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
		session_client_error(s, R_CMD_TOO_LONG);
		return true;
	case SMTP_PARSE_LINE_BARE_NEWLINE:
		evbuffer_drain(in, consumed);
		session_client_error(s, R_BARE_NEWLINE_CMD);
		return true;
	case SMTP_PARSE_LINE_NUL:
		evbuffer_drain(in, consumed);
		session_client_error(s, R_NUL_CMD);
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
	while (s->wait == SESSION_WAIT_NONE) {
		size_t before = evbuffer_get_length(in);

		if (output_over(s))
			break;
		if (s->state == S_DATA || s->state == S_BDAT) {
			bool done = s->state == S_DATA ? smtp_data_read(s, in) :
			    smtp_data_read_bdat(s, in);

			s->block_octets += before - evbuffer_get_length(in);
			if (!done) {
				if (s->block_octets >= SESSION_DATA_BLOCK)
					session_rearm(s);	/* a whole block came in time */
				break;
			}
			if (s->state == S_DATA) {
				s->state = S_CMD;
				session_rearm(s);
				smtp_data_end(s);
			} else {
				smtp_data_chunk_done(s);
				session_rearm(s);
			}
		} else if (s->state == S_CMD) {
			if (!read_command(s, in))
				break;
			session_rearm(s);	/* a whole line: the next one's clock starts */
		} else if (s->state == S_AUTH) {
			if (!smtp_auth_read_line(s, in))
				break;
			session_rearm(s);
		} else {
			break;
		}
	}
	s->in_process = false;
	session_flush_soon(s);
}

/* session_reading - start or stop reading the client's socket */
static void
session_reading(struct session *s, bool on)
{
	if (s->sin != NULL) {
		if (on)
			sockin_enable(s->sin);
		else
			sockin_disable(s->sin);
	} else if (on) {
		bufferevent_enable(s->bev, EV_READ);
	} else {
		bufferevent_disable(s->bev, EV_READ);
	}
}

/*
 * output_over - the socket left more than max_output octets of our replies
 * queued: the client does not read.  Stop reading it (its own sends then
 * fill the kernel's buffers) until they drained (session_write_cb), or end
 * it at its command_timeout (deadline_cb).
 */
static bool
output_over(struct session *s)
{
	size_t queued = evbuffer_get_length(bufferevent_get_output(s->bev));

	if (queued <= s->lim->max_output)
		return false;
	log_info("id=%s event=output_full client=%s queued=%zu max=%zu", s->idstr, s->addr, queued,
	    s->lim->max_output);
	session_reading(s, false);
	session_enter_wait(s, SESSION_WAIT_OUTPUT);
	return true;
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

/* session_read_cb - client input */
void
session_read_cb(struct bufferevent *bev, void *arg)
{
	struct session *s = arg;

	if (s->state == S_PROXY) {
		smtp_proxy_read(s, bufferevent_get_input(bev));
		/* What came with the header is the client's: on as any input. */
		if (s->state == S_PROXY || evbuffer_get_length(bufferevent_get_input(bev)) == 0)
			return;
	}
	if (s->state == S_DEAD || s->state == S_CLOSING) {
		/* Nothing more is read as a command; keep the buffer from growing. */
		struct evbuffer *in = bufferevent_get_input(bev);

		evbuffer_drain(in, evbuffer_get_length(in));
		return;
	}
	if (s->state == S_GREET_PAUSE) {
		log_info("id=%s event=greet_pause_violation client=%s", s->idstr, s->addr);
		session_interrupt(s, R_GREET_PAUSE);
		return;
	}
	if (s->state == S_CMD && pipeline_flooded(s, bufferevent_get_input(bev))) {
		log_info("id=%s event=pipeline_flood client=%s", s->idstr, s->addr);
		session_interrupt(s, R_PIPELINE_FLOOD);
		return;
	}
	if (s->wait == SESSION_WAIT_NONE && !s->in_process)
		session_process(s);
}

/* session_write_cb - output drained */
void
session_write_cb(struct bufferevent *bev, void *arg)
{
	struct session *s = arg;

	/* The reaper waits for whatever is still on its way (reap_cb). */
	if (s->state == S_CLOSING) {
		session_reap(s);
		return;
	}
	if (s->wait == SESSION_WAIT_OUTPUT &&
	    evbuffer_get_length(bufferevent_get_output(s->bev)) == 0) {
		/* The client read its replies: go on with what it sent meanwhile. */
		session_reading(s, true);
		if (session_wait_over(s))
			session_continue(s);
	}
}

/* session_event_cb - EOF, error, timeout */
void
session_event_cb(struct bufferevent *bev, short what, void *arg)
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
		smtp_auth_tls_established(s);
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
		/* Writing made no progress for command_timeout: the client does not read. */
		log_info("id=%s event=timeout client=%s state=%s", s->idstr, s->addr,
		    (what & BEV_EVENT_WRITING) ? "output" : session_state_name(s));
		session_reap(s);
		return;
	}
	if (s->state == S_DATA || s->state == S_BDAT)
		log_info("id=%s event=lost_connection client=%s state=data", s->idstr, s->addr);
	if (s->state == S_PROXY) {
		smtp_proxy_refuse(s, "connection closed before a whole PROXY header");
		return;
	}
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
			session_reply_custom(s, res->reply.code, res->reply.ecode, res->reply.text);
		else
			session_reply(s, R_CONNECT_REFUSED);
		session_close(s);
		return;
	}
	s->state = S_CMD;
	session_reply(s, R_BANNER);
}

/* greet_cb - greet_pause passed quietly */
static void
greet_cb(evutil_socket_t fd, short what, void *arg)
{
	struct session *s = arg;

	if (s->state != S_GREET_PAUSE)
		return;
	session_run_stage(s, FILTER_STAGE_CONNECT, NULL, connect_proceed);
	session_flush(s);
}

/* session_greet - the greet pause, if any, then the CONNECT filters and the banner */
static void
session_greet(struct session *s)
{
	const struct conf_nets *ex = &s->lconf->greet_pause_exempt;

	if (s->lconf->greet_pause > 0 &&
	    !cidr_any(ex->v, ex->n, (const struct sockaddr *)&s->fsess.client_sa)) {
		struct timeval tv = { s->lconf->greet_pause, 0 };

		s->ev = evtimer_new(loop_base(s->loop), greet_cb, s);
		evtimer_add(s->ev, &tv);
		return;
	}
	session_run_stage(s, FILTER_STAGE_CONNECT, NULL, connect_proceed);
	session_flush_soon(s);
}

/* session_rdns_cancel - the session ends during its reverse lookup: drop it */
static void
session_rdns_cancel(struct session *s)
{
	if (s->wait != SESSION_WAIT_RDNS)
		return;
	rdns_cancel(s->rdns);
	s->rdns = NULL;
	session_enter_wait(s, SESSION_WAIT_NONE);
}

/* session_rdns_record - the client's name (or "unknown") for the session and its log */
static void
session_rdns_record(struct session *s, const struct rdns_answer *a)
{
	unsigned long long ms = now_ms() - s->rdns_start_ms;

	if (a->name)
		str_copy(s->client_name, a->name, sizeof(s->client_name));
	if (a->ptr) {
		str_copy(s->client_ptr, a->ptr, sizeof(s->client_ptr));
		s->fsess.client_ptr = s->client_ptr;
	}
	s->fsess.client_rdns = rdns_result_name(a->result);
	log_info("id=%s event=rdns client=%s name=%s ptr=%s result=%s delay=%llu.%03llu",
	    s->idstr, s->addr, s->client_name, a->ptr ? s->client_ptr : "none",
	    rdns_result_name(a->result), ms / 1000, ms % 1000);
}

/* session_rdns_done - the lookup is over: greet, or the drain's 421 */
static void
session_rdns_done(void *arg, const struct rdns_answer *a)
{
	struct session *s = arg;

	s->rdns = NULL;
	session_rdns_record(s, a);
	if (!session_wait_over(s))
		return;
	if (s->shutdown_owed)
		session_interrupt(s, R_SHUTDOWN);
	else
		session_greet(s);
	session_flush_soon(s);
}

/*
 * session_rdns_start - the reverse lookup at connect ([listener]
 * reverse_lookup), when the client has an IP address; false if none runs
 * (the name stays "unknown")
 */
static bool
session_rdns_start(struct session *s)
{
	const struct sockaddr *sa = (const struct sockaddr *)&s->fsess.client_sa;
	struct rdns_answer known;
	struct resolver *res;

	if (!s->lconf->reverse_lookup || (sa->sa_family != AF_INET && sa->sa_family != AF_INET6))
		return false;
	s->rdns_start_ms = now_ms();
	if (rdns_known(sa, &known)) {
		session_rdns_record(s, &known);
		return false;
	}
	if ((res = loop_resolver(s->loop, s->conf)) == NULL) {
		s->fsess.client_rdns = rdns_result_name(RDNS_TEMPFAIL);
		return false;
	}
	s->rdns = rdns_start(res, sa, session_rdns_done, s);
	if (s->rdns == NULL) {
		log_info("id=%s event=rdns client=%s name=unknown ptr=none result=error", s->idstr,
		    s->addr);
		s->fsess.client_rdns = rdns_result_name(RDNS_TEMPFAIL);
		return false;
	}
	session_enter_wait(s, SESSION_WAIT_RDNS);
	return true;
}

/*
 * session_local_addr - where the client connected, for the filters.  A
 * bufferevent with no socket (a unit test's pair: fd -1) or a socket that
 * is not IP leaves the zeroed local_sa, "" and port 0.
 */
static void
session_local_addr(struct session *s, evutil_socket_t fd)
{
	struct sockaddr_storage ss;
	socklen_t len = sizeof(ss);

	s->fsess.local_addr = s->local_addr;
	if (fd < 0 || getsockname(fd, (struct sockaddr *)&ss, &len) != 0 ||
	    !sockaddr_text((struct sockaddr *)&ss, s->local_addr, sizeof(s->local_addr)))
		return;
	s->fsess.local_sa = ss;
	s->fsess.local_port = sockaddr_port((const struct sockaddr *)&ss);
}

/*
 * session_log_connect - the event=connect line, once: when the client is
 * known and the concurrency limits let it in, or with the refusal that a
 * flood's summary logs (a refusal left out leaves no line at all)
 */
void
session_log_connect(struct session *s)
{
	if (s->connect_logged)
		return;
	s->connect_logged = true;
	log_info("id=%s event=connect client=%s listener=%s%s", s->idstr, s->addr,
	    s->lconf->name, s->connect_extra);
}

/*
 * session_limit - the listener's client_limit and network_limit: count the
 * session (session_free gives the slots back), or 421 and close at once,
 * before any DNS or filter, so that a flood from one address costs little
 */
static bool
session_limit(struct session *s)
{
	const struct conf_listener *lc = s->lconf;
	struct connlimit_policy p = {
		.client_limit = lc->client_limit, .network_limit = lc->network_limit,
		.prefix4 = lc->network_prefix4, .prefix6 = lc->network_prefix6,
		.exempt = lc->limit_exempt.v, .nexempt = lc->limit_exempt.n,
	};
	struct connlimit_refusal ref;
	enum connlimit_result r;
	char text[128], more[32] = "";
	bool client;

	if (p.client_limit == 0 && p.network_limit == 0) {
		session_log_connect(s);
		return true;
	}
	r = connlimit_acquire(connlimit_listener(lc->name), &p,
	    (const struct sockaddr *)&s->fsess.client_sa, &s->climit, &ref);
	if (r == CONNLIMIT_OK || r == CONNLIMIT_EXEMPT) {
		session_log_connect(s);
		return true;
	}
	client = r == CONNLIMIT_CLIENT;
	/* A flood logs a refusal a second, counting those left out, which log nothing. */
	if (ref.suppressed > 0)
		snprintf(more, sizeof(more), " suppressed=%u", ref.suppressed);
	if (ref.log) {
		session_log_connect(s);
		log_info("id=%s event=%s client=%s count=%u limit=%u%s", s->idstr,
		    client ? "client_limit" : "network_limit", s->addr, ref.count,
		    client ? p.client_limit : p.network_limit, more);
	} else {
		s->quiet = true;
	}
	if (client)
		snprintf(text, sizeof(text), "Too many connections from [%s]", s->addr);
	else
		str_copy(text, "Too many connections from your network", sizeof(text));
	session_reply_custom(s, 421, "4.7.0", text);
	session_close(s);
	return false;
}

/*
 * session_connected - the client is known (its socket, or a PROXY header):
 * the concurrency limits, its reverse name, the greet pause, the CONNECT
 * filters and the banner
 */
void
session_connected(struct session *s)
{
	s->state = S_GREET_PAUSE;
	session_rearm(s);
	if (!session_limit(s))
		return;
	if (!session_rdns_start(s))
		session_greet(s);
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
	if (!sockaddr_text(sa, s->addr, sizeof(s->addr)))
		str_copy(s->addr, "unknown", sizeof(s->addr));
	memcpy(&s->fsess.client_sa, sa, salen < sizeof(s->fsess.client_sa) ? salen :
	    sizeof(s->fsess.client_sa));
	s->fsess.id = s->id;
	s->fsess.listener = s->lconf->name;
	s->fsess.role = s->lconf->role;
	s->fsess.client_addr = s->addr;
	s->fsess.client_port = sockaddr_port(sa);
	session_local_addr(s, bufferevent_getfd(bev));
	str_copy(s->client_name, "unknown", sizeof(s->client_name));
	s->fsess.client_name = s->client_name;
	s->fsess.conf = s->conf;
	smtp_parse_reader_init(&s->reader, s->lim->max_command_line);
	s->bev = bev;
	s->pending = evbuffer_new();
	s->deadline = evtimer_new(loop_base(loop), deadline_cb, s);
	if (s->pending == NULL || s->deadline == NULL)
		fatal("evbuffer_new failed");
	bufferevent_setcb(s->bev, session_read_cb, session_write_cb, session_event_cb, s);
	if (bufferevent_openssl_get_ssl(bev) == NULL && bufferevent_getfd(bev) >= 0)
		s->sin = sockin_new(loop_base(loop), bev, SESSION_INPUT_HIGH, session_read_cb,
		    session_event_cb, s);
	else
		bufferevent_setwatermark(s->bev, EV_READ, 0, SESSION_INPUT_HIGH);
	session_io_timeouts(s, bufferevent_openssl_get_ssl(bev) != NULL);
	session_tls_watermark(s);
	session_rearm(s);
	loop_session_add(loop, s, s->id);
	if (!server_session_begin(loop, s->id, snap, li)) {
		if (!s->lconf->proxy_protocol)	/* else no client is known yet */
			session_log_connect(s);
		log_warn("id=%s event=too_many_sessions client=%s max=%u", s->idstr, s->addr,
		    s->lim->max_sessions);
		bufferevent_enable(s->bev, EV_WRITE);
		session_reply_close(s, R_TOO_MANY_SESSIONS);
		return;
	}
	if (!filter_chain_empty(s->chain))
		s->fstate = filter_state_new(s->chain);
	/*
	 * A plain socket is read by the sockin.  EV_WRITE is on from
	 * bufferevent_socket_new, and the write event is armed only when output
	 * is queued; enabling it again would arm it now, for nothing, at the
	 * price of two epoll_ctl calls.  The TLS bufferevent needs both
	 * directions for its handshake.
	 */
	if (s->sin)
		sockin_enable(s->sin);
	else
		bufferevent_enable(s->bev, EV_READ | EV_WRITE);
	if (s->lconf->proxy_protocol)
		smtp_proxy_start(s);
	else
		session_connected(s);
}
