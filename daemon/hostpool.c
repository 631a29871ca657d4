/* SPDX-License-Identifier: MIT */
#include "hostpool.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "clock.h"

void gw_hostpool_init(struct gw_hostpool *pool, const struct gw_cuda *cuda)
{
	memset(pool, 0, sizeof(*pool));
	pthread_mutex_init(&pool->lock, NULL);
	pool->cuda = cuda;
}

static int reserve(void ***array, size_t *cap, size_t need)
{
	void **grown;
	size_t n = *cap ? *cap : 64;

	if (need <= *cap)
		return 0;
	while (n < need)
		n *= 2;
	grown = realloc(*array, n * sizeof(**array));
	if (!grown)
		return -ENOMEM;
	*array = grown;
	*cap = n;
	return 0;
}

int gw_hostpool_grow(struct gw_hostpool *pool, size_t bytes, CUresult *ret_cu)
{
	double start = gw_now_ms();

	while (bytes > 0) {
		size_t chunk = bytes < GW_HOSTPOOL_CHUNK_BYTES ? bytes : GW_HOSTPOOL_CHUNK_BYTES;
		size_t blocks = (chunk + GW_HOSTPOOL_BLOCK_BYTES - 1) / GW_HOSTPOOL_BLOCK_BYTES;
		size_t cap;
		void *mem;
		CUresult r;

		chunk = blocks * GW_HOSTPOOL_BLOCK_BYTES;
		r = pool->cuda->cuMemHostAlloc(&mem, chunk, CU_MEMHOSTALLOC_PORTABLE);
		if (r != CUDA_SUCCESS) {
			*ret_cu = r;
			return gw_cuda_errno(r);
		}
		pthread_mutex_lock(&pool->lock);
		cap = pool->chunk_cap;
		if (reserve(&pool->chunks, &cap, pool->nchunks + 1) < 0 ||
		    reserve(&pool->free_blocks, &pool->free_cap, pool->total_blocks + blocks) < 0) {
			pthread_mutex_unlock(&pool->lock);
			pool->cuda->cuMemFreeHost(mem);
			return -ENOMEM;
		}
		pool->chunk_cap = (unsigned)cap;
		pool->chunks[pool->nchunks++] = mem;
		for (size_t i = 0; i < blocks; i++)
			pool->free_blocks[pool->nfree++] = (char *)mem + i * GW_HOSTPOOL_BLOCK_BYTES;
		pool->total_blocks += blocks;
		pool->pin_ms += gw_now_ms() - start;
		pthread_mutex_unlock(&pool->lock);
		start = gw_now_ms();
		bytes -= chunk < bytes ? chunk : bytes;
	}
	return 0;
}

int gw_hostpool_take(struct gw_hostpool *pool, size_t n, void **ret_blocks)
{
	int r = -ENOSPC;

	pthread_mutex_lock(&pool->lock);
	if (n <= pool->nfree) {
		pool->nfree -= n;
		memcpy(ret_blocks, pool->free_blocks + pool->nfree, n * sizeof(void *));
		r = 0;
	}
	pthread_mutex_unlock(&pool->lock);
	return r;
}

void gw_hostpool_give(struct gw_hostpool *pool, void *const *blocks, size_t n)
{
	/* Every block came from this pool, and free_blocks has room for all of them. */
	pthread_mutex_lock(&pool->lock);
	memcpy(pool->free_blocks + pool->nfree, blocks, n * sizeof(void *));
	pool->nfree += n;
	pthread_mutex_unlock(&pool->lock);
}

/* Bytes in *blocks, read under the pool's lock. */
static size_t locked_bytes(struct gw_hostpool *pool, const size_t *blocks)
{
	size_t n;

	pthread_mutex_lock(&pool->lock);
	n = *blocks * (size_t)GW_HOSTPOOL_BLOCK_BYTES;
	pthread_mutex_unlock(&pool->lock);
	return n;
}

size_t gw_hostpool_free_bytes(struct gw_hostpool *pool)
{
	return locked_bytes(pool, &pool->nfree);
}

size_t gw_hostpool_total_bytes(struct gw_hostpool *pool)
{
	return locked_bytes(pool, &pool->total_blocks);
}

void gw_hostpool_finish(struct gw_hostpool *pool)
{
	if (!pool)
		return;
	for (unsigned i = 0; i < pool->nchunks; i++)
		pool->cuda->cuMemFreeHost(pool->chunks[i]);
	free(pool->chunks);
	free(pool->free_blocks);
	pthread_mutex_destroy(&pool->lock);
	memset(pool, 0, sizeof(*pool));
}
