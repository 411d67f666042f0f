/*
 * conf.h - the configuration snapshot: every setting and every limit, loaded
 * from an INI file (inih) and immutable once loaded.
 *
 * A snapshot is refcounted: sessions hold the one they started with while
 * SIGHUP swaps in a new one for new sessions.  conf_load never exits the
 * process; it reports every error as "FILE:LINE: [section] key: message".
 * (Named conf.h because autoconf owns config.h.)
 */
#ifndef PORTIER_CONF_H
#define PORTIER_CONF_H

#include <stdbool.h>
#include <stddef.h>
#include "buf.h"
#include "cidr.h"

enum conf_role { ROLE_MX, ROLE_SUBMISSION, ROLE_SUBMISSIONS };
enum conf_tls { TLS_NONE, TLS_STARTTLS, TLS_IMPLICIT };
enum conf_bare_newline { BARE_NEWLINE_REJECT, BARE_NEWLINE_NORMALIZE };
enum conf_relay_kind { RELAY_NONE, RELAY_LMTP, RELAY_SMTP, RELAY_MAILDIR };
enum conf_relay_tls { RELAY_TLS_NONE, RELAY_TLS_OPPORTUNISTIC, RELAY_TLS_REQUIRED };
enum conf_lmtp_mixed { LMTP_MIXED_DSN, LMTP_MIXED_TEMPFAIL };

/* Every limit in one place; [server] sets them, a [listener] may override. */
struct conf_limits {
	size_t max_command_line;	/* octets incl. CRLF, RFC 5321 4.5.3.1.4: 512 */
	size_t max_text_line;		/* octets incl. CRLF, 4.5.3.1.6: 1000 */
	size_t max_message_size;	/* octets, advertised in SIZE */
	size_t max_header_size;		/* octets of header fields, line ends in, empty line out */
	unsigned max_recipients;	/* per transaction, 4.5.3.1.8: >= 100 */
	unsigned max_errors;		/* client errors before 421 */
	unsigned max_pipelined;		/* commands waiting in the input buffer */
	unsigned command_timeout;	/* seconds waiting for a command, 4.5.3.2: 300 */
	unsigned data_timeout;		/* seconds between DATA/BDAT blocks: 180 */
	unsigned max_sessions;		/* per process; new ones get 421 */
	size_t spool_memory;		/* body bytes held in memory before a temp file */
	size_t max_output;		/* reply octets queued for a client before reading stops */
};

struct conf_kv {
	char *key;
	char *value;
	int line;
};

/* A raw section, for filters that configure themselves (e.g. [milter rspamd]). */
struct conf_section {
	char *type;		/* "server", "listener", "milter", ... */
	char *name;		/* the word after the type, "" if none */
	int line;
	struct conf_kv *kv;
	size_t nkv;
};

/* Networks parsed once, in the order written (limit_exempt, greet_pause_exempt). */
struct conf_nets {
	struct cidr *v;
	size_t n;
};

struct conf_listener {
	char *name;
	int line;		/* of its [listener NAME] header, for error messages */
	char **listen;		/* "HOST:PORT", "[V6]:PORT" */
	size_t nlisten;
	enum conf_role role;
	enum conf_tls tls;
	bool tls_required;	/* tls_required = yes: MAIL refused before STARTTLS */
	bool proxy_protocol;	/* a PROXY v1/v2 header first (smtp_proxy.c) */
	char **proxy_trusted;	/* "ADDR" or "ADDR/PREFIX": who may send it */
	size_t nproxy_trusted;
	unsigned proxy_timeout;	/* seconds the header may take */
	unsigned greet_pause;
	struct conf_nets greet_pause_exempt;	/* greeted without the pause */
	unsigned client_limit;		/* live sessions from one address, this process; 0: none */
	unsigned network_limit;		/* ... from one network (prefixes below); 0: none */
	unsigned network_prefix4;	/* 24 */
	unsigned network_prefix6;	/* 64 */
	struct conf_nets limit_exempt;	/* never counted by the two limits */
	bool reverse_lookup;	/* the client's FCrDNS name at connect (default yes) */
	enum conf_bare_newline bare_newline;
	char **filters;		/* names from "filters =" in order */
	size_t nfilters;
	struct conf_limits limits;
};

struct conf_relay {
	enum conf_relay_kind kind;
	bool is_unix;		/* lmtp:unix:PATH */
	char *path;		/* unix socket path or Maildir root, else NULL */
	char *host;		/* HOST:PORT relays (IPv6 without brackets), else NULL */
	char *port;
	char *spec;		/* as written, for logs */
};

/*
 * [milter-server]: portier-milter's own section (portier-milter(8)), the
 * built-in filters served to an MTA through libmilter.  l holds what it
 * shares with a listener: the name "milter-server", line, role (mx or
 * submission: its safety filter heads the chain), filters, the [server]
 * limits, and listen[0], the socket as written.
 */
struct conf_milter_server {
	struct conf_listener l;
	char *socket;		/* libmilter's form: "inet:PORT@HOST", "inet6:PORT@ADDR", "unix:PATH" */
	unsigned socket_mode;	/* unix: the socket's permissions */
};

