/* SPDX-License-Identifier: MIT */
/*
 * mpbench: run suites, print a table, write JSON/CSV.
 *
 * Every suite measures mproc and the mechanisms one would otherwise use in
 * the same run, so that ratios hold on a noisy machine; each measurement is
 * repeated (--repeat) and the median reported.
 */
#include "config.h"

#include <errno.h>
#include <getopt.h>
#include <pthread.h>
#include <sched.h>
#include <math.h>
#include <stdbool.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/utsname.h>
#include <time.h>
#include <unistd.h>

#include <mproc.h>

#include "bench/mpbench.h"

/* Rows whose repeats spread more than this are flagged as noisy. */
#define NOISY 0.25

static struct mpb_suite *suites;
static struct mpb_row *rows;
static size_t nrows, caprows;
static const char *current_suite;

/* What the figures were measured on, for the header and the JSON. */
static struct {
	char cpu[128];
	char kernel[256];
	int cpus;		/* before --pin narrows the affinity */
} machine;

static void
describe_machine(void)
{
	struct utsname u;
	char line[256];
	FILE *f;

	machine.cpus = mp_cpu_count();
	snprintf(machine.cpu, sizeof(machine.cpu), "unknown CPU");
	if ((f = fopen("/proc/cpuinfo", "r")) != NULL) {
		while (fgets(line, sizeof(line), f)) {
			char *colon = strchr(line, ':');
			if (strncmp(line, "model name", 10) || colon == NULL)
				continue;
			colon += 1 + strspn(colon + 1, " \t");
			colon[strcspn(colon, "\n")] = 0;
			snprintf(machine.cpu, sizeof(machine.cpu), "%s", colon);
			break;
		}
		fclose(f);
	}
	if (uname(&u) == 0)
		snprintf(machine.kernel, sizeof(machine.kernel), "%s %s %s",
			 u.sysname, u.release, u.machine);
}

/*
 * --pin: the harness stays on the first allowed CPU and every process it
 * forks, whichever suite forks it, goes to the next one round-robin.  A
 * fork handler does it, so suites need not know; the counter is shared so
 * that grandchildren continue the round.
 */
static uint32_t *pin_ctl;
static int pin_cpus[CPU_SETSIZE];
static int pin_ncpus;

static void
pin_cpu(int cpu)
{
	cpu_set_t set;

	CPU_ZERO(&set);
	CPU_SET(cpu, &set);
	sched_setaffinity(0, sizeof(set), &set);
}

static void
pin_child(void)
{
	uint32_t k = __atomic_fetch_add(pin_ctl, 1, __ATOMIC_RELAXED);

	pin_cpu(pin_cpus[(1 + k) % (uint32_t)pin_ncpus]);
}

static int
pin_setup(void)
{
	cpu_set_t set;

	if (sched_getaffinity(0, sizeof(set), &set) < 0)
		return -errno;
	for (int c = 0; c < CPU_SETSIZE; c++) {
		if (CPU_ISSET(c, &set))
			pin_cpus[pin_ncpus++] = c;
	}
	if ((pin_ctl = mp_shm_alloc(sizeof(*pin_ctl))) == NULL)
		return -ENOMEM;
	pin_cpu(pin_cpus[0]);
	return pthread_atfork(NULL, NULL, pin_child) ? -ENOMEM : 0;
}


void
mpb_register(struct mpb_suite *s)
{
	/* Keep them sorted by name: the order of constructors is not ours. */
	struct mpb_suite **pp = &suites;

	while (*pp && strcmp((*pp)->name, s->name) < 0)
		pp = &(*pp)->next;
	s->next = *pp;
	*pp = s;
}

