/* SPDX-License-Identifier: MIT */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <sys/wait.h>

#include <criterion/criterion.h>
#include <mproc.h>

#include "tests/helpers.h"

T_SUITE(queue);

/* Lines of a /proc/self file. */
static int
proc_lines(const char *path)
{
	FILE *f = fopen(path, "r");
	int n = 0, ch;

	if (f == NULL)
		return -1;
	while ((ch = fgetc(f)) != EOF)
		n += ch == '\n';
	fclose(f);
	return n;
}

T_TEST(queue, bad_arguments_are_einval)
{
	mp_queue *q = NULL, *freed;
	const void *msgs[1] = { "a" };
	size_t lens[1] = { 1 };
	const void *cm;
	void *m;
	char buf[8];

	cr_assert_eq(mp_queue_new(NULL, 4, 8), -EINVAL);
	cr_assert_eq(mp_queue_new(&q, (size_t)1 << 40, 8), -EINVAL);
	cr_assert_eq(mp_queue_new(&q, 4, (size_t)1 << 40), -EINVAL);
	cr_assert_null(q);

	/* NULL handle. */
	cr_assert_eq(mp_queue_put(NULL, "a", 1, MP_NOWAIT), -EINVAL);
	cr_assert_eq(mp_queue_get(NULL, buf, 8, MP_NOWAIT), -EINVAL);
	cr_assert_eq(mp_queue_put_many(NULL, msgs, lens, 1, 0), -EINVAL);
	cr_assert_eq(mp_queue_get_many(NULL, buf, 8, lens, 1, 0), -EINVAL);
	cr_assert_eq(mp_queue_reserve(NULL, &m, 0), -EINVAL);
	cr_assert_eq(mp_queue_commit(NULL, buf, 1), -EINVAL);
	cr_assert_eq(mp_queue_peek(NULL, &cm, 0), -EINVAL);
	cr_assert_eq(mp_queue_release(NULL, buf), -EINVAL);
	cr_assert_eq(mp_queue_task_done(NULL), -EINVAL);
	cr_assert_eq(mp_queue_join(NULL, 0), -EINVAL);
	cr_assert_eq(mp_queue_qsize(NULL), 0);
	cr_assert(mp_queue_empty(NULL));
	cr_assert_not(mp_queue_full(NULL));
	cr_assert_eq(mp_queue_lost(NULL), 0);
	cr_assert_eq(mp_queue_maxsize(NULL), 0);
	cr_assert_not(mp_queue_is_closed(NULL));
	mp_queue_close(NULL);
	mp_queue_free(NULL);

	/* Bad arguments on a good handle. */
	cr_assert_eq(mp_queue_new(&q, 4, 8), 0);
	cr_assert_eq(mp_queue_put(q, NULL, 1, MP_NOWAIT), -EINVAL);
	cr_assert_eq(mp_queue_put(q, "a", 1, -2), -EINVAL);
	cr_assert_eq(mp_queue_get(q, buf, 8, -5), -EINVAL);
	cr_assert_eq(mp_queue_get(q, NULL, 8, MP_NOWAIT), -EINVAL);
	cr_assert_eq(mp_queue_put_many(q, msgs, lens, 0, 0), -EINVAL);
	cr_assert_eq(mp_queue_put_many(q, NULL, lens, 1, 0), -EINVAL);
	cr_assert_eq(mp_queue_get_many(q, buf, 8, NULL, 1, 0), -EINVAL);
	cr_assert_eq(mp_queue_get_many(q, buf, 8, lens, 0, 0), -EINVAL);
	cr_assert_eq(mp_queue_reserve(q, NULL, 0), -EINVAL);
	cr_assert_eq(mp_queue_peek(q, NULL, 0), -EINVAL);
	cr_assert_eq(mp_queue_join(q, -3), -EINVAL);
	/* Pointers that are not a slot this caller holds. */
	cr_assert_eq(mp_queue_commit(q, buf, 1), -EINVAL);
	cr_assert_eq(mp_queue_release(q, buf), -EINVAL);
	cr_assert_eq(mp_queue_reserve(q, &m, 0), 0);
	cr_assert_eq(mp_queue_commit(q, (char *)m + 1, 1), -EINVAL);
	cr_assert_eq(mp_queue_release(q, m), -EINVAL);
	cr_assert_eq(mp_queue_commit(q, m, 9), -EMSGSIZE);
	cr_assert_eq(mp_queue_commit(q, m, 1), 0);
	cr_assert_eq(mp_queue_commit(q, m, 1), -EINVAL);
	/* task_done more often than puts. */
	cr_assert_eq(mp_queue_task_done(q), 0);
	cr_assert_eq(mp_queue_task_done(q), -EINVAL);

	/* A freed handle is refused, not trusted. */
	freed = q;
	mp_queue_free(q);
	cr_assert_eq(mp_queue_put(freed, "a", 1, MP_NOWAIT), -EINVAL);
	cr_assert_eq(mp_queue_get(freed, buf, 8, MP_NOWAIT), -EINVAL);
	cr_assert_eq(mp_queue_qsize(freed), 0);
	mp_queue_free(freed);
}

/* Child: out of fds, then out of address space. */
static int
new_under_limits(void *arg)
{
	struct rlimit fds, as;
	rlim_t was;
	mp_queue *q = NULL;

	(void)arg;
	T_CHECK(getrlimit(RLIMIT_AS, &as) == 0);
	T_CHECK(getrlimit(RLIMIT_NOFILE, &fds) == 0);
	was = fds.rlim_cur;
	fds.rlim_cur = 0;
	T_CHECK(setrlimit(RLIMIT_NOFILE, &fds) == 0);
	T_CHECK(mp_queue_new(&q, 4, 8) == -EMFILE);
	T_CHECK(q == NULL);
	fds.rlim_cur = was;
	T_CHECK(setrlimit(RLIMIT_NOFILE, &fds) == 0);
#ifdef __SANITIZE_ADDRESS__
	/* ASan's shadow memory is far beyond any small RLIMIT_AS. */
	return T_PASS;
#endif
	/* 1 GiB of slots where the address space allows a few MiB more. */
	as.rlim_cur = 256u << 20;
	T_CHECK(setrlimit(RLIMIT_AS, &as) == 0);
	T_CHECK(mp_queue_new(&q, 1u << 20, 1024) == -ENOMEM);
	T_CHECK(q == NULL);
	return T_PASS;
}

T_TEST(queue, new_reports_emfile_and_enomem)
{
	t_wait_exit(t_spawn(new_under_limits, NULL), T_PASS);
}

/*
 * Every length from 0 to 80 bytes arrives exact, through the inline copy
 * of the fast paths (up to 64 bytes, in rings of 8 slots) and through
 * the general path (longer messages, and every message in a ring of 7),
 * and nothing past the length is written in the caller's buffer.
 */
T_TEST(queue, every_small_length_is_copied_exactly)
{
	static const size_t maxes[] = { 16, 64, 128 };
	unsigned char in[80], out[128 + 8];
	mp_queue *q;

	for (size_t k = 0; k < 6; k++) {
		size_t mx = maxes[k % 3];

		cr_assert_eq(mp_queue_new(&q, k < 3 ? 8 : 7, mx), 0);
		for (size_t len = 0; len <= mx && len <= sizeof(in); len++) {
			for (size_t i = 0; i < len; i++)
				in[i] = (unsigned char)(len * 31 + i * 7 + 1);
			cr_assert_eq(mp_queue_put(q, len ? in : NULL, len,
						  MP_NOWAIT), 0);
			memset(out, 0xee, sizeof(out));
			cr_assert_eq(mp_queue_get(q, out, mx, MP_NOWAIT),
				     (ssize_t)len, "msg_max %zu len %zu", mx,
				     len);
			cr_assert_eq(memcmp(out, in, len), 0,
				     "msg_max %zu len %zu", mx, len);
			for (size_t i = len; i < sizeof(out); i++)
				cr_assert_eq(out[i], 0xee,
					     "len %zu: byte %zu written", len,
					     i);
		}
		mp_queue_free(q);
	}
}

T_TEST(queue, defaults_and_sizes)
{
	mp_queue *q;
	char big[1024], buf[1024];

	cr_assert_eq(mp_queue_new(&q, 0, 0), 0);
	cr_assert_eq(mp_queue_maxsize(q), 1024);
	cr_assert_eq(mp_queue_msg_max(q), 1024);
	memset(big, 7, sizeof(big));
	cr_assert_eq(mp_queue_put(q, big, sizeof(big), MP_NOWAIT), 0);
	cr_assert_eq(mp_queue_put(q, NULL, 0, MP_NOWAIT), 0);
	cr_assert_eq(mp_queue_get(q, buf, sizeof(buf), MP_NOWAIT), 1024);
	cr_assert_eq(memcmp(big, buf, sizeof(buf)), 0);
	cr_assert_eq(mp_queue_get(q, NULL, 0, MP_NOWAIT), 0);
	cr_assert(mp_queue_empty(q));
	mp_queue_free(q);
}

T_TEST(queue, fifo_order_over_many_laps_with_odd_maxsize)
{
	mp_queue *q;
	int v;

	cr_assert_eq(mp_queue_new(&q, 7, sizeof(int)), 0);
	for (int i = 0, next = 0; i < 1000; i++) {
		cr_assert_eq(mp_queue_put(q, &i, sizeof(i), MP_NOWAIT), 0);
		if (i % 3 == 2 || mp_queue_full(q)) {
			while (!mp_queue_empty(q)) {
				cr_assert_eq(mp_queue_get(q, &v, sizeof(v),
							  MP_NOWAIT), 4);
				cr_assert_eq(v, next++);
			}
		}
	}
	mp_queue_free(q);
}

T_TEST(queue, emsgsize_both_ways_and_the_message_stays)
{
	mp_queue *q;
	char buf[16];
	size_t lens[2];

	cr_assert_eq(mp_queue_new(&q, 4, 8), 0);
	cr_assert_eq(mp_queue_put(q, "123456789", 9, MP_NOWAIT), -EMSGSIZE);
	cr_assert(mp_queue_empty(q));
	cr_assert_eq(mp_queue_put(q, "12345678", 8, MP_NOWAIT), 0);
	cr_assert_eq(mp_queue_get(q, buf, 7, MP_NOWAIT), -EMSGSIZE);
	cr_assert_eq(mp_queue_get(q, buf, 7, MP_FOREVER), -EMSGSIZE);
	cr_assert_eq(mp_queue_get_many(q, buf, 7, lens, 2, 0), -EMSGSIZE);
	cr_assert_eq(mp_queue_qsize(q), 1);
	cr_assert_eq(mp_queue_get(q, buf, 8, MP_NOWAIT), 8);
	cr_assert_eq(memcmp(buf, "12345678", 8), 0);
	mp_queue_free(q);
}

