/* SPDX-License-Identifier: MIT */
/*
 * Theory of operation
 *
 * Layout.  One memfd region holds a header and a ring of maxsize fixed
 * slots (the ring is exactly maxsize long, so "full" is exact):
 *
 *   line 0   hdr (magic, version), closed           read-mostly
 *   line 1   tail: a hint, every position below it is claimed by a put
 *   line 2   head: a hint, every position below it is claimed by a get
 *   line 3   put_flag, put_seq: producers that may sleep (queue full)
 *   line 4   get_flag, get_seq: consumers that may sleep (queue empty)
 *   line 5   join_flag, join_seq, done, skipped, lost
 *   slots    { word, [len, pad,] data[msg_max] } * maxsize, 8-aligned
 *
 * Positions are free-running 64-bit counters; position p lives in slot
 * p % maxsize.  Each slot's word packs, so that one compare-and-swap
 * changes all three at once:
 *
 *   bits 63..24  seq: the position (mod 2^40) the slot serves
 *   bits 23..22  state: FREE, WRITING, READY, READING
 *   bits 21..0   tid of the claimer while WRITING or READING (pid_max is
 *                at most 2^22, so any tid fits); the message's length
 *                while READY; 0 while FREE
 *
 * The length rides in the READY word when msg_max < 2^22, so a slot is
 * the word and the bytes, packed at 8-byte strides: 16 bytes for an 8-byte
 * message, four to a cache line, as in a bare Vyukov ring.  (Measured here,
 * 1P1C pinned, 8 B: the same slot-CAS ring ran at 49 M msgs/s with 32-byte
 * slots and 112 M/s with 16-byte ones; at 64 B, rounding slots up to whole
 * lines cost 30%.)  Larger limits keep a separate len after the word.
 *
 * and a slot goes round (seq, FREE) -> (seq, WRITING, producer) ->
 * (seq, READY) -> (seq, READING, consumer) -> (seq + maxsize, FREE).  This
 * is Vyukov's bounded MPMC sequence ring with the claim moved from the
 * index to the slot: the claim is the CAS on the slot word, and it names
 * the claimer.  head and tail are only hints: an operation starts at the
 * later of the shared hint and its own process's hint (the position after
 * its last claim, kept in the heap handle), walks past claimed slots, and
 * publishes its position to the shared hint by CAS once every HINT_EVERY
 * positions and whenever it blocks.  A bare Vyukov ring CASes the shared
 * index on every operation; here a lone producer or consumer keeps its
 * index line to itself and pays one CAS a message, on the slot.
 *
 * Put at position t: load slot(t).word w, seq difference d = seq - t.
 *   d == 0, FREE      CAS to (t, WRITING, me): the slot is ours;
 *   d == 0, claimed   or d > 0: someone else has t, step to t + 1;
 *   d < 0             the slot still serves the previous lap: full.
 * Then copy len and data in and publish with a release (READY).
 * Get at position h is the mirror: READY at h is claimed by CAS to
 * (h, READING, me) after checking its length against the caller's buffer
 * (too small: -EMSGSIZE without claiming, so the message stays queued);
 * READING at h or d > 0 steps on; FREE or WRITING at h, or d < 0, is empty.
 * The get copies the message out and releases the slot to (h + maxsize,
 * FREE).  The put fast path first tries the expected word with a blind
 * CAS (one exclusive fetch of a line that usually sits in the other side's
 * cache); the get fast path must see the length first, so it loads the
 * word and CASes it if READY; both fall back to the walk above.  put_many,
 * get_many and the zero-copy calls run the same steps slot by slot; a
 * process never holds more than one claimed slot.
 *
 * Invariants.
 *  1. Every position below tail, and below any cursor a put walks with,
 *     has been claimed by a producer (or retired by a repair); a cursor
 *     only passes a slot it claimed or saw claimed.  The same holds for
 *     head and consumers.  So no position is skipped and none is claimed
 *     twice: a claim is a CAS from the one word (t, FREE).  A process's
 *     own hint is shared by its threads; a thread may store an older
 *     value over a newer one, which only makes the next walk longer.
 *  2. A slot at (h, FREE) means no position >= h is claimed: producers
 *     claim positions in order (invariant 1), so an empty-looking slot at
 *     the head is a truly empty queue, and a consumer returns -EPIPE on a
 *     closed queue only from that state (never past a WRITING slot).
 *  3. The data and len of a slot are written only by the claimer while
 *     WRITING and read only by consumers after an acquire of READY; the
 *     word changes on every step and seq never repeats within 2^40
 *     positions, so a CAS that succeeds saw the same message as the loads
 *     before it (no ABA).
 *  4. Per-producer order: a producer's positions increase, and consumers
 *     take positions in increasing order per slot turn.
 *  5. Join: unfinished = (claimed positions) - skipped - done, where
 *     skipped counts positions retired without a message (a put aborted
 *     by close, a repair).  task_done refuses to make it negative.
 *
 * Memory ordering (x86 is TSO; ck_pr's fences are no-ops there but are
 * written for the other models).  The claim CAS is a full barrier.  The
 * data and len stores are ordered before READY by ck_pr_fence_store; a
 * consumer's load of READY is ordered before its loads of len and data by
 * ck_pr_fence_load; the release of a slot is ordered after the copy out
 * by ck_pr_fence_load_store.
 *
 * Sleeping and waking.  A blocked caller spins briefly with ck_backoff,
 * yields, then sleeps.  To sleep it sets its side's flag with an atomic
 * exchange (a full barrier), reads the side's seq, re-checks that the
 * slot word it is blocked on and the closed flag are unchanged, and calls
 * FUTEX_WAIT(seq, value read).  The other side reads the flag right after
 * its claim CAS (a full barrier) and, if it was set, after publishing (or
 * releasing) fences, clears the flag, increments seq and FUTEX_WAKEs
 * everyone.  The fast path thus adds one load of a line that is written
 * only when someone goes to sleep: no fence, no system call.
 *  W1. No lost wake-up for an empty or full queue.  A consumer sleeps on
 *      an empty queue only after seeing (h, FREE) again after its flag
 *      exchange.  The producer that fills h CASes that word, then reads
 *      the flag.  Dekker: either the producer reads the flag set and
 *      wakes after publishing, or the consumer's re-check sees the claim
 *      and does not sleep on "empty".  If the increment of seq lands after
 *      the sleeper read seq, the kernel sees seq changed and returns at
 *      once.  The mirror argument holds for a producer on a full queue
 *      (the consumer's claim CAS changes the word it sleeps on).
 *  W2. A caller blocked on a held slot (WRITING or READING: its holder is
 *      copying, or preempted, or dead) may miss the holder's wake, since
 *      the holder read the flag at its claim, before the caller set it;
 *      so such sleeps are bounded to NAP_HELD_NS and re-checked.  This
 *      only happens when a holder stays between claim and publish longer
 *      than the whole spin-and-yield phase.
 *  W3. A flag, not a count, so that a sleeper killed in its sleep leaves
 *      nothing behind: the next wake clears it and the dead never set it
 *      again.  Other sleeps are bounded to NAP_IDLE_NS, so a waker killed
 *      between its publish and its wake costs a bounded delay, not a hang.
 * Zero-copy commit and release may come long after the claim, so they
 * publish with an exchange and read the flag afresh.
 *
 * Close.  close sets closed (an exchange, a full barrier) and wakes both
 * sides.  A put checks closed before claiming, and again after its claim
 * CAS: if it is closed by then, the put retires the slot it claimed (as
 * skipped, not lost) and returns -EPIPE.  A get returns -EPIPE when it
 * sees closed and then still sees a FREE slot at the head.  Either that
 * get's slot load precedes the put's CAS, and the put sees closed after
 * it; or the get sees the claim and waits for the message: a put that
 * returned 0 is always delivered to someone.
 *
 * Crash analysis: what a survivor sees after a kill at each step.
 *  - Put, before its claim CAS: nothing was changed.
 *  - Put, after the CAS, before advancing the hints: the shared tail lags;
 *    other puts walk over the claimed slot and advance it past.
 *  - Put, while WRITING (copying): the slot is (t, WRITING, dead tid).  A
 *    consumer waiting at t, or a producer a lap later, sees the same word
 *    for STALL_NS (1 ms), asks mp__task_alive(tid) and, when it is dead,
 *    retires the slot with a CAS to (t + maxsize, FREE): a tombstone that
 *    consumers step over.  lost and skipped are incremented once (by the
 *    CAS winner).  The put had not returned, so no acknowledged message
 *    is lost.
 *  - Put, after publishing READY: the message is queued and will be
 *    delivered; the put is complete, however its caller then dies.  A
 *    wake it did not make is made up for by the sleepers' bound (W3).
 *  - Get, before its claim CAS: nothing was changed.
 *  - Get, while READING: the slot is (h, READING, dead tid); the producer
 *    waiting for it a lap later (or a consumer that finds it at the head)
 *    retires it the same way; that one message is lost and counted.
 *  - Get, after releasing the slot: complete (it delivered the message
 *    to a process that then died, which is the caller's loss, not ours).
 *  - A sleeper killed in FUTEX_WAIT: its flag is cleared by the next wake.
 *  - close, killed between setting closed and waking: sleepers see it at
 *    their next bounded wake-up.
 *  - A repairer killed between its CAS and its counter increments: the
 *    slot is retired, but lost and skipped stay one short; a join then
 *    waits for that one message (use a timeout).  Only a second fault
 *    inside a repair can do this.
 * A waiter that finds an owner alive keeps waiting; a tid reused by an
 * unrelated task reads as alive, which delays the repair until that task
 * ends but never corrupts the ring.
 * The per-process handle (heap) holds only the mapping, cached sizes and
 * hints; freed handles go back to lib/handle's pool, not to malloc.
 *
 * Overlap: any number of puts, gets, batch, zero-copy, close, qsize and
 * repairs run at once; repairs race only through CAS on the slot word.
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
/* How long a slot may stay held before its owner's liveness is checked. */
#define STALL_NS MP_MSEC(1)
/* Bounds of one futex sleep: blocked on a held slot, and otherwise. */
#define NAP_HELD_NS MP_USEC(200)
/* The shared head and tail hints are advanced once per HINT_EVERY. */
#define HINT_EVERY 16u
#define NAP_IDLE_NS MP_MSEC(100)

