/*
 * pmilter_map.c - what libmilter hands portier-milter, as the filter API
 * reads it, and what the chain decided, as libmilter's actions.  Pure: no
 * I/O, no libmilter call, no global state (tests/unit/check_portier_milter
 * drives it).
 *
 * The MTA has parsed the message already: each header callback is one
 * field, its value exact after the ':' (SMFIP_HDR_LEADSPC), folded with LF
 * (Postfix) or CRLF (Sendmail).  The filters read CRLF, as portier's own
 * sessions give it them; the MTA takes LF folds back.
 *
 * The end-of-message actions say what filter_compose_headers says for the
 * daemon: the filters' edits in order (milter semantics on both sides), the
 * received fields compose drops (found by reading its output, not by a
 * second copy of its rules), our Authentication-Results and the final
 * stage's signatures on top.  Values a filter gave are cleaned by compose
 * too.  Strings returned are the caller's.
 */
#include "config.h"

#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include "util.h"
#include "buf.h"
#include "filter.h"
#include "pmilter.h"

#define PMILTER_UNKNOWN	"unknown"

/* pmilter_set - replace a copied string (NULL or "" clears it) */
static void
pmilter_set(char **field, const char *value)
{
	free(*field);
	*field = value != NULL && *value != '\0' ? xstrdup(value) : NULL;
}

/* pmilter_sess_init - nothing known yet: Postfix's conventions for the unknown */
void
pmilter_sess_init(struct pmilter_sess *ps, uint64_t id, const struct conf *conf,
    enum conf_role role)
{
	memset(ps, 0, sizeof(*ps));
	str_copy(ps->client_addr, PMILTER_UNKNOWN, sizeof(ps->client_addr));
	ps->fs.id = id;
	ps->fs.listener = "milter-server";
	ps->fs.role = role;
	ps->fs.client_addr = ps->client_addr;
	ps->fs.local_addr = ps->local_addr;
	ps->fs.client_name = PMILTER_UNKNOWN;
	ps->fs.conf = conf;
}

/* pmilter_known_name - a client name the MTA verified: not "unknown", not "[addr]" */
static bool
pmilter_known_name(const char *name)
{
	return name != NULL && *name != '\0' && *name != '[' &&
	    str_casecmp(name, PMILTER_UNKNOWN) != 0;
}

/* pmilter_sess_local - where the client connected: {daemon_addr} (Postfix) or {if_addr} */
static void
pmilter_sess_local(struct pmilter_sess *ps, pmilter_macro_fn get, void *arg)
{
	struct sockaddr_in *in = (struct sockaddr_in *)(void *)&ps->fs.local_sa;
	struct sockaddr_in6 *in6 = (struct sockaddr_in6 *)(void *)&ps->fs.local_sa;
	const char *a = get(arg, "{daemon_addr}"), *port = get(arg, "{daemon_port}");
	unsigned long p = 0;
	char *end;

	if (a == NULL || *a == '\0')
		a = get(arg, "{if_addr}");
	if (a == NULL)
		return;
	if (strncmp(a, "IPv6:", 5) == 0)	/* Sendmail's tag */
		a += 5;
	if (inet_pton(AF_INET, a, &in->sin_addr) == 1)
		in->sin_family = AF_INET;
	else if (inet_pton(AF_INET6, a, &in6->sin6_addr) == 1)
		in6->sin6_family = AF_INET6;
	else
		return;
	if (port != NULL && *port >= '0' && *port <= '9')
		p = strtoul(port, &end, 10);
	if (p > 0 && p <= 65535 && *end == '\0') {
		if (in->sin_family == AF_INET)
			in->sin_port = htons((uint16_t)p);
		else
			in6->sin6_port = htons((uint16_t)p);
	}
	sockaddr_text((const struct sockaddr *)&ps->fs.local_sa, ps->local_addr,
	    sizeof(ps->local_addr));
	ps->fs.local_port = sockaddr_port((const struct sockaddr *)&ps->fs.local_sa);
}

/* pmilter_sess_connect - the client and the MTA, as the connect stage shows them */
void
pmilter_sess_connect(struct pmilter_sess *ps, const char *hostname,
    const struct sockaddr *sa, pmilter_macro_fn get, void *arg)
{
	const char *ptr = get(arg, "{client_ptr}");

	if (sa != NULL && (sa->sa_family == AF_INET || sa->sa_family == AF_INET6)) {
		memcpy(&ps->fs.client_sa, sa, sa->sa_family == AF_INET ?
		    sizeof(struct sockaddr_in) : sizeof(struct sockaddr_in6));
		if (!sockaddr_text(sa, ps->client_addr, sizeof(ps->client_addr)))
			str_copy(ps->client_addr, PMILTER_UNKNOWN, sizeof(ps->client_addr));
		ps->fs.client_port = sockaddr_port(sa);
	}
	pmilter_set(&ps->client_name, pmilter_known_name(hostname) ? hostname : NULL);
	ps->fs.client_name = ps->client_name != NULL ? ps->client_name : PMILTER_UNKNOWN;
	/* The PTR name even when it does not map back; without {client_ptr} the verified one. */
	pmilter_set(&ps->client_ptr, pmilter_known_name(ptr) ? ptr : ps->client_name);
	ps->fs.client_ptr = ps->client_ptr;
	pmilter_set(&ps->mta_name, get(arg, "j"));
	pmilter_sess_local(ps, get, arg);
}

