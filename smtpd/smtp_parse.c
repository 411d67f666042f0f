/*
 * smtp_parse.c - the SMTP command-phase parser (see smtp_parse.h).
 *
 * Grammar from RFC 5321 4.1.2 (paths, parameters), RFC 6531 (UTF-8),
 * RFC 1870, 3030, 3461, 4954, 6152 and 8689 (parameters).  Scanners walk a
 * [p, end) range and never read past end; nothing is written until a whole
 * path has been checked against its limits, so fixed-size results can never
 * overflow.  This file must never do I/O, log, allocate or keep state
 * outside the caller's structs; every result it returns belongs to the caller.
 */
#include "config.h"

#include <arpa/inet.h>
#include <assert.h>
#include <stdio.h>
#include <string.h>

#include "smtp_parse.h"

#define DNS_LABEL_MAX	63	/* RFC 1035 2.3.4 */
#define LITERAL_MAX	63	/* longest "IPv6:..." literal content we look at */

/* --- character classes ------------------------------------------------------ */

/* is_alpha - ASCII letter */
static bool
is_alpha(unsigned char c)
{
	return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z');
}

/* is_digit - ASCII digit */
static bool
is_digit(unsigned char c)
{
	return c >= '0' && c <= '9';
}

/* is_atext - RFC 5322 atext, ASCII part */
static bool
is_atext(unsigned char c)
{
	return is_alpha(c) || is_digit(c) ||
	    (c != '\0' && strchr("!#$%&'*+-/=?^_`{|}~", c) != NULL);
}

/* is_qtext - RFC 5321 qtextSMTP, ASCII part: printable, no '"' or '\' */
static bool
is_qtext(unsigned char c)
{
	return c >= 32 && c <= 126 && c != '"' && c != '\\';
}

/* is_space - the separators we trim around arguments */
static bool
is_space(unsigned char c)
{
	return c == ' ' || c == '\t';
}

/* to_upper - ASCII upper case */
static char
to_upper(unsigned char c)
{
	return (char)((c >= 'a' && c <= 'z') ? c - ('a' - 'A') : c);
}

/* is_xhex - the uppercase hex digits of an xtext hexchar */
static bool
is_xhex(unsigned char c)
{
	return is_digit(c) || (c >= 'A' && c <= 'F');
}

/*
 * utf8_len - octets of the well-formed UTF-8 sequence at p (RFC 3629: no
 * overlongs, no surrogates, nothing past U+10FFFF), or 0 if there is none.
 */
static size_t
utf8_len(const unsigned char *p, const unsigned char *end)
{
	unsigned char c = p[0], lo = 0x80, hi = 0xbf;
	size_t n, i;

	if (c >= 0xc2 && c <= 0xdf)
		n = 2;
	else if (c >= 0xe0 && c <= 0xef) {
		n = 3;
		if (c == 0xe0)
			lo = 0xa0;
		else if (c == 0xed)
			hi = 0x9f;
	} else if (c >= 0xf0 && c <= 0xf4) {
		n = 4;
		if (c == 0xf0)
			lo = 0x90;
		else if (c == 0xf4)
			hi = 0x8f;
	} else
		return 0;
	if ((size_t)(end - p) < n || p[1] < lo || p[1] > hi)
		return 0;
	for (i = 2; i < n; i++)
		if (p[i] < 0x80 || p[i] > 0xbf)
			return 0;
	return n;
}

/* has_prefix - case-insensitive: does [p, end) start with word? */
static bool
has_prefix(const unsigned char *p, const unsigned char *end, const char *word)
{
	size_t n = strlen(word);

	return (size_t)(end - p) >= n && str_ncasecmp((const char *)p, word, n) == 0;
}

/* equals_word - case-insensitive: is v[0..vlen) exactly word? */
static bool
equals_word(const char *v, size_t vlen, const char *word)
{
	return strlen(word) == vlen && str_ncasecmp(v, word, vlen) == 0;
}

/* --- line framing ---------------------------------------------------------- */

/* smtp_parse_reader_init - a reader for lines of at most max_line octets */
void
smtp_parse_reader_init(struct smtp_parse_reader *r, size_t max_line)
{
	assert(max_line >= 2);
	r->max_line = max_line;
	r->skipping = false;
}

/* smtp_parse_reader_reset - forget any partial over-long line */
void
smtp_parse_reader_reset(struct smtp_parse_reader *r)
{
	r->skipping = false;
}

/* line_check - classify a framed line of n octets (LF excluded) */
static enum smtp_parse_line_status
line_check(const char *line, size_t n, const char **line_r, size_t *linelen_r)
{
	bool crlf = n > 0 && line[n - 1] == '\r';
	size_t body = crlf ? n - 1 : n;

	if (memchr(line, '\0', n) != NULL)
		return SMTP_PARSE_LINE_NUL;
	*line_r = line;
	*linelen_r = body;
	if (!crlf || memchr(line, '\r', body) != NULL)
		return SMTP_PARSE_LINE_BARE_NEWLINE;
	return SMTP_PARSE_LINE_OK;
}

/* smtp_parse_line - frame the next command line */
enum smtp_parse_line_status
smtp_parse_line(struct smtp_parse_reader *r, const char *buf, size_t len,
    const char **line_r, size_t *linelen_r, size_t *consumed_r)
{
	const char *lf;
	size_t skipped = 0, scan;

	assert(r->max_line >= 2);
	*line_r = NULL;
	*linelen_r = 0;
	*consumed_r = 0;
	if (len == 0)
		return SMTP_PARSE_LINE_NEED_MORE;
	if (r->skipping) {
		/* The tail of a line already reported as too long. */
		if ((lf = memchr(buf, '\n', len)) == NULL) {
			*consumed_r = len;
			return SMTP_PARSE_LINE_NEED_MORE;
		}
		r->skipping = false;
		skipped = (size_t)(lf - buf) + 1;
		buf += skipped;
		len -= skipped;
	}
	scan = len < r->max_line ? len : r->max_line;
	if ((lf = memchr(buf, '\n', scan)) != NULL) {
		*consumed_r = skipped + (size_t)(lf - buf) + 1;
		return line_check(buf, (size_t)(lf - buf), line_r, linelen_r);
	}
	if (len < r->max_line) {
		*consumed_r = skipped;
		return SMTP_PARSE_LINE_NEED_MORE;
	}
	/* max_line octets and no LF: too long whatever comes next. */
	if ((lf = memchr(buf + scan, '\n', len - scan)) == NULL) {
		r->skipping = true;
		*consumed_r = skipped + len;
	} else
		*consumed_r = skipped + (size_t)(lf - buf) + 1;
	return SMTP_PARSE_LINE_TOO_LONG;
}

