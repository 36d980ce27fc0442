/* SPDX-License-Identifier: MIT */
/*
 * ck_pr for the ThreadSanitizer build only (make check-tsan puts this
 * directory first on the include path; it is never installed or used by
 * the library's normal build).
 *
 * Why.  ck's x86_64 port is inline assembly, which TSan does not see at
 * all.  ck's own alternative, CK_USE_CC_BUILTINS=1 (set below), is the
 * generic GCC port: its read-modify-writes are __sync builtins, which TSan
 * does see, but its ck_pr_load and ck_pr_store are volatile accesses and
 * its fences __sync_synchronize(); TSan instruments volatile accesses as
 * plain ones and does not model stand-alone fences (gcc even warns that
 * atomic_thread_fence "is not supported with -fsanitize=thread").  With it
 * alone, every "write data; ck_pr_fence_store; ck_pr_store flag"
 * publication that mproc pairs with "ck_pr_load flag; ck_pr_fence_load;
 * read data" is reported as a race on the data; and lib/handle.c does not
 * even build, since that port has no double-width CAS (ck_stack's mpmc
 * pop needs one).
 *
 * What.  The same generic port (CK_F_PR is defined here, so ck's
 * gcc/ck_pr.h skips its body and the rest of ck_pr.h builds on these),
 * with C11 atomics: ck_pr_load is an acquire load, ck_pr_store a release
 * store, every read-modify-write sequentially consistent.  That is what
 * the fence pairs around them mean on x86 (TSO), and it lets TSan see the
 * happens-before edge each pair makes.  What TSan then cannot find is a
 * fence missing next to a ck_pr access; it still finds every plain access
 * that is not ordered by one, which is the race it exists to find.  The
 * fences stay real full fences (__sync_synchronize, as in ck's port): the
 * sleeper handshakes (store a flag, fence, load the other's) need
 * store-load order, which acquire and release do not give.
 */
#ifndef MP_TSAN_CK_PR_H
#define MP_TSAN_CK_PR_H

#undef CK_USE_CC_BUILTINS
#define CK_USE_CC_BUILTINS 1

#include <ck_cc.h>
#include <ck_md.h>
#include <ck_stdbool.h>
#include <ck_stdint.h>

#define CK_F_PR
#include <gcc/ck_f_pr.h>

#define MP_TSAN_LOAD(S, M, T)						\
	CK_CC_INLINE static T						\
	ck_pr_md_load_##S(const M *target)				\
	{								\
		return (T)__atomic_load_n((T const *)target,		\
				       __ATOMIC_ACQUIRE);		\
	}								\
	CK_CC_INLINE static void					\
	ck_pr_md_store_##S(M *target, T v)				\
	{								\
		__atomic_store_n((T *)target, v, __ATOMIC_RELEASE);	\
	}

MP_TSAN_LOAD(ptr, void, void *)
MP_TSAN_LOAD(char, char, char)
MP_TSAN_LOAD(uint, unsigned int, unsigned int)
MP_TSAN_LOAD(int, int, int)
#ifndef CK_PR_DISABLE_DOUBLE
CK_CC_INLINE static double
ck_pr_md_load_double(const double *target)
{
	double r;

	__atomic_load(target, &r, __ATOMIC_ACQUIRE);
	return r;
}

CK_CC_INLINE static void
ck_pr_md_store_double(double *target, double v)
{
	__atomic_store(target, &v, __ATOMIC_RELEASE);
}
#endif
MP_TSAN_LOAD(64, uint64_t, uint64_t)
MP_TSAN_LOAD(32, uint32_t, uint32_t)
MP_TSAN_LOAD(16, uint16_t, uint16_t)
MP_TSAN_LOAD(8, uint8_t, uint8_t)
#undef MP_TSAN_LOAD

CK_CC_INLINE static void
ck_pr_stall(void)
{
	__atomic_signal_fence(__ATOMIC_SEQ_CST);
}

#define MP_TSAN_FENCE(T)						\
	CK_CC_INLINE static void					\
	ck_pr_fence_strict_##T(void)					\
	{								\
		__sync_synchronize();					\
	}

