/*
 * helo_check.h - the "helo-check" filter: HELO/EHLO name checks (see helo_check.c).
 */
#ifndef PORTIER_HELO_CHECK_H
#define PORTIER_HELO_CHECK_H

#include "filter.h"

extern const struct filter_ops helo_check_ops;

#endif
