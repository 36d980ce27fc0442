/* SPDX-License-Identifier: MIT */
/*
 * The Pool's threads under ThreadSanitizer: several user threads submit
 * while the handler thread dispatches, copies results into their memory
 * and runs callbacks; workers are SIGKILLed and the pool is terminated
 * while it is busy.  The callbacks write plain (non-atomic) records that
 * the submitting threads read after mp_async_get: the contract that a
 * callback has returned before get returns is exactly a happens-before
 * edge, which TSan checks.
 *
 * Each pool is made while this process has no other thread, so that its
 * spawner (and the workers) are forks of a single-threaded process.
 */
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <string.h>
#include <sys/types.h>

#include <mproc.h>

#include "tests/tsan/tsan.h"
#include "tests/pool_tasks.h"

/* Words shared with the workers. */
struct shared {
	_Atomic int release;	/* block_task returns once set */
	_Atomic int started;	/* block_task runs started */
	_Atomic int blocked_pid; /* the last block_task's worker */
};
static struct shared *sh;

/* Odd items fail with -(1000 + v); even ones square. */
static ssize_t
fail_odd(const void *in, size_t len, void *out, size_t cap)
{
	long v;

	memcpy(&v, in, sizeof(v));
	if (v % 2)
		return -(1000 + v);
	return square(in, len, out, cap);
}

/* Item 7 SIGKILLs its own worker; the others square. */
static ssize_t
kill_on_seven(const void *in, size_t len, void *out, size_t cap)
{
	long v;

	memcpy(&v, in, sizeof(v));
	if (v == 7)
		kill(getpid(), SIGKILL);
	return square(in, len, out, cap);
}

/* Reports its worker, waits for release, then squares. */
static ssize_t
block_task(const void *in, size_t len, void *out, size_t cap)
{
	atomic_store(&sh->blocked_pid, getpid());
	atomic_fetch_add(&sh->started, 1);
	while (!atomic_load(&sh->release))
		usleep(200);
	return square(in, len, out, cap);
}

/* Sleeps its argument in milliseconds, then squares it. */
static ssize_t
nap(const void *in, size_t len, void *out, size_t cap)
{
	long v;

	memcpy(&v, in, sizeof(v));
	usleep((useconds_t)v * 1000);
	return square(in, len, out, cap);
}

/* a * b + c, a starmap of three columns. */
static ssize_t
fma3(const void *const args[], void *out, size_t cap)
{
	long a, b, c, r;

	if (cap < sizeof(r))
		return -EINVAL;
	memcpy(&a, args[0], sizeof(a));
	memcpy(&b, args[1], sizeof(b));
	memcpy(&c, args[2], sizeof(c));
	r = a * b + c;
	memcpy(out, &r, sizeof(r));
	return sizeof(r);
}

static long
sq(long v)
{
	return v * v + 1;
}

static void
wait_started(int n)
{
	long long t0 = tsan_now();

	while (atomic_load(&sh->started) < n) {
		CHECK(tsan_now() - t0 < 60000000000LL);
		usleep(500);
	}
}

/* ------------------------------------------------------------------ */
/* Phase 1: callbacks and error callbacks for several submitting threads */

#define NT 3		/* submitting threads */
#define NA 400		/* apply_async each */
#define NM 3		/* map_async each */
#define MAPN 2000	/* items a map */

/* Written by callbacks on the handler thread, read by the submitter after
 * get: plain fields on purpose. */
struct rec {
	long value;
	int err;
	int calls;
	pthread_t thread;
	mp_async *follow;	/* a submission made from the callback */
	long follow_arg;
};

struct maprec {
	long sum;
	int calls;
	pthread_t thread;
};

static mp_pool *pool;
static struct rec recs[NT][NA];
static struct maprec maprecs[NT][NM];

static void
on_ok(mp_async *r, void *user)
{
	struct rec *x = user;
	size_t len;
	const long *v = mp_async_result(r, &len);

	/* Its own result reads from the callback: it is filled. */
	CHECK(v != NULL && len == sizeof(long));
	CHECK_EQ(mp_async_get(r, MP_NOWAIT), 0);
	x->value = *v;
	x->calls++;
	x->thread = pthread_self();
	if (x->value % 7 == 0) {
		/* Submitting from a callback does not wait: allowed. */
		x->follow_arg = x->value;
		CHECK_EQ(mp_pool_apply_async(pool, square, &x->follow_arg,
					     sizeof(long), sizeof(long), NULL,
					     NULL, NULL, &x->follow), 0);
	}
}

