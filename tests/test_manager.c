/* SPDX-License-Identifier: MIT */
/*
 * Manager tests: real processes against a real server.
 */
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <criterion/criterion.h>
#include <mproc.h>

#include "tests/helpers.h"

T_SUITE(manager);

T_TEST(manager, dict_basic_operations)
{
	mp_manager *m;
	mp_dict *d;
	char buf[64];
	void *v;

	cr_assert_eq(mp_manager_start(&m, NULL), 0);
	cr_assert_eq(mp_manager_dict(m, NULL, &d), 0);
	cr_assert_eq(mp_dict_len(d), 0);
	cr_assert_eq(mp_dict_get(d, "a", 1, buf, sizeof(buf)), -ENOENT);
	cr_assert_eq(mp_dict_set(d, "a", 1, "alpha", 5), 0);
	cr_assert_eq(mp_dict_set(d, "b", 1, "beta", 4), 0);
	cr_assert_eq(mp_dict_set(d, "a", 1, "ALPHA!", 6), 0);
	cr_assert_eq(mp_dict_len(d), 2);
	cr_assert_eq(mp_dict_get(d, "a", 1, buf, sizeof(buf)), 6);
	cr_assert_eq(memcmp(buf, "ALPHA!", 6), 0);
	cr_assert_eq(mp_dict_get(d, "a", 1, buf, 5), -EMSGSIZE);
	cr_assert_eq(mp_dict_get_alloc(d, "a", 1, &v), 6);
	cr_assert_eq(memcmp(v, "ALPHA!", 6), 0);
	free(v);
	cr_assert_eq(mp_dict_contains(d, "b", 1), 1);
	cr_assert_eq(mp_dict_contains(d, "c", 1), 0);
	cr_assert_eq(mp_dict_del(d, "b", 1), 0);
	cr_assert_eq(mp_dict_del(d, "b", 1), -ENOENT);
	cr_assert_eq(mp_dict_len(d), 1);
	mp_dict_free(d);
	mp_manager_free(m);
}

/* Walk a snapshot block into an array of items; returns the count. */
static int
walk(const void *buf, size_t len, mp_item *it, int max)
{
	size_t off = 0;
	int n = 0, r;

	while (n < max && (r = mp_item_next(buf, len, &off, &it[n])) == 1)
		n++;
	return n;
}

T_TEST(manager, dict_pop_setdefault_update_clear_snapshots)
{
	mp_manager *m;
	mp_dict *d;
	char buf[64];
	void *v, *snap;
	size_t len;
	mp_item it[8];
	mp_item up[3] = {
		{ "x", 1, "1", 1 }, { "y", 1, "22", 2 }, { "x", 1, "333", 3 },
	};

	cr_assert_eq(mp_manager_start(&m, NULL), 0);
	cr_assert_eq(mp_manager_dict(m, NULL, &d), 0);
	cr_assert_eq(mp_dict_update(d, up, 3), 0);
	cr_assert_eq(mp_dict_len(d), 2);
	cr_assert_eq(mp_dict_get(d, "x", 1, buf, sizeof(buf)), 3);
	cr_assert_eq(memcmp(buf, "333", 3), 0);
	cr_assert_eq(mp_dict_setdefault(d, "y", 1, "d", 1, buf, sizeof(buf)),
		     2);
	cr_assert_eq(memcmp(buf, "22", 2), 0);
	cr_assert_eq(mp_dict_setdefault(d, "z", 1, "dd", 2, buf, sizeof(buf)),
		     2);
	cr_assert_eq(memcmp(buf, "dd", 2), 0);
	cr_assert_eq(mp_dict_len(d), 3);
	/* Too small: -EMSGSIZE and the item stays. */
	cr_assert_eq(mp_dict_pop(d, "x", 1, buf, 2), -EMSGSIZE);
	cr_assert_eq(mp_dict_len(d), 3);
	cr_assert_eq(mp_dict_pop(d, "x", 1, buf, 3), 3);
	cr_assert_eq(mp_dict_pop(d, "x", 1, buf, 3), -ENOENT);
	cr_assert_eq(mp_dict_pop_alloc(d, "z", 1, &v), 2);
	cr_assert_eq(memcmp(v, "dd", 2), 0);
	free(v);
	cr_assert_eq(mp_dict_set(d, "", 0, "empty", 5), 0);
	cr_assert_eq(mp_dict_set(d, "e", 1, NULL, 0), 0);
	cr_assert_eq(mp_dict_get(d, "e", 1, NULL, 0), 0);
	cr_assert_eq(mp_dict_items(d, &snap, &len), 3);
	cr_assert_eq(walk(snap, len, it, 8), 3);
	int seen = 0;
	for (int i = 0; i < 3; i++) {
		if (it[i].klen == 1 && memcmp(it[i].key, "y", 1) == 0 &&
		    it[i].vlen == 2 && memcmp(it[i].val, "22", 2) == 0)
			seen |= 1;
		if (it[i].klen == 0 && it[i].vlen == 5 &&
		    memcmp(it[i].val, "empty", 5) == 0)
			seen |= 2;
		if (it[i].klen == 1 && memcmp(it[i].key, "e", 1) == 0 &&
		    it[i].vlen == 0)
			seen |= 4;
	}
	cr_assert_eq(seen, 7);
	free(snap);
	cr_assert_eq(mp_dict_keys(d, &snap, &len), 3);
	cr_assert_eq(walk(snap, len, it, 8), 3);
	for (int i = 0; i < 3; i++)
		cr_assert_eq(it[i].vlen, 0);
	free(snap);
	cr_assert_eq(mp_dict_clear(d), 0);
	cr_assert_eq(mp_dict_len(d), 0);
	cr_assert_eq(mp_dict_keys(d, &snap, &len), 0);
	cr_assert_eq(len, 0);
	free(snap);
	mp_dict_free(d);
	mp_manager_free(m);
}

static ssize_t
lget(mp_list *l, ssize_t i, char *buf)
{
	ssize_t n = mp_list_get(l, i, buf, 31);

	if (n >= 0)
		buf[n] = '\0';
	return n;
}

