/*
 * sender_login.c - the login -> owned senders map, the envelope sender
 * check and the From: header check for authenticated sessions.
 *
 * Addresses are canonicalized by smtp_parse (one canonical form in the whole
 * daemon): this file finds where each address is, in a map line or in an
 * RFC 5322 mailbox-list, rebuilds it without comments and folding, and
 * leaves the local part, domain and literal rules to smtp_parse_path.
 * It must never write to the map after load (threads share it), never log,
 * never recurse on input (comments nest through a counter) and never read
 * past the length it is given.  The map owns all its strings.
 */
#include "config.h"

#include <errno.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "buf.h"
#include "log.h"
#include "sender_login.h"
#include "smtp_parse.h"
#include "util.h"

/* A growable array of owned strings. */
struct strv {
	char **v;
	size_t n;
	size_t cap;
};

struct sender_login_entry {
	char *login;
	int line;		/* where its entry line is, for duplicate errors */
	unsigned ntokens;	/* address tokens seen, good or bad */
	struct strv addrs;	/* canonical "local@domain", sorted, unique */
	struct strv domains;	/* canonical domains of "@domain", sorted, unique */
};

struct sender_login_map {
	struct sender_login_entry *entries;	/* sorted by login */
	size_t nentries;
	size_t cap;
};

/* One load error, sorted by line before it is reported. */
struct sender_login_err {
	int line;
	size_t seq;
	char *text;
};

struct sender_login_load {
	const char *path;
	struct sender_login_map *m;
	bool have_cur;		/* an entry line was seen: continuations go to the last entry */
	struct sender_login_err *errv;
	size_t nerrors;
	bool full;		/* SENDER_LOGIN_ERRORS_MAX reached */
};

/* --- small helpers ------------------------------------------------------------ */

/* strv_push - append a copy of s[0..n) */
static void
strv_push(struct strv *sv, const char *s, size_t n)
{
	if (sv->n == sv->cap) {
		sv->cap = sv->cap ? sv->cap * 2 : 4;
		sv->v = xreallocarray(sv->v, sv->cap, sizeof(*sv->v));
	}
	sv->v[sv->n++] = xstrndup(s, n);
}

/* strv_free - release the strings and the array */
static void
strv_free(struct strv *sv)
{
	size_t i;

	for (i = 0; i < sv->n; i++)
		free(sv->v[i]);
	free(sv->v);
	memset(sv, 0, sizeof(*sv));
}

/* strv_cmp - qsort/bsearch order of two char * slots */
static int
strv_cmp(const void *a, const void *b)
{
	return strcmp(*(char *const *)a, *(char *const *)b);
}

/* strv_sort_unique - sort and drop duplicates */
static void
strv_sort_unique(struct strv *sv)
{
	size_t i, o = 0;

	if (sv->n == 0)
		return;
	qsort(sv->v, sv->n, sizeof(*sv->v), strv_cmp);
	for (i = 1; i < sv->n; i++) {
		if (strcmp(sv->v[o], sv->v[i]) == 0)
			free(sv->v[i]);
		else
			sv->v[++o] = sv->v[i];
	}
	sv->n = o + 1;
}

/* strv_has - is s in the sorted array? */
static bool
strv_has(const struct strv *sv, const char *s)
{
	if (sv->n == 0)
		return false;
	return bsearch(&s, sv->v, sv->n, sizeof(*sv->v), strv_cmp) != NULL;
}

/* is_wsp - SP or HTAB */
static bool
is_wsp(unsigned char c)
{
	return c == ' ' || c == '\t';
}

/* is_ctl - a control character other than HTAB (CR and LF included) */
static bool
is_ctl(unsigned char c)
{
	return (c < 0x20 && c != '\t') || c == 0x7f;
}

/*
 * addr_canon - canonicalize "local@domain" (or "<local@domain>" when angled)
 * from s[0..n) through smtp_parse; UTF-8 allowed, no null path, no bare
 * postmaster.  canon gets the canonical text.
 */
