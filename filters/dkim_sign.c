/*
 * dkim_sign.c - the "dkim-sign" filter: DKIM signatures made with
 * libopendkim (RFC 6376 RSA-SHA256, RFC 8463 Ed25519-SHA256) at the final
 * stage, over the header block and the body exactly as the backend gets them.
 *
 * Configuration ([filter dkim-sign]):
 *   keys = domain:selector:/path ...   key_table = FILE ("domain selector
 *   path" lines, # comments); canonicalization (relaxed/relaxed);
 *   headers (h=, From always in it, and over-signed once); expire (x=, s);
 *   sign_unauthenticated (no).  Key files are read and checked with OpenSSL
 *   by configure(): PEM, RSA of 1024 bits or more, or Ed25519; anything
 *   else, or a file that cannot be read, fails configure() naming the file.
 *
 * Which key: the domain of the message's only From: field (parsed with
 * libopendkim's dkim_mail_parse); on a session with a login, when that
 * domain has no key, the login's domain (the part after its last '@').  No
 * key, no From: or several From: fields: no signature, a log line, the
 * mail goes on.  Sessions without a login are not signed unless
 * sign_unauthenticated = yes: an mx listener would otherwise put our
 * signature on whatever anybody sends "From:" our domains.  Every key of
 * the chosen domain signs (an RSA and an Ed25519 key: two signatures).
 *
 * Inline: CPU only, on the loop thread.  The instance (keys, the
 * libopendkim library handle with the h= list compiled in) is immutable
 * after configure() and shared by every thread; libopendkim's per-message
 * handles are the call's own.  Key material is wiped when freed.  A
 * libopendkim failure while signing answers 451 4.3.0 (as OpenDKIM's
 * On-InternalError default): the client retries, nothing goes out
 * unsigned by accident.
 *
 * Cost: libopendkim takes the key as text and parses it for every
 * signature (dkim_privkey_load, PEM_read_bio_PrivateKey).  OpenSSL 3.0
 * builds a decoder chain for each such call, which here costs more than an
 * RSA-2048 signature.  For RSA keys the filter therefore has libopendkim
 * load the key itself (its public dkim_privkey_load) with a provider-less
 * library context as the thread's default for that one call, so OpenSSL
 * finds no decoder and reads the PEM with its own ASN.1 code (the legacy
 * path, as OpenSSL 1.1 did); the signing that follows runs in the usual
 * context.  configure() checks, per key, that this path gives back the same
 * key, else that key is parsed the usual way.  Ed25519 keys always are: that
 * path needs SHA-512 from a provider to derive the public half.
 */
#include "config.h"

#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include <openssl/bio.h>
#include <openssl/crypto.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/provider.h>

#include <opendkim/dkim.h>

#include "util.h"
#include "buf.h"
#include "log.h"
#include "spool.h"
#include "filter.h"
#include "dkim_sign.h"

#define DKIM_SIGN_KEY_MAX	65536	/* octets of a key file */
#define DKIM_SIGN_PER_DOMAIN	8	/* keys (signatures) for one domain */
#define DKIM_SIGN_CHUNK		65536	/* body octets read from a spool file at once */
#define DKIM_SIGN_FROM_MAX	4096	/* octets of a From: value we parse */
#define DKIM_SIGN_DOMAIN_MAX	256
#define DKIM_SIGN_EXPIRE_MAX	(10u * 365 * 86400)
#define DKIM_SIGN_FIELD		"DKIM-Signature"

/*
 * The default h= list: RFC 6376 5.4.1's fields, the MIME ones and the list
 * ones (what OpenDKIM signs by default, plus Message-ID and MIME).
 */
static const char *const dkim_sign_default_headers[] = {
	"from", "sender", "reply-to", "subject", "date", "message-id", "to", "cc",
	"mime-version", "content-type", "content-transfer-encoding", "content-id",
	"content-description", "resent-date", "resent-from", "resent-sender",
	"resent-to", "resent-cc", "resent-message-id", "in-reply-to", "references",
	"list-id", "list-help", "list-unsubscribe", "list-subscribe", "list-post",
	"list-owner", "list-archive", NULL,
};

static const char *const dkim_sign_oversign[] = { "from", NULL };

struct dkim_sign_key {
	char *domain;		/* lower-case, no root dot */
	char *selector;
	char *path;		/* for logs and errors */
	char *data;		/* PEM, as libopendkim takes it; wiped when freed */
	size_t datalen;
	dkim_alg_t alg;		/* DKIM_SIGN_RSASHA256 or DKIM_SIGN_ED25519SHA256 */
	const char *a;		/* "rsa-sha256", "ed25519-sha256" */
	int bits;
	size_t order;		/* as configured: a domain's keys sign in this order */
	bool plain;		/* RSA, parses under dkim_sign.plain (see dkim_sign_privkey) */
};

struct dkim_sign {
	DKIM_LIB *lib;		/* h= list, over-signing and x= compiled in */
	struct dkim_sign_key *keys;	/* sorted by domain, then order */
	size_t nkeys;
	dkim_canon_t hcanon, bcanon;
	bool unauthenticated;	/* sign sessions without a login */
	bool hooks;		/* our allocator under libopendkim (the Ed25519 leak) */
	OSSL_LIB_CTX *plain;	/* no providers but "null": OpenSSL's legacy key parsing */
	OSSL_PROVIDER *nullprov;	/* loaded into plain, so that "default" is not */
};

