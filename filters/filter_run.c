/*
 * filter_run.c - running one stage through a session's chain: inline
 * calls, calls that wait on the loop (filter_wait_begin/done), blocking calls
 * on the filter pool, each filter's timeout and default_action, and the
 * cancellation of what a session no longer waits for.
 *
 * One stage at a time per session, and at most one call pending in it.
 * Every wait is owned (see filter.h): a call on the loop holds a handle
 * that the chain detaches (w->st = NULL) when it stops waiting, so a late
 * completion finds nothing of the session and is dropped; a blocking call
 * works on its own copies of the session and transaction, a reference on the
 * chain and on the configuration, and the filter's per-session pointer,
 * which is handed back when the call is waited for, else closed when it
 * ends.
 *
 * A broken filter never turns a reject into an accept: replies that do not
 * match their verdict are corrected, unknown verdicts become tempfails.
 *
 * Ownership: a filter_state owns its arrays of per-filter pointers, skip
 * and failure marks, its timer, and the session's quarantine reason (each
 * filter frees its own priv in close).  filter_result.filter points into
 * the chain.
 */
#include "config.h"

#include <assert.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <event2/event.h>

#include "util.h"
#include "buf.h"
#include "conf.h"
#include "log.h"
#include "spool.h"
#include "workers.h"
#include "filter.h"
#include "filter_priv.h"

/* The stage in progress. */
struct filter_run_ctx {
	enum filter_stage stage;
	const struct filter_session *sess;
	struct filter_txn *txn;
	const char *arg;
	struct resolver *resolver;	/* the caller's ctx->resolver */
	struct workers_loop *wl;
	filter_done_fn done;
	void *done_arg;
	size_t next;		/* next filter to consider */
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
	unsigned char *failed;	/* one per filter: it timed out or failed, default_action holds */
	const char *discarded;	/* DISCARD outside a transaction: who; every one is discarded */
	char *quarantined;	/* QUARANTINE outside a transaction: the reason for every one */
	const char *txn_discarded;	/* who discarded the transaction in progress */
	bool busy;		/* a stage is pending */
	bool closed;		/* CLOSE ran */
	struct filter_wait *pending;	/* the call the stage waits for */
	struct event *timer;	/* its timeout */
	struct filter_run_ctx run;
};

/* The strings of struct filter_session, for a blocking call's copy. */
#define FILTER_SESS_STRINGS	11

/*
 * A pending call.  On the loop: the filter's handle (ctx points into the
 * session).  On the pool: a job with its own copies, which it frees.
 */
struct filter_wait {
	struct filter_state *st;	/* NULL once the chain stopped waiting */
	size_t link;
	uint64_t session_id;
	bool pooled;		/* a blocking call on the pool */
	bool in_call;		/* on the loop: the callback that began it has not returned */
	bool answered;		/* on the loop: completed inside that callback */
	bool failed;		/* answered by filter_wait_fail */
	bool own_timeout;	/* filter_wait_timeout set timeout */
	unsigned timeout;	/* then: seconds this wait may last, 0 none */
	enum filter_verdict verdict;
	struct filter_reply reply;
	struct filter_ctx ctx;	/* the call's context */
	/* A blocking call's own: */
	struct filter_chain *chain;	/* a reference: the instance outlives the session */
	struct conf *conf;	/* a reference: sess.conf */
	enum filter_stage stage;
	struct filter_session sess;
	char *strs[FILTER_SESS_STRINGS];
	struct filter_txn txn;
	struct buf head;	/* FINAL: the copy of the block txn.head points to */
	char *rcpt_params_cur;
	char *arg;
	void *priv;
	size_t nedits0;		/* edits the copy had before the call */
	size_t ar0;		/* and results */
	size_t facts0;
};

static void filter_wait_free(struct filter_wait *w);
static void filter_abandon(struct filter_state *st);

/* ---- per-session state ---- */

