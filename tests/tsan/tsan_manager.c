/* SPDX-License-Identifier: MIT */
/*
 * The Manager's threads under ThreadSanitizer.  The server is a fork of
 * this process and runs one thread per connection plus liburcu's call_rcu
 * thread: readers (get, items, slice) and writers (set, del, append,
 * insert, pop) of the same dict and list run on different server threads
 * at once.  Client processes run several threads that share one handle
 * (its mutex serialises them), the owner reads while they write, one
 * client is SIGKILLed mid-run, and a server is shut down while its clients
 * are busy.  Every process here is instrumented; TSan's log_path gets a
 * report from any of them (the make target fails on one).
 *
 * Managers are started, and clients forked, while this process has no
 * other thread: TSan stops checking in a child of a multi-threaded fork.
 */
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <string.h>
#include <sys/types.h>
#include <sys/wait.h>

#include <mproc.h>

#include "tests/tsan/tsan.h"

#define NC 3		/* client processes */
#define CT 3		/* threads in each */
#define N 300		/* rounds of operations per thread */
#define LOCK_EVERY 4	/* a locked counter increment every 4th round */
#define DEL_EVERY 10	/* the round's key is deleted every 10th round */

struct shared {
	_Atomic int done;		/* the owner's readers stop */
	_Atomic long victim_appends;	/* appends the victim saw return */
	_Atomic int busy;		/* shutdown phase: threads warmed up */
};
static struct shared *sh;

/* The objects, opened by the owner before the clients fork. */
static mp_manager *m;
static mp_dict *d, *cnt, *d2;
static mp_list *l, *lv, *lm;
static mp_ns *ns;
static mp_queue *q;

static void
key_of(char *buf, size_t cap, int c, int t, int i)
{
	snprintf(buf, cap, "k-%d-%d-%d", c, t, i);
}

static void
val_of(char *buf, size_t cap, int c, int t, int i)
{
	snprintf(buf, cap, "v-%d-%d-%d", c, t, i);
}

/* The counter under the server-owned lock: read, add one, write back. */
static void
locked_increment(mp_lock *lk)
{
	char buf[32];
	long n = 0;
	ssize_t len;
	int rc = mp_lock_acquire(lk, MP_SEC(60));

	/* -EOWNERDEAD: the victim died holding it; we hold it now. */
	CHECK(rc == 0 || rc == -EOWNERDEAD);
	len = mp_dict_get(cnt, "n", 1, buf, sizeof(buf) - 1);
	if (len >= 0) {
		buf[len] = '\0';
		n = atol(buf);
	} else {
		CHECK_EQ(len, -ENOENT);
	}
	len = snprintf(buf, sizeof(buf), "%ld", n + 1);
	CHECK_EQ(mp_dict_set(cnt, "n", 1, buf, (size_t)len), 0);
	CHECK_EQ(mp_lock_release(lk), 0);
}

struct cthr {
	int c, t;
	mp_lock *lk;
};

/*
 * In-place list writes (insert shifts, pop and remove shift back, set
 * swaps an item) and composite dict writes, while other server threads
 * read the same objects.  Each round leaves lm's length as it found it;
 * d2 holds "m-c-t" -> its writer's last round, and transient keys.
 */
static void
mutate(int c, int t, int i, const char *v)
{
	char k[32], buf[64], tmp[32];
	size_t vl = strlen(v);
	ssize_t n;

	CHECK_EQ(mp_list_insert(lm, i % 3 - 1, v, vl), 0);
	CHECK_EQ(mp_list_insert(lm, 0, v, vl), 0);
	CHECK_EQ(mp_list_set(lm, 0, v, vl), 0);
	n = mp_list_pop(lm, -1, buf, sizeof(buf));
	CHECK(n > 2 && memcmp(buf, "v-", 2) == 0);
	/* Our own item is there to remove, unless another thread popped
	 * it; then pop another: the length comes back either way. */
	if (mp_list_remove(lm, v, vl) != 0) {
		n = mp_list_pop(lm, 0, buf, sizeof(buf));
		CHECK(n > 2 && memcmp(buf, "v-", 2) == 0);
	}
	int kl = snprintf(k, sizeof(k), "m-%d-%d", c, t);
	int tl = snprintf(tmp, sizeof(tmp), "%d", i);
	mp_item up[2] = { { k, (size_t)kl, tmp, (size_t)tl },
			  { v, vl, v, vl } };
	CHECK_EQ(mp_dict_update(d2, up, 2), 0);
	CHECK_EQ(mp_dict_setdefault(d2, v, vl, "x", 1, buf, sizeof(buf)),
		 vl);
	CHECK_EQ(mp_dict_pop(d2, v, vl, buf, sizeof(buf)), vl);
	CHECK(memcmp(buf, v, vl) == 0);
	n = mp_dict_get(d2, k, (size_t)kl, buf, sizeof(buf));
	CHECK_EQ(n, tl);
	CHECK(memcmp(buf, tmp, (size_t)tl) == 0);
}

