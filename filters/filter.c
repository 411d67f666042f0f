/*
 * filter.c - the filter chain: registry, chain construction from the config,
 * running one stage through the chain (inline or on the worker pool), the
 * transaction's edits and authentication results, header parsing and the
 * composition of the header block that is finally sent.
 *
 * Never touches a socket or a session; never calls a filter from a thread
 * other than the session's loop unless the filter declared may_block, and
 * then never two filters of one session at the same time.  A broken filter
 * never turns a reject into an accept: replies that do not match their
 * verdict are corrected, unknown verdicts become tempfails.
 *
 * Ownership: a chain owns its filter instances and names; a filter_state
 * owns its arrays of per-filter pointers and skip marks and the session's
 * quarantine reason (each filter frees its own priv in close).  filter_result.filter points into the chain.  The transaction
 * owns copies of everything the edit helpers were given, but never its body
 * spool (the session's).
 */
#include "config.h"

#include <assert.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "util.h"
#include "buf.h"
#include "log.h"
#include "spool.h"
#include "workers.h"
#include "filter.h"

#define FILTER_MAX_REGISTERED	64
#define FILTER_BODY_CHUNK	(64 * 1024)
#define FILTER_FOLD_WIDTH	78	/* RFC 5322 2.1.1 recommended line length */
#define FILTER_AR_NAME		"Authentication-Results"
#define FILTER_QUARANTINE_NAME	"X-Portier-Quarantine"

static const struct filter_ops *filter_registry[FILTER_MAX_REGISTERED];
static size_t filter_nregistered;

struct filter_link {
	const struct filter_ops *ops;
	void *inst;
	char *name;		/* as written in "filters =" */
};

struct filter_chain {
	struct filter_link *links;
	size_t n;
	char *names;		/* "a,b,c" */
};

/* The stage in progress; lives in the state while a pool hop is pending. */
struct filter_run_ctx {
	enum filter_stage stage;
	const struct filter_session *sess;
	struct filter_txn *txn;
	const char *arg;
	struct workers_loop *wl;
	filter_done_fn done;
	void *done_arg;
	size_t next;		/* next filter to consider */
	size_t blocked;		/* the filter handed to the pool */
	enum filter_verdict verdict;	/* its verdict, set on the pool thread */
	struct filter_reply reply;
	const char *quarantined;	/* who quarantined at this stage, NULL if nobody */
	struct filter_reply qreply;	/* its reply */
};

/* How long a filter that answered ACCEPT sits out. */
enum filter_skip {
	FILTER_SKIP_NONE,
	FILTER_SKIP_TXN,	/* until the transaction ends */
	FILTER_SKIP_SESSION,	/* until the session ends */
};

struct filter_state {
	const struct filter_chain *chain;
	void **priv;		/* one per filter */
	unsigned char *skip;	/* one per filter: enum filter_skip, set by its ACCEPT */
	const char *discarded;	/* DISCARD outside a transaction: who; every one is discarded */
	char *quarantined;	/* QUARANTINE outside a transaction: the reason for every one */
	const char *txn_discarded;	/* who discarded the transaction in progress */
	bool busy;		/* a stage waits for the pool */
	bool closed;		/* CLOSE ran */
	struct filter_run_ctx run;
};

static const char *const filter_verdict_names[] = {
	[FILTER_CONTINUE] = "continue",
	[FILTER_ACCEPT] = "accept",
	[FILTER_REJECT] = "reject",
	[FILTER_TEMPFAIL] = "tempfail",
	[FILTER_DISCARD] = "discard",
	[FILTER_QUARANTINE] = "quarantine",
};

static const char *const filter_stage_names[] = {
	[FILTER_STAGE_CONNECT] = "connect",
	[FILTER_STAGE_HELO] = "helo",
	[FILTER_STAGE_AUTH] = "auth",
	[FILTER_STAGE_MAIL] = "mail",
	[FILTER_STAGE_RCPT] = "rcpt",
	[FILTER_STAGE_DATA] = "data",
	[FILTER_STAGE_ABORT] = "abort",
	[FILTER_STAGE_CLOSE] = "close",
};

/* ---- registry ---- */

/* filter_register - make ops known by name; the same ops twice is harmless */
void
filter_register(const struct filter_ops *ops)
{
	const struct filter_ops *old;

	assert(ops != NULL && ops->name != NULL);
	if ((old = filter_lookup(ops->name)) != NULL) {
		if (old != ops)
			fatal("filter_register: two filters named \"%s\"", ops->name);
		return;
	}
	if (filter_nregistered == ARRAY_SIZE(filter_registry))
		fatal("filter_register: too many filters");
	filter_registry[filter_nregistered++] = ops;
}

/* filter_lookup - the registered ops called name, or NULL */
const struct filter_ops *
filter_lookup(const char *name)
{
	size_t i;

	for (i = 0; i < filter_nregistered; i++)
		if (strcmp(filter_registry[i]->name, name) == 0)
			return filter_registry[i];
	return NULL;
}

/* filter_verdict_name - "reject" etc. for logs */
const char *
filter_verdict_name(enum filter_verdict v)
{
	if ((size_t)v < ARRAY_SIZE(filter_verdict_names))
		return filter_verdict_names[v];
	return "invalid";
}

/* filter_stage_name - "rcpt" etc. for logs */
static const char *
filter_stage_name(enum filter_stage s)
{
	if ((size_t)s < ARRAY_SIZE(filter_stage_names))
		return filter_stage_names[s];
	return "invalid";
}

/* ---- chains ---- */

