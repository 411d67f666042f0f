/*
 * dnsbl.c - the "dnsbl" filter: postscreen-style scoring of the client
 * address against DNS block lists (DNSBL) and allow lists (DNSWL).
 *
 * At CONNECT it asks every distinct zone of "zones =" for the client
 * address (reversed octets, or reversed nibbles for IPv6) through the
 * loop's resolver, all at once, and decides when every zone answered (each
 * query is bounded by resolver_timeout).  Each entry whose zone listed the
 * client, and whose =filter (if any) matches one answer address, adds its
 * weight; a score of threshold or more is refused with
 *   554 5.7.1 Service unavailable; client [ADDR] blocked using ZONE[, ZONE...]
 * naming the zones of the positive entries that matched (reply_text = TEXT
 * in place of "Service unavailable": a PBL instance on port 25 points
 * residential clients to submission).  Only A records
 * inside 127.0.0.0/8 count: an answer outside it, or a "query refused /
 * rate limited" code (127.255.255.252..255), makes that zone's answer an
 * error (event=dnsbl_error), never a listing; SERVFAIL and timeouts make
 * the zone not count (event=dnsbl_error status=), or, with temperror =
 * tempfail, answer 421 4.4.3 when the failed zones could have changed the
 * decision.  NXDOMAIN and NODATA: not listed.  A client that is no IP
 * address is not looked up.  Caching is the resolver's (libunbound's):
 * nothing of our own.  The reply texts are fixed but for reply_text,
 * printable US-ASCII checked at configure() and never used as a format.
 *
 * One log line per decision: event=dnsbl client= score= threshold=
 * listed="zone,..." action=reject|pass|tempfail.
 *
 * Threads: the instance is read-only after configure(); callbacks run on the
 * session's loop (no may_block); the queries are asynchronous
 * (resolver_query + filter_wait_begin); cancel() and close() drop the
 * queries in flight and free the per-session state.  Never waits on DNS on
 * the loop.
 */
#include "config.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/types.h>
#include <netinet/in.h>
#include <arpa/inet.h>

#include "util.h"
#include "log.h"
#include "resolver.h"
#include "filter.h"
#include "dnsbl.h"

#define DNSBL_KEYS	"zones, threshold, temperror, reply_text, timeout and default_action"
#define DNSBL_REPLY_TEXT_MAX	150	/* octets of reply_text */
/* Between entries: white space (a value continued on indented lines too) and commas */
#define DNSBL_SEPARATORS	" \t\r\n,"

struct dnsbl {
	struct dnsbl_sites l;
	int threshold;
	bool tempfail;		/* temperror = tempfail */
	char *reply_text;	/* in place of "Service unavailable" when refusing, or NULL */
};

/* One zone's query of a session. */
struct dnsbl_query {
	struct dnsbl_sess *s;
	struct resolver_query *q;	/* in flight, or NULL */
	size_t zone;
};

/* Per-session state while the queries are out. */
struct dnsbl_sess {
	const struct dnsbl *d;
	uint64_t id;
	struct filter_wait *w;	/* the pending connect, or NULL */
	struct dnsbl_query *qs;	/* one per zone */
	size_t npending;
	bool *hits;		/* per entry */
	bool *failed;		/* per zone: SERVFAIL, timeout, not asked */
	char client[INET6_ADDRSTRLEN];
};

/* ---- the zone list (Postfix's postscreen_dnsbl_sites) ---- */

/* dnsbl_zone_ok - a DNS name of letters, digits, '-' and '_', labels 1..63 */
static bool
dnsbl_zone_ok(const char *z, size_t len)
{
	size_t i, label = 0;

	if (len == 0 || len > DNSBL_ZONE_MAX)
		return false;
	for (i = 0; i < len; i++) {
		unsigned char c = (unsigned char)z[i];

		if (c == '.') {
			if (label == 0)
				return false;
			label = 0;
		} else if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
		    (c >= '0' && c <= '9') || c == '-' || c == '_') {
			if (++label > 63)
				return false;
		} else
			return false;
	}
	return label > 0;
}

/* dnsbl_number - a decimal 0..max at *p; advances it */
static bool
dnsbl_number(const char **p, const char *end, unsigned max, unsigned *out)
{
	unsigned v = 0;
	const char *s = *p;

	if (s >= end || *s < '0' || *s > '9')
		return false;
	while (s < end && *s >= '0' && *s <= '9') {
		v = v * 10 + (unsigned)(*s++ - '0');
		if (v > max)
			return false;
	}
	*p = s;
	*out = v;
	return true;
}

