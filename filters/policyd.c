/*
 * policyd.c - the "policyd" filter: portier as a client of Postfix's SMTP
 * access policy delegation protocol (SMTPD_POLICY_README), so that the
 * policy servers written for Postfix (policyd-spf, postgrey, ...) serve it
 * unchanged.
 *
 * At each stage of "stages =" it sends a request ("name=value" lines, then
 * an empty line: every attribute Postfix 3.8 sends, empty where portier has
 * no value) and reads the reply ("action=..." and maybe other attributes,
 * ignored, then an empty line).  The action is mapped to a verdict by
 * Postfix's access(5) rules (policyd_action_parse, portier.conf(5)); PREPEND,
 * REDIRECT and BCC are kept and applied as edits at end of message, which
 * this filter always takes part in for that reason.  A server that fails
 * (no connection, a close, garbage, a line over max_reply, an unknown
 * action) fails the request: the chain applies default_action; one that
 * does not answer in time is the chain's timeout.
 *
 * Connections: a request takes an idle connection to its server from the
 * loop's pool, or opens one (non-blocking); after the reply the connection
 * goes back to the pool, where it serves the session's next request or
 * another session's, as Postfix's smtpd keeps its policy connections open.
 * An idle connection is closed after idle_timeout seconds, or as soon as
 * the server closes it or sends anything; a request on a pooled connection
 * that the server turns out to have closed (EOF or an error before any byte
 * of a reply) is sent once more on a fresh connection.  The pool is the loop
 * thread's (one event loop per thread): thread-specific data, freed when
 * the thread ends (while its base still exists).  A thread that runs a
 * second loop while idle connections of the first are pooled pools nothing
 * for the second.
 *
 * Every wait is owned: a request in flight is the session's per-filter
 * state (its connection, the handle), cancel() closes the connection (no
 * late reply can arrive) and gives the handle back; close() frees the rest.
 * A completion touches nothing of the session after filter_wait_done.
 *
 * Never blocks a loop: configure() resolves a host name of "socket =", on
 * the main thread.  The instance is read-only after configure().
 */
#include "config.h"

#include <assert.h>
#include <errno.h>
#include <netdb.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/event.h>
#include <event2/util.h>

#include "util.h"
#include "buf.h"
#include "log.h"
#include "spool.h"
#include "filter.h"
#include "policyd.h"

#define POLICYD_MAX_REPLY	2048	/* octets of a reply line ("max_reply") */
#define POLICYD_IDLE_TIMEOUT	60	/* seconds a connection may idle ("idle_timeout") */
#define POLICYD_IDLE_MAX	64	/* idle connections one loop keeps */
#define POLICYD_HEADER_MAX	998	/* a PREPENDed field, RFC 5322 2.1.1 */
#define POLICYD_ADDR_MAX	256	/* a REDIRECT or BCC address, RFC 5321 4.5.3.1.3 */

#define POLICYD_KEYS	"socket, stages, max_reply, policy_context, idle_timeout, timeout, " \
			"default_action"

/* The instance: one [policyd NAME] section. */
struct policyd {
	char *name;		/* NAME, for the log */
	char *socket;		/* as written: which connections of the pool serve it */
	struct sockaddr_storage sa;
	socklen_t salen;
	unsigned stages;	/* 1 << enum policyd_stage */
	size_t max_reply;
	char *context;		/* policy_context */
	unsigned idle_timeout;	/* seconds; 0: no connection is kept */
};

/* What PREPEND, REDIRECT and BCC asked for, applied at end of message. */
struct policyd_edits {
	char **prepend;		/* "Name: value", in the order given */
	size_t nprepend;
	char *redirect;		/* the last REDIRECT, or NULL */
	char **bcc;
	size_t nbcc;
};

struct policyd_conn;

/* Per-session state. */
struct policyd_sess {
	const struct policyd *pd;
	uint64_t id;
	struct policyd_conn *conn;	/* the request's connection, NULL between requests */
	struct filter_wait *w;	/* the stage waiting for the reply, NULL between requests */
	enum policyd_stage stage;	/* of the request in progress */
	struct buf req;		/* the request, kept for one more try */
	struct policyd_reply reply;
	unsigned long long start_ms;
	bool retried;		/* the request was sent again on a fresh connection */
	struct policyd_edits sess_edits;	/* given at CONNECT or HELO: every transaction's */
	struct policyd_edits txn_edits;	/* this transaction's */
};

/* A connection to a policy server: a request's, or idle in its loop's pool. */
struct policyd_conn {
	struct bufferevent *bev;
	struct event_base *base;
	char *key;		/* the server's socket spec */
	struct policyd_sess *owner;	/* the request's session state; NULL while idle */
	struct policyd_conn *next;	/* the pool's list */
	bool reused;		/* taken from the pool: the server may have closed it */
	bool got;		/* a byte of the reply came */
};

/* The idle connections of the loop that runs on this thread. */
struct policyd_pool {
	struct event_base *base;
	struct policyd_conn *idle;	/* most recently used first */
	unsigned n;
};

static const char *const policyd_stage_words[] = {
	"connect", "helo", "mail", "rcpt", "data",
};
static const char *const policyd_states[] = {
	"CONNECT", "HELO", "MAIL", "RCPT", "END-OF-MESSAGE",
};

/* policyd_stage_name - the word of "stages =" */
const char *
policyd_stage_name(enum policyd_stage s)
{
	return (size_t)s < ARRAY_SIZE(policyd_stage_words) ? policyd_stage_words[s] : "?";
}

/* ---- configuration ---- */

/* policyd_parse_stages - the words of "stages =" into a mask (see policyd.h) */
bool
policyd_parse_stages(const char *value, unsigned *mask_r, char **err_r)
{
	char *copy = xstrdup(value), *word, *save = NULL;
	unsigned mask = 0;
	size_t i;

	for (word = strtok_r(copy, " \t,", &save); word != NULL;
	    word = strtok_r(NULL, " \t,", &save)) {
		for (i = 0; i < ARRAY_SIZE(policyd_stage_words); i++)
			if (str_casecmp(word, policyd_stage_words[i]) == 0)
				break;
		if (i == ARRAY_SIZE(policyd_stage_words)) {
			*err_r = xasprintf("\"%s\" is no stage; use connect, helo, mail, rcpt, data",
			    word);
			free(copy);
			return false;
		}
		mask |= 1u << i;
	}
	free(copy);
	if (mask == 0) {
		*err_r = xstrdup("no stage; use connect, helo, mail, rcpt, data");
		return false;
	}
	*mask_r = mask;
	return true;
}

