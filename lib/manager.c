/* SPDX-License-Identifier: MIT */
/*
 * Theory of operation: the Manager's client side
 *
 * Layout.  mp_manager_start() maps a small shared region {hdr, stopped},
 * makes the connect channel (a SOCK_SEQPACKET socketpair, close-on-exec)
 * and starts the server (lib/manager_server.c) as a daemon mp_process.
 * The handle (process memory, copied by fork) holds the region, the
 * clients' end of the channel, and this process's connection: a duplex
 * mp_pipe end, the pid it belongs to, and reusable send/receive buffers.
 *
 * Connecting.  A call from a process whose pid differs from the
 * connection's (a child forked after the connection was made, or a
 * process that never connected) first drops the inherited copy (it is the
 * parent's: closing our copy of its fd does not hang it up while the
 * parent holds it) and connects: it makes a private socketpair, sends one
 * end over the channel (SCM_RIGHTS; a seqpacket message arrives whole, so
 * any number of processes may share the channel), and receives on the
 * other end the memfd and socket of a fresh pipe (mp__pipe_import).  The
 * private socket belongs to this process alone, so no reply can reach the
 * wrong process; it stays open as the connection's side socket, over which
 * the server sends the memfd of each shared-memory object opened (Lock,
 * Queue, Value, ...: lib/manager_server.c), just before the pipe reply.
 *
 * By address.  mp_manager_connect() keeps the address and the key in the
 * handle (no channel): its connection, and that of any child forked from
 * it, is a socket to "unix:PATH", the authkey handshake, and then the
 * same pipe hand-over on that socket.
 *
 * Calls.  One request message and one reply message on the pipe, under
 * the handle's mutex (the pipe allows one sender and one receiver an end
 * at a time).  Each request carries the caller's buffer size, so a value
 * that does not fit never leaves the server (-EMSGSIZE, nothing removed);
 * the _alloc variants pass an unlimited size.
 *
 * Shutdown.  mp_manager_shutdown() sets stopped (seen at once by every
 * process, through the shared region) and kills the server; a call that
 * was waiting on the server then sees its pipe's peer gone (-EPIPE, within
 * the pipe's 50 ms slice).  stopped is only an early answer: a server that
 * died by itself is found by the pipe's liveness and by the channel
 * (sendmsg fails once the server's end is closed).
 *
 * Invariants:
 *  1. A connection is used only by the process whose pid it records, and
 *     by one thread at a time (the handle's mutex, which each process
 *     initialises afresh on its first call: see lock_handle()).
 *  2. Once stopped is set it is never cleared; every call checks it first.
 *
 * Crash analysis (shared state is the region's stopped word only, written
 * once; the rest is per-process or kernel-owned):
 *  - A client dies anywhere: its pipe end and private socket close with
 *    it; the server's thread for it exits and the others go on.  A
 *    request applied whole stays applied.
 *  - A client dies mid-connect: the server's sendmsg() goes into a socket
 *    nobody reads; the exported fds close with the last holder.
 *  - The server dies: calls return -EPIPE (pipe liveness, or sendmsg()
 *    failing on the channel); nothing is left in the file system.
 *  - The owner dies: the server is its daemon child and is killed.
 */
#include "lib/internal.h"

#include <mproc/manager.h>
#include <mproc/process.h>

#include <poll.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <ck_pr.h>
#include <sodium.h>

#include "lib/fdpass.h"
#include "lib/handle.h"
#include "lib/import.h"
#include "lib/manager.h"
#include "lib/pipe.h"
#include "lib/region.h"
#include "lib/task.h"

#define MGR_MAGIC 0x6d676d68u		/* "mgmh" */
#define DICT_MAGIC 0x6d676463u		/* "mgdc" */
#define LIST_MAGIC 0x6d676c73u		/* "mgls" */
#define NS_MAGIC 0x6d676e73u		/* "mgns" */
#define CONNECT_TIMEOUT_MS 10000
#define RBUF_INIT 4096

struct mgr_shm {
	struct mp__hdr hdr;
	uint32_t stopped;
	uint32_t pad;
};

struct mp_manager {
	uint32_t magic;
	int ctl;		/* clients' end of the connect channel */
	struct mgr_shm *shm;
	mp_process *server;	/* in the owner only, else NULL */
	pid_t owner;
	pid_t conn_pid;		/* whose connection conn is */
	mp_conn *conn;
	int side;		/* the connection's side socket (fds), or -1 */
	pthread_mutex_t mu;	/* one call at a time on conn */
	int mu_pid;		/* the process whose mu this is (claimed) */
	int mu_ready;		/* ... and once it is initialised there */
	unsigned char *sbuf, *rbuf;
	size_t scap, rcap;
	char *address;		/* "unix:PATH", or NULL */
	unsigned char *key;	/* the authkey (malloc), or NULL */
	size_t key_len;
};
_Static_assert(sizeof(struct mp_manager) <= MP__HANDLE_MAX,
	       "the handle comes from the handle pool");

/* A proxy: dict, list and namespace share the form. */
struct proxy {
	uint32_t magic;
	uint32_t kind;
	mp_manager *m;
	uint64_t id;
};

struct mp_dict {
	struct proxy p;
};
struct mp_list {
	struct proxy p;
};
struct mp_ns {
	struct proxy p;
};

