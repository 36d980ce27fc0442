/* SPDX-License-Identifier: MIT */
/*
 * Theory of operation: Lock, RLock and Condition
 *
 * Handles.  Every object is a small heap handle per process (a magic word
 * and a pointer) in front of a shared struct in its own memfd region
 * (lib/region.c).  fork() copies the heap, so a child uses the same
 * pointer.  Free unmaps the region and returns the handle, zeroed, to a
 * process-local lock-free pool (never to malloc), so a later call through
 * a freed handle reads magic 0 and returns -EINVAL instead of touching an
 * unmapped page or freed memory; a handle reused by a later new() of any
 * type is that new object.  The fast path is one pointer chase: handle ->
 * shared word.
 *
 * The mutex word (struct mp__mutex, shared by Lock, RLock, the Condition's
 * own lock and the locks of Value and Array) holds
 *
 *	0                         free
 *	tid                       held by thread tid, nobody asked to be woken
 *	tid | MP__MX_WAITERS      held, and someone may sleep on the word
 *
 * where tid is the holder's kernel thread id (mp__tid(), < 2^30 since
 * pid_max <= 2^22).  The owner is recorded only so that a dead holder can
 * be detected; a Lock may be released by anyone (Python's rule).
 *
 * Acquire: CAS 0 -> tid.  That is the whole uncontended path: one locked
 * instruction, no system call.  Otherwise spin briefly with ck_backoff
 * (useful only while the holder runs on the other CPU), then:
 *
 *   loop: v = word
 *         v == 0: CAS 0 -> tid, or tid|WAITERS if this caller has slept:
 *                 a woken waiter cannot know whether others still sleep,
 *                 so it keeps the bit (at worst one futile wake at
 *                 release).  A caller that never slept may take the lock
 *                 without it: the release that freed the lock woke one
 *                 sleeper if any slept, and that sleeper, if it loses the
 *                 race, sets the bit again before it sleeps.
 *         WAITERS not in v: CAS v -> v|WAITERS, or retry.
 *         futex_wait(word, v|WAITERS, min(deadline, now + LOCK_SLICE))
 *         a slice ran out: if the holder is dead, CAS v -> tid|WAITERS
 *         and return -EOWNERDEAD holding the lock.
 *
 * Release: FAS word -> 0 (a single locked instruction).  The old value 0
 * means it was not locked: -EPERM (writing 0 over 0 changed nothing).  If
 * the old value had WAITERS, FUTEX_WAKE one sleeper.
 *
 * Why no wake-up is lost.  A waiter sleeps only through FUTEX_WAIT with
 * the value v|WAITERS it has itself published in the word; the kernel
 * compares the word with that value atomically with queueing the waiter.
 * A release is a FAS, so it either comes before the waiter's CAS (which
 * then fails or sees 0 and takes the lock), or after it: then the FAS
 * returns a value with WAITERS and wakes one sleeper, or the waiter has
 * not slept yet and its FUTEX_WAIT finds the word changed and returns.
 * The woken waiter always tries the word again before it looks at its
 * deadline, and the kernel never reports a timeout for a waiter it
 * dequeued for a wake, so a wake is never swallowed by a timeout.  Only a
 * waiter killed between its wake and its retry swallows one; the others
 * then retry at the end of their current slice (LOCK_SLICE).
 *
 * Robustness.  glibc owns each thread's robust list, so a kernel-assisted
 * robust futex is not ours to use.  Instead a waiter sleeps in slices and,
 * each time one runs out (and before it reports -ETIMEDOUT, and on a
 * failed MP_NOWAIT attempt), asks /proc whether the holder still lives
 * (mp__task_alive: a zombie counts as dead).  A dead holder's word is taken
 * over by CAS, so of several waiters exactly one gets -EOWNERDEAD; the
 * WAITERS bit is kept for the others.
 *
 * Limits of robustness.  (a) A holder's tid reused by a new task before a
 * waiter checks reads as alive: the waiters then wait for that task to
 * end.  Linux hands out pids cyclically, so this needs pid_max (4194304 on
 * 64-bit) task creations between the death and the waiter's next check,
 * one LOCK_SLICE later.  If the new task with that tid is itself an
 * acquirer, it sees itself as the holder: a Lock waits (until its timeout),
 * an RLock counts one more level of a lock it never took.  (b) A thread
 * that exits holding a lock is a dead holder too (its process may live).
 * (c) Detection takes up to one LOCK_SLICE plus one /proc read per waiter.
 *
 * RLock.  The same word, plus a recursion count that only the holder
 * reads or writes: the holder recognises itself by the tid in the word
 * and increments the count without an atomic.  The last release resets the
 * count before the FAS.  A release by a thread that is not the holder is
 * -EPERM.
 *
 * Condition.  Shared: seq (the futex word, bumped by each notify that
 * finds waiters) and counts (one 64-bit word: the number of waiters not
 * yet notified, nwait, and the number of notifications not yet taken,
 * nsig).  Both change only under the Condition's RLock, and counts is
 * written with one 64-bit store so that a writer killed mid-update leaves
 * it consistent.
 *
 *   wait:    (holding the lock) nwait++; s = seq; release the lock fully;
 *            sleep while seq == s; take the lock (restoring its count);
 *            if nsig > 0: nsig--, return 1;  timed out: nwait--, return 0;
 *            else (spurious, or others took the notifications) loop.
 *   notify:  (holding the lock) k = min(n, nwait); if k: seq++;
 *            nwait -= k, nsig += k; FUTEX_WAKE k.
 *
 * Invariant C1: nwait + nsig is the number of callers inside wait.  So
 * exactly min(n, nwait) wait calls return 1 for a notify(n): notifications
 * are not tied to particular waiters, but never invented.  No lost wake-up:
 * a waiter reads s under the lock, and every notify changes seq under the
 * same lock, so a notify after the waiter's release either finds it
 * asleep (and FUTEX_WAKE reaches it) or makes its FUTEX_WAIT return at
 * once.  A woken waiter that finds no notification left (another waiter
 * took it first) re-reads seq under the lock before sleeping again.
 *
 * Crash analysis (what a survivor sees after a kill at each step):
 *   Lock/RLock acquire: before its CAS, nothing; after it, the word names
 *     a dead tid: the next acquirer (or a waiter, within LOCK_SLICE) gets
 *     -EOWNERDEAD and the lock.  After setting WAITERS: one futile wake.
 *   RLock between the CAS and the count store: the thief sets count to 1.
 *   Release after the FAS, before FUTEX_WAKE: a sleeper misses its wake
 *     and finds the lock free at the end of its slice.
 *   Condition wait, asleep: the kernel drops the sleeper; it stays counted
 *     in nwait (C1 breaks by one), so a later notify may hand it a
 *     notification that another waiter then takes on its next wake-up:
 *     at most one spurious return of 1 per dead waiter.
 *   Condition notify, between seq++ and the counts store: no
 *     notification was given; waiters that saw seq move find none and
 *     sleep again.  Between the counts store and FUTEX_WAKE: the sleepers
 *     find seq moved when their slice (COND_SLICE) ends, and take the
 *     notifications.  The notifier held the lock, so the next acquirer
 *     gets -EOWNERDEAD in all of these cases.
 */
