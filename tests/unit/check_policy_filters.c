/*
 * check_policy_filters.c - unit tests for the role policies as filters:
 * port25 (policy/port25.c) and auth-enforce (policy/auth_enforce.c), driven
 * through filter_run like any chain; the roles' checks in conf.c; and the
 * chain a snapshot builds for each role (server.c).
 *
 * Every refusal is compared with the session's table reply byte for byte:
 * the filters must answer exactly what the session did when the decisions
 * were its own.  Temp files (maps, configs) live in $TMPDIR and are removed.
 */
#include "config.h"

#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "util.h"
#include "buf.h"
#include "conf.h"
#include "filter.h"
#include "server.h"
#include "smtp_reply.h"
#include "builtin.h"
#include "unit.h"

static struct conf test_conf;
static char *local_domains[] = { "example.test", "other.test" };
static struct filter_session test_sess;

/* setup - an mx-like session, nobody logged in, two local domains */
static void
setup(void)
{
	filter_builtins_register();
	memset(&test_conf, 0, sizeof(test_conf));
	test_conf.hostname = "mx.example.test";
	test_conf.local_domains = local_domains;
	test_conf.nlocal_domains = ARRAY_SIZE(local_domains);
	memset(&test_sess, 0, sizeof(test_sess));
	test_sess.id = 0x1234;
	test_sess.listener = "test";
	test_sess.client_addr = "192.0.2.1";
	test_sess.client_name = "unknown";
	test_sess.helo = "client.test";
	test_sess.conf = &test_conf;
}

static void
teardown(void)
{
}

/* ---- a chain under test ---- */

struct fx {
	struct filter_chain *chain;
	struct filter_state *st;
	struct filter_txn txn;
	struct filter_ctx ctx;
};

/* fx_open - a chain of n names, its state and an empty transaction */
static void
fx_open(struct fx *f, const char *const *names, size_t n)
{
	char *copy[4], *err = NULL;
	size_t i;

	ck_assert_uint_le(n, ARRAY_SIZE(copy));
	for (i = 0; i < n; i++)
		copy[i] = xstrdup(names[i]);
	memset(f, 0, sizeof(*f));
	f->chain = filter_chain_new(&test_conf, copy, n, &err);
	ck_assert_msg(f->chain != NULL, "chain: %s", err ? err : "?");
	for (i = 0; i < n; i++)
		free(copy[i]);
	f->st = filter_state_new(f->chain);
	filter_txn_init(&f->txn);
	f->txn.mail_from = xstrdup("");
	f->ctx.sess = &test_sess;
}

/* fx_open1 - a chain of one filter */
static void
fx_open1(struct fx *f, const char *name)
{
	fx_open(f, &name, 1);
}

static void
fx_close(struct fx *f)
{
	f->ctx.txn = NULL;
	filter_state_free(f->st, &f->ctx);
	filter_txn_reset(&f->txn);
	filter_chain_free(f->chain);
}

/* run - one stage, which must complete inline; the transaction from MAIL on */
static enum filter_verdict
run(struct fx *f, enum filter_stage stage, const char *arg, struct filter_result *res)
{
	bool session_wide = stage == FILTER_STAGE_CONNECT || stage == FILTER_STAGE_HELO ||
	    stage == FILTER_STAGE_AUTH;

	f->ctx.txn = session_wide ? NULL : &f->txn;
	ck_assert_int_eq(filter_run(f->st, stage, &f->ctx, arg, res, NULL, NULL, NULL),
	    FILTER_RUN_DONE);
	return res->verdict;
}

/* assert_table_reply - res is a REJECT by who in exactly the session's words for id */
static void
assert_table_reply(const struct filter_result *res, const char *who, enum smtp_reply_id id)
{
	char want[SMTP_REPLY_LINE_MAX];
	struct buf got;

	ck_assert_int_eq(res->verdict, FILTER_REJECT);
	ck_assert_ptr_nonnull(res->filter);
	ck_assert_str_eq(res->filter, who);
	smtp_reply_line(want, sizeof(want), id, "unused.example");
	buf_init(&got);
	smtp_reply_custom(&got, res->reply.code, res->reply.ecode, res->reply.text);
	ck_assert_str_eq(got.data, want);
	buf_free(&got);
}

/* ---- port25 ---- */

