/*
 * filter.h - the filter API: milter-shaped callbacks over one SMTP transaction.
 *
 * A filter sees a session and a transaction and returns a verdict for each
 * stage.  It does slow work in one of three ways:
 *   inline      cheap, pure work: the callback returns its verdict at once.
 *   on the loop non-blocking I/O (ctx->resolver's queries, hiredis async, a
 *               milter socket) on ctx->base: the callback takes a handle
 *               with filter_wait_begin(), returns FILTER_PENDING, and later
 *               completes the stage with filter_wait_done().
 *   blocking    a library that only calls back synchronously (DNS through
 *               libspf2, hashing): the filter sets may_block, and its
 *               callbacks run on the filter pool (filter_threads threads,
 *               apart from the AUTH and delivery pools), or on a pool of
 *               its own ("threads =" in its section), on a copy of the
 *               session and transaction that the call owns.
 * The chain enforces each filter's timeout and default_action (its section's
 * keys "timeout" and "default_action"): a filter that does not answer in
 * time, or reports a failure (filter_wait_fail), gets default_action for
 * that stage and for every later one of the session (Postfix's milter rule),
 * and a log line names it (event=filter_timeout, event=filter_failed).  A
 * failing filter never takes the daemon down.
 *
 * Threads and sharing (the contract):
 *   - configure() runs on the main thread: as root at start, but as the
 *     unprivileged user on SIGHUP, so files it reads (keys) must stay
 *     readable by that user, or the reload fails, keeps the old
 *     configuration and says why.  An instance must not keep pointers into
 *     conf or its section past configure(): copy what it needs.  destroy()
 *     runs where the chain's last reference goes: the main thread (a
 *     reload, the exit), or the loop or pool thread of a blocking call that
 *     outlived a reload.
 *   - An instance is shared by every session of its listener on every event
 *     loop, and by blocking calls on pool threads: after configure() it is
 *     read-only, or the filter locks what it changes.
 *   - Every callback of a filter without may_block runs on the session's
 *     loop thread, as does filter_wait_done.  A may_block filter's
 *     connect..eom and final run on a pool thread, never two of one session
 *     at once; its abort and close run on the loop, except the close of a
 *     call that outlived its session (below).
 *   - *ctx->priv is the filter's per-session state, NULL at first; close()
 *     frees it (it is called with NULL too).  ctx and what it points to are
 *     valid for the call only.
 *   - A blocking call works on a copy of the session and the transaction,
 *     owned by the call: if the chain stops waiting for it (timeout, the
 *     client left, a drain), the call still runs to its end on its copy and
 *     is dropped; then its per-session state is its own and close() runs
 *     on it once the call is over (on the loop, or on a pool thread when the
 *     loop is gone at shutdown).  That filter sits out the rest of the
 *     session.  The chain keeps the instance alive until then.
 *   - A call on the loop that returned FILTER_PENDING owns its handle until
 *     it calls filter_wait_done or filter_wait_fail, exactly once.  If the
 *     chain stops waiting first, it calls the filter's cancel(): the filter
 *     stops its I/O for that stage if it can; completing the handle later
 *     is harmless (the completion is dropped).  The handle never points
 *     into a session the chain has stopped waiting for.
 *
 * At end of message a filter may queue edits (the milter action set) and
 * record authentication results; the chain composes one
 * Authentication-Results header from them.  A filter's header callbacks
 * see the header block as the filters before it edited it, and body() the
 * body they put in its place, if any (the session applies the edits, and the
 * envelope's, once the whole chain ran).  Then the final stage runs: the
 * filters with a final callback (signers) see the header block exactly as
 * it will be sent and may prepend headers to it (filter_prepend_header).
 *
 * Ownership: strings handed to callbacks belong to the session and live for
 * the duration of the call only, except where noted.  Edits and results are
 * copied into the transaction.  The strings of struct filter_txn are owned
 * by it (filter_txn_reset frees them), but for rcpt_params_cur, which is the
 * session's; a filter that keeps any of them past the call copies it.
 */
#ifndef PORTIER_FILTER_H
#define PORTIER_FILTER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

#include "../smtpd/buf.h"
#include "../smtpd/conf.h"

struct event_base;
struct resolver;
struct workers_loop;
struct spool;

