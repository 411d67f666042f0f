/*
 * pmilter_cb.c - the libmilter callbacks: each stage the MTA reports runs
 * through the [milter-server] chain, and the verdict goes back as libmilter's.
 *
 *   negotiate  the actions pmilter_ops can ask for; SMFIP_HDR_LEADSPC is
 *              required (header values exact); the macros read below
 *   connect    CONNECT (client from hostaddr, its name from hostname, our
 *              address from {daemon_addr}/{if_addr}, the MTA's name j)
 *   helo       HELO (the TLS facts come with it)
 *   envfrom    AUTH first when {auth_authen} names a new login, then MAIL
 *   envrcpt    RCPT: a refusal is that recipient's
 *   header,    the message collected: the fields as txn->headers and, with
 *   eoh, body  the body, into a spool bounded by [server] max_message_size
 *              and max_header_size
 *   eom        DATA, then the edits and our Authentication-Results composed
 *              as for portier's backend, FINAL (signers) on that block, and
 *              all of it sent back as libmilter's actions (pmilter_ops)
 *   abort, close  ABORT, CLOSE
 * REJECT and TEMPFAIL carry the chain's reply (smfi_setreply), DISCARD is
 * SMFIS_DISCARD (at CONNECT or HELO the chain remembers it and discards at
 * MAIL, as Postfix refuses a milter's discard there), QUARANTINE becomes
 * smfi_quarantine at end of message.  One log line per transaction.
 *
 * Threads: libmilter runs one callback of a connection at a time, on any of
 * its threads; the connection (smfi_setpriv) holds its own event loop.  The
 * chain and configuration are shared and read-only.  A registry of the
 * connections, with a count of the callbacks running, lets the shutdown
 * wait for them and close what libmilter leaves open (it calls no close
 * when it stops); a callback that comes after answers TEMPFAIL untouched.
 */
#include "config.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <libmilter/mfapi.h>

#include "util.h"
#include "buf.h"
#include "log.h"
#include "spool.h"
#include "smtp_reply.h"
#include "filter.h"
#include "pmilter.h"

/* What the callbacks need of the MTA, per stage (smfi_setsymlist). */
#define PMILTER_MACROS_CONNECT	"j {daemon_addr} {daemon_port} {if_addr} {client_ptr}"
#define PMILTER_MACROS_HELO	"{tls_version} {cipher} {cert_subject}"
#define PMILTER_MACROS_MAIL	"i {auth_type} {auth_authen}"
#define PMILTER_MACROS_RCPT	"i"
#define PMILTER_MACROS_EOM	"i"
/* The actions pmilter_ops may need. */
#define PMILTER_ACTIONS		(SMFIF_ADDHDRS | SMFIF_CHGHDRS | SMFIF_CHGBODY | \
	SMFIF_ADDRCPT | SMFIF_ADDRCPT_PAR | SMFIF_DELRCPT | SMFIF_CHGFROM | SMFIF_QUARANTINE)
#define PMILTER_BODY_CHUNK	65535	/* octets per smfi_replacebody */

enum pmilter_result { PMILTER_ACCEPTED, PMILTER_QUARANTINED, PMILTER_REJECTED,
	PMILTER_TEMPFAIL, PMILTER_DISCARDED, PMILTER_ABORTED };
static const char *const pmilter_result_names[] = {
	"accepted", "quarantined", "rejected", "tempfail", "discarded", "aborted",
};

/* One MTA connection: an SMTP session as the MTA reports it. */
struct pmilter_conn {
	struct pmilter_conn *prev, *next;	/* the registry */
	uint64_t id;
	char idstr[16];
	struct pmilter_loop *loop;
	struct filter_state *st;
	struct pmilter_sess ps;
	unsigned ntxn;
	/* The transaction, between MAIL and its end. */
	bool in_txn;
	struct filter_txn txn;
	bool mta_qid;		/* txn.queue_id is the MTA's ({i}), not ours */
	struct buf raw;		/* the header block as received, until eoh */
	struct spool *spool;	/* the message: that block, the empty line, the body */
	size_t size;		/* octets of it so far */
	unsigned long long start_ms;
};

static const struct pmilter_server *pmilter_srv;
static atomic_uint_fast64_t pmilter_ids;

/* The registry, and the gate the shutdown closes. */
static pthread_mutex_t pmilter_reg_mtx = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t pmilter_reg_cond = PTHREAD_COND_INITIALIZER;
static struct pmilter_conn *pmilter_reg;
static unsigned pmilter_running;	/* callbacks in progress */
static bool pmilter_stopping;

/* ---- the gate ---- */

