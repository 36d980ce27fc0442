/* SPDX-License-Identifier: MIT */
/*
 * Theory of operation: the Pool's processes (the spawner and the workers)
 *
 * lib/pool.c describes the whole protocol; this file holds the two bodies
 * that run outside the owner.
 *
 * The spawner is forked by mp_pool_new before the owner's handler thread
 * exists, and never makes a thread: every worker, first or replacement, is
 * a fork of a single-threaded process, so no lock held by another thread
 * of the owner can be inherited locked.  It sleeps in poll() on:
 *   - the request eventfd (the handler asks for a fork, a kill, a stop);
 *   - a pidfd of the owner (the owner process died: SIGKILL every worker,
 *     reap them, exit; a pidfd, unlike PR_SET_PDEATHSIG, fires for the
 *     process and not for the thread that forked us);
 *   - a pidfd of each worker (it ended: reap it with waitid(P_PIDFD),
 *     record its status and MP__S_DEAD in its slot, ring the handler).
 * Being the workers' parent, it is the only process that may reap them,
 * so a pid it signals can never have been reused (kills go through it).
 *
 * A worker arms PR_SET_PDEATHSIG(SIGKILL) and then checks that its parent
 * is still the spawner (which died otherwise before the prctl): the
 * spawner is single-threaded, so the signal fires exactly when it dies.
 * It restores the owner's signal mask, runs the initializer, sets ready,
 * and loops: take the next task message from its task ring, run its items
 * writing each result straight into a block (up to 2048 items, 32 KiB)
 * reserved in its result ring, release the message, publish (lib/pool.c,
 * "Dispatch", says when).  A block's return codes are pre-filled
 * NOTSTARTED and an item's is set RUNNING before it runs: after a death
 * the handler reads them, published or not, to know which items ended,
 * which one was running, and which never started (lib/pool.c, 6).
 *
 * Sleeping.  A worker with nothing to do (or no room for results) spins
 * briefly, yields, then sets wsleep, fences, reads wseq, re-checks and
 * sleeps on wseq.  The handler bumps wseq and wakes after any change a
 * worker may wait for (a task pushed, results consumed, stop), having
 * fenced and seen wsleep set: one of the two sees the other (Dekker), and
 * a bump between the worker's read of wseq and its sleep fails the futex
 * wait, so no wake-up is lost.
 *
 * Without pidfds.  Where pidfd_open() is ENOSYS (valgrind 3.19 does not
 * know syscall 434; kernels before 5.3) a worker's slot holds NOFD and the
 * spawner, still its unreaping parent, looks at it with waitid(P_PID,
 * WNOHANG | WNOWAIT) each time poll() returns, which then times out after
 * POLL_NOFD_MS; the owner is watched by getppid() (the spawner is its
 * child: a changed parent means the owner died).  Kills stay race-free:
 * only the spawner reaps the workers.
 *
 * Crash analysis.  A worker killed anywhere: its rings are read once more
 * and reset by the handler, which alone decides what the death means.  The
 * spawner killed anywhere: the workers die of their death signal; the
 * owner's handler sees the spawner's pidfd readable and fails what was
 * pending (lib/pool.c).  A fork the spawner could not make is recorded as
 * a death before ready.
 */
#include "lib/internal.h"

#include <mproc/pool.h>

#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <stdint.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <ck_backoff.h>
#include <ck_pr.h>

#include "lib/futex.h"
#include "lib/pool.h"

/* A worker spins and yields this long before it sleeps. */
#define WORKER_SPIN_NS MP_USEC(60)
/* Items in one result block at most, and its bytes. */
#define BLOCK_ITEMS 2048
#define BLOCK_BYTES 32768

void
mp__pool_ring_bell(struct mp__pool_shm *s)
{
	/* Orders the caller's publication before the load of hsleep; pairs
	 * with the fence between the handler's store of hsleep and its last
	 * look at every source (lib/pool.c, invariant 2). */
	ck_pr_fence_memory();
	if (ck_pr_load_32(&s->hsleep)) {
		ck_pr_inc_32(&s->bell);
		mp__futex_wake(&s->bell, 1);
	}
}