static bool
mgr_ok(const mp_manager *m)
{
	return m != NULL && m->magic == MGR_MAGIC;
}

static bool
stopped(const mp_manager *m)
{
	return ck_pr_load_32(&m->shm->stopped) != 0;
}

/*
 * Lock the handle's mutex.  A child forked while another thread of its
 * parent held it would find it locked forever, so the first call in each
 * process initialises its own copy: one thread claims it (CAS on mu_pid),
 * the others wait until it is ready.  The fast path checks mu_ready, not
 * mu_pid: a thread that finds the mutex claimed by another one of its
 * process must still wait for the initialisation to end.
 */
static void
lock_handle(mp_manager *m)
{
	int pid = (int)mp__pid();

	if (MP__UNLIKELY(ck_pr_load_int(&m->mu_ready) != pid)) {
		int seen = ck_pr_load_int(&m->mu_pid);

		if (seen != pid && ck_pr_cas_int(&m->mu_pid, seen, pid)) {
			pthread_mutex_init(&m->mu, NULL);
			/* The initialised mutex before ready; pairs below. */
			ck_pr_fence_store();
			ck_pr_store_int(&m->mu_ready, pid);
		}
		while (ck_pr_load_int(&m->mu_ready) != pid)
			sched_yield();
	}
	/* Acquire: ready before the mutex it announces, whichever thread
	 * of this process initialised it. */
	ck_pr_fence_load();
	pthread_mutex_lock(&m->mu);
}

/* ---- connecting ---- */

/*
 * Receive the pipe end the server sends on our private socket sock and
 * make it this process's connection; sock becomes the side socket.
 * Takes sock (closed on failure).
 */
static int
recv_pipe(mp_manager *m, int sock)
{
	struct pollfd pfd = { .fd = sock, .events = POLLIN };
	int fds[2] = { -1, -1 }, rc;

	do {
		rc = poll(&pfd, 1, CONNECT_TIMEOUT_MS);
	} while (rc < 0 && errno == EINTR);
	if (rc <= 0 || mp__fd_recv(sock, fds, 2) != 1) {
		rc = -EPIPE;
		goto out;
	}
	if ((rc = mp__pipe_import(fds[0], fds[1], &m->conn)) == 0) {
		fds[1] = -1;	/* the connection owns it now */
		m->conn_pid = mp__pid();
		m->side = sock;
		/* Kept: server-owned objects' fds come here. */
		sock = -1;
	}
	if (fds[0] >= 0)
		close(fds[0]);
	if (fds[1] >= 0)
		close(fds[1]);
out:
	if (sock >= 0)
		close(sock);
	return rc;
}

/* Connect through the channel inherited from the manager's owner. */
static int
connect_channel(mp_manager *m)
{
	int sv[2], rc;

	if (socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv) < 0)
		return errno == ENOBUFS ? -ENOMEM : -errno;
	rc = mp__fd_send(m->ctl, 'C', &sv[1], 1);
	close(sv[1]);
	if (rc < 0) {
		close(sv[0]);
		/* EPIPE, ECONNREFUSED: the server's end is closed. */
		return rc == -ENOMEM ? -ENOMEM : -EPIPE;
	}
	return recv_pipe(m, sv[0]);
}

/* "unix:PATH" into a socket address; -EINVAL if it is not one. */
static int
parse_address(const char *address, struct sockaddr_un *sa)
{
	size_t len;

	if (address == NULL || strncmp(address, "unix:", 5) != 0)
		return -EINVAL;
	len = strlen(address + 5);
	if (len == 0 || len >= sizeof(sa->sun_path))
		return -EINVAL;
	memset(sa, 0, sizeof(*sa));
	sa->sun_family = AF_UNIX;
	memcpy(sa->sun_path, address + 5, len + 1);
	return 0;
}

/* Connect by address: the socket, the authkey handshake, the pipe. */
static int
connect_address(mp_manager *m)
{
	struct sockaddr_un sa;
	int fd, rc;

	if ((rc = parse_address(m->address, &sa)) < 0)
		return rc;
	if ((fd = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0)) < 0)
		return errno == ENOBUFS ? -ENOMEM : -errno;
	do {
		rc = connect(fd, (struct sockaddr *)&sa, sizeof(sa));
	} while (rc < 0 && errno == EINTR);
	if (rc < 0) {
		rc = errno == ENOENT || errno == ECONNREFUSED ? -ECONNREFUSED
							       : -errno;
		close(fd);
		return rc;
	}
	if ((rc = mp__mgr_auth_client(fd, m->key, m->key_len)) < 0) {
		close(fd);
		return rc;
	}
	return recv_pipe(m, fd);
}

static int
connect_server(mp_manager *m)
{
	return m->ctl >= 0 ? connect_channel(m) : connect_address(m);
}

/* Drop this process's copy of the connection (ours or a parent's). */
static void
drop_conn(mp_manager *m)
{
	if (m->conn != NULL)
		mp_conn_close(m->conn);
	if (m->side >= 0)
		close(m->side);
	m->conn = NULL;
	m->side = -1;
}

/* Under m->mu: a connection of this process's own, made if need be. */
static int
ensure_conn(mp_manager *m)
{
	if (m->conn != NULL && m->conn_pid == mp__pid())
		return 0;
	/* A parent's, copied by fork: closing our copy leaves it intact. */
	drop_conn(m);
	return connect_server(m);
}

