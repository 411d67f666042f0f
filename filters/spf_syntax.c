/*
 * spf_syntax.c - the strict syntax pass over SPF records (RFC 7208 §4.6.1,
 * §5, §6, §7.1 ABNF) and explanations (§6.2), and the §4.3 domain check.
 *
 * libspf2 compiles records the ABNF refuses (bytes outside US-ASCII, CR/LF
 * between terms, a domain-spec without a top label, unknown macro letters,
 * a repeated redirect= or exp=...); a record that fails here is permerror
 * before libspf2 sees it.  Pure functions: no allocation, no I/O, any
 * thread.  Never decides anything but syntax.
 */
#include "config.h"

#include <arpa/inet.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "util.h"
#include "spf_priv.h"

#define SPF_ALPHA(c)	(((c) >= 'a' && (c) <= 'z') || ((c) >= 'A' && (c) <= 'Z'))
#define SPF_DIGIT(c)	((c) >= '0' && (c) <= '9')

/* A term being read: [p, end) */
struct spf_span {
	const char *p;
	const char *end;
};

/* spf_syntax_macro - one macro-expand at s[0] == '%'; its length, 0 if bad */
static size_t
spf_syntax_macro(const char *s, const char *end, bool explain)
{
	const char *p = s + 2, *digits;
	bool nonzero = false;
	char letter;

	if (end - s < 2)
		return 0;
	if (s[1] == '%' || s[1] == '_' || s[1] == '-')
		return 2;
	if (s[1] != '{' || p >= end)
		return 0;
	letter = (char)(*p | 0x20);
	if (strchr("slodiphv", letter) == NULL && !(explain && strchr("crt", letter) != NULL))
		return 0;
	p++;
	for (digits = p; p < end && SPF_DIGIT(*p); p++)
		nonzero = nonzero || *p != '0';
	/* §7.3: "If a DIGIT is specified, the value MUST be nonzero." */
	if (p > digits && !nonzero)
		return 0;
	if (p < end && (*p == 'r' || *p == 'R'))
		p++;
	while (p < end && strchr(".-+,/_=", *p) != NULL)
		p++;
	if (p >= end || *p != '}')
		return 0;
	return (size_t)(p + 1 - s);
}

/* spf_syntax_macro_string - [p, end) is a macro-string; *last_macro_r: it ends in a macro-expand */
static bool
spf_syntax_macro_string(const char *p, const char *end, bool explain, bool *last_macro_r)
{
	size_t n;

	*last_macro_r = false;
	while (p < end) {
		if (*p == '%') {
			if ((n = spf_syntax_macro(p, end, explain)) == 0)
				return false;
			p += n;
			*last_macro_r = true;
			continue;
		}
		if ((unsigned char)*p < 0x21 || (unsigned char)*p > 0x7e)
			return false;
		*last_macro_r = false;
		p++;
	}
	return true;
}

/* spf_syntax_toplabel - [p, end) is a toplabel: alphanumerics and '-', not all digits, no '-' at the ends */
static bool
spf_syntax_toplabel(const char *p, const char *end)
{
	bool alpha = false;
	const char *q;

	if (p >= end || p[0] == '-' || end[-1] == '-')
		return false;
	for (q = p; q < end; q++) {
		if (SPF_ALPHA(*q))
			alpha = true;
		else if (*q == '-')
			alpha = true;	/* "1*alphanum "-" ...": a hyphen makes it a label too */
		else if (!SPF_DIGIT(*q))
			return false;
	}
	return alpha;
}

/* spf_syntax_domain_spec - [p, end) is macro-string domain-end */
static bool
spf_syntax_domain_spec(const char *p, const char *end)
{
	const char *dot, *q;
	bool last_macro;

	if (p >= end || !spf_syntax_macro_string(p, end, false, &last_macro))
		return false;
	if (last_macro)
		return true;
	/* "." toplabel [ "." ] */
	q = end;
	if (q[-1] == '.')
		q--;
	for (dot = q - 1; dot >= p && *dot != '.'; dot--)
		;
	if (dot < p)
		return false;
	/* the toplabel must not be part of a macro */
	if (memchr(dot + 1, '%', (size_t)(q - dot - 1)) != NULL || memchr(dot + 1, '}',
	    (size_t)(q - dot - 1)) != NULL)
		return false;
	return spf_syntax_toplabel(dot + 1, q);
}

