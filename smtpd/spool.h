/*
 * spool.h - the held message body: in memory up to a bound, then an
 * unlinked temp file.  Never a queue: the spool dies with its transaction.
 *
 * The spool owns its memory and file descriptor; spool_free releases both.
 */
#ifndef PORTIER_SPOOL_H
#define PORTIER_SPOOL_H

#include <stdbool.h>
#include <stddef.h>
#include <sys/types.h>

struct spool;

/* spool_new - empty spool; past mem_limit bytes it moves to a file in tmpdir (NULL: $TMPDIR or /tmp). */
struct spool *spool_new(size_t mem_limit, const char *tmpdir);
void spool_free(struct spool *s);
/* spool_write - append; false + *err_r (static text) on I/O error. */
bool spool_write(struct spool *s, const void *p, size_t n, const char **err_r);
size_t spool_size(const struct spool *s);
/* spool_mem - the data if still in memory, else NULL. */
const char *spool_mem(const struct spool *s);
/* spool_pread - up to n bytes at off; returns bytes read, -1 on error. */
ssize_t spool_pread(struct spool *s, void *p, size_t n, size_t off);
/* spool_truncate - drop everything (keeps the spool usable). */
void spool_truncate(struct spool *s);

#endif