/* Under m->mu: the fd the server sent before its reply to an open. */
static int
recv_fd(mp_manager *m, int *fd)
{
	/* Sent before the reply we already have: never waits. */
	return mp__fd_recv(m->side, fd, 1) == 1 ? 0 : MP_ESERVER;
}

static int
grow(unsigned char **b, size_t *cap, size_t want)
{
	size_t c = *cap ? *cap : RBUF_INIT;
	unsigned char *nb;

	if (want <= *cap)
		return 0;
	while (c < want)
		c *= 2;
	if ((nb = realloc(*b, c)) == NULL)
		return -ENOMEM;
	*b = nb;
	*cap = c;
	return 0;
}

/*
 * One round trip.  The reply's value goes into buf (cap bytes) or, with
 * out != NULL, into memory from malloc(); a snapshot reply also reports
 * its length in *outlen.
 */
static int64_t
call_fd(mp_manager *m, struct mgr_req *rq, const void *k, const void *v,
	void *buf, size_t cap, void **out, size_t *outlen, int *fd)
{
	struct mgr_rep rp;
	size_t total = sizeof(*rq) + rq->klen + rq->vlen;
	unsigned char *rb;
	void *big = NULL;
	ssize_t n;
	int64_t rc;

	rq->cap = out != NULL ? UINT64_MAX : cap;
	if (stopped(m))
		return -EPIPE;
	lock_handle(m);
	if ((rc = ensure_conn(m)) < 0) {
		/*
		 * The handle was connected once (mp_manager_connect or start
		 * succeeded), so a refused reconnect means the server is gone:
		 * DESIGN.md's -EPIPE, whatever the socket said.
		 */
		if (rc == -ECONNREFUSED)
			rc = -EPIPE;
		goto out;
	}
	if ((rc = grow(&m->sbuf, &m->scap, total)) < 0)
		goto out;
	memcpy(m->sbuf, rq, sizeof(*rq));
	if (rq->klen > 0)
		memcpy(m->sbuf + sizeof(*rq), k, rq->klen);
	if (rq->vlen > 0)
		memcpy(m->sbuf + sizeof(*rq) + rq->klen, v, rq->vlen);
	if ((rc = mp_conn_send(m->conn, m->sbuf, total)) < 0)
		goto fail_conn;
	if (m->rbuf == NULL && (rc = grow(&m->rbuf, &m->rcap, RBUF_INIT)) < 0)
		goto fail_conn;	/* the reply would be left in the ring */
	rb = m->rbuf;
	n = mp_conn_recv(m->conn, m->rbuf, m->rcap);
	if (n == -EMSGSIZE) {
		n = mp_conn_recv_alloc(m->conn, &big);
		rb = big;
	}
	if (n < 0) {
		rc = n;
		goto fail_conn;
	}
	if ((size_t)n < sizeof(rp)) {
		rc = MP_ESERVER;
		goto out_big;
	}
	memcpy(&rp, rb, sizeof(rp));
	rc = rp.rc;
	if (rp.len != (size_t)n - sizeof(rp)) {
		rc = MP_ESERVER;
		goto out_big;
	}
	if (rc >= 0 && out != NULL) {
		if (big != NULL && rp.len > 0) {
			memmove(big, (unsigned char *)big + sizeof(rp), rp.len);
			*out = big;
			big = NULL;
		} else if ((*out = malloc(rp.len ? rp.len : 1)) == NULL) {
			rc = -ENOMEM;
			goto out_big;
		} else {
			memcpy(*out, rb + sizeof(rp), rp.len);
		}
		if (outlen != NULL)
			*outlen = rp.len;
	} else if (rc >= 0 && rp.len > 0) {
		if (rp.len > cap) {
			rc = MP_ESERVER;
			goto out_big;
		}
		memcpy(buf, rb + sizeof(rp), rp.len);
	}
	if (rc >= 0 && fd != NULL) {
		int r = recv_fd(m, fd);
		if (r < 0)
			rc = r;
	}
out_big:
	free(big);
out:
	pthread_mutex_unlock(&m->mu);
	return rc;
fail_conn:
	/*
	 * The connection is out of step or gone: drop it; the next call
	 * connects afresh (or finds the server gone).
	 */
	if (rc == -EPIPE || rc == -ENOMEM || rc == -EINVAL)
		drop_conn(m);
	if (rc != -ENOMEM)
		rc = -EPIPE;
	goto out;
}

static int64_t
call(mp_manager *m, struct mgr_req *rq, const void *k, const void *v,
     void *buf, size_t cap, void **out, size_t *outlen)
{
	return call_fd(m, rq, k, v, buf, cap, out, outlen, NULL);
}

/* ---- manager ---- */

/* Copy the address and the authkey into m (freed by free_names). */
static int
keep_names(mp_manager *m, const char *address, const void *key,
	   size_t key_len)
{
	if (address != NULL && (m->address = strdup(address)) == NULL)
		return -ENOMEM;
	if (key_len > 0) {
		if ((m->key = malloc(key_len)) == NULL)
			return -ENOMEM;
		memcpy(m->key, key, key_len);
		m->key_len = key_len;
	}
	return 0;
}

static void
free_names(mp_manager *m)
{
	if (m->key != NULL)
		sodium_memzero(m->key, m->key_len);
	free(m->key);
	free(m->address);
	m->key = NULL;
	m->address = NULL;
}

