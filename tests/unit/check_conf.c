/*
 * check_conf.c - unit tests for conf.c: values and defaults, limit
 * inheritance, one precise "FILE:LINE: [section] key:" error per mistake,
 * all errors in one pass, the shipped configs, refcounting.
 *
 * Writes its configs to temporary files and removes them; never touches
 * anything else.  Run under ASan: every snapshot must be freed.
 */
#include "config.h"

#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "conf.h"
#include "util.h"
#include "unit.h"

/* A valid base to append mistakes to: lines 1-5. */
#define BASE \
	"[listener mx]\n" \
	"listen = 127.0.0.1:2525\n" \
	"[backend]\n" \
	"relay = maildir:/tmp/m\n" \
	"[server]\n"

static char tmp_path[4096];

/* write_conf - write text to a fresh temp file ($TMPDIR or /tmp) named in tmp_path */
static const char *
write_conf(const char *text)
{
	const char *dir = getenv("TMPDIR");
	FILE *fp;
	int fd, n;

	n = snprintf(tmp_path, sizeof(tmp_path), "%s/check_conf.XXXXXX",
	    dir != NULL && *dir != '\0' ? dir : "/tmp");
	ck_assert(n > 0 && (size_t)n < sizeof(tmp_path));
	fd = mkstemp(tmp_path);
	ck_assert_int_ge(fd, 0);
	fp = fdopen(fd, "w");
	ck_assert_ptr_nonnull(fp);
	ck_assert_int_eq(fputs(text, fp) >= 0, 1);
	ck_assert_int_eq(fclose(fp), 0);
	return tmp_path;
}

/* load_text - load text as a config; errors go to err */
static struct conf *
load_text(const char *text, struct buf *err)
{
	struct conf *c;

	write_conf(text);
	c = conf_load(tmp_path, err);
	unlink(tmp_path);
	return c;
}

/* load_ok - load text that must be valid */
static struct conf *
load_ok(const char *text)
{
	struct buf err;
	struct conf *c;

	buf_init(&err);
	c = load_text(text, &err);
	ck_assert_msg(c != NULL, "unexpected errors:\n%s", err.data);
	ck_assert_uint_eq(err.len, 0);
	buf_free(&err);
	return c;
}

/* count_lines - number of '\n' in s */
static size_t
count_lines(const char *s)
{
	size_t n = 0;

	for (; *s != '\0'; s++)
		n += *s == '\n';
	return n;
}

/* ---- valid configs ---- */

static const char full_conf[] =
	"; a comment\n"
	"[listener mx]\n"				/* 2 */
	"listen = 0.0.0.0:25 [::]:25, 127.0.0.1:26\n"
	"filters = dnsbl spf milter:rspamd\n"
	"max_message_size = 10m\n"
	"proxy_protocol = off\n"			/* the default: accepted */
	"proxy_trusted =\n"
	"greet_pause = 3\n"
	"bare_newline = Normalize\n"
	"\n"
	"[listener sub]\n"				/* 11 */
	"listen = [::1]:587\n"
	"role = submission\n"
	"tls = starttls\n"
	"tls_required = yes\n"
	"\n"
	"[listener subs]\n"
	"listen = localhost:465\n"
	"role = submissions\n"
	"max_recipients = 7\n"
	"\n"
	"[server]\n"
	"hostname = MX.Example.test.\n"
	"user = portier\n"
	"workers = 3\n"
	"filter_threads = 4\n"
	"resolver = 127.0.0.1 ::1@5353\n"
	"log = syslog\n"
	"metrics =\n"
	"local_domains = Example.TEST, other.test.\n"
	"    third.test  ; continued on an indented line\n"
	"drain_timeout = 5\n"
	"max_recipients = 50\n"
	"max_command_line = 1k\n"
	"spool_memory = 0\n"
	"\n"
	"[tls]\n"
	"cert = /nonexistent/cert.pem\n"
	"key = /nonexistent/key.pem\n"
	"[backend]\n"
	"relay = lmtp:unix:/run/dovecot/lmtp\n"
	"relay_tls = opportunistic\n"
	"bounce_relay = smtp:[2001:db8::1]:25\n"
	"lmtp_mixed = tempfail\n"
	"relay_timeout = 60\n"
	"relay_connect_timeout = 10\n"
	"relay_pool = 0\n"
	"[redis]\n"
	"server = unix:/run/redis/redis.sock\n"
	"password = pw\n"
	"database = 3\n"
	"prefix = edge1:\n"
	"timeout = 1\n"
	"on_error = closed\n"
	"[auth]\n"
	"passwd_file = /etc/portier/passwd\n"
	"[milter rspamd]\n"
	"socket = inet:127.0.0.1:11332\n"
	"default_action = tempfail\n"
	"whatever_key = kept raw\n";