T_TEST(manager, list_operations_follow_python)
{
	mp_manager *m;
	mp_list *l;
	char buf[32];
	void *snap;
	size_t len;
	mp_item it[16];
	mp_item ext[2] = { { NULL, 0, "d", 1 }, { NULL, 0, "e", 1 } };

	cr_assert_eq(mp_manager_start(&m, NULL), 0);
	cr_assert_eq(mp_manager_list(m, NULL, &l), 0);
	cr_assert_eq(mp_list_pop(l, -1, buf, sizeof(buf)), -ERANGE);
	cr_assert_eq(mp_list_get(l, 0, buf, sizeof(buf)), -ERANGE);
	cr_assert_eq(mp_list_append(l, "a", 1), 0);
	cr_assert_eq(mp_list_append(l, "b", 1), 0);
	cr_assert_eq(mp_list_append(l, "c", 1), 0);
	cr_assert_eq(mp_list_extend(l, ext, 2), 0);	/* a b c d e */
	cr_assert_eq(mp_list_len(l), 5);
	cr_assert_eq(lget(l, -1, buf), 1);
	cr_assert_str_eq(buf, "e");
	cr_assert_eq(lget(l, -5, buf), 1);
	cr_assert_str_eq(buf, "a");
	cr_assert_eq(mp_list_get(l, -6, buf, sizeof(buf)), -ERANGE);
	cr_assert_eq(mp_list_get(l, 5, buf, sizeof(buf)), -ERANGE);
	cr_assert_eq(mp_list_set(l, -2, "D", 1), 0);	/* a b c D e */
	cr_assert_eq(mp_list_set(l, 5, "X", 1), -ERANGE);
	cr_assert_eq(mp_list_insert(l, 0, "0", 1), 0);	/* 0 a b c D e */
	cr_assert_eq(mp_list_insert(l, 100, "z", 1), 0); /* ... e z */
	cr_assert_eq(mp_list_insert(l, -100, "s", 1), 0); /* s 0 a ... */
	cr_assert_eq(mp_list_insert(l, -1, "y", 1), 0);	/* ... e y z */
	cr_assert_eq(mp_list_len(l), 9);
	cr_assert_eq(mp_list_pop(l, 1, buf, sizeof(buf)), 1);
	cr_assert_eq(buf[0], '0');			/* s a b c D e y z */
	cr_assert_eq(mp_list_pop(l, -1, buf, 0), -EMSGSIZE);
	cr_assert_eq(mp_list_len(l), 8);
	cr_assert_eq(mp_list_remove(l, "b", 1), 0);	/* s a c D e y z */
	cr_assert_eq(mp_list_remove(l, "b", 1), -ENOENT);
	cr_assert_eq(mp_list_append(l, "a", 1), 0);	/* s a c D e y z a */
	cr_assert_eq(mp_list_remove(l, "a", 1), 0);	/* s c D e y z a */
	cr_assert_eq(mp_list_slice(l, 0, 100, &snap, &len), 7);
	cr_assert_eq(walk(snap, len, it, 16), 7);
	const char *want = "scDeyza";
	for (int i = 0; i < 7; i++) {
		cr_assert_eq(it[i].vlen, 1);
		cr_assert_eq(it[i].klen, 0);
		cr_assert_eq(*(const char *)it[i].val, want[i]);
	}
	free(snap);
	cr_assert_eq(mp_list_slice(l, -3, -1, &snap, &len), 2);
	cr_assert_eq(walk(snap, len, it, 16), 2);
	cr_assert_eq(*(const char *)it[0].val, 'y');
	cr_assert_eq(*(const char *)it[1].val, 'z');
	free(snap);
	cr_assert_eq(mp_list_slice(l, 5, 2, &snap, &len), 0);
	free(snap);
	/* Grows past its first vector many times. */
	for (int i = 0; i < 1000; i++)
		cr_assert_eq(mp_list_insert(l, i % 3, &i, sizeof(i)), 0);
	cr_assert_eq(mp_list_len(l), 1007);
	cr_assert_eq(lget(l, -1, buf), 1);
	cr_assert_str_eq(buf, "a");
	mp_list_free(l);
	mp_manager_free(m);
}

T_TEST(manager, namespace_attributes)
{
	mp_manager *m;
	mp_ns *ns;
	char buf[16];
	void *v;

	cr_assert_eq(mp_manager_start(&m, NULL), 0);
	cr_assert_eq(mp_manager_namespace(m, NULL, &ns), 0);
	cr_assert_eq(mp_ns_get(ns, "x", buf, sizeof(buf)), -ENOENT);
	cr_assert_eq(mp_ns_set(ns, "x", "10", 2), 0);
	cr_assert_eq(mp_ns_set(ns, "y", "hello", 5), 0);
	cr_assert_eq(mp_ns_get(ns, "x", buf, sizeof(buf)), 2);
	cr_assert_eq(memcmp(buf, "10", 2), 0);
	cr_assert_eq(mp_ns_get_alloc(ns, "y", &v), 5);
	cr_assert_eq(memcmp(v, "hello", 5), 0);
	free(v);
	cr_assert_eq(mp_ns_del(ns, "x"), 0);
	cr_assert_eq(mp_ns_del(ns, "x"), -ENOENT);
	cr_assert_eq(mp_ns_get(ns, "x", buf, sizeof(buf)), -ENOENT);
	mp_ns_free(ns);
	mp_manager_free(m);
}

struct named {
	mp_manager *m;
	struct t_sync ready;
};

static int
named_child(void *arg)
{
	struct named *a = arg;
	mp_dict *d;
	mp_list *l;
	char buf[8];

	/* Forked before any of these names existed in the parent. */
	T_CHECK(mp_manager_dict(a->m, "shared", &d) == 0);
	T_CHECK(mp_dict_get(d, "k", 1, buf, sizeof(buf)) == 1);
	T_CHECK(buf[0] == 'P');
	T_CHECK(mp_dict_set(d, "c", 1, "C", 1) == 0);
	T_CHECK(mp_manager_list(a->m, "shared", &l) == -EEXIST);
	mp_dict_free(d);
	return T_PASS;
}

