/*
 * dkim_verify.c - the "dkim-verify" filter: every DKIM-Signature of a
 * message checked (RFC 6376; RSA-SHA256, RSA-SHA1, Ed25519-SHA256 of RFC
 * 8463) with libopendkim, a result per signature in Authentication-Results
 * (RFC 8601, header.b as RFC 6008) and in the transaction's facts (DMARC).
 *
 * At end of message, on the loop: the header block as received goes to
 * libopendkim, which parses the signatures; their keys
 * (selector._domainkey.domain, TXT) are asked of the loop's resolver, the
 * body is hashed meanwhile, and the stage waits (filter_wait_begin).  When
 * every answer is in (or timed out: the resolver bounds each query),
 * libopendkim verifies, reading the keys through a key-lookup callback that
 * hands it the answers: it never does DNS of its own and no thread waits on
 * DNS.  NXDOMAIN or no TXT is no key (permerror), SERVFAIL or a timeout a
 * temporary error (temperror).
 *
 * Limits: at most max_signatures DKIM-Signature fields are evaluated (the
 * topmost; the others are not even handed to libopendkim); a key record is
 * read up to libopendkim's 1,024 octets.  The verdict is always CONTINUE:
 * this filter tags, a later one (dmarc) decides.
 *
 * Ownership: the instance (a DKIM_LIB and the limits) is read-only after
 * configure() and shared by every loop; libopendkim's library handle is
 * made for that.  A job (one message's verification, its DKIM handle, its
 * queries) is the session's per-filter state while the stage waits; cancel,
 * abort and close free it, cancelling its queries first, so no answer ever
 * reaches freed memory.
 */
#include "config.h"

#include <assert.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <opendkim/dkim.h>

#include "util.h"
#include "log.h"
#include "spool.h"
#include "resolver.h"
#include "filter.h"
#include "dkim_verify.h"

#define DKIM_VERIFY_MAX_SIGS		10	/* default max_signatures */
#define DKIM_VERIFY_MAX_SIGS_LIMIT	1000
#define DKIM_VERIFY_CLOCK_SKEW		300	/* default clock_skew, libopendkim's too */
#define DKIM_VERIFY_CLOCK_SKEW_LIMIT	86400
#define DKIM_VERIFY_MIN_KEY_BITS	1024	/* RFC 8301 3.2: smaller RSA keys never pass */
#define DKIM_VERIFY_MAX_KEY_BITS	16384
#define DKIM_VERIFY_RECORD_MAX		4096	/* a key record kept (libopendkim reads 1,024) */
#define DKIM_VERIFY_NAME_MAX		253	/* a DNS name, dotted */
#define DKIM_VERIFY_CHUNK		16384	/* body read from the spool at a time */
#define DKIM_VERIFY_SIG_FIELD		"DKIM-Signature"

struct dkim_verify_inst {
	DKIM_LIB *lib;
	unsigned max_signatures;
	unsigned clock_skew;
	unsigned min_key_bits;
};

/* A key name of the message and what DNS said for it. */
struct dkim_verify_keyent {
	char *name;
	enum dkim_verify_key st;
	char *record;			/* FOUND: the TXT record's strings joined */
	struct resolver_query *q;	/* the filter's query in flight, NULL once answered */
	struct dkim_verify_job *job;	/* for the resolver's callback */
};

struct dkim_verify_job {
	const struct dkim_verify_inst *inst;
	uint64_t session_id;
	DKIM *dkim;
	DKIM_STAT eoh;			/* dkim_eoh's status */
	const char *failed;		/* libopendkim refused the message: why (its text) */
	bool finished;
	bool *dup;			/* per signature fed: its tag-list repeats a tag */
	size_t nfed;
	struct dkim_verify_keyent *keys;
	size_t nkeys;
	struct dkim_verify_result *res;
	char **bsubs;			/* res[i].b, ours */
	size_t nres;
	/* The filter's, while the stage waits */
	struct filter_wait *w;
	size_t npending;
};

/* ---- names ---- */

/* dkim_verify_key_name - "selector._domainkey.domain" into out; false if it is no DNS name */
static bool
dkim_verify_key_name(const char *selector, const char *domain, char *out, size_t size)
{
	int n;

	if (!conf_domain_ok(selector) || !conf_domain_ok(domain))
		return false;
	n = snprintf(out, size, "%s._domainkey.%s", selector, domain);
	return n > 0 && (size_t)n < size && (size_t)n <= DKIM_VERIFY_NAME_MAX;
}

