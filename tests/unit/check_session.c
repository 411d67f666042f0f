/*
 * check_session.c - the SMTP session state machine driven through a fake
 * transport (a libevent bufferevent pair) against golden transcripts.
 *
 * Each transcript is a list of (client sends, server must answer) steps run
 * on a real event loop with the real parser, data reader, filter chain and
 * Maildir relay (in a temp dir).  Every transcript also runs with the client
 * side fed one byte at a time, which must give the same replies.
 */
#include "config.h"

#include <check.h>
#include <pthread.h>
#include <signal.h>
#include <dirent.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/event.h>
#include <event2/thread.h>

#include "conf.h"
#include "filter.h"
#include "server.h"
#include "smtp_session.h"
#include "workers.h"
#include "unit.h"
#include "util.h"

struct step {
	const char *send;	/* NULL: just read */
	const char *expect;	/* the complete reply text expected, "" for none */
};

static char tmpdir[256];
static struct event_base *base;
static struct workers *pools[SERVER_POOLS];
static struct loop *loop;
static struct snapshot *snap;

/* write_config - a config with small limits so edges are cheap to reach */
static void
write_config(const char *path, const char *extra, const char *lextra)
{
	FILE *f = fopen(path, "w");

	ck_assert_ptr_nonnull(f);
	fprintf(f, "[server]\nhostname = mx.test\nlocal_domains = example.test\n"
	    "max_recipients = 3\nmax_errors = 5\nmax_message_size = 2000\n"
	    "max_pipelined = 20\n%s\n"
	    "[listener test]\nlisten = 127.0.0.1:1\nrole = mx\nreverse_lookup = no\n%s\n"
	    "[backend]\nrelay = maildir:%s/mail\n", extra, lextra, tmpdir);
	fclose(f);
}

/* setup - a loop, a pool and a snapshot over a temp Maildir */
static void
setup_with(const char *extra, const char *lextra)
{
	char path[512];
	struct buf err;
	size_t i;
	struct conf *conf;
	char *serr = NULL;

	snprintf(tmpdir, sizeof(tmpdir), "/tmp/check_session.XXXXXX");
	ck_assert_ptr_nonnull(mkdtemp(tmpdir));
	snprintf(path, sizeof(path), "%s/portier.conf", tmpdir);
	write_config(path, extra, lextra);
	buf_init(&err);
	conf = conf_load(path, &err);
	if (conf == NULL)
		ck_abort_msg("config: %s", err.data);
	buf_free(&err);
	snap = snapshot_new(conf, &serr);
	ck_assert_ptr_nonnull(snap);
	evthread_use_pthreads();
	base = event_base_new();
	for (i = 0; i < SERVER_POOLS; i++)
		pools[i] = workers_new(2, 100);
	loop = loop_new(base, pools);
}

static void
setup(void)
{
	setup_with("", "");
}

static void
teardown(void)
{
	size_t i;
	char cmd[600];

	/* Let reaped sessions go before the loop does. */
	event_base_loop(base, EVLOOP_NONBLOCK);
	loop_free(loop);
	for (i = 0; i < SERVER_POOLS; i++)
		workers_free(pools[i]);
	event_base_free(base);
	snapshot_unref(snap);
	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", tmpdir);
	ck_assert_int_eq(system(cmd), 0);
}

struct client {
	struct bufferevent *bev;
	struct buf got;
	bool eof;
};

static void
client_read(struct bufferevent *bev, void *arg)
{
	struct client *c = arg;
	struct evbuffer *in = bufferevent_get_input(bev);
	size_t n = evbuffer_get_length(in);

	buf_reserve(&c->got, n);
	evbuffer_remove(in, c->got.data + c->got.len, n);
	c->got.len += n;
	c->got.data[c->got.len] = '\0';
}

static void
client_event(struct bufferevent *bev, short what, void *arg)
{
	struct client *c = arg;

	if (what & (BEV_EVENT_EOF | BEV_EVENT_ERROR))
		c->eof = true;
}

/* client_start_on - pair[1] is the client (c), pair[0] a new session on listener li */
static void
client_start_on(struct client *c, struct bufferevent *pair[2], size_t li)
{
	struct sockaddr_in sin;

	memset(c, 0, sizeof(*c));
	buf_init(&c->got);
	c->bev = pair[1];
	bufferevent_setcb(pair[1], client_read, NULL, client_event, c);
	bufferevent_enable(pair[1], EV_READ | EV_WRITE);
	memset(&sin, 0, sizeof(sin));
	sin.sin_family = AF_INET;
	sin.sin_addr.s_addr = htonl(0x7f000001);
	session_start(loop, snap, li, pair[0], (struct sockaddr *)&sin, sizeof(sin));
}

/* client_start - the same on the first listener */
static void
client_start(struct client *c, struct bufferevent *pair[2])
{
	client_start_on(c, pair, 0);
}

static void
timeout_cb(evutil_socket_t fd, short what, void *arg)
{
	*(bool *)arg = true;
}

/* pump - run the loop until n final replies arrived after from, or 5 s */
static void
pump(struct client *c, size_t from, unsigned nreplies)
{
	bool expired = false;
	struct timeval tv = { 5, 0 };
	struct event *t = evtimer_new(base, timeout_cb, &expired);
	size_t pos = from;
	unsigned seen = 0;

	evtimer_add(t, &tv);
	for (;;) {
		/* count complete replies from pos */
		while (seen < nreplies) {
			const char *p = c->got.data ? c->got.data + pos : NULL, *nl;

			if (p == NULL || (nl = strstr(p, "\r\n")) == NULL)
				break;
			if (nl - p >= 4 && p[3] == ' ')
				seen++;
			pos = (size_t)(nl - c->got.data) + 2;
		}
		if (expired || c->eof || seen >= nreplies)
			break;
		event_base_loop(base, EVLOOP_ONCE);
	}
	event_free(t);
}

/* count_replies - how many final reply lines expect holds */
static unsigned
count_replies(const char *expect)
{
	unsigned n = 0;
	const char *p = expect;

	while (p && *p) {
		const char *nl = strstr(p, "\r\n");

		if (strlen(p) >= 4 && p[3] == ' ')
			n++;
		p = nl ? nl + 2 : NULL;
	}
	return n;
}

/* session_closed - did the last reply end the session (pairs carry no EOF)? */
static bool
session_closed(const char *expect)
{
	const char *last = expect, *p;

	for (p = expect; *p; p++)
		if (p[0] == '\n' && p[1] != '\0')
			last = p + 1;
	return strncmp(last, "221 ", 4) == 0 || strncmp(last, "421 ", 4) == 0 ||
	    strstr(last, "Syntax: BDAT") != NULL;
}

static void tcp_start(struct client *c, struct bufferevent *pair[2]);

/*
 * run_transcript_on - one session; bytewise feeds every send one octet per
 * loop turn; tcp runs it over a real loopback TCP connection, not a pair.
 */
