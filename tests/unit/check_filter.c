/*
 * check_filter.c - unit tests for the filter chain (filters/filter.c).
 *
 * Test filters defined here stand for the real ones: each records what it
 * was called with in a trace string, so the tables compare verdicts,
 * replies and the exact order of callbacks.  Blocking filters run on a real
 * worker pool under a real event base.  Never touches the network; the
 * spooled bodies live in memory or in unlinked temp files.
 */
#include "config.h"

#include <check.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <event2/event.h>
#include <event2/thread.h>

#include "util.h"
#include "buf.h"
#include "conf.h"
#include "spool.h"
#include "workers.h"
#include "filter.h"
#include "filter_priv.h"
#include "unit.h"

/* ---- the trace ---- */

static pthread_mutex_t trace_mtx = PTHREAD_MUTEX_INITIALIZER;
static struct buf trace;

/* trace_add - "who.what " */
static void
trace_add(const char *who, const char *what)
{
	pthread_mutex_lock(&trace_mtx);
	if (trace.len > 0)
		buf_putc(&trace, ' ');
	buf_printf(&trace, "%s.%s", who, what);
	pthread_mutex_unlock(&trace_mtx);
}

/* trace_reset - empty the trace */
static void
trace_reset(void)
{
	pthread_mutex_lock(&trace_mtx);
	buf_reset(&trace);
	buf_puts(&trace, "");
	pthread_mutex_unlock(&trace_mtx);
}

/* ---- test filters ---- */

struct tinst {
	char label[32];
	const struct conf_section *sec;
	pthread_t thread;	/* where the last callback ran */
	unsigned calls;
	unsigned aborts, closes;
	struct buf body;	/* bodycat: what body() saw */
	size_t chunks[8];
	size_t nchunks;
};

/* t_configure - label = [section] label, else its name, else "-" */
static void *
t_configure(const struct conf *conf, const struct conf_section *sec, char **err_r)
{
	struct tinst *t;
	const char *label = conf_section_get(sec, "label");

	if (conf_section_get(sec, "fail") != NULL) {
		*err_r = xstrdup("bad value for fail");
		return NULL;
	}
	t = xcalloc(1, sizeof(*t));
	t->sec = sec;
	buf_init(&t->body);
	if (label == NULL)
		label = sec != NULL && *sec->name ? sec->name : "-";
	str_copy(t->label, label, sizeof(t->label));
	return t;
}

/* t_destroy - free an instance */
static void
t_destroy(void *inst)
{
	struct tinst *t = inst;

	buf_free(&t->body);
	free(t);
}

/* t_note - record a call in the trace and the instance */
static void
t_note(void *inst, const char *what)
{
	struct tinst *t = inst;

	t->thread = pthread_self();
	t->calls++;
	trace_add(t->label, what);
}

/* t_connect - record connect and allocate the per-session state */
static enum filter_verdict
t_connect(void *inst, struct filter_ctx *ctx, struct filter_reply *r)
{
	t_note(inst, "connect");
	ck_assert_ptr_null(*ctx->priv);
	*ctx->priv = xstrdup("per-session state");	/* freed in close */
	return FILTER_CONTINUE;
}

/* t_helo - record helo */
static enum filter_verdict
t_helo(void *inst, struct filter_ctx *ctx, const char *helo, struct filter_reply *r)
{
	t_note(inst, "helo");
	return FILTER_CONTINUE;
}

/* t_mail - record mail */
static enum filter_verdict
t_mail(void *inst, struct filter_ctx *ctx, const char *from, struct filter_reply *r)
{
	t_note(inst, "mail");
	return FILTER_CONTINUE;
}

/* t_rcpt - record rcpt */
static enum filter_verdict
t_rcpt(void *inst, struct filter_ctx *ctx, const char *rcpt, struct filter_reply *r)
{
	t_note(inst, "rcpt");
	return FILTER_CONTINUE;
}

/* t_header - record a header by name */
static enum filter_verdict
t_header(void *inst, struct filter_ctx *ctx, const char *name, const char *value,
    struct filter_reply *r)
{
	t_note(inst, name);
	return FILTER_CONTINUE;
}

/* t_eoh - record end of header */
static enum filter_verdict
t_eoh(void *inst, struct filter_ctx *ctx, struct filter_reply *r)
{
	t_note(inst, "eoh");
	return FILTER_CONTINUE;
}

/* t_body - collect body chunks (not traced: their count varies) */
static enum filter_verdict
t_body(void *inst, struct filter_ctx *ctx, const char *chunk, size_t len, struct filter_reply *r)
{
	struct tinst *t = inst;

	if (t->nchunks < ARRAY_SIZE(t->chunks))
		t->chunks[t->nchunks++] = len;
	buf_append(&t->body, chunk, len);
	return FILTER_CONTINUE;
}

/* t_eom - record end of message */
static enum filter_verdict
t_eom(void *inst, struct filter_ctx *ctx, struct filter_reply *r)
{
	t_note(inst, "eom");
	return FILTER_CONTINUE;
}

/* t_abort - record abort */
static void
t_abort(void *inst, struct filter_ctx *ctx)
{
	((struct tinst *)inst)->aborts++;
	trace_add(((struct tinst *)inst)->label, "abort");
}

/* t_close - record close and free the per-session state */
static void
t_close(void *inst, struct filter_ctx *ctx)
{
	((struct tinst *)inst)->closes++;
	trace_add(((struct tinst *)inst)->label, "close");
	free(*ctx->priv);
	*ctx->priv = NULL;
}

/* trace: every callback, always CONTINUE */
static const struct filter_ops trace_ops = {
	.name = "trace", .configure = t_configure, .destroy = t_destroy,
	.connect = t_connect, .helo = t_helo, .mail = t_mail, .rcpt = t_rcpt,
	.header = t_header, .eoh = t_eoh, .body = t_body, .eom = t_eom,
	.abort = t_abort, .close = t_close,
};

/* rejrcpt: "bad..." rejected with the default reply, "custom..." with its own */
static enum filter_verdict
rej_rcpt(void *inst, struct filter_ctx *ctx, const char *rcpt, struct filter_reply *r)
{
	t_note(inst, "rcpt");
	if (strncmp(rcpt, "bad", 3) == 0)
		return FILTER_REJECT;
	if (strncmp(rcpt, "custom", 6) == 0) {
		r->code = 550;
		str_copy(r->ecode, "5.1.1", sizeof(r->ecode));
		str_copy(r->text, "No such user", sizeof(r->text));
		return FILTER_REJECT;
	}
	if (strncmp(rcpt, "crlf", 4) == 0) {
		r->code = 554;
		str_copy(r->ecode, "4.1.1", sizeof(r->ecode));	/* wrong class */
		str_copy(r->text, "evil\r\n250 Ok", sizeof(r->text));
		return FILTER_REJECT;
	}
	return FILTER_CONTINUE;
}

static const struct filter_ops rejrcpt_ops = {
	.name = "rejrcpt", .configure = t_configure, .destroy = t_destroy,
	.rcpt = rej_rcpt, .abort = t_abort,
};

/* tempfail: MAIL "tempfail..." (default reply); HELO "tf550" (a 5xx reply) */
static enum filter_verdict
tf_mail(void *inst, struct filter_ctx *ctx, const char *from, struct filter_reply *r)
{
	t_note(inst, "mail");
	return strncmp(from, "tempfail", 8) == 0 ? FILTER_TEMPFAIL : FILTER_CONTINUE;
}

/* tf_helo - HELO "tf550": a 5xx on a tempfail; "tf421": kept; "garbage": no verdict */
static enum filter_verdict
tf_helo(void *inst, struct filter_ctx *ctx, const char *helo, struct filter_reply *r)
{
	t_note(inst, "helo");
	if (strcmp(helo, "tf550") == 0) {
		r->code = 550;
		str_copy(r->text, "nope", sizeof(r->text));
		return FILTER_TEMPFAIL;
	}
	if (strcmp(helo, "tf421") == 0) {
		r->code = 421;
		str_copy(r->ecode, "4.7.0", sizeof(r->ecode));
		str_copy(r->text, "go away", sizeof(r->text));
		return FILTER_TEMPFAIL;
	}
	if (strcmp(helo, "garbage") == 0)
		return (enum filter_verdict)42;
	return FILTER_CONTINUE;
}

static const struct filter_ops tempfail_ops = {
	.name = "tempfail", .configure = t_configure, .destroy = t_destroy,
	.helo = tf_helo, .mail = tf_mail,
};

/* accept: MAIL "vip..." and RCPT "acc..." accept the transaction */
static enum filter_verdict
acc_mail(void *inst, struct filter_ctx *ctx, const char *from, struct filter_reply *r)
{
	t_note(inst, "mail");
	return strncmp(from, "vip", 3) == 0 ? FILTER_ACCEPT : FILTER_CONTINUE;
}

/* acc_rcpt - RCPT "acc..." accepts */
static enum filter_verdict
acc_rcpt(void *inst, struct filter_ctx *ctx, const char *rcpt, struct filter_reply *r)
{
	t_note(inst, "rcpt");
	return strncmp(rcpt, "acc", 3) == 0 ? FILTER_ACCEPT : FILTER_CONTINUE;
}

static const struct filter_ops accept_ops = {
	.name = "accept", .configure = t_configure, .destroy = t_destroy,
	.mail = acc_mail, .rcpt = acc_rcpt, .abort = t_abort,
};

/* rej2xx: a broken filter that rejects with "250 2.0.0 Ok" */
static enum filter_verdict
rej2xx_rcpt(void *inst, struct filter_ctx *ctx, const char *rcpt, struct filter_reply *r)
{
	t_note(inst, "rcpt");
	r->code = 250;
	str_copy(r->ecode, "2.0.0", sizeof(r->ecode));
	str_copy(r->text, "Ok", sizeof(r->text));
	return FILTER_REJECT;
}

static const struct filter_ops rej2xx_ops = {
	.name = "rej2xx", .configure = t_configure, .destroy = t_destroy,
	.rcpt = rej2xx_rcpt,
};

/* disq: RCPT "discard..." discards, "quar..." quarantines, "d5..." discards with a 5xx */
static enum filter_verdict
disq_rcpt(void *inst, struct filter_ctx *ctx, const char *rcpt, struct filter_reply *r)
{
	t_note(inst, "rcpt");
	if (strncmp(rcpt, "discard", 7) == 0)
		return FILTER_DISCARD;
	if (strncmp(rcpt, "quar", 4) == 0) {
		str_copy(r->text, "looks like spam", sizeof(r->text));
		return FILTER_QUARANTINE;
	}
	if (strncmp(rcpt, "d5", 2) == 0) {
		r->code = 550;
		return FILTER_DISCARD;
	}
	return FILTER_CONTINUE;
}

/*
 * say: answers at each stage what say_script names for "<label>.<stage>"
 * ("p.rcpt=discard q.connect=accept"); CONTINUE otherwise.
 */
static const char *say_script = "";

/* say_verdict - record the stage, answer the script's verdict for it */
static enum filter_verdict
say_verdict(void *inst, const char *stage)
{
	static const struct { const char *name; enum filter_verdict v; } names[] = {
		{ "accept", FILTER_ACCEPT }, { "reject", FILTER_REJECT },
		{ "tempfail", FILTER_TEMPFAIL }, { "discard", FILTER_DISCARD },
		{ "quarantine", FILTER_QUARANTINE },
	};
	char key[64];
	const char *p;
	size_t i, n;

	t_note(inst, stage);
	n = (size_t)snprintf(key, sizeof(key), "%s.%s=", ((struct tinst *)inst)->label, stage);
	if ((p = strstr(say_script, key)) == NULL)
		return FILTER_CONTINUE;
	for (i = 0, p += n; i < ARRAY_SIZE(names); i++)
		if (strncmp(p, names[i].name, strlen(names[i].name)) == 0)
			return names[i].v;
	ck_abort_msg("say: bad script %s", say_script);
	return FILTER_CONTINUE;
}

static enum filter_verdict
say_connect(void *inst, struct filter_ctx *ctx, struct filter_reply *r)
{
	return say_verdict(inst, "connect");
}

static enum filter_verdict
say_helo(void *inst, struct filter_ctx *ctx, const char *helo, struct filter_reply *r)
{
	return say_verdict(inst, "helo");
}

static enum filter_verdict
say_mail(void *inst, struct filter_ctx *ctx, const char *from, struct filter_reply *r)
{
	return say_verdict(inst, "mail");
}

static enum filter_verdict
say_rcpt(void *inst, struct filter_ctx *ctx, const char *rcpt, struct filter_reply *r)
{
	return say_verdict(inst, "rcpt");
}

static enum filter_verdict
say_eom(void *inst, struct filter_ctx *ctx, struct filter_reply *r)
{
	return say_verdict(inst, "eom");
}

static const struct filter_ops say_ops = {
	.name = "say", .configure = t_configure, .destroy = t_destroy,
	.connect = say_connect, .helo = say_helo, .mail = say_mail, .rcpt = say_rcpt,
	.eom = say_eom, .abort = t_abort,
};

static const struct filter_ops disq_ops = {
	.name = "disq", .configure = t_configure, .destroy = t_destroy,
	.rcpt = disq_rcpt,
};

/* block: may block; records its thread; RCPT "blockrej..." rejects */
static enum filter_verdict
blk_rcpt(void *inst, struct filter_ctx *ctx, const char *rcpt, struct filter_reply *r)
{
	t_note(inst, "rcpt");
	if (strncmp(rcpt, "blockrej", 8) == 0) {
		r->code = 554;
		str_copy(r->ecode, "5.7.0", sizeof(r->ecode));
		str_copy(r->text, "blocked", sizeof(r->text));
		return FILTER_REJECT;
	}
	return FILTER_CONTINUE;
}

static const struct filter_ops block_ops = {
	.name = "block", .may_block = true, .configure = t_configure, .destroy = t_destroy,
	.mail = t_mail, .rcpt = blk_rcpt, .eoh = t_eoh, .body = t_body, .eom = t_eom,
};