T_TEST(queue, nowait_reports_eagain_on_full_and_empty)
{
	mp_queue *q;
	char buf[4];
	void *m;
	const void *cm;

	cr_assert_eq(mp_queue_new(&q, 2, 4), 0);
	cr_assert_eq(mp_queue_get(q, buf, 4, MP_NOWAIT), -EAGAIN);
	cr_assert_eq(mp_queue_peek(q, &cm, MP_NOWAIT), -EAGAIN);
	cr_assert_eq(mp_queue_put(q, "a", 1, MP_NOWAIT), 0);
	cr_assert_eq(mp_queue_put(q, "b", 1, MP_NOWAIT), 0);
	cr_assert(mp_queue_full(q));
	cr_assert_eq(mp_queue_put(q, "c", 1, MP_NOWAIT), -EAGAIN);
	cr_assert_eq(mp_queue_reserve(q, &m, MP_NOWAIT), -EAGAIN);
	cr_assert_eq(mp_queue_qsize(q), 2);
	mp_queue_free(q);
}

T_TEST(queue, timeouts_are_honoured)
{
	mp_queue *q;
	char buf[4];
	void *m;
	int64_t t0, dt;

	cr_assert_eq(mp_queue_new(&q, 1, 4), 0);
	t0 = t_now();
	cr_assert_eq(mp_queue_get(q, buf, 4, MP_MSEC(30)), -ETIMEDOUT);
	dt = t_now() - t0;
	cr_assert_geq(dt, MP_MSEC(30));
	cr_assert_lt(dt, MP_MSEC(T_MS(5000)));
	cr_assert_eq(mp_queue_put(q, "a", 1, MP_NOWAIT), 0);
	t0 = t_now();
	cr_assert_eq(mp_queue_put(q, "b", 1, MP_MSEC(30)), -ETIMEDOUT);
	cr_assert_eq(mp_queue_reserve(q, &m, MP_MSEC(30)), -ETIMEDOUT);
	dt = t_now() - t0;
	cr_assert_geq(dt, MP_MSEC(60));
	cr_assert_lt(dt, MP_MSEC(T_MS(5000)));
	cr_assert_eq(mp_queue_get(q, buf, 4, MP_MSEC(30)), 1);
	t0 = t_now();
	cr_assert_eq(mp_queue_join(q, MP_MSEC(30)), -ETIMEDOUT);
	cr_assert_geq(t_now() - t0, MP_MSEC(30));
	cr_assert_eq(mp_queue_join(q, MP_NOWAIT), -EAGAIN);
	cr_assert_eq(mp_queue_task_done(q), 0);
	cr_assert_eq(mp_queue_join(q, MP_NOWAIT), 0);
	mp_queue_free(q);
}

T_TEST(queue, close_fails_puts_and_drains_gets)
{
	mp_queue *q;
	char buf[8];
	void *m;
	const void *cm;

	cr_assert_eq(mp_queue_new(&q, 4, 8), 0);
	cr_assert_eq(mp_queue_put(q, "ab", 2, MP_NOWAIT), 0);
	cr_assert_eq(mp_queue_reserve(q, &m, MP_NOWAIT), 0);
	mp_queue_close(q);
	mp_queue_close(q);
	cr_assert(mp_queue_is_closed(q));
	cr_assert_eq(mp_queue_qsize(q), 2);
	cr_assert_eq(mp_queue_put(q, "cd", 2, MP_NOWAIT), -EPIPE);
	cr_assert_eq(mp_queue_put(q, "cd", 2, MP_FOREVER), -EPIPE);
	cr_assert_eq(mp_queue_reserve(q, &m, MP_FOREVER) == -EPIPE, 1);
	/* A refused put leaves nothing behind, not even a retired slot. */
	cr_assert_eq(mp_queue_qsize(q), 2);
	/* A reservation made before the close may still be committed. */
	cr_assert_eq(mp_queue_get(q, buf, 8, MP_NOWAIT), 2);
	memcpy(m, "ef", 2);
	cr_assert_eq(mp_queue_commit(q, m, 2), 0);
	cr_assert_eq(mp_queue_peek(q, &cm, MP_NOWAIT), 2);
	cr_assert_eq(memcmp(cm, "ef", 2), 0);
	cr_assert_eq(mp_queue_release(q, cm), 0);
	cr_assert_eq(mp_queue_get(q, buf, 8, MP_NOWAIT), -EPIPE);
	cr_assert_eq(mp_queue_get(q, buf, 8, MP_FOREVER), -EPIPE);
	cr_assert_eq(mp_queue_peek(q, &cm, MP_FOREVER), -EPIPE);
	mp_queue_free(q);
}

struct ctx {
	mp_queue *q;
	struct t_sync ready;
	int n;
};

static int
get_expect_epipe(void *arg)
{
	struct ctx *c = arg;
	char buf[8];

	t_sync_signal(&c->ready);
	T_CHECK(mp_queue_get(c->q, buf, sizeof(buf), MP_FOREVER) == -EPIPE);
	return T_PASS;
}

static int
put_expect_epipe(void *arg)
{
	struct ctx *c = arg;

	t_sync_signal(&c->ready);
	T_CHECK(mp_queue_put(c->q, "x", 1, MP_FOREVER) == -EPIPE);
	return T_PASS;
}

static int
close_it(void *arg)
{
	mp_queue_close(((struct ctx *)arg)->q);
	return T_PASS;
}

T_TEST(queue, close_wakes_sleepers_in_every_process)
{
	struct ctx c, f;
	pid_t g1, g2, p1;

	cr_assert_eq(mp_queue_new(&c.q, 4, 8), 0);
	cr_assert_eq(mp_queue_new(&f.q, 1, 8), 0);
	cr_assert_eq(mp_queue_put(f.q, "x", 1, MP_NOWAIT), 0);
	t_sync_init(&c.ready);
	t_sync_init(&f.ready);
	g1 = t_spawn(get_expect_epipe, &c);
	g2 = t_spawn(get_expect_epipe, &c);
	p1 = t_spawn(put_expect_epipe, &f);
	cr_assert_eq(t_sync_wait(&c.ready, 10000), 0);
	cr_assert_eq(t_sync_wait(&c.ready, 10000), 0);
	cr_assert_eq(t_sync_wait(&f.ready, 10000), 0);
	/* Let them reach their futex sleep (ready comes just before). */
	cr_assert_eq(mp_queue_get(c.q, NULL, 0, MP_MSEC(20)), -ETIMEDOUT);
	/* The close is made by yet another process. */
	t_wait_exit(t_spawn(close_it, &c), T_PASS);
	t_wait_exit(t_spawn(close_it, &f), T_PASS);
	t_wait_exit(g1, T_PASS);
	t_wait_exit(g2, T_PASS);
	t_wait_exit(p1, T_PASS);
	cr_assert(mp_queue_is_closed(c.q));
	t_sync_fini(&c.ready);
	t_sync_fini(&f.ready);
	mp_queue_free(c.q);
	mp_queue_free(f.q);
}

static int
get_one_forever(void *arg)
{
	struct ctx *c = arg;
	char buf[8];

	t_sync_signal(&c->ready);
	T_CHECK(mp_queue_get(c->q, buf, sizeof(buf), MP_FOREVER) == 1);
	T_CHECK(buf[0] == 'w');
	return T_PASS;
}

static int
put_one_forever(void *arg)
{
	struct ctx *c = arg;

	t_sync_signal(&c->ready);
	T_CHECK(mp_queue_put(c->q, "w", 1, MP_FOREVER) == 0);
	return T_PASS;
}

/* The child has not exited (it is not reaped either). */
static bool
still_running(pid_t pid)
{
	siginfo_t si = { 0 };

	return waitid(P_PID, (id_t)pid, &si, WEXITED | WNOHANG | WNOWAIT) ==
	       0 && si.si_pid == 0;
}

/* Wait ms without sleep(): a timed get on a queue nobody fills. */
static void
pause_ms(int ms)
{
	mp_queue *idle;

	cr_assert_eq(mp_queue_new(&idle, 1, 1), 0);
	cr_assert_eq(mp_queue_get(idle, NULL, 0, MP_MSEC(ms)), -ETIMEDOUT);
	mp_queue_free(idle);
}

/*
 * A lost wake-up would not hang (every sleep is bounded to 100 ms, a
 * safety net), so it is caught by time: a woken sleeper is back at once,
 * a forgotten one only when its nap ends, at a random point of 100 ms.
 * Five rounds all back within 30 ms: a lost wake-up passes with
 * probability 0.3^5.
 */
#define WAKE_ROUNDS 5
#define WAKE_LIMIT MP_MSEC(T_MS(30))

T_TEST(queue, a_sleeping_consumer_is_woken_by_a_put)
{
	struct ctx c;
	pid_t pid;

	cr_assert_eq(mp_queue_new(&c.q, 4, 8), 0);
	t_sync_init(&c.ready);
	for (int r = 0; r < WAKE_ROUNDS; r++) {
		pid = t_spawn(get_one_forever, &c);
		cr_assert_eq(t_sync_wait(&c.ready, 10000), 0);
		/* Past its spin and yield phases: it sleeps in the futex. */
		pause_ms(20);
		cr_assert(still_running(pid));
		int64_t t0 = t_now();
		cr_assert_eq(mp_queue_put(c.q, "w", 1, MP_NOWAIT), 0);
		t_wait_exit(pid, T_PASS);
		cr_assert_lt(t_now() - t0, WAKE_LIMIT, "round %d", r);
	}
	t_sync_fini(&c.ready);
	mp_queue_free(c.q);
}

T_TEST(queue, a_sleeping_producer_is_woken_by_a_get)
{
	struct ctx c;
	char buf[8];
	pid_t pid;

	cr_assert_eq(mp_queue_new(&c.q, 1, 8), 0);
	cr_assert_eq(mp_queue_put(c.q, "a", 1, MP_NOWAIT), 0);
	t_sync_init(&c.ready);
	for (int r = 0; r < WAKE_ROUNDS; r++) {
		pid = t_spawn(put_one_forever, &c);
		cr_assert_eq(t_sync_wait(&c.ready, 10000), 0);
		pause_ms(20);
		cr_assert(still_running(pid));
		int64_t t0 = t_now();
		cr_assert_eq(mp_queue_get(c.q, buf, sizeof(buf), MP_NOWAIT),
			     1);
		t_wait_exit(pid, T_PASS);
		cr_assert_lt(t_now() - t0, WAKE_LIMIT, "round %d", r);
		/* The child's message is now the one queued. */
	}
	cr_assert_eq(mp_queue_get(c.q, buf, sizeof(buf), MP_NOWAIT), 1);
	cr_assert_eq(buf[0], 'w');
	t_sync_fini(&c.ready);
	mp_queue_free(c.q);
}

static int
consume_and_task_done(void *arg)
{
	struct ctx *c = arg;
	char buf[8];

	for (int i = 0; i < c->n; i++) {
		T_CHECK(mp_queue_get(c->q, buf, sizeof(buf), MP_SEC(20)) ==
			1);
		T_CHECK(mp_queue_task_done(c->q) == 0);
	}
	return T_PASS;
}

T_TEST(queue, join_waits_for_every_task_done)
{
	struct ctx c = { .n = 50 };
	pid_t pid;

	cr_assert_eq(mp_queue_new(&c.q, 8, 8), 0);
	cr_assert_eq(mp_queue_join(c.q, MP_NOWAIT), 0);
	pid = t_spawn(consume_and_task_done, &c);
	for (int i = 0; i < c.n; i++)
		cr_assert_eq(mp_queue_put(c.q, "t", 1, MP_SEC(20)), 0);
	cr_assert_eq(mp_queue_join(c.q, MP_SEC(20)), 0);
	cr_assert(mp_queue_empty(c.q));
	t_wait_exit(pid, T_PASS);
	cr_assert_eq(mp_queue_task_done(c.q), -EINVAL);
	mp_queue_free(c.q);
}

