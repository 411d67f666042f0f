/*
 * check_tls.c - unit tests for the TLS contexts (tls.c).
 *
 * Certificates come from tests/gen-test-cert.sh, run once into a temp
 * directory before the suites (two unrelated CAs, so a key from one never
 * matches a certificate from the other) and removed afterwards.  Handshakes
 * are real: two SSL objects over an in-memory BIO pair, and once through
 * libevent's bufferevent_openssl over a socketpair, as the daemon runs them.
 * Needs the openssl command at test time.
 */
#include "config.h"

#include <check.h>
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/bufferevent_ssl.h>
#include <event2/event.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509_vfy.h>

#include "conf.h"
#include "tls.h"
#include "util.h"
#include "unit.h"

#define CN "mx.example.test"
#define GREETING "220 " CN " ESMTP\r\n"

static char tmpdir[256];
/* Set A: ca, cert, key for CN.  Set B: another CA, cert and key. */
static char ca_a[300], cert_a[300], key_a[300];
static char ca_b[300], cert_b[300], key_b[300];
static char key_enc[300], junk[300], missing[300], combined[300];

/* One handshake's outcome: the first OpenSSL error each side saw. */
struct hs {
	bool ok;
	unsigned long client_err;
	unsigned long server_err;
};

/* server_conf - a conf with [tls] pointing at set A */
static struct conf
server_conf(void)
{
	struct conf c;

	memset(&c, 0, sizeof(c));
	c.tls_cert = cert_a;
	c.tls_key = key_a;
	c.tls_handshake_timeout = 10;
	return c;
}

/* server_ctx - a server context for c, failing the test with the error text */
static SSL_CTX *
server_ctx(const struct conf *c)
{
	char *err = NULL;
	SSL_CTX *ctx;

	ctx = tls_server_ctx_new(c, &err);
	ck_assert_msg(ctx != NULL, "tls_server_ctx_new: %s", err ? err : "?");
	ck_assert_ptr_null(err);
	return ctx;
}

/* expect_server_error - tls_server_ctx_new(c) fails with text containing both needles */
static void
expect_server_error(const struct conf *c, const char *needle1, const char *needle2)
{
	char *err = NULL;
	SSL_CTX *ctx;

	ctx = tls_server_ctx_new(c, &err);
	ck_assert_ptr_null(ctx);
	ck_assert_ptr_nonnull(err);
	ck_assert_msg(strstr(err, needle1) != NULL, "\"%s\" not in \"%s\"", needle1, err);
	if (needle2 != NULL)
		ck_assert_msg(strstr(err, needle2) != NULL, "\"%s\" not in \"%s\"", needle2, err);
	ck_assert_int_eq(ERR_peek_error(), 0);	/* the queue was drained */
	free(err);
}

/* plain_client - a client context outside tls.c, between min and max protocol */
static SSL_CTX *
plain_client(int min, int max, const char *ciphers)
{
	SSL_CTX *ctx = SSL_CTX_new(TLS_client_method());

	ck_assert_ptr_nonnull(ctx);
	/* Level 0 so the client itself does not refuse old protocols: the
	 * refusal under test must come from the server. */
	SSL_CTX_set_security_level(ctx, 0);
	ck_assert(SSL_CTX_set_min_proto_version(ctx, min));
	ck_assert(SSL_CTX_set_max_proto_version(ctx, max));
	if (ciphers != NULL)
		ck_assert(SSL_CTX_set_cipher_list(ctx, ciphers));
	SSL_CTX_set_verify(ctx, SSL_VERIFY_NONE, NULL);
	return ctx;
}

/* hs_step - one SSL_do_handshake; records completion or the first hard error */
static void
hs_step(SSL *ssl, bool *done, bool *failed, unsigned long *err_r)
{
	int rc, e;

	if (*done || *failed)
		return;
	ERR_clear_error();
	if ((rc = SSL_do_handshake(ssl)) == 1) {
		*done = true;
		return;
	}
	e = SSL_get_error(ssl, rc);
	if (e != SSL_ERROR_WANT_READ && e != SSL_ERROR_WANT_WRITE) {
		*failed = true;
		*err_r = ERR_peek_error();
	}
	ERR_clear_error();
}

/* handshake - run client and server over an in-memory BIO pair until both finish or stall */
static struct hs
handshake(SSL *client, SSL *server)
{
	bool cdone = false, sdone = false, cfail = false, sfail = false;
	struct hs r = { false, 0, 0 };
	BIO *cb, *sb;
	int i;

	ck_assert(BIO_new_bio_pair(&cb, 0, &sb, 0));
	SSL_set_bio(client, cb, cb);
	SSL_set_bio(server, sb, sb);
	for (i = 0; i < 50 && !(cdone && sdone) && !(cfail && sfail); i++) {
		hs_step(client, &cdone, &cfail, &r.client_err);
		hs_step(server, &sdone, &sfail, &r.server_err);
	}
	r.ok = cdone && sdone;
	return r;
}

/* roundtrip - one line each way over established SSLs */
static void
roundtrip(SSL *client, SSL *server)
{
	char buf[64];
	int n;

	ck_assert_int_eq(SSL_write(client, "EHLO client\r\n", 13), 13);
	n = SSL_read(server, buf, sizeof(buf) - 1);
	ck_assert_int_eq(n, 13);
	buf[n] = '\0';
	ck_assert_str_eq(buf, "EHLO client\r\n");
	ck_assert_int_eq(SSL_write(server, "250 ok\r\n", 8), 8);
	n = SSL_read(client, buf, sizeof(buf) - 1);
	ck_assert_int_eq(n, 8);
}

