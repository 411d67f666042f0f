/*
 * xforward.c - XFORWARD commands for a backend that offers them
 * (Postfix's XFORWARD_README).  Values are xtext (RFC 3461); an unknown
 * value is [UNAVAILABLE]; an IPv6 address carries the "IPv6:" prefix;
 * SOURCE is always REMOTE (every client of portier came over the network).
 * The attributes are spread over as many commands as XFORWARD_LINE_MAX
 * needs; a value too long for any command goes as [UNAVAILABLE].
 *
 * Must never: send an attribute the backend did not list, or a command
 * line longer than XFORWARD_LINE_MAX.
 */
#include "config.h"

#include <stdio.h>
#include <string.h>

#include "util.h"
#include "xforward.h"

#define XF_UNAVAILABLE	"[UNAVAILABLE]"

static const struct {
	const char *word;
	unsigned bit;
} xforward_words[] = {
	/* the order the commands carry them in */
	{ "NAME", XFORWARD_NAME },
	{ "ADDR", XFORWARD_ADDR },
	{ "PORT", XFORWARD_PORT },
	{ "PROTO", XFORWARD_PROTO },
	{ "HELO", XFORWARD_HELO },
	{ "IDENT", XFORWARD_IDENT },
	{ "SOURCE", XFORWARD_SOURCE },
};

#define NWORDS	(sizeof(xforward_words) / sizeof(xforward_words[0]))

/* xforward_attrs - the attributes listed after "XFORWARD" in an EHLO line (len octets at params) */
unsigned
xforward_attrs(const char *params, size_t len)
{
	const char *p = params, *end = params + len;
	unsigned attrs = 0;
	size_t i, n;

	while (p < end) {
		while (p < end && *p == ' ')
			p++;
		for (n = 0; p + n < end && p[n] != ' '; n++)
			continue;
		for (i = 0; i < NWORDS; i++)
			if (n == strlen(xforward_words[i].word) &&
			    str_ncasecmp(p, xforward_words[i].word, n) == 0)
				attrs |= xforward_words[i].bit;
		p += n;
	}
	return attrs;
}

/* xtext_put - s as RFC 3461 xtext: '+', '=' and all but printable ASCII as "+HH" */
static void
xtext_put(struct buf *b, const char *s)
{
	static const char hex[] = "0123456789ABCDEF";
	const unsigned char *p;

	for (p = (const unsigned char *)s; *p; p++) {
		if (*p < 33 || *p > 126 || *p == '+' || *p == '=') {
			buf_putc(b, '+');
			buf_putc(b, hex[*p >> 4]);
			buf_putc(b, hex[*p & 15]);
		} else {
			buf_putc(b, (char)*p);
		}
	}
}

/* xforward_value - attribute bit's "NAME=value" for cl into v (reset first) */
static void
xforward_value(unsigned bit, const char *word, const struct xforward_client *cl, struct buf *v)
{
	const char *s = NULL;
	char port[16];

	buf_reset(v);
	buf_printf(v, "%s=", word);
	switch (bit) {
	case XFORWARD_NAME:
		if (cl->name && strcmp(cl->name, "unknown") != 0)
			s = cl->name;
		break;
	case XFORWARD_ADDR:
		if (cl->addr && *cl->addr && strcmp(cl->addr, "unknown") != 0) {
			if (strchr(cl->addr, ':'))
				buf_puts(v, "IPv6:");
			s = cl->addr;
		}
		break;
	case XFORWARD_PORT:
		if (cl->port) {
			snprintf(port, sizeof(port), "%u", cl->port);
			s = port;
		}
		break;
	case XFORWARD_PROTO:
		s = cl->esmtp ? "ESMTP" : "SMTP";
		break;
	case XFORWARD_HELO:
		s = cl->helo;
		break;
	case XFORWARD_IDENT:
		s = cl->ident;
		break;
	case XFORWARD_SOURCE:
		s = "REMOTE";
		break;
	}
	if (s == NULL || *s == '\0') {
		buf_reset(v);
		buf_printf(v, "%s=%s", word, XF_UNAVAILABLE);
		return;
	}
	xtext_put(v, s);
	/* "XFORWARD " + value + CRLF must fit one command */
	if (v->len + 11 > XFORWARD_LINE_MAX) {
		buf_reset(v);
		buf_printf(v, "%s=%s", word, XF_UNAVAILABLE);
	}
}

/*
 * xforward_cmds - append to out the XFORWARD commands (CRLF-terminated)
 * passing cl's facts for the attributes in attrs; returns how many
 */
size_t
xforward_cmds(unsigned attrs, const struct xforward_client *cl, struct buf *out)
{
	struct buf v;
	size_t i, ncmds = 0, linelen = 0;

	buf_init(&v);
	for (i = 0; i < NWORDS; i++) {
		if (!(attrs & xforward_words[i].bit))
			continue;
		xforward_value(xforward_words[i].bit, xforward_words[i].word, cl, &v);
		if (linelen > 0 && linelen + 1 + v.len + 2 > XFORWARD_LINE_MAX) {
			buf_puts(out, "\r\n");
			linelen = 0;
		}
		if (linelen == 0) {
			buf_puts(out, "XFORWARD");
			linelen = 8;
			ncmds++;
		}
		buf_putc(out, ' ');
		buf_append(out, v.data, v.len);
		linelen += 1 + v.len;
	}
	if (linelen > 0)
		buf_puts(out, "\r\n");
	buf_free(&v);
	return ncmds;
}
