/* SPDX-License-Identifier: MIT */
/*
 * pool: what a task costs through mp_pool, beside the other ways to farm
 * trivial tasks out to processes, in the same run:
 *   - "pipe pool": a plain pool written here, two workers fed chunks over
 *     pipe(2) (request pipe in, result pipe out), two chunks in flight each;
 *   - "fork/task": one fork + pipe + waitpid per task;
 *   - "python Pool(2)": bench/python/pool_bench.py, the same workloads on
 *     multiprocessing.Pool(2), when python3 is on PATH.  It is run once per
 *     suite run (not per repeat) and its rows carry no spread.
 * Workloads (the task adds one to a long): map of 1,000,000 items with the
 * default chunksize and with chunksize 1, apply_async throughput (submit
 * many, then get each), and the apply round trip (one at a time).  Rows are
 * tasks/s with ns a task (throughput rows) or round-trip latency.  The
 * pipe pool is each group's baseline.
 */
#include "config.h"

#include <errno.h>
#include <limits.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include <mproc.h>

#include "bench/mpbench.h"

#define WORKERS 2
#define MAXREP 64

static ssize_t
inc(const void *in, size_t len, void *out, size_t cap)
{
	long v;

	(void)len;
	(void)cap;
	memcpy(&v, in, sizeof(v));
	v++;
	memcpy(out, &v, sizeof(v));
	return sizeof(v);
}

/* ------------------------------------------------------------------ */
/* The pipe pool baseline */

struct ppool {
	pid_t pid[WORKERS];
	int req[WORKERS], res[WORKERS];	/* parent's ends */
};

#define PP_CHUNK_MAX 4096	/* items: 32 KiB, so writes never block */

static int
full_io(int fd, void *buf, size_t len, bool wr)
{
	char *p = buf;

	while (len > 0) {
		ssize_t n = wr ? write(fd, p, len) : read(fd, p, len);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			return -1;
		p += n;
		len -= (size_t)n;
	}
	return 0;
}

static void __attribute__((noreturn))
pp_worker(int rfd, int wfd)
{
	static long in[PP_CHUNK_MAX], out[PP_CHUNK_MAX];
	uint32_t n;

	while (full_io(rfd, &n, sizeof(n), false) == 0 && n > 0 &&
	       n <= PP_CHUNK_MAX) {
		if (full_io(rfd, in, n * sizeof(long), false) < 0)
			break;
		for (uint32_t i = 0; i < n; i++)
			inc(&in[i], sizeof(long), &out[i], sizeof(long));
		if (full_io(wfd, out, n * sizeof(long), true) < 0)
			break;
	}
	_exit(0);
}

static int
pp_start(struct ppool *pp)
{
	for (int w = 0; w < WORKERS; w++) {
		int a[2], b[2];
		if (pipe(a) < 0 || pipe(b) < 0)
			return -errno;
		pp->pid[w] = fork();
		if (pp->pid[w] < 0)
			return -errno;
		if (pp->pid[w] == 0) {
			close(a[1]);
			close(b[0]);
			for (int k = 0; k < w; k++) {
				close(pp->req[k]);
				close(pp->res[k]);
			}
			pp_worker(a[0], b[1]);
		}
		close(a[0]);
		close(b[1]);
		pp->req[w] = a[1];
		pp->res[w] = b[0];
	}
	return 0;
}

static void
pp_stop(struct ppool *pp)
{
	for (int w = 0; w < WORKERS; w++) {
		close(pp->req[w]);
		close(pp->res[w]);
		waitpid(pp->pid[w], NULL, 0);
	}
}

/* map over the pipe pool: depth chunks in flight per worker. */
static int
pp_map(struct ppool *pp, const long *in, long *out, size_t n, size_t cs,
       int depth)
{
	struct {
		size_t first[64];
		uint32_t count[64];
		int h, len;
	} q[WORKERS] = { 0 };
	size_t next = 0, done = 0;

	if (cs > PP_CHUNK_MAX)
		cs = PP_CHUNK_MAX;
	while (done < n) {
		for (int w = 0; w < WORKERS; w++) {
			while (q[w].len < depth && next < n) {
				uint32_t c = (uint32_t)(n - next < cs ?
							n - next : cs);
				if (full_io(pp->req[w], &c, sizeof(c), true) ||
				    full_io(pp->req[w], (void *)(in + next),
					    c * sizeof(long), true))
					return -EPIPE;
				int t = (q[w].h + q[w].len++) % 64;
				q[w].first[t] = next;
				q[w].count[t] = c;
				next += c;
			}
		}
		struct pollfd pf[WORKERS];
		for (int w = 0; w < WORKERS; w++)
			pf[w] = (struct pollfd){ .fd = q[w].len ? pp->res[w] :
								  -1,
						 .events = POLLIN };
		if (poll(pf, WORKERS, -1) < 0 && errno != EINTR)
			return -errno;
		for (int w = 0; w < WORKERS; w++) {
			if (!pf[w].revents)
				continue;
			int h = q[w].h;
			if (full_io(pp->res[w], out + q[w].first[h],
				    q[w].count[h] * sizeof(long), false))
				return -EPIPE;
			done += q[w].count[h];
			q[w].h = (h + 1) % 64;
			q[w].len--;
		}
	}
	return 0;
}