/* --- names ----------------------------------------------------------------- */

static const char *const status_names[] = {
	[SMTP_PARSE_OK] = "OK",
	[SMTP_PARSE_UNKNOWN_CMD] = "UNKNOWN_CMD",
	[SMTP_PARSE_SYNTAX] = "SYNTAX",
	[SMTP_PARSE_BAD_PARAM] = "BAD_PARAM",
	[SMTP_PARSE_UNKNOWN_PARAM] = "UNKNOWN_PARAM",
	[SMTP_PARSE_NEED_SMTPUTF8] = "NEED_SMTPUTF8",
	[SMTP_PARSE_TOO_LONG] = "TOO_LONG",
};

static const char *const line_status_names[] = {
	[SMTP_PARSE_LINE_OK] = "OK",
	[SMTP_PARSE_LINE_NEED_MORE] = "NEED_MORE",
	[SMTP_PARSE_LINE_TOO_LONG] = "TOO_LONG",
	[SMTP_PARSE_LINE_BARE_NEWLINE] = "BARE_NEWLINE",
	[SMTP_PARSE_LINE_NUL] = "NUL",
};

/* smtp_parse_status_name - printable name of a status */
const char *
smtp_parse_status_name(enum smtp_parse_status s)
{
	if ((size_t)s >= ARRAY_SIZE(status_names))
		return "?";
	return status_names[s];
}

/* smtp_parse_line_status_name - printable name of a line status */
const char *
smtp_parse_line_status_name(enum smtp_parse_line_status s)
{
	if ((size_t)s >= ARRAY_SIZE(line_status_names))
		return "?";
	return line_status_names[s];
}

/* --- verbs ----------------------------------------------------------------- */

enum args_rule {
	ARGS_NONE,		/* "DATA" CRLF */
	ARGS_OPTIONAL,		/* given or not, the verb accepts it */
	ARGS_REQUIRED,
};

static const struct {
	const char *name;
	enum args_rule rule;
} verbs[] = {
	[SMTP_PARSE_VERB_UNKNOWN] = { "UNKNOWN", ARGS_OPTIONAL },
	[SMTP_PARSE_VERB_HELO] = { "HELO", ARGS_REQUIRED },
	[SMTP_PARSE_VERB_EHLO] = { "EHLO", ARGS_REQUIRED },
	[SMTP_PARSE_VERB_MAIL] = { "MAIL", ARGS_REQUIRED },
	[SMTP_PARSE_VERB_RCPT] = { "RCPT", ARGS_REQUIRED },
	[SMTP_PARSE_VERB_DATA] = { "DATA", ARGS_NONE },
	[SMTP_PARSE_VERB_BDAT] = { "BDAT", ARGS_REQUIRED },
	[SMTP_PARSE_VERB_RSET] = { "RSET", ARGS_NONE },
	[SMTP_PARSE_VERB_NOOP] = { "NOOP", ARGS_OPTIONAL },
	/* RFC 5321 allows no argument, but a client saying goodbye gets its bye. */
	[SMTP_PARSE_VERB_QUIT] = { "QUIT", ARGS_OPTIONAL },
	[SMTP_PARSE_VERB_VRFY] = { "VRFY", ARGS_REQUIRED },
	[SMTP_PARSE_VERB_EXPN] = { "EXPN", ARGS_REQUIRED },
	[SMTP_PARSE_VERB_HELP] = { "HELP", ARGS_OPTIONAL },
	[SMTP_PARSE_VERB_STARTTLS] = { "STARTTLS", ARGS_NONE },
	[SMTP_PARSE_VERB_AUTH] = { "AUTH", ARGS_REQUIRED },
};

/* smtp_parse_verb_name - printable verb */
const char *
smtp_parse_verb_name(enum smtp_parse_verb verb)
{
	if ((size_t)verb >= ARRAY_SIZE(verbs))
		return "?";
	return verbs[verb].name;
}

/* smtp_parse_command - split a line into verb and trimmed arguments */
enum smtp_parse_status
smtp_parse_command(const char *line, size_t len, struct smtp_parse_cmd *cmd_r)
{
	size_t vlen = 0, i;
	const char *args;
	size_t argslen;

	while (vlen < len && line[vlen] != ' ')
		vlen++;
	args = line + vlen;
	argslen = len - vlen;
	while (argslen > 0 && is_space((unsigned char)args[0])) {
		args++;
		argslen--;
	}
	while (argslen > 0 && is_space((unsigned char)args[argslen - 1]))
		argslen--;
	cmd_r->verb = SMTP_PARSE_VERB_UNKNOWN;
	cmd_r->args = args;
	cmd_r->argslen = argslen;

	for (i = SMTP_PARSE_VERB_UNKNOWN + 1; i < ARRAY_SIZE(verbs); i++)
		if (equals_word(line, vlen, verbs[i].name))
			break;
	if (i == ARRAY_SIZE(verbs))
		return SMTP_PARSE_UNKNOWN_CMD;
	cmd_r->verb = (enum smtp_parse_verb)i;
	if (verbs[i].rule == ARGS_NONE && argslen > 0)
		return SMTP_PARSE_SYNTAX;
	if (verbs[i].rule == ARGS_REQUIRED && argslen == 0)
		return SMTP_PARSE_SYNTAX;
	return SMTP_PARSE_OK;
}

