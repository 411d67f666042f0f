/*
 * check_milter_proto.c - unit tests for the milter protocol codec
 * (filters/milter_proto.c): framing, the packets portier sends (exact
 * octets), and the decoding of a milter's negotiation reply, reply packets
 * and reply codes.  Table-driven, with the octets written out; a packet is
 * also fed to the framer one octet at a time.
 *
 * The symbol lists milter_parse_neg allocates are freed by milter_neg_clear,
 * on success and on every refusal: LeakSanitizer runs with these tests.
 */
#include "config.h"

#include <check.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "buf.h"
#include "util.h"
#include "milter_proto.h"
#include "unit.h"

/* A byte string with its length (string literals may hold NULs). */
#define BYTES(s)	{ (const unsigned char *)(s), sizeof(s) - 1 }

struct bytes {
	const unsigned char *p;
	size_t n;
};

/* ---- framing ---- */

static const struct {
	struct bytes in;
	size_t max;
	enum milter_frame_status want;
	char cmd;
	size_t dlen;
} frame_cases[] = {
	{ BYTES(""), MILTER_PACKET_MAX, MILTER_FRAME_MORE, 0, 0 },
	{ BYTES("\0\0\0"), MILTER_PACKET_MAX, MILTER_FRAME_MORE, 0, 0 },
	{ BYTES("\0\0\0\x05"), MILTER_PACKET_MAX, MILTER_FRAME_MORE, 0, 0 },
	{ BYTES("\0\0\0\x05" "yab"), MILTER_PACKET_MAX, MILTER_FRAME_MORE, 0, 0 },
	{ BYTES("\0\0\0\x01" "c"), MILTER_PACKET_MAX, MILTER_FRAME_OK, 'c', 0 },
	{ BYTES("\0\0\0\x05" "yabc\0"), MILTER_PACKET_MAX, MILTER_FRAME_OK, 'y', 4 },
	/* what follows the packet is the next one's */
	{ BYTES("\0\0\0\x02" "qxTRAILING"), MILTER_PACKET_MAX, MILTER_FRAME_OK, 'q', 1 },
	{ BYTES("\0\0\0\0"), MILTER_PACKET_MAX, MILTER_FRAME_BAD, 0, 0 },
	{ BYTES("\0\0\0\0" "c"), MILTER_PACKET_MAX, MILTER_FRAME_BAD, 0, 0 },
	/* the length alone condemns it: no need to wait for the data */
	{ BYTES("\xff\xff\xff\xf0"), MILTER_PACKET_MAX, MILTER_FRAME_BAD, 0, 0 },
	{ BYTES("\0\x10\0\x01"), MILTER_PACKET_MAX, MILTER_FRAME_BAD, 0, 0 },
	{ BYTES("\0\0\0\x08"), 7, MILTER_FRAME_BAD, 0, 0 },
	{ BYTES("\0\0\0\x07" "b123456"), 7, MILTER_FRAME_OK, 'b', 6 },
};

START_TEST(test_frame)
{
	const struct bytes *in = &frame_cases[_i].in;
	const unsigned char *data = NULL;
	const char *why = NULL;
	size_t dlen = 0, used = 0;
	char cmd = 0;
	enum milter_frame_status st;

	st = milter_frame(in->p, in->n, frame_cases[_i].max, &cmd, &data, &dlen, &used, &why);
	ck_assert_int_eq(st, frame_cases[_i].want);
	switch (st) {
	case MILTER_FRAME_OK:
		ck_assert_int_eq(cmd, frame_cases[_i].cmd);
		ck_assert_uint_eq(dlen, frame_cases[_i].dlen);
		ck_assert_ptr_eq(data, in->p + 5);
		ck_assert_uint_eq(used, 5 + dlen);
		ck_assert_uint_le(used, in->n);
		break;
	case MILTER_FRAME_BAD:
		ck_assert_ptr_nonnull(why);
		break;
	case MILTER_FRAME_MORE:
		ck_assert_ptr_null(why);
		break;
	}
}
END_TEST

/* test_frame_bytewise - every prefix of a packet is MORE, the whole of it OK */
START_TEST(test_frame_bytewise)
{
	static const unsigned char pkt[] = "\0\0\0\x0a" "hX-Spam\0y\0";
	const unsigned char *data;
	const char *why;
	size_t n, dlen, used;
	char cmd;

	for (n = 0; n < sizeof(pkt) - 1; n++)
		ck_assert_int_eq(milter_frame(pkt, n, MILTER_PACKET_MAX, &cmd, &data, &dlen,
		    &used, &why), MILTER_FRAME_MORE);
	ck_assert_int_eq(milter_frame(pkt, n, MILTER_PACKET_MAX, &cmd, &data, &dlen, &used, &why),
	    MILTER_FRAME_OK);
	ck_assert_int_eq(cmd, 'h');
	ck_assert_uint_eq(dlen, 9);
	ck_assert_uint_eq(used, sizeof(pkt) - 1);
	ck_assert_mem_eq(data, "X-Spam\0y\0", 9);
}
END_TEST

/* test_frame_stream - packets back to back, then a partial one */
START_TEST(test_frame_stream)
{
	static const unsigned char s[] =
	    "\0\0\0\x01" "c"
	    "\0\0\0\x07" "+<a@b>\0"
	    "\0\0\0\x01" "a"
	    "\0\0\0\x09" "h";
	static const struct { char cmd; size_t dlen; } want[] = { { 'c', 0 }, { '+', 6 }, { 'a', 0 } };
	const unsigned char *p = s, *data;
	size_t n = sizeof(s) - 1, dlen, used, i;
	const char *why;
	char cmd;

	for (i = 0; i < ARRAY_SIZE(want); i++) {
		ck_assert_int_eq(milter_frame(p, n, MILTER_PACKET_MAX, &cmd, &data, &dlen, &used,
		    &why), MILTER_FRAME_OK);
		ck_assert_int_eq(cmd, want[i].cmd);
		ck_assert_uint_eq(dlen, want[i].dlen);
		ck_assert_ptr_eq(data, p + 5);
		p += used;
		n -= used;
	}
	ck_assert_mem_eq(s + 5 + 5, "<a@b>", 5);
	ck_assert_uint_eq(n, 5);
	ck_assert_int_eq(milter_frame(p, n, MILTER_PACKET_MAX, &cmd, &data, &dlen, &used, &why),
	    MILTER_FRAME_MORE);
}
END_TEST

