/*
 * tls.c - OpenSSL 3 contexts for listeners and for the backend client (see tls.h).
 *
 * Never touches a socket, the event loop or the log, and never exits on a bad
 * configuration: every failure comes back as one malloc'd line naming the
 * file or setting and OpenSSL's reason.  fatal() only when OpenSSL cannot
 * allocate.  Never prompts for a passphrase: an encrypted key fails to load.
 *
 * Both sides: TLS 1.2 at least (1.3 when [tls] min_protocol = TLSv1.3),
 * no compression (CRIME), no renegotiation, ECDHE over X25519/P-256/P-384,
 * and SSL_MODE_RELEASE_BUFFERS so an idle session holds no 16 KB record
 * buffers (10,000 idle sessions must fit in 100 MB).
 *
 * Server side, decided here: the server's cipher preference wins (a client
 * that prefers ChaCha20 first keeps it); for TLS <= 1.2 only ECDHE with AEAD
 * ciphers unless [tls] ciphers says otherwise.
 *
 * Session resumption: stateless session tickets (RFC 5077 for TLS 1.2, the
 * NewSessionTicket of TLS 1.3), so that a session resumes however the last
 * one ended -- OpenSSL drops a cached session freed without close_notify, as
 * when a client closes without QUIT -- and in whichever loop thread the next
 * connection lands.  The ticket keys (AES-256-CBC, HMAC-SHA256) belong to the
 * context, behind a mutex since every loop thread uses it: a key encrypts new
 * tickets for TLS_SESSION_TIMEOUT seconds, then only decrypts (and renews)
 * them for as long again, then is erased, so a key that leaks opens at most
 * ten minutes of TLS 1.2 sessions (TLS 1.3 resumes with a fresh ECDHE, so a
 * leaked key opens no TLS 1.3 traffic).  Keys rotate when a handshake finds
 * them old (no timer: this module stays off the event loop).  A new context
 * (SIGHUP) starts with new keys.  Clients without tickets resume TLS 1.2 by
 * session id from the server-side cache (one per context, shared by every
 * loop, TLS_SESSION_CACHE_SIZE entries), which keeps only sessions that ended
 * with close_notify.  Across a fleet a client resumes only on the node it saw
 * before, which costs SMTP little.  No SNI-selected certificates: one
 * cert/key pair.
 */
#include "config.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <openssl/core_names.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/rand.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>

#include "conf.h"
#include "tls.h"
#include "util.h"

#define TLS_SESSION_CACHE_SIZE	4096
#define TLS_SESSION_ID_CONTEXT	"portier"
#define TLS_ERRBUF		512
#define TLS_TICKET_NAME		16	/* octets, fixed by OpenSSL */
#define TLS_TICKET_SECRET	32	/* AES-256 key; HMAC-SHA256 key */

/* One ticket key; set false when the slot is empty (or erased). */
struct tls_ticket_key {
	bool set;
	time_t born;		/* on the context's ticket clock */
	unsigned char name[TLS_TICKET_NAME];
	unsigned char aes[TLS_TICKET_SECRET];
	unsigned char hmac[TLS_TICKET_SECRET];
};

/* The ticket keys of one server context (its ex_data), used by every loop thread. */
struct tls_tickets {
	pthread_mutex_t lock;
	time_t skipped;			/* tls_tickets_skip, for tests */
	bool frozen;			/* a test skipped: the clock moves by skips only */
	time_t frozen_at;
	struct tls_ticket_key key[2];	/* [0] encrypts, [1] the one before: decrypts */
};

static pthread_once_t tls_tickets_once = PTHREAD_ONCE_INIT;
static int tls_tickets_index = -1;	/* SSL_CTX ex_data slot, set once */

/* tls_no_passphrase - password callback that refuses: never prompt on a terminal */
static int
tls_no_passphrase(char *buf, int size, int rwflag, void *u)
{
	return 0;
}

/* tls_fail - *err_r = "what: OpenSSL's reasons"; drains the error queue; returns NULL */
static SSL_CTX *
tls_fail(SSL_CTX *ctx, char **err_r, const char *what)
{
	char reason[TLS_ERRBUF];

	tls_errors(reason, sizeof(reason));
	*err_r = xasprintf("%s: %s", what, reason);
	SSL_CTX_free(ctx);
	return NULL;
}