/* --- paths ----------------------------------------------------------------- */

/* A scan over [p, end); why is set by whichever check fails first. */
struct scan {
	const unsigned char *p;
	const unsigned char *end;
	bool utf8;		/* non-ASCII octets seen */
	const char *why;
};

/* scan_fail - record a reason and fail */
static bool
scan_fail(struct scan *s, const char *why)
{
	s->why = why;
	return false;
}

/* scan_utf8 - step over one well-formed non-ASCII character */
static bool
scan_utf8(struct scan *s)
{
	size_t n = utf8_len(s->p, s->end);

	if (n == 0)
		return scan_fail(s, "malformed UTF-8");
	s->p += n;
	s->utf8 = true;
	return true;
}

/* scan_dot_string - Dot-string: Atom *("." Atom), atext or UTF-8 */
static bool
scan_dot_string(struct scan *s)
{
	const unsigned char *atom;

	for (;;) {
		atom = s->p;
		while (s->p < s->end) {
			if (*s->p >= 0x80) {
				if (!scan_utf8(s))
					return false;
			} else if (is_atext(*s->p))
				s->p++;
			else
				break;
		}
		if (s->p == atom)
			return scan_fail(s, "bad local part");
		if (s->p == s->end || *s->p != '.')
			return true;
		s->p++;
	}
}

/* scan_quoted - Quoted-string: DQUOTE *(qtext / quoted-pair) DQUOTE */
static bool
scan_quoted(struct scan *s)
{
	s->p++;		/* the opening quote */
	while (s->p < s->end) {
		if (*s->p == '"') {
			s->p++;
			return true;
		}
		if (*s->p == '\\') {
			if (s->end - s->p < 2 || s->p[1] < 32 || s->p[1] > 126)
				return scan_fail(s, "bad quoted pair in local part");
			s->p += 2;
		} else if (*s->p >= 0x80) {
			if (!scan_utf8(s))
				return false;
		} else if (is_qtext(*s->p))
			s->p++;
		else
			return scan_fail(s, "bad character in quoted local part");
	}
	return scan_fail(s, "unterminated quoted local part");
}

/* scan_label - one sub-domain: Let-dig [Ldh-str], or a U-label */
static bool
scan_label(struct scan *s)
{
	const unsigned char *label = s->p;
	bool ascii = true;

	while (s->p < s->end) {
		if (*s->p >= 0x80) {
			if (!scan_utf8(s))
				return false;
			ascii = false;
		} else if (is_alpha(*s->p) || is_digit(*s->p))
			s->p++;
		else if (*s->p == '-' && s->p != label)
			s->p++;
		else
			break;
	}
	if (s->p == label)
		return scan_fail(s, "bad domain");
	if (s->p[-1] == '-')
		return scan_fail(s, "domain label ends in a hyphen");
	if (ascii && s->p - label > DNS_LABEL_MAX)
		return scan_fail(s, "domain label too long");
	return true;
}

/*
 * scan_domain - Domain: sub-domain *("." sub-domain).  With root_dot, one
 * trailing dot before the closing '>' (the DNS root, "example.org.") is
 * stepped over too; the caller drops it.  Two dots are never a domain.
 */
static bool
scan_domain(struct scan *s, bool root_dot)
{
	for (;;) {
		if (!scan_label(s))
			return false;
		if (s->p == s->end || *s->p != '.')
			return true;
		s->p++;
		if (root_dot && s->p < s->end && *s->p == '>')
			return true;
	}
}

/*
 * scan_literal - address-literal "[IPv4]" or "[IPv6:...]", checked with
 * inet_pton; the canonical inet_ntop form goes to canon.
 */
static bool
scan_literal(struct scan *s, char *canon, size_t size)
{
	char text[LITERAL_MAX + 1], addr[INET6_ADDRSTRLEN];
	unsigned char bin[sizeof(struct in6_addr)];
	const unsigned char *start = ++s->p;
	size_t n;
	int r;

	while (s->p < s->end && *s->p != ']' && s->p - start < LITERAL_MAX)
		s->p++;
	if (s->p == s->end || *s->p != ']')
		return scan_fail(s, "bad address literal");
	n = (size_t)(s->p - start);
	s->p++;
	memcpy(text, start, n);
	text[n] = '\0';
	if (memchr(text, '\0', n) != NULL)
		return scan_fail(s, "bad address literal");
	if (str_ncasecmp(text, "IPv6:", 5) == 0) {
		if (inet_pton(AF_INET6, text + 5, bin) != 1 ||
		    inet_ntop(AF_INET6, bin, addr, sizeof(addr)) == NULL)
			return scan_fail(s, "bad IPv6 address literal");
		r = snprintf(canon, size, "[IPv6:%s]", addr);
	} else {
		if (inet_pton(AF_INET, text, bin) != 1 ||
		    inet_ntop(AF_INET, bin, addr, sizeof(addr)) == NULL)
			return scan_fail(s, "bad address literal");
		r = snprintf(canon, size, "[%s]", addr);
	}
	if (r < 0 || (size_t)r >= size)
		fatal("scan_literal: canonical literal does not fit");
	return true;
}

/* scan_route - A-d-l ":" (a source route), checked and then forgotten */
static bool
scan_route(struct scan *s)
{
	for (;;) {
		if (s->p == s->end || *s->p != '@')
			return scan_fail(s, "bad source route");
		s->p++;
		if (!scan_domain(s, false))
			return false;
		if (s->p < s->end && *s->p == ',') {
			s->p++;
			continue;
		}
		if (s->p < s->end && *s->p == ':') {
			s->p++;
			return true;
		}
		return scan_fail(s, "bad source route");
	}
}

