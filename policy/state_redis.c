/*
 * state_redis.c - the Redis back of the shared-state store (state.h):
 * hiredis async on each event loop, one connection per loop, one script
 * call (EVALSHA) per call.  The scripts compute on the server, with the
 * server's clock, what the memory store computes in state.c, so every node
 * of a fleet counts in the same windows and sees the same triplets.
 *
 * Every call is owned: its handle lives until hiredis hands back its reply
 * or drops it (the connection closed or was freed: a NULL reply), and only
 * then is freed; done runs at most once, never after state_redis_cancel.
 * A call that waits longer than [redis] timeout fails, and its connection
 * is dropped with every call on it (a hung server would hold them all): the
 * next call reconnects, at most once a second per loop.  Calls in between
 * fail at once.  AUTH, SELECT and SCRIPT LOAD go first on each new
 * connection; the calls are EVALSHA, and a call whose script the server
 * lost (NOSCRIPT) is sent once more with the whole script.
 *
 * hiredis 0.14 (Debian 12) resolves names while connecting: the address is
 * resolved once here, at start, and hiredis only ever sees a numeric one.
 * It has no TLS (conf.c refuses [redis] tls).
 *
 * Must never block a loop, never log a key or the password.
 */
#include "config.h"

#include <sys/socket.h>
#include <sys/un.h>

#include <arpa/inet.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <event2/event.h>
#include <hiredis/hiredis.h>
#include <hiredis/async.h>
#include <hiredis/adapters/libevent.h>
#include <openssl/sha.h>

#include "conf.h"
#include "log.h"
#include "util.h"
#include "filter.h"
#include "state_priv.h"

#define REDIS_RETRY_MS		1000	/* a loop reconnects at most this often */
#define REDIS_ERROR_MAX		120	/* octets of a server's error kept for the caller */

/*
 * state_count: for each key, the adds of the steps whose last second is
 * within its window and the seconds until the oldest of them leaves it:
 * {sum1, reset1, sum2, reset2, ...}; state.c's mem_count does the same in
 * memory.  One hash per counter, a field per step; steps that left the
 * window are deleted as they are seen.
 */
static const char redis_count_script[] =
	"redis.replicate_commands() "
	"local now = tonumber(redis.call('TIME')[1]) "
	"local add, out = tonumber(ARGV[1]), {} "
	"for k = 1, #KEYS do "
	" local w = tonumber(ARGV[k + 1]) "
	" local width = math.ceil(w / 16) "
	" local step = math.floor(now / width) "
	" local h = KEYS[k] .. '#' .. w "
	" if add > 0 then "
	"  redis.call('HINCRBY', h, step, add) "
	"  redis.call('EXPIREAT', h, (step + 1) * width + w) "
	" end "
	" local f = redis.call('HGETALL', h) "
	" local sum, oldest, old = 0, -1, {} "
	" for i = 1, #f, 2 do "
	"  local st, v = tonumber(f[i]), tonumber(f[i + 1]) "
	"  if (st + 1) * width - 1 <= now - w then old[#old + 1] = f[i] "
	"  elseif st <= step then "
	"   sum = sum + v "
	"   if oldest < 0 or st < oldest then oldest = st end "
	"  end "
	" end "
	" if #old > 0 then redis.call('HDEL', h, unpack(old)) end "
	" local reset = 1 "
	" if oldest >= 0 then reset = math.max((oldest + 1) * width - 1 + w - now, 1) end "
	" out[#out + 1] = sum "
	" out[#out + 1] = reset "
	"end "
	"return out";

/*
 * state_grey: returns {verdict, wait}; a triplet's value is its first-seen
 * time, or "p" once it passed (the memory store's MEM_PASSED)
 */
static const char redis_grey_script[] =
	"redis.replicate_commands() "
	"local now = tonumber(redis.call('TIME')[1]) "
	"local delay, rw = tonumber(ARGV[1]), tonumber(ARGV[2]) "
	"local life, n = tonumber(ARGV[3]), tonumber(ARGV[4]) "
	"if n > 0 and tonumber(redis.call('GET', KEYS[2]) or '0') >= n then return {3, 0} end "
	"local v = redis.call('GET', KEYS[1]) "
	"if not v and delay > 0 then redis.call('SET', KEYS[1], now, 'EX', rw) return {0, delay} end "
	"v = v or now "
	"if v == 'p' then redis.call('EXPIRE', KEYS[1], life) return {2, 0} end "
	"local age = now - tonumber(v) "
	"if age < 0 then return {1, delay} end "
	"if age < delay then return {1, delay - age} end "
	"redis.call('SET', KEYS[1], 'p', 'EX', life) "
	"if n > 0 then redis.call('INCR', KEYS[2]) redis.call('EXPIRE', KEYS[2], life) end "
	"return {2, 0}";

