/* SPDX-License-Identifier: MIT */
/*
 * Pool tasks shared by the Criterion Pool tests and the ThreadSanitizer
 * Pool driver, which are built by separate rules.
 */
#ifndef T_POOL_TASKS_H
#define T_POOL_TASKS_H

#include <errno.h>
#include <string.h>
#include <sys/types.h>

/* A long in, its square plus one out (so that 0 maps to 1, not to 0). */
static inline ssize_t
square(const void *in, size_t len, void *out, size_t cap)
{
	long v;

	if (len != sizeof(v) || cap < sizeof(v))
		return -EINVAL;
	memcpy(&v, in, sizeof(v));
	v = v * v + 1;
	memcpy(out, &v, sizeof(v));
	return sizeof(v);
}

#endif /* T_POOL_TASKS_H */