/* dkim_verify_key_find - the key entry of name, or NULL */
static struct dkim_verify_keyent *
dkim_verify_key_find(const struct dkim_verify_job *job, const char *name)
{
	size_t i;

	for (i = 0; i < job->nkeys; i++)
		if (str_casecmp(job->keys[i].name, name) == 0)
			return &job->keys[i];
	return NULL;
}

/* ---- libopendkim's side ---- */

/*
 * dkim_verify_key_lookup - libopendkim asks for a signature's key record:
 * from the answers given, never from DNS.
 */
static DKIM_CBSTAT
dkim_verify_key_lookup(DKIM *dkim, DKIM_SIGINFO *sig, u_char *buf, size_t buflen)
{
	struct dkim_verify_job *job = dkim_get_user_context(dkim);
	struct dkim_verify_keyent *k;
	char name[DKIM_VERIFY_NAME_MAX + 2];
	size_t len;

	if (job == NULL || buflen == 0 ||
	    !dkim_verify_key_name((const char *)dkim_sig_getselector(sig),
	    (const char *)dkim_sig_getdomain(sig), name, sizeof(name)) ||
	    (k = dkim_verify_key_find(job, name)) == NULL)
		return DKIM_CBSTAT_NOTFOUND;
	switch (k->st) {
	case DKIM_VERIFY_KEY_FOUND:
		len = strlen(k->record);
		if (len >= buflen)
			len = buflen - 1;	/* as libopendkim's own DNS code truncates */
		memcpy(buf, k->record, len);
		buf[len] = '\0';
		return DKIM_CBSTAT_CONTINUE;
	case DKIM_VERIFY_KEY_NONE:
		return DKIM_CBSTAT_NOTFOUND;
	case DKIM_VERIFY_KEY_PENDING:
	case DKIM_VERIFY_KEY_TEMP:
		break;
	}
	/* A temporary failure: marked so, libopendkim passes over the signature. */
	dkim_sig_seterror(sig, DKIM_SIGERROR_KEYFAIL);
	return DKIM_CBSTAT_ERROR;
}

/* dkim_verify_is_sig - does the field f[0..n) open with "DKIM-Signature" WSP* ":" */
static bool
dkim_verify_is_sig(const char *f, size_t n)
{
	size_t k = sizeof(DKIM_VERIFY_SIG_FIELD) - 1;

	if (n <= k || str_ncasecmp(f, DKIM_VERIFY_SIG_FIELD, k) != 0)
		return false;
	while (k < n && (f[k] == ' ' || f[k] == '\t'))
		k++;
	return k < n && f[k] == ':';
}

/*
 * dkim_verify_dup_tags - does the tag-list of the field f[0..n) name a tag
 * twice?  RFC 6376 3.2 makes the whole tag-list invalid; libopendkim keeps
 * the last value.  Tag values hold no ';', names no '=' or FWS.
 */
static bool
dkim_verify_dup_tags(const char *f, size_t n)
{
	const char *p = memchr(f, ':', n), *end = f + n, *semi, *eq, *a, *b;
	const char *names[64];
	size_t lens[64], nn = 0, i;

	if (p == NULL)
		return false;
	for (p++; p < end; p = semi + 1) {
		if ((semi = memchr(p, ';', (size_t)(end - p))) == NULL)
			semi = end;
		if ((eq = memchr(p, '=', (size_t)(semi - p))) == NULL)
			continue;	/* an empty or broken spec: libopendkim's to judge */
		for (a = p; a < eq && (*a == ' ' || *a == '\t' || *a == '\r' || *a == '\n'); a++)
			;
		for (b = eq; b > a && (b[-1] == ' ' || b[-1] == '\t' || b[-1] == '\r' ||
		    b[-1] == '\n'); b--)
			;
		for (i = 0; i < nn; i++)
			if (lens[i] == (size_t)(b - a) && memcmp(names[i], a, lens[i]) == 0)
				return true;
		if (nn == ARRAY_SIZE(names))
			return true;	/* no signature has 64 tags: take it as repeated */
		names[nn] = a;
		lens[nn++] = (size_t)(b - a);
		if (semi == end)
			break;
	}
	return false;
}

/*
 * dkim_verify_feed_fields - each field of the block to libopendkim without
 * its final CRLF (a line opening with SP/HTAB continues the one before);
 * DKIM-Signature fields past max are left out and counted in *skipped_r.
 */
