/*
 * relay.c - SMTP/LMTP client toward the backend, and Maildir delivery.
 *
 * One relay_txn drives one transaction on one connection, one command at a
 * time (the session is serialized, so there is never more than one operation
 * outstanding).  Connections come from a per-loop pool and go back to it
 * after a transaction; an aborted transaction is cleared with RSET first.
 * A pooled connection that turns out dead at MAIL is replaced once; so is
 * one the backend drops while DATA waits for a slow client (its own idle
 * timeout): relay_data then sends the envelope again.  The same replay
 * sends an envelope the filters edited (relay_envelope), whose refused
 * recipients are reported before DATA (env_refused).  The
 * connections themselves (pool, connecting, handshake, writes, reading
 * replies) are relay_conn.c's; relay_priv.h has what the two share.
 *
 * Must never: report 2xx for anything the backend did not confirm, block
 * the loop (Maildir writes run on the delivery pool), or call a callback from
 * inside the function that started the operation.
 */
#include "config.h"

#include <assert.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/event.h>
#include <event2/util.h>

#include "log.h"
#include "maildir.h"
#include "relay_priv.h"
#include "spool.h"
#include "util.h"
#include "workers.h"
#include "xforward.h"

static void txn_start_op(struct relay_txn *rt);
static void txn_replay(struct relay_txn *rt);
static void env_replay(struct relay_txn *rt);
static void env_lists_free(struct relay_txn *rt);
static void rcpt_cmd(unsigned caps, const char *rcpt, const char *params, struct buf *b);

/* relay_result_set - fill a result */
void
relay_result_set(struct relay_result *r, int code, const char *ecode, const char *text)
{
	r->code = code;
	if (ecode && *ecode)
		str_copy(r->ecode, ecode, sizeof(r->ecode));
	else
		snprintf(r->ecode, sizeof(r->ecode), "%d.0.0", code / 100);
	str_copy(r->text, text ? text : "", sizeof(r->text));
}

/* relay_txn_new - a transaction toward target */
struct relay_txn *
relay_txn_new(struct relay_pool *pool, const struct conf *conf,
    const struct conf_relay *target, const char *session_id)
{
	struct relay_txn *rt = xcalloc(1, sizeof(*rt));

	rt->pool = pool;
	rt->conf = conf;
	rt->target = target;
	rt->spec = xstrdup(target->spec ? target->spec : "");
	str_copy(rt->sid, session_id, sizeof(rt->sid));
	buf_init(&rt->cmd);
	buf_init(&rt->head);
	if (target->kind == RELAY_MAILDIR) {
		rt->maildir_root = xstrdup(target->path);
		rt->hostname = xstrdup(conf->hostname);
	}
	return rt;
}

/* relay_txn_set_tls - use TLS toward the backend (relay_tls), ctx shared by the snapshot */
void
relay_txn_set_tls(struct relay_txn *rt, SSL_CTX *ctx)
{
	rt->tls_ctx = ctx;
}

/* relay_txn_set_requiretls - RFC 8689: the message may travel only over verified TLS */
void
relay_txn_set_requiretls(struct relay_txn *rt, bool on)
{
	rt->requiretls = on;
}

/* relay_txn_set_client - keep the client facts for XFORWARD (relay_xforward = yes) */
void
relay_txn_set_client(struct relay_txn *rt, const struct xforward_client *cl)
{
	free(rt->xf_name);
	free(rt->xf_addr);
	free(rt->xf_helo);
	free(rt->xf_ident);
	rt->xf_name = cl->name ? xstrdup(cl->name) : NULL;
	rt->xf_addr = cl->addr ? xstrdup(cl->addr) : NULL;
	rt->xf_helo = cl->helo ? xstrdup(cl->helo) : NULL;
	rt->xf_ident = cl->ident ? xstrdup(cl->ident) : NULL;
	rt->xf_port = cl->port;
	rt->xf_esmtp = cl->esmtp;
	rt->xf_set = true;
}

/* txn_xforward - the backend offers XFORWARD: its commands go before MAIL */
static void
txn_xforward(struct relay_txn *rt, struct relay_conn *c)
{
	struct xforward_client cl = { rt->xf_name, rt->xf_addr, rt->xf_port, rt->xf_helo,
	    rt->xf_esmtp, rt->xf_ident };
	struct buf cmds;
	size_t n;

	if (!rt->xf_set || !(c->caps & CAP_XFORWARD))
		return;
	buf_init(&cmds);
	n = xforward_cmds(c->xfwd_attrs, &cl, &cmds);
	if (n > 0)
		relay_conn_xforward(c, &cmds, (unsigned)n);
	buf_free(&cmds);
}

/* relay_is_per_rcpt - LMTP and Maildir answer per recipient */
bool
relay_is_per_rcpt(const struct relay_txn *rt)
{
	return rt->target->kind != RELAY_SMTP;
}

/* relay_txn_release - detach the connection, pooling it when reusable */
void
relay_txn_release(struct relay_txn *rt)
{
	struct relay_conn *c = rt->conn;

	if (c == NULL)
		return;
	rt->conn = NULL;
	c->txn = NULL;
	if (c->state != RS_IDLE) {
		relay_conn_free(c);
		return;
	}
	if (!rt->completed && c->got_reply) {
		/* Clear the half-done envelope before anyone reuses it (a new owner waits for its reply). */
		c->state = RS_RSET;
		evbuffer_add(rt->pool->stage, "RSET\r\n", 6);
		(void)relay_conn_flush(c);
	}
	relay_conn_pool_put(rt->pool, c, rt->conf->relay_pool);
}