/* pmilter_enter - a callback starts; false once the shutdown began */
static bool
pmilter_enter(void)
{
	bool ok;

	pthread_mutex_lock(&pmilter_reg_mtx);
	if ((ok = !pmilter_stopping))
		pmilter_running++;
	pthread_mutex_unlock(&pmilter_reg_mtx);
	return ok;
}

/* pmilter_leave - a callback ends */
static void
pmilter_leave(void)
{
	pthread_mutex_lock(&pmilter_reg_mtx);
	if (--pmilter_running == 0)
		pthread_cond_broadcast(&pmilter_reg_cond);
	pthread_mutex_unlock(&pmilter_reg_mtx);
}

/* pmilter_reg_add - a new connection in the registry */
static void
pmilter_reg_add(struct pmilter_conn *pc)
{
	pthread_mutex_lock(&pmilter_reg_mtx);
	pc->next = pmilter_reg;
	if (pmilter_reg != NULL)
		pmilter_reg->prev = pc;
	pmilter_reg = pc;
	pthread_mutex_unlock(&pmilter_reg_mtx);
}

/* pmilter_reg_remove - a connection leaves the registry */
static void
pmilter_reg_remove(struct pmilter_conn *pc)
{
	pthread_mutex_lock(&pmilter_reg_mtx);
	if (pc->prev != NULL)
		pc->prev->next = pc->next;
	else
		pmilter_reg = pc->next;
	if (pc->next != NULL)
		pc->next->prev = pc->prev;
	pthread_mutex_unlock(&pmilter_reg_mtx);
}

/* ---- connections ---- */

/* pmilter_macro - libmilter's macro look-up, as pmilter_map reads macros */
static const char *
pmilter_macro(void *arg, const char *name)
{
	return smfi_getsymval(arg, (char *)name);
}

/* pmilter_conn_new - the connection's state, its loop and the chain's per-session state */
static struct pmilter_conn *
pmilter_conn_new(SMFICTX *ctx)
{
	struct pmilter_conn *pc = xcalloc(1, sizeof(*pc));

	pc->id = atomic_fetch_add(&pmilter_ids, 1);
	snprintf(pc->idstr, sizeof(pc->idstr), SESSION_ID_FMT, SESSION_ID(pc->id));
	pmilter_sess_init(&pc->ps, pc->id, pmilter_srv->conf, pmilter_srv->l->role);
	pc->loop = pmilter_loop_take(pmilter_srv->loops);
	pc->st = filter_state_new(pmilter_srv->chain);
	filter_txn_init(&pc->txn);
	buf_init(&pc->raw);
	pmilter_reg_add(pc);
	smfi_setpriv(ctx, pc);
	return pc;
}

/* pmilter_run - one stage of the chain for the connection */
static void
pmilter_run(struct pmilter_conn *pc, enum filter_stage stage, const char *arg,
    struct filter_result *res)
{
	struct filter_ctx fc;

	memset(&fc, 0, sizeof(fc));
	fc.sess = &pc->ps.fs;
	fc.txn = pc->in_txn ? &pc->txn : NULL;
	pmilter_loop_run(pc->loop, pc->st, stage, &fc, arg, res);
}

/* pmilter_reply - a reply for the MTA and the log: "550 5.7.1 text" */
static void
pmilter_reply(SMFICTX *ctx, const struct filter_reply *r, char *line, size_t size)
{
	char code[8], text[sizeof(r->text) * 2];

	snprintf(code, sizeof(code), "%d", r->code);
	pmilter_reply_text(r, text, sizeof(text));
	if (ctx != NULL && smfi_setreply(ctx, code, r->ecode[0] != '\0' ? (char *)r->ecode : NULL,
	    text) != MI_SUCCESS)
		log_warn("event=milter_setreply_failed code=%s", code);
	snprintf(line, size, "%d %s %s", r->code, r->ecode, r->text);
}

/* pmilter_table_reply - a reply of portier's table as the chain's */
static void
pmilter_table_reply(enum smtp_reply_id id, struct filter_reply *r)
{
	const struct smtp_reply_entry *e = smtp_reply_get(id);

	memset(r, 0, sizeof(*r));
	r->code = e->code;
	str_copy(r->ecode, e->ecode, sizeof(r->ecode));
	str_copy(r->text, e->text, sizeof(r->text));
}

/* pmilter_to_list - "<a>,<b>" for the summary line */
static void
pmilter_to_list(const struct filter_txn *txn, struct buf *b)
{
	char esc[1024];
	size_t i;

	for (i = 0; i < txn->nrcpts; i++)
		buf_printf(b, "%s<%s>", i ? "," : "", log_escape(esc, sizeof(esc), txn->rcpts[i],
		    strlen(txn->rcpts[i])));
	if (txn->nrcpts == 0)
		buf_puts(b, "none");
}

/*
 * pmilter_txn_end - the summary line, ABORT when the message goes nowhere
 * (not for a discard: the chain discarded it), and the transaction freed
 */
