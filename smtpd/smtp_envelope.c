/*
 * smtp_envelope.c - the filters' envelope edits at end of message: a new
 * sender (with its MAIL parameters), recipients added (with their RCPT
 * parameters: NOTIFY, ORCPT) and deleted.  The edited envelope replaces the
 * transaction's, and the backend's through relay_envelope, which replays it
 * before the body (the backend saw the original at MAIL/RCPT time).
 * Refusals on that replay are reconciled per recipient:
 *   - a recipient the client has our 250 for (an original) is never lost:
 *     refused 5xx, it gets a DSN through an smtp: bounce_relay (data_verdict,
 *     as an LMTP recipient refused after DATA); refused 4xx, or with
 *     lmtp_mixed = tempfail or no such bounce_relay, the whole message is
 *     tempfailed before any copy went out;
 *   - a recipient a filter added is logged and dropped (event=added_rcpt_dropped);
 *   - nobody left: the end of data gets the backend's refusal.
 * A sender refused on the replay tempfails the message (relay.c).  Every
 * recipient deleted: the message is discarded, as Postfix does when a
 * milter deletes them all.
 *
 * Must never: lose a recipient the client has our 250 for without a DSN or a
 * 4xx for the whole message, or send one recipient twice.  Runs on the
 * session's loop; what the replay reads is the relay transaction's own copy.
 */
#include "config.h"

#include <assert.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "dsn.h"
#include "log.h"
#include "util.h"
#include "smtp_session_priv.h"

/* What a transaction keeps of its edited envelope, parallel to ftx.rcpts. */
struct envelope {
	bool *added;			/* a filter added it */
	struct relay_result *refused;	/* its refusal on the replay (code 0: none) */
	size_t nrefused;		/* originals refused on the replay */
};

/* The edited recipient list being computed. */
struct env_list {
	char **addr;
	char **params;
	struct rcpt_info *info;
	bool *added;
	size_t n;
};

#define ENV_ESC	(SMTP_PARSE_ADDR_SIZE * 4)

/* smtp_envelope_free - what smtp_envelope_apply kept in the transaction */
void
smtp_envelope_free(struct envelope *env)
{
	if (env == NULL)
		return;
	free(env->added);
	free(env->refused);
	free(env);
}

/* list_add - append a recipient */
static void
list_add(struct env_list *l, const char *addr, const char *params, const struct rcpt_info *ri,
    bool added)
{
	l->addr = xreallocarray(l->addr, l->n + 1, sizeof(*l->addr));
	l->params = xreallocarray(l->params, l->n + 1, sizeof(*l->params));
	l->info = xreallocarray(l->info, l->n + 1, sizeof(*l->info));
	l->added = xreallocarray(l->added, l->n + 1, sizeof(*l->added));
	l->addr[l->n] = xstrdup(addr);
	l->params[l->n] = xstrdup(params ? params : "");
	l->info[l->n] = *ri;
	l->added[l->n] = added;
	l->n++;
}

/* list_find - the index of addr (any case), or l->n */
static size_t
list_find(const struct env_list *l, const char *addr)
{
	size_t i;

	for (i = 0; i < l->n; i++)
		if (str_casecmp(l->addr[i], addr) == 0)
			break;
	return i;
}

/* list_del - remove the i-th recipient */
static void
list_del(struct env_list *l, size_t i)
{
	free(l->addr[i]);
	free(l->params[i]);
	l->n--;
	memmove(&l->addr[i], &l->addr[i + 1], (l->n - i) * sizeof(*l->addr));
	memmove(&l->params[i], &l->params[i + 1], (l->n - i) * sizeof(*l->params));
	memmove(&l->info[i], &l->info[i + 1], (l->n - i) * sizeof(*l->info));
	memmove(&l->added[i], &l->added[i + 1], (l->n - i) * sizeof(*l->added));
}

