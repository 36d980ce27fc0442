/* SPDX-License-Identifier: MIT */
/*
 * The tutorial's three Pool examples, in C:
 *
 *     def f(a): return a
 *     pool = multiprocessing.Pool()
 *     result = [pool.apply_async(f, (a,)) for a in [10, 20]]
 *     pool.close(); pool.join()
 *     for item in result: print(item.get())          # 10, 20
 *
 *     result = pool.map_async(f, (a0, a1,)).get()      # [a0, a1]
 *     # def f(a, b): return a
 *     result = pool.starmap_async(f, ((a0, b0), (a1, b1),)).get()
 *
 * Each runs with stdout captured and checks what it printed.
 */
#include <errno.h>
#include <string.h>
#include <sys/mman.h>

#include <criterion/criterion.h>
#include <mproc.h>

#include "tests/helpers.h"

T_SUITE(seed_pool);

/* def f(a): return a */
static ssize_t
f(const void *in, size_t in_len, void *out, size_t cap)
{
	if (in_len != sizeof(int) || cap < sizeof(int))
		return -EINVAL;
	memcpy(out, in, sizeof(int));
	return sizeof(int);
}

/* def f(a, b): return a */
static ssize_t
f2(const void *const args[], void *out, size_t cap)
{
	if (cap < sizeof(int))
		return -EINVAL;
	memcpy(out, args[0], sizeof(int));
	return sizeof(int);
}

T_TEST(seed_pool, apply_async_over_10_and_20_prints_10_and_20)
{
	static const int args[] = { 10, 20 };
	mp_async *result[2];
	struct t_capture c;
	char buf[256];
	mp_pool *pool;

	t_capture_begin(&c);
	cr_assert_eq(mp_pool_new(&pool, NULL), 0);
	for (int i = 0; i < 2; i++)
		cr_assert_eq(mp_pool_apply_async(pool, f, &args[i],
						 sizeof(int), sizeof(int),
						 NULL, NULL, NULL,
						 &result[i]), 0);
	cr_assert_eq(mp_pool_close(pool), 0);
	cr_assert_eq(mp_pool_join(pool), 0);
	for (int i = 0; i < 2; i++) {
		size_t len;
		cr_assert_eq(mp_async_get(result[i], MP_FOREVER), 0);
		const int *v = mp_async_result(result[i], &len);
		cr_assert_eq(len, sizeof(int));
		printf("%d\n", *v);
		mp_async_free(result[i]);
	}
	mp_pool_free(pool);
	t_capture_end(&c, buf, sizeof(buf));
	cr_assert_str_eq(buf, "10\n20\n");
}

T_TEST(seed_pool, map_async_get_returns_every_item)
{
	static const int items[] = { 7, 42 };	/* (a0, a1) */
	int results[2] = { 0, 0 };
	struct t_capture c;
	char buf[256];
	mp_pool *pool;
	mp_async *r;

	t_capture_begin(&c);
	cr_assert_eq(mp_pool_new(&pool, NULL), 0);
	cr_assert_eq(mp_pool_map_async(pool, f, items, 2, sizeof(int),
				       results, sizeof(int), 0, NULL, NULL,
				       NULL, &r), 0);
	cr_assert_eq(mp_async_get(r, MP_FOREVER), 0);
	size_t len;
	cr_assert_eq(mp_async_result(r, &len), results);
	cr_assert_eq(len, sizeof(results));
	cr_assert_eq(mp_pool_close(pool), 0);
	cr_assert_eq(mp_pool_join(pool), 0);
	for (int i = 0; i < 2; i++)
		printf("%d\n", results[i]);
	mp_async_free(r);
	mp_pool_free(pool);
	t_capture_end(&c, buf, sizeof(buf));
	cr_assert_str_eq(buf, "7\n42\n");
}

T_TEST(seed_pool, starmap_async_passes_both_columns)
{
	static const int a[] = { 3, 5 };		/* a0, a1 */
	static const double b[] = { 0.5, 1.5 };		/* b0, b1 */
	const void *const cols[] = { a, b };
	const size_t sizes[] = { sizeof(int), sizeof(double) };
	int results[2] = { 0, 0 };
	struct t_capture c;
	char buf[256];
	mp_pool *pool;
	mp_async *r;

	t_capture_begin(&c);
	cr_assert_eq(mp_pool_new(&pool, NULL), 0);
	cr_assert_eq(mp_pool_starmap_async(pool, f2, 2, cols, sizes, 2,
					   results, sizeof(int), 0, NULL,
					   NULL, NULL, &r), 0);
	cr_assert_eq(mp_async_get(r, MP_FOREVER), 0);
	cr_assert_eq(mp_pool_close(pool), 0);
	cr_assert_eq(mp_pool_join(pool), 0);
	for (int i = 0; i < 2; i++)
		printf("%d\n", results[i]);
	mp_async_free(r);
	mp_pool_free(pool);
	t_capture_end(&c, buf, sizeof(buf));
	cr_assert_str_eq(buf, "3\n5\n");
}
