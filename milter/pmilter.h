/*
 * pmilter.h - portier-milter's parts, shared by its files and its unit test.
 *
 *   pmilter_map.c     the pure mapping between libmilter's view and the
 *                     filter API's: the session from the connect arguments
 *                     and the MTA's macros, envelope arguments, the header
 *                     block, the chain's end-of-message work as libmilter
 *                     actions, replies.  No I/O and no libmilter call.
 *   pmilter_loop.c    the private event loops that run the chain for
 *                     libmilter's threads, which want each answer at once.
 *   pmilter_cb.c      the libmilter callbacks, one per stage.
 *   portier_milter.c  the program: options, configuration, socket, signals.
 *
 * Must never: let a verdict the chain did not give reach the MTA, or keep a
 * pointer into libmilter's arguments past a callback.
 */
#ifndef PORTIER_PMILTER_H
#define PORTIER_PMILTER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <netinet/in.h>
#include <arpa/inet.h>

#include "buf.h"
#include "conf.h"
#include "filter.h"

struct workers;
struct smfiDesc;

/* ---- pmilter_map.c ---- */

/* An MTA macro by name ("j", "{auth_authen}"): its value, NULL when unset. */
typedef const char *(*pmilter_macro_fn)(void *arg, const char *name);

/*
 * The filter session and the strings it points to, owned by the connection:
 * pmilter_sess_free frees what the setters copied.  client_addr is
 * "unknown" and the ports 0 when the MTA gave no IP address.
 */
struct pmilter_sess {
	struct filter_session fs;
	char client_addr[INET6_ADDRSTRLEN];
	char local_addr[INET6_ADDRSTRLEN];
	char *client_name;
	char *client_ptr;
	char *helo;
	char *tls_version;
	char *tls_cipher;
	char *tls_subject;
	char *auth_user;
	char *auth_method;
	char *mta_name;		/* the MTA's own name, macro j; NULL if not sent */
};

/* pmilter_sess_init - a session without anything from the MTA yet */
void pmilter_sess_init(struct pmilter_sess *ps, uint64_t id, const struct conf *conf,
    enum conf_role role);
/*
 * pmilter_sess_connect - the connect stage's facts: hostname (the MTA's
 * client name: "unknown" or a bracketed address when it found none), sa
 * (NULL or not IP for a local client), j, {client_ptr}, {daemon_addr} or
 * {if_addr}, and {daemon_port}
 */
void pmilter_sess_connect(struct pmilter_sess *ps, const char *hostname,
    const struct sockaddr *sa, pmilter_macro_fn get, void *arg);
/* pmilter_sess_helo - HELO name, and {tls_version}, {cipher}, {cert_subject} */
void pmilter_sess_helo(struct pmilter_sess *ps, const char *helo, pmilter_macro_fn get,
    void *arg);
/*
 * pmilter_sess_auth - at MAIL: {auth_authen} ({auth_type}) as the session's
 * login.  True when it is a login the chain has not seen (its AUTH stage
 * is owed); a login that went away clears auth_user.
 */
bool pmilter_sess_auth(struct pmilter_sess *ps, pmilter_macro_fn get, void *arg);
void pmilter_sess_free(struct pmilter_sess *ps);

/* pmilter_addr - an envelope address as the MTA passes it ("<a@b>") without its brackets */
char *pmilter_addr(const char *arg);
/* pmilter_params - ESMTP parameters (argv after the address) as "A=b C=d", "" for none */
char *pmilter_params(char *const *argv);

/*
 * pmilter_header - one header callback: "name:value" CRLF appended to raw
 * (the block filters read as received) and the field added to txn->headers.
 * The MTA's line breaks inside value (LF, or CRLF) become CRLF before
 * white space, a space elsewhere.
 */
void pmilter_header(struct filter_txn *txn, struct buf *raw, const char *name,
    const char *value);

