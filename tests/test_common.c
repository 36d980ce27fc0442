/* SPDX-License-Identifier: MIT */
/*
 * The core: errors, version, CPU count, shared memory, and the futex layer
 * (compiled into this test from lib/futex.c, since it is internal).
 */
#include <errno.h>
#include <sched.h>
#include <signal.h>
#include <string.h>
#include <sys/syscall.h>
#include <sys/time.h>
#include <sys/wait.h>

#include <criterion/criterion.h>
#include <mproc.h>

#include "lib/futex.h"
#include "lib/task.h"
#include "tests/helpers.h"

T_SUITE(common);

T_TEST(common, strerror_covers_errno_and_own_codes)
{
	cr_assert_str_eq(mp_strerror(0), "success");
	cr_assert_str_neq(mp_strerror(-EINVAL), "unknown error");
	cr_assert_str_eq(mp_strerror(-EINVAL), mp_strerror(EINVAL));
	cr_assert_str_eq(mp_strerror(MP_EWORKER),
			 "pool worker died while running the task");
	cr_assert_str_eq(mp_strerror(MP_ESERVER), "manager server went away");
	/* Each own code has its own text, and none is below errno's range. */
#define CHECK_CODE(name, n, text)                                         \
	cr_assert_lt(name, -4095);                                        \
	cr_assert_str_eq(mp_strerror(name), text);
	MP_ERRORS(CHECK_CODE)
#undef CHECK_CODE
	cr_assert_str_eq(mp_strerror(-(MP__EBASE + 999)), "unknown error");
	cr_assert_not_null(mp_strerror(INT32_MIN));
}

T_TEST(common, version_matches_headers)
{
	cr_assert_str_eq(mp_version(), MP_VERSION_STRING);
	cr_assert_eq(mp_version_number(), (unsigned)MP_VERSION_NUMBER);
}

T_TEST(common, cpu_count_is_affinity)
{
	cpu_set_t set;

	cr_assert_eq(sched_getaffinity(0, sizeof(set), &set), 0);
	cr_assert_eq(mp_cpu_count(), CPU_COUNT(&set));
	cr_assert_geq(mp_cpu_count(), 1);
}

T_TEST(common, timeout_macros)
{
	cr_assert_eq(MP_MSEC(3), 3000000);
	cr_assert_eq(MP_SEC(2), 2000000000LL);
	cr_assert_eq(MP_FOREVER, -1);
	cr_assert_eq(MP_NOWAIT, 0);
}

static int
shm_child(void *arg)
{
	uint64_t *p = arg;

	T_CHECK(p[0] == 42);
	p[1] = 4242;
	return T_PASS;
}

T_TEST(common, shm_is_zeroed_and_shared_with_children)
{
	uint64_t *p = mp_shm_alloc(3 * 4096);

	cr_assert_not_null(p);
	cr_assert_eq((uintptr_t)p % 64, 0);
	for (size_t i = 0; i < 3 * 4096 / sizeof(*p); i++)
		cr_assert_eq(p[i], 0);
	p[0] = 42;
	t_wait_exit(t_spawn(shm_child, p), 0);
	cr_assert_eq(p[1], 4242);
	mp_shm_free(p);
}

T_TEST(common, shm_bad_input)
{
	char local[128];

	cr_assert_null(mp_shm_alloc(0));
	cr_assert_null(mp_shm_alloc(SIZE_MAX));
	mp_shm_free(NULL);
	mp_shm_free(local + 64);	/* not ours: ignored */
	void *p = malloc(4096 * 2);
	mp_shm_free(p);
	free(p);
}

T_TEST(common, shm_alloc_free_cycles_leave_nothing)
{
	for (int i = 0; i < 10000; i++) {
		void *p = mp_shm_alloc(100);
		cr_assert_not_null(p);
		mp_shm_free(p);
	}
	/* t_leak_check (fini) asserts on fds and /dev/shm. */
}

T_TEST(common, deadline_rejects_bad_timeouts)
{
	int64_t d;

	cr_assert_eq(mp__deadline(-2, &d), -EINVAL);
	cr_assert_eq(mp__deadline(INT64_MIN, &d), -EINVAL);
	cr_assert_eq(mp__deadline(MP_FOREVER, &d), 0);
	cr_assert_eq(d, MP__NEVER);
	cr_assert_eq(mp__deadline(INT64_MAX, &d), 0);
	cr_assert_eq(d, MP__NEVER);
	cr_assert_eq(mp__deadline(MP_NOWAIT, &d), 0);
	cr_assert_leq(d, mp__now());
}

T_TEST(common, futex_wait_honours_timeout)
{
	uint32_t w = 0;
	int64_t d, t0 = t_now();

	mp__deadline(MP_MSEC(30), &d);
	while (mp__futex_wait(&w, 0, d) == 0)
		;
	int64_t took = t_now() - t0;
	cr_assert_geq(took, MP_MSEC(30));
	cr_assert_lt(took, MP_MSEC(30) + MP_MSEC(T_MS(50)), "took %lld ns",
		     (long long)took);
	/* A changed word returns at once for a re-check. */
	mp__deadline(MP_SEC(5), &d);
	cr_assert_eq(mp__futex_wait(&w, 1, d), 0);
}

