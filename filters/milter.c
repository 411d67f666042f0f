/*
 * milter.c - the milter:NAME filter: the MTA side of the Sendmail milter
 * protocol, version 6 (older milters, down to version 2, too), so that
 * rspamd, OpenDKIM, ClamAV's milter and the rest plug into portier as they
 * plug into Postfix.
 *
 * One connection to the milter per SMTP session, opened at connect and kept
 * across its transactions (ABORT between them), QUIT at the end, as Postfix
 * does.  Every packet goes out and comes back on the session's loop
 * (filter_wait_begin): nothing blocks a thread.  Each stage sends its
 * macros (the milter's own lists, else Postfix's) and its command, and
 * waits for the reply unless the milter said it sends none (SMFIP_NR_*).
 * At end of message the whole DATA conversation runs in eom(): DATA, each
 * header field and the body as the filters before it left them, EOH, body
 * chunks of at most 64 KB (SKIP honoured), EOM; then the modifications,
 * kept until the final reply says the message goes on, become the chain's
 * edits, which the next filter sees and dkim-sign signs.
 *
 * Timeouts: connect_timeout while connecting and negotiating, the chain's
 * timeout per command, content_timeout for the DATA conversation; a
 * progress packet starts the clock again.  A milter that fails (refuses
 * the connection, closes it, answers garbage or an action it did not
 * negotiate, stalls) gets the section's default_action for the rest of
 * the session, and a log line names it.
 */
#include "config.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/event.h>

#include "util.h"
#include "log.h"
#include "spool.h"
#include "filter.h"
#include "milter_proto.h"
#include "milter.h"

#define MILTER_CONNECT_TIMEOUT	30	/* Postfix's milter_connect_timeout */
#define MILTER_CONTENT_TIMEOUT	300	/* Postfix's milter_content_timeout */
#define MILTER_TIMEOUT_MAX	86400
#define MILTER_OUT_HIGH		(256 * 1024)	/* octets queued to the milter before the body waits */
#define MILTER_OUT_LOW		(64 * 1024)
#define MILTER_MODS_MAX		(1024 * 1024)	/* modification packets kept, the body apart */

/* Postfix 3.7's default macro lists (mail_params.h), with the connection's facts added. */
static const char *const milter_default_macros[MILTER_M_STAGES] = {
	[MILTER_M_CONNECT] = ("j _ v {daemon_name} {daemon_addr} {daemon_port} {if_addr} "
	    "{client_addr} {client_port} {client_name} {client_ptr}"),
	[MILTER_M_HELO] = "{tls_version} {cipher} {cert_subject}",
	[MILTER_M_MAIL] = "i {auth_type} {auth_authen} {mail_addr} {mail_host} {mail_mailer}",
	[MILTER_M_RCPT] = "i {rcpt_addr} {rcpt_host} {rcpt_mailer}",
	[MILTER_M_DATA] = "i",
	[MILTER_M_EOM] = "i",
	[MILTER_M_EOH] = "i",
};

struct milter_inst {
	char *name;		/* NAME of [milter NAME] */
	char *spec;		/* socket = as written */
	struct sockaddr_storage sa;
	socklen_t salen;
	unsigned connect_timeout;
	unsigned content_timeout;
	size_t max_body;	/* a replaced body: [server] max_message_size */
};

enum milter_phase {
	MP_IDLE,		/* no stage waits */
	MP_CONNECTING,		/* connect(2) in progress */
	MP_NEG,			/* the negotiation reply is awaited */
	MP_CMD,			/* a command's reply is awaited */
	MP_DATA,		/* the DATA conversation */
};

enum milter_dstep { DS_DATA, DS_HEADERS, DS_EOH, DS_BODY, DS_EOM, DS_WAIT_EOM };

struct milter_sess {
	const struct milter_inst *inst;
	uint64_t id;
	struct bufferevent *bev;	/* NULL once closed */
	struct filter_wait *w;		/* the stage waiting for the milter */
	enum milter_phase phase;
	char awaiting;			/* the command whose reply is due, 0 none */
	unsigned timeout;		/* the wait's: FILTER_TIMEOUT_DEFAULT, or content */
	struct milter_neg neg;
	bool in_txn;			/* MAIL sent, no EOM or ABORT since */
	/* DATA conversation */
	enum milter_dstep dstep;
	struct filter_header *hdrs;
	size_t nhdrs, hi;
	const char *bmem;
	size_t boff, blen;
	char *chunk;
	bool skip;
	struct buf mods;		/* modification packets, kept until the final reply */
	struct buf body;		/* replacement body ('b') */
	bool replbody;
	char *quarantine;
};

/* ---- configuration ---- */

static void milter_destroy(void *inst);

/* milter_configure - [milter NAME]: socket and timeouts */
static void *
milter_configure(const struct conf *conf, const struct conf_section *sec, char **err_r)
{
	struct milter_inst *in;
	const char *spec = NULL;
	char *why;
	size_t i;

	if (sec == NULL || sec->name[0] == '\0') {
		*err_r = xstrdup("a milter is named in filters = as milter:NAME and set up in "
		    "[milter NAME] (socket = ...)");
		return NULL;
	}
	in = xcalloc(1, sizeof(*in));
	in->name = xstrdup(sec->name);
	in->connect_timeout = MILTER_CONNECT_TIMEOUT;
	in->content_timeout = MILTER_CONTENT_TIMEOUT;
	in->max_body = conf->limits.max_message_size;
	for (i = 0; i < sec->nkv; i++) {
		const struct conf_kv *kv = &sec->kv[i];

		if (strcmp(kv->key, "socket") == 0) {
			spec = kv->value;
			if (!filter_parse_socket(spec, &in->sa, &in->salen, &why)) {
				*err_r = xasprintf("socket %s (line %d)", why, kv->line);
				free(why);
				goto fail;
			}
		} else if (strcmp(kv->key, "connect_timeout") == 0) {
			if (!filter_conf_uint(kv, 1, MILTER_TIMEOUT_MAX, &in->connect_timeout, err_r))
				goto fail;
		} else if (strcmp(kv->key, "content_timeout") == 0) {
			if (!filter_conf_uint(kv, 1, MILTER_TIMEOUT_MAX, &in->content_timeout, err_r))
				goto fail;
		} else if (!filter_chain_key(kv->key)) {
			*err_r = xasprintf("unknown key \"%s\" at line %d", kv->key, kv->line);
			goto fail;
		}
	}
	if (spec == NULL) {
		*err_r = xasprintf("[milter %s] has no socket = (inet:HOST:PORT, inet6:[ADDR]:PORT "
		    "or unix:PATH)", sec->name);
		goto fail;
	}
	in->spec = xstrdup(spec);
	return in;
fail:
	milter_destroy(in);
	return NULL;
}

