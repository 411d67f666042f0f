/*
 * check_sender_login.c - unit tests for policy/sender_login.c, table-driven:
 * map files (good, and each malformed line reported as FILE:LINE),
 * ownership rules (wildcards, case, no map, null sender) and From: values.
 *
 * Map files are written to private temporary files and removed at once.
 * Every From: case is also run on each of its prefixes, copied to buffers
 * of exactly that size, so a read past the given length shows under ASan.
 */
#include "config.h"

#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "buf.h"
#include "sender_login.h"
#include "util.h"
#include "unit.h"

/* Input that may hold NULs: a literal and its length. */
#define S(lit)	lit, sizeof(lit) - 1

/* --- helpers ---------------------------------------------------------------- */

/* write_tmp - text[0..len) into a new temporary file; its path into path (size 64) */
static void
write_tmp(const char *text, size_t len, char *path)
{
	const char *dir = getenv("TMPDIR");
	FILE *f;
	int fd;

	snprintf(path, 64, "%s/check_sender_login.XXXXXX",
	    dir != NULL && strlen(dir) < 30 ? dir : "/tmp");
	fd = mkstemp(path);
	ck_assert_int_ge(fd, 0);
	f = fdopen(fd, "w");
	ck_assert_ptr_nonnull(f);
	ck_assert_uint_eq(fwrite(text, 1, len, f), len);
	ck_assert_int_eq(fclose(f), 0);
}

/* load_text - load a map from text; errors (with the temp path replaced by "MAP") into errors */
static struct sender_login_map *
load_text(const char *text, size_t len, struct buf *errors)
{
	struct sender_login_map *m;
	struct buf raw;
	char path[64];
	size_t plen, i;

	write_tmp(text, len, path);
	buf_init(&raw);
	m = sender_login_map_load(path, &raw);
	unlink(path);
	plen = strlen(path);
	buf_reset(errors);
	for (i = 0; i < raw.len; i++) {
		if (raw.len - i >= plen && memcmp(raw.data + i, path, plen) == 0) {
			buf_puts(errors, "MAP");
			i += plen - 1;
		} else
			buf_putc(errors, raw.data[i]);
	}
	buf_free(&raw);
	return m;
}

/* map_good - the map most tests use; fails the test if it does not load */
static struct sender_login_map *
map_good(void)
{
	static const char text[] =
	    "# who may send as whom\n"
	    "\n"
	    "alice\talice@example.test, \"a.smith\"@Example.TEST\n"
	    "bob  bob@example.test @bob.example.test\n"
	    "\t\"bob the builder\"@example.test, <b2@EXAMPLE.test>  # more for bob\n"
	    "   # an indented comment does not end bob's entry\n"
	    "\tbob3@example.test\r\n"
	    "carol@example.test carol@example.test\n"
	    "Dave dave@example.test,,, dave2@example.test,\n"
	    "utf \xd0\xbf\xd1\x80\xd0\xb8\xd0\xb2\xd0\xb5\xd1\x82@example.test\n"
	    "lit x@[192.0.2.1] @[IPv6:2001:db8::1]\n"
	    "hash \"#tag\"@example.test # trailing comment\n"
	    "dup alice@example.test alice@EXAMPLE.TEST\n";
	struct sender_login_map *m;
	struct buf err;

	buf_init(&err);
	m = load_text(text, sizeof(text) - 1, &err);
	ck_assert_msg(m != NULL, "good map did not load: %s", err.data ? err.data : "");
	buf_free(&err);
	return m;
}

/* --- the map file -------------------------------------------------------------- */

START_TEST(test_map_good)
{
	struct sender_login_map *m = map_good();

	ck_assert_uint_eq(sender_login_map_logins(m), 8);
	ck_assert_uint_eq(sender_login_map_logins(NULL), 0);
	sender_login_map_free(m);
	sender_login_map_free(NULL);
}
END_TEST

START_TEST(test_map_empty)
{
	struct sender_login_map *m;
	struct buf err;

	buf_init(&err);
	m = load_text(S("# nothing yet\n\n   \n"), &err);
	ck_assert_ptr_nonnull(m);
	ck_assert_uint_eq(err.len, 0);
	ck_assert_uint_eq(sender_login_map_logins(m), 0);
	ck_assert(!sender_login_allowed(m, "alice@example.test", "alice@example.test"));
	ck_assert(sender_login_allowed(m, "alice@example.test", ""));
	sender_login_map_free(m);
	buf_free(&err);
}
END_TEST