/* Optional strings (user, metrics, tls_*, redis_server, auth_*) are NULL when unset or empty. */
struct conf {
	int refcnt;		/* atomic; conf_ref/conf_unref */
	char *path;
	char *hostname;
	char *user;
	unsigned workers;	/* event loops; 0 = one per core (resolved at load) */
	unsigned filter_threads;	/* threads of the pool for filters that may block */
	unsigned auth_threads;		/* threads of the pool for password checks */
	unsigned delivery_threads;	/* threads of the pool for Maildir writes */
	unsigned pool_queue;		/* jobs waiting in each pool before a tempfail */
	char *resolver;		/* "system" or "ADDR[@PORT] ..." */
	unsigned resolver_timeout;	/* seconds a DNS query may take */
	char *resolver_trust_anchor;	/* DNSSEC trust anchor file; NULL = no validation */
	char *log;
	char *metrics;		/* not built yet: conf_load refuses it if set */
	char **local_domains;	/* lower-case */
	size_t nlocal_domains;
	unsigned drain_timeout;	/* seconds SIGTERM waits for live sessions */
	bool io_uring;		/* batch a loop turn's socket writes through io_uring */
	struct conf_limits limits;

	struct conf_listener *listeners;
	size_t nlisteners;
	struct conf_milter_server *milter_server;	/* NULL without [milter-server] */

	char *tls_cert;
	char *tls_key;
	char *tls_min_protocol;		/* "TLSv1.2" (default) or "TLSv1.3" */
	char *tls_ciphers;		/* TLS <= 1.2 cipher list; NULL = built-in default */
	char *tls_ciphersuites;		/* TLS 1.3 suites; NULL = OpenSSL's default */
	unsigned tls_handshake_timeout;	/* seconds */

	struct conf_relay relay;
	struct conf_relay bounce_relay;	/* kind RELAY_NONE = use relay */
	enum conf_relay_tls relay_tls;
	char *relay_tls_ca;		/* CA file to verify the backend; NULL = system store */
	bool relay_tls_verify;		/* verify the backend's certificate (required: always) */
	char *relay_tls_name;		/* name expected in its certificate; NULL = relay host */
	enum conf_lmtp_mixed lmtp_mixed;
	unsigned relay_timeout;		/* seconds per backend reply */
	unsigned relay_connect_timeout;
	unsigned relay_pool;		/* idle backend connections kept per loop */
	bool relay_xforward;		/* pass client facts on with XFORWARD when offered */

	char *redis_server;		/* "HOST:PORT", "inet:HOST:PORT", "unix:PATH"; NULL: memory store */
	char *redis_user;		/* ACL user for AUTH; NULL: the default user */
	char *redis_password;		/* NULL: no AUTH */
	unsigned redis_database;	/* SELECT */
	char *redis_prefix;		/* of every key; NULL: "portier:" */
	unsigned redis_timeout;		/* seconds a call waits for its reply */
	char *redis_on_error;		/* "open" (NULL too) or "closed" */
	bool redis_tls;			/* refused: hiredis 0.14 has no TLS */
	unsigned state_entries;		/* keys the in-memory store keeps */
	char *auth_passwd_file;
	char *auth_dovecot;
	char *auth_sender_login_map;	/* login -> allowed senders; NULL = login is the address */
	unsigned auth_max_failures;	/* failed AUTHs per client IP within the window */
	unsigned auth_failure_window;	/* seconds */

	struct conf_section *sections;	/* every section as read */
	size_t nsections;
};

/* conf_load - parse and validate FILE; NULL and one line per error in errors. */
struct conf *conf_load(const char *path, struct buf *errors);
/* conf_default_limits - the RFC 5321 defaults. */
void conf_default_limits(struct conf_limits *l);
struct conf *conf_ref(struct conf *c);
void conf_unref(struct conf *c);
/* conf_section_find - the section "[type name]", or NULL. */
const struct conf_section *conf_section_find(const struct conf *c, const char *type, const char *name);
/* conf_section_get - value of key in s, or NULL. */
const char *conf_section_get(const struct conf_section *s, const char *key);
/*
 * conf_role_filter - the safety filter a role implies at the head of its
 * chain: "port25" (mx) or "auth-enforce" (submission, submissions).
 */
const char *conf_role_filter(enum conf_role role);
/* conf_is_local_domain - case-insensitive match against local_domains. */
bool conf_is_local_domain(const struct conf *c, const char *domain);
/* conf_nets_parse - a list of ADDR or ADDR/PREFIX into *nets (its old list freed); false + *why_r */
bool conf_nets_parse(const char *value, struct conf_nets *nets, char **why_r);
/* conf_parse_bool - yes/no/true/false/on/off/1/0 (any case) into *b; false if none */
bool conf_parse_bool(const char *value, bool *b);
/* conf_domain_ok - a DNS name of LDH and '_' labels of 1..63 octets, 253 in all, no final dot */
bool conf_domain_ok(const char *s);

#endif