T_TEST(manager, names_open_the_same_object_in_any_process)
{
	struct named a;
	mp_dict *d, *d2, *anon;
	mp_list *l;
	mp_ns *ns;
	char buf[8];
	char longname[MP_MANAGER_NAME_MAX + 2];

	cr_assert_eq(mp_manager_start(&a.m, NULL), 0);
	cr_assert_eq(mp_manager_dict(a.m, "shared", &d), 0);
	cr_assert_eq(mp_dict_set(d, "k", 1, "P", 1), 0);
	t_wait_exit(t_spawn(named_child, &a), T_PASS);
	cr_assert_eq(mp_dict_get(d, "c", 1, buf, sizeof(buf)), 1);
	/* Reopened by name: the same dict; anonymous: a new one. */
	cr_assert_eq(mp_manager_dict(a.m, "shared", &d2), 0);
	cr_assert_eq(mp_dict_len(d2), 2);
	cr_assert_eq(mp_manager_dict(a.m, NULL, &anon), 0);
	cr_assert_eq(mp_dict_len(anon), 0);
	/* A name holds one kind of object. */
	cr_assert_eq(mp_manager_list(a.m, "shared", &l), -EEXIST);
	cr_assert_eq(mp_manager_namespace(a.m, "shared", &ns), -EEXIST);
	cr_assert_eq(mp_manager_list(a.m, "shared-list", &l), 0);
	memset(longname, 'n', sizeof(longname) - 1);
	longname[sizeof(longname) - 1] = '\0';
	cr_assert_eq(mp_manager_dict(a.m, longname, &d2), -EINVAL);
	longname[MP_MANAGER_NAME_MAX] = '\0';
	mp_dict_free(anon);
	cr_assert_eq(mp_manager_dict(a.m, longname, &anon), 0);
	cr_assert_eq(mp_manager_dict(a.m, "", &anon), -EINVAL);
	mp_dict_free(anon);
	mp_list_free(l);
	mp_dict_free(d2);
	mp_dict_free(d);
	mp_manager_free(a.m);
}

/* ---- concurrent clients ---- */

#define CONC_CLIENTS 3
#define CONC_OPS 100000
#define CONC_KEYS 64

struct conc {
	mp_manager *m;
	mp_dict *d;
	mp_list *l;
	int id;
};

/*
 * Client c's deterministic plan; the parent replays it to know the final
 * state.  Each client owns its keys (so its own reads check exactly) and
 * appends (c << 24 | j) to the shared list now and then.
 */
enum { OP_SET, OP_GET, OP_DEL, OP_APPEND };

static int
conc_op(int j)
{
	return (j % 7 == 3) ? OP_APPEND : (j % 5 == 4) ? OP_DEL : j % 2;
}

static int
conc_client(void *arg)
{
	struct conc *a = arg;
	int model[CONC_KEYS];

	for (int k = 0; k < CONC_KEYS; k++)
		model[k] = -1;
	for (int j = 0; j < CONC_OPS; j++) {
		int key[2] = { a->id, (j * 7) % CONC_KEYS }, got;
		int k = key[1];
		int op = conc_op(j);
		uint32_t item;
		ssize_t n;

		switch (op) {
		case OP_SET:
			T_CHECK(mp_dict_set(a->d, key, sizeof(key), &j,
					    sizeof(j)) == 0);
			model[k] = j;
			break;
		case OP_GET:
			n = mp_dict_get(a->d, key, sizeof(key), &got,
					sizeof(got));
			if (model[k] < 0) {
				T_CHECK(n == -ENOENT);
			} else {
				T_CHECK(n == (ssize_t)sizeof(got));
				T_CHECK(got == model[k]);
			}
			break;
		case OP_DEL:
			T_CHECK(mp_dict_del(a->d, key, sizeof(key)) ==
				(model[k] < 0 ? -ENOENT : 0));
			model[k] = -1;
			break;
		case OP_APPEND:
			item = (uint32_t)a->id << 24 | (uint32_t)j;
			T_CHECK(mp_list_append(a->l, &item, sizeof(item)) == 0);
			break;
		}
	}
	return T_PASS;
}

T_TEST(manager, concurrent_clients_mixed_operations_exact_final_state)
{
	struct conc a[CONC_CLIENTS];
	mp_manager *m;
	mp_dict *d;
	mp_list *l;
	pid_t pid[CONC_CLIENTS];
	int model[CONC_CLIENTS][CONC_KEYS], appends = 0, live = 0;
	void *snap;
	size_t len, off = 0;
	mp_item it;

	cr_assert_eq(mp_manager_start(&m, NULL), 0);
	cr_assert_eq(mp_manager_dict(m, "conc", &d), 0);
	cr_assert_eq(mp_manager_list(m, "conc-list", &l), 0);
	for (int c = 0; c < CONC_CLIENTS; c++) {
		a[c] = (struct conc){ m, d, l, c };
		pid[c] = t_spawn(conc_client, &a[c]);
	}
	for (int c = 0; c < CONC_CLIENTS; c++)
		t_wait_exit(pid[c], T_PASS);
	/* Replay the plans. */
	for (int c = 0; c < CONC_CLIENTS; c++) {
		for (int k = 0; k < CONC_KEYS; k++)
			model[c][k] = -1;
		for (int j = 0; j < CONC_OPS; j++) {
			int k = (j * 7) % CONC_KEYS, op = conc_op(j);
			if (op == OP_SET)
				model[c][k] = j;
			else if (op == OP_DEL)
				model[c][k] = -1;
			else if (op == OP_APPEND && c == 0)
				appends++;
		}
		for (int k = 0; k < CONC_KEYS; k++)
			live += model[c][k] >= 0;
	}
	cr_assert_eq(mp_dict_len(d), live);
	cr_assert_eq(mp_dict_items(d, &snap, &len), live);
	while (mp_item_next(snap, len, &off, &it) == 1) {
		const int *key = it.key;
		int v;
		cr_assert_eq(it.klen, 2 * sizeof(int));
		cr_assert_eq(it.vlen, sizeof(int));
		memcpy(&v, it.val, sizeof(v));
		cr_assert_eq(v, model[key[0]][key[1]]);
	}
	free(snap);
	/* Every append once, each client's in its own order. */
	cr_assert_eq(mp_list_len(l), CONC_CLIENTS * appends);
	cr_assert_eq(mp_list_slice(l, 0, CONC_CLIENTS * appends, &snap, &len),
		     CONC_CLIENTS * appends);
	int last[CONC_CLIENTS] = { -1, -1, -1 }, count[CONC_CLIENTS] = { 0 };
	off = 0;
	while (mp_item_next(snap, len, &off, &it) == 1) {
		uint32_t item;
		memcpy(&item, it.val, sizeof(item));
		int c = (int)(item >> 24), j = (int)(item & 0xffffff);
		cr_assert_lt(c, CONC_CLIENTS);
		cr_assert_gt(j, last[c]);
		cr_assert_eq(conc_op(j), OP_APPEND);
		last[c] = j;
		count[c]++;
	}
	for (int c = 0; c < CONC_CLIENTS; c++)
		cr_assert_eq(count[c], appends);
	free(snap);
	mp_list_free(l);
	mp_dict_free(d);
	mp_manager_free(m);
}

