/* SPDX-License-Identifier: MIT */
/*
 * Pool: real worker processes, real kills.  Tasks that must block wait on
 * words in mp_shm_alloc memory that the test sets; nothing sleeps for a
 * fixed time to synchronise.
 */
#include <dirent.h>
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <string.h>
#include <sys/wait.h>

#include <criterion/criterion.h>
#include <mproc.h>

#include "tests/helpers.h"
#include "tests/pool_tasks.h"

T_SUITE(pool);

/* Words shared with the workers (allocated before each pool). */
struct shared {
	_Atomic long runs;		/* items run, all tasks */
	_Atomic long hits[8192];	/* runs of item i (small maps) */
	_Atomic int release;		/* blocking tasks return when set */
	_Atomic int blocked_pid;	/* a blocking task's worker */
	_Atomic int started;		/* blocking tasks started */
};

static struct shared *sh;

static void
shared_init(void)
{
	sh = mp_shm_alloc(sizeof(*sh));
	cr_assert_not_null(sh);
}

static void
shared_fini(void)
{
	mp_shm_free(sh);
	sh = NULL;
}

/* Counts its runs; items 300 and 500 fail with distinct codes. */
static ssize_t
count_and_fail(const void *in, size_t len, void *out, size_t cap)
{
	long v;

	(void)len;
	memcpy(&v, in, sizeof(v));
	atomic_fetch_add(&sh->runs, 1);
	if (v < 8192)
		atomic_fetch_add(&sh->hits[v], 1);
	if (v == 300)
		return -EDOM;
	if (v == 500)
		return -ERANGE;
	return square(in, sizeof(v), out, cap);
}

/* Item 1 SIGKILLs its own worker; the others square. */
static ssize_t
kill_on_one(const void *in, size_t len, void *out, size_t cap)
{
	long v;

	memcpy(&v, in, sizeof(v));
	if (v < 8192)
		atomic_fetch_add(&sh->hits[v], 1);
	if (v == 1)
		kill(getpid(), SIGKILL);
	return square(in, len, out, cap);
}

/* Every 500th item crashes its worker (SIGSEGV). */
static ssize_t
crash_every_500(const void *in, size_t len, void *out, size_t cap)
{
	long v;

	memcpy(&v, in, sizeof(v));
	atomic_fetch_add(&sh->hits[v], 1);
	if (v % 500 == 499)
		raise(SIGSEGV);
	return square(in, len, out, cap);
}

/* Reports its worker, then waits for the test to release it. */
static ssize_t
block(const void *in, size_t len, void *out, size_t cap)
{
	(void)in;
	(void)len;
	atomic_store(&sh->blocked_pid, getpid());
	atomic_fetch_add(&sh->started, 1);
	while (!atomic_load(&sh->release))
		usleep(1000);
	if (cap >= sizeof(int)) {
		int one = 1;
		memcpy(out, &one, sizeof(one));
		return sizeof(one);
	}
	return 0;
}

/* Its worker's pid and parent (the spawner). */
static ssize_t
whoami(const void *in, size_t len, void *out, size_t cap)
{
	pid_t v[2] = { getpid(), getppid() };

	(void)in;
	(void)len;
	if (cap < sizeof(v))
		return -EINVAL;
	memcpy(out, v, sizeof(v));
	return sizeof(v);
}

static ssize_t
fail_with(const void *in, size_t len, void *out, size_t cap)
{
	int e;

	(void)len;
	(void)out;
	(void)cap;
	memcpy(&e, in, sizeof(e));
	return e;
}

static void
wait_started(int n)
{
	int64_t t0 = t_now();

	while (atomic_load(&sh->started) < n) {
		cr_assert_lt(t_now() - t0, MP_MSEC(T_MS(20000)), "tasks never started");
		usleep(1000);
	}
}

T_TEST(pool, map_of_100000_items_gives_the_serial_results)
{
	enum { N = 100000 };
	long *in = malloc(N * sizeof(long)), *out = malloc(N * sizeof(long));
	mp_pool *p;

	for (long i = 0; i < N; i++) {
		in[i] = i - N / 2;
		out[i] = -1;
	}
	cr_assert_eq(mp_pool_new(&p, NULL), 0);
	cr_assert_eq(mp_pool_map(p, square, in, N, sizeof(long), out,
				 sizeof(long), 0), 0);
	for (long i = 0; i < N; i++)
		cr_assert_eq(out[i], in[i] * in[i] + 1, "item %ld", i);
	/* chunksize 1 and an odd chunk size give the same. */
	memset(out, 0, N * sizeof(long));
	cr_assert_eq(mp_pool_map(p, square, in, 5000, sizeof(long), out,
				 sizeof(long), 1), 0);
	cr_assert_eq(mp_pool_map(p, square, in + 5000, N - 5000, sizeof(long),
				 out + 5000, sizeof(long), 777), 0);
	for (long i = 0; i < N; i++)
		cr_assert_eq(out[i], in[i] * in[i] + 1, "item %ld", i);
	cr_assert_eq(mp_pool_map(p, square, NULL, 0, sizeof(long), NULL,
				 sizeof(long), 0), 0);
	mp_pool_free(p);
	free(in);
	free(out);
}

