/*
 * conf.c - load portier.conf (INI, parsed by inih) into an immutable,
 * refcounted struct conf, and hold the live snapshot of the daemon.  The
 * parsers of single values are in conf_value.c.
 *
 * Never exits the process and never stops at the first mistake: every error
 * becomes one line "FILE:LINE: [section] key: what to fix" in the caller's
 * buffer, and conf_load then returns NULL.  Never opens the files a config
 * names (certificates, sockets, Maildir): the modules that use them do, and
 * a config must be checkable (portier -t) on another machine.
 * conf_load returns a snapshot holding one reference owned by the caller;
 * the last conf_unref frees everything reachable from it.
 *
 * Line numbers: inih counts lines itself but hands its callback no line
 * number unless built with INI_HANDLER_LINENO, which Debian's libinih is
 * not.  So inih reads through conf_read_line, which hands it one physical
 * line at a time, counts them, and catches what inih would reject or
 * silently mangle (overlong lines, headers without ']', lines without '=')
 * so that each such line gets its own error.  The reader also tracks
 * section headers itself: inih never calls back for an empty section.
 */
#include "config.h"

#include <sys/types.h>
#include <arpa/inet.h>
#include <assert.h>
#include <errno.h>
#include <limits.h>
#include <netinet/in.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <ini.h>

#include "conf.h"
#include "conf_priv.h"
#include "util.h"

#define CONF_SKIP	((size_t)-1)	/* keys of a rejected section are dropped */

/* One error, kept until the end so that the list comes out in line order. */
struct conf_err {
	int line;
	size_t seq;
	char *text;		/* the whole line, with '\n' */
};

/* Parser state for one conf_load call. */
struct conf_load {
	struct conf *c;
	struct conf_err *errv;
	size_t nerrors;
	FILE *fp;
	char *line;		/* getline buffer */
	size_t linecap;
	int lineno;		/* physical line last handed to inih */
	size_t cur;		/* index of the current section, or CONF_SKIP */
	bool in_section;	/* a header has been read */
	bool have_key;		/* mirrors inih's prev_name: indented lines continue it */
	bool continuation;	/* the line just handed to inih continues the last key */
	bool drop_key;		/* the last key was rejected: drop its continuations */
};


enum conf_section_kind { CONF_NONAME, CONF_NAMED };

static const struct {
	const char *type;
	enum conf_section_kind kind;
} conf_section_types[] = {
	{ "server", CONF_NONAME },
	{ "listener", CONF_NAMED },
	{ "tls", CONF_NONAME },
	{ "backend", CONF_NONAME },
	{ "redis", CONF_NONAME },
	{ "auth", CONF_NONAME },
	{ "milter", CONF_NAMED },
	{ "filter", CONF_NAMED },
	{ "policy", CONF_NAMED },
	{ "policyd", CONF_NAMED },
	{ "dnsbl", CONF_NAMED },
	{ "ratelimit", CONF_NAMED },
	{ "milter-server", CONF_NONAME },
};

static void conf_error(struct conf_load *ld, int line, const char *type, const char *name,
    const char *key, const char *fmt, ...) PRINTF_LIKE(6, 7);
static void conf_free(struct conf *c);

/* conf_default_limits - the RFC 5321 defaults */
void
conf_default_limits(struct conf_limits *l)
{
	memset(l, 0, sizeof(*l));
	l->max_command_line = 512;
	l->max_text_line = 1000;
	l->max_message_size = 52428800;
	l->max_header_size = 1048576;
	l->max_recipients = 100;
	l->max_errors = 10;
	l->max_pipelined = 200;
	l->command_timeout = 300;
	l->data_timeout = 180;
	l->max_sessions = 5000;
	l->spool_memory = 1048576;
	l->max_output = 262144;
}

/* ---- errors ---- */

/* conf_error - append one "FILE:LINE: [type name] key: message" line */
static void
conf_error(struct conf_load *ld, int line, const char *type, const char *name,
    const char *key, const char *fmt, ...)
{
	struct conf_err *e;
	struct buf b;
	va_list ap;
	char *msg;
	int n;

	va_start(ap, fmt);
	n = vsnprintf(NULL, 0, fmt, ap);
	va_end(ap);
	if (n < 0)
		fatal("conf_error: bad format");
	msg = xmalloc((size_t)n + 1);
	va_start(ap, fmt);
	vsnprintf(msg, (size_t)n + 1, fmt, ap);
	va_end(ap);

	buf_init(&b);
	buf_printf(&b, "%s:%d:", ld->c->path, line);
	if (type != NULL)
		buf_printf(&b, " [%s%s%s]", type,
		    name != NULL && *name != '\0' ? " " : "", name != NULL ? name : "");
	if (key != NULL)
		buf_printf(&b, " %s", key);
	buf_printf(&b, "%s %s\n", type != NULL || key != NULL ? ":" : "", msg);
	free(msg);
	ld->errv = xreallocarray(ld->errv, ld->nerrors + 1, sizeof(*ld->errv));
	e = &ld->errv[ld->nerrors];
	e->line = line;
	e->seq = ld->nerrors++;
	e->text = b.data;
}

/* conf_err_cmp - qsort order: by line, then as found */
static int
conf_err_cmp(const void *a, const void *b)
{
	const struct conf_err *x = a, *y = b;

	if (x->line != y->line)
		return x->line < y->line ? -1 : 1;
	return x->seq < y->seq ? -1 : x->seq > y->seq;
}

/* conf_errors_flush - append the errors, in line order, to the caller's buffer */
static void
conf_errors_flush(struct conf_load *ld, struct buf *errors)
{
	size_t i;

	qsort(ld->errv, ld->nerrors, sizeof(*ld->errv), conf_err_cmp);
	for (i = 0; i < ld->nerrors; i++) {
		buf_puts(errors, ld->errv[i].text);
		free(ld->errv[i].text);
	}
	free(ld->errv);
}

/* conf_error_at_line - whether some error already names this line */
static bool
conf_error_at_line(struct conf_load *ld, int line)
{
	size_t i;

	for (i = 0; i < ld->nerrors; i++)
		if (ld->errv[i].line == line)
			return true;
	return false;
}

/* ---- key tables ---- */

static const char *const conf_role_words[] = {
	[ROLE_MX] = "mx", [ROLE_SUBMISSION] = "submission",
	[ROLE_SUBMISSIONS] = "submissions", NULL
};
/*
 * The safety filter each role implies at the head of its chain (policy/):
 * server.c puts it first, conf_check_role_filter refuses it on the wrong role.
 */
static const char *const conf_role_filters[] = {
	[ROLE_MX] = "port25", [ROLE_SUBMISSION] = "auth-enforce",
	[ROLE_SUBMISSIONS] = "auth-enforce",
};
static const char *const conf_tls_words[] = {
	[TLS_NONE] = "none", [TLS_STARTTLS] = "starttls", [TLS_IMPLICIT] = "implicit", NULL
};
static const char *const conf_bare_words[] = {
	[BARE_NEWLINE_REJECT] = "reject", [BARE_NEWLINE_NORMALIZE] = "normalize", NULL
};
static const char *const conf_relay_tls_words[] = {
	[RELAY_TLS_NONE] = "none", [RELAY_TLS_OPPORTUNISTIC] = "opportunistic",
	[RELAY_TLS_REQUIRED] = "required", NULL
};
static const char *const conf_lmtp_mixed_words[] = {
	[LMTP_MIXED_DSN] = "dsn", [LMTP_MIXED_TEMPFAIL] = "tempfail", NULL
};
static const char *const conf_log_words[] = { "stderr", "syslog", NULL };
static const char *const conf_tls_protocol_words[] = { "TLSv1.2", "TLSv1.3", NULL };