struct bad_map_case {
	const char *text;
	size_t len;
	const char *errors;	/* exactly what is reported, path shown as "MAP" */
};

static const struct bad_map_case bad_map_cases[] = {
	{ S("alice not-an-address\n"),
	  "MAP:1: bad address \"not-an-address\": address needs a domain\n" },
	{ S("# c\n\nalice a@example.test\nbob a@@example.test\n"),
	  "MAP:4: bad address \"a@@example.test\": bad domain\n" },
	{ S("alice\n"),
	  "MAP:1: login \"alice\" lists no addresses\n" },
	{ S("alice # only a comment\nbob b@example.test\n"),
	  "MAP:1: login \"alice\" lists no addresses\n" },
	{ S("  a@example.test\n"),
	  "MAP:1: continuation line with no login before it\n" },
	{ S("alice a@example.test\nbob b@example.test\nalice c@example.test\n"),
	  "MAP:3: login \"alice\" already listed on line 1\n" },
	{ S("alice \"unterminated@example.test\n"),
	  "MAP:1: unterminated quote in \"\\x22unterminated@example.test\"\n" },
	{ S("alice @bad_domain.test\n"),
	  "MAP:1: bad address \"@bad_domain.test\": bad character after domain\n" },
	{ S("alice @\n"),
	  "MAP:1: bad address \"@\": bad domain\n" },
	{ S("alice <>\n"),
	  "MAP:1: bad address \"<>\": null address not allowed here\n" },
	{ S("alice postmaster\n"),
	  "MAP:1: bad address \"postmaster\": address needs a domain\n" },
	{ S("alice a@example.test\nbob b@exa\0mple.test\n"),
	  "MAP:2: NUL byte in line\n" },
	{ S("al\x01ice a@example.test\n"),
	  "MAP:1: control character in login \"al\\x01ice\"\n" },
	{ S("alice a\x01@example.test\n"),
	  "MAP:1: bad address \"a\\x01@example.test\": address needs a domain\n" },
	{ S("alice aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa@example.test\n"),
	  "MAP:1: bad address \"aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa@example.test\": local part too long\n" },
	{ S("alice a@-example.test\nbob\ncarol c@example.test c@\n"),
	  "MAP:1: bad address \"a@-example.test\": bad domain\n"
	  "MAP:2: login \"bob\" lists no addresses\n"
	  "MAP:3: bad address \"c@\": bad domain\n" },
	{ S("alice a@example.test\nalice b@example.test\nalice c@example.test\n"),
	  "MAP:2: login \"alice\" already listed on line 1\n"
	  "MAP:3: login \"alice\" already listed on line 1\n" },
};

START_TEST(test_map_bad)
{
	const struct bad_map_case *c = &bad_map_cases[_i];
	struct sender_login_map *m;
	struct buf err;

	buf_init(&err);
	m = load_text(c->text, c->len, &err);
	ck_assert_ptr_null(m);
	ck_assert_msg(err.len > 0 && strcmp(err.data, c->errors) == 0,
	    "case %d: got \"%s\", want \"%s\"", _i, err.data ? err.data : "", c->errors);
	buf_free(&err);
}
END_TEST