static void *
client_thread(void *arg)
{
	struct cthr *x = arg;
	char k[32], v[32], buf[64];
	int c = x->c, t = x->t;

	for (int i = 0; i < N; i++) {
		key_of(k, sizeof(k), c, t, i);
		val_of(v, sizeof(v), c, t, i);
		CHECK_EQ(mp_dict_set(d, k, strlen(k), v, strlen(v)), 0);
		CHECK_EQ(mp_dict_get(d, k, strlen(k), buf, sizeof(buf)),
			 strlen(v));
		CHECK(memcmp(buf, v, strlen(v)) == 0);
		CHECK_EQ(mp_dict_contains(d, k, strlen(k)), 1);
		CHECK_EQ(mp_list_append(l, v, strlen(v)), 0);
		char attr[16];
		snprintf(attr, sizeof(attr), "a%d_%d", c, t);
		CHECK_EQ(mp_ns_set(ns, attr, &i, sizeof(i)), 0);
		int back = -1;
		CHECK_EQ(mp_ns_get(ns, attr, &back, sizeof(back)),
			 sizeof(back));
		CHECK_EQ(back, i);
		CHECK_EQ(mp_queue_put(q, v, strlen(v), MP_SEC(60)), 0);
		if (i % LOCK_EVERY == 0)
			locked_increment(x->lk);
		if (i % DEL_EVERY == DEL_EVERY - 1)
			CHECK_EQ(mp_dict_del(d, k, strlen(k)), 0);
		if (i % 16 == 0) {
			void *snap;
			size_t len;
			CHECK(mp_dict_keys(d, &snap, &len) > 0);
			free(snap);
			CHECK(mp_list_slice(l, -8, INT32_MAX, &snap, &len) > 0);
			free(snap);
		}
		mutate(c, t, i, v);
	}
	return NULL;
}

static int
client_main(int c)
{
	pthread_t th[CT];
	struct cthr x[CT];

	for (int t = 0; t < CT; t++) {
		x[t] = (struct cthr){ c, t, NULL };
		/* Each thread its own handle of the same server lock. */
		CHECK_EQ(mp_manager_lock(m, "lk", &x[t].lk), 0);
		CHECK_EQ(pthread_create(&th[t], NULL, client_thread, &x[t]),
			 0);
	}
	/* Meanwhile opens: objects made and their fds passed while the
	 * threads' calls go on. */
	for (int i = 0; i < 10; i++) {
		char name[32];
		mp_event *e;
		mp_sem *sem;
		mp_queue *qq;
		mp_dict *dd;

		snprintf(name, sizeof(name), "ev-%d", i);
		CHECK_EQ(mp_manager_event(m, name, &e), 0);
		CHECK_EQ(mp_event_set(e), 0);
		CHECK(mp_event_is_set(e));
		mp_event_free(e);
		CHECK_EQ(mp_manager_semaphore(m, "sem", 1, &sem), 0);
		CHECK_EQ(mp_sem_acquire(sem, MP_SEC(60)), 0);
		CHECK_EQ(mp_sem_release(sem), 0);
		mp_sem_free(sem);
		CHECK_EQ(mp_manager_queue(m, "q", 64, 64, &qq), 0);
		mp_queue_free(qq);
		CHECK_EQ(mp_manager_dict(m, NULL, &dd), 0);
		CHECK_EQ(mp_dict_set(dd, "a", 1, "b", 1), 0);
		CHECK_EQ(mp_dict_len(dd), 1);
		mp_dict_free(dd);
	}
	for (int t = 0; t < CT; t++) {
		pthread_join(th[t], NULL);
		mp_lock_free(x[t].lk);
	}
	return 0;
}