static bool
dkim_verify_feed_fields(struct dkim_verify_job *job, const char *p, size_t len, size_t *skipped_r)
{
	size_t start, i = 0, flen, nsigs = 0;
	DKIM_STAT st;
	bool sig;

	*skipped_r = 0;
	while (i < len) {
		/* The field runs to an LF not followed by WSP, or to the end. */
		for (start = i; i < len; i++)
			if (p[i] == '\n' && (i + 1 >= len || (p[i + 1] != ' ' && p[i + 1] != '\t')))
				break;
		flen = i - start;
		if (i < len) {
			if (flen > 0 && p[i - 1] == '\r')
				flen--;
			i++;	/* past the LF */
		}
		if (flen == 0)
			continue;
		sig = dkim_verify_is_sig(p + start, flen);
		if (sig && nsigs >= job->inst->max_signatures) {
			(*skipped_r)++;
			continue;
		}
		if (sig) {
			job->dup = xreallocarray(job->dup, job->nfed + 1, sizeof(*job->dup));
			job->dup[job->nfed++] = dkim_verify_dup_tags(p + start, flen);
			nsigs++;
		}
		/* A malformed field (SYNTAX) is libopendkim's to judge: it goes on. */
		st = dkim_header(job->dkim, (u_char *)(uintptr_t)(p + start), flen);
		if (st != DKIM_STAT_OK && st != DKIM_STAT_SYNTAX) {
			job->failed = dkim_geterror(job->dkim);
			if (job->failed == NULL || *job->failed == '\0')
				job->failed = "libopendkim refused the header";
			return false;
		}
	}
	return true;
}

/*
 * dkim_verify_dup - signature i repeats a tag.  libopendkim lists the
 * signatures in the order they were fed (one each, malformed ones too);
 * should the counts ever differ, nothing is taken for a repetition.
 */
static bool
dkim_verify_dup(const struct dkim_verify_job *job, int i)
{
	DKIM_SIGINFO **sigs;
	int nsigs;

	if (job->dup == NULL || dkim_getsiglist(job->dkim, &sigs, &nsigs) != DKIM_STAT_OK ||
	    (size_t)nsigs != job->nfed)
		return false;
	return job->dup[i];
}

/* dkim_verify_list_keys - the key names of the signatures libopendkim took, once each */
static void
dkim_verify_list_keys(struct dkim_verify_job *job)
{
	DKIM_SIGINFO **sigs;
	char name[DKIM_VERIFY_NAME_MAX + 2];
	int nsigs, i;

	if (dkim_getsiglist(job->dkim, &sigs, &nsigs) != DKIM_STAT_OK || nsigs <= 0)
		return;
	job->keys = xcalloc((size_t)nsigs, sizeof(*job->keys));
	for (i = 0; i < nsigs; i++) {
		if (dkim_verify_dup(job, i))
			dkim_sig_ignore(sigs[i]);	/* no key, no verification: permerror */
		if (dkim_verify_dup(job, i) ||
		    dkim_sig_geterror(sigs[i]) != DKIM_SIGERROR_UNKNOWN ||
		    !dkim_verify_key_name((const char *)dkim_sig_getselector(sigs[i]),
		    (const char *)dkim_sig_getdomain(sigs[i]), name, sizeof(name)) ||
		    dkim_verify_key_find(job, name) != NULL)
			continue;
		job->keys[job->nkeys].name = xstrdup(name);
		job->keys[job->nkeys].st = DKIM_VERIFY_KEY_PENDING;
		job->keys[job->nkeys].job = job;
		job->nkeys++;
	}
}

/* dkim_verify_job_new - the header block through libopendkim (see dkim_verify.h) */
struct dkim_verify_job *
dkim_verify_job_new(const void *inst, uint64_t session_id, const char *fields, size_t len,
    size_t *skipped_r)
{
	struct dkim_verify_job *job = xcalloc(1, sizeof(*job));
	char id[32];
	DKIM_STAT st;

	job->inst = inst;
	job->session_id = session_id;
	*skipped_r = 0;
	snprintf(id, sizeof(id), SESSION_ID_FMT, SESSION_ID(session_id));
	job->dkim = dkim_verify(job->inst->lib, (const u_char *)id, NULL, &st);
	if (job->dkim == NULL) {
		job->failed = "libopendkim could not start a verification";
		job->eoh = st;
		return job;
	}
	dkim_set_user_context(job->dkim, job);
	if (!dkim_verify_feed_fields(job, fields, len, skipped_r)) {
		job->eoh = DKIM_STAT_INTERNAL;
		return job;
	}
	job->eoh = dkim_eoh(job->dkim);
	if (job->eoh != DKIM_STAT_OK && job->eoh != DKIM_STAT_NOSIG)
		job->failed = dkim_geterror(job->dkim);
	dkim_verify_list_keys(job);
	return job;
}

