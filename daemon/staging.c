/* SPDX-License-Identifier: MIT */
#include "staging.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "clock.h"

int gw_staging_pool_init(struct gw_staging_pool *pool, const struct gw_cuda *cuda,
			 size_t total_bytes, CUresult *ret_cu)
{
	unsigned count = (unsigned)((total_bytes + GW_STAGING_BUFFER_BYTES - 1) /
				    GW_STAGING_BUFFER_BYTES);
	double start = gw_now_ms();

	memset(pool, 0, sizeof(*pool));
	pool->cuda = cuda;
	pool->buffer_bytes = GW_STAGING_BUFFER_BYTES;
	if (count == 0)
		return 0;
	pool->buffers = calloc(count, sizeof(*pool->buffers));
	if (!pool->buffers)
		return -ENOMEM;
	for (; pool->count < count; pool->count++) {
		CUresult r = cuda->cuMemHostAlloc(&pool->buffers[pool->count], pool->buffer_bytes,
						  CU_MEMHOSTALLOC_PORTABLE);
		if (r != CUDA_SUCCESS) {
			*ret_cu = r;
			gw_staging_pool_finish(pool);
			return gw_cuda_errno(r);
		}
	}
	pool->pin_ms = gw_now_ms() - start;
	return 0;
}

void gw_staging_pool_finish(struct gw_staging_pool *pool)
{
	if (!pool || !pool->buffers)
		return;
	for (unsigned i = 0; i < pool->count; i++)
		pool->cuda->cuMemFreeHost(pool->buffers[i]);
	free(pool->buffers);
	pool->buffers = NULL;
	pool->count = 0;
}

size_t gw_staging_pool_bytes(const struct gw_staging_pool *pool)
{
	return (size_t)pool->count * pool->buffer_bytes;
}
