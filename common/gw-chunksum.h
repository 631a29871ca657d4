/* SPDX-License-Identifier: MIT */
/*
 * The per-chunk scan of a VRAM range: is the chunk all zero, and its 64-bit checksum. The daemon
 * runs it on the GPU (daemon/kernels/scan.cu); this is the same function on the host, for the
 * fake driver, `warmctl inspect --verify` and the tests. Both must agree bit for bit.
 *
 * A range is a sequence of little-endian 64-bit words w[g] (g counts from the range's start). Its
 * chunks are chunk_words words long (the last may be shorter). For each chunk:
 *     nonzero = OR of its words != 0
 *     sum     = sum over its words (mod 2^64) of mix(w[g] ^ (g * GW_CHUNKSUM_KEY))
 *     mix(x)  = (x * GW_CHUNKSUM_MUL) ^ ((x * GW_CHUNKSUM_MUL) >> 31)
 * Keying by g makes swapped or shifted chunks show up; the sum makes it order-free within a chunk,
 * so the GPU can reduce it in parallel. It detects corruption, it is not a cryptographic hash.
 */
#ifndef GW_CHUNKSUM_H
#define GW_CHUNKSUM_H

#include <stddef.h>
#include <stdint.h>

#define GW_CHUNKSUM_KEY 0x9E3779B97F4A7C15ull
#define GW_CHUNKSUM_MUL 0xBF58476D1CE4E5B9ull

/* The result of one chunk, as the kernel writes it: two words. */
struct gw_chunk_scan {
	uint64_t nonzero; /* 0 or 1 */
	uint64_t sum;
};

static inline uint64_t gw_chunksum_word(uint64_t w, uint64_t g)
{
	uint64_t x = (w ^ (g * GW_CHUNKSUM_KEY)) * GW_CHUNKSUM_MUL;

	return x ^ (x >> 31);
}

/* Scan nwords words that start at word index first_word of their range. */
void gw_chunksum_words(const uint64_t *words, size_t nwords, uint64_t first_word,
		       struct gw_chunk_scan *out);

/* Scan a whole range held in host memory: one result per chunk. */
void gw_chunksum_range(const void *data, uint64_t bytes, uint64_t chunk_bytes,
		       struct gw_chunk_scan *out);

/* The checksum of an all-zero chunk of `words` words starting at word first_word. */
uint64_t gw_chunksum_zero(uint64_t first_word, uint64_t words);

#endif