static enum smtp_parse_status
addr_canon(const char *s, size_t n, bool angled, struct smtp_addr *a,
    char canon[SMTP_PARSE_ADDR_SIZE], const char **why_r)
{
	char path[SMTP_PARSE_PATH_MAX + 1];
	enum smtp_parse_status st;
	size_t plen = angled ? n : n + 2;

	if (plen > SMTP_PARSE_PATH_MAX) {
		*why_r = "address too long";
		return SMTP_PARSE_TOO_LONG;
	}
	if (angled)
		memcpy(path, s, n);
	else {
		path[0] = '<';
		memcpy(path + 1, s, n);
		path[n + 1] = '>';
	}
	st = smtp_parse_path(path, plen, SMTP_PARSE_PATH_UTF8, a, why_r);
	if (st != SMTP_PARSE_OK)
		return st;
	if (!smtp_parse_addr_format(a, canon, SMTP_PARSE_ADDR_SIZE))
		fatal("addr_canon: canonical address does not fit");
	return SMTP_PARSE_OK;
}

/* --- the map ------------------------------------------------------------------ */

/* entry_cmp - order entries by login, then by line (duplicates next to each other) */
static int
entry_cmp(const void *a, const void *b)
{
	const struct sender_login_entry *x = a, *y = b;
	int r = strcmp(x->login, y->login);

	if (r != 0)
		return r;
	return (x->line > y->line) - (x->line < y->line);
}

/* entry_find_cmp - bsearch a login (key: const char **) among entries */
static int
entry_find_cmp(const void *key, const void *elem)
{
	const struct sender_login_entry *e = elem;

	return strcmp(*(const char *const *)key, e->login);
}

/* map_find - the entry for login, or NULL */
static const struct sender_login_entry *
map_find(const struct sender_login_map *m, const char *login)
{
	if (m->nentries == 0)
		return NULL;
	return bsearch(&login, m->entries, m->nentries, sizeof(*m->entries),
	    entry_find_cmp);
}

/* sender_login_map_free - release the map (NULL is fine) */
void
sender_login_map_free(struct sender_login_map *m)
{
	size_t i;

	if (m == NULL)
		return;
	for (i = 0; i < m->nentries; i++) {
		free(m->entries[i].login);
		strv_free(&m->entries[i].addrs);
		strv_free(&m->entries[i].domains);
	}
	free(m->entries);
	free(m);
}

/* sender_login_map_logins - how many logins the map lists */
size_t
sender_login_map_logins(const struct sender_login_map *m)
{
	return m == NULL ? 0 : m->nentries;
}

/* --- loading ------------------------------------------------------------------ */

/* load_error - record "FILE:LINE: message" (line 0: "FILE: message") */
static void PRINTF_LIKE(3, 4)
load_error(struct sender_login_load *ld, int line, const char *fmt, ...)
{
	struct sender_login_err *e;
	char msg[512];
	va_list ap;

	if (ld->full)
		return;
	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	ld->errv = xreallocarray(ld->errv, ld->nerrors + 1, sizeof(*ld->errv));
	e = &ld->errv[ld->nerrors];
	e->line = line;
	e->seq = ld->nerrors++;
	if (line > 0)
		e->text = xasprintf("%s:%d: %s", ld->path, line, msg);
	else
		e->text = xasprintf("%s: %s", ld->path, msg);
	if (ld->nerrors == SENDER_LOGIN_ERRORS_MAX) {
		ld->full = true;
		ld->errv = xreallocarray(ld->errv, ld->nerrors + 1, sizeof(*ld->errv));
		e = &ld->errv[ld->nerrors];
		e->line = INT_MAX;
		e->seq = ld->nerrors++;
		e->text = xasprintf("%s: too many errors, giving up", ld->path);
	}
}

/* load_err_cmp - errors in line order, then in the order found */
static int
load_err_cmp(const void *a, const void *b)
{
	const struct sender_login_err *x = a, *y = b;

	if (x->line != y->line)
		return (x->line > y->line) - (x->line < y->line);
	return (x->seq > y->seq) - (x->seq < y->seq);
}