T_TEST(pool, map_reports_the_first_error_in_index_order)
{
	enum { N = 1000 };
	long in[N], out[N];
	mp_pool *p;

	shared_init();
	for (long i = 0; i < N; i++)
		in[i] = i;
	cr_assert_eq(mp_pool_new(&p, &(mp_pool_attr){ .processes = 3 }), 0);
	cr_assert_eq(mp_pool_map(p, count_and_fail, in, N, sizeof(long), out,
				 sizeof(long), 7), -EDOM);
	for (long i = 0; i < N; i++) {
		cr_assert_eq(atomic_load(&sh->hits[i]), 1, "item %ld", i);
		if (i != 300 && i != 500)
			cr_assert_eq(out[i], i * i + 1);
	}
	mp_pool_free(p);
	shared_fini();
}

/* f(a, b, c) = a + b * c, over int, double and char columns. */
static ssize_t
star3(const void *const args[], void *o, size_t cap)
{
	int x;
	double y;

	memcpy(&x, args[0], sizeof(x));
	memcpy(&y, args[1], sizeof(y));
	y = x + y * *(const char *)args[2];
	if (cap < sizeof(y))
		return -EINVAL;
	memcpy(o, &y, sizeof(y));
	return sizeof(y);
}

T_TEST(pool, starmap_zips_the_columns)
{
	enum { N = 3000 };
	int a[N];
	double b[N];
	char c[N];
	double out[N];
	const void *const cols[] = { a, b, c };
	const size_t sizes[] = { sizeof(int), sizeof(double), 1 };
	mp_pool *p;
	mp_async *r;

	for (int i = 0; i < N; i++) {
		a[i] = i;
		b[i] = i * 0.5;
		c[i] = (char)(i % 7);
	}
	cr_assert_eq(mp_pool_new(&p, NULL), 0);
	mp_star_fn fn = star3;

	cr_assert_eq(mp_pool_starmap(p, fn, 3, cols, sizes, N, out,
				     sizeof(double), 0), 0);
	for (int i = 0; i < N; i++)
		cr_assert_eq(out[i], a[i] + b[i] * c[i]);
	memset(out, 0, sizeof(out));
	cr_assert_eq(mp_pool_starmap_async(p, fn, 3, cols, sizes, N, out,
					   sizeof(double), 1, NULL, NULL,
					   NULL, &r), 0);
	cr_assert_eq(mp_async_get(r, MP_SEC(30)), 0);
	for (int i = 0; i < N; i++)
		cr_assert_eq(out[i], a[i] + b[i] * c[i]);
	mp_async_free(r);
	mp_pool_free(p);
}

T_TEST(pool, imap_returns_results_in_index_order)
{
	enum { N = 20000 };
	long *in = malloc(N * sizeof(long));
	mp_iter *it;
	mp_pool *p;
	long v;
	size_t idx;

	for (long i = 0; i < N; i++)
		in[i] = i;
	cr_assert_eq(mp_pool_new(&p, NULL), 0);
	cr_assert_eq(mp_pool_imap(p, square, in, N, sizeof(long),
				  sizeof(long), 0, &it), 0);
	free(in);	/* the items were copied */
	for (long i = 0; i < N; i++) {
		cr_assert_eq(mp_iter_next(it, &v, &idx, MP_SEC(30)), 0);
		cr_assert_eq(idx, (size_t)i);
		cr_assert_eq(v, i * i + 1);
	}
	cr_assert_eq(mp_iter_next(it, &v, &idx, MP_SEC(1)), -ENOENT);
	mp_iter_free(it);
	mp_pool_free(p);
}

T_TEST(pool, imap_unordered_covers_every_index_once)
{
	enum { N = 20000 };
	long *in = malloc(N * sizeof(long));
	char *seen = calloc(N, 1);
	mp_iter *it;
	mp_pool *p;
	long v;
	size_t idx;

	for (long i = 0; i < N; i++)
		in[i] = i;
	cr_assert_eq(mp_pool_new(&p, &(mp_pool_attr){ .processes = 3 }), 0);
	cr_assert_eq(mp_pool_imap_unordered(p, square, in, N, sizeof(long),
					    sizeof(long), 16, &it), 0);
	for (long i = 0; i < N; i++) {
		cr_assert_eq(mp_iter_next(it, &v, &idx, MP_SEC(30)), 0);
		cr_assert_lt(idx, (size_t)N);
		cr_assert_eq(seen[idx], 0, "index %zu twice", idx);
		seen[idx] = 1;
		cr_assert_eq(v, (long)idx * (long)idx + 1);
	}
	cr_assert_eq(mp_iter_next(it, &v, &idx, MP_NOWAIT), -ENOENT);
	mp_iter_free(it);
	mp_pool_free(p);
	free(in);
	free(seen);
}

