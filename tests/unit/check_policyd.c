/*
 * check_policyd.c - unit tests for the policyd filter (filters/policyd.c):
 * the reply parser (fed whole and byte by byte), the action table
 * (access(5) words to verdicts and replies), the request encoder (every
 * attribute, its order and values at each stage, controls in values, a
 * request too large), the socket and stage parsers and configure().
 * No I/O: the protocol over real sockets is tests/integration/test_policyd.py.
 */
#include "config.h"

#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/un.h>
#include <netinet/in.h>

#include "buf.h"
#include "conf.h"
#include "filter.h"
#include "spool.h"
#include "util.h"
#include "policyd.h"
#include "unit.h"

/* ---- the reply parser ---- */

static const struct {
	const char *in;
	size_t max;
	enum policyd_reply_status want;
	const char *action;	/* DONE: the action; ERROR: a word of why */
} reply_cases[] = {
	{ "action=DUNNO\n\n", 2048, POLICYD_REPLY_DONE, "DUNNO" },
	{ "action=DUNNO\r\n\r\n", 2048, POLICYD_REPLY_DONE, "DUNNO" },
	{ "action=\n\n", 2048, POLICYD_REPLY_DONE, "" },
	{ "foo=bar\naction=REJECT no\nx=y=z\n\n", 2048, POLICYD_REPLY_DONE, "REJECT no" },
	{ "action=OK\naction=REJECT\n\n", 2048, POLICYD_REPLY_DONE, "OK" },	/* the first one */
	{ "action=PREPEND X-A: b=c\n\n", 2048, POLICYD_REPLY_DONE, "PREPEND X-A: b=c" },
	{ "action=DUNNO\n", 2048, POLICYD_REPLY_MORE, NULL },
	{ "action=DUNNO", 2048, POLICYD_REPLY_MORE, NULL },
	{ "", 2048, POLICYD_REPLY_MORE, NULL },
	{ "\n", 2048, POLICYD_REPLY_ERROR, "without action" },
	{ "x=1\n\n", 2048, POLICYD_REPLY_ERROR, "without action" },
	{ "hello\n\n", 2048, POLICYD_REPLY_ERROR, "name=value" },
	{ "=DUNNO\n\n", 2048, POLICYD_REPLY_ERROR, "name=value" },
	{ "action=DU\0NNO\n\n", 2048, POLICYD_REPLY_ERROR, "NUL" },
	{ "action=DU\rNNO\n\n", 2048, POLICYD_REPLY_ERROR, "control character" },
	{ "action=REJECT no\x01way\n\n", 2048, POLICYD_REPLY_ERROR, "control character" },
	{ "action=REJECT no\x7fway\n\n", 2048, POLICYD_REPLY_ERROR, "control character" },
	{ "action=REJECT\tno way\n\n", 2048, POLICYD_REPLY_DONE, "REJECT\tno way" },
	/* max_reply: 16 octets of a line, its line end excluded */
	{ "action=123456789\n\n", 16, POLICYD_REPLY_DONE, "123456789" },
	{ "action=123456789\r\n\r\n", 16, POLICYD_REPLY_DONE, "123456789" },
	{ "action=1234567890\n\n", 16, POLICYD_REPLY_ERROR, "max_reply" },
	{ "action=123456789", 16, POLICYD_REPLY_MORE, NULL },
	{ "action=123456789\r", 16, POLICYD_REPLY_MORE, NULL },	/* the CR may end it */
	{ "action=1234567890", 16, POLICYD_REPLY_ERROR, "max_reply" },	/* seen before its end */
	{ "action=123456789\rx", 16, POLICYD_REPLY_ERROR, "max_reply" },
};

/* reply_len - a case's input length (it may hold a NUL) */
static size_t
reply_len(const char *in)
{
	size_t n = strlen(in);

	if (strncmp(in, "action=DU", 9) == 0 && n == 9)
		n += 1 + strlen(in + 10);	/* the NUL case */
	return n;
}