/* filter_link_init - resolve one "filters =" word and configure it */
static bool
filter_link_init(struct filter_link *fl, const struct conf *conf, const char *spec, char **err_r)
{
	const struct conf_section *sec = NULL;
	const char *colon, *inst;
	char *type, *err = NULL;

	if ((colon = strchr(spec, ':')) != NULL) {
		type = xstrndup(spec, (size_t)(colon - spec));
		inst = colon + 1;
		if (*type == '\0' || *inst == '\0') {
			*err_r = xasprintf("filter \"%s\": expected TYPE:NAME", spec);
			free(type);
			return false;
		}
	} else {
		type = xstrdup(spec);
		inst = NULL;
	}
	if ((fl->ops = filter_lookup(type)) == NULL) {
		*err_r = xasprintf("unknown filter \"%s\"", type);
		free(type);
		return false;
	}
	if (inst != NULL) {
		if (conf == NULL || (sec = conf_section_find(conf, type, inst)) == NULL) {
			*err_r = xasprintf("filter \"%s\": no section [%s %s]", spec, type, inst);
			free(type);
			return false;
		}
	} else if (conf != NULL)
		sec = conf_section_find(conf, "filter", type);
	free(type);

	fl->name = xstrdup(spec);
	if (fl->ops->configure != NULL) {
		fl->inst = fl->ops->configure(conf, sec, &err);
		if (fl->inst == NULL && err != NULL) {
			*err_r = xasprintf("filter \"%s\": %s", spec, err);
			free(err);
			free(fl->name);
			fl->name = NULL;
			return false;
		}
		free(err);	/* a stray message with an instance: ignored */
	}
	return true;
}

/* filter_chain_new - instantiate a listener's filters in order */
struct filter_chain *
filter_chain_new(const struct conf *conf, char **names, size_t n, char **err_r)
{
	struct filter_chain *chain;
	struct buf b;
	size_t i;

	*err_r = NULL;
	chain = xcalloc(1, sizeof(*chain));
	chain->links = xcalloc(n ? n : 1, sizeof(*chain->links));
	for (i = 0; i < n; i++) {
		if (!filter_link_init(&chain->links[i], conf, names[i], err_r)) {
			filter_chain_free(chain);
			return NULL;
		}
		chain->n = i + 1;
	}
	buf_init(&b);
	buf_puts(&b, "");
	for (i = 0; i < n; i++) {
		if (i > 0)
			buf_putc(&b, ',');
		buf_puts(&b, chain->links[i].name);
	}
	chain->names = b.data;
	return chain;
}

/* filter_chain_free - destroy the instances, last configured first */
void
filter_chain_free(struct filter_chain *chain)
{
	size_t i;

	if (chain == NULL)
		return;
	for (i = chain->n; i-- > 0;) {
		struct filter_link *fl = &chain->links[i];

		if (fl->ops->destroy != NULL && fl->inst != NULL)
			fl->ops->destroy(fl->inst);
		free(fl->name);
	}
	free(chain->links);
	free(chain->names);
	free(chain);
}

/* filter_chain_empty - true when there is nothing to run */
bool
filter_chain_empty(const struct filter_chain *chain)
{
	return chain == NULL || chain->n == 0;
}

/* filter_chain_names - "a,b,c" for the summary line */
const char *
filter_chain_names(const struct filter_chain *chain)
{
	return chain != NULL ? chain->names : "";
}

/* ---- per-session state ---- */

/* filter_state_new - per-session pointers, all NULL */
struct filter_state *
filter_state_new(const struct filter_chain *chain)
{
	struct filter_state *st;

	assert(chain != NULL);
	st = xcalloc(1, sizeof(*st));
	st->chain = chain;
	st->priv = xcalloc(chain->n ? chain->n : 1, sizeof(*st->priv));
	st->skip = xcalloc(chain->n ? chain->n : 1, sizeof(*st->skip));
	return st;
}

/* filter_cleanup - abort or close on every filter, whatever came before */
static void
filter_cleanup(struct filter_state *st, enum filter_stage stage, const struct filter_ctx *ctx)
{
	const struct filter_chain *chain = st->chain;
	struct filter_ctx c;
	size_t i;

	for (i = 0; i < chain->n; i++) {
		const struct filter_link *fl = &chain->links[i];

		c.priv = &st->priv[i];
		c.sess = ctx != NULL ? ctx->sess : NULL;
		c.txn = ctx != NULL ? ctx->txn : NULL;
		if (stage == FILTER_STAGE_ABORT && fl->ops->abort != NULL)
			fl->ops->abort(fl->inst, &c);
		else if (stage == FILTER_STAGE_CLOSE && fl->ops->close != NULL)
			fl->ops->close(fl->inst, &c);
	}
	if (stage == FILTER_STAGE_CLOSE)
		st->closed = true;
}

/* filter_state_free - run close unless CLOSE already ran, then free */
void
filter_state_free(struct filter_state *st, struct filter_ctx *ctx)
{
	if (st == NULL)
		return;
	if (st->busy)
		fatal("filter_state_free: a stage is still running");
	if (!st->closed)
		filter_cleanup(st, FILTER_STAGE_CLOSE, ctx);
	free(st->priv);
	free(st->skip);
	free(st->quarantined);
	free(st);
}

/* ---- replies ---- */

/* filter_result_init - "all passed" */
static void
filter_result_init(struct filter_result *res)
{
	memset(res, 0, sizeof(*res));
	res->verdict = FILTER_CONTINUE;
}

/* filter_reply_set - fill a reply (text truncated to fit) */
static void
filter_reply_set(struct filter_reply *r, int code, const char *ecode, const char *text)
{
	r->code = code;
	str_copy(r->ecode, ecode, sizeof(r->ecode));
	str_copy(r->text, text, sizeof(r->text));
}

/* filter_ecode_ok - "C.S.D" (RFC 3463) with class digit c */
static bool
filter_ecode_ok(const char *e, char c)
{
	size_t i, digits;

	if (e[0] != c || e[1] != '.')
		return false;
	for (i = 2, digits = 0; e[i] != '.'; i++, digits++)
		if (e[i] < '0' || e[i] > '9' || digits == 3)
			return false;
	if (digits == 0)
		return false;
	for (i++, digits = 0; e[i] != '\0'; i++, digits++)
		if (e[i] < '0' || e[i] > '9' || digits == 3)
			return false;
	return digits > 0;
}