void
mp__pool_wake_worker(struct mp__pool_shm *s, unsigned i)
{
	struct mp__slot *sl = &s->slot[i];

	/* Orders the handler's publication before its load of wsleep; pairs
	 * with the worker's fence after it sets wsleep. */
	ck_pr_fence_memory();
	if (ck_pr_load_32(&sl->wsleep)) {
		ck_pr_inc_32(&sl->wseq);
		mp__futex_wake(&sl->wseq, 1);
	}
}

static pid_t
sys_pidfd_open(pid_t pid)
{
	return (int)syscall(SYS_pidfd_open, pid, 0);
}

/* A live worker watched without a pidfd (see "Without pidfds"). */
#define NOFD (-2)
#define POLL_NOFD_MS 10

/* ------------------------------------------------------------------ */
/* Worker */

struct wk {
	struct mp__pool_shm *s;
	struct mp__slot *sl;
	unsigned idx;
	char *tdata, *rdata;
	uint64_t mask, R;
	uint64_t tpos;		/* task ring: consumer position */
	uint64_t rpos;		/* result ring: producer position */
	uint64_t rtail;		/* cached res.tail */
	uint64_t done;		/* items finished */
	uint64_t need;		/* bytes wk_reserve waits for */
	unsigned unpub;		/* blocks written, not yet published */
};

/*
 * Wait until ready(w) holds: spin, yield, then sleep on wseq.  stop_ok:
 * return false when the pool stops while we wait (idle wait only).
 */
static bool
wk_wait(struct wk *w, bool (*ready)(struct wk *), bool stop_ok)
{
	ck_backoff_t bo = MP__BACKOFF_INIT;
	int64_t t0 = 0;

	for (;;) {
		if (ready(w))
			return true;
		if (stop_ok && ck_pr_load_32(&w->s->stop))
			return false;
		if (mp__backoff(&bo))
			continue;
		if (t0 == 0)
			t0 = mp__now();
		if (mp__now() - t0 < WORKER_SPIN_NS) {
			sched_yield();
			continue;
		}
		ck_pr_store_32(&w->sl->wsleep, 1);
		/* Orders wsleep before the re-checks; pairs with the fence in
		 * mp__pool_wake_worker. */
		ck_pr_fence_memory();
		uint32_t seq = ck_pr_load_32(&w->sl->wseq);
		if (!ready(w) && !(stop_ok && ck_pr_load_32(&w->s->stop)))
			mp__futex_wait(&w->sl->wseq, seq, MP__NEVER);
		ck_pr_store_32(&w->sl->wsleep, 0);
		t0 = 0;
		bo = MP__BACKOFF_INIT;
	}
}

static bool
wk_has_task(struct wk *w)
{
	/* Acquire: the message's bytes, written before head was released. */
	return ck_pr_load_64(&w->sl->task.head) != w->tpos;
}

static bool
wk_has_room(struct wk *w)
{
	/* Acquire: the handler read the blocks before releasing them. */
	w->rtail = ck_pr_load_64(&w->sl->res.tail);
	ck_pr_fence_load();
	return w->R - (w->rpos - w->rtail) >= w->need;
}

/* Publish the result blocks written so far and tell the handler. */
static void
wk_publish(struct wk *w)
{
	/* Release: the blocks' bytes before the head that exposes them. */
	ck_pr_fence_store();
	ck_pr_store_64(&w->sl->res.head, w->rpos);
	w->unpub = 0;
	mp__pool_ring_bell(w->s);
}

/* Reserve a block of bytes (after a skip marker if it would wrap). */
static char *
wk_reserve(struct wk *w, size_t bytes)
{
	uint64_t off = w->rpos & w->mask, room = w->R - off;

	w->need = bytes + (room < bytes ? room : 0);
	if (w->R - (w->rpos - w->rtail) < w->need) {
		/* The handler frees room only for what it can see. */
		if (w->unpub > 0)
			wk_publish(w);
		wk_wait(w, wk_has_room, false);
	}
	if (room < bytes) {
		struct mp__rblk *sk = (struct mp__rblk *)(w->rdata + off);
		sk->stamp = w->rpos;
		sk->count = MP__RB_SKIP;
		w->rpos += room;
	}
	return w->rdata + (w->rpos & w->mask);
}