struct redis_conn {
	struct state_redis *r;
	struct event_base *base;
	redisAsyncContext *ac;		/* NULL: down */
	bool up;			/* connected (the connect callback said so) */
	bool down_logged;		/* event=redis_down said since the last up */
	unsigned long long retry_at;	/* now_ms() before which no reconnect */
	struct redis_conn *next;
};

/* EVALSHA sha nkeys, then state_count_many's keys, add and windows (more than state_grey's) */
#define REDIS_ARGV_MAX	(3 + STATE_COUNT_MAX + 1 + STATE_COUNT_MAX)

struct state_op {
	struct redis_conn *c;
	enum state_call call;
	const char *argv[REDIS_ARGV_MAX];	/* [3..] owned: the keys and arguments */
	size_t argc;
	bool retried;			/* sent again with EVAL after NOSCRIPT */
	size_t nkeys;
	unsigned windows[STATE_COUNT_MAX];	/* STATE_CALL_COUNT: to check the replies */
	state_done_fn done;		/* NULL once cancelled or answered */
	void *arg;
	struct event *timer;
	const char *why;		/* set by the timer: why the reply will be NULL */
};

struct state_redis {
	char *server;			/* as configured, for logs */
	char *host;			/* numeric, or the unix socket's path */
	int port;			/* 0: unix socket */
	char *user, *password, *prefix;
	unsigned database;
	unsigned timeout;
	char sha[2][2 * SHA_DIGEST_LENGTH + 1];	/* per enum state_call: its script's SHA1 */
	pthread_mutex_t mu;		/* conns */
	struct redis_conn *conns;
};

/* redis_sha - the SHA1 a script is known by to EVALSHA and SCRIPT LOAD, in hex */
static void
redis_sha(const char *script, char hex[2 * SHA_DIGEST_LENGTH + 1])
{
	unsigned char md[SHA_DIGEST_LENGTH];
	size_t i;

	SHA1((const unsigned char *)script, strlen(script), md);
	for (i = 0; i < sizeof(md); i++)
		snprintf(hex + 2 * i, 3, "%02x", md[i]);
}

/* state_redis_new - resolve conf's [redis] server now; no connection yet */
struct state_redis *
state_redis_new(const struct conf *conf, char **err_r)
{
	const char *v = conf->redis_server;
	struct sockaddr_storage sa;
	socklen_t len;
	char host[INET6_ADDRSTRLEN], *spec;
	struct state_redis *r;
	bool ok;

	if (strncmp(v, "unix:", 5) == 0 || strncmp(v, "inet:", 5) == 0 ||
	    strncmp(v, "inet6:", 6) == 0)
		spec = xstrdup(v);
	else
		spec = xasprintf("%s:%s", v[0] == '[' ? "inet6" : "inet", v);
	ok = filter_parse_socket(spec, &sa, &len, err_r);
	free(spec);
	if (!ok)
		return NULL;
	r = xcalloc(1, sizeof(*r));
	if (sa.ss_family == AF_UNIX) {
		r->host = xstrdup(((struct sockaddr_un *)&sa)->sun_path);
	} else {
		if (!sockaddr_text((struct sockaddr *)&sa, host, sizeof(host)))
			fatal("state_redis_new: an address without text");
		r->host = xstrdup(host);
		r->port = (int)sockaddr_port((struct sockaddr *)&sa);
	}
	if (pthread_mutex_init(&r->mu, NULL) != 0)
		fatal("state_redis_new: pthread_mutex_init failed");
	r->server = xstrdup(v);
	r->user = conf->redis_user != NULL ? xstrdup(conf->redis_user) : NULL;
	r->password = conf->redis_password != NULL ? xstrdup(conf->redis_password) : NULL;
	r->prefix = xstrdup(conf->redis_prefix != NULL ? conf->redis_prefix : "portier:");
	r->database = conf->redis_database;
	r->timeout = conf->redis_timeout > 0 ? conf->redis_timeout : STATE_REDIS_TIMEOUT;
	redis_sha(redis_count_script, r->sha[STATE_CALL_COUNT]);
	redis_sha(redis_grey_script, r->sha[STATE_CALL_GREY]);
	return r;
}

