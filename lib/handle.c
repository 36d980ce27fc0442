/* SPDX-License-Identifier: MIT */
/*
 * Theory of operation
 *
 * Three pools of freed handles, for sizes up to 64, 128 and 256 bytes.
 * Each is a ck_stack.  Handles are never given back to malloc, so a popper
 * may read a stale next pointer without a fault, and the generation count
 * of ck_stack_pop_mpmc makes the ABA case fail its CAS.  Pooled handles
 * stay reachable: nothing leaks, and a pool never holds more handles than
 * were alive at once.
 *
 * A handle is zeroed when it is freed, so its magic reads 0 and every
 * public call through it returns -EINVAL, and again when it is reused.
 *
 * No shared memory: nothing for another process to see after a crash.
 * After fork() the child has a copy of the pools.  It is consistent even
 * if another thread was inside a push or pop at that instant, because both
 * change the stack with a single CAS of its head: the operation either
 * happened before the fork or not at all.
 *
 * The link sits at offset 8 of a pooled handle, so that its first word,
 * where every handle keeps its magic, stays 0 while it is pooled.
 */
#include "lib/internal.h"

#include <string.h>

#include <ck_stack.h>

#include "lib/handle.h"

#define NCLASS 3

static ck_stack_t pools[NCLASS] __attribute__((aligned(16))) = {
	CK_STACK_INITIALIZER, CK_STACK_INITIALIZER, CK_STACK_INITIALIZER,
};
#define LINK_OFFSET 8

static int
class_of(size_t size, size_t *bytes)
{
	for (int i = 0; i < NCLASS; i++) {
		*bytes = (size_t)64 << i;
		if (size <= *bytes)
			return i;
	}
	return -1;
}

void *
mp__handle_alloc(size_t size)
{
	ck_stack_entry_t *e;
	size_t bytes;
	int c = class_of(size, &bytes);

	if (c < 0)
		return NULL;
	if ((e = ck_stack_pop_mpmc(&pools[c])) == NULL)
		return calloc(1, bytes);
	char *h = (char *)e - LINK_OFFSET;
	memset(h, 0, bytes);
	return h;
}

void
mp__handle_free(void *h, size_t size)
{
	size_t bytes;
	int c = class_of(size, &bytes);

	if (h == NULL || c < 0)
		return;
	memset(h, 0, bytes);
	ck_stack_push_mpmc(&pools[c],
			   (ck_stack_entry_t *)((char *)h + LINK_OFFSET));
}
