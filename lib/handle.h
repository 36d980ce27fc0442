/* SPDX-License-Identifier: MIT */
/*
 * Per-process heap handles of the shared objects.
 *
 * A freed handle goes back to a process-local pool instead of to malloc,
 * so that a call through it reads a cleared magic (-EINVAL) rather than
 * freed memory; a later new() of any type may reuse it, and then it is
 * that new object.  Every module's handle starts with its uint32_t magic.
 */
#ifndef MP__HANDLE_H
#define MP__HANDLE_H

#include <stddef.h>

/* The largest handle the pools keep. */
#define MP__HANDLE_MAX 256

/*
 * Zeroed memory for a handle of size <= MP__HANDLE_MAX bytes, or NULL.
 * Lock-free; safe across fork() (the pools are plain process memory).
 */
void *mp__handle_alloc(size_t size);

/* Return a handle of that size to its pool; it reads as zeroes until reused. */
void mp__handle_free(void *h, size_t size);

#endif /* MP__HANDLE_H */