/*
 * Verdicts, with milter semantics.  The session-wide stages are CONNECT,
 * HELO and AUTH (no transaction is open); the transaction's are MAIL, RCPT
 * and DATA, and a transaction ends at end of message, RSET, HELO/EHLO, QUIT
 * or when the session ends.
 *   CONTINUE   the next filter runs.
 *   ACCEPT     this filter is done: its callbacks are not called again until
 *              the transaction ends (given at MAIL/RCPT/DATA) or for the rest
 *              of the session (given at CONNECT/HELO/AUTH), as libmilter's
 *              SMFIS_ACCEPT ("no further callbacks for this message /
 *              connection").  The rest of the chain still runs, and abort
 *              and close still reach the filter.
 *   REJECT     5xx: at CONNECT the session is refused; at RCPT that recipient
 *   TEMPFAIL   4xx  only; at any other stage the command.  The chain stops.
 *   DISCARD    the message is accepted toward the client and delivered
 *              nowhere: the transaction in progress (txn->discard), or, given
 *              at CONNECT/HELO/AUTH, every transaction of the session.  The
 *              chain stops, and no filter runs again for what was discarded
 *              (every later stage answers DISCARD at once), as Postfix skips
 *              its milters after a discard.  (Postfix refuses a milter's
 *              DISCARD at connect and helo and applies its default action
 *              instead; libmilter says it "should not be returned" there.)
 *   QUARANTINE the message is delivered marked (X-Portier-Quarantine: the
 *              reply's text, or "filter NAME"): the transaction in progress
 *              (txn->quarantine), or, at CONNECT/HELO/AUTH, every transaction
 *              of the session.  A mark, not a decision: the chain goes on,
 *              and the quarantining filter too.  The first reason stays.
 */
enum filter_verdict {
	FILTER_CONTINUE,	/* next filter */
	FILTER_ACCEPT,		/* this filter is done with the transaction (or session) */
	FILTER_REJECT,		/* 5xx */
	FILTER_TEMPFAIL,	/* 4xx */
	FILTER_DISCARD,		/* accept toward the client, deliver nothing */
	FILTER_QUARANTINE,	/* deliver, marked (X-Portier-Quarantine) */
	FILTER_PENDING,		/* on the loop only: filter_wait_begin was called, the verdict comes later */
};

enum filter_stage {
	FILTER_STAGE_CONNECT,
	FILTER_STAGE_HELO,
	FILTER_STAGE_AUTH,
	FILTER_STAGE_MAIL,
	FILTER_STAGE_RCPT,
	FILTER_STAGE_DATA,	/* headers, eoh, body, eom: run together at end of data */
	FILTER_STAGE_FINAL,	/* after edits and Authentication-Results: txn->head is what is sent */
	FILTER_STAGE_ABORT,	/* transaction ended without delivery (RSET, QUIT, error) */
	FILTER_STAGE_CLOSE,	/* session ends */
};

struct filter_reply {
	int code;		/* 0: the session's default for the verdict */
	char ecode[16];		/* "5.7.1" */
	char text[400];		/* several lines separated by LF: a multi-line reply */
};

struct filter_header {
	char *name;		/* without WSP before the ':' ("From : x" is From) */
	char *value;		/* raw after the ':' (usually " ..."), folding kept, no final CRLF */
};

enum filter_edit_kind {
	EDIT_ADD_HEADER,	/* append at end of header */
	EDIT_INSERT_HEADER,	/* at index (0 = top) */
	EDIT_CHANGE_HEADER,	/* index-th (1-based) occurrence of name; NULL value deletes */
	EDIT_DELETE_HEADER,	/* same as change with NULL value */
	EDIT_REPLACE_BODY,	/* value is the new body (CRLF line ends) */
	EDIT_CHANGE_FROM,	/* value: the new sender ("" null), params: its MAIL parameters */
	EDIT_ADD_RCPT,		/* value: the recipient, params: its RCPT parameters */
	EDIT_DELETE_RCPT,	/* value: the recipient */
};

struct filter_edit {
	enum filter_edit_kind kind;
	char *name;
	char *value;
	size_t value_len;
	unsigned index;
	char *params;		/* CHANGE_FROM, ADD_RCPT: "NOTIFY=NEVER ORCPT=rfc822;x@y", "" for none */
};

