/* SPDX-License-Identifier: MIT */
/*
 * A hostile peer: fuzzer-chosen bytes written over a pipe's shared
 * mapping (with messages in flight both ways), then the public API with
 * short timeouts.  Every call must return a result or an error it
 * documents, never crash, hang, or write outside its buffers (ASan).
 */
#include "tests/fuzz/fuzz.h"
#include "lib/testing.h"

static void
patch(struct rd *r, uint8_t *base, size_t len)
{
	unsigned n = rd_u8(r) % 12;

	while (n-- > 0 && r->n > 0) {
		size_t off = (size_t)rd_u16(r) * (len > 65536 ? 4 : 1);
		size_t k = rd_u8(r) % 33;

		off %= len;
		if (k > len - off)
			k = len - off;
		rd_bytes(r, base + off, k);
	}
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static uint8_t buf[9000], msg[9000];
	struct rd r = { data, size };
	uint8_t cfg = rd_u8(&r);
	mp_conn *c[2], *ready[2];
	size_t len;
	void *base;
	ssize_t rc;

	F_CHECK(mp_pipe_new(&c[0], &c[1], true, 4096) == 0, 0);
	F_CHECK(mp__pipe_region(c[0], &base, &len) == 0, 0);
	for (unsigned i = 0; i < cfg % 6; i++) {
		F_CHECK(mp_conn_send_timeout(c[1], msg, i * 97, 0) == 0, i);
		F_CHECK(mp_conn_send_timeout(c[0], msg, i * 301, 0) == 0, i);
	}
	patch(&r, base, len);
	while (r.n > 0) {
		uint8_t op = rd_u8(&r);
		int64_t t = op & 0x80 ? MP_MSEC(1) : MP_NOWAIT;
		mp_conn *x = c[op >> 6 & 1];
		size_t cap = rd_u16(&r) % sizeof(buf);

		switch (op & 7) {
		case 0:
			rc = mp_conn_send_timeout(x, msg, cap, t);
			F_CHECK(rc == 0 || peer_err_ok(rc), rc);
			break;
		case 1:
			rc = mp_conn_recv_timeout(x, buf, cap, t);
			F_CHECK(rc >= 0 ? (size_t)rc <= cap : peer_err_ok(rc),
				rc);
			break;
		case 2: {
			void *p = NULL;

			rc = mp_conn_recv_alloc_timeout(x, &p, t);
			F_CHECK(rc >= 0 ? p != NULL : peer_err_ok(rc), rc);
			free(p);
			break;
		}
		case 3:
			rc = mp_conn_poll(x, t);
			F_CHECK(rc == 0 || rc == 1 || peer_err_ok(rc), rc);
			break;
		case 4:
			rc = mp_wait(c, 2, ready, t);
			F_CHECK((rc >= 0 && rc <= 2) || peer_err_ok(rc), rc);
			break;
		default:
			patch(&r, base, len);
			break;
		}
	}
	mp_conn_close(c[0]);
	mp_conn_close(c[1]);
	return 0;
}
