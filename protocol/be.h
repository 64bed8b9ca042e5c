/* be.h: big-endian loads and stores, for the frame header, MessagePack and the journal. */
#ifndef OLLM_BE_H
#define OLLM_BE_H

#include <stddef.h>
#include <stdint.h>

/* The n-byte (1 to 8) big-endian unsigned integer at p. */
static inline uint64_t
be_load(const uint8_t *p, size_t n)
{
	uint64_t v = 0;

	for (size_t i = 0; i < n; i++)
		v = v << 8 | p[i];
	return v;
}

static inline uint32_t
be_load32(const uint8_t *p)
{
	return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

static inline void
be_store32(uint8_t *p, uint32_t v)
{
	p[0] = (uint8_t)(v >> 24);
	p[1] = (uint8_t)(v >> 16);
	p[2] = (uint8_t)(v >> 8);
	p[3] = (uint8_t)v;
}

#endif