static int64_t
run_item(const struct mp__tmsg *m, const uint32_t *cols, const char *in,
	 char *out)
{
	ssize_t rc;

	if (m->kind == MP__K_STAR) {
		const void *args[MP_STARMAP_MAXCOLS];
		for (unsigned c = 0; c < m->ncols; c++) {
			args[c] = in;
			in += cols[c];
		}
		rc = ((mp_star_fn)(uintptr_t)m->fn)(args, out, m->out_cap);
	} else {
		rc = ((mp_task_fn)(uintptr_t)m->fn)(in, m->in_len, out,
						    m->out_cap);
	}
	/* A length beyond the buffer, or one of our markers, is an error
	 * of the task's, not a result to trust. */
	if (rc > (ssize_t)m->out_cap)
		return -EMSGSIZE;
	if (rc <= MP__RC_RUNNING)
		return -ERANGE;
	return rc;
}

/* Run one task message's items into result blocks. */
static void
wk_run(struct wk *w, const struct mp__tmsg *m)
{
	const uint32_t *cols = (const uint32_t *)(m + 1);
	const char *items = (const char *)(m + 1) +
			    MP__ROUND8((size_t)m->ncols * 4);
	size_t rsize = m->out_cap;
	bool timed = w->s->timeout_ns > 0;
	uint32_t j = 0;

	while (j < m->count) {
		size_t k = m->count - j;
		if (k > BLOCK_ITEMS)
			k = BLOCK_ITEMS;
		while (k > 1 && 16 + 8 * k + MP__ROUND8(k * rsize) >
				 BLOCK_BYTES && 16 + 8 * k +
				 MP__ROUND8(k * rsize) > w->R / 4)
			k /= 2;
		size_t bytes = 16 + 8 * k + MP__ROUND8(k * rsize);
		char *b = wk_reserve(w, bytes);
		struct mp__rblk *h = (struct mp__rblk *)b;
		int64_t *rc = (int64_t *)(h + 1);
		char *pay = (char *)(rc + k);

		h->stamp = w->rpos;
		h->count = (uint32_t)k;
		h->rsize = (uint32_t)rsize;
		for (size_t i = 0; i < k; i++)
			rc[i] = MP__RC_NOTSTARTED;
		for (size_t i = 0; i < k; i++, j++) {
			rc[i] = MP__RC_RUNNING;
			if (timed) {
				ck_pr_store_64((uint64_t *)&w->sl->since,
					       (uint64_t)mp__now());
				/* Release: since before running, which the
				 * handler loads first. */
				ck_pr_fence_store();
				ck_pr_store_32(&w->sl->running, 1);
			}
			rc[i] = run_item(m, cols,
					 items + (size_t)j * m->in_len,
					 pay + i * rsize);
			if (timed)
				ck_pr_store_32(&w->sl->running, 0);
		}
		w->rpos += bytes;
		w->done += k;
		if (j == m->count) {
			/* Release the message before publishing its last
			 * results: the handler counts on the room once it
			 * has them (lib/pool.c, invariant 5). */
			w->tpos += m->size;
			ck_pr_fence_store();
			ck_pr_store_64(&w->sl->task.tail, w->tpos);
		}
		/* A run of small tasks already queued shares one publication
		 * (one cache-line transfer and one fence); a long chunk's
		 * blocks, the last message before idling, and every 32nd
		 * block go out at once.  Unpublished blocks are not lost
		 * to a death: the handler reads them by their stamps. */
		if (++w->unpub >= 32 || j < m->count ||
		    ck_pr_load_64(&w->sl->task.head) == w->tpos)
			wk_publish(w);
	}
}