static void
on_err(mp_async *r, int err, void *user)
{
	struct rec *x = user;

	CHECK_EQ(mp_async_successful(r), 0);
	x->err = err;
	x->calls++;
	x->thread = pthread_self();
}

static void
on_map(mp_async *r, void *user)
{
	struct maprec *m = user;
	size_t len;
	const long *v = mp_async_result(r, &len);

	CHECK(v != NULL && len == MAPN * sizeof(long));
	for (size_t i = 0; i < MAPN; i++)
		m->sum += v[i];
	m->calls++;
	m->thread = pthread_self();
}

/* Results freed before they are ready: the handler holds the last
 * reference and frees them after their callbacks. */
#define NF 60
static _Atomic int ff_calls;

static void
on_forgotten(mp_async *r, void *user)
{
	size_t len;
	const long *v = mp_async_result(r, &len);

	CHECK(v != NULL && len == sizeof(long));
	CHECK_EQ(*v, sq((long)(intptr_t)user));
	atomic_fetch_add(&ff_calls, 1);
}

static void
on_star(mp_async *r, void *user)
{
	struct maprec *m = user;
	size_t len;
	const long *v = mp_async_result(r, &len);

	CHECK(v != NULL && len == 100 * sizeof(long));
	for (size_t i = 0; i < 100; i++)
		m->sum += v[i];
	m->calls++;
}

static void *
submitter(void *arg)
{
	int t = (int)(intptr_t)arg;
	mp_async *a[NA], *m[NM];
	static long items[NT][MAPN];
	static long results[NT][NM][MAPN];
	long want_sum = 0;

	for (long i = 0; i < MAPN; i++) {
		items[t][i] = i + t;
		want_sum += sq(i + t);
	}
	for (int k = 0; k < NM; k++)
		CHECK_EQ(mp_pool_map_async(pool, square, items[t], MAPN,
					   sizeof(long), results[t][k],
					   sizeof(long), 0, on_map, NULL,
					   &maprecs[t][k], &m[k]), 0);
	for (int i = 0; i < NA; i++) {
		long v = t * 1000 + i;
		CHECK_EQ(mp_pool_apply_async(pool, fail_odd, &v, sizeof(v),
					     sizeof(long), on_ok, on_err,
					     &recs[t][i], &a[i]), 0);
	}
	/* A starmap whose callback reads the results the handler wrote. */
	static long ca[NT][100], cb[NT][100], cc[NT][100], cr[NT][100];
	static struct maprec starrec[NT];
	const void *cols[3] = { ca[t], cb[t], cc[t] };
	const size_t csz[3] = { sizeof(long), sizeof(long), sizeof(long) };
	mp_async *st;
	for (long i = 0; i < 100; i++) {
		ca[t][i] = i;
		cb[t][i] = t + 1;
		cc[t][i] = 7;
	}
	CHECK_EQ(mp_pool_starmap_async(pool, fma3, 3, cols, csz, 100, cr[t],
				       sizeof(long), 0, on_star, NULL,
				       &starrec[t], &st), 0);
	for (int i = 0; i < NF; i++) {
		long v = 2 * i;
		mp_async *f;
		CHECK_EQ(mp_pool_apply_async(pool, square, &v, sizeof(v),
					     sizeof(long), on_forgotten, NULL,
					     (void *)(intptr_t)v, &f), 0);
		mp_async_free(f);
	}
	/* Blocking calls from this thread meanwhile: the handler copies
	 * straight into our memory. */
	for (int i = 0; i < 20; i++) {
		long v = i, out = 0, in[16], res[16];
		CHECK_EQ(mp_pool_apply(pool, square, &v, sizeof(v), &out,
				       sizeof(out)), sizeof(long));
		CHECK_EQ(out, sq(v));
		for (int k = 0; k < 16; k++)
			in[k] = i + k;
		CHECK_EQ(mp_pool_map(pool, square, in, 16, sizeof(long), res,
				     sizeof(long), 3), 0);
		for (int k = 0; k < 16; k++)
			CHECK_EQ(res[k], sq(i + k));
	}
	for (int i = 0; i < NA; i++) {
		long v = t * 1000 + i;
		struct rec *x = &recs[t][i];
		int rc = mp_async_get(a[i], MP_SEC(60));
		if (v % 2) {
			CHECK_EQ(rc, -(1000 + v));
			CHECK_EQ(x->err, -(1000 + v));
		} else {
			CHECK_EQ(rc, 0);
			CHECK_EQ(x->value, sq(v));
			size_t len;
			const long *p = mp_async_result(a[i], &len);
			CHECK(p != NULL && *p == x->value);
		}
		CHECK_EQ(x->calls, 1);
		CHECK(!pthread_equal(x->thread, pthread_self()));
		if (x->follow != NULL) {
			size_t len;
			CHECK_EQ(mp_async_get(x->follow, MP_SEC(60)), 0);
			CHECK_EQ(*(const long *)mp_async_result(x->follow,
								&len),
				 sq(x->follow_arg));
			mp_async_free(x->follow);
		}
		mp_async_free(a[i]);
	}
	CHECK_EQ(mp_async_get(st, MP_SEC(60)), 0);
	CHECK_EQ(starrec[t].calls, 1);
	long want_star = 0;
	for (long i = 0; i < 100; i++) {
		CHECK_EQ(cr[t][i], i * (t + 1) + 7);
		want_star += i * (t + 1) + 7;
	}
	CHECK_EQ(starrec[t].sum, want_star);
	mp_async_free(st);
	for (int k = 0; k < NM; k++) {
		CHECK_EQ(mp_async_get(m[k], MP_SEC(60)), 0);
		CHECK_EQ(maprecs[t][k].calls, 1);
		CHECK_EQ(maprecs[t][k].sum, want_sum);
		for (long i = 0; i < MAPN; i++)
			CHECK_EQ(results[t][k][i], sq(i + t));
		mp_async_free(m[k]);
	}
	return NULL;
}