#include "lib/internal.h"

#include <mproc/sync.h>

#include <limits.h>
#include <sched.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

#include <ck_backoff.h>
#include <ck_pr.h>

#include "lib/futex.h"
#include "lib/import.h"
#include "lib/lock.h"
#include "lib/region.h"
#include "lib/task.h"

#define LOCK_SLICE MP_MSEC(20)	/* how often a waiter checks the holder */
#define COND_SLICE MP_MSEC(200)	/* a safety net against a killed notifier */
#define MX_SPINS 10		/* ck_backoff rounds before sleeping */
#define MX_BACKOFF 16		/* the first round: 16 pause-free steps */

#define COND_MAGIC 0x6d70636eu		/* "mpcn" */
#define COND_SHM_MAGIC 0x434f4e44u	/* "COND" */

/* A Lock handle has the same form as an RLock handle; the magic differs. */
struct mp_lock {
	uint32_t magic;
	uint32_t flags;
	struct mp__mutex *m;
};

struct cond_shm {
	struct mp__hdr hdr;
	uint32_t seq;		/* futex word: bumped by notify */
	uint32_t pad;
	uint64_t counts;	/* nwait (low 32 bits) | nsig (high 32 bits) */
	struct mp__mutex own;	/* the lock, when made without one */
};
_Static_assert(sizeof(struct cond_shm) == 40, "cond layout");

#define NWAIT(c) ((uint32_t)(c))
#define NSIG(c) ((uint32_t)((c) >> 32))
#define ONE_SIG ((uint64_t)1 << 32)

