/*
 * filter.c - the filter chain: registry, chain construction from the config
 * (with the chain's own keys timeout and default_action), the transaction's
 * edits and authentication results, header parsing and the composition of
 * the header block that is finally sent.  Running a stage is filter_run.c.
 *
 * Ownership: a chain owns its filter instances and names, and lives until
 * its last reference goes (filter_chain_free).  The transaction owns copies
 * of everything the edit helpers were given, and one reference on its body
 * spool when it is a blocking call's copy (filter_txn_copy); the session's
 * own transaction never owns its body.
 */
#include "config.h"

#include <assert.h>
#include <errno.h>
#include <netdb.h>
#include <sys/un.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "util.h"
#include "buf.h"
#include "log.h"
#include "spool.h"
#include "workers.h"
#include "filter.h"
#include "filter_priv.h"

#define FILTER_MAX_REGISTERED	64
#define FILTER_FOLD_WIDTH	78	/* RFC 5322 2.1.1 recommended line length */
#define FILTER_AR_NAME		"Authentication-Results"

static const struct filter_ops *filter_registry[FILTER_MAX_REGISTERED];
static size_t filter_nregistered;

static const char *const filter_verdict_names[] = {
	[FILTER_CONTINUE] = "continue",
	[FILTER_ACCEPT] = "accept",
	[FILTER_REJECT] = "reject",
	[FILTER_TEMPFAIL] = "tempfail",
	[FILTER_DISCARD] = "discard",
	[FILTER_QUARANTINE] = "quarantine",
	[FILTER_PENDING] = "pending",
};

static const char *const filter_stage_names[] = {
	[FILTER_STAGE_CONNECT] = "connect",
	[FILTER_STAGE_HELO] = "helo",
	[FILTER_STAGE_AUTH] = "auth",
	[FILTER_STAGE_MAIL] = "mail",
	[FILTER_STAGE_RCPT] = "rcpt",
	[FILTER_STAGE_DATA] = "data",
	[FILTER_STAGE_FINAL] = "final",
	[FILTER_STAGE_ABORT] = "abort",
	[FILTER_STAGE_CLOSE] = "close",
};

/* ---- registry ---- */

/* filter_register - make ops known by name; the same ops twice is harmless */
void
filter_register(const struct filter_ops *ops)
{
	const struct filter_ops *old;

	assert(ops != NULL && ops->name != NULL);
	if ((old = filter_lookup(ops->name)) != NULL) {
		if (old != ops)
			fatal("filter_register: two filters named \"%s\"", ops->name);
		return;
	}
	if (filter_nregistered == ARRAY_SIZE(filter_registry))
		fatal("filter_register: too many filters");
	filter_registry[filter_nregistered++] = ops;
}

/* filter_lookup - the registered ops called name, or NULL */
const struct filter_ops *
filter_lookup(const char *name)
{
	size_t i;

	for (i = 0; i < filter_nregistered; i++)
		if (strcmp(filter_registry[i]->name, name) == 0)
			return filter_registry[i];
	return NULL;
}

/* filter_verdict_name - "reject" etc. for logs */
const char *
filter_verdict_name(enum filter_verdict v)
{
	if ((size_t)v < ARRAY_SIZE(filter_verdict_names))
		return filter_verdict_names[v];
	return "invalid";
}

/* filter_stage_name - "rcpt" etc. for logs */
const char *
filter_stage_name(enum filter_stage s)
{
	if ((size_t)s < ARRAY_SIZE(filter_stage_names))
		return filter_stage_names[s];
	return "invalid";
}

/* ---- chains ---- */

/* filter_key_uint - a number key of the chain's, 0 to max, into *out (unchanged when absent) */
static bool
filter_key_uint(const struct filter_link *fl, const struct conf_section *sec, const char *key,
    unsigned long max, const char *expected, unsigned *out, char **err_r)
{
	const char *v = conf_section_get(sec, key);
	unsigned long n;
	char *end;

	if (v == NULL)
		return true;
	errno = 0;
	n = strtoul(v, &end, 10);
	if (*v < '0' || *v > '9' || *end != '\0' || errno != 0 || n > max) {
		*err_r = xasprintf("filter \"%s\": %s \"%s\": expected %s", fl->name, key, v,
		    expected);
		return false;
	}
	*out = (unsigned)n;
	return true;
}

/*
 * filter_link_keys - the chain's keys of a filter's section: timeout,
 * default_action and threads.  A section given to a filter without configure() may
 * hold nothing else (a key that does nothing is an error).
 */
static bool
filter_link_keys(struct filter_link *fl, const struct conf_section *sec, char **err_r)
{
	const char *v;
	size_t i;

	fl->timeout = FILTER_DEFAULT_TIMEOUT;
	fl->on_fail = FILTER_TEMPFAIL;
	if (sec == NULL)
		return true;
	if (!filter_key_uint(fl, sec, "timeout", 86400, "seconds, 0 to 86400 (0: no limit)",
	    &fl->timeout, err_r) ||
	    !filter_key_uint(fl, sec, "threads", 1024, "0 to 1024 (0: the shared filter pool)",
	    &fl->threads, err_r))
		return false;
	if (fl->threads > 0 && !fl->ops->may_block) {
		*err_r = xasprintf("filter \"%s\": threads: this filter never blocks a thread, "
		    "it needs no pool", fl->name);
		return false;
	}
	if ((v = conf_section_get(sec, "default_action")) != NULL) {
		if (strcmp(v, "accept") == 0)
			fl->on_fail = FILTER_ACCEPT;
		else if (strcmp(v, "reject") == 0)
			fl->on_fail = FILTER_REJECT;
		else if (strcmp(v, "tempfail") == 0)
			fl->on_fail = FILTER_TEMPFAIL;
		else {
			*err_r = xasprintf("filter \"%s\": default_action \"%s\": expected accept, "
			    "reject or tempfail", fl->name, v);
			return false;
		}
	}
	if (fl->ops->configure != NULL)
		return true;
	for (i = 0; i < sec->nkv; i++) {
		if (!filter_chain_key(sec->kv[i].key)) {
			*err_r = xasprintf("filter \"%s\": unknown key \"%s\" (this filter takes only "
			    "timeout, default_action and threads)", fl->name, sec->kv[i].key);
			return false;
		}
	}
	return true;
}