/* dnsbl_octet - one octet of a filter, "n" or "[n;a..b;...]", into its bit set */
static bool
dnsbl_octet(const char **p, const char *end, uint8_t set[32])
{
	unsigned lo, hi, v;
	bool bracket = *p < end && **p == '[';

	if (bracket)
		(*p)++;
	for (;;) {
		if (!dnsbl_number(p, end, 255, &lo))
			return false;
		hi = lo;
		if (bracket && end - *p >= 2 && (*p)[0] == '.' && (*p)[1] == '.') {
			*p += 2;
			if (!dnsbl_number(p, end, 255, &hi) || hi < lo)
				return false;
		}
		for (v = lo; v <= hi; v++)
			set[v / 8] |= (uint8_t)(1u << (v % 8));
		if (!bracket)
			return true;
		if (*p < end && **p == ';') {
			(*p)++;
			continue;
		}
		if (*p >= end || **p != ']')
			return false;
		(*p)++;
		return true;
	}
}

/* dnsbl_filter - "d.d.d.d" (p..end) into e's octet sets */
static bool
dnsbl_filter(const char *p, const char *end, struct dnsbl_site *e)
{
	int i;

	for (i = 0; i < 4; i++) {
		if (i > 0 && (p >= end || *p++ != '.'))
			return false;
		if (!dnsbl_octet(&p, end, e->octet[i]))
			return false;
	}
	return p == end;
}

/* dnsbl_weight - "*[-+]n" (p..end) */
static bool
dnsbl_weight(const char *p, const char *end, int *w)
{
	bool neg = false;
	unsigned v;

	if (p < end && (*p == '-' || *p == '+'))
		neg = *p++ == '-';
	if (!dnsbl_number(&p, end, DNSBL_WEIGHT_MAX, &v) || p != end)
		return false;
	*w = neg ? -(int)v : (int)v;
	return true;
}

/* dnsbl_zone_index - the zone's index in l, added if new */
static size_t
dnsbl_zone_index(struct dnsbl_sites *l, const char *z, size_t len)
{
	size_t i;

	for (i = 0; i < l->nzones; i++)
		if (strlen(l->zones[i]) == len && str_ncasecmp(l->zones[i], z, len) == 0)
			return i;
	l->zones = xreallocarray(l->zones, l->nzones + 1, sizeof(*l->zones));
	l->zones[l->nzones] = xstrndup(z, len);
	str_lower(l->zones[l->nzones]);
	return l->nzones++;
}

/* dnsbl_entry - one "zone[=filter][*weight]" (p..end) appended to l */
static bool
dnsbl_entry(struct dnsbl_sites *l, const char *p, const char *end, char **err_r)
{
	struct dnsbl_site e;
	const char *star = NULL, *eq, *zend;
	int len = (int)(end - p);

	memset(&e, 0, sizeof(e));
	e.weight = 1;
	for (eq = p; eq < end; eq++)
		if (*eq == '*')
			star = eq;
	if (star != NULL && !dnsbl_weight(star + 1, end, &e.weight)) {
		*err_r = xasprintf("\"%.*s\": the weight after '*' is no number in -%d..%d", len, p,
		    DNSBL_WEIGHT_MAX, DNSBL_WEIGHT_MAX);
		return false;
	}
	zend = star != NULL ? star : end;
	eq = memchr(p, '=', (size_t)(zend - p));
	if (eq != NULL) {
		e.filtered = true;
		if (!dnsbl_filter(eq + 1, zend, &e)) {
			*err_r = xasprintf("\"%.*s\": the filter after '=' is not d.d.d.d "
			    "(each d 0..255 or [n;a..b])", len, p);
			return false;
		}
	}
	if (!dnsbl_zone_ok(p, (size_t)((eq != NULL ? eq : zend) - p))) {
		*err_r = xasprintf("\"%.*s\": the zone is no DNS name (at most %d octets)", len, p,
		    DNSBL_ZONE_MAX);
		return false;
	}
	e.zone = dnsbl_zone_index(l, p, (size_t)((eq != NULL ? eq : zend) - p));
	l->sites = xreallocarray(l->sites, l->nsites + 1, sizeof(*l->sites));
	l->sites[l->nsites++] = e;
	return true;
}