/* policyd_key - apply one key of the section; false + *err_r */
static bool
policyd_key(struct policyd *pd, const struct conf_kv *kv, char **err_r)
{
	unsigned n;
	char *why = NULL;

	if (strcmp(kv->key, "socket") == 0) {
		if (!filter_parse_socket(kv->value, &pd->sa, &pd->salen, &why))
			goto bad;
		free(pd->socket);
		pd->socket = xstrdup(kv->value);
		return true;
	}
	if (strcmp(kv->key, "stages") == 0) {
		if (!policyd_parse_stages(kv->value, &pd->stages, &why))
			goto bad;
		return true;
	}
	if (strcmp(kv->key, "max_reply") == 0) {
		if (!filter_conf_uint(kv, 16, 1024 * 1024, &n, err_r))
			return false;
		pd->max_reply = n;
		return true;
	}
	if (strcmp(kv->key, "idle_timeout") == 0) {
		if (!filter_conf_uint(kv, 0, 3600, &n, err_r))
			return false;
		pd->idle_timeout = (unsigned)n;
		return true;
	}
	if (strcmp(kv->key, "policy_context") == 0) {
		free(pd->context);
		pd->context = xstrdup(kv->value);
		return true;
	}
	if (filter_chain_key(kv->key))
		return true;
	*err_r = xasprintf("unknown key \"%s\" (line %d); the keys are " POLICYD_KEYS, kv->key,
	    kv->line);
	return false;
bad:
	*err_r = xasprintf("%s (line %d): %s", kv->key, kv->line, why);
	free(why);
	return false;
}

static void policyd_destroy(void *inst);

/* policyd_configure - the keys of [policyd NAME]; socket is required */
static void *
policyd_configure(const struct conf *conf, const struct conf_section *sec, char **err_r)
{
	struct policyd *pd = xcalloc(1, sizeof(*pd));
	size_t i;

	(void)conf;
	pd->name = xstrdup(sec != NULL && strcmp(sec->type, "policyd") == 0 ? sec->name :
	    "policyd");
	pd->stages = POLICYD_DEFAULT_STAGES;
	pd->max_reply = POLICYD_MAX_REPLY;
	pd->idle_timeout = POLICYD_IDLE_TIMEOUT;
	pd->context = xstrdup("");
	for (i = 0; sec != NULL && i < sec->nkv; i++) {
		if (!policyd_key(pd, &sec->kv[i], err_r)) {
			policyd_destroy(pd);
			return NULL;
		}
	}
	if (pd->socket == NULL) {
		*err_r = xstrdup("socket is required: write it in a [policyd NAME] section and "
		    "name the filter policyd:NAME (socket = inet:HOST:PORT, "
		    "inet6:[ADDRESS]:PORT or unix:PATH)");
		policyd_destroy(pd);
		return NULL;
	}
	return pd;
}

/* policyd_destroy - the instance */
static void
policyd_destroy(void *inst)
{
	struct policyd *pd = inst;

	free(pd->name);
	free(pd->socket);
	free(pd->context);
	free(pd);
}

/* ---- the request ---- */

/* policyd_attr - "name=value\n", a control in value sent as '?' */
static void
policyd_attr(struct buf *out, const char *name, const char *value)
{
	const char *p, *start;

	buf_puts(out, name);
	buf_putc(out, '=');
	for (p = start = value != NULL ? value : ""; *p != '\0'; p++) {
		if ((unsigned char)*p < 0x20 || *p == 0x7f) {
			buf_append(out, start, (size_t)(p - start));
			buf_putc(out, '?');
			start = p + 1;
		}
	}
	buf_append(out, start, (size_t)(p - start));
	buf_putc(out, '\n');
}

/* policyd_declared_size - MAIL's SIZE= parameter, 0 without one */
static unsigned long long
policyd_declared_size(const char *params)
{
	const char *p = params;

	while (p != NULL && *p != '\0') {
		if (str_ncasecmp(p, "SIZE=", 5) == 0)
			return strtoull(p + 5, NULL, 10);
		if ((p = strchr(p, ' ')) != NULL)
			p++;
	}
	return 0;
}

/* policyd_cn - the CN of a subject in X509_NAME_oneline's form ("/C=DE/CN=x"), "" without one */
static void
policyd_cn(const char *subject, char *out, size_t size)
{
	const char *p;
	size_t n;

	out[0] = '\0';
	if (subject == NULL || (p = strstr(subject, "/CN=")) == NULL)
		return;
	p += 4;
	n = strcspn(p, "/");
	if (n >= size)
		n = size - 1;
	memcpy(out, p, n);
	out[n] = '\0';
}