/* dkim_verify_job_signed - a signature was handed to libopendkim */
bool
dkim_verify_job_signed(const struct dkim_verify_job *job)
{
	DKIM_SIGINFO **sigs;
	int nsigs;

	if (job->dkim == NULL)
		return false;
	if (job->eoh == DKIM_STAT_NOSIG)
		return false;
	return dkim_getsiglist(job->dkim, &sigs, &nsigs) == DKIM_STAT_OK && nsigs > 0;
}

size_t
dkim_verify_job_nkeys(const struct dkim_verify_job *job)
{
	return job->nkeys;
}

const char *
dkim_verify_job_key(const struct dkim_verify_job *job, size_t i)
{
	assert(i < job->nkeys);
	return job->keys[i].name;
}

/* dkim_verify_job_answer - what DNS said for key name i */
void
dkim_verify_job_answer(struct dkim_verify_job *job, size_t i, enum dkim_verify_key st,
    const char *record, size_t len)
{
	struct dkim_verify_keyent *k;

	assert(i < job->nkeys);
	k = &job->keys[i];
	k->st = st;
	free(k->record);
	k->record = NULL;
	if (st == DKIM_VERIFY_KEY_FOUND)
		k->record = xstrndup(record != NULL ? record : "", record != NULL ? len : 0);
}

/* dkim_verify_job_body - more of the body */
bool
dkim_verify_job_body(struct dkim_verify_job *job, const char *chunk, size_t len)
{
	DKIM_STAT st;

	if (job->failed != NULL || job->eoh != DKIM_STAT_OK || len == 0)
		return job->failed == NULL;
	st = dkim_body(job->dkim, (u_char *)(uintptr_t)chunk, len);
	if (st != DKIM_STAT_OK) {
		job->failed = dkim_geterror(job->dkim);
		if (job->failed == NULL || *job->failed == '\0')
			job->failed = "libopendkim refused the body";
		return false;
	}
	return true;
}

/* dkim_verify_outcome - RFC 8601's word for a signature libopendkim has been through */
static const char *
dkim_verify_outcome(DKIM_SIGINFO *sig, const char **why_r)
{
	unsigned flags = dkim_sig_getflags(sig);
	int err = dkim_sig_geterror(sig);
	dkim_alg_t alg = DKIM_SIGN_UNKNOWN;

	*why_r = NULL;
	if ((flags & DKIM_SIGFLAG_PASSED) && dkim_sig_getbh(sig) == DKIM_SIGBH_MATCH &&
	    (err == DKIM_SIGERROR_OK || err == DKIM_SIGERROR_UNKNOWN)) {
		if (dkim_sig_getsignalg(sig, &alg) == DKIM_STAT_OK && alg == DKIM_SIGN_RSASHA1) {
			*why_r = "rsa-sha1 is not accepted (RFC 8301)";
			return "policy";
		}
		return "pass";
	}
	*why_r = dkim_sig_geterrorstr(err);
	switch (err) {
	case DKIM_SIGERROR_KEYFAIL:
		*why_r = "key query failed";
		return "temperror";
	case DKIM_SIGERROR_KEYTOOSMALL:
		return "policy";
	case DKIM_SIGERROR_BADSIG:
		return "fail";
	case DKIM_SIGERROR_OK:
	case DKIM_SIGERROR_UNKNOWN:
		if (flags & DKIM_SIGFLAG_PROCESSED) {
			*why_r = dkim_sig_getbh(sig) == DKIM_SIGBH_MISMATCH ?
			    "body hash mismatch" : "signature verification failed";
			return "fail";
		}
		*why_r = "not verified";
		return "temperror";
	default:
		if (*why_r == NULL)
			*why_r = "invalid signature";
		return "permerror";
	}
}

