/*
 * util.h - allocation wrappers that never return NULL, fatal(), small string helpers.
 *
 * Allocation failure and broken invariants end the process through fatal();
 * everything else reports errors to its caller.  Never used for client faults.
 */
#ifndef PORTIER_UTIL_H
#define PORTIER_UTIL_H

#include <stdarg.h>
#include <stddef.h>
#include <stdbool.h>
#include <stdint.h>

#define PRINTF_LIKE(f, a) __attribute__((format(printf, f, a)))
#define NORETURN __attribute__((noreturn))
#define ARRAY_SIZE(a) (sizeof(a) / sizeof((a)[0]))

void fatal(const char *fmt, ...) PRINTF_LIKE(1, 2) NORETURN;
void *xmalloc(size_t size);
void *xcalloc(size_t n, size_t size);
void *xrealloc(void *p, size_t size);
void *xreallocarray(void *p, size_t n, size_t size);
char *xstrdup(const char *s);
char *xstrndup(const char *s, size_t n);
char *xasprintf(const char *fmt, ...) PRINTF_LIKE(1, 2);

/* strlcpy-like: copies and NUL-terminates, returns false on truncation. */
bool str_copy(char *dst, const char *src, size_t size);
/* ASCII case-insensitive compare, locale independent. */
int str_casecmp(const char *a, const char *b);
int str_ncasecmp(const char *a, const char *b, size_t n);
/* Lower-case an ASCII string in place. */
void str_lower(char *s);

/* Session ids in logs: the low 48 bits, 12 hex digits, everywhere. */
#define SESSION_ID_FMT "%012llx"
#define SESSION_ID(id) ((unsigned long long)((id) & 0xffffffffffffULL))

struct sockaddr;
/* sockaddr_text - an IPv4/IPv6 address as inet_ntop writes it; false and "" for other families. */
bool sockaddr_text(const struct sockaddr *sa, char *dst, size_t size);
/* sockaddr_port - the port of an IPv4/IPv6 address, 0 for other families. */
unsigned sockaddr_port(const struct sockaddr *sa);

/* Monotonic clock in milliseconds. */
unsigned long long now_ms(void);
/* siphash24 - SipHash-2-4 of in[0..n) under key (tables keyed by what clients send) */
uint64_t siphash24(const uint8_t key[16], const void *in, size_t n);
/* siphash_seed - a random key for siphash24 */
void siphash_seed(uint8_t key[16]);

#endif
