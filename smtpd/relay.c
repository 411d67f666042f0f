/*
 * relay.c - SMTP/LMTP client toward the backend, and Maildir delivery.
 *
 * One relay_txn drives one transaction on one connection, one command at a
 * time (the session is serialized, so there is never more than one operation
 * outstanding).  Connections come from a per-loop pool and go back to it
 * after a transaction; an aborted transaction is cleared with RSET first.
 * A pooled connection that turns out dead at MAIL is replaced once.
 *
 * Must never: report 2xx for anything the backend did not confirm, block
 * the loop (Maildir writes run on the worker pool), or call a callback from
 * inside the function that started the operation.
 */
#include "config.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <netinet/in.h>
#include <netinet/tcp.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/bufferevent_ssl.h>
#include <event2/event.h>
#include <event2/util.h>
#include <openssl/err.h>
#include <openssl/ssl.h>

#include "log.h"
#include "maildir.h"
#include "relay.h"
#include "sendbatch.h"
#include "sockin.h"
#include "spool.h"
#include "util.h"
#include "workers.h"
#include "tls.h"

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

struct relay_pool {
	struct event_base *base;
	struct workers_loop *wl;
	struct relay_conn *idle;	/* singly linked */
	unsigned nidle;
	struct evbuffer *stage;	/* scratch for conn_flush, empty between calls */
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
	/* body */
	const struct buf *head;
	struct spool *body;
	size_t body_off;
	size_t send_off;
	bool line_start;
	struct relay_result *dres;
	size_t ndres;
	bool early;		/* DATA went out while the client was still sending */
	bool early_failed;	/* and the backend refused it: early_res */
	struct relay_result early_res;
	bool maildir_busy;	/* a worker job holds pointers into us */
	bool free_pending;
};

static void conn_read_cb(struct bufferevent *bev, void *arg);
static void conn_write_cb(struct bufferevent *bev, void *arg);
static void conn_event_cb(struct bufferevent *bev, short what, void *arg);
static void txn_fail(struct relay_txn *rt, int code, const char *ecode, const char *text);
static void txn_start_op(struct relay_txn *rt);
static void conn_ready(struct relay_conn *c);
static void rcpt_cmd(struct relay_txn *rt, unsigned caps, struct buf *b);
static bool conn_start_tls(struct relay_conn *c);
static bool conn_flush(struct relay_conn *c);
static void conn_tls_up(struct relay_conn *c);

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

/* relay_pool_new - an empty pool for one loop */
struct relay_pool *
relay_pool_new(struct event_base *base, struct workers_loop *wl)
{
	struct relay_pool *pool = xcalloc(1, sizeof(*pool));

	pool->base = base;
	pool->wl = wl;
	pool->stage = evbuffer_new();
	if (pool->stage == NULL)
		fatal("evbuffer_new failed");
	return pool;
}

/* conn_read_on - read replies (and see EOF) */
static void
conn_read_on(struct relay_conn *c)
{
	if (c->sin)
		sockin_enable(c->sin);
	else
		bufferevent_enable(c->bev, EV_READ);
}

/* conn_free - close a connection for good */
static void
conn_free(struct relay_conn *c)
{
	if (c->listed) {
		size_t i;

		for (i = 0; i < c->pool->nheld; i++)
			if (c->pool->held[i] == c)
				c->pool->held[i] = NULL;
	}
	if (c->held)
		evbuffer_free(c->held);
	sockin_free(c->sin);
	if (c->bev)
		bufferevent_free(c->bev);
	buf_free(&c->text);
	free(c->spec);
	free(c);
}

/* relay_pool_free - close every pooled connection */
void
relay_pool_free(struct relay_pool *pool)
{
	struct relay_conn *c, *next;

	for (c = pool->idle; c; c = next) {
		next = c->next;
		conn_free(c);
	}
	evbuffer_free(pool->stage);
	free(pool->held);
	free(pool);
}

/* pool_remove - unlink c from the idle list */
static void
pool_remove(struct relay_pool *pool, struct relay_conn *c)
{
	struct relay_conn **pp;

	for (pp = &pool->idle; *pp; pp = &(*pp)->next) {
		if (*pp == c) {
			*pp = c->next;
			pool->nidle--;
			c->next = NULL;
			return;
		}
	}
}

/* pool_put - park an idle connection (or one awaiting its RSET reply), or close it when the pool is full */
static void
pool_put(struct relay_pool *pool, struct relay_conn *c, unsigned max)
{
	c->txn = NULL;
	if (pool->nidle >= max || (c->state != RS_IDLE && c->state != RS_RSET)) {
		conn_free(c);
		return;
	}
	conn_read_on(c);	/* EOF, idle timeout, RSET reply */
	sockin_timeouts(c->sin, c->bev, RELAY_IDLE_TIMEOUT, 0);
	c->next = pool->idle;
	pool->idle = c;
	pool->nidle++;
}

