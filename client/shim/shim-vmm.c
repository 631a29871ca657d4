/* SPDX-License-Identifier: MIT */
/*
 * Apps that use the VMM API themselves (PyTorch expandable segments). cuMemCreate at or above the
 * threshold, while the agent is attached, gets the POSIX fd handle type added and the app gets a
 * virtual handle; every call that takes a handle translates it to the current real one, which
 * changes when the agent releases the memory and maps new memory at the same VA. Mappings are
 * tracked so the agent can export, release and remap them.
 *
 * Driver semantics kept: an app cuMemRelease while mapped leaves the memory alive until the last
 * unmap (the shim keeps its own reference until then). Handles the shim did not create pass
 * through untouched. No driver call is made with the table lock held.
 */
#include "shim-driver.h"

#include <fcntl.h>
#include <stdlib.h>
#include <string.h>

static void inflight_end(void)
{
	pthread_mutex_lock(&shim_tbl.lock);
	shim_tbl.ops_inflight--;
	pthread_mutex_unlock(&shim_tbl.lock);
}

enum hold_result { HOLD_PASS, HOLD_OK, HOLD_ERR };

/*
 * A virtual handle's current real handle, with an operation counted in flight (HOLD_OK: the caller
 * calls inflight_end()); HOLD_PASS: not ours, use the handle as it is; HOLD_ERR: *ret_err.
 */
static enum hold_result hold(uint64_t handle, CUmemGenericAllocationHandle *ret_real,
			     CUresult *ret_err)
{
	enum hold_result res = HOLD_OK;
	struct shim_phys *p;

	if (!shim_is_vhandle(handle))
		return HOLD_PASS;
	pthread_mutex_lock(&shim_tbl.lock);
	p = shim_table_find_phys(&shim_tbl.table, handle);
	if (!p) {
		res = HOLD_PASS;
	} else if (!p->app_refs) {
		*ret_err = CUDA_ERROR_INVALID_VALUE; /* released by the app */
		res = HOLD_ERR;
	} else if (!p->real) {
		*ret_err = CUDA_ERROR_ILLEGAL_STATE; /* released by the agent, not yet remapped */
		res = HOLD_ERR;
	} else {
		*ret_real = p->real;
		shim_tbl.ops_inflight++;
	}
	pthread_mutex_unlock(&shim_tbl.lock);
	return res;
}

CUresult shim_vmm_create(CUmemGenericAllocationHandle *handle, size_t size,
			 const CUmemAllocationProp *prop, unsigned long long flags)
{
	const struct shim_driver *d = shim_driver_get();
	CUmemGenericAllocationHandle real = 0;
	CUmemAllocationProp mine;
	struct shim_phys *p;
	CUresult r;
	int ret;

	if (!d)
		return CUDA_ERROR_NOT_INITIALIZED;
	if (!d->cuMemCreate)
		return CUDA_ERROR_NOT_SUPPORTED;
	if (!handle || !prop || shim_cfg.disabled || !d->vmm ||
	    prop->type != CU_MEM_ALLOCATION_TYPE_PINNED ||
	    prop->location.type != CU_MEM_LOCATION_TYPE_DEVICE || size < shim_cfg.min_bytes ||
	    !shim_agent_ready(true))
		return d->cuMemCreate(handle, size, prop, flags);

	p = shim_phys_new();
	if (!p)
		return d->cuMemCreate(handle, size, prop, flags);
	mine = *prop;
	mine.requestedHandleTypes |= CU_MEM_HANDLE_TYPE_POSIX_FILE_DESCRIPTOR;
	r = d->cuMemCreate(&real, size, &mine, flags);
	if (r != CUDA_SUCCESS) {
		/* not exportable this way: exactly what the app asked for, untracked */
		shim_phys_free(p);
		return d->cuMemCreate(handle, size, prop, flags);
	}
	p->real = real;
	p->size = size;
	p->dev = prop->location.id;
	p->prop = *prop;
	p->app_refs = 1;
	p->exportable = true;
	pthread_mutex_lock(&shim_tbl.lock);
	ret = shim_table_add_phys(&shim_tbl.table, p);
	pthread_mutex_unlock(&shim_tbl.lock);
	if (ret < 0) {
		shim_phys_free(p);
		*handle = real; /* the driver's own handle: passes through everywhere */
		return CUDA_SUCCESS;
	}
	shim_log("app cuMemCreate of %zu bytes on device %d: handle 0x%llx", size, p->dev,
		 (unsigned long long)p->vid);
	*handle = p->vid;
	return CUDA_SUCCESS;
}

