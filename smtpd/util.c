/*
 * util.c - allocation wrappers, fatal(), ASCII string helpers.
 *
 * These never fail: an allocation failure is fatal.  Nothing here may log
 * client data.
 */
#include "config.h"

#include <arpa/inet.h>
#include <netinet/in.h>

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "util.h"
#include "log.h"

/* fatal - log and exit: out of memory or a broken invariant */
void
fatal(const char *fmt, ...)
{
	va_list ap;
	char msg[1024];

	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	log_msg(LOG_LEVEL_CRIT, "event=fatal error=\"%s\"", msg);
	abort();
}

/* xmalloc - malloc that never returns NULL */
void *
xmalloc(size_t size)
{
	void *p = malloc(size ? size : 1);

	if (p == NULL)
		fatal("out of memory (%zu bytes)", size);
	return p;
}

/* xcalloc - zeroed allocation that never returns NULL */
void *
xcalloc(size_t n, size_t size)
{
	void *p = calloc(n ? n : 1, size ? size : 1);

	if (p == NULL)
		fatal("out of memory (%zu x %zu bytes)", n, size);
	return p;
}

/* xrealloc - realloc that never returns NULL */
void *
xrealloc(void *p, size_t size)
{
	void *q = realloc(p, size ? size : 1);

	if (q == NULL)
		fatal("out of memory (%zu bytes)", size);
	return q;
}

/* xreallocarray - overflow-checked array growth */
void *
xreallocarray(void *p, size_t n, size_t size)
{
	if (size != 0 && n > (size_t)-1 / size)
		fatal("allocation overflow (%zu x %zu)", n, size);
	return xrealloc(p, n * size);
}

/* xstrdup - strdup that never returns NULL */
char *
xstrdup(const char *s)
{
	return xstrndup(s, strlen(s));
}

/* xstrndup - copy at most n bytes and terminate */
char *
xstrndup(const char *s, size_t n)
{
	size_t len = strnlen(s, n);
	char *p = xmalloc(len + 1);

	memcpy(p, s, len);
	p[len] = '\0';
	return p;
}

/* xasprintf - formatted allocation */
char *
xasprintf(const char *fmt, ...)
{
	va_list ap;
	int n;
	char *p;

	va_start(ap, fmt);
	n = vsnprintf(NULL, 0, fmt, ap);
	va_end(ap);
	if (n < 0)
		fatal("xasprintf: bad format");
	p = xmalloc((size_t)n + 1);
	va_start(ap, fmt);
	vsnprintf(p, (size_t)n + 1, fmt, ap);
	va_end(ap);
	return p;
}

/* str_copy - bounded copy, false on truncation */
bool
str_copy(char *dst, const char *src, size_t size)
{
	size_t len = strlen(src);

	if (size == 0)
		return false;
	if (len >= size) {
		memcpy(dst, src, size - 1);
		dst[size - 1] = '\0';
		return false;
	}
	memcpy(dst, src, len + 1);
	return true;
}

static int
ascii_lower(int c)
{
	return (c >= 'A' && c <= 'Z') ? c + ('a' - 'A') : c;
}

/* str_casecmp - ASCII case-insensitive compare */
int
str_casecmp(const char *a, const char *b)
{
	int d;

	for (;; a++, b++) {
		d = ascii_lower((unsigned char)*a) - ascii_lower((unsigned char)*b);
		if (d != 0 || *a == '\0')
			return d;
	}
}

/* str_ncasecmp - ASCII case-insensitive compare of at most n bytes */
int
str_ncasecmp(const char *a, const char *b, size_t n)
{
	int d;

	for (; n > 0; a++, b++, n--) {
		d = ascii_lower((unsigned char)*a) - ascii_lower((unsigned char)*b);
		if (d != 0 || *a == '\0')
			return d;
	}
	return 0;
}

/* str_lower - lower-case ASCII in place */
void
str_lower(char *s)
{
	for (; *s; s++)
		*s = (char)ascii_lower((unsigned char)*s);
}

