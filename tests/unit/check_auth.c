/*
 * check_auth.c - unit tests for policy/auth.c: the SASL PLAIN and LOGIN
 * exchanges (table-driven), the passwd-file backend with hashes made here
 * by crypt(3), the Dovecot client against a scripted fake server (exact
 * wire format, every odd reply) and against a real Dovecot auth service.
 *
 * The real-Dovecot cases start `dovecot -F` on a private config in a
 * temporary directory, once for their test case, and stop it by its PID.
 * When dovecot is not installed (or we are not root) they print why and
 * pass without running.  Everything is written under $TMPDIR (or /tmp) and
 * removed; nothing else is touched.  Run under ASan: nothing may leak.
 */
#include "config.h"

#include <sys/types.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <netinet/in.h>
#include <arpa/inet.h>
#ifdef __linux__
#include <sys/prctl.h>
#endif

#include <check.h>
#include <crypt.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <poll.h>
#include <pthread.h>
#include <pwd.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <openssl/evp.h>

#include "auth.h"
#include "conf.h"
#include "util.h"
#include "unit.h"

/* ---- helpers ---- */

/* b64 - base64 of n octets; the caller frees */
static char *
b64(const void *raw, size_t n)
{
	char *out = xmalloc(4 * ((n + 2) / 3) + 1);

	EVP_EncodeBlock((unsigned char *)out, raw, (int)n);
	return out;
}

/* Made by main, removed by main: whatever a failed case leaves goes with it. */
static char tmp_root[200];

/* make_tmpdir - a fresh 0755 directory under tmp_root, in dir (size 256) */
static void
make_tmpdir(char *dir, size_t size)
{
	int n;

	n = snprintf(dir, size, "%s/t.XXXXXX", tmp_root);
	ck_assert(n > 0 && (size_t)n < size);
	ck_assert_ptr_nonnull(mkdtemp(dir));
	ck_assert_int_eq(chmod(dir, 0755), 0);	/* Dovecot's auth runs as another user */
}

/* rm_one - nftw callback for rm_rf */
static int
rm_one(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
	remove(path);
	return 0;
}

/* rm_rf - remove dir and everything under it */
static void
rm_rf(const char *dir)
{
	nftw(dir, rm_one, 16, FTW_DEPTH | FTW_PHYS);
}

/* write_file - dir/name gets text, mode 0644; returns the path (static buffer) */
static const char *
write_file(const char *dir, const char *name, const char *text)
{
	static char path[512];
	FILE *fp;

	ck_assert((size_t)snprintf(path, sizeof(path), "%s/%s", dir, name) < sizeof(path));
	ck_assert_ptr_nonnull(fp = fopen(path, "w"));
	ck_assert_int_ge(fputs(text, fp), 0);
	ck_assert_int_eq(fclose(fp), 0);
	ck_assert_int_eq(chmod(path, 0644), 0);
	return path;
}

/* make_hash - crypt(3) hash of pass with method prefix and cost count; NULL if unsupported */
static char *
make_hash(const char *prefix, unsigned long count, const char *pass)
{
	char setting[CRYPT_GENSALT_OUTPUT_SIZE];
	struct crypt_data *cd;
	char *out = NULL, *h;

	if (crypt_gensalt_rn(prefix, count, NULL, 0, setting, sizeof(setting)) == NULL)
		return NULL;
	cd = xcalloc(1, sizeof(*cd));
	h = crypt_r(pass, setting, cd);
	if (h != NULL && h[0] != '*')
		out = xstrdup(h);
	free(cd);
	return out;
}

/* conf_for - a bare snapshot with only [auth]; free with conf_for_free */
static struct conf *
conf_for(const char *passwd_file, const char *dovecot)
{
	struct conf *c = xcalloc(1, sizeof(*c));

	c->auth_passwd_file = passwd_file != NULL ? xstrdup(passwd_file) : NULL;
	c->auth_dovecot = dovecot != NULL ? xstrdup(dovecot) : NULL;
	return c;
}

/* conf_for_free - release conf_for's snapshot */
static void
conf_for_free(struct conf *c)
{
	free(c->auth_passwd_file);
	free(c->auth_dovecot);
	free(c);
}

/* backend_for - a backend that must build; fails the test otherwise */
static struct auth_backend *
backend_for(const char *passwd_file, const char *dovecot)
{
	struct conf *c = conf_for(passwd_file, dovecot);
	struct auth_backend *b;
	char *err = NULL;

	b = auth_backend_new(c, &err);
	ck_assert_msg(b != NULL, "auth_backend_new: %s", err != NULL ? err : "(no error)");
	ck_assert_ptr_null(err);
	conf_for_free(c);
	return b;
}

/* verify - auth_verify, checking err is set exactly when the result is not OK */
static enum auth_result
verify(struct auth_backend *b, const char *user, const char *pass, const char *rip,
    char **err_r)
{
	enum auth_result r;
	char *err = NULL;

	r = auth_verify(b, user, pass, rip, "127.0.0.1", false, &err);
	if (r == AUTH_OK)
		ck_assert_ptr_null(err);
	else {
		ck_assert_ptr_nonnull(err);
		if (strlen(pass) >= 4)
			ck_assert_msg(strstr(err, pass) == NULL, "password in error text: %s", err);
	}
	if (err_r != NULL)
		*err_r = err;
	else
		free(err);
	return r;
}

/* ---- mechanisms ---- */

static const struct {
	const char *name;
	int want;
} mech_cases[] = {
	{ "PLAIN", AUTH_MECH_PLAIN }, { "plain", AUTH_MECH_PLAIN }, { "Plain", AUTH_MECH_PLAIN },
	{ "LOGIN", AUTH_MECH_LOGIN }, { "login", AUTH_MECH_LOGIN },
	{ "CRAM-MD5", -1 }, { "PLAINX", -1 }, { "PLAI", -1 }, { "", -1 }, { "XOAUTH2", -1 },
};

START_TEST(test_mech_lookup)
{
	ck_assert_int_eq(auth_mech_lookup(mech_cases[_i].name), mech_cases[_i].want);
	if (mech_cases[_i].want >= 0)
		ck_assert_int_eq(str_casecmp(auth_mech_name((enum auth_mech)mech_cases[_i].want),
		    mech_cases[_i].name), 0);
}
END_TEST

/* ---- SASL exchanges ---- */

/* One client response: a literal line, or base64 of raw octets. */
struct sasl_step {
	const char *line;
	const char *raw;
	size_t rawlen;
	enum auth_sasl_status want;
	const char *challenge;		/* on CHALLENGE */
};

struct sasl_case {
	const char *name;
	enum auth_mech mech;
	struct sasl_step start;		/* line and raw NULL: no initial response */
	struct sasl_step steps[3];
	size_t nsteps;
	const char *user, *pass, *authzid;	/* on DONE */
};

#define RAW(s)	.raw = (s), .rawlen = sizeof(s) - 1
#define LINE(s)	.line = (s)
#define ST(w)	.want = AUTH_SASL_##w
#define ASK_PLAIN	.want = AUTH_SASL_CHALLENGE, .challenge = ""
#define ASK_USER	.want = AUTH_SASL_CHALLENGE, .challenge = "VXNlcm5hbWU6"
#define ASK_PASS	.want = AUTH_SASL_CHALLENGE, .challenge = "UGFzc3dvcmQ6"
#define P AUTH_MECH_PLAIN
#define L AUTH_MECH_LOGIN

/* Designated initializers throughout: a case names only what it checks. */
#define CASE(n, m)	.name = (n), .mech = (m)
#define START(...)	.start = { __VA_ARGS__ }
#define STEPS(n, ...)	.nsteps = (n), .steps = { __VA_ARGS__ }
#define GIVES(u, p, a)	.user = (u), .pass = (p), .authzid = (a)

