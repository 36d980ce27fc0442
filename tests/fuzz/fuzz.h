/* SPDX-License-Identifier: MIT */
/*
 * libFuzzer harnesses: a reader of the fuzzer's bytes, and a check that
 * aborts (a crash the fuzzer records) when a promise is broken.
 */
#ifndef T_FUZZ_H
#define T_FUZZ_H

#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <mproc.h>

struct rd {
	const uint8_t *p;
	size_t n;
};

static inline uint8_t
rd_u8(struct rd *r)
{
	if (r->n == 0)
		return 0;
	r->n--;
	return *r->p++;
}

static inline uint16_t
rd_u16(struct rd *r)
{
	uint16_t v = rd_u8(r);

	return (uint16_t)(v | rd_u8(r) << 8);
}

/* Up to n bytes of input; how many were available. */
static inline size_t
rd_bytes(struct rd *r, void *out, size_t n)
{
	if (n > r->n)
		n = r->n;
	memcpy(out, r->p, n);
	r->p += n;
	r->n -= n;
	return n;
}

#define F_CHECK(cond, v)                                                  \
	do {                                                              \
		if (!(cond)) {                                            \
			fprintf(stderr, "%s:%d: %s (%lld)\n", __FILE__,   \
				__LINE__, #cond, (long long)(v));         \
			abort();                                          \
		}                                                         \
	} while (0)

/* Byte i of message id: lets a reader check what it got. */
static inline uint8_t
pat(uint32_t id, size_t i)
{
	return (uint8_t)(id * 131 + i * 7 + (i >> 8));
}

static inline void
pat_fill(uint8_t *p, size_t n, uint32_t id)
{
	for (size_t i = 0; i < n; i++)
		p[i] = pat(id, i);
}

static inline int
pat_ok(const uint8_t *p, size_t n, uint32_t id)
{
	for (size_t i = 0; i < n; i++)
		if (p[i] != pat(id, i))
			return 0;
	return 1;
}

/* Whether err is an error the API may give for a hostile peer. */
static inline int
peer_err_ok(long err)
{
	return err == -EAGAIN || err == -ETIMEDOUT || err == -EPIPE ||
	       err == -EMSGSIZE || err == -EINVAL || err == -ENOMEM ||
	       err == -EOWNERDEAD || err == MP_ECORRUPT ||
	       err == MP_EVERSION;
}

#endif /* T_FUZZ_H */
