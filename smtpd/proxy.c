/*
 * proxy.c - the PROXY protocol header parser (v1 and v2) and the
 * proxy_trusted network check.
 *
 * Strict, as HAProxy's proxy-protocol.txt asks of a receiver: v1 is one
 * line of at most 107 octets ending in CRLF, single spaces, the address
 * family as its protocol word says, ports 0..65535 without leading zeros;
 * v2 has the 12-octet signature, version 2, command LOCAL or PROXY, a
 * known family over STREAM, and a length that holds the family's
 * addresses and no more than PROXY_V2_LEN_MAX (TLVs are skipped).
 *
 * Must never: read past len, allocate, log, or take a header that is
 * not whole.
 */
#include "config.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdint.h>
#include <string.h>

#include "cidr.h"
#include "proxy.h"

static const unsigned char proxy_v2_sig[12] = {
	0x0d, 0x0a, 0x0d, 0x0a, 0x00, 0x0d, 0x0a, 0x51, 0x55, 0x49, 0x54, 0x0a
};
static const char proxy_v1_sig[] = "PROXY ";

/* proxy_bad - fail with reason */
static enum proxy_status
proxy_bad(struct proxy_result *r, const char *reason)
{
	r->reason = reason;
	return PROXY_BAD;
}

/* proxy_set - store address a (4 or 16 octets, network order) and port in ss */
static void
proxy_set(struct sockaddr_storage *ss, int af, const void *a, unsigned port)
{
	memset(ss, 0, sizeof(*ss));
	if (af == AF_INET) {
		struct sockaddr_in *sin = (struct sockaddr_in *)(void *)ss;

		sin->sin_family = AF_INET;
		memcpy(&sin->sin_addr, a, 4);
		sin->sin_port = htons((uint16_t)port);
	} else {
		struct sockaddr_in6 *sin6 = (struct sockaddr_in6 *)(void *)ss;

		sin6->sin6_family = AF_INET6;
		memcpy(&sin6->sin6_addr, a, 16);
		sin6->sin6_port = htons((uint16_t)port);
	}
}

/* proxy_v1_port - a v1 port: 1 to 5 digits, no leading zero, at most 65535 */
static bool
proxy_v1_port(const char *s, unsigned *port_r)
{
	size_t n = strlen(s), i;
	unsigned v = 0;

	if (n == 0 || n > 5 || (n > 1 && s[0] == '0'))
		return false;
	for (i = 0; i < n; i++) {
		if (s[i] < '0' || s[i] > '9')
			return false;
		v = v * 10 + (unsigned)(s[i] - '0');
	}
	*port_r = v;
	return v <= 65535;
}

/*
 * proxy_v1_fields - split line at single spaces into at most max words;
 * the number of words, or 0 for an empty word (two spaces, a trailing one)
 */
static size_t
proxy_v1_fields(char *line, char **w, size_t max)
{
	size_t n = 0;
	char *sp;

	for (;;) {
		if (*line == '\0' || n == max)
			return 0;
		w[n++] = line;
		if ((sp = strchr(line, ' ')) == NULL)
			return n;
		*sp = '\0';
		line = sp + 1;
	}
}

/* proxy_v1_line - the words of a whole v1 line (no CRLF, NUL-terminated) */
static enum proxy_status
proxy_v1_line(char *line, struct proxy_result *r)
{
	char *w[7];
	unsigned char a[16], b[16];
	unsigned sport, dport;
	size_t n = proxy_v1_fields(line, w, 7);
	int af;

	if (n == 0)
		return proxy_bad(r, "v1: not PROXY PROTO SRC DST SPORT DPORT with single spaces");
	if (n >= 2 && strcmp(w[1], "UNKNOWN") == 0) {
		r->kind = "UNKNOWN";	/* whatever follows is ignored */
		return PROXY_OK;
	}
	if (n < 2 || (strcmp(w[1], "TCP4") != 0 && strcmp(w[1], "TCP6") != 0))
		return proxy_bad(r, "v1: protocol is not TCP4, TCP6 or UNKNOWN");
	if (n != 6)
		return proxy_bad(r, "v1: not PROXY PROTO SRC DST SPORT DPORT with single spaces");
	af = strcmp(w[1], "TCP4") == 0 ? AF_INET : AF_INET6;
	if (inet_pton(af, w[2], a) != 1 || inet_pton(af, w[3], b) != 1) {
		if (inet_pton(af == AF_INET ? AF_INET6 : AF_INET, w[2], a) == 1)
			return proxy_bad(r, "v1: address family does not match the protocol");
		return proxy_bad(r, "v1: bad address");
	}
	if (!proxy_v1_port(w[4], &sport) || !proxy_v1_port(w[5], &dport))
		return proxy_bad(r, "v1: bad port");
	r->kind = af == AF_INET ? "TCP4" : "TCP6";
	r->has_addr = true;
	proxy_set(&r->src, af, a, sport);
	proxy_set(&r->dst, af, b, dport);
	return PROXY_OK;
}