START_TEST(test_full)
{
	struct conf *c = load_ok(full_conf);
	const struct conf_listener *mx, *sub, *subs;
	const struct conf_section *s;

	ck_assert_str_eq(c->hostname, "MX.Example.test");
	ck_assert_str_eq(c->user, "portier");
	ck_assert_uint_eq(c->workers, 3);
	ck_assert_uint_eq(c->filter_threads, 4);
	ck_assert_str_eq(c->resolver, "127.0.0.1 ::1@5353");
	ck_assert_str_eq(c->log, "syslog");
	ck_assert_ptr_null(c->metrics);
	ck_assert_uint_eq(c->nlocal_domains, 3);
	ck_assert_str_eq(c->local_domains[0], "example.test");
	ck_assert_str_eq(c->local_domains[1], "other.test");
	ck_assert_str_eq(c->local_domains[2], "third.test");
	ck_assert_uint_eq(c->drain_timeout, 5);
	ck_assert_uint_eq(c->limits.max_recipients, 50);
	ck_assert_uint_eq(c->limits.max_command_line, 1024);
	ck_assert_uint_eq(c->limits.spool_memory, 0);
	ck_assert_uint_eq(c->limits.max_message_size, 52428800);

	ck_assert_uint_eq(c->nlisteners, 3);
	mx = &c->listeners[0];
	sub = &c->listeners[1];
	subs = &c->listeners[2];
	ck_assert_str_eq(mx->name, "mx");
	ck_assert_int_eq(mx->line, 2);
	ck_assert_uint_eq(mx->nlisten, 3);
	ck_assert_str_eq(mx->listen[0], "0.0.0.0:25");
	ck_assert_str_eq(mx->listen[1], "[::]:25");
	ck_assert_str_eq(mx->listen[2], "127.0.0.1:26");
	ck_assert_int_eq(mx->role, ROLE_MX);
	ck_assert_int_eq(mx->tls, TLS_NONE);
	ck_assert(!mx->tls_required);
	ck_assert(!mx->proxy_protocol);
	ck_assert_uint_eq(mx->nproxy_trusted, 0);
	ck_assert_uint_eq(mx->greet_pause, 3);
	ck_assert_int_eq(mx->bare_newline, BARE_NEWLINE_NORMALIZE);
	ck_assert_uint_eq(mx->nfilters, 3);
	ck_assert_str_eq(mx->filters[2], "milter:rspamd");
	/* own override, the rest inherited from [server] below it in the file */
	ck_assert_uint_eq(mx->limits.max_message_size, 10 * 1024 * 1024);
	ck_assert_uint_eq(mx->limits.max_recipients, 50);
	ck_assert_uint_eq(mx->limits.max_command_line, 1024);
	ck_assert_uint_eq(mx->limits.max_text_line, 1000);

	ck_assert_int_eq(sub->role, ROLE_SUBMISSION);
	ck_assert_int_eq(sub->tls, TLS_STARTTLS);
	ck_assert(sub->tls_required);
	ck_assert_uint_eq(sub->nfilters, 0);
	ck_assert_uint_eq(sub->limits.max_message_size, 52428800);
	ck_assert_int_eq(subs->role, ROLE_SUBMISSIONS);
	ck_assert_int_eq(subs->tls, TLS_IMPLICIT);	/* implied by the role */
	ck_assert_uint_eq(subs->limits.max_recipients, 7);
	ck_assert_int_eq(subs->bare_newline, BARE_NEWLINE_REJECT);

	ck_assert_str_eq(c->tls_cert, "/nonexistent/cert.pem");
	ck_assert_str_eq(c->tls_key, "/nonexistent/key.pem");
	ck_assert_int_eq(c->relay.kind, RELAY_LMTP);
	ck_assert(c->relay.is_unix);
	ck_assert_str_eq(c->relay.path, "/run/dovecot/lmtp");
	ck_assert_str_eq(c->relay.spec, "lmtp:unix:/run/dovecot/lmtp");
	ck_assert_int_eq(c->relay_tls, RELAY_TLS_OPPORTUNISTIC);
	ck_assert_int_eq(c->bounce_relay.kind, RELAY_SMTP);
	ck_assert_str_eq(c->bounce_relay.host, "2001:db8::1");
	ck_assert_str_eq(c->bounce_relay.port, "25");
	ck_assert_int_eq(c->lmtp_mixed, LMTP_MIXED_TEMPFAIL);
	ck_assert_uint_eq(c->relay_timeout, 60);
	ck_assert_uint_eq(c->relay_connect_timeout, 10);
	ck_assert_uint_eq(c->relay_pool, 0);
	ck_assert_str_eq(c->redis_server, "unix:/run/redis/redis.sock");
	ck_assert_str_eq(c->redis_password, "pw");
	ck_assert_uint_eq(c->redis_database, 3);
	ck_assert_str_eq(c->redis_prefix, "edge1:");
	ck_assert_uint_eq(c->redis_timeout, 1);
	ck_assert_str_eq(c->redis_on_error, "closed");
	ck_assert_str_eq(c->auth_passwd_file, "/etc/portier/passwd");
	ck_assert_ptr_null(c->auth_dovecot);

	s = conf_section_find(c, "milter", "rspamd");
	ck_assert_ptr_nonnull(s);
	ck_assert_int_eq(s->line, 57);
	ck_assert_str_eq(conf_section_get(s, "socket"), "inet:127.0.0.1:11332");
	ck_assert_str_eq(conf_section_get(s, "whatever_key"), "kept raw");
	ck_assert_ptr_null(conf_section_get(s, "nope"));
	ck_assert_ptr_null(conf_section_get(NULL, "socket"));
	ck_assert_ptr_null(conf_section_find(c, "milter", "other"));
	ck_assert_ptr_nonnull(conf_section_find(c, "server", NULL));
	ck_assert_ptr_nonnull(conf_section_find(c, "server", ""));
	ck_assert_str_eq(conf_section_find(c, "listener", "sub")->name, "sub");

	ck_assert(conf_is_local_domain(c, "example.test"));
	ck_assert(conf_is_local_domain(c, "EXAMPLE.Test."));
	ck_assert(conf_is_local_domain(c, "third.test"));
	ck_assert(!conf_is_local_domain(c, "sub.example.test"));
	ck_assert(!conf_is_local_domain(c, "example.tes"));
	ck_assert(!conf_is_local_domain(c, ""));
	conf_unref(c);
}
END_TEST