static const struct sasl_case sasl_cases[] = {
	/* PLAIN, RFC 4616 */
	{ CASE("plain ir", P), START(RAW("\0alice\0secret"), ST(DONE)),
	  GIVES("alice", "secret", "") },
	{ CASE("plain ir authzid=user", P), START(RAW("alice\0alice\0secret"), ST(DONE)),
	  GIVES("alice", "secret", "alice") },
	{ CASE("plain ir known answer", P),
	  START(LINE("AGFsaWNlQGV4YW1wbGUudGVzdABzZWNyZXQ="), ST(DONE)),
	  GIVES("alice@example.test", "secret", "") },
	{ CASE("plain 334", P), START(ASK_PLAIN), STEPS(1, { RAW("\0alice\0secret"), ST(DONE) }),
	  GIVES("alice", "secret", "") },
	{ CASE("plain 334 known answer", P), START(ASK_PLAIN),
	  STEPS(1, { LINE("AGJvYkBleGFtcGxlLnRlc3QAc2VjcmV0Mg=="), ST(DONE) }),
	  GIVES("bob@example.test", "secret2", "") },
	{ CASE("plain utf-8 and spaces", P),
	  START(RAW("\0j\xc3\xb6rg\0p\xc3\xa4ss word"), ST(DONE)),
	  GIVES("j\xc3\xb6rg", "p\xc3\xa4ss word", "") },
	{ CASE("plain authzid other", P), START(RAW("bob\0alice\0secret"), ST(REFUSED)) },
	{ CASE("plain empty password", P), START(RAW("\0alice\0"), ST(REFUSED)) },
	{ CASE("plain empty user", P), START(RAW("\0\0secret"), ST(REFUSED)) },
	{ CASE("plain only NULs", P), START(RAW("\0\0"), ST(REFUSED)) },
	{ CASE("plain =", P), START(LINE("="), ST(MALFORMED)) },
	{ CASE("plain 334 empty line", P), START(ASK_PLAIN),
	  STEPS(1, { LINE(""), ST(MALFORMED) }) },
	{ CASE("plain one NUL", P), START(RAW("\0alicesecret"), ST(MALFORMED)) },
	{ CASE("plain no NUL", P), START(RAW("alice"), ST(MALFORMED)) },
	{ CASE("plain three NULs", P), START(RAW("\0alice\0sec\0ret"), ST(MALFORMED)) },
	{ CASE("plain trailing NUL", P), START(RAW("\0alice\0secret\0"), ST(MALFORMED)) },
	{ CASE("plain cancel", P), START(ASK_PLAIN), STEPS(1, { LINE("*"), ST(CANCEL) }) },
	{ CASE("plain * as initial", P), START(LINE("*"), ST(BAD_BASE64)) },
	{ CASE("plain = after 334", P), START(ASK_PLAIN),
	  STEPS(1, { LINE("="), ST(BAD_BASE64) }) },
	{ CASE("b64 bad char", P), START(LINE("AGFsaWNl!HNlY3JldA=="), ST(BAD_BASE64)) },
	{ CASE("b64 url alphabet", P), START(LINE("AGFsaWNlAHNl_3JldA=="), ST(BAD_BASE64)) },
	{ CASE("b64 missing padding", P), START(LINE("AGFsaWNlAHNlY3JldA"), ST(BAD_BASE64)) },
	{ CASE("b64 extra padding", P), START(LINE("AGFsaWNlAHNlY3JldA==="), ST(BAD_BASE64)) },
	{ CASE("b64 pad inside", P), START(LINE("AGFs=WNlAHNlY3JldA=="), ST(BAD_BASE64)) },
	{ CASE("b64 char after pad", P), START(LINE("AGFsaWNlAHNlY3JldA=A"), ST(BAD_BASE64)) },
	{ CASE("b64 only pad", P), START(LINE("===="), ST(BAD_BASE64)) },
	{ CASE("b64 three pads", P), START(LINE("A==="), ST(BAD_BASE64)) },
	{ CASE("b64 valid, one NUL", P), START(LINE("AGE="), ST(MALFORMED)) },
	{ CASE("b64 space", P), START(LINE("AGFsaWNl AHNlY3JldA="), ST(BAD_BASE64)) },
	{ CASE("b64 CR left", P), START(LINE("AGFsaWNlAHNlY3JldA==\r"), ST(BAD_BASE64)) },
	{ CASE("b64 bad after 334", P), START(ASK_PLAIN),
	  STEPS(1, { LINE("AG%s"), ST(BAD_BASE64) }) },

	/* LOGIN, draft-murchison-sasl-login */
	{ CASE("login", L), START(ASK_USER),
	  STEPS(2, { RAW("alice"), ASK_PASS }, { RAW("secret"), ST(DONE) }),
	  GIVES("alice", "secret", "") },
	{ CASE("login known answer", L), START(ASK_USER),
	  STEPS(2, { LINE("YWxpY2VAZXhhbXBsZS50ZXN0"), ASK_PASS },
	  { LINE("c2VjcmV0"), ST(DONE) }),
	  GIVES("alice@example.test", "secret", "") },
	{ CASE("login ir", L), START(RAW("alice"), ASK_PASS),
	  STEPS(1, { RAW("secret"), ST(DONE) }),
	  GIVES("alice", "secret", "") },
	{ CASE("login ir =", L), START(LINE("="), ST(REFUSED)) },
	{ CASE("login cancel user", L), START(ASK_USER), STEPS(1, { LINE("*"), ST(CANCEL) }) },
	{ CASE("login cancel pass", L), START(ASK_USER),
	  STEPS(2, { RAW("alice"), ASK_PASS }, { LINE("*"), ST(CANCEL) }) },
	{ CASE("login empty user", L), START(ASK_USER), STEPS(1, { LINE(""), ST(REFUSED) }) },
	{ CASE("login empty pass", L), START(ASK_USER),
	  STEPS(2, { RAW("alice"), ASK_PASS }, { LINE(""), ST(REFUSED) }) },
	{ CASE("login NUL in user", L), START(ASK_USER),
	  STEPS(1, { RAW("al\0ice"), ST(MALFORMED) }) },
	{ CASE("login NUL in pass", L), START(RAW("alice"), ASK_PASS),
	  STEPS(1, { RAW("sec\0ret"), ST(MALFORMED) }) },
	{ CASE("login bad user", L), START(ASK_USER),
	  STEPS(1, { LINE("YWxp!2U="), ST(BAD_BASE64) }) },
	{ CASE("login bad pass", L), START(RAW("alice"), ASK_PASS),
	  STEPS(1, { LINE("c2VjcmV0="), ST(BAD_BASE64) }) },
	{ CASE("login = after 334", L), START(ASK_USER),
	  STEPS(1, { LINE("="), ST(BAD_BASE64) }) },
	{ CASE("login * as initial", L), START(LINE("*"), ST(BAD_BASE64)) },
};

/* sasl_feed - one step of a case; returns the status and checks the challenge */
static enum auth_sasl_status
sasl_feed(struct auth_sasl *s, const struct sasl_step *st, bool start, const char *name)
{
	enum auth_sasl_status r;
	const char *challenge = "unset";
	char *enc = NULL;
	const char *line = st->line;

	if (line == NULL && st->raw != NULL)
		line = enc = b64(st->raw, st->rawlen);
	r = start ? auth_sasl_start(s, line, &challenge) : auth_sasl_step(s, line, &challenge);
	free(enc);
	ck_assert_msg(r == st->want, "%s: status %d, want %d", name, (int)r, (int)st->want);
	if (r == AUTH_SASL_CHALLENGE)
		ck_assert_str_eq(challenge, st->challenge);
	else
		ck_assert_ptr_null(challenge);
	return r;
}

START_TEST(test_sasl_table)
{
	const struct sasl_case *c = &sasl_cases[_i];
	struct auth_sasl *s = auth_sasl_new(c->mech);
	enum auth_sasl_status r;
	size_t i;

	r = sasl_feed(s, &c->start, true, c->name);
	for (i = 0; i < c->nsteps; i++) {
		ck_assert_msg(r == AUTH_SASL_CHALLENGE, "%s: ended before step %zu", c->name, i);
		r = sasl_feed(s, &c->steps[i], false, c->name);
	}
	ck_assert_msg(r != AUTH_SASL_CHALLENGE, "%s: still asking after the last step", c->name);
	if (r == AUTH_SASL_DONE) {
		ck_assert_str_eq(auth_sasl_user(s), c->user);
		ck_assert_str_eq(auth_sasl_password(s), c->pass);
		ck_assert_str_eq(auth_sasl_authzid(s), c->authzid);
	}
	auth_sasl_free(s);
}
END_TEST

/* plain_raw - "authzid\0user\0pass" of the given lengths, filled with a, u, p */
static char *
plain_raw(size_t alen, size_t ulen, size_t plen, size_t *len_r)
{
	char *raw = xmalloc(alen + ulen + plen + 2);

	memset(raw, 'u', alen);		/* authzid = user when alen == ulen */
	raw[alen] = '\0';
	memset(raw + alen + 1, 'u', ulen);
	raw[alen + 1 + ulen] = '\0';
	memset(raw + alen + ulen + 2, 'p', plen);
	*len_r = alen + ulen + plen + 2;
	return raw;
}

/* run_plain - a PLAIN exchange with raw as the initial response */
static enum auth_sasl_status
run_plain(const char *raw, size_t len)
{
	struct auth_sasl *s = auth_sasl_new(AUTH_MECH_PLAIN);
	enum auth_sasl_status r;
	const char *ch;
	char *enc = b64(raw, len);

	r = auth_sasl_start(s, enc, &ch);
	if (r == AUTH_SASL_DONE)
		ck_assert_uint_le(strlen(auth_sasl_password(s)), AUTH_MAX_FIELD);
	free(enc);
	auth_sasl_free(s);
	return r;
}