/* load_errors_flush - append the errors, one per line, to errors and free them */
static void
load_errors_flush(struct sender_login_load *ld, struct buf *errors)
{
	size_t i;

	qsort(ld->errv, ld->nerrors, sizeof(*ld->errv), load_err_cmp);
	for (i = 0; i < ld->nerrors; i++) {
		if (errors != NULL) {
			buf_puts(errors, ld->errv[i].text);
			buf_putc(errors, '\n');
		}
		free(ld->errv[i].text);
	}
	free(ld->errv);
	ld->errv = NULL;
	ld->nerrors = 0;
}

/* load_cur - the entry continuation lines add to */
static struct sender_login_entry *
load_cur(struct sender_login_load *ld)
{
	if (!ld->have_cur || ld->m->nentries == 0)
		fatal("load_cur: no current entry");
	return &ld->m->entries[ld->m->nentries - 1];
}

/* load_token - one address token of an entry: "@domain", "<addr>" or "addr" */
static void
load_token(struct sender_login_load *ld, int line, struct sender_login_entry *e,
    const char *tok, size_t n)
{
	char canon[SMTP_PARSE_ADDR_SIZE], shown[128], wild[SMTP_PARSE_PATH_MAX + 1];
	struct smtp_addr a;
	enum smtp_parse_status st;
	const char *why = "bad address";

	e->ntokens++;
	log_escape(shown, sizeof(shown), tok, n);
	if (tok[0] == '@') {
		/* "@domain": let smtp_parse check the domain of "x@domain". */
		if (n + 1 > sizeof(wild) - 1) {
			load_error(ld, line, "domain too long in \"%s\"", shown);
			return;
		}
		wild[0] = 'x';
		memcpy(wild + 1, tok, n);
		st = addr_canon(wild, n + 1, false, &a, canon, &why);
	} else
		st = addr_canon(tok, n, tok[0] == '<' && tok[n - 1] == '>',
		    &a, canon, &why);
	if (st != SMTP_PARSE_OK) {
		load_error(ld, line, "bad address \"%s\": %s", shown, why);
		return;
	}
	if (tok[0] == '@')
		strv_push(&e->domains, a.domain, strlen(a.domain));
	else
		strv_push(&e->addrs, canon, strlen(canon));
}

/*
 * load_list - the address list in p[0..end): tokens separated by commas
 * and/or whitespace; double quotes protect both; '#' starting a token
 * starts a comment.
 */
static void
load_list(struct sender_login_load *ld, int line, struct sender_login_entry *e,
    const char *p, const char *end)
{
	const char *tok;
	bool quoted;

	for (;;) {
		while (p < end && (is_wsp((unsigned char)*p) || *p == ','))
			p++;
		if (p == end || *p == '#')
			return;
		tok = p;
		quoted = false;
		for (; p < end; p++) {
			if (*p == '"')
				quoted = !quoted;
			else if (*p == '\\' && quoted && p + 1 < end)
				p++;
			else if (!quoted && (is_wsp((unsigned char)*p) || *p == ','))
				break;
		}
		if (quoted) {
			char shown[128];

			e->ntokens++;
			log_escape(shown, sizeof(shown), tok, (size_t)(p - tok));
			load_error(ld, line, "unterminated quote in \"%s\"", shown);
			return;
		}
		load_token(ld, line, e, tok, (size_t)(p - tok));
	}
}

/* load_finish_entry - the last entry must have listed something */
static void
load_finish_entry(struct sender_login_load *ld)
{
	struct sender_login_entry *e;
	char shown[128];

	if (!ld->have_cur)
		return;
	e = load_cur(ld);
	if (e->ntokens == 0) {
		log_escape(shown, sizeof(shown), e->login, strlen(e->login));
		load_error(ld, e->line, "login \"%s\" lists no addresses", shown);
	}
}

/* load_new_entry - start the entry for login s[0..n) on line */
static struct sender_login_entry *
load_new_entry(struct sender_login_load *ld, int line, const char *s, size_t n)
{
	struct sender_login_map *m = ld->m;
	struct sender_login_entry *e;

	if (m->nentries == m->cap) {
		m->cap = m->cap ? m->cap * 2 : 16;
		m->entries = xreallocarray(m->entries, m->cap, sizeof(*m->entries));
	}
	e = &m->entries[m->nentries++];
	memset(e, 0, sizeof(*e));
	e->login = xstrndup(s, n);
	e->line = line;
	ld->have_cur = true;
	return e;
}

