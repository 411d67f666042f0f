/*
 * check_workers.c - unit tests for the worker pool (smtpd/workers.c).
 *
 * Drives real event bases and real threads: completions come back on the
 * submitting loop's thread, in order; a full queue refuses; two loops in two
 * threads share the pool; shutdown and detach leak nothing (run under ASan).
 * Never sleeps to synchronise: gates are condition variables.
 */
#include "config.h"

#include <check.h>
#include <pthread.h>
#include <stdlib.h>

#include <event2/event.h>
#include <event2/thread.h>

#include "util.h"
#include "workers.h"
#include "unit.h"

/* A gate jobs can wait on until the test opens it. */
struct gate {
	pthread_mutex_t mtx;
	pthread_cond_t cond;
	bool open;
	unsigned started;
};

static struct gate gate;

/* gate_init - closed gate */
static void
gate_init(struct gate *g)
{
	pthread_mutex_init(&g->mtx, NULL);
	pthread_cond_init(&g->cond, NULL);
	g->open = false;
	g->started = 0;
}

/* gate_open - let every waiter through */
static void
gate_open(struct gate *g)
{
	pthread_mutex_lock(&g->mtx);
	g->open = true;
	pthread_cond_broadcast(&g->cond);
	pthread_mutex_unlock(&g->mtx);
}

/* gate_wait_started - until n jobs are waiting at the gate */
static void
gate_wait_started(struct gate *g, unsigned n)
{
	pthread_mutex_lock(&g->mtx);
	while (g->started < n)
		pthread_cond_wait(&g->cond, &g->mtx);
	pthread_mutex_unlock(&g->mtx);
}

/* One job's record. */
struct job {
	unsigned idx;
	pthread_t work_thread;
	pthread_t done_thread;
	bool worked;
	bool done;
	bool gated;
	struct loopctx *lc;
};

/* One event loop's bookkeeping. */
struct loopctx {
	struct event_base *base;
	struct workers_loop *wl;
	unsigned expect;
	unsigned ndone;
	unsigned order[1000];
	pthread_t thread;
};

/* job_work - on a pool thread */
static void
job_work(void *arg)
{
	struct job *j = arg;

	if (j->gated) {
		pthread_mutex_lock(&gate.mtx);
		gate.started++;
		pthread_cond_broadcast(&gate.cond);
		while (!gate.open)
			pthread_cond_wait(&gate.cond, &gate.mtx);
		pthread_mutex_unlock(&gate.mtx);
	}
	j->work_thread = pthread_self();
	j->worked = true;
}

/* job_done - on the loop */
static void
job_done(void *arg)
{
	struct job *j = arg;
	struct loopctx *lc = j->lc;

	ck_assert(!j->done);
	j->done = true;
	j->done_thread = pthread_self();
	if (lc->ndone < ARRAY_SIZE(lc->order))
		lc->order[lc->ndone] = j->idx;
	if (++lc->ndone == lc->expect)
		event_base_loopbreak(lc->base);
}

/* loop_run - turn lc's loop until every expected completion arrived */
static void
loop_run(struct loopctx *lc)
{
	struct timeval tv = { 20, 0 };

	event_base_loopexit(lc->base, &tv);	/* a safety net, never reached */
	event_base_loop(lc->base, EVLOOP_NO_EXIT_ON_EMPTY);
	ck_assert_uint_eq(lc->ndone, lc->expect);
}

/* loop_init - a base and channel on the calling thread */
static void
loop_init(struct loopctx *lc, struct workers *w)
{
	lc->base = event_base_new();
	ck_assert_ptr_nonnull(lc->base);
	lc->wl = workers_attach(w, lc->base);
	ck_assert_ptr_nonnull(lc->wl);
	ck_assert_ptr_eq(workers_loop_base(lc->wl), lc->base);
	lc->ndone = 0;
	lc->thread = pthread_self();
}

/* loop_fini - detach and free the base */
static void
loop_fini(struct loopctx *lc)
{
	workers_detach(lc->wl);
	event_base_free(lc->base);
}