/* dkim_verify_job_finish - libopendkim verifies; a result per signature */
size_t
dkim_verify_job_finish(struct dkim_verify_job *job, const struct dkim_verify_result **res_r)
{
	DKIM_SIGINFO **sigs;
	int nsigs, i;
	char b[64];
	size_t blen;
	bool testkey = false;

	assert(!job->finished);
	job->finished = true;
	*res_r = NULL;
	if (!dkim_verify_job_signed(job))
		return 0;
	if (job->failed == NULL && job->eoh == DKIM_STAT_OK)
		(void)dkim_eom(job->dkim, &testkey);	/* per signature below */
	if (dkim_getsiglist(job->dkim, &sigs, &nsigs) != DKIM_STAT_OK || nsigs <= 0)
		return 0;
	job->res = xcalloc((size_t)nsigs, sizeof(*job->res));
	job->bsubs = xcalloc((size_t)nsigs, sizeof(*job->bsubs));
	for (i = 0; i < nsigs; i++) {
		struct dkim_verify_result *r = &job->res[i];
		const char *s;

		if (dkim_verify_dup(job, i)) {
			r->result = "permerror";
			r->why = "tag repeated in the signature";
		} else if (job->failed != NULL) {
			r->result = "temperror";
			r->why = job->failed;
		} else {
			r->result = dkim_verify_outcome(sigs[i], &r->why);
		}
		s = (const char *)dkim_sig_getdomain(sigs[i]);
		r->domain = s != NULL ? s : "";
		s = (const char *)dkim_sig_getselector(sigs[i]);
		r->selector = s != NULL ? s : "";
		s = (const char *)dkim_sig_getalgorithm(sigs[i]);
		r->algorithm = s != NULL ? s : "";
		blen = sizeof(b) - 1;
		if (dkim_get_sigsubstring(job->dkim, sigs[i], b, &blen) == DKIM_STAT_OK &&
		    blen < sizeof(b)) {
			b[blen] = '\0';
			job->bsubs[i] = xstrdup(b);
		} else {
			job->bsubs[i] = xstrdup("");
		}
		r->b = job->bsubs[i];
		if (dkim_sig_getkeysize(sigs[i], &r->bits) != DKIM_STAT_OK)
			r->bits = 0;
	}
	job->nres = (size_t)nsigs;
	*res_r = job->res;
	return job->nres;
}

/* dkim_verify_job_free - everything of the job; its queries must be cancelled already */
void
dkim_verify_job_free(struct dkim_verify_job *job)
{
	size_t i;

	if (job == NULL)
		return;
	for (i = 0; i < job->nkeys; i++) {
		assert(job->keys[i].q == NULL);
		free(job->keys[i].name);
		free(job->keys[i].record);
	}
	free(job->keys);
	free(job->dup);
	for (i = 0; i < job->nres; i++)
		free(job->bsubs[i]);
	free(job->bsubs);
	free(job->res);
	if (job->dkim != NULL)
		dkim_free(job->dkim);
	free(job);
}

/* ---- Authentication-Results ---- */

/* dkim_verify_token_char - may c stand in an RFC 2045 token (no quoting needed) */
static bool
dkim_verify_token_char(unsigned char c)
{
	return c > ' ' && c < 0x7f && strchr("()<>@,;:\\\"/[]?=", c) == NULL;
}

/*
 * dkim_verify_value - v as an RFC 8601 value: as is when it is a token,
 * else a quoted-string; controls and 8-bit octets (message text) become '?'.
 */
static const char *
dkim_verify_value(char *out, size_t size, const char *v)
{
	size_t i, o = 0;
	bool token = *v != '\0';

	for (i = 0; v[i] != '\0'; i++)
		if (!dkim_verify_token_char((unsigned char)v[i]))
			token = false;
	if (token && str_copy(out, v, size))
		return out;
	out[o++] = '"';
	for (i = 0; v[i] != '\0' && o + 4 < size; i++) {
		unsigned char c = (unsigned char)v[i];

		if (c == '"' || c == '\\')
			out[o++] = '\\';
		out[o++] = (c < ' ' || c >= 0x7f) ? '?' : (char)c;
	}
	out[o++] = '"';
	out[o] = '\0';
	return out;
}

