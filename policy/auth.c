/*
 * auth.c - SMTP AUTH (RFC 4954): SASL PLAIN and LOGIN on the server side,
 * and credential checks against a passwd-file of crypt(3) hashes or a
 * Dovecot auth service (the protocol Postfix calls smtpd_sasl_type = dovecot).
 *
 * The SASL functions never do I/O.  auth_verify blocks (hashing, sockets)
 * and must run on a worker thread; a backend is read-only after
 * auth_backend_new, so any number of threads may share one.  Dovecot: one
 * connection per verification (simple, no shared state, no locking; Dovecot
 * handles thousands of short connections a second, and AUTH is rare next
 * to mail).
 *
 * Must never: log or put into an error text a password, a base64 response
 * or a hash (a mistaken passwd-file line may hold a plain-text password);
 * accept a plain-text or obsolete (DES, MD5) hash; leave a password in
 * freed memory (OPENSSL_cleanse first).  Ownership is as auth.h says.
 */
#include "config.h"

#include <sys/types.h>
#include <sys/socket.h>
#include <sys/un.h>

#include <assert.h>
#include <crypt.h>
#include <errno.h>
#include <limits.h>
#include <netdb.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <openssl/crypto.h>
#include <openssl/evp.h>

#include "auth.h"
#include "buf.h"
#include "conf.h"
#include "log.h"
#include "util.h"

/* ---- mechanisms ---- */

static const char *const auth_mech_names[] = {
	[AUTH_MECH_PLAIN] = "PLAIN",
	[AUTH_MECH_LOGIN] = "LOGIN",
};

/* auth_mech_lookup - the mechanism named (case-insensitive), or -1: 504 5.5.4 */
int
auth_mech_lookup(const char *name)
{
	size_t i;

	for (i = 0; i < ARRAY_SIZE(auth_mech_names); i++)
		if (str_casecmp(name, auth_mech_names[i]) == 0)
			return (int)i;
	return -1;
}

/* auth_mech_name - "PLAIN" or "LOGIN" */
const char *
auth_mech_name(enum auth_mech mech)
{
	assert((size_t)mech < ARRAY_SIZE(auth_mech_names));
	return auth_mech_names[mech];
}

/* ---- base64 (RFC 4648 section 4, strict) ---- */

/* auth_wipe_free - clear n octets of p, then free it */
static void
auth_wipe_free(void *p, size_t n)
{
	if (p == NULL)
		return;
	OPENSSL_cleanse(p, n);
	free(p);
}

/* auth_b64_char - c is in the base64 alphabet (ASCII, not locale-dependent) */
static bool
auth_b64_char(unsigned char c)
{
	return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') ||
	    (c >= '0' && c <= '9') || c == '+' || c == '/';
}

/*
 * auth_b64_decode - decode len octets of base64: no whitespace, length a
 * multiple of 4, '=' only as one or two final pad characters.  EVP_DecodeBlock
 * alone would skip blanks and count the pad as zero octets, so the input is
 * checked first and the pad subtracted.  *out_r (NUL-terminated, possibly
 * holding a password) is the caller's to auth_wipe_free(out, len + 1).
 */
static bool
auth_b64_decode(const char *in, size_t len, unsigned char **out_r, size_t *outlen_r)
{
	unsigned char *out;
	size_t i, pad = 0;
	int n;

	if (len % 4 != 0 || len > INT_MAX)
		return false;
	for (i = 0; i < len; i++) {
		unsigned char c = (unsigned char)in[i];

		if (c == '=') {
			if (i + 2 < len)
				return false;
			pad++;
		} else if (pad > 0 || !auth_b64_char(c))
			return false;
	}
	out = xmalloc(len / 4 * 3 + 1);
	n = len == 0 ? 0 : EVP_DecodeBlock(out, (const unsigned char *)in, (int)len);
	if (n < 0 || (size_t)n < pad || (size_t)n != len / 4 * 3) {
		auth_wipe_free(out, len / 4 * 3 + 1);
		return false;
	}
	*outlen_r = (size_t)n - pad;
	/* the pad's octets too, so wiping outlen + 1 octets wipes everything */
	OPENSSL_cleanse(out + *outlen_r, len / 4 * 3 + 1 - *outlen_r);
	out[*outlen_r] = '\0';
	*out_r = out;
	return true;
}

/* ---- SASL exchanges ---- */

#define AUTH_CHALLENGE_USER	"VXNlcm5hbWU6"	/* "Username:" */
#define AUTH_CHALLENGE_PASS	"UGFzc3dvcmQ6"	/* "Password:" */

enum auth_sasl_state {
	AUTH_SASL_ST_NEW,		/* auth_sasl_start not called yet */
	AUTH_SASL_ST_PLAIN,		/* sent "334 ", waiting for the PLAIN message */
	AUTH_SASL_ST_LOGIN_USER,	/* sent "Username:" */
	AUTH_SASL_ST_LOGIN_PASS,	/* sent "Password:" */
	AUTH_SASL_ST_END,		/* a final status was returned */
};

struct auth_sasl {
	enum auth_mech mech;
	enum auth_sasl_state state;
	bool done;			/* ended with AUTH_SASL_DONE */
	char authzid[AUTH_MAX_FIELD + 1];
	char user[AUTH_MAX_FIELD + 1];
	char pass[AUTH_MAX_FIELD + 1];	/* wiped by auth_sasl_free */
};