START_TEST(test_defaults)
{
	struct conf *c = load_ok(BASE);
	struct conf_limits def;
	const struct conf_listener *l;

	conf_default_limits(&def);
	ck_assert_uint_eq(def.max_command_line, 512);
	ck_assert_uint_eq(def.max_text_line, 1000);
	ck_assert_uint_eq(def.max_message_size, 52428800);
	ck_assert_uint_eq(def.max_recipients, 100);
	ck_assert_uint_eq(def.max_errors, 10);
	ck_assert_uint_eq(def.max_pipelined, 200);
	ck_assert_uint_eq(def.command_timeout, 300);
	ck_assert_uint_eq(def.data_timeout, 180);
	ck_assert_uint_eq(def.max_sessions, 5000);
	ck_assert_uint_eq(def.spool_memory, 1048576);
	ck_assert_mem_eq(&c->limits, &def, sizeof(def));

	ck_assert_ptr_nonnull(c->hostname);
	ck_assert_ptr_null(c->user);
	ck_assert_uint_ge(c->workers, 1);	/* 0 resolved to the core count */
	ck_assert_uint_eq(c->workers, (unsigned)sysconf(_SC_NPROCESSORS_ONLN));
	ck_assert_uint_eq(c->filter_threads, 8);
	ck_assert_uint_eq(c->auth_threads, 2);
	ck_assert_uint_eq(c->delivery_threads, 4);
	ck_assert_uint_eq(c->pool_queue, 10000);
	ck_assert_str_eq(c->resolver, "system");
	ck_assert_str_eq(c->log, "stderr");
	ck_assert_ptr_null(c->metrics);
	ck_assert_uint_eq(c->nlocal_domains, 0);
	ck_assert(!conf_is_local_domain(c, "localhost"));
	ck_assert_uint_eq(c->drain_timeout, 30);
	ck_assert_ptr_null(c->tls_cert);
	ck_assert_int_eq(c->relay.kind, RELAY_MAILDIR);
	ck_assert_str_eq(c->relay.path, "/tmp/m");
	ck_assert_int_eq(c->bounce_relay.kind, RELAY_NONE);
	ck_assert_int_eq(c->relay_tls, RELAY_TLS_NONE);
	ck_assert_int_eq(c->lmtp_mixed, LMTP_MIXED_DSN);
	ck_assert_uint_eq(c->relay_timeout, 120);
	ck_assert_uint_eq(c->relay_connect_timeout, 30);
	ck_assert_uint_eq(c->relay_pool, 16);
	ck_assert_ptr_null(c->redis_server);
	ck_assert_uint_eq(c->redis_timeout, 2);
	ck_assert_ptr_null(c->redis_on_error);
	ck_assert_uint_eq(c->state_entries, 200000);
	ck_assert_ptr_null(c->auth_passwd_file);

	ck_assert_uint_eq(c->nlisteners, 1);
	l = &c->listeners[0];
	ck_assert_int_eq(l->role, ROLE_MX);
	ck_assert_int_eq(l->tls, TLS_NONE);
	ck_assert(!l->tls_required);
	ck_assert(!l->proxy_protocol);
	ck_assert_uint_eq(l->nproxy_trusted, 0);
	ck_assert_uint_eq(l->greet_pause, 0);
	ck_assert_int_eq(l->bare_newline, BARE_NEWLINE_REJECT);
	ck_assert_mem_eq(&l->limits, &def, sizeof(def));
	ck_assert_uint_eq(c->nsections, 3);	/* the empty [server] is kept too */
	conf_unref(c);
}
END_TEST

/* Limits resolve the same whether [server] comes before or after a listener. */
START_TEST(test_inheritance_order)
{
	static const char server[] =
	    "[server]\nmax_recipients = 20\nmax_errors = 3\ndata_timeout = 60\n";
	static const char listeners[] =
	    "[listener a]\nlisten = 127.0.0.1:1025\nmax_errors = 5\n"
	    "[listener b]\nlisten = 127.0.0.1:1026\n"
	    "[backend]\nrelay = smtp:127.0.0.1:2526\n";
	struct conf *first, *last;
	char *t1 = xasprintf("%s%s", server, listeners);
	char *t2 = xasprintf("%s%s", listeners, server);
	size_t i;

	first = load_ok(t1);
	last = load_ok(t2);
	for (i = 0; i < 2; i++) {
		ck_assert_mem_eq(&first->listeners[i].limits, &last->listeners[i].limits,
		    sizeof(struct conf_limits));
		ck_assert_uint_eq(last->listeners[i].limits.max_recipients, 20);
		ck_assert_uint_eq(last->listeners[i].limits.data_timeout, 60);
	}
	ck_assert_uint_eq(last->listeners[0].limits.max_errors, 5);
	ck_assert_uint_eq(last->listeners[1].limits.max_errors, 3);
	ck_assert_int_eq(last->relay.kind, RELAY_SMTP);
	ck_assert_str_eq(last->relay.host, "127.0.0.1");
	ck_assert_str_eq(last->relay.port, "2526");
	conf_unref(first);
	conf_unref(last);
	free(t1);
	free(t2);
}
END_TEST

/* Every accepted value form of each kind, table-driven. */
static const struct {
	const char *line;		/* appended under [server] of BASE, or a whole file */
	const char *key;
	unsigned long long want;
} number_cases[] = {
	{ "max_message_size = 1", "max_message_size", 1 },
	{ "max_message_size = 2k", "max_message_size", 2048 },
	{ "max_message_size = 3M", "max_message_size", 3ull << 20 },
	{ "max_message_size = 1g", "max_message_size", 1ull << 30 },
	{ "max_text_line = 1000", "max_text_line", 1000 },
	{ "max_command_line = 512", "max_command_line", 512 },
	{ "max_recipients = 4294967295", "max_recipients", 4294967295ull },
	{ "command_timeout = 1", "command_timeout", 1 },
	{ "max_sessions = 00012", "max_sessions", 12 },
	{ "auth_threads = 3", "auth_threads", 3 },
	{ "delivery_threads = 5", "delivery_threads", 5 },
	{ "pool_queue = 77", "pool_queue", 77 },
};

