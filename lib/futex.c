/* SPDX-License-Identifier: MIT */
/*
 * Theory of operation
 *
 * This file holds no shared state of its own; it wraps the futex system
 * calls so that every module waits the same way:
 *
 * 1. A waiter loads the word, decides it must sleep, announces itself in
 *    its module's sleepers count, re-checks the condition, and only then
 *    calls mp__futex_wait() with the value it saw.  The kernel compares the
 *    word with that value atomically with queueing the waiter, so a wake
 *    that lands between the re-check and the sleep makes the wait return at
 *    once (EAGAIN in the kernel, 0 here): no wake-up is lost.
 * 2. Deadlines are absolute CLOCK_MONOTONIC times.  FUTEX_WAIT_BITSET and
 *    futex_waitv both take absolute timeouts, so a wait restarted after a
 *    signal keeps the original deadline and EINTR never shortens or
 *    stretches the caller's timeout.
 * 3. Wakes are FUTEX_WAKE on the shared word; the caller decides whether
 *    anyone sleeps, so the fast path never reaches this file.
 *
 * A process killed inside one of these calls leaves nothing behind: the
 * kernel drops its futex queue entry.
 */
#include "lib/internal.h"

#include <limits.h>
#include <linux/futex.h>
#include <sched.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include "lib/futex.h"

#ifndef SYS_futex_waitv
#define SYS_futex_waitv 449
#endif

int64_t
mp__now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

int
mp__deadline(int64_t timeout_ns, int64_t *deadline)
{
	if (timeout_ns == MP_FOREVER) {
		*deadline = MP__NEVER;
		return 0;
	}
	if (timeout_ns < 0)
		return -EINVAL;
	/* A timeout so long that now + timeout overflows is forever. */
	int64_t now = mp__now();
	*deadline = timeout_ns > MP__NEVER - now ? MP__NEVER : now + timeout_ns;
	return 0;
}

int64_t
mp__remaining(int64_t deadline)
{
	if (deadline == MP__NEVER)
		return -1;
	int64_t left = deadline - mp__now();
	return left > 0 ? left : 0;
}

static void
to_timespec(int64_t ns, struct timespec *ts)
{
	ts->tv_sec = ns / 1000000000;
	ts->tv_nsec = ns % 1000000000;
}

int
mp__futex_wait(const uint32_t *word, uint32_t expected, int64_t deadline)
{
	struct timespec ts, *tp = NULL;
	long rc;

	if (deadline != MP__NEVER) {
		if (deadline <= mp__now())
			return -ETIMEDOUT;
		to_timespec(deadline, &ts);
		tp = &ts;
	}
	rc = syscall(SYS_futex, word, FUTEX_WAIT_BITSET, expected, tp, NULL,
		     FUTEX_BITSET_MATCH_ANY);
	if (rc == 0)
		return 0;
	switch (errno) {
	case ETIMEDOUT:
		return -ETIMEDOUT;
	case EAGAIN: /* The word changed before we slept: re-check. */
	case EINTR:  /* A signal: re-check, the deadline still holds. */
	default:
		return 0;
	}
}

int
mp__futex_wake(uint32_t *word, int n)
{
	long rc = syscall(SYS_futex, word, FUTEX_WAKE, n, NULL, NULL, 0);

	return rc < 0 ? 0 : (int)rc;
}

/*
 * The kernel's struct futex_waitv, spelled out so that the file builds
 * against older headers too.
 */
struct kwaitv {
	uint64_t val;
	uint64_t uaddr;
	uint32_t flags;
	uint32_t reserved;
};

#define KWAITV_SIZE_U32 0x02	/* FUTEX2_SIZE_U32 */

static int waitv_missing;	/* set once futex_waitv says ENOSYS */

/* Without futex_waitv: check every word, then nap; bounded by the deadline. */
static int
waitv_poll(const struct mp__futex_waiter *w, unsigned n, int64_t deadline)
{
	for (;;) {
		for (unsigned i = 0; i < n; i++) {
			if (__atomic_load_n(w[i].word, __ATOMIC_ACQUIRE) !=
			    w[i].expected)
				return (int)i;
		}
		int64_t left = mp__remaining(deadline);
		if (left == 0)
			return -ETIMEDOUT;
		/* Sleep on the first word so that its wake is prompt. */
		int64_t nap = mp__now() + MP_MSEC(1);
		if (deadline < nap)
			nap = deadline;
		mp__futex_wait(w[0].word, w[0].expected, nap);
	}
}

int
mp__futex_waitv(const struct mp__futex_waiter *w, unsigned n,
		int64_t deadline)
{
	struct kwaitv kw[MP__WAITV_MAX];
	struct timespec ts, *tp = NULL;
	long rc;

	if (n == 0 || n > MP__WAITV_MAX)
		return -EINVAL;
	if (__atomic_load_n(&waitv_missing, __ATOMIC_RELAXED))
		return waitv_poll(w, n, deadline);
	for (unsigned i = 0; i < n; i++) {
		kw[i].val = w[i].expected;
		kw[i].uaddr = (uint64_t)(uintptr_t)w[i].word;
		kw[i].flags = KWAITV_SIZE_U32;
		kw[i].reserved = 0;
	}
	if (deadline != MP__NEVER) {
		if (deadline <= mp__now())
			return -ETIMEDOUT;
		to_timespec(deadline, &ts);
		tp = &ts;
	}
	rc = syscall(SYS_futex_waitv, kw, n, 0, tp, CLOCK_MONOTONIC);
	if (rc >= 0)
		return (int)rc;
	switch (errno) {
	case ETIMEDOUT:
		return -ETIMEDOUT;
	case ENOSYS:
		__atomic_store_n(&waitv_missing, 1, __ATOMIC_RELAXED);
		return waitv_poll(w, n, deadline);
	default:
		/* EAGAIN (a word already differs), EINTR: re-check all. */
		return 0;
	}
}
