/* SPDX-License-Identifier: MIT */
/*
 * Theory of operation: the Manager's server process
 *
 * The server is a daemon child of the process that called
 * mp_manager_start().  Right after fork it closes every inherited fd but
 * stdio and its end of the connect channel (a SOCK_SEQPACKET socketpair
 * whose other end every client process holds), so it keeps no other
 * object's liveness socket alive.  Its main thread serves connect
 * requests: a client sends one byte with one fd (its end of a private
 * socketpair, SCM_RIGHTS); the server makes a shared-memory pipe with
 * mp__pipe_export(), sends the pipe's memfd and the client end's socket
 * back over the private socket, and starts a thread that serves that
 * connection until the client's end of the pipe is gone (-EPIPE: the
 * client closed it or died, the kernel tells).  recvmsg() on the channel
 * returning 0 means no process holds the clients' end any more: nobody
 * can call again, so the server exits.  With an address, the main thread
 * also accepts on the listening Unix socket (bound by the owner before
 * fork); such a connection's thread first runs the authkey handshake
 * (lib/manager_auth.c) and sends nothing unless it succeeds, then goes on
 * exactly as a channel request, the accepted socket being its side socket.
 *
 * Objects.  Every object has an id (a counter) and optionally a name; two
 * cds_lfht tables map ids and names to objects.  Objects are never freed
 * before the server exits, so a pointer found in a table stays valid, and
 * a proxy's id is checked against the table on every call (a bogus id is
 * -EINVAL, not a crash).  Opening a name inserts with add_unique, so two
 * clients racing to create one name get the same object.
 *
 * Dicts and namespaces are a cds_lfht of immutable entries (key and value
 * in one block).  Readers (get, contains, keys, items, len) run inside
 * rcu_read_lock() and never wait.  Writers of one object take its wlock
 * (a mutex among writers only): set replaces the entry with
 * cds_lfht_add_replace() and frees the old one after a grace period
 * (call_rcu, batched: retire()), so a reader copying it is never cut
 * short.  Composite writes
 * (pop, setdefault, update, clear) are atomic with respect to other
 * writers, and each reader sees a state before or after each write.
 *
 * Lists are an RCU-published vector of value pointers {n, cap, items[]}.
 * Writers (wlock) change the current vector in place with single pointer
 * stores ordered so that a reader of one index always finds the value
 * there before or after the write: append stores items[n] before n+1;
 * insert shifts right from the end, then stores the new item, then n+1;
 * pop and remove shift left, then store n-1.  A full vector is copied to
 * one twice as large, published with rcu_assign_pointer(), and the old
 * one freed after a grace period.  Removed values are freed after a grace
 * period.  A slice reader copies under a sequence count (odd while a
 * writer changes the list) and retries if it moved: readers never block
 * writers, and a slice is one state of the list.
 *
 * Shared-memory objects (Lock, RLock, Semaphore, BoundedSemaphore,
 * Condition, Event, Barrier, Queue, Value, Array).  The server makes one
 * with the type's own constructor while mp__region_capture() keeps the
 * region's memfd, frees its own handle at once (the memfd keeps the pages)
 * and keeps only the memfd and the parameters.  Each open sends the memfd
 * over the connection's side socket (the private socket of the connect
 * handshake, kept for the connection's life) and then the reply; the
 * client maps it into an ordinary handle (lib/import.h).  So lock and
 * queue operations never involve the server, and a lock held by a client
 * that dies is recovered by the lock's own owner-death rule: the next
 * acquirer gets -EOWNERDEAD.  The memory lives as long as any client maps
 * it, even after the server is gone.
 *
 * Invariants:
 *  1. Only the holder of an object's wlock changes it; memory reachable
 *     from a table or a published vector is freed only by call_rcu(),
 *     after every reader that could see it has left its critical section.
 *  2. An object, once in the id table, stays until the process exits.
 *  3. A connection's thread owns its pipe end; only it sends and receives
 *     on it (one request, one reply, in order).
 *
 * Crash analysis:
 *  - A client killed mid-request: its pipe end's socket closes with it;
 *    the connection thread's receive returns -EPIPE (a half-sent request
 *    is dropped by the pipe), the thread closes its end and exits.  A
 *    request received whole is applied whole, its reply lost.
 *  - A client killed mid-connect: the private socket hangs up, sendmsg()
 *    fails or succeeds into nothing; the exported fds are closed either
 *    way, so the pipe's memory goes with the last mapping.
 *  - The server killed anywhere: every client's pipe end sees its peer
 *    gone (within a pipe slice, 50 ms) and returns -EPIPE; connect
 *    requests fail at once (the channel's server end is closed).  All of
 *    the server's memory is private or goes with its mappings.
 */
#include "lib/internal.h"

#include <limits.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <mproc/pipe.h>
#include <mproc/queue.h>
#include <mproc/shm.h>
#include <mproc/sync.h>

#include <ck_pr.h>
#include <urcu.h>
#include <urcu/rculfhash.h>

