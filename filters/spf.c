/*
 * spf.c - the "spf" filter: RFC 7208 checks of the MAIL FROM and HELO
 * identities with libspf2, their results for Authentication-Results
 * (RFC 8601) and for later filters (DMARC), an optional Received-SPF
 * header, and an action per result.
 *
 * [filter spf] keys (besides the chain's timeout, default_action, threads):
 *   pass, fail, softfail, neutral, none, temperror, permerror
 *       = reject | tempfail | quarantine | tag   what to do on that result;
 *         defaults: fail = reject (550 5.7.23), temperror = tempfail
 *         (451 4.7.24), every other one tag (record the result, go on).
 *   check_helo = yes | no (yes)   check the HELO identity of every session
 *         too and record it (smtp.helo); its result only acts on the null
 *         sender, where it is the identity that counts (§2.4).
 *   received_spf = yes | no (no)  a Received-SPF header (§9.1) at the top.
 *
 * libspf2 is synchronous, so the filter is may_block: its callbacks run on
 * the filter pool and its DNS goes through resolver_sync (spf_dns.c).  The
 * HELO stage has no transaction: its outcome waits in the per-session state
 * and is recorded at MAIL.  spf_check() is the evaluation itself, shared
 * with the unit tests and the RFC 7208 suite.
 *
 * Never does: act on a HELO result for a non-null sender, or let the
 * record's exp= text into a reply unsanitized (printable ASCII only).
 */
#include "config.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "util.h"
#include "log.h"
#include "resolver.h"
#include "spf_priv.h"

enum spf_action {
	SPF_TAG,		/* record the result, go on */
	SPF_REJECT,
	SPF_TEMPFAIL,
	SPF_QUARANTINE,
};

struct spf_inst {
	enum spf_action action[SPF_NRESULTS];
	bool check_helo;
	bool received_spf;
};

/* Per session (*ctx->priv): the HELO outcome, and the transaction's for eom */
struct spf_sess {
	char *helo;			/* the name helo_out is for, NULL if none yet */
	struct spf_outcome helo_out;
	bool have_mail;			/* mail_out is this transaction's */
	struct spf_outcome mail_out;
};

static const char *const spf_result_names[SPF_NRESULTS] = {
	[SPF_NONE] = "none", [SPF_NEUTRAL] = "neutral", [SPF_PASS] = "pass",
	[SPF_FAIL] = "fail", [SPF_SOFTFAIL] = "softfail", [SPF_TEMPERROR] = "temperror",
	[SPF_PERMERROR] = "permerror",
};

static const char *const spf_action_names[] = {
	[SPF_TAG] = "tag", [SPF_REJECT] = "reject", [SPF_TEMPFAIL] = "tempfail",
	[SPF_QUARANTINE] = "quarantine",
};

/* spf_result_name - RFC 8601's word */
const char *
spf_result_name(enum spf_result r)
{
	return (unsigned)r < SPF_NRESULTS ? spf_result_names[r] : "permerror";
}

/* ---- libspf2's messages ---- */

static void
spf_log_quiet(const char *file, int line, const char *msg)
{
	(void)file, (void)line, (void)msg;
}

static void __attribute__((noreturn))
spf_log_error(const char *file, int line, const char *msg)
{
	fatal("libspf2: %s:%d: %s", file ? file : "?", line, msg ? msg : "");
}

static pthread_once_t spf_once = PTHREAD_ONCE_INIT;

/* spf_init - libspf2 says nothing on stderr; its fatal errors are ours */
static void
spf_init(void)
{
	SPF_error_handler = spf_log_error;
	SPF_warning_handler = spf_log_quiet;
	SPF_info_handler = spf_log_quiet;
	SPF_debug_handler = spf_log_quiet;
}

/* ---- the evaluation ---- */

/* spf_client - the client address for req; IPv4-mapped IPv6 as IPv4.  False if not IP */
static bool
spf_client(SPF_request_t *req, const char *addr)
{
	struct in_addr in;
	struct in6_addr in6;

	if (addr == NULL)
		return false;
	if (inet_pton(AF_INET, addr, &in) == 1)
		return SPF_request_set_ipv4(req, in) == SPF_E_SUCCESS;
	if (inet_pton(AF_INET6, addr, &in6) != 1)
		return false;
	if (IN6_IS_ADDR_V4MAPPED(&in6)) {
		memcpy(&in, &in6.s6_addr[12], 4);
		return SPF_request_set_ipv4(req, in) == SPF_E_SUCCESS;
	}
	return SPF_request_set_ipv6(req, in6) == SPF_E_SUCCESS;
}

