/*
 * builtin.h - the filters built into portier, registered by name.
 */
#ifndef PORTIER_BUILTIN_H
#define PORTIER_BUILTIN_H

/* filter_builtins_register - make every built-in filter known to filter_lookup */
void filter_builtins_register(void);

#endif