START_TEST(test_sasl_plain_lengths)
{
	size_t len;
	char *raw;

	/* each field at the limit, then one over */
	raw = plain_raw(0, 255, 255, &len);
	ck_assert_int_eq(run_plain(raw, len), AUTH_SASL_DONE);
	free(raw);
	raw = plain_raw(255, 255, 1, &len);
	ck_assert_int_eq(run_plain(raw, len), AUTH_SASL_DONE);
	free(raw);
	raw = plain_raw(0, 256, 1, &len);
	ck_assert_int_eq(run_plain(raw, len), AUTH_SASL_MALFORMED);
	free(raw);
	raw = plain_raw(0, 1, 256, &len);
	ck_assert_int_eq(run_plain(raw, len), AUTH_SASL_MALFORMED);
	free(raw);
	raw = plain_raw(256, 256, 1, &len);
	ck_assert_int_eq(run_plain(raw, len), AUTH_SASL_MALFORMED);
	free(raw);
	raw = plain_raw(256, 1, 1, &len);
	ck_assert_int_eq(run_plain(raw, len), AUTH_SASL_MALFORMED);
	free(raw);
}
END_TEST

START_TEST(test_sasl_padding)
{
	/* every remainder mod 3: no pad, "=", "==" */
	char raw[64], want[32];
	struct auth_sasl *s;
	const char *ch;
	size_t n;
	char *enc;

	for (n = 1; n <= 12; n++) {
		memset(want, 'a' + (int)n, n);
		want[n] = '\0';
		memcpy(raw, "\0al\0", 4);
		memcpy(raw + 4, want, n);
		enc = b64(raw, 4 + n);
		s = auth_sasl_new(AUTH_MECH_PLAIN);
		ck_assert_int_eq(auth_sasl_start(s, enc, &ch), AUTH_SASL_DONE);
		ck_assert_str_eq(auth_sasl_password(s), want);
		ck_assert_str_eq(auth_sasl_user(s), "al");
		auth_sasl_free(s);
		free(enc);
	}
}
END_TEST

START_TEST(test_sasl_login_lengths)
{
	static const size_t lens[][3] = {	/* user, pass, AUTH_SASL_DONE? */
		{ 255, 255, 1 }, { 256, 1, 0 }, { 1, 256, 0 },
	};
	struct auth_sasl *s;
	enum auth_sasl_status r;
	const char *ch;
	char field[300], *enc;
	size_t i;

	for (i = 0; i < ARRAY_SIZE(lens); i++) {
		s = auth_sasl_new(AUTH_MECH_LOGIN);
		ck_assert_int_eq(auth_sasl_start(s, NULL, &ch), AUTH_SASL_CHALLENGE);
		memset(field, 'u', lens[i][0]);
		enc = b64(field, lens[i][0]);
		r = auth_sasl_step(s, enc, &ch);
		free(enc);
		if (lens[i][0] > AUTH_MAX_FIELD) {
			ck_assert_int_eq(r, AUTH_SASL_MALFORMED);
			auth_sasl_free(s);
			continue;
		}
		ck_assert_int_eq(r, AUTH_SASL_CHALLENGE);
		memset(field, 'p', lens[i][1]);
		enc = b64(field, lens[i][1]);
		r = auth_sasl_step(s, enc, &ch);
		free(enc);
		ck_assert_int_eq(r, lens[i][2] ? AUTH_SASL_DONE : AUTH_SASL_MALFORMED);
		auth_sasl_free(s);
	}
}
END_TEST

START_TEST(test_sasl_line_limit)
{
	struct auth_sasl *s;
	const char *ch;
	char *line = xmalloc(AUTH_MAX_LINE + 5);

	/* within the limit a bad character is bad base64 ... */
	memset(line, 'A', AUTH_MAX_LINE);
	line[AUTH_MAX_LINE - 1] = '!';
	line[AUTH_MAX_LINE] = '\0';
	s = auth_sasl_new(AUTH_MECH_LOGIN);
	ck_assert_int_eq(auth_sasl_start(s, line, &ch), AUTH_SASL_BAD_BASE64);
	auth_sasl_free(s);
	/* ... past it the line is refused before it is decoded */
	memset(line, 'A', AUTH_MAX_LINE + 4);
	line[AUTH_MAX_LINE + 3] = '!';
	line[AUTH_MAX_LINE + 4] = '\0';
	s = auth_sasl_new(AUTH_MECH_PLAIN);
	ck_assert_int_eq(auth_sasl_start(s, NULL, &ch), AUTH_SASL_CHALLENGE);
	ck_assert_int_eq(auth_sasl_step(s, line, &ch), AUTH_SASL_MALFORMED);
	auth_sasl_free(s);
	/* a valid but huge response: the fields are over their limit */
	memset(line, 'A', AUTH_MAX_LINE);
	line[AUTH_MAX_LINE] = '\0';
	s = auth_sasl_new(AUTH_MECH_LOGIN);
	ck_assert_int_eq(auth_sasl_start(s, line, &ch), AUTH_SASL_MALFORMED);
	auth_sasl_free(s);
	free(line);
}
END_TEST

/* ---- passwd-file ---- */

/* Valid hashes of "secret", made once with crypt(3), for the bad-file cases. */
#define GOOD6 "$6$rounds=1000$2wUuKCgHiy1oRJmU$4WscXJYcSFvOA.pZ/bZqLaorT1Hw/YnZg3dEFAPWCQKOk" \
	"ltomAHNthDck/.RypRqmrRPr93zPulf7nvRnKbVh0"
#define GOOD2Y "$2y$04$evD5ZOI.bp8xuqb9CYffquD5E1rZGpvWI7preHcJjqCexwbOrkiZm"

/* One user of the good file: how its hash is made. */
static const struct {
	const char *user, *pass, *prefix, *scheme, *extra;
	unsigned long cost;
} pw_users[] = {
	{ "alice", "secret-y", "$y$", "", "", 1 },		/* yescrypt */
	{ "bob", "secret-2b", "$2b$", "", "", 4 },		/* bcrypt */
	{ "carol", "secret-6", "$6$", "", "", 1000 },		/* sha512-crypt */
	{ "dave", "secret-5", "$5$", "", "", 1000 },		/* sha256-crypt */
	{ "erin@example.test", "secret-d6", "$6$", "{SHA512-CRYPT}", "", 1000 },
	{ "frank", "secret-dblf", "$2y$", "{BLF-CRYPT}", "", 4 },
	{ "gina", "secret-2a", "$2a$", "", "", 4 },
	{ "hank", "secret-x", "$6$", "{crypt}", ":1000:1000::/home/hank::userdb_quota=1G", 1000 },
	{ "ivan", "p\xc3\xa4ss with spaces\t!", "$y$", "", "", 1 },
};

static char pw_dir[256];
static const char *pw_path;

/* pw_setup - write the good file: every method, comments, blanks, CRLF, extra fields */
static void
pw_setup(void)
{
	struct buf text;
	size_t i;
	char *h;

	make_tmpdir(pw_dir, sizeof(pw_dir));
	buf_init(&text);
	buf_puts(&text, "# portier passwd-file\n\n   # indented comment\n\t\n");
	for (i = 0; i < ARRAY_SIZE(pw_users); i++) {
		h = make_hash(pw_users[i].prefix, pw_users[i].cost, pw_users[i].pass);
		ck_assert_msg(h != NULL, "crypt(3) cannot make %s hashes", pw_users[i].prefix);
		buf_printf(&text, "%s:%s%s%s%s", pw_users[i].user, pw_users[i].scheme, h,
		    pw_users[i].extra, i == 3 ? "\r\n" : "\n");
		free(h);
	}
	pw_path = write_file(pw_dir, "passwd", text.data);
	buf_free(&text);
}

/* pw_teardown - remove the good file */
static void
pw_teardown(void)
{
	rm_rf(pw_dir);
}

START_TEST(test_passwd_good)
{
	struct auth_backend *b = backend_for(pw_path, NULL);
	char want[600];
	size_t i;

	snprintf(want, sizeof(want), "passwd-file %s", pw_path);
	ck_assert_str_eq(auth_backend_describe(b), want);
	for (i = 0; i < ARRAY_SIZE(pw_users); i++) {
		ck_assert_msg(verify(b, pw_users[i].user, pw_users[i].pass, NULL, NULL) == AUTH_OK,
		    "%s: good password refused", pw_users[i].user);
		ck_assert_msg(verify(b, pw_users[i].user, "Wr0ng!", NULL, NULL) == AUTH_FAIL,
		    "%s: wrong password accepted", pw_users[i].user);
		/* another user's password */
		ck_assert_int_eq(verify(b, pw_users[i].user,
		    pw_users[(i + 1) % ARRAY_SIZE(pw_users)].pass, NULL, NULL), AUTH_FAIL);
	}
	auth_backend_free(b);
}
END_TEST

