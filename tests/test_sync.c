/* SPDX-License-Identifier: MIT */
/*
 * Lock, RLock, Semaphore, BoundedSemaphore, Condition, Event, Barrier
 * between real processes: exact counts under contention, every timeout,
 * owners killed with SIGKILL, no lost wake-ups, broken barriers, and bad
 * handles.
 */
#include <dlfcn.h>
#include <errno.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdarg.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <linux/futex.h>
#include <sys/syscall.h>
#include <sys/wait.h>

#include <criterion/criterion.h>
#include <mproc.h>

#include "tests/helpers.h"

T_SUITE(sync);

/* Child exit codes that say what a wait returned. */
#define C_NOTIFIED 10
#define C_TIMEDOUT 11

/* Shared scratch for a test, from mp_shm_alloc. */
struct shared {
	mp_lock *lock;
	mp_rlock *rlock;
	mp_sem *sem;
	mp_cond *cond;
	mp_event *event;
	mp_barrier *barrier;
	struct t_sync ready;
	uint64_t counter;
	uint32_t flag;
	uint32_t value;
	int ready_n;
	int woke_n;
	int rounds;
	int nproc;
	int idx[];
};

static struct shared *
shared_new(size_t extra)
{
	struct shared *s = mp_shm_alloc(sizeof(*s) + extra);

	cr_assert_not_null(s);
	return s;
}

/* Assert that elapsed ns is at least want ns (timeouts are honoured). */
#define ASSERT_WAITED(t0, want)                                           \
	cr_assert_geq(t_now() - (t0), (want), "returned after %lld ns",   \
		      (long long)(t_now() - (t0)))

/* Start together: wait until all n children have arrived. */
static void
start_gate(struct shared *s, int n)
{
	__atomic_fetch_add(&s->ready_n, 1, __ATOMIC_ACQ_REL);
	while (__atomic_load_n(&s->ready_n, __ATOMIC_ACQUIRE) < n)
		sched_yield();
}

/*
 * Lock.
 */

static int
count_lock(void *arg)
{
	struct shared *s = arg;

	start_gate(s, 4);
	for (int i = 0; i < s->rounds; i++) {
		T_CHECK(mp_lock_acquire(s->lock, MP_FOREVER) == 0);
		T_CHECK(s->flag++ == 0);	/* nobody else inside */
		s->counter++;	/* a plain RMW: the lock guards it */
		s->flag--;
		T_CHECK(mp_lock_release(s->lock) == 0);
	}
	return T_PASS;
}

T_TEST(sync, lock_counter_four_processes_million_increments_exact)
{
	struct shared *s = shared_new(0);
	pid_t pid[4];

	cr_assert_eq(mp_lock_new(&s->lock), 0);
	s->rounds = 250000;
	for (int i = 0; i < 4; i++)
		pid[i] = t_spawn(count_lock, s);
	for (int i = 0; i < 4; i++)
		t_wait_exit(pid[i], 0);
	cr_assert_eq(s->counter, 1000000);
	cr_assert_eq(mp_lock_release(s->lock), -EPERM, "left unlocked");
	mp_lock_free(s->lock);
	mp_shm_free(s);
}

static int
release_other(void *arg)
{
	struct shared *s = arg;

	T_CHECK(mp_lock_release(s->lock) == 0);
	T_CHECK(mp_lock_release(s->lock) == -EPERM);
	return T_PASS;
}

T_TEST(sync, lock_any_process_may_release_unlocked_is_eperm)
{
	struct shared *s = shared_new(0);

	cr_assert_eq(mp_lock_new(&s->lock), 0);
	cr_assert_eq(mp_lock_release(s->lock), -EPERM);
	cr_assert_eq(mp_lock_acquire(s->lock, MP_NOWAIT), 0);
	cr_assert_eq(mp_lock_acquire(s->lock, MP_NOWAIT), -EAGAIN,
		     "the holder acquiring again with NOWAIT");
	t_wait_exit(t_spawn(release_other, s), 0);
	cr_assert_eq(mp_lock_acquire(s->lock, MP_NOWAIT), 0);
	cr_assert_eq(mp_lock_release(s->lock), 0);
	mp_lock_free(s->lock);
	mp_shm_free(s);
}

static int
lock_times_out(void *arg)
{
	struct shared *s = arg;
	int64_t t0 = t_now();

	T_CHECK(mp_lock_acquire(s->lock, MP_NOWAIT) == -EAGAIN);
	T_CHECK(mp_lock_acquire(s->lock, MP_MSEC(60)) == -ETIMEDOUT);
	T_CHECK(t_now() - t0 >= MP_MSEC(60));
	T_CHECK(mp_rlock_acquire(s->rlock, MP_NOWAIT) == -EAGAIN);
	t0 = t_now();
	T_CHECK(mp_rlock_acquire(s->rlock, MP_MSEC(30)) == -ETIMEDOUT);
	T_CHECK(t_now() - t0 >= MP_MSEC(30));
	return T_PASS;
}

T_TEST(sync, lock_and_rlock_timeouts_are_honoured)
{
	struct shared *s = shared_new(0);
	int64_t t0;

	cr_assert_eq(mp_lock_new(&s->lock), 0);
	cr_assert_eq(mp_rlock_new(&s->rlock), 0);
	cr_assert_eq(mp_lock_acquire(s->lock, MP_FOREVER), 0);
	cr_assert_eq(mp_rlock_acquire(s->rlock, MP_FOREVER), 0);
	t_wait_exit(t_spawn(lock_times_out, s), 0);
	/* The holder itself waits out its timeout on a Lock, as Python. */
	t0 = t_now();
	cr_assert_eq(mp_lock_acquire(s->lock, MP_MSEC(25)), -ETIMEDOUT);
	ASSERT_WAITED(t0, MP_MSEC(25));
	cr_assert_eq(mp_lock_acquire(s->lock, -5), -EINVAL);
	cr_assert_eq(mp_lock_release(s->lock), 0);
	cr_assert_eq(mp_rlock_release(s->rlock), 0);
	mp_lock_free(s->lock);
	mp_rlock_free(s->rlock);
	mp_shm_free(s);
}

