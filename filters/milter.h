/*
 * milter.h - the milter:NAME filter, the MTA side of the milter protocol
 * (filters/milter.c).
 */
#ifndef PORTIER_MILTER_H
#define PORTIER_MILTER_H

#include "filter.h"

extern const struct filter_ops milter_ops;

#endif