/* filter_chain_key - a key the chain reads in every filter's section */
bool
filter_chain_key(const char *key)
{
	return strcmp(key, "timeout") == 0 || strcmp(key, "default_action") == 0 ||
	    strcmp(key, "threads") == 0;
}

/* filter_link_init - resolve one "filters =" word and configure it */
static bool
filter_link_init(struct filter_link *fl, const struct conf *conf, const char *spec, char **err_r)
{
	const struct conf_section *sec = NULL;
	const char *colon, *inst;
	char *type, *err = NULL;

	if ((colon = strchr(spec, ':')) != NULL) {
		type = xstrndup(spec, (size_t)(colon - spec));
		inst = colon + 1;
		if (*type == '\0' || *inst == '\0') {
			*err_r = xasprintf("filter \"%s\": expected TYPE:NAME", spec);
			free(type);
			return false;
		}
	} else {
		type = xstrdup(spec);
		inst = NULL;
	}
	if ((fl->ops = filter_lookup(type)) == NULL) {
		*err_r = xasprintf("unknown filter \"%s\"", type);
		free(type);
		return false;
	}
	if (inst != NULL) {
		if (conf == NULL || (sec = conf_section_find(conf, type, inst)) == NULL) {
			*err_r = xasprintf("filter \"%s\": no section [%s %s]", spec, type, inst);
			free(type);
			return false;
		}
	} else if (conf != NULL)
		sec = conf_section_find(conf, "filter", type);
	free(type);

	fl->name = xstrdup(spec);
	if (!filter_link_keys(fl, sec, err_r)) {
		free(fl->name);
		fl->name = NULL;
		return false;
	}
	if (fl->ops->configure != NULL) {
		fl->inst = fl->ops->configure(conf, sec, &err);
		if (fl->inst == NULL && err != NULL) {
			*err_r = xasprintf("filter \"%s\": %s", spec, err);
			free(err);
			free(fl->name);
			fl->name = NULL;
			return false;
		}
		free(err);	/* a stray message with an instance: ignored */
	}
	return true;
}

/* filter_has_stage - does this filter do anything at stage */
bool
filter_has_stage(const struct filter_ops *ops, enum filter_stage stage)
{
	switch (stage) {
	case FILTER_STAGE_CONNECT:
		return ops->connect != NULL;
	case FILTER_STAGE_HELO:
		return ops->helo != NULL;
	case FILTER_STAGE_AUTH:
		return ops->auth != NULL;
	case FILTER_STAGE_MAIL:
		return ops->mail != NULL;
	case FILTER_STAGE_RCPT:
		return ops->rcpt != NULL;
	case FILTER_STAGE_DATA:
		return ops->header != NULL || ops->eoh != NULL || ops->body != NULL ||
		    ops->eom != NULL;
	case FILTER_STAGE_FINAL:
		return ops->final != NULL;
	case FILTER_STAGE_ABORT:
		return ops->abort != NULL;
	case FILTER_STAGE_CLOSE:
		return ops->close != NULL;
	}
	return false;
}

/* filter_chain_new - instantiate a listener's filters in order */
struct filter_chain *
filter_chain_new(const struct conf *conf, char **names, size_t n, char **err_r)
{
	struct filter_chain *chain;
	struct buf b;
	size_t i;
	int st;

	*err_r = NULL;
	chain = xcalloc(1, sizeof(*chain));
	chain->refs = 1;
	chain->links = xcalloc(n ? n : 1, sizeof(*chain->links));
	for (i = 0; i < n; i++) {
		if (!filter_link_init(&chain->links[i], conf, names[i], err_r)) {
			filter_chain_free(chain);
			return NULL;
		}
		chain->n = i + 1;
	}
	buf_init(&b);
	buf_puts(&b, "");
	for (i = 0; i < n; i++) {
		if (i > 0)
			buf_putc(&b, ',');
		buf_puts(&b, chain->links[i].name);
	}
	chain->names = b.data;
	for (i = 0; i < chain->n; i++) {
		chain->dns |= chain->links[i].ops->dns;
		for (st = FILTER_STAGE_CONNECT; st <= FILTER_STAGE_CLOSE; st++)
			if (filter_has_stage(chain->links[i].ops, st))
				chain->stages |= 1u << st;
	}
	return chain;
}

/* filter_chain_hold - one more reference, for a blocking call that may outlive its session */
struct filter_chain *
filter_chain_hold(const struct filter_chain *chain)
{
	struct filter_chain *c = (struct filter_chain *)chain;

	__atomic_add_fetch(&c->refs, 1, __ATOMIC_RELAXED);
	return c;
}