/*
 * libopendkim 2.11.0 leaks, for every Ed25519 signature, the key it parsed
 * (its EVP_PKEY, the BIO it read it from, and the 64-octet signature
 * buffer): dkim_free() releases them for RSA signatures only.  A daemon
 * signing each message cannot live with that, so the library's allocator
 * hooks (dkim_init's mallocf/freef, the per-handle memclosure) let us see
 * the one block that holds them, struct dkim_crypto, when dkim_free() hands
 * it back, and release what it points to.  The layout below is 2.11.0's
 * (dkim-types.h, OpenSSL build); the hooks are installed only for that
 * version, and a block is taken for the crypto struct only when every
 * field says so.  tests/unit/check_dkim_sign runs under LeakSanitizer.
 */
struct dkim_sign_crypto {	/* libopendkim 2.11.0's struct dkim_crypto */
	unsigned char crypto_pad;
	int crypto_keysize;
	size_t crypto_inlen;
	size_t crypto_outlen;
	EVP_PKEY *crypto_pkey;
	void *crypto_key;
	BIO *crypto_keydata;
	unsigned char *crypto_in;
	unsigned char *crypto_out;
};

_Static_assert(sizeof(struct dkim_sign_crypto) == 64 || sizeof(void *) != 8,
    "struct dkim_crypto of libopendkim 2.11.0 is 64 octets on LP64");

#define DKIM_SIGN_HOOK_VERSION	0x020B0000u	/* the layout above */
#define DKIM_SIGN_PREFIX	16		/* octets before each block: its size (keeps alignment) */

/* Per-handle closure of the allocator hooks. */
struct dkim_sign_mem {
	bool ed25519;		/* an Ed25519 signing handle */
	bool freeing;		/* inside our dkim_free() */
	bool released;		/* the crypto block was found and released */
};

/* dkim_sign_malloc - libopendkim's allocations, each with its size in front */
static void *
dkim_sign_malloc(void *closure, size_t n)
{
	unsigned char *p = malloc(DKIM_SIGN_PREFIX + n);

	(void)closure;
	if (p == NULL)
		return NULL;
	memcpy(p, &n, sizeof(n));
	return p + DKIM_SIGN_PREFIX;
}

/* dkim_sign_size - the size dkim_sign_malloc recorded for p */
static size_t
dkim_sign_size(const void *p)
{
	size_t n;

	memcpy(&n, (const unsigned char *)p - DKIM_SIGN_PREFIX, sizeof(n));
	return n;
}

/* dkim_sign_crypto_release - p is an Ed25519 handle's crypto block: free what dkim_free forgets */
static void
dkim_sign_crypto_release(struct dkim_sign_mem *m, void *p)
{
	struct dkim_sign_crypto *c = p;

	if (m == NULL || !m->ed25519 || !m->freeing || m->released ||
	    dkim_sign_size(p) != sizeof(*c) || c->crypto_keysize != 512 ||
	    c->crypto_outlen != 64 || c->crypto_pkey == NULL || c->crypto_key != NULL ||
	    c->crypto_in != NULL || c->crypto_out == NULL || dkim_sign_size(c->crypto_out) != 64 ||
	    EVP_PKEY_get_base_id(c->crypto_pkey) != EVP_PKEY_ED25519)
		return;
	EVP_PKEY_free(c->crypto_pkey);
	BIO_free(c->crypto_keydata);
	OPENSSL_cleanse((unsigned char *)c->crypto_out - DKIM_SIGN_PREFIX, DKIM_SIGN_PREFIX + 64);
	free((unsigned char *)c->crypto_out - DKIM_SIGN_PREFIX);
	memset(c, 0, sizeof(*c));
	m->released = true;
}

/* dkim_sign_mfree - libopendkim's frees */
static void
dkim_sign_mfree(void *closure, void *p)
{
	if (p == NULL)
		return;
	dkim_sign_crypto_release(closure, p);
	free((unsigned char *)p - DKIM_SIGN_PREFIX);
}

/* dkim_sign_key_free - wipe and free one key's strings */
static void
dkim_sign_key_free(struct dkim_sign_key *k)
{
	if (k->data != NULL) {
		OPENSSL_cleanse(k->data, k->datalen);
		free(k->data);
	}
	free(k->domain);
	free(k->selector);
	free(k->path);
}

/* dkim_sign_destroy - the instance, its keys and its library handle */
static void
dkim_sign_destroy(void *inst)
{
	struct dkim_sign *ds = inst;
	size_t i;

	if (ds == NULL)
		return;
	for (i = 0; i < ds->nkeys; i++)
		dkim_sign_key_free(&ds->keys[i]);
	free(ds->keys);
	if (ds->lib != NULL)
		dkim_close(ds->lib);
	if (ds->nullprov != NULL)
		OSSL_PROVIDER_unload(ds->nullprov);
	OSSL_LIB_CTX_free(ds->plain);
	free(ds);
}

/* dkim_sign_nopass - PEM password callback: an encrypted key is refused, never prompted for */
static int
dkim_sign_nopass(char *buf, int size, int rwflag, void *u)
{
	(void)buf, (void)size, (void)rwflag, (void)u;
	return -1;
}