/* dkim_verify_record - results into txn and the log */
void
dkim_verify_record(struct filter_txn *txn, uint64_t session_id,
    const struct dkim_verify_result *res, size_t n)
{
	char d[300], s[300], a[64], b[80], why[200];
	char ed[300], es[300], ewhy[400];
	size_t i;

	if (n == 0) {
		filter_auth_result(txn, "dkim=none");
		filter_auth_fact(txn, "dkim", "none", NULL, NULL);
		log_info("id=" SESSION_ID_FMT " event=dkim_verify result=none",
		    SESSION_ID(session_id));
		return;
	}
	for (i = 0; i < n; i++) {
		const struct dkim_verify_result *r = &res[i];
		struct buf item;

		buf_init(&item);
		buf_printf(&item, "dkim=%s", r->result);
		if (r->why != NULL)
			buf_printf(&item, " reason=%s", dkim_verify_value(why, sizeof(why),
			    r->why[0] != '\0' ? r->why : "unknown"));
		if (*r->domain != '\0')
			buf_printf(&item, " header.d=%s", dkim_verify_value(d, sizeof(d), r->domain));
		if (*r->selector != '\0')
			buf_printf(&item, " header.s=%s",
			    dkim_verify_value(s, sizeof(s), r->selector));
		if (*r->algorithm != '\0')
			buf_printf(&item, " header.a=%s",
			    dkim_verify_value(a, sizeof(a), r->algorithm));
		if (*r->b != '\0')
			buf_printf(&item, " header.b=%s", dkim_verify_value(b, sizeof(b), r->b));
		filter_auth_result(txn, "%s", item.data);
		buf_free(&item);
		filter_auth_fact(txn, "dkim", r->result, *r->domain != '\0' ? r->domain : NULL,
		    *r->selector != '\0' ? r->selector : NULL);
		log_info("id=" SESSION_ID_FMT " event=dkim_verify result=%s d=%s s=%s a=%s "
		    "bits=%u reason=\"%s\"", SESSION_ID(session_id), r->result,
		    log_escape(ed, sizeof(ed), r->domain, strlen(r->domain)),
		    log_escape(es, sizeof(es), r->selector, strlen(r->selector)),
		    dkim_verify_value(a, sizeof(a), r->algorithm), r->bits,
		    r->why != NULL ? log_escape(ewhy, sizeof(ewhy), r->why, strlen(r->why)) : "");
	}
}

/* ---- the filter ---- */

/* dkim_verify_keys - the section's keys into in; false + *err_r naming the key and its line */
static bool
dkim_verify_keys(struct dkim_verify_inst *in, const struct conf_section *sec, char **err_r)
{
	size_t i;

	for (i = 0; sec != NULL && i < sec->nkv; i++) {
		const struct conf_kv *kv = &sec->kv[i];

		if (strcmp(kv->key, "max_signatures") == 0) {
			if (!filter_conf_uint(kv, 1, DKIM_VERIFY_MAX_SIGS_LIMIT,
			    &in->max_signatures, err_r))
				return false;
		} else if (strcmp(kv->key, "clock_skew") == 0) {
			if (!filter_conf_uint(kv, 0, DKIM_VERIFY_CLOCK_SKEW_LIMIT,
			    &in->clock_skew, err_r))
				return false;
		} else if (strcmp(kv->key, "min_key_bits") == 0) {
			if (!filter_conf_uint(kv, DKIM_VERIFY_MIN_KEY_BITS,
			    DKIM_VERIFY_MAX_KEY_BITS, &in->min_key_bits, err_r))
				return false;
		} else if (strcmp(kv->key, "threads") == 0) {
			*err_r = xasprintf("threads at line %d: dkim-verify runs on the loop, "
			    "it has no pool", kv->line);
			return false;
		} else if (!filter_chain_key(kv->key)) {
			*err_r = xasprintf("unknown key \"%s\" at line %d", kv->key, kv->line);
			return false;
		}
	}
	return true;
}

static void dkim_verify_destroy(void *inst);

/* dkim_verify_configure - the limits, and a libopendkim handle that never does DNS */
static void *
dkim_verify_configure(const struct conf *conf, const struct conf_section *sec, char **err_r)
{
	struct dkim_verify_inst *in = xcalloc(1, sizeof(*in));
	unsigned int flags = DKIM_LIBFLAGS_BADSIGHANDLES | DKIM_LIBFLAGS_DELAYSIGPROC;
	uint64_t drift;
	u_int bits;

	(void)conf;
	in->max_signatures = DKIM_VERIFY_MAX_SIGS;
	in->clock_skew = DKIM_VERIFY_CLOCK_SKEW;
	in->min_key_bits = DKIM_VERIFY_MIN_KEY_BITS;
	if (!dkim_verify_keys(in, sec, err_r)) {
		free(in);
		return NULL;
	}
	if ((in->lib = dkim_init(NULL, NULL)) == NULL) {
		*err_r = xstrdup("libopendkim failed to initialize");
		free(in);
		return NULL;
	}
	drift = in->clock_skew;
	bits = in->min_key_bits;
	/*
	 * BADSIGHANDLES: a malformed signature gets a handle (and a permerror)
	 * instead of vanishing; DELAYSIGPROC: no key is asked for at end of
	 * headers, only at dkim_eom, once our answers are in.
	 */
	if (dkim_options(in->lib, DKIM_OP_SETOPT, DKIM_OPTS_FLAGS, &flags, sizeof(flags)) !=
	    DKIM_STAT_OK ||
	    dkim_options(in->lib, DKIM_OP_SETOPT, DKIM_OPTS_CLOCKDRIFT, &drift, sizeof(drift)) !=
	    DKIM_STAT_OK ||
	    dkim_options(in->lib, DKIM_OP_SETOPT, DKIM_OPTS_MINKEYBITS, &bits, sizeof(bits)) !=
	    DKIM_STAT_OK ||
	    dkim_set_key_lookup(in->lib, dkim_verify_key_lookup) != DKIM_STAT_OK) {
		*err_r = xstrdup("libopendkim refused its options");
		dkim_verify_destroy(in);
		return NULL;
	}
	return in;
}