/* reply_check - the outcome against the case */
static void
reply_check(int i, const struct policyd_reply *rp, enum policyd_reply_status st)
{
	ck_assert_msg(st == reply_cases[i].want, "case %d: status %d", i, (int)st);
	if (st == POLICYD_REPLY_DONE)
		ck_assert_str_eq(rp->action, reply_cases[i].action);
	else if (st == POLICYD_REPLY_ERROR)
		ck_assert_msg(strstr(rp->why, reply_cases[i].action) != NULL, "case %d: why \"%s\"",
		    i, rp->why);
}

START_TEST(test_reply_whole)
{
	struct policyd_reply rp;
	size_t len = reply_len(reply_cases[_i].in), used;
	enum policyd_reply_status st;

	policyd_reply_init(&rp, reply_cases[_i].max);
	st = policyd_reply_feed(&rp, reply_cases[_i].in, len, &used);
	reply_check(_i, &rp, st);
	if (st == POLICYD_REPLY_DONE)
		ck_assert_uint_eq(used, len);
	ck_assert_uint_le(used, len);
	policyd_reply_free(&rp);
}
END_TEST

/* Byte by byte: the unconsumed rest is offered again with each new octet. */
START_TEST(test_reply_bytewise)
{
	struct policyd_reply rp;
	size_t len = reply_len(reply_cases[_i].in), have, start = 0, used;
	enum policyd_reply_status st = POLICYD_REPLY_MORE;

	policyd_reply_init(&rp, reply_cases[_i].max);
	for (have = 1; have <= len && st == POLICYD_REPLY_MORE; have++) {
		st = policyd_reply_feed(&rp, reply_cases[_i].in + start, have - start, &used);
		start += used;
	}
	reply_check(_i, &rp, st);
	policyd_reply_free(&rp);
}
END_TEST

START_TEST(test_reply_too_many_lines)
{
	struct policyd_reply rp;
	struct buf b;
	size_t used;
	int i;

	buf_init(&b);
	for (i = 0; i <= POLICYD_REPLY_MAX_LINES; i++)
		buf_printf(&b, "x%d=y\n", i);
	buf_puts(&b, "action=OK\n\n");
	policyd_reply_init(&rp, 2048);
	ck_assert_int_eq(policyd_reply_feed(&rp, b.data, b.len, &used), POLICYD_REPLY_ERROR);
	ck_assert_ptr_nonnull(strstr(rp.why, "too many"));
	policyd_reply_free(&rp);
	buf_free(&b);
}
END_TEST

/* The offending line is kept for the log, a NUL made visible. */
START_TEST(test_reply_error_line)
{
	struct policyd_reply rp;
	size_t used;

	policyd_reply_init(&rp, 2048);
	ck_assert_int_eq(policyd_reply_feed(&rp, "ok=1\nbad\0line\n\n", 15, &used),
	    POLICYD_REPLY_ERROR);
	ck_assert_str_eq(rp.line, "bad?line");
	policyd_reply_free(&rp);
}
END_TEST

/* ---- actions ---- */

