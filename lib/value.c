/* SPDX-License-Identifier: MIT */
/*
 * Theory of operation: Value and Array
 *
 * A Value or an Array is one memfd region:
 *
 *	offset 0     struct mp__mutex: the RLock (unused with MP_NOLOCK)
 *	offset 64    the user's bytes, zeroed, cache-line aligned
 *
 * and a heap handle per process (magic, region, and an RLock handle
 * embedded in it, marked borrowed so that mp_rlock_free on it does
 * nothing).  fork() copies the handle, so a child uses the same pointers.
 * Free clears both magics, unmaps, and returns the handle to the handle
 * pool (lib/lock.c), so a freed handle (and its lock) is -EINVAL or NULL,
 * never a fault.
 *
 * Invariants: (1) the layout above is fixed at creation and read-only
 * afterwards; (2) the user's bytes are only what the caller makes of them:
 * the library never reads or writes them after zeroing.
 *
 * Crash analysis: a process killed holding the RLock is handled by the
 * lock (lib/lock.c): the next acquirer gets -EOWNERDEAD and should treat
 * the bytes as possibly half-written.  Nothing else is shared state.
 */
#include "lib/internal.h"

#include <mproc/shm.h>
#include <mproc/sync.h>

#include <stdlib.h>

#include "lib/import.h"
#include "lib/lock.h"
#include "lib/region.h"

#define VALUE_MAGIC 0x6d70766cu	/* "mpvl" */
#define ARRAY_MAGIC 0x6d706172u	/* "mpar" */
#define DATA_OFFSET MP__CACHELINE

_Static_assert(sizeof(struct mp__mutex) <= DATA_OFFSET, "value layout");

/* Value and Array share one handle form; the magic tells them apart. */
struct shared_bytes {
	uint32_t magic;
	int flags;
	void *base;		/* the region */
	size_t len;		/* the region's length */
	size_t n;		/* Array: elements; Value: bytes */
	struct mp_rlock lock;	/* borrowed; magic 0 with MP_NOLOCK */
};

struct mp_value {
	struct shared_bytes b;
};
_Static_assert(sizeof(struct shared_bytes) <= MP__HANDLE_MAX, "handle");

struct mp_array {
	struct shared_bytes b;
};

static int
bytes_new(struct shared_bytes **out, uint32_t magic, size_t n,
	  size_t elem_size, int flags)
{
	struct shared_bytes *b;
	size_t len;
	int rc;

	if (out == NULL || elem_size == 0 || (flags & ~MP_NOLOCK) != 0)
		return -EINVAL;
	if (n > (SIZE_MAX / 4 - DATA_OFFSET) / elem_size)
		return -EINVAL;
	len = DATA_OFFSET + n * elem_size;
	if ((b = mp__handle_alloc(sizeof(*b))) == NULL)
		return -ENOMEM;
	if ((rc = mp__region_map(len, &b->base)) < 0)
		goto fail_free;
	b->len = len;
	b->n = n;
	b->flags = flags;
	mp__mutex_init(b->base);
	if (!(flags & MP_NOLOCK))
		mp__rlock_embed(&b->lock, b->base);
	b->magic = magic;
	*out = b;
	return 0;
fail_free:
	mp__handle_free(b, sizeof(*b));
	return rc;
}

/* Adopt a region received by fd, made by bytes_new with these values. */
static int
bytes_import(int fd, struct shared_bytes **out, uint32_t magic, size_t n,
	     size_t elem_size, int flags)
{
	struct shared_bytes *b;
	struct mp__mutex *m;
	size_t len, size;
	void *base;
	int rc;

	if (out == NULL || elem_size == 0 || (flags & ~MP_NOLOCK) != 0)
		return -EINVAL;
	if (n > (SIZE_MAX / 4 - DATA_OFFSET) / elem_size)
		return -EINVAL;
	len = DATA_OFFSET + n * elem_size;
	if ((rc = mp__region_attach(fd, &base, &size)) < 0)
		return rc;
	m = base;
	if (size < len || m->hdr.magic != MP__MUTEX_SHM_MAGIC ||
	    m->hdr.version != MP__LAYOUT_VERSION) {
		rc = -EINVAL;
		goto fail_unmap;
	}
	if ((b = mp__handle_alloc(sizeof(*b))) == NULL) {
		rc = -ENOMEM;
		goto fail_unmap;
	}
	b->base = base;
	b->len = len;
	b->n = n;
	b->flags = flags;
	if (!(flags & MP_NOLOCK))
		mp__rlock_embed(&b->lock, b->base);
	b->magic = magic;
	*out = b;
	return 0;
fail_unmap:
	mp__region_unmap(base, size);
	return rc;
}

int
mp__value_import(int fd, size_t size, int flags, mp_value **out)
{
	if (size == 0)
		return -EINVAL;
	return bytes_import(fd, (struct shared_bytes **)out, VALUE_MAGIC, size,
			    1, flags);
}

int
mp__array_import(int fd, size_t n, size_t elem_size, int flags,
		 mp_array **out)
{
	return bytes_import(fd, (struct shared_bytes **)out, ARRAY_MAGIC, n,
			    elem_size, flags);
}

static inline struct shared_bytes *
bytes_get(const struct shared_bytes *b, uint32_t magic)
{
	return b != NULL && b->magic == magic ? (struct shared_bytes *)b
					      : NULL;
}

#define AS_VALUE(v) bytes_get((const struct shared_bytes *)(v), VALUE_MAGIC)
#define AS_ARRAY(a) bytes_get((const struct shared_bytes *)(a), ARRAY_MAGIC)

static void
bytes_free(struct shared_bytes *b)
{
	void *base = b->base;

	b->magic = 0;
	mp__rlock_unembed(&b->lock);
	b->base = NULL;
	mp__region_unmap(base, b->len);
	mp__handle_free(b, sizeof(*b));
}

int
mp_value_new(mp_value **out, size_t size, int flags)
{
	if (size == 0)
		return -EINVAL;
	return bytes_new((struct shared_bytes **)out, VALUE_MAGIC, size, 1,
			 flags);
}

void *
mp_value_ptr(mp_value *v)
{
	struct shared_bytes *b = AS_VALUE(v);

	return b != NULL ? (char *)b->base + DATA_OFFSET : NULL;
}

mp_rlock *
mp_value_lock(mp_value *v)
{
	struct shared_bytes *b = AS_VALUE(v);

	return b != NULL && !(b->flags & MP_NOLOCK) ? &b->lock : NULL;
}

void
mp_value_free(mp_value *v)
{
	struct shared_bytes *b = AS_VALUE(v);

	if (b != NULL)
		bytes_free(b);
}

int
mp_array_new(mp_array **out, size_t n, size_t elem_size, int flags)
{
	return bytes_new((struct shared_bytes **)out, ARRAY_MAGIC, n,
			 elem_size, flags);
}

void *
mp_array_ptr(mp_array *a)
{
	struct shared_bytes *b = AS_ARRAY(a);

	return b != NULL ? (char *)b->base + DATA_OFFSET : NULL;
}

size_t
mp_array_len(const mp_array *a)
{
	struct shared_bytes *b = AS_ARRAY(a);

	return b != NULL ? b->n : 0;
}

mp_rlock *
mp_array_lock(mp_array *a)
{
	struct shared_bytes *b = AS_ARRAY(a);

	return b != NULL && !(b->flags & MP_NOLOCK) ? &b->lock : NULL;
}

void
mp_array_free(mp_array *a)
{
	struct shared_bytes *b = AS_ARRAY(a);

	if (b != NULL)
		bytes_free(b);
}
