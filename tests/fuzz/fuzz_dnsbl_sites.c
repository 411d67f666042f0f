/*
 * fuzz_dnsbl_sites.c - libFuzzer target for the dnsbl filter's zone list
 * parser (Postfix's postscreen_dnsbl_sites syntax, filters/dnsbl.c).
 *
 * The input (up to its first NUL) is the value of "zones =".  Invariants:
 *   - on success every zone is a lower-case DNS name of letters, digits,
 *     '-' and '_', 1 to DNSBL_ZONE_MAX octets, labels of 1 to 63, each zone
 *     once, and the IPv6 query name of each fits; every entry names a zone,
 *     its weight is within +-DNSBL_WEIGHT_MAX and an unfiltered entry has
 *     no octet set;
 *   - the list written back in canonical form (every octet as a bracketed
 *     list, every weight explicit) parses to the same entries;
 *   - ASCII case of the input changes nothing;
 *   - dnsbl_site_match agrees with the octet sets for an address taken from
 *     the input.
 * Never writes files; aborts (for libFuzzer to report) on any violation.
 */
#include "config.h"

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <netinet/in.h>

#include "buf.h"
#include "util.h"
#include "dnsbl.h"
#include "fuzz.h"

/* fuzz_zone_ok - z is a DNS name as the parser promises */
static void
fuzz_zone_ok(const char *z)
{
	size_t len = strlen(z), i, label = 0;

	FUZZ_CHECK(len >= 1 && len <= DNSBL_ZONE_MAX);
	for (i = 0; i <= len; i++) {
		unsigned char c = (unsigned char)z[i];

		if (c == '.' || c == '\0') {
			FUZZ_CHECK(label >= 1 && label <= 63);
			label = 0;
			continue;
		}
		FUZZ_CHECK((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-' || c == '_');
		label++;
	}
}

/* fuzz_canonical - the list written back: zone=[..].[..].[..].[..]*weight ... */
static char *
fuzz_canonical(const struct dnsbl_sites *l)
{
	struct buf b;
	char *out;
	size_t i;
	int o, v;

	buf_init(&b);
	for (i = 0; i < l->nsites; i++) {
		const struct dnsbl_site *e = &l->sites[i];

		buf_printf(&b, "%s%s", i > 0 ? " " : "", l->zones[e->zone]);
		for (o = 0; e->filtered && o < 4; o++) {
			const char *sep = "";

			buf_puts(&b, o == 0 ? "=[" : ".[");
			for (v = 0; v < 256; v++) {
				if ((e->octet[o][v / 8] & (1u << (v % 8))) != 0) {
					buf_printf(&b, "%s%d", sep, v);
					sep = ";";
				}
			}
			buf_putc(&b, ']');
		}
		buf_printf(&b, "*%d", e->weight);
	}
	out = xstrndup(b.data != NULL ? b.data : "", b.len);
	buf_free(&b);
	return out;
}

/* fuzz_same - a and b hold the same entries */
static void
fuzz_same(const struct dnsbl_sites *a, const struct dnsbl_sites *b)
{
	size_t i;

	FUZZ_CHECK(a->nsites == b->nsites && a->nzones == b->nzones);
	for (i = 0; i < a->nsites; i++) {
		FUZZ_CHECK(strcmp(a->zones[a->sites[i].zone], b->zones[b->sites[i].zone]) == 0);
		FUZZ_CHECK(a->sites[i].weight == b->sites[i].weight);
		FUZZ_CHECK(a->sites[i].filtered == b->sites[i].filtered);
		FUZZ_CHECK(memcmp(a->sites[i].octet, b->sites[i].octet,
		    sizeof(a->sites[i].octet)) == 0);
	}
}

/* fuzz_parse - parse s; checks the error text comes exactly on failure */
static bool
fuzz_parse(const char *s, struct dnsbl_sites *l)
{
	char *err = NULL;
	bool ok;

	memset(l, 0, sizeof(*l));
	ok = dnsbl_sites_parse(s, l, &err);
	FUZZ_CHECK(ok == (err == NULL));
	free(err);
	return ok;
}

/* LLVMFuzzerTestOneInput - one "zones =" value, every invariant */
int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static const uint8_t zero[32];
	struct dnsbl_sites l, again;
	struct sockaddr_in6 s6;
	char *spec = xmalloc(size + 1), *canon, *p, qname[DNSBL_QNAME_BUF];
	unsigned char addr[4] = { 127, 0, 0, 2 };
	size_t i, j;
	bool ok;

	memcpy(spec, data, size);
	spec[size] = '\0';
	ok = fuzz_parse(spec, &l);

	/* the case of the input changes nothing */
	for (p = spec; *p != '\0'; p++)
		if (*p >= 'a' && *p <= 'z')
			*p = (char)(*p - 'a' + 'A');
	FUZZ_CHECK(fuzz_parse(spec, &again) == ok);
	if (ok)
		fuzz_same(&l, &again);
	dnsbl_sites_free(&again);
	if (!ok) {
		dnsbl_sites_free(&l);
		free(spec);
		return 0;
	}

	memset(&s6, 0, sizeof(s6));
	s6.sin6_family = AF_INET6;
	for (i = 0; i < l.nzones; i++) {
		fuzz_zone_ok(l.zones[i]);
		for (j = 0; j < i; j++)
			FUZZ_CHECK(strcmp(l.zones[i], l.zones[j]) != 0);
		FUZZ_CHECK(dnsbl_qname((struct sockaddr *)&s6, l.zones[i], qname, sizeof(qname)));
	}
	if (size >= 4)
		memcpy(addr, data, 4);
	for (i = 0; i < l.nsites; i++) {
		const struct dnsbl_site *e = &l.sites[i];
		bool want = true;
		int o;

		FUZZ_CHECK(e->zone < l.nzones);
		FUZZ_CHECK(e->weight >= -DNSBL_WEIGHT_MAX && e->weight <= DNSBL_WEIGHT_MAX);
		for (o = 0; o < 4; o++) {
			if (!e->filtered)
				FUZZ_CHECK(memcmp(e->octet[o], zero, sizeof(zero)) == 0);
			else if ((e->octet[o][addr[o] / 8] & (1u << (addr[o] % 8))) == 0)
				want = false;
		}
		FUZZ_CHECK(dnsbl_site_match(e, addr) == want);
	}

	canon = fuzz_canonical(&l);
	FUZZ_CHECK(fuzz_parse(canon, &again));
	fuzz_same(&l, &again);
	dnsbl_sites_free(&again);
	free(canon);

	dnsbl_sites_free(&l);
	free(spec);
	return 0;
}