bool
mpb_pin(int nth, cpu_set_t *old)
{
	cpu_set_t set, mine;
	int seen = 0;

	if (sched_getaffinity(0, sizeof(mine), &mine) < 0)
		return false;
	/*
	 * Under --pin every process is already on one CPU, the round-robin
	 * one: a pair's two sides would share a CPU whenever the count of
	 * forks so far is odd.  Its nth CPU is the nth that --pin found.
	 */
	if (pin_ctl != NULL && pin_ncpus >= 2) {
		if (old != NULL)
			*old = mine;
		pin_cpu(pin_cpus[nth % pin_ncpus]);
		return true;
	}
	if (CPU_COUNT(&mine) < 2)
		return false;
	if (old != NULL)
		*old = mine;
	for (int cpu = 0; cpu < CPU_SETSIZE; cpu++) {
		if (!CPU_ISSET(cpu, &mine))
			continue;
		if (seen++ == nth) {
			CPU_ZERO(&set);
			CPU_SET(cpu, &set);
			return sched_setaffinity(0, sizeof(set), &set) == 0;
		}
	}
	return false;
}

/* Where bench/python/script is: beside the binary, or under top_srcdir. */
static int
python_script(const char *script, char *path, size_t size)
{
	static const char *const rel[] = { "python", "../python" };
	const char *top = getenv("top_srcdir");
	char dir[2048];
	ssize_t len = readlink("/proc/self/exe", dir, sizeof(dir) - 1);
	char *slash;

	if (len > 0) {
		dir[len] = '\0';
		/* bench/mpbench, or libtool's bench/.libs/mpbench. */
		if ((slash = strrchr(dir, '/')) != NULL)
			*slash = '\0';
		for (int i = 0; slash != NULL && i < 2; i++) {
			snprintf(path, size, "%s/%s/%s", dir, rel[i], script);
			if (access(path, R_OK) == 0)
				return 0;
		}
	}
	if (top == NULL)
		return -1;
	snprintf(path, size, "%s/bench/python/%s", top, script);
	return access(path, R_OK) == 0 ? 0 : -1;
}

int
mpb_python(const struct mpb_opts *o, const char *script, const char *args,
	   struct mpb_pyrow *out, int cap)
{
	char path[4096], cmd[4096 + 256], line[256];
	int n = 0;
	FILE *f;

	if (o->quick || system("command -v python3 >/dev/null 2>&1") != 0 ||
	    python_script(script, path, sizeof(path)) < 0)
		return 0;
	snprintf(cmd, sizeof(cmd), "python3 '%s' %s", path, args);
	if ((f = popen(cmd, "r")) == NULL)
		return 0;
	while (n < cap && fgets(line, sizeof(line), f) != NULL) {
		if (sscanf(line, "%31s %lf %lf", out[n].name, &out[n].ops,
			   &out[n].ns) == 3)
			n++;
	}
	pclose(f);
	return n;
}

int64_t
mpb_now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

static int
cmp_double(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;

	return (x > y) - (x < y);
}

double
mpb_median(double *v, int n)
{
	if (n <= 0)
		return 0;
	qsort(v, (size_t)n, sizeof(*v), cmp_double);
	return n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
}

double
mpb_summary(double *v, int n, double *spread)
{
	double m = mpb_median(v, n);

	/* mpb_median sorted v: the extremes are at the ends. */
	*spread = n > 1 && m > 0 ? (v[n - 1] - v[0]) / m : 0;
	return m;
}

int64_t
mpb_duration(const struct mpb_opts *o)
{
	return (int64_t)(o->seconds * 1e9);
}

int
mpb_sizes(const struct mpb_opts *o, const size_t *defaults, int n,
	  size_t *out)
{
	if (o->nsizes > 0) {
		memcpy(out, o->sizes, sizeof(size_t) * (size_t)o->nsizes);
		return o->nsizes;
	}
	memcpy(out, defaults, sizeof(size_t) * (size_t)n);
	return n;
}

void
mpb_hist_init(struct mpb_hist *h)
{
	memset(h, 0, sizeof(*h));
}

/*
 * Row 0 holds 0..SUB-1 exactly; row e >= 1 holds [SUB << (e-1), SUB << e)
 * in SUB equal steps, so every bucket is within 1/SUB of its values.
 */
static void
hist_index(uint64_t v, unsigned *row, unsigned *col)
{
	unsigned e = 0;

	if (v < MPB_HIST_SUB) {
		*row = 0;
		*col = (unsigned)v;
		return;
	}
	e = (unsigned)(63 - __builtin_clzll(v)) - 5 + 1; /* log2(SUB) = 5 */
	if (e >= MPB_HIST_EXP) {
		*row = MPB_HIST_EXP - 1;
		*col = MPB_HIST_SUB - 1;
		return;
	}
	*row = e;
	*col = (unsigned)(v >> (e - 1)) - MPB_HIST_SUB;
}