/* dnsbl_sites_parse - append the entries of spec to l */
bool
dnsbl_sites_parse(const char *spec, struct dnsbl_sites *l, char **err_r)
{
	const char *p = spec, *start;

	for (;;) {
		p += strspn(p, DNSBL_SEPARATORS);
		if (*p == '\0')
			return true;
		start = p;
		p += strcspn(p, DNSBL_SEPARATORS);
		if (!dnsbl_entry(l, start, p, err_r))
			return false;
	}
}

/* dnsbl_sites_free - everything the parser made */
void
dnsbl_sites_free(struct dnsbl_sites *l)
{
	size_t i;

	for (i = 0; i < l->nzones; i++)
		free(l->zones[i]);
	free(l->zones);
	free(l->sites);
	memset(l, 0, sizeof(*l));
}

/* ---- answers ---- */

/* dnsbl_site_match - does a pass e's filter (no filter: any address) */
bool
dnsbl_site_match(const struct dnsbl_site *e, const unsigned char a[4])
{
	int i;

	if (!e->filtered)
		return true;
	for (i = 0; i < 4; i++)
		if ((e->octet[i][a[i] / 8] & (1u << (a[i] % 8))) == 0)
			return false;
	return true;
}

/* dnsbl_code - what one answer address means */
enum dnsbl_code
dnsbl_code(const unsigned char a[4])
{
	if (a[0] != 127)
		return DNSBL_CODE_OUTSIDE;
	if (a[1] == 255 && a[2] == 255 && a[3] >= 252)
		return DNSBL_CODE_REFUSED;
	return DNSBL_CODE_LISTED;
}

/* dnsbl_zone_answer - judge zone z's answer, marking the entries it matched */
enum dnsbl_zone_result
dnsbl_zone_answer(const struct dnsbl_sites *l, size_t z, const struct resolver_answer *a,
    bool *hits, char *bad)
{
	const unsigned char *ip;
	bool listed = false;
	size_t i, j;

	switch (a->status) {
	case RESOLVER_OK:
		break;
	case RESOLVER_NODATA:
	case RESOLVER_NXDOMAIN:
		return DNSBL_ZONE_CLEAN;
	default:
		return DNSBL_ZONE_TEMP;
	}
	for (i = 0; i < a->count; i++) {
		ip = (const unsigned char *)a->data[i];
		if (a->len[i] != 4)
			continue;
		if (dnsbl_code(ip) != DNSBL_CODE_LISTED) {
			snprintf(bad, DNSBL_ADDR_BUF, "%u.%u.%u.%u", ip[0], ip[1], ip[2], ip[3]);
			return DNSBL_ZONE_BAD;
		}
	}
	for (j = 0; j < l->nsites; j++) {
		if (l->sites[j].zone != z)
			continue;
		for (i = 0; i < a->count; i++) {
			if (a->len[i] == 4 &&
			    dnsbl_site_match(&l->sites[j], (const unsigned char *)a->data[i])) {
				hits[j] = listed = true;
				break;
			}
		}
	}
	return listed ? DNSBL_ZONE_LISTED : DNSBL_ZONE_CLEAN;
}

/* dnsbl_client - the address to look up, IPv4-mapped IPv6 as IPv4 */
bool
dnsbl_client(const struct sockaddr *sa, struct sockaddr_storage *out)
{
	const struct sockaddr_in6 *s6 = (const struct sockaddr_in6 *)(const void *)sa;
	struct sockaddr_in *s4 = (struct sockaddr_in *)(void *)out;

	memset(out, 0, sizeof(*out));
	if (sa->sa_family == AF_INET) {
		memcpy(out, sa, sizeof(struct sockaddr_in));
		return true;
	}
	if (sa->sa_family != AF_INET6)
		return false;
	if (!IN6_IS_ADDR_V4MAPPED(&s6->sin6_addr)) {
		memcpy(out, sa, sizeof(struct sockaddr_in6));
		return true;
	}
	s4->sin_family = AF_INET;
	memcpy(&s4->sin_addr, &s6->sin6_addr.s6_addr[12], 4);
	return true;
}

/* dnsbl_qname - the client's reverse name (resolver_reverse_name's) under zone */
bool
dnsbl_qname(const struct sockaddr *sa, const char *zone, char *out, size_t size)
{
	char rev[128], *suffix;
	int n;

	if (!resolver_reverse_name(sa, rev, sizeof(rev)))
		return false;
	suffix = strstr(rev, sa->sa_family == AF_INET ? ".in-addr.arpa" : ".ip6.arpa");
	if (suffix == NULL)
		return false;
	*suffix = '\0';
	n = snprintf(out, size, "%s.%s", rev, zone);
	return n > 0 && (size_t)n < size && n <= 253;
}