/* edits: at eom queues one edit of each kind and two results */
static enum filter_verdict
edits_eom(void *inst, struct filter_ctx *ctx, struct filter_reply *r)
{
	struct filter_txn *txn = ctx->txn;

	t_note(inst, "eom");
	filter_add_header(txn, "X-Added", "yes");
	filter_insert_header(txn, 0, "X-Top", "first");
	filter_change_header(txn, "subject", 1, "[tagged] hello");
	filter_delete_header(txn, "X-Junk", 2);
	filter_change_header(txn, "X-Absent", 1, "created");
	filter_auth_result(txn, "spf=pass smtp.mailfrom=%s", txn->mail_from);
	filter_auth_result(txn, "dkim=pass header.d=%s header.s=%s", "example.test", "sel1");
	filter_change_from(txn, "new@example.test", "RET=HDRS");
	filter_add_rcpt(txn, "added@example.test", "NOTIFY=NEVER");
	filter_delete_rcpt(txn, "gone@example.test");
	filter_replace_body(txn, "new\0body\r\n", 10);
	return FILTER_CONTINUE;
}

static const struct filter_ops edits_ops = {
	.name = "edits", .configure = t_configure, .destroy = t_destroy, .eom = edits_eom,
};

/* filler: on the loop, fills the pool's queue with gated jobs */
static struct workers_loop *filler_wl;
static pthread_mutex_t gate_mtx = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t gate_cond = PTHREAD_COND_INITIALIZER;
static bool gate_opened;
static unsigned gate_started;	/* gated jobs a pool thread has picked up */
static unsigned fillers_submitted, fillers_done;

/* gate_work - a pool job that waits for the gate */
static void
gate_work(void *arg)
{
	pthread_mutex_lock(&gate_mtx);
	gate_started++;
	pthread_cond_broadcast(&gate_cond);
	while (!gate_opened)
		pthread_cond_wait(&gate_cond, &gate_mtx);
	pthread_mutex_unlock(&gate_mtx);
}

/* gate_done - count finished fillers */
static void
gate_done(void *arg)
{
	fillers_done++;
}

/* filler_rcpt - submit gated jobs until the pool refuses */
static enum filter_verdict
filler_rcpt(void *inst, struct filter_ctx *ctx, const char *rcpt, struct filter_reply *r)
{
	t_note(inst, "rcpt");
	/*
	 * Occupy the pool's thread first, then fill its queue: otherwise the
	 * thread could take a queued job after we stop and make room for the
	 * next filter, which would then wait behind the closed gate.
	 */
	if (workers_submit(filler_wl, gate_work, gate_done, NULL))
		fillers_submitted++;
	pthread_mutex_lock(&gate_mtx);
	while (gate_started == 0)
		pthread_cond_wait(&gate_cond, &gate_mtx);
	pthread_mutex_unlock(&gate_mtx);
	while (workers_submit(filler_wl, gate_work, gate_done, NULL))
		fillers_submitted++;
	return FILTER_CONTINUE;
}

static const struct filter_ops filler_ops = {
	.name = "filler", .configure = t_configure, .destroy = t_destroy, .rcpt = filler_rcpt,
};

/* cfg: no callbacks, only configuration */
static const struct filter_ops cfg_ops = {
	.name = "cfg", .configure = t_configure, .destroy = t_destroy,
};

/* bare: no configure, no destroy, no instance */
static enum filter_verdict
bare_helo(void *inst, struct filter_ctx *ctx, const char *helo, struct filter_reply *r)
{
	ck_assert_ptr_null(inst);
	trace_add("bare", "helo");
	return FILTER_CONTINUE;
}

static const struct filter_ops bare_ops = { .name = "bare", .helo = bare_helo };

/* ---- fixtures ---- */

static struct conf_kv kv_a[] = { { "label", "a", 1 } };
static struct conf_kv kv_b[] = { { "label", "b", 2 } };
static struct conf_kv kv_x[] = { { "label", "x", 3 } };
static struct conf_kv kv_y[] = { { "label", "y", 4 } };
static struct conf_kv kv_p[] = { { "label", "p", 8 } };
static struct conf_kv kv_q[] = { { "label", "q", 9 } };
static struct conf_kv kv_fail[] = { { "fail", "1", 5 } };
static struct conf_kv kv_cfg[] = { { "label", "from-filter-section", 6 } };
static struct conf_section test_sections[] = {
	{ "trace", "a", 1, kv_a, 1 },
	{ "trace", "b", 2, kv_b, 1 },
	{ "block", "x", 3, kv_x, 1 },
	{ "block", "y", 4, kv_y, 1 },
	{ "cfg", "bad", 5, kv_fail, 1 },
	{ "filter", "cfg", 6, kv_cfg, 1 },
	{ "policy", "one", 7, NULL, 0 },
	{ "say", "p", 8, kv_p, 1 },
	{ "say", "q", 9, kv_q, 1 },
};
static struct conf test_conf;

static const struct filter_session test_sess = {
	.id = 0x1234, .listener = "mx", .role = ROLE_MX, .client_addr = "192.0.2.1",
	.client_name = "unknown", .helo = "client.test", .conf = &test_conf,
};

/* setup - registry, config and trace for every test */
static void
setup(void)
{
	filter_register(&trace_ops);
	filter_register(&trace_ops);	/* twice is harmless */
	filter_register(&rejrcpt_ops);
	filter_register(&tempfail_ops);
	filter_register(&accept_ops);
	filter_register(&rej2xx_ops);
	filter_register(&disq_ops);
	filter_register(&say_ops);
	filter_register(&block_ops);
	filter_register(&edits_ops);
	filter_register(&filler_ops);
	filter_register(&cfg_ops);
	filter_register(&bare_ops);
	memset(&test_conf, 0, sizeof(test_conf));
	test_conf.hostname = "mx.example.test";
	test_conf.refcnt = 1;	/* static: a blocking call's reference never frees it */
	test_conf.sections = test_sections;
	test_conf.nsections = ARRAY_SIZE(test_sections);
	buf_init(&trace);
	trace_reset();
}

/* teardown - free the trace */
static void
teardown(void)
{
	buf_free(&trace);
}

/* chain_from - a chain from "a,b,c" (empty string: empty chain), or NULL + *err_r */
static struct filter_chain *
chain_from(const char *spec, char **err_r)
{
	char *copy = xstrdup(spec), *p, *save = NULL, *names[16];
	struct filter_chain *chain;
	size_t n = 0;

	for (p = strtok_r(copy, ",", &save); p != NULL; p = strtok_r(NULL, ",", &save)) {
		ck_assert_uint_lt(n, ARRAY_SIZE(names));
		names[n++] = p;
	}
	chain = filter_chain_new(&test_conf, names, n, err_r);
	free(copy);
	return chain;
}

/* chain_must - a chain that must build */
static struct filter_chain *
chain_must(const char *spec)
{
	char *err = NULL;
	struct filter_chain *chain = chain_from(spec, &err);

	ck_assert_msg(chain != NULL, "chain %s: %s", spec, err ? err : "?");
	return chain;
}

/* One session with a chain, a state and a transaction. */
struct fx {
	struct filter_chain *chain;
	struct filter_state *st;
	struct filter_txn txn;
	struct filter_ctx ctx;
};

/* fx_open - chain, state and an empty transaction */
static void
fx_open(struct fx *f, const char *spec)
{
	memset(f, 0, sizeof(*f));
	f->chain = chain_must(spec);
	f->st = filter_state_new(f->chain);
	filter_txn_init(&f->txn);
	f->txn.mail_from = xstrdup("sender@example.test");
	f->ctx.sess = &test_sess;
	f->ctx.txn = &f->txn;
}

/* fx_close - state (runs close), transaction, chain */
static void
fx_close(struct fx *f)
{
	filter_state_free(f->st, &f->ctx);
	filter_txn_reset(&f->txn);
	filter_chain_free(f->chain);
}

/* run_inline - a stage that must complete now (no pool) */
static enum filter_verdict
run_inline(struct fx *f, enum filter_stage stage, const char *arg, struct filter_result *res)
{
	ck_assert_int_eq(filter_run(f->st, stage, &f->ctx, arg, res, NULL, NULL, NULL),
	    FILTER_RUN_DONE);
	return res->verdict;
}

/* ---- registry and chains ---- */

START_TEST(test_registry)
{
	struct filter_chain *chain;

	ck_assert_ptr_eq(filter_lookup("trace"), &trace_ops);
	ck_assert_ptr_eq(filter_lookup("block"), &block_ops);
	ck_assert_ptr_null(filter_lookup("nosuch"));
	ck_assert_ptr_null(filter_lookup("Trace"));

	chain = chain_must("trace:a,rejrcpt,block:x,bare");
	ck_assert_str_eq(filter_chain_names(chain), "trace:a,rejrcpt,block:x,bare");
	ck_assert(!filter_chain_empty(chain));
	filter_chain_free(chain);

	chain = chain_must("");
	ck_assert(filter_chain_empty(chain));
	ck_assert_str_eq(filter_chain_names(chain), "");
	filter_chain_free(chain);
	ck_assert(filter_chain_empty(NULL));

	ck_assert_str_eq(filter_verdict_name(FILTER_CONTINUE), "continue");
	ck_assert_str_eq(filter_verdict_name(FILTER_ACCEPT), "accept");
	ck_assert_str_eq(filter_verdict_name(FILTER_REJECT), "reject");
	ck_assert_str_eq(filter_verdict_name(FILTER_TEMPFAIL), "tempfail");
	ck_assert_str_eq(filter_verdict_name(FILTER_DISCARD), "discard");
	ck_assert_str_eq(filter_verdict_name(FILTER_QUARANTINE), "quarantine");
	ck_assert_str_eq(filter_verdict_name((enum filter_verdict)99), "invalid");
}
END_TEST

static const struct {
	const char *spec;
	const char *err;	/* NULL: must build */
} chain_cases[] = {
	{ "trace:a", NULL },
	{ "policy:one", "unknown filter \"policy\"" },
	{ "nosuch", "unknown filter \"nosuch\"" },
	{ "trace,nosuch2,rejrcpt", "unknown filter \"nosuch2\"" },
	{ "trace:missing", "filter \"trace:missing\": no section [trace missing]" },
	{ "cfg:bad", "filter \"cfg:bad\": bad value for fail" },
	{ "trace:", "filter \"trace:\": expected TYPE:NAME" },
	{ ":a", "filter \":a\": expected TYPE:NAME" },
	{ "trace,trace:a,trace:b", NULL },
	{ "cfg", NULL },
	{ "bare", NULL },
};

START_TEST(test_chain_new)
{
	struct filter_chain *chain;
	char *err = (char *)"junk";

	chain = chain_from(chain_cases[_i].spec, &err);
	if (chain_cases[_i].err == NULL) {
		ck_assert_msg(chain != NULL, "%s: %s", chain_cases[_i].spec, err ? err : "?");
		ck_assert_ptr_null(err);
		ck_assert_str_eq(filter_chain_names(chain), chain_cases[_i].spec);
		filter_chain_free(chain);
	} else {
		ck_assert_ptr_null(chain);
		ck_assert_ptr_nonnull(err);
		ck_assert_str_eq(err, chain_cases[_i].err);
		free(err);
	}
}
END_TEST

/* Which section each configure saw: a plain name uses [filter NAME] if any. */
static struct tinst *last_cfg_inst;

/* spy_configure - remember the instance just configured */
static void *
spy_configure(const struct conf *conf, const struct conf_section *sec, char **err_r)
{
	return last_cfg_inst = t_configure(conf, sec, err_r);
}

static const struct filter_ops spy_ops = {
	.name = "spy", .configure = spy_configure, .destroy = t_destroy,
};

START_TEST(test_chain_sections)
{
	static struct conf_kv kv[] = { { "label", "spied", 9 } };
	static struct conf_kv kvr[] = { { "label", "r", 10 } };
	static struct conf_section secs[] = {
		{ "filter", "spy", 1, kv, 1 },
		{ "spy", "rspamd", 2, kvr, 1 },
	};
	struct filter_chain *chain;
	char *err = NULL;
	char *names[] = { "spy", "spy:rspamd" };

	filter_register(&spy_ops);
	chain = chain_must("spy");	/* no [filter spy] in test_conf */
	ck_assert_ptr_null(last_cfg_inst->sec);
	ck_assert_str_eq(last_cfg_inst->label, "-");
	filter_chain_free(chain);

	test_conf.sections = secs;
	test_conf.nsections = ARRAY_SIZE(secs);
	chain = chain_must("spy");	/* [filter spy] */
	ck_assert_ptr_eq(last_cfg_inst->sec, &secs[0]);
	ck_assert_str_eq(last_cfg_inst->label, "spied");
	filter_chain_free(chain);
	chain = chain_must("spy:rspamd");	/* [spy rspamd] */
	ck_assert_ptr_eq(last_cfg_inst->sec, &secs[1]);
	ck_assert_str_eq(last_cfg_inst->label, "r");
	filter_chain_free(chain);
	ck_assert_ptr_null(chain_from("spy:other", &err));
	ck_assert_str_eq(err, "filter \"spy:other\": no section [spy other]");
	free(err);

	/* without a config: plain names get NULL, instances cannot be found */
	chain = filter_chain_new(NULL, names, 1, &err);
	ck_assert_ptr_nonnull(chain);
	ck_assert_ptr_null(last_cfg_inst->sec);
	filter_chain_free(chain);
	ck_assert_ptr_null(filter_chain_new(NULL, names, 2, &err));
	ck_assert_str_eq(err, "filter \"spy:rspamd\": no section [spy rspamd]");
	free(err);
}
END_TEST

/* ---- verdicts, inline ---- */