/* is_dot_string - is [p, p+n) a whole Dot-string? */
static bool
is_dot_string(const char *p, size_t n)
{
	struct scan s = { (const unsigned char *)p, (const unsigned char *)p + n, false, NULL };

	return n > 0 && scan_dot_string(&s) && s.p == s.end;
}

/*
 * canon_local - the canonical local part of a checked raw one: dot-strings as
 * sent; quoted ones decoded, then unquoted if that makes a Dot-string, else
 * requoted escaping only '"' and '\'.  Never longer than raw.
 */
static void
canon_local(const char *raw, size_t n, struct smtp_addr *a)
{
	char content[SMTP_PARSE_LOCAL_MAX + 1];
	size_t i, clen = 0, o = 0;

	assert(n <= SMTP_PARSE_LOCAL_MAX);
	if (raw[0] != '"') {
		memcpy(a->local, raw, n);
		a->local[n] = '\0';
		return;
	}
	for (i = 1; i + 1 < n; i++) {
		if (raw[i] == '\\')
			i++;
		content[clen++] = raw[i];
	}
	if (is_dot_string(content, clen)) {
		memcpy(a->local, content, clen);
		a->local[clen] = '\0';
		return;
	}
	a->is_quoted = true;
	a->local[o++] = '"';
	for (i = 0; i < clen; i++) {
		if (content[i] == '"' || content[i] == '\\')
			a->local[o++] = '\\';
		a->local[o++] = content[i];
	}
	a->local[o++] = '"';
	assert(o <= n);
	a->local[o] = '\0';
}

/* set_why - report a reason if the caller wants one */
static void
set_why(const char **why_r, const char *why)
{
	if (why_r != NULL)
		*why_r = why;
}

/*
 * scan_mailbox - [A-d-l ":"] Mailbox ">" after the "<": finds the raw local
 * part and domain (which may end in the root dot); an address literal is
 * written canonical into a->domain.
 */
static bool
scan_mailbox(struct scan *s, struct smtp_addr *a, const unsigned char **local_r,
    const unsigned char **domain_r)
{
	if (s->p < s->end && *s->p == '@') {
		if (!scan_route(s))
			return false;
		if (s->utf8)
			return scan_fail(s, "non-ASCII source route");
	}
	*local_r = s->p;
	if (s->p < s->end && *s->p == '"') {
		if (!scan_quoted(s))
			return false;
	} else if (!scan_dot_string(s))
		return false;
	if (s->p == s->end || *s->p != '@')
		return scan_fail(s, "address needs a domain");
	*domain_r = ++s->p;
	if (s->p < s->end && *s->p == '[') {
		if (!scan_literal(s, a->domain, sizeof(a->domain)))
			return false;
		a->is_literal = true;
	} else if (!scan_domain(s, true))
		return false;
	if (s->p == s->end || *s->p != '>')
		return scan_fail(s, "bad character after domain");
	return true;
}

/*
 * path_scan - one path at the start of [p, end): syntax first, then limits,
 * then SMTPUTF8, and only then the copy into a, which is all zero on any
 * error.  *consumed_r covers "<...>".
 */
static enum smtp_parse_status
path_scan(const unsigned char *p, const unsigned char *end, unsigned flags,
    struct smtp_addr *a, size_t *consumed_r, const char **why_r)
{
	struct scan s = { p, end, false, NULL };
	enum smtp_parse_status st = SMTP_PARSE_SYNTAX;
	const unsigned char *local, *domain;
	size_t locallen, domainlen;

	memset(a, 0, sizeof(*a));
	*consumed_r = 0;
	if (s.p == s.end || *s.p != '<') {
		s.why = "address must be in angle brackets";
		goto fail;
	}
	s.p++;
	if (s.p < s.end && *s.p == '>') {
		if (!(flags & SMTP_PARSE_PATH_NULL_OK)) {
			s.why = "null address not allowed here";
			goto fail;
		}
		a->is_null = true;
		*consumed_r = 2;
		return SMTP_PARSE_OK;
	}
	if ((flags & SMTP_PARSE_PATH_POSTMASTER_OK) &&
	    has_prefix(s.p, s.end, "postmaster>")) {
		/* RFC 5321 4.1.1.3: the one mailbox without a domain. */
		memcpy(a->local, "postmaster", sizeof("postmaster"));
		a->is_postmaster = true;
		*consumed_r = sizeof("<postmaster>") - 1;
		return SMTP_PARSE_OK;
	}
	if (!scan_mailbox(&s, a, &local, &domain))
		goto fail;
	locallen = (size_t)(domain - 1 - local);
	domainlen = (size_t)(s.p - domain);
	if (!a->is_literal && domain[domainlen - 1] == '.')
		domainlen--;	/* the root dot: "example.org." is example.org */
	s.p++;		/* the '>' */

	st = SMTP_PARSE_TOO_LONG;
	if (s.p - p > SMTP_PARSE_PATH_MAX) {
		s.why = "address too long";
		goto fail;
	}
	if (locallen > SMTP_PARSE_LOCAL_MAX) {
		s.why = "local part too long";
		goto fail;
	}
	/* "<a@" + domain + ">" within 256 keeps the domain within 255. */
	assert(domainlen <= SMTP_PARSE_DOMAIN_MAX);
	if (s.utf8 && !(flags & SMTP_PARSE_PATH_UTF8)) {
		st = SMTP_PARSE_NEED_SMTPUTF8;
		s.why = "non-ASCII address needs SMTPUTF8";
		goto fail;
	}

	a->is_utf8 = s.utf8;
	canon_local((const char *)local, locallen, a);
	if (!a->is_literal) {
		memcpy(a->domain, domain, domainlen);
		a->domain[domainlen] = '\0';
		str_lower(a->domain);
	}
	*consumed_r = (size_t)(s.p - p);
	return SMTP_PARSE_OK;

fail:
	memset(a, 0, sizeof(*a));
	set_why(why_r, s.why);
	return st;
}

