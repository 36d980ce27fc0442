/* SPDX-License-Identifier: MIT */
/*
 * Theory of operation
 *
 * Layout.  A pipe is one memfd region: a control page, then one byte ring
 * of C bytes (a power of two) per direction.  Direction 0 carries c2 -> c1
 * (c1 receives; the only direction of a non-duplex pipe), direction 1
 * carries c1 -> c2.  Each direction's control block has three cache lines:
 *
 *   line 0, the producer's:  head     bytes published (free-running u64)
 *                            send_end end of a message being streamed in
 *                            send_tid the thread that streams it
 *   line 1, the consumer's:  tail     bytes consumed (free-running u64)
 *                            msg_end  end of a message being streamed out
 *   line 2, rarely written:  rwait    bit 0: a receiver sleeps on it (futex)
 *                                     bit 1: an fd watcher is armed
 *                            wwait    bit 0: a sender sleeps on it (futex)
 *                            abort_pos, abort_ack  (withdrawn messages)
 *
 * Line 2 is read on every send and every receive but written only around
 * sleeps, so it stays shared in both caches; head and tail each bounce
 * only when the other side refreshes its cached copy (the handle keeps a
 * lower bound of the other side's index, rigtorp-style, and reads the
 * shared one only when the bound says "full" or "empty").
 *
 * A message is an 8-byte header (its length) and its bytes, padded to 8,
 * starting at an 8-aligned ring position, so a header never wraps.  A
 * message of total size <= C is written whole and published with one store
 * of head.  A larger one streams: the sender publishes the header with the
 * first chunk and each later chunk as room appears (at least C/4 at a
 * time, so that both sides copy in large pieces), and the receiver copies
 * and releases each chunk as it comes.  The receiver records msg_end
 * before it streams, so a successor knows it stands inside a message.
 * The sender records send_tid (mp__tid()) and send_end before the first
 * chunk: two stores a streamed message, none for a whole one.
 *
 * Withdrawal.  A sender whose timeout expires mid-stream stores
 * abort_pos = its published head and returns -ETIMEDOUT; the message was
 * never delivered.  A receiver that stands at abort_pos inside a message
 * (or sees a header whose message contains abort_pos) drops what it got,
 * sets tail to abort_pos rounded up to 8 and abort_ack = abort_pos.  The
 * next message starts at that aligned position, and no sender writes one
 * before abort_ack == abort_pos (a second abort cannot overwrite an unseen
 * first one).  A streaming sender records send_end first; a sender that
 * finds send_end beyond head knows that the previous holder of its end
 * died inside a stream, and withdraws that message before its own.
 *
 * A dead streaming sender (invariant 6).  If another process still holds
 * the send end, no end of file comes, and the next sender may never come
 * either.  So a receiver that has waited a whole slice inside a message
 * asks whether send_tid still lives (mp__task_alive, a /proc read, once a
 * slice).  If it is dead and head has still not moved, the rest will never
 * come: the receiver drops the part, sets msg_end = tail = the point
 * reached (the cut) and goes on to the next message.  It writes no
 * producer word: the next sender finds send_end beyond head, withdraws at
 * that same head, and the receiver, standing exactly there, acknowledges
 * as for any withdrawal (abort_at), so that the next message starts on
 * the aligned position after the cut.  A sender that published the rest
 * and exited is not taken for dead: head is re-read after the answer.
 *
 * Deadlines.  A receive's timeout covers the whole call, a streamed
 * message included: one inside a message whose next bytes do not come in
 * time returns -ETIMEDOUT (-EAGAIN with MP_NOWAIT) with tail where it got
 * to.  The part it received moves to the handle's carry (malloc'd, one a
 * handle), and the same handle's next receive copies it out and goes on,
 * so nothing is delivered twice or half.  The carry is valid while tail
 * and msg_end are still what it recorded; a receive through another
 * handle (another process, which has no carry) finds msg_end > tail and
 * discards the rest, as after a receiver's death (invariant 5), and the
 * carry is then stale and dropped.  A child forked while a carry exists
 * has a copy of it and may go on instead; whichever receives first moves
 * tail and makes the other's copy stale.  mp_conn_recv_alloc() takes a
 * ring's worth for a streamed message and grows it (realloc) as bytes
 * arrive, so that an announced length costs memory only once its bytes
 * come; -ENOMEM while growing keeps the part as a deadline does.
 *
 * Corruption (invariant 7).  Only a sender writes a stream's header, after
 * storing send_end = its end.  A receiver inside a message (or reading a
 * header larger than the ring) that lacks bytes while send_end names
 * another end and no withdrawal is pending is facing a peer that wrote
 * over the shared memory: it returns MP_ECORRUPT rather than wait for
 * bytes no sender will write.  A forged header that agrees with send_end
 * is indistinguishable from a slow sender: the deadline bounds it.
 *
 * Liveness.  mp_pipe() also makes an AF_UNIX stream socketpair: every
 * holder of c1 holds the first socket, every holder of c2 the second (fork
 * copies the fds, exec closes them: SOCK_CLOEXEC, like the handle memory
 * that exec discards).  When the last fd of one side is closed - by
 * mp_conn_close() or by the kernel at exit, SIGKILL included - the other
 * socket polls POLLHUP.  So "every holder of the other end is gone" is a
 * single poll() with no timeout on the handle's own socket: the kernel
 * keeps the reference count.  It is asked only on slow paths: each time
 * a waiter is about to sleep (after announcing itself, see 4), and by a
 * non-blocking call that finds nothing.  Once seen, death is cached in the
 * handle.  The same socket is mp_conn_fd(): a sender writes one byte to
 * its own socket (readable at the receiver's) when the receiver armed bit
 * 1, and POLLHUP makes it readable at end of file - which an eventfd could
 * not do for a writer killed by SIGKILL, and it costs no extra fd.  Cost:
 * two fds per pipe in the creating process, one per end held.
 *
 * Why a futex with 50 ms slices rather than sleeping in poll() on the
 * socket: no system call waits on a futex and an fd at once (io_uring's
 * futex op aside, which we do not assume), and sleeping in poll() would
 * make every wake-up a send() plus a recv() and leave mp_wait() without
 * futex_waitv.  So the data path sleeps on futexes; a clean close wakes
 * the other side at once (invariant 4); only a peer killed by a signal,
 * which wakes nobody, waits for the end of the sleeper's slice.  A receiver
 * blocked forever costs 20 wake-ups a second.
 *
 * Waiting on many (mp_wait).  Up to MP__WAITV_MAX (128, futex_waitv's
 * limit) connections, the waiter sets bit 0 of every rwait, re-checks all
 * rings, polls all sockets for hang-ups in one poll(), and sleeps in one
 * futex_waitv for at most a slice.  Beyond 128 it arms bit 1 of every
 * rwait instead, drains the sockets, re-checks, and sleeps in one ppoll()
 * over all the sockets: a publisher sends a byte to an armed receiver, and
 * a hang-up wakes ppoll by itself, so there is no limit and no slice.
 * The price is a send() on the publisher's side, only while armed.
 *
 * Sleeping (adaptive spin, yield, futex).  A waiter first spins for an
 * adaptive budget (doubled when a spin succeeds, halved when it fails,
 * 0.5-50 us; 100 us right after it woke its peer, see spin()), yields
 * once, and sleeps:
 *
 *   waiter:  OR bit into word (atomic);  fence;  re-check the condition;
 *            poll liveness;  futex_wait(word, value seen) for at most
 *            SLICE (50 ms), then again from the top
 *   waker:   store head/tail (atomic);   fence;  load word;
 *            if non-zero: swap word to 0 and wake (futex and/or fd byte)
 *
 * Invariants:
 *  1. Only the producer writes head, send_end, send_tid and abort_pos,
 *     only the consumer tail, msg_end and abort_ack; head - tail <= C
 *     always, and head - tail >= 0 except after a withdrawal, when tail
 *     (rounded up to 8) may lead head by up to 7 until the next message
 *     is published.
 *  2. Bytes in [tail, head) are never overwritten: the producer writes at
 *     or beyond head, and only up to tail + C.
 *  3. No lost wake-up: the waiter's OR and the waker's index store are
 *     each followed by a full fence before the other load (Dekker), so
 *     either the waiter's re-check sees the new index or the waker sees
 *     the bit.  The futex compares the word with the value seen, so a swap
 *     to 0 between the re-check and the sleep makes the wait return.  The
 *     kernel is called only when the bit is set: the fast path of both
 *     sides is two atomic stores-with-fence and some loads, no system call.
 *  4. A set bit whose sleeper died costs one spurious wake, which clears
 *     it.  A clean close wakes the other side's sleepers after its close()
 *     returned (the kernel has hung up the socket by then), and a sleeper
 *     polls liveness after setting its bit, so a close is never missed.
 *     A peer killed by a signal wakes nobody: the sleeper's slice ends and
 *     it polls, so a blocked call notices a dead peer within 50 ms.
 *  5. Between calls tail sits on a message boundary unless msg_end > tail,
 *     which means a receiver died, saw end of file or ran out of time
 *     inside a message; the next receive then goes on from its carry
 *     (same handle) or discards up to msg_end (or the withdrawal point).
 *     After a cut (6) tail sits at the cut, which the next sender's
 *     withdrawal turns into a boundary.
 *  6. While head < msg_end and no withdrawal is pending, send_tid is the
 *     thread streaming that message: a new stream stores it only after
 *     its predecessor was published whole.  So a dead send_tid, with head
 *     re-read after the answer, means the rest of the message never comes.
 *  7. While head < msg_end and no withdrawal is pending, send_end ==
 *     msg_end: the sender stored it before the header, and moves it only
 *     at a new stream (after publishing all of this one) or in withdraw(),
 *     which stores abort_pos first.  A receiver that finds otherwise
 *     reports MP_ECORRUPT, as one that finds head - tail > C (1).
 *
 * Export and import (internal, for the Manager).  mp__pipe_export() makes
 * a duplex pipe whose memfd stays open, keeps end c1 in the caller and
 * hands out end c2 as two fds: the memfd and c2's socket.  The caller sends
 * them (SCM_RIGHTS) to a process that is not its child and closes them;
 * mp__pipe_import() there maps the memfd and adopts the socket as its end.
 * The importer then holds c2 exactly as if it had been forked with it: the
 * socket is its liveness, so every invariant above holds unchanged.  The
 * importer checks the header (magic, version, duplex, ring size against
 * the mapping's length) before trusting any offset.
 *
 * Which operations may overlap:
 *
 *              send    recv    close(other end)   close(same end)
 *   send        no     yes       yes                 no
 *   recv       yes      no       yes                 no
 *
 * "no" means the caller serialises them (one sender and one receiver an
 * end at a time, in any processes); the shared state is built for exactly
 * one producer and one consumer.
 *
 * Crash analysis (what a survivor sees when a process dies at each step):
 *  - Sender, before its head store: nothing was published; the message
 *    is lost with its sender, which never got 0 back.
 *  - Sender, mid-stream of a large message: the receiver has part of it;
 *    it waits, then sees the peer gone (POLLHUP, within a slice), drops
 *    the part and returns -EPIPE once nothing else is left.  If another
 *    process still holds the sending end, the receiver finds send_tid
 *    dead after a slice or two and cuts (6), or its deadline ends the
 *    call first; and that holder's next send sees send_end > head and
 *    withdraws the half message, so the receiver skips what is left of
 *    it (or acknowledges at the cut) and nothing is misparsed.
 *  - Sender, between storing send_tid/send_end and its first chunk: no
 *    receiver stands in that message; the next sender withdraws it.
 *  - Sender in withdraw(), between abort_pos and send_end: the abort is
 *    pending and send_end still beyond head, so the next sender withdraws
 *    again at the same head (idempotent).
 *  - Sender, after the head store, before the wake: the receiver was
 *    spinning (sees it) or sleeping with a bit set; then it wakes at the
 *    end of its slice, finds the data, and later sees EOF.
 *  - Receiver, mid-copy of a whole message: tail was not advanced; the
 *    message stays for the next holder of the end.
 *  - Receiver, mid-stream: msg_end > tail marks the stream; a later
 *    receiver discards the rest of that message (already half delivered
 *    to a dead process) and goes on.  The sender, blocked on a full ring,
 *    sees the receive end gone and gets -EPIPE.  Killed while cutting
 *    (between msg_end and tail): msg_end > tail, discarded as above.
 *  - Any process, with a bit set in rwait or wwait: one spurious wake.
 *  - Any process: its fds close, so liveness is exact for every death;
 *    the memfd pages go with the last mapping.
 */
