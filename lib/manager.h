/* SPDX-License-Identifier: MIT */
/*
 * Internal: the Manager's wire protocol, shared by the client side
 * (lib/manager.c) and the server (lib/manager_server.c).
 *
 * A request is one pipe message: struct mgr_req, then klen key bytes, then
 * vlen value bytes.  A reply is one message: struct mgr_rep, then len
 * bytes.  rc is the call's result (a length, a count, an id, or a negative
 * errno); on -EMSGSIZE, len is 0 and need holds the value's length.
 * Snapshots (keys, items, slices, and the payload of update and extend)
 * are records: u64 klen, u64 vlen, the key, the value, padded to 8.
 */
#ifndef MP__MANAGER_H
#define MP__MANAGER_H

#include <stdint.h>

#include <mproc/manager.h>

#define MGR_SHM_MAGIC 0x6d676d72u	/* "mgmr" */

/* Kinds of server objects. */
enum mgr_kind {
	MGR_DICT = 1, MGR_LIST, MGR_NS,
	/* Shared-memory objects: the client maps their region (fd kinds). */
	MGR_LOCK, MGR_RLOCK, MGR_SEM, MGR_BSEM, MGR_COND, MGR_EVENT,
	MGR_BARRIER, MGR_QUEUE, MGR_VALUE, MGR_ARRAY,
	MGR_KIND_END
};

/*
 * Opening an fd kind: a, b and obj (as flags) carry the constructor's
 * parameters; the server sends the region's memfd over the connection's
 * side socket (SCM_RIGHTS) before its reply, whose payload is the
 * object's actual parameters.
 */
struct mgr_params {
	uint64_t a, b, flags;
};

enum mgr_op {
	MGR_OPEN = 1,		/* kind, key = name (klen 0: anonymous) */
				/* fd kinds: a, b, obj = flags (above) */
	MGR_D_SET,
	MGR_D_GET,
	MGR_D_DEL,
	MGR_D_LEN,
	MGR_D_CONTAINS,
	MGR_D_POP,
	MGR_D_SETDEFAULT,
	MGR_D_UPDATE,		/* value: records */
	MGR_D_CLEAR,
	MGR_D_KEYS,
	MGR_D_ITEMS,
	MGR_L_APPEND,
	MGR_L_EXTEND,		/* value: records */
	MGR_L_GET,		/* a: index */
	MGR_L_SET,		/* a: index */
	MGR_L_INSERT,		/* a: index */
	MGR_L_POP,		/* a: index */
	MGR_L_LEN,
	MGR_L_REMOVE,
	MGR_L_SLICE,		/* a: start, b: stop */
	MGR_OP_END
};

struct mgr_req {
	uint32_t op;
	uint32_t kind;		/* MGR_OPEN only */
	uint64_t obj;		/* the object's id */
	int64_t a, b;		/* indexes */
	uint64_t cap;		/* room for a value in the reply */
	uint64_t klen;
	uint64_t vlen;
};

struct mgr_rep {
	int64_t rc;
	uint64_t len;		/* payload bytes that follow */
	uint64_t need;		/* -EMSGSIZE: the value's length */
};

/* A record's header in a snapshot. */
struct mgr_rec {
	uint64_t klen;
	uint64_t vlen;
};

/* Keys and values above this are refused (-EINVAL): 1 GiB. */
#define MGR_LEN_MAX ((uint64_t)1 << 30)

static inline uint64_t
mgr_pad8(uint64_t x)
{
	return (x + 7) & ~(uint64_t)7;
}

/* The server's body: serve connection requests arriving on ctl. */
int mp__manager_serve(void *arg);

/* What mp__manager_serve gets (in the server's copy of memory). */
struct mgr_server_arg {
	int ctl;		/* our end of the connect channel */
	int lfd;		/* listening socket of the address, or -1 */
	const unsigned char *key; /* the authkey */
	size_t key_len;
};

/*
 * The authkey handshake on a connected SOCK_SEQPACKET socket (mutual
 * challenge-response HMAC-SHA256 with libsodium, then SO_PEERCRED: the
 * peer must run as our user or as root).  Each side waits at most
 * MGR_AUTH_TIMEOUT_MS for each message.  Returns 0, -EACCES (wrong key,
 * wrong user, or a peer that broke the protocol), -EPIPE (the peer went
 * away or timed out).  Defined in lib/manager_auth.c.
 */
#define MGR_AUTH_TIMEOUT_MS 10000
int mp__mgr_auth_server(int fd, const unsigned char *key, size_t key_len);
int mp__mgr_auth_client(int fd, const unsigned char *key, size_t key_len);

#endif /* MP__MANAGER_H */