/*
 * The first calls of a forked client's threads, all at once: each process
 * initialises its own copy of the handle's mutex on its first call, and
 * every thread must find it initialised before it locks it.
 */
#define FT 4
static pthread_barrier_t fbar;

static void *
first_call_thread(void *arg)
{
	int t = (int)(intptr_t)arg;
	char k[32], buf[32];
	int len = snprintf(k, sizeof(k), "f-%d-%d", (int)getpid(), t);

	pthread_barrier_wait(&fbar);
	CHECK_EQ(mp_dict_set(d, k, (size_t)len, k, (size_t)len), 0);
	CHECK_EQ(mp_dict_get(d, k, (size_t)len, buf, sizeof(buf)), len);
	CHECK(memcmp(buf, k, (size_t)len) == 0);
	CHECK_EQ(mp_dict_del(d, k, (size_t)len), 0);
	return NULL;
}

static int
first_call_client(int c)
{
	pthread_t th[FT];

	(void)c;
	pthread_barrier_init(&fbar, NULL, FT);
	for (int t = 0; t < FT; t++)
		CHECK_EQ(pthread_create(&th[t], NULL, first_call_thread,
					(void *)(intptr_t)t), 0);
	for (int t = 0; t < FT; t++)
		pthread_join(th[t], NULL);
	pthread_barrier_destroy(&fbar);
	return 0;
}

/* Appends to its own list and takes the lock until it is killed. */
static int
victim_main(void)
{
	mp_lock *lk;
	char v[32];

	CHECK_EQ(mp_manager_lock(m, "lk", &lk), 0);
	for (long i = 0;; i++) {
		int len = snprintf(v, sizeof(v), "victim-%ld", i);
		CHECK_EQ(mp_list_append(lv, v, (size_t)len), 0);
		atomic_fetch_add(&sh->victim_appends, 1);
		int rc = mp_lock_acquire(lk, MP_SEC(60));
		CHECK(rc == 0 || rc == -EOWNERDEAD);
		CHECK_EQ(mp_dict_set(d, "victim", 6, v, (size_t)len), 0);
		CHECK_EQ(mp_lock_release(lk), 0);
	}
}

static pid_t
fork_client(int (*fn)(int), int c)
{
	pid_t pid;

	fflush(NULL);
	pid = fork();
	CHECK(pid >= 0);
	if (pid == 0)
		_exit(fn(c));
	return pid;
}

static int
victim_entry(int c)
{
	(void)c;
	return victim_main();
}

static int
wait_exit(pid_t pid)
{
	int st;

	while (waitpid(pid, &st, 0) < 0)
		CHECK(errno == EINTR);
	return WIFEXITED(st) ? WEXITSTATUS(st) : -WTERMSIG(st);
}

/* The owner's threads while the clients run. */
static void *
queue_consumer(void *arg)
{
	static unsigned char seen[NC][CT][N];
	char buf[64];

	(void)arg;
	for (int k = 0; k < NC * CT * N; k++) {
		int c, t, i;
		ssize_t n = mp_queue_get(q, buf, sizeof(buf) - 1, MP_SEC(60));
		CHECK(n > 0);
		buf[n] = '\0';
		CHECK_EQ(sscanf(buf, "v-%d-%d-%d", &c, &t, &i), 3);
		CHECK(c >= 0 && c < NC && t >= 0 && t < CT && i >= 0 && i < N);
		CHECK(!seen[c][t][i]);
		seen[c][t][i] = 1;
	}
	return NULL;
}

