/* SPDX-License-Identifier: MIT */
/*
 * Theory of operation: the Pool
 *
 * Parts.  A pool is:
 *   - one memfd region (lib/pool.h, struct mp__pool_shm), mapped before
 *     anything forks: a header with the handler's doorbell, and per worker
 *     slot a record (state, pid, status; ready, wsleep, running, since;
 *     wseq) and two single-producer single-consumer byte rings: a task
 *     ring (handler -> worker) and a result ring (worker -> handler);
 *   - a spawner process, forked by mp_pool_new while the caller is still
 *     the only thread the pool has made: it forks every worker, first or
 *     replacement, reaps them, and records each death (lib/pool_proc.c);
 *   - the workers, its children;
 *   - one handler thread in the owner, created after the spawner: it owns
 *     every job, dispatches chunks, copies results into the caller's
 *     memory, runs callbacks, watches deadlines and deaths.
 * User threads submit jobs into a wait-free queue (liburcu's wfcqueue) and
 * ring the doorbell; they wait for results on futex words in the result
 * (mp_async) or the iterator (mp_iter), which only the handler sets.
 *
 * Rings.  Positions are free-running uint64 byte counts; a ring's size R
 * is a power of two; every message is 8-aligned and contiguous: when the
 * room left before the wrap is too small, the producer writes a skip
 * marker and starts at offset 0.  Head (producer) and tail (consumer) sit
 * on separate cache lines.  A task message carries the function pointer,
 * the item count, the sizes and the items' bytes (starmap: each item's
 * column elements packed; the worker rebuilds args[]).  The job and item
 * numbers stay with the handler, which keeps a FIFO of the chunks it gave
 * each worker: results come back in that order.  A result block carries a
 * stamp (its own position), a count, the items' int64 return codes and
 * their payloads, which the task wrote in place (no copy in the worker).
 *
 * Dispatch.  Jobs wait on a pending list until every item is dispatched,
 * then on a busy list (back to the pending front if items come back), so
 * finding work never walks the jobs in flight.  A worker gets another
 * chunk while it holds fewer than two, or fewer than 128 items in up to
 * 64, so short tasks pipeline; but nothing while it shows no progress
 * (see Stealing); never more items than its maxtasksperchild quota has
 * left.  A message is at most 64 KiB (R/2 when a single item needs more),
 * so a chunk too large for it is split and the worker starts on the first
 * piece while the handler copies the next.  Small messages written in one dispatch round share
 * one publication of the task head; large ones are published at once.
 * A worker publishes its result head after each block of a long chunk,
 * and after a run of small messages when no more are queued (or every 32
 * blocks): one cache-line transfer and one fence for many small tasks.
 * Publication is about cost only; after a death the handler reads the
 * unpublished blocks too (invariant 6).  imap jobs only dispatch
 * items below the window base (the lowest index the caller has not taken)
 * plus W = max(64, 4 * workers * chunksize): undelivered results are
 * bounded by W, and dispatch waits for mp_iter_next to ring the doorbell.
 *
 * Stealing.  A worker that shows no progress (no result, no fresh start)
 * for 100 us runs a long task: it gets nothing more, and while another
 * worker idles with nothing left to give it, the handler takes back the
 * last chunk queued behind the long task: a CAS NEW -> STOLEN on the
 * message's state word, against the worker's own NEW -> TAKEN before it
 * runs a message.  The winner owns the items; the worker skips a stolen
 * message.  So a task waits behind another only when no worker is free,
 * as with Python's shared task queue.
 *
 * Invariants.
 *  1. Only the handler thread reads or writes job, chunk and slot-FIFO
 *     state; user threads touch jobs only before they are enqueued, and
 *     results (mp_async/mp_iter) only through their atomics or mutex.
 *  2. No lost wake-up for the handler: every producer of handler work
 *     (a submitter, a worker publishing results or ready, the spawner
 *     recording a death, an iterator consuming) publishes, then fences and
 *     loads hsleep, and if set bumps bell and wakes.  The handler sets
 *     hsleep, fences, reads bell, runs one more complete round, and only
 *     if it found nothing sleeps on bell with the value it read.  Either
 *     the producer sees hsleep, and its bump fails or ends the futex wait,
 *     or the handler's last round sees the producer's data (Dekker).
 *  3. Workers sleep on their slot's wseq by the same protocol with wsleep
 *     (lib/pool_proc.c); the handler wakes after pushing a task, releasing
 *     result space, or setting stop.
 *  4. Each slot state transition has one writer: handler EMPTY/DEAD ->
 *     SPAWN (after resetting the rings and the worker words); spawner
 *     SPAWN -> LIVE (after fork) and LIVE -> DEAD (after reaping, status
 *     first); handler DEAD -> SPAWN or EMPTY.  A kill is a request the
 *     spawner carries out while the worker is not reaped, so a pid is
 *     never signalled after it could have been reused.
 *  5. A worker releases a task message before it publishes the block
 *     holding the message's last result; so once the handler holds a
 *     chunk's results, the chunk's ring bytes are free again.
 *  6. A block's return codes are NOTSTARTED until the item runs, RUNNING
 *     while it runs, then its code (a task returning a marker value gets
 *     -ERANGE).  After a worker's death the handler reads its result ring
 *     past the published head, block by block while the stamp matches the
 *     position: items with a code are done, the RUNNING one fails with
 *     MP_EWORKER (-ETIMEDOUT if the handler had it killed for the task
 *     limit), the rest go back to their job to be dispatched again.
 *     A replacement starts its result ring one full lap further on, so no
 *     stale block from the previous worker can carry a matching stamp.
 *  7. A result (mp_async) is filled, then its callback runs, then it is
 *     marked ready and its waiters woken: a callback has returned before
 *     get/wait return.  Blocking pool calls from the handler thread (a
 *     callback) would wait for themselves: they return -EDEADLK.
 *  8. After terminate, the handler fails every job with -ECANCELED and
 *     stops; after close + join, it waits until no job is left, sets stop,
 *     and stops; in both cases the spawner exits once no worker is left,
 *     and join reaps it.  Submissions check closed under the pool mutex,
 *     which close/terminate take too, so none slips in after the handler
 *     drained the queue for the last time.
 *
 * Sleep/spin.  The handler, workers and waiters spin briefly (ck_backoff),
 * then yield for tens of microseconds, then sleep: on 2 CPUs a sleeping
 * peer costs a 30-50 us wake-up, and spinning with more runnable threads
 * than CPUs starves the one that would make progress.
 *
 * Crash analysis (what survivors see when a process dies at any point).
 *  - A worker, anywhere: the spawner reaps it and records DEAD; the handler
 *    accounts its rings (invariant 6), so exactly the running item fails;
 *    then it resets the slot and asks for a replacement.  Killed while
 *    idle, before its initializer returned, or between items: no item
 *    fails.  Killed by its own quota exit: nothing is outstanding.  If
 *    workers keep dying before they are ready (a crashing initializer),
 *    after 16 such deaths in a row the pool is broken: pending work fails
 *    with MP_EWORKER and submissions return -EPIPE.
 *  - The spawner, anywhere: its workers die of PR_SET_PDEATHSIG; the handler
 *    notices the spawner's pidfd readable (it checks at least every 100 ms
 *    while work is outstanding) and breaks the pool as above.  A fork that
 *    fails is recorded as a death before ready.
 *  - The owner process, anywhere: the spawner's pidfd on it fires; it
 *    SIGKILLs every worker, reaps them, and exits.  The region goes with
 *    the last mapping.  The thread that created the pool may exit freely:
 *    nothing is tied to it (pidfds, not parent-death signals, watch the
 *    owner).  Where pidfd_open() is ENOSYS (valgrind, old kernels), the
 *    owner looks at its unreaped spawner with waitid(P_PID, WNOWAIT) and
 *    the spawner watches the owner by getppid() (lib/pool_proc.c).
 *  - A worker killed while the handler steals from it: the CAS on the
 *    message state is atomic, so the chunk is either stolen (and not in
 *    the FIFO the death is accounted against) or the worker's.
 *  - A user thread dying is a process death (threads cannot die alone).
 * Nothing is ever named in the file system; no process outlives the owner.
 *
 * Tasks are function pointers: workers are forks of the owner, so a
 * function of the program, or of a library loaded before mp_pool_new, has
 * the same address there.  Initializer and arguments likewise.
 */
#define _LGPL_SOURCE
#include "lib/internal.h"

#include <mproc/pool.h>

#include <poll.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdint.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <ck_backoff.h>
#include <ck_pr.h>
#include <urcu/wfcqueue.h>

#include "lib/futex.h"
#include "lib/pool.h"
#include "lib/region.h"
#include "lib/task.h"

#define POOL_MAGIC 0x706f6f6cu	/* "pool" */
#define ASYNC_MAGIC 0x6173796eu	/* "asyn" */
#define ITER_MAGIC 0x69746572u	/* "iter" */
#define RING_DEFAULT (1u << 20)
#define RING_MIN 4096u
#define RING_MAX (1u << 30)
#define FIFO_MAX 64
#define HANDLER_SPIN_NS MP_USEC(100)
#define WAITER_SPIN_NS MP_USEC(50)
#define CHECK_NS MP_MSEC(100)
#define INIT_DEATHS_MAX 16
#define DEEP_NS MP_USEC(100)
#define MSG_MAX (64u << 10)
#define MSG_FIXED(ncols) \
	(sizeof(struct mp__tmsg) + MP__ROUND8((size_t)(ncols) * 4))