static int
hold_lock_forever(void *arg)
{
	struct shared *s = arg;

	T_CHECK(mp_lock_acquire(s->lock, MP_FOREVER) == 0);
	t_sync_signal(&s->ready);
	for (;;)
		pause();
}

static int
wait_for_dead_owner(void *arg)
{
	struct shared *s = arg;

	t_sync_signal(&s->ready);
	T_CHECK(mp_lock_acquire(s->lock, MP_SEC(20)) == -EOWNERDEAD);
	s->flag = 1;
	T_CHECK(mp_lock_release(s->lock) == 0);
	return T_PASS;
}

T_TEST(sync, lock_owner_killed_next_acquirer_gets_eownerdead)
{
	struct shared *s = shared_new(0);
	pid_t owner;

	t_sync_init(&s->ready);
	cr_assert_eq(mp_lock_new(&s->lock), 0);

	/* A zombie holder (killed, not reaped) is dead: NOWAIT sees it. */
	owner = t_spawn(hold_lock_forever, s);
	cr_assert_eq(t_sync_wait(&s->ready, 10000), 0);
	cr_assert_eq(mp_lock_acquire(s->lock, MP_NOWAIT), -EAGAIN);
	kill(owner, SIGKILL);
	int rc;
	int64_t end = t_now() + MP_MSEC(T_MS(10000));
	do {	/* until the kernel has made it a zombie */
		rc = mp_lock_acquire(s->lock, MP_NOWAIT);
	} while (rc == -EAGAIN && t_now() < end);
	cr_assert_eq(rc, -EOWNERDEAD);
	cr_assert_eq(t_wait_status(owner, 10000), -SIGKILL);
	cr_assert_eq(mp_lock_release(s->lock), 0);

	/* A waiter asleep when the holder dies takes the lock over. */
	owner = t_spawn(hold_lock_forever, s);
	cr_assert_eq(t_sync_wait(&s->ready, 10000), 0);
	pid_t waiter = t_spawn(wait_for_dead_owner, s);
	cr_assert_eq(t_sync_wait(&s->ready, 10000), 0);
	kill(owner, SIGKILL);
	cr_assert_eq(t_wait_status(owner, 10000), -SIGKILL);
	t_wait_exit(waiter, 0);
	cr_assert_eq(s->flag, 1);

	/* And the lock works normally afterwards. */
	cr_assert_eq(mp_lock_acquire(s->lock, MP_NOWAIT), 0);
	cr_assert_eq(mp_lock_release(s->lock), 0);
	mp_lock_free(s->lock);
	t_sync_fini(&s->ready);
	mp_shm_free(s);
}

static void *
lock_and_exit_thread(void *arg)
{
	struct shared *s = arg;

	s->value = (uint32_t)mp_lock_acquire(s->lock, MP_NOWAIT);
	return NULL;
}

T_TEST(sync, lock_held_by_an_exited_thread_is_eownerdead)
{
	struct shared *s = shared_new(0);
	pthread_t t;

	cr_assert_eq(mp_lock_new(&s->lock), 0);
	cr_assert_eq(pthread_create(&t, NULL, lock_and_exit_thread, s), 0);
	cr_assert_eq(pthread_join(t, NULL), 0);
	cr_assert_eq(s->value, 0);
	cr_assert_eq(mp_lock_acquire(s->lock, MP_SEC(10)), -EOWNERDEAD);
	cr_assert_eq(mp_lock_release(s->lock), 0);
	mp_lock_free(s->lock);
	mp_shm_free(s);
}

static int
chaos_worker(void *arg)
{
	struct shared *s = arg;

	while (!__atomic_load_n(&s->woke_n, __ATOMIC_ACQUIRE)) {
		int rc = mp_lock_acquire(s->lock, MP_SEC(20));
		T_CHECK(rc == 0 || rc == -EOWNERDEAD);
		if (rc == -EOWNERDEAD) {
			s->flag = 0;	/* repair: the dead holder was inside */
			__atomic_fetch_add(&s->ready_n, 1, __ATOMIC_RELAXED);
		}
		T_CHECK(s->flag++ == 0);
		s->counter++;
		s->flag--;
		T_CHECK(mp_lock_release(s->lock) == 0);
	}
	return T_PASS;
}

T_TEST(sync, lock_survives_holders_killed_at_random_points)
{
	enum { WORKERS = 3, KILLS = 30 };
	struct shared *s = shared_new(0);
	pid_t pid[WORKERS];

	cr_assert_eq(mp_lock_new(&s->lock), 0);
	for (int i = 0; i < WORKERS; i++)
		pid[i] = t_spawn(chaos_worker, s);
	for (int k = 0; k < KILLS; k++) {
		/* Let the workers make progress, then kill one of them. */
		uint64_t seen = __atomic_load_n(&s->counter, __ATOMIC_RELAXED);
		int64_t end = t_now() + MP_MSEC(T_MS(20000));
		while (__atomic_load_n(&s->counter, __ATOMIC_RELAXED) <
		       seen + 2000) {
			cr_assert_lt(t_now(), end, "no progress after kill %d",
				     k);
			sched_yield();
		}
		int victim = k % WORKERS;
		kill(pid[victim], SIGKILL);
		cr_assert_eq(t_wait_status(pid[victim], 10000), -SIGKILL);
		pid[victim] = t_spawn(chaos_worker, s);
	}
	__atomic_store_n(&s->woke_n, 1, __ATOMIC_RELEASE);
	for (int i = 0; i < WORKERS; i++)
		t_wait_exit(pid[i], 0);
	cr_log_info("%d takeovers in %d kills", s->ready_n, KILLS);
	cr_assert_leq(s->ready_n, KILLS, "more takeovers than deaths");
	int rc = mp_lock_acquire(s->lock, MP_SEC(10));
	cr_assert(rc == 0 || rc == -EOWNERDEAD, "rc %d", rc);
	cr_assert_eq(mp_lock_release(s->lock), 0);
	mp_lock_free(s->lock);
	mp_shm_free(s);
}

/*
 * RLock.
 */

static int
rlock_not_owner(void *arg)
{
	struct shared *s = arg;

	T_CHECK(mp_rlock_release(s->rlock) == -EPERM);
	T_CHECK(mp_rlock_acquire(s->rlock, MP_NOWAIT) == -EAGAIN);
	return T_PASS;
}

