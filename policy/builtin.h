/*
 * builtin.h - the filters built into portier, registered by name.
 */
#ifndef PORTIER_BUILTIN_H
#define PORTIER_BUILTIN_H

#include "filter.h"
#include "smtp_reply.h"

/* filter_builtins_register - make every built-in filter known to filter_lookup */
void filter_builtins_register(void);

/*
 * filter_builtin_refuse - fill r with the session's table reply id (no "%s"
 * in its text) and return FILTER_REJECT: a built-in policy refuses in the
 * very words the session used when the decision was its own.
 */
enum filter_verdict filter_builtin_refuse(struct filter_reply *r, enum smtp_reply_id id);

/*
 * filter_builtin_no_keys - for an inline filter with nothing to configure:
 * true when its section is absent or empty, else false and "takes no keys"
 * in *err_r.  Not even the chain's timeout and default_action: a filter that
 * never waits or fails would ignore them, and a key that does nothing is an
 * error (a default_action = accept must not look like it relaxes a policy).
 */
bool filter_builtin_no_keys(const struct conf_section *sec, char **err_r);

#endif
