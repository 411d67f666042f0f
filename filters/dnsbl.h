/*
 * dnsbl.h - the "dnsbl" filter: postscreen-style scoring of the client
 * address against DNS block and allow lists, and the pieces of it the unit
 * tests drive on their own: the zone list parser (Postfix's
 * postscreen_dnsbl_sites syntax), the answer filter and the query name.
 *
 * Nothing here does I/O; what the parser returns is the caller's (free it
 * with dnsbl_sites_free).
 */
#ifndef PORTIER_DNSBL_H
#define PORTIER_DNSBL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "filter.h"

struct resolver_answer;
struct sockaddr;

extern const struct filter_ops dnsbl_ops;

/* The longest zone: the 64-octet nibble prefix of an IPv6 address fits before it (253). */
#define DNSBL_ZONE_MAX		(253 - 64)
/* A query name in text and its NUL */
#define DNSBL_QNAME_BUF		254
/* |weight| and threshold at most this: a sum of weights never overflows */
#define DNSBL_WEIGHT_MAX	100000

/* One "zone[=filter][*weight]" of the list. */
struct dnsbl_site {
	size_t zone;		/* index into dnsbl_sites.zones */
	bool filtered;		/* an =filter was given */
	uint8_t octet[4][32];	/* the filter: the values each octet may have, a bit each */
	int weight;		/* 1 unless given; negative: an allow list */
};

/* The list: each distinct zone once (one query each), the entries in order. */
struct dnsbl_sites {
	char **zones;		/* lower case, no final dot */
	size_t nzones;
	struct dnsbl_site *sites;
	size_t nsites;
};

/*
 * dnsbl_sites_parse - append the entries of spec (separated by white space
 * or commas) to l: "zone", "zone*weight", "zone=filter", "zone=filter*weight",
 * where filter is d.d.d.d, each d a number 0..255 or "[" numbers and
 * "a..b" ranges separated by ';' "]".  False + *err_r (to free) naming the
 * entry; l keeps what it held before plus the entries before the bad one.
 */
bool dnsbl_sites_parse(const char *spec, struct dnsbl_sites *l, char **err_r);
void dnsbl_sites_free(struct dnsbl_sites *l);

/* dnsbl_site_match - does the answer address a (network order) pass e's filter? */
bool dnsbl_site_match(const struct dnsbl_site *e, const unsigned char a[4]);

/* What one A record of a list's answer means. */
enum dnsbl_code {
	DNSBL_CODE_LISTED,	/* inside 127.0.0.0/8: a listing (if the filter agrees) */
	DNSBL_CODE_OUTSIDE,	/* outside 127/8: an error, never a listing */
	DNSBL_CODE_REFUSED,	/* 127.255.255.252..255: query refused / rate limited */
};
enum dnsbl_code dnsbl_code(const unsigned char a[4]);

/* What a zone's answer gives. */
enum dnsbl_zone_result {
	DNSBL_ZONE_LISTED,	/* at least one entry of the zone matched */
	DNSBL_ZONE_CLEAN,	/* NXDOMAIN, no A record, or no entry matched */
	DNSBL_ZONE_BAD,		/* an A record outside 127/8 or a refusal code: nothing counts */
	DNSBL_ZONE_TEMP,	/* SERVFAIL, timeout, resolver error: nothing counts */
};

/*
 * dnsbl_zone_answer - judge the answer a for zone index z: hits[i] is set
 * for each entry i of z whose filter matches one of its A records
 * (untouched for other entries).  DNSBL_ZONE_BAD puts the first offending
 * address in bad (DNSBL_ADDR_BUF) and sets no hit.
 */
#define DNSBL_ADDR_BUF	16
enum dnsbl_zone_result dnsbl_zone_answer(const struct dnsbl_sites *l, size_t z,
    const struct resolver_answer *a, bool *hits, char *bad);

/*
 * dnsbl_client - the address to look up: an IPv4-mapped IPv6 address as
 * IPv4; false for anything but IPv4/IPv6.  out is a sockaddr_storage.
 */
bool dnsbl_client(const struct sockaddr *sa, struct sockaddr_storage *out);
/*
 * dnsbl_qname - "4.3.2.1.zone" (reversed octets) or the 32 reversed nibbles
 * of an IPv6 address then the zone.  False if it does not fit or sa is
 * neither.
 */
bool dnsbl_qname(const struct sockaddr *sa, const char *zone, char *out, size_t size);

#endif
