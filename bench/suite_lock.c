/* SPDX-License-Identifier: MIT */
/*
 * lock: mp_lock against a robust process-shared pthread mutex
 * (PTHREAD_PROCESS_SHARED + PTHREAD_MUTEX_ROBUST, the nearest thing glibc
 * has) in the same shared memory and the same run:
 *
 *   uncontended   acquire+release in one process (ns a pair)
 *   contended     two processes, each on its own CPU, looping acquire,
 *                 counter++, release (pairs a second, both together)
 *   handoff       the same, but a process counts only on its turn (the
 *                 counter's parity): each count is the lock passing from
 *                 one process to the other (handoffs a second)
 *
 * Implementations are interleaved within each repeat so that drift on
 * this noisy machine hits them alike; rows report the median.
 */
#include "config.h"

#include <errno.h>
#include <pthread.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include <mproc.h>

#include "bench/mpbench.h"

#define MAX_REPEAT 64

struct arena {
	pthread_mutex_t pm;	/* robust, process-shared */
	char pad1[64];
	uint64_t counter;
	int go, stop;
	char pad2[64];
	uint64_t ops[2];	/* per process, written at the end */
};

enum impl { I_PTHREAD, I_LOCK, I_RLOCK, NIMPL };

static const char *const impl_name[NIMPL] = {
	"pthread robust pshared", "mp_lock", "mp_rlock"
};

struct ctx {
	struct arena *a;
	mp_lock *lock;
	mp_rlock *rlock;
};

static inline int
acquire(const struct ctx *c, enum impl i)
{
	switch (i) {
	case I_PTHREAD: {
		int rc = pthread_mutex_lock(&c->a->pm);
		if (rc == EOWNERDEAD)
			pthread_mutex_consistent(&c->a->pm);
		return rc == EOWNERDEAD ? 0 : -rc;
	}
	case I_LOCK:
		return mp_lock_acquire(c->lock, MP_FOREVER);
	default:
		return mp_rlock_acquire(c->rlock, MP_FOREVER);
	}
}

static inline int
release(const struct ctx *c, enum impl i)
{
	switch (i) {
	case I_PTHREAD:
		return -pthread_mutex_unlock(&c->a->pm);
	case I_LOCK:
		return mp_lock_release(c->lock);
	default:
		return mp_rlock_release(c->rlock);
	}
}

/* ns an acquire+release pair, uncontended. */
static int
uncontended(const struct ctx *c, enum impl i, int64_t dur, double *ns)
{
	int64_t start = mpb_now(), t;
	uint64_t n = 0;

	do {
		for (int k = 0; k < 4096; k++) {
			if (acquire(c, i) < 0 || release(c, i) < 0)
				return -EIO;
		}
		n += 4096;
		t = mpb_now();
	} while (t - start < dur);
	*ns = (double)(t - start) / (double)n;
	return 0;
}

/*
 * One turn at the lock.  Contended: always count.  Handoff: count only
 * when it is this process's turn (the counter's parity), so every count
 * means the lock went over to the other process and back.
 */
static inline int
step(const struct ctx *c, enum impl i, int me, bool handoff, uint64_t *n)
{
	struct arena *a = c->a;

	if (acquire(c, i) < 0)
		return -EIO;
	if (!handoff || (a->counter & 1) == (uint64_t)me) {
		a->counter++;
		(*n)++;
	}
	return release(c, i);
}

static int
contender(const struct ctx *c, enum impl i, int me, bool handoff)
{
	struct arena *a = c->a;
	uint64_t n = 0;

	__atomic_fetch_add(&a->go, 1, __ATOMIC_ACQ_REL);
	while (__atomic_load_n(&a->go, __ATOMIC_ACQUIRE) < 2)
		;
	while (!__atomic_load_n(&a->stop, __ATOMIC_RELAXED)) {
		for (int k = 0; k < 64; k++)
			if (step(c, i, me, handoff, &n) < 0)
				return -EIO;
	}
	a->ops[me] = n;
	return 0;
}