/* filter_text_clean - no CR, LF or other controls may reach a reply line */
static void
filter_text_clean(char *s, size_t size)
{
	s[size - 1] = '\0';
	for (; *s != '\0'; s++)
		if ((unsigned char)*s < 0x20 || *s == 0x7f)
			*s = ' ';
}

/*
 * filter_reply_fix - make a filter's reply fit its verdict.  A reply of the
 * wrong class is replaced whole (its text may say "Ok"); an unknown verdict
 * becomes a tempfail.
 */
static void
filter_reply_fix(const struct filter_run_ctx *run, const char *who, enum filter_verdict *v,
    struct filter_reply *r)
{
	unsigned long long id = run->sess != NULL ? SESSION_ID(run->sess->id) : 0;
	const char *defecode, *deftext;
	int defcode, cls;

	filter_text_clean(r->ecode, sizeof(r->ecode));
	filter_text_clean(r->text, sizeof(r->text));
	switch (*v) {
	case FILTER_CONTINUE:
	case FILTER_ACCEPT:
		return;
	case FILTER_DISCARD:
	case FILTER_QUARANTINE:
		/* Accepted toward the client: only a 2xx makes sense. */
		if (r->code != 0 && r->code / 100 != 2) {
			log_warn("id=" SESSION_ID_FMT " event=filter_bad_reply filter=%s stage=%s verdict=%s code=%d",
			    id, who, filter_stage_name(run->stage), filter_verdict_name(*v), r->code);
			memset(r, 0, sizeof(*r));
		}
		if (r->ecode[0] != '\0' && !filter_ecode_ok(r->ecode, '2'))
			r->ecode[0] = '\0';
		return;
	case FILTER_REJECT:
		defcode = 550, defecode = "5.7.1", deftext = "Message refused by policy";
		break;
	case FILTER_TEMPFAIL:
		defcode = 451, defecode = "4.7.1", deftext = "Temporary failure, try again later";
		break;
	default:
		log_warn("id=" SESSION_ID_FMT " event=filter_bad_verdict filter=%s stage=%s verdict=%d",
		    id, who, filter_stage_name(run->stage), (int)*v);
		*v = FILTER_TEMPFAIL;
		filter_reply_set(r, 451, "4.3.0", "Temporary filter error");
		return;
	}
	cls = defcode / 100;
	if (r->code != 0 && (r->code < cls * 100 || r->code > cls * 100 + 99)) {
		log_warn("id=" SESSION_ID_FMT " event=filter_bad_reply filter=%s stage=%s verdict=%s code=%d",
		    id, who, filter_stage_name(run->stage), filter_verdict_name(*v), r->code);
		filter_reply_set(r, defcode, defecode, deftext);
		return;
	}
	if (r->code == 0)
		r->code = defcode;
	if (!filter_ecode_ok(r->ecode, (char)('0' + cls)))
		str_copy(r->ecode, defecode, sizeof(r->ecode));
	if (r->text[0] == '\0')
		str_copy(r->text, deftext, sizeof(r->text));
}

/* filter_pool_busy - the result when the pool refused work */
static void
filter_pool_busy(struct filter_result *res, const char *who)
{
	filter_result_init(res);
	res->verdict = FILTER_TEMPFAIL;
	res->filter = who;
	filter_reply_set(&res->reply, 451, "4.3.0", "filter pool busy");
}

/* ---- running a stage ---- */

/* filter_has_stage - does this filter do anything at stage */
static bool
filter_has_stage(const struct filter_ops *ops, enum filter_stage stage)
{
	switch (stage) {
	case FILTER_STAGE_CONNECT:
		return ops->connect != NULL;
	case FILTER_STAGE_HELO:
		return ops->helo != NULL;
	case FILTER_STAGE_AUTH:
		return ops->auth != NULL;
	case FILTER_STAGE_MAIL:
		return ops->mail != NULL;
	case FILTER_STAGE_RCPT:
		return ops->rcpt != NULL;
	case FILTER_STAGE_DATA:
		return ops->header != NULL || ops->eoh != NULL || ops->body != NULL ||
		    ops->eom != NULL;
	case FILTER_STAGE_ABORT:
		return ops->abort != NULL;
	case FILTER_STAGE_CLOSE:
		return ops->close != NULL;
	}
	return false;
}

/* filter_call_body - body() over the spool past the header block, in chunks */
static enum filter_verdict
filter_call_body(const struct filter_link *fl, struct filter_ctx *c, struct filter_reply *r)
{
	struct spool *sp = c->txn->body;
	size_t size = spool_size(sp), off, n;
	const char *mem = spool_mem(sp), *p;
	enum filter_verdict v = FILTER_CONTINUE;
	char *chunk = NULL;
	ssize_t got;

	for (off = c->txn->body_offset; off < size && v == FILTER_CONTINUE; off += n) {
		n = size - off < FILTER_BODY_CHUNK ? size - off : FILTER_BODY_CHUNK;
		if (mem != NULL) {
			p = mem + off;
		} else {
			if (chunk == NULL)
				chunk = xmalloc(FILTER_BODY_CHUNK);
			if ((got = spool_pread(sp, chunk, n, off)) <= 0) {
				filter_reply_set(r, 451, "4.3.0", "Error reading message");
				v = FILTER_TEMPFAIL;
				break;
			}
			n = (size_t)got;
			p = chunk;
		}
		v = fl->ops->body(fl->inst, c, p, n, r);
	}
	free(chunk);
	return v;
}

