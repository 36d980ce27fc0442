/* SPDX-License-Identifier: MIT */
/*
 * Pipe and Connection: boundaries, any size, EOF across fork and SIGKILL,
 * wait over many connections, poll, timeouts, bad arguments, leaks.
 */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <string.h>
#include <sys/wait.h>

#include <criterion/criterion.h>
#include <mproc.h>

#include "tests/helpers.h"

T_SUITE(pipe);

/* A deterministic byte stream per (seed): xorshift64, 8 bytes a step. */
static uint64_t
xs(uint64_t *s)
{
	uint64_t x = *s;

	x ^= x << 13;
	x ^= x >> 7;
	x ^= x << 17;
	return *s = x;
}

static void
fill(uint8_t *p, size_t n, uint64_t seed)
{
	uint64_t s = seed * 0x9e3779b97f4a7c15ULL + 1, v;
	size_t i = 0;

	for (; i + 8 <= n; i += 8) {
		v = xs(&s);
		memcpy(p + i, &v, 8);
	}
	v = xs(&s);
	memcpy(p + i, &v, n - i);
}

static bool
check(const uint8_t *p, size_t n, uint64_t seed)
{
	uint64_t s = seed * 0x9e3779b97f4a7c15ULL + 1, v;
	size_t i = 0;

	for (; i + 8 <= n; i += 8) {
		v = xs(&s);
		if (memcmp(p + i, &v, 8) != 0)
			return false;
	}
	v = xs(&s);
	return memcmp(p + i, &v, n - i) == 0;
}

T_TEST(pipe, non_duplex_directions_and_ebadf)
{
	mp_conn *r, *w;
	char buf[16];

	cr_assert_eq(mp_pipe(&r, &w, false), 0);
	cr_assert_eq(mp_conn_send(r, "x", 1), -EBADF);
	cr_assert_eq(mp_conn_recv(w, buf, sizeof(buf)), -EBADF);
	cr_assert_eq(mp_conn_poll(w, MP_NOWAIT), -EBADF);
	cr_assert_eq(mp_conn_fd(w), -EBADF);
	cr_assert_eq(mp_conn_send(w, "hello", 5), 0);
	cr_assert_eq(mp_conn_send(w, "", 0), 0);
	cr_assert_eq(mp_conn_send(w, "ab", 2), 0);
	cr_assert_eq(mp_conn_recv(r, buf, sizeof(buf)), 5);
	cr_assert_eq(memcmp(buf, "hello", 5), 0);
	cr_assert_eq(mp_conn_recv(r, buf, sizeof(buf)), 0);
	cr_assert_eq(mp_conn_recv(r, buf, sizeof(buf)), 2);
	cr_assert_eq(mp_conn_recv_timeout(r, buf, sizeof(buf), MP_NOWAIT),
		     -EAGAIN);
	mp_conn_close(r);
	mp_conn_close(w);
}

T_TEST(pipe, duplex_both_ways)
{
	mp_conn *a, *b;
	char buf[16];

	cr_assert_eq(mp_pipe(&a, &b, true), 0);
	cr_assert_eq(mp_conn_send(a, "to-b", 4), 0);
	cr_assert_eq(mp_conn_send(b, "to-a!", 5), 0);
	cr_assert_eq(mp_conn_recv(b, buf, sizeof(buf)), 4);
	cr_assert_eq(memcmp(buf, "to-b", 4), 0);
	cr_assert_eq(mp_conn_recv(a, buf, sizeof(buf)), 5);
	cr_assert_eq(memcmp(buf, "to-a!", 5), 0);
	mp_conn_close(a);
	mp_conn_close(b);
}

T_TEST(pipe, emsgsize_keeps_the_message)
{
	mp_conn *r, *w;
	char small[4], big[100];
	void *m = NULL;

	cr_assert_eq(mp_pipe(&r, &w, false), 0);
	fill((uint8_t *)big, sizeof(big), 7);
	cr_assert_eq(mp_conn_send(w, big, sizeof(big)), 0);
	cr_assert_eq(mp_conn_send(w, big, 3), 0);
	cr_assert_eq(mp_conn_recv(r, small, sizeof(small)), -EMSGSIZE);
	cr_assert_eq(mp_conn_recv(r, small, sizeof(small)), -EMSGSIZE);
	cr_assert_eq(mp_conn_recv_alloc(r, &m), (ssize_t)sizeof(big));
	cr_assert(check(m, sizeof(big), 7));
	free(m);
	cr_assert_eq(mp_conn_recv(r, small, sizeof(small)), 3);
	mp_conn_close(r);
	mp_conn_close(w);
}

/* A message larger than the ring streams through it, here in-process. */
static int
send_big(void *arg)
{
	mp_conn *w = arg;
	size_t n = (size_t)64 << 20;
	uint8_t *m = malloc(n);

	T_CHECK(m != NULL);
	fill(m, n, 64);
	T_CHECK(mp_conn_send(w, m, n) == 0);
	fill(m, 1000, 65);
	T_CHECK(mp_conn_send(w, m, 1000) == 0);
	free(m);
	return T_PASS;
}

T_TEST(pipe, message_of_64mib_through_64kib_ring)
{
	mp_conn *r, *w;
	void *m = NULL;
	pid_t pid;

	cr_assert_eq(mp_pipe_new(&r, &w, false, 65536), 0);
	pid = t_spawn(send_big, w);
	mp_conn_close(w);
	cr_assert_eq(mp_conn_recv_alloc(r, &m), (ssize_t)64 << 20);
	cr_assert(check(m, (size_t)64 << 20, 64));
	free(m);
	cr_assert_eq(mp_conn_recv_alloc(r, &m), 1000);
	cr_assert(check(m, 1000, 65));
	free(m);
	cr_assert_eq(mp_conn_recv_alloc(r, &m), -EPIPE);
	t_wait_exit(pid, 0);
	mp_conn_close(r);
}

/*
 * Random sizes 0..1 MiB, log-uniform so that both whole and streamed
 * messages occur often: 2^k bytes scale, k uniform in 0..20.
 */
#define RANDOM_MSGS 100000

static size_t
rsize(uint64_t *s)
{
	uint64_t v = xs(s);
	unsigned k = (unsigned)(v % 21);

	return (size_t)((v >> 8) % (((uint64_t)1 << k) + 1));
}

