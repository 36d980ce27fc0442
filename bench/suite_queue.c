/* SPDX-License-Identifier: MIT */
/*
 * queue: mp_queue beside what one would use instead, in the same run.
 *
 *  - "stream PpCc": P producer and C consumer processes stream size-byte
 *    messages as fast as they can (consumers busy); msgs/s and MB/s for
 *    mp_queue_put/get, for put_many/get_many in batches of 32, and for
 *    pipe(2), an AF_UNIX stream socketpair, a POSIX mq and the bare
 *    Vyukov ring of bench/baseline.c (the group's baseline).  For one
 *    size, every configuration (1P1C, 2P2C, 1P2C, 2P1C) and every
 *    implementation is measured once a round, round after round, and a
 *    row's ratio is the median of its rounds' ratios to the ring of the
 *    same round: the host moves our vCPUs between states in which the
 *    bare ring runs 44 M or 120-170 M msgs/s, for seconds to minutes, so
 *    only figures measured back to back may be divided.
 *  - "scaling 2P2C/1P1C": the goal "2P2C no worse than 0.5x the
 *    1P1C rate", answered within each round: per implementation (mproc,
 *    batched, the ring for reference) its 2P2C rate, and as ratio the
 *    median of the rounds' 2P2C rate / 1P1C rate.
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
#include <math.h>
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

/* ---- The stream groups, interleaved. ---- */

#define MAXR 64			/* rounds */
#define MAXCFG 4		/* PxC configurations */

/* The implementations of a stream group, in the order of its rows. */
static const struct stream_impl {
	const char *impl;	/* NULL: the transport's name */
	int batch;
	int transport;		/* -1: mp_queue */
	bool baseline;
} simpls[] = {
	{ "mproc", 1, -1, false },
	{ "mproc batch 32", BATCH, -1, false },
	{ NULL, 1, MPB_T_PIPE, false },
	{ NULL, 1, MPB_T_UNIX_STREAM, false },
	{ NULL, 1, MPB_T_POSIX_MQ, false },
	{ NULL, 1, MPB_T_VYUKOV, true },
};
#define NIMPL ((int)(sizeof(simpls) / sizeof(simpls[0])))
enum { I_MPROC, I_BATCH, I_PIPE, I_UNIX, I_MQ, I_RING };

/* One implementation in one configuration: its rate in each round. */
struct cell {
	double v[MAXR];		/* NAN: not measured in that round */
	int rc;
};

struct streams {
	size_t size;
	int ncfg, rounds;
	int np[MAXCFG], nc[MAXCFG];
	struct cell cell[MAXCFG][NIMPL];
};

static const char *
impl_name(int i)
{
	return simpls[i].impl ? simpls[i].impl :
	       mpb_transport_name((enum mpb_transport)simpls[i].transport);
}

static void
stream_once(const struct mpb_opts *o, struct streams *s, int k, int i,
	    int r)
{
	struct cell *c = &s->cell[k][i];
	double v;

	if (c->rc < 0)
		return;		/* failed or unsupported: not again */
	mpb_progress("queue: stream %dP%dC %s %zu B, round %d/%d", s->np[k],
		     s->nc[k], impl_name(i), s->size, r + 1, s->rounds);
	if (simpls[i].transport < 0)
		c->rc = queue_stream(s->size, s->np[k], s->nc[k],
				     simpls[i].batch, mpb_duration(o), &v);
	else
		c->rc = mpb_base_stream((enum mpb_transport)simpls[i].transport,
					s->size, s->np[k], s->nc[k],
					mpb_duration(o), &v);
	if (c->rc == 0)
		c->v[r] = v;
}

/*
 * Every configuration, every implementation, once a round.  A round's
 * order: per configuration the ring, mproc and mproc batched back to back
 * (the pairs whose ratios the rows report), then the kernel's mechanisms.
 * Odd rounds run it backwards, so that neither side of a ratio always
 * goes first while the host drifts.
 */
static void
stream_rounds(const struct mpb_opts *o, struct streams *s)
{
	static const int ours[] = { I_RING, I_MPROC, I_BATCH };
	static const int kernel[] = { I_PIPE, I_UNIX, I_MQ };
	int steps[MAXCFG * NIMPL][2], n = 0;

	for (int k = 0; k < s->ncfg; k++) {
		for (int m = 0; m < 3; m++) {
			steps[n][0] = k;
			steps[n++][1] = ours[m];
		}
	}
	for (int k = 0; k < s->ncfg; k++) {
		for (int m = 0; m < 3; m++) {
			steps[n][0] = k;
			steps[n++][1] = kernel[m];
		}
	}
	for (int k = 0; k < s->ncfg; k++) {
		for (int i = 0; i < NIMPL; i++) {
			s->cell[k][i].rc = 0;
			for (int r = 0; r < MAXR; r++)
				s->cell[k][i].v[r] = NAN;
		}
	}
	for (int r = 0; r < s->rounds; r++) {
		for (int j = 0; j < n; j++) {
			int x = r % 2 ? n - 1 - j : j;
			stream_once(o, s, steps[x][0], steps[x][1], r);
		}
	}
}