static void
phase_callbacks(void)
{
	pthread_t th[NT];

	PHASE("callbacks from several submitting threads");
	CHECK_EQ(mp_pool_new(&pool, &(mp_pool_attr){ .processes = 3 }), 0);
	for (int t = 0; t < NT; t++)
		CHECK_EQ(pthread_create(&th[t], NULL, submitter,
					(void *)(intptr_t)t), 0);
	for (int t = 0; t < NT; t++)
		pthread_join(th[t], NULL);
	/* Every callback ran on one thread, the handler. */
	pthread_t h = recs[0][0].thread;
	for (int t = 0; t < NT; t++) {
		for (int i = 0; i < NA; i++)
			CHECK(pthread_equal(recs[t][i].thread, h));
		for (int k = 0; k < NM; k++)
			CHECK(pthread_equal(maprecs[t][k].thread, h));
	}
	CHECK_EQ(mp_pool_close(pool), 0);
	CHECK_EQ(mp_pool_join(pool), 0);
	/* join waited for every submitted job, freed ones included. */
	CHECK_EQ(atomic_load(&ff_calls), NT * NF);
	mp_pool_free(pool);
}

/* ------------------------------------------------------------------ */
/* Phase 2: imap iterators on several threads, one freed early */

#define IMAPN 1500

static long imap_items[IMAPN];

static void *
imap_ordered(void *arg)
{
	mp_iter *it;
	size_t idx;
	long v;

	(void)arg;
	CHECK_EQ(mp_pool_imap(pool, square, imap_items, IMAPN, sizeof(long),
			      sizeof(long), 3, &it), 0);
	for (size_t i = 0; i < IMAPN; i++) {
		CHECK_EQ(mp_iter_next(it, &v, &idx, MP_SEC(60)), 0);
		CHECK_EQ(idx, i);
		CHECK_EQ(v, sq((long)i));
	}
	CHECK_EQ(mp_iter_next(it, &v, &idx, MP_NOWAIT), -ENOENT);
	mp_iter_free(it);
	return NULL;
}

