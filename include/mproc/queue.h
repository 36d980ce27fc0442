/* SPDX-License-Identifier: MIT */
/*
 * Queue: Python's multiprocessing.Queue and JoinableQueue as a bounded
 * multi-producer multi-consumer ring of fixed slots in one memfd mapping.
 *
 * A queue made before fork() (or mp_process_start) is used by the child
 * through the same pointer; every process that holds the pointer calls
 * mp_queue_free() once.  Any number of producer and consumer processes
 * and threads may call any function at the same time, up to 256 threads
 * at once per queue (a thread that has exited frees its place for the
 * next).  A put or get that does not have to wait makes no system call
 * and takes no lock.
 */
#ifndef MPROC_QUEUE_H
#define MPROC_QUEUE_H

#include <mproc/common.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef struct mp_queue mp_queue;

/*
 * Create a queue of maxsize messages (0: 1024) of 0..msg_max bytes each
 * (0: 1024), in shared memory inherited by processes forked later.
 * Returns 0, -EINVAL (q NULL, sizes too large), -ENOMEM, -EMFILE.
 */
MP_API int mp_queue_new(mp_queue **q, size_t maxsize, size_t msg_max);

/*
 * Append a copy of len bytes at msg.  Waits while the queue is full, up to
 * timeout_ns (MP_FOREVER, MP_NOWAIT or > 0).  A put that returned 0 is
 * never lost to the caller's later death.
 * Returns 0, -EAGAIN (full, MP_NOWAIT), -ETIMEDOUT, -EPIPE (closed),
 * -EMSGSIZE (len > msg_max), -EINVAL, -EUSERS (256 other live threads
 * hold the queue's claim records: a thread holds one from its first put
 * or get until it exits or calls mp_queue_free), MP_ECORRUPT (the ring's shared memory was written over).
 */
MP_API int mp_queue_put(mp_queue *q, const void *msg, size_t len,
			int64_t timeout_ns);

/*
 * Take the oldest message into buf (cap bytes).  Waits while the queue
 * is empty, up to timeout_ns.  Returns the message's length, -EAGAIN
 * (empty, MP_NOWAIT), -ETIMEDOUT, -EPIPE (closed and drained), -EMSGSIZE
 * (the next message is longer than cap: it stays queued), -EINVAL,
 * -EUSERS (as put), MP_ECORRUPT (the next slot holds a length no put
 * wrote: something wrote over the shared memory; nothing is copied).
 */
MP_API ssize_t mp_queue_get(mp_queue *q, void *buf, size_t cap,
			    int64_t timeout_ns);

/*
 * Append msgs[0..n-1] (lengths lens[]) in order, waiting for room as put
 * does; the timeout covers the whole batch.  Up to 32 free slots in a row
 * are claimed at once, and consumers see each group whole.  Returns how many were put
 * (n, or fewer when the timeout ran out or the queue closed part way), or
 * an error as mp_queue_put when none was.  n == 0 is -EINVAL.
 */
MP_API ssize_t mp_queue_put_many(mp_queue *q, const void *const msgs[],
				 const size_t lens[], size_t n,
				 int64_t timeout_ns);

/*
 * Take up to n messages: message i goes to buf + i * cap, its length to
 * lens[i].  Waits, as get does, only for the first.  Returns how many
 * were taken (1..n), or an error as mp_queue_get; a later message longer
 * than cap ends the batch early and stays queued.  Up to 32 ready
 * messages are taken at once: buf may be written past what the call
 * returns (up to n * cap bytes) when another consumer takes them first.
 */
MP_API ssize_t mp_queue_get_many(mp_queue *q, void *buf, size_t cap,
				 size_t lens[], size_t n, int64_t timeout_ns);

/*
 * Zero-copy put, step one: claim the next slot and point *buf at its
 * msg_max bytes, waiting as put does.  The caller writes its message
 * there and hands it over with mp_queue_commit.  Consumers wait for a
 * reserved slot in order, so commit soon.  Returns as mp_queue_put.
 */
MP_API int mp_queue_reserve(mp_queue *q, void **buf, int64_t timeout_ns);

/*
 * Publish the reserved slot buf (from mp_queue_reserve in this thread)
 * holding len bytes.  Never blocks.  Returns 0, -EMSGSIZE (len > msg_max:
 * the slot stays reserved), -EINVAL (buf is not a slot this thread holds).
 */
MP_API int mp_queue_commit(mp_queue *q, void *buf, size_t len);

/*
 * Zero-copy get, step one: claim the oldest message and point *msg at it
 * in the ring, waiting as get does.  The caller reads it in place and
 * frees the slot with mp_queue_release.  Returns the message's length or
 * an error as mp_queue_get (never -EMSGSIZE).
 */
MP_API ssize_t mp_queue_peek(mp_queue *q, const void **msg,
			     int64_t timeout_ns);

/*
 * Give back the slot of a message from mp_queue_peek in this thread.
 * Never blocks.  Returns 0, -EINVAL (msg is not a slot this thread holds).
 */
MP_API int mp_queue_release(mp_queue *q, const void *msg);

/*
 * The number of queued messages: exact while no put or get runs, an
 * approximation under traffic (as Python's qsize).  0 for a bad handle.
 */
MP_API size_t mp_queue_qsize(const mp_queue *q);

/* mp_queue_qsize(q) == 0; true for a bad handle. */
MP_API bool mp_queue_empty(const mp_queue *q);

/* Exactly maxsize messages are queued (when quiet); false for a bad handle. */
MP_API bool mp_queue_full(const mp_queue *q);

/* The queue's maxsize and msg_max, as made (0 for a bad handle). */
MP_API size_t mp_queue_maxsize(const mp_queue *q);
MP_API size_t mp_queue_msg_max(const mp_queue *q);

/*
 * Close the queue for every process: puts fail with -EPIPE from now on,
 * gets drain what is queued and then fail with -EPIPE, and every sleeper
 * wakes.  Idempotent; releases nothing (mp_queue_free does).
 */
MP_API void mp_queue_close(mp_queue *q);

/* Whether mp_queue_close was called by any process. */
MP_API bool mp_queue_is_closed(const mp_queue *q);

/*
 * Messages lost to processes that died in the middle of a put (a half
 * written slot, skipped) or of a get (a claimed slot, released): one for
 * each call a death interrupted, however many messages of a batch
 * (mp_queue_put_many, mp_queue_get_many) it was handling.
 */
MP_API uint64_t mp_queue_lost(const mp_queue *q);

/*
 * JoinableQueue: mark one message taken by a get as processed.
 * Returns 0, or -EINVAL when called more often than messages were put.
 */
MP_API int mp_queue_task_done(mp_queue *q);

/*
 * JoinableQueue: wait until every message ever put has been marked by
 * mp_queue_task_done (messages lost to dead processes count as done).
 * Returns 0, -EAGAIN (MP_NOWAIT, work pending), -ETIMEDOUT, -EINVAL.
 */
MP_API int mp_queue_join(mp_queue *q, int64_t timeout_ns);

/*
 * Release this process's share: its mapping and handle, and the calling
 * thread's claim record (see -EUSERS; a later call of the thread through
 * another handle of the queue takes one again).  Other processes keep
 * using the queue.
 * Accepts NULL; the handle is invalid afterwards.
 */
MP_API void mp_queue_free(mp_queue *q);

#ifdef __cplusplus
}
#endif
#endif /* MPROC_QUEUE_H */
