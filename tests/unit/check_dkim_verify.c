/*
 * check_dkim_verify.c - unit tests for the dkim-verify filter
 * (filters/dkim_verify.c) apart from DNS: its configuration, and its jobs
 * driven with keys given by the tests, the way the filter gives them what
 * the resolver answered.
 *
 * Messages: the RFC 8463 example (Ed25519 and RSA signatures, over-signed
 * headers) from tests/suites/dkim/rfc8463 ($PORTIER_SUITES overrides
 * the suites' directory), and messages signed here with libopendkim (keys
 * generated at run time with OpenSSL) for what needs a signature of our
 * choosing: l=, t= in the future, x= in the past, a 512-bit key.
 * Every job is fed its body in pieces of several sizes, one octet too.
 */
#include "config.h"

#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <opendkim/dkim.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/rsa.h>
#include <openssl/x509.h>

#include "util.h"
#include "buf.h"
#include "conf.h"
#include "filter.h"
#include "dkim_verify.h"
#include "unit.h"

#define FEX "football.example.com"

/* ---- fixtures ---- */

/* suite_path - a file of the suites' dkim directory (tests/suites/dkim under $srcdir) */
static char *
suite_path(const char *rel)
{
	const char *env = getenv("PORTIER_SUITES");
	const char *srcdir = getenv("srcdir") != NULL ? getenv("srcdir") : ".";

	if (env != NULL)
		return xasprintf("%s/dkim/%s", env, rel);
	return xasprintf("%s/tests/suites/dkim/%s", srcdir, rel);
}

/* slurp - a whole file, NUL-terminated */
static char *
slurp(const char *rel, size_t *len_r)
{
	char *path = suite_path(rel);
	FILE *f = fopen(path, "rb");
	struct buf b;
	char chunk[4096];
	size_t n;

	ck_assert_msg(f != NULL, "cannot read %s", path);
	buf_init(&b);
	while ((n = fread(chunk, 1, sizeof(chunk), f)) > 0)
		buf_append(&b, chunk, n);
	fclose(f);
	free(path);
	*len_r = b.len;
	return b.data;
}

/* A key table: name -> what DNS says. */
struct tkey {
	const char *name;
	enum dkim_verify_key st;
	char *record;
};

#define MAXKEYS 8
static struct tkey keys[MAXKEYS];
static size_t nkeys;

static void
key_set(const char *name, enum dkim_verify_key st, const char *record)
{
	ck_assert_uint_lt(nkeys, MAXKEYS);
	keys[nkeys].name = name;
	keys[nkeys].st = st;
	keys[nkeys].record = record != NULL ? xstrdup(record) : NULL;
	nkeys++;
}

/* rfc8463_keys - the example's two key records (its query file) */
static void
rfc8463_keys(void)
{
	size_t len;
	char *q = slurp("rfc8463/keys.opendkim-queryfile", &len), *line, *save = NULL, *tab;

	for (line = strtok_r(q, "\r\n", &save); line != NULL; line = strtok_r(NULL, "\r\n", &save)) {
		if ((tab = strchr(line, '\t')) == NULL)
			continue;
		*tab = '\0';
		key_set(strstr(line, "brisbane") != NULL ? "brisbane._domainkey." FEX :
		    "test._domainkey." FEX, DKIM_VERIFY_KEY_FOUND, tab + 1);
	}
	free(q);
	ck_assert_uint_eq(nkeys, 2);
}

static void
setup(void)
{
	nkeys = 0;
}

static void
teardown(void)
{
	size_t i;

	for (i = 0; i < nkeys; i++)
		free(keys[i].record);
	nkeys = 0;
}

/* inst_new - the filter configured from key = value pairs (NULL-terminated), or NULL + *err_r */
static void *
inst_try(char **err_r, const char *const *kv)
{
	struct conf_kv items[8];
	struct conf_section sec = { "filter", "dkim-verify", 1, items, 0 };
	struct conf conf;

	memset(&conf, 0, sizeof(conf));
	*err_r = NULL;
	for (; kv != NULL && kv[0] != NULL; kv += 2) {
		items[sec.nkv].key = (char *)(uintptr_t)kv[0];
		items[sec.nkv].value = (char *)(uintptr_t)kv[1];
		items[sec.nkv].line = 10 + (int)sec.nkv;
		sec.nkv++;
	}
	return dkim_verify_ops.configure(&conf, &sec, err_r);
}