/* spf_syntax_cidr - "/" decimal without a leading zero, up to max; its length, 0 if none, -1 if bad */
static int
spf_syntax_cidr(const char *p, const char *end, unsigned max)
{
	const char *q = p + 1;
	unsigned v = 0;

	if (p >= end || *p != '/')
		return 0;
	if (q >= end || !SPF_DIGIT(*q) || (*q == '0' && q + 1 < end && SPF_DIGIT(q[1])))
		return -1;
	while (q < end && SPF_DIGIT(*q)) {
		v = v * 10 + (unsigned)(*q - '0');
		if (v > max)
			return -1;
		q++;
	}
	return (int)(q - p);
}

/* spf_syntax_dual_cidr - [q, end) is a whole dual-cidr-length: "/4" ["//6"] or "//6" */
static bool
spf_syntax_dual_cidr(const char *q, const char *end)
{
	int n;

	if (end - q >= 2 && q[0] == '/' && q[1] == '/')
		return spf_syntax_cidr(q + 1, end, 128) == end - (q + 1);
	if ((n = spf_syntax_cidr(q, end, 32)) <= 0)
		return false;
	q += n;
	return q == end || (end - q >= 2 && q[0] == '/' && q[1] == '/' &&
	    spf_syntax_cidr(q + 1, end, 128) == end - (q + 1));
}

/* spf_syntax_a_mx - after "a" / "mx": [ ":" domain-spec ] [ dual-cidr-length ] */
static bool
spf_syntax_a_mx(const char *r, const char *end)
{
	const char *q;

	for (q = r; q < end; q++)
		if (*q == '/' && spf_syntax_dual_cidr(q, end))
			break;
	return q == r || (*r == ':' && spf_syntax_domain_spec(r + 1, q));
}

/* spf_syntax_ip4 - a dotted quad of qnums, no leading zeros */
static bool
spf_syntax_ip4(const char *p, const char *end)
{
	char buf[16];
	struct in_addr in;
	int dots = 0;
	const char *q;

	if (end - p >= (long)sizeof(buf) || end <= p)
		return false;
	for (q = p; q < end; q++) {
		if (*q == '.') {
			dots++;
			if (q + 2 < end && q[1] == '0' && SPF_DIGIT(q[2]))
				return false;
		} else if (!SPF_DIGIT(*q))
			return false;
	}
	if (*p == '0' && end - p > 1 && SPF_DIGIT(p[1]))
		return false;
	memcpy(buf, p, (size_t)(end - p));
	buf[end - p] = '\0';
	return dots == 3 && inet_pton(AF_INET, buf, &in) == 1;
}

/* spf_syntax_ip6 - an RFC 4291 address */
static bool
spf_syntax_ip6(const char *p, const char *end)
{
	char buf[64];
	struct in6_addr in6;

	if (end - p >= (long)sizeof(buf) || end <= p)
		return false;
	memcpy(buf, p, (size_t)(end - p));
	buf[end - p] = '\0';
	return inet_pton(AF_INET6, buf, &in6) == 1;
}

/* spf_syntax_is - [p, end) starts with the name word (case-insensitive); what follows */
static const char *
spf_syntax_is(const char *p, const char *end, const char *word)
{
	size_t n = strlen(word);

	if ((size_t)(end - p) < n || str_ncasecmp(p, word, n) != 0)
		return NULL;
	return p + n;
}

/* spf_syntax_ipnet - ip4:/ip6: network and cidr */
static bool
spf_syntax_ipnet(const char *p, const char *end, bool v6)
{
	const char *slash = memchr(p, '/', (size_t)(end - p));

	if (slash == NULL)
		slash = end;
	else if (spf_syntax_cidr(slash, end, v6 ? 128 : 32) != end - slash)
		return false;
	return v6 ? spf_syntax_ip6(p, slash) : spf_syntax_ip4(p, slash);
}