static void
pmilter_txn_end(struct pmilter_conn *pc, enum pmilter_result result, const char *who,
    const char *reply)
{
	char from[1024], helo[512], rep[1024];
	unsigned long long delay;
	struct filter_result res;
	struct buf to;

	if (!pc->in_txn)
		return;
	if (result == PMILTER_REJECTED || result == PMILTER_TEMPFAIL || result == PMILTER_ABORTED)
		pmilter_run(pc, FILTER_STAGE_ABORT, NULL, &res);
	buf_init(&to);
	pmilter_to_list(&pc->txn, &to);
	delay = now_ms() - pc->start_ms;
	log_info("id=%s event=txn txn=%u queue_id=%s client=%s helo=%s from=<%s> to=%s size=%zu "
	    "result=%s filter=%s reply=\"%s\" delay=%llu.%03llu filters=%s", pc->idstr, pc->ntxn,
	    pc->txn.queue_id, pc->ps.client_addr,
	    log_escape(helo, sizeof(helo), pc->ps.helo ? pc->ps.helo : "",
	    pc->ps.helo ? strlen(pc->ps.helo) : 0),
	    log_escape(from, sizeof(from), pc->txn.mail_from, strlen(pc->txn.mail_from)), to.data,
	    pc->size, pmilter_result_names[result], who != NULL ? who : "-",
	    log_escape(rep, sizeof(rep), reply, strlen(reply)), delay / 1000, delay % 1000,
	    filter_chain_names(pmilter_srv->chain)[0] ? filter_chain_names(pmilter_srv->chain) :
	    "none");
	buf_free(&to);
	filter_txn_reset(&pc->txn);
	spool_free(pc->spool);
	pc->spool = NULL;
	buf_free(&pc->raw);
	pc->in_txn = false;
}

/*
 * pmilter_answer - the chain's verdict for a stage as libmilter's; a
 * refusal or discard of the transaction ends it
 */
static sfsistat
pmilter_answer(SMFICTX *ctx, struct pmilter_conn *pc, enum filter_stage stage,
    const struct filter_result *res)
{
	char line[600];

	switch (res->verdict) {
	case FILTER_REJECT:
	case FILTER_TEMPFAIL:
		pmilter_reply(ctx, &res->reply, line, sizeof(line));
		if (stage != FILTER_STAGE_RCPT)
			pmilter_txn_end(pc, res->verdict == FILTER_REJECT ? PMILTER_REJECTED :
			    PMILTER_TEMPFAIL, res->filter, line);
		if (stage == FILTER_STAGE_CONNECT || stage == FILTER_STAGE_HELO)
			log_info("id=%s event=%s_refused filter=%s reply=\"%s\"", pc->idstr,
			    stage == FILTER_STAGE_CONNECT ? "connect" : "helo",
			    res->filter != NULL ? res->filter : "-", line);
		return res->verdict == FILTER_REJECT ? SMFIS_REJECT : SMFIS_TEMPFAIL;
	case FILTER_DISCARD:
		/* Session-wide: the chain discards each transaction at its MAIL. */
		if (stage == FILTER_STAGE_CONNECT || stage == FILTER_STAGE_HELO)
			return SMFIS_CONTINUE;
		pmilter_txn_end(pc, PMILTER_DISCARDED, res->filter, "discarded");
		return SMFIS_DISCARD;
	default:
		return SMFIS_CONTINUE;	/* CONTINUE; QUARANTINE marks the transaction */
	}
}

/* pmilter_conn_free - CLOSE through the chain, the loop given back */
static void
pmilter_conn_free(struct pmilter_conn *pc)
{
	struct filter_ctx fc;

	pmilter_txn_end(pc, PMILTER_ABORTED, NULL, "");
	memset(&fc, 0, sizeof(fc));
	fc.sess = &pc->ps.fs;
	filter_state_free(pc->st, &fc);
	pmilter_loop_give(pmilter_srv->loops, pc->loop);
	log_info("id=%s event=disconnect client=%s transactions=%u", pc->idstr, pc->ps.client_addr,
	    pc->ntxn);
	pmilter_sess_free(&pc->ps);
	free(pc);
}

/* ---- stages ---- */

/* pmilter_connect_stage - the client, then CONNECT */
static sfsistat
pmilter_connect_stage(SMFICTX *ctx, struct pmilter_conn *pc, const char *hostname,
    const struct sockaddr *sa)
{
	struct filter_result res;
	char esc[512];

	pmilter_sess_connect(&pc->ps, hostname, sa, pmilter_macro, ctx);
	log_info("id=%s event=connect client=%s name=%s mta=%s", pc->idstr, pc->ps.client_addr,
	    log_escape(esc, sizeof(esc), pc->ps.fs.client_name, strlen(pc->ps.fs.client_name)),
	    pc->ps.mta_name != NULL ? pc->ps.mta_name : "-");
	pmilter_run(pc, FILTER_STAGE_CONNECT, NULL, &res);
	return pmilter_answer(ctx, pc, FILTER_STAGE_CONNECT, &res);
}

