/*
 * ratelimit.c - the "ratelimit" filter: how many connections, messages and
 * recipients a client address, a client network, an AUTH login and a
 * sender domain may make over a sliding window, Postfix anvil's rates done
 * in the shared-state store (state.h), so that every node of a fleet on one
 * Redis enforces one limit.
 *
 * Keys "SUBJECT_EVENT = N/SECONDS" (client_messages = 100/3600: at most 100
 * messages from one client address in any 3600 seconds).  An unset key
 * counts nothing.  CONNECT counts a connection (client, network), MAIL a
 * message (client, network, login when authenticated, sender domain unless
 * the null sender), RCPT a recipient (all four).  Every attempt counts,
 * refused ones too (a client that keeps hammering stays limited, as anvil
 * counts).  At one stage every counter that applies is asked in one
 * state_count_many (the memory store answers inline, Redis in one script
 * call for all); then the first limit over, in the fixed order client, network,
 * login, sender domain, gives the refusal: 421 4.7.0 at CONNECT (the
 * session ends), else 451 4.7.0 (at RCPT that recipient only), with the
 * store's reset as a retry hint.  A store that failed: [redis] on_error =
 * open lets the client pass, closed tempfails with 4.3.0; logged either way.
 *
 * Store keys: "rl:SUBJECT_EVENT:WHAT" for [filter ratelimit],
 * "rl.NAME:SUBJECT_EVENT:WHAT" for an instance ratelimit:NAME ([ratelimit
 * NAME]): listeners that name the same instance share its counters.  WHAT
 * is the address, the network ("192.0.2.0/24"), the login or the
 * lower-cased domain; one longer than RATELIMIT_WHAT_MAX octets is replaced
 * by "#" and its SHA-256 in hex, so that a key stays under STATE_KEY_MAX.
 *
 * Threads: the instance is read-only after configure(); callbacks run on
 * the session's loop (no may_block) and never block it: a Redis count is
 * asynchronous (filter_wait_begin), and cancel() and close() cancel the
 * counts in flight.  Logs escape what clients chose (logins, domains).
 */
#include "config.h"

#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <arpa/inet.h>

#include "cidr.h"
#include "conf.h"
#include "log.h"
#include "util.h"
#include "filter.h"
#include "state.h"
#include "ratelimit.h"

#define RL_MAX_COUNT	1000000000UL	/* N of N/SECONDS */
#define RL_MAX_WINDOW	2592000UL	/* SECONDS: 30 days */
#define RL_SHOW		200		/* octets of a subject shown in a reply or a log */

enum rl_event { RL_CONNECTIONS, RL_MESSAGES, RL_RECIPIENTS, RL_NEVENTS };
enum rl_subject { RL_CLIENT, RL_NETWORK, RL_LOGIN, RL_DOMAIN, RL_NSUBJECTS };

static const char *const rl_event_names[RL_NEVENTS] = { "connections", "messages",
	"recipients" };
/* In the order the limits are judged */
static const char *const rl_subject_names[RL_NSUBJECTS] = { "client", "network", "login",
	"sender_domain" };

struct rl_limit {
	unsigned max;		/* 0: not counted */
	unsigned window;	/* seconds */
};

struct ratelimit {
	struct state *st;
	char *prefix;		/* of the store keys: "rl:" or "rl.NAME:" */
	struct rl_limit lim[RL_NEVENTS][RL_NSUBJECTS];
	unsigned prefix4, prefix6;
	struct conf_nets exempt;
};

/* One counter asked at a stage. */
struct rl_call {
	bool asked;
	struct state_count count;
	char error[128];	/* "" or why the store did not answer */
};

/* A stage's counts while they are out (the filter's per-session pointer then). */
struct rl_sess {
	const struct ratelimit *rl;
	uint64_t id;
	enum rl_event ev;
	struct filter_wait *w;	/* the pending stage, or NULL */
	struct state_op *op;	/* the stage's counts in flight (one call), or NULL */
	size_t nsent;		/* counters in that call: sent[0..nsent) */
	enum rl_subject sent[RL_NSUBJECTS];
	struct rl_call calls[RL_NSUBJECTS];
	char what[RL_NSUBJECTS][RL_SHOW];	/* each subject as shown ("" none) */
};

/* ---- configuration ---- */

static void ratelimit_destroy(void *inst);