/* spf_syntax_mechanism - one directive without its qualifier */
static bool
spf_syntax_mechanism(const char *p, const char *end)
{
	const char *r;

	if ((r = spf_syntax_is(p, end, "all")) != NULL && r == end)
		return true;
	if ((r = spf_syntax_is(p, end, "include")) != NULL && r < end && *r == ':')
		return spf_syntax_domain_spec(r + 1, end);
	if ((r = spf_syntax_is(p, end, "exists")) != NULL && r < end && *r == ':')
		return spf_syntax_domain_spec(r + 1, end);
	if ((r = spf_syntax_is(p, end, "ip4")) != NULL && r < end && *r == ':')
		return spf_syntax_ipnet(r + 1, end, false);
	if ((r = spf_syntax_is(p, end, "ip6")) != NULL && r < end && *r == ':')
		return spf_syntax_ipnet(r + 1, end, true);
	if ((r = spf_syntax_is(p, end, "ptr")) != NULL && (r == end || *r == ':'))
		return r == end || spf_syntax_domain_spec(r + 1, end);
	if (((r = spf_syntax_is(p, end, "mx")) != NULL || (r = spf_syntax_is(p, end, "a")) != NULL) &&
	    (r == end || *r == ':' || *r == '/'))
		return spf_syntax_a_mx(r, end);
	return false;
}

/* spf_syntax_modifier - name=value; counts redirect and exp */
static bool
spf_syntax_modifier(const char *p, const char *eq, const char *end, int *redirect, int *exp)
{
	bool last;

	if (eq - p == 8 && str_ncasecmp(p, "redirect", 8) == 0) {
		(*redirect)++;
		return spf_syntax_domain_spec(eq + 1, end);
	}
	if (eq - p == 3 && str_ncasecmp(p, "exp", 3) == 0) {
		(*exp)++;
		return spf_syntax_domain_spec(eq + 1, end);
	}
	return spf_syntax_macro_string(eq + 1, end, false, &last);
}

/* spf_syntax_modifier_name - the '=' ending a name = ALPHA *( ALPHA / DIGIT / "-" / "_" / "." ), or NULL */
static const char *
spf_syntax_modifier_name(const char *p, const char *end)
{
	const char *q;

	if (p >= end || !SPF_ALPHA(*p))
		return NULL;
	for (q = p + 1; q < end && (SPF_ALPHA(*q) || SPF_DIGIT(*q) || strchr("-_.", *q)); q++)
		;
	return q < end && *q == '=' ? q : NULL;
}

/* spf_syntax_term - one term; false + why */
static bool
spf_syntax_term(const char *p, const char *end, int *redirect, int *exp, char *why, size_t whysize)
{
	const char *eq;
	int len = (int)(end - p > 60 ? 60 : end - p);

	if ((eq = spf_syntax_modifier_name(p, end)) != NULL) {
		if (spf_syntax_modifier(p, eq, end, redirect, exp))
			return true;
		snprintf(why, whysize, "bad modifier \"%.*s\"", len, p);
		return false;
	}
	if (*p == '+' || *p == '-' || *p == '?' || *p == '~')
		p++;
	if (p < end && spf_syntax_mechanism(p, end))
		return true;
	snprintf(why, whysize, "bad term \"%.*s\"", len, p);
	return false;
}

/* spf_syntax_record - version, then terms separated by spaces */
bool
spf_syntax_record(const char *record, char *why, size_t whysize)
{
	const char *p = record + 6, *end;
	int redirect = 0, exp = 0;

	for (end = record; *end != '\0'; end++)
		if ((unsigned char)*end < 0x20 || (unsigned char)*end > 0x7e) {
			snprintf(why, whysize, "bad character 0x%02x in record",
			    (unsigned char)*end);
			return false;
		}
	if (str_ncasecmp(record, "v=spf1", 6) != 0 || (*p != ' ' && *p != '\0')) {
		snprintf(why, whysize, "no version");
		return false;
	}
	while (*p != '\0') {
		p += strspn(p, " ");
		if (*p == '\0')
			break;
		end = p + strcspn(p, " ");
		if (!spf_syntax_term(p, end, &redirect, &exp, why, whysize))
			return false;
		p = end;
	}
	if (redirect > 1 || exp > 1) {
		snprintf(why, whysize, "%s more than once", redirect > 1 ? "redirect" : "exp");
		return false;
	}
	return true;
}