/* auth_sasl_new - a fresh exchange for mech; never NULL */
struct auth_sasl *
auth_sasl_new(enum auth_mech mech)
{
	struct auth_sasl *s;

	assert((size_t)mech < ARRAY_SIZE(auth_mech_names));
	s = xcalloc(1, sizeof(*s));
	s->mech = mech;
	s->state = AUTH_SASL_ST_NEW;
	return s;
}

/* auth_sasl_free - wipe and release; NULL is fine */
void
auth_sasl_free(struct auth_sasl *s)
{
	auth_wipe_free(s, sizeof(*s));
}

/*
 * auth_sasl_decode - one client response to octets: "=" is the empty initial
 * response (initial only); anything else must be base64 within AUTH_MAX_LINE.
 * On failure *why_r is the status to return.
 */
static bool
auth_sasl_decode(const char *line, bool initial, unsigned char **data_r, size_t *len_r,
    enum auth_sasl_status *why_r)
{
	size_t len = strnlen(line, AUTH_MAX_LINE + 1);

	if (len > AUTH_MAX_LINE) {
		*why_r = AUTH_SASL_MALFORMED;
		return false;
	}
	if (initial && strcmp(line, "=") == 0) {
		*data_r = xcalloc(1, 1);
		*len_r = 0;
		return true;
	}
	if (!auth_b64_decode(line, len, data_r, len_r)) {
		*why_r = AUTH_SASL_BAD_BASE64;
		return false;
	}
	return true;
}

/* auth_sasl_field - copy n octets into a field: at most AUTH_MAX_FIELD, no NUL */
static bool
auth_sasl_field(char *dst, const unsigned char *src, size_t n)
{
	if (n > AUTH_MAX_FIELD || memchr(src, '\0', n) != NULL)
		return false;
	memcpy(dst, src, n);
	dst[n] = '\0';
	return true;
}

/* auth_sasl_finish - the final checks once every field is in */
static enum auth_sasl_status
auth_sasl_finish(struct auth_sasl *s)
{
	/* RFC 4616 3: the server may refuse an authzid it will not grant */
	if (s->user[0] == '\0' || s->pass[0] == '\0' ||
	    (s->authzid[0] != '\0' && strcmp(s->authzid, s->user) != 0))
		return AUTH_SASL_REFUSED;
	s->done = true;
	return AUTH_SASL_DONE;
}

/* auth_sasl_plain - parse "[authzid] NUL authcid NUL passwd" (RFC 4616 2) */
static enum auth_sasl_status
auth_sasl_plain(struct auth_sasl *s, const unsigned char *data, size_t len)
{
	const unsigned char *nul1, *nul2, *end = data + len;

	if ((nul1 = memchr(data, '\0', len)) == NULL ||
	    (nul2 = memchr(nul1 + 1, '\0', (size_t)(end - nul1 - 1))) == NULL ||
	    memchr(nul2 + 1, '\0', (size_t)(end - nul2 - 1)) != NULL)
		return AUTH_SASL_MALFORMED;
	if (!auth_sasl_field(s->authzid, data, (size_t)(nul1 - data)) ||
	    !auth_sasl_field(s->user, nul1 + 1, (size_t)(nul2 - nul1 - 1)) ||
	    !auth_sasl_field(s->pass, nul2 + 1, (size_t)(end - nul2 - 1)))
		return AUTH_SASL_MALFORMED;
	return auth_sasl_finish(s);
}

/* auth_sasl_login_user - the LOGIN user name; asks for the password next */
static enum auth_sasl_status
auth_sasl_login_user(struct auth_sasl *s, const unsigned char *data, size_t len,
    const char **challenge_r)
{
	if (!auth_sasl_field(s->user, data, len))
		return AUTH_SASL_MALFORMED;
	if (s->user[0] == '\0')
		return AUTH_SASL_REFUSED;
	s->state = AUTH_SASL_ST_LOGIN_PASS;
	*challenge_r = AUTH_CHALLENGE_PASS;
	return AUTH_SASL_CHALLENGE;
}

/* auth_sasl_input - hand decoded octets to the current state */
static enum auth_sasl_status
auth_sasl_input(struct auth_sasl *s, const unsigned char *data, size_t len,
    const char **challenge_r)
{
	switch (s->state) {
	case AUTH_SASL_ST_PLAIN:
		return auth_sasl_plain(s, data, len);
	case AUTH_SASL_ST_LOGIN_USER:
		return auth_sasl_login_user(s, data, len, challenge_r);
	case AUTH_SASL_ST_LOGIN_PASS:
		if (!auth_sasl_field(s->pass, data, len))
			return AUTH_SASL_MALFORMED;
		return auth_sasl_finish(s);
	default:
		fatal("auth_sasl_input: state %d", (int)s->state);
	}
}

/* auth_sasl_feed - decode one response and run it through the state machine */
static enum auth_sasl_status
auth_sasl_feed(struct auth_sasl *s, const char *line, bool initial, const char **challenge_r)
{
	enum auth_sasl_status st;
	unsigned char *data;
	size_t len;

	if (!auth_sasl_decode(line, initial, &data, &len, &st)) {
		s->state = AUTH_SASL_ST_END;
		return st;
	}
	st = auth_sasl_input(s, data, len, challenge_r);
	auth_wipe_free(data, len + 1);
	if (st != AUTH_SASL_CHALLENGE)
		s->state = AUTH_SASL_ST_END;
	return st;
}