enum jkind { J_APPLY, J_MAP, J_IMAP };
enum hphase { H_OFF, H_SPAWNING, H_READY };
enum { IT_EMPTY, IT_FILLED, IT_CONSUMED };

struct range {
	uint64_t first, count;
};

struct job {
	struct cds_wfcq_node qnode;
	struct job *lnext, *lprev;	/* the handler's list */
	enum jkind kind;
	uint16_t tkind;			/* MP__K_TASK or MP__K_STAR */
	uint16_t ncols;
	uint32_t *col_sizes;		/* starmap: ncols sizes */
	uint64_t fn;
	const char *items;		/* n items of in_len bytes */
	size_t in_len;
	uint64_t n;
	char *results;			/* n results of rsize bytes */
	size_t rsize;
	size_t chunksize;
	uint64_t next;			/* first item never dispatched */
	struct range *redo;		/* items dead workers gave back */
	size_t nredo, credo;
	uint64_t done, inflight;
	uint64_t err_index;
	int err;
	ssize_t len;			/* apply: the result's length */
	struct mp_async *a;
	struct mp_iter *it;
	mp_callback cb;
	mp_errback eb;
	void *user;
	void *own;			/* items this job copied */
	bool embedded;			/* in its mp_async's block */
	bool busy;			/* on the busy list */
};

struct mp_async {
	uint32_t magic;
	uint32_t state;		/* futex: 1 when ready, after callback */
	uint32_t waiters;
	uint32_t filled;	/* outcome written (before the callback) */
	uint32_t refs;		/* the user's and the job's */
	int err;
	const void *res;
	size_t len;
	pthread_t handler;
	char *buf;		/* apply_async's result (same block) */
};

struct mp_iter {
	uint32_t magic;
	uint32_t seq;		/* futex: bumped per result and at end */
	uint32_t waiters;
	uint32_t abandoned;	/* the user freed it */
	uint32_t refs;
	pthread_mutex_t mu;	/* the fields below */
	struct mp_pool *pool;	/* NULL once the job is over */
	pthread_t handler;
	bool ordered, over;
	uint64_t n, W;
	size_t rsize;
	char *buf;
	uint8_t *st;
	int *err;
	uint64_t *q, qh, qt;	/* unordered: indexes in completion order */
	uint64_t next;		/* ordered: the next index to give */
	uint64_t low;		/* window base: lowest index not taken */
	uint64_t given;
	int final_err;
};

/* A doubly linked list of jobs (the handler's). */
struct jlist {
	struct job *head, *tail;
};

struct chunk {
	struct job *job;
	uint64_t first;
	uint32_t count, got;
	uint64_t mpos;		/* its message's task ring position */
};

struct hslot {
	struct chunk fifo[FIFO_MAX];
	unsigned fh, fn;
	uint64_t items;		/* outstanding in the FIFO */
	uint64_t tpos;		/* task ring: producer position */
	uint64_t rpos;		/* result ring: consumer position */
	uint64_t quota;
	enum hphase phase;
	bool timed_out;
	bool dirty;		/* messages written, head not published */
	int64_t last_rx;	/* last progress: results, or work after idle */
};

struct mp_pool {
	uint32_t magic;
	pid_t owner;		/* the only process that may use the pool */
	struct mp__pool_shm *s;
	size_t shm_size;
	unsigned nw;
	uint64_t R;
	pid_t spawner;
	int spfd, evfd;
	pthread_t handler;
	pthread_mutex_t mu;	/* closed/terminated vs submissions */
	pthread_mutex_t jmu;	/* join */
	bool closed, terminated, joined;
	uint32_t term_req, term_ack, join_req, broken;
	uint32_t abandons;	/* bumped by mp_iter_free */
	uint32_t abandons_seen;	/* the handler's copy */
	struct __cds_wfcq_head qh;
	struct cds_wfcq_tail qt;
	/* The handler's own. */
	struct jlist pend;	/* jobs with items to dispatch */
	struct jlist busy;	/* jobs whose items are all dispatched */
	struct hslot *hs;
	unsigned init_deaths;
	bool stop_sent, term_done;
	int64_t now;		/* read once a handler round */
};

/* ------------------------------------------------------------------ */
/* Small helpers */

/*
 * The pool whose handler thread this is, set in that thread only.  Not
 * pthread_equal(pthread_self(), p->handler): once the handler is joined,
 * its id may be reused for a new thread of the owner, which would then be
 * taken for the handler (join -EDEADLK, free doing nothing).
 */
static __thread const struct mp_pool *handler_of;

static bool
on_handler(const struct mp_pool *p)
{
	return handler_of == p;
}

static void
force_bell(struct mp_pool *p)
{
	ck_pr_inc_32(&p->s->bell);
	mp__futex_wake(&p->s->bell, 1);
}

static void
ask_spawner(struct mp_pool *p)
{
	uint64_t one = 1;

	if (write(p->evfd, &one, sizeof(one)) < 0)
		(void)errno;	/* EAGAIN: a request is already pending */
}

/*
 * Wait until *word != val: spin, yield, then sleep with *waiters set.
 * Returns 0 or -ETIMEDOUT.
 */
static int
wait_word(uint32_t *word, uint32_t val, uint32_t *waiters, int64_t deadline)
{
	ck_backoff_t bo = MP__BACKOFF_CEIL;	/* waiters yield early */
	int64_t t0 = 0;

	for (;;) {
		if (ck_pr_load_32(word) != val)
			return 0;
		if (mp__backoff(&bo))
			continue;
		int64_t now = mp__now();
		if (now >= deadline)
			return -ETIMEDOUT;
		if (t0 == 0)
			t0 = now;
		if (now - t0 < WAITER_SPIN_NS) {
			sched_yield();
			continue;
		}
		ck_pr_store_32(waiters, 1);
		/* Orders waiters before the re-check; pairs with the fence
		 * before the handler loads waiters. */
		ck_pr_fence_memory();
		if (ck_pr_load_32(word) != val)
			return 0;
		if (mp__futex_wait(word, val, deadline) == -ETIMEDOUT &&
		    ck_pr_load_32(word) == val)
			return -ETIMEDOUT;
	}
}

static void
wake_word(uint32_t *word, uint32_t *waiters, bool bump)
{
	if (bump)
		ck_pr_inc_32(word);
	/* Orders the word's new value before the load of waiters. */
	ck_pr_fence_memory();
	if (ck_pr_load_32(waiters))
		mp__futex_wake(word, INT32_MAX);
}

static void
async_unref(struct mp_async *a)
{
	if (ck_pr_faa_32(&a->refs, (uint32_t)-1) == 1) {
		a->magic = 0;
		free(a);
	}
}

static void
iter_unref(struct mp_iter *it)
{
	if (ck_pr_faa_32(&it->refs, (uint32_t)-1) == 1) {
		pthread_mutex_destroy(&it->mu);
		free(it->buf);
		free(it->st);
		free(it->err);
		free(it->q);
		it->magic = 0;
		free(it);
	}
}

/* ------------------------------------------------------------------ */
/* Handler: jobs */

static void
jl_add(struct jlist *l, struct job *j)
{
	j->lnext = NULL;
	j->lprev = l->tail;
	if (l->tail != NULL)
		l->tail->lnext = j;
	else
		l->head = j;
	l->tail = j;
}

static void
jl_push_front(struct jlist *l, struct job *j)
{
	j->lprev = NULL;
	j->lnext = l->head;
	if (l->head != NULL)
		l->head->lprev = j;
	else
		l->tail = j;
	l->head = j;
}

static void
jl_del(struct jlist *l, struct job *j)
{
	if (j->lprev != NULL)
		j->lprev->lnext = j->lnext;
	else
		l->head = j->lnext;
	if (j->lnext != NULL)
		j->lnext->lprev = j->lprev;
	else
		l->tail = j->lprev;
}

static void
list_del(struct mp_pool *p, struct job *j)
{
	jl_del(j->busy ? &p->busy : &p->pend, j);
}

/*
 * The pending list holds the jobs pick() may find work in, so that it
 * never walks the many jobs in flight (apply_async floods): a job moves
 * to the busy list once every item is dispatched, and back to the front
 * of the pending list when a dead or robbed worker gives items back.
 */
static void
job_dispatched(struct mp_pool *p, struct job *j)
{
	if (!j->busy && j->next == j->n && j->nredo == 0) {
		jl_del(&p->pend, j);
		jl_add(&p->busy, j);
		j->busy = true;
	}
}

static void
job_requeue(struct mp_pool *p, struct job *j)
{
	if (j->busy && j->nredo > 0) {
		jl_del(&p->busy, j);
		jl_push_front(&p->pend, j);
		j->busy = false;
	}
}

static void
job_free(struct job *j)
{
	free(j->col_sizes);
	free(j->redo);
	free(j->own);
	if (!j->embedded)
		free(j);
}

