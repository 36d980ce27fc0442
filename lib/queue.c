/* SPDX-License-Identifier: MIT */
/*
 * Theory of operation
 *
 * Layout.  One memfd region holds a header and a ring of maxsize fixed
 * slots (the ring is exactly maxsize long, so "full" is exact):
 *
 *   line 0   hdr (magic, version), closed           read-mostly
 *   line 1   tail: the next position a put claims   producers
 *   line 2   head: the next position a get claims   consumers
 *   line 3   put_flag, put_seq: producers that may sleep (queue full)
 *   line 4   get_flag, get_seq: consumers that may sleep (queue empty)
 *   line 5   join_flag, join_seq, done, skipped, lost
 *   6..261   claim records, one line per task (see "Claims")
 *   slots    { word, [len, pad,] data[msg_max] } * maxsize, 8-aligned
 *
 * Positions are free-running 64-bit counters; position p lives in slot
 * p % maxsize.  Each slot's word packs, so that one store or CAS changes
 * all three at once:
 *
 *   bits 63..24  seq: the position (mod 2^40) the slot serves
 *   bits 23..22  state: FREE, WRITING, READY, READING
 *   bits 21..0   the message's length while READY; the holder's tid while
 *                WRITING or READING (zero-copy calls only; pid_max is at
 *                most 2^22, so any tid fits); 0 while FREE
 *
 * The length rides in the READY word when msg_max < 2^22, so a slot is
 * the word and the bytes, packed at 8-byte strides: 16 bytes for an 8-byte
 * message, four to a cache line, as in a bare Vyukov ring.  (Measured here,
 * 1P1C pinned, 8 B: a slot-CAS ring ran at 49 M msgs/s with 32-byte slots
 * and 112 M/s with 16-byte ones; at 64 B, rounding slots up to whole lines
 * cost 30%.)  Larger limits keep a separate len after the word.
 *
 * A slot goes round (p, FREE) -> [(p, WRITING, holder)] -> (p, READY,
 * len) -> [(p, READING, holder)] -> (p + maxsize, FREE): Vyukov's bounded
 * MPMC sequence ring.  A put claims position t by a CAS of tail from t to
 * t + 1 after seeing slot(t) at (t, FREE); a get claims h by a CAS of head
 * from h to h + 1 after seeing slot(h) at (h, READY).  A lone producer or
 * consumer keeps its index line to itself, so a message costs the slot's
 * line moving once each way and two CASes on lines already in cache.
 * (The first design claimed by a CAS on the slot word itself, which named
 * the claimer; measured in the same runs, it ran at 0.5-0.7x of the bare
 * ring unbatched, because a locked instruction on a line in the other
 * CPU's cache stalls until the line arrives, where a plain store waits in
 * the store buffer.)
 *
 * Claims.  A CAS of an index does not say who claimed, and a claimer may
 * die between its CAS and its publish.  So each task (thread) owns a
 * claim record in the header and, before each CAS, stores there its
 * intent: the position it is about to claim and the run length
 * (pos << 6 | n).  It stores 0 there when the CAS fails, and leaves the
 * intent in place after publishing (the position then is no longer stuck,
 * so the stale intent means nothing).  A claimed position is *stuck* when
 * the index is past it but its slot is still (x, FREE) (a put that did not
 * publish) or (x, READY) (a get that did not release).  A waiter blocked on
 * a stuck position x for STALL_NS scans the records: if a live task
 * declares x, it may be the claimer, and x is left to it; otherwise the
 * claimer is dead, and the waiter retires x by a CAS of the slot word:
 * a put's slot becomes a tombstone (x + maxsize, FREE), a get's goes to
 * the next lap.  The claimer's record is seen by the scan: it stored its
 * intent before its CAS, and the waiter saw the index past x (the CAS)
 * before it scanned.  A task declares only what it is claiming, so a live
 * task's record never covers a position it does not hold for longer than
 * its own failed CAS.  Consumers step over tombstones: a slot at h whose
 * seq is past h while head is still h was retired, and a CAS of head from
 * h to h + 1 skips it.
 *
 * Records are found by probing from tid % QREC_N; a record is never given
 * back to 0, so a task's own lies before the first unused one on its path.
 * A record whose owner is dead is taken over by the next newcomer, which
 * first retires whatever the dead one's intents left stuck (rec_heal); so
 * does a task that finds its own tid in a record (an earlier task with the
 * same id): at the start of a call a task holds no index claim, so a stuck
 * position its record declares cannot be its own.  mp_queue_free hands
 * the calling task's record back: its intents cleared, its owner set to
 * QREC_FREE, which probes pass like an owned record and newcomers take
 * like an unused one.  With QREC_N live tasks holding records, a call
 * returns -EUSERS.  The handle remembers the last record used through it
 * and each thread its records in a small cache, both checked against the
 * record's owner (a forked child has another tid; the record may have
 * been handed back through another handle), so a call usually finds its
 * record without a probe.
 *
 * Put at t = tail: slot(t) = (t, FREE): declare t, CAS tail; (seq < t):
 * the previous lap still holds the slot: full; anything else: tail moved
 * on, reload.  Then copy the bytes in and publish with a release (READY).
 * Get at h = head is the mirror: (h, READY) is claimed after checking its
 * length against the caller's buffer (too small: -EMSGSIZE without
 * claiming, so the message stays queued); (h, FREE or WRITING) or seq < h:
 * empty for now; seq > h with head still h: a tombstone.  The get copies
 * the message out and releases the slot to (h + maxsize, FREE).
 *
 * Runs.  put_many claims up to RUN_MAX positions with one CAS: the free
 * slots that follow t, each seen (p, FREE) before the CAS, which stay
 * free until written since only the claimer of p changes them.  It writes
 * them all, then publishes them all, so that consumers do not pull the
 * lines back while the run is being written.  get_many copies up to
 * RUN_MAX ready messages out first and then claims them with one CAS of
 * head; the CAS fails if any consumer took one of them meanwhile, and
 * only then could a slot have been released and written over during the
 * copy, so a successful CAS proves the copies whole.  A failed one drops
 * them.  A run is declared as one intent.
 *
 * Zero-copy.  reserve and peek claim as put and get do, then stamp the
 * holder into the word, (t, WRITING, tid) or (h, READING, tid): the claim
 * may be held for long, commit and release check the stamp, and a holder
 * that dies is found by its tid (STALL_NS, then mp__task_alive) without
 * the records.
 *
 * Fast paths.  mp_queue_put and mp_queue_get are leaves when the slot is
 * free (ready) at once and the length rides in the word: their checks,
 * put_try or get_try, an inline copy of up to SMALL_MAX bytes, and the
 * publish or release, with no call and no register saved; a longer
 * message is copied by a tail call (put_finish, get_finish).  Anything
 * else (a wait, a thread's first call, a bad argument, a queue closed)
 * goes to put_general or get_general and from there to the steps of
 * put_many or get_many for one message.  A blocked call spins on the
 * slot word alone: the other side's index is that side's line, read
 * only before a sleep (see struct block).
 *
 * Invariants.
 *  1. Positions below tail are claimed by producers, below head by
 *     consumers; each exactly once (a CAS of the index from the one value).
 *  2. A slot at (h, FREE) with tail == h is a truly empty queue: nothing
 *     at or past h is claimed.  A consumer returns -EPIPE on a closed
 *     queue only from that state, after re-reading both.
 *  3. The data and len of a slot are written only by its claimer, between
 *     its claim and READY, and read by consumers only after an acquire of
 *     READY, in a slot no consumer has released: a single get holds the
 *     claim; a run's copies are validated by its CAS.  seq never repeats
 *     within 2^40 positions, so a CAS that succeeds saw the same message
 *     as the loads before it (no ABA).
 *  4. Per-producer order: a producer's positions increase, and consumers
 *     take positions in increasing order.
 *  5. Join: unfinished = tail - skipped - done, where skipped counts
 *     positions retired without a message delivered (a put aborted by
 *     close, a repair).  task_done refuses to make it negative.
 *  6. A live task's record declares at most its current claim (and its
 *     last one, then published or released).
 *
 * Memory ordering (x86 is TSO; ck_pr's fences are no-ops there but are
 * written for the other models).  An intent is stored before its claim
 * CAS, which is a full barrier.  The data and len stores are ordered
 * before READY by ck_pr_fence_store; a consumer's load of READY is ordered
 * before its loads of len and data by ck_pr_fence_load; the release of a
 * slot is ordered after the copy out by ck_pr_fence_load_store.  A
 * repairer reads the index after the slot word and the records after the
 * index (ck_pr_fence_load).
 *
 * Sleeping and waking.  A blocked caller spins briefly with ck_backoff,
 * yields, then sleeps.  To sleep it sets its side's flag with an atomic
 * exchange (a full barrier), reads the side's seq, re-checks that the
 * slot word it is blocked on, the other side's index (a consumer's tail,
 * a producer's head; read just before the exchange, never while
 * spinning, since that line is the other side's) and the closed flag are
 * unchanged, and calls FUTEX_WAIT(seq, value read).  The other side reads the flag right after
 * its claim CAS (a full barrier) and, if it was set, after publishing (or
 * releasing) fences, clears the flag, increments seq and FUTEX_WAKEs
 * everyone.  The fast path thus adds one load of a line that is written
 * only when someone goes to sleep: no fence, no system call.
 *  W1. No lost wake-up for an empty or full queue.  A consumer sleeps on
 *      an empty queue only after seeing tail unchanged after its flag
 *      exchange.  The producer that claims h CASes tail, then reads the
 *      flag.  Dekker: either the producer reads the flag set and wakes
 *      after publishing, or the consumer's re-check sees tail moved and
 *      does not sleep.  If the increment of seq lands after the sleeper
 *      read seq, the kernel sees seq changed and returns at once.  The
 *      mirror argument holds for a producer on a full ring (the
 *      consumer's CAS moves head).
 *  W2. A caller blocked on a claimed slot (its claimer is copying, or
 *      preempted, or dead) may miss the claimer's wake, since the claimer
 *      read the flag at its claim, before the caller set it; so such
 *      sleeps are bounded to NAP_HELD_NS and re-checked.  This only
 *      happens when a claimer stays between claim and publish longer than
 *      the whole spin-and-yield phase.
 *  W3. A flag, not a count, so that a sleeper killed in its sleep leaves
 *      nothing behind: the next wake clears it and the dead never set it
 *      again.  Other sleeps are bounded to NAP_IDLE_NS, so a waker killed
 *      between its publish and its wake costs a bounded delay, not a hang.
 * Zero-copy commit and release may come long after the claim, so they
 * publish with an exchange and read the flag afresh.
 *
 * Close.  close sets closed (an exchange, a full barrier) and wakes both
 * sides.  A put checks closed before claiming, and again after its claim
 * CAS: if it is closed by then, the put retires what it claimed (as
 * skipped, not lost) and returns -EPIPE.  A get returns -EPIPE when it
 * sees closed and then still sees (h, FREE) with tail == h.  Either that
 * get's load of tail precedes the put's CAS, and the put sees closed after
 * it; or the get sees the claim and waits for the message: a put that
 * returned 0 is always delivered to someone.
 *
 * Crash analysis: what a survivor sees after a kill at each step.
 *  - Put, before its intent or between intent and CAS: nothing was
 *    claimed; a stale intent of a dead task covers only a position it did
 *    not claim, or one claimed by a live task that declares it too.
 *  - Put, after its CAS, before publishing (a run: before publishing the
 *    whole run): the positions are stuck (FREE behind tail).  A consumer
 *    waiting at one, or a producer a lap later, finds no live record
 *    declaring it after STALL_NS (1 ms) and tombstones it; skipped counts
 *    each position, lost counts one per dead intent (the dead record's
 *    put_mark, set by CAS, makes it once).  The put had not returned, so
 *    no acknowledged message is lost.
 *  - Put, after publishing: the message is queued and will be delivered,
 *    however the caller then dies.  A wake it did not make is made up for
 *    by the sleepers' bound (W3).
 *  - Get, before its CAS: nothing was taken (a run's copies are only in
 *    the dead caller's buffer).
 *  - Get, after its CAS, before releasing: the slots are stuck (READY
 *    behind head); a producer a lap later (or a consumer that finds one)
 *    releases them the same way; one loss counted per dead intent.
 *  - Get, after releasing: complete (it delivered the message to a task
 *    that then died, which is the caller's loss, not ours).
 *  - Zero-copy holder: its stamped slot is retired when its tid is dead
 *    (one loss).
 *  - A newcomer taking over a dead record: a kill during its healing
 *    leaves the record owned by a dead tid again, to be healed again.
 *  - A sleeper killed in FUTEX_WAIT: its flag is cleared by the next wake.
 *  - close, killed between setting closed and waking: sleepers see it at
 *    their next bounded wake-up.
 *  - A repairer killed between its CAS and its counter increments: the
 *    slot is retired, but lost and skipped stay one short; a join then
 *    waits for that one message (use a timeout).  Only a second fault
 *    inside a repair can do this.
 * A waiter that finds a claimer alive keeps waiting; a tid reused by an
 * unrelated task reads as alive, which delays the repair until that task
 * ends but never corrupts the ring.
 * The per-process handle (heap) holds only the mapping, cached sizes and
 * the record hint; freed handles go back to lib/handle's pool.
 *
 * Overlap: any number of puts, gets, batch, zero-copy, close, qsize and
 * repairs run at once; repairs race with claimers only through CAS on the
 * slot word, which a live claimer's publish or release makes fail.
 */
