/*
 * testmilter.c - a libmilter test milter for the integration tests of portier's
 * milter client (filters/milter.c).  The input decides what it does, so one
 * process serves many test cases: HELO names, sender and recipient local parts
 * select verdicts and replies; X-Test-Milter: headers select the end-of-message
 * actions (every smfi_* modification, progress, sleeps, verdicts, replies).
 *
 * With -l it appends one line per callback to a log file, written with one
 * write(2) (several milters and threads may share the file):
 *	NAME EVENT ARGS | macro=value ...
 * Callback lines always carry the " |" part (empty when no macro is set);
 * the "NAME did COMMAND ... rc=N" lines of end-of-message commands have none.
 * Text from the MTA is escaped: \\ \r \n \t and \xNN for other non-printables.
 *
 * Triggers (local parts match by prefix, case-insensitive):
 *	connect	-c VERDICT (default continue)
 *	HELO	reject|tempfail|reply|accept|discard.helo.test
 *	MAIL	mreject mtempfail mdiscard maccept mreply (553 5.1.8) mmulti (550 5.7.1,
 *		three lines) mtreply (451 4.7.1)
 *	RCPT	rreject rtempfail rdiscard raccept rreply (550 5.1.1)
 *	header	X-Reject-At-Header rejects (when headers get replies)
 *	body	a chunk with "SKIPME" gets SKIP (when the MTA offered SMFIP_SKIP)
 *	EOM	each "X-Test-Milter: [NAME:] COMMAND ARGS" in order, see tm_eomcmds[]:
 *		addheader insheader chgheader delheader addrcpt addrcpt_par delrcpt
 *		chgfrom replbody quarantine progress sleep reject tempfail discard
 *		accept replycode mlreply; "\n" in a VALUE/TEXT becomes CRLF.
 *
 * It stands for a third-party milter: it must never link libportier.
 * Usage: see usage() below and tests/milters/README.
 */
#include "config.h"

#include <sys/types.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <netinet/in.h>
#include <arpa/inet.h>

#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>

#include <libmilter/mfapi.h>

#include <openssl/evp.h>

#define TM_ALL_ACTIONS	0x1ffUL		/* SMFIF_ADDHDRS .. SMFIF_SETSYMLIST */
#define TM_MLREPLY_MAX	32		/* libmilter's limit of smfi_setmlreply lines */

/* The options: set in main, read-only once smfi_main runs. */
static struct {
	char		*name;
	int		logfd;			/* -1: no log */
	unsigned long	actions;
	bool		actions_set;
	unsigned long	proto;
	bool		leadspc;
	char		*symlist[SMFIM_LAST + 1];	/* -S, per SMFIM_ stage */
	sfsistat	connect_verdict;
} tm_opts = { .name = "tm", .logfd = -1, .connect_verdict = SMFIS_CONTINUE };

/*
 * Protocol bits of the last negotiation.  libmilter calls xxfi_close at QUIT_NC
 * ('K') and then goes on with the same milter connection without a new
 * negotiation; the state re-created after that takes the bits from here.
 */
static atomic_ulong tm_last_proto;

/* The macros logged after " | ", in this order, when smfi_getsymval knows them. */
static char *const tm_macros[] = {
	"j", "_", "v", "{daemon_name}", "{daemon_addr}", "{daemon_port}", "{if_name}",
	"{if_addr}", "{client_addr}", "{client_port}", "{client_name}", "{client_ptr}",
	"{client_resolve}", "{tls_version}", "{cipher}", "{cipher_bits}", "{cert_subject}",
	"{cert_issuer}", "{auth_type}", "{auth_authen}", "{auth_author}", "i", "{mail_addr}",
	"{mail_host}", "{mail_mailer}", "{rcpt_addr}", "{rcpt_host}", "{rcpt_mailer}",
};

/* Per milter connection (smfi_setpriv); the message part is reset per transaction. */
struct tm_conn {
	unsigned long	proto;		/* SMFIP_ bits this milter asked for */
	EVP_MD_CTX	*body;		/* SHA-256 over every body chunk received */
	uint64_t	bodylen;
	char		**cmds;		/* X-Test-Milter: values, in order */
	size_t		ncmds;
};

/* A growable string; the only kind of buffer here. */
struct tm_str {
	char	*p;
	size_t	len, cap;
};

/* Verdict and reply selected by a HELO name or an address's local part. */
struct tm_trigger {
	const char	*key;
	sfsistat	verdict;
	char		*code, *ecode, *text;	/* smfi_setreply when code != NULL */
	bool		multi;			/* smfi_setmlreply, three lines */
};