/* spf_identity - which identity req names: out->domain, out->sender, out->helo_identity */
static void
spf_identity(const struct spf_request *req, struct spf_outcome *out)
{
	const char *from = req->mail_from != NULL ? req->mail_from : "";
	const char *at = strrchr(from, '@');

	if (*from == '\0') {
		out->helo_identity = true;
		str_copy(out->domain, req->helo != NULL ? req->helo : "", sizeof(out->domain));
		snprintf(out->sender, sizeof(out->sender), "postmaster@%s", out->domain);
	} else if (at == NULL || at == from) {
		/* no local part: postmaster (§4.3) */
		str_copy(out->domain, at != NULL ? at + 1 : from, sizeof(out->domain));
		snprintf(out->sender, sizeof(out->sender), "postmaster@%s", out->domain);
	} else {
		str_copy(out->domain, at + 1, sizeof(out->domain));
		str_copy(out->sender, from, sizeof(out->sender));
	}
}

/* spf_map - libspf2's result as ours */
static enum spf_result
spf_map(SPF_result_t r)
{
	switch (r) {
	case SPF_RESULT_NEUTRAL:
		return SPF_NEUTRAL;
	case SPF_RESULT_PASS:
		return SPF_PASS;
	case SPF_RESULT_FAIL:
		return SPF_FAIL;
	case SPF_RESULT_SOFTFAIL:
		return SPF_SOFTFAIL;
	case SPF_RESULT_NONE:
		return SPF_NONE;
	case SPF_RESULT_TEMPERROR:
		return SPF_TEMPERROR;
	default:
		return SPF_PERMERROR;	/* INVALID: a record libspf2 could not use */
	}
}

/* spf_sanitize - text for a reply or a header: printable ASCII, the rest '?' */
static void
spf_sanitize(char *dst, size_t size, const char *src)
{
	size_t i;

	str_copy(dst, src, size);
	for (i = 0; dst[i] != '\0'; i++)
		if ((unsigned char)dst[i] < 0x20 || (unsigned char)dst[i] > 0x7e)
			dst[i] = '?';
}

/* spf_run - libspf2 over our DNS layer: the record of out->domain, interpreted */
static void
spf_run(const struct spf_request *req, struct spf_outcome *out)
{
	struct spf_eval ev;
	SPF_dns_server_t *dns;
	SPF_server_t *server;
	SPF_request_t *sreq;
	SPF_response_t *resp;
	SPF_record_t *rec = NULL;
	SPF_errcode_t err;

	memset(&ev, 0, sizeof(ev));
	ev.conf = req->conf;
	dns = spf_dns_new(&ev);
	if ((server = SPF_server_new_dns(dns, 0)) == NULL ||
	    (sreq = SPF_request_new(server)) == NULL)
		fatal("spf: out of memory");
	if (req->conf->hostname != NULL)
		SPF_server_set_rec_dom(server, req->conf->hostname);
	ev.request = sreq;
	if (!spf_client(sreq, req->client_addr)) {
		out->result = SPF_NONE;
		str_copy(out->why, "the client address is not IP", sizeof(out->why));
		goto done;
	}
	ev.client_v6 = sreq->client_ver == AF_INET6;
	memcpy(ev.client, ev.client_v6 ? (const void *)&sreq->ipv6 : (const void *)&sreq->ipv4,
	    ev.client_v6 ? 16 : 4);
	SPF_request_set_helo_dom(sreq, req->helo != NULL && *req->helo ? req->helo : out->domain);
	SPF_request_set_env_from(sreq, out->sender);
	if ((resp = SPF_response_new(sreq)) == NULL)
		fatal("spf: out of memory");
	/* as SPF_request_query_mailfrom, without its free pass for loopback clients */
	sreq->cur_dom = out->domain;
	err = SPF_server_get_record(server, sreq, resp, &rec);
	if (err == SPF_E_SUCCESS) {
		resp->spf_record_exp = rec;
		SPF_record_interpret(rec, sreq, resp, 0);
		SPF_record_free(rec);
	}
	out->result = spf_map(SPF_response_result(resp));
	if (ev.permerror)
		out->result = SPF_PERMERROR;
	else if (ev.temperror)
		out->result = SPF_TEMPERROR;
	if (ev.why[0] != '\0')
		str_copy(out->why, ev.why, sizeof(out->why));
	else if (err != SPF_E_SUCCESS || resp->err != SPF_E_SUCCESS)
		str_copy(out->why, SPF_strerror(err != SPF_E_SUCCESS ? err : resp->err),
		    sizeof(out->why));
	else
		str_copy(out->why, resp->reason == SPF_REASON_DEFAULT ? "no mechanism matched" :
		    "a mechanism matched", sizeof(out->why));
	if (out->result == SPF_FAIL)
		spf_sanitize(out->explanation, sizeof(out->explanation), ev.exp);
	SPF_response_free(resp);
done:
	out->queries = ev.queries;
	SPF_request_free(sreq);
	SPF_server_free(server);
	SPF_dns_free(dns);
	spf_eval_free(&ev);
}

