/* SPDX-License-Identifier: MIT */
/*
 * process: what mp_process_start + mp_process_join cost beside the bare
 * fork() + _exit() + waitpid() they wrap, in the same run.
 */
#include "config.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include <mproc.h>

#include "bench/mpbench.h"

static int
empty_target(void *arg)
{
	(void)arg;
	return 0;
}

/* One start+join; returns 0 or a negative errno. */
static int
one_mproc(void)
{
	mp_process *p;
	int rc;

	if ((rc = mp_process_new(&p, empty_target, NULL, NULL)) < 0)
		return rc;
	if ((rc = mp_process_start(p)) == 0)
		rc = mp_process_join(p, MP_FOREVER);
	mp_process_free(p);
	return rc;
}

static int
one_fork(void)
{
	pid_t pid = fork();

	if (pid < 0)
		return -errno;
	if (pid == 0)
		_exit(0);
	while (waitpid(pid, NULL, 0) < 0) {
		if (errno != EINTR)
			return -errno;
	}
	return 0;
}

/* Time fn for the measurement's duration; fills the ns an operation. */
static int
measure(int (*fn)(void), int64_t dur, double *ns_op, struct mpb_hist *h)
{
	int64_t start = mpb_now(), t = start, n = 0;

	do {
		int64_t t0 = t;
		int rc = fn();
		if (rc < 0)
			return rc;
		t = mpb_now();
		mpb_hist_add(h, (uint64_t)(t - t0));
		n++;
	} while (t - start < dur);
	*ns_op = (double)(t - start) / (double)n;
	return 0;
}

static int
run(const struct mpb_opts *o)
{
	static const struct {
		const char *impl;
		int (*fn)(void);
		bool baseline;
	} impls[] = {
		{ "fork+waitpid", one_fork, true },
		{ "mproc", one_mproc, false },
	};
	enum { NIMPL = sizeof(impls) / sizeof(impls[0]) };
	double v[NIMPL][64];
	struct mpb_hist *h = calloc(NIMPL, sizeof(*h));
	int rc = 0;

	if (h == NULL)
		return -ENOMEM;
	/* Interleave the implementations so drift hits both alike. */
	for (int r = 0; r < o->repeat && r < 64 && rc == 0; r++) {
		for (int i = 0; i < NIMPL && rc == 0; i++) {
			mpb_progress("process: %s, repeat %d/%d",
				     impls[i].impl, r + 1, o->repeat);
			rc = measure(impls[i].fn, mpb_duration(o), &v[i][r],
				     &h[i]);
		}
	}
	for (int i = 0; i < NIMPL && rc == 0; i++) {
		struct mpb_row row = { .baseline = impls[i].baseline };
		snprintf(row.name, sizeof(row.name), "start+join");
		snprintf(row.impl, sizeof(row.impl), "%s", impls[i].impl);
		row.ns_op = mpb_summary(v[i], o->repeat < 64 ? o->repeat : 64,
					 &row.spread);
		row.ops = 1e9 / row.ns_op;
		mpb_hist_lat(&h[i], &row.lat);
		mpb_report(&row);
	}
	free(h);
	return rc;
}

MPB_SUITE(process, "start+join of an empty process vs fork+waitpid", run)