/* relay_txn_free - end the transaction; cancels any pending callback */
void
relay_txn_free(struct relay_txn *rt)
{
	size_t i;

	if (rt == NULL)
		return;
	if (rt->maildir_busy) {
		/* The worker still reads what we own: free on its completion. */
		rt->free_pending = true;
		rt->cb = NULL;
		rt->dcb = NULL;
		rt->ecb = NULL;
		return;
	}
	relay_txn_release(rt);
	if (rt->defer)
		event_free(rt->defer);
	buf_free(&rt->cmd);
	buf_free(&rt->head);
	spool_free(rt->body);
	free(rt->maildir_root);
	free(rt->hostname);
	free(rt->xf_name);
	free(rt->xf_addr);
	free(rt->xf_helo);
	free(rt->xf_ident);
	free(rt->from);
	for (i = 0; i < rt->nrcpts; i++) {
		free(rt->rcpts[i]);
		if (rt->rcpt_args)
			free(rt->rcpt_args[i]);
	}
	free(rt->rcpts);
	free(rt->rcpt_args);
	env_lists_free(rt);
	free(rt->pending_rcpt);
	free(rt->rcpt_params);
	free(rt->mail_params);
	free(rt->dres);
	free(rt->spec);
	free(rt);
}

/* txn_deliver_cb - hand the finished operation's result to the session */
static void
txn_deliver_cb(evutil_socket_t fd, short what, void *arg)
{
	struct relay_txn *rt = arg;
	enum relay_op op = rt->op;
	relay_cb cb = rt->cb;
	relay_data_cb dcb = rt->dcb;
	void *cbarg = rt->arg;

	if (rt->env_report) {
		/* Refusals of an edited envelope: the data op goes on (relay_envelope_go). */
		rt->env_report = false;
		if (rt->ecb)
			rt->ecb(rt->earg, rt->env_res, rt->env_n);
		return;
	}
	rt->op = OP_NONE;
	rt->cb = NULL;
	rt->dcb = NULL;
	if (op == OP_DATA) {
		if (dcb)
			dcb(cbarg, rt->dres, rt->ndres);
	} else if (cb) {
		cb(cbarg, &rt->res);
	}
}

/* txn_finish - schedule the result callback on the loop */
static void
txn_finish(struct relay_txn *rt)
{
	if (rt->defer == NULL)
		rt->defer = event_new(rt->pool->base, -1, 0, txn_deliver_cb, rt);
	event_active(rt->defer, 0, 0);
}

/* relay_txn_fail - the backend failed: tempfail this op and every later one */
void
relay_txn_fail(struct relay_txn *rt, int code, const char *ecode, const char *text)
{
	size_t i;

	if (!rt->failed) {
		rt->failed = true;
		relay_result_set(&rt->fail, code, ecode, text);
		log_warn("id=%s event=relay_error relay=%s reply=\"%d %s %s\"",
		    rt->sid, rt->spec, code, rt->fail.ecode, text);
	}
	if (rt->conn) {
		rt->conn->state = RS_DEAD;
		relay_txn_release(rt);
	}
	if (rt->op == OP_NONE)
		return;
	rt->env_report = false;	/* the failure is the op's result now */
	if (rt->op == OP_DATA) {
		/* One failure per recipient, so per-recipient callers count right. */
		size_t n = relay_is_per_rcpt(rt) ? rt->nrcpts : 1;

		free(rt->dres);
		rt->dres = xcalloc(n ? n : 1, sizeof(*rt->dres));
		rt->ndres = n ? n : 1;
		for (i = 0; i < rt->ndres; i++)
			rt->dres[i] = rt->fail;
	} else {
		rt->res = rt->fail;
	}
	txn_finish(rt);
}

/* cmd_printf_path - "VERB<addr> params" into the command buffer */
static void
cmd_printf_path(struct buf *b, const char *verb, const char *addr, const char *params)
{
	buf_reset(b);
	buf_printf(b, "%s<%s>", verb, addr);
	if (params && *params) {
		buf_putc(b, ' ');
		buf_puts(b, params);
	}
	buf_puts(b, "\r\n");
}

/* filter_params - keep only the ESMTP parameters the backend advertised */
static bool
filter_params(unsigned caps, const char *in, struct buf *out)
{
	const char *p = in, *end;
	size_t n;

	buf_reset(out);
	while (p && *p) {
		while (*p == ' ')
			p++;
		end = strchr(p, ' ');
		n = end ? (size_t)(end - p) : strlen(p);
		if (n == 0)
			break;
		bool keep = false;
		if (str_ncasecmp(p, "SIZE=", 5) == 0)
			keep = caps & CAP_SIZE;
		else if (str_ncasecmp(p, "BODY=", 5) == 0)
			keep = caps & CAP_8BITMIME;
		else if (n == 8 && str_ncasecmp(p, "SMTPUTF8", 8) == 0) {
			if (!(caps & CAP_SMTPUTF8))
				return false;
			keep = true;
		} else if (n == 10 && str_ncasecmp(p, "REQUIRETLS", 10) == 0) {
			keep = caps & CAP_REQUIRETLS;
		} else if (str_ncasecmp(p, "RET=", 4) == 0 || str_ncasecmp(p, "ENVID=", 6) == 0 ||
		    str_ncasecmp(p, "NOTIFY=", 7) == 0 || str_ncasecmp(p, "ORCPT=", 6) == 0)
			keep = caps & CAP_DSN;
		if (keep) {
			if (out->len)
				buf_putc(out, ' ');
			buf_append(out, p, n);
		}
		p += n;
	}
	return true;
}

