/*
 * milter_proto.h - the Sendmail milter protocol, version 6, MTA side:
 * framing, the packets portier sends, and the decoding of what a milter
 * answers.  No I/O and no state: filters/milter.c drives a connection with
 * it, the fuzzer feeds it garbage.
 *
 * A packet is a 32-bit length in network order (the command octet and the
 * data), the command, then the data.  Strings in data end with a NUL.
 */
#ifndef PORTIER_MILTER_PROTO_H
#define PORTIER_MILTER_PROTO_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "buf.h"
#include "filter.h"

#define MILTER_VERSION		6	/* the version portier speaks */
#define MILTER_VERSION_MIN	2	/* the oldest it accepts (as Postfix and Sendmail) */
#define MILTER_CHUNK		65535	/* body octets per BODY packet */
#define MILTER_PACKET_MAX	(1024 * 1024)	/* the largest packet a milter may send */

/* Commands, MTA to milter. */
#define MILTER_C_ABORT		'A'
#define MILTER_C_BODY		'B'
#define MILTER_C_CONNECT	'C'
#define MILTER_C_MACRO		'D'
#define MILTER_C_BODYEOB	'E'
#define MILTER_C_HELO		'H'
#define MILTER_C_HEADER		'L'
#define MILTER_C_MAIL		'M'
#define MILTER_C_EOH		'N'
#define MILTER_C_OPTNEG		'O'
#define MILTER_C_QUIT		'Q'
#define MILTER_C_RCPT		'R'
#define MILTER_C_DATA		'T'

/* Actions a milter may ask for (SMFIF_*). */
#define MILTER_A_ADDHDRS	0x01u
#define MILTER_A_CHGBODY	0x02u
#define MILTER_A_ADDRCPT	0x04u
#define MILTER_A_DELRCPT	0x08u
#define MILTER_A_CHGHDRS	0x10u
#define MILTER_A_QUARANTINE	0x20u
#define MILTER_A_CHGFROM	0x40u
#define MILTER_A_ADDRCPT_PAR	0x80u
#define MILTER_A_SETSYMLIST	0x100u
#define MILTER_A_ALL		0x1ffu

/* Protocol steps and replies a milter may turn off (SMFIP_*). */
#define MILTER_P_NOCONNECT	0x1u
#define MILTER_P_NOHELO		0x2u
#define MILTER_P_NOMAIL		0x4u
#define MILTER_P_NORCPT		0x8u
#define MILTER_P_NOBODY		0x10u
#define MILTER_P_NOHDRS		0x20u
#define MILTER_P_NOEOH		0x40u
#define MILTER_P_NR_HDR		0x80u
#define MILTER_P_NOUNKNOWN	0x100u
#define MILTER_P_NODATA		0x200u
#define MILTER_P_SKIP		0x400u
#define MILTER_P_RCPT_REJ	0x800u
#define MILTER_P_NR_CONN	0x1000u
#define MILTER_P_NR_HELO	0x2000u
#define MILTER_P_NR_MAIL	0x4000u
#define MILTER_P_NR_RCPT	0x8000u
#define MILTER_P_NR_DATA	0x10000u
#define MILTER_P_NR_UNKN	0x20000u
#define MILTER_P_NR_EOH		0x40000u
#define MILTER_P_NR_BODY	0x80000u
#define MILTER_P_HDR_LEADSPC	0x100000u
/*
 * What portier offers: every step may be turned off and every no-reply
 * honoured, SKIP and HDR_LEADSPC understood.  Not RCPT_REJ (a recipient
 * refused before the milter is not shown to it) and not the bigger body
 * chunks (MDS_*).  NOUNKNOWN and NR_UNKN are offered and cost nothing:
 * portier never sends an unknown command.
 */
#define MILTER_P_OFFER		0x1ff7ffu

/* Macro stages (SMFIM_*), for the symbol lists a milter asks for. */
enum milter_macro_stage {
	MILTER_M_CONNECT, MILTER_M_HELO, MILTER_M_MAIL, MILTER_M_RCPT,
	MILTER_M_DATA, MILTER_M_EOM, MILTER_M_EOH, MILTER_M_STAGES
};

/* What the negotiation reply said. */
struct milter_neg {
	uint32_t version;
	uint32_t actions;
	uint32_t protocol;
	char *symlist[MILTER_M_STAGES];	/* "j {client_addr}", or NULL: the default list */
};