static const struct {
	const char *chain;
	enum filter_stage stage;
	const char *arg;
	enum filter_verdict verdict;
	int code;
	const char *ecode;
	const char *text;
	const char *filter;	/* who decided, NULL for nobody */
	const char *trace;
} verdict_cases[] = {
	/* all pass */
	{ "trace:a,rejrcpt,trace:b", FILTER_STAGE_RCPT, "good@x", FILTER_CONTINUE, 0, "", "",
	  NULL, "a.rcpt -.rcpt b.rcpt" },
	/* the first non-CONTINUE verdict stops the chain; code 0 gets the default */
	{ "trace:a,rejrcpt,trace:b", FILTER_STAGE_RCPT, "bad@x", FILTER_REJECT, 550, "5.7.1",
	  "Message refused by policy", "rejrcpt", "a.rcpt -.rcpt" },
	{ "trace:a,rejrcpt,trace:b", FILTER_STAGE_RCPT, "custom@x", FILTER_REJECT, 550, "5.1.1",
	  "No such user", "rejrcpt", "a.rcpt -.rcpt" },
	/*
	 * a wrong-class reply is replaced whole, a CR never reaches the client;
	 * an LF stays: it starts the next line of a multi-line reply, which the
	 * session writes with the same code ("554 5.7.1 250 Ok")
	 */
	{ "rejrcpt", FILTER_STAGE_RCPT, "crlf@x", FILTER_REJECT, 554, "5.7.1",
	  "evil \n250 Ok", "rejrcpt", "-.rcpt" },
	{ "rej2xx,trace:a", FILTER_STAGE_RCPT, "x@y", FILTER_REJECT, 550, "5.7.1",
	  "Message refused by policy", "rej2xx", "-.rcpt" },
	/* order decides: a tempfail before a reject wins */
	{ "tempfail,rejrcpt", FILTER_STAGE_MAIL, "tempfail@x", FILTER_TEMPFAIL, 451, "4.7.1",
	  "Temporary failure, try again later", "tempfail", "-.mail" },
	{ "tempfail", FILTER_STAGE_HELO, "tf550", FILTER_TEMPFAIL, 451, "4.7.1",
	  "Temporary failure, try again later", "tempfail", "-.helo" },
	{ "tempfail", FILTER_STAGE_HELO, "tf421", FILTER_TEMPFAIL, 421, "4.7.0",
	  "go away", "tempfail", "-.helo" },
	/* a verdict that does not exist is a tempfail, never a pass */
	{ "tempfail,trace:a", FILTER_STAGE_HELO, "garbage", FILTER_TEMPFAIL, 451, "4.3.0",
	  "Temporary filter error", "tempfail", "-.helo" },
	/* filters without the stage's callback are skipped */
	{ "rejrcpt,trace:a,cfg,bare", FILTER_STAGE_MAIL, "s@x", FILTER_CONTINUE, 0, "", "",
	  NULL, "a.mail" },
	{ "trace:a,bare", FILTER_STAGE_HELO, "h", FILTER_CONTINUE, 0, "", "", NULL,
	  "a.helo bare.helo" },
	{ "trace:a", FILTER_STAGE_CONNECT, NULL, FILTER_CONTINUE, 0, "", "", NULL,
	  "a.connect" },
	/* ACCEPT takes that filter out; the rest of the chain still runs */
	{ "trace:a,accept,rejrcpt", FILTER_STAGE_RCPT, "acc-bad@x", FILTER_CONTINUE, 0, "", "",
	  NULL, "a.rcpt -.rcpt -.rcpt" },
	/* DISCARD stops the chain, QUARANTINE marks and goes on; a 5xx on a discard is dropped */
	{ "disq,trace:a", FILTER_STAGE_RCPT, "discard@x", FILTER_DISCARD, 0, "", "", "disq",
	  "-.rcpt" },
	{ "disq,trace:a", FILTER_STAGE_RCPT, "quar@x", FILTER_QUARANTINE, 0, "",
	  "looks like spam", "disq", "-.rcpt a.rcpt" },
	{ "disq", FILTER_STAGE_RCPT, "d5@x", FILTER_DISCARD, 0, "", "", "disq", "-.rcpt" },
	/* a blocking filter runs inline when there is no pool to go to */
	{ "trace:a,block:x", FILTER_STAGE_RCPT, "blockrej@x", FILTER_REJECT, 554, "5.7.0",
	  "blocked", "block:x", "a.rcpt x.rcpt" },
};

START_TEST(test_verdicts)
{
	struct fx f;
	struct filter_result res;

	fx_open(&f, verdict_cases[_i].chain);
	if (verdict_cases[_i].stage != FILTER_STAGE_CONNECT)
		run_inline(&f, FILTER_STAGE_CONNECT, NULL, &res);
	trace_reset();
	run_inline(&f, verdict_cases[_i].stage, verdict_cases[_i].arg, &res);
	ck_assert_str_eq(filter_verdict_name(res.verdict),
	    filter_verdict_name(verdict_cases[_i].verdict));
	ck_assert_int_eq(res.reply.code, verdict_cases[_i].code);
	ck_assert_str_eq(res.reply.ecode, verdict_cases[_i].ecode);
	ck_assert_str_eq(res.reply.text, verdict_cases[_i].text);
	if (verdict_cases[_i].filter == NULL)
		ck_assert_ptr_null(res.filter);
	else
		ck_assert_str_eq(res.filter, verdict_cases[_i].filter);
	ck_assert_str_eq(trace.data, verdict_cases[_i].trace);
	if (verdict_cases[_i].arg != NULL && strncmp(verdict_cases[_i].arg, "quar", 4) == 0)
		ck_assert_str_eq(f.txn.quarantine, "looks like spam");
	else
		ck_assert_ptr_null(f.txn.quarantine);
	fx_close(&f);
}
END_TEST

/*
 * Verdicts across the stages of a session, chain "say:p,say:q".  stages: C
 * connect, H helo, M mail (a new transaction), R rcpt, D data, A abort (the
 * transaction is then cleared), E end of a delivered transaction (cleared,
 * no stage run).  verdicts: one letter per stage run (c continue, q
 * quarantine, d discard, r reject), '-' for E.
 */
static const struct {
	const char *script;
	const char *stages;
	const char *verdicts;
	const char *trace;
	bool discard;		/* txn->discard at the end */
	const char *quarantine;	/* txn->quarantine at the end */
} stage_cases[] = {
	/* ACCEPT at RCPT: p sits out the rest of the transaction, q does not */
	{ "p.rcpt=accept", "CHMRRDEMR", "cccccc-cc",
	  "p.connect q.connect p.helo q.helo p.mail q.mail p.rcpt q.rcpt q.rcpt q.eom "
	  "p.mail q.mail p.rcpt q.rcpt", false, NULL },
	/* ACCEPT at MAIL, then a later filter still refuses a recipient */
	{ "p.mail=accept q.rcpt=reject", "CMRR", "ccrr",
	  "p.connect q.connect p.mail q.mail q.rcpt q.rcpt", false, NULL },
	/* the transaction ends at RSET (abort, which still reaches p) and HELO comes back to p */
	{ "p.mail=accept", "CMRAH", "ccccc",
	  "p.connect q.connect p.mail q.mail q.rcpt p.abort q.abort p.helo q.helo", false, NULL },
	/* ACCEPT at CONNECT or HELO: p is done for the whole session */
	{ "p.connect=accept", "CHMRDEMR", "ccccc-cc",
	  "p.connect q.connect q.helo q.mail q.rcpt q.eom q.mail q.rcpt", false, NULL },
	{ "p.helo=accept", "CHMRDEM", "ccccc-c",
	  "p.connect q.connect p.helo q.helo q.mail q.rcpt q.eom q.mail", false, NULL },
	/* DISCARD at RCPT stops the chain and every later stage of the transaction */
	{ "p.rcpt=discard", "CMRRDEMR", "ccddd-cd",
	  "p.connect q.connect p.mail q.mail p.rcpt p.mail q.mail p.rcpt", true, NULL },
	/* DISCARD at MAIL holds for the transaction only: after RSET, HELO runs the chain */
	{ "q.mail=discard", "CMRAH", "cddcc",
	  "p.connect q.connect p.mail q.mail p.abort q.abort p.helo q.helo", false, NULL },
	/* DISCARD at CONNECT or HELO: every transaction, no filter runs again */
	{ "p.connect=discard", "CHMRDEM", "ddddd-d", "p.connect", true, NULL },
	{ "q.helo=discard", "CHMRAM", "cdddcd",
	  "p.connect q.connect p.helo q.helo p.abort q.abort", true, NULL },
	/* QUARANTINE marks the transaction and the chain goes on */
	{ "p.mail=quarantine", "CMRD", "cqcc",
	  "p.connect q.connect p.mail q.mail p.rcpt q.rcpt p.eom q.eom", false, "filter say:p" },
	{ "q.rcpt=quarantine p.eom=reject", "CMRD", "ccqr",
	  "p.connect q.connect p.mail q.mail p.rcpt q.rcpt p.eom", false, "filter say:q" },
	/* QUARANTINE at HELO marks every transaction of the session */
	{ "p.helo=quarantine", "CHMREM", "cqcc-c",
	  "p.connect q.connect p.helo q.helo p.mail q.mail p.rcpt q.rcpt p.mail q.mail", false,
	  "filter say:p" },
};

START_TEST(test_stage_verdicts)
{
	static const char letters[] = { [FILTER_CONTINUE] = 'c', [FILTER_ACCEPT] = 'a',
		[FILTER_REJECT] = 'r', [FILTER_TEMPFAIL] = 't', [FILTER_DISCARD] = 'd',
		[FILTER_QUARANTINE] = 'q' };
	struct fx f;
	struct filter_result res;
	enum filter_stage stage;
	char got[32];
	const char *p;
	size_t n = 0;

	say_script = stage_cases[_i].script;
	fx_open(&f, "say:p,say:q");
	for (p = stage_cases[_i].stages; *p != '\0'; p++) {
		switch (*p) {
		case 'C': stage = FILTER_STAGE_CONNECT; break;
		case 'H': stage = FILTER_STAGE_HELO; break;
		case 'M': stage = FILTER_STAGE_MAIL; break;
		case 'R': stage = FILTER_STAGE_RCPT; break;
		case 'D': stage = FILTER_STAGE_DATA; break;
		case 'A': stage = FILTER_STAGE_ABORT; break;
		default:
			filter_txn_reset(&f.txn);	/* E: delivered */
			got[n++] = '-';
			continue;
		}
		/* as the session does: no transaction at the session-wide stages */
		f.ctx.txn = stage == FILTER_STAGE_CONNECT || stage == FILTER_STAGE_HELO ? NULL :
		    &f.txn;
		got[n++] = letters[run_inline(&f, stage, "x@y", &res)];
		if (*p == 'A')
			filter_txn_reset(&f.txn);
	}
	got[n] = '\0';
	f.ctx.txn = &f.txn;
	ck_assert_str_eq(got, stage_cases[_i].verdicts);
	ck_assert_str_eq(trace.data, stage_cases[_i].trace);
	ck_assert_int_eq(f.txn.discard, stage_cases[_i].discard);
	if (stage_cases[_i].quarantine == NULL)
		ck_assert_ptr_null(f.txn.quarantine);
	else
		ck_assert_str_eq(f.txn.quarantine, stage_cases[_i].quarantine);
	trace_reset();
	fx_close(&f);
	say_script = "";
}
END_TEST

START_TEST(test_state_free_closes)
{
	struct fx f;
	struct filter_result res;

	fx_open(&f, "trace:a,trace:b");
	run_inline(&f, FILTER_STAGE_CONNECT, NULL, &res);	/* allocates priv */
	trace_reset();
	fx_close(&f);	/* LSan: close freed each priv */
	ck_assert_str_eq(trace.data, "a.close b.close");
}
END_TEST

/* ---- the DATA stage ---- */

/* make_body - n bytes of CRLF-terminated lines */
static char *
make_body(size_t n)
{
	char *b = xmalloc(n);
	size_t i;

	for (i = 0; i < n; i++)
		b[i] = (i % 50 == 48) ? '\r' : (i % 50 == 49) ? '\n' : (char)('a' + i % 26);
	return b;
}

START_TEST(test_data_stage)
{
	static const char head[] = "From: a@example.test\r\nSubject: hi\r\n\tthere\r\n\r\nbody\r\n";
	struct fx f;
	struct filter_result res;

	fx_open(&f, "trace:a,rejrcpt,trace:b");
	ck_assert_uint_eq(filter_parse_headers(&f.txn, head, sizeof(head) - 1), sizeof(head) - 7);
	run_inline(&f, FILTER_STAGE_CONNECT, NULL, &res);
	trace_reset();
	ck_assert_int_eq(run_inline(&f, FILTER_STAGE_DATA, NULL, &res), FILTER_CONTINUE);
	/* per filter in order: each header, eoh, (body), eom; rejrcpt has none */
	ck_assert_str_eq(trace.data, "a.From a.Subject a.eoh a.eom b.From b.Subject b.eoh b.eom");
	fx_close(&f);
}
END_TEST

/* bodycat_inst - the last instance configured by bodycat */
static struct tinst *bodycat_inst;

/* bodycat_configure - remember the instance just configured */
static void *
bodycat_configure(const struct conf *conf, const struct conf_section *sec, char **err_r)
{
	return bodycat_inst = t_configure(conf, sec, err_r);
}

/* bodycat_header - collect "[name:value]" */
static enum filter_verdict
bodycat_header(void *inst, struct filter_ctx *ctx, const char *name, const char *value,
    struct filter_reply *r)
{
	struct tinst *t = inst;

	buf_printf(&t->body, "[%s:%s]", name, value);
	return FILTER_CONTINUE;
}

/* bodycat_eoh - collect "[eoh]" */
static enum filter_verdict
bodycat_eoh(void *inst, struct filter_ctx *ctx, struct filter_reply *r)
{
	buf_puts(&((struct tinst *)inst)->body, "[eoh]");
	return FILTER_CONTINUE;
}

/* bodycat_body - collect the chunk; one holding "STOP" rejects */
static enum filter_verdict
bodycat_body(void *inst, struct filter_ctx *ctx, const char *chunk, size_t len,
    struct filter_reply *r)
{
	struct tinst *t = inst;

	if (t->nchunks < ARRAY_SIZE(t->chunks))
		t->chunks[t->nchunks++] = len;
	buf_append(&t->body, chunk, len);
	/* "STOP" in a chunk rejects at once */
	if (memmem(chunk, len, "STOP", 4) != NULL)
		return FILTER_REJECT;
	return FILTER_CONTINUE;
}

/* bodycat_eom - collect "[eom]" */
static enum filter_verdict
bodycat_eom(void *inst, struct filter_ctx *ctx, struct filter_reply *r)
{
	buf_puts(&((struct tinst *)inst)->body, "[eom]");
	return FILTER_CONTINUE;
}

static const struct filter_ops bodycat_ops = {
	.name = "bodycat", .configure = bodycat_configure, .destroy = t_destroy,
	.header = bodycat_header, .eoh = bodycat_eoh, .body = bodycat_body, .eom = bodycat_eom,
};

