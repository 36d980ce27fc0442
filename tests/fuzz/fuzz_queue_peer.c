/* SPDX-License-Identifier: MIT */
/*
 * A hostile peer: fuzzer-chosen bytes written over a queue's shared
 * mapping (after some messages went in), then the public API with short
 * timeouts.  Every call must return a result or an error it documents,
 * never crash, hang, or touch memory outside its buffers (ASan).
 */
#include "tests/fuzz/fuzz.h"
#include "lib/testing.h"

/* The region, patched: records of (offset, length, bytes). */
static void
patch(struct rd *r, uint8_t *base, size_t len)
{
	unsigned n = rd_u8(r) % 12;

	while (n-- > 0 && r->n > 0) {
		size_t off = rd_u16(r), k = rd_u8(r) % 33;

		if (len > 65536)
			off = off * 16;	/* reach the whole region */
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
	static uint8_t buf[4 * 512], msg[512];
	struct rd r = { data, size };
	size_t maxsize = 1 + rd_u8(&r) % 8;
	size_t msg_max = 1 + rd_u8(&r) % 200;
	unsigned fill = rd_u8(&r);
	mp_queue *q;
	size_t len;
	void *base;
	ssize_t rc;

	F_CHECK(mp_queue_new(&q, maxsize, msg_max) == 0, 0);
	F_CHECK(mp__queue_region(q, &base, &len) == 0, 0);
	for (unsigned i = 0; i < fill % (maxsize + 1); i++)
		F_CHECK(mp_queue_put(q, msg, i % (msg_max + 1), 0) == 0, i);
	if (fill & 0x80) {		/* a get in flight, as a peer's */
		const void *p;

		rc = mp_queue_peek(q, &p, 0);
		F_CHECK(rc >= 0 || rc == -EAGAIN, rc);
	}
	patch(&r, base, len);
	while (r.n > 0) {
		uint8_t op = rd_u8(&r);
		int64_t t = op & 0x80 ? MP_MSEC(1) : MP_NOWAIT;
		size_t cap = rd_u8(&r) % (msg_max + 2);

		switch (op & 15) {
		case 0:
			rc = mp_queue_put(q, msg, cap, t);
			F_CHECK(rc == 0 || peer_err_ok(rc), rc);
			break;
		case 1:
			rc = mp_queue_get(q, buf, cap, t);
			F_CHECK(rc >= 0 ? (size_t)rc <= cap : peer_err_ok(rc),
				rc);
			break;
		case 2: {
			const void *msgs[3] = { msg, msg, msg };
			size_t lens[3] = { cap, 0, msg_max };

			rc = mp_queue_put_many(q, msgs, lens, 3, t);
			F_CHECK(rc >= 0 ? rc <= 3 : peer_err_ok(rc), rc);
			break;
		}
		case 3: {
			size_t lens[4];

			rc = mp_queue_get_many(q, buf, 512, lens, 4, t);
			F_CHECK(rc >= 0 ? rc <= 4 : peer_err_ok(rc), rc);
			for (ssize_t i = 0; i < rc; i++)
				F_CHECK(lens[i] <= msg_max, lens[i]);
			break;
		}
		case 4: {
			void *slot;

			rc = mp_queue_reserve(q, &slot, t);
			F_CHECK(rc == 0 || peer_err_ok(rc), rc);
			if (rc == 0) {
				memset(slot, 0xa5, msg_max);
				rc = mp_queue_commit(q, slot, cap);
				F_CHECK(rc == 0 || peer_err_ok(rc), rc);
				if (rc == -EMSGSIZE)
					(void)mp_queue_commit(q, slot, 0);
			}
			break;
		}
		case 5: {
			const void *p;

			rc = mp_queue_peek(q, &p, t);
			F_CHECK(rc >= 0 ? (size_t)rc <= msg_max
					: peer_err_ok(rc), rc);
			if (rc >= 0) {
				/* ASan: the message lies inside the map. */
				F_CHECK((const uint8_t *)p >= (uint8_t *)base &&
					(const uint8_t *)p + rc <=
					(uint8_t *)base + len, rc);
				(void)mp_queue_release(q, p);
			}
			break;
		}
		case 6:
			(void)mp_queue_qsize(q);
			(void)mp_queue_empty(q);
			(void)mp_queue_full(q);
			(void)mp_queue_lost(q);
			(void)mp_queue_is_closed(q);
			break;
		case 7:
			rc = mp_queue_task_done(q);
			F_CHECK(rc == 0 || peer_err_ok(rc), rc);
			rc = mp_queue_join(q, t);
			F_CHECK(rc == 0 || peer_err_ok(rc), rc);
			break;
		case 8:
			mp_queue_close(q);
			break;
		default:
			/* More garbage, now that calls have run. */
			patch(&r, base, len);
			break;
		}
	}
	mp_queue_free(q);
	return 0;
}