#define MAX_MAXSIZE ((size_t)1 << 30)
#define MAX_MSG ((size_t)1 << 30)

struct side {
	uint32_t flag;		/* set by a caller that may sleep */
	uint32_t seq;		/* the futex word: bumped by each wake */
	char pad[MP__CACHELINE - 8];
};

struct qshm {
	struct mp__hdr hdr;
	uint32_t closed;
	char pad0[MP__CACHELINE - sizeof(struct mp__hdr) - 4];
	uint64_t tail MP__ALIGNED;
	char pad1[MP__CACHELINE - 8];
	uint64_t head MP__ALIGNED;
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
};
_Static_assert(sizeof(struct qshm) == 6 * MP__CACHELINE,
	       "queue header: six cache lines");

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
 * A held slot word seen blocking, and since when.  A waiting call keeps
 * its own; MP_NOWAIT calls, which do not wait, share one in the handle
 * (threads may overwrite each other's, which only delays a repair).
 */
struct stall {
	uint64_t word;
	uint64_t since;
};

/*
 * The per-process handle (from lib/handle: its magic comes first); the
 * other fields are copies of what never changes, and hints.
 */
struct mp_queue {
	uint32_t magic;
	struct qshm *s;
	unsigned char *slots;
	size_t maplen;
	uint64_t cap;		/* maxsize: slots in the ring */
	uint64_t mask;		/* cap - 1 when cap is a power of two */
	bool pow2;
	size_t msg_max;
	size_t slot_size;
	size_t data_off;	/* where a slot's bytes start */
	bool len_inline;	/* the length is in the READY word */
	/* Where this process's next claim starts looking (invariant 1). */
	uint64_t put_hint;
	uint64_t get_hint;
	/* The held slot last seen blocking a MP_NOWAIT call here. */
	struct stall nowait_stall;
};
_Static_assert(sizeof(struct mp_queue) <= MP__HANDLE_MAX,
	       "the handle comes from lib/handle's pools");

/* What a blocked operation waits on: the slot and the word it saw. */
struct block {
	struct slot *sl;
	uint64_t w;
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

static inline bool
w_held(uint64_t w)
{
	uint32_t st = w_state(w);

	return st == ST_WRITING || st == ST_READING;
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
 * Copy at most SMALL_MAX bytes with overlapping word moves, inline: no
 * call, so the fast paths below need no register saves.  At 8-byte
 * messages the call to memcpy and glibc's dispatch were a quarter of a
 * put's instructions.  Every byte read or written lies in [0, n).
 */
#define SMALL_MAX 16
static inline void
copy_small(void *dst, const void *src, size_t n)
{
	unsigned char *d = dst;
	const unsigned char *p = src;

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

/* Move a hint forward to at least to: every position below is claimed. */
static MP__COLD void
advance(uint64_t *hint, uint64_t to)
{
	uint64_t cur = ck_pr_load_64(hint);

	while (cur < to && !ck_pr_cas_64_value(hint, cur, to, &cur))
		;
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

/*
 * Retire a slot held by a dead process: (seq, WRITING|READING, tid) ->
 * (seq + cap, FREE).  Only the CAS winner counts the loss.
 */
static bool
repair(struct mp_queue *q, struct slot *sl, uint64_t w)
{
	struct qshm *s = q->s;

	if (!ck_pr_cas_64(&sl->word, w, mkw(w_seq(w) + q->cap, ST_FREE, 0)))
		return false;
	ck_pr_inc_64(&s->join.lost);
	ck_pr_inc_64(&s->join.skipped);
	ck_pr_fence_atomic_load();
	wake_side(&s->put);
	wake_side(&s->get);
	wake_join(s);
	return true;
}

/*
 * Called while blocked on a held slot: once the same word has blocked
 * this process for STALL_NS, ask whether its owner lives, and repair the
 * slot when it does not.  Returns true when the slot was repaired (by us
 * or by someone else: the word moved on).
 */
static bool
stalled(struct mp_queue *q, const struct block *b, struct stall *st)
{
	uint64_t now;

	if (!w_held(b->w))
		return false;
	now = (uint64_t)mp__now();
	if (ck_pr_load_64(&st->word) != b->w) {
		ck_pr_store_64(&st->word, b->w);
		ck_pr_store_64(&st->since, now);
		return false;
	}
	if ((int64_t)(now - ck_pr_load_64(&st->since)) < STALL_NS)
		return false;
	if (mp__task_alive((pid_t)w_tid(b->w))) {
		ck_pr_store_64(&st->since, now);
		return false;
	}
	return repair(q, b->sl, b->w) || ck_pr_load_64(&b->sl->word) != b->w;
}

/* Where a walk starts: the later of this process's hint and the shared one. */
static inline uint64_t
start_at(const uint64_t *local, const uint64_t *shared)
{
	uint64_t l = ck_pr_load_64(local), s = ck_pr_load_64(shared);

	return (int64_t)(l - s) > 0 ? l : s;
}

/*
 * A claim of position pos was made: remember pos + 1 in this process's
 * hint, and publish it to the shared hint once every HINT_EVERY positions
 * (invariant 1 holds for both: pos + 1 <= the first unclaimed position).
 */
static inline void
claimed(uint64_t *local, uint64_t *shared, uint64_t pos)
{
	ck_pr_store_64(local, pos + 1);
	if (((pos + 1) & (HINT_EVERY - 1)) == 0)
		advance(shared, pos + 1);
}

/*
 * A put claimed position t and then found the queue closed: hand the
 * slot on as if consumed (skipped, not lost) and wake whoever waits.
 */
static void
retire_claim(struct mp_queue *q, struct slot *sl, uint64_t t)
{
	struct qshm *s = q->s;

	ck_pr_fas_64(&sl->word, mkw(t + q->cap, ST_FREE, 0));
	ck_pr_inc_64(&s->join.skipped);
	ck_pr_fence_atomic_load();
	wake_side(&s->get);
	wake_join(s);
	advance(&s->tail, t + 1);
}

/*
 * How many positions one claim may look at.  Each step past a position
 * means another process took it (or the position hint jumped forward to
 * where they are), so a healthy ring needs about its length plus what
 * others claim meanwhile; only words a peer wrote over (seqs far ahead,
 * a garbage tail or head hint) send a claim along 2^40 positions.  The
 * bound turns that endless loop into MP_ECORRUPT.
 */
#define SCAN_MAX(q) (4 * (q)->cap + 65536)

/*
 * Producer claim.  *cursor is the position to try first; on success it
 * is the claimed position, and *saw is or-ed with the consumers' sleep
 * flag as read after the claim.  Returns 1 (claimed), 0 (full: *b says on
 * what), -EPIPE (closed; a slot claimed after the close is retired),
 * MP_ECORRUPT (SCAN_MAX).
 */
static int
claim_put(struct mp_queue *q, uint64_t *cursor, struct slot **out,
	  struct block *b, uint32_t *saw)
{
	struct qshm *s = q->s;
	uint64_t t = *cursor, w, looked = 0;
	struct slot *sl;
	int64_t d;

	for (;;) {
		/* See SCAN_MAX: only a ring written over gets this far. */
		if (MP__UNLIKELY(++looked > SCAN_MAX(q)))
			return MP_ECORRUPT;
		sl = slot_at(q, t);
		w = ck_pr_load_64(&sl->word);
		d = seqdiff(w, t);
		if (d == 0 && w_state(w) == ST_FREE) {
			if (!ck_pr_cas_64(&sl->word, w,
					  mkw(t, ST_WRITING, me())))
				continue;
			/*
			 * The CAS is a full barrier: these loads of closed
			 * and of the sleep flag are ordered after the claim
			 * (see "Close" and "Sleeping and waking").
			 */
			ck_pr_fence_atomic_load();
			if (MP__UNLIKELY(ck_pr_load_32(&s->closed) != 0)) {
				retire_claim(q, sl, t);
				return -EPIPE;
			}
			*saw |= ck_pr_load_32(&s->get.flag);
			*cursor = t;
			*out = sl;
			return 1;
		}
		if (d < 0) {
			/* The previous lap still holds the slot: full. */
			b->sl = sl;
			b->w = w;
			advance(&s->tail, t);
			*cursor = t;
			return 0;
		}
		/* Position t belongs to someone else: look further. */
		t++;
		uint64_t hint = ck_pr_load_64(&s->tail);
		if ((int64_t)(hint - t) > 0)
			t = hint;
	}
}

/*
 * Consumer claim.  Returns 1 (claimed; *cursor, *out, *lenp set, *saw
 * or-ed with the producers' sleep flag), 0 (empty: *b says on what),
 * -EMSGSIZE (the next message exceeds cap; it is left as it is),
 * MP_ECORRUPT (its length exceeds msg_max: a peer wrote over the ring;
 * nothing is copied and the slot is left as it is; or SCAN_MAX).
 */
static int
claim_get(struct mp_queue *q, uint64_t *cursor, size_t cap,
	  struct slot **out, size_t *lenp, struct block *b, uint32_t *saw)
{
	struct qshm *s = q->s;
	uint64_t h = *cursor, w, looked = 0;
	struct slot *sl;
	int64_t d;

	for (;;) {
		if (MP__UNLIKELY(++looked > SCAN_MAX(q)))
			return MP_ECORRUPT;
		sl = slot_at(q, h);
		w = ck_pr_load_64(&sl->word);
		d = seqdiff(w, h);
		if (d == 0) {
			uint32_t st = w_state(w);

			if (st == ST_READY) {
				size_t len = ready_len(q, sl, w);
				/* Only a peer that wrote over the ring. */
				if (MP__UNLIKELY(len > q->msg_max))
					return MP_ECORRUPT;
				if (len > cap) {
					b->sl = sl;
					b->w = w;
					*cursor = h;
					return -EMSGSIZE;
				}
				if (!ck_pr_cas_64(&sl->word, w,
						  mkw(h, ST_READING, me())))
					continue;
				/* The CAS orders this load after the claim. */
				ck_pr_fence_atomic_load();
				*saw |= ck_pr_load_32(&s->put.flag);
				*cursor = h;
				*out = sl;
				*lenp = len;
				return 1;
			}
			if (st != ST_READING) {
				/* FREE or WRITING: nothing to take yet. */
				b->sl = sl;
				b->w = w;
				advance(&s->head, h);
				*cursor = h;
				return 0;
			}
		} else if (d < 0) {
			/* The previous lap is still being read: empty. */
			b->sl = sl;
			b->w = w;
			advance(&s->head, h);
			*cursor = h;
			return 0;
		}
		/* Taken by another consumer (READING, or d > 0). */
		h++;
		uint64_t hint = ck_pr_load_64(&s->head);
		if ((int64_t)(hint - h) > 0)
			h = hint;
	}
}

/*
 * The common case of claim_put, inline: the slot at t is free for it.
 * Returns 1 (claimed: *out, *saw or-ed), 0 (not at once: take the walk),
 * PUT_CLOSED (claimed *out, then found the queue closed: the caller
 * retires the slot, so that this stays free of calls).  A blind CAS,
 * without loading the word first: the line usually sits in the
 * consumer's cache, and one exclusive fetch is cheaper than a shared
 * fetch followed by an upgrade.  tid is me(), read once a call.
 */
#define PUT_CLOSED 2
static inline int
put_try(struct mp_queue *q, uint64_t t, struct slot **out, uint32_t *saw,
	uint32_t tid)
{
	struct qshm *s = q->s;
	struct slot *sl = slot_at(q, t);

	if (MP__UNLIKELY(!ck_pr_cas_64(&sl->word, mkw(t, ST_FREE, 0),
				       mkw(t, ST_WRITING, tid))))
		return 0;
	*out = sl;
	/* As in claim_put: ordered after the claim. */
	ck_pr_fence_atomic_load();
	if (MP__UNLIKELY(ck_pr_load_32(&s->closed) != 0))
		return PUT_CLOSED;
	*saw |= ck_pr_load_32(&s->get.flag);
	return 1;
}

/* put_try, then the walk: claim_put's contract. */
static inline int
claim_put_fast(struct mp_queue *q, uint64_t *cursor, struct slot **out,
	       struct block *b, uint32_t *saw, uint32_t tid)
{
	int rc = put_try(q, *cursor, out, saw, tid);

	if (MP__UNLIKELY(rc == PUT_CLOSED)) {
		retire_claim(q, *out, *cursor);
		return -EPIPE;
	}
	return rc != 0 ? rc : claim_put(q, cursor, out, b, saw);
}

/*
 * The common case of claim_get, inline: the slot at h is ready and fits.
 * The word is loaded first, since it carries the length that must be
 * checked against the caller's buffer before claiming (a message too long
 * stays queued); measured, the load costs 1-2% against a blind CAS, and it
 * lets a corrupt length be refused before anything is claimed.  Returns
 * true when claimed (*out, *lenp set, *saw or-ed); false: take the walk.
 */
static inline bool
get_try(struct mp_queue *q, uint64_t h, size_t cap, struct slot **out,
	size_t *lenp, uint32_t *saw, uint32_t tid)
{
	struct slot *sl = slot_at(q, h);
	uint64_t w = ck_pr_load_64(&sl->word);
	size_t len;

	if (MP__UNLIKELY((w & ~(uint64_t)W_TID_MASK) != mkw(h, ST_READY, 0)))
		return false;
	len = ready_len(q, sl, w);
	if (MP__UNLIKELY(len > cap || len > q->msg_max) ||
	    !ck_pr_cas_64(&sl->word, w, mkw(h, ST_READING, tid)))
		return false;
	/* As in claim_get: ordered after the claim. */
	ck_pr_fence_atomic_load();
	*saw |= ck_pr_load_32(&q->s->put.flag);
	*out = sl;
	*lenp = len;
	return true;
}

/* get_try, then the walk: claim_get's contract. */
static inline int
claim_get_fast(struct mp_queue *q, uint64_t *cursor, size_t cap,
	       struct slot **out, size_t *lenp, struct block *b,
	       uint32_t *saw, uint32_t tid)
{
	if (get_try(q, *cursor, cap, out, lenp, saw, tid))
		return 1;
	return claim_get(q, cursor, cap, out, lenp, b, saw);
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
	  const struct block *b)
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
	ck_pr_fas_32(&sd->flag, 1);
	v = ck_pr_load_32(&sd->seq);
	ck_pr_fence_load();
	if (ck_pr_load_64(&b->sl->word) != b->w ||
	    ck_pr_load_32(&s->closed) != 0)
		return 0;
	nap = mp__now() + (w_held(b->w) ? NAP_HELD_NS : NAP_IDLE_NS);
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
	q->data_off = data_off(msg_max);
	q->len_inline = msg_max <= INLINE_LEN_MAX;
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
	q->magic = 0;
	mp__region_unmap(q->s, q->maplen);
	mp__handle_free(q, sizeof(*q));
}

/*
 * Claim a slot for a put, waiting as wt allows.  Returns 1, or -EAGAIN,
 * -ETIMEDOUT, -EPIPE.
 */
static int
put_claim_wait(struct mp_queue *q, struct waiter *wt, uint64_t *cursor,
	       struct slot **sl, uint32_t *saw)
{
	struct qshm *s = q->s;
	struct block b;
	int rc;

	for (;;) {
		if (MP__UNLIKELY(ck_pr_load_32(&s->closed) != 0))
			return -EPIPE;
		rc = claim_put(q, cursor, sl, &b, saw);
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
		/*
		 * Resume where we blocked, or later if others moved the
		 * hint on: the shared hint alone lags by up to HINT_EVERY
		 * positions per process, each a line the producer writes.
		 */
		*cursor = start_at(cursor, &s->tail);
	}
}

ssize_t
mp_queue_put_many(mp_queue *q, const void *const msgs[], const size_t lens[],
		  size_t n, int64_t timeout_ns)
{
	struct waiter wt;
	struct slot *sl;
	struct block b;
	uint64_t cursor;
	uint32_t saw = 0, tid;
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
	cursor = start_at(&q->put_hint, &q->s->tail);
	tid = me();
	while (i < n) {
		rc = claim_put_fast(q, &cursor, &sl, &b, &saw, tid);
		if (rc == 0) {
			/* Wake consumers for what we published, then wait. */
			wake_if(&q->s->get, saw);
			saw = 0;
			rc = put_claim_wait(q, &wt, &cursor, &sl, &saw);
		}
		if (rc < 0)
			break;
		claimed(&q->put_hint, &q->s->tail, cursor);
		copy_msg(slot_data(q, sl), msgs[i], lens[i]);
		publish(q, sl, cursor, lens[i], false);
		cursor++;
		i++;
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
	t = start_at(&q->put_hint, &s->tail);
	rc = put_try(q, t, &sl, &saw, me());
	if (MP__UNLIKELY(rc == PUT_CLOSED)) {
		retire_claim(q, sl, t);
		return -EPIPE;
	}
	if (MP__UNLIKELY(rc == 0))
		goto slow;
	claimed(&q->put_hint, &s->tail, t);
	copy_msg(slot_data(q, sl), msg, len);
	publish(q, sl, t, len, false);
	wake_if(&s->get, saw);
	return 0;
slow:
	return put_slow(q, msg, len, timeout_ns);
}

/* After a leaf put: the shared hint's turn, and a wake, out of line. */
static MP__COLD int
put_done(mp_queue *q, uint64_t t, uint32_t saw)
{
	if (((t + 1) & (HINT_EVERY - 1)) == 0)
		advance(&q->s->tail, t + 1);
	wake_if(&q->s->get, saw);
	return 0;
}

/* A leaf put claimed a slot and then found the queue closed. */
static MP__COLD int
put_closed(mp_queue *q, struct slot *sl, uint64_t t)
{
	retire_claim(q, sl, t);
	return -EPIPE;
}

int
mp_queue_put(mp_queue *q, const void *msg, size_t len, int64_t timeout_ns)
{
	uint32_t tid, saw = 0;
	struct qshm *s;
	struct slot *sl;
	uint64_t t;
	int rc;

	/*
	 * The fast path, for a small message and a slot free at once, is a
	 * leaf: every call it may make is a tail call (to put_general for
	 * anything else, to put_done and put_closed for the rare ends), so
	 * that it saves no registers.
	 */
	if (len > SMALL_MAX)
		goto general;
	tid = (uint32_t)mp__cached_tid & W_TID_MASK;
	if (MP__UNLIKELY(!valid(q) || len > q->msg_max ||
			 (msg == NULL && len != 0) ||
			 !MP__TIMEOUT_OK(timeout_ns) || tid == 0))
		goto general;
	s = q->s;
	if (MP__UNLIKELY(ck_pr_load_32(&s->closed) != 0))
		goto general;
	t = start_at(&q->put_hint, &s->tail);
	rc = put_try(q, t, &sl, &saw, tid);
	if (MP__UNLIKELY(rc == 0))
		goto general;
	if (MP__UNLIKELY(rc == PUT_CLOSED))
		return put_closed(q, sl, t);
	ck_pr_store_64(&q->put_hint, t + 1);
	copy_small(slot_data(q, sl), msg, len);
	publish(q, sl, t, len, false);
	if (MP__UNLIKELY(saw != 0 || ((t + 1) & (HINT_EVERY - 1)) == 0))
		return put_done(q, t, saw);
	return 0;
general:
	return put_general(q, msg, len, timeout_ns);
}

int
mp_queue_reserve(mp_queue *q, void **buf, int64_t timeout_ns)
{
	struct waiter wt;
	struct slot *sl;
	uint64_t cursor;
	uint32_t saw = 0;
	int rc;

	if (!valid(q) || buf == NULL || waiter_init(&wt, timeout_ns) < 0)
		return -EINVAL;
	cursor = start_at(&q->put_hint, &q->s->tail);
	if ((rc = put_claim_wait(q, &wt, &cursor, &sl, &saw)) < 0)
		return rc;
	claimed(&q->put_hint, &q->s->tail, cursor);
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
 * -EAGAIN, -ETIMEDOUT, -EPIPE, -EMSGSIZE.
 */
static int
get_claim_wait(struct mp_queue *q, struct waiter *wt, uint64_t *cursor,
	       size_t cap, struct slot **sl, size_t *len, uint32_t *saw)
{
	struct qshm *s = q->s;
	struct block b;
	int rc;

	for (;;) {
		rc = claim_get(q, cursor, cap, sl, len, &b, saw);
		if (rc != 0)
			return rc;
		if (w_state(b.w) != ST_WRITING &&
		    ck_pr_load_32(&s->closed) != 0) {
			/* Closed, then still empty: drained (see "Close"). */
			ck_pr_fence_load();
			if (ck_pr_load_64(&b.sl->word) == b.w)
				return -EPIPE;
			continue;
		}
		if (wt->deadline == DL_NOWAIT) {
			if (stalled(q, &b, &q->nowait_stall))
				continue;
			return -EAGAIN;
		}
		if ((rc = wait_step(q, &s->get, wt, &b)) < 0)
			return rc;
		/* As in put_claim_wait. */
		*cursor = start_at(cursor, &s->head);
	}
}

ssize_t
mp_queue_get_many(mp_queue *q, void *buf, size_t cap, size_t lens[],
		  size_t n, int64_t timeout_ns)
{
	struct waiter wt;
	struct slot *sl;
	struct block b;
	uint64_t cursor;
	uint32_t saw = 0, tid;
	size_t i, len;
	int rc;

	if (!valid(q) || lens == NULL || n == 0 || n > SSIZE_MAX ||
	    (buf == NULL && cap != 0) || (n > 1 && cap > SIZE_MAX / n) ||
	    waiter_init(&wt, timeout_ns) < 0)
		return -EINVAL;
	cursor = start_at(&q->get_hint, &q->s->head);
	tid = me();
	rc = claim_get_fast(q, &cursor, cap, &sl, &len, &b, &saw, tid);
	if (rc == 0)
		rc = get_claim_wait(q, &wt, &cursor, cap, &sl, &len, &saw);
	if (rc < 0)
		return rc;
	/*
	 * Copy out and release each slot before claiming the next, so that a
	 * process never holds more than one: a kill loses at most one message.
	 */
	for (i = 0;;) {
		claimed(&q->get_hint, &q->s->head, cursor);
		copy_msg((unsigned char *)buf + i * cap, slot_data(q, sl),
			 len);
		lens[i++] = len;
		/* Orders the copy out before the slot is handed back. */
		ck_pr_fence_load_store();
		ck_pr_store_64(&sl->word, mkw(cursor + q->cap, ST_FREE, 0));
		cursor++;
		if (i == n || claim_get_fast(q, &cursor, cap, &sl, &len, &b,
					     &saw, tid) != 1)
			break;
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
	struct qshm *s;
	struct slot *sl;
	uint64_t h;
	uint32_t saw = 0;
	size_t len;

	if (MP__UNLIKELY(!valid(q) || (buf == NULL && cap != 0) ||
			 !MP__TIMEOUT_OK(timeout_ns)))
		goto slow;
	s = q->s;
	h = start_at(&q->get_hint, &s->head);
	if (MP__UNLIKELY(!get_try(q, h, cap, &sl, &len, &saw, me())))
		goto slow;
	claimed(&q->get_hint, &s->head, h);
	copy_msg(buf, slot_data(q, sl), len);
	/* Orders the copy out before the slot goes back. */
	ck_pr_fence_load_store();
	ck_pr_store_64(&sl->word, mkw(h + q->cap, ST_FREE, 0));
	wake_if(&s->put, saw);
	return (ssize_t)len;
slow:
	return get_slow(q, buf, cap, timeout_ns);
}

/* After a leaf get: the shared hint's turn, and a wake, out of line. */
static MP__COLD ssize_t
get_done(mp_queue *q, uint64_t h, uint32_t saw, size_t len)
{
	if (((h + 1) & (HINT_EVERY - 1)) == 0)
		advance(&q->s->head, h + 1);
	wake_if(&q->s->put, saw);
	return (ssize_t)len;
}

ssize_t
mp_queue_get(mp_queue *q, void *buf, size_t cap, int64_t timeout_ns)
{
	uint32_t tid, saw = 0;
	struct qshm *s;
	struct slot *sl;
	uint64_t h;
	size_t len;

	/*
	 * The fast path, a leaf as in mp_queue_put.  Only
	 * for queues of small messages: the length is known only once the
	 * slot is read, and a longer message would pay for both paths.
	 */
	if (q == NULL || q->magic != QUEUE_MAGIC || q->msg_max > SMALL_MAX)
		goto general;
	tid = (uint32_t)mp__cached_tid & W_TID_MASK;
	if (MP__UNLIKELY(!valid(q) || (buf == NULL && cap != 0) ||
			 !MP__TIMEOUT_OK(timeout_ns) || tid == 0))
		goto general;
	s = q->s;
	h = start_at(&q->get_hint, &s->head);
	if (MP__UNLIKELY(!get_try(q, h, cap, &sl, &len, &saw, tid)))
		goto general;
	ck_pr_store_64(&q->get_hint, h + 1);
	copy_small(buf, slot_data(q, sl), len);
	/* Orders the copy out before the slot goes back. */
	ck_pr_fence_load_store();
	ck_pr_store_64(&sl->word, mkw(h + q->cap, ST_FREE, 0));
	if (MP__UNLIKELY(saw != 0 || ((h + 1) & (HINT_EVERY - 1)) == 0))
		return get_done(q, h, saw, len);
	return (ssize_t)len;
general:
	return get_general(q, buf, cap, timeout_ns);
}

ssize_t
mp_queue_peek(mp_queue *q, const void **msg, int64_t timeout_ns)
{
	struct waiter wt;
	struct slot *sl;
	uint64_t cursor;
	uint32_t saw = 0;
	size_t len;
	int rc;

	if (!valid(q) || msg == NULL || waiter_init(&wt, timeout_ns) < 0)
		return -EINVAL;
	cursor = start_at(&q->get_hint, &q->s->head);
	rc = get_claim_wait(q, &wt, &cursor, SIZE_MAX, &sl, &len, &saw);
	if (rc < 0)
		return rc;
	claimed(&q->get_hint, &q->s->head, cursor);
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

/*
 * How far qsize walks from a hint.  The shared hints lag the first free
 * position by less than HINT_EVERY per process between its claims and its
 * next advance; the bound only keeps a walk that chases heavy traffic
 * finite (qsize is approximate then anyway).
 */
#define WALK_MAX(q) (2 * (q)->cap + 64 * HINT_EVERY)

/*
 * The first position not yet claimed by a put: tail, plus claimed slots
 * beyond it whose claimer has not advanced tail yet (or died first).
 */
static uint64_t
tail_now(const struct mp_queue *q)
{
	uint64_t t = ck_pr_load_64(&q->s->tail);

	for (uint64_t i = 0; i < WALK_MAX(q); i++, t++) {
		uint64_t w = ck_pr_load_64(&slot_at(q, t)->word);
		int64_t d = seqdiff(w, t);
		if (d < 0 || (d == 0 && w_state(w) == ST_FREE))
			break;
	}
	return t;
}

/* The first position not yet claimed by a get, the same way. */
static uint64_t
head_now(const struct mp_queue *q)
{
	uint64_t h = ck_pr_load_64(&q->s->head);

	for (uint64_t i = 0; i < WALK_MAX(q); i++, h++) {
		uint64_t w = ck_pr_load_64(&slot_at(q, h)->word);
		int64_t d = seqdiff(w, h);
		if (d < 0 || (d == 0 && w_state(w) != ST_READING))
			break;
	}
	return h;
}

size_t
mp_queue_qsize(const mp_queue *q)
{
	uint64_t h, t;

	if (!valid(q))
		return 0;
	h = head_now(q);
	t = tail_now(q);
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
	return (int64_t)(tail_now(q) - skipped - done);
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