/*
 * What every filter may read about the session (owned by the session), the
 * connection facts a milter's macros ({daemon_addr}, {client_port}...) and
 * a policy server's attributes need.  The addresses are those of the socket:
 * a session on anything but an IPv4/IPv6 socket (a unit test's bufferevent
 * pair has no socket at all, a socketpair is AF_UNIX) has local_sa zeroed
 * (AF_UNSPEC), local_addr "", both ports 0 and client_addr "unknown".
 * tls_peer_subject is in X509_NAME_oneline's form ("/C=DE/CN=client").
 */
struct filter_session {
	uint64_t id;
	const char *listener;	/* listener name */
	enum conf_role role;
	struct sockaddr_storage client_sa;
	const char *client_addr;	/* "192.0.2.1" */
	unsigned client_port;	/* 0 if not IP */
	struct sockaddr_storage local_sa;	/* where the client connected (getsockname) */
	const char *local_addr;	/* "192.0.2.25", "" if not IP */
	unsigned local_port;	/* 0 if not IP */
	/*
	 * The client's forward-confirmed reverse name (its PTR name maps back
	 * to its address), or "unknown": Postfix's convention, as its
	 * {client_name} macro.  client_ptr is the first PTR name even when it
	 * does not map back ({client_ptr}), NULL without one.  Both "unknown"
	 * / NULL with reverse_lookup = no.
	 */
	const char *client_name;
	const char *client_ptr;
	/*
	 * How the reverse lookup ended, rdns_result_name()'s word: "verified",
	 * "unverified" (PTR names, none maps back), "none" (no PTR),
	 * "tempfail" (SERVFAIL, a resolver error, or it could not start),
	 * "timeout".  NULL when none ran (reverse_lookup = no, no IP client).
	 * Tells a missing name from a lookup that failed for now (static text).
	 */
	const char *client_rdns;
	/*
	 * On a proxy_protocol listener, the load balancer's address (the
	 * socket's peer); NULL elsewhere.  client_addr, client_sa and
	 * client_port are then the real client's, from the PROXY header (and
	 * local_* where it connected to the balancer), so that SPF, milters
	 * and policies judge the client; after a header that gives no
	 * address (v2 LOCAL, v1 UNKNOWN) they stay the balancer's.
	 */
	const char *proxy_client;
	const char *helo;	/* NULL before HELO/EHLO */
	bool esmtp;		/* the client said EHLO (LHLO), not HELO */
	const char *tls_version;	/* NULL without TLS */
	const char *tls_cipher;
	const char *tls_peer_subject;	/* client certificate's subject, NULL without one */
	const char *auth_user;	/* NULL unless authenticated */
	const char *auth_method;	/* its SASL mechanism ("PLAIN"), NULL with auth_user */
	const struct conf *conf;
};

/*
 * The transaction being filtered (owned by the session).  ESMTP parameters
 * are the normalized "KEYWORD=value ..." strings the session relays to the
 * backend ("SIZE=100 BODY=8BITMIME", "NOTIFY=SUCCESS ORCPT=rfc822;x@y"),
 * "" when there are none.
 */
/*
 * A result a later filter decides on: DMARC reads SPF's and DKIM's.  The
 * text that goes into Authentication-Results is apart (filter_auth_result).
 *   method "spf":  domain is the identity checked (the MAIL FROM domain, or
 *                  the HELO name), scope "mailfrom" or "helo";
 *   method "dkim": domain is the signature's d=, scope its s=.
 * result is RFC 8601's word (pass, fail, softfail, neutral, none,
 * temperror, permerror, policy).
 */
struct filter_auth_fact {
	char *method;
	char *result;
	char *domain;
	char *scope;
};