static void
dkim_verify_destroy(void *inst)
{
	struct dkim_verify_inst *in = inst;

	if (in == NULL)
		return;
	if (in->lib != NULL)
		dkim_close(in->lib);
	free(in);
}

/* dkim_verify_cancel_queries - no answer will reach the job any more */
static void
dkim_verify_cancel_queries(struct dkim_verify_job *job)
{
	size_t i;

	for (i = 0; i < job->nkeys; i++) {
		if (job->keys[i].q != NULL) {
			resolver_cancel(job->keys[i].q);
			job->keys[i].q = NULL;
			job->npending--;
		}
	}
}

/* dkim_verify_drop - free the session's job, if any (queries cancelled, handle given back) */
static void
dkim_verify_drop(struct filter_ctx *ctx)
{
	struct dkim_verify_job *job = *ctx->priv;
	struct filter_wait *w;

	if (job == NULL)
		return;
	*ctx->priv = NULL;
	dkim_verify_cancel_queries(job);
	w = job->w;
	dkim_verify_job_free(job);
	if (w != NULL)
		filter_wait_done(w, FILTER_CONTINUE, NULL);	/* the chain dropped it: freed */
}

/* dkim_verify_header_block - the fields of the message as received, read from its spool */
static char *
dkim_verify_header_block(const struct filter_txn *txn, size_t *len_r)
{
	size_t off = txn->body_offset, n;
	char *p;

	*len_r = 0;
	if (txn->body == NULL || off == 0)
		return NULL;
	p = xmalloc(off + 1);
	if (spool_pread(txn->body, p, off, 0) != (ssize_t)off) {
		free(p);
		return NULL;
	}
	/* The empty line that ends the block is no field (a block ended otherwise has none). */
	n = off;
	if (n >= 2 && p[n - 2] == '\r' && p[n - 1] == '\n' &&
	    (n == 2 || (n >= 4 && p[n - 4] == '\r' && p[n - 3] == '\n')))
		n -= 2;
	*len_r = n;
	return p;
}

/* dkim_verify_feed_body - the body from the spool to libopendkim */
static void
dkim_verify_feed_body(struct dkim_verify_job *job, const struct filter_txn *txn)
{
	char chunk[DKIM_VERIFY_CHUNK];
	size_t off = txn->body_offset, size = spool_size(txn->body);
	ssize_t n;

	while (off < size) {
		n = spool_pread(txn->body, chunk, sizeof(chunk), off);
		if (n <= 0) {
			job->failed = "cannot read the message";
			return;
		}
		if (!dkim_verify_job_body(job, chunk, (size_t)n))
			return;
		off += (size_t)n;
	}
}

/* dkim_verify_complete - verify and record the results into txn; frees job */
static void
dkim_verify_complete(struct dkim_verify_job *job, struct filter_txn *txn)
{
	const struct dkim_verify_result *res;
	size_t n = dkim_verify_job_finish(job, &res);

	dkim_verify_record(txn, job->session_id, res, n);
	dkim_verify_job_free(job);
}