START_TEST(test_map_limits)
{
	struct sender_login_map *m;
	struct buf text, err;
	size_t i;
	int n = 0;
	const char *p;

	/* A login over SENDER_LOGIN_LOGIN_MAX. */
	buf_init(&text);
	buf_init(&err);
	for (i = 0; i < SENDER_LOGIN_LOGIN_MAX + 1; i++)
		buf_putc(&text, 'l');
	buf_puts(&text, " a@example.test\n");
	ck_assert_ptr_null(load_text(text.data, text.len, &err));
	ck_assert_ptr_nonnull(strstr(err.data, "MAP:1: login \"lll"));
	ck_assert_ptr_nonnull(strstr(err.data, "longer than 512 octets\n"));

	/* A line over SENDER_LOGIN_LINE_MAX, then a good one. */
	buf_reset(&text);
	buf_puts(&text, "alice");
	for (i = 0; i < SENDER_LOGIN_LINE_MAX / 16 + 1; i++)
		buf_puts(&text, " a@example.test ");
	buf_puts(&text, "\nbob b@example.test\n");
	ck_assert_ptr_null(load_text(text.data, text.len, &err));
	ck_assert_str_eq(err.data, "MAP:1: line longer than 65536 octets\n");

	/* Many bad lines: the first SENDER_LOGIN_ERRORS_MAX, then one "giving up". */
	buf_reset(&text);
	for (i = 0; i < 3 * SENDER_LOGIN_ERRORS_MAX; i++)
		buf_puts(&text, "login bad\n");
	ck_assert_ptr_null(load_text(text.data, text.len, &err));
	for (p = err.data; (p = strchr(p, '\n')) != NULL; p++)
		n++;
	ck_assert_int_eq(n, SENDER_LOGIN_ERRORS_MAX + 1);
	ck_assert_ptr_nonnull(strstr(err.data, "MAP:100: bad address \"bad\""));
	ck_assert_ptr_nonnull(strstr(err.data, "\nMAP: too many errors, giving up\n"));

	/* A missing file. */
	buf_reset(&err);
	m = sender_login_map_load("/nonexistent/portier/map", &err);
	ck_assert_ptr_null(m);
	ck_assert_str_eq(err.data, "/nonexistent/portier/map: cannot open: No such file or directory\n");
	buf_free(&text);
	buf_free(&err);
}
END_TEST

/* --- ownership ------------------------------------------------------------------- */

struct allowed_case {
	bool use_map;
	const char *login;
	const char *addr;
	bool allowed;
};

static const struct allowed_case allowed_cases[] = {
	/* exact addresses, domain case-insensitive, local part case-sensitive */
	{ true, "alice", "alice@example.test", true },
	{ true, "alice", "alice@EXAMPLE.Test", true },
	{ true, "alice", "Alice@example.test", false },
	{ true, "alice", "a.smith@example.test", true },
	{ true, "alice", "\"a.smith\"@example.test", true },
	{ true, "alice", "bob@example.test", false },
	{ true, "alice", "alice@example.test.evil", false },
	{ true, "alice", "alice", false },
	{ true, "alice", "not an address", false },
	/* logins are exact */
	{ true, "Alice", "alice@example.test", false },
	{ true, "alice ", "alice@example.test", false },
	{ true, "dave", "dave@example.test", false },
	{ true, "Dave", "dave@example.test", true },
	{ true, "Dave", "dave2@example.test", true },
	/* wildcards: every local part of exactly that domain */
	{ true, "bob", "anyone@bob.example.test", true },
	{ true, "bob", "Anyone@BOB.example.test", true },
	{ true, "bob", "x@sub.bob.example.test", false },
	{ true, "bob", "x@example.test", false },
	{ true, "bob", "bob@example.test", true },
	{ true, "bob", "\"bob the builder\"@example.test", true },
	{ true, "bob", "b2@example.test", true },
	{ true, "bob", "bob3@example.test", true },
	{ true, "lit", "x@[192.0.2.1]", true },
	{ true, "lit", "y@[192.0.2.1]", false },
	{ true, "lit", "y@[IPv6:2001:DB8:0::1]", true },
	{ true, "utf", "\xd0\xbf\xd1\x80\xd0\xb8\xd0\xb2\xd0\xb5\xd1\x82@EXAMPLE.test", true },
	{ true, "hash", "#tag@example.test", true },
	{ true, "dup", "alice@example.test", true },
	/* with a map, the map is the whole truth */
	{ true, "carol@example.test", "carol@example.test", true },
	{ true, "eve@example.test", "eve@example.test", false },
	/* the null sender, for any login; never without one */
	{ true, "alice", "", true },
	{ true, "nobody-listed", "", true },
	{ true, "", "", false },
	{ true, NULL, "", false },
	{ true, NULL, "alice@example.test", false },
	{ true, "alice", NULL, false },
	/* no map: a login that is an address owns exactly that address */
	{ false, "alice@example.test", "alice@example.test", true },
	{ false, "alice@EXAMPLE.TEST", "alice@example.test", true },
	{ false, "alice@example.test", "alice@Example.Test", true },
	{ false, "\"alice\"@example.test", "alice@example.test", true },
	{ false, "alice@example.test", "Alice@example.test", false },
	{ false, "alice@example.test", "bob@example.test", false },
	{ false, "alice@example.test", "alice@example.test.evil", false },
	{ false, "alice", "alice", false },
	{ false, "alice", "alice@example.test", false },
	{ false, "alice", "", true },
	{ false, "", "", false },
	{ false, "", "alice@example.test", false },
	{ false, "<alice@example.test>", "alice@example.test", false },
};