static int
send_random(void *arg)
{
	mp_conn *w = arg;
	uint8_t *m = malloc((size_t)1 << 20 | 1);
	uint64_t s = 12345;

	T_CHECK(m != NULL);
	for (uint64_t i = 0; i < RANDOM_MSGS; i++) {
		size_t n = rsize(&s);
		fill(m, n, i);
		T_CHECK(mp_conn_send(w, m, n) == 0);
	}
	free(m);
	return T_PASS;
}

T_TEST(pipe, boundaries_kept_for_random_sizes_with_checksums)
{
	mp_conn *r, *w;
	uint8_t *m = malloc((size_t)1 << 20 | 1);
	uint64_t s = 12345, bad = 0;
	pid_t pid;

	cr_assert_not_null(m);
	cr_assert_eq(mp_pipe(&r, &w, false), 0);
	pid = t_spawn(send_random, w);
	mp_conn_close(w);
	for (uint64_t i = 0; i < RANDOM_MSGS; i++) {
		size_t n = rsize(&s);
		ssize_t got = mp_conn_recv(r, m, (size_t)1 << 20 | 1);
		cr_assert_eq(got, (ssize_t)n, "message %lu: %zd, want %zu",
			     (unsigned long)i, got, n);
		bad += !check(m, n, i);
	}
	cr_assert_eq(bad, 0);
	cr_assert_eq(mp_conn_recv(r, m, 1), -EPIPE);
	t_wait_exit(pid, 0);
	mp_conn_close(r);
	free(m);
}

static int
send_three_and_exit(void *arg)
{
	mp_conn *w = arg;

	for (int i = 0; i < 3; i++)
		T_CHECK(mp_conn_send(w, &i, sizeof(i)) == 0);
	return T_PASS;	/* exits without closing: the kernel closes */
}

T_TEST(pipe, eof_after_the_writer_exits)
{
	mp_conn *r, *w;
	int v;
	pid_t pid;

	cr_assert_eq(mp_pipe(&r, &w, false), 0);
	pid = t_spawn(send_three_and_exit, w);
	mp_conn_close(w);
	for (int i = 0; i < 3; i++) {
		cr_assert_eq(mp_conn_recv(r, &v, sizeof(v)), sizeof(v));
		cr_assert_eq(v, i);
	}
	cr_assert_eq(mp_conn_recv(r, &v, sizeof(v)), -EPIPE);
	cr_assert_eq(mp_conn_recv(r, &v, sizeof(v)), -EPIPE);
	cr_assert_eq(mp_conn_poll(r, MP_NOWAIT), 1);
	t_wait_exit(pid, 0);
	mp_conn_close(r);
}

struct kill_ctx {
	mp_conn *c;
	struct t_sync ready;
};

static int
writer_then_hang(void *arg)
{
	struct kill_ctx *k = arg;
	int v = 42;

	T_CHECK(mp_conn_send(k->c, &v, sizeof(v)) == 0);
	t_sync_signal(&k->ready);
	while (pause() < 0)
		continue;
	return T_FAIL;
}

static int
blocked_reader(void *arg)
{
	struct kill_ctx *k = arg;
	int v;

	T_CHECK(mp_conn_recv(k->c, &v, sizeof(v)) == sizeof(v) && v == 42);
	t_sync_signal(&k->ready);
	T_CHECK(mp_conn_recv(k->c, &v, sizeof(v)) == -EPIPE);
	return T_PASS;
}

T_TEST(pipe, blocked_recv_sees_a_sigkilled_writer_promptly)
{
	struct kill_ctx k;
	mp_conn *r, *w;
	pid_t wpid, rpid;

	cr_assert_eq(mp_pipe(&r, &w, false), 0);
	t_sync_init(&k.ready);
	k.c = w;
	wpid = t_spawn(writer_then_hang, &k);
	cr_assert_eq(t_sync_wait(&k.ready, 10000), 0);
	mp_conn_close(w);	/* now only the writer child holds it */
	k.c = r;
	rpid = t_spawn(blocked_reader, &k);
	mp_conn_close(r);
	cr_assert_eq(t_sync_wait(&k.ready, 10000), 0);
	/* Let the reader fall asleep in the kernel, the hard case. */
	(void)t_wait_futex_sleep(rpid, 5000);
	int64_t t0 = t_now();
	kill(wpid, SIGKILL);
	cr_assert_eq(t_wait_status(wpid, 10000), -SIGKILL);
	cr_assert_eq(t_wait_status(rpid, 10000), 0);
	int64_t ms = (t_now() - t0) / 1000000;
	cr_log_info("EOF seen %ld ms after SIGKILL", (long)ms);
	cr_assert_lt(ms, T_MS(500), "EOF took %ld ms", (long)ms);
	t_sync_fini(&k.ready);
}

struct close_ctx {
	mp_conn *r, *w;
	struct t_sync sent, done;
};

static int
close_both_then_wait(void *arg)
{
	struct close_ctx *k = arg;
	int v = 7;

	mp_conn_close(k->r);
	T_CHECK(mp_conn_send(k->w, &v, sizeof(v)) == 0);
	T_CHECK(mp_conn_send(k->w, &v, sizeof(v)) == 0);
	mp_conn_close(k->w);
	t_sync_signal(&k->sent);
	/* Stay alive: EOF must come from the closes, not from exit. */
	T_CHECK(t_sync_wait(&k->done, 30000) == 0);
	return T_PASS;
}

T_TEST(pipe, eof_after_parent_and_child_close_their_copies)
{
	struct close_ctx k;
	int v;
	pid_t pid;

	t_sync_init(&k.sent);
	t_sync_init(&k.done);
	cr_assert_eq(mp_pipe(&k.r, &k.w, false), 0);
	pid = t_spawn(close_both_then_wait, &k);
	cr_assert_eq(t_sync_wait(&k.sent, 10000), 0);
	/* The child closed its copy; ours still holds the write end open. */
	cr_assert_eq(mp_conn_recv(k.r, &v, sizeof(v)), sizeof(v));
	cr_assert_eq(mp_conn_recv(k.r, &v, sizeof(v)), sizeof(v));
	cr_assert_eq(mp_conn_recv_timeout(k.r, &v, sizeof(v), MP_MSEC(20)),
		     -ETIMEDOUT);
	mp_conn_close(k.w);
	cr_assert_eq(mp_conn_recv(k.r, &v, sizeof(v)), -EPIPE);
	t_sync_signal(&k.done);
	t_wait_exit(pid, 0);
	mp_conn_close(k.r);
	t_sync_fini(&k.sent);
	t_sync_fini(&k.done);
}

static int
reader_exits(void *arg)
{
	(void)arg;
	return T_PASS;
}

