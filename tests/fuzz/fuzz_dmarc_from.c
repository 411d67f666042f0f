/*
 * fuzz_dmarc_from.c - libFuzzer target for the dmarc filter's From: parser,
 * its record test and the organizational domain (filters/dmarc.c).
 *
 * The input (up to its first NUL) is a From: value.  Invariants:
 *   - the answer is one of enum dmarc_from; the domain is "" unless OK, and
 *     on OK it is a DNS name in lower case: 1 to 253 octets, labels of 1 to
 *     63 letters, digits, '-', '_' or UTF-8 octets, no '@';
 *   - ASCII case of the input changes nothing but nothing;
 *   - the domain found parses again as the domain of "u@DOMAIN" and of
 *     "Name <u@DOMAIN>";
 *   - another mailbox before or after (", " between) makes one address none
 *     or two, and none one (that one's domain), and a syntax error stays
 *     one when added after;
 *   - the organizational domain of an OK domain is a non-empty suffix of it
 *     at a label boundary, and its own organizational domain;
 *   - dmarc_is_record agrees with a regular expression of RFC 7489 6.4's
 *     start of a record.
 * The default public suffix list is loaded once (dmarc_ops.configure).
 * Never writes files; aborts (for libFuzzer to report) on any violation.
 */
#include "config.h"

#include <regex.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "conf.h"
#include "util.h"
#include "dmarc.h"
#include "fuzz.h"

#define FUZZ_OTHER	"other@fuzz.example"
#define FUZZ_OTHER_DOM	"fuzz.example"

static regex_t fuzz_record_re;

/* LLVMFuzzerInitialize - the suffix list and the record expression, once */
int LLVMFuzzerInitialize(int *argc, char ***argv);
int
LLVMFuzzerInitialize(int *argc, char ***argv)
{
	static struct conf conf;
	char *err = NULL;
	void *inst;

	(void)argc;
	(void)argv;
	if ((inst = dmarc_ops.configure(&conf, NULL, &err)) == NULL) {
		fprintf(stderr, "fuzz_dmarc_from: %s\n", err ? err : "configure failed");
		abort();
	}
	dmarc_ops.destroy(inst);	/* the list stays: it is the process's */
	if (regcomp(&fuzz_record_re, "^[ \t]*[vV][ \t]*=[ \t]*DMARC1[ \t]*(;|$)",
	    REG_EXTENDED | REG_NOSUB) != 0)
		abort();
	return 0;
}

/* fuzz_parse - dmarc_from_parse into an exactly sized heap buffer, domain copied to dom */
static enum dmarc_from
fuzz_parse(const char *value, char dom[DMARC_DOMAIN_BUF])
{
	char *buf = xmalloc(DMARC_DOMAIN_BUF);
	enum dmarc_from f;

	memset(buf, 'Z', DMARC_DOMAIN_BUF);
	f = dmarc_from_parse(value, buf, DMARC_DOMAIN_BUF);
	FUZZ_CHECK(f == DMARC_FROM_OK || f == DMARC_FROM_EMPTY || f == DMARC_FROM_MANY ||
	    f == DMARC_FROM_NODOMAIN || f == DMARC_FROM_SYNTAX);
	FUZZ_CHECK(memchr(buf, '\0', DMARC_DOMAIN_BUF) != NULL);
	FUZZ_CHECK(f == DMARC_FROM_OK || buf[0] == '\0');
	FUZZ_CHECK(dmarc_from_name(f) != NULL);
	memcpy(dom, buf, DMARC_DOMAIN_BUF);
	free(buf);
	return f;
}