/* filter_call_data - one filter's header*, eoh, body*, eom */
static enum filter_verdict
filter_call_data(const struct filter_link *fl, struct filter_ctx *c, struct filter_reply *r)
{
	const struct filter_ops *ops = fl->ops;
	struct filter_txn *txn = c->txn;
	enum filter_verdict v;
	size_t i;

	if (ops->header != NULL && txn != NULL) {
		for (i = 0; i < txn->nheaders; i++) {
			v = ops->header(fl->inst, c, txn->headers[i].name, txn->headers[i].value, r);
			if (v != FILTER_CONTINUE)
				return v;
		}
	}
	if (ops->eoh != NULL && (v = ops->eoh(fl->inst, c, r)) != FILTER_CONTINUE)
		return v;
	if (ops->body != NULL && txn != NULL && txn->body != NULL &&
	    (v = filter_call_body(fl, c, r)) != FILTER_CONTINUE)
		return v;
	if (ops->eom != NULL)
		return ops->eom(fl->inst, c, r);
	return FILTER_CONTINUE;
}

/* filter_invoke - call filter i for the stage in progress (any thread) */
static enum filter_verdict
filter_invoke(struct filter_state *st, size_t i, struct filter_reply *r)
{
	const struct filter_link *fl = &st->chain->links[i];
	const struct filter_run_ctx *run = &st->run;
	struct filter_ctx c = { &st->priv[i], run->sess, run->txn };

	memset(r, 0, sizeof(*r));
	switch (run->stage) {
	case FILTER_STAGE_CONNECT:
		return fl->ops->connect(fl->inst, &c, r);
	case FILTER_STAGE_HELO:
		return fl->ops->helo(fl->inst, &c, run->arg, r);
	case FILTER_STAGE_AUTH:
		return fl->ops->auth(fl->inst, &c, run->arg, r);
	case FILTER_STAGE_MAIL:
		return fl->ops->mail(fl->inst, &c, run->arg, r);
	case FILTER_STAGE_RCPT:
		return fl->ops->rcpt(fl->inst, &c, run->arg, r);
	case FILTER_STAGE_DATA:
		return filter_call_data(fl, &c, r);
	case FILTER_STAGE_ABORT:
	case FILTER_STAGE_CLOSE:
		break;
	}
	fatal("filter_invoke: stage %d", (int)run->stage);
}

/* filter_session_stage - a stage outside any transaction: its verdicts hold for the session */
static bool
filter_session_stage(enum filter_stage stage)
{
	return stage == FILTER_STAGE_CONNECT || stage == FILTER_STAGE_HELO ||
	    stage == FILTER_STAGE_AUTH;
}

/*
 * filter_decide - act on filter i's verdict; true when the chain stops
 * (res filled).  ACCEPT and QUARANTINE do not stop it: ACCEPT takes filter i
 * out of the transaction (or the session), QUARANTINE marks the transaction
 * (or every transaction of the session) and the next filter runs.
 */
static bool
filter_decide(struct filter_state *st, size_t i, enum filter_verdict v, struct filter_reply *r,
    struct filter_result *res)
{
	const struct filter_link *fl = &st->chain->links[i];
	struct filter_run_ctx *run = &st->run;
	bool sess = filter_session_stage(run->stage);
	char *why;

	filter_reply_fix(run, fl->name, &v, r);
	if (v == FILTER_CONTINUE)
		return false;
	log_debug("id=" SESSION_ID_FMT " event=filter filter=%s stage=%s verdict=%s code=%d",
	    run->sess != NULL ? SESSION_ID(run->sess->id) : 0, fl->name,
	    filter_stage_name(run->stage), filter_verdict_name(v), r->code);
	switch (v) {
	case FILTER_ACCEPT:
		st->skip[i] = sess ? FILTER_SKIP_SESSION : FILTER_SKIP_TXN;
		return false;
	case FILTER_QUARANTINE:
		why = r->text[0] != '\0' ? xstrdup(r->text) : xasprintf("filter %s", fl->name);
		if (sess && st->quarantined == NULL)
			st->quarantined = why;
		else if (!sess && run->txn != NULL && run->txn->quarantine == NULL)
			run->txn->quarantine = why;
		else
			free(why);
		if (run->quarantined == NULL) {
			run->quarantined = fl->name;
			run->qreply = *r;
		}
		return false;
	case FILTER_DISCARD:
		if (sess)
			st->discarded = fl->name;
		else {
			st->txn_discarded = fl->name;
			if (run->txn != NULL)
				run->txn->discard = true;
		}
		break;
	default:
		break;
	}
	filter_result_init(res);
	res->filter = fl->name;
	res->verdict = v;
	res->reply = *r;
	return true;
}

/*
 * filter_step - run inline filters from run->next on; false when the next
 * one with work to do must go to the pool (run->blocked), true when the
 * stage is decided (res filled).
 */
static bool
filter_step(struct filter_state *st, struct filter_result *res)
{
	struct filter_run_ctx *run = &st->run;
	const struct filter_chain *chain = st->chain;
	struct filter_reply r;
	enum filter_verdict v;
	size_t i;

	while (run->next < chain->n) {
		i = run->next++;
		if (st->skip[i] != FILTER_SKIP_NONE ||
		    !filter_has_stage(chain->links[i].ops, run->stage))
			continue;
		if (chain->links[i].ops->may_block && run->wl != NULL) {
			run->blocked = i;
			return false;
		}
		v = filter_invoke(st, i, &r);
		if (filter_decide(st, i, v, &r, res))
			return true;
	}
	filter_result_init(res);
	if (run->quarantined != NULL) {
		res->verdict = FILTER_QUARANTINE;
		res->filter = run->quarantined;
		res->reply = run->qreply;
	}
	return true;
}

/* filter_work - on a pool thread: the blocking filter's callbacks */
static void
filter_work(void *arg)
{
	struct filter_state *st = arg;

	st->run.verdict = filter_invoke(st, st->run.blocked, &st->run.reply);
}

static void filter_work_done(void *arg);

/* filter_submit - hand run->blocked to the pool */
static bool
filter_submit(struct filter_state *st)
{
	return workers_submit(st->run.wl, filter_work, filter_work_done, st);
}