START_TEST(test_data_chunks)
{
	static const char head[] = "From: a@example.test\r\nSubject: hi\r\n\tthere\r\n\r\n";
	const size_t bodylen = 150000, hlen = sizeof(head) - 1;
	char *body = make_body(bodylen), *copy;
	struct spool *sp;
	struct fx f;
	struct filter_result res;
	struct buf want;
	const char *err;

	/* the spool holds the message as received: headers, then the body */
	filter_register(&bodycat_ops);
	sp = spool_new(_i == 0 ? 1 << 20 : 0, NULL);
	ck_assert(spool_write(sp, head, hlen, &err));
	ck_assert(spool_write(sp, body, bodylen, &err));
	if (_i == 1)
		ck_assert_ptr_null(spool_mem(sp));
	fx_open(&f, "bodycat,trace:a");
	copy = xmalloc(hlen + bodylen);
	ck_assert_int_eq(spool_pread(sp, copy, hlen + bodylen, 0), (ssize_t)(hlen + bodylen));
	f.txn.body_offset = filter_parse_headers(&f.txn, copy, hlen + bodylen);
	ck_assert_uint_eq(f.txn.body_offset, hlen);
	free(copy);
	f.txn.body = sp;
	trace_reset();
	ck_assert_int_eq(run_inline(&f, FILTER_STAGE_DATA, NULL, &res), FILTER_CONTINUE);
	ck_assert_str_eq(trace.data, "a.From a.Subject a.eoh a.eom");

	buf_init(&want);
	buf_puts(&want, "[From: a@example.test][Subject: hi\r\n\tthere][eoh]");
	buf_append(&want, body, bodylen);
	buf_puts(&want, "[eom]");
	ck_assert_uint_eq(bodycat_inst->body.len, want.len);
	ck_assert(memcmp(bodycat_inst->body.data, want.data, want.len) == 0);
	ck_assert_uint_eq(bodycat_inst->nchunks, 3);
	ck_assert_uint_eq(bodycat_inst->chunks[0], 65536);
	ck_assert_uint_eq(bodycat_inst->chunks[1], 65536);
	ck_assert_uint_eq(bodycat_inst->chunks[2], bodylen - 2 * 65536);

	/* a verdict from body() ends that filter and the chain: no eom */
	buf_reset(&bodycat_inst->body);
	bodycat_inst->nchunks = 0;
	spool_truncate(sp);
	f.txn.body_offset = 0;
	ck_assert(spool_write(sp, body, 70000, &err));
	ck_assert(spool_write(sp, "STOP\r\n", 6, &err));
	trace_reset();
	ck_assert_int_eq(run_inline(&f, FILTER_STAGE_DATA, NULL, &res), FILTER_REJECT);
	ck_assert_str_eq(res.filter, "bodycat");
	ck_assert_uint_eq(bodycat_inst->nchunks, 2);
	ck_assert_ptr_null(strstr(bodycat_inst->body.data, "[eom]"));
	ck_assert_str_eq(trace.data, "");

	/* an empty body, then no spool at all: headers, eoh, eom */
	buf_reset(&bodycat_inst->body);
	bodycat_inst->nchunks = 0;
	f.txn.body_offset = spool_size(sp);
	ck_assert_int_eq(run_inline(&f, FILTER_STAGE_DATA, NULL, &res), FILTER_CONTINUE);
	ck_assert_uint_eq(bodycat_inst->nchunks, 0);
	f.txn.body = NULL;
	ck_assert_int_eq(run_inline(&f, FILTER_STAGE_DATA, NULL, &res), FILTER_CONTINUE);
	ck_assert_uint_eq(bodycat_inst->nchunks, 0);
	ck_assert_str_eq(bodycat_inst->body.data,
	    "[From: a@example.test][Subject: hi\r\n\tthere][eoh][eom]"
	    "[From: a@example.test][Subject: hi\r\n\tthere][eoh][eom]");

	buf_free(&want);
	fx_close(&f);
	spool_free(sp);
	free(body);
}
END_TEST

/* ---- blocking filters on a real pool ---- */

struct loopfx {
	struct event_base *base;
	struct workers *w;
	struct workers_loop *wl;
	pthread_t thread;
	unsigned ndone;
	pthread_t done_thread;
	uint64_t done_id;
	void *done_arg;
	struct filter_result res;
};

/* loop_open - pool of nthreads, queue max, a base on this thread */
static void
loop_open(struct loopfx *lf, unsigned nthreads, unsigned max)
{
	memset(lf, 0, sizeof(*lf));
	lf->base = event_base_new();
	ck_assert_ptr_nonnull(lf->base);
	lf->w = workers_new(nthreads, max);
	lf->wl = workers_attach(lf->w, lf->base);
	lf->thread = pthread_self();
}

/* loop_close - pool and base */
static void
loop_close(struct loopfx *lf)
{
	workers_detach(lf->wl);
	workers_free(lf->w);
	event_base_free(lf->base);
}

/* on_done - the stage's completion */
static void
on_done(uint64_t id, void *arg, const struct filter_result *res)
{
	struct loopfx *lf = arg;

	lf->ndone++;
	lf->done_thread = pthread_self();
	lf->done_id = id;
	lf->done_arg = arg;
	lf->res = *res;
	event_base_loopbreak(lf->base);
}

/* loop_wait - turn the loop until on_done ran */
static void
loop_wait(struct loopfx *lf)
{
	struct timeval tv = { 20, 0 };

	event_base_loopexit(lf->base, &tv);
	event_base_loop(lf->base, EVLOOP_NO_EXIT_ON_EMPTY);
	ck_assert_uint_eq(lf->ndone, 1);
	ck_assert(pthread_equal(lf->done_thread, lf->thread));
	ck_assert_uint_eq(lf->done_id, test_sess.id);
	ck_assert_ptr_eq(lf->done_arg, lf);
}

static const struct {
	const char *chain;
	enum filter_stage stage;
	const char *arg;
	bool pending;
	enum filter_verdict verdict;
	int code;
	const char *filter;
	const char *trace;
} block_cases[] = {
	{ "trace:a,block:x,trace:b", FILTER_STAGE_RCPT, "good@x", true, FILTER_CONTINUE, 0,
	  NULL, "a.rcpt x.rcpt b.rcpt" },
	{ "trace:a,block:x,trace:b", FILTER_STAGE_RCPT, "blockrej@x", true, FILTER_REJECT, 554,
	  "block:x", "a.rcpt x.rcpt" },
	/* an inline reject before the blocking filter: no pool hop at all */
	{ "rejrcpt,block:x", FILTER_STAGE_RCPT, "bad@x", false, FILTER_REJECT, 550,
	  "rejrcpt", "-.rcpt" },
	/* the blocking filter has no helo callback: the stage stays inline */
	{ "trace:a,block:x,trace:b", FILTER_STAGE_HELO, "h", false, FILTER_CONTINUE, 0,
	  NULL, "a.helo b.helo" },
	/* two hops */
	{ "block:x,trace:a,block:y,trace:b", FILTER_STAGE_MAIL, "s@x", true, FILTER_CONTINUE, 0,
	  NULL, "x.mail a.mail y.mail b.mail" },
	{ "block:x,block:y,rejrcpt", FILTER_STAGE_RCPT, "bad@x", true, FILTER_REJECT, 550,
	  "rejrcpt", "x.rcpt y.rcpt -.rcpt" },
	{ "trace:a,block:x,trace:b", FILTER_STAGE_DATA, NULL, true, FILTER_CONTINUE, 0,
	  NULL, "a.eoh a.eom x.eoh x.eom b.eoh b.eom" },
	/* accept on the loop after a hop: the blocking filter after it still runs */
	{ "block:x,accept,block:y", FILTER_STAGE_RCPT, "acc@x", true, FILTER_CONTINUE, 0,
	  NULL, "x.rcpt -.rcpt y.rcpt" },
};

START_TEST(test_blocking)
{
	struct loopfx lf;
	struct fx f;
	struct filter_result res;
	enum filter_run_status rs;

	loop_open(&lf, 2, 16);
	fx_open(&f, block_cases[_i].chain);
	trace_reset();
	rs = filter_run(f.st, block_cases[_i].stage, &f.ctx, block_cases[_i].arg, &res, lf.wl,
	    on_done, &lf);
	if (block_cases[_i].pending) {
		ck_assert_int_eq(rs, FILTER_RUN_PENDING);
		loop_wait(&lf);
		res = lf.res;
	} else {
		ck_assert_int_eq(rs, FILTER_RUN_DONE);
		/* give a wrongly queued completion every chance to show up */
		event_base_loop(lf.base, EVLOOP_NONBLOCK);
		ck_assert_uint_eq(lf.ndone, 0);
	}
	ck_assert_str_eq(filter_verdict_name(res.verdict),
	    filter_verdict_name(block_cases[_i].verdict));
	ck_assert_int_eq(res.reply.code, block_cases[_i].code);
	if (block_cases[_i].filter == NULL)
		ck_assert_ptr_null(res.filter);
	else
		ck_assert_str_eq(res.filter, block_cases[_i].filter);
	ck_assert_str_eq(trace.data, block_cases[_i].trace);
	fx_close(&f);
	loop_close(&lf);
	/* exactly once: nothing else arrives later */
	ck_assert_uint_eq(lf.ndone, block_cases[_i].pending ? 1 : 0);
}
END_TEST

/* thread_spy - records where the blocking filter ran */
static pthread_t spy_thread;
static unsigned spy_calls;

/* spy_rcpt - record the thread and check what the filter sees */
static enum filter_verdict
spy_rcpt(void *inst, struct filter_ctx *ctx, const char *rcpt, struct filter_reply *r)
{
	spy_thread = pthread_self();
	spy_calls++;
	/* A blocking call reads its own copies, never the session's. */
	ck_assert_ptr_ne(ctx->sess, &test_sess);
	ck_assert_uint_eq(ctx->sess->id, test_sess.id);
	ck_assert_str_eq(ctx->sess->helo, test_sess.helo);
	ck_assert_ptr_ne(ctx->sess->helo, test_sess.helo);
	ck_assert_ptr_eq(ctx->sess->conf, &test_conf);
	ck_assert_str_eq(ctx->txn->mail_from, "sender@example.test");
	ck_assert_str_eq(rcpt, "who@x");
	return FILTER_CONTINUE;
}

static const struct filter_ops threadspy_ops = {
	.name = "threadspy", .may_block = true, .rcpt = spy_rcpt,
};

START_TEST(test_blocking_thread)
{
	struct loopfx lf;
	struct fx f;
	struct filter_result res;
	unsigned k;

	filter_register(&threadspy_ops);
	loop_open(&lf, 2, 16);
	fx_open(&f, "trace:a,threadspy");
	for (k = 0; k < 3; k++) {
		lf.ndone = 0;
		ck_assert_int_eq(filter_run(f.st, FILTER_STAGE_RCPT, &f.ctx, "who@x", &res, lf.wl,
		    on_done, &lf), FILTER_RUN_PENDING);
		loop_wait(&lf);
		ck_assert(!pthread_equal(spy_thread, lf.thread));
		ck_assert_int_eq(lf.res.verdict, FILTER_CONTINUE);
	}
	ck_assert_uint_eq(spy_calls, 3);
	fx_close(&f);
	loop_close(&lf);
}
END_TEST

/* factspy_rcpt - on the pool: sees the facts so far, records one of its own */
static enum filter_verdict
factspy_rcpt(void *inst, struct filter_ctx *ctx, const char *rcpt, struct filter_reply *r)
{
	ck_assert_uint_eq(ctx->txn->nfacts, 1);
	ck_assert_str_eq(ctx->txn->facts[0].method, "spf");
	ck_assert_ptr_null(ctx->resolver);	/* a pool thread queries with resolver_sync */
	filter_auth_fact(ctx->txn, "dkim", "pass", "example.test", "sel1");
	filter_auth_fact(ctx->txn, "dkim", "fail", "other.test", NULL);
	return FILTER_CONTINUE;
}

static const struct filter_ops factspy_ops = {
	.name = "factspy", .may_block = true, .rcpt = factspy_rcpt,
};

/* test_blocking_facts - facts recorded on the pool reach the session's transaction, in order */
START_TEST(test_blocking_facts)
{
	struct loopfx lf;
	struct fx f;
	struct filter_result res;

	filter_register(&factspy_ops);
	loop_open(&lf, 1, 4);
	fx_open(&f, "factspy");
	filter_auth_fact(&f.txn, "spf", "softfail", "example.test", "mailfrom");
	ck_assert_int_eq(filter_run(f.st, FILTER_STAGE_RCPT, &f.ctx, "who@x", &res, lf.wl,
	    on_done, &lf), FILTER_RUN_PENDING);
	loop_wait(&lf);
	ck_assert_uint_eq(f.txn.nfacts, 3);
	ck_assert_str_eq(f.txn.facts[0].result, "softfail");
	ck_assert_str_eq(f.txn.facts[0].scope, "mailfrom");
	ck_assert_str_eq(f.txn.facts[1].method, "dkim");
	ck_assert_str_eq(f.txn.facts[1].domain, "example.test");
	ck_assert_str_eq(f.txn.facts[1].scope, "sel1");
	ck_assert_str_eq(f.txn.facts[2].result, "fail");
	ck_assert_ptr_null(f.txn.facts[2].scope);
	fx_close(&f);
	loop_close(&lf);
}
END_TEST

START_TEST(test_pool_full_at_start)
{
	struct loopfx lf;
	struct fx f;
	struct filter_result res;

	loop_open(&lf, 1, 0);	/* never room */
	fx_open(&f, "trace:a,block:x,trace:b");
	trace_reset();
	ck_assert_int_eq(filter_run(f.st, FILTER_STAGE_RCPT, &f.ctx, "good@x", &res, lf.wl,
	    on_done, &lf), FILTER_RUN_DONE);
	ck_assert_int_eq(res.verdict, FILTER_TEMPFAIL);
	ck_assert_int_eq(res.reply.code, 451);
	ck_assert_str_eq(res.reply.ecode, "4.3.0");
	ck_assert_str_eq(res.reply.text, "filter pool busy");
	ck_assert_str_eq(res.filter, "block:x");
	ck_assert_str_eq(trace.data, "a.rcpt");
	event_base_loop(lf.base, EVLOOP_NONBLOCK);
	ck_assert_uint_eq(lf.ndone, 0);
	/* the state is usable again */
	ck_assert_int_eq(filter_run(f.st, FILTER_STAGE_HELO, &f.ctx, "h", &res, lf.wl,
	    on_done, &lf), FILTER_RUN_DONE);
	fx_close(&f);
	loop_close(&lf);
}
END_TEST