T_TEST(queue, batch_put_and_get_keep_order_and_count)
{
	mp_queue *q;
	int vals[10], out[16];
	const void *msgs[10];
	size_t lens[16];

	cr_assert_eq(mp_queue_new(&q, 6, sizeof(int)), 0);
	for (int i = 0; i < 10; i++) {
		vals[i] = i;
		msgs[i] = &vals[i];
		lens[i] = sizeof(int);
	}
	/* Room for 6: a NOWAIT batch puts what fits and says how many. */
	cr_assert_eq(mp_queue_put_many(q, msgs, lens, 10, MP_NOWAIT), 6);
	cr_assert(mp_queue_full(q));
	cr_assert_eq(mp_queue_put_many(q, msgs, lens, 1, MP_NOWAIT), -EAGAIN);
	cr_assert_eq(mp_queue_get_many(q, out, sizeof(int), lens, 4, 0), 4);
	for (int i = 0; i < 4; i++) {
		cr_assert_eq(out[i], i);
		cr_assert_eq(lens[i], sizeof(int));
	}
	cr_assert_eq(mp_queue_put_many(q, msgs + 6, lens, 4, MP_MSEC(10)), 4);
	cr_assert_eq(mp_queue_get_many(q, out, sizeof(int), lens, 16, 0), 6);
	for (int i = 0; i < 6; i++)
		cr_assert_eq(out[i], i + 4);
	cr_assert_eq(mp_queue_get_many(q, out, sizeof(int), lens, 16, 0),
		     -EAGAIN);
	cr_assert_eq(mp_queue_get_many(q, out, sizeof(int), lens, 16,
				       MP_MSEC(10)), -ETIMEDOUT);
	mp_queue_free(q);
}

T_TEST(queue, batch_get_stops_before_a_message_too_long)
{
	mp_queue *q;
	char out[4 * 4];
	size_t lens[4];

	cr_assert_eq(mp_queue_new(&q, 8, 8), 0);
	cr_assert_eq(mp_queue_put(q, "ab", 2, 0), 0);
	cr_assert_eq(mp_queue_put(q, "abcdefgh", 8, 0), 0);
	cr_assert_eq(mp_queue_get_many(q, out, 4, lens, 4, 0), 1);
	cr_assert_eq(lens[0], 2);
	cr_assert_eq(mp_queue_qsize(q), 1);
	mp_queue_free(q);
}

T_TEST(queue, zero_copy_reserve_commit_peek_release)
{
	mp_queue *q;
	void *m;
	const void *cm;
	char buf[8];

	cr_assert_eq(mp_queue_new(&q, 2, 8), 0);
	cr_assert_eq(mp_queue_reserve(q, &m, MP_NOWAIT), 0);
	/* Reserved, not committed: nothing to take yet. */
	cr_assert_eq(mp_queue_get(q, buf, 8, MP_NOWAIT), -EAGAIN);
	memcpy(m, "zero", 4);
	cr_assert_eq(mp_queue_commit(q, m, 4), 0);
	cr_assert_eq(mp_queue_qsize(q), 1);
	cr_assert_eq(mp_queue_peek(q, &cm, MP_NOWAIT), 4);
	cr_assert_eq(memcmp(cm, "zero", 4), 0);
	cr_assert(mp_queue_empty(q));
	cr_assert_eq(mp_queue_release(q, cm), 0);
	cr_assert_eq(mp_queue_release(q, cm), -EINVAL);
	cr_assert_eq(mp_queue_put(q, "a", 1, MP_NOWAIT), 0);
	cr_assert_eq(mp_queue_put(q, "b", 1, MP_NOWAIT), 0);
	cr_assert_eq(mp_queue_get(q, buf, 8, MP_NOWAIT), 1);
	cr_assert_eq(buf[0], 'a');
	mp_queue_free(q);
}

/* ---- crashes ------------------------------------------------------- */

static int
reserve_then_hang(void *arg)
{
	struct ctx *c = arg;
	void *m;

	T_CHECK(mp_queue_reserve(c->q, &m, MP_NOWAIT) == 0);
	memcpy(m, "half", 4);
	t_sync_signal(&c->ready);
	for (;;)
		pause();
}

static int
peek_then_hang(void *arg)
{
	struct ctx *c = arg;
	const void *m;

	T_CHECK(mp_queue_peek(c->q, &m, MP_NOWAIT) == 1);
	t_sync_signal(&c->ready);
	for (;;)
		pause();
}

T_TEST(queue, producer_killed_mid_put_is_skipped_and_counted)
{
	struct ctx c;
	char buf[8];
	pid_t pid;

	cr_assert_eq(mp_queue_new(&c.q, 4, 8), 0);
	t_sync_init(&c.ready);
	pid = t_spawn(reserve_then_hang, &c);
	cr_assert_eq(t_sync_wait(&c.ready, 10000), 0);
	cr_assert_eq(mp_queue_put(c.q, "next", 4, MP_NOWAIT), 0);
	kill(pid, SIGKILL);
	cr_assert_eq(t_wait_status(pid, 10000), -SIGKILL);
	/* The dead slot is first in line: the get repairs it and goes on. */
	cr_assert_eq(mp_queue_get(c.q, buf, sizeof(buf), MP_SEC(10)), 4);
	cr_assert_eq(memcmp(buf, "next", 4), 0);
	cr_assert_eq(mp_queue_lost(c.q), 1);
	cr_assert(mp_queue_empty(c.q));
	/* Nothing is left pending for join. */
	cr_assert_eq(mp_queue_task_done(c.q), 0);
	cr_assert_eq(mp_queue_join(c.q, MP_NOWAIT), 0);
	t_sync_fini(&c.ready);
	mp_queue_free(c.q);
}

T_TEST(queue, producer_killed_mid_put_nowait_get_repairs_too)
{
	struct ctx c;
	char buf[8];
	pid_t pid;
	ssize_t rc;
	int64_t t0;

	cr_assert_eq(mp_queue_new(&c.q, 4, 8), 0);
	t_sync_init(&c.ready);
	pid = t_spawn(reserve_then_hang, &c);
	cr_assert_eq(t_sync_wait(&c.ready, 10000), 0);
	cr_assert_eq(mp_queue_put(c.q, "next", 4, MP_NOWAIT), 0);
	kill(pid, SIGKILL);
	cr_assert_eq(t_wait_status(pid, 10000), -SIGKILL);
	/* A poller that never blocks still gets past it, within a bound. */
	t0 = t_now();
	while ((rc = mp_queue_get(c.q, buf, sizeof(buf), MP_NOWAIT)) ==
	       -EAGAIN && t_now() - t0 < MP_SEC(10))
		;
	cr_assert_eq(rc, 4);
	cr_assert_eq(mp_queue_lost(c.q), 1);
	t_sync_fini(&c.ready);
	mp_queue_free(c.q);
}

T_TEST(queue, consumer_killed_mid_get_releases_its_slot)
{
	struct ctx c;
	char buf[8];
	pid_t pid;

	cr_assert_eq(mp_queue_new(&c.q, 2, 8), 0);
	t_sync_init(&c.ready);
	cr_assert_eq(mp_queue_put(c.q, "a", 1, MP_NOWAIT), 0);
	cr_assert_eq(mp_queue_put(c.q, "b", 1, MP_NOWAIT), 0);
	pid = t_spawn(peek_then_hang, &c);
	cr_assert_eq(t_sync_wait(&c.ready, 10000), 0);
	kill(pid, SIGKILL);
	cr_assert_eq(t_wait_status(pid, 10000), -SIGKILL);
	/* "a"'s slot is held by the dead: this put repairs it. */
	cr_assert_eq(mp_queue_put(c.q, "c", 1, MP_SEC(10)), 0);
	cr_assert_eq(mp_queue_lost(c.q), 1);
	cr_assert_eq(mp_queue_get(c.q, buf, sizeof(buf), MP_NOWAIT), 1);
	cr_assert_eq(buf[0], 'b');
	cr_assert_eq(mp_queue_get(c.q, buf, sizeof(buf), MP_NOWAIT), 1);
	cr_assert_eq(buf[0], 'c');
	cr_assert_eq(mp_queue_task_done(c.q), 0);
	cr_assert_eq(mp_queue_task_done(c.q), 0);
	cr_assert_eq(mp_queue_join(c.q, MP_NOWAIT), 0);
	t_sync_fini(&c.ready);
	mp_queue_free(c.q);
}

/* ---- many processes ------------------------------------------------ */

#define MP_PRODUCERS 4
#define MP_CONSUMERS 4
#define MP_PER_PRODUCER 1000000

struct msg {
	uint32_t producer;
	uint32_t seq;
};

struct mpmc {
	mp_queue *q;
	_Atomic uint64_t *seen;	/* a bit per message, in shared memory */
	_Atomic uint64_t dups;
	_Atomic uint64_t disorder;
	_Atomic uint64_t got;
	uint64_t per_producer;
};

/* A child's own argument: copied into it by fork, unlike *m. */
struct mpmc_arg {
	struct mpmc *m;
	int id;
};

static int
mpmc_producer(void *arg)
{
	struct mpmc *m = ((struct mpmc_arg *)arg)->m;
	struct msg msg = { .producer = (uint32_t)((struct mpmc_arg *)arg)->id };

	for (uint32_t i = 0; i < m->per_producer; i++) {
		msg.seq = i;
		T_CHECK(mp_queue_put(m->q, &msg, sizeof(msg), MP_SEC(30)) ==
			0);
	}
	return T_PASS;
}

static int
mpmc_consumer(void *arg)
{
	struct mpmc *m = ((struct mpmc_arg *)arg)->m;
	int id = ((struct mpmc_arg *)arg)->id;
	int64_t last[MP_PRODUCERS];
	struct msg msg[16];
	size_t lens[16];
	ssize_t n;

	for (int i = 0; i < MP_PRODUCERS; i++)
		last[i] = -1;
	for (;;) {
		/* Mix single gets and batches: both paths are exercised. */
		if (id & 1)
			n = mp_queue_get_many(m->q, msg, sizeof(msg[0]), lens,
					      16, MP_SEC(30));
		else
			n = mp_queue_get(m->q, msg, sizeof(msg[0]),
					 MP_SEC(30)) < 0 ? -EPIPE : 1;
		if (n == -EPIPE)
			break;
		T_CHECK(n > 0);
		for (ssize_t i = 0; i < n; i++) {
			uint32_t p = msg[i].producer;
			uint64_t bit = p * m->per_producer + msg[i].seq;

			T_CHECK(p < MP_PRODUCERS);
			if ((int64_t)msg[i].seq <= last[p])
				atomic_fetch_add(&m->disorder, 1);
			last[p] = msg[i].seq;
			if (atomic_fetch_or(&m->seen[bit / 64],
					    1ull << (bit % 64)) &
			    (1ull << (bit % 64)))
				atomic_fetch_add(&m->dups, 1);
		}
		atomic_fetch_add(&m->got, (uint64_t)n);
	}
	return T_PASS;
}