/* tls_min_version - parse [tls] min_protocol; NULL means TLS 1.2 */
static bool
tls_min_version(const char *s, int *version_r)
{
	if (s == NULL || str_casecmp(s, "TLSv1.2") == 0)
		*version_r = TLS1_2_VERSION;
	else if (str_casecmp(s, "TLSv1.3") == 0)
		*version_r = TLS1_3_VERSION;
	else
		return false;
	return true;
}

/* tls_ctx_common - settings both sides share; false and *err_r on error */
static bool
tls_ctx_common(SSL_CTX *ctx, int min_version, char **err_r)
{
	char reason[TLS_ERRBUF];

	if (!SSL_CTX_set_min_proto_version(ctx, min_version) ||
	    !SSL_CTX_set1_groups_list(ctx, TLS_GROUPS)) {
		tls_errors(reason, sizeof(reason));
		*err_r = xasprintf("cannot set protocol version or groups: %s", reason);
		return false;
	}
	SSL_CTX_set_options(ctx, SSL_OP_NO_COMPRESSION | SSL_OP_NO_RENEGOTIATION);
	SSL_CTX_set_mode(ctx, SSL_MODE_RELEASE_BUFFERS |
	    SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER);
	SSL_CTX_set_default_passwd_cb(ctx, tls_no_passphrase);
	return true;
}

/* tls_server_ciphers - cipher list (<= 1.2) and suites (1.3); false and *err_r on error */
static bool
tls_server_ciphers(SSL_CTX *ctx, const struct conf *conf, char **err_r)
{
	const char *list = conf->tls_ciphers != NULL ? conf->tls_ciphers : TLS_DEFAULT_CIPHERS;
	char reason[TLS_ERRBUF];

	if (!SSL_CTX_set_cipher_list(ctx, list)) {
		tls_errors(reason, sizeof(reason));
		*err_r = xasprintf("[tls] ciphers \"%s\": %s", list, reason);
		return false;
	}
	if (conf->tls_ciphersuites != NULL &&
	    !SSL_CTX_set_ciphersuites(ctx, conf->tls_ciphersuites)) {
		tls_errors(reason, sizeof(reason));
		*err_r = xasprintf("[tls] ciphersuites \"%s\": %s",
		    conf->tls_ciphersuites, reason);
		return false;
	}
	return true;
}

/* tls_read_key - the private key in path, or NULL with the queue holding why */
static EVP_PKEY *
tls_read_key(const char *path)
{
	EVP_PKEY *pkey;
	BIO *bio;

	if ((bio = BIO_new_file(path, "r")) == NULL)
		return NULL;
	pkey = PEM_read_bio_PrivateKey(bio, NULL, tls_no_passphrase, NULL);
	BIO_free(bio);
	return pkey;
}

/* tls_server_keypair - certificate chain and matching key; false and *err_r on error */
static bool
tls_server_keypair(SSL_CTX *ctx, const char *cert, const char *key, char **err_r)
{
	char reason[TLS_ERRBUF];
	EVP_PKEY *pkey;
	X509 *leaf;

	if (!SSL_CTX_use_certificate_chain_file(ctx, cert) ||
	    (leaf = SSL_CTX_get0_certificate(ctx)) == NULL) {
		tls_errors(reason, sizeof(reason));
		*err_r = xasprintf("%s: cannot load certificate chain: %s", cert, reason);
		return false;
	}
	if ((pkey = tls_read_key(key)) == NULL) {
		tls_errors(reason, sizeof(reason));
		*err_r = xasprintf("%s: cannot load private key: %s", key, reason);
		return false;
	}
	/* Checked here, before SSL_CTX_use_PrivateKey, to say which files disagree. */
	if (!X509_check_private_key(leaf, pkey)) {
		tls_errors(reason, sizeof(reason));
		*err_r = xasprintf("%s: private key does not match the certificate in %s: %s",
		    key, cert, reason);
		EVP_PKEY_free(pkey);
		return false;
	}
	if (!SSL_CTX_use_PrivateKey(ctx, pkey) || !SSL_CTX_check_private_key(ctx)) {
		tls_errors(reason, sizeof(reason));
		*err_r = xasprintf("%s: cannot use private key with %s: %s", key, cert, reason);
		EVP_PKEY_free(pkey);
		return false;
	}
	EVP_PKEY_free(pkey);
	return true;
}

/* ---- session tickets ---- */