#include "lib/internal.h"

#include <limits.h>
#include <poll.h>
#include <sched.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <mproc/pipe.h>

#include <ck_backoff.h>
#include <ck_pr.h>

#include "lib/futex.h"
#include "lib/handle.h"
#include "lib/pipe.h"
#include "lib/region.h"
#include "lib/task.h"
#include "lib/testing.h"

#define PIPE_MAGIC 0x6d707069u	/* "mppi" */
#define CONN_MAGIC 0x636f6e6eu	/* "conn" */
#define CONN_DEAD 0x64656164u	/* "dead" */

#define RING_MIN ((uint64_t)4096)
#define RING_MAX ((uint64_t)1 << 30)
#define DATA_OFF 4096		/* the rings start one page in */
#define HDR 8			/* message header: its length, a u64 */
#define SLICE MP_MSEC(50)	/* longest sleep between liveness checks */
#define SPIN_MIN 500		/* ns */
#define SPIN_MAX 50000		/* ns */
#define SPIN_BOOST 100000	/* ns, after waking the peer: see spin() */
#define SPIN_START 20000	/* ns */

#define W_SLEEP 1u		/* bit in rwait/wwait: a futex sleeper */
#define W_ARMED 2u		/* bit in rwait: an fd watcher wants a byte */

struct ring_ctl {
	uint64_t head;		/* line 0: the producer's */
	uint64_t send_end;	/* end of a message being streamed in */
	uint32_t send_tid;	/* the thread that streams it (mp__tid) */
	uint32_t pad_tid;
	uint8_t pad0[MP__CACHELINE - 24];
	uint64_t tail;		/* line 1: the consumer's */
	uint64_t msg_end;
	uint8_t pad1[MP__CACHELINE - 16];
	uint32_t rwait;		/* line 2: read often, written rarely */
	uint32_t wwait;
	uint64_t abort_pos;
	uint64_t abort_ack;
	uint8_t pad2[MP__CACHELINE - 24];
};
_Static_assert(sizeof(struct ring_ctl) == 3 * MP__CACHELINE,
	       "one cache line a role");

struct pipe_shm {
	struct mp__hdr hdr;
	uint32_t duplex;
	uint32_t pad;
	uint64_t ring_size;
	uint8_t pad0[MP__CACHELINE - 24];
	struct ring_ctl dir[2];
};
_Static_assert(sizeof(struct pipe_shm) <= DATA_OFF, "control fits a page");
_Static_assert(sizeof(struct pipe_shm) % MP__CACHELINE == 0,
	       "control lines stay aligned");

