/* SPDX-License-Identifier: MIT */
/*
 * urcu/uatomic.h for the ThreadSanitizer build only (see ck_pr.h here).
 *
 * liburcu 0.13's x86 uatomic operations are inline assembly ("lock;
 * xchg", "lock; cmpxchg", ...), which TSan does not see: the exchange
 * that links a node into a wait-free queue (urcu/wfcqueue.h) then orders
 * nothing for it.  Here each is the GCC builtin of the same meaning,
 * sequentially consistent as the locked x86 instructions are.
 */
#ifndef MP_TSAN_URCU_UATOMIC_H
#define MP_TSAN_URCU_UATOMIC_H

#include_next <urcu/uatomic.h>
#include <urcu/system.h>

#define MP_TSAN_SC __ATOMIC_SEQ_CST

#undef uatomic_set
#define uatomic_set(addr, v)	((void)CMM_STORE_SHARED(*(addr), (v)))
#undef uatomic_read
#define uatomic_read(addr)	CMM_LOAD_SHARED(*(addr))

#undef uatomic_cmpxchg
#define uatomic_cmpxchg(addr, old, _new)				\
	__extension__							\
	({								\
		__typeof__(*(addr)) mp_tsan_o_ = (old);			\
		__atomic_compare_exchange_n((addr), &mp_tsan_o_,	\
		    (__typeof__(*(addr)))(_new), 0, MP_TSAN_SC,		\
		    MP_TSAN_SC);					\
		mp_tsan_o_;						\
	})
#undef uatomic_xchg
#define uatomic_xchg(addr, v)						\
	__atomic_exchange_n((addr), (__typeof__(*(addr)))(v), MP_TSAN_SC)
#undef uatomic_add_return
#define uatomic_add_return(addr, v)					\
	__atomic_add_fetch((addr), (v), MP_TSAN_SC)
#undef uatomic_sub_return
#define uatomic_sub_return(addr, v)					\
	__atomic_sub_fetch((addr), (v), MP_TSAN_SC)
#undef uatomic_add
#define uatomic_add(addr, v)						\
	((void)__atomic_add_fetch((addr), (v), MP_TSAN_SC))
#undef uatomic_sub
#define uatomic_sub(addr, v)						\
	((void)__atomic_sub_fetch((addr), (v), MP_TSAN_SC))
#undef uatomic_inc
#define uatomic_inc(addr)	uatomic_add((addr), 1)
#undef uatomic_dec
#define uatomic_dec(addr)	uatomic_sub((addr), 1)
#undef uatomic_and
#define uatomic_and(addr, v)						\
	((void)__atomic_and_fetch((addr), (v), MP_TSAN_SC))
#undef uatomic_or
#define uatomic_or(addr, v)						\
	((void)__atomic_or_fetch((addr), (v), MP_TSAN_SC))

#endif /* MP_TSAN_URCU_UATOMIC_H */
