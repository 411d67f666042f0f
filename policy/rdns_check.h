/*
 * rdns_check.h - the "rdns-check" filter: clients without a hostname (see rdns_check.c).
 */
#ifndef PORTIER_RDNS_CHECK_H
#define PORTIER_RDNS_CHECK_H

#include "filter.h"

extern const struct filter_ops rdns_check_ops;

#endif