static const struct tm_trigger tm_helo_triggers[] = {
	{ "reject.helo.test", SMFIS_REJECT, NULL, NULL, NULL, false },
	{ "tempfail.helo.test", SMFIS_TEMPFAIL, NULL, NULL, NULL, false },
	{ "reply.helo.test", SMFIS_REJECT, "554", "5.7.0", "helo refused by testmilter", false },
	{ "accept.helo.test", SMFIS_ACCEPT, NULL, NULL, NULL, false },
	{ "discard.helo.test", SMFIS_DISCARD, NULL, NULL, NULL, false },
	{ NULL, SMFIS_CONTINUE, NULL, NULL, NULL, false },
};

static const struct tm_trigger tm_mail_triggers[] = {
	{ "mreject", SMFIS_REJECT, NULL, NULL, NULL, false },
	{ "mtempfail", SMFIS_TEMPFAIL, NULL, NULL, NULL, false },
	{ "mdiscard", SMFIS_DISCARD, NULL, NULL, NULL, false },
	{ "maccept", SMFIS_ACCEPT, NULL, NULL, NULL, false },
	{ "mreply", SMFIS_REJECT, "553", "5.1.8", "sender refused by testmilter", false },
	{ "mmulti", SMFIS_REJECT, "550", "5.7.1", NULL, true },
	{ "mtreply", SMFIS_TEMPFAIL, "451", "4.7.1", "try later (testmilter)", false },
	{ NULL, SMFIS_CONTINUE, NULL, NULL, NULL, false },
};

static const struct tm_trigger tm_rcpt_triggers[] = {
	{ "rreject", SMFIS_REJECT, NULL, NULL, NULL, false },
	{ "rtempfail", SMFIS_TEMPFAIL, NULL, NULL, NULL, false },
	{ "rdiscard", SMFIS_DISCARD, NULL, NULL, NULL, false },
	{ "raccept", SMFIS_ACCEPT, NULL, NULL, NULL, false },
	{ "rreply", SMFIS_REJECT, "550", "5.1.1", "no such user here (testmilter)", false },
	{ NULL, SMFIS_CONTINUE, NULL, NULL, NULL, false },
};

/* xalloc - realloc or die: a test tool has no use for half-done work */
static void *
xalloc(void *p, size_t n)
{
	if ((p = realloc(p, n)) == NULL) {
		fputs("testmilter: out of memory\n", stderr);
		abort();
	}
	return p;
}

/* xstrdup - strdup or die */
static char *
xstrdup(const char *s)
{
	size_t n = strlen(s) + 1;

	return memcpy(xalloc(NULL, n), s, n);
}

/* str_add - append n bytes */
static void
str_add(struct tm_str *s, const char *p, size_t n)
{
	if (s->len + n + 1 > s->cap) {
		s->cap = (s->len + n + 1) * 2;
		s->p = xalloc(s->p, s->cap);
	}
	memcpy(s->p + s->len, p, n);
	s->len += n;
	s->p[s->len] = '\0';
}

/* str_addf - append printf-style */
static void __attribute__((format(printf, 2, 3)))
str_addf(struct tm_str *s, const char *fmt, ...)
{
	char buf[256];
	va_list ap;
	int n;

	va_start(ap, fmt);
	n = vsnprintf(buf, sizeof buf, fmt, ap);
	va_end(ap);
	if (n < 0 || (size_t)n >= sizeof buf)
		abort();	/* only short fixed formats come here */
	str_add(s, buf, (size_t)n);
}

/* str_esc - append text from the MTA escaped: \\ \r \n \t, \xNN for other non-printables */
static void
str_esc(struct tm_str *s, const char *p)
{
	unsigned char c;

	for (; *p != '\0'; p++) {
		c = (unsigned char)*p;
		if (c == '\\')
			str_add(s, "\\\\", 2);
		else if (c == '\r')
			str_add(s, "\\r", 2);
		else if (c == '\n')
			str_add(s, "\\n", 2);
		else if (c == '\t')
			str_add(s, "\\t", 2);
		else if (c < 0x20 || c >= 0x7f)
			str_addf(s, "\\x%02x", c);
		else
			str_add(s, p, 1);
	}
}

/* log_begin - start a log line "NAME event" in s */
static void
log_begin(struct tm_str *s, const char *event)
{
	memset(s, 0, sizeof *s);
	str_add(s, tm_opts.name, strlen(tm_opts.name));
	str_add(s, " ", 1);
	str_add(s, event, strlen(event));
}

/* log_write - finish the line in s (with the macros when ctx is set), write it once, free s */
static void
log_write(SMFICTX *ctx, struct tm_str *s)
{
	const char *v;
	size_t i;

	if (ctx != NULL) {
		str_add(s, " |", 2);
		for (i = 0; i < sizeof tm_macros / sizeof tm_macros[0]; i++) {
			if ((v = smfi_getsymval(ctx, tm_macros[i])) == NULL)
				continue;
			str_addf(s, " %s=", tm_macros[i]);
			str_esc(s, v);
		}
	}
	str_add(s, "\n", 1);
	if (tm_opts.logfd >= 0 && write(tm_opts.logfd, s->p, s->len) != (ssize_t)s->len)
		perror("testmilter: log");
	free(s->p);
}