/* redis_conn_lost - c's context is gone (hiredis frees it, or did): down until retry_at */
static void
redis_conn_lost(struct redis_conn *c, const char *why)
{
	c->ac = NULL;
	c->up = false;
	c->retry_at = now_ms() + REDIS_RETRY_MS;
	if (!c->down_logged) {
		log_warn("event=redis_down server=%s error=\"%s\" retry=1s", c->r->server, why);
		c->down_logged = true;
	}
}

/* redis_connect_cb - hiredis: the connection is up, or failed (then freed by hiredis) */
static void
redis_connect_cb(const redisAsyncContext *ac, int status)
{
	struct redis_conn *c = ac->data;

	if (c == NULL || c->ac != ac)
		return;
	if (status != REDIS_OK) {
		redis_conn_lost(c, ac->errstr[0] != '\0' ? ac->errstr : "connect failed");
		return;
	}
	c->up = true;
	if (c->down_logged)
		log_info("event=redis_up server=%s", c->r->server);
	c->down_logged = false;
}

/* redis_disconnect_cb - hiredis: the connection closed; it frees the context */
static void
redis_disconnect_cb(const redisAsyncContext *ac, int status)
{
	struct redis_conn *c = ac->data;

	if (c == NULL || c->ac != ac)
		return;		/* we dropped it ourselves */
	redis_conn_lost(c, status == REDIS_OK ? "closed by the server" :
	    ac->errstr[0] != '\0' ? ac->errstr : "connection lost");
}

/* redis_setup_cb - the reply to AUTH or SELECT: an error is logged (the calls will fail) */
static void
redis_setup_cb(redisAsyncContext *ac, void *reply, void *privdata)
{
	redisReply *rep = reply;
	struct redis_conn *c = ac->data;

	if (rep != NULL && rep->type == REDIS_REPLY_ERROR && c != NULL)
		log_warn("event=redis_setup_failed server=%s command=%s error=\"%.*s\"",
		    c->r->server, (const char *)privdata, REDIS_ERROR_MAX, rep->str);
}

/* redis_connect - a new context for c (the connection completes later); false if none */
static bool
redis_connect(struct redis_conn *c, const char **why_r)
{
	struct state_redis *r = c->r;
	redisAsyncContext *ac;
	char db[16];

	ac = r->port == 0 ? redisAsyncConnectUnix(r->host) : redisAsyncConnect(r->host, r->port);
	if (ac == NULL) {
		*why_r = "redis: out of memory";
		return false;
	}
	if (ac->err != 0) {
		redis_conn_lost(c, ac->errstr);
		redisAsyncFree(ac);
		*why_r = "redis: unreachable";
		return false;
	}
	ac->data = c;
	c->ac = ac;
	c->up = false;
	if (redisLibeventAttach(ac, c->base) != REDIS_OK) {
		c->ac = NULL;
		ac->data = NULL;
		redisAsyncFree(ac);
		*why_r = "redis: cannot attach to the loop";
		return false;
	}
	redisAsyncSetConnectCallback(ac, redis_connect_cb);
	redisAsyncSetDisconnectCallback(ac, redis_disconnect_cb);
	if (r->password != NULL) {
		const char *argv[3] = { "AUTH", r->user != NULL ? r->user : r->password,
		    r->password };

		redisAsyncCommandArgv(ac, redis_setup_cb, (void *)"AUTH", r->user != NULL ? 3 : 2,
		    argv, NULL);
	}
	if (r->database != 0) {
		snprintf(db, sizeof(db), "%u", r->database);
		redisAsyncCommand(ac, redis_setup_cb, (void *)"SELECT", "SELECT %s", db);
	}
	/* The calls go as EVALSHA: the scripts are sent once per connection. */
	redisAsyncCommand(ac, redis_setup_cb, (void *)"SCRIPT LOAD", "SCRIPT LOAD %s",
	    redis_count_script);
	redisAsyncCommand(ac, redis_setup_cb, (void *)"SCRIPT LOAD", "SCRIPT LOAD %s",
	    redis_grey_script);
	return true;
}

