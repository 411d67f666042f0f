/*
 * greylist.c - the "greylist" policy filter: at RCPT, a (client, sender,
 * recipient) triplet seen for the first time is deferred with 451 4.7.1,
 * and passes once the client retries after `delay` seconds (postgrey's
 * rule: real MTAs retry, most spam engines do not).  The triplets live in
 * the shared-state store (policy/state.h): this process's memory, or Redis
 * shared by every node of a fleet, so a retry reaching another node passes.
 *
 * [filter greylist] keys (besides the chain's timeout and default_action):
 *   delay = 300             seconds before a retry passes; 0: every
 *                           triplet passes and is recorded (learning)
 *   retry_window = 172800   seconds a new triplet waits for its retry
 *   lifetime = 3024000      seconds a passed triplet is remembered
 *   auto_allow = 5          passed triplets after which the client network
 *                           skips greylisting; 0 never
 *   network_prefix4 = 24, network_prefix6 = 64   the triplet's client part:
 *                           a sender's pool retries from another address
 *   identity = network | spf   spf: when the spf filter recorded pass for
 *                           the MAIL FROM domain (at MAIL, before any RCPT),
 *                           the client part is that domain, so a retry from
 *                           any address its SPF record allows passes
 *   exempt = CIDRs          never greylisted
 *   authenticated = skip | greylist   sessions with AUTH (default skip)
 *
 * Keys in the store: "gl:t:" + 32 hex digits of SHA-256(client part NUL
 * sender NUL recipient), sender and recipient lower-cased (the null sender
 * is "": bounces retry too); "gl:c:" + the client network's text counts its
 * passed triplets for auto_allow.
 *
 * A store on Redis answers later: the filter returns FILTER_PENDING and the
 * store's callback completes the stage on the loop.  cancel() and close()
 * cancel the call in flight.  A store that fails lets the recipient pass or
 * defers it with 451 4.3.0, as [redis] on_error says, and logs either.
 *
 * The instance is read-only after configure(); the per-session state holds
 * at most one call (the chain runs one stage at a time).  Never logs
 * client text unescaped.
 */
#include "config.h"

#include <arpa/inet.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cidr.h"
#include "log.h"
#include "util.h"
#include "state.h"
#include "filter.h"
#include "greylist.h"

#define GREYLIST_KEYS	"delay, retry_window, lifetime, auto_allow, network_prefix4, " \
	"network_prefix6, identity, exempt, authenticated, timeout and default_action"
#define GREYLIST_NET_BUF	(INET6_ADDRSTRLEN + 5)	/* "2001:db8::/64" */
#define GREYLIST_IDENT_BUF	(4 + 256)		/* "spf:" + a domain */
#define GREYLIST_LOG_ADDR	(256 * 4)		/* an escaped address */

struct greylist {
	struct state *st;
	struct state_grey_params p;
	unsigned prefix4, prefix6;
	bool spf;			/* identity = spf */
	bool greylist_auth;		/* authenticated = greylist */
	struct conf_nets exempt;	/* never greylisted */
};

/* Per session: the call in flight, and what its log line names */
struct greylist_sess {
	const struct greylist *g;
	uint64_t id;
	struct state_op *op;		/* NULL: none in flight */
	struct filter_wait *w;		/* its handle */
	bool logged;			/* this transaction's pass (or skip) is logged */
	char client[INET6_ADDRSTRLEN];
	char ident[GREYLIST_IDENT_BUF];	/* the triplet's client part */
	char *from, *rcpt;		/* the call's, escaped for the log */
};

/* ---- keys ---- */

/* greylist_triplet_key - "gl:t:" + SHA-256 of the triplet, 32 hex digits (greylist.h) */
void
greylist_triplet_key(const char *client, const char *sender, const char *rcpt,
    char key[GREYLIST_KEY_BUF])
{
	char *in, *s, *r;
	size_t nc = strlen(client), ns = strlen(sender), nr = strlen(rcpt);

	in = xmalloc(nc + ns + nr + 3);	/* three strings and their NULs */
	memcpy(in, client, nc + 1);
	s = in + nc + 1;
	memcpy(s, sender, ns + 1);
	str_lower(s);
	r = s + ns + 1;
	memcpy(r, rcpt, nr + 1);
	str_lower(r);
	memcpy(key, "gl:t:", 5);
	state_key_digest(in, nc + ns + nr + 2, 16, key + 5);
	free(in);
}

