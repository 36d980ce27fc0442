/* SPDX-License-Identifier: MIT */
/*
 * Queue API with fuzzer-chosen sizes, caps and batches, in one process and
 * without waiting, against a model FIFO: every call returns what the model
 * says, and every message comes out whole and in order.
 */
#include "tests/fuzz/fuzz.h"

#define MODEL 64
#define BUF_MAX 4200

struct model {
	uint32_t id[MODEL], len[MODEL];
	unsigned head, n;
	uint32_t next_id;
	long undone;			/* puts not yet task_done */
};

static void
push(struct model *m, uint32_t id, size_t len)
{
	unsigned i = (m->head + m->n++) % MODEL;

	m->id[i] = id;
	m->len[i] = (uint32_t)len;
	m->undone++;
}

static void
check_pop(struct model *m, const uint8_t *p, ssize_t len)
{
	unsigned i = m->head;

	F_CHECK(m->n > 0, m->n);
	F_CHECK((size_t)len == m->len[i], len);
	F_CHECK(pat_ok(p, (size_t)len, m->id[i]), m->id[i]);
	m->head = (m->head + 1) % MODEL;
	m->n--;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static uint8_t buf[4 * BUF_MAX], msg[6][BUF_MAX];
	struct rd r = { data, size };
	struct model m = { .next_id = 1 };
	size_t maxsize = 1 + rd_u8(&r) % 16;
	size_t msg_max = 1 + rd_u16(&r) % 4096;
	mp_queue *q;
	ssize_t rc;

	F_CHECK(mp_queue_new(&q, maxsize, msg_max) == 0, 0);
	F_CHECK(mp_queue_maxsize(q) == maxsize, maxsize);
	F_CHECK(mp_queue_msg_max(q) == msg_max, msg_max);
	while (r.n > 0) {
		uint8_t op = rd_u8(&r) % 9;

		switch (op) {
		case 0: {	/* put */
			size_t len = rd_u16(&r) % (msg_max + 8);

			pat_fill(msg[0], len, m.next_id);
			rc = mp_queue_put(q, msg[0], len, MP_NOWAIT);
			if (len > msg_max)
				F_CHECK(rc == -EMSGSIZE, rc);
			else if (m.n == maxsize)
				F_CHECK(rc == -EAGAIN, rc);
			else {
				F_CHECK(rc == 0, rc);
				push(&m, m.next_id, len);
			}
			m.next_id++;
			break;
		}
		case 1: {	/* get */
			size_t cap = rd_u16(&r) % (msg_max + 8);

			rc = mp_queue_get(q, buf, cap, MP_NOWAIT);
			if (m.n == 0)
				F_CHECK(rc == -EAGAIN, rc);
			else if (m.len[m.head] > cap)
				F_CHECK(rc == -EMSGSIZE, rc);
			else
				check_pop(&m, buf, rc);
			break;
		}
		case 2: {	/* put_many */
			size_t n = 1 + rd_u8(&r) % 6, lens[6], room;
			const void *msgs[6];
			int big = 0;

			for (size_t i = 0; i < n; i++) {
				lens[i] = rd_u16(&r) % (msg_max + 2);
				big |= lens[i] > msg_max;
				pat_fill(msg[i], lens[i], m.next_id + i);
				msgs[i] = msg[i];
			}
			rc = mp_queue_put_many(q, msgs, lens, n, MP_NOWAIT);
			room = maxsize - m.n;
			if (big)
				F_CHECK(rc == -EMSGSIZE, rc);
			else if (room == 0)
				F_CHECK(rc == -EAGAIN, rc);
			else {
				F_CHECK(rc == (ssize_t)(n < room ? n : room),
					rc);
				for (ssize_t i = 0; i < rc; i++)
					push(&m, m.next_id + i, lens[i]);
			}
			m.next_id += (uint32_t)n;
			break;
		}
		case 3: {	/* get_many */
			size_t cap = rd_u16(&r) % (msg_max + 8);
			size_t n = 1 + rd_u8(&r) % 4, lens[4];

			if (cap > BUF_MAX)
				cap = BUF_MAX;
			rc = mp_queue_get_many(q, buf, cap, lens, n,
					       MP_NOWAIT);
			if (m.n == 0) {
				F_CHECK(rc == -EAGAIN, rc);
				break;
			}
			if (m.len[m.head] > cap) {
				F_CHECK(rc == -EMSGSIZE, rc);
				break;
			}
			F_CHECK(rc >= 1 && rc <= (ssize_t)n, rc);
			for (ssize_t i = 0; i < rc; i++)
				check_pop(&m, buf + i * cap, (ssize_t)lens[i]);
			/* It stopped early only at a long one or the end. */
			if (rc < (ssize_t)n && m.n > 0)
				F_CHECK(m.len[m.head] > cap, rc);
			break;
		}
		case 4: {	/* reserve, commit */
			size_t len = rd_u16(&r) % (msg_max + 8);
			void *slot;

			rc = mp_queue_reserve(q, &slot, MP_NOWAIT);
			if (m.n == maxsize) {
				F_CHECK(rc == -EAGAIN, rc);
				break;
			}
			F_CHECK(rc == 0, rc);
			if (len > msg_max) {
				F_CHECK(mp_queue_commit(q, slot, len) ==
					-EMSGSIZE, len);
				len = msg_max;
			}
			pat_fill(slot, len, m.next_id);
			F_CHECK(mp_queue_commit(q, slot, len) == 0, len);
			push(&m, m.next_id++, len);
			break;
		}
		case 5: {	/* peek, release */
			const void *p;

			rc = mp_queue_peek(q, &p, MP_NOWAIT);
			if (m.n == 0) {
				F_CHECK(rc == -EAGAIN, rc);
				break;
			}
			check_pop(&m, p, rc);
			F_CHECK(mp_queue_release(q, p) == 0, 0);
			F_CHECK(mp_queue_release(q, p) == -EINVAL, 0);
			break;
		}
		case 6:
			F_CHECK(mp_queue_qsize(q) == m.n, m.n);
			F_CHECK(mp_queue_empty(q) == (m.n == 0), m.n);
			F_CHECK(mp_queue_full(q) == (m.n == maxsize), m.n);
			F_CHECK(mp_queue_lost(q) == 0, 0);
			break;
		case 7: {	/* task_done, join */
			long done = m.undone - (long)m.n;

			rc = mp_queue_task_done(q);
			if (m.undone == 0)
				F_CHECK(rc == -EINVAL, rc);
			else {
				F_CHECK(rc == 0, rc);
				m.undone--;
			}
			(void)done;
			rc = mp_queue_join(q, MP_NOWAIT);
			F_CHECK(rc == (m.undone == 0 ? 0 : -EAGAIN), rc);
			break;
		}
		default:	/* bad arguments */
			F_CHECK(mp_queue_put(q, NULL, 1, 0) == -EINVAL, 0);
			F_CHECK(mp_queue_get(q, NULL, 1, 0) == -EINVAL, 0);
			F_CHECK(mp_queue_put(q, buf, 0, -5) == -EINVAL, 0);
			F_CHECK(mp_queue_commit(q, buf, 0) == -EINVAL, 0);
			break;
		}
	}
	mp_queue_close(q);
	while (m.n > 0) {
		rc = mp_queue_get(q, buf, msg_max, MP_NOWAIT);
		check_pop(&m, buf, rc);
	}
	F_CHECK(mp_queue_get(q, buf, msg_max, MP_NOWAIT) == -EPIPE, 0);
	F_CHECK(mp_queue_put(q, buf, 1, MP_NOWAIT) == -EPIPE, 0);
	mp_queue_free(q);
	return 0;
}
