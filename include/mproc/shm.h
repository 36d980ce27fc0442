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

#ifdef __cplusplus
}
#endif
#endif /* MPROC_SHM_H */
