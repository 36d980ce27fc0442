/* SPDX-License-Identifier: MIT */
/*
 * Manager: Python's multiprocessing.Manager.  A server process owns dicts,
 * lists and namespaces of byte strings and serves them to proxies.
 *
 * mp_manager_start() forks the server (a daemon child: it dies with the
 * process that started it).  A process forked after that, at any depth,
 * uses the same mp_manager and proxy pointers: its first call opens its
 * own connection to the server (a pair of shared-memory rings).  Calls on
 * one handle from several threads of a process are serialised by it.
 * Keys and values are bytes, copied both ways: a change to a value read
 * from the server is not seen by others until it is written back.
 * Every call returns -EPIPE once the server is gone (shut down or dead).
 */
#ifndef MPROC_MANAGER_H
#define MPROC_MANAGER_H

#include <mproc/common.h>
#include <mproc/queue.h>
#include <mproc/shm.h>
#include <mproc/sync.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef struct mp_manager mp_manager;
typedef struct mp_dict mp_dict;
typedef struct mp_list mp_list;
typedef struct mp_ns mp_ns;

typedef struct mp_manager_attr {
	const char *address;	/* NULL: this process tree; "unix:PATH" */
	const void *authkey;	/* NULL: none */
	size_t authkey_len;	/* 0: none */
} mp_manager_attr;

/* One key and value (update, extend) or one record of a snapshot. */
typedef struct mp_item {
	const void *key;	/* NULL with klen 0 in list snapshots */
	size_t klen;
	const void *val;	/* NULL with vlen 0 in key snapshots */
	size_t vlen;
} mp_item;

/* The longest object name, NUL excluded. */
#define MP_MANAGER_NAME_MAX 255

/*
 * Start a server process and return its handle.  attr NULL (or a zeroed
 * one) serves this process and its descendants; address "unix:PATH" (with
 * a non-empty authkey) also listens on that socket for mp_manager_connect
 * (the owner's shutdown removes it).  Returns 0, -EINVAL, -EADDRINUSE,
 * -ENOMEM, -EMFILE, -EAGAIN (no process), or another -errno of bind().
 */
MP_API int mp_manager_start(mp_manager **m, const mp_manager_attr *attr);

/*
 * Connect to the server listening on address ("unix:PATH") from any
 * process of the same user: both sides prove they hold the authkey
 * (HMAC-SHA256 challenges), then the conversation moves to shared-memory
 * rings.  Children forked later reconnect the same way on first use.
 * Blocks up to 10 s for the server.  Returns 0, -EACCES (wrong key or
 * user: no access at all), -ECONNREFUSED (nobody listens there),
 * -EINVAL, -ENOMEM, -EPIPE.
 */
MP_API int mp_manager_connect(mp_manager **m, const char *address,
			      const void *authkey, size_t authkey_len);

/*
 * Stop the server (any process holding m may call it; idempotent): every
 * later call on m or its proxies, in any process, returns -EPIPE; calls
 * blocked in the server return -EPIPE within 50 ms.  Waits for the
 * server to exit when this process started it.  Returns 0 or -EINVAL.
 */
MP_API int mp_manager_shutdown(mp_manager *m);

/*
 * Release this process's handle and its connection (the server goes on
 * serving the others).  The owner's free also stops the server.  Proxies
 * made from m must be freed first.  NULL is ignored.
 */
MP_API void mp_manager_free(mp_manager *m);

/*
 * Create-or-open a dict, list or namespace on the server.  name NULL: a
 * new anonymous object; otherwise the object of that name (up to
 * MP_MANAGER_NAME_MAX bytes), made on first use.  Returns 0, -EEXIST (the
 * name holds an object of another kind), -EINVAL, -ENOMEM, -EPIPE.
 */
MP_API int mp_manager_dict(mp_manager *m, const char *name, mp_dict **d);
MP_API int mp_manager_list(mp_manager *m, const char *name, mp_list **l);
MP_API int mp_manager_namespace(mp_manager *m, const char *name,
				mp_ns **ns);

/*
 * Create-or-open a server-owned Lock, RLock, Semaphore, BoundedSemaphore,
 * Condition (with its own lock), Event, Barrier, Queue, Value or Array,
 * by name as above.  The server passes the object's shared memory, and
 * the handle returned is the ordinary sync.h/queue.h/shm.h one: its
 * operations never involve the server, and it is freed with its own
 * free (mp_lock_free, ...), before or after the server stops.  A lock
 * held by a client that died is -EOWNERDEAD to its next acquirer.  The
 * parameters are the constructors'; reopening a name with others is
 * -EEXIST (a semaphore's initial value counts only at creation).
 * Returns 0, -EEXIST, -EINVAL, -ENOMEM, -EMFILE, -EPIPE.
 */
MP_API int mp_manager_lock(mp_manager *m, const char *name, mp_lock **l);
MP_API int mp_manager_rlock(mp_manager *m, const char *name,
			    mp_rlock **l);
MP_API int mp_manager_semaphore(mp_manager *m, const char *name,
				unsigned value, mp_sem **s);
MP_API int mp_manager_bounded_semaphore(mp_manager *m, const char *name,
					unsigned value, mp_sem **s);
MP_API int mp_manager_condition(mp_manager *m, const char *name,
				mp_cond **c);
MP_API int mp_manager_event(mp_manager *m, const char *name, mp_event **e);
MP_API int mp_manager_barrier(mp_manager *m, const char *name,
			      unsigned parties, mp_barrier **b);
MP_API int mp_manager_queue(mp_manager *m, const char *name, size_t maxsize,
			    size_t msg_max, mp_queue **q);
MP_API int mp_manager_value(mp_manager *m, const char *name, size_t size,
			    int flags, mp_value **v);