/* redis_conn_of - base's connection record (made on first use) */
static struct redis_conn *
redis_conn_of(struct state_redis *r, struct event_base *base)
{
	struct redis_conn *c;

	pthread_mutex_lock(&r->mu);
	for (c = r->conns; c != NULL; c = c->next)
		if (c->base == base)
			break;
	if (c == NULL) {
		c = xcalloc(1, sizeof(*c));
		c->r = r;
		c->base = base;
		c->next = r->conns;
		r->conns = c;
	}
	pthread_mutex_unlock(&r->mu);
	return c;
}

/* redis_drop - free c's context: every call on it completes (NULL replies) */
static void
redis_drop(struct redis_conn *c, const char *why)
{
	redisAsyncContext *ac = c->ac;

	if (ac == NULL)
		return;
	redis_conn_lost(c, why);
	ac->data = NULL;
	redisAsyncFree(ac);
}

/* redis_op_free - the call is over */
static void
redis_op_free(struct state_op *op)
{
	size_t i;

	if (op->timer != NULL)
		event_free(op->timer);
	for (i = 3; i < op->argc; i++)
		free((char *)op->argv[i]);
	free(op);
}

/* redis_int - element i of an integer array reply, or -1 */
static long long
redis_int(const redisReply *rep, size_t i)
{
	if (rep->type != REDIS_REPLY_ARRAY || i >= rep->elements ||
	    rep->element[i]->type != REDIS_REPLY_INTEGER)
		return -1;
	return rep->element[i]->integer;
}

/* redis_parse - a script's reply into *out; false + out->error when it is not one */
static bool
redis_parse(const struct state_op *op, const redisReply *rep, struct state_reply *out)
{
	long long a = redis_int(rep, 0), b = redis_int(rep, 1);
	size_t i;

	if (op->call == STATE_CALL_COUNT) {
		if (rep->type != REDIS_REPLY_ARRAY || rep->elements != 2 * op->nkeys)
			return false;
		for (i = 0; i < op->nkeys; i++) {
			a = redis_int(rep, 2 * i);
			b = redis_int(rep, 2 * i + 1);
			if (a < 0 || b < 1 || b > 2 * (long long)op->windows[i] + 1)
				return false;
			out->counts[i].count = (uint64_t)a;
			out->counts[i].reset = (unsigned)b;
		}
		return true;
	}
	if (a < STATE_GREY_NEW || a > STATE_GREY_ALLOWED || b < 0 || b > (long long)UINT32_MAX)
		return false;
	out->grey.verdict = (enum state_grey_verdict)a;
	out->grey.wait = (unsigned)b;
	return true;
}

/* redis_reply_cb - hiredis: a call's reply, or NULL when its connection went */
static void
redis_reply_cb(redisAsyncContext *ac, void *reply, void *privdata)
{
	struct state_op *op = privdata;
	redisReply *rep = reply;
	struct state_reply out;
	char err[REDIS_ERROR_MAX + 16];
	state_done_fn done = op->done;

	if (rep != NULL && rep->type == REDIS_REPLY_ERROR && !op->retried &&
	    strncmp(rep->str, "NOSCRIPT", 8) == 0) {
		/* The server lost the script (SCRIPT FLUSH): send it whole, once. */
		op->retried = true;
		op->argv[0] = "EVAL";
		op->argv[1] = op->call == STATE_CALL_COUNT ? redis_count_script : redis_grey_script;
		if (redisAsyncCommandArgv(ac, redis_reply_cb, op, (int)op->argc, op->argv,
		    NULL) == REDIS_OK)
			return;
	}
	memset(&out, 0, sizeof(out));
	if (rep == NULL) {
		out.error = op->why != NULL ? op->why : "redis: connection lost";
	} else if (rep->type == REDIS_REPLY_ERROR) {
		snprintf(err, sizeof(err), "redis: %.*s", REDIS_ERROR_MAX, rep->str);
		out.error = err;
	} else if (!redis_parse(op, rep, &out)) {
		out.error = "redis: unexpected reply";
	}
	op->done = NULL;
	if (op->timer != NULL)
		evtimer_del(op->timer);
	if (done != NULL)
		done(op->arg, &out);
	redis_op_free(op);
}

