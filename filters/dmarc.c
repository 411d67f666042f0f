/*
 * dmarc.c - the "dmarc" filter (RFC 7489) over libopendmarc.
 *
 * At end of message, after spf and dkim-verify in the chain, it takes the
 * author domain from the one From: field (as the filters before it left the
 * header block), fetches the DMARC record (_dmarc.<domain>, then
 * _dmarc.<organizational domain> when there is none) through the loop's
 * resolver, and hands the record, the SPF result (txn->facts, method "spf":
 * the MAIL FROM identity, or the HELO one for the null sender) and every
 * DKIM result (method "dkim": d= and s=) to libopendmarc, which parses the
 * record and judges alignment (adkim/aspf, relaxed by the public suffix
 * list) and the policy (p, or sp for a subdomain).  pct is applied here
 * (RFC 7489 6.6.4: a message not sampled gets the next milder policy).
 *
 * Results: one Authentication-Results item, "dmarc=pass|fail|none|
 * temperror|permerror (p=reject dis=none) header.from=example.com", and a
 * fact (method "dmarc", domain the From: domain, scope the domain's policy
 * word when a record was judged, else NULL).  Verdicts, by the keys of
 * [filter dmarc] (doc/portier.conf.5): a failing message of a reject policy
 * is refused (reject = reject: 550 5.7.1, the text names the domain and its
 * policy), of a quarantine one marked (quarantine = quarantine: the
 * QUARANTINE verdict); none, pass, no record and permerror only tag.  A
 * From: that RFC 7489 6.6.1 says to refuse (none, several fields, several
 * addresses, unparseable, no domain) is refused (bad_from = reject).  A DNS
 * failure only tags (temperror = tag): our own DNS trouble never rejects
 * mail.  monitor = yes turns every verdict into a tag.  A From: domain in
 * UTF-8 is not looked up (no IDNA here): dmarc=none.
 *
 * libopendmarc never does DNS here: only opendmarc_policy_store_dmarc and
 * the judging calls are used.  Its public suffix list is one table for the
 * whole process (opendmarc_tld_read_file): configure() loads the path it is
 * given when it is not the table loaded already (or the file changed), so
 * the last instance configured decides when several name different lists.
 *
 * Threads: the instance is read-only after configure(); callbacks run on the
 * session's loop (no may_block), the lookups are asynchronous
 * (resolver_query + filter_wait_begin), cancel() drops a lookup in flight,
 * close() frees the per-session state.  Never waits on DNS on the loop.
 */
#include "config.h"

#include <errno.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <netinet/in.h>

#include <opendmarc/dmarc.h>

#include "util.h"
#include "log.h"
#include "resolver.h"
#include "filter.h"
#include "dmarc.h"

/* Exported by libopendmarc but missing from its header. */
int opendmarc_get_tld(u_char *domain, u_char *tld, size_t tld_len);

#define DMARC_DOMAIN_MAX	DMARC_DOMAIN_BUF
#define DMARC_QNAME_MAX		(DMARC_DOMAIN_MAX + 8)	/* "_dmarc." + domain */
#define DMARC_NAME_MAX		(253 - 7)	/* the longest domain "_dmarc." fits before */

/* What a result asks the filter to do. */
enum dmarc_action {
	DMARC_ACT_TAG,		/* Authentication-Results only */
	DMARC_ACT_QUARANTINE,	/* the QUARANTINE verdict */
	DMARC_ACT_REJECT,	/* 550 5.7.1 */
	DMARC_ACT_TEMPFAIL,	/* 451 4.4.3 */
};

struct dmarc {
	enum dmarc_action on_reject;	/* reject = reject | quarantine | tag */
	enum dmarc_action on_quarantine;	/* quarantine = quarantine | tag */
	enum dmarc_action on_temperror;	/* temperror = tag | tempfail */
	enum dmarc_action on_bad_from;	/* bad_from = reject | tag */
	bool monitor;		/* monitor = yes: results only, no verdict ever */
	char *psl;		/* public_suffix_list */
};

/* DMARC results (RFC 8601 2.7.x words through dmarc_result_name) */
enum dmarc_result {
	DMARC_RES_NONE,
	DMARC_RES_PASS,
	DMARC_RES_FAIL,
	DMARC_RES_TEMPERROR,
	DMARC_RES_PERMERROR,
};

/* What the lookups found. */
enum dmarc_found {
	DMARC_FOUND_ONE,	/* one DMARC record */
	DMARC_FOUND_NONE,	/* no DMARC record (NXDOMAIN, NODATA, other TXT only) */
	DMARC_FOUND_MANY,	/* several: RFC 7489 6.6.3 says DMARC does not apply */
	DMARC_FOUND_TEMP,	/* SERVFAIL, timeout, no resolver */
};

/* One message's judgement, for the results, the verdict and the log line. */
struct dmarc_eval {
	enum dmarc_result result;
	char p, sp;		/* the record's (DMARC_RECORD_P_*), '\0' unset */
	bool used_sp;		/* the subdomain policy applied */
	char req;		/* the policy that applies: 'n', 'q', 'r' */
	char dis;		/* what was done: 'n', 'q', 'r' ('\0' no policy) */
	int pct;
	bool sampled_out;	/* pct left this message to the milder policy */
	bool spf_aligned, dkim_aligned;
	const char *why;	/* permerror/temperror detail, static */
	const char *policy_domain;	/* where the record was found */
};

/* Per-session state: the From: fields of the transaction and a lookup in flight. */
struct dmarc_sess {
	const struct dmarc *d;
	unsigned nfrom;		/* From: fields seen */
	char *from;		/* the first one's value */
	struct resolver *res;	/* the lookup's context: a completion starts the next on it */
	struct resolver_query *q;	/* in flight, or NULL */
	struct filter_wait *w;	/* the pending eom, or NULL */
	bool at_org;		/* q is the organizational domain's */
	char domain[DMARC_DOMAIN_MAX];	/* the From: domain */
	char org[DMARC_DOMAIN_MAX];	/* its organizational domain */
};

/* ---- the public suffix list (one per process: libopendmarc's) ---- */

static pthread_mutex_t dmarc_psl_lock = PTHREAD_MUTEX_INITIALIZER;
static char *dmarc_psl_path;	/* what is loaded, NULL before the first load */
static struct stat dmarc_psl_st;

/* dmarc_psl_same - is path the file loaded, unchanged? */
static bool
dmarc_psl_same(const char *path, const struct stat *st)
{
	return dmarc_psl_path != NULL && strcmp(dmarc_psl_path, path) == 0 &&
	    dmarc_psl_st.st_dev == st->st_dev && dmarc_psl_st.st_ino == st->st_ino &&
	    dmarc_psl_st.st_size == st->st_size &&
	    dmarc_psl_st.st_mtim.tv_sec == st->st_mtim.tv_sec &&
	    dmarc_psl_st.st_mtim.tv_nsec == st->st_mtim.tv_nsec;
}