struct pipe_local;

/*
 * A streamed message whose receive stopped at its deadline, kept by the
 * handle that received its first part so that its next receive goes on
 * (see "Deadlines" above).  Valid while the ring's tail is still pos and
 * its msg_end is still the message's end.
 */
struct carry {
	uint8_t *buf;		/* from malloc(): the part so far */
	uint64_t size;		/* bytes at buf */
	uint64_t len;		/* the message's length */
	uint64_t start;		/* ring position of its header */
	uint64_t pos;		/* tail when the receive stopped */
};

/* One end as this process holds it; lives in struct pipe_local. */
struct mp_conn {
	uint32_t magic;		/* CONN_MAGIC while open */
	int fd;			/* our socket: liveness, mp_conn_fd */
	struct pipe_local *pl;
	struct ring_ctl *rx, *tx; /* NULL: that direction is not ours */
	uint8_t *rxdata, *txdata;
	uint64_t cap, mask;
	uint64_t rx_head;	/* a lower bound of rx->head (receiver's) */
	uint64_t tx_tail;	/* a lower bound of tx->tail (sender's) */
	int64_t rx_spin;	/* adaptive spin budgets, ns: the receiver's */
	int64_t tx_spin;	/* and the sender's (no field is shared) */
	int fdmode;		/* mp_conn_fd was called: arm bit 1 too */
	int gone;		/* every holder of the other end is gone */
	struct carry *carry;	/* NULL, or a message half received here */
};

/* Both ends of one pipe in this process, and the mapping they share. */
struct pipe_local {
	struct mp_conn end[2];
	struct pipe_shm *shm;
	size_t map_size;
	int open;		/* ends not yet closed in this process */
};
_Static_assert(sizeof(struct pipe_local) <= MP__HANDLE_MAX,
	       "both ends fit one pooled handle");

static inline uint64_t
align8(uint64_t x)
{
	return (x + 7) & ~(uint64_t)7;
}

static inline int64_t
diff(uint64_t a, uint64_t b)
{
	return (int64_t)(a - b);
}

static inline int
conn_ok(const struct mp_conn *c)
{
	return c != NULL && c->magic == CONN_MAGIC;
}

/* Copy n bytes into the ring at free-running position pos (may wrap). */
static void
ring_put(uint8_t *data, uint64_t mask, uint64_t pos, const void *src,
	 size_t n)
{
	size_t at = (size_t)(pos & mask), first = (size_t)(mask + 1) - at;

	if (n <= first) {
		memcpy(data + at, src, n);
	} else {
		memcpy(data + at, src, first);
		memcpy(data, (const uint8_t *)src + first, n - first);
	}
}

static void
ring_get(const uint8_t *data, uint64_t mask, uint64_t pos, void *dst,
	 size_t n)
{
	size_t at = (size_t)(pos & mask), first = (size_t)(mask + 1) - at;

	if (n <= first) {
		memcpy(dst, data + at, n);
	} else {
		memcpy(dst, data + at, first);
		memcpy((uint8_t *)dst + first, data, n - first);
	}
}

/*
 * Whether every holder of the other end is gone: POLLHUP on our socket
 * means the kernel closed the last fd of the peer socket.  A system call:
 * slow paths only.  Death is final, so it is cached.
 */
static bool
peer_gone(struct mp_conn *c)
{
	struct pollfd p = { .fd = c->fd, .events = POLLRDHUP };

	if (ck_pr_load_int(&c->gone))
		return true;
	if (poll(&p, 1, 0) > 0 &&
	    (p.revents & (POLLHUP | POLLRDHUP | POLLERR | POLLNVAL))) {
		ck_pr_store_int(&c->gone, 1);
		/* The peer's last stores came before its fds closed. */
		ck_pr_fence_load();
		return true;
	}
	return false;
}

/* Empty our socket of notification bytes (it is non-blocking). */
static void
drain(int fd)
{
	char buf[64];

	while (recv(fd, buf, sizeof(buf), MSG_DONTWAIT) > 0)
		;
}

/* The receiver of d sleeps or is armed: clear the word and wake. */
static void
wake_rx(struct mp_conn *c, struct ring_ctl *d)
{
	uint32_t old = ck_pr_fas_32(&d->rwait, 0);

	if (old & W_SLEEP) {
		mp__futex_wake(&d->rwait, INT32_MAX);
		/* It will free room soon: wait for it awake (see spin()). */
		c->tx_spin = SPIN_BOOST;
	}
	if (old & W_ARMED) {
		/* Readable at the peer's socket; a full one is, too. */
		(void)send(c->fd, "", 1, MSG_DONTWAIT | MSG_NOSIGNAL);
	}
}

static void
wake_tx(struct mp_conn *c, struct ring_ctl *d)
{
	if (ck_pr_fas_32(&d->wwait, 0) & W_SLEEP) {
		mp__futex_wake(&d->wwait, INT32_MAX);
		/* It will send soon: wait for it awake (see spin()). */
		c->rx_spin = SPIN_BOOST;
	}
}

/* Make [.., head) visible to the receiver and wake it if it sleeps. */
static inline void
publish(struct mp_conn *c, struct ring_ctl *d, uint64_t head)
{
	/* The bytes before head; pairs with the receiver's acquire. */
	ck_pr_fence_store_atomic();
	ck_pr_fas_64(&d->head, head);
	/* head before rwait (invariant 3); pairs with the waiter's OR+fence. */
	ck_pr_fence_atomic_load();
	if (MP__UNLIKELY(ck_pr_load_32(&d->rwait) != 0))
		wake_rx(c, d);
}

/* Give [.., tail) back to the sender and wake it if it sleeps. */
static inline void
release(struct mp_conn *c, struct ring_ctl *d, uint64_t tail)
{
	/* Our reads before tail; pairs with the sender's acquire. */
	ck_pr_fence_load_atomic();
	ck_pr_fas_64(&d->tail, tail);
	/* tail before wwait (invariant 3), as in publish(). */
	ck_pr_fence_atomic_load();
	if (MP__UNLIKELY(ck_pr_load_32(&d->wwait) != 0))
		wake_tx(c, d);
}

static inline bool
abort_at(struct ring_ctl *d, uint64_t pos)
{
	uint64_t ap = ck_pr_load_64(&d->abort_pos);

	return ap == pos && ap != ck_pr_load_64(&d->abort_ack);
}

/* What a waiter waits for. */
enum { W_DATA, W_SPACE };

struct waitc {
	struct mp_conn *c;
	struct ring_ctl *d;
	int kind;
	uint64_t pos;		/* W_DATA: read position; W_SPACE: write */
	uint64_t need;		/* bytes wanted beyond pos */
	int64_t timeout;	/* the caller's relative timeout */
	int64_t deadline;	/* computed at the first wait */
	bool have_deadline;
	bool in_msg;		/* W_DATA inside a streamed message */
};

/* wait_for(): the streaming sender of the message waited in is dead. */
#define SENDER_DEAD 1

static bool
wait_ready(struct waitc *w)
{
	struct ring_ctl *d = w->d;
	struct mp_conn *c = w->c;

	if (w->kind == W_DATA) {
		/* Pairs with the release of head in publish(). */
		uint64_t head = ck_pr_load_64(&d->head);
		ck_pr_fence_load();
		c->rx_head = head;
		return diff(head, w->pos) >= (int64_t)w->need ||
		       abort_at(d, w->pos);
	}
	/* Pairs with the release of tail in release(). */
	uint64_t tail = ck_pr_load_64(&d->tail);
	ck_pr_fence_load();
	c->tx_tail = tail;
	return diff(w->pos + w->need, tail) <= (int64_t)c->cap &&
	       ck_pr_load_64(&d->abort_pos) == ck_pr_load_64(&d->abort_ack);
}

