/* SPDX-License-Identifier: MIT */
/*
 * <urcu/rculfhash.h> for the ThreadSanitizer build only (see ck_pr.h
 * here).
 *
 * Publication.  cds_lfht_add*() link a node with a store inside
 * liburcu-cds.so, and lookups and walks find it with loads there: not
 * instrumented, so TSan sees the writer's initialisation of the node's
 * object and a reader's use of it with nothing between.  Here an add
 * releases the node first and a reader acquires a node where it first
 * touches it (the match callback, cds_lfht_iter_get_node): the
 * rcu_assign_pointer/rcu_dereference pair the library makes.  Only nodes
 * the library hands over are acquired, so a plain access by another path
 * is still reported.
 */
#ifndef MP_TSAN_URCU_RCULFHASH_H
#define MP_TSAN_URCU_RCULFHASH_H

#include_next <urcu/rculfhash.h>

#include <sanitizer/tsan_interface.h>

struct mp_tsan_match {
	cds_lfht_match_fct match;
	const void *key;
};

static inline int
mp_tsan_match(struct cds_lfht_node *node, const void *key)
{
	const struct mp_tsan_match *m = key;

	__tsan_acquire(node);
	return m->match(node, m->key);
}

static inline struct cds_lfht_node *
mp_tsan_iter_get_node(struct cds_lfht_iter *iter)
{
	struct cds_lfht_node *node = cds_lfht_iter_get_node(iter);

	if (node != NULL)
		__tsan_acquire(node);
	return node;
}

static inline void
mp_tsan_lookup(struct cds_lfht *ht, unsigned long hash,
	       cds_lfht_match_fct match, const void *key,
	       struct cds_lfht_iter *iter)
{
	struct mp_tsan_match m = { match, key };

	cds_lfht_lookup(ht, hash, mp_tsan_match, &m, iter);
}

static inline void
mp_tsan_next_duplicate(struct cds_lfht *ht, cds_lfht_match_fct match,
		       const void *key, struct cds_lfht_iter *iter)
{
	struct mp_tsan_match m = { match, key };

	cds_lfht_next_duplicate(ht, mp_tsan_match, &m, iter);
}

static inline void
mp_tsan_add(struct cds_lfht *ht, unsigned long hash,
	    struct cds_lfht_node *node)
{
	__tsan_release(node);
	cds_lfht_add(ht, hash, node);
}

static inline struct cds_lfht_node *
mp_tsan_add_unique(struct cds_lfht *ht, unsigned long hash,
		   cds_lfht_match_fct match, const void *key,
		   struct cds_lfht_node *node)
{
	struct mp_tsan_match m = { match, key };
	struct cds_lfht_node *r;

	__tsan_release(node);
	r = cds_lfht_add_unique(ht, hash, mp_tsan_match, &m, node);
	if (r != NULL)
		__tsan_acquire(r);
	return r;
}

static inline struct cds_lfht_node *
mp_tsan_add_replace(struct cds_lfht *ht, unsigned long hash,
		    cds_lfht_match_fct match, const void *key,
		    struct cds_lfht_node *node)
{
	struct mp_tsan_match m = { match, key };
	struct cds_lfht_node *r;

	__tsan_release(node);
	r = cds_lfht_add_replace(ht, hash, mp_tsan_match, &m, node);
	if (r != NULL)
		__tsan_acquire(r);
	return r;
}

#define cds_lfht_iter_get_node mp_tsan_iter_get_node
#define cds_lfht_lookup mp_tsan_lookup
#define cds_lfht_next_duplicate mp_tsan_next_duplicate
#define cds_lfht_add mp_tsan_add
#define cds_lfht_add_unique mp_tsan_add_unique
#define cds_lfht_add_replace mp_tsan_add_replace

#endif /* MP_TSAN_URCU_RCULFHASH_H */
