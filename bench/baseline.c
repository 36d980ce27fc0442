/* SPDX-License-Identifier: MIT */
/*
 * Baselines for mpbench, measured with the same method as the mproc rows.
 *
 * Streaming: the harness forks the producers and the consumers, waits
 * until all are ready, releases them together, lets them run a tenth of
 * the duration to warm up, then reads the consumers' byte counters at the
 * start and at the end of the measured window.  Only the steady state
 * counts, not process start-up or shutdown.  Counters are published every
 * few messages with a relaxed store (one cache line each).
 *
 * Ping-pong: the harness process is one side and forks the other; every
 * round trip is timed and goes into the histogram.  The two sides are
 * pinned to two CPUs (mpb_pin), so every transport crosses CPUs alike and
 * the spinning ones measure the hardware, not the scheduler.  Both sides run closed
 * loop, so there is no coordinated omission to correct: a stall shows up
 * in the round trip that suffered it.
 *
 * Ending: fd transports end by EOF (producers exit, consumers read until
 * nothing is left), the others through a stop word that the waiting side
 * checks, so no child is ever left blocked.
 */
#include "config.h"

#include <errno.h>
#include <fcntl.h>
#include <linux/futex.h>
#include <mqueue.h>
#include <sched.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <mproc.h>

#include "bench/baseline.h"

#define MAXPROC 64

static const char *const names[MPB_T_COUNT] = {
	[MPB_T_PIPE] = "pipe(2)",
	[MPB_T_UNIX_STREAM] = "unix-stream",
	[MPB_T_UNIX_SEQPACKET] = "unix-seqpacket",
	[MPB_T_POSIX_MQ] = "posix-mq",
	[MPB_T_EVENTFD] = "eventfd",
	[MPB_T_FUTEX] = "futex",
	[MPB_T_SPIN] = "spin",
	[MPB_T_VYUKOV] = "vyukov-ring",
};

const char *
mpb_transport_name(enum mpb_transport t)
{
	return (unsigned)t < MPB_T_COUNT ? names[t] : "?";
}

static inline void
cpu_relax(void)
{
#if defined(__x86_64__) || defined(__i386__)
	__builtin_ia32_pause();
#else
	__asm__ __volatile__("" ::: "memory");
#endif
}

static long
futex(uint32_t *w, int op, uint32_t val)
{
	return syscall(SYS_futex, w, op, val, NULL, NULL, 0);
}

/* ---- A minimal Vyukov bounded MPMC ring (the reference bare ring). ---- */

struct vslot {
	uint64_t seq;
	/* size bytes of payload follow */
};

struct vring {
	uint64_t head __attribute__((aligned(64)));	/* consumers */
	uint64_t tail __attribute__((aligned(64)));	/* producers */
	uint64_t mask __attribute__((aligned(64)));
	uint64_t slot_size;
	unsigned char slots[] __attribute__((aligned(64)));
};

static struct vslot *
vslot(struct vring *r, uint64_t i)
{
	return (struct vslot *)(r->slots + (i & r->mask) * r->slot_size);
}

static struct vring *
vring_new(size_t size, size_t nslots)
{
	size_t ss = (sizeof(struct vslot) + size + 7) & ~(size_t)7;
	struct vring *r = mp_shm_alloc(sizeof(*r) + ss * nslots);

	if (r == NULL)
		return NULL;
	r->mask = nslots - 1;
	r->slot_size = ss;
	for (size_t i = 0; i < nslots; i++)
		vslot(r, i)->seq = i;
	return r;
}

static size_t
vring_slots(size_t size)
{
	size_t n = 1024;

	while (n > 16 && n * (size + 8) > (16u << 20))
		n /= 2;
	return n;
}

/* false when *stop became set while the ring was full */
static bool
vring_push(struct vring *r, const void *msg, size_t size, const uint32_t *stop)
{
	uint64_t pos = __atomic_load_n(&r->tail, __ATOMIC_RELAXED);

	for (;;) {
		struct vslot *s = vslot(r, pos);
		uint64_t seq = __atomic_load_n(&s->seq, __ATOMIC_ACQUIRE);
		int64_t dif = (int64_t)(seq - pos);
		if (dif == 0) {
			if (__atomic_compare_exchange_n(&r->tail, &pos, pos + 1,
							true, __ATOMIC_RELAXED,
							__ATOMIC_RELAXED)) {
				memcpy(s + 1, msg, size);
				__atomic_store_n(&s->seq, pos + 1,
						 __ATOMIC_RELEASE);
				return true;
			}
		} else if (dif < 0) {
			if (stop && __atomic_load_n(stop, __ATOMIC_RELAXED))
				return false;
			cpu_relax();
			pos = __atomic_load_n(&r->tail, __ATOMIC_RELAXED);
		} else {
			pos = __atomic_load_n(&r->tail, __ATOMIC_RELAXED);
		}
	}
}