/* ---- configuration ---- */

static void dnsbl_destroy(void *inst);

/* dnsbl_key - apply one key of the section; false + *err_r */
static bool
dnsbl_key(struct dnsbl *d, const struct conf_kv *kv, char **err_r)
{
	char *why = NULL;
	unsigned v;
	size_t n;

	if (strcmp(kv->key, "zones") == 0) {
		n = d->l.nsites;
		if (dnsbl_sites_parse(kv->value, &d->l, &why) && d->l.nsites > n)
			return true;
		*err_r = xasprintf("zones (line %d): %s", kv->line, why != NULL ? why : "empty");
		free(why);
		return false;
	}
	if (strcmp(kv->key, "threshold") == 0) {
		if (!filter_conf_uint(kv, 1, DNSBL_WEIGHT_MAX, &v, err_r))
			return false;
		d->threshold = (int)v;
		return true;
	}
	if (strcmp(kv->key, "temperror") == 0) {
		if (strcmp(kv->value, "ignore") == 0 || strcmp(kv->value, "tempfail") == 0) {
			d->tempfail = strcmp(kv->value, "tempfail") == 0;
			return true;
		}
		*err_r = xasprintf("temperror (line %d): \"%s\" is neither ignore nor tempfail",
		    kv->line, kv->value);
		return false;
	}
	if (strcmp(kv->key, "reply_text") == 0) {
		const char *c;

		for (c = kv->value; *c != '\0'; c++)
			if (*c < 0x20 || *c > 0x7e)
				break;
		if (*c != '\0' || c == kv->value || c - kv->value > DNSBL_REPLY_TEXT_MAX) {
			*err_r = xasprintf("reply_text (line %d): 1 to %d printable US-ASCII "
			    "characters", kv->line, DNSBL_REPLY_TEXT_MAX);
			return false;
		}
		free(d->reply_text);
		d->reply_text = xstrdup(kv->value);
		return true;
	}
	if (filter_chain_key(kv->key))
		return true;
	*err_r = xasprintf("unknown key \"%s\" (line %d); the keys are " DNSBL_KEYS, kv->key,
	    kv->line);
	return false;
}

/* dnsbl_configure - the section's keys; zones is required */
static void *
dnsbl_configure(const struct conf *conf, const struct conf_section *sec, char **err_r)
{
	struct dnsbl *d = xcalloc(1, sizeof(*d));
	size_t i;

	(void)conf;
	d->threshold = 1;
	for (i = 0; sec != NULL && i < sec->nkv; i++) {
		if (!dnsbl_key(d, &sec->kv[i], err_r)) {
			dnsbl_destroy(d);
			return NULL;
		}
	}
	if (d->l.nsites == 0) {
		*err_r = xstrdup("zones: no list given (zones = zone[=filter][*weight] ...)");
		dnsbl_destroy(d);
		return NULL;
	}
	return d;
}

/* dnsbl_destroy - the instance */
static void
dnsbl_destroy(void *inst)
{
	struct dnsbl *d = inst;

	dnsbl_sites_free(&d->l);
	free(d->reply_text);
	free(d);
}

/* ---- the decision ---- */

/* dnsbl_zones_text - "zone<sep>zone" of the zones marked, as many as fit */
static void
dnsbl_zones_text(const struct dnsbl *d, const bool *mark, const char *sep, char *out,
    size_t size)
{
	size_t z, len = 0;
	int n;

	out[0] = '\0';
	for (z = 0; z < d->l.nzones; z++) {
		if (!mark[z])
			continue;
		n = snprintf(out + len, size - len, "%s%s", len > 0 ? sep : "", d->l.zones[z]);
		if (n < 0 || (size_t)n >= size - len) {
			out[len] = '\0';	/* the zones named so far */
			return;
		}
		len += (size_t)n;
	}
}

/* dnsbl_hit_zones - mark the zones of the entries hit (positive: of weight > 0 only) */
static void
dnsbl_hit_zones(const struct dnsbl *d, const bool *hits, bool positive, bool *mark)
{
	size_t i;

	memset(mark, 0, d->l.nzones * sizeof(*mark));
	for (i = 0; i < d->l.nsites; i++)
		if (hits[i] && (!positive || d->l.sites[i].weight > 0))
			mark[d->l.sites[i].zone] = true;
}