/* load_line - one physical line s[0..n), its line end already removed */
static void
load_line(struct sender_login_load *ld, int line, const char *s, size_t n)
{
	const char *p = s, *end = s + n, *login;
	char shown[128];
	size_t i;

	if (memchr(s, '\0', n) != NULL) {
		load_error(ld, line, "NUL byte in line");
		return;
	}
	if (n > SENDER_LOGIN_LINE_MAX) {
		load_error(ld, line, "line longer than %d octets", SENDER_LOGIN_LINE_MAX);
		return;
	}
	while (p < end && is_wsp((unsigned char)*p))
		p++;
	if (p == end || *p == '#')
		return;
	if (p != s) {
		/* Leading whitespace: the previous login's list goes on. */
		if (!ld->have_cur) {
			load_error(ld, line, "continuation line with no login before it");
			return;
		}
		load_list(ld, line, load_cur(ld), p, end);
		return;
	}
	load_finish_entry(ld);
	ld->have_cur = false;
	login = p;
	while (p < end && !is_wsp((unsigned char)*p))
		p++;
	log_escape(shown, sizeof(shown), login, (size_t)(p - login));
	if ((size_t)(p - login) > SENDER_LOGIN_LOGIN_MAX) {
		load_error(ld, line, "login \"%s\" longer than %d octets", shown,
		    SENDER_LOGIN_LOGIN_MAX);
		return;
	}
	for (i = 0; login + i < p; i++) {
		if (is_ctl((unsigned char)login[i])) {
			load_error(ld, line, "control character in login \"%s\"", shown);
			return;
		}
	}
	load_list(ld, line, load_new_entry(ld, line, login, (size_t)(p - login)),
	    p, end);
}

/* load_read - every line of f through load_line */
static void
load_read(struct sender_login_load *ld, FILE *f)
{
	char *line = NULL;
	size_t cap = 0, n;
	ssize_t got;
	int lineno = 0;

	while (!ld->full && (got = getline(&line, &cap, f)) >= 0) {
		lineno = lineno < INT_MAX - 1 ? lineno + 1 : lineno;
		n = (size_t)got;
		if (n > 0 && line[n - 1] == '\n')
			n--;
		if (n > 0 && line[n - 1] == '\r')
			n--;
		load_line(ld, lineno, line, n);
	}
	if (ferror(f))
		load_error(ld, 0, "read error: %s", strerror(errno));
	free(line);
	if (!ld->full)
		load_finish_entry(ld);
}

/* load_index - sort logins and their addresses; a repeated login is an error */
static void
load_index(struct sender_login_load *ld)
{
	struct sender_login_map *m = ld->m;
	char shown[128];
	size_t i, first = 0;

	if (m->nentries > 0)
		qsort(m->entries, m->nentries, sizeof(*m->entries), entry_cmp);
	for (i = 0; i < m->nentries; i++) {
		strv_sort_unique(&m->entries[i].addrs);
		strv_sort_unique(&m->entries[i].domains);
		if (strcmp(m->entries[first].login, m->entries[i].login) != 0) {
			first = i;
			continue;
		}
		if (i == first)
			continue;
		log_escape(shown, sizeof(shown), m->entries[i].login,
		    strlen(m->entries[i].login));
		load_error(ld, m->entries[i].line,
		    "login \"%s\" already listed on line %d", shown,
		    m->entries[first].line);
	}
}

/* sender_login_map_load - read FILE; NULL and FILE:LINE errors on failure */
struct sender_login_map *
sender_login_map_load(const char *path, struct buf *errors)
{
	struct sender_login_load ld;
	FILE *f;

	memset(&ld, 0, sizeof(ld));
	ld.path = path;
	ld.m = xcalloc(1, sizeof(*ld.m));
	if ((f = fopen(path, "re")) == NULL) {
		load_error(&ld, 0, "cannot open: %s", strerror(errno));
	} else {
		load_read(&ld, f);
		fclose(f);
		if (ld.nerrors == 0)
			load_index(&ld);
	}
	if (ld.nerrors > 0) {
		load_errors_flush(&ld, errors);
		sender_login_map_free(ld.m);
		return NULL;
	}
	free(ld.errv);
	return ld.m;
}

