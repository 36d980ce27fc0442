/* SPDX-License-Identifier: MIT */
/*
 * The tutorial's "数据传递：Queue" section in C, one test per method it
 * describes:
 *
 *     q = Queue([maxsize]); q.qsize(); q.empty(); q.full()
 *     q.put(obj[, block[, timeout]])  -> queue.Full when no slot frees
 *     q.get([block[, timeout]])
 *
 * "Several processes put, several take": each test runs its other side
 * in a child process, through the same mp_queue pointer.
 */
#include <errno.h>
#include <string.h>

#include <criterion/criterion.h>
#include <mproc.h>

#include "tests/helpers.h"

T_SUITE(seed_queue);

struct ctx {
	mp_queue *q;
	struct t_sync go;
};

/* Child: put "hello" after the parent says go. */
static int
put_hello_after_go(void *arg)
{
	struct ctx *c = arg;

	T_CHECK(t_sync_wait(&c->go, 30000) == 0);
	T_CHECK(mp_queue_put(c->q, "hello", 5, MP_FOREVER) == 0);
	return T_PASS;
}

/* Child: take one message after the parent says go. */
static int
get_one_after_go(void *arg)
{
	struct ctx *c = arg;
	char buf[16];

	T_CHECK(t_sync_wait(&c->go, 30000) == 0);
	T_CHECK(mp_queue_get(c->q, buf, sizeof(buf), MP_FOREVER) == 1);
	T_CHECK(buf[0] == 'a');
	return T_PASS;
}

/* q.put(obj) blocks until a slot frees: a child's get frees it. */
T_TEST(seed_queue, put_blocks_until_a_slot_frees)
{
	struct ctx c;
	pid_t pid;

	cr_assert_eq(mp_queue_new(&c.q, 1, 16), 0);
	t_sync_init(&c.go);
	cr_assert_eq(mp_queue_put(c.q, "a", 1, MP_FOREVER), 0);
	pid = t_spawn(get_one_after_go, &c);
	cr_assert_gt(pid, 0);
	t_sync_signal(&c.go);
	/* Full until the child takes "a"; then this put goes through. */
	cr_assert_eq(mp_queue_put(c.q, "b", 1, MP_FOREVER), 0);
	t_wait_exit(pid, T_PASS);
	cr_assert_eq(mp_queue_qsize(c.q), 1);
	t_sync_fini(&c.go);
	mp_queue_free(c.q);
}

/* q.put(obj, timeout=t) raises queue.Full after t: -ETIMEDOUT here. */
T_TEST(seed_queue, put_with_timeout_reports_full_after_the_timeout)
{
	mp_queue *q;
	int64_t t0, dt;

	cr_assert_eq(mp_queue_new(&q, 2, 16), 0);
	cr_assert_eq(mp_queue_put(q, "a", 1, MP_MSEC(50)), 0);
	cr_assert_eq(mp_queue_put(q, "b", 1, MP_MSEC(50)), 0);
	t0 = t_now();
	cr_assert_eq(mp_queue_put(q, "c", 1, MP_MSEC(50)), -ETIMEDOUT);
	dt = t_now() - t0;
	cr_assert_geq(dt, MP_MSEC(50));
	cr_assert_lt(dt, MP_MSEC(T_MS(5000)));
	cr_assert_eq(mp_queue_qsize(q), 2);
	mp_queue_free(q);
}

/* q.put(obj, block=False) raises queue.Full at once: -EAGAIN here. */
T_TEST(seed_queue, put_without_blocking_reports_full_at_once)
{
	mp_queue *q;

	cr_assert_eq(mp_queue_new(&q, 1, 16), 0);
	cr_assert_eq(mp_queue_put(q, "a", 1, MP_NOWAIT), 0);
	cr_assert_eq(mp_queue_put(q, "b", 1, MP_NOWAIT), -EAGAIN);
	cr_assert_eq(mp_queue_qsize(q), 1);
	mp_queue_free(q);
}

/* q.get() blocks until another process puts. */
T_TEST(seed_queue, get_blocks_until_another_process_puts)
{
	struct ctx c;
	char buf[16];
	pid_t pid;

	cr_assert_eq(mp_queue_new(&c.q, 0, 0), 0);
	t_sync_init(&c.go);
	pid = t_spawn(put_hello_after_go, &c);
	cr_assert_gt(pid, 0);
	cr_assert_eq(mp_queue_get(c.q, buf, sizeof(buf), MP_NOWAIT), -EAGAIN);
	t_sync_signal(&c.go);
	cr_assert_eq(mp_queue_get(c.q, buf, sizeof(buf), MP_FOREVER), 5);
	cr_assert_eq(memcmp(buf, "hello", 5), 0);
	t_wait_exit(pid, T_PASS);
	t_sync_fini(&c.go);
	mp_queue_free(c.q);
}

