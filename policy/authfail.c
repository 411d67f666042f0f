/*
 * authfail.c - the in-memory store for failed-AUTH counters: a hash table
 * of client keys, each with a ring of per-step counts, and an LRU list
 * ordered by last failure for eviction.
 *
 * Keys come from clients (an attacker picks its IPv6 addresses), so the
 * table is hashed with SipHash under a per-process random key: nobody can
 * aim keys at one chain.  Every call takes the one mutex and does O(1)
 * work (bounded purging included).  Must never log, never allocate more
 * than cap entries, and never hand out pointers into the table.
 */
#include "config.h"

#include <arpa/inet.h>
#include <assert.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "authfail.h"
#include "util.h"

#define AUTHFAIL_RING		(AUTHFAIL_SLOTS + 1)	/* steps a window can touch */
#define AUTHFAIL_PURGE		16	/* aged-out entries dropped per new entry, at most */
#define AUTHFAIL_BUCKETS_MIN	64

struct authfail_entry {
	struct authfail_entry *hnext;	/* hash chain */
	struct authfail_entry *prev;	/* LRU: towards the most recent failure */
	struct authfail_entry *next;	/* LRU: towards the stalest */
	uint64_t hash;
	int64_t head;			/* step number held in counts[head % RING] */
	uint32_t counts[AUTHFAIL_RING];
	char key[AUTHFAIL_KEY_MAX];
};

struct authfail {
	pthread_mutex_t mu;
	unsigned max;
	unsigned window;
	int64_t width;			/* seconds per step */
	size_t cap;
	size_t n;
	size_t nbuckets;		/* a power of two */
	struct authfail_entry **buckets;
	struct authfail_entry *lru_head;	/* most recent failure */
	struct authfail_entry *lru_tail;	/* stalest */
	uint8_t seed[16];		/* SipHash key */
};

/* --- keys and hashing ---------------------------------------------------------- */

/*
 * authfail_key - the counting key of ip: IPv4 as inet_ntop writes it, IPv6
 * as its /64 ("2001:db8:1:2::/64"), IPv4-mapped IPv6 as IPv4, anything
 * else as given (truncated).
 */
static void
authfail_key(const char *ip, char key[AUTHFAIL_KEY_MAX])
{
	unsigned char bin[sizeof(struct in6_addr)];
	char text[INET6_ADDRSTRLEN];

	if (inet_pton(AF_INET, ip, bin) == 1 &&
	    inet_ntop(AF_INET, bin, key, AUTHFAIL_KEY_MAX) != NULL)
		return;
	if (inet_pton(AF_INET6, ip, bin) == 1) {
		static const unsigned char mapped[12] =
		    { 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff };

		if (memcmp(bin, mapped, sizeof(mapped)) == 0 &&
		    inet_ntop(AF_INET, bin + 12, key, AUTHFAIL_KEY_MAX) != NULL)
			return;
		memset(bin + 8, 0, 8);
		if (inet_ntop(AF_INET6, bin, text, sizeof(text)) != NULL &&
		    snprintf(key, AUTHFAIL_KEY_MAX, "%s/64", text) < AUTHFAIL_KEY_MAX)
			return;
	}
	str_copy(key, ip, AUTHFAIL_KEY_MAX);	/* truncation is fine for odd keys */
}

/* --- the sliding window ---------------------------------------------------------- */

/* authfail_width - seconds per step for window */
static int64_t
authfail_width(unsigned window)
{
	return ((int64_t)window + AUTHFAIL_SLOTS - 1) / AUTHFAIL_SLOTS;
}

/* authfail_step - the step now falls in (times before the epoch count as 0) */
static int64_t
authfail_step(const struct authfail *a, time_t now)
{
	return now > 0 ? (int64_t)now / a->width : 0;
}

/*
 * authfail_count - failures of e still in the window at now: a step counts
 * while its last second is less than window seconds ago, so no failure
 * ages out early.
 */