T_TEST(sync, rlock_recursion_and_release_by_non_owner_is_eperm)
{
	struct shared *s = shared_new(0);

	cr_assert_eq(mp_rlock_new(&s->rlock), 0);
	cr_assert_eq(mp_rlock_release(s->rlock), -EPERM);
	for (int i = 0; i < 3; i++)
		cr_assert_eq(mp_rlock_acquire(s->rlock, MP_NOWAIT), 0);
	t_wait_exit(t_spawn(rlock_not_owner, s), 0);
	for (int i = 0; i < 3; i++)
		cr_assert_eq(mp_rlock_release(s->rlock), 0);
	cr_assert_eq(mp_rlock_release(s->rlock), -EPERM);
	mp_rlock_free(s->rlock);
	mp_shm_free(s);
}

static int
hold_rlock_forever(void *arg)
{
	struct shared *s = arg;

	for (int i = 0; i < 3; i++)
		T_CHECK(mp_rlock_acquire(s->rlock, MP_FOREVER) == 0);
	t_sync_signal(&s->ready);
	for (;;)
		pause();
}

static int
rlock_takes_free(void *arg)
{
	struct shared *s = arg;

	T_CHECK(mp_rlock_acquire(s->rlock, MP_NOWAIT) == 0);
	T_CHECK(mp_rlock_release(s->rlock) == 0);
	return T_PASS;
}

T_TEST(sync, rlock_owner_killed_next_acquirer_gets_eownerdead)
{
	struct shared *s = shared_new(0);
	pid_t owner;

	t_sync_init(&s->ready);
	cr_assert_eq(mp_rlock_new(&s->rlock), 0);
	owner = t_spawn(hold_rlock_forever, s);
	cr_assert_eq(t_sync_wait(&s->ready, 10000), 0);
	kill(owner, SIGKILL);
	cr_assert_eq(t_wait_status(owner, 10000), -SIGKILL);
	cr_assert_eq(mp_rlock_acquire(s->rlock, MP_SEC(10)), -EOWNERDEAD);
	/* The dead owner's three levels are gone: one release frees it. */
	cr_assert_eq(mp_rlock_release(s->rlock), 0);
	cr_assert_eq(mp_rlock_release(s->rlock), -EPERM);
	t_wait_exit(t_spawn(rlock_takes_free, s), 0);
	mp_rlock_free(s->rlock);
	t_sync_fini(&s->ready);
	mp_shm_free(s);
}

/*
 * Semaphore.
 */

static int
sem_waiter(void *arg)
{
	struct shared *s = arg;

	T_CHECK(mp_sem_acquire(s->sem, MP_NOWAIT) == -EAGAIN);
	t_sync_signal(&s->ready);
	T_CHECK(mp_sem_acquire(s->sem, MP_SEC(20)) == 0);
	return T_PASS;
}

T_TEST(sync, semaphore_wakes_a_waiter_and_times_out)
{
	struct shared *s = shared_new(0);
	int64_t t0;

	t_sync_init(&s->ready);
	cr_assert_eq(mp_sem_new(&s->sem, 0), 0);
	pid_t pid = t_spawn(sem_waiter, s);
	cr_assert_eq(t_sync_wait(&s->ready, 10000), 0);
	cr_assert_eq(mp_sem_release(s->sem), 0);
	t_wait_exit(pid, 0);
	cr_assert_eq(mp_sem_value(s->sem), 0);
	t0 = t_now();
	cr_assert_eq(mp_sem_acquire(s->sem, MP_MSEC(40)), -ETIMEDOUT);
	ASSERT_WAITED(t0, MP_MSEC(40));
	for (int i = 0; i < 5; i++)
		cr_assert_eq(mp_sem_release(s->sem), 0);
	cr_assert_eq(mp_sem_value(s->sem), 5);
	cr_assert_eq(mp_sem_acquire(s->sem, MP_NOWAIT), 0);
	cr_assert_eq(mp_sem_value(s->sem), 4);
	cr_assert_eq(mp_sem_new(&s->sem, 0x80000000u), -EINVAL);
	mp_sem_free(s->sem);
	t_sync_fini(&s->ready);
	mp_shm_free(s);
}

static int
sem_count(void *arg)
{
	struct shared *s = arg;

	start_gate(s, 3);
	for (int i = 0; i < s->rounds; i++) {
		T_CHECK(mp_sem_acquire(s->sem, MP_SEC(20)) == 0);
		s->counter++;
		T_CHECK(mp_sem_release(s->sem) == 0);
	}
	return T_PASS;
}

T_TEST(sync, semaphore_of_one_is_a_mutex_across_three_processes)
{
	struct shared *s = shared_new(0);
	pid_t pid[3];

	cr_assert_eq(mp_bsem_new(&s->sem, 1), 0);
	s->rounds = 50000;
	for (int i = 0; i < 3; i++)
		pid[i] = t_spawn(sem_count, s);
	for (int i = 0; i < 3; i++)
		t_wait_exit(pid[i], 0);
	cr_assert_eq(s->counter, 150000);
	cr_assert_eq(mp_sem_value(s->sem), 1);
	mp_sem_free(s->sem);
	mp_shm_free(s);
}

T_TEST(sync, bounded_semaphore_release_above_initial_is_eoverflow)
{
	mp_sem *b;

	cr_assert_eq(mp_bsem_new(&b, 2), 0);
	cr_assert_eq(mp_sem_release(b), -EOVERFLOW);
	cr_assert_eq(mp_sem_value(b), 2);
	cr_assert_eq(mp_sem_acquire(b, MP_NOWAIT), 0);
	cr_assert_eq(mp_sem_acquire(b, MP_NOWAIT), 0);
	cr_assert_eq(mp_sem_acquire(b, MP_NOWAIT), -EAGAIN);
	cr_assert_eq(mp_sem_release(b), 0);
	cr_assert_eq(mp_sem_release(b), 0);
	cr_assert_eq(mp_sem_release(b), -EOVERFLOW);
	cr_assert_eq(mp_sem_value(b), 2);
	mp_sem_free(b);

	cr_assert_eq(mp_bsem_new(&b, 0), 0);
	cr_assert_eq(mp_sem_release(b), -EOVERFLOW);
	mp_sem_free(b);
}