/* ---- what portier sends ---- */

/* check_out - out holds exactly want, and its length field counts the rest */
static void
check_out(const struct buf *out, const unsigned char *want, size_t n)
{
	ck_assert_uint_eq(out->len, n);
	ck_assert_mem_eq(out->data, want, n);
	ck_assert_uint_ge(n, 5);
	ck_assert_uint_eq((size_t)want[0] << 24 | (size_t)want[1] << 16 | (size_t)want[2] << 8 |
	    want[3], n - 4);
}

#define CHECK_OUT(out, lit)	check_out((out), (const unsigned char *)(lit), sizeof(lit) - 1)

START_TEST(test_put_optneg)
{
	struct buf b;

	buf_init(&b);
	milter_put_optneg(&b, MILTER_A_ALL, MILTER_P_OFFER);
	CHECK_OUT(&b, "\0\0\0\x0d" "O" "\0\0\0\x06" "\0\0\x01\xff" "\0\x1f\xf7\xff");
	buf_reset(&b);
	milter_put_optneg(&b, 0, 0);
	CHECK_OUT(&b, "\0\0\0\x0d" "O" "\0\0\0\x06" "\0\0\0\0" "\0\0\0\0");
	buf_free(&b);
}
END_TEST

static const struct {
	const char *host;
	char family;
	unsigned port;
	const char *addr;
	struct bytes want;
} connect_cases[] = {
	{ "mx.example.org", '4', 25, "192.0.2.1",
	  BYTES("\0\0\0\x1d" "C" "mx.example.org\0" "4" "\0\x19" "192.0.2.1\0") },
	/* the port in network order */
	{ "[2001:db8::1]", '6', 50123, "2001:db8::1",
	  BYTES("\0\0\0\x1e" "C" "[2001:db8::1]\0" "6" "\xc3\xcb" "2001:db8::1\0") },
	{ "localhost", 'L', 0, "/run/portier.sock",
	  BYTES("\0\0\0\x20" "C" "localhost\0" "L" "\0\0" "/run/portier.sock\0") },
	/* 'U': neither port nor address */
	{ "unknown", 'U', 25, "192.0.2.1", BYTES("\0\0\0\x0a" "C" "unknown\0" "U") },
	{ "", 'U', 0, "", BYTES("\0\0\0\x03" "C" "\0" "U") },
};

START_TEST(test_put_connect)
{
	struct buf b;

	buf_init(&b);
	milter_put_connect(&b, connect_cases[_i].host, connect_cases[_i].family,
	    connect_cases[_i].port, connect_cases[_i].addr);
	check_out(&b, connect_cases[_i].want.p, connect_cases[_i].want.n);
	buf_free(&b);
}
END_TEST

static const struct {
	char cmd;
	const char *addr, *params;
	struct bytes want;
} args_cases[] = {
	{ 'M', "a@b", "", BYTES("\0\0\0\x07" "M<a@b>\0") },
	{ 'M', "", "", BYTES("\0\0\0\x04" "M<>\0") },
	{ 'M', "a@b", "SIZE=100 BODY=8BITMIME",
	  BYTES("\0\0\0\x1e" "M<a@b>\0SIZE=100\0BODY=8BITMIME\0") },
	/* spaces before, between and after: never an empty string */
	{ 'M', "a@b", "  SIZE=100   BODY=8BITMIME  ",
	  BYTES("\0\0\0\x1e" "M<a@b>\0SIZE=100\0BODY=8BITMIME\0") },
	{ 'M', "a@b", "   ", BYTES("\0\0\0\x07" "M<a@b>\0") },
	{ 'R', "x@y.test", "NOTIFY=NEVER ORCPT=rfc822;x@y.test",
	  BYTES("\0\0\0\x2f" "R<x@y.test>\0NOTIFY=NEVER\0ORCPT=rfc822;x@y.test\0") },
	{ 'R', "postmaster", "X", BYTES("\0\0\0\x10" "R<postmaster>\0X\0") },
};

START_TEST(test_put_args)
{
	struct buf b;

	buf_init(&b);
	milter_put_args(&b, args_cases[_i].cmd, args_cases[_i].addr, args_cases[_i].params);
	check_out(&b, args_cases[_i].want.p, args_cases[_i].want.n);
	buf_free(&b);
}
END_TEST

START_TEST(test_put_strings)
{
	static const char *const helo[] = { "client.example.org" };
	static const char *const hdr[] = { "Subject", " hello" };
	static const char *const empty[] = { "", "" };
	static const char *const mail[] = { "<a@b>", "SIZE=1" };
	struct buf b;

	buf_init(&b);
	milter_put_strings(&b, MILTER_C_HELO, helo, ARRAY_SIZE(helo));
	CHECK_OUT(&b, "\0\0\0\x14" "Hclient.example.org\0");
	buf_reset(&b);
	milter_put_strings(&b, MILTER_C_HEADER, hdr, ARRAY_SIZE(hdr));
	CHECK_OUT(&b, "\0\0\0\x10" "LSubject\0 hello\0");
	buf_reset(&b);
	milter_put_strings(&b, MILTER_C_HEADER, empty, ARRAY_SIZE(empty));
	CHECK_OUT(&b, "\0\0\0\x03" "L\0\0");
	buf_reset(&b);
	milter_put_strings(&b, MILTER_C_DATA, NULL, 0);
	CHECK_OUT(&b, "\0\0\0\x01" "T");
	buf_reset(&b);
	/* the same octets as milter_put_args */
	milter_put_strings(&b, MILTER_C_MAIL, mail, ARRAY_SIZE(mail));
	CHECK_OUT(&b, "\0\0\0\x0e" "M<a@b>\0SIZE=1\0");
	buf_free(&b);
}
END_TEST