/* pairs_free - two parallel vectors of n strings (addresses and their parameters) */
static void
pairs_free(char **addr, char **params, size_t n)
{
	size_t i;

	for (i = 0; i < n; i++) {
		free(addr[i]);
		free(params[i]);
	}
	free(addr);
	free(params);
}

/* list_free - a list not installed */
static void
list_free(struct env_list *l)
{
	pairs_free(l->addr, l->params, l->n);
	free(l->info);
	free(l->added);
	memset(l, 0, sizeof(*l));
}

/* path_args - "VERB<addr> params" from a filter's address, bracketed or not */
static char *
path_args(const char *verb, const char *addr, const char *params, const char *extra)
{
	bool br = addr[0] == '<';

	return xasprintf("%s%s%s%s%s%s%s", verb, br ? "" : "<", addr, br ? "" : ">",
	    params && *params ? " " : "", params ? params : "", extra);
}

/*
 * env_from - a filter's new sender, read as a MAIL command would be; the
 * client's SIZE, BODY, SMTPUTF8 and REQUIRETLS (which describe the message,
 * not the sender) are kept unless the filter gives its own
 */
static bool
env_from(const struct txn *t, const struct filter_edit *e, struct smtp_parse_mail *m,
    char *from, struct buf *params)
{
	const unsigned kept = SMTP_PARSE_PARAM_SIZE | SMTP_PARSE_PARAM_BODY |
	    SMTP_PARSE_PARAM_SMTPUTF8 | SMTP_PARSE_PARAM_REQUIRETLS;
	bool utf8 = (t->mail.params & SMTP_PARSE_PARAM_SMTPUTF8) && !(e->params &&
	    strstr(e->params, "SMTPUTF8"));
	char *args = path_args("FROM:", e->value ? e->value : "", e->params, utf8 ? " SMTPUTF8" : "");
	enum smtp_parse_status st = smtp_parse_mail(args, strlen(args), SMTP_PARSE_PARAM_ALL &
	    ~(SMTP_PARSE_PARAM_AUTH | SMTP_PARSE_PARAM_NOTIFY | SMTP_PARSE_PARAM_ORCPT), m);

	free(args);
	if (st != SMTP_PARSE_OK)
		return false;
	if (!(m->params & SMTP_PARSE_PARAM_SIZE) && (t->mail.params & SMTP_PARSE_PARAM_SIZE))
		m->size = t->mail.size;
	if (!(m->params & SMTP_PARSE_PARAM_BODY) && (t->mail.params & SMTP_PARSE_PARAM_BODY))
		m->body = t->mail.body;
	m->params |= t->mail.params & kept & ~m->params;
	smtp_parse_addr_format(&m->from, from, SMTP_PARSE_ADDR_SIZE);
	buf_reset(params);
	smtp_parse_mail_params(m, params);
	return true;
}

/* env_rcpt - a filter's recipient, read as an RCPT command would be */
static bool
env_rcpt(struct session *s, const char *value, const char *params, bool utf8, char *addr,
    struct rcpt_info *ri, struct buf *norm)
{
	struct smtp_parse_rcpt r;
	char *args = path_args("TO:", value ? value : "", params, "");
	enum smtp_parse_status st = smtp_parse_rcpt(args, strlen(args),
	    SMTP_PARSE_PARAM_NOTIFY | SMTP_PARSE_PARAM_ORCPT, utf8, &r);

	free(args);
	if (st != SMTP_PARSE_OK)
		return false;
	smtp_parse_addr_format(&r.to, addr, SMTP_PARSE_ADDR_SIZE);
	if (r.to.is_postmaster)	/* as cmd_rcpt: the backend gets a full address */
		snprintf(addr, SMTP_PARSE_ADDR_SIZE, "postmaster@%s",
		    s->conf->nlocal_domains ? s->conf->local_domains[0] : s->conf->hostname);
	str_copy(ri->orcpt, r.orcpt, sizeof(ri->orcpt));
	ri->notify = r.notify;
	buf_reset(norm);
	smtp_parse_rcpt_params(&r, norm);
	return true;
}

