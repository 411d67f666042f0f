/*
 * ratelimit.h - the "ratelimit" filter: connections, messages and
 * recipients per client address, client network, AUTH login and sender
 * domain over sliding windows, counted in the shared-state store (state.h:
 * this process's memory, or Redis for a fleet).  See ratelimit.c and
 * portier.conf(5).
 */
#ifndef PORTIER_RATELIMIT_H
#define PORTIER_RATELIMIT_H

#include "filter.h"

/* What a key may keep of a login or a domain as it is; longer ones are hashed */
#define RATELIMIT_WHAT_MAX	100

extern const struct filter_ops ratelimit_ops;

#endif
