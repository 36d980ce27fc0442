/* SPDX-License-Identifier: MIT */
/*
 * manager: dict get and set through a Manager from one and from two client
 * processes, beside Python's Manager().dict() (bench/python/
 * manager_bench.py, when python3 is present) in the same run.
 *
 * Keys are ints 0..63, values 8 bytes.  "1 client" runs in this process
 * and records every round trip in a histogram (the latency columns); "2
 * clients" runs two processes at once, each connected on its first call
 * before a shared start, and reports their total rate.  "update x64"
 * sets 64 items a call (mp_dict_update; Python's d.update()), in items a
 * second: the batch form for when one round trip an item is too many.
 * The Python rows are each group's baseline when present.
 */
#include "config.h"

#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <mproc.h>

#include "bench/mpbench.h"

#define KEYS 64
#define VLEN 8

enum { OP_SET, OP_GET };

struct shared {
	mp_dict *d;
	int op;
	int64_t dur;
	mp_event *start;
	double ops[2];		/* in mp_shm_alloc memory */
};

/* Run op for dur ns; each round trip into h when not NULL. */
static int
run_ops(mp_dict *d, int op, int64_t dur, struct mpb_hist *h, double *ops)
{
	unsigned char val[VLEN] = { 1 }, buf[VLEN];
	int64_t t0 = mpb_now(), end = t0 + dur, now = t0;
	uint64_t n = 0;

	while (now < end) {
		for (int i = 0; i < 64; i++) {
			int k = (int)(n % KEYS);
			int64_t a = h ? mpb_now() : 0;
			ssize_t rc;

			if (op == OP_SET)
				rc = mp_dict_set(d, &k, sizeof(k), val,
						 sizeof(val));
			else
				rc = mp_dict_get(d, &k, sizeof(k), buf,
						 sizeof(buf));
			if (rc < 0)
				return (int)rc;
			if (h)
				mpb_hist_add(h, (uint64_t)(mpb_now() - a));
			n++;
		}
		now = mpb_now();
	}
	*ops = (double)n * 1e9 / (double)(now - t0);
	return 0;
}

static struct shared *sh_global;

static int
client(void *arg)
{
	struct shared *sh = sh_global;
	int id = (int)(intptr_t)arg;
	unsigned char buf[VLEN];
	int k = 0;

	/* Connect before the start, so that only operations are timed. */
	if (mp_dict_get(sh->d, &k, sizeof(k), buf, sizeof(buf)) < 0)
		return 1;
	if (mp_event_wait(sh->start, MP_SEC(60)) != 1)
		return 1;
	return run_ops(sh->d, sh->op, sh->dur, NULL, &sh->ops[id]) < 0;
}

static int
two_clients(struct shared *sh, double *ops)
{
	mp_process *p[2];
	int rc = 0, code;

	mp_event_clear(sh->start);
	for (int i = 0; i < 2; i++) {
		if ((rc = mp_process_new(&p[i], client, (void *)(intptr_t)i,
					 NULL)) < 0)
			return rc;
		if ((rc = mp_process_start(p[i])) < 0)
			return rc;
	}
	mp_event_set(sh->start);
	for (int i = 0; i < 2; i++) {
		mp_process_join(p[i], MP_FOREVER);
		if (mp_process_exitcode(p[i], &code) < 0 || code != 0)
			rc = -EPIPE;
		mp_process_free(p[i]);
	}
	*ops = sh->ops[0] + sh->ops[1];
	return rc;
}

/* Python's Manager().dict(), same run; 0 rows without python3. */
static int
run_python(const struct mpb_opts *o, struct mpb_pyrow *rows, int cap)
{
	char args[64];

	snprintf(args, sizeof(args), "--seconds %.3f", o->seconds);
	mpb_progress("manager: python Manager().dict()");
	return mpb_python(o, "manager_bench.py", args, rows, cap);
}