/* policyd_encode - the request for q (see policyd.h) */
bool
policyd_encode(const struct policyd_query *q, struct buf *out, char **err_r)
{
	const struct filter_session *s = q->sess;
	const struct filter_txn *t = q->txn;
	const char *rcpt = "";
	char instance[64], num[32], cport[16], sport[16], cn[256];
	unsigned long long size = 0;
	size_t start = out->len, nrcpts = 0;
	bool tls = s->tls_version != NULL;

	if (t != NULL) {
		snprintf(instance, sizeof(instance), "%s", t->queue_id != NULL ? t->queue_id : "");
		nrcpts = q->stage == POLICYD_EOM ? t->nrcpts : 0;
		if (q->stage == POLICYD_RCPT && q->arg != NULL)
			rcpt = q->arg;
		else if (q->stage == POLICYD_EOM && t->nrcpts == 1)
			rcpt = t->rcpts[0];
		if (q->stage == POLICYD_EOM && t->body != NULL)
			size = spool_size(t->body);
		else
			size = policyd_declared_size(t->mail_params);
	} else
		snprintf(instance, sizeof(instance), SESSION_ID_FMT ".0", SESSION_ID(s->id));
	snprintf(cport, sizeof(cport), "%u", s->client_port);
	snprintf(sport, sizeof(sport), "%u", s->local_port);
	policyd_cn(s->tls_peer_subject, cn, sizeof(cn));

	policyd_attr(out, "request", "smtpd_access_policy");
	policyd_attr(out, "protocol_state", policyd_states[q->stage]);
	policyd_attr(out, "protocol_name", s->esmtp ? "ESMTP" : "SMTP");
	policyd_attr(out, "helo_name", q->stage == POLICYD_HELO && q->arg != NULL ? q->arg :
	    s->helo);
	policyd_attr(out, "queue_id", t != NULL ? t->queue_id : "");
	policyd_attr(out, "sender", t != NULL ? t->mail_from : "");
	policyd_attr(out, "recipient", rcpt);
	snprintf(num, sizeof(num), "%zu", nrcpts);
	policyd_attr(out, "recipient_count", num);
	policyd_attr(out, "client_address", s->client_addr);
	policyd_attr(out, "client_name", s->client_name != NULL ? s->client_name : "unknown");
	policyd_attr(out, "reverse_client_name", s->client_ptr != NULL ? s->client_ptr : "unknown");
	policyd_attr(out, "instance", instance);
	policyd_attr(out, "sasl_method", s->auth_method != NULL ? s->auth_method : "");
	policyd_attr(out, "sasl_username", s->auth_user);
	policyd_attr(out, "sasl_sender", "");	/* MAIL's AUTH= is not passed on */
	snprintf(num, sizeof(num), "%llu", size);
	policyd_attr(out, "size", num);
	policyd_attr(out, "ccert_subject", cn);
	policyd_attr(out, "ccert_issuer", "");
	policyd_attr(out, "ccert_fingerprint", "");
	policyd_attr(out, "ccert_pubkey_fingerprint", "");
	policyd_attr(out, "encryption_protocol", s->tls_version);
	policyd_attr(out, "encryption_cipher", s->tls_cipher);
	policyd_attr(out, "encryption_keysize", tls ? "" : "0");
	policyd_attr(out, "etrn_domain", "");
	policyd_attr(out, "stress", "");
	policyd_attr(out, "client_port", s->client_port != 0 ? cport : "");
	policyd_attr(out, "policy_context", q->context);
	policyd_attr(out, "server_address", s->local_addr);
	policyd_attr(out, "server_port", s->local_port != 0 ? sport : "");
	policyd_attr(out, "compatibility_level", "");
	policyd_attr(out, "mail_version", PACKAGE_VERSION);
	buf_putc(out, '\n');
	if (out->len - start > POLICYD_REQUEST_MAX) {
		*err_r = xasprintf("the request would be %zu octets, over %d", out->len - start,
		    POLICYD_REQUEST_MAX);
		return false;
	}
	return true;
}

/* ---- the reply ---- */

/* policyd_reply_init - ready for a new reply */
void
policyd_reply_init(struct policyd_reply *rp, size_t max_line)
{
	memset(rp, 0, sizeof(*rp));
	rp->max_line = max_line;
}

/* policyd_reply_free - what the reply holds */
void
policyd_reply_free(struct policyd_reply *rp)
{
	free(rp->action);
	rp->action = NULL;
}

/* policyd_reply_error - ERROR, saying why, with the start of the line that is wrong */
static enum policyd_reply_status
policyd_reply_error(struct policyd_reply *rp, const char *line, size_t n, const char *why)
{
	size_t i;

	str_copy(rp->why, why, sizeof(rp->why));
	rp->line_len = n < sizeof(rp->line) - 1 ? n : sizeof(rp->line) - 1;
	for (i = 0; i < rp->line_len; i++)
		rp->line[i] = line[i] != '\0' ? line[i] : '?';
	rp->line[i] = '\0';
	return POLICYD_REPLY_ERROR;
}

/* policyd_reply_line - one complete line, its line end cut off */
static enum policyd_reply_status
policyd_reply_line(struct policyd_reply *rp, const char *line, size_t n)
{
	const char *eq;
	char why[sizeof(rp->why)];
	size_t i;

	if (n > rp->max_line) {
		snprintf(why, sizeof(why), "a reply line of %zu octets, over max_reply (%zu)", n,
		    rp->max_line);
		return policyd_reply_error(rp, line, n, why);
	}
	if (n == 0) {
		if (rp->action == NULL)
			return policyd_reply_error(rp, "", 0, "a reply without action");
		return POLICYD_REPLY_DONE;
	}
	if (memchr(line, '\0', n) != NULL)
		return policyd_reply_error(rp, line, n, "a NUL in the reply");
	for (i = 0; i < n; i++)		/* a bare CR among them; a tab is white space */
		if (((unsigned char)line[i] < 0x20 && line[i] != '\t') || line[i] == 0x7f)
			return policyd_reply_error(rp, line, n, "a control character in the reply");
	if ((eq = memchr(line, '=', n)) == NULL || eq == line)
		return policyd_reply_error(rp, line, n, "a reply line that is not name=value");
	if (++rp->nlines > POLICYD_REPLY_MAX_LINES)
		return policyd_reply_error(rp, line, n, "too many attributes in the reply");
	if (eq - line == 6 && memcmp(line, "action", 6) == 0 && rp->action == NULL)
		rp->action = xstrndup(eq + 1, n - 7);
	return POLICYD_REPLY_MORE;
}

/* policyd_reply_feed - the complete lines of data (see policyd.h) */
enum policyd_reply_status
policyd_reply_feed(struct policyd_reply *rp, const char *data, size_t len, size_t *used_r)
{
	enum policyd_reply_status st;
	const char *line, *lf;
	size_t off = 0, n;

	*used_r = 0;
	while (off < len) {
		line = data + off;
		if ((lf = memchr(line, '\n', len - off)) == NULL) {
			/* A partial line: past max_line already (a CR may still end it)? */
			n = len - off;
			if (n > rp->max_line + 1 || (n == rp->max_line + 1 && line[n - 1] != '\r'))
				return policyd_reply_line(rp, line, n);
			break;
		}
		n = (size_t)(lf - line);
		off += n + 1;
		*used_r = off;
		if (n > 0 && line[n - 1] == '\r')
			n--;
		if ((st = policyd_reply_line(rp, line, n)) != POLICYD_REPLY_MORE)
			return st;
	}
	return POLICYD_REPLY_MORE;
}

