/*
 * connlimit.c - live sessions per client address and per client network,
 * for one listener of this process (the listener keys client_limit,
 * network_limit, network_prefix4/6, limit_exempt; see portier.conf(5)).
 *
 * A hash table of entries, each a key (client address, or network) and a
 * count of the sessions holding it.  An entry is made by the first session
 * that holds it and freed by the last one's release: the table never holds
 * more than two entries per live session, so max_sessions bounds it.  Keys
 * come from clients (an attacker picks its IPv6 addresses): they are hashed
 * with SipHash under a per-table random key.  One mutex per table; every
 * call does O(1) work under it, and nothing else (no logging, no I/O: a
 * refusal only says whether the caller logs it, at most once every
 * CONNLIMIT_LOG_MS per entry, so that a flood writes a line a second).
 *
 * Must never: count a session twice, free an entry a hold points to, or
 * count anything for an exempt client.  The counts are this process's:
 * a fleet behind a balancer shares rates (Redis), not concurrency.
 */
#include "config.h"

#include <assert.h>
#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "connlimit.h"
#include "util.h"

#define CONNLIMIT_BUCKETS_MIN	64

enum connlimit_kind { CONNLIMIT_KEY_CLIENT = 1, CONNLIMIT_KEY_NETWORK = 2 };

/* The hashed octets: no padding, so memcmp and siphash see only what was set. */
struct connlimit_key {
	struct cidr net;	/* the address (full length) or the network */
	uint32_t kind;		/* enum connlimit_kind: an address and a /32 network differ */
};

struct connlimit_entry {
	struct connlimit_entry *next;	/* hash chain */
	uint64_t hash;
	unsigned count;			/* holds; the entry goes with the last */
	unsigned quiet;			/* refusals not logged since logged_ms */
	unsigned long long logged_ms;	/* now_ms() of the last refusal logged, 0 none */
	struct connlimit_key key;
};

struct connlimit {
	pthread_mutex_t lock;
	struct connlimit_entry **buckets;
	size_t nbuckets;		/* a power of two */
	size_t nentries;
	uint8_t seed[16];		/* SipHash key */
	char *name;			/* connlimit_listener's */
	struct connlimit *list_next;
};

static pthread_mutex_t connlimit_list_lock = PTHREAD_MUTEX_INITIALIZER;
static struct connlimit *connlimit_list;	/* never shrinks: sessions hold its tables */

/* connlimit_new - an empty table with its own hash key */
struct connlimit *
connlimit_new(void)
{
	struct connlimit *t = xcalloc(1, sizeof(*t));

	if (pthread_mutex_init(&t->lock, NULL) != 0)
		fatal("pthread_mutex_init failed");
	t->nbuckets = CONNLIMIT_BUCKETS_MIN;
	t->buckets = xcalloc(t->nbuckets, sizeof(*t->buckets));
	siphash_seed(t->seed);
	return t;
}

/* connlimit_free - the table and its entries (nobody may hold one) */
void
connlimit_free(struct connlimit *t)
{
	struct connlimit_entry *e;
	size_t i;

	if (t == NULL)
		return;
	for (i = 0; i < t->nbuckets; i++) {
		while ((e = t->buckets[i]) != NULL) {
			t->buckets[i] = e->next;
			free(e);
		}
	}
	free(t->buckets);
	free(t->name);
	pthread_mutex_destroy(&t->lock);
	free(t);
}

/* connlimit_listener - the table of listener name, for the process's life */
struct connlimit *
connlimit_listener(const char *name)
{
	struct connlimit *t;

	pthread_mutex_lock(&connlimit_list_lock);
	for (t = connlimit_list; t != NULL; t = t->list_next)
		if (strcmp(t->name, name) == 0)
			break;
	if (t == NULL) {
		t = connlimit_new();
		t->name = xstrdup(name);
		t->list_next = connlimit_list;
		connlimit_list = t;
	}
	pthread_mutex_unlock(&connlimit_list_lock);
	return t;
}

/* connlimit_grow - double the buckets once entries outnumber them (lock held) */
static void
connlimit_grow(struct connlimit *t)
{
	size_t i, nb = t->nbuckets * 2;
	struct connlimit_entry **nbk, *e;

	nbk = xcalloc(nb, sizeof(*nbk));
	for (i = 0; i < t->nbuckets; i++) {
		while ((e = t->buckets[i]) != NULL) {
			t->buckets[i] = e->next;
			e->next = nbk[e->hash & (nb - 1)];
			nbk[e->hash & (nb - 1)] = e;
		}
	}
	free(t->buckets);
	t->buckets = nbk;
	t->nbuckets = nb;
}

/* connlimit_find - the entry of key, or NULL (lock held) */
static struct connlimit_entry *
connlimit_find(struct connlimit *t, const struct connlimit_key *key, uint64_t h)
{
	struct connlimit_entry *e;

	for (e = t->buckets[h & (t->nbuckets - 1)]; e != NULL; e = e->next)
		if (e->hash == h && memcmp(&e->key, key, sizeof(*key)) == 0)
			return e;
	return NULL;
}

