/* SPDX-License-Identifier: MIT */
/*
 * SCM_RIGHTS in one place.  A message is one byte plus its fds, sent on
 * SOCK_SEQPACKET or SOCK_STREAM sockets; the receiver takes exactly the
 * number of fds it expects and closes any others, so that a confused or
 * hostile peer can never leak descriptors into this process.  No shared
 * state: nothing for a crash to leave behind (fds in flight are closed by
 * the kernel when the receiving socket closes).
 */
#include "lib/internal.h"

#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "lib/fdpass.h"

union cmsg_buf {
	struct cmsghdr h;
	char b[CMSG_SPACE(MP__FDPASS_MAX * sizeof(int))];
};

int
mp__fd_send(int sock, char byte, const int *fds, unsigned n)
{
	union cmsg_buf cm;
	struct iovec iov = { .iov_base = &byte, .iov_len = 1 };
	struct msghdr mh = { .msg_iov = &iov, .msg_iovlen = 1,
			     .msg_control = cm.b,
			     .msg_controllen = CMSG_SPACE(n * sizeof(int)) };
	struct cmsghdr *h;
	ssize_t w;

	if (n == 0 || n > MP__FDPASS_MAX)
		return -EINVAL;
	memset(&cm, 0, sizeof(cm));
	h = CMSG_FIRSTHDR(&mh);
	h->cmsg_level = SOL_SOCKET;
	h->cmsg_type = SCM_RIGHTS;
	h->cmsg_len = CMSG_LEN(n * sizeof(int));
	memcpy(CMSG_DATA(h), fds, n * sizeof(int));
	do {
		w = sendmsg(sock, &mh, MSG_NOSIGNAL);
	} while (w < 0 && errno == EINTR);
	if (w == 1)
		return 0;
	if (w >= 0)
		return -EPIPE;
	switch (errno) {
	case ENOBUFS:
	case ENOMEM:
		return -ENOMEM;
	case ECONNREFUSED:
	case ECONNRESET:
	case ENOTCONN:
		return -EPIPE;
	default:
		return -errno;
	}
}

int
mp__fd_recv(int sock, int *fds, unsigned n)
{
	union cmsg_buf cm;
	char byte;
	struct iovec iov = { .iov_base = &byte, .iov_len = 1 };
	struct msghdr mh = { .msg_iov = &iov, .msg_iovlen = 1,
			     .msg_control = cm.b,
			     .msg_controllen = sizeof(cm.b) };
	unsigned got = 0;
	ssize_t r;

	if (n == 0 || n > MP__FDPASS_MAX)
		return -EINVAL;
	for (unsigned i = 0; i < n; i++)
		fds[i] = -1;
	memset(&cm, 0, sizeof(cm));
	do {
		r = recvmsg(sock, &mh, MSG_CMSG_CLOEXEC | MSG_DONTWAIT);
	} while (r < 0 && errno == EINTR);
	if (r < 0)
		return errno == EWOULDBLOCK ? -EAGAIN : -errno;
	for (struct cmsghdr *h = CMSG_FIRSTHDR(&mh); h != NULL;
	     h = CMSG_NXTHDR(&mh, h)) {
		if (h->cmsg_level != SOL_SOCKET || h->cmsg_type != SCM_RIGHTS)
			continue;
		unsigned k = (unsigned)((h->cmsg_len - CMSG_LEN(0)) /
					sizeof(int));
		int in[MP__FDPASS_MAX];
		if (k > MP__FDPASS_MAX)
			k = MP__FDPASS_MAX;	/* the rest were cut (CTRUNC) */
		memcpy(in, CMSG_DATA(h), k * sizeof(int));
		for (unsigned i = 0; i < k; i++) {
			if (got < n)
				fds[got] = in[i];
			else
				close(in[i]);
			got++;
		}
	}
	if (got == n && !(mh.msg_flags & MSG_CTRUNC))
		return 1;
	for (unsigned i = 0; i < n && i < got; i++) {
		close(fds[i]);
		fds[i] = -1;
	}
	if (r == 0 && got == 0)
		return 0;
	return -EBADMSG;
}