T_TEST(pool, imap_keeps_a_bounded_number_of_results_waiting)
{
	enum { N = 100000 };
	long *in = malloc(N * sizeof(long));
	mp_iter *it;
	mp_pool *p;
	long v, last = -1;
	size_t idx;

	shared_init();
	for (long i = 0; i < N; i++)
		in[i] = i + 2000;	/* no hits[] slot: only runs counts */
	cr_assert_eq(mp_pool_new(&p, &(mp_pool_attr){ .processes = 2 }), 0);
	cr_assert_eq(mp_pool_imap(p, count_and_fail, in, N, sizeof(long),
				  sizeof(long), 1, &it), 0);
	/* Nobody reads: the runs stop at the window (64 here), however
	 * long we wait; give the workers time to run ahead if they could. */
	for (int i = 0; i < 50; i++) {
		long r = atomic_load(&sh->runs);
		if (r == last && r > 0)
			break;
		last = r;
		usleep(20000);
	}
	cr_assert_leq(atomic_load(&sh->runs), 64);
	cr_assert_gt(atomic_load(&sh->runs), 0);
	for (long i = 0; i < N; i++) {
		cr_assert_eq(mp_iter_next(it, &v, &idx, MP_SEC(30)), 0);
		cr_assert_eq(idx, (size_t)i);
	}
	cr_assert_eq(atomic_load(&sh->runs), N);
	mp_iter_free(it);
	mp_pool_free(p);
	free(in);
	shared_fini();
}

T_TEST(pool, freeing_an_iterator_early_does_not_hang_join)
{
	enum { N = 100000 };
	long *in = calloc(N, sizeof(long));
	mp_iter *it;
	mp_pool *p;
	long v;

	cr_assert_eq(mp_pool_new(&p, NULL), 0);
	cr_assert_eq(mp_pool_imap(p, square, in, N, sizeof(long),
				  sizeof(long), 1, &it), 0);
	cr_assert_eq(mp_iter_next(it, &v, NULL, MP_SEC(30)), 0);
	mp_iter_free(it);
	cr_assert_eq(mp_pool_close(p), 0);
	cr_assert_eq(mp_pool_join(p), 0);
	mp_pool_free(p);
	free(in);
}

/* Callback bookkeeping: per index, on which thread. */
static _Atomic int cb_calls[200], eb_calls[200], eb_err[200];
static _Atomic int cb_on_main;
static pthread_t main_thread;

static void
on_ok(mp_async *r, void *user)
{
	size_t len;
	const int *v = mp_async_result(r, &len);

	if (pthread_equal(pthread_self(), main_thread))
		atomic_store(&cb_on_main, 1);
	/* The result is readable inside its callback. */
	if (v == NULL || len != 0)
		atomic_store(&eb_err[(intptr_t)user], -1);
	atomic_fetch_add(&cb_calls[(intptr_t)user], 1);
}

static void
on_err(mp_async *r, int err, void *user)
{
	(void)r;
	if (pthread_equal(pthread_self(), main_thread))
		atomic_store(&cb_on_main, 1);
	atomic_store(&eb_err[(intptr_t)user], err);
	atomic_fetch_add(&eb_calls[(intptr_t)user], 1);
}

T_TEST(pool, callbacks_and_error_callbacks_run_once_each_before_get)
{
	mp_async *r[200];
	mp_pool *p;

	main_thread = pthread_self();
	cr_assert_eq(mp_pool_new(&p, NULL), 0);
	for (int i = 0; i < 200; i++) {
		int e = i % 2 ? -(1000 + i) : 0;
		atomic_store(&cb_calls[i], 0);
		atomic_store(&eb_calls[i], 0);
		atomic_store(&eb_err[i], 0);
		cr_assert_eq(mp_pool_apply_async(p, fail_with, &e, sizeof(e),
						 sizeof(int), on_ok, on_err,
						 (void *)(intptr_t)i, &r[i]),
			     0);
	}
	for (int i = 0; i < 200; i++) {
		int want = i % 2 ? -(1000 + i) : 0;
		cr_assert_eq(mp_async_get(r[i], MP_SEC(30)), want);
		/* get has returned: the callback has too. */
		cr_assert_eq(atomic_load(&cb_calls[i]), i % 2 ? 0 : 1);
		cr_assert_eq(atomic_load(&eb_calls[i]), i % 2 ? 1 : 0);
		cr_assert_eq(atomic_load(&eb_err[i]), want);
		cr_assert_eq(mp_async_ready(r[i]), true);
		cr_assert_eq(mp_async_successful(r[i]), i % 2 ? 0 : 1);
	}
	cr_assert_eq(mp_pool_close(p), 0);
	cr_assert_eq(mp_pool_join(p), 0);
	for (int i = 0; i < 200; i++) {
		cr_assert_eq(atomic_load(&cb_calls[i]) +
				     atomic_load(&eb_calls[i]), 1);
		mp_async_free(r[i]);
	}
	cr_assert_eq(atomic_load(&cb_on_main), 0);
	mp_pool_free(p);
}