START_TEST(test_pool_full_mid_chain)
{
	struct loopfx lf;
	struct fx f;
	struct filter_result res;
	struct timeval tv = { 0, 20000 };

	loop_open(&lf, 1, 2);
	filler_wl = lf.wl;
	fx_open(&f, "block:x,filler,block:y,trace:b");
	trace_reset();
	ck_assert_int_eq(filter_run(f.st, FILTER_STAGE_RCPT, &f.ctx, "good@x", &res, lf.wl,
	    on_done, &lf), FILTER_RUN_PENDING);
	/* x runs on the pool; filler then fills the queue, so y cannot go */
	loop_wait(&lf);
	ck_assert_int_eq(lf.res.verdict, FILTER_TEMPFAIL);
	ck_assert_int_eq(lf.res.reply.code, 451);
	ck_assert_str_eq(lf.res.reply.ecode, "4.3.0");
	ck_assert_str_eq(lf.res.reply.text, "filter pool busy");
	ck_assert_str_eq(lf.res.filter, "block:y");
	ck_assert_str_eq(trace.data, "x.rcpt -.rcpt");
	ck_assert_uint_ge(fillers_submitted, 2);

	/* let the fillers go and collect their completions */
	pthread_mutex_lock(&gate_mtx);
	gate_opened = true;
	pthread_cond_broadcast(&gate_cond);
	pthread_mutex_unlock(&gate_mtx);
	while (fillers_done < fillers_submitted) {
		event_base_loopexit(lf.base, &tv);
		event_base_loop(lf.base, EVLOOP_NO_EXIT_ON_EMPTY);
	}
	ck_assert_uint_eq(lf.ndone, 1);
	fx_close(&f);
	loop_close(&lf);
}
END_TEST

/* ---- header parsing ---- */

#define ALL	((size_t)-1)	/* the body offset: the whole message is the block */
#define NOMAX	0		/* no max_header_size */

static const struct {
	const char *what;
	const char *msg;
	size_t len;		/* 0: strlen(msg) */
	size_t max;		/* NOMAX: SIZE_MAX */
	enum filter_hparser_status st;
	size_t body;		/* ALL: len */
	enum filter_eoh eoh;
	const char *want;	/* "name=value|" per field, values raw */
} hparse_cases[] = {
	{ "simple", "From: a\r\nTo: b\r\n\r\nbody\r\n", 0, NOMAX,
	  FILTER_HPARSER_DONE, 18, FILTER_EOH_EMPTY_LINE, "From= a|To= b|" },
	{ "folding", "Subject: one\r\n two\r\n\tthree\r\nX: y\r\n\r\nB", 0, NOMAX,
	  FILTER_HPARSER_DONE, 36, FILTER_EOH_EMPTY_LINE, "Subject= one\r\n two\r\n\tthree|X= y|" },
	{ "no body", "From: a\r\nTo: b\r\n\r\n", 0, NOMAX,
	  FILTER_HPARSER_DONE, ALL, FILTER_EOH_EMPTY_LINE, "From= a|To= b|" },
	{ "no separator at all", "From: a\r\nTo: b\r\n", 0, NOMAX,
	  FILTER_HPARSER_DONE, ALL, FILTER_EOH_END, "From= a|To= b|" },
	{ "no final crlf", "From: a\r\nTo: b", 0, NOMAX,
	  FILTER_HPARSER_DONE, ALL, FILTER_EOH_END, "From= a|To= b|" },
	{ "continuation at the very end", "A: 1\r\n 2", 0, NOMAX,
	  FILTER_HPARSER_DONE, ALL, FILTER_EOH_END, "A= 1\r\n 2|" },
	/* the obsolete syntax: WSP before the colon, the name without it */
	{ "obs: space before colon", "From : ceo@bank.example\r\nTo: b\r\n\r\n", 0, NOMAX,
	  FILTER_HPARSER_DONE, ALL, FILTER_EOH_EMPTY_LINE, "From= ceo@bank.example|To= b|" },
	{ "obs: tab before colon", "From\t: x\r\n\r\n", 0, NOMAX,
	  FILTER_HPARSER_DONE, ALL, FILTER_EOH_EMPTY_LINE, "From= x|" },
	{ "obs: mixed WSP, no space after", "Subject \t \t:x\r\n\r\n", 0, NOMAX,
	  FILTER_HPARSER_DONE, ALL, FILTER_EOH_EMPTY_LINE, "Subject=x|" },
	{ "obs: folded value", "Authentication-Results :\r\n mx.example.test; dkim=pass\r\n\r\n", 0,
	  NOMAX, FILTER_HPARSER_DONE, ALL, FILTER_EOH_EMPTY_LINE,
	  "Authentication-Results=\r\n mx.example.test; dkim=pass|" },
	{ "obs after a folded field", "X: 1\r\n\t2\r\nFrom  : a\r\n\r\n", 0, NOMAX,
	  FILTER_HPARSER_DONE, ALL, FILTER_EOH_EMPTY_LINE, "X= 1\r\n\t2|From= a|" },
	{ "WSP then colon continues", "From: a\r\n : x\r\n\r\n", 0, NOMAX,
	  FILTER_HPARSER_DONE, ALL, FILTER_EOH_EMPTY_LINE, "From= a\r\n : x|" },
	{ "whitespace-only continuation", "A: 1\r\n \r\n\r\nB", 0, NOMAX,
	  FILTER_HPARSER_DONE, 11, FILTER_EOH_EMPTY_LINE, "A= 1\r\n |" },
	/* a line that is no field ends the block, the body starts with it */
	{ "malformed: words", "From: a\r\nnot a header\r\nTo: b\r\n\r\n", 0, NOMAX,
	  FILTER_HPARSER_DONE, 9, FILTER_EOH_MALFORMED, "From= a|" },
	{ "malformed: space inside the name", "From: a\r\nTwo words: x\r\nTo: b\r\n\r\n", 0, NOMAX,
	  FILTER_HPARSER_DONE, 9, FILTER_EOH_MALFORMED, "From= a|" },
	{ "malformed: no colon", "From: a\r\nJunk\r\n", 0, NOMAX,
	  FILTER_HPARSER_DONE, 9, FILTER_EOH_MALFORMED, "From= a|" },
	{ "malformed: WSP then no colon", "From: a\r\nJunk \t\r\n", 0, NOMAX,
	  FILTER_HPARSER_DONE, 9, FILTER_EOH_MALFORMED, "From= a|" },
	{ "malformed: empty name", "From: a\r\n: x\r\n", 0, NOMAX,
	  FILTER_HPARSER_DONE, 9, FILTER_EOH_MALFORMED, "From= a|" },
	{ "malformed: first line", "this is not a header\r\nFrom: a\r\n\r\n", 0, NOMAX,
	  FILTER_HPARSER_DONE, 0, FILTER_EOH_MALFORMED, "" },
	{ "malformed: leading continuation", " folded\r\nFrom: a\r\n", 0, NOMAX,
	  FILTER_HPARSER_DONE, 0, FILTER_EOH_MALFORMED, "" },
	{ "malformed: 8-bit name", "Fr\xc3\xb6m: a\r\n\r\n", 0, NOMAX,
	  FILTER_HPARSER_DONE, 0, FILTER_EOH_MALFORMED, "" },
	{ "malformed: DEL in the name", "A: 1\r\nFr\x7fm: a\r\n\r\n", 0, NOMAX,
	  FILTER_HPARSER_DONE, 6, FILTER_EOH_MALFORMED, "A= 1|" },
	{ "malformed: mbox From_ line", "From a@b Mon Jan 1\r\nFrom: a\r\n", 0, NOMAX,
	  FILTER_HPARSER_DONE, 0, FILTER_EOH_MALFORMED, "" },
	{ "malformed: NUL in a value", "From: a\r\nX: b\0c\r\n\r\n", 19, NOMAX,
	  FILTER_HPARSER_DONE, 9, FILTER_EOH_MALFORMED, "From= a|" },
	{ "malformed: NUL in a continuation", "From: a\r\n b\0c\r\n\r\n", 16, NOMAX,
	  FILTER_HPARSER_DONE, 9, FILTER_EOH_MALFORMED, "From= a|" },
	{ "malformed: last line, no line end", "A: 1\r\njunk", 0, NOMAX,
	  FILTER_HPARSER_DONE, 6, FILTER_EOH_MALFORMED, "A= 1|" },
	/* empty blocks */
	{ "empty message", "", 0, NOMAX, FILTER_HPARSER_DONE, 0, FILTER_EOH_END, "" },
	{ "CRLF only", "\r\n", 0, NOMAX, FILTER_HPARSER_DONE, 2, FILTER_EOH_EMPTY_LINE, "" },
	{ "empty line, then body", "\r\nbody", 0, NOMAX,
	  FILTER_HPARSER_DONE, 2, FILTER_EOH_EMPTY_LINE, "" },
	{ "empty value", "X-Empty:\r\nY:z\r\n\r\n", 0, NOMAX,
	  FILTER_HPARSER_DONE, 17, FILTER_EOH_EMPTY_LINE, "X-Empty=|Y=z|" },
	{ "colon in value", "X: a:b: c\r\n\r\n", 0, NOMAX,
	  FILTER_HPARSER_DONE, 13, FILTER_EOH_EMPTY_LINE, "X= a:b: c|" },
	{ "bare lf", "From: a\nTo: b\n\nbody", 0, NOMAX,
	  FILTER_HPARSER_DONE, 15, FILTER_EOH_EMPTY_LINE, "From= a|To= b|" },
	/* max: the fields' octets, line ends in, the empty line or the malformed line out */
	{ "max: exactly", "A: 1\r\nB: 2\r\n\r\nbody", 0, 12,
	  FILTER_HPARSER_DONE, 14, FILTER_EOH_EMPTY_LINE, "A= 1|B= 2|" },
	{ "max: one octet over", "A: 1\r\nB: 2\r\n\r\nbody", 0, 11,
	  FILTER_HPARSER_TOO_BIG, 0, FILTER_EOH_EMPTY_LINE, "A= 1|" },
	{ "max: over by a continuation", "A: 1\r\n 2\r\n\r\n", 0, 9,
	  FILTER_HPARSER_TOO_BIG, 0, FILTER_EOH_EMPTY_LINE, "" },
	{ "max: continuation exactly", "A: 1\r\n 2\r\n\r\n", 0, 10,
	  FILTER_HPARSER_DONE, ALL, FILTER_EOH_EMPTY_LINE, "A= 1\r\n 2|" },
	{ "max: malformed line not counted", "A: 1\r\nB: 2\r\njunk line\r\n", 0, 12,
	  FILTER_HPARSER_DONE, 12, FILTER_EOH_MALFORMED, "A= 1|B= 2|" },
	{ "max: no separator, exactly", "A: 1\r\nB: 2", 0, 10,
	  FILTER_HPARSER_DONE, ALL, FILTER_EOH_END, "A= 1|B= 2|" },
	{ "max: no separator, one over", "A: 1\r\nB: 2", 0, 9,
	  FILTER_HPARSER_TOO_BIG, 0, FILTER_EOH_EMPTY_LINE, "A= 1|" },
};

/* hparse_fields - "name=value|" per parsed field */
static void
hparse_fields(const struct filter_txn *txn, struct buf *out)
{
	size_t i;

	buf_reset(out);
	buf_puts(out, "");
	for (i = 0; i < txn->nheaders; i++)
		buf_printf(out, "%s=%s|", txn->headers[i].name, txn->headers[i].value);
}

/*
 * hparse_feed - parse msg[0..len) handing the parser step octets more at a
 * time (the whole of it when step is 0), each time from a fresh copy of
 * exactly the octets at hand, so a read past them is an ASan error
 */
static enum filter_hparser_status
hparse_feed(struct filter_hparser *hp, struct filter_txn *txn, const char *msg, size_t len,
    size_t max, size_t step)
{
	enum filter_hparser_status st;
	size_t have = step == 0 ? len : 0;
	char *copy;

	filter_hparser_init(hp, txn, max);
	for (;;) {
		copy = xmalloc(have ? have : 1);
		memcpy(copy, msg, have);
		st = filter_hparser_feed(hp, txn, copy, have, have == len);
		if (st != FILTER_HPARSER_MORE) {
			/* the fields own copies: nothing points into the buffer */
			free(copy);
			return st;
		}
		free(copy);
		ck_assert_msg(have < len, "MORE with the whole message at hand");
		have = len - have < step ? len : have + step;
	}
}

START_TEST(test_hparse)
{
	static const size_t steps[] = { 0, 1, 2, 7 };
	struct filter_txn txn;
	struct filter_hparser hp;
	enum filter_hparser_status st;
	struct buf got;
	size_t i, len = hparse_cases[_i].len ? hparse_cases[_i].len : strlen(hparse_cases[_i].msg);
	size_t max = hparse_cases[_i].max != NOMAX ? hparse_cases[_i].max : SIZE_MAX;
	size_t body = hparse_cases[_i].body == ALL ? len : hparse_cases[_i].body;
	const char *what = hparse_cases[_i].what;

	filter_txn_init(&txn);
	buf_init(&got);
	/* whole, then byte by byte and in small pieces: always the same result */
	for (i = 0; i < ARRAY_SIZE(steps); i++) {
		st = hparse_feed(&hp, &txn, hparse_cases[_i].msg, len, max, steps[i]);
		ck_assert_msg(st == hparse_cases[_i].st, "%s (step %zu): status %d, want %d", what,
		    steps[i], (int)st, (int)hparse_cases[_i].st);
		hparse_fields(&txn, &got);
		ck_assert_msg(strcmp(got.data, hparse_cases[_i].want) == 0,
		    "%s (step %zu): got \"%s\"", what, steps[i], got.data);
		if (st != FILTER_HPARSER_DONE)
			continue;
		ck_assert_msg(hp.body == body, "%s (step %zu): body at %zu, want %zu", what,
		    steps[i], hp.body, body);
		ck_assert_msg(hp.eoh == hparse_cases[_i].eoh, "%s (step %zu): eoh %d, want %d", what,
		    steps[i], (int)hp.eoh, (int)hparse_cases[_i].eoh);
	}
	/* the whole-message helper agrees when there is no limit */
	if (hparse_cases[_i].max == NOMAX) {
		ck_assert_uint_eq(filter_parse_headers(&txn, hparse_cases[_i].msg, len), body);
		hparse_fields(&txn, &got);
		ck_assert_str_eq(got.data, hparse_cases[_i].want);
	}
	buf_free(&got);
	filter_txn_reset(&txn);
}
END_TEST

