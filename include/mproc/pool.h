/* SPDX-License-Identifier: MIT */
/*
 * Pool: a fixed set of worker processes that run tasks, as Python's
 * multiprocessing.Pool, with AsyncResult (mp_async) and the imap iterators
 * (mp_iter).  Tasks and results travel over shared-memory rings.
 *
 * Tasks are function pointers: the workers are forked from the pool's
 * owner, so a task must be a function of the program, or of a library
 * loaded before mp_pool_new.  A pool belongs to the process that made it:
 * a child forked later must not use it (it may only let it be).
 */
#ifndef MPROC_POOL_H
#define MPROC_POOL_H

#include <mproc/common.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef struct mp_pool mp_pool;
typedef struct mp_async mp_async;
typedef struct mp_iter mp_iter;

/*
 * A task: read in_len bytes at in, write at most out_cap bytes at out, and
 * return the result's length, or a negative error that fails the item.
 */
typedef ssize_t (*mp_task_fn)(const void *in, size_t in_len, void *out,
			      size_t out_cap);

/* A starmap task: args[i] points to the item's element of column i. */
typedef ssize_t (*mp_star_fn)(const void *const args[], void *out,
			      size_t out_cap);

typedef struct mp_pool_attr {
	int processes;		/* workers; 0: mp_cpu_count() */
	void (*initializer)(void *); /* run once in each worker; NULL: none */
	void *initarg;		/* its argument */
	unsigned maxtasksperchild; /* items before replacement; 0: no limit */
	int64_t task_timeout_ns; /* longer items: -ETIMEDOUT; 0: none */
	size_t ring_bytes;	/* each worker ring's bytes; 0: 1 MiB */
} mp_pool_attr;

/* Called on the pool's handler thread when a result succeeds. */
typedef void (*mp_callback)(mp_async *r, void *user);
/* Called on the pool's handler thread when a result fails with err. */
typedef void (*mp_errback)(mp_async *r, int err, void *user);

/* Most columns a starmap item may have. */
#define MP_STARMAP_MAXCOLS 64

/*
 * Start a pool: a helper process that forks the workers, the workers, and
 * one handler thread in the caller's process.  NULL attr: defaults.
 * Returns 0, -EINVAL (processes < 0 or > 1024, ring_bytes < 4 KiB or above
 * 1 GiB, task_timeout_ns < 0), -ENOMEM, -EMFILE, -EAGAIN (fork failed).
 */
MP_API int mp_pool_new(mp_pool **out, const mp_pool_attr *attr);

/*
 * Run fn(arg) in a worker and wait for it; its result is copied to out.
 * Any thread of the owner.  Returns the result's length, the task's error,
 * MP_EWORKER (the worker died), -ETIMEDOUT (task limit), -ECANCELED
 * (terminated), -EMSGSIZE (arg or out_cap too large for the rings),
 * -EINVAL (bad argument, closed pool), -EDEADLK (called from a callback).
 */
MP_API ssize_t mp_pool_apply(mp_pool *p, mp_task_fn fn, const void *arg,
			     size_t arg_len, void *out, size_t out_cap);

/*
 * Submit fn(arg) without waiting; arg is copied.  The result (up to out_cap
 * bytes) is read with mp_async_result once ready; cb or eb (either may be
 * NULL) runs on the handler thread first.  Free *r with mp_async_free.
 * Returns 0, -EINVAL, -EMSGSIZE, -ENOMEM, -EPIPE (the pool broke).
 */
MP_API int mp_pool_apply_async(mp_pool *p, mp_task_fn fn, const void *arg,
			       size_t arg_len, size_t out_cap, mp_callback cb,
			       mp_errback eb, void *user, mp_async **r);

/*
 * Apply fn to each of the n items (item_size bytes each) and write item i's
 * result at results + i * result_size; wait for all.  chunksize 0: Python's
 * default.  Returns 0, or the error of the first failed item in index
 * order (the other results are still written), or the errors of apply.
 */
MP_API int mp_pool_map(mp_pool *p, mp_task_fn fn, const void *items, size_t n,
		       size_t item_size, void *results, size_t result_size,
		       size_t chunksize);

/*
 * mp_pool_map without waiting: items are copied; results must stay valid
 * until *r is ready.  Returns 0 or the submission errors of apply_async.
 */
MP_API int mp_pool_map_async(mp_pool *p, mp_task_fn fn, const void *items,
			     size_t n, size_t item_size, void *results,
			     size_t result_size, size_t chunksize,
			     mp_callback cb, mp_errback eb, void *user,
			     mp_async **r);