/* log_event - log a callback whose arguments are one escaped string (or none) */
static void
log_event(SMFICTX *ctx, const char *event, const char *arg)
{
	struct tm_str s;

	log_begin(&s, event);
	if (arg != NULL) {
		str_add(&s, " ", 1);
		str_esc(&s, arg);
	}
	log_write(ctx, &s);
}

/* msg_reset - forget the current message: body digest, length, commands */
static void
msg_reset(struct tm_conn *c)
{
	size_t i;

	for (i = 0; i < c->ncmds; i++)
		free(c->cmds[i]);
	free(c->cmds);
	c->cmds = NULL;
	c->ncmds = 0;
	c->bodylen = 0;
	if (c->body == NULL && (c->body = EVP_MD_CTX_new()) == NULL)
		abort();
	if (EVP_DigestInit_ex(c->body, EVP_sha256(), NULL) != 1)
		abort();
}

/* conn_get - this connection's state, created on first use */
static struct tm_conn *
conn_get(SMFICTX *ctx)
{
	struct tm_conn *c;

	if ((c = smfi_getpriv(ctx)) != NULL)
		return c;
	c = xalloc(NULL, sizeof *c);
	memset(c, 0, sizeof *c);
	c->proto = atomic_load(&tm_last_proto);
	msg_reset(c);
	smfi_setpriv(ctx, c);
	return c;
}

/* reply - verdict r, or no reply at all where the milter negotiated SMFIP_NR_* for the step */
static sfsistat
reply(SMFICTX *ctx, unsigned long nr_bit, sfsistat r)
{
	return (conn_get(ctx)->proto & nr_bit) != 0 ? SMFIS_NOREPLY : r;
}

/* trigger_run - the verdict of the first trigger whose key starts s (exact if whole) */
static sfsistat
trigger_run(SMFICTX *ctx, const struct tm_trigger *t, const char *s, size_t n, bool whole)
{
	size_t klen;

	for (; t->key != NULL; t++) {
		klen = strlen(t->key);
		if (klen > n || (whole && klen != n) || strncasecmp(s, t->key, klen) != 0)
			continue;
		if (t->multi)
			(void)smfi_setmlreply(ctx, t->code, t->ecode, "first line", "second line",
			    "third line", (char *)NULL);
		else if (t->code != NULL)
			(void)smfi_setreply(ctx, t->code, t->ecode, t->text);
		return t->verdict;
	}
	return SMFIS_CONTINUE;
}

/* local_part - the local part of "<route:local@domain>" as pointer and length */
static const char *
local_part(const char *addr, size_t *len_r)
{
	const char *p = addr, *colon;

	if (*p == '<')
		p++;
	if (*p == '@' && (colon = strchr(p, ':')) != NULL)
		p = colon + 1;
	*len_r = strcspn(p, "@>");
	return p;
}

/* log_argv - log an envelope command with its arguments */
static void
log_argv(SMFICTX *ctx, const char *event, char **argv)
{
	struct tm_str s;

	log_begin(&s, event);
	for (; *argv != NULL; argv++) {
		str_add(&s, " ", 1);
		str_esc(&s, *argv);
	}
	log_write(ctx, &s);
}

/* tm_negotiate - take what -A/-P/-L/-S ask for, within what the MTA offered */
static sfsistat
tm_negotiate(SMFICTX *ctx, unsigned long f0, unsigned long f1, unsigned long f2,
    unsigned long f3, unsigned long *pf0, unsigned long *pf1, unsigned long *pf2,
    unsigned long *pf3)
{
	unsigned long act, proto;
	struct tm_str s;
	int i;

	act = (tm_opts.actions_set ? tm_opts.actions : f0) & f0;
	proto = tm_opts.proto & f1;
	if (tm_opts.leadspc)
		proto |= SMFIP_HDR_LEADSPC & f1;
	proto |= SMFIP_SKIP & f1;
	for (i = 0; i <= SMFIM_LAST; i++) {
		if (tm_opts.symlist[i] == NULL || (f0 & SMFIF_SETSYMLIST) == 0)
			continue;
		act |= SMFIF_SETSYMLIST;
		(void)smfi_setsymlist(ctx, i, tm_opts.symlist[i]);
	}
	*pf0 = act;
	*pf1 = proto;
	*pf2 = 0;
	*pf3 = 0;
	conn_get(ctx)->proto = proto;
	atomic_store(&tm_last_proto, proto);

	log_begin(&s, "negotiate");
	str_addf(&s, " f0=0x%lx f1=0x%lx f2=0x%lx f3=0x%lx", f0, f1, f2, f3);
	str_addf(&s, " req_f0=0x%lx req_f1=0x%lx", act, proto);
	log_write(ctx, &s);
	return SMFIS_CONTINUE;
}