/* The listening socket of "unix:PATH"; -EADDRINUSE if the path exists. */
static int
listen_address(const char *address, int *out)
{
	struct sockaddr_un sa;
	int fd, rc;

	if ((rc = parse_address(address, &sa)) < 0)
		return rc;
	if ((fd = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0)) < 0)
		return errno == ENOBUFS ? -ENOMEM : -errno;
	if (bind(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0 ||
	    listen(fd, 64) < 0) {
		rc = -errno;
		close(fd);
		return rc;
	}
	*out = fd;
	return 0;
}

/* The socket file of an address, removed by the owner at shutdown. */
static void
unlink_address(const char *address)
{
	struct sockaddr_un sa;

	if (address != NULL && parse_address(address, &sa) == 0)
		unlink(sa.sun_path);
}

int
mp_manager_start(mp_manager **out, const mp_manager_attr *attr)
{
	struct mgr_server_arg sa = { .lfd = -1 };
	mp_process_attr pa = { .name = "Manager", .daemon = 1 };
	const char *address = attr ? attr->address : NULL;
	mp_manager *m;
	void *base;
	int sv[2], rc;

	if (out == NULL || (attr != NULL && attr->authkey == NULL &&
			    attr->authkey_len > 0))
		return -EINVAL;
	/* An address needs a key: it is all that keeps strangers out. */
	if (address != NULL && attr->authkey_len == 0)
		return -EINVAL;
	if ((m = mp__handle_alloc(sizeof(*m))) == NULL)
		return -ENOMEM;
	if (attr != NULL && (rc = keep_names(m, address, attr->authkey,
					     attr->authkey_len)) < 0)
		goto fail_free;
	if ((rc = mp__region_map(sizeof(struct mgr_shm), &base)) < 0)
		goto fail_free;
	m->shm = base;
	m->shm->hdr.magic = MGR_SHM_MAGIC;
	m->shm->hdr.version = MP__LAYOUT_VERSION;
	if (socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv) < 0) {
		rc = errno == ENOBUFS ? -ENOMEM : -errno;
		goto fail_unmap;
	}
	/* Bound here, so that a taken address fails this call. */
	if (address != NULL && (rc = listen_address(address, &sa.lfd)) < 0)
		goto fail_sock;
	sa.ctl = sv[0];
	sa.key = m->key;
	sa.key_len = m->key_len;
	/* The server gets its copy of sa (and of the key) at fork. */
	if ((rc = mp_process_new(&m->server, mp__manager_serve, &sa, &pa)) < 0)
		goto fail_listen;
	if ((rc = mp_process_start(m->server)) < 0)
		goto fail_proc;
	close(sv[0]);
	if (sa.lfd >= 0)
		close(sa.lfd);
	m->ctl = sv[1];
	m->side = -1;
	m->owner = mp__pid();
	pthread_mutex_init(&m->mu, NULL);
	m->mu_pid = m->mu_ready = (int)mp__pid();
	m->magic = MGR_MAGIC;
	*out = m;
	return 0;
fail_proc:
	mp_process_free(m->server);
fail_listen:
	if (sa.lfd >= 0) {
		close(sa.lfd);
		unlink_address(address);
	}
fail_sock:
	close(sv[0]);
	close(sv[1]);
fail_unmap:
	mp__region_unmap(base, sizeof(struct mgr_shm));
fail_free:
	free_names(m);
	mp__handle_free(m, sizeof(*m));
	return rc;
}

int
mp_manager_connect(mp_manager **out, const char *address,
		   const void *authkey, size_t authkey_len)
{
	struct sockaddr_un sa;
	mp_manager *m;
	void *base;
	int rc;

	if (out == NULL || parse_address(address, &sa) < 0 ||
	    authkey == NULL || authkey_len == 0)
		return -EINVAL;
	if ((m = mp__handle_alloc(sizeof(*m))) == NULL)
		return -ENOMEM;
	if ((rc = keep_names(m, address, authkey, authkey_len)) < 0)
		goto fail_free;
	/* Our own stopped word: shared with our children only. */
	if ((rc = mp__region_map(sizeof(struct mgr_shm), &base)) < 0)
		goto fail_free;
	m->shm = base;
	m->shm->hdr.magic = MGR_SHM_MAGIC;
	m->shm->hdr.version = MP__LAYOUT_VERSION;
	m->ctl = -1;
	m->side = -1;
	m->owner = -1;
	pthread_mutex_init(&m->mu, NULL);
	m->mu_pid = m->mu_ready = (int)mp__pid();
	/* Connect now: a wrong key fails this call, not a later one. */
	if ((rc = connect_address(m)) < 0)
		goto fail_unmap;
	m->magic = MGR_MAGIC;
	*out = m;
	return 0;
fail_unmap:
	pthread_mutex_destroy(&m->mu);
	mp__region_unmap(base, sizeof(struct mgr_shm));
fail_free:
	free_names(m);
	mp__handle_free(m, sizeof(*m));
	return rc;
}

int
mp_manager_shutdown(mp_manager *m)
{
	if (!mgr_ok(m))
		return -EINVAL;
	/* Every process's next call answers -EPIPE at once (invariant 2). */
	ck_pr_store_32(&m->shm->stopped, 1);
	ck_pr_fence_store();
	if (m->server != NULL && m->owner == mp__pid()) {
		/* The objects are the server's memory: ending it frees them. */
		(void)mp_process_kill(m->server);
		(void)mp_process_join(m->server, MP_FOREVER);
		unlink_address(m->address);
	}
	return 0;
}