struct mp_cond {
	uint32_t magic;
	uint32_t pad;
	struct cond_shm *shm;
	mp_rlock *lock;		/* the caller's, or &own */
	struct mp_rlock own;
};
_Static_assert(sizeof(struct mp_cond) <= MP__HANDLE_MAX, "handle size");

/*
 * The mutex core.
 */

void
mp__mutex_init(struct mp__mutex *m)
{
	m->hdr.magic = MP__MUTEX_SHM_MAGIC;
	m->hdr.version = MP__LAYOUT_VERSION;
	m->word = 0;
	m->count = 0;
}

static inline bool
mx_try(uint32_t *w, uint32_t want)
{
	if (ck_pr_cas_32(w, 0, want)) {
		/* Orders the critical section after the CAS that took it. */
		ck_pr_fence_lock();
		return true;
	}
	return false;
}

/* Release: returns the old word (0: it was not locked). */
static inline uint32_t
mx_unlock(uint32_t *w)
{
	uint32_t v;

	/* Orders the critical section before the FAS that frees it. */
	ck_pr_fence_unlock();
	v = ck_pr_fas_32(w, 0);
	if (MP__UNLIKELY(v & MP__MX_WAITERS))
		mp__futex_wake(w, 1);
	return v;
}

/*
 * Take the word over from a dead holder: true when this caller now holds
 * it.  The CAS against the value seen makes exactly one thief win, and
 * fails if the lock moved on meanwhile.
 */
static bool
mx_steal(uint32_t *w, uint32_t seen, uint32_t tid)
{
	uint32_t owner = seen & MP__MX_TID;

	if (owner == 0 || owner == tid || mp__task_alive((pid_t)owner))
		return false;
	if (!ck_pr_cas_32(w, seen, tid | (seen & MP__MX_WAITERS)))
		return false;
	ck_pr_fence_lock();
	return true;
}

/* The end of the next sleep: a slice, or the deadline if sooner. */
static int64_t
slice_end(int64_t deadline, int64_t slice)
{
	int64_t now = mp__now();

	return deadline - now > slice ? now + slice : deadline;
}

/*
 * The contended acquire; timeout_ns has been checked.  Returns 0,
 * -EOWNERDEAD (held), -EAGAIN (MP_NOWAIT) or -ETIMEDOUT.
 */
static int
mx_lock_slow(uint32_t *w, uint32_t tid, int64_t timeout_ns)
{
	unsigned int backoff = MX_BACKOFF;
	int64_t deadline, until;
	uint32_t v, mine = 0;	/* WAITERS once this caller has slept */

	if (timeout_ns == MP_NOWAIT) {
		v = ck_pr_load_32(w);
		if (v == 0)
			return mx_try(w, tid) ? 0 : -EAGAIN;
		return mx_steal(w, v, tid) ? -EOWNERDEAD : -EAGAIN;
	}
	mp__deadline(timeout_ns, &deadline);

	/* Spin only while nobody sleeps: then the holder is running. */
	for (int i = 0; i < MX_SPINS; i++) {
		v = ck_pr_load_32(w);
		if (v == 0 && mx_try(w, tid))
			return 0;
		if (v & MP__MX_WAITERS)
			break;
		ck_backoff_eb(&backoff);
	}
	if (ck_pr_load_32(w) != 0)
		sched_yield();

	for (;;) {
		v = ck_pr_load_32(w);
		if (v == 0) {
			if (mx_try(w, tid | mine))
				return 0;
			continue;
		}
		if (!(v & MP__MX_WAITERS)) {
			if (!ck_pr_cas_32(w, v, v | MP__MX_WAITERS))
				continue;
			v |= MP__MX_WAITERS;
		}
		until = slice_end(deadline, LOCK_SLICE);
		mine = MP__MX_WAITERS;
		if (mp__futex_wait(w, v, until) == 0)
			continue;
		/* A slice (or the whole timeout) ran out. */
		if (mx_steal(w, v, tid))
			return -EOWNERDEAD;
		if (until == deadline) {
			if (mx_try(w, tid | MP__MX_WAITERS))
				return 0;
			return -ETIMEDOUT;
		}
	}
}

/*
 * Lock.
 */

#define LOCK_OK(l) MP__LIKELY((l) != NULL && (l)->magic == MP__LOCK_MAGIC)
#define RLOCK_OK(l) MP__LIKELY((l) != NULL && (l)->magic == MP__RLOCK_MAGIC)