static void *
inst_new(const char *const *kv)
{
	char *err;
	void *in = inst_try(&err, kv);

	ck_assert_msg(in != NULL, "configure: %s", err != NULL ? err : "?");
	return in;
}

/* A verification's outcome, copied out of the job. */
struct outcome {
	bool signed_;
	size_t skipped;
	size_t n;
	char result[16][16];
	char domain[16][64];
	char selector[16][64];
	char algorithm[16][32];
	char b[16][32];
	char why[16][128];
	unsigned bits[16];
};

/*
 * run - verify msg (whole, CRLF) with instance in and the key table, the
 * body fed chunk octets at a time; unanswered names stay PENDING.
 */
static void
run(void *in, const char *msg, size_t len, size_t chunk, struct outcome *o)
{
	const char *sep = strstr(msg, "\r\n\r\n");
	size_t hlen, off, i, k;
	struct dkim_verify_job *job;
	const struct dkim_verify_result *res;

	ck_assert_ptr_nonnull(sep);
	hlen = (size_t)(sep - msg) + 2;
	memset(o, 0, sizeof(*o));
	job = dkim_verify_job_new(in, 0x42, msg, hlen, &o->skipped);
	o->signed_ = dkim_verify_job_signed(job);
	for (i = 0; i < dkim_verify_job_nkeys(job); i++)
		for (k = 0; k < nkeys; k++)
			if (strcmp(keys[k].name, dkim_verify_job_key(job, i)) == 0)
				dkim_verify_job_answer(job, i, keys[k].st, keys[k].record,
				    keys[k].record != NULL ? strlen(keys[k].record) : 0);
	for (off = hlen + 2; off < len; off += chunk)
		ck_assert(dkim_verify_job_body(job, msg + off, off + chunk <= len ? chunk : len - off));
	o->n = dkim_verify_job_finish(job, &res);
	ck_assert_uint_le(o->n, 16);
	for (i = 0; i < o->n; i++) {
		str_copy(o->result[i], res[i].result, sizeof(o->result[i]));
		str_copy(o->domain[i], res[i].domain, sizeof(o->domain[i]));
		str_copy(o->selector[i], res[i].selector, sizeof(o->selector[i]));
		str_copy(o->algorithm[i], res[i].algorithm, sizeof(o->algorithm[i]));
		str_copy(o->b[i], res[i].b, sizeof(o->b[i]));
		str_copy(o->why[i], res[i].why != NULL ? res[i].why : "", sizeof(o->why[i]));
		o->bits[i] = res[i].bits;
	}
	dkim_verify_job_free(job);
}

/* run_all_chunks - run with several body chunkings: each must give the same results */
static void
run_all_chunks(void *in, const char *msg, size_t len, struct outcome *o)
{
	static const size_t chunks[] = { 1, 7, 100, 1 << 20 };
	struct outcome other;
	size_t c, i;

	run(in, msg, len, chunks[0], o);
	for (c = 1; c < ARRAY_SIZE(chunks); c++) {
		run(in, msg, len, chunks[c], &other);
		ck_assert_uint_eq(other.n, o->n);
		for (i = 0; i < o->n; i++)
			ck_assert_str_eq(other.result[i], o->result[i]);
	}
}

/* replace - msg with the first "from" replaced by "to" (a new string) */
static char *
replace(const char *msg, const char *from, const char *to, size_t *len_r)
{
	const char *at = strstr(msg, from);

	ck_assert_msg(at != NULL, "no \"%s\" in the message", from);
	*len_r = strlen(msg) - strlen(from) + strlen(to);
	return xasprintf("%.*s%s%s", (int)(at - msg), msg, to, at + strlen(from));
}

/* ---- signing with libopendkim, keys from OpenSSL ---- */

struct tsigner {
	char *pem;		/* private key */
	char *record;		/* "v=DKIM1; k=rsa; p=..." */
};

