/*
 * port25.c - the mx role's policy as a filter, "port25": mail only for
 * local_domains, never relayed, no AUTH.
 *
 * A role implies it at the head of its chain (server.c): an mx listener
 * runs it first whether or not "filters =" lists it, and nothing removes it
 * (conf.c refuses it on another role, an instance of it, or "-port25").  It
 * runs even on a transaction another filter discarded (ops.safety), so a
 * discarded transaction is refused where a kept one would be.
 *
 * Decisions, in the very replies the session gave when they were its own:
 *   RCPT  550 5.7.1 relay access denied, unless the domain is one of
 *         local_domains (case-insensitive, a root dot ignored, never an
 *         address literal) and the local part carries no routing of its own:
 *         '%' (percent hack), '!' (bang path) and '@' (quoted) would let a
 *         backend that honours them (Postfix's allow_percent_hack and
 *         swap_bangpath are on by default) relay for us.  Source routes never
 *         reach a filter: the parser drops them (RFC 5321 4.1.1.3), so
 *         <@example.test:u@foreign.test> is judged as u@foreign.test.
 *         <postmaster> arrives as the session's postmaster@<first local
 *         domain>, which passes; without local_domains as
 *         postmaster@<hostname>, taken as such (RFC 5321 4.5.1).
 *   AUTH  503 5.5.1 authentication not enabled.  The session refuses the
 *         AUTH command on mx itself, before reading any credential: AUTH is
 *         not advertised there, and an extension the server did not offer
 *         is a protocol matter (and a filter's AUTH stage only runs after a
 *         login).  This callback makes the policy whole: should an AUTH
 *         stage ever reach an mx chain, it is refused.
 *   CONNECT 554 5.7.1 for a client inside subscriber_networks (or a
 *         network of subscriber_networks_file, one per line, '#' comments):
 *         a residential range that must submit on port 587 with AUTH.
 *         Checked by address alone (a PBL zone is the dnsbl filter's).
 * The session counts each REJECT at RCPT toward max_errors, as it did.
 *
 * Inline and cheap: per RCPT one scan of the address and a look-up in
 * local_domains, per connection one pass over the parsed networks, no
 * allocation, no per-session state.  The instance is immutable: any
 * thread may call it.  Must never accept a recipient the rules above
 * refuse.
 */
#include "config.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cidr.h"
#include "util.h"
#include "log.h"
#include "smtp_parse.h"
#include "filter.h"
#include "builtin.h"
#include "port25.h"

#define PORT25_POSTMASTER	"postmaster@"

#define PORT25_SUBSCRIBER_TEXT	"Residential client; submit mail on port 587 with AUTH"

struct port25 {
	struct cidr *nets;	/* subscriber networks */
	size_t nnets, anets;
};

/* port25_subscriber - sa (IPv4, IPv6, IPv4-mapped IPv6) inside one of inst's networks? */
bool
port25_subscriber(const void *inst, const struct sockaddr *sa)
{
	const struct port25 *p = inst;
	size_t i;

	for (i = 0; i < p->nnets; i++)
		if (cidr_contains(&p->nets[i], sa))
			return true;
	return false;
}

/* port25_add - parse the networks in words (space or comma separated); false + *err_r */
static bool
port25_add(struct port25 *p, const char *words, const char *where, char **err_r)
{
	const char *s = words;

	for (;;) {
		char word[128];
		size_t n;

		s += strspn(s, " \t,");
		n = strcspn(s, " \t,");
		if (n == 0)
			return true;
		if (p->nnets == p->anets) {
			p->anets = p->anets ? 2 * p->anets : 16;
			p->nets = xreallocarray(p->nets, p->anets, sizeof(*p->nets));
		}
		if (n < sizeof(word)) {
			memcpy(word, s, n);
			word[n] = '\0';
		}
		if (n >= sizeof(word) || !cidr_parse(word, &p->nets[p->nnets])) {
			*err_r = xasprintf("%s: \"%.*s\" is not an address or network; write e.g. "
			    "192.0.2.0/24 or 2001:db8::/32", where, (int)(n > 64 ? 64 : n), s);
			return false;
		}
		p->nnets++;
		s += n;
	}
}

/* port25_add_file - one network per line of path, '#' to the end of a line a comment */
static bool
port25_add_file(struct port25 *p, const char *path, char **err_r)
{
	FILE *f = fopen(path, "r");
	char line[1024], where[64 + 32];
	int lineno = 0;
	bool ok = true;

	if (f == NULL) {
		*err_r = xasprintf("subscriber_networks_file: %s: %s", path, strerror(errno));
		return false;
	}
	while (ok && fgets(line, sizeof(line), f) != NULL) {
		lineno++;
		line[strcspn(line, "#\r\n")] = '\0';
		snprintf(where, sizeof(where), "subscriber_networks_file line %d", lineno);
		ok = port25_add(p, line, where, err_r);
	}
	fclose(f);
	return ok;
}