static unsigned
authfail_count(const struct authfail *a, const struct authfail_entry *e, time_t now)
{
	int64_t k, t = now > 0 ? (int64_t)now : 0;
	uint64_t sum = 0;

	for (k = e->head; k > e->head - AUTHFAIL_RING && k >= 0; k--) {
		if ((k + 1) * a->width - 1 <= t - (int64_t)a->window)
			break;
		sum += e->counts[k % AUTHFAIL_RING];
	}
	return sum > UINT32_MAX ? UINT32_MAX : (unsigned)sum;
}

/* authfail_advance - move e's newest step up to now's, clearing the steps passed */
static void
authfail_advance(const struct authfail *a, struct authfail_entry *e, time_t now)
{
	int64_t c = authfail_step(a, now), k;

	if (c <= e->head)
		return;		/* same step, or the clock stepped back: keep counting here */
	for (k = e->head + 1; k <= c && k <= e->head + AUTHFAIL_RING; k++)
		e->counts[k % AUTHFAIL_RING] = 0;
	e->head = c;
}

/* --- the table -------------------------------------------------------------------- */

/* authfail_find - the entry for key with hash h, or NULL */
static struct authfail_entry *
authfail_find(const struct authfail *a, const char *key, uint64_t h)
{
	struct authfail_entry *e;

	for (e = a->buckets[h & (a->nbuckets - 1)]; e != NULL; e = e->hnext)
		if (e->hash == h && strcmp(e->key, key) == 0)
			return e;
	return NULL;
}

/* authfail_lru_unlink - take e out of the LRU list */
static void
authfail_lru_unlink(struct authfail *a, struct authfail_entry *e)
{
	if (e->prev != NULL)
		e->prev->next = e->next;
	else
		a->lru_head = e->next;
	if (e->next != NULL)
		e->next->prev = e->prev;
	else
		a->lru_tail = e->prev;
	e->prev = e->next = NULL;
}

/* authfail_lru_front - make e the most recent */
static void
authfail_lru_front(struct authfail *a, struct authfail_entry *e)
{
	e->prev = NULL;
	e->next = a->lru_head;
	if (a->lru_head != NULL)
		a->lru_head->prev = e;
	a->lru_head = e;
	if (a->lru_tail == NULL)
		a->lru_tail = e;
}

/* authfail_remove - unlink e from its chain and the LRU list, free it */
static void
authfail_remove(struct authfail *a, struct authfail_entry *e)
{
	struct authfail_entry **pp = &a->buckets[e->hash & (a->nbuckets - 1)];

	while (*pp != e) {
		assert(*pp != NULL);
		pp = &(*pp)->hnext;
	}
	*pp = e->hnext;
	authfail_lru_unlink(a, e);
	free(e);
	a->n--;
}

/* authfail_grow - double the buckets while entries outnumber them */
static void
authfail_grow(struct authfail *a)
{
	struct authfail_entry **nb, *e, *next;
	size_t i, nn = a->nbuckets * 2;

	nb = xcalloc(nn, sizeof(*nb));
	for (i = 0; i < a->nbuckets; i++) {
		for (e = a->buckets[i]; e != NULL; e = next) {
			next = e->hnext;
			e->hnext = nb[e->hash & (nn - 1)];
			nb[e->hash & (nn - 1)] = e;
		}
	}
	free(a->buckets);
	a->buckets = nb;
	a->nbuckets = nn;
}

/* authfail_make_room - drop a few aged-out entries, then the stalest if still full */
static void
authfail_make_room(struct authfail *a, time_t now)
{
	int i;

	for (i = 0; i < AUTHFAIL_PURGE && a->lru_tail != NULL; i++) {
		if (authfail_count(a, a->lru_tail, now) != 0)
			break;
		authfail_remove(a, a->lru_tail);
	}
	if (a->n >= a->cap)
		authfail_remove(a, a->lru_tail);
}

/* authfail_insert - a new, empty entry for key */
static struct authfail_entry *
authfail_insert(struct authfail *a, const char *key, uint64_t h, time_t now)
{
	struct authfail_entry *e;
	size_t b;

	authfail_make_room(a, now);
	if (a->n >= a->nbuckets)
		authfail_grow(a);
	e = xcalloc(1, sizeof(*e));
	e->hash = h;
	e->head = authfail_step(a, now);
	str_copy(e->key, key, sizeof(e->key));
	b = h & (a->nbuckets - 1);
	e->hnext = a->buckets[b];
	a->buckets[b] = e;
	authfail_lru_front(a, e);
	a->n++;
	return e;
}