/* hparse_pad - fields of exactly n octets (lines of at most 900) appended to b */
static void
hparse_pad(struct buf *b, size_t n)
{
	size_t k, i = 0, len;
	char name[32];

	while (n > 0) {
		k = n <= 950 ? n : 900;
		len = (size_t)snprintf(name, sizeof(name), "X-Pad-%05zu: ", i++);
		ck_assert_uint_ge(k, len + 3);
		buf_puts(b, name);
		for (len += 2; len < k; len++)
			buf_putc(b, 'x');
		buf_puts(b, "\r\n");
		n -= k;
	}
}

/*
 * test_hparse_limit - a 64 KiB block exactly at max_header_size and one octet
 * over, fed as the session reads a spool file (in chunks), and whole
 */
START_TEST(test_hparse_limit)
{
	static const size_t max = 65536, steps[] = { 0, 4096, 65536 };
	struct filter_txn txn;
	struct filter_hparser hp;
	struct buf msg;
	size_t i, block = max + (size_t)_i;

	filter_txn_init(&txn);
	buf_init(&msg);
	buf_puts(&msg, "Subject: s\r\n");
	hparse_pad(&msg, block - msg.len);
	ck_assert_uint_eq(msg.len, block);
	buf_puts(&msg, "\r\nbody\r\n");
	for (i = 0; i < ARRAY_SIZE(steps); i++) {
		if (_i == 0) {
			ck_assert_int_eq(hparse_feed(&hp, &txn, msg.data, msg.len, max, steps[i]),
			    FILTER_HPARSER_DONE);
			ck_assert_uint_eq(hp.body, block + 2);
			ck_assert_int_eq(hp.eoh, FILTER_EOH_EMPTY_LINE);
			ck_assert_str_eq(txn.headers[0].name, "Subject");
		} else {
			ck_assert_int_eq(hparse_feed(&hp, &txn, msg.data, msg.len, max, steps[i]),
			    FILTER_HPARSER_TOO_BIG);
		}
	}
	buf_free(&msg);
	filter_txn_reset(&txn);
}
END_TEST

/*
 * test_hparse_many_fields - 200,000 tiny forged fields: parsing and
 * composing stay linear (a removal per line would copy the array each time)
 */
START_TEST(test_hparse_many_fields)
{
	static const char forged[] = "Authentication-Results : mx.example.test; none\r\n";
	struct filter_txn txn;
	struct buf msg, out;
	size_t i, n = 200000;

	filter_txn_init(&txn);
	buf_init(&msg);
	buf_init(&out);
	for (i = 0; i < n; i++)
		buf_puts(&msg, i % 2 ? forged : "a:\r\n");
	buf_puts(&msg, "Subject: s\r\n\r\n");
	ck_assert_uint_eq(filter_parse_headers(&txn, msg.data, msg.len), msg.len);
	ck_assert_uint_eq(txn.nheaders, n + 1);
	filter_compose_headers(&txn, "mx.example.test", &out);
	ck_assert_uint_eq(out.len, n / 2 * 4 + 12);
	ck_assert(memcmp(out.data + out.len - 12, "Subject: s\r\n", 12) == 0);
	buf_free(&msg);
	buf_free(&out);
	filter_txn_reset(&txn);
}
END_TEST

/* ---- edits and composition ---- */

enum op { OP_END, OP_ADD, OP_INSERT, OP_CHANGE, OP_DELETE, OP_RESULT, OP_QUARANTINE };

struct edit_step {
	enum op op;
	const char *name;
	unsigned index;
	const char *value;
};

static const struct {
	const char *what;
	const char *head;		/* received header block */
	struct edit_step steps[6];
	const char *want;
} compose_cases[] = {
	{ "unchanged, byte for byte", "From: a\r\nSubject:  two  spaces\r\n\tfolded\r\n\r\n",
	  { { OP_END, NULL, 0, NULL } }, "From: a\r\nSubject:  two  spaces\r\n\tfolded\r\n" },
	{ "add appends", "From: a\r\nTo: b\r\n\r\n",
	  { { OP_ADD, "X-New", 0, "v" }, { OP_ADD, "X-New2", 0, " lead" } },
	  "From: a\r\nTo: b\r\nX-New: v\r\nX-New2: lead\r\n" },
	{ "insert at index", "A: 1\r\nB: 2\r\n\r\n",
	  { { OP_INSERT, "Top", 0, "t" }, { OP_INSERT, "Mid", 2, "m" }, { OP_INSERT, "End", 99, "e" } },
	  "Top: t\r\nA: 1\r\nMid: m\r\nB: 2\r\nEnd: e\r\n" },
	{ "change nth occurrence, case-insensitive", "X: 1\r\nY: 2\r\nx: 3\r\nX: 4\r\n\r\n",
	  { { OP_CHANGE, "X", 2, "three" } }, "X: 1\r\nY: 2\r\nx: three\r\nX: 4\r\n" },
	{ "change with NULL deletes", "X: 1\r\nY: 2\r\nX: 3\r\n\r\n",
	  { { OP_CHANGE, "x", 1, NULL } }, "Y: 2\r\nX: 3\r\n" },
	{ "delete nth", "X: 1\r\nY: 2\r\nX: 3\r\n\r\n",
	  { { OP_DELETE, "X", 2, NULL } }, "X: 1\r\nY: 2\r\n" },
	{ "delete missing is a no-op", "X: 1\r\n\r\n",
	  { { OP_DELETE, "X", 2, NULL }, { OP_DELETE, "Z", 1, NULL } }, "X: 1\r\n" },
	{ "change missing adds", "X: 1\r\n\r\n",
	  { { OP_CHANGE, "X", 3, "new" }, { OP_CHANGE, "Q", 1, "q" } }, "X: 1\r\nX: new\r\nQ: q\r\n" },
	{ "edits apply in order", "A: 1\r\n\r\n",
	  { { OP_ADD, "B", 0, "2" }, { OP_CHANGE, "B", 1, "two" }, { OP_INSERT, "C", 1, "3" },
	    { OP_DELETE, "A", 1, NULL } }, "C: 3\r\nB: two\r\n" },
	{ "filter values cannot inject lines", "A: 1\r\n\r\n",
	  { { OP_ADD, "B", 0, "x\r\nEvil: y" }, { OP_ADD, "C", 0, "fold\r\n\tok" },
	    { OP_ADD, "Bad Name", 0, "z" }, { OP_ADD, "Colon:", 0, "z" } },
	  "A: 1\r\nB: x  Evil: y\r\nC: fold\r\n\tok\r\n" },
	{ "forged results removed, others kept", "Authentication-Results: mx.example.test; spf=pass\r\n"
	  "Authentication-Results: other.test; dkim=pass\r\n"
	  "authentication-results: MX.Example.Test;\r\n\tdkim=pass\r\n"
	  "Authentication-Results:  (comment) mx.example.test (v1) 1; none\r\n"
	  "Authentication-Results: \"mx.example.test\"; none\r\n"
	  "Authentication-Results: mx.example.test.evil; none\r\n"
	  "Authentication-Results: mx.example.test\r\n"
	  "X-Portier-Quarantine: forged\r\n"
	  "Subject: s\r\n\r\n", { { OP_END, NULL, 0, NULL } },
	  "Authentication-Results: other.test; dkim=pass\r\n"
	  "Authentication-Results: mx.example.test.evil; none\r\n"
	  "Subject: s\r\n" },
	{ "our results on top", "Authentication-Results: mx.example.test; spf=pass\r\nFrom: a\r\n\r\n",
	  { { OP_RESULT, NULL, 0, "spf=fail smtp.mailfrom=a@example.test" },
	    { OP_RESULT, NULL, 0, "dkim=none" } },
	  "Authentication-Results: mx.example.test; spf=fail smtp.mailfrom=a@example.test;\r\n"
	  "\tdkim=none\r\nFrom: a\r\n" },
	{ "long results folded between items", "From: a\r\n\r\n",
	  { { OP_RESULT, NULL, 0, "dkim=pass header.d=example.test header.s=selector1 header.b=abcdefgh" },
	    { OP_RESULT, NULL, 0, "dmarc=pass (p=reject; dis=none) header.from=example.test" },
	    { OP_RESULT, NULL, 0, "x=1" } },
	  "Authentication-Results: mx.example.test;\r\n"
	  "\tdkim=pass header.d=example.test header.s=selector1 header.b=abcdefgh;\r\n"
	  "\tdmarc=pass (p=reject; dis=none) header.from=example.test; x=1\r\n"
	  "From: a\r\n" },
	{ "the quarantine mark is the session's", "From: a\r\n\r\n",
	  { { OP_RESULT, NULL, 0, "spf=pass" }, { OP_QUARANTINE, NULL, 0, "spam" },
	    { OP_ADD, "X-Portier-Quarantine", 0, "by a filter" } },
	  "Authentication-Results: mx.example.test; spf=pass\r\n"
	  "From: a\r\nX-Portier-Quarantine: by a filter\r\n" },
	{ "a filter may add results under another id", "From: a\r\n\r\n",
	  { { OP_ADD, "Authentication-Results", 0, "mx.example.test; arc=none" } },
	  "From: a\r\nAuthentication-Results: mx.example.test; arc=none\r\n" },
	{ "empty header block", "\r\nbody", { { OP_ADD, "X", 0, "1" } }, "X: 1\r\n" },
	{ "obsolete names: forged results removed, names sent as name:",
	  "From : a\r\nAuthentication-Results : mx.example.test; dkim=pass\r\n"
	  "Authentication-Results\t:\r\n\tMX.example.test; spf=pass\r\n"
	  "Authentication-Results  : other.test; dkim=pass\r\n"
	  "X-Portier-Quarantine : forged\r\nSubject \t:s\r\n\r\n",
	  { { OP_CHANGE, "subject", 1, " changed" } },
	  "From: a\r\nAuthentication-Results: other.test; dkim=pass\r\nSubject: changed\r\n" },
};

START_TEST(test_compose)
{
	struct filter_txn txn;
	struct buf out;
	const struct edit_step *s;
	size_t i;

	filter_txn_init(&txn);
	buf_init(&out);
	filter_parse_headers(&txn, compose_cases[_i].head, strlen(compose_cases[_i].head));
	for (i = 0; i < ARRAY_SIZE(compose_cases[_i].steps); i++) {
		s = &compose_cases[_i].steps[i];
		switch (s->op) {
		case OP_END:
			break;
		case OP_ADD:
			filter_add_header(&txn, s->name, s->value);
			break;
		case OP_INSERT:
			filter_insert_header(&txn, s->index, s->name, s->value);
			break;
		case OP_CHANGE:
			filter_change_header(&txn, s->name, s->index, s->value);
			break;
		case OP_DELETE:
			filter_delete_header(&txn, s->name, s->index);
			break;
		case OP_RESULT:
			filter_auth_result(&txn, "%s", s->value);
			break;
		case OP_QUARANTINE:
			txn.quarantine = xstrdup(s->value);
			break;
		}
	}
	buf_puts(&out, "");
	filter_compose_headers(&txn, "mx.example.test", &out);
	ck_assert_msg(strcmp(out.data, compose_cases[_i].want) == 0, "%s:\n got: %s\nwant: %s",
	    compose_cases[_i].what, out.data, compose_cases[_i].want);
	buf_free(&out);
	filter_txn_reset(&txn);
}
END_TEST

/* test_edits_seen_by_next - a filter sees the header block and body as the filters before it edited them */
START_TEST(test_edits_seen_by_next)
{
	static const char head[] = "From: a@example.test\r\nSubject: hello\r\nX-Junk: 1\r\n"
	    "X-Junk: 2\r\n\r\n";
	struct fx f;
	struct filter_result res;

	filter_register(&bodycat_ops);
	fx_open(&f, "edits,bodycat");
	filter_parse_headers(&f.txn, head, sizeof(head) - 1);
	ck_assert_int_eq(run_inline(&f, FILTER_STAGE_DATA, NULL, &res), FILTER_CONTINUE);
	/* edits replaced the body with "new\0body\r\n": that is what bodycat's body() got */
	ck_assert_str_eq(bodycat_inst->body.data,
	    "[X-Top:first][From: a@example.test][Subject:[tagged] hello][X-Junk: 1]"
	    "[X-Added:yes][X-Absent:created][eoh]new");
	ck_assert_uint_eq(bodycat_inst->body.len, strlen("[X-Top:first][From: a@example.test]"
	    "[Subject:[tagged] hello][X-Junk: 1][X-Added:yes][X-Absent:created][eoh]") + 10 +
	    strlen("[eom]"));
	ck_assert_uint_eq(bodycat_inst->nchunks, 1);
	ck_assert_uint_eq(bodycat_inst->chunks[0], 10);
	fx_close(&f);
}
END_TEST

