/* SPDX-License-Identifier: MIT */
/*
 * The tutorial's Manager example in C:
 *
 *     def f(d, l):
 *         d[1] = 'Python'
 *         d[2] = 'Java'
 *         d[3] = str(os.getpid())
 *         l.append(os.getpid())
 *
 *     with Manager() as manager:
 *         d = manager.dict()
 *         l = manager.list()
 *         p_list = [Process(target=f, args=(d, l)) for i in range(3)]
 *         for p in p_list: p.start()
 *         for p in p_list: p.join()
 *         print(d)
 *         print(l)
 *
 * The test checks that d holds exactly 1: "Python", 2: "Java" and 3: the
 * pid of one of the three children, and that l holds the three pids, each
 * once.  Keys are ints, values strings, both as bytes.
 */
#include <errno.h>
#include <string.h>
#include <unistd.h>

#include <criterion/criterion.h>
#include <mproc.h>

#include "tests/helpers.h"

T_SUITE(seed_manager);

struct args {
	mp_dict *d;
	mp_list *l;
};

static int
f(void *arg)
{
	struct args *a = arg;
	int k1 = 1, k2 = 2, k3 = 3;
	pid_t pid = getpid();
	char s[16];

	snprintf(s, sizeof(s), "%d", (int)pid);
	if (mp_dict_set(a->d, &k1, sizeof(k1), "Python", 6) != 0 ||
	    mp_dict_set(a->d, &k2, sizeof(k2), "Java", 4) != 0 ||
	    mp_dict_set(a->d, &k3, sizeof(k3), s, strlen(s)) != 0 ||
	    mp_list_append(a->l, &pid, sizeof(pid)) != 0)
		return 1;
	return 0;
}

T_TEST(seed_manager, three_processes_fill_a_dict_and_a_list)
{
	mp_manager *m;
	struct args a;
	mp_process *p[3];
	pid_t pids[3];
	char buf[32];
	int k;

	cr_assert_eq(mp_manager_start(&m, NULL), 0);
	cr_assert_eq(mp_manager_dict(m, NULL, &a.d), 0);
	cr_assert_eq(mp_manager_list(m, NULL, &a.l), 0);
	for (int i = 0; i < 3; i++) {
		cr_assert_eq(mp_process_new(&p[i], f, &a, NULL), 0);
		cr_assert_eq(mp_process_start(p[i]), 0);
		pids[i] = mp_process_pid(p[i]);
	}
	for (int i = 0; i < 3; i++) {
		int code = -1;
		cr_assert_eq(mp_process_join(p[i], MP_SEC(30)), 0);
		cr_assert_eq(mp_process_exitcode(p[i], &code), 0);
		cr_assert_eq(code, 0);
		mp_process_free(p[i]);
	}
	cr_assert_eq(mp_dict_len(a.d), 3);
	k = 1;
	cr_assert_eq(mp_dict_get(a.d, &k, sizeof(k), buf, sizeof(buf)), 6);
	cr_assert_eq(memcmp(buf, "Python", 6), 0);
	k = 2;
	cr_assert_eq(mp_dict_get(a.d, &k, sizeof(k), buf, sizeof(buf)), 4);
	cr_assert_eq(memcmp(buf, "Java", 4), 0);
	k = 3;
	ssize_t n = mp_dict_get(a.d, &k, sizeof(k), buf, sizeof(buf) - 1);
	cr_assert_gt(n, 0);
	buf[n] = '\0';
	int last = atoi(buf), found = 0;
	for (int i = 0; i < 3; i++)
		found += last == pids[i];
	cr_assert_eq(found, 1);
	cr_assert_eq(mp_list_len(a.l), 3);
	for (int i = 0; i < 3; i++) {
		pid_t got;
		int seen = 0;
		cr_assert_eq(mp_list_get(a.l, i, &got, sizeof(got)),
			     (ssize_t)sizeof(got));
		for (int j = 0; j < 3; j++)
			seen += got == pids[j];
		cr_assert_eq(seen, 1);
		for (int j = 0; j < i; j++) {
			pid_t prev;
			cr_assert_eq(mp_list_get(a.l, j, &prev, sizeof(prev)),
				     (ssize_t)sizeof(prev));
			cr_assert_neq(prev, got);
		}
	}
	mp_list_free(a.l);
	mp_dict_free(a.d);
	mp_manager_free(m);
}
