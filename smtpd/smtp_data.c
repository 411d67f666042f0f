/*
 * smtp_data.c - DATA and BDAT (RFC 3030) for the SMTP session, and the end
 * of a message: filters, our headers, the relay, per-recipient verdicts and
 * the RFC 3464 DSN for a mixed LMTP result.
 *
 * Must never: answer 250 before the backend did, or let the backend see a
 * message the client did not finish (the reader ends only at CRLF.CRLF).
 */
#include "config.h"

#include <assert.h>
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

#include "dsn.h"
#include "log.h"
#include "server.h"
#include "spool.h"
#include "tls.h"
#include "util.h"
#include "workers.h"
#include "../policy/auth.h"
#include "smtp_session_priv.h"

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
}

/* smtp_data_data - DATA */
void
smtp_data_data(struct session *s)
{
	struct txn *t = s->txn;

	if (t == NULL) {
		session_client_error(s, R_NEED_MAIL);
		return;
	}
	if (t->bdat_used) {
		session_client_error(s, R_BDAT_DATA_MIX);
		return;
	}
	if (t->ftx.nrcpts == 0) {
		session_client_error(s, R_NEED_RCPT);
		return;
	}
	content_begin(s, DATA_READER_DOT);
	if (t->relay != NULL)	/* NULL: discarded, the backend hears nothing */
		relay_data_begin(t->relay);
	session_reply(s, R_DATA_GO);
	s->state = S_DATA;
}