static void
rsa_key(unsigned bits, struct tsigner *s)
{
	EVP_PKEY *pk = EVP_RSA_gen(bits);
	BIO *bio = BIO_new(BIO_s_mem());
	unsigned char *der = NULL, *b64;
	char *data;
	long n;
	int dlen;

	ck_assert(pk != NULL && bio != NULL);
	ck_assert(PEM_write_bio_PrivateKey(bio, pk, NULL, NULL, 0, NULL, NULL) == 1);
	n = BIO_get_mem_data(bio, &data);
	s->pem = xstrndup(data, (size_t)n);
	dlen = i2d_PUBKEY(pk, &der);
	ck_assert_int_gt(dlen, 0);
	b64 = xmalloc((size_t)dlen * 2 + 4);
	EVP_EncodeBlock(b64, der, dlen);
	s->record = xasprintf("v=DKIM1; k=rsa; p=%s", b64);
	free(b64);
	OPENSSL_free(der);
	BIO_free(bio);
	EVP_PKEY_free(pk);
}

static void
signer_free(struct tsigner *s)
{
	free(s->pem);
	free(s->record);
}

#define TEST_MSG "From: Alice <alice@sign.test>\r\nTo: bob@example.test\r\n" \
	"Subject: hello\r\nDate: Thu, 1 Jan 2026 00:00:00 +0000\r\n\r\n" \
	"Hello Bob.\r\n\r\nBye.\r\n"

/*
 * sign - TEST_MSG signed by key s (selector "sel", domain sign.test);
 * when != 0: the signature's time, its lifetime (x=), l= (length, -1 none).
 */
static char *
sign(const struct tsigner *s, uint64_t when, uint64_t ttl, ssize_t length)
{
	DKIM_LIB *lib = dkim_init(NULL, NULL);
	DKIM_STAT st;
	DKIM *d;
	unsigned char hdr[4096];
	const char *msg = TEST_MSG, *p, *e;
	const char *body = strstr(msg, "\r\n\r\n") + 4;
	u_int minbits = 512;

	ck_assert_ptr_nonnull(lib);
	/* libopendkim would not sign with the small key either */
	ck_assert_int_eq(dkim_options(lib, DKIM_OP_SETOPT, DKIM_OPTS_MINKEYBITS, &minbits,
	    sizeof(minbits)), DKIM_STAT_OK);
	if (when != 0)
		ck_assert_int_eq(dkim_options(lib, DKIM_OP_SETOPT, DKIM_OPTS_FIXEDTIME, &when,
		    sizeof(when)), DKIM_STAT_OK);
	if (ttl != 0)
		ck_assert_int_eq(dkim_options(lib, DKIM_OP_SETOPT, DKIM_OPTS_SIGNATURETTL, &ttl,
		    sizeof(ttl)), DKIM_STAT_OK);
	d = dkim_sign(lib, (const unsigned char *)"t", NULL, (dkim_sigkey_t)s->pem,
	    (const unsigned char *)"sel", (const unsigned char *)"sign.test", DKIM_CANON_RELAXED,
	    DKIM_CANON_SIMPLE, DKIM_SIGN_RSASHA256, length, &st);
	ck_assert_msg(d != NULL, "dkim_sign: %d", st);
	for (p = msg; p < body - 2; p = e + 2) {
		e = strstr(p, "\r\n");
		ck_assert_int_eq(dkim_header(d, (u_char *)(uintptr_t)p, (size_t)(e - p)),
		    DKIM_STAT_OK);
	}
	ck_assert_int_eq(dkim_eoh(d), DKIM_STAT_OK);
	ck_assert_int_eq(dkim_body(d, (u_char *)(uintptr_t)body, strlen(body)), DKIM_STAT_OK);
	ck_assert_int_eq(dkim_eom(d, NULL), DKIM_STAT_OK);
	ck_assert_int_eq(dkim_getsighdr(d, hdr, sizeof(hdr), strlen("DKIM-Signature: ")),
	    DKIM_STAT_OK);
	dkim_free(d);
	dkim_close(lib);
	return xasprintf("DKIM-Signature: %s\r\n%s", hdr, msg);
}