/* --- the envelope sender ----------------------------------------------------- */

/* owns - does login own the parsed, canonical address a/canon? */
static bool
owns(const struct sender_login_map *m, const char *login,
    const struct smtp_addr *a, const char *canon)
{
	const struct sender_login_entry *e;
	char self[SMTP_PARSE_ADDR_SIZE];
	struct smtp_addr la;
	const char *why;

	if (login == NULL || login[0] == '\0')
		return false;
	if (m == NULL) {
		/* No map: a login that is an address owns that address. */
		if (addr_canon(login, strlen(login), false, &la, self, &why) !=
		    SMTP_PARSE_OK)
			return false;
		return strcmp(self, canon) == 0;
	}
	if ((e = map_find(m, login)) == NULL)
		return false;
	return strv_has(&e->addrs, canon) || strv_has(&e->domains, a->domain);
}

/* sender_login_allowed - may login send as addr ("" = null sender)? */
bool
sender_login_allowed(const struct sender_login_map *m, const char *login,
    const char *addr)
{
	char canon[SMTP_PARSE_ADDR_SIZE];
	struct smtp_addr a;
	const char *why;

	if (login == NULL || login[0] == '\0' || addr == NULL)
		return false;
	if (addr[0] == '\0')
		return true;	/* <>: bounces and auto-replies, as in Postfix */
	if (addr_canon(addr, strlen(addr), false, &a, canon, &why) != SMTP_PARSE_OK)
		return false;
	return owns(m, login, &a, canon);
}

/* --- the From: header ---------------------------------------------------------- */

/*
 * RFC 5322 3.4 with RFC 6532 UTF-8: a lexer that drops CFWS and hands out
 * atoms, quoted strings, domain literals and single specials.  Folding
 * (CRLF or LF, then WSP) is whitespace; any other line end is an error,
 * except one at the very end of the value.
 */
enum from_tok {
	FROM_TOK_END,
	FROM_TOK_ATOM,		/* 1*atext, UTF-8 octets included */
	FROM_TOK_QUOTED,	/* a quoted-string, quotes included, raw */
	FROM_TOK_LITERAL,	/* a domain-literal, brackets included, raw */
	FROM_TOK_SPECIAL,	/* one of < > : ; @ , . */
	FROM_TOK_ERROR,
};

struct from_token {
	enum from_tok type;
	const unsigned char *s;	/* raw text in the value */
	size_t n;
	char c;			/* FROM_TOK_SPECIAL */
};

struct from_lex {
	const unsigned char *p;
	const unsigned char *end;
	const char *why;	/* static, once an error was found */
};

/* An addr-spec rebuilt without CFWS as "<local@domain>" for smtp_parse_path. */
struct from_addr {
	char buf[SMTP_PARSE_PATH_MAX + 1];
	size_t len;
	bool overflow;
};

/* from_is_atext - RFC 5322 atext, plus any non-ASCII octet (RFC 6532) */
static bool
from_is_atext(unsigned char c)
{
	if (c >= 0x80)
		return true;
	if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9'))
		return true;
	return c != '\0' && strchr("!#$%&'*+-/=?^_`{|}~", c) != NULL;
}

/* from_fail - record a reason and fail */
static bool
from_fail(struct from_lex *l, const char *why)
{
	if (l->why == NULL)
		l->why = why;
	return false;
}

/*
 * from_newline - at a CR or LF: step over a fold's line end (the WSP stays)
 * or over a final line end; fail on anything else.
 */
static bool
from_newline(struct from_lex *l)
{
	const unsigned char *q = l->p;

	if (*q == '\r') {
		if (++q == l->end || *q != '\n')
			return from_fail(l, "bare CR");
	}
	q++;
	if (q != l->end && !is_wsp(*q))
		return from_fail(l, "line end not followed by whitespace");
	l->p = q;
	return true;
}