/*
 * dnsbl_uncertain - could the zones that failed have changed the decision?
 * Their entries could have added any of their weights: the score lies
 * between score + their negative weights and score + their positive ones.
 */
static bool
dnsbl_uncertain(const struct dnsbl_sess *s, long score)
{
	const struct dnsbl *d = s->d;
	long lo = score, hi = score;
	size_t i;

	for (i = 0; i < d->l.nsites; i++) {
		if (!s->failed[d->l.sites[i].zone])
			continue;
		if (d->l.sites[i].weight < 0)
			lo += d->l.sites[i].weight;
		else
			hi += d->l.sites[i].weight;
	}
	return lo < d->threshold && hi >= d->threshold;
}

/* dnsbl_reply - the reply naming the client and the zones marked */
static void
dnsbl_reply(const struct dnsbl_sess *s, struct filter_reply *r, int code, const char *ecode,
    const char *what, const bool *mark)
{
	int n;

	r->code = code;
	str_copy(r->ecode, ecode, sizeof(r->ecode));
	n = snprintf(r->text, sizeof(r->text), "%s; client [%s] %s ", code / 100 != 5 ?
	    "Service temporarily unavailable" : s->d->reply_text != NULL ? s->d->reply_text :
	    "Service unavailable", s->client, what);
	if (n > 0 && (size_t)n < sizeof(r->text))
		dnsbl_zones_text(s->d, mark, ", ", r->text + n, sizeof(r->text) - (size_t)n);
}

/* dnsbl_decide - score what the zones said: the verdict and the log line */
static enum filter_verdict
dnsbl_decide(const struct dnsbl_sess *s, struct filter_reply *r)
{
	const struct dnsbl *d = s->d;
	enum filter_verdict v = FILTER_CONTINUE;
	char listed[512];
	bool *mark = xcalloc(d->l.nzones, sizeof(*mark));
	long score = 0;
	size_t i;

	for (i = 0; i < d->l.nsites; i++)
		if (s->hits[i])
			score += d->l.sites[i].weight;
	if (d->tempfail && dnsbl_uncertain(s, score)) {
		v = FILTER_TEMPFAIL;
		dnsbl_reply(s, r, 421, "4.4.3", "could not be checked against", s->failed);
	} else if (score >= d->threshold) {
		v = FILTER_REJECT;
		dnsbl_hit_zones(d, s->hits, true, mark);
		dnsbl_reply(s, r, 554, "5.7.1", "blocked using", mark);
	}
	dnsbl_hit_zones(d, s->hits, false, mark);
	dnsbl_zones_text(d, mark, ",", listed, sizeof(listed));
	log_info("id=" SESSION_ID_FMT " event=dnsbl client=%s score=%ld threshold=%d "
	    "listed=\"%s\" action=%s", SESSION_ID(s->id), s->client, score, d->threshold, listed,
	    v == FILTER_REJECT ? "reject" : v == FILTER_TEMPFAIL ? "tempfail" : "pass");
	free(mark);
	return v;
}

/* ---- the queries ---- */

/* dnsbl_sess_free - cancel what is in flight; the pending handle is given back */
static void
dnsbl_sess_free(struct dnsbl_sess *s)
{
	struct filter_wait *w;
	size_t i;

	if (s == NULL)
		return;
	for (i = 0; i < s->d->l.nzones; i++)
		resolver_cancel(s->qs[i].q);
	w = s->w;
	free(s->qs);
	free(s->hits);
	free(s->failed);
	free(s);
	if (w != NULL)
		filter_wait_done(w, FILTER_CONTINUE, NULL);	/* the chain dropped it */
}

/* dnsbl_note - a zone that does not count: logged, and kept when it may come back */
static void
dnsbl_note(struct dnsbl_sess *s, size_t z, enum dnsbl_zone_result res,
    const struct resolver_answer *a, const char *bad, const char *why)
{
	const char *zone = s->d->l.zones[z];

	if (res == DNSBL_ZONE_BAD)
		log_warn("id=" SESSION_ID_FMT " event=dnsbl_error client=%s zone=%s answer=%s",
		    SESSION_ID(s->id), s->client, zone, bad);
	else if (res == DNSBL_ZONE_TEMP) {
		s->failed[z] = true;
		log_warn("id=" SESSION_ID_FMT " event=dnsbl_error client=%s zone=%s status=%s",
		    SESSION_ID(s->id), s->client, zone,
		    a != NULL ? resolver_status_name(a->status) : why);
	}
}