/*
 * Condition.
 */

static int
consumer(void *arg)
{
	struct shared *s = arg;

	for (int i = 0; i < s->rounds; i++) {
		T_CHECK(mp_cond_acquire(s->cond, MP_FOREVER) == 0);
		while (!s->flag) {
			/* A lost wake-up would time out here, not hang. */
			T_CHECK(mp_cond_wait(s->cond, MP_SEC(10)) == 1);
		}
		T_CHECK(s->value == (uint32_t)i);
		s->flag = 0;
		T_CHECK(mp_cond_notify(s->cond, 1) >= 0);
		T_CHECK(mp_cond_release(s->cond) == 0);
	}
	return T_PASS;
}

T_TEST(sync, condition_producer_consumer_100000_rounds_no_lost_wakeup,
     .timeout = 120)
{
	struct shared *s = shared_new(0);

	cr_assert_eq(mp_cond_new(&s->cond, NULL), 0);
	s->rounds = 100000;
	pid_t pid = t_spawn(consumer, s);
	for (int i = 0; i < s->rounds; i++) {
		cr_assert_eq(mp_cond_acquire(s->cond, MP_FOREVER), 0);
		while (s->flag) {
			int rc = mp_cond_wait(s->cond, MP_SEC(10));
			cr_assert_eq(rc, 1, "round %d: wait gave %d", i, rc);
		}
		s->value = (uint32_t)i;
		s->flag = 1;
		cr_assert_geq(mp_cond_notify(s->cond, 1), 0);
		cr_assert_eq(mp_cond_release(s->cond), 0);
	}
	t_wait_exit(pid, 0);
	cr_assert_eq(s->flag, 0);
	mp_cond_free(s->cond);
	mp_shm_free(s);
}

static int
cond_waiter(void *arg)
{
	struct shared *s = arg;
	int rc;

	if (mp_cond_acquire(s->cond, MP_FOREVER) != 0)
		return T_FAIL;
	s->ready_n++;
	rc = mp_cond_wait(s->cond, MP_MSEC(1500));
	/* Every return holds the lock again. */
	s->woke_n++;
	if (mp_cond_release(s->cond) != 0)
		return T_FAIL;
	return rc == 1 ? C_NOTIFIED : rc == 0 ? C_TIMEDOUT : T_FAIL;
}

T_TEST(sync, condition_notify_n_wakes_exactly_n)
{
	struct shared *s = shared_new(0);
	mp_rlock *lock;
	pid_t pid[3];
	int notified = 0, timedout = 0;

	cr_assert_eq(mp_rlock_new(&lock), 0);
	cr_assert_eq(mp_cond_new(&s->cond, lock), 0);
	for (int i = 0; i < 3; i++)
		pid[i] = t_spawn(cond_waiter, s);
	/* All three are inside wait once they have counted themselves. */
	for (;;) {
		cr_assert_eq(mp_cond_acquire(s->cond, MP_SEC(10)), 0);
		if (s->ready_n == 3)
			break;
		cr_assert_eq(mp_cond_release(s->cond), 0);
		sched_yield();
	}
	cr_assert_eq(mp_cond_notify(s->cond, 2), 2);
	cr_assert_eq(mp_cond_release(s->cond), 0);
	for (int i = 0; i < 3; i++) {
		int st = t_wait_status(pid[i], 30000);
		notified += st == C_NOTIFIED;
		timedout += st == C_TIMEDOUT;
	}
	cr_assert_eq(notified, 2);
	cr_assert_eq(timedout, 1);
	cr_assert_eq(s->woke_n, 3);
	/* Nobody waits now: notify_all notifies nobody. */
	cr_assert_eq(mp_cond_acquire(s->cond, MP_NOWAIT), 0);
	cr_assert_eq(mp_cond_notify_all(s->cond), 0);
	cr_assert_eq(mp_cond_release(s->cond), 0);
	mp_cond_free(s->cond);
	mp_rlock_free(lock);
	mp_shm_free(s);
}

static int
cond_wait_owner_dies(void *arg)
{
	struct shared *s = arg;

	T_CHECK(mp_cond_acquire(s->cond, MP_FOREVER) == 0);
	s->ready_n = 1;
	/*
	 * Times out while the killed holder has the lock, then takes it
	 * (0: timed out before the holder got the lock; wait again).
	 */
	int rc;
	do
		rc = mp_cond_wait(s->cond, MP_MSEC(50));
	while (rc == 0);
	T_CHECK(rc == -EOWNERDEAD);
	T_CHECK(mp_cond_release(s->cond) == 0);
	T_CHECK(mp_cond_release(s->cond) == -EPERM);
	return T_PASS;
}

static int
cond_hold_forever(void *arg)
{
	struct shared *s = arg;

	for (;;) {
		T_CHECK(mp_cond_acquire(s->cond, MP_FOREVER) == 0);
		if (s->ready_n == 1)
			break;
		T_CHECK(mp_cond_release(s->cond) == 0);
		sched_yield();
	}
	t_sync_signal(&s->ready);
	for (;;)
		pause();
}

T_TEST(sync, condition_wait_takes_back_the_lock_of_a_killed_holder)
{
	struct shared *s = shared_new(0);

	t_sync_init(&s->ready);
	cr_assert_eq(mp_cond_new(&s->cond, NULL), 0);
	pid_t waiter = t_spawn(cond_wait_owner_dies, s);
	pid_t holder = t_spawn(cond_hold_forever, s);
	cr_assert_eq(t_sync_wait(&s->ready, 10000), 0);
	kill(holder, SIGKILL);
	cr_assert_eq(t_wait_status(holder, 10000), -SIGKILL);
	t_wait_exit(waiter, 0);
	mp_cond_free(s->cond);
	t_sync_fini(&s->ready);
	mp_shm_free(s);
}

