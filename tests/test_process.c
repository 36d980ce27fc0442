/* SPDX-License-Identifier: MIT */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <string.h>
#include <sys/syscall.h>
#include <sys/wait.h>

#include <criterion/criterion.h>
#include <mproc.h>

#include "tests/helpers.h"

T_SUITE(process);

static int
ret_arg(void *arg)
{
	return (int)(intptr_t)arg;
}

static int
raise_arg(void *arg)
{
	raise((int)(intptr_t)arg);
	return 100;
}

/* Sleeps until its pipe says go (or forever). */
static int
wait_pipe(void *arg)
{
	struct t_sync *s = arg;

	return t_sync_wait(s, 60000) == 0 ? 0 : 3;
}

static int
pidfd_of(pid_t pid)
{
	return (int)syscall(SYS_pidfd_open, pid, 0);
}

/* True when pid (any process, not only a child) has ended within ms. */
static bool
gone_within(pid_t pid, int ms)
{
	int fd = pidfd_of(pid);

	if (fd < 0 && errno == ENOSYS) {
		/* No pidfds (valgrind): look until it is gone or a zombie. */
		int64_t end = t_now() + (int64_t)T_MS(ms) * 1000000;

		do {
			char path[64], st[256];
			FILE *f;

			snprintf(path, sizeof(path), "/proc/%d/stat", (int)pid);
			if ((f = fopen(path, "r")) == NULL)
				return true;
			st[0] = 0;
			if (fgets(st, sizeof(st), f) == NULL)
				st[0] = 0;
			fclose(f);
			char *rp = strrchr(st, ')');
			if (rp == NULL || rp[1] == 0 || rp[2] == 'Z' ||
			    rp[2] == 'X')
				return true;
			usleep(1000);
		} while (t_now() < end);
		return false;
	}
	if (fd < 0)
		return errno == ESRCH;
	struct pollfd p = { .fd = fd, .events = POLLIN };
	int r = poll(&p, 1, T_MS(ms));
	close(fd);
	return r == 1;
}

T_TEST(process, bad_arguments_are_einval)
{
	mp_process *p = NULL;
	mp_process_attr bad = { .daemon = 2 };
	int code;

	cr_assert_eq(mp_process_new(NULL, ret_arg, NULL, NULL), -EINVAL);
	cr_assert_eq(mp_process_new(&p, NULL, NULL, NULL), -EINVAL);
	cr_assert_eq(mp_process_new(&p, ret_arg, NULL, &bad), -EINVAL);
	cr_assert_null(p);
	cr_assert_eq(mp_process_start(NULL), -EINVAL);
	cr_assert_eq(mp_process_join(NULL, 0), -EINVAL);
	cr_assert_eq(mp_process_is_alive(NULL), false);
	cr_assert_eq(mp_process_pid(NULL), 0);
	cr_assert_eq(mp_process_exitcode(NULL, &code), -EINVAL);
	cr_assert_eq(mp_process_terminate(NULL), -EINVAL);
	cr_assert_eq(mp_process_kill(NULL), -EINVAL);
	cr_assert_null(mp_process_name(NULL));
	cr_assert_eq(mp_process_sentinel(NULL), -EINVAL);
	mp_process_free(NULL);

	cr_assert_eq(mp_process_new(&p, ret_arg, NULL, NULL), 0);
	/* Before start: nothing to join, signal, or ask. */
	cr_assert_eq(mp_process_join(p, MP_FOREVER), -EINVAL);
	cr_assert_eq(mp_process_exitcode(p, &code), -EINVAL);
	cr_assert_eq(mp_process_exitcode(p, NULL), -EINVAL);
	cr_assert_eq(mp_process_terminate(p), -EINVAL);
	cr_assert_eq(mp_process_kill(p), -EINVAL);
	cr_assert_eq(mp_process_sentinel(p), -EINVAL);
	cr_assert_eq(mp_process_pid(p), 0);
	cr_assert_eq(mp_process_is_alive(p), false);
	cr_assert_eq(mp_process_start(p), 0);
	cr_assert_eq(mp_process_join(p, -2), -EINVAL);
	cr_assert_eq(mp_process_join(p, INT64_MIN), -EINVAL);
	cr_assert_eq(mp_process_join(p, MP_FOREVER), 0);
	mp_process_free(p);
}

