/*
 * relay_conn.c - backend connections: the per-loop pool, connecting, the
 * greeting, EHLO/LHLO and STARTTLS, writing commands (held to the end of the
 * loop turn and sent in its batch), and reading replies, which go to the
 * transaction layer (relay.c) once whole.
 *
 * Must never: leave a pooled connection in an unknown state (anything but
 * the reply to our RSET closes it), or let a reply line grow without bound.
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
#include "relay_priv.h"
#include "sendbatch.h"
#include "sockin.h"
#include "util.h"
#include "tls.h"
#include "xforward.h"

static void conn_read_cb(struct bufferevent *bev, void *arg);
static void conn_write_cb(struct bufferevent *bev, void *arg);
static void conn_event_cb(struct bufferevent *bev, short what, void *arg);
static bool conn_start_tls(struct relay_conn *c);
static void conn_tls_up(struct relay_conn *c);
static void conn_refill(struct relay_conn *c);

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

/* relay_conn_read_on - read replies (and see EOF) */
void
relay_conn_read_on(struct relay_conn *c)
{
	if (c->sin)
		sockin_enable(c->sin);
	else
		bufferevent_enable(c->bev, EV_READ);
}

/* relay_conn_free - close a connection for good */
void
relay_conn_free(struct relay_conn *c)
{
	if (c->listed) {
		size_t i;

		for (i = 0; i < c->pool->nheld; i++)
			if (c->pool->held[i] == c)
				c->pool->held[i] = NULL;
	}
	if (c->held)
		evbuffer_free(c->held);
	if (c->xfwd)
		evbuffer_free(c->xfwd);
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
		relay_conn_free(c);
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

/* relay_conn_pool_put - park an idle connection (or one awaiting its RSET reply), or close it when the pool is full */
void
relay_conn_pool_put(struct relay_pool *pool, struct relay_conn *c, unsigned max)
{
	c->txn = NULL;
	c->xfwd_due = 0;	/* never a former transaction's XFORWARD for the next one */
	if (pool->nidle >= max || (c->state != RS_IDLE && c->state != RS_RSET)) {
		relay_conn_free(c);
		return;
	}
	relay_conn_read_on(c);	/* EOF, idle timeout, RSET reply */
	sockin_timeouts(c->sin, c->bev, RELAY_IDLE_TIMEOUT, 0);
	c->next = pool->idle;
	pool->idle = c;
	pool->nidle++;
}

/* relay_conn_pool_get - an idle connection to spec, or NULL */
struct relay_conn *
relay_conn_pool_get(struct relay_pool *pool, const char *spec)
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

/* conn_is_plain - no TLS on this connection, up or being set up */
static bool
conn_is_plain(const struct relay_conn *c)
{
	return !c->tls && bufferevent_openssl_get_ssl(c->bev) == NULL;
}

/* relay_conn_queued - output not yet written: held for the turn's end, or in the bufferevent */
size_t
relay_conn_queued(struct relay_conn *c)
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
 * relay_conn_flush - send what is staged in the pool's scratch buffer.  On a
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
bool
relay_conn_flush(struct relay_conn *c)
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

/* relay_pool_cork - hold plain backend writes until relay_pool_uncork */
void
relay_pool_cork(struct relay_pool *pool)
{
	pool->corked = true;
}

/* relay_pool_send - the loop turn is over: hand what was held for idle plain sockets to sb */
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

/*
 * relay_pool_uncork - the loop turn is over and relay_pool_send's batch was
 * sent: what the sockets did not take goes to the bufferevents
 */
void
relay_pool_uncork(struct relay_pool *pool)
{
	size_t i;

	pool->corked = false;
	/* A refill below may hold nothing (not corked) but may free connections: indexes stay valid. */
	for (i = 0; i < pool->nheld; i++) {
		struct relay_conn *c = pool->held[i];

		if (c == NULL)
			continue;
		c->listed = false;
		if (evbuffer_get_length(c->held) > 0)
			evbuffer_add_buffer(bufferevent_get_output(c->bev), c->held);
		else
			conn_refill(c);
	}
	pool->nheld = 0;
}

/*
 * relay_conn_reply_due - whether we wait for a reply of the backend: then none
 * within relay_timeout is a timeout.  While we owe it the message (354 came
 * before the client finished, or the body is on its way) only EOF is
 * watched: the client's data_timeout bounds the upload and the write
 * deadline the sending, so a slow upload never times the backend out.
 */
void
relay_conn_reply_due(struct relay_conn *c, bool due)
{
	unsigned secs = c->txn ? c->txn->conf->relay_timeout : 30;
	struct bufferevent *plain = bufferevent_get_underlying(c->bev);
	struct timeval tv = { secs, 0 };

	sockin_timeouts(c->sin, c->bev, due ? secs : 0, secs);
	if (plain != NULL)	/* TLS: the plain bufferevent below has deadlines of its own */
		bufferevent_set_timeouts(plain, due ? &tv : NULL, &tv);
}

/*
 * relay_conn_xforward - n XFORWARD commands go before the next command:
 * with it in one write when the backend pipelines, else one at a time,
 * each after the reply to the one before
 */
void
relay_conn_xforward(struct relay_conn *c, const struct buf *cmds, unsigned n)
{
	if (c->xfwd == NULL && (c->xfwd = evbuffer_new()) == NULL)
		fatal("evbuffer_new failed");
	evbuffer_drain(c->xfwd, evbuffer_get_length(c->xfwd));
	evbuffer_add(c->xfwd, cmds->data, cmds->len);
	c->xfwd_due = n;
}

/* conn_xforward_next - send what waits behind XFORWARD replies: all of it, or its first line */
static void
conn_xforward_next(struct relay_conn *c, bool all)
{
	size_t n = evbuffer_get_length(c->xfwd), eol_len;
	struct evbuffer_ptr eol;

	if (!all) {
		eol = evbuffer_search_eol(c->xfwd, NULL, &eol_len, EVBUFFER_EOL_CRLF_STRICT);
		if (eol.pos >= 0)
			n = (size_t)eol.pos + eol_len;
	}
	evbuffer_remove_buffer(c->xfwd, c->pool->stage, n);
	(void)relay_conn_flush(c);
}

/* relay_conn_send_cmd - write the current command and wait for its reply */
void
relay_conn_send_cmd(struct relay_conn *c, const struct buf *cmd)
{
	relay_conn_reply_due(c, true);
	if (c->xfwd_due > 0) {
		evbuffer_add(c->xfwd, cmd->data, cmd->len);
		c->xfwd_wait = c->xfwd_due;
		c->xfwd_due = 0;
		conn_xforward_next(c, (c->caps & CAP_PIPELINING) != 0);
		return;
	}
	evbuffer_add(c->pool->stage, cmd->data, cmd->len);
	(void)relay_conn_flush(c);
}

/*
 * conn_xforward_reply - a reply to XFORWARD: 2xx sends what waited for it
 * (without pipelining); anything else tempfails the transaction, whose
 * connection goes (false: c was freed)
 */
static bool
conn_xforward_reply(struct relay_conn *c)
{
	struct relay_txn *rt = c->txn;

	c->got_reply = true;	/* the attributes stand until RSET: a release must send one */
	if (c->code / 100 != 2) {
		log_warn("id=%s event=relay_xforward_refused relay=%s reply=\"%d %s\"", rt->sid,
		    rt->spec, c->code, c->text.data ? c->text.data : "");
		relay_txn_fail(rt, 451, "4.4.0", "Error: backend refused XFORWARD, try again later");
		return false;
	}
	c->xfwd_wait--;
	if (evbuffer_get_length(c->xfwd) > 0)
		conn_xforward_next(c, c->xfwd_wait == 0);
	return true;
}

/* conn_connect_unix - a non-blocking AF_UNIX connect for lmtp:unix:PATH */
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

/* relay_conn_new - start connecting to the transaction's target */
struct relay_conn *
relay_conn_new(struct relay_txn *rt)
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
		relay_conn_free(c);
		return NULL;
	}
	return c;
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
	c->xfwd_attrs = 0;
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
		else if (n >= 8 && str_ncasecmp(p, "XFORWARD", 8) == 0 && (n == 8 || p[8] == ' ')) {
			c->caps |= CAP_XFORWARD;
			c->xfwd_attrs = xforward_attrs(p + 8, n - 8);
		}
		p = nl ? nl + 1 : NULL;
	}
}

