/* SPDX-License-Identifier: MIT */
/*
 * Theory of operation
 *
 * A process is a heap handle in the process that made it: the target, the
 * name, the daemon flag, and once started the child's pid and a pidfd.
 * No shared memory is involved; the kernel is the source of truth.
 *
 * Start.  fork(), then pidfd_open() in the parent.  The pid cannot be reused
 * between the two calls because only this process may reap the child, and
 * it has not.  Everything after that (join, is_alive, exitcode, signals)
 * goes through the pidfd, so a stale pid is never signalled or waited for.
 * Join sleeps in ppoll() on the pidfd and reaps with waitid(P_PIDFD): no
 * SIGCHLD handler is installed and the application's own is left alone.
 *
 * Daemons.  A daemon child asks for PR_SET_PDEATHSIG(SIGKILL) and then
 * checks that its parent is still the process that forked it: if the
 * parent died between fork() and prctl(), the child would otherwise be
 * orphaned with no death signal armed, so it kills itself.  The kernel
 * sends the signal when the forking thread dies, so a daemon started from
 * a thread dies with that thread (documented in process.h).
 *
 * Exit.  Each process keeps a list of the children it started and has not
 * reaped.  At normal exit (an atexit handler, and the end of a child's
 * target) daemon children get SIGTERM, then SIGKILL after a grace period,
 * and the others are joined: Python's rule, except that a daemon ignoring
 * SIGTERM cannot hang the exit.
 *
 * Detach.  mp_process_free() of a running child hands its pidfd to a small
 * reaper thread that blocks in waitid() until the child ends, so no zombie
 * is left and the child is never signalled.
 *
 * Without pidfds.  Where pidfd_open() is ENOSYS (valgrind 3.19 does not
 * know syscall 434; kernels before 5.3), start keeps no fd and works on
 * the pid: the starter still owns the unreaped child, so kill(pid) and
 * waitid(P_PID) cannot reach a reused pid, as at start.  A timed join
 * polls waitid(WNOHANG | WNOWAIT) with naps of 1 ms growing to 10 ms, and
 * mp_process_sentinel() is -ENOSYS.  Only the starter signals such a
 * child (a copy inherited by fork gets -ECHILD), since only it owns the
 * pid.
 *
 * Fork safety.  The per-process state (name, identity, child list, lock) is
 * rebuilt in every child: explicitly in a child made by mp_process_start,
 * and by a pthread_atfork() child handler after any other fork(), because
 * the parent's children are not the child's to terminate or join.
 *
 * Crash analysis.  Nothing is shared between processes, so a process that
 * dies at any instruction leaves the others nothing to repair: its children
 * see their parent die (daemons are killed by the kernel, the others are
 * re-parented) and its pidfds close with it.
 */
#include "lib/internal.h"

#include <mproc/process.h>

#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdint.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include "lib/futex.h"

#define PROCESS_MAGIC 0x6d707072u	/* "mppr" */
#define DAEMON_GRACE MP_MSEC(200)

enum pstate { P_NEW, P_RUNNING, P_ENDED };

struct mp_process {
	uint32_t magic;
	enum pstate state;
	mp_target target;
	void *arg;
	char *name;
	int daemon;
	pid_t pid;
	pid_t starter;		/* the process that started it: the only reaper */
	int pidfd;		/* -1 without pidfds (see "Without pidfds") */
	bool nopidfd;		/* started where pidfd_open() is ENOSYS */
	int exitcode;
	unsigned number;	/* N of Process-N, also for named processes */
	struct mp_process *next; /* in self.children while running */
};

/* This process's own identity and children; rebuilt after every fork. */
static struct {
	pthread_mutex_t lock;
	const char *name;
	char *identity;		/* "" in the main process, "3" or "3:1" below */
	unsigned counter;	/* for default names */
	int daemon;
	pid_t parent;		/* 0 unless started by mp_process_start */
	struct mp_process *children;
} self = {
	.lock = PTHREAD_MUTEX_INITIALIZER,
	.name = "MainProcess",
	.identity = NULL,
};

static pthread_once_t self_once = PTHREAD_ONCE_INIT;

static void run_exit_cleanup(void);

static void
atfork_child(void)
{
	/* Whatever another thread held at fork time is gone with it. */
	pthread_mutex_init(&self.lock, NULL);
	self.children = NULL;
}

static void
self_init(void)
{
	pthread_atfork(NULL, NULL, atfork_child);
	atexit(run_exit_cleanup);
}

static void
self_ensure(void)
{
	pthread_once(&self_once, self_init);
}