static const struct {
	const char *action;
	bool ok;
	enum policyd_act act;
	enum filter_verdict verdict;
	int code;
	const char *ecode;
	const char *text;	/* reply text, or arg for PREPEND/REDIRECT/BCC */
} action_cases[] = {
	{ "OK", true, POLICYD_ACT_DUNNO, FILTER_CONTINUE, 0, "", NULL },
	{ "ok", true, POLICYD_ACT_DUNNO, FILTER_CONTINUE, 0, "", NULL },
	{ "DUNNO", true, POLICYD_ACT_DUNNO, FILTER_CONTINUE, 0, "", NULL },
	{ "  dunno  ", true, POLICYD_ACT_DUNNO, FILTER_CONTINUE, 0, "", NULL },
	{ "", true, POLICYD_ACT_DUNNO, FILTER_CONTINUE, 0, "", NULL },
	{ "   ", true, POLICYD_ACT_DUNNO, FILTER_CONTINUE, 0, "", NULL },
	{ "1234567", true, POLICYD_ACT_DUNNO, FILTER_CONTINUE, 0, "", NULL },
	{ "450", true, POLICYD_ACT_DUNNO, FILTER_CONTINUE, 0, "", NULL },	/* all digits: OK */
	{ "450 ", true, POLICYD_ACT_DEFER, FILTER_TEMPFAIL, 450, "4.7.1", "Access denied" },
	{ "  550 ", true, POLICYD_ACT_REJECT, FILTER_REJECT, 550, "5.7.1", "Access denied" },
	{ "OK then", false, 0, 0, 0, NULL, NULL },
	{ "DUNNOX", false, 0, 0, 0, NULL, NULL },
	{ "REJECT", true, POLICYD_ACT_REJECT, FILTER_REJECT, 554, "5.7.1", "Access denied" },
	{ "reject  go away ", true, POLICYD_ACT_REJECT, FILTER_REJECT, 554, "5.7.1", "go away" },
	{ "REJECT 5.7.23 SPF fail", true, POLICYD_ACT_REJECT, FILTER_REJECT, 554, "5.7.23",
	    "SPF fail" },
	{ "REJECT 4.7.1 wrong class", true, POLICYD_ACT_REJECT, FILTER_REJECT, 554, "5.7.1",
	    "wrong class" },
	{ "REJECT 5.7.1000 not an ecode", true, POLICYD_ACT_REJECT, FILTER_REJECT, 554, "5.7.1",
	    "5.7.1000 not an ecode" },
	{ "REJECTED", false, 0, 0, 0, NULL, NULL },
	{ "550 5.7.23 Message rejected", true, POLICYD_ACT_REJECT, FILTER_REJECT, 550, "5.7.23",
	    "Message rejected" },
	{ "521 gone", true, POLICYD_ACT_REJECT, FILTER_REJECT, 521, "5.7.1", "gone" },
	{ "450 4.2.0 Greylisted", true, POLICYD_ACT_DEFER, FILTER_TEMPFAIL, 450, "4.2.0",
	    "Greylisted" },
	{ "451\tlater", true, POLICYD_ACT_DEFER, FILTER_TEMPFAIL, 451, "4.7.1", "later" },
	{ "450 5.7.1 fixed", true, POLICYD_ACT_DEFER, FILTER_TEMPFAIL, 450, "4.7.1", "fixed" },
	{ "250 fine", false, 0, 0, 0, NULL, NULL },
	{ "650 no", false, 0, 0, 0, NULL, NULL },
	{ "45 short", false, 0, 0, 0, NULL, NULL },
	{ "4500 long", false, 0, 0, 0, NULL, NULL },
	{ "450x no", false, 0, 0, 0, NULL, NULL },
	{ "DEFER", true, POLICYD_ACT_DEFER, FILTER_TEMPFAIL, 450, "4.7.1", "Access denied" },
	{ "DEFER try later", true, POLICYD_ACT_DEFER, FILTER_TEMPFAIL, 450, "4.7.1", "try later" },
	{ "DEFER_IF_PERMIT Greylisted, see http://x/", true, POLICYD_ACT_DEFER, FILTER_TEMPFAIL,
	    450, "4.7.1", "Greylisted, see http://x/" },
	{ "defer_if_permit 4.7.24 SPF temperror", true, POLICYD_ACT_DEFER, FILTER_TEMPFAIL, 450,
	    "4.7.24", "SPF temperror" },
	{ "DEFER_IF_REJECT maybe", true, POLICYD_ACT_DEFER_IF_REJECT, FILTER_CONTINUE, 0, "",
	    NULL },
	{ "DISCARD", true, POLICYD_ACT_DISCARD, FILTER_DISCARD, 0, "", NULL },
	{ "discard spam", true, POLICYD_ACT_DISCARD, FILTER_DISCARD, 0, "", NULL },
	{ "HOLD", true, POLICYD_ACT_HOLD, FILTER_QUARANTINE, 0, "", "" },
	{ "HOLD looks odd", true, POLICYD_ACT_HOLD, FILTER_QUARANTINE, 0, "", "looks odd" },
	{ "Quarantine why not", true, POLICYD_ACT_HOLD, FILTER_QUARANTINE, 0, "", "why not" },
	{ "PREPEND X-Greylist: delayed 2 seconds", true, POLICYD_ACT_PREPEND, FILTER_CONTINUE, 0,
	    "", "X-Greylist: delayed 2 seconds" },
	{ "prepend Received-SPF: Pass (mailfrom) identity=mailfrom", true, POLICYD_ACT_PREPEND,
	    FILTER_CONTINUE, 0, "", "Received-SPF: Pass (mailfrom) identity=mailfrom" },
	{ "PREPEND X-Empty:", true, POLICYD_ACT_PREPEND, FILTER_CONTINUE, 0, "", "X-Empty:" },
	{ "PREPEND X-Tab:\tv", true, POLICYD_ACT_PREPEND, FILTER_CONTINUE, 0, "", "X-Tab:\tv" },
	{ "PREPEND", false, 0, 0, 0, NULL, NULL },
	{ "PREPEND no header", false, 0, 0, 0, NULL, NULL },
	{ "PREPEND : value", false, 0, 0, 0, NULL, NULL },
	{ "PREPEND X-A: a\rb", false, 0, 0, 0, NULL, NULL },
	{ "PREPEND X\x01Y: v", false, 0, 0, 0, NULL, NULL },
	{ "REDIRECT other@example.test", true, POLICYD_ACT_REDIRECT, FILTER_CONTINUE, 0, "",
	    "other@example.test" },
	{ "REDIRECT", false, 0, 0, 0, NULL, NULL },
	{ "REDIRECT nobody", false, 0, 0, 0, NULL, NULL },
	{ "REDIRECT a b@c", false, 0, 0, 0, NULL, NULL },
	{ "REDIRECT <a@b>", false, 0, 0, 0, NULL, NULL },
	{ "BCC audit@example.test", true, POLICYD_ACT_BCC, FILTER_CONTINUE, 0, "",
	    "audit@example.test" },
	{ "BCC @example.test", false, 0, 0, 0, NULL, NULL },
	{ "WARN look", true, POLICYD_ACT_WARN, FILTER_CONTINUE, 0, "", NULL },
	{ "INFO fyi", true, POLICYD_ACT_WARN, FILTER_CONTINUE, 0, "", NULL },
	{ "FILTER smtp:[127.0.0.1]:10025", true, POLICYD_ACT_UNSUPPORTED, FILTER_CONTINUE, 0, "",
	    NULL },
	{ "permit", false, 0, 0, 0, NULL, NULL },
	{ "reject_unknown_client_hostname", false, 0, 0, 0, NULL, NULL },
	{ "FROBNICATE", false, 0, 0, 0, NULL, NULL },
};