/* ---- crashes ---- */

struct killed {
	mp_dict *d;
	struct t_sync ready;
};

static int
busy_client(void *arg)
{
	struct killed *a = arg;

	T_CHECK(mp_dict_set(a->d, "k", 1, "first", 5) == 0);
	t_sync_signal(&a->ready);
	for (uint64_t i = 0;; i++)
		(void)mp_dict_set(a->d, "k", 1, &i, sizeof(i));
	return T_PASS;
}

static int
other_client(void *arg)
{
	struct killed *a = arg;
	char buf[16];

	for (int i = 0; i < 1000; i++) {
		T_CHECK(mp_dict_set(a->d, "o", 1, &i, sizeof(i)) == 0);
		T_CHECK(mp_dict_get(a->d, "k", 1, buf, sizeof(buf)) > 0);
	}
	return T_PASS;
}

T_TEST(manager, client_killed_mid_call_server_serves_the_others)
{
	struct killed a;
	mp_manager *m;
	char buf[16];
	int fds_before;

	cr_assert_eq(mp_manager_start(&m, NULL), 0);
	cr_assert_eq(mp_manager_dict(m, NULL, &a.d), 0);
	t_sync_init(&a.ready);
	/* Connect the parent first: the children then share nothing of it. */
	cr_assert_eq(mp_dict_len(a.d), 0);
	fds_before = t_fd_count();
	for (int round = 0; round < 3; round++) {
		pid_t p = t_spawn(busy_client, &a);
		cr_assert_eq(t_sync_wait(&a.ready, 20000), 0);
		cr_assert_eq(kill(p, SIGKILL), 0);
		cr_assert_eq(t_wait_status(p, 20000), -SIGKILL);
		t_wait_exit(t_spawn(other_client, &a), T_PASS);
		cr_assert_gt(mp_dict_get(a.d, "k", 1, buf, sizeof(buf)), 0);
	}
	cr_assert_eq(mp_dict_len(a.d), 2);
	cr_assert_eq(t_fd_count(), fds_before);
	t_sync_fini(&a.ready);
	mp_dict_free(a.d);
	mp_manager_free(m);
}

/* The pid of this process's only live child (the server), from /proc. */
static pid_t
only_child(void)
{
	char path[64], buf[64];
	FILE *f;
	int pid = -1;

	snprintf(path, sizeof(path), "/proc/self/task/%d/children",
		 (int)getpid());
	if ((f = fopen(path, "r")) == NULL)
		return -1;
	if (fgets(buf, sizeof(buf), f) != NULL && strchr(buf, ' ') ==
	    strrchr(buf, ' '))
		pid = atoi(buf);
	fclose(f);
	return pid;
}

struct after {
	mp_manager *m;
	mp_dict *d;
	struct t_sync go;
};

static int
after_shutdown_child(void *arg)
{
	struct after *a = arg;
	mp_dict *d2;
	int64_t t0 = t_now();

	T_CHECK(mp_dict_set(a->d, "a", 1, "b", 1) == -EPIPE);
	T_CHECK(mp_manager_dict(a->m, "x", &d2) == -EPIPE);
	T_CHECK(t_now() - t0 < MP_SEC(1));
	return T_PASS;
}

static int
connected_then_waits(void *arg)
{
	struct after *a = arg;
	char buf[4];

	T_CHECK(mp_dict_set(a->d, "c", 1, "d", 1) == 0);
	t_sync_signal(&a->go);
	/* Poll until the shutdown is seen; each call returns promptly. */
	for (int i = 0; i < 100000; i++) {
		ssize_t n = mp_dict_get(a->d, "c", 1, buf, sizeof(buf));
		if (n == -EPIPE)
			return T_PASS;
		T_CHECK(n == 1);
	}
	return T_FAIL;
}

T_TEST(manager, shutdown_then_every_call_is_epipe_in_every_process)
{
	struct after a;
	mp_list *l;
	char buf[4];
	pid_t p;

	cr_assert_eq(mp_manager_start(&a.m, NULL), 0);
	cr_assert_eq(mp_manager_dict(a.m, NULL, &a.d), 0);
	cr_assert_eq(mp_manager_list(a.m, NULL, &l), 0);
	t_sync_init(&a.go);
	p = t_spawn(connected_then_waits, &a);
	cr_assert_eq(t_sync_wait(&a.go, 20000), 0);
	cr_assert_eq(mp_manager_shutdown(a.m), 0);
	cr_assert_eq(mp_manager_shutdown(a.m), 0);
	t_wait_exit(p, T_PASS);
	cr_assert_eq(mp_dict_get(a.d, "c", 1, buf, sizeof(buf)), -EPIPE);
	cr_assert_eq(mp_list_append(l, "x", 1), -EPIPE);
	cr_assert_eq(mp_list_len(l), -EPIPE);
	/* A process forked after shutdown connects to nothing. */
	t_wait_exit(t_spawn(after_shutdown_child, &a), T_PASS);
	t_sync_fini(&a.go);
	mp_list_free(l);
	mp_dict_free(a.d);
	mp_manager_free(a.m);
}