struct filter_txn {
	char *queue_id;		/* "<session id>.<seq>" as in Received:, set at MAIL */
	char *mail_from;	/* "" for the null sender */
	char *mail_params;	/* MAIL's parameters */
	char **rcpts;		/* the accepted recipients */
	char **rcpt_params;	/* parallel to rcpts: each one's parameters */
	size_t nrcpts;
	/*
	 * At the RCPT stage, the parameters of the recipient being filtered
	 * (the callback's rcpt, not yet in rcpts); NULL at every other stage.
	 * The session's: valid for the stage only.
	 */
	const char *rcpt_params_cur;
	struct filter_header *headers;	/* as received, in order */
	size_t nheaders;
	struct spool *body;	/* the message as received, CRLF line ends */
	size_t body_offset;	/* where the body starts in it (after the header block) */
	struct filter_edit *edits;
	size_t nedits;
	struct buf auth_results;	/* "; spf=pass smtp.mailfrom=..." items */
	struct filter_auth_fact *facts;	/* the same results, for later filters (filter_auth_fact) */
	size_t nfacts;
	/*
	 * FINAL stage: the header block as it will be sent, Received: first,
	 * CRLF line ends, the empty line that ends it included (when the
	 * message has one); NULL at every other stage.  Read-only: add to it
	 * with filter_prepend_header, which the next final filter sees.
	 */
	struct buf *head;
	struct buf prepend;	/* FINAL: "Name: value\r\n" fields owed to the top of head */
	char *quarantine;	/* reason, NULL unless quarantined */
	bool discard;		/* a filter discarded it: deliver nothing */
};

struct filter_state;

/* Per-callback context: the filter's per-session state and the views. */
struct filter_ctx {
	void **priv;		/* the filter's per-session pointer, NULL at connect */
	const struct filter_session *sess;
	struct filter_txn *txn;	/* NULL at connect/helo/auth/close */
	struct event_base *base;	/* the session's loop; NULL on a pool thread or without a loop */
	/*
	 * The loop's DNS context (smtpd/resolver.h), for resolver_query with
	 * filter_wait_begin: NULL where base is, or when libunbound refused
	 * the settings (answer temperror).  Valid for the call; a query in
	 * flight keeps it alive until its callback, so a completion may start
	 * the next query on the same context.  A may_block filter uses
	 * resolver_sync(sess->conf, ...) instead.
	 */
	struct resolver *resolver;
	struct filter_state *state;	/* the chain's, for filter_wait_begin */
	size_t link;		/* the chain's: which filter is called */
};

struct filter_ops {
	const char *name;
	bool may_block;
	/* dns - its callbacks on the loop query ctx->resolver (the chain sets it for them) */
	bool dns;
	/*
	 * A role's safety filter (policy/: port25, auth-enforce), inline only:
	 * it runs even where another filter discarded (see filter_run), so a
	 * discarded transaction is refused exactly where a kept one would be.
	 */
	bool safety;
	/* configure - build an instance from its section (may be NULL); NULL + *err_r on error. */
	void *(*configure)(const struct conf *conf, const struct conf_section *sec, char **err_r);
	void (*destroy)(void *inst);
	enum filter_verdict (*connect)(void *inst, struct filter_ctx *ctx, struct filter_reply *r);
	enum filter_verdict (*helo)(void *inst, struct filter_ctx *ctx, const char *helo, struct filter_reply *r);
	enum filter_verdict (*auth)(void *inst, struct filter_ctx *ctx, const char *user, struct filter_reply *r);
	enum filter_verdict (*mail)(void *inst, struct filter_ctx *ctx, const char *from, struct filter_reply *r);
	enum filter_verdict (*rcpt)(void *inst, struct filter_ctx *ctx, const char *rcpt, struct filter_reply *r);
	enum filter_verdict (*header)(void *inst, struct filter_ctx *ctx, const char *name, const char *value, struct filter_reply *r);
	enum filter_verdict (*eoh)(void *inst, struct filter_ctx *ctx, struct filter_reply *r);
	enum filter_verdict (*body)(void *inst, struct filter_ctx *ctx, const char *chunk, size_t len, struct filter_reply *r);
	enum filter_verdict (*eom)(void *inst, struct filter_ctx *ctx, struct filter_reply *r);
	/* final - after every edit and Authentication-Results: ctx->txn->head is what is sent */
	enum filter_verdict (*final)(void *inst, struct filter_ctx *ctx, struct filter_reply *r);
	void (*abort)(void *inst, struct filter_ctx *ctx);
	void (*close)(void *inst, struct filter_ctx *ctx);
	/* cancel - the chain stopped waiting for this filter's pending call (on the loop) */
	void (*cancel)(void *inst, struct filter_ctx *ctx);
};

