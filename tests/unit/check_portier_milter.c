/*
 * check_portier_milter.c - unit tests for milter/pmilter_map.c, the pure
 * part of portier-milter: envelope arguments, header callbacks into the
 * block the filters read, the session from the connect arguments and the
 * MTA's macros (a table stands in for smfi_getsymval), and the end-of-
 * message actions.  The actions are checked one by one and, above all, by
 * applying them to the received fields as the MTA would (a model of
 * libmilter's semantics below): the result must be exactly the block
 * filter_compose_headers gives portier's own backend, signatures on top.
 */
#include "config.h"

#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <arpa/inet.h>
#include <netinet/in.h>

#include "buf.h"
#include "util.h"
#include "filter.h"
#include "pmilter.h"
#include "unit.h"

#define AUTHSERV	"mx.example.test"

/* ---- macros: a table in place of libmilter's ---- */

struct macro {
	const char *name;
	const char *value;
};

/* table_get - pmilter_macro_fn over a NULL-terminated table */
static const char *
table_get(void *arg, const char *name)
{
	const struct macro *m;

	for (m = arg; m->name != NULL; m++)
		if (strcmp(m->name, name) == 0)
			return m->value;
	return NULL;
}

/* ---- envelope ---- */

static const struct {
	const char *in, *out;
} addr_cases[] = {
	{ "<a@example.test>", "a@example.test" },
	{ "<>", "" },
	{ "a@example.test", "a@example.test" },
	{ "<@r1.test,@r2.test:u@example.test>", "u@example.test" },
	{ "<", "<" },
	{ "", "" },
};

START_TEST(test_addr)
{
	char *a = pmilter_addr(addr_cases[_i].in);

	ck_assert_str_eq(a, addr_cases[_i].out);
	free(a);
}
END_TEST

START_TEST(test_params)
{
	char *full[] = { "<a@b>", "SIZE=10", "", "BODY=8BITMIME", NULL };
	char *none[] = { "<a@b>", NULL };
	char *p;

	p = pmilter_params(full);
	ck_assert_str_eq(p, "SIZE=10 BODY=8BITMIME");
	free(p);
	p = pmilter_params(none);
	ck_assert_str_eq(p, "");
	free(p);
}
END_TEST

/* ---- the header block ---- */

static const struct {
	const char *name, *value;	/* as the MTA hands them */
	const char *raw;		/* what the raw block gets */
	const char *tname, *tvalue;	/* what txn->headers gets */
} header_cases[] = {
	{ "Subject", " hello", "Subject: hello\r\n", "Subject", " hello" },
	/* Postfix folds with LF, Sendmail with CRLF: the filters read CRLF */
	{ "Subject", " a\n\tb\n c", "Subject: a\r\n\tb\r\n c\r\n", "Subject", " a\r\n\tb\r\n c" },
	{ "Subject", " a\r\n\tb", "Subject: a\r\n\tb\r\n", "Subject", " a\r\n\tb" },
	/* a break that is no fold would end the field early: a space */
	{ "X-Odd", " a\nb\rc", "X-Odd: a b c\r\n", "X-Odd", " a b c" },
	{ "X-Empty", "", "X-Empty:\r\n", "X-Empty", "" },
	{ "X-Spaced \t", " v", "X-Spaced \t: v\r\n", "X-Spaced", " v" },
	{ "X-NoSpace", "v", "X-NoSpace:v\r\n", "X-NoSpace", "v" },
};

START_TEST(test_header)
{
	struct filter_txn txn;
	struct buf raw;

	filter_txn_init(&txn);
	buf_init(&raw);
	pmilter_header(&txn, &raw, header_cases[_i].name, header_cases[_i].value);
	ck_assert_str_eq(raw.data, header_cases[_i].raw);
	ck_assert_uint_eq(txn.nheaders, 1);
	ck_assert_str_eq(txn.headers[0].name, header_cases[_i].tname);
	ck_assert_str_eq(txn.headers[0].value, header_cases[_i].tvalue);
	filter_txn_reset(&txn);
	buf_free(&raw);
}
END_TEST