/* port25_destroy - the instance */
static void
port25_destroy(void *inst)
{
	struct port25 *p = inst;

	free(p->nets);
	free(p);
}

/* port25_configure - [filter port25]: subscriber_networks, subscriber_networks_file */
static void *
port25_configure(const struct conf *conf, const struct conf_section *sec, char **err_r)
{
	struct port25 *p = xcalloc(1, sizeof(*p));
	size_t i;
	bool ok = true;

	(void)conf;
	for (i = 0; ok && sec != NULL && i < sec->nkv; i++) {
		const struct conf_kv *kv = &sec->kv[i];

		if (strcmp(kv->key, "subscriber_networks") == 0)
			ok = port25_add(p, kv->value, "subscriber_networks", err_r);
		else if (strcmp(kv->key, "subscriber_networks_file") == 0)
			ok = port25_add_file(p, kv->value, err_r);
		else {
			*err_r = xasprintf("unknown key \"%s\" at line %d; port25 takes "
			    "subscriber_networks and subscriber_networks_file", kv->key, kv->line);
			ok = false;
		}
	}
	if (!ok) {
		port25_destroy(p);
		return NULL;
	}
	return p;
}

/* port25_connect - a subscriber (residential) client submits on 587, not here */
static enum filter_verdict
port25_connect(void *inst, struct filter_ctx *ctx, struct filter_reply *r)
{
	const struct filter_session *sess = ctx->sess;

	if (!port25_subscriber(inst, (const struct sockaddr *)&sess->client_sa))
		return FILTER_CONTINUE;
	log_info("id=" SESSION_ID_FMT " event=subscriber_refused client=%s",
	    SESSION_ID(sess->id), sess->client_addr);
	r->code = 554;
	str_copy(r->ecode, "5.7.1", sizeof(r->ecode));
	str_copy(r->text, PORT25_SUBSCRIBER_TEXT, sizeof(r->text));
	return FILTER_REJECT;
}

/* port25_postmaster - the session's postmaster@<hostname>, without local_domains */
static bool
port25_postmaster(const struct conf *c, const char *rcpt)
{
	size_t n = sizeof(PORT25_POSTMASTER) - 1;

	return c->nlocal_domains == 0 && strncmp(rcpt, PORT25_POSTMASTER, n) == 0 &&
	    strcmp(rcpt + n, c->hostname) == 0;
}

/* port25_local - is rcpt ("local@domain", canonical) ours, with no routing in it? */
static bool
port25_local(const struct conf *c, const char *rcpt)
{
	const char *at = strrchr(rcpt, '@');

	if (at == NULL)
		return false;
	/* The first of '%', '!', '@' must be the '@' before the domain. */
	if (rcpt + strcspn(rcpt, "%!@") != at)
		return false;
	if (at[1] == '[')
		return false;	/* an address literal: never one of local_domains */
	return conf_is_local_domain(c, at + 1) || port25_postmaster(c, rcpt);
}

/* port25_rcpt - relay control: only local recipients */
static enum filter_verdict
port25_rcpt(void *inst, struct filter_ctx *ctx, const char *rcpt, struct filter_reply *r)
{
	const struct filter_session *sess = ctx->sess;
	char esc[SMTP_PARSE_ADDR_SIZE * 4];

	(void)inst;
	if (port25_local(sess->conf, rcpt))
		return FILTER_CONTINUE;
	log_info("id=" SESSION_ID_FMT " event=relay_denied client=%s rcpt=<%s>",
	    SESSION_ID(sess->id), sess->client_addr, log_escape(esc, sizeof(esc), rcpt,
	    strlen(rcpt)));
	return filter_builtin_refuse(r, R_RELAY_DENIED);
}

/* port25_auth - no AUTH on port 25 */
static enum filter_verdict
port25_auth(void *inst, struct filter_ctx *ctx, const char *user, struct filter_reply *r)
{
	(void)inst, (void)ctx, (void)user;
	return filter_builtin_refuse(r, R_AUTH_NOT_OFFERED);
}

const struct filter_ops port25_ops = {
	.name = "port25",
	.safety = true,
	.configure = port25_configure,
	.destroy = port25_destroy,
	.connect = port25_connect,
	.auth = port25_auth,
	.rcpt = port25_rcpt,
};
