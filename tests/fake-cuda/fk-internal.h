/* SPDX-License-Identifier: MIT */
/*
 * Internals of the fake CUDA driver. A driver is process-wide state by nature, so unlike the
 * project's libraries this one keeps a single global `fk`, guarded by fk.lock.
 */
#ifndef FK_INTERNAL_H
#define FK_INTERNAL_H

#include <limits.h>
#include <pthread.h>
#include <stdint.h>
#include <sys/types.h>
#include <sys/un.h>

#include "fakecuda.h"

#define FK_API __attribute__((visibility("default")))

/* Fake device address space: never host addresses, looked up in tables. */
#define FK_VA_BASE 0x7e0000000000ull
#define FK_VA_LIMIT 0x7f0000000000ull
#define FK_ALLOC_ALIGN (64u << 10)    /* cuMemAlloc alignment, and a guard gap after each */
#define FK_MAX_FAIL_RULES 32
#define FK_MAX_PAIRS 64
#define FK_POISON 0xDB

/* Entry points the fake adds to gw-cuda's lists (real driver names, plus fake-only queries). */
#define FK_EXTRA_ENTRY_POINTS(X)                                                                  \
	X(cuCtxGetDevice, (CUdevice * dev))                                                       \
	X(cuCtxGetLimit, (size_t * value, CUlimit limit))                                         \
	X(cuCtxSetLimit, (CUlimit limit, size_t value))                                           \
	X(cuFakeProcessGetMemUsed, (int pid, int ordinal, size_t *used))                          \
	X(cuFakeProcessGetDevices, (int pid, unsigned int *mask))

#define FK_DEFAULT_STACK_SIZE 1024 /* bytes per thread, the real driver's default */

/* One index per entry point, for FAKECUDA_FAIL call counting. */
enum fk_ep {
#define FK_EP_ENUM(name, params) FK_EP_##name,
	GW_CUDA_REQUIRED_ENTRY_POINTS(FK_EP_ENUM)
	GW_CUDA_OPTIONAL_ENTRY_POINTS(FK_EP_ENUM)
	FK_EXTRA_ENTRY_POINTS(FK_EP_ENUM)
#undef FK_EP_ENUM
	FK_EP_COUNT
};
extern const char *const fk_ep_names[FK_EP_COUNT];

/* Prototypes of every exported entry point, checked against the ABI header's signatures. */
#define FK_PROTO(name, params) FK_API CUresult name params;
GW_CUDA_REQUIRED_ENTRY_POINTS(FK_PROTO)
GW_CUDA_OPTIONAL_ENTRY_POINTS(FK_PROTO)
FK_EXTRA_ENTRY_POINTS(FK_PROTO)
#undef FK_PROTO
FK_API CUresult cuGetProcAddress_v2(const char *symbol, void **pfn, int cuda_version,
				    cuuint64_t flags, CUdriverProcAddressQueryResult *status);
FK_API CUresult cuGetProcAddress(const char *symbol, void **pfn, int cuda_version,
				 cuuint64_t flags);

struct CUctx_st {
	int dev;           /* changes when a restore remaps devices */
	unsigned refcount; /* primary context retains; 0: inactive */
};

struct CUstream_st {
	struct CUstream_st *next;
	unsigned flags;
};

struct CUevent_st {
	struct CUevent_st *next;
	unsigned flags;
	int recorded;
};

/* cuMemAlloc memory */
struct fk_alloc {
	struct fk_alloc *next;
	CUdeviceptr va;
	size_t size;
	int dev;
	unsigned char *host;  /* live storage; NULL while checkpointed */
	unsigned char *saved; /* checkpoint copy */
};

/* cuMemCreate / cuMemImportFromShareableHandle physical memory */
struct fk_phys {
	struct fk_phys *next;
	CUmemGenericAllocationHandle id;
	size_t size;
	int dev;
	int fd;              /* memfd, or -1 (no shareable handle requested) */
	ino_t ino;           /* memfd inode, 0 without one */
	pid_t origin;        /* the process that created it */
	unsigned char *host; /* MAP_SHARED view of the memory */
	unsigned char *saved;
	int released;        /* cuMemRelease called; lives on while mapped */
	int imported;        /* from cuMemImportFromShareableHandle: not exportable again */
	unsigned maps;
};

struct fk_map {
	struct fk_map *next;
	CUdeviceptr va;
	size_t size;
	struct fk_phys *phys;
	size_t offset;
	unsigned access; /* CUmemAccess_flags */
};

struct fk_resv {
	struct fk_resv *next;
	CUdeviceptr va;
	size_t size;
	struct fk_map *maps;
};

struct fk_host {
	struct fk_host *next;
	void *p;
	size_t size;
};

struct fk_fail_rule {
	enum fk_ep ep;
	CUresult code;
	unsigned long nth; /* 0: every call */
};

struct fk_config {
	int gpus;
	size_t mem_bytes;
	int no_device;
	unsigned sync_delay_ms;
	unsigned sync_delay_skip; /* the first n synchronizations are not delayed */
	unsigned pin_us_per_mib;
	char state_dir[PATH_MAX];
	struct fk_fail_rule rules[FK_MAX_FAIL_RULES];
	unsigned nrules;
};

struct fk_state {
	pthread_mutex_t lock;
	pthread_cond_t cond; /* process state, gate and restore-thread start-up changes */
	int initialized;
	int config_loaded;
	CUresult init_result;
	unsigned gen; /* bumped by every fresh cuInit; stales thread-local contexts */
	pid_t pid;    /* the process that ran cuInit */
	struct fk_config cfg;
	unsigned long calls[FK_EP_COUNT];