static mp_pool *cb_pool;
static _Atomic long cb_apply_rc;

static void
apply_in_callback(mp_async *r, void *user)
{
	long x = 1, y;
	mp_async *r2;

	(void)user;
	atomic_store(&cb_apply_rc, mp_pool_apply(cb_pool, square, &x,
						 sizeof(x), &y, sizeof(y)));
	/* Not blocking, so fine from a callback; and its own result reads. */
	if (mp_pool_apply_async(cb_pool, square, &x, sizeof(x), sizeof(y),
				NULL, NULL, NULL, &r2) == 0)
		mp_async_free(r2);
	if (mp_async_get(r, MP_FOREVER) != 0 ||
	    mp_pool_join(cb_pool) != -EDEADLK)
		atomic_store(&cb_apply_rc, 1);
}

T_TEST(pool, blocking_calls_from_a_callback_are_edeadlk)
{
	long x = 3;
	mp_async *r;

	cr_assert_eq(mp_pool_new(&cb_pool, NULL), 0);
	cr_assert_eq(mp_pool_apply_async(cb_pool, square, &x, sizeof(x),
					 sizeof(x), apply_in_callback, NULL,
					 NULL, &r), 0);
	cr_assert_eq(mp_async_get(r, MP_SEC(30)), 0);
	cr_assert_eq(atomic_load(&cb_apply_rc), -EDEADLK);
	mp_async_free(r);
	mp_pool_free(cb_pool);
}

T_TEST(pool, a_worker_killing_itself_fails_exactly_its_task)
{
	enum { N = 1000 };
	long in[N], out[N];
	mp_pool *p;

	shared_init();
	for (long i = 0; i < N; i++)
		in[i] = i;
	cr_assert_eq(mp_pool_new(&p, NULL), 0);
	/* In a map: item 1 fails, every other item is done once. */
	cr_assert_eq(mp_pool_map(p, kill_on_one, in, N, sizeof(long), out,
				 sizeof(long), 50), MP_EWORKER);
	for (long i = 0; i < N; i++) {
		cr_assert_eq(atomic_load(&sh->hits[i]), 1, "item %ld", i);
		if (i != 1)
			cr_assert_eq(out[i], i * i + 1, "item %ld", i);
	}
	/* apply: the same; then the pool goes on. */
	long one = 1, y;
	cr_assert_eq(mp_pool_apply(p, kill_on_one, &one, sizeof(one), &y,
				   sizeof(y)), MP_EWORKER);
	for (long i = 0; i < 1000; i++) {
		long x = i + 2;
		cr_assert_eq(mp_pool_apply(p, square, &x, sizeof(x), &y,
					   sizeof(y)), sizeof(y));
		cr_assert_eq(y, x * x + 1);
	}
	mp_pool_free(p);
	shared_fini();
}

T_TEST(pool, many_crashing_workers_fail_only_their_own_items)
{
	enum { N = 5000 };
	long *in = malloc(N * sizeof(long)), *out = malloc(N * sizeof(long));
	mp_iter *it;
	mp_pool *p;

	shared_init();
	for (long i = 0; i < N; i++)
		in[i] = i;
	cr_assert_eq(mp_pool_new(&p, &(mp_pool_attr){ .processes = 3 }), 0);
	cr_assert_eq(mp_pool_map(p, crash_every_500, in, N, sizeof(long),
				 out, sizeof(long), 100), MP_EWORKER);
	for (long i = 0; i < N; i++) {
		cr_assert_eq(atomic_load(&sh->hits[i]), 1, "item %ld", i);
		if (i % 500 != 499)
			cr_assert_eq(out[i], i * i + 1, "item %ld", i);
		else
			cr_assert_eq(out[i], 0, "item %ld", i);
		atomic_store(&sh->hits[i], 0);
	}
	/* imap_unordered: the same items fail, each reported once. */
	cr_assert_eq(mp_pool_imap_unordered(p, crash_every_500, in, N,
					    sizeof(long), sizeof(long), 7,
					    &it), 0);
	int failed = 0;
	for (long i = 0; i < N; i++) {
		size_t idx;
		long v;
		int rc = mp_iter_next(it, &v, &idx, MP_SEC(30));
		if (idx % 500 == 499) {
			cr_assert_eq(rc, MP_EWORKER, "item %zu", idx);
			failed++;
		} else {
			cr_assert_eq(rc, 0, "item %zu: %d", idx, rc);
			cr_assert_eq(v, (long)(idx * idx + 1));
		}
	}
	cr_assert_eq(failed, N / 500);
	cr_assert_eq(mp_iter_next(it, NULL, NULL, MP_NOWAIT), -ENOENT);
	mp_iter_free(it);
	mp_pool_free(p);
	free(in);
	free(out);
	shared_fini();
}