/* rl_rate - "N/SECONDS" into *l; false if it is not one */
static bool
rl_rate(const char *v, struct rl_limit *l)
{
	unsigned long n, w;
	char *end;

	if (!isdigit((unsigned char)v[0]))
		return false;
	errno = 0;
	n = strtoul(v, &end, 10);
	if (errno != 0 || *end != '/' || n < 1 || n > RL_MAX_COUNT ||
	    !isdigit((unsigned char)end[1]))
		return false;
	w = strtoul(end + 1, &end, 10);
	if (errno != 0 || *end != '\0' || w < 1 || w > RL_MAX_WINDOW)
		return false;
	l->max = (unsigned)n;
	l->window = (unsigned)w;
	return true;
}

/* rl_limit_key - the limit a key names ("client_messages"), or NULL */
static struct rl_limit *
rl_limit_key(struct ratelimit *rl, const char *key)
{
	size_t i, j, n;

	for (j = 0; j < RL_NSUBJECTS; j++) {
		n = strlen(rl_subject_names[j]);
		if (strncmp(key, rl_subject_names[j], n) != 0 || key[n] != '_')
			continue;
		for (i = 0; i < RL_NEVENTS; i++)
			if (strcmp(key + n + 1, rl_event_names[i]) == 0)
				return &rl->lim[i][j];
	}
	return NULL;
}

/* rl_key - apply one key of the section; false + *err_r */
static bool
rl_key(struct ratelimit *rl, const struct conf_kv *kv, char **err_r)
{
	struct rl_limit *l;
	char *why = NULL;

	if (strcmp(kv->key, "login_connections") == 0 ||
	    strcmp(kv->key, "sender_domain_connections") == 0) {
		*err_r = xasprintf("%s (line %d): a connection has no %s yet (it comes with %s): "
		    "limit %s_messages or %s_recipients instead", kv->key, kv->line,
		    kv->key[0] == 'l' ? "login" : "sender", kv->key[0] == 'l' ? "AUTH" : "MAIL",
		    kv->key[0] == 'l' ? "login" : "sender_domain",
		    kv->key[0] == 'l' ? "login" : "sender_domain");
		return false;
	}
	if ((l = rl_limit_key(rl, kv->key)) != NULL) {
		if (rl_rate(kv->value, l))
			return true;
		*err_r = xasprintf("%s (line %d): \"%s\" is not N/SECONDS (e.g. 100/3600: at most "
		    "100 in any 3600 seconds; N 1..%lu, SECONDS 1..%lu)", kv->key, kv->line,
		    kv->value, RL_MAX_COUNT, RL_MAX_WINDOW);
		return false;
	}
	if (strcmp(kv->key, "network_prefix4") == 0)
		return filter_conf_uint(kv, 8, 32, &rl->prefix4, err_r);
	if (strcmp(kv->key, "network_prefix6") == 0)
		return filter_conf_uint(kv, 16, 128, &rl->prefix6, err_r);
	if (strcmp(kv->key, "exempt") == 0) {
		if (conf_nets_parse(kv->value, &rl->exempt, &why))
			return true;
		*err_r = xasprintf("exempt (line %d): %s", kv->line, why);
		free(why);
		return false;
	}
	if (filter_chain_key(kv->key))
		return true;
	*err_r = xasprintf("unknown key \"%s\" (line %d); the keys are client_, network_, "
	    "login_ and sender_domain_ messages and recipients, client_ and network_ "
	    "connections, network_prefix4, network_prefix6, exempt, timeout and default_action",
	    kv->key, kv->line);
	return false;
}

/* ratelimit_configure - the section's limits; at least one is required */
static void *
ratelimit_configure(const struct conf *conf, const struct conf_section *sec, char **err_r)
{
	static const struct conf none;
	struct ratelimit *rl = xcalloc(1, sizeof(*rl));
	size_t i, j, n = 0;

	rl->prefix4 = 24;
	rl->prefix6 = 64;
	for (i = 0; sec != NULL && i < sec->nkv; i++) {
		if (!rl_key(rl, &sec->kv[i], err_r)) {
			ratelimit_destroy(rl);
			return NULL;
		}
	}
	for (i = 0; i < RL_NEVENTS; i++)
		for (j = 0; j < RL_NSUBJECTS; j++)
			n += rl->lim[i][j].max > 0;
	if (n == 0) {
		*err_r = xstrdup("no limit set (e.g. client_messages = 100/3600)");
		ratelimit_destroy(rl);
		return NULL;
	}
	rl->prefix = sec == NULL || strcmp(sec->type, "filter") == 0 ? xstrdup("rl:") :
	    xasprintf("rl.%s:", sec->name);
	rl->st = state_get(conf != NULL ? conf : &none);
	return rl;
}