/* ---- actions (Postfix access(5)) ---- */

/* policyd_ws - space or tab */
static bool
policyd_ws(char c)
{
	return c == ' ' || c == '\t';
}

/* policyd_skip_ws - past spaces and tabs */
static char *
policyd_skip_ws(char *p)
{
	while (policyd_ws(*p))
		p++;
	return p;
}

/* policyd_ecode_len - the length of an RFC 3463 code "C.S.D" of class 2, 4 or 5 at s, else 0 */
static size_t
policyd_ecode_len(const char *s)
{
	size_t i = 2, d;

	if ((s[0] != '2' && s[0] != '4' && s[0] != '5') || s[1] != '.')
		return 0;
	for (d = 0; s[i] >= '0' && s[i] <= '9'; i++)
		d++;
	if (d == 0 || d > 3 || s[i] != '.')
		return 0;
	for (i++, d = 0; s[i] >= '0' && s[i] <= '9'; i++)
		d++;
	if (d == 0 || d > 3 || (s[i] != '\0' && !policyd_ws(s[i])))
		return 0;
	return i;
}

/*
 * policyd_refuse - a REJECT or TEMPFAIL: code, the enhanced code the text
 * starts with (its class made the code's, as Postfix's smtpd_dsn_fix does)
 * or defecode, the text or "Access denied"
 */
static void
policyd_refuse(struct policyd_action *a, enum policyd_act act, int code, const char *defecode,
    char *text)
{
	struct filter_reply *r = &a->reply;
	size_t n;

	a->act = act;
	a->verdict = code / 100 == 5 ? FILTER_REJECT : FILTER_TEMPFAIL;
	r->code = code;
	text = policyd_skip_ws(text);
	if ((n = policyd_ecode_len(text)) > 0 && n < sizeof(r->ecode)) {
		memcpy(r->ecode, text, n);
		r->ecode[n] = '\0';
		r->ecode[0] = (char)('0' + code / 100);
		text = policyd_skip_ws(text + n);
	} else
		str_copy(r->ecode, defecode, sizeof(r->ecode));
	str_copy(r->text, *text != '\0' ? text : "Access denied", sizeof(r->text));
}

/* policyd_header_ok - "Name: value" that can go into a header block as one field */
static bool
policyd_header_ok(const char *h)
{
	const unsigned char *p = (const unsigned char *)h;

	if (strlen(h) > POLICYD_HEADER_MAX || *p == ':')
		return false;
	for (; *p != ':'; p++)
		if (*p <= ' ' || *p > '~')
			return false;
	for (p++; *p != '\0'; p++)
		if ((*p < ' ' && *p != '\t') || *p == 0x7f)
			return false;
	return true;
}

/* policyd_address_ok - an address for REDIRECT or BCC: local@domain, no space, no controls */
static bool
policyd_address_ok(const char *s)
{
	const unsigned char *p = (const unsigned char *)s;
	const char *at = strrchr(s, '@');

	if (at == NULL || at == s || at[1] == '\0' || strlen(s) > POLICYD_ADDR_MAX)
		return false;
	for (; *p != '\0'; p++)
		if (*p <= ' ' || *p == 0x7f || *p == '<' || *p == '>')
			return false;
	return true;
}

/* The words of access(5) this filter knows, and what they take after them. */
enum policyd_arg { POLICYD_ARG_NONE, POLICYD_ARG_TEXT, POLICYD_ARG_HEADER, POLICYD_ARG_ADDR };

static const struct {
	const char *word;
	enum policyd_act act;
	enum policyd_arg arg;
} policyd_words[] = {
	{ "OK", POLICYD_ACT_DUNNO, POLICYD_ARG_NONE },
	{ "DUNNO", POLICYD_ACT_DUNNO, POLICYD_ARG_NONE },
	{ "REJECT", POLICYD_ACT_REJECT, POLICYD_ARG_TEXT },
	{ "DEFER", POLICYD_ACT_DEFER, POLICYD_ARG_TEXT },
	{ "DEFER_IF_PERMIT", POLICYD_ACT_DEFER, POLICYD_ARG_TEXT },
	{ "DEFER_IF_REJECT", POLICYD_ACT_DEFER_IF_REJECT, POLICYD_ARG_TEXT },
	{ "DISCARD", POLICYD_ACT_DISCARD, POLICYD_ARG_TEXT },
	{ "HOLD", POLICYD_ACT_HOLD, POLICYD_ARG_TEXT },
	{ "QUARANTINE", POLICYD_ACT_HOLD, POLICYD_ARG_TEXT },
	{ "PREPEND", POLICYD_ACT_PREPEND, POLICYD_ARG_HEADER },
	{ "REDIRECT", POLICYD_ACT_REDIRECT, POLICYD_ARG_ADDR },
	{ "BCC", POLICYD_ACT_BCC, POLICYD_ARG_ADDR },
	{ "WARN", POLICYD_ACT_WARN, POLICYD_ARG_TEXT },
	{ "INFO", POLICYD_ACT_WARN, POLICYD_ARG_TEXT },
	{ "FILTER", POLICYD_ACT_UNSUPPORTED, POLICYD_ARG_TEXT },
};

