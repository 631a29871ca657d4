/* SPDX-License-Identifier: MIT */
/*
 * The driver entry points the shim covers, exported under libcuda's names (direct calls of an
 * app linked against libcuda land here) and handed out by the dlsym and cuGetProcAddress
 * interposition. Each forwards to the real driver for whatever is not the shim's.
 *
 * The unsuffixed cuMemAlloc, cuMemFree and cuMemAllocPitch exports are the CUDA 2.x ABI with
 * 32-bit device pointers: a converted allocation cannot be expressed there, so they only forward.
 */
#include "shim-driver.h"

#include <string.h>

static const struct shim_driver *driver(void)
{
	return shim_driver_get();
}

/* ---- cuGetProcAddress ---- */

static CUresult w_gpa_v2(const char *symbol, void **pfn, int cuda_version, cuuint64_t flags,
			 CUdriverProcAddressQueryResult *status)
{
	const struct shim_driver *d = driver();
	CUresult r;

	if (!d)
		return CUDA_ERROR_NOT_INITIALIZED;
	if (d->gpa_v2) {
		r = d->gpa_v2(symbol, pfn, cuda_version, flags, status);
	} else if (d->gpa_v1) {
		r = d->gpa_v1(symbol, pfn, cuda_version, flags);
		if (status)
			*status = r == CUDA_SUCCESS ? CU_GET_PROC_ADDRESS_SUCCESS :
						      CU_GET_PROC_ADDRESS_SYMBOL_NOT_FOUND;
	} else {
		return CUDA_ERROR_NOT_FOUND;
	}
	if (r == CUDA_SUCCESS && symbol && pfn && *pfn && !shim_cfg.disabled)
		*pfn = shim_entry_for_proc(symbol, cuda_version, *pfn);
	return r;
}

static CUresult w_gpa_v1(const char *symbol, void **pfn, int cuda_version, cuuint64_t flags)
{
	const struct shim_driver *d = driver();
	CUresult r;

	if (!d)
		return CUDA_ERROR_NOT_INITIALIZED;
	if (d->gpa_v1)
		r = d->gpa_v1(symbol, pfn, cuda_version, flags);
	else if (d->gpa_v2)
		r = d->gpa_v2(symbol, pfn, cuda_version, flags, NULL);
	else
		return CUDA_ERROR_NOT_FOUND;
	if (r == CUDA_SUCCESS && symbol && pfn && *pfn && !shim_cfg.disabled)
		*pfn = shim_entry_for_proc(symbol, cuda_version, *pfn);
	return r;
}

/* ---- allocation (CUDA 3.2+ ABI) ---- */

static CUresult w_mem_alloc(CUdeviceptr *dptr, size_t size)
{
	return shim_mem_alloc(dptr, size);
}

static CUresult w_mem_free(CUdeviceptr dptr)
{
	return shim_mem_free(dptr);
}

static CUresult w_mem_alloc_pitch(CUdeviceptr *dptr, size_t *pitch, size_t width, size_t height,
				  unsigned int elem)
{
	return shim_mem_alloc_pitch(dptr, pitch, width, height, elem);
}

/* ---- the CUDA 2.x ABI: forwarded ---- */

static CUresult w_v1_mem_alloc(unsigned int *dptr, unsigned int size)
{
	const struct shim_driver *d = driver();

	if (!d)
		return CUDA_ERROR_NOT_INITIALIZED;
	return d->v1_cuMemAlloc ? d->v1_cuMemAlloc(dptr, size) : CUDA_ERROR_NOT_SUPPORTED;
}

static CUresult w_v1_mem_free(unsigned int dptr)
{
	const struct shim_driver *d = driver();

	if (!d)
		return CUDA_ERROR_NOT_INITIALIZED;
	return d->v1_cuMemFree ? d->v1_cuMemFree(dptr) : CUDA_ERROR_NOT_SUPPORTED;
}

static CUresult w_v1_mem_alloc_pitch(unsigned int *dptr, unsigned int *pitch, unsigned int width,
				     unsigned int height, unsigned int elem)
{
	const struct shim_driver *d = driver();

	if (!d)
		return CUDA_ERROR_NOT_INITIALIZED;
	return d->v1_cuMemAllocPitch ? d->v1_cuMemAllocPitch(dptr, pitch, width, height, elem) :
				       CUDA_ERROR_NOT_SUPPORTED;
}

/* ---- the application's own VMM calls ---- */

