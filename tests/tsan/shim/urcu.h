/* SPDX-License-Identifier: MIT */
/*
 * <urcu.h> for the ThreadSanitizer build only (see ck_pr.h here).
 *
 * Grace periods.  liburcu's readers and its call_rcu thread synchronise
 * inside liburcu.so, which is not instrumented: TSan does not know that a
 * callback runs only after every read-side critical section that could
 * see the retired memory has ended, and reports the callback's free()
 * against the readers' last accesses.  Here every rcu_read_unlock()
 * releases one sync object and every call_rcu() callback acquires it
 * before it runs: the happens-before edge the grace period makes.  It is
 * no wider than that: a reader still inside its section when the callback
 * runs (a real use after free) has not released yet, and is reported.
 * The callback also acquires what its call_rcu() caller released, since
 * the hand-off through liburcu's queue is invisible too.
 */
#ifndef MP_TSAN_URCU_H
#define MP_TSAN_URCU_H

#include_next <urcu.h>

#include <stdlib.h>

#include <sanitizer/tsan_interface.h>

/* One object for every grace period of the process (weak: shared by all
 * translation units that include this). */
__attribute__((weak)) char mp_tsan_rcu_gp;

static inline void
mp_tsan_rcu_read_unlock(void)
{
	__tsan_release(&mp_tsan_rcu_gp);
	urcu_memb_read_unlock();
}

struct mp_tsan_rcu_cb {
	struct rcu_head rh;
	struct rcu_head *head;
	void (*func)(struct rcu_head *head);
};

static inline void
mp_tsan_rcu_cb(struct rcu_head *rh)
{
	struct mp_tsan_rcu_cb *w =
		caa_container_of(rh, struct mp_tsan_rcu_cb, rh);

	__tsan_acquire(w);
	__tsan_acquire(&mp_tsan_rcu_gp);
	w->func(w->head);
	free(w);
}

static inline void
mp_tsan_call_rcu(struct rcu_head *head, void (*func)(struct rcu_head *head))
{
	struct mp_tsan_rcu_cb *w = malloc(sizeof(*w));

	if (w == NULL)
		abort();	/* a test build: no quiet fallback */
	w->head = head;
	w->func = func;
	__tsan_release(w);
	urcu_memb_call_rcu(&w->rh, mp_tsan_rcu_cb);
}

#undef rcu_read_unlock
#define rcu_read_unlock mp_tsan_rcu_read_unlock
#undef call_rcu
#define call_rcu mp_tsan_call_rcu

#endif /* MP_TSAN_URCU_H */
