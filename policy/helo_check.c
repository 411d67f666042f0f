/*
 * helo_check.c - the "helo-check" filter: Postfix's HELO restrictions at
 * the HELO/EHLO stage ([filter helo-check], portier.conf(5)).
 *
 *   reject_invalid  (yes) the argument is neither a Domain nor an address
 *                   literal as the session's parser reads them (RFC 5321
 *                   with RFC 6531's UTF-8 labels; one final dot allowed):
 *                   501 5.5.2.  The session itself only refuses what is no
 *                   single printable token (empty, spaces, controls).
 *   reject_non_fqdn (no)  a name without a dot: 504 5.5.2, as Postfix's
 *                   reject_non_fqdn_helo_hostname (literals pass).
 *   reject_own      (yes) the client claims to be us: our [server]
 *                   hostname, one of local_domains, or an address literal
 *                   of the address it connected to or of any address of
 *                   this host's interfaces (read at configure time, so on
 *                   start and on SIGHUP): 550 5.7.1.
 *   exempt          (127.0.0.0/8 ::1) clients no check applies to: local
 *                   programs legitimately say "localhost" or [127.0.0.1].
 * Each refusal is logged as event=helo_refused with reason=.
 *
 * Inline and cheap; the instance is immutable after configure, so any
 * thread may call it.  Must never refuse what the rules above pass, nor
 * keep pointers into conf.
 */
#include "config.h"

#include <ifaddrs.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cidr.h"
#include "conf.h"
#include "log.h"
#include "smtp_parse.h"
#include "util.h"
#include "filter.h"
#include "helo_check.h"

#define HELO_CHECK_EXEMPT	"127.0.0.0/8 ::1"

struct helo_check {
	bool reject_invalid;
	bool reject_non_fqdn;
	bool reject_own;
	struct conf_nets exempt;
	struct cidr *local;	/* this host's interface addresses, full length */
	size_t nlocal;
};

/* helo_check_destroy - the instance */
static void
helo_check_destroy(void *inst)
{
	struct helo_check *h = inst;

	if (h == NULL)
		return;
	free(h->exempt.v);
	free(h->local);
	free(h);
}

/* helo_check_interfaces - every IP address of this host's interfaces into h->local */
static void
helo_check_interfaces(struct helo_check *h)
{
	struct ifaddrs *ifa, *i;
	size_t n = 0;

	if (getifaddrs(&ifa) != 0) {
		log_warn("event=helo_check error=\"getifaddrs failed: only the address a client "
		    "connected to counts as ours\"");
		return;
	}
	for (i = ifa; i != NULL; i = i->ifa_next)
		n++;
	h->local = xcalloc(n ? n : 1, sizeof(*h->local));
	for (i = ifa; i != NULL; i = i->ifa_next)
		if (i->ifa_addr != NULL && cidr_of(i->ifa_addr, 32, 128, &h->local[h->nlocal]))
			h->nlocal++;
	freeifaddrs(ifa);
}

/* helo_check_key - one key of the section; false + *err_r */
static bool
helo_check_key(struct helo_check *h, const struct conf_kv *kv, char **err_r)
{
	bool *b = NULL;
	char *why = NULL;

	if (strcmp(kv->key, "reject_invalid") == 0)
		b = &h->reject_invalid;
	else if (strcmp(kv->key, "reject_non_fqdn") == 0)
		b = &h->reject_non_fqdn;
	else if (strcmp(kv->key, "reject_own") == 0)
		b = &h->reject_own;
	else if (strcmp(kv->key, "exempt") == 0) {
		if (conf_nets_parse(kv->value, &h->exempt, &why))
			return true;
		*err_r = xasprintf("exempt at line %d: %s", kv->line, why);
		free(why);
		return false;
	} else {
		*err_r = xasprintf("unknown key \"%s\" at line %d; helo-check takes reject_invalid, "
		    "reject_non_fqdn, reject_own and exempt", kv->key, kv->line);
		return false;
	}
	if (conf_parse_bool(kv->value, b))
		return true;
	*err_r = xasprintf("%s = \"%s\" at line %d: expected yes or no", kv->key, kv->value,
	    kv->line);
	return false;
}

