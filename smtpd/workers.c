/*
 * workers.c - a fixed pool of threads for callbacks that may block, with a
 * bounded FIFO of jobs and one completion channel per event loop.
 *
 * A job's work() runs on a pool thread; its done() runs on the loop that
 * submitted it: the pool thread puts the finished job on the loop's
 * completion list and wakes the loop with event_active (libevent must have
 * been made thread-safe with evthread_use_pthreads() before the base was
 * created).  The loop drains the list and calls each done(arg).
 *
 * Never blocks a loop: workers_submit refuses when max_queue jobs wait, and
 * the loop side only ever holds a lock long enough to splice a list.  Never
 * touches arg except to hand it to work() and done().
 *
 * Ownership: the pool owns its jobs.  A loop handle belongs to its caller
 * until workers_detach; it is freed there, or by the last pool thread that
 * still had work for it.  Jobs of a detached loop are dropped: work() is not
 * run if it had not started, done() is never run, and drop(arg), if given,
 * runs instead (on the detaching thread or on a pool thread): a job that
 * owns what arg points to frees it there.
 */
#include "config.h"

#include <pthread.h>
#include <stdlib.h>

#include <event2/event.h>

#include "util.h"
#include "log.h"
#include "workers.h"

struct workers_job {
	struct workers_job *next;
	struct workers_loop *wl;
	workers_work_fn work;
	workers_done_fn done;
	workers_done_fn drop;	/* instead of done when the loop is gone; NULL: nothing */
	void *arg;
};

struct workers {
	pthread_mutex_t mtx;		/* guards everything below */
	pthread_cond_t cond;		/* jobs queued or stopping */
	struct workers_job *head, *tail;
	unsigned nqueued;		/* jobs waiting, not running */
	unsigned max_queue;
	bool stopping;
	pthread_t *threads;
	unsigned nthreads;
	struct workers_loop *loops;	/* attached loops */
};

struct workers_loop {
	struct workers *w;		/* NULL once the pool is gone */
	struct workers_loop *next;	/* in w->loops */
	struct event_base *base;
	pthread_mutex_t mtx;		/* guards the fields below */
	struct event *ev;		/* completion wake-up; NULL once detached */
	struct workers_job *done_head, *done_tail;
	unsigned inflight;		/* jobs queued or running for this loop */
	bool detached;
};

static void workers_loop_destroy(struct workers_loop *wl);

/* workers_complete - on the loop: run done() for every finished job */
static void
workers_complete(evutil_socket_t fd, short what, void *arg)
{
	struct workers_loop *wl = arg;
	struct workers_job *list, *job;

	pthread_mutex_lock(&wl->mtx);
	list = wl->done_head;
	wl->done_head = wl->done_tail = NULL;
	pthread_mutex_unlock(&wl->mtx);

	while ((job = list) != NULL) {
		list = job->next;
		if (job->done != NULL)
			job->done(job->arg);
		free(job);
	}
}

/* workers_finish - on a pool thread: hand a finished job back to its loop, or drop it */
static void
workers_finish(struct workers_job *job)
{
	struct workers_loop *wl = job->wl;
	bool last = false, dropped;

	job->next = NULL;
	pthread_mutex_lock(&wl->mtx);
	wl->inflight--;
	dropped = wl->detached;
	if (dropped) {
		last = wl->inflight == 0;
	} else {
		if (wl->done_tail != NULL)
			wl->done_tail->next = job;
		else
			wl->done_head = job;
		wl->done_tail = job;
		/* Under wl->mtx: detach cannot free the event meanwhile. */
		event_active(wl->ev, EV_READ, 0);
	}
	pthread_mutex_unlock(&wl->mtx);
	if (dropped) {
		if (job->drop != NULL)
			job->drop(job->arg);
		free(job);
	}
	if (last)
		workers_loop_destroy(wl);
}

/* workers_main - a pool thread: take jobs in order until told to stop */
static void *
workers_main(void *arg)
{
	struct workers *w = arg;
	struct workers_job *job;
	bool skip;

	for (;;) {
		pthread_mutex_lock(&w->mtx);
		while (w->head == NULL && !w->stopping)
			pthread_cond_wait(&w->cond, &w->mtx);
		if (w->head == NULL) {
			/* stopping and nothing left */
			pthread_mutex_unlock(&w->mtx);
			return NULL;
		}
		job = w->head;
		w->head = job->next;
		if (w->head == NULL)
			w->tail = NULL;
		w->nqueued--;
		pthread_mutex_unlock(&w->mtx);

		/* Whoever detached the loop tore down what arg points to. */
		pthread_mutex_lock(&job->wl->mtx);
		skip = job->wl->detached;
		pthread_mutex_unlock(&job->wl->mtx);
		if (!skip)
			job->work(job->arg);
		workers_finish(job);
	}
}

/* workers_new - start the pool */
struct workers *
workers_new(unsigned nthreads, unsigned max_queue)
{
	struct workers *w;
	unsigned i;
	int rc;

	if (nthreads == 0)
		nthreads = 1;
	w = xcalloc(1, sizeof(*w));
	w->max_queue = max_queue;
	if (pthread_mutex_init(&w->mtx, NULL) != 0 ||
	    pthread_cond_init(&w->cond, NULL) != 0)
		fatal("workers_new: cannot initialise locks");
	w->threads = xcalloc(nthreads, sizeof(*w->threads));
	for (i = 0; i < nthreads; i++) {
		if ((rc = pthread_create(&w->threads[i], NULL, workers_main, w)) != 0)
			fatal("workers_new: pthread_create: error %d", rc);
		w->nthreads++;
	}
	return w;
}

