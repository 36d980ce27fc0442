/* SPDX-License-Identifier: MIT */
#ifndef MPROC_PROCESS_H
#define MPROC_PROCESS_H

#include <mproc/common.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef struct mp_process mp_process;

/* A process's body; its return value (0..255) is the exit code. */
typedef int (*mp_target)(void *arg);

typedef struct mp_process_attr {
	const char *name; /* NULL: "Process-N" (or "Process-M:N" in a child) */
	int daemon;       /* 0: no; 1: yes; -1: as the calling process */
} mp_process_attr;

/*
 * Make a process object that will run target(arg) in a forked child.
 * NULL attr means defaults (name "Process-N", daemon 0).  The attr is
 * copied.  Nothing runs until mp_process_start.  The handle belongs to
 * the calling process; use it from one thread at a time.
 * Returns 0, -EINVAL (out or target NULL, daemon not -1/0/1), -ENOMEM.
 */
MP_API int mp_process_new(mp_process **out, mp_target target, void *arg,
			  const mp_process_attr *attr);

/*
 * Fork and run the target in the child, which exits with its return
 * value after terminating its own daemon children and joining the others.
 * A daemon child is killed (SIGKILL) when the thread that started it or
 * its process dies, however it dies.  Returns 0, -EINVAL (NULL, started
 * before), -EAGAIN or -ENOMEM (fork failed).
 */
MP_API int mp_process_start(mp_process *p);

/*
 * Wait up to timeout_ns for the process to end, and reap it.  Safe to
 * call again after it returned 0.  Never uses SIGCHLD.
 * Returns 0 (ended), -ETIMEDOUT, -EAGAIN (MP_NOWAIT and still running),
 * -EINVAL (NULL, not started, bad timeout).
 */
MP_API int mp_process_join(mp_process *p, int64_t timeout_ns);

/* True while the process has been started and has not ended.  Never blocks. */
MP_API bool mp_process_is_alive(mp_process *p);

/* The child's pid, 0 before start (and for NULL). */
MP_API pid_t mp_process_pid(const mp_process *p);

/*
 * Store the exit code in *code once the process has ended: 0..255, or
 * -SIG when a signal killed it (Python's convention).  Never blocks.
 * Returns 0, -EAGAIN (still running), -EINVAL (NULL, not started).
 */
MP_API int mp_process_exitcode(const mp_process *p, int *code);

/*
 * Send SIGTERM (terminate) or SIGKILL (kill) through the process's pidfd,
 * so a reused pid is never signalled.  A process that has already ended
 * is left alone.  Returns 0, or -EINVAL (NULL, not started).
 */
MP_API int mp_process_terminate(mp_process *p);
MP_API int mp_process_kill(mp_process *p);

/* The process's name; valid until mp_process_free.  NULL for NULL. */
MP_API const char *mp_process_name(const mp_process *p);

/*
 * A pidfd that becomes readable (POLLIN, for poll/epoll) when the process
 * ends.  Owned by p and closed by mp_process_free; do not close it.
 * Returns the fd, -EINVAL (NULL, not started), or -ENOSYS where the kernel
 * (or valgrind) has no pidfd_open: processes then work on their pid (the
 * starter owns the unreaped child, so that is race-free), timed joins
 * poll, and only the starter may terminate or kill (-ECHILD elsewhere).
 */
MP_API int mp_process_sentinel(const mp_process *p);

/*
 * Release the handle.  A process still running is detached: it runs on,
 * is not signalled, and is reaped when it ends (no zombie is left).
 * NULL is ignored.
 */
MP_API void mp_process_free(mp_process *p);

/*
 * The name of the calling process: "MainProcess", or the name of the
 * mp_process it runs as.  A static string; never NULL.
 */
MP_API const char *mp_current_process_name(void);

/*
 * The pid of the process that started the caller with mp_process_start,
 * even after that parent died; in a process not started by mproc,
 * getppid().
 */
MP_API pid_t mp_parent_pid(void);

#ifdef __cplusplus
}
#endif
#endif /* MPROC_PROCESS_H */