static void
milter_destroy(void *inst)
{
	struct milter_inst *in = inst;

	if (in == NULL)
		return;
	free(in->name);
	free(in->spec);
	free(in);
}

/* ---- the connection ---- */

static void milter_read_cb(struct bufferevent *bev, void *arg);
static void milter_write_cb(struct bufferevent *bev, void *arg);
static void milter_event_cb(struct bufferevent *bev, short what, void *arg);

/* milter_log_id - the session id for log lines */
#define MILTER_ID(ms)	SESSION_ID((ms)->id)

/* milter_shut - close the connection (the session state stays until close()) */
static void
milter_shut(struct milter_sess *ms)
{
	if (ms->bev != NULL) {
		bufferevent_free(ms->bev);
		ms->bev = NULL;
	}
	ms->phase = MP_IDLE;
	ms->awaiting = 0;
}

/* milter_data_clear - forget a DATA conversation */
static void
milter_data_clear(struct milter_sess *ms)
{
	free(ms->hdrs);
	ms->hdrs = NULL;
	ms->nhdrs = ms->hi = 0;
	free(ms->chunk);
	ms->chunk = NULL;
	ms->bmem = NULL;
	ms->boff = ms->blen = 0;
	ms->skip = false;
	buf_reset(&ms->mods);
	buf_free(&ms->body);
	buf_init(&ms->body);
	ms->replbody = false;
	free(ms->quarantine);
	ms->quarantine = NULL;
}

/* milter_take_wait - the pending stage's handle, now no longer ours to keep */
static struct filter_wait *
milter_take_wait(struct milter_sess *ms)
{
	struct filter_wait *w = ms->w;

	ms->w = NULL;
	ms->awaiting = 0;
	if (ms->phase != MP_CONNECTING)
		ms->phase = MP_IDLE;
	return w;
}

/*
 * milter_fail - the milter failed: log, close, and give the pending stage
 * the chain's default_action.  The last thing a callback does: the
 * session may be gone when it returns.
 */
static void
milter_fail(struct milter_sess *ms, const char *fmt, ...) PRINTF_LIKE(2, 3);

static void
milter_fail(struct milter_sess *ms, const char *fmt, ...)
{
	struct filter_wait *w;
	char why[300];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(why, sizeof(why), fmt, ap);
	va_end(ap);
	milter_shut(ms);
	milter_data_clear(ms);
	if ((w = milter_take_wait(ms)) != NULL)
		filter_wait_fail(w, why);
	else
		log_warn("id=" SESSION_ID_FMT " event=milter_failed milter=%s error=\"%s\"",
		    MILTER_ID(ms), ms->inst->name, why);
}

/* milter_done - the pending stage's verdict; the last thing a callback does */
static void
milter_done(struct milter_sess *ms, enum filter_verdict v, const struct filter_reply *r)
{
	struct filter_wait *w = milter_take_wait(ms);

	if (w != NULL)
		filter_wait_done(w, v, r);
}

/* milter_send - queue packets for the milter */
static void
milter_send(struct milter_sess *ms, const struct buf *b)
{
	if (ms->bev != NULL && b->len > 0)
		bufferevent_write(ms->bev, b->data, b->len);
}

/* ---- macros ---- */

/* milter_domain - the domain of an address, "" if none */
static const char *
milter_domain(const char *addr)
{
	const char *at = addr != NULL ? strrchr(addr, '@') : NULL;

	return at != NULL ? at + 1 : "";
}

/* milter_rcpt_mailer - Sendmail's mailer name for where portier delivers */
static const char *
milter_rcpt_mailer(const struct conf *conf)
{
	switch (conf->relay.kind) {
	case RELAY_LMTP: return "lmtp";
	case RELAY_MAILDIR: return "local";
	default: return "smtp";
	}
}

/*
 * milter_macro - the value of one macro at a stage, NULL when portier has
 * none (it is then not sent, as Postfix leaves undefined macros out).
 * tmp holds composed values.
 */
