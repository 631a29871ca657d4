/* SPDX-License-Identifier: MIT */
/*
 * The subset of the CUDA driver ABI that gpu-warmd uses, written out so that the project builds
 * without the CUDA toolkit. Every type, constant and struct layout here matches NVIDIA's cuda.h
 * (CUDA 12.8 and 13.x); tests/unit/test-cuda-abi.c checks that against cuda.h when one is installed.
 *
 * Entry points are resolved at run time through cuGetProcAddress (see gw-cuda.h); no symbol of
 * libcuda is ever linked.
 */
#ifndef GW_CUDA_ABI_H
#define GW_CUDA_ABI_H

#include <stddef.h>
#include <stdint.h>

#define GW_CUDAAPI

typedef int CUresult;
typedef int CUdevice;
typedef uint64_t cuuint64_t;
typedef uint64_t CUdeviceptr;
typedef struct CUctx_st *CUcontext;
typedef struct CUstream_st *CUstream;
typedef struct CUevent_st *CUevent;
typedef struct CUmod_st *CUmodule;
typedef struct CUfunc_st *CUfunction;
typedef uint64_t CUmemGenericAllocationHandle;

enum {
	CUDA_SUCCESS = 0,
	CUDA_ERROR_INVALID_VALUE = 1,
	CUDA_ERROR_OUT_OF_MEMORY = 2,
	CUDA_ERROR_NOT_INITIALIZED = 3,
	CUDA_ERROR_DEINITIALIZED = 4,
	CUDA_ERROR_NO_DEVICE = 100,
	CUDA_ERROR_INVALID_DEVICE = 101,
	CUDA_ERROR_INVALID_IMAGE = 200,
	CUDA_ERROR_INVALID_CONTEXT = 201,
	CUDA_ERROR_ALREADY_MAPPED = 208,
	CUDA_ERROR_INVALID_PTX = 218,
	CUDA_ERROR_OPERATING_SYSTEM = 304,
	CUDA_ERROR_INVALID_HANDLE = 400,
	CUDA_ERROR_ILLEGAL_STATE = 401,
	CUDA_ERROR_NOT_FOUND = 500,
	CUDA_ERROR_NOT_READY = 600,
	CUDA_ERROR_ILLEGAL_ADDRESS = 700,
	CUDA_ERROR_NOT_PERMITTED = 800,
	CUDA_ERROR_UNSUPPORTED_LIMIT = 215,
	CUDA_ERROR_NOT_SUPPORTED = 801,
	CUDA_ERROR_TIMEOUT = 909,
	CUDA_ERROR_UNKNOWN = 999,
};

typedef struct CUuuid_st {
	char bytes[16];
} CUuuid;

/* cuDeviceGetAttribute */
enum {
	CU_DEVICE_ATTRIBUTE_PCI_BUS_ID = 33,
	CU_DEVICE_ATTRIBUTE_PCI_DEVICE_ID = 34,
	CU_DEVICE_ATTRIBUTE_PCI_DOMAIN_ID = 50,
	CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR = 75,
	CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MINOR = 76,
	CU_DEVICE_ATTRIBUTE_VIRTUAL_MEMORY_MANAGEMENT_SUPPORTED = 102,
};

#define CU_MEMHOSTALLOC_PORTABLE 0x01
#define CU_STREAM_NON_BLOCKING 0x1
#define CU_EVENT_BLOCKING_SYNC 0x1
#define CU_EVENT_DISABLE_TIMING 0x2

/* cuGetProcAddress */
typedef enum {
	CU_GET_PROC_ADDRESS_DEFAULT = 0,
	CU_GET_PROC_ADDRESS_LEGACY_STREAM = 1 << 0,
	CU_GET_PROC_ADDRESS_PER_THREAD_DEFAULT_STREAM = 1 << 1,
} CUgetProcAddress_flags;

typedef enum {
	CU_GET_PROC_ADDRESS_SUCCESS = 0,
	CU_GET_PROC_ADDRESS_SYMBOL_NOT_FOUND = 1,
	CU_GET_PROC_ADDRESS_VERSION_NOT_SUFFICIENT = 2,
} CUdriverProcAddressQueryResult;

/* Checkpoint API (CUDA 12.8+) */
/* cuCtxGetLimit / cuCtxSetLimit: only the per-thread stack size is used here (it sizes the
 * context's local-memory reservation). */
typedef enum {
	CU_LIMIT_STACK_SIZE = 0x00,
} CUlimit;

typedef enum {
	CU_PROCESS_STATE_RUNNING = 0,
	CU_PROCESS_STATE_LOCKED = 1,
	CU_PROCESS_STATE_CHECKPOINTED = 2,
	CU_PROCESS_STATE_FAILED = 3,
} CUprocessState;