START_TEST(test_put_raw)
{
	unsigned char head[5];
	struct buf b;

	buf_init(&b);
	milter_put(&b, MILTER_C_BODY, "a\0b\r\n", 5);
	milter_put(&b, MILTER_C_BODYEOB, NULL, 0);
	/* two packets */
	ck_assert_uint_eq(b.len, 15);
	ck_assert_mem_eq(b.data, "\0\0\0\x06" "Ba\0b\r\n" "\0\0\0\x01" "E", 15);
	buf_free(&b);
	milter_put_head(head, MILTER_C_BODY, MILTER_CHUNK);
	ck_assert_mem_eq(head, "\0\x01\0\0" "B", 5);
}
END_TEST

/* ---- the negotiation reply ---- */

/* the rest of a refused case's row */
#define NEG_REFUSED	false, 0, 0, 0, { NULL }
#define NEG_ALL		"\0\0\0\x06" "\0\0\x01\xff" "\0\x1f\xf7\xff"

static const struct {
	struct bytes in;
	uint32_t offer_actions, offer_protocol;
	bool ok;
	uint32_t version, actions, protocol;
	const char *symlist[MILTER_M_STAGES];
} neg_cases[] = {
	{ BYTES(NEG_ALL), MILTER_A_ALL, MILTER_P_OFFER, true, 6, 0x1ff, 0x1ff7ff, { NULL } },
	{ BYTES("\0\0\0\x06" "\0\0\0\x01" "\0\0\0\x12"), MILTER_A_ALL, MILTER_P_OFFER, true,
	  6, MILTER_A_ADDHDRS, MILTER_P_NOHELO | MILTER_P_NOBODY, { NULL } },
	/* a symbol list for every stage, in any order */
	{ BYTES(NEG_ALL
	    "\0\0\0\x06" "{mail_host}\0"
	    "\0\0\0\0" "j {client_addr} {client_name}\0"
	    "\0\0\0\x01" "{tls_version} {cipher}\0"
	    "\0\0\0\x02" "{mail_addr} {auth_authen}\0"
	    "\0\0\0\x03" "{rcpt_addr}\0"
	    "\0\0\0\x04" "i\0"
	    "\0\0\0\x05" "{msg_id}\0"),
	  MILTER_A_ALL, MILTER_P_OFFER, true, 6, 0x1ff, 0x1ff7ff,
	  { "j {client_addr} {client_name}", "{tls_version} {cipher}",
	    "{mail_addr} {auth_authen}", "{rcpt_addr}", "i", "{msg_id}", "{mail_host}" } },
	/* an empty list: no macros at that stage */
	{ BYTES(NEG_ALL "\0\0\0\x02" "\0"), MILTER_A_ALL, MILTER_P_OFFER, true, 6, 0x1ff, 0x1ff7ff,
	  { NULL, NULL, "" } },
	/* old versions: no unknown commands for 2, no DATA for 2 and 3 */
	{ BYTES("\0\0\0\x02" "\0\0\0\0" "\0\0\0\0"), MILTER_A_ALL, MILTER_P_OFFER, true,
	  2, 0, MILTER_P_NOUNKNOWN | MILTER_P_NODATA, { NULL } },
	{ BYTES("\0\0\0\x03" "\0\0\0\0" "\0\0\0\x01"), MILTER_A_ALL, MILTER_P_OFFER, true,
	  3, 0, MILTER_P_NOCONNECT | MILTER_P_NODATA, { NULL } },
	{ BYTES("\0\0\0\x04" "\0\0\0\0" "\0\0\0\0"), MILTER_A_ALL, MILTER_P_OFFER, true,
	  4, 0, 0, { NULL } },
	{ BYTES("\0\0\0\x05" "\0\0\0\0" "\0\0\0\0"), MILTER_A_ALL, MILTER_P_OFFER, true,
	  5, 0, 0, { NULL } },
	/* versions out of range */
	{ BYTES("\0\0\0\0" "\0\0\0\0" "\0\0\0\0"), MILTER_A_ALL, MILTER_P_OFFER, NEG_REFUSED },
	{ BYTES("\0\0\0\x01" "\0\0\0\0" "\0\0\0\0"), MILTER_A_ALL, MILTER_P_OFFER, NEG_REFUSED },
	{ BYTES("\0\0\0\x07" "\0\0\0\0" "\0\0\0\0"), MILTER_A_ALL, MILTER_P_OFFER, NEG_REFUSED },
	{ BYTES("\x01\0\0\x06" "\0\0\0\0" "\0\0\0\0"), MILTER_A_ALL, MILTER_P_OFFER, NEG_REFUSED },
	/* actions or steps beyond the offer */
	{ BYTES("\0\0\0\x06" "\0\0\x02\0" "\0\0\0\0"), MILTER_A_ALL, MILTER_P_OFFER, NEG_REFUSED },
	{ BYTES("\0\0\0\x06" "\0\0\0\x03" "\0\0\0\0"), MILTER_A_ADDHDRS, MILTER_P_OFFER, NEG_REFUSED },
	{ BYTES("\0\0\0\x06" "\0\0\0\0" "\0\0\x08\0"), MILTER_A_ALL, MILTER_P_OFFER, NEG_REFUSED },
	{ BYTES("\0\0\0\x06" "\0\0\0\0" "\0\x20\0\0"), MILTER_A_ALL, MILTER_P_OFFER, NEG_REFUSED },
	{ BYTES("\0\0\0\x06" "\0\0\0\0" "\0\0\0\x02"), MILTER_A_ALL, MILTER_P_NOCONNECT, NEG_REFUSED },
	/* too short */
	{ BYTES(""), MILTER_A_ALL, MILTER_P_OFFER, NEG_REFUSED },
	{ BYTES("\0\0\0\x06" "\0\0\0\0" "\0\0\0"), MILTER_A_ALL, MILTER_P_OFFER, NEG_REFUSED },
	/* malformed symbol lists, some after a good one (freed on the way out) */
	{ BYTES(NEG_ALL "\0"), MILTER_A_ALL, MILTER_P_OFFER, NEG_REFUSED },
	{ BYTES(NEG_ALL "\0\0\0\x01"), MILTER_A_ALL, MILTER_P_OFFER, NEG_REFUSED },
	{ BYTES(NEG_ALL "\0\0\0\x01" "j"), MILTER_A_ALL, MILTER_P_OFFER, NEG_REFUSED },
	{ BYTES(NEG_ALL "\0\0\0\0" "j\0" "\0\0\0\x01" "{tls_version}"), MILTER_A_ALL,
	  MILTER_P_OFFER, NEG_REFUSED },
	{ BYTES(NEG_ALL "\0\0\0\x07" "j\0"), MILTER_A_ALL, MILTER_P_OFFER, NEG_REFUSED },
	{ BYTES(NEG_ALL "\xff\xff\xff\xff" "j\0"), MILTER_A_ALL, MILTER_P_OFFER, NEG_REFUSED },
	{ BYTES(NEG_ALL "\0\0\0\x01" "j\0" "\0\0\0\x01" "{tls_version}\0"), MILTER_A_ALL,
	  MILTER_P_OFFER, NEG_REFUSED },
	{ BYTES(NEG_ALL "\0\0\0\0" "j\0" "\0\0\0\x01" "j\x01" "{x}\0"), MILTER_A_ALL,
	  MILTER_P_OFFER, NEG_REFUSED },
	{ BYTES(NEG_ALL "\0\0\0\x01" "j\t{x}\0"), MILTER_A_ALL, MILTER_P_OFFER, NEG_REFUSED },
	{ BYTES(NEG_ALL "\0\0\0\x01" "{x}\x7f\0"), MILTER_A_ALL, MILTER_P_OFFER, NEG_REFUSED },
	{ BYTES(NEG_ALL "\0\0\0\x01" "{caf\xc3\xa9}\0"), MILTER_A_ALL, MILTER_P_OFFER, NEG_REFUSED },
};