#include "lib/fdpass.h"
#include "lib/import.h"
#include "lib/manager.h"
#include "lib/pipe.h"
#include "lib/region.h"

#define RBUF_INIT (64 * 1024)
#define RING_SIZE (256 * 1024)

struct obj {
	struct cds_lfht_node id_node;
	struct cds_lfht_node name_node;
	uint64_t id;
	uint32_t kind;
	char *name;		/* NULL: anonymous */
	size_t name_len;
	pthread_mutex_t wlock;	/* writers of this object */
	struct cds_lfht *ht;	/* dict, namespace */
	uint64_t count;		/* dict entries; written under wlock */
	struct lvec *vec;	/* list: RCU-published */
	uint64_t seq;		/* list: odd while a writer changes it */
	int memfd;		/* fd kinds: the region, sent to openers */
	struct mgr_params prm;	/* fd kinds: as made */
};

/* A connection thread's state. */
struct conn {
	mp_conn *c;
	int side;		/* the client's private socket: fds go here */
	bool auth;		/* by address: authenticate first */
};

/* Every block that readers may see starts with its rcu_head (retire()). */
struct entry {
	struct rcu_head rh;
	struct cds_lfht_node node;
	unsigned long hash;
	uint64_t klen, vlen;
	unsigned char data[];	/* key, then value */
};

struct lval {
	struct rcu_head rh;
	uint64_t len;
	unsigned char b[];
};

struct lvec {
	struct rcu_head rh;
	uint64_t n, cap;
	struct lval *items[];
};

/*
 * Deferred frees, batched: one call_rcu() for up to RETIRE_N blocks or
 * RETIRE_BYTES bytes, since a call_rcu() a write would wake liburcu's
 * worker thread for nearly every write (measured: 8x slower sets).  Each
 * connection thread has its own batch and flushes it at exit.
 */
#define RETIRE_N 64
#define RETIRE_BYTES (1024 * 1024)

struct retire_batch {
	struct rcu_head rh;
	unsigned n;
	size_t bytes;
	void *p[RETIRE_N];
};

static __thread struct retire_batch *retired;

static void
batch_free_cb(struct rcu_head *rh)
{
	struct retire_batch *b = caa_container_of(rh, struct retire_batch, rh);

	for (unsigned i = 0; i < b->n; i++)
		free(b->p[i]);
	free(b);
}

static void
block_free_cb(struct rcu_head *rh)
{
	free(rh);
}

static void
retire_flush(void)
{
	if (retired != NULL && retired->n > 0) {
		call_rcu(&retired->rh, batch_free_cb);
		retired = NULL;
	}
}

/* Free a block (its first member is rh) after a grace period. */
static void
retire(struct rcu_head *rh, size_t bytes)
{
	if (retired == NULL)
		retired = calloc(1, sizeof(*retired));
	if (retired == NULL) {
		call_rcu(rh, block_free_cb);
		return;
	}
	retired->p[retired->n++] = rh;
	retired->bytes += bytes;
	if (retired->n == RETIRE_N || retired->bytes >= RETIRE_BYTES)
		retire_flush();
}

static struct {
	struct cds_lfht *ids, *names;
	uint64_t next_id;
	pthread_mutex_t open_lock;	/* makes and inserts objects */
	const unsigned char *key;	/* the authkey (by address) */
	size_t key_len;
} srv;

/* FNV-1a: a hash for the tables, not for anything adversarial. */
static unsigned long
hash_bytes(const void *p, size_t n, uint64_t seed)
{
	const unsigned char *b = p;
	uint64_t h = 1469598103934665603ULL ^ seed;

	for (size_t i = 0; i < n; i++) {
		h ^= b[i];
		h *= 1099511628211ULL;
	}
	return (unsigned long)(h ^ (h >> 29));
}

/* A growable reply: header then payload. */
struct out {
	unsigned char *b;
	size_t len, cap;
};

static int
out_reserve(struct out *o, size_t more)
{
	size_t want = o->len + more, cap = o->cap ? o->cap : 4096;
	unsigned char *nb;

	if (want <= o->cap)
		return 0;
	while (cap < want)
		cap *= 2;
	if ((nb = realloc(o->b, cap)) == NULL)
		return -ENOMEM;
	o->b = nb;
	o->cap = cap;
	return 0;
}

static int
out_put(struct out *o, const void *p, size_t n)
{
	if (out_reserve(o, n) < 0)
		return -ENOMEM;
	if (n > 0)
		memcpy(o->b + o->len, p, n);
	o->len += n;
	return 0;
}

static int
out_rec(struct out *o, const void *k, uint64_t kl, const void *v,
	uint64_t vl)
{
	struct mgr_rec r = { kl, vl };
	static const unsigned char zero[8];
	uint64_t total = sizeof(r) + kl + vl;

	if (out_reserve(o, mgr_pad8(total)) < 0)
		return -ENOMEM;
	out_put(o, &r, sizeof(r));
	out_put(o, k, kl);
	out_put(o, v, vl);
	return out_put(o, zero, mgr_pad8(total) - total);
}