/* pool_get - an idle connection to spec, or NULL */
static struct relay_conn *
pool_get(struct relay_pool *pool, const char *spec)
{
	struct relay_conn *c;

	for (c = pool->idle; c; c = c->next) {
		if (strcmp(c->spec, spec) == 0) {
			pool_remove(pool, c);
			c->reused = true;
			return c;
		}
	}
	return NULL;
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

/* relay_is_per_rcpt - LMTP and Maildir answer per recipient */
bool
relay_is_per_rcpt(const struct relay_txn *rt)
{
	return rt->target->kind != RELAY_SMTP;
}

/* txn_release_conn - detach the connection, pooling it when reusable */
static void
txn_release_conn(struct relay_txn *rt)
{
	struct relay_conn *c = rt->conn;

	if (c == NULL)
		return;
	rt->conn = NULL;
	c->txn = NULL;
	if (c->state != RS_IDLE) {
		conn_free(c);
		return;
	}
	if (!rt->completed && c->got_reply) {
		/* Clear the half-done envelope before anyone reuses it (a new owner waits for its reply). */
		c->state = RS_RSET;
		evbuffer_add(rt->pool->stage, "RSET\r\n", 6);
		(void)conn_flush(c);
	}
	pool_put(rt->pool, c, rt->conf->relay_pool);
}

/* relay_txn_free - end the transaction; cancels any pending callback */
void
relay_txn_free(struct relay_txn *rt)
{
	size_t i;

	if (rt == NULL)
		return;
	if (rt->maildir_busy) {
		/* The worker still reads our envelope: free on its completion. */
		rt->free_pending = true;
		rt->cb = NULL;
		rt->dcb = NULL;
		return;
	}
	txn_release_conn(rt);
	if (rt->defer)
		event_free(rt->defer);
	buf_free(&rt->cmd);
	free(rt->from);
	for (i = 0; i < rt->nrcpts; i++)
		free(rt->rcpts[i]);
	free(rt->rcpts);
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

/* txn_fail - the backend failed: tempfail this op and every later one */
static void
txn_fail(struct relay_txn *rt, int code, const char *ecode, const char *text)
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
		txn_release_conn(rt);
	}
	if (rt->op == OP_NONE)
		return;
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

/* format_addr_path - "<addr>" into the command buffer */
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

/* conn_is_plain - no TLS on this connection, up or being set up */
static bool
conn_is_plain(const struct relay_conn *c)
{
	return !c->tls && bufferevent_openssl_get_ssl(c->bev) == NULL;
}

/* conn_queued - output not yet written: held for the turn's end, or in the bufferevent */
static size_t
conn_queued(struct relay_conn *c)
{
	return evbuffer_get_length(bufferevent_get_output(c->bev)) +
	    (c->held ? evbuffer_get_length(c->held) : 0);
}

/* conn_hold - keep the staged bytes for relay_pool_uncork */
static void
conn_hold(struct relay_conn *c)
{
	struct relay_pool *pool = c->pool;

	if (c->held == NULL && (c->held = evbuffer_new()) == NULL)
		fatal("evbuffer_new failed");
	evbuffer_add_buffer(c->held, pool->stage);
	if (c->listed)
		return;
	if (pool->nheld == pool->aheld) {
		pool->aheld = pool->aheld ? 2 * pool->aheld : 16;
		pool->held = xreallocarray(pool->held, pool->aheld, sizeof(*pool->held));
	}
	pool->held[pool->nheld++] = c;
	c->listed = true;
}

/*
 * conn_flush - send what is staged in the pool's scratch buffer.  On a
 * plain socket with nothing queued, write(2) it directly: handing it to the
 * bufferevent would cost an epoll_ctl to add EV_WRITE, a loop turn, and an
 * epoll_ctl to drop it again.  While the pool is corked (the loop is running
 * its callbacks), the bytes are held and written when the turn ends: the
 * backend then finds the commands of several sessions at once, and wakes up
 * once for them.  What the socket does not take (and everything under TLS)
 * is queued in the bufferevent as usual; an error leaves the bytes queued
 * too, and the bufferevent reports it.  Returns true unless bytes wait in
 * the bufferevent (its write callback then says when they left).
 */
static bool
conn_flush(struct relay_conn *c)
{
	struct relay_pool *pool = c->pool;
	struct evbuffer *stage = pool->stage;
	struct evbuffer *bout = bufferevent_get_output(c->bev);

	/* Once some is held, the rest follows it, or the order would break. */
	if (c->listed || (pool->corked && conn_is_plain(c) && evbuffer_get_length(bout) == 0)) {
		conn_hold(c);
		return true;
	}
	if (conn_is_plain(c) && evbuffer_get_length(bout) == 0)
		(void)evbuffer_write(stage, bufferevent_getfd(c->bev));
	if (evbuffer_get_length(stage) == 0)
		return true;
	evbuffer_add_buffer(bout, stage);
	return false;
}

static void conn_refill(struct relay_conn *c);

/* relay_pool_cork - hold plain backend writes until relay_pool_uncork */
void
relay_pool_cork(struct relay_pool *pool)
{
	pool->corked = true;
}

void
relay_pool_send(struct relay_pool *pool, struct sendbatch *sb)
{
	size_t i;

	for (i = 0; i < pool->nheld; i++) {
		struct relay_conn *c = pool->held[i];

		if (c != NULL && evbuffer_get_length(bufferevent_get_output(c->bev)) == 0)
			sendbatch_add(sb, bufferevent_getfd(c->bev), c->held);
	}
}

/* relay_pool_uncork - the loop turn is over: write what was held (what relay_pool_send left) */
void
relay_pool_uncork(struct relay_pool *pool)
{
	size_t i;

	pool->corked = false;
	/* A refill below may hold nothing (not corked) but may free connections: indexes stay valid. */
	for (i = 0; i < pool->nheld; i++) {
		struct relay_conn *c = pool->held[i];
		struct evbuffer *bout;

		if (c == NULL)
			continue;
		c->listed = false;
		bout = bufferevent_get_output(c->bev);
		if (evbuffer_get_length(bout) == 0)
			(void)evbuffer_write(c->held, bufferevent_getfd(c->bev));
		if (evbuffer_get_length(c->held) > 0)
			evbuffer_add_buffer(bout, c->held);
		else
			conn_refill(c);
	}
	pool->nheld = 0;
}

/* conn_send_cmd - write the current command and wait for its reply */
static void
conn_send_cmd(struct relay_conn *c, const struct buf *cmd)
{
	unsigned secs = c->txn ? c->txn->conf->relay_timeout : 30;

	sockin_timeouts(c->sin, c->bev, secs, secs);
	evbuffer_add(c->pool->stage, cmd->data, cmd->len);
	(void)conn_flush(c);
}

/* unix_connect - a non-blocking AF_UNIX connect for lmtp:unix:PATH */
static int
conn_connect_unix(struct bufferevent *bev, const char *path)
{
	struct sockaddr_un sun;

	memset(&sun, 0, sizeof(sun));
	sun.sun_family = AF_UNIX;
	if (!str_copy(sun.sun_path, path, sizeof(sun.sun_path))) {
		errno = ENAMETOOLONG;
		return -1;
	}
	return bufferevent_socket_connect(bev, (struct sockaddr *)&sun, sizeof(sun));
}

/* conn_connect_inet - numeric HOST:PORT (names are resolved at config time) */
static int
conn_connect_inet(struct bufferevent *bev, const char *host, const char *port)
{
	struct evutil_addrinfo hints, *ai = NULL;
	int rc;

	memset(&hints, 0, sizeof(hints));
	hints.ai_family = AF_UNSPEC;
	hints.ai_socktype = SOCK_STREAM;
	hints.ai_flags = EVUTIL_AI_NUMERICHOST | EVUTIL_AI_NUMERICSERV;
	if (evutil_getaddrinfo(host, port, &hints, &ai) != 0 || ai == NULL) {
		errno = EINVAL;
		return -1;
	}
	rc = bufferevent_socket_connect(bev, ai->ai_addr, (int)ai->ai_addrlen);
	evutil_freeaddrinfo(ai);
	return rc;
}

/* conn_new - start connecting to the transaction's target */
static struct relay_conn *
conn_new(struct relay_txn *rt)
{
	struct relay_conn *c = xcalloc(1, sizeof(*c));
	struct timeval tv = { rt->conf->relay_connect_timeout, 0 };
	int rc;

	c->pool = rt->pool;
	c->spec = xstrdup(rt->spec);
	c->lmtp = rt->target->kind == RELAY_LMTP;
	c->state = RS_CONNECTING;
	buf_init(&c->text);
	c->bev = bufferevent_socket_new(rt->pool->base, -1, BEV_OPT_CLOSE_ON_FREE);
	if (c->bev == NULL)
		fatal("bufferevent_socket_new failed");
	bufferevent_setcb(c->bev, conn_read_cb, conn_write_cb, conn_event_cb, c);
	bufferevent_set_timeouts(c->bev, &tv, &tv);
	bufferevent_enable(c->bev, EV_READ | EV_WRITE);
	if (rt->target->is_unix)
		rc = conn_connect_unix(c->bev, rt->target->path);
	else
		rc = conn_connect_inet(c->bev, rt->target->host, rt->target->port);
	if (rc < 0) {
		conn_free(c);
		return NULL;
	}
	return c;
}

/* txn_attach_conn - take a pooled connection or open a new one */
static bool
txn_attach_conn(struct relay_txn *rt, bool allow_pool)
{
	struct relay_conn *c = allow_pool ? pool_get(rt->pool, rt->spec) : NULL;

	if (c == NULL)
		c = conn_new(rt);
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
	conn_read_on(c);
	conn_send_cmd(c, &rt->cmd);
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
	if (!txn_attach_conn(rt, true)) {
		txn_fail(rt, 451, "4.4.1", "Error: backend unavailable, try again later");
		return;
	}
	if (rt->conn->state == RS_IDLE)
		conn_ready(rt->conn);
	/* else: conn_ready runs when the handshake or a pending RSET completes */
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
		if (!txn_attach_conn(rt, true)) {
			txn_fail(rt, 451, "4.4.1", "Error: backend unavailable, try again later");
			return;
		}
		if (rt->conn->state == RS_IDLE)
			conn_ready(rt->conn);
		return;
	}
	if (rt->conn == NULL) {
		txn_fail(rt, 451, "4.4.1", "Error: backend unavailable, try again later");
		return;
	}
	buf_reset(&rt->cmd);
	rcpt_cmd(rt, rt->conn->caps, &rt->cmd);
	txn_start_op(rt);
}