T_TEST(pipe, send_to_a_gone_receiver_is_epipe)
{
	mp_conn *r, *w;
	char m[1000] = { 0 };
	pid_t pid;
	int rc = 0, n = 0;

	cr_assert_eq(mp_pipe_new(&r, &w, false, 65536), 0);
	pid = t_spawn(reader_exits, r);
	mp_conn_close(r);
	t_wait_exit(pid, 0);
	/* At the latest when the ring is full. */
	while (n < 1000 && (rc = mp_conn_send(w, m, sizeof(m))) == 0)
		n++;
	cr_assert_eq(rc, -EPIPE);
	cr_assert_leq(n, 65536 / (int)sizeof(m));
	cr_assert_eq(mp_conn_send(w, m, 1), -EPIPE);
	mp_conn_close(w);
}

static int
hold_reader(void *arg)
{
	struct kill_ctx *k = arg;

	t_sync_signal(&k->ready);
	while (pause() < 0)
		continue;
	return T_FAIL;
}

T_TEST(pipe, blocked_sender_sees_a_sigkilled_receiver)
{
	struct kill_ctx k;
	mp_conn *r, *w;
	char m[4096] = { 0 };
	pid_t pid;
	int rc;

	cr_assert_eq(mp_pipe_new(&r, &w, false, 16384), 0);
	t_sync_init(&k.ready);
	k.c = r;
	pid = t_spawn(hold_reader, &k);
	mp_conn_close(r);
	cr_assert_eq(t_sync_wait(&k.ready, 10000), 0);
	while ((rc = mp_conn_send_timeout(w, m, sizeof(m), MP_NOWAIT)) == 0)
		;
	cr_assert_eq(rc, -EAGAIN);
	kill(pid, SIGKILL);
	cr_assert_eq(mp_conn_send(w, m, sizeof(m)), -EPIPE);
	cr_assert_eq(t_wait_status(pid, 10000), -SIGKILL);
	mp_conn_close(w);
	t_sync_fini(&k.ready);
}

T_TEST(pipe, poll_and_timeouts)
{
	mp_conn *r, *w;
	char m[4096] = { 0 };
	int64_t t0;
	int rc;

	cr_assert_eq(mp_pipe_new(&r, &w, false, 16384), 0);
	cr_assert_eq(mp_conn_poll(r, MP_NOWAIT), 0);
	t0 = t_now();
	cr_assert_eq(mp_conn_poll(r, MP_MSEC(30)), 0);
	cr_assert_geq(t_now() - t0, MP_MSEC(30));
	t0 = t_now();
	cr_assert_eq(mp_conn_recv_timeout(r, m, sizeof(m), MP_MSEC(30)),
		     -ETIMEDOUT);
	cr_assert_geq(t_now() - t0, MP_MSEC(30));
	cr_assert_eq(mp_conn_send(w, m, 10), 0);
	cr_assert_eq(mp_conn_poll(r, MP_NOWAIT), 1);
	cr_assert_eq(mp_conn_poll(r, MP_FOREVER), 1);
	cr_assert_eq(mp_conn_recv(r, m, sizeof(m)), 10);
	while ((rc = mp_conn_send_timeout(w, m, sizeof(m), MP_NOWAIT)) == 0)
		;
	cr_assert_eq(rc, -EAGAIN);
	t0 = t_now();
	cr_assert_eq(mp_conn_send_timeout(w, m, sizeof(m), MP_MSEC(30)),
		     -ETIMEDOUT);
	cr_assert_geq(t_now() - t0, MP_MSEC(30));
	mp_conn_close(w);
	cr_assert_eq(mp_conn_poll(r, MP_FOREVER), 1);
	mp_conn_close(r);
}

T_TEST(pipe, a_timed_out_large_send_is_withdrawn)
{
	mp_conn *r, *w;
	size_t big = (size_t)1 << 20;
	uint8_t *m = malloc(big);
	char small[64];

	cr_assert_not_null(m);
	fill(m, big, 3);
	cr_assert_eq(mp_pipe_new(&r, &w, false, 65536), 0);
	cr_assert_eq(mp_conn_send_timeout(w, m, big, MP_MSEC(20)),
		     -ETIMEDOUT);
	/* The next message waits for the receiver to skip the first. */
	cr_assert_eq(mp_conn_send_timeout(w, "next", 4, MP_NOWAIT), -EAGAIN);
	/* A small buffer skips the withdrawn message instead of EMSGSIZE. */
	cr_assert_eq(mp_conn_recv_timeout(r, small, sizeof(small), MP_NOWAIT),
		     -EAGAIN);
	cr_assert_eq(mp_conn_send(w, "next", 4), 0);
	cr_assert_eq(mp_conn_recv(r, small, sizeof(small)), 4);
	cr_assert_eq(memcmp(small, "next", 4), 0);
	/* Withdrawn again, now skipped by a receiver with room for it. */
	cr_assert_eq(mp_conn_send_timeout(w, m, big, MP_NOWAIT), -EAGAIN);
	cr_assert_eq(mp_conn_recv_timeout(r, m, big, MP_NOWAIT), -EAGAIN);
	fill(m, big, 4);
	cr_assert_eq(mp_conn_send(w, m, 100), 0);
	cr_assert_eq(mp_conn_recv(r, m + 200, big - 200), 100);
	cr_assert(check(m + 200, 100, 4));
	mp_conn_close(r);
	mp_conn_close(w);
	free(m);
}

#define NPIPES 16
#define PER_PIPE 200

struct multi_ctx {
	mp_conn *w[NPIPES];
	int child;
};

static int
random_sender(void *arg)
{
	struct multi_ctx *k = arg;
	int seq[NPIPES] = { 0 }, left = NPIPES / 4 * PER_PIPE;
	uint64_t s = 99 + (uint64_t)k->child;

	/* Child c owns pipes c, c+4, c+8, c+12 and picks among them. */
	while (left > 0) {
		int p = k->child + 4 * (int)(xs(&s) % 4);
		if (seq[p] == PER_PIPE)
			continue;
		int msg[2] = { p, seq[p]++ };
		T_CHECK(mp_conn_send(k->w[p], msg, sizeof(msg)) == 0);
		left--;
		if (xs(&s) % 64 == 0)
			sched_yield();
	}
	return T_PASS;
}