T_TEST(sync, condition_wait_needs_the_lock_and_restores_its_count)
{
	mp_cond *c;
	int64_t t0;

	cr_assert_eq(mp_cond_new(&c, NULL), 0);
	cr_assert_eq(mp_cond_wait(c, MP_MSEC(10)), -EPERM);
	cr_assert_eq(mp_cond_notify(c, 1), -EPERM);
	cr_assert_eq(mp_cond_notify_all(c), -EPERM);
	cr_assert_eq(mp_cond_acquire(c, MP_NOWAIT), 0);
	cr_assert_eq(mp_cond_acquire(c, MP_NOWAIT), 0);
	t0 = t_now();
	cr_assert_eq(mp_cond_wait(c, MP_MSEC(50)), 0);
	ASSERT_WAITED(t0, MP_MSEC(50));
	cr_assert_eq(mp_cond_wait(c, MP_NOWAIT), 0);
	cr_assert_eq(mp_cond_wait(c, -7), -EINVAL);
	cr_assert_eq(mp_cond_release(c), 0);
	cr_assert_eq(mp_cond_release(c), 0, "the count of 2 came back");
	cr_assert_eq(mp_cond_release(c), -EPERM);
	mp_cond_free(c);
}

/*
 * Event.
 */

static int
event_waiter(void *arg)
{
	struct shared *s = arg;

	T_CHECK(mp_event_wait(s->event, MP_NOWAIT) == 0);
	t_sync_signal(&s->ready);
	T_CHECK(mp_event_wait(s->event, MP_SEC(20)) == 1);
	T_CHECK(mp_event_is_set(s->event));
	return T_PASS;
}

T_TEST(sync, event_set_wakes_every_waiter_and_wait_times_out)
{
	struct shared *s = shared_new(0);
	pid_t pid[3];
	int64_t t0;

	t_sync_init(&s->ready);
	cr_assert_eq(mp_event_new(&s->event), 0);
	cr_assert(!mp_event_is_set(s->event));
	t0 = t_now();
	cr_assert_eq(mp_event_wait(s->event, MP_MSEC(40)), 0);
	ASSERT_WAITED(t0, MP_MSEC(40));
	for (int i = 0; i < 3; i++)
		pid[i] = t_spawn(event_waiter, s);
	for (int i = 0; i < 3; i++)
		cr_assert_eq(t_sync_wait(&s->ready, 10000), 0);
	cr_assert_eq(mp_event_set(s->event), 0);
	cr_assert_eq(mp_event_set(s->event), 0);
	for (int i = 0; i < 3; i++)
		t_wait_exit(pid[i], 0);
	cr_assert_eq(mp_event_wait(s->event, MP_NOWAIT), 1);
	cr_assert_eq(mp_event_clear(s->event), 0);
	cr_assert(!mp_event_is_set(s->event));
	cr_assert_eq(mp_event_wait(s->event, MP_NOWAIT), 0);
	mp_event_free(s->event);
	t_sync_fini(&s->ready);
	mp_shm_free(s);
}

/*
 * FUTEX_WAKE calls this process made, counted by standing in for libc's
 * syscall(), through which the library enters the kernel for futexes: a
 * strace-free view of whether a waker took its slow path.
 */
static unsigned long futex_wakes;

long
syscall(long nr, ...)
{
	static long (*real)(long, ...);
	va_list ap;
	long a[6];

	va_start(ap, nr);
	for (int i = 0; i < 6; i++)
		a[i] = va_arg(ap, long);
	va_end(ap);
	if (real == NULL)
		*(void **)&real = dlsym(RTLD_NEXT, "syscall");
	if (nr == SYS_futex && (a[1] & FUTEX_CMD_MASK) == FUTEX_WAKE)
		__atomic_fetch_add(&futex_wakes, 1, __ATOMIC_RELAXED);
	return real(nr, a[0], a[1], a[2], a[3], a[4], a[5]);
}

static unsigned long
wakes(void)
{
	return __atomic_load_n(&futex_wakes, __ATOMIC_RELAXED);
}

static int
sem_sleeper(void *arg)
{
	struct shared *s = arg;

	T_CHECK(mp_sem_acquire(s->sem, MP_FOREVER) == 0);
	return T_PASS;
}

static int
event_sleeper(void *arg)
{
	struct shared *s = arg;

	T_CHECK(mp_event_wait(s->event, MP_FOREVER) == 1);
	return T_PASS;
}

/* A release of s->sem: what may have to wake a sleeper. */
static void
sem_release(struct shared *s)
{
	cr_assert_eq(mp_sem_release(s->sem), 0);
}

/* A release, taken back: the semaphore is as it was. */
static void
sem_cycle(struct shared *s)
{
	sem_release(s);
	cr_assert_eq(mp_sem_acquire(s->sem, MP_NOWAIT), 0);
}

/* A set of s->event: what may have to wake a sleeper. */
static void
event_set(struct shared *s)
{
	cr_assert_eq(mp_event_set(s->event), 0);
}

/* A set, cleared again. */
static void
event_cycle(struct shared *s)
{
	event_set(s);
	cr_assert_eq(mp_event_clear(s->event), 0);
}

/* The FUTEX_WAKE calls made by n cycles. */
static unsigned long
wakes_in(void (*cycle)(struct shared *), struct shared *s, int n)
{
	unsigned long w0 = wakes();

	for (int i = 0; i < n; i++)
		cycle(s);
	return wakes() - w0;
}

/* Start sleeper, wait until it sleeps in the kernel, and kill it there. */
static void
kill_a_sleeper(int (*sleeper)(void *), struct shared *s)
{
	pid_t pid = t_spawn(sleeper, s);

	cr_assert(t_wait_futex_sleep(pid, T_MS(10000)));
	kill(pid, SIGKILL);
	cr_assert_eq(t_wait_status(pid, 10000), -SIGKILL);
}

/*
 * Start sleeper, and once it sleeps, count the FUTEX_WAKE calls that one
 * wake makes; the sleeper must then return.
 */
static unsigned long
wakes_for_a_live_sleeper(int (*sleeper)(void *),
			 void (*wake)(struct shared *), struct shared *s)
{
	pid_t pid = t_spawn(sleeper, s);
	unsigned long n;

	cr_assert(t_wait_futex_sleep(pid, T_MS(10000)));
	n = wakes_in(wake, s, 1);
	t_wait_exit(pid, 0);
	return n;
}

/*
 * A sleeper killed in a semaphore's acquire leaves its count behind; the
 * count heals two sleep slices (2 x 200 ms) later, and releases then stay
 * out of the kernel (the Barrier shares the mechanism).
 */