/*
 * Spin for the adaptive budget; true when the condition came true.  The
 * condition is polled often (a short capped backoff), and the clock read
 * only every 16 polls, so that a message is seen a few tens of ns after
 * it lands.  The budget doubles on success and halves on failure, so an
 * idle peer soon costs little CPU.  But a side that has just woken its
 * peer knows the peer will act within a wake-up's latency (30-50 us
 * here): its next wait spins SPIN_BOOST first.  Without that, a stream
 * whose ring fills settles into both sides sleeping once a ring's worth,
 * a wake-up (40 us) per few messages.
 */
static bool
spin(struct waitc *w)
{
	int64_t *spin_ns = w->kind == W_DATA ? &w->c->rx_spin : &w->c->tx_spin;
	int64_t budget = *spin_ns, start = mp__now();
	ck_backoff_t bo = 1;

	for (;;) {
		for (int i = 0; i < 16; i++) {
			if (wait_ready(w)) {
				if (budget < SPIN_MAX)
					*spin_ns = budget * 2;
				return true;
			}
			ck_pr_stall();
			ck_backoff_eb(&bo);
			if (bo > 32)
				bo = 32;
		}
		if (mp__now() - start >= budget)
			break;
	}
	if (budget > SPIN_MIN)
		*spin_ns = budget / 2;
	return false;
}

/*
 * Whether the thread that streams the message we stand in has died
 * (invariant 6).  A system call (it reads /proc): once a slice, on the
 * slow path only.  The tid is that of our message's sender as long as
 * head has not reached the message's end, which wait_ready() re-checks
 * after the answer: a sender that published the rest and then exited is
 * not taken for dead.
 */
static bool
sender_dead(struct waitc *w)
{
	pid_t tid = (pid_t)ck_pr_load_32(&w->d->send_tid);

	if (tid <= 0 || mp__task_alive(tid))
		return false;
	/* The answer before the re-check of head. */
	ck_pr_fence_load();
	return !wait_ready(w);
}

/*
 * Wait until w's condition holds.  Returns 0, -EAGAIN (MP_NOWAIT),
 * -ETIMEDOUT, -EPIPE when the peer is gone and the condition is false, or
 * SENDER_DEAD (w->in_msg only) when the message's streaming sender died.
 */
static int
wait_for(struct waitc *w)
{
	struct mp_conn *c = w->c;
	uint32_t *word = w->kind == W_DATA ? &w->d->rwait : &w->d->wwait;
	uint32_t bits = W_SLEEP;
	bool nowait = w->timeout == MP_NOWAIT;
	int64_t check_at = 0;
	int rc;

	if (w->kind == W_DATA && ck_pr_load_int(&c->fdmode))
		bits |= W_ARMED;
	if (wait_ready(w))
		return 0;
	if (!nowait && spin(w))
		return 0;
	if (nowait) {
		if (peer_gone(c))
			return w->kind == W_DATA && wait_ready(w) ? 0 : -EPIPE;
		if (!(bits & W_ARMED))
			return -EAGAIN;
		/* Arm the fd before reporting empty (the protocol of 3). */
		ck_pr_or_32(word, W_ARMED);
		ck_pr_fence_atomic_load();
		drain(c->fd);
		return wait_ready(w) ? 0 : -EAGAIN;
	}
	if (!w->have_deadline) {
		if ((rc = mp__deadline(w->timeout, &w->deadline)) < 0)
			return rc;
		w->have_deadline = true;
	}
	/* Let a peer that shares our CPU run before we sleep. */
	sched_yield();
	if (wait_ready(w))
		return 0;
	for (;;) {
		/* Announce, then re-check: invariant 3. */
		ck_pr_or_32(word, bits);
		ck_pr_fence_atomic_load();
		if (bits & W_ARMED)
			drain(c->fd);
		if (wait_ready(w))
			return 0;
		/*
		 * Liveness after the announcement: a holder that closes the
		 * other end's last fd loads the word after its close, so
		 * either it sees our bit and wakes us, or this poll sees the
		 * hang-up (mp_conn_close).
		 */
		if (peer_gone(c))
			return w->kind == W_DATA && wait_ready(w) ? 0 : -EPIPE;
		int64_t now = mp__now();
		if (w->in_msg && check_at == 0) {
			check_at = now + SLICE;
		} else if (w->in_msg && now >= check_at) {
			/* A slice without a byte: is the sender still there? */
			if (sender_dead(w))
				return SENDER_DEAD;
			check_at = now + SLICE;
		}
		uint32_t v = ck_pr_load_32(word);
		if (!(v & W_SLEEP))
			continue;	/* a waker cleared it: progress */
		int64_t until = now + SLICE;
		if (w->deadline < until)
			until = w->deadline;
		(void)mp__futex_wait(word, v, until);
		if (wait_ready(w))
			return 0;
		if (w->deadline != MP__NEVER &&
		    mp__now() >= w->deadline)
			return -ETIMEDOUT;
	}
}

/*
 * Withdraw the message being streamed: its bytes stop at head.  The
 * receiver drops it and acknowledges (see the top comment).
 */
static void
withdraw(struct mp_conn *c, struct ring_ctl *d, uint64_t head)
{
	/*
	 * abort_pos before send_end: a receiver that sees the new send_end
	 * then sees the abort too, and does not take the message for a
	 * corrupt one (torn()).
	 */
	ck_pr_fas_64(&d->abort_pos, head);
	ck_pr_store_64(&d->send_end, head);
	/* abort_pos before rwait, as head in publish(). */
	ck_pr_fence_atomic_load();
	if (ck_pr_load_32(&d->rwait) != 0)
		wake_rx(c, d);
}

/* Send a message larger than the ring, chunk by chunk. */
static int
send_stream(struct mp_conn *c, struct waitc *w, uint64_t pos,
	    const uint8_t *msg, uint64_t len, uint64_t total)
{
	struct ring_ctl *d = c->tx;
	uint64_t quarter = c->cap / 4, off = 0;
	int rc;

	/*
	 * Who streams (invariant 6) and where the message ends (invariant 7),
	 * once a message; after our last publish (fas) and before this
	 * message's first, which orders both for the receiver.
	 */
	ck_pr_store_32(&d->send_tid, (uint32_t)mp__tid());
	ck_pr_store_64(&d->send_end, pos + total);
	while (off < total) {
		uint64_t want = total - off < quarter ? total - off : quarter;

		if (diff(pos + off + want, c->tx_tail) > (int64_t)c->cap) {
			w->pos = pos + off;
			w->need = want;
			if ((rc = wait_for(w)) < 0) {
				if (off > 0 && rc != -EPIPE)
					withdraw(c, d, pos + off);
				else if (off == 0)
					ck_pr_store_64(&d->send_end,
						       ck_pr_load_64(&d->head));
				return rc;
			}
		}
		uint64_t room = c->cap - (uint64_t)diff(pos + off, c->tx_tail);
		uint64_t n = room < total - off ? room : total - off;
		uint64_t end = off + n;

		if (off == 0) {
			memcpy(c->txdata + (pos & c->mask), &len, HDR);
			off = HDR;
		}
		/* Payload bytes [off - HDR, end - HDR) clipped to len. */
		if (off - HDR < len) {
			uint64_t stop = end - HDR < len ? end - HDR : len;
			ring_put(c->txdata, c->mask, pos + off,
				 msg + (off - HDR),
				 (size_t)(stop - (off - HDR)));
		}
		off = end;
		publish(c, d, pos + off);
	}
	return 0;
}

