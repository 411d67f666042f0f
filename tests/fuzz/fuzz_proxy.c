/*
 * fuzz_proxy.c - libFuzzer target for smtpd/proxy.c, the PROXY protocol
 * header parser.
 *
 * The input is the start of a connection.  Invariants: MORE only while the
 * input is shorter than PROXY_HEADER_MAX; OK consumes at least one octet
 * and no more than it was given, names a kind, and gives IPv4 or IPv6
 * addresses exactly when has_addr; BAD always has a reason; the parser
 * resumes: every shorter prefix of an OK header is MORE, and no prefix of
 * a BAD input is OK.  The source of an OK header also goes through
 * proxy_trusted.  Any broken invariant aborts.  Never touches files,
 * sockets or global state.
 */
#include "config.h"

#include <string.h>

#include "fuzz.h"
#include "proxy.h"

static char *const nets[] = { "127.0.0.0/8", "10.1.2.3", "::1", "fd00::/7", "192.0.2.128/25" };

/* LLVMFuzzerTestOneInput - one connection's first octets, exactly sized */
int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	unsigned char *p = malloc(size ? size : 1);
	struct proxy_result r, part;
	enum proxy_status st, pst;
	size_t i;

	memcpy(p, data, size);
	st = proxy_parse(p, size, &r);
	if (st == PROXY_MORE)
		FUZZ_CHECK(size < PROXY_HEADER_MAX);
	if (st == PROXY_BAD)
		FUZZ_CHECK(r.reason != NULL && r.reason[0] != '\0');
	if (st == PROXY_OK) {
		FUZZ_CHECK(r.consumed > 0 && r.consumed <= size);
		FUZZ_CHECK(r.kind != NULL && (r.version == 1 || r.version == 2));
		if (r.has_addr) {
			FUZZ_CHECK(r.src.ss_family == AF_INET || r.src.ss_family == AF_INET6);
			FUZZ_CHECK(r.dst.ss_family == r.src.ss_family);
			(void)proxy_trusted((const struct sockaddr *)&r.src, nets,
			    sizeof(nets) / sizeof(nets[0]));
		}
	}
	for (i = 0; i < size && i < PROXY_HEADER_MAX; i++) {
		pst = proxy_parse(p, i, &part);
		if (st == PROXY_OK && i < r.consumed)
			FUZZ_CHECK(pst == PROXY_MORE);
		if (st == PROXY_BAD)
			FUZZ_CHECK(pst != PROXY_OK);
	}
	free(p);
	return 0;
}
