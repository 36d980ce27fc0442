/* SPDX-License-Identifier: MIT */
/*
 * pipe: mp_pipe against pipe(2), AF_UNIX stream sockets, the raw futex
 * handoff and the shared-memory spin ping-pong, in the same run.
 *
 *  - "ping-pong busy": two processes bounce a message over a duplex pipe;
 *    each round trip is timed (the harness is one side).  Baseline: the
 *    spin ping-pong, the hardware limit.
 *  - "ping-pong asleep": the same, but each side thinks (busy-waits) 10 us
 *    before it sends, so that the other has given up spinning and sleeps
 *    in the kernel: both hops of a round trip are sleeping handoffs.  The
 *    replier's think time is subtracted.  Baseline: the raw futex
 *    ping-pong, which sleeps on every hop.
 *  - "stream 1P1C": a producer process sends size-byte messages as fast as
 *    it can, a consumer process receives them; the rate is read from the
 *    consumer's counter after a warm-up of a tenth of the duration, as the
 *    baselines do.  Baseline: pipe(2); memcpy of the same size is the copy
 *    limit (two copies a message here, one for pipe(2) user space too).
 */
#include "config.h"

#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <mproc.h>

#include "bench/baseline.h"
#include "bench/mpbench.h"

#define THINK_NS 10000

static const size_t stream_sizes[] = { 8, 64, 1024, 65536, 16u << 20 };
static const size_t pp_sizes[] = { 8, 64 };

struct ctl {
	uint32_t go;
	uint32_t stop;
	uint64_t bytes __attribute__((aligned(64)));
	uint64_t think_ns __attribute__((aligned(64)));
};

static void
busy_until(int64_t t)
{
	while (mpb_now() < t)
		;
}

static int
reap(pid_t pid)
{
	int st;

	while (waitpid(pid, &st, 0) < 0) {
		if (errno != EINTR)
			return -errno;
	}
	return WIFEXITED(st) && WEXITSTATUS(st) == 0 ? 0 : -ECHILD;
}

static void
nap(int64_t ns)
{
	struct timespec ts = { ns / 1000000000, ns % 1000000000 };

	while (nanosleep(&ts, &ts) < 0 && errno == EINTR)
		;
}

/* ---- Ping-pong. ---- */

static int
echo(mp_conn *mine, mp_conn *other, size_t size, bool think)
{
	char *buf = malloc(size ? size : 1);
	ssize_t n;

	mp_conn_close(other);
	if (buf == NULL)
		return 1;
	while ((n = mp_conn_recv(mine, buf, size)) >= 0) {
		if (think)
			busy_until(mpb_now() + THINK_NS);
		if (mp_conn_send(mine, buf, (size_t)n) < 0)
			break;
	}
	free(buf);
	return n == -EPIPE ? 0 : 1;
}

static int
pingpong(size_t size, bool think, int64_t dur, struct mpb_hist *h,
	 double *rtt)
{
	mp_conn *a, *b;
	char *buf;
	int rc;
	pid_t pid;

	if ((buf = calloc(1, size ? size : 1)) == NULL)
		return -ENOMEM;
	if ((rc = mp_pipe(&a, &b, true)) < 0)
		goto out_buf;
	fflush(NULL);
	if ((pid = fork()) < 0) {
		rc = -errno;
		mp_conn_close(a);
		mp_conn_close(b);
		goto out_buf;
	}
	if (pid == 0) {
		mpb_pin(1, NULL);	/* as the baselines' ping-pong */
		_exit(echo(b, a, size, think));
	}
	cpu_set_t old_mask;
	bool pinned = mpb_pin(0, &old_mask);
	mp_conn_close(b);
	int64_t start = mpb_now(), now = start, sum = 0;
	uint64_t n = 0;
	do {
		if (think)
			busy_until(now + THINK_NS);
		int64_t t0 = mpb_now();
		if ((rc = mp_conn_send(a, buf, size)) < 0)
			break;
		ssize_t got = mp_conn_recv(a, buf, size);
		if (got < 0) {
			rc = (int)got;
			break;
		}
		now = mpb_now();
		int64_t d = now - t0 - (think ? THINK_NS : 0);
		if (d < 0)
			d = 0;
		mpb_hist_add(h, (uint64_t)d);
		sum += d;
		n++;
	} while (now - start < dur);
	*rtt = n ? (double)sum / (double)n : 0;
	mp_conn_close(a);
	if (pinned)
		sched_setaffinity(0, sizeof(old_mask), &old_mask);
	int r2 = reap(pid);
	if (rc == 0)
		rc = r2;
out_buf:
	free(buf);
	return rc;
}