/* A configured chain for one listener (immutable, shared by its sessions). */
struct filter_chain;
/* A pending call: a filter's handle on the loop, or a blocking call on the pool. */
struct filter_wait;

struct filter_result {
	enum filter_verdict verdict;	/* CONTINUE: all passed or accepted; QUARANTINE: marked */
	struct filter_reply reply;	/* REJECT/TEMPFAIL: always a full, class-checked reply */
	const char *filter;	/* who decided, discarded or quarantined; NULL if nobody */
};

/* filter_register - make ops known by ops->name (built-ins register at startup). */
void filter_register(const struct filter_ops *ops);
const struct filter_ops *filter_lookup(const char *name);

/*
 * filter_chain_new - instantiate "filters =" of a listener.  A name "type:inst"
 * (e.g. "milter:rspamd") configures filter type with section [type inst];
 * a plain name uses section [filter name] if present, else NULL.
 * NULL + message on error.
 */
struct filter_chain *filter_chain_new(const struct conf *conf, char **names, size_t n, char **err_r);
void filter_chain_free(struct filter_chain *chain);
bool filter_chain_empty(const struct filter_chain *chain);
/* filter_chain_dns - true when a filter of the chain has ops->dns: callers set ctx->resolver */
bool filter_chain_dns(const struct filter_chain *chain);
/* filter_chain_names - "spf,dkim-verify" for the summary log line (owned by chain). */
const char *filter_chain_names(const struct filter_chain *chain);
/*
 * filter_chain_key - true for the keys the chain reads in every filter's
 * section: timeout (seconds a stage waits for the filter, default 60, 0 no
 * limit), default_action (accept | reject | tempfail, default tempfail) and,
 * for a may_block filter, threads (a pool of its own with that many
 * threads; 0, the default: the shared filter pool).  A filter's
 * configure() accepts them without using them.
 */
bool filter_chain_key(const char *key);
/*
 * filter_pools_free - stop the filters' own pools, once every loop is gone
 * (their queued calls still run and are dropped).  A filter's pool lives
 * from its first call to the end of the process, shared by the chains of
 * every reload that give it the same name and threads.
 */
void filter_pools_free(void);

struct filter_state *filter_state_new(const struct filter_chain *chain);
/* filter_state_free - runs close; a stage still pending is cancelled first */
void filter_state_free(struct filter_state *st, struct filter_ctx *ctx);
/*
 * filter_cancel - stop waiting for the stage in progress (the client left,
 * a drain, a flood): the pending call is cancelled or left to finish on its
 * own copy, and done is never called for the stage.  Nothing if none.
 */
void filter_cancel(struct filter_state *st);

/* Completion callback: runs on the session's event loop. */
typedef void (*filter_done_fn)(uint64_t session_id, void *arg, const struct filter_result *res);

enum filter_run_status { FILTER_RUN_DONE, FILTER_RUN_PENDING };

/*
 * filter_run - run one stage through the chain.  arg is the stage's string
 * (helo name, user, sender, recipient; NULL otherwise).  If every filter of
 * the chain answers inline the stage completes now: FILTER_RUN_DONE with
 * *res.  Otherwise FILTER_RUN_PENDING: a filter waits on the loop or a
 * blocking one runs on wl's pool, and done(session_id, done_arg, res) is
 * called later on wl's loop, exactly once, unless filter_cancel comes
 * first; the caller keeps st, ctx->sess, ctx->txn and arg alive until then
 * or until it cancels (a blocking call reads its own copies).
 * One stage at a time per state.  res->verdict is REJECT, TEMPFAIL or
 * DISCARD from the filter that stopped the chain; else QUARANTINE if one
 * quarantined (txn->quarantine is set, or the session's mark is kept for
 * each MAIL); else CONTINUE.  Filters that ACCEPTed are skipped (see
 * enum filter_verdict).  Once discarded, the transaction (or, from a
 * session-wide stage, the session) runs no filter but the safety ones:
 * their REJECT or TEMPFAIL stands, else DISCARD at once, naming who
 * discarded, and txn->discard is set at MAIL.  MAIL starts a
 * transaction; ABORT or a session-wide stage ends one.  ABORT and CLOSE
 * call every filter's abort/close inline and always pass.  With wl NULL,
 * blocking filters run inline (tools, tests).
 */
