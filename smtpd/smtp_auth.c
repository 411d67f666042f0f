/*
 * smtp_auth.c - STARTTLS (RFC 3207) and AUTH (RFC 4954) for the SMTP
 * session: the TLS upgrade on the live connection, the SASL exchange, and
 * the credential check on the auth pool.
 *
 * Must never: read plaintext sent after STARTTLS as commands, offer AUTH
 * without TLS, log AUTH data, or keep a password longer than its check.
 */
#include "config.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/bufferevent_ssl.h>
#include <event2/event.h>
#include <openssl/crypto.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>

#include "dsn.h"
#include "log.h"
#include "server.h"
#include "sockin.h"
#include "spool.h"
#include "tls.h"
#include "util.h"
#include "workers.h"
#include "../policy/auth.h"
#include "../policy/state.h"
#include "../policy/sender_login.h"
#include "smtp_session_priv.h"

/* ---- commands ------------------------------------------------------------------------ */

/* smtp_auth_starttls - RFC 3207: 220, then the handshake on the same connection */
void
smtp_auth_starttls(struct session *s)
{
	struct evbuffer *in = bufferevent_get_input(s->bev);
	size_t pending;
	SSL *ssl;

	if (s->lconf->tls != TLS_STARTTLS || s->snap->tls == NULL) {
		session_client_error(s, R_NOT_IMPLEMENTED);
		return;
	}
	if (s->tls_active) {
		session_client_error(s, R_TLS_ACTIVE);
		return;
	}
	ssl = tls_server_ssl_new(s->snap->tls);
	session_reply(s, R_STARTTLS_GO);
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
	session_txn_reset(s);
	free(s->helo);
	s->helo = NULL;
	s->fsess.helo = NULL;
	s->esmtp = false;
	smtp_parse_reader_reset(&s->reader);
	s->bev = sockin_starttls(&s->sin, loop_base(s->loop), s->bev, ssl,
	    BUFFEREVENT_SSL_ACCEPTING, session_read_cb, session_write_cb, session_event_cb, s);
	session_io_timeouts(s, true);
	session_tls_watermark(s);
	s->tls_handshaking = true;
	session_enter_wait(s, SESSION_WAIT_TLS);	/* nothing is read as a command until it is done */
}

/*
 * peer_subject - the subject of the certificate the client presented, as
 * X509_NAME_oneline gives it ("/C=XX/CN=name"), or NULL without one.  Ours
 * to free.  (The listeners do not ask for one today: SSL_VERIFY_NONE.)
 */
static char *
peer_subject(SSL *ssl)
{
#if OPENSSL_VERSION_NUMBER >= 0x30000000L
	X509 *cert = SSL_get1_peer_certificate(ssl);
#else
	X509 *cert = SSL_get_peer_certificate(ssl);
#endif
	char *one, *subject = NULL;

	if (cert == NULL)
		return NULL;
	one = X509_NAME_oneline(X509_get_subject_name(cert), NULL, 0);
	if (one != NULL) {
		subject = xstrdup(one);
		OPENSSL_free(one);
	}
	X509_free(cert);
	return subject;
}

