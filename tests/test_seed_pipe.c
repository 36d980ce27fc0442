/* SPDX-License-Identifier: MIT */
/*
 * The tutorial's Pipe example in C:
 *
 *     def foo(w):
 *         for i in range(5):
 *             w.send((i, current_process().name))
 *         w.close()
 *
 *     readers = []
 *     for i in range(2):
 *         r, w = Pipe(duplex=False)
 *         readers.append(r)
 *         p = Process(target=foo, args=(w,))
 *         p.start()
 *         w.close()
 *     while readers:
 *         for r in wait(readers):
 *             try:
 *                 msg = r.recv()
 *             except EOFError:
 *                 readers.remove(r)
 *             else:
 *                 print(msg)
 *
 * The test checks that all ten messages arrive, in order per child, with
 * the names "Process-1" and "Process-2", and that both ends of file are
 * seen.
 */
#include <errno.h>
#include <string.h>

#include <criterion/criterion.h>
#include <mproc.h>

#include "tests/helpers.h"

T_SUITE(seed_pipe);

struct msg {
	int i;
	char name[32];
};

static int
foo(void *arg)
{
	mp_conn *w = arg;

	for (int i = 0; i < 5; i++) {
		struct msg m = { .i = i };
		snprintf(m.name, sizeof(m.name), "%s",
			 mp_current_process_name());
		if (mp_conn_send(w, &m, sizeof(m)) != 0)
			return 1;
	}
	mp_conn_close(w);
	return 0;
}

T_TEST(seed_pipe, two_children_send_five_each_and_wait_sees_both_eofs)
{
	mp_conn *readers[2], *all[2], *ready[2];
	mp_process *p[2];
	int nreaders = 0, next[2] = { 0, 0 }, eofs = 0;

	for (int i = 0; i < 2; i++) {
		mp_conn *r, *w;
		cr_assert_eq(mp_pipe(&r, &w, false), 0);
		readers[nreaders++] = r;
		all[i] = r;
		cr_assert_eq(mp_process_new(&p[i], foo, w, NULL), 0);
		cr_assert_eq(mp_process_start(p[i]), 0);
		mp_conn_close(w);
	}
	while (nreaders > 0) {
		int n = mp_wait(readers, (size_t)nreaders, ready, MP_SEC(20));
		cr_assert_gt(n, 0);
		for (int j = 0; j < n; j++) {
			struct msg m;
			ssize_t got = mp_conn_recv(ready[j], &m, sizeof(m));
			int who = ready[j] == all[0] ? 0 : 1;
			if (got == -EPIPE) {
				eofs++;
				for (int k = 0; k < nreaders; k++) {
					if (readers[k] != ready[j])
						continue;
					readers[k] = readers[--nreaders];
					break;
				}
				continue;
			}
			cr_assert_eq(got, (ssize_t)sizeof(m));
			printf("(%d, '%s')\n", m.i, m.name);
			cr_assert_eq(m.i, next[who]++);
			cr_assert_str_eq(m.name, mp_process_name(p[who]));
			char want[32];
			snprintf(want, sizeof(want), "Process-%d", who + 1);
			cr_assert_str_eq(m.name, want);
		}
	}
	cr_assert_eq(eofs, 2);
	cr_assert_eq(next[0], 5);
	cr_assert_eq(next[1], 5);
	for (int i = 0; i < 2; i++) {
		cr_assert_eq(mp_process_join(p[i], MP_SEC(10)), 0);
		int code = -1;
		cr_assert_eq(mp_process_exitcode(p[i], &code), 0);
		cr_assert_eq(code, 0);
		mp_process_free(p[i]);
		mp_conn_close(all[i]);
	}
}
