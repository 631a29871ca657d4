/* SPDX-License-Identifier: MIT */
/*
 * Fuzz target for the VRAM image decoder (common/gw-vimg.c): whatever it accepts must be
 * self-consistent (runs cover each range, data offsets add up) and re-encode to the same bytes.
 * The mutations mostly break the CRCs, so half of the inputs get their CRCs fixed first: that
 * drives the table checks behind them.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "gw-crc32c.h"
#include "gw-vimg.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* Statistics for fuzz-replay. */
unsigned long fuzz_proto_payloads, fuzz_proto_accepted;

#define CHECK(cond)                                                                               \
	do {                                                                                      \
		if (!(cond)) {                                                                    \
			fprintf(stderr, "fuzz-vimg: %s:%d: %s\n", __FILE__, __LINE__, #cond);    \
			abort();                                                                  \
		}                                                                                 \
	} while (0)

static void put32(uint8_t *p, uint32_t x)
{
	for (int i = 0; i < 4; i++)
		p[i] = (uint8_t)(x >> (8 * i));
}

static void check_accepted(const struct gw_vimg *v, const uint8_t *data, size_t size)
{
	uint64_t data_bytes = 0, chunks = 0;
	uint8_t *again = NULL;
	size_t len = 0;
	struct gw_vimg copy = *v;

	for (uint32_t i = 0; i < v->nranges; i++) {
		const struct gw_vimg_range *r = &v->ranges[i];
		uint64_t covered = 0;

		for (uint32_t k = 0; k < r->nruns; k++) {
			const struct gw_vimg_run *run = &v->runs[r->first_run + k];
			uint64_t off, n;

			CHECK(run->first_chunk == covered);
			covered += run->nchunks;
			gw_vimg_run_span(v, r, run, &off, &n);
			CHECK(off + n <= r->size);
			if (!run->zero)
				data_bytes += n;
		}
		CHECK(covered == gw_vimg_range_chunks(v, r));
		chunks += covered;
	}
	CHECK(data_bytes == v->data_bytes && chunks == v->nchunks);
	CHECK(v->file_bytes == v->data_offset + (v->nsegments ? 0 : v->data_bytes));
	if (v->nsegments) {
		/* The pieces tile each segment exactly. */
		uint64_t fill[GW_VIMG_MAX_SEGMENTS] = { 0 }, total = 0;
		struct gw_vimg_pieces it;
		struct gw_vimg_piece p;

		gw_vimg_pieces_start(v, 0, &it);
		while (gw_vimg_pieces_next(v, &it, &p)) {
			CHECK(p.segment < v->nsegments && p.len > 0 && p.len <= v->stripe_bytes);
			CHECK(p.offset == GW_VIMG_SEG_HEADER_BYTES + fill[p.segment]);
			fill[p.segment] += p.len;
			total += p.len;
		}
		CHECK(total == v->data_bytes);
		for (uint32_t k = 0; k < v->nsegments; k++)
			CHECK(fill[k] == v->seg_bytes[k]);
	}
	/* Re-encoding what was accepted gives back the same header and tables. */
	CHECK(gw_vimg_encode(&copy, &again, &len) == 0);
	len = GW_VIMG_HEADER_BYTES + (size_t)gw_vimg_table_bytes(v);
	CHECK(len <= size && memcmp(again, data, len) == 0);
	free(again);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct gw_vimg v;
	char err[256];
	uint8_t *buf;

	if (size == 0 || size > (4u << 20))
		return 0;
	buf = malloc(size);
	if (!buf)
		return 0;
	memcpy(buf, data, size);
	/* Odd first byte: fix up the CRCs so that the checks behind them run. */
	if ((data[0] & 1) && size >= GW_VIMG_HEADER_BYTES) {
		struct gw_vimg h;

		put32(buf + 252, gw_crc32c(0, buf, 252));
		if (gw_vimg_decode_header(&h, buf, size, err, sizeof(err)) == 0 &&
		    size - GW_VIMG_HEADER_BYTES >= gw_vimg_table_bytes(&h)) {
			put32(buf + 248, gw_crc32c(0, buf + GW_VIMG_HEADER_BYTES,
						   (size_t)gw_vimg_table_bytes(&h)));
			put32(buf + 252, gw_crc32c(0, buf, 252));
		}
	}
	fuzz_proto_payloads++;
	if (gw_vimg_decode(&v, buf, size, err, sizeof(err)) == 0) {
		fuzz_proto_accepted++;
		check_accepted(&v, buf, size); /* buf: the CRC-fixed input */
		gw_vimg_clear(&v);
	} else {
		CHECK(v.ranges == NULL && v.runs == NULL && v.sums == NULL);
		CHECK(err[0] != 0);
	}
	free(buf);
	return 0;
}