/* dnsbl_answered - one zone's answer on the loop; the decision after the last */
static void
dnsbl_answered(void *arg, const struct resolver_answer *a)
{
	struct dnsbl_query *q = arg;
	struct dnsbl_sess *s = q->s;
	struct filter_wait *w;
	struct filter_ctx *ctx;
	struct filter_reply r;
	enum filter_verdict v;
	char bad[DNSBL_ADDR_BUF];

	q->q = NULL;
	dnsbl_note(s, q->zone, dnsbl_zone_answer(&s->d->l, q->zone, a, s->hits, bad), a, bad, NULL);
	if (--s->npending > 0)
		return;
	w = s->w;
	s->w = NULL;
	if ((ctx = filter_wait_ctx(w)) == NULL) {
		/* Not waited for any more (cancel frees s first; defensive): close frees s. */
		filter_wait_done(w, FILTER_CONTINUE, NULL);
		return;
	}
	memset(&r, 0, sizeof(r));
	v = dnsbl_decide(s, &r);
	*ctx->priv = NULL;
	dnsbl_sess_free(s);
	filter_wait_done(w, v, &r);
}

/* dnsbl_connect - ask every zone about the client; the verdict when all answered */
static enum filter_verdict
dnsbl_connect(void *inst, struct filter_ctx *ctx, struct filter_reply *r)
{
	const struct dnsbl *d = inst;
	struct sockaddr_storage ss;
	struct dnsbl_sess *s;
	char qname[DNSBL_QNAME_BUF];
	const char *err;
	enum filter_verdict v;
	size_t i;

	if (!dnsbl_client((const struct sockaddr *)&ctx->sess->client_sa, &ss))
		return FILTER_CONTINUE;	/* no IP address: nothing to look up */
	s = xcalloc(1, sizeof(*s));
	s->d = d;
	s->id = ctx->sess->id;
	s->qs = xcalloc(d->l.nzones, sizeof(*s->qs));
	s->hits = xcalloc(d->l.nsites, sizeof(*s->hits));
	s->failed = xcalloc(d->l.nzones, sizeof(*s->failed));
	sockaddr_text((const struct sockaddr *)&ss, s->client, sizeof(s->client));
	for (i = 0; i < d->l.nzones; i++) {
		s->qs[i].s = s;
		s->qs[i].zone = i;
		if (ctx->resolver != NULL &&
		    dnsbl_qname((const struct sockaddr *)&ss, d->l.zones[i], qname, sizeof(qname)))
			s->qs[i].q = resolver_query(ctx->resolver, qname, RESOLVER_A, dnsbl_answered,
			    &s->qs[i], &err);
		if (s->qs[i].q != NULL)
			s->npending++;
		else
			dnsbl_note(s, i, DNSBL_ZONE_TEMP, NULL, NULL,
			    ctx->resolver == NULL ? "no_resolver" : "error");
	}
	if (s->npending > 0 && (s->w = filter_wait_begin(ctx)) != NULL) {
		*ctx->priv = s;
		return FILTER_PENDING;
	}
	for (i = 0; i < d->l.nzones; i++) {
		if (s->qs[i].q == NULL)
			continue;
		resolver_cancel(s->qs[i].q);	/* no loop to wait on: those do not count */
		s->qs[i].q = NULL;
		dnsbl_note(s, i, DNSBL_ZONE_TEMP, NULL, NULL, "no_loop");
	}
	v = dnsbl_decide(s, r);
	dnsbl_sess_free(s);
	return v;
}

/* dnsbl_close - the chain stopped waiting, or the session ends: drop the queries */
static void
dnsbl_close(void *inst, struct filter_ctx *ctx)
{
	struct dnsbl_sess *s = *ctx->priv;

	(void)inst;
	*ctx->priv = NULL;
	dnsbl_sess_free(s);
}

const struct filter_ops dnsbl_ops = {
	.name = "dnsbl",
	.dns = true,
	.configure = dnsbl_configure,
	.destroy = dnsbl_destroy,
	.connect = dnsbl_connect,
	.close = dnsbl_close,
	.cancel = dnsbl_close,
};