/* policyd_action_word - the action that starts with a word of the table (see policyd.h) */
static bool
policyd_action_word(char *p, struct policyd_action *a)
{
	size_t n = strcspn(p, " \t"), i;
	char *rest;

	for (i = 0; i < ARRAY_SIZE(policyd_words); i++)
		if (strlen(policyd_words[i].word) == n &&
		    str_ncasecmp(p, policyd_words[i].word, n) == 0)
			break;
	if (i == ARRAY_SIZE(policyd_words))
		return false;
	rest = policyd_skip_ws(p + n);
	a->act = policyd_words[i].act;
	switch (a->act) {
	case POLICYD_ACT_REJECT:
		policyd_refuse(a, a->act, 554, "5.7.1", rest);
		return true;
	case POLICYD_ACT_DEFER:
		policyd_refuse(a, a->act, 450, "4.7.1", rest);
		return true;
	case POLICYD_ACT_DISCARD:
		a->verdict = FILTER_DISCARD;
		return true;
	case POLICYD_ACT_HOLD:
		a->verdict = FILTER_QUARANTINE;
		str_copy(a->reply.text, rest, sizeof(a->reply.text));
		return true;
	default:
		break;
	}
	a->arg = rest;
	switch (policyd_words[i].arg) {
	case POLICYD_ARG_NONE:
		return *rest == '\0';
	case POLICYD_ARG_HEADER:
		return policyd_header_ok(rest);
	case POLICYD_ARG_ADDR:
		return policyd_address_ok(rest);
	default:
		return true;
	}
}

/* policyd_action_parse - an action= value and its verdict (see policyd.h) */
bool
policyd_action_parse(char *action, struct policyd_action *a)
{
	char *p = policyd_skip_ws(action);
	size_t n = strlen(p), digits = strspn(p, "0123456789");

	memset(a, 0, sizeof(*a));
	a->act = POLICYD_ACT_DUNNO;
	a->verdict = FILTER_CONTINUE;
	/* Empty, or all digits (access(5): "treated as OK"). */
	if (digits == n)
		return true;
	while (n > 0 && policyd_ws(p[n - 1]))
		p[--n] = '\0';
	/* "4NN text", "5NN text" (the text may be empty) */
	if (digits == 3 && (p[3] == '\0' || policyd_ws(p[3]))) {
		if (p[0] != '4' && p[0] != '5')
			return false;
		policyd_refuse(a, p[0] == '4' ? POLICYD_ACT_DEFER : POLICYD_ACT_REJECT,
		    atoi(p), p[0] == '4' ? "4.7.1" : "5.7.1", p + 3);
		return true;
	}
	return policyd_action_word(p, a);
}

/* ---- kept edits ---- */

/* policyd_edits_clear - forget them */
static void
policyd_edits_clear(struct policyd_edits *e)
{
	size_t i;

	for (i = 0; i < e->nprepend; i++)
		free(e->prepend[i]);
	for (i = 0; i < e->nbcc; i++)
		free(e->bcc[i]);
	free(e->prepend);
	free(e->bcc);
	free(e->redirect);
	memset(e, 0, sizeof(*e));
}

/* policyd_push - one more string on a list */
static void
policyd_push(char ***v, size_t *n, const char *s)
{
	*v = xreallocarray(*v, *n + 1, sizeof(**v));
	(*v)[(*n)++] = xstrdup(s);
}

/* policyd_listed - is addr on the list (case-insensitive) */
static bool
policyd_listed(char *const *v, size_t n, const char *addr)
{
	size_t i;

	for (i = 0; i < n; i++)
		if (str_casecmp(v[i], addr) == 0)
			return true;
	return false;
}

/* policyd_keep - a PREPEND, REDIRECT or BCC for end of message */
static void
policyd_keep(struct policyd_sess *ps, const struct policyd_action *a)
{
	struct policyd_edits *e = ps->stage == POLICYD_CONNECT || ps->stage == POLICYD_HELO ?
	    &ps->sess_edits : &ps->txn_edits;

	switch (a->act) {
	case POLICYD_ACT_PREPEND:
		policyd_push(&e->prepend, &e->nprepend, a->arg);
		break;
	case POLICYD_ACT_REDIRECT:
		free(e->redirect);
		e->redirect = xstrdup(a->arg);
		break;
	case POLICYD_ACT_BCC:
		if (!policyd_listed(e->bcc, e->nbcc, a->arg))
			policyd_push(&e->bcc, &e->nbcc, a->arg);
		break;
	default:
		break;
	}
}

/* policyd_prepend - "Name: value" inserted at index of the header block */
static void
policyd_prepend(struct filter_txn *txn, unsigned index, const char *field)
{
	const char *colon = strchr(field, ':');
	char *name = xstrndup(field, (size_t)(colon - field));

	filter_insert_header(txn, index, name, colon + 1);
	free(name);
}

/*
 * policyd_apply - at end of message: the PREPENDs at the top of the header
 * block in the order given (the session's first), a REDIRECT (the last one)
 * in place of every recipient, each BCC as one more
 */
static void
policyd_apply(const struct policyd_sess *ps, struct filter_txn *txn)
{
	const struct policyd_edits *e[2] = { &ps->sess_edits, &ps->txn_edits };
	const char *redirect = NULL;
	unsigned index = 0;
	size_t k, i;

	for (k = 0; k < 2; k++) {
		for (i = 0; i < e[k]->nprepend; i++)
			policyd_prepend(txn, index++, e[k]->prepend[i]);
		if (e[k]->redirect != NULL)
			redirect = e[k]->redirect;
	}
	if (redirect != NULL) {
		for (i = 0; i < txn->nrcpts; i++)
			if (str_casecmp(txn->rcpts[i], redirect) != 0)
				filter_delete_rcpt(txn, txn->rcpts[i]);
		if (!policyd_listed(txn->rcpts, txn->nrcpts, redirect))
			filter_add_rcpt(txn, redirect, "");
	}
	for (k = 0; k < 2; k++) {
		for (i = 0; i < e[k]->nbcc; i++) {
			const char *bcc = e[k]->bcc[i];

			if (redirect != NULL ? str_casecmp(bcc, redirect) == 0 :
			    policyd_listed(txn->rcpts, txn->nrcpts, bcc))
				continue;
			if (k == 1 && policyd_listed(e[0]->bcc, e[0]->nbcc, bcc))
				continue;
			filter_add_rcpt(txn, bcc, "");
		}
	}
}

/* ---- connections and the loop's pool ---- */

static pthread_once_t policyd_pool_once = PTHREAD_ONCE_INIT;
static pthread_key_t policyd_pool_key;

/* policyd_conn_free - close a connection */
static void
policyd_conn_free(struct policyd_conn *c)
{
	bufferevent_free(c->bev);
	free(c->key);
	free(c);
}

