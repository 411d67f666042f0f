/*
 * tf_api.c - test filters for the three ways of filter.h, driven through
 * whole SMTP sessions by tests/integration/test_filter_api.py:
 *   test-async  asks a test server on a real socket, on the loop
 *               (filter_wait_begin/done), one connection per call;
 *   test-block  blocks its pool thread for "sleep" milliseconds (test-block2:
 *               the same, to have two in one configuration);
 *   test-sign   a final-stage filter: prepends X-Test-Signature with the
 *               octets of the header block and body it saw;
 *   test-pass   inline, passes every stage (what one cheap filter costs:
 *               bench/throughput.sh FILTERS_B=test-pass).
 * Each takes "keyfile = PATH", read whole by configure() as a signer reads its
 * key: at start as root, on SIGHUP as the unprivileged user.
 *
 * test-async's exchange: it sends "STAGE ARG\n" (ARG "-" when none) and
 * reads one line: "continue", "accept", "discard", "reject CODE ECODE TEXT",
 * "tempfail CODE ECODE TEXT", "quarantine TEXT" or "header NAME VALUE"
 * (continue, having added the header; at the data stage only).  A closed
 * connection is a failure (filter_wait_fail): default_action applies.
 */
#include "config.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/event.h>

#include "util.h"
#include "log.h"
#include "spool.h"
#include "filter.h"
#include "testfilters.h"

/* ---- configuration shared by the three ---- */

struct tf_inst {
	char *key;		/* keyfile's contents, NULL without one */
	struct sockaddr_in server;	/* test-async */
	unsigned stages;	/* bit (1 << enum filter_stage) for each stage it acts at */
	unsigned sleep_ms;	/* test-block */
	enum filter_verdict verdict;	/* test-block */
};

static const char *const tf_stage_names[] = {
	[FILTER_STAGE_CONNECT] = "connect", [FILTER_STAGE_HELO] = "helo",
	[FILTER_STAGE_AUTH] = "auth", [FILTER_STAGE_MAIL] = "mail", [FILTER_STAGE_RCPT] = "rcpt",
	[FILTER_STAGE_DATA] = "data", [FILTER_STAGE_FINAL] = "final",
};

/* tf_stages - "rcpt data" into a mask; false on an unknown word */
static bool
tf_stages(const char *v, unsigned *mask)
{
	char *copy = xstrdup(v), *w, *save = NULL;
	size_t i;
	bool ok = true;

	*mask = 0;
	for (w = strtok_r(copy, " ,", &save); w != NULL && ok; w = strtok_r(NULL, " ,", &save)) {
		for (i = 0; i < ARRAY_SIZE(tf_stage_names); i++)
			if (tf_stage_names[i] != NULL && strcmp(w, tf_stage_names[i]) == 0)
				break;
		if (i == ARRAY_SIZE(tf_stage_names))
			ok = false;
		else
			*mask |= 1u << i;
	}
	free(copy);
	return ok;
}

/* tf_read_key - the whole file, or NULL and why */
static char *
tf_read_key(const char *path, char **err_r)
{
	FILE *f = fopen(path, "r");
	char buf[4096];
	size_t n;

	if (f == NULL) {
		*err_r = xasprintf("cannot read %s: %s", path, strerror(errno));
		return NULL;
	}
	n = fread(buf, 1, sizeof(buf) - 1, f);
	fclose(f);
	buf[n] = '\0';
	return xstrdup(buf);
}

/* tf_destroy - an instance */
static void
tf_destroy(void *inst)
{
	struct tf_inst *in = inst;

	if (in != NULL)
		free(in->key);
	free(in);
}