/* dkim_sign_read_file - the whole key file (at most DKIM_SIGN_KEY_MAX octets); NULL + *err_r */
static char *
dkim_sign_read_file(const char *path, size_t *len_r, char **err_r)
{
	FILE *f;
	char *data;
	size_t n;
	int e;

	if ((f = fopen(path, "r")) == NULL) {
		*err_r = xasprintf("key file %s: %s", path, strerror(errno));
		return NULL;
	}
	data = xmalloc(DKIM_SIGN_KEY_MAX + 1);
	n = fread(data, 1, DKIM_SIGN_KEY_MAX + 1, f);
	e = ferror(f) ? errno : 0;
	fclose(f);
	if (e != 0 || n > DKIM_SIGN_KEY_MAX) {
		*err_r = e != 0 ? xasprintf("key file %s: %s", path, strerror(e)) :
		    xasprintf("key file %s: larger than %d octets", path, DKIM_SIGN_KEY_MAX);
		OPENSSL_cleanse(data, n);
		free(data);
		return NULL;
	}
	data[n] = '\0';
	*len_r = n;
	return data;
}

/* dkim_sign_pem - pkey as unencrypted PKCS#8 PEM, NUL-terminated, for libopendkim */
static char *
dkim_sign_pem(EVP_PKEY *pkey, size_t *len_r)
{
	BIO *out = BIO_new(BIO_s_mem());
	char *p, *data;
	long n;

	if (out == NULL || PEM_write_bio_PrivateKey(out, pkey, NULL, NULL, 0, NULL, NULL) != 1 ||
	    (n = BIO_get_mem_data(out, &p)) <= 0) {
		BIO_free(out);
		return NULL;
	}
	data = xmalloc((size_t)n + 1);
	memcpy(data, p, (size_t)n);
	data[n] = '\0';
	*len_r = (size_t)n;
	OPENSSL_cleanse(p, (size_t)n);
	BIO_free(out);
	return data;
}

/*
 * dkim_sign_plain_ok - does k->data, read as libopendkim reads it but with
 * plain as the thread's default library context, give back pkey?
 */
static bool
dkim_sign_plain_ok(OSSL_LIB_CTX *plain, const struct dkim_sign_key *k, EVP_PKEY *pkey)
{
	OSSL_LIB_CTX *prev;
	EVP_PKEY *got = NULL;
	BIO *in;
	bool ok;

	if (plain == NULL || (in = BIO_new_mem_buf(k->data, (int)k->datalen)) == NULL)
		return false;
	ERR_set_mark();
	prev = OSSL_LIB_CTX_set0_default(plain);
	if (prev != NULL) {
		got = PEM_read_bio_PrivateKey(in, NULL, dkim_sign_nopass, NULL);
		OSSL_LIB_CTX_set0_default(prev);
	}
	ERR_pop_to_mark();
	BIO_free(in);
	ok = got != NULL && EVP_PKEY_get_base_id(got) == EVP_PKEY_RSA && EVP_PKEY_eq(got, pkey) == 1;
	EVP_PKEY_free(got);
	return ok;
}

/* dkim_sign_key_load - read k->path, learn its type and size, keep it as PEM; false + *err_r */
static bool
dkim_sign_key_load(struct dkim_sign_key *k, OSSL_LIB_CTX *plain, char **err_r)
{
	EVP_PKEY *pkey = NULL;
	BIO *in;
	char *raw;
	size_t rawlen;
	int id;

	if ((raw = dkim_sign_read_file(k->path, &rawlen, err_r)) == NULL)
		return false;
	if ((in = BIO_new_mem_buf(raw, (int)rawlen)) != NULL)
		pkey = PEM_read_bio_PrivateKey(in, NULL, dkim_sign_nopass, NULL);
	BIO_free(in);
	OPENSSL_cleanse(raw, rawlen);
	free(raw);
	if (pkey == NULL) {
		*err_r = xasprintf("key file %s: not an unencrypted PEM private key", k->path);
		return false;
	}
	id = EVP_PKEY_get_base_id(pkey);
	k->bits = EVP_PKEY_get_bits(pkey);
	if (id == EVP_PKEY_RSA && k->bits >= 1024) {
		k->alg = DKIM_SIGN_RSASHA256;
		k->a = "rsa-sha256";
	} else if (id == EVP_PKEY_ED25519) {
		k->alg = DKIM_SIGN_ED25519SHA256;
		k->a = "ed25519-sha256";
	} else {
		*err_r = id == EVP_PKEY_RSA ?
		    xasprintf("key file %s: RSA key of %d bits, at least 1024 needed (RFC 8301)",
		    k->path, k->bits) :
		    xasprintf("key file %s: not an RSA or Ed25519 key", k->path);
		EVP_PKEY_free(pkey);
		return false;
	}
	k->data = dkim_sign_pem(pkey, &k->datalen);
	if (k->data == NULL) {
		EVP_PKEY_free(pkey);
		*err_r = xasprintf("key file %s: cannot encode the key", k->path);
		return false;
	}
	k->plain = k->alg == DKIM_SIGN_RSASHA256 && dkim_sign_plain_ok(plain, k, pkey);
	EVP_PKEY_free(pkey);
	return true;
}

