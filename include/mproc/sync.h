/* SPDX-License-Identifier: MIT */
#ifndef MPROC_SYNC_H
#define MPROC_SYNC_H

#include <mproc/common.h>

#ifdef __cplusplus
extern "C" {
#endif

/*
 * Python's synchronisation primitives between processes.  Each object
 * lives in its own anonymous shared mapping: a process forked after the
 * object was made uses it through the same pointer, and any process or
 * thread may call its functions concurrently.  Each process that holds
 * the pointer may call the object's free function once; the shared state
 * is gone when the last process has freed it (or died).  Every function
 * given NULL, or an object this process has already freed, returns
 * -EINVAL (until a later mp_*_new of a sync.h, Value or Array object
 * reuses the freed handle: it is then that object).
 */

typedef struct mp_lock mp_lock;
typedef struct mp_rlock mp_rlock;
typedef struct mp_sem mp_sem;
typedef struct mp_cond mp_cond;
typedef struct mp_event mp_event;
typedef struct mp_barrier mp_barrier;

/*
 * Make a Lock, initially unlocked.
 * Returns 0, -EINVAL (out NULL), -ENOMEM, -EMFILE or -ENFILE.
 */
MP_API int mp_lock_new(mp_lock **out);

/*
 * Acquire the lock, waiting up to timeout_ns.  Uncontended, it makes no
 * system call.  If the holder died (or its thread exited) holding it, the
 * caller takes it over and gets -EOWNERDEAD: it holds the lock and should
 * repair what the lock protects.  A holder that acquires again waits (and
 * with MP_NOWAIT gets -EAGAIN), as Python's Lock.
 * Returns 0, -EOWNERDEAD, -EAGAIN (MP_NOWAIT), -ETIMEDOUT, -EINVAL.
 */
MP_API int mp_lock_acquire(mp_lock *l, int64_t timeout_ns);

/*
 * Release the lock; any process or thread may release it, as in Python.
 * Wakes one waiter if any sleeps.  Never blocks.
 * Returns 0, -EPERM (not locked), -EINVAL.
 */
MP_API int mp_lock_release(mp_lock *l);

/* Release this process's handle (NULL is ignored).  Never blocks. */
MP_API void mp_lock_free(mp_lock *l);

/*
 * Make a reentrant lock (RLock), initially unlocked.
 * Returns 0, -EINVAL (out NULL), -ENOMEM, -EMFILE or -ENFILE.
 */
MP_API int mp_rlock_new(mp_rlock **out);

/*
 * Acquire the RLock, waiting up to timeout_ns; the owning thread acquires
 * again at once (counted).  A dead owner's lock is taken over with
 * -EOWNERDEAD (the count restarts at 1).
 * Returns 0, -EOWNERDEAD, -EAGAIN (MP_NOWAIT), -ETIMEDOUT, -EOVERFLOW
 * (2^32-1 levels), -EINVAL.
 */
MP_API int mp_rlock_acquire(mp_rlock *l, int64_t timeout_ns);

/*
 * Release one level of the RLock; the last level unlocks it and wakes one
 * waiter if any sleeps.  Never blocks.
 * Returns 0, -EPERM (the caller's thread is not the owner), -EINVAL.
 */
MP_API int mp_rlock_release(mp_rlock *l);

/*
 * Release this process's handle (NULL is ignored).  The lock of a Value,
 * an Array or a Condition made without a lock belongs to that object:
 * freeing it here does nothing.
 */
MP_API void mp_rlock_free(mp_rlock *l);

/*
 * Make a Semaphore with an initial value (at most INT32_MAX).
 * Returns 0, -EINVAL (out NULL, value too large), -ENOMEM, -EMFILE.
 */
MP_API int mp_sem_new(mp_sem **out, unsigned value);

/*
 * Make a BoundedSemaphore: as mp_sem_new, but a release that would raise
 * the value above the initial value fails with -EOVERFLOW.
 */
MP_API int mp_bsem_new(mp_sem **out, unsigned value);

/*
 * Decrement the value, waiting up to timeout_ns while it is 0.
 * Uncontended, no system call.
 * Returns 0, -EAGAIN (MP_NOWAIT), -ETIMEDOUT, -EINVAL.
 */
MP_API int mp_sem_acquire(mp_sem *s, int64_t timeout_ns);

/*
 * Increment the value and wake one waiter if any sleeps.  Never blocks.
 * Returns 0, -EOVERFLOW (a bounded semaphore at its initial value, or
 * INT32_MAX), -EINVAL.
 */
MP_API int mp_sem_release(mp_sem *s);

/* The current value (>= 0), or -EINVAL.  Never blocks. */
MP_API int mp_sem_value(const mp_sem *s);

/* Release this process's handle (NULL is ignored). */
MP_API void mp_sem_free(mp_sem *s);

/*
 * Make a Condition over lock, or over an RLock of its own when lock is
 * NULL.  The Condition does not own a lock passed in: free the lock after
 * the Condition.
 * Returns 0, -EINVAL (out NULL, lock freed), -ENOMEM, -EMFILE.
 */
MP_API int mp_cond_new(mp_cond **out, mp_rlock *lock);

/* Acquire and release the Condition's lock: as mp_rlock_acquire/release. */
MP_API int mp_cond_acquire(mp_cond *c, int64_t timeout_ns);
MP_API int mp_cond_release(mp_cond *c);

/*
 * With the lock held: release it fully, sleep until notified or up to
 * timeout_ns, and acquire it again (restoring its recursion count) before
 * returning, whatever the result.  MP_NOWAIT returns 0 at once.
 * Returns 1 (notified), 0 (timed out), -EOWNERDEAD (the lock was taken
 * back from a dead holder; held), -EPERM (lock not held), -EINVAL.
 */
MP_API int mp_cond_wait(mp_cond *c, int64_t timeout_ns);

/*
 * With the lock held: wake up to n waiters (notify_all: every waiter).
 * Exactly min(n, waiters) waits return 1 for it.  Never blocks.
 * Returns the number notified, -EPERM (lock not held), -EINVAL.
 */
MP_API int mp_cond_notify(mp_cond *c, unsigned n);
MP_API int mp_cond_notify_all(mp_cond *c);

/* Release this process's handle (and of its own lock, if it has one). */
MP_API void mp_cond_free(mp_cond *c);

/*
 * Make an Event, initially clear.
 * Returns 0, -EINVAL (out NULL), -ENOMEM, -EMFILE or -ENFILE.
 */
MP_API int mp_event_new(mp_event **out);

/* Set the flag and wake every waiter (a system call only if one sleeps). */
MP_API int mp_event_set(mp_event *e);

/* Clear the flag.  Returns 0 or -EINVAL. */
MP_API int mp_event_clear(mp_event *e);

/* Whether the flag is set (false for NULL).  Never blocks. */
MP_API bool mp_event_is_set(const mp_event *e);

/*
 * Wait up to timeout_ns for the flag.  A waiter returns 1 for a set that
 * happened while it waited even if the flag was cleared again before it
 * ran, as in Python.  MP_NOWAIT just reports the flag.
 * Returns 1 (set), 0 (timed out), -EINVAL.
 */
MP_API int mp_event_wait(mp_event *e, int64_t timeout_ns);

/* Release this process's handle (NULL is ignored). */
MP_API void mp_event_free(mp_event *e);

/*
 * Make a Barrier for parties (1..65535) processes or threads.
 * Returns 0, -EINVAL (out NULL, parties out of range), -ENOMEM, -EMFILE.
 */
MP_API int mp_barrier_new(mp_barrier **out, unsigned parties);

/*
 * Wait until parties callers have arrived, up to timeout_ns.  Each round
 * gives its callers distinct indexes 0..parties-1 (the last to arrive
 * gets parties-1).  A caller whose timeout ends breaks the barrier and gets
 * -ETIMEDOUT; the others, and every caller until mp_barrier_reset, get
 * -EPIPE.  So do they when mp_barrier_abort is called, or when a waiter of
 * the round dies.  With MP_NOWAIT only the last party can pass; any other
 * caller gets -EAGAIN and is not counted.
 * Returns the index, -EPIPE, -ETIMEDOUT, -EAGAIN, -EINVAL.
 */
MP_API int mp_barrier_wait(mp_barrier *b, int64_t timeout_ns);

/* Break the barrier: current and later waiters get -EPIPE.  0 or -EINVAL. */
MP_API int mp_barrier_abort(mp_barrier *b);

/*
 * Return the barrier to its empty, unbroken state; callers waiting in the
 * current round get -EPIPE.  Returns 0 or -EINVAL.
 */
MP_API int mp_barrier_reset(mp_barrier *b);

/* The number of parties, or -EINVAL. */
MP_API int mp_barrier_parties(const mp_barrier *b);

/* How many callers wait in the current round, or -EINVAL. */
MP_API int mp_barrier_n_waiting(const mp_barrier *b);

/* Whether the barrier is broken (false for NULL). */
MP_API bool mp_barrier_broken(const mp_barrier *b);

/* Release this process's handle (NULL is ignored). */
MP_API void mp_barrier_free(mp_barrier *b);

#ifdef __cplusplus
}
#endif
#endif /* MPROC_SYNC_H */