START_TEST(test_action)
{
	char *copy = xstrdup(action_cases[_i].action);
	struct policyd_action a;
	bool ok = policyd_action_parse(copy, &a);

	ck_assert_msg(ok == action_cases[_i].ok, "\"%s\": %d", action_cases[_i].action, ok);
	if (ok) {
		ck_assert_int_eq(a.act, action_cases[_i].act);
		ck_assert_int_eq(a.verdict, action_cases[_i].verdict);
		ck_assert_int_eq(a.reply.code, action_cases[_i].code);
		ck_assert_str_eq(a.reply.ecode, action_cases[_i].ecode);
		if (action_cases[_i].act == POLICYD_ACT_PREPEND ||
		    action_cases[_i].act == POLICYD_ACT_REDIRECT ||
		    action_cases[_i].act == POLICYD_ACT_BCC)
			ck_assert_str_eq(a.arg, action_cases[_i].text);
		else if (action_cases[_i].text != NULL)
			ck_assert_str_eq(a.reply.text, action_cases[_i].text);
	}
	free(copy);
}
END_TEST

/* ---- the request ---- */

/* A session on 192.0.2.1:4321 -> 198.51.100.25:25, HELO'd, no TLS, no AUTH. */
static void
session_init(struct filter_session *s)
{
	memset(s, 0, sizeof(*s));
	s->id = 0x2a;
	s->listener = "mx";
	s->client_addr = "192.0.2.1";
	s->client_port = 4321;
	s->local_addr = "198.51.100.25";
	s->local_port = 25;
	s->client_name = "mail.example.org";
	s->client_ptr = "mail.example.org";
	s->helo = "mail.example.org";
	s->esmtp = true;
}