T_TEST(pool, a_worker_sigkilled_by_another_process_fails_one_task)
{
	enum { N = 1000 };
	long in[N], out[N];
	mp_pool *p;
	mp_async *r;
	int v = 0;

	shared_init();
	cr_assert_eq(mp_pool_new(&p, &(mp_pool_attr){ .processes = 2 }), 0);
	cr_assert_eq(mp_pool_apply_async(p, block, &v, sizeof(v), sizeof(v),
					 NULL, NULL, NULL, &r), 0);
	wait_started(1);
	pid_t victim = atomic_load(&sh->blocked_pid);
	pid_t pids[2];
	int nw = 0;
	/* The second worker may still be forking. */
	for (int64_t t0 = t_now(); t_now() - t0 < MP_SEC(10); usleep(1000)) {
		if ((nw = mp_pool_workers(p, pids, 2)) == 2)
			break;
	}
	cr_assert_eq(nw, 2);
	cr_assert(pids[0] == victim || pids[1] == victim);
	cr_assert_eq(kill(victim, SIGKILL), 0);
	cr_assert_eq(mp_async_get(r, MP_SEC(30)), MP_EWORKER);
	cr_assert_eq(mp_async_successful(r), 0);
	mp_async_free(r);
	for (long i = 0; i < N; i++)
		in[i] = i;
	cr_assert_eq(mp_pool_map(p, square, in, N, sizeof(long), out,
				 sizeof(long), 1), 0);
	for (long i = 0; i < N; i++)
		cr_assert_eq(out[i], i * i + 1);
	mp_pool_free(p);
	shared_fini();
}

T_TEST(pool, maxtasksperchild_1_runs_every_task_in_a_new_worker)
{
	enum { N = 200 };
	pid_t who[N][2];
	mp_pool *p;
	int x = 0;

	cr_assert_eq(mp_pool_new(&p, &(mp_pool_attr){
				 .processes = 2, .maxtasksperchild = 1 }), 0);
	cr_assert_eq(mp_pool_map(p, whoami, &x, 1, sizeof(x), who[0],
				 sizeof(who[0]), 0), 0);
	int xs[N] = { 0 };
	cr_assert_eq(mp_pool_map(p, whoami, xs, N, sizeof(int), who,
				 sizeof(who[0]), 0), 0);
	for (int i = 0; i < N; i++) {
		for (int k = 0; k < i; k++)
			cr_assert_neq(who[i][0], who[k][0],
				      "tasks %d and %d shared a worker", k, i);
	}
	mp_pool_free(p);
}

static void
init(void *arg)
{
	(void)arg;
	atomic_fetch_add(&sh->runs, 1);
}

T_TEST(pool, initializer_runs_once_in_each_worker)
{
	mp_pool *p;
	pid_t who[400][2];
	int xs[400] = { 0 };

	shared_init();
	cr_assert_eq(mp_pool_new(&p, &(mp_pool_attr){
				 .processes = 3, .initializer = init }), 0);
	cr_assert_eq(mp_pool_map(p, whoami, xs, 400, sizeof(int), who,
				 sizeof(who[0]), 1), 0);
	cr_assert_eq(mp_pool_close(p), 0);
	cr_assert_eq(mp_pool_join(p), 0);
	cr_assert_eq(atomic_load(&sh->runs), 3);
	mp_pool_free(p);
	shared_fini();
}

static _Atomic int cancelled_eb;

static void
count_cancel(mp_async *r, int err, void *user)
{
	(void)r;
	(void)user;
	if (err == -ECANCELED)
		atomic_fetch_add(&cancelled_eb, 1);
}

T_TEST(pool, terminate_fails_pending_work_with_ecanceled)
{
	enum { N = 50 };
	mp_async *r[N];
	mp_iter *it;
	mp_pool *p;
	pid_t spawner;
	int v = 0;
	long l = 0;

	shared_init();
	atomic_store(&cancelled_eb, 0);
	cr_assert_eq(mp_pool_new(&p, &(mp_pool_attr){ .processes = 2 }), 0);
	pid_t w[2];
	cr_assert_eq(mp_pool_apply(p, whoami, &v, sizeof(v), w, sizeof(w)),
		     sizeof(w));
	spawner = w[1];
	for (int i = 0; i < N; i++)
		cr_assert_eq(mp_pool_apply_async(p, block, &v, sizeof(v),
						 sizeof(v), NULL,
						 count_cancel, NULL, &r[i]),
			     0);
	/* Blocking too: a worker left idle may steal it, but not end it. */
	cr_assert_eq(mp_pool_imap(p, block, &l, 1, sizeof(l), sizeof(int), 0,
				  &it), 0);
	wait_started(2);
	cr_assert_eq(mp_pool_terminate(p), 0);
	for (int i = 0; i < N; i++) {
		cr_assert_eq(mp_async_get(r[i], MP_NOWAIT), -ECANCELED);
		mp_async_free(r[i]);
	}
	cr_assert_eq(atomic_load(&cancelled_eb), N);
	cr_assert_eq(mp_iter_next(it, &l, NULL, MP_SEC(5)), -ECANCELED);
	mp_iter_free(it);
	cr_assert_eq(mp_pool_apply_async(p, square, &l, sizeof(l), sizeof(l),
					 NULL, NULL, NULL, &r[0]), -EINVAL);
	cr_assert_eq(mp_pool_join(p), 0);
	cr_assert_eq(mp_pool_terminate(p), 0);
	/* join has reaped the spawner; its workers died with it. */
	cr_assert_eq(kill(spawner, 0), -1);
	mp_pool_free(p);
	shared_fini();
}