static void __attribute__((noreturn))
worker_main(struct mp__pool_shm *s, unsigned idx)
{
	struct wk w = {
		.s = s,
		.sl = &s->slot[idx],
		.idx = idx,
		.tdata = mp__pool_task_data(s, idx),
		.rdata = mp__pool_res_data(s, idx),
		.R = s->ring_bytes,
		.mask = s->ring_bytes - 1,
	};

	/* The handler set both ends of each ring where we start. */
	w.tpos = ck_pr_load_64(&w.sl->task.tail);
	w.rpos = ck_pr_load_64(&w.sl->res.head);
	w.rtail = ck_pr_load_64(&w.sl->res.tail);

	if (s->initializer != NULL)
		s->initializer(s->initarg);
	/* Release: nothing; the handler dispatches once it sees ready. */
	ck_pr_store_32(&w.sl->ready, 1);
	mp__pool_ring_bell(s);
	for (;;) {
		if (!wk_wait(&w, wk_has_task, true))
			break;
		ck_pr_fence_load();
		const struct mp__tmsg *m =
			(const struct mp__tmsg *)(w.tdata + (w.tpos & w.mask));
		if (m->size == MP__TM_SKIP) {
			w.tpos += w.R - (w.tpos & w.mask);
			ck_pr_store_64(&w.sl->task.tail, w.tpos);
			continue;
		}
		/* The handler may have taken the message back for an idle
		 * worker; whoever wins this CAS owns its items. */
		if (!ck_pr_cas_32((uint32_t *)&m->state, MP__TM_NEW,
				  MP__TM_TAKEN)) {
			w.tpos += m->size;
			ck_pr_store_64(&w.sl->task.tail, w.tpos);
			if (w.unpub > 0 &&
			    ck_pr_load_64(&w.sl->task.head) == w.tpos)
				wk_publish(&w);
			continue;
		}
		wk_run(&w, m);
		if (s->maxtasks != 0 && w.done >= s->maxtasks)
			break;
	}
	if (w.unpub > 0)
		wk_publish(&w);
	fflush(NULL);
	_exit(0);
}

/* ------------------------------------------------------------------ */
/* Spawner */

struct sp {
	struct mp__pool_shm *s;
	sigset_t mask;		/* the owner's, for the workers */
	int ownerfd;
	int *pidfd;		/* per slot, -1 when no live worker, or NOFD */
	pid_t self;
};

static void
sp_fork(struct sp *sp, unsigned i)
{
	struct mp__slot *sl = &sp->s->slot[i];
	pid_t pid = fork();

	if (pid == 0) {
		prctl(PR_SET_PDEATHSIG, SIGKILL);
		if (getppid() != sp->self)
			_exit(1);
		/* The spawner's fds are none of the worker's business. */
		close(sp->ownerfd);
		close(sp->s->evfd);
		for (unsigned k = 0; k < sp->s->nslots; k++) {
			if (sp->pidfd[k] >= 0)
				close(sp->pidfd[k]);
		}
		sigprocmask(SIG_SETMASK, &sp->mask, NULL);
		worker_main(sp->s, i);
	}
	if (pid > 0) {
		sp->pidfd[i] = sys_pidfd_open(pid);
		if (sp->pidfd[i] < 0 && errno == ENOSYS)
			sp->pidfd[i] = NOFD;
	}
	if (pid < 0 || sp->pidfd[i] == -1) {
		/* No worker (fork failed, or no fd to watch it: then kill
		 * and reap it now): report a death before ready. */
		if (pid > 0) {
			kill(pid, SIGKILL);
			while (waitpid(pid, NULL, 0) < 0 && errno == EINTR)
				;
		}
		sp->pidfd[i] = -1;
		sl->pid = 0;
		sl->status = -SIGKILL;
		ck_pr_fence_store();
		ck_pr_store_32(&sl->state, MP__S_DEAD);
		mp__pool_ring_bell(sp->s);
		return;
	}
	sl->pid = pid;
	/* Release: pid before the state that makes it meaningful. */
	ck_pr_fence_store();
	ck_pr_store_32(&sl->state, MP__S_LIVE);
}

static void
sp_reap(struct sp *sp, unsigned i)
{
	struct mp__slot *sl = &sp->s->slot[i];
	siginfo_t si;

	memset(&si, 0, sizeof(si));
	if (sp->pidfd[i] == NOFD) {
		while (waitid(P_PID, (id_t)sl->pid, &si, WEXITED) < 0 &&
		       errno == EINTR)
			;
	} else {
		while (waitid(P_PIDFD, (id_t)sp->pidfd[i], &si,
			      WEXITED) < 0 && errno == EINTR)
			;
		close(sp->pidfd[i]);
	}
	sp->pidfd[i] = -1;
	sl->status = si.si_code == CLD_EXITED ? si.si_status : -si.si_status;
	/* Release: the status before the state the handler acts on. */
	ck_pr_fence_store();
	ck_pr_store_32(&sl->state, MP__S_DEAD);
	mp__pool_ring_bell(sp->s);
}