static const char *
milter_macro(const char *name, const struct filter_ctx *ctx, const char *arg, char *tmp,
    size_t tmpsz)
{
	const struct filter_session *s = ctx->sess;
	const struct filter_txn *t = ctx->txn;

	if (strcmp(name, "j") == 0)
		return s->conf != NULL ? s->conf->hostname : NULL;
	if (strcmp(name, "_") == 0) {
		snprintf(tmp, tmpsz, "%s [%s]%s", s->client_ptr != NULL ? s->client_ptr : "unknown",
		    s->client_addr, s->client_ptr != NULL && strcmp(s->client_name, "unknown") == 0 ?
		    " (may be forged)" : "");
		return tmp;
	}
	if (strcmp(name, "v") == 0)
		return PACKAGE_NAME " " PACKAGE_VERSION;
	if (strcmp(name, "{daemon_name}") == 0)
		return s->listener;
	if (strcmp(name, "{daemon_addr}") == 0 || strcmp(name, "{if_addr}") == 0)
		return s->local_addr[0] != '\0' ? s->local_addr : NULL;
	if (strcmp(name, "{daemon_port}") == 0) {
		snprintf(tmp, tmpsz, "%u", s->local_port);
		return s->local_port != 0 ? tmp : NULL;
	}
	if (strcmp(name, "{if_name}") == 0)
		return s->conf != NULL ? s->conf->hostname : NULL;
	if (strcmp(name, "{client_addr}") == 0)
		return s->client_addr;
	if (strcmp(name, "{client_port}") == 0) {
		snprintf(tmp, tmpsz, "%u", s->client_port);
		return tmp;
	}
	if (strcmp(name, "{client_name}") == 0)
		return s->client_name;
	if (strcmp(name, "{client_ptr}") == 0)
		return s->client_ptr;
	if (strcmp(name, "{tls_version}") == 0)
		return s->tls_version;
	if (strcmp(name, "{cipher}") == 0)
		return s->tls_cipher;
	if (strcmp(name, "{cert_subject}") == 0)
		return s->tls_peer_subject;
	if (strcmp(name, "{auth_type}") == 0)
		return s->auth_method;
	if (strcmp(name, "{auth_authen}") == 0)
		return s->auth_user;
	if (t == NULL)
		return NULL;
	if (strcmp(name, "i") == 0)
		return t->queue_id;
	if (strcmp(name, "{mail_addr}") == 0)
		return t->mail_from;
	if (strcmp(name, "{mail_host}") == 0)
		return t->mail_from != NULL ? milter_domain(t->mail_from) : NULL;
	if (strcmp(name, "{mail_mailer}") == 0)
		return t->mail_from != NULL ? "smtp" : NULL;
	if (strcmp(name, "{rcpt_addr}") == 0)
		return arg;
	if (strcmp(name, "{rcpt_host}") == 0)
		return arg != NULL ? milter_domain(arg) : NULL;
	if (strcmp(name, "{rcpt_mailer}") == 0)
		return arg != NULL && s->conf != NULL ? milter_rcpt_mailer(s->conf) : NULL;
	return NULL;
}

/* milter_put_macros - the 'D' packet of a stage, when it has any value to send */
static void
milter_put_macros(const struct milter_sess *ms, enum milter_macro_stage stage, char cmd,
    const struct filter_ctx *ctx, const char *arg, struct buf *out)
{
	const char *list = ms->neg.symlist[stage] != NULL ? ms->neg.symlist[stage] :
	    milter_default_macros[stage];
	const char *p, *e, *v;
	char name[64], tmp[600];
	struct buf d;
	size_t l;

	buf_init(&d);
	buf_putc(&d, cmd);
	for (p = list; *p != '\0'; p = e) {
		while (*p == ' ')
			p++;
		for (e = p; *e != '\0' && *e != ' '; e++)
			;
		if ((l = (size_t)(e - p)) == 0 || l >= sizeof(name))
			continue;
		memcpy(name, p, l);
		name[l] = '\0';
		/* Sendmail's lists may name a one-letter macro in braces: {i} is i. */
		if (l == 3 && name[0] == '{' && name[2] == '}') {
			name[0] = name[1];
			name[1] = '\0';
		}
		if ((v = milter_macro(name, ctx, arg, tmp, sizeof(tmp))) == NULL)
			continue;
		buf_append(&d, p, l);
		buf_putc(&d, '\0');
		buf_append(&d, v, strlen(v) + 1);
	}
	if (d.len > 1)
		milter_put(out, MILTER_C_MACRO, d.data, d.len);
	buf_free(&d);
}

/* ---- stages ---- */

/* milter_now_failed - a stage called on a milter that failed before: fail it now */
static enum filter_verdict
milter_now_failed(struct milter_sess *ms, struct filter_ctx *ctx, const char *why,
    struct filter_reply *r)
{
	struct filter_wait *w = filter_wait_begin(ctx);

	if (w == NULL) {
		r->code = 451;
		str_copy(r->ecode, "4.7.1", sizeof(r->ecode));
		str_copy(r->text, "Service unavailable - try again later", sizeof(r->text));
		return FILTER_TEMPFAIL;
	}
	(void)ms;
	filter_wait_fail(w, why);
	return FILTER_PENDING;
}

/* milter_wait - the stage waits for the milter's reply to cmd */
static enum filter_verdict
milter_wait(struct milter_sess *ms, struct filter_ctx *ctx, enum milter_phase phase, char cmd,
    unsigned timeout, struct filter_reply *r)
{
	if ((ms->w = filter_wait_begin(ctx)) == NULL) {
		milter_shut(ms);
		return milter_now_failed(ms, ctx, "no event loop", r);
	}
	ms->phase = phase;
	ms->awaiting = cmd;
	ms->timeout = timeout;
	filter_wait_timeout(ms->w, timeout);
	return FILTER_PENDING;
}

/* milter_send_stage - a stage's macros, then its packet pkt */
static void
milter_send_stage(struct milter_sess *ms, const struct filter_ctx *ctx,
    enum milter_macro_stage mstage, const char *arg, const struct buf *pkt)
{
	struct buf out;

	buf_init(&out);
	milter_put_macros(ms, mstage, (char)pkt->data[4], ctx, arg, &out);
	buf_append(&out, pkt->data, pkt->len);
	milter_send(ms, &out);
	buf_free(&out);
}

/*
 * milter_command - one stage's macros and command pkt (freed here); its
 * reply awaited unless the milter turned it off (nr)
 */
static enum filter_verdict
milter_command(struct milter_sess *ms, struct filter_ctx *ctx, enum milter_macro_stage mstage,
    const char *arg, struct buf *pkt, uint32_t nr, struct filter_reply *r)
{
	char cmd = (char)pkt->data[4];

	if (ms->bev == NULL) {
		buf_free(pkt);
		return milter_now_failed(ms, ctx, "connection lost", r);
	}
	milter_send_stage(ms, ctx, mstage, arg, pkt);
	buf_free(pkt);
	if (ms->neg.protocol & nr)
		return FILTER_CONTINUE;
	return milter_wait(ms, ctx, MP_CMD, cmd, FILTER_TIMEOUT_DEFAULT, r);
}