START_TEST(test_passwd_refused)
{
	struct auth_backend *b = backend_for(pw_path, NULL);
	char *err, big[300];

	ck_assert_int_eq(verify(b, "nobody", "secret-y", NULL, &err), AUTH_FAIL);
	ck_assert_str_eq(err, "unknown user");
	free(err);
	ck_assert_int_eq(verify(b, "alice", "nope", NULL, &err), AUTH_FAIL);
	ck_assert_str_eq(err, "wrong password");
	free(err);
	ck_assert_int_eq(verify(b, "Alice", "secret-y", NULL, NULL), AUTH_FAIL);	/* exact */
	ck_assert_int_eq(verify(b, "alice ", "secret-y", NULL, NULL), AUTH_FAIL);
	ck_assert_int_eq(verify(b, "alice", "secret-y ", NULL, NULL), AUTH_FAIL);
	ck_assert_int_eq(verify(b, "alice", "secret-", NULL, NULL), AUTH_FAIL);
	ck_assert_int_eq(verify(b, "", "secret-y", NULL, NULL), AUTH_FAIL);
	ck_assert_int_eq(verify(b, "alice", "", NULL, NULL), AUTH_FAIL);
	ck_assert_int_eq(verify(b, "# portier passwd-file", "x", NULL, NULL), AUTH_FAIL);
	memset(big, 'p', 256);
	big[256] = '\0';
	ck_assert_int_eq(verify(b, "alice", big, NULL, NULL), AUTH_FAIL);
	ck_assert_int_eq(verify(b, big, "secret-y", NULL, NULL), AUTH_FAIL);
	auth_backend_free(b);
}
END_TEST

/* A bad file: the error must name its line and never show the secret. */
static const struct {
	const char *text;
	const char *want;	/* substring after "PATH" */
	const char *secret;	/* must not appear in the error */
} bad_files[] = {
	{ "alice:secret\n", ":1: user \"alice\": not a crypt(3) hash", "secret" },
	{ "# c\n\nalice:{PLAIN}hunter2\n", ":3: user \"alice\": not a crypt(3) hash", "hunter2" },
	{ "alice:{SSHA}c2VjcmV0c2FsdA==\n", ":1: user \"alice\": not a crypt(3) hash", "c2Vj" },
	{ "alice:$1$abcdefgh$Jv1d7bpIu4Q5u5pZ8q1Bq/\n", ":1: user \"alice\": not a crypt", "Jv1d" },
	{ "alice:abJnggxhB/yWI\n", ":1: user \"alice\": not a crypt(3) hash", "abJngg" },
	{ "alice: " GOOD6 "\n", ":1: user \"alice\": not a crypt(3) hash", "4Wsc" },
	{ "alice:\n", ":1: user \"alice\": not a crypt(3) hash", NULL },
	{ "alicesecret\n", ":1: expected user:hash", "alicesecret" },
	{ ":" GOOD6 "\n", ":1: empty user name", "4Wsc" },
	{ "alice:$6$saltsalt$\n", ":1: user \"alice\": malformed", "saltsalt" },
	{ "alice:" GOOD6 "x\n", ":1: user \"alice\": malformed", "4Wsc" },
	{ "alice:$6$sa!t$4WscXJYcSFvOA.pZ/bZqLaorT1Hw/YnZg3dEFAPWCQKOkltomAHNthDck/.RypRqmrR"
	  "Pr93zPulf7nvRnKbVh0\n", ":1: user \"alice\": malformed", "4Wsc" },
	{ "alice:{SHA512-CRYPT}" GOOD2Y "\n", ":1: user \"alice\": the {SCHEME} prefix", "evD5" },
	{ "alice:" GOOD6 "\nbob:" GOOD2Y "\nalice:" GOOD6 "\n",
	  ":3: user \"alice\" already defined on line 1", "4Wsc" },
	{ "ok:" GOOD6 "\nbad\"\x01user:plaintext\n",
	  ":2: user \"bad\\x22\\x01user\": not a crypt", "plaintext" },
};

START_TEST(test_passwd_bad_file)
{
	char dir[256], want[1024];
	struct conf *c;
	const char *path;
	char *err = NULL;

	make_tmpdir(dir, sizeof(dir));
	path = write_file(dir, "passwd", bad_files[_i].text);
	c = conf_for(path, NULL);
	ck_assert_ptr_null(auth_backend_new(c, &err));
	ck_assert_ptr_nonnull(err);
	snprintf(want, sizeof(want), "%s%s", path, bad_files[_i].want);
	ck_assert_msg(strncmp(err, want, strlen(want)) == 0, "got \"%s\", want \"%s...\"",
	    err, want);
	if (bad_files[_i].secret != NULL)
		ck_assert_msg(strstr(err, bad_files[_i].secret) == NULL, "secret shown: %s", err);
	free(err);
	conf_for_free(c);
	rm_rf(dir);
}
END_TEST

START_TEST(test_passwd_all_errors)
{
	char dir[256], want[600];
	struct buf text;
	struct conf *c;
	const char *path;
	char *err = NULL;
	int i;

	/* every bad line is reported, then the count of the ones not shown */
	make_tmpdir(dir, sizeof(dir));
	buf_init(&text);
	buf_puts(&text, "a:plain1\nb:" GOOD6 "\nc:plain2\n");
	for (i = 0; i < 22; i++)
		buf_printf(&text, "u%d:clear%d\n", i, i);
	path = write_file(dir, "passwd", text.data);
	buf_free(&text);
	c = conf_for(path, NULL);
	ck_assert_ptr_null(auth_backend_new(c, &err));
	snprintf(want, sizeof(want), "%s:1: user \"a\"", path);
	ck_assert_ptr_nonnull(strstr(err, want));
	snprintf(want, sizeof(want), "\n%s:3: user \"c\"", path);
	ck_assert_ptr_nonnull(strstr(err, want));
	snprintf(want, sizeof(want), "\n%s: 4 more errors not shown", path);
	ck_assert_ptr_nonnull(strstr(err, want));
	ck_assert_ptr_null(strstr(err, "plain1"));
	ck_assert_ptr_null(strstr(err, "clear"));
	free(err);
	conf_for_free(c);
	rm_rf(dir);
}
END_TEST

START_TEST(test_passwd_missing_and_empty)
{
	char dir[256], path[512], want[600];
	struct auth_backend *b;
	struct conf *c;
	char *err = NULL;

	make_tmpdir(dir, sizeof(dir));
	snprintf(path, sizeof(path), "%s/none", dir);
	c = conf_for(path, NULL);
	ck_assert_ptr_null(auth_backend_new(c, &err));
	snprintf(want, sizeof(want), "%s: %s", path, strerror(ENOENT));
	ck_assert_str_eq(err, want);
	free(err);
	conf_for_free(c);

	/* no users at all: loads, and refuses everyone */
	b = backend_for(write_file(dir, "empty", "# nobody yet\n"), NULL);
	ck_assert_int_eq(verify(b, "alice", "secret", NULL, NULL), AUTH_FAIL);
	auth_backend_free(b);
	rm_rf(dir);
}
END_TEST

START_TEST(test_no_auth_section)
{
	struct conf *c = conf_for(NULL, NULL);
	char *err = NULL;

	ck_assert_ptr_null(auth_backend_new(NULL, &err));
	ck_assert_str_eq(err, "no [auth] configured");
	free(err);
	err = NULL;
	ck_assert_ptr_null(auth_backend_new(c, &err));
	ck_assert_str_eq(err, "no [auth] configured");
	free(err);
	conf_for_free(c);
	auth_backend_free(NULL);
	auth_sasl_free(NULL);
}
END_TEST

/* elapsed_ms - how long one verification takes */
static unsigned long long
elapsed_ms(struct auth_backend *b, const char *user, const char *pass)
{
	unsigned long long t0 = now_ms();

	ck_assert_int_eq(verify(b, user, pass, NULL, NULL), AUTH_FAIL);
	return now_ms() - t0;
}