/* hs_with - handshake between a given client context and a server from c */
static struct hs
hs_with(SSL_CTX *cctx, const struct conf *c, char *desc, size_t size)
{
	SSL_CTX *sctx = server_ctx(c);
	SSL *client, *server;
	struct hs r;

	client = SSL_new(cctx);
	server = tls_server_ssl_new(sctx);
	SSL_set_connect_state(client);
	r = handshake(client, server);
	if (r.ok) {
		roundtrip(client, server);
		tls_describe(server, desc, size);
	}
	SSL_free(client);
	SSL_free(server);
	tls_ctx_unref(sctx);
	return r;
}

START_TEST(test_server_ctx_loads)
{
	struct conf c = server_conf();
	SSL_CTX *ctx = server_ctx(&c);
	uint64_t opts = SSL_CTX_get_options(ctx);

	ck_assert(opts & SSL_OP_NO_COMPRESSION);
	ck_assert(opts & SSL_OP_NO_RENEGOTIATION);
	ck_assert(opts & SSL_OP_CIPHER_SERVER_PREFERENCE);
	ck_assert(!(opts & SSL_OP_NO_TICKET));	/* stateless tickets: see tls.c */
	ck_assert_int_eq(SSL_CTX_get_min_proto_version(ctx), TLS1_2_VERSION);
	ck_assert(SSL_CTX_get_session_cache_mode(ctx) & SSL_SESS_CACHE_SERVER);
	ck_assert(SSL_CTX_get_mode(ctx) & SSL_MODE_RELEASE_BUFFERS);
	ck_assert_ptr_nonnull(SSL_CTX_get0_certificate(ctx));
	tls_ctx_unref(ctx);

	c.tls_min_protocol = "TLSv1.3";
	ctx = server_ctx(&c);
	ck_assert_int_eq(SSL_CTX_get_min_proto_version(ctx), TLS1_3_VERSION);
	tls_ctx_unref(ctx);
}
END_TEST

START_TEST(test_wrong_key)
{
	struct conf c = server_conf();

	c.tls_key = key_b;
	expect_server_error(&c, key_b, "does not match the certificate in");
	expect_server_error(&c, cert_a, NULL);
}
END_TEST

START_TEST(test_missing_files)
{
	struct conf c = server_conf();

	c.tls_cert = missing;
	expect_server_error(&c, missing, "cannot load certificate chain: No such file or directory");
	c = server_conf();
	c.tls_key = missing;
	expect_server_error(&c, missing, "cannot load private key: No such file or directory");
	c = server_conf();
	c.tls_key = NULL;
	expect_server_error(&c, "[tls] cert and key", NULL);
}
END_TEST

START_TEST(test_bad_files)
{
	struct conf c = server_conf();

	c.tls_cert = junk;
	expect_server_error(&c, junk, "cannot load certificate chain");
	c = server_conf();
	c.tls_key = junk;
	expect_server_error(&c, junk, "cannot load private key");
	/* An encrypted key is refused, never prompted for. */
	c = server_conf();
	c.tls_key = key_enc;
	expect_server_error(&c, key_enc, "cannot load private key");
	/* A certificate where the key should be. */
	c = server_conf();
	c.tls_key = cert_a;
	expect_server_error(&c, cert_a, "cannot load private key");
	/* One file holding both certificate and key is fine. */
	c = server_conf();
	c.tls_cert = combined;
	c.tls_key = combined;
	tls_ctx_unref(server_ctx(&c));
}
END_TEST

START_TEST(test_bad_settings)
{
	struct conf c = server_conf();

	c.tls_min_protocol = "TLSv1.1";
	expect_server_error(&c, "min_protocol", "TLSv1.1");
	c = server_conf();
	c.tls_ciphers = "NO-SUCH-CIPHER";
	expect_server_error(&c, "[tls] ciphers", "NO-SUCH-CIPHER");
	c = server_conf();
	c.tls_ciphersuites = "TLS_NO_SUCH_SUITE";
	expect_server_error(&c, "[tls] ciphersuites", "TLS_NO_SUCH_SUITE");
}
END_TEST

START_TEST(test_tls11_refused)
{
	struct conf c = server_conf();
	SSL_CTX *old = plain_client(TLS1_1_VERSION, TLS1_1_VERSION, "ALL:@SECLEVEL=0");
	char desc[128];
	struct hs r;

	r = hs_with(old, &c, desc, sizeof(desc));
	ck_assert(!r.ok);
	/* The server read the ClientHello and refused its version. */
	ck_assert_int_eq(ERR_GET_REASON(r.server_err), SSL_R_UNSUPPORTED_PROTOCOL);
	ck_assert_int_eq(ERR_GET_REASON(r.client_err), SSL_R_TLSV1_ALERT_PROTOCOL_VERSION);
	SSL_CTX_free(old);

	/* TLS 1.0 and SSL 3 likewise. */
	old = plain_client(TLS1_VERSION, TLS1_VERSION, "ALL:@SECLEVEL=0");
	r = hs_with(old, &c, desc, sizeof(desc));
	ck_assert(!r.ok);
	ck_assert_int_eq(ERR_GET_REASON(r.server_err), SSL_R_UNSUPPORTED_PROTOCOL);
	SSL_CTX_free(old);

	/* The same permissive client is let in once it may speak 1.2. */
	old = plain_client(TLS1_1_VERSION, TLS1_2_VERSION, "ALL:@SECLEVEL=0");
	r = hs_with(old, &c, desc, sizeof(desc));
	ck_assert(r.ok);
	ck_assert_str_eq(desc, "TLSv1.2 ECDHE-ECDSA-AES256-GCM-SHA384 256/256");
	SSL_CTX_free(old);
}
END_TEST