/* tm_connect - log the client; verdict from -c */
static sfsistat
tm_connect(SMFICTX *ctx, char *host, struct sockaddr *sa)
{
	char addr[INET6_ADDRSTRLEN] = "";
	const char *family = "unknown", *a = addr;
	unsigned port = 0;
	struct tm_str s;

	if (sa != NULL && sa->sa_family == AF_INET) {
		const struct sockaddr_in *sin = (const struct sockaddr_in *)(void *)sa;

		family = "4";
		inet_ntop(AF_INET, &sin->sin_addr, addr, sizeof addr);
		port = ntohs(sin->sin_port);
	} else if (sa != NULL && sa->sa_family == AF_INET6) {
		const struct sockaddr_in6 *sin6 = (const struct sockaddr_in6 *)(void *)sa;

		family = "6";
		inet_ntop(AF_INET6, &sin6->sin6_addr, addr, sizeof addr);
		port = ntohs(sin6->sin6_port);
	} else if (sa != NULL && sa->sa_family == AF_UNIX) {
		family = "unix";
		a = ((const struct sockaddr_un *)(void *)sa)->sun_path;
	}
	log_begin(&s, "connect host=");
	str_esc(&s, host);
	str_addf(&s, " family=%s addr=", family);
	str_esc(&s, a);
	str_addf(&s, " port=%u", port);
	log_write(ctx, &s);
	return reply(ctx, SMFIP_NR_CONN, tm_opts.connect_verdict);
}

/* tm_helo - verdict by HELO name (tm_helo_triggers) */
static sfsistat
tm_helo(SMFICTX *ctx, char *name)
{
	log_event(ctx, "helo", name);
	return reply(ctx, SMFIP_NR_HELO, trigger_run(ctx, tm_helo_triggers, name, strlen(name), true));
}

/* tm_envfrom - start a message; verdict by the sender's local part (tm_mail_triggers) */
static sfsistat
tm_envfrom(SMFICTX *ctx, char **argv)
{
	const char *lp;
	size_t n;

	msg_reset(conn_get(ctx));
	log_argv(ctx, "mail", argv);
	lp = local_part(argv[0], &n);
	return reply(ctx, SMFIP_NR_MAIL, trigger_run(ctx, tm_mail_triggers, lp, n, false));
}

/* tm_envrcpt - verdict by the recipient's local part (tm_rcpt_triggers) */
static sfsistat
tm_envrcpt(SMFICTX *ctx, char **argv)
{
	const char *lp;
	size_t n;

	log_argv(ctx, "rcpt", argv);
	lp = local_part(argv[0], &n);
	return reply(ctx, SMFIP_NR_RCPT, trigger_run(ctx, tm_rcpt_triggers, lp, n, false));
}

/* tm_data - log DATA */
static sfsistat
tm_data(SMFICTX *ctx)
{
	log_event(ctx, "data", NULL);
	return reply(ctx, SMFIP_NR_DATA, SMFIS_CONTINUE);
}

/* tm_header - log the field; keep X-Test-Milter: values; X-Reject-At-Header rejects */
static sfsistat
tm_header(SMFICTX *ctx, char *name, char *value)
{
	struct tm_conn *c = conn_get(ctx);
	struct tm_str s;

	log_begin(&s, "header ");
	str_esc(&s, name);
	str_add(&s, " ", 1);
	str_esc(&s, value);
	log_write(ctx, &s);
	if (strcasecmp(name, "X-Test-Milter") == 0) {
		c->cmds = xalloc(c->cmds, (c->ncmds + 1) * sizeof c->cmds[0]);
		c->cmds[c->ncmds++] = xstrdup(value);
	}
	if (strcasecmp(name, "X-Reject-At-Header") == 0)
		return reply(ctx, SMFIP_NR_HDR, SMFIS_REJECT);
	return reply(ctx, SMFIP_NR_HDR, SMFIS_CONTINUE);
}

/* tm_eoh - log the end of the header */
static sfsistat
tm_eoh(SMFICTX *ctx)
{
	log_event(ctx, "eoh", NULL);
	return reply(ctx, SMFIP_NR_EOH, SMFIS_CONTINUE);
}

/* tm_body - hash and count the chunk; SKIP on "SKIPME" when the MTA understands it */
static sfsistat
tm_body(SMFICTX *ctx, unsigned char *p, size_t len)
{
	struct tm_conn *c = conn_get(ctx);
	struct tm_str s;

	if (EVP_DigestUpdate(c->body, p, len) != 1)
		abort();
	c->bodylen += len;
	log_begin(&s, "body");
	str_addf(&s, " %zu", len);
	log_write(ctx, &s);
	if ((c->proto & SMFIP_SKIP) != 0 && memmem(p, len, "SKIPME", 6) != NULL)
		return reply(ctx, SMFIP_NR_BODY, SMFIS_SKIP);
	return reply(ctx, SMFIP_NR_BODY, SMFIS_CONTINUE);
}