START_TEST(test_eom_edits)
{
	static const char head[] = "From: a@example.test\r\nSubject: hello\r\nX-Junk: 1\r\n"
	    "X-Junk: 2\r\nAuthentication-Results: MX.EXAMPLE.TEST; spf=pass\r\n\r\n";
	struct fx f;
	struct filter_result res;
	struct buf out;
	size_t i, n = 0;

	fx_open(&f, "trace:a,edits");
	filter_parse_headers(&f.txn, head, sizeof(head) - 1);
	ck_assert_int_eq(run_inline(&f, FILTER_STAGE_DATA, NULL, &res), FILTER_CONTINUE);
	buf_init(&out);
	filter_compose_headers(&f.txn, test_conf.hostname, &out);
	ck_assert_str_eq(out.data,
	    "Authentication-Results: mx.example.test;\r\n"
	    "\tspf=pass smtp.mailfrom=sender@example.test;\r\n"
	    "\tdkim=pass header.d=example.test header.s=sel1\r\n"
	    "X-Top: first\r\n"
	    "From: a@example.test\r\n"
	    "Subject: [tagged] hello\r\n"
	    "X-Junk: 1\r\n"
	    "X-Added: yes\r\n"
	    "X-Absent: created\r\n");
	buf_free(&out);

	/* the envelope and body edits are kept, copied, for the session */
	for (i = 0; i < f.txn.nedits; i++) {
		const struct filter_edit *e = &f.txn.edits[i];

		switch (e->kind) {
		case EDIT_CHANGE_FROM:
			ck_assert_str_eq(e->value, "new@example.test");
			ck_assert_str_eq(e->params, "RET=HDRS");
			n++;
			break;
		case EDIT_ADD_RCPT:
			ck_assert_str_eq(e->value, "added@example.test");
			ck_assert_str_eq(e->params, "NOTIFY=NEVER");
			n++;
			break;
		case EDIT_DELETE_RCPT:
			ck_assert_str_eq(e->value, "gone@example.test");
			n++;
			break;
		case EDIT_REPLACE_BODY:
			ck_assert_uint_eq(e->value_len, 10);
			ck_assert(memcmp(e->value, "new\0body\r\n", 10) == 0);
			n++;
			break;
		default:
			break;
		}
	}
	ck_assert_uint_eq(n, 4);
	ck_assert_str_eq(f.txn.auth_results.data,
	    "; spf=pass smtp.mailfrom=sender@example.test"
	    "; dkim=pass header.d=example.test header.s=sel1");
	fx_close(&f);
}
END_TEST

START_TEST(test_txn_reset)
{
	struct filter_txn txn;
	struct spool *sp = spool_new(1024, NULL);
	const char *err;

	ck_assert(spool_write(sp, "x\r\n", 3, &err));
	filter_txn_init(&txn);
	txn.mail_from = xstrdup("a@b");
	txn.rcpts = xcalloc(2, sizeof(*txn.rcpts));
	txn.rcpts[0] = xstrdup("c@d");
	txn.rcpts[1] = xstrdup("e@f");
	txn.nrcpts = 2;
	txn.body = sp;
	txn.quarantine = xstrdup("q");
	filter_parse_headers(&txn, "A: 1\r\n\r\n", 8);
	filter_add_header(&txn, "B", "2");
	filter_auth_result(&txn, "spf=%s ctl=%c", "pass", '\n');
	ck_assert_str_eq(txn.auth_results.data, "; spf=pass ctl= ");
	filter_auth_fact(&txn, "spf", "pass", "b", "mailfrom");
	filter_txn_reset(&txn);
	/* everything gone (LSan), the body is the session's and still alive */
	ck_assert_ptr_null(txn.mail_from);
	ck_assert_uint_eq(txn.nrcpts, 0);
	ck_assert_uint_eq(txn.nheaders, 0);
	ck_assert_uint_eq(txn.nedits, 0);
	ck_assert_uint_eq(txn.auth_results.len, 0);
	ck_assert_uint_eq(txn.nfacts, 0);
	ck_assert_ptr_null(txn.facts);
	ck_assert_ptr_null(txn.quarantine);
	ck_assert_ptr_null(txn.body);
	ck_assert_uint_eq(spool_size(sp), 3);
	filter_txn_reset(&txn);	/* twice is fine */
	spool_free(sp);
}
END_TEST

/* ---- waits on the loop, timeouts, default actions, the final stage ---- */

/* A "wait" filter answers on the loop, as a milter or DNS client would. */
enum wmode { W_LATER, W_NOW, W_NEVER, W_FAIL };

struct winst {
	enum wmode mode;
	enum filter_verdict verdict;	/* what it answers (W_LATER, W_NOW) */
};

static unsigned w_calls, w_cancels, w_closes;	/* loop thread, or after the pool joined */
static struct filter_wait *w_handle;	/* the pending call's handle */
static struct event *w_timer;

/* w_configure - "mode" and "verdict"; the chain's keys are the chain's */
static void *
w_configure(const struct conf *conf, const struct conf_section *sec, char **err_r)
{
	struct winst *in = xcalloc(1, sizeof(*in));
	const char *v;
	size_t i;

	in->verdict = FILTER_CONTINUE;
	for (i = 0; sec != NULL && i < sec->nkv; i++) {
		if (filter_chain_key(sec->kv[i].key))
			continue;
		v = sec->kv[i].value;
		if (strcmp(sec->kv[i].key, "mode") == 0)
			in->mode = strcmp(v, "now") == 0 ? W_NOW : strcmp(v, "never") == 0 ? W_NEVER :
			    strcmp(v, "fail") == 0 ? W_FAIL : W_LATER;
		else if (strcmp(sec->kv[i].key, "verdict") == 0)
			in->verdict = strcmp(v, "reject") == 0 ? FILTER_REJECT : FILTER_CONTINUE;
		else {
			*err_r = xasprintf("unknown key %s", sec->kv[i].key);
			free(in);
			return NULL;
		}
	}
	return in;
}

/* w_fire - the answer arrives: a result recorded through the handle, then the verdict */
static void
w_fire(evutil_socket_t fd, short what, void *arg)
{
	struct winst *in = arg;
	struct filter_wait *w = w_handle;
	struct filter_ctx *c = filter_wait_ctx(w);
	struct filter_reply r;

	event_free(w_timer);
	w_timer = NULL;
	w_handle = NULL;
	ck_assert_ptr_nonnull(c);
	if (c->txn != NULL)
		filter_auth_result(c->txn, "test=pass");
	if (in->mode == W_FAIL) {
		filter_wait_fail(w, "test \"failure\"");
		return;
	}
	memset(&r, 0, sizeof(r));
	if (in->verdict == FILTER_REJECT) {
		r.code = 554;
		str_copy(r.ecode, "5.7.0", sizeof(r.ecode));
		str_copy(r.text, "later no", sizeof(r.text));
	}
	filter_wait_done(w, in->verdict, &r);
}

/* w_start - begin a wait, and answer it now, later, never or with a failure */
static enum filter_verdict
w_start(struct winst *in, struct filter_ctx *ctx)
{
	struct timeval tv = { 0, 10000 };
	struct filter_wait *w;

	w_calls++;
	ck_assert_ptr_nonnull(ctx->base);
	w = filter_wait_begin(ctx);
	ck_assert_ptr_nonnull(w);
	if (in->mode == W_NOW) {
		filter_wait_done(w, in->verdict, NULL);	/* inside the callback */
		return FILTER_PENDING;
	}
	w_handle = w;
	if (in->mode == W_NEVER)
		return FILTER_PENDING;
	w_timer = evtimer_new(ctx->base, w_fire, in);
	evtimer_add(w_timer, &tv);
	return FILTER_PENDING;
}

static enum filter_verdict
w_rcpt(void *inst, struct filter_ctx *ctx, const char *rcpt, struct filter_reply *r)
{
	return w_start(inst, ctx);
}

static enum filter_verdict
w_eom(void *inst, struct filter_ctx *ctx, struct filter_reply *r)
{
	return w_start(inst, ctx);
}

/* w_cancel - the chain stopped waiting: stop the "I/O", and give the handle back */
static void
w_cancel(void *inst, struct filter_ctx *ctx)
{
	struct filter_wait *w = w_handle;

	w_cancels++;
	if (w_timer != NULL) {
		event_free(w_timer);
		w_timer = NULL;
	}
	w_handle = NULL;
	ck_assert_ptr_nonnull(w);
	filter_wait_done(w, FILTER_CONTINUE, NULL);	/* late: dropped, and freed */
}

static void
w_close(void *inst, struct filter_ctx *ctx)
{
	w_closes++;
	free(*ctx->priv);
	*ctx->priv = NULL;
}

static const struct filter_ops wait_ops = {
	.name = "wait", .configure = w_configure, .destroy = free, .rcpt = w_rcpt, .eom = w_eom,
	.cancel = w_cancel, .close = w_close,
};

/* slow_rcpt - a blocking call that takes 1.5 s, with per-session state made on the way */
static enum filter_verdict
slow_rcpt(void *inst, struct filter_ctx *ctx, const char *rcpt, struct filter_reply *r)
{
	ck_assert_ptr_null(ctx->base);	/* no waiting on the loop from a pool thread */
	ck_assert_ptr_null(filter_wait_begin(ctx));
	*ctx->priv = xstrdup("slow state");
	usleep(1500 * 1000);
	ck_assert_str_eq(ctx->txn->mail_from, "sender@example.test");	/* its own copy */
	return FILTER_CONTINUE;
}

static const struct filter_ops slow_ops = {
	.name = "slow", .may_block = true, .rcpt = slow_rcpt, .close = w_close,
};

/* signer_final - prepends "X-Sig-LABEL: <octets of the block it saw>" */
static enum filter_verdict
signer_final(void *inst, struct filter_ctx *ctx, struct filter_reply *r)
{
	struct tinst *t = inst;
	char name[64], len[32];

	ck_assert_ptr_nonnull(ctx->txn->head);
	snprintf(name, sizeof(name), "X-Sig-%s", t->label);
	snprintf(len, sizeof(len), "%zu", ctx->txn->head->len);
	filter_prepend_header(ctx->txn, name, len);
	trace_add(t->label, "final");
	return FILTER_CONTINUE;
}

static const struct filter_ops signer_ops = {
	.name = "signer", .configure = t_configure, .destroy = t_destroy, .final = signer_final,
};

static struct conf_kv kv_wlater[] = { { "mode", "later", 20 }, { "verdict", "reject", 21 } };
static struct conf_kv kv_wnow[] = { { "mode", "now", 22 }, { "verdict", "reject", 23 } };
static struct conf_kv kv_wnever[] = { { "mode", "never", 24 }, { "timeout", "1", 25 } };
static struct conf_kv kv_wnevacc[] = { { "mode", "never", 26 }, { "timeout", "1", 27 },
	{ "default_action", "accept", 28 } };
static struct conf_kv kv_wfail[] = { { "mode", "fail", 29 }, { "default_action", "reject", 30 } };
static struct conf_kv kv_slow[] = { { "timeout", "1", 31 }, { "default_action", "reject", 32 } };
static struct conf_kv kv_own[] = { { "threads", "1", 37 } };
static struct conf_kv kv_badthreads[] = { { "threads", "many", 38 } };
static struct conf_kv kv_nothreads[] = { { "threads", "2", 39 } };
static struct conf_kv kv_maxto[] = { { "timeout", "86400", 40 }, { "threads", "1024", 41 } };
static struct conf_kv kv_overto[] = { { "timeout", "86401", 42 } };
static struct conf_kv kv_overthreads[] = { { "threads", "1025", 43 } };
static struct conf_kv kv_badto[] = { { "timeout", "1s", 33 } };
static struct conf_kv kv_badact[] = { { "default_action", "discard", 34 } };
static struct conf_kv kv_bogus[] = { { "timeout", "5", 35 }, { "bogus", "1", 36 } };
static struct conf_section wait_sections[] = {
	{ "trace", "a", 1, kv_a, 1 },
	{ "trace", "b", 2, kv_b, 1 },
	{ "signer", "a", 1, kv_a, 1 },
	{ "signer", "b", 2, kv_b, 1 },
	{ "wait", "later", 20, kv_wlater, 2 },
	{ "wait", "now", 22, kv_wnow, 2 },
	{ "wait", "never", 24, kv_wnever, 2 },
	{ "wait", "nevacc", 26, kv_wnevacc, 3 },
	{ "wait", "fail", 29, kv_wfail, 2 },
	{ "slow", "x", 31, kv_slow, 2 },
	{ "wait", "badto", 33, kv_badto, 1 },
	{ "wait", "badact", 34, kv_badact, 1 },
	{ "bare", "bogus", 35, kv_bogus, 2 },
	{ "slow", "own", 37, kv_own, 1 },
	{ "block", "x", 3, kv_x, 1 },
	{ "slow", "badthreads", 38, kv_badthreads, 1 },
	{ "wait", "nothreads", 39, kv_nothreads, 1 },
	{ "slow", "maxto", 40, kv_maxto, 2 },
	{ "slow", "overto", 42, kv_overto, 1 },
	{ "slow", "overthreads", 43, kv_overthreads, 1 },
};

/* wait_setup - the wait filters and their sections */
static void
wait_setup(void)
{
	setup();
	filter_register(&wait_ops);
	filter_register(&slow_ops);
	filter_register(&signer_ops);
	test_conf.sections = wait_sections;
	test_conf.nsections = ARRAY_SIZE(wait_sections);
	w_calls = w_cancels = w_closes = 0;
	w_handle = NULL;
	w_timer = NULL;
}

/* wait_stage - run stage through f on lf's loop: the result, after the loop if pending */
static struct filter_result
wait_stage(struct fx *f, struct loopfx *lf, enum filter_stage stage, const char *arg,
    enum filter_run_status want)
{
	struct filter_result res;

	lf->ndone = 0;
	ck_assert_int_eq(filter_run(f->st, stage, &f->ctx, arg, &res, lf->wl, on_done, lf), want);
	if (want == FILTER_RUN_PENDING) {
		loop_wait(lf);
		res = lf->res;
	}
	return res;
}

/* test_wait_later - a verdict that comes later on the loop; the next filter waits for it */
START_TEST(test_wait_later)
{
	struct loopfx lf;
	struct fx f;
	struct filter_result res;

	loop_open(&lf, 1, 4);
	fx_open(&f, "trace:a,wait:later,trace:b");
	res = wait_stage(&f, &lf, FILTER_STAGE_RCPT, "r@x", FILTER_RUN_PENDING);
	ck_assert_int_eq(res.verdict, FILTER_REJECT);
	ck_assert_int_eq(res.reply.code, 554);
	ck_assert_str_eq(res.reply.text, "later no");
	ck_assert_str_eq(res.filter, "wait:later");
	ck_assert_str_eq(trace.data, "a.rcpt");	/* b never ran */
	/* the completion wrote through filter_wait_ctx into the session's transaction */
	ck_assert_str_eq(f.txn.auth_results.data, "; test=pass");
	ck_assert_uint_eq(w_calls, 1);
	ck_assert_uint_eq(w_cancels, 0);
	fx_close(&f);
	loop_close(&lf);
}
END_TEST