static double
hist_value(unsigned row, unsigned col)
{
	if (row == 0)
		return col;
	/* The middle of the bucket. */
	double lo = (double)((uint64_t)(MPB_HIST_SUB + col) << (row - 1));
	return lo + (double)((uint64_t)1 << (row - 1)) / 2;
}

_Static_assert(MPB_HIST_SUB == 32, "hist_index assumes log2(SUB) == 5");

void
mpb_hist_add(struct mpb_hist *h, uint64_t ns)
{
	unsigned r, c;

	hist_index(ns, &r, &c);
	h->bucket[r][c]++;
	h->count++;
	if (ns > h->max)
		h->max = ns;
}

void
mpb_hist_merge(struct mpb_hist *into, const struct mpb_hist *from)
{
	for (unsigned r = 0; r < MPB_HIST_EXP; r++)
		for (unsigned c = 0; c < MPB_HIST_SUB; c++)
			into->bucket[r][c] += from->bucket[r][c];
	into->count += from->count;
	if (from->max > into->max)
		into->max = from->max;
}

double
mpb_hist_pct(const struct mpb_hist *h, double pct)
{
	uint64_t want, seen = 0;

	if (h->count == 0)
		return 0;
	want = (uint64_t)ceil(pct / 100.0 * (double)h->count);
	if (want == 0)
		want = 1;
	for (unsigned r = 0; r < MPB_HIST_EXP; r++) {
		for (unsigned c = 0; c < MPB_HIST_SUB; c++) {
			seen += h->bucket[r][c];
			if (seen >= want) {
				double v = hist_value(r, c);
				return v > (double)h->max ? (double)h->max : v;
			}
		}
	}
	return (double)h->max;
}

void
mpb_hist_lat(const struct mpb_hist *h, struct mpb_lat *out)
{
	out->p50 = mpb_hist_pct(h, 50);
	out->p90 = mpb_hist_pct(h, 90);
	out->p99 = mpb_hist_pct(h, 99);
	out->p999 = mpb_hist_pct(h, 99.9);
	out->max = (double)h->max;
}

void
mpb_progress(const char *fmt, ...)
{
	va_list ap;

	if (!isatty(STDERR_FILENO))
		return;
	fputs("\r\033[K", stderr);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fflush(stderr);
}

void
mpb_report(const struct mpb_row *row)
{
	if (nrows == caprows) {
		size_t n = caprows ? caprows * 2 : 64;
		struct mpb_row *r = realloc(rows, n * sizeof(*r));
		if (r == NULL) {
			fprintf(stderr, "mpbench: out of memory\n");
			exit(1);
		}
		rows = r;
		caprows = n;
	}
	rows[nrows] = *row;
	rows[nrows].suite = current_suite;
	nrows++;
}

static bool
same_group(const struct mpb_row *a, const struct mpb_row *b)
{
	return a->suite == b->suite && a->size == b->size &&
	       strcmp(a->name, b->name) == 0;
}

/* The group's (base) row, NULL when it has none. */
static const struct mpb_row *
group_base(const struct mpb_row *r)
{
	for (size_t i = 0; i < nrows; i++) {
		if (rows[i].baseline && same_group(&rows[i], r))
			return &rows[i];
	}
	return NULL;
}

/*
 * The row's speed relative to its group's baseline (>1: faster): the
 * suite's per-round ratio when it gave one, else the ratio of medians.
 */
static double
ratio(const struct mpb_row *r)
{
	const struct mpb_row *b;

	if (r->ratio_rounds > 0)
		return r->ratio_rounds;
	if ((b = group_base(r)) == NULL)
		return NAN;
	if (r->higher_better)
		return b->ops > 0 ? r->ops / b->ops : NAN;
	return r->ns_op > 0 ? b->ns_op / r->ns_op : NAN;
}