/* proxy_v1 - a v1 header: "PROXY " seen */
static enum proxy_status
proxy_v1(const unsigned char *p, size_t len, struct proxy_result *r)
{
	char line[PROXY_V1_MAX];
	size_t max = len < PROXY_V1_MAX ? len : PROXY_V1_MAX, i;

	r->version = 1;
	for (i = 0; i < max; i++) {
		if (p[i] == '\n')
			return proxy_bad(r, "v1: line ends in a bare LF");
		if (p[i] == '\r') {
			if (i + 2 > PROXY_V1_MAX)
				return proxy_bad(r, "v1: longer than 107 octets");
			if (i + 1 == len)
				return PROXY_MORE;
			if (p[i + 1] != '\n')
				return proxy_bad(r, "v1: bare CR");
			break;
		}
		if (p[i] < 0x20 || p[i] > 0x7e)
			return proxy_bad(r, "v1: control or 8-bit octet");
	}
	if (i == max)
		return len >= PROXY_V1_MAX ?
		    proxy_bad(r, "v1: longer than 107 octets") : PROXY_MORE;
	memcpy(line, p, i);
	line[i] = '\0';
	r->consumed = i + 2;
	return proxy_v1_line(line, r);
}

/* proxy_v2_addr - the PROXY command's address block: n octets at a */
static enum proxy_status
proxy_v2_addr(unsigned fam, unsigned proto, const unsigned char *a, size_t n,
    struct proxy_result *r)
{
	static const char *const kinds[] = { "UNSPEC", "TCP4", "TCP6", "UNIX" };
	static const size_t need[] = { 0, 12, 36, 216 };

	if (fam > 3)
		return proxy_bad(r, "v2: unknown address family");
	if (proto > 2)
		return proxy_bad(r, "v2: unknown transport protocol");
	r->kind = kinds[fam];
	if (fam == 0)
		return PROXY_OK;	/* AF_UNSPEC: the socket's addresses */
	if (proto != 1)
		return proxy_bad(r, "v2: transport is not STREAM");
	if (n < need[fam])
		return proxy_bad(r, "v2: length too short for the address family");
	if (fam == 3)
		return PROXY_OK;	/* AF_UNIX: no IP address to take */
	r->has_addr = true;
	if (fam == 1) {
		proxy_set(&r->src, AF_INET, a, (unsigned)a[8] << 8 | a[9]);
		proxy_set(&r->dst, AF_INET, a + 4, (unsigned)a[10] << 8 | a[11]);
	} else {
		proxy_set(&r->src, AF_INET6, a, (unsigned)a[32] << 8 | a[33]);
		proxy_set(&r->dst, AF_INET6, a + 16, (unsigned)a[34] << 8 | a[35]);
	}
	return PROXY_OK;
}

/* proxy_v2 - a v2 header: the whole signature seen */
static enum proxy_status
proxy_v2(const unsigned char *p, size_t len, struct proxy_result *r)
{
	size_t n;

	r->version = 2;
	if (len < PROXY_V2_HEAD)
		return PROXY_MORE;
	if ((p[12] >> 4) != 2)
		return proxy_bad(r, "v2: version is not 2");
	if ((p[12] & 0x0f) > 1)
		return proxy_bad(r, "v2: command is neither LOCAL nor PROXY");
	n = (size_t)p[14] << 8 | p[15];
	if (n > PROXY_V2_LEN_MAX)
		return proxy_bad(r, "v2: length over 2048");
	if (len < PROXY_V2_HEAD + n)
		return PROXY_MORE;
	r->consumed = PROXY_V2_HEAD + n;
	if ((p[12] & 0x0f) == 0) {
		r->kind = "LOCAL";	/* the balancer's own connection (a health check) */
		return PROXY_OK;
	}
	return proxy_v2_addr(p[13] >> 4, p[13] & 0x0f, p + PROXY_V2_HEAD, n, r);
}

/* proxy_parse - a v1 or v2 header at the start of p, or MORE, or why not */
enum proxy_status
proxy_parse(const unsigned char *p, size_t len, struct proxy_result *r)
{
	size_t n;

	memset(r, 0, sizeof(*r));
	if (len == 0)
		return PROXY_MORE;
	if (p[0] == proxy_v2_sig[0]) {
		n = len < sizeof(proxy_v2_sig) ? len : sizeof(proxy_v2_sig);
		if (memcmp(p, proxy_v2_sig, n) != 0) {
			r->not_proxy = true;
			return proxy_bad(r, "no PROXY header (bad v2 signature)");
		}
		return n < sizeof(proxy_v2_sig) ? PROXY_MORE : proxy_v2(p, len, r);
	}
	n = len < sizeof(proxy_v1_sig) - 1 ? len : sizeof(proxy_v1_sig) - 1;
	if (memcmp(p, proxy_v1_sig, n) != 0) {
		r->not_proxy = true;
		return proxy_bad(r, "no PROXY header");
	}
	return n < sizeof(proxy_v1_sig) - 1 ? PROXY_MORE : proxy_v1(p, len, r);
}

/* proxy_trusted - sa is inside one of nets (a word that is no network matches nothing) */
bool
proxy_trusted(const struct sockaddr *sa, char *const *nets, size_t n)
{
	struct cidr net;
	size_t i;

	for (i = 0; i < n; i++)
		if (cidr_parse(nets[i], &net) && cidr_contains(&net, sa))
			return true;
	return false;
}