/* dkim_verify_answered - a key query's answer, on the loop */
static void
dkim_verify_answered(void *arg, const struct resolver_answer *a)
{
	struct dkim_verify_keyent *k = arg;
	struct dkim_verify_job *job = k->job;
	char rec[DKIM_VERIFY_RECORD_MAX];
	struct filter_wait *w;
	struct filter_ctx *ctx;
	size_t i;

	k->q = NULL;
	job->npending--;
	switch (a->status) {
	case RESOLVER_OK:
		/* Several records (RFC 6376 3.6.2.2): the first that holds a key. */
		k->st = DKIM_VERIFY_KEY_TEMP;
		for (i = 0; i < a->count; i++) {
			if (!resolver_txt(a, i, rec, sizeof(rec)))
				continue;
			if (k->st != DKIM_VERIFY_KEY_FOUND || strstr(k->record, "p=") == NULL)
				dkim_verify_job_answer(job, (size_t)(k - job->keys),
				    DKIM_VERIFY_KEY_FOUND, rec, strlen(rec));
		}
		if (k->st != DKIM_VERIFY_KEY_FOUND)
			k->st = DKIM_VERIFY_KEY_NONE;	/* only records too long to be keys */
		break;
	case RESOLVER_NODATA:
	case RESOLVER_NXDOMAIN:
		k->st = DKIM_VERIFY_KEY_NONE;
		break;
	default:
		k->st = DKIM_VERIFY_KEY_TEMP;
		break;
	}
	log_debug("id=" SESSION_ID_FMT " event=dkim_key name=%s status=%s",
	    SESSION_ID(job->session_id), k->name, resolver_status_name(a->status));
	if (job->npending > 0)
		return;
	w = job->w;
	job->w = NULL;
	if ((ctx = filter_wait_ctx(w)) == NULL) {
		/* Not waited for any more (cancel frees the job first; defensive). */
		filter_wait_done(w, FILTER_CONTINUE, NULL);
		return;
	}
	*ctx->priv = NULL;
	dkim_verify_complete(job, ctx->txn);
	filter_wait_done(w, FILTER_CONTINUE, NULL);
}

/* dkim_verify_ask - a query per key name on the loop's resolver; how many are in flight */
static size_t
dkim_verify_ask(struct dkim_verify_job *job, struct resolver *res)
{
	const char *err;
	size_t i;

	for (i = 0; i < job->nkeys; i++) {
		struct dkim_verify_keyent *k = &job->keys[i];

		k->q = res == NULL ? NULL : resolver_query(res, k->name, RESOLVER_TXT,
		    dkim_verify_answered, k, &err);
		if (k->q == NULL)
			k->st = DKIM_VERIFY_KEY_TEMP;
		else
			job->npending++;
	}
	return job->npending;
}

/*
 * dkim_verify_eom - the header block to libopendkim, the key queries out,
 * the body hashed meanwhile; the results when the answers are in.
 */
static enum filter_verdict
dkim_verify_eom(void *inst, struct filter_ctx *ctx, struct filter_reply *r)
{
	struct filter_txn *txn = ctx->txn;
	struct dkim_verify_job *job;
	size_t hlen, skipped;
	char *head;

	(void)r;
	dkim_verify_drop(ctx);	/* a job left over (never: the chain runs one stage at a time) */
	head = dkim_verify_header_block(txn, &hlen);
	job = dkim_verify_job_new(inst, ctx->sess->id, head != NULL ? head : "", hlen, &skipped);
	free(head);
	if (skipped > 0)
		log_info("id=" SESSION_ID_FMT " event=dkim_verify_skipped signatures=%zu max=%u",
		    SESSION_ID(ctx->sess->id), skipped,
		    ((const struct dkim_verify_inst *)inst)->max_signatures);
	if (!dkim_verify_job_signed(job)) {
		dkim_verify_complete(job, txn);
		return FILTER_CONTINUE;
	}
	if (dkim_verify_ask(job, ctx->resolver) > 0 && (job->w = filter_wait_begin(ctx)) == NULL) {
		dkim_verify_cancel_queries(job);	/* no loop to wait on: temperror */
		for (size_t i = 0; i < job->nkeys; i++)
			job->keys[i].st = DKIM_VERIFY_KEY_TEMP;
	}
	dkim_verify_feed_body(job, txn);
	if (job->w == NULL) {
		dkim_verify_complete(job, txn);
		return FILTER_CONTINUE;
	}
	*ctx->priv = job;
	return FILTER_PENDING;
}

/* dkim_verify_cancel - the chain stopped waiting: the queries go, the handle is given back */
static void
dkim_verify_cancel(void *inst, struct filter_ctx *ctx)
{
	(void)inst;
	dkim_verify_drop(ctx);
}

/* dkim_verify_close - the session ends (abort: the transaction does) */
static void
dkim_verify_close(void *inst, struct filter_ctx *ctx)
{
	(void)inst;
	dkim_verify_drop(ctx);
}

const struct filter_ops dkim_verify_ops = {
	.name = "dkim-verify",
	.dns = true,
	.configure = dkim_verify_configure,
	.destroy = dkim_verify_destroy,
	.eom = dkim_verify_eom,
	.abort = dkim_verify_close,
	.close = dkim_verify_close,
	.cancel = dkim_verify_cancel,
};