static void
run_transcript_on(const struct step *steps, size_t nsteps, bool bytewise, bool tcp,
    const char *name)
{
	struct bufferevent *pair[2];
	struct client c;
	size_t i;

	if (tcp) {
		tcp_start(&c, pair);
	} else {
		ck_assert_int_eq(bufferevent_pair_new(base, 0, pair), 0);
		client_start(&c, pair);
	}

	for (i = 0; i < nsteps; i++) {
		size_t from = c.got.len;
		unsigned want = count_replies(steps[i].expect);

		if (steps[i].send) {
			const char *p = steps[i].send;
			size_t len = strlen(p), k;

			if (bytewise) {
				for (k = 0; k < len; k++) {
					bufferevent_write(pair[1], p + k, 1);
					event_base_loop(base, EVLOOP_NONBLOCK);
				}
			} else {
				bufferevent_write(pair[1], p, len);
			}
		}
		pump(&c, from, want);
		ck_assert_msg(strcmp(c.got.data ? c.got.data + from : "", steps[i].expect) == 0,
		    "%s%s step %zu: sent [%s]\nexpected [%s]\ngot      [%s]", name,
		    bytewise ? " (bytewise)" : "", i, steps[i].send ? steps[i].send : "",
		    steps[i].expect, c.got.data ? c.got.data + from : "");
	}
	if (!session_closed(steps[nsteps - 1].expect)) {
		/* End politely so the session closes and reaps itself. */
		size_t from = c.got.len;

		bufferevent_write(pair[1], "QUIT\r\n", 6);
		pump(&c, from, 1);
		ck_assert_str_eq(c.got.data + from, "221 2.0.0 Bye\r\n");
	}
	bufferevent_free(pair[1]);
	event_base_loop(base, EVLOOP_NONBLOCK);
	event_base_loop(base, EVLOOP_NONBLOCK);
	buf_free(&c.got);
}

/* run_transcript - the same over a bufferevent pair */
static void
run_transcript(const struct step *steps, size_t nsteps, bool bytewise, const char *name)
{
	run_transcript_on(steps, nsteps, bytewise, false, name);
}