START_TEST(test_tls12_refused_at_min13)
{
	struct conf c = server_conf();
	SSL_CTX *cctx = plain_client(TLS1_2_VERSION, TLS1_2_VERSION, NULL);
	char desc[128];
	struct hs r;

	c.tls_min_protocol = "TLSv1.3";
	r = hs_with(cctx, &c, desc, sizeof(desc));
	ck_assert(!r.ok);
	ck_assert_int_eq(ERR_GET_REASON(r.server_err), SSL_R_UNSUPPORTED_PROTOCOL);
	SSL_CTX_free(cctx);
}
END_TEST

START_TEST(test_tls13_handshake)
{
	struct conf c = server_conf();
	SSL_CTX *sctx = server_ctx(&c);
	SSL_CTX *cctx = plain_client(TLS1_2_VERSION, TLS1_3_VERSION, NULL);
	SSL *client = SSL_new(cctx), *server = tls_server_ssl_new(sctx);
	char desc[128];
	struct hs r;

	/* Before the handshake there is nothing to describe. */
	tls_describe(server, desc, sizeof(desc));
	ck_assert_str_eq(desc, "none");
	ck_assert_str_eq(tls_version(server), "none");
	ck_assert_str_eq(tls_cipher(server), "none");
	ck_assert_str_eq(tls_version(NULL), "none");

	SSL_set_connect_state(client);
	r = handshake(client, server);
	ck_assert_msg(r.ok, "client %lx server %lx", r.client_err, r.server_err);
	roundtrip(client, server);
	tls_describe(server, desc, sizeof(desc));
	ck_assert_str_eq(desc, "TLSv1.3 TLS_AES_256_GCM_SHA384 256/256");
	ck_assert_str_eq(tls_version(server), "TLSv1.3");
	ck_assert_str_eq(tls_cipher(server), "TLS_AES_256_GCM_SHA384");
	tls_describe(client, desc, sizeof(desc));
	ck_assert_str_eq(desc, "TLSv1.3 TLS_AES_256_GCM_SHA384 256/256");
	/* No compression either side (CRIME). */
	ck_assert_ptr_null(SSL_get_current_compression(server));
	ck_assert_ptr_null(SSL_get_current_compression(client));
	ck_assert_ptr_null(SSL_get_current_expansion(server));
	/* The key exchange used X25519, our first group. */
	ck_assert_int_eq(SSL_get_negotiated_group(server), NID_X25519);

	/* A short buffer truncates, NUL-terminated. */
	tls_describe(server, desc, 8);
	ck_assert_str_eq(desc, "TLSv1.3");

	SSL_free(client);
	SSL_free(server);
	SSL_CTX_free(cctx);
	tls_ctx_unref(sctx);
}
END_TEST

START_TEST(test_tls12_ciphers)
{
	struct conf c = server_conf();
	SSL_CTX *cctx;
	char desc[128];
	struct hs r;

	/* Default list: ECDHE + AEAD only; CBC and static-RSA ciphers are refused. */
	cctx = plain_client(TLS1_2_VERSION, TLS1_2_VERSION,
	    "ECDHE-ECDSA-AES128-SHA:ECDHE-ECDSA-AES256-SHA384:AES128-GCM-SHA256");
	r = hs_with(cctx, &c, desc, sizeof(desc));
	ck_assert(!r.ok);
	ck_assert_int_eq(ERR_GET_REASON(r.server_err), SSL_R_NO_SHARED_CIPHER);

	/* ... unless [tls] ciphers says otherwise. */
	c.tls_ciphers = "ECDHE-ECDSA-AES128-SHA";
	r = hs_with(cctx, &c, desc, sizeof(desc));
	ck_assert(r.ok);
	ck_assert_str_eq(desc, "TLSv1.2 ECDHE-ECDSA-AES128-SHA 128/128");
	SSL_CTX_free(cctx);

	/* The server's order wins over the client's ... */
	c = server_conf();
	cctx = plain_client(TLS1_2_VERSION, TLS1_2_VERSION,
	    "ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-ECDSA-AES256-GCM-SHA384");
	r = hs_with(cctx, &c, desc, sizeof(desc));
	ck_assert(r.ok);
	ck_assert_str_eq(desc, "TLSv1.2 ECDHE-ECDSA-AES256-GCM-SHA384 256/256");
	SSL_CTX_free(cctx);

	/* ... except that a client putting ChaCha20 first gets it. */
	cctx = plain_client(TLS1_2_VERSION, TLS1_2_VERSION,
	    "ECDHE-ECDSA-CHACHA20-POLY1305:ECDHE-ECDSA-AES256-GCM-SHA384");
	r = hs_with(cctx, &c, desc, sizeof(desc));
	ck_assert(r.ok);
	ck_assert_str_eq(desc, "TLSv1.2 ECDHE-ECDSA-CHACHA20-POLY1305 256/256");
	SSL_CTX_free(cctx);
}
END_TEST