/* pmilter_helo_stage - HELO (a new one ends a transaction) */
static sfsistat
pmilter_helo_stage(SMFICTX *ctx, struct pmilter_conn *pc, const char *helo)
{
	struct filter_result res;

	pmilter_txn_end(pc, PMILTER_ABORTED, NULL, "");
	pmilter_sess_helo(&pc->ps, helo, pmilter_macro, ctx);
	pmilter_run(pc, FILTER_STAGE_HELO, helo, &res);
	return pmilter_answer(ctx, pc, FILTER_STAGE_HELO, &res);
}

/*
 * pmilter_queue_id - the MTA's queue id ({i}) as the transaction's, once it
 * has one: Postfix makes it at the first valid RCPT (smtpd_delay_open_until_
 * valid_rcpt), so until then the id is ours, as portier's sessions make it
 */
static void
pmilter_queue_id(SMFICTX *ctx, struct pmilter_conn *pc)
{
	const char *qid;

	if (pc->mta_qid)
		return;
	if ((qid = smfi_getsymval(ctx, "i")) != NULL && *qid != '\0') {
		free(pc->txn.queue_id);
		pc->txn.queue_id = xstrdup(qid);
		pc->mta_qid = true;
	} else if (pc->txn.queue_id == NULL)
		pc->txn.queue_id = xasprintf("%s.%u", pc->idstr, pc->ntxn);
}

/* pmilter_txn_begin - MAIL opens a transaction */
static void
pmilter_txn_begin(SMFICTX *ctx, struct pmilter_conn *pc, char **argv)
{
	filter_txn_init(&pc->txn);
	pc->in_txn = true;
	pc->mta_qid = false;
	pc->ntxn++;
	pc->size = 0;
	pc->start_ms = now_ms();
	pmilter_queue_id(ctx, pc);
	pc->txn.mail_from = pmilter_addr(argv[0]);
	pc->txn.mail_params = pmilter_params(argv);
	buf_init(&pc->raw);
}

/* pmilter_envfrom_stage - AUTH for a new login, then MAIL */
static sfsistat
pmilter_envfrom_stage(SMFICTX *ctx, struct pmilter_conn *pc, char **argv)
{
	struct filter_result res;
	char line[600];

	pmilter_txn_end(pc, PMILTER_ABORTED, NULL, "");
	if (pmilter_sess_auth(&pc->ps, pmilter_macro, ctx)) {
		pmilter_run(pc, FILTER_STAGE_AUTH, pc->ps.auth_user, &res);
		if (res.verdict == FILTER_REJECT || res.verdict == FILTER_TEMPFAIL) {
			pmilter_reply(ctx, &res.reply, line, sizeof(line));
			log_info("id=%s event=auth_refused filter=%s reply=\"%s\"", pc->idstr,
			    res.filter != NULL ? res.filter : "-", line);
			return res.verdict == FILTER_REJECT ? SMFIS_REJECT : SMFIS_TEMPFAIL;
		}
	}
	pmilter_txn_begin(ctx, pc, argv);
	pmilter_run(pc, FILTER_STAGE_MAIL, pc->txn.mail_from, &res);
	return pmilter_answer(ctx, pc, FILTER_STAGE_MAIL, &res);
}

/* pmilter_envrcpt_stage - RCPT; an accepted recipient joins the transaction */
static sfsistat
pmilter_envrcpt_stage(SMFICTX *ctx, struct pmilter_conn *pc, char **argv)
{
	struct filter_txn *txn = &pc->txn;
	struct filter_result res;
	char *rcpt, *params;

	if (!pc->in_txn)
		return SMFIS_CONTINUE;
	pmilter_queue_id(ctx, pc);
	rcpt = pmilter_addr(argv[0]);
	params = pmilter_params(argv);
	txn->rcpt_params_cur = params;
	pmilter_run(pc, FILTER_STAGE_RCPT, rcpt, &res);
	txn->rcpt_params_cur = NULL;
	if (res.verdict == FILTER_CONTINUE || res.verdict == FILTER_QUARANTINE) {
		txn->rcpts = xreallocarray(txn->rcpts, txn->nrcpts + 1, sizeof(*txn->rcpts));
		txn->rcpt_params = xreallocarray(txn->rcpt_params, txn->nrcpts + 1,
		    sizeof(*txn->rcpt_params));
		txn->rcpts[txn->nrcpts] = rcpt;
		txn->rcpt_params[txn->nrcpts++] = params;
		return SMFIS_CONTINUE;
	}
	free(rcpt);
	free(params);
	return pmilter_answer(ctx, pc, FILTER_STAGE_RCPT, &res);
}

