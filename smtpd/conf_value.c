/*
 * conf_value.c - the value parsers of portier.conf: one setter per kind of
 * value (numbers with suffixes, booleans, words, host names, domains,
 * listen addresses, CIDRs, relay targets...), and the small helpers they
 * share with conf.c.
 *
 * A setter never logs and never exits: it stores the value or returns false
 * with a message saying what to fix, which conf.c turns into a FILE:LINE
 * error.  Never opens what a value names (see conf.c).
 */
#include "config.h"

#include <sys/types.h>
#include <arpa/inet.h>
#include <assert.h>
#include <errno.h>
#include <limits.h>
#include <netinet/in.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "conf.h"
#include "conf_priv.h"
#include "util.h"

/* ---- small helpers ---- */

/* conf_is_space - INI white space */
bool
conf_is_space(int ch)
{
	return ch == ' ' || ch == '\t' || ch == '\r' || ch == '\f' || ch == '\v';
}

/* conf_is_alnum - ASCII letter or digit, locale independent */
static bool
conf_is_alnum(int ch)
{
	return (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') ||
	    (ch >= '0' && ch <= '9');
}

/* conf_name_ok - a section or filter name: letters, digits and chars from extra */
bool
conf_name_ok(const char *s, const char *extra)
{
	if (*s == '\0' || strlen(s) > CONF_NAME_MAX)
		return false;
	for (; *s != '\0'; s++)
		if (!conf_is_alnum((unsigned char)*s) && strchr(extra, *s) == NULL)
			return false;
	return true;
}

/* conf_strv_push - append s (taken over) to a string vector */
void
conf_strv_push(char ***v, size_t *n, char *s)
{
	*v = xreallocarray(*v, *n + 1, sizeof(**v));
	(*v)[(*n)++] = s;
}

/* conf_strv_free - free a string vector and its strings */
void
conf_strv_free(char **v, size_t n)
{
	size_t i;

	for (i = 0; i < n; i++)
		free(v[i]);
	free(v);
}

/* conf_split - split a list on white space and commas into a new vector */
void
conf_split(const char *value, char ***v_r, size_t *n_r)
{
	const char *p = value, *start;

	*v_r = NULL;
	*n_r = 0;
	for (;;) {
		while (*p != '\0' && (conf_is_space((unsigned char)*p) || *p == ','))
			p++;
		if (*p == '\0')
			break;
		start = p;
		while (*p != '\0' && !conf_is_space((unsigned char)*p) && *p != ',')
			p++;
		conf_strv_push(v_r, n_r, xstrndup(start, (size_t)(p - start)));
	}
}

/* conf_is_ipv4 - whether s is a dotted-quad IPv4 literal */
static bool
conf_is_ipv4(const char *s)
{
	struct in_addr a;

	return inet_pton(AF_INET, s, &a) == 1;
}

/* conf_is_ipv6 - whether s is an IPv6 literal (no brackets) */
static bool
conf_is_ipv6(const char *s)
{
	struct in6_addr a;

	return inet_pton(AF_INET6, s, &a) == 1;
}

/* conf_domain_ok - a host or domain name: labels of letters, digits, '-', '_' */
bool
conf_domain_ok(const char *s)
{
	size_t len = strlen(s), label = 0;

	if (len == 0 || len > 253)
		return false;
	for (; *s != '\0'; s++) {
		if (*s == '.') {
			if (label == 0)
				return false;
			label = 0;
			continue;
		}
		if (!conf_is_alnum((unsigned char)*s) && *s != '-' && *s != '_')
			return false;
		if (++label > 63)
			return false;
	}
	return label > 0;
}

/* conf_parse_port - a decimal port 1-65535 */
static bool
conf_parse_port(const char *s, unsigned *port_r)
{
	unsigned long v = 0;

	if (*s == '\0' || strlen(s) > 5)
		return false;
	for (; *s != '\0'; s++) {
		if (*s < '0' || *s > '9')
			return false;
		v = v * 10 + (unsigned long)(*s - '0');
	}
	if (v < 1 || v > 65535)
		return false;
	*port_r = (unsigned)v;
	return true;
}


/*
 * conf_parse_hostport - split "HOST:PORT" or "[V6]:PORT".  CONF_HOST_BIND
 * accepts IP literals, "*" and "localhost"; CONF_HOST_ANY IP literals and
 * domain names.  host_r (unbracketed) and port_r are the caller's to free.
 */
bool
conf_parse_hostport(const char *s, enum conf_host mode, char **host_r, char **port_r,
    char **why_r)
{
	const char *colon, *end;
	char *host;
	unsigned port;
	bool ok;

	if (*s == '[') {
		if ((end = strchr(s, ']')) == NULL) {
			*why_r = xasprintf("\"%s\" has no closing ']'", s);
			return false;
		}
		if (end[1] != ':') {
			*why_r = xasprintf("\"%s\": write [IPV6]:PORT, e.g. [::1]:25", s);
			return false;
		}
		host = xstrndup(s + 1, (size_t)(end - s - 1));
		colon = end + 1;
		if (!conf_is_ipv6(host)) {
			*why_r = xasprintf("\"%s\" is not an IPv6 address", host);
			free(host);
			return false;
		}
	} else {
		if ((colon = strrchr(s, ':')) == NULL) {
			*why_r = xasprintf("\"%s\" has no port; write HOST:PORT, e.g. "
			    "127.0.0.1:25", s);
			return false;
		}
		host = xstrndup(s, (size_t)(colon - s));
		if (strchr(host, ':') != NULL)
			ok = false;
		else if (mode == CONF_HOST_BIND)
			ok = conf_is_ipv4(host) || strcmp(host, "*") == 0 ||
			    strcmp(host, "localhost") == 0;
		else
			ok = conf_is_ipv4(host) || conf_domain_ok(host);
		if (!ok) {
			if (strchr(host, ':') != NULL)
				*why_r = xasprintf("\"%s\": write IPv6 addresses in "
				    "brackets, e.g. [::1]:25", s);
			else if (mode == CONF_HOST_BIND)
				*why_r = xasprintf("\"%s\": the host must be an IP address, "
				    "\"*\" or \"localhost\"", s);
			else
				*why_r = xasprintf("\"%s\": \"%s\" is neither an IP address "
				    "nor a host name", s, host);
			free(host);
			return false;
		}
	}
	if (!conf_parse_port(colon + 1, &port)) {
		*why_r = xasprintf("\"%s\": the port must be a number from 1 to 65535", s);
		free(host);
		return false;
	}
	*host_r = host;
	*port_r = xasprintf("%u", port);
	return true;
}

/* conf_parse_number - decimal, overflow-checked; suffix k/m/g (powers of 1024) if allowed */
static bool
conf_parse_number(const char *s, bool suffix, unsigned long long *n_r, char **why_r)
{
	unsigned long long v = 0;
	const char *p = s;
	unsigned shift = 0;

	if (*p < '0' || *p > '9') {
		*why_r = xasprintf("\"%s\" is not a number; write a decimal integer%s", s,
		    suffix ? " (k, m or g may follow)" : "");
		return false;
	}
	for (; *p >= '0' && *p <= '9'; p++) {
		if (v > (ULLONG_MAX - (unsigned)(*p - '0')) / 10) {
			*why_r = xasprintf("\"%s\" is too large", s);
			return false;
		}
		v = v * 10 + (unsigned)(*p - '0');
	}
	if (suffix && *p != '\0' && p[1] == '\0') {
		switch (*p) {
		case 'k': case 'K': shift = 10; p++; break;
		case 'm': case 'M': shift = 20; p++; break;
		case 'g': case 'G': shift = 30; p++; break;
		}
	}
	if (*p != '\0') {
		*why_r = xasprintf("\"%s\" is not a number; write a decimal integer%s", s,
		    suffix ? " (k, m or g may follow)" : "");
		return false;
	}
	if (shift != 0 && v > (ULLONG_MAX >> shift)) {
		*why_r = xasprintf("\"%s\" is too large", s);
		return false;
	}
	*n_r = v << shift;
	return true;
}

/* ---- setters: one per kind of value ---- */

/* conf_set_number - shared by the integer setters: parse and range-check */
static bool
conf_set_number(const struct conf_key *k, const char *value, bool suffix,
    unsigned long long *n_r, char **why_r)
{
	if (!conf_parse_number(value, suffix, n_r, why_r))
		return false;
	if (*n_r < k->min || *n_r > k->max) {
		*why_r = xasprintf("%s is out of range; use %llu to %llu%s%s", value,
		    k->min, k->max, k->hint != NULL ? " " : "",
		    k->hint != NULL ? k->hint : "");
		return false;
	}
	return true;
}

/* conf_set_uint - an unsigned count or seconds */
bool
conf_set_uint(void *field, const struct conf_key *k, const char *value, char **why_r)
{
	unsigned long long n;

	assert(k->max <= UINT_MAX);
	if (!conf_set_number(k, value, false, &n, why_r))
		return false;
	*(unsigned *)field = (unsigned)n;
	return true;
}

/* conf_set_size - a size_t in bytes, k/m/g suffixes allowed */
bool
conf_set_size(void *field, const struct conf_key *k, const char *value, char **why_r)
{
	unsigned long long n;

	assert(k->max <= SIZE_MAX);
	if (!conf_set_number(k, value, true, &n, why_r))
		return false;
	*(size_t *)field = (size_t)n;
	return true;
}

/* conf_set_bool - yes/no/true/false/on/off/1/0 */
bool
conf_set_bool(void *field, const struct conf_key *k, const char *value, char **why_r)
{
	static const char *const yes[] = { "yes", "true", "on", "1" };
	static const char *const no[] = { "no", "false", "off", "0" };
	size_t i;

	for (i = 0; i < ARRAY_SIZE(yes); i++) {
		if (str_casecmp(value, yes[i]) == 0) {
			*(bool *)field = true;
			return true;
		}
		if (str_casecmp(value, no[i]) == 0) {
			*(bool *)field = false;
			return true;
		}
	}
	*why_r = xasprintf("\"%s\" is not a boolean; write yes or no", value);
	return false;
}

/* conf_words_list - "a | b | c" for error messages (caller frees) */
static char *
conf_words_list(const char *const *words)
{
	struct buf b;
	size_t i;

	buf_init(&b);
	for (i = 0; words[i] != NULL; i++)
		buf_printf(&b, "%s%s", i > 0 ? " | " : "", words[i]);
	return b.data;
}

/* conf_find_word - index of value in words (case-insensitive), -1 if absent */
static int
conf_find_word(const struct conf_key *k, const char *value, char **why_r)
{
	char *list;
	int i;

	for (i = 0; k->words[i] != NULL; i++)
		if (str_casecmp(value, k->words[i]) == 0)
			return i;
	list = conf_words_list(k->words);
	*why_r = xasprintf("\"%s\" is not one of %s", value, list);
	free(list);
	return -1;
}

/* conf_set_enum writes an int: every enum it sets must be int-sized. */
_Static_assert(sizeof(enum conf_role) == sizeof(int) && sizeof(enum conf_tls) == sizeof(int) &&
    sizeof(enum conf_bare_newline) == sizeof(int) &&
    sizeof(enum conf_relay_tls) == sizeof(int) &&
    sizeof(enum conf_lmtp_mixed) == sizeof(int), "conf enums are int-sized");

/* conf_set_enum - one of k->words into an enum field */
bool
conf_set_enum(void *field, const struct conf_key *k, const char *value, char **why_r)
{
	int i;

	if ((i = conf_find_word(k, value, why_r)) < 0)
		return false;
	memcpy(field, &i, sizeof(i));
	return true;
}

/* conf_set_word - one of k->words into a string field (stored lower-case) */
bool
conf_set_word(void *field, const struct conf_key *k, const char *value, char **why_r)
{
	int i;

	if ((i = conf_find_word(k, value, why_r)) < 0)
		return false;
	free(*(char **)field);
	*(char **)field = xstrdup(k->words[i]);
	return true;
}

/* conf_set_optstr - a string; empty means unset (NULL) */
bool
conf_set_optstr(void *field, const struct conf_key *k, const char *value, char **why_r)
{
	free(*(char **)field);
	*(char **)field = *value != '\0' ? xstrdup(value) : NULL;
	return true;
}

/* conf_set_hostname - our name in the banner, EHLO and Authentication-Results */
bool
conf_set_hostname(void *field, const struct conf_key *k, const char *value, char **why_r)
{
	char *h = xstrdup(value);
	size_t len = strlen(h);

	if (len > 0 && h[len - 1] == '.')
		h[len - 1] = '\0';
	if (!conf_domain_ok(h)) {
		*why_r = xasprintf("\"%s\" is not a host name; write e.g. mx.example.org",
		    value);
		free(h);
		return false;
	}
	free(*(char **)field);
	*(char **)field = h;
	return true;
}

/* conf_set_readable - a file path that must be readable now (empty: unset) */
bool
conf_set_readable(void *field, const struct conf_key *k, const char *value, char **why_r)
{
	FILE *f;

	if (*value != '\0') {
		if ((f = fopen(value, "r")) == NULL) {
			*why_r = xasprintf("\"%s\": cannot read it: %s", value, strerror(errno));
			return false;
		}
		fclose(f);
	}
	return conf_set_optstr(field, k, value, why_r);
}

/* conf_set_resolver - "system", or IP addresses with optional @PORT */
bool
conf_set_resolver(void *field, const struct conf_key *k, const char *value, char **why_r)
{
	char **v, *at;
	size_t n, i;
	unsigned port;
	bool ok = true;

	conf_split(value, &v, &n);
	if (n == 1 && str_casecmp(v[0], "system") == 0) {
		conf_strv_free(v, n);
		free(*(char **)field);
		*(char **)field = xstrdup("system");
		return true;
	}
	for (i = 0; ok && i < n; i++) {
		if ((at = strchr(v[i], '@')) != NULL) {
			*at = '\0';
			ok = conf_parse_port(at + 1, &port);
		}
		ok = ok && (conf_is_ipv4(v[i]) || conf_is_ipv6(v[i]));
	}
	conf_strv_free(v, n);
	if (n == 0 || !ok) {
		*why_r = xasprintf("\"%s\": write system, or IP addresses of DNS servers "
		    "(ADDRESS or ADDRESS@PORT) separated by spaces", value);
		return false;
	}
	free(*(char **)field);
	*(char **)field = xstrdup(value);
	return true;
}

/* conf_set_metrics - HOST:PORT for the Prometheus endpoint; empty = off (NULL) */
bool
conf_set_metrics(void *field, const struct conf_key *k, const char *value, char **why_r)
{
	char *host, *port;

	if (*value != '\0') {
		if (!conf_parse_hostport(value, CONF_HOST_BIND, &host, &port, why_r))
			return false;
		free(host);
		free(port);
	}
	return conf_set_optstr(field, k, value, why_r);
}

/* conf_set_domains - local_domains: a list, lower-cased, trailing dot dropped */
bool
conf_set_domains(void *field, const struct conf_key *k, const char *value, char **why_r)
{
	struct conf *c = field;
	char ***out = &c->local_domains;
	size_t *nout = &c->nlocal_domains;
	char **v;
	size_t n, i, j, len;

	conf_split(value, &v, &n);
	for (i = 0; i < n; i++) {
		len = strlen(v[i]);
		if (len > 1 && v[i][len - 1] == '.')
			v[i][len - 1] = '\0';
		str_lower(v[i]);
		if (!conf_domain_ok(v[i])) {
			*why_r = xasprintf("\"%s\" is not a domain name", v[i]);
			conf_strv_free(v, n);
			return false;
		}
	}
	conf_strv_free(*out, *nout);
	*out = NULL;
	*nout = 0;
	for (i = 0; i < n; i++) {
		for (j = 0; j < *nout; j++)
			if (strcmp((*out)[j], v[i]) == 0)
				break;
		if (j == *nout)
			conf_strv_push(out, nout, v[i]);
		else
			free(v[i]);
	}
	free(v);
	return true;
}

/* conf_set_listen - one or more HOST:PORT / [V6]:PORT to bind */
bool
conf_set_listen(void *field, const struct conf_key *k, const char *value, char **why_r)
{
	struct conf_listener *l = field;
	char **v, *host, *port;
	size_t n, i, j;

	conf_split(value, &v, &n);
	if (n == 0) {
		*why_r = xstrdup("no address; write HOST:PORT, e.g. 0.0.0.0:25 or [::]:25");
		free(v);
		return false;
	}
	for (i = 0; i < n; i++) {
		if (!conf_parse_hostport(v[i], CONF_HOST_BIND, &host, &port, why_r)) {
			conf_strv_free(v, n);
			return false;
		}
		free(host);
		free(port);
		for (j = 0; j < i; j++) {
			if (strcmp(v[i], v[j]) == 0) {
				*why_r = xasprintf("\"%s\" is listed twice", v[i]);
				conf_strv_free(v, n);
				return false;
			}
		}
	}
	conf_strv_free(l->listen, l->nlisten);
	l->listen = v;
	l->nlisten = n;
	return true;
}

/* conf_set_filters - the chain, names in order (checked against the registry later) */
bool
conf_set_filters(void *field, const struct conf_key *k, const char *value, char **why_r)
{
	struct conf_listener *l = field;
	char **v;
	size_t n, i;

	conf_split(value, &v, &n);
	for (i = 0; i < n; i++) {
		if (!conf_name_ok(v[i], "-_.:")) {
			*why_r = xasprintf("\"%s\" is not a filter name (letters, digits, "
			    "'-', '_', '.', and ':' as in milter:NAME)", v[i]);
			conf_strv_free(v, n);
			return false;
		}
	}
	conf_strv_free(l->filters, l->nfilters);
	l->filters = v;
	l->nfilters = n;
	return true;
}

/* conf_nets_parse - ADDRESS or ADDRESS/PREFIX words, IPv4 or IPv6, into *nets (freed first) */
bool
conf_nets_parse(const char *value, struct conf_nets *nets, char **why_r)
{
	struct conf_nets parsed = { NULL, 0 };
	char **v;
	size_t n, i;

	conf_split(value, &v, &n);
	parsed.v = xcalloc(n ? n : 1, sizeof(*parsed.v));
	for (i = 0; i < n; i++) {
		if (!cidr_parse(v[i], &parsed.v[i])) {
			*why_r = xasprintf("\"%s\" is not an address or network; write "
			    "e.g. 192.0.2.0/24 or 2001:db8::/32", v[i]);
			free(parsed.v);
			conf_strv_free(v, n);
			return false;
		}
	}
	parsed.n = n;
	conf_strv_free(v, n);
	free(nets->v);
	*nets = parsed;
	return true;
}

/* conf_set_nets - a struct conf_nets (limit_exempt, greet_pause_exempt) */
bool
conf_set_nets(void *field, const struct conf_key *k, const char *value, char **why_r)
{
	(void)k;
	return conf_nets_parse(value, field, why_r);
}

/* conf_parse_bool - yes/no/true/false/on/off/1/0 into *b, for filters' own keys */
bool
conf_parse_bool(const char *value, bool *b)
{
	char *why = NULL;
	bool ok = conf_set_bool(b, NULL, value, &why);

	free(why);
	return ok;
}

/* conf_set_cidrs - proxy_trusted: ADDRESS or ADDRESS/PREFIX, IPv4 or IPv6 */
bool
conf_set_cidrs(void *field, const struct conf_key *k, const char *value, char **why_r)
{
	struct conf_listener *l = field;
	char **v, *slash, *addr;
	unsigned long long prefix;
	size_t n, i;
	char *ignored = NULL;
	bool ok, v6;

	conf_split(value, &v, &n);
	for (i = 0; i < n; i++) {
		addr = xstrdup(v[i]);
		prefix = 0;
		if ((slash = strchr(addr, '/')) != NULL)
			*slash++ = '\0';
		v6 = conf_is_ipv6(addr);
		ok = v6 || conf_is_ipv4(addr);
		if (ok && slash != NULL) {
			ok = conf_parse_number(slash, false, &prefix, &ignored) &&
			    prefix <= (v6 ? 128u : 32u);
			free(ignored);
			ignored = NULL;
		}
		free(addr);
		if (!ok) {
			*why_r = xasprintf("\"%s\" is not an address or network; write "
			    "e.g. 10.0.0.0/8 or fd00::/8", v[i]);
			conf_strv_free(v, n);
			return false;
		}
	}
	conf_strv_free(l->proxy_trusted, l->nproxy_trusted);
	l->proxy_trusted = v;
	l->nproxy_trusted = n;
	return true;
}

/* conf_relay_clear - free a relay's strings and reset it to RELAY_NONE */
void
conf_relay_clear(struct conf_relay *r)
{
	free(r->path);
	free(r->host);
	free(r->port);
	free(r->spec);
	memset(r, 0, sizeof(*r));
	r->kind = RELAY_NONE;
}

/* conf_parse_relay - lmtp:unix:PATH | lmtp:HOST:PORT | smtp:HOST:PORT | maildir:DIR */
static bool
conf_parse_relay(const char *value, bool maildir_ok, struct conf_relay *r, char **why_r)
{
	const char *rest;

	conf_relay_clear(r);
	if (strncmp(value, "maildir:", 8) == 0 && maildir_ok) {
		if (value[8] == '\0') {
			*why_r = xstrdup("maildir: needs a directory, e.g. maildir:/var/mail");
			return false;
		}
		r->kind = RELAY_MAILDIR;
		r->path = xstrdup(value + 8);
	} else if (strncmp(value, "lmtp:unix:", 10) == 0) {
		if (value[10] == '\0') {
			*why_r = xstrdup("lmtp:unix: needs a socket path, e.g. "
			    "lmtp:unix:/run/dovecot/lmtp");
			return false;
		}
		r->kind = RELAY_LMTP;
		r->is_unix = true;
		r->path = xstrdup(value + 10);
	} else if (strncmp(value, "lmtp:", 5) == 0 || strncmp(value, "smtp:", 5) == 0) {
		rest = value + 5;
		if (strncmp(rest, "unix:", 5) == 0) {
			*why_r = xasprintf("\"%s\": unix sockets are for lmtp: only; "
			    "write lmtp:unix:PATH or smtp:HOST:PORT", value);
			return false;
		}
		if (*rest == '/') {
			*why_r = xasprintf("\"%s\": a unix socket is written lmtp:unix:%s",
			    value, rest);
			return false;
		}
		if (!conf_parse_hostport(rest, CONF_HOST_ANY, &r->host, &r->port, why_r))
			return false;
		r->kind = value[0] == 'l' ? RELAY_LMTP : RELAY_SMTP;
	} else {
		*why_r = xasprintf("\"%s\" is not a relay; write %s", value, maildir_ok ?
		    "lmtp:unix:PATH, lmtp:HOST:PORT, smtp:HOST:PORT or maildir:DIR" :
		    "lmtp:unix:PATH, lmtp:HOST:PORT or smtp:HOST:PORT");
		return false;
	}
	r->spec = xstrdup(value);
	return true;
}

/* conf_set_relay - the backend */
bool
conf_set_relay(void *field, const struct conf_key *k, const char *value, char **why_r)
{
	if (*value == '\0') {
		*why_r = xstrdup("empty; write lmtp:unix:PATH, lmtp:HOST:PORT, "
		    "smtp:HOST:PORT or maildir:DIR");
		return false;
	}
	return conf_parse_relay(value, true, field, why_r);
}

/* conf_set_bounce - where DSNs go; empty = the relay */
bool
conf_set_bounce(void *field, const struct conf_key *k, const char *value, char **why_r)
{
	if (*value == '\0') {
		conf_relay_clear(field);
		return true;
	}
	return conf_parse_relay(value, false, field, why_r);
}

/* conf_set_endpoint - unix:PATH or HOST:PORT (Redis, Dovecot auth); empty = unset */
bool
conf_set_endpoint(void *field, const struct conf_key *k, const char *value, char **why_r)
{
	char *host, *port;

	if (strncmp(value, "unix:", 5) == 0) {
		if (value[5] == '\0') {
			*why_r = xstrdup("unix: needs a socket path");
			return false;
		}
	} else if (*value != '\0') {
		/* "inet:HOST:PORT" as Postfix writes it, or plain "HOST:PORT" */
		const char *hp = strncmp(value, "inet:", 5) == 0 ? value + 5 : value;

		if (!conf_parse_hostport(hp, CONF_HOST_ANY, &host, &port, why_r)) {
			free(*why_r);
			*why_r = xasprintf("\"%s\": write unix:PATH, inet:HOST:PORT or HOST:PORT",
			    value);
			return false;
		}
		free(host);
		free(port);
	}
	return conf_set_optstr(field, k, value, why_r);
}

