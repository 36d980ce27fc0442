/* SPDX-License-Identifier: MIT */
/*
 * queue: mp_queue beside what one would use instead, in the same run.
 *
 *  - "stream PpCc": P producer and C consumer processes stream size-byte
 *    messages as fast as they can (consumers busy); msgs/s and MB/s for
 *    mp_queue_put/get, for put_many/get_many in batches of 32, and for
 *    pipe(2), an AF_UNIX stream socketpair, a POSIX mq and the bare
 *    Vyukov ring of bench/baseline.c (the group's baseline).
 *  - "one-way busy" / "one-way sleeping": a paced producer stamps each
 *    message with CLOCK_MONOTONIC; the consumer records arrival minus
 *    stamp.  Busy: messages 2 us apart, the consumer is still spinning.
 *    Sleeping: 300 us apart, the consumer is asleep in the futex.  The
 *    row beside it is a raw futex handoff paced the same way (the
 *    producer stamps a shared word and FUTEX_WAKEs; the consumer always
 *    sleeps in FUTEX_WAIT): the cost of any sleeping wake-up here,
 *    including the idle vCPU's return from halt.  Both run pinned to
 *    two different CPUs (when there are two), so both cross CPUs.
 *  - "ping-pong": two processes bounce a message over two queues, beside
 *    the baselines' ping-pong over pipe(2), futex and the Vyukov ring.
 */
#include "config.h"

#include <errno.h>
#include <limits.h>
#include <linux/futex.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <mproc.h>

#include "bench/baseline.h"
#include "bench/mpbench.h"

#define MAXP 16
#define BATCH 32
#define RING 1024

static const size_t default_sizes[] = { 8, 64, 1024 };

struct ctl {
	uint32_t ready;
	uint32_t stop;
	struct {
		uint64_t msgs;
		char pad[56];
	} count[MAXP] __attribute__((aligned(64)));
};

static void
sleep_ns(int64_t ns)
{
	struct timespec ts = { ns / 1000000000, ns % 1000000000 };

	while (nanosleep(&ts, &ts) < 0 && errno == EINTR)
		;
}

/*
 * Wait until t without sleeping, but yield: a spinning producer that
 * shares a CPU with its consumer (two CPUs, other load) would otherwise
 * starve it for a whole time slice and measure the scheduler.
 */
static void
spin_until(int64_t t)
{
	while (mpb_now() < t)
		sched_yield();
}

/* Until t: asleep (nap) or yielding; at once when t has passed. */
static void
wait_until(int64_t t, bool nap)
{
	int64_t left = t - mpb_now();

	if (left <= 0)
		return;
	if (nap)
		sleep_ns(left);
	else
		spin_until(t);
}

/*
 * The latency rows pin the consumer (the caller) and the producer (its
 * child) to two different CPUs, the same way for mproc and for the raw
 * futex, so that both wake a sleeper across CPUs: left to the scheduler,
 * one run may share a CPU and the other not, which changes a wake-up's
 * cost several times over (mpb_pin).
 */

static void
ready_and_wait(struct ctl *c, unsigned n)
{
	__atomic_fetch_add(&c->ready, 1, __ATOMIC_ACQ_REL);
	while (__atomic_load_n(&c->ready, __ATOMIC_ACQUIRE) < n)
		sleep_ns(50000);
}

static int
producer(mp_queue *q, struct ctl *c, size_t size, int batch, unsigned n)
{
	const void *msgs[BATCH];
	size_t lens[BATCH];
	char *buf = calloc(1, size);

	if (buf == NULL)
		return 1;
	for (int i = 0; i < BATCH; i++) {
		msgs[i] = buf;
		lens[i] = size;
	}
	ready_and_wait(c, n);
	while (!__atomic_load_n(&c->stop, __ATOMIC_RELAXED)) {
		ssize_t rc = batch > 1 ?
			mp_queue_put_many(q, msgs, lens, (size_t)batch,
					  MP_FOREVER) :
			mp_queue_put(q, buf, size, MP_FOREVER);
		if (rc < 0)
			break;
	}
	free(buf);
	return 0;
}

static int
consumer(mp_queue *q, struct ctl *c, size_t size, int batch, unsigned n,
	 int idx)
{
	char *buf = malloc(size * BATCH);
	size_t lens[BATCH];
	uint64_t msgs = 0;

	if (buf == NULL)
		return 1;
	ready_and_wait(c, n);
	for (;;) {
		ssize_t rc = batch > 1 ?
			mp_queue_get_many(q, buf, size, lens, (size_t)batch,
					  MP_FOREVER) :
			(mp_queue_get(q, buf, size, MP_FOREVER) < 0 ? -1 : 1);
		if (rc < 0)
			break;
		msgs += (uint64_t)rc;
		__atomic_store_n(&c->count[idx].msgs, msgs, __ATOMIC_RELAXED);
	}
	free(buf);
	return 0;
}