T_TEST(manager, server_killed_calls_return_epipe_promptly)
{
	struct after a;
	pid_t server;
	char buf[4];
	int64_t t0;

	cr_assert_eq(mp_manager_start(&a.m, NULL), 0);
	cr_assert_eq(mp_manager_dict(a.m, NULL, &a.d), 0);
	cr_assert_eq(mp_dict_set(a.d, "c", 1, "d", 1), 0);
	server = only_child();
	cr_assert_gt(server, 0);
	cr_assert_eq(kill(server, SIGKILL), 0);
	t0 = t_now();
	/* Until the owner reaps it, the dead server is a zombie: no matter. */
	cr_assert_eq(mp_dict_get(a.d, "c", 1, buf, sizeof(buf)), -EPIPE);
	cr_assert_lt(t_now() - t0, MP_SEC(2));
	t_wait_exit(t_spawn(after_shutdown_child, &a), T_PASS);
	mp_dict_free(a.d);
	mp_manager_free(a.m);
}

T_TEST(manager, one_mebibyte_values)
{
	mp_manager *m;
	mp_dict *d;
	mp_list *l;
	size_t big = 1 << 20;
	unsigned char *v = malloc(big), *w = malloc(big);
	void *got;

	cr_assert(v != NULL && w != NULL);
	for (size_t i = 0; i < big; i++)
		v[i] = (unsigned char)(i * 31 + 7);
	cr_assert_eq(mp_manager_start(&m, NULL), 0);
	cr_assert_eq(mp_manager_dict(m, NULL, &d), 0);
	cr_assert_eq(mp_manager_list(m, NULL, &l), 0);
	cr_assert_eq(mp_dict_set(d, "big", 3, v, big), 0);
	cr_assert_eq(mp_dict_get(d, "big", 3, w, big - 1), -EMSGSIZE);
	cr_assert_eq(mp_dict_get(d, "big", 3, w, big), (ssize_t)big);
	cr_assert_eq(memcmp(v, w, big), 0);
	cr_assert_eq(mp_dict_get_alloc(d, "big", 3, &got), (ssize_t)big);
	cr_assert_eq(memcmp(v, got, big), 0);
	free(got);
	/* A 1 MiB key too. */
	cr_assert_eq(mp_dict_set(d, v, big, "k", 1), 0);
	cr_assert_eq(mp_dict_contains(d, v, big), 1);
	cr_assert_eq(mp_list_append(l, v, big), 0);
	cr_assert_eq(mp_list_pop(l, 0, w, 10), -EMSGSIZE);
	cr_assert_eq(mp_list_len(l), 1);
	memset(w, 0, big);
	cr_assert_eq(mp_list_pop(l, 0, w, big), (ssize_t)big);
	cr_assert_eq(memcmp(v, w, big), 0);
	for (int i = 0; i < 20; i++)
		cr_assert_eq(mp_dict_set(d, "big", 3, v, big), 0);
	mp_list_free(l);
	mp_dict_free(d);
	mp_manager_free(m);
	free(v);
	free(w);
}

T_TEST(manager, bad_arguments_return_negative_errno)
{
	mp_manager *m, *m2;
	mp_manager_attr attr = { .address = "tcp:1" };
	mp_dict *d, *d2;
	mp_list *l;
	mp_ns *ns;
	char buf[8];
	void *v;
	size_t len;
	mp_item it;
	mp_item bad[1] = { { NULL, 3, "x", 1 } };

	cr_assert_eq(mp_manager_start(NULL, NULL), -EINVAL);
	cr_assert_eq(mp_manager_start(&m2, &attr), -EINVAL);
	cr_assert_eq(mp_manager_shutdown(NULL), -EINVAL);
	mp_manager_free(NULL);
	cr_assert_eq(mp_manager_start(&m, NULL), 0);
	cr_assert_eq(mp_manager_dict(NULL, NULL, &d), -EINVAL);
	cr_assert_eq(mp_manager_dict(m, NULL, NULL), -EINVAL);
	cr_assert_eq(mp_manager_list(m, "", &l), -EINVAL);
	cr_assert_eq(mp_manager_namespace(NULL, "x", &ns), -EINVAL);
	cr_assert_eq(mp_manager_dict(m, NULL, &d), 0);
	cr_assert_eq(mp_manager_list(m, NULL, &l), 0);
	cr_assert_eq(mp_manager_namespace(m, NULL, &ns), 0);

	cr_assert_eq(mp_dict_set(NULL, "k", 1, "v", 1), -EINVAL);
	cr_assert_eq(mp_dict_set(d, NULL, 1, "v", 1), -EINVAL);
	cr_assert_eq(mp_dict_set(d, "k", 1, NULL, 1), -EINVAL);
	cr_assert_eq(mp_dict_get(d, "k", 1, NULL, 4), -EINVAL);
	cr_assert_eq(mp_dict_get_alloc(d, "k", 1, NULL), -EINVAL);
	cr_assert_eq(mp_dict_del(NULL, "k", 1), -EINVAL);
	cr_assert_eq(mp_dict_len(NULL), -EINVAL);
	cr_assert_eq(mp_dict_contains(d, NULL, 2), -EINVAL);
	cr_assert_eq(mp_dict_pop(d, "k", 1, NULL, 1), -EINVAL);
	cr_assert_eq(mp_dict_pop_alloc(d, "k", 1, NULL), -EINVAL);
	cr_assert_eq(mp_dict_setdefault(d, "k", 1, NULL, 1, buf, 8), -EINVAL);
	cr_assert_eq(mp_dict_update(d, NULL, 1), -EINVAL);
	cr_assert_eq(mp_dict_update(d, bad, 1), -EINVAL);
	cr_assert_eq(mp_dict_update(d, NULL, 0), 0);
	cr_assert_eq(mp_dict_clear(NULL), -EINVAL);
	cr_assert_eq(mp_dict_keys(d, NULL, &len), -EINVAL);
	cr_assert_eq(mp_dict_items(d, &v, NULL), -EINVAL);
	/* A proxy of another kind is not a dict. */
	cr_assert_eq(mp_dict_len((mp_dict *)l), -EINVAL);
	cr_assert_eq(mp_list_len((mp_list *)d), -EINVAL);
	cr_assert_eq(mp_ns_del((mp_ns *)d, "x"), -EINVAL);

	cr_assert_eq(mp_list_append(NULL, "v", 1), -EINVAL);
	cr_assert_eq(mp_list_append(l, NULL, 1), -EINVAL);
	cr_assert_eq(mp_list_extend(l, NULL, 2), -EINVAL);
	cr_assert_eq(mp_list_get(l, 0, NULL, 1), -EINVAL);
	cr_assert_eq(mp_list_get_alloc(l, 0, NULL), -EINVAL);
	cr_assert_eq(mp_list_set(l, 0, NULL, 1), -EINVAL);
	cr_assert_eq(mp_list_insert(NULL, 0, "v", 1), -EINVAL);
	cr_assert_eq(mp_list_pop(l, 0, NULL, 1), -EINVAL);
	cr_assert_eq(mp_list_pop_alloc(l, 0, NULL), -EINVAL);
	cr_assert_eq(mp_list_len(NULL), -EINVAL);
	cr_assert_eq(mp_list_remove(l, NULL, 1), -EINVAL);
	cr_assert_eq(mp_list_slice(l, 0, 1, NULL, &len), -EINVAL);
	cr_assert_eq(mp_list_slice(NULL, 0, 1, &v, &len), -EINVAL);

	cr_assert_eq(mp_ns_set(ns, NULL, "v", 1), -EINVAL);
	cr_assert_eq(mp_ns_set(ns, "", "v", 1), -EINVAL);
	cr_assert_eq(mp_ns_set(ns, "a", NULL, 1), -EINVAL);
	cr_assert_eq(mp_ns_get(ns, "a", NULL, 1), -EINVAL);
	cr_assert_eq(mp_ns_get_alloc(ns, "a", NULL), -EINVAL);
	cr_assert_eq(mp_ns_del(NULL, "a"), -EINVAL);

	len = 0;
	cr_assert_eq(mp_item_next(NULL, 0, &len, &it), 0);
	cr_assert_eq(mp_item_next(NULL, 8, &len, &it), -EINVAL);
	cr_assert_eq(mp_item_next(buf, 8, NULL, &it), -EINVAL);
	cr_assert_eq(mp_item_next(buf, 8, &len, NULL), -EINVAL);
	memset(buf, 0xff, sizeof(buf));
	len = 0;
	cr_assert_eq(mp_item_next(buf, 8, &len, &it), -EINVAL);

	/* Freed handles read as invalid (the handle pools). */
	mp_dict_free(d);
	mp_list_free(l);
	mp_ns_free(ns);
	cr_assert_eq(mp_dict_len(d), -EINVAL);
	cr_assert_eq(mp_list_len(l), -EINVAL);
	cr_assert_eq(mp_ns_del(ns, "a"), -EINVAL);
	mp_dict_free(d);
	mp_manager_free(m);
	cr_assert_eq(mp_manager_dict(m, NULL, &d2), -EINVAL);
	cr_assert_eq(mp_manager_shutdown(m), -EINVAL);
	mp_manager_free(m);
}