/* rcpt_cmd - "RCPT TO:<...> params" for the pending recipient, appended to b */
static void
rcpt_cmd(struct relay_txn *rt, unsigned caps, struct buf *b)
{
	struct buf p, one;

	buf_init(&p);
	buf_init(&one);
	filter_params(caps, rt->rcpt_params, &p);
	cmd_printf_path(&one, "RCPT TO:", rt->pending_rcpt, p.data);
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
 * body_fill - send the dot-stuffed body, then the final dot.  Bytes the
 * socket takes at once are written directly; once some are queued, the
 * write callback calls here again as the queue drains, and the queue is
 * kept under RELAY_SEND_HIGH.
 */
static bool
body_fill(struct relay_txn *rt)
{
	struct relay_conn *c = rt->conn;
	struct evbuffer *stage = rt->pool->stage;
	const char *mem = spool_mem(rt->body);
	size_t total = spool_size(rt->body);
	char chunk[16384];

	for (;;) {
		while (rt->send_off < total &&
		    conn_queued(c) + evbuffer_get_length(stage) < RELAY_SEND_HIGH) {
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
			free(rt->dres);
			rt->ndres = 0;
			rt->dres = xcalloc(rt->nrcpts ? rt->nrcpts : 1, sizeof(*rt->dres));
		}
		/* Held: relay_pool_uncork writes it and calls again. */
		if (!conn_flush(c) || c->state != RS_BODY || c->listed)
			return true;
	}
}

/* body_start - after 354: the head, then the body */
static void
body_start(struct relay_txn *rt)
{
	rt->conn->state = RS_BODY;
	rt->send_off = rt->body_off;
	/* The head is ours or filtered headers: stuff it the same way. */
	rt->line_start = true;
	body_stuff(rt->pool->stage, rt->head->data, rt->head->len, &rt->line_start);
	rt->line_start = true;
	if (!body_fill(rt))
		txn_fail(rt, 451, "4.3.0", "Error: cannot read spooled message");
}

/* maildir_job - one Maildir delivery per recipient, on a worker thread */
static void
maildir_work(void *arg)
{
	struct relay_txn *rt = arg;
	size_t i;

	for (i = 0; i < rt->nrcpts; i++) {
		char *err = NULL;

		if (maildir_deliver(rt->target->path, rt->rcpts[i], rt->conf->hostname,
		    rt->head->data, rt->head->len, rt->body, rt->body_off, &err)) {
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
		rt->free_pending = false;
		relay_txn_free(rt);
		return;
	}
	rt->completed = true;
	txn_deliver_cb(-1, 0, rt);
}

/* relay_data - send the message; results per recipient or one */
void
relay_data(struct relay_txn *rt, const struct buf *head, struct spool *body, size_t off,
    relay_data_cb cb, void *arg)
{
	rt->op = OP_DATA;
	rt->dcb = cb;
	rt->arg = arg;
	rt->head = head;
	rt->body = body;
	rt->body_off = off;
	if (rt->failed) {
		txn_fail(rt, rt->fail.code, rt->fail.ecode, rt->fail.text);
		return;
	}
	if (rt->target->kind == RELAY_MAILDIR) {
		free(rt->dres);
		rt->dres = xcalloc(rt->nrcpts ? rt->nrcpts : 1, sizeof(*rt->dres));
		rt->maildir_busy = true;
		if (!workers_submit(rt->pool->wl, maildir_work, maildir_done, rt)) {
			rt->maildir_busy = false;
			txn_fail(rt, 451, "4.3.0", "Error: delivery pool busy, try again later");
		}
		return;
	}
	if (rt->conn == NULL) {
		txn_fail(rt, 451, "4.4.1", "Error: backend unavailable, try again later");
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
 * the backend discards the incomplete transaction.
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
	conn_send_cmd(rt->conn, &rt->cmd);
}

/* reply_line - fold one reply line into c; 1 = complete, 0 = more, -1 = garbage */
static int
reply_line(struct relay_conn *c, const char *line, size_t len)
{
	int code;
	bool last;
	const char *text;

	if (len < 3 || line[0] < '2' || line[0] > '5' || line[1] < '0' || line[1] > '9' ||
	    line[2] < '0' || line[2] > '9')
		return -1;
	if (len > 3 && line[3] != ' ' && line[3] != '-')
		return -1;
	code = (line[0] - '0') * 100 + (line[1] - '0') * 10 + (line[2] - '0');
	last = len == 3 || line[3] == ' ';
	if (c->nlines == 0) {
		c->code = code;
		c->ecode[0] = '\0';
		buf_reset(&c->text);
	} else if (code != c->code) {
		return -1;
	}
	if (++c->nlines > RELAY_MAX_REPLY_LINES)
		return -1;
	text = len > 4 ? line + 4 : "";
	/* Enhanced code "x.y.z " on any line: keep the first one, strip all. */
	{
		size_t i = 0, dots = 0;

		while (text[i] && (text[i] == '.' || (text[i] >= '0' && text[i] <= '9'))) {
			if (text[i] == '.')
				dots++;
			i++;
		}
		if (dots == 2 && i >= 5 && i < sizeof(c->ecode) && text[0] == line[0] &&
		    (text[i] == ' ' || text[i] == '\0')) {
			if (c->ecode[0] == '\0') {
				memcpy(c->ecode, text, i);
				c->ecode[i] = '\0';
			}
			text += i;
			while (*text == ' ')
				text++;
		}
	}
	if (c->text.len)
		buf_putc(&c->text, '\n');
	buf_append(&c->text, text, strlen(text));
	if (!last)
		return 0;
	c->nlines = 0;
	return 1;
}

/* parse_caps - remember what EHLO/LHLO advertised */
static void
parse_caps(struct relay_conn *c)
{
	const char *p = c->text.data;

	c->caps = 0;
	while (p && *p) {
		const char *nl = strchr(p, '\n');
		size_t n = nl ? (size_t)(nl - p) : strlen(p);

		if (n >= 4 && str_ncasecmp(p, "SIZE", 4) == 0 && (n == 4 || p[4] == ' '))
			c->caps |= CAP_SIZE;
		else if (n == 8 && str_ncasecmp(p, "8BITMIME", 8) == 0)
			c->caps |= CAP_8BITMIME;
		else if (n == 8 && str_ncasecmp(p, "SMTPUTF8", 8) == 0)
			c->caps |= CAP_SMTPUTF8;
		else if (n == 3 && str_ncasecmp(p, "DSN", 3) == 0)
			c->caps |= CAP_DSN;
		else if (n == 10 && str_ncasecmp(p, "PIPELINING", 10) == 0)
			c->caps |= CAP_PIPELINING;
		else if (n == 8 && str_ncasecmp(p, "STARTTLS", 8) == 0)
			c->caps |= CAP_STARTTLS;
		else if (n == 10 && str_ncasecmp(p, "REQUIRETLS", 10) == 0)
			c->caps |= CAP_REQUIRETLS;
		p = nl ? nl + 1 : NULL;
	}
}

/* conn_result - the reply as a relay_result */
static void
conn_result(struct relay_conn *c, struct relay_result *r)
{
	relay_result_set(r, c->code, c->ecode, c->text.data ? c->text.data : "");
}

/* conn_ready - the link is idle: send the MAIL that waited for it */
static void
conn_ready(struct relay_conn *c)
{
	struct relay_txn *rt = c->txn;
	struct buf p;

	c->state = RS_IDLE;
	if (rt == NULL || !(rt->op == OP_MAIL || (rt->op == OP_RCPT && rt->mail_inflight)))
		return;
	if (rt->requiretls && !(c->tls_verified && (c->lmtp || (c->caps & CAP_REQUIRETLS)))) {
		/* RFC 8689: never hand such a message over without verified TLS. */
		relay_result_set(&rt->res, 550, "5.7.30",
		    "Error: REQUIRETLS support required, the backend link does not provide it");
		txn_finish(rt);
		return;
	}
	buf_init(&p);
	if (!filter_params(c->caps, rt->mail_params, &p)) {
		buf_free(&p);
		relay_result_set(&rt->res, 553, "5.6.7", "Error: backend does not support SMTPUTF8");
		txn_finish(rt);
		return;
	}
	cmd_printf_path(&rt->cmd, "MAIL FROM:", rt->from, p.data);
	buf_free(&p);
	if (rt->op == OP_RCPT) {
		/* MAIL with the first RCPT: one write and one wake-up when pipelining. */
		rt->rcpt_pipelined = (c->caps & CAP_PIPELINING) != 0;
		if (rt->rcpt_pipelined)
			rcpt_cmd(rt, c->caps, &rt->cmd);
		c->state = RS_MAIL;
		conn_send_cmd(c, &rt->cmd);
		return;
	}
	txn_start_op(rt);
}

/* conn_start_tls - the backend said 220 to STARTTLS: wrap the connection */
static bool
conn_start_tls(struct relay_conn *c)
{
	struct relay_txn *rt = c->txn;
	const char *name = rt->conf->relay_tls_name ? rt->conf->relay_tls_name : rt->target->host;
	bool verify = tls_client_verify(rt->conf);
	SSL *ssl = tls_client_ssl_new(rt->tls_ctx, name, verify);
	struct bufferevent *tbev;

	/* The TLS filter reads through the plain bufferevent from now on, under the same deadline. */
	sockin_free(c->sin);
	c->sin = NULL;
	sockin_timeouts(c->sin, c->bev, rt->conf->relay_timeout, rt->conf->relay_timeout);
	tbev = bufferevent_openssl_filter_new(rt->pool->base, c->bev, ssl,
	    BUFFEREVENT_SSL_CONNECTING, BEV_OPT_CLOSE_ON_FREE);
	if (tbev == NULL)
		fatal("bufferevent_openssl_filter_new failed");
	c->bev = tbev;
	bufferevent_setcb(tbev, conn_read_cb, conn_write_cb, conn_event_cb, c);
	bufferevent_enable(tbev, EV_READ | EV_WRITE);
	c->state = RS_HANDSHAKE;
	return true;
}

/* conn_tls_up - the handshake with the backend completed: EHLO again */
static void
conn_tls_up(struct relay_conn *c)
{
	struct relay_txn *rt = c->txn;
	SSL *ssl = bufferevent_openssl_get_ssl(c->bev);
	char desc[128];

	c->tls = true;
	c->tls_verified = ssl && SSL_get_verify_result(ssl) == X509_V_OK &&
	    SSL_get0_peer_certificate(ssl) != NULL && tls_client_verify(rt->conf);
	tls_describe(ssl, desc, sizeof(desc));
	log_info("id=%s event=relay_tls relay=%s tls=\"%s\" verified=%s", rt->sid, rt->spec, desc,
	    c->tls_verified ? "yes" : "no");
	evbuffer_add_printf(bufferevent_get_output(c->bev), "%s %s\r\n", c->lmtp ? "LHLO" : "EHLO",
	    rt->conf->hostname);
	c->state = RS_EHLO;
}

/* conn_handshake_reply - greeting and EHLO/LHLO/HELO replies; false if c was freed */
static bool
conn_handshake_reply(struct relay_conn *c)
{
	struct relay_txn *rt = c->txn;
	const char *hostname = rt ? rt->conf->hostname : "localhost";
	struct evbuffer *out = bufferevent_get_output(c->bev);

	switch (c->state) {
	case RS_GREETING:
		if (c->code != 220)
			goto refuse;
		evbuffer_add_printf(out, "%s %s\r\n", c->lmtp ? "LHLO" : "EHLO", hostname);
		c->state = RS_EHLO;
		return true;
	case RS_EHLO:
		if (c->code == 250) {
			parse_caps(c);
			if (rt && rt->tls_ctx && !c->tls) {
				if (c->caps & CAP_STARTTLS) {
					evbuffer_add(out, "STARTTLS\r\n", 10);
					c->state = RS_STARTTLS;
					return true;
				}
				if (rt->conf->relay_tls == RELAY_TLS_REQUIRED) {
					log_warn("id=%s event=relay_tls_missing relay=%s", rt->sid, rt->spec);
					txn_fail(rt, 451, "4.7.5",
					    "Error: backend does not offer STARTTLS, try again later");
					return false;
				}
			}
			break;
		}
		if (c->lmtp || c->code < 500)
			goto refuse;
		evbuffer_add_printf(out, "HELO %s\r\n", hostname);
		c->state = RS_HELO;
		return true;
	case RS_HELO:
		if (c->code != 250)
			goto refuse;
		c->caps = 0;
		if (rt && rt->conf->relay_tls == RELAY_TLS_REQUIRED) {
			txn_fail(rt, 451, "4.7.5", "Error: backend does not offer STARTTLS, try again later");
			return false;
		}
		break;
	case RS_STARTTLS:
		if (c->code == 220)
			return conn_start_tls(c);
		if (rt && rt->conf->relay_tls == RELAY_TLS_REQUIRED) {
			txn_fail(rt, 451, "4.7.5", "Error: backend refused STARTTLS, try again later");
			return false;
		}
		break;	/* opportunistic: go on in plain text */
	default:
		return true;
	}
	conn_ready(c);
	return true;
refuse:
	log_warn("id=%s event=relay_refused relay=%s reply=\"%d %s\"", rt->sid,
	    rt->spec, c->code, c->text.data ? c->text.data : "");
	txn_fail(rt, 451, "4.4.1", "Error: backend unavailable, try again later");
	return false;
}

/* conn_op_reply - a reply to MAIL, RCPT, DATA or a per-recipient final reply; false if c was freed */
static bool
conn_op_reply(struct relay_conn *c)
{
	struct relay_txn *rt = c->txn;

	c->got_reply = true;
	switch (c->state) {
	case RS_MAIL:
		c->state = RS_IDLE;
		conn_result(c, &rt->res);
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
				rcpt_cmd(rt, c->caps, &rt->cmd);
				conn_send_cmd(c, &rt->cmd);
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
		conn_result(c, &rt->res);
		if (c->code / 100 == 2) {
			rt->rcpts = xreallocarray(rt->rcpts, rt->nrcpts + 1, sizeof(*rt->rcpts));
			rt->rcpts[rt->nrcpts++] = rt->pending_rcpt;
			rt->pending_rcpt = NULL;
		}
		txn_finish(rt);
		return true;
	case RS_DATA:
		if (c->code == 354) {
			if (rt->op == OP_DATA)
				body_start(rt);
			else
				c->state = RS_DATA_READY;	/* early: the body is not ready yet */
			return true;
		}
		if (rt->op != OP_DATA) {
			/* Early DATA refused: keep the verdict for relay_data. */
			c->state = RS_IDLE;
			if (c->code / 100 == 2) {
				txn_fail(rt, 451, "4.4.0",
				    "Error: backend protocol error, try again later");
				return false;
			}
			rt->early_failed = true;
			conn_result(c, &rt->early_res);
			return true;
		}
		c->state = RS_IDLE;
		free(rt->dres);
		rt->dres = xcalloc(1, sizeof(*rt->dres));
		conn_result(c, &rt->dres[0]);
		rt->ndres = 1;
		if (c->code / 100 == 2) {
			/* 2xx to DATA is a protocol violation: never pass it on. */
			txn_fail(rt, 451, "4.4.0", "Error: backend protocol error, try again later");
			return false;
		}
		txn_finish(rt);
		return true;
	case RS_BODY:
		/* A reply before we finished sending: the backend gave up. */
		txn_fail(rt, 451, "4.4.0", "Error: backend protocol error, try again later");
		return false;
	case RS_DOT:
		conn_result(c, &rt->dres[rt->ndres++]);
		if (c->lmtp && rt->ndres < rt->nrcpts)
			return true;
		c->state = RS_IDLE;
		rt->completed = true;
		txn_finish(rt);
		return true;
	default:
		txn_fail(rt, 451, "4.4.0", "Error: backend protocol error, try again later");
		return false;
	}
}

/* conn_idle_reply - pooled connection: only our RSET reply is expected */
static void
conn_idle_reply(struct relay_conn *c)
{
	if (c->state == RS_RSET && c->code == 250) {
		c->state = RS_IDLE;
		return;
	}
	pool_remove(c->pool, c);
	conn_free(c);
}

/* conn_garbled - the backend sent something that is not SMTP: fail, or drop the pooled connection */
static void
conn_garbled(struct relay_conn *c)
{
	if (c->txn)
		txn_fail(c->txn, 451, "4.4.0", "Error: backend protocol error, try again later");
	else {
		pool_remove(c->pool, c);
		conn_free(c);
	}
}

/* conn_read_cb - parse backend replies */
static void
conn_read_cb(struct bufferevent *bev, void *arg)
{
	struct relay_conn *c = arg;
	struct evbuffer *in = bufferevent_get_input(bev);
	char line[RELAY_MAX_REPLY_LINE + 1];

	for (;;) {
		size_t eol_len, len;
		struct evbuffer_ptr eol = evbuffer_search_eol(in, NULL, &eol_len, EVBUFFER_EOL_CRLF);
		int rc;

		if (eol.pos < 0)
			break;
		len = (size_t)eol.pos;
		if (len > RELAY_MAX_REPLY_LINE) {
			conn_garbled(c);
			return;
		}
		evbuffer_remove(in, line, len);
		line[len] = '\0';
		evbuffer_drain(in, eol_len);
		rc = reply_line(c, line, len);
		if (rc < 0) {
			conn_garbled(c);
			return;
		}
		if (rc == 0)
			continue;
		if (c->txn == NULL) {
			conn_idle_reply(c);
			return;
		}
		if (c->state == RS_RSET) {
			/* A pooled connection finishing its RSET for its new owner. */
			if (c->code != 250) {
				txn_fail(c->txn, 451, "4.4.0",
				    "Error: backend protocol error, try again later");
				return;
			}
			conn_ready(c);
			continue;
		}
		if (!(c->state <= RS_HELO || c->state == RS_STARTTLS ? conn_handshake_reply(c) :
		    conn_op_reply(c)))
			return;	/* c is gone */
	}
	if (evbuffer_get_length(in) > RELAY_MAX_REPLY_LINE)
		conn_garbled(c);
}

/* conn_refill - the output drained: more of the body, if it is being sent */
static void
conn_refill(struct relay_conn *c)
{
	if (c->txn && c->state == RS_BODY) {
		if (!body_fill(c->txn))
			txn_fail(c->txn, 451, "4.3.0", "Error: cannot read spooled message");
	}
}

/* conn_write_cb - refill the body while sending */
static void
conn_write_cb(struct bufferevent *bev, void *arg)
{
	(void)bev;
	conn_refill(arg);
}

/* conn_event_cb - connected, closed, error or timeout */
static void
conn_event_cb(struct bufferevent *bev, short what, void *arg)
{
	struct relay_conn *c = arg;
	struct relay_txn *rt = c->txn;

	if ((what & BEV_EVENT_CONNECTED) && c->state == RS_HANDSHAKE && rt != NULL) {
		conn_tls_up(c);
		return;
	}
	if (what & BEV_EVENT_CONNECTED) {
		int on = 1;

		unsigned secs = rt ? rt->conf->relay_connect_timeout : 30;

		/* One command, one reply: never let Nagle hold a command back. */
		if (rt == NULL || !rt->target->is_unix)
			setsockopt(bufferevent_getfd(bev), IPPROTO_TCP, TCP_NODELAY, &on, sizeof(on));
		/* From now on a sockin reads the plain socket (no FIONREAD per read). */
		c->sin = sockin_new(c->pool->base, c->bev, RELAY_INPUT_HIGH, conn_read_cb,
		    conn_event_cb, c);
		bufferevent_disable(c->bev, EV_READ);
		sockin_timeouts(c->sin, c->bev, secs, secs);	/* for the greeting */
		sockin_enable(c->sin);
		c->state = RS_GREETING;
		return;
	}
	if (rt == NULL) {
		/* A pooled connection closed or idled out. */
		pool_remove(c->pool, c);
		conn_free(c);
		return;
	}
	if ((what & (BEV_EVENT_EOF | BEV_EVENT_ERROR)) && c->reused && !c->got_reply &&
	    (rt->op == OP_MAIL || rt->mail_inflight) && !rt->retried) {
		/* The pooled connection was stale: one fresh try. */
		rt->retried = true;
		c->state = RS_DEAD;
		txn_release_conn(rt);
		if (txn_attach_conn(rt, false))
			return;
	}
	if (what & BEV_EVENT_TIMEOUT)
		txn_fail(rt, 451, "4.4.2", "Error: backend timed out, try again later");
	else if (c->state == RS_HANDSHAKE) {
		char err[256];
		unsigned long e = bufferevent_get_openssl_error(bev);

		/* libevent keeps OpenSSL's errors per bufferevent, not in the thread's queue. */
		if (e != 0)
			ERR_error_string_n(e, err, sizeof(err));
		else
			tls_errors(err, sizeof(err));
		log_warn("id=%s event=relay_tls_error relay=%s error=\"%s\"", rt->sid, rt->spec, err);
		txn_fail(rt, 451, "4.7.5", "Error: TLS with the backend failed, try again later");
	} else if (c->state == RS_CONNECTING)
		txn_fail(rt, 451, "4.4.1", "Error: backend unavailable, try again later");
	else
		txn_fail(rt, 451, "4.4.1", "Error: backend closed the connection, try again later");
}
