/* SPDX-License-Identifier: MIT */
/*
 * Manager tests: real processes against a real server.
 */
#include <errno.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <criterion/criterion.h>
#include <mproc.h>

#include "tests/helpers.h"

T_SUITE(manager);

T_TEST(manager, dict_basic_operations)
{
	mp_manager *m;
	mp_dict *d;
	char buf[64];
	void *v;

	cr_assert_eq(mp_manager_start(&m, NULL), 0);
	cr_assert_eq(mp_manager_dict(m, NULL, &d), 0);
	cr_assert_eq(mp_dict_len(d), 0);
	cr_assert_eq(mp_dict_get(d, "a", 1, buf, sizeof(buf)), -ENOENT);
	cr_assert_eq(mp_dict_set(d, "a", 1, "alpha", 5), 0);
	cr_assert_eq(mp_dict_set(d, "b", 1, "beta", 4), 0);
	cr_assert_eq(mp_dict_set(d, "a", 1, "ALPHA!", 6), 0);
	cr_assert_eq(mp_dict_len(d), 2);
	cr_assert_eq(mp_dict_get(d, "a", 1, buf, sizeof(buf)), 6);
	cr_assert_eq(memcmp(buf, "ALPHA!", 6), 0);
	cr_assert_eq(mp_dict_get(d, "a", 1, buf, 5), -EMSGSIZE);
	cr_assert_eq(mp_dict_get_alloc(d, "a", 1, &v), 6);
	cr_assert_eq(memcmp(v, "ALPHA!", 6), 0);
	free(v);
	cr_assert_eq(mp_dict_contains(d, "b", 1), 1);
	cr_assert_eq(mp_dict_contains(d, "c", 1), 0);
	cr_assert_eq(mp_dict_del(d, "b", 1), 0);
	cr_assert_eq(mp_dict_del(d, "b", 1), -ENOENT);
	cr_assert_eq(mp_dict_len(d), 1);
	mp_dict_free(d);
	mp_manager_free(m);
}