/* ---- server-owned shared-memory objects ---- */

struct owned {
	mp_manager *m;
	struct t_sync ready;
};

static int
lock_holder(void *arg)
{
	struct owned *a = arg;
	mp_lock *l;

	/* Opened by name in this process: its own connection. */
	T_CHECK(mp_manager_lock(a->m, "L", &l) == 0);
	T_CHECK(mp_lock_acquire(l, MP_FOREVER) == 0);
	t_sync_signal(&a->ready);
	for (;;)
		pause();
	return T_PASS;
}

T_TEST(manager, lock_held_by_a_killed_client_is_eownerdead_to_the_next)
{
	struct owned a;
	mp_lock *l;
	pid_t p;

	cr_assert_eq(mp_manager_start(&a.m, NULL), 0);
	t_sync_init(&a.ready);
	p = t_spawn(lock_holder, &a);
	cr_assert_eq(t_sync_wait(&a.ready, 20000), 0);
	cr_assert_eq(mp_manager_lock(a.m, "L", &l), 0);
	cr_assert_eq(mp_lock_acquire(l, MP_NOWAIT), -EAGAIN);
	cr_assert_eq(kill(p, SIGKILL), 0);
	cr_assert_eq(t_wait_status(p, 20000), -SIGKILL);
	cr_assert_eq(mp_lock_acquire(l, MP_SEC(20)), -EOWNERDEAD);
	cr_assert_eq(mp_lock_release(l), 0);
	cr_assert_eq(mp_lock_acquire(l, MP_NOWAIT), 0);
	cr_assert_eq(mp_lock_release(l), 0);
	t_sync_fini(&a.ready);
	mp_lock_free(l);
	mp_manager_free(a.m);
}

static int
shared_child(void *arg)
{
	struct owned *a = arg;
	mp_event *e;
	mp_queue *q;
	mp_value *v;
	mp_array *arr;
	mp_sem *s;
	mp_barrier *b;
	mp_rlock *r;
	mp_cond *c;

	T_CHECK(mp_manager_event(a->m, "E", &e) == 0);
	T_CHECK(mp_manager_queue(a->m, "Q", 8, 64, &q) == 0);
	T_CHECK(mp_manager_value(a->m, "V", sizeof(int64_t), 0, &v) == 0);
	T_CHECK(mp_manager_array(a->m, "A", 4, sizeof(int), 0, &arr) == 0);
	T_CHECK(mp_manager_semaphore(a->m, "S", 0, &s) == 0);
	T_CHECK(mp_manager_barrier(a->m, "B", 2, &b) == 0);
	T_CHECK(mp_manager_rlock(a->m, "R", &r) == 0);
	T_CHECK(mp_manager_condition(a->m, "C", &c) == 0);
	T_CHECK(mp_queue_put(q, "hello", 5, MP_FOREVER) == 0);
	*(int64_t *)mp_value_ptr(v) = 42;
	((int *)mp_array_ptr(arr))[3] = 7;
	T_CHECK(mp_sem_release(s) == 0);
	T_CHECK(mp_rlock_acquire(r, MP_FOREVER) == 0);
	T_CHECK(mp_rlock_acquire(r, MP_FOREVER) == 0);
	T_CHECK(mp_rlock_release(r) == 0);
	T_CHECK(mp_rlock_release(r) == 0);
	T_CHECK(mp_cond_acquire(c, MP_FOREVER) == 0);
	T_CHECK(mp_cond_notify_all(c) == 0);
	T_CHECK(mp_cond_release(c) == 0);
	T_CHECK(mp_event_set(e) == 0);
	T_CHECK(mp_barrier_wait(b, MP_SEC(20)) >= 0);
	mp_cond_free(c);
	mp_rlock_free(r);
	mp_barrier_free(b);
	mp_sem_free(s);
	mp_array_free(arr);
	mp_value_free(v);
	mp_queue_free(q);
	mp_event_free(e);
	return T_PASS;
}