/* The iterator's job is over: results stop; cancel: what is left fails. */
static void
iter_end(struct mp_iter *it, int cancel)
{
	pthread_mutex_lock(&it->mu);
	it->pool = NULL;
	it->over = true;
	if (cancel != 0)
		it->final_err = cancel;
	pthread_mutex_unlock(&it->mu);
	wake_word(&it->seq, &it->waiters, true);
	iter_unref(it);
}

/* A job ends: fill its result, run its callback, mark it ready. */
static void
job_finish(struct mp_pool *p, struct job *j, bool listed)
{
	struct mp_async *a = j->a;

	if (listed)
		list_del(p, j);
	if (j->it != NULL) {
		iter_end(j->it, j->err == -ECANCELED || j->err == MP_EWORKER ?
					j->err : 0);
	} else if (a != NULL) {
		if (j->kind == J_APPLY) {
			a->res = j->err == 0 ? j->results : NULL;
			a->len = j->err == 0 ? (size_t)j->len : 0;
		} else {
			a->res = j->results;
			a->len = j->n * j->rsize;
		}
		a->err = j->err;
		/* Release: the outcome before filled, read by callbacks'
		 * calls and by get on the handler thread. */
		ck_pr_fence_store();
		ck_pr_store_32(&a->filled, 1);
		if (j->err == 0 && j->cb != NULL)
			j->cb(a, j->user);
		else if (j->err != 0 && j->eb != NULL)
			j->eb(a, j->err, j->user);
		ck_pr_fence_store();
		ck_pr_store_32(&a->state, 1);
		wake_word(&a->state, &a->waiters, false);
	}
	/* An embedded job goes with its result's block: free it first. */
	job_free(j);
	if (a != NULL)
		async_unref(a);
}

static bool
job_over(const struct job *j)
{
	if (j->done == j->n)
		return true;
	return j->it != NULL && ck_pr_load_32(&j->it->abandoned) &&
	       j->inflight == 0;
}

static void
job_item_error(struct job *j, uint64_t idx, int err)
{
	if (j->err == 0 || idx < j->err_index) {
		j->err = err;
		j->err_index = idx;
	}
}

/* Hand k results of an imap job to its iterator. */
static void
iter_put(struct job *j, uint64_t first, uint32_t k, const int64_t *rc,
	 const char *pay, size_t stride)
{
	struct mp_iter *it = j->it;

	pthread_mutex_lock(&it->mu);
	if (!ck_pr_load_32(&it->abandoned)) {
		for (uint32_t i = 0; i < k; i++) {
			uint64_t idx = first + i, sl = idx % it->W;
			char *dst = it->buf + sl * it->rsize;
			int64_t r = rc[i];
			if (r >= 0 && it->rsize > 0) {
				memcpy(dst, pay + i * stride, (size_t)r);
				memset(dst + r, 0, it->rsize - (size_t)r);
			} else if (it->rsize > 0) {
				memset(dst, 0, it->rsize);
			}
			it->err[sl] = r < 0 ? (int)r : 0;
			it->st[sl] = IT_FILLED;
			if (!it->ordered)
				it->q[it->qt++ % it->W] = idx;
		}
	}
	pthread_mutex_unlock(&it->mu);
	wake_word(&it->seq, &it->waiters, true);
}

/* Take k results, starting at the chunk's next item. */
static void
take(struct chunk *c, const int64_t *rc, const char *pay, uint32_t k,
     size_t stride)
{
	struct job *j = c->job;
	uint64_t first = c->first + c->got;

	switch (j->kind) {
	case J_MAP:
		if (j->rsize > 0)
			memcpy(j->results + first * j->rsize, pay,
			       (size_t)k * j->rsize);
		for (uint32_t i = 0; i < k; i++) {
			if (MP__LIKELY(rc[i] == (int64_t)j->rsize))
				continue;
			char *dst = j->results + (first + i) * j->rsize;
			if (rc[i] < 0) {
				job_item_error(j, first + i, (int)rc[i]);
				memset(dst, 0, j->rsize);
			} else {
				memset(dst + rc[i], 0, j->rsize - rc[i]);
			}
		}
		break;
	case J_APPLY:
		if (rc[0] >= 0) {
			if (rc[0] > 0)
				memcpy(j->results, pay, (size_t)rc[0]);
			j->len = rc[0];
		} else {
			job_item_error(j, first, (int)rc[0]);
		}
		break;
	case J_IMAP:
		iter_put(j, first, k, rc, pay, stride);
		break;
	}
	j->done += k;
	j->inflight -= k;
	c->got += k;
}

/* The chunk's next item failed without a result (its worker died). */
static void
take_failure(struct chunk *c, int err)
{
	struct job *j = c->job;
	uint64_t idx = c->first + c->got;
	int64_t rc = err;

	switch (j->kind) {
	case J_MAP:
		if (j->rsize > 0)
			memset(j->results + idx * j->rsize, 0, j->rsize);
		job_item_error(j, idx, err);
		break;
	case J_APPLY:
		job_item_error(j, idx, err);
		break;
	case J_IMAP:
		iter_put(j, idx, 1, &rc, NULL, 0);
		break;
	}
	j->done++;
	j->inflight--;
	c->got++;
}

static void
fifo_pop(struct mp_pool *p, struct hslot *hs)
{
	struct chunk *c = &hs->fifo[hs->fh];
	struct job *j = c->job;

	hs->items -= c->count;
	hs->fh = (hs->fh + 1) % FIFO_MAX;
	hs->fn--;
	if (job_over(j))
		job_finish(p, j, true);
}

/*
 * Read worker i's result blocks.  Live: up to the published head.  Dead
 * (invariant 6): past it, while stamps match, ending at the first item
 * that did not end.  Returns whether anything was taken.
 */
static bool
read_results(struct mp_pool *p, unsigned i, bool dead)
{
	struct hslot *hs = &p->hs[i];
	struct mp__slot *sl = &p->s->slot[i];
	const char *data = mp__pool_res_data(p->s, i);
	uint64_t mask = p->R - 1, head, start = hs->rpos;
	bool any = false;

	/* Acquire: the blocks' bytes, written before head was released. */
	head = ck_pr_load_64(&sl->res.head);
	ck_pr_fence_load();
	while (hs->fn > 0) {
		if (!dead && hs->rpos == head)
			break;
		if (dead && hs->rpos - start >= p->R)
			break;
		uint64_t off = hs->rpos & mask;
		const struct mp__rblk *b = (const void *)(data + off);
		if (dead && b->stamp != hs->rpos)
			break;
		if (b->count == MP__RB_SKIP) {
			hs->rpos += p->R - off;
			continue;
		}
		struct chunk *c = &hs->fifo[hs->fh];
		uint32_t k = b->count;
		/* A count that does not fit the chunk is not a block of
		 * this worker's (dead: stale bytes) or a broken invariant
		 * (live): take nothing more from this ring. */
		if (MP__UNLIKELY(k == 0 || k > c->count - c->got)) {
			MP__ASSERT(dead);
			break;
		}
		const int64_t *rc = (const int64_t *)(b + 1);
		const char *pay = (const char *)(rc + k);
		uint64_t bytes = 16 + 8 * (uint64_t)k +
				 MP__ROUND8((size_t)k * b->rsize);
		if (dead) {
			uint32_t ok = 0;
			while (ok < k && rc[ok] > MP__RC_RUNNING)
				ok++;
			if (ok < k) {
				if (ok > 0)
					take(c, rc, pay, ok, b->rsize);
				if (rc[ok] == MP__RC_RUNNING)
					take_failure(c, hs->timed_out ?
							-ETIMEDOUT :
							MP_EWORKER);
				if (c->got == c->count)
					fifo_pop(p, hs);
				any = true;
				break;
			}
		}
		take(c, rc, pay, k, b->rsize);
		hs->rpos += bytes;
		any = true;
		if (c->got == c->count)
			fifo_pop(p, hs);
	}
	if (any && !dead) {
		hs->last_rx = p->now;
		/* Release: we are done reading the blocks before the room
		 * is the worker's again. */
		ck_pr_fence_memory();
		ck_pr_store_64(&sl->res.tail, hs->rpos);
		mp__pool_wake_worker(p->s, i);
	}
	return any;
}

static int
redo_reserve(struct job *j)
{
	if (j->nredo == j->credo) {
		size_t nc = j->credo ? 2 * j->credo : 4;
		struct range *r = realloc(j->redo, nc * sizeof(*r));
		if (r == NULL)
			return -ENOMEM;
		j->redo = r;
		j->credo = nc;
	}
	return 0;
}

static int
redo_add(struct job *j, uint64_t first, uint64_t count)
{
	if (redo_reserve(j) < 0)
		return -ENOMEM;
	j->redo[j->nredo++] = (struct range){ first, count };
	return 0;
}