/* relay_txn_attach - take a pooled connection or open a new one */
bool
relay_txn_attach(struct relay_txn *rt, bool allow_pool)
{
	struct relay_conn *c = allow_pool ? relay_conn_pool_get(rt->pool, rt->spec) : NULL;

	if (c == NULL)
		c = relay_conn_new(rt);
	if (c == NULL)
		return false;
	c->txn = rt;
	c->got_reply = false;
	rt->conn = c;
	return true;
}

/* txn_start_op - send the pending operation's command if the link is ready */
static void
txn_start_op(struct relay_txn *rt)
{
	struct relay_conn *c = rt->conn;

	if (c == NULL || c->state != RS_IDLE)
		return;	/* sent once the handshake completes */
	switch (rt->op) {
	case OP_MAIL:
		c->state = RS_MAIL;
		break;
	case OP_RCPT:
		c->state = RS_RCPT;
		break;
	case OP_DATA:
		c->state = RS_DATA;
		break;
	case OP_NONE:
		return;
	}
	relay_conn_read_on(c);
	relay_conn_send_cmd(c, &rt->cmd);
}

/* relay_mail - MAIL FROM toward the backend (Maildir: accepted locally) */
void
relay_mail(struct relay_txn *rt, const char *from, const char *params, relay_cb cb, void *arg)
{
	rt->op = OP_MAIL;
	rt->cb = cb;
	rt->arg = arg;
	free(rt->from);
	rt->from = xstrdup(from);
	if (rt->failed) {
		rt->res = rt->fail;
		txn_finish(rt);
		return;
	}
	if (rt->target->kind == RELAY_MAILDIR ||
	    (rt->requiretls && rt->target->kind == RELAY_LMTP && rt->target->is_unix)) {
		/* Final delivery on this host: REQUIRETLS is satisfied (RFC 8689 4.2.1). */
		rt->requiretls = false;
	}
	if (rt->target->kind == RELAY_MAILDIR) {
		rt->op = cb ? OP_MAIL : OP_NONE;
		relay_result_set(&rt->res, 250, "2.1.0", "Sender ok");
		if (cb)
			txn_finish(rt);
		return;
	}
	rt->retried = false;
	buf_reset(&rt->cmd);
	cmd_printf_path(&rt->cmd, "MAIL FROM:", from, NULL);
	/* parameters are filtered once we know the backend's capabilities */
	free(rt->mail_params);
	rt->mail_params = xstrdup(params ? params : "");
	if (cb == NULL) {
		/* Lazy: MAIL goes out with the first RCPT, in one write when pipelining. */
		rt->op = OP_NONE;
		rt->mail_held = true;
		return;
	}
	if (!relay_txn_attach(rt, true)) {
		relay_txn_fail(rt, 451, "4.4.1", "Error: backend unavailable, try again later");
		return;
	}
	if (rt->conn->state == RS_IDLE)
		relay_ready(rt->conn);
	/* else: relay_ready runs when the handshake or a pending RSET completes */
}

/* relay_rcpt - RCPT TO toward the backend */
void
relay_rcpt(struct relay_txn *rt, const char *rcpt, const char *params, relay_cb cb, void *arg)
{
	rt->op = OP_RCPT;
	rt->cb = cb;
	rt->arg = arg;
	free(rt->pending_rcpt);
	rt->pending_rcpt = xstrdup(rcpt);
	if (rt->failed) {
		rt->res = rt->fail;
		txn_finish(rt);
		return;
	}
	if (rt->target->kind == RELAY_MAILDIR) {
		rt->rcpts = xreallocarray(rt->rcpts, rt->nrcpts + 1, sizeof(*rt->rcpts));
		rt->rcpts[rt->nrcpts++] = rt->pending_rcpt;
		rt->pending_rcpt = NULL;
		relay_result_set(&rt->res, 250, "2.1.5", "Recipient ok");
		txn_finish(rt);
		return;
	}
	free(rt->rcpt_params);
	rt->rcpt_params = xstrdup(params ? params : "");
	if (rt->mail_failed) {
		rt->res = rt->mail_res;
		txn_finish(rt);
		return;
	}
	if (rt->mail_held) {
		rt->mail_held = false;
		rt->mail_inflight = true;
		if (!relay_txn_attach(rt, true)) {
			relay_txn_fail(rt, 451, "4.4.1",
			    "Error: backend unavailable, try again later");
			return;
		}
		if (rt->conn->state == RS_IDLE)
			relay_ready(rt->conn);
		return;
	}
	if (rt->conn == NULL) {
		relay_txn_fail(rt, 451, "4.4.1", "Error: backend unavailable, try again later");
		return;
	}
	buf_reset(&rt->cmd);
	rcpt_cmd(rt->conn->caps, rt->pending_rcpt, rt->rcpt_params, &rt->cmd);
	txn_start_op(rt);
}