/* from_quoted_pair - step over "\" (VCHAR / WSP / UTF-8) */
static bool
from_quoted_pair(struct from_lex *l)
{
	if (l->end - l->p < 2 || is_ctl(l->p[1]))
		return from_fail(l, "bad quoted pair");
	l->p += 2;
	return true;
}

/* from_skip_comment - a comment, nested through a counter, not recursion */
static bool
from_skip_comment(struct from_lex *l)
{
	size_t depth = 0;
	unsigned char c;

	while (l->p < l->end) {
		c = *l->p;
		if (c == '(') {
			depth++;
			l->p++;
		} else if (c == ')') {
			l->p++;
			if (--depth == 0)
				return true;
		} else if (c == '\\') {
			if (!from_quoted_pair(l))
				return false;
		} else if (c == '\r' || c == '\n') {
			if (!from_newline(l))
				return false;
		} else if (is_ctl(c))
			return from_fail(l, "control character in comment");
		else
			l->p++;
	}
	return from_fail(l, "unterminated comment");
}

/* from_skip_cfws - whitespace, folds and comments */
static bool
from_skip_cfws(struct from_lex *l)
{
	while (l->p < l->end) {
		if (is_wsp(*l->p))
			l->p++;
		else if (*l->p == '\r' || *l->p == '\n') {
			if (!from_newline(l))
				return false;
		} else if (*l->p == '(') {
			if (!from_skip_comment(l))
				return false;
		} else
			return true;
	}
	return true;
}

/* from_delimited - a quoted-string or domain-literal up to its closing octet */
static bool
from_delimited(struct from_lex *l, unsigned char close, const char *unterminated)
{
	unsigned char c;

	l->p++;		/* the opening '"' or '[' */
	while (l->p < l->end) {
		c = *l->p;
		if (c == close) {
			l->p++;
			return true;
		}
		if (c == '\r' || c == '\n') {
			if (!from_newline(l))
				return false;
		} else if (c == '\\' && close == '"') {
			if (!from_quoted_pair(l))
				return false;
		} else if (close == ']' && (c == '\\' || c == '['))
			return from_fail(l, "bad character in domain literal");
		else if (is_ctl(c))
			return from_fail(l, "control character");
		else
			l->p++;
	}
	return from_fail(l, unterminated);
}

/* from_next - the next token after any CFWS */
static void
from_next(struct from_lex *l, struct from_token *t)
{
	const unsigned char *start;
	unsigned char c;

	memset(t, 0, sizeof(*t));
	t->type = FROM_TOK_ERROR;
	if (!from_skip_cfws(l))
		return;
	start = t->s = l->p;
	if (l->p == l->end) {
		t->type = FROM_TOK_END;
		return;
	}
	c = *l->p;
	if (from_is_atext(c)) {
		while (l->p < l->end && from_is_atext(*l->p))
			l->p++;
		t->type = FROM_TOK_ATOM;
	} else if (c == '"') {
		if (!from_delimited(l, '"', "unterminated quoted string"))
			return;
		t->type = FROM_TOK_QUOTED;
	} else if (c == '[') {
		if (!from_delimited(l, ']', "unterminated domain literal"))
			return;
		t->type = FROM_TOK_LITERAL;
	} else if (c != '\0' && strchr("<>:;@,.", c) != NULL) {
		l->p++;
		t->type = FROM_TOK_SPECIAL;
		t->c = (char)c;
	} else {
		from_fail(l, c == ')' ? "unbalanced parenthesis" :
		    is_ctl(c) ? "control character" : "unexpected character");
		return;
	}
	t->n = (size_t)(l->p - start);
}

/* from_is - is t the special c? */
static bool
from_is(const struct from_token *t, char c)
{
	return t->type == FROM_TOK_SPECIAL && t->c == c;
}

/* from_put - append raw token text, minus line ends (and WSP when asked) */
static void
from_put(struct from_addr *a, const unsigned char *s, size_t n, bool drop_wsp)
{
	size_t i;

	for (i = 0; i < n; i++) {
		if (s[i] == '\r' || s[i] == '\n' || (drop_wsp && is_wsp(s[i])))
			continue;
		if (a->len >= sizeof(a->buf) - 1) {
			a->overflow = true;
			return;
		}
		a->buf[a->len++] = (char)s[i];
	}
	a->buf[a->len] = '\0';
}

