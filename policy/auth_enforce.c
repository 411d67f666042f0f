/*
 * auth_enforce.c - the submission roles' policy as a filter, "auth-enforce":
 * AUTH before MAIL, the envelope sender and every From: owned by the login.
 *
 * A role implies it at the head of its chain (server.c): a submission or
 * submissions listener runs it first whether or not "filters =" lists it,
 * and nothing removes it (conf.c refuses it on an mx listener, an instance
 * of it, or "-auth-enforce").  It runs even on a transaction another filter
 * discarded (ops.safety), so a discarded transaction is refused where a kept
 * one would be.
 *
 * Decisions, in the very replies the session gave when they were its own:
 *   MAIL  530 5.7.0 authentication required, without a login; 553 5.7.1
 *         sender address not owned, when the login may not send as the
 *         envelope sender (sender_login_allowed; <> always may).
 *   DATA  553 5.7.1 From: header address not owned, at the first From:
 *         field (header callback, any case of the name) whose mailboxes are
 *         not all the login's or that does not parse as a mailbox-list we
 *         trust (sender_login_check_from).
 * What stays in the session, being protocol: AUTH offered and accepted only
 * under TLS, and on submission listeners only; the AUTH exchange itself; the
 * ESMTP AUTH= parameter of MAIL.  A MAIL is parsed before the filters see
 * it: a malformed one is answered with its syntax error first.  The session
 * counts each REJECT at MAIL toward max_errors, as it did.
 *
 * The instance owns the [auth] sender_login_map, loaded by configure (NULL:
 * no map, a login owns the address it is); it is immutable afterwards and
 * may be read from any thread.  No per-session state, no allocation per
 * call.  Never logs AUTH data; logins and addresses are escaped.
 */
#include "config.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "util.h"
#include "buf.h"
#include "log.h"
#include "smtp_parse.h"
#include "filter.h"
#include "builtin.h"
#include "sender_login.h"
#include "auth_enforce.h"

#define AUTH_ENFORCE_ESC	600	/* escaped login in a log line */

struct auth_enforce {
	struct sender_login_map *senders;	/* NULL: no sender_login_map */
};

/* auth_enforce_configure - load the sender map; the section takes no keys */
static void *
auth_enforce_configure(const struct conf *conf, const struct conf_section *sec, char **err_r)
{
	struct auth_enforce *ae;
	struct buf errors;

	if (!filter_builtin_no_keys(sec, err_r))
		return NULL;
	ae = xcalloc(1, sizeof(*ae));
	if (conf == NULL || conf->auth_sender_login_map == NULL)
		return ae;
	buf_init(&errors);
	ae->senders = sender_login_map_load(conf->auth_sender_login_map, &errors);
	if (ae->senders == NULL) {
		while (errors.len > 0 && errors.data[errors.len - 1] == '\n')
			errors.data[--errors.len] = '\0';
		*err_r = xasprintf("[auth] sender_login_map: %s",
		    errors.len > 0 ? errors.data : "cannot load");
		buf_free(&errors);
		free(ae);
		return NULL;
	}
	buf_free(&errors);
	return ae;
}

/* auth_enforce_destroy - free the map with the instance */
static void
auth_enforce_destroy(void *inst)
{
	struct auth_enforce *ae = inst;

	sender_login_map_free(ae->senders);
	free(ae);
}

/* auth_enforce_mail - a login, and a sender it owns */
static enum filter_verdict
auth_enforce_mail(void *inst, struct filter_ctx *ctx, const char *from, struct filter_reply *r)
{
	const struct auth_enforce *ae = inst;
	const struct filter_session *sess = ctx->sess;
	char esc[SMTP_PARSE_ADDR_SIZE * 4], uesc[AUTH_ENFORCE_ESC];

	if (sess->auth_user == NULL)
		return filter_builtin_refuse(r, R_AUTH_REQUIRED);
	if (sender_login_allowed(ae->senders, sess->auth_user, from))
		return FILTER_CONTINUE;
	log_info("id=" SESSION_ID_FMT " event=sender_login_mismatch user=%s from=<%s>",
	    SESSION_ID(sess->id),
	    log_escape(uesc, sizeof(uesc), sess->auth_user, strlen(sess->auth_user)),
	    log_escape(esc, sizeof(esc), from, strlen(from)));
	return filter_builtin_refuse(r, R_SENDER_NOT_OWNED);
}

/* auth_enforce_header - every From: field belongs to the login */
static enum filter_verdict
auth_enforce_header(void *inst, struct filter_ctx *ctx, const char *name, const char *value,
    struct filter_reply *r)
{
	const struct auth_enforce *ae = inst;
	const char *user = ctx->sess->auth_user;
	enum sender_login_from st;
	char uesc[AUTH_ENFORCE_ESC];

	/* As the session did: only a login has From: fields to own (MAIL wants one). */
	if (user == NULL || str_casecmp(name, "From") != 0)
		return FILTER_CONTINUE;
	st = sender_login_check_from(ae->senders, user, value, strlen(value), NULL);
	if (st == SENDER_LOGIN_FROM_OK)
		return FILTER_CONTINUE;
	log_info("id=" SESSION_ID_FMT " event=from_login_mismatch user=%s result=%s",
	    SESSION_ID(ctx->sess->id), log_escape(uesc, sizeof(uesc), user, strlen(user)),
	    sender_login_from_name(st));
	return filter_builtin_refuse(r, R_FROM_NOT_OWNED);
}

const struct filter_ops auth_enforce_ops = {
	.name = "auth-enforce",
	.safety = true,
	.configure = auth_enforce_configure,
	.destroy = auth_enforce_destroy,
	.mail = auth_enforce_mail,
	.header = auth_enforce_header,
};