/* rcpt_cmd - "RCPT TO:<rcpt> params" (those the backend takes), appended to b */
static void
rcpt_cmd(unsigned caps, const char *rcpt, const char *params, struct buf *b)
{
	struct buf p, one;

	buf_init(&p);
	buf_init(&one);
	filter_params(caps, params, &p);
	cmd_printf_path(&one, "RCPT TO:", rcpt, p.data);
	buf_append(b, one.data, one.len);
	buf_free(&one);
	buf_free(&p);
}

/*
 * body_stuff - append n octets at p to out, dot-stuffed: a line that starts
 * with '.' gets one more.  *line_start says whether p starts a line, and is
 * left saying whether the next octet will.
 */
static void
body_stuff(struct evbuffer *out, const char *p, size_t n, bool *line_start)
{
	while (n > 0) {
		const char *dot = memchr(p, '.', n);
		size_t len;

		if (dot == NULL) {
			evbuffer_add(out, p, n);
			*line_start = p[n - 1] == '\n';
			return;
		}
		len = (size_t)(dot - p);
		if (len > 0)
			evbuffer_add(out, p, len);
		if (len > 0 ? dot[-1] == '\n' : *line_start)
			evbuffer_add(out, "..", 2);
		else
			evbuffer_add(out, ".", 1);
		*line_start = false;
		p = dot + 1;
		n -= len + 1;
	}
}

/*
 * relay_body_fill - send the dot-stuffed body, then the final dot.  Bytes the
 * socket takes at once are written directly; once some are queued, the
 * write callback calls here again as the queue drains, and the queue is
 * kept under RELAY_SEND_HIGH.
 */
bool
relay_body_fill(struct relay_txn *rt)
{
	struct relay_conn *c = rt->conn;
	struct evbuffer *stage = rt->pool->stage;
	const char *mem = spool_mem(rt->body);
	size_t total = spool_size(rt->body);
	char chunk[16384];

	for (;;) {
		while (rt->send_off < total &&
		    relay_conn_queued(c) + evbuffer_get_length(stage) < RELAY_SEND_HIGH) {
			size_t want = total - rt->send_off;
			const char *p;
			ssize_t n;

			if (want > sizeof(chunk))
				want = sizeof(chunk);
			if (mem == NULL) {
				n = spool_pread(rt->body, chunk, want, rt->send_off);
				if (n <= 0)
					return false;
				p = chunk;
			} else {
				p = mem + rt->send_off;
				n = (ssize_t)want;
			}
			rt->send_off += (size_t)n;
			body_stuff(stage, p, (size_t)n, &rt->line_start);
		}
		if (rt->send_off >= total && c->state == RS_BODY) {
			if (!rt->line_start)
				evbuffer_add(stage, "\r\n", 2);	/* never happens: reader ends with CRLF */
			evbuffer_add(stage, ".\r\n", 3);
			c->state = RS_DOT;
			relay_conn_reply_due(c, true);
			free(rt->dres);
			rt->ndres = 0;
			rt->dres = xcalloc(rt->nrcpts ? rt->nrcpts : 1, sizeof(*rt->dres));
		}
		/* Held: relay_pool_uncork writes it and calls again. */
		if (!relay_conn_flush(c) || c->state != RS_BODY || c->listed)
			return true;
	}
}

/* body_start - after 354: the head, then the body */
static void
body_start(struct relay_txn *rt)
{
	rt->conn->state = RS_BODY;
	relay_conn_reply_due(rt->conn, false);	/* until the final dot: see relay_conn_reply_due */
	rt->send_off = rt->body_off;
	/* The head is ours or filtered headers: stuff it the same way. */
	rt->line_start = true;
	body_stuff(rt->pool->stage, rt->head.data, rt->head.len, &rt->line_start);
	rt->line_start = true;
	if (!relay_body_fill(rt))
		relay_txn_fail(rt, 451, "4.3.0", "Error: cannot read spooled message");
}

/* maildir_work - one Maildir delivery per recipient, on a worker thread */
static void
maildir_work(void *arg)
{
	struct relay_txn *rt = arg;
	size_t i;

	for (i = 0; i < rt->nrcpts; i++) {
		char *err = NULL;

		if (maildir_deliver(rt->maildir_root, rt->rcpts[i], rt->hostname,
		    rt->head.data, rt->head.len, rt->body, rt->body_off, &err)) {
			relay_result_set(&rt->dres[i], 250, "2.0.0", "Ok: delivered to Maildir");
		} else {
			log_err("id=%s event=maildir_error rcpt=<%s> error=\"%s\"", rt->sid,
			    rt->rcpts[i], err ? err : "unknown");
			relay_result_set(&rt->dres[i], 451, "4.3.0",
			    "Error: local delivery failed, try again later");
		}
		free(err);
	}
	rt->ndres = rt->nrcpts;
}