/* q.get(timeout=t) raises queue.Empty after t: -ETIMEDOUT here. */
T_TEST(seed_queue, get_with_timeout_reports_empty_after_the_timeout)
{
	mp_queue *q;
	char buf[16];
	int64_t t0, dt;

	cr_assert_eq(mp_queue_new(&q, 4, 16), 0);
	t0 = t_now();
	cr_assert_eq(mp_queue_get(q, buf, sizeof(buf), MP_MSEC(50)),
		     -ETIMEDOUT);
	dt = t_now() - t0;
	cr_assert_geq(dt, MP_MSEC(50));
	cr_assert_lt(dt, MP_MSEC(T_MS(5000)));
	cr_assert_eq(mp_queue_get(q, buf, sizeof(buf), MP_NOWAIT), -EAGAIN);
	mp_queue_free(q);
}

/* Child: put n one-byte messages. */
static int
put_three(void *arg)
{
	struct ctx *c = arg;

	for (int i = 0; i < 3; i++)
		T_CHECK(mp_queue_put(c->q, "x", 1, MP_NOWAIT) == 0);
	return T_PASS;
}

/* qsize() counts what every process put and took. */
T_TEST(seed_queue, qsize_counts_across_processes)
{
	struct ctx c;
	char buf[4];

	cr_assert_eq(mp_queue_new(&c.q, 8, 4), 0);
	cr_assert_eq(mp_queue_qsize(c.q), 0);
	cr_assert_eq(mp_queue_put(c.q, "a", 1, MP_NOWAIT), 0);
	t_wait_exit(t_spawn(put_three, &c), T_PASS);
	cr_assert_eq(mp_queue_qsize(c.q), 4);
	cr_assert_eq(mp_queue_get(c.q, buf, sizeof(buf), MP_NOWAIT), 1);
	cr_assert_eq(mp_queue_qsize(c.q), 3);
	mp_queue_free(c.q);
}

/* empty() is true exactly when nothing is queued. */
T_TEST(seed_queue, empty_is_true_exactly_when_nothing_is_queued)
{
	struct ctx c;
	char buf[4];

	cr_assert_eq(mp_queue_new(&c.q, 8, 4), 0);
	cr_assert(mp_queue_empty(c.q));
	t_wait_exit(t_spawn(put_three, &c), T_PASS);
	cr_assert_not(mp_queue_empty(c.q));
	for (int i = 0; i < 3; i++) {
		cr_assert_not(mp_queue_empty(c.q));
		cr_assert_eq(mp_queue_get(c.q, buf, sizeof(buf), MP_NOWAIT),
			     1);
	}
	cr_assert(mp_queue_empty(c.q));
	mp_queue_free(c.q);
}

/* full() is true exactly when maxsize messages are queued. */
T_TEST(seed_queue, full_is_true_exactly_at_maxsize)
{
	struct ctx c;
	char buf[4];

	cr_assert_eq(mp_queue_new(&c.q, 3, 4), 0);
	cr_assert_not(mp_queue_full(c.q));
	cr_assert_eq(mp_queue_put(c.q, "a", 1, MP_NOWAIT), 0);
	cr_assert_eq(mp_queue_put(c.q, "b", 1, MP_NOWAIT), 0);
	cr_assert_not(mp_queue_full(c.q));
	cr_assert_eq(mp_queue_put(c.q, "c", 1, MP_NOWAIT), 0);
	cr_assert(mp_queue_full(c.q));
	cr_assert_eq(mp_queue_get(c.q, buf, sizeof(buf), MP_NOWAIT), 1);
	cr_assert_not(mp_queue_full(c.q));
	/* Round the ring once more: still exact past the wrap. */
	for (int i = 0; i < 7; i++) {
		cr_assert_eq(mp_queue_put(c.q, "d", 1, MP_NOWAIT), 0);
		cr_assert(mp_queue_full(c.q));
		cr_assert_eq(mp_queue_get(c.q, buf, sizeof(buf), MP_NOWAIT),
			     1);
		cr_assert_not(mp_queue_full(c.q));
	}
	mp_queue_free(c.q);
}