static struct mgr_rep *
rep(struct out *o)
{
	return (struct mgr_rep *)o->b;
}

/* Reply payload: a value, or -EMSGSIZE with its length when cap is short. */
static int64_t
out_value(struct out *o, const void *v, uint64_t vlen, uint64_t cap)
{
	if (vlen > cap) {
		rep(o)->need = vlen;
		return -EMSGSIZE;
	}
	if (out_put(o, v, vlen) < 0)
		return -ENOMEM;
	return (int64_t)vlen;
}

/* Walk records in a request payload. */
static int
rec_next(const unsigned char *p, uint64_t len, uint64_t *off,
	 const unsigned char **k, uint64_t *kl, const unsigned char **v,
	 uint64_t *vl)
{
	struct mgr_rec r;

	if (*off == len)
		return 0;
	if (len - *off < sizeof(r))
		return -EINVAL;
	memcpy(&r, p + *off, sizeof(r));
	if (r.klen > MGR_LEN_MAX || r.vlen > MGR_LEN_MAX ||
	    mgr_pad8(sizeof(r) + r.klen + r.vlen) > len - *off)
		return -EINVAL;
	*k = p + *off + sizeof(r);
	*kl = r.klen;
	*v = *k + r.klen;
	*vl = r.vlen;
	*off += mgr_pad8(sizeof(r) + r.klen + r.vlen);
	return 1;
}

/* ---- objects ---- */

static int
match_id(struct cds_lfht_node *node, const void *key)
{
	return caa_container_of(node, struct obj, id_node)->id ==
	       *(const uint64_t *)key;
}

struct bytes {
	const void *p;
	uint64_t n;
};

static int
match_name(struct cds_lfht_node *node, const void *key)
{
	const struct obj *o = caa_container_of(node, struct obj, name_node);
	const struct bytes *b = key;

	return o->name_len == b->n && memcmp(o->name, b->p, b->n) == 0;
}

/* Called inside rcu_read_lock(); objects are never freed (invariant 2). */
static struct obj *
obj_find(uint64_t id)
{
	struct cds_lfht_iter it;
	struct cds_lfht_node *n;

	cds_lfht_lookup(srv.ids, hash_bytes(&id, sizeof(id), 0), match_id,
			&id, &it);
	n = cds_lfht_iter_get_node(&it);
	return n ? caa_container_of(n, struct obj, id_node) : NULL;
}

static struct obj *
obj_make(uint32_t kind, const void *name, uint64_t nlen)
{
	struct obj *o = calloc(1, sizeof(*o));

	if (o == NULL)
		return NULL;
	o->kind = kind;
	pthread_mutex_init(&o->wlock, NULL);
	if (nlen > 0) {
		if ((o->name = malloc(nlen)) == NULL)
			goto fail;
		memcpy(o->name, name, nlen);
		o->name_len = nlen;
	}
	o->memfd = -1;
	if (kind >= MGR_LOCK) {
		/* made by make_region(), after */
	} else if (kind == MGR_LIST) {
		o->vec = calloc(1, sizeof(struct lvec) +
				       8 * sizeof(struct lval *));
		if (o->vec == NULL)
			goto fail;
		o->vec->cap = 8;
	} else {
		o->ht = cds_lfht_new(64, 64, 0,
				     CDS_LFHT_AUTO_RESIZE | CDS_LFHT_ACCOUNTING,
				     NULL);
		if (o->ht == NULL)
			goto fail;
	}
	return o;
fail:
	free(o->vec);
	free(o->name);
	free(o);
	return NULL;
}

/*
 * Make an fd kind's object with its own constructor, keeping only the
 * region's memfd (mp__region_capture): the server never uses the object,
 * and the memfd keeps its pages.  Returns 0 or the constructor's error.
 */
static int
make_region(uint32_t kind, const struct mgr_params *p, int *fd)
{
	void *h = NULL;
	int rc;

	if (p->a > SIZE_MAX || p->b > SIZE_MAX || p->flags > INT_MAX)
		return -EINVAL;
	*fd = -1;
	mp__region_capture(fd);
	switch (kind) {
	case MGR_LOCK:
		if ((rc = mp_lock_new((mp_lock **)&h)) == 0)
			mp_lock_free(h);
		break;
	case MGR_RLOCK:
		if ((rc = mp_rlock_new((mp_rlock **)&h)) == 0)
			mp_rlock_free(h);
		break;
	case MGR_SEM:
	case MGR_BSEM:
		if (p->a > UINT_MAX)
			rc = -EINVAL;
		else if (kind == MGR_SEM)
			rc = mp_sem_new((mp_sem **)&h, (unsigned)p->a);
		else
			rc = mp_bsem_new((mp_sem **)&h, (unsigned)p->a);
		if (rc == 0)
			mp_sem_free(h);
		break;
	case MGR_COND:
		if ((rc = mp_cond_new((mp_cond **)&h, NULL)) == 0)
			mp_cond_free(h);
		break;
	case MGR_EVENT:
		if ((rc = mp_event_new((mp_event **)&h)) == 0)
			mp_event_free(h);
		break;
	case MGR_BARRIER:
		rc = p->a > UINT_MAX ? -EINVAL
		     : mp_barrier_new((mp_barrier **)&h, (unsigned)p->a);
		if (rc == 0)
			mp_barrier_free(h);
		break;
	case MGR_QUEUE:
		if ((rc = mp_queue_new((mp_queue **)&h, (size_t)p->a,
				       (size_t)p->b)) == 0)
			mp_queue_free(h);
		break;
	case MGR_VALUE:
		if ((rc = mp_value_new((mp_value **)&h, (size_t)p->a,
				       (int)p->flags)) == 0)
			mp_value_free(h);
		break;
	case MGR_ARRAY:
		if ((rc = mp_array_new((mp_array **)&h, (size_t)p->a,
				       (size_t)p->b, (int)p->flags)) == 0)
			mp_array_free(h);
		break;
	default:
		rc = -EINVAL;
	}
	mp__region_capture(NULL);
	if (rc < 0 && *fd >= 0) {
		close(*fd);
		*fd = -1;
	}
	return rc;
}