START_TEST(test_allowed)
{
	const struct allowed_case *c = &allowed_cases[_i];
	struct sender_login_map *m = c->use_map ? map_good() : NULL;

	ck_assert_msg(sender_login_allowed(m, c->login, c->addr) == c->allowed,
	    "case %d: login %s addr %s: want %s", _i, c->login ? c->login : "NULL",
	    c->addr ? c->addr : "NULL", c->allowed ? "allowed" : "refused");
	sender_login_map_free(m);
}
END_TEST

/* --- From: values -------------------------------------------------------------- */

enum from_map { NO_MAP, MAP };

struct from_case {
	enum from_map map;
	const char *login;
	const char *value;
	size_t len;
	enum sender_login_from want;
	unsigned nmailboxes;	/* OK, MISMATCH */
	const char *detail;	/* MISMATCH: the mailbox; UNPARSEABLE: the why */
};

#define OK	SENDER_LOGIN_FROM_OK
#define MISMATCH	SENDER_LOGIN_FROM_MISMATCH
#define UNPARSEABLE	SENDER_LOGIN_FROM_UNPARSEABLE

static const struct from_case from_cases[] = {
	/* the forms users' programs write */
	{ MAP, "alice", S(" Alice <alice@example.test>"), OK, 1, NULL },
	{ MAP, "alice", S("alice@example.test"), OK, 1, NULL },
	{ MAP, "alice", S(" \"Alice, A.\" <alice@example.test>"), OK, 1, NULL },
	{ MAP, "alice", S(" (comment) alice@example.test"), OK, 1, NULL },
	{ MAP, "alice", S(" alice@example.test (Alice)"), OK, 1, NULL },
	{ MAP, "alice", S(" <alice@EXAMPLE.test>"), OK, 1, NULL },
	{ MAP, "alice", S("<alice@example.test>"), OK, 1, NULL },
	{ MAP, "alice", S(" Alice<alice@example.test>"), OK, 1, NULL },
	{ MAP, "alice", S(" John Q. Public <alice@example.test>"), OK, 1, NULL },
	{ MAP, "alice", S(" =?utf-8?q?Alice_A=2E?= <alice@example.test>"), OK, 1, NULL },
	{ MAP, "alice", S(" \xd0\x90\xd0\xbb\xd0\xb8\xd1\x81\xd0\xb0 <alice@example.test>"), OK, 1, NULL },
	{ MAP, "alice", S(" \"Alice \\\"the\\\" A\" <alice@example.test>"), OK, 1, NULL },
	{ MAP, "alice", S(" (a (nested (deeply)) \\) comment) alice@example.test"), OK, 1, NULL },
	{ MAP, "alice", S(" alice @ example . test"), OK, 1, NULL },
	{ MAP, "alice", S(" \"a.smith\"@example.test"), OK, 1, NULL },
	{ MAP, "alice", S(" Alice <alice@example.test>, A. Smith <a.smith@example.test>"), OK, 2, NULL },
	{ MAP, "alice", S(" , alice@example.test,,"), OK, 1, NULL },
	{ MAP, "bob", S(" Bob <x@bob.example.test>, bob@example.test, \"bob the builder\"@example.test"), OK, 3, NULL },
	{ MAP, "lit", S(" x@[ 192.0.2.1 ], <y@[IPv6:2001:db8:0:0::1]>"), OK, 2, NULL },
	{ MAP, "utf", S(" \xd0\xbf\xd1\x80\xd0\xb8\xd0\xb2\xd0\xb5\xd1\x82@example.test"), OK, 1, NULL },
	{ NO_MAP, "alice@example.test", S(" Alice <alice@Example.Test>"), OK, 1, NULL },
	/* folded values */
	{ MAP, "alice", S(" Alice\r\n <alice@example.test>"), OK, 1, NULL },
	{ MAP, "alice", S(" \"Alice,\r\n\tA.\" <alice@example.test>"), OK, 1, NULL },
	{ MAP, "alice", S(" (a\r\n comment) <alice@example.test\r\n\t>"), OK, 1, NULL },
	{ MAP, "alice", S(" alice@example.test,\r\n a.smith@example.test\r\n"), OK, 2, NULL },
	{ MAP, "alice", S(" Alice\n <alice@example.test>\n"), OK, 1, NULL },
	/* someone else's mailbox */
	{ MAP, "alice", S(" alice@example.test, mallory@evil.test"), MISMATCH, 2, "mallory@evil.test" },
	{ MAP, "alice", S(" Mallory <mallory@EVIL.test>, Alice <alice@example.test>"), MISMATCH, 2, "mallory@evil.test" },
	{ MAP, "alice", S(" Alice@example.test"), MISMATCH, 1, "Alice@example.test" },
	{ MAP, "alice", S(" mallory@evil.test (alice@example.test)"), MISMATCH, 1, "mallory@evil.test" },
	{ MAP, "alice", S(" \"alice@example.test\" <mallory@evil.test>"), MISMATCH, 1, "mallory@evil.test" },
	{ MAP, "Alice", S(" alice@example.test"), MISMATCH, 1, "alice@example.test" },
	{ MAP, "bob", S(" x@sub.bob.example.test"), MISMATCH, 1, "x@sub.bob.example.test" },
	{ MAP, NULL, S(" alice@example.test"), MISMATCH, 1, "alice@example.test" },
	{ NO_MAP, "alice", S(" alice@example.test"), MISMATCH, 1, "alice@example.test" },
	{ NO_MAP, "alice@example.test", S(" bob@example.test"), MISMATCH, 1, "bob@example.test" },
	/* values we do not trust */
	{ MAP, "alice", S(""), UNPARSEABLE, 0, "no mailbox" },
	{ MAP, "alice", S("  \r\n "), UNPARSEABLE, 0, "no mailbox" },
	{ MAP, "alice", S(" ,,"), UNPARSEABLE, 0, "no mailbox" },
	{ MAP, "alice", S(" Alice"), UNPARSEABLE, 0, "display name without an address" },
	{ MAP, "alice", S(" garbage !!! ###"), UNPARSEABLE, 0, "display name without an address" },
	{ MAP, "alice", S(" <>"), UNPARSEABLE, 0, "expected an address" },
	{ MAP, "alice", S(" <<alice@example.test>>"), UNPARSEABLE, 0, "expected an address" },
	{ MAP, "alice", S(" alice@"), UNPARSEABLE, 0, "bad domain" },
	{ MAP, "alice", S(" @example.test"), UNPARSEABLE, 0, "expected an address" },
	{ MAP, "alice", S(" alice"), UNPARSEABLE, 0, "display name without an address" },
	{ MAP, "alice", S(" alice@example.test <mallory@evil.test>"), UNPARSEABLE, 0, "unquoted address as a display name" },
	{ MAP, "alice", S(" alice@example.test Mallory"), UNPARSEABLE, 1, "expected ',' between mailboxes" },
	{ MAP, "alice", S(" Alice <alice@example.test> <mallory@evil.test>"), UNPARSEABLE, 1, "expected ',' between mailboxes" },
	{ MAP, "alice", S(" Mallory mallory@evil.test"), UNPARSEABLE, 0, "expected '@' after the local part" },
	{ MAP, "alice", S(" Alice <alice@example.test"), UNPARSEABLE, 0, "expected '>' after the address" },
	{ MAP, "alice", S(" Alice <alice@example.test, mallory@evil.test>"), UNPARSEABLE, 0, "source route or second address in angle brackets" },
	{ MAP, "alice", S(" <@relay.test:alice@example.test>"), UNPARSEABLE, 0, "expected an address" },
	{ MAP, "alice", S(" Friends: alice@example.test;"), UNPARSEABLE, 0, "group syntax" },
	{ MAP, "alice", S(" (unterminated alice@example.test"), UNPARSEABLE, 0, "unterminated comment" },
	{ MAP, "alice", S(" alice@example.test)"), UNPARSEABLE, 0, "unbalanced parenthesis" },
	{ MAP, "alice", S(" \"Alice <alice@example.test>"), UNPARSEABLE, 0, "unterminated quoted string" },
	{ MAP, "alice", S(" alice@[192.0.2.1"), UNPARSEABLE, 0, "unterminated domain literal" },
	{ MAP, "alice", S(" alice@[192.0.[2.1]"), UNPARSEABLE, 0, "bad character in domain literal" },
	{ MAP, "alice", S(" alice@example..test"), UNPARSEABLE, 0, "bad domain" },
	{ MAP, "alice", S(" .alice@example.test"), UNPARSEABLE, 0, "expected a mailbox" },
	{ MAP, "alice", S(" alice.@example.test"), UNPARSEABLE, 0, "bad local part" },
	{ MAP, "alice", S(" \"a\".b@example.test"), UNPARSEABLE, 0, "expected '@' after the local part" },
	{ MAP, "alice", S(" alice@-example.test"), UNPARSEABLE, 1, "bad domain" },
	{ MAP, "alice", S(" alice@exa_mple.test"), UNPARSEABLE, 1, "bad character after domain" },
	{ MAP, "alice", S(" alice@example.test/"), UNPARSEABLE, 1, "bad character after domain" },
	{ MAP, "alice", S(" alice@example.test ]"), UNPARSEABLE, 0, "unexpected character" },
	{ MAP, "alice", S(" alice@example.test \\"), UNPARSEABLE, 0, "unexpected character" },
	{ MAP, "alice", S(" alice@example.test\r\nBcc: x@evil.test"), UNPARSEABLE, 0, "line end not followed by whitespace" },
	{ MAP, "alice", S(" alice@example.test\r\n\r\n"), UNPARSEABLE, 0, "line end not followed by whitespace" },
	{ MAP, "alice", S(" alice@example.test\r mallory@evil.test"), UNPARSEABLE, 0, "bare CR" },
	{ MAP, "alice", S(" alice@example.test\0mallory@evil.test"), UNPARSEABLE, 0, "control character" },
	{ MAP, "alice", S(" Al\x01ice <alice@example.test>"), UNPARSEABLE, 0, "control character" },
	{ MAP, "alice", S(" (\x7f) alice@example.test"), UNPARSEABLE, 0, "control character in comment" },
	{ MAP, "alice", S(" \"a\\\x01\" <alice@example.test>"), UNPARSEABLE, 0, "bad quoted pair" },
	{ MAP, "alice", S(" \xff\xfe@example.test"), UNPARSEABLE, 1, "malformed UTF-8" },
	{ MAP, "alice", S(" aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa@example.test"), UNPARSEABLE, 1, "local part too long" },
	{ MAP, "alice", S(" alice@example.test, Alice"), UNPARSEABLE, 1, "display name without an address" },
	{ MAP, "alice", S(" mallory@evil.test, garbage"), UNPARSEABLE, 1, "display name without an address" },
};