enum filter_run_status filter_run(struct filter_state *st, enum filter_stage stage,
    struct filter_ctx *ctx, const char *arg, struct filter_result *res,
    struct workers_loop *wl, filter_done_fn done, void *done_arg);

/*
 * filter_wait_begin - in a callback of a filter without may_block: the
 * verdict will come later.  Start the I/O on ctx->base, keep the handle,
 * and return FILTER_PENDING.  NULL on a pool thread or without a loop
 * (ctx->base NULL): answer now.
 */
struct filter_wait *filter_wait_begin(struct filter_ctx *ctx);
/*
 * filter_wait_ctx - the stage's context for the completion (priv, sess,
 * txn to edit); NULL when the chain no longer waits for it.  Loop only.
 */
struct filter_ctx *filter_wait_ctx(struct filter_wait *w);
/*
 * filter_wait_done - the verdict of a pending call (never FILTER_PENDING);
 * r may be NULL.  Frees w.  On the loop; may be called from inside the
 * callback that began it.  The chain goes on, and may finish the stage and
 * call the session back from inside this call.
 */
void filter_wait_done(struct filter_wait *w, enum filter_verdict v, const struct filter_reply *r);
/* filter_wait_fail - the call failed (why: for the log): default_action applies.  Frees w. */
void filter_wait_fail(struct filter_wait *w, const char *why);
/*
 * filter_wait_timeout - this wait may last seconds from now, in place of the
 * filter's timeout (0: no limit; FILTER_TIMEOUT_DEFAULT: the filter's
 * timeout, from now); called again, the clock starts over (a milter's
 * progress packet).  Loop only; may be called from inside the
 * callback that began the wait.  Nothing once the chain stopped waiting.
 */
void filter_wait_timeout(struct filter_wait *w, unsigned seconds);
#define FILTER_TIMEOUT_DEFAULT	((unsigned)-1)

/*
 * filter_headers_edited - the header fields as the filters so far left
 * them, in order (what header() callbacks see): an array to free, whose
 * strings are txn's and valid while txn is unchanged.  A value as received
 * starts after the ':' ("  x"), one a filter gave is as it gave it.
 */
struct filter_header *filter_headers_edited(const struct filter_txn *txn, size_t *n);
/*
 * filter_body_view - the body as the filters so far left it: *mem and
 * *len when it is in memory (a filter replaced it, or the spool is), else
 * *mem NULL and the body is txn->body from *off to *len.
 */
void filter_body_view(const struct filter_txn *txn, const char **mem, size_t *off, size_t *len);
/*
 * filter_parse_socket - a filter's peer: "inet:HOST:PORT" (also Sendmail's
 * "inet:PORT@HOST"), "inet6:[ADDR]:PORT" or "unix:PATH", into an address to
 * connect to.  HOST may be a name: it is resolved now (configure() runs on
 * the main thread, never on a loop).  false + *err_r (to free).
 */
bool filter_parse_socket(const char *spec, struct sockaddr_storage *sa_r, socklen_t *len_r,
    char **err_r);
/* filter_conf_uint - a key = number in lo..hi into *out; false + *err_r naming key and line */
bool filter_conf_uint(const struct conf_kv *kv, unsigned long lo, unsigned long hi,
    unsigned *out, char **err_r);

/* filter_txn_reset - clear a transaction (RSET/commit); keeps nothing. */
void filter_txn_init(struct filter_txn *txn);
void filter_txn_reset(struct filter_txn *txn);

/* Edits and results, for filters to call from eom. */
void filter_add_header(struct filter_txn *txn, const char *name, const char *value);
void filter_insert_header(struct filter_txn *txn, unsigned index, const char *name, const char *value);
void filter_change_header(struct filter_txn *txn, const char *name, unsigned index, const char *value);
void filter_delete_header(struct filter_txn *txn, const char *name, unsigned index);
void filter_replace_body(struct filter_txn *txn, const char *body, size_t len);
void filter_change_from(struct filter_txn *txn, const char *from, const char *params);
void filter_add_rcpt(struct filter_txn *txn, const char *rcpt, const char *params);
void filter_delete_rcpt(struct filter_txn *txn, const char *rcpt);
void filter_auth_result(struct filter_txn *txn, const char *fmt, ...) PRINTF_LIKE(2, 3);
/* filter_auth_fact - record a result for later filters (see struct filter_auth_fact); scope may be NULL */
void filter_auth_fact(struct filter_txn *txn, const char *method, const char *result,
    const char *domain, const char *scope);