/* helo_check_configure - [filter helo-check] */
static void *
helo_check_configure(const struct conf *conf, const struct conf_section *sec, char **err_r)
{
	struct helo_check *h = xcalloc(1, sizeof(*h));
	char *why = NULL;
	size_t i;

	(void)conf;
	h->reject_invalid = true;
	h->reject_own = true;
	if (!conf_nets_parse(HELO_CHECK_EXEMPT, &h->exempt, &why))
		fatal("helo-check: default exempt: %s", why);
	for (i = 0; sec != NULL && i < sec->nkv; i++) {
		if (!helo_check_key(h, &sec->kv[i], err_r)) {
			helo_check_destroy(h);
			return NULL;
		}
	}
	if (h->reject_own)
		helo_check_interfaces(h);
	return h;
}

/* helo_check_literal_ours - "[1.2.3.4]" / "[IPv6:...]" naming local or one of h->local */
static bool
helo_check_literal_ours(const struct helo_check *h, const char *name,
    const struct sockaddr *local)
{
	char text[SMTP_PARSE_HELO_MAX + 1];
	const char *a = name + 1;
	struct cidr lit, mine;
	size_t i;

	if (str_ncasecmp(a, "IPv6:", 5) == 0)
		a += 5;
	str_copy(text, a, sizeof(text));
	text[strcspn(text, "]")] = '\0';
	if (!cidr_parse(text, &lit))
		return false;
	/* Through a socket address, so that an IPv4-mapped one compares as IPv4. */
	if (cidr_of(local, 32, 128, &mine) && memcmp(&mine, &lit, sizeof(lit)) == 0)
		return true;
	for (i = 0; i < h->nlocal; i++)
		if (memcmp(&h->local[i], &lit, sizeof(lit)) == 0)
			return true;
	return false;
}

/* helo_check_name_ours - name (a final dot ignored) is our hostname or one of local_domains */
static bool
helo_check_name_ours(const struct conf *c, const char *name)
{
	size_t len = strlen(name);

	if (len > 1 && name[len - 1] == '.')
		len--;
	return (strlen(c->hostname) == len && str_ncasecmp(c->hostname, name, len) == 0) ||
	    conf_is_local_domain(c, name);
}

/* helo_check_refuse - log why and fill r */
static enum filter_verdict
helo_check_refuse(const struct filter_session *sess, const char *helo, const char *reason,
    int code, const char *ecode, const char *text, struct filter_reply *r)
{
	char esc[SMTP_PARSE_HELO_MAX * 4 + 1];

	log_info("id=" SESSION_ID_FMT " event=helo_refused client=%s helo=%s reason=%s",
	    SESSION_ID(sess->id), sess->client_addr, log_escape(esc, sizeof(esc), helo,
	    strlen(helo)), reason);
	r->code = code;
	str_copy(r->ecode, ecode, sizeof(r->ecode));
	str_copy(r->text, text, sizeof(r->text));
	return FILTER_REJECT;
}

/* helo_check_helo - the checks, in the order of the comment at the top */
static enum filter_verdict
helo_check_helo(void *inst, struct filter_ctx *ctx, const char *helo, struct filter_reply *r)
{
	const struct helo_check *h = inst;
	const struct filter_session *sess = ctx->sess;
	struct smtp_parse_helo p;
	char name[SMTP_PARSE_HELO_MAX + 1];
	size_t len;

	if (cidr_any(h->exempt.v, h->exempt.n, (const struct sockaddr *)&sess->client_sa))
		return FILTER_CONTINUE;
	str_copy(name, helo, sizeof(name));
	len = strlen(name);
	if (len > 1 && name[0] != '[' && name[len - 1] == '.')
		name[--len] = '\0';	/* the DNS root: "mx.example.org." */
	if (smtp_parse_helo(name, len, &p) != SMTP_PARSE_OK)
		p.is_domain = p.is_literal = false;
	if (h->reject_invalid && !p.is_domain && !p.is_literal)
		return helo_check_refuse(sess, helo, "invalid", 501, "5.5.2",
		    "Invalid HELO name", r);
	if (h->reject_non_fqdn && !p.is_literal && strchr(name, '.') == NULL)
		return helo_check_refuse(sess, helo, "non_fqdn", 504, "5.5.2",
		    "Helo command rejected: need fully-qualified hostname", r);
	if (h->reject_own && (p.is_literal ?
	    helo_check_literal_ours(h, name, (const struct sockaddr *)&sess->local_sa) :
	    helo_check_name_ours(sess->conf, name)))
		return helo_check_refuse(sess, helo, "own", 550, "5.7.1",
		    "Client claims to be us", r);
	return FILTER_CONTINUE;
}

const struct filter_ops helo_check_ops = {
	.name = "helo-check",
	.configure = helo_check_configure,
	.destroy = helo_check_destroy,
	.helo = helo_check_helo,
};