static bool
vring_pop(struct vring *r, void *msg, size_t size, const uint32_t *stop)
{
	uint64_t pos = __atomic_load_n(&r->head, __ATOMIC_RELAXED);

	for (;;) {
		struct vslot *s = vslot(r, pos);
		uint64_t seq = __atomic_load_n(&s->seq, __ATOMIC_ACQUIRE);
		int64_t dif = (int64_t)(seq - (pos + 1));
		if (dif == 0) {
			if (__atomic_compare_exchange_n(&r->head, &pos, pos + 1,
							true, __ATOMIC_RELAXED,
							__ATOMIC_RELAXED)) {
				memcpy(msg, s + 1, size);
				__atomic_store_n(&s->seq, pos + r->mask + 1,
						 __ATOMIC_RELEASE);
				return true;
			}
		} else if (dif < 0) {
			if (stop && __atomic_load_n(stop, __ATOMIC_RELAXED))
				return false;
			cpu_relax();
			pos = __atomic_load_n(&r->head, __ATOMIC_RELAXED);
		} else {
			pos = __atomic_load_n(&r->head, __ATOMIC_RELAXED);
		}
	}
}

/* ---- Shared control block. ---- */

struct ctl {
	uint32_t ready;
	uint32_t go;
	uint32_t stop;
	uint32_t word;		/* futex/spin ping-pong */
	struct {
		uint64_t bytes;
		char pad[56];
	} count[MAXPROC] __attribute__((aligned(64)));
};

static void
wait_go(struct ctl *c)
{
	__atomic_fetch_add(&c->ready, 1, __ATOMIC_RELEASE);
	while (__atomic_load_n(&c->go, __ATOMIC_ACQUIRE) == 0)
		futex(&c->go, FUTEX_WAIT, 0);
}

static void
release_go(struct ctl *c, unsigned n)
{
	while (__atomic_load_n(&c->ready, __ATOMIC_ACQUIRE) < n)
		usleep(200);
	__atomic_store_n(&c->go, 1, __ATOMIC_RELEASE);
	futex(&c->go, FUTEX_WAKE, INT32_MAX);
}

static void
sleep_ns(int64_t ns)
{
	struct timespec ts = { ns / 1000000000, ns % 1000000000 };

	while (nanosleep(&ts, &ts) < 0 && errno == EINTR)
		;
}

static int
writen(int fd, const void *buf, size_t n)
{
	const char *p = buf;

	while (n > 0) {
		ssize_t w = write(fd, p, n);
		if (w < 0) {
			if (errno == EINTR)
				continue;
			return -errno;
		}
		p += w;
		n -= (size_t)w;
	}
	return 0;
}

/* 1 read all n, 0 EOF, <0 error */
static int
readn(int fd, void *buf, size_t n)
{
	char *p = buf;

	while (n > 0) {
		ssize_t r = read(fd, p, n);
		if (r == 0)
			return 0;
		if (r < 0) {
			if (errno == EINTR)
				continue;
			return -errno;
		}
		p += r;
		n -= (size_t)r;
	}
	return 1;
}

/* Endpoints of a transport: a[] written by one side, b[] read by the other. */
struct chan {
	enum mpb_transport t;
	int wfd, rfd;		/* pipe, sockets, eventfd */
	mqd_t mq;
	struct vring *ring;
	size_t size;
};

static int
mq_make(size_t size, long maxmsg, mqd_t *out)
{
	char name[64];
	struct mq_attr a = { .mq_maxmsg = maxmsg, .mq_msgsize = (long)size };

	snprintf(name, sizeof(name), "/mpbench-%d-%ld", (int)getpid(),
		 (long)random());
	mqd_t q = mq_open(name, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0600, &a);
	if (q == (mqd_t)-1)
		return errno == EINVAL || errno == EMFILE || errno == ENOMEM ?
		       -ENOTSUP : -errno;
	mq_unlink(name);	/* The descriptors keep it; nothing is left behind. */
	*out = q;
	return 0;
}