/* dmarc_psl_load - make path libopendmarc's list, unless it is already; false + *err_r */
static bool
dmarc_psl_load(const char *path, int line, char **err_r)
{
	struct stat st;
	FILE *f;
	int rc;

	/* Opened here first: the library leaks its table when fopen fails. */
	if ((f = fopen(path, "r")) == NULL || fstat(fileno(f), &st) != 0) {
		*err_r = xasprintf("public_suffix_list \"%s\" (line %d): %s", path, line,
		    strerror(errno));
		if (f != NULL)
			fclose(f);
		return false;
	}
	fclose(f);
	if (!S_ISREG(st.st_mode)) {
		*err_r = xasprintf("public_suffix_list \"%s\" (line %d): not a regular file", path,
		    line);
		return false;
	}
	pthread_mutex_lock(&dmarc_psl_lock);
	if (!dmarc_psl_same(path, &st)) {
		rc = opendmarc_tld_read_file((char *)path, "//", "*.", "!");
		if (rc != 0) {
			pthread_mutex_unlock(&dmarc_psl_lock);
			*err_r = xasprintf("public_suffix_list \"%s\" (line %d): cannot load (%s)",
			    path, line, strerror(rc));
			return false;
		}
		free(dmarc_psl_path);
		dmarc_psl_path = xstrdup(path);
		dmarc_psl_st = st;
	}
	pthread_mutex_unlock(&dmarc_psl_lock);
	return true;
}

/* dmarc_org_domain - the organizational domain (see dmarc.h) */
void
dmarc_org_domain(const char *domain, char *out, size_t size)
{
	char copy[DMARC_DOMAIN_MAX], deeper[DMARC_DOMAIN_MAX + 2], tld[DMARC_DOMAIN_MAX + 2];
	const char *last, *p;

	memset(out, 0, size);
	if (!str_copy(copy, domain, sizeof(copy)) || copy[0] == '\0') {
		str_copy(out, domain, size);
		return;
	}
	str_lower(copy);
	/*
	 * Asked about one label of one octet before a suffix ("x.com"),
	 * libopendmarc answers the suffix ("com"); a name one label deeper it
	 * answers right, and with that whole name when copy is a suffix itself.
	 */
	snprintf(deeper, sizeof(deeper), "a.%s", copy);
	memset(tld, 0, sizeof(tld));
	if (opendmarc_get_tld((u_char *)deeper, (u_char *)tld, sizeof(tld)) == 0 && tld[0] != '\0') {
		str_copy(out, strcmp(tld, deeper) == 0 ? copy : tld, size);
		return;
	}
	/* No rule matched: the list's implicit "*" makes the TLD a suffix. */
	last = strrchr(copy, '.');
	if (last == NULL) {
		str_copy(out, copy, size);
		return;
	}
	for (p = last; p > copy && p[-1] != '.'; p--)
		;
	str_copy(out, p, size);
}

/* ---- configuration ---- */

struct dmarc_word {
	const char *word;
	enum dmarc_action act;
};

static const struct dmarc_word dmarc_reject_words[] = {
	{ "reject", DMARC_ACT_REJECT }, { "quarantine", DMARC_ACT_QUARANTINE },
	{ "tag", DMARC_ACT_TAG }, { NULL, 0 },
};
static const struct dmarc_word dmarc_quarantine_words[] = {
	{ "quarantine", DMARC_ACT_QUARANTINE }, { "tag", DMARC_ACT_TAG }, { NULL, 0 },
};
static const struct dmarc_word dmarc_temperror_words[] = {
	{ "tag", DMARC_ACT_TAG }, { "tempfail", DMARC_ACT_TEMPFAIL }, { NULL, 0 },
};
static const struct dmarc_word dmarc_bad_from_words[] = {
	{ "reject", DMARC_ACT_REJECT }, { "tag", DMARC_ACT_TAG }, { NULL, 0 },
};

#define DMARC_KEYS	"public_suffix_list, reject, quarantine, temperror, bad_from, monitor, " \
			"timeout, default_action"

/* dmarc_set_word - one of words into *act; false + *err_r naming the key, line and choices */
static bool
dmarc_set_word(const struct conf_kv *kv, const struct dmarc_word *words, enum dmarc_action *act,
    char **err_r)
{
	struct buf list;
	size_t i;

	for (i = 0; words[i].word != NULL; i++) {
		if (str_casecmp(kv->value, words[i].word) == 0) {
			*act = words[i].act;
			return true;
		}
	}
	buf_init(&list);
	for (i = 0; words[i].word != NULL; i++)
		buf_printf(&list, "%s%s", i > 0 ? " | " : "", words[i].word);
	*err_r = xasprintf("%s = \"%s\" (line %d): expected %s", kv->key, kv->value, kv->line,
	    list.data);
	buf_free(&list);
	return false;
}

/* dmarc_set_bool - yes/no into *b */
static bool
dmarc_set_bool(const struct conf_kv *kv, bool *b, char **err_r)
{
	if (str_casecmp(kv->value, "yes") == 0 || str_casecmp(kv->value, "true") == 0 ||
	    str_casecmp(kv->value, "on") == 0 || strcmp(kv->value, "1") == 0)
		*b = true;
	else if (str_casecmp(kv->value, "no") == 0 || str_casecmp(kv->value, "false") == 0 ||
	    str_casecmp(kv->value, "off") == 0 || strcmp(kv->value, "0") == 0)
		*b = false;
	else {
		*err_r = xasprintf("%s = \"%s\" (line %d): expected yes or no", kv->key, kv->value,
		    kv->line);
		return false;
	}
	return true;
}

/* dmarc_key - apply one key of the section; false + *err_r */
static bool
dmarc_key(struct dmarc *d, const struct conf_kv *kv, int *psl_line, char **err_r)
{
	if (strcmp(kv->key, "public_suffix_list") == 0) {
		if (kv->value[0] == '\0') {
			*err_r = xasprintf("public_suffix_list (line %d): empty path", kv->line);
			return false;
		}
		free(d->psl);
		d->psl = xstrdup(kv->value);
		*psl_line = kv->line;
		return true;
	}
	if (strcmp(kv->key, "reject") == 0)
		return dmarc_set_word(kv, dmarc_reject_words, &d->on_reject, err_r);
	if (strcmp(kv->key, "quarantine") == 0)
		return dmarc_set_word(kv, dmarc_quarantine_words, &d->on_quarantine, err_r);
	if (strcmp(kv->key, "temperror") == 0)
		return dmarc_set_word(kv, dmarc_temperror_words, &d->on_temperror, err_r);
	if (strcmp(kv->key, "bad_from") == 0)
		return dmarc_set_word(kv, dmarc_bad_from_words, &d->on_bad_from, err_r);
	if (strcmp(kv->key, "monitor") == 0)
		return dmarc_set_bool(kv, &d->monitor, err_r);
	if (filter_chain_key(kv->key))
		return true;
	*err_r = xasprintf("unknown key \"%s\" (line %d); the keys are " DMARC_KEYS, kv->key,
	    kv->line);
	return false;
}