#include "lib/internal.h"

#include <mproc/queue.h>

#include <limits.h>
#include <sched.h>
#include <stdint.h>
#include <string.h>

#include <ck_backoff.h>
#include <ck_pr.h>

#include "lib/futex.h"
#include "lib/handle.h"
#include "lib/import.h"
#include "lib/region.h"
#include "lib/task.h"
#include "lib/testing.h"

#define QUEUE_MAGIC 0x6d707175u		/* "mpqu": the heap handle */
#define QUEUE_SHM_MAGIC 0x6d705153u	/* "mpQS": the shared header */
#define QUEUE_DEFAULT 1024

#define ST_FREE 0u
#define ST_WRITING 1u
#define ST_READY 2u
#define ST_READING 3u

#define W_SEQ_SHIFT 24
#define W_ST_SHIFT 22
#define W_TID_MASK ((1u << W_ST_SHIFT) - 1)

/* Spin rounds (ck_backoff doubling from SPIN_START), yields, then sleep. */
#define SPIN_START 256u
#define SPIN_ROUNDS 6
#define YIELD_ROUNDS 1
/* How long a slot may stay claimed before its claimer's liveness is checked. */
#define STALL_NS MP_MSEC(1)
/* How long rec_heal waits for a live task declaring a dead claim's slot. */
#define HEAL_WAIT_NS MP_MSEC(10)
/* Bounds of one futex sleep: blocked on a claimed slot, and otherwise. */
#define NAP_HELD_NS MP_USEC(200)
#define NAP_IDLE_NS MP_MSEC(100)

/* Claim records: tasks that may use one queue at the same time. */
#define QREC_N 256u
/* A record's owner once handed back (rec_release): no tid is this large. */
#define QREC_FREE UINT32_MAX
/* Positions one claim of put_many may take with one CAS. */
#define RUN_MAX 32u
/* An intent packs pos << IT_RUN_BITS | run length (1..RUN_MAX). */
#define IT_RUN_BITS 6
#define IT_RUN_MASK ((UINT64_C(1) << IT_RUN_BITS) - 1)

#define MAX_MAXSIZE ((size_t)1 << 30)
#define MAX_MSG ((size_t)1 << 30)

struct side {
	uint32_t flag;		/* set by a caller that may sleep */
	uint32_t seq;		/* the futex word: bumped by each wake */
	char pad[MP__CACHELINE - 8];
};

/*
 * One task's claim record (see "Claims"): the positions it is about to
 * take or holds, on each side.  A line of its own, written only by its
 * owner (and, once the owner is dead, by whoever repairs or takes it).
 */
struct qrec {
	uint32_t tid;		/* the owner; 0: never used; QREC_FREE */
	uint32_t pad;
	uint64_t put;		/* intent: pos << IT_RUN_BITS | n; 0: none */
	uint64_t get;
	uint64_t put_mark;	/* the dead owner's intent whose loss counted */
	uint64_t get_mark;
	char pad2[MP__CACHELINE - 40];
};
_Static_assert(sizeof(struct qrec) == MP__CACHELINE, "a record, a line");

struct qshm {
	struct mp__hdr hdr;
	uint32_t closed;
	char pad0[MP__CACHELINE - sizeof(struct mp__hdr) - 4];
	uint64_t tail MP__ALIGNED;	/* the next position a put claims */
	char pad1[MP__CACHELINE - 8];
	uint64_t head MP__ALIGNED;	/* the next position a get claims */
	char pad2[MP__CACHELINE - 8];
	struct side put MP__ALIGNED;	/* producers waiting for room */
	struct side get MP__ALIGNED;	/* consumers waiting for messages */
	struct {
		uint32_t flag;
		uint32_t seq;
		uint64_t done;		/* task_done calls */
		uint64_t skipped;	/* positions retired, no message */
		uint64_t lost;		/* messages lost to dead tasks */
		char pad[MP__CACHELINE - 32];
	} join MP__ALIGNED;
	struct qrec rec[QREC_N] MP__ALIGNED;
};
_Static_assert(sizeof(struct qshm) == (6 + QREC_N) * MP__CACHELINE,
	       "queue header: six lines and the records");

/*
 * A slot's header: the word, then (only when the length does not fit in
 * the word, see q->len_inline) the length; the data follows at
 * q->data_off.
 */
struct slot {
	uint64_t word;
	uint32_t len;
};
/* Lengths up to this ride in the READY word's low bits. */
#define INLINE_LEN_MAX W_TID_MASK
#define DATA_OFF_INLINE 8u
#define DATA_OFF_LEN 16u

/*
 * A claimed slot word seen blocking, and since when.  A waiting call
 * keeps its own; MP_NOWAIT calls, which do not wait, share one in the
 * handle (threads may overwrite each other's, which only delays a repair).
 */
struct stall {
	uint64_t word;
	uint64_t since;
};

/*
 * The per-process handle (from lib/handle: its magic comes first); the
 * other fields are copies of what never changes, and a cache.
 */
struct mp_queue {
	uint32_t magic;
	struct qshm *s;
	unsigned char *slots;
	size_t maplen;
	uint64_t cap;		/* maxsize: slots in the ring */
	uint64_t mask;		/* cap - 1, used when cap is a power of two */
	bool pow2;
	size_t msg_max;
	size_t slot_size;
	size_t data_off;	/* where a slot's bytes start */
	bool len_inline;	/* the length is in the READY word */
	/*
	 * The leaf paths' limit, exclusive: msg_max + 1, or 0 for a queue
	 * the leaves cannot serve (a length not in the word), so that one
	 * compare of a length checks it against msg_max and tests the
	 * queue's layout too.
	 */
	size_t leaf_lim;
	/* The record last used here (see rec_mine), or &no_rec. */
	struct qrec *rec_hint;
	/* The claimed slot last seen blocking a MP_NOWAIT call here. */
	struct stall nowait_stall;
};
_Static_assert(sizeof(struct mp_queue) <= MP__HANDLE_MAX,
	       "the handle comes from lib/handle's pools");

/*
 * What a blocked operation waits on: the slot, the word it saw, the
 * position that word serves, and the other side's index (a consumer's
 * tail, a producer's head) with its value as seen after the word, read
 * only when needed (block_see): a spinning producer that read head on
 * every round pulled the consumer's head line away from it, so that each
 * of the consumer's claims waited for the line to come back (perf, 1P1C
 * 8 B: 44% of a get's samples on its CAS of head).
 */
struct block {
	struct slot *sl;
	uint64_t w;
	uint64_t pos;
	uint64_t *idx;
	uint64_t iv;
};

/*
 * Wait state of one call.  The deadline is computed at the first wait, so
 * that a call that never waits never reads the clock.
 */
#define DL_NOWAIT (MP__NEVER - 1)
#define DL_UNSET ((int64_t)-1)
struct waiter {
	int64_t timeout;
	int64_t deadline;
	struct stall stall;
	unsigned rounds;
	ck_backoff_t bo;
};

static inline uint64_t
mkw(uint64_t seq, uint32_t st, uint32_t tid)
{
	return (seq << W_SEQ_SHIFT) | ((uint64_t)st << W_ST_SHIFT) | tid;
}

static inline uint32_t
w_state(uint64_t w)
{
	return (uint32_t)(w >> W_ST_SHIFT) & 3u;
}

static inline uint32_t
w_tid(uint64_t w)
{
	return (uint32_t)w & W_TID_MASK;
}