static bool
is_mproc(const struct mpb_row *r)
{
	/* "mproc…" or an mproc call ("mp_lock"): the rows under test. */
	return strncmp(r->impl, "mproc", 5) == 0 ||
	       strncmp(r->impl, "mp_", 3) == 0;
}

static double
speed(const struct mpb_row *r)
{
	if (r->higher_better)
		return r->ops;
	return r->ns_op > 0 ? 1e9 / r->ns_op : 0;
}

/*
 * For an mproc row: its speed relative to the fastest row of its group
 * that is not mproc's, and that row.  NAN when there is none.
 */
static double
vs_best(const struct mpb_row *r, const struct mpb_row **best)
{
	*best = NULL;
	if (!is_mproc(r))
		return NAN;
	for (size_t i = 0; i < nrows; i++) {
		const struct mpb_row *b = &rows[i];
		if (is_mproc(b) || !same_group(b, r) || speed(b) <= 0)
			continue;
		if (*best == NULL || speed(b) > speed(*best))
			*best = b;
	}
	if (*best == NULL)
		return NAN;
	/*
	 * A per-round ratio: against the base row, the same figure as the
	 * ratio column; in a group without one, the ratio is what the
	 * group's name says (2P2C/1P1C), and a ratio of medians beside it
	 * would read as a second answer to that.
	 */
	if (r->ratio_rounds > 0 && (*best)->baseline)
		return r->ratio_rounds;
	if (r->ratio_rounds > 0 && group_base(r) == NULL) {
		*best = NULL;
		return NAN;
	}
	return speed(r) / speed(*best);
}

static const char *
human(double v, char *buf, size_t len)
{
	if (v <= 0)
		snprintf(buf, len, "-");
	else if (v >= 1e9)
		snprintf(buf, len, "%.2fG", v / 1e9);
	else if (v >= 1e6)
		snprintf(buf, len, "%.2fM", v / 1e6);
	else if (v >= 1e3)
		snprintf(buf, len, "%.2fk", v / 1e3);
	else
		snprintf(buf, len, "%.1f", v);
	return buf;
}

static const char *
ns_str(double ns, char *buf, size_t len)
{
	if (ns <= 0)
		snprintf(buf, len, "-");
	else if (ns >= 1e6)
		snprintf(buf, len, "%.2fms", ns / 1e6);
	else if (ns >= 1e3)
		snprintf(buf, len, "%.2fus", ns / 1e3);
	else
		snprintf(buf, len, "%.0fns", ns);
	return buf;
}

/* Whether a suite gave per-round ratios: its table has their column. */
static bool
has_rounds(const char *suite)
{
	for (size_t i = 0; i < nrows; i++) {
		if (rows[i].suite == suite && rows[i].ratio_rounds > 0)
			return true;
	}
	return false;
}

