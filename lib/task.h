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
 * The calling thread's kernel id (gettid), cached per thread without a
 * system call after the first.  Correct after fork(): the cache is reset
 * in the child by a pthread_atfork handler.  Never 0.
 */
pid_t mp__tid(void);

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