/*
 * relay_conn_result - the reply as a relay_result.  A 421 says the backend closes
 * the connection, not that our session ends: the client gets it as 451.
 */
void
relay_conn_result(struct relay_conn *c, struct relay_result *r)
{
	relay_result_set(r, c->code == 421 ? 451 : c->code, c->ecode,
	    c->text.data ? c->text.data : "");
}

/* conn_start_tls - the backend said 220 to STARTTLS: wrap the connection */
static bool
conn_start_tls(struct relay_conn *c)
{
	struct relay_txn *rt = c->txn;
	const char *name = rt->conf->relay_tls_name ? rt->conf->relay_tls_name : rt->target->host;
	bool verify = tls_client_verify(rt->conf);
	SSL *ssl = tls_client_ssl_new(rt->tls_ctx, name, verify);

	/* The TLS filter reads through the plain bufferevent from now on, under the same deadline. */
	sockin_timeouts(NULL, c->bev, rt->conf->relay_timeout, rt->conf->relay_timeout);
	c->bev = sockin_starttls(&c->sin, rt->pool->base, c->bev, ssl, BUFFEREVENT_SSL_CONNECTING,
	    conn_read_cb, conn_write_cb, conn_event_cb, c);
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
					relay_txn_fail(rt, 451, "4.7.5",
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
			relay_txn_fail(rt, 451, "4.7.5",
			    "Error: backend does not offer STARTTLS, try again later");
			return false;
		}
		break;
	case RS_STARTTLS:
		if (c->code == 220)
			return conn_start_tls(c);
		if (rt && rt->conf->relay_tls == RELAY_TLS_REQUIRED) {
			relay_txn_fail(rt, 451, "4.7.5",
			    "Error: backend refused STARTTLS, try again later");
			return false;
		}
		break;	/* opportunistic: go on in plain text */
	default:
		return true;
	}
	relay_ready(c);
	return true;