/* pmilter_refuse - end the transaction with a reply of portier's table */
static sfsistat
pmilter_refuse(SMFICTX *ctx, struct pmilter_conn *pc, enum smtp_reply_id id, const char *why)
{
	struct filter_result res;

	memset(&res, 0, sizeof(res));
	pmilter_table_reply(id, &res.reply);
	res.verdict = res.reply.code / 100 == 4 ? FILTER_TEMPFAIL : FILTER_REJECT;
	res.filter = why;
	return pmilter_answer(ctx, pc, FILTER_STAGE_DATA, &res);
}

/* pmilter_header_stage - a field of the message, within [server] max_header_size */
static sfsistat
pmilter_header_stage(SMFICTX *ctx, struct pmilter_conn *pc, const char *name,
    const char *value)
{
	const struct conf_limits *lim = &pmilter_srv->l->limits;

	if (!pc->in_txn)
		return SMFIS_CONTINUE;
	/* The block goes into the spool (and counts toward the size) at its end. */
	pmilter_header(&pc->txn, &pc->raw, name, value);
	if (pc->raw.len > lim->max_header_size)
		return pmilter_refuse(ctx, pc, R_HEADER_TOO_BIG, "max_header_size");
	if (pc->raw.len > lim->max_message_size)
		return pmilter_refuse(ctx, pc, R_SIZE_EXCEEDED, "max_message_size");
	return SMFIS_CONTINUE;
}

/* pmilter_spool_write - octets of the message into its spool */
static sfsistat
pmilter_spool_write(SMFICTX *ctx, struct pmilter_conn *pc, const void *p, size_t n)
{
	const char *err;

	if (pc->spool == NULL)
		pc->spool = spool_new(pmilter_srv->l->limits.spool_memory, NULL);
	pc->size += n;
	if (pc->size > pmilter_srv->l->limits.max_message_size)
		return pmilter_refuse(ctx, pc, R_SIZE_EXCEEDED, "max_message_size");
	if (!spool_write(pc->spool, p, n, &err)) {
		log_err("id=%s event=spool_error error=\"%s\"", pc->idstr, err);
		return pmilter_refuse(ctx, pc, R_LOCAL_ERROR, "spool");
	}
	return SMFIS_CONTINUE;
}

/* pmilter_eoh_stage - the header block ends: it starts the spool */
static sfsistat
pmilter_eoh_stage(SMFICTX *ctx, struct pmilter_conn *pc)
{
	sfsistat rc;

	if (!pc->in_txn || pc->spool != NULL)
		return SMFIS_CONTINUE;
	buf_puts(&pc->raw, "\r\n");
	rc = pmilter_spool_write(ctx, pc, pc->raw.data, pc->raw.len);
	pc->txn.body_offset = pc->raw.len;
	buf_free(&pc->raw);
	return rc;
}

/* pmilter_body_stage - a chunk of the body */
static sfsistat
pmilter_body_stage(SMFICTX *ctx, struct pmilter_conn *pc, const unsigned char *p, size_t n)
{
	sfsistat rc;

	if (!pc->in_txn)
		return SMFIS_CONTINUE;
	if (pc->spool == NULL && (rc = pmilter_eoh_stage(ctx, pc)) != SMFIS_CONTINUE)
		return rc;
	return pmilter_spool_write(ctx, pc, p, n);
}

/* pmilter_apply - one action at the MTA; MI_FAILURE when it refuses (not negotiated) */
static int
pmilter_apply(SMFICTX *ctx, const struct pmilter_op *op)
{
	size_t off, n;
	int rc = MI_SUCCESS;

	switch (op->kind) {
	case PMILTER_OP_ADD_HEADER:
		return smfi_addheader(ctx, op->name, op->value);
	case PMILTER_OP_INSERT_HEADER:
		return smfi_insheader(ctx, (int)op->index, op->name, op->value);
	case PMILTER_OP_CHANGE_HEADER:
		return smfi_chgheader(ctx, op->name, (int)op->index, op->value);
	case PMILTER_OP_REPLACE_BODY:
		for (off = 0; off < op->value_len && rc == MI_SUCCESS; off += n) {
			n = op->value_len - off < PMILTER_BODY_CHUNK ? op->value_len - off :
			    PMILTER_BODY_CHUNK;
			rc = smfi_replacebody(ctx, (unsigned char *)op->value + off, (int)n);
		}
		return op->value_len == 0 ? smfi_replacebody(ctx, (unsigned char *)"", 0) : rc;
	case PMILTER_OP_CHANGE_FROM:
		return smfi_chgfrom(ctx, op->name, op->params);
	case PMILTER_OP_ADD_RCPT:
		return op->params != NULL ? smfi_addrcpt_par(ctx, op->name, op->params) :
		    smfi_addrcpt(ctx, op->name);
	case PMILTER_OP_DELETE_RCPT:
		return smfi_delrcpt(ctx, op->name);
	}
	return MI_FAILURE;
}

