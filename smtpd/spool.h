/*
 * spool.h - the held message body: in memory up to a bound, then an
 * unlinked temp file.  Never a queue: the spool dies with its transaction.
 *
 * The spool owns its memory and file descriptor.  It is reference counted so
 * that an asynchronous reader (a Maildir job on a worker thread, a backend
 * body transfer) keeps it alive past the transaction that made it: spool_new
 * gives one reference, spool_ref takes another, spool_free drops one and
 * releases both with the last.  References are atomic: a blocking filter
 * call that outlived its session may drop the last one on a pool thread.
 */
#ifndef PORTIER_SPOOL_H
#define PORTIER_SPOOL_H

#include <stdbool.h>
#include <stddef.h>
#include <sys/types.h>

struct spool;

/* spool_new - empty spool; past mem_limit bytes it moves to a file in tmpdir (NULL: $TMPDIR or /tmp). */
struct spool *spool_new(size_t mem_limit, const char *tmpdir);
/* spool_ref - one more reference to s; returns s. */
struct spool *spool_ref(struct spool *s);
/* spool_free - drop one reference; the last releases memory and file. */
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