void
mp_manager_free(mp_manager *m)
{
	if (!mgr_ok(m))
		return;
	if (m->owner == mp__pid() && m->server != NULL) {
		mp_manager_shutdown(m);
		mp_process_free(m->server);
	}
	m->magic = 0;
	/* A copy inherited from a parent is closed just the same: ours only. */
	drop_conn(m);
	if (m->ctl >= 0)
		close(m->ctl);
	free_names(m);
	free(m->sbuf);
	free(m->rbuf);
	pthread_mutex_destroy(&m->mu);
	mp__region_unmap(m->shm, sizeof(struct mgr_shm));
	mp__handle_free(m, sizeof(*m));
}

/* ---- proxies ---- */

static bool
proxy_ok(const void *h, uint32_t magic)
{
	const struct proxy *p = h;

	return p != NULL && p->magic == magic && mgr_ok(p->m);
}

static int
open_obj(mp_manager *m, const char *name, uint32_t kind, uint32_t magic,
	 void **out)
{
	struct mgr_req rq = { .op = MGR_OPEN, .kind = kind };
	struct proxy *p;
	size_t nlen = 0;
	int64_t rc;

	if (!mgr_ok(m) || out == NULL)
		return -EINVAL;
	if (name != NULL) {
		nlen = strnlen(name, MP_MANAGER_NAME_MAX + 1);
		if (nlen == 0 || nlen > MP_MANAGER_NAME_MAX)
			return -EINVAL;
	}
	rq.klen = nlen;
	if ((p = mp__handle_alloc(sizeof(*p))) == NULL)
		return -ENOMEM;
	if ((rc = call(m, &rq, name, NULL, NULL, 0, NULL, NULL)) < 0) {
		mp__handle_free(p, sizeof(*p));
		return (int)rc;
	}
	p->kind = kind;
	p->m = m;
	p->id = (uint64_t)rc;
	p->magic = magic;
	*out = p;
	return 0;
}

int
mp_manager_dict(mp_manager *m, const char *name, mp_dict **d)
{
	return open_obj(m, name, MGR_DICT, DICT_MAGIC, (void **)d);
}

int
mp_manager_list(mp_manager *m, const char *name, mp_list **l)
{
	return open_obj(m, name, MGR_LIST, LIST_MAGIC, (void **)l);
}

int
mp_manager_namespace(mp_manager *m, const char *name, mp_ns **ns)
{
	return open_obj(m, name, MGR_NS, NS_MAGIC, (void **)ns);
}

/*
 * Open a shared-memory object: the server sends its region's memfd, and
 * it becomes an ordinary handle here (lib/import.h).
 */
static int
open_shared(mp_manager *m, const char *name, uint32_t kind, uint64_t a,
	    uint64_t b, int flags, void **out)
{
	struct mgr_req rq = { .op = MGR_OPEN, .kind = kind, .a = (int64_t)a,
			      .b = (int64_t)b, .obj = (uint64_t)flags };
	struct mgr_params prm;
	size_t nlen = 0;
	int64_t rc;
	int fd;

	if (!mgr_ok(m) || out == NULL || flags < 0)
		return -EINVAL;
	if (name != NULL) {
		nlen = strnlen(name, MP_MANAGER_NAME_MAX + 1);
		if (nlen == 0 || nlen > MP_MANAGER_NAME_MAX)
			return -EINVAL;
	}
	rq.klen = nlen;
	rc = call_fd(m, &rq, name, NULL, &prm, sizeof(prm), NULL, NULL, &fd);
	if (rc < 0)
		return (int)rc;
	switch (kind) {
	case MGR_LOCK:
		rc = mp__lock_import(fd, (mp_lock **)out);
		break;
	case MGR_RLOCK:
		rc = mp__rlock_import(fd, (mp_rlock **)out);
		break;
	case MGR_SEM:
	case MGR_BSEM:
		rc = mp__sem_import(fd, (mp_sem **)out);
		break;
	case MGR_COND:
		rc = mp__cond_import(fd, (mp_cond **)out);
		break;
	case MGR_EVENT:
		rc = mp__event_import(fd, (mp_event **)out);
		break;
	case MGR_BARRIER:
		rc = mp__barrier_import(fd, (mp_barrier **)out);
		break;
	case MGR_QUEUE:
		rc = mp__queue_import(fd, (size_t)prm.a, (size_t)prm.b,
				      (mp_queue **)out);
		break;
	case MGR_VALUE:
		rc = mp__value_import(fd, (size_t)prm.a, (int)prm.flags,
				      (mp_value **)out);
		break;
	default:
		rc = mp__array_import(fd, (size_t)prm.a, (size_t)prm.b,
				      (int)prm.flags, (mp_array **)out);
	}
	close(fd);
	return (int)rc;
}

int
mp_manager_lock(mp_manager *m, const char *name, mp_lock **l)
{
	return open_shared(m, name, MGR_LOCK, 0, 0, 0, (void **)l);
}

int
mp_manager_rlock(mp_manager *m, const char *name, mp_rlock **l)
{
	return open_shared(m, name, MGR_RLOCK, 0, 0, 0, (void **)l);
}