/* One group of ping-pong rows: mproc and the given baselines. */
static int
pingpong_rows(const struct mpb_opts *o, size_t size, bool think)
{
	static const enum mpb_transport busy[] = {
		MPB_T_SPIN, MPB_T_FUTEX, MPB_T_PIPE, MPB_T_UNIX_STREAM,
	};
	static const enum mpb_transport asleep[] = { MPB_T_FUTEX };
	const enum mpb_transport *ts = think ? asleep : busy;
	int nt = think ? 1 : 4;
	const char *name = think ? "ping-pong asleep" : "ping-pong busy";
	struct mpb_hist *h = malloc(sizeof(*h) * (size_t)(nt + 1));
	double v[5][64];
	int n[5] = { 0 }, rc = 0;

	if (h == NULL)
		return -ENOMEM;
	for (int i = 0; i <= nt; i++)
		mpb_hist_init(&h[i]);
	/* Interleave mproc and the baselines so drift hits them alike. */
	for (int r = 0; r < o->repeat && r < 64 && rc == 0; r++) {
		for (int i = 0; i <= nt && rc == 0; i++) {
			mpb_progress("pipe: %s %zu B %s, %d/%d", name, size,
				     i == 0 ? "mproc" :
				     mpb_transport_name(ts[i - 1]), r + 1,
				     o->repeat);
			if (i == 0)
				rc = pingpong(size, think, mpb_duration(o),
					      &h[0], &v[0][n[0]]);
			else
				rc = mpb_base_pingpong(ts[i - 1], size,
						       mpb_duration(o), &h[i],
						       &v[i][n[i]]);
			if (rc == -ENOTSUP) {
				rc = 0;
				continue;
			}
			if (rc == 0)
				n[i]++;
		}
	}
	for (int i = 0; i <= nt && rc == 0; i++) {
		if (n[i] == 0)
			continue;
		struct mpb_row row = { .baseline = i == 1 };
		snprintf(row.name, sizeof(row.name), "%s", name);
		snprintf(row.impl, sizeof(row.impl), "%s",
			 i == 0 ? "mproc" : mpb_transport_name(ts[i - 1]));
		row.size = size;
		row.ns_op = mpb_summary(v[i], n[i], &row.spread);
		row.ops = 1e9 / row.ns_op;
		mpb_hist_lat(&h[i], &row.lat);
		mpb_report(&row);
	}
	free(h);
	return rc;
}

/* ---- Streaming. ---- */

static int
producer(struct ctl *ctl, mp_conn *w, mp_conn *r, size_t size)
{
	char *buf = calloc(1, size);

	mp_conn_close(r);
	if (buf == NULL)
		return 1;
	while (__atomic_load_n(&ctl->go, __ATOMIC_ACQUIRE) == 0)
		nap(100000);
	while (!__atomic_load_n(&ctl->stop, __ATOMIC_RELAXED)) {
		if (mp_conn_send(w, buf, size) < 0)
			break;
	}
	free(buf);
	mp_conn_close(w);
	return 0;
}

static int
consumer(struct ctl *ctl, mp_conn *r, mp_conn *w, size_t size)
{
	char *buf = malloc(size);
	uint64_t bytes = 0;
	unsigned n = 0;
	ssize_t got;

	mp_conn_close(w);
	if (buf == NULL)
		return 1;
	while ((got = mp_conn_recv(r, buf, size)) >= 0) {
		bytes += (uint64_t)got;
		if ((++n & 15) == 0 || size >= 65536)
			__atomic_store_n(&ctl->bytes, bytes, __ATOMIC_RELAXED);
	}
	__atomic_store_n(&ctl->bytes, bytes, __ATOMIC_RELAXED);
	free(buf);
	mp_conn_close(r);
	return got == -EPIPE ? 0 : 1;
}

