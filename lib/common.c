/* SPDX-License-Identifier: MIT */
/*
 * Error strings, version, CPU count.  No shared state.
 */
#include "lib/internal.h"

#include <sched.h>
#include <string.h>
#include <unistd.h>

#include <mproc/common.h>

const char *
mp_strerror(int err)
{
	/* Accept both signs; INT_MIN has no positive twin and is unknown. */
	if (err == INT32_MIN)
		return "unknown error";
	if (err < 0)
		err = -err;
	switch (-err) {
#define MP__ERR_CASE(name, n, text) case name: return text;
		MP_ERRORS(MP__ERR_CASE)
#undef MP__ERR_CASE
	default:
		break;
	}
	if (err == 0)
		return "success";
#ifdef HAVE_STRERRORDESC_NP
	/* A static string, unlike strerror(): safe from any thread. */
	const char *s = strerrordesc_np(err);
	if (s != NULL)
		return s;
#else
	switch (err) {
	case EINVAL: return "invalid argument";
	case EAGAIN: return "resource temporarily unavailable";
	case ETIMEDOUT: return "connection timed out";
	case EPIPE: return "broken pipe";
	case EMSGSIZE: return "message too long";
	case EOWNERDEAD: return "owner died";
	case ENOMEM: return "cannot allocate memory";
	default: break;
	}
#endif
	return "unknown error";
}

const char *
mp_version(void)
{
	return MP_VERSION_STRING;
}

unsigned
mp_version_number(void)
{
	return MP_VERSION_NUMBER;
}

int
mp_cpu_count(void)
{
	cpu_set_t set;
	long n;

	if (sched_getaffinity(0, sizeof(set), &set) == 0) {
		int c = CPU_COUNT(&set);
		if (c > 0)
			return c;
	}
	n = sysconf(_SC_NPROCESSORS_ONLN);
	return n > 0 ? (int)n : 1;
}