/* ------------------------------------------------------------------ */
/* fork per task */

static int
fork_task(long x, long *y)
{
	int fd[2];
	pid_t pid;

	if (pipe(fd) < 0)
		return -errno;
	if ((pid = fork()) < 0)
		return -errno;
	if (pid == 0) {
		long r;
		inc(&x, sizeof(x), &r, sizeof(r));
		_exit(full_io(fd[1], &r, sizeof(r), true) ? 1 : 0);
	}
	close(fd[1]);
	int rc = full_io(fd[0], y, sizeof(*y), false);
	close(fd[0]);
	while (waitpid(pid, NULL, 0) < 0 && errno == EINTR)
		;
	return rc ? -EPIPE : 0;
}

/* ------------------------------------------------------------------ */
/* Python */

/* Python's Pool(WORKERS) on the same workloads; 0 rows without python3. */
static int
run_python(const struct mpb_opts *o, size_t items, struct mpb_pyrow *rows,
	   int cap)
{
	char args[128];

	snprintf(args, sizeof(args), "--processes %d --seconds %.3f --items %zu",
		 WORKERS, o->seconds, items);
	mpb_progress("pool: python Pool(%d)", WORKERS);
	return mpb_python(o, "pool_bench.py", args, rows, cap);
}

/* ------------------------------------------------------------------ */
/* The suite */

enum { G_MAP, G_MAP1, G_ASYNC, G_APPLY, NGROUP };
enum { I_MPROC, I_PIPE, I_FORK, NIMPL };

static const char *const gname[NGROUP] = {
	"map 1M, default chunksize", "map 1M, chunksize 1",
	"apply_async", "apply round trip",
};
static const char *const pyname[NGROUP] = {
	"map", "map-cs1", "apply_async", "apply",
};
static const char *const iname[NIMPL] = {
	"mproc", "pipe pool", "fork/task",
};

static int
mproc_async(mp_pool *p, const long *in, size_t n)
{
	mp_async **r = malloc(n * sizeof(*r));
	int rc = 0;

	if (r == NULL)
		return -ENOMEM;
	for (size_t i = 0; i < n && rc == 0; i++) {
		rc = mp_pool_apply_async(p, inc, &in[i], sizeof(long),
					 sizeof(long), NULL, NULL, NULL,
					 &r[i]);
		if (rc < 0)
			n = i;
	}
	for (size_t i = 0; i < n; i++) {
		int e = mp_async_get(r[i], MP_FOREVER);
		if (e < 0 && rc == 0)
			rc = e;
		mp_async_free(r[i]);
	}
	free(r);
	return rc;
}

