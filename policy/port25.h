/*
 * port25.h - the mx role's policy as a filter: "port25" (see port25.c).
 */
#ifndef PORTIER_PORT25_H
#define PORTIER_PORT25_H

#include "filter.h"

extern const struct filter_ops port25_ops;

struct sockaddr;
/* port25_subscriber - is sa inside the subscriber networks of a port25 instance? */
bool port25_subscriber(const void *inst, const struct sockaddr *sa);

#endif