static void
print_table(FILE *f)
{
	const char *suite = NULL;
	char a[32], b[32], c[32], d[32], e[32], g[32];
	int noisy = 0;
	bool rounds = false, any_rounds = false;

	for (size_t i = 0; i < nrows; i++) {
		const struct mpb_row *r = &rows[i];
		if (r->suite != suite) {
			suite = r->suite;
			rounds = has_rounds(suite);
			any_rounds |= rounds;
			fprintf(f, "\n== %s\n%-28s %-18s %8s %9s %9s %9s %5s "
				"%9s %9s %9s %7s  %s%s\n", suite, "workload",
				"impl", "size", "ops/s", "MB/s", "per op", "+-%",
				"p50", "p99", "p99.9", "ratio", rounds ?
				"vs best other           " : "vs best other",
				rounds ? " ratio min..max" : "");
		}
		double q = ratio(r);
		char rs[16];
		if (isnan(q))
			snprintf(rs, sizeof(rs), "-");
		else
			snprintf(rs, sizeof(rs), r->baseline ? "(base)" :
				 "%.2fx", q);
		char sp[16];
		if (r->spread > 0)
			snprintf(sp, sizeof(sp), "%.0f", r->spread * 100);
		else
			snprintf(sp, sizeof(sp), "-");
		if (r->spread > NOISY)
			noisy++;
		const struct mpb_row *best;
		double vb = vs_best(r, &best);
		char bs[64] = "";
		if (!isnan(vb))
			snprintf(bs, sizeof(bs), "%.2fx %s", vb, best->impl);
		if (rounds && r->ratio_rounds > 0) {
			size_t l = strlen(bs);
			snprintf(bs + l, sizeof(bs) - l, "%*s %.2f..%.2f",
				 l < 24 ? (int)(24 - l) : 0, "", r->ratio_min,
				 r->ratio_max);
		}
		fprintf(f, "%-28s %-18s %8zu %9s %9s %9s %5s %9s %9s %9s "
			"%7s  %s\n", r->name, r->impl, r->size,
			human(r->ops, a, sizeof(a)),
			human(r->mbps, b, sizeof(b)),
			ns_str(r->ns_op, c, sizeof(c)), sp,
			ns_str(r->lat.p50, d, sizeof(d)),
			ns_str(r->lat.p99, e, sizeof(e)),
			ns_str(r->lat.p999, g, sizeof(g)), rs, bs);
	}
	fprintf(f, "\nratio: speed relative to the group's (base) row, "
		"measured in the same run; >1 is faster.\nvs best other: an "
		"mproc row's speed relative to the fastest other mechanism "
		"of its group.\n+-%%: spread of the repeats, (max - min) / "
		"median.\n");
	if (any_rounds)
		fprintf(f, "ratio min..max: where a row's ratio is taken round "
			"by round (the row and what it is compared\nwith "
			"measured back to back), it is the median of the "
			"rounds' ratios; min..max are their\nextremes.  In a "
			"group without a (base) row, the ratio is what the "
			"group's name says\n(scaling 2P2C/1P1C: the 2P2C rate "
			"over the 1P1C rate of the same round).\n");
	if (noisy > 0)
		fprintf(f, "WARNING: %d rows spread more than %.0f%% between "
			"repeats: this machine is too noisy for those figures "
			"to hold; rerun with more --repeat and --seconds, "
			"--pin, or on a quiet machine.\n", noisy, NOISY * 100);
}

static void
json_str(FILE *f, const char *s)
{
	fputc('"', f);
	for (; *s; s++) {
		if (*s == '"' || *s == '\\')
			fputc('\\', f);
		if ((unsigned char)*s < 0x20)
			fprintf(f, "\\u%04x", *s);
		else
			fputc(*s, f);
	}
	fputc('"', f);
}

static double
finite_or_zero(double v)
{
	return isfinite(v) ? v : 0;
}

static int
write_json(const char *path, const struct mpb_opts *o)
{
	FILE *f = strcmp(path, "-") ? fopen(path, "w") : stdout;

	if (f == NULL)
		return -errno;
	fprintf(f, "{\n  \"mproc_version\": ");
	json_str(f, mp_version());
	fprintf(f, ",\n  \"cpu_model\": ");
	json_str(f, machine.cpu);
	fprintf(f, ",\n  \"kernel\": ");
	json_str(f, machine.kernel);
	fprintf(f, ",\n  \"cpus\": %d,\n  \"seconds\": %g,\n  "
		"\"repeat\": %d,\n  \"pinned\": %s,\n  \"rows\": [",
		machine.cpus, o->seconds, o->repeat,
		pin_ctl ? "true" : "false");
	for (size_t i = 0; i < nrows; i++) {
		const struct mpb_row *r = &rows[i];
		double q = ratio(r);
		fprintf(f, "%s\n    {\"suite\": ", i ? "," : "");
		json_str(f, r->suite);
		fprintf(f, ", \"workload\": ");
		json_str(f, r->name);
		fprintf(f, ", \"impl\": ");
		json_str(f, r->impl);
		fprintf(f, ", \"size\": %zu, \"ops_per_s\": %.6g, "
			"\"mb_per_s\": %.6g, \"ns_per_op\": %.6g, "
			"\"p50_ns\": %.6g, \"p90_ns\": %.6g, "
			"\"p99_ns\": %.6g, \"p999_ns\": %.6g, "
			"\"max_ns\": %.6g, \"spread\": %.4g, "
			"\"baseline\": %s, \"ratio\": ", r->size,
			finite_or_zero(r->ops), finite_or_zero(r->mbps),
			finite_or_zero(r->ns_op), r->lat.p50, r->lat.p90,
			r->lat.p99, r->lat.p999, r->lat.max, r->spread,
			r->baseline ? "true" : "false");
		if (isnan(q))
			fprintf(f, "null");
		else
			fprintf(f, "%.4g", q);
		if (r->ratio_rounds > 0)
			fprintf(f, ", \"ratio_min\": %.4g, \"ratio_max\": %.4g",
				r->ratio_min, r->ratio_max);
		else
			fprintf(f, ", \"ratio_min\": null, \"ratio_max\": null");
		const struct mpb_row *best;
		double vb = vs_best(r, &best);
		if (isnan(vb)) {
			fprintf(f, ", \"vs_best\": null}");
		} else {
			fprintf(f, ", \"vs_best\": %.4g, \"best_other\": ", vb);
			json_str(f, best->impl);
			fprintf(f, "}");
		}
	}
	fprintf(f, "\n  ]\n}\n");
	if (f != stdout && fclose(f) != 0)
		return -errno;
	return 0;
}