T_TEST(manager, shared_objects_by_name_across_processes)
{
	struct owned a;
	mp_event *e;
	mp_queue *q, *q2;
	mp_value *v;
	mp_array *arr, *arr2;
	mp_sem *s, *bs;
	mp_barrier *b;
	mp_lock *l;
	char buf[16];
	pid_t p;

	cr_assert_eq(mp_manager_start(&a.m, NULL), 0);
	cr_assert_eq(mp_manager_event(a.m, "E", &e), 0);
	cr_assert_eq(mp_manager_queue(a.m, "Q", 8, 64, &q), 0);
	cr_assert_eq(mp_manager_value(a.m, "V", sizeof(int64_t), 0, &v), 0);
	cr_assert_eq(mp_manager_array(a.m, "A", 4, sizeof(int), 0, &arr), 0);
	cr_assert_eq(mp_manager_semaphore(a.m, "S", 0, &s), 0);
	cr_assert_eq(mp_manager_barrier(a.m, "B", 2, &b), 0);
	p = t_spawn(shared_child, &a);
	cr_assert_eq(mp_event_wait(e, MP_SEC(20)), 1);
	cr_assert_eq(mp_queue_get(q, buf, sizeof(buf), MP_SEC(20)), 5);
	cr_assert_eq(memcmp(buf, "hello", 5), 0);
	cr_assert_eq(*(int64_t *)mp_value_ptr(v), 42);
	cr_assert_eq(((int *)mp_array_ptr(arr))[3], 7);
	cr_assert_eq(mp_array_len(arr), 4);
	cr_assert_eq(mp_sem_acquire(s, MP_SEC(20)), 0);
	cr_assert_geq(mp_barrier_wait(b, MP_SEC(20)), 0);
	t_wait_exit(p, T_PASS);
	/* Other parameters under a used name; another kind. */
	cr_assert_eq(mp_manager_queue(a.m, "Q", 16, 64, &q2), -EEXIST);
	cr_assert_eq(mp_manager_array(a.m, "A", 5, sizeof(int), 0, &arr2),
		     -EEXIST);
	cr_assert_eq(mp_manager_lock(a.m, "E", &l), -EEXIST);
	cr_assert_eq(mp_manager_barrier(a.m, NULL, 0, &b), -EINVAL);
	cr_assert_eq(mp_manager_value(a.m, NULL, 0, 0, &v), -EINVAL);
	cr_assert_eq(mp_manager_lock(a.m, NULL, NULL), -EINVAL);
	cr_assert_eq(mp_manager_lock(NULL, NULL, &l), -EINVAL);
	/* A bounded semaphore refuses to pass its bound. */
	cr_assert_eq(mp_manager_bounded_semaphore(a.m, NULL, 1, &bs), 0);
	cr_assert_eq(mp_sem_release(bs), -EOVERFLOW);
	mp_sem_free(bs);
	/* After shutdown the mapped objects still work; opening does not. */
	cr_assert_eq(mp_manager_shutdown(a.m), 0);
	cr_assert_eq(mp_manager_lock(a.m, "L2", &l), -EPIPE);
	cr_assert_eq(mp_queue_put(q, "x", 1, MP_NOWAIT), 0);
	cr_assert_eq(mp_queue_get(q, buf, sizeof(buf), MP_NOWAIT), 1);
	mp_barrier_free(b);
	mp_sem_free(s);
	mp_array_free(arr);
	mp_value_free(v);
	mp_queue_free(q);
	mp_event_free(e);
	mp_manager_free(a.m);
}

/* ---- unrelated processes: address and authkey ---- */

struct byaddr {
	char address[64];
	const char *key;
};

static int
grandchild_uses_proxy(void *arg)
{
	mp_dict *d = arg;

	/* Forked from a connected process: reconnects by address. */
	return mp_dict_set(d, "gc", 2, "yes", 3) == 0 ? T_PASS : T_FAIL;
}

static int
connecting_client(void *arg)
{
	struct byaddr *a = arg;
	mp_manager *m;
	mp_dict *d;
	mp_lock *l;
	char buf[8];

	T_CHECK(mp_manager_connect(&m, a->address, "wrong", 5) == -EACCES);
	T_CHECK(mp_manager_connect(&m, a->address, a->key, strlen(a->key)) ==
		0);
	T_CHECK(mp_manager_dict(m, "D", &d) == 0);
	T_CHECK(mp_dict_get(d, "owner", 5, buf, sizeof(buf)) == 2);
	T_CHECK(mp_dict_set(d, "client", 6, "hi", 2) == 0);
	T_CHECK(mp_manager_lock(m, "L", &l) == 0);
	T_CHECK(mp_lock_acquire(l, MP_SEC(20)) == 0);
	T_CHECK(mp_lock_release(l) == 0);
	mp_lock_free(l);
	pid_t p = t_spawn(grandchild_uses_proxy, d);
	T_CHECK(t_wait_status(p, 30000) == T_PASS);
	mp_dict_free(d);
	mp_manager_free(m);
	return T_PASS;
}