/* The raw block reads back as the same fields (dkim-verify reads it from the spool). */
START_TEST(test_header_many)
{
	struct filter_txn txn, back;
	char name[32], value[32];
	struct buf raw;
	size_t i;

	filter_txn_init(&txn);
	buf_init(&raw);
	for (i = 0; i < 77; i++) {
		snprintf(name, sizeof(name), "X-H%zu", i);
		snprintf(value, sizeof(value), " v%zu\n\tfold", i);
		pmilter_header(&txn, &raw, name, value);
	}
	ck_assert_uint_eq(txn.nheaders, 77);
	filter_txn_init(&back);
	buf_puts(&raw, "\r\nbody\r\n");
	ck_assert_uint_eq(filter_parse_headers(&back, raw.data, raw.len), raw.len - 6);
	ck_assert_uint_eq(back.nheaders, 77);
	for (i = 0; i < 77; i++) {
		ck_assert_str_eq(back.headers[i].name, txn.headers[i].name);
		ck_assert_str_eq(back.headers[i].value, txn.headers[i].value);
	}
	filter_txn_reset(&back);
	filter_txn_reset(&txn);
	buf_free(&raw);
}
END_TEST

/* ---- the session ---- */

START_TEST(test_sess_connect)
{
	const struct macro macros[] = {
		{ "j", "mta.example.test" }, { "{daemon_addr}", "198.51.100.25" },
		{ "{daemon_port}", "587" }, { "{client_ptr}", "ptr.example.net" }, { NULL, NULL },
	};
	struct sockaddr_in sin;
	struct pmilter_sess ps;

	memset(&sin, 0, sizeof(sin));
	sin.sin_family = AF_INET;
	sin.sin_port = htons(4567);
	inet_pton(AF_INET, "192.0.2.1", &sin.sin_addr);
	pmilter_sess_init(&ps, 42, NULL, ROLE_SUBMISSION);
	pmilter_sess_connect(&ps, "mail.example.net", (struct sockaddr *)&sin, table_get,
	    (void *)macros);
	ck_assert_uint_eq(ps.fs.id, 42);
	ck_assert_int_eq(ps.fs.role, ROLE_SUBMISSION);
	ck_assert_str_eq(ps.fs.client_addr, "192.0.2.1");
	ck_assert_uint_eq(ps.fs.client_port, 4567);
	ck_assert_int_eq(ps.fs.client_sa.ss_family, AF_INET);
	ck_assert_str_eq(ps.fs.client_name, "mail.example.net");
	ck_assert_str_eq(ps.fs.client_ptr, "ptr.example.net");
	ck_assert_str_eq(ps.fs.local_addr, "198.51.100.25");
	ck_assert_uint_eq(ps.fs.local_port, 587);
	ck_assert_int_eq(ps.fs.local_sa.ss_family, AF_INET);
	ck_assert_str_eq(ps.mta_name, "mta.example.test");
	ck_assert_ptr_null(ps.fs.helo);
	ck_assert_ptr_null(ps.fs.auth_user);
	pmilter_sess_free(&ps);
}
END_TEST

/* What the MTA did not find: Postfix's "unknown", Sendmail's "[addr]", no address at all. */
START_TEST(test_sess_unknown)
{
	const struct macro sendmail[] = {
		{ "{if_addr}", "IPv6:2001:db8::25" }, { "{daemon_port}", "x" }, { NULL, NULL },
	};
	const struct macro none[] = { { NULL, NULL } };
	struct sockaddr_in6 sin6;
	struct pmilter_sess ps;

	memset(&sin6, 0, sizeof(sin6));
	sin6.sin6_family = AF_INET6;
	sin6.sin6_port = htons(25);
	inet_pton(AF_INET6, "2001:db8::1", &sin6.sin6_addr);
	pmilter_sess_init(&ps, 1, NULL, ROLE_MX);
	pmilter_sess_connect(&ps, "[2001:db8::1]", (struct sockaddr *)&sin6, table_get,
	    (void *)sendmail);
	ck_assert_str_eq(ps.fs.client_addr, "2001:db8::1");
	ck_assert_str_eq(ps.fs.client_name, "unknown");
	ck_assert_ptr_null(ps.fs.client_ptr);
	ck_assert_str_eq(ps.fs.local_addr, "2001:db8::25");
	ck_assert_uint_eq(ps.fs.local_port, 0);
	ck_assert_ptr_null(ps.mta_name);
	pmilter_sess_free(&ps);

	pmilter_sess_init(&ps, 2, NULL, ROLE_MX);
	pmilter_sess_connect(&ps, "unknown", NULL, table_get, (void *)none);
	ck_assert_str_eq(ps.fs.client_addr, "unknown");
	ck_assert_uint_eq(ps.fs.client_port, 0);
	ck_assert_int_eq(ps.fs.client_sa.ss_family, AF_UNSPEC);
	ck_assert_str_eq(ps.fs.client_name, "unknown");
	ck_assert_str_eq(ps.fs.local_addr, "");
	ck_assert_int_eq(ps.fs.local_sa.ss_family, AF_UNSPEC);
	pmilter_sess_free(&ps);
}
END_TEST