static CUresult w_mem_create(CUmemGenericAllocationHandle *handle, size_t size,
			     const CUmemAllocationProp *prop, unsigned long long flags)
{
	return shim_vmm_create(handle, size, prop, flags);
}

static CUresult w_mem_release(CUmemGenericAllocationHandle handle)
{
	return shim_vmm_release(handle);
}

static CUresult w_mem_map(CUdeviceptr ptr, size_t size, size_t offset,
			  CUmemGenericAllocationHandle handle, unsigned long long flags)
{
	return shim_vmm_map(ptr, size, offset, handle, flags);
}

static CUresult w_mem_unmap(CUdeviceptr ptr, size_t size)
{
	return shim_vmm_unmap(ptr, size);
}

static CUresult w_mem_set_access(CUdeviceptr ptr, size_t size, const CUmemAccessDesc *desc,
				 size_t count)
{
	return shim_vmm_set_access(ptr, size, desc, count);
}

static CUresult w_mem_address_free(CUdeviceptr ptr, size_t size)
{
	return shim_vmm_address_free(ptr, size);
}

static CUresult w_mem_export(void *shareable, CUmemGenericAllocationHandle handle,
			     CUmemAllocationHandleType type, unsigned long long flags)
{
	return shim_vmm_export(shareable, handle, type, flags);
}

static CUresult w_mem_get_props(CUmemAllocationProp *prop, CUmemGenericAllocationHandle handle)
{
	return shim_vmm_get_props(prop, handle);
}

static CUresult w_mem_retain(CUmemGenericAllocationHandle *handle, void *addr)
{
	return shim_vmm_retain(handle, addr);
}

static CUresult w_multicast_bind_mem(CUmemGenericAllocationHandle mc, size_t mc_offset,
				     CUmemGenericAllocationHandle mem, size_t mem_offset,
				     size_t size, unsigned long long flags)
{
	return shim_vmm_multicast_bind(mc, mc_offset, mem, mem_offset, size, flags);
}

/* ---- the exports: libcuda's names, the same code ---- */

#define SHIM_ALIAS(fn) SHIM_EXPORT __attribute__((alias(#fn)))

CUresult cuGetProcAddress_v2(const char *symbol, void **pfn, int cuda_version, cuuint64_t flags,
			     CUdriverProcAddressQueryResult *status) SHIM_ALIAS(w_gpa_v2);
CUresult cuGetProcAddress(const char *symbol, void **pfn, int cuda_version, cuuint64_t flags)
	SHIM_ALIAS(w_gpa_v1);
CUresult cuMemAlloc_v2(CUdeviceptr *dptr, size_t size) SHIM_ALIAS(w_mem_alloc);
CUresult cuMemFree_v2(CUdeviceptr dptr) SHIM_ALIAS(w_mem_free);
CUresult cuMemAllocPitch_v2(CUdeviceptr *dptr, size_t *pitch, size_t width, size_t height,
			    unsigned int elem) SHIM_ALIAS(w_mem_alloc_pitch);
CUresult cuMemAlloc(unsigned int *dptr, unsigned int size) SHIM_ALIAS(w_v1_mem_alloc);
CUresult cuMemFree(unsigned int dptr) SHIM_ALIAS(w_v1_mem_free);
CUresult cuMemAllocPitch(unsigned int *dptr, unsigned int *pitch, unsigned int width,
			 unsigned int height, unsigned int elem) SHIM_ALIAS(w_v1_mem_alloc_pitch);
CUresult cuMemCreate(CUmemGenericAllocationHandle *handle, size_t size,
		     const CUmemAllocationProp *prop, unsigned long long flags)
	SHIM_ALIAS(w_mem_create);
CUresult cuMemRelease(CUmemGenericAllocationHandle handle) SHIM_ALIAS(w_mem_release);
CUresult cuMemMap(CUdeviceptr ptr, size_t size, size_t offset, CUmemGenericAllocationHandle handle,
		  unsigned long long flags) SHIM_ALIAS(w_mem_map);
CUresult cuMemUnmap(CUdeviceptr ptr, size_t size) SHIM_ALIAS(w_mem_unmap);
CUresult cuMemSetAccess(CUdeviceptr ptr, size_t size, const CUmemAccessDesc *desc, size_t count)
	SHIM_ALIAS(w_mem_set_access);
