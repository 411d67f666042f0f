/*
 * tls.h - OpenSSL contexts for portier: the server side (STARTTLS, RFC 3207;
 * implicit TLS, RFC 8314) and the client side towards the backend, plus
 * the one-line descriptions that go into Received: and the logs.
 *
 * Never touches a socket or the event loop: callers hand the SSL objects made
 * here to bufferevent_openssl.  Never logs and never exits on a bad
 * configuration; errors come back as text naming the file and OpenSSL's reason.
 * Never prompts for a passphrase (an encrypted key is an error).
 *
 * Ownership: a context returned here holds one reference, released with
 * tls_ctx_unref (SSL_CTX_free).  Every SSL made from it holds its own
 * reference, so on SIGHUP the owner builds a new context from the new
 * configuration, swaps it in for new sessions and drops its reference to the
 * old one; live sessions keep the old one until they end.  *err_r strings are
 * malloc'd and freed by the caller.  Strings from tls_version/tls_cipher
 * belong to OpenSSL and live as long as the process.
 */
#ifndef PORTIER_TLS_H
#define PORTIER_TLS_H

#include <stdbool.h>
#include <stddef.h>
#include <openssl/ssl.h>

struct conf;

/* Default TLS <= 1.2 cipher list: forward secret and AEAD only ([tls] ciphers overrides). */
#define TLS_DEFAULT_CIPHERS "ECDHE+AESGCM:ECDHE+CHACHA20"
/* Key exchange groups offered and accepted, in order of preference. */
#define TLS_GROUPS "X25519:P-256:P-384"
/* Seconds a session may be resumed; also how long a ticket key encrypts (see tls.c). */
#define TLS_SESSION_TIMEOUT 300

/* tls_server_ctx_new - context for listeners from [tls]; NULL and *err_r on error. */
SSL_CTX *tls_server_ctx_new(const struct conf *conf, char **err_r);
/*
 * tls_server_ssl_new - one server-side connection (accept state); never NULL.
 * End a session that closed cleanly (QUIT) with SSL_shutdown before freeing
 * it: OpenSSL drops a session freed without close_notify from the cache, and
 * a client without session tickets cannot resume it.
 */
SSL *tls_server_ssl_new(SSL_CTX *ctx);
/*
 * tls_tickets_skip - for tests: age the session ticket keys of a server ctx
 * by seconds; the first call stops its ticket clock (skip 0 to stop it).
 */
void tls_tickets_skip(SSL_CTX *ctx, unsigned seconds);

/* tls_client_ctx_new - context for backend connections from [backend]; NULL and *err_r on error. */
SSL_CTX *tls_client_ctx_new(const struct conf *conf, char **err_r);
/* tls_client_verify - whether conf asks to verify the backend (relay_tls_verify or required). */
bool tls_client_verify(const struct conf *conf);
/*
 * tls_client_ssl_new - one client connection (connect state); never NULL.
 * name: sent as SNI unless an IP literal; with verify, the peer's certificate
 * must be valid for it (DNS name or IP address SAN; no partial wildcards) and
 * chain to the context's trust anchors, or the handshake fails.  Without verify
 * the handshake goes on whatever the certificate (opportunistic TLS);
 * SSL_get_verify_result then tells only whether the chain verified.  name
 * NULL or "": no SNI, and verify checks the chain only.
 */
SSL *tls_client_ssl_new(SSL_CTX *ctx, const char *name, bool verify);

/* tls_ctx_ref - one more reference to ctx; returns ctx. */
SSL_CTX *tls_ctx_ref(SSL_CTX *ctx);
/* tls_ctx_unref - drop a reference (NULL is fine). */
void tls_ctx_unref(SSL_CTX *ctx);

/* tls_describe - "TLSv1.3 TLS_AES_256_GCM_SHA384 256/256" (protocol, cipher, bits/algorithm bits), or "none". */
void tls_describe(SSL *ssl, char *buf, size_t size);
/* tls_version - negotiated protocol ("TLSv1.3"), or "none" before the handshake. */
const char *tls_version(SSL *ssl);
/* tls_cipher - negotiated cipher ("TLS_AES_256_GCM_SHA384"), or "none". */
const char *tls_cipher(SSL *ssl);
/* tls_errors - drain this thread's OpenSSL error queue into buf as "reason: reason"; "unknown error" if empty. */
void tls_errors(char *buf, size_t size);

#endif