/* fuzz_domain_ok - dom is a lower-case DNS name as the parser promises */
static void
fuzz_domain_ok(const char *dom)
{
	size_t len = strlen(dom), i, label = 0;

	FUZZ_CHECK(len >= 1 && len <= 253);
	for (i = 0; i <= len; i++) {
		unsigned char c = (unsigned char)dom[i];

		if (c == '.' || c == '\0') {
			FUZZ_CHECK(label >= 1 && label <= 63);
			label = 0;
			continue;
		}
		FUZZ_CHECK((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-' ||
		    c == '_' || c >= 0x80);
		label++;
	}
}

/* fuzz_with - the answer for prefix value suffix */
static enum dmarc_from
fuzz_with(const char *prefix, const char *value, const char *suffix, char dom[DMARC_DOMAIN_BUF])
{
	char *s = xasprintf("%s%s%s", prefix, value, suffix);
	enum dmarc_from f = fuzz_parse(s, dom);

	free(s);
	return f;
}

/* fuzz_org - the organizational domain of an OK domain */
static void
fuzz_org(const char *dom)
{
	char org[DMARC_DOMAIN_BUF], again[DMARC_DOMAIN_BUF];
	size_t dl = strlen(dom), ol;

	dmarc_org_domain(dom, org, sizeof(org));
	ol = strlen(org);
	FUZZ_CHECK(ol >= 1 && ol <= dl && strcmp(dom + dl - ol, org) == 0);
	FUZZ_CHECK(ol == dl || dom[dl - ol - 1] == '.');
	dmarc_org_domain(org, again, sizeof(again));
	FUZZ_CHECK(strcmp(again, org) == 0);
}

/* fuzz_upper - value with its ASCII letters in upper case */
static char *
fuzz_upper(const char *value)
{
	char *u = xstrdup(value), *p;

	for (p = u; *p != '\0'; p++)
		if (*p >= 'a' && *p <= 'z')
			*p = (char)(*p - 'a' + 'A');
	return u;
}

/* LLVMFuzzerTestOneInput - one From: value, every invariant */
int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	char dom[DMARC_DOMAIN_BUF], other[DMARC_DOMAIN_BUF], org[DMARC_DOMAIN_BUF];
	char *value = xmalloc(size + 1), *upper;
	enum dmarc_from f, g;

	memcpy(value, data, size);
	value[size] = '\0';

	f = fuzz_parse(value, dom);
	if (f == DMARC_FROM_OK)
		fuzz_domain_ok(dom);

	upper = fuzz_upper(value);
	FUZZ_CHECK(fuzz_parse(upper, other) == f);
	FUZZ_CHECK(strcmp(dom, other) == 0);
	free(upper);

	if (f == DMARC_FROM_OK) {
		FUZZ_CHECK(fuzz_with("u@", dom, "", other) == DMARC_FROM_OK);
		FUZZ_CHECK(strcmp(dom, other) == 0);
		FUZZ_CHECK(fuzz_with("Name <u@", dom, ">", other) == DMARC_FROM_OK);
		FUZZ_CHECK(strcmp(dom, other) == 0);
		fuzz_org(dom);
	}

	/* one more mailbox after, and before */
	g = fuzz_with("", value, ", " FUZZ_OTHER, other);
	if (f == DMARC_FROM_EMPTY)
		FUZZ_CHECK(g == DMARC_FROM_OK && strcmp(other, FUZZ_OTHER_DOM) == 0);
	else if (f == DMARC_FROM_SYNTAX)
		FUZZ_CHECK(g == DMARC_FROM_SYNTAX);
	else
		FUZZ_CHECK(g == DMARC_FROM_MANY);
	g = fuzz_with(FUZZ_OTHER ", ", value, "", other);
	if (f == DMARC_FROM_EMPTY)
		FUZZ_CHECK(g == DMARC_FROM_OK && strcmp(other, FUZZ_OTHER_DOM) == 0);
	else if (f != DMARC_FROM_SYNTAX)
		FUZZ_CHECK(g == DMARC_FROM_MANY);

	/* the record test, against its expression */
	FUZZ_CHECK(dmarc_is_record(value) == (regexec(&fuzz_record_re, value, 0, NULL, 0) == 0));

	/* any text as a domain: no crash, the answer fits */
	memset(org, 'Z', sizeof(org));
	dmarc_org_domain(value, org, sizeof(org));
	FUZZ_CHECK(memchr(org, '\0', sizeof(org)) != NULL);

	free(value);
	return 0;
}
