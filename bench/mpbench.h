/* SPDX-License-Identifier: MIT */
/*
 * mpbench: the suites' view of the harness.  A suite measures something
 * and its baselines in the same run, and reports one row per measurement;
 * the harness prints the table (with each row's ratio to its group's
 * baseline), JSON and CSV.
 */
#ifndef MPBENCH_H
#define MPBENCH_H

#include <sched.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define MPB_MAX_SIZES 16

struct mpb_opts {
	double seconds;		/* per measurement (per repeat) */
	int repeat;		/* repeats; rows report the median */
	size_t sizes[MPB_MAX_SIZES];
	int nsizes;		/* 0: the suite's own default sizes */
	int producers, consumers; /* 0: the suite's defaults */
	bool quick;		/* smoke run: tiny durations */
};

/* Latency percentiles in ns (a row without latency leaves them 0). */
struct mpb_lat {
	double p50, p90, p99, p999, max;
};

struct mpb_row {
	const char *suite;	/* filled by the harness */
	char name[64];		/* the workload: "start+join", "1P1C busy" */
	char impl[48];		/* what ran it: "mproc", "pipe(2)", … */
	size_t size;		/* message size in bytes, 0 when none */
	double ops;		/* operations (messages, tasks) a second */
	double mbps;		/* MB/s, 0 when not a byte stream */
	double ns_op;		/* ns an operation */
	struct mpb_lat lat;
	bool baseline;		/* the row the group's ratios divide by */
	bool higher_better;	/* ratio of ops (true) or of ns_op (false) */
	double spread;		/* (max - min) / median of the repeats, 0: unknown */
	/*
	 * Optional (0: not given): the median of per-round ratios, each
	 * taken between two measurements made back to back in one round,
	 * and their extremes.  A suite whose host may change speed between
	 * rounds gives them: a ratio of medians can then divide figures
	 * from different states.  When set, the table, JSON and CSV show
	 * it as the row's ratio (to the group's base row, or to what the
	 * row's name says when the group has none).
	 */
	double ratio_rounds;
	double ratio_min, ratio_max;
};

/* Add a row to the report. */
void mpb_report(const struct mpb_row *row);

/* A progress line on stderr when it is a terminal. */
void mpb_progress(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

struct mpb_suite {
	const char *name;
	const char *what;
	int (*run)(const struct mpb_opts *o); /* 0, or a negative errno */
	struct mpb_suite *next;
};

void mpb_register(struct mpb_suite *s);

/* Register a suite at load time: MPB_SUITE(queue, "…", run_queue); */
#define MPB_SUITE(id, what_, fn)                                          \
	static struct mpb_suite mpb_suite_##id = { #id, what_, fn, NULL }; \
	__attribute__((constructor)) static void mpb_register_##id(void)  \
	{                                                                 \
		mpb_register(&mpb_suite_##id);                            \
	}

/*
 * Pin the caller to the nth CPU it may run on (under --pin: the nth CPU
 * the harness started with), saving its old mask in *old when old is not
 * NULL.  False (and nothing changed) when it may run on fewer than two
 * CPUs.  Two-process latency rows pin the two sides to
 * CPUs 0 and 1 so that every mechanism crosses CPUs the same way; a
 * spinning pair left on one CPU measures the scheduler, not the mechanism.
 */
bool mpb_pin(int nth, cpu_set_t *old);

/* One result of a bench/python script: "NAME OPS NS" on a line. */
struct mpb_pyrow {
	char name[32];
	double ops, ns;
};

/*
 * Run bench/python/SCRIPT ARGS with python3, found beside the mpbench
 * binary (or its libtool .libs) or under $top_srcdir, and read up to cap
 * rows.  Skipped (0 rows) with --quick or without python3.  Its figures
 * come from the same run as the suite's other rows.
 */
int mpb_python(const struct mpb_opts *o, const char *script,
	       const char *args, struct mpb_pyrow *out, int cap);

/* CLOCK_MONOTONIC in ns. */
int64_t mpb_now(void);

/* The median of n doubles (sorts them in place). */
double mpb_median(double *v, int n);

/* The median of n doubles, and their spread (max - min) / median. */
double mpb_summary(double *v, int n, double *spread);

/* Duration of one measurement in ns, from the options. */
int64_t mpb_duration(const struct mpb_opts *o);

/*
 * A latency histogram: log-linear buckets (HdrHistogram style, about 3%
 * precision) from 1 ns to ~1 hour.  Fixed size; lives in shared memory
 * when processes record into one.
 */
#define MPB_HIST_SUB 32
#define MPB_HIST_EXP 42
struct mpb_hist {
	uint64_t count;
	uint64_t max;
	uint64_t bucket[MPB_HIST_EXP][MPB_HIST_SUB];
};
void mpb_hist_init(struct mpb_hist *h);
void mpb_hist_add(struct mpb_hist *h, uint64_t ns);
void mpb_hist_merge(struct mpb_hist *into, const struct mpb_hist *from);
double mpb_hist_pct(const struct mpb_hist *h, double pct);
void mpb_hist_lat(const struct mpb_hist *h, struct mpb_lat *out);

/* The sizes to run: the user's --sizes, else the suite's defaults. */
int mpb_sizes(const struct mpb_opts *o, const size_t *defaults, int n,
	      size_t *out);

#endif /* MPBENCH_H */