/* maildir_done - back on the loop */
static void
maildir_done(void *arg)
{
	struct relay_txn *rt = arg;

	rt->maildir_busy = false;
	if (rt->free_pending) {
		size_t i, ok = 0;

		/* Nobody to tell: the client left (it will retry: a duplicate, never a loss). */
		for (i = 0; i < rt->ndres; i++)
			ok += rt->dres[i].code / 100 == 2;
		log_warn("id=%s event=delivered_unacknowledged relay=maildir delivered=%zu of=%zu",
		    rt->sid, ok, rt->ndres);
		rt->free_pending = false;
		relay_txn_free(rt);
		return;
	}
	rt->completed = true;
	txn_deliver_cb(-1, 0, rt);
}

/*
 * relay_data - send the message; results per recipient or one.  The head is
 * copied and the body referenced, so the caller may free both at once.
 */
void
relay_data(struct relay_txn *rt, const struct buf *head, struct spool *body, size_t off,
    relay_data_cb cb, void *arg)
{
	rt->op = OP_DATA;
	rt->dcb = cb;
	rt->arg = arg;
	buf_reset(&rt->head);
	buf_append(&rt->head, head->data, head->len);
	spool_free(rt->body);
	rt->body = spool_ref(body);
	rt->body_off = off;
	if (rt->failed) {
		relay_txn_fail(rt, rt->fail.code, rt->fail.ecode, rt->fail.text);
		return;
	}
	if (rt->target->kind == RELAY_MAILDIR) {
		free(rt->dres);
		rt->dres = xcalloc(rt->nrcpts ? rt->nrcpts : 1, sizeof(*rt->dres));
		rt->maildir_busy = true;
		if (!workers_submit(rt->pool->wl, maildir_work, maildir_done, rt)) {
			rt->maildir_busy = false;
			relay_txn_fail(rt, 451, "4.3.0",
			    "Error: delivery pool busy, try again later");
		}
		return;
	}
	if (rt->env_set) {
		env_replay(rt);
		return;
	}
	if (rt->early_lost) {
		txn_replay(rt);
		return;
	}
	if (rt->conn == NULL) {
		relay_txn_fail(rt, 451, "4.4.1", "Error: backend unavailable, try again later");
		return;
	}
	if (rt->early) {
		if (rt->early_failed) {
			free(rt->dres);
			rt->dres = xcalloc(1, sizeof(*rt->dres));
			rt->dres[0] = rt->early_res;
			rt->ndres = 1;
			txn_finish(rt);
		} else if (rt->conn->state == RS_DATA_READY) {
			body_start(rt);
		}
		/* else the 354 is still on its way and starts the body */
		return;
	}
	buf_reset(&rt->cmd);
	buf_puts(&rt->cmd, "DATA\r\n");
	txn_start_op(rt);
}

/*
 * relay_data_begin - send DATA now, while the client is still sending the
 * message, so the 354 is back by the time the body is ready: one backend
 * round trip less per message.  If the message is then refused (filters,
 * bad content), relay_txn_free closes the connection in the DATA phase and
 * the backend discards the incomplete transaction.  While the client
 * uploads, no reply of the backend is due (relay_conn_reply_due), and if the
 * backend gives up meanwhile, relay_data replays (relay_txn_early_lost).
 */
void
relay_data_begin(struct relay_txn *rt)
{
	if (rt->failed || rt->target->kind == RELAY_MAILDIR || rt->conn == NULL ||
	    rt->conn->state != RS_IDLE || rt->op != OP_NONE || rt->nrcpts == 0)
		return;
	rt->early = true;
	buf_reset(&rt->cmd);
	buf_puts(&rt->cmd, "DATA\r\n");
	rt->conn->state = RS_DATA;
	relay_conn_send_cmd(rt->conn, &rt->cmd);
}

/*
 * mail_refused - MAIL cannot go out on this link: its verdict.  A replay
 * only tempfails: the client has our 250 for each of its recipients.
 */
static void
mail_refused(struct relay_txn *rt, int code, const char *ecode, const char *text)
{
	if (rt->replay) {
		relay_txn_fail(rt, 451, "4.4.0", text);
		return;
	}
	relay_result_set(&rt->res, code, ecode, text);
	txn_finish(rt);
}

/*
 * relay_txn_early_lost - the backend dropped the connection (its idle timeout, or
 * a 421) while DATA waited for the client's message: nothing is lost yet.
 * The connection goes; relay_data sends the envelope again.  Once only;
 * false (nothing done) when that is not the case.
 */
bool
relay_txn_early_lost(struct relay_txn *rt)
{
	if (!rt->early || rt->early_failed || rt->op != OP_NONE || rt->replayed)
		return false;
	log_info("id=%s event=relay_closed_during_upload relay=%s action=replay_envelope", rt->sid,
	    rt->spec);
	rt->early_lost = true;
	rt->conn->state = RS_DEAD;
	relay_txn_release(rt);
	return true;
}

/* txn_replay - relay_data after relay_txn_early_lost: a fresh connection, then MAIL, RCPTs, DATA */
static void
txn_replay(struct relay_txn *rt)
{
	rt->early_lost = false;
	rt->early = false;
	rt->replayed = true;
	rt->replay = true;
	rt->replay_rcpts = 0;
	if (!relay_txn_attach(rt, false))
		relay_txn_fail(rt, 451, "4.4.1", "Error: backend unavailable, try again later");
	/* else relay_ready sends MAIL (then replay_send) once the greeting and EHLO are through */
}

/* ---- an envelope edited by the filters ---- */

