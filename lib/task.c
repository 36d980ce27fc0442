/* SPDX-License-Identifier: MIT */
/*
 * Theory of operation
 *
 * mp__tid() and mp__pid() cache their ids in thread-local storage.  fork()
 * copies the forking thread's TLS into the child, where the cached ids are
 * wrong; a pthread_atfork child handler (which runs in that very thread)
 * clears them, and the child's other threads do not exist.
 *
 * mp__task_alive() reads the state letter of /proc/<id>/stat: a missing
 * entry, 'Z' (zombie) or 'X' (dead) means the owner is gone.  /proc/<tid>
 * resolves thread ids too, although they are not listed.  Without /proc it
 * falls back to kill(id, 0), which cannot see zombies.
 *
 * No shared state: nothing to analyse for crashes.
 */
#include "lib/internal.h"

#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "lib/task.h"

static __thread pid_t cached_pid MP__TLS_IE;
static pthread_once_t atfork_once = PTHREAD_ONCE_INIT;

/* The cache itself: read inline by mp__tid() (lib/task.h). */
__thread pid_t mp__cached_tid MP__TLS_IE;

static void
reset_after_fork(void)
{
	mp__cached_tid = 0;
	cached_pid = 0;
}

static void
install_atfork(void)
{
	pthread_atfork(NULL, NULL, reset_after_fork);
}

pid_t
mp__tid_slow(void)
{
	pthread_once(&atfork_once, install_atfork);
	mp__cached_tid = (pid_t)syscall(SYS_gettid);
	return mp__cached_tid;
}

pid_t
mp__pid(void)
{
	if (MP__UNLIKELY(cached_pid == 0)) {
		pthread_once(&atfork_once, install_atfork);
		cached_pid = getpid();
	}
	return cached_pid;
}

bool
mp__task_alive(pid_t id)
{
	char path[64], buf[512];
	ssize_t n;
	int fd;

	if (id <= 0)
		return false;
	snprintf(path, sizeof(path), "/proc/%d/stat", (int)id);
	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0) {
		if (errno == ENOENT || errno == ESRCH)
			return false;
		/* No /proc here: the kernel's answer, blind to zombies. */
		return kill(id, 0) == 0 || errno == EPERM;
	}
	n = read(fd, buf, sizeof(buf) - 1);
	close(fd);
	if (n <= 0)
		return false;	/* ESRCH: it went away while we looked. */
	buf[n] = 0;
	/* "pid (comm) S ...": comm may hold ')', so take the last one. */
	char *paren = strrchr(buf, ')');
	if (paren == NULL || paren[1] != ' ')
		return true;
	return paren[2] != 'Z' && paren[2] != 'X';
}