/* unescape - turn the two characters \n into CRLF, in a new string */
static char *
unescape(const char *v)
{
	struct tm_str s = { NULL, 0, 0 };
	const char *bs;

	str_add(&s, "", 0);
	while ((bs = strstr(v, "\\n")) != NULL) {
		str_add(&s, v, (size_t)(bs - v));
		str_add(&s, "\r\n", 2);
		v = bs + 2;
	}
	str_add(&s, v, strlen(v));
	return s.p;
}

/* to_int - a decimal argument, or false */
static bool
to_int(const char *s, int *n_r)
{
	char *end;
	long n;

	if (s == NULL || *s == '\0')
		return false;
	n = strtol(s, &end, 10);
	if (*end != '\0' || n < 0 || n > 1000000)
		return false;
	*n_r = (int)n;
	return true;
}

/* reply_verdict - REJECT or TEMPFAIL by a reply code's class */
static sfsistat
reply_verdict(const char *code)
{
	return code[0] == '4' ? SMFIS_TEMPFAIL : SMFIS_REJECT;
}

/*
 * An end-of-message command: w[0] the command, w[1..nwords] the words after
 * it (none missing), rest the remainder of the line after them ("" if none),
 * already unescaped for the commands that take VALUE or TEXT.  Returns the
 * libmilter return code; may set *verdict.
 */
struct tm_eomcmd {
	const char	*name;
	int		nwords;
	bool		text;		/* rest is VALUE/TEXT: "\n" becomes CRLF */
	int		(*run)(SMFICTX *, char **w, char *rest, sfsistat *verdict);
};

/* cmd_addheader - addheader HNAME VALUE */
static int
cmd_addheader(SMFICTX *ctx, char **w, char *rest, sfsistat *verdict)
{
	return smfi_addheader(ctx, w[1], rest);
}

/* cmd_insheader - insheader IDX HNAME VALUE */
static int
cmd_insheader(SMFICTX *ctx, char **w, char *rest, sfsistat *verdict)
{
	int idx;

	return to_int(w[1], &idx) ? smfi_insheader(ctx, idx, w[2], rest) : MI_FAILURE;
}

/* cmd_chgheader - chgheader HNAME IDX VALUE */
static int
cmd_chgheader(SMFICTX *ctx, char **w, char *rest, sfsistat *verdict)
{
	int idx;

	return to_int(w[2], &idx) ? smfi_chgheader(ctx, w[1], idx, rest) : MI_FAILURE;
}

/* cmd_delheader - delheader HNAME IDX */
static int
cmd_delheader(SMFICTX *ctx, char **w, char *rest, sfsistat *verdict)
{
	int idx;

	return to_int(w[2], &idx) ? smfi_chgheader(ctx, w[1], idx, NULL) : MI_FAILURE;
}

/* cmd_addrcpt - addrcpt ADDR */
static int
cmd_addrcpt(SMFICTX *ctx, char **w, char *rest, sfsistat *verdict)
{
	return smfi_addrcpt(ctx, w[1]);
}

/* cmd_addrcpt_par - addrcpt_par ADDR ARGS */
static int
cmd_addrcpt_par(SMFICTX *ctx, char **w, char *rest, sfsistat *verdict)
{
	return smfi_addrcpt_par(ctx, w[1], *rest != '\0' ? rest : NULL);
}

/* cmd_delrcpt - delrcpt ADDR */
static int
cmd_delrcpt(SMFICTX *ctx, char **w, char *rest, sfsistat *verdict)
{
	return smfi_delrcpt(ctx, w[1]);
}

/* cmd_chgfrom - chgfrom ADDR [ARGS] */
static int
cmd_chgfrom(SMFICTX *ctx, char **w, char *rest, sfsistat *verdict)
{
	return smfi_chgfrom(ctx, w[1], *rest != '\0' ? rest : NULL);
}

/* cmd_replbody - replbody TEXT, sent in two smfi_replacebody calls to test concatenation */
static int
cmd_replbody(SMFICTX *ctx, char **w, char *rest, sfsistat *verdict)
{
	int len = (int)strlen(rest), half = len / 2, rc;

	rc = smfi_replacebody(ctx, (unsigned char *)rest, half);
	if (rc == MI_SUCCESS)
		rc = smfi_replacebody(ctx, (unsigned char *)rest + half, len - half);
	return rc;
}

/* cmd_quarantine - quarantine TEXT */
static int
cmd_quarantine(SMFICTX *ctx, char **w, char *rest, sfsistat *verdict)
{
	return smfi_quarantine(ctx, rest);
}