/* filter_chain_free - drop a reference; the last destroys the instances, last configured first */
void
filter_chain_free(struct filter_chain *chain)
{
	size_t i;

	if (chain == NULL || __atomic_sub_fetch(&chain->refs, 1, __ATOMIC_ACQ_REL) != 0)
		return;
	for (i = chain->n; i-- > 0;) {
		struct filter_link *fl = &chain->links[i];

		if (fl->ops->destroy != NULL && fl->inst != NULL)
			fl->ops->destroy(fl->inst);
		free(fl->name);
	}
	free(chain->links);
	free(chain->names);
	free(chain);
}

/* filter_chain_empty - true when there is nothing to run */
bool
filter_chain_empty(const struct filter_chain *chain)
{
	return chain == NULL || chain->n == 0;
}

/* filter_chain_dns - does a filter of the chain query the loop's resolver */
bool
filter_chain_dns(const struct filter_chain *chain)
{
	return chain != NULL && chain->dns;
}

/* filter_chain_names - "a,b,c" for the summary line */
const char *
filter_chain_names(const struct filter_chain *chain)
{
	return chain != NULL ? chain->names : "";
}

/* ---- transactions ---- */

/* filter_txn_init - an empty transaction */
void
filter_txn_init(struct filter_txn *txn)
{
	memset(txn, 0, sizeof(*txn));
	buf_init(&txn->auth_results);
}

/* filter_headers_clear - free the parsed headers */
static void
filter_headers_clear(struct filter_txn *txn)
{
	size_t i;

	for (i = 0; i < txn->nheaders; i++) {
		free(txn->headers[i].name);
		free(txn->headers[i].value);
	}
	free(txn->headers);
	txn->headers = NULL;
	txn->nheaders = 0;
}

/* filter_auth_fact_free - free a fact's strings */
static void
filter_auth_fact_free(struct filter_auth_fact *f)
{
	free(f->method);
	free(f->result);
	free(f->domain);
	free(f->scope);
}

/* filter_txn_reset - free everything but the body spool (the session's) */
void
filter_txn_reset(struct filter_txn *txn)
{
	size_t i;

	free(txn->queue_id);
	free(txn->mail_from);
	free(txn->mail_params);
	for (i = 0; i < txn->nrcpts; i++) {
		free(txn->rcpts[i]);
		if (txn->rcpt_params != NULL)
			free(txn->rcpt_params[i]);
	}
	free(txn->rcpts);
	free(txn->rcpt_params);
	filter_headers_clear(txn);
	for (i = 0; i < txn->nedits; i++) {
		free(txn->edits[i].name);
		free(txn->edits[i].value);
		free(txn->edits[i].params);
	}
	free(txn->edits);
	for (i = 0; i < txn->nfacts; i++)
		filter_auth_fact_free(&txn->facts[i]);
	free(txn->facts);
	buf_free(&txn->auth_results);
	buf_free(&txn->prepend);
	free(txn->quarantine);
	filter_txn_init(txn);
}

static struct filter_edit *filter_edit_new(struct filter_txn *txn, enum filter_edit_kind kind,
    const char *name, const char *value, size_t value_len);

/* filter_strv_copy - n strings, each copied (NULL stays NULL) */
static char **
filter_strv_copy(char *const *v, size_t n)
{
	char **c;
	size_t i;

	if (v == NULL)
		return NULL;
	c = xcalloc(n ? n : 1, sizeof(*c));
	for (i = 0; i < n; i++)
		c[i] = v[i] != NULL ? xstrdup(v[i]) : NULL;
	return c;
}

/*
 * filter_txn_copy - dst becomes a deep copy of src, with a reference on
 * its body (the caller drops it with spool_free before filter_txn_reset);
 * rcpt_params_cur and head are left NULL (the caller's).
 */
void
filter_txn_copy(struct filter_txn *dst, const struct filter_txn *src)
{
	size_t i;

	filter_txn_init(dst);
	dst->queue_id = src->queue_id != NULL ? xstrdup(src->queue_id) : NULL;
	dst->mail_from = src->mail_from != NULL ? xstrdup(src->mail_from) : NULL;
	dst->mail_params = src->mail_params != NULL ? xstrdup(src->mail_params) : NULL;
	dst->rcpts = filter_strv_copy(src->rcpts, src->nrcpts);
	dst->rcpt_params = filter_strv_copy(src->rcpt_params, src->nrcpts);
	dst->nrcpts = src->nrcpts;
	if (src->nheaders > 0) {
		dst->headers = xcalloc(src->nheaders, sizeof(*dst->headers));
		for (i = 0; i < src->nheaders; i++) {
			dst->headers[i].name = xstrdup(src->headers[i].name);
			dst->headers[i].value = xstrdup(src->headers[i].value);
		}
		dst->nheaders = src->nheaders;
	}
	dst->body = src->body != NULL ? spool_ref(src->body) : NULL;
	dst->body_offset = src->body_offset;
	for (i = 0; i < src->nedits; i++) {
		const struct filter_edit *e = &src->edits[i];
		struct filter_edit *d = filter_edit_new(dst, e->kind, e->name, e->value, e->value_len);

		d->index = e->index;
		d->params = e->params != NULL ? xstrdup(e->params) : NULL;
	}
	buf_append(&dst->auth_results, src->auth_results.data, src->auth_results.len);
	for (i = 0; i < src->nfacts; i++)
		filter_auth_fact(dst, src->facts[i].method, src->facts[i].result,
		    src->facts[i].domain, src->facts[i].scope);
	dst->quarantine = src->quarantine != NULL ? xstrdup(src->quarantine) : NULL;
	dst->discard = src->discard;
}

