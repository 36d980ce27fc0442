/* SPDX-License-Identifier: MIT */
/*
 * The Pool's shared layout and ring formats, shared by lib/pool.c (the
 * owner: submission, the handler thread, results) and lib/pool_proc.c (the
 * spawner and worker processes).  Never installed.  See lib/pool.c for the
 * theory of operation.
 */
#ifndef MP__POOL_H
#define MP__POOL_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

#include <ck_backoff.h>
#include <ck_pr.h>

#include "lib/internal.h"
#include "lib/region.h"

#define MP__POOL_MAGIC 0x6d70706cu	/* "mppl" */
#define MP__POOL_MAXPROC 1024

/* Slot states.  Each transition has exactly one writer (theory, 4). */
enum {
	MP__S_EMPTY,	/* no worker, none wanted */
	MP__S_SPAWN,	/* handler: fork one (rings reset) */
	MP__S_LIVE,	/* spawner: forked, not reaped */
	MP__S_DEAD	/* spawner: reaped; status holds how it ended */
};

/* The control words of a single-producer single-consumer byte ring. */
struct mp__ring {
	uint64_t head MP__ALIGNED;	/* producer: bytes published */
	uint64_t tail MP__ALIGNED;	/* consumer: bytes released */
};

struct mp__slot {
	/* The spawner's line. */
	uint32_t state MP__ALIGNED;
	int32_t pid;
	int32_t status;		/* exit code, or -signal */
	uint32_t kill_req;	/* handler: please SIGKILL this worker */
	/* The worker's lines: written by it, read by the handler. */
	uint32_t ready MP__ALIGNED; /* initializer done */
	uint32_t wsleep;	/* the worker sleeps (or is about to) on wseq */
	uint32_t running MP__ALIGNED; /* an item runs (task limits only) */
	uint32_t pad;
	int64_t since;		/* when it started (task limits only) */
	/* The handler's line: the word a sleeping worker waits on. */
	uint32_t wseq MP__ALIGNED;
	struct mp__ring task;	/* handler -> worker */
	struct mp__ring res;	/* worker -> handler */
};

struct mp__pool_shm {
	struct mp__hdr hdr;
	uint32_t nslots;
	uint32_t ring_bytes;	/* a power of two */
	int32_t owner;		/* the pool owner's pid */
	uint32_t maxtasks;
	int64_t timeout_ns;
	/* Pointers, against the rule for shared structs: only forks of the
	 * owner (the spawner, the workers) read them, at the same address. */
	void (*initializer)(void *);
	void *initarg;
	/* The handler's doorbell: bumped (and woken when hsleep) by anyone
	 * who leaves it work. */
	uint32_t bell MP__ALIGNED;
	uint32_t hsleep;
	/* Set once by the handler; read by workers and the spawner. */
	uint32_t stop MP__ALIGNED;	/* exit when idle (join) */
	uint32_t killall;		/* kill every worker now (terminate) */
	int32_t evfd;			/* the spawner's request eventfd */
	int32_t pad;
	struct mp__slot slot[];
};

/*
 * A task message in a worker's task ring: this header, then ncols uint32
 * column sizes padded to 8 (starmap), then count items of in_len bytes,
 * padded to 8.
 */
struct mp__tmsg {
	uint32_t size;		/* whole message, 8-aligned, or SKIP */
	uint32_t state;		/* MP__TM_NEW, then TAKEN or STOLEN (CAS) */
	uint16_t kind;		/* MP__K_TASK or MP__K_STAR */
	uint16_t ncols;
	uint32_t count;
	uint32_t in_len;
	uint32_t pad;
	uint64_t out_cap;
	uint64_t fn;
};
enum { MP__TM_NEW, MP__TM_TAKEN, MP__TM_STOLEN };
#define MP__TM_SKIP 0xffffffffu	/* the rest of the ring up to the wrap */
enum { MP__K_TASK = 1, MP__K_STAR = 2 };

/*
 * A result block in a worker's result ring: this header, count int64 return
 * codes, then count payloads of rsize bytes, padded to 8.
 */
struct mp__rblk {
	uint64_t stamp;		/* the block's own ring position */
	uint32_t count;		/* items, or MP__RB_SKIP */
	uint32_t rsize;
};
#define MP__RB_SKIP 0xffffffffu
/* Return codes a block holds before its item ends. */
#define MP__RC_NOTSTARTED INT64_MIN
#define MP__RC_RUNNING (INT64_MIN + 1)

_Static_assert(sizeof(struct mp__tmsg) == 40, "task header");
_Static_assert(sizeof(struct mp__rblk) == 16, "result header");
_Static_assert(sizeof(struct mp__slot) % MP__CACHELINE == 0, "slot");

#define MP__ROUND8(x) (((x) + 7) & ~(size_t)7)

static inline char *
mp__pool_task_data(struct mp__pool_shm *s, unsigned i)
{
	size_t hdr = sizeof(*s) + s->nslots * sizeof(struct mp__slot);

	hdr = (hdr + 4095) & ~(size_t)4095;
	return (char *)s + hdr + (size_t)i * 2 * s->ring_bytes;
}

static inline char *
mp__pool_res_data(struct mp__pool_shm *s, unsigned i)
{
	return mp__pool_task_data(s, i) + s->ring_bytes;
}

static inline size_t
mp__pool_shm_size(unsigned nslots, size_t ring_bytes)
{
	size_t hdr = sizeof(struct mp__pool_shm) +
		     nslots * sizeof(struct mp__slot);

	hdr = (hdr + 4095) & ~(size_t)4095;
	return hdr + (size_t)nslots * 2 * ring_bytes;
}

/*
 * Brief spinning before yielding: ck_backoff's exponential back-off from
 * 16 to 2048 iterations (about 4 k in all, a few microseconds), since its
 * own initial value and ceiling are made for locks held far longer.
 * Returns false once the budget is spent.
 */
#define MP__BACKOFF_INIT 16u
#define MP__BACKOFF_CEIL 256u
static inline bool
mp__backoff(unsigned *bo)
{
	if (*bo > MP__BACKOFF_CEIL)
		return false;
	ck_backoff_eb(bo);
	ck_pr_stall();
	return true;
}

/* Ring the handler's doorbell if it sleeps (after a full fence). */
void mp__pool_ring_bell(struct mp__pool_shm *s);

/* Wake worker i if it sleeps (after a full fence). */
void mp__pool_wake_worker(struct mp__pool_shm *s, unsigned i);

/*
 * The spawner process's body: fork the workers asked for, reap them, kill
 * them all when the owner dies.  Never returns.
 */
void mp__pool_spawner(struct mp__pool_shm *s) __attribute__((noreturn));

#endif /* MP__POOL_H */