/* spf_check - check_host() for the identity req names */
void
spf_check(const struct spf_request *req, struct spf_outcome *out)
{
	pthread_once(&spf_once, spf_init);
	memset(out, 0, sizeof(*out));
	spf_identity(req, out);
	/* §4.3: no usable domain, no SPF: none, without a query */
	if (!spf_syntax_domain(out->domain)) {
		out->result = SPF_NONE;
		str_copy(out->why, "not a usable domain", sizeof(out->why));
		return;
	}
	spf_run(req, out);
}

/* ---- configuration ---- */

/* spf_bool - yes / no */
static bool
spf_bool(const char *v, bool *r)
{
	if (strcmp(v, "yes") == 0 || strcmp(v, "true") == 0 || strcmp(v, "1") == 0)
		*r = true;
	else if (strcmp(v, "no") == 0 || strcmp(v, "false") == 0 || strcmp(v, "0") == 0)
		*r = false;
	else
		return false;
	return true;
}

/* spf_key - one key of [filter spf]; false + *err_r */
static bool
spf_key(struct spf_inst *in, const struct conf_kv *kv, char **err_r)
{
	size_t i, a;

	if (strcmp(kv->key, "check_helo") == 0 || strcmp(kv->key, "received_spf") == 0) {
		if (spf_bool(kv->value, kv->key[0] == 'c' ? &in->check_helo : &in->received_spf))
			return true;
		*err_r = xasprintf("filter \"spf\": %s \"%s\" at line %d: expected yes or no",
		    kv->key, kv->value, kv->line);
		return false;
	}
	for (i = 0; i < SPF_NRESULTS; i++) {
		if (strcmp(kv->key, spf_result_names[i]) != 0)
			continue;
		for (a = 0; a < sizeof(spf_action_names) / sizeof(spf_action_names[0]); a++)
			if (strcmp(kv->value, spf_action_names[a]) == 0) {
				in->action[i] = (enum spf_action)a;
				return true;
			}
		*err_r = xasprintf("filter \"spf\": %s \"%s\" at line %d: expected reject, "
		    "tempfail, quarantine or tag", kv->key, kv->value, kv->line);
		return false;
	}
	if (filter_chain_key(kv->key))
		return true;
	*err_r = xasprintf("filter \"spf\": unknown key \"%s\" at line %d", kv->key, kv->line);
	return false;
}

/* spf_configure - the defaults, then [filter spf] */
static void *
spf_configure(const struct conf *conf, const struct conf_section *sec, char **err_r)
{
	struct spf_inst *in = xcalloc(1, sizeof(*in));
	size_t i;

	(void)conf;
	pthread_once(&spf_once, spf_init);
	in->action[SPF_FAIL] = SPF_REJECT;
	in->action[SPF_TEMPERROR] = SPF_TEMPFAIL;
	in->check_helo = true;
	for (i = 0; sec != NULL && i < sec->nkv; i++)
		if (!spf_key(in, &sec->kv[i], err_r)) {
			free(in);
			return NULL;
		}
	return in;
}

static void
spf_destroy(void *inst)
{
	free(inst);
}

/* ---- the filter ---- */

/* spf_sess_get - the session's state, made at first use */
static struct spf_sess *
spf_sess_get(struct filter_ctx *ctx)
{
	if (*ctx->priv == NULL)
		*ctx->priv = xcalloc(1, sizeof(struct spf_sess));
	return *ctx->priv;
}