static inline uint64_t
w_seq(uint64_t w)
{
	return w >> W_SEQ_SHIFT;
}

/* seq - pos, both taken mod 2^40, as a signed distance. */
static inline int64_t
seqdiff(uint64_t w, uint64_t pos)
{
	return (int64_t)((w_seq(w) - pos) << W_SEQ_SHIFT) >> W_SEQ_SHIFT;
}

/* Stamped by a zero-copy claim: the word names the holder. */
static inline bool
w_held(uint64_t w)
{
	uint32_t st = w_state(w);

	return st == ST_WRITING || st == ST_READING;
}

/* The word of a FREE slot for pos, with its low bits cleared. */
static inline uint64_t
free_word(uint64_t pos)
{
	return mkw(pos, ST_FREE, 0);
}

static inline uint64_t
intent(uint64_t pos, uint32_t n)
{
	return (pos << IT_RUN_BITS) | n;
}

/* Whether intent it declares position x (positions mod 2^58). */
static inline bool
covers(uint64_t it, uint64_t x)
{
	uint64_t d = ((x << IT_RUN_BITS) - (it & ~IT_RUN_MASK)) >> IT_RUN_BITS;

	return d < (it & IT_RUN_MASK);
}

static inline struct slot *
slot_at(const struct mp_queue *q, uint64_t pos)
{
	uint64_t i = MP__LIKELY(q->pow2) ? pos & q->mask : pos % q->cap;

	return (struct slot *)(q->slots + i * q->slot_size);
}

static inline unsigned char *
slot_data(const struct mp_queue *q, struct slot *sl)
{
	return (unsigned char *)sl + q->data_off;
}

/*
 * slot_data for the leaf paths, which serve only queues with the length
 * in the word (see leaf_lim).
 */
static inline unsigned char *
leaf_data(struct slot *sl)
{
	return (unsigned char *)sl + DATA_OFF_INLINE;
}

/* The READY word of a message of len bytes at pos. */
static inline uint64_t
ready_word(const struct mp_queue *q, uint64_t pos, size_t len)
{
	return mkw(pos, ST_READY, q->len_inline ? (uint32_t)len : 0);
}

/*
 * The length of the message in a slot whose word w was loaded READY; the
 * caller has not claimed it yet, and its CAS from w later proves that the
 * length belonged to the same message (invariant 3).
 */
static inline size_t
ready_len(const struct mp_queue *q, const struct slot *sl, uint64_t w)
{
	if (MP__LIKELY(q->len_inline))
		return w_tid(w);
	/* Orders the len load after READY's load. */
	ck_pr_fence_load();
	return ck_pr_load_32(&sl->len);
}

/*
 * Copy at most SMALL_MAX bytes with overlapping moves, inline: no call,
 * so the fast paths below need no register saves.  At 8-byte messages
 * the call to memcpy and glibc's dispatch were a quarter of a put's
 * instructions.  Every byte read or written lies in [0, n); src and dst
 * never overlap (a slot and a caller's buffer).
 */
#define SMALL_MAX 64
static inline void
copy16(unsigned char *d, const unsigned char *p)
{
	unsigned __int128 a;

	memcpy(&a, p, 16);
	memcpy(d, &a, 16);
}

/* 17 to SMALL_MAX bytes. */
static inline void
copy_mid(unsigned char *d, const unsigned char *p, size_t n)
{
	copy16(d, p);
	if (n > 32) {
		copy16(d + 16, p + 16);
		copy16(d + n - 32, p + n - 32);
	}
	copy16(d + n - 16, p + n - 16);
}

/* 0 to 16 bytes, the commonest sizes. */
static inline void
copy_upto16(unsigned char *d, const unsigned char *p, size_t n)
{
	if (n >= 8) {
		uint64_t a, b;

		memcpy(&a, p, 8);
		memcpy(&b, p + n - 8, 8);
		memcpy(d, &a, 8);
		memcpy(d + n - 8, &b, 8);
	} else if (n >= 4) {
		uint32_t a, b;

		memcpy(&a, p, 4);
		memcpy(&b, p + n - 4, 4);
		memcpy(d, &a, 4);
		memcpy(d + n - 4, &b, 4);
	} else if (n > 0) {
		d[0] = p[0];
		d[n / 2] = p[n / 2];
		d[n - 1] = p[n - 1];
	}
}

static inline void
copy_small(void *dst, const void *src, size_t n)
{
	if (MP__UNLIKELY(n > 16))
		copy_mid(dst, src, n);
	else
		copy_upto16(dst, src, n);
}

/* Copy a message in or out (dst and src may be NULL when n is 0). */
static inline void
copy_msg(void *dst, const void *src, size_t n)
{
	if (n <= SMALL_MAX)
		copy_small(dst, src, n);
	else
		memcpy(dst, src, n);
}

static inline uint32_t
me(void)
{
	return (uint32_t)mp__tid() & W_TID_MASK;
}

static bool
valid(const struct mp_queue *q)
{
	return q != NULL && q->magic == QUEUE_MAGIC &&
	       q->s->hdr.magic == QUEUE_SHM_MAGIC &&
	       q->s->hdr.version == MP__LAYOUT_VERSION;
}

/* Wake every sleeper of a side, but only when one may sleep. */
static inline void
wake_side(struct side *sd)
{
	/* Pairs with the sleeper's flag exchange; the caller has fenced. */
	if (ck_pr_load_32(&sd->flag) == 0)
		return;
	if (ck_pr_fas_32(&sd->flag, 0) == 0)
		return;
	ck_pr_inc_32(&sd->seq);
	mp__futex_wake(&sd->seq, INT_MAX);
}

static void
wake_join(struct qshm *s)
{
	if (ck_pr_load_32(&s->join.flag) != 0 &&
	    ck_pr_fas_32(&s->join.flag, 0) != 0) {
		ck_pr_inc_32(&s->join.seq);
		mp__futex_wake(&s->join.seq, INT_MAX);
	}
}

/* After a repair or a retirement: whoever waits may move on. */
static void
wake_all(struct qshm *s)
{
	ck_pr_fence_atomic_load();
	wake_side(&s->put);
	wake_side(&s->get);
	wake_join(s);
}

/*
 * Count one lost message for a repair of a position declared by intent it
 * of a dead record's mark: once per intent, however many of its positions
 * are repaired and by whom (a put_many run).  mark NULL: no record named
 * the claim, count it.
 */
static void
count_loss(struct qshm *s, uint64_t *mark, uint64_t it)
{
	uint64_t m;

	if (mark != NULL) {
		m = ck_pr_load_64(mark);
		if (m == it || !ck_pr_cas_64(mark, m, it))
			return;
	}
	ck_pr_inc_64(&s->join.lost);
}

/*
 * Retire a slot stamped by a zero-copy holder that died:
 * (seq, WRITING|READING, tid) -> (seq + cap, FREE).  Only the CAS winner
 * counts the loss.
 */
static bool
repair_held(struct mp_queue *q, struct slot *sl, uint64_t w)
{
	struct qshm *s = q->s;

	if (!ck_pr_cas_64(&sl->word, w, free_word(w_seq(w) + q->cap)))
		return false;
	ck_pr_inc_64(&s->join.skipped);
	count_loss(s, NULL, 0);
	wake_all(s);
	return true;
}

/* Which side's intent a record scan reads. */
enum { PUT_SIDE, GET_SIDE };

static inline uint64_t *
rec_intent(struct qrec *r, int side)
{
	return side == PUT_SIDE ? &r->put : &r->get;
}

/*
 * A dead claim to charge a repair to: the record and the intent it
 * declared, as read when it was judged (the record may be taken over and
 * reused while the repair runs).  r NULL: no record declared it.
 */
struct culprit {
	struct qrec *r;
	uint64_t it;
};

/*
 * Whether a live task other than skip declares position x on side: then
 * it may be the one that claimed x, and x must be left to it.  Otherwise
 * *c is the first dead record declaring x, if any.  The caller has seen x
 * claimed (the index past x) before it calls, and a claimer declares
 * before its index CAS, so the claimer's record is seen here (see
 * "Claims").
 */
static bool
live_cover(struct mp_queue *q, int side, uint64_t x, const struct qrec *skip,
	   struct culprit *c)
{
	struct qshm *s = q->s;

	c->r = NULL;
	c->it = 0;
	ck_pr_fence_load();
	for (uint32_t i = 0; i < QREC_N; i++) {
		struct qrec *r = &s->rec[i];
		uint64_t it;
		uint32_t tid;

		if (r == skip)
			continue;
		it = ck_pr_load_64(rec_intent(r, side));
		if (!covers(it, x))
			continue;
		tid = ck_pr_load_32(&r->tid);
		if (tid == 0 || tid == QREC_FREE)
			continue;
		if (mp__task_alive((pid_t)tid))
			return true;
		if (c->r == NULL) {
			c->r = r;
			c->it = it;
		}
	}
	return false;
}

/*
 * Whether position x on side is claimed (the index is past it) and not
 * yet published (a put) or released (a get): what a dead claimer leaves.
 * *wp gets the word seen.
 */
static bool
stuck(struct mp_queue *q, int side, uint64_t x, uint64_t *wp)
{
	struct qshm *s = q->s;
	uint64_t w = ck_pr_load_64(&slot_at(q, x)->word);

	*wp = w;
	ck_pr_fence_load();
	if (side == PUT_SIDE)
		return w == free_word(x) &&
		       (int64_t)(ck_pr_load_64(&s->tail) - x) > 0;
	return (w & ~(uint64_t)W_TID_MASK) == mkw(x, ST_READY, 0) &&
	       (int64_t)(ck_pr_load_64(&s->head) - x) > 0;
}

/*
 * Retire position x of side, claimed by a task that no live record
 * declares: a put's slot becomes a tombstone (seq + cap, FREE) that
 * consumers step over; a get's slot goes to the next lap, its message
 * lost.  The loss is counted once per dead intent (c), however many of
 * its positions are retired and by whom.  Returns whether this call
 * retired x.
 */
static bool
repair_claim(struct mp_queue *q, int side, uint64_t x, uint64_t w,
	     const struct culprit *c)
{
	struct qshm *s = q->s;
	uint64_t *mark = NULL;

	if (!ck_pr_cas_64(&slot_at(q, x)->word, w, free_word(x + q->cap)))
		return false;
	ck_pr_inc_64(&s->join.skipped);
	if (c->r != NULL)
		mark = side == PUT_SIDE ? &c->r->put_mark : &c->r->get_mark;
	count_loss(s, mark, c->it);
	wake_all(s);
	return true;
}