T_TEST(pool, a_long_task_holds_back_no_other_task)
{
	enum { N = 200 };
	mp_async *slow, *r[N];
	mp_pool *p;
	int v = 0;

	shared_init();
	cr_assert_eq(mp_pool_new(&p, &(mp_pool_attr){ .processes = 2 }), 0);
	cr_assert_eq(mp_pool_apply_async(p, block, &v, sizeof(v), sizeof(v),
					 NULL, NULL, NULL, &slow), 0);
	for (long i = 0; i < N; i++)
		cr_assert_eq(mp_pool_apply_async(p, square, &i, sizeof(i),
						 sizeof(i), NULL, NULL, NULL,
						 &r[i]), 0);
	/* Whatever was queued behind the blocked task is taken back and
	 * run by the other worker. */
	for (long i = 0; i < N; i++) {
		cr_assert_eq(mp_async_get(r[i], MP_SEC(20)), 0, "task %ld", i);
		cr_assert_eq(*(const long *)mp_async_result(r[i], NULL),
			     i * i + 1);
		mp_async_free(r[i]);
	}
	cr_assert_eq(mp_async_ready(slow), false);
	atomic_store(&sh->release, 1);
	cr_assert_eq(mp_async_get(slow, MP_SEC(20)), 0);
	mp_async_free(slow);
	/* A map still spreads over both workers after that. */
	long in[1000], out[1000];
	for (long i = 0; i < 1000; i++)
		in[i] = i;
	cr_assert_eq(mp_pool_map(p, square, in, 1000, sizeof(long), out,
				 sizeof(long), 10), 0);
	for (long i = 0; i < 1000; i++)
		cr_assert_eq(out[i], i * i + 1);
	mp_pool_free(p);
	shared_fini();
}

T_TEST(pool, get_and_wait_time_out_while_the_task_runs)
{
	mp_pool *p;
	mp_async *r;
	int v = 0;
	size_t len;

	shared_init();
	cr_assert_eq(mp_pool_new(&p, NULL), 0);
	cr_assert_eq(mp_pool_apply_async(p, block, &v, sizeof(v), sizeof(v),
					 NULL, NULL, NULL, &r), 0);
	cr_assert_eq(mp_async_get(r, MP_NOWAIT), -EAGAIN);
	int64_t t0 = t_now();
	cr_assert_eq(mp_async_get(r, MP_MSEC(50)), -ETIMEDOUT);
	cr_assert_geq(t_now() - t0, MP_MSEC(50));
	cr_assert_eq(mp_async_wait(r, MP_MSEC(20)), 0);
	cr_assert_eq(mp_async_wait(r, MP_NOWAIT), 0);
	cr_assert_eq(mp_async_ready(r), false);
	cr_assert_eq(mp_async_successful(r), -EINVAL);
	cr_assert_null(mp_async_result(r, &len));
	cr_assert_eq(len, 0);
	atomic_store(&sh->release, 1);
	cr_assert_eq(mp_async_wait(r, MP_SEC(30)), 1);
	cr_assert_eq(mp_async_get(r, MP_NOWAIT), 0);
	const int *res = mp_async_result(r, &len);
	cr_assert_eq(len, sizeof(int));
	cr_assert_eq(*res, 1);
	/* Readable after close and join too. */
	cr_assert_eq(mp_pool_close(p), 0);
	cr_assert_eq(mp_pool_join(p), 0);
	mp_pool_free(p);
	cr_assert_eq(mp_async_get(r, MP_NOWAIT), 0);
	cr_assert_eq(*(const int *)mp_async_result(r, NULL), 1);
	mp_async_free(r);
	shared_fini();
}

T_TEST(pool, a_task_past_its_time_limit_fails_with_etimedout)
{
	mp_pool *p;
	int v = 0;
	long x = 5, y;

	shared_init();
	cr_assert_eq(mp_pool_new(&p, &(mp_pool_attr){
				 .processes = 1,
				 .task_timeout_ns = MP_MSEC(100) }), 0);
	int64_t t0 = t_now();
	cr_assert_eq(mp_pool_apply(p, block, &v, sizeof(v), &v, sizeof(v)),
		     -ETIMEDOUT);
	cr_assert_geq(t_now() - t0, MP_MSEC(100));
	/* A replacement worker serves the next ones. */
	for (int i = 0; i < 100; i++)
		cr_assert_eq(mp_pool_apply(p, square, &x, sizeof(x), &y,
					   sizeof(y)), sizeof(y));
	cr_assert_eq(y, 26);
	mp_pool_free(p);
	shared_fini();
}