/* ratelimit_destroy - the instance (the store is the process's) */
static void
ratelimit_destroy(void *inst)
{
	struct ratelimit *rl = inst;

	free(rl->exempt.v);
	free(rl->prefix);
	free(rl);
}

/* ---- the decision ---- */

/* rl_sess_free - cancel the counts in flight; the pending handle is given back */
static void
rl_sess_free(struct rl_sess *s)
{
	struct filter_wait *w;

	if (s == NULL)
		return;
	state_cancel(s->op);
	w = s->w;
	free(s);
	if (w != NULL)
		filter_wait_done(w, FILTER_CONTINUE, NULL);	/* the chain dropped it */
}

/* rl_limit_name - "client_messages" */
static void
rl_limit_name(enum rl_subject j, enum rl_event ev, char *out, size_t size)
{
	snprintf(out, size, "%s_%s", rl_subject_names[j], rl_event_names[ev]);
}

/* rl_over - the reply and the log line for limit j, which the count passed */
static void
rl_over(const struct rl_sess *s, enum rl_subject j, struct filter_reply *r)
{
	static const char *const shown[RL_NSUBJECTS] = { "", "network ", "login ",
		"sender domain " };
	const struct rl_call *c = &s->calls[j];
	const struct rl_limit *l = &s->rl->lim[s->ev][j];
	char name[48];

	rl_limit_name(j, s->ev, name, sizeof(name));
	r->code = s->ev == RL_CONNECTIONS ? 421 : 451;
	str_copy(r->ecode, "4.7.0", sizeof(r->ecode));
	snprintf(r->text, sizeof(r->text), "Rate limit exceeded: too many %s from %s%s%s%s, "
	    "try again in %u seconds", rl_event_names[s->ev], shown[j], j == RL_CLIENT ? "[" : "",
	    s->what[j], j == RL_CLIENT ? "]" : "", c->count.reset);
	log_info("id=" SESSION_ID_FMT " event=ratelimit limit=%s subject=\"%s\" count=%llu "
	    "max=%u window=%u action=tempfail", SESSION_ID(s->id), name, s->what[j],
	    (unsigned long long)c->count.count, l->max, l->window);
}

/* rl_decide - every count answered: the first limit over, else a store error's rule */
static enum filter_verdict
rl_decide(const struct rl_sess *s, struct filter_reply *r)
{
	const struct rl_call *failed = NULL;
	char name[48], why[sizeof(failed->error) * 4];
	bool open = state_fail_open(s->rl->st);
	size_t j;

	for (j = 0; j < RL_NSUBJECTS; j++) {
		const struct rl_call *c = &s->calls[j];

		if (!c->asked)
			continue;
		if (c->error[0] != '\0') {
			if (failed == NULL)
				failed = c;
			continue;
		}
		if (c->count.count > s->rl->lim[s->ev][j].max) {
			rl_over(s, (enum rl_subject)j, r);
			return FILTER_TEMPFAIL;
		}
	}
	if (failed == NULL)
		return FILTER_CONTINUE;
	rl_limit_name((enum rl_subject)(failed - s->calls), s->ev, name, sizeof(name));
	log_warn("id=" SESSION_ID_FMT " event=ratelimit_store_error limit=%s store=\"%s\" "
	    "error=\"%s\" action=%s", SESSION_ID(s->id), name, state_name(s->rl->st),
	    log_escape(why, sizeof(why), failed->error, strlen(failed->error)),
	    open ? "pass" : "tempfail");
	if (open)
		return FILTER_CONTINUE;
	r->code = s->ev == RL_CONNECTIONS ? 421 : 451;
	str_copy(r->ecode, "4.3.0", sizeof(r->ecode));
	str_copy(r->text, "Rate limit state unavailable, try again later", sizeof(r->text));
	return FILTER_TEMPFAIL;
}