T_TEST(manager, connect_by_address_with_the_authkey_only)
{
	struct byaddr a = { .key = "sesame" };
	mp_manager_attr attr = { .authkey = "sesame", .authkey_len = 6 };
	mp_manager *m, *m2;
	mp_dict *d;
	char buf[8];

	snprintf(a.address, sizeof(a.address), "unix:mgr-test-%d.sock",
		 (int)getpid());
	attr.address = a.address;
	cr_assert_eq(mp_manager_start(&m, &attr), 0);
	/* The address is taken now. */
	cr_assert_eq(mp_manager_start(&m2, &attr), -EADDRINUSE);
	cr_assert_eq(mp_manager_dict(m, "D", &d), 0);
	cr_assert_eq(mp_dict_set(d, "owner", 5, "ok", 2), 0);
	t_wait_exit(t_spawn(connecting_client, &a), T_PASS);
	cr_assert_eq(mp_dict_get(d, "client", 6, buf, sizeof(buf)), 2);
	cr_assert_eq(mp_dict_get(d, "gc", 2, buf, sizeof(buf)), 3);
	/* From this process too; a wrong key gets nothing. */
	cr_assert_eq(mp_manager_connect(&m2, a.address, "sesam", 5), -EACCES);
	cr_assert_eq(mp_manager_connect(&m2, a.address, "sesame!", 7),
		     -EACCES);
	cr_assert_eq(mp_manager_connect(&m2, a.address, "sesame", 6), 0);
	mp_manager_free(m2);
	/* Bad arguments. */
	cr_assert_eq(mp_manager_connect(NULL, a.address, "k", 1), -EINVAL);
	cr_assert_eq(mp_manager_connect(&m2, "tcp:x", "k", 1), -EINVAL);
	cr_assert_eq(mp_manager_connect(&m2, "unix:", "k", 1), -EINVAL);
	cr_assert_eq(mp_manager_connect(&m2, a.address, NULL, 1), -EINVAL);
	cr_assert_eq(mp_manager_connect(&m2, a.address, "k", 0), -EINVAL);
	attr.authkey_len = 0;
	cr_assert_eq(mp_manager_start(&m2, &attr), -EINVAL);
	/* A client by address, connected while the server lives. */
	mp_dict *d2;
	cr_assert_eq(mp_manager_connect(&m2, a.address, "sesame", 6), 0);
	cr_assert_eq(mp_manager_dict(m2, "D", &d2), 0);
	cr_assert_eq(mp_dict_get(d2, "owner", 5, buf, sizeof(buf)), 2);
	/* After shutdown nobody listens, and the socket file is gone. */
	cr_assert_eq(mp_manager_shutdown(m), 0);
	mp_manager *m3;
	cr_assert_eq(mp_manager_connect(&m3, a.address, "sesame", 6),
		     -ECONNREFUSED);
	cr_assert_neq(access(a.address + 5, F_OK), 0);
	/*
	 * The connected client: -EPIPE on every call, also the later ones
	 * that try to reconnect and find the socket gone.
	 */
	for (int i = 0; i < 3; i++)
		cr_assert_eq(mp_dict_get(d2, "owner", 5, buf, sizeof(buf)),
			     -EPIPE, "call %d", i);
	cr_assert_eq(mp_dict_set(d2, "x", 1, "y", 1), -EPIPE);
	mp_dict_free(d2);
	mp_manager_free(m2);
	mp_dict_free(d);
	mp_manager_free(m);
}

/* ---- threads sharing one handle ---- */

struct thr {
	mp_dict *d;
	int id;
	int bad;
};

static void *
thread_client(void *arg)
{
	struct thr *t = arg;

	for (int i = 0; i < 2000; i++) {
		int key[2] = { t->id, i % 16 }, got;
		if (mp_dict_set(t->d, key, sizeof(key), &i, sizeof(i)) != 0 ||
		    mp_dict_get(t->d, key, sizeof(key), &got, sizeof(got)) !=
			    (ssize_t)sizeof(got) ||
		    got != i)
			t->bad++;
	}
	return NULL;
}

T_TEST(manager, threads_of_one_process_share_a_handle)
{
	mp_manager *m;
	mp_dict *d;
	pthread_t th[4];
	struct thr t[4];

	cr_assert_eq(mp_manager_start(&m, NULL), 0);
	cr_assert_eq(mp_manager_dict(m, NULL, &d), 0);
	for (int i = 0; i < 4; i++) {
		t[i] = (struct thr){ d, i, 0 };
		cr_assert_eq(pthread_create(&th[i], NULL, thread_client, &t[i]),
			     0);
	}
	for (int i = 0; i < 4; i++) {
		pthread_join(th[i], NULL);
		cr_assert_eq(t[i].bad, 0);
	}
	cr_assert_eq(mp_dict_len(d), 64);
	mp_dict_free(d);
	mp_manager_free(m);
}

struct busy_thr {
	mp_dict *d;
	int stop;
	int bad;
};

static void *
busy_getter(void *arg)
{
	struct busy_thr *b = arg;
	char buf[8];

	while (!__atomic_load_n(&b->stop, __ATOMIC_ACQUIRE)) {
		if (mp_dict_get(b->d, "k", 1, buf, sizeof(buf)) != 1)
			b->bad++;
	}
	return NULL;
}

static int
fork_child_call(void *arg)
{
	struct busy_thr *b = arg;

	/* The parent's other thread may have held the handle at fork. */
	return mp_dict_set(b->d, "c", 1, "x", 1) == 0 ? T_PASS : T_FAIL;
}

T_TEST(manager, fork_while_another_thread_is_mid_call)
{
	mp_manager *m;
	struct busy_thr b = { 0 };
	pthread_t th;

	cr_assert_eq(mp_manager_start(&m, NULL), 0);
	cr_assert_eq(mp_manager_dict(m, NULL, &b.d), 0);
	cr_assert_eq(mp_dict_set(b.d, "k", 1, "v", 1), 0);
	cr_assert_eq(pthread_create(&th, NULL, busy_getter, &b), 0);
	for (int i = 0; i < 20; i++)
		t_wait_exit(t_spawn(fork_child_call, &b), T_PASS);
	__atomic_store_n(&b.stop, 1, __ATOMIC_RELEASE);
	pthread_join(th, NULL);
	cr_assert_eq(b.bad, 0);
	mp_dict_free(b.d);
	mp_manager_free(m);
}
