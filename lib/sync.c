/* SPDX-License-Identifier: MIT */
/*
 * Theory of operation: Semaphore, Event, Barrier
 *
 * Handles are as in lib/lock.c: a heap handle with a magic word in front
 * of a shared struct in its own memfd region; free unmaps the region and
 * returns the handle, cleared, to the handle pool, so a freed handle is
 * -EINVAL.
 *
 * The sleepers rule.  Each object has a futex word that carries its state
 * and a sleepers count.  A waiter increments sleepers, re-reads the word,
 * and sleeps only if it still holds the value it decided on; a waker
 * changes the word with a locked instruction and then reads sleepers,
 * entering the kernel only when it is not 0.  Both sides order their
 * write before their read (a locked RMW, plus ck_pr_fence_atomic_load for
 * machines where an RMW is not a full fence), so at least one of them
 * sees the other's write: either the waiter sees the new word and does not
 * sleep, or the waker sees the sleeper and wakes it, and if the sleeper
 * has not reached FUTEX_WAIT yet, the kernel's compare of the word makes
 * that wait return at once.  No wake-up is lost.
 *
 * Semaphore.  value is the futex word.  acquire: CAS v -> v-1 while v > 0,
 * else sleep on value == 0.  release: CAS v -> v+1 (refused at the bound:
 * the initial value of a BoundedSemaphore, INT32_MAX otherwise), then
 * FUTEX_WAKE one if anyone sleeps.  A woken waiter retries the CAS before
 * it looks at its deadline (the kernel never reports a timeout for a
 * waiter it woke), so a release is never swallowed by a timeout.
 *
 * Event.  word = generation << 1 | set.  set: CAS to (gen+1) << 1 | 1 (a
 * set of a set event changes nothing and wakes nobody: nobody sleeps on a
 * set word); clear: CAS the bit off.  A waiter sleeps on the clear word it
 * saw; any change to it is a set (clear does not touch a clear word), so it
 * returns 1 even if the flag was cleared again before it ran, as Python's
 * Event does.
 *
 * Event sleepers are a mark, not a count, so that a killed sleeper cannot
 * keep every later set in the kernel.  sleepers is 0 or u | 1, u the
 * newest clear word that a waiter announced it sleeps on.  A waiter on u
 * announces with a CAS that writes max(sleepers, u | 1) in generation
 * order (always a successful RMW, even when the value stays), then
 * re-reads word and sleeps on u; it never takes the mark back.  A set that
 * ended clear word v reads sleepers after its CAS; if it is not 0 it
 * clears the mark when the mark is for v or older (a CAS, so a newer mark
 * stays), and then wakes every sleeper.  A sleeper whose slice ends
 * announces again.
 *
 * No lost wake-up.  Take a waiter asleep on u and the set S that ends u.
 * The waiter's announcing RMW and S's CAS of word are each followed by a
 * full fence before the other load, so either the waiter saw S's word and
 * did not sleep, or S's load of sleepers reads the waiter's RMW or a later
 * value.  Later values are marks >= u (the CAS keeps the newest), on which
 * S wakes, or a 0 written by the clearing CAS of a set C.  C clears only
 * marks for its own ended word or older, so C ended u (C is S, and S does
 * not read its own later clear) or a later word: then C's CAS of word came
 * after S's, and C wakes every sleeper after clearing, so the waiter is
 * woken, or its FUTEX_WAIT compare sees a word that is no longer u.  A
 * mark is thus cleared only by a set that then wakes everyone it covered.
 *
 * Healing.  A sleeper killed in its sleep (or a waiter that timed out)
 * leaves its mark; the next set that ends its word or a later one clears
 * it and pays one futile FUTEX_WAKE, and later sets find 0 and stay out
 * of the kernel.
 *
 * Healing counted sleepers (Semaphore, Barrier).  A release wakes one
 * sleeper and a barrier round wakes all, so these keep a count; a waiter
 * killed in its sleep leaves it one too high, and every later waker would
 * enter the kernel for nobody.  So a waiter stores the time (announced)
 * before it increments the count, and announces again at every slice (a
 * live sleeper's announcement is never older than one slice).  A waker
 * whose FUTEX_WAKE woke nobody and that finds the latest announcement
 * older than two slices knows that every counted sleeper is dead, and
 * CASes the count it saw to 0 (a waiter that counted itself meanwhile
 * makes the CAS fail).  Decrements stop at 0.  The cost: a killed sleeper
 * makes wakers enter the kernel for at most two slices.  The one race: a
 * live waiter preempted for more than two slices between its increment
 * and its FUTEX_WAIT may lose its count and then sleep uncounted; it is
 * then woken by the end of its slice, not by a release (late, never lost).
 *
 * Barrier.  One 64-bit state word, changed only by CAS:
 *
 *	bits  0..31   the futex word: round generation << 1 | broken
 *	bits 32..47   count: callers arrived in this round
 *	bits 48..63   history: bit i set when round gen-1-i ended broken
 *
 * wait: CAS count+1 (index = old count); the caller that makes count reach
 * parties instead CASes to {gen+1, count 0, history << 1} and wakes all.
 * The others sleep on the low word.  When it changes: the same generation
 * with the broken bit means broken (-EPIPE); a later generation is looked
 * up in the history (reset writes 1 for a round it cut short, completion
 * 0), so a waiter that runs late still learns how its round ended (up to
 * 16 rounds late; later than that it reports success).  A waiter whose
 * timeout ends CASes the broken bit in, if its round is still current and
 * unbroken, and returns -ETIMEDOUT; if the CAS fails because the round
 * completed, it returns its index.  abort sets the broken bit; reset
 * starts a new generation (recording the old round as broken if anyone was
 * waiting or it was broken) with count 0.
 *
 * Barrier liveness: each arrival records {generation, tid} in the slot of
 * its index.  A waiter whose sleep slice (BARRIER_SLICE) runs out checks
 * the slots of its round's arrivals; a dead one (mp__task_alive) breaks
 * the barrier.  A caller killed between its arrival CAS and its slot store
 * (a few instructions) is not detected: its slot still names an older
 * round, and the others wait until their timeouts.
 *
 * Crash analysis (what a survivor sees after a kill at each step):
 *   Semaphore acquire: the CAS is the whole acquisition: before it nothing
 *     happened, after it the unit is consumed (a semaphore has no owner to
 *     give it back, as in Python).  A killed sleeper leaves the count one
 *     too high: futile wakes follow for two slices, then a waker clears it
 *     (see "Healing counted sleepers").
 *   Semaphore release, after the CAS, before FUTEX_WAKE: value is right;
 *     the sleeper that missed its wake re-checks at the end of its slice
 *     (SLOW_SLICE), so nobody sleeps forever.  The same holds for a woken
 *     waiter killed before it retried.
 *   Event set after the CAS, before FUTEX_WAKE: as above; killed after
 *     clearing the mark, before FUTEX_WAKE: the sleepers it covered wake at
 *     the end of their slice and see the new word.  Event wait, killed
 *     anywhere: at most a stale mark, which the next set clears (one
 *     futile wake); the word is never written by a waiter.
 *   Barrier: every state change is one CAS, so the state is always one of
 *     the protocol's.  A waiter killed while waiting is detected as above
 *     and breaks the round for the others; reset repairs it.  The last
 *     arrival killed after its CAS, before FUTEX_WAKE: the round has
 *     completed; sleepers see the new generation at the end of their slice.
 */
