/* SPDX-License-Identifier: MIT */
#include <errno.h>
#include <signal.h>
#include <stdatomic.h>
#include <string.h>
#include <sys/resource.h>
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
 * Every length from 0 to 40 bytes arrives exact, through both the small
 * messages' inline copy (msg_max 16) and the general path (msg_max 64),
 * and nothing past the length is written in the caller's buffer.
 */
T_TEST(queue, every_small_length_is_copied_exactly)
{
	static const size_t maxes[] = { 16, 64 };
	unsigned char in[64], out[64 + 8];
	mp_queue *q;

	for (size_t k = 0; k < 2; k++) {
		size_t mx = maxes[k];

		cr_assert_eq(mp_queue_new(&q, 8, mx), 0);
		for (size_t len = 0; len <= mx && len <= 40; len++) {
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
	cr_assert_eq(mp_queue_put(q, "cd", 2, MP_NOWAIT), -EPIPE);
	cr_assert_eq(mp_queue_put(q, "cd", 2, MP_FOREVER), -EPIPE);
	cr_assert_eq(mp_queue_reserve(q, &m, MP_FOREVER) == -EPIPE, 1);
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

T_TEST(queue, producer_sigkilled_a_thousand_times_survivors_finish,
     .timeout = 120)
{
	struct killrun *k = mp_shm_alloc(sizeof(*k));
	pid_t c1, c2, st;
	unsigned seed = (unsigned)t_now();
	int64_t t0 = t_now();

	cr_assert_not_null(k);
	cr_assert_eq(mp_queue_new(&k->q, 64, sizeof(struct msg)), 0);
	c1 = t_spawn(kill_consumer, k);
	c2 = t_spawn(kill_consumer, k);
	st = t_spawn(steady, k);
	for (int i = 1; i <= KILLS; i++) {
		k->inc = i;
		pid_t v = t_spawn(victim, k);
		/* A random moment: 0..2 ms after the fork. */
		int64_t until = t_now() + (rand_r(&seed) % 2000) * 1000;
		while (t_now() < until)
			;
		kill(v, SIGKILL);
		cr_assert_eq(t_wait_status(v, 10000), -SIGKILL);
	}
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
		/* cap >= msg_max takes the fast path, cap < msg_max the slow one. */
		cr_assert_eq(mp_queue_get(q, buf, 64, MP_NOWAIT), MP_ECORRUPT);
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
	 * Every slot word (16-byte headers, 128-byte slots for msg_max 64)
	 * now holds a free slot of a seq far ahead of every position, as
	 * no put wrote: each position looks taken by someone else.
	 */
	for (int i = 0; i < 3; i++)
		*(uint64_t *)(data - 16 + i * 128) = (uint64_t)1 << 62;
	trashed_q = q;
	pid = t_spawn(calls_on_trashed_hints, NULL);
	cr_assert_eq(t_wait_status(pid, 20000), T_PASS);
	mp_queue_free(q);
}
