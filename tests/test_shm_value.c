/* SPDX-License-Identifier: MIT */
/*
 * Value and Array: shared with forked processes through the same
 * pointer, guarded by their own RLock, and safe to misuse.
 */
#include <errno.h>
#include <signal.h>
#include <stdint.h>

#include <criterion/criterion.h>
#include <mproc.h>

#include "tests/helpers.h"

T_SUITE(shm_value);

static mp_value *counter;	/* Value('q', 0) */
static mp_array *arr;		/* Array('d', 10) */

static int
add_under_lock(void *arg)
{
	int n = (int)(intptr_t)arg;
	mp_rlock *l = mp_value_lock(counter);
	int64_t *v = mp_value_ptr(counter);

	for (int i = 0; i < n; i++) {
		T_CHECK(mp_rlock_acquire(l, MP_FOREVER) == 0);
		/* The lock is reentrant, as Python's get_lock(). */
		T_CHECK(mp_rlock_acquire(l, MP_NOWAIT) == 0);
		*v += 1;
		T_CHECK(mp_rlock_release(l) == 0);
		T_CHECK(mp_rlock_release(l) == 0);
	}
	return T_PASS;
}

T_TEST(shm_value, value_increments_under_its_lock_are_exact)
{
	pid_t pid[4];

	cr_assert_eq(mp_value_new(&counter, sizeof(int64_t), 0), 0);
	cr_assert_eq(*(int64_t *)mp_value_ptr(counter), 0, "zeroed");
	cr_assert_eq((uintptr_t)mp_value_ptr(counter) % 64, 0);
	cr_assert_not_null(mp_value_lock(counter));
	for (int i = 0; i < 4; i++)
		pid[i] = t_spawn(add_under_lock, (void *)(intptr_t)20000);
	for (int i = 0; i < 4; i++)
		t_wait_exit(pid[i], 0);
	cr_assert_eq(*(int64_t *)mp_value_ptr(counter), 80000);
	/* The lock belongs to the value: freeing it does nothing. */
	mp_rlock_free(mp_value_lock(counter));
	cr_assert_eq(mp_rlock_acquire(mp_value_lock(counter), MP_NOWAIT), 0);
	cr_assert_eq(mp_rlock_release(mp_value_lock(counter)), 0);
	mp_value_free(counter);
}

static int
fill_array(void *arg)
{
	double *d = mp_array_ptr(arr);
	mp_rlock *l = mp_array_lock(arr);

	(void)arg;
	T_CHECK(mp_array_len(arr) == 10);
	T_CHECK(mp_rlock_acquire(l, MP_SEC(10)) == 0);
	for (int i = 0; i < 10; i++)
		d[i] = -d[i] * 2.5;
	T_CHECK(mp_rlock_release(l) == 0);
	return T_PASS;
}

T_TEST(shm_value, array_written_by_a_child_is_seen_by_the_parent)
{
	double *d;

	cr_assert_eq(mp_array_new(&arr, 10, sizeof(double), 0), 0);
	cr_assert_eq(mp_array_len(arr), 10);
	d = mp_array_ptr(arr);
	for (int i = 0; i < 10; i++)
		d[i] = i;
	t_wait_exit(t_spawn(fill_array, NULL), 0);
	for (int i = 0; i < 10; i++)
		cr_assert_float_eq(d[i], -i * 2.5, 1e-12);
	mp_array_free(arr);
}

static int
hold_value_lock(void *arg)
{
	struct t_sync *ready = arg;

	T_CHECK(mp_rlock_acquire(mp_value_lock(counter), MP_FOREVER) == 0);
	*(int64_t *)mp_value_ptr(counter) = 42;
	t_sync_signal(ready);
	for (;;)
		pause();
}

T_TEST(shm_value, value_lock_of_a_killed_holder_is_eownerdead)
{
	struct t_sync ready;

	t_sync_init(&ready);
	cr_assert_eq(mp_value_new(&counter, sizeof(int64_t), 0), 0);
	pid_t pid = t_spawn(hold_value_lock, &ready);
	cr_assert_eq(t_sync_wait(&ready, 10000), 0);
	kill(pid, SIGKILL);
	cr_assert_eq(t_wait_status(pid, 10000), -SIGKILL);
	cr_assert_eq(mp_rlock_acquire(mp_value_lock(counter), MP_SEC(10)),
		     -EOWNERDEAD);
	cr_assert_eq(*(int64_t *)mp_value_ptr(counter), 42);
	cr_assert_eq(mp_rlock_release(mp_value_lock(counter)), 0);
	mp_value_free(counter);
	t_sync_fini(&ready);
}

T_TEST(shm_value, nolock_and_bad_arguments)
{
	mp_value *v;
	mp_array *a;

	cr_assert_eq(mp_value_new(&v, 4, MP_NOLOCK), 0);
	cr_assert_null(mp_value_lock(v));
	cr_assert_not_null(mp_value_ptr(v));
	mp_value_free(v);
	cr_assert_eq(mp_array_new(&a, 3, 8, MP_NOLOCK), 0);
	cr_assert_null(mp_array_lock(a));
	mp_array_free(a);
	cr_assert_eq(mp_array_new(&a, 0, 8, 0), 0, "an empty Array is fine");
	cr_assert_eq(mp_array_len(a), 0);
	mp_array_free(a);

	cr_assert_eq(mp_value_new(NULL, 4, 0), -EINVAL);
	cr_assert_eq(mp_value_new(&v, 0, 0), -EINVAL);
	cr_assert_eq(mp_value_new(&v, 4, 0x10), -EINVAL);
	cr_assert_eq(mp_array_new(NULL, 1, 4, 0), -EINVAL);
	cr_assert_eq(mp_array_new(&a, 1, 0, 0), -EINVAL);
	cr_assert_eq(mp_array_new(&a, SIZE_MAX / 2, 4, 0), -EINVAL);
	cr_assert_eq(mp_array_new(&a, 1, 4, 2), -EINVAL);

	cr_assert_null(mp_value_ptr(NULL));
	cr_assert_null(mp_value_lock(NULL));
	mp_value_free(NULL);
	cr_assert_null(mp_array_ptr(NULL));
	cr_assert_null(mp_array_lock(NULL));
	cr_assert_eq(mp_array_len(NULL), 0);
	mp_array_free(NULL);

	/* Freed handles, and the lock of a freed value. */
	cr_assert_eq(mp_value_new(&v, 8, 0), 0);
	mp_rlock *l = mp_value_lock(v);
	mp_value_free(v);
	cr_assert_null(mp_value_ptr(v));
	cr_assert_null(mp_value_lock(v));
	cr_assert_eq(mp_rlock_acquire(l, MP_NOWAIT), -EINVAL);
	cr_assert_eq(mp_rlock_release(l), -EINVAL);
	mp_value_free(v);
	cr_assert_eq(mp_array_new(&a, 2, 8, 0), 0);
	mp_array_free(a);
	cr_assert_null(mp_array_ptr(a));
	cr_assert_null(mp_array_lock(a));
	cr_assert_eq(mp_array_len(a), 0);
	mp_array_free(a);
}