refuse:
	log_warn("id=%s event=relay_refused relay=%s reply=\"%d %s\"", rt->sid,
	    rt->spec, c->code, c->text.data ? c->text.data : "");
	relay_txn_fail(rt, 451, "4.4.1", "Error: backend unavailable, try again later");
	return false;
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
	relay_conn_free(c);
}

/* conn_garbled - the backend sent something that is not SMTP: fail, or drop the pooled connection */
static void
conn_garbled(struct relay_conn *c)
{
	if (c->txn)
		relay_txn_fail(c->txn, 451, "4.4.0",
		    "Error: backend protocol error, try again later");
	else {
		pool_remove(c->pool, c);
		relay_conn_free(c);
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
				relay_txn_fail(c->txn, 451, "4.4.0",
				    "Error: backend protocol error, try again later");
				return;
			}
			relay_ready(c);
			continue;
		}
		if (c->xfwd_wait > 0) {
			if (!conn_xforward_reply(c))
				return;	/* c is gone */
			continue;
		}
		if (!(c->state <= RS_HELO || c->state == RS_STARTTLS ? conn_handshake_reply(c) :
		    relay_op_reply(c)))
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
		if (!relay_body_fill(c->txn))
			relay_txn_fail(c->txn, 451, "4.3.0", "Error: cannot read spooled message");
	} else if (c->txn && c->state == RS_DOT) {
		relay_conn_reply_due(c, true);	/* the final dot is out: relay_timeout from now */
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
		relay_conn_free(c);
		return;
	}
	if ((what & (BEV_EVENT_EOF | BEV_EVENT_ERROR)) && c->reused && !c->got_reply &&
	    (rt->op == OP_MAIL || rt->mail_inflight || rt->replay) && !rt->retried) {
		/* The pooled connection was stale: one fresh try.  c is freed here. */
		rt->retried = true;
		c->state = RS_DEAD;
		relay_txn_release(rt);
		if (!relay_txn_attach(rt, false))
			relay_txn_fail(rt, 451, "4.4.1",
			    "Error: backend unavailable, try again later");
		return;
	}
	if ((what & (BEV_EVENT_EOF | BEV_EVENT_ERROR)) && c->state == RS_DATA_READY &&
	    relay_txn_early_lost(rt))
		return;	/* c is freed; relay_data sends the envelope again */
	if (what & BEV_EVENT_TIMEOUT)
		relay_txn_fail(rt, 451, "4.4.2", "Error: backend timed out, try again later");
	else if (c->state == RS_HANDSHAKE) {
		char err[256];
		unsigned long e = bufferevent_get_openssl_error(bev);

		/* libevent keeps OpenSSL's errors per bufferevent, not in the thread's queue. */
		if (e != 0)
			ERR_error_string_n(e, err, sizeof(err));
		else
			tls_errors(err, sizeof(err));
		log_warn("id=%s event=relay_tls_error relay=%s error=\"%s\"", rt->sid, rt->spec, err);
		relay_txn_fail(rt, 451, "4.7.5",
		    "Error: TLS with the backend failed, try again later");
	} else if (c->state == RS_CONNECTING)
		relay_txn_fail(rt, 451, "4.4.1", "Error: backend unavailable, try again later");
	else
		relay_txn_fail(rt, 451, "4.4.1",
		    "Error: backend closed the connection, try again later");
}