/* Drop p if nothing refers to it any more; returns it to be released and freed, or NULL. */
static struct shim_phys *phys_put_locked(struct shim_phys *p)
{
	if (p->app_refs || p->nmaps)
		return NULL;
	shim_table_remove_phys(&shim_tbl.table, p);
	return p;
}

static CUresult phys_destroy(const struct shim_driver *d, struct shim_phys *p)
{
	CUresult r = p->real ? d->cuMemRelease(p->real) : CUDA_SUCCESS;

	shim_phys_free(p);
	return r;
}

CUresult shim_vmm_release(CUmemGenericAllocationHandle handle)
{
	const struct shim_driver *d = shim_driver_get();
	struct shim_phys *p, *dead = NULL;

	if (!d)
		return CUDA_ERROR_NOT_INITIALIZED;
	if (!d->cuMemRelease)
		return CUDA_ERROR_NOT_SUPPORTED;
	if (!shim_is_vhandle(handle))
		return d->cuMemRelease(handle);
	pthread_mutex_lock(&shim_tbl.lock);
	p = shim_table_find_phys(&shim_tbl.table, handle);
	if (p && !p->app_refs) {
		pthread_mutex_unlock(&shim_tbl.lock);
		return CUDA_ERROR_INVALID_VALUE;
	}
	if (p) {
		p->app_refs--;
		dead = phys_put_locked(p);
	}
	pthread_mutex_unlock(&shim_tbl.lock);
	if (!p)
		return d->cuMemRelease(handle);
	return dead ? phys_destroy(d, dead) : CUDA_SUCCESS;
}

CUresult shim_vmm_map(CUdeviceptr va, size_t size, size_t offset,
		      CUmemGenericAllocationHandle handle, unsigned long long flags)
{
	const struct shim_driver *d = shim_driver_get();
	struct shim_range *range;
	CUmemGenericAllocationHandle real = 0;
	struct shim_phys *p, *dead = NULL;
	CUresult r = CUDA_SUCCESS;
	bool tracked = false;

	if (!d)
		return CUDA_ERROR_NOT_INITIALIZED;
	if (!d->cuMemMap)
		return CUDA_ERROR_NOT_SUPPORTED;
	if (!shim_is_vhandle(handle))
		return d->cuMemMap(va, size, offset, handle, flags);
	range = calloc(1, sizeof(*range));

	pthread_mutex_lock(&shim_tbl.lock);
	p = shim_table_find_phys(&shim_tbl.table, handle);
	if (p && !p->app_refs)
		r = CUDA_ERROR_INVALID_VALUE;
	else if (p && !p->real)
		r = CUDA_ERROR_ILLEGAL_STATE;
	if (p && r == CUDA_SUCCESS) {
		real = p->real;
		/* keeps p alive across the call, and out of the agent's reach: a phys mapped more
		 * than once is not a movable range */
		p->nmaps++;
	}
	pthread_mutex_unlock(&shim_tbl.lock);
	if (!p) {
		free(range);
		return d->cuMemMap(va, size, offset, handle, flags);
	}
	if (r != CUDA_SUCCESS) {
		free(range);
		return r;
	}

	r = d->cuMemMap(va, size, offset, real, flags);

	pthread_mutex_lock(&shim_tbl.lock);
	if (r == CUDA_SUCCESS && range) {
		range->va = va;
		range->size = size;
		range->offset = offset;
		range->phys = p;
		tracked = shim_table_add_range(&shim_tbl.table, range) == 0;
	}
	if (!tracked) {
		/* failed, or mapped but not trackable: the driver's mapping keeps the memory */
		p->nmaps--;
		dead = phys_put_locked(p);
	}
	pthread_mutex_unlock(&shim_tbl.lock);
	if (!tracked)
		free(range);
	if (dead)
		(void)phys_destroy(d, dead);
	if (tracked)
		shim_agent_changed();
	return r;
}