START_TEST(test_sess_helo_tls)
{
	const struct macro tls[] = {
		{ "{tls_version}", "TLSv1.3" }, { "{cipher}", "TLS_AES_256_GCM_SHA384" },
		{ "{cert_subject}", "CN=client" }, { NULL, NULL },
	};
	const struct macro plain[] = { { "{cipher}", "stale" }, { NULL, NULL } };
	struct pmilter_sess ps;

	pmilter_sess_init(&ps, 1, NULL, ROLE_MX);
	pmilter_sess_helo(&ps, "client.test", table_get, (void *)tls);
	ck_assert_str_eq(ps.fs.helo, "client.test");
	ck_assert_str_eq(ps.fs.tls_version, "TLSv1.3");
	ck_assert_str_eq(ps.fs.tls_cipher, "TLS_AES_256_GCM_SHA384");
	ck_assert_str_eq(ps.fs.tls_peer_subject, "CN=client");
	/* a second EHLO without TLS facts: none is kept, a cipher alone means nothing */
	pmilter_sess_helo(&ps, "other.test", table_get, (void *)plain);
	ck_assert_str_eq(ps.fs.helo, "other.test");
	ck_assert_ptr_null(ps.fs.tls_version);
	ck_assert_ptr_null(ps.fs.tls_cipher);
	ck_assert_ptr_null(ps.fs.tls_peer_subject);
	pmilter_sess_free(&ps);
}
END_TEST

/* {auth_authen} at each MAIL: the AUTH stage is owed for a login the chain has not seen. */
START_TEST(test_sess_auth)
{
	const struct macro none[] = { { NULL, NULL } };
	const struct macro alice[] = {
		{ "{auth_authen}", "alice@example.test" }, { "{auth_type}", "PLAIN" }, { NULL, NULL },
	};
	const struct macro bob[] = { { "{auth_authen}", "bob@example.test" }, { NULL, NULL } };
	const struct macro empty[] = { { "{auth_authen}", "" }, { NULL, NULL } };
	struct pmilter_sess ps;

	pmilter_sess_init(&ps, 1, NULL, ROLE_SUBMISSION);
	ck_assert(!pmilter_sess_auth(&ps, table_get, (void *)none));
	ck_assert_ptr_null(ps.fs.auth_user);
	ck_assert(pmilter_sess_auth(&ps, table_get, (void *)alice));
	ck_assert_str_eq(ps.fs.auth_user, "alice@example.test");
	ck_assert_str_eq(ps.fs.auth_method, "PLAIN");
	ck_assert(!pmilter_sess_auth(&ps, table_get, (void *)alice));
	ck_assert_str_eq(ps.fs.auth_user, "alice@example.test");
	ck_assert(pmilter_sess_auth(&ps, table_get, (void *)bob));
	ck_assert_str_eq(ps.fs.auth_user, "bob@example.test");
	ck_assert_ptr_null(ps.fs.auth_method);
	ck_assert(!pmilter_sess_auth(&ps, table_get, (void *)empty));
	ck_assert_ptr_null(ps.fs.auth_user);
	ck_assert_ptr_null(ps.fs.auth_method);
	pmilter_sess_free(&ps);
}
END_TEST

/* ---- end of message ---- */

/* A model of the MTA's header list: names and values as the MTA holds them (LF folds). */
struct mta {
	char *name[64];
	char *value[64];
	size_t n;
};

/* mta_insert - a field at position i (clamped) */
static void
mta_insert(struct mta *m, size_t i, const char *name, const char *value)
{
	ck_assert_uint_lt(m->n, 64);
	if (i > m->n)
		i = m->n;
	memmove(m->name + i + 1, m->name + i, (m->n - i) * sizeof(char *));
	memmove(m->value + i + 1, m->value + i, (m->n - i) * sizeof(char *));
	m->name[i] = xstrdup(name);
	m->value[i] = xstrdup(value);
	m->n++;
}

