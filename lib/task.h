/* SPDX-License-Identifier: MIT */
/*
 * Who am I, and is that owner still alive: the identity stored in shared
 * words (lock owners, ring slot claimers) and the liveness check that lets
 * a survivor recover from a dead one.
 */
#ifndef MP__TASK_H
#define MP__TASK_H

#include <stdbool.h>
#include <sys/types.h>

/*
 * initial-exec TLS: a %fs-relative load instead of a __tls_get_addr call
 * on every lock acquire and queue claim (libmproc is linked, not
 * dlopen'ed late).
 */
#define MP__TLS_IE __attribute__((tls_model("initial-exec")))

extern __thread pid_t mp__cached_tid MP__TLS_IE;
pid_t mp__tid_slow(void);

/*
 * The calling thread's kernel id (gettid), cached per thread without a
 * system call after the first.  Correct after fork(): the cache is reset
 * in the child by a pthread_atfork handler.  Never 0.  Inline, since it
 * sits on the lock and queue fast paths.
 */
static inline pid_t
mp__tid(void)
{
	pid_t t = mp__cached_tid;

	return __builtin_expect(t != 0, 1) ? t : mp__tid_slow();
}

/* The calling process's id, cached the same way. */
pid_t mp__pid(void);

/*
 * Whether the task (a process or thread id) still runs: false when it
 * has exited, including a zombie that has not been reaped yet.  It reads
 * /proc, so it belongs on slow paths only (after a wait ran long).
 * A pid reused by an unrelated task reads as alive: callers pair it with
 * a timeout-driven re-check rather than trust it to be exact.
 */
bool mp__task_alive(pid_t id);

#endif /* MP__TASK_H */