/* pmilter_replaced_body - the body a filter put in place of the message's, as FINAL reads it */
static bool
pmilter_replaced_body(struct pmilter_conn *pc)
{
	struct filter_txn *txn = &pc->txn;
	struct spool *nb;
	const char *err;
	size_t i;

	for (i = txn->nedits; i-- > 0;) {
		if (txn->edits[i].kind != EDIT_REPLACE_BODY)
			continue;
		nb = spool_new(pmilter_srv->l->limits.spool_memory, NULL);
		if (!spool_write(nb, txn->edits[i].value, txn->edits[i].value_len, &err)) {
			log_err("id=%s event=spool_error error=\"%s\"", pc->idstr, err);
			spool_free(nb);
			return false;
		}
		spool_free(pc->spool);
		pc->spool = txn->body = nb;
		txn->body_offset = 0;
		break;
	}
	return true;
}

/*
 * pmilter_send - the composed block's actions at the MTA: false (logged)
 * when it refuses one
 */
static bool
pmilter_send(SMFICTX *ctx, struct pmilter_conn *pc, const struct buf *composed,
    const struct buf *head, size_t toplen)
{
	struct pmilter_ops ops;
	size_t i;
	bool ok = true;

	if (!pmilter_ops_build(&pc->txn, composed, head->data, toplen, &ops))
		log_warn("id=%s event=compose_mismatch queue_id=%s action=\"received fields kept\"",
		    pc->idstr, pc->txn.queue_id);
	for (i = 0; i < ops.n && ok; i++) {
		if (pmilter_apply(ctx, &ops.v[i]) != MI_SUCCESS) {
			log_err("id=%s event=milter_action_failed queue_id=%s action=%d name=%s "
			    "error=\"refused by the MTA (not negotiated?)\"", pc->idstr,
			    pc->txn.queue_id, (int)ops.v[i].kind,
			    ops.v[i].name != NULL ? ops.v[i].name : "-");
			ok = false;
		}
	}
	pmilter_ops_free(&ops);
	return ok;
}

/*
 * pmilter_final - FINAL on the block the MTA will hold (our results on top,
 * the edits applied), then all of it as actions: SMFIS_CONTINUE when the
 * message goes on, else the answer (the transaction ended)
 */
static sfsistat
pmilter_final(SMFICTX *ctx, struct pmilter_conn *pc, const char *authserv)
{
	struct filter_result res;
	struct buf composed, head;
	sfsistat rc = SMFIS_CONTINUE;
	size_t len0;

	buf_init(&composed);
	buf_init(&head);
	filter_compose_headers(&pc->txn, authserv, &composed);
	buf_append(&head, composed.data != NULL ? composed.data : "", composed.len);
	buf_puts(&head, "\r\n");
	len0 = head.len;
	if (!pmilter_replaced_body(pc)) {
		rc = pmilter_refuse(ctx, pc, R_LOCAL_ERROR, "spool");
		goto out;
	}
	pc->txn.body = pc->spool;
	pc->txn.head = &head;
	pmilter_run(pc, FILTER_STAGE_FINAL, NULL, &res);
	pc->txn.head = NULL;
	if (res.verdict == FILTER_REJECT || res.verdict == FILTER_TEMPFAIL ||
	    res.verdict == FILTER_DISCARD) {
		rc = pmilter_answer(ctx, pc, FILTER_STAGE_FINAL, &res);
		goto out;
	}
	/* The final stage prepends: what stands above the block composed is its. */
	if (!pmilter_send(ctx, pc, &composed, &head, head.len - len0))
		rc = pmilter_refuse(ctx, pc, R_LOCAL_ERROR, "milter-action");
out:
	buf_free(&composed);
	buf_free(&head);
	return rc;
}