/* sleep_s - sleep n seconds */
static void
sleep_s(int n)
{
	struct timespec ts = { n, 0 };

	while (nanosleep(&ts, &ts) != 0)
		continue;
}

/* cmd_progress - progress N: N times sleep one second and send progress */
static int
cmd_progress(SMFICTX *ctx, char **w, char *rest, sfsistat *verdict)
{
	int n, i, rc = MI_SUCCESS;

	if (!to_int(w[1], &n))
		return MI_FAILURE;
	for (i = 0; i < n; i++) {
		sleep_s(1);
		if (smfi_progress(ctx) != MI_SUCCESS)
			rc = MI_FAILURE;
	}
	return rc;
}

/* cmd_sleep - sleep N */
static int
cmd_sleep(SMFICTX *ctx, char **w, char *rest, sfsistat *verdict)
{
	int n;

	if (!to_int(w[1], &n))
		return MI_FAILURE;
	sleep_s(n);
	return MI_SUCCESS;
}

/* cmd_verdict - reject | tempfail | discard | accept: the command name is the verdict */
static int
cmd_verdict(SMFICTX *ctx, char **w, char *rest, sfsistat *verdict)
{
	static const struct { const char *name; sfsistat v; } tab[] = {
		{ "reject", SMFIS_REJECT }, { "tempfail", SMFIS_TEMPFAIL },
		{ "discard", SMFIS_DISCARD }, { "accept", SMFIS_ACCEPT },
	};
	size_t i;

	for (i = 0; i < sizeof tab / sizeof tab[0]; i++)
		if (strcmp(w[0], tab[i].name) == 0)
			*verdict = tab[i].v;
	return MI_SUCCESS;
}

/* cmd_replycode - replycode CODE ECODE TEXT: smfi_setreply, verdict by the code's class */
static int
cmd_replycode(SMFICTX *ctx, char **w, char *rest, sfsistat *verdict)
{
	*verdict = reply_verdict(w[1]);
	return smfi_setreply(ctx, w[1], w[2], rest);
}

/* cmd_mlreply - mlreply CODE ECODE L1|L2|...: smfi_setmlreply, verdict by the code's class */
static int
cmd_mlreply(SMFICTX *ctx, char **w, char *rest, sfsistat *verdict)
{
	char *l[TM_MLREPLY_MAX + 1] = { NULL };
	char *p = rest;
	int n = 0;

	while (p != NULL && n < TM_MLREPLY_MAX) {
		l[n++] = p;
		if ((p = strchr(p, '|')) != NULL)
			*p++ = '\0';
	}
	if (p != NULL)
		return MI_FAILURE;	/* more lines than libmilter takes */
	*verdict = reply_verdict(w[1]);
	return smfi_setmlreply(ctx, w[1], w[2],
	    l[0], l[1], l[2], l[3], l[4], l[5], l[6], l[7], l[8], l[9], l[10], l[11], l[12],
	    l[13], l[14], l[15], l[16], l[17], l[18], l[19], l[20], l[21], l[22], l[23], l[24],
	    l[25], l[26], l[27], l[28], l[29], l[30], l[31], (char *)NULL);
}

static const struct tm_eomcmd tm_eomcmds[] = {
	{ "addheader", 1, true, cmd_addheader },
	{ "insheader", 2, true, cmd_insheader },
	{ "chgheader", 2, true, cmd_chgheader },
	{ "delheader", 2, false, cmd_delheader },
	{ "addrcpt", 1, false, cmd_addrcpt },
	{ "addrcpt_par", 1, false, cmd_addrcpt_par },
	{ "delrcpt", 1, false, cmd_delrcpt },
	{ "chgfrom", 1, false, cmd_chgfrom },
	{ "replbody", 0, true, cmd_replbody },
	{ "quarantine", 0, true, cmd_quarantine },
	{ "progress", 1, false, cmd_progress },
	{ "sleep", 1, false, cmd_sleep },
	{ "reject", 0, false, cmd_verdict },
	{ "tempfail", 0, false, cmd_verdict },
	{ "discard", 0, false, cmd_verdict },
	{ "accept", 0, false, cmd_verdict },
	{ "replycode", 2, true, cmd_replycode },
	{ "mlreply", 2, true, cmd_mlreply },
};

/* next_word - cut the word at *p (up to one space) and move *p past it; NULL at the end */
static char *
next_word(char **p)
{
	char *w = *p, *sp;

	if (*w == '\0')
		return NULL;
	if ((sp = strchr(w, ' ')) != NULL) {
		*sp = '\0';
		*p = sp + 1;
	} else
		*p = w + strlen(w);
	return w;
}

