/* SPDX-License-Identifier: MIT */
/*
 * Pinned host memory for VRAM images held by the daemon, in fixed-size blocks. Pinning is slow
 * (about 0.55 s per GiB on the H100 host), so --image-pool-mib pins a pool once at start; images
 * take blocks from it and give them back. When the pool runs dry, blocks are pinned on demand
 * (slow, logged) and kept for reuse. Thread-safe: pinning runs on workers while the loop takes
 * and gives blocks.
 */
#ifndef GW_HOSTPOOL_H
#define GW_HOSTPOOL_H

#include <pthread.h>
#include <stddef.h>

#include "gw-cuda.h"

#define GW_HOSTPOOL_BLOCK_BYTES (64u << 20)
#define GW_HOSTPOOL_CHUNK_BYTES (1u << 30) /* one cuMemHostAlloc call */

struct gw_hostpool {
	pthread_mutex_t lock;
	const struct gw_cuda *cuda;
	void **chunks;      /* cuMemHostAlloc'd regions */
	unsigned nchunks, chunk_cap;
	void **free_blocks; /* stack of free blocks */
	size_t nfree, free_cap;
	size_t total_blocks;
	double pin_ms;
};

void gw_hostpool_init(struct gw_hostpool *pool, const struct gw_cuda *cuda);
/* Pin bytes more (rounded up to blocks), with a context current. Blocking. */
int gw_hostpool_grow(struct gw_hostpool *pool, size_t bytes, CUresult *ret_cu);
/* Take n blocks; -ENOSPC when fewer are free (nothing taken). */
int gw_hostpool_take(struct gw_hostpool *pool, size_t n, void **ret_blocks);
void gw_hostpool_give(struct gw_hostpool *pool, void *const *blocks, size_t n);
size_t gw_hostpool_free_bytes(struct gw_hostpool *pool);
size_t gw_hostpool_total_bytes(struct gw_hostpool *pool);
/* Unpin everything (a context current). */
void gw_hostpool_finish(struct gw_hostpool *pool);

#endif