static const char want_rcpt[] =
    "request=smtpd_access_policy\n"
    "protocol_state=RCPT\n"
    "protocol_name=ESMTP\n"
    "helo_name=mail.example.org\n"
    "queue_id=00000000002a.1\n"
    "sender=a@example.org\n"
    "recipient=b@example.test\n"
    "recipient_count=0\n"
    "client_address=192.0.2.1\n"
    "client_name=mail.example.org\n"
    "reverse_client_name=mail.example.org\n"
    "instance=00000000002a.1\n"
    "sasl_method=\n"
    "sasl_username=\n"
    "sasl_sender=\n"
    "size=1234\n"
    "ccert_subject=\n"
    "ccert_issuer=\n"
    "ccert_fingerprint=\n"
    "ccert_pubkey_fingerprint=\n"
    "encryption_protocol=\n"
    "encryption_cipher=\n"
    "encryption_keysize=0\n"
    "etrn_domain=\n"
    "stress=\n"
    "client_port=4321\n"
    "policy_context=ctx\n"
    "server_address=198.51.100.25\n"
    "server_port=25\n"
    "compatibility_level=\n"
    "mail_version=" PACKAGE_VERSION "\n"
    "\n";

START_TEST(test_encode_rcpt)
{
	struct filter_session s;
	struct filter_txn t;
	struct policyd_query q;
	struct buf out;
	char *err = NULL;

	session_init(&s);
	filter_txn_init(&t);
	t.queue_id = xstrdup("00000000002a.1");
	t.mail_from = xstrdup("a@example.org");
	t.mail_params = xstrdup("BODY=8BITMIME SIZE=1234");
	q = (struct policyd_query){ POLICYD_RCPT, &s, &t, "b@example.test", "ctx" };
	buf_init(&out);
	ck_assert(policyd_encode(&q, &out, &err));
	ck_assert_str_eq(out.data, want_rcpt);
	buf_free(&out);
	filter_txn_reset(&t);
}
END_TEST

/* attr - the value of name= in a request, copied into buf ("" if absent: the test fails) */
static const char *
attr(const char *req, const char *name, char *buf, size_t size)
{
	char key[64];
	const char *p, *end;

	snprintf(key, sizeof(key), "\n%s=", name);
	buf[0] = '\0';
	if ((p = strstr(req, key)) == NULL)
		return buf;
	p += strlen(key);
	end = strchr(p, '\n');
	snprintf(buf, size, "%.*s", (int)(end - p), p);
	return buf;
}

/* An attribute and the value a request must have for it. */
struct want {
	const char *name, *value;
};

/* encode_check - encode q: one request, ending at its first empty line, with the values of want */
static void
encode_check(const struct policyd_query *q, const struct want *want, size_t n)
{
	struct buf out;
	char *err = NULL, v[256];
	size_t i;

	buf_init(&out);
	ck_assert(policyd_encode(q, &out, &err));
	ck_assert_ptr_eq(strstr(out.data, "\n\n"), out.data + out.len - 2);
	for (i = 0; i < n; i++)
		ck_assert_msg(strcmp(attr(out.data, want[i].name, v, sizeof(v)), want[i].value) == 0,
		    "%s=\"%s\", not \"%s\"", want[i].name, v, want[i].value);
	buf_free(&out);
}

/* CONNECT: nothing of a transaction, the session's instance; TLS and AUTH facts. */
START_TEST(test_encode_connect_tls)
{
	static const struct want want[] = {
		{ "protocol_state", "CONNECT" }, { "protocol_name", "ESMTP" }, { "helo_name", "" },
		{ "queue_id", "" }, { "sender", "" }, { "instance", "00000000002a.0" },
		{ "client_name", "unknown" }, { "reverse_client_name", "unknown" },
		{ "encryption_protocol", "TLSv1.3" }, { "encryption_cipher", "TLS_AES_256_GCM_SHA384" },
		{ "encryption_keysize", "" }, { "ccert_subject", "client.example.org" },
		{ "sasl_username", "alice" }, { "sasl_method", "PLAIN" }, { "size", "0" },
	};
	struct filter_session s;
	struct policyd_query q;

	session_init(&s);
	s.helo = NULL;
	s.client_ptr = NULL;
	s.client_name = "unknown";
	s.tls_version = "TLSv1.3";
	s.tls_cipher = "TLS_AES_256_GCM_SHA384";
	s.tls_peer_subject = "/C=DE/CN=client.example.org/emailAddress=x@y";
	s.auth_user = "alice";
	s.auth_method = "PLAIN";
	q = (struct policyd_query){ POLICYD_CONNECT, &s, NULL, NULL, "" };
	encode_check(&q, want, ARRAY_SIZE(want));
}
END_TEST

