/* SPDX-License-Identifier: MIT */
/*
 * baseline: the other mechanisms alone, for a reader who wants the
 * machine's limits: streaming 1P1C over each transport, ping-pong round
 * trips (including the spin limit and the raw futex sleeping limit), and
 * memcpy bandwidth.  The module suites run the same functions beside
 * their mproc rows.
 */
#include "config.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>

#include "bench/baseline.h"

static const size_t default_sizes[] = { 8, 64, 1024, 65536 };

static int
stream_rows(const struct mpb_opts *o, size_t size)
{
	static const enum mpb_transport ts[] = {
		MPB_T_PIPE, MPB_T_UNIX_STREAM, MPB_T_UNIX_SEQPACKET,
		MPB_T_POSIX_MQ, MPB_T_VYUKOV,
	};
	int p = o->producers ? o->producers : 1;
	int c = o->consumers ? o->consumers : 1;

	for (size_t i = 0; i < sizeof(ts) / sizeof(ts[0]); i++) {
		double v[64];
		int n = 0, rc = 0;
		for (int r = 0; r < o->repeat && r < 64; r++) {
			mpb_progress("baseline: stream %s %zu B, %d/%d",
				     mpb_transport_name(ts[i]), size, r + 1,
				     o->repeat);
			rc = mpb_base_stream(ts[i], size, p, c,
					     mpb_duration(o), &v[n]);
			if (rc < 0)
				break;
			n++;
		}
		if (rc == -ENOTSUP)
			continue;
		if (rc < 0)
			return rc;
		struct mpb_row row = { .higher_better = true,
				       .baseline = ts[i] == MPB_T_PIPE };
		snprintf(row.name, sizeof(row.name), "stream %dP%dC", p, c);
		snprintf(row.impl, sizeof(row.impl), "%s",
			 mpb_transport_name(ts[i]));
		row.size = size;
		row.ops = mpb_summary(v, n, &row.spread);
		row.mbps = row.ops * (double)size / 1e6;
		row.ns_op = 1e9 / row.ops;
		mpb_report(&row);
	}
	return 0;
}

static int
pingpong_rows(const struct mpb_opts *o, size_t size)
{
	static const enum mpb_transport ts[] = {
		MPB_T_PIPE, MPB_T_UNIX_STREAM, MPB_T_UNIX_SEQPACKET,
		MPB_T_POSIX_MQ, MPB_T_EVENTFD, MPB_T_FUTEX, MPB_T_SPIN,
		MPB_T_VYUKOV,
	};
	struct mpb_hist *h = malloc(sizeof(*h));

	if (h == NULL)
		return -ENOMEM;
	for (size_t i = 0; i < sizeof(ts) / sizeof(ts[0]); i++) {
		double v[64];
		int n = 0, rc = 0;
		if (ts[i] == MPB_T_EVENTFD && size != 8)
			continue;
		mpb_hist_init(h);
		for (int r = 0; r < o->repeat && r < 64; r++) {
			mpb_progress("baseline: ping-pong %s %zu B, %d/%d",
				     mpb_transport_name(ts[i]), size, r + 1,
				     o->repeat);
			rc = mpb_base_pingpong(ts[i], size, mpb_duration(o), h,
					       &v[n]);
			if (rc < 0)
				break;
			n++;
		}
		if (rc == -ENOTSUP)
			continue;
		if (rc < 0) {
			free(h);
			return rc;
		}
		struct mpb_row row = { .baseline = ts[i] == MPB_T_PIPE };
		snprintf(row.name, sizeof(row.name), "ping-pong");
		snprintf(row.impl, sizeof(row.impl), "%s",
			 mpb_transport_name(ts[i]));
		row.size = size;
		row.ns_op = mpb_summary(v, n, &row.spread);
		row.ops = 1e9 / row.ns_op;
		mpb_hist_lat(h, &row.lat);
		mpb_report(&row);
	}
	free(h);
	return 0;
}

static int
run(const struct mpb_opts *o)
{
	size_t sizes[MPB_MAX_SIZES];
	int ns = mpb_sizes(o, default_sizes, 4, sizes), rc;

	for (int i = 0; i < ns; i++) {
		if ((rc = stream_rows(o, sizes[i])) < 0)
			return rc;
	}
	for (int i = 0; i < ns; i++) {
		if (sizes[i] > 65536)
			continue;
		if ((rc = pingpong_rows(o, sizes[i])) < 0)
			return rc;
	}
	for (int i = 0; i < ns; i++) {
		double v[64];
		int r;
		for (r = 0; r < o->repeat && r < 64; r++)
			v[r] = mpb_base_memcpy(sizes[i], mpb_duration(o) / 4);
		struct mpb_row row = { .higher_better = true, .baseline = true };
		snprintf(row.name, sizeof(row.name), "memcpy");
		snprintf(row.impl, sizeof(row.impl), "memcpy");
		row.size = sizes[i];
		row.mbps = mpb_summary(v, r, &row.spread) / 1e6;
		row.ops = row.mbps * 1e6 / (double)sizes[i];
		row.ns_op = 1e9 / row.ops;
		mpb_report(&row);
	}
	return 0;
}

MPB_SUITE(baseline, "pipe, sockets, mq, eventfd, futex, spin, bare ring, memcpy",
	  run)