/* tls_tickets_free - ex_data destructor: erase and free a context's ticket keys */
static void
tls_tickets_free(void *parent, void *ptr, CRYPTO_EX_DATA *ad, int idx, long argl, void *argp)
{
	struct tls_tickets *t = ptr;

	if (t == NULL)
		return;
	pthread_mutex_destroy(&t->lock);
	OPENSSL_cleanse(t, sizeof(*t));
	free(t);
}

/* tls_tickets_init_index - the ex_data slot, once per process */
static void
tls_tickets_init_index(void)
{
	tls_tickets_index = SSL_CTX_get_ex_new_index(0, NULL, NULL, NULL, tls_tickets_free);
}

/* tls_tickets_of - the ticket keys of ctx, or NULL (not a server context of ours) */
static struct tls_tickets *
tls_tickets_of(SSL_CTX *ctx)
{
	return tls_tickets_index < 0 ? NULL : SSL_CTX_get_ex_data(ctx, tls_tickets_index);
}

/* tls_tickets_now - the ticket clock: monotonic seconds, plus what tests skipped */
static time_t
tls_tickets_now(const struct tls_tickets *t)
{
	struct timespec ts;

	if (t->frozen)
		return t->frozen_at + t->skipped;
	if (clock_gettime(CLOCK_MONOTONIC, &ts) != 0)
		fatal("clock_gettime(CLOCK_MONOTONIC) failed");
	return ts.tv_sec + t->skipped;
}

/* tls_tickets_age - erase keys past their life; retire the current one after its turn */
static void
tls_tickets_age(struct tls_tickets *t, time_t now)
{
	if (t->key[0].set && now - t->key[0].born >= TLS_SESSION_TIMEOUT) {
		OPENSSL_cleanse(&t->key[1], sizeof(t->key[1]));
		t->key[1] = t->key[0];
		OPENSSL_cleanse(&t->key[0], sizeof(t->key[0]));
	}
	/* decrypts for TLS_SESSION_TIMEOUT after it stopped encrypting */
	if (t->key[1].set && now - t->key[1].born >= 2 * TLS_SESSION_TIMEOUT)
		OPENSSL_cleanse(&t->key[1], sizeof(t->key[1]));
}

/* tls_tickets_current - the key for a new ticket (made if there is none); NULL if no randomness */
static const struct tls_ticket_key *
tls_tickets_current(struct tls_tickets *t, time_t now)
{
	struct tls_ticket_key *k = &t->key[0];

	if (!k->set) {
		if (RAND_bytes(k->name, sizeof(k->name)) != 1 ||
		    RAND_bytes(k->aes, sizeof(k->aes)) != 1 ||
		    RAND_bytes(k->hmac, sizeof(k->hmac)) != 1) {
			OPENSSL_cleanse(k, sizeof(*k));
			return NULL;
		}
		k->born = now;
		k->set = true;
	}
	return k;
}

/* tls_tickets_find - the live key named name, or NULL */
static const struct tls_ticket_key *
tls_tickets_find(const struct tls_tickets *t, const unsigned char *name)
{
	size_t i;

	for (i = 0; i < ARRAY_SIZE(t->key); i++)
		if (t->key[i].set && memcmp(t->key[i].name, name, TLS_TICKET_NAME) == 0)
			return &t->key[i];
	return NULL;
}

/* tls_ticket_setup - key the ticket's cipher and MAC with k; false on OpenSSL failure */
static bool
tls_ticket_setup(const struct tls_ticket_key *k, const unsigned char *iv,
    EVP_CIPHER_CTX *cctx, EVP_MAC_CTX *hctx, bool enc)
{
	OSSL_PARAM params[3];

	params[0] = OSSL_PARAM_construct_octet_string(OSSL_MAC_PARAM_KEY, (void *)k->hmac,
	    sizeof(k->hmac));
	params[1] = OSSL_PARAM_construct_utf8_string(OSSL_MAC_PARAM_DIGEST, "SHA256", 0);
	params[2] = OSSL_PARAM_construct_end();
	if (!EVP_MAC_CTX_set_params(hctx, params))
		return false;
	return (enc ? EVP_EncryptInit_ex(cctx, EVP_aes_256_cbc(), NULL, k->aes, iv) :
	    EVP_DecryptInit_ex(cctx, EVP_aes_256_cbc(), NULL, k->aes, iv)) == 1;
}

