/*
 * spf_dns.c - libspf2's DNS layer over portier's resolver, and where the
 * RFC 7208 rules libspf2 lacks are enforced.
 *
 * libspf2 is synchronous: every lookup here is resolver_sync() on the
 * calling thread (a filter pool thread, never a loop), through the one
 * resolver configuration ([server] resolver, resolver_timeout).  One layer
 * per evaluation (struct spf_eval is its hook), so the counters below are
 * the evaluation's own and no lock is needed.
 *
 * What the layer adds to libspf2:
 *   - DNS errors: SERVFAIL, a timeout or a resolver failure make the whole
 *     evaluation temperror (RFC 7208 §4.4, §5), whatever libspf2 then makes
 *     of the TRY_AGAIN it is given; once that is known, no further query is
 *     sent.
 *   - The void lookup limit (§4.6.4): a third A/AAAA/MX/PTR answer with no
 *     record (NXDOMAIN or no data) is permerror.  libspf2 counts the DNS
 *     mechanisms (the limit of 10) itself; SPF_MAX_QUERIES bounds the rest.
 *   - Record selection (§4.5) and a strict syntax pass (spf_syntax.c) over
 *     each record before libspf2 compiles it (get_spf): only TXT is queried
 *     (type SPF is gone since RFC 7208), exactly one "v=spf1" record or
 *     permerror, and a record libspf2 would accept but the ABNF refuses is
 *     permerror.
 *   - The explanation (§6.2, get_exp): exactly one TXT record, checked as an
 *     explain-string, expanded word by word (libspf2 reads a space in it as
 *     a macro); any problem means no explanation, never an error.
 * Never does: keep anything past the evaluation, or answer from anything
 * but the resolver.
 */
#include "config.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "util.h"
#include "resolver.h"
#include "spf_priv.h"

/* A compiled macro's data follows its header (libspf2's SPF_macro_data, not exported) */
#define SPF_DNS_MACRO_DATA(m)	((SPF_data_t *)(void *)((char *)(m) + sizeof(SPF_macro_t)))

/* spf_eval_fail - the first error stays: evaluation stops there */
void
spf_eval_fail(struct spf_eval *ev, bool perm, const char *fmt, ...)
{
	va_list ap;

	if (ev->permerror || ev->temperror)
		return;
	va_start(ap, fmt);
	vsnprintf(ev->why, sizeof(ev->why), fmt, ap);
	va_end(ap);
	if (perm)
		ev->permerror = true;
	else
		ev->temperror = true;
}

/* spf_eval_free - the host names */
void
spf_eval_free(struct spf_eval *ev)
{
	size_t i;

	for (i = 0; i < ev->nhosts; i++)
		free(ev->hosts[i]);
	ev->nhosts = 0;
}

/* spf_dns_host - index of name among the MX/PTR answers' names, or -1 */
static int
spf_dns_host(const struct spf_eval *ev, const char *name)
{
	size_t i;

	for (i = 0; i < ev->nhosts; i++)
		if (str_casecmp(ev->hosts[i], name) == 0)
			return (int)i;
	return -1;
}

/* spf_dns_add_host - remember an MX or PTR answer's name (the first SPF_MAX_HOSTS) */
static void
spf_dns_add_host(struct spf_eval *ev, const char *name, bool ptr)
{
	if (ev->nhosts < SPF_MAX_HOSTS && spf_dns_host(ev, name) < 0) {
		ev->ptr_hosts[ev->nhosts] = ptr;
		ev->hosts[ev->nhosts++] = xstrdup(name);
	}
}

/* spf_dns_term - one more term causing DNS queries; false once over the limit */
static bool
spf_dns_term(struct spf_eval *ev, const char *domain)
{
	if (++ev->terms <= SPF_MAX_DNS_TERMS)
		return true;
	spf_eval_fail(ev, true, "more than %d DNS lookups (%s)", SPF_MAX_DNS_TERMS, domain);
	return false;
}