/* ---- the RFC 8463 example ---- */

START_TEST(test_rfc8463_passes)
{
	void *in = inst_new(NULL);
	size_t len;
	char *msg = slurp("rfc8463/rfc8463-A3-signed.eml", &len);
	struct outcome o;

	rfc8463_keys();
	run_all_chunks(in, msg, len, &o);
	ck_assert(o.signed_);
	ck_assert_uint_eq(o.n, 2);
	ck_assert_str_eq(o.result[0], "pass");
	ck_assert_str_eq(o.result[1], "pass");
	ck_assert_str_eq(o.algorithm[0], "ed25519-sha256");
	ck_assert_str_eq(o.algorithm[1], "rsa-sha256");
	ck_assert_str_eq(o.domain[0], FEX);
	ck_assert_str_eq(o.selector[0], "brisbane");
	ck_assert_str_eq(o.selector[1], "test");
	/* RFC 6008: the first octets of b=, at least 8 */
	ck_assert_str_eq(o.b[0], "/gCrinpc");
	ck_assert_str_eq(o.b[1], "F45dVWDf");
	ck_assert_uint_eq(o.bits[1], 1024);
	free(msg);
	dkim_verify_ops.destroy(in);
}
END_TEST

/* A changed body, a changed signed header, an added over-signed header: both fail. */
START_TEST(test_rfc8463_changes_fail)
{
	static const char *const changes[][2] = {
		{ "We lost the game.", "We won the game." },
		{ "Subject: Is dinner ready?", "Subject: Is lunch ready?" },
		/* Subject is over-signed (h= names it twice): a second one breaks both */
		{ "Date: Fri", "Subject: extra\r\nDate: Fri" },
		/* so is From */
		{ "To: Suzie", "From: mallory@evil.test\r\nTo: Suzie" },
	};
	void *in = inst_new(NULL);
	size_t len, mlen, c;
	char *msg = slurp("rfc8463/rfc8463-A3-signed.eml", &len), *m;
	struct outcome o;

	rfc8463_keys();
	for (c = 0; c < ARRAY_SIZE(changes); c++) {
		m = replace(msg, changes[c][0], changes[c][1], &mlen);
		run_all_chunks(in, m, mlen, &o);
		ck_assert_uint_eq(o.n, 2);
		ck_assert_msg(strcmp(o.result[0], "fail") == 0 && strcmp(o.result[1], "fail") == 0,
		    "change %zu: %s (%s), %s (%s)", c, o.result[0], o.why[0], o.result[1], o.why[1]);
		free(m);
	}
	/* A header not signed may change: To is signed once, X-Other never */
	m = replace(msg, "Date: Fri", "X-Other: added\r\nDate: Fri", &mlen);
	run(in, m, mlen, 64, &o);
	ck_assert_str_eq(o.result[0], "pass");
	ck_assert_str_eq(o.result[1], "pass");
	free(m);
	free(msg);
	dkim_verify_ops.destroy(in);
}
END_TEST

START_TEST(test_unsigned_is_none)
{
	void *in = inst_new(NULL);
	size_t len;
	char *msg = slurp("rfc8463/rfc6376-A-unsigned.eml", &len);
	struct outcome o;
	struct filter_txn txn;

	run(in, msg, len, 1000, &o);
	ck_assert(!o.signed_);
	ck_assert_uint_eq(o.n, 0);
	filter_txn_init(&txn);
	dkim_verify_record(&txn, 1, NULL, 0);
	ck_assert_str_eq(txn.auth_results.data, "; dkim=none");
	ck_assert_uint_eq(txn.nfacts, 1);
	ck_assert_str_eq(txn.facts[0].method, "dkim");
	ck_assert_str_eq(txn.facts[0].result, "none");
	filter_txn_reset(&txn);
	free(msg);
	dkim_verify_ops.destroy(in);
}
END_TEST

/* ---- keys: missing, empty, revoked, temporary failures ---- */