T_TEST(pool, bad_arguments_are_refused)
{
	mp_pool *p;
	mp_async *r;
	mp_iter *it;
	long x = 0, y;
	const void *cols[] = { &x };
	const size_t sizes[] = { sizeof(x) };
	static char big[1 << 13];

	cr_assert_eq(mp_pool_new(NULL, NULL), -EINVAL);
	cr_assert_eq(mp_pool_new(&p, &(mp_pool_attr){ .processes = -1 }),
		     -EINVAL);
	cr_assert_eq(mp_pool_new(&p, &(mp_pool_attr){
				 .task_timeout_ns = -5 }), -EINVAL);
	cr_assert_eq(mp_pool_new(&p, &(mp_pool_attr){ .ring_bytes = 100 }),
		     -EINVAL);
	cr_assert_eq(mp_pool_new(&p, &(mp_pool_attr){ .processes = 1,
						       .ring_bytes = 8192 }),
		     0);
	cr_assert_eq(mp_pool_apply(NULL, square, &x, 8, &y, 8), -EINVAL);
	cr_assert_eq(mp_pool_apply(p, NULL, &x, 8, &y, 8), -EINVAL);
	cr_assert_eq(mp_pool_apply(p, square, NULL, 8, &y, 8), -EINVAL);
	cr_assert_eq(mp_pool_apply(p, square, &x, 8, NULL, 8), -EINVAL);
	cr_assert_eq(mp_pool_apply(p, square, big, sizeof(big), &y, 8),
		     -EMSGSIZE);
	cr_assert_eq(mp_pool_apply(p, square, &x, 8, big, sizeof(big)),
		     -EMSGSIZE);
	/* The task's own error (its out_cap is too small). */
	cr_assert_eq(mp_pool_apply(p, square, &x, 8, &y, 4), -EINVAL);
	cr_assert_eq(mp_pool_apply_async(p, square, &x, 8, 8, NULL, NULL,
					 NULL, NULL), -EINVAL);
	cr_assert_eq(mp_pool_map(p, square, NULL, 4, 8, &y, 8, 0), -EINVAL);
	cr_assert_eq(mp_pool_map(p, square, &x, 1, 0, &y, 8, 0), -EINVAL);
	cr_assert_eq(mp_pool_map(p, square, &x, 1, 8, NULL, 8, 0), -EINVAL);
	cr_assert_eq(mp_pool_map_async(p, square, &x, 1, 8, &y, 8, 0, NULL,
				       NULL, NULL, NULL), -EINVAL);
	cr_assert_eq(mp_pool_imap(p, square, &x, 1, 8, 8, 0, NULL), -EINVAL);
	cr_assert_eq(mp_pool_imap_unordered(p, NULL, &x, 1, 8, 8, 0, &it),
		     -EINVAL);
	cr_assert_eq(mp_iter_next(NULL, &y, NULL, 0), -EINVAL);
	cr_assert_eq(mp_pool_starmap(p, NULL, 1, cols, sizes, 1, &y, 8, 0),
		     -EINVAL);
	cr_assert_eq(mp_pool_starmap(p, star3, 0, cols, sizes,
				     1, &y, 8, 0), -EINVAL);
	cr_assert_eq(mp_pool_starmap(p, star3,
				     MP_STARMAP_MAXCOLS + 1, cols, sizes, 1,
				     &y, 8, 0), -EINVAL);
	cr_assert_eq(mp_pool_starmap_async(p, star3, 1, cols,
					   sizes, 1, &y, 8, 0, NULL, NULL,
					   NULL, NULL), -EINVAL);
	cr_assert_eq(mp_async_get(NULL, 0), -EINVAL);
	cr_assert_eq(mp_async_wait(NULL, 0), -EINVAL);
	cr_assert_eq(mp_async_successful(NULL), -EINVAL);
	cr_assert_eq(mp_async_ready(NULL), false);
	cr_assert_null(mp_async_result(NULL, NULL));
	mp_async_free(NULL);
	mp_iter_free(NULL);
	cr_assert_eq(mp_pool_apply_async(p, square, &x, 8, 8, NULL, NULL,
					 NULL, &r), 0);
	cr_assert_eq(mp_async_get(r, -7), -EINVAL);
	cr_assert_eq(mp_async_get(r, MP_SEC(30)), 0);
	mp_async_free(r);
	cr_assert_eq(mp_pool_workers(NULL, NULL, 0), -EINVAL);
	cr_assert_eq(mp_pool_join(p), -EINVAL);	/* not closed */
	cr_assert_eq(mp_pool_close(NULL), -EINVAL);
	cr_assert_eq(mp_pool_terminate(NULL), -EINVAL);
	cr_assert_eq(mp_pool_join(NULL), -EINVAL);
	cr_assert_eq(mp_pool_close(p), 0);
	cr_assert_eq(mp_pool_close(p), 0);
	cr_assert_eq(mp_pool_apply(p, square, &x, 8, &y, 8), -EINVAL);
	cr_assert_eq(mp_pool_map(p, square, &x, 1, 8, &y, 8, 0), -EINVAL);
	cr_assert_eq(mp_pool_imap(p, square, &x, 1, 8, 8, 0, &it), -EINVAL);
	cr_assert_eq(mp_pool_starmap(p, star3, 1, cols, sizes,
				     1, &y, 8, 0), -EINVAL);
	cr_assert_eq(mp_pool_join(p), 0);
	cr_assert_eq(mp_pool_join(p), 0);
	mp_pool_free(p);
	mp_pool_free(NULL);
}