/*
 * Stop tracking the app's ranges inside [va, va + size). Phys nothing refers to any more go to
 * dead[] (capacity cap; beyond it their real handle is leaked rather than released under the
 * lock). Returns how many went to dead[]. Called with the table lock held.
 */
static size_t untrack_locked(CUdeviceptr va, size_t size, struct shim_phys **dead, size_t cap)
{
	struct shim_table *t = &shim_tbl.table;
	size_t i = shim_table_index_from(t, va), n = 0;

	while (i < t->nranges && t->ranges[i]->va < va + size) {
		struct shim_range *r = t->ranges[i];
		struct shim_phys *p;

		if (r->converted || r->va < va || r->size > va + size - r->va) {
			i++;
			continue;
		}
		shim_table_remove_range(t, r);
		p = r->phys;
		free(r);
		p->nmaps--;
		p = phys_put_locked(p);
		if (p && n < cap)
			dead[n++] = p;
		else if (p)
			shim_phys_free(p);
	}
	return n;
}

/* The app's tracked ranges overlapping [va, va + size): how many, how many released, bytes. */
static size_t count_locked(CUdeviceptr va, size_t size, size_t *ret_released,
			   size_t *ret_released_bytes)
{
	const struct shim_table *t = &shim_tbl.table;
	size_t i = shim_table_index_from(t, va), n = 0, released = 0, bytes = 0;

	for (; i < t->nranges && t->ranges[i]->va < va + size; i++) {
		const struct shim_range *r = t->ranges[i];

		if (r->converted)
			continue;
		n++;
		if (r->released) {
			released++;
			bytes += r->size;
		}
	}
	*ret_released = released;
	*ret_released_bytes = bytes;
	return n;
}

static void destroy_all(const struct shim_driver *d, struct shim_phys **dead, size_t n)
{
	for (size_t i = 0; i < n; i++)
		(void)phys_destroy(d, dead[i]);
}

/* Stop tracking what lies in [va, va + size) (at most n ranges) and destroy its memory; with
 * inflight, also end the operation counted in ops_inflight, in the same critical section. */
static void forget_ranges(const struct shim_driver *d, CUdeviceptr va, size_t size, size_t n,
			  bool untrack, bool inflight)
{
	struct shim_phys **dead = untrack ? calloc(n, sizeof(*dead)) : NULL;
	size_t ndead = 0;

	pthread_mutex_lock(&shim_tbl.lock);
	if (inflight)
		shim_tbl.ops_inflight--;
	if (untrack)
		ndead = untrack_locked(va, size, dead, dead ? n : 0);
	pthread_mutex_unlock(&shim_tbl.lock);
	if (dead)
		destroy_all(d, dead, ndead);
	free(dead);
	if (untrack)
		shim_agent_changed();
}

/* How many tracked ranges lie in [va, va + size) (0 for an empty or wrapping span); with
 * begin_op, an operation on them is counted in ops_inflight. */
static size_t tracked_in(CUdeviceptr va, size_t size, bool begin_op, size_t *ret_released,
			 size_t *ret_released_bytes)
{
	size_t n;

	if (!size || va + size < va)
		return 0;
	pthread_mutex_lock(&shim_tbl.lock);
	n = count_locked(va, size, ret_released, ret_released_bytes);
	if (n && begin_op)
		shim_tbl.ops_inflight++;
	pthread_mutex_unlock(&shim_tbl.lock);
	return n;
}

CUresult shim_vmm_unmap(CUdeviceptr va, size_t size)
{
	const struct shim_driver *d = shim_driver_get();
	size_t n, released = 0, released_bytes = 0;
	CUresult r;

	if (!d || !d->cuMemUnmap)
		return d ? CUDA_ERROR_NOT_SUPPORTED : CUDA_ERROR_NOT_INITIALIZED;
	n = tracked_in(va, size, true, &released, &released_bytes);
	if (!n)
		return d->cuMemUnmap(va, size);
	/* memory the agent released is not mapped in the driver any more */
	if (released == n && released_bytes == size)
		r = CUDA_SUCCESS;
	else
		r = d->cuMemUnmap(va, size);
	forget_ranges(d, va, size, n, r == CUDA_SUCCESS, true);
	return r;
}