static int
write_csv(const char *path)
{
	FILE *f = strcmp(path, "-") ? fopen(path, "w") : stdout;

	if (f == NULL)
		return -errno;
	fprintf(f, "suite,workload,impl,size,ops_per_s,mb_per_s,ns_per_op,"
		"p50_ns,p90_ns,p99_ns,p999_ns,max_ns,spread,baseline,ratio,"
		"ratio_min,ratio_max\n");
	for (size_t i = 0; i < nrows; i++) {
		const struct mpb_row *r = &rows[i];
		double q = ratio(r);
		fprintf(f, "%s,\"%s\",\"%s\",%zu,%.6g,%.6g,%.6g,%.6g,%.6g,"
			"%.6g,%.6g,%.6g,%.4g,%d,", r->suite, r->name, r->impl,
			r->size, finite_or_zero(r->ops),
			finite_or_zero(r->mbps), finite_or_zero(r->ns_op),
			r->lat.p50, r->lat.p90, r->lat.p99, r->lat.p999,
			r->lat.max, r->spread, r->baseline);
		if (!isnan(q))
			fprintf(f, "%.4g", q);
		if (r->ratio_rounds > 0)
			fprintf(f, ",%.4g,%.4g\n", r->ratio_min, r->ratio_max);
		else
			fprintf(f, ",,\n");
	}
	if (f != stdout && fclose(f) != 0)
		return -errno;
	return 0;
}

static void
usage(FILE *f)
{
	fprintf(f, "usage: mpbench [SUITE...] [--seconds S] [--repeat N] "
		"[--sizes 8,64,...]\n"
		"               [--producers N] [--consumers N] [--quick] "
		"[--pin] [--json FILE] [--csv FILE] [--list]\n\nsuites:\n");
	for (struct mpb_suite *s = suites; s; s = s->next)
		fprintf(f, "  %-10s %s\n", s->name, s->what);
}

static int
parse_sizes(const char *arg, struct mpb_opts *o)
{
	const char *p = arg;

	o->nsizes = 0;
	while (*p) {
		char *end;
		errno = 0;
		unsigned long long v = strtoull(p, &end, 10);
		if (end == p || errno)
			return -1;
		if (*end == 'k' || *end == 'K') {
			v <<= 10;
			end++;
		} else if (*end == 'm' || *end == 'M') {
			v <<= 20;
			end++;
		}
		if (o->nsizes == MPB_MAX_SIZES || (*end && *end != ','))
			return -1;
		o->sizes[o->nsizes++] = (size_t)v;
		p = *end ? end + 1 : end;
	}
	return o->nsizes > 0 ? 0 : -1;
}

static int
parse_positive(const char *arg, int *out)
{
	char *end;
	long v = strtol(arg, &end, 10);

	if (*arg == 0 || *end || v < 1 || v > 1024)
		return -1;
	*out = (int)v;
	return 0;
}