/* Children of ours in state Z, and whether pid still exists. */
static int
zombie_children(void)
{
	DIR *d = opendir("/proc");
	struct dirent *e;
	int n = 0;

	cr_assert_not_null(d);
	while ((e = readdir(d)) != NULL) {
		char path[300], buf[512], st;
		int ppid;
		if (e->d_name[0] < '0' || e->d_name[0] > '9')
			continue;
		snprintf(path, sizeof(path), "/proc/%s/stat", e->d_name);
		FILE *f = fopen(path, "r");
		if (f == NULL)
			continue;
		if (fgets(buf, sizeof(buf), f) != NULL) {
			char *rp = strrchr(buf, ')');
			if (rp != NULL && sscanf(rp + 2, "%c %d", &st,
						 &ppid) == 2 &&
			    ppid == getpid() && st == 'Z')
				n++;
		}
		fclose(f);
	}
	closedir(d);
	return n;
}

/* pid has exited: no such process, or a zombie (its reaper is not us). */
static bool
gone(pid_t pid)
{
	char path[64], buf[512];
	bool z = false;

	cr_assert_gt(pid, 0);
	if (kill(pid, 0) < 0 && errno == ESRCH)
		return true;
	snprintf(path, sizeof(path), "/proc/%d/stat", (int)pid);
	FILE *f = fopen(path, "r");
	if (f == NULL)
		return true;
	if (fgets(buf, sizeof(buf), f) != NULL) {
		char *rp = strrchr(buf, ')');
		z = rp != NULL && (rp[2] == 'Z' || rp[2] == 'X');
	}
	fclose(f);
	return z;
}

T_TEST(pool, free_leaves_no_process_and_no_zombie)
{
	enum { N = 64 };
	pid_t who[N][2];
	int xs[N] = { 0 };
	mp_pool *p;

	for (int round = 0; round < 2; round++) {
		cr_assert_eq(mp_pool_new(&p, &(mp_pool_attr){
					 .processes = 3 }), 0);
		cr_assert_eq(mp_pool_map(p, whoami, xs, N, sizeof(int), who,
					 sizeof(who[0]), 1), 0);
		/* Round 0: free a running pool; round 1: after close+join. */
		if (round == 1) {
			cr_assert_eq(mp_pool_close(p), 0);
			cr_assert_eq(mp_pool_join(p), 0);
		}
		mp_pool_free(p);
		cr_assert(gone(who[0][1]), "the spawner is left");
		for (int i = 0; i < N; i++)
			cr_assert(gone(who[i][0]), "worker %d is left",
				  (int)who[i][0]);
		cr_assert_eq(zombie_children(), 0);
	}
}

/* A pool owner that reports its workers and spawner, then dies. */
static int
owner_dies(void *arg)
{
	pid_t *out = arg;
	mp_pool *p;
	int xs[16] = { 0 };
	pid_t who[16][2];
	int v = 0;

	T_CHECK(mp_pool_new(&p, &(mp_pool_attr){ .processes = 2 }) == 0);
	T_CHECK(mp_pool_map(p, whoami, xs, 16, sizeof(int), who,
			    sizeof(who[0]), 1) == 0);
	out[0] = who[0][1];
	out[1] = out[2] = who[0][0];
	for (int i = 0; i < 16; i++) {
		if (who[i][0] != out[1])
			out[2] = who[i][0];
	}
	/* Leave a task running, then die without freeing anything. */
	mp_async *r;
	T_CHECK(mp_pool_apply_async(p, block, &v, sizeof(v), sizeof(v), NULL,
				    NULL, NULL, &r) == 0);
	while (atomic_load(&sh->started) < 1)
		usleep(1000);
	atomic_store(&sh->blocked_pid, 0);
	__atomic_store_n(&out[3], 1, __ATOMIC_RELEASE);
	kill(getpid(), SIGKILL);
	return T_FAIL;
}

T_TEST(pool, workers_and_spawner_exit_when_the_owner_is_killed)
{
	pid_t *pids = mp_shm_alloc(4 * sizeof(pid_t));

	shared_init();
	pid_t c = t_spawn(owner_dies, pids);
	cr_assert_eq(t_wait_status(c, 30000), -SIGKILL);
	cr_assert_eq(pids[3], 1);
	int64_t t0 = t_now();
	for (int i = 0; i < 3; i++) {
		while (!gone(pids[i]) && t_now() - t0 < MP_SEC(10))
			usleep(1000);
		cr_assert(gone(pids[i]), "process %d outlived its owner",
			  (int)pids[i]);
	}
	mp_shm_free(pids);
	shared_fini();
}
