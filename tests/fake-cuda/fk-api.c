/* SPDX-License-Identifier: MIT */
/*
 * Fake CUDA driver: the exported entry points. Each one checks error injection, then enters the
 * API gate (blocks while the process is locked by a checkpoint), then calls the implementation
 * with fk.lock held. cuGetProcAddress maps base names onto these functions.
 */
#include "fk-internal.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define FK_RUN(name, call)                                                                        \
	do {                                                                                      \
		CUresult r_ = fk_enter(FK_EP_##name);                                             \
		if (r_ == CUDA_SUCCESS) {                                                         \
			r_ = (call);                                                              \
			fk_leave();                                                               \
		}                                                                                 \
		return r_;                                                                        \
	} while (0)

/* The versioned names real libcuda exports, as aliases of the same functions. */
#define FK_ALIAS(base) __attribute__((alias(#base), visibility("default")))

/* ---- initialization, version, errors ---- */

FK_API CUresult cuInit(unsigned int flags)
{
	return fk_init(flags);
}

FK_API CUresult cuDriverGetVersion(int *version)
{
	CUresult r = fk_inject(FK_EP_cuDriverGetVersion);

	if (r != CUDA_SUCCESS)
		return r;
	if (!version)
		return CUDA_ERROR_INVALID_VALUE;
	*version = FAKECUDA_DRIVER_VERSION;
	return CUDA_SUCCESS;
}

FK_API CUresult cuGetErrorString(CUresult error, const char **str)
{
	CUresult r = fk_inject(FK_EP_cuGetErrorString);

	if (r != CUDA_SUCCESS)
		return r;
	if (!str)
		return CUDA_ERROR_INVALID_VALUE;
	*str = fk_error_string(error);
	return *str ? CUDA_SUCCESS : CUDA_ERROR_INVALID_VALUE;
}

FK_API CUresult cuGetErrorName(CUresult error, const char **str)
{
	CUresult r = fk_inject(FK_EP_cuGetErrorName);

	if (r != CUDA_SUCCESS)
		return r;
	if (!str)
		return CUDA_ERROR_INVALID_VALUE;
	*str = fk_error_name(error);
	return *str ? CUDA_SUCCESS : CUDA_ERROR_INVALID_VALUE;
}

/* ---- devices ---- */

static CUresult device_get_count(int *count)
{
	if (!count)
		return CUDA_ERROR_INVALID_VALUE;
	*count = fk.cfg.gpus;
	return CUDA_SUCCESS;
}

static CUresult device_get(CUdevice *device, int ordinal)
{
	if (!device)
		return CUDA_ERROR_INVALID_VALUE;
	if (!fk_dev_valid(ordinal))
		return CUDA_ERROR_INVALID_DEVICE;
	*device = ordinal;
	return CUDA_SUCCESS;
}

static CUresult device_total_mem(size_t *bytes, CUdevice dev)
{
	if (!bytes)
		return CUDA_ERROR_INVALID_VALUE;
	if (!fk_dev_valid(dev))
		return CUDA_ERROR_INVALID_DEVICE;
	*bytes = fk.cfg.mem_bytes;
	return CUDA_SUCCESS;
}

FK_API CUresult cuDeviceGetCount(int *count)
{
	FK_RUN(cuDeviceGetCount, device_get_count(count));
}

FK_API CUresult cuDeviceGet(CUdevice *device, int ordinal)
{
	FK_RUN(cuDeviceGet, device_get(device, ordinal));
}

FK_API CUresult cuDeviceGetName(char *name, int len, CUdevice dev)
{
	FK_RUN(cuDeviceGetName, fk_device_get_name(name, len, dev));
}

FK_API CUresult cuDeviceGetUuid(CUuuid *uuid, CUdevice dev)
{
	FK_RUN(cuDeviceGetUuid, fk_device_get_uuid(uuid, dev));
}
FK_API CUresult cuDeviceGetUuid_v2(CUuuid *uuid, CUdevice dev) FK_ALIAS(cuDeviceGetUuid);

FK_API CUresult cuDeviceTotalMem(size_t *bytes, CUdevice dev)
{
	FK_RUN(cuDeviceTotalMem, device_total_mem(bytes, dev));
}
FK_API CUresult cuDeviceTotalMem_v2(size_t *bytes, CUdevice dev) FK_ALIAS(cuDeviceTotalMem);

FK_API CUresult cuDeviceGetAttribute(int *pi, int attrib, CUdevice dev)
{
	FK_RUN(cuDeviceGetAttribute, fk_device_get_attribute(pi, attrib, dev));
}

/* ---- contexts ---- */

FK_API CUresult cuDevicePrimaryCtxRetain(CUcontext *pctx, CUdevice dev)
{
	FK_RUN(cuDevicePrimaryCtxRetain, fk_ctx_retain(pctx, dev));
}

FK_API CUresult cuDevicePrimaryCtxRelease(CUdevice dev)
{
	FK_RUN(cuDevicePrimaryCtxRelease, fk_ctx_release(dev));
}
FK_API CUresult cuDevicePrimaryCtxRelease_v2(CUdevice dev)
	FK_ALIAS(cuDevicePrimaryCtxRelease);

FK_API CUresult cuCtxSetCurrent(CUcontext ctx)
{
	FK_RUN(cuCtxSetCurrent, fk_ctx_set_current(ctx));
}

FK_API CUresult cuCtxGetDevice(CUdevice *dev)
{
	FK_RUN(cuCtxGetDevice, fk_ctx_get_device(dev));
}

/* Synchronization sleeps FAKECUDA_SYNC_DELAY_MS "inside the driver", without fk.lock. */
static CUresult synchronize(CUresult valid)
{
	static unsigned skipped; /* under fk.lock */
	unsigned delay = fk.cfg.sync_delay_ms;

	if (valid != CUDA_SUCCESS || delay == 0)
		return valid;
	if (skipped < fk.cfg.sync_delay_skip) {
		skipped++;
		return valid;
	}
	pthread_mutex_unlock(&fk.lock);
	fk_sleep_us((uint64_t)delay * 1000);
	pthread_mutex_lock(&fk.lock);
	return CUDA_SUCCESS;
}

static CUresult current_ctx(void)
{
	int dev;

	return fk_current_dev(&dev);
}

FK_API CUresult cuCtxSynchronize(void)
{
	FK_RUN(cuCtxSynchronize, synchronize(current_ctx()));
}

static CUresult ctx_limit(CUlimit limit, size_t *get, const size_t *set)
{
	int dev;
	CUresult r = fk_current_dev(&dev);

	if (r != CUDA_SUCCESS)
		return r;
	if (limit != CU_LIMIT_STACK_SIZE)
		return CUDA_ERROR_UNSUPPORTED_LIMIT;
	if (get)
		*get = fk.stack_size[dev];
	else
		fk.stack_size[dev] = *set;
	return CUDA_SUCCESS;
}

FK_API CUresult cuCtxGetLimit(size_t *value, CUlimit limit)
{
	FK_RUN(cuCtxGetLimit, value ? ctx_limit(limit, value, NULL) : CUDA_ERROR_INVALID_VALUE);
}

FK_API CUresult cuCtxSetLimit(CUlimit limit, size_t value)
{
	FK_RUN(cuCtxSetLimit, ctx_limit(limit, NULL, &value));
}

/* ---- memory ---- */

static CUresult mem_get_info(size_t *free_bytes, size_t *total)
{
	size_t used;
	int dev;

	if (!free_bytes || !total)
		return CUDA_ERROR_INVALID_VALUE;
	if (fk_current_dev(&dev) != CUDA_SUCCESS)
		return CUDA_ERROR_INVALID_CONTEXT;
	used = fk_used_bytes(dev);
	*total = fk.cfg.mem_bytes;
	*free_bytes = used < fk.cfg.mem_bytes ? fk.cfg.mem_bytes - used : 0;
	return CUDA_SUCCESS;
}

FK_API CUresult cuMemGetInfo(size_t *free_bytes, size_t *total)
{
	FK_RUN(cuMemGetInfo, mem_get_info(free_bytes, total));
}
FK_API CUresult cuMemGetInfo_v2(size_t *free_bytes, size_t *total) FK_ALIAS(cuMemGetInfo);

FK_API CUresult cuMemHostAlloc(void **pp, size_t bytesize, unsigned int flags)
{
	FK_RUN(cuMemHostAlloc, fk_host_alloc(pp, bytesize, flags));
}

FK_API CUresult cuMemFreeHost(void *p)
{
	FK_RUN(cuMemFreeHost, fk_host_free(p));
}

FK_API CUresult cuMemAlloc(CUdeviceptr *dptr, size_t bytesize)
{
	FK_RUN(cuMemAlloc, fk_mem_alloc(dptr, bytesize));
}
FK_API CUresult cuMemAlloc_v2(CUdeviceptr *dptr, size_t bytesize) FK_ALIAS(cuMemAlloc);

FK_API CUresult cuMemFree(CUdeviceptr dptr)
{
	FK_RUN(cuMemFree, fk_mem_free(dptr));
}
FK_API CUresult cuMemFree_v2(CUdeviceptr dptr) FK_ALIAS(cuMemFree);

FK_API CUresult cuMemcpyHtoD(CUdeviceptr dst, const void *src, size_t bytes)
{
	FK_RUN(cuMemcpyHtoD, fk_copy_htod(dst, src, bytes));
}
FK_API CUresult cuMemcpyHtoD_v2(CUdeviceptr dst, const void *src, size_t bytes)
	FK_ALIAS(cuMemcpyHtoD);

FK_API CUresult cuMemcpyDtoH(void *dst, CUdeviceptr src, size_t bytes)
{
	FK_RUN(cuMemcpyDtoH, fk_copy_dtoh(dst, src, bytes));
}
FK_API CUresult cuMemcpyDtoH_v2(void *dst, CUdeviceptr src, size_t bytes)
	FK_ALIAS(cuMemcpyDtoH);

/* Asynchronous copies and memsets are done at once. */
static CUresult copy_htod_async(CUdeviceptr dst, const void *src, size_t bytes, CUstream s)
{
	CUresult r = fk_stream_check(s);

	return r != CUDA_SUCCESS ? r : fk_copy_htod(dst, src, bytes);
}

static CUresult copy_dtoh_async(void *dst, CUdeviceptr src, size_t bytes, CUstream s)
{
	CUresult r = fk_stream_check(s);

	return r != CUDA_SUCCESS ? r : fk_copy_dtoh(dst, src, bytes);
}

FK_API CUresult cuMemcpyHtoDAsync(CUdeviceptr dst, const void *src, size_t bytes, CUstream stream)
{
	FK_RUN(cuMemcpyHtoDAsync, copy_htod_async(dst, src, bytes, stream));
}
FK_API CUresult cuMemcpyHtoDAsync_v2(CUdeviceptr dst, const void *src, size_t bytes,
				     CUstream stream) FK_ALIAS(cuMemcpyHtoDAsync);

FK_API CUresult cuMemcpyDtoHAsync(void *dst, CUdeviceptr src, size_t bytes, CUstream stream)
{
	FK_RUN(cuMemcpyDtoHAsync, copy_dtoh_async(dst, src, bytes, stream));
}
FK_API CUresult cuMemcpyDtoHAsync_v2(void *dst, CUdeviceptr src, size_t bytes, CUstream stream)
	FK_ALIAS(cuMemcpyDtoHAsync);

FK_API CUresult cuMemsetD8(CUdeviceptr dst, unsigned char value, size_t n)
{
	FK_RUN(cuMemsetD8, fk_memset(dst, value, 1, n));
}
FK_API CUresult cuMemsetD8_v2(CUdeviceptr dst, unsigned char value, size_t n)
	FK_ALIAS(cuMemsetD8);

FK_API CUresult cuMemsetD32(CUdeviceptr dst, unsigned int value, size_t n)
{
	FK_RUN(cuMemsetD32, fk_memset(dst, value, 4, n));
}
FK_API CUresult cuMemsetD32_v2(CUdeviceptr dst, unsigned int value, size_t n)
	FK_ALIAS(cuMemsetD32);

/* ---- streams and events ---- */

FK_API CUresult cuStreamCreate(CUstream *stream, unsigned int flags)
{
	FK_RUN(cuStreamCreate, fk_stream_create(stream, flags));
}

FK_API CUresult cuStreamDestroy(CUstream stream)
{
	FK_RUN(cuStreamDestroy, fk_stream_destroy(stream));
}
FK_API CUresult cuStreamDestroy_v2(CUstream stream) FK_ALIAS(cuStreamDestroy);

FK_API CUresult cuStreamSynchronize(CUstream stream)
{
	FK_RUN(cuStreamSynchronize, synchronize(fk_stream_check(stream)));
}

FK_API CUresult cuEventCreate(CUevent *event, unsigned int flags)
{
	FK_RUN(cuEventCreate, fk_event_create(event, flags));
}

FK_API CUresult cuEventDestroy(CUevent event)
{
	FK_RUN(cuEventDestroy, fk_event_destroy(event));
}
FK_API CUresult cuEventDestroy_v2(CUevent event) FK_ALIAS(cuEventDestroy);

FK_API CUresult cuEventRecord(CUevent event, CUstream stream)
{
	FK_RUN(cuEventRecord, fk_event_record(event, stream));
}

FK_API CUresult cuEventSynchronize(CUevent event)
{
	FK_RUN(cuEventSynchronize, fk_event_sync(event));
}

/* ---- checkpoint API (caller side; not gated) ---- */

FK_API CUresult cuCheckpointProcessGetRestoreThreadId(int pid, int *tid)
{
	long long v = 0;
	CUresult r;

	if (!tid)
		return CUDA_ERROR_INVALID_VALUE;
	r = fk_remote(FK_EP_cuCheckpointProcessGetRestoreThreadId, pid, "tid\n", &v);
	if (r == CUDA_SUCCESS)
		*tid = (int)v;
	return r;
}

FK_API CUresult cuCheckpointProcessGetState(int pid, CUprocessState *state)
{
	long long v = 0;
	CUresult r;

	if (!state)
		return CUDA_ERROR_INVALID_VALUE;
	r = fk_remote(FK_EP_cuCheckpointProcessGetState, pid, "state\n", &v);
	if (r == CUDA_SUCCESS)
		*state = (CUprocessState)v;
	return r;
}

static int all_zero(const void *p, size_t len)
{
	const unsigned char *b = p;

	for (size_t i = 0; i < len; i++)
		if (b[i])
			return 0;
	return 1;
}

FK_API CUresult cuCheckpointProcessLock(int pid, CUcheckpointLockArgs *args)
{
	char cmd[32];

	if (args && (args->reserved0 || !all_zero(args->reserved1, sizeof(args->reserved1))))
		return CUDA_ERROR_INVALID_VALUE;
	snprintf(cmd, sizeof(cmd), "lock %u\n", args ? args->timeoutMs : 0);
	return fk_remote(FK_EP_cuCheckpointProcessLock, pid, cmd, NULL);
}

FK_API CUresult cuCheckpointProcessCheckpoint(int pid, CUcheckpointCheckpointArgs *args)
{
	if (args && !all_zero(args, sizeof(*args)))
		return CUDA_ERROR_INVALID_VALUE;
	return fk_remote(FK_EP_cuCheckpointProcessCheckpoint, pid, "checkpoint\n", NULL);
}

FK_API CUresult cuCheckpointProcessRestore(int pid, CUcheckpointRestoreArgs *args)
{
	char cmd[32 + FK_MAX_PAIRS * 68];
	unsigned n = args ? args->gpuPairsCount : 0;
	size_t off;

	if (args && (!all_zero(args->reserved, sizeof(args->reserved)) || args->reserved1 ||
		     n > FK_MAX_PAIRS || (n && !args->gpuPairs)))
		return CUDA_ERROR_INVALID_VALUE;
	off = (size_t)snprintf(cmd, sizeof(cmd), "restore %u", n);
	for (unsigned i = 0; i < n; i++) {
		const unsigned char *o = (const unsigned char *)args->gpuPairs[i].oldUuid.bytes;
		const unsigned char *w = (const unsigned char *)args->gpuPairs[i].newUuid.bytes;

		cmd[off++] = ' ';
		for (int k = 0; k < 16; k++, off += 2)
			snprintf(cmd + off, 3, "%02x", o[k]);
		cmd[off++] = ':';
		for (int k = 0; k < 16; k++, off += 2)
			snprintf(cmd + off, 3, "%02x", w[k]);
	}
	cmd[off++] = '\n';
	cmd[off] = '\0';
	return fk_remote(FK_EP_cuCheckpointProcessRestore, pid, cmd, NULL);
}

FK_API CUresult cuCheckpointProcessUnlock(int pid, CUcheckpointUnlockArgs *args)
{
	if (args && !all_zero(args, sizeof(*args)))
		return CUDA_ERROR_INVALID_VALUE;
	return fk_remote(FK_EP_cuCheckpointProcessUnlock, pid, "unlock\n", NULL);
}

FK_API CUresult cuFakeProcessGetMemUsed(int pid, int ordinal, size_t *used)
{
	long long v = 0;
	char cmd[32];
	CUresult r;

	if (!used || ordinal < 0 || ordinal >= FAKECUDA_MAX_GPUS)
		return CUDA_ERROR_INVALID_VALUE;
	snprintf(cmd, sizeof(cmd), "used %d\n", ordinal);
	r = fk_remote(FK_EP_cuFakeProcessGetMemUsed, pid, cmd, &v);
	if (r == CUDA_SUCCESS)
		*used = (size_t)v;
	return r;
}

FK_API CUresult cuFakeProcessGetDevices(int pid, unsigned int *mask)
{
	long long v = 0;
	CUresult r;

	if (!mask)
		return CUDA_ERROR_INVALID_VALUE;
	r = fk_remote(FK_EP_cuFakeProcessGetDevices, pid, "devs\n", &v);
	if (r == CUDA_SUCCESS)
		*mask = (unsigned)v;
	return r;
}

/* ---- virtual memory management ---- */

FK_API CUresult cuMemAddressReserve(CUdeviceptr *ptr, size_t size, size_t alignment,
				    CUdeviceptr addr, unsigned long long flags)
{
	FK_RUN(cuMemAddressReserve, fk_va_reserve(ptr, size, alignment, addr, flags));
}

FK_API CUresult cuMemAddressFree(CUdeviceptr ptr, size_t size)
{
	FK_RUN(cuMemAddressFree, fk_va_free(ptr, size));
}

FK_API CUresult cuMemCreate(CUmemGenericAllocationHandle *handle, size_t size,
			    const CUmemAllocationProp *prop, unsigned long long flags)
{
	FK_RUN(cuMemCreate, fk_phys_create(handle, size, prop, flags));
}

FK_API CUresult cuMemRelease(CUmemGenericAllocationHandle handle)
{
	FK_RUN(cuMemRelease, fk_phys_release(handle));
}

FK_API CUresult cuMemMap(CUdeviceptr ptr, size_t size, size_t offset,
			 CUmemGenericAllocationHandle handle, unsigned long long flags)
{
	FK_RUN(cuMemMap, fk_map(ptr, size, offset, handle, flags));
}

FK_API CUresult cuMemUnmap(CUdeviceptr ptr, size_t size)
{
	FK_RUN(cuMemUnmap, fk_unmap(ptr, size));
}

FK_API CUresult cuMemSetAccess(CUdeviceptr ptr, size_t size, const CUmemAccessDesc *desc,
			       size_t count)
{
	FK_RUN(cuMemSetAccess, fk_set_access(ptr, size, desc, count));
}

FK_API CUresult cuMemExportToShareableHandle(void *shareable, CUmemGenericAllocationHandle handle,
					     CUmemAllocationHandleType type,
					     unsigned long long flags)
{
	FK_RUN(cuMemExportToShareableHandle, fk_phys_export(shareable, handle, type, flags));
}

FK_API CUresult cuMemImportFromShareableHandle(CUmemGenericAllocationHandle *handle,
					       void *os_handle, CUmemAllocationHandleType type)
{
	FK_RUN(cuMemImportFromShareableHandle, fk_phys_import(handle, os_handle, type));
}

FK_API CUresult cuMemGetAllocationGranularity(size_t *granularity, const CUmemAllocationProp *prop,
					      CUmemAllocationGranularity_flags option)
{
	FK_RUN(cuMemGetAllocationGranularity, fk_granularity(granularity, prop, (int)option));
}

/* ---- modules and kernels: the daemon's chunk scan only ---- */

FK_API CUresult cuModuleLoadData(CUmodule *module, const void *image)
{
	FK_RUN(cuModuleLoadData, fk_module_load(module, image));
}

FK_API CUresult cuModuleUnload(CUmodule module)
{
	FK_RUN(cuModuleUnload, fk_module_unload(module));
}

FK_API CUresult cuModuleGetFunction(CUfunction *func, CUmodule module, const char *name)
{
	FK_RUN(cuModuleGetFunction, fk_module_get_function(func, module, name));
}

/* Kernels run at once, like the asynchronous copies. */
static CUresult launch(CUfunction f, unsigned gx, unsigned gy, unsigned gz, unsigned bx,
		       CUstream s, void **params, void **extra)
{
	CUresult r = fk_stream_check(s);

	if (r != CUDA_SUCCESS)
		return r;
	if (extra)
		return CUDA_ERROR_INVALID_VALUE;
	return fk_launch(f, gx, gy, gz, bx, params);
}

FK_API CUresult cuLaunchKernel(CUfunction f, unsigned int grid_x, unsigned int grid_y,
			       unsigned int grid_z, unsigned int block_x, unsigned int block_y,
			       unsigned int block_z, unsigned int shared_bytes, CUstream stream,
			       void **params, void **extra)
{
	(void)block_y;
	(void)block_z;
	(void)shared_bytes;
	FK_RUN(cuLaunchKernel, launch(f, grid_x, grid_y, grid_z, block_x, stream, params, extra));
}

static CUresult memset_async(CUdeviceptr dst, unsigned char value, size_t n, CUstream s)
{
	CUresult r = fk_stream_check(s);

	return r != CUDA_SUCCESS ? r : fk_memset(dst, value, 1, n);
}

FK_API CUresult cuMemsetD8Async(CUdeviceptr dst, unsigned char value, size_t n, CUstream stream)
{
	FK_RUN(cuMemsetD8Async, memset_async(dst, value, n, stream));
}

/* ---- cuGetProcAddress ---- */

static const struct {
	const char *name;
	void *fn;
} fk_procs[] = {
#define FK_PROC(name, params) { #name, (void *)name },
	GW_CUDA_REQUIRED_ENTRY_POINTS(FK_PROC)
	GW_CUDA_OPTIONAL_ENTRY_POINTS(FK_PROC)
	FK_EXTRA_ENTRY_POINTS(FK_PROC)
#undef FK_PROC
};

static int env_flag(const char *name)
{
	const char *s = getenv(name);

	return s && strcmp(s, "1") == 0;
}

static CUresult get_proc(const char *symbol, void **pfn, int cuda_version,
			 CUdriverProcAddressQueryResult *status)
{
	CUdriverProcAddressQueryResult st = CU_GET_PROC_ADDRESS_SYMBOL_NOT_FOUND;
	void *fn = NULL;

	if (!symbol || !pfn)
		return CUDA_ERROR_INVALID_VALUE;
	if (strcmp(symbol, "cuGetProcAddress") == 0) {
		/* hands itself back, as PyTorch expects */
		fn = cuda_version >= 12000 ? (void *)cuGetProcAddress_v2 : (void *)cuGetProcAddress;
	} else {
		for (size_t i = 0; i < sizeof(fk_procs) / sizeof(fk_procs[0]); i++) {
			if (strcmp(fk_procs[i].name, symbol) == 0) {
				fn = fk_procs[i].fn;
				break;
			}
		}
	}
	if (fn && strncmp(symbol, "cuCheckpoint", 12) == 0) {
		/* FAKECUDA_NO_CHECKPOINT (read here: loaders resolve before cuInit) */
		if (env_flag(FAKECUDA_ENV_NO_CHECKPOINT)) {
			fn = NULL;
		} else if (cuda_version < 12080) {
			fn = NULL;
			st = CU_GET_PROC_ADDRESS_VERSION_NOT_SUFFICIENT;
		}
	}
	if (fn)
		st = CU_GET_PROC_ADDRESS_SUCCESS;
	*pfn = fn;
	if (status)
		*status = st;
	return fn ? CUDA_SUCCESS : CUDA_ERROR_NOT_FOUND;
}

FK_API CUresult cuGetProcAddress_v2(const char *symbol, void **pfn, int cuda_version,
				    cuuint64_t flags, CUdriverProcAddressQueryResult *status)
{
	(void)flags;
	return get_proc(symbol, pfn, cuda_version, status);
}

/* The real libcuda's v1 has no status argument. */
FK_API CUresult cuGetProcAddress(const char *symbol, void **pfn, int cuda_version,
				 cuuint64_t flags)
{
	(void)flags;
	return get_proc(symbol, pfn, cuda_version, NULL);
}
