/* SPDX-License-Identifier: MIT */
#ifndef MPROC_COMMON_H
#define MPROC_COMMON_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>
#include <mproc/version.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Marks what the shared library exports; everything else stays hidden. */
#if defined(__GNUC__)
#define MP_API __attribute__((visibility("default")))
#define MP_DEPRECATED(msg) __attribute__((deprecated(msg)))
#else
#define MP_API
#define MP_DEPRECATED(msg)
#endif

/*
 * Timeouts are relative and in nanoseconds.  MP_FOREVER waits without
 * limit, MP_NOWAIT never sleeps (a call that would wait returns -EAGAIN).
 * Any other negative timeout is -EINVAL.
 */
#define MP_FOREVER ((int64_t)-1)
#define MP_NOWAIT ((int64_t)0)
#define MP_USEC(n) ((int64_t)(n) * 1000)
#define MP_MSEC(n) ((int64_t)(n) * 1000000)
#define MP_SEC(n) ((int64_t)(n) * 1000000000)

/*
 * Error codes of mproc's own, beyond the kernel's errno range (4095), so
 * that they never collide with a negative errno.  One list serves the
 * enum, mp_strerror and the tests.
 */
#define MP__EBASE 0x10000
#define MP_ERRORS(X)                                                    \
	X(MP_EWORKER, 1, "pool worker died while running the task")       \
	X(MP_ESERVER, 2, "manager server went away")                      \
	X(MP_ECORRUPT, 3, "shared state is corrupt (a broken invariant)") \
	X(MP_EVERSION, 4, "shared region has another layout version")

enum {
#define MP__ERR_ENUM(name, n, text) name = -(MP__EBASE + (n)),
	MP_ERRORS(MP__ERR_ENUM)
#undef MP__ERR_ENUM
};

/*
 * Explain any code the library returns: a negative errno (a positive one
 * is accepted too) or an MP_E* code.  Never NULL; a static string, so any
 * thread may call it.
 */
MP_API const char *mp_strerror(int err);

/* The library's version as "MAJOR.MINOR.PATCH"; a static string. */
MP_API const char *mp_version(void);

/* The library's version as (MAJOR << 16) | (MINOR << 8) | PATCH. */
MP_API unsigned mp_version_number(void);

/*
 * The number of CPUs this process may run on (its affinity mask), at
 * least 1.  It is the Pool's default worker count.
 */
MP_API int mp_cpu_count(void);

#ifdef __cplusplus
}
#endif
#endif /* MPROC_COMMON_H */