/* spf_dns_unhex - the name spf_syntax_hex wrote as hex labels in [hex, hex + len) */
static bool
spf_dns_unhex(const char *hex, size_t len, char *name, size_t size)
{
	size_t i, n = 0;
	unsigned v;

	for (i = 0; i + 1 < len; ) {
		if (hex[i] == '.') {
			i++;
			continue;
		}
		if (n + 1 >= size || sscanf(hex + i, "%2x", &v) != 1)
			return false;
		name[n++] = (char)v;
		i += 2;
	}
	name[n] = '\0';
	return n > 0;
}

/*
 * spf_dns_name - the name to query for domain into name: an expansion over
 * 253 octets loses labels at the left (RFC 7208 §7.3), SPF_CIDR0_LABEL goes
 * (*cidr0_r).  False if what is left is no DNS name (an empty label, one
 * over 63 octets): such a name has no records.
 */
static bool
spf_dns_name(const char *domain, char *name, size_t size, bool *cidr0_r)
{
	const char *p = domain, *dot;
	size_t len = strlen(domain), n, lab = strlen(SPF_CIDR0_LABEL);

	*cidr0_r = false;
	if (len > lab && domain[len - lab - 1] == '.' &&
	    str_casecmp(domain + len - lab, SPF_CIDR0_LABEL) == 0) {
		*cidr0_r = true;
		len -= lab + 1;
	}
	if (len > lab && str_ncasecmp(domain + len - strlen(SPF_HEX_LABEL), SPF_HEX_LABEL,
	    strlen(SPF_HEX_LABEL)) == 0)
		return spf_dns_unhex(domain, len - strlen(SPF_HEX_LABEL), name, size);
	if (len > 0 && domain[len - 1] == '.')
		len--;
	while (len - (size_t)(p - domain) > 253 && (dot = memchr(p, '.', len - (size_t)(p - domain))) != NULL)
		p = dot + 1;
	n = len - (size_t)(p - domain);
	if (n == 0 || n > 253 || n >= size)
		return false;
	memcpy(name, p, n);
	name[n] = '\0';
	for (p = name; *p != '\0'; p = dot + 1) {
		dot = strchr(p, '.');
		n = dot != NULL ? (size_t)(dot - p) : strlen(p);
		if (n == 0 || n > 63)
			return false;
		if (dot == NULL)
			break;
	}
	return true;
}

/* spf_dns_type - libspf2's type as the resolver's, 0 for one we never ask */
static int
spf_dns_type(ns_type t)
{
	switch (t) {
	case ns_t_a:
		return RESOLVER_A;
	case ns_t_aaaa:
		return RESOLVER_AAAA;
	case ns_t_mx:
		return RESOLVER_MX;
	case ns_t_ptr:
		return RESOLVER_PTR;
	case ns_t_txt:
		return RESOLVER_TXT;
	default:
		return 0;
	}
}

/*
 * spf_dns_txt_nul - a NUL inside a TXT record would end libspf2's string
 * early (and cut a bad record into a good one): it becomes 0x01 there, which
 * no SPF record may hold, so the syntax pass refuses the record.
 */
static void
spf_dns_txt_nul(char *txt, const unsigned char *rdata, size_t len)
{
	size_t off = 0, n, out = 0, k;

	while (off < len) {
		n = rdata[off++];
		if (n > len - off)
			n = len - off;
		for (k = 0; k < n; k++, out++)
			if (rdata[off + k] == 0)
				txt[out] = 0x01;
		off += n;
	}
	txt[out] = '\0';
}