START_TEST(test_tls13_ciphersuites)
{
	struct conf c = server_conf();
	SSL_CTX *cctx = plain_client(TLS1_3_VERSION, TLS1_3_VERSION, NULL);
	char desc[128];
	struct hs r;

	c.tls_ciphersuites = "TLS_AES_128_GCM_SHA256";
	r = hs_with(cctx, &c, desc, sizeof(desc));
	ck_assert(r.ok);
	ck_assert_str_eq(desc, "TLSv1.3 TLS_AES_128_GCM_SHA256 128/128");
	SSL_CTX_free(cctx);
}
END_TEST

/* client_hs - a tls.c client (conf c, name, verify) against a server from set A */
static struct hs
client_hs(const struct conf *c, const char *name, bool verify, long *verify_r,
    char *sni, size_t snisize)
{
	struct conf sc = server_conf();
	SSL_CTX *sctx = server_ctx(&sc), *cctx;
	SSL *client, *server;
	const char *sn;
	char *err = NULL;
	struct hs r;

	cctx = tls_client_ctx_new(c, &err);
	ck_assert_msg(cctx != NULL, "tls_client_ctx_new: %s", err ? err : "?");
	client = tls_client_ssl_new(cctx, name, verify);
	server = tls_server_ssl_new(sctx);
	r = handshake(client, server);
	*verify_r = SSL_get_verify_result(client);
	if (r.ok) {
		roundtrip(client, server);
		ck_assert_str_eq(tls_version(client), "TLSv1.3");
	}
	sn = SSL_get_servername(server, TLSEXT_NAMETYPE_host_name);
	if (sni != NULL)
		str_copy(sni, sn != NULL ? sn : "", snisize);
	SSL_free(client);
	SSL_free(server);
	tls_ctx_unref(cctx);
	tls_ctx_unref(sctx);
	return r;
}

START_TEST(test_client_verify)
{
	struct conf c;
	char sni[256];
	long v;
	struct hs r;

	memset(&c, 0, sizeof(c));
	c.relay_tls = RELAY_TLS_REQUIRED;
	c.relay_tls_ca = ca_a;
	ck_assert(tls_client_verify(&c));

	/* The right CA and name. */
	r = client_hs(&c, CN, true, &v, sni, sizeof(sni));
	ck_assert_msg(r.ok, "client %lx server %lx", r.client_err, r.server_err);
	ck_assert_int_eq(v, X509_V_OK);
	ck_assert_str_eq(sni, CN);

	/* An IP address SAN; no SNI for an address (RFC 6066). */
	r = client_hs(&c, "127.0.0.1", true, &v, sni, sizeof(sni));
	ck_assert(r.ok);
	ck_assert_str_eq(sni, "");

	/* A wrong name. */
	r = client_hs(&c, "other.example.test", true, &v, NULL, 0);
	ck_assert(!r.ok);
	ck_assert_int_eq(v, X509_V_ERR_HOSTNAME_MISMATCH);
	ck_assert_int_eq(ERR_GET_REASON(r.client_err), SSL_R_CERTIFICATE_VERIFY_FAILED);
	r = client_hs(&c, "127.0.0.2", true, &v, NULL, 0);
	ck_assert(!r.ok);
	ck_assert_int_eq(v, X509_V_ERR_IP_ADDRESS_MISMATCH);
	/* A partial wildcard or a suffix is not the name. */
	r = client_hs(&c, "example.test", true, &v, NULL, 0);
	ck_assert(!r.ok);

	/* Another CA. */
	c.relay_tls_ca = ca_b;
	r = client_hs(&c, CN, true, &v, NULL, 0);
	ck_assert(!r.ok);
	ck_assert_int_eq(v, X509_V_ERR_UNABLE_TO_GET_ISSUER_CERT_LOCALLY);

	/* No CA: the system store does not know the test CA. */
	c.relay_tls_ca = NULL;
	r = client_hs(&c, CN, true, &v, NULL, 0);
	ck_assert(!r.ok);
	ck_assert_int_eq(v, X509_V_ERR_UNABLE_TO_GET_ISSUER_CERT_LOCALLY);
}
END_TEST

START_TEST(test_client_opportunistic)
{
	struct conf c;
	long v;
	struct hs r;

	memset(&c, 0, sizeof(c));
	c.relay_tls = RELAY_TLS_OPPORTUNISTIC;
	ck_assert(!tls_client_verify(&c));
	c.relay_tls_verify = true;
	ck_assert(tls_client_verify(&c));
	c.relay_tls_verify = false;

	/* Without verification any certificate will do. */
	r = client_hs(&c, "other.example.test", false, &v, NULL, 0);
	ck_assert(r.ok);
	ck_assert_int_ne(v, X509_V_OK);
	r = client_hs(&c, NULL, false, &v, NULL, 0);
	ck_assert(r.ok);
	/* With a CA but no verification, the result still says whether the chain verified. */
	c.relay_tls_ca = ca_a;
	r = client_hs(&c, "other.example.test", false, &v, NULL, 0);
	ck_assert(r.ok);
	ck_assert_int_eq(v, X509_V_OK);
}
END_TEST

