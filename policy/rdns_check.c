/*
 * rdns_check.c - the "rdns-check" filter: refuse clients without a
 * hostname at CONNECT, as Postfix's reject_unknown_client_hostname
 * (require = fcrdns, the default: the name must map back to the address)
 * or reject_unknown_reverse_client_hostname (require = ptr: a PTR record
 * suffices).  It judges the session's own reverse lookup (reverse_lookup,
 * the listener's; conf.c refuses the filter on a listener without it):
 *   no name                   550 5.7.25 (RFC 7372)
 *   the lookup failed for now 450 4.7.25 (SERVFAIL, a resolver error, a
 *                             timeout): the client retries later
 * logged as event=rdns_refused with the lookup's result=.
 *
 * Inline and cheap: no query of its own.  The instance is immutable after
 * configure.  Must never refuse a client whose lookup gave what require
 * asks for.
 */
#include "config.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "log.h"
#include "rdns.h"
#include "util.h"
#include "filter.h"
#include "rdns_check.h"

enum rdns_check_require { RDNS_CHECK_FCRDNS, RDNS_CHECK_PTR };

struct rdns_check {
	enum rdns_check_require require;
};

/* rdns_check_configure - [filter rdns-check]: require = fcrdns | ptr */
static void *
rdns_check_configure(const struct conf *conf, const struct conf_section *sec, char **err_r)
{
	struct rdns_check *c = xcalloc(1, sizeof(*c));
	size_t i;

	(void)conf;
	c->require = RDNS_CHECK_FCRDNS;
	for (i = 0; sec != NULL && i < sec->nkv; i++) {
		const struct conf_kv *kv = &sec->kv[i];

		if (strcmp(kv->key, "require") == 0 && strcmp(kv->value, "fcrdns") == 0)
			c->require = RDNS_CHECK_FCRDNS;
		else if (strcmp(kv->key, "require") == 0 && strcmp(kv->value, "ptr") == 0)
			c->require = RDNS_CHECK_PTR;
		else {
			*err_r = strcmp(kv->key, "require") == 0 ?
			    xasprintf("require = \"%s\" at line %d: expected fcrdns or ptr",
			    kv->value, kv->line) :
			    xasprintf("unknown key \"%s\" at line %d; rdns-check takes require",
			    kv->key, kv->line);
			free(c);
			return NULL;
		}
	}
	return c;
}

/* rdns_check_destroy - the instance */
static void
rdns_check_destroy(void *inst)
{
	free(inst);
}

/* rdns_check_connect - the session's lookup against require */
static enum filter_verdict
rdns_check_connect(void *inst, struct filter_ctx *ctx, struct filter_reply *r)
{
	const struct rdns_check *c = inst;
	const struct filter_session *sess = ctx->sess;
	const char *res = sess->client_rdns;
	bool temp;

	/* No lookup ran: a client that is no IP address (conf.c keeps reverse_lookup on). */
	if (res == NULL || strcmp(res, "verified") == 0 ||
	    (c->require == RDNS_CHECK_PTR && strcmp(res, "unverified") == 0))
		return FILTER_CONTINUE;
	temp = strcmp(res, "tempfail") == 0 || strcmp(res, "timeout") == 0;
	log_info("id=" SESSION_ID_FMT " event=rdns_refused client=%s ptr=%s result=%s require=%s",
	    SESSION_ID(sess->id), sess->client_addr, sess->client_ptr ? sess->client_ptr : "none",
	    res, c->require == RDNS_CHECK_PTR ? "ptr" : "fcrdns");
	r->code = temp ? 450 : 550;
	str_copy(r->ecode, temp ? "4.7.25" : "5.7.25", sizeof(r->ecode));
	snprintf(r->text, sizeof(r->text), "Client host rejected: cannot find your %shostname, "
	    "[%s]", c->require == RDNS_CHECK_PTR ? "reverse " : "", sess->client_addr);
	return temp ? FILTER_TEMPFAIL : FILTER_REJECT;
}

const struct filter_ops rdns_check_ops = {
	.name = "rdns-check",
	.configure = rdns_check_configure,
	.destroy = rdns_check_destroy,
	.connect = rdns_check_connect,
};
