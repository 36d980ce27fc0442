/* SPDX-License-Identifier: MIT */
/*
 * Internal: a pipe end handed to a process that is not a child, by file
 * descriptor (see "Export and import" in lib/pipe.c).
 */
#ifndef MP__PIPE_H
#define MP__PIPE_H

#include <stddef.h>

#include <mproc/pipe.h>

/*
 * Make a duplex pipe of ring_size bytes a direction (0: the default).
 * This process keeps end c1; end c2 leaves as *memfd (the region) and
 * *sockfd (c2's liveness socket), both close-on-exec, which the caller
 * passes on and closes.  Returns 0, -EINVAL, -ENOMEM, -EMFILE, -ENFILE.
 */
int mp__pipe_export(size_t ring_size, mp_conn **c1, int *memfd,
		    int *sockfd);

/*
 * Adopt end c2 of an exported pipe: map memfd (still the caller's to
 * close) and take sockfd as the end's own socket (closed by
 * mp_conn_close(); the caller's on failure).  Returns 0, -EINVAL (not an
 * exported pipe), -ENOMEM or another -errno.
 */
int mp__pipe_import(int memfd, int sockfd, mp_conn **c2);

#endif /* MP__PIPE_H */