/* dkim_sign_add_key - one table entry, loaded and checked; where: "keys (line N)" etc. */
static bool
dkim_sign_add_key(struct dkim_sign *ds, const char *domain, const char *selector,
    const char *path, const char *where, char **err_r)
{
	struct dkim_sign_key *k;
	size_t i, same = 0;
	char *d;

	d = xstrdup(domain);
	str_lower(d);
	if (d[0] != '\0' && d[strlen(d) - 1] == '.')
		d[strlen(d) - 1] = '\0';
	if (!conf_domain_ok(d) || !conf_domain_ok(selector) || *path == '\0') {
		*err_r = xasprintf("%s: \"%s %s %s\": expected a domain, a selector and a key file",
		    where, domain, selector, path);
		free(d);
		return false;
	}
	for (i = 0; i < ds->nkeys; i++) {
		if (strcmp(ds->keys[i].domain, d) != 0)
			continue;
		if (str_casecmp(ds->keys[i].selector, selector) == 0) {
			*err_r = xasprintf("%s: selector %s of %s is listed twice", where, selector, d);
			free(d);
			return false;
		}
		same++;
	}
	if (same >= DKIM_SIGN_PER_DOMAIN) {
		*err_r = xasprintf("%s: more than %d keys for %s", where, DKIM_SIGN_PER_DOMAIN, d);
		free(d);
		return false;
	}
	ds->keys = xreallocarray(ds->keys, ds->nkeys + 1, sizeof(*ds->keys));
	k = &ds->keys[ds->nkeys];
	memset(k, 0, sizeof(*k));
	k->domain = d;
	k->selector = xstrdup(selector);
	k->path = xstrdup(path);
	k->order = ds->nkeys;
	if (!dkim_sign_key_load(k, ds->plain, err_r)) {
		char *e = *err_r;

		*err_r = xasprintf("%s: %s", where, e);
		free(e);
		dkim_sign_key_free(k);
		return false;
	}
	ds->nkeys++;
	return true;
}

/* dkim_sign_keys_value - "keys = domain:selector:/path ..." (whitespace between entries) */
static bool
dkim_sign_keys_value(struct dkim_sign *ds, const struct conf_kv *kv, char **err_r)
{
	char *copy = xstrdup(kv->value), *save = NULL, *tok, *c1, *c2, where[64];
	bool ok = true;

	snprintf(where, sizeof(where), "keys (line %d)", kv->line);
	for (tok = strtok_r(copy, " \t", &save); ok && tok != NULL;
	    tok = strtok_r(NULL, " \t", &save)) {
		if ((c1 = strchr(tok, ':')) == NULL || (c2 = strchr(c1 + 1, ':')) == NULL) {
			*err_r = xasprintf("%s: \"%s\": expected domain:selector:/path/to/key",
			    where, tok);
			ok = false;
			break;
		}
		*c1 = *c2 = '\0';
		ok = dkim_sign_add_key(ds, tok, c1 + 1, c2 + 1, where, err_r);
	}
	free(copy);
	return ok;
}

/* dkim_sign_table_line - one "domain selector path" line of a key table (# comments) */
static bool
dkim_sign_table_line(struct dkim_sign *ds, const char *file, unsigned lineno, char *line,
    char **err_r)
{
	char *w[4], *save = NULL, *hash, where[4200];
	size_t n = 0;

	if ((hash = strchr(line, '#')) != NULL)
		*hash = '\0';
	for (w[n] = strtok_r(line, " \t\r\n", &save); w[n] != NULL && n < 3;
	    w[++n] = strtok_r(NULL, " \t\r\n", &save))
		;
	snprintf(where, sizeof(where), "key_table %s:%u", file, lineno);
	if (n == 0)
		return true;
	if (n != 3) {
		*err_r = xasprintf("%s: expected \"domain selector /path/to/key\"", where);
		return false;
	}
	return dkim_sign_add_key(ds, w[0], w[1], w[2], where, err_r);
}

/* dkim_sign_table - read the key_table FILE */
static bool
dkim_sign_table(struct dkim_sign *ds, const char *file, char **err_r)
{
	FILE *f;
	char *line = NULL;
	size_t cap = 0;
	unsigned lineno = 0;
	bool ok = true;

	if ((f = fopen(file, "r")) == NULL) {
		*err_r = xasprintf("key_table %s: %s", file, strerror(errno));
		return false;
	}
	while (ok && getline(&line, &cap, f) != -1)
		ok = dkim_sign_table_line(ds, file, ++lineno, line, err_r);
	if (ok && ferror(f)) {
		*err_r = xasprintf("key_table %s: %s", file, strerror(errno));
		ok = false;
	}
	free(line);
	fclose(f);
	return ok;
}

/* dkim_sign_canon - "relaxed/relaxed" etc.; a single word is the header's, the body simple (RFC 6376 3.5 c=) */
static bool
dkim_sign_canon(struct dkim_sign *ds, const char *v)
{
	static const struct { const char *s; dkim_canon_t h, b; } t[] = {
		{ "relaxed/relaxed", DKIM_CANON_RELAXED, DKIM_CANON_RELAXED },
		{ "relaxed/simple", DKIM_CANON_RELAXED, DKIM_CANON_SIMPLE },
		{ "simple/relaxed", DKIM_CANON_SIMPLE, DKIM_CANON_RELAXED },
		{ "simple/simple", DKIM_CANON_SIMPLE, DKIM_CANON_SIMPLE },
		{ "relaxed", DKIM_CANON_RELAXED, DKIM_CANON_SIMPLE },
		{ "simple", DKIM_CANON_SIMPLE, DKIM_CANON_SIMPLE },
	};
	size_t i;

	for (i = 0; i < ARRAY_SIZE(t); i++) {
		if (strcmp(v, t[i].s) == 0) {
			ds->hcanon = t[i].h;
			ds->bcanon = t[i].b;
			return true;
		}
	}
	return false;
}

/*
 * dkim_sign_headers - the h= list into the library: names of letters,
 * digits, '-' and '_' (libopendkim compiles them into a regular expression)
 * separated by ':', ',' or blanks; From is always added
 */