/* check_from_case - run one case on value[0..len), asserting everything when full */
static void
check_from_case(int i, const struct from_case *c, const struct sender_login_map *m,
    const char *value, size_t len, bool full)
{
	struct sender_login_from_result res;
	enum sender_login_from r;
	char *copy = xmalloc(len ? len : 1);

	memcpy(copy, value, len);	/* exactly len octets: ASan sees any overread */
	r = sender_login_check_from(m, c->login, copy, len, &res);
	ck_assert(sender_login_check_from(m, c->login, copy, len, NULL) == r);
	free(copy);
	if (r == SENDER_LOGIN_FROM_UNPARSEABLE)
		ck_assert_ptr_nonnull(res.why);
	else
		ck_assert_ptr_null(res.why);
	if (!full)
		return;
	ck_assert_msg(r == c->want, "case %d: got %s (%s), want %s", i,
	    sender_login_from_name(r), res.why ? res.why : "-",
	    sender_login_from_name(c->want));
	switch (r) {
	case SENDER_LOGIN_FROM_OK:
		ck_assert_uint_eq(res.nmailboxes, c->nmailboxes);
		ck_assert_str_eq(res.mailbox, "");
		break;
	case SENDER_LOGIN_FROM_MISMATCH:
		ck_assert_uint_eq(res.nmailboxes, c->nmailboxes);
		ck_assert_str_eq(res.mailbox, c->detail);
		break;
	case SENDER_LOGIN_FROM_UNPARSEABLE:
		ck_assert_msg(strcmp(res.why, c->detail) == 0,
		    "case %d: why \"%s\", want \"%s\"", i, res.why, c->detail);
		ck_assert_uint_eq(res.nmailboxes, c->nmailboxes);
		ck_assert_str_eq(res.mailbox, "");
		break;
	}
}