static int
conn_send(struct mp_conn *c, const void *msg, size_t len, int64_t timeout)
{
	struct ring_ctl *d;
	uint64_t pos, total;

	if (MP__UNLIKELY(!conn_ok(c) || (msg == NULL && len > 0) ||
			 !MP__TIMEOUT_OK(timeout)))
		return -EINVAL;
	if (MP__UNLIKELY((d = c->tx) == NULL))
		return -EBADF;
	if (MP__UNLIKELY(len > (size_t)SSIZE_MAX - 16))
		return -EMSGSIZE;
	if (MP__UNLIKELY(ck_pr_load_int(&c->gone)))
		return -EPIPE;
	uint64_t head = ck_pr_load_64(&d->head);
	if (MP__UNLIKELY(diff(ck_pr_load_64(&d->send_end), head) > 0)) {
		/* A holder of this end died inside a stream: withdraw it. */
		withdraw(c, d, head);
	}
	pos = align8(head);
	total = HDR + align8(len);
	if (MP__LIKELY(total <= c->cap)) {
		if (diff(pos + total, c->tx_tail) > (int64_t)c->cap) {
			/* Refresh the bound; pairs with release(). */
			c->tx_tail = ck_pr_load_64(&d->tail);
			ck_pr_fence_load();
		}
		if (MP__UNLIKELY(diff(pos + total, c->tx_tail) >
					 (int64_t)c->cap ||
				 ck_pr_load_64(&d->abort_pos) !=
					 ck_pr_load_64(&d->abort_ack))) {
			struct waitc w = { .c = c, .d = d, .kind = W_SPACE,
					   .pos = pos, .need = total,
					   .timeout = timeout };
			int rc = wait_for(&w);
			if (rc < 0)
				return rc;
		}
		uint64_t len64 = len;
		memcpy(c->txdata + (pos & c->mask), &len64, HDR);
		if (len > 0)
			ring_put(c->txdata, c->mask, pos + HDR, msg, len);
		publish(c, d, pos + total);
		return 0;
	}
	struct waitc w = { .c = c, .d = d, .kind = W_SPACE,
			   .timeout = timeout };
	if (ck_pr_load_64(&d->abort_pos) != ck_pr_load_64(&d->abort_ack)) {
		w.pos = pos;
		w.need = HDR;
		int rc = wait_for(&w);
		if (rc < 0)
			return rc;
	}
	return send_stream(c, &w, pos, msg, len, total);
}

int
mp_conn_send(mp_conn *c, const void *msg, size_t len)
{
	return conn_send(c, msg, len, MP_FOREVER);
}

int
mp_conn_send_timeout(mp_conn *c, const void *msg, size_t len,
		     int64_t timeout_ns)
{
	return conn_send(c, msg, len, timeout_ns);
}

/* The receiver skips a withdrawn message whose bytes stop at ap. */
static void
ack_abort(struct mp_conn *c, struct ring_ctl *d, uint64_t ap)
{
	uint64_t t = align8(ap);

	ck_pr_store_64(&d->msg_end, t);
	ck_pr_store_64(&d->abort_ack, ap);
	/* The ack and msg_end before tail: release() orders them (a fas). */
	release(c, d, t);
}

/*
 * Whether the message ending at end, which the receiver stands inside,
 * cannot be one that a sender streams: more than a ring's worth is
 * published (invariant 1), or head has not reached its end and no
 * withdrawal is pending, yet send_end names another end (invariant 7).
 * Only a peer that wrote over the shared memory makes either.
 */
static bool
torn(struct mp_conn *c, struct ring_ctl *d, uint64_t end)
{
	uint64_t se = ck_pr_load_64(&d->send_end), head;

	/*
	 * send_end before abort_pos and head: withdraw() stores abort_pos
	 * before send_end, and a sender moves send_end on to a new message
	 * only after it published all of this one.
	 */
	ck_pr_fence_load();
	head = ck_pr_load_64(&d->head);
	if (diff(head, ck_pr_load_64(&d->tail)) > (int64_t)c->cap)
		return true;
	if (se == end ||
	    ck_pr_load_64(&d->abort_pos) != ck_pr_load_64(&d->abort_ack))
		return false;
	return diff(end, head) > 0;
}

/*
 * Where a streamed message's payload goes: the caller's buffer (size >=
 * the message), or ours from malloc(), grown as bytes arrive, so that a
 * length a peer announces costs memory only once its bytes come.
 */
struct sink {
	uint8_t *p;		/* NULL: discard */
	uint64_t size;		/* bytes at p */
	bool grow;		/* ours: realloc() up to the message length */
};

/* Make room in s for the first need bytes of a message of len bytes. */
static int
sink_room(struct sink *s, uint64_t need, uint64_t len)
{
	uint64_t size = s->size * 2;
	uint8_t *p;

	if (need <= s->size)
		return 0;
	if (!s->grow)
		return MP_ECORRUPT;	/* the caller's buffer holds len */
	if (size < need)
		size = need;
	if (size > len)
		size = len;
	if ((p = realloc(s->p, size)) == NULL)
		return -ENOMEM;
	s->p = p;
	s->size = size;
	return 0;
}

/*
 * Receive the rest of a streamed message of len bytes that starts at
 * start and ends at end, from position pos, into s (NULL: discard),
 * waiting as w says.  Returns 0 when whole; 1 when it was withdrawn, by
 * its sender or by its sender's death (invariant 6); -EAGAIN, -ETIMEDOUT
 * or -EPIPE from the wait, or -ENOMEM from growing s, with tail at the
 * point reached; MP_ECORRUPT (invariants 1 and 7).
 */
static int
recv_stream(struct mp_conn *c, struct waitc *w, uint64_t start, uint64_t end,
	    uint64_t pos, struct sink *s, uint64_t len)
{
	struct ring_ctl *d = c->rx;
	int rc;

	ck_pr_store_64(&d->msg_end, end);
	while (diff(end, pos) > 0) {
		int64_t avail = diff(c->rx_head, pos);

		if (avail <= 0) {
			uint64_t head = ck_pr_load_64(&d->head);
			ck_pr_fence_load();	/* pairs with publish() */
			c->rx_head = head;
			avail = diff(head, pos);
		}
		if (avail <= 0) {
			if (abort_at(d, pos)) {
				ack_abort(c, d, pos);
				return 1;
			}
			if (MP__UNLIKELY(torn(c, d, end)))
				return MP_ECORRUPT;
			w->pos = pos;
			w->need = 1;
			w->in_msg = true;
			rc = wait_for(w);
			w->in_msg = false;
			if (rc == SENDER_DEAD) {
				/*
				 * Invariant 6: the rest never comes.  Stand at
				 * the cut, where the next sender withdraws it.
				 */
				ck_pr_store_64(&d->msg_end, pos);
				if (ck_pr_load_64(&d->tail) != pos)
					release(c, d, pos);
				return 1;
			}
			if (rc < 0)
				return rc;
			continue;
		}
		uint64_t n = (uint64_t)avail < (uint64_t)diff(end, pos)
				     ? (uint64_t)avail
				     : (uint64_t)diff(end, pos);
		uint64_t off = pos - start; /* >= HDR */
		if (s != NULL && off - HDR < len) {
			uint64_t stop = off + n - HDR;

			if (stop > len)
				stop = len;
			if ((rc = sink_room(s, stop, len)) < 0)
				return rc;
			ring_get(c->rxdata, c->mask, pos, s->p + (off - HDR),
				 (size_t)(stop - (off - HDR)));
		}
		pos += n;
		release(c, d, pos);
	}
	return 0;
}