T_TEST(queue, four_by_four_million_nothing_lost_duplicated_or_reordered,
     .timeout = 120)
{
	struct mpmc *m = mp_shm_alloc(sizeof(*m));
	uint64_t total = (uint64_t)MP_PRODUCERS * MP_PER_PRODUCER;
	pid_t prod[MP_PRODUCERS], cons[MP_CONSUMERS];
	struct mpmc_arg pa[MP_PRODUCERS], ca[MP_CONSUMERS];
	int64_t t0 = t_now();

	cr_assert_not_null(m);
	m->per_producer = MP_PER_PRODUCER;
	m->seen = mp_shm_alloc((total + 63) / 64 * 8);
	cr_assert_not_null(m->seen);
	cr_assert_eq(mp_queue_new(&m->q, 256, sizeof(struct msg)), 0);
	for (int i = 0; i < MP_CONSUMERS; i++) {
		ca[i] = (struct mpmc_arg){ m, i };
		cons[i] = t_spawn(mpmc_consumer, &ca[i]);
	}
	for (int i = 0; i < MP_PRODUCERS; i++) {
		pa[i] = (struct mpmc_arg){ m, i };
		prod[i] = t_spawn(mpmc_producer, &pa[i]);
	}
	for (int i = 0; i < MP_PRODUCERS; i++)
		cr_assert_eq(t_wait_status(prod[i], 100000), T_PASS);
	mp_queue_close(m->q);
	for (int i = 0; i < MP_CONSUMERS; i++)
		cr_assert_eq(t_wait_status(cons[i], 100000), T_PASS);
	cr_log_info("4x4x%d messages: %.2f s", MP_PER_PRODUCER,
		    (double)(t_now() - t0) / 1e9);
	cr_assert_eq(atomic_load(&m->got), total);
	cr_assert_eq(atomic_load(&m->dups), 0);
	cr_assert_eq(atomic_load(&m->disorder), 0);
	for (uint64_t i = 0; i < total / 64; i++)
		cr_assert_eq(atomic_load(&m->seen[i]), ~0ull);
	cr_assert_eq(mp_queue_lost(m->q), 0);
	cr_assert(mp_queue_empty(m->q));
	mp_queue_free(m->q);
	mp_shm_free(m->seen);
	mp_shm_free(m);
}

/*
 * A producer killed 1,000 times at random moments.  Each incarnation puts
 * (incarnation, seq) messages and records in shared memory how many of
 * its puts returned 0; consumers count what arrives per incarnation.
 */
#define KILLS 1000
#define STEADY_MSGS 200000

struct killrun {
	mp_queue *q;
	_Atomic uint64_t acked[KILLS + 1];	/* puts that returned 0 */
	_Atomic uint64_t count[KILLS + 2];	/* received, per source */
	_Atomic uint64_t sum[KILLS + 2];	/* sum of seqs received */
	_Atomic uint64_t disorder;
	_Atomic uint64_t bad;
	int inc;
};

static int
victim(void *arg)
{
	struct killrun *k = arg;
	struct msg msg = { .producer = (uint32_t)k->inc };

	for (uint32_t i = 0;; i++) {
		msg.seq = i;
		if (k->inc & 1) {
			/*
			 * Odd incarnations hold their slot a while (a slow
			 * writer), so that many kills land mid-put.
			 */
			void *slot;
			int64_t until = t_now() + (i % 16) * 1000;

			if (mp_queue_reserve(k->q, &slot, MP_FOREVER) != 0)
				return T_FAIL;
			memcpy(slot, &msg, sizeof(msg));
			while (t_now() < until)
				;
			if (mp_queue_commit(k->q, slot, sizeof(msg)) != 0)
				return T_FAIL;
		} else if (mp_queue_put(k->q, &msg, sizeof(msg),
					MP_FOREVER) != 0) {
			return T_FAIL;
		}
		atomic_store(&k->acked[k->inc], i + 1);
	}
}

static int
steady(void *arg)
{
	struct killrun *k = arg;
	struct msg msg = { .producer = KILLS + 1 };

	for (uint32_t i = 0; i < STEADY_MSGS; i++) {
		msg.seq = i;
		T_CHECK(mp_queue_put(k->q, &msg, sizeof(msg), MP_SEC(30)) ==
			0);
	}
	return T_PASS;
}

static int
kill_consumer(void *arg)
{
	struct killrun *k = arg;
	static int64_t last[KILLS + 2];
	struct msg msg;
	ssize_t n;

	for (int i = 0; i < KILLS + 2; i++)
		last[i] = -1;
	while ((n = mp_queue_get(k->q, &msg, sizeof(msg), MP_SEC(30))) > 0) {
		if (n != sizeof(msg) || msg.producer > KILLS + 1) {
			atomic_fetch_add(&k->bad, 1);
			continue;
		}
		if ((int64_t)msg.seq <= last[msg.producer])
			atomic_fetch_add(&k->disorder, 1);
		last[msg.producer] = msg.seq;
		atomic_fetch_add(&k->count[msg.producer], 1);
		atomic_fetch_add(&k->sum[msg.producer], msg.seq);
	}
	T_CHECK(n == -EPIPE);
	return T_PASS;
}

/*
 * Kill kills incarnations of victim in turn, each at a random moment up
 * to max_us after its fork; *inc tells each one its number (1..kills).
 */
static void
kill_at_random(int (*fn)(void *), void *arg, int *inc, int kills,
	       unsigned max_us)
{
	unsigned seed = (unsigned)t_now();

	for (int i = 1; i <= kills; i++) {
		*inc = i;
		pid_t v = t_spawn(fn, arg);
		int64_t until = t_now() + (rand_r(&seed) % max_us) * 1000;

		while (t_now() < until)
			;
		kill(v, SIGKILL);
		cr_assert_eq(t_wait_status(v, 10000), -SIGKILL);
	}
}

T_TEST(queue, producer_sigkilled_a_thousand_times_survivors_finish,
     .timeout = 120)
{
	struct killrun *k = mp_shm_alloc(sizeof(*k));
	pid_t c1, c2, st;
	int64_t t0 = t_now();

	cr_assert_not_null(k);
	cr_assert_eq(mp_queue_new(&k->q, 64, sizeof(struct msg)), 0);
	c1 = t_spawn(kill_consumer, k);
	c2 = t_spawn(kill_consumer, k);
	st = t_spawn(steady, k);
	kill_at_random(victim, k, &k->inc, KILLS, 2000);
	cr_assert_eq(t_wait_status(st, 100000), T_PASS);
	mp_queue_close(k->q);
	cr_assert_eq(t_wait_status(c1, 100000), T_PASS);
	cr_assert_eq(t_wait_status(c2, 100000), T_PASS);
	cr_log_info("%d kills: %.2f s, lost %llu", KILLS,
		    (double)(t_now() - t0) / 1e9,
		    (unsigned long long)mp_queue_lost(k->q));
	cr_assert_eq(atomic_load(&k->bad), 0);
	cr_assert_eq(atomic_load(&k->disorder), 0);
	cr_assert_leq(mp_queue_lost(k->q), KILLS);
	/* The steady producer lost nothing. */
	cr_assert_eq(atomic_load(&k->count[KILLS + 1]), STEADY_MSGS);
	/* Each incarnation: a gap-free prefix 0..n-1, at least the acked. */
	for (int i = 1; i <= KILLS; i++) {
		uint64_t n = atomic_load(&k->count[i]);
		cr_assert_eq(atomic_load(&k->sum[i]), n * (n - 1) / 2 * (n > 0),
			     "incarnation %d: holes or duplicates", i);
		cr_assert_geq(n, atomic_load(&k->acked[i]),
			      "incarnation %d: an acknowledged put lost", i);
	}
	cr_assert(mp_queue_empty(k->q));
	mp_queue_free(k->q);
	mp_shm_free(k);
}

T_TEST(queue, no_fd_or_mapping_leak_over_ten_thousand_cycles)
{
	int fds = t_fd_count(), maps = proc_lines("/proc/self/maps");
	char buf[8];

	for (int i = 0; i < 10000; i++) {
		mp_queue *q;

		cr_assert_eq(mp_queue_new(&q, 4, 8), 0);
		cr_assert_eq(mp_queue_put(q, "x", 1, MP_NOWAIT), 0);
		cr_assert_eq(mp_queue_get(q, buf, 8, MP_NOWAIT), 1);
		mp_queue_free(q);
	}
	cr_assert_eq(t_fd_count(), fds);
	cr_assert_eq(proc_lines("/proc/self/maps"), maps);
}

/*
 * The slot of the only message queued (whose data starts with marker):
 * found by its bytes in the memfd mappings of this process.
 */
static unsigned char *
find_slot_data(const unsigned char *marker, size_t n, unsigned char **map)
{
	FILE *f = fopen("/proc/self/maps", "r");
	char line[512];
	unsigned char *hit = NULL;

	cr_assert_not_null(f);
	while (hit == NULL && fgets(line, sizeof(line), f) != NULL) {
		unsigned long lo, hi;

		if (strstr(line, "memfd:") == NULL ||
		    sscanf(line, "%lx-%lx", &lo, &hi) != 2)
			continue;
		hit = memmem((void *)lo, hi - lo, marker, n);
		if (map != NULL)
			*map = (unsigned char *)lo;
	}
	fclose(f);
	return hit;
}

/*
 * Where a slot keeps its length: in the low 22 bits of the slot word
 * (8 bytes before the data) when msg_max < 2^22, else in a u32 field of
 * its own 8 bytes before the data.  Returns that field's address and mask.
 */
static uint32_t *
len_field(unsigned char *data, size_t msg_max, uint32_t *mask)
{
	*mask = msg_max < (1u << 22) ? (1u << 22) - 1 : UINT32_MAX;
	return (uint32_t *)(data - 8);
}

/* Fuzzing found it: a length a peer wrote was copied past buf. */
T_TEST(queue, garbage_length_is_ecorrupt_not_an_overflow)
{
	static const unsigned char marker[16] = "\x93queue-marker\x17\x42";
	/* Both slot layouts: the length in the word, and beside it. */
	static const size_t maxes[] = { 64, (size_t)8 << 20 };
	unsigned char buf[64 + 16], *data;
	const void *p;
	size_t lens[2];
	uint32_t *lf, mask;
	mp_queue *q;

	for (size_t k = 0; k < 2; k++) {
		size_t mx = maxes[k];

		cr_assert_eq(mp_queue_new(&q, 4, mx), 0);
		cr_assert_eq(mp_queue_put(q, marker, sizeof(marker),
					  MP_NOWAIT), 0);
		data = find_slot_data(marker, sizeof(marker), NULL);
		cr_assert_not_null(data);
		lf = len_field(data, mx, &mask);
		cr_assert_eq(*lf & mask, sizeof(marker), "layout %zu", k);
		/* Longer than msg_max, but within the field. */
		*lf = (*lf & ~mask) | (uint32_t)((mx + 1) & mask);

		memset(buf, 0xee, sizeof(buf));
		/*
		 * A buffer that would hold the bad length: only the check
		 * against msg_max refuses it (on the leaf path for the
		 * first layout); then one that would not.
		 */
		cr_assert_eq(mp_queue_get(q, buf, sizeof(buf), MP_NOWAIT),
			     MP_ECORRUPT);
		cr_assert_eq(mp_queue_get(q, buf, 32, MP_NOWAIT), MP_ECORRUPT);
		cr_assert_eq(mp_queue_get_many(q, buf, 64, lens, 2, MP_NOWAIT),
			     MP_ECORRUPT);
		cr_assert_eq(mp_queue_peek(q, &p, MP_NOWAIT), MP_ECORRUPT);
		for (size_t i = 0; i < sizeof(buf); i++)
			cr_assert_eq(buf[i], 0xee, "byte %zu written", i);

		/* Put right, the message is whole again. */
		*lf = (*lf & ~mask) | (uint32_t)sizeof(marker);
		cr_assert_eq(mp_queue_get(q, buf, 64, MP_NOWAIT),
			     (ssize_t)sizeof(marker));
		cr_assert_eq(memcmp(buf, marker, sizeof(marker)), 0);
		mp_queue_free(q);
	}
}