/* auth_sasl_start - begin, with the AUTH command's initial response if any */
enum auth_sasl_status
auth_sasl_start(struct auth_sasl *s, const char *initial, const char **challenge_r)
{
	assert(s->state == AUTH_SASL_ST_NEW);
	*challenge_r = NULL;
	s->state = s->mech == AUTH_MECH_PLAIN ? AUTH_SASL_ST_PLAIN : AUTH_SASL_ST_LOGIN_USER;
	if (initial == NULL) {
		*challenge_r = s->mech == AUTH_MECH_PLAIN ? "" : AUTH_CHALLENGE_USER;
		return AUTH_SASL_CHALLENGE;
	}
	return auth_sasl_feed(s, initial, true, challenge_r);
}

/* auth_sasl_step - feed one client line (CRLF stripped) after a CHALLENGE */
enum auth_sasl_status
auth_sasl_step(struct auth_sasl *s, const char *line, const char **challenge_r)
{
	assert(s->state == AUTH_SASL_ST_PLAIN || s->state == AUTH_SASL_ST_LOGIN_USER ||
	    s->state == AUTH_SASL_ST_LOGIN_PASS);
	*challenge_r = NULL;
	if (strcmp(line, "*") == 0) {		/* RFC 4954 4: the client cancels */
		s->state = AUTH_SASL_ST_END;
		return AUTH_SASL_CANCEL;
	}
	return auth_sasl_feed(s, line, false, challenge_r);
}

/* auth_sasl_user - the authentication identity; only after DONE */
const char *
auth_sasl_user(const struct auth_sasl *s)
{
	assert(s->done);
	return s->user;
}

/* auth_sasl_password - the password; only after DONE */
const char *
auth_sasl_password(const struct auth_sasl *s)
{
	assert(s->done);
	return s->pass;
}

/* auth_sasl_authzid - the authorization identity ("" or the user); only after DONE */
const char *
auth_sasl_authzid(const struct auth_sasl *s)
{
	assert(s->done);
	return s->authzid;
}

/* ---- backends ---- */

enum auth_backend_kind { AUTH_BACKEND_PASSWD, AUTH_BACKEND_DOVECOT };

struct auth_user {
	char *name;
	char *hash;		/* crypt(3) string, scheme prefix stripped */
	int line;
};

struct auth_backend {
	enum auth_backend_kind kind;
	char *describe;

	/* passwd-file */
	char *file;
	struct auth_user *users;	/* sorted by name for bsearch */
	size_t nusers;
	char *dummy_hash;		/* hashed for unknown users: same cost */

	/* dovecot */
	bool is_unix;
	char *path;			/* unix socket */
	char *host;			/* unbracketed */
	char *port;
	unsigned timeout_ms;
};

/* Hashed for an unknown user when the file has no user: a random password's. */
#define AUTH_DUMMY_HASH "$6$RgXPRvNfaOL6U6wE$w/588onlflql17ipGzZJ0QDmPbW9BKPHwRxdIM5HS5pt" \
	"AXGxFDDnLOsXCfiQ64dvlDGp8oXSZJOuH03g7yC24/"

/* Collect at most this many passwd-file errors; then one "more" line. */
#define AUTH_MAX_FILE_ERRORS 20

/* auth_strerror - thread-safe strerror into buf */
static const char *
auth_strerror(int err, char *buf, size_t size)
{
#if defined(__GLIBC__) && defined(_GNU_SOURCE)
	return strerror_r(err, buf, size);
#else
	if (strerror_r(err, buf, size) != 0)
		snprintf(buf, size, "error %d", err);
	return buf;
#endif
}

/* ---- passwd-file ---- */

/* The crypt(3) methods we accept and the length of their final '$' field. */
static const struct {
	const char *prefix;
	size_t tail;
} auth_hash_kinds[] = {
	{ "$y$", 43 },		/* yescrypt */
	{ "$2b$", 53 },		/* bcrypt: 22 salt + 31 hash */
	{ "$2y$", 53 },
	{ "$2a$", 53 },
	{ "$6$", 86 },		/* sha512-crypt */
	{ "$5$", 43 },		/* sha256-crypt */
};

/* Dovecot's {SCHEME} prefixes that stand for a crypt(3) hash, and what it must start with. */
static const struct {
	const char *scheme;
	const char *prefix;	/* NULL: any accepted method */
} auth_hash_schemes[] = {
	{ "{SHA512-CRYPT}", "$6$" },
	{ "{SHA256-CRYPT}", "$5$" },
	{ "{BLF-CRYPT}", "$2" },
	{ "{CRYPT}", NULL },
};

#define AUTH_HASH_HELP "not a crypt(3) hash: write yescrypt ($y$), bcrypt ($2b$), " \
	"sha512-crypt ($6$) or sha256-crypt ($5$); plain-text and DES/MD5 are refused"

/* auth_hash_check - NULL if hash is an acceptable crypt(3) string, else why not */
static const char *
auth_hash_check(const char *hash)
{
	static const char chars[] = "./0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ"
	    "abcdefghijklmnopqrstuvwxyz$=";
	const char *last;
	size_t i, plen;

	for (i = 0; i < ARRAY_SIZE(auth_hash_kinds); i++)
		if (strncmp(hash, auth_hash_kinds[i].prefix,
		    strlen(auth_hash_kinds[i].prefix)) == 0)
			break;
	if (i == ARRAY_SIZE(auth_hash_kinds))
		return AUTH_HASH_HELP;
	plen = strlen(auth_hash_kinds[i].prefix);
	last = strrchr(hash, '$');
	if (hash[strspn(hash, chars)] != '\0' || last < hash + plen ||
	    strlen(last + 1) != auth_hash_kinds[i].tail)
		return "malformed crypt(3) hash (cut short or not a hash)";
#ifdef CRYPT_CHECKSALT_AVAILABLE
	switch (crypt_checksalt(hash)) {
	case CRYPT_SALT_OK:
	case CRYPT_SALT_METHOD_LEGACY:	/* $2a$: old but still sound */
		break;
	default:
		return "crypt(3) does not accept this hash's settings";
	}
#endif
	return NULL;
}