START_TEST(test_key_outcomes)
{
	static const struct {
		enum dkim_verify_key st;
		const char *record;	/* for the RSA key; the Ed25519 one stays good */
		const char *want;
	} cases[] = {
		{ DKIM_VERIFY_KEY_NONE, NULL, "permerror" },	/* NXDOMAIN */
		{ DKIM_VERIFY_KEY_TEMP, NULL, "temperror" },	/* SERVFAIL, timeout */
		{ DKIM_VERIFY_KEY_PENDING, NULL, "temperror" },	/* never answered */
		{ DKIM_VERIFY_KEY_FOUND, "v=DKIM1; k=rsa; p=", "permerror" },	/* revoked */
		{ DKIM_VERIFY_KEY_FOUND, "", "permerror" },	/* empty record */
		{ DKIM_VERIFY_KEY_FOUND, "v=DKIM1; k=rsa; p=bm90IGEga2V5", "permerror" },
		{ DKIM_VERIFY_KEY_FOUND, "v=DKIM1; k=rsa; p=!!!", "permerror" },
		{ DKIM_VERIFY_KEY_FOUND, "v=DKIM2; k=rsa; p=AAAA", "permerror" },
		{ DKIM_VERIFY_KEY_FOUND, "this is ; not = a = tag list", "permerror" },
		/* the Ed25519 key given for the RSA signature: the wrong type */
		{ DKIM_VERIFY_KEY_FOUND,
		  "v=DKIM1; k=ed25519; p=11qYAYKxCrfVS/7TyWQHOg7hcvPapiMlrwIaaPcHURo=", NULL },
	};
	void *in = inst_new(NULL);
	size_t len, c;
	char *msg = slurp("rfc8463/rfc8463-A3-signed.eml", &len);
	struct outcome o;

	for (c = 0; c < ARRAY_SIZE(cases); c++) {
		teardown();
		rfc8463_keys();
		free(keys[1].record);
		keys[1].st = cases[c].st;
		keys[1].record = cases[c].record != NULL ? xstrdup(cases[c].record) : NULL;
		run(in, msg, len, 50, &o);
		ck_assert_uint_eq(o.n, 2);
		ck_assert_str_eq(o.result[0], "pass");	/* the other signature is not disturbed */
		if (cases[c].want != NULL)
			ck_assert_msg(strcmp(o.result[1], cases[c].want) == 0, "case %zu: %s (%s)",
			    c, o.result[1], o.why[1]);
		else
			ck_assert_msg(strcmp(o.result[1], "pass") != 0 &&
			    strcmp(o.result[1], "temperror") != 0, "case %zu: %s", c, o.result[1]);
		ck_assert_str_ne(o.why[1], "");
	}
	free(msg);
	dkim_verify_ops.destroy(in);
}
END_TEST

/* ---- malformed signatures ---- */