START_TEST(test_passwd_unknown_user_timing)
{
	char dir[256], *h;
	struct auth_backend *b;
	unsigned long long known = 0, unknown = 0;
	struct buf text;
	int i;

	/* bcrypt cost 10 (~50 ms): an unknown user must cost about as much */
	make_tmpdir(dir, sizeof(dir));
	ck_assert_ptr_nonnull(h = make_hash("$2b$", 10, "secret"));
	buf_init(&text);
	buf_printf(&text, "alice:%s\n", h);
	free(h);
	b = backend_for(write_file(dir, "passwd", text.data), NULL);
	buf_free(&text);
	for (i = 0; i < 3; i++) {
		known += elapsed_ms(b, "alice", "Wr0ng!");
		unknown += elapsed_ms(b, "mallory", "Wr0ng!");
	}
	ck_assert_msg(unknown * 2 >= known, "unknown user %llu ms, known %llu ms", unknown, known);
	auth_backend_free(b);
	rm_rf(dir);
}
END_TEST

/* ---- Dovecot endpoints ---- */

static const struct {
	const char *spec;
	bool ok;
} dv_specs[] = {
	{ "unix:/run/dovecot/auth-client", true }, { "127.0.0.1:12345", true },
	{ "inet:127.0.0.1:12345", true }, { "[::1]:12345", true },
	{ "inet:[::1]:12345", true }, { "auth.example.test:12345", true },
	{ "unix:", false }, { "127.0.0.1", false }, { "127.0.0.1:", false },
	{ "127.0.0.1:http", false }, { "127.0.0.1:70000", false }, { "127.0.0.1:0", false },
	{ ":12345", false }, { "[::1:12345", false }, { "[::1]12345", false },
};

START_TEST(test_dovecot_spec)
{
	struct conf *c = conf_for(NULL, dv_specs[_i].spec);
	struct auth_backend *b;
	char *err = NULL, want[300];

	b = auth_backend_new(c, &err);
	if (dv_specs[_i].ok) {
		ck_assert_msg(b != NULL, "%s: %s", dv_specs[_i].spec, err);
		snprintf(want, sizeof(want), "dovecot %s", dv_specs[_i].spec);
		ck_assert_str_eq(auth_backend_describe(b), want);
	} else {
		ck_assert_msg(b == NULL, "%s accepted", dv_specs[_i].spec);
		ck_assert_ptr_nonnull(strstr(err, dv_specs[_i].spec));
	}
	free(err);
	auth_backend_free(b);
	conf_for_free(c);
}
END_TEST

/* ---- a scripted fake Dovecot ---- */

#define HS "VERSION\t1\t2\nMECH\tPLAIN\tplaintext\nMECH\tLOGIN\tplaintext\nSPID\t4711\n" \
	"CUID\t1\nCOOKIE\t02be791cbf115e3ff919d973dd8f4cb1\nDONE\n"

struct fake {
	int lfd;
	const char *handshake;		/* sent on accept; NULL: nothing */
	const char *reply;		/* sent after the AUTH line; NULL: close */
	bool close_after_handshake;
	bool bytewise;			/* one write per octet */
	char got[8192];			/* what the client sent */
	size_t gotlen;
	pthread_t th;
};

/* fake_write - send all of s, bytewise if asked */
static void
fake_write(struct fake *f, int fd, const char *s)
{
	size_t n = strlen(s), i, step;

	for (i = 0; i < n; i += step) {
		step = f->bytewise ? 1 : n - i;
		if (send(fd, s + i, step, MSG_NOSIGNAL) != (ssize_t)step)
			return;
	}
}

/* fake_read - append what arrives within 5 s; false on EOF or timeout */
static bool
fake_read(struct fake *f, int fd)
{
	struct pollfd pfd = { .fd = fd, .events = POLLIN };
	ssize_t r;

	if (poll(&pfd, 1, 5000) <= 0 || f->gotlen >= sizeof(f->got) - 1)
		return false;
	if ((r = recv(fd, f->got + f->gotlen, sizeof(f->got) - 1 - f->gotlen, 0)) <= 0)
		return false;
	f->gotlen += (size_t)r;
	f->got[f->gotlen] = '\0';
	return true;
}

/* fake_run - serve one connection as scripted */
static void *
fake_run(void *arg)
{
	struct fake *f = arg;
	const char *auth;
	int fd;

	if ((fd = accept(f->lfd, NULL, NULL)) == -1)
		return NULL;
	if (f->handshake != NULL)
		fake_write(f, fd, f->handshake);
	if (f->close_after_handshake) {
		/* read the client's VERSION and CPID first: closing on unread data would reset */
		while (((auth = strstr(f->got, "CPID\t")) == NULL || strchr(auth, '\n') == NULL) &&
		    fake_read(f, fd))
			;
	} else {
		/* wait for a whole AUTH line */
		while (((auth = strstr(f->got, "AUTH\t")) == NULL || strchr(auth, '\n') == NULL) &&
		    fake_read(f, fd))
			;
		if (f->reply != NULL) {
			fake_write(f, fd, f->reply);
			while (fake_read(f, fd))	/* until the client hangs up */
				;
		}
	}
	close(fd);
	return NULL;
}

/* fake_listen_unix - listening socket at dir/name */
static int
fake_listen_unix(const char *dir, char *path, size_t size)
{
	struct sockaddr_un sun;
	int fd;

	memset(&sun, 0, sizeof(sun));
	sun.sun_family = AF_UNIX;
	ck_assert((size_t)snprintf(path, size, "%s/fake.sock", dir) < size);
	ck_assert(str_copy(sun.sun_path, path, sizeof(sun.sun_path)));
	ck_assert_int_ge(fd = socket(AF_UNIX, SOCK_STREAM, 0), 0);
	ck_assert_int_eq(bind(fd, (struct sockaddr *)&sun, sizeof(sun)), 0);
	ck_assert_int_eq(listen(fd, 4), 0);
	return fd;
}

/* listen_tcp - listening socket on 127.0.0.1, any port; the port in *port_r */
static int
listen_tcp(int *port_r)
{
	struct sockaddr_in sin;
	socklen_t len = sizeof(sin);
	int fd;

	memset(&sin, 0, sizeof(sin));
	sin.sin_family = AF_INET;
	sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	ck_assert_int_ge(fd = socket(AF_INET, SOCK_STREAM, 0), 0);
	ck_assert_int_eq(bind(fd, (struct sockaddr *)&sin, sizeof(sin)), 0);
	ck_assert_int_eq(listen(fd, 4), 0);
	ck_assert_int_eq(getsockname(fd, (struct sockaddr *)&sin, &len), 0);
	*port_r = ntohs(sin.sin_port);
	return fd;
}

/* One scripted exchange and what auth_verify must make of it. */
static const struct {
	const char *name;
	const char *handshake;
	const char *reply;
	bool close_after_handshake;
	enum auth_result want;
	const char *err;		/* substring of the error, or NULL */
} fake_cases[] = {
	{ "ok", HS, "OK\t1\tuser=alice\n", false, AUTH_OK, NULL },
	{ "ok bare", HS, "OK\t1\n", false, AUTH_OK, NULL },
	{ "fail", HS, "FAIL\t1\tuser=alice\n", false, AUTH_FAIL, "authentication failed" },
	{ "fail bare", HS, "FAIL\t1\n", false, AUTH_FAIL, "authentication failed" },
	{ "fail code", HS, "FAIL\t1\tuser=alice\tcode=user_disabled\n", false, AUTH_FAIL,
	  "code=user_disabled" },
	{ "fail reason", HS, "FAIL\t1\treason=Go away\n", false, AUTH_FAIL, NULL },
	{ "fail temp_fail", HS, "FAIL\t1\tuser=alice\tcode=temp_fail\n", false, AUTH_TEMPFAIL,
	  "temporary failure" },
	{ "fail temp (2.2)", HS, "FAIL\t1\ttemp\n", false, AUTH_TEMPFAIL, "temporary failure" },
	{ "ok nologin", HS, "OK\t1\tuser=alice\tnologin\n", false, AUTH_FAIL, "not allowed" },
	{ "ok nologin=", HS, "OK\t1\tnologin=Y\treason=disabled\n", false, AUTH_FAIL,
	  "not allowed" },
	{ "ok proxy", HS, "OK\t1\tuser=alice\tproxy\thost=10.0.0.1\n", false, AUTH_FAIL,
	  "not allowed" },
	{ "ok nologinx is not nologin", HS, "OK\t1\tnologinx\tuser=nologin\n", false, AUTH_OK,
	  NULL },
	{ "other id", HS, "OK\t2\tuser=alice\n", false, AUTH_TEMPFAIL, "another request id" },
	{ "id prefix", HS, "OK\t12\n", false, AUTH_TEMPFAIL, "another request id" },
	{ "no id", HS, "OK\n", false, AUTH_TEMPFAIL, "garbled" },
	{ "cont", HS, "CONT\t1\t\n", false, AUTH_TEMPFAIL, "unexpected CONT" },
	{ "garbage", HS, "220 smtp.example.test ESMTP\n", false, AUTH_TEMPFAIL, "garbled" },
	{ "closed after request", HS, NULL, false, AUTH_TEMPFAIL, "reply: connection closed" },
	{ "closed in handshake", "VERSION\t1\t2\nMECH\tPLAIN\n", NULL, true, AUTH_TEMPFAIL,
	  "handshake: connection closed" },
	{ "version 2", "VERSION\t2\t0\nMECH\tPLAIN\nDONE\n", NULL, false, AUTH_TEMPFAIL,
	  "unsupported protocol version" },
	{ "version 11", "VERSION\t11\t0\nMECH\tPLAIN\nDONE\n", NULL, false, AUTH_TEMPFAIL,
	  "unsupported protocol version" },
	{ "no version", "MECH\tPLAIN\nDONE\n", NULL, false, AUTH_TEMPFAIL, "no VERSION" },
	{ "no plain", "VERSION\t1\t2\nMECH\tLOGIN\tplaintext\nMECH\tPLAINX\nDONE\n", NULL, false,
	  AUTH_TEMPFAIL, "PLAIN is not offered" },
	{ "minor 3, mech lower case", "VERSION\t1\t3\nMECH\tplain\nNEWTHING\tx\nDONE\n",
	  "OK\t1\n", false, AUTH_OK, NULL },
	{ "smtp banner", "220 mx.example.test ESMTP\r\n", NULL, true, AUTH_TEMPFAIL,
	  "handshake: connection closed" },
};