static void dmarc_destroy(void *inst);

/* dmarc_configure - the section's keys, and the public suffix list loaded */
static void *
dmarc_configure(const struct conf *conf, const struct conf_section *sec, char **err_r)
{
	struct dmarc *d = xcalloc(1, sizeof(*d));
	int psl_line = 0;
	size_t i;

	(void)conf;
	d->on_reject = DMARC_ACT_REJECT;
	d->on_quarantine = DMARC_ACT_QUARANTINE;
	d->on_temperror = DMARC_ACT_TAG;
	d->on_bad_from = DMARC_ACT_REJECT;
	for (i = 0; sec != NULL && i < sec->nkv; i++) {
		if (!dmarc_key(d, &sec->kv[i], &psl_line, err_r)) {
			dmarc_destroy(d);
			return NULL;
		}
	}
	if (d->psl == NULL)
		d->psl = xstrdup(DMARC_PSL_DEFAULT);
	if (!dmarc_psl_load(d->psl, psl_line, err_r)) {
		dmarc_destroy(d);
		return NULL;
	}
	return d;
}

/* dmarc_destroy - the instance (the suffix list stays: the next instance shares it) */
static void
dmarc_destroy(void *inst)
{
	struct dmarc *d = inst;

	free(d->psl);
	free(d);
}

/* ---- the From: field (RFC 5322 3.4, 4.4) ---- */

/* A cursor over one From: value. */
struct dmarc_fp {
	const char *p;
	bool err;
	unsigned naddr;		/* addresses seen */
	bool nodomain;		/* the first one has no DNS domain */
	char dom[DMARC_DOMAIN_MAX];	/* the first one's domain */
};

/* dmarc_atext - RFC 5322 atext, and UTF-8 (RFC 6532) */
static bool
dmarc_atext(unsigned char c)
{
	return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
	    (c != '\0' && strchr("!#$%&'*+-/=?^_`{|}~", c) != NULL) || c >= 0x80;
}

/* dmarc_fp_cfws - skip white space, line folding and (nested) comments */
static void
dmarc_fp_cfws(struct dmarc_fp *f)
{
	unsigned depth;

	for (;;) {
		while (*f->p == ' ' || *f->p == '\t' || *f->p == '\r' || *f->p == '\n')
			f->p++;
		if (*f->p != '(')
			return;
		for (depth = 0;;) {
			if (*f->p == '\0') {
				f->err = true;	/* an open comment */
				return;
			}
			if (*f->p == '\\' && f->p[1] != '\0')
				f->p++;
			else if (*f->p == '(')
				depth++;
			else if (*f->p == ')' && --depth == 0) {
				f->p++;
				break;
			}
			f->p++;
		}
	}
}

/* dmarc_fp_word - an atom or a quoted string at f->p (after CFWS); false if none */
static bool
dmarc_fp_word(struct dmarc_fp *f)
{
	if (*f->p == '"') {
		for (f->p++; *f->p != '"'; f->p++) {
			if (*f->p == '\0' || (*f->p == '\\' && *++f->p == '\0')) {
				f->err = true;
				return false;
			}
		}
		f->p++;
		return true;
	}
	if (!dmarc_atext((unsigned char)*f->p))
		return false;
	while (dmarc_atext((unsigned char)*f->p))
		f->p++;
	return true;
}

/*
 * dmarc_fp_words - a phrase or a local part: words and dots, CFWS between.
 * *nwords the words read; *dot_atom whether they make word *("." word).
 */
static void
dmarc_fp_words(struct dmarc_fp *f, unsigned *nwords, bool *dot_atom)
{
	bool last_word = false;

	*nwords = 0;
	*dot_atom = true;
	for (;;) {
		dmarc_fp_cfws(f);
		if (f->err)
			return;
		if (*f->p == '.') {
			if (!last_word)
				*dot_atom = false;
			last_word = false;
			f->p++;
			continue;
		}
		if (!dmarc_fp_word(f))
			break;
		if (last_word)
			*dot_atom = false;	/* two words without a dot: a phrase */
		last_word = true;
		(*nwords)++;
	}
	if (!last_word)
		*dot_atom = false;
}

/* dmarc_label_ok - a DNS label: letters, digits, '-', '_', UTF-8; 1 to 63 octets */
static bool
dmarc_label_ok(const char *s, size_t n)
{
	size_t i;

	if (n == 0 || n > 63)
		return false;
	for (i = 0; i < n; i++) {
		unsigned char c = (unsigned char)s[i];

		if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
		    c == '-' || c == '_' || c >= 0x80))
			return false;
	}
	return true;
}

/*
 * dmarc_fp_domain - a domain after '@': dot-atom (CFWS around the dots, 4.4)
 * or a [literal].  The first address's is kept in f->dom, lower case.
 */
static void
dmarc_fp_domain(struct dmarc_fp *f)
{
	bool keep = f->naddr == 0;
	char dom[DMARC_DOMAIN_MAX];
	size_t n = 0;
	const char *start;

	dmarc_fp_cfws(f);
	if (*f->p == '[') {
		for (f->p++; *f->p != ']'; f->p++) {
			if (*f->p == '\0' || *f->p == '[' || (*f->p == '\\' && *++f->p == '\0')) {
				f->err = true;
				return;
			}
		}
		f->p++;
		if (keep)
			f->nodomain = true;
		return;
	}
	for (;;) {
		dmarc_fp_cfws(f);
		start = f->p;
		while (dmarc_atext((unsigned char)*f->p))
			f->p++;
		if (f->err || !dmarc_label_ok(start, (size_t)(f->p - start)) ||
		    n + (size_t)(f->p - start) + 1 > sizeof(dom)) {
			f->err = true;
			return;
		}
		memcpy(dom + n, start, (size_t)(f->p - start));
		n += (size_t)(f->p - start);
		dmarc_fp_cfws(f);
		if (*f->p != '.')
			break;
		dom[n++] = '.';
		f->p++;
	}
	dom[n] = '\0';
	if (keep) {
		memcpy(f->dom, dom, n + 1);
		str_lower(f->dom);
	}
}