START_TEST(test_client_ctx_errors)
{
	struct conf c;
	char *err = NULL;
	SSL_CTX *ctx;

	memset(&c, 0, sizeof(c));
	c.relay_tls = RELAY_TLS_REQUIRED;
	c.relay_tls_ca = missing;
	ctx = tls_client_ctx_new(&c, &err);
	ck_assert_ptr_null(ctx);
	ck_assert_ptr_nonnull(err);
	ck_assert_msg(strstr(err, missing) != NULL, "%s", err);
	free(err);

	c.relay_tls_ca = junk;
	err = NULL;
	ctx = tls_client_ctx_new(&c, &err);
	ck_assert_ptr_null(ctx);
	ck_assert_msg(err != NULL && strstr(err, junk) != NULL, "%s", err ? err : "?");
	free(err);

	c.relay_tls_ca = ca_a;
	err = NULL;
	ctx = tls_client_ctx_new(&c, &err);
	ck_assert_ptr_nonnull(ctx);
	ck_assert_ptr_null(err);
	ck_assert_int_eq(SSL_CTX_get_min_proto_version(ctx), TLS1_2_VERSION);
	ck_assert(SSL_CTX_get_options(ctx) & SSL_OP_NO_COMPRESSION);
	tls_ctx_unref(ctx);
}
END_TEST

/*
 * first_session - a full handshake; the client's session.  The client always
 * ends with close_notify (else its own OpenSSL will not offer the session
 * again); the server only when clean, as after QUIT.
 */
static SSL_SESSION *
first_session(SSL_CTX *sctx, SSL_CTX *cctx, bool clean)
{
	SSL *client = SSL_new(cctx), *server = tls_server_ssl_new(sctx);
	SSL_SESSION *sess;
	struct hs r;

	SSL_set_connect_state(client);
	r = handshake(client, server);
	ck_assert(r.ok);
	ck_assert(!SSL_session_reused(client));
	roundtrip(client, server);	/* the client reads the TLS 1.3 ticket here */
	sess = SSL_get1_session(client);
	SSL_shutdown(client);
	if (clean)
		SSL_shutdown(server);
	SSL_free(client);
	SSL_free(server);
	return sess;
}

/* resumed - a handshake offering sess: was it resumed?  The new session goes to *next_r */
static bool
resumed(SSL_CTX *sctx, SSL_CTX *cctx, SSL_SESSION *sess, SSL_SESSION **next_r)
{
	SSL *client = SSL_new(cctx), *server = tls_server_ssl_new(sctx);
	bool reused;
	struct hs r;

	SSL_set_connect_state(client);
	ck_assert(SSL_set_session(client, sess));
	r = handshake(client, server);
	ck_assert(r.ok);
	roundtrip(client, server);
	reused = SSL_session_reused(client) && SSL_session_reused(server);
	if (next_r != NULL)
		*next_r = SSL_get1_session(client);
	SSL_shutdown(client);	/* else the client marks sess not resumable */
	SSL_free(client);
	SSL_free(server);
	return reused;
}

/* A resumption run in a thread of its own, as in another event loop. */
struct resume_job {
	SSL_CTX *sctx, *cctx;
	SSL_SESSION *sess;
	bool reused;
};

/* resume_thread - resumed() in another thread */
static void *
resume_thread(void *arg)
{
	struct resume_job *j = arg;

	j->reused = resumed(j->sctx, j->cctx, j->sess, NULL);
	return NULL;
}

/* resumed_elsewhere - resumed(), from a second thread sharing the server context */
static bool
resumed_elsewhere(SSL_CTX *sctx, SSL_CTX *cctx, SSL_SESSION *sess)
{
	struct resume_job j = { sctx, cctx, sess, false };
	pthread_t th;

	ck_assert_int_eq(pthread_create(&th, NULL, resume_thread, &j), 0);
	ck_assert_int_eq(pthread_join(th, NULL), 0);
	return j.reused;
}

/*
 * Resumption by session ticket however the last session ended, in any
 * thread; by session id from the cache for a client without tickets, only
 * after close_notify (OpenSSL's rule; the session sends it after QUIT).
 */
START_TEST(test_session_resumption)
{
	static const int versions[] = { TLS1_2_VERSION, TLS1_3_VERSION };
	struct conf c = server_conf();
	SSL_CTX *sctx, *cctx;
	SSL_SESSION *sess;
	size_t i;

	for (i = 0; i < ARRAY_SIZE(versions); i++) {
		sctx = server_ctx(&c);
		cctx = plain_client(TLS1_2_VERSION, versions[i], NULL);
		sess = first_session(sctx, cctx, true);
		ck_assert_int_eq(SSL_SESSION_get_protocol_version(sess), versions[i]);
		ck_assert(SSL_SESSION_has_ticket(sess));
		ck_assert(resumed(sctx, cctx, sess, NULL));
		SSL_SESSION_free(sess);

		/* No close_notify from the server (a client that left without QUIT): the
		 * ticket still resumes. */
		sess = first_session(sctx, cctx, false);
		ck_assert(resumed(sctx, cctx, sess, NULL));
		ck_assert(resumed_elsewhere(sctx, cctx, sess));
		SSL_SESSION_free(sess);
		SSL_CTX_free(cctx);
		tls_ctx_unref(sctx);
	}

	/* TLS 1.2 without tickets: a session id into the cache. */
	sctx = server_ctx(&c);
	cctx = plain_client(TLS1_2_VERSION, TLS1_2_VERSION, NULL);
	SSL_CTX_set_options(cctx, SSL_OP_NO_TICKET);
	sess = first_session(sctx, cctx, true);
	ck_assert(!SSL_SESSION_has_ticket(sess));
	ck_assert_int_eq(SSL_CTX_sess_number(sctx), 1);
	ck_assert(resumed_elsewhere(sctx, cctx, sess));
	/* that one ended without close_notify from the server: gone from the cache */
	ck_assert(!resumed(sctx, cctx, sess, NULL));
	SSL_SESSION_free(sess);
	sess = first_session(sctx, cctx, false);
	ck_assert(!resumed(sctx, cctx, sess, NULL));
	SSL_SESSION_free(sess);
	SSL_CTX_free(cctx);
	tls_ctx_unref(sctx);

	/* A new context (SIGHUP) knows neither the old one's sessions nor its ticket keys. */
	sctx = server_ctx(&c);
	cctx = plain_client(TLS1_2_VERSION, TLS1_3_VERSION, NULL);
	sess = first_session(sctx, cctx, true);
	tls_ctx_unref(sctx);
	sctx = server_ctx(&c);
	ck_assert(!resumed(sctx, cctx, sess, NULL));
	SSL_SESSION_free(sess);
	SSL_CTX_free(cctx);
	tls_ctx_unref(sctx);
}
END_TEST

