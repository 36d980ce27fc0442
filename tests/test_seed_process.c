/* SPDX-License-Identifier: MIT */
/*
 * The tutorial's first example, "创建进程", in C:
 *
 *     def info(title):
 *         print(title)
 *         print('module name:', __name__)
 *         print('parent process:', os.getppid())
 *         print('process id:', os.getpid())
 *     def f(name):
 *         info('function f')
 *         print('hello', name)
 *     info('main line'); p = Process(target=f, args=('bob',)); p.start(); p.join()
 *
 * The test runs it with stdout captured and checks that the child's
 * printed parent is the main line's process id, and its own id the pid
 * that mp_process_pid reports.
 */
#include <errno.h>
#include <string.h>
#include <sys/mman.h>

#include <criterion/criterion.h>
#include <mproc.h>

#include "tests/helpers.h"

T_SUITE(seed_process);

static void
info(const char *title)
{
	printf("%s\n", title);
	printf("module name: %s\n", "__main__");
	printf("parent process: %d\n", (int)mp_parent_pid());
	printf("process id: %d\n", (int)getpid());
}

static int
f(void *name)
{
	info("function f");
	printf("hello %s\n", (const char *)name);
	return 0;
}

T_TEST(seed_process, child_prints_its_parent_and_itself)
{
	struct t_capture c;
	mp_process *p;
	char buf[4096];

	t_capture_begin(&c);

	info("main line");
	cr_assert_eq(mp_process_new(&p, f, "bob", NULL), 0);
	cr_assert_eq(mp_process_start(p), 0);
	cr_assert_eq(mp_process_join(p, MP_SEC(10)), 0);

	t_capture_end(&c, buf, sizeof(buf));

	int mpp = 0, mpid = 0, cpp = 0, cpid = 0, n = 0;
	char name[16] = "";
	n = sscanf(buf,
		   "main line\nmodule name: __main__\nparent process: %d\n"
		   "process id: %d\nfunction f\nmodule name: __main__\n"
		   "parent process: %d\nprocess id: %d\nhello %15s\n",
		   &mpp, &mpid, &cpp, &cpid, name);
	cr_assert_eq(n, 5, "output not as the tutorial's:\n%s", buf);
	cr_assert_eq(mpp, (int)getppid());
	cr_assert_eq(mpid, (int)getpid());
	cr_assert_eq(cpp, mpid, "the child's parent is the main line");
	cr_assert_eq(cpid, (int)mp_process_pid(p));
	cr_assert_neq(cpid, mpid);
	cr_assert_str_eq(name, "bob");
	int code = -1;
	cr_assert_eq(mp_process_exitcode(p, &code), 0);
	cr_assert_eq(code, 0);
	mp_process_free(p);
}