CUresult shim_vmm_address_free(CUdeviceptr va, size_t size)
{
	const struct shim_driver *d = shim_driver_get();
	size_t n, released, released_bytes;
	CUresult r;

	if (!d || !d->cuMemAddressFree)
		return d ? CUDA_ERROR_NOT_SUPPORTED : CUDA_ERROR_NOT_INITIALIZED;
	r = d->cuMemAddressFree(va, size);
	if (r != CUDA_SUCCESS)
		return r;
	/* whatever the shim still tracks there (memory the agent released) is gone with the VA */
	n = tracked_in(va, size, false, &released, &released_bytes);
	if (n)
		forget_ranges(d, va, size, n, true, false);
	return r;
}

/* Merge desc[] into what the range remembers, per location, as the driver applies it. */
static void remember_access(struct shim_range *r, const CUmemAccessDesc *desc, size_t count)
{
	for (size_t i = 0; i < count; i++) {
		unsigned k;

		for (k = 0; k < r->naccess; k++)
			if (r->access[k].location.type == desc[i].location.type &&
			    r->access[k].location.id == desc[i].location.id)
				break;
		if (k == r->naccess) {
			if (r->naccess == SHIM_MAX_ACCESS)
				continue;
			r->naccess++;
		}
		r->access[k] = desc[i];
	}
}

CUresult shim_vmm_set_access(CUdeviceptr va, size_t size, const CUmemAccessDesc *desc,
			     size_t count)
{
	const struct shim_driver *d = shim_driver_get();
	struct shim_table *t = &shim_tbl.table;
	CUresult r;

	if (!d)
		return CUDA_ERROR_NOT_INITIALIZED;
	if (!d->cuMemSetAccess)
		return CUDA_ERROR_NOT_SUPPORTED;
	r = d->cuMemSetAccess(va, size, desc, count);
	if (r != CUDA_SUCCESS || !desc || !count || !size || va + size < va)
		return r;
	pthread_mutex_lock(&shim_tbl.lock);
	for (size_t i = shim_table_index_from(t, va);
	     i < t->nranges && t->ranges[i]->va < va + size; i++) {
		struct shim_range *rg = t->ranges[i];

		if (rg->va >= va && rg->size <= va + size - rg->va)
			remember_access(rg, desc, count);
	}
	pthread_mutex_unlock(&shim_tbl.lock);
	return r;
}

/* Memory the agent mapped back from another process: the driver will not export the import, so
 * a dup of the fd it came as answers. True when that was the case (result in *ret). */
static bool export_kept_fd(uint64_t handle, void *shareable, CUresult *ret)
{
	struct shim_phys *p;
	int fd = -1;

	if (!shim_is_vhandle(handle))
		return false;
	pthread_mutex_lock(&shim_tbl.lock);
	p = shim_table_find_phys(&shim_tbl.table, handle);
	if (p && p->app_refs && p->fd >= 0)
		fd = fcntl(p->fd, F_DUPFD_CLOEXEC, 0);
	else
		p = NULL;
	pthread_mutex_unlock(&shim_tbl.lock);
	if (!p)
		return false;
	if (fd < 0) {
		*ret = CUDA_ERROR_OPERATING_SYSTEM;
	} else {
		*(int *)shareable = fd;
		*ret = CUDA_SUCCESS;
	}
	return true;
}

CUresult shim_vmm_export(void *shareable, CUmemGenericAllocationHandle handle,
			 CUmemAllocationHandleType type, unsigned long long flags)
{
	const struct shim_driver *d = shim_driver_get();
	CUmemGenericAllocationHandle real = 0;
	CUresult r = CUDA_SUCCESS;

	if (!d)
		return CUDA_ERROR_NOT_INITIALIZED;
	if (!d->cuMemExportToShareableHandle)
		return CUDA_ERROR_NOT_SUPPORTED;
	if (shareable && type == CU_MEM_HANDLE_TYPE_POSIX_FILE_DESCRIPTOR && !flags &&
	    export_kept_fd(handle, shareable, &r))
		return r;
	switch (hold(handle, &real, &r)) {
	case HOLD_PASS:
		return d->cuMemExportToShareableHandle(shareable, handle, type, flags);
	case HOLD_ERR:
		return r;
	case HOLD_OK:
		break;
	}
	r = d->cuMemExportToShareableHandle(shareable, real, type, flags);
	inflight_end();
	return r;
}