/* tf_configure - server, stages, sleep, verdict, keyfile; the chain's keys are the chain's */
static void *
tf_configure(const struct conf *conf, const struct conf_section *sec, char **err_r)
{
	struct tf_inst *in = xcalloc(1, sizeof(*in));
	const char *k, *v, *colon;
	size_t i;

	in->stages = ~0u;
	in->verdict = FILTER_CONTINUE;
	for (i = 0; sec != NULL && i < sec->nkv; i++) {
		k = sec->kv[i].key;
		v = sec->kv[i].value;
		if (filter_chain_key(k))
			continue;
		if (strcmp(k, "server") == 0 && (colon = strrchr(v, ':')) != NULL) {
			char host[64];

			str_copy(host, v, (size_t)(colon - v) + 1 < sizeof(host) ?
			    (size_t)(colon - v) + 1 : sizeof(host));
			in->server.sin_family = AF_INET;
			in->server.sin_port = htons((unsigned short)atoi(colon + 1));
			if (inet_pton(AF_INET, host, &in->server.sin_addr) != 1)
				goto bad;
		} else if (strcmp(k, "stages") == 0) {
			if (!tf_stages(v, &in->stages))
				goto bad;
		} else if (strcmp(k, "sleep") == 0) {
			in->sleep_ms = (unsigned)atoi(v);
		} else if (strcmp(k, "keyfile") == 0) {
			if ((in->key = tf_read_key(v, err_r)) == NULL) {
				free(in);
				return NULL;
			}
		} else if (strcmp(k, "verdict") == 0) {
			if (strcmp(v, "reject") == 0)
				in->verdict = FILTER_REJECT;
			else if (strcmp(v, "continue") != 0)
				goto bad;
		} else {
			goto bad;
		}
	}
	return in;
bad:
	*err_r = xasprintf("test filter: bad key %s = %s", k, v);
	tf_destroy(in);
	return NULL;
}

/* ---- test-async ---- */

struct ta_sess;

/* One question to the test server. */
struct ta_call {
	struct bufferevent *bev;
	struct filter_wait *w;
	struct ta_sess *ts;
};

/* The per-session state: the call in flight, for cancel(). */
struct ta_sess {
	struct ta_call *call;
};

/* ta_call_end - close the connection; the handle is the caller's to complete */
static struct filter_wait *
ta_call_end(struct ta_call *call)
{
	struct filter_wait *w = call->w;

	bufferevent_free(call->bev);
	call->ts->call = NULL;
	free(call);
	return w;
}

/* ta_parse - the server's line into a verdict and reply */
static enum filter_verdict
ta_parse(char *line, struct filter_wait *w, struct filter_reply *r)
{
	char *sp = strchr(line, ' '), *rest = sp != NULL ? sp + 1 : "";
	struct filter_ctx *c;

	if (sp != NULL)
		*sp = '\0';
	memset(r, 0, sizeof(*r));
	if (strcmp(line, "reject") == 0 || strcmp(line, "tempfail") == 0) {
		char ecode[16] = "";
		int code = 0, n = 0;

		if (sscanf(rest, "%d %15s %n", &code, ecode, &n) >= 2) {
			r->code = code;
			str_copy(r->ecode, ecode, sizeof(r->ecode));
			str_copy(r->text, rest + n, sizeof(r->text));
		}
		return line[0] == 'r' ? FILTER_REJECT : FILTER_TEMPFAIL;
	}
	if (strcmp(line, "accept") == 0)
		return FILTER_ACCEPT;
	if (strcmp(line, "discard") == 0)
		return FILTER_DISCARD;
	if (strcmp(line, "quarantine") == 0) {
		str_copy(r->text, rest, sizeof(r->text));
		return FILTER_QUARANTINE;
	}
	if (strcmp(line, "header") == 0 && (sp = strchr(rest, ' ')) != NULL &&
	    (c = filter_wait_ctx(w)) != NULL && c->txn != NULL) {
		*sp = '\0';
		filter_add_header(c->txn, rest, sp + 1);
	}
	return FILTER_CONTINUE;
}

/* ta_read - the answer */
static void
ta_read(struct bufferevent *bev, void *arg)
{
	struct ta_call *call = arg;
	struct filter_reply r;
	struct filter_wait *w;
	enum filter_verdict v;
	char *line;

	if ((line = evbuffer_readln(bufferevent_get_input(bev), NULL, EVBUFFER_EOL_CRLF)) == NULL)
		return;
	w = ta_call_end(call);
	v = ta_parse(line, w, &r);
	free(line);
	filter_wait_done(w, v, &r);
}

