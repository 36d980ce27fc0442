/* SPDX-License-Identifier: MIT */
/*
 * Internal accessors for tests and fuzzers, never exported (the version
 * script keeps mp__* out of the ABI): a harness built from the library's
 * sources uses them to play a hostile peer that writes into the shared
 * memory a primitive lives in.
 */
#ifndef MP_LIB_TESTING_H
#define MP_LIB_TESTING_H

#include <stddef.h>

#include <mproc/pipe.h>
#include <mproc/queue.h>

/*
 * The shared mapping behind q: its base and length.  Returns 0, or
 * -EINVAL for a handle that is not a live queue of this process.
 */
int mp__queue_region(const mp_queue *q, void **base, size_t *len);

/* The shared mapping behind both ends of c's pipe, as above. */
int mp__pipe_region(const mp_conn *c, void **base, size_t *len);

#endif /* MP_LIB_TESTING_H */
