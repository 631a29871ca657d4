/* SPDX-License-Identifier: MIT */
/*
 * A GPU's pinned host staging pool: buffers allocated with cuMemHostAlloc once, at priming, and
 * kept, because pinning is slow (8 GiB takes ~4.5 s on the H100) and copies through pinned memory
 * run at the PCIe link's speed. Blocking; called from worker threads with the GPU's context current.
 */
#ifndef GW_STAGING_H
#define GW_STAGING_H

#include <stddef.h>

#include "gw-cuda.h"

#define GW_STAGING_BUFFER_BYTES (64u << 20)

struct gw_staging_pool {
	const struct gw_cuda *cuda;
	void **buffers;
	unsigned count;
	size_t buffer_bytes;
	double pin_ms; /* time the cuMemHostAlloc calls took */
};

/* Pin total_bytes (rounded up to whole buffers; 0 allocates none). On failure everything pinned
 * so far is freed and the CUresult is returned through ret_cu. */
int gw_staging_pool_init(struct gw_staging_pool *pool, const struct gw_cuda *cuda,
			 size_t total_bytes, CUresult *ret_cu);
void gw_staging_pool_finish(struct gw_staging_pool *pool);
size_t gw_staging_pool_bytes(const struct gw_staging_pool *pool);

#endif