/* milter_abort_txn - ABORT, when the milter is inside a transaction */
static void
milter_abort_txn(struct milter_sess *ms)
{
	struct buf out;

	if (!ms->in_txn || ms->bev == NULL)
		return;
	buf_init(&out);
	milter_put(&out, MILTER_C_ABORT, NULL, 0);
	milter_send(ms, &out);
	buf_free(&out);
	ms->in_txn = false;
}

/* milter_connect - connect and negotiate; CONNECT follows in the read callback */
static enum filter_verdict
milter_connect(void *inst, struct filter_ctx *ctx, struct filter_reply *r)
{
	struct milter_inst *in = inst;
	struct milter_sess *ms = xcalloc(1, sizeof(*ms));

	ms->inst = in;
	ms->id = ctx->sess->id;
	buf_init(&ms->mods);
	buf_init(&ms->body);
	*ctx->priv = ms;
	if (ctx->base == NULL)
		return milter_now_failed(ms, ctx, "no event loop", r);
	ms->bev = bufferevent_socket_new(ctx->base, -1, BEV_OPT_CLOSE_ON_FREE);
	if (ms->bev == NULL)
		return milter_now_failed(ms, ctx, "bufferevent_socket_new failed", r);
	bufferevent_setcb(ms->bev, milter_read_cb, milter_write_cb, milter_event_cb, ms);
	bufferevent_setwatermark(ms->bev, EV_READ, 0, MILTER_PACKET_MAX + 5);
	bufferevent_setwatermark(ms->bev, EV_WRITE, MILTER_OUT_LOW, 0);
	ms->phase = MP_CONNECTING;
	if ((ms->w = filter_wait_begin(ctx)) == NULL) {
		milter_shut(ms);
		return milter_now_failed(ms, ctx, "no event loop", r);
	}
	ms->timeout = in->connect_timeout;
	filter_wait_timeout(ms->w, in->connect_timeout);
	if (bufferevent_socket_connect(ms->bev, (struct sockaddr *)&in->sa, (int)in->salen) < 0) {
		/* the event callback may have run already (an immediate refusal) */
		if (ms->w != NULL)
			milter_fail(ms, "connect to %s: %s", in->spec, strerror(errno));
		return FILTER_PENDING;
	}
	bufferevent_enable(ms->bev, EV_READ | EV_WRITE);
	return FILTER_PENDING;
}

/* milter_send_connect - after the negotiation: the CONNECT stage proper */
static void
milter_send_connect(struct milter_sess *ms)
{
	struct filter_ctx *ctx = filter_wait_ctx(ms->w);
	const struct filter_session *s;
	struct buf pkt;
	char family;

	if (ctx == NULL || (ms->neg.protocol & MILTER_P_NOCONNECT)) {
		milter_done(ms, FILTER_CONTINUE, NULL);
		return;
	}
	s = ctx->sess;
	switch (s->client_sa.ss_family) {
	case AF_INET: family = '4'; break;
	case AF_INET6: family = '6'; break;
	case AF_UNIX: family = 'L'; break;
	default: family = 'U'; break;
	}
	buf_init(&pkt);
	milter_put_connect(&pkt, s->client_name != NULL ? s->client_name : "unknown", family,
	    s->client_port, s->client_addr);
	milter_send_stage(ms, ctx, MILTER_M_CONNECT, NULL, &pkt);
	buf_free(&pkt);
	if (ms->neg.protocol & MILTER_P_NR_CONN) {
		milter_done(ms, FILTER_CONTINUE, NULL);
		return;
	}
	ms->phase = MP_CMD;
	ms->awaiting = MILTER_C_CONNECT;
	ms->timeout = FILTER_TIMEOUT_DEFAULT;
	filter_wait_timeout(ms->w, FILTER_TIMEOUT_DEFAULT);
}

/* milter_helo - HELO/EHLO (again after STARTTLS, with the TLS macros) */
static enum filter_verdict
milter_helo(void *inst, struct filter_ctx *ctx, const char *helo, struct filter_reply *r)
{
	struct milter_sess *ms = *ctx->priv;
	struct buf pkt;

	(void)inst;
	if (ms == NULL)
		return FILTER_CONTINUE;
	if (ms->neg.protocol & MILTER_P_NOHELO)
		return FILTER_CONTINUE;
	milter_abort_txn(ms);
	buf_init(&pkt);
	milter_put_strings(&pkt, MILTER_C_HELO, &helo, 1);
	return milter_command(ms, ctx, MILTER_M_HELO, NULL, &pkt, MILTER_P_NR_HELO, r);
}

/* milter_mail - MAIL FROM with its ESMTP parameters; ABORT first if a message was open */
static enum filter_verdict
milter_mail(void *inst, struct filter_ctx *ctx, const char *from, struct filter_reply *r)
{
	struct milter_sess *ms = *ctx->priv;
	struct buf pkt;

	(void)inst;
	if (ms == NULL)
		return FILTER_CONTINUE;
	milter_abort_txn(ms);
	ms->in_txn = true;
	if (ms->neg.protocol & MILTER_P_NOMAIL)
		return FILTER_CONTINUE;
	buf_init(&pkt);
	milter_put_args(&pkt, MILTER_C_MAIL, from, ctx->txn->mail_params != NULL ?
	    ctx->txn->mail_params : "");
	return milter_command(ms, ctx, MILTER_M_MAIL, NULL, &pkt, MILTER_P_NR_MAIL, r);
}

