/* SPDX-License-Identifier: MIT */
/*
 * The tutorial's Lock example, "锁", in C:
 *
 *     def f(l, i):
 *         l.acquire()
 *         try:
 *             print('hello world', i)
 *         finally:
 *             l.release()
 *     lock = Lock()
 *     for num in range(10):
 *         Process(target=f, args=(lock, num)).start()
 *
 * The test runs it with stdout captured in a memfd and checks that every
 * line appears whole and exactly once.  Each line is written in pieces,
 * flushing between them, so that without the lock lines from different
 * processes could interleave.
 */
#include <errno.h>
#include <string.h>
#include <sys/mman.h>

#include <criterion/criterion.h>
#include <mproc.h>

#include "tests/helpers.h"

T_SUITE(seed_lock);

static mp_lock *lock;

static int
f(void *arg)
{
	int i = (int)(intptr_t)arg;

	if (mp_lock_acquire(lock, MP_SEC(20)) != 0)
		return 1;
	/* print('hello world', i), one word at a time. */
	fputs("hello", stdout);
	fflush(stdout);
	fputs(" world", stdout);
	fflush(stdout);
	printf(" %d\n", i);
	fflush(stdout);
	return mp_lock_release(lock) == 0 ? 0 : 1;
}

T_TEST(seed_lock, ten_processes_print_whole_lines_exactly_once)
{
	struct t_capture c;
	mp_process *p[10];
	char buf[4096] = { 0 };

	cr_assert_eq(mp_lock_new(&lock), 0);
	t_capture_begin(&c);

	for (int num = 0; num < 10; num++) {
		cr_assert_eq(mp_process_new(&p[num], f, (void *)(intptr_t)num,
					    NULL), 0);
		cr_assert_eq(mp_process_start(p[num]), 0);
	}
	for (int num = 0; num < 10; num++) {
		int code = -1;
		cr_assert_eq(mp_process_join(p[num], MP_SEC(20)), 0);
		cr_assert_eq(mp_process_exitcode(p[num], &code), 0);
		cr_assert_eq(code, 0, "process %d ended with %d", num, code);
		mp_process_free(p[num]);
	}

	t_capture_end(&c, buf, sizeof(buf));

	int seen[10] = { 0 }, lines = 0;
	for (char *save = NULL, *line = strtok_r(buf, "\n", &save);
	     line != NULL; line = strtok_r(NULL, "\n", &save)) {
		int i = -1, end = 0;
		cr_assert_eq(sscanf(line, "hello world %d%n", &i, &end), 1,
			     "torn line: \"%s\"", line);
		cr_assert_eq(line[end], '\0', "torn line: \"%s\"", line);
		cr_assert(i >= 0 && i < 10, "line \"%s\"", line);
		seen[i]++;
		lines++;
	}
	cr_assert_eq(lines, 10);
	for (int i = 0; i < 10; i++)
		cr_assert_eq(seen[i], 1, "hello world %d seen %d times", i,
			     seen[i]);
	cr_assert_eq(mp_lock_release(lock), -EPERM, "left unlocked");
	mp_lock_free(lock);
}