static bool
dkim_sign_headers(struct dkim_sign *ds, const struct conf_kv *kv, char **err_r)
{
	const char **names = NULL;
	char *copy = NULL, *save = NULL, *tok;
	size_t n = 0, i;
	bool ok = true, from = false;
	DKIM_STAT st;

	if (kv == NULL) {
		names = xcalloc(ARRAY_SIZE(dkim_sign_default_headers), sizeof(*names));
		for (; dkim_sign_default_headers[n] != NULL; n++)
			names[n] = dkim_sign_default_headers[n];
	} else {
		copy = xstrdup(kv->value);
		for (tok = strtok_r(copy, ":, \t", &save); ok && tok != NULL;
		    tok = strtok_r(NULL, ":, \t", &save)) {
			for (i = 0; tok[i] != '\0' && ok; i++) {
				unsigned char c = (unsigned char)tok[i];

				ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
				    (c >= '0' && c <= '9') || c == '-' || c == '_';
			}
			if (!ok) {
				*err_r = xasprintf("headers (line %d): \"%s\": a field name is "
				    "letters, digits, '-' and '_'", kv->line, tok);
				break;
			}
			from = from || str_casecmp(tok, "from") == 0;
			names = xreallocarray(names, n + 3, sizeof(*names));
			names[n++] = tok;
		}
		if (ok && n == 0) {
			*err_r = xasprintf("headers (line %d): empty", kv->line);
			ok = false;
		}
		if (ok && !from)
			names[n++] = "from";
		if (names != NULL)
			names[n] = NULL;
	}
	if (ok && (st = dkim_options(ds->lib, DKIM_OP_SETOPT, DKIM_OPTS_SIGNHDRS, names,
	    sizeof(names))) != DKIM_STAT_OK) {
		*err_r = xasprintf("headers: libopendkim refuses the list (%s; too long?)",
		    dkim_getresultstr(st));
		ok = false;
	}
	free(names);
	free(copy);
	return ok;
}

/* dkim_sign_yesno - yes/no */
static bool
dkim_sign_yesno(const char *v, bool *b)
{
	if (strcmp(v, "yes") == 0)
		*b = true;
	else if (strcmp(v, "no") == 0)
		*b = false;
	else
		return false;
	return true;
}

/* dkim_sign_expire - "expire = SECONDS": x= that far past t=; 0 none */
static bool
dkim_sign_expire(struct dkim_sign *ds, const struct conf_kv *kv, char **err_r)
{
	char *end;
	unsigned long v;
	uint64_t ttl;
	DKIM_STAT st;

	errno = 0;
	v = strtoul(kv->value, &end, 10);
	if (kv->value[0] < '0' || kv->value[0] > '9' || *end != '\0' || errno != 0 ||
	    v > DKIM_SIGN_EXPIRE_MAX) {
		*err_r = xasprintf("expire (line %d): \"%s\": seconds, 0 to %u (0: no x= tag)",
		    kv->line, kv->value, DKIM_SIGN_EXPIRE_MAX);
		return false;
	}
	if (v == 0)
		return true;
	ttl = v;
	if ((st = dkim_options(ds->lib, DKIM_OP_SETOPT, DKIM_OPTS_SIGNATURETTL, &ttl,
	    sizeof(ttl))) != DKIM_STAT_OK) {
		*err_r = xasprintf("expire: libopendkim: %s", dkim_getresultstr(st));
		return false;
	}
	return true;
}

/* dkim_sign_key_cmp - by domain, then as configured */
static int
dkim_sign_key_cmp(const void *a, const void *b)
{
	const struct dkim_sign_key *x = a, *y = b;
	int c = strcmp(x->domain, y->domain);

	if (c != 0)
		return c;
	return x->order < y->order ? -1 : x->order > y->order;
}

/* dkim_sign_option - one key of the section; false + *err_r */
static bool
dkim_sign_option(struct dkim_sign *ds, const struct conf_kv *kv, const struct conf_kv **headers_r,
    char **err_r)
{
	if (strcmp(kv->key, "keys") == 0)
		return dkim_sign_keys_value(ds, kv, err_r);
	if (strcmp(kv->key, "key_table") == 0)
		return dkim_sign_table(ds, kv->value, err_r);
	if (strcmp(kv->key, "headers") == 0) {
		*headers_r = kv;	/* once the library exists */
		return true;
	}
	if (strcmp(kv->key, "expire") == 0)
		return dkim_sign_expire(ds, kv, err_r);
	if (strcmp(kv->key, "canonicalization") == 0) {
		if (dkim_sign_canon(ds, kv->value))
			return true;
		*err_r = xasprintf("canonicalization (line %d): \"%s\": expected relaxed/relaxed, "
		    "relaxed/simple, simple/relaxed, simple/simple, relaxed or simple",
		    kv->line, kv->value);
		return false;
	}
	if (strcmp(kv->key, "sign_unauthenticated") == 0) {
		if (dkim_sign_yesno(kv->value, &ds->unauthenticated))
			return true;
		*err_r = xasprintf("sign_unauthenticated (line %d): \"%s\": expected yes or no",
		    kv->line, kv->value);
		return false;
	}
	if (filter_chain_key(kv->key))
		return true;
	*err_r = xasprintf("unknown key \"%s\" at line %d (dkim-sign takes keys, key_table, "
	    "canonicalization, headers, expire, sign_unauthenticated, timeout, default_action)",
	    kv->key, kv->line);
	return false;
}

