/*
 * spf_priv.h - what the spf filter's files share: one evaluation's state,
 * libspf2's DNS layer over it (spf_dns.c) and the strict syntax pass
 * (spf_syntax.c).  Nothing here is for other modules.
 */
#ifndef PORTIER_SPF_PRIV_H
#define PORTIER_SPF_PRIV_H

#include <stdbool.h>
#include <stddef.h>

#include <netinet/in.h>
#include <sys/socket.h>

#include <spf2/spf.h>
#include <spf2/spf_dns.h>

#include "spf.h"

/* RFC 7208 §4.6.4 */
#define SPF_MAX_VOID_LOOKUPS	2
/* RFC 7208 §4.6.4: terms that cause DNS queries, and MX records per "mx" */
#define SPF_MAX_DNS_TERMS	10
#define SPF_MAX_MX		10
/* Our own bound on every query of one evaluation, whatever libspf2 counts */
#define SPF_MAX_QUERIES		60
/* Names an MX or PTR answer gave: their address lookups are no term of their own */
#define SPF_MAX_HOSTS		40
/*
 * A label spf_syntax_rewrite() appends to the target of an "a" or "mx" whose
 * prefix length for the client's family is 0, which libspf2 cannot compile
 * (it reads 0 as "none given"): the DNS layer strips it, and answers every
 * address of such a name with the client's own, so that "a/0" matches
 * exactly when the name has an address (RFC 7208 §5.3).
 */
#define SPF_CIDR0_LABEL		"x-portier-cidr0"
/*
 * The same for an "a" or "mx" target with no macro but a ':' or '/' in it,
 * which libspf2 misreads as a prefix length: spf_syntax_rewrite() writes it
 * as hex labels followed by this one, the DNS layer queries the name itself.
 */
#define SPF_HEX_LABEL		"x-portier-hex"
/* RFC 7208 §4.6.4: only the first 10 PTR names are looked at */
#define SPF_MAX_PTR		10

/*
 * One evaluation (spf_check): the DNS layer's hook.  Lives on the caller's
 * stack for the call; owns nothing but what it says.
 */
struct spf_eval {
	const struct conf *conf;
	SPF_request_t *request;		/* for the explanation's macros */
	unsigned queries;		/* DNS queries made */
	unsigned voids;			/* NXDOMAIN / no-data answers to A, AAAA, MX, PTR */
	unsigned terms;			/* terms that caused DNS queries (§4.6.4) */
	unsigned records;		/* SPF records fetched (the first is no term) */
	bool client_v6;			/* the client's family */
	unsigned char client[16];	/* its address: 4 or 16 octets */
	char *hosts[SPF_MAX_HOSTS];	/* MX and PTR answers' names (malloc'd) */
	size_t nhosts;
	bool ptr_hosts[SPF_MAX_HOSTS];	/* hosts[i] came from a PTR: its lookup errors are ignored */
	bool in_exp;			/* fetching the explanation: errors ignored, nothing counted */
	bool temperror;			/* a DNS error or timeout: the result is temperror */
	bool permerror;			/* a limit or a syntax error: the result is permerror */
	char why[160];			/* the first temperror/permerror's reason */
	char exp[256];			/* the explanation get_exp expanded, "" if none */
};

/* spf_eval_free - what the evaluation allocated */
void spf_eval_free(struct spf_eval *ev);
/* spf_dns_new - libspf2's DNS layer for ev; SPF_dns_free() it after SPF_server_free() */
SPF_dns_server_t *spf_dns_new(struct spf_eval *ev);
/* spf_eval_fail - record a permerror (perm) or temperror with its reason; the first one stays */
void spf_eval_fail(struct spf_eval *ev, bool perm, const char *fmt, ...) PRINTF_LIKE(3, 4);

/*
 * spf_syntax_record - true if record (an SPF record, "v=spf1 ...", as
 * selected) follows RFC 7208's ABNF (§4.6.1, §5, §6, §7.1), including what
 * libspf2 lets through; else false and why.
 */
bool spf_syntax_record(const char *record, char *why, size_t whysize);
/* spf_syntax_explain - true if text is a valid explain-string (§6.2) */
bool spf_syntax_explain(const char *text);
/*
 * spf_syntax_rewrite - the checked record as libspf2 can compile it, with
 * the same meaning (§5, §6): unknown modifiers dropped, redirect= dropped
 * when an "all" is there, ip4/ip6 "/0" as two "/1" halves, and an "a" or
 * "mx" with "/0" for the client's family (client_v6) aimed at its target
 * plus SPF_CIDR0_LABEL, a target with ':' or '/' as SPF_HEX_LABEL's hex,
 * a macro's "R" transformer as "r" (libspf2 refuses "R").
 * False if it does not fit in size.
 */
bool spf_syntax_rewrite(const char *record, bool client_v6, char *out, size_t size);
/*
 * The size spf_syntax_rewrite() needs at most for a checked record of len
 * octets: the worst term, "a/0" with its space (4), becomes
 * " a:%{d}." SPF_CIDR0_LABEL (23); a hex target doubles, plus its label.
 */
#define SPF_REWRITE_SIZE(len)	((len) * 6 + 64)
/* spf_syntax_domain - true if name is a usable FQDN for §4.3 (labels 1..63, >1 label, no literal) */
bool spf_syntax_domain(const char *name);

#endif