/* Payload bytes of a message of len bytes at start that lie before pos. */
static uint64_t
got_bytes(uint64_t len, uint64_t start, uint64_t pos)
{
	uint64_t off = pos - start;

	if (diff(pos, start) <= HDR)
		return 0;
	return off - HDR < len ? off - HDR : len;
}

/* Forget the half-received message this handle keeps, if any. */
static void
carry_drop(struct mp_conn *c)
{
	struct carry *k = c->carry;

	if (k != NULL) {
		c->carry = NULL;
		free(k->buf);
		free(k);
	}
}

/*
 * Stream the message of len bytes at start into s from position pos (see
 * recv_stream()).  k is the carry this receive goes on from (NULL: none);
 * when s is the caller's buffer, k's buffer holds the first have bytes.
 * A deadline (or -ENOMEM) inside the message keeps the part in the
 * handle's carry; every other outcome consumes k, and s when it is ours
 * unless 0 is returned.  Returns recv_stream()'s result.
 */
static int
stream_in(struct mp_conn *c, struct waitc *w, struct carry *k,
	  uint64_t start, uint64_t pos, struct sink *s, uint64_t len,
	  uint64_t have)
{
	uint64_t end = start + HDR + align8(len);
	int rc;

	if (diff(pos, start + HDR) < 0)
		pos = start + HDR;
	rc = recv_stream(c, w, start, end, pos, s, len);
	if (rc == -ETIMEDOUT || rc == -EAGAIN || rc == -ENOMEM) {
		uint64_t tail = ck_pr_load_64(&c->rx->tail);
		uint64_t got = got_bytes(len, start, tail);

		/* Deadlines: keep the part for this handle's next receive. */
		if (k == NULL && (k = calloc(1, sizeof(*k))) == NULL)
			goto lost;
		if (s->grow) {
			free(k->buf);
			k->buf = s->p;
			k->size = s->size;
		} else if (got > have) {
			if (got > k->size) {
				uint8_t *p = realloc(k->buf, got);

				if (p == NULL)
					goto lost;
				k->buf = p;
				k->size = got;
			}
			memcpy(k->buf + have, s->p + have, got - have);
		}
		k->len = len;
		k->start = start;
		k->pos = tail;
		c->carry = k;
		return rc;
	}
lost:
	/* Whole (s holds it), withdrawn, or an error. */
	if (s->grow && rc != 0)
		free(s->p);
	if (k != NULL) {
		free(k->buf);	/* NULL when s took it over */
		free(k);
	}
	return rc;
}

/* Whether a message at tail of total bytes was withdrawn inside itself. */
static bool
withdrawn(struct ring_ctl *d, uint64_t tail, uint64_t total, uint64_t *ap)
{
	*ap = ck_pr_load_64(&d->abort_pos);
	return *ap != ck_pr_load_64(&d->abort_ack) && diff(*ap, tail) > 0 &&
	       diff(*ap, tail + total) < 0;
}

static ssize_t
conn_recv(struct mp_conn *c, void *buf, size_t cap, void **out,
	  int64_t timeout)
{
	struct ring_ctl *d;
	struct carry *k;
	struct waitc w;
	struct sink s;
	uint64_t tail, me, len, total, ap, have;
	uint8_t *dst;
	int rc;

	if (MP__UNLIKELY(!conn_ok(c) || !MP__TIMEOUT_OK(timeout)))
		return -EINVAL;
	if (MP__UNLIKELY((d = c->rx) == NULL))
		return -EBADF;
	/* One deadline for the whole call, however often it starts over. */
	w = (struct waitc){ .c = c, .d = d, .kind = W_DATA, .need = HDR,
			    .timeout = timeout };
again:
	tail = ck_pr_load_64(&d->tail);
	me = ck_pr_load_64(&d->msg_end);
	if (MP__UNLIKELY(diff(me, tail) > 0)) {
		k = c->carry;
		if (k != NULL && k->pos == tail &&
		    k->start + HDR + align8(k->len) == me) {
			/* A receive of ours stopped here at its deadline. */
			len = k->len;
			if (out == NULL && len > cap)
				return -EMSGSIZE;	/* all of it stays */
			c->carry = NULL;
			have = got_bytes(len, k->start, tail);
			if (out != NULL) {
				s = (struct sink){ k->buf, k->size, true };
				k->buf = NULL;
				k->size = 0;
				have = 0;
			} else {
				s = (struct sink){ buf, len, false };
				if (have > 0)
					memcpy(buf, k->buf, have);
			}
			rc = stream_in(c, &w, k, k->start, tail, &s, len,
				       have);
			if (rc == 1)
				goto again;	/* withdrawn meanwhile */
			if (rc < 0)
				return rc;
			if (out != NULL)
				*out = s.p;
			return (ssize_t)len;
		}
		/* Invariant 5: the rest of a message another receiver began. */
		carry_drop(c);
		rc = recv_stream(c, &w, tail, me, tail, NULL, 0);
		if (rc < 0)
			return rc;
		goto again;
	}
	if (diff(c->rx_head, tail) < HDR) {
		/* Refresh the bound; pairs with the release in publish(). */
		c->rx_head = ck_pr_load_64(&d->head);
		ck_pr_fence_load();
	}
	if (MP__UNLIKELY(diff(c->rx_head, tail) < HDR)) {
		w.pos = tail;
		w.need = HDR;
		if ((rc = wait_for(&w)) < 0)
			return rc;
		if (diff(c->rx_head, tail) < HDR) {
			/* A sender died before its stream's first chunk. */
			if (abort_at(d, tail))
				ack_abort(c, d, tail);
			goto again;
		}
	}
	memcpy(&len, c->rxdata + (tail & c->mask), HDR);
	if (MP__UNLIKELY(len > (uint64_t)SSIZE_MAX - 16))
		return MP_ECORRUPT;
	total = HDR + align8(len);
	if (MP__LIKELY(total <= c->cap)) {
		if (out != NULL) {
			if ((dst = malloc(len > 0 ? len : 1)) == NULL)
				return -ENOMEM;
		} else if (MP__UNLIKELY(len > cap)) {
			return -EMSGSIZE;
		} else {
			dst = buf;
		}
		if (len > 0)
			ring_get(c->rxdata, c->mask, tail + HDR, dst, len);
		release(c, d, tail + total);
		if (out != NULL)
			*out = dst;
		return (ssize_t)len;
	}
	/* Larger than the ring: it streams. */
	if (withdrawn(d, tail, total, &ap)) {
		ack_abort(c, d, ap);
		goto again;
	}
	if (torn(c, d, tail + total))
		return MP_ECORRUPT;
	if (out != NULL) {
		/* A ring's worth now, the rest as it comes (sink_room()). */
		uint64_t first = len < c->cap ? len : c->cap;

		if ((s.p = malloc(first)) == NULL)
			return -ENOMEM;
		s.size = first;
		s.grow = true;
	} else if (MP__UNLIKELY(len > cap)) {
		return -EMSGSIZE;
	} else {
		s = (struct sink){ buf, len, false };
	}
	rc = stream_in(c, &w, NULL, tail, tail + HDR, &s, len, 0);
	if (rc == 1)
		goto again;	/* withdrawn: the next message */
	if (rc < 0)
		return rc;
	if (out != NULL)
		*out = s.p;
	return (ssize_t)len;
}