static int
chan_open(struct chan *c, enum mpb_transport t, size_t size)
{
	int fds[2];

	memset(c, 0, sizeof(*c));
	c->mq = (mqd_t)-1;
	c->t = t;
	c->size = size;
	c->wfd = c->rfd = -1;
	switch (t) {
	case MPB_T_PIPE:
		if (pipe2(fds, O_CLOEXEC) < 0)
			return -errno;
		c->rfd = fds[0];
		c->wfd = fds[1];
		return 0;
	case MPB_T_UNIX_STREAM:
	case MPB_T_UNIX_SEQPACKET:
		if (socketpair(AF_UNIX, (t == MPB_T_UNIX_STREAM ? SOCK_STREAM :
			       SOCK_SEQPACKET) | SOCK_CLOEXEC, 0, fds) < 0)
			return -errno;
		c->wfd = fds[0];
		c->rfd = fds[1];
		if (t == MPB_T_UNIX_SEQPACKET) {
			int sz = (int)(size * 4 + 4096);
			if (size > (1u << 20))
				goto notsup;
			setsockopt(c->wfd, SOL_SOCKET, SO_SNDBUF, &sz, sizeof(sz));
			setsockopt(c->rfd, SOL_SOCKET, SO_RCVBUF, &sz, sizeof(sz));
		}
		return 0;
	case MPB_T_POSIX_MQ:
		return mq_make(size ? size : 1, 10, &c->mq);
	case MPB_T_EVENTFD:
		if ((c->rfd = eventfd(0, EFD_CLOEXEC)) < 0)
			return -errno;
		c->wfd = c->rfd;
		return 0;
	case MPB_T_VYUKOV:
		c->ring = vring_new(size, vring_slots(size));
		return c->ring ? 0 : -ENOMEM;
	default:
		return -ENOTSUP;
	}
notsup:
	close(c->wfd);
	close(c->rfd);
	return -ENOTSUP;
}

static void
chan_close(struct chan *c)
{
	if (c->t == MPB_T_POSIX_MQ) {
		if (c->mq != (mqd_t)-1)
			mq_close(c->mq);
		c->mq = (mqd_t)-1;
		return;
	}
	if (c->ring)
		mp_shm_free(c->ring);
	if (c->wfd >= 0)
		close(c->wfd);
	if (c->rfd >= 0 && c->rfd != c->wfd)
		close(c->rfd);
	c->wfd = c->rfd = -1;
	c->ring = NULL;
}

/* Keep only the end this side uses; EOF then works for fd transports. */
static void
chan_keep(struct chan *c, bool writer)
{
	if (c->t == MPB_T_EVENTFD || c->t == MPB_T_POSIX_MQ || c->ring)
		return;
	if (writer) {
		close(c->rfd);
		c->rfd = -1;
	} else {
		close(c->wfd);
		c->wfd = -1;
	}
}

/*
 * POSIX mq waits take an absolute CLOCK_REALTIME deadline: wait in 20 ms
 * slices so that a stop word is noticed.
 */
static struct timespec
mq_deadline(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_REALTIME, &ts);
	ts.tv_nsec += 20000000;
	if (ts.tv_nsec >= 1000000000) {
		ts.tv_sec++;
		ts.tv_nsec -= 1000000000;
	}
	return ts;
}

/* 1 sent, 0 stopped, <0 error */
static int
chan_send(struct chan *c, const void *buf, const uint32_t *stop)
{
	uint64_t one = 1;

	switch (c->t) {
	case MPB_T_PIPE:
	case MPB_T_UNIX_STREAM: {
		int rc = writen(c->wfd, buf, c->size);
		return rc == -EPIPE ? 0 : rc < 0 ? rc : 1;
	}
	case MPB_T_UNIX_SEQPACKET:
		for (;;) {
			ssize_t w = send(c->wfd, buf, c->size, MSG_NOSIGNAL);
			if (w >= 0)
				return 1;
			if (errno == EPIPE)
				return 0;
			if (errno != EINTR)
				return -errno;
		}
	case MPB_T_POSIX_MQ:
		for (;;) {
			struct timespec ts = mq_deadline();
			if (mq_timedsend(c->mq, buf, c->size, 0, &ts) == 0)
				return 1;
			if (errno == ETIMEDOUT) {
				if (stop && __atomic_load_n(stop, __ATOMIC_RELAXED))
					return 0;
				continue;
			}
			if (errno != EINTR)
				return -errno;
		}
	case MPB_T_EVENTFD:
		return writen(c->wfd, &one, sizeof(one)) < 0 ? -errno : 1;
	case MPB_T_VYUKOV:
		return vring_push(c->ring, buf, c->size, stop) ? 1 : 0;
	default:
		return -ENOTSUP;
	}
}

