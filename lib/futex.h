/* SPDX-License-Identifier: MIT */
/*
 * Futex waits and wakes on shared mappings, with deadlines.
 *
 * Every wait in libmproc turns the caller's relative timeout into an
 * absolute CLOCK_MONOTONIC deadline once, at the start of the call, so
 * that a wait interrupted by a signal or woken spuriously simply loops and
 * re-checks its condition without stretching the caller's timeout.  The
 * futexes are process-shared (no FUTEX_PRIVATE_FLAG): the words live in
 * memfd mappings used by several processes.
 */
#ifndef MP__FUTEX_H
#define MP__FUTEX_H

#include <stdint.h>

/* A deadline: absolute CLOCK_MONOTONIC nanoseconds, or MP__NEVER. */
#define MP__NEVER INT64_MAX

/* Now, on CLOCK_MONOTONIC, in nanoseconds. */
int64_t mp__now(void);

/*
 * Turn a relative timeout (MP_FOREVER, MP_NOWAIT, > 0) into a deadline.
 * Returns 0, or -EINVAL for a negative timeout other than MP_FOREVER.
 */
int mp__deadline(int64_t timeout_ns, int64_t *deadline);

/* Nanoseconds left before the deadline (0 when past, -1 for MP__NEVER). */
int64_t mp__remaining(int64_t deadline);

/*
 * Sleep while *word == expected, until a wake or the deadline.
 * Returns 0 when the caller should re-check its condition (woken, the word
 * had already changed, a signal, a spurious wake-up) and -ETIMEDOUT once
 * the deadline has passed.  EINTR never escapes.
 */
int mp__futex_wait(const uint32_t *word, uint32_t expected, int64_t deadline);

/* Wake up to n sleepers on word (INT32_MAX: all).  Returns how many woke. */
int mp__futex_wake(uint32_t *word, int n);

/* One word of a vectored wait. */
struct mp__futex_waiter {
	const uint32_t *word;
	uint32_t expected;
};

/*
 * Sleep until any of the n (1..MP__WAITV_MAX) words changes from its
 * expected value, is woken, or the deadline passes.  Returns the index of
 * a word that was woken or found changed (the caller re-checks them all),
 * or -ETIMEDOUT.  Falls back to a bounded poll of the words on kernels
 * without futex_waitv (before 5.16).
 */
#define MP__WAITV_MAX 128
int mp__futex_waitv(const struct mp__futex_waiter *w, unsigned n,
		    int64_t deadline);

#endif /* MP__FUTEX_H */