/*
 * A ticket key encrypts for TLS_SESSION_TIMEOUT seconds, then still opens
 * its tickets (and the server renews them) for as long again, then is gone.
 */
START_TEST(test_ticket_key_rotation)
{
	static const int versions[] = { TLS1_2_VERSION, TLS1_3_VERSION };
	struct conf c = server_conf();
	SSL_SESSION *sess, *renewed, *later;
	SSL_CTX *sctx, *cctx;
	size_t i;

	for (i = 0; i < ARRAY_SIZE(versions); i++) {
		sctx = server_ctx(&c);
		tls_tickets_skip(sctx, 0);	/* its clock moves by skips only */
		cctx = plain_client(TLS1_2_VERSION, versions[i], NULL);
		sess = first_session(sctx, cctx, false);
		tls_tickets_skip(sctx, TLS_SESSION_TIMEOUT - 1);
		ck_assert(resumed(sctx, cctx, sess, NULL));
		tls_tickets_skip(sctx, 1);		/* its key now only decrypts */
		ck_assert(resumed(sctx, cctx, sess, &renewed));
		ck_assert(SSL_SESSION_has_ticket(renewed));
		tls_tickets_skip(sctx, TLS_SESSION_TIMEOUT - 1);
		ck_assert(resumed(sctx, cctx, sess, NULL));
		tls_tickets_skip(sctx, 1);		/* its key is erased */
		ck_assert(!resumed(sctx, cctx, sess, &later));
		/* the ticket renewed under the next key still opens */
		ck_assert(resumed(sctx, cctx, renewed, NULL));
		/* and so does the one from the full handshake just now */
		ck_assert(resumed(sctx, cctx, later, NULL));
		SSL_SESSION_free(sess);
		SSL_SESSION_free(renewed);
		SSL_SESSION_free(later);
		tls_ctx_unref(sctx);

		/* The same ages with no handshake between: the key retires and dies late. */
		sctx = server_ctx(&c);
		tls_tickets_skip(sctx, 0);
		sess = first_session(sctx, cctx, false);
		tls_tickets_skip(sctx, 2 * TLS_SESSION_TIMEOUT - 1);
		ck_assert(resumed(sctx, cctx, sess, NULL));
		SSL_SESSION_free(sess);
		tls_ctx_unref(sctx);
		sctx = server_ctx(&c);
		sess = first_session(sctx, cctx, false);
		tls_tickets_skip(sctx, 2 * TLS_SESSION_TIMEOUT);
		ck_assert(!resumed(sctx, cctx, sess, NULL));
		SSL_SESSION_free(sess);
		SSL_CTX_free(cctx);
		tls_ctx_unref(sctx);
	}
}
END_TEST

/* A SIGHUP swap: the owner drops the old context while a session still uses it. */
START_TEST(test_ctx_outlives_owner)
{
	struct conf c = server_conf();
	SSL_CTX *sctx = server_ctx(&c), *cctx;
	SSL *client, *server;
	struct hs r;

	ck_assert_ptr_eq(tls_ctx_ref(sctx), sctx);
	server = tls_server_ssl_new(sctx);
	tls_ctx_unref(sctx);
	tls_ctx_unref(sctx);	/* the owner's reference: now only the SSL holds it */
	cctx = plain_client(TLS1_2_VERSION, TLS1_3_VERSION, NULL);
	client = SSL_new(cctx);
	SSL_set_connect_state(client);
	r = handshake(client, server);
	ck_assert(r.ok);
	roundtrip(client, server);
	SSL_free(client);
	SSL_free(server);	/* frees the context: ASan reports a leak or a double free */
	SSL_CTX_free(cctx);
	tls_ctx_unref(NULL);
}
END_TEST