/* Whether an existing object answers an open with these parameters. */
static bool
params_match(const struct obj *o, const struct mgr_params *p)
{
	if (o->kind == MGR_SEM || o->kind == MGR_BSEM)
		return true;	/* the initial value counts at creation */
	return o->prm.a == p->a && o->prm.b == p->b &&
	       o->prm.flags == p->flags;
}

/* Send fd to the client over its side socket, before the reply. */
static int
send_fd(int side, int fd)
{
	return mp__fd_send(side, 'F', &fd, 1) == 0 ? 0 : -EPIPE;
}

static int64_t
op_open(uint32_t kind, const void *name, uint64_t nlen,
	const struct mgr_params *prm, int side, struct out *ot)
{
	struct cds_lfht_iter it;
	struct cds_lfht_node *n;
	struct bytes key = { name, nlen };
	unsigned long h = hash_bytes(name, nlen, 1);
	struct obj *o;
	int64_t rc;

	if (kind < MGR_DICT || kind >= MGR_KIND_END ||
	    nlen > MP_MANAGER_NAME_MAX)
		return -EINVAL;
	/* Creation is rare: one lock keeps the two tables in step. */
	pthread_mutex_lock(&srv.open_lock);
	if (nlen > 0) {
		rcu_read_lock();
		cds_lfht_lookup(srv.names, h, match_name, &key, &it);
		n = cds_lfht_iter_get_node(&it);
		if (n != NULL) {
			o = caa_container_of(n, struct obj, name_node);
			rc = o->kind == kind && (kind < MGR_LOCK ||
						 params_match(o, prm))
				     ? (int64_t)o->id
				     : -EEXIST;
			rcu_read_unlock();
			goto found;
		}
		rcu_read_unlock();
	}
	if ((o = obj_make(kind, name, nlen)) == NULL) {
		rc = -ENOMEM;
		goto out;
	}
	if (kind >= MGR_LOCK) {
		if ((rc = make_region(kind, prm, &o->memfd)) < 0) {
			free(o->name);
			free(o);
			goto out;
		}
		o->prm = *prm;
	}
	o->id = ++srv.next_id;
	rcu_read_lock();
	cds_lfht_add(srv.ids, hash_bytes(&o->id, sizeof(o->id), 0),
		     &o->id_node);
	if (nlen > 0)
		cds_lfht_add(srv.names, h, &o->name_node);
	rcu_read_unlock();
	rc = (int64_t)o->id;
found:
	/* The fd goes first, so it is there when the client reads it. */
	if (rc >= 0 && kind >= MGR_LOCK) {
		if (send_fd(side, o->memfd) < 0)
			rc = -EPIPE;
		else if (out_put(ot, &o->prm, sizeof(o->prm)) < 0)
			rc = -ENOMEM;
	}
out:
	pthread_mutex_unlock(&srv.open_lock);
	return rc;
}

/* ---- dict and namespace ---- */

static int
match_entry(struct cds_lfht_node *node, const void *key)
{
	const struct entry *e = caa_container_of(node, struct entry, node);
	const struct bytes *b = key;

	return e->klen == b->n && memcmp(e->data, b->p, b->n) == 0;
}

static struct entry *
entry_make(const void *k, uint64_t kl, const void *v, uint64_t vl,
	   unsigned long h)
{
	struct entry *e = malloc(sizeof(*e) + kl + vl);

	if (e == NULL)
		return NULL;
	cds_lfht_node_init(&e->node);
	e->hash = h;
	e->klen = kl;
	e->vlen = vl;
	if (kl > 0)
		memcpy(e->data, k, kl);
	if (vl > 0)
		memcpy(e->data + kl, v, vl);
	return e;
}

/* Inside rcu_read_lock(). */
static struct entry *
entry_find(struct obj *o, const void *k, uint64_t kl)
{
	struct bytes key = { k, kl };
	struct cds_lfht_iter it;
	struct cds_lfht_node *n;

	cds_lfht_lookup(o->ht, hash_bytes(k, kl, 2), match_entry, &key, &it);
	n = cds_lfht_iter_get_node(&it);
	return n ? caa_container_of(n, struct entry, node) : NULL;
}