#include "lib/internal.h"

#include <mproc/sync.h>

#include <limits.h>
#include <sched.h>
#include <stdlib.h>

#include <ck_backoff.h>
#include <ck_pr.h>

#include "lib/futex.h"
#include "lib/import.h"
#include "lib/lock.h"
#include "lib/region.h"
#include "lib/task.h"

#define SLOW_SLICE MP_MSEC(200)		/* safety net against a killed waker */
#define BARRIER_SLICE MP_MSEC(50)	/* how often waiters check the others */
#define SPINS 4				/* ck_backoff rounds before sleeping */

#define SEM_MAGIC 0x6d707365u		/* "mpse" */
#define EVENT_MAGIC 0x6d706576u		/* "mpev" */
#define BARRIER_MAGIC 0x6d706272u	/* "mpbr" */
#define SEM_SHM_MAGIC 0x53454d41u	/* "SEMA" */
#define EVENT_SHM_MAGIC 0x45564e54u	/* "EVNT" */
#define BARRIER_SHM_MAGIC 0x42415252u	/* "BARR" */

static int64_t
slice_end(int64_t deadline, int64_t slice)
{
	int64_t now = mp__now();

	return deadline - now > slice ? now + slice : deadline;
}

/*
 * The counted sleepers of a Semaphore or a Barrier (see "Healing counted
 * sleepers" at the top): how many, and when one last announced itself.
 */