/* Snapshots taken while writers change the objects: each record whole. */
static void *
snapshot_reader(void *arg)
{
	int rounds = 0;

	(void)arg;
	while (!atomic_load(&sh->done) || rounds < 3) {
		void *snap;
		size_t len, off = 0;
		mp_item it;
		ssize_t n = mp_dict_items(d, &snap, &len);
		CHECK(n >= 0);
		for (ssize_t k = 0; k < n; k++) {
			CHECK_EQ(mp_item_next(snap, len, &off, &it), 1);
			/* "k-c-t-i" holds "v-c-t-i"; "victim" anything. */
			if (it.klen > 2 && memcmp(it.key, "k-", 2) == 0) {
				CHECK_EQ(it.vlen, it.klen);
				CHECK(memcmp((const char *)it.val + 1,
					     (const char *)it.key + 1,
					     it.klen - 1) == 0);
			}
		}
		CHECK_EQ(mp_item_next(snap, len, &off, &it), 0);
		free(snap);
		n = mp_list_slice(l, 0, INT32_MAX, &snap, &len);
		CHECK(n >= 0);
		off = 0;
		for (ssize_t k = 0; k < n; k++) {
			CHECK_EQ(mp_item_next(snap, len, &off, &it), 1);
			CHECK(it.vlen > 2 &&
			      memcmp(it.val, "v-", 2) == 0);
		}
		free(snap);
		CHECK(mp_list_len(l) >= n);
		n = mp_list_slice(lm, 0, INT32_MAX, &snap, &len);
		CHECK(n >= 0);
		off = 0;
		for (ssize_t k = 0; k < n; k++) {
			CHECK_EQ(mp_item_next(snap, len, &off, &it), 1);
			CHECK(it.vlen > 2 && memcmp(it.val, "v-", 2) == 0);
		}
		free(snap);
		char buf[64];
		ssize_t g = mp_list_get(lm, 0, buf, sizeof(buf));
		CHECK(g == -ERANGE || (g > 2 && memcmp(buf, "v-", 2) == 0));
		n = mp_dict_items(d2, &snap, &len);
		CHECK(n >= 0);
		free(snap);
		rounds++;
	}
	return NULL;
}