T_TEST(sync, sem_release_stays_out_of_the_kernel_after_a_sleeper_is_killed)
{
	struct shared *s = shared_new(0);
	unsigned long n;

	cr_assert_eq(mp_sem_new(&s->sem, 0), 0);
	/* Nobody asleep: releases stay out of it. */
	cr_assert_eq(wakes_in(sem_cycle, s, 10), 0);
	/* A sleeper killed in its sleep... */
	kill_a_sleeper(sem_sleeper, s);
	/* ...is still counted at first: a release enters the kernel. */
	cr_assert_eq(wakes_in(sem_cycle, s, 1), 1);
	/* Two slices later a futile wake clears the count... */
	usleep(450 * 1000);
	cr_assert_eq(wakes_in(sem_cycle, s, 1), 1);
	/* ...and later releases stay out of the kernel. */
	n = wakes_in(sem_cycle, s, 100);
	cr_assert_eq(n, 0, "%lu futex wakes in 100 releases", n);
	/* A live sleeper is still woken by the release, at once. */
	cr_assert_eq(wakes_for_a_live_sleeper(sem_sleeper, sem_release, s), 1);
	mp_sem_free(s->sem);
	mp_shm_free(s);
}

T_TEST(sync, event_set_stays_out_of_the_kernel_after_a_sleeper_is_killed)
{
	struct shared *s = shared_new(0);
	unsigned long n;

	cr_assert_eq(mp_event_new(&s->event), 0);
	/* A set that has a sleeper to wake enters the kernel once. */
	cr_assert_eq(wakes_for_a_live_sleeper(event_sleeper, event_set, s), 1);
	cr_assert_eq(mp_event_clear(s->event), 0);
	/* Nobody asleep: sets stay out of it. */
	cr_assert_eq(wakes_in(event_cycle, s, 10), 0);
	/* A sleeper killed in its sleep leaves its mark... */
	kill_a_sleeper(event_sleeper, s);
	/* ...which the next set clears, with one futile wake... */
	cr_assert_eq(wakes_in(event_cycle, s, 1), 1);
	/* ...and later sets no longer enter the kernel. */
	n = wakes_in(event_cycle, s, 100);
	cr_assert_eq(n, 0, "%lu futex wakes in 100 sets", n);
	/* A live sleeper is still woken by the set, not by its slice. */
	cr_assert_eq(wakes_for_a_live_sleeper(event_sleeper, event_set, s), 1);
	mp_event_free(s->event);
	mp_shm_free(s);
}

/*
 * Barrier.
 */

static int
barrier_rounds(void *arg)
{
	struct shared *s = arg;
	int me = __atomic_fetch_add(&s->ready_n, 1, __ATOMIC_RELAXED);

	for (int r = 0; r < s->rounds; r++) {
		int i = mp_barrier_wait(s->barrier, MP_SEC(20));
		T_CHECK(i >= 0 && i < 3);
		s->idx[r * 3 + me] = i;
	}
	return T_PASS;
}

T_TEST(sync, barrier_three_processes_10000_rounds_distinct_indexes)
{
	enum { ROUNDS = 10000 };
	struct shared *s = shared_new(sizeof(int) * 3 * ROUNDS);
	pid_t pid[3];

	cr_assert_eq(mp_barrier_new(&s->barrier, 3), 0);
	cr_assert_eq(mp_barrier_parties(s->barrier), 3);
	s->rounds = ROUNDS;
	for (int i = 0; i < 3; i++)
		pid[i] = t_spawn(barrier_rounds, s);
	for (int i = 0; i < 3; i++)
		t_wait_exit(pid[i], 0);
	for (int r = 0; r < ROUNDS; r++) {
		int seen = 0;
		for (int p = 0; p < 3; p++)
			seen |= 1 << s->idx[r * 3 + p];
		cr_assert_eq(seen, 7, "round %d: indexes %d %d %d", r,
			     s->idx[r * 3], s->idx[r * 3 + 1],
			     s->idx[r * 3 + 2]);
	}
	cr_assert_eq(mp_barrier_n_waiting(s->barrier), 0);
	cr_assert(!mp_barrier_broken(s->barrier));
	mp_barrier_free(s->barrier);
	mp_shm_free(s);
}

static int
barrier_expect_epipe(void *arg)
{
	struct shared *s = arg;

	int rc = mp_barrier_wait(s->barrier, MP_SEC(20));
	if (rc != -EPIPE)
		fprintf(stderr, "barrier wait gave %d\n", rc);
	return rc == -EPIPE ? T_PASS : T_FAIL;
}

static int
barrier_one_round(void *arg)
{
	struct shared *s = arg;
	int rc = mp_barrier_wait(s->barrier, MP_SEC(20));

	return rc >= 0 && rc < 3 ? T_PASS : T_FAIL;
}

/* Wait until n callers wait at the barrier. */
static void
await_waiting(mp_barrier *b, int n)
{
	int64_t end = t_now() + MP_MSEC(T_MS(10000));

	while (mp_barrier_n_waiting(b) != n) {
		cr_assert_lt(t_now(), end, "%d waiting, want %d",
			     mp_barrier_n_waiting(b), n);
		sched_yield();
	}
}

T_TEST(sync, barrier_timeout_breaks_it_and_reset_repairs_it)
{
	struct shared *s = shared_new(0);
	pid_t pid[2];
	int64_t t0;

	cr_assert_eq(mp_barrier_new(&s->barrier, 3), 0);
	pid[0] = t_spawn(barrier_expect_epipe, s);
	await_waiting(s->barrier, 1);
	cr_assert_eq(mp_barrier_wait(s->barrier, MP_NOWAIT), -EAGAIN);
	t0 = t_now();
	cr_assert_eq(mp_barrier_wait(s->barrier, MP_MSEC(60)), -ETIMEDOUT);
	ASSERT_WAITED(t0, MP_MSEC(60));
	t_wait_exit(pid[0], 0);
	cr_assert(mp_barrier_broken(s->barrier));
	cr_assert_eq(mp_barrier_wait(s->barrier, MP_SEC(1)), -EPIPE);

	cr_assert_eq(mp_barrier_reset(s->barrier), 0);
	cr_assert(!mp_barrier_broken(s->barrier));
	for (int i = 0; i < 2; i++)
		pid[i] = t_spawn(barrier_one_round, s);
	int rc = mp_barrier_wait(s->barrier, MP_SEC(20));
	cr_assert(rc >= 0 && rc < 3, "index %d", rc);
	for (int i = 0; i < 2; i++)
		t_wait_exit(pid[i], 0);
	mp_barrier_free(s->barrier);
	mp_shm_free(s);
}

