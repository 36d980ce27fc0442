/* SPDX-License-Identifier: MIT */
/*
 * Theory of operation
 *
 * A region is memfd_create() + ftruncate() + mmap(MAP_SHARED), after which
 * the fd is closed at once.  The mapping keeps the memfd's pages alive;
 * fork() copies the mapping, so a child reaches the same pages through the
 * same pointer.  When the last process that maps a region unmaps it or
 * dies, however it dies, the kernel frees the pages: there is no name in
 * /dev/shm or anywhere in the file system to leave behind.
 *
 * mp_shm_alloc() puts a small header before the user's bytes so that
 * mp_shm_free() knows the length to unmap.  The header is written once,
 * before any other process can see the region, and only read afterwards.
 *
 * mp__region_map_fd() keeps the memfd open for the caller, which passes it
 * to a process that is not a child (SCM_RIGHTS) and closes it;
 * mp__region_attach() maps such a received fd.  The Manager uses the pair
 * to hand its connections' rings to clients forked after it started.
 * mp__region_capture() makes the calling thread's next mp__region_map()
 * keep its fd as well, so that an object made by its ordinary constructor
 * can be exported (the Manager's server-owned locks, queues, values).
 *
 * Crash analysis: a process killed inside mp__region_map() loses only its
 * own memfd and mapping, which the kernel reclaims with the process.
 */
#include "lib/internal.h"

#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <mproc/shm.h>

#include "lib/region.h"

static size_t
page_round(size_t size)
{
	size_t page = (size_t)sysconf(_SC_PAGESIZE);

	return (size + page - 1) & ~(page - 1);
}

/* Where the next map of this thread leaves its fd (mp__region_capture). */
static __thread int *capture;

void
mp__region_capture(int *fd)
{
	capture = fd;
}

int
mp__region_map(size_t size, void **out)
{
	int fd, rc, *keep = capture;

	capture = NULL;
	if ((rc = mp__region_map_fd(size, out, &fd)) == 0) {
		if (keep != NULL)
			*keep = fd;
		else
			close(fd);
	}
	return rc;
}

int
mp__region_map_fd(size_t size, void **out, int *fdp)
{
	size_t len;
	void *p;
	int fd, rc;

	if (size == 0 || size > (SIZE_MAX >> 2))
		return -EINVAL;
	len = page_round(size);
	fd = memfd_create("mproc", MFD_CLOEXEC);
	if (fd < 0)
		return errno == ENOMEM ? -ENOMEM : -errno;
	if (ftruncate(fd, (off_t)len) < 0) {
		rc = errno == EFBIG || errno == EINVAL ? -ENOMEM : -errno;
		close(fd);
		return rc;
	}
	p = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
	if (p == MAP_FAILED) {
		rc = errno == EINVAL ? -ENOMEM : -errno;
		close(fd);
		return rc;
	}
	*out = p;
	*fdp = fd;
	return 0;
}

int
mp__region_attach(int fd, void **out, size_t *size)
{
	struct stat st;
	void *p;

	if (fd < 0 || out == NULL || size == NULL)
		return -EINVAL;
	if (fstat(fd, &st) < 0)
		return -errno;
	if (!S_ISREG(st.st_mode) || st.st_size <= 0 ||
	    (size_t)st.st_size != page_round((size_t)st.st_size))
		return -EINVAL;
	p = mmap(NULL, (size_t)st.st_size, PROT_READ | PROT_WRITE, MAP_SHARED,
		 fd, 0);
	if (p == MAP_FAILED)
		return errno == EINVAL ? -ENOMEM : -errno;
	*out = p;
	*size = (size_t)st.st_size;
	return 0;
}

void
mp__region_unmap(void *base, size_t size)
{
	if (base != NULL)
		munmap(base, page_round(size));
}

/* The header before each mp_shm_alloc block; a whole cache line. */
struct shm_block {
	uint64_t magic;
	uint64_t size;		/* the mapped length, header included */
	uint64_t self;		/* the block's own address: catches stray pointers */
	uint64_t pad[5];
};
_Static_assert(sizeof(struct shm_block) == MP__CACHELINE,
	       "the user block must stay cache-line aligned");

#define SHM_MAGIC 0x6d70726f63736d31ULL	/* "mprocsm1" */

void *
mp_shm_alloc(size_t size)
{
	struct shm_block *b;
	void *p;

	if (size == 0 || size > SIZE_MAX - 2 * sizeof(*b))
		return NULL;
	if (mp__region_map(size + sizeof(*b), &p) < 0)
		return NULL;
	b = p;
	b->magic = SHM_MAGIC;
	b->size = size + sizeof(*b);
	b->self = (uint64_t)(uintptr_t)b;
	return b + 1;
}

void
mp_shm_free(void *p)
{
	struct shm_block *b;
	size_t page = (size_t)sysconf(_SC_PAGESIZE);

	/* Only a block's user pointer sits one header past a page boundary. */
	if (p == NULL || ((uintptr_t)p & (page - 1)) != sizeof(*b))
		return;
	b = (struct shm_block *)p - 1;
	if (b->magic != SHM_MAGIC || b->self != (uint64_t)(uintptr_t)b)
		return;
	mp__region_unmap(b, b->size);
}