START_TEST(test_malformed_signatures)
{
	static const char *const sigs[] = {
		"DKIM-Signature: this is not a tag list at all",
		"DKIM-Signature: v=1; a=rsa-sha256; d=" FEX "; d=other.test; s=test; "
		    "h=from; bh=AAAA; b=AAAA",		/* duplicate tag */
		"DKIM-Signature: v=1; a=rsa-sha256; d=" FEX "; h=from; bh=AAAA; b=AAAA",	/* no s= */
		"DKIM-Signature: v=1; a=rsa-sha256; s=test; h=from; bh=AAAA; b=AAAA",	/* no d= */
		"DKIM-Signature: v=1; a=rsa-md5; d=" FEX "; s=test; h=from; bh=AAAA; b=AAAA",
		"DKIM-Signature: v=1; a=rsa-sha256; d=" FEX "; s=test; h=to; bh=AAAA; b=AAAA",	/* no From */
		"DKIM-Signature: v=1; a=rsa-sha256; d=" FEX "; s=test; h=from; bh=AAAA",	/* no b= */
		"DKIM-Signature: v=1; a=rsa-sha256; d=" FEX "; s=test; h=from; bh=AAAA; b=AAAA; "
		    "l=notanumber",
		"DKIM-Signature: v=1; a=rsa-sha256; d=" FEX "; s=test; h=from; bh=AAAA; b=AAAA; "
		    "t=200; x=100",				/* expires before it was made */
		"DKIM-Signature: v=1; a=rsa-sha256; d=" FEX "; s=te st!; h=from; bh=AAAA; b=AAAA",
		"DKIM-Signature:",
		"DKIM-Signature: v=1; a=rsa-sha256; d=" FEX "; s=test; h=from; bh=AAAA; b=AAAA; "
		    "i=someone@elsewhere.test",			/* i= outside d= */
	};
	void *in = inst_new(NULL);
	size_t len, mlen, c;
	char *msg = slurp("rfc8463/rfc8463-A3-signed.eml", &len), *m, *bad;
	struct outcome o;

	rfc8463_keys();
	for (c = 0; c < ARRAY_SIZE(sigs); c++) {
		/* The bad one on top: the two good ones still pass. */
		bad = xasprintf("%s\r\nDKIM-Signature: v=1; a=ed25519", sigs[c]);
		m = replace(msg, "DKIM-Signature: v=1; a=ed25519", bad, &mlen);
		run(in, m, mlen, 33, &o);
		ck_assert_msg(o.n == 3, "case %zu: %zu results", c, o.n);
		ck_assert_msg(strcmp(o.result[0], "permerror") == 0 ||
		    strcmp(o.result[0], "fail") == 0, "case %zu: %s (%s)", c, o.result[0], o.why[0]);
		ck_assert_str_eq(o.result[1], "pass");
		ck_assert_str_eq(o.result[2], "pass");
		free(bad);
		free(m);
	}
	free(msg);
	dkim_verify_ops.destroy(in);
}
END_TEST

/* ---- max_signatures ---- */

START_TEST(test_many_signatures_bounded)
{
	static const char *const kv[] = { "max_signatures", "5", NULL };
	void *in = inst_new(kv), *in_def = inst_new(NULL);
	size_t len, i;
	char *msg = slurp("rfc8463/rfc8463-A3-signed.eml", &len);
	const char *first = strstr(msg, "DKIM-Signature"), *second = strstr(first + 1, "DKIM-Signature");
	struct buf m;
	struct outcome o;

	rfc8463_keys();
	/* 100 signatures: 98 times the Ed25519 one, then the two of the example */
	buf_init(&m);
	for (i = 0; i < 98; i++)
		buf_append(&m, first, (size_t)(second - first));
	buf_puts(&m, first);
	run(in, m.data, m.len, 4096, &o);
	ck_assert_uint_eq(o.n, 5);
	ck_assert_uint_eq(o.skipped, 95);
	for (i = 0; i < o.n; i++)
		ck_assert_str_eq(o.result[i], "pass");
	run(in_def, m.data, m.len, 4096, &o);
	ck_assert_uint_eq(o.n, 10);
	ck_assert_uint_eq(o.skipped, 90);
	buf_free(&m);
	free(msg);
	dkim_verify_ops.destroy(in);
	dkim_verify_ops.destroy(in_def);
}
END_TEST

/* ---- signatures made here: l=, time, key size ---- */

START_TEST(test_body_length)
{
	void *in = inst_new(NULL);
	struct tsigner s;
	struct outcome o;
	char *whole, *limited, *m;
	size_t mlen;

	rsa_key(2048, &s);
	key_set("sel._domainkey.sign.test", DKIM_VERIFY_KEY_FOUND, s.record);
	whole = sign(&s, 0, 0, -1);
	limited = sign(&s, 0, 0, (ssize_t)strlen("Hello Bob.\r\n"));
	ck_assert_ptr_nonnull(strstr(limited, "l=12"));
	run_all_chunks(in, whole, strlen(whole), &o);
	ck_assert_str_eq(o.result[0], "pass");
	ck_assert_uint_eq(o.bits[0], 2048);
	run_all_chunks(in, limited, strlen(limited), &o);
	ck_assert_str_eq(o.result[0], "pass");
	/* text added past l= keeps it passing; not without l= */
	m = replace(limited, "Bye.\r\n", "Bye.\r\nBuy now!\r\n", &mlen);
	run_all_chunks(in, m, mlen, &o);
	ck_assert_str_eq(o.result[0], "pass");
	free(m);
	m = replace(whole, "Bye.\r\n", "Bye.\r\nBuy now!\r\n", &mlen);
	run_all_chunks(in, m, mlen, &o);
	ck_assert_str_eq(o.result[0], "fail");
	free(m);
	/* a change within l= fails */
	m = replace(limited, "Hello Bob.", "Hello Eve.", &mlen);
	run_all_chunks(in, m, mlen, &o);
	ck_assert_str_eq(o.result[0], "fail");
	free(m);
	/* l= longer than the body: permerror */
	m = replace(limited, "l=12", "l=999", &mlen);
	run(in, m, mlen, 10, &o);
	ck_assert_msg(strcmp(o.result[0], "pass") != 0, "%s", o.result[0]);
	free(m);
	free(whole);
	free(limited);
	signer_free(&s);
	dkim_verify_ops.destroy(in);
}
END_TEST