/* from_put_dot_atoms - atom *("." atom) starting at the atom t; t_r gets what follows */
static bool
from_put_dot_atoms(struct from_lex *l, struct from_addr *a, struct from_token *t,
    const char *why)
{
	for (;;) {
		from_put(a, t->s, t->n, false);
		from_next(l, t);
		if (!from_is(t, '.'))
			return t->type != FROM_TOK_ERROR;
		from_put(a, t->s, t->n, false);
		from_next(l, t);
		if (t->type != FROM_TOK_ATOM)
			return t->type == FROM_TOK_ERROR ? false : from_fail(l, why);
	}
}

/*
 * from_addr_spec - local-part "@" domain into a as "<local@domain>"; t_r
 * gets the token after it.  obs-local-part mixing quoted strings and atoms
 * is refused: smtp_parse could not take it anyway.
 */
static bool
from_addr_spec(struct from_lex *l, struct from_addr *a, struct from_token *t_r)
{
	a->len = 0;
	a->overflow = false;
	from_put(a, (const unsigned char *)"<", 1, false);
	from_next(l, t_r);
	if (t_r->type == FROM_TOK_QUOTED) {
		from_put(a, t_r->s, t_r->n, false);
		from_next(l, t_r);
	} else if (t_r->type == FROM_TOK_ATOM) {
		if (!from_put_dot_atoms(l, a, t_r, "bad local part"))
			return false;
	} else
		return t_r->type == FROM_TOK_ERROR ? false :
		    from_fail(l, "expected an address");
	if (t_r->type == FROM_TOK_ERROR)
		return false;
	if (!from_is(t_r, '@'))
		return from_fail(l, "expected '@' after the local part");
	from_put(a, (const unsigned char *)"@", 1, false);
	from_next(l, t_r);
	if (t_r->type == FROM_TOK_LITERAL) {
		from_put(a, t_r->s, t_r->n, true);
		from_next(l, t_r);
	} else if (t_r->type == FROM_TOK_ATOM) {
		if (!from_put_dot_atoms(l, a, t_r, "bad domain"))
			return false;
	} else
		return t_r->type == FROM_TOK_ERROR ? false : from_fail(l, "bad domain");
	if (t_r->type == FROM_TOK_ERROR)
		return false;
	from_put(a, (const unsigned char *)">", 1, false);
	return true;
}

/*
 * from_mailbox - one mailbox: [display-name] angle-addr, or addr-spec.
 * Words are scanned first; what ends them says which form this is, and an
 * addr-spec is then re-read from the mailbox's start.  t_r gets the token
 * after the mailbox.
 */
static bool
from_mailbox(struct from_lex *l, struct from_addr *a, struct from_token *t_r)
{
	const unsigned char *mark = l->p;
	unsigned nwords = 0;

	for (;;) {
		from_next(l, t_r);
		if (t_r->type == FROM_TOK_ATOM || t_r->type == FROM_TOK_QUOTED)
			nwords++;
		else if (from_is(t_r, '.') && nwords > 0)
			continue;	/* obs-phrase: "John Q. Public" */
		else
			break;
	}
	if (t_r->type == FROM_TOK_ERROR)
		return false;
	if (from_is(t_r, '<')) {
		if (!from_addr_spec(l, a, t_r))
			return false;
		if (from_is(t_r, '@') || from_is(t_r, ':') || from_is(t_r, ','))
			return from_fail(l, "source route or second address in angle brackets");
		if (!from_is(t_r, '>'))
			return from_fail(l, "expected '>' after the address");
		from_next(l, t_r);
		return t_r->type != FROM_TOK_ERROR;
	}
	if (from_is(t_r, '@')) {
		l->p = mark;
		if (!from_addr_spec(l, a, t_r))
			return false;
		if (from_is(t_r, '<'))
			return from_fail(l, "unquoted address as a display name");
		return true;
	}
	if (from_is(t_r, ':'))
		return from_fail(l, "group syntax");
	if (nwords > 0)
		return from_fail(l, "display name without an address");
	return from_fail(l, "expected a mailbox");
}