START_TEST(test_errors_text)
{
	char buf[64];

	ERR_clear_error();
	tls_errors(buf, sizeof(buf));
	ck_assert_str_eq(buf, "unknown error");
	ERR_raise(ERR_LIB_SSL, SSL_R_NO_SHARED_CIPHER);
	ERR_raise(ERR_LIB_SSL, SSL_R_NO_SHARED_CIPHER);
	ERR_raise(ERR_LIB_SSL, SSL_R_UNSUPPORTED_PROTOCOL);
	tls_errors(buf, sizeof(buf));
	ck_assert_str_eq(buf, "no shared cipher: unsupported protocol");
	ck_assert_int_eq(ERR_peek_error(), 0);
	/* Too long for the buffer: truncated, and the queue still drained. */
	ERR_raise(ERR_LIB_SSL, SSL_R_NO_SHARED_CIPHER);
	ERR_raise(ERR_LIB_SSL, SSL_R_UNSUPPORTED_PROTOCOL);
	tls_errors(buf, 20);
	ck_assert_int_eq(strlen(buf), 19);
	ck_assert_int_eq(ERR_peek_error(), 0);
	/* A system error is strerror's text; layer markers and repeats are dropped. */
	ERR_raise_data(ERR_LIB_SYS, ENOENT, "calling fopen(%s, r)", "/x");
	ERR_raise(ERR_LIB_BIO, BIO_R_NO_SUCH_FILE);
	ERR_raise(ERR_LIB_SSL, ERR_R_SYS_LIB);
	tls_errors(buf, sizeof(buf));
	ck_assert_str_eq(buf, "No such file or directory");
	/* A marker alone is better than nothing. */
	ERR_raise(ERR_LIB_SSL, ERR_R_PEM_LIB);
	tls_errors(buf, sizeof(buf));
	ck_assert_str_eq(buf, "PEM lib");
}
END_TEST

/* State for the libevent test; one per run. */
struct ev_run {
	struct event_base *base;
	char server_desc[128];
	char client_desc[128];
	char line[128];
	bool client_error;
};

/* ev_server_event - on connect, greet like an implicit-TLS listener */
static void
ev_server_event(struct bufferevent *bev, short what, void *arg)
{
	struct ev_run *run = arg;

	if (what & BEV_EVENT_CONNECTED) {
		tls_describe(bufferevent_openssl_get_ssl(bev), run->server_desc,
		    sizeof(run->server_desc));
		bufferevent_write(bev, GREETING, sizeof(GREETING) - 1);
	} else if (what & (BEV_EVENT_ERROR | BEV_EVENT_EOF)) {
		event_base_loopbreak(run->base);
	}
}

/* ev_client_read - the greeting arrived: done */
static void
ev_client_read(struct bufferevent *bev, void *arg)
{
	struct ev_run *run = arg;
	char *line;

	if ((line = evbuffer_readln(bufferevent_get_input(bev), NULL, EVBUFFER_EOL_CRLF_STRICT)) == NULL)
		return;
	str_copy(run->line, line, sizeof(run->line));
	free(line);
	tls_describe(bufferevent_openssl_get_ssl(bev), run->client_desc, sizeof(run->client_desc));
	event_base_loopbreak(run->base);
}

/* ev_client_event - a failed handshake ends the run */
static void
ev_client_event(struct bufferevent *bev, short what, void *arg)
{
	struct ev_run *run = arg;

	if (what & (BEV_EVENT_ERROR | BEV_EVENT_EOF)) {
		run->client_error = true;
		event_base_loopbreak(run->base);
	}
}

START_TEST(test_bufferevent_openssl)
{
	struct conf sc = server_conf(), cc;
	struct timeval limit = { 5, 0 };
	struct bufferevent *sbev, *cbev;
	struct ev_run run;
	SSL_CTX *sctx, *cctx;
	char *err = NULL;
	int sv[2];

	memset(&run, 0, sizeof(run));
	memset(&cc, 0, sizeof(cc));
	cc.relay_tls = RELAY_TLS_REQUIRED;
	cc.relay_tls_ca = ca_a;
	sctx = server_ctx(&sc);
	cctx = tls_client_ctx_new(&cc, &err);
	ck_assert_ptr_nonnull(cctx);
	ck_assert_int_eq(socketpair(AF_UNIX, SOCK_STREAM, 0, sv), 0);
	ck_assert_int_eq(evutil_make_socket_nonblocking(sv[0]), 0);
	ck_assert_int_eq(evutil_make_socket_nonblocking(sv[1]), 0);
	run.base = event_base_new();
	ck_assert_ptr_nonnull(run.base);
	sbev = bufferevent_openssl_socket_new(run.base, sv[0], tls_server_ssl_new(sctx),
	    BUFFEREVENT_SSL_ACCEPTING, BEV_OPT_CLOSE_ON_FREE);
	cbev = bufferevent_openssl_socket_new(run.base, sv[1],
	    tls_client_ssl_new(cctx, CN, tls_client_verify(&cc)),
	    BUFFEREVENT_SSL_CONNECTING, BEV_OPT_CLOSE_ON_FREE);
	ck_assert(sbev != NULL && cbev != NULL);
	/* Contexts are only held by the sessions from here on. */
	tls_ctx_unref(sctx);
	tls_ctx_unref(cctx);
	bufferevent_setcb(sbev, NULL, NULL, ev_server_event, &run);
	bufferevent_setcb(cbev, ev_client_read, NULL, ev_client_event, &run);
	bufferevent_enable(sbev, EV_READ | EV_WRITE);
	bufferevent_enable(cbev, EV_READ | EV_WRITE);
	event_base_loopexit(run.base, &limit);
	event_base_dispatch(run.base);

	ck_assert(!run.client_error);
	ck_assert_str_eq(run.line, "220 " CN " ESMTP");
	ck_assert_str_eq(run.server_desc, "TLSv1.3 TLS_AES_256_GCM_SHA384 256/256");
	ck_assert_str_eq(run.client_desc, "TLSv1.3 TLS_AES_256_GCM_SHA384 256/256");
	bufferevent_free(sbev);
	bufferevent_free(cbev);
	event_base_free(run.base);
}
END_TEST