static void *
imap_unordered(void *arg)
{
	static unsigned char seen[IMAPN];
	mp_iter *it;
	size_t idx;
	long v;

	(void)arg;
	CHECK_EQ(mp_pool_imap_unordered(pool, fail_odd, imap_items, IMAPN,
					sizeof(long), sizeof(long), 1, &it),
		 0);
	for (size_t i = 0; i < IMAPN; i++) {
		int rc = mp_iter_next(it, &v, &idx, MP_SEC(60));
		CHECK(idx < IMAPN && !seen[idx]);
		seen[idx] = 1;
		if (idx % 2)
			CHECK_EQ(rc, -(1000 + (long)idx));
		else
			CHECK(rc == 0 && v == sq((long)idx));
	}
	CHECK_EQ(mp_iter_next(it, &v, &idx, MP_NOWAIT), -ENOENT);
	mp_iter_free(it);
	return NULL;
}

static void *
imap_abandoned(void *arg)
{
	mp_iter *it;
	size_t idx;
	long v;

	(void)arg;
	for (int round = 0; round < 3; round++) {
		CHECK_EQ(mp_pool_imap(pool, square, imap_items, IMAPN,
				      sizeof(long), sizeof(long), 1, &it), 0);
		for (size_t i = 0; i < 50; i++) {
			CHECK_EQ(mp_iter_next(it, &v, &idx, MP_SEC(60)), 0);
			CHECK(idx == i && v == sq((long)i));
		}
		/* Freed with most items undelivered or not dispatched. */
		mp_iter_free(it);
	}
	return NULL;
}

static void *
joiner(void *arg)
{
	(void)arg;
	CHECK_EQ(mp_pool_join(pool), 0);
	return NULL;
}

/* A thread started after the pool was joined: not the handler, even
 * if it reuses the handler's thread id (glibc hands a joined thread's
 * descriptor to the next thread it creates). */
static void *
after_join(void *arg)
{
	long v = 1, out;

	(void)arg;
	CHECK_EQ(mp_pool_join(pool), 0);
	CHECK_EQ(mp_pool_apply(pool, square, &v, sizeof(v), &out,
			       sizeof(out)), -EINVAL);
	CHECK_EQ(mp_pool_terminate(pool), 0);
	CHECK_EQ(mp_pool_join(pool), 0);
	return NULL;
}

static void
phase_imap(void)
{
	pthread_t th[3];

	PHASE("imap iterators on several threads, one freed early");
	for (long i = 0; i < IMAPN; i++)
		imap_items[i] = i;
	CHECK_EQ(mp_pool_new(&pool, &(mp_pool_attr){ .processes = 2 }), 0);
	CHECK_EQ(pthread_create(&th[0], NULL, imap_ordered, NULL), 0);
	CHECK_EQ(pthread_create(&th[1], NULL, imap_unordered, NULL), 0);
	CHECK_EQ(pthread_create(&th[2], NULL, imap_abandoned, NULL), 0);
	for (int t = 0; t < 3; t++)
		pthread_join(th[t], NULL);
	CHECK_EQ(mp_pool_close(pool), 0);
	/* Three joins at once: one does the work, all return 0. */
	for (int t = 0; t < 2; t++)
		CHECK_EQ(pthread_create(&th[t], NULL, joiner, NULL), 0);
	CHECK_EQ(mp_pool_join(pool), 0);
	for (int t = 0; t < 2; t++)
		pthread_join(th[t], NULL);
	mp_pool_free(pool);
}

/* This process's mproc regions (memfd mappings). */
static int
regions(void)
{
	char line[512];
	int n = 0;
	FILE *f = fopen("/proc/self/maps", "r");

	CHECK(f != NULL);
	while (fgets(line, sizeof(line), f) != NULL)
		n += strstr(line, "memfd:mproc") != NULL;
	fclose(f);
	return n;
}

static void *
free_after_join(void *arg)
{
	(void)arg;
	mp_pool_free(pool);
	return NULL;
}