struct sleepers {
	uint32_t n;
	uint32_t pad;
	int64_t announced;	/* mp__now() of the latest announcement */
};

/*
 * Sleep on word while it holds expected, counted in *sl, until the end of
 * the slice.  Returns what mp__futex_wait returns.
 */
static int
sleep_on(uint32_t *word, uint32_t expected, struct sleepers *sl,
	 int64_t until)
{
	uint32_t n;
	int rc = 0;

	/* The time first, then the count: see "Healing counted sleepers". */
	ck_pr_store_64((uint64_t *)&sl->announced, (uint64_t)mp__now());
	ck_pr_inc_32(&sl->n);
	/* Orders our count before the re-read; pairs with the waker's RMW. */
	ck_pr_fence_atomic_load();
	if (ck_pr_load_32(word) == expected)
		rc = mp__futex_wait(word, expected, until);
	/* Never below 0: a waker may have cleared a count it judged stale. */
	n = ck_pr_load_32(&sl->n);
	while (n != 0 && !ck_pr_cas_32_value(&sl->n, n, n - 1, &n))
		;
	return rc;
}

/*
 * Wake n sleepers on word if any are counted.  A count that wakes nobody
 * and whose latest announcement is older than two of the sleepers' slices
 * belongs to dead waiters only: clear it, so that later wakers stay out of
 * the kernel.
 */
static void
wake_if_sleepers(uint32_t *word, struct sleepers *sl, int n, int64_t slice)
{
	uint32_t c;

	/* Orders the caller's RMW of word before the read of sleepers. */
	ck_pr_fence_atomic_load();
	if ((c = ck_pr_load_32(&sl->n)) == 0)
		return;
	if (mp__futex_wake(word, n) == 0 &&
	    mp__now() - (int64_t)ck_pr_load_64((uint64_t *)&sl->announced) >
		    2 * slice)
		(void)ck_pr_cas_32(&sl->n, c, 0);
}

/*
 * Semaphore.
 */

struct sem_shm {
	struct mp__hdr hdr;
	uint32_t value;		/* futex word */
	uint32_t bound;		/* the largest value a release may make */
	uint32_t bounded;	/* 1 for a BoundedSemaphore */
	struct sleepers sleepers;
};

struct mp_sem {
	uint32_t magic;
	uint32_t pad;
	struct sem_shm *shm;
};

_Static_assert(sizeof(struct mp_sem) <= MP__HANDLE_MAX, "handle size");

static inline struct sem_shm *
sem_shm(const mp_sem *s)
{
	return MP__LIKELY(s != NULL && s->magic == SEM_MAGIC) ? s->shm : NULL;
}

static int
sem_new(mp_sem **out, unsigned value, bool bounded)
{
	struct mp_sem *s;
	struct sem_shm *sh;
	void *shm;
	int rc;

	if (out == NULL || value > INT32_MAX)
		return -EINVAL;
	if ((s = mp__handle_alloc(sizeof(*s))) == NULL)
		return -ENOMEM;
	if ((rc = mp__region_map(sizeof(*sh), &shm)) < 0)
		goto fail_free;
	sh = shm;
	sh->hdr.magic = SEM_SHM_MAGIC;
	sh->hdr.version = MP__LAYOUT_VERSION;
	sh->value = value;
	sh->bound = bounded ? value : INT32_MAX;
	sh->bounded = bounded;
	s->shm = sh;
	s->magic = SEM_MAGIC;
	*out = s;
	return 0;
fail_free:
	mp__handle_free(s, sizeof(*s));
	return rc;
}