/* RCPT as the session hands it over (canonical, <postmaster> already expanded). */
static const struct rcpt_case {
	const char *rcpt;
	bool nolocal;		/* run with no local_domains */
	bool ok;
} rcpt_cases[] = {
	{ "user@example.test", false, true },
	{ "user@other.test", false, true },
	{ "USER@example.test", false, true },
	{ "user@EXAMPLE.TEST", false, true },		/* the domain is case-insensitive */
	{ "user@example.test.", false, true },		/* a root dot is the same domain */
	{ "postmaster@example.test", false, true },	/* <postmaster> as the session expands it */
	{ "user@foreign.test", false, false },
	{ "user@sub.example.test", false, false },
	{ "user@example.test.foreign.test", false, false },
	{ "user@example.test..", false, false },
	{ "user%foreign.test@example.test", false, false },	/* percent hack */
	{ "foreign.test!user@example.test", false, false },	/* bang path */
	{ "\"user@foreign.test\"@example.test", false, false },	/* quoted '@' */
	{ "\"user\\@foreign.test\"@example.test", false, false },
	{ "\"user%foreign.test\"@example.test", false, false },
	{ "user@[127.0.0.1]", false, false },		/* address literals are never ours */
	{ "user@[IPv6:::1]", false, false },
	{ "postmaster@foreign.test", false, false },
	{ "postmaster@mx.example.test", false, false },	/* the hostname is not a local domain */
	{ "postmaster", false, false },
	{ "", false, false },
	/* No local_domains: only <postmaster>, expanded to postmaster@<hostname>. */
	{ "postmaster@mx.example.test", true, true },
	{ "user@mx.example.test", true, false },
	{ "Postmaster@mx.example.test", true, false },
	{ "postmaster@mx.example.test.evil", true, false },
	{ "user@example.test", true, false },
};

START_TEST(test_port25_rcpt)
{
	const struct rcpt_case *c = &rcpt_cases[_i];
	struct filter_result res;
	struct fx f;

	if (c->nolocal)
		test_conf.nlocal_domains = 0;
	fx_open1(&f, "port25");
	ck_assert_int_eq(run(&f, FILTER_STAGE_CONNECT, NULL, &res), FILTER_CONTINUE);
	ck_assert_int_eq(run(&f, FILTER_STAGE_MAIL, "sender@origin.test", &res), FILTER_CONTINUE);
	if (c->ok)
		ck_assert_msg(run(&f, FILTER_STAGE_RCPT, c->rcpt, &res) == FILTER_CONTINUE,
		    "%s refused", c->rcpt);
	else {
		ck_assert_msg(run(&f, FILTER_STAGE_RCPT, c->rcpt, &res) == FILTER_REJECT,
		    "%s taken", c->rcpt);
		assert_table_reply(&res, "port25", R_RELAY_DENIED);
	}
	fx_close(&f);
}
END_TEST

/* port25 refuses AUTH, takes any sender, any message, from a login too: relay is by role */
START_TEST(test_port25_auth_mail_data)
{
	struct filter_result res;
	struct fx f;

	fx_open1(&f, "port25");
	ck_assert_int_eq(run(&f, FILTER_STAGE_HELO, "client.test", &res), FILTER_CONTINUE);
	run(&f, FILTER_STAGE_AUTH, "alice", &res);
	assert_table_reply(&res, "port25", R_AUTH_NOT_OFFERED);
	test_sess.auth_user = "alice@example.test";
	ck_assert_int_eq(run(&f, FILTER_STAGE_MAIL, "", &res), FILTER_CONTINUE);
	ck_assert_int_eq(run(&f, FILTER_STAGE_RCPT, "x@foreign.test", &res), FILTER_REJECT);
	filter_parse_headers(&f.txn, "From: <bob@foreign.test>\r\n\r\nhi\r\n",
	    strlen("From: <bob@foreign.test>\r\n\r\nhi\r\n"));
	ck_assert_int_eq(run(&f, FILTER_STAGE_DATA, NULL, &res), FILTER_CONTINUE);
	fx_close(&f);
}
END_TEST