/* pmilter_sess_helo - the HELO name and, Postfix sends them here, the TLS facts */
void
pmilter_sess_helo(struct pmilter_sess *ps, const char *helo, pmilter_macro_fn get, void *arg)
{
	pmilter_set(&ps->helo, helo);
	ps->fs.helo = ps->helo;
	pmilter_set(&ps->tls_version, get(arg, "{tls_version}"));
	pmilter_set(&ps->tls_cipher, get(arg, "{cipher}"));
	pmilter_set(&ps->tls_subject, get(arg, "{cert_subject}"));
	ps->fs.tls_version = ps->tls_version;
	ps->fs.tls_cipher = ps->tls_version != NULL ? ps->tls_cipher : NULL;
	ps->fs.tls_peer_subject = ps->tls_version != NULL ? ps->tls_subject : NULL;
}

/* pmilter_sess_auth - the MTA's SASL login; true when it is new to the chain */
bool
pmilter_sess_auth(struct pmilter_sess *ps, pmilter_macro_fn get, void *arg)
{
	const char *user = get(arg, "{auth_authen}");
	bool fresh;

	if (user != NULL && *user == '\0')
		user = NULL;
	fresh = user != NULL && (ps->auth_user == NULL || strcmp(ps->auth_user, user) != 0);
	if (!fresh && user != NULL)
		return false;
	pmilter_set(&ps->auth_user, user);
	pmilter_set(&ps->auth_method, user != NULL ? get(arg, "{auth_type}") : NULL);
	ps->fs.auth_user = ps->auth_user;
	ps->fs.auth_method = ps->auth_method;
	return fresh;
}

/* pmilter_sess_free - the copied strings */
void
pmilter_sess_free(struct pmilter_sess *ps)
{
	free(ps->client_name);
	free(ps->client_ptr);
	free(ps->helo);
	free(ps->tls_version);
	free(ps->tls_cipher);
	free(ps->tls_subject);
	free(ps->auth_user);
	free(ps->auth_method);
	free(ps->mta_name);
	memset(ps, 0, sizeof(*ps));
}

/* pmilter_addr - "<a@b>" as a@b; a source route before it is no part of it (RFC 5321 4.1.1.3) */
char *
pmilter_addr(const char *arg)
{
	size_t n = strlen(arg);
	const char *colon;

	if (n >= 2 && arg[0] == '<' && arg[n - 1] == '>') {
		arg++;
		n -= 2;
	}
	if (n > 0 && arg[0] == '@' && (colon = memchr(arg, ':', n)) != NULL) {
		n -= (size_t)(colon + 1 - arg);
		arg = colon + 1;
	}
	return xstrndup(arg, n);
}

/* pmilter_params - argv[1..] joined by spaces (argv[0] is the address) */
char *
pmilter_params(char *const *argv)
{
	struct buf b;
	size_t i;

	buf_init(&b);
	buf_puts(&b, "");
	for (i = 1; argv[0] != NULL && argv[i] != NULL; i++) {
		if (*argv[i] == '\0')
			continue;
		if (b.len > 0)
			buf_putc(&b, ' ');
		buf_puts(&b, argv[i]);
	}
	return b.data;
}

/* pmilter_value_crlf - the MTA's value with CRLF folds; other line breaks become spaces */
static void
pmilter_value_crlf(struct buf *out, const char *v)
{
	for (; *v != '\0'; v++) {
		if (*v == '\r' && v[1] == '\n')
			v++;
		if (*v == '\n' && (v[1] == ' ' || v[1] == '\t'))
			buf_puts(out, "\r\n");
		else if (*v == '\r' || *v == '\n')
			buf_putc(out, ' ');
		else
			buf_putc(out, *v);
	}
}