static uint64_t
total(struct ctl *c, int n)
{
	uint64_t s = 0;

	for (int i = 0; i < n; i++)
		s += __atomic_load_n(&c->count[i].msgs, __ATOMIC_RELAXED);
	return s;
}

static int
reap(pid_t *pids, int n)
{
	int rc = 0, st;

	for (int i = 0; i < n; i++) {
		while (waitpid(pids[i], &st, 0) < 0) {
			if (errno != EINTR)
				return -errno;
		}
		if (!WIFEXITED(st) || WEXITSTATUS(st) != 0)
			rc = -ECHILD;
	}
	return rc;
}

/* The mproc twin of mpb_base_stream: steady-state msgs/s at consumers. */
static int
queue_stream(size_t size, int np, int nc, int batch, int64_t dur,
	     double *rate)
{
	pid_t pids[2 * MAXP];
	struct ctl *c;
	mp_queue *q;
	int n = 0, rc;

	if ((c = mp_shm_alloc(sizeof(*c))) == NULL)
		return -ENOMEM;
	if ((rc = mp_queue_new(&q, RING, size)) < 0) {
		mp_shm_free(c);
		return rc;
	}
	fflush(NULL);
	for (int i = 0; i < np + nc; i++) {
		pid_t pid = fork();
		if (pid < 0) {
			rc = -errno;
			break;
		}
		if (pid == 0) {
			_exit(i < np ? producer(q, c, size, batch,
						(unsigned)(np + nc)) :
			      consumer(q, c, size, batch,
				       (unsigned)(np + nc), i - np));
		}
		pids[n++] = pid;
	}
	if (rc == 0) {
		while (__atomic_load_n(&c->ready, __ATOMIC_ACQUIRE) <
		       (unsigned)(np + nc))
			sleep_ns(100000);
		sleep_ns(dur / 10);
		uint64_t m0 = total(c, nc);
		int64_t t0 = mpb_now();
		sleep_ns(dur);
		uint64_t m1 = total(c, nc);
		int64_t t1 = mpb_now();
		*rate = (double)(m1 - m0) / ((double)(t1 - t0) / 1e9);
	}
	__atomic_store_n(&c->stop, 1, __ATOMIC_RELEASE);
	mp_queue_close(q);
	if (rc < 0) {
		/* A half-started run: nobody waits for the missing ones. */
		for (int i = 0; i < n; i++)
			kill(pids[i], SIGKILL);
	}
	int r2 = reap(pids, n);
	mp_queue_free(q);
	mp_shm_free(c);
	return rc < 0 ? rc : r2;
}

/* One implementation of a stream group: mproc (transport < 0) or a baseline. */
struct stream_impl {
	const char *impl;
	int batch;
	int transport;
	bool baseline;
	double v[64];
	int n;
	int rc;
};

static int
stream_once(const struct mpb_opts *o, struct stream_impl *im, size_t size,
	    int np, int nc, double *v)
{
	if (im->transport < 0)
		return queue_stream(size, np, nc, im->batch, mpb_duration(o),
				    v);
	return mpb_base_stream((enum mpb_transport)im->transport, size, np,
			       nc, mpb_duration(o), v);
}

/*
 * A stream group: every implementation once per round, round after round,
 * so that the host moving our vCPUs (which changes a cache-line transfer
 * several times over, see DESIGN.md) hits every row alike; measuring one
 * row's repeats back to back made the ratios swing from 0.3x to 1.9x.
 */