START_TEST(test_parse_neg)
{
	struct milter_neg neg;
	const char *why = NULL;
	size_t i;
	bool ok;

	memset(&neg, 0xa5, sizeof(neg));	/* whatever it held is not read */
	ok = milter_parse_neg(neg_cases[_i].in.p, neg_cases[_i].in.n, neg_cases[_i].offer_actions,
	    neg_cases[_i].offer_protocol, &neg, &why);
	ck_assert_int_eq(ok, neg_cases[_i].ok);
	if (!ok) {
		ck_assert_ptr_nonnull(why);
		for (i = 0; i < MILTER_M_STAGES; i++)
			ck_assert_ptr_null(neg.symlist[i]);
		return;
	}
	ck_assert_uint_eq(neg.version, neg_cases[_i].version);
	ck_assert_uint_eq(neg.actions, neg_cases[_i].actions);
	ck_assert_uint_eq(neg.protocol, neg_cases[_i].protocol);
	for (i = 0; i < MILTER_M_STAGES; i++)
		ck_assert_pstr_eq(neg.symlist[i], neg_cases[_i].symlist[i]);
	milter_neg_clear(&neg);
	for (i = 0; i < MILTER_M_STAGES; i++)
		ck_assert_ptr_null(neg.symlist[i]);
	milter_neg_clear(&neg);		/* twice: harmless */
}
END_TEST

/* ---- reply packets ---- */

#define MSG_REFUSED	false, 0, 0, NULL, NULL, NULL