T_TEST(pipe, wait_over_16_pipes_with_random_senders)
{
	struct multi_ctx k;
	mp_conn *r[NPIPES], *live[NPIPES], *ready[NPIPES];
	int next[NPIPES] = { 0 }, eof = 0, nlive = NPIPES;
	pid_t pid[4];

	for (int i = 0; i < NPIPES; i++)
		cr_assert_eq(mp_pipe(&r[i], &k.w[i], false), 0);
	for (int c = 0; c < 4; c++) {
		k.child = c;
		pid[c] = t_spawn(random_sender, &k);
	}
	for (int i = 0; i < NPIPES; i++) {
		mp_conn_close(k.w[i]);
		live[i] = r[i];
	}
	while (nlive > 0) {
		int n = mp_wait(live, (size_t)nlive, ready, MP_SEC(20));
		cr_assert_gt(n, 0);
		for (int j = 0; j < n; j++) {
			int msg[2];
			ssize_t got = mp_conn_recv(ready[j], msg, sizeof(msg));
			if (got == -EPIPE) {
				eof++;
				for (int i = 0; i < nlive; i++) {
					if (live[i] == ready[j]) {
						live[i] = live[--nlive];
						break;
					}
				}
				continue;
			}
			cr_assert_eq(got, (ssize_t)sizeof(msg));
			cr_assert(ready[j] == r[msg[0]]);
			cr_assert_eq(msg[1], next[msg[0]]++);
		}
	}
	cr_assert_eq(eof, NPIPES);
	for (int i = 0; i < NPIPES; i++) {
		cr_assert_eq(next[i], PER_PIPE);
		mp_conn_close(r[i]);
	}
	for (int c = 0; c < 4; c++)
		t_wait_exit(pid[c], 0);
}

#define NMANY 200

struct many_ctx {
	mp_conn *w[NMANY];
	struct t_sync go;
};

static int
send_on_far_ones(void *arg)
{
	struct many_ctx *k = arg;
	int v = 1;

	T_CHECK(t_sync_wait(&k->go, 10000) == 0);
	T_CHECK(mp_conn_send(k->w[150], &v, sizeof(v)) == 0);
	T_CHECK(t_sync_wait(&k->go, 10000) == 0);
	T_CHECK(mp_conn_send(k->w[199], &v, sizeof(v)) == 0);
	T_CHECK(mp_conn_send(k->w[3], &v, sizeof(v)) == 0);
	T_CHECK(t_sync_wait(&k->go, 10000) == 0);
	return T_PASS;
}

T_TEST(pipe, wait_over_more_than_128_connections)
{
	struct many_ctx k;
	mp_conn *r[NMANY], *ready[NMANY];
	int v, n;
	pid_t pid;

	t_sync_init(&k.go);
	for (int i = 0; i < NMANY; i++)
		cr_assert_eq(mp_pipe_new(&r[i], &k.w[i], false, 4096), 0);
	pid = t_spawn(send_on_far_ones, &k);
	for (int i = 0; i < NMANY; i++)
		mp_conn_close(k.w[i]);
	cr_assert_eq(mp_wait(r, NMANY, ready, MP_NOWAIT), 0);
	cr_assert_eq(mp_wait(r, NMANY, ready, MP_MSEC(20)), 0);
	t_sync_signal(&k.go);
	n = mp_wait(r, NMANY, ready, MP_SEC(10));
	cr_assert_eq(n, 1);
	cr_assert(ready[0] == r[150]);
	cr_assert_eq(mp_conn_recv(r[150], &v, sizeof(v)), sizeof(v));
	t_sync_signal(&k.go);
	int seen = 0;
	while (seen < 2) {
		n = mp_wait(r, NMANY, ready, MP_SEC(10));
		cr_assert_gt(n, 0);
		for (int j = 0; j < n; j++) {
			cr_assert(ready[j] == r[199] || ready[j] == r[3]);
			cr_assert_eq(mp_conn_recv(ready[j], &v, sizeof(v)),
				     sizeof(v));
			seen++;
		}
	}
	t_sync_signal(&k.go);
	t_wait_exit(pid, 0);
	/* Every writer gone: all 200 are ready, at end of file. */
	cr_assert_eq(mp_wait(r, NMANY, ready, MP_SEC(10)), NMANY);
	for (int i = 0; i < NMANY; i++) {
		cr_assert_eq(mp_conn_recv(r[i], &v, sizeof(v)), -EPIPE);
		mp_conn_close(r[i]);
	}
	t_sync_fini(&k.go);
}

static int
send_after_go(void *arg)
{
	struct kill_ctx *k = arg;
	int v = 5;

	T_CHECK(t_sync_wait(&k->ready, 10000) == 0);
	T_CHECK(mp_conn_send(k->c, &v, sizeof(v)) == 0);
	return T_PASS;
}

T_TEST(pipe, conn_fd_is_readable_on_data_and_eof)
{
	struct kill_ctx k;
	mp_conn *r, *w;
	struct pollfd p;
	int v, fd;
	pid_t pid;

	t_sync_init(&k.ready);
	cr_assert_eq(mp_pipe(&r, &w, false), 0);
	k.c = w;
	pid = t_spawn(send_after_go, &k);
	mp_conn_close(w);
	fd = mp_conn_fd(r);
	cr_assert_geq(fd, 0);
	cr_assert_eq(mp_conn_recv_timeout(r, &v, sizeof(v), MP_NOWAIT),
		     -EAGAIN);
	p = (struct pollfd){ .fd = fd, .events = POLLIN };
	cr_assert_eq(poll(&p, 1, 0), 0);
	t_sync_signal(&k.ready);
	cr_assert_eq(poll(&p, 1, 10000), 1);
	cr_assert_eq(mp_conn_recv_timeout(r, &v, sizeof(v), MP_NOWAIT),
		     sizeof(v));
	cr_assert_eq(v, 5);
	t_wait_exit(pid, 0);
	cr_assert_eq(poll(&p, 1, 10000), 1);
	cr_assert_eq(mp_conn_recv_timeout(r, &v, sizeof(v), MP_NOWAIT), -EPIPE);
	mp_conn_close(r);
	t_sync_fini(&k.ready);
}

static int
echo(void *arg)
{
	mp_conn **ends = arg, *c = ends[1];
	char buf[256];
	ssize_t n;

	mp_conn_close(ends[0]);	/* else we hold our own peer */
	while ((n = mp_conn_recv(c, buf, sizeof(buf))) >= 0)
		T_CHECK(mp_conn_send(c, buf, (size_t)n) == 0);
	T_CHECK(n == -EPIPE);
	return T_PASS;
}

