/* SPDX-License-Identifier: MIT */
/*
 * Anonymous shared mappings backed by memfds.  Every shared object in
 * libmproc lives in one of these.
 */
#ifndef MP__REGION_H
#define MP__REGION_H

#include <stddef.h>
#include <stdint.h>

/*
 * Map size bytes (rounded up to pages) of zeroed memory, shared with
 * children forked later.  The memfd is closed before returning: the mapping
 * alone keeps the memory alive, so no fd is held and nothing is named.
 * Returns 0, -EINVAL (size 0 or absurd), -ENOMEM, or -EMFILE/-ENFILE.
 */
int mp__region_map(size_t size, void **out);

/*
 * As mp__region_map(), but the memfd stays open and is returned in *fd
 * (close-on-exec) for the caller to pass on (SCM_RIGHTS) and close.
 */
int mp__region_map_fd(size_t size, void **out, int *fd);

/*
 * Map a region whose memfd was received from another process; *size is its
 * length (the file's size).  The caller still owns and closes fd.
 * Returns 0, -EINVAL (not a region), -ENOMEM, or another -errno.
 */
int mp__region_attach(int fd, void **out, size_t *size);

/*
 * Make this thread's next mp__region_map() store its memfd in *fd (kept
 * open, close-on-exec, the caller's to close) instead of closing it; NULL
 * cancels.  Lets a constructor's region be exported by fd.
 */
void mp__region_capture(int *fd);

/* Unmap a region of the given size from this process. */
void mp__region_unmap(void *base, size_t size);

/*
 * The first word of every shared struct: a magic per object type and a
 * layout version, checked whenever a process uses or attaches the object,
 * so that a stale or foreign pointer is refused (-EINVAL) rather than
 * trusted.
 */
struct mp__hdr {
	uint32_t magic;
	uint32_t version;
};

#define MP__LAYOUT_VERSION 2

#endif /* MP__REGION_H */