static const struct msg_case {
	char cmd;
	struct bytes in;
	bool ok;
	enum milter_msg_kind kind;
	uint32_t index;
	const char *name, *value, *args;
} parse_cases[] = {
	{ 'c', BYTES(""), true, MILTER_R_CONTINUE, 0, NULL, NULL, "" },
	{ 'a', BYTES(""), true, MILTER_R_ACCEPT, 0, NULL, NULL, "" },
	{ 'r', BYTES(""), true, MILTER_R_REJECT, 0, NULL, NULL, "" },
	{ 't', BYTES(""), true, MILTER_R_TEMPFAIL, 0, NULL, NULL, "" },
	{ 'd', BYTES(""), true, MILTER_R_DISCARD, 0, NULL, NULL, "" },
	{ 's', BYTES(""), true, MILTER_R_SKIP, 0, NULL, NULL, "" },
	{ 'f', BYTES(""), true, MILTER_R_CONN_FAIL, 0, NULL, NULL, "" },
	{ '4', BYTES(""), true, MILTER_R_SHUTDOWN, 0, NULL, NULL, "" },
	{ 'p', BYTES(""), true, MILTER_R_PROGRESS, 0, NULL, NULL, "" },
	/* 'y': one string (its reply code: test_parse_msg_replycode) */
	{ 'y', BYTES("550 5.7.1 no\0"), true, MILTER_R_REPLYCODE, 0, NULL, NULL, "" },
	{ 'y', BYTES("550 5.7.1 no"), MSG_REFUSED },
	{ 'y', BYTES(""), MSG_REFUSED },
	{ 'y', BYTES("550 5.7.1 no\0x\0"), MSG_REFUSED },
	{ 'y', BYTES("250 ok\0"), MSG_REFUSED },
	/* 'q': the reason */
	{ 'q', BYTES("spam\0"), true, MILTER_R_QUARANTINE, 0, NULL, "spam", "" },
	{ 'q', BYTES("\0"), true, MILTER_R_QUARANTINE, 0, NULL, "", "" },
	{ 'q', BYTES("spam"), MSG_REFUSED },
	{ 'q', BYTES(""), MSG_REFUSED },
	{ 'q', BYTES("spam\0more\0"), MSG_REFUSED },
	/* 'h': name, value */
	{ 'h', BYTES("X-Spam\0 yes\0"), true, MILTER_R_ADDHEADER, 0, "X-Spam", " yes", "" },
	{ 'h', BYTES("X-Empty\0\0"), true, MILTER_R_ADDHEADER, 0, "X-Empty", "", "" },
	{ 'h', BYTES("X\0a\r\n\tb\0"), true, MILTER_R_ADDHEADER, 0, "X", "a\r\n\tb", "" },
	{ 'h', BYTES("X-Spam\0 yes"), MSG_REFUSED },
	{ 'h', BYTES("X-Spam\0"), MSG_REFUSED },
	{ 'h', BYTES("X-Spam"), MSG_REFUSED },
	{ 'h', BYTES(""), MSG_REFUSED },
	{ 'h', BYTES("\0 yes\0"), MSG_REFUSED },
	{ 'h', BYTES("X-Spam:\0 yes\0"), MSG_REFUSED },
	{ 'h', BYTES("X:Spam\0 yes\0"), MSG_REFUSED },
	{ 'h', BYTES("X Spam\0 yes\0"), MSG_REFUSED },
	{ 'h', BYTES("X-Spam \0 yes\0"), MSG_REFUSED },
	{ 'h', BYTES("X\tSpam\0 yes\0"), MSG_REFUSED },
	{ 'h', BYTES("X\x7fSpam\0 yes\0"), MSG_REFUSED },
	{ 'h', BYTES("X-Sp\xc3\xa4m\0 yes\0"), MSG_REFUSED },
	{ 'h', BYTES("X-Spam\0 yes\0extra\0"), MSG_REFUSED },
	/* 'i' and 'm': index, name, value */
	{ 'i', BYTES("\0\0\0\x02" "X-Spam\0 yes\0"), true, MILTER_R_INSHEADER, 2, "X-Spam", " yes", "" },
	{ 'i', BYTES("\0\0\0\0" "X\0v\0"), true, MILTER_R_INSHEADER, 0, "X", "v", "" },
	{ 'i', BYTES("\xff\xff\xff\xff" "X\0v\0"), true, MILTER_R_INSHEADER, 0xffffffffu, "X", "v", "" },
	{ 'i', BYTES(""), MSG_REFUSED },
	{ 'i', BYTES("\0\0\x01"), MSG_REFUSED },
	{ 'i', BYTES("\0\0\0\x01"), MSG_REFUSED },
	{ 'i', BYTES("\0\0\0\x01" "X\0"), MSG_REFUSED },
	{ 'i', BYTES("\0\0\0\x01" "\0v\0"), MSG_REFUSED },
	{ 'i', BYTES("\0\0\0\x01" "X:\0v\0"), MSG_REFUSED },
	{ 'm', BYTES("\0\0\0\x01" "Subject\0 new\0"), true, MILTER_R_CHGHEADER, 1, "Subject", " new", "" },
	/* an empty value deletes */
	{ 'm', BYTES("\0\0\0\x03" "Received\0\0"), true, MILTER_R_CHGHEADER, 3, "Received", "", "" },
	{ 'm', BYTES("\0\0\x01"), MSG_REFUSED },
	{ 'm', BYTES("\0\0\0\x01" "Subject\0 new"), MSG_REFUSED },
	{ 'm', BYTES("\0\0\0\x01" "\0 new\0"), MSG_REFUSED },
	{ 'm', BYTES("\0\0\0\x01" "Sub ject\0 new\0"), MSG_REFUSED },
	/* '+' and '-': one address, not empty */
	{ '+', BYTES("<a@b>\0"), true, MILTER_R_ADDRCPT, 0, NULL, "<a@b>", "" },
	{ '+', BYTES("a@b\0"), true, MILTER_R_ADDRCPT, 0, NULL, "a@b", "" },
	{ '+', BYTES("\0"), MSG_REFUSED },
	{ '+', BYTES(""), MSG_REFUSED },
	{ '+', BYTES("<a@b>"), MSG_REFUSED },
	{ '+', BYTES("<a@b>\0NOTIFY=NEVER\0"), MSG_REFUSED },
	{ '-', BYTES("<a@b>\0"), true, MILTER_R_DELRCPT, 0, NULL, "<a@b>", "" },
	{ '-', BYTES("\0"), MSG_REFUSED },
	{ '-', BYTES("<a@b>"), MSG_REFUSED },
	{ '-', BYTES("<a@b>\0x\0"), MSG_REFUSED },
	/* '2' and 'e': an address, then ESMTP arguments joined with single spaces */
	{ '2', BYTES("<a@b>\0"), true, MILTER_R_ADDRCPT_PAR, 0, NULL, "<a@b>", "" },
	{ '2', BYTES("<a@b>\0NOTIFY=NEVER\0ORCPT=rfc822;a@b\0"), true, MILTER_R_ADDRCPT_PAR, 0,
	  NULL, "<a@b>", "NOTIFY=NEVER ORCPT=rfc822;a@b" },
	/* empty arguments are skipped */
	{ '2', BYTES("<a@b>\0\0NOTIFY=NEVER\0\0\0ORCPT=rfc822;a@b\0\0"), true, MILTER_R_ADDRCPT_PAR,
	  0, NULL, "<a@b>", "NOTIFY=NEVER ORCPT=rfc822;a@b" },
	{ '2', BYTES("\0NOTIFY=NEVER\0"), MSG_REFUSED },
	{ '2', BYTES("\0"), MSG_REFUSED },
	{ '2', BYTES(""), MSG_REFUSED },
	{ '2', BYTES("<a@b>"), MSG_REFUSED },
	{ '2', BYTES("<a@b>\0NOTIFY=NEVER"), MSG_REFUSED },
	{ '2', BYTES("<a@b>\0NOTIFY=NEVER ORCPT=rfc822;a@b\0"), MSG_REFUSED },
	{ '2', BYTES("<a@b>\0 NOTIFY=NEVER\0"), MSG_REFUSED },
	{ 'e', BYTES("<a@b>\0"), true, MILTER_R_CHGFROM, 0, NULL, "<a@b>", "" },
	/* the null sender */
	{ 'e', BYTES("<>\0"), true, MILTER_R_CHGFROM, 0, NULL, "<>", "" },
	{ 'e', BYTES("\0"), true, MILTER_R_CHGFROM, 0, NULL, "", "" },
	{ 'e', BYTES("<a@b>\0SIZE=100\0BODY=8BITMIME\0"), true, MILTER_R_CHGFROM, 0, NULL, "<a@b>",
	  "SIZE=100 BODY=8BITMIME" },
	{ 'e', BYTES(""), MSG_REFUSED },
	{ 'e', BYTES("<a@b>"), MSG_REFUSED },
	{ 'e', BYTES("<a@b>\0SIZE=100\0BODY"), MSG_REFUSED },
	{ 'e', BYTES("<a@b>\0SIZE=100 BODY=8BITMIME\0"), MSG_REFUSED },
	{ 'e', BYTES("<a@b>\0SIZE=100 \0"), MSG_REFUSED },
	/* 'b': the data as it is, NULs and all (body, body_len) */
	{ 'b', BYTES("new body\r\n"), true, MILTER_R_REPLBODY, 0, NULL, NULL, "" },
	{ 'b', BYTES(""), true, MILTER_R_REPLBODY, 0, NULL, NULL, "" },
	{ 'b', BYTES("a\0b"), true, MILTER_R_REPLBODY, 0, NULL, NULL, "" },
	/* not replies */
	{ 'x', BYTES(""), MSG_REFUSED },
	{ 'O', BYTES(NEG_ALL), MSG_REFUSED },
	{ 'C', BYTES("host\0U"), MSG_REFUSED },
	{ 'A', BYTES(""), MSG_REFUSED },
	{ 'Y', BYTES("550 no\0"), MSG_REFUSED },
	{ '\0', BYTES(""), MSG_REFUSED },
	{ '\xff', BYTES(""), MSG_REFUSED },
};

