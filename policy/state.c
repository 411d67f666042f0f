/*
 * state.c - the shared-state store's interface (state.h) and its memory
 * store: one hash table of keys with a value and an expiry, under one
 * mutex, bounded by [server] state_entries (a new key evicts expired ones,
 * then the least recently touched).  Keys are hashed with SipHash under a
 * per-process random key: clients choose what goes into them.
 *
 * The memory store keeps time on the monotonic clock, so a wall clock that
 * steps (NTP, an operator) changes no window and lets no triplet pass
 * early.  It answers every call at once and never keeps a handle.  The
 * Redis store is state_redis.c's; the same semantics, computed by scripts
 * on the server.
 *
 * Must never block on anything but its own mutex, never log a key.
 */
#include "config.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/evp.h>

#include "conf.h"
#include "log.h"
#include "util.h"
#include "state.h"
#include "state_priv.h"

#define MEM_BUCKETS_MIN	256
#define MEM_PURGE	16	/* expired entries dropped per new one, at most */
#define MEM_PASSED	(-1)	/* a greylisting triplet's value once it passed */
#define MAX_INT64(a, b)	((a) > (b) ? (a) : (b))

struct mem_entry {
	struct mem_entry *hnext;	/* hash chain */
	struct mem_entry *prev;		/* LRU: towards the most recently touched */
	struct mem_entry *next;		/* LRU: towards the stalest */
	uint64_t hash;
	int64_t expires;		/* on the store's clock */
	int64_t value;
	char key[];
};

struct state {
	char *name;			/* "memory", "redis 127.0.0.1:6379" */
	char *server;			/* [redis] server, NULL for memory */
	bool fail_open;
	struct state_redis *redis;	/* NULL: the memory store */

	pthread_mutex_t mu;		/* memory store: everything below */
	int64_t (*clock)(void);
	size_t cap, n, nbuckets;
	struct mem_entry **buckets;
	struct mem_entry *lru_head, *lru_tail;
	uint8_t seed[16];
};

static pthread_mutex_t state_mu = PTHREAD_MUTEX_INITIALIZER;
static struct state *state_global;

/* --- the memory store ---------------------------------------------------------- */

/* mem_clock - seconds on the monotonic clock, from 1 */
static int64_t
mem_clock(void)
{
	return (int64_t)(now_ms() / 1000) + 1;
}

/* mem_lru_unlink - take e out of the LRU list */
static void
mem_lru_unlink(struct state *st, struct mem_entry *e)
{
	if (e->prev != NULL)
		e->prev->next = e->next;
	else
		st->lru_head = e->next;
	if (e->next != NULL)
		e->next->prev = e->prev;
	else
		st->lru_tail = e->prev;
}

/* mem_unlink - take e out of its chain and the LRU list (not freed) */
static void
mem_unlink(struct state *st, struct mem_entry *e)
{
	struct mem_entry **pp = &st->buckets[e->hash & (st->nbuckets - 1)];

	while (*pp != e)
		pp = &(*pp)->hnext;
	*pp = e->hnext;
	mem_lru_unlink(st, e);
	st->n--;
}

/* mem_remove - unlink and free e */
static void
mem_remove(struct state *st, struct mem_entry *e)
{
	mem_unlink(st, e);
	free(e);
}

/* mem_front - make e the most recently touched */
static void
mem_front(struct state *st, struct mem_entry *e)
{
	e->prev = NULL;
	e->next = st->lru_head;
	if (st->lru_head != NULL)
		st->lru_head->prev = e;
	st->lru_head = e;
	if (st->lru_tail == NULL)
		st->lru_tail = e;
}

/* mem_grow - double the buckets */
static void
mem_grow(struct state *st)
{
	size_t i, nn = st->nbuckets * 2;
	struct mem_entry **nb = xcalloc(nn, sizeof(*nb)), *e, *next;

	for (i = 0; i < st->nbuckets; i++)
		for (e = st->buckets[i]; e != NULL; e = next) {
			next = e->hnext;
			e->hnext = nb[e->hash & (nn - 1)];
			nb[e->hash & (nn - 1)] = e;
		}
	free(st->buckets);
	st->buckets = nb;
	st->nbuckets = nn;
}

