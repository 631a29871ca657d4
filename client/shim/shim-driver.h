/* SPDX-License-Identifier: MIT */
/*
 * The CUDA driver behind the app, as the shim calls it. Bound once per process to the library
 * the app's own lookups return (dlsym on its handle, cuGetProcAddress), or for direct calls to
 * the library already loaded ($GPUWARM_CUDA_LIBRARY or libcuda.so.1). Entry points are resolved
 * through that library's cuGetProcAddress at the CUDA 12.0 ABI (CUDA 13.0 changed
 * cuCtxGetDevice and cuCtxSynchronize), falling back to the exported name; a pointer into the
 * shim itself (a driver resolving its own exports through the global scope) is never taken.
 */
#ifndef SHIM_DRIVER_H
#define SHIM_DRIVER_H

#include <stdbool.h>

#include "gw-cuda-abi.h"
#include "shim.h"

#define SHIM_DRIVER_ABI_VERSION 12000

/* X(base name, exported name, params). */
#define SHIM_DRIVER_ENTRY_POINTS(X)                                                               \
	X(cuDriverGetVersion, "cuDriverGetVersion", (int *version))                               \
	X(cuCtxGetDevice, "cuCtxGetDevice", (CUdevice * dev))                                     \
	X(cuCtxSetCurrent, "cuCtxSetCurrent", (CUcontext ctx))                                    \
	X(cuCtxSynchronize, "cuCtxSynchronize", (void))                                           \
	X(cuCtxGetLimit, "cuCtxGetLimit", (size_t * value, CUlimit limit))                        \
	X(cuCtxSetLimit, "cuCtxSetLimit", (CUlimit limit, size_t value))                          \
	X(cuDevicePrimaryCtxRetain, "cuDevicePrimaryCtxRetain", (CUcontext * ctx, CUdevice dev))  \
	X(cuDevicePrimaryCtxRelease, "cuDevicePrimaryCtxRelease_v2", (CUdevice dev))              \
	X(cuDeviceGetUuid, "cuDeviceGetUuid", (CUuuid * uuid, CUdevice dev))                      \
	X(cuMemAlloc, "cuMemAlloc_v2", (CUdeviceptr * dptr, size_t size))                         \
	X(cuMemFree, "cuMemFree_v2", (CUdeviceptr dptr))                                          \
	X(cuMemAllocPitch, "cuMemAllocPitch_v2",                                                  \
	  (CUdeviceptr * dptr, size_t *pitch, size_t width, size_t height, unsigned int elem))    \
	X(cuMemAddressReserve, "cuMemAddressReserve",                                             \
	  (CUdeviceptr * ptr, size_t size, size_t align, CUdeviceptr addr,                        \
	   unsigned long long flags))                                                             \
	X(cuMemAddressFree, "cuMemAddressFree", (CUdeviceptr ptr, size_t size))                   \
	X(cuMemCreate, "cuMemCreate",                                                             \
	  (CUmemGenericAllocationHandle * handle, size_t size, const CUmemAllocationProp *prop,  \
	   unsigned long long flags))                                                             \
	X(cuMemRelease, "cuMemRelease", (CUmemGenericAllocationHandle handle))                    \
	X(cuMemMap, "cuMemMap",                                                                   \
	  (CUdeviceptr ptr, size_t size, size_t offset, CUmemGenericAllocationHandle handle,      \
	   unsigned long long flags))                                                             \
	X(cuMemUnmap, "cuMemUnmap", (CUdeviceptr ptr, size_t size))                               \
	X(cuMemSetAccess, "cuMemSetAccess",                                                       \
	  (CUdeviceptr ptr, size_t size, const CUmemAccessDesc *desc, size_t count))              \
	X(cuMemExportToShareableHandle, "cuMemExportToShareableHandle",                           \
	  (void *shareable, CUmemGenericAllocationHandle handle, CUmemAllocationHandleType type,  \
	   unsigned long long flags))                                                             \
	X(cuMemImportFromShareableHandle, "cuMemImportFromShareableHandle",                       \
	  (CUmemGenericAllocationHandle * handle, void *os_handle,                                \
	   CUmemAllocationHandleType type))                                                       \
	X(cuMemGetAllocationGranularity, "cuMemGetAllocationGranularity",                         \
	  (size_t * granularity, const CUmemAllocationProp *prop,                                 \
	   CUmemAllocationGranularity_flags option))                                              \
	X(cuMemGetAllocationPropertiesFromHandle, "cuMemGetAllocationPropertiesFromHandle",       \
	  (CUmemAllocationProp * prop, CUmemGenericAllocationHandle handle))                      \
	X(cuMemRetainAllocationHandle, "cuMemRetainAllocationHandle",                             \
	  (CUmemGenericAllocationHandle * handle, void *addr))                                    \
	X(cuMulticastBindMem, "cuMulticastBindMem",                                               \
	  (CUmemGenericAllocationHandle mc, size_t mc_offset, CUmemGenericAllocationHandle mem,   \
	   size_t mem_offset, size_t size, unsigned long long flags))

typedef CUresult (*shim_gpa_v1_fn)(const char *symbol, void **pfn, int cuda_version,
				   cuuint64_t flags);

struct shim_driver {
	void *dl;   /* our own reference to the library */
	void *base; /* its load address */
	gw_cuGetProcAddress_fn gpa_v2;
	shim_gpa_v1_fn gpa_v1;
	int version; /* cuDriverGetVersion() */
	bool vmm;    /* everything a conversion and the agent need is there */
	/* the CUDA 2.x ABI of the unsuffixed exports: 32-bit device pointers, never converted */
	CUresult (*v1_cuMemAlloc)(unsigned int *dptr, unsigned int size);
	CUresult (*v1_cuMemFree)(unsigned int dptr);
	CUresult (*v1_cuMemAllocPitch)(unsigned int *dptr, unsigned int *pitch, unsigned int width,
				       unsigned int height, unsigned int elem);
#define SHIM_DRIVER_MEMBER(name, sym, params) CUresult (*name) params;
	SHIM_DRIVER_ENTRY_POINTS(SHIM_DRIVER_MEMBER)
#undef SHIM_DRIVER_MEMBER
};

/*
 * fn came out of a real dlsym on a handle the app holds: true when it belongs to the driver the
 * shim is bound to (binding it first when none is yet and fn's library has cuGetProcAddress).
 */
bool shim_driver_adopt(void *fn) SHIM_HIDDEN;
/* The bound and resolved driver, binding it for a direct call if needed; NULL without one. */
const struct shim_driver *shim_driver_get(void) SHIM_HIDDEN;
void shim_driver_atfork_prepare(void) SHIM_HIDDEN;
void shim_driver_atfork_parent(void) SHIM_HIDDEN;
void shim_driver_atfork_child(void) SHIM_HIDDEN;

#endif