/* filter_work_done - on the loop: go on with the chain, or finish the stage */
static void
filter_work_done(void *arg)
{
	struct filter_state *st = arg;
	struct filter_run_ctx *run = &st->run;
	struct filter_result res;
	filter_done_fn done;
	void *done_arg;
	uint64_t id;

	if (!filter_decide(st, run->blocked, run->verdict, &run->reply, &res) &&
	    !filter_step(st, &res)) {
		if (filter_submit(st))
			return;
		filter_pool_busy(&res, st->chain->links[run->blocked].name);
	}
	/* done may free st or start the next stage: nothing of st after it. */
	st->busy = false;
	id = run->sess != NULL ? run->sess->id : 0;
	done = run->done;
	done_arg = run->done_arg;
	done(id, done_arg, &res);
}

/* filter_txn_end - no transaction any more: ACCEPT and DISCARD of the last one are over */
static void
filter_txn_end(struct filter_state *st)
{
	size_t i;

	for (i = 0; i < st->chain->n; i++)
		if (st->skip[i] == FILTER_SKIP_TXN)
			st->skip[i] = FILTER_SKIP_NONE;
	st->txn_discarded = NULL;
}

/*
 * filter_txn_begin - a transaction starts (MAIL): the filters that accepted
 * the last one come back, and what was decided for the whole session marks
 * this one.
 */
static void
filter_txn_begin(struct filter_state *st, struct filter_txn *txn)
{
	filter_txn_end(st);
	if (txn == NULL)
		return;
	if (st->discarded != NULL) {
		txn->discard = true;
		st->txn_discarded = st->discarded;
	}
	if (st->quarantined != NULL && txn->quarantine == NULL)
		txn->quarantine = xstrdup(st->quarantined);
}

/*
 * filter_run - run one stage (see filter.h).  Result verdicts: CONTINUE when
 * every filter passed or accepted; QUARANTINE when one quarantined and none
 * decided after it; else the first REJECT/TEMPFAIL/DISCARD with its
 * corrected reply.  What was discarded runs no filter: DISCARD at once.
 * With wl NULL, blocking filters run inline (tools and tests without a
 * loop).  ABORT and CLOSE run abort/close on every filter, inline, and pass.
 */
enum filter_run_status
filter_run(struct filter_state *st, enum filter_stage stage, struct filter_ctx *ctx,
    const char *arg, struct filter_result *res, struct workers_loop *wl,
    filter_done_fn done, void *done_arg)
{
	struct filter_run_ctx *run = &st->run;

	if (st->busy)
		fatal("filter_run: stage %s while another is pending", filter_stage_name(stage));
	filter_result_init(res);
	if (stage == FILTER_STAGE_ABORT || stage == FILTER_STAGE_CLOSE) {
		filter_cleanup(st, stage, ctx);
		filter_txn_end(st);
		return FILTER_RUN_DONE;
	}
	if (stage == FILTER_STAGE_MAIL)
		filter_txn_begin(st, ctx->txn);
	else if (filter_session_stage(stage))
		filter_txn_end(st);
	if (st->discarded != NULL || (!filter_session_stage(stage) && st->txn_discarded != NULL)) {
		res->verdict = FILTER_DISCARD;
		res->filter = st->discarded != NULL ? st->discarded : st->txn_discarded;
		return FILTER_RUN_DONE;
	}

	memset(run, 0, sizeof(*run));
	run->stage = stage;
	run->sess = ctx->sess;
	run->txn = ctx->txn;
	run->arg = arg;
	run->wl = wl;
	run->done = done;
	run->done_arg = done_arg;
	if (filter_step(st, res))
		return FILTER_RUN_DONE;
	assert(done != NULL);
	if (!filter_submit(st)) {
		filter_pool_busy(res, st->chain->links[run->blocked].name);
		return FILTER_RUN_DONE;
	}
	st->busy = true;
	return FILTER_RUN_PENDING;
}

/* ---- transactions ---- */

/* filter_txn_init - an empty transaction */
void
filter_txn_init(struct filter_txn *txn)
{
	memset(txn, 0, sizeof(*txn));
	buf_init(&txn->auth_results);
}

/* filter_headers_clear - free the parsed headers */
static void
filter_headers_clear(struct filter_txn *txn)
{
	size_t i;

	for (i = 0; i < txn->nheaders; i++) {
		free(txn->headers[i].name);
		free(txn->headers[i].value);
	}
	free(txn->headers);
	txn->headers = NULL;
	txn->nheaders = 0;
}

/* filter_txn_reset - free everything but the body spool (the session's) */
void
filter_txn_reset(struct filter_txn *txn)
{
	size_t i;

	free(txn->queue_id);
	free(txn->mail_from);
	free(txn->mail_params);
	for (i = 0; i < txn->nrcpts; i++) {
		free(txn->rcpts[i]);
		if (txn->rcpt_params != NULL)
			free(txn->rcpt_params[i]);
	}
	free(txn->rcpts);
	free(txn->rcpt_params);
	filter_headers_clear(txn);
	for (i = 0; i < txn->nedits; i++) {
		free(txn->edits[i].name);
		free(txn->edits[i].value);
		free(txn->edits[i].params);
	}
	free(txn->edits);
	buf_free(&txn->auth_results);
	free(txn->quarantine);
	filter_txn_init(txn);
}

/* filter_edit_new - append an edit of kind, copying name and value */
static struct filter_edit *
filter_edit_new(struct filter_txn *txn, enum filter_edit_kind kind, const char *name,
    const char *value, size_t value_len)
{
	struct filter_edit *e;

	txn->edits = xreallocarray(txn->edits, txn->nedits + 1, sizeof(*txn->edits));
	e = &txn->edits[txn->nedits++];
	memset(e, 0, sizeof(*e));
	e->kind = kind;
	e->name = name != NULL ? xstrdup(name) : NULL;
	if (value != NULL) {
		e->value = xmalloc(value_len + 1);
		memcpy(e->value, value, value_len);
		e->value[value_len] = '\0';
		e->value_len = value_len;
	}
	return e;
}