/* mem_find - key's (hash h) live entry, touched; an expired one is dropped.  NULL if none. */
static struct mem_entry *
mem_find(struct state *st, const char *key, uint64_t h, int64_t now)
{
	struct mem_entry *e;

	for (e = st->buckets[h & (st->nbuckets - 1)]; e != NULL; e = e->hnext)
		if (e->hash == h && strcmp(e->key, key) == 0)
			break;
	if (e == NULL)
		return NULL;
	if (e->expires <= now) {
		mem_remove(st, e);
		return NULL;
	}
	mem_lru_unlink(st, e);
	mem_front(st, e);
	return e;
}

/* mem_lookup - mem_find by key alone */
static struct mem_entry *
mem_lookup(struct state *st, const char *key, int64_t now)
{
	return mem_find(st, key, siphash24(st->seed, key, strlen(key)), now);
}

/* mem_make_room - drop a few expired entries from the stale end, then the stalest if full */
static void
mem_make_room(struct state *st, int64_t now)
{
	struct mem_entry *e, *prev;
	int i;

	for (i = 0, e = st->lru_tail; i < MEM_PURGE && e != NULL; i++, e = prev) {
		prev = e->prev;
		if (e->expires <= now)
			mem_remove(st, e);
	}
	while (st->n >= st->cap && st->lru_tail != NULL)
		mem_remove(st, st->lru_tail);
}

/* mem_get - key's live entry, or a new one with value 0 expiring at expires */
static struct mem_entry *
mem_get(struct state *st, const char *key, int64_t now, int64_t expires)
{
	size_t len = strlen(key), b;
	uint64_t h = siphash24(st->seed, key, len);
	struct mem_entry *e = mem_find(st, key, h, now);

	if (e != NULL)
		return e;
	mem_make_room(st, now);
	if (st->n >= st->nbuckets)
		mem_grow(st);
	e = xcalloc(1, sizeof(*e) + len + 1);
	memcpy(e->key, key, len + 1);
	e->hash = h;
	e->expires = expires;
	b = h & (st->nbuckets - 1);
	e->hnext = st->buckets[b];
	st->buckets[b] = e;
	mem_front(st, e);
	st->n++;
	return e;
}

/* state_step_key - "KEY#WINDOW:STEP", the counter of one step (the Redis script's too) */
static void
state_step_key(char *dst, size_t size, const char *key, unsigned window, int64_t step)
{
	snprintf(dst, size, "%s#%u:%lld", key, window, (long long)step);
}

/* mem_count - state_count on the memory store: the steps whose last second is in the window */
static void
mem_count(struct state *st, const char *key, unsigned add, unsigned window,
    struct state_count *out)
{
	char k[STATE_KEY_MAX + 48];
	int64_t now, width = ((int64_t)window + STATE_STEPS - 1) / STATE_STEPS, step, i;
	int64_t oldest = -1;
	struct mem_entry *e;
	uint64_t sum = 0;

	pthread_mutex_lock(&st->mu);
	now = st->clock();
	step = now / width;
	if (add > 0) {
		state_step_key(k, sizeof(k), key, window, step);
		e = mem_get(st, k, now, (step + 1) * width + window);
		e->value += add;
	}
	for (i = step - STATE_STEPS; i <= step; i++) {
		if (i < 0 || (i + 1) * width - 1 <= now - (int64_t)window)
			continue;
		state_step_key(k, sizeof(k), key, window, i);
		if ((e = mem_lookup(st, k, now)) != NULL && e->value > 0) {
			sum += (uint64_t)e->value;
			if (oldest < 0)
				oldest = i;
		}
	}
	out->count = sum;
	out->reset = oldest < 0 ? 1 : (unsigned)MAX_INT64((oldest + 1) * width - 1 + window - now, 1);
	pthread_mutex_unlock(&st->mu);
}