/* What the MTA must do at end of message: libmilter's modification actions. */
enum pmilter_op_kind {
	PMILTER_OP_ADD_HEADER,		/* smfi_addheader */
	PMILTER_OP_INSERT_HEADER,	/* smfi_insheader(index) */
	PMILTER_OP_CHANGE_HEADER,	/* smfi_chgheader(index); value NULL deletes */
	PMILTER_OP_REPLACE_BODY,	/* smfi_replacebody */
	PMILTER_OP_CHANGE_FROM,		/* smfi_chgfrom */
	PMILTER_OP_ADD_RCPT,		/* smfi_addrcpt, smfi_addrcpt_par with params */
	PMILTER_OP_DELETE_RCPT,		/* smfi_delrcpt */
};

struct pmilter_op {
	enum pmilter_op_kind kind;
	char *name;		/* header name; or the address, in angle brackets */
	char *value;		/* header value as the MTA takes it (leading space, LF folds); the body */
	size_t value_len;
	unsigned index;		/* INSERT: position (0 top); CHANGE: occurrence (1 first) */
	char *params;		/* CHANGE_FROM, ADD_RCPT: ESMTP parameters, NULL for none */
};

struct pmilter_ops {
	struct pmilter_op *v;
	size_t n;
};

/*
 * pmilter_ops_build - the actions that make the MTA's message what the
 * chain composed: the filters' edits in order; then the received fields
 * filter_compose_headers dropped (forged Authentication-Results claiming
 * authserv_id), found by reading composed (its output for txn) against
 * txn's edited fields; then, at the top, the fields the final stage
 * prepended (top, toplen octets: "Name: value" CRLF fields) and our
 * Authentication-Results, composed's first field when txn has results.
 * Fields a filter gave are cleaned as compose cleans them.  False when
 * composed does not read as txn's fields (nothing dropped then, logged by
 * the caller).
 */
bool pmilter_ops_build(const struct filter_txn *txn, const struct buf *composed,
    const char *top, size_t toplen, struct pmilter_ops *ops);
void pmilter_ops_free(struct pmilter_ops *ops);

/*
 * pmilter_reply_text - a reply's text for smfi_setreply: '%' doubled (the
 * MTA reads it as a format), never empty
 */
void pmilter_reply_text(const struct filter_reply *r, char *out, size_t size);

/* ---- pmilter_loop.c ---- */

struct pmilter_loops;
struct pmilter_loop;

/*
 * pmilter_loops_new - the loops run chains on conf's resolver settings
 * (with a resolver when dns) and hand blocking filters to pool
 */
struct pmilter_loops *pmilter_loops_new(struct workers *pool, const struct conf *conf, bool dns);
/* pmilter_loops_free - every loop was given back; frees them (before the pool) */
void pmilter_loops_free(struct pmilter_loops *lps);
/* pmilter_loop_take - a loop of one's own, until given back (any thread) */
struct pmilter_loop *pmilter_loop_take(struct pmilter_loops *lps);
void pmilter_loop_give(struct pmilter_loops *lps, struct pmilter_loop *l);
/*
 * pmilter_loop_run - filter_run on l, turned until the stage is decided:
 * every verdict, timeout and default_action as on portier's own loops.
 * ctx->resolver is set here.
 */
void pmilter_loop_run(struct pmilter_loop *l, struct filter_state *st, enum filter_stage stage,
    struct filter_ctx *ctx, const char *arg, struct filter_result *res);

/* ---- pmilter_cb.c ---- */

/* What the callbacks serve: set once before smfi_main, read-only afterwards. */
struct pmilter_server {
	const struct conf *conf;
	const struct conf_listener *l;	/* [milter-server]: role, limits */
	const struct filter_chain *chain;
	struct pmilter_loops *loops;
	const char *authserv_id;	/* [server] hostname when set; NULL: the MTA's j */
};

/* pmilter_cb_desc - the callbacks, for smfi_register, serving srv */
void pmilter_cb_desc(const struct pmilter_server *srv, struct smfiDesc *desc);
/*
 * pmilter_cb_shutdown - after smfi_main: no callback runs any more (those
 * running get drain_seconds), and the connections libmilter left open are
 * closed through the chain.  False when some callback did not end in time:
 * then nothing shared may be freed.
 */
bool pmilter_cb_shutdown(unsigned drain_seconds);

#endif