/* filter_add_header - append a header at the end of the header */
void
filter_add_header(struct filter_txn *txn, const char *name, const char *value)
{
	filter_edit_new(txn, EDIT_ADD_HEADER, name, value, strlen(value));
}

/* filter_insert_header - insert a header at index (0 = top) */
void
filter_insert_header(struct filter_txn *txn, unsigned index, const char *name, const char *value)
{
	filter_edit_new(txn, EDIT_INSERT_HEADER, name, value, strlen(value))->index = index;
}

/* filter_change_header - change the index-th (1-based) name; NULL value deletes */
void
filter_change_header(struct filter_txn *txn, const char *name, unsigned index, const char *value)
{
	filter_edit_new(txn, EDIT_CHANGE_HEADER, name, value,
	    value != NULL ? strlen(value) : 0)->index = index;
}

/* filter_delete_header - delete the index-th (1-based) name */
void
filter_delete_header(struct filter_txn *txn, const char *name, unsigned index)
{
	filter_edit_new(txn, EDIT_DELETE_HEADER, name, NULL, 0)->index = index;
}

/* filter_replace_body - the new body (CRLF line ends), copied */
void
filter_replace_body(struct filter_txn *txn, const char *body, size_t len)
{
	filter_edit_new(txn, EDIT_REPLACE_BODY, NULL, body, len);
}

/* filter_change_from - a new envelope sender with its MAIL parameters (NULL: none) */
void
filter_change_from(struct filter_txn *txn, const char *from, const char *params)
{
	struct filter_edit *e = filter_edit_new(txn, EDIT_CHANGE_FROM, NULL, from, strlen(from));

	e->params = xstrdup(params != NULL ? params : "");
}

/* filter_add_rcpt - one more envelope recipient with its RCPT parameters (NULL: none) */
void
filter_add_rcpt(struct filter_txn *txn, const char *rcpt, const char *params)
{
	struct filter_edit *e = filter_edit_new(txn, EDIT_ADD_RCPT, NULL, rcpt, strlen(rcpt));

	e->params = xstrdup(params != NULL ? params : "");
}

/* filter_delete_rcpt - drop an envelope recipient */
void
filter_delete_rcpt(struct filter_txn *txn, const char *rcpt)
{
	filter_edit_new(txn, EDIT_DELETE_RCPT, NULL, rcpt, strlen(rcpt));
}

/* filter_auth_result - append "; " + one resinfo (controls become spaces) */
void
filter_auth_result(struct filter_txn *txn, const char *fmt, ...)
{
	struct buf *b = &txn->auth_results;
	va_list ap;
	size_t start;
	int n;

	va_start(ap, fmt);
	n = vsnprintf(NULL, 0, fmt, ap);
	va_end(ap);
	if (n < 0)
		fatal("filter_auth_result: bad format");
	buf_puts(b, "; ");
	start = b->len;
	buf_reserve(b, (size_t)n);
	va_start(ap, fmt);
	vsnprintf(b->data + start, (size_t)n + 1, fmt, ap);
	va_end(ap);
	b->len += (size_t)n;
	for (; start < b->len; start++)
		if ((unsigned char)b->data[start] < 0x20 || b->data[start] == 0x7f)
			b->data[start] = ' ';
}

/* ---- header block ---- */

/*
 * filter_header_name_len - the field name's length if the line p[0..n) opens
 * a field ("name:" or the obsolete "name WSP* :"), else 0; *colon_r is the
 * offset of the ':'
 */
static size_t
filter_header_name_len(const char *p, size_t n, size_t *colon_r)
{
	size_t i, nlen;

	for (i = 0; i < n && (unsigned char)p[i] > ' ' && (unsigned char)p[i] <= '~' &&
	    p[i] != ':'; i++)
		;
	nlen = i;
	while (i < n && (p[i] == ' ' || p[i] == '\t'))
		i++;
	if (nlen == 0 || i == n || p[i] != ':')
		return 0;
	*colon_r = i;
	return nlen;
}

/* filter_headers_grow - room for one more header (doubling: a block may hold many) */
static void
filter_headers_grow(struct filter_txn *txn)
{
	size_t n = txn->nheaders;

	if ((n & (n - 1)) == 0)	/* 0, 1, 2, 4, ...: full (the capacity is max(n, 1)) */
		txn->headers = xreallocarray(txn->headers, n == 0 ? 1 : n * 2,
		    sizeof(*txn->headers));
}

/* filter_hparser_close - store the open field, if any, in txn */
static void
filter_hparser_close(struct filter_hparser *hp, struct filter_txn *txn, const char *msg)
{
	struct filter_header *h;

	if (hp->field == SIZE_MAX)
		return;
	filter_headers_grow(txn);
	h = &txn->headers[txn->nheaders++];
	h->name = xstrndup(msg + hp->field, hp->nlen);
	h->value = xstrndup(msg + hp->value, hp->vend - hp->value);
	hp->field = SIZE_MAX;
}

/* filter_hparser_end - the block ends: the body starts at body */
static enum filter_hparser_status
filter_hparser_end(struct filter_hparser *hp, struct filter_txn *txn, const char *msg,
    size_t body, enum filter_eoh eoh)
{
	filter_hparser_close(hp, txn, msg);
	hp->off = hp->body = body;
	hp->eoh = eoh;
	return FILTER_HPARSER_DONE;
}

/* filter_hparser_init - a new block: no field yet, txn's headers cleared */
void
filter_hparser_init(struct filter_hparser *hp, struct filter_txn *txn, size_t max)
{
	memset(hp, 0, sizeof(*hp));
	hp->max = max;
	hp->field = SIZE_MAX;
	filter_headers_clear(txn);
}

/*
 * filter_hparser_feed - parse the complete lines of msg[hp->off..len) (see
 * filter.h).  A field stays open until the next line shows it is not folded.
 * Lines end in CRLF; a bare LF is taken as a line end too (the session never
 * has one: the DATA reader normalizes or refuses them).
 */