static int
run_manager(const struct mpb_opts *o)
{
	static const char *const gname[2][2] = {
		{ "dict set, 1 client", "dict get, 1 client" },
		{ "dict set, 2 clients", "dict get, 2 clients" },
	};
	static const char *const pyname[2][2] = {
		{ "set-1", "get-1" }, { "set-2", "get-2" },
	};
	struct mpb_pyrow py[8];
	struct shared *sh;
	mp_manager *m;
	int npy, rc;
	int64_t dur = mpb_duration(o);
	unsigned char val[VLEN] = { 1 };

	npy = run_python(o, py, 8);
	if ((sh = mp_shm_alloc(sizeof(*sh))) == NULL)
		return -ENOMEM;
	sh_global = sh;
	if ((rc = mp_manager_start(&m, NULL)) < 0)
		goto out_shm;
	if ((rc = mp_manager_dict(m, NULL, &sh->d)) < 0 ||
	    (rc = mp_event_new(&sh->start)) < 0)
		goto out_mgr;
	for (int k = 0; k < KEYS; k++)
		mp_dict_set(sh->d, &k, sizeof(k), val, sizeof(val));
	sh->dur = dur;
	for (int clients = 1; clients <= 2; clients++) {
		for (int op = OP_SET; op <= OP_GET; op++) {
			struct mpb_row row = { .size = VLEN,
					       .higher_better = true };
			struct mpb_hist *h = NULL;
			double ops = 0;
			const struct mpb_pyrow *pr = NULL;

			for (int i = 0; i < npy; i++)
				if (strcmp(py[i].name,
					   pyname[clients - 1][op]) == 0)
					pr = &py[i];
			mpb_progress("manager: %s", gname[clients - 1][op]);
			sh->op = op;
			if (clients == 1) {
				if ((h = malloc(sizeof(*h))) == NULL) {
					rc = -ENOMEM;
					goto out_ev;
				}
				mpb_hist_init(h);
				rc = run_ops(sh->d, op, dur, h, &ops);
			} else {
				rc = two_clients(sh, &ops);
			}
			if (rc < 0) {
				free(h);
				goto out_ev;
			}
			snprintf(row.name, sizeof(row.name), "%s",
				 gname[clients - 1][op]);
			snprintf(row.impl, sizeof(row.impl), "mproc");
			row.ops = ops;
			row.ns_op = 1e9 / ops;
			row.baseline = pr == NULL;
			if (h != NULL)
				mpb_hist_lat(h, &row.lat);
			free(h);
			mpb_report(&row);
			if (pr != NULL) {
				struct mpb_row r2 = { .size = VLEN,
						      .higher_better = true,
						      .baseline = true };
				snprintf(r2.name, sizeof(r2.name), "%s",
					 gname[clients - 1][op]);
				snprintf(r2.impl, sizeof(r2.impl),
					 "python Manager().dict()");
				r2.ops = pr->ops;
				r2.ns_op = pr->ns;
				mpb_report(&r2);
			}
		}
	}
	{
		struct mpb_row row = { .size = VLEN, .higher_better = true };
		const struct mpb_pyrow *pr = NULL;
		mp_item items[KEYS];
		int keys[KEYS];
		uint64_t n = 0;
		int64_t t0 = mpb_now(), now = t0;

		for (int k = 0; k < KEYS; k++) {
			keys[k] = k;
			items[k] = (mp_item){ &keys[k], sizeof(int), val,
					      sizeof(val) };
		}
		for (int i = 0; i < npy; i++)
			if (strcmp(py[i].name, "update-1") == 0)
				pr = &py[i];
		mpb_progress("manager: update x64");
		while (now < t0 + dur) {
			if ((rc = mp_dict_update(sh->d, items, KEYS)) < 0)
				goto out_ev;
			n += KEYS;
			now = mpb_now();
		}
		snprintf(row.name, sizeof(row.name),
			 "dict update x64, 1 client");
		snprintf(row.impl, sizeof(row.impl), "mproc");
		row.ops = (double)n * 1e9 / (double)(now - t0);
		row.ns_op = 1e9 / row.ops;
		row.baseline = pr == NULL;
		mpb_report(&row);
		if (pr != NULL) {
			struct mpb_row r2 = { .size = VLEN,
					      .higher_better = true,
					      .baseline = true };
			snprintf(r2.name, sizeof(r2.name), "%s", row.name);
			snprintf(r2.impl, sizeof(r2.impl),
				 "python Manager().dict()");
			r2.ops = pr->ops;
			r2.ns_op = pr->ns;
			mpb_report(&r2);
		}
	}
	rc = 0;
out_ev:
	mp_event_free(sh->start);
out_mgr:
	mp_dict_free(sh->d);
	mp_manager_free(m);
out_shm:
	mp_shm_free(sh);
	return rc;
}

MPB_SUITE(manager, "Manager dict get/set from 1 and 2 clients vs Python",
	  run_manager);