/* smtp_auth_tls_established - the handshake completed (STARTTLS or implicit TLS) */
void
smtp_auth_tls_established(struct session *s)
{
	SSL *ssl = bufferevent_openssl_get_ssl(s->bev);

	s->tls_active = true;
	tls_describe(ssl, s->tls_desc, sizeof(s->tls_desc));
	s->fsess.tls_version = tls_version(ssl);
	s->fsess.tls_cipher = tls_cipher(ssl);
	free(s->tls_peer_subject);	/* a handshake happens once; be safe anyway */
	s->tls_peer_subject = peer_subject(ssl);
	s->fsess.tls_peer_subject = s->tls_peer_subject;
	log_info("id=%s event=tls client=%s tls=\"%s\"", s->idstr, s->addr, s->tls_desc);
	session_io_timeouts(s, false);
	if (s->tls_handshaking) {
		s->tls_handshaking = false;
		if (session_wait_over(s))
			session_continue(s);
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

/* ---- the failed-AUTH counters, in the state store (memory or Redis) -------------------- */

/*
 * A counter call that answers later finds its session by id, as the
 * credential check does: if the session ended or is closing meanwhile, the
 * answer is dropped (the store owns the call itself until it is answered).
 */
struct auth_count {
	uint64_t id;
	struct loop *loop;
	bool failure;		/* a failure was counted; else: the check before the credential check */
	char why[128];
};

static void auth_verify_async(struct session *s);

/* auth_counted - the count of the client's failures is known (or the store failed) */
static void
auth_counted(struct session *s, const struct auth_count *c, const struct state_reply *rep)
{
	const struct conf *conf = s->snap->conf;
	struct state *st = state_get(conf);
	bool over = rep->error == NULL && rep->counts[0].count >= conf->auth_max_failures;

	if (rep->error != NULL)
		log_warn("id=%s event=auth_store_error client=%s store=\"%s\" error=\"%s\" action=%s",
		    s->idstr, s->addr, state_name(st), rep->error,
		    c->failure || state_fail_open(st) ? "pass" : "tempfail");
	if (c->failure) {
		log_info("id=%s event=auth result=failed client=%s failures=%llu reason=\"%s\"",
		    s->idstr, s->addr, rep->error != NULL ? 0ULL :
		    (unsigned long long)rep->counts[0].count, c->why);
		session_client_error(s, R_AUTH_FAILED);
		if (over && s->state != S_CLOSING)
			session_reply_close(s, R_AUTH_BLOCKED);
		return;
	}
	if (over) {
		log_info("id=%s event=auth result=blocked client=%s failures=%llu", s->idstr, s->addr,
		    (unsigned long long)rep->counts[0].count);
		auth_abort(s);
		session_reply_close(s, R_AUTH_BLOCKED);
		return;
	}
	if (rep->error != NULL && !state_fail_open(st)) {
		auth_abort(s);
		session_reply(s, R_AUTH_TEMPFAIL);
		return;
	}
	auth_verify_async(s);
}

/* auth_count_done - a counter call answered on our loop */
static void
auth_count_done(void *arg, const struct state_reply *rep)
{
	struct auth_count *c = arg;
	struct session *s = loop_session_find(c->loop, c->id);

	if (s != NULL && s->wait == SESSION_WAIT_AUTH && session_wait_over(s)) {
		auth_counted(s, c, rep);
		session_continue(s);
	}
	free(c);
}

/*
 * auth_count - count one failure of the client's (failure), or read its
 * count before its credentials are checked; auth_counted goes on, now or
 * once the store answers
 */
static void
auth_count(struct session *s, bool failure, const char *why)
{
	const struct conf *conf = s->snap->conf;
	struct auth_count *c = xcalloc(1, sizeof(*c));
	struct state_reply rep;
	char key[STATE_KEY_MAX];

	c->id = s->id;
	c->loop = s->loop;
	c->failure = failure;
	str_copy(c->why, why != NULL ? why : "bad credentials", sizeof(c->why));
	memcpy(key, "auth:", 5);
	state_client_key(s->addr, key + 5, sizeof(key) - 5);
	if (state_count(state_get(conf), loop_base(s->loop), key, failure ? 1 : 0,
	    conf->auth_failure_window, &rep, auth_count_done, c) != NULL) {
		session_enter_wait(s, SESSION_WAIT_AUTH);
		return;
	}
	auth_counted(s, c, &rep);
	free(c);
}

/* auth_failed - count a failure for the client's address; 421 when it is over */
static void
auth_failed(struct session *s, const char *why)
{
	auth_count(s, true, why);
}

/*
 * auth_filtered - after the AUTH stage: a filter's reject or tempfail takes
 * the login back (the client hears the filter's reply and is not
 * authenticated); anything else lets it stand
 */
static void
auth_filtered(struct session *s, const struct filter_result *res)
{
	char uesc[600];

	log_escape(uesc, sizeof(uesc), s->auth_user, strlen(s->auth_user));
	if (session_verdict_stops(s, res)) {
		log_info("id=%s event=auth result=refused client=%s user=%s filter=%s", s->idstr,
		    s->addr, uesc, res->filter ? res->filter : "?");
		free(s->auth_user);
		s->auth_user = NULL;
		s->fsess.auth_user = NULL;
		s->fsess.auth_method = NULL;
		return;
	}
	log_info("id=%s event=auth result=ok client=%s user=%s", s->idstr, s->addr, uesc);
	session_reply(s, R_AUTH_OK);
}

/* auth_done - the worker's verdict, back on our loop */
static void
auth_done(void *arg)
{
	struct auth_job *j = arg;
	struct session *s = loop_session_find(j->loop, j->id);

	if (s == NULL || !session_wait_over(s)) {
		auth_job_free(j);
		return;
	}
	switch (j->result) {
	case AUTH_OK:
		/* The filters' AUTH stage sees the login; it holds once they passed it. */
		s->auth_user = xstrdup(j->user);
		s->fsess.auth_user = s->auth_user;
		s->fsess.auth_method = s->auth_mech;
		session_run_stage(s, FILTER_STAGE_AUTH, s->auth_user, auth_filtered);
		break;
	case AUTH_FAIL:
		auth_failed(s, j->err);
		break;
	case AUTH_TEMPFAIL:
		log_warn("id=%s event=auth result=tempfail client=%s reason=\"%s\"", s->idstr,
		    s->addr, j->err ? j->err : "backend");
		session_reply(s, R_AUTH_TEMPFAIL);
		break;
	}
	auth_job_free(j);
	session_continue(s);
}

/* auth_verify_async - hand the credentials to the auth pool */
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
	session_enter_wait(s, SESSION_WAIT_AUTH);
	if (!workers_submit(loop_workers(s->loop, SERVER_POOL_AUTH), auth_work, auth_done, j)) {
		auth_job_free(j);
		session_enter_wait(s, SESSION_WAIT_NONE);
		session_reply(s, R_AUTH_TEMPFAIL);
		session_continue(s);
	}
}

/* auth_continue - act on one step of the exchange */
static void
auth_continue(struct session *s, enum auth_sasl_status st, const char *challenge)
{
	switch (st) {
	case AUTH_SASL_CHALLENGE:
		evbuffer_add_printf(session_out(s), "334 %s\r\n", challenge ? challenge : "");
		s->state = S_AUTH;
		return;
	case AUTH_SASL_DONE:
		s->state = S_CMD;
		auth_count(s, false, NULL);	/* a blocked client's credentials are never checked */
		return;
	case AUTH_SASL_REFUSED:
		auth_abort(s);
		auth_failed(s, "unusable credentials");
		return;
	case AUTH_SASL_CANCEL:
		auth_abort(s);
		session_reply(s, R_AUTH_CANCEL);
		return;
	case AUTH_SASL_BAD_BASE64:
	case AUTH_SASL_MALFORMED:
		auth_abort(s);
		session_client_error(s, R_AUTH_BASE64);
		return;
	}
}

/* smtp_auth_cmd - AUTH mechanism [initial-response] */
void
smtp_auth_cmd(struct session *s, const struct smtp_parse_cmd *cmd)
{
	struct smtp_parse_auth a;
	const char *challenge = NULL;
	char *initial = NULL;
	enum auth_sasl_status st;
	int mech;

	/*
	 * Protocol, not policy: AUTH is not advertised on mx (nor without a
	 * credential backend), and a command for an extension never offered is
	 * refused before any credential is read.  port25's own AUTH refusal
	 * (policy/port25.c) is the policy's statement of the same.
	 */
	if (s->lconf->role == ROLE_MX || s->snap->auth == NULL) {
		session_client_error(s, R_AUTH_NOT_OFFERED);
		return;
	}
	if (!s->tls_active) {
		session_client_error(s, R_TLS_REQUIRED);	/* credentials never cross in clear */
		return;
	}
	if (s->helo == NULL) {
		session_client_error(s, R_NEED_HELO);
		return;
	}
	if (s->auth_user != NULL) {
		session_client_error(s, R_AUTH_ALREADY);
		return;
	}
	if (s->txn != NULL) {
		session_client_error(s, R_AUTH_IN_TXN);
		return;
	}
	if (smtp_parse_auth(cmd->args, cmd->argslen, &a) != SMTP_PARSE_OK) {
		/* A bad initial response is bad base64 (RFC 4954 4: 501 5.5.2). */
		session_client_error(s, memchr(cmd->args, ' ', cmd->argslen) ? R_AUTH_BASE64 : R_SYNTAX);
		return;
	}
	if ((mech = auth_mech_lookup(a.mech)) < 0) {
		session_client_error(s, R_AUTH_MECH);
		return;
	}
	if (a.initial)
		initial = xstrndup(a.initial, a.initiallen);
	s->sasl = auth_sasl_new((enum auth_mech)mech);
	s->auth_mech = auth_mech_name((enum auth_mech)mech);
	smtp_parse_reader_init(&s->auth_reader, SESSION_AUTH_LINE_MAX);
	st = auth_sasl_start(s->sasl, initial, &challenge);
	if (initial) {
		OPENSSL_cleanse(initial, strlen(initial));
		free(initial);
	}
	auth_continue(s, st, challenge);
}

/* smtp_auth_read_line - one SASL response line; false when more input is needed */
bool
smtp_auth_read_line(struct session *s, struct evbuffer *in)
{
	size_t linelen, consumed;
	const char *line, *challenge = NULL;
	enum smtp_parse_line_status st;
	bool more;
	char *copy;

	if (!session_frame_line(&s->auth_reader, in, &st, &line, &linelen, &consumed, &more))
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
		session_client_error(s, R_AUTH_LINE_TOO_LONG);
		return true;
	default:
		evbuffer_drain(in, consumed);
		auth_abort(s);
		session_client_error(s, R_AUTH_BASE64);
		return true;
	}
}