static int
sys_pidfd_open(pid_t pid)
{
	return (int)syscall(SYS_pidfd_open, pid, 0);
}

static int
sys_pidfd_send_signal(int fd, int sig)
{
	return (int)syscall(SYS_pidfd_send_signal, fd, sig, NULL, 0);
}

/* waitid() on p's child, through its pidfd or (without one) its pid. */
static int
proc_waitid(const struct mp_process *p, siginfo_t *si, int flags)
{
	if (p->nopidfd)
		return waitid(P_PID, (id_t)p->pid, si, flags);
	return waitid(P_PIDFD, (id_t)p->pidfd, si, flags);
}

static int
proc_signal(const struct mp_process *p, int sig)
{
	if (p->nopidfd)
		return kill(p->pid, sig);
	return sys_pidfd_send_signal(p->pidfd, sig);
}

static int wait_readable(int fd, int64_t deadline);

/*
 * Sleep until p's child has ended or the deadline passes: on its pidfd,
 * or without one in naps (the child is unreaped, so WNOWAIT sees it).
 */
static int
proc_wait_end(const struct mp_process *p, int64_t deadline)
{
	int64_t nap = MP_MSEC(1), left;
	siginfo_t si;

	if (!p->nopidfd)
		return wait_readable(p->pidfd, deadline);
	for (;;) {
		memset(&si, 0, sizeof(si));
		if (waitid(P_PID, (id_t)p->pid, &si,
			   WEXITED | WNOHANG | WNOWAIT) < 0) {
			if (errno == EINTR)
				continue;
			return 0;	/* ECHILD: reap() will see it */
		}
		if (si.si_pid != 0)
			return 0;
		left = mp__remaining(deadline);
		if (left == 0)
			return -ETIMEDOUT;
		if (left > 0 && left < nap)
			nap = left;
		struct timespec ts = { nap / 1000000000, nap % 1000000000 };
		nanosleep(&ts, NULL);	/* EINTR: just look again */
		if (nap < MP_MSEC(10))
			nap *= 2;
	}
}

static bool
valid(const struct mp_process *p)
{
	return p != NULL && p->magic == PROCESS_MAGIC;
}

static void
list_remove_locked(struct mp_process *p)
{
	for (struct mp_process **pp = &self.children; *pp; pp = &(*pp)->next) {
		if (*pp == p) {
			*pp = p->next;
			break;
		}
	}
	p->next = NULL;
}

static int
decode_status(const siginfo_t *si)
{
	return si->si_code == CLD_EXITED ? si->si_status : -si->si_status;
}

/*
 * Reap p if it has ended (flags: WNOHANG, or 0 to wait).  Returns true when
 * it has ended.  Under self.lock, so that concurrent joins reap once.
 */
static bool
reap(struct mp_process *p, int flags)
{
	siginfo_t si;
	bool ended;

	pthread_mutex_lock(&self.lock);
	if (p->state == P_RUNNING) {
		memset(&si, 0, sizeof(si));
		if (proc_waitid(p, &si, WEXITED | flags) == 0 &&
		    si.si_pid != 0) {
			p->exitcode = decode_status(&si);
			p->state = P_ENDED;
			list_remove_locked(p);
		} else if (errno == ECHILD) {
			/* Reaped by someone else (waitpid(-1) in the app). */
			p->exitcode = 0;
			p->state = P_ENDED;
			list_remove_locked(p);
		}
	}
	ended = p->state == P_ENDED;
	pthread_mutex_unlock(&self.lock);
	return ended;
}

/* Sleep on the pidfd until it is readable or the deadline passes. */
static int
wait_readable(int fd, int64_t deadline)
{
	struct pollfd pfd = { .fd = fd, .events = POLLIN };
	struct timespec ts, *tp;

	for (;;) {
		int64_t left = mp__remaining(deadline);
		tp = NULL;
		if (left >= 0) {
			ts.tv_sec = left / 1000000000;
			ts.tv_nsec = left % 1000000000;
			tp = &ts;
		}
		int rc = ppoll(&pfd, 1, tp, NULL);
		if (rc > 0)
			return 0;
		if (rc == 0)
			return -ETIMEDOUT;
		if (errno != EINTR)
			return -errno;
	}
}