/* auth_hash_unscheme - strip a Dovecot "{SCHEME}" prefix; NULL if the scheme is not crypt(3) */
static const char *
auth_hash_unscheme(const char *hash, const char **why_r)
{
	const char *rest;
	size_t i, n;

	if (hash[0] != '{')
		return hash;
	for (i = 0; i < ARRAY_SIZE(auth_hash_schemes); i++) {
		n = strlen(auth_hash_schemes[i].scheme);
		if (str_ncasecmp(hash, auth_hash_schemes[i].scheme, n) != 0)
			continue;
		rest = hash + n;
		if (auth_hash_schemes[i].prefix != NULL && strncmp(rest,
		    auth_hash_schemes[i].prefix, strlen(auth_hash_schemes[i].prefix)) != 0) {
			*why_r = "the {SCHEME} prefix does not match the hash";
			return NULL;
		}
		return rest;
	}
	*why_r = AUTH_HASH_HELP;
	return NULL;
}

/* auth_file_error - add "FILE:LINE: message" to errs, up to AUTH_MAX_FILE_ERRORS */
static void PRINTF_LIKE(5, 6)
auth_file_error(struct buf *errs, unsigned *nerr, const char *file, int line,
    const char *fmt, ...)
{
	va_list ap;
	char msg[512];

	if ((*nerr)++ >= AUTH_MAX_FILE_ERRORS)
		return;
	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	if (errs->len > 0)
		buf_putc(errs, '\n');
	buf_printf(errs, "%s:%d: %s", file, line, msg);
}

/* auth_passwd_line - parse one line ("user:hash[:ignored fields]", NUL-terminated, trimmed) */
static void
auth_passwd_line(struct auth_backend *b, char *line, int lineno, struct buf *errs,
    unsigned *nerr)
{
	char *p = line + strspn(line, " \t"), *colon, *end, esc[128];
	const char *hash, *why = NULL;

	if (*p == '\0' || *p == '#')
		return;
	if ((colon = strchr(p, ':')) == NULL) {
		auth_file_error(errs, nerr, b->file, lineno, "expected user:hash");
		return;
	}
	*colon = '\0';
	if (*p == '\0') {
		auth_file_error(errs, nerr, b->file, lineno, "empty user name");
		return;
	}
	log_escape(esc, sizeof(esc), p, strlen(p));
	if ((end = strchr(colon + 1, ':')) != NULL)	/* Dovecot passwd-file extra fields */
		*end = '\0';
	if ((hash = auth_hash_unscheme(colon + 1, &why)) == NULL ||
	    (why = auth_hash_check(hash)) != NULL) {
		auth_file_error(errs, nerr, b->file, lineno, "user \"%s\": %s", esc, why);
		return;
	}
	b->users = xreallocarray(b->users, b->nusers + 1, sizeof(*b->users));
	b->users[b->nusers].name = xstrdup(p);
	b->users[b->nusers].hash = xstrdup(hash);
	b->users[b->nusers].line = lineno;
	b->nusers++;
}

/* auth_user_sort - qsort order of struct auth_user by name */
static int
auth_user_sort(const void *a, const void *b)
{
	return strcmp(((const struct auth_user *)a)->name, ((const struct auth_user *)b)->name);
}

/* auth_user_find - bsearch: key is a user name */
static int
auth_user_find(const void *key, const void *elem)
{
	return strcmp(key, ((const struct auth_user *)elem)->name);
}

/* auth_passwd_index - sort the users, report duplicates, pick the dummy hash */
static void
auth_passwd_index(struct auth_backend *b, struct buf *errs, unsigned *nerr)
{
	const struct auth_user *u1, *u2;
	char esc[128];
	size_t i;

	/* the first user's hash, so an unknown user costs what a known one does */
	b->dummy_hash = xstrdup(b->nusers > 0 ? b->users[0].hash : AUTH_DUMMY_HASH);
	if (b->nusers > 1)
		qsort(b->users, b->nusers, sizeof(*b->users), auth_user_sort);
	for (i = 1; i < b->nusers; i++) {
		u1 = &b->users[i - 1];
		u2 = &b->users[i];
		if (strcmp(u1->name, u2->name) != 0)
			continue;
		if (u1->line > u2->line) {	/* qsort is not stable */
			u1 = u2;
			u2 = &b->users[i - 1];
		}
		log_escape(esc, sizeof(esc), u2->name, strlen(u2->name));
		auth_file_error(errs, nerr, b->file, u2->line,
		    "user \"%s\" already defined on line %d", esc, u1->line);
	}
}