typedef struct CUcheckpointLockArgs_st {
	unsigned int timeoutMs;
	unsigned int reserved0;
	cuuint64_t reserved1[7];
} CUcheckpointLockArgs;

typedef struct CUcheckpointCheckpointArgs_st {
	cuuint64_t reserved[8];
} CUcheckpointCheckpointArgs;

typedef struct CUcheckpointGpuPair_st {
	CUuuid oldUuid;
	CUuuid newUuid;
} CUcheckpointGpuPair;

typedef struct CUcheckpointRestoreArgs_st {
	CUcheckpointGpuPair *gpuPairs;
	unsigned int gpuPairsCount;
	char reserved[52 - sizeof(CUcheckpointGpuPair *)];
	cuuint64_t reserved1;
} CUcheckpointRestoreArgs;

typedef struct CUcheckpointUnlockArgs_st {
	cuuint64_t reserved[8];
} CUcheckpointUnlockArgs;

/* Virtual memory management */
typedef enum {
	CU_MEM_HANDLE_TYPE_NONE = 0x0,
	CU_MEM_HANDLE_TYPE_POSIX_FILE_DESCRIPTOR = 0x1,
} CUmemAllocationHandleType;

typedef enum {
	CU_MEM_ACCESS_FLAGS_PROT_NONE = 0x0,
	CU_MEM_ACCESS_FLAGS_PROT_READ = 0x1,
	CU_MEM_ACCESS_FLAGS_PROT_READWRITE = 0x3,
} CUmemAccess_flags;

typedef enum {
	CU_MEM_LOCATION_TYPE_INVALID = 0x0,
	CU_MEM_LOCATION_TYPE_DEVICE = 0x1,
} CUmemLocationType;

typedef enum {
	CU_MEM_ALLOCATION_TYPE_INVALID = 0x0,
	CU_MEM_ALLOCATION_TYPE_PINNED = 0x1,
} CUmemAllocationType;

typedef enum {
	CU_MEM_ALLOC_GRANULARITY_MINIMUM = 0x0,
	CU_MEM_ALLOC_GRANULARITY_RECOMMENDED = 0x1,
} CUmemAllocationGranularity_flags;

typedef struct CUmemLocation_st {
	CUmemLocationType type;
	int id;
} CUmemLocation;

typedef struct CUmemAllocationProp_st {
	CUmemAllocationType type;
	CUmemAllocationHandleType requestedHandleTypes;
	CUmemLocation location;
	void *win32HandleMetaData;
	struct {
		unsigned char compressionType;
		unsigned char gpuDirectRDMACapable;
		unsigned short usage;
		unsigned char reserved[4];
	} allocFlags;
} CUmemAllocationProp;

typedef struct CUmemAccessDesc_st {
	CUmemLocation location;
	CUmemAccess_flags flags;
} CUmemAccessDesc;

/*
 * Entry point signatures. X(name, return, params) lists every entry point gw_cuda resolves:
 * name is the base name given to cuGetProcAddress (the driver picks the versioned ABI, e.g.
 * cuMemAlloc -> cuMemAlloc_v2, from the CUDA version passed). Required ones fail the load when
 * missing; optional ones are left NULL.
 */