/* auth-enforce takes no keys in its [filter NAME] section (port25's: check_port25) */
START_TEST(test_no_keys)
{
	static const char *const names[] = { "auth-enforce" };
	const struct filter_ops *ops = filter_lookup(names[_i]);
	struct conf_kv kv = { .key = xstrdup("timeout"), .value = xstrdup("5"), .line = 7 };
	struct conf_section sec = { .type = xstrdup("filter"), .name = xstrdup(names[_i]),
	    .line = 6, .kv = &kv, .nkv = 1 };
	char *err = NULL;

	ck_assert_ptr_nonnull(ops);
	ck_assert(ops->safety && !ops->may_block);
	ck_assert_ptr_null(ops->configure(&test_conf, &sec, &err));
	ck_assert_ptr_nonnull(err);
	ck_assert_str_eq(err, "takes no keys, not even timeout or default_action: it never "
	    "waits or fails (\"timeout\" at line 7)");
	free(err);
	free(kv.key);
	free(kv.value);
	free(sec.type);
	free(sec.name);
}
END_TEST

/* ---- auth-enforce ---- */

/* write_temp - text into a new file in $TMPDIR (or /tmp); its name into path (size 128) */
static void
write_temp(const char *text, char *path)
{
	const char *dir = getenv("TMPDIR");
	FILE *f;
	int fd;

	snprintf(path, 128, "%s/check_policy.XXXXXX",
	    dir != NULL && strlen(dir) < 64 ? dir : "/tmp");
	ck_assert_int_ge(fd = mkstemp(path), 0);
	ck_assert_ptr_nonnull(f = fdopen(fd, "w"));
	fputs(text, f);
	fclose(f);
}

static char map_path[128];

/* write_map - a sender_login_map in a temp file, named in test_conf */
static void
write_map(const char *text)
{
	write_temp(text, map_path);
	test_conf.auth_sender_login_map = map_path;
}

static void
unlink_map(void)
{
	if (test_conf.auth_sender_login_map != NULL)
		unlink(map_path);
	test_conf.auth_sender_login_map = NULL;
}

/* MAIL: a login first, then a sender it owns; a REJECT ends that transaction only */
START_TEST(test_auth_enforce_mail)
{
	struct filter_result res;
	struct fx f;

	fx_open1(&f, "auth-enforce");
	ck_assert_int_eq(run(&f, FILTER_STAGE_CONNECT, NULL, &res), FILTER_CONTINUE);
	ck_assert_int_eq(run(&f, FILTER_STAGE_HELO, "client.test", &res), FILTER_CONTINUE);
	run(&f, FILTER_STAGE_MAIL, "alice@example.test", &res);
	assert_table_reply(&res, "auth-enforce", R_AUTH_REQUIRED);
	run(&f, FILTER_STAGE_MAIL, "", &res);
	assert_table_reply(&res, "auth-enforce", R_AUTH_REQUIRED);

	test_sess.auth_user = "alice@example.test";
	ck_assert_int_eq(run(&f, FILTER_STAGE_AUTH, "alice@example.test", &res), FILTER_CONTINUE);
	ck_assert_int_eq(run(&f, FILTER_STAGE_MAIL, "alice@example.test", &res), FILTER_CONTINUE);
	ck_assert_int_eq(run(&f, FILTER_STAGE_RCPT, "anyone@foreign.test", &res), FILTER_CONTINUE);
	ck_assert_int_eq(run(&f, FILTER_STAGE_MAIL, "alice@EXAMPLE.test", &res), FILTER_CONTINUE);
	ck_assert_int_eq(run(&f, FILTER_STAGE_MAIL, "", &res), FILTER_CONTINUE);
	run(&f, FILTER_STAGE_MAIL, "bob@example.test", &res);
	assert_table_reply(&res, "auth-enforce", R_SENDER_NOT_OWNED);
	run(&f, FILTER_STAGE_MAIL, "Alice@example.test", &res);	/* the local part is exact */
	assert_table_reply(&res, "auth-enforce", R_SENDER_NOT_OWNED);
	fx_close(&f);
}
END_TEST

/* MAIL with a sender_login_map: the map is the whole truth */
START_TEST(test_auth_enforce_map)
{
	struct filter_result res;
	struct fx f;

	write_map("alice alice@example.test, @alias.test\n");
	fx_open1(&f, "auth-enforce");
	test_sess.auth_user = "alice";
	ck_assert_int_eq(run(&f, FILTER_STAGE_MAIL, "team@alias.test", &res), FILTER_CONTINUE);
	ck_assert_int_eq(run(&f, FILTER_STAGE_MAIL, "alice@example.test", &res), FILTER_CONTINUE);
	run(&f, FILTER_STAGE_MAIL, "x@sub.alias.test", &res);
	assert_table_reply(&res, "auth-enforce", R_SENDER_NOT_OWNED);
	test_sess.auth_user = "alice@example.test";	/* not in the map: owns nothing */
	run(&f, FILTER_STAGE_MAIL, "alice@example.test", &res);
	assert_table_reply(&res, "auth-enforce", R_SENDER_NOT_OWNED);
	fx_close(&f);
	unlink_map();
}
END_TEST