T_TEST(process, start_twice_and_after_end_is_einval)
{
	mp_process *p;

	cr_assert_eq(mp_process_new(&p, ret_arg, NULL, NULL), 0);
	cr_assert_eq(mp_process_start(p), 0);
	cr_assert_eq(mp_process_start(p), -EINVAL);
	cr_assert_eq(mp_process_join(p, MP_FOREVER), 0);
	cr_assert_eq(mp_process_start(p), -EINVAL);
	cr_assert_eq(mp_process_join(p, MP_FOREVER), 0, "join again is fine");
	mp_process_free(p);
}

static void
check_exit(mp_target fn, intptr_t arg, int want)
{
	mp_process *p;
	int code = 12345;

	cr_assert_eq(mp_process_new(&p, fn, (void *)arg, NULL), 0);
	cr_assert_eq(mp_process_start(p), 0);
	cr_assert_gt(mp_process_pid(p), 0);
	cr_assert_eq(mp_process_join(p, MP_SEC(10)), 0);
	cr_assert_eq(mp_process_exitcode(p, &code), 0);
	cr_assert_eq(code, want, "exit code %d, want %d", code, want);
	cr_assert_eq(mp_process_is_alive(p), false);
	mp_process_free(p);
}

T_TEST(process, exit_codes_follow_python)
{
	check_exit(ret_arg, 0, 0);
	check_exit(ret_arg, 7, 7);
	check_exit(ret_arg, 256 + 3, 3);
	check_exit(raise_arg, SIGKILL, -9);
	check_exit(raise_arg, SIGTERM, -15);
}

T_TEST(process, join_timeout_is_honoured)
{
	struct t_sync s;
	mp_process *p;
	int code;

	t_sync_init(&s);
	cr_assert_eq(mp_process_new(&p, wait_pipe, &s, NULL), 0);
	cr_assert_eq(mp_process_start(p), 0);
	cr_assert_eq(mp_process_is_alive(p), true);
	cr_assert_eq(mp_process_exitcode(p, &code), -EAGAIN);
	cr_assert_eq(mp_process_join(p, MP_NOWAIT), -EAGAIN);
	for (int i = 0; i < 3; i++) {
		int64_t t0 = t_now();
		cr_assert_eq(mp_process_join(p, MP_MSEC(40)), -ETIMEDOUT);
		int64_t took = t_now() - t0;
		cr_assert_geq(took, MP_MSEC(40));
		cr_assert_lt(took, MP_MSEC(40) + MP_MSEC(T_MS(15)), "took %lld us",
			     (long long)took / 1000);
	}
	t_sync_signal(&s);
	cr_assert_eq(mp_process_join(p, MP_SEC(10)), 0);
	cr_assert_eq(mp_process_exitcode(p, &code), 0);
	cr_assert_eq(code, 0);
	mp_process_free(p);
	t_sync_fini(&s);
}

T_TEST(process, terminate_and_kill_then_exitcode)
{
	struct t_sync s;
	mp_process *p, *q;
	int code;

	t_sync_init(&s);
	cr_assert_eq(mp_process_new(&p, wait_pipe, &s, NULL), 0);
	cr_assert_eq(mp_process_new(&q, wait_pipe, &s, NULL), 0);
	cr_assert_eq(mp_process_start(p), 0);
	cr_assert_eq(mp_process_start(q), 0);
	cr_assert_eq(mp_process_terminate(p), 0);
	cr_assert_eq(mp_process_kill(q), 0);
	cr_assert_eq(mp_process_join(p, MP_SEC(10)), 0);
	cr_assert_eq(mp_process_join(q, MP_SEC(10)), 0);
	cr_assert_eq(mp_process_exitcode(p, &code), 0);
	cr_assert_eq(code, -SIGTERM);
	cr_assert_eq(mp_process_exitcode(q, &code), 0);
	cr_assert_eq(code, -SIGKILL);
	/* Signalling an ended process is a harmless no-op. */
	cr_assert_eq(mp_process_terminate(p), 0);
	cr_assert_eq(mp_process_kill(q), 0);
	mp_process_free(p);
	mp_process_free(q);
	t_sync_fini(&s);
}