/* dmarc_fp_addr_spec - local-part "@" domain, the local part just read */
static void
dmarc_fp_addr_spec(struct dmarc_fp *f, unsigned nwords, bool dot_atom)
{
	if (nwords == 0 || !dot_atom) {
		f->err = true;
		return;
	}
	if (*f->p != '@') {
		/* a local part alone (obs: some mailers write "From: root") */
		if (f->naddr == 0)
			f->nodomain = true;
		f->naddr++;
		return;
	}
	f->p++;
	dmarc_fp_domain(f);
	f->naddr++;
}

/* dmarc_fp_angle - after '<': [obs-route ":"] addr-spec ">" */
static void
dmarc_fp_angle(struct dmarc_fp *f)
{
	unsigned nwords;
	bool dot_atom;

	dmarc_fp_cfws(f);
	if (*f->p == '@' || *f->p == ',') {
		/* obs-route: "@a,@b:" before the address; the route is ignored */
		while (*f->p != '\0' && *f->p != ':' && *f->p != '>')
			f->p++;
		if (*f->p != ':') {
			f->err = true;
			return;
		}
		f->p++;
	}
	dmarc_fp_words(f, &nwords, &dot_atom);
	if (f->err)
		return;
	dmarc_fp_addr_spec(f, nwords, dot_atom);
	if (f->err)
		return;
	dmarc_fp_cfws(f);
	if (*f->p != '>')
		f->err = true;
	else
		f->p++;
}

/*
 * dmarc_fp_mailbox - one mailbox, or the start of a group (*group set, the
 * display name and ':' read).
 */
static void
dmarc_fp_mailbox(struct dmarc_fp *f, bool *group)
{
	unsigned nwords;
	bool dot_atom;

	*group = false;
	dmarc_fp_words(f, &nwords, &dot_atom);
	if (f->err)
		return;
	switch (*f->p) {
	case '<':
		f->p++;
		dmarc_fp_angle(f);
		return;
	case ':':
		if (nwords == 0)
			f->err = true;
		f->p++;
		*group = true;
		return;
	case '@':
	case ',':
	case ';':
	case '\0':
		dmarc_fp_addr_spec(f, nwords, dot_atom);
		return;
	default:
		f->err = true;	/* a special where none belongs: ')' '>' '[' ']' '\\' '"' */
		return;
	}
}

/* dmarc_fp_list - mailbox-list / address-list: mailboxes and groups, commas between */
static void
dmarc_fp_list(struct dmarc_fp *f)
{
	bool in_group = false, group;

	for (;;) {
		dmarc_fp_cfws(f);
		if (f->err || *f->p == '\0')
			break;
		if (*f->p == ',') {
			f->p++;		/* obs-mbox-list: empty elements */
			continue;
		}
		if (*f->p == ';') {
			if (!in_group) {
				f->err = true;
				return;
			}
			in_group = false;
			f->p++;
			continue;
		}
		dmarc_fp_mailbox(f, &group);
		if (f->err)
			return;
		if (group) {
			if (in_group) {
				f->err = true;	/* groups do not nest */
				return;
			}
			in_group = true;
			continue;
		}
		dmarc_fp_cfws(f);
		if (*f->p != ',' && *f->p != ';' && *f->p != '\0') {
			f->err = true;
			return;
		}
	}
	if (in_group)
		f->err = true;	/* a group without its ';' */
}

/* dmarc_from_parse - the author domain of a From: value (see dmarc.h) */
enum dmarc_from
dmarc_from_parse(const char *value, char *domain_r, size_t size)
{
	struct dmarc_fp f;

	memset(&f, 0, sizeof(f));
	f.p = value;
	if (size > 0)
		domain_r[0] = '\0';
	dmarc_fp_list(&f);
	if (f.err)
		return DMARC_FROM_SYNTAX;
	if (f.naddr == 0)
		return DMARC_FROM_EMPTY;
	if (f.naddr > 1)
		return DMARC_FROM_MANY;
	if (f.nodomain)
		return DMARC_FROM_NODOMAIN;
	if (!str_copy(domain_r, f.dom, size))
		return DMARC_FROM_SYNTAX;
	return DMARC_FROM_OK;
}

/* dmarc_from_name - why a From: gives no author domain */
const char *
dmarc_from_name(enum dmarc_from f)
{
	switch (f) {
	case DMARC_FROM_OK:
		return "one address";
	case DMARC_FROM_EMPTY:
		return "no address in From:";
	case DMARC_FROM_MANY:
		return "several addresses in From:";
	case DMARC_FROM_NODOMAIN:
		return "no domain in the From: address";
	case DMARC_FROM_SYNTAX:
		break;
	}
	return "From: cannot be parsed";
}

/* ---- records ---- */

/* dmarc_is_record - "v" *WSP "=" *WSP "DMARC1", then *WSP ";" or the end (RFC 7489 6.4) */
bool
dmarc_is_record(const char *txt)
{
	const char *p = txt;

	while (*p == ' ' || *p == '\t')
		p++;
	if (*p != 'v' && *p != 'V')
		return false;
	for (p++; *p == ' ' || *p == '\t'; p++)
		;
	if (*p++ != '=')
		return false;
	while (*p == ' ' || *p == '\t')
		p++;
	if (strncmp(p, "DMARC1", 6) != 0)
		return false;
	for (p += 6; *p == ' ' || *p == '\t'; p++)
		;
	return *p == ';' || *p == '\0';
}

/* dmarc_records - the DMARC records of a TXT answer; *record_r (malloc'd) when exactly one */
static enum dmarc_found
dmarc_records(const struct resolver_answer *a, char **record_r)
{
	unsigned n = 0;
	size_t i;
	char *txt;

	*record_r = NULL;
	if (a->status == RESOLVER_NXDOMAIN || a->status == RESOLVER_NODATA)
		return DMARC_FOUND_NONE;
	if (a->status != RESOLVER_OK)
		return DMARC_FOUND_TEMP;
	for (i = 0; i < a->count; i++) {
		/* the strings joined are never longer than the rdata */
		txt = xmalloc((size_t)a->len[i] + 1);
		if (!resolver_txt(a, i, txt, (size_t)a->len[i] + 1) || !dmarc_is_record(txt)) {
			free(txt);
			continue;
		}
		if (n++ == 0)
			*record_r = txt;
		else
			free(txt);
	}
	if (n == 1)
		return DMARC_FOUND_ONE;
	free(*record_r);
	*record_r = NULL;
	return n == 0 ? DMARC_FOUND_NONE : DMARC_FOUND_MANY;
}