/* filter_edit_new - append an edit of kind, copying name and value */
static struct filter_edit *
filter_edit_new(struct filter_txn *txn, enum filter_edit_kind kind, const char *name,
    const char *value, size_t value_len)
{
	struct filter_edit *e;

	txn->edits = xreallocarray(txn->edits, txn->nedits + 1, sizeof(*txn->edits));
	e = &txn->edits[txn->nedits++];
	memset(e, 0, sizeof(*e));
	e->kind = kind;
	e->name = name != NULL ? xstrdup(name) : NULL;
	if (value != NULL) {
		e->value = xmalloc(value_len + 1);
		memcpy(e->value, value, value_len);
		e->value[value_len] = '\0';
		e->value_len = value_len;
	}
	return e;
}

/* filter_add_header - append a header at the end of the header */
void
filter_add_header(struct filter_txn *txn, const char *name, const char *value)
{
	filter_edit_new(txn, EDIT_ADD_HEADER, name, value, strlen(value));
}

/* filter_insert_header - insert a header at index (0 = top) */
void
filter_insert_header(struct filter_txn *txn, unsigned index, const char *name, const char *value)
{
	filter_edit_new(txn, EDIT_INSERT_HEADER, name, value, strlen(value))->index = index;
}

/* filter_change_header - change the index-th (1-based) name; NULL value deletes */
void
filter_change_header(struct filter_txn *txn, const char *name, unsigned index, const char *value)
{
	filter_edit_new(txn, EDIT_CHANGE_HEADER, name, value,
	    value != NULL ? strlen(value) : 0)->index = index;
}

/* filter_delete_header - delete the index-th (1-based) name */
void
filter_delete_header(struct filter_txn *txn, const char *name, unsigned index)
{
	filter_edit_new(txn, EDIT_DELETE_HEADER, name, NULL, 0)->index = index;
}

/* filter_replace_body - the new body (CRLF line ends), copied */
void
filter_replace_body(struct filter_txn *txn, const char *body, size_t len)
{
	filter_edit_new(txn, EDIT_REPLACE_BODY, NULL, body, len);
}

/* filter_change_from - a new envelope sender with its MAIL parameters (NULL: none) */
void
filter_change_from(struct filter_txn *txn, const char *from, const char *params)
{
	struct filter_edit *e = filter_edit_new(txn, EDIT_CHANGE_FROM, NULL, from, strlen(from));

	e->params = xstrdup(params != NULL ? params : "");
}

/* filter_add_rcpt - one more envelope recipient with its RCPT parameters (NULL: none) */
void
filter_add_rcpt(struct filter_txn *txn, const char *rcpt, const char *params)
{
	struct filter_edit *e = filter_edit_new(txn, EDIT_ADD_RCPT, NULL, rcpt, strlen(rcpt));

	e->params = xstrdup(params != NULL ? params : "");
}

/* filter_delete_rcpt - drop an envelope recipient */
void
filter_delete_rcpt(struct filter_txn *txn, const char *rcpt)
{
	filter_edit_new(txn, EDIT_DELETE_RCPT, NULL, rcpt, strlen(rcpt));
}

/* filter_prepend_fold - at p[i]: CRLF, WSP, then a visible octet before the line ends (a fold) */
static bool
filter_prepend_fold(const char *p, size_t len, size_t i)
{
	if (i + 2 >= len || p[i] != '\r' || p[i + 1] != '\n' || (p[i + 2] != ' ' && p[i + 2] != '\t'))
		return false;
	for (i += 2; i < len && (p[i] == ' ' || p[i] == '\t'); i++)
		;
	return i < len && (unsigned char)p[i] > 0x20 && p[i] != 0x7f;
}

/*
 * filter_prepend_header - FINAL: "name: value" for the top of the block
 * (controls but HTAB kept out, except the CRLF of a fold: CRLF WSP text)
 */
void
filter_prepend_header(struct filter_txn *txn, const char *name, const char *value)
{
	size_t start = txn->prepend.len;

	buf_printf(&txn->prepend, "%s: %s", name, value);
	for (; start < txn->prepend.len; start++) {
		unsigned char c = (unsigned char)txn->prepend.data[start];

		if (filter_prepend_fold(txn->prepend.data, txn->prepend.len, start))
			start += 2;	/* the fold's CRLF and first WSP stay */
		else if ((c < 0x20 && c != '\t') || c == 0x7f)
			txn->prepend.data[start] = ' ';
	}
	buf_puts(&txn->prepend, "\r\n");
}

/* filter_auth_result - append "; " + one resinfo (controls become spaces) */
void
filter_auth_result(struct filter_txn *txn, const char *fmt, ...)
{
	struct buf *b = &txn->auth_results;
	va_list ap;
	size_t start;
	int n;

	va_start(ap, fmt);
	n = vsnprintf(NULL, 0, fmt, ap);
	va_end(ap);
	if (n < 0)
		fatal("filter_auth_result: bad format");
	buf_puts(b, "; ");
	start = b->len;
	buf_reserve(b, (size_t)n);
	va_start(ap, fmt);
	vsnprintf(b->data + start, (size_t)n + 1, fmt, ap);
	va_end(ap);
	b->len += (size_t)n;
	for (; start < b->len; start++)
		if ((unsigned char)b->data[start] < 0x20 || b->data[start] == 0x7f)
			b->data[start] = ' ';
}