enum filter_hparser_status
filter_hparser_feed(struct filter_hparser *hp, struct filter_txn *txn, const char *msg,
    size_t len, bool complete)
{
	const char *lf;
	size_t off, end, next, nlen, colon = 0;

	assert(len >= hp->off);
	while ((off = hp->off) < len) {
		if ((lf = memchr(msg + off, '\n', len - off)) != NULL) {
			next = (size_t)(lf - msg) + 1;
			end = next - 1;
			if (end > off && msg[end - 1] == '\r')
				end--;
			if (end == off)
				return filter_hparser_end(hp, txn, msg, next,
				    FILTER_EOH_EMPTY_LINE);
		} else if (complete)
			end = next = len;	/* a last line without its line end */
		else
			return FILTER_HPARSER_MORE;
		if (memchr(msg + off, '\0', end - off) != NULL)
			return filter_hparser_end(hp, txn, msg, off, FILTER_EOH_MALFORMED);
		if (msg[off] == ' ' || msg[off] == '\t') {
			if (hp->field == SIZE_MAX)	/* nothing to continue */
				return filter_hparser_end(hp, txn, msg, off, FILTER_EOH_MALFORMED);
		} else if ((nlen = filter_header_name_len(msg + off, end - off, &colon)) == 0) {
			return filter_hparser_end(hp, txn, msg, off, FILTER_EOH_MALFORMED);
		} else {
			filter_hparser_close(hp, txn, msg);
			hp->field = off;
			hp->nlen = nlen;
			hp->value = off + colon + 1;
		}
		hp->vend = end;
		if (next > hp->max)
			return FILTER_HPARSER_TOO_BIG;
		hp->off = next;
	}
	if (!complete)
		return FILTER_HPARSER_MORE;
	return filter_hparser_end(hp, txn, msg, len, FILTER_EOH_END);
}

/* filter_parse_headers - a whole message's block, no limit; the body's offset */
size_t
filter_parse_headers(struct filter_txn *txn, const char *msg, size_t len)
{
	struct filter_hparser hp;

	filter_hparser_init(&hp, txn, SIZE_MAX);
	if (filter_hparser_feed(&hp, txn, msg, len, true) != FILTER_HPARSER_DONE)
		fatal("filter_parse_headers: no end of the header block");
	return hp.body;
}

/* One header line of the outgoing block. */
struct filter_out {
	const char *name;
	const char *value;
	bool received;		/* came with the message (may be forged) */
	bool filtered;		/* value from a filter: needs cleaning */
};

struct filter_outs {
	struct filter_out *v;
	size_t n;
	size_t cap;
};

/* filter_outs_insert - put h at pos (clamped to the end) */
static void
filter_outs_insert(struct filter_outs *o, size_t pos, const struct filter_out *h)
{
	if (pos > o->n)
		pos = o->n;
	if (o->n == o->cap) {
		o->cap = o->cap ? o->cap * 2 : 16;
		o->v = xreallocarray(o->v, o->cap, sizeof(*o->v));
	}
	memmove(o->v + pos + 1, o->v + pos, (o->n - pos) * sizeof(*o->v));
	o->v[pos] = *h;
	o->n++;
}

/* filter_outs_remove - drop the line at pos */
static void
filter_outs_remove(struct filter_outs *o, size_t pos)
{
	memmove(o->v + pos, o->v + pos + 1, (o->n - pos - 1) * sizeof(*o->v));
	o->n--;
}

/* filter_outs_find - position of the index-th (1-based) name, or o->n */
static size_t
filter_outs_find(const struct filter_outs *o, const char *name, unsigned index)
{
	size_t i;

	if (index == 0)
		index = 1;
	for (i = 0; i < o->n; i++)
		if (str_casecmp(o->v[i].name, name) == 0 && --index == 0)
			return i;
	return o->n;
}

/* filter_name_ok - a field name a filter may add: printable, no SP, no ':' */
static bool
filter_name_ok(const char *name)
{
	const unsigned char *p = (const unsigned char *)name;

	if (p == NULL || *p == '\0')
		return false;
	for (; *p != '\0'; p++)
		if (*p <= ' ' || *p > '~' || *p == ':')
			return false;
	return true;
}

/* filter_apply_edit - one header edit, milter semantics */
static void
filter_apply_edit(struct filter_outs *o, const struct filter_edit *e)
{
	struct filter_out h = { e->name, e->value, false, true };
	size_t pos;

	switch (e->kind) {
	case EDIT_ADD_HEADER:
	case EDIT_INSERT_HEADER:
	case EDIT_CHANGE_HEADER:
	case EDIT_DELETE_HEADER:
		break;
	default:
		return;		/* envelope and body edits are the session's */
	}
	if (!filter_name_ok(e->name) ||
	    (e->value == NULL && (e->kind == EDIT_ADD_HEADER || e->kind == EDIT_INSERT_HEADER))) {
		log_warn("event=filter_bad_edit kind=%d", (int)e->kind);
		return;
	}
	switch (e->kind) {
	case EDIT_ADD_HEADER:
		filter_outs_insert(o, o->n, &h);
		break;
	case EDIT_INSERT_HEADER:
		filter_outs_insert(o, e->index, &h);
		break;
	case EDIT_CHANGE_HEADER:
	case EDIT_DELETE_HEADER:
		pos = filter_outs_find(o, e->name, e->index);
		if (e->kind == EDIT_DELETE_HEADER || e->value == NULL) {
			if (pos < o->n)
				filter_outs_remove(o, pos);
		} else if (pos < o->n) {
			o->v[pos].value = e->value;
			o->v[pos].filtered = true;
		} else
			filter_outs_insert(o, o->n, &h);	/* as sendmail does */
		break;
	default:
		break;
	}
}