/*
 * Map a region received by fd whose header must read magic and which must
 * hold at least min bytes (lib/import.h).
 */
static int
attach_checked(int fd, uint32_t magic, size_t min, void **shm, size_t *size)
{
	struct mp__hdr *h;
	int rc;

	if ((rc = mp__region_attach(fd, shm, size)) < 0)
		return rc;
	h = *shm;
	if (*size < min || h->magic != magic ||
	    h->version != MP__LAYOUT_VERSION) {
		mp__region_unmap(*shm, *size);
		return -EINVAL;
	}
	return 0;
}

int
mp__sem_import(int fd, mp_sem **out)
{
	struct mp_sem *s;
	size_t size;
	void *shm;
	int rc;

	if (out == NULL)
		return -EINVAL;
	if ((rc = attach_checked(fd, SEM_SHM_MAGIC, sizeof(struct sem_shm),
				 &shm, &size)) < 0)
		return rc;
	if ((s = mp__handle_alloc(sizeof(*s))) == NULL) {
		mp__region_unmap(shm, size);
		return -ENOMEM;
	}
	s->shm = shm;
	s->magic = SEM_MAGIC;
	*out = s;
	return 0;
}

int
mp_sem_new(mp_sem **out, unsigned value)
{
	return sem_new(out, value, false);
}

int
mp_bsem_new(mp_sem **out, unsigned value)
{
	return sem_new(out, value, true);
}

/* One attempt to take a unit: true on success. */
static inline bool
sem_try(struct sem_shm *sh)
{
	uint32_t v = ck_pr_load_32(&sh->value);

	while (v > 0) {
		if (ck_pr_cas_32_value(&sh->value, v, v - 1, &v)) {
			/* What the releaser published is visible after this. */
			ck_pr_fence_acquire();
			return true;
		}
	}
	return false;
}

int
mp_sem_acquire(mp_sem *s, int64_t timeout_ns)
{
	struct sem_shm *sh = sem_shm(s);
	unsigned int backoff = CK_BACKOFF_INITIALIZER;
	int64_t deadline, until;

	if (MP__UNLIKELY(sh == NULL || !MP__TIMEOUT_OK(timeout_ns)))
		return -EINVAL;
	if (MP__LIKELY(sem_try(sh)))
		return 0;
	if (timeout_ns == MP_NOWAIT)
		return -EAGAIN;
	mp__deadline(timeout_ns, &deadline);
	for (int i = 0; i < SPINS; i++) {
		ck_backoff_eb(&backoff);
		if (sem_try(sh))
			return 0;
	}
	for (;;) {
		if (sem_try(sh))
			return 0;
		until = slice_end(deadline, SLOW_SLICE);
		if (sleep_on(&sh->value, 0, &sh->sleepers, until) == 0 ||
		    until != deadline)
			continue;
		return sem_try(sh) ? 0 : -ETIMEDOUT;
	}
}

int
mp_sem_release(mp_sem *s)
{
	struct sem_shm *sh = sem_shm(s);
	uint32_t v;

	if (MP__UNLIKELY(sh == NULL))
		return -EINVAL;
	v = ck_pr_load_32(&sh->value);
	/* Publishes the caller's writes to whoever takes the unit. */
	ck_pr_fence_release();
	do {
		if (v >= sh->bound)
			return -EOVERFLOW;
	} while (!ck_pr_cas_32_value(&sh->value, v, v + 1, &v));
	wake_if_sleepers(&sh->value, &sh->sleepers, 1, SLOW_SLICE);
	return 0;
}

int
mp_sem_value(const mp_sem *s)
{
	struct sem_shm *sh = sem_shm(s);

	if (sh == NULL)
		return -EINVAL;
	return (int)ck_pr_load_32(&sh->value);
}