START_TEST(test_numbers)
{
	char *text = xasprintf(BASE "%s\n", number_cases[_i].line);
	struct conf *c = load_ok(text);
	unsigned long long got = 0;
	const char *k = number_cases[_i].key;

	if (strcmp(k, "max_message_size") == 0)
		got = c->limits.max_message_size;
	else if (strcmp(k, "max_text_line") == 0)
		got = c->limits.max_text_line;
	else if (strcmp(k, "max_command_line") == 0)
		got = c->limits.max_command_line;
	else if (strcmp(k, "max_recipients") == 0)
		got = c->limits.max_recipients;
	else if (strcmp(k, "command_timeout") == 0)
		got = c->limits.command_timeout;
	else if (strcmp(k, "max_sessions") == 0)
		got = c->limits.max_sessions;
	else if (strcmp(k, "auth_threads") == 0)
		got = c->auth_threads;
	else if (strcmp(k, "delivery_threads") == 0)
		got = c->delivery_threads;
	else if (strcmp(k, "pool_queue") == 0)
		got = c->pool_queue;
	ck_assert_uint_eq(got, number_cases[_i].want);
	/* and the listener inherits it */
	ck_assert_mem_eq(&c->listeners[0].limits, &c->limits, sizeof(c->limits));
	conf_unref(c);
	free(text);
}
END_TEST

static const struct {
	const char *value;
	bool want;
} bool_cases[] = {
	{ "yes", true }, { "YES", true }, { "true", true }, { "on", true }, { "1", true },
	{ "no", false }, { "False", false }, { "off", false }, { "0", false },
};

START_TEST(test_bools)
{
	char *text = xasprintf(BASE "io_uring = %s\n", bool_cases[_i].value);
	struct conf *c = load_ok(text);

	ck_assert_int_eq(c->io_uring, bool_cases[_i].want);
	conf_unref(c);
	free(text);
}
END_TEST

static const struct {
	const char *spec;
	enum conf_relay_kind kind;
	bool is_unix;
	const char *path, *host, *port;
} relay_cases[] = {
	{ "lmtp:unix:/run/lmtp", RELAY_LMTP, true, "/run/lmtp", NULL, NULL },
	{ "lmtp:127.0.0.1:24", RELAY_LMTP, false, NULL, "127.0.0.1", "24" },
	{ "lmtp:[::1]:24", RELAY_LMTP, false, NULL, "::1", "24" },
	{ "smtp:mail.internal.test:25", RELAY_SMTP, false, NULL, "mail.internal.test", "25" },
	{ "maildir:./var/mail", RELAY_MAILDIR, false, "./var/mail", NULL, NULL },
};

START_TEST(test_relays)
{
	char *text = xasprintf("[listener x]\nlisten = [::]:25\n[backend]\nrelay = %s\n",
	    relay_cases[_i].spec);
	struct conf *c = load_ok(text);

	ck_assert_int_eq(c->relay.kind, relay_cases[_i].kind);
	ck_assert_int_eq(c->relay.is_unix, relay_cases[_i].is_unix);
	ck_assert_str_eq(c->relay.spec, relay_cases[_i].spec);
	if (relay_cases[_i].path != NULL)
		ck_assert_str_eq(c->relay.path, relay_cases[_i].path);
	else
		ck_assert_ptr_null(c->relay.path);
	if (relay_cases[_i].host != NULL) {
		ck_assert_str_eq(c->relay.host, relay_cases[_i].host);
		ck_assert_str_eq(c->relay.port, relay_cases[_i].port);
	} else {
		ck_assert_ptr_null(c->relay.host);
	}
	conf_unref(c);
	free(text);
}
END_TEST

/* ---- errors: each mistake, its line and its key ---- */