static void
phase_after_join(void)
{
	pthread_t th;

	PHASE("threads started after join are not the handler");
	for (int round = 0; round < 3; round++) {
		int before = regions();
		CHECK_EQ(mp_pool_new(&pool, &(mp_pool_attr){ .processes = 1 }),
			 0);
		CHECK_EQ(mp_pool_close(pool), 0);
		CHECK_EQ(mp_pool_join(pool), 0);
		/* The next thread made may get the handler's old id. */
		CHECK_EQ(pthread_create(&th, NULL, after_join, NULL), 0);
		pthread_join(th, NULL);
		CHECK_EQ(pthread_create(&th, NULL, free_after_join, NULL), 0);
		pthread_join(th, NULL);
		/* The free released the pool (it does nothing on the
		 * handler thread). */
		CHECK_EQ(regions(), before);
	}
}

/* ------------------------------------------------------------------ */
/* Phase 3: workers SIGKILLed while other threads submit */

static _Atomic int kill_done;

static void *
map_loop(void *arg)
{
	long in[64], out[64];
	int rounds = 0;

	(void)arg;
	for (long i = 0; i < 64; i++)
		in[i] = i;
	/* Until the kills are over, and a few rounds at least. */
	while (!atomic_load(&kill_done) || rounds < 5) {
		memset(out, 0, sizeof(out));
		CHECK_EQ(mp_pool_map(pool, square, in, 64, sizeof(long), out,
				     sizeof(long), 4), 0);
		for (long i = 0; i < 64; i++)
			CHECK_EQ(out[i], sq(i));
		rounds++;
	}
	return NULL;
}

static void *
self_killing_map(void *arg)
{
	long in[40], out[40];

	(void)arg;
	for (long i = 0; i < 40; i++)
		in[i] = i;
	CHECK_EQ(mp_pool_map(pool, kill_on_seven, in, 40, sizeof(long), out,
			     sizeof(long), 5), MP_EWORKER);
	for (long i = 0; i < 40; i++) {
		if (i != 7)
			CHECK_EQ(out[i], sq(i));
	}
	return NULL;
}

static void
phase_kill(void)
{
	pthread_t th[2];
	struct rec x = { 0 };
	mp_async *a;
	long v = 5;

	PHASE("workers SIGKILLed while other threads submit");
	atomic_store(&sh->release, 0);
	atomic_store(&sh->started, 0);
	atomic_store(&kill_done, 0);
	CHECK_EQ(mp_pool_new(&pool, &(mp_pool_attr){ .processes = 2 }), 0);
	CHECK_EQ(mp_pool_apply_async(pool, block_task, &v, sizeof(v),
				     sizeof(long), on_ok, on_err, &x, &a), 0);
	wait_started(1);
	CHECK_EQ(pthread_create(&th[0], NULL, map_loop, NULL), 0);
	CHECK_EQ(pthread_create(&th[1], NULL, self_killing_map, NULL), 0);
	CHECK_EQ(kill(atomic_load(&sh->blocked_pid), SIGKILL), 0);
	CHECK_EQ(mp_async_get(a, MP_SEC(60)), MP_EWORKER);
	CHECK_EQ(x.err, MP_EWORKER);
	CHECK_EQ(x.calls, 1);
	mp_async_free(a);
	pthread_join(th[1], NULL);
	atomic_store(&kill_done, 1);
	pthread_join(th[0], NULL);
	atomic_store(&sh->release, 1);
	CHECK_EQ(mp_pool_close(pool), 0);
	CHECK_EQ(mp_pool_join(pool), 0);
	mp_pool_free(pool);
}

/*
 * Worker pids read while workers are replaced all the time (one task a
 * worker): the handler resets a dead worker's slot as another thread
 * reads the slots.
 */
static _Atomic int churn_done;

static void *
pid_reader(void *arg)
{
	pid_t pids[4];
	long reads = 0;

	(void)arg;
	while (!atomic_load(&churn_done) || reads < 100) {
		int n = mp_pool_workers(pool, pids, 4);
		CHECK(n >= 0 && n <= 2);
		for (int i = 0; i < n; i++)
			CHECK(pids[i] > 0 && pids[i] != getpid());
		reads++;
	}
	return NULL;
}