/* spf_dns_add - rdata i of a into rr (as libspf2's layers store it); false if unusable */
static bool
spf_dns_add(SPF_dns_rr_t *rr, int n, int rrtype, const struct resolver_answer *a, size_t i)
{
	char name[1025];
	size_t len = (size_t)a->len[i];

	switch (rrtype) {
	case RESOLVER_A:
	case RESOLVER_AAAA:
		if (len != (rrtype == RESOLVER_A ? 4u : 16u) ||
		    SPF_dns_rr_buf_realloc(rr, n, len) != SPF_E_SUCCESS)
			return false;
		memcpy(rrtype == RESOLVER_A ? (void *)&rr->rr[n]->a : (void *)&rr->rr[n]->aaaa,
		    a->data[i], len);
		return true;
	case RESOLVER_MX:
	case RESOLVER_PTR:
		if (!resolver_name_any(a, i, rrtype == RESOLVER_MX ? 2 : 0, name, sizeof(name)) ||
		    SPF_dns_rr_buf_realloc(rr, n, strlen(name) + 1) != SPF_E_SUCCESS)
			return false;
		memcpy(rr->rr[n]->ptr, name, strlen(name) + 1);
		return true;
	case RESOLVER_TXT:
		/* the strings joined are never longer than the rdata */
		if (SPF_dns_rr_buf_realloc(rr, n, len + 1) != SPF_E_SUCCESS ||
		    !resolver_txt(a, i, rr->rr[n]->txt, len + 1))
			return false;
		spf_dns_txt_nul(rr->rr[n]->txt, (const unsigned char *)a->data[i], len);
		return true;
	default:
		return false;
	}
}

/*
 * spf_dns_answer - what libspf2 gets for a: an rr with the records.  The
 * names an MX or PTR answer gives are remembered (their address lookups are
 * part of that term); under SPF_CIDR0_LABEL, addresses are the client's and
 * MX names carry the label on.
 */
static SPF_dns_rr_t *
spf_dns_answer(struct spf_eval *ev, SPF_dns_server_t *dns, const char *domain, ns_type type,
    int rrtype, const struct resolver_answer *a, bool cidr0)
{
	SPF_dns_rr_t *rr;
	size_t i;
	int n = 0;

	if ((rr = SPF_dns_rr_new_init(dns, domain, type, 0, NETDB_SUCCESS)) == NULL)
		fatal("spf: out of memory");
	for (i = 0; i < a->count; i++) {
		if (!spf_dns_add(rr, n, rrtype, a, i))
			continue;
		if (rrtype == RESOLVER_MX || rrtype == RESOLVER_PTR)
			spf_dns_add_host(ev, rr->rr[n]->mx, rrtype == RESOLVER_PTR);
		if (cidr0 && rrtype == (ev->client_v6 ? RESOLVER_AAAA : RESOLVER_A))
			memcpy(ev->client_v6 ? (void *)&rr->rr[n]->aaaa : (void *)&rr->rr[n]->a,
			    ev->client, ev->client_v6 ? 16 : 4);
		if (cidr0 && rrtype == RESOLVER_MX) {
			char *name = xasprintf("%s.%s", rr->rr[n]->mx, SPF_CIDR0_LABEL);

			if (SPF_dns_rr_buf_realloc(rr, n, strlen(name) + 1) != SPF_E_SUCCESS)
				fatal("spf: out of memory");
			memcpy(rr->rr[n]->mx, name, strlen(name) + 1);
			free(name);
		}
		n++;
	}
	/* past SPF_MAX_PTR names, libspf2 would give permerror where §4.6.4 ignores them */
	rr->num_rr = rrtype == RESOLVER_PTR && n > SPF_MAX_PTR ? SPF_MAX_PTR : n;
	if (n == 0)
		rr->herrno = NO_DATA;
	return rr;
}

/* spf_dns_void - count an answer without records; false once over the limit */
static bool
spf_dns_void(struct spf_eval *ev, int rrtype, const char *domain)
{
	if (ev->in_exp || rrtype == RESOLVER_TXT)
		return true;	/* a record's absence is its own result, the exp an option */
	if (++ev->voids <= SPF_MAX_VOID_LOOKUPS)
		return true;
	spf_eval_fail(ev, true, "void lookup limit (%s)", domain);
	return false;
}

