/* SPDX-License-Identifier: MIT */
/*
 * Pipe and Connection: Python's multiprocessing.Pipe over single-producer
 * single-consumer byte rings in memfd shared memory.
 *
 * A pipe has two ends, c1 and c2.  Each end is a per-process handle: a
 * process forked after mp_pipe() holds both ends through the same
 * pointers, and every holder closes its own copy with mp_conn_close().
 * At any moment one thread (of any process) may send on an end and one
 * may receive on it; callers serialise more than that themselves.
 * The receiver sees end of file (-EPIPE) once every process that held the
 * other end has closed it or exited, however it exited, and the ring is
 * drained.
 */
#ifndef MPROC_PIPE_H
#define MPROC_PIPE_H

#include <mproc/common.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef struct mp_conn mp_conn;

/* Bytes of ring per direction that mp_pipe() gives. */
#define MP_PIPE_RING_DEFAULT ((size_t)256 * 1024)

/*
 * Create a pipe.  Duplex: both ends send and receive.  Not duplex: c1
 * receives only and c2 sends only (Python's order); the wrong direction is
 * -EBADF.  Each direction has a ring of MP_PIPE_RING_DEFAULT bytes.
 * The calling process holds two file descriptors (close-on-exec), one an
 * end.  Returns 0, -EINVAL, -ENOMEM, -EMFILE or -ENFILE.
 */
MP_API int mp_pipe(mp_conn **c1, mp_conn **c2, bool duplex);

/*
 * As mp_pipe(), with ring_size bytes of ring per direction (rounded up to
 * a power of two, 4 KiB to 1 GiB; 0 means MP_PIPE_RING_DEFAULT).  Messages
 * of any size still pass; a larger ring only lets more be in flight.
 */
MP_API int mp_pipe_new(mp_conn **c1, mp_conn **c2, bool duplex,
		       size_t ring_size);

/*
 * Send one message of len bytes (0 allowed, any size: one larger than the
 * ring streams through it while the receiver reads).  Blocks while the
 * ring is full.  Returns 0, -EPIPE when every holder of the other end has
 * gone (seen at the latest once the ring is full), -EBADF on a receive-only
 * end, -EINVAL.
 */
MP_API int mp_conn_send(mp_conn *c, const void *msg, size_t len);

/*
 * mp_conn_send() with a relative timeout (MP_FOREVER, MP_NOWAIT or ns).
 * On -EAGAIN or -ETIMEDOUT nothing of the message is delivered: a message
 * larger than the ring that was partly written is withdrawn, and the
 * receiver skips it.
 */
MP_API int mp_conn_send_timeout(mp_conn *c, const void *msg, size_t len,
				int64_t timeout_ns);

/*
 * Receive the next message into buf (cap bytes).  Blocks while the ring is
 * empty.  Returns the message's length, -EMSGSIZE when it is longer than
 * cap (the message stays for the next call), -EPIPE at end of file (every
 * holder of the other end gone and nothing left), -EBADF on a send-only
 * end, -EINVAL, MP_ECORRUPT when a peer wrote over the ring.
 */
MP_API ssize_t mp_conn_recv(mp_conn *c, void *buf, size_t cap);

/*
 * mp_conn_recv() with a relative timeout: -EAGAIN (MP_NOWAIT) or
 * -ETIMEDOUT when no whole message arrived in time.  The part received of
 * a message larger than the ring stays with this handle, and its next
 * receive goes on with it (a receive through another handle skips it).
 */
MP_API ssize_t mp_conn_recv_timeout(mp_conn *c, void *buf, size_t cap,
				    int64_t timeout_ns);

/*
 * Receive the next message into memory from malloc() that *msg points to
 * on success (free it with free(); a 0-length message gets a 1-byte block).
 * Returns the length, or the errors of mp_conn_recv() and -ENOMEM (the
 * message then stays).
 */
MP_API ssize_t mp_conn_recv_alloc(mp_conn *c, void **msg);

/* mp_conn_recv_alloc() with a relative timeout, as mp_conn_recv_timeout(). */
MP_API ssize_t mp_conn_recv_alloc_timeout(mp_conn *c, void **msg,
					  int64_t timeout_ns);

/*
 * Whether a receive would not block: 1 when a message has arrived or the
 * end is at end of file, 0 when the timeout passed first.  Waits up to
 * timeout_ns.  Returns 1, 0, -EBADF on a send-only end, -EINVAL.
 */
MP_API int mp_conn_poll(mp_conn *c, int64_t timeout_ns);

/*
 * Close this process's copy of the end and free its handle; other
 * holders keep theirs, and a sleeper on the other end learns at once when
 * this was the last.  NULL and a closed handle are ignored; any other call
 * through a closed handle is -EINVAL (until a new handle reuses it).
 */
MP_API void mp_conn_close(mp_conn *c);

/*
 * Wait until at least one of n connections is readable (a message or end
 * of file), up to timeout_ns, and write the readable ones into ready[]
 * (room for n) in the order of conns[].  Any n >= 1.  Returns how many are
 * ready, 0 on timeout, -EBADF when one is send-only, -EINVAL.
 */
MP_API int mp_wait(mp_conn *const conns[], size_t n, mp_conn *ready[],
		   int64_t timeout_ns);

/*
 * A file descriptor, owned by c and closed by mp_conn_close(), for epoll
 * or poll: it becomes readable when a message arrives after a receive on
 * c reported -EAGAIN (or mp_conn_poll() reported 0), and at end of file.
 * Receive until -EAGAIN before each wait.  Returns the fd, -EBADF on a
 * send-only end, -EINVAL.
 */
MP_API int mp_conn_fd(mp_conn *c);

#ifdef __cplusplus
}
#endif
#endif /* MPROC_PIPE_H */