T_TEST(pipe, duplex_ping_pong_across_fork)
{
	mp_conn *a, *b, *ends[2];
	pid_t pid;

	cr_assert_eq(mp_pipe(&a, &b, true), 0);
	ends[0] = a;
	ends[1] = b;
	pid = t_spawn(echo, ends);
	mp_conn_close(b);
	for (int i = 0; i < 20000; i++) {
		int v = i, got = -1;
		cr_assert_eq(mp_conn_send(a, &v, sizeof(v)), 0);
		cr_assert_eq(mp_conn_recv(a, &got, sizeof(got)), sizeof(got));
		cr_assert_eq(got, i);
	}
	mp_conn_close(a);
	t_wait_exit(pid, 0);
}

T_TEST(pipe, bad_arguments_are_negative_errnos)
{
	mp_conn *r, *w, *list[2], *ready[2];
	char buf[8];
	void *m;

	cr_assert_eq(mp_pipe(NULL, &w, false), -EINVAL);
	cr_assert_eq(mp_pipe(&r, NULL, true), -EINVAL);
	cr_assert_eq(mp_pipe(&r, &r, true), -EINVAL);
	cr_assert_eq(mp_pipe_new(&r, &w, true, (size_t)1 << 40), -EINVAL);
	cr_assert_eq(mp_conn_send(NULL, "x", 1), -EINVAL);
	cr_assert_eq(mp_conn_recv(NULL, buf, 1), -EINVAL);
	cr_assert_eq(mp_conn_recv_alloc(NULL, &m), -EINVAL);
	cr_assert_eq(mp_conn_poll(NULL, 0), -EINVAL);
	cr_assert_eq(mp_conn_fd(NULL), -EINVAL);
	cr_assert_eq(mp_wait(NULL, 1, ready, 0), -EINVAL);
	mp_conn_close(NULL);

	cr_assert_eq(mp_pipe_new(&r, &w, true, 100), 0);	/* rounded up */
	cr_assert_eq(mp_conn_send(w, NULL, 1), -EINVAL);
	cr_assert_eq(mp_conn_send_timeout(w, "x", 1, -5), -EINVAL);
	cr_assert_eq(mp_conn_recv(r, NULL, 1), -EINVAL);
	cr_assert_eq(mp_conn_recv_timeout(r, buf, 1, -2), -EINVAL);
	cr_assert_eq(mp_conn_recv_alloc(r, NULL), -EINVAL);
	cr_assert_eq(mp_conn_poll(r, -3), -EINVAL);
	list[0] = r;
	list[1] = NULL;
	cr_assert_eq(mp_wait(list, 2, ready, 0), -EINVAL);
	cr_assert_eq(mp_wait(list, 0, ready, 0), -EINVAL);
	cr_assert_eq(mp_wait(list, 1, NULL, 0), -EINVAL);
	cr_assert_eq(mp_wait(list, 1, ready, -7), -EINVAL);
	cr_assert_eq(mp_wait(list, 1, ready, 0), 0);

	/* A closed end is refused while the pipe's other end lives here. */
	mp_conn_close(r);
	cr_assert_eq(mp_conn_send(r, "x", 1), -EINVAL);
	cr_assert_eq(mp_conn_recv(r, buf, 1), -EINVAL);
	cr_assert_eq(mp_conn_poll(r, 0), -EINVAL);
	cr_assert_eq(mp_conn_fd(r), -EINVAL);
	cr_assert_eq(mp_wait(list, 1, ready, 0), -EINVAL);
	mp_conn_close(r);	/* twice: ignored */
	/* The peer is gone in this process: w's sends see EPIPE. */
	cr_assert_eq(mp_conn_recv_timeout(w, buf, 1, MP_NOWAIT), -EPIPE);
	mp_conn_close(w);
	/* Both closed: the pooled handle memory still says "closed". */
	cr_assert_eq(mp_conn_send(w, "x", 1), -EINVAL);
	cr_assert_eq(mp_conn_recv(r, buf, 1), -EINVAL);
	cr_assert_eq(mp_conn_fd(w), -EINVAL);
	mp_conn_close(w);
}

T_TEST(pipe, no_leak_after_10000_pipe_close_cycles)
{
	int fds = t_fd_count();

	for (int i = 0; i < 10000; i++) {
		mp_conn *r, *w;
		char b[8];
		cr_assert_eq(mp_pipe(&r, &w, i & 1), 0);
		cr_assert_eq(mp_conn_send(w, "12345678", 8), 0);
		cr_assert_eq(mp_conn_recv(r, b, sizeof(b)), 8);
		if (i & 2)
			cr_assert_geq(mp_conn_fd(r), 0);
		mp_conn_close(w);
		mp_conn_close(r);
	}
	cr_assert_eq(t_fd_count(), fds);
}

struct midkill_ctx {
	mp_conn *c;
	struct t_sync ready;
};

static int
send_big_then_after(void *arg)
{
	struct midkill_ctx *k = arg;
	size_t n = (size_t)1 << 20;
	uint8_t *m = malloc(n);

	T_CHECK(m != NULL);
	fill(m, n, 11);
	t_sync_signal(&k->ready);
	T_CHECK(mp_conn_send(k->c, m, n) == 0);
	T_CHECK(mp_conn_send(k->c, "after", 5) == 0);
	free(m);
	return T_PASS;
}

static int
recv_forever(void *arg)
{
	void *m;

	(void)mp_conn_recv_alloc(arg, &m);
	return T_FAIL;	/* killed mid-message before it returns */
}

T_TEST(pipe, a_receiver_killed_mid_message_leaves_the_rest_to_skip)
{
	struct midkill_ctx k;
	mp_conn *r, *w;
	char buf[64];
	pid_t s, rp;
	int st;

	t_sync_init(&k.ready);
	cr_assert_eq(mp_pipe_new(&r, &w, false, 4096), 0);
	k.c = w;
	s = t_spawn(send_big_then_after, &k);
	mp_conn_close(w);
	cr_assert_eq(t_sync_wait(&k.ready, 10000), 0);
	cr_assert_eq(mp_conn_poll(r, MP_SEC(10)), 1);
	/* The sender stops inside its 1 MiB message. */
	kill(s, SIGSTOP);
	cr_assert_eq(waitpid(s, &st, WUNTRACED), s);
	cr_assert(WIFSTOPPED(st));
	rp = t_spawn(recv_forever, r);
	/* When nothing is readable, the receiver stands inside the message. */
	int64_t t0 = t_now();
	while (mp_conn_poll(r, MP_NOWAIT) == 1 && t_now() - t0 < MP_SEC(10))
		sched_yield();
	cr_assert_eq(mp_conn_poll(r, MP_NOWAIT), 0);
	kill(rp, SIGKILL);
	cr_assert_eq(t_wait_status(rp, 10000), -SIGKILL);
	kill(s, SIGCONT);
	/* The rest of the half-delivered message is skipped. */
	cr_assert_eq(mp_conn_recv(r, buf, sizeof(buf)), 5);
	cr_assert_eq(memcmp(buf, "after", 5), 0);
	cr_assert_eq(mp_conn_recv(r, buf, sizeof(buf)), -EPIPE);
	t_wait_exit(s, 0);
	mp_conn_close(r);
	t_sync_fini(&k.ready);
}