/* fake_start - listen (unix in dir, or TCP) and serve once in a thread */
static void
fake_start(struct fake *f, const char *dir, bool tcp, char *spec, size_t size)
{
	char path[300];
	int port;

	if (tcp) {
		f->lfd = listen_tcp(&port);
		snprintf(spec, size, "127.0.0.1:%d", port);
	} else {
		f->lfd = fake_listen_unix(dir, path, sizeof(path));
		snprintf(spec, size, "unix:%s", path);
	}
	ck_assert_int_eq(pthread_create(&f->th, NULL, fake_run, f), 0);
}

/* fake_finish - wait for the server thread */
static void
fake_finish(struct fake *f)
{
	ck_assert_int_eq(pthread_join(f->th, NULL), 0);
	close(f->lfd);
}

/* fake_case_run - case i over unix or TCP, whole writes or one octet at a time */
static void
fake_case_run(size_t i, bool tcp, bool bytewise)
{
	struct fake *f = xcalloc(1, sizeof(*f));
	struct auth_backend *b;
	char dir[256], spec[400];
	enum auth_result r;
	char *err = NULL;

	make_tmpdir(dir, sizeof(dir));
	f->handshake = fake_cases[i].handshake;
	f->reply = fake_cases[i].reply;
	f->close_after_handshake = fake_cases[i].close_after_handshake;
	f->bytewise = bytewise;
	fake_start(f, dir, tcp, spec, sizeof(spec));
	b = backend_for(NULL, spec);
	auth_backend_set_timeout(b, 3000);
	r = auth_verify(b, "alice", "secret", "192.0.2.1", "127.0.0.1", true, &err);
	ck_assert_msg(r == fake_cases[i].want, "%s: result %d, want %d (%s)", fake_cases[i].name,
	    (int)r, (int)fake_cases[i].want, err != NULL ? err : "");
	if (fake_cases[i].err != NULL)
		ck_assert_msg(err != NULL && strstr(err, fake_cases[i].err) != NULL,
		    "%s: error \"%s\", want \"%s\"", fake_cases[i].name, err, fake_cases[i].err);
	if (r == AUTH_TEMPFAIL)
		ck_assert_msg(strncmp(err, auth_backend_describe(b),
		    strlen(auth_backend_describe(b))) == 0, "%s: %s", fake_cases[i].name, err);
	free(err);
	auth_backend_free(b);
	fake_finish(f);
	free(f);
	rm_rf(dir);
}

START_TEST(test_fake_unix)
{
	fake_case_run((size_t)_i, false, false);
}
END_TEST

START_TEST(test_fake_tcp_bytewise)
{
	fake_case_run((size_t)_i, true, true);
}
END_TEST

/* wire_run - one OK exchange; returns what the client sent (caller frees) */
static char *
wire_run(const char *user, const char *pass, const char *rip, const char *lip, bool secured)
{
	struct fake *f = xcalloc(1, sizeof(*f));
	struct auth_backend *b;
	char dir[256], spec[400], *got, *err = NULL;

	make_tmpdir(dir, sizeof(dir));
	f->handshake = HS;
	f->reply = "OK\t1\tuser=x\n";
	fake_start(f, dir, false, spec, sizeof(spec));
	b = backend_for(NULL, spec);
	ck_assert_int_eq(auth_verify(b, user, pass, rip, lip, secured, &err), AUTH_OK);
	auth_backend_free(b);
	fake_finish(f);
	got = xstrdup(f->got);
	free(f);
	rm_rf(dir);
	return got;
}

START_TEST(test_fake_wire_format)
{
	char *got, *resp, want[1024];

	/* the exact bytes: handshake, then one AUTH line with everything */
	resp = b64("\0alice@example.test\0secret", 26);
	got = wire_run("alice@example.test", "secret", "198.51.100.7", "192.0.2.25", true);
	snprintf(want, sizeof(want), "VERSION\t1\t2\nCPID\t%ld\nAUTH\t1\tPLAIN\tservice=smtp\t"
	    "nologin\tlip=192.0.2.25\trip=198.51.100.7\tsecured\tresp=%s\n", (long)getpid(), resp);
	ck_assert_str_eq(got, want);
	free(got);
	free(resp);

	/* no addresses, not secured: those fields are left out */
	resp = b64("\0bob\0pw", 7);
	got = wire_run("bob", "pw", NULL, NULL, false);
	snprintf(want, sizeof(want), "VERSION\t1\t2\nCPID\t%ld\nAUTH\t1\tPLAIN\tservice=smtp\t"
	    "nologin\tresp=%s\n", (long)getpid(), resp);
	ck_assert_str_eq(got, want);
	free(got);
	free(resp);

	/* TAB, LF and \001 in a value are tab-escaped; in the credentials they are base64 */
	resp = b64("\0a\tb\0p\nw", 8);
	got = wire_run("a\tb", "p\nw", "1\t2\n3\001", "::1", false);
	snprintf(want, sizeof(want), "VERSION\t1\t2\nCPID\t%ld\nAUTH\t1\tPLAIN\tservice=smtp\t"
	    "nologin\tlip=::1\trip=1\001t2\001n3\0011\tresp=%s\n", (long)getpid(), resp);
	ck_assert_str_eq(got, want);
	free(got);
	free(resp);
}
END_TEST

START_TEST(test_fake_timeout)
{
	struct fake *f = xcalloc(1, sizeof(*f));
	struct auth_backend *b;
	unsigned long long t0, t;
	char dir[256], spec[400];
	char *err = NULL;

	/* a server that accepts and says nothing: TEMPFAIL at the deadline */
	make_tmpdir(dir, sizeof(dir));
	fake_start(f, dir, false, spec, sizeof(spec));
	b = backend_for(NULL, spec);
	auth_backend_set_timeout(b, 300);
	t0 = now_ms();
	ck_assert_int_eq(auth_verify(b, "alice", "secret", NULL, NULL, false, &err),
	    AUTH_TEMPFAIL);
	t = now_ms() - t0;
	ck_assert_msg(t >= 250 && t < 3000, "took %llu ms", t);
	ck_assert_ptr_nonnull(strstr(err, strerror(ETIMEDOUT)));
	free(err);
	auth_backend_free(b);
	fake_finish(f);
	free(f);
	rm_rf(dir);
}
END_TEST

START_TEST(test_fake_long_line)
{
	struct fake *f = xcalloc(1, sizeof(*f));
	struct auth_backend *b;
	char dir[256], spec[400], *junk;
	char *err = NULL;

	/* a line longer than Dovecot's own limit is garbage, not a reason to wait */
	make_tmpdir(dir, sizeof(dir));
	junk = xmalloc(40000);
	memset(junk, 'X', 39999);
	junk[39999] = '\0';
	f->handshake = junk;
	f->close_after_handshake = true;
	fake_start(f, dir, false, spec, sizeof(spec));
	b = backend_for(NULL, spec);
	ck_assert_int_eq(auth_verify(b, "alice", "secret", NULL, NULL, false, &err),
	    AUTH_TEMPFAIL);
	ck_assert_ptr_nonnull(strstr(err, "line too long"));
	free(err);
	auth_backend_free(b);
	fake_finish(f);
	free(junk);
	free(f);
	rm_rf(dir);
}
END_TEST

