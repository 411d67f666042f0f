/*
 * builtin.c - the list of built-in filters.  A filter of policy/ or filters/
 * is known to "filters =" once it is registered here.
 */
#include "config.h"

#include <assert.h>
#include <string.h>

#include "util.h"
#include "filter.h"
#include "auth_enforce.h"
#include "port25.h"
#include "helo_check.h"
#include "rdns_check.h"
#include "greylist.h"
#include "spf.h"
#include "dkim_verify.h"
#include "dkim_sign.h"
#include "dmarc.h"
#include "dnsbl.h"
#include "policyd.h"
#include "milter.h"
#include "ratelimit.h"
#include "builtin.h"

/* filter_builtins_register - register every built-in filter (idempotent) */
void
filter_builtins_register(void)
{
	filter_register(&port25_ops);
	filter_register(&auth_enforce_ops);
	filter_register(&helo_check_ops);
	filter_register(&rdns_check_ops);
	filter_register(&spf_ops);
	filter_register(&dkim_verify_ops);
	filter_register(&dkim_sign_ops);
	filter_register(&dmarc_ops);
	filter_register(&dnsbl_ops);
	filter_register(&policyd_ops);
	filter_register(&milter_ops);
	filter_register(&ratelimit_ops);
	filter_register(&greylist_ops);
}

/* filter_builtin_refuse - a table reply as a filter's REJECT */
enum filter_verdict
filter_builtin_refuse(struct filter_reply *r, enum smtp_reply_id id)
{
	const struct smtp_reply_entry *e = smtp_reply_get(id);

	assert(e->code / 100 == 5 && strchr(e->text, '%') == NULL);
	r->code = e->code;
	str_copy(r->ecode, e->ecode != NULL ? e->ecode : "", sizeof(r->ecode));
	str_copy(r->text, e->text, sizeof(r->text));
	return FILTER_REJECT;
}

/* filter_builtin_no_keys - a [filter NAME] section with nothing in it, or none */
bool
filter_builtin_no_keys(const struct conf_section *sec, char **err_r)
{
	if (sec == NULL || sec->nkv == 0)
		return true;
	*err_r = xasprintf("takes no keys, not even timeout or default_action: it never waits "
	    "or fails (\"%s\" at line %d)", sec->kv[0].key, sec->kv[0].line);
	return false;
}