/* Under wlock and rcu_read_lock(): d[k] = v. */
static int
dict_set_locked(struct obj *o, const void *k, uint64_t kl, const void *v,
		uint64_t vl)
{
	unsigned long h = hash_bytes(k, kl, 2);
	struct bytes key = { k, kl };
	struct cds_lfht_node *old;
	struct entry *e = entry_make(k, kl, v, vl, h);

	if (e == NULL)
		return -ENOMEM;
	old = cds_lfht_add_replace(o->ht, h, match_entry, &key, &e->node);
	if (old != NULL) {
		struct entry *oe = caa_container_of(old, struct entry, node);
		retire(&oe->rh, oe->klen + oe->vlen);
	} else {
		ck_pr_store_64(&o->count, o->count + 1);
	}
	return 0;
}

/* Under wlock and rcu_read_lock(). */
static void
dict_del_locked(struct obj *o, struct entry *e)
{
	if (cds_lfht_del(o->ht, &e->node) == 0) {
		ck_pr_store_64(&o->count, o->count - 1);
		retire(&e->rh, e->klen + e->vlen);
	}
}

static int64_t
dict_op(struct obj *o, const struct mgr_req *rq, const unsigned char *k,
	const unsigned char *v, struct out *ot)
{
	struct cds_lfht_iter it;
	struct cds_lfht_node *hn;
	struct entry *e;
	int64_t rc = 0, cnt = 0;

	rcu_read_lock();
	switch (rq->op) {
	case MGR_D_GET:
		e = entry_find(o, k, rq->klen);
		rc = e ? out_value(ot, e->data + e->klen, e->vlen, rq->cap)
		       : -ENOENT;
		break;
	case MGR_D_CONTAINS:
		rc = entry_find(o, k, rq->klen) != NULL;
		break;
	case MGR_D_LEN:
		rc = (int64_t)ck_pr_load_64(&o->count);
		break;
	case MGR_D_KEYS:
	case MGR_D_ITEMS:
		/*
		 * cds_lfht_for_each_entry computes container_of(NULL) at the
		 * end, undefined behaviour that UBSan stops on: walk nodes.
		 */
		cds_lfht_for_each(o->ht, &it, hn) {
			e = caa_container_of(hn, struct entry, node);
			if (out_rec(ot, e->data, e->klen, e->data + e->klen,
				    rq->op == MGR_D_ITEMS ? e->vlen : 0) < 0) {
				cnt = -ENOMEM;
				break;
			}
			cnt++;
		}
		rc = cnt;
		break;
	default:
		pthread_mutex_lock(&o->wlock);
		switch (rq->op) {
		case MGR_D_SET:
			rc = dict_set_locked(o, k, rq->klen, v, rq->vlen);
			break;
		case MGR_D_DEL:
			e = entry_find(o, k, rq->klen);
			if (e == NULL)
				rc = -ENOENT;
			else
				dict_del_locked(o, e);
			break;
		case MGR_D_POP:
			e = entry_find(o, k, rq->klen);
			if (e == NULL) {
				rc = -ENOENT;
				break;
			}
			rc = out_value(ot, e->data + e->klen, e->vlen, rq->cap);
			if (rc >= 0)
				dict_del_locked(o, e);
			break;
		case MGR_D_SETDEFAULT:
			e = entry_find(o, k, rq->klen);
			if (e == NULL) {
				if ((rc = dict_set_locked(o, k, rq->klen, v,
							  rq->vlen)) < 0)
					break;
				rc = out_value(ot, v, rq->vlen, rq->cap);
			} else {
				rc = out_value(ot, e->data + e->klen, e->vlen,
					       rq->cap);
			}
			break;
		case MGR_D_UPDATE: {
			const unsigned char *rk, *rv;
			uint64_t off = 0, rkl, rvl;
			int r;

			/* Check every record before changing anything. */
			while ((r = rec_next(v, rq->vlen, &off, &rk, &rkl, &rv,
					     &rvl)) > 0)
				;
			if (r < 0) {
				rc = r;
				break;
			}
			off = 0;
			while (rec_next(v, rq->vlen, &off, &rk, &rkl, &rv,
					&rvl) > 0) {
				if ((rc = dict_set_locked(o, rk, rkl, rv,
							  rvl)) < 0)
					break;
			}
			break;
		}
		case MGR_D_CLEAR:
			cds_lfht_for_each(o->ht, &it, hn)
				dict_del_locked(o, caa_container_of(hn,
						struct entry, node));
			break;
		default:
			rc = -EINVAL;
		}
		pthread_mutex_unlock(&o->wlock);
	}
	rcu_read_unlock();
	return rc;
}

/* ---- list ---- */

static struct lval *
lval_make(const void *v, uint64_t vl)
{
	struct lval *x = malloc(sizeof(*x) + vl);

	if (x == NULL)
		return NULL;
	x->len = vl;
	if (vl > 0)
		memcpy(x->b, v, vl);
	return x;
}

