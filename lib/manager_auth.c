/* SPDX-License-Identifier: MIT */
/*
 * Theory of operation: the Manager's authkey handshake
 *
 * A process that connects by address (mp_manager_connect, "unix:PATH")
 * and the server prove to each other that they know the authkey before
 * any shared memory changes hands, as Python's managers do
 * (deliver_challenge / answer_challenge), but in both directions at once
 * and with HMAC-SHA256 from libsodium (no hand-written crypto):
 *
 *   server -> client:  "S" challenge_s             (32 random bytes)
 *   client -> server:  HMAC(key, "C" challenge_s) challenge_c
 *   server -> client:  1 HMAC(key, "S" challenge_c)   or   0 (refused)
 *
 * The one-letter prefixes keep a reply of one side from being replayed
 * as the other's (reflection).  Verification is constant-time
 * (crypto_auth_hmacsha256_verify).  The server also checks the peer's
 * credentials (SO_PEERCRED: same user or root), and so does the client.
 * SOCK_SEQPACKET keeps each message whole; each receive waits at most
 * MGR_AUTH_TIMEOUT_MS (SO_RCVTIMEO), so a silent peer cannot hold a
 * server thread.  The socket carries nothing before this succeeds: a wrong
 * key gets the refusal and a hang-up, never an fd.
 *
 * Invariants:
 *  1. The server sends no file descriptor on a socket whose peer has not
 *     returned a valid HMAC of a fresh random challenge.
 *  2. The key never crosses the socket; only HMACs of random challenges do.
 *
 * Crash analysis: no shared state.  A peer that dies mid-handshake makes
 * the other side's receive return 0 (hang-up): -EPIPE, nothing held.
 */
#include "lib/internal.h"

#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include <sodium.h>

#include "lib/manager.h"

#define CHAL 32
#define MAC crypto_auth_hmacsha256_BYTES

static int
set_timeout(int fd)
{
	struct timeval tv = { .tv_sec = MGR_AUTH_TIMEOUT_MS / 1000 };

	if (setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv)) < 0 ||
	    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv)) < 0)
		return -errno;
	return 0;
}

/* One whole message of exactly len bytes, or -EPIPE. */
static int
recv_exact(int fd, void *buf, size_t len)
{
	ssize_t n;

	do {
		n = recv(fd, buf, len, 0);
	} while (n < 0 && errno == EINTR);
	if (n == (ssize_t)len)
		return 0;
	return n < 0 || n == 0 ? -EPIPE : -EACCES;
}

static int
send_all(int fd, const void *buf, size_t len)
{
	ssize_t n;

	do {
		n = send(fd, buf, len, MSG_NOSIGNAL);
	} while (n < 0 && errno == EINTR);
	return n == (ssize_t)len ? 0 : -EPIPE;
}

static void
hmac(unsigned char out[MAC], const unsigned char *key, size_t key_len,
     char tag, const unsigned char chal[CHAL])
{
	crypto_auth_hmacsha256_state st;

	crypto_auth_hmacsha256_init(&st, key, key_len);
	crypto_auth_hmacsha256_update(&st, (const unsigned char *)&tag, 1);
	crypto_auth_hmacsha256_update(&st, chal, CHAL);
	crypto_auth_hmacsha256_final(&st, out);
	sodium_memzero(&st, sizeof(st));
}

static bool
mac_ok(const unsigned char mac[MAC], const unsigned char *key,
       size_t key_len, char tag, const unsigned char chal[CHAL])
{
	unsigned char want[MAC];
	bool ok;

	hmac(want, key, key_len, tag, chal);
	ok = sodium_memcmp(want, mac, MAC) == 0;
	sodium_memzero(want, sizeof(want));
	return ok;
}

/* The peer runs as our user, or as root. */
static bool
peer_ok(int fd)
{
	struct ucred cr;
	socklen_t len = sizeof(cr);

	if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cr, &len) < 0)
		return false;
	return cr.uid == getuid() || cr.uid == 0;
}

int
mp__mgr_auth_server(int fd, const unsigned char *key, size_t key_len)
{
	unsigned char chal[1 + CHAL], ans[MAC + CHAL], rep[1 + MAC];
	int rc;

	if (sodium_init() < 0)
		return -EACCES;
	if ((rc = set_timeout(fd)) < 0)
		return rc;
	chal[0] = 'S';
	randombytes_buf(chal + 1, CHAL);
	if ((rc = send_all(fd, chal, sizeof(chal))) < 0)
		return rc;
	if ((rc = recv_exact(fd, ans, sizeof(ans))) < 0)
		goto refuse;
	if (!peer_ok(fd) || !mac_ok(ans, key, key_len, 'C', chal + 1)) {
		rc = -EACCES;
		goto refuse;
	}
	rep[0] = 1;
	hmac(rep + 1, key, key_len, 'S', ans + MAC);
	return send_all(fd, rep, sizeof(rep));
refuse:
	rep[0] = 0;
	(void)send_all(fd, rep, 1);
	return rc;
}

int
mp__mgr_auth_client(int fd, const unsigned char *key, size_t key_len)
{
	unsigned char chal[1 + CHAL], ans[MAC + CHAL], rep[1 + MAC];
	ssize_t n;
	int rc;

	if (sodium_init() < 0)
		return -EACCES;
	if ((rc = set_timeout(fd)) < 0)
		return rc;
	if ((rc = recv_exact(fd, chal, sizeof(chal))) < 0)
		return rc;
	if (chal[0] != 'S' || !peer_ok(fd))
		return -EACCES;
	hmac(ans, key, key_len, 'C', chal + 1);
	randombytes_buf(ans + MAC, CHAL);
	if ((rc = send_all(fd, ans, sizeof(ans))) < 0)
		return rc;
	do {
		n = recv(fd, rep, sizeof(rep), 0);
	} while (n < 0 && errno == EINTR);
	if (n <= 0)
		return -EPIPE;
	if (n != (ssize_t)sizeof(rep) || rep[0] != 1 ||
	    !mac_ok(rep + 1, key, key_len, 'S', ans + MAC))
		return -EACCES;
	return 0;
}
