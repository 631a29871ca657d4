/* SPDX-License-Identifier: MIT */
/*
 * cuMemAlloc and cuMemAllocPitch made exportable: at or above the threshold, while the agent is
 * attached to the daemon, an allocation becomes reserve + create (POSIX fd handle type) + map +
 * set access, and the returned pointer is the reserved VA. Any failing step is undone and the real
 * cuMemAlloc answers, so the app never sees an error the driver would not give.
 *
 * No driver call is made with the table lock held: app threads can be frozen (ptrace) anywhere,
 * and the agent must always be able to take the lock.
 */
#include "shim-driver.h"

#include <stdatomic.h>
#include <stdlib.h>

#define PITCH_ALIGN 512

struct shim_tables shim_tbl = {
	.lock = PTHREAD_MUTEX_INITIALIZER,
	.table = { .next_serial = 1 },
};

static atomic_size_t nconverted; /* converted ranges in the table: cuMemFree skips the lock at 0 */

static bool want_convert(const struct shim_driver *d, size_t size)
{
	if (shim_cfg.disabled)
		return false;
	if (size < shim_cfg.min_bytes || !d->vmm) {
		(void)shim_agent_ready(false); /* the agent starts at the first allocation */
		return false;
	}
	return shim_agent_ready(true);
}

static CUresult convert(const struct shim_driver *d, size_t size, CUdeviceptr *ret_va)
{
	CUmemAllocationProp prop = { 0 };
	CUmemGenericAllocationHandle h = 0;
	struct shim_range *range = NULL;
	struct shim_phys *phys = NULL;
	CUmemAccessDesc access;
	CUdeviceptr va = 0;
	size_t gran = 0, asize;
	CUdevice dev;
	CUresult r;
	int ret;

	r = d->cuCtxGetDevice(&dev);
	if (r != CUDA_SUCCESS)
		return r;
	prop.type = CU_MEM_ALLOCATION_TYPE_PINNED;
	prop.requestedHandleTypes = CU_MEM_HANDLE_TYPE_POSIX_FILE_DESCRIPTOR;
	prop.location.type = CU_MEM_LOCATION_TYPE_DEVICE;
	prop.location.id = dev;
	r = d->cuMemGetAllocationGranularity(&gran, &prop, CU_MEM_ALLOC_GRANULARITY_MINIMUM);
	if (r != CUDA_SUCCESS)
		return r;
	if (gran == 0 || (gran & (gran - 1)) || size > SIZE_MAX - (gran - 1))
		return CUDA_ERROR_INVALID_VALUE;
	asize = (size + gran - 1) & ~(gran - 1);

	phys = shim_phys_new();
	range = calloc(1, sizeof(*range));
	if (!phys || !range) {
		r = CUDA_ERROR_OUT_OF_MEMORY;
		goto fail;
	}
	r = d->cuMemAddressReserve(&va, asize, 0, 0, 0);
	if (r != CUDA_SUCCESS)
		goto fail;
	r = d->cuMemCreate(&h, asize, &prop, 0);
	if (r != CUDA_SUCCESS)
		goto fail_va;
	r = d->cuMemMap(va, asize, 0, h, 0);
	if (r != CUDA_SUCCESS)
		goto fail_handle;
	access.location = prop.location;
	access.flags = CU_MEM_ACCESS_FLAGS_PROT_READWRITE;
	r = d->cuMemSetAccess(va, asize, &access, 1);
	if (r != CUDA_SUCCESS)
		goto fail_map;

	phys->real = h;
	phys->size = asize;
	phys->dev = dev;
	phys->prop = prop;
	phys->nmaps = 1;
	phys->exportable = true;
	range->va = va;
	range->size = asize;
	range->req_size = size;
	range->phys = phys;
	range->converted = true;
	range->naccess = 1;
	range->access[0] = access;

	pthread_mutex_lock(&shim_tbl.lock);
	ret = shim_table_add_range(&shim_tbl.table, range);
	if (ret == 0)
		atomic_fetch_add(&nconverted, 1);
	pthread_mutex_unlock(&shim_tbl.lock);
	if (ret < 0) {
		r = CUDA_ERROR_OUT_OF_MEMORY;
		goto fail_map;
	}
	shim_agent_changed();
	shim_log("converted %zu bytes on device %d at 0x%llx (%zu mapped)", size, (int)dev,
		 (unsigned long long)va, asize);
	*ret_va = va;
	return CUDA_SUCCESS;

fail_map:
	(void)d->cuMemUnmap(va, asize);
fail_handle:
	(void)d->cuMemRelease(h);
fail_va:
	(void)d->cuMemAddressFree(va, asize);
fail:
	free(range);
	shim_phys_free(phys);
	shim_log("could not convert %zu bytes (CUDA error %d): plain allocation", size, (int)r);
	return r;
}