static int
send_big_forever(void *arg)
{
	struct midkill_ctx *k = arg;
	size_t n = (size_t)1 << 20;
	uint8_t *m = calloc(1, n);

	T_CHECK(m != NULL);
	(void)mp_conn_send(k->c, m, n);	/* killed inside it */
	return T_FAIL;
}

static int
recv_expect_fresh(void *arg)
{
	mp_conn **ends = arg;
	void *m = NULL;

	mp_conn_close(ends[1]);
	T_CHECK(mp_conn_recv_alloc(ends[0], &m) == 5);
	T_CHECK(memcmp(m, "fresh", 5) == 0);
	free(m);
	return T_PASS;
}

T_TEST(pipe, a_sender_killed_mid_message_is_withdrawn_by_the_next)
{
	struct midkill_ctx k;
	mp_conn *r, *w, *ends[2];
	pid_t s, rp;

	cr_assert_eq(mp_pipe_new(&r, &w, false, 4096), 0);
	k.c = w;
	s = t_spawn(send_big_forever, &k);
	/* Wait for its first chunk, then kill it inside the message. */
	cr_assert_eq(mp_conn_poll(r, MP_SEC(10)), 1);
	kill(s, SIGKILL);
	cr_assert_eq(t_wait_status(s, 10000), -SIGKILL);
	ends[0] = r;
	ends[1] = w;
	rp = t_spawn(recv_expect_fresh, ends);
	/* We still hold the send end: our next message withdraws the half. */
	cr_assert_eq(mp_conn_send_timeout(w, "fresh", 5, MP_SEC(10)), 0);
	t_wait_exit(rp, 0);
	mp_conn_close(w);
	mp_conn_close(r);
}

static int
exec_cat(void *arg)
{
	int *fds = arg;

	/* cat reads our pipe until the parent closes it. */
	dup2(fds[0], STDIN_FILENO);
	close(fds[0]);
	close(fds[1]);
	execl("/bin/cat", "cat", (char *)NULL);
	return T_SKIP;
}

T_TEST(pipe, exec_drops_the_ends_so_eof_does_not_wait_for_it)
{
	mp_conn *r, *w;
	int fds[2], v;
	pid_t pid;

	cr_assert_eq(pipe2(fds, O_CLOEXEC), 0);
	cr_assert_eq(mp_pipe(&r, &w, false), 0);
	pid = t_spawn(exec_cat, fds);
	close(fds[0]);
	mp_conn_close(w);
	/* cat lives on, but exec closed its copies of both ends. */
	cr_assert_eq(mp_conn_recv_timeout(r, &v, sizeof(v), MP_SEC(10)),
		     -EPIPE);
	close(fds[1]);
	cr_assert_eq(t_wait_status(pid, 10000), 0);
	mp_conn_close(r);
}

/*
 * Streaming senders that die or stop inside a message while another
 * process keeps the send end open, so that no end of file comes: the
 * receiver's deadline holds, and a dead sender's half message is dropped
 * by the receiver itself.
 */
#define STREAM_LEN ((size_t)4 << 20)	/* through a 64 KiB ring */

/* White-box: the consumer's words of direction 0 (lib/pipe.c, pipe_shm). */
#define PIPE_MAGIC 0x6d707069u
#define CTL_TAIL0 128
#define CTL_MSG_END0 136

/*
 * The shared mapping of this process's pipe (of len bytes; 0: any), found
 * in /proc/self/maps: a memfd named "mproc" that starts with the pipe's
 * magic.  The last such mapping wins; callers hold only one pipe.
 */
static int
pipe_map(size_t want, uint8_t **base, size_t *len)
{
	FILE *f = fopen("/proc/self/maps", "r");
	unsigned long lo, hi;
	char line[512];
	int rc = -1;

	if (f == NULL)
		return -1;
	while (fgets(line, sizeof(line), f) != NULL) {
		if (strstr(line, "/memfd:mproc") == NULL ||
		    sscanf(line, "%lx-%lx", &lo, &hi) != 2 ||
		    (want != 0 && hi - lo != want) ||
		    *(const uint32_t *)lo != PIPE_MAGIC)
			continue;
		*base = (uint8_t *)lo;
		*len = hi - lo;
		rc = 0;
	}
	fclose(f);
	return rc;
}

static uint64_t
ctl_word(const uint8_t *base, size_t off)
{
	return __atomic_load_n((const uint64_t *)(base + off),
			       __ATOMIC_ACQUIRE);
}

/* Stream one message and never return: the parent kills us inside it. */
static int
stream_until_killed(void *arg)
{
	uint8_t *m = malloc(STREAM_LEN);

	T_CHECK(m != NULL);
	fill(m, STREAM_LEN, 21);
	(void)mp_conn_send(arg, m, STREAM_LEN);
	return T_FAIL;
}

/* A 64 KiB-ring pipe whose sender child died inside a 4 MiB message. */
static void
dead_streamer(mp_conn **r, mp_conn **w)
{
	pid_t s;

	cr_assert_eq(mp_pipe_new(r, w, false, 65536), 0);
	s = t_spawn(stream_until_killed, *w);
	/* The header and the first chunk are in; the ring is full. */
	cr_assert_eq(mp_conn_poll(*r, MP_SEC(10)), 1);
	kill(s, SIGKILL);
	cr_assert_eq(t_wait_status(s, 10000), -SIGKILL);
	/* We still hold the send end: no end of file will come. */
}

