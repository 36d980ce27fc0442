/* SPDX-License-Identifier: MIT */
/*
 * Passing file descriptors over AF_UNIX sockets (SCM_RIGHTS): how the
 * Manager hands memfds and liveness sockets to processes it did not fork.
 */
#ifndef MP__FDPASS_H
#define MP__FDPASS_H

#define MP__FDPASS_MAX 4

/*
 * Send a one-byte message (byte) carrying the n (1..MP__FDPASS_MAX) fds.
 * Never raises SIGPIPE; EINTR is retried.  The caller keeps its fds.
 * Returns 0, -EPIPE (the peer is gone), -ENOMEM, or another -errno.
 */
int mp__fd_send(int sock, char byte, const int *fds, unsigned n);

/*
 * Receive one message without waiting and exactly n (1..MP__FDPASS_MAX)
 * fds into fds[], close-on-exec.  Returns 1 when such a message came,
 * 0 at EOF, -EAGAIN when nothing is there, -EBADMSG when a message came
 * with another number of fds (those are closed, fds[] is all -1), or
 * another -errno.
 */
int mp__fd_recv(int sock, int *fds, unsigned n);

#endif /* MP__FDPASS_H */