CUresult cuMemAddressFree(CUdeviceptr ptr, size_t size) SHIM_ALIAS(w_mem_address_free);
CUresult cuMemExportToShareableHandle(void *shareable, CUmemGenericAllocationHandle handle,
				      CUmemAllocationHandleType type, unsigned long long flags)
	SHIM_ALIAS(w_mem_export);
CUresult cuMemGetAllocationPropertiesFromHandle(CUmemAllocationProp *prop,
						CUmemGenericAllocationHandle handle)
	SHIM_ALIAS(w_mem_get_props);
CUresult cuMemRetainAllocationHandle(CUmemGenericAllocationHandle *handle, void *addr)
	SHIM_ALIAS(w_mem_retain);
CUresult cuMulticastBindMem(CUmemGenericAllocationHandle mc, size_t mc_offset,
			    CUmemGenericAllocationHandle mem, size_t mem_offset, size_t size,
			    unsigned long long flags) SHIM_ALIAS(w_multicast_bind_mem);

/* ---- what to hand out ---- */

/* Which lookup hands a wrapper out. */
enum shim_lookup {
	BY_DLSYM = 1, /* exported names, as dlsym is asked for them */
	BY_PROC = 2,  /* as cuGetProcAddress is asked (the driver picks the ABI by version) */
	BY_BOTH = BY_DLSYM | BY_PROC,
};

struct shim_wrap {
	const char *name;
	void *fn;
	int min_version; /* cuGetProcAddress: the CUDA version from which this ABI is returned */
	unsigned lookups;
};

static const struct shim_wrap wraps[] = {
	{ "cuGetProcAddress_v2", (void *)w_gpa_v2, 0, BY_DLSYM },
	{ "cuGetProcAddress", (void *)w_gpa_v1, 0, BY_DLSYM },
	{ "cuMemAlloc", (void *)w_mem_alloc, 3020, BY_PROC },
	{ "cuMemFree", (void *)w_mem_free, 3020, BY_PROC },
	{ "cuMemAllocPitch", (void *)w_mem_alloc_pitch, 3020, BY_PROC },
	{ "cuMemAlloc_v2", (void *)w_mem_alloc, 0, BY_BOTH },
	{ "cuMemFree_v2", (void *)w_mem_free, 0, BY_BOTH },
	{ "cuMemAllocPitch_v2", (void *)w_mem_alloc_pitch, 0, BY_BOTH },
	{ "cuMemCreate", (void *)w_mem_create, 0, BY_BOTH },
	{ "cuMemRelease", (void *)w_mem_release, 0, BY_BOTH },
	{ "cuMemMap", (void *)w_mem_map, 0, BY_BOTH },
	{ "cuMemUnmap", (void *)w_mem_unmap, 0, BY_BOTH },
	{ "cuMemSetAccess", (void *)w_mem_set_access, 0, BY_BOTH },
	{ "cuMemAddressFree", (void *)w_mem_address_free, 0, BY_BOTH },
	{ "cuMemExportToShareableHandle", (void *)w_mem_export, 0, BY_BOTH },
	{ "cuMemGetAllocationPropertiesFromHandle", (void *)w_mem_get_props, 0, BY_BOTH },
	{ "cuMemRetainAllocationHandle", (void *)w_mem_retain, 0, BY_BOTH },
	{ "cuMulticastBindMem", (void *)w_multicast_bind_mem, 0, BY_BOTH },
};

static const struct shim_wrap *find_wrap(enum shim_lookup lookup, const char *name)
{
	for (size_t i = 0; i < sizeof(wraps) / sizeof(wraps[0]); i++)
		if ((wraps[i].lookups & lookup) && strcmp(wraps[i].name, name) == 0)
			return &wraps[i];
	return NULL;
}

void *shim_entry_for_dlsym(const char *name, void *fn)
{
	const struct shim_wrap *w = find_wrap(BY_DLSYM, name);

	if (!w || shim_is_own(fn) || !shim_driver_adopt(fn))
		return fn;
	return w->fn;
}

void *shim_entry_for_proc(const char *name, int cuda_version, void *fn)
{
	const struct shim_wrap *w;

	/* PyTorch asks for cuGetProcAddress itself and uses that for everything after */
	if (strcmp(name, "cuGetProcAddress") == 0)
		return cuda_version >= 12000 ? (void *)w_gpa_v2 : (void *)w_gpa_v1;
	w = find_wrap(BY_PROC, name);
	if (!w || cuda_version < w->min_version)
		return fn;
	return w->fn;
}