/* log_addr - append ",<addr>" (escaped) to a log list */
static void
log_addr(struct buf *b, const char *addr)
{
	char esc[ENV_ESC];

	buf_printf(b, "%s<%s>", b->len ? "," : "", log_escape(esc, sizeof(esc), addr, strlen(addr)));
}

/*
 * env_edit_rcpts - apply the recipient edits, in order, to the transaction's
 * list: deletes remove (any case), adds append unless present.  False (and
 * *bad_r the address) for an address or parameters no RCPT could carry.
 */
static bool
env_edit_rcpts(struct session *s, bool utf8, struct env_list *l, struct buf *added,
    struct buf *deleted, const char **bad_r)
{
	const struct filter_txn *f = &s->txn->ftx;
	char addr[SMTP_PARSE_ADDR_SIZE];
	struct rcpt_info ri;
	struct buf norm;
	size_t i, j;

	buf_init(&norm);
	for (i = 0; i < f->nedits; i++) {
		const struct filter_edit *e = &f->edits[i];

		if (e->kind != EDIT_ADD_RCPT && e->kind != EDIT_DELETE_RCPT)
			continue;
		memset(&ri, 0, sizeof(ri));
		if (!env_rcpt(s, e->value, e->kind == EDIT_ADD_RCPT ? e->params : NULL, utf8, addr,
		    &ri, &norm)) {
			*bad_r = e->value ? e->value : "";
			buf_free(&norm);
			return false;
		}
		if (e->kind == EDIT_DELETE_RCPT) {
			if ((j = list_find(l, addr)) < l->n) {
				list_del(l, j);
				log_addr(deleted, addr);
			}
		} else if (list_find(l, addr) == l->n) {
			/* Deleted and added again (new parameters): still one the client has our 250 for. */
			for (j = 0; j < f->nrcpts && str_casecmp(f->rcpts[j], addr) != 0; j++)
				;
			list_add(l, addr, norm.data ? norm.data : "", &ri, j == f->nrcpts);
			log_addr(added, addr);
		}
	}
	buf_free(&norm);
	return true;
}

/* env_same - does the edited envelope say what the backend was told? */
static bool
env_same(const struct txn *t, const char *from, const char *params, const struct env_list *l)
{
	const struct filter_txn *f = &t->ftx;
	size_t i;

	if (strcmp(from, t->from) != 0 || strcmp(params, t->mail_params.data ?
	    t->mail_params.data : "") != 0 || l->n != f->nrcpts)
		return false;
	for (i = 0; i < l->n; i++)
		if (strcmp(l->addr[i], f->rcpts[i]) != 0 || strcmp(l->params[i], f->rcpt_params[i]) != 0)
			return false;
	return true;
}

/* env_install - the edited envelope becomes the transaction's (l is emptied) */
static void
env_install(struct txn *t, const struct smtp_parse_mail *m, const char *from,
    const struct buf *params, struct env_list *l)
{
	struct filter_txn *f = &t->ftx;

	t->mail = *m;
	str_copy(t->from, from, sizeof(t->from));
	buf_reset(&t->mail_params);
	buf_append(&t->mail_params, params->data ? params->data : "", params->len);
	free(f->mail_from);
	f->mail_from = xstrdup(from);
	free(f->mail_params);
	f->mail_params = xstrdup(params->data ? params->data : "");
	pairs_free(f->rcpts, f->rcpt_params, f->nrcpts);
	free(t->rinfo);
	f->rcpts = l->addr;
	f->rcpt_params = l->params;
	f->nrcpts = l->n;
	t->rinfo = l->info;
	smtp_envelope_free(t->env);
	t->env = xcalloc(1, sizeof(*t->env));
	t->env->added = l->added;
	t->env->refused = xcalloc(l->n, sizeof(*t->env->refused));
	memset(l, 0, sizeof(*l));
}