/* ta_event - connected, or the connection failed or closed before an answer */
static void
ta_event(struct bufferevent *bev, short what, void *arg)
{
	struct ta_call *call = arg;

	if (what & BEV_EVENT_CONNECTED)
		return;
	filter_wait_fail(ta_call_end(call), (what & BEV_EVENT_EOF) ?
	    "test server closed the connection" : "test server unreachable");
}

/* ta_ask - one stage: ask the server on the loop */
static enum filter_verdict
ta_ask(struct tf_inst *in, struct filter_ctx *ctx, enum filter_stage stage, const char *arg)
{
	struct ta_sess *ts;
	struct ta_call *call;

	if (!(in->stages & (1u << stage)))
		return FILTER_CONTINUE;
	if (*ctx->priv == NULL)
		*ctx->priv = xcalloc(1, sizeof(struct ta_sess));
	ts = *ctx->priv;
	call = xcalloc(1, sizeof(*call));
	if ((call->w = filter_wait_begin(ctx)) == NULL)
		fatal("test-async: no loop to wait on");
	call->ts = ts;
	ts->call = call;
	call->bev = bufferevent_socket_new(ctx->base, -1, BEV_OPT_CLOSE_ON_FREE);
	bufferevent_setcb(call->bev, ta_read, NULL, ta_event, call);
	bufferevent_enable(call->bev, EV_READ);
	evbuffer_add_printf(bufferevent_get_output(call->bev), "%s %s\n", tf_stage_names[stage],
	    arg != NULL && *arg != '\0' ? arg : "-");
	if (bufferevent_socket_connect(call->bev, (struct sockaddr *)&in->server,
	    sizeof(in->server)) != 0)
		filter_wait_fail(ta_call_end(call), "connect failed");
	return FILTER_PENDING;
}

static enum filter_verdict
ta_connect(void *inst, struct filter_ctx *ctx, struct filter_reply *r)
{
	return ta_ask(inst, ctx, FILTER_STAGE_CONNECT, ctx->sess->client_addr);
}

static enum filter_verdict
ta_helo(void *inst, struct filter_ctx *ctx, const char *helo, struct filter_reply *r)
{
	return ta_ask(inst, ctx, FILTER_STAGE_HELO, helo);
}

static enum filter_verdict
ta_auth(void *inst, struct filter_ctx *ctx, const char *user, struct filter_reply *r)
{
	return ta_ask(inst, ctx, FILTER_STAGE_AUTH, user);
}

static enum filter_verdict
ta_mail(void *inst, struct filter_ctx *ctx, const char *from, struct filter_reply *r)
{
	return ta_ask(inst, ctx, FILTER_STAGE_MAIL, from);
}

static enum filter_verdict
ta_rcpt(void *inst, struct filter_ctx *ctx, const char *rcpt, struct filter_reply *r)
{
	return ta_ask(inst, ctx, FILTER_STAGE_RCPT, rcpt);
}

static enum filter_verdict
ta_eom(void *inst, struct filter_ctx *ctx, struct filter_reply *r)
{
	return ta_ask(inst, ctx, FILTER_STAGE_DATA, ctx->txn->queue_id);
}

/* ta_cancel - the chain stopped waiting: hang up, and give the handle back (dropped) */
static void
ta_cancel(void *inst, struct filter_ctx *ctx)
{
	struct ta_sess *ts = *ctx->priv;

	log_info("event=testfilter filter=test-async action=cancel");
	if (ts != NULL && ts->call != NULL)
		filter_wait_done(ta_call_end(ts->call), FILTER_CONTINUE, NULL);
}

static void
tf_close(void *inst, struct filter_ctx *ctx)
{
	free(*ctx->priv);
	*ctx->priv = NULL;
}