/* spf_syntax_explain - explain-string = *( macro-string / SP ) */
bool
spf_syntax_explain(const char *text)
{
	const char *p = text, *end;
	bool last;

	while (*p != '\0') {
		if (*p == ' ') {
			p++;
			continue;
		}
		end = p + strcspn(p, " ");
		if (!spf_syntax_macro_string(p, end, true, &last))
			return false;
		p = end;
	}
	return true;
}

/* spf_syntax_domain - §4.3: a multi-label name, labels of 1..63 octets, not an address literal */
bool
spf_syntax_domain(const char *name)
{
	const char *p = name, *dot;
	size_t n, labels = 0, len = strlen(name);

	if (len == 0 || len > 253 + (name[len - 1] == '.') || name[0] == '[')
		return false;
	while (*p != '\0') {
		dot = strchr(p, '.');
		n = dot ? (size_t)(dot - p) : strlen(p);
		if (n == 0 || n > 63)
			return false;
		labels++;
		if (dot == NULL || dot[1] == '\0')
			break;
		p = dot + 1;
	}
	return labels > 1;
}

/* An output record being written: false once it no longer fits */
struct spf_out {
	char *p;
	size_t size, len;
	bool ok;
};

/* spf_put - append n octets of s */
static void
spf_put(struct spf_out *o, const char *s, size_t n)
{
	if (!o->ok || o->len + n >= o->size) {
		o->ok = false;
		return;
	}
	memcpy(o->p + o->len, s, n);
	o->len += n;
	o->p[o->len] = '\0';
}

static void
spf_puts(struct spf_out *o, const char *s)
{
	spf_put(o, s, strlen(s));
}

/* spf_syntax_cidr_of - the prefix lengths in a checked dual-cidr [c, end): -1 if absent */
static void
spf_syntax_cidr_of(const char *c, const char *end, long *v4, long *v6)
{
	*v4 = *v6 = -1;
	if (c >= end)
		return;
	if (c[1] != '/') {
		*v4 = strtol(c + 1, NULL, 10);
		c = strchr(c + 1, '/');
		if (c == NULL || c >= end)
			return;
	}
	*v6 = strtol(c + 2, NULL, 10);
}

/* spf_syntax_hex - [p, end) as hex labels of up to 62 digits, then SPF_HEX_LABEL */
static void
spf_syntax_hex(struct spf_out *o, const char *p, const char *end)
{
	char h[3];
	size_t n = 0;

	for (; p < end; p++, n += 2) {
		if (n > 0 && n % 62 == 0)
			spf_puts(o, ".");
		snprintf(h, sizeof(h), "%02x", (unsigned char)*p);
		spf_puts(o, h);
	}
	spf_puts(o, "." SPF_HEX_LABEL);
}

/* spf_syntax_rewrite_a_mx - "a" / "mx" [q, end), r after its name, with a "/0" */
static bool
spf_syntax_rewrite_a_mx(struct spf_out *o, const char *t, const char *q, const char *r,
    const char *end, bool client_v6)
{
	const char *c;
	long v4, v6, mine, other;
	char cidr[16];
	bool hex;

	for (c = r; c < end; c++)
		if (*c == '/' && spf_syntax_dual_cidr(c, end))
			break;
	spf_syntax_cidr_of(c, end, &v4, &v6);
	mine = client_v6 ? v6 : v4;
	other = client_v6 ? v4 : v6;
	hex = r < c && memchr(r + 1, '%', (size_t)(c - r - 1)) == NULL &&
	    strcspn(r + 1, ":/") < (size_t)(c - r - 1);
	if (mine != 0 && other != 0 && !hex)
		return false;	/* nothing to do */
	spf_puts(o, " ");
	spf_put(o, t, (size_t)(r - t));		/* qualifier and name */
	spf_puts(o, ":");
	if (hex)
		spf_syntax_hex(o, r + 1, c);
	else if (r < c)
		spf_put(o, r + 1, (size_t)(c - r - 1));
	else
		spf_puts(o, "%{d}");
	if (mine == 0) {
		/* the target's addresses become the client's: no prefix needed */
		if (r >= c || c[-1] != '.')
			spf_puts(o, ".");
		spf_puts(o, SPF_CIDR0_LABEL);
		return true;
	}
	if (mine > 0) {
		snprintf(cidr, sizeof(cidr), client_v6 ? "//%ld" : "/%ld", mine);
		spf_puts(o, cidr);
	}
	(void)q;
	return true;
}