/* now_ms - monotonic milliseconds */
unsigned long long
now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (unsigned long long)ts.tv_sec * 1000ULL + (unsigned long long)ts.tv_nsec / 1000000ULL;
}

/* sockaddr_text - an IPv4/IPv6 address in text, as inet_ntop writes it */
bool
sockaddr_text(const struct sockaddr *sa, char *dst, size_t size)
{
	const void *a = NULL;

	if (sa->sa_family == AF_INET)
		a = &((const struct sockaddr_in *)(const void *)sa)->sin_addr;
	else if (sa->sa_family == AF_INET6)
		a = &((const struct sockaddr_in6 *)(const void *)sa)->sin6_addr;
	if (a != NULL && inet_ntop(sa->sa_family, a, dst, (socklen_t)size) != NULL)
		return true;
	if (size > 0)
		dst[0] = '\0';
	return false;
}

/* sockaddr_port - the port of an IPv4/IPv6 address */
unsigned
sockaddr_port(const struct sockaddr *sa)
{
	if (sa->sa_family == AF_INET)
		return ntohs(((const struct sockaddr_in *)(const void *)sa)->sin_port);
	if (sa->sa_family == AF_INET6)
		return ntohs(((const struct sockaddr_in6 *)(const void *)sa)->sin6_port);
	return 0;
}

#define ROTL64(x, b)	(uint64_t)(((x) << (b)) | ((x) >> (64 - (b))))
#define SIPROUND(v0, v1, v2, v3) do {					\
	v0 += v1; v1 = ROTL64(v1, 13); v1 ^= v0; v0 = ROTL64(v0, 32);	\
	v2 += v3; v3 = ROTL64(v3, 16); v3 ^= v2;			\
	v0 += v3; v3 = ROTL64(v3, 21); v3 ^= v0;			\
	v2 += v1; v1 = ROTL64(v1, 17); v1 ^= v2; v2 = ROTL64(v2, 32);	\
} while (0)

/* sip_le64 - eight octets, little-endian */
static uint64_t
sip_le64(const uint8_t *p)
{
	uint64_t v = 0;
	int i;

	for (i = 7; i >= 0; i--)
		v = (v << 8) | p[i];
	return v;
}

/* siphash24 - SipHash-2-4 of in[0..n) under a 16-octet key (hash tables fed by clients) */
uint64_t
siphash24(const uint8_t seed[16], const void *in, size_t n)
{
	const uint8_t *p = in, *end = p + (n - n % 8);
	uint64_t k0 = sip_le64(seed), k1 = sip_le64(seed + 8);
	uint64_t v0 = 0x736f6d6570736575ULL ^ k0, v1 = 0x646f72616e646f6dULL ^ k1;
	uint64_t v2 = 0x6c7967656e657261ULL ^ k0, v3 = 0x7465646279746573ULL ^ k1;
	uint64_t m, b = (uint64_t)n << 56;
	size_t i;

	for (; p != end; p += 8) {
		m = sip_le64(p);
		v3 ^= m;
		SIPROUND(v0, v1, v2, v3);
		SIPROUND(v0, v1, v2, v3);
		v0 ^= m;
	}
	for (i = 0; i < n % 8; i++)
		b |= (uint64_t)p[i] << (8 * i);
	v3 ^= b;
	SIPROUND(v0, v1, v2, v3);
	SIPROUND(v0, v1, v2, v3);
	v0 ^= b;
	v2 ^= 0xff;
	for (i = 0; i < 4; i++)
		SIPROUND(v0, v1, v2, v3);
	return v0 ^ v1 ^ v2 ^ v3;
}

/* siphash_seed - a random key for siphash24 (a fixed-pattern fallback without entropy) */
void
siphash_seed(uint8_t key[16])
{
	uint64_t x = (uint64_t)now_ms() ^ (uint64_t)getpid() ^ (uint64_t)(uintptr_t)key;
	size_t i;

	if (getentropy(key, 16) == 0)
		return;
	/* No entropy source: still a working table, just a guessable key. */
	for (i = 0; i < 16; i++, x = x * 6364136223846793005ULL + 1)
		key[i] = (uint8_t)(x >> 56);
}