int
main(int argc, char **argv)
{
	static const struct option longopts[] = {
		{ "seconds", required_argument, NULL, 's' },
		{ "repeat", required_argument, NULL, 'r' },
		{ "sizes", required_argument, NULL, 'z' },
		{ "producers", required_argument, NULL, 'p' },
		{ "consumers", required_argument, NULL, 'c' },
		{ "json", required_argument, NULL, 'j' },
		{ "csv", required_argument, NULL, 'v' },
		{ "quick", no_argument, NULL, 'q' },
		{ "pin", no_argument, NULL, 'P' },
		{ "list", no_argument, NULL, 'l' },
		{ "help", no_argument, NULL, 'h' },
		{ NULL, 0, NULL, 0 },
	};
	struct mpb_opts o = { .seconds = 0.3, .repeat = 3 };
	const char *json = NULL, *csv = NULL;
	char *end;
	int c, rc = 0, ran = 0;

	describe_machine();
	while ((c = getopt_long(argc, argv, "s:r:z:p:c:j:v:qPlh", longopts,
				NULL)) != -1) {
		switch (c) {
		case 's':
			o.seconds = strtod(optarg, &end);
			if (*end || !(o.seconds > 0) || o.seconds > 3600) {
				fprintf(stderr, "mpbench: bad --seconds %s\n",
					optarg);
				return 2;
			}
			break;
		case 'r':
			if (parse_positive(optarg, &o.repeat)) {
				fprintf(stderr, "mpbench: bad --repeat\n");
				return 2;
			}
			break;
		case 'z':
			if (parse_sizes(optarg, &o)) {
				fprintf(stderr, "mpbench: bad --sizes %s\n",
					optarg);
				return 2;
			}
			break;
		case 'p':
		case 'c':
			if (parse_positive(optarg, c == 'p' ? &o.producers :
					   &o.consumers)) {
				fprintf(stderr, "mpbench: bad --%s\n",
					c == 'p' ? "producers" : "consumers");
				return 2;
			}
			break;
		case 'j':
			json = optarg;
			break;
		case 'v':
			csv = optarg;
			break;
		case 'q':
			o.quick = true;
			o.seconds = 0.05;
			o.repeat = 1;
			break;
		case 'P':
			if ((rc = pin_setup()) < 0) {
				fprintf(stderr, "mpbench: --pin: %s\n",
					mp_strerror(rc));
				return 2;
			}
			break;
		case 'l':
			for (struct mpb_suite *s = suites; s; s = s->next)
				printf("%s\n", s->name);
			return 0;
		case 'h':
			usage(stdout);
			return 0;
		default:
			usage(stderr);
			return 2;
		}
	}
	for (int i = optind; i < argc; i++) {
		struct mpb_suite *s = suites;
		while (s && strcmp(s->name, argv[i]))
			s = s->next;
		if (s == NULL) {
			fprintf(stderr, "mpbench: no suite '%s'\n", argv[i]);
			usage(stderr);
			return 2;
		}
	}
	printf("mpbench %s on %s, %d CPUs, %s\n%.2f s a measurement, median "
	       "of %d%s\n", mp_version(), machine.cpu, machine.cpus,
	       machine.kernel, o.seconds, o.repeat,
	       pin_ctl ? ", processes pinned round-robin" : "");
	for (struct mpb_suite *s = suites; s; s = s->next) {
		bool want = optind == argc;
		for (int i = optind; i < argc; i++)
			want |= strcmp(s->name, argv[i]) == 0;
		if (!want)
			continue;
		current_suite = s->name;
		int r = s->run(&o);
		mpb_progress("%s", "");
		if (r < 0) {
			fprintf(stderr, "mpbench: suite %s failed: %s\n",
				s->name, mp_strerror(r));
			rc = 1;
		}
		ran++;
	}
	print_table(stdout);
	if (json && (c = write_json(json, &o)) < 0) {
		fprintf(stderr, "mpbench: %s: %s\n", json, mp_strerror(c));
		rc = 1;
	}
	if (csv && (c = write_csv(csv)) < 0) {
		fprintf(stderr, "mpbench: %s: %s\n", csv, mp_strerror(c));
		rc = 1;
	}
	free(rows);
	return ran ? rc : 2;
}
