/* SPDX-License-Identifier: MIT */
/*
 * Small things every module of libmproc uses.  Never installed.
 */
#ifndef MP__INTERNAL_H
#define MP__INTERNAL_H

#include "config.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>

#include <mproc/common.h>

#define MP__LIKELY(x) __builtin_expect(!!(x), 1)
#define MP__UNLIKELY(x) __builtin_expect(!!(x), 0)
/*
 * Out of line, so that fast paths stay short leaves; MP__COLD also moves
 * the function to .text.unlikely and optimises it for size (rare paths).
 */
#define MP__NOINLINE __attribute__((noinline))
#define MP__COLD __attribute__((noinline, cold))
#define MP__CACHELINE 64
#define MP__ALIGNED __attribute__((aligned(MP__CACHELINE)))

/*
 * A broken internal invariant.  Debug builds stop at once with the place
 * (as liburcu's urcu_die); release builds make the caller return
 * MP_ECORRUPT instead of limping on.
 */
#ifdef MP_DEBUG
#define MP__ASSERT(cond)                                                  \
	do {                                                              \
		if (MP__UNLIKELY(!(cond))) {                              \
			fprintf(stderr, "mproc: %s:%d: %s: assertion `%s' " \
				"failed\n", __FILE__, __LINE__, __func__, \
				#cond);                                   \
			abort();                                          \
		}                                                         \
	} while (0)
#else
#define MP__ASSERT(cond) ((void)0)
#endif

/* Checks a relative timeout: MP_FOREVER, MP_NOWAIT or positive. */
#define MP__TIMEOUT_OK(t) ((t) >= MP_FOREVER)

#endif /* MP__INTERNAL_H */
