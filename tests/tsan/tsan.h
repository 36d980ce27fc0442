/* SPDX-License-Identifier: MIT */
/*
 * Checks for the ThreadSanitizer drivers (tests/tsan/tsan_*.c).  They are plain
 * programs, not Criterion ones (Criterion's runner does not start under
 * -fsanitize=thread): exit status 0 is a pass; a failed check prints where
 * and why on stderr and exits with 1, in whichever process it runs.
 */
#ifndef TSAN_DRIVER_H
#define TSAN_DRIVER_H

#include <stdio.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>

static const char *tsan_prog = "tsan";

static void __attribute__((noreturn, format(printf, 3, 4)))
tsan_fail(const char *file, int line, const char *fmt, ...);

#include <stdarg.h>

static void
tsan_fail(const char *file, int line, const char *fmt, ...)
{
	va_list ap;

	fprintf(stderr, "%s[%d]: FAIL %s:%d: ", tsan_prog, (int)getpid(),
		file, line);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputc('\n', stderr);
	fflush(stderr);
	/* _exit: a failing child must not run its parent's atexit work. */
	_exit(1);
}

/* A check that must hold. */
#define CHECK(cond)                                                       \
	do {                                                              \
		if (!(cond))                                              \
			tsan_fail(__FILE__, __LINE__, "%s", #cond);       \
	} while (0)

/* Two integers that must be equal; both are printed when not. */
#define CHECK_EQ(a, b)                                                    \
	do {                                                              \
		long long ce_a_ = (long long)(a), ce_b_ = (long long)(b); \
		if (ce_a_ != ce_b_)                                       \
			tsan_fail(__FILE__, __LINE__,                     \
				  "%s == %s: %lld != %lld", #a, #b,       \
				  ce_a_, ce_b_);                          \
	} while (0)

/* Monotonic nanoseconds. */
static inline long long
tsan_now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (long long)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

/* One phase's name on stdout, so that a failure's context is in the log. */
#define PHASE(name)                                                       \
	do {                                                              \
		printf("%s: %s\n", tsan_prog, name);                      \
		fflush(stdout);                                           \
	} while (0)

#endif /* TSAN_DRIVER_H */