/* pmilter_eom_stage - DATA, the edits, FINAL, and the verdict */
static sfsistat
pmilter_eom_stage(SMFICTX *ctx, struct pmilter_conn *pc)
{
	struct filter_txn *txn = &pc->txn;
	const char *authserv = pmilter_srv->authserv_id, *who;
	struct filter_result res;
	sfsistat rc;
	char *reason;

	if (!pc->in_txn)
		return SMFIS_CONTINUE;
	if (pc->spool == NULL && (rc = pmilter_eoh_stage(ctx, pc)) != SMFIS_CONTINUE)
		return rc;
	pmilter_queue_id(ctx, pc);
	txn->body = pc->spool;
	pmilter_run(pc, FILTER_STAGE_DATA, NULL, &res);
	if (res.verdict == FILTER_REJECT || res.verdict == FILTER_TEMPFAIL ||
	    res.verdict == FILTER_DISCARD)
		return pmilter_answer(ctx, pc, FILTER_STAGE_DATA, &res);
	who = res.filter;
	if (res.verdict == FILTER_QUARANTINE && txn->quarantine == NULL)
		txn->quarantine = xstrdup(who != NULL ? who : "filter");
	if (authserv == NULL)
		authserv = pc->ps.mta_name != NULL ? pc->ps.mta_name : pmilter_srv->conf->hostname;
	if ((rc = pmilter_final(ctx, pc, authserv)) != SMFIS_CONTINUE)
		return rc;
	if (txn->quarantine == NULL) {
		pmilter_txn_end(pc, PMILTER_ACCEPTED, who, "accepted");
		return SMFIS_CONTINUE;
	}
	reason = xstrdup(txn->quarantine);
	if (smfi_quarantine(ctx, reason) != MI_SUCCESS) {
		log_err("id=%s event=milter_action_failed queue_id=%s action=quarantine "
		    "error=\"refused by the MTA\"", pc->idstr, txn->queue_id);
		free(reason);
		return pmilter_refuse(ctx, pc, R_LOCAL_ERROR, "milter-action");
	}
	pmilter_txn_end(pc, PMILTER_QUARANTINED, who, reason);
	free(reason);
	return SMFIS_CONTINUE;
}

/* ---- libmilter's entry points: the gate, the connection, the stage ---- */

/* PMILTER_CALL - run expr for the connection behind ctx, inside the gate */
#define PMILTER_CALL(ctx, pc, expr) do {					\
	sfsistat rc_ = SMFIS_TEMPFAIL;						\
	if (!pmilter_enter())							\
		return SMFIS_TEMPFAIL;						\
	if (((pc) = smfi_getpriv(ctx)) != NULL)					\
		rc_ = (expr);							\
	pmilter_leave();							\
	return rc_;								\
} while (0)

/* pmilter_negotiate - our actions, exact header values, the macros we read */
static sfsistat
pmilter_negotiate(SMFICTX *ctx, unsigned long f0, unsigned long f1, unsigned long f2,
    unsigned long f3, unsigned long *pf0, unsigned long *pf1, unsigned long *pf2,
    unsigned long *pf3)
{
	(void)f2;
	(void)f3;
	if (!(f1 & SMFIP_HDR_LEADSPC)) {
		log_err("event=negotiate_refused error=\"the MTA does not send header values "
		    "as they are (SMFIP_HDR_LEADSPC); protocol 0x%lx\"", f1);
		return SMFIS_REJECT;
	}
	*pf0 = f0 & PMILTER_ACTIONS;
	if (f0 & SMFIF_SETSYMLIST) {
		*pf0 |= SMFIF_SETSYMLIST;
		if (smfi_setsymlist(ctx, SMFIM_CONNECT, PMILTER_MACROS_CONNECT) != MI_SUCCESS ||
		    smfi_setsymlist(ctx, SMFIM_HELO, PMILTER_MACROS_HELO) != MI_SUCCESS ||
		    smfi_setsymlist(ctx, SMFIM_ENVFROM, PMILTER_MACROS_MAIL) != MI_SUCCESS ||
		    smfi_setsymlist(ctx, SMFIM_ENVRCPT, PMILTER_MACROS_RCPT) != MI_SUCCESS ||
		    smfi_setsymlist(ctx, SMFIM_EOM, PMILTER_MACROS_EOM) != MI_SUCCESS)
			log_warn("event=negotiate_symlist_failed");
	}
	*pf1 = SMFIP_HDR_LEADSPC | (f1 & (SMFIP_NOUNKNOWN | SMFIP_NODATA));
	*pf2 = 0;
	*pf3 = 0;
	return SMFIS_CONTINUE;
}

/* pmilter_connect - a new SMTP session at the MTA */
static sfsistat
pmilter_connect(SMFICTX *ctx, char *hostname, _SOCK_ADDR *sa)
{
	struct pmilter_conn *pc;
	sfsistat rc;

	if (!pmilter_enter())
		return SMFIS_TEMPFAIL;
	if ((pc = smfi_getpriv(ctx)) == NULL)
		pc = pmilter_conn_new(ctx);
	rc = pmilter_connect_stage(ctx, pc, hostname, sa);
	pmilter_leave();
	return rc;
}

static sfsistat
pmilter_helo(SMFICTX *ctx, char *helo)
{
	struct pmilter_conn *pc;

	PMILTER_CALL(ctx, pc, pmilter_helo_stage(ctx, pc, helo));
}