/* greylist_network - the client's network as text ("192.0.2.0/24"); false if not IP */
static bool
greylist_network(const struct greylist *g, const struct sockaddr *sa, char *out, size_t size)
{
	struct cidr net;

	return cidr_of(sa, g->prefix4, g->prefix6, &net) && cidr_text(&net, out, size);
}

/*
 * greylist_spf_domain - the MAIL FROM domain when the spf filter recorded
 * pass for it (scope mailfrom), else NULL
 */
static const char *
greylist_spf_domain(const struct filter_txn *txn)
{
	const char *at = strrchr(txn->mail_from, '@');
	size_t i;

	if (at == NULL || at[1] == '\0')
		return NULL;
	for (i = 0; i < txn->nfacts; i++) {
		const struct filter_auth_fact *f = &txn->facts[i];

		if (strcmp(f->method, "spf") == 0 && strcmp(f->result, "pass") == 0 &&
		    f->scope != NULL && strcmp(f->scope, "mailfrom") == 0 &&
		    f->domain != NULL && str_casecmp(f->domain, at + 1) == 0)
			return at + 1;
	}
	return NULL;
}

/* ---- configuration ---- */

/* greylist_exempt - the networks of exempt; false + *err_r */
static bool
greylist_exempt(struct greylist *g, const struct conf_kv *kv, char **err_r)
{
	char *why = NULL;

	if (conf_nets_parse(kv->value, &g->exempt, &why))
		return true;
	*err_r = xasprintf("exempt (line %d): %s", kv->line, why);
	free(why);
	return false;
}

/* greylist_word - key = one of two words: *flag true for the second; false + *err_r */
static bool
greylist_word(const struct conf_kv *kv, const char *no, const char *yes, bool *flag,
    char **err_r)
{
	if (strcmp(kv->value, no) == 0 || strcmp(kv->value, yes) == 0) {
		*flag = strcmp(kv->value, yes) == 0;
		return true;
	}
	*err_r = xasprintf("%s \"%s\" at line %d: expected %s or %s", kv->key, kv->value, kv->line,
	    no, yes);
	return false;
}

/* greylist_key - one key of the section; false + *err_r */
static bool
greylist_key(struct greylist *g, const struct conf_kv *kv, char **err_r)
{
	static const struct {
		const char *name;
		size_t off;
		unsigned long lo, hi;
	} nums[] = {
		{ "delay", offsetof(struct greylist, p.delay), 0, 86400 },
		{ "retry_window", offsetof(struct greylist, p.retry_window), 1, 2592000 },
		{ "lifetime", offsetof(struct greylist, p.lifetime), 1, 31536000 },
		{ "auto_allow", offsetof(struct greylist, p.auto_allow), 0, 1000000 },
		{ "network_prefix4", offsetof(struct greylist, prefix4), 8, 32 },
		{ "network_prefix6", offsetof(struct greylist, prefix6), 16, 128 },
	};
	size_t i;

	for (i = 0; i < sizeof(nums) / sizeof(nums[0]); i++)
		if (strcmp(kv->key, nums[i].name) == 0)
			return filter_conf_uint(kv, nums[i].lo, nums[i].hi,
			    (unsigned *)(void *)((char *)g + nums[i].off), err_r);
	if (strcmp(kv->key, "identity") == 0)
		return greylist_word(kv, "network", "spf", &g->spf, err_r);
	if (strcmp(kv->key, "authenticated") == 0)
		return greylist_word(kv, "skip", "greylist", &g->greylist_auth, err_r);
	if (strcmp(kv->key, "exempt") == 0)
		return greylist_exempt(g, kv, err_r);
	if (strcmp(kv->key, "timeout") == 0 || strcmp(kv->key, "default_action") == 0)
		return true;
	*err_r = xasprintf("unknown key \"%s\" (line %d); the keys are " GREYLIST_KEYS, kv->key,
	    kv->line);
	return false;
}

/* greylist_destroy - the instance */
static void
greylist_destroy(void *inst)
{
	struct greylist *g = inst;

	free(g->exempt.v);
	free(g);
}