/* filter_auth_fact - record a result for later filters */
void
filter_auth_fact(struct filter_txn *txn, const char *method, const char *result,
    const char *domain, const char *scope)
{
	struct filter_auth_fact *f;

	txn->facts = xreallocarray(txn->facts, txn->nfacts + 1, sizeof(*txn->facts));
	f = &txn->facts[txn->nfacts++];
	f->method = xstrdup(method);
	f->result = xstrdup(result);
	f->domain = domain != NULL ? xstrdup(domain) : NULL;
	f->scope = scope != NULL ? xstrdup(scope) : NULL;
}

/* ---- header block ---- */

/*
 * filter_header_name_len - the field name's length if the line p[0..n) opens
 * a field ("name:" or the obsolete "name WSP* :"), else 0; *colon_r is the
 * offset of the ':'
 */
static size_t
filter_header_name_len(const char *p, size_t n, size_t *colon_r)
{
	size_t i, nlen;

	for (i = 0; i < n && (unsigned char)p[i] > ' ' && (unsigned char)p[i] <= '~' &&
	    p[i] != ':'; i++)
		;
	nlen = i;
	while (i < n && (p[i] == ' ' || p[i] == '\t'))
		i++;
	if (nlen == 0 || i == n || p[i] != ':')
		return 0;
	*colon_r = i;
	return nlen;
}

/* filter_headers_grow - room for one more header (doubling: a block may hold many) */
static void
filter_headers_grow(struct filter_txn *txn)
{
	size_t n = txn->nheaders;

	if ((n & (n - 1)) == 0)	/* 0, 1, 2, 4, ...: full (the capacity is max(n, 1)) */
		txn->headers = xreallocarray(txn->headers, n == 0 ? 1 : n * 2,
		    sizeof(*txn->headers));
}

/* filter_hparser_close - store the open field, if any, in txn */
static void
filter_hparser_close(struct filter_hparser *hp, struct filter_txn *txn, const char *msg)
{
	struct filter_header *h;

	if (hp->field == SIZE_MAX)
		return;
	filter_headers_grow(txn);
	h = &txn->headers[txn->nheaders++];
	h->name = xstrndup(msg + hp->field, hp->nlen);
	h->value = xstrndup(msg + hp->value, hp->vend - hp->value);
	hp->field = SIZE_MAX;
}

/* filter_hparser_end - the block ends: the body starts at body */
static enum filter_hparser_status
filter_hparser_end(struct filter_hparser *hp, struct filter_txn *txn, const char *msg,
    size_t body, enum filter_eoh eoh)
{
	filter_hparser_close(hp, txn, msg);
	hp->off = hp->body = body;
	hp->eoh = eoh;
	return FILTER_HPARSER_DONE;
}

/* filter_hparser_init - a new block: no field yet, txn's headers cleared */
void
filter_hparser_init(struct filter_hparser *hp, struct filter_txn *txn, size_t max)
{
	memset(hp, 0, sizeof(*hp));
	hp->max = max;
	hp->field = SIZE_MAX;
	filter_headers_clear(txn);
}

/*
 * filter_hparser_feed - parse the complete lines of msg[hp->off..len) (see
 * filter.h).  A field stays open until the next line shows it is not folded.
 * Lines end in CRLF; a bare LF is taken as a line end too (the session never
 * has one: the DATA reader normalizes or refuses them).
 */
enum filter_hparser_status
filter_hparser_feed(struct filter_hparser *hp, struct filter_txn *txn, const char *msg,
    size_t len, bool complete)
{
	const char *lf;
	size_t off, end, next, nlen, colon = 0;

	assert(len >= hp->off);
	while ((off = hp->off) < len) {
		if ((lf = memchr(msg + off, '\n', len - off)) != NULL) {
			next = (size_t)(lf - msg) + 1;
			end = next - 1;
			if (end > off && msg[end - 1] == '\r')
				end--;
			if (end == off)
				return filter_hparser_end(hp, txn, msg, next,
				    FILTER_EOH_EMPTY_LINE);
		} else if (complete)
			end = next = len;	/* a last line without its line end */
		else
			return FILTER_HPARSER_MORE;
		if (memchr(msg + off, '\0', end - off) != NULL)
			return filter_hparser_end(hp, txn, msg, off, FILTER_EOH_MALFORMED);
		if (msg[off] == ' ' || msg[off] == '\t') {
			if (hp->field == SIZE_MAX)	/* nothing to continue */
				return filter_hparser_end(hp, txn, msg, off, FILTER_EOH_MALFORMED);
		} else if ((nlen = filter_header_name_len(msg + off, end - off, &colon)) == 0) {
			return filter_hparser_end(hp, txn, msg, off, FILTER_EOH_MALFORMED);
		} else {
			filter_hparser_close(hp, txn, msg);
			hp->field = off;
			hp->nlen = nlen;
			hp->value = off + colon + 1;
		}
		hp->vend = end;
		if (next > hp->max)
			return FILTER_HPARSER_TOO_BIG;
		hp->off = next;
	}
	if (!complete)
		return FILTER_HPARSER_MORE;
	return filter_hparser_end(hp, txn, msg, len, FILTER_EOH_END);
}