/* auth_passwd_load - read the whole file; false with every error in *err_r */
static bool
auth_passwd_load(struct auth_backend *b, char **err_r)
{
	struct buf errs;
	unsigned nerr = 0;
	char *line = NULL, ebuf[128];
	size_t cap = 0, len;
	ssize_t n;
	int lineno = 0, saved;
	FILE *fp;

	if ((fp = fopen(b->file, "re")) == NULL) {
		saved = errno;
		*err_r = xasprintf("%s: %s", b->file, auth_strerror(saved, ebuf, sizeof(ebuf)));
		return false;
	}
	buf_init(&errs);
	while ((n = getline(&line, &cap, fp)) != -1) {
		lineno++;
		len = (size_t)n;
		while (len > 0 && strchr("\r\n \t", line[len - 1]) != NULL)
			len--;
		line[len] = '\0';
		auth_passwd_line(b, line, lineno, &errs, &nerr);
	}
	saved = errno;
	if (ferror(fp))
		auth_file_error(&errs, &nerr, b->file, lineno + 1, "read error: %s",
		    auth_strerror(saved, ebuf, sizeof(ebuf)));
	fclose(fp);
	auth_wipe_free(line, cap);	/* may hold a hash or a mistaken plain password */
	auth_passwd_index(b, &errs, &nerr);
	if (nerr > AUTH_MAX_FILE_ERRORS)
		buf_printf(&errs, "\n%s: %u more errors not shown", b->file,
		    nerr - AUTH_MAX_FILE_ERRORS);
	if (nerr == 0) {
		buf_free(&errs);
		return true;
	}
	*err_r = xstrdup(errs.data);
	buf_free(&errs);
	return false;
}

/* auth_passwd_verify - one crypt(3) run whether or not the user exists */
static enum auth_result
auth_passwd_verify(struct auth_backend *b, const char *user, const char *pass, char **err_r)
{
	const struct auth_user *u;
	struct crypt_data *cd;
	enum auth_result r;
	const char *out;
	size_t n;

	u = b->nusers == 0 ? NULL :
	    bsearch(user, b->users, b->nusers, sizeof(*b->users), auth_user_find);
	cd = xcalloc(1, sizeof(*cd));	/* ~32 KiB: too big for a worker's stack */
	out = crypt_r(pass, u != NULL ? u->hash : b->dummy_hash, cd);
	if (out == NULL || out[0] == '*') {
		r = AUTH_TEMPFAIL;
		*err_r = xasprintf("passwd-file %s: crypt(3) failed", b->file);
	} else if (u == NULL) {
		r = AUTH_FAIL;
		*err_r = xstrdup("unknown user");
	} else {
		n = strlen(u->hash);
		if (strlen(out) == n && CRYPTO_memcmp(out, u->hash, n) == 0)
			r = AUTH_OK;
		else {
			r = AUTH_FAIL;
			*err_r = xstrdup("wrong password");
		}
	}
	auth_wipe_free(cd, sizeof(*cd));
	return r;
}

/* ---- Dovecot auth client (doc: Dovecot "Authentication Protocol" v1.2) ---- */

/* Dovecot's AUTH_CLIENT_MAX_LINE_LENGTH */
#define AUTH_DV_MAX_LINE	16384
/* Our request id: one request per connection. */
#define AUTH_DV_ID		"1"

struct auth_dv {
	const struct auth_backend *b;
	int fd;
	unsigned long long deadline;	/* now_ms() value */
	const char *why;		/* of the last I/O failure */
	int err;			/* its errno, or 0 */
	size_t inlen, inoff;
	char in[AUTH_DV_MAX_LINE + 1];
};

/* auth_dovecot_parse - "unix:PATH", "inet:HOST:PORT", "HOST:PORT" or "[V6]:PORT" */
static bool
auth_dovecot_parse(struct auth_backend *b, const char *spec, char **err_r)
{
	const char *hp = spec, *colon, *end;

	if (strncmp(spec, "unix:", 5) == 0) {
		if (spec[5] == '\0' ||
		    strlen(spec + 5) >= sizeof(((struct sockaddr_un *)NULL)->sun_path)) {
			*err_r = xasprintf("dovecot = %s: the socket path is empty or too long",
			    spec);
			return false;
		}
		b->is_unix = true;
		b->path = xstrdup(spec + 5);
		return true;
	}
	if (strncmp(hp, "inet:", 5) == 0)
		hp += 5;
	if (*hp == '[') {
		if ((end = strchr(hp, ']')) == NULL || end[1] != ':')
			goto bad;
		b->host = xstrndup(hp + 1, (size_t)(end - hp - 1));
		colon = end + 1;
	} else {
		if ((colon = strrchr(hp, ':')) == NULL || colon == hp)
			goto bad;
		b->host = xstrndup(hp, (size_t)(colon - hp));
	}
	if (colon[1] == '\0' || colon[1 + strspn(colon + 1, "0123456789")] != '\0' ||
	    strlen(colon + 1) > 5 || atoi(colon + 1) > 65535 || atoi(colon + 1) == 0)
		goto bad;
	b->port = xstrdup(colon + 1);
	return true;
bad:
	*err_r = xasprintf("dovecot = %s: write unix:PATH or HOST:PORT", spec);
	return false;
}

/* auth_dv_wait - poll fd for events until the deadline; false (errno set) on timeout or error */
static bool
auth_dv_wait(int fd, short events, unsigned long long deadline)
{
	struct pollfd pfd = { .fd = fd, .events = events };
	unsigned long long now, left;
	int n;

	for (;;) {
		if ((now = now_ms()) >= deadline) {
			errno = ETIMEDOUT;
			return false;
		}
		left = deadline - now;
		n = poll(&pfd, 1, left > INT_MAX ? INT_MAX : (int)left);
		if (n > 0)
			return true;
		if (n == 0) {
			errno = ETIMEDOUT;
			return false;
		}
		if (errno != EINTR)
			return false;
	}
}