static inline struct mp__mutex *
lock_mx(const mp_lock *l)
{
	return LOCK_OK(l) ? l->m : NULL;
}

static inline struct mp__mutex *
rlock_mx(const mp_rlock *l)
{
	return RLOCK_OK(l) ? l->m : NULL;
}

/* Map a region for a mutex and fill a handle of the given kind. */
static int
mutex_new(uint32_t magic, struct mp_rlock **out)
{
	struct mp_rlock *h;
	void *shm;
	int rc;

	if (out == NULL)
		return -EINVAL;
	if ((h = mp__handle_alloc(sizeof(*h))) == NULL)
		return -ENOMEM;
	if ((rc = mp__region_map(sizeof(struct mp__mutex), &shm)) < 0)
		goto fail_free;
	mp__mutex_init(shm);
	h->m = shm;
	h->flags = 0;
	h->magic = magic;
	*out = h;
	return 0;
fail_free:
	mp__handle_free(h, sizeof(*h));
	return rc;
}

static void
mutex_free(struct mp_rlock *h)
{
	struct mp__mutex *m = h->m;

	h->magic = 0;
	h->m = NULL;
	mp__region_unmap(m, sizeof(*m));
	mp__handle_free(h, sizeof(*h));
}

/* Adopt a mutex region received by fd (lib/import.h). */
static int
mutex_import(int fd, uint32_t magic, struct mp_rlock **out)
{
	struct mp_rlock *h;
	struct mp__mutex *m;
	size_t size;
	void *shm;
	int rc;

	if (out == NULL)
		return -EINVAL;
	if ((rc = mp__region_attach(fd, &shm, &size)) < 0)
		return rc;
	m = shm;
	if (size < sizeof(*m) || m->hdr.magic != MP__MUTEX_SHM_MAGIC ||
	    m->hdr.version != MP__LAYOUT_VERSION) {
		rc = -EINVAL;
		goto fail_unmap;
	}
	if ((h = mp__handle_alloc(sizeof(*h))) == NULL) {
		rc = -ENOMEM;
		goto fail_unmap;
	}
	h->m = m;
	h->flags = 0;
	h->magic = magic;
	*out = h;
	return 0;
fail_unmap:
	mp__region_unmap(shm, size);
	return rc;
}

int
mp__lock_import(int fd, mp_lock **out)
{
	return mutex_import(fd, MP__LOCK_MAGIC, (struct mp_rlock **)out);
}

int
mp__rlock_import(int fd, mp_rlock **out)
{
	return mutex_import(fd, MP__RLOCK_MAGIC, out);
}

int
mp_lock_new(mp_lock **out)
{
	_Static_assert(sizeof(struct mp_lock) == sizeof(struct mp_rlock),
		       "Lock and RLock handles share their form");
	return mutex_new(MP__LOCK_MAGIC, (struct mp_rlock **)out);
}

int
mp_lock_acquire(mp_lock *l, int64_t timeout_ns)
{
	uint32_t tid;

	if (!LOCK_OK(l) || MP__UNLIKELY(!MP__TIMEOUT_OK(timeout_ns)))
		return -EINVAL;
	tid = (uint32_t)mp__tid();
	if (MP__LIKELY(mx_try(&l->m->word, tid)))
		return 0;
	return mx_lock_slow(&l->m->word, tid, timeout_ns);
}

int
mp_lock_release(mp_lock *l)
{
	if (!LOCK_OK(l))
		return -EINVAL;
	return MP__LIKELY(mx_unlock(&l->m->word) != 0) ? 0 : -EPERM;
}

void
mp_lock_free(mp_lock *l)
{
	if (lock_mx(l) != NULL && !(l->flags & MP__LOCK_BORROWED))
		mutex_free((struct mp_rlock *)l);
}

/*
 * RLock.
 */

void
mp__rlock_embed(struct mp_rlock *h, struct mp__mutex *m)
{
	h->m = m;
	h->flags = MP__LOCK_BORROWED;
	h->magic = MP__RLOCK_MAGIC;
}

void
mp__rlock_unembed(struct mp_rlock *h)
{
	h->magic = 0;
	h->m = NULL;
}

int
mp_rlock_new(mp_rlock **out)
{
	return mutex_new(MP__RLOCK_MAGIC, out);
}