static void
phase_churn(void)
{
	pthread_t th[2];
	long in[300], out[300];

	PHASE("worker pids read while workers are replaced");
	for (long i = 0; i < 300; i++)
		in[i] = i;
	atomic_store(&churn_done, 0);
	CHECK_EQ(mp_pool_new(&pool, &(mp_pool_attr){
				     .processes = 2, .maxtasksperchild = 1 }),
		 0);
	for (int t = 0; t < 2; t++)
		CHECK_EQ(pthread_create(&th[t], NULL, pid_reader, NULL), 0);
	CHECK_EQ(mp_pool_map(pool, square, in, 300, sizeof(long), out,
			     sizeof(long), 1), 0);
	for (long i = 0; i < 300; i++)
		CHECK_EQ(out[i], sq(i));
	atomic_store(&churn_done, 1);
	for (int t = 0; t < 2; t++)
		pthread_join(th[t], NULL);
	CHECK_EQ(mp_pool_close(pool), 0);
	CHECK_EQ(mp_pool_join(pool), 0);
	mp_pool_free(pool);
}

/* ------------------------------------------------------------------ */
/* Phase 4: terminate while busy, from another thread and from a callback */

#define TN 120

static struct rec trecs[2][TN];
static mp_async *tas[2][TN];
static pthread_barrier_t tbar;

static void *
term_submitter(void *arg)
{
	int t = (int)(intptr_t)arg;

	for (int i = 0; i < TN; i++) {
		long v = i;
		/* The first items block both workers: the rest queue up. */
		mp_task_fn fn = i < 1 ? block_task : square;
		CHECK_EQ(mp_pool_apply_async(pool, fn, &v, sizeof(v),
					     sizeof(long), on_ok, on_err,
					     &trecs[t][i], &tas[t][i]), 0);
	}
	pthread_barrier_wait(&tbar);	/* submitted */
	pthread_barrier_wait(&tbar);	/* terminated */
	long v = 1;
	mp_async *late;
	CHECK_EQ(mp_pool_apply_async(pool, square, &v, sizeof(v),
				     sizeof(long), NULL, NULL, NULL, &late),
		 -EINVAL);
	for (int i = 0; i < TN; i++) {
		struct rec *x = &trecs[t][i];
		/* Ready already: terminate returned after every errback. */
		CHECK(mp_async_ready(tas[t][i]));
		int rc = mp_async_get(tas[t][i], MP_NOWAIT);
		CHECK_EQ(x->calls, 1);
		if (rc == 0) {
			CHECK_EQ(x->value, sq(i));
		} else {
			CHECK_EQ(rc, -ECANCELED);
			CHECK_EQ(x->err, -ECANCELED);
		}
		mp_async_free(tas[t][i]);
	}
	return NULL;
}

static _Atomic int cb_term_rc = 1;

/* Waits on a result another thread also waits on; checks its value. */
static void *
waiter(void *arg)
{
	mp_async *r = arg;
	size_t len;

	CHECK_EQ(mp_async_get(r, MP_SEC(60)), 0);
	CHECK_EQ(mp_async_wait(r, MP_NOWAIT), 1);
	CHECK_EQ(mp_async_successful(r), 1);
	const long *v = mp_async_result(r, &len);
	CHECK(v != NULL && len == sizeof(long) && *v == sq(3));
	return NULL;
}

static void
terminate_in_callback(mp_async *r, void *user)
{
	(void)r;
	(void)user;
	/* Done once this callback returns. */
	atomic_store(&cb_term_rc, mp_pool_terminate(pool));
}