/* strv_dup - a copy of n strings */
static char **
strv_dup(char *const *v, size_t n)
{
	char **d = xcalloc(n ? n : 1, sizeof(*d));
	size_t i;

	for (i = 0; i < n; i++)
		d[i] = xstrdup(v[i] ? v[i] : "");
	return d;
}

/* strv_free - free n strings and the vector */
static void
strv_free(char **v, size_t n)
{
	size_t i;

	if (v == NULL)
		return;
	for (i = 0; i < n; i++)
		free(v[i]);
	free(v);
}

/* env_lists_free - the edited envelope's lists */
static void
env_lists_free(struct relay_txn *rt)
{
	strv_free(rt->env_rcpts, rt->env_n);
	strv_free(rt->env_params, rt->env_n);
	free(rt->env_res);
	rt->env_rcpts = rt->env_params = NULL;
	rt->env_res = NULL;
	rt->env_n = 0;
}

/* relay_envelope - the edited envelope replaces the backend's at relay_data */
void
relay_envelope(struct relay_txn *rt, const char *from, const char *mail_params,
    char *const *rcpts, char *const *rcpt_params, size_t n, relay_data_cb refused, void *arg)
{
	assert(n > 0 && rt->op == OP_NONE);
	free(rt->from);
	rt->from = xstrdup(from);
	free(rt->mail_params);
	rt->mail_params = xstrdup(mail_params ? mail_params : "");
	strv_free(rt->rcpts, rt->nrcpts);
	strv_free(rt->rcpt_args, rt->rcpt_args ? rt->nrcpts : 0);
	env_lists_free(rt);
	rt->rcpts = strv_dup(rcpts, n);
	rt->rcpt_args = strv_dup(rcpt_params, n);
	rt->nrcpts = n;
	rt->env_rcpts = strv_dup(rcpts, n);
	rt->env_params = strv_dup(rcpt_params, n);
	rt->env_res = xcalloc(n, sizeof(*rt->env_res));
	rt->env_n = n;
	rt->ecb = refused;
	rt->earg = arg;
	/* Maildir asks nobody: relay_data delivers to the new list. */
	rt->env_set = rt->target->kind != RELAY_MAILDIR;
}

/*
 * env_replay - relay_data after relay_envelope: let go of the backend
 * transaction (a connection in the DATA phase is closed and the backend
 * drops the incomplete message; an idle one is reset with RSET and pooled),
 * take a connection (that one again, once its RSET is answered, or a fresh
 * one), then MAIL and RCPTs; replay_reply takes it from there
 */
static void
env_replay(struct relay_txn *rt)
{
	rt->env_set = false;
	relay_txn_release(rt);
	rt->early = rt->early_lost = rt->early_failed = false;
	rt->replayed = true;	/* no replay after an early loss on top of this one */
	rt->replay = true;
	rt->env_edit = true;
	rt->replay_rcpts = 0;
	rt->retried = false;
	log_info("id=%s event=envelope_replay relay=%s rcpts=%zu", rt->sid, rt->spec, rt->nrcpts);
	if (!relay_txn_attach(rt, true)) {
		relay_txn_fail(rt, 451, "4.4.1", "Error: backend unavailable, try again later");
		return;
	}
	if (rt->conn->state == RS_IDLE)
		relay_ready(rt->conn);
	/* else relay_ready runs once the greeting, EHLO or the pending RSET is through */
}

/*
 * env_refused - the replay's RCPTs are answered and some were refused:
 * keep the accepted ones as the transaction's recipients and tell the
 * caller before DATA (txn_deliver_cb calls ecb)
 */
static void
env_refused(struct relay_txn *rt)
{
	size_t i, k = 0;

	rt->replay = false;
	rt->conn->state = RS_IDLE;
	for (i = 0; i < rt->env_n; i++) {
		if (rt->env_res[i].code / 100 != 2)
			continue;
		free(rt->rcpts[k]);
		free(rt->rcpt_args[k]);
		rt->rcpts[k] = xstrdup(rt->env_rcpts[i]);
		rt->rcpt_args[k] = xstrdup(rt->env_params[i]);
		k++;
	}
	for (i = k; i < rt->nrcpts; i++) {
		free(rt->rcpts[i]);
		free(rt->rcpt_args[i]);
	}
	rt->nrcpts = k;
	rt->env_report = true;
	txn_finish(rt);
}

/* relay_envelope_go - DATA to the recipients the replay kept */
void
relay_envelope_go(struct relay_txn *rt)
{
	assert(rt->op == OP_DATA);
	if (rt->failed || rt->conn == NULL || rt->nrcpts == 0) {
		relay_txn_fail(rt, 451, "4.4.1", "Error: backend unavailable, try again later");
		return;
	}
	buf_reset(&rt->cmd);
	buf_puts(&rt->cmd, "DATA\r\n");
	txn_start_op(rt);
}

/*
 * replay_send - rt->cmd has MAIL: with PIPELINING every RCPT goes with it,
 * and DATA too unless the envelope is an edited one (whose refusals are
 * known before DATA)
 */