/* policyd_pool_free - the thread ends: its loop's idle connections are closed */
static void
policyd_pool_free(void *arg)
{
	struct policyd_pool *p = arg;
	struct policyd_conn *c;

	while ((c = p->idle) != NULL) {
		p->idle = c->next;
		policyd_conn_free(c);
	}
	free(p);
}

/* policyd_pool_key_init - once per process */
static void
policyd_pool_key_init(void)
{
	if (pthread_key_create(&policyd_pool_key, policyd_pool_free) != 0)
		fatal("policyd: pthread_key_create failed");
}

/*
 * policyd_pool_of - this thread's pool, for base; NULL when there is none
 * (and !create) or when it holds connections of another base
 */
static struct policyd_pool *
policyd_pool_of(struct event_base *base, bool create)
{
	struct policyd_pool *p;

	pthread_once(&policyd_pool_once, policyd_pool_key_init);
	if ((p = pthread_getspecific(policyd_pool_key)) == NULL) {
		if (!create)
			return NULL;
		p = xcalloc(1, sizeof(*p));
		p->base = base;
		if (pthread_setspecific(policyd_pool_key, p) != 0)
			fatal("policyd: pthread_setspecific failed");
	}
	if (p->base != base) {
		if (p->idle != NULL)
			return NULL;
		p->base = base;
	}
	return p;
}

/* policyd_pool_drop - an idle connection closed, idled out or spoke: out of the pool */
static void
policyd_pool_drop(struct policyd_conn *c)
{
	struct policyd_pool *p = policyd_pool_of(c->base, false);
	struct policyd_conn **cp;

	for (cp = p != NULL ? &p->idle : NULL; cp != NULL && *cp != NULL; cp = &(*cp)->next) {
		if (*cp == c) {
			*cp = c->next;
			p->n--;
			break;
		}
	}
	policyd_conn_free(c);
}

/* policyd_idle_read_cb - a server does not talk unasked: the connection is dropped */
static void
policyd_idle_read_cb(struct bufferevent *bev, void *arg)
{
	(void)bev;
	policyd_pool_drop(arg);
}

/* policyd_idle_event_cb - closed by the server, an error, or idle_timeout passed */
static void
policyd_idle_event_cb(struct bufferevent *bev, short what, void *arg)
{
	(void)bev;
	(void)what;
	policyd_pool_drop(arg);
}

/* policyd_pool_take - an idle connection to the server key, or NULL */
static struct policyd_conn *
policyd_pool_take(struct event_base *base, const char *key)
{
	struct policyd_pool *p = policyd_pool_of(base, false);
	struct policyd_conn **cp, *c;

	for (cp = p != NULL ? &p->idle : NULL; cp != NULL && *cp != NULL; cp = &(*cp)->next) {
		if (strcmp((*cp)->key, key) == 0) {
			c = *cp;
			*cp = c->next;
			p->n--;
			c->next = NULL;
			c->reused = true;
			return c;
		}
	}
	return NULL;
}

/* policyd_pool_put - a connection done with its request idles in the pool, or is closed */
static void
policyd_pool_put(struct policyd_conn *c, unsigned idle_timeout)
{
	struct policyd_pool *p = idle_timeout > 0 ? policyd_pool_of(c->base, true) : NULL;
	struct timeval tv = { (time_t)idle_timeout, 0 };

	if (p == NULL || p->n >= POLICYD_IDLE_MAX) {
		policyd_conn_free(c);
		return;
	}
	c->owner = NULL;
	bufferevent_setcb(c->bev, policyd_idle_read_cb, NULL, policyd_idle_event_cb, c);
	bufferevent_set_timeouts(c->bev, &tv, NULL);
	bufferevent_enable(c->bev, EV_READ);
	c->next = p->idle;
	p->idle = c;
	p->n++;
}

/* policyd_conn_open - start connecting to the server; NULL + *why_r when that fails at once */
static struct policyd_conn *
policyd_conn_open(struct event_base *base, const struct policyd *pd, char **why_r)
{
	struct policyd_conn *c;
	struct bufferevent *bev;

	if ((bev = bufferevent_socket_new(base, -1, BEV_OPT_CLOSE_ON_FREE)) == NULL)
		fatal("policyd: bufferevent_socket_new failed");
	if (bufferevent_socket_connect(bev, (const struct sockaddr *)&pd->sa, (int)pd->salen) != 0) {
		*why_r = xasprintf("cannot connect to %s: %s", pd->socket,
		    evutil_socket_error_to_string(EVUTIL_SOCKET_ERROR()));
		bufferevent_free(bev);
		return NULL;
	}
	c = xcalloc(1, sizeof(*c));
	c->bev = bev;
	c->base = base;
	c->key = xstrdup(pd->socket);
	return c;
}

/* ---- a request in flight ---- */

static void policyd_read_cb(struct bufferevent *bev, void *arg);
static void policyd_event_cb(struct bufferevent *bev, short what, void *arg);

/* policyd_delay - "1.234": seconds since the request started */
static void
policyd_delay(const struct policyd_sess *ps, char *out, size_t size)
{
	unsigned long long ms = now_ms() - ps->start_ms;

	snprintf(out, size, "%llu.%03llu", ms / 1000, ms % 1000);
}

/* policyd_fail - the request failed: log it, default_action applies.  Nothing of ps after it. */
static void
policyd_fail(struct policyd_sess *ps, const char *why)
{
	struct filter_wait *w = ps->w;
	char delay[32], esc[400];

	policyd_delay(ps, delay, sizeof(delay));
	log_warn("id=" SESSION_ID_FMT " event=policyd name=%s stage=%s action=failed error=\"%s\" "
	    "delay=%s", SESSION_ID(ps->id), ps->pd->name, policyd_stage_name(ps->stage),
	    log_escape(esc, sizeof(esc), why, strlen(why)), delay);
	ps->w = NULL;
	policyd_reply_free(&ps->reply);
	filter_wait_fail(w, why);
}