int
mp_process_new(mp_process **out, mp_target target, void *arg,
	       const mp_process_attr *attr)
{
	struct mp_process *p;
	unsigned n;
	int daemon = attr ? attr->daemon : 0;

	if (out == NULL || target == NULL || daemon < -1 || daemon > 1)
		return -EINVAL;
	self_ensure();
	if ((p = calloc(1, sizeof(*p))) == NULL)
		return -ENOMEM;
	pthread_mutex_lock(&self.lock);
	n = ++self.counter;
	if (daemon == -1)
		daemon = self.daemon;
	pthread_mutex_unlock(&self.lock);
	if (attr && attr->name) {
		p->name = strdup(attr->name);
	} else {
		const char *id = self.identity ? self.identity : "";
		size_t len = strlen(id) + 32;
		if ((p->name = malloc(len)) != NULL)
			snprintf(p->name, len, "Process-%s%s%u", id,
				 *id ? ":" : "", n);
	}
	if (p->name == NULL) {
		free(p);
		return -ENOMEM;
	}
	p->magic = PROCESS_MAGIC;
	p->state = P_NEW;
	p->target = target;
	p->arg = arg;
	p->daemon = daemon;
	p->number = n;
	p->pidfd = -1;
	*out = p;
	return 0;
}

/* Identity of a child: this process's identity plus the child's number. */
static char *
child_identity(const struct mp_process *p)
{
	const char *id = self.identity ? self.identity : "";
	size_t len = strlen(id) + 16;
	char *s = malloc(len);

	if (s != NULL)
		snprintf(s, len, "%s%s%u", id, *id ? ":" : "", p->number);
	return s;
}

static _Noreturn void
child_main(struct mp_process *p, pid_t parent, char *identity)
{
	int rc;

	if (p->daemon) {
		/* Armed after fork: check the parent did not die before it. */
		if (prctl(PR_SET_PDEATHSIG, SIGKILL) < 0 || getppid() != parent)
			raise(SIGKILL);
	}
	self.name = p->name;
	self.identity = identity;
	self.counter = 0;
	self.daemon = p->daemon;
	self.parent = parent;
	self.children = NULL;
	rc = p->target(p->arg);
	fflush(NULL);
	run_exit_cleanup();
	/* _exit: the parent's atexit handlers are not ours to run. */
	_exit(rc & 0xff);
}

int
mp_process_start(mp_process *p)
{
	pid_t parent, pid;
	char *identity;
	int fd, err;

	if (!valid(p) || p->state != P_NEW)
		return -EINVAL;
	self_ensure();
	if ((identity = child_identity(p)) == NULL)
		return -ENOMEM;
	parent = getpid();
	fflush(NULL);	/* Or buffered output would print twice. */
	pid = fork();
	if (pid < 0) {
		err = errno == ENOMEM ? -ENOMEM : -EAGAIN;
		free(identity);
		return err;
	}
	if (pid == 0)
		child_main(p, parent, identity);
	free(identity);
	fd = sys_pidfd_open(pid);
	if (fd < 0 && errno == ENOSYS) {
		p->nopidfd = true;	/* see "Without pidfds" */
	} else if (fd < 0) {
		/* Unreaped, so the pid is still ours to kill and reap. */
		err = -errno;
		kill(pid, SIGKILL);
		waitpid(pid, NULL, 0);
		return err;
	}
	pthread_mutex_lock(&self.lock);
	p->pid = pid;
	p->starter = parent;
	p->pidfd = fd;
	p->state = P_RUNNING;
	p->next = self.children;
	self.children = p;
	pthread_mutex_unlock(&self.lock);
	return 0;
}

int
mp_process_join(mp_process *p, int64_t timeout_ns)
{
	int64_t deadline;
	int rc;

	if (!valid(p) || p->state == P_NEW || mp__deadline(timeout_ns, &deadline))
		return -EINVAL;
	if (p->state == P_ENDED)
		return 0;
	if (p->starter != getpid())
		return -ECHILD;
	for (;;) {
		if (reap(p, WNOHANG))
			return 0;
		if (timeout_ns == MP_NOWAIT)
			return -EAGAIN;
		if ((rc = proc_wait_end(p, deadline)) < 0)
			return reap(p, WNOHANG) ? 0 : rc;
	}
}

bool
mp_process_is_alive(mp_process *p)
{
	if (!valid(p) || p->state != P_RUNNING || p->starter != getpid())
		return false;
	return !reap(p, WNOHANG);
}

pid_t
mp_process_pid(const mp_process *p)
{
	return valid(p) ? p->pid : 0;
}

int
mp_process_exitcode(const mp_process *p, int *code)
{
	siginfo_t si;

	if (!valid(p) || code == NULL || p->state == P_NEW)
		return -EINVAL;
	if (p->state == P_RUNNING) {
		/* Peek without reaping: p is const, join still reaps. */
		memset(&si, 0, sizeof(si));
		if (proc_waitid(p, &si, WEXITED | WNOHANG | WNOWAIT) < 0 ||
		    si.si_pid == 0)
			return -EAGAIN;
		*code = decode_status(&si);
		return 0;
	}
	*code = p->exitcode;
	return 0;
}