static void
sp_kill_all(struct sp *sp)
{
	for (unsigned i = 0; i < sp->s->nslots; i++) {
		if (sp->pidfd[i] != -1)
			kill(sp->s->slot[i].pid, SIGKILL);
	}
}

void
mp__pool_spawner(struct mp__pool_shm *s)
{
	struct sp sp = { .s = s, .self = getpid() };
	unsigned n = s->nslots;
	struct pollfd *pfd;
	int fds[MP__POOL_MAXPROC];
	sigset_t all;

	/* Default dispositions: waitid must see our children even if the
	 * owner ignores SIGCHLD, and no owner handler runs here. */
	signal(SIGCHLD, SIG_DFL);
	sigfillset(&all);
	sigdelset(&all, SIGKILL);
	sigdelset(&all, SIGSTOP);
	sigprocmask(SIG_SETMASK, &all, &sp.mask);
	if (getppid() != s->owner)
		_exit(1);
	sp.ownerfd = sys_pidfd_open(s->owner);
	if (sp.ownerfd < 0 && errno != ENOSYS)
		_exit(1);	/* ENOSYS: ownerfd -1, poll skips it */
	/* Allocated before any worker exists: workers inherit it, harmless. */
	pfd = calloc(n + 2, sizeof(*pfd));
	if (pfd == NULL)
		_exit(1);
	sp.pidfd = fds;
	for (unsigned i = 0; i < n; i++)
		fds[i] = -1;
	for (;;) {
		bool stopping = ck_pr_load_32(&s->stop) ||
				ck_pr_load_32(&s->killall);
		unsigned live = 0;

		if (ck_pr_load_32(&s->killall))
			sp_kill_all(&sp);
		for (unsigned i = 0; i < n; i++) {
			struct mp__slot *sl = &s->slot[i];
			uint32_t st = ck_pr_load_32(&sl->state);
			if (st == MP__S_SPAWN) {
				ck_pr_fence_load();
				if (stopping)
					ck_pr_store_32(&sl->state,
						       MP__S_EMPTY);
				else
					sp_fork(&sp, i);
			} else if (st == MP__S_LIVE &&
				   ck_pr_load_32(&sl->kill_req)) {
				ck_pr_store_32(&sl->kill_req, 0);
				kill(sl->pid, SIGKILL);
			}
			if (fds[i] != -1)
				live++;
		}
		if (stopping && live == 0)
			break;
		unsigned np = 0;
		pfd[np++] = (struct pollfd){ .fd = s->evfd, .events = POLLIN };
		pfd[np++] = (struct pollfd){ .fd = sp.ownerfd,
					     .events = POLLIN };
		unsigned map[MP__POOL_MAXPROC];
		for (unsigned i = 0; i < n; i++) {
			if (fds[i] >= 0) {
				map[np - 2] = i;
				pfd[np++] = (struct pollfd){ .fd = fds[i],
							     .events = POLLIN };
			}
		}
		bool nofd = sp.ownerfd < 0;
		for (unsigned i = 0; i < n; i++)
			nofd |= fds[i] == NOFD;
		if (poll(pfd, np, nofd ? POLL_NOFD_MS : -1) < 0)
			continue;
		if (sp.ownerfd < 0 && getppid() != s->owner)
			ck_pr_store_32(&s->killall, 1);
		for (unsigned i = 0; i < n; i++) {
			siginfo_t si = { 0 };

			if (fds[i] == NOFD &&
			    waitid(P_PID, (id_t)s->slot[i].pid, &si,
				   WEXITED | WNOHANG | WNOWAIT) == 0 &&
			    si.si_pid != 0)
				sp_reap(&sp, i);
		}
		if (pfd[0].revents) {
			uint64_t v;
			if (read(s->evfd, &v, sizeof(v)) < 0)
				v = 0;
		}
		if (pfd[1].revents) {
			/* The owner is gone: nobody will use the results. */
			ck_pr_store_32(&s->killall, 1);
		}
		for (unsigned k = 2; k < np; k++) {
			if (pfd[k].revents)
				sp_reap(&sp, map[k - 2]);
		}
	}
	_exit(0);
}