/*
 * After x was retired for the dead intent c: retire the rest of its run
 * too, so that a hole of n positions costs one stall, not n.  Positions
 * a live task declares are left to it.
 */
static void
repair_rest(struct mp_queue *q, int side, uint64_t x, const struct culprit *c)
{
	uint64_t p = c->it >> IT_RUN_BITS, w;
	struct culprit other;

	for (uint64_t i = 0; i < (c->it & IT_RUN_MASK); i++)
		if (p + i != x && stuck(q, side, p + i, &w) &&
		    !live_cover(q, side, p + i, NULL, &other))
			repair_claim(q, side, p + i, w, c);
}

/*
 * A record taken over from a dead owner (or found with this tid, left by
 * an earlier task of the same id): retire what its intents claimed and
 * never finished, then clear them.  The new owner holds no claim yet, so
 * nothing its record declares is its own.  A live task that declares a
 * stuck position too is either its real claimer, about to publish, or a
 * task whose CAS for it is failing, about to withdraw: wait a little for
 * either, so that the dead intent is not cleared while it is the only
 * record of the claim (the loss would then be counted per position).
 */
static MP__COLD void
rec_heal(struct mp_queue *q, struct qrec *r)
{
	for (int side = PUT_SIDE; side <= GET_SIDE; side++) {
		struct culprit c = { r, ck_pr_load_64(rec_intent(r, side)) };
		uint64_t p = c.it >> IT_RUN_BITS, w;
		struct culprit other;

		for (uint64_t i = 0; i < (c.it & IT_RUN_MASK); i++) {
			int64_t until = 0;

			while (stuck(q, side, p + i, &w)) {
				if (!live_cover(q, side, p + i, r, &other)) {
					repair_claim(q, side, p + i, w, &c);
					break;
				}
				if (until == 0)
					until = mp__now() + HEAL_WAIT_NS;
				else if (mp__now() >= until)
					break;
				sched_yield();
			}
		}
		ck_pr_store_64(rec_intent(r, side), 0);
	}
}

/*
 * Each thread remembers its record in the last few queues it used, by the
 * queue's address: a thread-local cache, so that threads sharing a handle
 * do not evict each other's.
 */
#define RCACHE_N 8u
#define RCACHE_SLOT(s) (((uintptr_t)(s) >> 12) % RCACHE_N)
struct rcache {
	const struct qshm *s;
	uint32_t idx;
};
static __thread struct rcache rec_cache[RCACHE_N] MP__TLS_IE;

/*
 * The record owned by tid, or NULL: it lies on tid's probe path before
 * the first record never used, since records never go back to 0.
 */
static struct qrec *
rec_find(struct qshm *s, uint32_t tid)
{
	for (uint32_t i = 0; i < QREC_N; i++) {
		struct qrec *r = &s->rec[(tid % QREC_N + i) % QREC_N];
		uint32_t t = ck_pr_load_32(&r->tid);

		if (t == tid)
			return r;
		if (t == 0)
			break;
	}
	return NULL;
}

/*
 * Find or take the calling task's record.  Records are never given back
 * to 0, so a task's own record lies before the first unused one on its
 * probe path; a record handed back (QREC_FREE) is taken as it is, one
 * whose owner died after its claims are healed.  NULL: QREC_N live tasks
 * hold them all.
 */
static MP__COLD struct qrec *
rec_attach(struct mp_queue *q, uint32_t tid)
{
	struct qshm *s = q->s;
	uint32_t h = tid % QREC_N, idx = 0, t;
	struct qrec *r = rec_find(s, tid);

	if (r != NULL) {
		idx = (uint32_t)(r - s->rec);
		rec_heal(q, r);
		goto found;
	}
	for (uint32_t i = 0; i < QREC_N; i++) {
		idx = (h + i) % QREC_N;
		r = &s->rec[idx];
		t = ck_pr_load_32(&r->tid);
		if ((t == 0 || t == QREC_FREE) && ck_pr_cas_32(&r->tid, t, tid))
			goto found;
		if (t != 0 && t != QREC_FREE && t != tid &&
		    !mp__task_alive((pid_t)t) &&
		    ck_pr_cas_32(&r->tid, t, tid)) {
			rec_heal(q, r);
			goto found;
		}
	}
	return NULL;
found:
	rec_cache[RCACHE_SLOT(s)].s = s;
	rec_cache[RCACHE_SLOT(s)].idx = idx;
	return r;
}

/* What a new handle's hint names: a record no task owns or takes. */
static const struct qrec no_rec = { .tid = QREC_FREE };

/*
 * Whether r, the record a handle remembers, is the calling task's (the
 * leaf paths and rec_of ask).  A record whose owner is the caller is the
 * caller's, however the hint came to name it: the hint of a handle
 * copied into a forked child names the parent's record, and a record may
 * have been handed back through another handle (rec_release) and taken
 * since; either way, its owner is another.  A hinted record's owner is never 0 (records never go back to
 * 0, and no_rec is QREC_FREE), so a thread whose tid is not cached yet
 * (0) misses too.  The record is our own line: the look is a hit.
 */
static inline bool
rec_mine(const struct qrec *r, uint32_t tid)
{
	return ck_pr_load_32(&r->tid) == tid;
}

/*
 * The calling task's record: the handle's, else this thread's cache,
 * else rec_attach.  The thread's cache entry is checked against the
 * record's owner, which makes a stale one harmless: one copied into a
 * forked child (another tid), or one for a queue unmapped since (the
 * record then is ours only if we took it in the queue mapped there now).
 * NULL: no record is free (-EUSERS).
 */
static struct qrec *
rec_of(struct mp_queue *q, uint32_t tid)
{
	struct qrec *r = ck_pr_load_ptr(&q->rec_hint);
	const struct rcache *c;

	if (MP__LIKELY(rec_mine(r, tid)))
		return r;
	c = &rec_cache[RCACHE_SLOT(q->s)];
	if (c->s == q->s &&
	    ck_pr_load_32(&q->s->rec[c->idx % QREC_N].tid) == tid)
		r = &q->s->rec[c->idx % QREC_N];
	else if ((r = rec_attach(q, tid)) == NULL)
		return NULL;
	ck_pr_store_ptr(&q->rec_hint, r);
	return r;
}


/*
 * Hand the calling task's record back (mp_queue_free), so that tasks
 * that used a queue once and live on do not keep QREC_N records from
 * others.  Only the caller's own: between calls it holds no claim;
 * another thread of this process may be inside a call through another
 * handle, and keeps its record.  A record with our tid that an earlier
 * task of the same id left is healed first, as rec_attach would (for our
 * own, whose intents are published or released, that finds nothing).
 * The intents are cleared before the owner, so a record marked free
 * declares nothing; a handle that still names the record sees the owner
 * changed (rec_mine).  Killed half way, the record is left to a dead
 * owner, and taken over as any other.
 */
static void
rec_release(struct mp_queue *q, uint32_t tid)
{
	struct qshm *s = q->s;
	struct rcache *c = &rec_cache[RCACHE_SLOT(s)];
	struct qrec *r = rec_find(s, tid);

	if (r != NULL) {
		rec_heal(q, r);
		/* Scans read the intent, then the owner. */
		ck_pr_fence_store();
		ck_pr_store_32(&r->tid, QREC_FREE);
	}
	if (c->s == s)
		c->s = NULL;
}

/*
 * Called while blocked: once the same claimed word has blocked this
 * process for STALL_NS, ask whether its claimer lives, and repair the
 * slot when it does not.  A word stamped by a zero-copy claim names its
 * holder; an index claim is looked up in the records.  Returns true when
 * the slot was repaired (by us or by someone else: the word moved on).
 */
static bool
stalled(struct mp_queue *q, const struct block *b, struct stall *st)
{
	struct culprit c;
	uint64_t now, w;
	int side;

	if (w_held(b->w)) {
		side = -1;
	} else {
		side = w_state(b->w) == ST_FREE ? PUT_SIDE : GET_SIDE;
		if (!stuck(q, side, b->pos, &w) || w != b->w)
			return false;
	}
	now = (uint64_t)mp__now();
	if (ck_pr_load_64(&st->word) != b->w) {
		ck_pr_store_64(&st->word, b->w);
		ck_pr_store_64(&st->since, now);
		return false;
	}
	if ((int64_t)(now - ck_pr_load_64(&st->since)) < STALL_NS)
		return false;
	if (side < 0 ? mp__task_alive((pid_t)w_tid(b->w)) :
		       live_cover(q, side, b->pos, NULL, &c)) {
		ck_pr_store_64(&st->since, now);
		return false;
	}
	if (side < 0)
		return repair_held(q, b->sl, b->w) ||
		       ck_pr_load_64(&b->sl->word) != b->w;
	if (!repair_claim(q, side, b->pos, b->w, &c))
		return ck_pr_load_64(&b->sl->word) != b->w;
	if (c.r != NULL)
		repair_rest(q, side, b->pos, &c);
	return true;
}

/* Read the other side's index, after the word that blocked. */
static inline void
block_see(struct block *b)
{
	ck_pr_fence_load();
	b->iv = ck_pr_load_64(b->idx);
}

/*
 * Whether a block is on a claimed slot (a claimer at work, or dead), as
 * of the last block_see.
 */
static inline bool
block_claimed(const struct block *b)
{
	return w_held(b->w) || (int64_t)(b->iv - b->pos) > 0;
}

/*
 * A put claimed positions t..t+n-1 and then found the queue closed: hand
 * them on as tombstones (skipped, not lost) and wake whoever waits.
 */
static MP__COLD void
retire_run(struct mp_queue *q, uint64_t t, uint32_t n)
{
	struct qshm *s = q->s;

	for (uint32_t i = 0; i < n; i++)
		ck_pr_fas_64(&slot_at(q, t + i)->word, free_word(t + i + q->cap));
	ck_pr_add_64(&s->join.skipped, n);
	wake_all(s);
}

/*
 * How many positions one claim may look at.  Each step means another
 * process took the position (or the index moved on), so a healthy ring
 * needs about its length plus what others claim meanwhile; only words a
 * peer wrote over (seqs far ahead, a garbage index) send a claim along
 * 2^40 positions.  The bound turns that endless loop into MP_ECORRUPT.
 */
#define SCAN_MAX(q) (4 * (q)->cap + 65536)