/* filter_skip_cfws - past white space, line breaks and (nested) comments */
static const char *
filter_skip_cfws(const char *p)
{
	int depth;

	for (;;) {
		while (*p == ' ' || *p == '\t' || *p == '\r' || *p == '\n')
			p++;
		if (*p != '(')
			return p;
		for (depth = 0; *p != '\0'; p++) {
			if (*p == '\\' && p[1] != '\0')
				p++;
			else if (*p == '(')
				depth++;
			else if (*p == ')' && --depth == 0) {
				p++;
				break;
			}
		}
	}
}

/*
 * filter_ar_claims - does this Authentication-Results value name
 * authserv_id (token or quoted-string, case-insensitive; RFC 8601 2.2)?
 */
static bool
filter_ar_claims(const char *value, const char *authserv_id)
{
	const char *p = filter_skip_cfws(value), *start;
	char q[256];
	size_t n = 0;

	if (*p == '"') {
		for (p++; *p != '\0' && *p != '"'; p++) {
			if (*p == '\\' && p[1] != '\0')
				p++;
			if (n + 1 >= sizeof(q))
				return false;
			q[n++] = *p;
		}
		q[n] = '\0';
		return str_casecmp(q, authserv_id) == 0;
	}
	for (start = p; *p != '\0' && *p != ';' && *p != '(' && *p != ' ' && *p != '\t' &&
	    *p != '\r' && *p != '\n'; p++)
		;
	n = (size_t)(p - start);
	return n == strlen(authserv_id) && str_ncasecmp(start, authserv_id, n) == 0;
}

/*
 * filter_out_forged - a received line that only we may write: results
 * claiming authserv_id, or a quarantine mark
 */
static bool
filter_out_forged(const struct filter_out *h, const char *authserv_id)
{
	if (!h->received)
		return false;
	if (str_casecmp(h->name, FILTER_QUARANTINE_NAME) == 0)
		return true;
	return authserv_id != NULL && str_casecmp(h->name, FILTER_AR_NAME) == 0 &&
	    filter_ar_claims(h->value, authserv_id);
}

/* filter_put_value - a filter's value: a leading space, folds kept, controls out */
static void
filter_put_value(struct buf *out, const char *v)
{
	const char *p;

	if (*v != ' ' && *v != '\t')
		buf_putc(out, ' ');
	for (p = v; *p != '\0'; p++) {
		if (p[0] == '\r' && p[1] == '\n' && (p[2] == ' ' || p[2] == '\t')) {
			buf_puts(out, "\r\n");
			p++;
		} else if (p[0] == '\n' && (p[1] == ' ' || p[1] == '\t'))
			buf_puts(out, "\r\n");
		else if ((unsigned char)*p < 0x20 && *p != '\t')
			buf_putc(out, ' ');
		else
			buf_putc(out, *p);
	}
}

/* filter_put_ar - our Authentication-Results, folded between resinfos */
static void
filter_put_ar(struct buf *out, const char *authserv_id, const char *results)
{
	const char *p = results, *start, *end;
	size_t col, n;
	char quote;
	int depth;

	buf_printf(out, "%s: %s", FILTER_AR_NAME, authserv_id);
	col = strlen(FILTER_AR_NAME) + 2 + strlen(authserv_id);
	while (*p != '\0') {
		/* one resinfo: up to a ';' outside quotes and comments */
		for (start = p, quote = 0, depth = 0; *p != '\0'; p++) {
			if (*p == '\\' && p[1] != '\0' && (quote || depth))
				p++;
			else if (quote)
				quote = *p == '"' ? 0 : quote;
			else if (*p == '"')
				quote = '"';
			else if (*p == '(')
				depth++;
			else if (*p == ')' && depth > 0)
				depth--;
			else if (*p == ';' && depth == 0)
				break;
		}
		end = p;
		if (*p == ';')
			p++;
		while (start < end && (*start == ' ' || *start == '\t'))
			start++;
		while (end > start && (end[-1] == ' ' || end[-1] == '\t'))
			end--;
		if (start == end)
			continue;
		n = (size_t)(end - start);
		buf_putc(out, ';');
		if (col + 2 + n > FILTER_FOLD_WIDTH) {
			buf_puts(out, "\r\n\t");
			col = 8;
		} else {
			buf_putc(out, ' ');
			col += 2;
		}
		buf_append(out, start, n);
		col += n;
	}
	buf_puts(out, "\r\n");
}

/*
 * filter_compose_headers - the header block to send (see filter.h).  Edits
 * apply in order to the headers as received, so indexes mean what a milter
 * saw.  Then received Authentication-Results claiming authserv_id and any
 * received X-Portier-Quarantine are dropped as forged (the session writes
 * our quarantine mark itself); our Authentication-Results goes on top.
 * Headers added or changed by filters are theirs: never dropped.
 */
void
filter_compose_headers(const struct filter_txn *txn, const char *authserv_id, struct buf *out)
{
	struct filter_outs o = { NULL, 0, 0 };
	struct filter_out h;
	size_t i, kept;

	for (i = 0; i < txn->nheaders; i++) {
		h = (struct filter_out){ txn->headers[i].name, txn->headers[i].value, true, false };
		filter_outs_insert(&o, o.n, &h);
	}
	for (i = 0; i < txn->nedits; i++)
		filter_apply_edit(&o, &txn->edits[i]);
	/* One pass: a block may be thousands of forged lines. */
	for (i = kept = 0; i < o.n; i++)
		if (!filter_out_forged(&o.v[i], authserv_id))
			o.v[kept++] = o.v[i];
	o.n = kept;

	if (txn->auth_results.len > 0 && authserv_id != NULL)
		filter_put_ar(out, authserv_id, txn->auth_results.data);
	for (i = 0; i < o.n; i++) {
		buf_puts(out, o.v[i].name);
		buf_putc(out, ':');
		if (o.v[i].filtered)
			filter_put_value(out, o.v[i].value);
		else
			buf_puts(out, o.v[i].value);
		buf_puts(out, "\r\n");
	}
	free(o.v);
}