	struct CUctx_st ctx_objs[FAKECUDA_MAX_GPUS];
	struct CUctx_st *primary[FAKECUDA_MAX_GPUS];
	size_t stack_size[FAKECUDA_MAX_GPUS]; /* CU_LIMIT_STACK_SIZE of each primary context */
	struct fk_alloc *allocs;
	struct fk_phys *phys;
	struct fk_resv *resvs;
	struct fk_host *hosts;
	struct CUstream_st *streams;
	struct CUevent_st *events;
	CUdeviceptr va_next;
	uint64_t next_handle;

	/* checkpoint state machine and the API gate */
	CUprocessState pstate;
	int locking;         /* a lock waits for the driver to drain: new calls block */
	unsigned in_driver;  /* threads inside a gated entry point */
	int trap;            /* foreign memory was mapped at checkpoint: restore fails */
	unsigned ckpt_devs;  /* devices with a context at checkpoint time */

	/* restore thread */
	int listen_fd;
	pid_t restore_tid;
	int thread_started;
	char sock_path[sizeof(((struct sockaddr_un *)0)->sun_path)];
};

extern struct fk_state fk;

/* fk-core.c */
CUresult fk_enter(enum fk_ep ep);
void fk_leave(void);
CUresult fk_check(enum fk_ep ep);
CUresult fk_inject(enum fk_ep ep);
CUresult fk_init(unsigned int flags);
CUresult fk_current_dev(int *ret_dev);
int fk_dev_valid(int dev);
size_t fk_used_bytes(int dev);
void fk_sleep_us(uint64_t us);
const char *fk_error_name(CUresult r);
const char *fk_error_string(CUresult r);
CUresult fk_device_get_name(char *name, int len, CUdevice dev);
CUresult fk_device_get_uuid(CUuuid *uuid, CUdevice dev);
CUresult fk_device_get_attribute(int *pi, int attrib, CUdevice dev);
void fk_device_uuid(int dev, CUuuid *ret_uuid);
CUresult fk_ctx_retain(CUcontext *pctx, CUdevice dev);
CUresult fk_ctx_release(CUdevice dev);
CUresult fk_ctx_set_current(CUcontext ctx);
CUresult fk_ctx_get_device(CUdevice *dev);
CUresult fk_stream_create(CUstream *stream, unsigned int flags);
CUresult fk_stream_destroy(CUstream stream);
CUresult fk_stream_check(CUstream stream);
CUresult fk_event_create(CUevent *event, unsigned int flags);
CUresult fk_event_destroy(CUevent event);
CUresult fk_event_record(CUevent event, CUstream stream);
CUresult fk_event_sync(CUevent event);

/* fk-mem.c (all called with fk.lock held unless noted) */
CUresult fk_mem_alloc(CUdeviceptr *dptr, size_t size);
CUresult fk_mem_free(CUdeviceptr dptr);
void fk_mem_free_dev(int dev);
CUresult fk_copy_htod(CUdeviceptr dst, const void *src, size_t n);
CUresult fk_copy_dtoh(void *dst, CUdeviceptr src, size_t n);
CUresult fk_memset(CUdeviceptr dst, uint32_t value, size_t elem, size_t n);
CUresult fk_module_load(CUmodule *module, const void *image);
CUresult fk_module_unload(CUmodule module);
CUresult fk_module_get_function(CUfunction *func, CUmodule module, const char *name);
CUresult fk_launch(CUfunction f, unsigned grid_x, unsigned grid_y, unsigned grid_z,
		   unsigned block_x, void **params);
CUresult fk_host_alloc(void **pp, size_t size, unsigned flags);
CUresult fk_host_free(void *p);
CUresult fk_va_reserve(CUdeviceptr *ptr, size_t size, size_t align, CUdeviceptr addr,
		       unsigned long long flags);
CUresult fk_va_free(CUdeviceptr ptr, size_t size);
CUresult fk_phys_create(CUmemGenericAllocationHandle *handle, size_t size,
			const CUmemAllocationProp *prop, unsigned long long flags);
CUresult fk_phys_release(CUmemGenericAllocationHandle handle);
CUresult fk_phys_export(void *shareable, CUmemGenericAllocationHandle handle,
			CUmemAllocationHandleType type, unsigned long long flags);
CUresult fk_phys_import(CUmemGenericAllocationHandle *handle, void *os_handle,
			CUmemAllocationHandleType type);
CUresult fk_map(CUdeviceptr ptr, size_t size, size_t offset, CUmemGenericAllocationHandle handle,
		unsigned long long flags);
CUresult fk_unmap(CUdeviceptr ptr, size_t size);
CUresult fk_set_access(CUdeviceptr ptr, size_t size, const CUmemAccessDesc *desc, size_t count);
CUresult fk_granularity(size_t *gran, const CUmemAllocationProp *prop, int option);
void fk_mem_teardown(void);

/* fk-ckpt.c */
CUresult fk_restore_thread_start(void); /* fk.lock held */
void fk_restore_thread_forget(void);    /* in a forked child */
int fk_mem_checkpoint(void);            /* fk-mem.c, fk.lock held: 0 or CUresult */
CUresult fk_mem_restore(const int *map);
CUresult fk_remote(enum fk_ep ep, int pid, const char *cmd, long long *ret_value);

#endif