/* The median (and spread) of the rounds a cell was measured in. */
static int
cell_rate(const struct cell *c, int rounds, double *rate, double *spread)
{
	double v[MAXR];
	int n = 0;

	for (int r = 0; r < rounds; r++) {
		if (!isnan(c->v[r]))
			v[n++] = c->v[r];
	}
	*rate = mpb_summary(v, n, spread);
	return n;
}

/* The median, min and max of a[r] / b[r] over the rounds with both. */
static void
round_ratios(const struct cell *a, const struct cell *b, int rounds,
	     struct mpb_row *row)
{
	double q[MAXR];
	int n = 0;

	for (int r = 0; r < rounds; r++) {
		if (!isnan(a->v[r]) && !isnan(b->v[r]) && b->v[r] > 0)
			q[n++] = a->v[r] / b->v[r];
	}
	if (n == 0)
		return;		/* the harness falls back to the medians */
	row->ratio_rounds = mpb_median(q, n);
	row->ratio_min = q[0];
	row->ratio_max = q[n - 1];
}

static void
rate_row(struct mpb_row *row, const char *name, int i, size_t size,
	 double rate, double spread)
{
	row->higher_better = true;
	snprintf(row->name, sizeof(row->name), "%s", name);
	snprintf(row->impl, sizeof(row->impl), "%s", impl_name(i));
	row->size = size;
	row->ops = rate;
	row->spread = spread;
	row->mbps = rate * (double)size / 1e6;
	row->ns_op = 1e9 / rate;
}

static int
find_cfg(const struct streams *s, int np, int nc)
{
	for (int k = 0; k < s->ncfg; k++) {
		if (s->np[k] == np && s->nc[k] == nc)
			return k;
	}
	return -1;
}

/*
 * The rows of every configuration's group, each row's ratio the median
 * of its rounds' ratios to the ring of the same round; then, when 1P1C
 * and 2P2C both ran, the "scaling 2P2C/1P1C" group: per implementation
 * its 2P2C rate, and as ratio the median of the rounds' 2P2C / 1P1C.
 */
static int
stream_report(const struct streams *s)
{
	int rc = 0;

	for (int k = 0; k < s->ncfg; k++) {
		const struct cell *base = &s->cell[k][I_RING];
		char name[64];

		snprintf(name, sizeof(name), "stream %dP%dC", s->np[k],
			 s->nc[k]);
		for (int i = 0; i < NIMPL; i++) {
			const struct cell *c = &s->cell[k][i];
			struct mpb_row row = { .baseline = simpls[i].baseline };
			double rate, spread;

			if (c->rc == -ENOTSUP)
				continue;
			if (c->rc < 0 && rc == 0)
				rc = c->rc;
			if (c->rc < 0 ||
			    cell_rate(c, s->rounds, &rate, &spread) == 0)
				continue;
			rate_row(&row, name, i, s->size, rate, spread);
			if (!simpls[i].baseline && base->rc == 0)
				round_ratios(c, base, s->rounds, &row);
			mpb_report(&row);
		}
	}
	int one = find_cfg(s, 1, 1), two = find_cfg(s, 2, 2);
	static const int scaled[] = { I_MPROC, I_BATCH, I_RING };
	for (size_t m = 0; one >= 0 && two >= 0 && m < 3; m++) {
		const struct cell *c1 = &s->cell[one][scaled[m]];
		const struct cell *c2 = &s->cell[two][scaled[m]];
		struct mpb_row row = { .baseline = false };
		double rate, spread;

		if (c1->rc < 0 || c2->rc < 0 ||
		    cell_rate(c2, s->rounds, &rate, &spread) == 0)
			continue;
		rate_row(&row, "scaling 2P2C/1P1C", scaled[m], s->size, rate,
			 spread);
		round_ratios(c2, c1, s->rounds, &row);
		mpb_report(&row);
	}
	return rc;
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
	struct streams *s = malloc(sizeof(*s));

	if (s == NULL)
		return -ENOMEM;
	s->ncfg = one ? 1 : MAXCFG;
	s->rounds = o->repeat < MAXR ? o->repeat : MAXR;
	for (int k = 0; k < s->ncfg; k++) {
		s->np[k] = one ? (o->producers ? o->producers : 1) :
				 configs[k][0];
		s->nc[k] = one ? (o->consumers ? o->consumers : 1) :
				 configs[k][1];
		if (s->np[k] > MAXP || s->nc[k] > MAXP) {
			free(s);
			return -EINVAL;
		}
	}
	for (int i = 0; i < ns; i++) {
		s->size = sizes[i];
		stream_rounds(o, s);
		if ((rc = stream_report(s)) < 0) {
			free(s);
			return rc;
		}
	}
	free(s);
	for (int i = 0; i < ns; i++) {
		if ((rc = latency_rows(o, sizes[i])) < 0)
			return rc;
		if ((rc = pingpong_rows(o, sizes[i])) < 0)
			return rc;
	}
	return 0;
}

MPB_SUITE(queue, "Queue: streaming PxC (ratios per round), 2P2C/1P1C "
		 "scaling, one-way latency, ping-pong, beside pipe(2), "
		 "sockets, POSIX mq, futex and a bare ring",
	  run)