/* HELO: the name given; HELO, not EHLO: SMTP; a session without an IP socket. */
START_TEST(test_encode_helo)
{
	static const struct want want[] = {
		{ "protocol_state", "HELO" }, { "protocol_name", "SMTP" },
		{ "helo_name", "new.example.org" }, { "client_port", "" }, { "server_port", "" },
	};
	struct filter_session s;
	struct policyd_query q;

	session_init(&s);
	s.helo = NULL;
	s.esmtp = false;
	s.client_port = 0;
	s.local_port = 0;
	s.local_addr = "";
	q = (struct policyd_query){ POLICYD_HELO, &s, NULL, "new.example.org", "" };
	encode_check(&q, want, ARRAY_SIZE(want));
}
END_TEST

/* END-OF-MESSAGE: the count, the one recipient (or none of several), the message's size. */
START_TEST(test_encode_eom)
{
	static char *rcpts[] = { "x@example.test", "y@example.test" };
	static const struct want one[] = {
		{ "protocol_state", "END-OF-MESSAGE" }, { "recipient", "x@example.test" },
		{ "recipient_count", "1" }, { "size", "21" }, { "sender", "" },
		{ "instance", "00000000002a.3" },
	};
	static const struct want two[] = { { "recipient", "" }, { "recipient_count", "2" } };
	struct filter_session s;
	struct filter_txn t;
	struct policyd_query q;
	const char *serr = NULL;

	session_init(&s);
	filter_txn_init(&t);
	t.queue_id = xstrdup("00000000002a.3");
	t.mail_from = xstrdup("");
	t.mail_params = xstrdup("SIZE=99");
	t.body = spool_new(1 << 20, NULL);
	ck_assert(spool_write(t.body, "Subject: x\r\n\r\nhello\r\n", 21, &serr));
	t.rcpts = rcpts;
	t.nrcpts = 1;
	q = (struct policyd_query){ POLICYD_EOM, &s, &t, NULL, "" };
	encode_check(&q, one, ARRAY_SIZE(one));
	t.nrcpts = 2;
	encode_check(&q, two, ARRAY_SIZE(two));
	t.rcpts = NULL;
	t.nrcpts = 0;
	spool_free(t.body);
	t.body = NULL;
	filter_txn_reset(&t);
}
END_TEST

/* A control in a value cannot break the request: it goes as '?'. */
START_TEST(test_encode_controls)
{
	static const struct want want[] = {
		{ "client_name", "evil?recipient=x@y???name?" }, { "policy_context", "a?b" },
		{ "recipient", "" },
	};
	struct filter_session s;
	struct policyd_query q;

	session_init(&s);
	s.client_name = "evil\nrecipient=x@y\r\n\nname\x7f";
	q = (struct policyd_query){ POLICYD_CONNECT, &s, NULL, NULL, "a\tb" };
	encode_check(&q, want, ARRAY_SIZE(want));
}
END_TEST

/* A request over POLICYD_REQUEST_MAX is a failure, not a crash. */
START_TEST(test_encode_too_large)
{
	struct filter_session s;
	struct policyd_query q;
	struct buf out;
	char *err = NULL, *big = xmalloc(POLICYD_REQUEST_MAX + 1);

	memset(big, 'a', POLICYD_REQUEST_MAX);
	big[POLICYD_REQUEST_MAX] = '\0';
	session_init(&s);
	q = (struct policyd_query){ POLICYD_HELO, &s, NULL, big, "" };
	buf_init(&out);
	ck_assert(!policyd_encode(&q, &out, &err));
	ck_assert_ptr_nonnull(err);
	ck_assert_ptr_nonnull(strstr(err, "octets"));
	free(err);
	buf_free(&out);
	free(big);
}
END_TEST