static const struct {
	const char *text;
	const char *want;	/* after "FILE" in the message */
} error_cases[] = {
	/* syntax */
	{ "[listener mx\nlisten = 127.0.0.1:25\n", ":1: section header has no closing ']'" },
	{ BASE "hostname\n", ":6: [server]: expected key = value" },
	{ BASE "host name = x\n", ":6: [server]: expected key = value" },
	{ BASE "= x\n", ":6: [server]: missing key" },
	{ "hostname = x\n" BASE, ":1: key outside any section" },
	{ BASE "[bogus]\nx = 1\n", ":6: [bogus]: unknown section" },
	{ BASE "[listener]\nlisten = *:26\n", ":6: [listener]: [listener] needs a name" },
	{ BASE "[tls x]\n", ":6: [tls x]: [tls] takes no name" },
	{ BASE "[milter a b]\n", ":6: [milter a b]: a header is [type] or [type name]" },
	{ BASE "[milter a/b]\n", ":6: [milter a/b]: \"a/b\" is not a name" },
	{ BASE "[backend]\n", ":6: [backend]: duplicate section (first at line 3)" },
	{ BASE "[milter m]\nx = 1\n[milter m]\n", ":8: [milter m]: duplicate section (first at line 6)" },
	{ BASE "[server] junk\n", ":6: [server]: text after ']'" },
	{ BASE "user = a\nuser = b\n", ":7: [server] user: duplicate key (first set at line 6)" },
	{ BASE "[milter m]\nsocket = a\nsocket = b\n", ":8: [milter m] socket: duplicate key (first set at line 7)" },
	/* unknown keys */
	{ BASE "bogus = 1\n", ":6: [server] bogus: unknown key" },
	{ "[listener mx]\nlisten = *:25\nrelay = x\n[backend]\nrelay = maildir:m\n",
	  ":3: [listener mx] relay: unknown key" },
	{ BASE "[tls]\ncertificate = x\n", ":7: [tls] certificate: unknown key" },
	{ "[listener mx]\nlisten = *:25\nfilter = spf\n[backend]\nrelay = maildir:m\n",
	  ":3: [listener mx] filter: unknown key; did you mean filters?" },
	{ BASE "max_recipient = 5\n", ":6: [server] max_recipient: unknown key; did you mean max_recipients?" },
	{ BASE "[redis]\nhost = x\n", ":7: [redis] host: unknown key" },
	{ BASE "[auth]\npasswd = x\n", ":7: [auth] passwd: unknown key" },
	/* numbers */
	{ BASE "max_recipients = ten\n", ":6: [server] max_recipients: \"ten\" is not a number" },
	{ BASE "max_recipients = -1\n", ":6: [server] max_recipients: \"-1\" is not a number" },
	{ BASE "max_recipients = 0\n", ":6: [server] max_recipients: 0 is out of range" },
	{ BASE "max_recipients = 4294967296\n", ":6: [server] max_recipients: 4294967296 is out of range" },
	{ BASE "max_recipients = 1k\n", ":6: [server] max_recipients: \"1k\" is not a number" },
	{ BASE "max_message_size = 99999999999999999999999\n", ":6: [server] max_message_size: \"99999999999999999999999\" is too large" },
	{ BASE "max_message_size = 99999999999g\n", ":6: [server] max_message_size: \"99999999999g\" is too large" },
	{ BASE "max_message_size = 10x\n", ":6: [server] max_message_size: \"10x\" is not a number" },
	{ BASE "max_message_size = 10 m\n", ":6: [server] max_message_size: \"10 m\" is not a number" },
	{ BASE "max_command_line = 511\n", ":6: [server] max_command_line: 511 is out of range; use 512 to" },
	{ BASE "max_text_line = 999\n", ":6: [server] max_text_line: 999 is out of range; use 1000 to" },
	{ BASE "workers = 5000\n", ":6: [server] workers: 5000 is out of range" },
	{ "[listener mx]\nlisten = *:25\nmax_text_line = 12\n[backend]\nrelay = maildir:m\n",
	  ":3: [listener mx] max_text_line: 12 is out of range" },
	{ "[listener mx]\nlisten = *:25\ngreet_pause = 1000\n[backend]\nrelay = maildir:m\n",
	  ":3: [listener mx] greet_pause: 1000 is out of range" },
	/* words and booleans */
	{ BASE "log = file\n", ":6: [server] log: \"file\" is not one of stderr | syslog" },
	{ BASE "hostname = bad host\n", ":6: [server] hostname: \"bad host\" is not a host name" },
	{ BASE "resolver = dns.example\n", ":6: [server] resolver: \"dns.example\": write system" },
	{ BASE "metrics = 9125\n", ":6: [server] metrics: \"9125\" has no port" },
	{ BASE "local_domains = ex@mple.test\n", ":6: [server] local_domains: \"ex@mple.test\" is not a domain name" },
	{ "[listener mx]\nlisten = *:25\nrole = relay\n[backend]\nrelay = maildir:m\n",
	  ":3: [listener mx] role: \"relay\" is not one of mx | submission | submissions" },
	{ "[listener mx]\nlisten = *:25\ntls = ssl\n[backend]\nrelay = maildir:m\n",
	  ":3: [listener mx] tls: \"ssl\" is not one of none | starttls | implicit" },
	{ "[listener mx]\nlisten = *:25\nproxy_protocol = maybe\n[backend]\nrelay = maildir:m\n",
	  ":3: [listener mx] proxy_protocol: \"maybe\" is not a boolean" },
	{ "[listener mx]\nlisten = *:25\nbare_newline = allow\n[backend]\nrelay = maildir:m\n",
	  ":3: [listener mx] bare_newline: \"allow\" is not one of reject | normalize" },
	{ "[listener mx]\nlisten = *:25\nproxy_trusted = 10.0.0.0/33\n[backend]\nrelay = maildir:m\n",
	  ":3: [listener mx] proxy_trusted: \"10.0.0.0/33\" is not an address or network" },
	{ "[listener mx]\nlisten = *:25\nfilters = spf d/kim\n[backend]\nrelay = maildir:m\n",
	  ":3: [listener mx] filters: \"d/kim\" is not a filter name" },
	/* listen */
	{ "[listener mx]\nlisten = 127.0.0.1:0\n[backend]\nrelay = maildir:m\n",
	  ":2: [listener mx] listen: \"127.0.0.1:0\": the port must be a number from 1 to 65535" },
	{ "[listener mx]\nlisten = 127.0.0.1:65536\n[backend]\nrelay = maildir:m\n",
	  ":2: [listener mx] listen: \"127.0.0.1:65536\": the port must be" },
	{ "[listener mx]\nlisten = 127.0.0.1\n[backend]\nrelay = maildir:m\n",
	  ":2: [listener mx] listen: \"127.0.0.1\" has no port" },
	{ "[listener mx]\nlisten = mx.example.test:25\n[backend]\nrelay = maildir:m\n",
	  ":2: [listener mx] listen: \"mx.example.test:25\": the host must be an IP address" },
	{ "[listener mx]\nlisten = ::1:25\n[backend]\nrelay = maildir:m\n",
	  ":2: [listener mx] listen: \"::1:25\": write IPv6 addresses in brackets" },
	{ "[listener mx]\nlisten = [1.2.3.4]:25\n[backend]\nrelay = maildir:m\n",
	  ":2: [listener mx] listen: \"1.2.3.4\" is not an IPv6 address" },
	{ "[listener mx]\nlisten = [::1]25\n[backend]\nrelay = maildir:m\n",
	  ":2: [listener mx] listen: \"[::1]25\": write [IPV6]:PORT" },
	{ "[listener mx]\nlisten = 127.0.0.1:25 127.0.0.1:25\n[backend]\nrelay = maildir:m\n",
	  ":2: [listener mx] listen: \"127.0.0.1:25\" is listed twice" },
	{ "[listener mx]\nlisten =\n[backend]\nrelay = maildir:m\n",
	  ":2: [listener mx] listen: no address" },
	{ "[listener mx]\nrole = mx\n[backend]\nrelay = maildir:m\n",
	  ":1: [listener mx] listen: missing" },
	{ "[listener a]\nlisten = [::1]:25\n[listener b]\nlisten = [0:0::1]:25\n"
	  "[backend]\nrelay = maildir:m\n",
	  ":4: [listener b] listen: [0:0::1]:25 is also bound by [listener a] (line 1)" },
	{ "[listener a]\nlisten = 127.0.0.1:25\n[listener b]\nlisten = *:26 localhost:25\n"
	  "[backend]\nrelay = maildir:m\n",
	  ":4: [listener b] listen: localhost:25 is also bound by [listener a] (line 1)" },
	{ "[listener a]\nlisten = localhost:25 127.0.0.1:25\n[backend]\nrelay = maildir:m\n",
	  ":2: [listener a] listen: 127.0.0.1:25 is listed twice (written another way)" },
	{ "[listener a]\nlisten = LOCALHOST:25\n[backend]\nrelay = maildir:m\n",
	  ":2: [listener a] listen: \"LOCALHOST:25\": the host must be an IP address" },
	/* cross-section rules */
	{ "[backend]\nrelay = maildir:m\n", ":2: [listener] listen: no listener" },
	{ "[listener mx]\nlisten = *:25\n", ":2: [backend] relay: no [backend]" },
	{ "[listener mx]\nlisten = *:25\n[backend]\nrelay_tls = none\n",
	  ":3: [backend] relay: missing" },
	{ "[listener mx]\nlisten = *:25\n[backend]\nrelay = ftp:x\n",
	  ":4: [backend] relay: \"ftp:x\" is not a relay" },
	{ "[listener mx]\nlisten = *:25\n[backend]\nrelay = smtp:unix:/x\n",
	  ":4: [backend] relay: \"smtp:unix:/x\": unix sockets are for lmtp: only" },
	{ "[listener mx]\nlisten = *:25\n[backend]\nrelay = maildir:\n",
	  ":4: [backend] relay: maildir: needs a directory" },
	{ "[listener mx]\nlisten = *:25\n[backend]\nrelay = lmtp:/run/lmtp\n",
	  ":4: [backend] relay: \"lmtp:/run/lmtp\": a unix socket is written lmtp:unix:/run/lmtp" },
	{ "[listener mx]\nlisten = *:25\n[backend]\nrelay = lmtp:host\n",
	  ":4: [backend] relay: \"host\" has no port" },
	{ "[listener mx]\nlisten = *:25\n[backend]\nrelay = maildir:m\nbounce_relay = maildir:b\n",
	  ":5: [backend] bounce_relay: \"maildir:b\" is not a relay; write lmtp:unix:PATH, lmtp:HOST:PORT or smtp:HOST:PORT" },
	{ "[listener mx]\nlisten = *:25\n[backend]\nrelay = maildir:m\nlmtp_mixed = drop\n",
	  ":5: [backend] lmtp_mixed: \"drop\" is not one of dsn | tempfail" },
	{ "[listener mx]\nlisten = *:25\ntls = starttls\n[backend]\nrelay = maildir:m\n",
	  ":3: [tls] cert: missing; [listener mx] (line 1) uses TLS: add a [tls] section" },
	{ "[listener mx]\nlisten = *:25\ntls = starttls\n[backend]\nrelay = maildir:m\n",
	  ":3: [tls] key: missing" },
	{ "[listener mx]\nlisten = *:25\ntls = implicit\n[tls]\ncert = c\n[backend]\nrelay = maildir:m\n",
	  ":4: [tls] key: missing; [listener mx] (line 1) uses TLS: set key =" },
	{ "[listener mx]\nlisten = *:25\ntls = implicit\n[tls]\nkey = k\ncert =\n[backend]\nrelay = maildir:m\n",
	  ":6: [tls] cert: missing; [listener mx] (line 1) uses TLS: set cert =" },
	{ "[listener s]\nlisten = *:465\nrole = submissions\n[auth]\npasswd_file = p\n"
	  "[backend]\nrelay = maildir:m\n", ":1: [tls] cert: missing" },
	{ "[listener s]\nlisten = *:465\nrole = submissions\ntls = starttls\n[auth]\npasswd_file = p\n"
	  "[tls]\ncert = c\nkey = k\n[backend]\nrelay = maildir:m\n",
	  ":4: [listener s] tls: role submissions is SMTP over implicit TLS" },
	{ "[listener mx]\nlisten = *:25\ntls_required = yes\n[backend]\nrelay = maildir:m\n",
	  ":3: [listener mx] tls_required: needs tls = starttls" },
	{ "[listener s]\nlisten = *:587\nrole = submission\n[backend]\nrelay = maildir:m\n",
	  ":3: [listener s] role: submission requires AUTH" },
	{ BASE "[auth]\npasswd_file = p\ndovecot = unix:/run/auth\n",
	  ":8: [auth] dovecot: set either passwd_file or dovecot, not both" },
	{ BASE "[auth]\ndovecot = /run/auth\n", ":7: [auth] dovecot: \"/run/auth\": write unix:PATH, inet:HOST:PORT or HOST:PORT" },
	{ BASE "[redis]\nserver = unix:\n", ":7: [redis] server: unix: needs a socket path" },
	/* keys of features not built yet: only their defaults load */
	{ BASE "metrics = 127.0.0.1:9125\n", ":6: [server] metrics: not implemented yet" },
	{ "[listener mx]\nlisten = *:25\nproxy_protocol = yes\nproxy_trusted = 10.0.0.1\n"
	  "tls = implicit\n[tls]\ncert = c\nkey = k\n[backend]\nrelay = maildir:m\n",
	  ":3: [listener mx] proxy_protocol: not implemented yet" },
	/* PROXY protocol: a trusted list and the protocol go together */
	{ "[listener mx]\nlisten = *:25\nproxy_protocol = yes\n[backend]\nrelay = maildir:m\n",
	  ":3: [listener mx] proxy_protocol: needs proxy_trusted" },
	{ "[listener mx]\nlisten = *:25\nproxy_trusted = 10.0.0.0/8\n[backend]\nrelay = maildir:m\n",
	  ":3: [listener mx] proxy_trusted: does nothing without proxy_protocol = yes" },
	{ "[listener mx]\nlisten = *:25\nproxy_protocol = yes\nproxy_trusted = ::1\n"
	  "proxy_timeout = 301\n[backend]\nrelay = maildir:m\n",
	  ":5: [listener mx] proxy_timeout: " },
	{ BASE "[redis]\ntls = yes\n", ":7: [redis] tls: not implemented yet; Debian 12's hiredis 0.14 has no TLS" },
	{ BASE "[redis]\non_error = maybe\n", ":7: [redis] on_error: " },
	{ BASE "[redis]\ntimeout = 0\n", ":7: [redis] timeout: " },
	{ BASE "state_entries = 10\n", ":6: [server] state_entries: " },
	/* submission without TLS could never authenticate */
	{ "[listener s]\nlisten = *:587\nrole = submission\n[auth]\npasswd_file = p\n"
	  "[backend]\nrelay = maildir:m\n",
	  ":3: [listener s] tls: role submission offers AUTH only under TLS" },
	{ "[listener s]\nlisten = *:587\nrole = submission\ntls = none\n[auth]\npasswd_file = p\n"
	  "[backend]\nrelay = maildir:m\n",
	  ":4: [listener s] tls: role submission offers AUTH only under TLS" },
};