/* mta_apply - libmilter's header actions, as sendmail and Postfix apply them */
static void
mta_apply(struct mta *m, const struct pmilter_op *op)
{
	size_t i;
	unsigned seen = 0;

	switch (op->kind) {
	case PMILTER_OP_ADD_HEADER:
		mta_insert(m, m->n, op->name, op->value);
		return;
	case PMILTER_OP_INSERT_HEADER:
		mta_insert(m, op->index, op->name, op->value);
		return;
	case PMILTER_OP_CHANGE_HEADER:
		for (i = 0; i < m->n; i++)
			if (str_casecmp(m->name[i], op->name) == 0 && ++seen == op->index)
				break;
		if (i == m->n) {
			if (op->value != NULL)
				mta_insert(m, m->n, op->name, op->value);
			return;
		}
		free(m->value[i]);
		if (op->value != NULL) {
			m->value[i] = xstrdup(op->value);
			return;
		}
		free(m->name[i]);
		memmove(m->name + i, m->name + i + 1, (m->n - i - 1) * sizeof(char *));
		memmove(m->value + i, m->value + i + 1, (m->n - i - 1) * sizeof(char *));
		m->n--;
		return;
	default:
		return;
	}
}

/*
 * mta_check - the MTA held fields (name, value pairs as it sent them); after
 * the ops it holds exactly top + composed (compared as the filters read
 * fields: through pmilter_header, which test_header checks)
 */
static void
mta_check(const char *const *fields, const struct pmilter_ops *ops, const char *top,
    const struct buf *composed)
{
	struct filter_txn want, got;
	struct mta m = { .n = 0 };
	struct buf all, raw;
	size_t i;

	for (; *fields != NULL; fields += 2)
		mta_insert(&m, m.n, fields[0], fields[1]);
	for (i = 0; i < ops->n; i++)
		mta_apply(&m, &ops->v[i]);
	filter_txn_init(&got);
	buf_init(&raw);
	for (i = 0; i < m.n; i++) {
		pmilter_header(&got, &raw, m.name[i], m.value[i]);
		free(m.name[i]);
		free(m.value[i]);
	}
	buf_init(&all);
	buf_puts(&all, top);
	buf_append(&all, composed->data != NULL ? composed->data : "", composed->len);
	filter_txn_init(&want);
	if (all.len > 0)
		(void)filter_parse_headers(&want, all.data, all.len);
	ck_assert_uint_eq(got.nheaders, want.nheaders);
	for (i = 0; i < got.nheaders; i++) {
		ck_assert_str_eq(got.headers[i].name, want.headers[i].name);
		ck_assert_str_eq(got.headers[i].value, want.headers[i].value);
	}
	filter_txn_reset(&want);
	filter_txn_reset(&got);
	buf_free(&all);
	buf_free(&raw);
}

/* txn_with - a transaction whose received fields are "Name:value" pairs */
static void
txn_with(struct filter_txn *txn, const char *const *fields)
{
	struct buf raw;

	filter_txn_init(txn);
	buf_init(&raw);
	for (; *fields != NULL; fields += 2)
		pmilter_header(txn, &raw, fields[0], fields[1]);
	buf_free(&raw);
}

/*
 * Forged results claiming our authserv-id go (the last first, so that each
 * occurrence index holds), another host's stay; our results and the final
 * stage's signatures go on top, signatures first.
 */