/* policyd_send - the request on a pooled connection (unless fresh) or a new one */
static void
policyd_send(struct policyd_sess *ps, struct event_base *base, bool fresh)
{
	struct policyd_conn *c = NULL;
	char *why = NULL;

	if (!fresh)
		c = policyd_pool_take(base, ps->pd->socket);
	if (c == NULL && (c = policyd_conn_open(base, ps->pd, &why)) == NULL) {
		policyd_fail(ps, why);
		free(why);
		return;
	}
	c->owner = ps;
	c->got = false;
	ps->conn = c;
	policyd_reply_init(&ps->reply, ps->pd->max_reply);
	bufferevent_setcb(c->bev, policyd_read_cb, NULL, policyd_event_cb, c);
	bufferevent_set_timeouts(c->bev, NULL, NULL);
	if (bufferevent_write(c->bev, ps->req.data, ps->req.len) != 0)
		fatal("policyd: bufferevent_write failed");
	bufferevent_enable(c->bev, EV_READ | EV_WRITE);
}

/* policyd_verdict_passes - a verdict after which the message is still delivered */
static bool
policyd_verdict_passes(enum filter_verdict v)
{
	return v == FILTER_CONTINUE || v == FILTER_QUARANTINE;
}

/* policyd_log_action - the request's log line */
static void
policyd_log_action(const struct policyd_sess *ps, const struct policyd_action *a,
    const char *action)
{
	char delay[32], esc[600];
	bool warn = a->act == POLICYD_ACT_WARN || a->act == POLICYD_ACT_UNSUPPORTED;

	policyd_delay(ps, delay, sizeof(delay));
	log_msg(warn ? LOG_LEVEL_WARN : LOG_LEVEL_INFO, "id=" SESSION_ID_FMT " event=policyd "
	    "name=%s stage=%s action=\"%s\" verdict=%s%s delay=%s", SESSION_ID(ps->id),
	    ps->pd->name, policyd_stage_name(ps->stage),
	    log_escape(esc, sizeof(esc), action, strlen(action)), filter_verdict_name(a->verdict),
	    a->act == POLICYD_ACT_UNSUPPORTED ? " note=not_supported" :
	    a->act == POLICYD_ACT_DEFER_IF_REJECT ? " note=ignored" : "", delay);
}

/* policyd_answer - the reply is in: its action decides the stage.  Nothing of ps after it. */
static void
policyd_answer(struct policyd_sess *ps)
{
	struct filter_wait *w = ps->w;
	struct policyd_action a;
	struct filter_ctx *ctx;
	struct filter_reply r;
	char *action = ps->reply.action, *why;

	ps->reply.action = NULL;
	if (!policyd_action_parse(action, &a)) {
		/* Quoted as it came: every log line escapes it. */
		why = xasprintf("unknown action \"%.300s\"", action);
		free(action);
		policyd_fail(ps, why);
		free(why);
		return;
	}
	policyd_log_action(ps, &a, action);
	policyd_keep(ps, &a);
	r = a.reply;
	free(action);
	ps->w = NULL;
	if (ps->stage == POLICYD_EOM && policyd_verdict_passes(a.verdict) &&
	    (ctx = filter_wait_ctx(w)) != NULL && ctx->txn != NULL)
		policyd_apply(ps, ctx->txn);
	filter_wait_done(w, a.verdict, &r);
}

/* policyd_read_cb - more of the reply */
static void
policyd_read_cb(struct bufferevent *bev, void *arg)
{
	struct policyd_conn *c = arg;
	struct policyd_sess *ps = c->owner;
	struct evbuffer *in = bufferevent_get_input(bev);
	enum policyd_reply_status st;
	size_t len = evbuffer_get_length(in), used;
	char *why;

	if (len == 0)
		return;
	c->got = true;
	st = policyd_reply_feed(&ps->reply, (const char *)evbuffer_pullup(in, -1), len, &used);
	evbuffer_drain(in, used);
	if (st == POLICYD_REPLY_MORE)
		return;
	ps->conn = NULL;
	if (st == POLICYD_REPLY_ERROR) {
		policyd_conn_free(c);
		why = xasprintf("%s: \"%s\"", ps->reply.why, ps->reply.line);
		policyd_fail(ps, why);
		free(why);
		return;
	}
	/* More than one reply: the connection is out of step. */
	if (evbuffer_get_length(in) > 0)
		policyd_conn_free(c);
	else
		policyd_pool_put(c, ps->pd->idle_timeout);
	policyd_answer(ps);
}

/* policyd_event_cb - connected, or the connection failed or closed during the request */
static void
policyd_event_cb(struct bufferevent *bev, short what, void *arg)
{
	struct policyd_conn *c = arg;
	struct policyd_sess *ps = c->owner;
	struct event_base *base = c->base;
	bool retry = c->reused && !c->got && !ps->retried;
	char *why;

	(void)bev;
	if (what & BEV_EVENT_CONNECTED)
		return;
	if (what & BEV_EVENT_EOF)
		why = xasprintf("%s closed the connection%s", ps->pd->socket,
		    c->got ? " in the middle of a reply" : " without a reply");
	else
		why = xasprintf("%s %s: %s", ps->pd->socket,
		    (what & BEV_EVENT_WRITING) && !c->reused && !c->got ? "connect or write" :
		    "connection", evutil_socket_error_to_string(EVUTIL_SOCKET_ERROR()));
	policyd_conn_free(c);
	ps->conn = NULL;
	if (retry) {
		/* A pooled connection the server had closed: once more, on a fresh one. */
		log_debug("id=" SESSION_ID_FMT " event=policyd_retry name=%s why=\"%s\"",
		    SESSION_ID(ps->id), ps->pd->name, why);
		free(why);
		ps->retried = true;
		policyd_send(ps, base, true);
		return;
	}
	policyd_fail(ps, why);
	free(why);
}

/* ---- the filter's callbacks ---- */

/* policyd_sess_get - the session's state, made at its first use */
static struct policyd_sess *
policyd_sess_get(const struct policyd *pd, struct filter_ctx *ctx)
{
	struct policyd_sess *ps = *ctx->priv;

	if (ps == NULL) {
		ps = xcalloc(1, sizeof(*ps));
		ps->pd = pd;
		ps->id = ctx->sess != NULL ? ctx->sess->id : 0;
		buf_init(&ps->req);
		*ctx->priv = ps;
	}
	return ps;
}