/* bytes received (>0), 0 at EOF or stop, <0 error */
static ssize_t
chan_recv(struct chan *c, void *buf, bool whole, const uint32_t *stop)
{
	uint64_t v;

	switch (c->t) {
	case MPB_T_PIPE:
	case MPB_T_UNIX_STREAM:
		if (whole) {
			int rc = readn(c->rfd, buf, c->size);
			return rc <= 0 ? rc : (ssize_t)c->size;
		}
		for (;;) {
			ssize_t r = read(c->rfd, buf, c->size);
			if (r >= 0)
				return r;
			if (errno != EINTR)
				return -errno;
		}
	case MPB_T_UNIX_SEQPACKET:
		for (;;) {
			ssize_t r = recv(c->rfd, buf, c->size, 0);
			if (r >= 0)
				return r == 0 && c->size ? 0 : (ssize_t)c->size;
			if (errno != EINTR)
				return -errno;
		}
	case MPB_T_POSIX_MQ:
		for (;;) {
			struct timespec ts = mq_deadline();
			ssize_t r = mq_timedreceive(c->mq, buf, c->size ? c->size : 1,
						    NULL, &ts);
			if (r >= 0)
				return c->size ? r : 1;
			if (errno == ETIMEDOUT) {
				if (stop && __atomic_load_n(stop, __ATOMIC_RELAXED))
					return 0;
				continue;
			}
			if (errno != EINTR)
				return -errno;
		}
	case MPB_T_EVENTFD:
		return readn(c->rfd, &v, sizeof(v)) <= 0 ? 0 : 1;
	case MPB_T_VYUKOV:
		return vring_pop(c->ring, buf, c->size, stop) ?
		       (ssize_t)(c->size ? c->size : 1) : 0;
	default:
		return -ENOTSUP;
	}
}

/* ---- Streaming. ---- */

static int
producer(struct ctl *ctl, struct chan *c)
{
	char *buf = calloc(1, c->size ? c->size : 1);

	if (buf == NULL)
		return 1;
	chan_keep(c, true);
	wait_go(ctl);
	while (!__atomic_load_n(&ctl->stop, __ATOMIC_RELAXED)) {
		if (chan_send(c, buf, &ctl->stop) <= 0)
			break;
	}
	free(buf);
	return 0;
}

static int
consumer(struct ctl *ctl, struct chan *c, int idx)
{
	char *buf = malloc(c->size ? c->size : 1);
	uint64_t bytes = 0;
	unsigned n = 0;

	if (buf == NULL)
		return 1;
	chan_keep(c, false);
	wait_go(ctl);
	for (;;) {
		ssize_t r = chan_recv(c, buf, false, &ctl->stop);
		if (r <= 0)
			break;
		bytes += (uint64_t)r;
		/* Publish often enough that a short window sees progress. */
		if ((++n & 15) == 0 || c->size >= 4096)
			__atomic_store_n(&ctl->count[idx].bytes, bytes,
					 __ATOMIC_RELAXED);
	}
	__atomic_store_n(&ctl->count[idx].bytes, bytes, __ATOMIC_RELAXED);
	free(buf);
	return 0;
}

static uint64_t
total_bytes(struct ctl *ctl, int n)
{
	uint64_t s = 0;

	for (int i = 0; i < n; i++)
		s += __atomic_load_n(&ctl->count[i].bytes, __ATOMIC_RELAXED);
	return s;
}

static int
reap_all(pid_t *pids, int n)
{
	int rc = 0;

	for (int i = 0; i < n; i++) {
		int st;
		if (pids[i] <= 0)
			continue;
		while (waitpid(pids[i], &st, 0) < 0 && errno == EINTR)
			;
		if (!WIFEXITED(st) || WEXITSTATUS(st) != 0)
			rc = -ECHILD;
	}
	return rc;
}