/* milter_rcpt - RCPT TO with its parameters: a reject refuses that recipient */
static enum filter_verdict
milter_rcpt(void *inst, struct filter_ctx *ctx, const char *rcpt, struct filter_reply *r)
{
	struct milter_sess *ms = *ctx->priv;
	struct buf pkt;

	(void)inst;
	if (ms == NULL || (ms->neg.protocol & MILTER_P_NORCPT))
		return FILTER_CONTINUE;
	buf_init(&pkt);
	milter_put_args(&pkt, MILTER_C_RCPT, rcpt, ctx->txn->rcpt_params_cur != NULL ?
	    ctx->txn->rcpt_params_cur : "");
	return milter_command(ms, ctx, MILTER_M_RCPT, rcpt, &pkt, MILTER_P_NR_RCPT, r);
}

/* ---- the DATA conversation ---- */

/*
 * milter_put_header - a HEADER packet: the value without the space after
 * the ':' unless the milter asked for it (HDR_LEADSPC), folded with LF
 * alone, as Postfix and Sendmail send it
 */
static void
milter_put_header(const struct milter_sess *ms, const struct filter_header *h, struct buf *out)
{
	const char *p = h->value;
	struct buf d;

	buf_init(&d);
	buf_append(&d, h->name, strlen(h->name) + 1);
	if (ms->neg.protocol & MILTER_P_HDR_LEADSPC) {
		if (*p != ' ' && *p != '\t')
			buf_putc(&d, ' ');	/* as the block will be written */
	} else if (*p == ' ')
		p++;
	for (; *p != '\0'; p++)
		if (p[0] != '\r' || p[1] != '\n')
			buf_putc(&d, *p);
	buf_putc(&d, '\0');
	milter_put(out, MILTER_C_HEADER, d.data, d.len);
	buf_free(&d);
}

/* milter_send_chunk - the next BODY packet; false when the spool cannot be read */
static bool
milter_send_chunk(struct milter_sess *ms, const struct filter_txn *txn)
{
	size_t n = ms->blen - ms->boff < MILTER_CHUNK ? ms->blen - ms->boff : MILTER_CHUNK;
	unsigned char head[5];
	const char *p;
	ssize_t got;

	if (ms->bmem != NULL) {
		p = ms->bmem + ms->boff;
	} else {
		if (ms->chunk == NULL)
			ms->chunk = xmalloc(MILTER_CHUNK);
		if ((got = spool_pread(txn->body, ms->chunk, n, ms->boff)) <= 0)
			return false;
		n = (size_t)got;
		p = ms->chunk;
	}
	milter_put_head(head, MILTER_C_BODY, n);
	bufferevent_write(ms->bev, head, sizeof(head));
	bufferevent_write(ms->bev, p, n);
	ms->boff += n;
	return true;
}

/*
 * milter_pump - send what the DATA conversation owes until a reply is
 * due or the output is full (the write callback resumes).  false when it
 * failed the stage: the caller returns at once.
 */
static bool
milter_pump(struct milter_sess *ms)
{
	struct filter_ctx *ctx = ms->w != NULL ? filter_wait_ctx(ms->w) : NULL;
	uint32_t proto = ms->neg.protocol;
	struct buf pkt;

	if (ctx == NULL || ms->phase != MP_DATA)
		return true;
	buf_init(&pkt);
	while (ms->awaiting == 0 && ms->dstep != DS_WAIT_EOM && ms->bev != NULL &&
	    evbuffer_get_length(bufferevent_get_output(ms->bev)) < MILTER_OUT_HIGH) {
		buf_reset(&pkt);
		switch (ms->dstep) {
		case DS_DATA:
			ms->dstep = DS_HEADERS;
			if (proto & MILTER_P_NODATA)
				break;
			milter_put(&pkt, MILTER_C_DATA, NULL, 0);
			milter_send_stage(ms, ctx, MILTER_M_DATA, NULL, &pkt);
			ms->awaiting = (proto & MILTER_P_NR_DATA) ? 0 : MILTER_C_DATA;
			break;
		case DS_HEADERS:
			if ((proto & MILTER_P_NOHDRS) || ms->hi >= ms->nhdrs) {
				ms->dstep = DS_EOH;
				break;
			}
			milter_put_header(ms, &ms->hdrs[ms->hi++], &pkt);
			milter_send(ms, &pkt);
			ms->awaiting = (proto & MILTER_P_NR_HDR) ? 0 : MILTER_C_HEADER;
			break;
		case DS_EOH:
			ms->dstep = DS_BODY;
			if (proto & MILTER_P_NOEOH)
				break;
			milter_put(&pkt, MILTER_C_EOH, NULL, 0);
			milter_send_stage(ms, ctx, MILTER_M_EOH, NULL, &pkt);
			ms->awaiting = (proto & MILTER_P_NR_EOH) ? 0 : MILTER_C_EOH;
			break;
		case DS_BODY:
			if ((proto & MILTER_P_NOBODY) || ms->skip || ms->boff >= ms->blen) {
				ms->dstep = DS_EOM;
				break;
			}
			if (!milter_send_chunk(ms, ctx->txn)) {
				buf_free(&pkt);
				milter_fail(ms, "cannot read the message from its spool");
				return false;
			}
			ms->awaiting = (proto & MILTER_P_NR_BODY) ? 0 : MILTER_C_BODY;
			break;
		case DS_EOM:
			milter_put(&pkt, MILTER_C_BODYEOB, NULL, 0);
			milter_send_stage(ms, ctx, MILTER_M_EOM, NULL, &pkt);
			ms->awaiting = MILTER_C_BODYEOB;
			ms->dstep = DS_WAIT_EOM;
			break;
		case DS_WAIT_EOM:
			break;
		}
	}
	buf_free(&pkt);
	return true;
}