/* Reset slot i's rings and worker words, and ask for a worker. */
static void
slot_respawn(struct mp_pool *p, unsigned i)
{
	struct hslot *hs = &p->hs[i];
	struct mp__slot *sl = &p->s->slot[i];

	hs->fh = hs->fn = 0;
	hs->items = 0;
	hs->quota = p->s->maxtasks;
	hs->timed_out = false;
	/* A new lap: no stale block can carry a stamp of the new worker's
	 * (invariant 6). */
	hs->rpos = (hs->rpos + 2 * p->R) & ~(p->R - 1);
	ck_pr_store_64(&sl->task.head, hs->tpos);
	ck_pr_store_64(&sl->task.tail, hs->tpos);
	ck_pr_store_64(&sl->res.head, hs->rpos);
	ck_pr_store_64(&sl->res.tail, hs->rpos);
	ck_pr_store_32(&sl->ready, 0);
	ck_pr_store_32(&sl->wsleep, 0);
	ck_pr_store_32(&sl->running, 0);
	ck_pr_store_32(&sl->kill_req, 0);
	/* mp_pool_workers may read it now, from another thread. */
	ck_pr_store_int(&sl->pid, 0);
	if (ck_pr_load_32(&p->s->stop) || p->term_done ||
	    ck_pr_load_32(&p->broken)) {
		hs->phase = H_OFF;
		ck_pr_store_32(&sl->state, MP__S_EMPTY);
		return;
	}
	hs->phase = H_SPAWNING;
	/* Release: the reset before the request the spawner acts on. */
	ck_pr_fence_store();
	ck_pr_store_32(&sl->state, MP__S_SPAWN);
	ask_spawner(p);
}

static void fail_all(struct mp_pool *p, int err);

/* Worker i died: account its rings, give work back, replace it. */
static void
slot_died(struct mp_pool *p, unsigned i)
{
	struct hslot *hs = &p->hs[i];

	/* Acquire: everything the dead worker wrote, before DEAD. */
	ck_pr_fence_load();
	if (hs->phase == H_SPAWNING) {
		if (++p->init_deaths >= INIT_DEATHS_MAX &&
		    !ck_pr_load_32(&p->broken)) {
			ck_pr_store_32(&p->broken, 1);
			fail_all(p, MP_EWORKER);
		}
	}
	read_results(p, i, false);
	read_results(p, i, true);
	while (hs->fn > 0) {
		struct chunk *c = &hs->fifo[hs->fh];
		struct job *j = c->job;
		uint64_t left = c->count - c->got;
		j->inflight -= left;
		if (j->it == NULL || !ck_pr_load_32(&j->it->abandoned)) {
			if (redo_add(j, c->first + c->got, left) < 0) {
				/* No memory to remember them: fail them. */
				j->inflight += left;
				while (c->got < c->count)
					take_failure(c, -ENOMEM);
			}
		}
		c->got = c->count;
		hs->items -= c->count;
		hs->fh = (hs->fh + 1) % FIFO_MAX;
		hs->fn--;
		if (job_over(j))
			job_finish(p, j, true);
		else
			job_requeue(p, j);
	}
	slot_respawn(p, i);
}

/* Jobs: fail every one (terminate, broken pool). */
static void
fail_all(struct mp_pool *p, int err)
{
	for (unsigned i = 0; i < p->nw; i++) {
		p->hs[i].fh = p->hs[i].fn = 0;
		p->hs[i].items = 0;
	}
	while (p->pend.head != NULL || p->busy.head != NULL) {
		struct job *j = p->pend.head ? p->pend.head : p->busy.head;
		j->err = err;
		job_finish(p, j, true);
	}
}

static bool
take_submissions(struct mp_pool *p)
{
	struct cds_wfcq_node *node;
	bool any = false;

	if (cds_wfcq_empty(&p->qh, &p->qt))
		return false;
	while ((node = __cds_wfcq_dequeue_blocking(&p->qh, &p->qt)) != NULL) {
		struct job *j = caa_container_of(node, struct job, qnode);
		any = true;
		if (p->term_done) {
			j->err = -ECANCELED;
			job_finish(p, j, false);
		} else if (ck_pr_load_32(&p->broken)) {
			j->err = MP_EWORKER;
			job_finish(p, j, false);
		} else if (j->n == 0) {
			job_finish(p, j, false);
		} else {
			jl_add(&p->pend, j);
		}
	}
	return any;
}

/* ------------------------------------------------------------------ */
/* Handler: dispatch */

static bool
slot_can_take(const struct mp_pool *p, const struct hslot *hs)
{
	if (hs->phase != H_READY || hs->fn >= FIFO_MAX)
		return false;
	/* A worker that shows no progress for DEEP_NS runs a long task:
	 * it gets nothing more (what it holds may be stolen, see steal);
	 * past two chunks, only one turning results round fast gets more. */
	if (hs->fn >= 1 && p->now - hs->last_rx > DEEP_NS)
		return false;
	if (hs->fn >= 2 && hs->items >= 128)
		return false;
	return p->s->maxtasks == 0 || hs->quota > 0;
}

/* The first job with items to dispatch, and the range available. */
static struct job *
pick(struct mp_pool *p, uint64_t *first, uint64_t *max)
{
	for (struct job *j = p->pend.head; j != NULL; j = j->lnext) {
		uint64_t lim = j->n;
		if (j->it != NULL) {
			if (ck_pr_load_32(&j->it->abandoned))
				continue;
			uint64_t w = ck_pr_load_64(&j->it->low) + j->it->W;
			if (w < lim)
				lim = w;
		}
		if (j->nredo > 0) {
			struct range *r = &j->redo[j->nredo - 1];
			if (r->first >= lim)
				continue;
			*first = r->first;
			*max = r->count;
			if (r->first + *max > lim)
				*max = lim - r->first;
			return j;
		}
		if (j->next < lim) {
			*first = j->next;
			*max = lim - j->next;
			return j;
		}
	}
	return NULL;
}

/* Push one chunk to worker i; false if no work or no room. */
static bool
push_chunk(struct mp_pool *p, unsigned i, bool *nowork)
{
	struct hslot *hs = &p->hs[i];
	struct mp__slot *sl = &p->s->slot[i];
	char *data = mp__pool_task_data(p->s, i);
	uint64_t first, count, mask = p->R - 1;
	struct job *j = pick(p, &first, &count);

	if (j == NULL) {
		*nowork = true;
		return false;
	}
	size_t fixed = MSG_FIXED(j->tkind == MP__K_STAR ? j->ncols : 0);
	if (count > j->chunksize)
		count = j->chunksize;
	if (p->s->maxtasks != 0 && count > hs->quota)
		count = hs->quota;
	/* Messages of at most MSG_MAX (R/2 for a single large item): a
	 * worker starts on its first while the handler still copies the
	 * next, instead of waiting for half a ring to be written. */
	size_t lim = p->R / 2 < MSG_MAX ? p->R / 2 : MSG_MAX;
	if (fixed + MP__ROUND8(j->in_len) > lim)
		lim = p->R / 2;
	if (j->in_len > 0 && count > (lim - fixed) / j->in_len)
		count = (lim - fixed) / j->in_len;
	if (count > UINT32_MAX / 2)
		count = UINT32_MAX / 2;
	size_t bytes = fixed + MP__ROUND8(count * j->in_len);
	uint64_t off = hs->tpos & mask, room = p->R - off;
	uint64_t need = bytes + (room < bytes ? room : 0);
	uint64_t used = hs->tpos - ck_pr_load_64(&sl->task.tail);
	if (p->R - used < need)
		return false;
	if (room < bytes) {
		((struct mp__tmsg *)(data + off))->size = MP__TM_SKIP;
		hs->tpos += room;
		off = 0;
	}
	struct mp__tmsg *m = (struct mp__tmsg *)(data + off);
	uint64_t mpos = hs->tpos;
	m->size = (uint32_t)bytes;
	m->state = MP__TM_NEW;
	m->kind = j->tkind;
	m->ncols = j->tkind == MP__K_STAR ? j->ncols : 0;
	m->count = (uint32_t)count;
	m->in_len = (uint32_t)j->in_len;
	m->out_cap = j->rsize;
	m->fn = j->fn;
	if (m->ncols > 0)
		memcpy(m + 1, j->col_sizes, (size_t)m->ncols * 4);
	if (j->in_len > 0)
		memcpy((char *)m + fixed, j->items + first * j->in_len,
		       count * j->in_len);
	hs->tpos += bytes;
	hs->dirty = true;	/* published by dispatch, once a round */
	if (bytes >= 4096) {
		/* A large message: no batching, the worker starts now. */
		hs->dirty = false;
		ck_pr_fence_store();
		ck_pr_store_64(&sl->task.head, hs->tpos);
		mp__pool_wake_worker(p->s, i);
	}

	if (j->nredo > 0 && j->redo[j->nredo - 1].first == first) {
		struct range *r = &j->redo[j->nredo - 1];
		r->first += count;
		r->count -= count;
		if (r->count == 0)
			j->nredo--;
	} else {
		j->next += count;
	}
	job_dispatched(p, j);
	j->inflight += count;
	unsigned t = (hs->fh + hs->fn) % FIFO_MAX;
	hs->fifo[t] = (struct chunk){ j, first, (uint32_t)count, 0, mpos };
	if (hs->fn == 0)
		hs->last_rx = p->now;	/* idle until now: not slow */
	hs->fn++;
	hs->items += count;
	if (p->s->maxtasks != 0)
		hs->quota -= count;
	return true;
}

/*
 * Take back the last chunk of a worker that is stuck on a long task, for
 * an idle one: a CAS on its message's state against the worker's own (it
 * skips a stolen message; a taken one is its to run).  Only the last
 * chunk of a FIFO of two or more is taken, never the one that may run.
 */