int
mpb_base_stream(enum mpb_transport t, size_t size, int producers,
		int consumers, int64_t dur_ns, double *msgs_per_s)
{
	pid_t pids[2 * MAXPROC] = { 0 };
	struct ctl *ctl;
	struct chan c;
	int np = 0, rc;

	if (t == MPB_T_EVENTFD || t == MPB_T_FUTEX || t == MPB_T_SPIN ||
	    (unsigned)t >= MPB_T_COUNT)
		return -ENOTSUP;
	if (producers < 1 || consumers < 1 || producers > MAXPROC ||
	    consumers > MAXPROC || size == 0 || dur_ns <= 0 ||
	    msgs_per_s == NULL)
		return -EINVAL;
	if ((ctl = mp_shm_alloc(sizeof(*ctl))) == NULL)
		return -ENOMEM;
	if ((rc = chan_open(&c, t, size)) < 0) {
		mp_shm_free(ctl);
		return rc;
	}
	fflush(NULL);
	for (int i = 0; i < producers + consumers; i++) {
		pid_t pid = fork();
		if (pid < 0) {
			rc = -errno;
			__atomic_store_n(&ctl->stop, 1, __ATOMIC_RELAXED);
			break;
		}
		if (pid == 0) {
			signal(SIGPIPE, SIG_IGN);
			_exit(i < producers ? producer(ctl, &c) :
			      consumer(ctl, &c, i - producers));
		}
		pids[np++] = pid;
	}
	/* The harness holds no end, so consumers see EOF when producers end. */
	chan_keep(&c, true);
	chan_keep(&c, false);
	if (rc == 0) {
		release_go(ctl, (unsigned)np);
		sleep_ns(dur_ns / 10);
		uint64_t b0 = total_bytes(ctl, consumers), b1;
		int64_t t0 = mpb_now(), t1;
		/*
		 * A short window over a slow transport may see no counter
		 * move: widen it (up to ten times) rather than report 0.
		 */
		int64_t extra = 0;
		do {
			sleep_ns(dur_ns);
			b1 = total_bytes(ctl, consumers);
			t1 = mpb_now();
		} while (b1 == b0 && ++extra < 10);
		*msgs_per_s = (double)(b1 - b0) / (double)size /
			      ((double)(t1 - t0) / 1e9);
	} else {
		release_go(ctl, (unsigned)np);
	}
	__atomic_store_n(&ctl->stop, 1, __ATOMIC_RELEASE);
	int r2 = reap_all(pids, np);
	if (rc == 0)
		rc = r2;
	chan_close(&c);
	mp_shm_free(ctl);
	return rc;
}

/* ---- Ping-pong. ---- */

static void
word_wait(uint32_t *w, uint32_t want, bool sleep)
{
	uint32_t v;

	while ((v = __atomic_load_n(w, __ATOMIC_ACQUIRE)) != want) {
		if (sleep)
			futex(w, FUTEX_WAIT, v);
		else
			cpu_relax();
	}
}

static void
word_set(uint32_t *w, uint32_t v, bool wake)
{
	__atomic_store_n(w, v, __ATOMIC_RELEASE);
	if (wake)
		futex(w, FUTEX_WAKE, 1);
}

/* The echoing side; returns when the stop word is seen or at EOF. */
static int
echo_side(struct ctl *ctl, struct chan *ab, struct chan *ba, char *shared,
	  char *buf)
{
	bool words = ab->t == MPB_T_FUTEX || ab->t == MPB_T_SPIN;
	bool sleep = ab->t == MPB_T_FUTEX;

	chan_keep(ab, false);
	chan_keep(ba, true);
	wait_go(ctl);
	for (;;) {
		if (words) {
			word_wait(&ctl->word, 1, sleep);
			if (__atomic_load_n(&ctl->stop, __ATOMIC_ACQUIRE))
				return 0;
			memcpy(buf, shared, ab->size);
			memcpy(shared, buf, ab->size);
			word_set(&ctl->word, 2, sleep);
			continue;
		}
		if (chan_recv(ab, buf, true, &ctl->stop) <= 0 ||
		    __atomic_load_n(&ctl->stop, __ATOMIC_ACQUIRE))
			return 0;
		if (chan_send(ba, buf, &ctl->stop) <= 0)
			return 0;
	}
}