/* dkim_sign_configure - read the section and every key file */
static void *
dkim_sign_configure(const struct conf *conf, const struct conf_section *sec, char **err_r)
{
	struct dkim_sign *ds = xcalloc(1, sizeof(*ds));
	const struct conf_kv *headers = NULL;
	size_t i;
	bool ed25519 = false;

	(void)conf;
	ds->hcanon = ds->bcanon = DKIM_CANON_RELAXED;
	ds->hooks = dkim_libversion() == DKIM_SIGN_HOOK_VERSION;
	if ((ds->lib = ds->hooks ? dkim_init(dkim_sign_malloc, dkim_sign_mfree) :
	    dkim_init(NULL, NULL)) == NULL) {
		*err_r = xstrdup("libopendkim: dkim_init failed");
		goto fail;
	}
	if (dkim_options(ds->lib, DKIM_OP_SETOPT, DKIM_OPTS_OVERSIGNHDRS,
	    (void *)dkim_sign_oversign, sizeof(char **)) != DKIM_STAT_OK) {
		*err_r = xstrdup("libopendkim: cannot set the over-signed fields");
		goto fail;
	}
	/* without it every key is parsed the usual way: slower, not wrong */
	ERR_set_mark();
	if ((ds->plain = OSSL_LIB_CTX_new()) != NULL &&
	    (ds->nullprov = OSSL_PROVIDER_load(ds->plain, "null")) == NULL) {
		OSSL_LIB_CTX_free(ds->plain);
		ds->plain = NULL;
	}
	ERR_pop_to_mark();
	for (i = 0; sec != NULL && i < sec->nkv; i++)
		if (!dkim_sign_option(ds, &sec->kv[i], &headers, err_r))
			goto fail;
	if (!dkim_sign_headers(ds, headers, err_r))
		goto fail;
	if (ds->nkeys == 0) {
		*err_r = xstrdup("no keys: set keys = domain:selector:/path or key_table = FILE");
		goto fail;
	}
	for (i = 0; i < ds->nkeys; i++)
		ed25519 = ed25519 || ds->keys[i].alg == DKIM_SIGN_ED25519SHA256;
	if (ed25519 && !dkim_libfeature(ds->lib, DKIM_FEATURE_ED25519)) {
		*err_r = xstrdup("this libopendkim cannot sign with Ed25519 keys");
		goto fail;
	}
	qsort(ds->keys, ds->nkeys, sizeof(*ds->keys), dkim_sign_key_cmp);
	return ds;
fail:
	dkim_sign_destroy(ds);
	return NULL;
}

/* ---- signing ---- */

/*
 * dkim_sign_next_field - the field at *pos of the block: its first octet and
 * length without the final line end; false at the empty line or the end
 */
static bool
dkim_sign_next_field(const char *p, size_t len, size_t *pos, size_t *start_r, size_t *flen_r)
{
	size_t i = *pos, end;
	const char *nl;

	if (i >= len || p[i] == '\r' || p[i] == '\n')
		return false;
	*start_r = i;
	for (;;) {
		if ((nl = memchr(p + i, '\n', len - i)) == NULL) {
			end = i = len;
			break;
		}
		end = (size_t)(nl - p);
		i = end + 1;
		if (i >= len || (p[i] != ' ' && p[i] != '\t'))
			break;
	}
	if (end > *start_r && p[end - 1] == '\r')
		end--;
	*flen_r = end - *start_r;
	*pos = i;
	return true;
}

/* dkim_sign_is_from - is this field From: ("From", any case, WSP allowed before the ':') */
static bool
dkim_sign_is_from(const char *f, size_t len)
{
	size_t i = 4;

	if (len < 5 || str_ncasecmp(f, "from", 4) != 0)
		return false;
	while (i < len && (f[i] == ' ' || f[i] == '\t'))
		i++;
	return i < len && f[i] == ':';
}

/* dkim_sign_domain_norm - lower-case, the root dot dropped; false if not a plausible domain */
static bool
dkim_sign_domain_norm(const char *d, char *out, size_t size)
{
	size_t n;

	if (d == NULL || !str_copy(out, d, size))
		return false;
	str_lower(out);
	n = strlen(out);
	if (n > 0 && out[n - 1] == '.')
		out[--n] = '\0';
	return n > 0;
}

/*
 * dkim_sign_from_domain - the domain of the only From: field's address
 * (dkim_mail_parse, folding removed); returns the number of From: fields,
 * *dom "" when there is not exactly one or its address does not parse
 */
static unsigned
dkim_sign_from_domain(const struct buf *head, char *dom, size_t size)
{
	size_t pos = 0, start, flen, vstart = 0, vlen = 0, i, n;
	unsigned nfrom = 0;
	char value[DKIM_SIGN_FROM_MAX + 1];
	unsigned char *user, *domain;

	dom[0] = '\0';
	while (dkim_sign_next_field(head->data, head->len, &pos, &start, &flen)) {
		if (!dkim_sign_is_from(head->data + start, flen))
			continue;
		if (nfrom++ == 0) {
			const char *colon = memchr(head->data + start, ':', flen);

			vstart = (size_t)(colon - head->data) + 1;
			vlen = flen - (vstart - start);
		}
	}
	if (nfrom != 1 || vlen > DKIM_SIGN_FROM_MAX)
		return nfrom;
	for (i = n = 0; i < vlen; i++) {
		char c = head->data[vstart + i];

		if (c != '\r' && c != '\n')
			value[n++] = c;
	}
	value[n] = '\0';
	if (dkim_mail_parse((unsigned char *)value, &user, &domain) != 0 ||
	    !dkim_sign_domain_norm((const char *)domain, dom, size))
		dom[0] = '\0';
	return nfrom;
}

