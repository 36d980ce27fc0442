/* SPDX-License-Identifier: MIT */
#ifndef MPROC_SHM_H
#define MPROC_SHM_H

#include <mproc/common.h>

#ifdef __cplusplus
extern "C" {
#endif

/*
 * Allocate size bytes of zeroed memory shared with every process forked
 * after this call, which uses it through the same pointer.  The memory is
 * an anonymous memfd: nothing is named in /dev/shm and it is gone when the
 * last process that maps it unmaps it or dies.  Aligned to 64 bytes.
 * Returns NULL when size is 0 or memory (or a memfd) cannot be had.
 */
MP_API void *mp_shm_alloc(size_t size);

/*
 * Unmap memory from mp_shm_alloc in this process only; other processes
 * keep their mappings.  NULL is ignored, and so is a pointer that
 * mp_shm_alloc did not return; freeing a block twice in one process is
 * undefined, as with free(3).
 */
MP_API void mp_shm_free(void *p);

typedef struct mp_value mp_value;
typedef struct mp_array mp_array;
typedef struct mp_rlock mp_rlock;	/* sync.h */

/* Flag of mp_value_new/mp_array_new: no lock (Python's lock=False). */
#define MP_NOLOCK 1

/*
 * Make a Value: size bytes of zeroed shared memory (64-byte aligned) with
 * an RLock of its own unless flags has MP_NOLOCK, as Python's
 * Value(typecode, 0).  A process forked later uses it through the same
 * pointer; each process frees its handle.
 * Returns 0, -EINVAL (out NULL, size 0, unknown flags), -ENOMEM, -EMFILE.
 */
MP_API int mp_value_new(mp_value **out, size_t size, int flags);

/* The value's bytes, valid until mp_value_free; NULL for NULL or freed. */
MP_API void *mp_value_ptr(mp_value *v);

/*
 * The value's RLock (Python's get_lock()), owned by the value: valid until
 * mp_value_free, and mp_rlock_free on it does nothing.  NULL with
 * MP_NOLOCK, or for NULL or freed.
 */
MP_API mp_rlock *mp_value_lock(mp_value *v);

/* Release this process's handle and mapping (NULL is ignored). */
MP_API void mp_value_free(mp_value *v);

/*
 * Make an Array of n zeroed elements of elem_size bytes in shared memory,
 * 64-byte aligned, with an RLock unless flags has MP_NOLOCK, as Python's
 * Array(typecode, n).  n may be 0.  Sharing and freeing as mp_value_new.
 * Returns 0, -EINVAL (out NULL, elem_size 0, n * elem_size overflows,
 * unknown flags), -ENOMEM, -EMFILE.
 */
MP_API int mp_array_new(mp_array **out, size_t n, size_t elem_size,
			int flags);

/* The first element, valid until mp_array_free; NULL for NULL or freed. */
MP_API void *mp_array_ptr(mp_array *a);

/* The number of elements; 0 for NULL or freed. */
MP_API size_t mp_array_len(const mp_array *a);

/* The array's RLock, as mp_value_lock. */
MP_API mp_rlock *mp_array_lock(mp_array *a);

/* Release this process's handle and mapping (NULL is ignored). */
MP_API void mp_array_free(mp_array *a);

#ifdef __cplusplus
}
#endif
#endif /* MPROC_SHM_H */