START_TEST(test_errors)
{
	struct buf err, want;
	struct conf *c;

	buf_init(&err);
	buf_init(&want);
	c = load_text(error_cases[_i].text, &err);
	ck_assert_msg(c == NULL, "case %d loaded: %s", _i, error_cases[_i].text);
	buf_printf(&want, "%s%s", tmp_path, error_cases[_i].want);
	ck_assert_msg(strstr(err.data, want.data) != NULL,
	    "case %d: want \"%s\" in:\n%s", _i, want.data, err.data);
	/* every error is one whole line starting with the file name */
	ck_assert(err.len > 0 && err.data[err.len - 1] == '\n');
	ck_assert(strncmp(err.data, tmp_path, strlen(tmp_path)) == 0);
	buf_free(&err);
	buf_free(&want);
}
END_TEST

/* All mistakes reported in one pass, not just the first, in line order. */
START_TEST(test_all_errors)
{
	static const char text[] =
	    "[server]\n"
	    "max_recipients = many\n"		/* 2 */
	    "bogus = 1\n"			/* 3 */
	    "[listener mx]\n"
	    "listen = 127.0.0.1:99999\n"	/* 5 */
	    "role = relay\n"			/* 6 */
	    "no equals sign here\n"		/* 7 */
	    "[weird]\n"				/* 8 */
	    "ignored = 1\n"
	    "[backend]\n"
	    "relay = ftp:x\n";			/* 11 */
	struct buf err;
	char *w, *at, *prev = NULL;
	static const char *const want[] = {
		":2: [server] max_recipients:", ":3: [server] bogus:",
		":5: [listener mx] listen:", ":6: [listener mx] role:",
		":7: [listener mx]: expected key = value", ":8: [weird]: unknown section",
		":11: [backend] relay:",
	};
	size_t i;

	buf_init(&err);
	ck_assert_ptr_null(load_text(text, &err));
	for (i = 0; i < ARRAY_SIZE(want); i++) {
		w = xasprintf("%s%s", tmp_path, want[i]);
		at = strstr(err.data, w);
		ck_assert_msg(at != NULL, "want \"%s\" in:\n%s", w, err.data);
		ck_assert_msg(prev == NULL || at > prev, "out of order:\n%s", err.data);
		prev = at;
		free(w);
	}
	ck_assert_uint_eq(count_lines(err.data), ARRAY_SIZE(want));
	buf_free(&err);
}
END_TEST