/* spf_dns_count - the limits before a query of name: false (and permerror) past one */
static bool
spf_dns_count(struct spf_eval *ev, const char *name, int rrtype, int host)
{
	if (++ev->queries > SPF_MAX_QUERIES) {
		spf_eval_fail(ev, true, "more than %d DNS queries", SPF_MAX_QUERIES);
		return false;
	}
	if (ev->in_exp || rrtype == RESOLVER_TXT)
		return true;	/* records are counted by spf_dns_get_spf */
	if ((rrtype == RESOLVER_A || rrtype == RESOLVER_AAAA) && host >= 0)
		return true;	/* an MX or PTR name: part of its term */
	return spf_dns_term(ev, name);
}

/* spf_dns_result - libspf2's rr for a resolver status; the evaluation's errors noted */
static SPF_dns_rr_t *
spf_dns_result(struct spf_eval *ev, SPF_dns_server_t *dns, const char *domain, ns_type type,
    int rrtype, enum resolver_status st, const struct resolver_answer *a, bool cidr0,
    bool ptr_host)
{
	SPF_dns_rr_t *rr;

	switch (st) {
	case RESOLVER_OK:
		rr = spf_dns_answer(ev, dns, domain, type, rrtype, a, cidr0);
		if (rrtype == RESOLVER_MX && rr->num_rr > SPF_MAX_MX) {
			spf_eval_fail(ev, true, "more than %d MX records (%s)", SPF_MAX_MX, domain);
			rr->herrno = NO_RECOVERY;
		} else if (rr->num_rr == 0 && !ptr_host && !spf_dns_void(ev, rrtype, domain))
			rr->herrno = NO_RECOVERY;
		return rr;
	case RESOLVER_NODATA:
	case RESOLVER_NXDOMAIN:
		rr = SPF_dns_rr_new_init(dns, domain, type, 0,
		    st == RESOLVER_NODATA ? NO_DATA : HOST_NOT_FOUND);
		if (rr != NULL && !ptr_host && !spf_dns_void(ev, rrtype, domain))
			rr->herrno = NO_RECOVERY;
		return rr;
	default:
		/* a PTR name that does not resolve is skipped (§5.5), the exp optional */
		if (ptr_host || ev->in_exp)
			return SPF_dns_rr_new_init(dns, domain, type, 0, HOST_NOT_FOUND);
		spf_eval_fail(ev, false, "DNS %s for %s", resolver_status_name(st), domain);
		return SPF_dns_rr_new_init(dns, domain, type, 0, TRY_AGAIN);
	}
}

/* spf_dns_lookup - libspf2's lookup: one resolver_sync, counted and judged */
static SPF_dns_rr_t *
spf_dns_lookup(SPF_dns_server_t *dns, const char *domain, ns_type type, int should_cache)
{
	struct spf_eval *ev = dns->hook;
	struct resolver_answer a;
	struct ub_result *ub = NULL;
	enum resolver_status st;
	SPF_dns_rr_t *rr;
	char name[256];
	int rrtype = spf_dns_type(type), host;
	bool cidr0;

	(void)should_cache;
	/* once the result is known to be an error, nothing more is asked */
	if (rrtype == 0 || ev->permerror || (ev->temperror && !ev->in_exp))
		return SPF_dns_rr_new_init(dns, domain, type, 0,
		    ev->permerror || rrtype == 0 ? NO_RECOVERY : TRY_AGAIN);
	if (!spf_dns_name(domain, name, sizeof(name), &cidr0))
		return SPF_dns_rr_new_init(dns, domain, type, 0, HOST_NOT_FOUND);
	host = spf_dns_host(ev, name);
	if (!spf_dns_count(ev, name, rrtype, host))
		return SPF_dns_rr_new_init(dns, domain, type, 0, NO_RECOVERY);
	st = resolver_sync(ev->conf, name, rrtype, &a, &ub);
	rr = spf_dns_result(ev, dns, domain, type, rrtype, st, &a, cidr0,
	    host >= 0 && ev->ptr_hosts[host] && (rrtype == RESOLVER_A || rrtype == RESOLVER_AAAA));
	resolver_sync_free(ub);
	if (rr == NULL)
		fatal("spf: out of memory");
	return rr;
}