/* A map that does not load is a configure error naming the key */
START_TEST(test_auth_enforce_bad_map)
{
	const struct filter_ops *ops = filter_lookup("auth-enforce");
	char *err = NULL;

	write_map("alice not-an-address\n");
	ck_assert_ptr_null(ops->configure(&test_conf, NULL, &err));
	ck_assert_ptr_nonnull(err);
	ck_assert_msg(strncmp(err, "[auth] sender_login_map: ", 25) == 0 &&
	    strstr(err, map_path) != NULL && strchr(err, '\n') == NULL, "%s", err);
	free(err);
	unlink_map();
}
END_TEST

/* DATA: every From: field (any case of the name) owned by the login */
static const struct from_case {
	const char *headers;
	bool ok;
} from_cases[] = {
	{ "From: Alice <alice@example.test>\r\nSubject: x\r\n", true },
	{ "Subject: x\r\n", true },	/* no From: at all: not ours to judge */
	{ "From: \"Example, Alice\" <alice@example.test>\r\n", true },
	{ "From: <bob@example.test>\r\n", false },
	{ "from: bob@example.test\r\n", false },
	{ "FROM : bob@example.test\r\n", false },	/* obsolete "name WSP :" is From: too */
	{ "From: alice@example.test\r\nFrom: bob@example.test\r\n", false },
	{ "From: Alice <alice@example.test>, Bob <bob@example.test>\r\n", false },
	{ "From: \"alice@example.test\" <bob@example.test>\r\n", false },
	{ "From: undisclosed:;\r\n", false },	/* a group: unparseable */
};

START_TEST(test_auth_enforce_from)
{
	const struct from_case *c = &from_cases[_i];
	struct filter_result res;
	struct buf msg;
	struct fx f;

	fx_open1(&f, "auth-enforce");
	test_sess.auth_user = "alice@example.test";
	ck_assert_int_eq(run(&f, FILTER_STAGE_MAIL, "alice@example.test", &res), FILTER_CONTINUE);
	buf_init(&msg);
	buf_printf(&msg, "%s\r\nbody\r\n", c->headers);
	filter_parse_headers(&f.txn, msg.data, msg.len);
	if (c->ok)
		ck_assert_msg(run(&f, FILTER_STAGE_DATA, NULL, &res) == FILTER_CONTINUE, "%s",
		    c->headers);
	else {
		ck_assert_msg(run(&f, FILTER_STAGE_DATA, NULL, &res) == FILTER_REJECT, "%s",
		    c->headers);
		assert_table_reply(&res, "auth-enforce", R_FROM_NOT_OWNED);
	}
	buf_free(&msg);
	fx_close(&f);
}
END_TEST

/* ---- what was discarded is still refused ---- */

/* "dropper": discards at the stage named by its arg-less callbacks below */
static enum filter_stage dropper_at;

static enum filter_verdict
dropper_connect(void *inst, struct filter_ctx *ctx, struct filter_reply *r)
{
	(void)inst, (void)ctx, (void)r;
	return dropper_at == FILTER_STAGE_CONNECT ? FILTER_DISCARD : FILTER_CONTINUE;
}

static enum filter_verdict
dropper_mail(void *inst, struct filter_ctx *ctx, const char *from, struct filter_reply *r)
{
	(void)inst, (void)ctx, (void)from, (void)r;
	return dropper_at == FILTER_STAGE_MAIL ? FILTER_DISCARD : FILTER_CONTINUE;
}

static const struct filter_ops dropper_ops = {
	.name = "dropper", .connect = dropper_connect, .mail = dropper_mail,
};

/*
 * A discard at MAIL (_i 0) or for the whole session at CONNECT (_i 1): port25
 * still refuses a foreign recipient and auth-enforce a forged From: and
 * a MAIL without login; what they pass stays discarded.
 */
