/*
 * auth_enforce.h - the submission roles' policy as a filter: "auth-enforce"
 * (see auth_enforce.c).
 */
#ifndef PORTIER_AUTH_ENFORCE_H
#define PORTIER_AUTH_ENFORCE_H

#include "filter.h"

extern const struct filter_ops auth_enforce_ops;

#endif