/* spf_dns_is_spf - does a TXT string start an SPF record ("v=spf1" then SP or the end)? */
static bool
spf_dns_is_spf(const char *txt)
{
	return str_ncasecmp(txt, "v=spf1", 6) == 0 && (txt[6] == ' ' || txt[6] == '\0');
}

/* spf_dns_none - the domain has no SPF record: none at the top, permerror in an include */
static SPF_errcode_t
spf_dns_none(SPF_response_t *resp, const char *domain)
{
	resp->result = SPF_RESULT_NONE;
	resp->reason = SPF_REASON_FAILURE;
	return SPF_response_add_error(resp, SPF_E_NOT_SPF, "no SPF record for %s", domain);
}

/* spf_dns_perm - a permerror of ours */
static SPF_errcode_t
spf_dns_perm(struct spf_eval *ev, SPF_response_t *resp, SPF_errcode_t code, const char *why,
    const char *domain)
{
	spf_eval_fail(ev, true, "%s (%s)", why, domain);
	resp->result = SPF_RESULT_PERMERROR;
	resp->reason = SPF_REASON_FAILURE;
	return SPF_response_add_error(resp, code, "%s for %s", why, domain);
}

/* spf_dns_get_spf - §4.5 record selection and the syntax pass, then libspf2 compiles */
static SPF_errcode_t
spf_dns_get_spf(SPF_server_t *server, SPF_request_t *req, SPF_response_t *resp,
    SPF_record_t **recp)
{
	struct spf_eval *ev = server->resolver->hook;
	const char *domain = req->cur_dom;
	SPF_dns_rr_t *rr;
	SPF_errcode_t err;
	char why[128], *text;
	size_t tsize;
	int i, found = -1, nfound = 0;

	*recp = NULL;
	/* an include or a redirect: a term of its own (the first record is none) */
	if (++ev->records > 1 && !spf_dns_term(ev, domain))
		return spf_dns_perm(ev, resp, SPF_E_BIG_DNS, "DNS lookup limit", domain);
	rr = spf_dns_lookup(server->resolver, domain, ns_t_txt, 1);
	if (rr->herrno == TRY_AGAIN || rr->herrno == NO_RECOVERY) {
		bool perm = rr->herrno == NO_RECOVERY;

		SPF_dns_rr_free(rr);
		resp->result = perm ? SPF_RESULT_PERMERROR : SPF_RESULT_TEMPERROR;
		resp->reason = SPF_REASON_FAILURE;
		return SPF_response_add_error(resp, perm ? SPF_E_BIG_DNS : SPF_E_DNS_ERROR,
		    "DNS failure for %s", domain);
	}
	for (i = 0; i < rr->num_rr && rr->herrno == NETDB_SUCCESS; i++)
		if (spf_dns_is_spf(rr->rr[i]->txt)) {
			nfound++;
			found = i;
		}
	if (nfound == 0) {
		SPF_dns_rr_free(rr);
		return spf_dns_none(resp, domain);
	}
	if (nfound > 1) {
		SPF_dns_rr_free(rr);
		return spf_dns_perm(ev, resp, SPF_E_MULTIPLE_RECORDS, "several SPF records", domain);
	}
	if (!spf_syntax_record(rr->rr[found]->txt, why, sizeof(why))) {
		SPF_dns_rr_free(rr);
		return spf_dns_perm(ev, resp, SPF_E_SYNTAX, why, domain);
	}
	tsize = SPF_REWRITE_SIZE(strlen(rr->rr[found]->txt));
	text = xmalloc(tsize);
	if (!spf_syntax_rewrite(rr->rr[found]->txt, ev->client_v6, text, tsize)) {
		/* SPF_REWRITE_SIZE is an upper bound (the fuzzer checks it): never a crash on DNS data */
		free(text);
		SPF_dns_rr_free(rr);
		return spf_dns_perm(ev, resp, SPF_E_BIG_STRING, "record too long to rewrite", domain);
	}
	SPF_dns_rr_free(rr);
	err = SPF_record_compile(server, resp, recp, text);
	free(text);
	if (err != SPF_E_SUCCESS) {
		if (*recp != NULL)
			SPF_record_free(*recp);
		*recp = NULL;
		return spf_dns_perm(ev, resp, err, SPF_strerror(err), domain);
	}
	return SPF_E_SUCCESS;
}