/* check_inside - s points into d[0..n) and ends there */
static void
check_inside(const char *s, const unsigned char *d, size_t n)
{
	const unsigned char *u = (const unsigned char *)s;

	ck_assert(u >= d && u < d + n);
	ck_assert_ptr_nonnull(memchr(u, '\0', (size_t)(d + n - u)));
}

/* check_field - a string field of a parsed message against what the case wants */
static void
check_field(const char *got, const char *want, const unsigned char *d, size_t n)
{
	ck_assert_pstr_eq(got, want);
	if (got != NULL)
		check_inside(got, d, n);
}

START_TEST(test_parse_msg)
{
	const struct msg_case *c = &parse_cases[_i];
	unsigned char *d;
	struct milter_msg m;
	const char *why = NULL;
	bool ok;

	/* a copy of exactly n octets: reading one past it is ASan's to report */
	d = xmalloc(c->in.n ? c->in.n : 1);
	memcpy(d, c->in.p, c->in.n);
	ok = milter_parse_msg(c->cmd, d, c->in.n, &m, &why);
	ck_assert_msg(ok == c->ok, "case %d: '%c' ok %d why %s", _i, c->cmd, ok, why ? why : "-");
	if (!ok) {
		ck_assert_ptr_nonnull(why);
		ck_assert_str_ne(why, "");
		free(d);
		return;
	}
	ck_assert_int_eq(m.kind, c->kind);
	ck_assert_int_eq(m.cmd, c->cmd);
	ck_assert_uint_eq(m.index, c->index);
	check_field(m.name, c->name, d, c->in.n);
	check_field(m.value, c->value, d, c->in.n);
	ck_assert_str_eq(m.args, c->args);
	if (c->args[0] != '\0')
		ck_assert_ptr_eq(m.args, m.argsbuf);
	if (c->kind == MILTER_R_REPLBODY) {
		ck_assert_ptr_eq(m.body, (const char *)d);
		ck_assert_uint_eq(m.body_len, c->in.n);
	} else {
		ck_assert_ptr_null(m.body);
		ck_assert_uint_eq(m.body_len, 0);
	}
	if (c->kind != MILTER_R_REPLYCODE)
		ck_assert_int_eq(m.reply.code, 0);
	free(d);
}
END_TEST

/* test_parse_msg_replycode - 'y' gives milter_parse_replycode's result */
START_TEST(test_parse_msg_replycode)
{
	static const unsigned char d[] = "451-4.3.0 busy\r\n451 4.3.0 try again\0";
	struct milter_msg m;
	const char *why;

	ck_assert(milter_parse_msg('y', d, sizeof(d) - 1, &m, &why));
	ck_assert_int_eq(m.kind, MILTER_R_REPLYCODE);
	ck_assert_int_eq(m.reply.code, 451);
	ck_assert_str_eq(m.reply.ecode, "4.3.0");
	ck_assert_str_eq(m.reply.text, "busy\ntry again");
	ck_assert(!milter_parse_msg('y', (const unsigned char *)"650 x", 6, &m, &why));
	ck_assert_str_eq(why, "reply code not 4xx or 5xx");
}
END_TEST