/* filter_parse_headers - a whole message's block, no limit; the body's offset */
size_t
filter_parse_headers(struct filter_txn *txn, const char *msg, size_t len)
{
	struct filter_hparser hp;

	filter_hparser_init(&hp, txn, SIZE_MAX);
	if (filter_hparser_feed(&hp, txn, msg, len, true) != FILTER_HPARSER_DONE)
		fatal("filter_parse_headers: no end of the header block");
	return hp.body;
}

/* One header line of the outgoing block. */
struct filter_out {
	const char *name;
	const char *value;
	bool received;		/* came with the message (may be forged) */
	bool filtered;		/* value from a filter: needs cleaning */
};

struct filter_outs {
	struct filter_out *v;
	size_t n;
	size_t cap;
};

/* filter_outs_insert - put h at pos (clamped to the end) */
static void
filter_outs_insert(struct filter_outs *o, size_t pos, const struct filter_out *h)
{
	if (pos > o->n)
		pos = o->n;
	if (o->n == o->cap) {
		o->cap = o->cap ? o->cap * 2 : 16;
		o->v = xreallocarray(o->v, o->cap, sizeof(*o->v));
	}
	memmove(o->v + pos + 1, o->v + pos, (o->n - pos) * sizeof(*o->v));
	o->v[pos] = *h;
	o->n++;
}

/* filter_outs_remove - drop the line at pos */
static void
filter_outs_remove(struct filter_outs *o, size_t pos)
{
	memmove(o->v + pos, o->v + pos + 1, (o->n - pos - 1) * sizeof(*o->v));
	o->n--;
}

/* filter_outs_find - position of the index-th (1-based) name, or o->n */
static size_t
filter_outs_find(const struct filter_outs *o, const char *name, unsigned index)
{
	size_t i;

	if (index == 0)
		index = 1;
	for (i = 0; i < o->n; i++)
		if (str_casecmp(o->v[i].name, name) == 0 && --index == 0)
			return i;
	return o->n;
}

/* filter_name_ok - a field name a filter may add: printable, no SP, no ':' */
static bool
filter_name_ok(const char *name)
{
	const unsigned char *p = (const unsigned char *)name;

	if (p == NULL || *p == '\0')
		return false;
	for (; *p != '\0'; p++)
		if (*p <= ' ' || *p > '~' || *p == ':')
			return false;
	return true;
}

/* filter_apply_edit - one header edit, milter semantics */
static void
filter_apply_edit(struct filter_outs *o, const struct filter_edit *e)
{
	struct filter_out h = { e->name, e->value, false, true };
	size_t pos;

	switch (e->kind) {
	case EDIT_ADD_HEADER:
	case EDIT_INSERT_HEADER:
	case EDIT_CHANGE_HEADER:
	case EDIT_DELETE_HEADER:
		break;
	default:
		return;		/* envelope and body edits are the session's */
	}
	if (!filter_name_ok(e->name) ||
	    (e->value == NULL && (e->kind == EDIT_ADD_HEADER || e->kind == EDIT_INSERT_HEADER))) {
		log_warn("event=filter_bad_edit kind=%d", (int)e->kind);
		return;
	}
	switch (e->kind) {
	case EDIT_ADD_HEADER:
		filter_outs_insert(o, o->n, &h);
		break;
	case EDIT_INSERT_HEADER:
		filter_outs_insert(o, e->index, &h);
		break;
	case EDIT_CHANGE_HEADER:
	case EDIT_DELETE_HEADER:
		pos = filter_outs_find(o, e->name, e->index);
		if (e->kind == EDIT_DELETE_HEADER || e->value == NULL) {
			if (pos < o->n)
				filter_outs_remove(o, pos);
		} else if (pos < o->n) {
			o->v[pos].value = e->value;
			o->v[pos].filtered = true;
		} else
			filter_outs_insert(o, o->n, &h);	/* as sendmail does */
		break;
	default:
		break;
	}
}

/* filter_skip_cfws - past white space, line breaks and (nested) comments */
static const char *
filter_skip_cfws(const char *p)
{
	int depth;

	for (;;) {
		while (*p == ' ' || *p == '\t' || *p == '\r' || *p == '\n')
			p++;
		if (*p != '(')
			return p;
		for (depth = 0; *p != '\0'; p++) {
			if (*p == '\\' && p[1] != '\0')
				p++;
			else if (*p == '(')
				depth++;
			else if (*p == ')' && --depth == 0) {
				p++;
				break;
			}
		}
	}
}

/*
 * filter_ar_claims - does this Authentication-Results value name
 * authserv_id (token or quoted-string, case-insensitive; RFC 8601 2.2)?
 */
static bool
filter_ar_claims(const char *value, const char *authserv_id)
{
	const char *p = filter_skip_cfws(value), *start;
	char q[256];
	size_t n = 0;

	if (*p == '"') {
		for (p++; *p != '\0' && *p != '"'; p++) {
			if (*p == '\\' && p[1] != '\0')
				p++;
			if (n + 1 >= sizeof(q))
				return false;
			q[n++] = *p;
		}
		q[n] = '\0';
		return str_casecmp(q, authserv_id) == 0;
	}
	for (start = p; *p != '\0' && *p != ';' && *p != '(' && *p != ' ' && *p != '\t' &&
	    *p != '\r' && *p != '\n'; p++)
		;
	n = (size_t)(p - start);
	return n == strlen(authserv_id) && str_ncasecmp(start, authserv_id, n) == 0;
}