/* rl_record - the stage's answer (or failure) into the calls sent */
static void
rl_record(struct rl_sess *s, const struct state_reply *rep)
{
	struct rl_call *c;
	size_t k;

	s->op = NULL;
	for (k = 0; k < s->nsent; k++) {
		c = &s->calls[s->sent[k]];
		if (rep->error != NULL)
			str_copy(c->error, rep->error, sizeof(c->error));
		else
			c->count = rep->counts[k];
	}
}

/* rl_answered - the stage's counts on the loop, and the decision */
static void
rl_answered(void *arg, const struct state_reply *rep)
{
	struct rl_sess *s = arg;
	struct filter_wait *w;
	struct filter_ctx *ctx;
	struct filter_reply r;
	enum filter_verdict v;

	rl_record(s, rep);
	w = s->w;
	s->w = NULL;
	if ((ctx = filter_wait_ctx(w)) == NULL) {
		/* Not waited for any more (cancel frees s first; defensive): close frees s. */
		filter_wait_done(w, FILTER_CONTINUE, NULL);
		return;
	}
	memset(&r, 0, sizeof(r));
	v = rl_decide(s, &r);
	*ctx->priv = NULL;
	rl_sess_free(s);
	filter_wait_done(w, v, &r);
}

/* ---- the subjects ---- */

/* rl_net_text - n as "ADDR" (a full-length prefix) or "ADDR/PREFIX" */
static void
rl_net_text(const struct cidr *n, bool full, char *out, size_t size)
{
	if (!full) {
		if (!cidr_text(n, out, size))
			out[0] = '\0';
	} else if (inet_ntop(n->af, n->addr, out, size) == NULL)
		out[0] = '\0';
}

/* rl_domain - the domain of the sender address from, lower-cased; "" for none */
static void
rl_domain(const char *from, char *out, size_t size)
{
	const char *at = from != NULL ? strrchr(from, '@') : NULL;

	out[0] = '\0';
	if (at == NULL || at[1] == '\0')
		return;
	str_copy(out, at + 1, size);
	str_lower(out);
}

/*
 * rl_store_key - the store key of limit j for what: "PREFIX" "SUBJECT_EVENT:"
 * and what, or "#" and its SHA-256 in hex when it is long; false if no room
 */
static bool
rl_store_key(const struct ratelimit *rl, enum rl_subject j, enum rl_event ev, const char *what,
    char *out, size_t size)
{
	char hex[1 + 2 * 32 + 1], name[48];
	int n;

	rl_limit_name(j, ev, name, sizeof(name));
	if (strlen(what) > RATELIMIT_WHAT_MAX) {
		hex[0] = '#';
		state_key_digest(what, strlen(what), 32, hex + 1);
		what = hex;
	}
	n = snprintf(out, size, "%s%s:%s", rl->prefix, name, what);
	return n > 0 && (size_t)n < size;
}

/*
 * rl_subjects - what each limit of the stage counts (keys[j] "" when none):
 * the client's address and network, the login, the sender domain
 */
static void
rl_subjects(const struct ratelimit *rl, const struct filter_ctx *ctx, enum rl_event ev,
    const char *from, char keys[RL_NSUBJECTS][STATE_KEY_MAX + 1], struct rl_sess *s)
{
	const struct sockaddr *sa = (const struct sockaddr *)&ctx->sess->client_sa;
	char what[RL_NSUBJECTS][512];
	struct cidr n;
	size_t j;

	memset(what, 0, sizeof(what));
	if (cidr_of(sa, 32, 128, &n))
		rl_net_text(&n, true, what[RL_CLIENT], sizeof(what[RL_CLIENT]));
	if (cidr_of(sa, rl->prefix4, rl->prefix6, &n))
		rl_net_text(&n, false, what[RL_NETWORK], sizeof(what[RL_NETWORK]));
	if (ev != RL_CONNECTIONS && ctx->sess->auth_user != NULL)
		str_copy(what[RL_LOGIN], ctx->sess->auth_user, sizeof(what[RL_LOGIN]));
	if (ev == RL_MESSAGES)
		rl_domain(from, what[RL_DOMAIN], sizeof(what[RL_DOMAIN]));
	else if (ev == RL_RECIPIENTS && ctx->txn != NULL)
		rl_domain(ctx->txn->mail_from, what[RL_DOMAIN], sizeof(what[RL_DOMAIN]));
	for (j = 0; j < RL_NSUBJECTS; j++) {
		keys[j][0] = '\0';
		if (rl->lim[ev][j].max == 0 || what[j][0] == '\0')
			continue;
		log_escape(s->what[j], sizeof(s->what[j]), what[j], strlen(what[j]));
		if (!rl_store_key(rl, (enum rl_subject)j, ev, what[j], keys[j], STATE_KEY_MAX + 1))
			str_copy(s->calls[j].error, "no store key", sizeof(s->calls[j].error));
	}
}