void
mp_sem_free(mp_sem *s)
{
	struct sem_shm *sh = sem_shm(s);

	if (sh == NULL)
		return;
	s->magic = 0;
	s->shm = NULL;
	mp__region_unmap(sh, sizeof(*sh));
	mp__handle_free(s, sizeof(*s));
}

/*
 * Event.
 */

struct event_shm {
	struct mp__hdr hdr;
	uint32_t word;		/* futex word: generation << 1 | set */
	uint32_t sleepers;	/* 0, or a clear word slept on | 1 */
};

struct mp_event {
	uint32_t magic;
	uint32_t pad;
	struct event_shm *shm;
};

_Static_assert(sizeof(struct mp_event) <= MP__HANDLE_MAX, "handle size");

static inline struct event_shm *
event_shm(const mp_event *e)
{
	return e != NULL && e->magic == EVENT_MAGIC ? e->shm : NULL;
}

int
mp__event_import(int fd, mp_event **out)
{
	struct mp_event *e;
	size_t size;
	void *shm;
	int rc;

	if (out == NULL)
		return -EINVAL;
	if ((rc = attach_checked(fd, EVENT_SHM_MAGIC, sizeof(struct event_shm),
				 &shm, &size)) < 0)
		return rc;
	if ((e = mp__handle_alloc(sizeof(*e))) == NULL) {
		mp__region_unmap(shm, size);
		return -ENOMEM;
	}
	e->shm = shm;
	e->magic = EVENT_MAGIC;
	*out = e;
	return 0;
}

int
mp_event_new(mp_event **out)
{
	struct mp_event *e;
	struct event_shm *sh;
	void *shm;
	int rc;

	if (out == NULL)
		return -EINVAL;
	if ((e = mp__handle_alloc(sizeof(*e))) == NULL)
		return -ENOMEM;
	if ((rc = mp__region_map(sizeof(*sh), &shm)) < 0)
		goto fail_free;
	sh = shm;
	sh->hdr.magic = EVENT_SHM_MAGIC;
	sh->hdr.version = MP__LAYOUT_VERSION;
	e->shm = sh;
	e->magic = EVENT_MAGIC;
	*out = e;
	return 0;
fail_free:
	mp__handle_free(e, sizeof(*e));
	return rc;
}

/* Whether clear word a is newer than clear word b (generation order). */
static inline bool
event_newer(uint32_t a, uint32_t b)
{
	return (int32_t)(a - b) > 0;
}

int
mp_event_set(mp_event *e)
{
	struct event_shm *sh = event_shm(e);
	uint32_t v, s;

	if (sh == NULL)
		return -EINVAL;
	v = ck_pr_load_32(&sh->word);
	/* Publishes the caller's writes to the waiters it releases. */
	ck_pr_fence_release();
	do {
		if (v & 1)
			return 0;
	} while (!ck_pr_cas_32_value(&sh->word, v, (v + 2) | 1, &v));
	/* The word before the mark; pairs with event_announce()'s fence. */
	ck_pr_fence_atomic_load();
	s = ck_pr_load_32(&sh->sleepers);
	if (MP__LIKELY(s == 0))
		return 0;
	/* A mark for v or older: all it covers wake now.  A newer one stays. */
	if (!event_newer(s & ~1u, v))
		(void)ck_pr_cas_32(&sh->sleepers, s, 0);
	mp__futex_wake(&sh->word, INT_MAX);
	return 0;
}

int
mp_event_clear(mp_event *e)
{
	struct event_shm *sh = event_shm(e);
	uint32_t v;

	if (sh == NULL)
		return -EINVAL;
	v = ck_pr_load_32(&sh->word);
	while ((v & 1) && !ck_pr_cas_32_value(&sh->word, v, v & ~1u, &v))
		;
	return 0;
}

bool
mp_event_is_set(const mp_event *e)
{
	struct event_shm *sh = event_shm(e);

	return sh != NULL && (ck_pr_load_32(&sh->word) & 1);
}

/*
 * Announce a sleeper on clear word v (see Event above): sleepers becomes
 * the newer of itself and v | 1, by a CAS that succeeds even when the
 * value stays, then a fence before the caller re-reads the word.
 */