static void
replay_send(struct relay_conn *c)
{
	struct relay_txn *rt = c->txn;
	size_t i;

	if (c->caps & CAP_PIPELINING) {
		for (i = 0; i < rt->nrcpts; i++)
			rcpt_cmd(c->caps, rt->rcpts[i], rt->rcpt_args[i], &rt->cmd);
		if (!rt->env_edit)
			buf_puts(&rt->cmd, "DATA\r\n");
	}
	c->state = RS_MAIL;
	relay_conn_send_cmd(c, &rt->cmd);
}

/* replay_next - without PIPELINING, the next command of the replay after a good reply */
static void
replay_next(struct relay_conn *c)
{
	struct relay_txn *rt = c->txn;

	if ((c->caps & CAP_PIPELINING) && !(rt->env_edit && c->state == RS_DATA))
		return;	/* already sent */
	buf_reset(&rt->cmd);
	if (c->state == RS_RCPT)
		rcpt_cmd(c->caps, rt->rcpts[rt->replay_rcpts], rt->rcpt_args[rt->replay_rcpts],
		    &rt->cmd);
	else
		buf_puts(&rt->cmd, "DATA\r\n");
	relay_conn_send_cmd(c, &rt->cmd);
}

/*
 * replay_refused - a refusal on the replay: of an edited envelope's
 * recipient, kept for env_refused (true); of anything else, the message is
 * tempfailed, since the client has our 250 for its sender and each
 * recipient and retries (false: c was freed)
 */
static bool
replay_refused(struct relay_conn *c)
{
	struct relay_txn *rt = c->txn;
	const char *text = c->text.data ? c->text.data : "";
	char esc[1024];

	if (rt->env_edit && c->state == RS_RCPT) {
		const char *rcpt = rt->env_rcpts[rt->replay_rcpts];

		log_warn("id=%s event=replay_refused relay=%s rcpt=<%s> reply=\"%d %s %s\"", rt->sid,
		    rt->spec, log_escape(esc, sizeof(esc), rcpt, strlen(rcpt)), c->code, c->ecode,
		    text);
		if (c->code / 100 == 4 || c->code / 100 == 5)
			relay_conn_result(c, &rt->env_res[rt->replay_rcpts]);
		else	/* neither taken nor refused: never pass it on as a verdict */
			relay_result_set(&rt->env_res[rt->replay_rcpts], 451, "4.4.0",
			    "Error: backend protocol error, try again later");
		return true;
	}
	if (rt->env_edit && c->state == RS_MAIL) {
		log_warn("id=%s event=replay_refused relay=%s from=<%s> reply=\"%d %s %s\"", rt->sid,
		    rt->spec, log_escape(esc, sizeof(esc), rt->from, strlen(rt->from)), c->code,
		    c->ecode, text);
		relay_txn_fail(rt, 451, "4.1.0", "Error: the backend refused the sender a filter set, "
		    "try again later");
		return false;
	}
	log_warn("id=%s event=relay_replay_refused relay=%s reply=\"%d %s\"", rt->sid,
	    rt->spec, c->code, text);
	relay_txn_fail(rt, 451, "4.4.0", "Error: backend refused the message on a new connection, "
	    "try again later");
	return false;
}

/*
 * replay_reply - a reply to the replayed envelope.  After an early loss,
 * each must be what the backend said the first time (2xx to MAIL and every
 * RCPT, 354 to DATA), else replay_refused tempfails the message.  An
 * edited envelope's RCPTs may be refused one by one: env_refused reports
 * them before DATA.  False if c was freed.
 */
static bool
replay_reply(struct relay_conn *c)
{
	struct relay_txn *rt = c->txn;
	bool ok = c->state == RS_DATA ? c->code == 354 :
	    (c->state == RS_MAIL || c->state == RS_RCPT) && c->code / 100 == 2;
	size_t i;

	if (!ok && !replay_refused(c))
		return false;
	if (c->state == RS_DATA) {
		rt->replay = false;
		body_start(rt);
		return true;
	}
	if (c->state == RS_RCPT) {
		if (ok && rt->env_edit)
			relay_conn_result(c, &rt->env_res[rt->replay_rcpts]);
		rt->replay_rcpts++;
	}
	c->state = rt->replay_rcpts < rt->nrcpts ? RS_RCPT : RS_DATA;
	if (c->state == RS_DATA && rt->env_edit) {
		for (i = 0; i < rt->env_n; i++) {
			if (rt->env_res[i].code / 100 != 2) {
				env_refused(rt);
				return true;
			}
		}
	}
	replay_next(c);
	return true;
}

/* relay_ready - the link is idle: send the MAIL that waited for it */
void
relay_ready(struct relay_conn *c)
{
	struct relay_txn *rt = c->txn;
	struct buf p;

	c->state = RS_IDLE;
	if (rt == NULL || !(rt->op == OP_MAIL || (rt->op == OP_RCPT && rt->mail_inflight) ||
	    rt->replay))
		return;
	if (rt->requiretls && !(c->tls_verified && (c->lmtp || (c->caps & CAP_REQUIRETLS)))) {
		/* RFC 8689: never hand such a message over without verified TLS. */
		mail_refused(rt, 550, "5.7.30",
		    "Error: REQUIRETLS support required, the backend link does not provide it");
		return;
	}
	buf_init(&p);
	if (!filter_params(c->caps, rt->mail_params, &p)) {
		buf_free(&p);
		mail_refused(rt, 553, "5.6.7", "Error: backend does not support SMTPUTF8");
		return;
	}
	cmd_printf_path(&rt->cmd, "MAIL FROM:", rt->from, p.data);
	buf_free(&p);
	txn_xforward(rt, c);	/* goes out ahead of the command sent below */
	if (rt->replay) {
		replay_send(c);
		return;
	}
	if (rt->op == OP_RCPT) {
		/* MAIL with the first RCPT: one write and one wake-up when pipelining. */
		rt->rcpt_pipelined = (c->caps & CAP_PIPELINING) != 0;
		if (rt->rcpt_pipelined)
			rcpt_cmd(c->caps, rt->pending_rcpt, rt->rcpt_params, &rt->cmd);
		c->state = RS_MAIL;
		relay_conn_send_cmd(c, &rt->cmd);
		return;
	}
	txn_start_op(rt);
}

