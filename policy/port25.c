/*
 * port25.c - the mx role's policy as a filter, "port25": mail only for
 * local_domains, never relayed, no AUTH.
 *
 * A role implies it at the head of its chain (server.c): an mx listener
 * runs it first whether or not "filters =" lists it, and nothing removes it
 * (conf.c refuses it on another role, an instance of it, or "-port25").  It
 * runs even on a transaction another filter discarded (ops.safety), so a
 * discarded transaction is refused where a kept one would be.
 *
 * Decisions, in the very replies the session gave when they were its own:
 *   RCPT  550 5.7.1 relay access denied, unless the domain is one of
 *         local_domains (case-insensitive, a root dot ignored, never an
 *         address literal) and the local part carries no routing of its own:
 *         '%' (percent hack), '!' (bang path) and '@' (quoted) would let a
 *         backend that honours them (Postfix's allow_percent_hack and
 *         swap_bangpath are on by default) relay for us.  Source routes never
 *         reach a filter: the parser drops them (RFC 5321 4.1.1.3), so
 *         <@example.test:u@foreign.test> is judged as u@foreign.test.
 *         <postmaster> arrives as the session's postmaster@<first local
 *         domain>, which passes; without local_domains as
 *         postmaster@<hostname>, taken as such (RFC 5321 4.5.1).
 *   AUTH  503 5.5.1 authentication not enabled.  The session refuses the
 *         AUTH command on mx itself, before reading any credential: AUTH is
 *         not advertised there, and an extension the server did not offer
 *         is a protocol matter (and a filter's AUTH stage only runs after a
 *         login).  This callback makes the policy whole: should an AUTH
 *         stage ever reach an mx chain, it is refused.
 * The session counts each REJECT at RCPT toward max_errors, as it did.
 *
 * Inline and cheap: per RCPT one scan of the address and a look-up in
 * local_domains, no allocation, no per-session state.  The instance is
 * immutable: any thread may call it.  Must never accept a recipient the
 * rules above refuse.
 */
#include "config.h"

#include <stdio.h>
#include <string.h>

#include "util.h"
#include "log.h"
#include "smtp_parse.h"
#include "filter.h"
#include "builtin.h"
#include "port25.h"

#define PORT25_POSTMASTER	"postmaster@"

/* The one instance, never written: port25 has nothing to configure. */
static char port25_instance[] = "port25";

/* port25_configure - a [filter port25] section may exist but takes no keys */
static void *
port25_configure(const struct conf *conf, const struct conf_section *sec, char **err_r)
{
	(void)conf;
	return filter_builtin_no_keys(sec, err_r) ? port25_instance : NULL;
}

/* port25_postmaster - the session's postmaster@<hostname>, without local_domains */
static bool
port25_postmaster(const struct conf *c, const char *rcpt)
{
	size_t n = sizeof(PORT25_POSTMASTER) - 1;

	return c->nlocal_domains == 0 && strncmp(rcpt, PORT25_POSTMASTER, n) == 0 &&
	    strcmp(rcpt + n, c->hostname) == 0;
}

/* port25_local - is rcpt ("local@domain", canonical) ours, with no routing in it? */
static bool
port25_local(const struct conf *c, const char *rcpt)
{
	const char *at = strrchr(rcpt, '@');

	if (at == NULL)
		return false;
	/* The first of '%', '!', '@' must be the '@' before the domain. */
	if (rcpt + strcspn(rcpt, "%!@") != at)
		return false;
	if (at[1] == '[')
		return false;	/* an address literal: never one of local_domains */
	return conf_is_local_domain(c, at + 1) || port25_postmaster(c, rcpt);
}

/* port25_rcpt - relay control: only local recipients */
static enum filter_verdict
port25_rcpt(void *inst, struct filter_ctx *ctx, const char *rcpt, struct filter_reply *r)
{
	const struct filter_session *sess = ctx->sess;
	char esc[SMTP_PARSE_ADDR_SIZE * 4];

	(void)inst;
	if (port25_local(sess->conf, rcpt))
		return FILTER_CONTINUE;
	log_info("id=" SESSION_ID_FMT " event=relay_denied client=%s rcpt=<%s>",
	    SESSION_ID(sess->id), sess->client_addr, log_escape(esc, sizeof(esc), rcpt,
	    strlen(rcpt)));
	return filter_builtin_refuse(r, R_RELAY_DENIED);
}

/* port25_auth - no AUTH on port 25 */
static enum filter_verdict
port25_auth(void *inst, struct filter_ctx *ctx, const char *user, struct filter_reply *r)
{
	(void)inst, (void)ctx, (void)user;
	return filter_builtin_refuse(r, R_AUTH_NOT_OFFERED);
}

const struct filter_ops port25_ops = {
	.name = "port25",
	.safety = true,
	.configure = port25_configure,
	.auth = port25_auth,
	.rcpt = port25_rcpt,
};