/* greylist_configure - [filter greylist]; every key has a default */
static void *
greylist_configure(const struct conf *conf, const struct conf_section *sec, char **err_r)
{
	struct greylist *g = xcalloc(1, sizeof(*g));
	size_t i;

	g->p.delay = 300;
	g->p.retry_window = 172800;
	g->p.lifetime = 3024000;
	g->p.auto_allow = 5;
	g->prefix4 = 24;
	g->prefix6 = 64;
	for (i = 0; sec != NULL && i < sec->nkv; i++)
		if (!greylist_key(g, &sec->kv[i], err_r))
			goto fail;
	if (g->p.retry_window <= g->p.delay) {
		*err_r = xasprintf("retry_window (%u) must be longer than delay (%u): no retry "
		    "could pass", g->p.retry_window, g->p.delay);
		goto fail;
	}
	g->st = state_get(conf);
	return g;
fail:
	greylist_destroy(g);
	return NULL;
}

/* ---- the filter ---- */

/* greylist_sess_get - the session's state, made at first use */
static struct greylist_sess *
greylist_sess_get(const struct greylist *g, struct filter_ctx *ctx)
{
	struct greylist_sess *s = *ctx->priv;

	if (s == NULL) {
		s = *ctx->priv = xcalloc(1, sizeof(*s));
		s->g = g;
		s->id = ctx->sess->id;
		str_copy(s->client, ctx->sess->client_addr, sizeof(s->client));
	}
	return s;
}

/* greylist_call_done - forget the call's texts */
static void
greylist_call_done(struct greylist_sess *s)
{
	free(s->from);
	free(s->rcpt);
	s->from = s->rcpt = NULL;
}

/* greylist_log - one event=greylist line for the call in s */
static void
greylist_log(const struct greylist_sess *s, const char *what)
{
	log_info("id=" SESSION_ID_FMT " event=greylist %s client=%s identity=%s from=<%s> to=<%s>",
	    SESSION_ID(s->id), what, s->client, s->ident, s->from, s->rcpt);
}

/* greylist_decide - the store's answer for the call in s: the verdict, logged */
static enum filter_verdict
greylist_decide(struct greylist_sess *s, const struct state_reply *rep, struct filter_reply *r)
{
	char what[128], err[256];
	enum filter_verdict v = FILTER_CONTINUE;

	if (rep->error != NULL) {
		v = state_fail_open(s->g->st) ? FILTER_CONTINUE : FILTER_TEMPFAIL;
		log_warn("id=" SESSION_ID_FMT " event=greylist_store_error action=%s error=\"%s\" "
		    "client=%s", SESSION_ID(s->id), v == FILTER_CONTINUE ? "pass" : "tempfail",
		    log_escape(err, sizeof(err), rep->error, strlen(rep->error)), s->client);
		if (v == FILTER_TEMPFAIL) {
			r->code = 451;
			str_copy(r->ecode, "4.3.0", sizeof(r->ecode));
			str_copy(r->text, "Greylisting state unavailable, try again later",
			    sizeof(r->text));
		}
	} else if (rep->grey.verdict == STATE_GREY_NEW || rep->grey.verdict == STATE_GREY_EARLY) {
		snprintf(what, sizeof(what), "action=defer triplet=%s wait=%u",
		    rep->grey.verdict == STATE_GREY_NEW ? "new" : "early", rep->grey.wait);
		greylist_log(s, what);
		r->code = 451;
		str_copy(r->ecode, "4.7.1", sizeof(r->ecode));
		snprintf(r->text, sizeof(r->text), "Greylisted, try again in %u seconds",
		    rep->grey.wait);
		v = FILTER_TEMPFAIL;
	} else if (!s->logged) {
		s->logged = true;
		greylist_log(s, rep->grey.verdict == STATE_GREY_ALLOWED ?
		    "action=pass reason=auto_allow" : s->g->p.delay == 0 ?
		    "action=pass reason=no_delay" : "action=pass reason=retried");
	}
	greylist_call_done(s);
	return v;
}

/* greylist_answered - the store's late answer, on the loop */
static void
greylist_answered(void *arg, const struct state_reply *rep)
{
	struct greylist_sess *s = arg;
	struct filter_wait *w = s->w;
	struct filter_reply r;
	enum filter_verdict v;

	s->op = NULL;
	s->w = NULL;
	if (filter_wait_ctx(w) == NULL) {
		/* not waited for any more (cancel comes first; defensive) */
		greylist_call_done(s);
		filter_wait_done(w, FILTER_CONTINUE, NULL);
		return;
	}
	memset(&r, 0, sizeof(r));
	v = greylist_decide(s, rep, &r);
	filter_wait_done(w, v, &r);
}