/* spf_log - one line per evaluation */
static void
spf_log(const struct filter_ctx *ctx, const struct spf_outcome *o, const char *action)
{
	char dom[sizeof(o->domain) * 4], why[sizeof(o->why) * 4];

	log_info("id=" SESSION_ID_FMT " event=spf identity=%s domain=%s client=%s result=%s "
	    "action=%s queries=%u why=\"%s\"", SESSION_ID(ctx->sess->id),
	    o->helo_identity ? "helo" : "mailfrom",
	    log_escape(dom, sizeof(dom), o->domain, strlen(o->domain)), ctx->sess->client_addr,
	    spf_result_name(o->result), action, o->queries,
	    log_escape(why, sizeof(why), o->why, strlen(o->why)));
}

/* spf_evaluate - spf_check for this session's client */
static void
spf_evaluate(const struct filter_ctx *ctx, const char *helo, const char *from,
    struct spf_outcome *out)
{
	struct spf_request req = {
		.conf = ctx->sess->conf, .client_addr = ctx->sess->client_addr,
		.helo = helo, .mail_from = from,
	};

	spf_check(&req, out);
}

/* spf_helo_outcome - the HELO identity's outcome for name, evaluated once per name */
static const struct spf_outcome *
spf_helo_outcome(const struct spf_inst *in, struct filter_ctx *ctx, const char *name)
{
	struct spf_sess *s = spf_sess_get(ctx);

	if (name == NULL)
		name = "";
	if (s->helo == NULL || strcmp(s->helo, name) != 0) {
		free(s->helo);
		s->helo = xstrdup(name);
		spf_evaluate(ctx, name, "", &s->helo_out);
		spf_log(ctx, &s->helo_out, spf_action_names[in->action[s->helo_out.result]]);
	}
	return &s->helo_out;
}

/* spf_helo - with check_helo, the HELO identity now (its result waits for MAIL) */
static enum filter_verdict
spf_helo(void *inst, struct filter_ctx *ctx, const char *helo, struct filter_reply *r)
{
	const struct spf_inst *in = inst;

	(void)r;
	if (in->check_helo)
		spf_helo_outcome(in, ctx, helo);
	return FILTER_CONTINUE;
}

/* spf_quote - v as an RFC 8601 / 7208 value: bare if it is dot-atom-ish, else quoted */
static void
spf_quote(char *dst, size_t size, const char *v)
{
	size_t i, n = 0;
	bool bare = *v != '\0';

	for (i = 0; v[i] != '\0' && bare; i++)
		bare = (unsigned char)v[i] > 0x20 && (unsigned char)v[i] < 0x7f &&
		    strchr("\"\\()<>,;:[] ", v[i]) == NULL;
	if (bare) {
		str_copy(dst, v, size);
		return;
	}
	if (size < 3) {
		dst[0] = '\0';
		return;
	}
	dst[n++] = '"';
	for (i = 0; v[i] != '\0' && n + 4 < size; i++) {
		unsigned char c = (unsigned char)v[i];

		if (c == '"' || c == '\\')
			dst[n++] = '\\';
		dst[n++] = c < 0x20 || c > 0x7e ? '?' : (char)c;
	}
	dst[n++] = '"';
	dst[n] = '\0';
}

/* spf_record - the outcome into the transaction: Authentication-Results and a fact */
static void
spf_record(struct filter_txn *txn, const struct spf_outcome *o)
{
	char v[sizeof(o->sender) * 2 + 3];

	spf_quote(v, sizeof(v), o->helo_identity ? o->domain : o->sender);
	filter_auth_result(txn, "spf=%s smtp.%s=%s", spf_result_name(o->result),
	    o->helo_identity ? "helo" : "mailfrom", v);
	filter_auth_fact(txn, "spf", spf_result_name(o->result), o->domain,
	    o->helo_identity ? "helo" : "mailfrom");
}

/* spf_reply - the reply for a refused outcome */
static enum filter_verdict
spf_reply(enum spf_action act, const struct filter_ctx *ctx, const struct spf_outcome *o,
    struct filter_reply *r)
{
	char dom[128];
	bool error = o->result == SPF_TEMPERROR || o->result == SPF_PERMERROR;

