/*
 * workers.h - a bounded thread pool for callbacks that may block (DNS through
 * libraries, milter and policy sockets, Redis, password hashing).
 *
 * Work runs on a pool thread; its completion runs on the event loop that
 * submitted it, so results never touch a session from a foreign thread.
 * Completions carry whatever the submitter put in arg; submitters match them
 * to sessions by id (a session may be gone by then).  Never blocks a loop:
 * a full queue makes workers_submit fail and the caller tempfails.
 */
#ifndef PORTIER_WORKERS_H
#define PORTIER_WORKERS_H

#include <stdbool.h>

struct event_base;
struct workers;
struct workers_loop;

typedef void (*workers_work_fn)(void *arg);	/* on a pool thread */
typedef void (*workers_done_fn)(void *arg);	/* on the submitting loop */

/* workers_new - start nthreads threads; at most max_queue jobs waiting. */
struct workers *workers_new(unsigned nthreads, unsigned max_queue);
/*
 * workers_free - finish queued work, join threads (once the loops stopped).
 * Completions not yet run are dropped by workers_detach, which stays the
 * caller's to call; a channel outliving its pool refuses new work.
 */
void workers_free(struct workers *w);
/* workers_attach - a completion channel on base; one per event loop. */
struct workers_loop *workers_attach(struct workers *w, struct event_base *base);
/* workers_detach - on base's thread: drop pending completions, skip queued work. */
void workers_detach(struct workers_loop *wl);
/* workers_submit - queue work; false when the queue is full. */
bool workers_submit(struct workers_loop *wl, workers_work_fn work, workers_done_fn done, void *arg);
/*
 * workers_submit_owned - the same for a job that owns arg: when its loop
 * detaches first, drop(arg) runs instead of done (on any thread).
 */
bool workers_submit_owned(struct workers_loop *wl, workers_work_fn work, workers_done_fn done,
    workers_done_fn drop, void *arg);
/*
 * workers_submit_to - the same, queued on pool w but completed through wl, a
 * loop's channel to another pool (a filter's own pool borrows the loop's
 * channel to the filter pool).  w must outlive the job: it is freed only
 * once the loops stopped.
 */
bool workers_submit_to(struct workers *w, struct workers_loop *wl, workers_work_fn work,
    workers_done_fn done, workers_done_fn drop, void *arg);
struct event_base *workers_loop_base(const struct workers_loop *wl);

#endif