/* authfail_clear - forget every entry */
static void
authfail_clear(struct authfail *a)
{
	while (a->lru_tail != NULL)
		authfail_remove(a, a->lru_tail);
}

/* --- the interface ------------------------------------------------------------------ */

/* authfail_new - empty counters */
struct authfail *
authfail_new(unsigned max, unsigned window, size_t cap)
{
	struct authfail *a = xcalloc(1, sizeof(*a));
	size_t i;

	assert(max >= 1 && window >= 1);
	if (pthread_mutex_init(&a->mu, NULL) != 0)
		fatal("authfail_new: pthread_mutex_init failed");
	a->max = max;
	a->window = window;
	a->width = authfail_width(window);
	a->cap = cap ? cap : AUTHFAIL_CAP_DEFAULT;
	a->nbuckets = AUTHFAIL_BUCKETS_MIN;
	a->buckets = xcalloc(a->nbuckets, sizeof(*a->buckets));
	if (getentropy(a->seed, sizeof(a->seed)) != 0) {
		/* No entropy source: still a working table, just a guessable seed. */
		uint64_t x = now_ms() ^ ((uint64_t)getpid() << 32) ^ (uint64_t)(uintptr_t)a;

		for (i = 0; i < sizeof(a->seed); i++, x = x * 6364136223846793005ULL + 1)
			a->seed[i] = (uint8_t)(x >> 56);
	}
	return a;
}

/* authfail_free - release everything */
void
authfail_free(struct authfail *a)
{
	if (a == NULL)
		return;
	authfail_clear(a);
	free(a->buckets);
	pthread_mutex_destroy(&a->mu);
	free(a);
}

/* authfail_set_limits - new max and window (config reload) */
void
authfail_set_limits(struct authfail *a, unsigned max, unsigned window)
{
	assert(max >= 1 && window >= 1);
	pthread_mutex_lock(&a->mu);
	a->max = max;
	if (window != a->window) {
		a->window = window;
		a->width = authfail_width(window);
		authfail_clear(a);
	}
	pthread_mutex_unlock(&a->mu);
}

/* authfail_blocked - max failures within the window? */
bool
authfail_blocked(struct authfail *a, const char *ip, time_t now)
{
	char key[AUTHFAIL_KEY_MAX];
	struct authfail_entry *e;
	uint64_t h;
	bool blocked = false;

	authfail_key(ip, key);
	h = siphash24(a->seed, key, strlen(key));
	pthread_mutex_lock(&a->mu);
	if ((e = authfail_find(a, key, h)) != NULL)
		blocked = authfail_count(a, e, now) >= a->max;
	pthread_mutex_unlock(&a->mu);
	return blocked;
}

/* authfail_record - count one failure; the failures now in the window */
unsigned
authfail_record(struct authfail *a, const char *ip, time_t now)
{
	char key[AUTHFAIL_KEY_MAX];
	struct authfail_entry *e;
	uint32_t *slot;
	unsigned count;
	uint64_t h;

	authfail_key(ip, key);
	h = siphash24(a->seed, key, strlen(key));
	pthread_mutex_lock(&a->mu);
	if ((e = authfail_find(a, key, h)) == NULL)
		e = authfail_insert(a, key, h, now);
	else {
		authfail_lru_unlink(a, e);
		authfail_lru_front(a, e);
	}
	authfail_advance(a, e, now);
	slot = &e->counts[e->head % AUTHFAIL_RING];
	if (*slot < UINT32_MAX)
		(*slot)++;
	count = authfail_count(a, e, now);
	pthread_mutex_unlock(&a->mu);
	return count;
}

/* authfail_tracked - addresses tracked now */
size_t
authfail_tracked(struct authfail *a)
{
	size_t n;

	pthread_mutex_lock(&a->mu);
	n = a->n;
	pthread_mutex_unlock(&a->mu);
	return n;
}