/* What one reply packet says. */
enum milter_msg_kind {
	MILTER_R_CONTINUE,	/* 'c' */
	MILTER_R_ACCEPT,	/* 'a' */
	MILTER_R_REJECT,	/* 'r' */
	MILTER_R_TEMPFAIL,	/* 't' */
	MILTER_R_DISCARD,	/* 'd' */
	MILTER_R_REPLYCODE,	/* 'y': reply holds it */
	MILTER_R_SKIP,		/* 's' */
	MILTER_R_CONN_FAIL,	/* 'f' */
	MILTER_R_SHUTDOWN,	/* '4' */
	MILTER_R_PROGRESS,	/* 'p' */
	MILTER_R_QUARANTINE,	/* 'q': value is the reason */
	MILTER_R_ADDHEADER,	/* 'h': name, value */
	MILTER_R_INSHEADER,	/* 'i': index, name, value */
	MILTER_R_CHGHEADER,	/* 'm': index, name, value ("" deletes) */
	MILTER_R_ADDRCPT,	/* '+': value */
	MILTER_R_ADDRCPT_PAR,	/* '2': value, args */
	MILTER_R_DELRCPT,	/* '-': value */
	MILTER_R_CHGFROM,	/* 'e': value, args */
	MILTER_R_REPLBODY,	/* 'b': body, body_len */
};

struct milter_msg {
	enum milter_msg_kind kind;
	char cmd;
	uint32_t index;
	const char *name;	/* these point into the packet */
	const char *value;
	const char *args;	/* ESMTP arguments joined with spaces in argsbuf, "" none */
	const char *body;
	size_t body_len;
	struct filter_reply reply;	/* REPLYCODE */
	char argsbuf[1024];
};

enum milter_frame_status {
	MILTER_FRAME_MORE,	/* not a whole packet yet */
	MILTER_FRAME_OK,
	MILTER_FRAME_BAD,	/* a length of 0 or over max: the stream is lost */
};

/*
 * milter_frame - the packet at the start of p (n octets at hand): its
 * command, data and length, and *used its whole size.  BAD sets *why.
 */
enum milter_frame_status milter_frame(const unsigned char *p, size_t n, size_t max, char *cmd,
    const unsigned char **data, size_t *dlen, size_t *used, const char **why);

/* milter_put - append one packet (cmd, then len octets of data) */
void milter_put(struct buf *out, char cmd, const void *data, size_t len);
/* milter_put_head - a packet's first five octets, when its data goes apart */
void milter_put_head(unsigned char head[5], char cmd, size_t len);
/* milter_put_optneg - the MTA's negotiation packet */
void milter_put_optneg(struct buf *out, uint32_t actions, uint32_t protocol);
/*
 * milter_put_strings - a packet of NUL-terminated strings: cmd, then each
 * of the n strings.  For MAIL and RCPT, strs[0] is "<address>" and the
 * ESMTP parameters follow, one string each.
 */
void milter_put_strings(struct buf *out, char cmd, const char *const *strs, size_t n);
/*
 * milter_put_connect - CONNECT: host name, family ('4', '6', 'L', 'U'),
 * port and address ('U': neither)
 */
void milter_put_connect(struct buf *out, const char *host, char family, unsigned port,
    const char *addr);
/*
 * milter_put_args - a MAIL or RCPT packet: "<addr>" then the space-separated
 * ESMTP parameters of params, one string each
 */
void milter_put_args(struct buf *out, char cmd, const char *addr, const char *params);

/*
 * milter_parse_neg - the milter's negotiation reply (data of an 'O'
 * packet) into neg (free its lists with milter_neg_clear), checked against
 * what was offered: a version from 2 to 6, actions and steps within the
 * offer, symbol lists well formed.  Sendmail's rule for old versions: a
 * milter of version 2 gets no unknown commands, of 3 or less no DATA.
 * false + *why on a violation.
 */
bool milter_parse_neg(const unsigned char *d, size_t n, uint32_t offer_actions,
    uint32_t offer_protocol, struct milter_neg *neg, const char **why);
void milter_neg_clear(struct milter_neg *neg);

/*
 * milter_parse_msg - a reply packet (cmd, its data) into m, whose pointers
 * point into d (valid while d is).  false + *why: an unknown command, or
 * data that is not what the command carries (a string without its NUL, a
 * reply code that is not 4xx/5xx, its lines disagreeing).
 */
bool milter_parse_msg(char cmd, const unsigned char *d, size_t n, struct milter_msg *m,
    const char **why);

/*
 * milter_parse_replycode - "550 5.7.1 text" or a multi-line
 * "550-5.7.1 a\r\n550 5.7.1 b" into r: one code, the first line's enhanced
 * code when its class agrees, the texts joined with '\n' (the session's
 * multi-line form), "%%" read as "%" (Sendmail's escape), any other
 * control but a line break a space.  false + *why for anything else.
 */
bool milter_parse_replycode(const char *s, struct filter_reply *r, const char **why);

/* milter_cmd_name - "connect" etc. for logs */
const char *milter_cmd_name(char cmd);

#endif