static bool
steal(struct mp_pool *p)
{
	for (unsigned i = 0; i < p->nw; i++) {
		struct hslot *hs = &p->hs[i];
		if (hs->phase != H_READY || hs->fn < 2 ||
		    p->now - hs->last_rx <= DEEP_NS)
			continue;
		unsigned t = (hs->fh + hs->fn - 1) % FIFO_MAX;
		struct chunk *c = &hs->fifo[t];
		struct job *j = c->job;
		bool keep = j->it == NULL || !ck_pr_load_32(&j->it->abandoned);
		/* Room to remember the items first: a won CAS is final. */
		if (keep && redo_reserve(j) < 0)
			continue;
		char *data = mp__pool_task_data(p->s, i);
		struct mp__tmsg *m =
			(struct mp__tmsg *)(data + (c->mpos & (p->R - 1)));
		if (!ck_pr_cas_32(&m->state, MP__TM_NEW, MP__TM_STOLEN))
			continue;
		if (keep)
			redo_add(j, c->first, c->count);
		j->inflight -= c->count;
		hs->items -= c->count;
		if (p->s->maxtasks != 0)
			hs->quota += c->count;
		hs->fn--;
		if (job_over(j))
			job_finish(p, j, true);
		else
			job_requeue(p, j);
		return true;
	}
	return false;
}

static bool
dispatch(struct mp_pool *p)
{
	bool any = false, progress = true, nowork = false;

	/* Nothing pending may still leave something to steal. */
	if ((p->pend.head == NULL && p->busy.head == NULL) ||
	    ck_pr_load_32(&p->broken))
		return false;
	for (;;) {
		while (progress && !nowork) {
			progress = false;
			for (unsigned i = 0; i < p->nw && !nowork; i++) {
				if (!slot_can_take(p, &p->hs[i]))
					continue;
				if (push_chunk(p, i, &nowork))
					progress = any = true;
			}
		}
		/* No work left to give, and a worker idles: take work back
		 * from one stuck on a long task. */
		bool idle = false;
		for (unsigned i = 0; i < p->nw; i++)
			idle |= p->hs[i].phase == H_READY && p->hs[i].fn == 0;
		if (!nowork || !idle || !steal(p))
			break;
		progress = true;
		nowork = false;
	}
	for (unsigned i = 0; i < p->nw; i++) {
		struct hslot *hs = &p->hs[i];
		if (!hs->dirty)
			continue;
		hs->dirty = false;
		/* Release: the messages' bytes before the head exposing
		 * them; then wake the worker if it sleeps. */
		ck_pr_fence_store();
		ck_pr_store_64(&p->s->slot[i].task.head, hs->tpos);
		mp__pool_wake_worker(p->s, i);
	}
	return any;
}

/* ------------------------------------------------------------------ */
/* Handler: the loop */

static void
do_terminate(struct mp_pool *p)
{
	p->term_done = true;
	ck_pr_store_32(&p->s->killall, 1);
	ask_spawner(p);
	take_submissions(p);
	fail_all(p, -ECANCELED);
}

/* Deadlines of running items: kill the late; the nearest one left. */
static int64_t
check_timeouts(struct mp_pool *p, int64_t now)
{
	int64_t T = p->s->timeout_ns, dl = MP__NEVER;
	int64_t recheck = T / 4 > MP_MSEC(1) ? T / 4 : MP_MSEC(1);

	if (T <= 0)
		return MP__NEVER;
	for (unsigned i = 0; i < p->nw; i++) {
		struct hslot *hs = &p->hs[i];
		struct mp__slot *sl = &p->s->slot[i];
		if (hs->phase != H_READY || hs->fn == 0 || hs->timed_out)
			continue;
		/* Acquire: since is at least as new as running's item. */
		if (ck_pr_load_32(&sl->running)) {
			ck_pr_fence_load();
			int64_t d = (int64_t)ck_pr_load_64(
					(uint64_t *)&sl->since) + T;
			if (now >= d) {
				hs->timed_out = true;
				ck_pr_store_32(&sl->kill_req, 1);
				ask_spawner(p);
				continue;
			}
			if (d < dl)
				dl = d;
		} else if (now + recheck < dl) {
			dl = now + recheck;
		}
	}
	return dl;
}

/* One pass over every source of work; whether anything happened. */
static bool
handler_round(struct mp_pool *p)
{
	bool any = false;

	if (ck_pr_load_32(&p->term_req) && !p->term_done) {
		do_terminate(p);
		return true;
	}
	if (p->term_done)
		return false;
	p->now = mp__now();
	any |= take_submissions(p);
	uint32_t ab = ck_pr_load_32(&p->abandons);
	if (ab != p->abandons_seen) {
		p->abandons_seen = ab;
		for (int l = 0; l < 2; l++) {
			struct job *j = l ? p->busy.head : p->pend.head, *nx;
			for (; j != NULL; j = nx) {
				nx = j->lnext;
				if (j->it != NULL && job_over(j))
					job_finish(p, j, true);
			}
		}
		any = true;
	}
	for (unsigned i = 0; i < p->nw; i++) {
		struct hslot *hs = &p->hs[i];
		struct mp__slot *sl = &p->s->slot[i];
		uint32_t st = ck_pr_load_32(&sl->state);
		if (st == MP__S_DEAD) {
			slot_died(p, i);
			any = true;
			continue;
		}
		if (hs->phase == H_SPAWNING && st == MP__S_LIVE &&
		    ck_pr_load_32(&sl->ready)) {
			/* Acquire: the worker's start before our pushes. */
			ck_pr_fence_load();
			hs->phase = H_READY;
			p->init_deaths = 0;
			any = true;
		}
		if (hs->fn > 0)
			any |= read_results(p, i, false);
	}
	any |= dispatch(p);
	return any;
}

static bool
handler_done(struct mp_pool *p)
{
	if (p->term_done)
		return true;
	if (!ck_pr_load_32(&p->join_req) || p->pend.head != NULL ||
	    p->busy.head != NULL ||
	    !cds_wfcq_empty(&p->qh, &p->qt))
		return false;
	/* close + join, and nothing left: let the workers go. */
	ck_pr_store_32(&p->s->stop, 1);
	for (unsigned i = 0; i < p->nw; i++) {
		ck_pr_inc_32(&p->s->slot[i].wseq);
		mp__futex_wake(&p->s->slot[i].wseq, 1);
	}
	ask_spawner(p);
	p->stop_sent = true;
	return true;
}

static bool
spawner_alive(struct mp_pool *p)
{
	struct pollfd pf = { .fd = p->spfd, .events = POLLIN };
	siginfo_t si = { 0 };

	if (p->spfd < 0) {
		/* No pidfd: the spawner is our unreaped child. */
		return waitid(P_PID, (id_t)p->spawner, &si,
			      WEXITED | WNOHANG | WNOWAIT) == 0 &&
		       si.si_pid == 0;
	}
	return poll(&pf, 1, 0) == 0;
}

/* Reap the spawner, through its pidfd or (without one) its pid. */
static void
spawner_reap(struct mp_pool *p)
{
	if (p->spfd < 0) {
		while (waitid(P_PID, (id_t)p->spawner, &(siginfo_t){ 0 },
			      WEXITED) < 0 && errno == EINTR)
			;
		return;
	}
	while (waitid(P_PIDFD, (id_t)p->spfd, &(siginfo_t){ 0 }, WEXITED) < 0 &&
	       errno == EINTR)
		;
}

static void *
handler_main(void *arg)
{
	struct mp_pool *p = arg;
	struct mp__pool_shm *s = p->s;
	ck_backoff_t bo = MP__BACKOFF_INIT;
	int64_t idle_t0 = 0;

	handler_of = p;
	for (;;) {
		bool act = handler_round(p);
		int64_t dl = check_timeouts(p, s->timeout_ns > 0 ?
						       mp__now() : 0);
		if (handler_done(p))
			break;
		if (act) {
			idle_t0 = 0;
			bo = MP__BACKOFF_INIT;
			continue;
		}
		if (mp__backoff(&bo))
			continue;
		int64_t now = mp__now();
		if (idle_t0 == 0)
			idle_t0 = now;
		if (now - idle_t0 < HANDLER_SPIN_NS) {
			sched_yield();
			continue;
		}
		ck_pr_store_32(&s->hsleep, 1);
		/* Orders hsleep before the last round (invariant 2). */
		ck_pr_fence_memory();
		uint32_t bell = ck_pr_load_32(&s->bell);
		act = handler_round(p);
		if (!act && !handler_done(p)) {
			bool work = p->pend.head != NULL ||
				    p->busy.head != NULL;
			if (work && now + CHECK_NS < dl)
				dl = now + CHECK_NS;
			mp__futex_wait(&s->bell, bell, dl);
			if (work && !ck_pr_load_32(&p->broken) &&
			    !spawner_alive(p)) {
				ck_pr_store_32(&p->broken, 1);
				fail_all(p, MP_EWORKER);
			}
		}
		ck_pr_store_32(&s->hsleep, 0);
		if (p->stop_sent)
			break;
		idle_t0 = mp__now();
		bo = MP__BACKOFF_INIT;
	}
	ck_pr_store_32(&p->term_ack, 1);
	mp__futex_wake(&p->term_ack, INT32_MAX);
	return NULL;
}