int
mp_manager_semaphore(mp_manager *m, const char *name, unsigned value,
		     mp_sem **s)
{
	return open_shared(m, name, MGR_SEM, value, 0, 0, (void **)s);
}

int
mp_manager_bounded_semaphore(mp_manager *m, const char *name,
			     unsigned value, mp_sem **s)
{
	return open_shared(m, name, MGR_BSEM, value, 0, 0, (void **)s);
}

int
mp_manager_condition(mp_manager *m, const char *name, mp_cond **c)
{
	return open_shared(m, name, MGR_COND, 0, 0, 0, (void **)c);
}

int
mp_manager_event(mp_manager *m, const char *name, mp_event **e)
{
	return open_shared(m, name, MGR_EVENT, 0, 0, 0, (void **)e);
}

int
mp_manager_barrier(mp_manager *m, const char *name, unsigned parties,
		   mp_barrier **b)
{
	return open_shared(m, name, MGR_BARRIER, parties, 0, 0, (void **)b);
}

int
mp_manager_queue(mp_manager *m, const char *name, size_t maxsize,
		 size_t msg_max, mp_queue **q)
{
	return open_shared(m, name, MGR_QUEUE, maxsize, msg_max, 0,
			   (void **)q);
}

int
mp_manager_value(mp_manager *m, const char *name, size_t size, int flags,
		 mp_value **v)
{
	return open_shared(m, name, MGR_VALUE, size, 0, flags, (void **)v);
}

int
mp_manager_array(mp_manager *m, const char *name, size_t n,
		 size_t elem_size, int flags, mp_array **a)
{
	return open_shared(m, name, MGR_ARRAY, n, elem_size, flags,
			   (void **)a);
}

static void
proxy_free(void *h, uint32_t magic)
{
	struct proxy *p = h;

	if (p == NULL || p->magic != magic)
		return;
	p->magic = 0;
	mp__handle_free(p, sizeof(*p));
}

int
mp_item_next(const void *buf, size_t len, size_t *off, mp_item *it)
{
	struct mgr_rec r;
	const unsigned char *b = buf;

	if ((buf == NULL && len > 0) || off == NULL || it == NULL ||
	    *off > len || (*off & 7) != 0)
		return -EINVAL;
	if (*off == len)
		return 0;
	if (len - *off < sizeof(r))
		return -EINVAL;
	memcpy(&r, b + *off, sizeof(r));
	if (r.klen > len || r.vlen > len ||
	    mgr_pad8(sizeof(r) + r.klen + r.vlen) > len - *off)
		return -EINVAL;
	it->key = r.klen ? b + *off + sizeof(r) : NULL;
	it->klen = r.klen;
	it->val = r.vlen ? b + *off + sizeof(r) + r.klen : NULL;
	it->vlen = r.vlen;
	*off += mgr_pad8(sizeof(r) + r.klen + r.vlen);
	return 1;
}

/* Key and value arguments: NULL only with length 0; lengths bounded. */
static bool
bytes_ok(const void *p, size_t n)
{
	return (p != NULL || n == 0) && n <= MGR_LEN_MAX;
}

/* Pack items into records (update, extend); free *out with free(). */
static int
pack(const mp_item *items, size_t n, bool keys, unsigned char **out,
     size_t *len)
{
	size_t total = 0, off = 0;
	unsigned char *b;

	if (items == NULL && n > 0)
		return -EINVAL;
	for (size_t i = 0; i < n; i++) {
		size_t kl = keys ? items[i].klen : 0;

		if ((keys && !bytes_ok(items[i].key, kl)) ||
		    !bytes_ok(items[i].val, items[i].vlen))
			return -EINVAL;
		total += mgr_pad8(sizeof(struct mgr_rec) + kl + items[i].vlen);
		if (total > MGR_LEN_MAX)
			return -EINVAL;
	}
	if ((b = calloc(1, total ? total : 1)) == NULL)
		return -ENOMEM;
	for (size_t i = 0; i < n; i++) {
		struct mgr_rec r = { keys ? items[i].klen : 0, items[i].vlen };

		memcpy(b + off, &r, sizeof(r));
		if (r.klen)
			memcpy(b + off + sizeof(r), items[i].key, r.klen);
		if (r.vlen)
			memcpy(b + off + sizeof(r) + r.klen, items[i].val,
			       r.vlen);
		off += mgr_pad8(sizeof(r) + r.klen + r.vlen);
	}
	*out = b;
	*len = total;
	return 0;
}

/* ---- dict (and namespace, which is a dict keyed by name) ---- */

static ssize_t
dict_call(struct proxy *p, uint32_t op, const void *k, size_t kl,
	  const void *v, size_t vl, void *buf, size_t cap, void **out,
	  size_t *outlen)
{
	struct mgr_req rq = { .op = op, .obj = p->id, .klen = kl,
			      .vlen = vl };

	return (ssize_t)call(p->m, &rq, k, v, buf, cap, out, outlen);
}

#define DICT_OK(d) proxy_ok((d), DICT_MAGIC)

int
mp_dict_set(mp_dict *d, const void *key, size_t klen, const void *val,
	    size_t vlen)
{
	if (!DICT_OK(d) || !bytes_ok(key, klen) || !bytes_ok(val, vlen))
		return -EINVAL;
	return (int)dict_call(&d->p, MGR_D_SET, key, klen, val, vlen, NULL, 0,
			      NULL, NULL);
}