ssize_t
mp_conn_recv(mp_conn *c, void *buf, size_t cap)
{
	if (buf == NULL && cap > 0)
		return -EINVAL;
	return conn_recv(c, buf, cap, NULL, MP_FOREVER);
}

ssize_t
mp_conn_recv_timeout(mp_conn *c, void *buf, size_t cap, int64_t timeout_ns)
{
	if (buf == NULL && cap > 0)
		return -EINVAL;
	return conn_recv(c, buf, cap, NULL, timeout_ns);
}

ssize_t
mp_conn_recv_alloc(mp_conn *c, void **msg)
{
	if (msg == NULL)
		return -EINVAL;
	return conn_recv(c, NULL, 0, msg, MP_FOREVER);
}

ssize_t
mp_conn_recv_alloc_timeout(mp_conn *c, void **msg, int64_t timeout_ns)
{
	if (msg == NULL)
		return -EINVAL;
	return conn_recv(c, NULL, 0, msg, timeout_ns);
}

/* Whether a receive on c would not block, without waiting (no syscall). */
static bool
rx_ready(struct mp_conn *c)
{
	struct ring_ctl *d = c->rx;
	uint64_t tail = ck_pr_load_64(&d->tail);
	uint64_t head = ck_pr_load_64(&d->head);
	int64_t need = diff(ck_pr_load_64(&d->msg_end), tail) > 0 ? 1 : HDR;

	ck_pr_fence_load();
	return diff(head, tail) >= need || abort_at(d, tail) ||
	       ck_pr_load_int(&c->gone);
}

int
mp_conn_poll(mp_conn *c, int64_t timeout_ns)
{
	struct ring_ctl *d;
	int rc;

	if (!conn_ok(c) || !MP__TIMEOUT_OK(timeout_ns))
		return -EINVAL;
	if ((d = c->rx) == NULL)
		return -EBADF;
	uint64_t tail = ck_pr_load_64(&d->tail);
	struct waitc w = {
		.c = c, .d = d, .kind = W_DATA, .pos = tail,
		.need = diff(ck_pr_load_64(&d->msg_end), tail) > 0 ? 1 : HDR,
		.timeout = timeout_ns,
	};
	rc = wait_for(&w);
	if (rc == 0 || rc == -EPIPE)
		return 1;
	if (rc == -EAGAIN || rc == -ETIMEDOUT)
		return 0;
	return rc;
}

/* Collect the ready connections; returns their count. */
static int
scan(mp_conn *const conns[], size_t n, mp_conn *ready[])
{
	int k = 0;

	for (size_t i = 0; i < n; i++) {
		if (rx_ready(conns[i]))
			ready[k++] = conns[i];
	}
	return k;
}

/* Ask the kernel at once whether the peers of conns live (one poll). */
static int
check_gone(mp_conn *const conns[], size_t n, struct pollfd *p)
{
	for (size_t i = 0; i < n; i++) {
		p[i].fd = conns[i]->fd;
		p[i].events = POLLRDHUP;
		p[i].revents = 0;
	}
	if (poll(p, n, 0) < 0)
		return errno == ENOMEM ? -ENOMEM : 0;
	for (size_t i = 0; i < n; i++) {
		if (p[i].revents & (POLLHUP | POLLRDHUP | POLLERR | POLLNVAL))
			ck_pr_store_int(&conns[i]->gone, 1);
	}
	ck_pr_fence_load();
	return 0;
}

static int
wait_many(mp_conn *const conns[], size_t n, mp_conn *ready[],
	  int64_t deadline, struct pollfd *p)
{
	struct mp__futex_waiter fw[MP__WAITV_MAX];
	int k, rc;

	for (;;) {
		int64_t until = mp__now() + SLICE;

		if (deadline < until)
			until = deadline;
		if (n <= MP__WAITV_MAX) {
			/* Announce on every word, then re-check (3). */
			for (size_t i = 0; i < n; i++)
				ck_pr_or_32(&conns[i]->rx->rwait, W_SLEEP);
			ck_pr_fence_atomic_load();
			if ((k = scan(conns, n, ready)) > 0)
				return k;
			/* After the bits, as in wait_for(): see 4. */
			if ((rc = check_gone(conns, n, p)) < 0)
				return rc;
			if ((k = scan(conns, n, ready)) > 0)
				return k;
			bool cleared = false;
			for (size_t i = 0; i < n; i++) {
				fw[i].word = &conns[i]->rx->rwait;
				fw[i].expected = ck_pr_load_32(fw[i].word);
				cleared |= !(fw[i].expected & W_SLEEP);
			}
			if (cleared)
				continue;
			(void)mp__futex_waitv(fw, (unsigned)n, until);
		} else {
			/*
			 * Beyond futex_waitv's 128 words: arm every fd and let
			 * poll() sleep on all the sockets.  A publisher sends a
			 * byte for an armed receiver, and POLLHUP wakes us at
			 * end of file, so no slice is needed.
			 */
			for (size_t i = 0; i < n; i++)
				ck_pr_or_32(&conns[i]->rx->rwait, W_ARMED);
			ck_pr_fence_atomic_load();
			for (size_t i = 0; i < n; i++)
				drain(conns[i]->fd);
			if ((k = scan(conns, n, ready)) > 0)
				return k;
			for (size_t i = 0; i < n; i++) {
				p[i].fd = conns[i]->fd;
				p[i].events = POLLIN | POLLRDHUP;
				p[i].revents = 0;
			}
			int64_t left = mp__remaining(deadline);
			struct timespec ts = { left / 1000000000,
					       left % 1000000000 };
			rc = ppoll(p, n, left < 0 ? NULL : &ts, NULL);
			if (rc < 0 && errno == ENOMEM)
				return -ENOMEM;
			for (size_t i = 0; i < n; i++) {
				if (p[i].revents & (POLLHUP | POLLRDHUP |
						    POLLERR | POLLNVAL))
					ck_pr_store_int(&conns[i]->gone, 1);
			}
		}
		if ((k = scan(conns, n, ready)) > 0)
			return k;
		if (deadline != MP__NEVER && mp__now() >= deadline)
			return 0;
	}
}

int
mp_wait(mp_conn *const conns[], size_t n, mp_conn *ready[],
	int64_t timeout_ns)
{
	struct pollfd stackp[MP__WAITV_MAX], *p = stackp;
	int64_t deadline, start;
	int k, rc;

	if (conns == NULL || ready == NULL || n == 0 || n > INT_MAX ||
	    mp__deadline(timeout_ns, &deadline) < 0)
		return -EINVAL;
	for (size_t i = 0; i < n; i++) {
		if (!conn_ok(conns[i]))
			return -EINVAL;
		if (conns[i]->rx == NULL)
			return -EBADF;
	}
	if ((k = scan(conns, n, ready)) > 0)
		return k;
	if (n > MP__WAITV_MAX && (p = calloc(n, sizeof(*p))) == NULL)
		return -ENOMEM;
	if (timeout_ns != MP_NOWAIT) {
		/* Spin: a message in flight beats a wake-up. */
		ck_backoff_t bo = 4;
		int64_t budget = conns[0]->rx_spin;
		start = mp__now();
		do {
			if ((k = scan(conns, n, ready)) > 0)
				goto out;
			ck_backoff_eb(&bo);
			if (bo > 256)
				bo = 256;
		} while (mp__now() - start < budget);
	}
	if ((rc = check_gone(conns, n, p)) < 0) {
		k = rc;
		goto out;
	}
	if ((k = scan(conns, n, ready)) > 0 || timeout_ns == MP_NOWAIT)
		goto out;
	sched_yield();
	if ((k = scan(conns, n, ready)) > 0)
		goto out;
	k = wait_many(conns, n, ready, deadline, p);
out:
	if (p != stackp)
		free(p);
	return k;
}