static void
phase_clients(void)
{
	pid_t pid[NC], victim;
	pthread_t cons, rd[2];
	char buf[64];

	PHASE("clients with threads, owner readers, a client killed");
	CHECK_EQ(mp_manager_start(&m, NULL), 0);
	CHECK_EQ(mp_manager_dict(m, "d", &d), 0);
	CHECK_EQ(mp_manager_dict(m, "counter", &cnt), 0);
	CHECK_EQ(mp_manager_list(m, "l", &l), 0);
	CHECK_EQ(mp_manager_list(m, "lv", &lv), 0);
	CHECK_EQ(mp_manager_list(m, "lm", &lm), 0);
	CHECK_EQ(mp_manager_dict(m, "d2", &d2), 0);
	CHECK_EQ(mp_manager_namespace(m, "ns", &ns), 0);
	CHECK_EQ(mp_manager_queue(m, "q", 64, 64, &q), 0);
	/* Connected here first: the children inherit a handle whose mutex
	 * is this process's. */
	CHECK_EQ(mp_dict_len(d), 0);
	for (int round = 0; round < 4; round++) {
		pid_t f[4];
		for (int c = 0; c < 4; c++)
			f[c] = fork_client(first_call_client, c);
		for (int c = 0; c < 4; c++)
			CHECK_EQ(wait_exit(f[c]), 0);
	}
	CHECK_EQ(mp_dict_len(d), 0);
	atomic_store(&sh->done, 0);
	atomic_store(&sh->victim_appends, 0);
	victim = fork_client(victim_entry, NC);
	for (int c = 0; c < NC; c++)
		pid[c] = fork_client(client_main, c);
	/* Threads only now: the clients are forks of one thread. */
	CHECK_EQ(pthread_create(&cons, NULL, queue_consumer, NULL), 0);
	for (int r = 0; r < 2; r++)
		CHECK_EQ(pthread_create(&rd[r], NULL, snapshot_reader, NULL),
			 0);
	long long t0 = tsan_now();
	while (atomic_load(&sh->victim_appends) < 20) {
		CHECK(tsan_now() - t0 < 60000000000LL);
		usleep(1000);
	}
	CHECK_EQ(kill(victim, SIGKILL), 0);
	CHECK_EQ(wait_exit(victim), -SIGKILL);
	for (int c = 0; c < NC; c++)
		CHECK_EQ(wait_exit(pid[c]), 0);
	atomic_store(&sh->done, 1);
	pthread_join(cons, NULL);
	for (int r = 0; r < 2; r++)
		pthread_join(rd[r], NULL);

	/* The exact final state. */
	long keys = 0;
	for (int c = 0; c < NC; c++) {
		for (int t = 0; t < CT; t++) {
			for (int i = 0; i < N; i++) {
				char k[32], v[32];
				key_of(k, sizeof(k), c, t, i);
				val_of(v, sizeof(v), c, t, i);
				ssize_t n = mp_dict_get(d, k, strlen(k), buf,
							sizeof(buf));
				if (i % DEL_EVERY == DEL_EVERY - 1) {
					CHECK_EQ(n, -ENOENT);
					continue;
				}
				CHECK_EQ(n, strlen(v));
				CHECK(memcmp(buf, v, (size_t)n) == 0);
				keys++;
			}
			char attr[16];
			int back = -1;
			snprintf(attr, sizeof(attr), "a%d_%d", c, t);
			CHECK_EQ(mp_ns_get(ns, attr, &back, sizeof(back)),
				 sizeof(back));
			CHECK_EQ(back, N - 1);
		}
	}
	/* The victim's key, set under the lock at least once. */
	CHECK_EQ(mp_dict_contains(d, "victim", 6), 1);
	CHECK_EQ(mp_dict_len(d), keys + 1);
	CHECK_EQ(mp_list_len(l), NC * CT * N);
	ssize_t n = mp_dict_get(cnt, "n", 1, buf, sizeof(buf) - 1);
	CHECK(n > 0);
	buf[n] = '\0';
	CHECK_EQ(atol(buf), NC * CT * ((N + LOCK_EVERY - 1) / LOCK_EVERY));
	/* Each append the victim saw return is there; one more may be. */
	long va = atomic_load(&sh->victim_appends), vl = mp_list_len(lv);
	CHECK(vl == va || vl == va + 1);
	for (long i = 0; i < vl; i++) {
		char v[32];
		int len = snprintf(v, sizeof(v), "victim-%ld", i);
		CHECK_EQ(mp_list_get(lv, i, buf, sizeof(buf)), len);
		CHECK(memcmp(buf, v, (size_t)len) == 0);
	}
	CHECK(mp_queue_empty(q));
	/* Every round put lm back to its length; d2 keeps the last round
	 * of each writer. */
	CHECK_EQ(mp_list_len(lm), 0);
	CHECK_EQ(mp_dict_len(d2), NC * CT);
	for (int c = 0; c < NC; c++) {
		for (int t = 0; t < CT; t++) {
			char k[32], want[16];
			int kl = snprintf(k, sizeof(k), "m-%d-%d", c, t);
			int wl = snprintf(want, sizeof(want), "%d", N - 1);
			CHECK_EQ(mp_dict_get(d2, k, (size_t)kl, buf,
					     sizeof(buf)), wl);
			CHECK(memcmp(buf, want, (size_t)wl) == 0);
		}
	}
	mp_queue_free(q);
	mp_list_free(lm);
	mp_dict_free(d2);
	mp_ns_free(ns);
	mp_list_free(lv);
	mp_list_free(l);
	mp_dict_free(cnt);
	mp_dict_free(d);
	mp_manager_free(m);
}

/* ------------------------------------------------------------------ */
/* Shutdown while clients (processes and threads) are active */

static void *
until_epipe(void *arg)
{
	int t = (int)(intptr_t)arg;
	char k[32], buf[64];
	bool gone = false;
	long long t0 = tsan_now();

	for (int i = 0;; i++) {
		int len = snprintf(k, sizeof(k), "s-%d-%d", t, i);
		int rc = mp_dict_set(d, k, (size_t)len, k, (size_t)len);
		ssize_t g = mp_dict_get(d, k, (size_t)len, buf, sizeof(buf));
		int a = mp_list_append(l, k, (size_t)len);
		if (gone) {
			/* Once stopped, never answered again. */
			CHECK_EQ(rc, -EPIPE);
			CHECK_EQ(g, -EPIPE);
			CHECK_EQ(a, -EPIPE);
			return NULL;
		}
		CHECK(rc == 0 || rc == -EPIPE);
		CHECK(g == len || g == -EPIPE);
		CHECK(a == 0 || a == -EPIPE);
		if (rc == -EPIPE || g == -EPIPE || a == -EPIPE)
			gone = true;
		if (i == 20)
			atomic_fetch_add(&sh->busy, 1);
		CHECK(tsan_now() - t0 < 90000000000LL);
	}
}