START_TEST(test_discarded_still_refused)
{
	struct filter_result res;
	const char *names[2] = { "port25", "dropper" };
	struct fx f;

	filter_register(&dropper_ops);
	dropper_at = _i == 0 ? FILTER_STAGE_MAIL : FILTER_STAGE_CONNECT;
	fx_open(&f, names, 2);
	run(&f, FILTER_STAGE_CONNECT, NULL, &res);
	run(&f, FILTER_STAGE_MAIL, "sender@origin.test", &res);
	ck_assert_int_eq(res.verdict, FILTER_DISCARD);
	ck_assert(f.txn.discard);
	run(&f, FILTER_STAGE_RCPT, "user@foreign.test", &res);
	assert_table_reply(&res, "port25", R_RELAY_DENIED);
	ck_assert_int_eq(run(&f, FILTER_STAGE_RCPT, "user@example.test", &res), FILTER_DISCARD);
	ck_assert_str_eq(res.filter, "dropper");
	fx_close(&f);

	names[0] = "auth-enforce";
	fx_open(&f, names, 2);
	run(&f, FILTER_STAGE_CONNECT, NULL, &res);
	if (_i == 1) {	/* session-wide: MAIL without a login is still refused */
		run(&f, FILTER_STAGE_MAIL, "", &res);
		assert_table_reply(&res, "auth-enforce", R_AUTH_REQUIRED);
	}
	test_sess.auth_user = "alice@example.test";
	ck_assert_int_eq(run(&f, FILTER_STAGE_MAIL, "alice@example.test", &res), FILTER_DISCARD);
	filter_parse_headers(&f.txn, "From: bob@example.test\r\n\r\n",
	    strlen("From: bob@example.test\r\n\r\n"));
	run(&f, FILTER_STAGE_DATA, NULL, &res);
	assert_table_reply(&res, "auth-enforce", R_FROM_NOT_OWNED);
	fx_close(&f);
}
END_TEST

/* ---- the roles in conf.c and server.c ---- */

/* load_conf - conf_load of text; NULL and the errors (path replaced by "CONF") */
static struct conf *
load_conf(const char *text, struct buf *errors)
{
	char path[128];
	struct conf *c;
	struct buf raw;

	write_temp(text, path);
	buf_init(&raw);
	c = conf_load(path, &raw);
	unlink(path);
	buf_init(errors);
	if (raw.data != NULL) {
		const char *p = raw.data, *hit;

		while ((hit = strstr(p, path)) != NULL) {
			buf_append(errors, p, (size_t)(hit - p));
			buf_puts(errors, "CONF");
			p = hit + strlen(path);
		}
		buf_puts(errors, p);
	}
	buf_free(&raw);
	return c;
}

#define CONF_HEAD "[server]\nhostname = mx.test\nlocal_domains = example.test\n" \
	"[listener mx]\nlisten = 127.0.0.1:1\nrole = mx\n"
#define CONF_TAIL "[backend]\nrelay = maildir:/nonexistent/mail\n"

/* Each a whole error line that "filters =" of an mx listener (line 7) must give. */
static const struct role_case {
	const char *filters;
	const char *error;	/* NULL: no error */
} role_cases[] = {
	{ "port25", NULL },
	{ "", NULL },
	{ "a port25 b", NULL },
	{ "auth-enforce", "CONF:7: [listener mx] filters: \"auth-enforce\" is the safety filter "
	    "of role submission; this listener has role mx, which runs port25 first\n" },
	{ "spf auth-enforce", "CONF:7: [listener mx] filters: \"auth-enforce\" is the safety "
	    "filter of role submission; this listener has role mx, which runs port25 first\n" },
	{ "-port25", "CONF:7: [listener mx] filters: \"-port25\": a role's safety filter cannot "
	    "be removed; role mx always runs port25 first\n" },
	{ "-auth-enforce", "CONF:7: [listener mx] filters: \"-auth-enforce\": a role's safety "
	    "filter cannot be removed; role mx always runs port25 first\n" },
	{ "port25:x", "CONF:7: [listener mx] filters: \"port25:x\": port25 takes no instance "
	    "name; role mx runs it by itself\n" },
};

START_TEST(test_role_filters_conf)
{
	const struct role_case *c = &role_cases[_i];
	struct buf text, errors;
	struct conf *conf;

	buf_init(&text);
	buf_printf(&text, CONF_HEAD "filters = %s\n" CONF_TAIL, c->filters);
	conf = load_conf(text.data, &errors);
	if (c->error == NULL) {
		ck_assert_msg(conf != NULL, "%s: %s", c->filters, errors.data);
		conf_unref(conf);
	} else {
		ck_assert_ptr_null(conf);
		ck_assert_str_eq(errors.data, c->error);
	}
	buf_free(&errors);
	buf_free(&text);
}
END_TEST