struct wake_arg {
	uint32_t word;
	uint32_t ready;
};

static int
wake_child(void *arg)
{
	struct wake_arg *a = arg;
	int64_t d;

	__atomic_store_n(&a->ready, 1, __ATOMIC_RELEASE);
	mp__futex_wake(&a->ready, 1);
	mp__deadline(MP_SEC(10), &d);
	while (__atomic_load_n(&a->word, __ATOMIC_ACQUIRE) == 0) {
		if (mp__futex_wait(&a->word, 0, d) == -ETIMEDOUT)
			return T_FAIL;
	}
	return T_PASS;
}

T_TEST(common, futex_wakes_a_sleeper_in_another_process)
{
	struct wake_arg *a = mp_shm_alloc(sizeof(*a));
	int64_t d;

	cr_assert_not_null(a);
	pid_t pid = t_spawn(wake_child, a);
	mp__deadline(MP_SEC(10), &d);
	while (__atomic_load_n(&a->ready, __ATOMIC_ACQUIRE) == 0)
		cr_assert_eq(mp__futex_wait(&a->ready, 0, d), 0);
	__atomic_store_n(&a->word, 1, __ATOMIC_RELEASE);
	mp__futex_wake(&a->word, INT32_MAX);
	t_wait_exit(pid, 0);
	mp_shm_free(a);
}

static void
on_alarm(int sig)
{
	(void)sig;
}

T_TEST(common, futex_wait_survives_signals)
{
	struct sigaction sa = { .sa_handler = on_alarm };
	struct itimerval it = { { 0, 2000 }, { 0, 2000 } };
	uint32_t w = 0;
	int64_t d, t0 = t_now();

	sigaction(SIGALRM, &sa, NULL);
	setitimer(ITIMER_REAL, &it, NULL);
	mp__deadline(MP_MSEC(50), &d);
	while (mp__futex_wait(&w, 0, d) == 0)
		;
	memset(&it, 0, sizeof(it));
	setitimer(ITIMER_REAL, &it, NULL);
	cr_assert_geq(t_now() - t0, MP_MSEC(50));
}

static int
waitv_child(void *arg)
{
	uint32_t *w = arg;

	__atomic_store_n(&w[77], 1, __ATOMIC_RELEASE);
	mp__futex_wake(&w[77], 1);
	return T_PASS;
}

T_TEST(common, futex_waitv_reports_the_woken_word)
{
	uint32_t *w = mp_shm_alloc(128 * sizeof(*w));
	struct mp__futex_waiter wv[128];
	int64_t d;
	int idx = -1;

	cr_assert_not_null(w);
	for (int i = 0; i < 128; i++)
		wv[i] = (struct mp__futex_waiter){ &w[i], 0 };
	mp__deadline(MP_MSEC(20), &d);
	cr_assert_eq(mp__futex_waitv(wv, 128, d), -ETIMEDOUT);
	cr_assert_eq(mp__futex_waitv(wv, 0, d), -EINVAL);
	cr_assert_eq(mp__futex_waitv(wv, 129, d), -EINVAL);
	pid_t pid = t_spawn(waitv_child, w);
	mp__deadline(MP_SEC(10), &d);
	while (__atomic_load_n(&w[77], __ATOMIC_ACQUIRE) == 0) {
		idx = mp__futex_waitv(wv, 128, d);
		cr_assert_geq(idx, 0);
	}
	t_wait_exit(pid, 0);
	mp_shm_free(w);
}

static int
exit_now(void *arg)
{
	(void)arg;
	return 0;
}

T_TEST(common, task_alive_sees_zombies_as_dead)
{
	cr_assert(mp__task_alive(getpid()));
	cr_assert_eq(mp__pid(), getpid());
	cr_assert_eq(mp__tid(), (pid_t)syscall(SYS_gettid));
	cr_assert_not(mp__task_alive(0));
	cr_assert_not(mp__task_alive(-1));
	pid_t pid = t_spawn(exit_now, NULL);
	cr_assert_gt(pid, 0);
	/* Not reaped yet: a zombie, which must read as dead. */
	siginfo_t si;
	cr_assert_eq(waitid(P_PID, (id_t)pid, &si, WEXITED | WNOWAIT), 0);
	cr_assert_not(mp__task_alive(pid));
	t_wait_exit(pid, 0);
	cr_assert_not(mp__task_alive(pid));
}

static int
tid_in_child(void *arg)
{
	pid_t parent_tid = *(pid_t *)arg;

	T_CHECK(mp__tid() != parent_tid);
	T_CHECK(mp__tid() == (pid_t)syscall(SYS_gettid));
	T_CHECK(mp__pid() == getpid());
	return T_PASS;
}

T_TEST(common, cached_ids_are_right_after_fork)
{
	pid_t tid = mp__tid();	/* fill the cache before forking */

	t_wait_exit(t_spawn(tid_in_child, &tid), 0);
}