MP_TSAN_FENCE(atomic)
MP_TSAN_FENCE(atomic_atomic)
MP_TSAN_FENCE(atomic_load)
MP_TSAN_FENCE(atomic_store)
MP_TSAN_FENCE(store_atomic)
MP_TSAN_FENCE(load_atomic)
MP_TSAN_FENCE(load)
MP_TSAN_FENCE(load_load)
MP_TSAN_FENCE(load_store)
MP_TSAN_FENCE(store)
MP_TSAN_FENCE(store_store)
MP_TSAN_FENCE(store_load)
MP_TSAN_FENCE(memory)
MP_TSAN_FENCE(acquire)
MP_TSAN_FENCE(release)
MP_TSAN_FENCE(acqrel)
MP_TSAN_FENCE(lock)
MP_TSAN_FENCE(unlock)
#undef MP_TSAN_FENCE

#define MP_TSAN_RMW(S, M, T)						\
	CK_CC_INLINE static bool					\
	ck_pr_cas_##S(M *target, T compare, T set)			\
	{								\
		return __atomic_compare_exchange_n((T *)target,		\
		    &compare, set, false, __ATOMIC_SEQ_CST,		\
		    __ATOMIC_SEQ_CST);					\
	}								\
	CK_CC_INLINE static bool					\
	ck_pr_cas_##S##_value(M *target, T compare, T set, M *v)	\
	{								\
		bool ok = __atomic_compare_exchange_n((T *)target,	\
		    &compare, set, false, __ATOMIC_SEQ_CST,		\
		    __ATOMIC_SEQ_CST);					\
		*(T *)v = compare;					\
		return ok;						\
	}								\
	CK_CC_INLINE static T						\
	ck_pr_faa_##S(M *target, T d)					\
	{								\
		return __atomic_fetch_add((T *)target, d,		\
					  __ATOMIC_SEQ_CST);		\
	}								\
	CK_CC_INLINE static void					\
	ck_pr_add_##S(M *target, T d)					\
	{								\
		(void)__atomic_fetch_add((T *)target, d,		\
					 __ATOMIC_SEQ_CST);		\
	}								\
	CK_CC_INLINE static void					\
	ck_pr_sub_##S(M *target, T d)					\
	{								\
		(void)__atomic_fetch_sub((T *)target, d,		\
					 __ATOMIC_SEQ_CST);		\
	}								\
	CK_CC_INLINE static void					\
	ck_pr_inc_##S(M *target)					\
	{								\
		ck_pr_add_##S(target, (T)1);				\
	}								\
	CK_CC_INLINE static void					\
	ck_pr_dec_##S(M *target)					\
	{								\
		ck_pr_sub_##S(target, (T)1);				\
	}

#define MP_TSAN_BITS(S, M, T)						\
	CK_CC_INLINE static void					\
	ck_pr_and_##S(M *target, T d)					\
	{								\
		(void)__atomic_fetch_and((T *)target, d,		\
					 __ATOMIC_SEQ_CST);		\
	}								\
	CK_CC_INLINE static void					\
	ck_pr_or_##S(M *target, T d)					\
	{								\
		(void)__atomic_fetch_or((T *)target, d,			\
					__ATOMIC_SEQ_CST);		\
	}								\
	CK_CC_INLINE static void					\
	ck_pr_xor_##S(M *target, T d)					\
	{								\
		(void)__atomic_fetch_xor((T *)target, d,		\
					 __ATOMIC_SEQ_CST);		\
	}

/* Pointers: arithmetic on the address, as ck's port does. */
#define MP_TSAN_RMW_PTR							\
	CK_CC_INLINE static bool					\
	ck_pr_cas_ptr(void *target, void *compare, void *set)		\
	{								\
		return __atomic_compare_exchange_n((void **)target,	\
		    &compare, set, false, __ATOMIC_SEQ_CST,		\
		    __ATOMIC_SEQ_CST);					\
	}								\
	CK_CC_INLINE static bool					\
	ck_pr_cas_ptr_value(void *target, void *compare, void *set,	\
			    void *v)					\
	{								\
		bool ok = __atomic_compare_exchange_n((void **)target,	\
		    &compare, set, false, __ATOMIC_SEQ_CST,		\
		    __ATOMIC_SEQ_CST);					\
		*(void **)v = compare;					\
		return ok;						\
	}								\
	CK_CC_INLINE static void *					\
	ck_pr_faa_ptr(void *target, void *d)				\
	{								\
		return (void *)__atomic_fetch_add((uintptr_t *)target,	\
		    (uintptr_t)d, __ATOMIC_SEQ_CST);			\
	}								\
	CK_CC_INLINE static void					\
	ck_pr_add_ptr(void *target, void *d)				\
	{								\
		(void)ck_pr_faa_ptr(target, d);				\
	}								\
	CK_CC_INLINE static void					\
	ck_pr_sub_ptr(void *target, void *d)				\
	{								\
		(void)__atomic_fetch_sub((uintptr_t *)target,		\
		    (uintptr_t)d, __ATOMIC_SEQ_CST);			\
	}								\
	CK_CC_INLINE static void					\
	ck_pr_inc_ptr(void *target)					\
	{								\
		ck_pr_add_ptr(target, (void *)1);			\
	}								\
	CK_CC_INLINE static void					\
	ck_pr_dec_ptr(void *target)					\
	{								\
		ck_pr_sub_ptr(target, (void *)1);			\
	}