/* spf_dns_expand - one word of an explanation through libspf2's macro expansion */
static bool
spf_dns_expand(SPF_server_t *server, struct spf_eval *ev, const char *word, char **buf,
    size_t *buflen)
{
	SPF_response_t *resp;
	SPF_macro_t *macro = NULL;
	bool ok;

	if ((resp = SPF_response_new(ev->request)) == NULL)
		fatal("spf: out of memory");
	ok = SPF_record_compile_macro(server, resp, &macro, word) == SPF_E_SUCCESS &&
	    SPF_record_expand_data(server, ev->request, resp, SPF_DNS_MACRO_DATA(macro),
	    macro->macro_len, buf, buflen) == SPF_E_SUCCESS;
	if (macro != NULL)
		SPF_macro_free(macro);
	SPF_response_free(resp);
	return ok;
}

/* spf_dns_explain - text (an explain-string) expanded into ev->exp, word by word */
static bool
spf_dns_explain(SPF_server_t *server, struct spf_eval *ev, const char *text)
{
	char *buf = NULL, *word;
	size_t buflen = 0, n, used = 0;
	bool ok = true;

	while (ok) {
		n = strcspn(text, " ");
		if (n > 0) {
			word = xstrndup(text, n);
			ok = spf_dns_expand(server, ev, word, &buf, &buflen);
			free(word);
			if (ok && used < sizeof(ev->exp) - 1) {
				str_copy(ev->exp + used, buf, sizeof(ev->exp) - used);
				used = strlen(ev->exp);
			}
		}
		if (text[n] == '\0')
			break;
		if (used < sizeof(ev->exp) - 1) {
			ev->exp[used++] = ' ';
			ev->exp[used] = '\0';
		}
		text += n + 1;
	}
	free(buf);
	return ok;
}

/* spf_dns_get_exp - §6.2: the exp= domain's one TXT record, expanded; else no explanation */
static SPF_errcode_t
spf_dns_get_exp(SPF_server_t *server, const char *domain, char **bufp, size_t *buflenp)
{
	struct spf_eval *ev = server->resolver->hook;
	SPF_dns_rr_t *rr;
	bool ok;

	ev->in_exp = true;
	ev->exp[0] = '\0';
	rr = spf_dns_lookup(server->resolver, domain, ns_t_txt, 1);
	ok = rr->herrno == NETDB_SUCCESS && rr->num_rr == 1 &&
	    spf_syntax_explain(rr->rr[0]->txt) && spf_dns_explain(server, ev, rr->rr[0]->txt);
	SPF_dns_rr_free(rr);
	ev->in_exp = false;
	if (!ok) {
		ev->exp[0] = '\0';
		return SPF_E_NOT_SPF;
	}
	if (*buflenp < strlen(ev->exp) + 1) {
		*buflenp = strlen(ev->exp) + 1;
		*bufp = xrealloc(*bufp, *buflenp);
	}
	memcpy(*bufp, ev->exp, strlen(ev->exp) + 1);
	return SPF_E_SUCCESS;
}

/* spf_dns_destroy - the layer is freed with its server */
static void
spf_dns_destroy(SPF_dns_server_t *dns)
{
	free(dns);
}

/* spf_dns_new - the layer for one evaluation */
SPF_dns_server_t *
spf_dns_new(struct spf_eval *ev)
{
	SPF_dns_server_t *dns = xcalloc(1, sizeof(*dns));

	dns->destroy = spf_dns_destroy;
	dns->lookup = spf_dns_lookup;
	dns->get_spf = spf_dns_get_spf;
	dns->get_exp = spf_dns_get_exp;
	dns->name = "portier";
	dns->hook = ev;
	return dns;
}