	spf_sanitize(dom, sizeof(dom), o->domain);
	if (act == SPF_QUARANTINE) {
		snprintf(r->text, sizeof(r->text), "SPF %s for %s", spf_result_name(o->result), dom);
		return FILTER_QUARANTINE;
	}
	if (act == SPF_TEMPFAIL) {
		r->code = 451;
		str_copy(r->ecode, "4.7.24", sizeof(r->ecode));
		snprintf(r->text, sizeof(r->text), "SPF %s for %s: try again later",
		    spf_result_name(o->result), dom);
		return FILTER_TEMPFAIL;
	}
	r->code = 550;
	str_copy(r->ecode, error ? "5.7.24" : "5.7.23", sizeof(r->ecode));
	if (o->result == SPF_FAIL) {
		/* a long explanation is cut: the reply says the rest */
		if (snprintf(r->text, sizeof(r->text), "SPF fail: %s does not designate %s as "
		    "permitted sender%s%s", dom, ctx->sess->client_addr,
		    o->explanation[0] != '\0' ? ": " : "", o->explanation) >= (int)sizeof(r->text))
			r->text[sizeof(r->text) - 1] = '\0';
	}
	else if (o->result == SPF_PERMERROR)
		snprintf(r->text, sizeof(r->text), "SPF permerror: the SPF record of %s is "
		    "invalid", dom);
	else
		snprintf(r->text, sizeof(r->text), "SPF %s for %s from %s",
		    spf_result_name(o->result), dom, ctx->sess->client_addr);
	return FILTER_REJECT;
}

/* spf_mail - the MAIL FROM identity (HELO's for the null sender): record, then act */
static enum filter_verdict
spf_mail(void *inst, struct filter_ctx *ctx, const char *from, struct filter_reply *r)
{
	const struct spf_inst *in = inst;
	struct spf_sess *s = spf_sess_get(ctx);
	const struct spf_outcome *helo = NULL, *o;
	enum spf_action act;

	if (in->check_helo || *from == '\0')
		helo = spf_helo_outcome(in, ctx, ctx->sess->helo);
	if (*from == '\0') {
		s->mail_out = *helo;
	} else {
		spf_evaluate(ctx, ctx->sess->helo, from, &s->mail_out);
		spf_log(ctx, &s->mail_out, spf_action_names[in->action[s->mail_out.result]]);
		if (helo != NULL)
			spf_record(ctx->txn, helo);
	}
	s->have_mail = true;
	o = &s->mail_out;
	spf_record(ctx->txn, o);
	act = in->action[o->result];
	if (act == SPF_TAG)
		return FILTER_CONTINUE;
	return spf_reply(act, ctx, o, r);
}

/* spf_eom - the Received-SPF header (§9.1), when asked for */
static enum filter_verdict
spf_eom(void *inst, struct filter_ctx *ctx, struct filter_reply *r)
{
	const struct spf_inst *in = inst;
	struct spf_sess *s = *ctx->priv;
	const struct spf_outcome *o;
	char from[sizeof(o->sender) * 2 + 3], helo[600], rcv[300], *v;

	(void)r;
	if (!in->received_spf || s == NULL || !s->have_mail)
		return FILTER_CONTINUE;
	o = &s->mail_out;
	spf_quote(from, sizeof(from), o->sender);
	spf_quote(helo, sizeof(helo), ctx->sess->helo != NULL ? ctx->sess->helo : "");
	spf_quote(rcv, sizeof(rcv), ctx->sess->conf->hostname != NULL ?
	    ctx->sess->conf->hostname : "");
	v = xasprintf("%s (%s: %s) client-ip=%s; envelope-from=%s; helo=%s; receiver=%s; "
	    "identity=%s", spf_result_name(o->result), rcv, spf_result_name(o->result),
	    ctx->sess->client_addr, from, helo, rcv, o->helo_identity ? "helo" : "mailfrom");
	filter_insert_header(ctx->txn, 0, "Received-SPF", v);
	free(v);
	return FILTER_CONTINUE;
}

/* spf_abort - the transaction's outcome is gone with it */
static void
spf_abort(void *inst, struct filter_ctx *ctx)
{
	struct spf_sess *s = *ctx->priv;

	(void)inst;
	if (s != NULL)
		s->have_mail = false;
}

static void
spf_close(void *inst, struct filter_ctx *ctx)
{
	struct spf_sess *s = *ctx->priv;

	(void)inst;
	if (s != NULL) {
		free(s->helo);
		free(s);
	}
	*ctx->priv = NULL;
}

const struct filter_ops spf_ops = {
	.name = "spf",
	.may_block = true,
	.configure = spf_configure,
	.destroy = spf_destroy,
	.helo = spf_helo,
	.mail = spf_mail,
	.eom = spf_eom,
	.abort = spf_abort,
	.close = spf_close,
};