/* ---- judging, with libopendmarc ---- */

/* dmarc_spf_outcome - an RFC 8601 SPF word as libopendmarc's outcome */
static int
dmarc_spf_outcome(const char *result)
{
	if (strcmp(result, "pass") == 0)
		return DMARC_POLICY_SPF_OUTCOME_PASS;
	if (strcmp(result, "none") == 0)
		return DMARC_POLICY_SPF_OUTCOME_NONE;
	if (strcmp(result, "temperror") == 0)
		return DMARC_POLICY_SPF_OUTCOME_TMPFAIL;
	return DMARC_POLICY_SPF_OUTCOME_FAIL;
}

/* dmarc_dkim_outcome - an RFC 8601 DKIM word as libopendmarc's outcome */
static int
dmarc_dkim_outcome(const char *result)
{
	if (strcmp(result, "pass") == 0)
		return DMARC_POLICY_DKIM_OUTCOME_PASS;
	if (strcmp(result, "none") == 0)
		return DMARC_POLICY_DKIM_OUTCOME_NONE;
	if (strcmp(result, "temperror") == 0)
		return DMARC_POLICY_DKIM_OUTCOME_TMPFAIL;
	return DMARC_POLICY_DKIM_OUTCOME_FAIL;
}

/*
 * dmarc_aligned - is domain aligned with the From: domain (RFC 7489 3.1):
 * the same name (strict, mode 's'), or the same organizational domain
 * (relaxed, the default).  Ours, not libopendmarc's: its relaxed check
 * takes x.com and y.com (one-letter labels before a public suffix) for one
 * organization, which would let any such domain pass for another.
 */
static bool
dmarc_aligned(const char *domain, const char *from_domain, int mode)
{
	char a[DMARC_DOMAIN_MAX], b[DMARC_DOMAIN_MAX], oa[DMARC_DOMAIN_MAX], ob[DMARC_DOMAIN_MAX];

	if (!str_copy(a, domain, sizeof(a)) || !str_copy(b, from_domain, sizeof(b)))
		return false;
	str_lower(a);
	str_lower(b);
	if (strcmp(a, b) == 0)
		return true;
	if (mode == DMARC_RECORD_A_STRICT)
		return false;
	dmarc_org_domain(a, oa, sizeof(oa));
	dmarc_org_domain(b, ob, sizeof(ob));
	return oa[0] != '\0' && strcmp(oa, ob) == 0;
}

/*
 * dmarc_store_spf - the SPF result DMARC uses: the MAIL FROM identity's, or
 * the HELO identity's for the null sender (RFC 7489 4.1, RFC 7208 2.4).
 * A pass for a domain not aligned with from_domain (by dmarc_aligned) is
 * not stored: libopendmarc's own alignment check must never see it.
 */
static void
dmarc_store_spf(DMARC_POLICY_T *pctx, const struct filter_txn *txn, const char *from_domain,
    int aspf)
{
	const struct filter_auth_fact *mf = NULL, *helo = NULL, *use;
	bool null_sender = txn->mail_from == NULL || txn->mail_from[0] == '\0';
	size_t i;

	for (i = 0; i < txn->nfacts; i++) {
		const struct filter_auth_fact *fa = &txn->facts[i];

		if (fa->method == NULL || fa->result == NULL || fa->domain == NULL ||
		    fa->scope == NULL || strcmp(fa->method, "spf") != 0)
			continue;
		if (mf == NULL && strcmp(fa->scope, "mailfrom") == 0)
			mf = fa;
		else if (helo == NULL && strcmp(fa->scope, "helo") == 0)
			helo = fa;
	}
	use = mf != NULL ? mf : null_sender ? helo : NULL;
	if (use == NULL || use->domain[0] == '\0')
		return;
	if (strcmp(use->result, "pass") == 0 && !dmarc_aligned(use->domain, from_domain, aspf))
		return;
	(void)opendmarc_policy_store_spf(pctx, (u_char *)use->domain,
	    dmarc_spf_outcome(use->result), use == mf ? DMARC_POLICY_SPF_ORIGIN_MAILFROM :
	    DMARC_POLICY_SPF_ORIGIN_HELO, NULL);
}

/* dmarc_dkim_fact - a DKIM result with a d= */
static bool
dmarc_dkim_fact(const struct filter_auth_fact *fa)
{
	return fa->method != NULL && fa->result != NULL && fa->domain != NULL &&
	    fa->domain[0] != '\0' && strcmp(fa->method, "dkim") == 0;
}

/* dmarc_dkim_aligned_pass - a passing signature whose d= is aligned (dmarc_aligned) */
static bool
dmarc_dkim_aligned_pass(const struct filter_auth_fact *fa, const char *from_domain, int adkim)
{
	return dmarc_dkim_fact(fa) && strcmp(fa->result, "pass") == 0 &&
	    dmarc_aligned(fa->domain, from_domain, adkim);
}

/*
 * dmarc_store_dkim - the DKIM results: only the aligned passing ones when
 * any passed aligned (libopendmarc keeps one signature, and a failing
 * aligned one stored after a passing one can make it forget the pass);
 * else every one but the unaligned passes, which libopendmarc's own
 * alignment check must never see (dmarc_aligned says why).
 */
static void
dmarc_store_dkim(DMARC_POLICY_T *pctx, const struct filter_txn *txn, const char *from_domain,
    int adkim)
{
	bool any_pass = false;
	size_t i;

	for (i = 0; i < txn->nfacts; i++)
		if (dmarc_dkim_aligned_pass(&txn->facts[i], from_domain, adkim))
			any_pass = true;
	for (i = 0; i < txn->nfacts; i++) {
		const struct filter_auth_fact *fa = &txn->facts[i];
		char dom[DMARC_DOMAIN_MAX];
		bool pass;

		if (!dmarc_dkim_fact(fa))
			continue;
		pass = strcmp(fa->result, "pass") == 0;
		if (any_pass && !dmarc_dkim_aligned_pass(fa, from_domain, adkim))
			continue;
		if (pass && !dmarc_aligned(fa->domain, from_domain, adkim))
			continue;
		if (!str_copy(dom, fa->domain, sizeof(dom)))
			continue;
		str_lower(dom);
		(void)opendmarc_policy_store_dkim(pctx, (u_char *)dom, (u_char *)fa->scope,
		    dmarc_dkim_outcome(fa->result), NULL);
	}
}