/* dkim_sign_find - the keys of domain: first index and count (0 when none) */
static size_t
dkim_sign_find(const struct dkim_sign *ds, const char *domain, size_t *first_r)
{
	size_t lo = 0, hi = ds->nkeys, n = 0;

	while (lo < hi) {
		size_t mid = lo + (hi - lo) / 2;

		if (strcmp(ds->keys[mid].domain, domain) < 0)
			lo = mid + 1;
		else
			hi = mid;
	}
	while (lo + n < ds->nkeys && strcmp(ds->keys[lo + n].domain, domain) == 0)
		n++;
	*first_r = lo;
	return n;
}

struct dkim_sign_job {
	DKIM *h[DKIM_SIGN_PER_DOMAIN];
	const struct dkim_sign_key *k[DKIM_SIGN_PER_DOMAIN];
	struct dkim_sign_mem mem[DKIM_SIGN_PER_DOMAIN];	/* each handle's memclosure */
	size_t n;
	const char *err;	/* the first failure, for the log */
	const char *what;	/* where it failed: "sign", "header", "body", "eom"... */
	const struct dkim_sign_key *errkey;
};

/* dkim_sign_check - record the first libopendkim failure of handle i */
static bool
dkim_sign_check(struct dkim_sign_job *j, size_t i, DKIM_STAT st, const char *what)
{
	const char *e;

	if (st == DKIM_STAT_OK)
		return true;
	if (j->err == NULL) {
		e = j->h[i] != NULL ? dkim_geterror(j->h[i]) : NULL;
		j->err = e != NULL && *e != '\0' ? e : dkim_getresultstr(st);
		j->errkey = j->k[i];
		j->what = what;
	}
	return false;
}

/* dkim_sign_feed - the header block, the end of it and the body to every handle */
static bool
dkim_sign_feed(struct dkim_sign_job *j, const struct filter_txn *txn)
{
	const struct buf *head = txn->head;
	size_t pos = 0, start, flen, i, off, total, n;
	const char *mem;
	char *chunk = NULL;
	ssize_t got;
	bool ok = true;

	while (ok && dkim_sign_next_field(head->data, head->len, &pos, &start, &flen))
		for (i = 0; i < j->n && ok; i++)
			ok = dkim_sign_check(j, i, dkim_header(j->h[i],
			    (unsigned char *)head->data + start, flen), "header");
	for (i = 0; i < j->n && ok; i++)
		ok = dkim_sign_check(j, i, dkim_eoh(j->h[i]), "eoh");
	if (!ok || txn->body == NULL)
		return ok;
	total = spool_size(txn->body);
	off = txn->body_offset;
	if ((mem = spool_mem(txn->body)) != NULL) {
		for (i = 0; i < j->n && ok && total > off; i++)
			ok = dkim_sign_check(j, i, dkim_body(j->h[i], (unsigned char *)mem + off,
			    total - off), "body");
		return ok;
	}
	chunk = xmalloc(DKIM_SIGN_CHUNK);
	while (ok && off < total) {
		n = total - off < DKIM_SIGN_CHUNK ? total - off : DKIM_SIGN_CHUNK;
		if ((got = spool_pread(txn->body, chunk, n, off)) <= 0) {
			j->err = "cannot read the spooled body";
			j->what = "spool";
			ok = false;
			break;
		}
		for (i = 0; i < j->n && ok; i++)
			ok = dkim_sign_check(j, i, dkim_body(j->h[i], (unsigned char *)chunk,
			    (size_t)got), "body");
		off += (size_t)got;
	}
	free(chunk);
	return ok;
}

/*
 * dkim_sign_privkey - libopendkim parses the key of handle h now (it would
 * at dkim_eom otherwise); for a plain key with ds->plain as this thread's
 * default library context, restored at once: OpenSSL's ASN.1 code instead
 * of a decoder chain built for the call.  The errors of the decoder lookup
 * that finds nothing there are dropped.
 */
static DKIM_STAT
dkim_sign_privkey(const struct dkim_sign *ds, const struct dkim_sign_key *k, DKIM *h)
{
	OSSL_LIB_CTX *prev;
	DKIM_STAT st;

	if (!k->plain)
		return dkim_privkey_load(h);
	ERR_set_mark();
	if ((prev = OSSL_LIB_CTX_set0_default(ds->plain)) == NULL) {
		ERR_pop_to_mark();
		return dkim_privkey_load(h);
	}
	st = dkim_privkey_load(h);
	OSSL_LIB_CTX_set0_default(prev);
	ERR_pop_to_mark();
	return st;
}

/* dkim_sign_message - one signature per key of j; prepended only when all succeed */
static bool
dkim_sign_message(const struct dkim_sign *ds, struct dkim_sign_job *j, struct filter_txn *txn,
    const char *qid)
{
	DKIM_STAT st;
	unsigned char *sig[DKIM_SIGN_PER_DOMAIN];
	size_t len, i;
	bool ok = true;

	for (i = 0; i < j->n && ok; i++) {
		j->mem[i].ed25519 = j->k[i]->alg == DKIM_SIGN_ED25519SHA256;
		j->h[i] = dkim_sign(ds->lib, (const unsigned char *)qid, &j->mem[i],
		    (dkim_sigkey_t)j->k[i]->data, (const unsigned char *)j->k[i]->selector,
		    (const unsigned char *)j->k[i]->domain, ds->hcanon, ds->bcanon, j->k[i]->alg,
		    -1, &st);
		ok = dkim_sign_check(j, i, j->h[i] != NULL ? st : DKIM_STAT_NORESOURCE, "sign") &&
		    dkim_sign_check(j, i, dkim_sign_privkey(ds, j->k[i], j->h[i]), "key");
		/*
		 * libopendkim folds the signature twice, without b= (what it
		 * hashes) and with it (what it returns), and for Ed25519 the
		 * two may fold differently before b=: fine for relaxed, a
		 * broken signature for simple.  One line, then.
		 */
		if (ok && j->k[i]->alg == DKIM_SIGN_ED25519SHA256 && ds->hcanon == DKIM_CANON_SIMPLE)
			ok = dkim_sign_check(j, i, dkim_set_margin(j->h[i], 0), "margin");
	}
	ok = ok && dkim_sign_feed(j, txn);
	for (i = 0; i < j->n && ok; i++)
		ok = dkim_sign_check(j, i, dkim_eom(j->h[i], NULL), "eom");
	for (i = 0; i < j->n && ok; i++)
		ok = dkim_sign_check(j, i, dkim_getsighdr_d(j->h[i], sizeof(DKIM_SIGN_FIELD ": ") - 1,
		    &sig[i], &len), "getsighdr");
	for (i = 0; i < j->n && ok; i++)
		filter_prepend_header(txn, DKIM_SIGN_FIELD, (const char *)sig[i]);
	return ok;
}