static int
send_signal(mp_process *p, int sig)
{
	if (!valid(p) || p->state == P_NEW)
		return -EINVAL;
	if (p->state == P_ENDED)
		return 0;
	/* Only the pid's owner may signal it (see "Without pidfds"). */
	if (p->nopidfd && p->starter != getpid())
		return -ECHILD;
	/* ESRCH: it has ended, which is what the caller wanted. */
	if (proc_signal(p, sig) < 0 && errno != ESRCH)
		return -errno;
	return 0;
}

int
mp_process_terminate(mp_process *p)
{
	return send_signal(p, SIGTERM);
}

int
mp_process_kill(mp_process *p)
{
	return send_signal(p, SIGKILL);
}

const char *
mp_process_name(const mp_process *p)
{
	return valid(p) ? p->name : NULL;
}

int
mp_process_sentinel(const mp_process *p)
{
	if (!valid(p) || p->state == P_NEW)
		return -EINVAL;
	if (p->nopidfd)
		return -ENOSYS;
	return p->pidfd;
}

/* arg: a pidfd (>= 0), or minus the pid of a child without one. */
static void *
reaper_main(void *arg)
{
	intptr_t v = (intptr_t)arg;
	siginfo_t si;

	if (v < 0) {
		while (waitid(P_PID, (id_t)-v, &si, WEXITED) < 0 &&
		       errno == EINTR)
			;
		return NULL;
	}
	while (waitid(P_PIDFD, (id_t)v, &si, WEXITED) < 0 && errno == EINTR)
		;
	close((int)v);
	return NULL;
}

/*
 * Reap a detached child in the background (fd: as reaper_main's arg);
 * false if no thread could run.
 */
static bool
detach(intptr_t fd)
{
	pthread_attr_t attr;
	pthread_t t;
	sigset_t all, old;
	bool ok;

	if (pthread_attr_init(&attr))
		return false;
	pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
	/* It only waits: a small stack, with room for sanitizer runtimes. */
	pthread_attr_setstacksize(&attr, 256 * 1024);
	/* The reaper must not take the application's signals. */
	sigfillset(&all);
	pthread_sigmask(SIG_SETMASK, &all, &old);
	ok = pthread_create(&t, &attr, reaper_main, (void *)(intptr_t)fd) == 0;
	pthread_sigmask(SIG_SETMASK, &old, NULL);
	pthread_attr_destroy(&attr);
	return ok;
}

void
mp_process_free(mp_process *p)
{
	if (!valid(p))
		return;
	if (p->state == P_RUNNING && p->starter == getpid() &&
	    !reap(p, WNOHANG)) {
		pthread_mutex_lock(&self.lock);
		list_remove_locked(p);
		pthread_mutex_unlock(&self.lock);
		if (detach(p->nopidfd ? -(intptr_t)p->pid : p->pidfd))
			p->pidfd = -1;
		else
			/* No thread: wait here rather than leave a zombie. */
			proc_waitid(p, &(siginfo_t){0}, WEXITED);
	} else if (p->state == P_RUNNING) {
		/* Not ours (a copy inherited by fork): just forget it. */
		pthread_mutex_lock(&self.lock);
		list_remove_locked(p);
		pthread_mutex_unlock(&self.lock);
	}
	if (p->pidfd >= 0)
		close(p->pidfd);
	p->magic = 0;
	free(p->name);
	free(p);
}

const char *
mp_current_process_name(void)
{
	return self.name;
}

pid_t
mp_parent_pid(void)
{
	return self.parent ? self.parent : getppid();
}

/*
 * Python's exit rule: terminate daemon children, join the others.  A
 * daemon that ignores SIGTERM is killed after DAEMON_GRACE, so exit never
 * hangs on one.
 */
static void
run_exit_cleanup(void)
{
	struct mp_process *p, *next;
	int64_t deadline;

	pthread_mutex_lock(&self.lock);
	p = self.children;
	pthread_mutex_unlock(&self.lock);
	if (p == NULL)
		return;
	for (struct mp_process *q = p; q; q = q->next) {
		if (q->daemon)
			proc_signal(q, SIGTERM);
	}
	mp__deadline(DAEMON_GRACE, &deadline);
	for (; p; p = next) {
		next = p->next;
		if (p->daemon && proc_wait_end(p, deadline) < 0)
			proc_signal(p, SIGKILL);
		reap(p, 0);
	}
}