/* auth_dv_connect_addr - non-blocking connect bounded by the deadline; fd or -1 (errno set) */
static int
auth_dv_connect_addr(const struct sockaddr *sa, socklen_t salen, unsigned long long deadline)
{
	socklen_t len = sizeof(int);
	int fd, soerr = 0, saved;

	if ((fd = socket(sa->sa_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0)) == -1)
		return -1;
	if (connect(fd, sa, salen) == 0)
		return fd;
	if (errno != EINPROGRESS && errno != EINTR)
		goto fail;
	if (!auth_dv_wait(fd, POLLOUT, deadline))
		goto fail;
	if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &soerr, &len) == -1)
		goto fail;
	if (soerr == 0)
		return fd;
	errno = soerr;
fail:
	saved = errno;
	close(fd);
	errno = saved;
	return -1;
}

/* auth_dv_connect - to the unix socket or the first HOST:PORT address that answers */
static bool
auth_dv_connect(struct auth_dv *dv)
{
	const struct auth_backend *b = dv->b;
	struct addrinfo hints, *res, *ai;
	struct sockaddr_un sun;
	int gai;

	if (b->is_unix) {
		memset(&sun, 0, sizeof(sun));
		sun.sun_family = AF_UNIX;
		if (!str_copy(sun.sun_path, b->path, sizeof(sun.sun_path)))
			fatal("auth_dv_connect: path checked at load is too long");
		dv->fd = auth_dv_connect_addr((struct sockaddr *)&sun, sizeof(sun), dv->deadline);
		dv->err = errno;
		dv->why = NULL;
		return dv->fd != -1;
	}
	memset(&hints, 0, sizeof(hints));
	hints.ai_family = AF_UNSPEC;
	hints.ai_socktype = SOCK_STREAM;
	hints.ai_flags = AI_NUMERICSERV;
	if ((gai = getaddrinfo(b->host, b->port, &hints, &res)) != 0) {
		dv->why = gai_strerror(gai);	/* thread-safe in glibc and the BSDs */
		dv->err = 0;
		return false;
	}
	dv->err = ENOENT;
	for (ai = res; ai != NULL && dv->fd == -1; ai = ai->ai_next) {
		dv->fd = auth_dv_connect_addr(ai->ai_addr, ai->ai_addrlen, dv->deadline);
		if (dv->fd == -1)
			dv->err = errno;
	}
	freeaddrinfo(res);
	dv->why = NULL;
	return dv->fd != -1;
}

/* auth_dv_send - write all n octets before the deadline */
static bool
auth_dv_send(struct auth_dv *dv, const char *p, size_t n)
{
	ssize_t w;

	while (n > 0) {
		if ((w = send(dv->fd, p, n, MSG_NOSIGNAL)) > 0) {
			p += w;
			n -= (size_t)w;
			continue;
		}
		if (w == -1 && errno == EINTR)
			continue;
		if (w == -1 && (errno == EAGAIN || errno == EWOULDBLOCK) &&
		    auth_dv_wait(dv->fd, POLLOUT, dv->deadline))
			continue;
		dv->why = NULL;
		dv->err = errno;
		return false;
	}
	return true;
}

/*
 * auth_dv_readline - the next line, LF stripped, valid until the next call;
 * NULL on EOF, error, timeout or a line over AUTH_DV_MAX_LINE (dv->why says).
 */
static char *
auth_dv_readline(struct auth_dv *dv)
{
	char *nl, *line;
	ssize_t r;

	for (;;) {
		if ((nl = memchr(dv->in + dv->inoff, '\n', dv->inlen - dv->inoff)) != NULL) {
			*nl = '\0';
			line = dv->in + dv->inoff;
			dv->inoff = (size_t)(nl - dv->in) + 1;
			return line;
		}
		memmove(dv->in, dv->in + dv->inoff, dv->inlen - dv->inoff);
		dv->inlen -= dv->inoff;
		dv->inoff = 0;
		if (dv->inlen == AUTH_DV_MAX_LINE) {
			dv->why = "line too long";
			dv->err = 0;
			return NULL;
		}
		r = recv(dv->fd, dv->in + dv->inlen, AUTH_DV_MAX_LINE - dv->inlen, 0);
		if (r > 0) {
			dv->inlen += (size_t)r;
			continue;
		}
		if (r == 0) {
			dv->why = "connection closed";
			dv->err = 0;
			return NULL;
		}
		if (errno == EINTR)
			continue;
		if ((errno == EAGAIN || errno == EWOULDBLOCK) &&
		    auth_dv_wait(dv->fd, POLLIN, dv->deadline))
			continue;
		dv->why = NULL;
		dv->err = errno;
		return NULL;
	}
}

/* auth_dv_fail - TEMPFAIL with "dovecot ENDPOINT: STAGE[: why][: strerror]" */
static enum auth_result
auth_dv_fail(struct auth_dv *dv, const char *stage, const char *why, int err, char **err_r)
{
	char ebuf[128];

	*err_r = xasprintf("%s: %s%s%s%s%s", dv->b->describe, stage,
	    why != NULL ? ": " : "", why != NULL ? why : "",
	    err != 0 ? ": " : "", err != 0 ? auth_strerror(err, ebuf, sizeof(ebuf)) : "");
	return AUTH_TEMPFAIL;
}