/* smtp_parse_path - exactly one path */
enum smtp_parse_status
smtp_parse_path(const char *s, size_t len, unsigned flags,
    struct smtp_addr *addr_r, const char **why_r)
{
	const unsigned char *p = (const unsigned char *)s;
	enum smtp_parse_status st;
	size_t n;

	st = path_scan(p, p + len, flags, addr_r, &n, why_r);
	if (st == SMTP_PARSE_OK && n != len) {
		memset(addr_r, 0, sizeof(*addr_r));
		set_why(why_r, "text after address");
		return SMTP_PARSE_SYNTAX;
	}
	return st;
}

/* smtp_parse_addr_format - canonical "local@domain" */
bool
smtp_parse_addr_format(const struct smtp_addr *a, char *dst, size_t size)
{
	int r;

	if (a->is_null || a->domain[0] == '\0')
		r = snprintf(dst, size, "%s", a->local);
	else
		r = snprintf(dst, size, "%s@%s", a->local, a->domain);
	return r >= 0 && (size_t)r < size;
}

/* --- ESMTP parameters ------------------------------------------------------ */

/* What a parameter handler may fill in. */
struct param_ctx {
	struct smtp_parse_mail *mail;
	struct smtp_parse_rcpt *rcpt;
	bool utf8;		/* SMTPUTF8 in effect (RCPT) */
	const char *why;
};

/* A handler gets the value after '=' (NULL when there was none). */
struct param_def {
	const char *name;
	unsigned bit;
	enum smtp_parse_status (*fn)(struct param_ctx *, const char *, size_t);
};

/* bad_param - record a reason and fail with BAD_PARAM */
static enum smtp_parse_status
bad_param(struct param_ctx *c, const char *why)
{
	c->why = why;
	return SMTP_PARSE_BAD_PARAM;
}

/*
 * xtext_check - RFC 3461 xtext: printable ASCII but '+' and '=', or "+XX"
 * with uppercase hex; with allow_utf8 also well-formed UTF-8.  The decoded
 * length goes to *decoded_r.
 */
static bool
xtext_check(const char *v, size_t vlen, bool allow_utf8, size_t *decoded_r)
{
	const unsigned char *p = (const unsigned char *)v, *end = p + vlen;
	size_t n;

	*decoded_r = 0;
	while (p < end) {
		if (*p == '+') {
			if (end - p < 3 || !is_xhex(p[1]) || !is_xhex(p[2]))
				return false;
			p += 3;
		} else if (*p >= 0x80) {
			if (!allow_utf8 || (n = utf8_len(p, end)) == 0)
				return false;
			p += n;
		} else if (*p >= 33 && *p <= 126 && *p != '=')
			p++;
		else
			return false;
		(*decoded_r)++;
	}
	return true;
}

/* store_value - copy a value into a fixed result field */
static bool
store_value(char *dst, size_t size, const char *v, size_t vlen)
{
	if (vlen >= size)
		return false;
	memcpy(dst, v, vlen);
	dst[vlen] = '\0';
	return true;
}

/* param_size - SIZE=digits, RFC 1870 */
static enum smtp_parse_status
param_size(struct param_ctx *c, const char *v, size_t vlen)
{
	uint64_t n = 0;
	size_t i;

	if (v == NULL || vlen == 0)
		return bad_param(c, "SIZE needs a number");
	for (i = 0; i < vlen; i++) {
		if (!is_digit((unsigned char)v[i]))
			return bad_param(c, "SIZE needs a number");
		if (n > (UINT64_MAX - (uint64_t)(v[i] - '0')) / 10)
			return bad_param(c, "SIZE out of range");
		n = n * 10 + (uint64_t)(v[i] - '0');
	}
	c->mail->size = n;
	return SMTP_PARSE_OK;
}

/* param_body - BODY=7BIT|8BITMIME|BINARYMIME */
static enum smtp_parse_status
param_body(struct param_ctx *c, const char *v, size_t vlen)
{
	if (v != NULL && equals_word(v, vlen, "7BIT"))
		c->mail->body = SMTP_PARSE_BODY_7BIT;
	else if (v != NULL && equals_word(v, vlen, "8BITMIME"))
		c->mail->body = SMTP_PARSE_BODY_8BITMIME;
	else if (v != NULL && equals_word(v, vlen, "BINARYMIME"))
		c->mail->body = SMTP_PARSE_BODY_BINARYMIME;
	else
		return bad_param(c, "bad BODY value");
	return SMTP_PARSE_OK;
}

/* param_flag - keywords that take no value: SMTPUTF8, REQUIRETLS */
static enum smtp_parse_status
param_flag(struct param_ctx *c, const char *v, size_t vlen)
{
	if (v != NULL)
		return bad_param(c, "parameter takes no value");
	return SMTP_PARSE_OK;
}

/* param_ret - RET=FULL|HDRS */
static enum smtp_parse_status
param_ret(struct param_ctx *c, const char *v, size_t vlen)
{
	if (v != NULL && equals_word(v, vlen, "FULL"))
		c->mail->ret = SMTP_PARSE_RET_FULL;
	else if (v != NULL && equals_word(v, vlen, "HDRS"))
		c->mail->ret = SMTP_PARSE_RET_HDRS;
	else
		return bad_param(c, "bad RET value");
	return SMTP_PARSE_OK;
}

/* param_envid - ENVID=xtext, at most 100 octets decoded */
static enum smtp_parse_status
param_envid(struct param_ctx *c, const char *v, size_t vlen)
{
	size_t n;

	if (v == NULL || !xtext_check(v, vlen, false, &n))
		return bad_param(c, "bad ENVID value");
	if (n > SMTP_PARSE_ENVID_MAX ||
	    !store_value(c->mail->envid, sizeof(c->mail->envid), v, vlen))
		return bad_param(c, "ENVID too long");
	return SMTP_PARSE_OK;
}