/* eom_command - run one X-Test-Milter: value "[NAME:] COMMAND ARGS", log it as "did" */
static void
eom_command(SMFICTX *ctx, const char *value, sfsistat *verdict)
{
	char *line, *p, *cmd, *w[4] = { NULL }, *rest, *text = NULL;
	const struct tm_eomcmd *ec = NULL;
	const char *shown;
	struct tm_str s;
	size_t i;
	int rc = MI_FAILURE;

	while (*value == ' ' || *value == '\t')
		value++;
	p = line = xstrdup(value);
	cmd = next_word(&p);
	if (cmd != NULL && cmd[strlen(cmd) - 1] == ':') {
		cmd[strlen(cmd) - 1] = '\0';
		if (strcmp(cmd, tm_opts.name) != 0)
			goto out;	/* addressed to another milter */
		cmd = next_word(&p);
	}
	shown = cmd != NULL ? value + (cmd - line) : "";
	for (i = 0; cmd != NULL && i < sizeof tm_eomcmds / sizeof tm_eomcmds[0]; i++)
		if (strcmp(cmd, tm_eomcmds[i].name) == 0)
			ec = &tm_eomcmds[i];
	if (ec != NULL) {
		w[0] = cmd;
		for (i = 1; i <= (size_t)ec->nwords; i++)
			w[i] = next_word(&p);
		rest = ec->text ? (text = unescape(p)) : p;
		if (ec->nwords == 0 || w[ec->nwords] != NULL)
			rc = ec->run(ctx, w, rest, verdict);
	}
	log_begin(&s, ec != NULL ? "did " : "bad-command ");
	str_esc(&s, shown);
	str_addf(&s, " rc=%d", rc);
	log_write(NULL, &s);
out:
	free(text);
	free(line);
}

/* tm_eom - log length and digest of the body, run the X-Test-Milter: commands in order */
static sfsistat
tm_eom(SMFICTX *ctx)
{
	struct tm_conn *c = conn_get(ctx);
	unsigned char md[EVP_MAX_MD_SIZE];
	unsigned mdlen = 0;
	sfsistat verdict = SMFIS_CONTINUE;
	struct tm_str s;
	size_t i;

	if (EVP_DigestFinal_ex(c->body, md, &mdlen) != 1)
		abort();
	log_begin(&s, "eom");
	str_addf(&s, " bodylen=%llu bodysha256=", (unsigned long long)c->bodylen);
	for (i = 0; i < mdlen; i++)
		str_addf(&s, "%02x", md[i]);
	log_write(ctx, &s);
	for (i = 0; i < c->ncmds; i++)
		eom_command(ctx, c->cmds[i], &verdict);
	msg_reset(c);
	return verdict;
}

/* tm_abort - log; forget the message */
static sfsistat
tm_abort(SMFICTX *ctx)
{
	log_event(ctx, "abort", NULL);
	msg_reset(conn_get(ctx));
	return SMFIS_CONTINUE;
}

/*
 * tm_close - log; free the connection state.  A connection that never got as
 * far as the negotiation (a port probe) has no state and is not logged.
 */
static sfsistat
tm_close(SMFICTX *ctx)
{
	struct tm_conn *c = smfi_getpriv(ctx);

	if (c == NULL)
		return SMFIS_CONTINUE;
	log_event(ctx, "close", NULL);
	msg_reset(c);
	EVP_MD_CTX_free(c->body);
	free(c);
	smfi_setpriv(ctx, NULL);
	return SMFIS_CONTINUE;
}

/* tm_unknown - log an unknown SMTP command */
static sfsistat
tm_unknown(SMFICTX *ctx, const char *cmd)
{
	log_event(ctx, "unknown", cmd);
	return reply(ctx, SMFIP_NR_UNKN, SMFIS_CONTINUE);
}

/* usage - print the synopsis and exit 2 */
static void __attribute__((noreturn))
usage(void)
{
	fputs("usage: testmilter -p CONNSPEC [-l LOGFILE] [-n NAME] [-A ACTIONS_HEX]"
	    " [-P PROTO_HEX] [-L]\n"
	    "\t[-S STAGE:MACROS]... [-c reject|tempfail|accept|discard|continue]\n"
	    "STAGE: connect helo mail rcpt data eoh eom\n", stderr);
	exit(2);
}

/* parse_hex - a hexadecimal option value, or usage */
static unsigned long
parse_hex(const char *s)
{
	unsigned long v;
	char *end;

	v = strtoul(s, &end, 16);
	if (*s == '\0' || *end != '\0')
		usage();
	return v;
}

/* parse_symlist - -S STAGE:MACROS into tm_opts.symlist */
static void
parse_symlist(char *arg)
{
	static const char *const stages[SMFIM_LAST + 1] = {
		[SMFIM_CONNECT] = "connect", [SMFIM_HELO] = "helo", [SMFIM_ENVFROM] = "mail",
		[SMFIM_ENVRCPT] = "rcpt", [SMFIM_DATA] = "data", [SMFIM_EOM] = "eom",
		[SMFIM_EOH] = "eoh",
	};
	char *colon = strchr(arg, ':');
	int i;

	if (colon == NULL)
		usage();
	*colon = '\0';
	for (i = 0; i <= SMFIM_LAST; i++)
		if (strcmp(arg, stages[i]) == 0) {
			tm_opts.symlist[i] = colon + 1;
			return;
		}
	usage();
}