/* connlimit_take - one more hold on key's entry, made if new (lock held) */
static struct connlimit_entry *
connlimit_take(struct connlimit *t, const struct connlimit_key *key, uint64_t h)
{
	struct connlimit_entry *e = connlimit_find(t, key, h);
	size_t b;

	if (e == NULL) {
		if (t->nentries >= t->nbuckets)
			connlimit_grow(t);
		e = xcalloc(1, sizeof(*e));
		e->key = *key;
		e->hash = h;
		b = h & (t->nbuckets - 1);
		e->next = t->buckets[b];
		t->buckets[b] = e;
		t->nentries++;
	}
	e->count++;
	return e;
}

/* connlimit_drop - one hold less on e; the last one frees it (lock held) */
static void
connlimit_drop(struct connlimit *t, struct connlimit_entry *e)
{
	struct connlimit_entry **pp;

	assert(e->count > 0);
	if (--e->count > 0)
		return;
	for (pp = &t->buckets[e->hash & (t->nbuckets - 1)]; *pp != e; pp = &(*pp)->next)
		assert(*pp != NULL);
	*pp = e->next;
	t->nentries--;
	free(e);
}

/* connlimit_key - sa's address or network as a key; false if sa is not IP */
static bool
connlimit_key(const struct sockaddr *sa, enum connlimit_kind kind, unsigned prefix4,
    unsigned prefix6, struct connlimit_key *key)
{
	memset(key, 0, sizeof(*key));
	key->kind = kind;
	return cidr_of(sa, prefix4, prefix6, &key->net);
}

/* connlimit_refused - e refused a session: *ref, and whether this one is logged */
static void
connlimit_refused(struct connlimit_entry *e, struct connlimit_refusal *ref)
{
	unsigned long long now = now_ms();

	ref->count = e->count;
	if (e->logged_ms != 0 && now - e->logged_ms < CONNLIMIT_LOG_MS) {
		e->quiet++;
		return;
	}
	ref->log = true;
	ref->suppressed = e->quiet;
	e->quiet = 0;
	e->logged_ms = now;
}

/* connlimit_acquire - count a new session from sa, or say which limit it passes */
enum connlimit_result
connlimit_acquire(struct connlimit *t, const struct connlimit_policy *p,
    const struct sockaddr *sa, struct connlimit_hold *h, struct connlimit_refusal *ref)
{
	struct connlimit_key ck, nk;
	struct connlimit_entry *ce, *ne;
	uint64_t chash, nhash;
	bool client = p->client_limit > 0, network = p->network_limit > 0;

	assert(h->table == NULL && h->client == NULL && h->network == NULL);
	memset(ref, 0, sizeof(*ref));
	if (!client && !network)
		return CONNLIMIT_OK;
	if (cidr_any(p->exempt, p->nexempt, sa))
		return CONNLIMIT_EXEMPT;
	if (!connlimit_key(sa, CONNLIMIT_KEY_CLIENT, 32, 128, &ck) ||
	    !connlimit_key(sa, CONNLIMIT_KEY_NETWORK, p->prefix4, p->prefix6, &nk))
		return CONNLIMIT_OK;
	chash = siphash24(t->seed, &ck, sizeof(ck));
	nhash = siphash24(t->seed, &nk, sizeof(nk));
	pthread_mutex_lock(&t->lock);
	ce = client ? connlimit_find(t, &ck, chash) : NULL;
	ne = network ? connlimit_find(t, &nk, nhash) : NULL;
	if (ce != NULL && ce->count >= p->client_limit) {
		connlimit_refused(ce, ref);
		pthread_mutex_unlock(&t->lock);
		return CONNLIMIT_CLIENT;
	}
	if (ne != NULL && ne->count >= p->network_limit) {
		connlimit_refused(ne, ref);
		pthread_mutex_unlock(&t->lock);
		return CONNLIMIT_NETWORK;
	}
	h->table = t;
	h->client = client ? connlimit_take(t, &ck, chash) : NULL;
	h->network = network ? connlimit_take(t, &nk, nhash) : NULL;
	pthread_mutex_unlock(&t->lock);
	return CONNLIMIT_OK;
}

/* connlimit_release - give back h's slots, once */
void
connlimit_release(struct connlimit_hold *h)
{
	struct connlimit *t = h->table;

	if (t == NULL)
		return;
	pthread_mutex_lock(&t->lock);
	if (h->client != NULL)
		connlimit_drop(t, h->client);
	if (h->network != NULL)
		connlimit_drop(t, h->network);
	pthread_mutex_unlock(&t->lock);
	memset(h, 0, sizeof(*h));
}

/* connlimit_count - the sessions counted for sa's address */
unsigned
connlimit_count(struct connlimit *t, const struct sockaddr *sa)
{
	struct connlimit_key k;
	struct connlimit_entry *e;
	unsigned n;

	if (!connlimit_key(sa, CONNLIMIT_KEY_CLIENT, 32, 128, &k))
		return 0;
	pthread_mutex_lock(&t->lock);
	e = connlimit_find(t, &k, siphash24(t->seed, &k, sizeof(k)));
	n = e != NULL ? e->count : 0;
	pthread_mutex_unlock(&t->lock);
	return n;
}

/* connlimit_entries - entries in t */
size_t
connlimit_entries(struct connlimit *t)
{
	size_t n;

	pthread_mutex_lock(&t->lock);
	n = t->nentries;
	pthread_mutex_unlock(&t->lock);
	return n;
}