/* Fuzzing found it: a queue whose shared header was trashed leaked. */
T_TEST(queue, free_unmaps_a_queue_with_a_trashed_header)
{
	static const unsigned char marker[16] = "\x94queue-header\x18\x43";
	unsigned char *data, *map = NULL;
	int before, after;
	mp_queue *q;

	cr_assert_eq(mp_queue_new(&q, 4, 64), 0);
	cr_assert_eq(mp_queue_put(q, marker, sizeof(marker), MP_NOWAIT), 0);
	data = find_slot_data(marker, sizeof(marker), &map);
	cr_assert_not_null(data);
	before = proc_lines("/proc/self/maps");
	memset(map, 0x5a, 16);		/* the header: magic and version */
	cr_assert_eq(mp_queue_put(q, "x", 1, MP_NOWAIT), -EINVAL);
	mp_queue_free(q);
	after = proc_lines("/proc/self/maps");
	cr_assert_eq(after, before - 1, "maps: %d before, %d after", before,
		     after);
}

static mp_queue *trashed_q;

static int
calls_on_trashed_hints(void *arg)
{
	unsigned char buf[64];
	ssize_t r;

	(void)arg;
	for (int i = 0; i < 4; i++) {
		int64_t t = i < 2 ? MP_NOWAIT : MP_MSEC(10);

		r = mp_queue_put(trashed_q, "abc", 3, t);
		T_CHECK(r == 0 || r == -EAGAIN || r == -ETIMEDOUT ||
			r == MP_ECORRUPT);
		r = mp_queue_get(trashed_q, buf, sizeof(buf), t);
		T_CHECK(r >= 0 || r == -EAGAIN || r == -ETIMEDOUT ||
			r == MP_ECORRUPT);
	}
	return T_PASS;
}

/*
 * Fuzzing found it: slot words a peer wrote over sent a claim along 2^40
 * positions (a hang).  Every call returns, at worst with MP_ECORRUPT.
 */
T_TEST(queue, trashed_slot_words_do_not_hang)
{
	static const unsigned char marker[16] = "\x95queue-hints\x19\x44\x45";
	unsigned char *data, *map = NULL;
	mp_queue *q;
	pid_t pid;

	cr_assert_eq(mp_queue_new(&q, 3, 64), 0);
	cr_assert_eq(mp_queue_put(q, marker, sizeof(marker), MP_NOWAIT), 0);
	data = find_slot_data(marker, sizeof(marker), &map);
	cr_assert_not_null(data);
	/*
	 * Every slot word now holds a free slot of a seq far ahead of every
	 * position, as no put wrote: each position looks taken by someone
	 * else.  For msg_max 64 a slot is the word (8 bytes, the length in
	 * its low bits) and 64 bytes of data, 72 in all; the word is 8 bytes
	 * before the data.  (With 16 and 128, as this read before the
	 * slots were packed, it missed the words and tested nothing.)
	 */
	for (int i = 0; i < 3; i++)
		*(uint64_t *)(data - 8 + i * 72) = (uint64_t)1 << 62;
	trashed_q = q;
	pid = t_spawn(calls_on_trashed_hints, NULL);
	cr_assert_eq(t_wait_status(pid, 20000), T_PASS);
	mp_queue_free(q);
}

/* ---- batch claims and claim records under kills -------------------- */

/*
 * put_many producers SIGKILLed at random moments, beside a steady
 * put_many producer, with two get_many consumers.  Messages carry
 * (producer incarnation, seq) and a body of a length and bytes derived
 * from both, so that a torn or misplaced copy is seen too.
 */
#define PM_KILLS 300
#define PM_STEADY (PM_KILLS + 1)	/* the steady producer's id */
#define PM_STEADY_MSGS 60000
#define PM_SEQ_MAX 65536		/* seqs a producer may use */
#define PM_MSG_MAX 512
#define PM_BATCH_MAX 32

struct pmrun {
	mp_queue *q;
	_Atomic uint64_t acked[PM_KILLS + 1];	/* put_many returned */
	_Atomic uint64_t count[PM_STEADY + 1];	/* received, per producer */
	/* A bit per (producer, seq) received. */
	_Atomic uint64_t seen[(PM_STEADY + 1) * (PM_SEQ_MAX / 64)];
	_Atomic uint64_t dups;
	_Atomic uint64_t disorder;
	_Atomic uint64_t bad;
	int inc;
};

/* Write message (producer, seq) into m; returns its length. */
static size_t
pm_fill(unsigned char *m, uint32_t producer, uint32_t seq)
{
	size_t len = 8 + (producer * 13u + seq * 7u) % (PM_MSG_MAX - 7);

	memcpy(m, &producer, 4);
	memcpy(m + 4, &seq, 4);
	for (size_t j = 8; j < len; j++)
		m[j] = (unsigned char)(producer * 31u + seq * 17u + j);
	return len;
}

/* Whether m is a whole message as pm_fill wrote it. */
static bool
pm_check(const unsigned char *m, size_t len, uint32_t *producer,
	 uint32_t *seq)
{
	if (len < 8)
		return false;
	memcpy(producer, m, 4);
	memcpy(seq, m + 4, 4);
	if (len != 8 + (*producer * 13u + *seq * 7u) % (PM_MSG_MAX - 7))
		return false;
	for (size_t j = 8; j < len; j++)
		if (m[j] != (unsigned char)(*producer * 31u + *seq * 17u + j))
			return false;
	return true;
}

/* put_many batches of 1..32 of producer id's messages from seq on. */
static ssize_t
pm_put_batch(mp_queue *q, uint32_t id, uint32_t seq, uint32_t n,
	     int64_t timeout)
{
	static unsigned char store[PM_BATCH_MAX][PM_MSG_MAX];
	const void *msgs[PM_BATCH_MAX];
	size_t lens[PM_BATCH_MAX];

	for (uint32_t j = 0; j < n; j++) {
		lens[j] = pm_fill(store[j], id, seq + j);
		msgs[j] = store[j];
	}
	return mp_queue_put_many(q, msgs, lens, n, timeout);
}

static int
pm_victim(void *arg)
{
	struct pmrun *k = arg;
	uint32_t inc = (uint32_t)k->inc, seq = 0;
	unsigned seed = inc * 2654435761u;

	for (;;) {
		uint32_t n = 1 + (uint32_t)rand_r(&seed) % PM_BATCH_MAX;

		if (seq + n > PM_SEQ_MAX)
			for (;;)
				pause();
		if (pm_put_batch(k->q, inc, seq, n, MP_FOREVER) != (ssize_t)n)
			return T_FAIL;
		seq += n;
		atomic_store(&k->acked[inc], seq);
	}
}

static int
pm_steady(void *arg)
{
	struct pmrun *k = arg;
	unsigned seed = 12345;

	for (uint32_t seq = 0; seq < PM_STEADY_MSGS;) {
		uint32_t n = 1 + (uint32_t)rand_r(&seed) % PM_BATCH_MAX;

		if (n > PM_STEADY_MSGS - seq)
			n = PM_STEADY_MSGS - seq;
		T_CHECK(pm_put_batch(k->q, PM_STEADY, seq, n, MP_SEC(30)) ==
			(ssize_t)n);
		seq += n;
	}
	return T_PASS;
}

struct pmcons {
	struct pmrun *k;
	size_t batch;
};

static int
pm_consumer(void *arg)
{
	struct pmrun *k = ((struct pmcons *)arg)->k;
	size_t batch = ((struct pmcons *)arg)->batch;
	static unsigned char buf[PM_BATCH_MAX][PM_MSG_MAX];
	static int64_t last[PM_STEADY + 1];
	size_t lens[PM_BATCH_MAX];
	ssize_t n;

	for (int i = 0; i <= PM_STEADY; i++)
		last[i] = -1;
	while ((n = mp_queue_get_many(k->q, buf, PM_MSG_MAX, lens, batch,
				      MP_SEC(30))) > 0) {
		for (ssize_t i = 0; i < n; i++) {
			uint32_t p, s;
			uint64_t bit, b;

			if (!pm_check(buf[i], lens[i], &p, &s) || p == 0 ||
			    p > PM_STEADY || s >= PM_SEQ_MAX) {
				atomic_fetch_add(&k->bad, 1);
				continue;
			}
			/* Per producer, per consumer: seqs only grow. */
			if ((int64_t)s <= last[p])
				atomic_fetch_add(&k->disorder, 1);
			last[p] = s;
			bit = (uint64_t)p * PM_SEQ_MAX + s;
			b = 1ull << (bit % 64);
			if (atomic_fetch_or(&k->seen[bit / 64], b) & b)
				atomic_fetch_add(&k->dups, 1);
			atomic_fetch_add(&k->count[p], 1);
		}
	}
	T_CHECK(n == -EPIPE);
	return T_PASS;
}

static bool
pm_seen(struct pmrun *k, uint32_t p, uint32_t s)
{
	uint64_t bit = (uint64_t)p * PM_SEQ_MAX + s;

	return (atomic_load(&k->seen[bit / 64]) >> (bit % 64)) & 1;
}