/* dmarc_judge - a record found for domain (at org, or at domain itself when NULL): ev */
static void
dmarc_judge(const struct filter_session *sess, const struct filter_txn *txn, const char *record,
    const char *domain, const char *org, struct dmarc_eval *ev)
{
	const char *ip = sess != NULL && sess->client_addr != NULL && sess->client_addr[0] != '\0' ?
	    sess->client_addr : "0.0.0.0";
	bool v6 = sess != NULL && sess->client_sa.ss_family == AF_INET6;
	DMARC_POLICY_T *pctx;
	int st, pol, p = 0, sp = 0, pct = 100, dk = 0, sa = 0, adkim = 0, aspf = 0;

	if ((pctx = opendmarc_policy_connect_init((u_char *)ip, v6)) == NULL)
		fatal("opendmarc_policy_connect_init: out of memory");
	st = opendmarc_policy_store_dmarc(pctx, (u_char *)record, (u_char *)domain, (u_char *)org);
	if (st != DMARC_PARSE_OKAY) {
		ev->result = DMARC_RES_PERMERROR;
		ev->why = opendmarc_policy_status_to_str(st);
		opendmarc_policy_connect_shutdown(pctx);
		return;
	}
	(void)opendmarc_policy_fetch_adkim(pctx, &adkim);
	(void)opendmarc_policy_fetch_aspf(pctx, &aspf);
	dmarc_store_spf(pctx, txn, domain, aspf);
	dmarc_store_dkim(pctx, txn, domain, adkim);
	pol = opendmarc_get_policy_to_enforce(pctx);
	(void)opendmarc_policy_fetch_alignment(pctx, &dk, &sa);
	(void)opendmarc_policy_fetch_p(pctx, &p);
	(void)opendmarc_policy_fetch_sp(pctx, &sp);
	(void)opendmarc_policy_fetch_pct(pctx, &pct);
	ev->p = (char)p;
	ev->sp = (char)sp;
	ev->pct = pct;
	ev->used_sp = opendmarc_get_policy_token_used(pctx) == DMARC_USED_POLICY_IS_SP;
	ev->spf_aligned = sa == DMARC_POLICY_SPF_ALIGNMENT_PASS;
	ev->dkim_aligned = dk == DMARC_POLICY_DKIM_ALIGNMENT_PASS;
	ev->req = ev->used_sp ? ev->sp : ev->p;
	switch (pol) {
	case DMARC_POLICY_PASS:
		ev->result = DMARC_RES_PASS;
		break;
	case DMARC_POLICY_REJECT:
	case DMARC_POLICY_QUARANTINE:
	case DMARC_POLICY_NONE:
		ev->result = DMARC_RES_FAIL;
		ev->req = pol == DMARC_POLICY_REJECT ? DMARC_RECORD_P_REJECT :
		    pol == DMARC_POLICY_QUARANTINE ? DMARC_RECORD_P_QUARANTINE :
		    DMARC_RECORD_P_NONE;
		break;
	default:
		ev->result = DMARC_RES_PERMERROR;
		ev->why = opendmarc_policy_status_to_str(pol);
		break;
	}
	opendmarc_policy_connect_shutdown(pctx);
}

/* ---- results and verdicts ---- */

/* dmarc_result_name - RFC 8601's word */
static const char *
dmarc_result_name(enum dmarc_result r)
{
	switch (r) {
	case DMARC_RES_PASS:
		return "pass";
	case DMARC_RES_FAIL:
		return "fail";
	case DMARC_RES_TEMPERROR:
		return "temperror";
	case DMARC_RES_PERMERROR:
		return "permerror";
	case DMARC_RES_NONE:
		break;
	}
	return "none";
}

/* dmarc_policy_name - a DMARC_RECORD_P_* letter as its word */
static const char *
dmarc_policy_name(char p)
{
	switch (p) {
	case DMARC_RECORD_P_REJECT:
		return "reject";
	case DMARC_RECORD_P_QUARANTINE:
		return "quarantine";
	case DMARC_RECORD_P_NONE:
		return "none";
	default:
		return "unset";
	}
}

/* dmarc_reply - fill r; the text is cut to fit (domains are at most 253 octets) */
static void PRINTF_LIKE(4, 5)
dmarc_reply(struct filter_reply *r, int code, const char *ecode, const char *fmt, ...)
{
	va_list ap;

	r->code = code;
	str_copy(r->ecode, ecode, sizeof(r->ecode));
	va_start(ap, fmt);
	(void)vsnprintf(r->text, sizeof(r->text), fmt, ap);
	va_end(ap);
}

/* dmarc_sampled_out - pct: is this message left to the next milder policy? */
static bool
dmarc_sampled_out(int pct)
{
	return pct < 100 && (pct <= 0 || arc4random_uniform(100) >= (uint32_t)pct);
}

/* dmarc_fail_verdict - a failing message: what its domain's policy (after pct) makes us do */
static enum filter_verdict
dmarc_fail_verdict(const struct dmarc *d, const char *from, struct dmarc_eval *ev,
    struct filter_reply *r)
{
	char eff = ev->req;
	const char *tag = ev->used_sp ? "sp" : "p";
	enum dmarc_action act;

	if (eff != DMARC_RECORD_P_NONE && dmarc_sampled_out(ev->pct)) {
		ev->sampled_out = true;
		eff = eff == DMARC_RECORD_P_REJECT ? DMARC_RECORD_P_QUARANTINE :
		    DMARC_RECORD_P_NONE;
	}
	act = eff == DMARC_RECORD_P_REJECT ? d->on_reject :
	    eff == DMARC_RECORD_P_QUARANTINE ? d->on_quarantine : DMARC_ACT_TAG;
	if (d->monitor)
		act = DMARC_ACT_TAG;
	switch (act) {
	case DMARC_ACT_REJECT:
		ev->dis = DMARC_RECORD_P_REJECT;
		dmarc_reply(r, 550, "5.7.1", "the DMARC policy of %s (%s=%s) rejects mail from %s "
		    "that SPF or DKIM does not authenticate for it", ev->policy_domain, tag,
		    dmarc_policy_name(ev->req), from);
		return FILTER_REJECT;
	case DMARC_ACT_QUARANTINE:
		ev->dis = DMARC_RECORD_P_QUARANTINE;
		dmarc_reply(r, 0, "", "dmarc: policy of %s is %s=%s%s", ev->policy_domain, tag,
		    dmarc_policy_name(ev->req), ev->sampled_out ? " (not sampled by pct)" : "");
		return FILTER_QUARANTINE;
	default:
		ev->dis = DMARC_RECORD_P_NONE;
		return FILTER_CONTINUE;
	}
}

