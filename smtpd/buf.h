/*
 * buf.h - one growable byte buffer, always NUL-terminated, overflow-checked growth.
 *
 * The buffer owns its storage; buf_free releases it.  data may move on any
 * append: never keep pointers into it across appends.
 */
#ifndef PORTIER_BUF_H
#define PORTIER_BUF_H

#include <stddef.h>
#include "util.h"

struct buf {
	char *data;	/* NUL-terminated, may contain NULs before len */
	size_t len;
	size_t cap;
};

void buf_init(struct buf *b);
void buf_free(struct buf *b);
void buf_reset(struct buf *b);
void buf_reserve(struct buf *b, size_t extra);
void buf_append(struct buf *b, const void *p, size_t n);
void buf_puts(struct buf *b, const char *s);
void buf_putc(struct buf *b, char c);
void buf_printf(struct buf *b, const char *fmt, ...) PRINTF_LIKE(2, 3);
/* Drop the first n bytes. */
void buf_consume(struct buf *b, size_t n);

#endif