CUresult shim_mem_alloc(CUdeviceptr *dptr, size_t size)
{
	const struct shim_driver *d = shim_driver_get();

	if (!d || !d->cuMemAlloc)
		return CUDA_ERROR_NOT_INITIALIZED;
	if (dptr && size && want_convert(d, size) && convert(d, size, dptr) == CUDA_SUCCESS)
		return CUDA_SUCCESS;
	return d->cuMemAlloc(dptr, size);
}

CUresult shim_mem_alloc_pitch(CUdeviceptr *dptr, size_t *pitch, size_t width, size_t height,
			      unsigned int elem)
{
	const struct shim_driver *d = shim_driver_get();

	if (!d)
		return CUDA_ERROR_NOT_INITIALIZED;
	/* the arguments the driver accepts; anything else gets the driver's own answer */
	if (dptr && pitch && width && height && (elem == 4 || elem == 8 || elem == 16) &&
	    width <= SIZE_MAX - (PITCH_ALIGN - 1)) {
		size_t p = (width + PITCH_ALIGN - 1) & ~(size_t)(PITCH_ALIGN - 1);

		if (p <= SIZE_MAX / height && want_convert(d, p * height) &&
		    convert(d, p * height, dptr) == CUDA_SUCCESS) {
			*pitch = p;
			return CUDA_SUCCESS;
		}
	}
	if (!d->cuMemAllocPitch)
		return CUDA_ERROR_NOT_SUPPORTED;
	return d->cuMemAllocPitch(dptr, pitch, width, height, elem);
}

CUresult shim_mem_free(CUdeviceptr dptr)
{
	const struct shim_driver *d = shim_driver_get();
	struct shim_range *r = NULL;
	CUresult res = CUDA_SUCCESS, x;

	if (!d || !d->cuMemFree)
		return CUDA_ERROR_NOT_INITIALIZED;
	if (dptr && atomic_load(&nconverted)) {
		pthread_mutex_lock(&shim_tbl.lock);
		r = shim_table_find(&shim_tbl.table, dptr);
		if (r && r->converted) {
			shim_table_remove_range(&shim_tbl.table, r);
			atomic_fetch_sub(&nconverted, 1);
		} else {
			r = NULL;
		}
		pthread_mutex_unlock(&shim_tbl.lock);
	}
	if (!r)
		return d->cuMemFree(dptr);

	/* out of the table: the agent no longer sees it */
	if (!r->released) {
		x = d->cuMemUnmap(r->va, r->size);
		if (x != CUDA_SUCCESS)
			res = x;
	}
	if (r->phys->real) {
		x = d->cuMemRelease(r->phys->real);
		if (x != CUDA_SUCCESS && res == CUDA_SUCCESS)
			res = x;
	}
	x = d->cuMemAddressFree(r->va, r->size);
	if (x != CUDA_SUCCESS && res == CUDA_SUCCESS)
		res = x;
	shim_log("freed converted 0x%llx (%zu bytes)%s", (unsigned long long)r->va, r->size,
		 res == CUDA_SUCCESS ? "" : " with errors");
	shim_phys_free(r->phys);
	free(r);
	shim_agent_changed();
	return res;
}

/* In a forked child: CUDA does not survive fork, neither does the bookkeeping of it. */
void shim_tables_reset_child(void)
{
	pthread_mutex_init(&shim_tbl.lock, NULL);
	shim_table_finish(&shim_tbl.table);
	shim_tbl.ops_inflight = 0;
	shim_tbl.epoch = 0;
	atomic_store(&nconverted, 0);
}
