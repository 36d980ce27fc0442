/* SPDX-License-Identifier: MIT */
/*
 * Chaos: every landed primitive in use by many processes at once while a
 * killer SIGKILLs random participants and starts new ones in their place.
 *
 * The test process makes the primitives and forks a supervisor.  The
 * supervisor forks the participants (so it, their parent, can kill and
 * reap them without any race on reused pids) and is the child subreaper
 * of the tree, so a Pool's workers orphaned by a killed owner come back
 * to it and are counted.  For CHAOS_SECONDS (default 3) it kills a random
 * participant every few milliseconds and forks a replacement; then it
 * raises the stop flag, waits for every participant to finish by itself,
 * and waits until no process of the tree is left.
 *
 * Each participant checks what its primitive promises as it goes (mutual
 * exclusion of the locks, order and contents of queue and pipe messages)
 * and exits with T_FAIL on a broken promise.  Afterwards the test process
 * checks that no primitive is wedged (each still works with a timeout),
 * that the queue lost no more messages than queue users were killed,
 * that no message came twice, and that no fd, mapping or process is left.
 */
#include <errno.h>
#include <signal.h>
#include <stdatomic.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <time.h>

#include <criterion/criterion.h>
#include <mproc.h>

#include "tests/helpers.h"

T_SUITE(chaos);

enum role {
	R_LOCK, R_RLOCK, R_SEM, R_COND, R_EVSET, R_EVWAIT, R_BARRIER,
	R_QPUT, R_QGET, R_PSEND, R_PRECV, R_POOL, R_NROLES
};

static const char *const role_name[R_NROLES] = {
	"lock", "rlock", "sem", "cond", "event-set", "event-wait", "barrier",
	"queue-put", "queue-get", "pipe-send", "pipe-recv", "pool",
};

/* Processes of each role: one a pipe end (the pipe is SPSC). */
static const int role_count[R_NROLES] = {
	3, 2, 3, 2, 1, 2, 2, 2, 2, 1, 1, 1,
};

#define NPART 22
#define NPROD 2			/* == role_count[R_QPUT] */
#define SEQ_BITS 22		/* seqs a producer may use */
#define SEQ_MAX ((uint64_t)1 << SEQ_BITS)
#define MSG_MAX 256
#define PIPE_MSG_MAX 1500
#define POOL_N 48

struct qmsg {
	uint32_t prod;
	uint32_t len;
	uint64_t seq;
	unsigned char pad[MSG_MAX - 16];
};

/* Everything the processes share besides the primitives. */
struct board {
	_Atomic int stop;
	_Atomic int failed;		/* a participant broke a promise */
	char why[160];
	_Atomic long ops[R_NROLES];
	_Atomic long kills[R_NROLES];
	_Atomic long respawns;
	_Atomic long orphans;		/* reaped processes of no role */
	_Atomic long leftover;		/* processes alive past the end */

	_Atomic pid_t lock_holder;
	_Atomic pid_t rlock_holder;
	_Atomic int sem_in;

	/* Queue: seqs are taken before the put, so no seq is used twice. */
	_Atomic uint64_t q_next[NPROD];
	_Atomic uint64_t q_dup;
	_Atomic uint64_t q_bad;

	/* Pipe: the sender's next seq, the receiver's last seen. */
	_Atomic uint64_t p_next;
	_Atomic uint64_t p_last;

	/* Bits: seen[prod][seq], acked[prod][seq]. */
	_Atomic uint64_t seen[NPROD][SEQ_MAX / 64];
	_Atomic uint64_t acked[NPROD][SEQ_MAX / 64];
};

struct prims {
	mp_lock *lock;
	mp_rlock *rlock;
	mp_sem *sem;
	mp_rlock *clock;
	mp_cond *cond;
	mp_event *ev;
	mp_barrier *bar;
	mp_queue *q;
	mp_conn *prx;			/* c1: receives */
	mp_conn *ptx;			/* c2: sends */
};