/* milter_eom - the DATA conversation, on the message as the filters before left it */
static enum filter_verdict
milter_eom(void *inst, struct filter_ctx *ctx, struct filter_reply *r)
{
	struct milter_sess *ms = *ctx->priv;
	enum filter_verdict v;

	(void)inst;
	if (ms == NULL)
		return FILTER_CONTINUE;
	if (ms->bev == NULL)
		return milter_now_failed(ms, ctx, "connection lost", r);
	milter_data_clear(ms);
	ms->hdrs = filter_headers_edited(ctx->txn, &ms->nhdrs);
	filter_body_view(ctx->txn, &ms->bmem, &ms->boff, &ms->blen);
	if (ms->bmem == NULL && ctx->txn->body == NULL)
		ms->blen = 0;
	ms->dstep = DS_DATA;
	ms->in_txn = true;
	if ((v = milter_wait(ms, ctx, MP_DATA, 0, ms->inst->content_timeout, r)) != FILTER_PENDING)
		return v;
	milter_pump(ms);
	return FILTER_PENDING;
}

/* milter_unbracket - "<a@b>" as a@b, into buf */
static const char *
milter_unbracket(const char *s, char *buf, size_t size)
{
	size_t l = strlen(s);

	if (l >= 2 && s[0] == '<' && s[l - 1] == '>' && l - 2 < size) {
		memcpy(buf, s + 1, l - 2);
		buf[l - 2] = '\0';
		return buf;
	}
	return s;
}

/* milter_crlf - a replaced body with CRLF line ends (a milter may send LF alone) */
static void
milter_crlf(const struct buf *in, struct buf *out)
{
	size_t i;

	for (i = 0; i < in->len; i++) {
		if (in->data[i] == '\n' && (i == 0 || in->data[i - 1] != '\r'))
			buf_putc(out, '\r');
		buf_putc(out, in->data[i]);
	}
}

/* milter_apply - the kept modifications become the chain's edits */
static void
milter_apply(struct milter_sess *ms, struct filter_txn *txn)
{
	const unsigned char *p = (const unsigned char *)ms->mods.data, *d;
	size_t left = ms->mods.len, dlen, used;
	struct milter_msg m;
	const char *why;
	char cmd, addr[1024];
	struct buf body;

	while (left > 0 && milter_frame(p, left, SIZE_MAX, &cmd, &d, &dlen, &used, &why) ==
	    MILTER_FRAME_OK) {
		if (milter_parse_msg(cmd, d, dlen, &m, &why)) {
			switch (m.kind) {
			case MILTER_R_ADDHEADER:
				filter_add_header(txn, m.name, m.value);
				break;
			case MILTER_R_INSHEADER:
				filter_insert_header(txn, m.index, m.name, m.value);
				break;
			case MILTER_R_CHGHEADER:
				filter_change_header(txn, m.name, m.index > 0 ? m.index : 1,
				    m.value[0] != '\0' ? m.value : NULL);
				break;
			case MILTER_R_ADDRCPT:
			case MILTER_R_ADDRCPT_PAR:
				filter_add_rcpt(txn, milter_unbracket(m.value, addr, sizeof(addr)),
				    m.args);
				break;
			case MILTER_R_DELRCPT:
				filter_delete_rcpt(txn, milter_unbracket(m.value, addr, sizeof(addr)));
				break;
			case MILTER_R_CHGFROM:
				filter_change_from(txn, milter_unbracket(m.value, addr, sizeof(addr)),
				    m.args);
				break;
			default:
				break;
			}
		}
		p += used;
		left -= used;
	}
	if (ms->replbody) {
		buf_init(&body);
		milter_crlf(&ms->body, &body);
		filter_replace_body(txn, body.data != NULL ? body.data : "", body.len);
		buf_free(&body);
	}
}

/* milter_action_of - the action a modification needs negotiated */
static uint32_t
milter_action_of(enum milter_msg_kind k)
{
	switch (k) {
	case MILTER_R_ADDHEADER:
	case MILTER_R_INSHEADER: return MILTER_A_ADDHDRS;
	case MILTER_R_CHGHEADER: return MILTER_A_CHGHDRS;
	case MILTER_R_ADDRCPT: return MILTER_A_ADDRCPT;
	case MILTER_R_ADDRCPT_PAR: return MILTER_A_ADDRCPT_PAR;
	case MILTER_R_DELRCPT: return MILTER_A_DELRCPT;
	case MILTER_R_CHGFROM: return MILTER_A_CHGFROM;
	case MILTER_R_REPLBODY: return MILTER_A_CHGBODY;
	case MILTER_R_QUARANTINE: return MILTER_A_QUARANTINE;
	default: return 0;
	}
}

/* ---- what the milter says ---- */

enum milter_next {
	NEXT_READ,		/* read on */
	NEXT_NEG,		/* negotiated: CONNECT follows */
	NEXT_DONE,		/* the stage's verdict is in v, r */
	NEXT_FAIL,		/* the milter failed: why */
};

/* milter_reply_set - a reply in r */
static void
milter_reply_set(struct filter_reply *r, int code, const char *ecode, const char *text)
{
	r->code = code;
	str_copy(r->ecode, ecode, sizeof(r->ecode));
	str_copy(r->text, text, sizeof(r->text));
}

/* milter_final - a reply that ends the stage, into v and r */
static enum milter_next
milter_final(struct milter_sess *ms, const struct milter_msg *m, enum filter_verdict *v,
    struct filter_reply *r)
{
	switch (m->kind) {
	case MILTER_R_CONTINUE:
		*v = FILTER_CONTINUE;
		break;
	case MILTER_R_ACCEPT:
		*v = FILTER_ACCEPT;
		break;
	case MILTER_R_REJECT:
		*v = FILTER_REJECT;
		milter_reply_set(r, 550, "5.7.1", "Command rejected");
		break;
	case MILTER_R_TEMPFAIL:
		*v = FILTER_TEMPFAIL;
		milter_reply_set(r, 451, "4.7.1", "Service unavailable - try again later");
		break;
	case MILTER_R_REPLYCODE:
		*r = m->reply;
		*v = r->code / 100 == 4 ? FILTER_TEMPFAIL : FILTER_REJECT;
		break;
	case MILTER_R_DISCARD:
		*v = FILTER_DISCARD;
		break;
	case MILTER_R_CONN_FAIL:
	case MILTER_R_SHUTDOWN:
		/* The session goes on: the milter's refusal is a temporary one. */
		*v = FILTER_TEMPFAIL;
		milter_reply_set(r, 451, "4.7.1", "Service unavailable - try again later");
		break;
	default:
		return NEXT_FAIL;
	}
	if (ms->awaiting == MILTER_C_BODYEOB)
		ms->in_txn = false;	/* the message is over for the milter */
	return NEXT_DONE;
}