/*
 * An iterator over fn applied to the items (copied), in index order.
 * chunksize 0: 1.  At most a bounded number of results wait for the
 * caller: dispatch pauses until mp_iter_next catches up.  Free *it with
 * mp_iter_free.  Returns 0 or the submission errors of apply_async.
 */
MP_API int mp_pool_imap(mp_pool *p, mp_task_fn fn, const void *items,
			size_t n, size_t item_size, size_t result_size,
			size_t chunksize, mp_iter **it);

/* As mp_pool_imap, but results come as they finish, with their index. */
MP_API int mp_pool_imap_unordered(mp_pool *p, mp_task_fn fn,
				  const void *items, size_t n,
				  size_t item_size, size_t result_size,
				  size_t chunksize, mp_iter **it);

/*
 * The next result (result_size bytes to result, its position to *index;
 * either may be NULL).  One thread at a time per iterator.  Returns 0, the
 * item's error (its index is still filled; the iterator goes on),
 * -ENOENT when every item was returned, -ETIMEDOUT, -EAGAIN (MP_NOWAIT),
 * -EINVAL, -EDEADLK (from a callback, not ready).
 */
MP_API int mp_iter_next(mp_iter *it, void *result, size_t *index,
			int64_t timeout_ns);

/* Release an iterator; items not yet dispatched are dropped. */
MP_API void mp_iter_free(mp_iter *it);

/*
 * Apply fn to n items made of ncols (1..MP_STARMAP_MAXCOLS) columns:
 * item i's argument c is cols[c] + i * col_sizes[c].  As mp_pool_map
 * otherwise.
 */
MP_API int mp_pool_starmap(mp_pool *p, mp_star_fn fn, size_t ncols,
			   const void *const cols[], const size_t col_sizes[],
			   size_t n, void *results, size_t result_size,
			   size_t chunksize);

/* mp_pool_starmap without waiting, as mp_pool_map_async. */
MP_API int mp_pool_starmap_async(mp_pool *p, mp_star_fn fn, size_t ncols,
				 const void *const cols[],
				 const size_t col_sizes[], size_t n,
				 void *results, size_t result_size,
				 size_t chunksize, mp_callback cb,
				 mp_errback eb, void *user, mp_async **r);

/*
 * Wait for a result.  Its callback has returned first.  Returns 0, the
 * task's error (map: the first failed item's), -ETIMEDOUT, -EAGAIN
 * (MP_NOWAIT), -EINVAL, -EDEADLK (from a callback, not ready).
 */
MP_API int mp_async_get(mp_async *r, int64_t timeout_ns);

/*
 * Wait for a result without reporting its outcome.  Returns 1 ready,
 * 0 timed out (MP_NOWAIT included), -EINVAL, -EDEADLK.
 */
MP_API int mp_async_wait(mp_async *r, int64_t timeout_ns);

/* Whether the result is ready (never blocks; false for NULL). */
MP_API bool mp_async_ready(mp_async *r);

/* 1 succeeded, 0 failed, -EINVAL when not ready (Python's ValueError). */
MP_API int mp_async_successful(mp_async *r);

/*
 * The result's bytes: apply_async's result and its length, or map_async's
 * results and n * result_size.  NULL (len 0) until ready or after failure
 * of an apply.  Valid until mp_async_free, after close and join too.
 */
MP_API const void *mp_async_result(mp_async *r, size_t *len);

/* Release a result (ready or not: a pending task still runs). */
MP_API void mp_async_free(mp_async *r);

/* Refuse further submissions (-EINVAL).  Returns 0, -EINVAL. */
MP_API int mp_pool_close(mp_pool *p);

/*
 * Stop now: kill every worker; pending results fail with -ECANCELED
 * (their error callbacks run) before it returns; from a callback, once the
 * callback returns.  Returns 0, -EINVAL.
 */
MP_API int mp_pool_terminate(mp_pool *p);

/*
 * After close: wait for all submitted work and for the workers to exit;
 * after terminate: for the workers to be gone.  Returns 0, -EINVAL (neither
 * closed nor terminated), -EDEADLK (from a callback).
 */
MP_API int mp_pool_join(mp_pool *p);

/*
 * Release the pool, terminating it first if it was not joined.  Leaves no
 * process, zombie, fd or mapping.  Results stay valid.  Not from a callback
 * (it does nothing there); in a forked child it releases the child's copy.
 */
MP_API void mp_pool_free(mp_pool *p);

/* The pids of the live workers, up to cap; returns the count, -EINVAL. */
MP_API int mp_pool_workers(mp_pool *p, pid_t *pids, size_t cap);

#ifdef __cplusplus
}
#endif
#endif /* MPROC_POOL_H */
