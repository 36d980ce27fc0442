/* SPDX-License-Identifier: MIT */
/*
 * Pipe API with fuzzer-chosen message sizes and caps, both ends in one
 * process, without waiting: messages come out whole and in order, a send
 * that fails delivers nothing, and a short cap leaves the message queued.
 */
#include "tests/fuzz/fuzz.h"

#define MODEL 256
#define MSG_MAX 20000

struct dir {
	mp_conn *tx, *rx;
	uint32_t id[MODEL], len[MODEL];
	unsigned head, n;
	/*
	 * A send that streamed part of a long message and withdrew it
	 * leaves a marker the receiver skips: until a receive has, poll and
	 * mp_wait may call the end readable with nothing to read.
	 */
	bool withdrawn;
};

/* What poll may say: 1 with a message, 0 without, either after a skip. */
static bool
ready_ok(const struct dir *x, int rc)
{
	if (x->n > 0)
		return rc == 1;
	return rc == 0 || (x->withdrawn && rc == 1);
}

static uint32_t next_id = 1;

static void
pop_check(struct dir *d, const uint8_t *p, ssize_t len)
{
	unsigned i = d->head;

	F_CHECK(d->n > 0, d->n);
	F_CHECK((size_t)len == d->len[i], len);
	F_CHECK(pat_ok(p, (size_t)len, d->id[i]), d->id[i]);
	d->head = (d->head + 1) % MODEL;
	d->n--;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static uint8_t buf[MSG_MAX + 64];
	struct rd r = { data, size };
	uint8_t cfg = rd_u8(&r);
	bool duplex = cfg & 1;
	size_t ring = (size_t)4096 << (cfg >> 1) % 3;
	struct dir d[2];
	mp_conn *c1, *c2;
	ssize_t rc;

	memset(d, 0, sizeof(d));
	F_CHECK(mp_pipe_new(&c1, &c2, duplex, ring) == 0, ring);
	/* Python's order: c2 sends to c1. */
	d[0].tx = c2;
	d[0].rx = c1;
	d[1].tx = c1;
	d[1].rx = c2;
	while (r.n > 0) {
		uint8_t op = rd_u8(&r);
		struct dir *x = &d[duplex ? op >> 7 : 0];

		switch (op & 7) {
		case 0:
		case 1: {	/* send */
			size_t len = rd_u16(&r) % MSG_MAX;

			if (op & 1)
				len %= 300;
			pat_fill(buf, len, next_id);
			rc = mp_conn_send_timeout(x->tx, buf, len, MP_NOWAIT);
			F_CHECK(rc == 0 || rc == -EAGAIN, rc);
			/* Larger than the ring: never without a reader. */
			if (len >= ring)
				F_CHECK(rc == -EAGAIN, rc);
			if (rc == -EAGAIN && len > 0)
				x->withdrawn = true;
			if (rc == 0 && x->n < MODEL) {
				x->id[(x->head + x->n) % MODEL] = next_id;
				x->len[(x->head + x->n++) % MODEL] =
					(uint32_t)len;
			} else if (rc == 0) {
				abort();	/* the ring cannot hold that many */
			}
			next_id++;
			break;
		}
		case 2:
		case 3: {	/* recv */
			size_t cap = rd_u16(&r) % (MSG_MAX + 64);

			rc = mp_conn_recv_timeout(x->rx, buf, cap, MP_NOWAIT);
			if (rc == -EAGAIN)	/* skipped any marker */
				if (rc == -EAGAIN)
				x->withdrawn = false;
			if (x->n == 0)
				F_CHECK(rc == -EAGAIN, rc);
			else if (x->len[x->head] > cap)
				F_CHECK(rc == -EMSGSIZE, rc);
			else
				pop_check(x, buf, rc);
			break;
		}
		case 4: {	/* recv_alloc */
			void *p = NULL;

			rc = mp_conn_recv_alloc_timeout(x->rx, &p, MP_NOWAIT);
			if (rc == -EAGAIN)
				x->withdrawn = false;
			if (x->n == 0)
				F_CHECK(rc == -EAGAIN, rc);
			else
				pop_check(x, p, rc);
			free(p);
			break;
		}
		case 5:		/* poll */
			rc = mp_conn_poll(x->rx, MP_NOWAIT);
			F_CHECK(ready_ok(x, (int)rc), rc);
			break;
		case 6: {	/* wait on both receivers */
			mp_conn *cs[2] = { c1, c2 }, *ready[2];
			size_t n = duplex ? 2 : 1;

			rc = mp_wait(cs, n, ready, MP_NOWAIT);
			F_CHECK(rc >= 0 && rc <= (int)n, rc);
			for (int k = 0; k < (int)n; k++) {
				bool in = false;

				for (int j = 0; j < rc; j++)
					in |= ready[j] == cs[k];
				/* ready[] follows conns[]: c1 is d[0].rx. */
				F_CHECK(ready_ok(&d[k], in), k);
			}
			break;
		}
		default:	/* wrong direction and bad arguments */
			if (!duplex) {
				F_CHECK(mp_conn_send(c1, buf, 1) == -EBADF, 0);
				F_CHECK(mp_conn_recv_timeout(c2, buf, 1, 0) ==
					-EBADF, 0);
			}
			F_CHECK(mp_conn_send_timeout(x->tx, NULL, 1, 0) ==
				-EINVAL, 0);
			F_CHECK(mp_conn_send_timeout(x->tx, buf, 1, -7) ==
				-EINVAL, 0);
			break;
		}
	}
	/* Drain: everything the model holds is there, then nothing. */
	for (int k = 0; k < (duplex ? 2 : 1); k++) {
		while (d[k].n > 0) {
			rc = mp_conn_recv_timeout(d[k].rx, buf, sizeof(buf),
						  MP_NOWAIT);
			pop_check(&d[k], buf, rc);
		}
		rc = mp_conn_poll(d[k].rx, MP_NOWAIT);
		F_CHECK(ready_ok(&d[k], (int)rc), rc);
	}
	mp_conn_close(c2);
	/* The sender of direction 0 is gone: end of file. */
	F_CHECK(mp_conn_recv_timeout(c1, buf, sizeof(buf), MP_NOWAIT) ==
		-EPIPE, 0);
	mp_conn_close(c1);
	return 0;
}