/*
 * tls_ticket_cb - OpenSSL's ticket key callback, from any loop thread.
 * New ticket (enc): 1, or 0 for none.  Presented ticket: 1 to resume, 2 to
 * resume and issue a fresh ticket (the key is retiring), 0 for a full
 * handshake (unknown or erased key).  -1 fails the handshake.
 */
static int
tls_ticket_cb(SSL *ssl, unsigned char name[TLS_TICKET_NAME], unsigned char *iv,
    EVP_CIPHER_CTX *cctx, EVP_MAC_CTX *hctx, int enc)
{
	struct tls_tickets *t = tls_tickets_of(SSL_get_SSL_CTX(ssl));
	const struct tls_ticket_key *k;
	time_t now;
	int ret;

	if (t == NULL)
		return 0;
	pthread_mutex_lock(&t->lock);
	now = tls_tickets_now(t);
	tls_tickets_age(t, now);
	if (enc) {
		k = tls_tickets_current(t, now);
		if (k != NULL && RAND_bytes(iv, EVP_CIPHER_get_iv_length(EVP_aes_256_cbc())) == 1)
			memcpy(name, k->name, TLS_TICKET_NAME);
		else
			k = NULL;
	} else
		k = tls_tickets_find(t, name);
	if (k == NULL)
		ret = 0;
	else if (!tls_ticket_setup(k, iv, cctx, hctx, enc))
		ret = -1;
	else
		ret = (!enc && k == &t->key[1]) ? 2 : 1;
	pthread_mutex_unlock(&t->lock);
	return ret;
}

/* tls_server_tickets - stateless tickets under keys of ctx's own; false and *err_r on error */
static bool
tls_server_tickets(SSL_CTX *ctx, char **err_r)
{
	struct tls_tickets *t;

	if (pthread_once(&tls_tickets_once, tls_tickets_init_index) != 0 ||
	    tls_tickets_index < 0)
		fatal("tls: no ex_data slot for ticket keys");
	t = xcalloc(1, sizeof(*t));
	if (pthread_mutex_init(&t->lock, NULL) != 0)
		fatal("tls: pthread_mutex_init failed");
	if (!SSL_CTX_set_ex_data(ctx, tls_tickets_index, t)) {
		tls_tickets_free(ctx, t, NULL, tls_tickets_index, 0, NULL);
		tls_fail(NULL, err_r, "cannot attach session ticket keys");
		return false;
	}
	if (!SSL_CTX_set_tlsext_ticket_key_evp_cb(ctx, tls_ticket_cb)) {
		tls_fail(NULL, err_r, "cannot set the session ticket callback");
		return false;
	}
	return true;
}

/*
 * tls_tickets_skip - move ctx's ticket clock on by seconds (tests); from the
 * first call on, that clock stands still but for skips, so that a second
 * that passes during a slow test changes nothing
 */
void
tls_tickets_skip(SSL_CTX *ctx, unsigned seconds)
{
	struct tls_tickets *t = tls_tickets_of(ctx);

	if (t == NULL)
		return;
	pthread_mutex_lock(&t->lock);
	if (!t->frozen) {
		t->frozen_at = tls_tickets_now(t);
		t->frozen = true;
	}
	t->skipped += (time_t)seconds;
	pthread_mutex_unlock(&t->lock);
}

/* ---- contexts ---- */

/* tls_server_ctx_new - context for listeners from [tls] */
SSL_CTX *
tls_server_ctx_new(const struct conf *conf, char **err_r)
{
	SSL_CTX *ctx;
	int min;

	*err_r = NULL;
	if (conf->tls_cert == NULL || conf->tls_key == NULL) {
		*err_r = xstrdup("[tls] cert and key are required for TLS");
		return NULL;
	}
	if (!tls_min_version(conf->tls_min_protocol, &min)) {
		*err_r = xasprintf("[tls] min_protocol \"%s\": use TLSv1.2 or TLSv1.3",
		    conf->tls_min_protocol);
		return NULL;
	}
	ERR_clear_error();
	if ((ctx = SSL_CTX_new(TLS_server_method())) == NULL)
		return tls_fail(NULL, err_r, "cannot create TLS server context");
	if (!tls_ctx_common(ctx, min, err_r) || !tls_server_ciphers(ctx, conf, err_r) ||
	    !tls_server_keypair(ctx, conf->tls_cert, conf->tls_key, err_r)) {
		SSL_CTX_free(ctx);
		return NULL;
	}
	SSL_CTX_set_options(ctx, SSL_OP_CIPHER_SERVER_PREFERENCE | SSL_OP_PRIORITIZE_CHACHA);
	SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_SERVER);
	SSL_CTX_sess_set_cache_size(ctx, TLS_SESSION_CACHE_SIZE);
	SSL_CTX_set_timeout(ctx, TLS_SESSION_TIMEOUT);
	/* One TLS 1.3 ticket per handshake: an SMTP client resumes one connection. */
	SSL_CTX_set_num_tickets(ctx, 1);
	if (!SSL_CTX_set_session_id_context(ctx, (const unsigned char *)TLS_SESSION_ID_CONTEXT,
	    sizeof(TLS_SESSION_ID_CONTEXT) - 1))
		return tls_fail(ctx, err_r, "cannot set session id context");
	if (!tls_server_tickets(ctx, err_r)) {
		SSL_CTX_free(ctx);
		return NULL;
	}
	return ctx;
}