CUresult shim_vmm_get_props(CUmemAllocationProp *prop, CUmemGenericAllocationHandle handle)
{
	const struct shim_driver *d = shim_driver_get();
	CUmemAllocationProp asked = { 0 };
	CUmemGenericAllocationHandle real = 0;
	struct shim_phys *p;
	CUresult r = CUDA_SUCCESS;

	if (!d)
		return CUDA_ERROR_NOT_INITIALIZED;
	if (!shim_is_vhandle(handle))
		goto pass;
	pthread_mutex_lock(&shim_tbl.lock);
	p = shim_table_find_phys(&shim_tbl.table, handle);
	if (p && p->app_refs) {
		asked = p->prop;
		asked.location.id = p->dev; /* where it lives now */
		real = p->real;
		shim_tbl.ops_inflight++;
	} else if (p) {
		r = CUDA_ERROR_INVALID_VALUE;
	}
	pthread_mutex_unlock(&shim_tbl.lock);
	if (!p)
		goto pass;
	if (r != CUDA_SUCCESS)
		return r;
	if (!prop) {
		r = CUDA_ERROR_INVALID_VALUE;
	} else if (real && d->cuMemGetAllocationPropertiesFromHandle) {
		r = d->cuMemGetAllocationPropertiesFromHandle(prop, real);
		if (r == CUDA_SUCCESS) /* the handle type the shim added stays invisible */
			prop->requestedHandleTypes = asked.requestedHandleTypes;
	} else {
		*prop = asked;
	}
	inflight_end();
	return r;
pass:
	if (!d->cuMemGetAllocationPropertiesFromHandle)
		return CUDA_ERROR_NOT_SUPPORTED;
	return d->cuMemGetAllocationPropertiesFromHandle(prop, handle);
}

CUresult shim_vmm_retain(CUmemGenericAllocationHandle *handle, void *addr)
{
	const struct shim_driver *d = shim_driver_get();
	CUresult r = CUDA_SUCCESS;
	struct shim_range *rg;
	bool ours = false;

	if (!d)
		return CUDA_ERROR_NOT_INITIALIZED;
	pthread_mutex_lock(&shim_tbl.lock);
	rg = shim_table_lookup(&shim_tbl.table, (CUdeviceptr)(uintptr_t)addr);
	if (rg && rg->converted) {
		ours = true;
		r = CUDA_ERROR_INVALID_VALUE; /* what cuMemAlloc memory gets */
	} else if (rg && rg->phys->vid) {
		ours = true;
		if (!handle) {
			r = CUDA_ERROR_INVALID_VALUE;
		} else {
			rg->phys->app_refs++;
			*handle = rg->phys->vid;
		}
	}
	pthread_mutex_unlock(&shim_tbl.lock);
	if (ours)
		return r;
	if (!d->cuMemRetainAllocationHandle)
		return CUDA_ERROR_NOT_SUPPORTED;
	return d->cuMemRetainAllocationHandle(handle, addr);
}

CUresult shim_vmm_multicast_bind(CUmemGenericAllocationHandle mc, size_t mc_offset,
				 CUmemGenericAllocationHandle mem, size_t mem_offset, size_t size,
				 unsigned long long flags)
{
	const struct shim_driver *d = shim_driver_get();
	CUmemGenericAllocationHandle real = 0;
	CUresult r = CUDA_SUCCESS;

	if (!d)
		return CUDA_ERROR_NOT_INITIALIZED;
	if (!d->cuMulticastBindMem)
		return CUDA_ERROR_NOT_SUPPORTED;
	switch (hold(mem, &real, &r)) {
	case HOLD_PASS:
		return d->cuMulticastBindMem(mc, mc_offset, mem, mem_offset, size, flags);
	case HOLD_ERR:
		return r;
	case HOLD_OK:
		break;
	}
	r = d->cuMulticastBindMem(mc, mc_offset, real, mem_offset, size, flags);
	inflight_end();
	return r;
}