/* env_tempfail - the message cannot go as edited: 451 before any copy went out */
static void
env_tempfail(struct session *s, const char *reason, size_t accepted, size_t deferred, size_t refused)
{
	log_warn("id=%s event=replay_tempfail reason=%s accepted=%zu deferred=%zu refused=%zu "
	    "delivered=0", s->idstr, reason, accepted, deferred, refused);
	session_reply(s, R_LMTP_MIXED);
	session_txn_end(s, TXN_TEMPFAIL, "recipients refused on the envelope replay");
}

/* env_compact - drop the added recipients the backend refused (keep[i] false) */
static void
env_compact(struct txn *t, const bool *keep)
{
	struct filter_txn *f = &t->ftx;
	size_t i, k = 0;

	for (i = 0; i < f->nrcpts; i++) {
		if (!keep[i]) {
			free(f->rcpts[i]);
			free(f->rcpt_params[i]);
			continue;
		}
		f->rcpts[k] = f->rcpts[i];
		f->rcpt_params[k] = f->rcpt_params[i];
		t->rinfo[k] = t->rinfo[i];
		t->env->added[k] = t->env->added[i];
		t->env->refused[k] = t->env->refused[i];
		k++;
	}
	f->nrcpts = k;
}

/*
 * refusal_rank - which refusal answers the client when nobody is left: one
 * of its own recipients' before a filter's, a deferral before a refusal
 */
static int
refusal_rank(const struct relay_result *r, bool added)
{
	if (r->code == 0)
		return 0;
	return (added ? 1 : 3) + (r->code / 100 == 4);
}

/* The replay's verdicts on the edited list. */
struct env_tally {
	size_t ok, temp, perm;		/* accepted; the client's own deferred, refused */
	struct relay_result first;	/* what the client hears when nobody is left */
	bool first_added;
};

/*
 * env_tally - sort the replay's verdicts: a filter's recipient refused is
 * logged and dropped (keep[i] false), one of the client's is kept with its
 * refusal for the DSN
 */
static void
env_tally(struct session *s, const struct relay_result *res, size_t n, bool *keep,
    struct env_tally *ty)
{
	struct envelope *env = s->txn->env;
	char esc[ENV_ESC];
	size_t i;

	memset(ty, 0, sizeof(*ty));
	for (i = 0; i < n; i++) {
		const char *rcpt = s->txn->ftx.rcpts[i];

		keep[i] = res[i].code / 100 == 2 || !env->added[i];
		if (res[i].code / 100 == 2) {
			ty->ok++;
			continue;
		}
		if (refusal_rank(&res[i], env->added[i]) > refusal_rank(&ty->first, ty->first_added)) {
			ty->first = res[i];
			ty->first_added = env->added[i];
		}
		if (env->added[i]) {
			/* Postfix's rule for a milter's recipient: logged and dropped. */
			log_warn("id=%s event=added_rcpt_dropped rcpt=<%s> reply=\"%d %s %s\"",
			    s->idstr, log_escape(esc, sizeof(esc), rcpt, strlen(rcpt)), res[i].code,
			    res[i].ecode, res[i].text);
			continue;
		}
		env->refused[i] = res[i];	/* the client has our 250 for it: DSN or 451 */
		env->nrefused++;
		if (res[i].code / 100 == 5)
			ty->perm++;
		else
			ty->temp++;
	}
}

/* env_tempfail_reason - why the message cannot go on as edited, or NULL */
static const char *
env_tempfail_reason(const struct session *s, const struct env_tally *ty)
{
	if (ty->temp > 0)
		return "deferred_recipients";	/* a deferral never becomes a DSN: no queue here */
	if (ty->perm == 0 || !dsn_owed(s->txn->from))
		return NULL;
	if (s->conf->lmtp_mixed == LMTP_MIXED_TEMPFAIL)
		return "lmtp_mixed";
	if (s->conf->bounce_relay.kind != RELAY_SMTP)
		return "no_bounce_relay";	/* an smtp: relay without one: no DSN can go */
	return NULL;
}