/* test_parse_msg_args_long - the joined arguments fit argsbuf, or the reply is refused */
START_TEST(test_parse_msg_args_long)
{
	struct milter_msg m;
	const size_t room = sizeof(m.argsbuf);
	unsigned char *d = xmalloc(2 * room + 16);
	const char *why;
	size_t a, n;

	/* "<a@b>\0" then two arguments of a octets each; joined: 2a + 1 octets and a NUL */
	for (a = room / 2 - 3; a <= room / 2 + 1; a++) {
		memcpy(d, "<a@b>", 6);
		n = 6;
		memset(d + n, 'A', a);
		n += a;
		d[n++] = '\0';
		memset(d + n, 'B', a);
		n += a;
		d[n++] = '\0';
		if (2 * a + 1 < room) {
			ck_assert_msg(milter_parse_msg('2', d, n, &m, &why), "a=%zu", a);
			ck_assert_uint_eq(strlen(m.args), 2 * a + 1);
			ck_assert_int_eq(m.args[a], ' ');
		} else {
			ck_assert_msg(!milter_parse_msg('e', d, n, &m, &why), "a=%zu", a);
			ck_assert_str_eq(why, "malformed ESMTP arguments");
		}
	}
	/* one argument far longer than the buffer */
	memcpy(d, "<a@b>", 6);
	memset(d + 6, 'X', 2 * room);
	d[6 + 2 * room] = '\0';
	ck_assert(!milter_parse_msg('e', d, 6 + 2 * room + 1, &m, &why));
	free(d);
}
END_TEST

/* ---- reply codes ---- */

#define CODE_REFUSED	false, 0, NULL, NULL

static const struct {
	const char *in;
	bool ok;
	int code;
	const char *ecode, *text;
} replycode_cases[] = {
	{ "550 5.7.1 text", true, 550, "5.7.1", "text" },
	{ "451 4.3.0 x", true, 451, "4.3.0", "x" },
	{ "421 4.7.0 closing", true, 421, "4.7.0", "closing" },
	{ "550", true, 550, "", "" },
	{ "550 ", true, 550, "", "" },
	{ "550 5.7.1", true, 550, "5.7.1", "" },
	{ "550 no way", true, 550, "", "no way" },
	{ "400 x", true, 400, "", "x" },
	{ "599 x", true, 599, "", "x" },
	{ "550 5.700.999 x", true, 550, "5.700.999", "x" },
	/* multi-line: one code, the texts joined with '\n' */
	{ "550-5.7.1 a\r\n550-5.7.1 b\r\n550 5.7.1 c", true, 550, "5.7.1", "a\nb\nc" },
	{ "550-5.7.1 a\n550 5.7.1 b", true, 550, "5.7.1", "a\nb" },
	{ "550-5.7.1 a\r\n550 5.7.1 b\r\n", true, 550, "5.7.1", "a\nb" },
	{ "550-a\r\n550 b", true, 550, "", "a\nb" },
	{ "550-a\r\n550-\r\n550 c", true, 550, "", "a\n\nc" },
	{ "550-a\r\n550", true, 550, "", "a\n" },
	/* the first line's enhanced code; another one stays in the text */
	{ "550-5.7.1 a\r\n550 5.7.2 b", true, 550, "5.7.1", "a\n5.7.2 b" },
	{ "550-a\r\n550 5.7.1 b", true, 550, "", "a\n5.7.1 b" },
	/* line ends */
	{ "550 a\r\n", true, 550, "", "a" },
	{ "550 a\n", true, 550, "", "a" },
	{ "550\r\n", true, 550, "", "" },
	{ "550\n", true, 550, "", "" },
	{ "550-a\n550 b\n", true, 550, "", "a\nb" },
	/* Sendmail's escape, and a lone '%' as it is */
	{ "550 5.7.1 100%% spam", true, 550, "5.7.1", "100% spam" },
	{ "550 50%", true, 550, "", "50%" },
	{ "550 a%%%", true, 550, "", "a%%" },
	{ "550 %%%%", true, 550, "", "%%" },
	/* an enhanced code of another class is text */
	{ "550 4.7.1 x", true, 550, "", "4.7.1 x" },
	{ "451 5.7.1 x", true, 451, "", "5.7.1 x" },
	{ "550 5.7 x", true, 550, "", "5.7 x" },
	{ "550 5.7.1234 x", true, 550, "", "5.7.1234 x" },
	{ "550 5.7.1x", true, 550, "", "5.7.1x" },
	{ "550 5..1 x", true, 550, "", "5..1 x" },
	{ "550 55.7.1 x", true, 550, "", "55.7.1 x" },
	/* controls become spaces; 8-bit text stays */
	{ "550 a\tb\x01" "c\x7f" "d\x1b", true, 550, "", "a b c d " },
	{ "550 caf\xc3\xa9", true, 550, "", "caf\xc3\xa9" },
	/* refused */
	{ "", CODE_REFUSED },
	{ "5", CODE_REFUSED },
	{ "55", CODE_REFUSED },
	{ "55a x", CODE_REFUSED },
	{ " 550 x", CODE_REFUSED },
	{ "550x", CODE_REFUSED },
	{ "5500 x", CODE_REFUSED },
	{ "550\tx", CODE_REFUSED },
	{ "250 ok", CODE_REFUSED },
	{ "354 go on", CODE_REFUSED },
	{ "399 x", CODE_REFUSED },
	{ "600 x", CODE_REFUSED },
	{ "650 x", CODE_REFUSED },
	{ "550-5.7.1 a\r\n551 5.7.1 b", CODE_REFUSED },
	{ "550-5.7.1 a\r\n450 4.7.1 b", CODE_REFUSED },
	{ "550-a\r\n550-b\r\n551 c", CODE_REFUSED },
	{ "550-a\r\nfoo", CODE_REFUSED },
	{ "550-a", CODE_REFUSED },
	{ "550-a\r\n", CODE_REFUSED },
	{ "550-a\r\n550-b\n", CODE_REFUSED },
	{ "550-", CODE_REFUSED },
	{ "550 a\r\nfoo", CODE_REFUSED },
	{ "550 a\r\n550 b", CODE_REFUSED },
	{ "550 a\n\n", CODE_REFUSED },
	{ "550 a\r\n\r\n", CODE_REFUSED },
	{ "550 a\rb", CODE_REFUSED },
	{ "550 a\r", CODE_REFUSED },
	{ "550-a\r550 b", CODE_REFUSED },
	{ "550 a\n\r", CODE_REFUSED },
	/* the line ends at the code just as after its text */
	{ "550\rb", CODE_REFUSED },
	{ "550\r", CODE_REFUSED },
	{ "550\nfoo", CODE_REFUSED },
	{ "550\r\nfoo", CODE_REFUSED },
	{ "550-a\r\n550\n550 b", CODE_REFUSED },
};