static void
phase_terminate(void)
{
	pthread_t th[2];

	PHASE("terminate while busy, from another thread");
	atomic_store(&sh->release, 0);
	atomic_store(&sh->started, 0);
	memset(trecs, 0, sizeof(trecs));
	pthread_barrier_init(&tbar, NULL, 3);
	CHECK_EQ(mp_pool_new(&pool, &(mp_pool_attr){ .processes = 2 }), 0);
	for (int t = 0; t < 2; t++)
		CHECK_EQ(pthread_create(&th[t], NULL, term_submitter,
					(void *)(intptr_t)t), 0);
	pthread_barrier_wait(&tbar);
	wait_started(2);
	CHECK_EQ(mp_pool_terminate(pool), 0);
	pthread_barrier_wait(&tbar);
	for (int t = 0; t < 2; t++)
		pthread_join(th[t], NULL);
	pthread_barrier_destroy(&tbar);
	CHECK_EQ(mp_pool_join(pool), 0);
	mp_pool_free(pool);
	atomic_store(&sh->release, 1);

	PHASE("terminate from a callback while others wait");
	struct rec x[40];
	mp_async *a[40], *first;
	long v = 3;

	memset(x, 0, sizeof(x));
	atomic_store(&sh->release, 0);
	atomic_store(&sh->started, 0);
	CHECK_EQ(mp_pool_new(&pool, &(mp_pool_attr){ .processes = 2 }), 0);
	for (int i = 0; i < 40; i++) {
		long w = i;
		CHECK_EQ(mp_pool_apply_async(pool, block_task, &w, sizeof(w),
					     sizeof(long), on_ok, on_err,
					     &x[i], &a[i]), 0);
	}
	CHECK_EQ(mp_pool_apply_async(pool, square, &v, sizeof(v),
				     sizeof(long), terminate_in_callback,
				     NULL, NULL, &first), 0);
	/* The square finishes first only if a worker is free: let one
	 * blocking task go so that it is. */
	wait_started(1);
	/* Several threads wait on one result (and on the others). */
	pthread_t w[2];
	for (int t = 0; t < 2; t++)
		CHECK_EQ(pthread_create(&w[t], NULL, waiter, first), 0);
	atomic_store(&sh->release, 1);
	CHECK_EQ(mp_async_get(first, MP_SEC(60)), 0);
	for (int t = 0; t < 2; t++)
		pthread_join(w[t], NULL);
	CHECK_EQ(atomic_load(&cb_term_rc), 0);
	for (int i = 0; i < 40; i++) {
		int rc = mp_async_get(a[i], MP_SEC(60));
		CHECK(rc == 0 || rc == -ECANCELED);
		CHECK_EQ(x[i].calls, 1);
		if (rc == 0)
			CHECK_EQ(x[i].value, sq(i));
		else
			CHECK_EQ(x[i].err, -ECANCELED);
		mp_async_free(a[i]);
	}
	mp_async_free(first);
	CHECK_EQ(mp_pool_join(pool), 0);
	mp_pool_free(pool);
}

/* ------------------------------------------------------------------ */
/* Close while threads submit; terminate from several threads at once */

#define CS_MAX 3000
static struct rec csrec[2][CS_MAX];
static mp_async *csa[2][CS_MAX];
static int cs_n[2];
static _Atomic int cs_progress;

static void *
close_submitter(void *arg)
{
	int t = (int)(intptr_t)arg, i, rc = 0;

	for (i = 0; i < CS_MAX; i++) {
		long v = i;
		rc = mp_pool_apply_async(pool, square, &v, sizeof(v),
					 sizeof(long), on_ok, on_err,
					 &csrec[t][i], &csa[t][i]);
		if (rc != 0)
			break;
		atomic_fetch_add(&cs_progress, 1);
	}
	/* Refused once closed, and only then. */
	CHECK(i < CS_MAX);
	CHECK_EQ(rc, -EINVAL);
	cs_n[t] = i;
	return NULL;
}

static void *
terminator(void *arg)
{
	(void)arg;
	CHECK_EQ(mp_pool_terminate(pool), 0);
	return NULL;
}