/* ------------------------------------------------------------------ */
/* Pool */

static pid_t
sys_pidfd_open(pid_t pid)
{
	return (int)syscall(SYS_pidfd_open, pid, 0);
}

static size_t
ring_size(size_t want)
{
	size_t r = RING_MIN;

	while (r < want)
		r <<= 1;
	return r;
}

int
mp_pool_new(mp_pool **out, const mp_pool_attr *attr)
{
	mp_pool_attr a = { 0 };
	struct mp_pool *p;
	sigset_t all, old;
	int rc;

	if (out == NULL)
		return -EINVAL;
	if (attr != NULL)
		a = *attr;
	if (a.processes < 0 || a.processes > MP__POOL_MAXPROC ||
	    a.task_timeout_ns < 0 ||
	    (a.ring_bytes != 0 &&
	     (a.ring_bytes < RING_MIN || a.ring_bytes > RING_MAX)))
		return -EINVAL;
	if (a.processes == 0)
		a.processes = mp_cpu_count();
	if (a.processes > MP__POOL_MAXPROC)
		a.processes = MP__POOL_MAXPROC;
	if ((p = calloc(1, sizeof(*p))) == NULL)
		return -ENOMEM;
	p->nw = (unsigned)a.processes;
	p->R = ring_size(a.ring_bytes ? a.ring_bytes : RING_DEFAULT);
	p->shm_size = mp__pool_shm_size(p->nw, p->R);
	p->hs = calloc(p->nw, sizeof(*p->hs));
	if (p->hs == NULL) {
		rc = -ENOMEM;
		goto fail_free;
	}
	if ((rc = mp__region_map(p->shm_size, (void **)&p->s)) < 0)
		goto fail_free;
	p->evfd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	if (p->evfd < 0) {
		rc = -errno;
		goto fail_unmap;
	}
	struct mp__pool_shm *s = p->s;
	s->hdr.magic = MP__POOL_MAGIC;
	s->hdr.version = MP__LAYOUT_VERSION;
	s->nslots = p->nw;
	s->ring_bytes = (uint32_t)p->R;
	s->owner = getpid();
	s->maxtasks = a.maxtasksperchild;
	s->timeout_ns = a.task_timeout_ns;
	s->initializer = a.initializer;
	s->initarg = a.initarg;
	s->evfd = p->evfd;
	for (unsigned i = 0; i < p->nw; i++) {
		p->hs[i].phase = H_SPAWNING;
		p->hs[i].quota = a.maxtasksperchild;
		s->slot[i].state = MP__S_SPAWN;
	}
	pthread_mutex_init(&p->mu, NULL);
	pthread_mutex_init(&p->jmu, NULL);
	__cds_wfcq_init(&p->qh, &p->qt);

	/* Unflushed stdio would be printed again by every worker. */
	fflush(NULL);
	p->spawner = fork();
	if (p->spawner < 0) {
		rc = -EAGAIN;
		goto fail_mutex;
	}
	if (p->spawner == 0)
		mp__pool_spawner(s);
	p->spfd = sys_pidfd_open(p->spawner);
	if (p->spfd < 0 && errno == ENOSYS) {
		p->spfd = -1;	/* valgrind, old kernels: by pid instead */
	} else if (p->spfd < 0) {
		rc = -errno;
		kill(p->spawner, SIGKILL);
		while (waitpid(p->spawner, NULL, 0) < 0 && errno == EINTR)
			;
		goto fail_mutex;
	}
	/* The handler takes no signal: the application's threads do. */
	sigfillset(&all);
	pthread_sigmask(SIG_SETMASK, &all, &old);
	rc = -pthread_create(&p->handler, NULL, handler_main, p);
	pthread_sigmask(SIG_SETMASK, &old, NULL);
	if (rc < 0)
		goto fail_spawner;
	p->magic = POOL_MAGIC;
	p->owner = getpid();
	*out = p;
	return 0;
fail_spawner:
	ck_pr_store_32(&s->killall, 1);
	ask_spawner(p);
	spawner_reap(p);
	if (p->spfd >= 0)
		close(p->spfd);
fail_mutex:
	pthread_mutex_destroy(&p->jmu);
	pthread_mutex_destroy(&p->mu);
	close(p->evfd);
fail_unmap:
	mp__region_unmap(p->s, p->shm_size);
fail_free:
	free(p->hs);
	free(p);
	return rc;
}

/* A pool of this process: a forked child has no handler thread to ask. */
static bool
pool_ok(const struct mp_pool *p)
{
	return p != NULL && p->magic == POOL_MAGIC && p->owner == mp__pid();
}

static int
submit(struct mp_pool *p, struct job *j)
{
	int rc = 0;

	pthread_mutex_lock(&p->mu);
	if (p->closed)
		rc = -EINVAL;
	else if (ck_pr_load_32(&p->broken))
		rc = -EPIPE;
	else
		cds_wfcq_enqueue(&p->qh, &p->qt, &j->qnode);
	pthread_mutex_unlock(&p->mu);
	if (rc == 0)
		mp__pool_ring_bell(p->s);
	return rc;
}

static struct mp_async *
async_new(const struct mp_pool *p, size_t cap)
{
	struct mp_async *a = calloc(1, sizeof(*a) + cap);

	if (a == NULL)
		return NULL;
	a->magic = ASYNC_MAGIC;
	a->refs = 2;
	a->handler = p->handler;
	return a;
}

static struct job *
job_new(enum jkind kind, size_t extra)
{
	struct job *j = calloc(1, sizeof(*j) + extra);

	if (j == NULL)
		return NULL;
	j->kind = kind;
	j->tkind = MP__K_TASK;
	cds_wfcq_node_init(&j->qnode);
	return j;
}

/* Sizes that must fit the rings: one item's message and result block. */
static int
fits(const struct mp_pool *p, size_t in_len, size_t rsize, unsigned ncols)
{
	size_t half = p->R / 2;

	if (in_len > half || MSG_FIXED(ncols) + MP__ROUND8(in_len) > half)
		return -EMSGSIZE;
	if (rsize > half || 16 + 8 + MP__ROUND8(rsize) > half)
		return -EMSGSIZE;
	return 0;
}

/* Submit an apply; out NULL: the result goes into the mp_async. */
static int
apply_submit(struct mp_pool *p, mp_task_fn fn, const void *arg,
	     size_t arg_len, void *out, size_t out_cap, mp_callback cb,
	     mp_errback eb, void *user, struct mp_async **r)
{
	struct mp_async *a;
	struct job *j;
	int rc;

	if ((rc = fits(p, arg_len, out_cap, 0)) < 0)
		return rc;
	/* One block for the result, the job, the argument and the result's
	 * bytes: one allocation, freed by the user's mp_async_free in the
	 * common case (not by the handler thread, whose frees would contend
	 * for the submitter's malloc arena). */
	size_t jo = MP__ROUND8(sizeof(*a)), ao = jo + MP__ROUND8(sizeof(*j));
	size_t bo = ao + MP__ROUND8(arg_len);
	char *blk = calloc(1, bo + (out == NULL ? out_cap : 0));
	if (blk == NULL)
		return -ENOMEM;
	a = (struct mp_async *)blk;
	a->magic = ASYNC_MAGIC;
	a->refs = 2;
	a->handler = p->handler;
	a->buf = blk + bo;
	j = (struct job *)(blk + jo);
	j->kind = J_APPLY;
	j->tkind = MP__K_TASK;
	j->embedded = true;
	cds_wfcq_node_init(&j->qnode);
	if (arg_len > 0)
		memcpy(blk + ao, arg, arg_len);
	j->items = blk + ao;
	j->in_len = arg_len;
	j->n = 1;
	j->chunksize = 1;
	j->fn = (uint64_t)(uintptr_t)fn;
	j->results = out != NULL ? out : a->buf;
	j->rsize = out_cap;
	j->a = a;
	j->cb = cb;
	j->eb = eb;
	j->user = user;
	if ((rc = submit(p, j)) < 0) {
		free(blk);
		return rc;
	}
	*r = a;
	return 0;
}

ssize_t
mp_pool_apply(mp_pool *p, mp_task_fn fn, const void *arg, size_t arg_len,
	      void *out, size_t out_cap)
{
	struct mp_async *a;
	char none;
	ssize_t rc;

	if (!pool_ok(p) || fn == NULL || (arg == NULL && arg_len > 0) ||
	    (out == NULL && out_cap > 0))
		return -EINVAL;
	if (on_handler(p))
		return -EDEADLK;
	/* Blocking: the worker's result is copied straight into out. */
	if ((rc = apply_submit(p, fn, arg, arg_len, out != NULL ? out : &none,
			       out_cap, NULL, NULL, NULL, &a)) < 0)
		return rc;
	rc = mp_async_get(a, MP_FOREVER);
	if (rc == 0)
		rc = (ssize_t)a->len;
	mp_async_free(a);
	return rc;
}

int
mp_pool_apply_async(mp_pool *p, mp_task_fn fn, const void *arg,
		    size_t arg_len, size_t out_cap, mp_callback cb,
		    mp_errback eb, void *user, mp_async **r)
{
	if (!pool_ok(p) || fn == NULL || r == NULL ||
	    (arg == NULL && arg_len > 0))
		return -EINVAL;
	return apply_submit(p, fn, arg, arg_len, NULL, out_cap, cb, eb, user,
			    r);
}