/* param_auth - AUTH=xtext or AUTH=<>, RFC 4954 5 */
static enum smtp_parse_status
param_auth(struct param_ctx *c, const char *v, size_t vlen)
{
	size_t n;

	if (v == NULL || (!equals_word(v, vlen, "<>") && !xtext_check(v, vlen, false, &n)))
		return bad_param(c, "bad AUTH value");
	if (!store_value(c->mail->auth, sizeof(c->mail->auth), v, vlen))
		return bad_param(c, "AUTH value too long");
	return SMTP_PARSE_OK;
}

/* param_notify - NOTIFY=NEVER or a list of SUCCESS, FAILURE, DELAY */
static enum smtp_parse_status
param_notify(struct param_ctx *c, const char *v, size_t vlen)
{
	static const struct {
		const char *name;
		unsigned bit;
	} words[] = {
		{ "NEVER", SMTP_PARSE_NOTIFY_NEVER },
		{ "SUCCESS", SMTP_PARSE_NOTIFY_SUCCESS },
		{ "FAILURE", SMTP_PARSE_NOTIFY_FAILURE },
		{ "DELAY", SMTP_PARSE_NOTIFY_DELAY },
	};
	const char *p = v, *end, *comma;
	unsigned notify = 0;
	size_t i;

	if (v == NULL)
		return bad_param(c, "bad NOTIFY value");
	end = v + vlen;
	for (;;) {
		if ((comma = memchr(p, ',', (size_t)(end - p))) == NULL)
			comma = end;
		for (i = 0; i < ARRAY_SIZE(words); i++)
			if (equals_word(p, (size_t)(comma - p), words[i].name))
				break;
		if (i == ARRAY_SIZE(words) || (notify & words[i].bit))
			return bad_param(c, "bad NOTIFY value");
		notify |= words[i].bit;
		if (comma == end)
			break;
		p = comma + 1;
	}
	if ((notify & SMTP_PARSE_NOTIFY_NEVER) && notify != SMTP_PARSE_NOTIFY_NEVER)
		return bad_param(c, "NOTIFY=NEVER cannot be combined");
	c->rcpt->notify = notify;
	return SMTP_PARSE_OK;
}

/*
 * param_orcpt - ORCPT=addr-type;xtext (RFC 3461 4.2).  A "utf-8" address
 * (RFC 6533) may carry raw UTF-8 when SMTPUTF8 is in effect.
 */
static enum smtp_parse_status
param_orcpt(struct param_ctx *c, const char *v, size_t vlen)
{
	const char *semi;
	size_t i, typelen, n;
	bool utf8;

	if (v == NULL || (semi = memchr(v, ';', vlen)) == NULL)
		return bad_param(c, "bad ORCPT value");
	typelen = (size_t)(semi - v);
	if (typelen == 0)
		return bad_param(c, "bad ORCPT address type");
	for (i = 0; i < typelen; i++)
		if (!is_atext((unsigned char)v[i]))
			return bad_param(c, "bad ORCPT address type");
	utf8 = c->utf8 && equals_word(v, typelen, "utf-8");
	if (vlen - typelen - 1 == 0 ||
	    !xtext_check(semi + 1, vlen - typelen - 1, utf8, &n))
		return bad_param(c, "bad ORCPT address");
	if (!store_value(c->rcpt->orcpt, sizeof(c->rcpt->orcpt), v, vlen))
		return bad_param(c, "ORCPT too long");
	return SMTP_PARSE_OK;
}

static const struct param_def mail_params[] = {
	{ "SIZE", SMTP_PARSE_PARAM_SIZE, param_size },
	{ "BODY", SMTP_PARSE_PARAM_BODY, param_body },
	{ "SMTPUTF8", SMTP_PARSE_PARAM_SMTPUTF8, param_flag },
	{ "RET", SMTP_PARSE_PARAM_RET, param_ret },
	{ "ENVID", SMTP_PARSE_PARAM_ENVID, param_envid },
	{ "AUTH", SMTP_PARSE_PARAM_AUTH, param_auth },
	{ "REQUIRETLS", SMTP_PARSE_PARAM_REQUIRETLS, param_flag },
};

static const struct param_def rcpt_params[] = {
	{ "NOTIFY", SMTP_PARSE_PARAM_NOTIFY, param_notify },
	{ "ORCPT", SMTP_PARSE_PARAM_ORCPT, param_orcpt },
};

/* keyword_ok - esmtp-keyword: (ALPHA / DIGIT) *(ALPHA / DIGIT / "-") */
static bool
keyword_ok(const char *k, size_t n)
{
	size_t i;

	if (n == 0 || k[0] == '-')
		return false;
	for (i = 0; i < n; i++)
		if (!is_alpha((unsigned char)k[i]) && !is_digit((unsigned char)k[i]) &&
		    k[i] != '-')
			return false;
	return true;
}

/* value_ok - esmtp-value: 1*(%d33-60 / %d62-126), or UTF-8 (RFC 6531) */
static bool
value_ok(const char *v, size_t n)
{
	const unsigned char *p = (const unsigned char *)v, *end = p + n;
	size_t k;

	if (n == 0)
		return false;
	while (p < end) {
		if (*p >= 0x80) {
			if ((k = utf8_len(p, end)) == 0)
				return false;
			p += k;
		} else if (*p >= 33 && *p <= 126 && *p != '=')
			p++;
		else
			return false;
	}
	return true;
}

/*
 * params_parse - SP-separated keyword[=value] after a path: each checked for
 * form, looked up (unknown or not allowed: UNKNOWN_PARAM), refused if
 * repeated, then handed to its handler.
 */