T_TEST(pipe, recv_timeout_holds_when_the_streaming_sender_died)
{
	uint8_t *buf = malloc(STREAM_LEN);
	char small[16];
	mp_conn *r, *w;
	int64_t t0, ns;

	cr_assert_not_null(buf);
	dead_streamer(&r, &w);
	t0 = t_now();
	cr_assert_eq(mp_conn_recv_timeout(r, buf, STREAM_LEN, MP_MSEC(200)),
		     -ETIMEDOUT);
	ns = t_now() - t0;
	cr_log_info("recv_timeout(200 ms) returned after %ld ms",
		    (long)(ns / 1000000));
	cr_assert_geq(ns, MP_MSEC(200));
	cr_assert_lt(ns, MP_MSEC(T_MS(1000)));
	/*
	 * The dead sender's message was dropped in that call, not kept for
	 * us: a kept part would make this -EMSGSIZE.
	 */
	cr_assert_eq(mp_conn_recv_timeout(r, small, sizeof(small), MP_NOWAIT),
		     -EAGAIN);
	/* Our next send withdraws it too; the receiver acknowledges. */
	cr_assert_eq(mp_conn_send_timeout(w, "next", 4, MP_NOWAIT), -EAGAIN);
	cr_assert_eq(mp_conn_recv_timeout(r, small, sizeof(small), MP_NOWAIT),
		     -EAGAIN);
	cr_assert_eq(mp_conn_send(w, "next", 4), 0);
	cr_assert_eq(mp_conn_recv_timeout(r, small, sizeof(small), MP_SEC(10)),
		     4);
	cr_assert_eq(memcmp(small, "next", 4), 0);
	mp_conn_close(w);
	cr_assert_eq(mp_conn_recv(r, small, sizeof(small)), -EPIPE);
	mp_conn_close(r);
	free(buf);
}

static int
recv_whole_stream(void *arg)
{
	uint8_t *m = malloc(STREAM_LEN);

	T_CHECK(m != NULL);
	T_CHECK(mp_conn_recv(arg, m, STREAM_LEN) == (ssize_t)STREAM_LEN);
	T_CHECK(check(m, STREAM_LEN, 23));
	free(m);
	return T_PASS;
}

static int
send_whole_stream(void *arg)
{
	uint8_t *m = malloc(STREAM_LEN);

	T_CHECK(m != NULL);
	fill(m, STREAM_LEN, 23);
	T_CHECK(mp_conn_send(arg, m, STREAM_LEN) == 0);
	free(m);
	return T_PASS;
}

T_TEST(pipe, recv_forever_drops_a_dead_streamers_message_by_itself)
{
	mp_conn *r, *w;
	uint8_t *base;
	size_t len;
	pid_t rp, sp;
	bool cut = false;

	dead_streamer(&r, &w);
	cr_assert_eq(pipe_map(0, &base, &len), 0);
	rp = t_spawn(recv_whole_stream, r);
	/*
	 * The receiver takes the first chunk, waits, finds the sender dead
	 * and stands at the cut: msg_end falls back to tail.  No sender
	 * touches the ring meanwhile, so the receiver saw it alone.
	 */
	int64_t t0 = t_now();
	while (t_now() - t0 < MP_MSEC(T_MS(10000))) {
		uint64_t tail = ctl_word(base, CTL_TAIL0);

		if (tail > 0 && ctl_word(base, CTL_MSG_END0) == tail) {
			cut = true;
			break;
		}
		sched_yield();
	}
	if (!cut)
		kill(rp, SIGKILL);
	cr_assert(cut, "the receiver did not drop the dead sender's message");
	cr_log_info("dropped %ld ms after the receiver started",
		    (long)((t_now() - t0) / 1000000));
	/* A new sender: its complete message arrives intact. */
	sp = t_spawn(send_whole_stream, w);
	t_wait_exit(sp, 0);
	t_wait_exit(rp, 0);
	mp_conn_close(w);
	mp_conn_close(r);
}

static int
stream_then_after(void *arg)
{
	uint8_t *m = malloc(STREAM_LEN);

	T_CHECK(m != NULL);
	fill(m, STREAM_LEN, 25);
	T_CHECK(mp_conn_send(arg, m, STREAM_LEN) == 0);
	T_CHECK(mp_conn_send(arg, "after", 5) == 0);
	free(m);
	return T_PASS;
}

T_TEST(pipe, a_receive_stopped_mid_message_by_its_deadline_goes_on_next)
{
	uint8_t *buf = malloc(STREAM_LEN);
	char small[16];
	mp_conn *r, *w;
	void *p = NULL;
	int64_t t0, ns;
	pid_t s;
	int st;

	cr_assert_not_null(buf);
	cr_assert_eq(mp_pipe_new(&r, &w, false, 65536), 0);
	s = t_spawn(stream_then_after, w);
	mp_conn_close(w);
	cr_assert_eq(mp_conn_poll(r, MP_SEC(10)), 1);
	/* The sender lives but stops inside its message. */
	kill(s, SIGSTOP);
	cr_assert_eq(waitpid(s, &st, WUNTRACED), s);
	cr_assert(WIFSTOPPED(st));
	t0 = t_now();
	cr_assert_eq(mp_conn_recv_timeout(r, buf, STREAM_LEN, MP_MSEC(150)),
		     -ETIMEDOUT);
	ns = t_now() - t0;
	cr_assert_geq(ns, MP_MSEC(150));
	cr_assert_lt(ns, MP_MSEC(T_MS(1000)));
	/* The part stays with this end, across both kinds of receive. */
	cr_assert_eq(mp_conn_recv_alloc_timeout(r, &p, MP_NOWAIT), -EAGAIN);
	cr_assert_null(p);
	cr_assert_eq(mp_conn_recv_timeout(r, small, sizeof(small), MP_NOWAIT),
		     -EMSGSIZE);
	cr_assert_eq(mp_conn_poll(r, MP_NOWAIT), 0);
	kill(s, SIGCONT);
	/* Nothing twice, nothing missing: the message arrives whole. */
	memset(buf, 0, STREAM_LEN);
	cr_assert_eq(mp_conn_recv(r, buf, STREAM_LEN), (ssize_t)STREAM_LEN);
	cr_assert(check(buf, STREAM_LEN, 25));
	cr_assert_eq(mp_conn_recv(r, small, sizeof(small)), 5);
	cr_assert_eq(memcmp(small, "after", 5), 0);
	cr_assert_eq(mp_conn_recv(r, small, sizeof(small)), -EPIPE);
	t_wait_exit(s, 0);
	mp_conn_close(r);
	free(buf);
}

struct after_ctx {
	mp_conn *r;
	struct t_sync go;
};

