/* SPDX-License-Identifier: MIT */
/*
 * The robust owner-word mutex under Lock, RLock, Condition, Value and
 * Array (lib/lock.c explains the protocol), and the handle forms that
 * value.c and the Condition embed.  Never installed.
 */
#ifndef MP__LOCK_H
#define MP__LOCK_H

#include <stdint.h>

#include <mproc/sync.h>

#include "lib/handle.h"
#include "lib/region.h"

/* The shared part of a Lock or RLock: 16 bytes, in any shared region. */
struct mp__mutex {
	struct mp__hdr hdr;
	uint32_t word;		/* owner tid | MP__MX_WAITERS, 0 when free */
	uint32_t count;		/* RLock recursion depth; owner-only */
};
_Static_assert(sizeof(struct mp__mutex) == 16, "mutex layout");

#define MP__MX_WAITERS 0x80000000u
#define MP__MX_TID 0x3fffffffu

#define MP__LOCK_MAGIC 0x6d706c6bu	/* "mplk" */
#define MP__RLOCK_MAGIC 0x6d70726cu	/* "mprl" */
#define MP__MUTEX_SHM_MAGIC 0x4d555458u	/* "MUTX" */

/* The handle flag of a lock that belongs to another object. */
#define MP__LOCK_BORROWED 1u

/* A Lock or RLock handle: per process, on the heap or inside another. */
struct mp_rlock {
	uint32_t magic;
	uint32_t flags;
	struct mp__mutex *m;
};

/* Initialise a shared mutex in fresh (zeroed) shared memory. */
void mp__mutex_init(struct mp__mutex *m);

/* Make h an RLock handle for m, owned by another object. */
void mp__rlock_embed(struct mp_rlock *h, struct mp__mutex *m);

/* Invalidate an embedded handle when its owner is freed. */
void mp__rlock_unembed(struct mp_rlock *h);

#endif /* MP__LOCK_H */