T_TEST(process, sentinel_becomes_readable_at_exit)
{
	struct t_sync s;
	mp_process *p;

	t_sync_init(&s);
	cr_assert_eq(mp_process_new(&p, wait_pipe, &s, NULL), 0);
	cr_assert_eq(mp_process_start(p), 0);
	int fd = mp_process_sentinel(p);
	if (fd == -ENOSYS) {
		/* No pidfd_open here (valgrind): the documented answer. */
		t_sync_signal(&s);
		cr_assert_eq(mp_process_join(p, MP_SEC(T_MS(10))), 0);
		mp_process_free(p);
		t_sync_fini(&s);
		cr_skip_test("pidfd_open is ENOSYS: no sentinel");
	}
	cr_assert_geq(fd, 0);
	struct pollfd pfd = { .fd = fd, .events = POLLIN };
	cr_assert_eq(poll(&pfd, 1, 20), 0);
	t_sync_signal(&s);
	cr_assert_eq(poll(&pfd, 1, 10000), 1);
	/* Readable before join: exitcode peeks without reaping. */
	int code = -1;
	cr_assert_eq(mp_process_exitcode(p, &code), 0);
	cr_assert_eq(code, 0);
	cr_assert_eq(mp_process_join(p, MP_NOWAIT), 0);
	mp_process_free(p);
	t_sync_fini(&s);
}

T_TEST(process, default_names_count_up)
{
	mp_process *a, *b, *c;
	mp_process_attr named = { .name = "worker" };

	cr_assert_eq(mp_process_new(&a, ret_arg, NULL, NULL), 0);
	cr_assert_eq(mp_process_new(&b, ret_arg, NULL, &named), 0);
	cr_assert_eq(mp_process_new(&c, ret_arg, NULL, NULL), 0);
	int na = -1, nc = -1;
	cr_assert_eq(sscanf(mp_process_name(a), "Process-%d", &na), 1);
	cr_assert_eq(sscanf(mp_process_name(c), "Process-%d", &nc), 1);
	cr_assert_eq(nc, na + 2);
	cr_assert_str_eq(mp_process_name(b), "worker");
	cr_assert_str_eq(mp_current_process_name(), "MainProcess");
	mp_process_free(a);
	mp_process_free(b);
	mp_process_free(c);
}

struct names {
	char self[64];
	char nested[64];
	char nested_self[64];
	pid_t parent;
	pid_t nested_parent;
	pid_t pid;
};

static int
nested_target(void *arg)
{
	struct names *n = arg;

	snprintf(n->nested_self, sizeof(n->nested_self), "%s",
		 mp_current_process_name());
	n->nested_parent = mp_parent_pid();
	return 0;
}

static int
names_target(void *arg)
{
	struct names *n = arg;
	mp_process *p;

	snprintf(n->self, sizeof(n->self), "%s", mp_current_process_name());
	n->parent = mp_parent_pid();
	n->pid = getpid();
	if (mp_process_new(&p, nested_target, n, NULL) < 0)
		return 1;
	snprintf(n->nested, sizeof(n->nested), "%s", mp_process_name(p));
	if (mp_process_start(p) < 0 || mp_process_join(p, MP_SEC(10)) < 0)
		return 2;
	mp_process_free(p);
	return 0;
}

T_TEST(process, names_and_parents_inside_children)
{
	struct names *n = mp_shm_alloc(sizeof(*n));
	mp_process *p;
	mp_process_attr attr = { .name = "outer" };

	cr_assert_not_null(n);
	cr_assert_eq(mp_process_new(&p, names_target, n, NULL), 0);
	const char *pname = mp_process_name(p);
	int num = -1;
	cr_assert_eq(sscanf(pname, "Process-%d", &num), 1);
	cr_assert_eq(mp_process_start(p), 0);
	cr_assert_eq(mp_process_join(p, MP_SEC(10)), 0);
	int code = -1;
	cr_assert_eq(mp_process_exitcode(p, &code), 0);
	cr_assert_eq(code, 0);
	cr_assert_str_eq(n->self, pname);
	cr_assert_eq(n->parent, getpid());
	cr_assert_eq(n->pid, mp_process_pid(p));
	char want[64];
	snprintf(want, sizeof(want), "Process-%d:1", num);
	cr_assert_str_eq(n->nested, want);
	cr_assert_str_eq(n->nested_self, want);
	cr_assert_eq(n->nested_parent, n->pid);
	mp_process_free(p);

	/* A named process runs under its own name. */
	cr_assert_eq(mp_process_new(&p, names_target, n, &attr), 0);
	cr_assert_eq(mp_process_start(p), 0);
	cr_assert_eq(mp_process_join(p, MP_SEC(10)), 0);
	cr_assert_str_eq(n->self, "outer");
	mp_process_free(p);
	mp_shm_free(n);
}