T_TEST(sync, barrier_abort_and_reset_with_waiters_give_epipe)
{
	struct shared *s = shared_new(0);
	pid_t pid[2];

	cr_assert_eq(mp_barrier_new(&s->barrier, 3), 0);
	for (int i = 0; i < 2; i++)
		pid[i] = t_spawn(barrier_expect_epipe, s);
	await_waiting(s->barrier, 2);
	cr_assert_eq(mp_barrier_abort(s->barrier), 0);
	for (int i = 0; i < 2; i++)
		t_wait_exit(pid[i], 0);
	cr_assert(mp_barrier_broken(s->barrier));
	cr_assert_eq(mp_barrier_n_waiting(s->barrier), 0);
	cr_assert_eq(mp_barrier_reset(s->barrier), 0);

	/* A reset while callers wait breaks their round. */
	for (int i = 0; i < 2; i++)
		pid[i] = t_spawn(barrier_expect_epipe, s);
	await_waiting(s->barrier, 2);
	cr_assert_eq(mp_barrier_reset(s->barrier), 0);
	for (int i = 0; i < 2; i++)
		t_wait_exit(pid[i], 0);
	cr_assert(!mp_barrier_broken(s->barrier));
	cr_assert_eq(mp_barrier_n_waiting(s->barrier), 0);
	mp_barrier_free(s->barrier);
	mp_shm_free(s);
}

static int
barrier_wait_forever(void *arg)
{
	struct shared *s = arg;

	mp_barrier_wait(s->barrier, MP_FOREVER);
	return T_FAIL;
}

T_TEST(sync, barrier_waiter_killed_breaks_it_for_the_others)
{
	struct shared *s = shared_new(0);

	cr_assert_eq(mp_barrier_new(&s->barrier, 3), 0);
	pid_t victim = t_spawn(barrier_wait_forever, s);
	await_waiting(s->barrier, 1);
	pid_t other = t_spawn(barrier_expect_epipe, s);
	await_waiting(s->barrier, 2);
	kill(victim, SIGKILL);
	cr_assert_eq(t_wait_status(victim, 10000), -SIGKILL);
	t_wait_exit(other, 0);
	cr_assert(mp_barrier_broken(s->barrier));
	mp_barrier_free(s->barrier);
	mp_shm_free(s);
}

/*
 * Signals.
 */

static volatile sig_atomic_t signals_seen;

static void
on_signal(int sig)
{
	(void)sig;
	signals_seen++;
}

static int
wait_through_signals(void *arg)
{
	struct shared *s = arg;
	struct sigaction sa = { .sa_handler = on_signal };
	int64_t t0;

	sigaction(SIGUSR1, &sa, NULL);	/* no SA_RESTART */
	t_sync_signal(&s->ready);
	t0 = t_now();
	T_CHECK(mp_lock_acquire(s->lock, MP_MSEC(150)) == -ETIMEDOUT);
	T_CHECK(t_now() - t0 >= MP_MSEC(150));
	t0 = t_now();
	T_CHECK(mp_sem_acquire(s->sem, MP_MSEC(100)) == -ETIMEDOUT);
	T_CHECK(t_now() - t0 >= MP_MSEC(100));
	t0 = t_now();
	T_CHECK(mp_event_wait(s->event, MP_MSEC(100)) == 0);
	T_CHECK(t_now() - t0 >= MP_MSEC(100));
	T_CHECK(mp_cond_acquire(s->cond, MP_FOREVER) == 0);
	t0 = t_now();
	T_CHECK(mp_cond_wait(s->cond, MP_MSEC(100)) == 0);
	T_CHECK(t_now() - t0 >= MP_MSEC(100));
	T_CHECK(mp_cond_release(s->cond) == 0);
	t0 = t_now();
	T_CHECK(mp_barrier_wait(s->barrier, MP_MSEC(100)) == -ETIMEDOUT);
	T_CHECK(t_now() - t0 >= MP_MSEC(100));
	T_CHECK(signals_seen > 0);
	return T_PASS;
}

T_TEST(sync, signals_never_end_a_wait_early)
{
	struct shared *s = shared_new(0);
	struct timespec ms = { 0, 1000000 };
	int status;

	t_sync_init(&s->ready);
	cr_assert_eq(mp_lock_new(&s->lock), 0);
	cr_assert_eq(mp_sem_new(&s->sem, 0), 0);
	cr_assert_eq(mp_event_new(&s->event), 0);
	cr_assert_eq(mp_cond_new(&s->cond, NULL), 0);
	cr_assert_eq(mp_barrier_new(&s->barrier, 2), 0);
	cr_assert_eq(mp_lock_acquire(s->lock, MP_NOWAIT), 0);
	pid_t pid = t_spawn(wait_through_signals, s);
	cr_assert_eq(t_sync_wait(&s->ready, 10000), 0);
	/* A signal every millisecond until the child is done. */
	while (waitpid(pid, &status, WNOHANG) == 0) {
		kill(pid, SIGUSR1);
		nanosleep(&ms, NULL);
	}
	cr_assert(WIFEXITED(status) && WEXITSTATUS(status) == 0,
		  "child status %#x", status);
	cr_assert_eq(mp_lock_release(s->lock), 0);
	mp_barrier_free(s->barrier);
	mp_cond_free(s->cond);
	mp_event_free(s->event);
	mp_sem_free(s->sem);
	mp_lock_free(s->lock);
	t_sync_fini(&s->ready);
	mp_shm_free(s);
}

/*
 * Bad handles.
 */