/*
 * milter_handle - one packet from the milter: what it means for the stage.
 * Never completes the stage itself (the caller does, once the packet is
 * drained); everything kept is copied.
 */
static enum milter_next
milter_handle(struct milter_sess *ms, char cmd, const unsigned char *d, size_t n,
    enum filter_verdict *v, struct filter_reply *r, char *why, size_t whysz)
{
	struct milter_msg m;
	const char *err;
	uint32_t need;

	memset(r, 0, sizeof(*r));
	if (ms->phase == MP_NEG) {
		if (cmd != MILTER_C_OPTNEG) {
			snprintf(why, whysz, "answered the negotiation with command 0x%02x",
			    (unsigned char)cmd);
			return NEXT_FAIL;
		}
		if (!milter_parse_neg(d, n, MILTER_A_ALL, MILTER_P_OFFER, &ms->neg, &err)) {
			snprintf(why, whysz, "%s", err);
			return NEXT_FAIL;
		}
		return NEXT_NEG;
	}
	if (!milter_parse_msg(cmd, d, n, &m, &err)) {
		snprintf(why, whysz, "%s (command 0x%02x, %zu octets) after %s", err,
		    (unsigned char)cmd, n, milter_cmd_name(ms->awaiting));
		return NEXT_FAIL;
	}
	if (m.kind == MILTER_R_PROGRESS) {
		filter_wait_timeout(ms->w, ms->timeout);
		return NEXT_READ;
	}
	if (ms->awaiting == 0) {
		snprintf(why, whysz, "sent command 0x%02x when no reply was due",
		    (unsigned char)cmd);
		return NEXT_FAIL;
	}
	if ((need = milter_action_of(m.kind)) != 0) {
		if (ms->awaiting != MILTER_C_BODYEOB) {
			snprintf(why, whysz, "sent modification 0x%02x after %s, not at end of "
			    "message", (unsigned char)cmd, milter_cmd_name(ms->awaiting));
			return NEXT_FAIL;
		}
		if ((ms->neg.actions & need) == 0) {
			snprintf(why, whysz, "sent modification 0x%02x it did not negotiate",
			    (unsigned char)cmd);
			return NEXT_FAIL;
		}
		if (m.kind == MILTER_R_QUARANTINE) {
			if (ms->quarantine == NULL)
				ms->quarantine = xstrdup(m.value);
		} else if (m.kind == MILTER_R_REPLBODY) {
			if (ms->body.len + n > ms->inst->max_body) {
				snprintf(why, whysz, "replaced the body with more than %zu octets",
				    ms->inst->max_body);
				return NEXT_FAIL;
			}
			buf_append(&ms->body, d, n);
			ms->replbody = true;
		} else {
			if (ms->mods.len + n + 5 > MILTER_MODS_MAX) {
				snprintf(why, whysz, "sent more than %d octets of modifications",
				    MILTER_MODS_MAX);
				return NEXT_FAIL;
			}
			milter_put(&ms->mods, cmd, d, n);
		}
		return NEXT_READ;
	}
	if (m.kind == MILTER_R_SKIP) {
		if (ms->awaiting != MILTER_C_BODY || !(ms->neg.protocol & MILTER_P_SKIP)) {
			snprintf(why, whysz, "sent SKIP after %s", milter_cmd_name(ms->awaiting));
			return NEXT_FAIL;
		}
		ms->skip = true;
		ms->awaiting = 0;
		return NEXT_READ;
	}
	if (m.kind == MILTER_R_CONTINUE && ms->phase == MP_DATA &&
	    ms->awaiting != MILTER_C_BODYEOB) {
		ms->awaiting = 0;
		return NEXT_READ;
	}
	if (milter_final(ms, &m, v, r) != NEXT_DONE) {
		snprintf(why, whysz, "unexpected command 0x%02x", (unsigned char)cmd);
		return NEXT_FAIL;
	}
	return NEXT_DONE;
}

/* milter_log_verdict - a milter's refusal, discard or quarantine, for grep */
static void
milter_log_verdict(const struct milter_sess *ms, char cmd, enum filter_verdict v,
    const struct filter_reply *r)
{
	char esc[500];

	if (v == FILTER_CONTINUE || v == FILTER_ACCEPT)
		return;
	log_info("id=" SESSION_ID_FMT " event=milter milter=%s stage=%s action=%s reply=\"%d %s %s\"",
	    MILTER_ID(ms), ms->inst->name, milter_cmd_name(cmd), filter_verdict_name(v), r->code,
	    r->ecode, log_escape(esc, sizeof(esc), r->text, strlen(r->text)));
}

/*
 * milter_finish - the stage's verdict: at end of message the modifications
 * apply when the message goes on, and a quarantine marks it
 */
static void
milter_finish(struct milter_sess *ms, enum filter_verdict v, struct filter_reply *r)
{
	struct filter_ctx *ctx = filter_wait_ctx(ms->w);
	char cmd = ms->awaiting;

	if (ms->phase == MP_DATA) {
		if (cmd == MILTER_C_BODYEOB && ctx != NULL && ctx->txn != NULL &&
		    (v == FILTER_CONTINUE || v == FILTER_ACCEPT)) {
			milter_apply(ms, ctx->txn);
			if (ms->quarantine != NULL) {
				v = FILTER_QUARANTINE;
				memset(r, 0, sizeof(*r));
				str_copy(r->text, ms->quarantine, sizeof(r->text));
			}
		}
		milter_data_clear(ms);
	}
	milter_log_verdict(ms, cmd, v, r);
	milter_done(ms, v, r);
}