START_TEST(test_replycode)
{
	struct filter_reply r;
	const char *why = NULL;
	bool ok;

	memset(&r, 0xa5, sizeof(r));
	ok = milter_parse_replycode(replycode_cases[_i].in, &r, &why);
	ck_assert_msg(ok == replycode_cases[_i].ok, "\"%s\": ok %d why %s", replycode_cases[_i].in,
	    ok, why ? why : "-");
	if (!ok) {
		ck_assert_ptr_nonnull(why);
		return;
	}
	ck_assert_int_eq(r.code, replycode_cases[_i].code);
	ck_assert_str_eq(r.ecode, replycode_cases[_i].ecode);
	ck_assert_str_eq(r.text, replycode_cases[_i].text);
}
END_TEST

/* test_replycode_long - text past the reply's room is cut, NUL-terminated, never overflows */
START_TEST(test_replycode_long)
{
	struct filter_reply r;
	const size_t room = sizeof(r.text) - 1;
	const char *why;
	struct buf in;
	size_t i;

	buf_init(&in);
	buf_puts(&in, "550 5.7.1 ");
	for (i = 0; i < 1000; i++)
		buf_putc(&in, (char)('a' + i % 26));
	ck_assert(milter_parse_replycode(in.data, &r, &why));
	ck_assert_uint_eq(strlen(r.text), room);
	ck_assert_mem_eq(r.text, in.data + 10, room);
	ck_assert_str_eq(r.ecode, "5.7.1");

	/* a first line that fills the room: no '\n', nothing of the next lines */
	buf_reset(&in);
	buf_puts(&in, "451-4.3.0 ");
	for (i = 0; i < room; i++)
		buf_putc(&in, 'x');
	buf_puts(&in, "\r\n451-4.3.0 more\r\n451 4.3.0 %%%%");
	ck_assert(milter_parse_replycode(in.data, &r, &why));
	ck_assert_int_eq(r.code, 451);
	ck_assert_uint_eq(strlen(r.text), room);
	ck_assert_ptr_null(strchr(r.text, '\n'));

	/* many short lines: still checked to the end */
	buf_reset(&in);
	for (i = 0; i < 200; i++)
		buf_puts(&in, "550-5.7.1 line\r\n");
	buf_puts(&in, "550 5.7.1 last");
	ck_assert(milter_parse_replycode(in.data, &r, &why));
	ck_assert_uint_eq(strlen(r.text), room);
	ck_assert_mem_eq(r.text, "line\nline\n", 10);
	buf_puts(&in, "\r\n551 x");
	ck_assert(!milter_parse_replycode(in.data, &r, &why));
	buf_free(&in);
}
END_TEST

START_TEST(test_cmd_name)
{
	ck_assert_str_eq(milter_cmd_name(MILTER_C_OPTNEG), "negotiate");
	ck_assert_str_eq(milter_cmd_name(MILTER_C_BODYEOB), "eom");
	ck_assert_str_eq(milter_cmd_name(MILTER_C_QUIT), "quit");
	ck_assert_str_eq(milter_cmd_name('y'), "?");
}
END_TEST

static Suite *
milter_proto_suite(void)
{
	Suite *s = suite_create("milter_proto");
	TCase *tc;

	tc = tcase_create("frame");
	tcase_add_loop_test(tc, test_frame, 0, (int)ARRAY_SIZE(frame_cases));
	tcase_add_test(tc, test_frame_bytewise);
	tcase_add_test(tc, test_frame_stream);
	suite_add_tcase(s, tc);

	tc = tcase_create("put");
	tcase_add_test(tc, test_put_optneg);
	tcase_add_loop_test(tc, test_put_connect, 0, (int)ARRAY_SIZE(connect_cases));
	tcase_add_loop_test(tc, test_put_args, 0, (int)ARRAY_SIZE(args_cases));
	tcase_add_test(tc, test_put_strings);
	tcase_add_test(tc, test_put_raw);
	tcase_add_test(tc, test_cmd_name);
	suite_add_tcase(s, tc);

	tc = tcase_create("parse");
	tcase_add_loop_test(tc, test_parse_neg, 0, (int)ARRAY_SIZE(neg_cases));
	tcase_add_loop_test(tc, test_parse_msg, 0, (int)ARRAY_SIZE(parse_cases));
	tcase_add_test(tc, test_parse_msg_replycode);
	tcase_add_test(tc, test_parse_msg_args_long);
	tcase_add_loop_test(tc, test_replycode, 0, (int)ARRAY_SIZE(replycode_cases));
	tcase_add_test(tc, test_replycode_long);
	suite_add_tcase(s, tc);
	return s;
}

UNIT_MAIN(milter_proto_suite)