START_TEST(test_dovecot_unreachable)
{
	struct auth_backend *b;
	char dir[256], spec[400];
	char *err = NULL;
	int fd, port;

	/* no socket file */
	make_tmpdir(dir, sizeof(dir));
	snprintf(spec, sizeof(spec), "unix:%s/auth-client", dir);
	b = backend_for(NULL, spec);
	ck_assert_int_eq(verify(b, "alice", "secret", NULL, &err), AUTH_TEMPFAIL);
	ck_assert_ptr_nonnull(strstr(err, strerror(ENOENT)));
	free(err);
	auth_backend_free(b);
	rm_rf(dir);

	/* a closed TCP port */
	fd = listen_tcp(&port);
	close(fd);
	snprintf(spec, sizeof(spec), "127.0.0.1:%d", port);
	b = backend_for(NULL, spec);
	ck_assert_int_eq(verify(b, "alice", "secret", NULL, &err), AUTH_TEMPFAIL);
	ck_assert_ptr_nonnull(strstr(err, strerror(ECONNREFUSED)));
	free(err);
	auth_backend_free(b);
}
END_TEST

/* ---- a real Dovecot auth service ---- */

static struct {
	bool up;
	bool expected;		/* installed and we are root: not running is a failure */
	pid_t pid;
	int port;
	char dir[256];
	char sock[320];
	char why[512];
} dv;

/* in_path - whether prog is an executable in $PATH or the sbin directories */
static bool
in_path(const char *prog)
{
	const char *path = getenv("PATH");
	char *copy, *dir, *save = NULL, full[512];
	bool found = false;

	copy = xasprintf("%s:/usr/sbin:/usr/local/sbin:/sbin", path != NULL ? path : "");
	for (dir = strtok_r(copy, ":", &save); dir != NULL && !found;
	    dir = strtok_r(NULL, ":", &save)) {
		snprintf(full, sizeof(full), "%s/%s", dir, prog);
		found = access(full, X_OK) == 0;
	}
	free(copy);
	return found;
}

/* can_connect - whether something listens at the unix path or the TCP port */
static bool
can_connect(const char *path, int port)
{
	struct sockaddr_un sun;
	struct sockaddr_in sin;
	int fd, r;

	if (path != NULL) {
		memset(&sun, 0, sizeof(sun));
		sun.sun_family = AF_UNIX;
		str_copy(sun.sun_path, path, sizeof(sun.sun_path));
		fd = socket(AF_UNIX, SOCK_STREAM, 0);
		r = connect(fd, (struct sockaddr *)&sun, sizeof(sun));
	} else {
		memset(&sin, 0, sizeof(sin));
		sin.sin_family = AF_INET;
		sin.sin_port = htons((unsigned short)port);
		sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
		fd = socket(AF_INET, SOCK_STREAM, 0);
		r = connect(fd, (struct sockaddr *)&sin, sizeof(sin));
	}
	close(fd);
	return r == 0;
}

/* dv_down - note why Dovecot is not up (a skip unless it should have been) */
static void PRINTF_LIKE(1, 2)
dv_down(const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(dv.why, sizeof(dv.why), fmt, ap);
	va_end(ap);
	if (!dv.expected)
		fprintf(stderr, "check_auth: SKIP real Dovecot cases: %s\n", dv.why);
}

/* dv_write_config - passwd-file (Dovecot-style {SCHEME} hashes) and dovecot.conf */
static void
dv_write_config(void)
{
	char *h1, *h2, sub[300];
	struct buf text;
	int fd;

	snprintf(sub, sizeof(sub), "%s/run", dv.dir);
	mkdir(sub, 0755);
	snprintf(sub, sizeof(sub), "%s/state", dv.dir);
	mkdir(sub, 0755);
	h1 = make_hash("$6$", 5000, "secret");
	h2 = make_hash("$2y$", 5, "secret2");
	ck_assert(h1 != NULL && h2 != NULL);
	buf_init(&text);
	buf_printf(&text, "alice@example.test:{SHA512-CRYPT}%s\nbob@example.test:{BLF-CRYPT}%s\n",
	    h1, h2);
	write_file(dv.dir, "passwd", text.data);
	free(h1);
	free(h2);
	fd = listen_tcp(&dv.port);	/* a free port; Dovecot binds it next */
	close(fd);
	snprintf(dv.sock, sizeof(dv.sock), "%s/auth-client", dv.dir);
	buf_reset(&text);
	buf_printf(&text,
	    "protocols =\nlisten = 127.0.0.1\nbase_dir = %s/run\nstate_dir = %s/state\n"
	    "log_path = %s/dovecot.log\nssl = no\nauth_mechanisms = plain login\n"
	    "auth_failure_delay = 0\n"
	    "passdb {\n  driver = passwd-file\n  args = %s/passwd\n}\n"
	    "userdb {\n  driver = static\n  args = uid=5000 gid=5000 home=/nonexistent\n}\n"
	    "service auth {\n  unix_listener %s {\n    mode = 0666\n  }\n"
	    "  inet_listener auth-client {\n    address = 127.0.0.1\n    port = %d\n  }\n}\n",
	    dv.dir, dv.dir, dv.dir, dv.dir, dv.sock, dv.port);
	write_file(dv.dir, "dovecot.conf", text.data);
	buf_free(&text);
}

/* dv_spawn - fork and exec dovecot -F; it dies with us (PDEATHSIG) if we crash */
static void
dv_spawn(void)
{
	char conf[300], out[300];
	int fd;

	snprintf(conf, sizeof(conf), "%s/dovecot.conf", dv.dir);
	snprintf(out, sizeof(out), "%s/fg.out", dv.dir);
	fflush(NULL);
	if ((dv.pid = fork()) != 0)
		return;
#ifdef __linux__
	prctl(PR_SET_PDEATHSIG, SIGTERM);
#endif
	if ((fd = open(out, O_WRONLY | O_CREAT | O_TRUNC, 0644)) != -1) {
		dup2(fd, 1);
		dup2(fd, 2);
		close(fd);
	}
	execlp("dovecot", "dovecot", "-F", "-c", conf, (char *)NULL);
	execl("/usr/sbin/dovecot", "dovecot", "-F", "-c", conf, (char *)NULL);
	_exit(127);
}

/* dv_log_head - the first line of Dovecot's output or log, for a failure message */
static void
dv_log_head(char *out, size_t size)
{
	static const char *const names[] = { "fg.out", "dovecot.log" };
	char path[300];
	size_t i, n;
	FILE *fp;

	snprintf(out, size, "no output");
	for (i = 0; i < ARRAY_SIZE(names); i++) {
		snprintf(path, sizeof(path), "%s/%s", dv.dir, names[i]);
		if ((fp = fopen(path, "r")) == NULL)
			continue;
		n = fgets(out, (int)size, fp) != NULL ? strcspn(out, "\n") : 0;
		fclose(fp);
		out[n] = '\0';
		if (n > 0)
			return;
	}
	snprintf(out, size, "no output");
}

/* dv_start - unchecked fixture: start Dovecot once for the test case, or say why not */
static void
dv_start(void)
{
	char head[256];
	int i, status;

	dv.up = false;
	dv.expected = false;
	dv.pid = -1;
	if (!in_path("dovecot")) {
		dv_down("dovecot is not installed (apt-get install dovecot-core)");
		return;
	}
	if (geteuid() != 0) {
		dv_down("not root: Dovecot runs its auth service as user dovecot");
		return;
	}
	if (getpwnam("dovecot") == NULL || getpwnam("dovenull") == NULL) {
		dv_down("the users dovecot and dovenull do not exist");
		return;
	}
	dv.expected = true;
	make_tmpdir(dv.dir, sizeof(dv.dir));
	dv_write_config();
	dv_spawn();
	if (dv.pid == -1) {
		dv_down("fork: %s", strerror(errno));
		return;
	}
	for (i = 0; i < 100; i++) {	/* up to 10 s; about 1 s usually */
		if (waitpid(dv.pid, &status, WNOHANG) == dv.pid) {
			dv.pid = -1;
			dv_log_head(head, sizeof(head));
			dv_down("dovecot exited at once: %s", head);
			return;
		}
		if (can_connect(dv.sock, 0) && can_connect(NULL, dv.port)) {
			dv.up = true;
			return;
		}
		usleep(100 * 1000);
	}
	dv_log_head(head, sizeof(head));
	dv_down("dovecot did not open its auth sockets within 10 s: %s", head);
}

/* dv_stop - SIGTERM by PID, SIGKILL after 5 s, then remove the directory */
static void
dv_stop(void)
{
	int i, status;

	if (dv.pid > 0) {
		kill(dv.pid, SIGTERM);
		for (i = 0; i < 50 && waitpid(dv.pid, &status, WNOHANG) != dv.pid; i++)
			usleep(100 * 1000);
		if (i == 50) {
			kill(dv.pid, SIGKILL);
			waitpid(dv.pid, &status, 0);
		}
		dv.pid = -1;
	}
	if (dv.dir[0] != '\0')
		rm_rf(dv.dir);
	dv.dir[0] = '\0';
	dv.up = false;
}