static void
phase_close(void)
{
	pthread_t th[2];

	PHASE("close while threads submit");
	memset(csrec, 0, sizeof(csrec));
	atomic_store(&cs_progress, 0);
	CHECK_EQ(mp_pool_new(&pool, &(mp_pool_attr){ .processes = 2 }), 0);
	for (int t = 0; t < 2; t++)
		CHECK_EQ(pthread_create(&th[t], NULL, close_submitter,
					(void *)(intptr_t)t), 0);
	while (atomic_load(&cs_progress) < 200)
		usleep(100);
	CHECK_EQ(mp_pool_close(pool), 0);
	for (int t = 0; t < 2; t++)
		pthread_join(th[t], NULL);
	CHECK_EQ(mp_pool_join(pool), 0);
	/* Everything accepted before the close ran, callbacks once. */
	for (int t = 0; t < 2; t++) {
		for (int i = 0; i < cs_n[t]; i++) {
			CHECK_EQ(mp_async_get(csa[t][i], MP_NOWAIT), 0);
			CHECK_EQ(csrec[t][i].calls, 1);
			CHECK_EQ(csrec[t][i].value, sq(i));
			mp_async_free(csa[t][i]);
		}
	}
	mp_pool_free(pool);

	PHASE("terminate from three threads at once");
	atomic_store(&sh->release, 0);
	atomic_store(&sh->started, 0);
	CHECK_EQ(mp_pool_new(&pool, &(mp_pool_attr){ .processes = 2 }), 0);
	struct rec x[20];
	mp_async *a[20];
	memset(x, 0, sizeof(x));
	for (int i = 0; i < 20; i++) {
		long v = i;
		CHECK_EQ(mp_pool_apply_async(pool, block_task, &v, sizeof(v),
					     sizeof(long), on_ok, on_err, &x[i],
					     &a[i]), 0);
	}
	wait_started(1);
	for (int t = 0; t < 2; t++)
		CHECK_EQ(pthread_create(&th[t], NULL, terminator, NULL), 0);
	CHECK_EQ(mp_pool_terminate(pool), 0);
	for (int t = 0; t < 2; t++)
		pthread_join(th[t], NULL);
	for (int i = 0; i < 20; i++) {
		/* Every one returned after the errbacks had run. */
		CHECK(mp_async_ready(a[i]));
		CHECK_EQ(mp_async_get(a[i], MP_NOWAIT), -ECANCELED);
		CHECK_EQ(x[i].calls, 1);
		CHECK_EQ(x[i].err, -ECANCELED);
		mp_async_free(a[i]);
	}
	CHECK_EQ(mp_pool_join(pool), 0);
	mp_pool_free(pool);
	atomic_store(&sh->release, 1);
}

/* ------------------------------------------------------------------ */
/* Phase 5: task time limits enforced while threads submit */

#define TO_T 2
#define TO_N 12

static void *
timeout_submitter(void *arg)
{
	int t = (int)(intptr_t)arg;
	struct rec x[TO_N];
	mp_async *a[TO_N];

	memset(x, 0, sizeof(x));
	for (int i = 0; i < TO_N; i++) {
		/* Every third item naps past the limit. */
		long v = i % 3 == 2 ? 2000 : 0;
		CHECK_EQ(mp_pool_apply_async(pool, nap, &v, sizeof(v),
					     sizeof(long), on_ok, on_err,
					     &x[i], &a[i]), 0);
	}
	for (int i = 0; i < TO_N; i++) {
		int rc = mp_async_get(a[i], MP_SEC(60));
		CHECK_EQ(x[i].calls, 1);
		if (i % 3 == 2) {
			CHECK_EQ(rc, -ETIMEDOUT);
			CHECK_EQ(x[i].err, -ETIMEDOUT);
		} else {
			CHECK_EQ(rc, 0);
			CHECK_EQ(x[i].value, sq(0));
		}
		mp_async_free(a[i]);
	}
	(void)t;
	return NULL;
}

static void
phase_timeout(void)
{
	pthread_t th[TO_T];

	PHASE("task time limits while threads submit");
	CHECK_EQ(mp_pool_new(&pool, &(mp_pool_attr){
				     .processes = 2,
				     .task_timeout_ns = MP_MSEC(200) }), 0);
	for (int t = 0; t < TO_T; t++)
		CHECK_EQ(pthread_create(&th[t], NULL, timeout_submitter,
					(void *)(intptr_t)t), 0);
	for (int t = 0; t < TO_T; t++)
		pthread_join(th[t], NULL);
	CHECK_EQ(mp_pool_close(pool), 0);
	CHECK_EQ(mp_pool_join(pool), 0);
	mp_pool_free(pool);
}

int
main(void)
{
	tsan_prog = "tsan_pool";
	alarm(150);	/* a hang fails the run (SIGALRM) */
	sh = mp_shm_alloc(sizeof(*sh));
	CHECK(sh != NULL);
	phase_callbacks();
	phase_imap();
	phase_after_join();
	phase_kill();
	phase_churn();
	phase_terminate();
	phase_close();
	phase_timeout();
	mp_shm_free(sh);
	PHASE("passed");
	return 0;
}