/* pmilter_header - a field from the MTA: into the raw block and txn->headers */
void
pmilter_header(struct filter_txn *txn, struct buf *raw, const char *name, const char *value)
{
	struct buf v;
	size_t n = strlen(name), cap = txn->nheaders;

	buf_init(&v);
	buf_puts(&v, "");
	pmilter_value_crlf(&v, value);
	buf_printf(raw, "%s:", name);
	buf_append(raw, v.data, v.len);
	buf_puts(raw, "\r\n");
	/* The array doubles from 8: a power of two from 8 up is full. */
	if (cap == 0 || (cap >= 8 && (cap & (cap - 1)) == 0))
		txn->headers = xreallocarray(txn->headers, cap == 0 ? 8 : cap * 2,
		    sizeof(*txn->headers));
	while (n > 0 && (name[n - 1] == ' ' || name[n - 1] == '\t'))
		n--;
	txn->headers[txn->nheaders].name = xstrndup(name, n);
	txn->headers[txn->nheaders].value = v.data;
	txn->nheaders++;
}

/* ---- end of message ---- */

/* pmilter_value_lf - a composed value (CRLF folds) as the MTA takes it: LF folds */
static char *
pmilter_value_lf(const char *v)
{
	struct buf b;

	buf_init(&b);
	buf_puts(&b, "");
	for (; *v != '\0'; v++)
		if (!(v[0] == '\r' && v[1] == '\n'))
			buf_putc(&b, *v);
	return b.data;
}

/*
 * pmilter_fields - the fields of a composed block (CRLF, without the empty
 * line), parsed into scratch (the caller resets it)
 */
static void
pmilter_fields(struct filter_txn *scratch, const char *block, size_t len)
{
	filter_txn_init(scratch);
	if (len > 0)
		(void)filter_parse_headers(scratch, block, len);
}

/*
 * pmilter_clean - a filter's field as compose writes it, the value in the
 * MTA's form; NULL when compose refuses it (a bad name, no value)
 */
static char *
pmilter_clean(const char *name, const char *value)
{
	struct filter_txn one, back;
	struct buf b;
	char *v = NULL;

	filter_txn_init(&one);
	filter_add_header(&one, name, value);
	buf_init(&b);
	filter_compose_headers(&one, NULL, &b);
	pmilter_fields(&back, b.data, b.len);
	if (back.nheaders == 1)
		v = pmilter_value_lf(back.headers[0].value);
	filter_txn_reset(&back);
	filter_txn_reset(&one);
	buf_free(&b);
	return v;
}

/* pmilter_op_add - append an op; strings are taken over */
static struct pmilter_op *
pmilter_op_add(struct pmilter_ops *ops, enum pmilter_op_kind kind, char *name, char *value,
    unsigned index)
{
	struct pmilter_op *op;

	ops->v = xreallocarray(ops->v, ops->n + 1, sizeof(*ops->v));
	op = &ops->v[ops->n++];
	memset(op, 0, sizeof(*op));
	op->kind = kind;
	op->name = name;
	op->value = value;
	op->value_len = value != NULL ? strlen(value) : 0;
	op->index = index;
	return op;
}

/* pmilter_bracket - an address for the MTA: in angle brackets */
static char *
pmilter_bracket(const char *addr)
{
	return xasprintf("<%s>", addr != NULL ? addr : "");
}

/* pmilter_op_params - ESMTP parameters, NULL for none */
static char *
pmilter_op_params(const char *params)
{
	return params != NULL && *params != '\0' ? xstrdup(params) : NULL;
}

/* pmilter_ops_edit - one filter edit as the MTA's action (none for a field compose refuses) */
static void
pmilter_ops_edit(struct pmilter_ops *ops, const struct filter_edit *e)
{
	struct pmilter_op *op;
	char *v = NULL;

	switch (e->kind) {
	case EDIT_ADD_HEADER:
	case EDIT_INSERT_HEADER:
	case EDIT_CHANGE_HEADER:
		if (e->value != NULL && (v = pmilter_clean(e->name, e->value)) == NULL)
			return;
		if (e->kind == EDIT_CHANGE_HEADER)
			pmilter_op_add(ops, PMILTER_OP_CHANGE_HEADER, xstrdup(e->name), v,
			    e->index > 0 ? e->index : 1);
		else if (v != NULL)
			pmilter_op_add(ops, e->kind == EDIT_ADD_HEADER ? PMILTER_OP_ADD_HEADER :
			    PMILTER_OP_INSERT_HEADER, xstrdup(e->name), v, e->index);
		break;
	case EDIT_DELETE_HEADER:
		pmilter_op_add(ops, PMILTER_OP_CHANGE_HEADER, xstrdup(e->name), NULL,
		    e->index > 0 ? e->index : 1);
		break;
	case EDIT_REPLACE_BODY:
		op = pmilter_op_add(ops, PMILTER_OP_REPLACE_BODY, NULL, NULL, 0);
		op->value = xmalloc(e->value_len + 1);
		memcpy(op->value, e->value, e->value_len);
		op->value[e->value_len] = '\0';
		op->value_len = e->value_len;
		break;
	case EDIT_CHANGE_FROM:
	case EDIT_ADD_RCPT:
		op = pmilter_op_add(ops, e->kind == EDIT_CHANGE_FROM ? PMILTER_OP_CHANGE_FROM :
		    PMILTER_OP_ADD_RCPT, pmilter_bracket(e->value), NULL, 0);
		op->params = pmilter_op_params(e->params);
		break;
	case EDIT_DELETE_RCPT:
		pmilter_op_add(ops, PMILTER_OP_DELETE_RCPT, pmilter_bracket(e->value), NULL, 0);
		break;
	}
}