/* port25 on a submission listener, named with the line of its "filters =" */
START_TEST(test_role_filters_conf_submission)
{
	struct buf errors;
	struct conf *conf;

	conf = load_conf("[server]\nhostname = mx.test\n[listener sub]\nlisten = 127.0.0.1:2\n"
	    "role = submission\ntls = starttls\nfilters = port25\n[tls]\ncert = c\nkey = k\n"
	    "[auth]\npasswd_file = p\n" CONF_TAIL, &errors);
	ck_assert_ptr_null(conf);
	ck_assert_msg(strstr(errors.data, "CONF:7: [listener sub] filters: \"port25\" is the "
	    "safety filter of role mx; this listener has role submission, which runs "
	    "auth-enforce first\n") != NULL, "%s", errors.data);
	buf_free(&errors);
}
END_TEST

/* the role -> safety filter map, every name registered */
START_TEST(test_role_filter_names)
{
	ck_assert_str_eq(conf_role_filter(ROLE_MX), "port25");
	ck_assert_str_eq(conf_role_filter(ROLE_SUBMISSION), "auth-enforce");
	ck_assert_str_eq(conf_role_filter(ROLE_SUBMISSIONS), "auth-enforce");
	ck_assert_ptr_nonnull(filter_lookup(conf_role_filter(ROLE_MX)));
	ck_assert_ptr_nonnull(filter_lookup(conf_role_filter(ROLE_SUBMISSION)));
}
END_TEST

/* The snapshot's chain: the role's filter once and first, whatever "filters =" says */
static const struct chain_case {
	const char *filters;
	const char *names;
} chain_cases[] = {
	{ "", "port25" },
	{ "port25", "port25" },
	{ "dropper", "port25,dropper" },
	{ "dropper port25", "port25,dropper" },
	{ "port25 dropper port25", "port25,dropper" },
};

START_TEST(test_snapshot_chain)
{
	const struct chain_case *c = &chain_cases[_i];
	struct buf text, errors;
	struct snapshot *snap;
	struct conf *conf;
	char *err = NULL;

	filter_register(&dropper_ops);
	buf_init(&text);
	buf_printf(&text, CONF_HEAD "filters = %s\n" CONF_TAIL, c->filters);
	conf = load_conf(text.data, &errors);
	ck_assert_msg(conf != NULL, "%s", errors.data);
	snap = snapshot_new(conf, &err);
	ck_assert_msg(snap != NULL, "%s", err ? err : "?");
	ck_assert_str_eq(filter_chain_names(snap->chains[0]), c->names);
	snapshot_unref(snap);
	buf_free(&errors);
	buf_free(&text);
}
END_TEST

static Suite *
policy_suite(void)
{
	Suite *s = suite_create("policy_filters");
	TCase *tc;

	tc = tcase_create("port25");
	tcase_add_checked_fixture(tc, setup, teardown);
	tcase_add_loop_test(tc, test_port25_rcpt, 0, ARRAY_SIZE(rcpt_cases));
	tcase_add_test(tc, test_port25_auth_mail_data);
	tcase_add_loop_test(tc, test_no_keys, 0, 1);
	suite_add_tcase(s, tc);

	tc = tcase_create("auth_enforce");
	tcase_add_checked_fixture(tc, setup, teardown);
	tcase_add_test(tc, test_auth_enforce_mail);
	tcase_add_test(tc, test_auth_enforce_map);
	tcase_add_test(tc, test_auth_enforce_bad_map);
	tcase_add_loop_test(tc, test_auth_enforce_from, 0, ARRAY_SIZE(from_cases));
	suite_add_tcase(s, tc);

	tc = tcase_create("discarded");
	tcase_add_checked_fixture(tc, setup, teardown);
	tcase_add_loop_test(tc, test_discarded_still_refused, 0, 2);
	suite_add_tcase(s, tc);

	tc = tcase_create("roles");
	tcase_add_checked_fixture(tc, setup, teardown);
	tcase_add_loop_test(tc, test_role_filters_conf, 0, ARRAY_SIZE(role_cases));
	tcase_add_test(tc, test_role_filters_conf_submission);
	tcase_add_test(tc, test_role_filter_names);
	tcase_add_loop_test(tc, test_snapshot_chain, 0, ARRAY_SIZE(chain_cases));
	suite_add_tcase(s, tc);
	return s;
}

UNIT_MAIN(policy_suite)
