/*
 * auth.h - SMTP AUTH (RFC 4954): the SASL server side of PLAIN and LOGIN,
 * and credential verification against a passwd-file or a Dovecot auth
 * service.
 *
 * The SASL half is pure: no I/O, no clock, no logging; the caller turns
 * each status into a reply (the table below).  The verification half
 * BLOCKS (password hashing, a socket to Dovecot): call auth_verify only
 * from a worker thread, never from an event loop.  A backend is immutable
 * once built and may be shared by any number of threads.
 *
 * Never logs or returns in an error text any AUTH data (user names in
 * SASL exchanges, passwords, base64 responses).  Passwords are wiped with
 * OPENSSL_cleanse before their memory is freed.
 *
 * Ownership: struct auth_sasl and struct auth_backend belong to their
 * creator and are released with auth_sasl_free / auth_backend_free; the
 * strings auth_sasl_* return belong to the exchange; challenge_r strings
 * are static; every err_r string is the caller's to free().
 */
#ifndef PORTIER_AUTH_H
#define PORTIER_AUTH_H

#include <stdbool.h>
#include <stddef.h>

struct conf;

/* The caller's limit on one AUTH exchange line, RFC 4954 4 (then 500 5.5.6). */
#define AUTH_MAX_LINE		12288
/* Decoded authzid, user name and password: at most this many octets each. */
#define AUTH_MAX_FIELD		255
/* What EHLO advertises: "250-AUTH " AUTH_MECHS_EHLO. */
#define AUTH_MECHS_EHLO		"PLAIN LOGIN"
/* Seconds auth_verify waits for Dovecot: connect plus the whole exchange. */
#define AUTH_DOVECOT_TIMEOUT	10

enum auth_mech {
	AUTH_MECH_PLAIN,	/* RFC 4616 */
	AUTH_MECH_LOGIN,	/* draft-murchison-sasl-login */
};

/*
 * What one step of an exchange asks of the caller:
 *   CHALLENGE    send "334 " + challenge (possibly empty), read one more line
 *   DONE         credentials ready: auth_sasl_user/password, then auth_verify
 *   REFUSED      well-formed but can never succeed (empty user or password,
 *                authzid other than the user): 535 5.7.8, counts as a failed AUTH
 *   CANCEL       the client sent "*": 501 5.0.0
 *   BAD_BASE64   not base64 (bad character, length, padding): 501 5.5.2
 *   MALFORMED    decodes, but is not a valid response (PLAIN without exactly
 *                two NULs, a NUL in a LOGIN field, a field over
 *                AUTH_MAX_FIELD, a line over AUTH_MAX_LINE): 501 5.5.2
 * Every status but CHALLENGE ends the exchange.
 */
enum auth_sasl_status {
	AUTH_SASL_CHALLENGE,
	AUTH_SASL_DONE,
	AUTH_SASL_REFUSED,
	AUTH_SASL_CANCEL,
	AUTH_SASL_BAD_BASE64,
	AUTH_SASL_MALFORMED,
};

/* What auth_verify found. */
enum auth_result {
	AUTH_OK,		/* 235 2.7.0 */
	AUTH_FAIL,		/* unknown user or wrong password: 535 5.7.8 */
	AUTH_TEMPFAIL,		/* backend unreachable, slow or garbled: 454 4.7.0 */
};

struct auth_sasl;
struct auth_backend;

/* auth_mech_lookup - the mechanism named (case-insensitive), or -1: 504 5.5.4 */
int auth_mech_lookup(const char *name);
/* auth_mech_name - "PLAIN" or "LOGIN" */
const char *auth_mech_name(enum auth_mech mech);

/* auth_sasl_new - a fresh exchange for mech; never NULL */
struct auth_sasl *auth_sasl_new(enum auth_mech mech);
/*
 * auth_sasl_start - begin with the AUTH command's initial response: NULL
 * when there was none, "=" for an empty one, else base64.  On CHALLENGE,
 * *challenge_r is the base64 text to send after "334 ".
 */
enum auth_sasl_status auth_sasl_start(struct auth_sasl *s, const char *initial,
    const char **challenge_r);
/* auth_sasl_step - feed one client line (CRLF stripped) after a CHALLENGE */
enum auth_sasl_status auth_sasl_step(struct auth_sasl *s, const char *line,
    const char **challenge_r);
/* auth_sasl_user - the authentication identity; only after DONE */
const char *auth_sasl_user(const struct auth_sasl *s);
/* auth_sasl_password - the password; only after DONE */
const char *auth_sasl_password(const struct auth_sasl *s);
/* auth_sasl_authzid - the authorization identity ("" or the user); only after DONE */
const char *auth_sasl_authzid(const struct auth_sasl *s);
/* auth_sasl_free - wipe and release; NULL is fine */
void auth_sasl_free(struct auth_sasl *s);

/*
 * auth_backend_new - the verifier [auth] describes: passwd_file (read now,
 * all of it, so call it before dropping privileges) or dovecot.  NULL with
 * *err_r set when [auth] is missing or the passwd-file is unreadable or has
 * a bad line ("FILE:LINE: message", one line per error).
 */
struct auth_backend *auth_backend_new(const struct conf *conf, char **err_r);
/* auth_backend_set_timeout - Dovecot deadline in milliseconds; before sharing the backend */
void auth_backend_set_timeout(struct auth_backend *b, unsigned ms);
/* auth_backend_describe - "passwd-file PATH" or "dovecot ENDPOINT", for logs */
const char *auth_backend_describe(const struct auth_backend *b);
/*
 * auth_verify - BLOCKING: check user and password.  client_ip and local_ip
 * (may be NULL) and secured (TLS is on) go to Dovecot.  On AUTH_FAIL and
 * AUTH_TEMPFAIL, *err_r says why for the log (never the password);
 * on AUTH_OK, *err_r is NULL.
 */
enum auth_result auth_verify(struct auth_backend *b, const char *user, const char *pass,
    const char *client_ip, const char *local_ip, bool secured, char **err_r);
/* auth_backend_free - release, wiping the stored hashes; NULL is fine */
void auth_backend_free(struct auth_backend *b);

#endif