/*
 * envelope_refused - the backend refused some recipients of the replayed
 * envelope (relay_envelope's callback, before DATA): reconcile them one by
 * one, then DATA to the others, or end the message now
 */
static void
envelope_refused(void *arg, const struct relay_result *res, size_t n)
{
	struct session *s = arg;
	struct txn *t = s->txn;
	struct env_tally ty;
	const char *why;
	bool *keep;

	if (!session_wait_over(s))
		return;
	assert(n == t->ftx.nrcpts);
	keep = xcalloc(n, sizeof(*keep));
	env_tally(s, res, n, keep, &ty);
	if (ty.ok == 0) {
		/* Nobody left to deliver to: the end of data gets the backend's word. */
		if (ty.first_added)	/* not the filters' addresses, only the verdict */
			str_copy(ty.first.text, "Error: the backend refused the recipients the "
			    "filters set", sizeof(ty.first.text));
		session_reply_result(s, &ty.first);
		session_txn_end(s, ty.first.code / 100 == 5 ? TXN_REJECTED : TXN_TEMPFAIL,
		    ty.first.text);
	} else if ((why = env_tempfail_reason(s, &ty)) != NULL) {
		env_tempfail(s, why, ty.ok, ty.temp, ty.perm);
	} else {
		env_compact(t, keep);
		session_enter_wait(s, SESSION_WAIT_RELAY);
		relay_envelope_go(t->relay);
	}
	free(keep);
	session_continue(s);
}

/* env_log - event=envelope_edit: what changed */
static void
env_log(struct session *s, const char *from, const struct buf *added, const struct buf *deleted,
    size_t n)
{
	struct txn *t = s->txn;
	char oesc[ENV_ESC], nesc[ENV_ESC];

	log_info("id=%s event=envelope_edit from=<%s> new_from=<%s> added=%s deleted=%s rcpts=%zu",
	    s->idstr, log_escape(oesc, sizeof(oesc), t->from, strlen(t->from)),
	    log_escape(nesc, sizeof(nesc), from, strlen(from)), added->len ? added->data : "none",
	    deleted->len ? deleted->data : "none", n);
}

/*
 * env_edits - the edited envelope from the filters' edits: the last sender
 * change wins; false (and *bad_r) for an edit that no command could carry
 */
static bool
env_edits(struct session *s, struct smtp_parse_mail *m, char *from, struct buf *params,
    struct env_list *l, struct buf *added, struct buf *deleted, const char **bad_r)
{
	struct txn *t = s->txn;
	const struct filter_txn *f = &t->ftx;
	size_t i;

	*m = t->mail;
	str_copy(from, t->from, SMTP_PARSE_ADDR_SIZE);
	buf_puts(params, t->mail_params.data ? t->mail_params.data : "");
	for (i = 0; i < f->nedits; i++) {
		if (f->edits[i].kind == EDIT_CHANGE_FROM && !env_from(t, &f->edits[i], m, from, params)) {
			*bad_r = f->edits[i].value ? f->edits[i].value : "";
			return false;
		}
	}
	/* The original list, once each (a client may name a recipient twice). */
	for (i = 0; i < f->nrcpts; i++)
		if (list_find(l, f->rcpts[i]) == l->n)
			list_add(l, f->rcpts[i], f->rcpt_params[i], &t->rinfo[i], false);
	return env_edit_rcpts(s, (m->params & SMTP_PARSE_PARAM_SMTPUTF8) != 0, l, added, deleted,
	    bad_r);
}

/*
 * smtp_envelope_apply - at end of message, after the filters: apply their
 * envelope edits.  True: go on (the backend replays the new envelope at
 * relay_data).  False: the message was answered and ended here (an edit
 * no command could carry, or more recipients than max_recipients: 451;
 * every recipient deleted: discarded).
 */