START_TEST(test_clock_skew)
{
	static const char *const tight[] = { "clock_skew", "60", NULL };
	static const char *const loose[] = { "clock_skew", "7200", NULL };
	void *in_tight = inst_new(tight), *in_loose = inst_new(loose), *in_def = inst_new(NULL);
	uint64_t now = (uint64_t)time(NULL);
	struct tsigner s;
	struct outcome o;
	char *future, *expired, *fresh;

	rsa_key(1024, &s);
	key_set("sel._domainkey.sign.test", DKIM_VERIFY_KEY_FOUND, s.record);
	future = sign(&s, now + 1800, 0, -1);	/* made 30 minutes from now */
	expired = sign(&s, now - 3600, 1800, -1);	/* expired 30 minutes ago */
	fresh = sign(&s, now - 10, 3600, -1);
	run(in_tight, future, strlen(future), 100, &o);
	ck_assert_str_eq(o.result[0], "permerror");
	run(in_def, future, strlen(future), 100, &o);	/* 300 s by default */
	ck_assert_str_eq(o.result[0], "permerror");
	run(in_loose, future, strlen(future), 100, &o);
	ck_assert_str_eq(o.result[0], "pass");
	run(in_tight, expired, strlen(expired), 100, &o);
	ck_assert_str_eq(o.result[0], "permerror");
	run(in_loose, expired, strlen(expired), 100, &o);
	ck_assert_str_eq(o.result[0], "pass");
	run(in_tight, fresh, strlen(fresh), 100, &o);
	ck_assert_str_eq(o.result[0], "pass");
	free(future);
	free(expired);
	free(fresh);
	signer_free(&s);
	dkim_verify_ops.destroy(in_tight);
	dkim_verify_ops.destroy(in_loose);
	dkim_verify_ops.destroy(in_def);
}
END_TEST

/* RFC 8301: an RSA key under 1024 bits never passes (result policy); min_key_bits raises it */
START_TEST(test_small_keys)
{
	static const char *const strict[] = { "min_key_bits", "2048", NULL };
	void *in = inst_new(NULL), *in_strict = inst_new(strict);
	struct tsigner small, k1024;
	struct outcome o;
	char *m;

	rsa_key(512, &small);
	rsa_key(1024, &k1024);
	key_set("sel._domainkey.sign.test", DKIM_VERIFY_KEY_FOUND, small.record);
	m = sign(&small, 0, 0, -1);
	run(in, m, strlen(m), 100, &o);
	ck_assert_str_eq(o.result[0], "policy");
	ck_assert_uint_eq(o.bits[0], 512);
	free(m);
	teardown();
	key_set("sel._domainkey.sign.test", DKIM_VERIFY_KEY_FOUND, k1024.record);
	m = sign(&k1024, 0, 0, -1);
	run(in, m, strlen(m), 100, &o);
	ck_assert_str_eq(o.result[0], "pass");
	run(in_strict, m, strlen(m), 100, &o);
	ck_assert_str_eq(o.result[0], "policy");
	free(m);
	signer_free(&small);
	signer_free(&k1024);
	dkim_verify_ops.destroy(in);
	dkim_verify_ops.destroy(in_strict);
}
END_TEST

/* ---- Authentication-Results and facts ---- */