/* Keys of features not built yet load at their defaults, and a bad value is one error. */
START_TEST(test_not_yet)
{
	struct conf *c = load_ok("[listener mx]\nlisten = *:25\nproxy_protocol = no\n"
	    "proxy_trusted =\n[server]\nmetrics =\n[redis]\n[backend]\nrelay = maildir:m\n");
	struct buf err;

	ck_assert(!c->listeners[0].proxy_protocol);
	ck_assert_ptr_null(c->metrics);
	ck_assert_ptr_null(c->redis_server);
	conf_unref(c);

	buf_init(&err);
	ck_assert_ptr_null(load_text(BASE "metrics = 9125\n[redis]\nserver = unix:\n", &err));
	ck_assert_msg(count_lines(err.data) == 2, "%s", err.data);
	ck_assert_ptr_null(strstr(err.data, "not implemented"));
	buf_free(&err);

	/* submission over implicit TLS is fine: AUTH is offered from the start */
	c = load_ok("[listener s]\nlisten = *:587\nrole = submission\ntls = implicit\n"
	    "[tls]\ncert = c\nkey = k\n[auth]\npasswd_file = p\n[backend]\nrelay = maildir:m\n");
	ck_assert_int_eq(c->listeners[0].tls, TLS_IMPLICIT);
	conf_unref(c);
}
END_TEST

