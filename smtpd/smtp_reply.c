/*
 * smtp_reply.c - the reply table (see smtp_reply.h).
 *
 * Words are chosen so an operator can grep for them and a client's user
 * knows what to fix.  Never put client-supplied text in this table.
 */
#include "config.h"

#include <assert.h>
#include <string.h>

#include "smtp_reply.h"

static const struct smtp_reply_entry replies[R_MAX] = {
	[R_BANNER] = { 220, NULL, "%s ESMTP portier" },
	[R_GREET_PAUSE] = { 554, "5.5.1", "Error: you talked before the greeting" },
	[R_TOO_MANY_SESSIONS] = { 421, "4.7.0", "%s Error: too many connections, try again later" },
	[R_SHUTDOWN] = { 421, "4.3.2", "%s Service shutting down, closing transmission channel" },
	[R_BYE] = { 221, "2.0.0", "Bye" },
	[R_NOOP] = { 250, "2.0.0", "Ok" },
	[R_RSET] = { 250, "2.0.0", "Ok" },
	[R_HELO] = { 250, NULL, "%s" },
	[R_MAIL_OK] = { 250, "2.1.0", "Sender ok" },
	[R_RCPT_OK] = { 250, "2.1.5", "Recipient ok" },
	[R_DATA_GO] = { 354, NULL, "End data with <CR><LF>.<CR><LF>" },
	[R_BDAT_OK] = { 250, "2.0.0", "Chunk received" },
	[R_VRFY] = { 252, "2.5.0", "Cannot VRFY user, but will accept message and attempt delivery" },
	[R_HELP] = { 214, "2.0.0", "Commands: EHLO HELO MAIL RCPT DATA BDAT RSET NOOP QUIT VRFY HELP" },
	[R_UNKNOWN_CMD] = { 500, "5.5.2", "Error: command not recognized" },
	[R_CMD_TOO_LONG] = { 500, "5.5.2", "Error: command line too long" },
	[R_BARE_NEWLINE_CMD] = { 500, "5.5.2", "Error: bare <CR> or <LF> in command, lines must end with <CR><LF>" },
	[R_NUL_CMD] = { 500, "5.5.2", "Error: NUL byte in command" },
	[R_SYNTAX] = { 501, "5.5.4", "Error: syntax error in parameters or arguments" },
	[R_HELO_SYNTAX] = { 501, "5.5.4", "Syntax: HELO/EHLO hostname" },
	[R_ADDR_SYNTAX] = { 501, "5.1.3", "Error: bad recipient address syntax" },
	[R_FROM_SYNTAX] = { 501, "5.1.7", "Error: bad sender address syntax" },
	[R_PARAM_UNKNOWN] = { 555, "5.5.4", "Error: unsupported or invalid parameter" },
	[R_NOT_IMPLEMENTED] = { 502, "5.5.1", "Error: command not implemented" },
	[R_NEED_HELO] = { 503, "5.5.1", "Error: send HELO/EHLO first" },
	[R_NEED_MAIL] = { 503, "5.5.1", "Error: need MAIL command" },
	[R_NEED_RCPT] = { 503, "5.5.1", "Error: need RCPT command" },
	[R_NESTED_MAIL] = { 503, "5.5.1", "Error: nested MAIL command" },
	[R_BDAT_DATA_MIX] = { 503, "5.5.1", "Error: DATA not allowed after BDAT" },
	[R_BDAT_RCPT_MIX] = { 503, "5.5.1", "Error: RCPT not allowed after BDAT" },
	[R_TOO_MANY_RCPTS] = { 452, "4.5.3", "Error: too many recipients" },
	[R_SIZE_EXCEEDED] = { 552, "5.3.4", "Error: message size exceeds fixed limit" },
	[R_SIZE_DECLARED] = { 552, "5.3.4", "Error: declared message size exceeds fixed limit" },
	[R_HEADER_TOO_BIG] = { 552, "5.3.4", "Error: message header size exceeds fixed limit" },
	[R_LINE_TOO_LONG] = { 554, "5.6.0", "Error: message line longer than the limit" },
	[R_BARE_NEWLINE_DATA] = { 554, "5.6.0", "Error: bare <CR> or <LF> in message, lines must end with <CR><LF>" },
	[R_NUL_DATA] = { 554, "5.6.0", "Error: NUL byte in message" },
	[R_BDAT_SYNTAX] = { 501, "5.5.4", "Syntax: BDAT size [LAST]" },
	[R_TOO_MANY_ERRORS] = { 421, "4.7.0", "%s Error: too many errors" },
	[R_PIPELINE_FLOOD] = { 421, "4.7.0", "%s Error: too many pipelined commands" },
	[R_TIMEOUT] = { 421, "4.4.2", "%s Error: timeout exceeded" },
	[R_LOCAL_ERROR] = { 451, "4.3.0", "Error: local error in processing, try again later" },
	[R_BACKEND_DOWN] = { 451, "4.4.1", "Error: backend unavailable, try again later" },
	[R_BACKEND_TIMEOUT] = { 451, "4.4.2", "Error: backend timed out, try again later" },
	[R_BACKEND_GARBLED] = { 451, "4.4.0", "Error: backend protocol error, try again later" },
	[R_SMTPUTF8_NEEDED] = { 553, "5.6.7", "Error: non-ASCII address requires SMTPUTF8" },
	[R_FILTER_REJECT] = { 550, "5.7.1", "Error: rejected by policy" },
	[R_FILTER_TEMPFAIL] = { 451, "4.7.1", "Error: temporarily rejected by policy, try again later" },
	[R_DISCARDED] = { 250, "2.0.0", "Ok" },
	[R_RELAY_DENIED] = { 550, "5.7.1", "Error: relay access denied" },
	[R_AUTH_REQUIRED] = { 530, "5.7.0", "Error: authentication required" },
	[R_BODY_UNSUPPORTED] = { 555, "5.5.4", "Error: BODY=BINARYMIME is not supported here" },
	[R_LMTP_MIXED] = { 451, "4.3.0", "Error: delivery failed for some recipients, message not accepted, try again later" },
	[R_DSN_FAILED] = { 451, "4.3.0", "Error: could not return a delivery status notification, try again later" },
	[R_CONNECT_REFUSED] = { 554, "5.7.1", "%s Error: connection refused by policy" },
	[R_STARTTLS_GO] = { 220, "2.0.0", "Ready to start TLS" },
	[R_TLS_ACTIVE] = { 503, "5.5.1", "Error: TLS already active" },
	[R_TLS_REQUIRED] = { 530, "5.7.0", "Error: must issue a STARTTLS command first" },
	[R_AUTH_OK] = { 235, "2.7.0", "Authentication successful" },
	[R_AUTH_FAILED] = { 535, "5.7.8", "Error: authentication failed" },
	[R_AUTH_CANCEL] = { 501, "5.0.0", "Error: authentication cancelled" },
	[R_AUTH_BASE64] = { 501, "5.5.2", "Error: invalid base64 data" },
	[R_AUTH_MECH] = { 504, "5.5.4", "Error: unsupported authentication mechanism" },
	[R_AUTH_TEMPFAIL] = { 454, "4.7.0", "Error: temporary authentication failure, try again later" },
	[R_AUTH_ALREADY] = { 503, "5.5.1", "Error: already authenticated" },
	[R_AUTH_IN_TXN] = { 503, "5.5.1", "Error: AUTH not allowed during a mail transaction" },
	[R_AUTH_NOT_OFFERED] = { 503, "5.5.1", "Error: authentication not enabled" },
	[R_AUTH_BLOCKED] = { 421, "4.7.0", "%s Error: too many failed authentications, try again later" },
	[R_AUTH_LINE_TOO_LONG] = { 500, "5.5.6", "Error: authentication exchange line is too long" },
	[R_SENDER_NOT_OWNED] = { 553, "5.7.1", "Error: sender address not owned by the authenticated user" },
	[R_FROM_NOT_OWNED] = { 553, "5.7.1", "Error: From: header address not owned by the authenticated user" },
};