/* auth_dv_handshake - send ours, read the server's up to DONE: protocol 1.x with PLAIN */
static enum auth_result
auth_dv_handshake(struct auth_dv *dv, char **err_r)
{
	bool version = false, plain = false;
	char hello[64], *line;
	size_t n;

	n = (size_t)snprintf(hello, sizeof(hello), "VERSION\t1\t2\nCPID\t%ld\n", (long)getpid());
	assert(n < sizeof(hello));
	if (!auth_dv_send(dv, hello, n))
		return auth_dv_fail(dv, "handshake", dv->why, dv->err, err_r);
	for (;;) {
		if ((line = auth_dv_readline(dv)) == NULL)
			return auth_dv_fail(dv, "handshake", dv->why, dv->err, err_r);
		if (strcmp(line, "DONE") == 0)
			break;
		if (strncmp(line, "VERSION\t", 8) == 0) {
			/* the major version must match; the minor may differ */
			if (strncmp(line + 8, "1\t", 2) != 0)
				return auth_dv_fail(dv, "handshake",
				    "unsupported protocol version (want 1.x)", 0, err_r);
			version = true;
		} else if (strncmp(line, "MECH\t", 5) == 0) {
			n = strcspn(line + 5, "\t");
			if (n == 5 && str_ncasecmp(line + 5, "PLAIN", 5) == 0)
				plain = true;
		}
		/* SPID, CUID, COOKIE and anything new: not needed for SMTP AUTH */
	}
	if (!version)
		return auth_dv_fail(dv, "handshake", "no VERSION line", 0, err_r);
	if (!plain)
		return auth_dv_fail(dv, "handshake",
		    "PLAIN is not offered (auth_mechanisms)", 0, err_r);
	return AUTH_OK;
}

/*
 * auth_dv_escape - Dovecot tab-escaping of src into dst (\001 escapes NUL-free
 * TAB, CR, LF and itself); false if it does not fit.
 */
static bool
auth_dv_escape(char *dst, size_t size, const char *src)
{
	size_t o = 0;
	char e;

	for (; *src != '\0'; src++) {
		switch (*src) {
		case '\001': e = '1'; break;
		case '\t': e = 't'; break;
		case '\r': e = 'r'; break;
		case '\n': e = 'n'; break;
		default: e = '\0'; break;
		}
		if (o + (e != '\0' ? 2 : 1) >= size)
			return false;
		if (e != '\0') {
			dst[o++] = '\001';
			dst[o++] = e;
		} else
			dst[o++] = *src;
	}
	dst[o] = '\0';
	return true;
}

/* auth_dv_param - whether the TAB-separated params hold NAME or NAME=...; value in *value_r */
static bool
auth_dv_param(const char *params, const char *name, const char **value_r)
{
	size_t n = strlen(name);
	const char *p = params;

	while (p != NULL && *p != '\0') {
		if (strncmp(p, name, n) == 0 && (p[n] == '\t' || p[n] == '\0' || p[n] == '=')) {
			*value_r = p[n] == '=' ? p + n + 1 : "";
			return true;
		}
		if ((p = strchr(p, '\t')) != NULL)
			p++;
	}
	return false;
}

/* auth_dv_reply - the server's answer to our AUTH line */
static enum auth_result
auth_dv_reply(struct auth_dv *dv, char **err_r)
{
	char *line, *id, *params, code[64];
	const char *v;

	if ((line = auth_dv_readline(dv)) == NULL)
		return auth_dv_fail(dv, "reply", dv->why, dv->err, err_r);
	if ((id = strchr(line, '\t')) == NULL)
		return auth_dv_fail(dv, "reply", "garbled", 0, err_r);
	*id++ = '\0';
	if ((params = strchr(id, '\t')) != NULL)
		*params++ = '\0';
	if (strcmp(id, AUTH_DV_ID) != 0)
		return auth_dv_fail(dv, "reply", "for another request id", 0, err_r);
	if (strcmp(line, "OK") == 0) {
		/* OK only vouches for the password: nologin/proxy deny the login */
		if (params != NULL && (auth_dv_param(params, "nologin", &v) ||
		    auth_dv_param(params, "proxy", &v))) {
			*err_r = xstrdup("dovecot: login not allowed (nologin or proxy)");
			return AUTH_FAIL;
		}
		return AUTH_OK;
	}
	if (strcmp(line, "FAIL") != 0)
		return auth_dv_fail(dv, "reply", strcmp(line, "CONT") == 0 ?
		    "unexpected CONT" : "garbled", 0, err_r);
	if (params != NULL && (auth_dv_param(params, "temp", &v) ||
	    (auth_dv_param(params, "code", &v) && strcmp(v, "temp_fail") == 0)))
		return auth_dv_fail(dv, "reply", "temporary failure in Dovecot", 0, err_r);
	if (params != NULL && auth_dv_param(params, "code", &v)) {
		log_escape(code, sizeof(code), v, strcspn(v, "\t"));
		*err_r = xasprintf("dovecot: authentication failed (code=%s)", code);
	} else
		*err_r = xstrdup("dovecot: authentication failed");
	return AUTH_FAIL;
}

