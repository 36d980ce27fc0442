/* SPDX-License-Identifier: MIT */
/*
 * urcu/system.h for the ThreadSanitizer build only (see ck_pr.h here).
 *
 * liburcu 0.13 marks shared loads and stores with CMM_LOAD_SHARED and
 * CMM_STORE_SHARED, volatile accesses ordered by its own asm barriers
 * (cmm_smp_rmb, cmm_smp_wmb): TSan sees plain accesses and no order, so
 * the wait-free queue the Pool's submitters use (urcu/wfcqueue.h, inlined)
 * and rcu_assign_pointer() look like races on whatever they publish.  Here
 * they are C11 acquire loads and release stores, which is what they are on
 * x86 together with those barriers; the rest of liburcu's headers build
 * on these two macros (uatomic_read, uatomic_set, rcu_set_pointer).
 */
#ifndef MP_TSAN_URCU_SYSTEM_H
#define MP_TSAN_URCU_SYSTEM_H

#include_next <urcu/system.h>

#undef CMM_LOAD_SHARED
#define CMM_LOAD_SHARED(p)	__atomic_load_n(&(p), __ATOMIC_ACQUIRE)

#undef CMM_STORE_SHARED
#define CMM_STORE_SHARED(x, v)						\
	__extension__							\
	({								\
		__typeof__(x) mp_tsan_v_ = (v);				\
		__atomic_store_n(&(x), mp_tsan_v_, __ATOMIC_RELEASE);	\
		mp_tsan_v_;						\
	})

#endif /* MP_TSAN_URCU_SYSTEM_H */