static void
event_announce(uint32_t *sleepers, uint32_t v)
{
	uint32_t s = ck_pr_load_32(sleepers), mark;

	do {
		mark = s != 0 && event_newer(s & ~1u, v) ? s : v | 1;
	} while (!ck_pr_cas_32_value(sleepers, s, mark, &s));
	/* The mark before the re-read of word; pairs with mp_event_set(). */
	ck_pr_fence_atomic_load();
}

int
mp_event_wait(mp_event *e, int64_t timeout_ns)
{
	struct event_shm *sh = event_shm(e);
	int64_t deadline, until;
	uint32_t v;

	if (sh == NULL || !MP__TIMEOUT_OK(timeout_ns))
		return -EINVAL;
	v = ck_pr_load_32(&sh->word);
	if (v & 1) {
		/* Pairs with the setter's release fence. */
		ck_pr_fence_acquire();
		return 1;
	}
	if (timeout_ns == MP_NOWAIT)
		return 0;
	mp__deadline(timeout_ns, &deadline);
	for (;;) {
		int rc = 0;

		until = slice_end(deadline, SLOW_SLICE);
		event_announce(&sh->sleepers, v);
		if (ck_pr_load_32(&sh->word) == v)
			rc = mp__futex_wait(&sh->word, v, until);
		if (ck_pr_load_32(&sh->word) != v) {
			ck_pr_fence_acquire();
			return 1;
		}
		if (rc == -ETIMEDOUT && until == deadline)
			return 0;
	}
}

void
mp_event_free(mp_event *e)
{
	struct event_shm *sh = event_shm(e);

	if (sh == NULL)
		return;
	e->magic = 0;
	e->shm = NULL;
	mp__region_unmap(sh, sizeof(*sh));
	mp__handle_free(e, sizeof(*e));
}

/*
 * Barrier.
 */

struct barrier_shm {
	struct mp__hdr hdr;
	uint64_t state;		/* see the top of the file */
	uint32_t parties;
	uint32_t pad0;
	struct sleepers sleepers;
	uint64_t pad[3];
	uint64_t slot[];	/* per index: generation << 32 | tid */
};

struct mp_barrier {
	uint32_t magic;
	uint32_t parties;
	struct barrier_shm *shm;
	size_t len;
};

_Static_assert(sizeof(struct mp_barrier) <= MP__HANDLE_MAX, "handle size");

#define B_LOW(s) ((uint32_t)(s))
#define B_GEN(s) (((uint32_t)(s) >> 1))
#define B_BROKEN(s) ((s) & 1)
#define B_COUNT(s) ((uint32_t)((s) >> 32) & 0xffffu)
#define B_HIST(s) ((uint32_t)((s) >> 48))
#define B_ONE ((uint64_t)1 << 32)
#define B_MAKE(gen, broken, count, hist)                                 \
	((uint64_t)(uint32_t)((gen) << 1 | (broken)) |                   \
	 (uint64_t)(count) << 32 | (uint64_t)((hist) & 0xffffu) << 48)
#define B_GEN_MASK 0x7fffffffu

/* The futex word: the low half of state, wherever the byte order puts it. */
static inline uint32_t *
b_word(struct barrier_shm *sh)
{
#if __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
	return (uint32_t *)&sh->state;
#else
	return (uint32_t *)&sh->state + 1;
#endif
}

static inline struct barrier_shm *
barrier_shm(const mp_barrier *b)
{
	return b != NULL && b->magic == BARRIER_MAGIC ? b->shm : NULL;
}