/*
 * workers_free - stop accepting, run what is queued, join the threads.
 * Call it once the loops have stopped turning.
 */
void
workers_free(struct workers *w)
{
	struct workers_loop *wl;
	unsigned i;

	if (w == NULL)
		return;
	pthread_mutex_lock(&w->mtx);
	w->stopping = true;
	pthread_cond_broadcast(&w->cond);
	pthread_mutex_unlock(&w->mtx);
	for (i = 0; i < w->nthreads; i++)
		pthread_join(w->threads[i], NULL);

	/*
	 * Loops still attached keep their handle (the caller detaches it);
	 * completions already on their lists run if the loop turns again.
	 */
	for (wl = w->loops; wl != NULL; wl = wl->next)
		wl->w = NULL;
	pthread_cond_destroy(&w->cond);
	pthread_mutex_destroy(&w->mtx);
	free(w->threads);
	free(w);
}

/* workers_attach - a completion channel on base (call on base's thread) */
struct workers_loop *
workers_attach(struct workers *w, struct event_base *base)
{
	struct workers_loop *wl;

	wl = xcalloc(1, sizeof(*wl));
	wl->w = w;
	wl->base = base;
	if (pthread_mutex_init(&wl->mtx, NULL) != 0)
		fatal("workers_attach: cannot initialise lock");
	wl->ev = event_new(base, -1, 0, workers_complete, wl);
	if (wl->ev == NULL)
		fatal("workers_attach: event_new failed");
	pthread_mutex_lock(&w->mtx);
	wl->next = w->loops;
	w->loops = wl;
	pthread_mutex_unlock(&w->mtx);
	return wl;
}

/* workers_loop_destroy - free a detached loop nobody refers to any more */
static void
workers_loop_destroy(struct workers_loop *wl)
{
	pthread_mutex_destroy(&wl->mtx);
	free(wl);
}

/*
 * workers_detach - drop the channel; pending completions are freed unrun.
 * Call it on the loop's thread (or with the loop stopped).
 */
void
workers_detach(struct workers_loop *wl)
{
	struct workers_loop **pp;
	struct workers_job *list, *job;
	struct event *ev;
	bool last;

	if (wl == NULL)
		return;
	if (wl->w != NULL) {
		pthread_mutex_lock(&wl->w->mtx);
		for (pp = &wl->w->loops; *pp != NULL; pp = &(*pp)->next) {
			if (*pp == wl) {
				*pp = wl->next;
				break;
			}
		}
		pthread_mutex_unlock(&wl->w->mtx);
		wl->w = NULL;
	}

	pthread_mutex_lock(&wl->mtx);
	wl->detached = true;
	list = wl->done_head;
	wl->done_head = wl->done_tail = NULL;
	last = wl->inflight == 0;
	ev = wl->ev;
	wl->ev = NULL;
	pthread_mutex_unlock(&wl->mtx);
	/*
	 * Pool threads see detached under wl->mtx and no longer wake ev; past
	 * this point wl may already be gone unless last.
	 */
	event_free(ev);

	while ((job = list) != NULL) {
		list = job->next;
		if (job->drop != NULL)
			job->drop(job->arg);
		free(job);
	}
	/* Otherwise the pool thread that finishes the last job frees it. */
	if (last)
		workers_loop_destroy(wl);
}

/* workers_submit - queue work for the pool; false when full or stopping */
bool
workers_submit(struct workers_loop *wl, workers_work_fn work, workers_done_fn done, void *arg)
{
	return workers_submit_owned(wl, work, done, NULL, arg);
}

/* workers_submit_owned - the same, with drop(arg) run when done will not be */
bool
workers_submit_owned(struct workers_loop *wl, workers_work_fn work, workers_done_fn done,
    workers_done_fn drop, void *arg)
{
	return workers_submit_to(wl->w, wl, work, done, drop, arg);
}

/* workers_submit_to - queue on pool w, complete through wl (which may belong to another pool) */
bool
workers_submit_to(struct workers *w, struct workers_loop *wl, workers_work_fn work,
    workers_done_fn done, workers_done_fn drop, void *arg)
{
	struct workers_job *job;

	if (w == NULL || wl->w == NULL || wl->detached)
		return false;
	job = xcalloc(1, sizeof(*job));
	job->wl = wl;
	job->work = work;
	job->done = done;
	job->drop = drop;
	job->arg = arg;

	pthread_mutex_lock(&w->mtx);
	if (w->stopping || w->nqueued >= w->max_queue) {
		pthread_mutex_unlock(&w->mtx);
		free(job);
		return false;
	}
	/* Counted before a thread can possibly finish it. */
	pthread_mutex_lock(&wl->mtx);
	wl->inflight++;
	pthread_mutex_unlock(&wl->mtx);
	if (w->tail != NULL)
		w->tail->next = job;
	else
		w->head = job;
	w->tail = job;
	w->nqueued++;
	pthread_cond_signal(&w->cond);
	pthread_mutex_unlock(&w->mtx);
	return true;
}

/* workers_loop_base - the event base a channel delivers on */
struct event_base *
workers_loop_base(const struct workers_loop *wl)
{
	return wl->base;
}