/*
 * Producer claim of up to want (1..RUN_MAX) positions in a row, declared
 * in r.  On success *pos and *got are the run, and *saw is or-ed with
 * the consumers' sleep flag as read after the claim.  Returns 1
 * (claimed), 0 (full: *b says on what), -EPIPE (closed; a run claimed
 * after the close is retired), MP_ECORRUPT (SCAN_MAX).
 */
static int
claim_put(struct mp_queue *q, struct qrec *r, uint32_t want, uint64_t *pos,
	  uint32_t *got, struct block *b, uint32_t *saw)
{
	struct qshm *s = q->s;
	uint64_t t = ck_pr_load_64(&s->tail), w, looked = 0;
	struct slot *sl;
	uint32_t n;
	int64_t d;

	for (;;) {
		/* See SCAN_MAX: only a ring written over gets this far. */
		if (MP__UNLIKELY(++looked > SCAN_MAX(q)))
			return MP_ECORRUPT;
		sl = slot_at(q, t);
		w = ck_pr_load_64(&sl->word);
		d = seqdiff(w, t);
		if (w == free_word(t)) {
			/*
			 * A run: the free slots that follow.  Once claimed
			 * they stay free until written, so put_run needs no
			 * further check.
			 */
			for (n = 1; n < want && n < q->cap; n++)
				if (ck_pr_load_64(&slot_at(q, t + n)->word) !=
				    free_word(t + n))
					break;
			/* Declare, then claim: see "Claims". */
			ck_pr_store_64(&r->put, intent(t, n));
			if (!ck_pr_cas_64_value(&s->tail, t, t + n, &t)) {
				ck_pr_store_64(&r->put, 0);
				continue;
			}
			/*
			 * The CAS is a full barrier: these loads of closed
			 * and of the sleep flag are ordered after the claim
			 * (see "Close" and "Sleeping and waking").
			 */
			ck_pr_fence_atomic_load();
			if (MP__UNLIKELY(ck_pr_load_32(&s->closed) != 0)) {
				retire_run(q, t, n);
				return -EPIPE;
			}
			*saw |= ck_pr_load_32(&s->get.flag);
			*pos = t;
			*got = n;
			return 1;
		}
		if (d < 0) {
			/* The previous lap still holds the slot: full. */
			b->sl = sl;
			b->w = w;
			b->pos = t + (uint64_t)d;
			b->idx = &s->head;
			return 0;
		}
		/* Claimed already (d >= 0): our view of tail is old. */
		t = ck_pr_load_64(&s->tail);
	}
}

/*
 * Consumer claim of one message, declared in r.  Returns 1 (claimed; *pos,
 * *out, *lenp set, *saw or-ed with the producers' sleep flag), 0 (empty:
 * *b says on what), -EMSGSIZE (the next message exceeds cap; it is left
 * as it is), MP_ECORRUPT (its length exceeds msg_max: a peer wrote over
 * the ring; nothing is copied and the slot is left as it is; or SCAN_MAX).
 */
static int
claim_get(struct mp_queue *q, struct qrec *r, size_t cap, uint64_t *pos,
	  struct slot **out, size_t *lenp, struct block *b, uint32_t *saw)
{
	struct qshm *s = q->s;
	uint64_t h = ck_pr_load_64(&s->head), w, looked = 0;
	struct slot *sl;
	int64_t d;

	for (;;) {
		if (MP__UNLIKELY(++looked > SCAN_MAX(q)))
			return MP_ECORRUPT;
		sl = slot_at(q, h);
		w = ck_pr_load_64(&sl->word);
		d = seqdiff(w, h);
		if (d == 0 && w_state(w) == ST_READY) {
			size_t len = ready_len(q, sl, w);
			/* Only a peer that wrote over the ring. */
			if (MP__UNLIKELY(len > q->msg_max))
				return MP_ECORRUPT;
			if (len > cap) {
				b->sl = sl;
				b->w = w;
				return -EMSGSIZE;
			}
			ck_pr_store_64(&r->get, intent(h, 1));
			if (!ck_pr_cas_64_value(&s->head, h, h + 1, &h)) {
				ck_pr_store_64(&r->get, 0);
				continue;
			}
			/* The CAS orders this load after the claim. */
			ck_pr_fence_atomic_load();
			*saw |= ck_pr_load_32(&s->put.flag);
			*pos = h;
			*out = sl;
			*lenp = len;
			return 1;
		}
		if (d < 0 || (d == 0 && w_state(w) != ST_READING)) {
			/*
			 * FREE or WRITING at h: nothing to take yet; or the
			 * previous lap is still being read: empty.
			 */
			b->sl = sl;
			b->w = w;
			b->pos = h + (uint64_t)d;
			b->idx = &s->tail;
			return 0;
		}
		if (d > 0 && ck_pr_load_64(&s->head) == h) {
			/*
			 * h's turn is over but no get claimed it: a tombstone
			 * (a retired put), to step over.
			 */
			if (ck_pr_cas_64_value(&s->head, h, h + 1, &h))
				h++;
			continue;
		}
		/* Claimed already: our view of head is old. */
		h = ck_pr_load_64(&s->head);
	}
}

/*
 * The common case of claim_put, inline: the slot at the tail is free.
 * Returns 1 (claimed t: *out, *saw or-ed), 0 (not at once: take the
 * walk), PUT_CLOSED (claimed t, then found the queue closed: the caller
 * retires it, so that this stays free of calls).
 */
#define PUT_CLOSED 2
static inline int
put_try(struct mp_queue *q, struct qshm *s, struct qrec *r, uint64_t *tp,
	struct slot **out, uint32_t *saw)
{
	uint64_t t = ck_pr_load_64(&s->tail);
	struct slot *sl = slot_at(q, t);

	if (MP__UNLIKELY(ck_pr_load_64(&sl->word) != free_word(t)))
		return 0;
	ck_pr_store_64(&r->put, intent(t, 1));
	if (MP__UNLIKELY(!ck_pr_cas_64(&s->tail, t, t + 1))) {
		ck_pr_store_64(&r->put, 0);
		return 0;
	}
	*tp = t;
	*out = sl;
	/* As in claim_put: ordered after the claim. */
	ck_pr_fence_atomic_load();
	if (MP__UNLIKELY(ck_pr_load_32(&s->closed) != 0))
		return PUT_CLOSED;
	*saw |= ck_pr_load_32(&s->get.flag);
	return 1;
}

/*
 * The common case of claim_get, inline: the slot at the head is ready and
 * fits.  The word carries the length, checked against the caller's buffer
 * before claiming (a message too long stays queued), and a corrupt length
 * is refused before anything is claimed.  leaf: called by a leaf path,
 * for a queue it serves (see leaf_lim); the compare with leaf_lim is then
 * the corrupt-length check.  Returns true
 * when claimed (*hp, *out, *lenp set, *saw or-ed); false: take the walk.
 */
static inline bool
get_try(struct mp_queue *q, struct qshm *s, struct qrec *r, bool leaf,
	size_t cap, uint64_t *hp, struct slot **out, size_t *lenp,
	uint32_t *saw)
{
	uint64_t h = ck_pr_load_64(&s->head);
	struct slot *sl = slot_at(q, h);
	uint64_t w = ck_pr_load_64(&sl->word);
	size_t len;

	if (MP__UNLIKELY((w & ~(uint64_t)W_TID_MASK) != mkw(h, ST_READY, 0)))
		return false;
	len = leaf ? (size_t)(w & W_TID_MASK) : ready_len(q, sl, w);
	if (MP__UNLIKELY(len > cap ||
			 (leaf ? len >= q->leaf_lim : len > q->msg_max)))
		return false;
	ck_pr_store_64(&r->get, intent(h, 1));
	if (MP__UNLIKELY(!ck_pr_cas_64(&s->head, h, h + 1))) {
		ck_pr_store_64(&r->get, 0);
		return false;
	}
	/* As in claim_get: ordered after the claim. */
	ck_pr_fence_atomic_load();
	*saw |= ck_pr_load_32(&s->put.flag);
	*hp = h;
	*out = sl;
	*lenp = len;
	return true;
}

/*
 * Publish a written slot.  fas: with an exchange, the barrier a wake
 * check right after needs; otherwise a release store.
 */
static inline void
publish(const struct mp_queue *q, struct slot *sl, uint64_t pos, size_t len,
	bool fas)
{
	uint64_t w = ready_word(q, pos, len);

	if (!q->len_inline)
		ck_pr_store_32(&sl->len, (uint32_t)len);
	/* Orders the data and len stores before READY (consumers' acquire). */
	ck_pr_fence_store();
	if (fas)
		ck_pr_fas_64(&sl->word, w);
	else
		ck_pr_store_64(&sl->word, w);
}

/* Release a read slot to the next lap, the same two ways. */
static inline void
release_slot(const struct mp_queue *q, struct slot *sl, bool fas)
{
	uint64_t w = mkw(w_seq(ck_pr_load_64(&sl->word)) + q->cap, ST_FREE, 0);

	/* Orders the copy out (loads) before the slot is handed back. */
	ck_pr_fence_load_store();
	if (fas)
		ck_pr_fas_64(&sl->word, w);
	else
		ck_pr_store_64(&sl->word, w);
}

/*
 * After plain-store publishes or releases: when a claim saw the other
 * side's flag set, fence (the store must be visible before the flag is
 * read again) and wake.
 */
static inline void
wake_if(struct side *sd, uint32_t saw)
{
	if (MP__LIKELY(saw == 0))
		return;
	ck_pr_fence_store_load();
	wake_side(sd);
}

static int
waiter_init(struct waiter *wt, int64_t timeout_ns)
{
	if (!MP__TIMEOUT_OK(timeout_ns))
		return -EINVAL;
	wt->timeout = timeout_ns;
	if (timeout_ns == MP_FOREVER)
		wt->deadline = MP__NEVER;
	else if (timeout_ns == MP_NOWAIT)
		wt->deadline = DL_NOWAIT;
	else
		wt->deadline = DL_UNSET;
	wt->rounds = 0;
	wt->bo = SPIN_START;
	wt->stall.word = 0;
	wt->stall.since = 0;
	return 0;
}

/*
 * One step of waiting on side sd while blocked as *b says.  Returns 0 to
 * try again, -ETIMEDOUT when the deadline passed.
 */
static int
wait_step(struct mp_queue *q, struct side *sd, struct waiter *wt,
	  struct block *b)
{
	struct qshm *s = q->s;
	int64_t nap;
	uint32_t v;
	int rc;