/* pmilter_received - did value come with the message (a pointer into txn->headers)? */
static bool
pmilter_received(const struct filter_txn *txn, const char *value, size_t *from)
{
	size_t i;

	/* Received fields keep their order: search on from the last one found. */
	for (i = *from; i < txn->nheaders; i++) {
		if (txn->headers[i].value == value) {
			*from = i + 1;
			return true;
		}
	}
	return false;
}

/* pmilter_occurrence - which occurrence of its name field i is, 1 for the first */
static unsigned
pmilter_occurrence(const struct filter_header *h, size_t i)
{
	unsigned n = 1;
	size_t k;

	for (k = 0; k < i; k++)
		if (str_casecmp(h[k].name, h[i].name) == 0)
			n++;
	return n;
}

/*
 * pmilter_ops_dropped - the received fields composed lacks, deleted last
 * first so that each occurrence index holds when its turn comes.  c are
 * composed's fields past our own Authentication-Results.
 */
static bool
pmilter_ops_dropped(struct pmilter_ops *ops, const struct filter_txn *txn,
    const struct filter_header *c, size_t nc)
{
	struct filter_header *h;
	size_t n, i, j = 0, from = 0, first = ops->n;
	bool ok;

	h = filter_headers_edited(txn, &n);
	for (i = 0; i < n; i++) {
		if (pmilter_received(txn, h[i].value, &from) && !(j < nc &&
		    strcmp(h[i].name, c[j].name) == 0 && strcmp(h[i].value, c[j].value) == 0)) {
			pmilter_op_add(ops, PMILTER_OP_CHANGE_HEADER, xstrdup(h[i].name), NULL,
			    pmilter_occurrence(h, i));
			continue;
		}
		j++;	/* kept, or a filter's field, which compose always writes */
	}
	free(h);
	ok = j == nc;
	if (!ok) {
		while (ops->n > first)
			free(ops->v[--ops->n].name);
		return false;
	}
	for (i = first, j = ops->n; i + 1 < j; i++, j--) {
		struct pmilter_op t = ops->v[i];

		ops->v[i] = ops->v[j - 1];
		ops->v[j - 1] = t;
	}
	return true;
}

/* pmilter_ops_top - fields to put on top, in order: each inserted at 0, last first */
static void
pmilter_ops_top(struct pmilter_ops *ops, const struct filter_header *f, size_t n)
{
	while (n-- > 0)
		pmilter_op_add(ops, PMILTER_OP_INSERT_HEADER, xstrdup(f[n].name),
		    pmilter_value_lf(f[n].value), 0);
}

/* pmilter_ops_build - edits, dropped fields, then signatures and our results on top */
bool
pmilter_ops_build(const struct filter_txn *txn, const struct buf *composed, const char *top,
    size_t toplen, struct pmilter_ops *ops)
{
	struct filter_txn c, t;
	size_t i, ours = txn->auth_results.len > 0 ? 1 : 0;
	bool ok;

	memset(ops, 0, sizeof(*ops));
	for (i = 0; i < txn->nedits; i++)
		pmilter_ops_edit(ops, &txn->edits[i]);
	pmilter_fields(&c, composed->data, composed->len);
	if (c.nheaders < ours)
		ours = 0;
	ok = pmilter_ops_dropped(ops, txn, c.headers + ours, c.nheaders - ours);
	pmilter_ops_top(ops, c.headers, ours);
	pmilter_fields(&t, top, toplen);
	pmilter_ops_top(ops, t.headers, t.nheaders);
	filter_txn_reset(&t);
	filter_txn_reset(&c);
	return ok;
}

/* pmilter_ops_free - the ops and their strings */
void
pmilter_ops_free(struct pmilter_ops *ops)
{
	size_t i;

	for (i = 0; i < ops->n; i++) {
		free(ops->v[i].name);
		free(ops->v[i].value);
		free(ops->v[i].params);
	}
	free(ops->v);
	memset(ops, 0, sizeof(*ops));
}

/* pmilter_reply_text - '%' doubled for the MTA, which formats the text */
void
pmilter_reply_text(const struct filter_reply *r, char *out, size_t size)
{
	const char *p = r->text[0] != '\0' ? r->text : "Error";
	size_t n = 0;

	for (; *p != '\0' && n + 2 < size; p++) {
		out[n++] = *p;
		if (*p == '%')
			out[n++] = '%';
	}
	out[n] = '\0';
}