/* filter_state_new - per-session pointers, all NULL */
struct filter_state *
filter_state_new(const struct filter_chain *chain)
{
	struct filter_state *st;
	size_t n = chain->n ? chain->n : 1;

	assert(chain != NULL);
	/* One allocation per session: the state, then its per-filter arrays. */
	st = xcalloc(1, sizeof(*st) + n * (sizeof(*st->priv) + sizeof(*st->skip) +
	    sizeof(*st->failed)));
	st->chain = chain;
	st->priv = (void **)(st + 1);
	st->skip = (unsigned char *)(st->priv + n);
	st->failed = st->skip + n;
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

		memset(&c, 0, sizeof(c));
		c.priv = &st->priv[i];
		c.sess = ctx != NULL ? ctx->sess : NULL;
		c.txn = ctx != NULL ? ctx->txn : NULL;
		c.link = i;
		if (stage == FILTER_STAGE_ABORT && fl->ops->abort != NULL)
			fl->ops->abort(fl->inst, &c);
		else if (stage == FILTER_STAGE_CLOSE && fl->ops->close != NULL)
			fl->ops->close(fl->inst, &c);
	}
	if (stage == FILTER_STAGE_CLOSE)
		st->closed = true;
}

/* filter_cancel - the session no longer waits for the stage in progress */
void
filter_cancel(struct filter_state *st)
{
	if (st == NULL || !st->busy)
		return;
	log_debug("id=" SESSION_ID_FMT " event=filter_cancel stage=%s",
	    st->run.sess != NULL ? SESSION_ID(st->run.sess->id) : 0, filter_stage_name(st->run.stage));
	filter_abandon(st);
	st->busy = false;
}