	if (wt->deadline == DL_UNSET)
		mp__deadline(wt->timeout, &wt->deadline);
	/* Spin first: no clock, no system call, the peer is likely busy. */
	if (wt->rounds < SPIN_ROUNDS) {
		wt->rounds++;
		ck_backoff_eb(&wt->bo);
		ck_pr_stall();
		return 0;
	}
	if (stalled(q, b, &wt->stall))
		return 0;
	if (wt->deadline != MP__NEVER && mp__now() >= wt->deadline)
		return -ETIMEDOUT;
	if (wt->rounds < SPIN_ROUNDS + YIELD_ROUNDS) {
		wt->rounds++;
		sched_yield();
		return 0;
	}
	/* Announce, then re-check: see "Sleeping and waking". */
	block_see(b);
	ck_pr_fas_32(&sd->flag, 1);
	v = ck_pr_load_32(&sd->seq);
	ck_pr_fence_load();
	if (ck_pr_load_64(&b->sl->word) != b->w ||
	    ck_pr_load_64(b->idx) != b->iv ||
	    ck_pr_load_32(&s->closed) != 0)
		return 0;
	nap = mp__now() + (block_claimed(b) ? NAP_HELD_NS : NAP_IDLE_NS);
	rc = mp__futex_wait(&sd->seq, v, nap < wt->deadline ? nap :
					    wt->deadline);
	if (rc == -ETIMEDOUT && wt->deadline != MP__NEVER &&
	    mp__now() >= wt->deadline)
		return -ETIMEDOUT;
	return 0;
}

static size_t
data_off(size_t msg_max)
{
	return msg_max <= INLINE_LEN_MAX ? DATA_OFF_INLINE : DATA_OFF_LEN;
}

/* The geometry of a queue: slot size and region length; -EINVAL if absurd. */
static int
geometry(size_t *maxsize, size_t *msg_max, size_t *slot_sizep, size_t *lenp)
{
	size_t slot_size;

	if (*maxsize == 0)
		*maxsize = QUEUE_DEFAULT;
	if (*msg_max == 0)
		*msg_max = QUEUE_DEFAULT;
	if (*maxsize > MAX_MAXSIZE || *msg_max > MAX_MSG)
		return -EINVAL;
	/*
	 * Slots are packed at 8-byte strides, not rounded up to lines: a
	 * consumer reads the lines a producer wrote in any case, and whole
	 * lines only add lines to move (see "Layout").
	 */
	slot_size = (data_off(*msg_max) + *msg_max + 7) & ~(size_t)7;
	if (slot_size > (SIZE_MAX >> 4) / *maxsize)
		return -EINVAL;
	*slot_sizep = slot_size;
	*lenp = sizeof(struct qshm) + slot_size * *maxsize;
	return 0;
}

/* Fill a handle for the region at base. */
static void
handle_init(struct mp_queue *q, void *base, size_t len, size_t maxsize,
	    size_t msg_max, size_t slot_size)
{
	q->s = base;
	q->slots = (unsigned char *)base + sizeof(struct qshm);
	q->maplen = len;
	q->cap = maxsize;
	q->pow2 = (maxsize & (maxsize - 1)) == 0;
	q->mask = maxsize - 1;
	q->msg_max = msg_max;
	q->slot_size = slot_size;
	/* Never written: rec_mine takes no record but the caller's. */
	q->rec_hint = (struct qrec *)&no_rec;
	q->data_off = data_off(msg_max);
	q->len_inline = msg_max <= INLINE_LEN_MAX;
	q->leaf_lim = q->len_inline ? msg_max + 1 : 0;
}

int
mp_queue_new(mp_queue **out, size_t maxsize, size_t msg_max)
{
	struct mp_queue *q;
	struct qshm *s;
	size_t slot_size, len;
	void *base;
	int rc;

	if (out == NULL)
		return -EINVAL;
	if ((rc = geometry(&maxsize, &msg_max, &slot_size, &len)) < 0)
		return rc;
	if ((q = mp__handle_alloc(sizeof(*q))) == NULL)
		return -ENOMEM;
	if ((rc = mp__region_map(len, &base)) < 0)
		goto fail_free;
	s = base;
	handle_init(q, base, len, maxsize, msg_max, slot_size);
	for (uint64_t i = 0; i < maxsize; i++)
		slot_at(q, i)->word = mkw(i, ST_FREE, 0);
	s->hdr.version = MP__LAYOUT_VERSION;
	s->hdr.magic = QUEUE_SHM_MAGIC;
	q->magic = QUEUE_MAGIC;
	*out = q;
	return 0;
fail_free:
	mp__handle_free(q, sizeof(*q));
	return rc;
}

int
mp__queue_import(int fd, size_t maxsize, size_t msg_max, mp_queue **out)
{
	struct mp_queue *q;
	struct qshm *s;
	size_t slot_size, len, size;
	void *base;
	int rc;

	if (out == NULL)
		return -EINVAL;
	if ((rc = geometry(&maxsize, &msg_max, &slot_size, &len)) < 0)
		return rc;
	if ((rc = mp__region_attach(fd, &base, &size)) < 0)
		return rc;
	s = base;
	if (size < len || s->hdr.magic != QUEUE_SHM_MAGIC ||
	    s->hdr.version != MP__LAYOUT_VERSION) {
		rc = -EINVAL;
		goto fail_unmap;
	}
	if ((q = mp__handle_alloc(sizeof(*q))) == NULL) {
		rc = -ENOMEM;
		goto fail_unmap;
	}
	handle_init(q, base, len, maxsize, msg_max, slot_size);
	q->magic = QUEUE_MAGIC;
	*out = q;
	return 0;
fail_unmap:
	mp__region_unmap(base, size);
	return rc;
}

void
mp_queue_free(mp_queue *q)
{
	/*
	 * The local magic only: a queue whose shared header was written
	 * over is still ours to unmap (else each one would leak a mapping).
	 */
	if (q == NULL || q->magic != QUEUE_MAGIC)
		return;
	if (valid(q))
		rec_release(q, (uint32_t)mp__tid());
	q->magic = 0;
	mp__region_unmap(q->s, q->maplen);
	mp__handle_free(q, sizeof(*q));
}

/*
 * Claim a run of up to want positions for a put, waiting as wt allows.
 * Returns 1, or -EAGAIN, -ETIMEDOUT, -EPIPE, MP_ECORRUPT.
 */
static int
put_claim_wait(struct mp_queue *q, struct qrec *r, struct waiter *wt,
	       uint32_t want, uint64_t *pos, uint32_t *got, uint32_t *saw)
{
	struct qshm *s = q->s;
	struct block b;
	int rc;

	for (;;) {
		if (MP__UNLIKELY(ck_pr_load_32(&s->closed) != 0))
			return -EPIPE;
		rc = claim_put(q, r, want, pos, got, &b, saw);
		if (rc != 0)
			return rc;
		if (wt->deadline == DL_NOWAIT) {
			/* MP_NOWAIT: only a repair may make room. */
			if (stalled(q, &b, &q->nowait_stall))
				continue;
			return -EAGAIN;
		}
		if ((rc = wait_step(q, &s->put, wt, &b)) < 0)
			return rc;
	}
}

/*
 * Fill and publish a claimed run t..t+n-1.  The run's lines are fetched
 * for writing all at once, so that their transfers from the consumers'
 * caches overlap instead of following one another; every slot is written
 * before any is published, so that consumers do not pull the lines back
 * while the run is being written.  A kill before the publishing leaves
 * the whole run to be retired as one loss.
 */
static MP__NOINLINE void
put_run(struct mp_queue *q, uint64_t t, uint32_t n, const void *const msgs[],
	const size_t lens[])
{
	for (uint32_t k = 0; k < n; k++)
		__builtin_prefetch(slot_at(q, t + k), 1);
	for (uint32_t k = 0; k < n; k++) {
		struct slot *sl = slot_at(q, t + k);

		copy_msg(slot_data(q, sl), msgs[k], lens[k]);
		if (!q->len_inline)
			ck_pr_store_32(&sl->len, (uint32_t)lens[k]);
	}
	/* Orders the data and len stores before every READY. */
	ck_pr_fence_store();
	for (uint32_t k = 0; k < n; k++)
		ck_pr_store_64(&slot_at(q, t + k)->word,
			       ready_word(q, t + k, lens[k]));
}

ssize_t
mp_queue_put_many(mp_queue *q, const void *const msgs[], const size_t lens[],
		  size_t n, int64_t timeout_ns)
{
	struct waiter wt;
	struct qrec *r;
	struct block b;
	uint64_t t;
	uint32_t saw = 0, got;
	size_t i = 0;
	int rc = 0;

	if (!valid(q) || msgs == NULL || lens == NULL || n == 0 ||
	    n > SSIZE_MAX || waiter_init(&wt, timeout_ns) < 0)
		return -EINVAL;
	for (size_t j = 0; j < n; j++) {
		if (lens[j] > q->msg_max)
			return -EMSGSIZE;
		if (msgs[j] == NULL && lens[j] != 0)
			return -EINVAL;
	}
	if (MP__UNLIKELY(ck_pr_load_32(&q->s->closed) != 0))
		return -EPIPE;
	if ((r = rec_of(q, (uint32_t)mp__tid())) == NULL)
		return -EUSERS;
	while (i < n) {
		uint32_t want = n - i < RUN_MAX ? (uint32_t)(n - i) : RUN_MAX;

		rc = claim_put(q, r, want, &t, &got, &b, &saw);
		if (rc == 0) {
			/* Wake consumers for what we published, then wait. */
			wake_if(&q->s->get, saw);
			saw = 0;
			rc = put_claim_wait(q, r, &wt, want, &t, &got, &saw);
		}
		if (rc < 0)
			break;
		put_run(q, t, got, msgs + i, lens + i);
		i += got;
	}
	wake_if(&q->s->get, saw);
	return i > 0 ? (ssize_t)i : rc;
}

/* mp_queue_put when the fast path could not: put_many's steps for one. */
static MP__COLD int
put_slow(mp_queue *q, const void *msg, size_t len, int64_t timeout_ns)
{
	ssize_t rc = mp_queue_put_many(q, &msg, &len, 1, timeout_ns);

	return rc < 0 ? (int)rc : 0;
}

/*
 * A put of any size that may wait: a slot free at once is filled here,
 * anything else is put_slow's.
 */