#define KL(n, fn, lo, hi, hint) \
	{ #n, fn, offsetof(struct conf_limits, n), lo, hi, NULL, hint }
#define KC(n, f, fn, lo, hi, words) \
	{ n, fn, offsetof(struct conf, f), lo, hi, words, NULL }
#define KLS(n, f, fn, lo, hi, words) \
	{ n, fn, offsetof(struct conf_listener, f), lo, hi, words, NULL }

/* Limits: in [server], and overridable per [listener]. */
static const struct conf_key conf_limit_keys[] = {
	KL(max_message_size, conf_set_size, 1, SIZE_MAX, NULL),
	KL(max_header_size, conf_set_size, 1024, 1073741824, NULL),
	KL(max_recipients, conf_set_uint, 1, UINT_MAX, NULL),
	KL(max_errors, conf_set_uint, 1, UINT_MAX, NULL),
	KL(max_pipelined, conf_set_uint, 1, UINT_MAX, NULL),
	KL(max_command_line, conf_set_size, 512, 1048576,
	    "(RFC 5321 4.5.3.1.4 requires at least 512)"),
	KL(max_text_line, conf_set_size, 1000, 1048576,
	    "(RFC 5321 4.5.3.1.6 requires at least 1000)"),
	KL(command_timeout, conf_set_uint, 1, 86400, NULL),
	KL(data_timeout, conf_set_uint, 1, 86400, NULL),
	KL(max_sessions, conf_set_uint, 1, UINT_MAX, NULL),
	KL(spool_memory, conf_set_size, 0, SIZE_MAX, NULL),
	KL(max_output, conf_set_size, 4096, SIZE_MAX, NULL),
	{ NULL, NULL, 0, 0, 0, NULL, NULL }
};

static const struct conf_key conf_server_keys[] = {
	KC("hostname", hostname, conf_set_hostname, 0, 0, NULL),
	KC("user", user, conf_set_optstr, 0, 0, NULL),
	KC("workers", workers, conf_set_uint, 0, 1024, NULL),
	KC("filter_threads", filter_threads, conf_set_uint, 1, 1024, NULL),
	KC("auth_threads", auth_threads, conf_set_uint, 1, 1024, NULL),
	KC("delivery_threads", delivery_threads, conf_set_uint, 1, 1024, NULL),
	KC("pool_queue", pool_queue, conf_set_uint, 1, 1000000, NULL),
	KC("resolver", resolver, conf_set_resolver, 0, 0, NULL),
	KC("resolver_timeout", resolver_timeout, conf_set_uint, 1, 300, NULL),
	KC("resolver_trust_anchor", resolver_trust_anchor, conf_set_readable, 0, 0, NULL),
	KC("log", log, conf_set_word, 0, 0, conf_log_words),
	KC("metrics", metrics, conf_set_metrics, 0, 0, NULL),
	{ "local_domains", conf_set_domains, 0, 0, 0, NULL, NULL },	/* whole conf */
	KC("drain_timeout", drain_timeout, conf_set_uint, 0, 86400, NULL),
	KC("state_entries", state_entries, conf_set_uint, 1000, 100000000, NULL),
	KC("io_uring", io_uring, conf_set_bool, 0, 0, NULL),
	{ NULL, NULL, 0, 0, 0, NULL, NULL }
};

/* Setters of whole-listener values get the listener itself (offset 0). */
static const struct conf_key conf_listener_keys[] = {
	{ "listen", conf_set_listen, 0, 0, 0, NULL, NULL },
	KLS("role", role, conf_set_enum, 0, 0, conf_role_words),
	KLS("tls", tls, conf_set_enum, 0, 0, conf_tls_words),
	KLS("tls_required", tls_required, conf_set_bool, 0, 0, NULL),
	KLS("proxy_protocol", proxy_protocol, conf_set_bool, 0, 0, NULL),
	{ "proxy_trusted", conf_set_cidrs, 0, 0, 0, NULL, NULL },
	KLS("proxy_timeout", proxy_timeout, conf_set_uint, 1, 300, NULL),
	KLS("greet_pause", greet_pause, conf_set_uint, 0, 300, NULL),
	KLS("greet_pause_exempt", greet_pause_exempt, conf_set_nets, 0, 0, NULL),
	KLS("client_limit", client_limit, conf_set_uint, 0, 1000000, NULL),
	KLS("network_limit", network_limit, conf_set_uint, 0, 1000000, NULL),
	KLS("network_prefix4", network_prefix4, conf_set_uint, 8, 32, NULL),
	KLS("network_prefix6", network_prefix6, conf_set_uint, 16, 128, NULL),
	KLS("limit_exempt", limit_exempt, conf_set_nets, 0, 0, NULL),
	KLS("reverse_lookup", reverse_lookup, conf_set_bool, 0, 0, NULL),
	{ "filters", conf_set_filters, 0, 0, 0, NULL, NULL },
	KLS("bare_newline", bare_newline, conf_set_enum, 0, 0, conf_bare_words),
	{ NULL, NULL, 0, 0, 0, NULL, NULL }
};

static const struct conf_key conf_tls_keys[] = {
	KC("cert", tls_cert, conf_set_optstr, 0, 0, NULL),
	KC("key", tls_key, conf_set_optstr, 0, 0, NULL),
	KC("min_protocol", tls_min_protocol, conf_set_word, 0, 0, conf_tls_protocol_words),
	KC("ciphers", tls_ciphers, conf_set_optstr, 0, 0, NULL),
	KC("ciphersuites", tls_ciphersuites, conf_set_optstr, 0, 0, NULL),
	KC("handshake_timeout", tls_handshake_timeout, conf_set_uint, 1, 3600, NULL),
	{ NULL, NULL, 0, 0, 0, NULL, NULL }
};

static const struct conf_key conf_backend_keys[] = {
	KC("relay", relay, conf_set_relay, 0, 0, NULL),
	KC("relay_tls", relay_tls, conf_set_enum, 0, 0, conf_relay_tls_words),
	KC("relay_tls_ca", relay_tls_ca, conf_set_optstr, 0, 0, NULL),
	KC("relay_tls_verify", relay_tls_verify, conf_set_bool, 0, 0, NULL),
	KC("relay_tls_name", relay_tls_name, conf_set_optstr, 0, 0, NULL),
	KC("bounce_relay", bounce_relay, conf_set_bounce, 0, 0, NULL),
	KC("lmtp_mixed", lmtp_mixed, conf_set_enum, 0, 0, conf_lmtp_mixed_words),
	KC("relay_timeout", relay_timeout, conf_set_uint, 1, 3600, NULL),
	KC("relay_connect_timeout", relay_connect_timeout, conf_set_uint, 1, 3600, NULL),
	KC("relay_pool", relay_pool, conf_set_uint, 0, 1024, NULL),
	KC("relay_xforward", relay_xforward, conf_set_bool, 0, 0, NULL),
	{ NULL, NULL, 0, 0, 0, NULL, NULL }
};

static const char *const conf_redis_error_words[] = { "open", "closed", NULL };

static const struct conf_key conf_redis_keys[] = {
	KC("server", redis_server, conf_set_endpoint, 0, 0, NULL),
	KC("user", redis_user, conf_set_optstr, 0, 0, NULL),
	KC("password", redis_password, conf_set_optstr, 0, 0, NULL),
	KC("database", redis_database, conf_set_uint, 0, 1000000, NULL),
	KC("prefix", redis_prefix, conf_set_optstr, 0, 0, NULL),
	KC("timeout", redis_timeout, conf_set_uint, 1, 3600, NULL),
	KC("on_error", redis_on_error, conf_set_word, 0, 0, conf_redis_error_words),
	KC("tls", redis_tls, conf_set_bool, 0, 0, NULL),
	{ NULL, NULL, 0, 0, 0, NULL, NULL }
};

/*
 * [milter-server] (portier-milter): its socket in the forms an MTA's
 * smtpd_milters = names it, turned into libmilter's
 */
static bool
conf_set_milter_listen(void *field, const struct conf_key *k, const char *value, char **why_r)
{
	struct conf_milter_server *ms = field;
	char *host = NULL, *port = NULL, *spec;
	bool v6 = strncmp(value, "inet6:", 6) == 0;

	if (strncmp(value, "unix:", 5) == 0) {
		if (value[5] != '/') {
			*why_r = xasprintf("\"%s\": unix: needs an absolute path", value);
			return false;
		}
		spec = xstrdup(value);
	} else if (strncmp(value, "inet:", 5) == 0 || v6) {
		if (!conf_parse_hostport(value + (v6 ? 6 : 5), CONF_HOST_BIND, &host, &port, why_r))
			return false;
		if (v6 != (strchr(host, ':') != NULL)) {
			*why_r = xasprintf("\"%s\": write inet:IPV4:PORT or inet6:[IPV6]:PORT", value);
			free(host);
			free(port);
			return false;
		}
		spec = strcmp(host, "*") == 0 ? xasprintf("inet:%s", port) :
		    xasprintf("%s:%s@%s", v6 ? "inet6" : "inet", port, host);
		free(host);
		free(port);
	} else {
		*why_r = xasprintf("\"%s\": write inet:HOST:PORT, inet6:[ADDR]:PORT or "
		    "unix:/PATH", value);
		return false;
	}
	free(ms->socket);
	ms->socket = spec;
	conf_strv_free(ms->l.listen, ms->l.nlisten);
	ms->l.listen = NULL;
	ms->l.nlisten = 0;
	conf_strv_push(&ms->l.listen, &ms->l.nlisten, xstrdup(value));
	return true;
}

/* conf_set_mode - file permissions in octal, 0 to 0777 */
static bool
conf_set_mode(void *field, const struct conf_key *k, const char *value, char **why_r)
{
	unsigned long n;
	char *end;

	errno = 0;
	n = strtoul(value, &end, 8);
	if (*value < '0' || *value > '7' || *end != '\0' || errno != 0 || n > 0777) {
		*why_r = xasprintf("\"%s\" is not a mode; write octal digits, e.g. 0660", value);
		return false;
	}
	*(unsigned *)field = (unsigned)n;
	return true;
}

#define KMS(n, f, fn, lo, hi, words) \
	{ n, fn, offsetof(struct conf_milter_server, f), lo, hi, words, NULL }
static const char *const conf_milter_role_words[] = {
	[ROLE_MX] = "mx", [ROLE_SUBMISSION] = "submission", NULL
};
/* Setters of listener values get the listener (l, offset 0), listen the whole section. */
static const struct conf_key conf_milter_server_keys[] = {
	{ "listen", conf_set_milter_listen, 0, 0, 0, NULL, NULL },
	KMS("role", l.role, conf_set_enum, 0, 0, conf_milter_role_words),
	KMS("filters", l, conf_set_filters, 0, 0, NULL),
	KMS("socket_mode", socket_mode, conf_set_mode, 0, 0, NULL),
	{ NULL, NULL, 0, 0, 0, NULL, NULL }
};

static const struct conf_key conf_auth_keys[] = {
	KC("passwd_file", auth_passwd_file, conf_set_optstr, 0, 0, NULL),
	KC("dovecot", auth_dovecot, conf_set_endpoint, 0, 0, NULL),
	KC("sender_login_map", auth_sender_login_map, conf_set_optstr, 0, 0, NULL),
	KC("max_failures", auth_max_failures, conf_set_uint, 1, 1000000, NULL),
	KC("failure_window", auth_failure_window, conf_set_uint, 1, 86400, NULL),
	{ NULL, NULL, 0, 0, 0, NULL, NULL }
};

/* ---- reading: inih and its line reader ---- */

/* conf_find_comment - inih's find_chars_or_comment: first of chars, or " ;" */
static const char *
conf_find_comment(const char *s, const char *chars)
{
	bool was_space = false;

	while (*s != '\0' && (chars == NULL || strchr(chars, *s) == NULL) &&
	    !(was_space && *s == ';')) {
		was_space = conf_is_space((unsigned char)*s);
		s++;
	}
	return s;
}

/* conf_section_type - index in conf_section_types, -1 if unknown */
static int
conf_section_type(const char *type)
{
	size_t i;

	for (i = 0; i < ARRAY_SIZE(conf_section_types); i++)
		if (strcmp(type, conf_section_types[i].type) == 0)
			return (int)i;
	return -1;
}

/* conf_header_words - split "[type name]" into type_r and name_r; false if > 2 words */
static bool
conf_header_words(const char *s, size_t len, char **type_r, char **name_r)
{
	char *copy = xstrndup(s, len), **v;
	struct buf rest;
	size_t n, i;

	conf_split(copy, &v, &n);
	free(copy);
	buf_init(&rest);
	buf_puts(&rest, "");
	for (i = 1; i < n; i++)	/* all of it, so that an error shows the header */
		buf_printf(&rest, "%s%s", i > 1 ? " " : "", v[i]);
	*type_r = n > 0 ? xstrdup(v[0]) : xstrdup("");
	*name_r = rest.data;
	conf_strv_free(v, n);
	return n <= 2;
}

/* conf_header_check - why the header [type name] is refused, or NULL if it is fine */
static char *
conf_header_check(struct conf_load *ld, const char *type, const char *name, bool two)
{
	const struct conf_section *prev;
	int t;

	if (*type == '\0')
		return xstrdup("empty section header");
	if (!two)
		return xstrdup("a header is [type] or [type name]");
	if ((t = conf_section_type(type)) < 0)
		return xstrdup("unknown section; use server, listener NAME, tls, "
		    "backend, redis, auth, milter NAME, filter NAME, policy NAME, "
		    "policyd NAME, dnsbl NAME, ratelimit NAME or milter-server");
	if (conf_section_types[t].kind == CONF_NONAME && *name != '\0')
		return xasprintf("[%s] takes no name; write [%s]", type, type);
	if (conf_section_types[t].kind == CONF_NAMED && *name == '\0')
		return xasprintf("[%s] needs a name, e.g. [%s %s]", type, type,
		    strcmp(type, "listener") == 0 ? "mx" : "example");
	if (*name != '\0' && !conf_name_ok(name, "-_."))
		return xasprintf("\"%s\" is not a name (up to %d letters, digits, "
		    "'-', '_', '.')", name, CONF_NAME_MAX);
	if ((prev = conf_section_find(ld->c, type, name)) != NULL)
		return xasprintf("duplicate section (first at line %d); merge them",
		    prev->line);
	return NULL;
}

/*
 * conf_header - a line starting with '['.  Returns whether inih may see the
 * line (it has a ']'); keys under a refused header are dropped.
 */
static bool
conf_header(struct conf_load *ld, const char *s)
{
	const char *end, *after;
	struct conf_section *sec;
	char *type, *name, *why;
	bool two;

	ld->in_section = true;
	ld->cur = CONF_SKIP;
	end = conf_find_comment(s + 1, "]");
	if (*end != ']') {
		conf_error(ld, ld->lineno, NULL, NULL, NULL,
		    "section header has no closing ']'");
		return false;
	}
	ld->have_key = false;
	two = conf_header_words(s + 1, (size_t)(end - s - 1), &type, &name);
	for (after = end + 1; conf_is_space((unsigned char)*after); after++)
		;
	if (*after != '\0' && *after != ';' && *after != '#')
		why = xstrdup("text after ']'; put comments on their own line or after ';'");
	else
		why = conf_header_check(ld, type, name, two);
	if (why != NULL) {
		conf_error(ld, ld->lineno, type, name, NULL, "%s", why);
		free(why);
		free(type);
		free(name);
		return true;
	}
	ld->c->sections = xreallocarray(ld->c->sections, ld->c->nsections + 1,
	    sizeof(*ld->c->sections));
	sec = &ld->c->sections[ld->c->nsections];
	memset(sec, 0, sizeof(*sec));
	sec->type = type;
	sec->name = name;
	sec->line = ld->lineno;
	ld->cur = ld->c->nsections++;
	return true;
}

/* conf_section_label - type and name of the current section, for line errors */
static void
conf_section_label(struct conf_load *ld, const char **type_r, const char **name_r)
{
	*type_r = *name_r = NULL;
	if (ld->cur != CONF_SKIP) {
		*type_r = ld->c->sections[ld->cur].type;
		*name_r = ld->c->sections[ld->cur].name;
	}
}

/* conf_classify - check a line the way inih will read it; false: hand inih a blank line */
static bool
conf_classify(struct conf_load *ld, const char *line, const char *s)
{
	const char *end, *k, *type, *name;

	while (conf_is_space((unsigned char)*s))
		s++;
	if (*s == '\0' || *s == ';' || *s == '#')
		return true;
	if (s > line && ld->have_key) {
		ld->continuation = true;
		return true;
	}
	if (*s == '[')
		return conf_header(ld, s);
	conf_section_label(ld, &type, &name);
	end = conf_find_comment(s, "=:");
	if (*end != '=' && *end != ':') {
		conf_error(ld, ld->lineno, type, name, NULL,
		    "expected key = value, or a [section] header");
		return false;
	}
	for (k = s; k < end && !conf_is_space((unsigned char)*k); k++)
		;
	if (k == s) {
		conf_error(ld, ld->lineno, type, name, NULL, "missing key before '%c'", *end);
		return false;
	}
	while (k < end && conf_is_space((unsigned char)*k))
		k++;
	if (k != end) {
		conf_error(ld, ld->lineno, type, name, NULL,
		    "expected key = value: a key is one word (is the '=' missing?)");
		return false;
	}
	if (!ld->in_section) {
		conf_error(ld, ld->lineno, NULL, NULL, NULL,
		    "key outside any section; put it under a header such as [server]");
		return false;
	}
	ld->have_key = true;
	return true;
}

/* conf_read_line - inih's reader: one physical line per call, counted and pre-checked */
static char *
conf_read_line(char *str, int num, void *arg)
{
	struct conf_load *ld = arg;
	const char *start;
	ssize_t n;

	assert(num >= 3);
	errno = 0;
	if ((n = getline(&ld->line, &ld->linecap, ld->fp)) < 0) {
		if (ferror(ld->fp))
			conf_error(ld, ld->lineno + 1, NULL, NULL, NULL, "read error: %s",
			    strerror(errno));
		return NULL;
	}
	ld->lineno++;
	ld->continuation = false;
	while (n > 0 && (ld->line[n - 1] == '\n' || ld->line[n - 1] == '\r'))
		ld->line[--n] = '\0';
	start = ld->line;
	if (ld->lineno == 1 && strncmp(start, "\xef\xbb\xbf", 3) == 0)
		start += 3;	/* a UTF-8 BOM: dropped */
	if (strlen(ld->line) != (size_t)n) {
		conf_error(ld, ld->lineno, NULL, NULL, NULL, "NUL byte in the line");
		goto blank;
	}
	if ((size_t)n + 2 > (size_t)num) {
		conf_error(ld, ld->lineno, NULL, NULL, NULL, "line longer than %d characters; "
		    "continue a long value on lines that begin with white space", num - 2);
		goto blank;
	}
	if (!conf_classify(ld, ld->line, start))
		goto blank;
	n -= start - ld->line;	/* inih need not know about the BOM */
	memcpy(str, start, (size_t)n);
	str[n] = '\n';
	str[n + 1] = '\0';
	return str;
blank:
	ld->continuation = false;
	str[0] = '\n';
	str[1] = '\0';
	return str;
}

/* conf_handle - inih's callback: record key = value in the current raw section */
static int
conf_handle(void *arg, const char *section, const char *name, const char *value)
{
	struct conf_load *ld = arg;
	struct conf_section *s;
	struct conf_kv *kv;
	char *joined;
	size_t i, len;

	if (ld->cur == CONF_SKIP)
		return 1;
	s = &ld->c->sections[ld->cur];
	if (ld->continuation) {
		if (ld->drop_key || s->nkv == 0)
			return 1;
		kv = &s->kv[s->nkv - 1];
		/* inih r55 leaves inline comments on continuation lines */
		len = (size_t)(conf_find_comment(value, NULL) - value);
		while (len > 0 && conf_is_space((unsigned char)value[len - 1]))
			len--;
		joined = xasprintf("%s%s%.*s", kv->value, *kv->value != '\0' ? " " : "",
		    (int)len, value);
		free(kv->value);
		kv->value = joined;
		return 1;
	}
	for (i = 0; i < s->nkv; i++) {
		if (strcmp(s->kv[i].key, name) == 0) {
			conf_error(ld, ld->lineno, s->type, s->name, name,
			    "duplicate key (first set at line %d); keep one", s->kv[i].line);
			ld->drop_key = true;
			return 1;
		}
	}
	ld->drop_key = false;
	s->kv = xreallocarray(s->kv, s->nkv + 1, sizeof(*s->kv));
	kv = &s->kv[s->nkv++];
	kv->key = xstrdup(name);
	kv->value = xstrdup(value);
	kv->line = ld->lineno;
	return 1;
}

/* ---- validation: raw sections into struct conf ---- */

/* conf_lookup_key - the table entry for key, or NULL */
static const struct conf_key *
conf_lookup_key(const struct conf_key *table, const char *key)
{
	for (; table->name != NULL; table++)
		if (strcmp(table->name, key) == 0)
			return table;
	return NULL;
}

/* conf_distance - edit distance of two short words, capped at 9 */
static unsigned
conf_distance(const char *a, const char *b)
{
	unsigned row[CONF_NAME_MAX + 1], diag, up, i, j;
	size_t la = strlen(a), lb = strlen(b);

	if (la > CONF_NAME_MAX || lb > CONF_NAME_MAX)
		return 9;
	for (j = 0; j <= lb; j++)
		row[j] = j;
	for (i = 1; i <= la; i++) {
		diag = row[0];
		row[0] = i;
		for (j = 1; j <= lb; j++) {
			up = row[j];
			row[j] = diag + (a[i - 1] != b[j - 1]);
			if (up + 1 < row[j])
				row[j] = up + 1;
			if (row[j - 1] + 1 < row[j])
				row[j] = row[j - 1] + 1;
			diag = up;
		}
	}
	return row[lb] < 9 ? row[lb] : 9;
}

/* conf_suggest - the known key closest to a misspelt one, or NULL */
static const char *
conf_suggest(const struct conf_key *table, bool limits, const char *key)
{
	const struct conf_key *tables[2] = { table, limits ? conf_limit_keys : NULL };
	const struct conf_key *k;
	const char *best = NULL;
	unsigned d, bestd = 3;	/* at most two edits */
	size_t t;

	for (t = 0; t < 2 && tables[t] != NULL; t++) {
		for (k = tables[t]; k->name != NULL; k++) {
			if ((d = conf_distance(key, k->name)) < bestd) {
				bestd = d;
				best = k->name;
			}
		}
	}
	return best;
}

/* conf_apply_kv - set one key through the first table that knows it */
static void
conf_apply_kv(struct conf_load *ld, const struct conf_section *s, const struct conf_kv *kv,
    void *obj, const struct conf_key *table, void *limits_obj)
{
	const struct conf_key *k;
	const char *hint;
	char *why = NULL;

	if ((k = conf_lookup_key(table, kv->key)) == NULL && limits_obj != NULL &&
	    (k = conf_lookup_key(conf_limit_keys, kv->key)) != NULL)
		obj = limits_obj;
	if (k == NULL) {
		if ((hint = conf_suggest(table, limits_obj != NULL, kv->key)) != NULL)
			conf_error(ld, kv->line, s->type, s->name, kv->key,
			    "unknown key; did you mean %s?", hint);
		else
			conf_error(ld, kv->line, s->type, s->name, kv->key,
			    "unknown key; see portier.conf(5) for the keys of [%s]", s->type);
		return;
	}
	if (!k->set((char *)obj + k->off, k, kv->value, &why)) {
		conf_error(ld, kv->line, s->type, s->name, kv->key, "%s", why);
		free(why);
	}
}

/* conf_apply_section - apply every key of s */
static void
conf_apply_section(struct conf_load *ld, const struct conf_section *s, void *obj,
    const struct conf_key *table, void *limits_obj)
{
	size_t i;

	for (i = 0; i < s->nkv; i++)
		conf_apply_kv(ld, s, &s->kv[i], obj, table, limits_obj);
}

/* conf_kv_line - line of key in s, or the section's line if the key is absent */
static int
conf_kv_line(const struct conf_section *s, const char *key)
{
	size_t i;

	for (i = 0; i < s->nkv; i++)
		if (strcmp(s->kv[i].key, key) == 0)
			return s->kv[i].line;
	return s->line;
}

/* conf_add_listener - a listener from its section, inheriting the [server] limits */
static void
conf_add_listener(struct conf_load *ld, const struct conf_section *s)
{
	struct conf *c = ld->c;
	struct conf_listener *l;

	c->listeners = xreallocarray(c->listeners, c->nlisteners + 1, sizeof(*c->listeners));
	l = &c->listeners[c->nlisteners++];
	memset(l, 0, sizeof(*l));
	l->name = xstrdup(s->name);
	l->line = s->line;
	l->role = ROLE_MX;
	l->tls = TLS_NONE;
	l->bare_newline = BARE_NEWLINE_REJECT;
	l->reverse_lookup = true;
	l->proxy_timeout = 10;
	l->network_prefix4 = 24;
	l->network_prefix6 = 64;
	l->limits = c->limits;
	conf_apply_section(ld, s, l, conf_listener_keys, &l->limits);
	/* submissions is implicit TLS by definition */
	if (l->role == ROLE_SUBMISSIONS && conf_section_get(s, "tls") == NULL)
		l->tls = TLS_IMPLICIT;
}

/*
 * conf_add_milter_server - [milter-server]: a listener's role and filters
 * and the [server] limits, served through libmilter (portier-milter)
 */
static void
conf_add_milter_server(struct conf_load *ld, const struct conf_section *s)
{
	struct conf *c = ld->c;
	struct conf_milter_server *ms;

	ms = c->milter_server = xcalloc(1, sizeof(*ms));
	ms->l.name = xstrdup("milter-server");
	ms->l.line = s->line;
	ms->l.role = ROLE_MX;
	ms->l.limits = c->limits;
	ms->socket_mode = 0660;
	conf_apply_section(ld, s, ms, conf_milter_server_keys, NULL);
}

/* conf_role_filter - the safety filter role implies: "port25" or "auth-enforce" */
const char *
conf_role_filter(enum conf_role role)
{
	assert((size_t)role < sizeof(conf_role_filters) / sizeof(conf_role_filters[0]));
	return conf_role_filters[role];
}

/* conf_safety_role - the role whose safety filter is type (n octets of it), or -1 */
static int
conf_safety_role(const char *type, size_t n)
{
	size_t r;

	for (r = 0; r < sizeof(conf_role_filters) / sizeof(conf_role_filters[0]); r++)
		if (strlen(conf_role_filters[r]) == n && strncmp(conf_role_filters[r], type, n) == 0)
			return (int)r;
	return -1;
}

/*
 * conf_check_role_filter - one "filters =" word against the listener's role.
 * The role's own safety filter may be listed (it still runs first, once);
 * another role's, an instance of one ("port25:x") or a removal ("-port25")
 * is an error: nothing may leave a listener without its role's filter.
 */
static void
conf_check_role_filter(struct conf_load *ld, const struct conf_listener *l,
    const struct conf_section *s, const char *word)
{
	const char *own = conf_role_filter(l->role), *type = word[0] == '-' ? word + 1 : word;
	size_t n = strcspn(type, ":");
	int r = conf_safety_role(type, n);

	if (r < 0)
		return;
	if (word[0] == '-')
		conf_error(ld, conf_kv_line(s, "filters"), s->type, s->name, "filters",
		    "\"%s\": a role's safety filter cannot be removed; role %s always runs %s "
		    "first", word, conf_role_words[l->role], own);
	else if (type[n] == ':')
		conf_error(ld, conf_kv_line(s, "filters"), s->type, s->name, "filters",
		    "\"%s\": %.*s takes no instance name; role %s runs it by itself", word,
		    (int)n, type, conf_role_words[r]);
	else if (strcmp(word, own) != 0)
		conf_error(ld, conf_kv_line(s, "filters"), s->type, s->name, "filters",
		    "\"%s\" is the safety filter of role %s; this listener has role %s, which "
		    "runs %s first", word, conf_role_words[r], conf_role_words[l->role], own);
}

/* conf_check_listener - what one listener's keys mean together */
static void
conf_check_listener(struct conf_load *ld, const struct conf_listener *l,
    const struct conf_section *s)
{
	const struct conf *c = ld->c;
	size_t i;

	if (conf_section_get(s, "listen") == NULL)
		conf_error(ld, s->line, s->type, s->name, "listen",
		    "missing; add listen = HOST:PORT, e.g. 0.0.0.0:25");
	if (l->role == ROLE_SUBMISSIONS && l->tls != TLS_IMPLICIT)
		conf_error(ld, conf_kv_line(s, "tls"), s->type, s->name, "tls",
		    "role submissions is SMTP over implicit TLS; set tls = implicit "
		    "or remove the tls line");
	if (l->tls_required && l->tls == TLS_NONE)
		conf_error(ld, conf_kv_line(s, "tls_required"), s->type, s->name,
		    "tls_required", "needs tls = starttls (or implicit)");
	/* AUTH is offered only under TLS: without it nobody could ever send */
	if (l->role == ROLE_SUBMISSION && l->tls == TLS_NONE)
		conf_error(ld, conf_section_get(s, "tls") != NULL ? conf_kv_line(s, "tls") :
		    conf_kv_line(s, "role"), s->type, s->name, "tls", "role submission "
		    "offers AUTH only under TLS, so no client could authenticate; set "
		    "tls = starttls (and a [tls] cert and key)");
	if ((l->role == ROLE_SUBMISSION || l->role == ROLE_SUBMISSIONS) &&
	    c->auth_passwd_file == NULL && c->auth_dovecot == NULL)
		conf_error(ld, conf_kv_line(s, "role"), s->type, s->name, "role",
		    "%s requires AUTH; add an [auth] section with passwd_file or dovecot",
		    conf_role_words[l->role]);
	/* A PROXY listener that trusts nobody refuses everybody; a list alone does nothing. */
	if (l->proxy_protocol && l->nproxy_trusted == 0)
		conf_error(ld, conf_kv_line(s, "proxy_protocol"), s->type, s->name,
		    "proxy_protocol", "needs proxy_trusted = the load balancers' networks");
	if (!l->proxy_protocol && l->nproxy_trusted > 0)
		conf_error(ld, conf_kv_line(s, "proxy_trusted"), s->type, s->name,
		    "proxy_trusted", "does nothing without proxy_protocol = yes");
	for (i = 0; i < l->nfilters; i++) {
		conf_check_role_filter(ld, l, s, l->filters[i]);
		/* rdns-check judges the session's own lookup: without one it would pass everybody */
		if (!l->reverse_lookup && strncmp(l->filters[i], "rdns-check", 10) == 0 &&
		    (l->filters[i][10] == '\0' || l->filters[i][10] == ':'))
			conf_error(ld, conf_kv_line(s, "reverse_lookup"), s->type, s->name,
			    "reverse_lookup", "rdns-check needs the client's reverse lookup; "
			    "remove reverse_lookup = no");
	}
}

/* conf_listen_canon - "HOST|PORT" with the host in canonical form (caller frees) */
static char *
conf_listen_canon(const char *spec)
{
	char *host, *port, *why = NULL, *out;
	unsigned char a[sizeof(struct in6_addr)];
	char text[INET6_ADDRSTRLEN];
	int af;

	if (!conf_parse_hostport(spec, CONF_HOST_BIND, &host, &port, &why)) {
		free(why);
		return xstrdup(spec);
	}
	/* the names server.c binds for "*" and "localhost" */
	if (strcmp(host, "*") == 0 || strcmp(host, "localhost") == 0) {
		out = xstrdup(*host == '*' ? "0.0.0.0" : "127.0.0.1");
		free(host);
		host = out;
	}
	af = strchr(host, ':') != NULL ? AF_INET6 : AF_INET;
	if (inet_pton(af, host, a) == 1 && inet_ntop(af, a, text, sizeof(text)) != NULL)
		out = xasprintf("%s|%s", text, port);
	else
		out = xasprintf("%s|%s", host, port);
	free(host);
	free(port);
	return out;
}

/* conf_check_addresses - no address may be bound by two listeners */
static void
conf_check_addresses(struct conf_load *ld)
{
	const struct conf *c = ld->c;
	const struct conf_section *s;
	char **seen = NULL, *canon;
	size_t nseen = 0, *owner = NULL, i, j, k;

	for (i = 0; i < c->nlisteners; i++) {
		for (j = 0; j < c->listeners[i].nlisten; j++) {
			canon = conf_listen_canon(c->listeners[i].listen[j]);
			for (k = 0; k < nseen; k++)
				if (strcmp(seen[k], canon) == 0)
					break;
			if (k < nseen) {
				s = conf_section_find(c, "listener", c->listeners[i].name);
				if (owner[k] == i)
					conf_error(ld, conf_kv_line(s, "listen"), s->type,
					    s->name, "listen", "%s is listed twice (written "
					    "another way)", c->listeners[i].listen[j]);
				else
					conf_error(ld, conf_kv_line(s, "listen"), s->type,
					    s->name, "listen", "%s is also bound by [listener "
					    "%s] (line %d); each address belongs to one listener",
					    c->listeners[i].listen[j], c->listeners[owner[k]].name,
					    c->listeners[owner[k]].line);
				free(canon);
				continue;
			}
			owner = xreallocarray(owner, nseen + 1, sizeof(*owner));
			owner[nseen] = i;
			conf_strv_push(&seen, &nseen, canon);
		}
	}
	conf_strv_free(seen, nseen);
	free(owner);
}

/* conf_check_tls - a certificate and key when any listener speaks TLS */
static void
conf_check_tls(struct conf_load *ld)
{
	const struct conf *c = ld->c;
	const struct conf_listener *l = NULL;
	const struct conf_section *tls, *s;
	size_t i;
	int line;

	for (i = 0; i < c->nlisteners && l == NULL; i++)
		if (c->listeners[i].tls != TLS_NONE)
			l = &c->listeners[i];
	if (l == NULL)
		return;
	s = conf_section_find(c, "listener", l->name);
	tls = conf_section_find(c, "tls", NULL);
	line = conf_kv_line(s, "tls");
	if (c->tls_cert == NULL)
		conf_error(ld, tls != NULL ? conf_kv_line(tls, "cert") : line, "tls", NULL, "cert", "missing; [listener %s] (line %d) "
		    "uses TLS: %s cert = /path/to/fullchain.pem", l->name, l->line,
		    tls != NULL ? "set" : "add a [tls] section with");
	if (c->tls_key == NULL)
		conf_error(ld, tls != NULL ? conf_kv_line(tls, "key") : line, "tls", NULL, "key", "missing; [listener %s] (line %d) "
		    "uses TLS: %s key = /path/to/privkey.pem", l->name, l->line,
		    tls != NULL ? "set" : "add a [tls] section with");
}

/* conf_not_yet - refuse key of s: its feature is not built yet */
static void
conf_not_yet(struct conf_load *ld, const struct conf_section *s, const char *key,
    const char *fix)
{
	int line = conf_kv_line(s, key);

	if (!conf_error_at_line(ld, line))	/* a bad value says so already */
		conf_error(ld, line, s->type, s->name, key, "not implemented yet; %s", fix);
}

/*
 * conf_check_not_yet - keys that parse but that nothing acts on yet: only
 * their default (which is what portier does) loads, so that no key silently
 * does nothing.  The values are still parsed for the issues that build them.
 */
static void
conf_check_not_yet(struct conf_load *ld)
{
	const struct conf *c = ld->c;
	const struct conf_section *s;
	size_t i;

	if (c->metrics != NULL)
		conf_not_yet(ld, conf_section_find(c, "server", NULL), "metrics",
		    "remove the line");
	for (i = 0; i < c->nlisteners; i++) {
		s = conf_section_find(c, "listener", c->listeners[i].name);
		if (c->listeners[i].proxy_protocol && c->listeners[i].tls == TLS_IMPLICIT)
			conf_not_yet(ld, s, "proxy_protocol",
			    "not with tls = implicit: put the TLS on the load balancer or use starttls");
	}
	if (c->redis_tls)
		conf_not_yet(ld, conf_section_find(c, "redis", NULL), "tls",
		    "Debian 12's hiredis 0.14 has no TLS: reach Redis over unix:PATH or a local TLS tunnel");
}

/*
 * conf_check_lmtp_mixed - portier must be able to send the DSNs it owes.
 * Only an LMTP backend refuses some recipients after the data (Maildir
 * fails only with 4xx, always a 451; SMTP answers once).  A DSN goes to the
 * sender, mostly on another domain, which an LMTP server does not deliver
 * to: dsn needs an smtp: bounce_relay, or every DSN fails and each retry of
 * the client delivers another copy.  Unset, lmtp_mixed follows bounce_relay.
 */
static void
conf_check_lmtp_mixed(struct conf_load *ld)
{
	struct conf *c = ld->c;
	const struct conf_section *s = conf_section_find(c, "backend", NULL);
	int line;

	if (s == NULL || c->relay.kind != RELAY_LMTP || c->bounce_relay.kind == RELAY_SMTP)
		return;
	if (c->bounce_relay.kind == RELAY_LMTP) {
		line = conf_kv_line(s, "bounce_relay");
		conf_error(ld, line, "backend", NULL, "bounce_relay", "an LMTP server delivers "
		    "only its own mailboxes, not DSNs to remote senders; set bounce_relay = "
		    "smtp:HOST:PORT (an MTA with a queue)");
		return;
	}
	if (conf_section_get(s, "lmtp_mixed") == NULL) {
		c->lmtp_mixed = LMTP_MIXED_TEMPFAIL;
		return;
	}
	line = conf_kv_line(s, "lmtp_mixed");
	if (c->lmtp_mixed == LMTP_MIXED_DSN && !conf_error_at_line(ld, line))
		conf_error(ld, line, "backend", NULL, "lmtp_mixed", "dsn needs bounce_relay = "
		    "smtp:HOST:PORT (an MTA with a queue): the LMTP backend does not deliver DSNs "
		    "to remote senders; set it, or lmtp_mixed = tempfail");
}

/* conf_check_milter_server - [milter-server] needs a socket; its filters obey its role */
static void
conf_check_milter_server(struct conf_load *ld)
{
	const struct conf_milter_server *ms = ld->c->milter_server;
	const struct conf_section *s;
	size_t i;

	if (ms == NULL)
		return;
	s = conf_section_find(ld->c, "milter-server", NULL);
	if (ms->socket == NULL && conf_section_get(s, "listen") == NULL)
		conf_error(ld, s->line, s->type, NULL, "listen", "missing; add listen = "
		    "inet:127.0.0.1:8891, inet6:[::1]:8891 or unix:/run/portier/milter.sock");
	for (i = 0; i < ms->l.nfilters; i++)
		conf_check_role_filter(ld, &ms->l, s, ms->l.filters[i]);
}

/* conf_check_global - what must hold across sections */
static void
conf_check_global(struct conf_load *ld)
{
	struct conf *c = ld->c;
	const struct conf_section *s;
	int last = ld->lineno > 0 ? ld->lineno : 1;
	size_t i;

	if (c->nlisteners == 0 && c->milter_server == NULL)
		conf_error(ld, last, "listener", NULL, "listen", "no listener; add a "
		    "[listener NAME] section with listen = HOST:PORT");
	for (i = 0; i < c->nlisteners; i++)
		conf_check_listener(ld, &c->listeners[i],
		    conf_section_find(c, "listener", c->listeners[i].name));
	conf_check_milter_server(ld);
	conf_check_addresses(ld);
	conf_check_tls(ld);
	conf_check_not_yet(ld);
	conf_check_lmtp_mixed(ld);
	s = conf_section_find(c, "backend", NULL);
	if (s == NULL) {
		/* A file for portier-milter alone has no listener, and no backend: the MTA delivers. */
		if (c->nlisteners > 0)
			conf_error(ld, last, "backend", NULL, "relay", "no [backend]; add one with "
			    "relay = lmtp:unix:PATH, lmtp:HOST:PORT, smtp:HOST:PORT or maildir:DIR");
	} else if (conf_section_get(s, "relay") == NULL)
		conf_error(ld, s->line, "backend", NULL, "relay", "missing; set relay = "
		    "lmtp:unix:PATH, lmtp:HOST:PORT, smtp:HOST:PORT or maildir:DIR");
	if (c->auth_passwd_file != NULL && c->auth_dovecot != NULL) {
		s = conf_section_find(c, "auth", NULL);
		conf_error(ld, conf_kv_line(s, "dovecot"), "auth", NULL, "dovecot",
		    "set either passwd_file or dovecot, not both");
	}
}

/* conf_finish_defaults - defaults that depend on the machine */
static void
conf_finish_defaults(struct conf *c)
{
	char host[256];
	long n;

	if (c->hostname == NULL) {
		if (gethostname(host, sizeof(host)) == 0 && memchr(host, '\0', sizeof(host)) &&
		    conf_domain_ok(host))
			c->hostname = xstrdup(host);
		else
			c->hostname = xstrdup("localhost");
	}
	if (c->workers == 0) {
		n = sysconf(_SC_NPROCESSORS_ONLN);
		c->workers = n > 0 && n <= 1024 ? (unsigned)n : 1;
	}
}

/* conf_build - validate the raw sections into c: [server] first, so order does not matter */
static void
conf_build(struct conf_load *ld)
{
	struct conf *c = ld->c;
	const struct conf_section *s;
	size_t i;

	conf_default_limits(&c->limits);
	c->filter_threads = 8;
	c->auth_threads = 2;
	c->delivery_threads = 4;
	c->pool_queue = 10000;
	c->resolver = xstrdup("system");
	c->resolver_timeout = 10;
	c->log = xstrdup("stderr");
	c->drain_timeout = 30;
	c->state_entries = 200000;
	c->redis_timeout = 2;
	c->io_uring = true;
	c->relay.kind = RELAY_NONE;
	c->bounce_relay.kind = RELAY_NONE;
	c->relay_tls = RELAY_TLS_NONE;
	c->lmtp_mixed = LMTP_MIXED_DSN;
	c->relay_timeout = 120;
	c->relay_connect_timeout = 30;
	c->relay_pool = 16;
	c->relay_tls_verify = true;
	c->tls_min_protocol = xstrdup("TLSv1.2");
	c->tls_handshake_timeout = 30;
	c->auth_max_failures = 5;
	c->auth_failure_window = 600;

	if ((s = conf_section_find(c, "server", NULL)) != NULL)
		conf_apply_section(ld, s, c, conf_server_keys, &c->limits);
	/* [auth] before listeners: a submission listener needs it */
	if ((s = conf_section_find(c, "auth", NULL)) != NULL)
		conf_apply_section(ld, s, c, conf_auth_keys, NULL);
	for (i = 0; i < c->nsections; i++) {
		s = &c->sections[i];
		if (strcmp(s->type, "listener") == 0)
			conf_add_listener(ld, s);
		else if (strcmp(s->type, "tls") == 0)
			conf_apply_section(ld, s, c, conf_tls_keys, NULL);
		else if (strcmp(s->type, "backend") == 0)
			conf_apply_section(ld, s, c, conf_backend_keys, NULL);
		else if (strcmp(s->type, "redis") == 0)
			conf_apply_section(ld, s, c, conf_redis_keys, NULL);
		else if (strcmp(s->type, "milter-server") == 0)
			conf_add_milter_server(ld, s);
		/* server and auth are done; milter, filter, policy, policyd: their filters check them */
	}
	conf_check_global(ld);
	conf_finish_defaults(c);
}

/* conf_load - parse and validate FILE; NULL and one line per error in errors */
struct conf *
conf_load(const char *path, struct buf *errors)
{
	struct conf_load ld;
	int rc;

	memset(&ld, 0, sizeof(ld));
	ld.c = xcalloc(1, sizeof(*ld.c));
	ld.c->refcnt = 1;
	ld.c->path = xstrdup(path);
	ld.cur = CONF_SKIP;
	if ((ld.fp = fopen(path, "r")) == NULL) {
		buf_printf(errors, "%s: cannot open: %s\n", path, strerror(errno));
		conf_free(ld.c);
		return NULL;
	}
	rc = ini_parse_stream(conf_read_line, &ld, conf_handle, &ld);
	fclose(ld.fp);
	free(ld.line);
	if (rc == -2)
		fatal("conf_load: inih out of memory");
	if (rc > 0 && !conf_error_at_line(&ld, rc))
		conf_error(&ld, rc, NULL, NULL, NULL, "syntax error; expected "
		    "[section] or key = value");
	conf_build(&ld);
	if (ld.nerrors > 0) {
		conf_errors_flush(&ld, errors);
		conf_free(ld.c);
		return NULL;
	}
	return ld.c;
}

/* ---- lifetime ---- */

/* conf_free - free a snapshot and everything it owns */
static void
conf_free(struct conf *c)
{
	size_t i, j;

	for (i = 0; i < c->nsections; i++) {
		for (j = 0; j < c->sections[i].nkv; j++) {
			free(c->sections[i].kv[j].key);
			free(c->sections[i].kv[j].value);
		}
		free(c->sections[i].kv);
		free(c->sections[i].type);
		free(c->sections[i].name);
	}
	free(c->sections);
	for (i = 0; i < c->nlisteners; i++) {
		free(c->listeners[i].name);
		conf_strv_free(c->listeners[i].listen, c->listeners[i].nlisten);
		conf_strv_free(c->listeners[i].filters, c->listeners[i].nfilters);
		conf_strv_free(c->listeners[i].proxy_trusted, c->listeners[i].nproxy_trusted);
		free(c->listeners[i].greet_pause_exempt.v);
		free(c->listeners[i].limit_exempt.v);
	}
	free(c->listeners);
	if (c->milter_server != NULL) {
		free(c->milter_server->l.name);
		conf_strv_free(c->milter_server->l.listen, c->milter_server->l.nlisten);
		conf_strv_free(c->milter_server->l.filters, c->milter_server->l.nfilters);
		free(c->milter_server->socket);
		free(c->milter_server);
	}
	conf_strv_free(c->local_domains, c->nlocal_domains);
	conf_relay_clear(&c->relay);
	conf_relay_clear(&c->bounce_relay);
	free(c->path);
	free(c->hostname);
	free(c->user);
	free(c->resolver);
	free(c->resolver_trust_anchor);
	free(c->log);
	free(c->metrics);
	free(c->tls_cert);
	free(c->tls_key);
	free(c->tls_min_protocol);
	free(c->tls_ciphers);
	free(c->tls_ciphersuites);
	free(c->relay_tls_ca);
	free(c->relay_tls_name);
	free(c->auth_sender_login_map);
	free(c->redis_server);
	free(c->redis_user);
	free(c->redis_password);
	free(c->redis_prefix);
	free(c->redis_on_error);
	free(c->auth_passwd_file);
	free(c->auth_dovecot);
	free(c);
}

/* conf_ref - take one more reference */
struct conf *
conf_ref(struct conf *c)
{
	if (c != NULL)
		__atomic_add_fetch(&c->refcnt, 1, __ATOMIC_RELAXED);
	return c;
}

/* conf_unref - drop a reference; the last one frees the snapshot */
void
conf_unref(struct conf *c)
{
	int n;

	if (c == NULL)
		return;
	n = __atomic_sub_fetch(&c->refcnt, 1, __ATOMIC_ACQ_REL);
	assert(n >= 0);
	if (n == 0)
		conf_free(c);
}

/* ---- queries ---- */

/* conf_section_find - the section "[type name]" (name NULL or "" for none), or NULL */
const struct conf_section *
conf_section_find(const struct conf *c, const char *type, const char *name)
{
	size_t i;

	if (name == NULL)
		name = "";
	for (i = 0; i < c->nsections; i++)
		if (strcmp(c->sections[i].type, type) == 0 &&
		    strcmp(c->sections[i].name, name) == 0)
			return &c->sections[i];
	return NULL;
}

/* conf_section_get - value of key in s, or NULL (also when s is NULL) */
const char *
conf_section_get(const struct conf_section *s, const char *key)
{
	size_t i;

	if (s == NULL)
		return NULL;
	for (i = 0; i < s->nkv; i++)
		if (strcmp(s->kv[i].key, key) == 0)
			return s->kv[i].value;
	return NULL;
}

/* conf_is_local_domain - case-insensitive match against local_domains, trailing dot ignored */
bool
conf_is_local_domain(const struct conf *c, const char *domain)
{
	size_t len = strlen(domain), i;

	if (len > 1 && domain[len - 1] == '.')
		len--;
	for (i = 0; i < c->nlocal_domains; i++)
		if (strlen(c->local_domains[i]) == len &&
		    str_ncasecmp(c->local_domains[i], domain, len) == 0)
			return true;
	return false;
}
