/*
 * fuzz_spf_record.c - libFuzzer target for the strict SPF syntax pass and
 * the rewrite for libspf2 (filters/spf_syntax.c).
 *
 * Octet 0: bit 0 the client's family (IPv6 when set) for the rewrite, bit 1
 * puts "v=spf1 " before the rest, which is the record (up to its first NUL).
 * The same text also goes to spf_syntax_explain and spf_syntax_domain, for
 * crashes and reads past the end only.  Invariants, for a record
 * spf_syntax_record accepts:
 *   - it rewrites within the buffer spf_dns.c gives (a failure there is
 *     fatal() in the daemon), NUL-terminated, starting "v=spf1";
 *   - the rewrite is exact about its size: one octet less fails without
 *     writing past the buffer, exactly enough succeeds with the same text;
 *   - the rewrite passes the syntax pass itself and is its own rewrite;
 *   - libspf2 compiles it (what the rewrite is for), but for its own
 *     limits (permerror all the same): a macro truncated past 128 labels
 *     or split at ',' or '/', a term past 255 octets (a long target, or
 *     one made hex).
 * A refused record has a reason.  Never writes files; aborts (for libFuzzer
 * to report) on any violation.
 */
#include "config.h"

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "util.h"
#include "spf_priv.h"
#include "fuzz.h"

static SPF_server_t *fuzz_server;

/* fuzz_rewrite - rewrite record into an exactly sized heap buffer; NULL if it does not fit */
static char *
fuzz_rewrite(const char *record, bool v6, size_t size)
{
	char *out = xmalloc(size ? size : 1);

	if (!spf_syntax_rewrite(record, v6, out, size)) {
		free(out);
		return NULL;
	}
	FUZZ_CHECK(memchr(out, '\0', size) != NULL);
	return out;
}

/*
 * fuzz_macro_limit - a macro libspf2 refuses though RFC 7208 7.1 and 7.3
 * allow it: a DIGIT transformer past 128 (deep set), or a ',' or '/'
 * delimiter (deep clear)
 */
static bool
fuzz_macro_limit(const char *text, bool deep)
{
	const char *p = text, *q;

	while ((p = strchr(p, '%')) != NULL && p[1] != '\0') {
		if (p[1] != '{' || p[2] == '\0') {
			p += 2;
			continue;
		}
		q = p + 3;
		if (deep && *q >= '0' && *q <= '9' && strtoul(q, NULL, 10) > 128)
			return true;
		q += strspn(q, "0123456789rR");
		if (!deep && strcspn(q, ",/}") < strcspn(q, "}"))
			return true;
		p = q;
	}
	return false;
}

/*
 * fuzz_long_term - a term longer than libspf2 takes a string
 * (SPF_MAX_STR_LEN), counted as libspf2 stores it: the escape "%-" as the
 * "%20" it stands for
 */
static bool
fuzz_long_term(const char *text)
{
	size_t n, i, stored;

	for (; *text != '\0'; text += n + (text[n] == ' ')) {
		n = strcspn(text, " ");
		for (i = stored = 0; i < n; i++, stored++) {
			if (text[i] == '%' && i + 1 < n && text[i + 1] == '%')
				i++, stored++;
			else if (text[i] == '%' && i + 1 < n && text[i + 1] == '-')
				i++, stored += 2;
		}
		if (stored > SPF_MAX_STR_LEN)
			return true;
	}
	return false;
}

/* fuzz_compiles - does libspf2 compile the rewritten record? */
static bool
fuzz_compiles(const char *text)
{
	SPF_response_t *resp;
	SPF_record_t *rec = NULL;
	SPF_errcode_t err;

	if (fuzz_server == NULL && (fuzz_server = SPF_server_new(SPF_DNS_ZONE, 0)) == NULL)
		abort();
	if ((resp = SPF_response_new(NULL)) == NULL)
		abort();
	err = SPF_record_compile(fuzz_server, resp, &rec, text);
	if ((err == SPF_E_BIG_SUBDOM && fuzz_macro_limit(text, true)) ||
	    (err == SPF_E_INVALID_DELIM && fuzz_macro_limit(text, false)) ||
	    ((err == SPF_E_BIG_STRING || err == SPF_E_BIG_MECH || err == SPF_E_BIG_MOD) &&
	    fuzz_long_term(text)))
		err = SPF_E_SUCCESS;
	if (err != SPF_E_SUCCESS)
		fprintf(stderr, "libspf2: %s: %s\n", text, SPF_strerror(err));
	if (rec != NULL)
		SPF_record_free(rec);
	SPF_response_free(resp);
	return err == SPF_E_SUCCESS;
}

/* fuzz_accepted - the invariants of an accepted record */
static void
fuzz_accepted(const char *record, bool v6)
{
	size_t size = SPF_REWRITE_SIZE(strlen(record));	/* spf_dns_get_spf's buffer */
	char why[128] = "", *out, *again, *tight;
	size_t len;

	out = fuzz_rewrite(record, v6, size);
	FUZZ_CHECK(out != NULL);
	len = strlen(out);
	FUZZ_CHECK(len < size && strncmp(out, "v=spf1", 6) == 0);
	FUZZ_CHECK(out[6] == '\0' || out[6] == ' ');

	/* exact about its size */
	FUZZ_CHECK(fuzz_rewrite(record, v6, len) == NULL);
	tight = fuzz_rewrite(record, v6, len + 1);
	FUZZ_CHECK(tight != NULL && strcmp(tight, out) == 0);
	free(tight);

	/* still the same syntax, and a fixed point */
	FUZZ_CHECK(spf_syntax_record(out, why, sizeof(why)));
	again = fuzz_rewrite(out, v6, SPF_REWRITE_SIZE(len));
	FUZZ_CHECK(again != NULL && strcmp(again, out) == 0);
	free(again);

	FUZZ_CHECK(fuzz_compiles(out));
	free(out);
}

/* LLVMFuzzerTestOneInput - one record, both families' rewrites when accepted */
int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static const char version[] = "v=spf1 ";
	char why[128], small[8], *text;
	bool v6, ok;
	size_t n = 0;

	if (size < 1)
		return 0;
	v6 = data[0] & 1;
	text = xmalloc(size + sizeof(version));
	if (data[0] & 2) {
		memcpy(text, version, sizeof(version) - 1);
		n = sizeof(version) - 1;
	}
	memcpy(text + n, data + 1, size - 1);
	text[n + size - 1] = '\0';

	why[0] = '\0';
	ok = spf_syntax_record(text, why, sizeof(why));
	FUZZ_CHECK(ok || (why[0] != '\0' && memchr(why, '\0', sizeof(why)) != NULL));
	/* a short reason buffer truncates, never overflows; the answer is the same */
	FUZZ_CHECK(spf_syntax_record(text, small, sizeof(small)) == ok);
	if (ok) {
		fuzz_accepted(text, v6);
		fuzz_accepted(text, !v6);
	}

	(void)spf_syntax_explain(text);
	if (spf_syntax_domain(text)) {
		size_t len = strlen(text);

		FUZZ_CHECK(len > 0 && len <= 254 && text[0] != '.' && strstr(text, "..") == NULL);
		FUZZ_CHECK(strchr(text, '.') != NULL && strchr(text, '.') < text + len - 1);
	}
	free(text);
	return 0;
}