START_TEST(test_record)
{
	struct dkim_verify_result r[3] = {
		{ "pass", "example.com", "sel", "rsa-sha256", "abcdEFGH", NULL, 2048 },
		{ "fail", "ex\"ample.com", "s;1", "ed25519-sha256", "/bcd+FGH", "body hash mismatch", 0 },
		{ "permerror", "", "", "", "", "missing parameter", 0 },
	};
	struct filter_txn txn;

	filter_txn_init(&txn);
	dkim_verify_record(&txn, 7, r, 3);
	ck_assert_str_eq(txn.auth_results.data,
	    "; dkim=pass header.d=example.com header.s=sel header.a=rsa-sha256 header.b=abcdEFGH"
	    "; dkim=fail reason=\"body hash mismatch\" header.d=\"ex\\\"ample.com\" "
	    "header.s=\"s;1\" header.a=ed25519-sha256 header.b=\"/bcd+FGH\""
	    "; dkim=permerror reason=\"missing parameter\"");
	ck_assert_uint_eq(txn.nfacts, 3);
	ck_assert_str_eq(txn.facts[0].result, "pass");
	ck_assert_str_eq(txn.facts[0].domain, "example.com");
	ck_assert_str_eq(txn.facts[0].scope, "sel");
	ck_assert_str_eq(txn.facts[1].result, "fail");
	ck_assert_ptr_null(txn.facts[2].domain);
	filter_txn_reset(&txn);
}
END_TEST

/* ---- configuration ---- */

START_TEST(test_configure)
{
	static const char *const good[] = { "max_signatures", "1", "clock_skew", "0",
	    "min_key_bits", "4096", "timeout", "30", "default_action", "accept", NULL };
	static const struct {
		const char *kv[3];
		const char *want;
	} bad[] = {
		{ { "max_signature", "3", NULL }, "unknown key \"max_signature\" at line 10" },
		{ { "max_signatures", "0", NULL }, "max_signatures \"0\" at line 10" },
		{ { "max_signatures", "1001", NULL }, "max_signatures" },
		{ { "max_signatures", "-1", NULL }, "max_signatures" },
		{ { "max_signatures", "", NULL }, "max_signatures" },
		{ { "clock_skew", "1h", NULL }, "clock_skew \"1h\" at line 10" },
		{ { "min_key_bits", "512", NULL }, "min_key_bits \"512\" at line 10: expected 1024" },
		{ { "threads", "2", NULL }, "threads at line 10" },
	};
	char *err;
	void *in;
	size_t i;

	in = inst_new(good);
	dkim_verify_ops.destroy(in);
	for (i = 0; i < ARRAY_SIZE(bad); i++) {
		in = inst_try(&err, bad[i].kv);
		ck_assert_msg(in == NULL, "case %zu accepted", i);
		ck_assert_ptr_nonnull(err);
		ck_assert_msg(strstr(err, bad[i].want) != NULL, "case %zu: %s", i, err);
		free(err);
	}
	ck_assert(dkim_verify_ops.dns);
	ck_assert(!dkim_verify_ops.may_block);
	ck_assert_ptr_nonnull(dkim_verify_ops.cancel);
}
END_TEST

static Suite *
dkim_verify_suite(void)
{
	Suite *s = suite_create("dkim_verify");
	TCase *tc = tcase_create("core");

	tcase_add_checked_fixture(tc, setup, teardown);
	tcase_set_timeout(tc, 60);
	tcase_add_test(tc, test_rfc8463_passes);
	tcase_add_test(tc, test_rfc8463_changes_fail);
	tcase_add_test(tc, test_unsigned_is_none);
	tcase_add_test(tc, test_key_outcomes);
	tcase_add_test(tc, test_malformed_signatures);
	tcase_add_test(tc, test_many_signatures_bounded);
	tcase_add_test(tc, test_body_length);
	tcase_add_test(tc, test_clock_skew);
	tcase_add_test(tc, test_small_keys);
	tcase_add_test(tc, test_record);
	tcase_add_test(tc, test_configure);
	suite_add_tcase(s, tc);
	return s;
}

UNIT_MAIN(dkim_verify_suite)