static size_t
default_chunk(const struct mp_pool *p, size_t n)
{
	size_t d = 4 * (size_t)p->nw;

	return n == 0 ? 1 : (n + d - 1) / d;
}

/*
 * Build and submit a map-like job.  copy: the items are copied (async);
 * else they are the caller's, who waits.  it: an imap job.
 */
static int
map_submit(struct mp_pool *p, struct job *j, const void *items, bool copy,
	   mp_callback cb, mp_errback eb, void *user, struct mp_async **ra)
{
	struct mp_async *a = NULL;
	int rc;

	if (copy && j->n > 0 && j->own == NULL) {
		if ((j->own = malloc(j->n * j->in_len)) == NULL) {
			rc = -ENOMEM;
			goto fail;
		}
		memcpy(j->own, items, j->n * j->in_len);
	}
	j->items = j->own != NULL ? j->own : items;
	if (ra != NULL) {
		if ((a = async_new(p, 0)) == NULL) {
			rc = -ENOMEM;
			goto fail;
		}
		j->a = a;
	}
	j->cb = cb;
	j->eb = eb;
	j->user = user;
	if ((rc = submit(p, j)) < 0)
		goto fail;
	if (ra != NULL)
		*ra = a;
	return 0;
fail:
	free(a);
	job_free(j);
	return rc;
}

static int
map_check(const struct mp_pool *p, const void *fn, const void *items,
	  size_t n, size_t item_size, const void *results, size_t rsize)
{
	if (!pool_ok(p) || fn == NULL || (items == NULL && n > 0) ||
	    item_size == 0 || (results == NULL && rsize > 0 && n > 0))
		return -EINVAL;
	if (n > 0 && (n > SIZE_MAX / item_size ||
		      (rsize > 0 && n > SIZE_MAX / rsize)))
		return -EINVAL;
	return fits(p, item_size, rsize, 0);
}

static struct job *
map_job(const struct mp_pool *p, const void *fn, size_t n, size_t item_size,
	void *results, size_t rsize, size_t chunksize)
{
	struct job *j = job_new(J_MAP, 0);

	if (j == NULL)
		return NULL;
	j->fn = (uint64_t)(uintptr_t)fn;
	j->n = n;
	j->in_len = item_size;
	j->results = results;
	j->rsize = rsize;
	j->chunksize = chunksize ? chunksize : default_chunk(p, n);
	return j;
}

int
mp_pool_map_async(mp_pool *p, mp_task_fn fn, const void *items, size_t n,
		  size_t item_size, void *results, size_t result_size,
		  size_t chunksize, mp_callback cb, mp_errback eb, void *user,
		  mp_async **r)
{
	struct job *j;
	int rc;

	if (r == NULL)
		return -EINVAL;
	if ((rc = map_check(p, fn, items, n, item_size, results,
			    result_size)) < 0)
		return rc;
	if ((j = map_job(p, fn, n, item_size, results, result_size,
			 chunksize)) == NULL)
		return -ENOMEM;
	return map_submit(p, j, items, true, cb, eb, user, r);
}

int
mp_pool_map(mp_pool *p, mp_task_fn fn, const void *items, size_t n,
	    size_t item_size, void *results, size_t result_size,
	    size_t chunksize)
{
	struct mp_async *a;
	struct job *j;
	int rc;

	if ((rc = map_check(p, fn, items, n, item_size, results,
			    result_size)) < 0)
		return rc;
	if (on_handler(p))
		return -EDEADLK;
	if ((j = map_job(p, fn, n, item_size, results, result_size,
			 chunksize)) == NULL)
		return -ENOMEM;
	if ((rc = map_submit(p, j, items, false, NULL, NULL, NULL, &a)) < 0)
		return rc;
	rc = mp_async_get(a, MP_FOREVER);
	mp_async_free(a);
	return rc;
}

/* A starmap job: the columns packed item by item. */
static int
star_job(const struct mp_pool *p, mp_star_fn fn, size_t ncols,
	 const void *const cols[], const size_t col_sizes[], size_t n,
	 void *results, size_t rsize, size_t chunksize, struct job **out)
{
	size_t isz = 0;
	struct job *j;
	int rc;

	if (!pool_ok(p) || fn == NULL || ncols == 0 ||
	    ncols > MP_STARMAP_MAXCOLS || cols == NULL || col_sizes == NULL ||
	    (results == NULL && rsize > 0 && n > 0))
		return -EINVAL;
	for (size_t c = 0; c < ncols; c++) {
		if (col_sizes[c] == 0 || col_sizes[c] > UINT32_MAX ||
		    (cols[c] == NULL && n > 0) || isz > SIZE_MAX / 2)
			return -EINVAL;
		isz += col_sizes[c];
	}
	if (n > 0 && (n > SIZE_MAX / isz ||
		      (rsize > 0 && n > SIZE_MAX / rsize)))
		return -EINVAL;
	if ((rc = fits(p, isz, rsize, (unsigned)ncols)) < 0)
		return rc;
	if ((j = map_job(p, (const void *)fn, n, isz, results, rsize,
			 chunksize)) == NULL)
		return -ENOMEM;
	j->tkind = MP__K_STAR;
	j->ncols = (uint16_t)ncols;
	if ((n > 0 && (j->own = malloc(n * isz)) == NULL) ||
	    (j->col_sizes = malloc(ncols * sizeof(uint32_t))) == NULL) {
		job_free(j);
		return -ENOMEM;
	}
	for (size_t c = 0; c < ncols; c++)
		j->col_sizes[c] = (uint32_t)col_sizes[c];
	char *d = j->own;
	for (size_t i = 0; i < n; i++) {
		for (size_t c = 0; c < ncols; c++) {
			memcpy(d, (const char *)cols[c] + i * col_sizes[c],
			       col_sizes[c]);
			d += col_sizes[c];
		}
	}
	*out = j;
	return 0;
}

int
mp_pool_starmap_async(mp_pool *p, mp_star_fn fn, size_t ncols,
		      const void *const cols[], const size_t col_sizes[],
		      size_t n, void *results, size_t result_size,
		      size_t chunksize, mp_callback cb, mp_errback eb,
		      void *user, mp_async **r)
{
	struct job *j;
	int rc;

	if (r == NULL)
		return -EINVAL;
	if ((rc = star_job(p, fn, ncols, cols, col_sizes, n, results,
			   result_size, chunksize, &j)) < 0)
		return rc;
	return map_submit(p, j, NULL, false, cb, eb, user, r);
}

int
mp_pool_starmap(mp_pool *p, mp_star_fn fn, size_t ncols,
		const void *const cols[], const size_t col_sizes[], size_t n,
		void *results, size_t result_size, size_t chunksize)
{
	struct mp_async *a;
	struct job *j;
	int rc;

	if ((rc = star_job(p, fn, ncols, cols, col_sizes, n, results,
			   result_size, chunksize, &j)) < 0)
		return rc;
	if (on_handler(p)) {
		job_free(j);
		return -EDEADLK;
	}
	if ((rc = map_submit(p, j, NULL, false, NULL, NULL, NULL, &a)) < 0)
		return rc;
	rc = mp_async_get(a, MP_FOREVER);
	mp_async_free(a);
	return rc;
}

/* ------------------------------------------------------------------ */
/* imap */

static int
imap_new(mp_pool *p, mp_task_fn fn, const void *items, size_t n,
	 size_t item_size, size_t result_size, size_t chunksize, bool ordered,
	 mp_iter **out)
{
	struct mp_iter *it;
	struct job *j;
	int rc;

	if (out == NULL)
		return -EINVAL;
	if ((rc = map_check(p, fn, items, n, item_size, "", result_size)) < 0)
		return rc;
	if (chunksize == 0)
		chunksize = 1;
	if ((it = calloc(1, sizeof(*it))) == NULL)
		return -ENOMEM;
	it->magic = ITER_MAGIC;
	it->refs = 2;
	it->pool = p;
	it->handler = p->handler;
	it->ordered = ordered;
	it->n = n;
	it->rsize = result_size;
	it->W = 4 * (uint64_t)p->nw * chunksize;
	if (it->W < 64)
		it->W = 64;
	if (it->W > n)
		it->W = n > 0 ? n : 1;
	pthread_mutex_init(&it->mu, NULL);
	it->buf = calloc(it->W, result_size ? result_size : 1);
	it->st = calloc(it->W, 1);
	it->err = calloc(it->W, sizeof(int));
	it->q = ordered ? NULL : calloc(it->W, sizeof(uint64_t));
	if (it->buf == NULL || it->st == NULL || it->err == NULL ||
	    (!ordered && it->q == NULL)) {
		rc = -ENOMEM;
		goto fail;
	}
	if ((j = map_job(p, fn, n, item_size, NULL, result_size,
			 chunksize)) == NULL) {
		rc = -ENOMEM;
		goto fail;
	}
	j->kind = J_IMAP;
	j->it = it;
	if ((rc = map_submit(p, j, items, true, NULL, NULL, NULL, NULL)) < 0)
		goto fail;
	*out = it;
	return 0;
fail:
	it->refs = 1;
	iter_unref(it);
	return rc;
}