/* Python's index rule: negative counts from the end; -1 when outside. */
static int64_t
list_index(int64_t i, uint64_t n)
{
	if (i < 0)
		i += (int64_t)n;
	return i < 0 || (uint64_t)i >= n ? -1 : i;
}

static int64_t
clamp(int64_t i, uint64_t n)
{
	if (i < 0) {
		i += (int64_t)n;
		if (i < 0)
			i = 0;
	}
	return (uint64_t)i > n ? (int64_t)n : i;
}

/* Under wlock: room for `more` items, growing by copy (RCU). */
static struct lvec *
list_room(struct obj *o, uint64_t more)
{
	struct lvec *v = o->vec, *nv;
	uint64_t cap = v->cap;

	if (v->n + more <= v->cap)
		return v;
	while (cap < v->n + more)
		cap *= 2;
	nv = malloc(sizeof(*nv) + cap * sizeof(nv->items[0]));
	if (nv == NULL)
		return NULL;
	nv->n = v->n;
	nv->cap = cap;
	memcpy(nv->items, v->items, v->n * sizeof(v->items[0]));
	/* The copy is complete before readers can find it. */
	rcu_assign_pointer(o->vec, nv);
	retire(&v->rh, v->cap * sizeof(v->items[0]));
	return nv;
}

/* Writers bracket a change with the sequence count that slices check. */
static void
seq_begin(struct obj *o)
{
	ck_pr_store_64(&o->seq, o->seq + 1);
	/* The odd count is visible before any item store. */
	ck_pr_fence_store();
}

static void
seq_end(struct obj *o)
{
	/* Every item store is visible before the even count. */
	ck_pr_fence_store();
	ck_pr_store_64(&o->seq, o->seq + 1);
}

/* Under wlock: insert x at position i (0 <= i <= n), in place. */
static int
list_insert_locked(struct obj *o, uint64_t i, struct lval *x)
{
	struct lvec *v = list_room(o, 1);

	if (v == NULL)
		return -ENOMEM;
	seq_begin(o);
	/* Shift right from the end: index j holds old[j] or old[j-1]. */
	for (uint64_t j = v->n; j > i; j--)
		rcu_assign_pointer(v->items[j], v->items[j - 1]);
	rcu_assign_pointer(v->items[i], x);
	ck_pr_fence_store();
	ck_pr_store_64(&v->n, v->n + 1);
	seq_end(o);
	return 0;
}

/* Under wlock: remove position i, freeing its value after a grace. */
static void
list_remove_locked(struct obj *o, uint64_t i)
{
	struct lvec *v = o->vec;
	struct lval *x = v->items[i];

	seq_begin(o);
	for (uint64_t j = i; j + 1 < v->n; j++)
		rcu_assign_pointer(v->items[j], v->items[j + 1]);
	ck_pr_fence_store();
	ck_pr_store_64(&v->n, v->n - 1);
	seq_end(o);
	retire(&x->rh, x->len);
}

static int64_t
list_slice(struct obj *o, int64_t start, int64_t stop, struct out *ot)
{
	size_t base = ot->len;

	for (;;) {
		uint64_t s = ck_pr_load_64(&o->seq), n, a, b;
		struct lvec *v;

		ck_pr_fence_load();
		if (s & 1) {
			caa_cpu_relax();
			continue;
		}
		v = rcu_dereference(o->vec);
		n = ck_pr_load_64(&v->n);
		ck_pr_fence_load();
		a = (uint64_t)clamp(start, n);
		b = (uint64_t)clamp(stop, n);
		ot->len = base;
		for (uint64_t i = a; i < b; i++) {
			struct lval *x = rcu_dereference(v->items[i]);

			if (out_rec(ot, NULL, 0, x->b, x->len) < 0)
				return -ENOMEM;
		}
		/* Our reads of the items before the re-check of seq. */
		ck_pr_fence_load();
		if (ck_pr_load_64(&o->seq) == s)
			return b > a ? (int64_t)(b - a) : 0;
	}
}

static int64_t
list_op(struct obj *o, const struct mgr_req *rq, const unsigned char *val,
	struct out *ot)
{
	struct lvec *v;
	struct lval *x;
	int64_t rc = 0, i;