T_TEST(sync, null_and_freed_objects_are_einval)
{
	mp_lock *l;
	mp_rlock *r;
	mp_sem *s;
	mp_cond *c;
	mp_event *e;
	mp_barrier *b;

	cr_assert_eq(mp_lock_new(NULL), -EINVAL);
	cr_assert_eq(mp_rlock_new(NULL), -EINVAL);
	cr_assert_eq(mp_sem_new(NULL, 1), -EINVAL);
	cr_assert_eq(mp_bsem_new(NULL, 1), -EINVAL);
	cr_assert_eq(mp_cond_new(NULL, NULL), -EINVAL);
	cr_assert_eq(mp_event_new(NULL), -EINVAL);
	cr_assert_eq(mp_barrier_new(NULL, 2), -EINVAL);
	cr_assert_eq(mp_barrier_new(&b, 0), -EINVAL);
	cr_assert_eq(mp_barrier_new(&b, 70000), -EINVAL);

	/* NULL: every call. */
	cr_assert_eq(mp_lock_acquire(NULL, MP_NOWAIT), -EINVAL);
	cr_assert_eq(mp_lock_release(NULL), -EINVAL);
	mp_lock_free(NULL);
	cr_assert_eq(mp_rlock_acquire(NULL, MP_NOWAIT), -EINVAL);
	cr_assert_eq(mp_rlock_release(NULL), -EINVAL);
	mp_rlock_free(NULL);
	cr_assert_eq(mp_sem_acquire(NULL, MP_NOWAIT), -EINVAL);
	cr_assert_eq(mp_sem_release(NULL), -EINVAL);
	cr_assert_eq(mp_sem_value(NULL), -EINVAL);
	mp_sem_free(NULL);
	cr_assert_eq(mp_cond_acquire(NULL, MP_NOWAIT), -EINVAL);
	cr_assert_eq(mp_cond_release(NULL), -EINVAL);
	cr_assert_eq(mp_cond_wait(NULL, MP_NOWAIT), -EINVAL);
	cr_assert_eq(mp_cond_notify(NULL, 1), -EINVAL);
	cr_assert_eq(mp_cond_notify_all(NULL), -EINVAL);
	mp_cond_free(NULL);
	cr_assert_eq(mp_event_set(NULL), -EINVAL);
	cr_assert_eq(mp_event_clear(NULL), -EINVAL);
	cr_assert(!mp_event_is_set(NULL));
	cr_assert_eq(mp_event_wait(NULL, MP_NOWAIT), -EINVAL);
	mp_event_free(NULL);
	cr_assert_eq(mp_barrier_wait(NULL, MP_NOWAIT), -EINVAL);
	cr_assert_eq(mp_barrier_abort(NULL), -EINVAL);
	cr_assert_eq(mp_barrier_reset(NULL), -EINVAL);
	cr_assert_eq(mp_barrier_parties(NULL), -EINVAL);
	cr_assert_eq(mp_barrier_n_waiting(NULL), -EINVAL);
	cr_assert(!mp_barrier_broken(NULL));
	mp_barrier_free(NULL);

	/* Freed: every call, and a second free. */
	cr_assert_eq(mp_lock_new(&l), 0);
	mp_lock_free(l);
	cr_assert_eq(mp_lock_acquire(l, MP_NOWAIT), -EINVAL);
	cr_assert_eq(mp_lock_release(l), -EINVAL);
	mp_lock_free(l);

	cr_assert_eq(mp_rlock_new(&r), 0);
	mp_rlock_free(r);
	cr_assert_eq(mp_rlock_acquire(r, MP_NOWAIT), -EINVAL);
	cr_assert_eq(mp_rlock_release(r), -EINVAL);
	cr_assert_eq(mp_cond_new(&c, r), -EINVAL);
	mp_rlock_free(r);

	cr_assert_eq(mp_sem_new(&s, 1), 0);
	mp_sem_free(s);
	cr_assert_eq(mp_sem_acquire(s, MP_NOWAIT), -EINVAL);
	cr_assert_eq(mp_sem_release(s), -EINVAL);
	cr_assert_eq(mp_sem_value(s), -EINVAL);
	mp_sem_free(s);

	cr_assert_eq(mp_cond_new(&c, NULL), 0);
	mp_cond_free(c);
	cr_assert_eq(mp_cond_acquire(c, MP_NOWAIT), -EINVAL);
	cr_assert_eq(mp_cond_release(c), -EINVAL);
	cr_assert_eq(mp_cond_wait(c, MP_NOWAIT), -EINVAL);
	cr_assert_eq(mp_cond_notify(c, 1), -EINVAL);
	cr_assert_eq(mp_cond_notify_all(c), -EINVAL);
	mp_cond_free(c);

	/* A Condition whose caller-supplied lock was freed first. */
	cr_assert_eq(mp_rlock_new(&r), 0);
	cr_assert_eq(mp_cond_new(&c, r), 0);
	mp_rlock_free(r);
	cr_assert_eq(mp_cond_acquire(c, MP_NOWAIT), -EINVAL);
	cr_assert_eq(mp_cond_wait(c, MP_NOWAIT), -EINVAL);
	mp_cond_free(c);

	cr_assert_eq(mp_event_new(&e), 0);
	mp_event_free(e);
	cr_assert_eq(mp_event_set(e), -EINVAL);
	cr_assert_eq(mp_event_clear(e), -EINVAL);
	cr_assert(!mp_event_is_set(e));
	cr_assert_eq(mp_event_wait(e, MP_NOWAIT), -EINVAL);
	mp_event_free(e);

	cr_assert_eq(mp_barrier_new(&b, 2), 0);
	mp_barrier_free(b);
	cr_assert_eq(mp_barrier_wait(b, MP_NOWAIT), -EINVAL);
	cr_assert_eq(mp_barrier_abort(b), -EINVAL);
	cr_assert_eq(mp_barrier_reset(b), -EINVAL);
	cr_assert_eq(mp_barrier_parties(b), -EINVAL);
	cr_assert_eq(mp_barrier_n_waiting(b), -EINVAL);
	cr_assert(!mp_barrier_broken(b));
	mp_barrier_free(b);

	/* Types are not interchangeable: a Lock is not an RLock. */
	cr_assert_eq(mp_lock_new(&l), 0);
	cr_assert_eq(mp_rlock_acquire((mp_rlock *)l, MP_NOWAIT), -EINVAL);
	mp_lock_free(l);
}