/* auth_dv_request - send one AUTH PLAIN line with the initial response; wiped after */
static enum auth_result
auth_dv_request(struct auth_dv *dv, const char *user, const char *pass, const char *client_ip,
    const char *local_ip, bool secured, char **err_r)
{
	unsigned char raw[2 + 2 * AUTH_MAX_FIELD];
	char resp[4 * ((sizeof(raw) + 2) / 3) + 1], req[2048], lip[128], rip[128];
	size_t ulen = strlen(user), plen = strlen(pass), rawlen;
	bool have_lip, have_rip, ok;
	int n;

	/* "\0user\0pass": authzid empty, auth_sasl refused any other */
	assert(ulen <= AUTH_MAX_FIELD && plen <= AUTH_MAX_FIELD);
	raw[0] = '\0';
	memcpy(raw + 1, user, ulen);
	raw[1 + ulen] = '\0';
	memcpy(raw + 2 + ulen, pass, plen);
	rawlen = 2 + ulen + plen;
	EVP_EncodeBlock((unsigned char *)resp, raw, (int)rawlen);
	/* addresses are ours, but escape anyway; an odd one is left out */
	have_lip = local_ip != NULL && auth_dv_escape(lip, sizeof(lip), local_ip);
	have_rip = client_ip != NULL && auth_dv_escape(rip, sizeof(rip), client_ip);
	n = snprintf(req, sizeof(req), "AUTH\t" AUTH_DV_ID "\tPLAIN\tservice=smtp\tnologin"
	    "%s%s%s%s%s\tresp=%s\n",
	    have_lip ? "\tlip=" : "", have_lip ? lip : "",
	    have_rip ? "\trip=" : "", have_rip ? rip : "",
	    secured ? "\tsecured" : "", resp);
	ok = n > 0 && (size_t)n < sizeof(req) && auth_dv_send(dv, req, (size_t)n);
	OPENSSL_cleanse(raw, sizeof(raw));
	OPENSSL_cleanse(resp, sizeof(resp));
	OPENSSL_cleanse(req, sizeof(req));
	if (!ok)
		return auth_dv_fail(dv, "request", n > 0 && (size_t)n < sizeof(req) ?
		    dv->why : "too long", dv->err, err_r);
	return AUTH_OK;
}

/* auth_dovecot_verify - connect, handshake, one AUTH PLAIN, the verdict; one connection each */
static enum auth_result
auth_dovecot_verify(struct auth_backend *b, const char *user, const char *pass,
    const char *client_ip, const char *local_ip, bool secured, char **err_r)
{
	struct auth_dv *dv;
	enum auth_result r;

	dv = xcalloc(1, sizeof(*dv));	/* 16 KiB buffer: keep it off a worker's stack */
	dv->b = b;
	dv->fd = -1;
	dv->deadline = now_ms() + b->timeout_ms;
	if (!auth_dv_connect(dv))
		r = auth_dv_fail(dv, "connect", dv->why, dv->err, err_r);
	else if ((r = auth_dv_handshake(dv, err_r)) == AUTH_OK &&
	    (r = auth_dv_request(dv, user, pass, client_ip, local_ip, secured, err_r)) == AUTH_OK)
		r = auth_dv_reply(dv, err_r);
	if (dv->fd != -1)
		close(dv->fd);
	free(dv);
	return r;
}

/* ---- the public backend ---- */

/* auth_backend_new - the verifier [auth] describes; NULL with *err_r on error */
struct auth_backend *
auth_backend_new(const struct conf *conf, char **err_r)
{
	struct auth_backend *b;

	*err_r = NULL;
	if (conf == NULL || (conf->auth_passwd_file == NULL && conf->auth_dovecot == NULL)) {
		*err_r = xstrdup("no [auth] configured");
		return NULL;
	}
	b = xcalloc(1, sizeof(*b));
	b->timeout_ms = AUTH_DOVECOT_TIMEOUT * 1000;
	if (conf->auth_passwd_file != NULL) {	/* conf.c refuses both at once */
		b->kind = AUTH_BACKEND_PASSWD;
		b->file = xstrdup(conf->auth_passwd_file);
		b->describe = xasprintf("passwd-file %s", b->file);
		if (!auth_passwd_load(b, err_r))
			goto fail;
	} else {
		b->kind = AUTH_BACKEND_DOVECOT;
		b->describe = xasprintf("dovecot %s", conf->auth_dovecot);
		if (!auth_dovecot_parse(b, conf->auth_dovecot, err_r))
			goto fail;
	}
	return b;
fail:
	auth_backend_free(b);
	return NULL;
}

/* auth_backend_set_timeout - Dovecot deadline in milliseconds; before sharing the backend */
void
auth_backend_set_timeout(struct auth_backend *b, unsigned ms)
{
	b->timeout_ms = ms > 0 ? ms : 1;
}

/* auth_backend_describe - "passwd-file PATH" or "dovecot ENDPOINT", for logs */
const char *
auth_backend_describe(const struct auth_backend *b)
{
	return b->describe;
}

/* auth_verify - BLOCKING: check user and password against the backend */
enum auth_result
auth_verify(struct auth_backend *b, const char *user, const char *pass,
    const char *client_ip, const char *local_ip, bool secured, char **err_r)
{
	size_t ulen, plen;

	assert(b != NULL && user != NULL && pass != NULL && err_r != NULL);
	*err_r = NULL;
	ulen = strnlen(user, AUTH_MAX_FIELD + 1);
	plen = strnlen(pass, AUTH_MAX_FIELD + 1);
	if (ulen == 0 || plen == 0 || ulen > AUTH_MAX_FIELD || plen > AUTH_MAX_FIELD) {
		*err_r = xstrdup("empty or over-long user name or password");
		return AUTH_FAIL;
	}
	if (b->kind == AUTH_BACKEND_PASSWD)
		return auth_passwd_verify(b, user, pass, err_r);
	return auth_dovecot_verify(b, user, pass, client_ip, local_ip, secured, err_r);
}

/* auth_backend_free - release, wiping the stored hashes; NULL is fine */
void
auth_backend_free(struct auth_backend *b)
{
	size_t i;

	if (b == NULL)
		return;
	for (i = 0; i < b->nusers; i++) {
		free(b->users[i].name);
		auth_wipe_free(b->users[i].hash, strlen(b->users[i].hash));
	}
	free(b->users);
	if (b->dummy_hash != NULL)
		auth_wipe_free(b->dummy_hash, strlen(b->dummy_hash));
	free(b->file);
	free(b->describe);
	free(b->path);
	free(b->host);
	free(b->port);
	free(b);
}