static void
milter_read_cb(struct bufferevent *bev, void *arg)
{
	struct milter_sess *ms = arg;
	struct evbuffer *in = bufferevent_get_input(bev);
	const unsigned char *p, *data;
	unsigned char head[4];
	size_t n, dlen, used;
	enum milter_next next;
	enum filter_verdict v = FILTER_CONTINUE;
	struct filter_reply r;
	const char *err;
	char cmd, why[300];

	while ((n = evbuffer_get_length(in)) > 0) {
		if (ms->w == NULL || ms->awaiting == 0) {
			milter_fail(ms, "sent %zu octets when no reply was due", n);
			return;
		}
		if (n < 4)
			return;
		evbuffer_copyout(in, head, 4);
		if (milter_frame(head, 4, MILTER_PACKET_MAX, &cmd, &data, &dlen, &used, &err) ==
		    MILTER_FRAME_BAD) {
			milter_fail(ms, "%s after %s", err, milter_cmd_name(ms->awaiting));
			return;
		}
		used = 4 + ((size_t)head[0] << 24 | (size_t)head[1] << 16 | (size_t)head[2] << 8 |
		    head[3]);
		if (n < used)
			return;
		p = evbuffer_pullup(in, (ssize_t)used);
		(void)milter_frame(p, used, MILTER_PACKET_MAX, &cmd, &data, &dlen, &used, &err);
		next = milter_handle(ms, cmd, data, dlen, &v, &r, why, sizeof(why));
		evbuffer_drain(in, used);
		switch (next) {
		case NEXT_READ:
			if (ms->phase == MP_DATA && ms->awaiting == 0 && !milter_pump(ms))
				return;
			break;
		case NEXT_NEG:
			milter_send_connect(ms);
			return;
		case NEXT_DONE:
			milter_finish(ms, v, &r);
			return;
		case NEXT_FAIL:
			milter_fail(ms, "%s", why);
			return;
		}
	}
}

static void
milter_write_cb(struct bufferevent *bev, void *arg)
{
	struct milter_sess *ms = arg;

	(void)bev;
	if (ms->phase == MP_DATA && ms->awaiting == 0)
		(void)milter_pump(ms);
}

static void
milter_event_cb(struct bufferevent *bev, short what, void *arg)
{
	struct milter_sess *ms = arg;
	struct buf out;
	int err;

	if (what & BEV_EVENT_CONNECTED) {
		buf_init(&out);
		milter_put_optneg(&out, MILTER_A_ALL, MILTER_P_OFFER);
		milter_send(ms, &out);
		buf_free(&out);
		ms->phase = MP_NEG;
		ms->awaiting = MILTER_C_OPTNEG;
		return;
	}
	(void)bev;
	err = EVUTIL_SOCKET_ERROR();
	if (ms->phase == MP_CONNECTING)
		milter_fail(ms, "connect to %s: %s", ms->inst->spec,
		    err != 0 ? strerror(err) : "failed");
	else if (what & BEV_EVENT_EOF)
		milter_fail(ms, "%s closed the connection%s%s", ms->inst->spec,
		    ms->awaiting != 0 ? " after " : "",
		    ms->awaiting != 0 ? milter_cmd_name(ms->awaiting) : "");
	else
		milter_fail(ms, "%s: %s", ms->inst->spec, err != 0 ? strerror(err) : "I/O error");
}

/* ---- the ends ---- */

/* milter_cancel - the chain stopped waiting: the conversation is lost, so is the connection */
static void
milter_cancel(void *inst, struct filter_ctx *ctx)
{
	struct milter_sess *ms = *ctx->priv;
	struct filter_wait *w;

	(void)inst;
	if (ms == NULL)
		return;
	milter_shut(ms);
	milter_data_clear(ms);
	if ((w = milter_take_wait(ms)) != NULL)
		filter_wait_done(w, FILTER_CONTINUE, NULL);	/* dropped by the chain */
}

/* milter_abort - the transaction ended without delivery: ABORT */
static void
milter_abort(void *inst, struct filter_ctx *ctx)
{
	struct milter_sess *ms = *ctx->priv;

	(void)inst;
	if (ms != NULL && ms->w == NULL)
		milter_abort_txn(ms);
}

/* milter_close - the session ends: QUIT, and the connection goes */
static void
milter_close(void *inst, struct filter_ctx *ctx)
{
	struct milter_sess *ms = *ctx->priv;
	struct buf out;

	if (ms == NULL)
		return;
	if (ms->w != NULL) {
		milter_cancel(inst, ctx);	/* never, normally: the chain cancelled first */
	} else if (ms->bev != NULL) {
		buf_init(&out);
		milter_put(&out, MILTER_C_QUIT, NULL, 0);
		milter_send(ms, &out);
		buf_free(&out);
		/*
		 * one try at writing what is queued: the milter sees QUIT, not a
		 * reset (rspamd logs the latter as an abnormal close).  A socket
		 * bufferevent keeps its output's front frozen to all but itself.
		 */
		evbuffer_unfreeze(bufferevent_get_output(ms->bev), 1);
		(void)evbuffer_write(bufferevent_get_output(ms->bev), bufferevent_getfd(ms->bev));
	}
	milter_shut(ms);
	*ctx->priv = NULL;
	milter_neg_clear(&ms->neg);
	milter_data_clear(ms);
	buf_free(&ms->mods);
	buf_free(&ms->body);
	free(ms);
}

const struct filter_ops milter_ops = {
	.name = "milter",
	.configure = milter_configure,
	.destroy = milter_destroy,
	.connect = milter_connect,
	.helo = milter_helo,
	.mail = milter_mail,
	.rcpt = milter_rcpt,
	.eom = milter_eom,
	.abort = milter_abort,
	.close = milter_close,
	.cancel = milter_cancel,
};