ssize_t
mp_dict_get(mp_dict *d, const void *key, size_t klen, void *buf, size_t cap)
{
	if (!DICT_OK(d) || !bytes_ok(key, klen) || (buf == NULL && cap > 0))
		return -EINVAL;
	return dict_call(&d->p, MGR_D_GET, key, klen, NULL, 0, buf, cap, NULL,
			 NULL);
}

ssize_t
mp_dict_get_alloc(mp_dict *d, const void *key, size_t klen, void **val)
{
	if (!DICT_OK(d) || !bytes_ok(key, klen) || val == NULL)
		return -EINVAL;
	return dict_call(&d->p, MGR_D_GET, key, klen, NULL, 0, NULL, 0, val,
			 NULL);
}

int
mp_dict_del(mp_dict *d, const void *key, size_t klen)
{
	if (!DICT_OK(d) || !bytes_ok(key, klen))
		return -EINVAL;
	return (int)dict_call(&d->p, MGR_D_DEL, key, klen, NULL, 0, NULL, 0,
			      NULL, NULL);
}

ssize_t
mp_dict_len(mp_dict *d)
{
	if (!DICT_OK(d))
		return -EINVAL;
	return dict_call(&d->p, MGR_D_LEN, NULL, 0, NULL, 0, NULL, 0, NULL,
			 NULL);
}

int
mp_dict_contains(mp_dict *d, const void *key, size_t klen)
{
	if (!DICT_OK(d) || !bytes_ok(key, klen))
		return -EINVAL;
	return (int)dict_call(&d->p, MGR_D_CONTAINS, key, klen, NULL, 0, NULL,
			      0, NULL, NULL);
}

ssize_t
mp_dict_pop(mp_dict *d, const void *key, size_t klen, void *buf, size_t cap)
{
	if (!DICT_OK(d) || !bytes_ok(key, klen) || (buf == NULL && cap > 0))
		return -EINVAL;
	return dict_call(&d->p, MGR_D_POP, key, klen, NULL, 0, buf, cap, NULL,
			 NULL);
}

ssize_t
mp_dict_pop_alloc(mp_dict *d, const void *key, size_t klen, void **val)
{
	if (!DICT_OK(d) || !bytes_ok(key, klen) || val == NULL)
		return -EINVAL;
	return dict_call(&d->p, MGR_D_POP, key, klen, NULL, 0, NULL, 0, val,
			 NULL);
}

ssize_t
mp_dict_setdefault(mp_dict *d, const void *key, size_t klen,
		   const void *dflt, size_t dlen, void *buf, size_t cap)
{
	if (!DICT_OK(d) || !bytes_ok(key, klen) || !bytes_ok(dflt, dlen) ||
	    (buf == NULL && cap > 0))
		return -EINVAL;
	return dict_call(&d->p, MGR_D_SETDEFAULT, key, klen, dflt, dlen, buf,
			 cap, NULL, NULL);
}

int
mp_dict_update(mp_dict *d, const mp_item *items, size_t n)
{
	unsigned char *b;
	size_t len;
	int rc;

	if (!DICT_OK(d))
		return -EINVAL;
	if ((rc = pack(items, n, true, &b, &len)) < 0)
		return rc;
	rc = (int)dict_call(&d->p, MGR_D_UPDATE, NULL, 0, b, len, NULL, 0,
			    NULL, NULL);
	free(b);
	return rc;
}

int
mp_dict_clear(mp_dict *d)
{
	if (!DICT_OK(d))
		return -EINVAL;
	return (int)dict_call(&d->p, MGR_D_CLEAR, NULL, 0, NULL, 0, NULL, 0,
			      NULL, NULL);
}

ssize_t
mp_dict_keys(mp_dict *d, void **buf, size_t *len)
{
	if (!DICT_OK(d) || buf == NULL || len == NULL)
		return -EINVAL;
	return dict_call(&d->p, MGR_D_KEYS, NULL, 0, NULL, 0, NULL, 0, buf,
			 len);
}

ssize_t
mp_dict_items(mp_dict *d, void **buf, size_t *len)
{
	if (!DICT_OK(d) || buf == NULL || len == NULL)
		return -EINVAL;
	return dict_call(&d->p, MGR_D_ITEMS, NULL, 0, NULL, 0, NULL, 0, buf,
			 len);
}

void
mp_dict_free(mp_dict *d)
{
	proxy_free(d, DICT_MAGIC);
}

/* ---- namespace ---- */

static bool
attr_ok(const char *attr, size_t *len)
{
	if (attr == NULL)
		return false;
	*len = strnlen(attr, MP_MANAGER_NAME_MAX + 1);
	return *len > 0 && *len <= MP_MANAGER_NAME_MAX;
}

int
mp_ns_set(mp_ns *ns, const char *attr, const void *val, size_t vlen)
{
	size_t al;

	if (!proxy_ok(ns, NS_MAGIC) || !attr_ok(attr, &al) ||
	    !bytes_ok(val, vlen))
		return -EINVAL;
	return (int)dict_call(&ns->p, MGR_D_SET, attr, al, val, vlen, NULL, 0,
			      NULL, NULL);
}