MP_API int mp_manager_array(mp_manager *m, const char *name, size_t n,
			    size_t elem_size, int flags, mp_array **a);

/*
 * Walk a snapshot (mp_dict_keys, mp_dict_items, mp_list_slice): *off
 * starts at 0; each call fills it with pointers into buf.  Returns 1 for
 * an item, 0 at the end, -EINVAL for a bad buffer or argument.
 */
MP_API int mp_item_next(const void *buf, size_t len, size_t *off,
			mp_item *it);

/*
 * Dict.  Keys are byte strings (klen 0 allowed; key may be NULL only with
 * klen 0).  A value too large for cap gives -EMSGSIZE and stays on the
 * server; the _alloc variants return it in memory from malloc() (free it
 * with free(); a 0-length value gets a 1-byte block).  Every call may also
 * return -EINVAL, -ENOMEM and -EPIPE.
 */
/* d[key] = val.  Returns 0. */
MP_API int mp_dict_set(mp_dict *d, const void *key, size_t klen,
		       const void *val, size_t vlen);
/* d[key] into buf.  Returns its length, -ENOENT, -EMSGSIZE. */
MP_API ssize_t mp_dict_get(mp_dict *d, const void *key, size_t klen,
			   void *buf, size_t cap);
MP_API ssize_t mp_dict_get_alloc(mp_dict *d, const void *key, size_t klen,
				 void **val);
/* del d[key].  Returns 0 or -ENOENT. */
MP_API int mp_dict_del(mp_dict *d, const void *key, size_t klen);
/* len(d). */
MP_API ssize_t mp_dict_len(mp_dict *d);
/* key in d: 1 or 0. */
MP_API int mp_dict_contains(mp_dict *d, const void *key, size_t klen);
/* d.pop(key): removes it and returns its length; -ENOENT, -EMSGSIZE
 * (too large for cap: nothing removed). */
MP_API ssize_t mp_dict_pop(mp_dict *d, const void *key, size_t klen,
			   void *buf, size_t cap);
MP_API ssize_t mp_dict_pop_alloc(mp_dict *d, const void *key, size_t klen,
				 void **val);
/* d.setdefault(key, dflt): sets it when absent; returns the value now
 * there in buf (its length; -EMSGSIZE leaves d changed as said). */
MP_API ssize_t mp_dict_setdefault(mp_dict *d, const void *key, size_t klen,
				  const void *dflt, size_t dlen, void *buf,
				  size_t cap);
/* d.update(items): n pairs, applied in order, atomically for readers of
 * the whole dict's snapshot.  Returns 0. */
MP_API int mp_dict_update(mp_dict *d, const mp_item *items, size_t n);
/* d.clear().  Returns 0. */
MP_API int mp_dict_clear(mp_dict *d);
/* Snapshots of the keys or of the items, in no set order, as one block
 * from malloc() in *buf (*len bytes; walk with mp_item_next, free with
 * free()).  Returns the number of items. */
MP_API ssize_t mp_dict_keys(mp_dict *d, void **buf, size_t *len);
MP_API ssize_t mp_dict_items(mp_dict *d, void **buf, size_t *len);
/* Release this process's proxy handle; the dict stays on the server. */
MP_API void mp_dict_free(mp_dict *d);

/*
 * List of byte strings.  Indexes count from the end when negative, as in
 * Python; one out of range is -ERANGE (IndexError).  -EMSGSIZE, _alloc,
 * -EINVAL, -ENOMEM and -EPIPE as for the dict.
 */
MP_API int mp_list_append(mp_list *l, const void *val, size_t vlen);
/* Append items[i].val for each i, atomically.  Returns 0. */
MP_API int mp_list_extend(mp_list *l, const mp_item *items, size_t n);
MP_API ssize_t mp_list_get(mp_list *l, ssize_t index, void *buf,
			   size_t cap);
MP_API ssize_t mp_list_get_alloc(mp_list *l, ssize_t index, void **val);
MP_API int mp_list_set(mp_list *l, ssize_t index, const void *val,
		       size_t vlen);
/* l.insert(index, val): index clamped to the list, as in Python. */
MP_API int mp_list_insert(mp_list *l, ssize_t index, const void *val,
			  size_t vlen);
/* l.pop(index) (index -1: the last).  -ERANGE when empty or out of
 * range; -EMSGSIZE leaves the item in place. */
MP_API ssize_t mp_list_pop(mp_list *l, ssize_t index, void *buf,
			   size_t cap);
MP_API ssize_t mp_list_pop_alloc(mp_list *l, ssize_t index, void **val);
MP_API ssize_t mp_list_len(mp_list *l);
/* l.remove(val): the first equal item.  Returns 0 or -ENOENT. */
MP_API int mp_list_remove(mp_list *l, const void *val, size_t vlen);
/* l[start:stop] (Python's clamping; step 1) as a snapshot block, as
 * mp_dict_items (keys empty).  Returns the number of items. */
MP_API ssize_t mp_list_slice(mp_list *l, ssize_t start, ssize_t stop,
			     void **buf, size_t *len);
MP_API void mp_list_free(mp_list *l);

/*
 * Namespace: attributes by name (a non-empty C string of at most
 * MP_MANAGER_NAME_MAX bytes).  Errors as for the dict.
 */
MP_API int mp_ns_set(mp_ns *ns, const char *attr, const void *val,
		     size_t vlen);
MP_API ssize_t mp_ns_get(mp_ns *ns, const char *attr, void *buf,
			 size_t cap);
MP_API ssize_t mp_ns_get_alloc(mp_ns *ns, const char *attr, void **val);
MP_API int mp_ns_del(mp_ns *ns, const char *attr);
MP_API void mp_ns_free(mp_ns *ns);

#ifdef __cplusplus
}
#endif
#endif /* MPROC_MANAGER_H */