/* tls_server_ssl_new - one server-side connection */
SSL *
tls_server_ssl_new(SSL_CTX *ctx)
{
	SSL *ssl;

	if ((ssl = SSL_new(ctx)) == NULL)
		fatal("SSL_new: out of memory");
	SSL_set_accept_state(ssl);
	return ssl;
}

/* tls_client_verify - whether the backend's certificate must verify */
bool
tls_client_verify(const struct conf *conf)
{
	return conf->relay_tls_verify || conf->relay_tls == RELAY_TLS_REQUIRED;
}

/* tls_client_ctx_new - context for backend connections */
SSL_CTX *
tls_client_ctx_new(const struct conf *conf, char **err_r)
{
	char what[TLS_ERRBUF];
	SSL_CTX *ctx;

	*err_r = NULL;
	ERR_clear_error();
	if ((ctx = SSL_CTX_new(TLS_client_method())) == NULL)
		return tls_fail(NULL, err_r, "cannot create TLS client context");
	if (!tls_ctx_common(ctx, TLS1_2_VERSION, err_r)) {
		SSL_CTX_free(ctx);
		return NULL;
	}
	/* The backend is trusted as configured: an explicit CA always loads (so
	 * opportunistic sessions can log whether the chain verified); the system
	 * store only when verification is asked for (it costs memory). */
	if (conf->relay_tls_ca != NULL) {
		if (!SSL_CTX_load_verify_file(ctx, conf->relay_tls_ca)) {
			snprintf(what, sizeof(what), "%s: cannot load CA certificates",
			    conf->relay_tls_ca);
			return tls_fail(ctx, err_r, what);
		}
	} else if (tls_client_verify(conf)) {
		if (!SSL_CTX_set_default_verify_paths(ctx))
			return tls_fail(ctx, err_r, "cannot load the system CA store");
	}
	SSL_CTX_set_verify(ctx, SSL_VERIFY_NONE, NULL);
	return ctx;
}

/* tls_is_ip - whether name is an IPv4 or IPv6 literal */
static bool
tls_is_ip(const char *name)
{
	struct in6_addr a6;
	struct in_addr a4;

	return inet_pton(AF_INET, name, &a4) == 1 || inet_pton(AF_INET6, name, &a6) == 1;
}

/* tls_client_ssl_new - one backend connection with SNI and the expected name */
SSL *
tls_client_ssl_new(SSL_CTX *ctx, const char *name, bool verify)
{
	bool ip;
	SSL *ssl;

	if ((ssl = SSL_new(ctx)) == NULL)
		fatal("SSL_new: out of memory");
	SSL_set_connect_state(ssl);
	if (name != NULL && *name != '\0') {
		ip = tls_is_ip(name);
		/* RFC 6066 3: SNI carries host names only.  A name too long for
		 * SNI is not sent; verification below still applies to it. */
		if (!ip && !SSL_set_tlsext_host_name(ssl, name))
			ERR_clear_error();
		if (verify) {
			/* Failing here would silently skip the name check: fatal. */
			if (ip ? !X509_VERIFY_PARAM_set1_ip_asc(SSL_get0_param(ssl), name) :
			    !SSL_set1_host(ssl, name))
				fatal("tls: cannot set expected peer name");
			SSL_set_hostflags(ssl, X509_CHECK_FLAG_NO_PARTIAL_WILDCARDS);
		}
	}
	SSL_set_verify(ssl, verify ? SSL_VERIFY_PEER : SSL_VERIFY_NONE, NULL);
	return ssl;
}