START_TEST(test_from)
{
	const struct from_case *c = &from_cases[_i];
	struct sender_login_map *m = c->map == MAP ? map_good() : NULL;
	size_t n;

	check_from_case(_i, c, m, c->value, c->len, true);
	for (n = 0; n < c->len; n++)
		check_from_case(_i, c, m, c->value, n, false);
	sender_login_map_free(m);
}
END_TEST

START_TEST(test_from_limits)
{
	struct sender_login_from_result res;
	struct buf v;
	size_t i;

	/* Nesting as deep as the length allows: a counter, not a stack. */
	buf_init(&v);
	for (i = 0; i < SENDER_LOGIN_FROM_MAX / 2 - 40; i++)
		buf_putc(&v, '(');
	for (i = 0; i < SENDER_LOGIN_FROM_MAX / 2 - 40; i++)
		buf_putc(&v, ')');
	buf_puts(&v, " alice@example.test");
	ck_assert_uint_le(v.len, SENDER_LOGIN_FROM_MAX);
	ck_assert_int_eq(sender_login_check_from(NULL, "alice@example.test", v.data,
	    v.len, &res), SENDER_LOGIN_FROM_OK);

	/* Many mailboxes, all owned, up to the limit; one octet more is refused. */
	buf_reset(&v);
	while (v.len + 22 <= SENDER_LOGIN_FROM_MAX)
		buf_puts(&v, "alice@example.test,\r\n ");
	while (v.len < SENDER_LOGIN_FROM_MAX)
		buf_putc(&v, ' ');
	ck_assert_int_eq(sender_login_check_from(NULL, "alice@example.test", v.data,
	    v.len, &res), SENDER_LOGIN_FROM_OK);
	ck_assert_uint_eq(res.nmailboxes, SENDER_LOGIN_FROM_MAX / 22);
	buf_putc(&v, ' ');
	ck_assert_int_eq(sender_login_check_from(NULL, "alice@example.test", v.data,
	    v.len, &res), SENDER_LOGIN_FROM_UNPARSEABLE);
	ck_assert_str_eq(res.why, "From: value too long");

	/* An address over the path limit in the header. */
	buf_reset(&v);
	buf_puts(&v, "<a@");
	for (i = 0; i < 60; i++)
		buf_puts(&v, "abcd.");
	buf_puts(&v, "test>");
	ck_assert_int_eq(sender_login_check_from(NULL, "alice@example.test", v.data,
	    v.len, &res), SENDER_LOGIN_FROM_UNPARSEABLE);
	ck_assert_str_eq(res.why, "address too long");
	buf_free(&v);

	ck_assert_str_eq(sender_login_from_name(SENDER_LOGIN_FROM_OK), "OK");
	ck_assert_str_eq(sender_login_from_name(SENDER_LOGIN_FROM_MISMATCH), "MISMATCH");
	ck_assert_str_eq(sender_login_from_name(SENDER_LOGIN_FROM_UNPARSEABLE), "UNPARSEABLE");
}
END_TEST

/* sender_login_suite - every test case above */
static Suite *
sender_login_suite(void)
{
	Suite *s = suite_create("sender_login");
	TCase *tc;

	tc = tcase_create("map");
	tcase_add_test(tc, test_map_good);
	tcase_add_test(tc, test_map_empty);
	tcase_add_loop_test(tc, test_map_bad, 0, (int)ARRAY_SIZE(bad_map_cases));
	tcase_add_test(tc, test_map_limits);
	suite_add_tcase(s, tc);

	tc = tcase_create("allowed");
	tcase_add_loop_test(tc, test_allowed, 0, (int)ARRAY_SIZE(allowed_cases));
	suite_add_tcase(s, tc);

	tc = tcase_create("from");
	tcase_add_loop_test(tc, test_from, 0, (int)ARRAY_SIZE(from_cases));
	tcase_add_test(tc, test_from_limits);
	suite_add_tcase(s, tc);
	return s;
}

/* main - run the suite; the exit status tells make check */
UNIT_MAIN(sender_login_suite)
