/* SPDX-License-Identifier: MIT */
/*
 * The mechanisms one would use instead of mproc, measured the same way and
 * in the same run: pipe(2), AF_UNIX socketpairs, POSIX message queues,
 * eventfd, a raw futex handoff (the sleeping limit), a shared-memory spin
 * ping-pong (the hardware limit), a minimal Vyukov MPMC ring (what a bare
 * ring does) and memcpy (the copy limit).
 */
#ifndef MPBENCH_BASELINE_H
#define MPBENCH_BASELINE_H

#include <stddef.h>
#include <stdint.h>

#include "bench/mpbench.h"

enum mpb_transport {
	MPB_T_PIPE,
	MPB_T_UNIX_STREAM,
	MPB_T_UNIX_SEQPACKET,
	MPB_T_POSIX_MQ,
	MPB_T_EVENTFD,		/* ping-pong only: 8-byte counters */
	MPB_T_FUTEX,		/* ping-pong only: always sleeps */
	MPB_T_SPIN,		/* ping-pong only: always spins */
	MPB_T_VYUKOV,
	MPB_T_COUNT
};

/* A short name for tables: "pipe(2)", "unix-stream", … */
const char *mpb_transport_name(enum mpb_transport t);

/*
 * producers x consumers processes stream size-byte messages for dur_ns;
 * *msgs_per_s is the rate the consumers received at, in steady state.
 * Returns 0, -ENOTSUP (a ping-pong-only transport, or a size it cannot
 * carry here, e.g. a POSIX mq past the system's msgsize_max), or -errno.
 */
int mpb_base_stream(enum mpb_transport t, size_t size, int producers,
		    int consumers, int64_t dur_ns, double *msgs_per_s);

/*
 * Two processes bounce a size-byte message for dur_ns; each round trip
 * (ns) goes into h, and *rtt_ns is the mean.  Returns 0, -ENOTSUP or -errno.
 */
int mpb_base_pingpong(enum mpb_transport t, size_t size, int64_t dur_ns,
		      struct mpb_hist *h, double *rtt_ns);

/* memcpy of size-byte blocks for dur_ns, in bytes a second. */
double mpb_base_memcpy(size_t size, int64_t dur_ns);

#endif /* MPBENCH_BASELINE_H */