/* from_result_init - an empty result, if the caller wants one */
static void
from_result_init(struct sender_login_from_result *res)
{
	if (res != NULL)
		memset(res, 0, sizeof(*res));
}

/* from_unparseable - fill in why and return UNPARSEABLE */
static enum sender_login_from
from_unparseable(struct sender_login_from_result *res, const char *why)
{
	if (res != NULL) {
		res->why = why != NULL ? why : "unparseable";
		res->mailbox[0] = '\0';
	}
	return SENDER_LOGIN_FROM_UNPARSEABLE;
}

/* from_check_one - canonicalize a rebuilt addr-spec and check ownership */
static enum sender_login_from
from_check_one(const struct sender_login_map *m, const char *login,
    const struct from_addr *fa, struct sender_login_from_result *res,
    const char **why_r)
{
	char canon[SMTP_PARSE_ADDR_SIZE];
	struct smtp_addr a;

	if (fa->overflow) {
		*why_r = "address too long";
		return SENDER_LOGIN_FROM_UNPARSEABLE;
	}
	if (addr_canon(fa->buf, fa->len, true, &a, canon, why_r) != SMTP_PARSE_OK)
		return SENDER_LOGIN_FROM_UNPARSEABLE;
	if (owns(m, login, &a, canon))
		return SENDER_LOGIN_FROM_OK;
	if (res != NULL && res->mailbox[0] == '\0')
		str_copy(res->mailbox, canon, sizeof(res->mailbox));
	return SENDER_LOGIN_FROM_MISMATCH;
}

/* sender_login_check_from - does every mailbox of a From: value belong to login? */
enum sender_login_from
sender_login_check_from(const struct sender_login_map *m, const char *login,
    const char *value, size_t len, struct sender_login_from_result *res_r)
{
	struct from_lex l;
	struct from_token t;
	struct from_addr fa;
	const unsigned char *mark;
	const char *why = NULL;
	bool mismatch = false;
	unsigned n = 0;

	from_result_init(res_r);
	if (len > SENDER_LOGIN_FROM_MAX)
		return from_unparseable(res_r, "From: value too long");
	l.p = (const unsigned char *)value;
	l.end = l.p + len;
	l.why = NULL;
	for (;;) {
		/* obs-mbox-list: empty elements between commas are skipped. */
		mark = l.p;
		from_next(&l, &t);
		if (t.type == FROM_TOK_ERROR)
			return from_unparseable(res_r, l.why);
		if (t.type == FROM_TOK_END)
			break;
		if (from_is(&t, ','))
			continue;
		l.p = mark;
		if (!from_mailbox(&l, &fa, &t))
			return from_unparseable(res_r, l.why);
		n++;
		if (res_r != NULL)
			res_r->nmailboxes = n;
		switch (from_check_one(m, login, &fa, res_r, &why)) {
		case SENDER_LOGIN_FROM_OK:
			break;
		case SENDER_LOGIN_FROM_MISMATCH:
			mismatch = true;
			break;
		case SENDER_LOGIN_FROM_UNPARSEABLE:
			return from_unparseable(res_r, why);
		}
		if (t.type == FROM_TOK_END)
			break;
		if (!from_is(&t, ','))
			return from_unparseable(res_r, "expected ',' between mailboxes");
	}
	if (n == 0)
		return from_unparseable(res_r, "no mailbox");
	return mismatch ? SENDER_LOGIN_FROM_MISMATCH : SENDER_LOGIN_FROM_OK;
}

/* sender_login_from_name - "OK", "MISMATCH", "UNPARSEABLE" */
const char *
sender_login_from_name(enum sender_login_from r)
{
	switch (r) {
	case SENDER_LOGIN_FROM_OK:
		return "OK";
	case SENDER_LOGIN_FROM_MISMATCH:
		return "MISMATCH";
	case SENDER_LOGIN_FROM_UNPARSEABLE:
		return "UNPARSEABLE";
	}
	return "?";
}