	rcu_read_lock();
	switch (rq->op) {
	case MGR_L_GET:
		v = rcu_dereference(o->vec);
		i = list_index(rq->a, ck_pr_load_64(&v->n));
		if (i < 0) {
			rc = -ERANGE;
			break;
		}
		/* n was read before the item (the writer stores it after). */
		ck_pr_fence_load();
		x = rcu_dereference(v->items[i]);
		rc = out_value(ot, x->b, x->len, rq->cap);
		break;
	case MGR_L_LEN:
		v = rcu_dereference(o->vec);
		rc = (int64_t)ck_pr_load_64(&v->n);
		break;
	case MGR_L_SLICE:
		rc = list_slice(o, rq->a, rq->b, ot);
		break;
	default:
		pthread_mutex_lock(&o->wlock);
		v = o->vec;
		switch (rq->op) {
		case MGR_L_APPEND:
			if ((x = lval_make(val, rq->vlen)) == NULL)
				rc = -ENOMEM;
			else if ((rc = list_insert_locked(o, v->n, x)) < 0)
				free(x);
			break;
		case MGR_L_EXTEND: {
			const unsigned char *rk, *rv;
			uint64_t off = 0, rkl, rvl, cnt = 0;
			int r;

			while ((r = rec_next(val, rq->vlen, &off, &rk, &rkl,
					     &rv, &rvl)) > 0)
				cnt++;
			if (r < 0 || list_room(o, cnt) == NULL) {
				rc = r < 0 ? r : -ENOMEM;
				break;
			}
			off = 0;
			while (rec_next(val, rq->vlen, &off, &rk, &rkl, &rv,
					&rvl) > 0) {
				if ((x = lval_make(rv, rvl)) == NULL) {
					rc = -ENOMEM;
					break;
				}
				list_insert_locked(o, o->vec->n, x);
			}
			break;
		}
		case MGR_L_SET:
			if ((i = list_index(rq->a, v->n)) < 0) {
				rc = -ERANGE;
				break;
			}
			if ((x = lval_make(val, rq->vlen)) == NULL) {
				rc = -ENOMEM;
				break;
			}
			seq_begin(o);
			x = rcu_xchg_pointer(&v->items[i], x);
			seq_end(o);
			retire(&x->rh, x->len);
			break;
		case MGR_L_INSERT:
			i = clamp(rq->a, v->n);
			if ((x = lval_make(val, rq->vlen)) == NULL)
				rc = -ENOMEM;
			else if ((rc = list_insert_locked(o, (uint64_t)i,
							  x)) < 0)
				free(x);
			break;
		case MGR_L_POP:
			if ((i = list_index(rq->a, v->n)) < 0) {
				rc = -ERANGE;
				break;
			}
			x = v->items[i];
			rc = out_value(ot, x->b, x->len, rq->cap);
			if (rc >= 0)
				list_remove_locked(o, (uint64_t)i);
			break;
		case MGR_L_REMOVE:
			rc = -ENOENT;
			for (uint64_t j = 0; j < v->n; j++) {
				x = v->items[j];
				if (x->len == rq->vlen &&
				    memcmp(x->b, val, x->len) == 0) {
					list_remove_locked(o, j);
					rc = 0;
					break;
				}
			}
			break;
		default:
			rc = -EINVAL;
		}
		pthread_mutex_unlock(&o->wlock);
	}
	rcu_read_unlock();
	return rc;
}

/* ---- connections ---- */

static int64_t
dispatch(const struct mgr_req *rq, const unsigned char *k,
	 const unsigned char *v, struct out *ot, int side)
{
	struct mgr_params prm = { (uint64_t)rq->a, (uint64_t)rq->b, rq->obj };
	struct obj *o;
	uint32_t kind;

	if (rq->op == MGR_OPEN)
		return op_open(rq->kind, k, rq->klen, &prm, side, ot);
	if (rq->op <= MGR_OPEN || rq->op >= MGR_OP_END)
		return -EINVAL;
	rcu_read_lock();
	o = obj_find(rq->obj);
	rcu_read_unlock();
	if (o == NULL)
		return -EINVAL;
	kind = o->kind;
	if (rq->op >= MGR_L_APPEND)
		return kind == MGR_LIST ? list_op(o, rq, v, ot) : -EINVAL;
	return kind == MGR_DICT || kind == MGR_NS ? dict_op(o, rq, k, v, ot)
						  : -EINVAL;
}

static void *
conn_main(void *arg)
{
	struct conn *cn = arg;
	mp_conn *c = cn->c;
	struct out ot = { 0 };
	unsigned char *buf = malloc(RBUF_INIT);
	void *big = NULL;
	ssize_t n;

	rcu_register_thread();
	while (buf != NULL) {
		const unsigned char *msg = buf;
		struct mgr_req rq;
		int64_t rc;

		n = mp_conn_recv(c, buf, RBUF_INIT);
		if (n == -EMSGSIZE) {
			n = mp_conn_recv_alloc(c, &big);
			msg = big;
		}
		if (n < 0)
			break;
		ot.len = 0;
		if (out_reserve(&ot, sizeof(struct mgr_rep)) < 0)
			break;
		ot.len = sizeof(struct mgr_rep);
		memset(ot.b, 0, sizeof(struct mgr_rep));
		if ((size_t)n < sizeof(rq)) {
			rc = -EINVAL;
		} else {
			memcpy(&rq, msg, sizeof(rq));
			if (rq.klen > MGR_LEN_MAX || rq.vlen > MGR_LEN_MAX ||
			    sizeof(rq) + rq.klen + rq.vlen != (uint64_t)n)
				rc = -EINVAL;
			else
				rc = dispatch(&rq, msg + sizeof(rq),
					      msg + sizeof(rq) + rq.klen, &ot,
					      cn->side);
		}
		free(big);
		big = NULL;
		if (rc < 0)
			ot.len = sizeof(struct mgr_rep);
		rep(&ot)->rc = rc;
		rep(&ot)->len = ot.len - sizeof(struct mgr_rep);
		if (mp_conn_send(c, ot.b, ot.len) < 0)
			break;
	}
	free(big);
	free(ot.b);
	free(buf);
	mp_conn_close(c);
	close(cn->side);
	free(cn);
	retire_flush();
	rcu_unregister_thread();
	return NULL;
}