static int
stream_rows(const struct mpb_opts *o, size_t size, int np, int nc)
{
	struct stream_impl im[] = {
		{ "mproc", 1, -1, false, { 0 }, 0, 0 },
		{ "mproc batch 32", BATCH, -1, false, { 0 }, 0, 0 },
		{ NULL, 1, MPB_T_PIPE, false, { 0 }, 0, 0 },
		{ NULL, 1, MPB_T_UNIX_STREAM, false, { 0 }, 0, 0 },
		{ NULL, 1, MPB_T_POSIX_MQ, false, { 0 }, 0, 0 },
		{ NULL, 1, MPB_T_VYUKOV, true, { 0 }, 0, 0 },
	};
	size_t ni = sizeof(im) / sizeof(im[0]);
	char name[64];

	snprintf(name, sizeof(name), "stream %dP%dC", np, nc);
	for (size_t i = 0; i < ni; i++) {
		if (im[i].impl == NULL)
			im[i].impl = mpb_transport_name(
				(enum mpb_transport)im[i].transport);
	}
	for (int r = 0; r < o->repeat && r < 64; r++) {
		for (size_t i = 0; i < ni; i++) {
			if (im[i].rc < 0)
				continue;
			mpb_progress("queue: %s %s %zu B, %d/%d", name,
				     im[i].impl, size, r + 1, o->repeat);
			im[i].rc = stream_once(o, &im[i], size, np, nc,
					       &im[i].v[im[i].n]);
			if (im[i].rc == 0)
				im[i].n++;
		}
	}
	for (size_t i = 0; i < ni; i++) {
		if (im[i].rc == -ENOTSUP)
			continue;
		if (im[i].rc < 0)
			return im[i].rc;
		struct mpb_row row = { .higher_better = true,
				       .baseline = im[i].baseline };
		snprintf(row.name, sizeof(row.name), "%s", name);
		snprintf(row.impl, sizeof(row.impl), "%s", im[i].impl);
		row.size = size;
		row.ops = mpb_summary(im[i].v, im[i].n, &row.spread);
		row.mbps = row.ops * (double)size / 1e6;
		row.ns_op = 1e9 / row.ops;
		mpb_report(&row);
	}
	return 0;
}

/* ---- One-way latency. ---- */

struct stamp {
	int64_t t;
};

static int
paced_producer(mp_queue *q, size_t size, int64_t gap, bool nap,
	       const uint32_t *stop)
{
	char *buf = calloc(1, size);
	struct stamp s;

	if (buf == NULL)
		return 1;
	/*
	 * Messages leave on a fixed schedule and carry the time they were
	 * meant to leave, not the time they did: a stall of the producer or
	 * of the queue then shows up in the latency of every message it
	 * delayed (no coordinated omission).  A producer behind schedule
	 * sends at once until it has caught up.
	 */
	int64_t next = mpb_now();
	while (!__atomic_load_n(stop, __ATOMIC_RELAXED)) {
		next += gap;
		wait_until(next, nap);
		s.t = next;
		memcpy(buf, &s, sizeof(s));
		if (mp_queue_put(q, buf, size, MP_FOREVER) < 0)
			break;
	}
	free(buf);
	return 0;
}

/* One consumer records arrival - stamp into h for dur ns. */
static int
one_way(size_t size, int64_t gap, bool nap, int64_t dur, struct mpb_hist *h)
{
	struct ctl *c;
	mp_queue *q;
	char *buf;
	pid_t pid;
	int rc = 0;

	if (size < sizeof(struct stamp))
		size = sizeof(struct stamp);
	if ((buf = malloc(size)) == NULL)
		return -ENOMEM;
	if ((c = mp_shm_alloc(sizeof(*c))) == NULL) {
		free(buf);
		return -ENOMEM;
	}
	if ((rc = mp_queue_new(&q, RING, size)) < 0)
		goto out;
	fflush(NULL);
	if ((pid = fork()) < 0) {
		rc = -errno;
		goto out_q;
	}
	if (pid == 0) {
		mpb_pin(1, NULL);
		_exit(paced_producer(q, size, gap, nap, &c->stop));
	}
	cpu_set_t old;
	bool pinned = mpb_pin(0, &old);
	int64_t end = mpb_now() + dur, warm = mpb_now() + dur / 10;
	for (;;) {
		struct stamp s;
		if (mp_queue_get(q, buf, size, MP_FOREVER) < 0) {
			rc = -EPIPE;
			break;
		}
		int64_t now = mpb_now();
		memcpy(&s, buf, sizeof(s));
		if (now >= warm)
			mpb_hist_add(h, (uint64_t)(now - s.t));
		if (now >= end)
			break;
	}
	if (pinned)
		sched_setaffinity(0, sizeof(old), &old);
	__atomic_store_n(&c->stop, 1, __ATOMIC_RELEASE);
	mp_queue_close(q);
	if (reap(&pid, 1) < 0 && rc == 0)
		rc = -ECHILD;
out_q:
	mp_queue_free(q);
out:
	mp_shm_free(c);
	free(buf);
	return rc;
}

/* ---- The raw futex one-way handoff, paced as one_way(). ---- */

struct fx {
	uint32_t seq;
	uint32_t stop;
	int64_t stamp;
};

static long
fx_futex(uint32_t *w, int op, uint32_t val)
{
	return syscall(SYS_futex, w, op, val, NULL, NULL, 0);
}