/* dv_backend - a backend on Dovecot's unix socket or TCP port */
static struct auth_backend *
dv_backend(bool tcp)
{
	char spec[400];

	if (tcp)
		snprintf(spec, sizeof(spec), "inet:127.0.0.1:%d", dv.port);
	else
		snprintf(spec, sizeof(spec), "unix:%s", dv.sock);
	return backend_for(NULL, spec);
}

/*
 * Every case below uses its own client address (rip): Dovecot delays later
 * requests from an address that failed (its auth penalty), and the cases
 * must not slow each other down.  A FAIL still takes ~0.5 s.
 */
#define DV_REQUIRE() do { \
	ck_assert_msg(dv.up || !dv.expected, "dovecot is installed but: %s", dv.why); \
	if (!dv.up) \
		return; \
} while (0)

START_TEST(test_dovecot_good)
{
	struct auth_backend *b;

	DV_REQUIRE();
	b = dv_backend(false);
	ck_assert_int_eq(verify(b, "alice@example.test", "secret", "192.0.2.10", NULL), AUTH_OK);
	ck_assert_int_eq(verify(b, "bob@example.test", "secret2", "192.0.2.10", NULL), AUTH_OK);
	auth_backend_free(b);
	b = dv_backend(true);
	ck_assert_int_eq(verify(b, "alice@example.test", "secret", "192.0.2.11", NULL), AUTH_OK);
	auth_backend_free(b);
}
END_TEST

START_TEST(test_dovecot_bad_password)
{
	struct auth_backend *b;
	char *err;

	DV_REQUIRE();
	b = dv_backend(false);
	ck_assert_int_eq(verify(b, "alice@example.test", "Wr0ng!", "192.0.2.20", &err), AUTH_FAIL);
	ck_assert_str_eq(err, "dovecot: authentication failed");
	free(err);
	auth_backend_free(b);
	b = dv_backend(true);
	ck_assert_int_eq(verify(b, "bob@example.test", "secret", "192.0.2.21", NULL), AUTH_FAIL);
	auth_backend_free(b);
}
END_TEST

START_TEST(test_dovecot_unknown_user)
{
	struct auth_backend *b;

	DV_REQUIRE();
	b = dv_backend(false);
	ck_assert_int_eq(verify(b, "nobody@example.test", "secret", "192.0.2.30", NULL),
	    AUTH_FAIL);
	auth_backend_free(b);
}
END_TEST

/* One thread's verification for test_dovecot_parallel. */
struct dv_job {
	struct auth_backend *b;
	char rip[32];
	enum auth_result r;
};

/* dv_job_run - verify alice from this job's address */
static void *
dv_job_run(void *arg)
{
	struct dv_job *j = arg;
	char *err = NULL;

	j->r = auth_verify(j->b, "alice@example.test", "secret", j->rip, NULL, true, &err);
	free(err);
	return NULL;
}

START_TEST(test_dovecot_parallel)
{
	struct dv_job jobs[4];
	pthread_t th[4];
	struct auth_backend *b;
	size_t i;

	/* one shared backend, several worker threads at once */
	DV_REQUIRE();
	b = dv_backend(false);
	for (i = 0; i < 4; i++) {
		jobs[i].b = b;
		snprintf(jobs[i].rip, sizeof(jobs[i].rip), "192.0.2.%zu", 40 + i);
		ck_assert_int_eq(pthread_create(&th[i], NULL, dv_job_run, &jobs[i]), 0);
	}
	for (i = 0; i < 4; i++) {
		ck_assert_int_eq(pthread_join(th[i], NULL), 0);
		ck_assert_int_eq(jobs[i].r, AUTH_OK);
	}
	auth_backend_free(b);
}
END_TEST

START_TEST(test_dovecot_passwd_shared)
{
	struct auth_backend *b;
	char path[300];

	/* the file Dovecot serves, {SCHEME} prefixes and all, works as our passwd_file */
	DV_REQUIRE();
	snprintf(path, sizeof(path), "%s/passwd", dv.dir);
	b = backend_for(path, NULL);
	ck_assert_int_eq(verify(b, "alice@example.test", "secret", NULL, NULL), AUTH_OK);
	ck_assert_int_eq(verify(b, "bob@example.test", "secret2", NULL, NULL), AUTH_OK);
	ck_assert_int_eq(verify(b, "bob@example.test", "secret", NULL, NULL), AUTH_FAIL);
	auth_backend_free(b);
}
END_TEST

START_TEST(test_dovecot_log_clean)
{
	static const char *const bad[] = { "BUG", "Panic", "Fatal", "Error:" };
	char path[300], line[1024];
	size_t i;
	FILE *fp;

	/* last: nothing we sent made Dovecot complain (a bad CPID, a bad request) */
	DV_REQUIRE();
	snprintf(path, sizeof(path), "%s/dovecot.log", dv.dir);
	ck_assert_ptr_nonnull(fp = fopen(path, "r"));
	while (fgets(line, sizeof(line), fp) != NULL)
		for (i = 0; i < ARRAY_SIZE(bad); i++)
			ck_assert_msg(strstr(line, bad[i]) == NULL, "dovecot.log: %s", line);
	fclose(fp);
}
END_TEST

/* auth_suite - every case */
static Suite *
auth_suite(void)
{
	Suite *s = suite_create("auth");
	TCase *tc;

	tc = tcase_create("sasl");
	tcase_add_loop_test(tc, test_mech_lookup, 0, (int)ARRAY_SIZE(mech_cases));
	tcase_add_loop_test(tc, test_sasl_table, 0, (int)ARRAY_SIZE(sasl_cases));
	tcase_add_test(tc, test_sasl_plain_lengths);
	tcase_add_test(tc, test_sasl_padding);
	tcase_add_test(tc, test_sasl_login_lengths);
	tcase_add_test(tc, test_sasl_line_limit);
	suite_add_tcase(s, tc);

	tc = tcase_create("passwd");
	tcase_add_checked_fixture(tc, pw_setup, pw_teardown);
	tcase_add_test(tc, test_passwd_good);
	tcase_add_test(tc, test_passwd_refused);
	suite_add_tcase(s, tc);

	tc = tcase_create("passwd_files");
	tcase_set_timeout(tc, 20);
	tcase_add_loop_test(tc, test_passwd_bad_file, 0, (int)ARRAY_SIZE(bad_files));
	tcase_add_test(tc, test_passwd_all_errors);
	tcase_add_test(tc, test_passwd_missing_and_empty);
	tcase_add_test(tc, test_no_auth_section);
	tcase_add_test(tc, test_passwd_unknown_user_timing);
	suite_add_tcase(s, tc);

	tc = tcase_create("dovecot_client");
	tcase_set_timeout(tc, 20);
	tcase_add_loop_test(tc, test_dovecot_spec, 0, (int)ARRAY_SIZE(dv_specs));
	tcase_add_loop_test(tc, test_fake_unix, 0, (int)ARRAY_SIZE(fake_cases));
	tcase_add_loop_test(tc, test_fake_tcp_bytewise, 0, (int)ARRAY_SIZE(fake_cases));
	tcase_add_test(tc, test_fake_wire_format);
	tcase_add_test(tc, test_fake_timeout);
	tcase_add_test(tc, test_fake_long_line);
	tcase_add_test(tc, test_dovecot_unreachable);
	suite_add_tcase(s, tc);

	tc = tcase_create("dovecot_real");
	tcase_set_timeout(tc, 30);
	tcase_add_unchecked_fixture(tc, dv_start, dv_stop);
	tcase_add_test(tc, test_dovecot_good);
	tcase_add_test(tc, test_dovecot_bad_password);
	tcase_add_test(tc, test_dovecot_unknown_user);
	tcase_add_test(tc, test_dovecot_parallel);
	tcase_add_test(tc, test_dovecot_passwd_shared);
	tcase_add_test(tc, test_dovecot_log_clean);
	suite_add_tcase(s, tc);
	return s;
}

int
main(void)
{
	const char *t = getenv("TMPDIR");
	int rc;

	signal(SIGPIPE, SIG_IGN);
	snprintf(tmp_root, sizeof(tmp_root), "%s/check_auth.XXXXXX",
	    t != NULL && *t != '\0' ? t : "/tmp");
	if (mkdtemp(tmp_root) == NULL || chmod(tmp_root, 0755) != 0) {
		perror(tmp_root);
		return EXIT_FAILURE;
	}
	rc = unit_run(auth_suite());
	rm_rf(tmp_root);
	return rc;
}