/* smtp_data_bdat - BDAT size [LAST] */
void
smtp_data_bdat(struct session *s, const struct smtp_parse_cmd *cmd)
{
	struct txn *t = s->txn;
	uint64_t size;
	bool last;

	if (smtp_parse_bdat(cmd->args, cmd->argslen, &size, &last) != SMTP_PARSE_OK) {
		/* We cannot know how many octets follow: the session is lost. */
		session_reply(s, R_BDAT_SYNTAX);
		session_close(s);
		return;
	}
	s->state = S_BDAT;
	s->bdat_left = size;
	s->bdat_last = last;
	if (t == NULL || t->ftx.nrcpts == 0) {
		/* RFC 3030: read the chunk, throw it away, then refuse. */
		s->bdat_discard = t == NULL ? R_NEED_MAIL : R_NEED_RCPT;
		return;
	}
	s->bdat_discard = R_MAX;
	if (!t->bdat_used) {
		t->bdat_used = true;
		content_begin(s, DATA_READER_RAW);
		if (t->relay != NULL)
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

/* smtp_data_read - feed DATA content; true when the terminator was seen */
bool
smtp_data_read(struct session *s, struct evbuffer *in)
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

/* smtp_data_read_bdat - consume the current chunk; true when it is complete */
bool
smtp_data_read_bdat(struct session *s, struct evbuffer *in)
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

/*
 * content_refused - the message broke a content rule: end the transaction;
 * too big is not counted as a client error, the others are
 */
static void
content_refused(struct session *s, enum data_reader_error e)
{
	session_txn_end(s, TXN_REJECTED, data_reader_strerror(e));
	if (e == DATA_READER_TOO_BIG)
		session_reply(s, R_SIZE_EXCEEDED);
	else
		session_client_error(s, content_error_reply(e));
}

/* smtp_data_chunk_done - a complete chunk: acknowledge, or end the message */
void
smtp_data_chunk_done(struct session *s)
{
	struct txn *t = s->txn;
	enum data_reader_error e;
	char text[64];

	s->state = S_CMD;
	if (s->bdat_discard != R_MAX) {
		session_client_error(s, s->bdat_discard);
		return;
	}
	if (s->bdat_last) {
		data_reader_finish(&t->dr, &t->out);
		spool_flush(s);
		smtp_data_end(s);
		return;
	}
	e = data_reader_error(&t->dr);
	if (e != DATA_READER_OK) {
		/* Refuse now; the rest of this message's chunks are thrown away. */
		content_refused(s, e);
		return;
	}
	snprintf(text, sizeof(text), "%llu octets received",
	    (unsigned long long)data_reader_wire_octets(&t->dr));
	session_reply_custom(s, 250, "2.0.0", text);
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

/*
 * build_head - Received, then the filtered headers, then the empty line:
 * the message's own, or the one owed before a body that started at a
 * malformed line (or replaced by a filter); none only when there is no body
 * at all.  Return-Path (Maildir) comes after the final stage (data_final).
 */
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
	rfc5322_date(date, sizeof(date));
	/* RFC 5321 4.1.3: an IPv6 address literal is tagged "IPv6:". */
	buf_printf(&t->head, "Received: from %s (%s [%s%s])\r\n", s->helo, s->fsess.client_name,
	    s->fsess.client_sa.ss_family == AF_INET6 ? "IPv6:" : "", s->addr);
	if (s->tls_active)
		buf_printf(&t->head, "\t(using %s)\r\n", s->tls_desc);
	buf_printf(&t->head, "\tby %s (portier) with %s id %s", s->conf->hostname, proto,
	    t->ftx.queue_id);
	if (t->ftx.nrcpts == 1)
		buf_printf(&t->head, "\r\n\tfor <%s>", t->ftx.rcpts[0]);
	buf_printf(&t->head, ";\r\n\t%s\r\n", date);
	if (t->ftx.quarantine)
		buf_printf(&t->head, "X-Portier-Quarantine: %s\r\n", t->ftx.quarantine);
	filter_compose_headers(&t->ftx, s->conf->hostname, &t->head);
	if (had_separator || spool_size(t->spool) > t->body_off)
		buf_puts(&t->head, "\r\n");
}

/*
 * dsn_failed - the DSN owed for the refused recipients could not be sent:
 * 451 for the whole message, so the client keeps it and retries; the
 * recipients the backend took get it twice (logged), none loses it
 */
static void
dsn_failed(struct session *s, int code, const char *ecode, const char *why)
{
	struct txn *t = s->txn;

	log_warn("id=%s event=dsn_failed to=<%s> reply=\"%d %s %s\" delivered=%zu "
	    "duplicate_on_retry=%zu", s->idstr, t->from, code, ecode, why, t->delivered,
	    t->delivered);
	session_reply(s, R_DSN_FAILED);
	session_txn_end(s, TXN_TEMPFAIL, "dsn failed");
}

/* dsn_data_relayed - the DSN went out (or not): now answer the client */
static void
dsn_data_relayed(void *arg, const struct relay_result *res, size_t n)
{
	struct session *s = arg;
	struct txn *t = s->txn;

	if (!session_wait_over(s))
		return;
	if (n >= 1 && res[0].code / 100 == 2) {
		log_info("id=%s event=dsn_sent to=<%s> reply=\"%d %s\"", s->idstr, t->from,
		    res[0].code, res[0].ecode);
		session_reply_result(s, &t->final);
		session_txn_end(s, TXN_DELIVERED, t->final.text);
	} else {
		dsn_failed(s, n ? res[0].code : 0, n ? res[0].ecode : "", n ? res[0].text : "");
	}
	session_continue(s);
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
	if (!t->dsn_rcpt_sent) {
		/* MAIL FROM:<> accepted: now the one recipient. */
		t->dsn_rcpt_sent = true;
		relay_rcpt(t->dsn_relay, t->from, "", dsn_step, s);
		return;
	}
	relay_data(t->dsn_relay, &t->dsn_head, t->dsn_spool, 0, dsn_data_relayed, s);
}

/* send_dsn - report the refused recipients to the sender, then answer */
static void
send_dsn(struct session *s, const struct relay_result *res, size_t n)
{
	struct txn *t = s->txn;
	/* conf.c sees to it: a DSN never goes to the LMTP backend, which delivers no remote sender. */
	const struct conf_relay *target = &s->conf->bounce_relay;
	struct dsn_rcpt *dr = xcalloc(n, sizeof(*dr));
	struct dsn_info info;
	struct buf msg, hdr;
	const char *err;
	size_t i, nd = 0;

	assert(target->kind == RELAY_SMTP);
	buf_init(&msg);
	buf_init(&hdr);
	buf_reserve(&hdr, t->body_off);
	if (spool_pread(t->spool, hdr.data, t->body_off, 0) == (ssize_t)t->body_off)
		hdr.len = t->body_off;
	for (i = 0; i < n && i < t->ftx.nrcpts; i++) {
		const struct rcpt_info *ri = &t->rinfo[i];

		if (res[i].code / 100 != 5)
			continue;	/* delivered (data_relayed sends no deferral here) */
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
		session_reply_result(s, &t->final);
		session_txn_end(s, TXN_DELIVERED, t->final.text);
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
		dsn_failed(s, 451, "4.3.0", err);
		return;
	}
	buf_free(&msg);
	t->dsn_relay = relay_txn_new(loop_relay(s->loop), s->conf, target, s->idstr);
	if (s->snap->tls_client)
		relay_txn_set_tls(t->dsn_relay, s->snap->tls_client);
	session_enter_wait(s, SESSION_WAIT_RELAY);
	relay_mail(t->dsn_relay, "", "", dsn_step, s);
}

/* rcpt_tally - the per-recipient verdicts by class (anything not 2xx or 5xx counts as transient) */
struct rcpt_tally {
	const struct relay_result *ok, *temp, *perm;	/* the first of each */
	size_t nok, ntemp, nperm;
};

/* rcpt_tally - sort the backend's per-recipient verdicts into t */
static void
rcpt_tally(const struct relay_result *res, size_t n, struct rcpt_tally *t)
{
	size_t i;

	memset(t, 0, sizeof(*t));
	for (i = 0; i < n; i++) {
		const struct relay_result *r = &res[i];

		if (r->code / 100 == 2) {
			t->ok = t->ok ? t->ok : r;
			t->nok++;
		} else if (r->code / 100 == 5) {
			t->perm = t->perm ? t->perm : r;
			t->nperm++;
		} else {
			t->temp = t->temp ? t->temp : r;
			t->ntemp++;
		}
	}
}

/*
 * mixed_tempfail - some recipients have the message, others do not: 451 for
 * all of it.  The client retries the whole message, so the delivered ones
 * get it twice: a duplicate, never a loss.
 */
static void
mixed_tempfail(struct session *s, const struct rcpt_tally *t)
{
	log_warn("id=%s event=lmtp_mixed_tempfail reason=%s delivered=%zu deferred=%zu refused=%zu "
	    "duplicate_on_retry=%zu", s->idstr, t->ntemp ? "deferred_recipients" : "lmtp_mixed",
	    t->nok, t->ntemp, t->nperm, t->nok);
	session_reply(s, R_LMTP_MIXED);
	session_txn_end(s, TXN_TEMPFAIL, "mixed recipient results");
}

/*
 * data_verdict - the backend's verdict on the message.  Nothing acknowledged
 * is lost and nothing transient becomes permanent: a refusal (5xx) of some
 * recipients earns a DSN, a deferral (4xx) never does (we keep no queue to
 * retry it, and "Action: failed" would lose it), so 2xx with 4xx is a 451
 * for the whole message.  Maildir fails only with 4xx.
 */
static void
data_verdict(struct session *s, const struct relay_result *res, size_t n)
{
	struct txn *t = s->txn;
	struct rcpt_tally ty;

	assert(n > 0);	/* one result per recipient, or one */
	rcpt_tally(res, n, &ty);
	if (ty.ok && (ty.temp || ty.perm)) {
		t->final = *ty.ok;
		if (ty.temp || s->conf->lmtp_mixed == LMTP_MIXED_TEMPFAIL) {
			mixed_tempfail(s, &ty);
		} else if (!dsn_owed(t->from)) {
			log_warn("id=%s event=dsn_suppressed reason=null_sender", s->idstr);
			session_reply_result(s, ty.ok);
			session_txn_end(s, TXN_DELIVERED, ty.ok->text);
		} else {
			t->delivered = ty.nok;
			send_dsn(s, res, n);
			return;
		}
	} else if (ty.ok) {
		session_reply_result(s, ty.ok);
		session_txn_end(s, TXN_DELIVERED, ty.ok->text);
	} else {
		const struct relay_result *r = ty.temp ? ty.temp : ty.perm;

		session_reply_result(s, r);
		session_txn_end(s, r->code / 100 == 5 ? TXN_REJECTED : TXN_TEMPFAIL, r->text);
	}
}

/*
 * data_relayed - the backend answered the message: its verdict, per
 * recipient of the transaction (smtp_envelope_results puts back those an
 * edited envelope's replay refused)
 */
static void
data_relayed(void *arg, const struct relay_result *res, size_t n)
{
	struct session *s = arg;
	struct relay_result *all;

	if (!session_wait_over(s))
		return;
	all = smtp_envelope_results(s, res, &n);
	data_verdict(s, all ? all : res, n);
	free(all);
	session_continue(s);
}

static void data_final(struct session *s, const struct filter_result *res);

/* data_verdict_ends - a reject, tempfail or discard at end of data: the transaction ends here */
static bool
data_verdict_ends(struct session *s, const struct filter_result *res)
{
	if (session_verdict_stops(s, res)) {
		session_txn_end(s, res->verdict == FILTER_TEMPFAIL ? TXN_TEMPFAIL : TXN_REJECTED,
		    res->reply.text);
		return true;
	}
	if (session_txn_discarded(s, res)) {
		session_reply(s, R_DISCARDED);
		session_txn_end(s, TXN_DISCARDED, "discarded");
		return true;
	}
	return false;
}

/* data_filtered - after the DATA filters: compose and relay */
static void
data_filtered(struct session *s, const struct filter_result *res)
{
	struct txn *t = s->txn;
	size_t i;

	if (data_verdict_ends(s, res))
		return;
	if (res->verdict == FILTER_QUARANTINE && t->ftx.quarantine == NULL)
		t->ftx.quarantine = xstrdup(res->filter ? res->filter : "filter");
	for (i = 0; i < t->ftx.nedits; i++) {
		const struct filter_edit *e = &t->ftx.edits[i];

		if (e->kind == EDIT_REPLACE_BODY) {
			const char *err;
			struct spool *nb = spool_new(s->lim->spool_memory, NULL);

			if (!spool_write(nb, e->value, e->value_len, &err)) {
				spool_free(nb);
				session_reply(s, R_LOCAL_ERROR);
				session_txn_end(s, TXN_TEMPFAIL, err);
				return;
			}
			spool_free(t->spool);
			t->spool = nb;
			t->body_off = 0;
		}
	}
	/* Sender and recipients: the backend gets the edited envelope again before the body. */
	if (!smtp_envelope_apply(s))
		return;
	build_head(s, t->had_separator);
	/* The final stage: signers see the block and body exactly as the backend will. */
	t->ftx.head = &t->head;
	t->ftx.body = t->spool;
	t->ftx.body_offset = t->body_off;
	session_run_stage(s, FILTER_STAGE_FINAL, NULL, data_final);
}

/* data_final - after the final stage: relay what the signers signed */
static void
data_final(struct session *s, const struct filter_result *res)
{
	struct txn *t = s->txn;

	t->ftx.head = NULL;
	if (data_verdict_ends(s, res))
		return;
	if (s->conf->relay.kind == RELAY_MAILDIR) {
		/* The delivery's own field, first in the file, after any signature. */
		struct buf rp;

		buf_init(&rp);
		buf_printf(&rp, "Return-Path: <%s>\r\n", t->from);
		buf_append(&rp, t->head.data, t->head.len);
		buf_free(&t->head);
		t->head = rp;
	}
	session_enter_wait(s, SESSION_WAIT_RELAY);
	relay_data(t->relay, &t->head, t->spool, t->body_off, data_relayed, s);
}

/*
 * parse_header_block - the header block into t->ftx: all of it, from memory
 * or read from the spool file in chunks until it ends, never more than
 * max_header_size octets of fields.  R_MAX when parsed, else the reply.
 */
static enum smtp_reply_id
parse_header_block(struct session *s)
{
	struct txn *t = s->txn;
	size_t size = spool_size(t->spool), n;
	const char *mem = spool_mem(t->spool);
	enum filter_hparser_status st;
	struct filter_hparser hp;
	struct buf b;
	ssize_t got;

	filter_hparser_init(&hp, &t->ftx, s->lim->max_header_size);
	if (mem != NULL || size == 0) {
		st = filter_hparser_feed(&hp, &t->ftx, mem != NULL ? mem : "", size, true);
	} else {
		buf_init(&b);
		do {
			n = size - b.len < SESSION_HEADER_CHUNK ? size - b.len : SESSION_HEADER_CHUNK;
			buf_reserve(&b, n);
			if ((got = spool_pread(t->spool, b.data + b.len, n, b.len)) <= 0) {
				log_err("id=%s event=spool_error error=\"cannot read the header block\"",
				    s->idstr);
				buf_free(&b);
				return R_LOCAL_ERROR;
			}
			b.len += (size_t)got;
			b.data[b.len] = '\0';
			st = filter_hparser_feed(&hp, &t->ftx, b.data, b.len, b.len == size);
		} while (st == FILTER_HPARSER_MORE);
		buf_free(&b);
	}
	if (st == FILTER_HPARSER_TOO_BIG) {
		log_info("id=%s event=content_error error=\"header block over max_header_size\" "
		    "max_header_size=%zu", s->idstr, s->lim->max_header_size);
		return R_HEADER_TOO_BIG;
	}
	t->body_off = hp.body;
	t->had_separator = hp.eoh == FILTER_EOH_EMPTY_LINE;
	if (hp.eoh == FILTER_EOH_MALFORMED)
		log_debug("id=%s event=header_block_end reason=malformed_line offset=%zu", s->idstr,
		    hp.body);
	return R_MAX;
}

/* smtp_data_end - the message is complete (DATA terminator or BDAT LAST) */
void
smtp_data_end(struct session *s)
{
	struct txn *t = s->txn;
	enum data_reader_error e = data_reader_error(&t->dr);
	enum smtp_reply_id r;

	if (e != DATA_READER_OK) {
		log_info("id=%s event=content_error error=\"%s\"", s->idstr, data_reader_strerror(e));
		content_refused(s, e);
		return;
	}
	if (t->data_failed) {
		session_reply(s, R_LOCAL_ERROR);
		session_txn_end(s, TXN_TEMPFAIL, "spool error");
		return;
	}
	if ((r = parse_header_block(s)) != R_MAX) {
		session_txn_end(s, r == R_HEADER_TOO_BIG ? TXN_REJECTED : TXN_TEMPFAIL,
		    r == R_HEADER_TOO_BIG ? "message header too big" : "spool error");
		session_reply(s, r);
		return;
	}
	if (s->auth_user != NULL && s->tls_active)	/* RFC 8601 has no TLS method: a comment */
		filter_auth_result(&t->ftx, "auth=pass (%s) smtp.auth=%s", s->tls_desc, s->auth_user);
	else if (s->auth_user != NULL)
		filter_auth_result(&t->ftx, "auth=pass smtp.auth=%s", s->auth_user);
	t->ftx.body = t->spool;
	t->ftx.body_offset = t->body_off;
	/* Filters judge what the client sent; our own headers come after them. */
	session_run_stage(s, FILTER_STAGE_DATA, NULL, data_filtered);
}