static MP__NOINLINE int
put_general(mp_queue *q, const void *msg, size_t len, int64_t timeout_ns)
{
	struct qshm *s;
	struct slot *sl;
	struct qrec *r;
	uint64_t t;
	uint32_t saw = 0;
	int rc;

	if (MP__UNLIKELY(!valid(q) || len > q->msg_max ||
			 (msg == NULL && len != 0) ||
			 !MP__TIMEOUT_OK(timeout_ns)))
		goto slow;
	s = q->s;
	if (MP__UNLIKELY(ck_pr_load_32(&s->closed) != 0))
		goto slow;
	if ((r = rec_of(q, (uint32_t)mp__tid())) == NULL)
		goto slow;
	rc = put_try(q, s, r, &t, &sl, &saw);
	if (MP__UNLIKELY(rc == PUT_CLOSED)) {
		retire_run(q, t, 1);
		return -EPIPE;
	}
	if (MP__UNLIKELY(rc == 0))
		goto slow;
	copy_msg(slot_data(q, sl), msg, len);
	publish(q, sl, t, len, false);
	wake_if(&s->get, saw);
	return 0;
slow:
	return put_slow(q, msg, len, timeout_ns);
}

/* After a leaf put: a wake, out of line. */
static MP__COLD int
put_done(mp_queue *q, uint32_t saw)
{
	wake_if(&q->s->get, saw);
	return 0;
}

/* A leaf put claimed a slot and then found the queue closed. */
static MP__COLD int
put_closed(mp_queue *q, uint64_t t)
{
	retire_run(q, t, 1);
	return -EPIPE;
}

/*
 * The rest of a leaf put of a message longer than SMALL_MAX, in a slot it
 * has claimed: a tail call, so that the leaf itself calls nothing.
 */
static MP__NOINLINE int
put_finish(mp_queue *q, struct slot *sl, uint64_t t, const void *msg,
	   size_t len, uint32_t saw)
{
	memcpy(leaf_data(sl), msg, len);
	ck_pr_fence_store();
	ck_pr_store_64(&sl->word, mkw(t, ST_READY, (uint32_t)len));
	wake_if(&q->s->get, saw);
	return 0;
}

int
mp_queue_put(mp_queue *q, const void *msg, size_t len, int64_t timeout_ns)
{
	uint32_t saw = 0;
	struct qshm *s;
	struct slot *sl;
	struct qrec *r;
	uint64_t t;
	int rc;

	/*
	 * The fast path, for a slot free at once, is a leaf: every call it
	 * may make is a tail call (to put_general for anything else, to
	 * put_finish to copy a message longer than SMALL_MAX, to put_done
	 * and put_closed for the rare ends), so that it saves no registers.
	 * Its checks are valid()'s and the arguments'; leaf_lim folds len <=
	 * msg_max and the ring's geometry into one compare, and a NULL msg,
	 * rare, goes to put_general whatever its length.
	 */
	if (MP__UNLIKELY(q == NULL || q->magic != QUEUE_MAGIC))
		goto general;
	s = q->s;
	if (MP__UNLIKELY(s->hdr.magic != QUEUE_SHM_MAGIC ||
			 s->hdr.version != MP__LAYOUT_VERSION))
		goto general;
	if (MP__UNLIKELY(len >= q->leaf_lim || msg == NULL ||
			 !MP__TIMEOUT_OK(timeout_ns)))
		goto general;
	/*
	 * closed is looked at before the claim too, so that a put into a
	 * closed queue leaves no retired position behind for qsize to count.
	 */
	r = ck_pr_load_ptr(&q->rec_hint);
	if (MP__UNLIKELY(!rec_mine(r, (uint32_t)mp__cached_tid) ||
			 ck_pr_load_32(&s->closed) != 0))
		goto general;
	rc = put_try(q, s, r, &t, &sl, &saw);
	if (MP__UNLIKELY(rc == 0))
		goto general;
	if (MP__UNLIKELY(rc == PUT_CLOSED))
		return put_closed(q, t);
	if (MP__UNLIKELY(len > 16)) {
		if (len > SMALL_MAX)
			return put_finish(q, sl, t, msg, len, saw);
		copy_mid(leaf_data(sl), msg, len);
	} else {
		copy_upto16(leaf_data(sl), msg, len);
	}
	/* publish(), knowing that the length rides in the word. */
	ck_pr_fence_store();
	ck_pr_store_64(&sl->word, mkw(t, ST_READY, (uint32_t)len));
	if (MP__UNLIKELY(saw != 0))
		return put_done(q, saw);
	return 0;
general:
	return put_general(q, msg, len, timeout_ns);
}

int
mp_queue_reserve(mp_queue *q, void **buf, int64_t timeout_ns)
{
	struct waiter wt;
	struct qrec *r;
	uint64_t t;
	uint32_t saw = 0, got, tid;
	struct slot *sl;
	int rc;

	if (!valid(q) || buf == NULL || waiter_init(&wt, timeout_ns) < 0)
		return -EINVAL;
	tid = (uint32_t)mp__tid();
	if ((r = rec_of(q, tid)) == NULL)
		return -EUSERS;
	if ((rc = put_claim_wait(q, r, &wt, 1, &t, &got, &saw)) < 0)
		return rc;
	/*
	 * Stamp the holder into the word: commit checks it, and a kill
	 * from here on is repaired by the word alone (the record's intent
	 * is free for this task's next put).
	 */
	sl = slot_at(q, t);
	ck_pr_store_64(&sl->word, mkw(t, ST_WRITING, tid & W_TID_MASK));
	*buf = slot_data(q, sl);
	return 0;
}

/* The slot whose data is at p, if p is one; NULL otherwise. */
static struct slot *
slot_of(const struct mp_queue *q, const void *p)
{
	uintptr_t off = (uintptr_t)p - (uintptr_t)q->slots;

	if ((uintptr_t)p < (uintptr_t)q->slots + q->data_off ||
	    off >= q->cap * q->slot_size ||
	    off % q->slot_size != q->data_off)
		return NULL;
	return (struct slot *)(q->slots + off - q->data_off);
}

int
mp_queue_commit(mp_queue *q, void *buf, size_t len)
{
	struct slot *sl;
	uint64_t w;

	if (!valid(q) || (sl = slot_of(q, buf)) == NULL)
		return -EINVAL;
	w = ck_pr_load_64(&sl->word);
	if (w_state(w) != ST_WRITING || w_tid(w) != me())
		return -EINVAL;
	if (len > q->msg_max)
		return -EMSGSIZE;
	/*
	 * A reservation may be held for long, so the flag seen at its claim
	 * is stale: publish with an exchange and read the flag now.
	 */
	publish(q, sl, w_seq(w), len, true);
	ck_pr_fence_atomic_load();
	wake_side(&q->s->get);
	return 0;
}

/*
 * Claim the next message for a get, waiting as wt allows.  Returns 1, or
 * -EAGAIN, -ETIMEDOUT, -EPIPE, -EMSGSIZE, MP_ECORRUPT.
 */
static int
get_claim_wait(struct mp_queue *q, struct qrec *r, struct waiter *wt,
	       size_t cap, uint64_t *pos, struct slot **sl, size_t *len,
	       uint32_t *saw)
{
	struct qshm *s = q->s;
	struct block b;
	int rc;

	for (;;) {
		rc = claim_get(q, r, cap, pos, sl, len, &b, saw);
		if (rc != 0)
			return rc;
		if (ck_pr_load_32(&s->closed) != 0) {
			/* Closed, then still empty: drained (see "Close"). */
			block_see(&b);
			if (!block_claimed(&b)) {
				ck_pr_fence_load();
				if (ck_pr_load_64(&b.sl->word) == b.w &&
				    ck_pr_load_64(&s->tail) == b.iv)
					return -EPIPE;
				continue;
			}
		}
		if (wt->deadline == DL_NOWAIT) {
			if (stalled(q, &b, &q->nowait_stall))
				continue;
			return -EAGAIN;
		}
		if ((rc = wait_step(q, &s->get, wt, &b)) < 0)
			return rc;
	}
}

/* Hand a read slot to the next lap; the copy out is ordered before. */
static inline void
release_pos(const struct mp_queue *q, struct slot *sl, uint64_t h)
{
	ck_pr_fence_load_store();
	ck_pr_store_64(&sl->word, free_word(h + q->cap));
}

/*
 * Take up to n (at most RUN_MAX) ready messages at the head with one
 * claim: copy them out first, then claim them all with one CAS of head.
 * The CAS succeeds only if no consumer claimed any of them meanwhile, so
 * none was released and written over while we copied; when it fails, the
 * copies are dropped and the run is tried again from the new head.  A
 * kill before the CAS takes nothing from the queue; after it, the run's
 * messages were already copied out, and a repairer releases what the
 * dead did not (counted as one loss).  Returns how many were taken, 0
 * when the head holds no ready message that fits.
 */
static size_t
get_run(struct mp_queue *q, struct qrec *r, unsigned char *buf, size_t cap,
	size_t lens[], size_t n, uint32_t *saw)
{
	struct qshm *s = q->s;
	uint32_t k;

	if (n > RUN_MAX)
		n = RUN_MAX;
	for (int tries = 0; tries < 4; tries++) {
		uint64_t h = ck_pr_load_64(&s->head);

		for (k = 0; k < n; k++) {
			struct slot *sl = slot_at(q, h + k);
			uint64_t w = ck_pr_load_64(&sl->word);
			size_t len;

			if ((w & ~(uint64_t)W_TID_MASK) !=
			    mkw(h + k, ST_READY, 0))
				break;
			len = ready_len(q, sl, w);
			if (len > cap || len > q->msg_max)
				break;
			/* Orders the data loads after READY's. */
			ck_pr_fence_load();
			copy_msg(buf + k * cap, slot_data(q, sl), len);
			lens[k] = len;
		}
		if (k == 0)
			return 0;
		ck_pr_store_64(&r->get, intent(h, k));
		if (!ck_pr_cas_64(&s->head, h, h + k)) {
			ck_pr_store_64(&r->get, 0);
			continue;
		}
		ck_pr_fence_atomic_load();
		*saw |= ck_pr_load_32(&s->put.flag);
		/* Orders the copies out before the slots go back. */
		ck_pr_fence_load_store();
		for (uint32_t i = 0; i < k; i++)
			ck_pr_store_64(&slot_at(q, h + i)->word,
				       free_word(h + i + q->cap));
		return k;
	}
	return 0;
}

