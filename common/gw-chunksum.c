/* SPDX-License-Identifier: MIT */
#include "gw-chunksum.h"

#include <string.h>

void gw_chunksum_words(const uint64_t *words, size_t nwords, uint64_t first_word,
		       struct gw_chunk_scan *out)
{
	uint64_t any = 0, sum = 0;

	for (size_t i = 0; i < nwords; i++) {
		uint64_t w;

		memcpy(&w, &words[i], sizeof(w)); /* the caller's buffer may be unaligned */
		any |= w;
		sum += gw_chunksum_word(w, first_word + i);
	}
	out->nonzero = any != 0;
	out->sum = sum;
}

void gw_chunksum_range(const void *data, uint64_t bytes, uint64_t chunk_bytes,
		       struct gw_chunk_scan *out)
{
	uint64_t nwords = bytes / 8, chunk_words = chunk_bytes / 8;

	for (uint64_t c = 0, g = 0; g < nwords; c++, g += chunk_words) {
		uint64_t n = nwords - g < chunk_words ? nwords - g : chunk_words;

		gw_chunksum_words((const uint64_t *)data + g, (size_t)n, g, &out[c]);
	}
}

uint64_t gw_chunksum_zero(uint64_t first_word, uint64_t words)
{
	uint64_t sum = 0;

	for (uint64_t i = 0; i < words; i++)
		sum += gw_chunksum_word(0, first_word + i);
	return sum;
}