/* mem_grey - state_grey on the memory store */
static void
mem_grey(struct state *st, const char *key, const char *client_key,
    const struct state_grey_params *p, struct state_grey *out)
{
	struct mem_entry *e, *c;
	int64_t now, age;

	pthread_mutex_lock(&st->mu);
	now = st->clock();
	memset(out, 0, sizeof(*out));
	if (p->auto_allow > 0 && (c = mem_lookup(st, client_key, now)) != NULL &&
	    c->value >= (int64_t)p->auto_allow) {
		out->verdict = STATE_GREY_ALLOWED;
		goto done;
	}
	if ((e = mem_lookup(st, key, now)) == NULL) {
		e = mem_get(st, key, now, now + p->retry_window);
		e->value = now;
		if (p->delay > 0) {
			out->verdict = STATE_GREY_NEW;
			out->wait = p->delay;
			goto done;
		}
		/* delay 0: the first try is already after the delay */
	}
	if (e->value == MEM_PASSED) {
		e->expires = now + p->lifetime;
		out->verdict = STATE_GREY_PASSED;
		goto done;
	}
	age = now - e->value;
	if (age < (int64_t)p->delay) {
		out->verdict = STATE_GREY_EARLY;
		out->wait = age < 0 ? p->delay : p->delay - (unsigned)age;
		goto done;
	}
	e->value = MEM_PASSED;
	e->expires = now + p->lifetime;
	out->verdict = STATE_GREY_PASSED;
	if (p->auto_allow > 0) {
		c = mem_get(st, client_key, now, now + p->lifetime);
		c->value++;
		c->expires = now + p->lifetime;
	}
done:
	pthread_mutex_unlock(&st->mu);
}

/* --- the interface --------------------------------------------------------------- */

/* state_client_key - the counting key of a client address (state.h) */
void
state_client_key(const char *ip, char *key, size_t size)
{
	unsigned char bin[sizeof(struct in6_addr)];
	char text[INET6_ADDRSTRLEN];
	static const unsigned char mapped[12] = { 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff };

	if (inet_pton(AF_INET, ip, bin) == 1 && inet_ntop(AF_INET, bin, key, size) != NULL)
		return;
	if (inet_pton(AF_INET6, ip, bin) == 1) {
		if (memcmp(bin, mapped, sizeof(mapped)) == 0 &&
		    inet_ntop(AF_INET, bin + 12, key, size) != NULL)
			return;
		memset(bin + 8, 0, 8);
		if (inet_ntop(AF_INET6, bin, text, sizeof(text)) != NULL &&
		    (size_t)snprintf(key, size, "%s/64", text) < size)
			return;
	}
	str_copy(key, ip, size);	/* truncation is fine for odd keys */
}

/* state_key_digest - the first nbytes of data's SHA-256 in hex (state.h) */
void
state_key_digest(const void *data, size_t len, size_t nbytes, char *out)
{
	static const char hex[] = "0123456789abcdef";
	unsigned char md[EVP_MAX_MD_SIZE];
	unsigned mdlen = 0;
	size_t i;

	if (EVP_Digest(data, len, md, &mdlen, EVP_sha256(), NULL) != 1 || nbytes > mdlen)
		fatal("state_key_digest: SHA-256 failed");
	for (i = 0; i < nbytes; i++) {
		out[2 * i] = hex[md[i] >> 4];
		out[2 * i + 1] = hex[md[i] & 0xf];
	}
	out[2 * nbytes] = '\0';
}

/* state_new - the store conf asks for; a Redis one whose address fails falls back to memory */
static struct state *
state_new(const struct conf *conf)
{
	struct state *st = xcalloc(1, sizeof(*st));
	char *err = NULL;

	if (pthread_mutex_init(&st->mu, NULL) != 0)
		fatal("state_new: pthread_mutex_init failed");
	st->clock = mem_clock;
	st->cap = conf->state_entries > 0 ? conf->state_entries : STATE_MEMORY_ENTRIES;
	st->nbuckets = MEM_BUCKETS_MIN;
	st->buckets = xcalloc(st->nbuckets, sizeof(*st->buckets));
	siphash_seed(st->seed);
	st->fail_open = conf->redis_on_error == NULL || strcmp(conf->redis_on_error, "open") == 0;
	if (conf->redis_server != NULL) {
		st->server = xstrdup(conf->redis_server);
		st->redis = state_redis_new(conf, &err);
		if (st->redis == NULL) {
			/* conf.c checked the syntax: only a name that no longer resolves gets here */
			log_warn("event=redis_unusable server=%s error=\"%s\" store=memory",
			    conf->redis_server, err);
			free(err);
		}
	}
	st->name = st->redis != NULL ? xasprintf("redis %s", conf->redis_server) :
	    xstrdup("memory");
	return st;
}