int
mpb_base_pingpong(enum mpb_transport t, size_t size, int64_t dur_ns,
		  struct mpb_hist *h, double *rtt_ns)
{
	struct chan ab = { .wfd = -1, .rfd = -1, .mq = (mqd_t)-1 };
	struct chan ba = ab;
	bool words = t == MPB_T_FUTEX || t == MPB_T_SPIN;
	bool sleep = t == MPB_T_FUTEX;
	struct ctl *ctl;
	char *buf, *shared = NULL;
	int rc = 0;
	pid_t pid;

	if ((unsigned)t >= MPB_T_COUNT || h == NULL || rtt_ns == NULL ||
	    dur_ns <= 0)
		return -EINVAL;
	if (t == MPB_T_EVENTFD)
		size = sizeof(uint64_t);
	if ((ctl = mp_shm_alloc(sizeof(*ctl))) == NULL)
		return -ENOMEM;
	if ((buf = calloc(1, size ? size : 1)) == NULL) {
		rc = -ENOMEM;
		goto out_ctl;
	}
	if (words) {
		if ((shared = mp_shm_alloc(size ? size : 1)) == NULL) {
			rc = -ENOMEM;
			goto out_buf;
		}
		ab.t = ba.t = t;
		ab.size = ba.size = size;
	} else {
		if ((rc = chan_open(&ab, t, size)) < 0)
			goto out_buf;
		if ((rc = chan_open(&ba, t, size)) < 0) {
			chan_close(&ab);
			goto out_buf;
		}
	}
	fflush(NULL);
	if ((pid = fork()) < 0) {
		rc = -errno;
		goto out_chan;
	}
	if (pid == 0) {
		signal(SIGPIPE, SIG_IGN);
		mpb_pin(1, NULL);
		_exit(echo_side(ctl, &ab, &ba, shared, buf));
	}
	cpu_set_t old_mask;
	bool pinned = mpb_pin(0, &old_mask);
	chan_keep(&ab, true);
	chan_keep(&ba, false);
	release_go(ctl, 1);
	int64_t start = mpb_now(), now = start;
	uint64_t n = 0;
	do {
		int64_t t0 = now;
		if (words) {
			memcpy(shared, buf, size);
			word_set(&ctl->word, 1, sleep);
			word_wait(&ctl->word, 2, sleep);
			memcpy(buf, shared, size);
		} else if ((rc = chan_send(&ab, buf, NULL)) <= 0 ||
			   (rc = (int)chan_recv(&ba, buf, true, NULL)) <= 0) {
			rc = rc == 0 ? -EPIPE : rc;
			break;
		} else {
			rc = 0;
		}
		now = mpb_now();
		mpb_hist_add(h, (uint64_t)(now - t0));
		n++;
	} while (now - start < dur_ns);
	*rtt_ns = n ? (double)(now - start) / (double)n : 0;
	/* Stop the echo side wherever it waits. */
	__atomic_store_n(&ctl->stop, 1, __ATOMIC_RELEASE);
	if (words) {
		word_set(&ctl->word, 1, true);
	} else if (t == MPB_T_EVENTFD || t == MPB_T_POSIX_MQ ||
		   t == MPB_T_VYUKOV) {
		chan_send(&ab, buf, NULL);
	}
	chan_close(&ab);	/* EOF for the fd transports */
	if (pinned)
		sched_setaffinity(0, sizeof(old_mask), &old_mask);
	int r2 = reap_all(&pid, 1);
	if (rc == 0)
		rc = r2;
out_chan:
	chan_close(&ab);
	chan_close(&ba);
	if (shared)
		mp_shm_free(shared);
out_buf:
	free(buf);
out_ctl:
	mp_shm_free(ctl);
	return rc;
}

/* ---- memcpy. ---- */

double
mpb_base_memcpy(size_t size, int64_t dur_ns)
{
	char *a = malloc(size ? size : 1), *b = malloc(size ? size : 1);
	uint64_t n = 0;
	int64_t start, now;

	if (a == NULL || b == NULL) {
		free(a);
		free(b);
		return 0;
	}
	memset(a, 1, size);
	memset(b, 2, size);
	start = now = mpb_now();
	do {
		for (int i = 0; i < 64; i++) {
			memcpy((n & 1) ? a : b, (n & 1) ? b : a, size);
			/* Keep the compiler from dropping the copies. */
			__asm__ __volatile__("" : : "r"(a), "r"(b) : "memory");
			n++;
		}
		now = mpb_now();
	} while (now - start < dur_ns);
	free(a);
	free(b);
	return (double)n * (double)size / ((double)(now - start) / 1e9);
}