ssize_t
mp_ns_get(mp_ns *ns, const char *attr, void *buf, size_t cap)
{
	size_t al;

	if (!proxy_ok(ns, NS_MAGIC) || !attr_ok(attr, &al) ||
	    (buf == NULL && cap > 0))
		return -EINVAL;
	return dict_call(&ns->p, MGR_D_GET, attr, al, NULL, 0, buf, cap, NULL,
			 NULL);
}

ssize_t
mp_ns_get_alloc(mp_ns *ns, const char *attr, void **val)
{
	size_t al;

	if (!proxy_ok(ns, NS_MAGIC) || !attr_ok(attr, &al) || val == NULL)
		return -EINVAL;
	return dict_call(&ns->p, MGR_D_GET, attr, al, NULL, 0, NULL, 0, val,
			 NULL);
}

int
mp_ns_del(mp_ns *ns, const char *attr)
{
	size_t al;

	if (!proxy_ok(ns, NS_MAGIC) || !attr_ok(attr, &al))
		return -EINVAL;
	return (int)dict_call(&ns->p, MGR_D_DEL, attr, al, NULL, 0, NULL, 0,
			      NULL, NULL);
}

void
mp_ns_free(mp_ns *ns)
{
	proxy_free(ns, NS_MAGIC);
}

/* ---- list ---- */

#define LIST_OK(l) proxy_ok((l), LIST_MAGIC)

static ssize_t
list_call(struct proxy *p, uint32_t op, int64_t a, int64_t b, const void *v,
	  size_t vl, void *buf, size_t cap, void **out, size_t *outlen)
{
	struct mgr_req rq = { .op = op, .obj = p->id, .a = a, .b = b,
			      .vlen = vl };

	return (ssize_t)call(p->m, &rq, NULL, v, buf, cap, out, outlen);
}

int
mp_list_append(mp_list *l, const void *val, size_t vlen)
{
	if (!LIST_OK(l) || !bytes_ok(val, vlen))
		return -EINVAL;
	return (int)list_call(&l->p, MGR_L_APPEND, 0, 0, val, vlen, NULL, 0,
			      NULL, NULL);
}

int
mp_list_extend(mp_list *l, const mp_item *items, size_t n)
{
	unsigned char *b;
	size_t len;
	int rc;

	if (!LIST_OK(l))
		return -EINVAL;
	if ((rc = pack(items, n, false, &b, &len)) < 0)
		return rc;
	rc = (int)list_call(&l->p, MGR_L_EXTEND, 0, 0, b, len, NULL, 0, NULL,
			    NULL);
	free(b);
	return rc;
}

ssize_t
mp_list_get(mp_list *l, ssize_t index, void *buf, size_t cap)
{
	if (!LIST_OK(l) || (buf == NULL && cap > 0))
		return -EINVAL;
	return list_call(&l->p, MGR_L_GET, index, 0, NULL, 0, buf, cap, NULL,
			 NULL);
}

ssize_t
mp_list_get_alloc(mp_list *l, ssize_t index, void **val)
{
	if (!LIST_OK(l) || val == NULL)
		return -EINVAL;
	return list_call(&l->p, MGR_L_GET, index, 0, NULL, 0, NULL, 0, val,
			 NULL);
}

int
mp_list_set(mp_list *l, ssize_t index, const void *val, size_t vlen)
{
	if (!LIST_OK(l) || !bytes_ok(val, vlen))
		return -EINVAL;
	return (int)list_call(&l->p, MGR_L_SET, index, 0, val, vlen, NULL, 0,
			      NULL, NULL);
}

int
mp_list_insert(mp_list *l, ssize_t index, const void *val, size_t vlen)
{
	if (!LIST_OK(l) || !bytes_ok(val, vlen))
		return -EINVAL;
	return (int)list_call(&l->p, MGR_L_INSERT, index, 0, val, vlen, NULL,
			      0, NULL, NULL);
}

ssize_t
mp_list_pop(mp_list *l, ssize_t index, void *buf, size_t cap)
{
	if (!LIST_OK(l) || (buf == NULL && cap > 0))
		return -EINVAL;
	return list_call(&l->p, MGR_L_POP, index, 0, NULL, 0, buf, cap, NULL,
			 NULL);
}

ssize_t
mp_list_pop_alloc(mp_list *l, ssize_t index, void **val)
{
	if (!LIST_OK(l) || val == NULL)
		return -EINVAL;
	return list_call(&l->p, MGR_L_POP, index, 0, NULL, 0, NULL, 0, val,
			 NULL);
}

ssize_t
mp_list_len(mp_list *l)
{
	if (!LIST_OK(l))
		return -EINVAL;
	return list_call(&l->p, MGR_L_LEN, 0, 0, NULL, 0, NULL, 0, NULL, NULL);
}

int
mp_list_remove(mp_list *l, const void *val, size_t vlen)
{
	if (!LIST_OK(l) || !bytes_ok(val, vlen))
		return -EINVAL;
	return (int)list_call(&l->p, MGR_L_REMOVE, 0, 0, val, vlen, NULL, 0,
			      NULL, NULL);
}

ssize_t
mp_list_slice(mp_list *l, ssize_t start, ssize_t stop, void **buf,
	      size_t *len)
{
	if (!LIST_OK(l) || buf == NULL || len == NULL)
		return -EINVAL;
	return list_call(&l->p, MGR_L_SLICE, start, stop, NULL, 0, NULL, 0,
			 buf, len);
}

void
mp_list_free(mp_list *l)
{
	proxy_free(l, LIST_MAGIC);
}