static sfsistat
pmilter_envfrom(SMFICTX *ctx, char **argv)
{
	struct pmilter_conn *pc;

	PMILTER_CALL(ctx, pc, pmilter_envfrom_stage(ctx, pc, argv));
}

static sfsistat
pmilter_envrcpt(SMFICTX *ctx, char **argv)
{
	struct pmilter_conn *pc;

	PMILTER_CALL(ctx, pc, pmilter_envrcpt_stage(ctx, pc, argv));
}

static sfsistat
pmilter_header_cb(SMFICTX *ctx, char *name, char *value)
{
	struct pmilter_conn *pc;

	PMILTER_CALL(ctx, pc, pmilter_header_stage(ctx, pc, name, value));
}

static sfsistat
pmilter_eoh(SMFICTX *ctx)
{
	struct pmilter_conn *pc;

	PMILTER_CALL(ctx, pc, pmilter_eoh_stage(ctx, pc));
}

static sfsistat
pmilter_body(SMFICTX *ctx, unsigned char *p, size_t n)
{
	struct pmilter_conn *pc;

	PMILTER_CALL(ctx, pc, pmilter_body_stage(ctx, pc, p, n));
}

static sfsistat
pmilter_eom(SMFICTX *ctx)
{
	struct pmilter_conn *pc;

	PMILTER_CALL(ctx, pc, pmilter_eom_stage(ctx, pc));
}

/* pmilter_abort_stage - the MTA dropped the transaction (RSET, a refusal, the client left) */
static sfsistat
pmilter_abort_stage(struct pmilter_conn *pc)
{
	pmilter_txn_end(pc, PMILTER_ABORTED, NULL, "");
	return SMFIS_CONTINUE;
}

static sfsistat
pmilter_abort(SMFICTX *ctx)
{
	struct pmilter_conn *pc;

	PMILTER_CALL(ctx, pc, pmilter_abort_stage(pc));
}

/* pmilter_close - the SMTP session ended (libmilter may start another on ctx) */
static sfsistat
pmilter_close(SMFICTX *ctx)
{
	struct pmilter_conn *pc;

	if (!pmilter_enter())
		return SMFIS_CONTINUE;
	if ((pc = smfi_getpriv(ctx)) != NULL) {
		smfi_setpriv(ctx, NULL);
		pmilter_reg_remove(pc);
		pmilter_conn_free(pc);
	}
	pmilter_leave();
	return SMFIS_CONTINUE;
}

/* pmilter_cb_desc - the filter description smfi_register takes */
void
pmilter_cb_desc(const struct pmilter_server *srv, struct smfiDesc *desc)
{
	pmilter_srv = srv;
	atomic_store(&pmilter_ids, ((uint64_t)time(NULL) << 20) ^ ((uint64_t)getpid() << 44));
	memset(desc, 0, sizeof(*desc));
	desc->xxfi_name = "portier-milter";
	desc->xxfi_version = SMFI_VERSION;
	desc->xxfi_flags = PMILTER_ACTIONS | SMFIF_SETSYMLIST;
	desc->xxfi_connect = pmilter_connect;
	desc->xxfi_helo = pmilter_helo;
	desc->xxfi_envfrom = pmilter_envfrom;
	desc->xxfi_envrcpt = pmilter_envrcpt;
	desc->xxfi_header = pmilter_header_cb;
	desc->xxfi_eoh = pmilter_eoh;
	desc->xxfi_body = pmilter_body;
	desc->xxfi_eom = pmilter_eom;
	desc->xxfi_abort = pmilter_abort;
	desc->xxfi_close = pmilter_close;
	desc->xxfi_negotiate = pmilter_negotiate;
}

/* pmilter_cb_shutdown - close the gate, wait for the callbacks, close what is left */
bool
pmilter_cb_shutdown(unsigned drain_seconds)
{
	struct pmilter_conn *pc;
	struct timespec until;
	unsigned left;
	bool idle;

	clock_gettime(CLOCK_REALTIME, &until);
	until.tv_sec += drain_seconds;
	pthread_mutex_lock(&pmilter_reg_mtx);
	pmilter_stopping = true;
	while (pmilter_running > 0 &&
	    pthread_cond_timedwait(&pmilter_reg_cond, &pmilter_reg_mtx, &until) == 0)
		;
	left = pmilter_running;
	idle = left == 0;
	pthread_mutex_unlock(&pmilter_reg_mtx);
	if (!idle) {
		log_warn("event=shutdown state=callbacks_running count=%u", left);
		return false;
	}
	/* Nobody else touches the registry now. */
	while ((pc = pmilter_reg) != NULL) {
		pmilter_reg = pc->next;
		pmilter_conn_free(pc);
	}
	return true;
}