static int
fx_producer(struct fx *f, int64_t gap)
{
	int64_t next = mpb_now();

	/* The same schedule and intended-time stamps as paced_producer(). */
	while (!__atomic_load_n(&f->stop, __ATOMIC_RELAXED)) {
		next += gap;
		wait_until(next, true);
		__atomic_store_n(&f->stamp, next, __ATOMIC_RELAXED);
		__atomic_fetch_add(&f->seq, 1, __ATOMIC_RELEASE);
		fx_futex(&f->seq, FUTEX_WAKE, INT_MAX);
	}
	return 0;
}

static int
futex_one_way(int64_t gap, int64_t dur, struct mpb_hist *h)
{
	struct fx *f = mp_shm_alloc(sizeof(*f));
	pid_t pid;
	int rc = 0;

	if (f == NULL)
		return -ENOMEM;
	fflush(NULL);
	if ((pid = fork()) < 0) {
		mp_shm_free(f);
		return -errno;
	}
	if (pid == 0) {
		mpb_pin(1, NULL);
		_exit(fx_producer(f, gap));
	}
	cpu_set_t old;
	bool pinned = mpb_pin(0, &old);
	int64_t end = mpb_now() + dur, warm = mpb_now() + dur / 10;
	uint32_t v = __atomic_load_n(&f->seq, __ATOMIC_ACQUIRE);
	for (;;) {
		while (__atomic_load_n(&f->seq, __ATOMIC_ACQUIRE) == v)
			fx_futex(&f->seq, FUTEX_WAIT, v);
		int64_t now = mpb_now();
		v = __atomic_load_n(&f->seq, __ATOMIC_ACQUIRE);
		if (now >= warm)
			mpb_hist_add(h, (uint64_t)(now - __atomic_load_n(
					&f->stamp, __ATOMIC_RELAXED)));
		if (now >= end)
			break;
	}
	if (pinned)
		sched_setaffinity(0, sizeof(old), &old);
	__atomic_store_n(&f->stop, 1, __ATOMIC_RELEASE);
	if (reap(&pid, 1) < 0)
		rc = -ECHILD;
	mp_shm_free(f);
	return rc;
}

static int
latency_rows(const struct mpb_opts *o, size_t size)
{
	struct mpb_hist *h = malloc(sizeof(*h));
	static const struct {
		const char *name;
		int64_t gap;
		bool nap;
	} kinds[] = {
		{ "one-way busy", 2000, false },
		{ "one-way sleeping", 300000, true },
	};
	int rc = 0;

	if (h == NULL)
		return -ENOMEM;
	for (size_t k = 0; k < 2 && rc == 0; k++) {
		double v[64];
		int n = 0;

		mpb_hist_init(h);
		for (int r = 0; r < o->repeat && r < 64 && rc == 0; r++) {
			mpb_progress("queue: %s %zu B, %d/%d", kinds[k].name,
				     size, r + 1, o->repeat);
			rc = one_way(size, kinds[k].gap, kinds[k].nap,
				     mpb_duration(o), h);
			v[n++] = mpb_hist_pct(h, 50);
		}
		if (rc < 0)
			break;
		struct mpb_row row = { .higher_better = false };
		snprintf(row.name, sizeof(row.name), "%s", kinds[k].name);
		snprintf(row.impl, sizeof(row.impl), "mproc");
		row.size = size;
		row.ns_op = mpb_summary(v, n, &row.spread);
		row.ops = 1e9 / row.ns_op;
		mpb_hist_lat(h, &row.lat);
		mpb_report(&row);
		if (!kinds[k].nap)
			continue;
		/* The raw futex handoff, paced the same way. */
		n = 0;
		mpb_hist_init(h);
		for (int r = 0; r < o->repeat && r < 64 && rc == 0; r++) {
			mpb_progress("queue: %s futex, %d/%d", kinds[k].name,
				     r + 1, o->repeat);
			rc = futex_one_way(kinds[k].gap, mpb_duration(o), h);
			v[n++] = mpb_hist_pct(h, 50);
		}
		if (rc < 0)
			break;
		struct mpb_row f = { .higher_better = false, .baseline = true };
		snprintf(f.name, sizeof(f.name), "%s", kinds[k].name);
		snprintf(f.impl, sizeof(f.impl), "raw futex");
		f.size = size;
		f.ns_op = mpb_summary(v, n, &f.spread);
		f.ops = 1e9 / f.ns_op;
		mpb_hist_lat(h, &f.lat);
		mpb_report(&f);
	}
	free(h);
	return rc;
}

/* ---- Ping-pong over two queues. ---- */