static int
stream(size_t size, int64_t dur, double *msgs_per_s)
{
	struct ctl *ctl = mp_shm_alloc(sizeof(*ctl));
	mp_conn *r, *w;
	pid_t pp = -1, pc;
	int rc;

	if (ctl == NULL)
		return -ENOMEM;
	if ((rc = mp_pipe(&r, &w, false)) < 0)
		goto out;
	fflush(NULL);
	if ((pc = fork()) == 0)
		_exit(consumer(ctl, r, w, size));
	if (pc > 0 && (pp = fork()) == 0)
		_exit(producer(ctl, w, r, size));
	mp_conn_close(r);
	mp_conn_close(w);
	if (pc < 0 || pp < 0) {
		rc = -errno;
		__atomic_store_n(&ctl->stop, 1, __ATOMIC_RELEASE);
		__atomic_store_n(&ctl->go, 1, __ATOMIC_RELEASE);
		if (pc > 0)
			reap(pc);
		goto out;
	}
	__atomic_store_n(&ctl->go, 1, __ATOMIC_RELEASE);
	nap(dur / 10);
	uint64_t b0 = __atomic_load_n(&ctl->bytes, __ATOMIC_RELAXED);
	int64_t t0 = mpb_now();
	nap(dur);
	uint64_t b1 = __atomic_load_n(&ctl->bytes, __ATOMIC_RELAXED);
	/* A window too short to see the counter move (--quick) grows. */
	for (int i = 0; b1 == b0 && i < 100; i++) {
		nap(dur > MP_MSEC(10) ? dur : MP_MSEC(10));
		b1 = __atomic_load_n(&ctl->bytes, __ATOMIC_RELAXED);
	}
	int64_t t1 = mpb_now();
	*msgs_per_s = (double)(b1 - b0) / (double)size /
		      ((double)(t1 - t0) / 1e9);
	__atomic_store_n(&ctl->stop, 1, __ATOMIC_RELEASE);
	rc = reap(pp);
	int r2 = reap(pc);
	if (rc == 0)
		rc = r2;
out:
	mp_shm_free(ctl);
	return rc;
}

static int
stream_rows(const struct mpb_opts *o, size_t size)
{
	static const enum mpb_transport ts[] = { MPB_T_PIPE,
						 MPB_T_UNIX_STREAM };
	enum { NT = 2 };
	double v[NT + 2][64];
	int n[NT + 2] = { 0 }, rc = 0;
	bool with_memcpy = size >= 65536;

	for (int r = 0; r < o->repeat && r < 64 && rc == 0; r++) {
		for (int i = 0; i <= NT && rc == 0; i++) {
			mpb_progress("pipe: stream %zu B %s, %d/%d", size,
				     i == 0 ? "mproc" :
				     mpb_transport_name(ts[i - 1]), r + 1,
				     o->repeat);
			if (i == 0)
				rc = stream(size, mpb_duration(o), &v[0][n[0]]);
			else
				rc = mpb_base_stream(ts[i - 1], size, 1, 1,
						     mpb_duration(o),
						     &v[i][n[i]]);
			if (rc == -ENOTSUP) {
				rc = 0;
				continue;
			}
			/* A rate of 0 is a window too short, not a speed. */
			if (rc == 0 && v[i][n[i]] > 0)
				n[i]++;
		}
		if (with_memcpy && rc == 0) {
			double bps = mpb_base_memcpy(size, mpb_duration(o) / 4);
			v[NT + 1][n[NT + 1]++] = bps / (double)size;
		}
	}
	for (int i = 0; i <= NT + 1 && rc == 0; i++) {
		if (n[i] == 0)
			continue;
		struct mpb_row row = { .higher_better = true,
				       .baseline = i == 1 };
		snprintf(row.name, sizeof(row.name), "stream 1P1C");
		snprintf(row.impl, sizeof(row.impl), "%s",
			 i == 0 ? "mproc" : i <= NT ?
			 mpb_transport_name(ts[i - 1]) : "memcpy");
		row.size = size;
		row.ops = mpb_summary(v[i], n[i], &row.spread);
		row.mbps = row.ops * (double)size / 1e6;
		row.ns_op = 1e9 / row.ops;
		mpb_report(&row);
	}
	return rc;
}

static int
run(const struct mpb_opts *o)
{
	size_t sizes[MPB_MAX_SIZES];
	int ns, rc;

	signal(SIGPIPE, SIG_IGN);
	ns = mpb_sizes(o, pp_sizes, 2, sizes);
	for (int i = 0; i < ns; i++) {
		if (sizes[i] > 65536)
			continue;
		if ((rc = pingpong_rows(o, sizes[i], false)) < 0)
			return rc;
		if ((rc = pingpong_rows(o, sizes[i], true)) < 0)
			return rc;
	}
	ns = mpb_sizes(o, stream_sizes, 5, sizes);
	for (int i = 0; i < ns; i++) {
		if ((rc = stream_rows(o, sizes[i])) < 0)
			return rc;
	}
	return 0;
}

MPB_SUITE(pipe,
	  "mp_pipe ping-pong (busy, asleep) and 1P1C streaming vs pipe(2), "
	  "AF_UNIX, futex, spin, memcpy",
	  run)