/*
 * filter_out_forged - a received line that only we may write: results
 * claiming authserv_id, or a quarantine mark
 */
static bool
filter_out_forged(const struct filter_out *h, const char *authserv_id)
{
	if (!h->received)
		return false;
	if (str_casecmp(h->name, FILTER_QUARANTINE_NAME) == 0)
		return true;
	return authserv_id != NULL && str_casecmp(h->name, FILTER_AR_NAME) == 0 &&
	    filter_ar_claims(h->value, authserv_id);
}

/* filter_put_value - a filter's value: a leading space, folds kept, controls out */
static void
filter_put_value(struct buf *out, const char *v)
{
	const char *p;

	if (*v != ' ' && *v != '\t')
		buf_putc(out, ' ');
	for (p = v; *p != '\0'; p++) {
		if (p[0] == '\r' && p[1] == '\n' && (p[2] == ' ' || p[2] == '\t')) {
			buf_puts(out, "\r\n");
			p++;
		} else if (p[0] == '\n' && (p[1] == ' ' || p[1] == '\t'))
			buf_puts(out, "\r\n");
		else if ((unsigned char)*p < 0x20 && *p != '\t')
			buf_putc(out, ' ');
		else
			buf_putc(out, *p);
	}
}

/* filter_put_ar - our Authentication-Results, folded between resinfos */
static void
filter_put_ar(struct buf *out, const char *authserv_id, const char *results)
{
	const char *p = results, *start, *end;
	size_t col, n;
	char quote;
	int depth;

	buf_printf(out, "%s: %s", FILTER_AR_NAME, authserv_id);
	col = strlen(FILTER_AR_NAME) + 2 + strlen(authserv_id);
	while (*p != '\0') {
		/* one resinfo: up to a ';' outside quotes and comments */
		for (start = p, quote = 0, depth = 0; *p != '\0'; p++) {
			if (*p == '\\' && p[1] != '\0' && (quote || depth))
				p++;
			else if (quote)
				quote = *p == '"' ? 0 : quote;
			else if (*p == '"')
				quote = '"';
			else if (*p == '(')
				depth++;
			else if (*p == ')' && depth > 0)
				depth--;
			else if (*p == ';' && depth == 0)
				break;
		}
		end = p;
		if (*p == ';')
			p++;
		while (start < end && (*start == ' ' || *start == '\t'))
			start++;
		while (end > start && (end[-1] == ' ' || end[-1] == '\t'))
			end--;
		if (start == end)
			continue;
		n = (size_t)(end - start);
		buf_putc(out, ';');
		if (col + 2 + n > FILTER_FOLD_WIDTH) {
			buf_puts(out, "\r\n\t");
			col = 8;
		} else {
			buf_putc(out, ' ');
			col += 2;
		}
		buf_append(out, start, n);
		col += n;
	}
	buf_puts(out, "\r\n");
}

/*
 * filter_headers_edited - the fields as the edits so far left them, in
 * order (name and value point into txn, which must not change meanwhile);
 * the caller frees the array.  What a filter's header callbacks see after
 * another filter edited the block.
 */
struct filter_header *
filter_headers_edited(const struct filter_txn *txn, size_t *n)
{
	struct filter_outs o = { NULL, 0, 0 };
	struct filter_out h;
	struct filter_header *v;
	size_t i;

	for (i = 0; i < txn->nheaders; i++) {
		h = (struct filter_out){ txn->headers[i].name, txn->headers[i].value, true, false };
		filter_outs_insert(&o, o.n, &h);
	}
	for (i = 0; i < txn->nedits; i++)
		filter_apply_edit(&o, &txn->edits[i]);
	v = xcalloc(o.n ? o.n : 1, sizeof(*v));
	for (i = 0; i < o.n; i++) {
		v[i].name = (char *)o.v[i].name;
		v[i].value = (char *)o.v[i].value;
	}
	*n = o.n;
	free(o.v);
	return v;
}

/* filter_body_view - the body as the filters so far left it (see filter.h) */
void
filter_body_view(const struct filter_txn *txn, const char **mem, size_t *off, size_t *len)
{
	size_t i;

	for (i = txn->nedits; i-- > 0;) {
		if (txn->edits[i].kind == EDIT_REPLACE_BODY) {
			*mem = txn->edits[i].value;
			*len = txn->edits[i].value_len;
			*off = 0;
			return;
		}
	}
	*mem = txn->body != NULL ? spool_mem(txn->body) : NULL;
	*len = txn->body != NULL ? spool_size(txn->body) : 0;
	*off = txn->body_offset;
}

/* filter_parse_port - "1".."65535" */
static bool
filter_parse_port(const char *s)
{
	size_t n = strspn(s, "0123456789");

	return n > 0 && n <= 5 && s[n] == '\0' && atoi(s) >= 1 && atoi(s) <= 65535;
}

