/*
 * cidr.c - IPv4 and IPv6 networks and the addresses inside them, for
 * proxy_trusted (and any list of networks a listener or policy keeps).
 *
 * Must never: allocate, log, or match across families (except the
 * IPv4-mapped IPv6 form, which is IPv4).
 */
#include "config.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <string.h>

#include "cidr.h"

/* cidr_parse - the network s into *n */
bool
cidr_parse(const char *s, struct cidr *n)
{
	char addr[INET6_ADDRSTRLEN + 1];
	const char *slash = strchr(s, '/'), *d;
	size_t len = slash ? (size_t)(slash - s) : strlen(s);
	unsigned prefix = 0;

	if (len == 0 || len >= sizeof(addr))
		return false;
	memcpy(addr, s, len);
	addr[len] = '\0';
	memset(n, 0, sizeof(*n));
	if (inet_pton(AF_INET, addr, n->addr) == 1)
		n->af = AF_INET;
	else if (inet_pton(AF_INET6, addr, n->addr) == 1)
		n->af = AF_INET6;
	else
		return false;
	n->prefix = n->af == AF_INET ? 32 : 128;
	if (slash == NULL)
		return true;
	for (d = slash + 1; *d >= '0' && *d <= '9' && prefix <= n->prefix; d++)
		prefix = prefix * 10 + (unsigned)(*d - '0');
	if (d == slash + 1 || *d != '\0' || prefix > n->prefix)
		return false;
	n->prefix = prefix;
	return true;
}

/* cidr_addr - sa's family and address octets, an IPv4-mapped one as IPv4; NULL if not IP */
static const unsigned char *
cidr_addr(const struct sockaddr *sa, int *af_r)
{
	static const unsigned char mapped[12] = { 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff };
	const unsigned char *a;

	*af_r = sa->sa_family;
	if (sa->sa_family == AF_INET)
		return (const unsigned char *)&((const struct sockaddr_in *)(const void *)sa)->sin_addr;
	if (sa->sa_family != AF_INET6)
		return NULL;
	a = ((const struct sockaddr_in6 *)(const void *)sa)->sin6_addr.s6_addr;
	if (memcmp(a, mapped, sizeof(mapped)) == 0) {
		*af_r = AF_INET;
		a += sizeof(mapped);
	}
	return a;
}

/* cidr_contains - sa's address inside n */
bool
cidr_contains(const struct cidr *n, const struct sockaddr *sa)
{
	const unsigned char *a;
	unsigned full = n->prefix / 8, bits = n->prefix % 8;
	unsigned char mask;
	int af;

	if ((a = cidr_addr(sa, &af)) == NULL)
		return false;
	if (n->af != af || memcmp(n->addr, a, full) != 0)
		return false;
	if (bits == 0)
		return true;
	mask = (unsigned char)(0xff << (8 - bits));
	return (n->addr[full] & mask) == (a[full] & mask);
}

/* cidr_any - sa inside one of the n networks of v */
bool
cidr_any(const struct cidr *v, size_t n, const struct sockaddr *sa)
{
	size_t i;

	for (i = 0; i < n; i++)
		if (cidr_contains(&v[i], sa))
			return true;
	return false;
}

/* cidr_of - the network of sa's address, prefix4 or prefix6 long, host bits zero */
bool
cidr_of(const struct sockaddr *sa, unsigned prefix4, unsigned prefix6, struct cidr *n)
{
	const unsigned char *a;
	unsigned full, bits;
	int af;

	memset(n, 0, sizeof(*n));
	if ((a = cidr_addr(sa, &af)) == NULL)
		return false;
	n->af = af;
	n->prefix = af == AF_INET ? (prefix4 < 32 ? prefix4 : 32) : (prefix6 < 128 ? prefix6 : 128);
	full = n->prefix / 8;
	bits = n->prefix % 8;
	memcpy(n->addr, a, full);
	if (bits != 0)
		n->addr[full] = (unsigned char)(a[full] & (0xff << (8 - bits)));
	return true;
}

/* cidr_text - n as "ADDR/PREFIX" ("192.0.2.0/24"); false if inet_ntop fails */
bool
cidr_text(const struct cidr *n, char *out, size_t size)
{
	char a[INET6_ADDRSTRLEN];

	if (inet_ntop(n->af, n->addr, a, sizeof(a)) == NULL)
		return false;
	return (size_t)snprintf(out, size, "%s/%u", a, n->prefix) < size;
}
