/*
 * policyd.h - the "policyd" filter: a client of Postfix's SMTP access policy
 * delegation protocol (SMTPD_POLICY_README), and the pieces of it the unit
 * tests drive on their own: the request encoder, the reply parser, the
 * action table and the socket and stage parsers.
 *
 * "filters = policyd:NAME" configures it from [policyd NAME]; see
 * portier.conf(5) for every key and for how each action maps to a verdict.
 *
 * Nothing declared here does I/O; the strings returned point into the
 * caller's input or buffers, except where noted.
 */
#ifndef PORTIER_POLICYD_H
#define PORTIER_POLICYD_H

#include <stdbool.h>
#include <stddef.h>
#include <sys/socket.h>

#include "filter.h"

extern const struct filter_ops policyd_ops;

/* The stages a request is made at (Postfix's protocol_state). */
enum policyd_stage {
	POLICYD_CONNECT,	/* CONNECT */
	POLICYD_HELO,		/* HELO */
	POLICYD_MAIL,		/* MAIL */
	POLICYD_RCPT,		/* RCPT */
	POLICYD_EOM,		/* END-OF-MESSAGE: "stages = data" */
};

#define POLICYD_DEFAULT_STAGES	(1u << POLICYD_RCPT)
#define POLICYD_REQUEST_MAX	(64 * 1024)	/* a larger request is a failure */

/* policyd_stage_name - "rcpt" etc., the word of "stages =" and of the log */
const char *policyd_stage_name(enum policyd_stage s);

/*
 * policyd_parse_stages - "rcpt data", "connect,helo" into a mask of
 * (1 << enum policyd_stage); false + *err_r (to free) on an unknown word or
 * an empty list.
 */
bool policyd_parse_stages(const char *value, unsigned *mask_r, char **err_r);

/* What a request says about the session and the transaction. */
struct policyd_query {
	enum policyd_stage stage;
	const struct filter_session *sess;
	const struct filter_txn *txn;	/* NULL at CONNECT and HELO */
	const char *arg;	/* the HELO name at HELO, the recipient at RCPT, else NULL */
	const char *context;	/* policy_context */
};

/*
 * policyd_encode - append the request (every attribute Postfix 3.8 sends,
 * in its order, then the empty line) to out.  A value's CR, LF and other
 * controls become '?', as Postfix's printable() does; an attribute portier
 * has no value for is sent empty.  false + *err_r (to free) when the request
 * would exceed POLICYD_REQUEST_MAX octets (out then holds a part of it).
 */
bool policyd_encode(const struct policyd_query *q, struct buf *out, char **err_r);

/*
 * A reply being read: "name=value" lines up to an empty one.  The parser
 * does no I/O and resumes on partial input.  Line ends are LF, or CRLF.
 */
struct policyd_reply {
	size_t max_line;	/* octets of a line, its line end excluded ("max_reply") */
	unsigned nlines;	/* attribute lines read */
	char *action;		/* the first action='s value (owned; policyd_reply_free), NULL if none */
	char why[160];		/* POLICYD_REPLY_ERROR: what was wrong, for the log */
	char line[80];		/* POLICYD_REPLY_ERROR: the start of the offending line, a NUL as '?' */
	size_t line_len;	/* its length in line */
};

enum policyd_reply_status {
	POLICYD_REPLY_MORE,	/* feed the rest when it comes */
	POLICYD_REPLY_DONE,	/* the empty line was read: rp->action is the answer */
	POLICYD_REPLY_ERROR,	/* not the protocol, or a line over max_line: rp->why */
};

#define POLICYD_REPLY_MAX_LINES	64	/* attributes in one reply */

void policyd_reply_init(struct policyd_reply *rp, size_t max_line);
void policyd_reply_free(struct policyd_reply *rp);
/*
 * policyd_reply_feed - parse the complete lines of data[0..len); *used_r is
 * how much was consumed (the rest, a partial line, comes again with more).
 * Never call it again after DONE or ERROR without policyd_reply_init.
 */
enum policyd_reply_status policyd_reply_feed(struct policyd_reply *rp, const char *data,
    size_t len, size_t *used_r);

/* An action (Postfix access(5)) and what it means here. */
enum policyd_act {
	POLICYD_ACT_DUNNO,	/* OK, DUNNO, empty, all digits: CONTINUE */
	POLICYD_ACT_REJECT,	/* 5NN text, REJECT [text]: REJECT, reply set */
	POLICYD_ACT_DEFER,	/* 4NN text, DEFER [text], DEFER_IF_PERMIT [text]: TEMPFAIL, reply set */
	POLICYD_ACT_DEFER_IF_REJECT,	/* CONTINUE, logged */
	POLICYD_ACT_DISCARD,	/* DISCARD [text]: DISCARD */
	POLICYD_ACT_HOLD,	/* HOLD [text], QUARANTINE [text]: QUARANTINE, reason in reply.text */
	POLICYD_ACT_PREPEND,	/* PREPEND name: value: arg, added at end of message */
	POLICYD_ACT_REDIRECT,	/* REDIRECT address: arg, the only recipient at end of message */
	POLICYD_ACT_BCC,	/* BCC address: arg, one more recipient at end of message */
	POLICYD_ACT_WARN,	/* WARN text, INFO text: logged, CONTINUE */
	POLICYD_ACT_UNSUPPORTED,	/* FILTER transport:dest: logged as not supported, CONTINUE */
};

struct policyd_action {
	enum policyd_act act;
	enum filter_verdict verdict;	/* what the filter answers */
	struct filter_reply reply;	/* REJECT, DEFER: code, ecode, text; HOLD: the reason */
	const char *arg;	/* PREPEND, REDIRECT, BCC: points into the action string */
};

/*
 * policyd_action_parse - map an action= value (case-insensitive words);
 * trailing white space is cut off it in place, a->arg points into it.
 * false for anything Postfix's access(5) does not define, or defines but
 * malformed here (a PREPEND that is no header field, a REDIRECT without an
 * address): the request failed.
 */
bool policyd_action_parse(char *action, struct policyd_action *a);

#endif