START_TEST(test_ops_results_and_top)
{
	const char *const fields[] = {
		"Authentication-Results", " " AUTHSERV "; spf=pass smtp.mailfrom=forged@x",
		"From", " <a@origin.test>",
		"Authentication-Results", " other.example; dkim=fail",
		"Subject", " s\n\tfolded",
		"authentication-results", " (comment) " AUTHSERV "; dkim=pass",
		"To", " <b@example.test>",
		NULL,
	};
	const char *top = "DKIM-Signature: v=1; a=rsa-sha256;\r\n\tb=abc\r\nX-Sig2: t\r\n";
	struct filter_txn txn;
	struct pmilter_ops ops;
	struct buf composed;

	txn_with(&txn, fields);
	filter_add_header(&txn, "X-Added", "v\r\n\tw");
	filter_auth_result(&txn, "spf=pass smtp.mailfrom=a@origin.test");
	buf_init(&composed);
	filter_compose_headers(&txn, AUTHSERV, &composed);
	ck_assert(pmilter_ops_build(&txn, &composed, top, strlen(top), &ops));
	ck_assert_uint_eq(ops.n, 6);
	ck_assert_int_eq(ops.v[0].kind, PMILTER_OP_ADD_HEADER);
	ck_assert_str_eq(ops.v[0].name, "X-Added");
	ck_assert_str_eq(ops.v[0].value, " v\n\tw");
	ck_assert_int_eq(ops.v[1].kind, PMILTER_OP_CHANGE_HEADER);
	ck_assert_str_eq(ops.v[1].name, "authentication-results");
	ck_assert_uint_eq(ops.v[1].index, 3);
	ck_assert_ptr_null(ops.v[1].value);
	ck_assert_int_eq(ops.v[2].kind, PMILTER_OP_CHANGE_HEADER);
	ck_assert_uint_eq(ops.v[2].index, 1);
	ck_assert_ptr_null(ops.v[2].value);
	ck_assert_int_eq(ops.v[3].kind, PMILTER_OP_INSERT_HEADER);
	ck_assert_uint_eq(ops.v[3].index, 0);
	ck_assert_str_eq(ops.v[3].name, "Authentication-Results");
	ck_assert_str_eq(ops.v[3].value, " " AUTHSERV "; spf=pass smtp.mailfrom=a@origin.test");
	ck_assert_str_eq(ops.v[4].name, "X-Sig2");
	ck_assert_str_eq(ops.v[5].name, "DKIM-Signature");
	ck_assert_str_eq(ops.v[5].value, " v=1; a=rsa-sha256;\n\tb=abc");
	mta_check(fields, &ops, top, &composed);
	pmilter_ops_free(&ops);
	buf_free(&composed);
	filter_txn_reset(&txn);
}
END_TEST

/* Nothing to do: no edit, no result, nothing forged, no signature. */
START_TEST(test_ops_none)
{
	const char *const fields[] = { "From", " <a@origin.test>", "Subject", " x", NULL };
	struct filter_txn txn;
	struct pmilter_ops ops;
	struct buf composed;

	txn_with(&txn, fields);
	buf_init(&composed);
	filter_compose_headers(&txn, AUTHSERV, &composed);
	ck_assert(pmilter_ops_build(&txn, &composed, "", 0, &ops));
	ck_assert_uint_eq(ops.n, 0);
	mta_check(fields, &ops, "", &composed);
	pmilter_ops_free(&ops);
	buf_free(&composed);
	filter_txn_reset(&txn);
}
END_TEST

/*
 * Every kind of edit, in the filters' order: header edits with milter
 * indexes, values cleaned as compose cleans them, a field compose refuses
 * dropped, the envelope and the body as their actions.
 */
START_TEST(test_ops_edits)
{
	const char *const fields[] = {
		"Received", " by a", "Received", " by b", "X-Spam", " yes", "Subject", " s", NULL,
	};
	struct filter_txn txn;
	struct pmilter_ops ops;
	struct buf composed;

	txn_with(&txn, fields);
	filter_change_header(&txn, "Received", 2, "by c\x01 (cleaned)");
	filter_delete_header(&txn, "X-Spam", 1);
	filter_insert_header(&txn, 1, "X-Inserted", "here");
	filter_add_header(&txn, "Bad Name", "refused");
	filter_change_header(&txn, "X-Missing", 3, "appended");
	filter_replace_body(&txn, "new\r\nbody\r\n", 11);
	filter_change_from(&txn, "bounce@example.test", "BODY=8BITMIME");
	filter_add_rcpt(&txn, "carol@example.test", "");
	filter_add_rcpt(&txn, "dave@example.test", "NOTIFY=NEVER");
	filter_delete_rcpt(&txn, "bob@example.test");
	buf_init(&composed);
	filter_compose_headers(&txn, AUTHSERV, &composed);
	ck_assert(pmilter_ops_build(&txn, &composed, "", 0, &ops));
	ck_assert_uint_eq(ops.n, 9);
	ck_assert_int_eq(ops.v[0].kind, PMILTER_OP_CHANGE_HEADER);
	ck_assert_str_eq(ops.v[0].name, "Received");
	ck_assert_uint_eq(ops.v[0].index, 2);
	ck_assert_str_eq(ops.v[0].value, " by c  (cleaned)");
	ck_assert_int_eq(ops.v[1].kind, PMILTER_OP_CHANGE_HEADER);
	ck_assert_str_eq(ops.v[1].name, "X-Spam");
	ck_assert_ptr_null(ops.v[1].value);
	ck_assert_int_eq(ops.v[2].kind, PMILTER_OP_INSERT_HEADER);
	ck_assert_uint_eq(ops.v[2].index, 1);
	ck_assert_str_eq(ops.v[2].value, " here");
	ck_assert_int_eq(ops.v[3].kind, PMILTER_OP_CHANGE_HEADER);
	ck_assert_str_eq(ops.v[3].name, "X-Missing");
	ck_assert_int_eq(ops.v[4].kind, PMILTER_OP_REPLACE_BODY);
	ck_assert_uint_eq(ops.v[4].value_len, 11);
	ck_assert_mem_eq(ops.v[4].value, "new\r\nbody\r\n", 11);
	ck_assert_int_eq(ops.v[5].kind, PMILTER_OP_CHANGE_FROM);
	ck_assert_str_eq(ops.v[5].name, "<bounce@example.test>");
	ck_assert_str_eq(ops.v[5].params, "BODY=8BITMIME");
	ck_assert_int_eq(ops.v[6].kind, PMILTER_OP_ADD_RCPT);
	ck_assert_str_eq(ops.v[6].name, "<carol@example.test>");
	ck_assert_ptr_null(ops.v[6].params);
	ck_assert_str_eq(ops.v[7].params, "NOTIFY=NEVER");
	ck_assert_int_eq(ops.v[8].kind, PMILTER_OP_DELETE_RCPT);
	ck_assert_str_eq(ops.v[8].name, "<bob@example.test>");
	mta_check(fields, &ops, "", &composed);
	pmilter_ops_free(&ops);
	buf_free(&composed);
	filter_txn_reset(&txn);
}
END_TEST