/* spf_syntax_rewrite_term - one checked term into o */
static void
spf_syntax_rewrite_term(struct spf_out *o, const char *t, const char *end, bool has_all,
    bool client_v6)
{
	const char *q = t, *r, *eq;
	char qual[2] = { 0, 0 };

	if ((eq = spf_syntax_modifier_name(t, end)) != NULL) {
		bool redirect = eq - t == 8 && str_ncasecmp(t, "redirect", 8) == 0;
		bool exp = eq - t == 3 && str_ncasecmp(t, "exp", 3) == 0;

		/* unknown modifiers mean nothing (§6), a redirect beside "all" neither (§6.1) */
		if (exp || (redirect && !has_all)) {
			spf_puts(o, " ");
			spf_put(o, t, (size_t)(end - t));
		}
		return;
	}
	if (*q == '+' || *q == '-' || *q == '?' || *q == '~')
		qual[0] = *q++;
	if (((r = spf_syntax_is(q, end, "ip4")) != NULL || (r = spf_syntax_is(q, end, "ip6")) != NULL) &&
	    end - r >= 2 && end[-2] == '/' && end[-1] == '0') {
		bool v6 = q[2] == '6';

		spf_puts(o, " ");
		spf_puts(o, qual);
		spf_puts(o, v6 ? "ip6:::/1 " : "ip4:0.0.0.0/1 ");
		spf_puts(o, qual);
		spf_puts(o, v6 ? "ip6:8000::/1" : "ip4:128.0.0.0/1");
		return;
	}
	if (((r = spf_syntax_is(q, end, "mx")) != NULL || (r = spf_syntax_is(q, end, "a")) != NULL) &&
	    (r == end || *r == ':' || *r == '/') &&
	    spf_syntax_rewrite_a_mx(o, t, q, r, end, client_v6))
		return;
	spf_puts(o, " ");
	spf_put(o, t, (size_t)(end - t));
}

/* spf_syntax_has_all - does the checked record hold an "all" mechanism? */
static bool
spf_syntax_has_all(const char *p)
{
	const char *end;

	while (*p != '\0') {
		p += strspn(p, " ");
		end = p + strcspn(p, " ");
		if (end > p && strchr("+-?~", *p) != NULL)
			p++;
		if (end - p == 3 && str_ncasecmp(p, "all", 3) == 0)
			return true;
		p = end;
	}
	return false;
}

/* spf_syntax_lower_r - the "R" transformers of s's macros as "r", which is all libspf2 reads */
static void
spf_syntax_lower_r(char *s)
{
	while ((s = strchr(s, '%')) != NULL && s[1] != '\0') {
		if (s[1] != '{') {
			s += 2;		/* "%%", "%_", "%-": no macro */
			continue;
		}
		if (s[2] == '\0')
			return;
		for (s += 3; SPF_DIGIT(*s); s++)
			;
		if (*s == 'R')
			*s = 'r';
	}
}

/* spf_syntax_rewrite - see spf_priv.h */
bool
spf_syntax_rewrite(const char *record, bool client_v6, char *out, size_t size)
{
	struct spf_out o = { out, size, 0, true };
	const char *p = record + 6, *end;
	bool has_all = spf_syntax_has_all(p);

	spf_puts(&o, "v=spf1");
	while (*p != '\0') {
		p += strspn(p, " ");
		if (*p == '\0')
			break;
		end = p + strcspn(p, " ");
		spf_syntax_rewrite_term(&o, p, end, has_all, client_v6);
		p = end;
	}
	if (o.ok)
		spf_syntax_lower_r(out);
	return o.ok;
}