static int
recv_after(void *arg)
{
	struct after_ctx *k = arg;
	char small[16];

	/*
	 * Forked before the parent's receive stopped, so without its part:
	 * it discards the rest of the half message.
	 */
	T_CHECK(t_sync_wait(&k->go, 10000) == 0);
	T_CHECK(mp_conn_recv(k->r, small, sizeof(small)) == 5);
	T_CHECK(memcmp(small, "after", 5) == 0);
	return T_PASS;
}

T_TEST(pipe, a_part_kept_by_one_process_is_skipped_by_another)
{
	uint8_t *buf = malloc(STREAM_LEN);
	struct after_ctx k;
	mp_conn *r, *w;
	pid_t s, rp;
	int st;

	cr_assert_not_null(buf);
	t_sync_init(&k.go);
	cr_assert_eq(mp_pipe_new(&r, &w, false, 65536), 0);
	k.r = r;
	rp = t_spawn(recv_after, &k);
	s = t_spawn(stream_then_after, w);
	cr_assert_eq(mp_conn_poll(r, MP_SEC(10)), 1);
	kill(s, SIGSTOP);
	cr_assert_eq(waitpid(s, &st, WUNTRACED), s);
	cr_assert_eq(mp_conn_recv_timeout(r, buf, STREAM_LEN, MP_MSEC(20)),
		     -ETIMEDOUT);
	t_sync_signal(&k.go);
	kill(s, SIGCONT);
	t_wait_exit(rp, 0);
	t_wait_exit(s, 0);
	/* Our kept part is stale now: the next receive waits afresh. */
	cr_assert_eq(mp_conn_recv_timeout(r, buf, STREAM_LEN, MP_NOWAIT),
		     -EAGAIN);
	cr_assert_eq(mp_conn_send(w, "x", 1), 0);
	cr_assert_eq(mp_conn_recv(r, buf, STREAM_LEN), 1);
	mp_conn_close(w);
	mp_conn_close(r);
	t_sync_fini(&k.go);
	free(buf);
}

/*
 * The fuzzer's hostile peer (tests/fuzz/fuzz_pipe_peer.c), replayed on the
 * input it once hung on: a header with a huge length written into the
 * ring, then receives with 1 ms timeouts.  The harness finds the shared
 * mapping through mp__pipe_region(), which the library does not export;
 * this one reads /proc/self/maps instead.
 */
#include "tests/fuzz/fuzz_pipe_peer.c"

int
mp__pipe_region(const mp_conn *c, void **base, size_t *len)
{
	uint8_t *b;

	(void)c;
	if (pipe_map(0, &b, len) < 0)
		return -EINVAL;
	*base = b;
	return 0;
}

/* tests/fuzz/known/fuzz_pipe_peer-stream-hang (xxd -i). */
static const uint8_t stream_hang[] = {
  0xab, 0x08, 0x22, 0x10, 0xd2, 0x5e, 0x11, 0xf7, 0x41, 0x83, 0xd4, 0x42,
  0x1e, 0x80, 0x46, 0x70, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0xe2,
  0xe2, 0xe2, 0x69, 0x69, 0x69, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
  0x00, 0x00, 0x00, 0x60, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
  0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x69, 0x36, 0xf2, 0xc9, 0xf8,
  0x65, 0x37, 0x00, 0xa4, 0x65, 0xd4, 0xfe, 0x83, 0xe6, 0x50, 0x5a, 0x27,
  0xe9, 0xe9, 0xe9, 0xe9, 0xe9, 0xe9, 0xe9, 0xe9, 0xe9, 0xe9, 0xe9, 0xe9,
  0xe9, 0xe1, 0xe9, 0xe9, 0xe9, 0xe9, 0x1a, 0x1a, 0x1a, 0x1a, 0x1a, 0x1a,
  0x1a, 0x1a, 0x1a, 0x1a, 0x1a, 0x1a, 0x1a, 0x1a, 0x1a, 0x1a, 0x1a, 0x1a,
  0x1a, 0x1a, 0x1a, 0x1a, 0x1a, 0x1a, 0x1a, 0x1a, 0x1a, 0x1a, 0x1a, 0x1a,
  0x1a, 0x1a, 0x1a, 0x1a, 0x1a, 0x1a, 0x1a, 0x1a, 0x1a, 0x1a, 0x1a, 0x1a,
  0x1a, 0x1a, 0x1a, 0x1a, 0x1a, 0x1a, 0x1a, 0x1a, 0x1a, 0x1a, 0x22, 0x10,
  0xd2, 0x5e, 0x11, 0xf7, 0x41, 0x83, 0x30, 0xd4, 0x42, 0x1e, 0x80, 0x46,
  0x70, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0xe2, 0xe2, 0xe2, 0x69,
  0x69, 0x69, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
  0x60, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
  0x00, 0x00, 0x00, 0x00, 0x69, 0x36, 0xf2, 0xc9, 0xf8, 0x65, 0x37, 0x00,
  0xa4, 0x65, 0xd4, 0xfe, 0x83, 0xe6, 0x50, 0x5a, 0x27, 0xe9, 0xe9, 0xe9,
  0xe9, 0xe9, 0xe9, 0xe9, 0xe9, 0xe9, 0xe9, 0xe9, 0xe9, 0xe9, 0xe9, 0xe9,
  0xe9, 0xe9, 0xe9, 0x1a, 0x1a, 0x1a, 0x1a, 0x1a, 0x1a, 0x1a, 0x1a, 0x1a,
  0x1a, 0x1a, 0x1a, 0x1a, 0x1a, 0x1a, 0x1a, 0x1a, 0xe9, 0xe9, 0xe9, 0xe9,
  0xe9, 0xe9, 0xe9, 0xe9, 0xe9, 0xe9, 0xe9, 0xe9, 0xe9, 0xe9, 0xe9, 0xe9,
  0xe9, 0xe9, 0xe9, 0xe9, 0xe9, 0xe9, 0xe9, 0xe9, 0xe9, 0xe9, 0xe9, 0xe9,
  0xe9, 0xe9, 0xe9, 0xe9, 0xe9, 0x55, 0xb9, 0xe4, 0x97, 0xec, 0x11, 0xc9,
  0xef, 0x74
};

T_TEST(pipe, fuzz_reproducer_hostile_stream_length_does_not_hang)
{
	int64_t t0 = t_now();

	cr_assert_eq(LLVMFuzzerTestOneInput(stream_hang, sizeof(stream_hang)),
		     0);
	cr_assert_lt(t_now() - t0, MP_MSEC(T_MS(5000)));
}
