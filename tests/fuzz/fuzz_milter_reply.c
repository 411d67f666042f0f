/*
 * fuzz_milter_reply.c - libFuzzer target for the decoding of what a milter
 * sends (filters/milter_proto.c).
 *
 * The input is the byte stream a milter would send: milter_frame cuts it
 * into packets (at most MILTER_PACKET_MAX), each goes to milter_parse_msg,
 * and the first, when it is an 'O', to milter_parse_neg as well (offer:
 * every action, MILTER_P_OFFER).  Each packet is parsed from a heap copy of
 * exactly its data, so that a read past it is ASan's to report.
 * Invariants:
 *   - a packet is its length field's size: used == 4 + 1 + dlen, within
 *     what is left, and every shorter prefix of it is MORE; BAD says why;
 *   - a parsed reply's strings lie inside the packet's data and end there;
 *     a header name is printable US-ASCII without ':', an address not
 *     empty where one is required, the ESMTP arguments single-spaced;
 *   - a reply code is 400..599 and its text NUL-terminated, without CR or
 *     any control but '\n'; its enhanced code "" or "C.x.y" (1 to 3 digits
 *     each) with C the code's class;
 *   - a negotiation accepted has a version from 2 to 6, actions and steps
 *     within the offer (2 and 3 with the steps they may not have turned
 *     off), symbol lists of printable ASCII; a refused one holds no list.
 * Never writes files; aborts (for libFuzzer to report) on any violation.
 */
#include "config.h"

#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "util.h"
#include "milter_proto.h"
#include "fuzz.h"

/* fuzz_inside - s is a string inside d[0..n), its NUL too */
static void
fuzz_inside(const char *s, const unsigned char *d, size_t n)
{
	const unsigned char *u = (const unsigned char *)s;

	FUZZ_CHECK(s != NULL && u >= d && u < d + n);
	FUZZ_CHECK(memchr(u, '\0', (size_t)(d + n - u)) != NULL);
}

/* fuzz_digits - 1 to 3 digits at *p, skipped */
static bool
fuzz_digits(const char **p)
{
	size_t k = strspn(*p, "0123456789");

	*p += k;
	return k >= 1 && k <= 3;
}

/* fuzz_replycode - the invariants of a parsed reply code */
static void
fuzz_replycode(const struct filter_reply *r)
{
	const char *p = r->ecode;
	size_t i, len;

	FUZZ_CHECK(r->code >= 400 && r->code <= 599);
	FUZZ_CHECK(memchr(r->text, '\0', sizeof(r->text)) != NULL);
	len = strlen(r->text);
	for (i = 0; i < len; i++) {
		unsigned char c = (unsigned char)r->text[i];

		FUZZ_CHECK(c == '\n' || (c >= 0x20 && c != 0x7f));
	}
	FUZZ_CHECK(memchr(r->ecode, '\0', sizeof(r->ecode)) != NULL);
	if (*p == '\0')
		return;
	FUZZ_CHECK(p[0] - '0' == r->code / 100 && p[1] == '.');
	p += 2;
	FUZZ_CHECK(fuzz_digits(&p) && *p++ == '.');
	FUZZ_CHECK(fuzz_digits(&p) && *p == '\0');
}

/* fuzz_header_name - printable US-ASCII, no ':', not empty */
static void
fuzz_header_name(const char *name)
{
	FUZZ_CHECK(*name != '\0');
	for (; *name != '\0'; name++)
		FUZZ_CHECK((unsigned char)*name > 0x20 && (unsigned char)*name < 0x7f && *name != ':');
}

/* fuzz_args - "" or arguments joined with single spaces, no empty one */
static void
fuzz_args(const struct milter_msg *m)
{
	size_t len;

	FUZZ_CHECK(m->args != NULL);
	if (m->args[0] == '\0')
		return;
	FUZZ_CHECK(m->args == m->argsbuf);
	FUZZ_CHECK(memchr(m->argsbuf, '\0', sizeof(m->argsbuf)) != NULL);
	len = strlen(m->args);
	FUZZ_CHECK(m->args[0] != ' ' && m->args[len - 1] != ' ' && strstr(m->args, "  ") == NULL);
}