START_TEST(test_done_on_loop_thread)
{
	struct workers *w = workers_new(3, 64);
	struct loopctx lc = { 0 };
	struct job jobs[20] = { 0 };
	unsigned i;

	loop_init(&lc, w);
	lc.expect = ARRAY_SIZE(jobs);
	for (i = 0; i < ARRAY_SIZE(jobs); i++) {
		jobs[i].idx = i;
		jobs[i].lc = &lc;
		ck_assert(workers_submit(lc.wl, job_work, job_done, &jobs[i]));
	}
	loop_run(&lc);
	for (i = 0; i < ARRAY_SIZE(jobs); i++) {
		ck_assert(jobs[i].worked);
		ck_assert(jobs[i].done);
		ck_assert(!pthread_equal(jobs[i].work_thread, lc.thread));
		ck_assert(pthread_equal(jobs[i].done_thread, lc.thread));
	}
	loop_fini(&lc);
	workers_free(w);
}
END_TEST

START_TEST(test_fifo_order)
{
	struct workers *w = workers_new(1, 1000);
	struct loopctx lc = { 0 };
	static struct job jobs[500];
	unsigned i;

	loop_init(&lc, w);
	lc.expect = ARRAY_SIZE(jobs);
	for (i = 0; i < ARRAY_SIZE(jobs); i++) {
		jobs[i] = (struct job){ .idx = i, .lc = &lc };
		ck_assert(workers_submit(lc.wl, job_work, job_done, &jobs[i]));
	}
	loop_run(&lc);
	for (i = 0; i < ARRAY_SIZE(jobs); i++)
		ck_assert_uint_eq(lc.order[i], i);
	loop_fini(&lc);
	workers_free(w);
}
END_TEST

START_TEST(test_queue_full)
{
	struct workers *w = workers_new(1, 2);
	struct loopctx lc = { 0 };
	struct job jobs[4] = { 0 };
	unsigned i;

	gate_init(&gate);
	loop_init(&lc, w);
	for (i = 0; i < ARRAY_SIZE(jobs); i++) {
		jobs[i].idx = i;
		jobs[i].lc = &lc;
		jobs[i].gated = true;
	}
	/* The single thread takes job 0 and waits at the gate... */
	ck_assert(workers_submit(lc.wl, job_work, job_done, &jobs[0]));
	gate_wait_started(&gate, 1);
	/* ...so two jobs wait in the queue, and a third is refused. */
	ck_assert(workers_submit(lc.wl, job_work, job_done, &jobs[1]));
	ck_assert(workers_submit(lc.wl, job_work, job_done, &jobs[2]));
	ck_assert(!workers_submit(lc.wl, job_work, job_done, &jobs[3]));
	gate_open(&gate);
	lc.expect = 3;
	loop_run(&lc);
	ck_assert(!jobs[3].worked);
	ck_assert(!jobs[3].done);
	/* Room again once the queue drained. */
	jobs[3].gated = false;
	ck_assert(workers_submit(lc.wl, job_work, job_done, &jobs[3]));
	lc.expect = 4;
	loop_run(&lc);
	ck_assert(jobs[3].done);
	loop_fini(&lc);
	workers_free(w);
}
END_TEST

#define MANY 1000

struct threadarg {
	struct workers *w;
	struct loopctx lc;
	struct job jobs[MANY];
	unsigned refused;
};

/* loop_thread - one event loop submitting MANY jobs */
static void *
loop_thread(void *arg)
{
	struct threadarg *ta = arg;
	unsigned i;

	loop_init(&ta->lc, ta->w);
	ta->lc.expect = MANY;
	for (i = 0; i < MANY; i++) {
		ta->jobs[i].idx = i;
		ta->jobs[i].lc = &ta->lc;
		if (!workers_submit(ta->lc.wl, job_work, job_done, &ta->jobs[i]))
			ta->refused++;
	}
	loop_run(&ta->lc);
	loop_fini(&ta->lc);
	return NULL;
}

START_TEST(test_two_loops)
{
	struct workers *w = workers_new(4, 2 * MANY);
	struct threadarg *ta = xcalloc(2, sizeof(*ta));
	pthread_t t[2];
	unsigned i, k;

	for (k = 0; k < 2; k++) {
		ta[k].w = w;
		ck_assert_int_eq(pthread_create(&t[k], NULL, loop_thread, &ta[k]), 0);
	}
	for (k = 0; k < 2; k++)
		ck_assert_int_eq(pthread_join(t[k], NULL), 0);
	for (k = 0; k < 2; k++) {
		ck_assert_uint_eq(ta[k].refused, 0);
		ck_assert_uint_eq(ta[k].lc.ndone, MANY);
		for (i = 0; i < MANY; i++) {
			ck_assert(ta[k].jobs[i].done);
			ck_assert(pthread_equal(ta[k].jobs[i].done_thread, ta[k].lc.thread));
		}
	}
	ck_assert(!pthread_equal(ta[0].lc.thread, ta[1].lc.thread));
	workers_free(w);
	free(ta);
}
END_TEST