/* dmarc_record_results - the Authentication-Results item and the fact */
static void
dmarc_record_results(struct filter_txn *txn, const char *from, const struct dmarc_eval *ev)
{
	const char *res = dmarc_result_name(ev->result);

	if (ev->result == DMARC_RES_PASS || ev->result == DMARC_RES_FAIL) {
		if (ev->used_sp)
			filter_auth_result(txn, "dmarc=%s (p=%s sp=%s dis=%s) header.from=%s", res,
			    dmarc_policy_name(ev->p), dmarc_policy_name(ev->sp),
			    dmarc_policy_name(ev->dis), from);
		else
			filter_auth_result(txn, "dmarc=%s (p=%s dis=%s) header.from=%s", res,
			    dmarc_policy_name(ev->p), dmarc_policy_name(ev->dis), from);
		filter_auth_fact(txn, "dmarc", res, from, dmarc_policy_name(ev->req));
		return;
	}
	filter_auth_result(txn, "dmarc=%s header.from=%s", res, from);
	filter_auth_fact(txn, "dmarc", res, from, NULL);
}

/* dmarc_log - one line per judgement */
static void
dmarc_log(const struct filter_session *sess, const char *from, const struct dmarc_eval *ev)
{
	log_info("id=" SESSION_ID_FMT " event=dmarc result=%s from_domain=%s policy_domain=%s "
	    "policy=%s disposition=%s pct=%d sampled=%s spf_aligned=%s dkim_aligned=%s%s%s%s",
	    sess != NULL ? SESSION_ID(sess->id) : 0, dmarc_result_name(ev->result), from,
	    ev->policy_domain != NULL ? ev->policy_domain : "none",
	    ev->req != '\0' ? dmarc_policy_name(ev->req) : "none",
	    ev->dis != '\0' ? dmarc_policy_name(ev->dis) : "none", ev->pct,
	    ev->sampled_out ? "no" : "yes", ev->spf_aligned ? "yes" : "no",
	    ev->dkim_aligned ? "yes" : "no", ev->why != NULL ? " why=\"" : "",
	    ev->why != NULL ? ev->why : "", ev->why != NULL ? "\"" : "");
}

/*
 * dmarc_conclude - what the lookups found (record when one): results,
 * log line, verdict.
 */
static enum filter_verdict
dmarc_conclude(struct dmarc_sess *s, struct filter_ctx *ctx, enum dmarc_found found,
    const char *record, struct filter_reply *r)
{
	const struct dmarc *d = s->d;
	struct dmarc_eval ev;
	enum filter_verdict v = FILTER_CONTINUE;

	memset(&ev, 0, sizeof(ev));
	ev.pct = 100;
	switch (found) {
	case DMARC_FOUND_ONE:
		ev.policy_domain = s->at_org ? s->org : s->domain;
		dmarc_judge(ctx->sess, ctx->txn, record, s->domain, s->at_org ? s->org : NULL, &ev);
		if (ev.result == DMARC_RES_FAIL)
			v = dmarc_fail_verdict(d, s->domain, &ev, r);
		else if (ev.result == DMARC_RES_PASS)
			ev.dis = DMARC_RECORD_P_NONE;
		break;
	case DMARC_FOUND_MANY:
		ev.result = DMARC_RES_PERMERROR;
		ev.policy_domain = s->at_org ? s->org : s->domain;
		ev.why = "several DMARC records";
		break;
	case DMARC_FOUND_TEMP:
		ev.result = DMARC_RES_TEMPERROR;
		ev.why = "DNS lookup failed";
		if (d->on_temperror == DMARC_ACT_TEMPFAIL && !d->monitor) {
			dmarc_reply(r, 451, "4.4.3", "the DMARC policy of %s cannot be fetched "
			    "now, try again later", s->domain);
			v = FILTER_TEMPFAIL;
		}
		break;
	case DMARC_FOUND_NONE:
		ev.result = DMARC_RES_NONE;
		break;
	}
	if (ctx->txn != NULL)
		dmarc_record_results(ctx->txn, s->domain, &ev);
	dmarc_log(ctx->sess, s->domain, &ev);
	return v;
}

/* dmarc_bad_from - RFC 7489 6.6.1: no author domain to judge */
static enum filter_verdict
dmarc_bad_from(struct dmarc_sess *s, struct filter_ctx *ctx, const char *why,
    struct filter_reply *r)
{
	const struct dmarc *d = s->d;

	if (ctx->txn != NULL) {
		filter_auth_result(ctx->txn, "dmarc=permerror (%s)", why);
		filter_auth_fact(ctx->txn, "dmarc", "permerror", NULL, NULL);
	}
	log_info("id=" SESSION_ID_FMT " event=dmarc result=permerror why=\"%s\" action=%s",
	    ctx->sess != NULL ? SESSION_ID(ctx->sess->id) : 0, why,
	    d->on_bad_from == DMARC_ACT_REJECT && !d->monitor ? "reject" : "tag");
	if (d->on_bad_from != DMARC_ACT_REJECT || d->monitor)
		return FILTER_CONTINUE;
	dmarc_reply(r, 550, "5.7.1", "message refused: %s (RFC 5322 requires one author, "
	    "RFC 7489 6.6.1)", why);
	return FILTER_REJECT;
}

/* dmarc_ascii - no octet past US-ASCII */
static bool
dmarc_ascii(const char *s)
{
	for (; *s != '\0'; s++)
		if ((unsigned char)*s >= 0x80)
			return false;
	return true;
}

/*
 * dmarc_idn - a From: domain in UTF-8 (RFC 6532): not looked up (its
 * A-labels would be; there is no IDNA conversion here), no policy applies.
 * It never reaches a reply or the header, and the log has it escaped.
 */
static enum filter_verdict
dmarc_idn(struct dmarc_sess *s, struct filter_ctx *ctx)
{
	char esc[DMARC_DOMAIN_MAX * 4];

	if (ctx->txn != NULL) {
		filter_auth_result(ctx->txn,
		    "dmarc=none (internationalized From: domain not checked)");
		filter_auth_fact(ctx->txn, "dmarc", "none", NULL, NULL);
	}
	log_info("id=" SESSION_ID_FMT " event=dmarc result=none from_domain=%s "
	    "why=\"internationalized domain not checked\"",
	    ctx->sess != NULL ? SESSION_ID(ctx->sess->id) : 0,
	    log_escape(esc, sizeof(esc), s->domain, strlen(s->domain)));
	return FILTER_CONTINUE;
}

/* ---- the callbacks ---- */

/* dmarc_sess_get - the per-session state, made at first use */
static struct dmarc_sess *
dmarc_sess_get(const struct dmarc *d, struct filter_ctx *ctx)
{
	struct dmarc_sess *s = *ctx->priv;

	if (s == NULL) {
		s = xcalloc(1, sizeof(*s));
		s->d = d;
		*ctx->priv = s;
	}
	return s;
}