/* filter_state_free - cancel what is pending, run close unless CLOSE already ran, then free */
void
filter_state_free(struct filter_state *st, struct filter_ctx *ctx)
{
	if (st == NULL)
		return;
	filter_cancel(st);
	if (!st->closed)
		filter_cleanup(st, FILTER_STAGE_CLOSE, ctx);
	if (st->timer != NULL)
		event_free(st->timer);
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

/*
 * filter_text_clean - no CR or other controls may reach a reply line; LF
 * stays where lines may (it separates the lines of a multi-line reply)
 */
static void
filter_text_clean(char *s, size_t size, bool lines)
{
	s[size - 1] = '\0';
	for (; *s != '\0'; s++)
		if (((unsigned char)*s < 0x20 && (*s != '\n' || !lines)) || *s == 0x7f)
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

	filter_text_clean(r->ecode, sizeof(r->ecode), false);
	filter_text_clean(r->text, sizeof(r->text), true);
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

/*
 * filter_call_body - body() in chunks: over the spool past the header
 * block, or over the body a filter before this one put in its place
 */
static enum filter_verdict
filter_call_body(const struct filter_link *fl, struct filter_ctx *c, struct filter_reply *r)
{
	const struct filter_txn *txn = c->txn;
	struct spool *sp = txn->body;
	size_t size, off, n;
	const char *mem, *p;
	enum filter_verdict v = FILTER_CONTINUE;
	char *chunk = NULL;
	ssize_t got;

	filter_body_view(txn, &mem, &off, &size);
	for (; off < size && v == FILTER_CONTINUE; off += n) {
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
		/* The block as the filters before this one left it. */
		struct filter_header *hv = txn->headers, *edited = NULL;
		size_t nh = txn->nheaders;

		if (txn->nedits > 0)
			hv = edited = filter_headers_edited(txn, &nh);
		for (i = 0, v = FILTER_CONTINUE; i < nh && v == FILTER_CONTINUE; i++)
			v = ops->header(fl->inst, c, hv[i].name, hv[i].value, r);
		free(edited);
		if (v != FILTER_CONTINUE)
			return v;
	}
	if (ops->eoh != NULL && (v = ops->eoh(fl->inst, c, r)) != FILTER_CONTINUE)
		return v;
	if (ops->body != NULL && txn != NULL && (txn->body != NULL || txn->nedits > 0) &&
	    (v = filter_call_body(fl, c, r)) != FILTER_CONTINUE)
		return v;
	if (ops->eom != NULL)
		return ops->eom(fl->inst, c, r);
	return FILTER_CONTINUE;
}

/*
 * filter_fail_reply - default_action in place of a verdict that never came
 * (Postfix's milter replies).
 */
static void
filter_fail_reply(const struct filter_link *fl, enum filter_verdict *v, struct filter_reply *r)
{
	memset(r, 0, sizeof(*r));
	*v = fl->on_fail;
	if (*v == FILTER_REJECT)
		filter_reply_set(r, 550, "5.7.1", "Command rejected");
	else if (*v == FILTER_TEMPFAIL)
		filter_reply_set(r, 451, "4.7.1", "Service unavailable - try again later");
}

/* filter_call - one filter's callbacks for a stage (on the loop, or on a pool thread) */
static enum filter_verdict
filter_call(const struct filter_link *fl, enum filter_stage stage, struct filter_ctx *c,
    const char *arg, struct filter_reply *r)
{
	memset(r, 0, sizeof(*r));
	switch (stage) {
	case FILTER_STAGE_CONNECT:
		return fl->ops->connect(fl->inst, c, r);
	case FILTER_STAGE_HELO:
		return fl->ops->helo(fl->inst, c, arg, r);
	case FILTER_STAGE_AUTH:
		return fl->ops->auth(fl->inst, c, arg, r);
	case FILTER_STAGE_MAIL:
		return fl->ops->mail(fl->inst, c, arg, r);
	case FILTER_STAGE_RCPT:
		return fl->ops->rcpt(fl->inst, c, arg, r);
	case FILTER_STAGE_DATA:
		return filter_call_data(fl, c, r);
	case FILTER_STAGE_FINAL:
		return fl->ops->final(fl->inst, c, r);
	case FILTER_STAGE_ABORT:
	case FILTER_STAGE_CLOSE:
		break;
	}
	fatal("filter_call: stage %d", (int)stage);
}

/* filter_session_stage - a stage outside any transaction: its verdicts hold for the session */
static bool
filter_session_stage(enum filter_stage stage)
{
	return stage == FILTER_STAGE_CONNECT || stage == FILTER_STAGE_HELO ||
	    stage == FILTER_STAGE_AUTH;
}

/* filter_head_prepend - FINAL: put the fields a filter prepended at the top of the block */
static void
filter_head_prepend(struct filter_txn *txn)
{
	struct buf nb;

	if (txn == NULL || txn->head == NULL || txn->prepend.len == 0)
		return;
	buf_init(&nb);
	buf_append(&nb, txn->prepend.data, txn->prepend.len);
	buf_append(&nb, txn->head->data, txn->head->len);
	buf_free(txn->head);
	*txn->head = nb;
	buf_reset(&txn->prepend);
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

	if (run->stage == FILTER_STAGE_FINAL)
		filter_head_prepend(run->txn);
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
		else if (!sess && run->txn != NULL && run->txn->quarantine == NULL) {
			run->txn->quarantine = why;
			/* At FINAL the block is composed: the mark goes on top of it. */
			if (run->stage == FILTER_STAGE_FINAL) {
				filter_prepend_header(run->txn, FILTER_QUARANTINE_NAME, why);
				filter_head_prepend(run->txn);
			}
		} else
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

/* ---- blocking calls: the copies they own ---- */

/* filter_wait_copy_session - the call's copy of the session view */
static void
filter_wait_copy_session(struct filter_wait *w, const struct filter_session *src)
{
	const char **f[FILTER_SESS_STRINGS] = {
		&w->sess.listener, &w->sess.client_addr, &w->sess.local_addr, &w->sess.client_name,
		&w->sess.client_ptr, &w->sess.proxy_client, &w->sess.helo, &w->sess.tls_version,
		&w->sess.tls_cipher, &w->sess.tls_peer_subject, &w->sess.auth_user,
	};
	size_t i;

	w->sess = *src;
	for (i = 0; i < FILTER_SESS_STRINGS; i++) {
		if (*f[i] != NULL)
			*f[i] = w->strs[i] = xstrdup(*f[i]);
	}
	w->conf = conf_ref((struct conf *)src->conf);
}

/* filter_wait_free - free a handle, and a blocking call's copies */
static void
filter_wait_free(struct filter_wait *w)
{
	size_t i;

	if (w->pooled) {
		for (i = 0; i < FILTER_SESS_STRINGS; i++)
			free(w->strs[i]);
		spool_free(w->txn.body);
		w->txn.body = NULL;
		filter_txn_reset(&w->txn);
		buf_free(&w->head);
		free(w->rcpt_params_cur);
		free(w->arg);
		conf_unref(w->conf);
		filter_chain_free(w->chain);
	}
	free(w);
}

/* filter_job_close - a blocking call nobody waited for is over: close its per-session state */
static void
filter_job_close(struct filter_wait *w)
{
	const struct filter_link *fl = &w->chain->links[w->link];
	struct filter_ctx c;

	memset(&c, 0, sizeof(c));
	c.priv = &w->priv;
	c.sess = &w->sess;
	c.link = w->link;
	log_info("id=" SESSION_ID_FMT " event=filter_late filter=%s stage=%s verdict=%s",
	    SESSION_ID(w->session_id), fl->name, filter_stage_name(w->stage),
	    filter_verdict_name(w->verdict));
	if (fl->ops->close != NULL)
		fl->ops->close(fl->inst, &c);
	filter_wait_free(w);
}

/*
 * filter_job_merge - a blocking call waited for is back: what it added to
 * its copy of the transaction goes to the session's.
 */
static void
filter_job_merge(struct filter_wait *w, struct filter_txn *txn)
{
	struct filter_txn *c = &w->txn;
	size_t n;

	if (txn == NULL)
		return;
	if ((n = c->nedits - w->nedits0) > 0) {
		txn->edits = xreallocarray(txn->edits, txn->nedits + n, sizeof(*txn->edits));
		memcpy(&txn->edits[txn->nedits], &c->edits[w->nedits0], n * sizeof(*txn->edits));
		txn->nedits += n;
		c->nedits = w->nedits0;	/* moved, not copied */
	}
	if (c->auth_results.len > w->ar0)
		buf_append(&txn->auth_results, c->auth_results.data + w->ar0,
		    c->auth_results.len - w->ar0);
	if ((n = c->nfacts - w->facts0) > 0) {
		txn->facts = xreallocarray(txn->facts, txn->nfacts + n, sizeof(*txn->facts));
		memcpy(&txn->facts[txn->nfacts], &c->facts[w->facts0], n * sizeof(*txn->facts));
		txn->nfacts += n;
		c->nfacts = w->facts0;	/* moved, not copied */
	}
	if (c->prepend.len > 0)
		buf_append(&txn->prepend, c->prepend.data, c->prepend.len);
}

/* ---- the filters' own pools ---- */

#define FILTER_POOL_QUEUE	10000	/* without a configuration (tests) */

/* A filter's own pool, by filter name and size, for the process's life. */
struct filter_pool {
	char *name;
	unsigned threads;
	struct workers *w;
	struct filter_pool *next;
};

static pthread_mutex_t filter_pools_mtx = PTHREAD_MUTEX_INITIALIZER;
static struct filter_pool *filter_pools;

/* filter_pool_get - filter fl's own pool, started at its first call (any loop thread) */
static struct workers *
filter_pool_get(const struct filter_link *fl, const struct conf *conf)
{
	struct filter_pool *p;

	pthread_mutex_lock(&filter_pools_mtx);
	for (p = filter_pools; p != NULL; p = p->next)
		if (p->threads == fl->threads && strcmp(p->name, fl->name) == 0)
			break;
	if (p == NULL) {
		p = xcalloc(1, sizeof(*p));
		p->name = xstrdup(fl->name);
		p->threads = fl->threads;
		p->w = workers_new(fl->threads, conf != NULL && conf->pool_queue > 0 ?
		    conf->pool_queue : FILTER_POOL_QUEUE);
		p->next = filter_pools;
		filter_pools = p;
		log_info("event=filter_pool filter=%s threads=%u", fl->name, fl->threads);
	}
	pthread_mutex_unlock(&filter_pools_mtx);
	return p->w;
}

/* filter_pools_free - join every filter's own pool (the loops are gone) */
void
filter_pools_free(void)
{
	struct filter_pool *p;

	pthread_mutex_lock(&filter_pools_mtx);
	while ((p = filter_pools) != NULL) {
		filter_pools = p->next;
		workers_free(p->w);
		free(p->name);
		free(p);
	}
	pthread_mutex_unlock(&filter_pools_mtx);
}

/* filter_job_work - on a pool thread: the blocking filter's callbacks, on the copies */
static void
filter_job_work(void *arg)
{
	struct filter_wait *w = arg;

	w->verdict = filter_call(&w->chain->links[w->link], w->stage, &w->ctx, w->arg, &w->reply);
	if (w->verdict == FILTER_PENDING)
		w->verdict = -1;	/* not on a pool thread: filter_reply_fix makes it a tempfail */
}

static void filter_resume(struct filter_state *st, size_t i, enum filter_verdict v,
    struct filter_reply *r);

/* filter_job_done - on the loop: the blocking call is back */
static void
filter_job_done(void *arg)
{
	struct filter_wait *w = arg;
	struct filter_state *st = w->st;
	struct filter_reply r;
	enum filter_verdict v;
	size_t i = w->link;

	if (st == NULL) {
		filter_job_close(w);
		return;
	}
	assert(st->pending == w);
	st->pending = NULL;
	if (st->timer != NULL)
		evtimer_del(st->timer);
	filter_job_merge(w, st->run.txn);
	st->priv[i] = w->priv;
	v = w->verdict;
	r = w->reply;
	filter_wait_free(w);
	filter_resume(st, i, v, &r);
}

/* filter_job_drop - the loop is gone (shutdown): the call closes what it owns, on any thread */
static void
filter_job_drop(void *arg)
{
	filter_job_close(arg);
}

static void filter_timeout(evutil_socket_t fd, short what, void *arg);

/* filter_wait_limit - seconds the pending call of filter i may last, 0 none */
static unsigned
filter_wait_limit(const struct filter_state *st, size_t i)
{
	if (st->pending != NULL && st->pending->own_timeout)
		return st->pending->timeout;
	return st->chain->links[i].timeout;
}

/* filter_timer_arm - the stage waits for filter i: at most its timeout */
static void
filter_timer_arm(struct filter_state *st, size_t i)
{
	struct timeval tv = { (time_t)filter_wait_limit(st, i), 0 };

	if (st->timer != NULL)
		evtimer_del(st->timer);
	if (tv.tv_sec == 0 || st->run.wl == NULL)
		return;
	/* Made at the first wait: most sessions' chains never wait. */
	if (st->timer == NULL &&
	    (st->timer = evtimer_new(workers_loop_base(st->run.wl), filter_timeout, st)) == NULL)
		fatal("filter_timer_arm: evtimer_new failed");
	evtimer_add(st->timer, &tv);
}

/*
 * filter_job_start - hand filter i to the pool with copies of what it
 * reads; false when the pool refuses it.
 */
static bool
filter_job_start(struct filter_state *st, size_t i)
{
	struct filter_run_ctx *run = &st->run;
	struct filter_wait *w = xcalloc(1, sizeof(*w));
	const struct filter_link *fl;
	bool queued;

	w->st = st;
	w->link = i;
	w->pooled = true;
	w->session_id = run->sess != NULL ? run->sess->id : 0;
	w->chain = filter_chain_hold(st->chain);
	w->stage = run->stage;
	if (run->sess != NULL)
		filter_wait_copy_session(w, run->sess);
	buf_init(&w->head);
	filter_txn_init(&w->txn);
	if (run->txn != NULL) {
		filter_txn_copy(&w->txn, run->txn);
		if (run->txn->rcpt_params_cur != NULL)
			w->txn.rcpt_params_cur = w->rcpt_params_cur = xstrdup(run->txn->rcpt_params_cur);
		if (run->txn->head != NULL) {
			buf_append(&w->head, run->txn->head->data, run->txn->head->len);
			w->txn.head = &w->head;
		}
		w->nedits0 = w->txn.nedits;
		w->ar0 = w->txn.auth_results.len;
		w->facts0 = w->txn.nfacts;
	}
	w->arg = run->arg != NULL ? xstrdup(run->arg) : NULL;
	w->priv = st->priv[i];
	w->ctx.priv = &w->priv;
	w->ctx.sess = run->sess != NULL ? &w->sess : NULL;
	w->ctx.txn = run->txn != NULL ? &w->txn : NULL;
	w->ctx.link = i;
	fl = &st->chain->links[i];
	if (fl->threads > 0)
		queued = workers_submit_to(filter_pool_get(fl, w->sess.conf), run->wl,
		    filter_job_work, filter_job_done, filter_job_drop, w);
	else
		queued = workers_submit_owned(run->wl, filter_job_work, filter_job_done,
		    filter_job_drop, w);
	if (!queued) {
		w->st = NULL;
		w->priv = NULL;	/* still the session's */
		filter_wait_free(w);
		return false;
	}
	st->pending = w;
	filter_timer_arm(st, i);
	return true;
}

/* ---- calls on the loop ---- */

/* filter_loop_ctx - filter i's context for the stage in progress, on the loop (no base yet) */
static void
filter_loop_ctx(struct filter_state *st, size_t i, struct filter_ctx *c)
{
	memset(c, 0, sizeof(*c));
	c->priv = &st->priv[i];
	c->sess = st->run.sess;
	c->txn = st->run.txn;
	c->state = st;
	c->link = i;
}

/* filter_wait_begin - the callback's verdict comes later (see filter.h) */
struct filter_wait *
filter_wait_begin(struct filter_ctx *ctx)
{
	struct filter_state *st = ctx->state;
	struct filter_wait *w;

	if (ctx->base == NULL || st == NULL)
		return NULL;
	if (st->pending != NULL)
		fatal("filter_wait_begin: filter \"%s\" began two waits in one call",
		    st->chain->links[ctx->link].name);
	w = xcalloc(1, sizeof(*w));
	w->st = st;
	w->link = ctx->link;
	w->session_id = ctx->sess != NULL ? ctx->sess->id : 0;
	w->in_call = true;
	w->ctx = *ctx;
	st->pending = w;
	return w;
}

/* filter_wait_timeout - a limit of the wait's own, from now (see filter.h) */
void
filter_wait_timeout(struct filter_wait *w, unsigned seconds)
{
	if (w->st == NULL || w->pooled)
		return;
	w->own_timeout = seconds != FILTER_TIMEOUT_DEFAULT;
	w->timeout = seconds;
	if (!w->in_call)
		filter_timer_arm(w->st, w->link);	/* else armed when the callback returns */
}

/* filter_wait_ctx - the stage's context, NULL once the chain stopped waiting */
struct filter_ctx *
filter_wait_ctx(struct filter_wait *w)
{
	return w->st != NULL ? &w->ctx : NULL;
}

/* filter_wait_answer - a call on the loop completed: now, or later */
static void
filter_wait_answer(struct filter_wait *w, enum filter_verdict v, const struct filter_reply *r,
    bool failed)
{
	struct filter_state *st = w->st;
	struct filter_reply rr;
	size_t i = w->link;

	if (st == NULL) {
		log_debug("id=" SESSION_ID_FMT " event=filter_late_dropped", SESSION_ID(w->session_id));
		filter_wait_free(w);
		return;
	}
	if (r != NULL)
		w->reply = *r;
	w->verdict = v;
	w->failed = failed;
	if (w->in_call) {
		w->answered = true;	/* filter_call_loop takes it when the callback returns */
		return;
	}
	assert(st->pending == w);
	st->pending = NULL;
	if (st->timer != NULL)
		evtimer_del(st->timer);
	rr = w->reply;
	filter_wait_free(w);
	if (failed)
		filter_fail_reply(&st->chain->links[i], &v, &rr);
	filter_resume(st, i, v, &rr);
}

/* filter_wait_done - the verdict of a pending call */
void
filter_wait_done(struct filter_wait *w, enum filter_verdict v, const struct filter_reply *r)
{
	filter_wait_answer(w, v == FILTER_PENDING ? (enum filter_verdict)-1 : v, r, false);
}

/* filter_failed - filter i failed: log it; its default_action holds from now on */
static void
filter_failed(struct filter_state *st, size_t i, const char *event, const char *why)
{
	const struct filter_link *fl = &st->chain->links[i];
	char esc[400];

	st->failed[i] = 1;
	log_warn("id=" SESSION_ID_FMT " event=%s filter=%s stage=%s error=\"%s\" action=%s",
	    st->run.sess != NULL ? SESSION_ID(st->run.sess->id) : 0, event, fl->name,
	    filter_stage_name(st->run.stage), log_escape(esc, sizeof(esc), why, strlen(why)),
	    filter_verdict_name(fl->on_fail));
}

/* filter_wait_fail - the pending call failed: default_action */
void
filter_wait_fail(struct filter_wait *w, const char *why)
{
	if (w->st != NULL)
		filter_failed(w->st, w->link, "filter_failed", why);
	filter_wait_answer(w, FILTER_TEMPFAIL, NULL, true);
}

/*
 * filter_call_loop - call filter i on the loop.  FILTER_PENDING when it
 * began a wait it did not complete yet (the timer runs); else its verdict.
 */
static enum filter_verdict
filter_call_loop(struct filter_state *st, size_t i, struct filter_reply *r)
{
	struct filter_run_ctx *run = &st->run;
	const struct filter_link *fl = &st->chain->links[i];
	struct filter_ctx c;
	struct filter_wait *w;
	enum filter_verdict v;

	filter_loop_ctx(st, i, &c);
	c.base = run->wl != NULL ? workers_loop_base(run->wl) : NULL;
	c.resolver = c.base != NULL ? run->resolver : NULL;
	v = filter_call(fl, run->stage, &c, run->arg, r);
	if ((w = st->pending) == NULL)
		return v == FILTER_PENDING ? (enum filter_verdict)-1 : v;
	w->in_call = false;
	if (w->answered) {
		st->pending = NULL;
		v = w->verdict;
		*r = w->reply;
		if (w->failed)
			filter_fail_reply(fl, &v, r);
		filter_wait_free(w);
		return v;
	}
	if (v != FILTER_PENDING) {
		/* A wait begun and a verdict given: the verdict counts, the handle is dropped when done. */
		st->pending = NULL;
		w->st = NULL;
		return v;
	}
	filter_timer_arm(st, i);
	return FILTER_PENDING;
}

/* ---- the chain ---- */

/*
 * filter_abandon - the chain stops waiting for the pending call: a call on
 * the loop is cancelled, a blocking one keeps the filter's per-session
 * pointer and runs to its end on its copies.
 */
static void
filter_abandon(struct filter_state *st)
{
	struct filter_wait *w = st->pending;
	const struct filter_link *fl;

	if (st->timer != NULL)
		evtimer_del(st->timer);
	if (w == NULL)
		return;
	st->pending = NULL;
	w->st = NULL;
	fl = &st->chain->links[w->link];
	if (w->pooled) {
		st->priv[w->link] = NULL;	/* the call's now: it closes it */
		st->failed[w->link] = 1;	/* and the filter sits the session out */
		return;
	}
	if (fl->ops->cancel != NULL)
		fl->ops->cancel(fl->inst, &w->ctx);
}

/* filter_timeout - the pending call took longer than its filter's timeout */
static void
filter_timeout(evutil_socket_t fd, short what, void *arg)
{
	struct filter_state *st = arg;
	struct filter_reply r;
	enum filter_verdict v;
	size_t i;
	char why[64];

	(void)fd;
	(void)what;
	if (st->pending == NULL)
		return;
	i = st->pending->link;
	snprintf(why, sizeof(why), "no answer in %us", filter_wait_limit(st, i));
	filter_abandon(st);
	filter_failed(st, i, "filter_timeout", why);
	filter_fail_reply(&st->chain->links[i], &v, &r);
	filter_resume(st, i, v, &r);
}

/* filter_has_stage is above; the chain walks from run->next on. */

enum filter_step { STEP_DONE, STEP_WAIT };

/*
 * filter_step - run the filters from run->next on: STEP_DONE when the stage
 * is decided (res filled), STEP_WAIT when a call is pending.
 */
static enum filter_step
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
		if (st->failed[i]) {
			filter_fail_reply(&chain->links[i], &v, &r);
		} else if (chain->links[i].ops->may_block && run->wl != NULL) {
			if (filter_job_start(st, i))
				return STEP_WAIT;
			filter_pool_busy(res, chain->links[i].name);
			return STEP_DONE;
		} else if ((v = filter_call_loop(st, i, &r)) == FILTER_PENDING)
			return STEP_WAIT;
		if (filter_decide(st, i, v, &r, res))
			return STEP_DONE;
	}
	filter_result_init(res);
	if (run->quarantined != NULL) {
		res->verdict = FILTER_QUARANTINE;
		res->filter = run->quarantined;
		res->reply = run->qreply;
	}
	return STEP_DONE;
}

/* filter_resume - filter i answered (or failed) while the stage was pending: go on */
static void
filter_resume(struct filter_state *st, size_t i, enum filter_verdict v, struct filter_reply *r)
{
	struct filter_run_ctx *run = &st->run;
	struct filter_result res;
	filter_done_fn done;
	void *done_arg;
	uint64_t id;

	if (!filter_decide(st, i, v, r, &res) && filter_step(st, &res) == STEP_WAIT)
		return;
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
 * filter_run_safety - a stage of what was discarded: only the safety filters
 * run (inline, never waiting: ctx.base is NULL), so that what a kept
 * transaction would have been refused stays refused; their REJECT or
 * TEMPFAIL stands, anything else leaves the DISCARD.
 */
static void
filter_run_safety(struct filter_state *st, struct filter_result *res)
{
	const struct filter_chain *chain = st->chain;
	struct filter_run_ctx *run = &st->run;
	struct filter_reply r;
	struct filter_ctx c;
	enum filter_verdict v;
	size_t i;

	for (i = 0; i < chain->n; i++) {
		const struct filter_link *fl = &chain->links[i];

		if (!fl->ops->safety || st->skip[i] != FILTER_SKIP_NONE ||
		    !filter_has_stage(fl->ops, run->stage))
			continue;
		assert(!fl->ops->may_block);
		filter_loop_ctx(st, i, &c);	/* no base: a safety filter never waits */
		v = filter_call(fl, run->stage, &c, run->arg, &r);
		filter_reply_fix(run, fl->name, &v, &r);
		if (v == FILTER_REJECT || v == FILTER_TEMPFAIL) {
			res->verdict = v;
			res->filter = fl->name;
			res->reply = r;
			return;
		}
	}
	res->verdict = FILTER_DISCARD;
	res->filter = st->discarded != NULL ? st->discarded : st->txn_discarded;
}

/*
 * filter_run - run one stage (see filter.h).  Result verdicts: CONTINUE when
 * every filter passed or accepted; QUARANTINE when one quarantined and none
 * decided after it; else the first REJECT/TEMPFAIL/DISCARD with its
 * corrected reply.  What was discarded runs no filter but the safety ones
 * (filter_run_safety): DISCARD at once unless one of those refuses.
 * With wl NULL, blocking filters run inline and no filter can wait (tools
 * and tests without a loop).  ABORT and CLOSE run abort/close on every
 * filter, inline, and pass.
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
	memset(run, 0, sizeof(*run));
	run->stage = stage;
	run->sess = ctx->sess;
	run->txn = ctx->txn;
	run->arg = arg;
	run->resolver = ctx->resolver;
	if (st->discarded != NULL || (!filter_session_stage(stage) && st->txn_discarded != NULL)) {
		filter_run_safety(st, res);
		return FILTER_RUN_DONE;
	}
	if (!(st->chain->stages & (1u << stage)))
		return FILTER_RUN_DONE;		/* no filter of the chain works at this stage */
	run->wl = wl;
	run->done = done;
	run->done_arg = done_arg;
	if (filter_step(st, res) == STEP_DONE)
		return FILTER_RUN_DONE;
	assert(done != NULL);
	st->busy = true;
	return FILTER_RUN_PENDING;
}