/* policyd_request - ask the server at stage: FILTER_PENDING, or a verdict when it cannot be asked */
static enum filter_verdict
policyd_request(const struct policyd *pd, struct filter_ctx *ctx, enum policyd_stage stage,
    const char *arg, struct filter_reply *r)
{
	struct policyd_sess *ps = policyd_sess_get(pd, ctx);
	struct policyd_query q = { stage, ctx->sess, ctx->txn, arg, pd->context };
	char *err = NULL;

	assert(ps->w == NULL && ps->conn == NULL);
	ps->stage = stage;
	ps->start_ms = now_ms();
	ps->retried = false;
	buf_reset(&ps->req);
	if ((ps->w = filter_wait_begin(ctx)) == NULL) {
		/* No loop to wait on (a tool, a test): the server cannot be asked. */
		log_warn("id=" SESSION_ID_FMT " event=policyd name=%s stage=%s action=failed "
		    "error=\"no event loop\"", SESSION_ID(ps->id), pd->name,
		    policyd_stage_name(stage));
		r->code = 451;
		str_copy(r->ecode, "4.3.0", sizeof(r->ecode));
		str_copy(r->text, "Policy service unavailable", sizeof(r->text));
		return FILTER_TEMPFAIL;
	}
	if (!policyd_encode(&q, &ps->req, &err)) {
		policyd_fail(ps, err);
		free(err);
		return FILTER_PENDING;
	}
	policyd_send(ps, ctx->base, false);
	return FILTER_PENDING;
}

/* policyd_at - is stage one of "stages =" */
static bool
policyd_at(const struct policyd *pd, enum policyd_stage stage)
{
	return (pd->stages & (1u << stage)) != 0;
}

/* policyd_connect - CONNECT */
static enum filter_verdict
policyd_connect(void *inst, struct filter_ctx *ctx, struct filter_reply *r)
{
	if (!policyd_at(inst, POLICYD_CONNECT))
		return FILTER_CONTINUE;
	return policyd_request(inst, ctx, POLICYD_CONNECT, NULL, r);
}

/* policyd_helo - HELO or EHLO */
static enum filter_verdict
policyd_helo(void *inst, struct filter_ctx *ctx, const char *helo, struct filter_reply *r)
{
	if (!policyd_at(inst, POLICYD_HELO))
		return FILTER_CONTINUE;
	return policyd_request(inst, ctx, POLICYD_HELO, helo, r);
}

/* policyd_mail - MAIL: a new transaction, nothing kept of the last one */
static enum filter_verdict
policyd_mail(void *inst, struct filter_ctx *ctx, const char *from, struct filter_reply *r)
{
	(void)from;
	if (*ctx->priv != NULL)
		policyd_edits_clear(&((struct policyd_sess *)*ctx->priv)->txn_edits);
	if (!policyd_at(inst, POLICYD_MAIL))
		return FILTER_CONTINUE;
	return policyd_request(inst, ctx, POLICYD_MAIL, NULL, r);
}

/* policyd_rcpt - RCPT */
static enum filter_verdict
policyd_rcpt(void *inst, struct filter_ctx *ctx, const char *rcpt, struct filter_reply *r)
{
	if (!policyd_at(inst, POLICYD_RCPT))
		return FILTER_CONTINUE;
	return policyd_request(inst, ctx, POLICYD_RCPT, rcpt, r);
}

/*
 * policyd_eom - END-OF-MESSAGE when "stages" has data (the kept edits are
 * applied once the reply allows delivery), else only the kept edits
 */
static enum filter_verdict
policyd_eom(void *inst, struct filter_ctx *ctx, struct filter_reply *r)
{
	if (policyd_at(inst, POLICYD_EOM))
		return policyd_request(inst, ctx, POLICYD_EOM, NULL, r);
	if (*ctx->priv != NULL && ctx->txn != NULL)
		policyd_apply(*ctx->priv, ctx->txn);
	return FILTER_CONTINUE;
}

/*
 * policyd_stop - no reply is waited for any more: the connection is closed
 * (a late reply cannot arrive) and the handle given back
 */
static void
policyd_stop(struct policyd_sess *ps)
{
	struct filter_wait *w = ps->w;
	char delay[32];

	if (ps->conn != NULL) {
		policyd_conn_free(ps->conn);
		ps->conn = NULL;
	}
	policyd_reply_free(&ps->reply);
	if (w == NULL)
		return;
	ps->w = NULL;
	policyd_delay(ps, delay, sizeof(delay));
	log_info("id=" SESSION_ID_FMT " event=policyd name=%s stage=%s action=cancelled delay=%s",
	    SESSION_ID(ps->id), ps->pd->name, policyd_stage_name(ps->stage), delay);
	filter_wait_done(w, FILTER_CONTINUE, NULL);	/* the chain dropped it: freed */
}

/* policyd_cancel - the chain stopped waiting (timeout, the client left, a drain) */
static void
policyd_cancel(void *inst, struct filter_ctx *ctx)
{
	(void)inst;
	if (*ctx->priv != NULL)
		policyd_stop(*ctx->priv);
}

/* policyd_abort - the transaction ended undelivered: its kept edits go */
static void
policyd_abort(void *inst, struct filter_ctx *ctx)
{
	(void)inst;
	if (*ctx->priv != NULL)
		policyd_edits_clear(&((struct policyd_sess *)*ctx->priv)->txn_edits);
}

/* policyd_close - the session ends */
static void
policyd_close(void *inst, struct filter_ctx *ctx)
{
	struct policyd_sess *ps = *ctx->priv;

	(void)inst;
	if (ps == NULL)
		return;
	*ctx->priv = NULL;
	policyd_stop(ps);
	policyd_edits_clear(&ps->sess_edits);
	policyd_edits_clear(&ps->txn_edits);
	buf_free(&ps->req);
	free(ps);
}

const struct filter_ops policyd_ops = {
	.name = "policyd",
	.configure = policyd_configure,
	.destroy = policyd_destroy,
	.connect = policyd_connect,
	.helo = policyd_helo,
	.mail = policyd_mail,
	.rcpt = policyd_rcpt,
	.eom = policyd_eom,
	.abort = policyd_abort,
	.close = policyd_close,
	.cancel = policyd_cancel,
};