/* Acquire m for thread tid as an RLock; timeout_ns has been checked. */
static int
rlock_acquire(struct mp__mutex *m, uint32_t tid, int64_t timeout_ns)
{
	uint32_t v;
	int rc;

	/* One CAS when free; a failed one tells who holds it. */
	if (MP__LIKELY(ck_pr_cas_32_value(&m->word, 0, tid, &v))) {
		ck_pr_fence_lock();
		m->count = 1;
		return 0;
	}
	if ((v & MP__MX_TID) == tid) {
		/* Only the holder gets here, so the count is ours alone. */
		if (MP__UNLIKELY(m->count == UINT32_MAX))
			return -EOVERFLOW;
		m->count++;
		return 0;
	}
	rc = mx_lock_slow(&m->word, tid, timeout_ns);
	if (rc == 0 || rc == -EOWNERDEAD)
		m->count = 1;
	return rc;
}

int
mp_rlock_acquire(mp_rlock *l, int64_t timeout_ns)
{
	if (!RLOCK_OK(l) || MP__UNLIKELY(!MP__TIMEOUT_OK(timeout_ns)))
		return -EINVAL;
	return rlock_acquire(l->m, (uint32_t)mp__tid(), timeout_ns);
}

int
mp_rlock_release(mp_rlock *l)
{
	struct mp__mutex *m;

	if (!RLOCK_OK(l))
		return -EINVAL;
	m = l->m;
	if ((ck_pr_load_32(&m->word) & MP__MX_TID) != (uint32_t)mp__tid())
		return -EPERM;
	/* Every way to the lock (CAS, takeover, cond wait) sets count. */
	MP__ASSERT(m->count > 0);
	if (m->count > 1) {
		m->count--;
		return 0;
	}
	m->count = 0;
	mx_unlock(&m->word);
	return 0;
}

void
mp_rlock_free(mp_rlock *l)
{
	if (rlock_mx(l) != NULL && !(l->flags & MP__LOCK_BORROWED))
		mutex_free(l);
}

/*
 * Condition.
 */

static inline struct cond_shm *
cond_shm(const mp_cond *c)
{
	return c != NULL && c->magic == COND_MAGIC ? c->shm : NULL;
}

int
mp_cond_new(mp_cond **out, mp_rlock *lock)
{
	struct mp_cond *c;
	struct cond_shm *cs;
	void *shm;
	int rc;

	if (out == NULL || (lock != NULL && rlock_mx(lock) == NULL))
		return -EINVAL;
	if ((c = mp__handle_alloc(sizeof(*c))) == NULL)
		return -ENOMEM;
	if ((rc = mp__region_map(sizeof(*cs), &shm)) < 0)
		goto fail_free;
	cs = shm;
	cs->hdr.magic = COND_SHM_MAGIC;
	cs->hdr.version = MP__LAYOUT_VERSION;
	mp__mutex_init(&cs->own);
	c->shm = cs;
	if (lock == NULL) {
		mp__rlock_embed(&c->own, &cs->own);
		c->lock = &c->own;
	} else {
		c->lock = lock;
	}
	c->magic = COND_MAGIC;
	*out = c;
	return 0;
fail_free:
	mp__handle_free(c, sizeof(*c));
	return rc;
}

int
mp__cond_import(int fd, mp_cond **out)
{
	struct mp_cond *c;
	struct cond_shm *cs;
	size_t size;
	void *shm;
	int rc;

	if (out == NULL)
		return -EINVAL;
	if ((rc = mp__region_attach(fd, &shm, &size)) < 0)
		return rc;
	cs = shm;
	if (size < sizeof(*cs) || cs->hdr.magic != COND_SHM_MAGIC ||
	    cs->hdr.version != MP__LAYOUT_VERSION ||
	    cs->own.hdr.magic != MP__MUTEX_SHM_MAGIC) {
		rc = -EINVAL;
		goto fail_unmap;
	}
	if ((c = mp__handle_alloc(sizeof(*c))) == NULL) {
		rc = -ENOMEM;
		goto fail_unmap;
	}
	c->shm = cs;
	mp__rlock_embed(&c->own, &cs->own);
	c->lock = &c->own;
	c->magic = COND_MAGIC;
	*out = c;
	return 0;
fail_unmap:
	mp__region_unmap(shm, size);
	return rc;
}

int
mp_cond_acquire(mp_cond *c, int64_t timeout_ns)
{
	if (cond_shm(c) == NULL)
		return -EINVAL;
	return mp_rlock_acquire(c->lock, timeout_ns);
}