/* tls_ctx_ref - one more reference */
SSL_CTX *
tls_ctx_ref(SSL_CTX *ctx)
{
	if (!SSL_CTX_up_ref(ctx))
		fatal("SSL_CTX_up_ref failed");
	return ctx;
}

/* tls_ctx_unref - drop a reference */
void
tls_ctx_unref(SSL_CTX *ctx)
{
	SSL_CTX_free(ctx);
}

/* tls_version - negotiated protocol or "none" */
const char *
tls_version(SSL *ssl)
{
	if (ssl == NULL || SSL_get_current_cipher(ssl) == NULL)
		return "none";
	return SSL_get_version(ssl);
}

/* tls_cipher - negotiated cipher or "none" */
const char *
tls_cipher(SSL *ssl)
{
	const SSL_CIPHER *c;

	if (ssl == NULL || (c = SSL_get_current_cipher(ssl)) == NULL)
		return "none";
	return SSL_CIPHER_get_name(c);
}

/* tls_describe - protocol, cipher and key sizes on one line */
void
tls_describe(SSL *ssl, char *buf, size_t size)
{
	const SSL_CIPHER *c;
	int bits, alg_bits;
	int n;

	if (size == 0)
		return;
	if (ssl == NULL || (c = SSL_get_current_cipher(ssl)) == NULL) {
		str_copy(buf, "none", size);
		return;
	}
	bits = SSL_CIPHER_get_bits(c, &alg_bits);
	n = snprintf(buf, size, "%s %s %d/%d", SSL_get_version(ssl),
	    SSL_CIPHER_get_name(c), bits, alg_bits);
	/* A short buffer keeps a truncated description; never an overflow. */
	if (n < 0)
		str_copy(buf, "none", size);
}

/* tls_error_reason - text of one queued error; NULL for "came through lib X" markers */
static const char *
tls_error_reason(unsigned long e, char *code, size_t size)
{
	const char *reason;

	if (ERR_SYSTEM_ERROR(e))
		return strerror(ERR_GET_REASON(e));
	/* ERR_R_PEM_LIB ("PEM lib") and the like only say which layer passed
	 * the error on; the real reason is another entry. */
	if (ERR_COMMON_ERROR(e) &&
	    (ERR_GET_REASON(e) & ((1 << ERR_RFLAGS_OFFSET) - 1)) < 256)
		return NULL;
	if ((reason = ERR_reason_error_string(e)) == NULL) {
		snprintf(code, size, "error %08lx", e);
		reason = code;
	}
	return reason;
}

/* tls_errors - this thread's OpenSSL errors, oldest first, as one line */
void
tls_errors(char *buf, size_t size)
{
	const char *reason, *data;
	char code[32], item[TLS_ERRBUF];
	unsigned long e, layer = 0;
	size_t len = 0;
	int flags, n;

	if (size == 0)
		return;
	/* Error texts load with the library; make sure before the first context. */
	OPENSSL_init_ssl(OPENSSL_INIT_LOAD_SSL_STRINGS | OPENSSL_INIT_LOAD_CRYPTO_STRINGS, NULL);
	buf[0] = '\0';
	while ((e = ERR_get_error_all(NULL, NULL, NULL, &data, &flags)) != 0) {
		if ((reason = tls_error_reason(e, code, sizeof(code))) == NULL) {
			layer = e;
			continue;
		}
		/* System errors carry "calling fopen(PATH, r)": callers name the file. */
		if ((flags & ERR_TXT_STRING) == 0 || ERR_SYSTEM_ERROR(e))
			data = "";
		snprintf(item, sizeof(item), "%s%s%s%s", reason, *data != '\0' ? " (" : "",
		    data, *data != '\0' ? ")" : "");
		/* The same error raised at several layers says nothing new. */
		if (strcasestr(buf, item) != NULL)
			continue;
		n = snprintf(buf + len, size - len, "%s%s", len > 0 ? ": " : "", item);
		if (n < 0 || (size_t)n >= size - len) {
			ERR_clear_error();
			break;
		}
		len += (size_t)n;
	}
	if (buf[0] == '\0' && layer != 0 && (reason = ERR_reason_error_string(layer)) != NULL)
		str_copy(buf, reason, size);
	if (buf[0] == '\0')
		str_copy(buf, "unknown error", size);
}