/* A composed block that is not txn's: nothing is taken for dropped. */
START_TEST(test_ops_mismatch)
{
	const char *const fields[] = {
		"Authentication-Results", " " AUTHSERV "; spf=pass", "From", " <a@b>", NULL,
	};
	const char *const others[] = { "From", " <c@d>", NULL };
	struct filter_txn txn, other;
	struct pmilter_ops ops;
	struct buf composed;

	txn_with(&txn, fields);
	txn_with(&other, others);
	buf_init(&composed);
	filter_compose_headers(&other, AUTHSERV, &composed);
	ck_assert(!pmilter_ops_build(&txn, &composed, "", 0, &ops));
	ck_assert_uint_eq(ops.n, 0);
	pmilter_ops_free(&ops);
	buf_free(&composed);
	filter_txn_reset(&other);
	filter_txn_reset(&txn);
}
END_TEST

/* ---- replies ---- */

START_TEST(test_reply_text)
{
	struct filter_reply r;
	char out[16];

	memset(&r, 0, sizeof(r));
	str_copy(r.text, "50% off", sizeof(r.text));
	pmilter_reply_text(&r, out, sizeof(out));
	ck_assert_str_eq(out, "50%% off");
	r.text[0] = '\0';
	pmilter_reply_text(&r, out, sizeof(out));
	ck_assert_str_eq(out, "Error");
	/* cut to fit, never half a doubled '%' */
	str_copy(r.text, "aaaaaaaaaaaa%%%%", sizeof(r.text));
	pmilter_reply_text(&r, out, sizeof(out));
	ck_assert_str_eq(out, "aaaaaaaaaaaa%%");
}
END_TEST

/* portier_milter_suite - every test case above */
static Suite *
portier_milter_suite(void)
{
	Suite *s = suite_create("portier_milter");
	TCase *tc;

	tc = tcase_create("envelope");
	tcase_add_loop_test(tc, test_addr, 0, (int)ARRAY_SIZE(addr_cases));
	tcase_add_test(tc, test_params);
	suite_add_tcase(s, tc);

	tc = tcase_create("headers");
	tcase_add_loop_test(tc, test_header, 0, (int)ARRAY_SIZE(header_cases));
	tcase_add_test(tc, test_header_many);
	suite_add_tcase(s, tc);

	tc = tcase_create("session");
	tcase_add_test(tc, test_sess_connect);
	tcase_add_test(tc, test_sess_unknown);
	tcase_add_test(tc, test_sess_helo_tls);
	tcase_add_test(tc, test_sess_auth);
	suite_add_tcase(s, tc);

	tc = tcase_create("eom");
	tcase_add_test(tc, test_ops_results_and_top);
	tcase_add_test(tc, test_ops_none);
	tcase_add_test(tc, test_ops_edits);
	tcase_add_test(tc, test_ops_mismatch);
	tcase_add_test(tc, test_reply_text);
	suite_add_tcase(s, tc);
	return s;
}

/* main - run the suite; the exit status tells make check */
UNIT_MAIN(portier_milter_suite)