/* ---- configuration ---- */

static const struct {
	const char *value;
	bool ok;
	unsigned mask;
} stages_cases[] = {
	{ "rcpt", true, 1u << POLICYD_RCPT },
	{ "RCPT data", true, 1u << POLICYD_RCPT | 1u << POLICYD_EOM },
	{ "connect,helo, mail rcpt\tdata", true, 0x1f },
	{ "rcpt rcpt", true, 1u << POLICYD_RCPT },
	{ "", false, 0 },
	{ " , ", false, 0 },
	{ "rcpt eom", false, 0 },
	{ "auth", false, 0 },
};

START_TEST(test_stages)
{
	unsigned mask = 0;
	char *err = NULL;
	bool ok = policyd_parse_stages(stages_cases[_i].value, &mask, &err);

	ck_assert_msg(ok == stages_cases[_i].ok, "\"%s\"", stages_cases[_i].value);
	if (ok)
		ck_assert_uint_eq(mask, stages_cases[_i].mask);
	else
		ck_assert_ptr_nonnull(err);
	free(err);
}
END_TEST

static const struct {
	const char *spec;
	int family;		/* 0: refused */
	unsigned port;
} socket_cases[] = {
	{ "inet:127.0.0.1:10023", AF_INET, 10023 },
	{ "inet:localhost:12340", AF_INET, 12340 },
	{ "inet6:[::1]:65535", AF_INET6, 65535 },
	{ "unix:/run/policyd.sock", AF_UNIX, 0 },
	{ "inet:10025@127.0.0.1", AF_INET, 10025 },	/* Sendmail's form */
	{ "inet:25@", 0, 0 },
	{ "inet:@127.0.0.1", 0, 0 },
	{ "inet:123456@127.0.0.1", 0, 0 },
	{ "inet:127.0.0.1:0", 0, 0 },
	{ "inet:127.0.0.1:65536", 0, 0 },
	{ "inet:127.0.0.1:", 0, 0 },
	{ "inet:127.0.0.1", 0, 0 },
	{ "inet::25", 0, 0 },
	{ "inet:[::1]:25", 0, 0 },
	{ "inet:::1:25", 0, 0 },
	{ "inet6:::1:25", 0, 0 },
	{ "inet6:[127.0.0.1]:25", 0, 0 },
	{ "inet6:[]:25", 0, 0 },
	{ "inet6:[::1]25", 0, 0 },
	{ "unix:", 0, 0 },
	{ "tcp:127.0.0.1:25", 0, 0 },
	{ "127.0.0.1:25", 0, 0 },
	{ "inet:127.0.0.1:25x", 0, 0 },
};

START_TEST(test_socket)
{
	struct sockaddr_storage ss;
	socklen_t len = 0;
	char *err = NULL;
	bool ok = filter_parse_socket(socket_cases[_i].spec, &ss, &len, &err);

	ck_assert_msg(ok == (socket_cases[_i].family != 0), "\"%s\": %s", socket_cases[_i].spec,
	    err != NULL ? err : "accepted");
	if (ok) {
		ck_assert_int_eq(ss.ss_family, socket_cases[_i].family);
		if (ss.ss_family == AF_INET)
			ck_assert_uint_eq(ntohs(((struct sockaddr_in *)&ss)->sin_port),
			    socket_cases[_i].port);
		else if (ss.ss_family == AF_INET6)
			ck_assert_uint_eq(ntohs(((struct sockaddr_in6 *)&ss)->sin6_port),
			    socket_cases[_i].port);
		else
			ck_assert_str_eq(((struct sockaddr_un *)&ss)->sun_path, "/run/policyd.sock");
	} else
		ck_assert_ptr_nonnull(err);
	free(err);
}
END_TEST