/* greylist_skip - why this session is not greylisted, or NULL */
static const char *
greylist_skip(const struct greylist *g, const struct filter_session *sess)
{
	if (sess->auth_user != NULL && !g->greylist_auth)
		return "authenticated";
	if (cidr_any(g->exempt.v, g->exempt.n, (const struct sockaddr *)&sess->client_sa))
		return "exempt";
	return NULL;
}

/* greylist_mail - a transaction starts: its pass is logged once */
static enum filter_verdict
greylist_mail(void *inst, struct filter_ctx *ctx, const char *from, struct filter_reply *r)
{
	struct greylist_sess *s = *ctx->priv;

	(void)inst;
	(void)from;
	(void)r;
	if (s != NULL)
		s->logged = false;
	return FILTER_CONTINUE;
}

/* greylist_rcpt - look the triplet up: defer it until it is retried after the delay */
static enum filter_verdict
greylist_rcpt(void *inst, struct filter_ctx *ctx, const char *rcpt, struct filter_reply *r)
{
	const struct greylist *g = inst;
	struct greylist_sess *s = greylist_sess_get(g, ctx);
	const char *why, *dom, *from = ctx->txn->mail_from;
	char net[GREYLIST_NET_BUF], ckey[5 + GREYLIST_NET_BUF], key[GREYLIST_KEY_BUF];
	char buf[GREYLIST_LOG_ADDR];
	struct state_reply rep;

	if ((why = greylist_skip(g, ctx->sess)) != NULL) {
		if (!s->logged)
			log_info("id=" SESSION_ID_FMT " event=greylist action=skip reason=%s client=%s",
			    SESSION_ID(s->id), why, s->client);
		s->logged = true;
		return FILTER_CONTINUE;
	}
	if (!greylist_network(g, (const struct sockaddr *)&ctx->sess->client_sa, net, sizeof(net)))
		return FILTER_CONTINUE;	/* not an IP client (a local socket): nothing to key on */
	if (g->spf && (dom = greylist_spf_domain(ctx->txn)) != NULL) {
		snprintf(s->ident, sizeof(s->ident), "spf:%s", dom);
		str_lower(s->ident);
	} else
		str_copy(s->ident, net, sizeof(s->ident));
	greylist_triplet_key(s->ident, from, rcpt, key);
	snprintf(ckey, sizeof(ckey), "gl:c:%s", net);
	greylist_call_done(s);
	s->from = xstrdup(log_escape(buf, sizeof(buf), from, strlen(from)));
	s->rcpt = xstrdup(log_escape(buf, sizeof(buf), rcpt, strlen(rcpt)));
	s->op = state_grey(g->st, ctx->base, key, ckey, &g->p, &rep, greylist_answered, s);
	if (s->op == NULL)
		return greylist_decide(s, &rep, r);
	if ((s->w = filter_wait_begin(ctx)) == NULL) {
		state_cancel(s->op);	/* no loop to wait on */
		s->op = NULL;
		memset(&rep, 0, sizeof(rep));
		rep.error = "no event loop";
		return greylist_decide(s, &rep, r);
	}
	return FILTER_PENDING;
}

/* greylist_cancel - the chain stopped waiting: drop the call, give the handle back */
static void
greylist_cancel(void *inst, struct filter_ctx *ctx)
{
	struct greylist_sess *s = *ctx->priv;
	struct filter_wait *w;

	(void)inst;
	if (s == NULL)
		return;
	state_cancel(s->op);
	s->op = NULL;
	greylist_call_done(s);
	if ((w = s->w) != NULL) {
		s->w = NULL;
		filter_wait_done(w, FILTER_CONTINUE, NULL);	/* the chain dropped it */
	}
}

/* greylist_close - the session ends */
static void
greylist_close(void *inst, struct filter_ctx *ctx)
{
	greylist_cancel(inst, ctx);
	free(*ctx->priv);
	*ctx->priv = NULL;
}

const struct filter_ops greylist_ops = {
	.name = "greylist",
	.configure = greylist_configure,
	.destroy = greylist_destroy,
	.mail = greylist_mail,
	.rcpt = greylist_rcpt,
	.close = greylist_close,
	.cancel = greylist_cancel,
};