T_TEST(queue, put_many_producers_sigkilled_mid_run_lose_nothing_acked,
     .timeout = 120)
{
	struct pmrun *k = mp_shm_alloc(sizeof(*k));
	struct pmcons ca[2];
	pid_t c[2], st;
	int64_t t0 = t_now();

	cr_assert_not_null(k);
	cr_assert_eq(mp_queue_new(&k->q, 128, PM_MSG_MAX), 0);
	for (int i = 0; i < 2; i++) {
		ca[i] = (struct pmcons){ k, i == 0 ? 8 : 16 };
		c[i] = t_spawn(pm_consumer, &ca[i]);
	}
	st = t_spawn(pm_steady, k);
	kill_at_random(pm_victim, k, &k->inc, PM_KILLS, 3000);
	cr_assert_eq(t_wait_status(st, 60000), T_PASS);
	mp_queue_close(k->q);
	for (int i = 0; i < 2; i++)
		cr_assert_eq(t_wait_status(c[i], 60000), T_PASS);
	cr_log_info("put_many, %d kills: %.2f s, lost %llu", PM_KILLS,
		    (double)(t_now() - t0) / 1e9,
		    (unsigned long long)mp_queue_lost(k->q));
	cr_assert_eq(atomic_load(&k->bad), 0);
	cr_assert_eq(atomic_load(&k->dups), 0);
	cr_assert_eq(atomic_load(&k->disorder), 0);
	cr_assert_leq(mp_queue_lost(k->q), PM_KILLS);
	cr_assert_eq(atomic_load(&k->count[PM_STEADY]), PM_STEADY_MSGS);
	for (uint32_t s = 0; s < PM_STEADY_MSGS; s++)
		cr_assert(pm_seen(k, PM_STEADY, s), "steady message %u lost",
			  s);
	/*
	 * Each incarnation: a gap-free prefix (only its last claim may be
	 * missing), at least as long as what put_many acknowledged.
	 */
	for (uint32_t i = 1; i <= PM_KILLS; i++) {
		uint64_t n = atomic_load(&k->count[i]);

		cr_assert_geq(n, atomic_load(&k->acked[i]),
			      "incarnation %u: an acknowledged put lost", i);
		for (uint32_t s = 0; s < n; s++)
			cr_assert(pm_seen(k, i, s),
				  "incarnation %u: seq %u missing of %llu", i,
				  s, (unsigned long long)n);
	}
	cr_assert(mp_queue_empty(k->q));
	mp_queue_free(k->q);
	mp_shm_free(k);
}

/*
 * get_many consumers SIGKILLed at random moments while a steady producer
 * puts into a small queue: the producer waits on slots the dead held.
 * Each message id's receipts are counted in shared memory right after
 * get_many returns.
 */
#define GM_KILLS 200
#define GM_MAX_MSGS (1u << 23)

struct gmrun {
	mp_queue *q;
	_Atomic uint32_t stop;
	_Atomic uint64_t produced;
	_Atomic uint64_t bad;
	_Atomic uint8_t recv[GM_MAX_MSGS];
	int inc;
};

struct gmmsg {
	uint32_t id;
	uint32_t check;		/* ~id */
};

static int
gm_producer(void *arg)
{
	struct gmrun *k = arg;
	struct gmmsg m;

	for (uint32_t id = 0; id < GM_MAX_MSGS && !atomic_load(&k->stop);
	     id++) {
		m = (struct gmmsg){ id, ~id };
		T_CHECK(mp_queue_put(k->q, &m, sizeof(m), MP_SEC(20)) == 0);
		atomic_store(&k->produced, id + 1);
	}
	return T_PASS;
}

/* Count what one get_many returned. */
static void
gm_record(struct gmrun *k, const struct gmmsg *m, const size_t *lens,
	  ssize_t n)
{
	for (ssize_t i = 0; i < n; i++) {
		if (lens[i] != sizeof(*m) || m[i].check != ~m[i].id ||
		    m[i].id >= GM_MAX_MSGS) {
			atomic_fetch_add(&k->bad, 1);
			continue;
		}
		atomic_fetch_add(&k->recv[m[i].id], 1);
	}
}

static int
gm_victim(void *arg)
{
	struct gmrun *k = arg;
	struct gmmsg m[PM_BATCH_MAX];
	size_t lens[PM_BATCH_MAX];
	unsigned seed = (unsigned)k->inc * 2654435761u;
	ssize_t n;

	for (;;) {
		size_t batch = 1 + (size_t)rand_r(&seed) % PM_BATCH_MAX;

		n = mp_queue_get_many(k->q, m, sizeof(m[0]), lens, batch,
				      MP_FOREVER);
		if (n < 0)
			return T_FAIL;
		gm_record(k, m, lens, n);
	}
}

static int
gm_survivor(void *arg)
{
	struct gmrun *k = arg;
	struct gmmsg m[16];
	size_t lens[16];
	ssize_t n;

	while ((n = mp_queue_get_many(k->q, m, sizeof(m[0]), lens, 16,
				      MP_SEC(20))) > 0)
		gm_record(k, m, lens, n);
	T_CHECK(n == -EPIPE);
	return T_PASS;
}

T_TEST(queue, get_many_consumers_sigkilled_never_duplicate_or_wedge,
     .timeout = 120)
{
	struct gmrun *k = mp_shm_alloc(sizeof(*k));
	uint64_t produced, missing = 0, dups = 0;
	int64_t t0 = t_now();
	pid_t sv, pr;

	cr_assert_not_null(k);
	cr_assert_eq(mp_queue_new(&k->q, 64, sizeof(struct gmmsg)), 0);
	sv = t_spawn(gm_survivor, k);
	pr = t_spawn(gm_producer, k);
	kill_at_random(gm_victim, k, &k->inc, GM_KILLS, 3000);
	atomic_store(&k->stop, 1);
	cr_assert_eq(t_wait_status(pr, 30000), T_PASS, "the producer wedged");
	mp_queue_close(k->q);
	cr_assert_eq(t_wait_status(sv, 30000), T_PASS, "the survivor wedged");
	produced = atomic_load(&k->produced);
	for (uint64_t id = 0; id < GM_MAX_MSGS; id++) {
		uint8_t r = atomic_load(&k->recv[id]);

		if (id >= produced)
			cr_assert_eq(r, 0, "id %llu never put, received",
				     (unsigned long long)id);
		dups += r > 1;
		missing += r == 0 && id < produced;
	}
	cr_log_info("get_many, %d kills: %.2f s, %llu put, %llu missing, "
		    "lost %llu", GM_KILLS, (double)(t_now() - t0) / 1e9,
		    (unsigned long long)produced,
		    (unsigned long long)missing,
		    (unsigned long long)mp_queue_lost(k->q));
	cr_assert_gt(produced, 0);
	cr_assert_eq(atomic_load(&k->bad), 0);
	cr_assert_eq(dups, 0, "%llu messages received twice",
		     (unsigned long long)dups);
	cr_assert_leq(mp_queue_lost(k->q), GM_KILLS);
	cr_assert_leq(missing, (uint64_t)PM_BATCH_MAX * GM_KILLS);
	cr_assert(mp_queue_empty(k->q));
	mp_queue_free(k->q);
	mp_shm_free(k);
}

/*
 * -EUSERS: a queue keeps claim records for 256 tasks at once.  256
 * threads hold one each (a put, then they wait alive); a 257th task is
 * refused by every call, without touching the queue; once the holders
 * are gone, a newcomer takes a dead one's record.
 */
#define EU_HOLDERS 256

struct eusers {
	mp_queue *q;
	pthread_mutex_t mu;
	pthread_cond_t cv;
	int ready;
	bool release;
	pid_t tid[EU_HOLDERS];
	int rc[EU_HOLDERS];
};

struct eu_arg {
	struct eusers *e;
	int i;
};

static void *
eu_holder(void *arg)
{
	struct eusers *e = ((struct eu_arg *)arg)->e;
	int i = ((struct eu_arg *)arg)->i;
	uint32_t v = (uint32_t)i;

	e->tid[i] = (pid_t)syscall(SYS_gettid);
	e->rc[i] = mp_queue_put(e->q, &v, sizeof(v), MP_NOWAIT);
	pthread_mutex_lock(&e->mu);
	e->ready++;
	pthread_cond_broadcast(&e->cv);
	while (!e->release)
		pthread_cond_wait(&e->cv, &e->mu);
	pthread_mutex_unlock(&e->mu);
	return NULL;
}

/*
 * Every call that claims, from a task without a record: -EUSERS, and
 * nothing taken or added.  Returns the number of calls that were not.
 */
static int
eu_refused(mp_queue *q)
{
	uint32_t v = 7, buf[4];
	const void *msgs[2] = { &v, &v };
	size_t lens[2] = { sizeof(v), sizeof(v) }, glens[4];
	const void *cm;
	void *m;
	int bad = 0;

	bad += mp_queue_put(q, &v, sizeof(v), MP_NOWAIT) != -EUSERS;
	bad += mp_queue_put(q, &v, sizeof(v), MP_MSEC(1)) != -EUSERS;
	bad += mp_queue_put_many(q, msgs, lens, 2, MP_NOWAIT) != -EUSERS;
	bad += mp_queue_put_many(q, msgs, lens, 1, MP_NOWAIT) != -EUSERS;
	bad += mp_queue_get(q, buf, sizeof(buf), MP_NOWAIT) != -EUSERS;
	bad += mp_queue_get(q, buf, sizeof(buf), MP_MSEC(1)) != -EUSERS;
	bad += mp_queue_get_many(q, buf, sizeof(v), glens, 4, MP_NOWAIT) !=
	       -EUSERS;
	bad += mp_queue_get_many(q, buf, sizeof(v), glens, 1, MP_NOWAIT) !=
	       -EUSERS;
	bad += mp_queue_reserve(q, &m, MP_NOWAIT) != -EUSERS;
	bad += mp_queue_peek(q, &cm, MP_NOWAIT) != -EUSERS;
	return bad;
}

static void *
eu_outsider(void *arg)
{
	return (void *)(intptr_t)eu_refused(arg);
}

static int
eu_child(void *arg)
{
	T_CHECK(eu_refused(arg) == 0);
	return T_PASS;
}

static void *
eu_newcomer(void *arg)
{
	uint32_t v = 1000;

	return (void *)(intptr_t)mp_queue_put(arg, &v, sizeof(v), MP_NOWAIT);
}

/* Whether thread tid is gone (as lib/task sees it: no /proc entry). */
static bool
tid_gone(pid_t tid)
{
	char path[64], buf[512], *paren;
	ssize_t n;
	int fd;

	snprintf(path, sizeof(path), "/proc/%d/stat", (int)tid);
	if ((fd = open(path, O_RDONLY | O_CLOEXEC)) < 0)
		return true;
	n = read(fd, buf, sizeof(buf) - 1);
	close(fd);
	if (n <= 0)
		return true;
	buf[n] = 0;
	paren = strrchr(buf, ')');
	return paren != NULL && (paren[2] == 'Z' || paren[2] == 'X');
}

static void
eu_run(pthread_t *th, void *(*fn)(void *), void *arg, void **ret)
{
	cr_assert_eq(pthread_create(th, NULL, fn, arg), 0);
	cr_assert_eq(pthread_join(*th, ret), 0);
}