static int
run(const struct mpb_opts *o)
{
	size_t N = o->quick ? 20000 : 1000000;
	size_t NA = o->quick ? 2000 : 200000;	/* apply_async batch */
	int reps = o->repeat < MAXREP ? o->repeat : MAXREP;
	long *in = malloc(N * sizeof(long)), *out = malloc(N * sizeof(long));
	double v[NGROUP][NIMPL][MAXREP];
	struct mpb_hist *h = calloc(NIMPL, sizeof(*h));
	struct mpb_pyrow py[8];
	struct ppool pp;
	mp_pool *p = NULL;
	int rc = 0, npy;

	if (in == NULL || out == NULL || h == NULL) {
		rc = -ENOMEM;
		goto out;
	}
	for (size_t i = 0; i < N; i++)
		in[i] = (long)i;
	npy = run_python(o, N, py, 8);
	if ((rc = mp_pool_new(&p, &(mp_pool_attr){ .processes = WORKERS })) <
	    0)
		goto out;
	if ((rc = pp_start(&pp)) < 0)
		goto out_pool;
	/* Warm both pools up. */
	if ((rc = mp_pool_map(p, inc, in, 10000, sizeof(long), out,
			      sizeof(long), 1)) < 0 ||
	    (rc = pp_map(&pp, in, out, 10000, 1, 2)) < 0)
		goto out_pp;
	size_t dcs = (N + 4 * WORKERS - 1) / (4 * WORKERS);
	int64_t dur = mpb_duration(o);
	for (int r = 0; r < reps && rc == 0; r++) {
		int64_t t0, t;

		mpb_progress("pool: map, repeat %d/%d", r + 1, reps);
		t0 = mpb_now();
		rc = mp_pool_map(p, inc, in, N, sizeof(long), out,
				 sizeof(long), 0);
		v[G_MAP][I_MPROC][r] = (double)(mpb_now() - t0) / (double)N;
		t0 = mpb_now();
		rc = rc ? rc : pp_map(&pp, in, out, N, dcs, 2);
		v[G_MAP][I_PIPE][r] = (double)(mpb_now() - t0) / (double)N;

		mpb_progress("pool: map chunksize 1, repeat %d/%d", r + 1,
			     reps);
		t0 = mpb_now();
		rc = rc ? rc : mp_pool_map(p, inc, in, N, sizeof(long), out,
					   sizeof(long), 1);
		v[G_MAP1][I_MPROC][r] = (double)(mpb_now() - t0) / (double)N;
		/* The pipe pool at chunksize 1 is slow: time-box it. */
		size_t done = 0, step = 2000;
		t0 = t = mpb_now();
		while (rc == 0 && (t - t0 < dur || done == 0)) {
			rc = pp_map(&pp, in, out, step, 1, 2);
			done += step;
			t = mpb_now();
		}
		v[G_MAP1][I_PIPE][r] = (double)(t - t0) / (double)done;
		/* apply_async: the pipe pool's equivalent is chunksize 1
		 * with 16 requests in flight a worker. */
		mpb_progress("pool: apply_async, repeat %d/%d", r + 1, reps);
		t0 = mpb_now();
		rc = rc ? rc : mproc_async(p, in, NA);
		v[G_ASYNC][I_MPROC][r] = (double)(mpb_now() - t0) / (double)NA;
		done = 0;
		t0 = t = mpb_now();
		while (rc == 0 && (t - t0 < dur || done == 0)) {
			rc = pp_map(&pp, in, out, step, 1, 16);
			done += step;
			t = mpb_now();
		}
		v[G_ASYNC][I_PIPE][r] = (double)(t - t0) / (double)done;

		mpb_progress("pool: apply round trip, repeat %d/%d", r + 1,
			     reps);
		for (int i = 0; i < 3 && rc == 0; i++) {
			long x = 1, y;
			size_t k = 0;
			t0 = t = mpb_now();
			while (rc == 0 && (t - t0 < dur || k == 0)) {
				int64_t a = t;
				if (i == I_MPROC) {
					ssize_t l = mp_pool_apply(p, inc, &x,
						sizeof(x), &y, sizeof(y));
					rc = l < 0 ? (int)l : 0;
				} else if (i == I_PIPE) {
					rc = pp_map(&pp, &x, &y, 1, 1, 1);
				} else {
					rc = fork_task(x, &y);
				}
				t = mpb_now();
				mpb_hist_add(&h[i], (uint64_t)(t - a));
				k++;
			}
			v[G_APPLY][i][r] = (double)(t - t0) / (double)k;
		}
		/* fork/task throughput is its round trip: one at a time. */
		v[G_MAP][I_FORK][r] = v[G_MAP1][I_FORK][r] =
			v[G_ASYNC][I_FORK][r] = v[G_APPLY][I_FORK][r];
	}
	for (int g = 0; g < NGROUP && rc == 0; g++) {
		for (int i = 0; i < NIMPL; i++) {
			struct mpb_row row = { .baseline = i == I_PIPE,
					       .higher_better = g != G_APPLY };
			snprintf(row.name, sizeof(row.name), "%s", gname[g]);
			snprintf(row.impl, sizeof(row.impl), "%s", iname[i]);
			row.ns_op = mpb_summary(v[g][i], reps, &row.spread);
			row.ops = 1e9 / row.ns_op;
			if (g == G_APPLY)
				mpb_hist_lat(&h[i], &row.lat);
			mpb_report(&row);
		}
		for (int k = 0; k < npy; k++) {
			if (strcmp(py[k].name, pyname[g]) != 0)
				continue;
			struct mpb_row row = { .higher_better = g != G_APPLY };
			snprintf(row.name, sizeof(row.name), "%s", gname[g]);
			snprintf(row.impl, sizeof(row.impl),
				 "python Pool(%d)", WORKERS);
			row.ops = py[k].ops;
			row.ns_op = py[k].ns;
			mpb_report(&row);
		}
	}
out_pp:
	pp_stop(&pp);
out_pool:
	mp_pool_free(p);
out:
	free(h);
	free(in);
	free(out);
	return rc;
}

MPB_SUITE(pool, "Pool: map, apply_async, apply vs a pipe pool, fork per task "
		"and Python's multiprocessing.Pool", run)
