/*
 * milter_proto.c - the milter protocol's packets, MTA side (see
 * milter_proto.h).  Everything a milter sends is checked here before
 * filters/milter.c acts on it: lengths, NULs, reply codes.
 */
#include "config.h"

#include <stdlib.h>
#include <string.h>

#include "util.h"
#include "milter_proto.h"

/* milter_get32 - a 32-bit integer in network order */
static uint32_t
milter_get32(const unsigned char *p)
{
	return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

/* milter_set32 - store a 32-bit integer in network order */
static void
milter_set32(unsigned char *p, uint32_t v)
{
	p[0] = (unsigned char)(v >> 24);
	p[1] = (unsigned char)(v >> 16);
	p[2] = (unsigned char)(v >> 8);
	p[3] = (unsigned char)v;
}

/* milter_frame - the next packet (see milter_proto.h) */
enum milter_frame_status
milter_frame(const unsigned char *p, size_t n, size_t max, char *cmd,
    const unsigned char **data, size_t *dlen, size_t *used, const char **why)
{
	uint32_t len;

	if (n < 4)
		return MILTER_FRAME_MORE;
	len = milter_get32(p);
	if (len == 0) {
		*why = "packet of length 0";
		return MILTER_FRAME_BAD;
	}
	if (len > max) {
		*why = "packet longer than the limit";
		return MILTER_FRAME_BAD;
	}
	if (n - 4 < len)
		return MILTER_FRAME_MORE;
	*cmd = (char)p[4];
	*data = p + 5;
	*dlen = len - 1;
	*used = 4 + (size_t)len;
	return MILTER_FRAME_OK;
}

/* milter_put_head - length and command */
void
milter_put_head(unsigned char head[5], char cmd, size_t len)
{
	milter_set32(head, (uint32_t)len + 1);
	head[4] = (unsigned char)cmd;
}

/* milter_put - one packet */
void
milter_put(struct buf *out, char cmd, const void *data, size_t len)
{
	unsigned char head[5];

	milter_put_head(head, cmd, len);
	buf_append(out, head, sizeof(head));
	if (len > 0)
		buf_append(out, data, len);
}

/* milter_put_optneg - version, actions, protocol */
void
milter_put_optneg(struct buf *out, uint32_t actions, uint32_t protocol)
{
	unsigned char d[12];

	milter_set32(d, MILTER_VERSION);
	milter_set32(d + 4, actions);
	milter_set32(d + 8, protocol);
	milter_put(out, MILTER_C_OPTNEG, d, sizeof(d));
}

/* milter_put_strings - cmd and n NUL-terminated strings */
void
milter_put_strings(struct buf *out, char cmd, const char *const *strs, size_t n)
{
	unsigned char head[5];
	size_t i, len = 0;

	for (i = 0; i < n; i++)
		len += strlen(strs[i]) + 1;
	milter_put_head(head, cmd, len);
	buf_append(out, head, sizeof(head));
	for (i = 0; i < n; i++)
		buf_append(out, strs[i], strlen(strs[i]) + 1);
}

/* milter_put_connect - CONNECT */
void
milter_put_connect(struct buf *out, const char *host, char family, unsigned port,
    const char *addr)
{
	unsigned char head[5], pb[2];
	size_t len = strlen(host) + 2;

	if (family != 'U')
		len += 2 + strlen(addr) + 1;
	milter_put_head(head, MILTER_C_CONNECT, len);
	buf_append(out, head, sizeof(head));
	buf_append(out, host, strlen(host) + 1);
	buf_putc(out, family);
	if (family == 'U')
		return;
	pb[0] = (unsigned char)(port >> 8);
	pb[1] = (unsigned char)port;
	buf_append(out, pb, 2);
	buf_append(out, addr, strlen(addr) + 1);
}

/* milter_put_args - "<addr>" and each ESMTP parameter */
void
milter_put_args(struct buf *out, char cmd, const char *addr, const char *params)
{
	unsigned char head[5];
	const char *p, *e;
	size_t len = strlen(addr) + 3;

	for (p = params; *p != '\0'; p = e) {
		while (*p == ' ')
			p++;
		if (*p == '\0')
			break;
		for (e = p; *e != '\0' && *e != ' '; e++)
			;
		len += (size_t)(e - p) + 1;
	}
	milter_put_head(head, cmd, len);
	buf_append(out, head, sizeof(head));
	buf_putc(out, '<');
	buf_puts(out, addr);
	buf_putc(out, '>');
	buf_putc(out, '\0');
	for (p = params; *p != '\0'; p = e) {
		while (*p == ' ')
			p++;
		if (*p == '\0')
			break;
		for (e = p; *e != '\0' && *e != ' '; e++)
			;
		buf_append(out, p, (size_t)(e - p));
		buf_putc(out, '\0');
	}
}

/* ---- what a milter sends ---- */

/* milter_neg_clear - free the symbol lists */
void
milter_neg_clear(struct milter_neg *neg)
{
	size_t i;

	for (i = 0; i < MILTER_M_STAGES; i++) {
		free(neg->symlist[i]);
		neg->symlist[i] = NULL;
	}
}

/* milter_macro_names_ok - a symbol list: names of printable ASCII, space-separated */
static bool
milter_macro_names_ok(const char *s)
{
	for (; *s != '\0'; s++)
		if ((unsigned char)*s < 0x20 || (unsigned char)*s > 0x7e)
			return false;
	return true;
}

/* milter_parse_neg - the negotiation reply (see milter_proto.h) */
bool
milter_parse_neg(const unsigned char *d, size_t n, uint32_t offer_actions,
    uint32_t offer_protocol, struct milter_neg *neg, const char **why)
{
	const unsigned char *end = d + n, *nul;
	uint32_t stage;

	memset(neg, 0, sizeof(*neg));
	if (n < 12) {
		*why = "negotiation reply too short";
		return false;
	}
	neg->version = milter_get32(d);
	neg->actions = milter_get32(d + 4);
	neg->protocol = milter_get32(d + 8);
	if (neg->version < MILTER_VERSION_MIN || neg->version > MILTER_VERSION) {
		*why = "protocol version not 2 to 6";
		return false;
	}
	if ((neg->actions & ~offer_actions) != 0) {
		*why = "milter asks for actions not offered";
		return false;
	}
	if ((neg->protocol & ~offer_protocol) != 0) {
		*why = "milter asks for protocol steps not offered";
		return false;
	}
	if (neg->version <= 2)
		neg->protocol |= MILTER_P_NOUNKNOWN;
	if (neg->version <= 3)
		neg->protocol |= MILTER_P_NODATA;
	for (d += 12; d < end; d = nul + 1) {
		if (end - d < 5 || (nul = memchr(d + 4, '\0', (size_t)(end - d - 4))) == NULL) {
			*why = "malformed symbol list";
			milter_neg_clear(neg);
			return false;
		}
		stage = milter_get32(d);
		if (stage >= MILTER_M_STAGES || neg->symlist[stage] != NULL ||
		    !milter_macro_names_ok((const char *)d + 4)) {
			*why = "malformed symbol list";
			milter_neg_clear(neg);
			return false;
		}
		neg->symlist[stage] = xstrdup((const char *)d + 4);
	}
	return true;
}

/*
 * milter_strings - split d into want NUL-terminated strings; the last may
 * be followed by more (ESMTP arguments), counted in *extra.  false when a
 * string lacks its NUL.
 */
static bool
milter_strings(const unsigned char *d, size_t n, const char **out, size_t want, size_t *extra)
{
	const unsigned char *end = d + n, *nul;
	size_t i;

	for (i = 0; i < want; i++, d = nul + 1) {
		if (d >= end || (nul = memchr(d, '\0', (size_t)(end - d))) == NULL)
			return false;
		out[i] = (const char *)d;
	}
	*extra = 0;
	for (; d < end; d = nul + 1) {
		if ((nul = memchr(d, '\0', (size_t)(end - d))) == NULL)
			return false;
		(*extra)++;
	}
	return true;
}

/* milter_args - the strings after the first (ESMTP arguments) into m->argsbuf, space-separated */
static bool
milter_args(const unsigned char *d, size_t n, struct milter_msg *m)
{
	const char *p = m->value + strlen(m->value) + 1, *end = (const char *)d + n;
	size_t len = 0, l;

	for (; p < end; p += l + 1) {
		l = strlen(p);
		if (l == 0)
			continue;
		if (memchr(p, ' ', l) != NULL || len + l + 2 > sizeof(m->argsbuf))
			return false;
		if (len > 0)
			m->argsbuf[len++] = ' ';
		memcpy(m->argsbuf + len, p, l);
		len += l;
	}
	m->argsbuf[len] = '\0';
	m->args = m->argsbuf;
	return true;
}

/* milter_parse_msg - one reply packet (see milter_proto.h) */
bool
milter_parse_msg(char cmd, const unsigned char *d, size_t n, struct milter_msg *m,
    const char **why)
{
	const char *s[2];
	size_t extra;

	memset(m, 0, sizeof(*m));
	m->cmd = cmd;
	m->args = "";
	*why = "malformed reply";
	switch (cmd) {
	case 'c': m->kind = MILTER_R_CONTINUE; return true;
	case 'a': m->kind = MILTER_R_ACCEPT; return true;
	case 'r': m->kind = MILTER_R_REJECT; return true;
	case 't': m->kind = MILTER_R_TEMPFAIL; return true;
	case 'd': m->kind = MILTER_R_DISCARD; return true;
	case 's': m->kind = MILTER_R_SKIP; return true;
	case 'f': m->kind = MILTER_R_CONN_FAIL; return true;
	case '4': m->kind = MILTER_R_SHUTDOWN; return true;
	case 'p': m->kind = MILTER_R_PROGRESS; return true;
	case 'y':
		m->kind = MILTER_R_REPLYCODE;
		if (!milter_strings(d, n, s, 1, &extra) || extra != 0)
			return false;
		return milter_parse_replycode(s[0], &m->reply, why);
	case 'q':
		m->kind = MILTER_R_QUARANTINE;
		if (!milter_strings(d, n, s, 1, &extra) || extra != 0)
			return false;
		m->value = s[0];
		return true;
	case 'h':
		m->kind = MILTER_R_ADDHEADER;
		break;
	case 'i':
	case 'm':
		m->kind = cmd == 'i' ? MILTER_R_INSHEADER : MILTER_R_CHGHEADER;
		if (n < 4)
			return false;
		m->index = milter_get32(d);
		d += 4;
		n -= 4;
		break;
	case '+':
	case '-':
		m->kind = cmd == '+' ? MILTER_R_ADDRCPT : MILTER_R_DELRCPT;
		if (!milter_strings(d, n, s, 1, &extra) || extra != 0 || s[0][0] == '\0')
			return false;
		m->value = s[0];
		return true;
	case '2':
	case 'e':
		m->kind = cmd == '2' ? MILTER_R_ADDRCPT_PAR : MILTER_R_CHGFROM;
		if (!milter_strings(d, n, s, 1, &extra) || (cmd == '2' && s[0][0] == '\0'))
			return false;
		m->value = s[0];
		if (!milter_args(d, n, m)) {
			*why = "malformed ESMTP arguments";
			return false;
		}
		return true;
	case 'b':
		m->kind = MILTER_R_REPLBODY;
		m->body = (const char *)d;
		m->body_len = n;
		return true;
	default:
		*why = "unknown reply command";
		return false;
	}
	/* header: name, value */
	if (!milter_strings(d, n, s, 2, &extra) || extra != 0 || s[0][0] == '\0')
		return false;
	for (const char *p = s[0]; *p != '\0'; p++) {
		if ((unsigned char)*p <= 0x20 || (unsigned char)*p > 0x7e || *p == ':') {
			*why = "malformed header name";
			return false;
		}
	}
	m->name = s[0];
	m->value = s[1];
	return true;
}

/* milter_reply_line - "NNN" and '-' or ' ' or end at s; the code, or -1 */
static int
milter_reply_line(const char *s, char *sep)
{
	if (s[0] < '0' || s[0] > '9' || s[1] < '0' || s[1] > '9' || s[2] < '0' || s[2] > '9')
		return -1;
	if (s[3] != ' ' && s[3] != '-' && s[3] != '\0' && s[3] != '\r' && s[3] != '\n')
		return -1;
	*sep = s[3];
	return (s[0] - '0') * 100 + (s[1] - '0') * 10 + (s[2] - '0');
}

/* milter_ecode_len - the length of an enhanced code "c.x.y" at s (class c), 0 if none */
static size_t
milter_ecode_len(const char *s, int cls)
{
	const char *p = s;
	int parts = 0, digits;

	if (*p - '0' != cls || p[1] != '.')	/* the class is one digit */
		return 0;
	for (;;) {
		for (digits = 0; *p >= '0' && *p <= '9'; p++)
			digits++;
		if (digits == 0 || digits > 3)
			return 0;
		if (++parts == 3)
			break;
		if (*p++ != '.')
			return 0;
	}
	if (*p != ' ' && *p != '\0' && *p != '\r' && *p != '\n')
		return 0;
	return (size_t)(p - s);
}

/* milter_parse_replycode - a 'y' reply into r (see milter_proto.h) */
bool
milter_parse_replycode(const char *s, struct filter_reply *r, const char **why)
{
	size_t out = 0, el, first_el = 0;
	int code = -1, c;
	char sep = '\0';
	const char *p = s;
	bool more = true;

	memset(r, 0, sizeof(*r));
	while (more) {
		if ((c = milter_reply_line(p, &sep)) < 0 || (code >= 0 && c != code)) {
			*why = "malformed reply code";
			return false;
		}
		code = c;
		if (code < 400 || code > 599) {
			*why = "reply code not 4xx or 5xx";
			return false;
		}
		more = sep == '-';
		p += sep == ' ' || sep == '-' ? 4 : 3;	/* a line end after the code is the line's */
		el = milter_ecode_len(p, code / 100);
		if (el > 0 && first_el == 0 && out == 0 && el < sizeof(r->ecode)) {
			memcpy(r->ecode, p, el);
			first_el = el;
		}
		if (el > 0 && el == first_el && strncmp(p, r->ecode, el) == 0) {
			p += el;
			if (*p == ' ')
				p++;
		}
		if (out > 0 && out < sizeof(r->text) - 1)
			r->text[out++] = '\n';
		for (; *p != '\0' && *p != '\r' && *p != '\n'; p++) {
			if (p[0] == '%' && p[1] == '%')
				p++;
			if (out < sizeof(r->text) - 1)
				r->text[out++] = (unsigned char)*p < 0x20 || *p == 0x7f ? ' ' : *p;
		}
		if (p[0] == '\r' && p[1] == '\n')
			p += 2;
		else if (*p == '\n')
			p++;
		else if (*p == '\r') {
			*why = "bare CR in reply";
			return false;
		}
		if (more && *p == '\0') {
			*why = "reply ends after a continuation";
			return false;
		}
		if (!more && *p != '\0') {
			*why = "text after the last reply line";
			return false;
		}
	}
	r->text[out] = '\0';
	r->code = code;
	return true;
}

/* milter_cmd_name - for logs */
const char *
milter_cmd_name(char cmd)
{
	switch (cmd) {
	case MILTER_C_OPTNEG: return "negotiate";
	case MILTER_C_CONNECT: return "connect";
	case MILTER_C_HELO: return "helo";
	case MILTER_C_MAIL: return "mail";
	case MILTER_C_RCPT: return "rcpt";
	case MILTER_C_DATA: return "data";
	case MILTER_C_HEADER: return "header";
	case MILTER_C_EOH: return "eoh";
	case MILTER_C_BODY: return "body";
	case MILTER_C_BODYEOB: return "eom";
	case MILTER_C_ABORT: return "abort";
	case MILTER_C_QUIT: return "quit";
	default: return "?";
	}
}