int
mp_conn_fd(mp_conn *c)
{
	if (!conn_ok(c))
		return -EINVAL;
	if (c->rx == NULL)
		return -EBADF;
	ck_pr_store_int(&c->fdmode, 1);
	/* Armed from now on: the next publish sends a byte. */
	ck_pr_or_32(&c->rx->rwait, W_ARMED);
	ck_pr_fence_atomic_load();
	return c->fd;
}

static uint64_t
ring_round(size_t size)
{
	uint64_t r = RING_MIN;

	while (r < size)
		r <<= 1;
	return r;
}

/* Point end e of pl at the rings of shm (mapped at base). */
static void
end_init(struct pipe_local *pl, int e, int fd)
{
	struct pipe_shm *shm = pl->shm;
	struct mp_conn *c = &pl->end[e];
	uint64_t cap = shm->ring_size;
	uint8_t *ring0 = (uint8_t *)shm + DATA_OFF;

	c->magic = CONN_MAGIC;
	c->fd = fd;
	c->pl = pl;
	c->cap = cap;
	c->mask = cap - 1;
	c->rx_spin = SPIN_START;
	c->tx_spin = SPIN_START;
	if (e == 0) {
		c->rx = &shm->dir[0];
		c->rxdata = ring0;
	} else {
		c->tx = &shm->dir[0];
		c->txdata = ring0;
	}
	if (shm->duplex && e == 0) {
		c->tx = &shm->dir[1];
		c->txdata = ring0 + cap;
	} else if (shm->duplex) {
		c->rx = &shm->dir[1];
		c->rxdata = ring0 + cap;
	}
}

/* Both ends of a new pipe; *memfd (if not NULL) gets its memfd, open. */
static int
pipe_make(mp_conn **c1, mp_conn **c2, bool duplex, size_t ring_size,
	  int *memfd)
{
	struct pipe_local *pl;
	struct pipe_shm *shm;
	uint64_t cap;
	int sv[2], rc, fd;
	void *base;

	cap = ring_round(ring_size == 0 ? MP_PIPE_RING_DEFAULT : ring_size);
	if ((pl = mp__handle_alloc(sizeof(*pl))) == NULL)
		return -ENOMEM;
	if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0,
		       sv) < 0) {
		rc = errno == ENOBUFS ? -ENOMEM : -errno;
		goto fail_free;
	}
	pl->map_size = DATA_OFF + (duplex ? 2 : 1) * cap;
	if (memfd != NULL)
		rc = mp__region_map_fd(pl->map_size, &base, &fd);
	else
		rc = mp__region_map(pl->map_size, &base);
	if (rc < 0)
		goto fail_sock;
	shm = base;
	shm->hdr.magic = PIPE_MAGIC;
	shm->hdr.version = MP__LAYOUT_VERSION;
	shm->duplex = duplex;
	shm->ring_size = cap;
	pl->shm = shm;
	pl->open = 2;
	end_init(pl, 0, sv[0]);
	end_init(pl, 1, sv[1]);
	*c1 = &pl->end[0];
	*c2 = &pl->end[1];
	if (memfd != NULL)
		*memfd = fd;
	return 0;
fail_sock:
	close(sv[0]);
	close(sv[1]);
fail_free:
	mp__handle_free(pl, sizeof(*pl));
	return rc;
}

int
mp_pipe_new(mp_conn **c1, mp_conn **c2, bool duplex, size_t ring_size)
{
	if (c1 == NULL || c2 == NULL || c1 == c2 || ring_size > RING_MAX)
		return -EINVAL;
	return pipe_make(c1, c2, duplex, ring_size, NULL);
}

int
mp__pipe_export(size_t ring_size, mp_conn **c1, int *memfd, int *sockfd)
{
	mp_conn *a, *b;
	int rc;

	if (c1 == NULL || memfd == NULL || sockfd == NULL ||
	    ring_size > RING_MAX)
		return -EINVAL;
	if ((rc = pipe_make(&a, &b, true, ring_size, memfd)) < 0)
		return rc;
	/* Hand c2's socket over; this process keeps only c1. */
	*sockfd = b->fd;
	b->fd = -1;
	b->magic = CONN_DEAD;
	b->pl->open = 1;
	*c1 = a;
	return 0;
}

int
mp__pipe_import(int memfd, int sockfd, mp_conn **c2)
{
	struct pipe_local *pl;
	struct pipe_shm *shm;
	size_t size;
	void *base;
	int rc;

	if (memfd < 0 || sockfd < 0 || c2 == NULL)
		return -EINVAL;
	if ((pl = mp__handle_alloc(sizeof(*pl))) == NULL)
		return -ENOMEM;
	if ((rc = mp__region_attach(memfd, &base, &size)) < 0)
		goto fail_free;
	shm = base;
	/* Trust no offset before the header says what the region is. */
	if (size < DATA_OFF || shm->hdr.magic != PIPE_MAGIC ||
	    shm->hdr.version != MP__LAYOUT_VERSION || shm->duplex != 1 ||
	    shm->ring_size < RING_MIN || shm->ring_size > RING_MAX ||
	    (shm->ring_size & (shm->ring_size - 1)) != 0 ||
	    size < DATA_OFF + 2 * shm->ring_size) {
		rc = -EINVAL;
		goto fail_unmap;
	}
	pl->shm = shm;
	pl->map_size = size;
	pl->open = 1;
	end_init(pl, 1, sockfd);
	*c2 = &pl->end[1];
	return 0;
fail_unmap:
	mp__region_unmap(base, size);
fail_free:
	mp__handle_free(pl, sizeof(*pl));
	return rc;
}

int
mp_pipe(mp_conn **c1, mp_conn **c2, bool duplex)
{
	return mp_pipe_new(c1, c2, duplex, 0);
}

void
mp_conn_close(mp_conn *c)
{
	struct pipe_local *pl;

	if (!conn_ok(c))
		return;
	pl = c->pl;
	c->magic = CONN_DEAD;
	carry_drop(c);
	close(c->fd);
	c->fd = -1;
	/*
	 * If that was the end's last fd anywhere, the other end's sleepers
	 * learn it now rather than after a slice: close() has hung up the
	 * peer socket before it returns, and a sleeper polls its socket after
	 * setting its bit, so either it sees the hang-up or we see the bit.
	 */
	ck_pr_fence_memory();
	if (c->tx != NULL && (ck_pr_load_32(&c->tx->rwait) & W_SLEEP))
		mp__futex_wake(&c->tx->rwait, INT32_MAX);
	if (c->rx != NULL && (ck_pr_load_32(&c->rx->wwait) & W_SLEEP))
		mp__futex_wake(&c->rx->wwait, INT32_MAX);
	if (ck_pr_faa_int(&pl->open, -1) == 1) {
		mp__region_unmap(pl->shm, pl->map_size);
		mp__handle_free(pl, sizeof(*pl));
	}
}

int
mp__pipe_region(const mp_conn *c, void **base, size_t *len)
{
	if (!conn_ok(c) || base == NULL || len == NULL)
		return -EINVAL;
	*base = c->pl->shm;
	*len = c->pl->map_size;
	return 0;
}