static int
shutdown_client(int c)
{
	pthread_t th[CT];

	for (int t = 0; t < CT; t++)
		CHECK_EQ(pthread_create(&th[t], NULL, until_epipe,
					(void *)(intptr_t)(c * CT + t)), 0);
	for (int t = 0; t < CT; t++)
		pthread_join(th[t], NULL);
	return 0;
}

/* A client by address: the server's handshake thread, then the same. */
static mp_dict *ad;

static void *
address_loop(void *arg)
{
	int c = (int)(intptr_t)arg;
	char buf[8];

	for (int i = 0;; i++) {
		int rc = mp_dict_set(ad, "a", 1, &c, sizeof(c));
		ssize_t g = mp_dict_get(ad, "a", 1, buf, sizeof(buf));
		/*
		 * Gone: -EPIPE, also from a later call that tries to
		 * reconnect and finds the socket removed.
		 */
		if (rc == -EPIPE || g == -EPIPE)
			break;
		CHECK_EQ(rc, 0);
		CHECK_EQ(g, sizeof(c));
		if (i == 20)
			atomic_fetch_add(&sh->busy, 1);
	}
	return NULL;
}

static int
address_grandchild(int c)
{
	char buf[8];

	/* The inherited handle reconnects by address (a new handshake). */
	CHECK_EQ(mp_dict_set(ad, "g", 1, &c, sizeof(c)), 0);
	CHECK_EQ(mp_dict_get(ad, "g", 1, buf, sizeof(buf)), sizeof(c));
	return 0;
}

static int
address_client(int c)
{
	char addr[64];
	mp_manager *m2;
	pthread_t th;

	snprintf(addr, sizeof(addr), "unix:/tmp/mproc-tsan-%d.sock",
		 (int)getppid());
	CHECK_EQ(mp_manager_connect(&m2, addr, "key", 3), 0);
	CHECK_EQ(mp_manager_dict(m2, "d", &ad), 0);
	CHECK_EQ(wait_exit(fork_client(address_grandchild, c)), 0);
	/* Two threads on the handle made by connect. */
	CHECK_EQ(pthread_create(&th, NULL, address_loop,
				(void *)(intptr_t)c), 0);
	address_loop((void *)(intptr_t)(c + 1));
	pthread_join(th, NULL);
	mp_dict_free(ad);
	mp_manager_free(m2);
	return 0;
}

static void
phase_shutdown(void)
{
	pid_t pid[NC + 1];
	char addr[64];
	pthread_t own;

	PHASE("shutdown while clients are active");
	snprintf(addr, sizeof(addr), "unix:/tmp/mproc-tsan-%d.sock",
		 (int)getpid());
	CHECK_EQ(mp_manager_start(&m, &(mp_manager_attr){
				 .address = addr, .authkey = "key",
				 .authkey_len = 3 }), 0);
	CHECK_EQ(mp_manager_dict(m, "d", &d), 0);
	CHECK_EQ(mp_manager_list(m, NULL, &l), 0);
	atomic_store(&sh->busy, 0);
	for (int c = 0; c < NC; c++)
		pid[c] = fork_client(shutdown_client, c);
	pid[NC] = fork_client(address_client, NC);
	CHECK_EQ(pthread_create(&own, NULL, until_epipe,
				(void *)(intptr_t)(NC * CT)), 0);
	long long t0 = tsan_now();
	while (atomic_load(&sh->busy) < NC * CT + 3) {
		CHECK(tsan_now() - t0 < 60000000000LL);
		usleep(1000);
	}
	CHECK_EQ(mp_manager_shutdown(m), 0);
	pthread_join(own, NULL);
	for (int c = 0; c <= NC; c++)
		CHECK_EQ(wait_exit(pid[c]), 0);
	CHECK_EQ(mp_dict_len(d), -EPIPE);
	mp_list_free(l);
	mp_dict_free(d);
	mp_manager_free(m);
}

int
main(void)
{
	tsan_prog = "tsan_manager";
	alarm(170);	/* a hang fails the run (SIGALRM) */
	sh = mp_shm_alloc(sizeof(*sh));
	CHECK(sh != NULL);
	phase_clients();
	phase_shutdown();
	mp_shm_free(sh);
	PHASE("passed");
	return 0;
}