struct detach_arg {
	struct t_sync go;
	uint32_t done;
};

static int
detached_target(void *arg)
{
	struct detach_arg *d = arg;

	if (t_sync_wait(&d->go, 10000) < 0)
		return 3;
	__atomic_store_n(&d->done, 1, __ATOMIC_RELEASE);
	return 0;
}

T_TEST(process, free_of_a_running_process_detaches_and_reaps)
{
	struct detach_arg *d = mp_shm_alloc(sizeof(*d));
	mp_process *p;

	cr_assert_not_null(d);
	t_sync_init(&d->go);
	cr_assert_eq(mp_process_new(&p, detached_target, d, NULL), 0);
	cr_assert_eq(mp_process_start(p), 0);
	pid_t pid = mp_process_pid(p);
	mp_process_free(p);
	/* It runs on after the free... */
	t_sync_signal(&d->go);
	int64_t end = t_now() + MP_MSEC(T_MS(10000));
	while (!__atomic_load_n(&d->done, __ATOMIC_ACQUIRE))
		cr_assert_lt(t_now(), end, "the detached child did not run on");
	/*
	 * ...and is reaped by the library, so no zombie is left.  Watch
	 * /proc rather than call waitpid, which would reap it ourselves.
	 */
	char path[64];
	snprintf(path, sizeof(path), "/proc/%d/stat", (int)pid);
	while (access(path, F_OK) == 0) {
		cr_assert_lt(t_now(), end, "the detached child stays a zombie");
		usleep(500);
	}
	int st;
	cr_assert_eq(waitpid(pid, &st, WNOHANG), -1);
	cr_assert_eq(errno, ECHILD);
	t_sync_fini(&d->go);
	mp_shm_free(d);
}

struct family {
	pid_t daemon_pid;
	pid_t plain_pid;
	uint32_t plain_done;
	struct t_sync ready;
	struct t_sync stop_plain;
};

static int
sleep_forever(void *arg)
{
	(void)arg;
	for (;;)
		pause();
	return 0;
}

static int
plain_child(void *arg)
{
	struct family *f = arg;

	if (t_sync_wait(&f->stop_plain, 20000) < 0)
		return 3;
	__atomic_store_n(&f->plain_done, 1, __ATOMIC_RELEASE);
	return 0;
}

/* Starts a daemon and a plain child, reports ready, then waits to die. */
static int
family_parent(void *arg)
{
	struct family *f = arg;
	mp_process *d, *n;
	mp_process_attr da = { .daemon = 1 };

	if (mp_process_new(&d, sleep_forever, NULL, &da) < 0 ||
	    mp_process_new(&n, plain_child, f, NULL) < 0 ||
	    mp_process_start(d) < 0 || mp_process_start(n) < 0)
		return 1;
	f->daemon_pid = mp_process_pid(d);
	f->plain_pid = mp_process_pid(n);
	t_sync_signal(&f->ready);
	return 0;
}

static int
family_killed(void *arg)
{
	family_parent(arg);
	for (;;)
		pause();
	return 0;
}