/* test_wait_now - a wait completed inside its own callback is an inline verdict */
START_TEST(test_wait_now)
{
	struct loopfx lf;
	struct fx f;
	struct filter_result res;

	loop_open(&lf, 1, 4);
	fx_open(&f, "wait:now,trace:b");
	res = wait_stage(&f, &lf, FILTER_STAGE_RCPT, "r@x", FILTER_RUN_DONE);
	ck_assert_int_eq(res.verdict, FILTER_REJECT);
	ck_assert_int_eq(res.reply.code, 550);	/* no reply given: the default for reject */
	event_base_loop(lf.base, EVLOOP_NONBLOCK);
	ck_assert_uint_eq(lf.ndone, 0);
	fx_close(&f);
	loop_close(&lf);
}
END_TEST

/*
 * test_wait_timeout - no answer within timeout: cancel() is called, the
 * default action (tempfail) answers, and holds for every later stage
 * without calling the filter again.
 */
START_TEST(test_wait_timeout)
{
	struct loopfx lf;
	struct fx f;
	struct filter_result res;

	loop_open(&lf, 1, 4);
	fx_open(&f, "wait:never,trace:b");
	res = wait_stage(&f, &lf, FILTER_STAGE_RCPT, "r@x", FILTER_RUN_PENDING);
	ck_assert_int_eq(res.verdict, FILTER_TEMPFAIL);
	ck_assert_int_eq(res.reply.code, 451);
	ck_assert_str_eq(res.reply.ecode, "4.7.1");
	ck_assert_str_eq(res.filter, "wait:never");
	ck_assert_uint_eq(w_cancels, 1);
	ck_assert_ptr_null(w_handle);
	res = wait_stage(&f, &lf, FILTER_STAGE_DATA, NULL, FILTER_RUN_DONE);
	ck_assert_int_eq(res.verdict, FILTER_TEMPFAIL);
	ck_assert_uint_eq(w_calls, 1);
	ck_assert_str_eq(trace.data, "");
	fx_close(&f);
	loop_close(&lf);
}
END_TEST

/* test_wait_timeout_accept - default_action = accept: the chain goes on without it */
START_TEST(test_wait_timeout_accept)
{
	struct loopfx lf;
	struct fx f;
	struct filter_result res;

	loop_open(&lf, 1, 4);
	fx_open(&f, "wait:nevacc,trace:b");
	res = wait_stage(&f, &lf, FILTER_STAGE_RCPT, "r@x", FILTER_RUN_PENDING);
	ck_assert_int_eq(res.verdict, FILTER_CONTINUE);
	ck_assert_str_eq(trace.data, "b.rcpt");
	ck_assert_uint_eq(w_cancels, 1);
	fx_close(&f);
	loop_close(&lf);
}
END_TEST

/* test_wait_fail - a failure the filter reports gets its default action (reject) */
START_TEST(test_wait_fail)
{
	struct loopfx lf;
	struct fx f;
	struct filter_result res;

	loop_open(&lf, 1, 4);
	fx_open(&f, "wait:fail,trace:b");
	res = wait_stage(&f, &lf, FILTER_STAGE_RCPT, "r@x", FILTER_RUN_PENDING);
	ck_assert_int_eq(res.verdict, FILTER_REJECT);
	ck_assert_int_eq(res.reply.code, 550);
	ck_assert_str_eq(res.reply.ecode, "5.7.1");
	ck_assert_uint_eq(w_cancels, 0);
	fx_close(&f);
	loop_close(&lf);
}
END_TEST

/*
 * test_wait_cancel - the session stops waiting (filter_cancel, or the
 * state freed): cancel() once, the stage's done never, a late answer
 * dropped.
 */
START_TEST(test_wait_cancel)
{
	struct loopfx lf;
	struct fx f;
	struct filter_result res;
	struct timeval tv = { 0, 50000 };

	loop_open(&lf, 1, 4);
	fx_open(&f, "wait:later,trace:b");
	lf.ndone = 0;
	ck_assert_int_eq(filter_run(f.st, FILTER_STAGE_RCPT, &f.ctx, "r@x", &res, lf.wl, on_done,
	    &lf), FILTER_RUN_PENDING);
	if (_i == 0)
		filter_cancel(f.st);
	else
		fx_close(&f);	/* filter_state_free cancels */
	ck_assert_uint_eq(w_cancels, 1);
	ck_assert_ptr_null(w_timer);
	event_base_loopexit(lf.base, &tv);
	event_base_loop(lf.base, 0);
	ck_assert_uint_eq(lf.ndone, 0);
	if (_i == 0) {
		/* the state is usable again */
		res = wait_stage(&f, &lf, FILTER_STAGE_RCPT, "r@x", FILTER_RUN_PENDING);
		ck_assert_int_eq(res.verdict, FILTER_REJECT);
		fx_close(&f);
	}
	loop_close(&lf);
}
END_TEST

/*
 * test_slow_timeout - a blocking call past its timeout: the default action
 * (reject) answers; the call runs to its end on its own copies and its
 * per-session state is closed then, once; the session's close sees NULL.
 */
START_TEST(test_slow_timeout)
{
	struct loopfx lf;
	struct fx f;
	struct filter_result res;
	unsigned i;

	loop_open(&lf, 1, 4);
	fx_open(&f, "slow:x,trace:b");
	res = wait_stage(&f, &lf, FILTER_STAGE_RCPT, "r@x", FILTER_RUN_PENDING);
	ck_assert_int_eq(res.verdict, FILTER_REJECT);
	ck_assert_str_eq(res.filter, "slow:x");
	ck_assert_uint_eq(w_closes, 0);
	/* the session's transaction goes while the call still reads its copy */
	free(f.txn.mail_from);
	f.txn.mail_from = xstrdup("changed@example.test");
	for (i = 0; i < 400 && w_closes == 0; i++) {
		struct timeval tv = { 0, 10000 };

		event_base_loopexit(lf.base, &tv);
		event_base_loop(lf.base, 0);
	}
	ck_assert_uint_eq(w_closes, 1);	/* the late call's state */
	fx_close(&f);
	ck_assert_uint_eq(w_closes, 2);	/* the session's, NULL */
	loop_close(&lf);
}
END_TEST

/* test_slow_shutdown - the loop goes while a blocking call runs: the call's state is still closed */
START_TEST(test_slow_shutdown)
{
	struct loopfx lf;
	struct fx f;
	struct filter_result res;

	loop_open(&lf, 1, 4);
	fx_open(&f, "slow:x");
	ck_assert_int_eq(filter_run(f.st, FILTER_STAGE_RCPT, &f.ctx, "r@x", &res, lf.wl, on_done,
	    &lf), FILTER_RUN_PENDING);
	fx_close(&f);		/* cancels: the call is on its own */
	loop_close(&lf);	/* detach, then join the pool: the call ends, is dropped, closes */
	ck_assert_uint_eq(w_closes, 2);
}
END_TEST

/*
 * test_own_pool - a filter with "threads" runs on a pool of its own: while
 * its 1.5 s call holds that pool, another session's blocking filter runs on
 * the shared pool (one thread) and is back first.  Sharing one thread, it
 * would wait behind the slow call.
 */
START_TEST(test_own_pool)
{
	struct loopfx la, lb;
	struct fx fa, fb;
	struct filter_result res;

	loop_open(&la, 1, 4);
	lb = la;
	fx_open(&fa, "slow:own");
	fx_open(&fb, "block:x");
	la.ndone = 0;
	ck_assert_int_eq(filter_run(fa.st, FILTER_STAGE_RCPT, &fa.ctx, "r@x", &res, la.wl, on_done,
	    &la), FILTER_RUN_PENDING);
	usleep(100 * 1000);	/* the slow call has started on its own thread */
	lb.ndone = 0;
	ck_assert_int_eq(filter_run(fb.st, FILTER_STAGE_RCPT, &fb.ctx, "good@x", &res, lb.wl,
	    on_done, &lb), FILTER_RUN_PENDING);
	loop_wait(&lb);
	ck_assert_uint_eq(la.ndone, 0);	/* the slow call is still running */
	ck_assert_str_eq(trace.data, "x.rcpt");
	loop_wait(&la);
	ck_assert_int_eq(la.res.verdict, FILTER_CONTINUE);
	fx_close(&fa);
	fx_close(&fb);
	loop_close(&la);
	filter_pools_free();
}
END_TEST

/* test_final - signers see the block as sent, each with the previous ones' fields on top */
START_TEST(test_final)
{
	static const char block[] = "Received: from x\r\nSubject: s\r\n\r\n";
	struct fx f;
	struct filter_result res;
	struct buf head;
	char want[256];

	fx_open(&f, "trace:a,signer:a,signer:b");
	buf_init(&head);
	buf_puts(&head, block);
	f.txn.head = &head;
	ck_assert_int_eq(run_inline(&f, FILTER_STAGE_FINAL, NULL, &res), FILTER_CONTINUE);
	ck_assert_str_eq(trace.data, "a.final b.final");	/* trace has no final: not called */
	snprintf(want, sizeof(want), "X-Sig-b: %zu\r\nX-Sig-a: %zu\r\n%s",
	    sizeof(block) - 1 + strlen("X-Sig-a: 32\r\n"), sizeof(block) - 1, block);
	ck_assert_str_eq(head.data, want);
	ck_assert_uint_eq(f.txn.prepend.len, 0);
	f.txn.head = NULL;
	buf_free(&head);
	fx_close(&f);
}
END_TEST

/* test_chain_keys - timeout and default_action are checked; a filter without configure takes nothing else */
START_TEST(test_chain_keys)
{
	static const char *const errs[] = {
		"filter \"wait:badto\": timeout \"1s\": expected seconds, 0 to 86400 (0: no limit)",
		"filter \"wait:badact\": default_action \"discard\": expected accept, reject or tempfail",
		"filter \"bare:bogus\": unknown key \"bogus\" (this filter takes only timeout, "
		    "default_action and threads)",
		"filter \"slow:badthreads\": threads \"many\": expected 0 to 1024 (0: the shared "
		    "filter pool)",
		"filter \"wait:nothreads\": threads: this filter never blocks a thread, it needs no "
		    "pool",
		"filter \"slow:overto\": timeout \"86401\": expected seconds, 0 to 86400 (0: no "
		    "limit)",
		"filter \"slow:overthreads\": threads \"1025\": expected 0 to 1024 (0: the shared "
		    "filter pool)",
	};
	static const char *const specs[] = { "wait:badto", "wait:badact", "bare:bogus",
		"slow:badthreads", "wait:nothreads", "slow:overto", "slow:overthreads" };
	struct filter_chain *chain;
	char *err = NULL;
	size_t i;

	/* the largest values are taken */
	chain = chain_must("slow:maxto");
	ck_assert_uint_eq(chain->links[0].timeout, 86400);
	ck_assert_uint_eq(chain->links[0].threads, 1024);
	filter_chain_free(chain);

	for (i = 0; i < ARRAY_SIZE(specs); i++) {
		ck_assert_ptr_null(chain_from(specs[i], &err));
		ck_assert_str_eq(err, errs[i]);
		free(err);
		err = NULL;
	}
}
END_TEST

/* filter_suite - every test above */
static Suite *
filter_suite(void)
{
	Suite *s = suite_create("filter");
	TCase *tc;

	tc = tcase_create("chain");
	tcase_add_checked_fixture(tc, setup, teardown);
	tcase_add_test(tc, test_registry);
	tcase_add_loop_test(tc, test_chain_new, 0, ARRAY_SIZE(chain_cases));
	tcase_add_test(tc, test_chain_sections);
	suite_add_tcase(s, tc);

	tc = tcase_create("run");
	tcase_add_checked_fixture(tc, setup, teardown);
	tcase_add_loop_test(tc, test_verdicts, 0, ARRAY_SIZE(verdict_cases));
	tcase_add_loop_test(tc, test_stage_verdicts, 0, ARRAY_SIZE(stage_cases));
	tcase_add_test(tc, test_state_free_closes);
	tcase_add_test(tc, test_data_stage);
	tcase_add_loop_test(tc, test_data_chunks, 0, 2);
	suite_add_tcase(s, tc);

	tc = tcase_create("pool");
	tcase_add_checked_fixture(tc, setup, teardown);
	tcase_set_timeout(tc, 60);
	tcase_add_loop_test(tc, test_blocking, 0, ARRAY_SIZE(block_cases));
	tcase_add_test(tc, test_blocking_thread);
	tcase_add_test(tc, test_blocking_facts);
	tcase_add_test(tc, test_pool_full_at_start);
	tcase_add_test(tc, test_pool_full_mid_chain);
	suite_add_tcase(s, tc);

	tc = tcase_create("waits");
	tcase_add_checked_fixture(tc, wait_setup, teardown);
	tcase_set_timeout(tc, 30);
	tcase_add_test(tc, test_wait_later);
	tcase_add_test(tc, test_wait_now);
	tcase_add_test(tc, test_wait_timeout);
	tcase_add_test(tc, test_wait_timeout_accept);
	tcase_add_test(tc, test_wait_fail);
	tcase_add_loop_test(tc, test_wait_cancel, 0, 2);
	tcase_add_test(tc, test_slow_timeout);
	tcase_add_test(tc, test_slow_shutdown);
	tcase_add_test(tc, test_own_pool);
	tcase_add_test(tc, test_final);
	tcase_add_test(tc, test_chain_keys);
	suite_add_tcase(s, tc);

	tc = tcase_create("headers");
	tcase_add_checked_fixture(tc, setup, teardown);
	tcase_add_loop_test(tc, test_hparse, 0, ARRAY_SIZE(hparse_cases));
	tcase_add_loop_test(tc, test_hparse_limit, 0, 2);
	tcase_add_test(tc, test_hparse_many_fields);
	tcase_add_loop_test(tc, test_compose, 0, ARRAY_SIZE(compose_cases));
	tcase_add_test(tc, test_eom_edits);
	tcase_add_test(tc, test_edits_seen_by_next);
	tcase_add_test(tc, test_txn_reset);
	suite_add_tcase(s, tc);
	return s;
}

/* main - the suite, with libevent made thread-safe first */
int
main(void)
{
	int rc;

	if (evthread_use_pthreads() != 0)
		return 1;
	rc = unit_run(filter_suite());
	libevent_global_shutdown();
	return rc;
}