#define GW_CUDA_REQUIRED_ENTRY_POINTS(X)                                                          \
	X(cuInit, (unsigned int flags))                                                           \
	X(cuDriverGetVersion, (int *version))                                                     \
	X(cuGetErrorString, (CUresult error, const char **str))                                   \
	X(cuGetErrorName, (CUresult error, const char **str))                                     \
	X(cuDeviceGetCount, (int *count))                                                         \
	X(cuDeviceGet, (CUdevice * device, int ordinal))                                          \
	X(cuDeviceGetName, (char *name, int len, CUdevice dev))                                   \
	X(cuDeviceGetUuid, (CUuuid * uuid, CUdevice dev))                                         \
	X(cuDeviceTotalMem, (size_t * bytes, CUdevice dev))                                       \
	X(cuDeviceGetAttribute, (int *pi, int attrib, CUdevice dev))                              \
	X(cuDevicePrimaryCtxRetain, (CUcontext * pctx, CUdevice dev))                             \
	X(cuDevicePrimaryCtxRelease, (CUdevice dev))                                              \
	X(cuCtxSetCurrent, (CUcontext ctx))                                                       \
	X(cuCtxSynchronize, (void))                                                               \
	X(cuMemGetInfo, (size_t * free, size_t * total))                                          \
	X(cuMemHostAlloc, (void **pp, size_t bytesize, unsigned int flags))                       \
	X(cuMemFreeHost, (void *p))                                                               \
	X(cuMemAlloc, (CUdeviceptr * dptr, size_t bytesize))                                      \
	X(cuMemFree, (CUdeviceptr dptr))                                                          \
	X(cuMemcpyHtoD, (CUdeviceptr dst, const void *src, size_t bytes))                         \
	X(cuMemcpyDtoH, (void *dst, CUdeviceptr src, size_t bytes))                               \
	X(cuMemcpyHtoDAsync, (CUdeviceptr dst, const void *src, size_t bytes, CUstream stream))   \
	X(cuMemcpyDtoHAsync, (void *dst, CUdeviceptr src, size_t bytes, CUstream stream))         \
	X(cuMemsetD8, (CUdeviceptr dst, unsigned char value, size_t n))                           \
	X(cuMemsetD32, (CUdeviceptr dst, unsigned int value, size_t n))                           \
	X(cuStreamCreate, (CUstream * stream, unsigned int flags))                                \
	X(cuStreamDestroy, (CUstream stream))                                                     \
	X(cuStreamSynchronize, (CUstream stream))                                                 \
	X(cuEventCreate, (CUevent * event, unsigned int flags))                                   \
	X(cuEventDestroy, (CUevent event))                                                        \
	X(cuEventRecord, (CUevent event, CUstream stream))                                        \
	X(cuEventSynchronize, (CUevent event))

/* Checkpoint (driver >= 550 / CUDA 12.8), VMM and kernel-launch entry points: optional, checked
 * before use. */
#define GW_CUDA_OPTIONAL_ENTRY_POINTS(X)                                                          \
	X(cuCheckpointProcessGetRestoreThreadId, (int pid, int *tid))                             \
	X(cuCheckpointProcessGetState, (int pid, CUprocessState *state))                          \
	X(cuCheckpointProcessLock, (int pid, CUcheckpointLockArgs *args))                         \
	X(cuCheckpointProcessCheckpoint, (int pid, CUcheckpointCheckpointArgs *args))             \
	X(cuCheckpointProcessRestore, (int pid, CUcheckpointRestoreArgs *args))                   \
	X(cuCheckpointProcessUnlock, (int pid, CUcheckpointUnlockArgs *args))                     \
	X(cuMemAddressReserve, (CUdeviceptr * ptr, size_t size, size_t alignment,                 \
				CUdeviceptr addr, unsigned long long flags))                      \
	X(cuMemAddressFree, (CUdeviceptr ptr, size_t size))                                       \
	X(cuMemCreate, (CUmemGenericAllocationHandle * handle, size_t size,                       \
			const CUmemAllocationProp *prop, unsigned long long flags))               \
	X(cuMemRelease, (CUmemGenericAllocationHandle handle))                                    \
	X(cuMemMap, (CUdeviceptr ptr, size_t size, size_t offset,                                 \
		     CUmemGenericAllocationHandle handle, unsigned long long flags))              \
	X(cuMemUnmap, (CUdeviceptr ptr, size_t size))                                             \
	X(cuMemSetAccess, (CUdeviceptr ptr, size_t size, const CUmemAccessDesc *desc,             \
			   size_t count))                                                         \
	X(cuMemExportToShareableHandle, (void *shareable, CUmemGenericAllocationHandle handle,    \
					 CUmemAllocationHandleType type,                          \
					 unsigned long long flags))                               \
	X(cuMemImportFromShareableHandle, (CUmemGenericAllocationHandle * handle,                 \
					   void *os_handle, CUmemAllocationHandleType type))      \
	X(cuMemGetAllocationGranularity, (size_t * granularity, const CUmemAllocationProp *prop,  \
					  CUmemAllocationGranularity_flags option))                \
	X(cuModuleLoadData, (CUmodule * module, const void *image))                               \
	X(cuModuleUnload, (CUmodule module))                                                      \
	X(cuModuleGetFunction, (CUfunction * func, CUmodule module, const char *name))            \
	X(cuLaunchKernel, (CUfunction f, unsigned int grid_x, unsigned int grid_y,                \
			   unsigned int grid_z, unsigned int block_x, unsigned int block_y,       \
			   unsigned int block_z, unsigned int shared_bytes, CUstream stream,      \
			   void **params, void **extra))                                          \
	X(cuMemsetD8Async, (CUdeviceptr dst, unsigned char value, size_t n, CUstream stream))

typedef CUresult (*gw_cuGetProcAddress_fn)(const char *symbol, void **pfn, int cuda_version,
					   cuuint64_t flags,
					   CUdriverProcAddressQueryResult *status);

#endif /* GW_CUDA_ABI_H */