T_TEST(process, daemon_dies_with_a_sigkilled_parent)
{
	struct family *f = mp_shm_alloc(sizeof(*f));

	cr_assert_not_null(f);
	t_sync_init(&f->ready);
	t_sync_init(&f->stop_plain);
	pid_t mid = t_spawn(family_killed, f);
	cr_assert_eq(t_sync_wait(&f->ready, 10000), 0);
	kill(mid, SIGKILL);
	cr_assert_eq(t_wait_status(mid, 10000), -SIGKILL);
	cr_assert(gone_within(f->daemon_pid, 5000),
		  "daemon child outlived its SIGKILLed parent");
	/* A non-daemon child is not killed with its parent (Python's rule). */
	cr_assert_not(gone_within(f->plain_pid, 50));
	t_sync_signal(&f->stop_plain);
	cr_assert(gone_within(f->plain_pid, 5000));
	cr_assert_eq(__atomic_load_n(&f->plain_done, __ATOMIC_ACQUIRE), 1);
	t_sync_fini(&f->ready);
	t_sync_fini(&f->stop_plain);
	mp_shm_free(f);
}

T_TEST(process, normal_exit_terminates_daemons_and_joins_the_rest)
{
	const char *dir = getenv("top_builddir");
	char path[4096], buf[512] = { 0 };
	int out[2], status, daemon_pid = 0, plain_pid = 0, n = 0;
	size_t len = 0;
	ssize_t r;

	snprintf(path, sizeof(path), "%s/tests/exit_helper", dir ? dir : ".");
	cr_assert_eq(pipe2(out, O_CLOEXEC), 0);
	fflush(NULL);
	pid_t pid = fork();
	cr_assert_geq(pid, 0);
	if (pid == 0) {
		dup2(out[1], STDOUT_FILENO);
		execl(path, path, (char *)NULL);
		_exit(127);
	}
	close(out[1]);
	/* EOF once the helper and its children have all let stdout go. */
	while ((r = read(out[0], buf + len, sizeof(buf) - 1 - len)) > 0)
		len += (size_t)r;
	close(out[0]);
	cr_assert_eq(waitpid(pid, &status, 0), pid);
	cr_assert(WIFEXITED(status) && WEXITSTATUS(status) == 0,
		  "exit_helper ended with status %#x:\n%s", status, buf);
	n = sscanf(buf, "daemon %d\nplain %d\n", &daemon_pid, &plain_pid);
	cr_assert_eq(n, 2, "output: %s", buf);
	/* exit() returned only after the plain child had finished. */
	const char *done = strstr(buf, "plain done\n");
	const char *main_done = strstr(buf, "main done\n");
	cr_assert_not_null(done, "output: %s", buf);
	cr_assert_not_null(main_done, "output: %s", buf);
	cr_assert_lt(done, main_done, "joined after exit: %s", buf);
	/* The daemon was terminated, not left running. */
	cr_assert(gone_within(daemon_pid, 5000));
	cr_assert(gone_within(plain_pid, 5000));
}

static int
daemon_inherit(void *arg)
{
	int *out = arg;
	mp_process *p;
	mp_process_attr inherit = { .daemon = -1 };

	if (mp_process_new(&p, ret_arg, NULL, &inherit) < 0)
		return 1;
	if (mp_process_start(p) < 0 || mp_process_join(p, MP_SEC(10)) < 0)
		return 2;
	mp_process_free(p);
	*out = 1;
	return 0;
}

T_TEST(process, daemon_child_may_start_children)
{
	int *out = mp_shm_alloc(sizeof(*out));
	mp_process *p;
	mp_process_attr da = { .daemon = 1 };

	cr_assert_eq(mp_process_new(&p, daemon_inherit, out, &da), 0);
	cr_assert_eq(mp_process_start(p), 0);
	cr_assert_eq(mp_process_join(p, MP_SEC(10)), 0);
	int code = -1;
	cr_assert_eq(mp_process_exitcode(p, &code), 0);
	cr_assert_eq(code, 0);
	cr_assert_eq(*out, 1);
	mp_process_free(p);
	mp_shm_free(out);
}

T_TEST(process, no_fd_leaked_over_1000_cycles)
{
	int before = t_fd_count();

	for (int i = 0; i < 1000; i++) {
		mp_process *p;
		cr_assert_eq(mp_process_new(&p, ret_arg, NULL, NULL), 0);
		cr_assert_eq(mp_process_start(p), 0);
		cr_assert_eq(mp_process_join(p, MP_SEC(10)), 0);
		mp_process_free(p);
	}
	cr_assert_eq(t_fd_count(), before);
}
