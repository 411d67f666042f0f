/*
 * proxy.h - the PROXY protocol header (HAProxy's proxy-protocol.txt, v1
 * text and v2 binary) that a load balancer sends before a client's first
 * octet, and the proxy_trusted check of who may send one.
 *
 * Pure functions: no I/O, no allocation, no logging.  proxy_parse resumes
 * on partial input (call it again with the whole buffer once more arrived)
 * and says MORE, OK (with the octets the header took) or BAD (with a
 * static reason fit for a log line).
 */
#ifndef PORTIER_PROXY_H
#define PORTIER_PROXY_H

#include <stdbool.h>
#include <stddef.h>
#include <sys/socket.h>

#define PROXY_V1_MAX		107	/* octets of a v1 line, CRLF included */
#define PROXY_V2_HEAD		16	/* signature, version/command, family, length */
#define PROXY_V2_LEN_MAX	2048	/* addresses and TLVs we accept after the 16 */
#define PROXY_HEADER_MAX	(PROXY_V2_HEAD + PROXY_V2_LEN_MAX)

enum proxy_status {
	PROXY_MORE,	/* a header so far: read more */
	PROXY_OK,	/* a whole header: see the result */
	PROXY_BAD,	/* not a header, or a broken one: reason says why */
};

struct proxy_result {
	int version;		/* 1 or 2 */
	/*
	 * true: the header gave addresses, in src (the client) and dst (where
	 * it connected); false (v2 LOCAL, v1 UNKNOWN, v2 AF_UNSPEC or AF_UNIX):
	 * keep the socket's own, kind says which
	 */
	bool has_addr;
	const char *kind;	/* "TCP4", "TCP6", "LOCAL", "UNKNOWN", "UNSPEC", "UNIX" */
	struct sockaddr_storage src;
	struct sockaddr_storage dst;
	size_t consumed;	/* header octets, with OK */
	bool not_proxy;		/* with BAD: the input does not start like a header at all */
	const char *reason;	/* with BAD */
};

/* proxy_parse - parse the header at the start of p[0..len) into *r */
enum proxy_status proxy_parse(const unsigned char *p, size_t len, struct proxy_result *r);

/*
 * proxy_trusted - sa (IPv4, IPv6, IPv4-mapped IPv6) is inside one of the n
 * networks "ADDR" or "ADDR/PREFIX" (as conf_set_cidrs checked them)
 */
bool proxy_trusted(const struct sockaddr *sa, char *const *nets, size_t n);

#endif