START_TEST(test_socket_path_too_long)
{
	struct sockaddr_storage ss;
	socklen_t len;
	char spec[sizeof(((struct sockaddr_un *)NULL)->sun_path) + 8], *err = NULL;

	memcpy(spec, "unix:/", 6);
	memset(spec + 6, 'a', sizeof(spec) - 7);
	spec[sizeof(spec) - 1] = '\0';
	ck_assert(!filter_parse_socket(spec, &ss, &len, &err));
	free(err);
}
END_TEST

/* configure(): the section's keys, through the filter's ops */
static const struct {
	const char *kv[6][2];
	const char *err;	/* NULL: accepted */
} conf_cases[] = {
	{ { { "socket", "inet:127.0.0.1:10023" } }, NULL },
	{ { { "socket", "unix:/tmp/p" }, { "stages", "connect data" }, { "max_reply", "16" },
	    { "idle_timeout", "0" }, { "policy_context", "" }, { "timeout", "5" } }, NULL },
	{ { { "default_action", "accept" } }, "socket is required" },
	{ { { "socket", "inet:127.0.0.1:10023" }, { "max_reply", "15" } }, "max_reply" },
	{ { { "socket", "inet:127.0.0.1:10023" }, { "max_reply", "2k" } }, "max_reply" },
	{ { { "socket", "inet:127.0.0.1:10023" }, { "idle_timeout", "3601" } }, "idle_timeout" },
	{ { { "socket", "inet:127.0.0.1:10023" }, { "stages", "body" } }, "stages" },
	{ { { "socket", "inet:127.0.0.1" } }, "socket" },
	{ { { "socket", "inet:127.0.0.1:10023" }, { "sockets", "x" } }, "unknown key" },
};

START_TEST(test_configure)
{
	struct conf_kv kv[6];
	struct conf_section sec = { "policyd", "p", 1, kv, 0 };
	char *err = NULL;
	void *inst;
	size_t i;

	for (i = 0; i < 6 && conf_cases[_i].kv[i][0] != NULL; i++) {
		kv[i].key = (char *)conf_cases[_i].kv[i][0];
		kv[i].value = (char *)conf_cases[_i].kv[i][1];
		kv[i].line = (int)i + 2;
	}
	sec.nkv = i;
	inst = policyd_ops.configure(NULL, &sec, &err);
	if (conf_cases[_i].err == NULL) {
		ck_assert_msg(inst != NULL, "case %d: %s", _i, err != NULL ? err : "?");
		policyd_ops.destroy(inst);
	} else {
		ck_assert_ptr_null(inst);
		ck_assert_msg(err != NULL && strstr(err, conf_cases[_i].err) != NULL,
		    "case %d: \"%s\"", _i, err != NULL ? err : "(none)");
	}
	free(err);
}
END_TEST

static Suite *
policyd_suite(void)
{
	Suite *s = suite_create("policyd");
	TCase *tc = tcase_create("core");

	tcase_add_loop_test(tc, test_reply_whole, 0, ARRAY_SIZE(reply_cases));
	tcase_add_loop_test(tc, test_reply_bytewise, 0, ARRAY_SIZE(reply_cases));
	tcase_add_test(tc, test_reply_too_many_lines);
	tcase_add_test(tc, test_reply_error_line);
	tcase_add_loop_test(tc, test_action, 0, ARRAY_SIZE(action_cases));
	tcase_add_test(tc, test_encode_rcpt);
	tcase_add_test(tc, test_encode_connect_tls);
	tcase_add_test(tc, test_encode_helo);
	tcase_add_test(tc, test_encode_eom);
	tcase_add_test(tc, test_encode_controls);
	tcase_add_test(tc, test_encode_too_large);
	tcase_add_loop_test(tc, test_stages, 0, ARRAY_SIZE(stages_cases));
	tcase_add_loop_test(tc, test_socket, 0, ARRAY_SIZE(socket_cases));
	tcase_add_test(tc, test_socket_path_too_long);
	tcase_add_loop_test(tc, test_configure, 0, ARRAY_SIZE(conf_cases));
	suite_add_tcase(s, tc);
	return s;
}

UNIT_MAIN(policyd_suite)