static enum smtp_parse_status
params_parse(const char *p, const char *end, const struct param_def *defs,
    size_t ndefs, unsigned allowed, unsigned *present, struct param_ctx *c)
{
	const char *kw, *v;
	size_t kwlen, vlen, i;
	enum smtp_parse_status st;

	if (p < end && *p != ' ') {
		c->why = "bad character after address";
		return SMTP_PARSE_SYNTAX;
	}
	for (;;) {
		while (p < end && *p == ' ')
			p++;
		if (p == end)
			return SMTP_PARSE_OK;
		kw = p;
		while (p < end && *p != ' ' && *p != '=')
			p++;
		kwlen = (size_t)(p - kw);
		v = NULL;
		vlen = 0;
		if (p < end && *p == '=') {
			v = ++p;
			while (p < end && *p != ' ')
				p++;
			vlen = (size_t)(p - v);
		}
		if (!keyword_ok(kw, kwlen) || (v != NULL && !value_ok(v, vlen)))
			return bad_param(c, "malformed parameter");
		for (i = 0; i < ndefs; i++)
			if (equals_word(kw, kwlen, defs[i].name))
				break;
		if (i == ndefs || !(allowed & defs[i].bit)) {
			c->why = "unsupported parameter";
			return SMTP_PARSE_UNKNOWN_PARAM;
		}
		if (*present & defs[i].bit)
			return bad_param(c, "repeated parameter");
		if ((st = defs[i].fn(c, v, vlen)) != SMTP_PARSE_OK)
			return st;
		*present |= defs[i].bit;
	}
}

/* skip_sp - step over spaces */
static const char *
skip_sp(const char *p, const char *end)
{
	while (p < end && *p == ' ')
		p++;
	return p;
}

/* smtp_parse_mail - MAIL FROM:<path> [params] */
enum smtp_parse_status
smtp_parse_mail(const char *args, size_t len, unsigned allowed,
    struct smtp_parse_mail *mail_r)
{
	struct param_ctx c = { mail_r, NULL, false, NULL };
	const char *p = args, *end = args + len;
	enum smtp_parse_status st;
	size_t n;

	memset(mail_r, 0, sizeof(*mail_r));
	if (!has_prefix((const unsigned char *)p, (const unsigned char *)end, "FROM:")) {
		mail_r->why = "expected FROM:<address>";
		return SMTP_PARSE_SYNTAX;
	}
	p = skip_sp(p + 5, end);
	st = path_scan((const unsigned char *)p, (const unsigned char *)end,
	    SMTP_PARSE_PATH_NULL_OK | SMTP_PARSE_PATH_UTF8, &mail_r->from, &n,
	    &mail_r->why);
	if (st != SMTP_PARSE_OK)
		return st;
	st = params_parse(p + n, end, mail_params, ARRAY_SIZE(mail_params),
	    allowed, &mail_r->params, &c);
	if (st != SMTP_PARSE_OK) {
		mail_r->why = c.why;
		return st;
	}
	if (mail_r->from.is_utf8 && !(mail_r->params & SMTP_PARSE_PARAM_SMTPUTF8)) {
		mail_r->why = "non-ASCII address needs SMTPUTF8";
		return SMTP_PARSE_NEED_SMTPUTF8;
	}
	return SMTP_PARSE_OK;
}

/* smtp_parse_rcpt - RCPT TO:<path> [params] */
enum smtp_parse_status
smtp_parse_rcpt(const char *args, size_t len, unsigned allowed, bool utf8,
    struct smtp_parse_rcpt *rcpt_r)
{
	struct param_ctx c = { NULL, rcpt_r, utf8, NULL };
	const char *p = args, *end = args + len;
	enum smtp_parse_status st;
	unsigned flags = SMTP_PARSE_PATH_POSTMASTER_OK;
	size_t n;

	memset(rcpt_r, 0, sizeof(*rcpt_r));
	if (!has_prefix((const unsigned char *)p, (const unsigned char *)end, "TO:")) {
		rcpt_r->why = "expected TO:<address>";
		return SMTP_PARSE_SYNTAX;
	}
	p = skip_sp(p + 3, end);
	if (utf8)
		flags |= SMTP_PARSE_PATH_UTF8;
	st = path_scan((const unsigned char *)p, (const unsigned char *)end,
	    flags, &rcpt_r->to, &n, &rcpt_r->why);
	if (st != SMTP_PARSE_OK)
		return st;
	st = params_parse(p + n, end, rcpt_params, ARRAY_SIZE(rcpt_params),
	    allowed, &rcpt_r->params, &c);
	if (st != SMTP_PARSE_OK)
		rcpt_r->why = c.why;
	return st;
}

/* sep - append the separator before all but the first parameter */
static void
sep(struct buf *out, size_t start)
{
	if (out->len > start)
		buf_putc(out, ' ');
}

/* smtp_parse_mail_params - normalized MAIL parameters for a backend */
void
smtp_parse_mail_params(const struct smtp_parse_mail *m, struct buf *out)
{
	static const char *const bodies[] = {
		[SMTP_PARSE_BODY_7BIT] = "7BIT",
		[SMTP_PARSE_BODY_8BITMIME] = "8BITMIME",
		[SMTP_PARSE_BODY_BINARYMIME] = "BINARYMIME",
	};
	size_t start = out->len;

	if (m->params & SMTP_PARSE_PARAM_SIZE)
		buf_printf(out, "SIZE=%llu", (unsigned long long)m->size);
	if (m->params & SMTP_PARSE_PARAM_BODY) {
		sep(out, start);
		buf_printf(out, "BODY=%s", bodies[m->body]);
	}
	if (m->params & SMTP_PARSE_PARAM_RET) {
		sep(out, start);
		buf_puts(out, m->ret == SMTP_PARSE_RET_FULL ? "RET=FULL" : "RET=HDRS");
	}
	if (m->params & SMTP_PARSE_PARAM_ENVID) {
		sep(out, start);
		buf_printf(out, "ENVID=%s", m->envid);
	}
	if (m->params & SMTP_PARSE_PARAM_AUTH) {
		sep(out, start);
		buf_printf(out, "AUTH=%s", m->auth);
	}
	if (m->params & SMTP_PARSE_PARAM_SMTPUTF8) {
		sep(out, start);
		buf_puts(out, "SMTPUTF8");
	}
	if (m->params & SMTP_PARSE_PARAM_REQUIRETLS) {
		sep(out, start);
		buf_puts(out, "REQUIRETLS");
	}
}

