/* SPDX-License-Identifier: MIT */
/*
 * Helpers for tests that fork.  A child never returns into Criterion and
 * never calls cr_assert: it runs a function and ends with _exit(), and the
 * parent asserts on how it ended.
 */
#ifndef T_HELPERS_H
#define T_HELPERS_H

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/types.h>
#include <unistd.h>

#define T_PASS 0
#define T_FAIL 1
#define T_SKIP 77

/* Run fn(arg) in a forked child that exits with its return value. */
pid_t t_spawn(int (*fn)(void *), void *arg);

/*
 * Wait (at most timeout_ms; the child is killed past it) for pid and
 * return its exit code, or -SIG when a signal ended it.
 */
int t_wait_status(pid_t pid, int timeout_ms);

/* Assert that pid exits with code within 30 s. */
void t_wait_exit(pid_t pid, int code);

/* In a child: report a failed check on stderr and exit with T_FAIL. */
#define T_CHECK(cond)                                                     \
	do {                                                              \
		if (!(cond)) {                                            \
			fprintf(stderr, "%s:%d: child check failed: %s\n", \
				__FILE__, __LINE__, #cond);               \
			_exit(T_FAIL);                                    \
		}                                                         \
	} while (0)

/* A one-shot pipe for "I am ready" between processes. */
struct t_sync {
	int fd[2];
};
void t_sync_init(struct t_sync *s);
void t_sync_signal(struct t_sync *s);	/* write one byte */
int t_sync_wait(struct t_sync *s, int timeout_ms); /* 0, or -1 on timeout/EOF */
void t_sync_fini(struct t_sync *s);

/*
 * Capture this process's stdout (and its children's, which inherit fd 1)
 * in a memfd, as the tutorial's examples print: t_capture_end restores
 * stdout, copies what was printed into buf (NUL-terminated), and echoes it
 * so the test log shows it.
 */
struct t_capture {
	int fd, saved;
};
void t_capture_begin(struct t_capture *c);
void t_capture_end(struct t_capture *c, char *buf, size_t cap);

/*
 * Wait up to timeout_ms until pid sleeps in a futex wait (its
 * /proc/PID/wchan says so): the state a test wants before it kills or
 * wakes a sleeper.  false on timeout, or when pid is gone.
 */
bool t_wait_futex_sleep(pid_t pid, int timeout_ms);

/* Open fds of this process and entries in /dev/shm. */
int t_fd_count(void);
int t_shm_count(void);

/* Around a test: assert that it leaks no fd and no /dev/shm entry. */
void t_leak_setup(void);
void t_leak_check(void);

/*
 * The factor (>= 1) by which timing bounds stretch: the environment's
 * T_TIME_SLACK (e.g. 20 under valgrind), 1 when unset or invalid.  The
 * waits of these helpers apply it themselves.
 */
double t_slack(void);

/* ms stretched by t_slack(), for the timing bounds of tests. */
#define T_MS(ms) ((int)((ms) * t_slack()))

/* Elapsed CLOCK_MONOTONIC time in ns. */
int64_t t_now(void);

/* A module's suite: a 60 s timeout backstops any hang. */
#define T_SUITE(name) TestSuite(name, .timeout = 60)

/*
 * A test whose body runs between t_leak_setup and t_leak_check.  Use it
 * instead of Test(): Criterion 2.4 reports an assertion that fails in a
 * .fini hook but still counts the test as passed, so the leak check must
 * run inside the test itself.
 */
#define T_TEST(suite, name, ...)                                          \
	static void t_body_##suite##_##name(void);                        \
	Test(suite, name, ##__VA_ARGS__)                                  \
	{                                                                 \
		t_leak_setup();                                           \
		t_body_##suite##_##name();                                \
		t_leak_check();                                           \
	}                                                                 \
	static void t_body_##suite##_##name(void)

#endif /* T_HELPERS_H */