T_TEST(queue, more_than_256_live_tasks_get_eusers_then_records_are_reused,
     .timeout = 60)
{
	static struct eu_arg args[EU_HOLDERS];
	static pthread_t th[EU_HOLDERS];
	struct eusers *e = calloc(1, sizeof(*e));
	pthread_attr_t attr;
	pthread_t one;
	uint32_t v;
	void *ret;
	int64_t t0;

	cr_assert_not_null(e);
	/* This thread never used the queue: it holds no record. */
	cr_assert_eq(mp_queue_new(&e->q, 1024, sizeof(uint32_t)), 0);
	pthread_mutex_init(&e->mu, NULL);
	pthread_cond_init(&e->cv, NULL);
	pthread_attr_init(&attr);
	pthread_attr_setstacksize(&attr, 256 << 10);
	for (int i = 0; i < EU_HOLDERS; i++) {
		args[i] = (struct eu_arg){ e, i };
		cr_assert_eq(pthread_create(&th[i], &attr, eu_holder,
					    &args[i]), 0);
	}
	pthread_attr_destroy(&attr);
	pthread_mutex_lock(&e->mu);
	while (e->ready < EU_HOLDERS)
		pthread_cond_wait(&e->cv, &e->mu);
	pthread_mutex_unlock(&e->mu);
	for (int i = 0; i < EU_HOLDERS; i++)
		cr_assert_eq(e->rc[i], 0, "holder %d: put returned %d", i,
			     e->rc[i]);
	cr_assert_eq(mp_queue_qsize(e->q), EU_HOLDERS);

	/* A 257th thread, this one, and another process: all refused. */
	eu_run(&one, eu_outsider, e->q, &ret);
	cr_assert_eq((intptr_t)ret, 0, "%d calls were not -EUSERS",
		     (int)(intptr_t)ret);
	cr_assert_eq(eu_refused(e->q), 0);
	t_wait_exit(t_spawn(eu_child, e->q), T_PASS);
	cr_assert_eq(mp_queue_qsize(e->q), EU_HOLDERS, "a refused call "
		     "changed the queue");
	cr_assert_eq(mp_queue_lost(e->q), 0);

	pthread_mutex_lock(&e->mu);
	e->release = true;
	pthread_cond_broadcast(&e->cv);
	pthread_mutex_unlock(&e->mu);
	for (int i = 0; i < EU_HOLDERS; i++)
		cr_assert_eq(pthread_join(th[i], NULL), 0);
	/* A joined thread may linger in the kernel for a moment. */
	t0 = t_now();
	for (int i = 0; i < EU_HOLDERS; i++)
		while (!tid_gone(e->tid[i]))
			cr_assert_lt(t_now() - t0, MP_SEC(10), "tid %d stays",
				     (int)e->tid[i]);

	/* Now a newcomer takes a dead holder's record. */
	eu_run(&one, eu_newcomer, e->q, &ret);
	cr_assert_eq((intptr_t)ret, 0, "newcomer's put: %d",
		     (int)(intptr_t)ret);
	cr_assert_eq(mp_queue_put(e->q, &(uint32_t){ 1001 }, sizeof(v),
				  MP_NOWAIT), 0);
	cr_assert_eq(mp_queue_qsize(e->q), EU_HOLDERS + 2);
	/* Every holder's message is there once, then the newcomers'. */
	{
		bool got[EU_HOLDERS] = { false };

		for (int i = 0; i < EU_HOLDERS; i++) {
			cr_assert_eq(mp_queue_get(e->q, &v, sizeof(v),
						  MP_NOWAIT), sizeof(v));
			cr_assert_lt(v, EU_HOLDERS);
			cr_assert_not(got[v], "%u twice", v);
			got[v] = true;
		}
	}
	cr_assert_eq(mp_queue_get(e->q, &v, sizeof(v), MP_NOWAIT), sizeof(v));
	cr_assert_eq(v, 1000);
	cr_assert_eq(mp_queue_get(e->q, &v, sizeof(v), MP_NOWAIT), sizeof(v));
	cr_assert_eq(v, 1001);
	cr_assert(mp_queue_empty(e->q));
	cr_assert_eq(mp_queue_lost(e->q), 0);
	mp_queue_free(e->q);
	pthread_cond_destroy(&e->cv);
	pthread_mutex_destroy(&e->mu);
	free(e);
}

/*
 * Records of dead processes are reused: 600 short-lived processes in
 * turn (more than the 256 records) put, some with put_many, and some
 * take with get_many what a model of the FIFO says they must find.
 */
#define RR_PROCS 600
#define RR_CAP 2048

struct rrun {
	mp_queue *q;
	uint32_t put[3];	/* what this child puts */
	int nput;
	uint32_t want[3];	/* what its get_many must return */
	int nget;
};

static int
rr_child(void *arg)
{
	struct rrun *r = arg;
	const void *msgs[2] = { &r->put[1], &r->put[2] };
	size_t lens[3] = { 4, 4, 4 };
	uint32_t got[3];

	T_CHECK(mp_queue_put(r->q, &r->put[0], 4, MP_NOWAIT) == 0);
	if (r->nput > 1)
		T_CHECK(mp_queue_put_many(r->q, msgs, lens, 2, MP_NOWAIT) ==
			2);
	if (r->nget > 0) {
		T_CHECK(mp_queue_get_many(r->q, got, 4, lens, 3, MP_NOWAIT) ==
			r->nget);
		for (int i = 0; i < r->nget; i++)
			T_CHECK(lens[i] == 4 && got[i] == r->want[i]);
	}
	return T_PASS;
}

T_TEST(queue, six_hundred_processes_in_turn_reuse_the_256_records)
{
	static uint32_t model[RR_PROCS * 3];
	size_t mh = 0, mt = 0;
	struct rrun r;
	uint32_t got[64];
	size_t lens[64];
	ssize_t n;
	int64_t t0 = t_now();

	cr_assert_eq(mp_queue_new(&r.q, RR_CAP, 4), 0);
	for (uint32_t i = 0; i < RR_PROCS; i++) {
		r.nput = i % 3 == 1 ? 3 : 1;
		for (int j = 0; j < r.nput; j++)
			model[mt++] = r.put[j] = i * 3 + (uint32_t)j;
		r.nget = i % 4 == 3 ? 3 : 0;
		for (int j = 0; j < r.nget; j++)
			r.want[j] = model[mh++];
		t_wait_exit(t_spawn(rr_child, &r), T_PASS);
	}
	cr_log_info("%d processes in turn: %.2f s", RR_PROCS,
		    (double)(t_now() - t0) / 1e9);
	cr_assert_eq(mp_queue_lost(r.q), 0);
	cr_assert_eq(mp_queue_qsize(r.q), mt - mh);
	while (mh < mt) {
		n = mp_queue_get_many(r.q, got, 4, lens, 64, MP_NOWAIT);
		cr_assert_gt(n, 0, "%zu left, get_many: %zd", mt - mh, n);
		for (ssize_t i = 0; i < n; i++)
			cr_assert_eq(got[i], model[mh++]);
	}
	cr_assert_eq(mp_queue_get(r.q, got, 4, MP_NOWAIT), -EAGAIN);
	cr_assert(mp_queue_empty(r.q));
	mp_queue_free(r.q);
}

/*
 * A producer killed inside a put_many run leaves a hole in the middle of
 * the ring.  Deterministic: one message of its batch lies in a PROT_NONE
 * page, so the copy of the claimed run faults; the SIGSEGV handler says
 * so and waits, and the parent kills it there, between the claim and the
 * publication.  Messages put before and after the hole must all arrive,
 * in order, within seconds, with exactly one loss counted per kill.
 */
#define HOLE_TRIES 24
#define HOLE_SIDE 5		/* messages before and after the hole */

struct hole {
	mp_queue *q;
	struct t_sync ready;
	uint32_t n;		/* the victim's batch */
	uint32_t f;		/* which of its messages faults */
	uint32_t tag;		/* the try */
	_Atomic uint32_t got;	/* the consumer child's progress */
};

struct hmsg {
	uint32_t tag;
	uint32_t idx;		/* 0..4 before the hole, 5..9 after */
};

static struct t_sync *hole_ready;

/*
 * The end of a try that began at t0 with lost losses counted: exactly one
 * more now, and the slowest try so far in *worst.
 */
static void
hole_try_done(const struct hole *h, unsigned t, uint64_t lost, int64_t t0,
	      int64_t *worst)
{
	if (t_now() - t0 > *worst)
		*worst = t_now() - t0;
	cr_assert_eq(mp_queue_lost(h->q), lost + 1,
		     "try %u: batch %u, lost %llu -> %llu", t, h->n,
		     (unsigned long long)lost,
		     (unsigned long long)mp_queue_lost(h->q));
}

/* The end of a test of n tries: the slowest, then the queue freed. */
static void
hole_test_done(struct hole *h, int n, const char *what, int64_t worst)
{
	cr_log_info("%d %s, the slowest in %.1f ms", n, what,
		    (double)worst / 1e6);
	mp_queue_free(h->q);
	mp_shm_free(h);
}

static void
hole_segv(int sig)
{
	(void)sig;
	t_sync_signal(hole_ready);
	for (;;)
		pause();
}

static int
hole_victim(void *arg)
{
	struct hole *h = arg;
	static unsigned char body[PM_BATCH_MAX][64];
	const void *msgs[PM_BATCH_MAX];
	size_t lens[PM_BATCH_MAX];
	struct sigaction sa = { .sa_handler = hole_segv };
	long pg = sysconf(_SC_PAGESIZE);
	void *none = mmap(NULL, (size_t)pg, PROT_NONE,
			  MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);

	T_CHECK(none != MAP_FAILED);
	/* A backstop: never outlive a parent that failed before its kill. */
	alarm(30);
	hole_ready = &h->ready;
	T_CHECK(sigaction(SIGSEGV, &sa, NULL) == 0);
	for (uint32_t j = 0; j < h->n; j++) {
		memset(body[j], 0xa5, sizeof(body[j]));
		msgs[j] = j == h->f ? none : body[j];
		lens[j] = sizeof(body[j]);
	}
	mp_queue_put_many(h->q, msgs, lens, h->n, MP_SEC(10));
	/* The copy should have faulted. */
	return T_FAIL;
}

/* Get the try's 2 * HOLE_SIDE messages in order; false if not. */
static bool
hole_drain(struct hole *h, int64_t timeout)
{
	struct hmsg m;

	for (uint32_t i = 0; i < 2 * HOLE_SIDE; i++) {
		if (mp_queue_get(h->q, &m, sizeof(m), timeout) != sizeof(m) ||
		    m.tag != h->tag || m.idx != i)
			return false;
		atomic_store(&h->got, i + 1);
	}
	return true;
}

static int
hole_consumer(void *arg)
{
	return hole_drain(arg, MP_SEC(10)) ? T_PASS : T_FAIL;
}