/* smtp_parse_rcpt_params - normalized RCPT parameters for a backend */
void
smtp_parse_rcpt_params(const struct smtp_parse_rcpt *r, struct buf *out)
{
	size_t start = out->len;
	const char *comma = "";

	if (r->params & SMTP_PARSE_PARAM_NOTIFY) {
		buf_puts(out, "NOTIFY=");
		if (r->notify & SMTP_PARSE_NOTIFY_NEVER)
			buf_puts(out, "NEVER");
		if (r->notify & SMTP_PARSE_NOTIFY_SUCCESS) {
			buf_puts(out, "SUCCESS");
			comma = ",";
		}
		if (r->notify & SMTP_PARSE_NOTIFY_FAILURE) {
			buf_printf(out, "%sFAILURE", comma);
			comma = ",";
		}
		if (r->notify & SMTP_PARSE_NOTIFY_DELAY)
			buf_printf(out, "%sDELAY", comma);
	}
	if (r->params & SMTP_PARSE_PARAM_ORCPT) {
		sep(out, start);
		buf_printf(out, "ORCPT=%s", r->orcpt);
	}
}

/* --- HELO/EHLO, BDAT, AUTH ------------------------------------------------- */

/* smtp_parse_helo - one printable token; note whether it is a proper name */
enum smtp_parse_status
smtp_parse_helo(const char *args, size_t len, struct smtp_parse_helo *helo_r)
{
	const unsigned char *p = (const unsigned char *)args, *end = p + len;
	struct scan s = { p, end, false, NULL };
	char literal[SMTP_PARSE_DOMAIN_MAX + 1];
	size_t n;

	memset(helo_r, 0, sizeof(*helo_r));
	helo_r->why = "HELO/EHLO needs one host name";
	if (len == 0 || len > SMTP_PARSE_HELO_MAX)
		return SMTP_PARSE_SYNTAX;
	while (p < end) {
		if (*p >= 0x80) {
			if ((n = utf8_len(p, end)) == 0)
				return SMTP_PARSE_SYNTAX;
			p += n;
		} else if (*p >= 33 && *p <= 126)
			p++;
		else
			return SMTP_PARSE_SYNTAX;
	}
	memcpy(helo_r->name, args, len);
	helo_r->name[len] = '\0';
	helo_r->why = NULL;
	if (args[0] == '[')
		helo_r->is_literal = scan_literal(&s, literal, sizeof(literal)) &&
		    s.p == s.end;
	else
		helo_r->is_domain = scan_domain(&s, false) && s.p == s.end;
	return SMTP_PARSE_OK;
}

/* smtp_parse_bdat - "<chunk-size> [LAST]" */
enum smtp_parse_status
smtp_parse_bdat(const char *args, size_t len, uint64_t *size_r, bool *last_r)
{
	const char *p = args, *end = args + len;
	uint64_t n = 0;

	*size_r = 0;
	*last_r = false;
	if (p == end || !is_digit((unsigned char)*p))
		return SMTP_PARSE_SYNTAX;
	for (; p < end && is_digit((unsigned char)*p); p++) {
		if (n > (UINT64_MAX - (uint64_t)(*p - '0')) / 10)
			return SMTP_PARSE_SYNTAX;
		n = n * 10 + (uint64_t)(*p - '0');
	}
	if (p < end) {
		if (*p != ' ')
			return SMTP_PARSE_SYNTAX;
		p = skip_sp(p, end);
		if (!has_prefix((const unsigned char *)p, (const unsigned char *)end, "LAST"))
			return SMTP_PARSE_SYNTAX;
		if (skip_sp(p + 4, end) != end)
			return SMTP_PARSE_SYNTAX;
		*last_r = true;
	}
	*size_r = n;
	return SMTP_PARSE_OK;
}

/* base64_ok - RFC 4648 base64 with padding, or "=" for an empty response */
static bool
base64_ok(const char *v, size_t n)
{
	size_t i, pad = 0;
	unsigned char c;

	if (n == 1 && v[0] == '=')
		return true;
	if (n == 0 || n % 4 != 0)
		return false;
	for (i = 0; i < n; i++) {
		c = (unsigned char)v[i];
		if (c == '=') {
			if (i < n - 2)
				return false;
			pad++;
		} else if (pad > 0 || !(is_alpha(c) || is_digit(c) || c == '+' || c == '/'))
			return false;
	}
	return true;
}

/* smtp_parse_auth - "MECHANISM [initial-response]" */
enum smtp_parse_status
smtp_parse_auth(const char *args, size_t len, struct smtp_parse_auth *auth_r)
{
	const char *p = args, *end = args + len;
	size_t n = 0;
	unsigned char c;

	memset(auth_r, 0, sizeof(*auth_r));
	for (; p < end && *p != ' '; p++, n++) {
		c = (unsigned char)*p;
		if (n == SMTP_PARSE_MECH_MAX ||
		    !(is_alpha(c) || is_digit(c) || c == '-' || c == '_')) {
			auth_r->why = "bad SASL mechanism name";
			return SMTP_PARSE_SYNTAX;
		}
		auth_r->mech[n] = to_upper(c);
	}
	if (n == 0) {
		auth_r->why = "bad SASL mechanism name";
		return SMTP_PARSE_SYNTAX;
	}
	p = skip_sp(p, end);
	if (p == end)
		return SMTP_PARSE_OK;
	n = (size_t)(end - p);
	while (n > 0 && p[n - 1] == ' ')
		n--;
	if (!base64_ok(p, n)) {
		memset(auth_r, 0, sizeof(*auth_r));
		auth_r->why = "bad initial response";
		return SMTP_PARSE_SYNTAX;
	}
	auth_r->initial = p;
	auth_r->initiallen = n;
	return SMTP_PARSE_OK;
}
