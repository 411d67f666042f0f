/*
 * cidr.h - IPv4 and IPv6 networks ("ADDR" or "ADDR/PREFIX") and whether a
 * socket address lies inside one.
 *
 * Pure functions: no I/O, no allocation.  An IPv4-mapped IPv6 address
 * (::ffff:192.0.2.1, what a [::] socket reports for an IPv4 peer) is
 * matched as the IPv4 address it carries.
 */
#ifndef PORTIER_CIDR_H
#define PORTIER_CIDR_H

#include <stdbool.h>
#include <stddef.h>
#include <sys/socket.h>

struct cidr {
	int af;			/* AF_INET (4 octets of addr) or AF_INET6 (16) */
	unsigned char addr[16];	/* network order */
	unsigned prefix;	/* bits */
};

/* cidr_parse - "ADDR" or "ADDR/PREFIX" (decimal, at most 32 or 128) into *n; false if not one */
bool cidr_parse(const char *s, struct cidr *n);
/* cidr_contains - sa (AF_INET, AF_INET6, mapped) inside n; false for other families */
bool cidr_contains(const struct cidr *n, const struct sockaddr *sa);
/* cidr_any - sa inside one of the n networks of v */
bool cidr_any(const struct cidr *v, size_t n, const struct sockaddr *sa);
/*
 * cidr_of - the network of sa's address (IPv4 prefix4 bits long, IPv6
 * prefix6; mapped counts as IPv4), host bits and padding zero, so that two
 * results compare and hash by their octets; false for other families
 */
bool cidr_of(const struct sockaddr *sa, unsigned prefix4, unsigned prefix6, struct cidr *n);
/* cidr_text - n as "ADDR/PREFIX" ("192.0.2.0/24"); false if it does not fit */
bool cidr_text(const struct cidr *n, char *out, size_t size);

#endif
