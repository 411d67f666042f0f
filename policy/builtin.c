/*
 * builtin.c - the list of built-in filters.  A filter of policy/ or filters/
 * is known to "filters =" once it is registered here.
 */
#include "config.h"

#include "filter.h"
#include "builtin.h"

/* filter_builtins_register - register every built-in filter (idempotent) */
void
filter_builtins_register(void)
{
}