/* fuzz_msg - the invariants of a parsed reply packet (data d, n octets) */
static void
fuzz_msg(char cmd, const struct milter_msg *m, const unsigned char *d, size_t n)
{
	FUZZ_CHECK(m->cmd == cmd);
	fuzz_args(m);
	if (m->kind != MILTER_R_REPLBODY)
		FUZZ_CHECK(m->body == NULL && m->body_len == 0);
	switch (m->kind) {
	case MILTER_R_REPLYCODE:
		FUZZ_CHECK(cmd == 'y');
		fuzz_replycode(&m->reply);
		break;
	case MILTER_R_ADDHEADER:
	case MILTER_R_INSHEADER:
	case MILTER_R_CHGHEADER:
		fuzz_inside(m->name, d, n);
		fuzz_inside(m->value, d, n);
		fuzz_header_name(m->name);
		FUZZ_CHECK(m->kind == MILTER_R_ADDHEADER || n >= 4);
		break;
	case MILTER_R_ADDRCPT:
	case MILTER_R_DELRCPT:
	case MILTER_R_ADDRCPT_PAR:
		fuzz_inside(m->value, d, n);
		FUZZ_CHECK(m->value[0] != '\0');
		break;
	case MILTER_R_CHGFROM:
	case MILTER_R_QUARANTINE:
		fuzz_inside(m->value, d, n);
		break;
	case MILTER_R_REPLBODY:
		FUZZ_CHECK(m->body == (const char *)d && m->body_len == n);
		break;
	default:
		FUZZ_CHECK(m->name == NULL && m->value == NULL);
		break;
	}
	if (m->kind != MILTER_R_REPLYCODE)
		FUZZ_CHECK(m->reply.code == 0);
}

/* fuzz_neg - the negotiation reply of the first packet */
static void
fuzz_neg(const unsigned char *d, size_t n)
{
	struct milter_neg neg;
	const char *why = NULL;
	size_t i;
	const char *p;

	if (!milter_parse_neg(d, n, MILTER_A_ALL, MILTER_P_OFFER, &neg, &why)) {
		FUZZ_CHECK(why != NULL && *why != '\0');
		for (i = 0; i < MILTER_M_STAGES; i++)
			FUZZ_CHECK(neg.symlist[i] == NULL);
		return;
	}
	FUZZ_CHECK(n >= 12);
	FUZZ_CHECK(neg.version >= MILTER_VERSION_MIN && neg.version <= MILTER_VERSION);
	FUZZ_CHECK((neg.actions & ~MILTER_A_ALL) == 0 && (neg.protocol & ~MILTER_P_OFFER) == 0);
	if (neg.version <= 2)
		FUZZ_CHECK(neg.protocol & MILTER_P_NOUNKNOWN);
	if (neg.version <= 3)
		FUZZ_CHECK(neg.protocol & MILTER_P_NODATA);
	for (i = 0; i < MILTER_M_STAGES; i++)
		for (p = neg.symlist[i]; p != NULL && *p != '\0'; p++)
			FUZZ_CHECK((unsigned char)*p >= 0x20 && (unsigned char)*p < 0x7f);
	milter_neg_clear(&neg);
	for (i = 0; i < MILTER_M_STAGES; i++)
		FUZZ_CHECK(neg.symlist[i] == NULL);
}

/* fuzz_packet - one packet's data, from a copy of exactly dlen octets */
static void
fuzz_packet(char cmd, const unsigned char *data, size_t dlen, bool first)
{
	unsigned char *d = xmalloc(dlen ? dlen : 1);
	struct milter_msg m;
	const char *why = NULL;

	memcpy(d, data, dlen);
	if (first && cmd == MILTER_C_OPTNEG)
		fuzz_neg(d, dlen);
	if (milter_parse_msg(cmd, d, dlen, &m, &why))
		fuzz_msg(cmd, &m, d, dlen);
	else
		FUZZ_CHECK(why != NULL && *why != '\0');
	free(d);
}

/* LLVMFuzzerTestOneInput - a milter's byte stream, packet by packet */
int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	const unsigned char *p = data, *d, *d2;
	size_t n = size, dlen, dlen2, used, used2;
	enum milter_frame_status st;
	const char *why;
	bool first = true;
	char cmd, cmd2;

	for (;;) {
		why = NULL;
		st = milter_frame(p, n, MILTER_PACKET_MAX, &cmd, &d, &dlen, &used, &why);
		if (st == MILTER_FRAME_BAD)
			FUZZ_CHECK(why != NULL && *why != '\0');
		if (st != MILTER_FRAME_OK)
			break;
		FUZZ_CHECK(used == 4 + 1 + dlen && used <= n && d == p + 5);
		FUZZ_CHECK(dlen + 1 <= MILTER_PACKET_MAX);
		FUZZ_CHECK(milter_frame(p, used - 1, MILTER_PACKET_MAX, &cmd2, &d2, &dlen2, &used2,
		    &why) == MILTER_FRAME_MORE);
		fuzz_packet(cmd, d, dlen, first);
		first = false;
		p += used;
		n -= used;
	}
	return 0;
}