/* redis_timeout_cb - a call waited [redis] timeout: drop the connection and its calls */
static void
redis_timeout_cb(evutil_socket_t fd, short what, void *arg)
{
	struct state_op *op = arg;

	(void)fd;
	(void)what;
	op->why = "redis: timeout";
	redis_drop(op->c, "timeout");	/* runs redis_reply_cb for op, which frees it */
}

/* EVALSHA's numkeys, by the number of keys */
static const char *const redis_nkeys[] = { "0", "1", "2", "3", "4" };
_Static_assert(sizeof(redis_nkeys) / sizeof(redis_nkeys[0]) == STATE_COUNT_MAX + 1,
    "redis_nkeys names every count of keys up to STATE_COUNT_MAX");

/* state_redis_call - one EVALSHA on base's connection (state_priv.h) */
struct state_op *
state_redis_call(struct state_redis *r, struct event_base *base, enum state_call call,
    const char *const *keys, size_t nkeys, const unsigned *args, size_t nargs,
    struct state_reply *rep, state_done_fn done, void *arg)
{
	struct redis_conn *c;
	struct state_op *op;
	struct timeval tv = { 0, 0 };
	size_t i;

	if (base == NULL) {
		rep->error = "redis: no event loop";
		return NULL;
	}
	if (nkeys > STATE_COUNT_MAX || 3 + nkeys + nargs > REDIS_ARGV_MAX) {
		rep->error = "redis: too many arguments";
		return NULL;
	}
	c = redis_conn_of(r, base);
	if (c->ac == NULL) {
		if (now_ms() < c->retry_at) {
			rep->error = "redis: unreachable";
			return NULL;
		}
		if (!redis_connect(c, &rep->error))
			return NULL;
	}
	op = xcalloc(1, sizeof(*op));
	op->c = c;
	op->call = call;
	op->nkeys = nkeys;
	for (i = 0; call == STATE_CALL_COUNT && i < nkeys && i + 1 < nargs; i++)
		op->windows[i] = args[1 + i];
	op->done = done;
	op->arg = arg;
	op->argv[op->argc++] = "EVALSHA";
	op->argv[op->argc++] = r->sha[call];
	op->argv[op->argc++] = redis_nkeys[nkeys];
	for (i = 0; i < nkeys; i++)
		op->argv[op->argc++] = xasprintf("%s%s", r->prefix, keys[i]);
	for (i = 0; i < nargs; i++)
		op->argv[op->argc++] = xasprintf("%u", args[i]);
	if (redisAsyncCommandArgv(c->ac, redis_reply_cb, op, (int)op->argc, op->argv, NULL) !=
	    REDIS_OK) {
		redis_op_free(op);
		rep->error = "redis: cannot send";
		return NULL;
	}
	op->timer = evtimer_new(base, redis_timeout_cb, op);
	tv.tv_sec = r->timeout;
	evtimer_add(op->timer, &tv);
	return op;
}

/* state_redis_cancel - done will not run; the handle goes with its reply */
void
state_redis_cancel(struct state_op *op)
{
	op->done = NULL;
}

/* state_redis_base_gone - close base's connection (on base's loop, before it is freed) */
void
state_redis_base_gone(struct state_redis *r, struct event_base *base)
{
	struct redis_conn **pp, *c;

	pthread_mutex_lock(&r->mu);
	for (c = r->conns; c != NULL; c = c->next)
		if (c->base == base)
			break;
	pthread_mutex_unlock(&r->mu);
	if (c == NULL)
		return;
	/*
	 * Calls that complete now may start others on this loop: they find it
	 * down (retry_at ahead) and fail at once, so nothing reconnects here.
	 */
	c->down_logged = true;		/* a loop that ends is no outage */
	redis_drop(c, "loop ended");
	c->retry_at = (unsigned long long)-1;
	pthread_mutex_lock(&r->mu);
	for (pp = &r->conns; *pp != c; pp = &(*pp)->next)
		;
	*pp = c->next;
	pthread_mutex_unlock(&r->mu);
	free(c);
}

/* state_redis_free - at exit: every loop's connection is gone already */
void
state_redis_free(struct state_redis *r)
{
	struct redis_conn *c, *next;

	for (c = r->conns; c != NULL; c = next) {
		next = c->next;
		free(c);	/* its loop is freed: its context cannot be touched */
	}
	pthread_mutex_destroy(&r->mu);
	free(r->server);
	free(r->host);
	free(r->user);
	free(r->password);
	free(r->prefix);
	free(r);
}