#define RUN(steps) do { \
	run_transcript(steps, sizeof(steps) / sizeof(steps[0]), false, #steps); \
	run_transcript(steps, sizeof(steps) / sizeof(steps[0]), true, #steps); \
} while (0)

#define EHLO_REPLY "250-mx.test\r\n250-PIPELINING\r\n250-SIZE 2000\r\n250-8BITMIME\r\n" \
	"250-ENHANCEDSTATUSCODES\r\n250-SMTPUTF8\r\n250-CHUNKING\r\n250 DSN\r\n"
#define BANNER "220 mx.test ESMTP portier\r\n"

/* count_files - messages delivered to example.test/<user> */
static int
count_files(const char *user)
{
	char path[600];
	DIR *d;
	struct dirent *de;
	int n = 0;

	snprintf(path, sizeof(path), "%s/mail/example.test/%s/new", tmpdir, user);
	if ((d = opendir(path)) == NULL)
		return 0;
	while ((de = readdir(d)) != NULL)
		if (de->d_name[0] != '.')
			n++;
	closedir(d);
	return n;
}

START_TEST(test_delivery)
{
	static const struct step steps[] = {
		{ NULL, BANNER },
		{ "EHLO client.test\r\n", EHLO_REPLY },
		{ "MAIL FROM:<a@origin.test>\r\n", "250 2.1.0 Sender ok\r\n" },
		{ "RCPT TO:<bob@example.test>\r\n", "250 2.1.5 Recipient ok\r\n" },
		{ "DATA\r\n", "354 End data with <CR><LF>.<CR><LF>\r\n" },
		{ "Subject: hi\r\n\r\n..dot\r\n.\r\n", "250 2.0.0 Ok: delivered to Maildir\r\n" },
		{ "QUIT\r\n", "221 2.0.0 Bye\r\n" },
	};

	RUN(steps);
	ck_assert_int_eq(count_files("bob"), 2);
}
END_TEST

START_TEST(test_sequence_errors)
{
	static const struct step steps[] = {
		{ NULL, BANNER },
		{ "MAIL FROM:<a@origin.test>\r\n", "503 5.5.1 Error: send HELO/EHLO first\r\n" },
		{ "HELO client.test\r\n", "250 mx.test\r\n" },
		{ "RCPT TO:<bob@example.test>\r\n", "503 5.5.1 Error: need MAIL command\r\n" },
		{ "DATA\r\n", "503 5.5.1 Error: need MAIL command\r\n" },
		{ "MAIL FROM:<a@origin.test>\r\n", "250 2.1.0 Sender ok\r\n" },
		{ "MAIL FROM:<a@origin.test>\r\n", "503 5.5.1 Error: nested MAIL command\r\n" },
		/* the fifth client error ends the session */
		{ "DATA\r\n", "503 5.5.1 Error: need RCPT command\r\n"
		  "421 4.7.0 mx.test Error: too many errors\r\n" },
	};

	RUN(steps);
}
END_TEST

START_TEST(test_bad_input)
{
	static const struct step steps[] = {
		{ NULL, BANNER },
		{ "EHLO client.test\r\n", EHLO_REPLY },
		{ "VRFY bob\r\n", "252 2.5.0 Cannot VRFY user, but will accept message and attempt delivery\r\n" },
		{ "MAIL FROM:<a@origin.test> FOO=BAR\r\n", "555 5.5.4 Error: unsupported or invalid parameter\r\n" },
		{ "MAIL FROM:a@origin.test\r\n", "501 5.1.7 Error: bad sender address syntax\r\n" },
		{ "MAIL FROM:<a@origin.test> SIZE=5000\r\n", "552 5.3.4 Error: declared message size exceeds fixed limit\r\n" },
		{ "MAIL FROM:<a@origin.test>\r\n", "250 2.1.0 Sender ok\r\n" },
		{ "RCPT TO:<bob@foreign.test>\r\n", "550 5.7.1 Error: relay access denied\r\n" },
		{ "RCPT TO:<bob@example.test>\r\n", "250 2.1.5 Recipient ok\r\n" },
		{ "XYZZY\r\n", "500 5.5.2 Error: command not recognized\r\n" },
		/* errors so far: 555, 501, 550, 500 (552 is no client error): the 5th ends it */
		{ "MAIL\r\n", "501 5.1.7 Error: bad sender address syntax\r\n"
		  "421 4.7.0 mx.test Error: too many errors\r\n" },
	};

	RUN(steps);
}
END_TEST

START_TEST(test_too_many_rcpts)
{
	static const struct step steps[] = {
		{ NULL, BANNER },
		{ "EHLO c\r\nMAIL FROM:<>\r\nRCPT TO:<a@example.test>\r\nRCPT TO:<b@example.test>\r\n"
		  "RCPT TO:<c@example.test>\r\nRCPT TO:<d@example.test>\r\n",
		  EHLO_REPLY "250 2.1.0 Sender ok\r\n250 2.1.5 Recipient ok\r\n250 2.1.5 Recipient ok\r\n"
		  "250 2.1.5 Recipient ok\r\n452 4.5.3 Error: too many recipients\r\n" },
	};

	RUN(steps);
}
END_TEST

START_TEST(test_smuggling)
{
	/* "\n.\n" and "\r\n.\n" never end the message; the real end gets 554. */
	static const struct step steps[] = {
		{ NULL, BANNER },
		{ "EHLO c\r\nMAIL FROM:<a@o.test>\r\nRCPT TO:<bob@example.test>\r\nDATA\r\n",
		  EHLO_REPLY "250 2.1.0 Sender ok\r\n250 2.1.5 Recipient ok\r\n"
		  "354 End data with <CR><LF>.<CR><LF>\r\n" },
		{ "Subject: x\r\n\r\nhi\r\n.\nMAIL FROM:<evil@o.test>\r\nRCPT TO:<victim@example.test>\r\n"
		  "DATA\r\nevil\n.\r\nmore\r.\r\n", "" },
		{ ".\r\n", "554 5.6.0 Error: bare <CR> or <LF> in message, lines must end with <CR><LF>\r\n" },
		{ "QUIT\r\n", "221 2.0.0 Bye\r\n" },
	};

	RUN(steps);
	ck_assert_int_eq(count_files("bob"), 0);
	ck_assert_int_eq(count_files("victim"), 0);
}
END_TEST

START_TEST(test_bdat)
{
	static const struct step steps[] = {
		{ NULL, BANNER },
		{ "EHLO c\r\nMAIL FROM:<a@o.test>\r\nRCPT TO:<bob@example.test>\r\n",
		  EHLO_REPLY "250 2.1.0 Sender ok\r\n250 2.1.5 Recipient ok\r\n" },
		{ "DATA\r\n", "354 End data with <CR><LF>.<CR><LF>\r\n" },
		{ "x\r\n.\r\n", "250 2.0.0 Ok: delivered to Maildir\r\n" },
		{ "MAIL FROM:<a@o.test>\r\nRCPT TO:<bob@example.test>\r\nBDAT 6\r\nS: x\r\nBDAT 8 LAST\r\n\r\nbody\r\n",
		  "250 2.1.0 Sender ok\r\n250 2.1.5 Recipient ok\r\n250 2.0.0 6 octets received\r\n"
		  "250 2.0.0 Ok: delivered to Maildir\r\n" },
		{ "BDAT 3 LAST\r\nabc", "503 5.5.1 Error: need MAIL command\r\n" },
		{ "MAIL FROM:<a@o.test>\r\nRCPT TO:<bob@example.test>\r\nBDAT 2\r\nabDATA\r\n",
		  "250 2.1.0 Sender ok\r\n250 2.1.5 Recipient ok\r\n250 2.0.0 2 octets received\r\n"
		  "503 5.5.1 Error: DATA not allowed after BDAT\r\n" },
		{ "BDAT x\r\n", "501 5.5.4 Syntax: BDAT size [LAST]\r\n" },
	};

	RUN(steps);
	ck_assert_int_eq(count_files("bob"), 4);
}
END_TEST

START_TEST(test_size_and_lines)
{
	char big[2600];
	char longline[1100];
	static struct step steps[] = {
		{ NULL, BANNER },
		{ "EHLO c\r\nMAIL FROM:<a@o.test>\r\nRCPT TO:<bob@example.test>\r\nDATA\r\n",
		  EHLO_REPLY "250 2.1.0 Sender ok\r\n250 2.1.5 Recipient ok\r\n"
		  "354 End data with <CR><LF>.<CR><LF>\r\n" },
		{ NULL, "552 5.3.4 Error: message size exceeds fixed limit\r\n" },
		{ "MAIL FROM:<a@o.test>\r\nRCPT TO:<bob@example.test>\r\nDATA\r\n",
		  "250 2.1.0 Sender ok\r\n250 2.1.5 Recipient ok\r\n"
		  "354 End data with <CR><LF>.<CR><LF>\r\n" },
		{ NULL, "554 5.6.0 Error: message line longer than the limit\r\n" },
		{ NULL, "500 5.5.2 Error: command line too long\r\n" },
	};
	static char cmdline[700];
	size_t i;

	for (i = 0; i + 80 < sizeof(big) - 10; i += 80) {
		memset(big + i, 'x', 78);
		big[i + 78] = '\r';
		big[i + 79] = '\n';
	}
	memcpy(big + i, ".\r\n", 4);
	steps[2].send = big;
	memset(longline, 'y', 1000);
	memcpy(longline + 1000, "\r\n.\r\n", 6);
	steps[4].send = longline;
	memset(cmdline, 'N', 600);
	memcpy(cmdline + 600, "\r\n", 3);
	steps[5].send = cmdline;
	RUN(steps);
	ck_assert_int_eq(count_files("bob"), 0);
}
END_TEST

/* ---- verdicts at every stage -------------------------------------------------- */

/*
 * Two inline filters, "filters = vt,vseen".  vt: MAIL from dmail@ discards,
 * from quar@ quarantines, from acc@ accepts; RCPT trash@example.test
 * discards.  vseen comes after it: counts the MAIL and RCPT stages it sees
 * and refuses RCPT nobody@example.test, so a verdict of vt that wrongly
 * ends the chain shows.
 */
static unsigned vseen_mail, vseen_rcpt;

static enum filter_verdict
vt_mail(void *inst, struct filter_ctx *ctx, const char *from, struct filter_reply *r)
{
	if (strncmp(from, "dmail@", 6) == 0)
		return FILTER_DISCARD;
	if (strncmp(from, "quar@", 5) == 0) {
		snprintf(r->text, sizeof(r->text), "test mark");
		return FILTER_QUARANTINE;
	}
	return strncmp(from, "acc@", 4) == 0 ? FILTER_ACCEPT : FILTER_CONTINUE;
}

static enum filter_verdict
vt_rcpt(void *inst, struct filter_ctx *ctx, const char *rcpt, struct filter_reply *r)
{
	return strcmp(rcpt, "trash@example.test") == 0 ? FILTER_DISCARD : FILTER_CONTINUE;
}

static const struct filter_ops vt_ops = { .name = "vt", .mail = vt_mail, .rcpt = vt_rcpt };

static enum filter_verdict
vseen_mail_cb(void *inst, struct filter_ctx *ctx, const char *from, struct filter_reply *r)
{
	vseen_mail++;
	return FILTER_CONTINUE;
}

static enum filter_verdict
vseen_rcpt_cb(void *inst, struct filter_ctx *ctx, const char *rcpt, struct filter_reply *r)
{
	vseen_rcpt++;
	return strcmp(rcpt, "nobody@example.test") == 0 ? FILTER_REJECT : FILTER_CONTINUE;
}

static const struct filter_ops vseen_ops = {
	.name = "vseen", .mail = vseen_mail_cb, .rcpt = vseen_rcpt_cb,
};

/* verdict_setup - a session test loop whose listener runs vt,vseen */
static void
verdict_setup(void)
{
	filter_register(&vt_ops);
	filter_register(&vseen_ops);
	setup_with("", "filters = vt,vseen");
	vseen_mail = vseen_rcpt = 0;
}

/* file_has - does some message delivered to user hold text? */
static bool
file_has(const char *user, const char *text)
{
	char path[600], file[900], data[4096];
	DIR *d;
	struct dirent *de;
	bool found = false;

	snprintf(path, sizeof(path), "%s/mail/example.test/%s/new", tmpdir, user);
	if ((d = opendir(path)) == NULL)
		return false;
	while (!found && (de = readdir(d)) != NULL) {
		FILE *f;
		size_t n;

		if (de->d_name[0] == '.')
			continue;
		snprintf(file, sizeof(file), "%s/%s", path, de->d_name);
		if ((f = fopen(file, "r")) == NULL)
			continue;
		n = fread(data, 1, sizeof(data) - 1, f);
		data[n] = '\0';
		fclose(f);
		found = strstr(data, text) != NULL;
	}
	closedir(d);
	return found;
}

#define DATA_GO "354 End data with <CR><LF>.<CR><LF>\r\n"
#define DELIVERED "250 2.0.0 Ok: delivered to Maildir\r\n"

/* DISCARD at RCPT: every reply as usual, the backend gets nothing */
START_TEST(test_discard_rcpt)
{
	static const struct step steps[] = {
		{ NULL, BANNER },
		{ "EHLO client.test\r\n", EHLO_REPLY },
		{ "MAIL FROM:<a@origin.test>\r\n", "250 2.1.0 Sender ok\r\n" },
		{ "RCPT TO:<bob@example.test>\r\n", "250 2.1.5 Recipient ok\r\n" },
		{ "RCPT TO:<trash@example.test>\r\n", "250 2.1.5 Recipient ok\r\n" },
		{ "RCPT TO:<carol@example.test>\r\n", "250 2.1.5 Recipient ok\r\n" },
		{ "DATA\r\n", DATA_GO },
		{ "Subject: hi\r\n\r\nbody\r\n.\r\n", "250 2.0.0 Ok\r\n" },
		/* the next transaction is delivered */
		{ "MAIL FROM:<a@origin.test>\r\n", "250 2.1.0 Sender ok\r\n" },
		{ "RCPT TO:<dave@example.test>\r\n", "250 2.1.5 Recipient ok\r\n" },
		{ "DATA\r\n", DATA_GO },
		{ "Subject: hi\r\n\r\nbody\r\n.\r\n", DELIVERED },
	};

	RUN(steps);
	ck_assert_int_eq(count_files("bob"), 0);
	ck_assert_int_eq(count_files("trash"), 0);
	ck_assert_int_eq(count_files("carol"), 0);
	ck_assert_int_eq(count_files("dave"), 2);
}
END_TEST

/* DISCARD at MAIL: no backend transaction; relay control and filters still answer RCPT */
START_TEST(test_discard_mail)
{
	static const struct step steps[] = {
		{ NULL, BANNER },
		{ "EHLO client.test\r\n", EHLO_REPLY },
		{ "MAIL FROM:<dmail@origin.test>\r\n", "250 2.1.0 Sender ok\r\n" },
		{ "RCPT TO:<bob@example.test>\r\n", "250 2.1.5 Recipient ok\r\n" },
		{ "RCPT TO:<x@elsewhere.test>\r\n", "550 5.7.1 Error: relay access denied\r\n" },
		{ "BDAT 6 LAST\r\nhi\r\n\r\n", "250 2.0.0 Ok\r\n" },
	};

	RUN(steps);
	ck_assert_int_eq(count_files("bob"), 0);
	ck_assert_uint_eq(vseen_mail, 0);	/* discarded: no filter after it */
}
END_TEST

/* QUARANTINE at MAIL: delivered with the mark; the next filter saw MAIL */
START_TEST(test_quarantine_mail)
{
	static const struct step steps[] = {
		{ NULL, BANNER },
		{ "EHLO client.test\r\n", EHLO_REPLY },
		{ "MAIL FROM:<quar@origin.test>\r\n", "250 2.1.0 Sender ok\r\n" },
		{ "RCPT TO:<bob@example.test>\r\n", "250 2.1.5 Recipient ok\r\n" },
		{ "DATA\r\n", DATA_GO },
		{ "Subject: hi\r\n\r\nbody\r\n.\r\n", DELIVERED },
	};

	RUN(steps);
	ck_assert_int_eq(count_files("bob"), 2);
	ck_assert(file_has("bob", "X-Portier-Quarantine: test mark\r\n"));
	ck_assert_uint_eq(vseen_mail, 2);
}
END_TEST

/* ACCEPT at MAIL ends vt's part only: vseen still refuses a recipient */
START_TEST(test_accept_mail)
{
	static const struct step steps[] = {
		{ NULL, BANNER },
		{ "EHLO client.test\r\n", EHLO_REPLY },
		{ "MAIL FROM:<acc@origin.test>\r\n", "250 2.1.0 Sender ok\r\n" },
		{ "RCPT TO:<trash@example.test>\r\n", "250 2.1.5 Recipient ok\r\n" },
		{ "RCPT TO:<nobody@example.test>\r\n", "550 5.7.1 Message refused by policy\r\n" },
		{ "DATA\r\n", DATA_GO },
		{ "Subject: hi\r\n\r\nbody\r\n.\r\n", DELIVERED },
	};

	RUN(steps);
	/* vt sat out the transaction: its discard of trash@ never came */
	ck_assert_int_eq(count_files("trash"), 2);
	ck_assert_uint_eq(vseen_mail, 2);
	ck_assert_uint_eq(vseen_rcpt, 4);
}
END_TEST

/* ---- what the filter context tells ------------------------------------------------- */

/*
 * "ctxrec", an inline filter that writes what its context says at MAIL,
 * RCPT and end of data into ctxrec_log, one line each, for a test to
 * compare with what the client sent.
 */
static struct buf ctxrec_log;

/* ctxrec_str - a string field, "(null)" for NULL */
static const char *
ctxrec_str(const char *v)
{
	return v != NULL ? v : "(null)";
}

static enum filter_verdict
ctxrec_mail(void *inst, struct filter_ctx *ctx, const char *from, struct filter_reply *r)
{
	const struct filter_session *fs = ctx->sess;
	const struct filter_txn *t = ctx->txn;

	buf_printf(&ctxrec_log, "conn local=%s:%u fam=%d client=%s:%u name=%s proxy=%s"
	    " subject=%s\n", fs->local_addr, fs->local_port, (int)fs->local_sa.ss_family,
	    fs->client_addr, fs->client_port, fs->client_name, ctxrec_str(fs->proxy_client),
	    ctxrec_str(fs->tls_peer_subject));
	buf_printf(&ctxrec_log, "mail %s qid=%s params=[%s] cur=%s\n", from,
	    ctxrec_str(t->queue_id), ctxrec_str(t->mail_params), ctxrec_str(t->rcpt_params_cur));
	return FILTER_CONTINUE;
}

static enum filter_verdict
ctxrec_rcpt(void *inst, struct filter_ctx *ctx, const char *rcpt, struct filter_reply *r)
{
	const struct filter_txn *t = ctx->txn;

	buf_printf(&ctxrec_log, "rcpt %s qid=%s cur=[%s] n=%zu\n", rcpt, ctxrec_str(t->queue_id),
	    ctxrec_str(t->rcpt_params_cur), t->nrcpts);
	return strncmp(rcpt, "nobody@", 7) == 0 ? FILTER_REJECT : FILTER_CONTINUE;
}

static enum filter_verdict
ctxrec_eom(void *inst, struct filter_ctx *ctx, struct filter_reply *r)
{
	const struct filter_txn *t = ctx->txn;
	size_t i;

	buf_printf(&ctxrec_log, "data qid=%s mail=[%s] cur=%s", ctxrec_str(t->queue_id),
	    ctxrec_str(t->mail_params), ctxrec_str(t->rcpt_params_cur));
	for (i = 0; i < t->nrcpts; i++)
		buf_printf(&ctxrec_log, " %s=[%s]", t->rcpts[i],
		    t->rcpt_params ? ctxrec_str(t->rcpt_params[i]) : "(none)");
	buf_puts(&ctxrec_log, "\n");
	return FILTER_CONTINUE;
}

static const struct filter_ops ctxrec_ops = {
	.name = "ctxrec", .mail = ctxrec_mail, .rcpt = ctxrec_rcpt, .eom = ctxrec_eom,
};

/* ctxrec_setup - a session test loop whose listener runs ctxrec */
static void
ctxrec_setup(void)
{
	filter_register(&ctxrec_ops);
	setup_with("", "filters = ctxrec");
	buf_init(&ctxrec_log);
}

static void
ctxrec_teardown(void)
{
	buf_free(&ctxrec_log);
	teardown();
}

static unsigned tcp_local_port, tcp_client_port;

/* inet_port - the port of a bound IPv4 socket */
static unsigned
inet_port(int fd, bool peer)
{
	struct sockaddr_in sin;
	socklen_t len = sizeof(sin);

	ck_assert_int_eq(peer ? getpeername(fd, (struct sockaddr *)&sin, &len) :
	    getsockname(fd, (struct sockaddr *)&sin, &len), 0);
	ck_assert_int_eq(sin.sin_family, AF_INET);
	return ntohs(sin.sin_port);
}

/*
 * tcp_start - a session over a real TCP connection on 127.0.0.1 (pair[0]
 * the server's end, pair[1] the client's), with the accepted socket's peer
 * address; tcp_local_port and tcp_client_port say what the filters must see.
 */
static void
tcp_start(struct client *c, struct bufferevent *pair[2])
{
	struct sockaddr_in sin;
	socklen_t len = sizeof(sin);
	int lfd, cfd, sfd;

	memset(&sin, 0, sizeof(sin));
	sin.sin_family = AF_INET;
	sin.sin_addr.s_addr = htonl(0x7f000001);
	ck_assert_int_ge(lfd = socket(AF_INET, SOCK_STREAM, 0), 0);
	ck_assert_int_eq(bind(lfd, (struct sockaddr *)&sin, sizeof(sin)), 0);
	ck_assert_int_eq(listen(lfd, 1), 0);
	tcp_local_port = inet_port(lfd, false);
	sin.sin_port = htons((uint16_t)tcp_local_port);
	ck_assert_int_ge(cfd = socket(AF_INET, SOCK_STREAM, 0), 0);
	ck_assert_int_eq(connect(cfd, (struct sockaddr *)&sin, sizeof(sin)), 0);
	tcp_client_port = inet_port(cfd, false);
	ck_assert_int_ge(sfd = accept(lfd, (struct sockaddr *)&sin, &len), 0);
	close(lfd);
	evutil_make_socket_nonblocking(cfd);
	evutil_make_socket_nonblocking(sfd);
	pair[0] = bufferevent_socket_new(base, sfd, BEV_OPT_CLOSE_ON_FREE);
	pair[1] = bufferevent_socket_new(base, cfd, BEV_OPT_CLOSE_ON_FREE);
	memset(c, 0, sizeof(*c));
	buf_init(&c->got);
	c->bev = pair[1];
	bufferevent_setcb(pair[1], client_read, NULL, client_event, c);
	bufferevent_enable(pair[1], EV_READ | EV_WRITE);
	session_start(loop, snap, 0, pair[0], (struct sockaddr *)&sin, len);
}

/* The transactions the ctxrec tests run: parameters, a refused RCPT, a second MAIL. */
static const struct step ctxrec_steps[] = {
	{ NULL, BANNER },
	{ "EHLO client.test\r\n", EHLO_REPLY },
	{ "MAIL FROM:<a@o.test> BODY=8BITMIME SIZE=100\r\n", "250 2.1.0 Sender ok\r\n" },
	{ "RCPT TO:<bob@example.test> NOTIFY=SUCCESS ORCPT=rfc822;x@y.test\r\n",
	    "250 2.1.5 Recipient ok\r\n" },
	{ "RCPT TO:<nobody@example.test> NOTIFY=NEVER\r\n",
	    "550 5.7.1 Message refused by policy\r\n" },
	{ "RCPT TO:<carol@example.test>\r\n", "250 2.1.5 Recipient ok\r\n" },
	{ "DATA\r\n", DATA_GO },
	{ "Subject: hi\r\n\r\nbody\r\n.\r\n", DELIVERED },
	{ "MAIL FROM:<>\r\n", "250 2.1.0 Sender ok\r\n" },
	{ "RCPT TO:<bob@example.test>\r\n", "250 2.1.5 Recipient ok\r\n" },
	{ "DATA\r\n", DATA_GO },
	{ "Subject: again\r\n\r\nbody\r\n.\r\n", DELIVERED },
};

/* ctxrec_expect - the log ctxrec must write for ctxrec_steps in session id, from conn */
static void
ctxrec_expect(struct buf *out, uint64_t id, const char *conn)
{
	char q[40];

	snprintf(q, sizeof(q), SESSION_ID_FMT, SESSION_ID(id));
	buf_printf(out, "%s"
	    "mail a@o.test qid=%s.1 params=[SIZE=100 BODY=8BITMIME] cur=(null)\n"
	    "rcpt bob@example.test qid=%s.1 cur=[NOTIFY=SUCCESS ORCPT=rfc822;x@y.test] n=0\n"
	    "rcpt nobody@example.test qid=%s.1 cur=[NOTIFY=NEVER] n=1\n"
	    "rcpt carol@example.test qid=%s.1 cur=[] n=1\n"
	    "data qid=%s.1 mail=[SIZE=100 BODY=8BITMIME] cur=(null)"
	    " bob@example.test=[NOTIFY=SUCCESS ORCPT=rfc822;x@y.test] carol@example.test=[]\n"
	    "%s"
	    "mail  qid=%s.2 params=[] cur=(null)\n"
	    "rcpt bob@example.test qid=%s.2 cur=[] n=0\n"
	    "data qid=%s.2 mail=[] cur=(null) bob@example.test=[]\n",
	    conn, q, q, q, q, q, conn, q, q, q);
}

/*
 * ctxrec_run - the transcript once, its log against the expected one.  Over
 * a bufferevent pair there is no socket: no local address and no ports (the
 * client address is the test's made-up 127.0.0.1, port 0).  Over loopback
 * TCP the filters see the connection's addresses and ports.
 */
static void
ctxrec_run(bool bytewise, bool tcp)
{
	uint64_t id = server_new_session_id() + 1;	/* the next one is the session's */
	struct buf want;
	char conn[200], received[80];

	buf_reset(&ctxrec_log);
	run_transcript_on(ctxrec_steps, sizeof(ctxrec_steps) / sizeof(ctxrec_steps[0]), bytewise,
	    tcp, "ctxrec_steps");
	if (tcp)
		snprintf(conn, sizeof(conn), "conn local=127.0.0.1:%u fam=%d client=127.0.0.1:%u"
		    " name=unknown proxy=(null) subject=(null)\n", tcp_local_port, AF_INET,
		    tcp_client_port);
	else
		snprintf(conn, sizeof(conn), "conn local=:0 fam=0 client=127.0.0.1:0"
		    " name=unknown proxy=(null) subject=(null)\n");
	buf_init(&want);
	ctxrec_expect(&want, id, conn);
	ck_assert_str_eq(ctxrec_log.data ? ctxrec_log.data : "", want.data);
	buf_free(&want);
	/* The queue id the filters saw is the one of the Received: header. */
	snprintf(received, sizeof(received), "ESMTP id " SESSION_ID_FMT ".1;\r\n",
	    SESSION_ID(id));
	ck_assert_msg(file_has("carol", received), "no [%s]", received);
	snprintf(received, sizeof(received), "ESMTP id " SESSION_ID_FMT ".2\r\n\tfor <bob@",
	    SESSION_ID(id));
	ck_assert_msg(file_has("bob", received), "no [%s]", received);
}

/* A bufferevent pair, whole and byte by byte */
START_TEST(test_ctx_pair)
{
	ctxrec_run(false, false);
	ctxrec_run(true, false);
}
END_TEST

/* A real TCP connection on 127.0.0.1, whole and byte by byte */
START_TEST(test_ctx_tcp)
{
	ctxrec_run(false, true);
	ctxrec_run(true, true);
}
END_TEST

/* ---- every filter wait point x every interruption -------------------------------- */

/*
 * The "gate" filter blocks on a pool thread at one chosen stage until the
 * test opens the gate, so an interruption (client EOF, command timeout,
 * pipelining flood, forced drain) lands while the job still reads the
 * session and its transaction.  Whatever happened, the session must end
 * with the one reply owed (421, or nothing after EOF), never a reply for
 * the stage after it, and be freed once the job is back (ASan watches).
 */
static pthread_mutex_t gate_mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t gate_cv = PTHREAD_COND_INITIALIZER;
static bool gate_is_open;
static int gate_entered;
static enum filter_stage gate_stage;
static int gate_aborts;		/* loop thread only */
static int gate_closes;		/* loop thread only */

/* gate_pass - block while the gate is closed, if this is the gated stage */
static void
gate_pass(enum filter_stage stage)
{
	if (stage != gate_stage)
		return;
	pthread_mutex_lock(&gate_mu);
	gate_entered++;
	while (!gate_is_open)
		pthread_cond_wait(&gate_cv, &gate_mu);
	pthread_mutex_unlock(&gate_mu);
}

/*
 * gate_connect - the per-session state is made before the gate: whoever
 * ends up owning it (the session, or a call it stopped waiting for) must
 * close it exactly once, or LSan or ASan says so.
 */
static enum filter_verdict
gate_connect(void *inst, struct filter_ctx *ctx, struct filter_reply *r)
{
	*ctx->priv = xstrdup("gate state");
	gate_pass(FILTER_STAGE_CONNECT);
	return FILTER_CONTINUE;
}

static enum filter_verdict
gate_helo(void *inst, struct filter_ctx *ctx, const char *helo, struct filter_reply *r)
{
	gate_pass(FILTER_STAGE_HELO);
	return FILTER_CONTINUE;
}

static enum filter_verdict
gate_mail(void *inst, struct filter_ctx *ctx, const char *from, struct filter_reply *r)
{
	gate_pass(FILTER_STAGE_MAIL);
	ck_assert_str_eq(ctx->txn->mail_from, from);	/* the transaction is still whole */
	return FILTER_CONTINUE;
}

static enum filter_verdict
gate_rcpt(void *inst, struct filter_ctx *ctx, const char *rcpt, struct filter_reply *r)
{
	gate_pass(FILTER_STAGE_RCPT);
	ck_assert_str_eq(rcpt, "bob@example.test");
	return FILTER_CONTINUE;
}

static enum filter_verdict
gate_eom(void *inst, struct filter_ctx *ctx, struct filter_reply *r)
{
	gate_pass(FILTER_STAGE_DATA);
	ck_assert_uint_eq(ctx->txn->nrcpts, 1);
	ck_assert_str_eq(ctx->txn->rcpts[0], "bob@example.test");
	return FILTER_CONTINUE;
}

static void
gate_abort(void *inst, struct filter_ctx *ctx)
{
	gate_aborts++;
}

/* gate_close - on the loop, for the session or for a late call */
static void
gate_close(void *inst, struct filter_ctx *ctx)
{
	free(*ctx->priv);
	*ctx->priv = NULL;
	gate_closes++;
}

static const struct filter_ops gate_ops = {
	.name = "gate", .may_block = true, .connect = gate_connect, .helo = gate_helo,
	.mail = gate_mail, .rcpt = gate_rcpt, .eom = gate_eom, .abort = gate_abort,
	.close = gate_close,
};

enum interruption { INT_EOF, INT_TIMEOUT, INT_FLOOD, INT_DRAIN, INT_NONE };

static const struct {
	enum filter_stage stage;
	const char *send;	/* what reaches the gated stage */
	const char *before;	/* the replies before it */
	const char *after;	/* the stage's reply once the gate opens (no interruption) */
} gate_points[] = {
	{ FILTER_STAGE_CONNECT, "", "", BANNER },
	{ FILTER_STAGE_HELO, "EHLO c\r\n", BANNER, EHLO_REPLY },
	{ FILTER_STAGE_MAIL, "EHLO c\r\nMAIL FROM:<a@o.test>\r\n", BANNER EHLO_REPLY,
	  "250 2.1.0 Sender ok\r\n" },
	{ FILTER_STAGE_RCPT, "EHLO c\r\nMAIL FROM:<a@o.test>\r\nRCPT TO:<bob@example.test>\r\n",
	  BANNER EHLO_REPLY "250 2.1.0 Sender ok\r\n", "250 2.1.5 Recipient ok\r\n" },
	{ FILTER_STAGE_DATA, "EHLO c\r\nMAIL FROM:<a@o.test>\r\nRCPT TO:<bob@example.test>\r\n"
	  "DATA\r\nSubject: x\r\n\r\nhi\r\n.\r\n", BANNER EHLO_REPLY "250 2.1.0 Sender ok\r\n"
	  "250 2.1.5 Recipient ok\r\n354 End data with <CR><LF>.<CR><LF>\r\n",
	  "250 2.0.0 Ok: delivered to Maildir\r\n" },
};

static const char *const owed[] = {
	[INT_EOF] = "",
	[INT_TIMEOUT] = "421 4.4.2 mx.test Error: timeout exceeded\r\n",
	[INT_FLOOD] = "421 4.7.0 mx.test Error: too many pipelined commands\r\n",
	[INT_NONE] = "554 5.5.1 Error: you talked before the greeting\r\n",	/* see gate_run */
	[INT_DRAIN] = "421 4.3.2 mx.test Service shutting down, closing transmission channel\r\n",
};

/* gate_setup - a session test loop whose listener runs the gate filter */
static void
gate_setup(void)
{
	filter_register(&gate_ops);
	signal(SIGPIPE, SIG_IGN);	/* as the daemon: a reply to a client gone is EPIPE */
	/* A second listener without filters: its sessions never need the filter pool. */
	setup_with("command_timeout = 1", "filters = gate\n\n[listener plain]\n"
	    "listen = 127.0.0.1:2\nrole = mx\nreverse_lookup = no\n");
	gate_is_open = false;
	gate_entered = 0;
	gate_aborts = 0;
	gate_closes = 0;
}

/* gate_open - let the blocked job go */
static void
gate_open(void)
{
	pthread_mutex_lock(&gate_mu);
	gate_is_open = true;
	pthread_cond_broadcast(&gate_cv);
	pthread_mutex_unlock(&gate_mu);
}

/* spin - run the loop without blocking for ms milliseconds, or until *stop */
static void
spin(unsigned ms, const bool *stop)
{
	unsigned i;

	for (i = 0; i < ms && (stop == NULL || !*stop); i++) {
		event_base_loop(base, EVLOOP_NONBLOCK);
		usleep(1000);
	}
}

/* gate_count - how many jobs wait at the gate */
static int
gate_count(void)
{
	int n;

	pthread_mutex_lock(&gate_mu);
	n = gate_entered;
	pthread_mutex_unlock(&gate_mu);
	return n;
}

/* entered - has the job reached the gate? */
static bool
entered(void)
{
	return gate_count() > 0;
}

/* replies_text - the client's input from an offset, for messages */
static const char *
replies_text(const struct client *c, size_t from)
{
	return c->got.data != NULL ? c->got.data + from : "";
}

/* socket_pair - a connected pair of socket bufferevents: EOF travels both ways */
static void
socket_pair(struct bufferevent *pair[2])
{
	int fds[2];

	ck_assert_int_eq(socketpair(AF_UNIX, SOCK_STREAM, 0, fds), 0);
	evutil_make_socket_nonblocking(fds[0]);
	evutil_make_socket_nonblocking(fds[1]);
	pair[0] = bufferevent_socket_new(base, fds[0], BEV_OPT_CLOSE_ON_FREE);
	pair[1] = bufferevent_socket_new(base, fds[1], BEV_OPT_CLOSE_ON_FREE);
}

/* gate_run - one wait point under one interruption */
static void
gate_run(size_t point, enum interruption how)
{
	struct bufferevent *pair[2];
	struct client c;
	uint64_t id;
	size_t mark;
	unsigned i;
	bool completes;

	gate_stage = gate_points[point].stage;
	socket_pair(pair);
	id = server_new_session_id() + 1;	/* the next one is the session's */
	client_start(&c, pair);
	ck_assert_ptr_nonnull(loop_session_find(loop, id));
	if (gate_stage != FILTER_STAGE_CONNECT)
		pump(&c, 0, 1);	/* the banner: a client talking before it is refused */
	bufferevent_write(pair[1], gate_points[point].send, strlen(gate_points[point].send));
	for (i = 0; i < 5000 && !entered(); i++)
		spin(1, NULL);
	ck_assert_msg(entered(), "point %zu: the job never reached the gate", point);
	spin(20, NULL);
	ck_assert_str_eq(replies_text(&c, 0), gate_points[point].before);
	mark = c.got.len;

	switch (how) {
	case INT_EOF:
		bufferevent_free(pair[1]);
		c.bev = NULL;
		spin(50, NULL);
		break;
	case INT_TIMEOUT:
		spin(1500, NULL);	/* command_timeout = 1 */
		break;
	case INT_FLOOD:
		for (i = 0; i < 30; i++)
			bufferevent_write(pair[1], "NOOP\r\n", 6);
		spin(50, NULL);
		break;
	case INT_DRAIN:
		session_shutdown(loop_session_find(loop, id), true);
		spin(50, NULL);
		break;
	case INT_NONE:
		break;
	}
	/*
	 * The blocked call reads its own copies of the session and the
	 * transaction: EOF, a flood or a drain end the session at once, while
	 * the call still waits at the gate (its late verdict is dropped).  The
	 * client's clock does not run while the session waits for a filter: a
	 * timeout comes only once the stage answered and the client then stays
	 * silent, and until then nothing goes out.
	 */
	if (how == INT_EOF || how == INT_FLOOD || how == INT_DRAIN) {
		for (i = 0; i < 5000 && loop_session_find(loop, id) != NULL; i++)
			spin(1, NULL);
		ck_assert_msg(loop_session_find(loop, id) == NULL,
		    "point %zu how %d: the session waited for the blocked call", point, (int)how);
		ck_assert_int_eq(gate_count(), 1);	/* still at the gate */
	} else {
		ck_assert_msg(c.got.len == mark, "point %zu how %d: [%s] before the job was back",
		    point, (int)how, replies_text(&c, mark));
		ck_assert_ptr_nonnull(loop_session_find(loop, id));
	}
	gate_open();
	completes = how == INT_NONE || how == INT_TIMEOUT;
	if (how == INT_NONE) {
		pump(&c, mark, 1);
		ck_assert_str_eq(replies_text(&c, mark), gate_points[point].after);
		bufferevent_write(pair[1], "QUIT\r\n", 6);
	}
	if (!completes) {
		/* The late call comes back to nobody: dropped, and its state closed. */
		for (i = 0; i < 5000 && gate_closes < 2; i++)
			spin(1, NULL);
		ck_assert_int_eq(gate_closes, 2);	/* the session's (NULL then), the call's */
	}
	for (i = 0; i < 5000 && loop_session_find(loop, id) != NULL; i++)
		spin(1, NULL);
	ck_assert_msg(loop_session_find(loop, id) == NULL, "point %zu how %d: session lives on",
	    point, (int)how);
	if (how != INT_EOF) {
		char want[1024];

		spin(20, &c.eof);
		ck_assert(c.eof);
		/* Before the banner, the flood is a client talking first. */
		snprintf(want, sizeof(want), "%s%s", how == INT_TIMEOUT ? gate_points[point].after : "",
		    owed[how == INT_FLOOD && gate_stage == FILTER_STAGE_CONNECT ? INT_NONE : how]);
		if (how != INT_NONE)
			ck_assert_str_eq(replies_text(&c, mark), want);
		bufferevent_free(pair[1]);
	}
	/* A transaction that existed and was not delivered was aborted exactly once. */
	if (how != INT_NONE)
		ck_assert_int_eq(gate_aborts, gate_stage < FILTER_STAGE_MAIL ? 0 :
		    gate_stage == FILTER_STAGE_DATA && completes ? 0 : 1);
	if (gate_stage == FILTER_STAGE_DATA)
		ck_assert_int_eq(count_files("bob"), completes ? 1 : 0);
	buf_free(&c.got);
}

START_TEST(test_wait_filter)
{
	gate_run((size_t)_i / (INT_NONE + 1), (enum interruption)(_i % (INT_NONE + 1)));
}
END_TEST

/*
 * test_pools_apart - every thread of the filter pool is blocked (two
 * sessions' RCPT filters wait at the gate); a session on a listener without
 * filters still gets its message into Maildir, on the delivery pool.  With
 * one pool for everything, that delivery queued behind the gate.
 */
START_TEST(test_pools_apart)
{
	static const char *const gated = "EHLO c\r\nMAIL FROM:<a@o.test>\r\n"
	    "RCPT TO:<bob@example.test>\r\n";
	static const char *const plain = "EHLO c\r\nMAIL FROM:<a@o.test>\r\n"
	    "RCPT TO:<carol@example.test>\r\nDATA\r\nSubject: x\r\n\r\nhi\r\n.\r\n";
	struct bufferevent *g[2][2], *pair[2];
	struct client gc[2], c;
	size_t k;
	unsigned i;

	gate_stage = FILTER_STAGE_RCPT;
	for (k = 0; k < 2; k++) {
		socket_pair(g[k]);
		client_start(&gc[k], g[k]);
		pump(&gc[k], 0, 1);	/* the banner (the connect stage runs on the pool too) */
		bufferevent_write(g[k][1], gated, strlen(gated));
	}
	for (i = 0; i < 5000 && gate_count() < 2; i++)
		spin(1, NULL);
	ck_assert_int_eq(gate_count(), 2);	/* both filter threads wait at the gate */
	socket_pair(pair);
	client_start_on(&c, pair, 1);
	bufferevent_write(pair[1], plain, strlen(plain));
	pump(&c, 0, 6);
	ck_assert_msg(strstr(replies_text(&c, 0), "250 2.0.0 Ok: delivered to Maildir\r\n") != NULL,
	    "got [%s]", replies_text(&c, 0));
	ck_assert_int_eq(count_files("carol"), 1);
	gate_open();
	for (k = 0; k < 2; k++) {
		bufferevent_free(g[k][1]);
		buf_free(&gc[k].got);
	}
	bufferevent_write(pair[1], "QUIT\r\n", 6);
	pump(&c, c.got.len, 1);
	bufferevent_free(pair[1]);
	for (i = 0; i < 200; i++)
		spin(1, NULL);
	buf_free(&c.got);
}
END_TEST

/* ---- envelope edits at end of message (smtp_envelope.c), on Maildir ---- */

/* edt_eom - the sender's local part says what to edit */
static enum filter_verdict
edt_eom(void *inst, struct filter_ctx *ctx, struct filter_reply *r)
{
	struct filter_txn *t = ctx->txn;

	(void)inst;
	(void)r;
	if (strncmp(t->mail_from, "chg@", 4) == 0) {
		filter_change_from(t, "new@origin.test", "RET=HDRS");
		filter_delete_rcpt(t, "<BOB@example.test>");
		filter_add_rcpt(t, "carol@example.test", "NOTIFY=NEVER");
		filter_add_rcpt(t, "<carol@example.test>", "");	/* once only */
	} else if (strncmp(t->mail_from, "del@", 4) == 0) {
		filter_delete_rcpt(t, "bob@example.test");
		filter_delete_rcpt(t, "alice@example.test");
	} else if (strncmp(t->mail_from, "bad@", 4) == 0) {
		filter_add_rcpt(t, "carol@example.test", "SIZE=1");
	} else if (strncmp(t->mail_from, "body@", 5) == 0) {
		filter_replace_body(t, "new body\r\n", 10);
		filter_add_rcpt(t, "dave@example.test", NULL);
	}
	return FILTER_CONTINUE;
}

static const struct filter_ops edt_ops = { .name = "edt", .eom = edt_eom };

/* edt_setup - a session test loop whose listener runs edt */
static void
edt_setup(void)
{
	filter_register(&edt_ops);
	setup_with("", "filters = edt");
}

/* the sender changed, bob deleted (any case), carol added once: the Maildir copies say so */
START_TEST(test_envelope_edit)
{
	static const struct step steps[] = {
		{ NULL, BANNER },
		{ "EHLO client.test\r\n", EHLO_REPLY },
		{ "MAIL FROM:<chg@origin.test>\r\n", "250 2.1.0 Sender ok\r\n" },
		{ "RCPT TO:<alice@example.test>\r\n", "250 2.1.5 Recipient ok\r\n" },
		{ "RCPT TO:<bob@example.test>\r\n", "250 2.1.5 Recipient ok\r\n" },
		{ "DATA\r\n", DATA_GO },
		{ "Subject: hi\r\n\r\nbody\r\n.\r\n", DELIVERED },
		/* a body replaced and a recipient added go together */
		{ "MAIL FROM:<body@origin.test>\r\n", "250 2.1.0 Sender ok\r\n" },
		{ "RCPT TO:<erin@example.test>\r\n", "250 2.1.5 Recipient ok\r\n" },
		{ "DATA\r\n", DATA_GO },
		{ "Subject: hi\r\n\r\nold body\r\n.\r\n", DELIVERED },
	};

	RUN(steps);
	ck_assert_int_eq(count_files("alice"), 2);
	ck_assert_int_eq(count_files("bob"), 0);
	ck_assert_int_eq(count_files("carol"), 2);	/* once per run */
	ck_assert(file_has("carol", "Return-Path: <new@origin.test>\r\n"));
	ck_assert_int_eq(count_files("dave"), 2);
	ck_assert_int_eq(count_files("erin"), 2);
	ck_assert(file_has("dave", "\r\n\r\nnew body\r\n"));
	ck_assert(!file_has("erin", "old body"));
}
END_TEST

/* every recipient deleted: discarded, as Postfix; an edit no RCPT could carry: 451 */
START_TEST(test_envelope_edit_none_left_or_bad)
{
	static const struct step steps[] = {
		{ NULL, BANNER },
		{ "EHLO client.test\r\n", EHLO_REPLY },
		{ "MAIL FROM:<del@origin.test>\r\n", "250 2.1.0 Sender ok\r\n" },
		{ "RCPT TO:<alice@example.test>\r\n", "250 2.1.5 Recipient ok\r\n" },
		{ "RCPT TO:<bob@example.test>\r\n", "250 2.1.5 Recipient ok\r\n" },
		{ "DATA\r\n", DATA_GO },
		{ "Subject: hi\r\n\r\nbody\r\n.\r\n", "250 2.0.0 Ok\r\n" },
		{ "MAIL FROM:<bad@origin.test>\r\n", "250 2.1.0 Sender ok\r\n" },
		{ "RCPT TO:<alice@example.test>\r\n", "250 2.1.5 Recipient ok\r\n" },
		{ "DATA\r\n", DATA_GO },
		{ "Subject: hi\r\n\r\nbody\r\n.\r\n",
		    "451 4.3.0 Error: local error in processing, try again later\r\n" },
	};

	RUN(steps);
	ck_assert_int_eq(count_files("alice"), 0);
	ck_assert_int_eq(count_files("bob"), 0);
	ck_assert_int_eq(count_files("carol"), 0);
}
END_TEST

/* session_tcase - a test case of the suite with its fixture and timeout */
static TCase *
session_tcase(Suite *s, const char *name, void (*up)(void), void (*down)(void))
{
	TCase *tc = tcase_create(name);

	tcase_add_checked_fixture(tc, up, down);
	tcase_set_timeout(tc, 30);
	suite_add_tcase(s, tc);
	return tc;
}

static Suite *
session_suite(void)
{
	Suite *s = suite_create("session");
	TCase *tc = session_tcase(s, "transcripts", setup, teardown);

	tcase_add_test(tc, test_delivery);
	tcase_add_test(tc, test_sequence_errors);
	tcase_add_test(tc, test_bad_input);
	tcase_add_test(tc, test_too_many_rcpts);
	tcase_add_test(tc, test_smuggling);
	tcase_add_test(tc, test_bdat);
	tcase_add_test(tc, test_size_and_lines);
	tc = session_tcase(s, "verdicts", verdict_setup, teardown);
	tcase_add_test(tc, test_discard_rcpt);
	tcase_add_test(tc, test_discard_mail);
	tcase_add_test(tc, test_quarantine_mail);
	tcase_add_test(tc, test_accept_mail);
	tc = session_tcase(s, "envelope", edt_setup, teardown);
	tcase_add_test(tc, test_envelope_edit);
	tcase_add_test(tc, test_envelope_edit_none_left_or_bad);
	tc = session_tcase(s, "context", ctxrec_setup, ctxrec_teardown);
	tcase_add_test(tc, test_ctx_pair);
	tcase_add_test(tc, test_ctx_tcp);
	tc = session_tcase(s, "wait_points", gate_setup, teardown);
	tcase_add_test(tc, test_pools_apart);
	tcase_add_loop_test(tc, test_wait_filter, 0,
	    (int)(sizeof(gate_points) / sizeof(gate_points[0])) * (INT_NONE + 1));
	return s;
}

UNIT_MAIN(session_suite)