START_TEST(test_long_line)
{
	struct buf err, text;
	struct conf *c;
	char *w;
	int i;

	buf_init(&err);
	buf_init(&text);
	buf_puts(&text, BASE "local_domains =");
	for (i = 0; i < 40; i++)
		buf_printf(&text, " d%d.example.test", i);
	buf_puts(&text, "\n");
	c = load_text(text.data, &err);
	ck_assert_ptr_null(c);
	w = xasprintf("%s:6: line longer than", tmp_path);
	ck_assert_msg(strstr(err.data, w) != NULL, "%s", err.data);
	ck_assert_uint_eq(count_lines(err.data), 1);
	free(w);

	/* the same list split over continuation lines loads */
	buf_reset(&text);
	buf_puts(&text, BASE "local_domains =\n");
	for (i = 0; i < 40; i++)
		buf_printf(&text, "\td%d.example.test\n", i);
	c = load_ok(text.data);
	ck_assert_uint_eq(c->nlocal_domains, 40);
	ck_assert(conf_is_local_domain(c, "D39.example.test"));
	conf_unref(c);
	buf_free(&err);
	buf_free(&text);
}
END_TEST

/* A UTF-8 byte order mark and CRLF line ends, as some editors write them. */
START_TEST(test_bom_crlf)
{
	struct conf *c = load_ok("\xef\xbb\xbf[listener mx]\r\nlisten = 127.0.0.1:25\r\n"
	    "filters = a\r\n\tb ; comment\r\n[backend]\r\nrelay = maildir:m\r\n");

	ck_assert_str_eq(c->listeners[0].listen[0], "127.0.0.1:25");
	ck_assert_uint_eq(c->listeners[0].nfilters, 2);
	ck_assert_str_eq(c->listeners[0].filters[1], "b");
	ck_assert_str_eq(c->relay.path, "m");
	conf_unref(c);
}
END_TEST

START_TEST(test_missing_file)
{
	struct buf err;

	buf_init(&err);
	ck_assert_ptr_null(conf_load("/nonexistent/portier.conf", &err));
	ck_assert_ptr_nonnull(strstr(err.data, "/nonexistent/portier.conf: cannot open:"));
	buf_free(&err);
}
END_TEST

/* srcdir_path - a file of the source tree, also under make distcheck */
static char *
srcdir_path(const char *rel)
{
	const char *srcdir = getenv("srcdir");

	return xasprintf("%s/%s", srcdir != NULL ? srcdir : ".", rel);
}

START_TEST(test_shipped_default)
{
	char *path = srcdir_path("etc/portier.conf");
	struct buf err;
	struct conf *c;

	buf_init(&err);
	c = conf_load(path, &err);
	ck_assert_msg(c != NULL, "%s", err.data);
	ck_assert_str_eq(c->hostname, "localhost");
	ck_assert_str_eq(c->user, "nobody");
	ck_assert(conf_is_local_domain(c, "localhost"));
	ck_assert_uint_eq(c->nlisteners, 1);
	ck_assert_str_eq(c->listeners[0].listen[0], "127.0.0.1:2525");
	ck_assert_int_eq(c->listeners[0].role, ROLE_MX);
	ck_assert_int_eq(c->listeners[0].tls, TLS_NONE);
	ck_assert_int_eq(c->relay.kind, RELAY_MAILDIR);
	ck_assert_str_eq(c->relay.path, "./var/mail");
	conf_unref(c);
	buf_free(&err);
	free(path);
}
END_TEST

START_TEST(test_shipped_example)
{
	char *path = srcdir_path("etc/portier.conf.example");
	struct buf err;
	struct conf *c;

	buf_init(&err);
	c = conf_load(path, &err);
	ck_assert_msg(c != NULL, "%s", err.data);
	ck_assert_uint_eq(c->nlisteners, 3);
	ck_assert_int_eq(c->listeners[2].tls, TLS_IMPLICIT);
	ck_assert_uint_eq(c->listeners[1].limits.max_recipients, 500);
	ck_assert_uint_eq(c->nlocal_domains, 3);
	ck_assert_ptr_null(c->bounce_relay.spec);
	ck_assert_int_eq(c->relay.kind, RELAY_LMTP);
	ck_assert_ptr_nonnull(conf_section_find(c, "milter", "rspamd"));
	conf_unref(c);
	buf_free(&err);
	free(path);
}
END_TEST

/* ---- lifetime ---- */

START_TEST(test_refcount)
{
	struct conf *a = load_ok(BASE);

	ck_assert_int_eq(a->refcnt, 1);
	ck_assert_ptr_eq(conf_ref(a), a);	/* 2: held by a snapshot and a "session" */
	ck_assert_int_eq(a->refcnt, 2);
	conf_unref(a);				/* 1 */
	ck_assert_str_eq(a->relay.path, "/tmp/m");	/* still usable */
	ck_assert_ptr_null(conf_ref(NULL));
	conf_unref(NULL);
	conf_unref(a);				/* freed (ASan: no leak) */
}
END_TEST

/* conf_suite - every test case */
static Suite *
conf_suite(void)
{
	Suite *s = suite_create("conf");
	TCase *tc = tcase_create("conf");

	tcase_add_test(tc, test_full);
	tcase_add_test(tc, test_defaults);
	tcase_add_test(tc, test_inheritance_order);
	tcase_add_loop_test(tc, test_numbers, 0, (int)ARRAY_SIZE(number_cases));
	tcase_add_loop_test(tc, test_bools, 0, (int)ARRAY_SIZE(bool_cases));
	tcase_add_loop_test(tc, test_relays, 0, (int)ARRAY_SIZE(relay_cases));
	tcase_add_loop_test(tc, test_errors, 0, (int)ARRAY_SIZE(error_cases));
	tcase_add_test(tc, test_all_errors);
	tcase_add_test(tc, test_not_yet);
	tcase_add_test(tc, test_long_line);
	tcase_add_test(tc, test_bom_crlf);
	tcase_add_test(tc, test_missing_file);
	tcase_add_test(tc, test_shipped_default);
	tcase_add_test(tc, test_shipped_example);
	tcase_add_test(tc, test_refcount);
	suite_add_tcase(s, tc);
	return s;
}

UNIT_MAIN(conf_suite)