/* filter_parse_socket - inet:HOST:PORT, inet:PORT@HOST, inet6:[ADDR]:PORT, unix:PATH (see filter.h) */
bool
filter_parse_socket(const char *spec, struct sockaddr_storage *sa_r, socklen_t *len_r,
    char **err_r)
{
	struct addrinfo hints, *ai = NULL;
	const char *hp, *colon, *end, *at, *port = "";
	char *host = NULL, pbuf[8];
	int family, rc;

	memset(sa_r, 0, sizeof(*sa_r));
	if (strncmp(spec, "unix:", 5) == 0) {
		struct sockaddr_un *sun = (struct sockaddr_un *)sa_r;

		if (spec[5] == '\0' || strlen(spec + 5) >= sizeof(sun->sun_path)) {
			*err_r = xasprintf("\"%s\": the socket path is empty or longer than %zu octets",
			    spec, sizeof(sun->sun_path) - 1);
			return false;
		}
		sun->sun_family = AF_UNIX;
		memcpy(sun->sun_path, spec + 5, strlen(spec + 5) + 1);
		*len_r = (socklen_t)sizeof(*sun);
		return true;
	}
	if (strncmp(spec, "inet:", 5) == 0 && (at = strchr(spec + 5, '@')) != NULL) {
		/* Sendmail's inet:PORT@HOST, as milters document their socket */
		family = AF_INET;
		if (at[1] != '\0')
			host = xstrdup(at + 1);
		port = pbuf;
		str_copy(pbuf, spec + 5, (size_t)(at - spec - 5) + 1 < sizeof(pbuf) ?
		    (size_t)(at - spec - 5) + 1 : sizeof(pbuf));
	} else if (strncmp(spec, "inet:", 5) == 0) {
		family = AF_INET;
		hp = spec + 5;
		if ((colon = strrchr(hp, ':')) != NULL && colon > hp)
			host = xstrndup(hp, (size_t)(colon - hp));
		port = colon != NULL ? colon + 1 : "";
	} else if (strncmp(spec, "inet6:", 6) == 0) {
		family = AF_INET6;
		hp = spec + 6;
		if (*hp == '[' && (end = strchr(hp, ']')) != NULL && end[1] == ':' && end > hp + 1) {
			host = xstrndup(hp + 1, (size_t)(end - hp - 1));
			port = end + 2;
		}
	} else {
		*err_r = xasprintf("\"%s\": write inet:HOST:PORT, inet6:[ADDRESS]:PORT or unix:PATH",
		    spec);
		return false;
	}
	if (host == NULL || !filter_parse_port(port)) {
		*err_r = xasprintf("\"%s\": write %s, the port a number from 1 to 65535", spec,
		    family == AF_INET ? "inet:HOST:PORT" : "inet6:[ADDRESS]:PORT");
		free(host);
		return false;
	}
	memset(&hints, 0, sizeof(hints));
	hints.ai_family = family;
	hints.ai_socktype = SOCK_STREAM;
	hints.ai_flags = AI_NUMERICSERV | (family == AF_INET6 ? AI_NUMERICHOST : 0);
	if ((rc = getaddrinfo(host, port, &hints, &ai)) != 0 || ai == NULL) {
		*err_r = xasprintf("\"%s\": \"%s\" is no %s: %s", spec, host,
		    family == AF_INET ? "IPv4 address or host name" : "IPv6 address",
		    rc != 0 ? gai_strerror(rc) : "no address");
		free(host);
		return false;
	}
	memcpy(sa_r, ai->ai_addr, ai->ai_addrlen);
	*len_r = ai->ai_addrlen;
	freeaddrinfo(ai);
	free(host);
	return true;
}

/* filter_conf_uint - key = number in lo..hi into *out; false + *err_r */
bool
filter_conf_uint(const struct conf_kv *kv, unsigned long lo, unsigned long hi, unsigned *out,
    char **err_r)
{
	unsigned long n;
	char *end;

	errno = 0;
	n = strtoul(kv->value, &end, 10);
	if (kv->value[0] < '0' || kv->value[0] > '9' || *end != '\0' || errno != 0 ||
	    n < lo || n > hi) {
		*err_r = xasprintf("%s \"%s\" at line %d: expected %lu to %lu", kv->key,
		    kv->value, kv->line, lo, hi);
		return false;
	}
	*out = (unsigned)n;
	return true;
}

/*
 * filter_compose_headers - the header block to send (see filter.h).  Edits
 * apply in order to the headers as received, so indexes mean what a milter
 * saw.  Then received Authentication-Results claiming authserv_id and any
 * received X-Portier-Quarantine are dropped as forged (the session writes
 * our quarantine mark itself); our Authentication-Results goes on top.
 * Headers added or changed by filters are theirs: never dropped.
 */
void
filter_compose_headers(const struct filter_txn *txn, const char *authserv_id, struct buf *out)
{
	struct filter_outs o = { NULL, 0, 0 };
	struct filter_out h;
	size_t i, kept;

	for (i = 0; i < txn->nheaders; i++) {
		h = (struct filter_out){ txn->headers[i].name, txn->headers[i].value, true, false };
		filter_outs_insert(&o, o.n, &h);
	}
	for (i = 0; i < txn->nedits; i++)
		filter_apply_edit(&o, &txn->edits[i]);
	/* One pass: a block may be thousands of forged lines. */
	for (i = kept = 0; i < o.n; i++)
		if (!filter_out_forged(&o.v[i], authserv_id))
			o.v[kept++] = o.v[i];
	o.n = kept;

	if (txn->auth_results.len > 0 && authserv_id != NULL)
		filter_put_ar(out, authserv_id, txn->auth_results.data);
	for (i = 0; i < o.n; i++) {
		buf_puts(out, o.v[i].name);
		buf_putc(out, ':');
		if (o.v[i].filtered)
			filter_put_value(out, o.v[i].value);
		else
			buf_puts(out, o.v[i].value);
		buf_puts(out, "\r\n");
	}
	free(o.v);
}