START_TEST(test_free_finishes_queued)
{
	struct workers *w = workers_new(2, 100);
	struct loopctx lc = { 0 };
	struct job jobs[50] = { 0 };
	unsigned i;

	loop_init(&lc, w);
	for (i = 0; i < ARRAY_SIZE(jobs); i++) {
		jobs[i].idx = i;
		jobs[i].lc = &lc;
		ck_assert(workers_submit(lc.wl, job_work, job_done, &jobs[i]));
	}
	/* The loop never turns: the work runs, the completions wait... */
	workers_free(w);
	for (i = 0; i < ARRAY_SIZE(jobs); i++) {
		ck_assert(jobs[i].worked);
		ck_assert(!jobs[i].done);
	}
	/* ...and an orphaned channel refuses new work. */
	ck_assert(!workers_submit(lc.wl, job_work, job_done, &jobs[0]));
	/* Detach frees the unrun completions (LSan checks). */
	loop_fini(&lc);
	for (i = 0; i < ARRAY_SIZE(jobs); i++)
		ck_assert(!jobs[i].done);
}
END_TEST

START_TEST(test_detach_with_work_in_flight)
{
	struct workers *w = workers_new(1, 10);
	struct loopctx lc = { 0 }, other = { 0 };
	struct job jobs[3] = { 0 }, ojob = { 0 };
	unsigned i;

	gate_init(&gate);
	loop_init(&lc, w);
	for (i = 0; i < ARRAY_SIZE(jobs); i++) {
		jobs[i].idx = i;
		jobs[i].lc = &lc;
		jobs[i].gated = true;
		ck_assert(workers_submit(lc.wl, job_work, job_done, &jobs[i]));
	}
	gate_wait_started(&gate, 1);
	/* Job 0 runs, jobs 1 and 2 wait: the loop goes away. */
	loop_fini(&lc);
	gate_open(&gate);

	/* The pool still serves another loop afterwards. */
	loop_init(&other, w);
	other.expect = 1;
	ojob.lc = &other;
	ck_assert(workers_submit(other.wl, job_work, job_done, &ojob));
	loop_run(&other);
	ck_assert(ojob.done);
	loop_fini(&other);
	workers_free(w);

	ck_assert(jobs[0].worked);
	ck_assert(!jobs[1].worked);	/* not started before detach: skipped */
	ck_assert(!jobs[2].worked);
	for (i = 0; i < ARRAY_SIZE(jobs); i++)
		ck_assert(!jobs[i].done);
}
END_TEST

START_TEST(test_zero_threads_means_one)
{
	struct workers *w = workers_new(0, 4);
	struct loopctx lc = { 0 };
	struct job j = { 0 };

	loop_init(&lc, w);
	lc.expect = 1;
	j.lc = &lc;
	ck_assert(workers_submit(lc.wl, job_work, NULL, &j));
	ck_assert(workers_submit(lc.wl, job_work, job_done, &j));
	loop_run(&lc);
	ck_assert(j.worked);
	loop_fini(&lc);
	workers_free(w);
}
END_TEST

/* workers_suite - every test above */
static Suite *
workers_suite(void)
{
	Suite *s = suite_create("workers");
	TCase *tc = tcase_create("pool");

	tcase_set_timeout(tc, 60);
	tcase_add_test(tc, test_done_on_loop_thread);
	tcase_add_test(tc, test_fifo_order);
	tcase_add_test(tc, test_queue_full);
	tcase_add_test(tc, test_two_loops);
	tcase_add_test(tc, test_free_finishes_queued);
	tcase_add_test(tc, test_detach_with_work_in_flight);
	tcase_add_test(tc, test_zero_threads_means_one);
	suite_add_tcase(s, tc);
	return s;
}

/* main - the suite, with libevent made thread-safe first */
int
main(void)
{
	int rc;

	if (evthread_use_pthreads() != 0)
		return 1;
	rc = unit_run(workers_suite());
	libevent_global_shutdown();
	return rc;
}