int
mp_cond_release(mp_cond *c)
{
	if (cond_shm(c) == NULL)
		return -EINVAL;
	return mp_rlock_release(c->lock);
}

/* The condition's shared part and lock, if c is valid and tid holds it. */
static int
cond_held(mp_cond *c, uint32_t tid, struct cond_shm **cs,
	  struct mp__mutex **m)
{
	if ((*cs = cond_shm(c)) == NULL || (*m = rlock_mx(c->lock)) == NULL)
		return -EINVAL;
	if ((ck_pr_load_32(&(*m)->word) & MP__MX_TID) != tid)
		return -EPERM;
	return 0;
}

int
mp_cond_wait(mp_cond *c, int64_t timeout_ns)
{
	uint32_t tid = (uint32_t)mp__tid(), saved, seq;
	struct cond_shm *cs;
	struct mp__mutex *m;
	int64_t deadline, until;
	uint64_t cnt;
	bool timed_out;
	int rc, lrc;

	if ((rc = cond_held(c, tid, &cs, &m)) < 0)
		return rc;
	if (!MP__TIMEOUT_OK(timeout_ns))
		return -EINVAL;
	if (timeout_ns == MP_NOWAIT)
		return 0;
	mp__deadline(timeout_ns, &deadline);
	saved = m->count;
	/* C1: the caller is counted before it lets go of the lock. */
	ck_pr_store_64(&cs->counts, ck_pr_load_64(&cs->counts) + 1);
	for (;;) {
		seq = ck_pr_load_32(&cs->seq);
		m->count = 0;
		mx_unlock(&m->word);
		timed_out = false;
		for (;;) {
			until = slice_end(deadline, COND_SLICE);
			rc = mp__futex_wait(&cs->seq, seq, until);
			if (ck_pr_load_32(&cs->seq) != seq)
				break;
			if (rc == -ETIMEDOUT && until == deadline) {
				timed_out = true;
				break;
			}
		}
		/* Every return holds the lock again, whatever else happened. */
		lrc = 0;
		if (!mx_try(&m->word, tid))
			lrc = mx_lock_slow(&m->word, tid, MP_FOREVER);
		m->count = saved;
		cnt = ck_pr_load_64(&cs->counts);
		if (NSIG(cnt) > 0) {
			ck_pr_store_64(&cs->counts, cnt - ONE_SIG);
			return lrc < 0 ? lrc : 1;
		}
		if (timed_out || lrc < 0) {
			/* C1: this caller is still counted in nwait. */
			MP__ASSERT(NWAIT(cnt) > 0);
			if (NWAIT(cnt) > 0)
				ck_pr_store_64(&cs->counts, cnt - 1);
			return lrc < 0 ? lrc : 0;
		}
	}
}

static int
cond_notify(mp_cond *c, uint32_t n)
{
	struct cond_shm *cs;
	struct mp__mutex *m;
	uint64_t cnt;
	uint32_t k;
	int rc;

	if ((rc = cond_held(c, (uint32_t)mp__tid(), &cs, &m)) < 0)
		return rc;
	cnt = ck_pr_load_64(&cs->counts);
	k = NWAIT(cnt) < n ? NWAIT(cnt) : n;
	if (k == 0)
		return 0;
	/*
	 * seq first, then counts: a notifier killed between the two has
	 * given nothing, and one killed after both leaves sleepers that see
	 * seq moved at the end of their slice.  Waiters read both under the
	 * lock we hold, so the order is invisible to them otherwise.
	 */
	ck_pr_store_32(&cs->seq, ck_pr_load_32(&cs->seq) + 1);
	ck_pr_fence_store();
	ck_pr_store_64(&cs->counts, cnt - k + (uint64_t)k * ONE_SIG);
	mp__futex_wake(&cs->seq, k == NWAIT(cnt) ? INT_MAX : (int)k);
	return k > INT_MAX ? INT_MAX : (int)k;
}

int
mp_cond_notify(mp_cond *c, unsigned n)
{
	return cond_notify(c, n);
}

int
mp_cond_notify_all(mp_cond *c)
{
	return cond_notify(c, UINT32_MAX);
}

void
mp_cond_free(mp_cond *c)
{
	struct cond_shm *cs = cond_shm(c);

	if (cs == NULL)
		return;
	c->magic = 0;
	if (c->lock == &c->own)
		mp__rlock_unembed(&c->own);
	c->shm = NULL;
	mp__region_unmap(cs, sizeof(*cs));
	mp__handle_free(c, sizeof(*c));
}