/*
 * filter_prepend_header - FINAL only: a field to put at the top of txn->head
 * (a signature).  value may be folded ("CRLF WSP text", as libopendkim folds
 * a signature); every other control but HTAB becomes a space.
 */
void filter_prepend_header(struct filter_txn *txn, const char *name, const char *value);

/*
 * The header block, read as RFC 5322 (2.2, and the obsolete syntax of 4.5)
 * and as the backends read it (Postfix's cleanup, Dovecot): fields
 * "name:" or "name WSP* :", the name printable US-ASCII without ':', each
 * folded over lines that start with SP or HTAB.  A field's name is stored
 * without the WSP before its ':' (and composed back as "name:", as Postfix
 * does).  The block ends at the empty line, at the end of the message, or at
 * the first line that is neither a field nor the continuation of one (a
 * malformed line, or a line with a NUL): the body starts with that line, and
 * the empty line is owed before it (see filter_hparser), so that every
 * backend takes for headers exactly what the filters saw.
 */
enum filter_eoh {
	FILTER_EOH_EMPTY_LINE,	/* at the empty line; the body follows it */
	FILTER_EOH_MALFORMED,	/* at a line that is no field: the body, the empty line owed */
	FILTER_EOH_END,		/* the message ends inside the block: no body */
};

enum filter_hparser_status {
	FILTER_HPARSER_DONE,	/* parsed: body and eoh say where and how the block ended */
	FILTER_HPARSER_MORE,	/* feed again with more of the message */
	FILTER_HPARSER_TOO_BIG,	/* the fields are longer than max */
};

/*
 * A resumable parser of the header block: no I/O, offsets only (the caller's
 * buffer may move between calls).  Memory: the fields parsed are copied into
 * txn->headers; the caller holds the block (at most max octets plus one line
 * plus whatever it read ahead).
 */
struct filter_hparser {
	size_t max;		/* octets of fields allowed, line ends in, the empty line out */
	size_t off;		/* first octet not parsed yet */
	size_t field;		/* the open field's first octet; SIZE_MAX: none open */
	size_t nlen;		/* its name's length (no WSP) */
	size_t value;		/* its value's first octet, after the ':' */
	size_t vend;		/* its value's end so far (the line end excluded) */
	size_t body;		/* DONE: where the body starts (the block's length) */
	enum filter_eoh eoh;	/* DONE: how the block ended */
};

/* filter_hparser_init - start a block; clears txn->headers */
void filter_hparser_init(struct filter_hparser *hp, struct filter_txn *txn, size_t max);

/*
 * filter_hparser_feed - parse more of the block.  msg is the message from
 * its first octet, len how much of it is at hand (never less than the last
 * call's), complete whether that is all of it.  Only complete lines are
 * parsed until then.  MORE: call again with more; DONE: txn->headers holds
 * the fields, hp->body and hp->eoh are set; TOO_BIG: a field line ends past
 * hp->max (the fields parsed so far stay in txn).  Never call it again after
 * DONE or TOO_BIG.
 */
enum filter_hparser_status filter_hparser_feed(struct filter_hparser *hp, struct filter_txn *txn,
    const char *msg, size_t len, bool complete);

/*
 * filter_parse_headers - the header block of a whole message in memory,
 * without a size limit (tools, tests); returns where the body starts.
 */
size_t filter_parse_headers(struct filter_txn *txn, const char *msg, size_t len);

/*
 * filter_compose_headers - the header block to send: txn->headers with the
 * edits applied, forged Authentication-Results claiming authserv_id removed,
 * and one Authentication-Results (RFC 8601) from txn->auth_results prepended
 * when any filter recorded results.  Appends to out, CRLF line ends, without
 * the empty separator line; every name is followed by its ':' at once (an
 * obsolete "name WSP* :" goes out as "name:").
 */
void filter_compose_headers(const struct filter_txn *txn, const char *authserv_id, struct buf *out);

/* filter_verdict_name - "reject" etc. for logs. */
const char *filter_verdict_name(enum filter_verdict v);

#endif