/*
 * Send the new connection's pipe end (memfd and socket) over the client's
 * socket.  Returns 0 or -EPIPE (the client went away).
 */
static int
send_pipe(struct conn *cn)
{
	int fds[2], rc;

	if ((rc = mp__pipe_export(RING_SIZE, &cn->c, &fds[0], &fds[1])) < 0)
		return rc;
	rc = mp__fd_send(cn->side, 'K', fds, 2);
	/* Sent or not, the client's copies are the only ones that count. */
	close(fds[0]);
	close(fds[1]);
	if (rc < 0) {
		mp_conn_close(cn->c);
		return -EPIPE;
	}
	return 0;
}

/*
 * A connection's thread: authenticate (connections by address), hand the
 * client its pipe end, then serve it.
 */
static void *
conn_thread(void *arg)
{
	struct conn *cn = arg;

	if ((cn->auth && mp__mgr_auth_server(cn->side, srv.key,
					     srv.key_len) < 0) ||
	    send_pipe(cn) < 0) {
		close(cn->side);
		free(cn);
		return NULL;
	}
	return conn_main(cn);
}

/* Start a thread for one connect request on the client's socket `side`. */
static void
accept_one(int side, bool auth)
{
	pthread_attr_t pa;
	pthread_t th;
	struct conn *cn;

	if ((cn = malloc(sizeof(*cn))) == NULL) {
		close(side);	/* the client sees its socket hang up */
		return;
	}
	cn->side = side;
	cn->auth = auth;
	cn->c = NULL;
	pthread_attr_init(&pa);
	pthread_attr_setdetachstate(&pa, PTHREAD_CREATE_DETACHED);
	if (pthread_create(&th, &pa, conn_thread, cn) != 0) {
		close(side);
		free(cn);
	}
	pthread_attr_destroy(&pa);
}

/* Close every inherited fd but stdio, a and b (a < b; b may be -1). */
static void
close_others(int a, int b)
{
	int keep[2] = { a < b || b < 0 ? a : b, a < b || b < 0 ? b : a };
	unsigned from = 3;

	for (int i = 0; i < 2; i++) {
		if (keep[i] < 0)
			continue;
		if ((unsigned)keep[i] > from)
			syscall(SYS_close_range, from, (unsigned)keep[i] - 1,
				0U);
		from = (unsigned)keep[i] + 1;
	}
	syscall(SYS_close_range, from, ~0U, 0U);
}

/* One connect request on the channel: its fd is the client's socket. */
static int
channel_request(int ctl)
{
	int fd, rc = mp__fd_recv(ctl, &fd, 1);

	if (rc == 1)
		accept_one(fd, false);
	if (rc == 0)
		return -1;	/* no client process is left */
	/* Nothing there, or a message without its socket: ignored. */
	return rc == 1 || rc == -EAGAIN || rc == -EBADMSG ? 0 : -1;
}

int
mp__manager_serve(void *arg)
{
	struct mgr_server_arg *sa = arg;
	struct pollfd p[2] = { { .fd = sa->ctl, .events = POLLIN },
			       { .fd = sa->lfd, .events = POLLIN } };

	close_others(sa->ctl, sa->lfd);
	signal(SIGPIPE, SIG_IGN);
	srv.key = sa->key;
	srv.key_len = sa->key_len;
	pthread_mutex_init(&srv.open_lock, NULL);
	rcu_register_thread();
	srv.ids = cds_lfht_new(64, 64, 0, CDS_LFHT_AUTO_RESIZE, NULL);
	srv.names = cds_lfht_new(64, 64, 0, CDS_LFHT_AUTO_RESIZE, NULL);
	if (srv.ids == NULL || srv.names == NULL)
		_exit(1);
	rcu_thread_offline();
	for (;;) {
		if (poll(p, sa->lfd >= 0 ? 2 : 1, -1) < 0) {
			if (errno == EINTR)
				continue;
			break;
		}
		if (p[0].revents != 0 && channel_request(sa->ctl) < 0)
			break;
		if (sa->lfd >= 0 && (p[1].revents & POLLIN)) {
			int fd = accept4(sa->lfd, NULL, NULL, SOCK_CLOEXEC);
			if (fd >= 0)
				accept_one(fd, true);
			else if (errno == EMFILE || errno == ENFILE ||
				 errno == ENOBUFS || errno == ENOMEM)
				poll(NULL, 0, 10); /* no spin without fds */
		}
	}
	/* Objects are process memory: exit frees them all at once. */
	_exit(0);
}