/* rl_stage - count what the stage adds; the verdict now, or FILTER_PENDING */
static enum filter_verdict
rl_stage(const struct ratelimit *rl, struct filter_ctx *ctx, enum rl_event ev, const char *from,
    struct filter_reply *r)
{
	char keys[RL_NSUBJECTS][STATE_KEY_MAX + 1];
	const char *sent[RL_NSUBJECTS];
	unsigned windows[RL_NSUBJECTS];
	struct state_reply rep;
	struct rl_sess *s;
	enum filter_verdict v;
	size_t j;

	if (cidr_any(rl->exempt.v, rl->exempt.n, (const struct sockaddr *)&ctx->sess->client_sa))
		return FILTER_CONTINUE;
	s = xcalloc(1, sizeof(*s));
	s->rl = rl;
	s->id = ctx->sess->id;
	s->ev = ev;
	rl_subjects(rl, ctx, ev, from, keys, s);
	for (j = 0; j < RL_NSUBJECTS; j++) {
		struct rl_call *c = &s->calls[j];

		if (keys[j][0] == '\0' && c->error[0] == '\0')
			continue;
		c->asked = true;
		if (c->error[0] != '\0')
			continue;
		sent[s->nsent] = keys[j];
		windows[s->nsent] = rl->lim[ev][j].window;
		s->sent[s->nsent++] = (enum rl_subject)j;
	}
	if (s->nsent > 0) {
		s->op = state_count_many(rl->st, ctx->base, s->nsent, sent, windows, 1, &rep,
		    rl_answered, s);
		if (s->op == NULL)
			rl_record(s, &rep);
	}
	if (s->op != NULL && (s->w = filter_wait_begin(ctx)) != NULL) {
		*ctx->priv = s;
		return FILTER_PENDING;
	}
	if (s->op != NULL) {
		state_cancel(s->op);	/* no loop to wait on */
		s->op = NULL;
		for (j = 0; j < s->nsent; j++)
			str_copy(s->calls[s->sent[j]].error, "no event loop",
			    sizeof(s->calls[s->sent[j]].error));
	}
	v = rl_decide(s, r);
	rl_sess_free(s);
	return v;
}

/* ---- callbacks ---- */

/* ratelimit_connect - count a connection: client and network */
static enum filter_verdict
ratelimit_connect(void *inst, struct filter_ctx *ctx, struct filter_reply *r)
{
	return rl_stage(inst, ctx, RL_CONNECTIONS, NULL, r);
}

/* ratelimit_mail - count a message: client, network, login, sender domain */
static enum filter_verdict
ratelimit_mail(void *inst, struct filter_ctx *ctx, const char *from, struct filter_reply *r)
{
	return rl_stage(inst, ctx, RL_MESSAGES, from, r);
}

/* ratelimit_rcpt - count a recipient: client, network, login, sender domain */
static enum filter_verdict
ratelimit_rcpt(void *inst, struct filter_ctx *ctx, const char *rcpt, struct filter_reply *r)
{
	(void)rcpt;
	return rl_stage(inst, ctx, RL_RECIPIENTS, NULL, r);
}

/* ratelimit_close - the chain stopped waiting, or the session ends: drop the counts */
static void
ratelimit_close(void *inst, struct filter_ctx *ctx)
{
	struct rl_sess *s = *ctx->priv;

	(void)inst;
	*ctx->priv = NULL;
	rl_sess_free(s);
}

const struct filter_ops ratelimit_ops = {
	.name = "ratelimit",
	.configure = ratelimit_configure,
	.destroy = ratelimit_destroy,
	.connect = ratelimit_connect,
	.mail = ratelimit_mail,
	.rcpt = ratelimit_rcpt,
	.close = ratelimit_close,
	.cancel = ratelimit_close,
};