T_TEST(queue, a_producer_killed_inside_a_run_leaves_a_hole_that_is_passed)
{
	struct hole *h = mp_shm_alloc(sizeof(*h));
	int64_t t0, worst = 0;
	uint64_t early_lost = 0;
	uint32_t early = 0;

	cr_assert_not_null(h);
	/* 64 slots: the holes fall all round the ring, across its end. */
	cr_assert_eq(mp_queue_new(&h->q, 64, 256), 0);
	for (uint32_t t = 0; t < HOLE_TRIES; t++) {
		uint64_t lost = mp_queue_lost(h->q);
		pid_t v, c = 0;
		struct hmsg m;

		h->tag = t;
		h->n = 1 + (t * 7) % PM_BATCH_MAX;
		h->f = (t * 5) % h->n;
		atomic_store(&h->got, 0);
		for (uint32_t i = 0; i < HOLE_SIDE; i++) {
			m = (struct hmsg){ t, i };
			cr_assert_eq(mp_queue_put(h->q, &m, sizeof(m),
						  MP_NOWAIT), 0);
		}
		t_sync_init(&h->ready);
		v = t_spawn(hole_victim, h);
		if (t_sync_wait(&h->ready, 10000) != 0) {
			kill(v, SIGKILL);
			cr_assert_fail("try %u: the victim did not fault (%d)",
				       t, t_wait_status(v, 10000));
		}
		for (uint32_t i = HOLE_SIDE; i < 2 * HOLE_SIDE; i++) {
			m = (struct hmsg){ t, i };
			cr_assert_eq(mp_queue_put(h->q, &m, sizeof(m),
						  MP_NOWAIT), 0);
		}
		if (t & 1) {
			/*
			 * A consumer reaches the hole while its claimer
			 * lives: it must wait, not retire a live claim.
			 */
			c = t_spawn(hole_consumer, h);
			t0 = t_now();
			while (atomic_load(&h->got) < HOLE_SIDE &&
			       t_now() - t0 < MP_SEC(10))
				;
			t0 = t_now();
			while (t_now() - t0 < MP_MSEC(20))
				;
			early = atomic_load(&h->got);
			early_lost = mp_queue_lost(h->q);
		}
		/* Killed before any assertion: never left behind. */
		kill(v, SIGKILL);
		cr_assert_eq(t_wait_status(v, 10000), -SIGKILL);
		if (c != 0) {
			cr_assert_eq(early, HOLE_SIDE,
				     "try %u: passed a live claim (%u got)",
				     t, early);
			cr_assert_eq(early_lost, lost);
		}
		t_sync_fini(&h->ready);
		t0 = t_now();
		if (c != 0)
			cr_assert_eq(t_wait_status(c, 10000), T_PASS,
				     "try %u: consumer stuck at the hole", t);
		else
			cr_assert(hole_drain(h, MP_MSEC(T_MS(3000))),
				  "try %u: stuck at the hole (%u got)", t,
				  atomic_load(&h->got));
		hole_try_done(h, t, lost, t0, &worst);
		cr_assert(mp_queue_empty(h->q));
	}
	hole_test_done(h, HOLE_TRIES, "holes passed", worst);
}

/*
 * A consumer killed between its claim and its release, deterministically:
 * its receive buffer is a PROT_NONE page, so the copy out after the claim
 * faults, and the parent kills it in its SIGSEGV handler.  The message's
 * slot is left READY behind head; the producer that needs it a lap later
 * retires it (one loss), and every other message arrives once, in order.
 * The victim waits on an empty queue first, with get (batch 1) or
 * get_many (batch 8), so that its claim is the one that copies after
 * claiming.
 */
#define HELD_TRIES 12
#define HELD_CAP 8

static int
held_victim(void *arg)
{
	struct hole *h = arg;
	struct sigaction sa = { .sa_handler = hole_segv };
	long pg = sysconf(_SC_PAGESIZE);
	void *none = mmap(NULL, (size_t)pg, PROT_NONE,
			  MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	size_t lens[8];

	T_CHECK(none != MAP_FAILED);
	/* A backstop: never outlive a parent that failed before its kill. */
	alarm(30);
	hole_ready = &h->ready;
	T_CHECK(sigaction(SIGSEGV, &sa, NULL) == 0);
	if (h->n == 1)
		mp_queue_get(h->q, none, sizeof(struct hmsg), MP_SEC(10));
	else
		mp_queue_get_many(h->q, none, sizeof(struct hmsg), lens, h->n,
				  MP_SEC(10));
	return T_FAIL;
}

T_TEST(queue, a_consumer_killed_holding_a_claim_is_retired_a_lap_later)
{
	struct hole *h = mp_shm_alloc(sizeof(*h));
	struct hmsg m;
	int64_t t0, worst = 0;

	cr_assert_not_null(h);
	cr_assert_eq(mp_queue_new(&h->q, HELD_CAP, sizeof(struct hmsg)), 0);
	for (uint32_t t = 0; t < HELD_TRIES; t++) {
		uint64_t lost = mp_queue_lost(h->q);
		bool waited, faulted;
		pid_t v;
		int put;

		h->tag = t;
		h->n = t & 1 ? 8 : 1;
		t_sync_init(&h->ready);
		v = t_spawn(held_victim, h);
		waited = t_wait_futex_sleep(v, 10000);
		m = (struct hmsg){ t, 1000 };
		put = mp_queue_put(h->q, &m, sizeof(m), MP_NOWAIT);
		faulted = waited && t_sync_wait(&h->ready, 10000) == 0;
		/* Killed before any assertion: never left behind. */
		kill(v, SIGKILL);
		cr_assert(waited, "try %u: the victim never waited", t);
		cr_assert_eq(put, 0);
		cr_assert(faulted, "try %u: the victim did not fault", t);
		cr_assert_eq(t_wait_status(v, 10000), -SIGKILL);
		t_sync_fini(&h->ready);
		/* Claimed by the dead: the queue looks empty. */
		cr_assert_eq(mp_queue_get(h->q, &m, sizeof(m), MP_NOWAIT),
			     -EAGAIN);
		/* A lap of puts: the last needs the dead one's slot. */
		t0 = t_now();
		for (uint32_t i = 0; i < HELD_CAP; i++) {
			m = (struct hmsg){ t, i };
			cr_assert_eq(mp_queue_put(h->q, &m, sizeof(m),
						  MP_MSEC(T_MS(3000))), 0,
				     "try %u: put %u wedged", t, i);
		}
		hole_try_done(h, t, lost, t0, &worst);
		for (uint32_t i = 0; i < HELD_CAP; i++) {
			cr_assert_eq(mp_queue_get(h->q, &m, sizeof(m),
						  MP_NOWAIT), sizeof(m));
			cr_assert(m.tag == t && m.idx == i,
				  "try %u: got (%u, %u), want %u", t, m.tag,
				  m.idx, i);
		}
		cr_assert(mp_queue_empty(h->q));
	}
	hole_test_done(h, HELD_TRIES, "held slots retired", worst);
}

/*
 * mp_queue_free hands the caller's claim record back.  More processes
 * than there are records each put once, free their handle and stay
 * alive: every put succeeds (without the hand-back the 257th was
 * -EUSERS), and every message is there once.
 */
#define HB_PROCS 300

struct handback {
	mp_queue *q;
	int ready_r;
	int ready_w;
	int release_r;
	int release_w;
	uint32_t id;
	bool free;	/* free the handle after the put */
};

/*
 * A child: put its id, free the handle if asked, tell the parent, and
 * stay alive until the parent lets go (a dead owner's record is free
 * anyway).
 */
static int
hb_child(void *arg)
{
	struct handback *h = arg;
	int rc;
	char c;

	close(h->release_w);
	rc = mp_queue_put(h->q, &h->id, sizeof(h->id), MP_NOWAIT);
	if (h->free)
		mp_queue_free(h->q);
	T_CHECK(write(h->ready_w, &(char){ rc == 0 }, 1) == 1);
	T_CHECK(read(h->release_r, &c, 1) == 0);
	return rc == 0 ? T_PASS : T_FAIL;
}

/* Spawn n hb_child with h (ids counting from 0), and wait for each. */
static void
hb_spawn(struct handback *h, pid_t *pids, int n)
{
	int ready[2], release[2], ok = 0;
	char c;

	cr_assert_eq(pipe(ready), 0);
	cr_assert_eq(pipe(release), 0);
	h->ready_r = ready[0];
	h->ready_w = ready[1];
	h->release_r = release[0];
	h->release_w = release[1];
	for (int i = 0; i < n; i++) {
		h->id = (uint32_t)i;
		pids[i] = t_spawn(hb_child, h);
		cr_assert_gt(pids[i], 0);
	}
	for (int i = 0; i < n; i++) {
		cr_assert_eq(read(h->ready_r, &c, 1), 1);
		ok += c;
	}
	cr_assert_eq(ok, n, "%d of %d children's puts failed", n - ok, n);
}

/* Let hb_spawn's children go, and check that each passed. */
static void
hb_release(struct handback *h, const pid_t *pids, int n)
{
	close(h->release_w);
	for (int i = 0; i < n; i++)
		t_wait_exit(pids[i], T_PASS);
	close(h->release_r);
	close(h->ready_r);
	close(h->ready_w);
}

/* Drain n ids 0..n-1, each once, in any order; then the queue is empty. */
static void
hb_drain(mp_queue *q, int n)
{
	bool *got = calloc((size_t)n, sizeof(*got));
	uint32_t v;

	cr_assert_not_null(got);
	for (int i = 0; i < n; i++) {
		cr_assert_eq(mp_queue_get(q, &v, sizeof(v), MP_NOWAIT),
			     sizeof(v));
		cr_assert_lt(v, (uint32_t)n);
		cr_assert_not(got[v], "%u twice", v);
		got[v] = true;
	}
	cr_assert(mp_queue_empty(q));
	free(got);
}

T_TEST(queue, free_hands_back_the_record_of_a_process_that_lives_on,
     .timeout = 60)
{
	static pid_t pids[HB_PROCS];
	struct handback h;

	cr_assert_eq(mp_queue_new(&h.q, 512, sizeof(uint32_t)), 0);
	h.free = true;
	hb_spawn(&h, pids, HB_PROCS);
	cr_assert_eq(mp_queue_qsize(h.q), HB_PROCS);
	hb_drain(h.q, HB_PROCS);
	cr_assert_eq(mp_queue_lost(h.q), 0);
	hb_release(&h, pids, HB_PROCS);
	mp_queue_free(h.q);
}

/*
 * A record handed back through one handle is not used through another
 * handle of the same queue that remembered it.  Two handles (the manager
 * hands out one per open) share this thread's record; the first is
 * freed; 256 processes then take every record, the handed-back one among
 * them.  A put through the second handle must now find no record of its
 * own (-EUSERS), not write its claims into a live child's record; once
 * the children are gone it takes one of theirs.
 */
T_TEST(queue, a_record_handed_back_is_not_used_through_another_handle,
     .timeout = 60)
{
	static pid_t pids[EU_HOLDERS];
	struct handback h;
	mp_manager *m;
	mp_queue *q1;
	uint32_t v = EU_HOLDERS;

	cr_assert_eq(mp_manager_start(&m, NULL), 0);
	cr_assert_eq(mp_manager_queue(m, "Q", 512, sizeof(uint32_t), &q1), 0);
	cr_assert_eq(mp_manager_queue(m, "Q", 512, sizeof(uint32_t), &h.q),
		     0);
	cr_assert_eq(mp_queue_put(q1, &v, sizeof(v), MP_NOWAIT), 0);
	cr_assert_eq(mp_queue_get(h.q, &v, sizeof(v), MP_NOWAIT), sizeof(v));
	cr_assert_eq(v, EU_HOLDERS);
	mp_queue_free(q1);

	h.free = false;
	hb_spawn(&h, pids, EU_HOLDERS);
	cr_assert_eq(mp_queue_put(h.q, &v, sizeof(v), MP_NOWAIT), -EUSERS);
	cr_assert_eq(mp_queue_get(h.q, &v, sizeof(v), MP_NOWAIT), -EUSERS);
	cr_assert_eq(mp_queue_qsize(h.q), EU_HOLDERS);

	hb_release(&h, pids, EU_HOLDERS);
	hb_drain(h.q, EU_HOLDERS);
	cr_assert_eq(mp_queue_lost(h.q), 0);
	mp_queue_free(h.q);
	cr_assert_eq(mp_manager_shutdown(m), 0);
	mp_manager_free(m);
}