int
mp__barrier_import(int fd, mp_barrier **out)
{
	struct mp_barrier *b;
	struct barrier_shm *sh;
	size_t size, len;
	void *shm;
	int rc;

	if (out == NULL)
		return -EINVAL;
	if ((rc = attach_checked(fd, BARRIER_SHM_MAGIC, sizeof(*sh), &shm,
				 &size)) < 0)
		return rc;
	sh = shm;
	len = sizeof(*sh) + (size_t)sh->parties * sizeof(sh->slot[0]);
	if (sh->parties == 0 || sh->parties > 0xffff || len > size) {
		mp__region_unmap(shm, size);
		return -EINVAL;
	}
	if ((b = mp__handle_alloc(sizeof(*b))) == NULL) {
		mp__region_unmap(shm, size);
		return -ENOMEM;
	}
	b->shm = sh;
	b->len = len;
	b->parties = sh->parties;
	b->magic = BARRIER_MAGIC;
	*out = b;
	return 0;
}

int
mp_barrier_new(mp_barrier **out, unsigned parties)
{
	struct mp_barrier *b;
	struct barrier_shm *sh;
	void *shm;
	size_t len;
	int rc;

	if (out == NULL || parties == 0 || parties > 0xffff)
		return -EINVAL;
	if ((b = mp__handle_alloc(sizeof(*b))) == NULL)
		return -ENOMEM;
	len = sizeof(*sh) + parties * sizeof(sh->slot[0]);
	if ((rc = mp__region_map(len, &shm)) < 0)
		goto fail_free;
	sh = shm;
	sh->hdr.magic = BARRIER_SHM_MAGIC;
	sh->hdr.version = MP__LAYOUT_VERSION;
	sh->parties = parties;
	for (unsigned i = 0; i < parties; i++)
		sh->slot[i] = UINT64_MAX;
	b->shm = sh;
	b->len = len;
	b->parties = parties;
	b->magic = BARRIER_MAGIC;
	*out = b;
	return 0;
fail_free:
	mp__handle_free(b, sizeof(*b));
	return rc;
}

/* Set the broken bit on round gen if it is still current: true if set. */
static bool
barrier_break(struct barrier_shm *sh, uint32_t gen)
{
	uint64_t s = ck_pr_load_64(&sh->state);

	while (B_GEN(s) == gen && !B_BROKEN(s)) {
		if (ck_pr_cas_64_value(&sh->state, s, s | 1, &s)) {
			wake_if_sleepers(b_word(sh), &sh->sleepers, INT_MAX,
				 BARRIER_SLICE);
			return true;
		}
	}
	return false;
}

/* Whether an arrival of round gen is known to be dead. */
static bool
barrier_dead_waiter(struct barrier_shm *sh, uint32_t gen, uint32_t count)
{
	for (uint32_t i = 0; i < count && i < sh->parties; i++) {
		uint64_t slot = ck_pr_load_64(&sh->slot[i]);
		if ((uint32_t)(slot >> 32) == gen &&
		    !mp__task_alive((pid_t)(uint32_t)slot))
			return true;
	}
	return false;
}

/* How round gen ended, seen from state s: the index or -EPIPE. */
static int
barrier_outcome(uint64_t s, uint32_t gen, int index)
{
	uint32_t d = (B_GEN(s) - gen) & B_GEN_MASK;

	if (d == 0)
		return -EPIPE;		/* still our round: it broke */
	if (d <= 16 && (B_HIST(s) >> (d - 1)) & 1)
		return -EPIPE;
	return index;
}