/* state_get - the process's store, made on the first call */
struct state *
state_get(const struct conf *conf)
{
	struct state *st;
	const char *want = conf->redis_server;

	pthread_mutex_lock(&state_mu);
	if (state_global == NULL)
		state_global = state_new(conf);
	st = state_global;
	if ((want == NULL) != (st->server == NULL) ||
	    (want != NULL && strcmp(want, st->server) != 0))
		log_warn("event=redis_reload_ignored store=\"%s\" configured=%s "
		    "reason=\"[redis] server changes on restart only\"", st->name,
		    want != NULL ? want : "memory");
	pthread_mutex_unlock(&state_mu);
	return st;
}

const char *
state_name(const struct state *st)
{
	return st->name;
}

bool
state_is_redis(const struct state *st)
{
	return st->redis != NULL;
}

bool
state_fail_open(const struct state *st)
{
	return st->fail_open;
}

/* state_count - a sliding-window counter (state.h) */
struct state_op *
state_count(struct state *st, struct event_base *base, const char *key, unsigned add,
    unsigned window, struct state_reply *rep, state_done_fn done, void *arg)
{
	return state_count_many(st, base, 1, &key, &window, add, rep, done, arg);
}

/* state_count_many - n sliding-window counters in one call (state.h) */
struct state_op *
state_count_many(struct state *st, struct event_base *base, size_t n, const char *const *keys,
    const unsigned *windows, unsigned add, struct state_reply *rep, state_done_fn done,
    void *arg)
{
	unsigned args[1 + STATE_COUNT_MAX];
	size_t i;

	memset(rep, 0, sizeof(*rep));
	if (n < 1 || n > STATE_COUNT_MAX) {
		rep->error = "bad number of counters";
		return NULL;
	}
	args[0] = add;
	for (i = 0; i < n; i++) {
		if (strlen(keys[i]) > STATE_KEY_MAX) {
			rep->error = "key too long";
			return NULL;
		}
		args[1 + i] = windows[i] > 0 ? windows[i] : 1;
	}
	if (st->redis == NULL) {
		for (i = 0; i < n; i++)
			mem_count(st, keys[i], add, args[1 + i], &rep->counts[i]);
		return NULL;
	}
	return state_redis_call(st->redis, base, STATE_CALL_COUNT, keys, n, args, 1 + n, rep,
	    done, arg);
}

/* state_grey - a greylisting triplet (state.h) */
struct state_op *
state_grey(struct state *st, struct event_base *base, const char *key, const char *client_key,
    const struct state_grey_params *p, struct state_reply *rep, state_done_fn done, void *arg)
{
	const char *keys[2] = { key, client_key };
	unsigned args[4] = { p->delay, p->retry_window, p->lifetime, p->auto_allow };

	memset(rep, 0, sizeof(*rep));
	if (strlen(key) > STATE_KEY_MAX || strlen(client_key) > STATE_KEY_MAX) {
		rep->error = "key too long";
		return NULL;
	}
	if (st->redis == NULL) {
		mem_grey(st, key, client_key, p, &rep->grey);
		return NULL;
	}
	return state_redis_call(st->redis, base, STATE_CALL_GREY, keys, 2, args, 4, rep, done,
	    arg);
}

void
state_cancel(struct state_op *op)
{
	if (op != NULL)
		state_redis_cancel(op);
}

/* state_base_gone - drop base's Redis connection, if the store has one */
void
state_base_gone(struct event_base *base)
{
	struct state *st;

	pthread_mutex_lock(&state_mu);
	st = state_global;
	pthread_mutex_unlock(&state_mu);
	if (st != NULL && st->redis != NULL)
		state_redis_base_gone(st->redis, base);
}

/* state_shutdown - free the store; every loop is gone */
void
state_shutdown(void)
{
	struct state *st;

	pthread_mutex_lock(&state_mu);
	st = state_global;
	state_global = NULL;
	pthread_mutex_unlock(&state_mu);
	if (st == NULL)
		return;
	if (st->redis != NULL)
		state_redis_free(st->redis);
	while (st->lru_tail != NULL)
		mem_remove(st, st->lru_tail);
	free(st->buckets);
	pthread_mutex_destroy(&st->mu);
	free(st->name);
	free(st->server);
	free(st);
}

/* state_memory_set_clock - tests: the memory store's clock (NULL: the monotonic one) */
void
state_memory_set_clock(struct state *st, int64_t (*now)(void))
{
	pthread_mutex_lock(&st->mu);
	st->clock = now != NULL ? now : mem_clock;
	pthread_mutex_unlock(&st->mu);
}

uint64_t
state_memory_entries(const struct state *st)
{
	return st->n;
}