/* smtp_reply_get - table entry for id */
const struct smtp_reply_entry *
smtp_reply_get(enum smtp_reply_id id)
{
	assert(id < R_MAX && replies[id].code != 0);
	return &replies[id];
}

/* put - copy up to n octets of s at *off in dst, keeping room for CRLF and NUL */
static void
put(char *dst, size_t size, size_t *off, const char *s, size_t n)
{
	size_t room = size - 3 - *off;

	if (n > room)
		n = room;
	memcpy(dst + *off, s, n);
	*off += n;
}

/*
 * smtp_reply_line - a table reply, "CODE ECODE TEXT\r\n", in dst (NUL
 * terminated); host fills %s.  The text is cut, never the CRLF, if size is
 * too small.  Returns the length.  No printf: seven of these per message.
 */
size_t
smtp_reply_line(char *dst, size_t size, enum smtp_reply_id id, const char *host)
{
	const struct smtp_reply_entry *e = smtp_reply_get(id);
	const char *pct = strstr(e->text, "%s");
	char code[4];
	size_t off = 0;

	if (size < 8) {
		if (size > 0)
			dst[0] = '\0';
		return 0;
	}
	code[0] = (char)('0' + e->code / 100 % 10);
	code[1] = (char)('0' + e->code / 10 % 10);
	code[2] = (char)('0' + e->code % 10);
	code[3] = ' ';
	put(dst, size, &off, code, 4);
	if (e->ecode) {
		put(dst, size, &off, e->ecode, strlen(e->ecode));
		put(dst, size, &off, " ", 1);
	}
	if (pct) {
		put(dst, size, &off, e->text, (size_t)(pct - e->text));
		put(dst, size, &off, host, strlen(host));
		put(dst, size, &off, pct + 2, strlen(pct + 2));
	} else {
		put(dst, size, &off, e->text, strlen(e->text));
	}
	memcpy(dst + off, "\r\n", 3);
	return off + 2;
}

/* smtp_reply_custom - append a reply from parts, multi-line on \n */
void
smtp_reply_custom(struct buf *out, int code, const char *ecode, const char *text)
{
	const char *p = text, *nl;

	for (;;) {
		nl = strchr(p, '\n');
		buf_printf(out, "%d%c", code, nl ? '-' : ' ');
		if (ecode && *ecode)
			buf_printf(out, "%s ", ecode);
		if (nl == NULL) {
			buf_puts(out, p);
			buf_puts(out, "\r\n");
			return;
		}
		buf_append(out, p, (size_t)(nl - p));
		buf_puts(out, "\r\n");
		p = nl + 1;
	}
}