int
mp_barrier_wait(mp_barrier *b, int64_t timeout_ns)
{
	struct barrier_shm *sh = barrier_shm(b);
	unsigned int backoff = CK_BACKOFF_INITIALIZER;
	int64_t deadline, until;
	uint32_t gen, count, parties;
	uint64_t s;
	int rc;

	if (sh == NULL || !MP__TIMEOUT_OK(timeout_ns))
		return -EINVAL;
	parties = b->parties;
	s = ck_pr_load_64(&sh->state);
	for (;;) {
		if (B_BROKEN(s))
			return -EPIPE;
		count = B_COUNT(s);
		gen = B_GEN(s);
		if (count + 1 >= parties) {
			uint64_t next = B_MAKE((gen + 1) & B_GEN_MASK, 0, 0,
					       B_HIST(s) << 1);
			/* Releases the round's writes to its waiters. */
			ck_pr_fence_release();
			if (!ck_pr_cas_64_value(&sh->state, s, next, &s))
				continue;
			wake_if_sleepers(b_word(sh), &sh->sleepers, INT_MAX,
				 BARRIER_SLICE);
			return (int)parties - 1;
		}
		if (timeout_ns == MP_NOWAIT)
			return -EAGAIN;
		if (ck_pr_cas_64_value(&sh->state, s, s + B_ONE, &s))
			break;
	}
	ck_pr_store_64(&sh->slot[count],
		       (uint64_t)gen << 32 | (uint32_t)mp__tid());
	mp__deadline(timeout_ns, &deadline);

	for (int i = 0; i < SPINS; i++) {
		if (ck_pr_load_32(b_word(sh)) != B_LOW(s))
			goto done;
		ck_backoff_eb(&backoff);
	}
	for (;;) {
		if (ck_pr_load_32(b_word(sh)) != B_LOW(s))
			goto done;
		until = slice_end(deadline, BARRIER_SLICE);
		rc = sleep_on(b_word(sh), B_LOW(s), &sh->sleepers, until);
		if (rc == 0)
			continue;
		if (until == deadline) {
			if (barrier_break(sh, gen))
				return -ETIMEDOUT;
			goto done;	/* the round ended meanwhile */
		}
		/* A slice ran out: has a waiter of this round died? */
		uint64_t cur = ck_pr_load_64(&sh->state);
		if (B_GEN(cur) == gen && !B_BROKEN(cur) &&
		    barrier_dead_waiter(sh, gen, B_COUNT(cur)))
			barrier_break(sh, gen);
	}
done:
	s = ck_pr_load_64(&sh->state);
	/* Pairs with the completing CAS's release fence. */
	ck_pr_fence_acquire();
	return barrier_outcome(s, gen, (int)count);
}

int
mp_barrier_abort(mp_barrier *b)
{
	struct barrier_shm *sh = barrier_shm(b);
	uint64_t s;

	if (sh == NULL)
		return -EINVAL;
	s = ck_pr_load_64(&sh->state);
	while (!B_BROKEN(s)) {
		if (ck_pr_cas_64_value(&sh->state, s, s | 1, &s)) {
			wake_if_sleepers(b_word(sh), &sh->sleepers, INT_MAX,
				 BARRIER_SLICE);
			break;
		}
	}
	return 0;
}

int
mp_barrier_reset(mp_barrier *b)
{
	struct barrier_shm *sh = barrier_shm(b);
	uint64_t s, next;

	if (sh == NULL)
		return -EINVAL;
	s = ck_pr_load_64(&sh->state);
	for (;;) {
		if (!B_BROKEN(s) && B_COUNT(s) == 0)
			return 0;	/* already empty and whole */
		next = B_MAKE((B_GEN(s) + 1) & B_GEN_MASK, 0, 0,
			      B_HIST(s) << 1 | 1);
		if (ck_pr_cas_64_value(&sh->state, s, next, &s))
			break;
	}
	wake_if_sleepers(b_word(sh), &sh->sleepers, INT_MAX,
				 BARRIER_SLICE);
	return 0;
}

int
mp_barrier_parties(const mp_barrier *b)
{
	return barrier_shm(b) != NULL ? (int)b->parties : -EINVAL;
}

int
mp_barrier_n_waiting(const mp_barrier *b)
{
	struct barrier_shm *sh = barrier_shm(b);
	uint64_t s;

	if (sh == NULL)
		return -EINVAL;
	s = ck_pr_load_64(&sh->state);
	return B_BROKEN(s) ? 0 : (int)B_COUNT(s);
}

bool
mp_barrier_broken(const mp_barrier *b)
{
	struct barrier_shm *sh = barrier_shm(b);

	return sh != NULL && B_BROKEN(ck_pr_load_64(&sh->state));
}

void
mp_barrier_free(mp_barrier *b)
{
	struct barrier_shm *sh = barrier_shm(b);

	if (sh == NULL)
		return;
	b->magic = 0;
	b->shm = NULL;
	mp__region_unmap(sh, b->len);
	mp__handle_free(b, sizeof(*b));
}