/* script_path - tests/gen-test-cert.sh from $srcdir (set by make check), else from __FILE__ */
static char *
script_path(void)
{
	const char *srcdir = getenv("srcdir"), *file = __FILE__;
	const char *tail = "tests/unit/check_tls.c";
	size_t flen = strlen(file), tlen = strlen(tail);

	if (srcdir != NULL && *srcdir != '\0')
		return xasprintf("%s/tests/gen-test-cert.sh", srcdir);
	if (flen >= tlen && strcmp(&file[flen - tlen], tail) == 0)
		return xasprintf("%.*stests/gen-test-cert.sh", (int)(flen - tlen), file);
	return xstrdup("tests/gen-test-cert.sh");
}

/* setpath - dst = tmpdir/rel */
static void
setpath(char *dst, size_t size, const char *rel)
{
	if (snprintf(dst, size, "%s/%s", tmpdir, rel) >= (int)size)
		fatal("path too long: %s/%s", tmpdir, rel);
}

/* run_cmd - system(cmd) or exit the test program */
static void
run_cmd(const char *cmd)
{
	if (system(cmd) != 0)
		fatal("setup failed: %s", cmd);
}

/* make_certs - two certificate sets, an encrypted key and a junk file */
static void
make_certs(void)
{
	const char *t = getenv("TMPDIR");
	char *script, *cmd;
	FILE *f;

	snprintf(tmpdir, sizeof(tmpdir), "%s/check_tls.XXXXXX", t != NULL && *t != '\0' ? t : "/tmp");
	if (mkdtemp(tmpdir) == NULL)
		fatal("mkdtemp %s failed", tmpdir);
	script = script_path();
	cmd = xasprintf("sh '%s' '%s/a' " CN " && sh '%s' '%s/b' other.example.test",
	    script, tmpdir, script, tmpdir);
	run_cmd(cmd);
	free(cmd);
	free(script);
	setpath(ca_a, sizeof(ca_a), "a/ca.pem");
	setpath(cert_a, sizeof(cert_a), "a/cert.pem");
	setpath(key_a, sizeof(key_a), "a/key.pem");
	setpath(ca_b, sizeof(ca_b), "b/ca.pem");
	setpath(cert_b, sizeof(cert_b), "b/cert.pem");
	setpath(key_b, sizeof(key_b), "b/key.pem");
	setpath(key_enc, sizeof(key_enc), "key-enc.pem");
	setpath(junk, sizeof(junk), "junk.pem");
	setpath(missing, sizeof(missing), "no/such/file.pem");
	setpath(combined, sizeof(combined), "combined.pem");
	cmd = xasprintf("openssl pkey -in '%s' -aes256 -passout pass:secret -out '%s' && "
	    "cat '%s' '%s' >'%s'", key_a, key_enc, cert_a, key_a, combined);
	run_cmd(cmd);
	free(cmd);
	if ((f = fopen(junk, "w")) == NULL)
		fatal("cannot create %s", junk);
	fputs("-----BEGIN CERTIFICATE-----\nnot base64 at all\n-----END CERTIFICATE-----\n", f);
	fclose(f);
}

/* remove_certs - rm -rf the temp directory */
static void
remove_certs(void)
{
	char *cmd = xasprintf("rm -rf '%s'", tmpdir);

	if (system(cmd) != 0)
		fprintf(stderr, "check_tls: could not remove %s\n", tmpdir);
	free(cmd);
}

/* tls_suite - all cases */
static Suite *
tls_suite(void)
{
	Suite *s = suite_create("tls");
	TCase *tc = tcase_create("server");

	tcase_add_test(tc, test_server_ctx_loads);
	tcase_add_test(tc, test_wrong_key);
	tcase_add_test(tc, test_missing_files);
	tcase_add_test(tc, test_bad_files);
	tcase_add_test(tc, test_bad_settings);
	tcase_add_test(tc, test_tls11_refused);
	tcase_add_test(tc, test_tls12_refused_at_min13);
	tcase_add_test(tc, test_tls13_handshake);
	tcase_add_test(tc, test_tls12_ciphers);
	tcase_add_test(tc, test_tls13_ciphersuites);
	tcase_add_test(tc, test_session_resumption);
	tcase_add_test(tc, test_ticket_key_rotation);
	tcase_add_test(tc, test_ctx_outlives_owner);
	tcase_add_test(tc, test_errors_text);
	suite_add_tcase(s, tc);

	tc = tcase_create("client");
	tcase_add_test(tc, test_client_verify);
	tcase_add_test(tc, test_client_opportunistic);
	tcase_add_test(tc, test_client_ctx_errors);
	suite_add_tcase(s, tc);

	tc = tcase_create("libevent");
	tcase_add_test(tc, test_bufferevent_openssl);
	suite_add_tcase(s, tc);
	return s;
}

int
main(void)
{
	int rc;

	make_certs();
	rc = unit_run(tls_suite());
	remove_certs();
	return rc;
}