static const struct filter_ops tf_async_ops = {
	.name = "test-async", .configure = tf_configure, .destroy = tf_destroy,
	.connect = ta_connect, .helo = ta_helo, .auth = ta_auth, .mail = ta_mail, .rcpt = ta_rcpt,
	.eom = ta_eom,
	.cancel = ta_cancel, .close = tf_close,
};

/* ---- test-block ---- */

/* tb_stage - on a pool thread: sleep, then the configured verdict */
static enum filter_verdict
tb_stage(struct tf_inst *in, enum filter_stage stage, struct filter_reply *r)
{
	if (!(in->stages & (1u << stage)))
		return FILTER_CONTINUE;
	usleep(in->sleep_ms * 1000u);
	if (in->verdict == FILTER_REJECT) {
		r->code = 554;
		str_copy(r->ecode, "5.7.1", sizeof(r->ecode));
		str_copy(r->text, "test-block says no", sizeof(r->text));
	}
	return in->verdict;
}

static enum filter_verdict
tb_mail(void *inst, struct filter_ctx *ctx, const char *from, struct filter_reply *r)
{
	return tb_stage(inst, FILTER_STAGE_MAIL, r);
}

static enum filter_verdict
tb_rcpt(void *inst, struct filter_ctx *ctx, const char *rcpt, struct filter_reply *r)
{
	return tb_stage(inst, FILTER_STAGE_RCPT, r);
}

static enum filter_verdict
tb_eom(void *inst, struct filter_ctx *ctx, struct filter_reply *r)
{
	return tb_stage(inst, FILTER_STAGE_DATA, r);
}

static const struct filter_ops tf_block_ops = {
	.name = "test-block", .may_block = true, .configure = tf_configure, .destroy = tf_destroy,
	.mail = tb_mail, .rcpt = tb_rcpt, .eom = tb_eom,
};

/* test-block2: the same, configured apart (two blocking filters in one configuration) */
static const struct filter_ops tf_block2_ops = {
	.name = "test-block2", .may_block = true, .configure = tf_configure, .destroy = tf_destroy,
	.mail = tb_mail, .rcpt = tb_rcpt, .eom = tb_eom,
};

/* ---- test-sign ---- */

/* ts_final - "X-Test-Signature: head=N body=M": what a signer would cover */
static enum filter_verdict
ts_final(void *inst, struct filter_ctx *ctx, struct filter_reply *r)
{
	struct filter_txn *t = ctx->txn;
	char v[96];

	snprintf(v, sizeof(v), "head=%zu body=%zu", t->head->len,
	    t->body != NULL ? spool_size(t->body) - t->body_offset : 0);
	filter_prepend_header(t, "X-Test-Signature", v);
	return FILTER_CONTINUE;
}

static const struct filter_ops tf_sign_ops = {
	.name = "test-sign", .configure = tf_configure, .destroy = tf_destroy, .final = ts_final,
};

/* ---- test-pass ---- */

static enum filter_verdict
tp_connect(void *inst, struct filter_ctx *ctx, struct filter_reply *r)
{
	return FILTER_CONTINUE;
}

static enum filter_verdict
tp_helo(void *inst, struct filter_ctx *ctx, const char *helo, struct filter_reply *r)
{
	return FILTER_CONTINUE;
}

/* tp_addr - MAIL and RCPT */
static enum filter_verdict
tp_addr(void *inst, struct filter_ctx *ctx, const char *addr, struct filter_reply *r)
{
	return FILTER_CONTINUE;
}

static enum filter_verdict
tp_eom(void *inst, struct filter_ctx *ctx, struct filter_reply *r)
{
	return FILTER_CONTINUE;
}

static const struct filter_ops tf_pass_ops = {
	.name = "test-pass", .connect = tp_connect, .helo = tp_helo, .mail = tp_addr,
	.rcpt = tp_addr, .eom = tp_eom,
};

/* tf_api_register - the four */
void
tf_api_register(void)
{
	filter_register(&tf_pass_ops);
	filter_register(&tf_block2_ops);
	filter_register(&tf_async_ops);
	filter_register(&tf_block_ops);
	filter_register(&tf_sign_ops);
}