/* dmarc_txn_clear - forget the From: fields of a transaction */
static void
dmarc_txn_clear(struct dmarc_sess *s)
{
	free(s->from);
	s->from = NULL;
	s->nfrom = 0;
}

/* dmarc_mail - a transaction starts: nothing of the last one stays */
static enum filter_verdict
dmarc_mail(void *inst, struct filter_ctx *ctx, const char *from, struct filter_reply *r)
{
	struct dmarc_sess *s = *ctx->priv;

	(void)inst, (void)from, (void)r;
	if (s != NULL)
		dmarc_txn_clear(s);
	return FILTER_CONTINUE;
}

/* dmarc_header - count the From: fields, keep the first */
static enum filter_verdict
dmarc_header(void *inst, struct filter_ctx *ctx, const char *name, const char *value,
    struct filter_reply *r)
{
	struct dmarc_sess *s;

	(void)r;
	if (str_casecmp(name, "From") != 0)
		return FILTER_CONTINUE;
	s = dmarc_sess_get(inst, ctx);
	if (s->nfrom++ == 0)
		s->from = xstrdup(value);
	return FILTER_CONTINUE;
}

static void dmarc_answer(void *arg, const struct resolver_answer *a);

/* dmarc_query - look up _dmarc.<domain>; false if it cannot start */
static bool
dmarc_query(struct dmarc_sess *s, const char *domain)
{
	char qname[DMARC_QNAME_MAX];
	const char *err = NULL;
	int n;

	n = snprintf(qname, sizeof(qname), "_dmarc.%s", domain);
	if (n < 0 || (size_t)n >= sizeof(qname) || (size_t)n > 253)
		return false;
	s->q = resolver_query(s->res, qname, RESOLVER_TXT, dmarc_answer, s, &err);
	return s->q != NULL;
}

/* dmarc_complete - the pending eom's verdict, from what the lookups found */
static void
dmarc_complete(struct dmarc_sess *s, enum dmarc_found found, const char *record)
{
	struct filter_wait *w = s->w;
	struct filter_ctx *ctx = filter_wait_ctx(w);
	struct filter_reply r;
	enum filter_verdict v = FILTER_CONTINUE;

	memset(&r, 0, sizeof(r));
	s->w = NULL;
	if (ctx != NULL)
		v = dmarc_conclude(s, ctx, found, record, &r);
	dmarc_txn_clear(s);
	filter_wait_done(w, v, &r);
}

/* dmarc_answer - a TXT answer on the loop: judge, or ask the organizational domain */
static void
dmarc_answer(void *arg, const struct resolver_answer *a)
{
	struct dmarc_sess *s = arg;
	enum dmarc_found found;
	char *record;

	s->q = NULL;
	found = dmarc_records(a, &record);
	if (found == DMARC_FOUND_NONE && !s->at_org && strcmp(s->org, s->domain) != 0) {
		s->at_org = true;
		if (dmarc_query(s, s->org))
			return;
		found = DMARC_FOUND_TEMP;
	}
	dmarc_complete(s, found, record);
	free(record);
}

/* dmarc_eom - judge the message: at once, or after the lookups (PENDING) */
static enum filter_verdict
dmarc_eom(void *inst, struct filter_ctx *ctx, struct filter_reply *r)
{
	struct dmarc_sess *s = dmarc_sess_get(inst, ctx);
	enum dmarc_from ff;
	enum filter_verdict v;

	if (s->nfrom == 0)
		v = dmarc_bad_from(s, ctx, "no From: header field", r);
	else if (s->nfrom > 1)
		v = dmarc_bad_from(s, ctx, "several From: header fields", r);
	else if ((ff = dmarc_from_parse(s->from, s->domain, sizeof(s->domain))) != DMARC_FROM_OK)
		v = dmarc_bad_from(s, ctx, dmarc_from_name(ff), r);
	else if (!dmarc_ascii(s->domain))
		v = dmarc_idn(s, ctx);
	else {
		dmarc_org_domain(s->domain, s->org, sizeof(s->org));
		/* a name too long for "_dmarc." before it can only have its organization's */
		s->at_org = strlen(s->domain) > DMARC_NAME_MAX && strcmp(s->org, s->domain) != 0;
		s->res = ctx->resolver;
		if (s->res != NULL && dmarc_query(s, s->at_org ? s->org : s->domain)) {
			if ((s->w = filter_wait_begin(ctx)) != NULL)
				return FILTER_PENDING;
			resolver_cancel(s->q);
			s->q = NULL;
		}
		v = dmarc_conclude(s, ctx, s->res == NULL ||
		    strlen(s->at_org ? s->org : s->domain) <= DMARC_NAME_MAX ? DMARC_FOUND_TEMP :
		    DMARC_FOUND_NONE, NULL, r);
	}
	dmarc_txn_clear(s);
	return v;
}

/* dmarc_stop - drop a lookup in flight and its pending eom */
static void
dmarc_stop(struct dmarc_sess *s)
{
	struct filter_wait *w = s->w;

	resolver_cancel(s->q);
	s->q = NULL;
	s->w = NULL;
	if (w != NULL)
		filter_wait_done(w, FILTER_CONTINUE, NULL);	/* the chain drops it */
}

/* dmarc_cancel - the chain stopped waiting for eom */
static void
dmarc_cancel(void *inst, struct filter_ctx *ctx)
{
	struct dmarc_sess *s = *ctx->priv;

	(void)inst;
	if (s != NULL) {
		dmarc_stop(s);
		dmarc_txn_clear(s);
	}
}

/* dmarc_abort - the transaction ended undelivered */
static void
dmarc_abort(void *inst, struct filter_ctx *ctx)
{
	struct dmarc_sess *s = *ctx->priv;

	(void)inst;
	if (s != NULL && s->w == NULL)
		dmarc_txn_clear(s);
}

/* dmarc_close - the session ends */
static void
dmarc_close(void *inst, struct filter_ctx *ctx)
{
	struct dmarc_sess *s = *ctx->priv;

	(void)inst;
	if (s == NULL)
		return;
	dmarc_stop(s);
	dmarc_txn_clear(s);
	free(s);
	*ctx->priv = NULL;
}

const struct filter_ops dmarc_ops = {
	.name = "dmarc",
	.dns = true,
	.configure = dmarc_configure,
	.destroy = dmarc_destroy,
	.mail = dmarc_mail,
	.header = dmarc_header,
	.eom = dmarc_eom,
	.abort = dmarc_abort,
	.close = dmarc_close,
	.cancel = dmarc_cancel,
};