int
mp_pool_imap(mp_pool *p, mp_task_fn fn, const void *items, size_t n,
	     size_t item_size, size_t result_size, size_t chunksize,
	     mp_iter **it)
{
	return imap_new(p, fn, items, n, item_size, result_size, chunksize,
			true, it);
}

int
mp_pool_imap_unordered(mp_pool *p, mp_task_fn fn, const void *items,
		       size_t n, size_t item_size, size_t result_size,
		       size_t chunksize, mp_iter **it)
{
	return imap_new(p, fn, items, n, item_size, result_size, chunksize,
			false, it);
}

/* Under it->mu: take the next result if there is one; -EAGAIN if not. */
static int
iter_take(struct mp_iter *it, void *result, size_t *index)
{
	uint64_t idx;

	if (it->given == it->n)
		return -ENOENT;
	if (it->ordered) {
		if (it->st[it->next % it->W] != IT_FILLED)
			return it->over ? (it->final_err ? it->final_err :
						-ENOENT) : -EAGAIN;
		idx = it->next++;
	} else {
		if (it->qh == it->qt)
			return it->over ? (it->final_err ? it->final_err :
						-ENOENT) : -EAGAIN;
		idx = it->q[it->qh++ % it->W];
	}
	uint64_t sl = idx % it->W;
	if (result != NULL && it->rsize > 0)
		memcpy(result, it->buf + sl * it->rsize, it->rsize);
	if (index != NULL)
		*index = (size_t)idx;
	int rc = it->err[sl];
	it->st[sl] = IT_CONSUMED;
	it->given++;
	uint64_t low = it->low;
	while (low < it->n && it->st[low % it->W] == IT_CONSUMED) {
		it->st[low % it->W] = IT_EMPTY;
		low++;
	}
	/* Release: the slots emptied before the handler may refill them. */
	ck_pr_fence_store();
	ck_pr_store_64(&it->low, low);
	if (it->pool != NULL)
		mp__pool_ring_bell(it->pool->s);
	return rc;
}

int
mp_iter_next(mp_iter *it, void *result, size_t *index, int64_t timeout_ns)
{
	int64_t deadline;
	int rc;

	if (it == NULL || it->magic != ITER_MAGIC ||
	    mp__deadline(timeout_ns, &deadline) < 0)
		return -EINVAL;
	for (;;) {
		pthread_mutex_lock(&it->mu);
		uint32_t seq = ck_pr_load_32(&it->seq);
		rc = iter_take(it, result, index);
		pthread_mutex_unlock(&it->mu);
		if (rc != -EAGAIN)
			return rc;
		if (timeout_ns == MP_NOWAIT)
			return -EAGAIN;
		if (pthread_equal(pthread_self(), it->handler))
			return -EDEADLK;
		rc = wait_word(&it->seq, seq, &it->waiters, deadline);
		ck_pr_store_32(&it->waiters, 0);
		if (rc == -ETIMEDOUT)
			return -ETIMEDOUT;
	}
}

void
mp_iter_free(mp_iter *it)
{
	if (it == NULL || it->magic != ITER_MAGIC)
		return;
	pthread_mutex_lock(&it->mu);
	ck_pr_store_32(&it->abandoned, 1);
	if (it->pool != NULL) {
		/* The handler ends the job once nothing of it is in flight;
		 * if nothing is now, only this tells it to look. */
		ck_pr_inc_32(&it->pool->abandons);
		force_bell(it->pool);
	}
	pthread_mutex_unlock(&it->mu);
	iter_unref(it);
}

/* ------------------------------------------------------------------ */
/* AsyncResult */

static bool
async_ok(const struct mp_async *a)
{
	return a != NULL && a->magic == ASYNC_MAGIC;
}

/* Wait until ready; 0, -ETIMEDOUT, -EAGAIN, -EDEADLK. */
static int
async_wait(struct mp_async *a, int64_t timeout_ns)
{
	int64_t deadline;

	if (ck_pr_load_32(&a->state))
		return 0;
	if (pthread_equal(pthread_self(), a->handler))
		return ck_pr_load_32(&a->filled) ? 0 : -EDEADLK;
	if (mp__deadline(timeout_ns, &deadline) < 0)
		return -EINVAL;
	if (timeout_ns == MP_NOWAIT)
		return -EAGAIN;
	return wait_word(&a->state, 0, &a->waiters, deadline);
}

int
mp_async_get(mp_async *a, int64_t timeout_ns)
{
	int rc;

	if (!async_ok(a) || !MP__TIMEOUT_OK(timeout_ns))
		return -EINVAL;
	if ((rc = async_wait(a, timeout_ns)) < 0)
		return rc;
	ck_pr_fence_load();
	return a->err;
}

int
mp_async_wait(mp_async *a, int64_t timeout_ns)
{
	int rc;

	if (!async_ok(a) || !MP__TIMEOUT_OK(timeout_ns))
		return -EINVAL;
	rc = async_wait(a, timeout_ns);
	if (rc == -ETIMEDOUT || rc == -EAGAIN)
		return 0;
	return rc < 0 ? rc : 1;
}

bool
mp_async_ready(mp_async *a)
{
	if (!async_ok(a))
		return false;
	if (ck_pr_load_32(&a->state))
		return true;
	return pthread_equal(pthread_self(), a->handler) &&
	       ck_pr_load_32(&a->filled);
}

int
mp_async_successful(mp_async *a)
{
	if (!mp_async_ready(a))
		return -EINVAL;
	ck_pr_fence_load();
	return a->err == 0;
}

const void *
mp_async_result(mp_async *a, size_t *len)
{
	if (len != NULL)
		*len = 0;
	if (!mp_async_ready(a))
		return NULL;
	ck_pr_fence_load();
	if (len != NULL)
		*len = a->len;
	return a->res;
}

void
mp_async_free(mp_async *a)
{
	if (!async_ok(a))
		return;
	async_unref(a);
}

/* ------------------------------------------------------------------ */
/* close, terminate, join, free */

int
mp_pool_close(mp_pool *p)
{
	if (!pool_ok(p))
		return -EINVAL;
	pthread_mutex_lock(&p->mu);
	p->closed = true;
	pthread_mutex_unlock(&p->mu);
	return 0;
}

int
mp_pool_terminate(mp_pool *p)
{
	if (!pool_ok(p))
		return -EINVAL;
	pthread_mutex_lock(&p->mu);
	bool again = p->terminated;
	p->closed = p->terminated = true;
	pthread_mutex_unlock(&p->mu);
	ck_pr_store_32(&p->term_req, 1);
	if (on_handler(p))
		return 0;	/* done when the callback returns */
	force_bell(p);
	if (!again || !ck_pr_load_32(&p->term_ack)) {
		while (!ck_pr_load_32(&p->term_ack))
			mp__futex_wait(&p->term_ack, 0, MP__NEVER);
	}
	return 0;
}

int
mp_pool_join(mp_pool *p)
{
	if (!pool_ok(p))
		return -EINVAL;
	if (on_handler(p))
		return -EDEADLK;
	pthread_mutex_lock(&p->mu);
	bool ok = p->closed || p->terminated;
	pthread_mutex_unlock(&p->mu);
	if (!ok)
		return -EINVAL;
	pthread_mutex_lock(&p->jmu);
	if (!p->joined) {
		ck_pr_store_32(&p->join_req, 1);
		force_bell(p);
		pthread_join(p->handler, NULL);
		spawner_reap(p);
		p->joined = true;
	}
	pthread_mutex_unlock(&p->jmu);
	return 0;
}

void
mp_pool_free(mp_pool *p)
{
	if (p == NULL || p->magic != POOL_MAGIC)
		return;
	if (p->owner != mp__pid()) {
		/* A child's copy: release the copy only. */
		if (p->spfd >= 0)
			close(p->spfd);
		close(p->evfd);
		mp__region_unmap(p->s, p->shm_size);
		free(p->hs);
		free(p);
		return;
	}
	if (on_handler(p))
		return;
	if (!p->joined) {
		mp_pool_terminate(p);
		mp_pool_join(p);
	}
	p->magic = 0;
	if (p->spfd >= 0)
		close(p->spfd);
	close(p->evfd);
	mp__region_unmap(p->s, p->shm_size);
	pthread_mutex_destroy(&p->mu);
	pthread_mutex_destroy(&p->jmu);
	free(p->hs);
	free(p);
}

int
mp_pool_workers(mp_pool *p, pid_t *pids, size_t cap)
{
	int n = 0;

	if (!pool_ok(p) || (pids == NULL && cap > 0))
		return -EINVAL;
	for (unsigned i = 0; i < p->nw && (size_t)n < cap; i++) {
		struct mp__slot *sl = &p->s->slot[i];
		if (ck_pr_load_32(&sl->state) == MP__S_LIVE) {
			ck_pr_fence_load();
			/* The worker may have died since, and the handler
			 * reset its pid to 0: never report that one (a
			 * caller's kill(0) would hit its process group). */
			pid_t pid = ck_pr_load_int(&sl->pid);
			if (pid > 0)
				pids[n++] = pid;
		}
	}
	return n;
}