MP_TSAN_RMW_PTR
CK_CC_INLINE static void
ck_pr_and_ptr(void *target, void *d)
{
	(void)__atomic_fetch_and((uintptr_t *)target, (uintptr_t)d,
				 __ATOMIC_SEQ_CST);
}

CK_CC_INLINE static void
ck_pr_or_ptr(void *target, void *d)
{
	(void)__atomic_fetch_or((uintptr_t *)target, (uintptr_t)d,
				__ATOMIC_SEQ_CST);
}

CK_CC_INLINE static void
ck_pr_xor_ptr(void *target, void *d)
{
	(void)__atomic_fetch_xor((uintptr_t *)target, (uintptr_t)d,
				 __ATOMIC_SEQ_CST);
}
MP_TSAN_RMW(char, char, char)
MP_TSAN_BITS(char, char, char)
MP_TSAN_RMW(int, int, int)
MP_TSAN_BITS(int, int, int)
MP_TSAN_RMW(uint, unsigned int, unsigned int)
MP_TSAN_BITS(uint, unsigned int, unsigned int)
MP_TSAN_RMW(64, uint64_t, uint64_t)
MP_TSAN_BITS(64, uint64_t, uint64_t)
MP_TSAN_RMW(32, uint32_t, uint32_t)
MP_TSAN_BITS(32, uint32_t, uint32_t)
MP_TSAN_RMW(16, uint16_t, uint16_t)
MP_TSAN_BITS(16, uint16_t, uint16_t)
MP_TSAN_RMW(8, uint8_t, uint8_t)
MP_TSAN_BITS(8, uint8_t, uint8_t)
#undef MP_TSAN_RMW
#undef MP_TSAN_RMW_PTR
#undef MP_TSAN_BITS

/*
 * Double-width CAS (ck_stack's mpmc pop, lib/handle.c): ck's x86_64 port
 * has it (cmpxchg16b), its generic port does not.
 */
#define CK_F_PR_CAS_64_2
#define CK_F_PR_CAS_64_2_VALUE
#define CK_F_PR_CAS_PTR_2
#define CK_F_PR_CAS_PTR_2_VALUE

CK_CC_INLINE static bool
ck_pr_cas_64_2_value(uint64_t target[2], uint64_t compare[2],
		     uint64_t set[2], uint64_t v[2])
{
	unsigned __int128 c, s;
	bool ok;

	__builtin_memcpy(&c, compare, sizeof(c));
	__builtin_memcpy(&s, set, sizeof(s));
	ok = __atomic_compare_exchange_n((unsigned __int128 *)(void *)target,
					 &c, s, false, __ATOMIC_SEQ_CST,
					 __ATOMIC_SEQ_CST);
	__builtin_memcpy(v, &c, sizeof(c));
	return ok;
}

CK_CC_INLINE static bool
ck_pr_cas_64_2(uint64_t target[2], uint64_t compare[2], uint64_t set[2])
{
	uint64_t v[2];

	return ck_pr_cas_64_2_value(target, compare, set, v);
}

CK_CC_INLINE static bool
ck_pr_cas_ptr_2(void *t, void *c, void *s)
{
	return ck_pr_cas_64_2((uint64_t *)t, (uint64_t *)c, (uint64_t *)s);
}

CK_CC_INLINE static bool
ck_pr_cas_ptr_2_value(void *t, void *c, void *s, void *v)
{
	return ck_pr_cas_64_2_value((uint64_t *)t, (uint64_t *)c,
				    (uint64_t *)s, (uint64_t *)v);
}

#include_next <ck_pr.h>

#endif /* MP_TSAN_CK_PR_H */