static int
echo(mp_queue *in, mp_queue *out, size_t size)
{
	char *buf = malloc(size);

	if (buf == NULL)
		return 1;
	while (mp_queue_get(in, buf, size, MP_FOREVER) >= 0) {
		if (mp_queue_put(out, buf, size, MP_FOREVER) < 0)
			break;
	}
	free(buf);
	return 0;
}

static int
pingpong(size_t size, int64_t dur, struct mpb_hist *h, double *rtt)
{
	mp_queue *a, *b;
	char *buf;
	pid_t pid;
	int rc;

	if ((buf = calloc(1, size)) == NULL)
		return -ENOMEM;
	if ((rc = mp_queue_new(&a, 16, size)) < 0)
		goto out;
	if ((rc = mp_queue_new(&b, 16, size)) < 0)
		goto out_a;
	fflush(NULL);
	if ((pid = fork()) < 0) {
		rc = -errno;
		goto out_b;
	}
	if (pid == 0)
		_exit(echo(a, b, size));
	int64_t start = mpb_now(), t = start, n = 0;
	do {
		int64_t t0 = t;
		if (mp_queue_put(a, buf, size, MP_FOREVER) < 0 ||
		    mp_queue_get(b, buf, size, MP_FOREVER) < 0) {
			rc = -EPIPE;
			break;
		}
		t = mpb_now();
		mpb_hist_add(h, (uint64_t)(t - t0));
		n++;
	} while (t - start < dur);
	*rtt = (double)(t - start) / (double)(n ? n : 1);
	mp_queue_close(a);
	if (reap(&pid, 1) < 0 && rc == 0)
		rc = -ECHILD;
out_b:
	mp_queue_free(b);
out_a:
	mp_queue_free(a);
out:
	free(buf);
	return rc;
}

static int
pingpong_rows(const struct mpb_opts *o, size_t size)
{
	static const int impls[] = { -1, MPB_T_PIPE, MPB_T_FUTEX,
				     MPB_T_VYUKOV };
	struct mpb_hist *h = malloc(sizeof(*h));
	int rc = 0;

	if (h == NULL)
		return -ENOMEM;
	for (size_t i = 0; i < sizeof(impls) / sizeof(impls[0]); i++) {
		double v[64];
		int n = 0;

		mpb_hist_init(h);
		for (int r = 0; r < o->repeat && r < 64; r++) {
			mpb_progress("queue: ping-pong %zu B, %d/%d", size,
				     r + 1, o->repeat);
			rc = impls[i] < 0 ?
				pingpong(size, mpb_duration(o), h, &v[n]) :
				mpb_base_pingpong((enum mpb_transport)impls[i],
						  size, mpb_duration(o), h,
						  &v[n]);
			if (rc < 0)
				break;
			n++;
		}
		if (rc == -ENOTSUP) {
			rc = 0;
			continue;
		}
		if (rc < 0)
			break;
		struct mpb_row row = { .baseline = impls[i] == MPB_T_PIPE };
		snprintf(row.name, sizeof(row.name), "ping-pong");
		snprintf(row.impl, sizeof(row.impl), "%s", impls[i] < 0 ?
			 "mproc" :
			 mpb_transport_name((enum mpb_transport)impls[i]));
		row.size = size;
		row.ns_op = mpb_summary(v, n, &row.spread);
		row.ops = 1e9 / row.ns_op;
		mpb_hist_lat(h, &row.lat);
		mpb_report(&row);
	}
	free(h);
	return rc;
}

static int
run(const struct mpb_opts *o)
{
	static const int configs[][2] = { { 1, 1 }, { 2, 2 }, { 1, 2 },
					  { 2, 1 } };
	size_t sizes[MPB_MAX_SIZES];
	int ns = mpb_sizes(o, default_sizes, 3, sizes), rc;
	bool one = o->producers > 0 || o->consumers > 0;

	for (int i = 0; i < ns; i++) {
		for (size_t k = 0; k < (one ? 1 : 4); k++) {
			int np = one ? (o->producers ? o->producers : 1) :
				       configs[k][0];
			int nc = one ? (o->consumers ? o->consumers : 1) :
				       configs[k][1];
			if (np > MAXP || nc > MAXP)
				return -EINVAL;
			if ((rc = stream_rows(o, sizes[i], np, nc)) < 0)
				return rc;
		}
	}
	for (int i = 0; i < ns; i++) {
		if ((rc = latency_rows(o, sizes[i])) < 0)
			return rc;
		if ((rc = pingpong_rows(o, sizes[i])) < 0)
			return rc;
	}
	return 0;
}

MPB_SUITE(queue, "Queue: streaming PxC, one-way latency, ping-pong, "
		 "beside pipe(2), sockets, POSIX mq, futex and a bare ring",
	  run)
