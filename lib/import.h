/* SPDX-License-Identifier: MIT */
/*
 * Internal: adopt a shared object from its region's memfd, for the
 * Manager's server-owned objects.  The server makes an object with its
 * ordinary constructor under mp__region_capture() and passes the memfd
 * (SCM_RIGHTS); a client maps it with one of these and gets an ordinary
 * handle, freed with the type's own free.  Each checks the region's
 * header and size before trusting it.  fd stays the caller's to close.
 * Each returns 0, -EINVAL (not such an object, or parameters that do not
 * match it), -ENOMEM, or another -errno from mmap.
 */
#ifndef MP__IMPORT_H
#define MP__IMPORT_H

#include <stdbool.h>
#include <stddef.h>

#include <mproc/queue.h>
#include <mproc/shm.h>
#include <mproc/sync.h>

int mp__lock_import(int fd, mp_lock **out);
int mp__rlock_import(int fd, mp_rlock **out);
/* A Condition made with its own lock (mp_cond_new(&c, NULL)). */
int mp__cond_import(int fd, mp_cond **out);
int mp__sem_import(int fd, mp_sem **out);
int mp__event_import(int fd, mp_event **out);
int mp__barrier_import(int fd, mp_barrier **out);
/* n, elem_size and flags as the object was made with. */
int mp__value_import(int fd, size_t size, int flags, mp_value **out);
int mp__array_import(int fd, size_t n, size_t elem_size, int flags,
		     mp_array **out);
int mp__queue_import(int fd, size_t maxsize, size_t msg_max,
		     mp_queue **out);

#endif /* MP__IMPORT_H */