/* relay_op_reply - a reply to MAIL, RCPT, DATA or a per-recipient final reply; false if c was freed */
bool
relay_op_reply(struct relay_conn *c)
{
	struct relay_txn *rt = c->txn;

	c->got_reply = true;
	if (rt->replay)
		return replay_reply(c);
	switch (c->state) {
	case RS_MAIL:
		c->state = RS_IDLE;
		relay_conn_result(c, &rt->res);
		if (rt->mail_inflight) {
			rt->mail_inflight = false;
			if (c->code / 100 != 2) {
				rt->mail_failed = true;
				rt->mail_res = rt->res;
				rt->rcpt_drain = rt->rcpt_pipelined;
				if (rt->rcpt_drain) {
					c->state = RS_RCPT;	/* its reply still comes */
					return true;
				}
				txn_finish(rt);
				return true;
			}
			c->state = RS_RCPT;
			if (!rt->rcpt_pipelined) {
				buf_reset(&rt->cmd);
				rcpt_cmd(c->caps, rt->pending_rcpt, rt->rcpt_params, &rt->cmd);
				relay_conn_send_cmd(c, &rt->cmd);
			}
			return true;
		}
		txn_finish(rt);
		return true;
	case RS_RCPT:
		c->state = RS_IDLE;
		if (rt->rcpt_drain) {
			/* The refused MAIL's answer is the one that counts. */
			rt->rcpt_drain = false;
			rt->res = rt->mail_res;
			txn_finish(rt);
			return true;
		}
		relay_conn_result(c, &rt->res);
		if (c->code / 100 == 2) {
			rt->rcpts = xreallocarray(rt->rcpts, rt->nrcpts + 1, sizeof(*rt->rcpts));
			rt->rcpt_args = xreallocarray(rt->rcpt_args, rt->nrcpts + 1,
			    sizeof(*rt->rcpt_args));
			rt->rcpt_args[rt->nrcpts] = xstrdup(rt->rcpt_params ? rt->rcpt_params : "");
			rt->rcpts[rt->nrcpts++] = rt->pending_rcpt;
			rt->pending_rcpt = NULL;
		}
		txn_finish(rt);
		return true;
	case RS_DATA:
		if (c->code == 354) {
			if (rt->op == OP_DATA) {
				body_start(rt);
			} else {
				c->state = RS_DATA_READY;	/* early: the body is not ready yet */
				relay_conn_reply_due(c, false);
			}
			return true;
		}
		if (rt->op != OP_DATA) {
			/* Early DATA refused: keep the verdict for relay_data. */
			c->state = RS_IDLE;
			if (c->code / 100 == 2) {
				relay_txn_fail(rt, 451, "4.4.0",
				    "Error: backend protocol error, try again later");
				return false;
			}
			rt->early_failed = true;
			relay_conn_result(c, &rt->early_res);
			return true;
		}
		c->state = RS_IDLE;
		free(rt->dres);
		rt->dres = xcalloc(1, sizeof(*rt->dres));
		relay_conn_result(c, &rt->dres[0]);
		rt->ndres = 1;
		if (c->code / 100 == 2) {
			/* 2xx to DATA is a protocol violation: never pass it on. */
			relay_txn_fail(rt, 451, "4.4.0",
			    "Error: backend protocol error, try again later");
			return false;
		}
		txn_finish(rt);
		return true;
	case RS_DATA_READY:
		/* The backend gave up while the client was still sending (its idle timeout). */
		if (c->code == 421 && relay_txn_early_lost(rt))
			return false;
		relay_txn_fail(rt, 451, "4.4.0", "Error: backend protocol error, try again later");
		return false;
	case RS_BODY:
		/* A reply before we finished sending: the backend gave up. */
		relay_txn_fail(rt, 451, "4.4.0", "Error: backend protocol error, try again later");
		return false;
	case RS_DOT:
		if (c->code / 100 == 3) {
			/* Neither taken nor refused: never pass a 3xx on as a verdict. */
			relay_result_set(&rt->dres[rt->ndres++], 451, "4.4.0",
			    "Error: backend protocol error, try again later");
		} else {
			relay_conn_result(c, &rt->dres[rt->ndres++]);
		}
		if (c->lmtp && rt->ndres < rt->nrcpts)
			return true;
		c->state = RS_IDLE;
		rt->completed = true;
		txn_finish(rt);
		return true;
	default:
		relay_txn_fail(rt, 451, "4.4.0", "Error: backend protocol error, try again later");
		return false;
	}
}