/* parse_verdict - -c VERDICT */
static sfsistat
parse_verdict(const char *s)
{
	static const struct { const char *name; sfsistat v; } tab[] = {
		{ "continue", SMFIS_CONTINUE }, { "reject", SMFIS_REJECT },
		{ "tempfail", SMFIS_TEMPFAIL }, { "accept", SMFIS_ACCEPT },
		{ "discard", SMFIS_DISCARD },
	};
	size_t i;

	for (i = 0; i < sizeof tab / sizeof tab[0]; i++)
		if (strcmp(s, tab[i].name) == 0)
			return tab[i].v;
	usage();
}

/* unix_path - the socket path of a unix CONNSPEC (unix:, local: or a bare path), else NULL */
static const char *
unix_path(const char *conn)
{
	if (strncmp(conn, "unix:", 5) == 0 || strncmp(conn, "local:", 6) == 0)
		return strchr(conn, ':') + 1;
	return conn[0] == '/' ? conn : NULL;
}

/* tm_serve - the listener thread: libmilter's main loop, whose end ends the process */
static void *
tm_serve(void *arg)
{
	exit(smfi_main() == MI_SUCCESS ? 0 : 1);
}

/* main - parse the options, listen, serve until SIGTERM or SIGINT (exit 0) */
int
main(int argc, char **argv)
{
	struct smfiDesc desc = {
		.xxfi_version = SMFI_VERSION,
		.xxfi_flags = TM_ALL_ACTIONS,
		.xxfi_connect = tm_connect,
		.xxfi_helo = tm_helo,
		.xxfi_envfrom = tm_envfrom,
		.xxfi_envrcpt = tm_envrcpt,
		.xxfi_header = tm_header,
		.xxfi_eoh = tm_eoh,
		.xxfi_body = tm_body,
		.xxfi_eom = tm_eom,
		.xxfi_abort = tm_abort,
		.xxfi_close = tm_close,
		.xxfi_unknown = tm_unknown,
		.xxfi_data = tm_data,
		.xxfi_negotiate = tm_negotiate,
	};
	char *conn = NULL;
	const char *logfile = NULL, *path;
	sigset_t sigs;
	pthread_t t;
	int ch, rc, sig;

	while ((ch = getopt(argc, argv, "p:l:n:A:P:LS:c:")) != -1) {
		switch (ch) {
		case 'p': conn = optarg; break;
		case 'l': logfile = optarg; break;
		case 'n': tm_opts.name = optarg; break;
		case 'A': tm_opts.actions = parse_hex(optarg); tm_opts.actions_set = true; break;
		case 'P': tm_opts.proto = parse_hex(optarg); break;
		case 'L': tm_opts.leadspc = true; break;
		case 'S': parse_symlist(optarg); break;
		case 'c': tm_opts.connect_verdict = parse_verdict(optarg); break;
		default: usage();
		}
	}
	if (conn == NULL || optind != argc || *tm_opts.name == '\0')
		usage();
	if (logfile != NULL &&
	    (tm_opts.logfd = open(logfile, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0644)) < 0) {
		perror(logfile);
		return 1;
	}
	desc.xxfi_name = tm_opts.name;
	if (smfi_setconn(conn) != MI_SUCCESS || smfi_register(desc) != MI_SUCCESS ||
	    smfi_opensocket(true) != MI_SUCCESS) {
		fprintf(stderr, "testmilter: cannot listen on %s\n", conn);
		return 1;
	}

	/*
	 * libmilter's own SIGTERM handling takes up to 5 s (its listener holds a
	 * lock across a 5 s select), too slow for test teardowns.  Here the main
	 * thread waits for the signal and exits at once: a signal sent to the
	 * process goes to its main thread first when that thread takes it, and
	 * libmilter's threads, created from tm_serve, inherit the blocked mask.
	 */
	sigemptyset(&sigs);
	sigaddset(&sigs, SIGTERM);
	sigaddset(&sigs, SIGINT);
	pthread_sigmask(SIG_BLOCK, &sigs, NULL);
	if ((rc = pthread_create(&t, NULL, tm_serve, NULL)) != 0) {
		fprintf(stderr, "testmilter: pthread_create: %s\n", strerror(rc));
		return 1;
	}
	while (sigwait(&sigs, &sig) != 0)
		continue;
	if ((path = unix_path(conn)) != NULL)
		unlink(path);
	/*
	 * _exit: libmilter's threads may be inside a callback, using OpenSSL or
	 * the log; exit()'s handlers would free what they use under them.
	 */
	_exit(0);
}