bool
smtp_envelope_apply(struct session *s)
{
	struct txn *t = s->txn;
	struct smtp_parse_mail m;
	char from[SMTP_PARSE_ADDR_SIZE], esc[ENV_ESC];
	struct buf params, added, deleted;
	struct env_list l;
	const char *bad = NULL;
	bool go = true;
	size_t i;

	for (i = 0; i < t->ftx.nedits; i++)
		if (t->ftx.edits[i].kind == EDIT_CHANGE_FROM || t->ftx.edits[i].kind == EDIT_ADD_RCPT ||
		    t->ftx.edits[i].kind == EDIT_DELETE_RCPT)
			break;
	if (i == t->ftx.nedits)
		return true;
	memset(&l, 0, sizeof(l));
	buf_init(&params);
	buf_init(&added);
	buf_init(&deleted);
	if (!env_edits(s, &m, from, &params, &l, &added, &deleted, &bad)) {
		log_err("id=%s event=filter_error error=\"envelope edit with a bad address or "
		    "parameters\" value=\"%s\"", s->idstr, log_escape(esc, sizeof(esc), bad, strlen(bad)));
		session_reply(s, R_LOCAL_ERROR);
		session_txn_end(s, TXN_TEMPFAIL, "bad envelope edit");
		go = false;
	} else if (l.n > s->lim->max_recipients) {
		/* The filters' recipients are held to the client's limit (a milter's too). */
		log_err("id=%s event=filter_error error=\"the filters' recipients exceed "
		    "max_recipients\" rcpts=%zu max_recipients=%u", s->idstr, l.n,
		    s->lim->max_recipients);
		session_reply(s, R_LOCAL_ERROR);
		session_txn_end(s, TXN_TEMPFAIL, "too many recipients after the filters' edits");
		go = false;
	} else if (!env_same(t, from, params.data ? params.data : "", &l)) {
		env_log(s, from, &added, &deleted, l.n);
		if (l.n == 0) {
			/* Postfix discards a message whose recipients a milter deleted. */
			log_info("id=%s event=discard reason=all_recipients_deleted", s->idstr);
			session_reply(s, R_DISCARDED);
			session_txn_end(s, TXN_DISCARDED, "all recipients deleted by the filters");
			go = false;
		} else {
			env_install(t, &m, from, &params, &l);
			if (t->relay != NULL)	/* NULL only when discarded, which ended earlier */
				relay_envelope(t->relay, t->from, t->mail_params.data ?
				    t->mail_params.data : "", t->ftx.rcpts, t->ftx.rcpt_params,
				    t->ftx.nrcpts, envelope_refused, s);
		}
	}
	list_free(&l);
	buf_free(&params);
	buf_free(&added);
	buf_free(&deleted);
	return go;
}

/*
 * smtp_envelope_results - the backend's results on the message, one per
 * recipient of the transaction again when the replay refused some: the
 * refused ones get their refusal, the others theirs from res (one each, or
 * SMTP's one for all).  NULL when res needs no change; else the caller frees.
 */
struct relay_result *
smtp_envelope_results(struct session *s, const struct relay_result *res, size_t *n_r)
{
	struct txn *t = s->txn;
	struct relay_result *all;
	size_t i, k = 0, n = *n_r, accepted;

	if (t->env == NULL || t->env->nrefused == 0 || n == 0)
		return NULL;
	accepted = t->ftx.nrcpts - t->env->nrefused;
	all = xcalloc(t->ftx.nrcpts, sizeof(*all));
	for (i = 0; i < t->ftx.nrcpts; i++) {
		if (t->env->refused[i].code != 0) {
			all[i] = t->env->refused[i];
			continue;
		}
		all[i] = res[n == accepted && k < n ? k : 0];
		k++;
	}
	*n_r = t->ftx.nrcpts;
	return all;
}