/* dkim_sign_free_job - the per-message handles */
static void
dkim_sign_free_job(struct dkim_sign_job *j)
{
	size_t i;

	for (i = 0; i < j->n; i++) {
		if (j->h[i] == NULL)
			continue;
		j->mem[i].freeing = true;
		dkim_free(j->h[i]);
	}
}

/* dkim_sign_pick - the keys for this message: From: domain, else the login's; n 0 none */
static size_t
dkim_sign_pick(const struct dkim_sign *ds, const struct filter_session *sess,
    const char *from_dom, size_t *first_r, const char **why_r)
{
	char login_dom[DKIM_SIGN_DOMAIN_MAX];
	const char *at;
	size_t n = 0;

	if (from_dom[0] != '\0' && (n = dkim_sign_find(ds, from_dom, first_r)) > 0) {
		*why_r = "from";
		return n;
	}
	if (sess->auth_user != NULL && (at = strrchr(sess->auth_user, '@')) != NULL &&
	    dkim_sign_domain_norm(at + 1, login_dom, sizeof(login_dom)) &&
	    (n = dkim_sign_find(ds, login_dom, first_r)) > 0) {
		*why_r = "login";
		return n;
	}
	return 0;
}

/* dkim_sign_final - sign what the backend will receive */
static enum filter_verdict
dkim_sign_final(void *inst, struct filter_ctx *ctx, struct filter_reply *r)
{
	const struct dkim_sign *ds = inst;
	const struct filter_session *sess = ctx->sess;
	struct filter_txn *txn = ctx->txn;
	struct dkim_sign_job j;
	char from_dom[DKIM_SIGN_DOMAIN_MAX], esc[DKIM_SIGN_DOMAIN_MAX * 4];
	const char *qid, *why = NULL;
	size_t first = 0, i;
	unsigned nfrom;
	bool ok;

	if (txn == NULL || txn->head == NULL)
		return FILTER_CONTINUE;
	qid = txn->queue_id != NULL ? txn->queue_id : "-";
	if (sess->auth_user == NULL && !ds->unauthenticated) {
		log_debug("id=" SESSION_ID_FMT " event=dkim_sign_skip queue_id=%s "
		    "reason=unauthenticated", SESSION_ID(sess->id), qid);
		return FILTER_CONTINUE;
	}
	nfrom = dkim_sign_from_domain(txn->head, from_dom, sizeof(from_dom));
	memset(&j, 0, sizeof(j));
	j.n = dkim_sign_pick(ds, sess, nfrom == 1 ? from_dom : "", &first, &why);
	if (j.n == 0) {
		log_info("id=" SESSION_ID_FMT " event=dkim_sign_skip queue_id=%s reason=%s "
		    "from_fields=%u from_domain=%s", SESSION_ID(sess->id), qid,
		    nfrom != 1 ? "from_fields" : "no_key", nfrom,
		    log_escape(esc, sizeof(esc), from_dom, strlen(from_dom)));
		return FILTER_CONTINUE;
	}
	for (i = 0; i < j.n; i++)
		j.k[i] = &ds->keys[first + i];
	ok = dkim_sign_message(ds, &j, txn, qid);
	if (ok) {
		for (i = 0; i < j.n; i++)
			log_info("id=" SESSION_ID_FMT " event=dkim_signed queue_id=%s d=%s s=%s "
			    "a=%s bits=%d by=%s", SESSION_ID(sess->id), qid, j.k[i]->domain,
			    j.k[i]->selector, j.k[i]->a, j.k[i]->bits, why);
	} else {
		log_err("id=" SESSION_ID_FMT " event=dkim_sign_failed queue_id=%s d=%s s=%s "
		    "stage=%s error=\"%s\"", SESSION_ID(sess->id), qid,
		    j.errkey != NULL ? j.errkey->domain : "-",
		    j.errkey != NULL ? j.errkey->selector : "-", j.what,
		    log_escape(esc, sizeof(esc), j.err, strlen(j.err)));
	}
	dkim_sign_free_job(&j);
	if (ok)
		return FILTER_CONTINUE;
	r->code = 451;
	str_copy(r->ecode, "4.3.0", sizeof(r->ecode));
	str_copy(r->text, "DKIM signing failed, try again later", sizeof(r->text));
	return FILTER_TEMPFAIL;
}

const struct filter_ops dkim_sign_ops = {
	.name = "dkim-sign",
	.configure = dkim_sign_configure,
	.destroy = dkim_sign_destroy,
	.final = dkim_sign_final,
};