static struct board *B;
static struct prims P;

static void
fail(const char *what, long v)
{
	int zero = 0;

	if (atomic_compare_exchange_strong(&B->failed, &zero, 1))
		snprintf(B->why, sizeof(B->why), "pid %d: %s (%ld)",
			 (int)getpid(), what, v);
	_exit(T_FAIL);
}

#define CHECK(cond, v)                                                    \
	do {                                                              \
		if (!(cond))                                              \
			fail(#cond, (long)(v));                           \
	} while (0)

static uint64_t
rnd(uint64_t *s)
{
	*s ^= *s << 13;
	*s ^= *s >> 7;
	*s ^= *s << 17;
	return *s;
}

static void
fill(unsigned char *p, size_t n, uint64_t key)
{
	for (size_t i = 0; i < n; i++)
		p[i] = (unsigned char)(key * 31 + i);
}

static bool
filled(const unsigned char *p, size_t n, uint64_t key)
{
	for (size_t i = 0; i < n; i++)
		if (p[i] != (unsigned char)(key * 31 + i))
			return false;
	return true;
}

static bool
stopping(void)
{
	return atomic_load(&B->stop) != 0;
}

static void
do_lock(void)
{
	int r = mp_lock_acquire(P.lock, MP_MSEC(200));
	pid_t h;

	if (r == -ETIMEDOUT)
		return;
	CHECK(r == 0 || r == -EOWNERDEAD, r);
	h = atomic_exchange(&B->lock_holder, getpid());
	/* A holder left behind is a dead one: -EOWNERDEAD said so. */
	CHECK(h == 0 || r == -EOWNERDEAD, h);
	atomic_store(&B->lock_holder, 0);
	CHECK(mp_lock_release(P.lock) == 0, 0);
}

static void
do_rlock(void)
{
	int r = mp_rlock_acquire(P.rlock, MP_MSEC(200));
	pid_t h;

	if (r == -ETIMEDOUT)
		return;
	CHECK(r == 0 || r == -EOWNERDEAD, r);
	CHECK(mp_rlock_acquire(P.rlock, MP_NOWAIT) == 0, 0);
	h = atomic_exchange(&B->rlock_holder, getpid());
	CHECK(h == 0 || r == -EOWNERDEAD, h);
	atomic_store(&B->rlock_holder, 0);
	CHECK(mp_rlock_release(P.rlock) == 0, 0);
	CHECK(mp_rlock_release(P.rlock) == 0, 0);
}

static void
do_sem(void)
{
	int r = mp_sem_acquire(P.sem, MP_MSEC(50));

	if (r == -ETIMEDOUT)
		return;
	CHECK(r == 0, r);
	atomic_fetch_add(&B->sem_in, 1);
	atomic_fetch_sub(&B->sem_in, 1);
	CHECK(mp_sem_release(P.sem) == 0, 0);
}

static void
do_cond(uint64_t *s)
{
	int r = mp_cond_acquire(P.cond, MP_MSEC(200));

	if (r == -ETIMEDOUT)
		return;
	CHECK(r == 0 || r == -EOWNERDEAD, r);
	if (rnd(s) & 1)
		r = mp_cond_notify(P.cond, 1);
	else
		r = mp_cond_notify_all(P.cond);
	CHECK(r >= 0, r);		/* how many it woke */
	r = mp_cond_wait(P.cond, MP_MSEC(5));
	CHECK(r == 0 || r == 1 || r == -EOWNERDEAD, r);
	CHECK(mp_cond_release(P.cond) == 0, 0);
}

static void
do_evset(uint64_t *s)
{
	if (rnd(s) & 1)
		CHECK(mp_event_set(P.ev) == 0, 0);
	else
		CHECK(mp_event_clear(P.ev) == 0, 0);
}

static void
do_evwait(void)
{
	int r = mp_event_wait(P.ev, MP_MSEC(5));

	CHECK(r == 0 || r == 1, r);
}

static void
do_barrier(void)
{
	int r = mp_barrier_wait(P.bar, MP_MSEC(100));

	if (r >= 0) {
		CHECK(r < 2, r);
		return;
	}
	CHECK(r == -ETIMEDOUT || r == -EPIPE, r);
	CHECK(mp_barrier_reset(P.bar) == 0, 0);
}

static void
do_qput(int prod, uint64_t *s)
{
	struct qmsg m;
	uint64_t seq = atomic_fetch_add(&B->q_next[prod], 1);
	size_t len = 16 + rnd(s) % (MSG_MAX - 16 + 1);
	int r;

	if (seq >= SEQ_MAX) {
		atomic_store(&B->q_next[prod], SEQ_MAX);
		struct timespec ts = { 0, 1000000 };
		nanosleep(&ts, NULL);	/* out of seqs: idle until stop */
		return;
	}
	m.prod = (uint32_t)prod;
	m.len = (uint32_t)len;
	m.seq = seq;
	fill(m.pad, len - 16, seq ^ (uint64_t)prod << 40);
	r = mp_queue_put(P.q, &m, len, MP_MSEC(50));
	if (r == -ETIMEDOUT)
		return;
	CHECK(r == 0, r);
	atomic_fetch_or(&B->acked[prod][seq / 64], (uint64_t)1 << seq % 64);
}

static void
note_qmsg(const struct qmsg *m, ssize_t n)
{
	uint64_t bit, old;

	if (n < 16 || m->prod >= NPROD || m->len != (uint64_t)n ||
	    m->seq >= SEQ_MAX ||
	    !filled(m->pad, (size_t)n - 16,
		    m->seq ^ (uint64_t)m->prod << 40)) {
		atomic_fetch_add(&B->q_bad, 1);
		return;
	}
	bit = (uint64_t)1 << m->seq % 64;
	old = atomic_fetch_or(&B->seen[m->prod][m->seq / 64], bit);
	if (old & bit)
		atomic_fetch_add(&B->q_dup, 1);
}

static void
do_qget(uint64_t *s)
{
	struct qmsg m[4];
	size_t lens[4];
	ssize_t r;

	if (rnd(s) & 1) {
		r = mp_queue_get(P.q, &m[0], sizeof(m[0]), MP_MSEC(50));
		if (r == -ETIMEDOUT)
			return;
		CHECK(r >= 0, r);
		note_qmsg(&m[0], r);
		return;
	}
	r = mp_queue_get_many(P.q, m, sizeof(m[0]), lens, 4, MP_MSEC(50));
	if (r == -ETIMEDOUT)
		return;
	CHECK(r >= 1 && r <= 4, r);
	for (ssize_t i = 0; i < r; i++)
		note_qmsg(&m[i], (ssize_t)lens[i]);
}

static void
do_psend(uint64_t *s)
{
	unsigned char buf[PIPE_MSG_MAX];
	uint64_t seq = atomic_fetch_add(&B->p_next, 1) + 1;
	size_t len = 8 + rnd(s) % (PIPE_MSG_MAX - 8 + 1);
	int r;

	memcpy(buf, &seq, 8);
	fill(buf + 8, len - 8, seq);
	r = mp_conn_send_timeout(P.ptx, buf, len, MP_MSEC(50));
	CHECK(r == 0 || r == -ETIMEDOUT, r);
}

static void
do_precv(void)
{
	unsigned char buf[PIPE_MSG_MAX];
	uint64_t seq;
	ssize_t r = mp_conn_recv_timeout(P.prx, buf, sizeof(buf), MP_MSEC(50));

	if (r == -ETIMEDOUT)
		return;
	CHECK(r >= 8, r);
	memcpy(&seq, buf, 8);
	/* Seqs rise: nothing twice, nothing out of order, nothing torn. */
	CHECK(seq > atomic_load(&B->p_last), seq);
	CHECK(filled(buf + 8, (size_t)r - 8, seq), seq);
	atomic_store(&B->p_last, seq);
}

static ssize_t
square(const void *in, size_t in_len, void *out, size_t out_cap)
{
	int64_t v;

	if (in_len != sizeof(v) || out_cap < sizeof(v))
		return -EINVAL;
	memcpy(&v, in, sizeof(v));
	v *= v;
	memcpy(out, &v, sizeof(v));
	return sizeof(v);
}

static int
run_pool(void)
{
	mp_pool_attr a = { .processes = 2 };
	int64_t in[POOL_N], out[POOL_N];
	mp_pool *p;
	int r;

	CHECK(mp_pool_new(&p, &a) == 0, 0);
	for (int i = 0; i < POOL_N; i++)
		in[i] = i;
	while (!stopping()) {
		memset(out, 0, sizeof(out));
		r = mp_pool_map(p, square, in, POOL_N, sizeof(in[0]), out,
				sizeof(out[0]), 0);
		CHECK(r == 0, r);
		for (int i = 0; i < POOL_N; i++)
			CHECK(out[i] == (int64_t)i * i, i);
		atomic_fetch_add(&B->ops[R_POOL], 1);
	}
	CHECK(mp_pool_close(p) == 0, 0);
	CHECK(mp_pool_join(p) == 0, 0);
	mp_pool_free(p);
	return T_PASS;
}

static int
participant(enum role role, int idx)
{
	uint64_t s = (uint64_t)getpid() * 0x9e3779b97f4a7c15ull | 1;

	if (role == R_POOL)
		return run_pool();
	while (!stopping()) {
		switch (role) {
		case R_LOCK: do_lock(); break;
		case R_RLOCK: do_rlock(); break;
		case R_SEM: do_sem(); break;
		case R_COND: do_cond(&s); break;
		case R_EVSET: do_evset(&s); break;
		case R_EVWAIT: do_evwait(); break;
		case R_BARRIER: do_barrier(); break;
		case R_QPUT: do_qput(idx, &s); break;
		case R_QGET: do_qget(&s); break;
		case R_PSEND: do_psend(&s); break;
		case R_PRECV: do_precv(); break;
		default: fail("role", role);
		}
		atomic_fetch_add(&B->ops[role], 1);
	}
	return T_PASS;
}

struct slot {
	enum role role;
	int idx;
	pid_t pid;
};

static pid_t
spawn(const struct slot *sl)
{
	pid_t ppid = getpid(), pid = fork();

	if (pid == 0) {
		/* Nothing outlives a supervisor that fails. */
		if (prctl(PR_SET_PDEATHSIG, SIGKILL) != 0 || getppid() != ppid)
			_exit(T_FAIL);
		_exit(participant(sl->role, sl->idx));
	}
	return pid;
}

static int
find(struct slot *sl, int n, pid_t pid)
{
	for (int i = 0; i < n; i++)
		if (sl[i].pid == pid)
			return i;
	return -1;
}

/* A reaped process: a participant that ended early is a failure. */
static void
reaped(struct slot *sl, int n, pid_t pid, int st)
{
	int i = find(sl, n, pid);

	if (i < 0) {
		atomic_fetch_add(&B->orphans, 1);
		return;
	}
	if (!atomic_load(&B->stop) ||
	    !(WIFEXITED(st) && WEXITSTATUS(st) == T_PASS)) {
		int zero = 0;

		if (atomic_compare_exchange_strong(&B->failed, &zero, 1))
			snprintf(B->why, sizeof(B->why),
				 "%s participant ended: status %#x",
				 role_name[sl[i].role], st);
	}
	sl[i].pid = 0;
}

static int
supervisor(void *arg)
{
	int64_t dur = *(int64_t *)arg, end, t;
	struct slot sl[NPART];
	uint64_t s = (uint64_t)t_now() | 1;
	int n = 0, st;
	pid_t pid;

	T_CHECK(prctl(PR_SET_CHILD_SUBREAPER, 1) == 0);
	for (int r = 0; r < R_NROLES; r++)
		for (int k = 0; k < role_count[r]; k++) {
			sl[n] = (struct slot){ (enum role)r, k, 0 };
			sl[n].pid = spawn(&sl[n]);
			T_CHECK(sl[n].pid > 0);
			n++;
		}
	T_CHECK(n == NPART);

	end = t_now() + dur;
	while (t_now() < end) {
		struct timespec ts = { 0, (long)(1 + rnd(&s) % 8) * 1000000 };
		int i = (int)(rnd(&s) % (uint64_t)n);

		nanosleep(&ts, NULL);	/* the killer's pace */
		while ((pid = waitpid(-1, &st, WNOHANG)) > 0)
			reaped(sl, n, pid, st);
		for (int k = 0; k < n; k++)
			if (sl[k].pid == 0)
				T_CHECK((sl[k].pid = spawn(&sl[k])) > 0);
		/* Our unreaped child: kill(pid) cannot hit another. */
		T_CHECK(kill(sl[i].pid, SIGKILL) == 0);
		T_CHECK(waitpid(sl[i].pid, &st, 0) == sl[i].pid);
		if (!WIFSIGNALED(st)) {
			/* It had ended by itself, before the kill. */
			reaped(sl, n, sl[i].pid, st);
			continue;
		}
		atomic_fetch_add(&B->kills[sl[i].role], 1);
		T_CHECK((sl[i].pid = spawn(&sl[i])) > 0);
		atomic_fetch_add(&B->respawns, 1);
	}

	/* Stop: every participant finishes by itself. */
	atomic_store(&B->stop, 1);
	t = t_now() + (int64_t)20 * 1000000000;
	for (;;) {
		pid = waitpid(-1, &st, WNOHANG);
		if (pid > 0) {
			reaped(sl, n, pid, st);
			continue;
		}
		if (pid < 0 && errno == ECHILD)
			break;
		if (t_now() > t) {
			/* Left over: count, kill and reap them. */
			for (int k = 0; k < n; k++)
				if (sl[k].pid > 0)
					kill(sl[k].pid, SIGKILL);
			atomic_fetch_add(&B->leftover, 1);
			while (waitpid(-1, &st, 0) > 0)
				;
			break;
		}
		struct timespec ts = { 0, 2000000 };
		nanosleep(&ts, NULL);
	}
	return T_PASS;
}

/*
 * The shared mappings of this process: mproc's regions are memfd
 * mappings.  (Counting every line would count the allocator's and the
 * sanitizers' or valgrind's own mappings, which come and go.)
 */
static int
map_lines(void)
{
	FILE *f = fopen("/proc/self/maps", "r");
	char line[512];
	int n = 0;

	if (f == NULL)
		return -1;
	while (fgets(line, sizeof(line), f) != NULL)
		n += strstr(line, "/memfd:") != NULL;
	fclose(f);
	return n;
}

static void
prims_new(void)
{
	cr_assert_eq(mp_lock_new(&P.lock), 0);
	cr_assert_eq(mp_rlock_new(&P.rlock), 0);
	cr_assert_eq(mp_sem_new(&P.sem, 2), 0);
	cr_assert_eq(mp_rlock_new(&P.clock), 0);
	cr_assert_eq(mp_cond_new(&P.cond, P.clock), 0);
	cr_assert_eq(mp_event_new(&P.ev), 0);
	cr_assert_eq(mp_barrier_new(&P.bar, 2), 0);
	cr_assert_eq(mp_queue_new(&P.q, 64, MSG_MAX), 0);
	cr_assert_eq(mp_pipe_new(&P.prx, &P.ptx, false, 16384), 0);
}

static void
prims_free(void)
{
	mp_conn_close(P.prx);
	mp_conn_close(P.ptx);
	mp_queue_free(P.q);
	mp_barrier_free(P.bar);
	mp_event_free(P.ev);
	mp_cond_free(P.cond);
	mp_rlock_free(P.clock);
	mp_sem_free(P.sem);
	mp_rlock_free(P.rlock);
	mp_lock_free(P.lock);
	memset(&P, 0, sizeof(P));
}

static int
barrier_peer(void *arg)
{
	(void)arg;
	int r = mp_barrier_wait(P.bar, MP_SEC(10));

	return r == 0 || r == 1 ? T_PASS : T_FAIL;
}

/* Each primitive still works, with a timeout. */
static void
check_not_wedged(void)
{
	unsigned char buf[PIPE_MSG_MAX];
	struct qmsg m;
	int r;

	r = mp_lock_acquire(P.lock, MP_SEC(5));
	cr_assert(r == 0 || r == -EOWNERDEAD, "lock: %d", r);
	cr_assert_eq(mp_lock_release(P.lock), 0);
	r = mp_rlock_acquire(P.rlock, MP_SEC(5));
	cr_assert(r == 0 || r == -EOWNERDEAD, "rlock: %d", r);
	cr_assert_eq(mp_rlock_release(P.rlock), 0);

	/* Holders killed with a permit took it along: give one back. */
	if (mp_sem_value(P.sem) == 0)
		cr_assert_eq(mp_sem_release(P.sem), 0);
	cr_assert_eq(mp_sem_acquire(P.sem, MP_SEC(5)), 0);
	cr_assert_eq(mp_sem_release(P.sem), 0);

	r = mp_cond_acquire(P.cond, MP_SEC(5));
	cr_assert(r == 0 || r == -EOWNERDEAD, "cond: %d", r);
	/* A signal meant for a killed waiter may wake us: 1 is fair. */
	r = mp_cond_wait(P.cond, MP_MSEC(10));
	cr_assert(r == 0 || r == 1, "cond wait: %d", r);
	cr_assert_geq(mp_cond_notify_all(P.cond), 0);
	cr_assert_eq(mp_cond_release(P.cond), 0);

	cr_assert_eq(mp_event_set(P.ev), 0);
	cr_assert_eq(mp_event_wait(P.ev, MP_SEC(5)), 1);

	cr_assert_eq(mp_barrier_reset(P.bar), 0);
	pid_t pid = t_spawn(barrier_peer, NULL);
	r = mp_barrier_wait(P.bar, MP_SEC(10));
	cr_assert(r == 0 || r == 1, "barrier: %d", r);
	t_wait_exit(pid, T_PASS);

	memset(&m, 0, sizeof(m));
	cr_assert_eq(mp_queue_put(P.q, &m, sizeof(m), MP_SEC(5)), 0);
	cr_assert_eq(mp_queue_get(P.q, &m, sizeof(m), MP_SEC(5)),
		     (ssize_t)sizeof(m));

	/* Senders' messages are >= 8 bytes: drain them up to ours. */
	cr_assert_eq(mp_conn_send_timeout(P.ptx, "ok", 3, MP_SEC(5)), 0);
	for (;;) {
		ssize_t n = mp_conn_recv_timeout(P.prx, buf, sizeof(buf),
						 MP_SEC(5));

		cr_assert(n == 3 || n >= 8, "pipe: %zd", n);
		if (n == 3)
			break;
	}
}

static int64_t
chaos_ns(void)
{
	const char *e = getenv("CHAOS_SECONDS");
	double s = e != NULL ? strtod(e, NULL) : 3.0;

	if (!(s > 0))
		s = 3.0;
	return (int64_t)(s * 1e9);
}

/* Unseen, acked messages; drains the queue first. */
static void
audit_queue(uint64_t *missing, uint64_t *unacked, uint64_t *total)
{
	struct qmsg m;
	ssize_t n;

	while ((n = mp_queue_get(P.q, &m, sizeof(m), MP_NOWAIT)) >= 0)
		note_qmsg(&m, n);
	cr_assert_eq(n, -EAGAIN);
	*missing = *unacked = *total = 0;
	for (int p = 0; p < NPROD; p++) {
		uint64_t hi = atomic_load(&B->q_next[p]);

		if (hi > SEQ_MAX)
			hi = SEQ_MAX;
		*total += hi;
		for (uint64_t q = 0; q < hi; q++) {
			uint64_t bit = (uint64_t)1 << q % 64;

			if (atomic_load(&B->seen[p][q / 64]) & bit)
				continue;
			if (atomic_load(&B->acked[p][q / 64]) & bit)
				(*missing)++;
			else
				(*unacked)++;
		}
	}
}

T_TEST(chaos, every_primitive_under_sigkill, .timeout = 600)
{
	int64_t dur = chaos_ns();
	uint64_t missing, unacked, total, lost;
	long qkills, kills = 0;
	int maps0, maps1;
	pid_t sup;

	/* Warm up the handle pools, so that the mapping count is fair. */
	prims_new();
	prims_free();
	maps0 = map_lines();

	B = mmap(NULL, sizeof(*B), PROT_READ | PROT_WRITE,
		 MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	cr_assert_neq(B, MAP_FAILED);
	prims_new();
	cr_assert_gt(map_lines(), maps0, "the primitives map no memfd?");

	sup = t_spawn(supervisor, &dur);
	cr_assert_eq(t_wait_status(sup, (int)(dur / 1000000) + 60000),
		     T_PASS);
	cr_assert_eq(atomic_load(&B->failed), 0, "%s", B->why);
	cr_assert_eq(atomic_load(&B->leftover), 0, "processes left over");

	for (int r = 0; r < R_NROLES; r++) {
		cr_log_info("%-10s %8ld ops %4ld kills", role_name[r],
			    atomic_load(&B->ops[r]),
			    atomic_load(&B->kills[r]));
		kills += atomic_load(&B->kills[r]);
	}
	cr_assert_gt(kills, 0, "the killer killed no one");

	/* Drain the queue first: the wedge check puts and gets its own. */
	audit_queue(&missing, &unacked, &total);
	check_not_wedged();
	lost = mp_queue_lost(P.q);
	qkills = atomic_load(&B->kills[R_QPUT]) + atomic_load(&B->kills[R_QGET]);
	cr_log_info("queue: %llu sent, %llu lost (counted), %llu missing, "
		    "%llu unacked, %ld kills of users; orphans %ld",
		    (unsigned long long)total, (unsigned long long)lost,
		    (unsigned long long)missing, (unsigned long long)unacked,
		    qkills, atomic_load(&B->orphans));
	cr_assert_gt(total, 0);
	cr_assert_eq(atomic_load(&B->q_dup), 0, "duplicated messages");
	cr_assert_eq(atomic_load(&B->q_bad), 0, "corrupt messages");
	cr_assert_leq(lost, (uint64_t)qkills);
	/*
	 * An acked put goes missing only with a consumer killed holding it
	 * (up to 4 from a get_many, before it noted them).
	 */
	cr_assert_leq(missing, 4 * (uint64_t)atomic_load(&B->kills[R_QGET]));

	prims_free();
	cr_assert_eq(munmap(B, sizeof(*B)), 0);
	B = NULL;
	maps1 = map_lines();
	cr_assert_eq(maps1, maps0, "memfd mappings: %d before, %d after",
		     maps0, maps1);
	/* No process of ours is left: no child to wait for. */
	cr_assert_eq(waitpid(-1, NULL, WNOHANG), -1);
	cr_assert_eq(errno, ECHILD);
}