ssize_t
mp_queue_get_many(mp_queue *q, void *buf, size_t cap, size_t lens[],
		  size_t n, int64_t timeout_ns)
{
	struct waiter wt;
	struct slot *sl;
	struct qrec *r;
	struct block b;
	uint64_t h;
	uint32_t saw = 0;
	size_t i, len;
	int rc;

	if (!valid(q) || lens == NULL || n == 0 || n > SSIZE_MAX ||
	    (buf == NULL && cap != 0) || (n > 1 && cap > SIZE_MAX / n) ||
	    waiter_init(&wt, timeout_ns) < 0)
		return -EINVAL;
	if ((r = rec_of(q, (uint32_t)mp__tid())) == NULL)
		return -EUSERS;
	i = n > 1 ? get_run(q, r, buf, cap, lens, n, &saw) : 0;
	if (i == 0) {
		/* The first message, waited for as a get does. */
		rc = get_try(q, q->s, r, false, cap, &h, &sl, &len, &saw) ? 1 :
			claim_get(q, r, cap, &h, &sl, &len, &b, &saw);
		if (rc == 0)
			rc = get_claim_wait(q, r, &wt, cap, &h, &sl, &len,
					    &saw);
		if (rc < 0)
			return rc;
		copy_msg(buf, slot_data(q, sl), len);
		lens[0] = len;
		release_pos(q, sl, h);
		i = 1;
	}
	while (i < n) {
		size_t k = get_run(q, r, (unsigned char *)buf + i * cap, cap,
				   lens + i, n - i, &saw);
		if (k == 0)
			break;
		i += k;
	}
	wake_if(&q->s->put, saw);
	return (ssize_t)i;
}

/* mp_queue_get when the fast path could not: get_many's steps for one. */
static MP__COLD ssize_t
get_slow(mp_queue *q, void *buf, size_t cap, int64_t timeout_ns)
{
	size_t len;
	ssize_t rc = mp_queue_get_many(q, buf, cap, &len, 1, timeout_ns);

	return rc < 0 ? rc : (ssize_t)len;
}

/* A get of any size that may wait, as put_general. */
static MP__NOINLINE ssize_t
get_general(mp_queue *q, void *buf, size_t cap, int64_t timeout_ns)
{
	struct slot *sl;
	struct qrec *r;
	uint64_t h;
	uint32_t saw = 0;
	size_t len;

	if (MP__UNLIKELY(!valid(q) || (buf == NULL && cap != 0) ||
			 !MP__TIMEOUT_OK(timeout_ns)))
		goto slow;
	if ((r = rec_of(q, (uint32_t)mp__tid())) == NULL)
		goto slow;
	if (MP__UNLIKELY(!get_try(q, q->s, r, false, cap, &h, &sl, &len,
				  &saw)))
		goto slow;
	copy_msg(buf, slot_data(q, sl), len);
	release_pos(q, sl, h);
	wake_if(&q->s->put, saw);
	return (ssize_t)len;
slow:
	return get_slow(q, buf, cap, timeout_ns);
}

/* After a leaf get: a wake, out of line. */
static MP__COLD ssize_t
get_done(mp_queue *q, uint32_t saw, size_t len)
{
	wake_if(&q->s->put, saw);
	return (ssize_t)len;
}

/* The rest of a leaf get of a message longer than SMALL_MAX, as put_finish. */
static MP__NOINLINE ssize_t
get_finish(mp_queue *q, struct slot *sl, uint64_t h, void *buf, size_t len,
	   uint32_t saw)
{
	memcpy(buf, leaf_data(sl), len);
	release_pos(q, sl, h);
	wake_if(&q->s->put, saw);
	return (ssize_t)len;
}

ssize_t
mp_queue_get(mp_queue *q, void *buf, size_t cap, int64_t timeout_ns)
{
	uint32_t saw = 0;
	struct qshm *s;
	struct slot *sl;
	struct qrec *r;
	uint64_t h;
	size_t len;

	/*
	 * The fast path, a leaf as in mp_queue_put (get_finish copies a
	 * message longer than SMALL_MAX).
	 */
	if (MP__UNLIKELY(q == NULL || q->magic != QUEUE_MAGIC))
		goto general;
	s = q->s;
	if (MP__UNLIKELY(s->hdr.magic != QUEUE_SHM_MAGIC ||
			 s->hdr.version != MP__LAYOUT_VERSION))
		goto general;
	if (MP__UNLIKELY(buf == NULL || !MP__TIMEOUT_OK(timeout_ns)))
		goto general;
	r = ck_pr_load_ptr(&q->rec_hint);
	if (MP__UNLIKELY(!rec_mine(r, (uint32_t)mp__cached_tid) ||
			 !get_try(q, s, r, true, cap, &h, &sl, &len, &saw)))
		goto general;
	if (MP__UNLIKELY(len > 16)) {
		if (len > SMALL_MAX)
			return get_finish(q, sl, h, buf, len, saw);
		copy_mid(buf, leaf_data(sl), len);
	} else {
		copy_upto16(buf, leaf_data(sl), len);
	}
	release_pos(q, sl, h);
	if (MP__UNLIKELY(saw != 0))
		return get_done(q, saw, len);
	return (ssize_t)len;
general:
	return get_general(q, buf, cap, timeout_ns);
}

ssize_t
mp_queue_peek(mp_queue *q, const void **msg, int64_t timeout_ns)
{
	struct waiter wt;
	struct slot *sl;
	struct qrec *r;
	uint64_t h;
	uint32_t saw = 0, tid;
	size_t len;
	int rc;

	if (!valid(q) || msg == NULL || waiter_init(&wt, timeout_ns) < 0)
		return -EINVAL;
	tid = (uint32_t)mp__tid();
	if ((r = rec_of(q, tid)) == NULL)
		return -EUSERS;
	rc = get_claim_wait(q, r, &wt, SIZE_MAX, &h, &sl, &len, &saw);
	if (rc < 0)
		return rc;
	/* Stamp the holder, as mp_queue_reserve does. */
	ck_pr_store_64(&sl->word, mkw(h, ST_READING, tid & W_TID_MASK));
	*msg = slot_data(q, sl);
	return (ssize_t)len;
}

int
mp_queue_release(mp_queue *q, const void *msg)
{
	struct slot *sl;
	uint64_t w;

	if (!valid(q) || (sl = slot_of(q, msg)) == NULL)
		return -EINVAL;
	w = ck_pr_load_64(&sl->word);
	if (w_state(w) != ST_READING || w_tid(w) != me())
		return -EINVAL;
	/* As commit: the flag seen at the claim may be stale. */
	release_slot(q, sl, true);
	ck_pr_fence_atomic_load();
	wake_side(&q->s->put);
	return 0;
}

size_t
mp_queue_qsize(const mp_queue *q)
{
	uint64_t h, t;

	if (!valid(q))
		return 0;
	h = ck_pr_load_64(&q->s->head);
	ck_pr_fence_load();
	t = ck_pr_load_64(&q->s->tail);
	if ((int64_t)(t - h) <= 0)
		return 0;
	return t - h > q->cap ? q->cap : (size_t)(t - h);
}

bool
mp_queue_empty(const mp_queue *q)
{
	return mp_queue_qsize(q) == 0;
}

bool
mp_queue_full(const mp_queue *q)
{
	return valid(q) && mp_queue_qsize(q) >= q->cap;
}

size_t
mp_queue_maxsize(const mp_queue *q)
{
	return valid(q) ? q->cap : 0;
}

size_t
mp_queue_msg_max(const mp_queue *q)
{
	return valid(q) ? q->msg_max : 0;
}

void
mp_queue_close(mp_queue *q)
{
	struct qshm *s;

	if (!valid(q))
		return;
	s = q->s;
	ck_pr_fas_32(&s->closed, 1);
	/* Wake unconditionally: close is rare and every sleeper must see it. */
	ck_pr_inc_32(&s->put.seq);
	ck_pr_inc_32(&s->get.seq);
	mp__futex_wake(&s->put.seq, INT_MAX);
	mp__futex_wake(&s->get.seq, INT_MAX);
}

bool
mp_queue_is_closed(const mp_queue *q)
{
	return valid(q) && ck_pr_load_32(&q->s->closed) != 0;
}

uint64_t
mp_queue_lost(const mp_queue *q)
{
	return valid(q) ? ck_pr_load_64(&q->s->join.lost) : 0;
}

/* Messages put and not yet marked done (nor retired). */
static int64_t
unfinished(const struct mp_queue *q)
{
	struct qshm *s = q->s;
	uint64_t done = ck_pr_load_64(&s->join.done);
	uint64_t skipped = ck_pr_load_64(&s->join.skipped);

	/* Read the tail last: it only grows, so this never undercounts. */
	ck_pr_fence_load();
	return (int64_t)(ck_pr_load_64(&s->tail) - skipped - done);
}

int
mp_queue_task_done(mp_queue *q)
{
	struct qshm *s;
	uint64_t d;

	if (!valid(q))
		return -EINVAL;
	s = q->s;
	d = ck_pr_load_64(&s->join.done);
	for (;;) {
		if (unfinished(q) <= 0)
			return -EINVAL;
		if (ck_pr_cas_64_value(&s->join.done, d, d + 1, &d))
			break;
	}
	/* The CAS is a full barrier before the joiners' flag is read. */
	ck_pr_fence_atomic_load();
	if (unfinished(q) <= 0)
		wake_join(s);
	return 0;
}

int
mp_queue_join(mp_queue *q, int64_t timeout_ns)
{
	struct qshm *s;
	int64_t deadline, nap;
	uint32_t v;
	int rc;

	if (!valid(q) || mp__deadline(timeout_ns, &deadline) < 0)
		return -EINVAL;
	s = q->s;
	for (;;) {
		if (unfinished(q) <= 0)
			return 0;
		if (timeout_ns == MP_NOWAIT)
			return -EAGAIN;
		ck_pr_fas_32(&s->join.flag, 1);
		v = ck_pr_load_32(&s->join.seq);
		if (unfinished(q) <= 0)
			return 0;
		nap = mp__now() + NAP_IDLE_NS;
		rc = mp__futex_wait(&s->join.seq, v,
				    nap < deadline ? nap : deadline);
		if (rc == -ETIMEDOUT && mp__now() >= deadline)
			return -ETIMEDOUT;
	}
}

int
mp__queue_region(const mp_queue *q, void **base, size_t *len)
{
	/* The local magic only: the shared one may be what is tested. */
	if (q == NULL || q->magic != QUEUE_MAGIC || base == NULL ||
	    len == NULL)
		return -EINVAL;
	*base = q->s;
	*len = q->maplen;
	return 0;
}

