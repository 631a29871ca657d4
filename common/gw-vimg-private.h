/* SPDX-License-Identifier: MIT */
/* Between gw-vimg.c (the contents) and gw-vimg-format.c (the bytes): the rules both apply. */
#ifndef GW_VIMG_PRIVATE_H
#define GW_VIMG_PRIVATE_H

#include <stdint.h>

#include "gw-vimg.h"

/* A chunk size, a stripe size: a power of two within the format's limits. */
int gw_vimg_chunk_bytes_valid(uint64_t c);
int gw_vimg_stripe_bytes_valid(uint64_t s);
/* Where the data starts: after the header and table_bytes of tables, aligned. */
uint64_t gw_vimg_data_offset(uint64_t table_bytes);
/* What each segment holds (sizes[GW_VIMG_MAX_SEGMENTS]), from the (checked) ranges. */
void gw_vimg_segment_sizes(const struct gw_vimg *v, uint64_t *sizes);

#endif