/* Counts a second of two processes at the lock (see step). */
static int
contended(const struct ctx *c, enum impl i, bool handoff, int64_t dur,
	  double *ops)
{
	struct arena *a = c->a;
	pid_t pid;
	int st, rc = 0;

	a->go = 0;
	a->stop = 0;
	a->counter = 0;
	a->ops[0] = a->ops[1] = 0;
	cpu_set_t allowed;
	bool pinned;

	fflush(NULL);
	if ((pid = fork()) < 0)
		return -errno;
	if (pid == 0) {
		/*
		 * Each contender on a CPU of its own (mpb_pin), so that the
		 * two really run at once rather than taking turns on one.
		 */
		mpb_pin(1, NULL);
		_exit(contender(c, i, 1, handoff) == 0 ? 0 : 1);
	}
	pinned = mpb_pin(0, &allowed);
	while (__atomic_load_n(&a->go, __ATOMIC_ACQUIRE) < 1)
		;
	int64_t start = mpb_now();
	/* The parent is the second contender. */
	{
		uint64_t n = 0;
		__atomic_fetch_add(&a->go, 1, __ATOMIC_ACQ_REL);
		while (mpb_now() - start < dur && rc == 0) {
			for (int k = 0; k < 64 && rc == 0; k++)
				rc = step(c, i, 0, handoff, &n);
		}
		a->ops[0] = n;
	}
	__atomic_store_n(&a->stop, 1, __ATOMIC_RELEASE);
	int64_t end = mpb_now();
	if (pinned)
		sched_setaffinity(0, sizeof(allowed), &allowed);
	while (waitpid(pid, &st, 0) < 0 && errno == EINTR)
		;
	if (!WIFEXITED(st) || WEXITSTATUS(st) != 0)
		rc = -EIO;
	if (a->counter != a->ops[0] + a->ops[1])
		rc = -EIO;	/* the lock failed to exclude */
	*ops = (double)(a->ops[0] + a->ops[1]) / ((double)(end - start) / 1e9);
	return rc;
}

static int
arena_init(struct arena *a)
{
	pthread_mutexattr_t at;
	int rc;

	pthread_mutexattr_init(&at);
	pthread_mutexattr_setpshared(&at, PTHREAD_PROCESS_SHARED);
	pthread_mutexattr_setrobust(&at, PTHREAD_MUTEX_ROBUST);
	rc = pthread_mutex_init(&a->pm, &at);
	pthread_mutexattr_destroy(&at);
	return -rc;
}

static void
report(const char *name, enum impl i, double *v, int n, bool ns)
{
	struct mpb_row row = { .baseline = i == I_PTHREAD,
			       .higher_better = !ns };

	snprintf(row.name, sizeof(row.name), "%s", name);
	snprintf(row.impl, sizeof(row.impl), "%s", impl_name[i]);
	double m = mpb_summary(v, n, &row.spread);
	row.ns_op = ns ? m : 1e9 / m;
	row.ops = ns ? 1e9 / m : m;
	mpb_report(&row);
}

static int
run(const struct mpb_opts *o)
{
	double unc[NIMPL][MAX_REPEAT], con[NIMPL][MAX_REPEAT];
	double hand[NIMPL][MAX_REPEAT];
	int reps = o->repeat < MAX_REPEAT ? o->repeat : MAX_REPEAT;
	int64_t dur = mpb_duration(o);
	struct ctx c = { 0 };
	int rc;

	if (reps < 1)
		reps = 1;
	if ((c.a = mp_shm_alloc(sizeof(*c.a))) == NULL)
		return -ENOMEM;
	if ((rc = arena_init(c.a)) < 0)
		goto out_arena;
	if ((rc = mp_lock_new(&c.lock)) < 0)
		goto out_mutex;
	if ((rc = mp_rlock_new(&c.rlock)) < 0)
		goto out_lock;
	for (int r = 0; r < reps && rc == 0; r++) {
		for (int i = 0; i < NIMPL && rc == 0; i++) {
			mpb_progress("lock: uncontended %s, repeat %d/%d",
				     impl_name[i], r + 1, reps);
			rc = uncontended(&c, i, dur, &unc[i][r]);
		}
		for (int i = 0; i < NIMPL && rc == 0; i++) {
			mpb_progress("lock: contended %s, repeat %d/%d",
				     impl_name[i], r + 1, reps);
			rc = contended(&c, i, false, dur, &con[i][r]);
		}
		for (int i = 0; i < NIMPL && rc == 0; i++) {
			mpb_progress("lock: handoff %s, repeat %d/%d",
				     impl_name[i], r + 1, reps);
			rc = contended(&c, i, true, dur, &hand[i][r]);
		}
	}
	for (int i = 0; i < NIMPL && rc == 0; i++)
		report("uncontended acquire+release", i, unc[i], reps, true);
	for (int i = 0; i < NIMPL && rc == 0; i++)
		report("2 processes contended", i, con[i], reps, false);
	for (int i = 0; i < NIMPL && rc == 0; i++)
		report("2 processes handoff", i, hand[i], reps, false);
	mp_rlock_free(c.rlock);
out_lock:
	mp_lock_free(c.lock);
out_mutex:
	pthread_mutex_destroy(&c.a->pm);
out_arena:
	mp_shm_free(c.a);
	return rc;
}

MPB_SUITE(lock, "Lock/RLock vs robust process-shared pthread mutex", run)
