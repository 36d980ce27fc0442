/* SPDX-License-Identifier: MIT */
#include "tests/helpers.h"

#include <dirent.h>
#include <stdio.h>
#include <string.h>
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <string.h>
#include <time.h>

#include <criterion/criterion.h>

pid_t
t_spawn(int (*fn)(void *), void *arg)
{
	pid_t pid;

	fflush(NULL);
	pid = fork();
	if (pid == 0) {
		int rc = fn(arg);
		fflush(NULL);
		_exit(rc);
	}
	return pid;
}

int64_t
t_now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

double
t_slack(void)
{
	const char *e = getenv("T_TIME_SLACK");
	double v = e != NULL ? strtod(e, NULL) : 1.0;

	return v >= 1.0 && v <= 1000.0 ? v : 1.0;
}

int
t_wait_status(pid_t pid, int timeout_ms)
{
	int64_t end = t_now() + (int64_t)(timeout_ms * t_slack()) * 1000000;
	int status;

	for (;;) {
		pid_t r = waitpid(pid, &status, WNOHANG);
		if (r == pid)
			break;
		if (r < 0 && errno != EINTR)
			return -1000;
		if (t_now() > end) {
			kill(pid, SIGKILL);
			waitpid(pid, &status, 0);
			return -2000;
		}
		usleep(1000);
	}
	return WIFEXITED(status) ? WEXITSTATUS(status) : -WTERMSIG(status);
}

void
t_wait_exit(pid_t pid, int code)
{
	cr_assert_gt(pid, 0, "fork failed");
	int st = t_wait_status(pid, 30000);
	cr_assert_eq(st, code, "child %d ended with %d (want %d; -2000: hung)",
		     (int)pid, st, code);
}

void
t_sync_init(struct t_sync *s)
{
	cr_assert_eq(pipe2(s->fd, O_CLOEXEC), 0);
}

void
t_sync_signal(struct t_sync *s)
{
	char c = 1;

	while (write(s->fd[1], &c, 1) < 0 && errno == EINTR)
		;
}

int
t_sync_wait(struct t_sync *s, int timeout_ms)
{
	struct pollfd p = { .fd = s->fd[0], .events = POLLIN };
	char c;

	if (poll(&p, 1, timeout_ms < 0 ? -1 : T_MS(timeout_ms)) != 1)
		return -1;
	return read(s->fd[0], &c, 1) == 1 ? 0 : -1;
}

void
t_sync_fini(struct t_sync *s)
{
	close(s->fd[0]);
	close(s->fd[1]);
}

void
t_capture_begin(struct t_capture *c)
{
	c->fd = memfd_create("t-capture", MFD_CLOEXEC);
	cr_assert_geq(c->fd, 0);
	fflush(stdout);
	c->saved = dup(STDOUT_FILENO);
	cr_assert_geq(c->saved, 0);
	cr_assert_eq(dup2(c->fd, STDOUT_FILENO), STDOUT_FILENO);
}

void
t_capture_end(struct t_capture *c, char *buf, size_t cap)
{
	fflush(stdout);
	dup2(c->saved, STDOUT_FILENO);
	close(c->saved);
	memset(buf, 0, cap);
	cr_assert_geq(pread(c->fd, buf, cap - 1, 0), 0);
	close(c->fd);
	fputs(buf, stdout);
}

static int
count_dir(const char *path)
{
	DIR *d = opendir(path);
	struct dirent *e;
	int n = 0;

	if (d == NULL)
		return -1;
	while ((e = readdir(d)) != NULL) {
		/*
		 * Criterion's runner makes /dev/shm/bxfi_* and bxf_arena_*
		 * for the workers it starts in parallel with this test: not
		 * ours, and they come and go while a test runs.
		 */
		if (e->d_name[0] != '.' && strncmp(e->d_name, "bxf", 3) != 0)
			n++;
	}
	closedir(d);
	return n - (path[1] == 'p' ? 1 : 0);	/* opendir's own fd */
}

bool
t_wait_futex_sleep(pid_t pid, int timeout_ms)
{
	int64_t t0 = t_now();
	char path[64];

	snprintf(path, sizeof(path), "/proc/%d/wchan", (int)pid);
	for (;;) {
		char buf[64] = { 0 };
		FILE *f = fopen(path, "r");

		if (f == NULL)
			return false;
		if (fgets(buf, sizeof(buf), f) == NULL)
			buf[0] = 0;
		fclose(f);
		if (strstr(buf, "futex") != NULL)
			return true;
		if (t_now() - t0 > (int64_t)timeout_ms * 1000000)
			return false;
		sched_yield();
	}
}

int
t_fd_count(void)
{
	return count_dir("/proc/self/fd");
}

int
t_shm_count(void)
{
	return count_dir("/dev/shm");
}

static int leak_fds, leak_shm;

void
t_leak_setup(void)
{
	leak_fds = t_fd_count();
	leak_shm = t_shm_count();
}

void
t_leak_check(void)
{
	int fds = t_fd_count(), shm = t_shm_count();

	cr_assert_eq(fds, leak_fds, "fd leak: %d open, %d before", fds,
		     leak_fds);
	cr_assert_eq(shm, leak_shm, "/dev/shm: %d entries, %d before", shm,
		     leak_shm);
}
