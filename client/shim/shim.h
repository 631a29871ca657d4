/* SPDX-License-Identifier: MIT */
/*
 * libgpuwarm-shim: the in-process LD_PRELOAD shim of the fast VRAM path (docs/shim.md).
 *
 * A driver is process-wide by nature, and so is a shim in front of it: unlike the project's
 * libraries this one keeps process-global state (configuration, the driver binding, the range
 * table, the agent), each part guarded by its own mutex. Lock order where more than one is taken
 * (only the fork handlers do): driver, agent, table.
 */
#ifndef SHIM_H
#define SHIM_H

#include <pthread.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "gw-cuda-abi.h"
#include "shim-table.h"

#define SHIM_HIDDEN __attribute__((visibility("hidden")))
#define SHIM_EXPORT __attribute__((visibility("default")))

#define SHIM_ENV_DISABLE "GPUWARM_SHIM_DISABLE"
#define SHIM_ENV_DEBUG "GPUWARM_SHIM_DEBUG"
#define SHIM_ENV_MIN_BYTES "GPUWARM_SHIM_MIN_BYTES"
#define SHIM_DEFAULT_MIN_BYTES ((size_t)2 << 20)

struct shim_config {
	bool disabled;     /* GPUWARM_SHIM_DISABLE=1: pass everything through, no agent */
	bool debug;        /* GPUWARM_SHIM_DEBUG=1: one-line messages on stderr */
	size_t min_bytes;  /* GPUWARM_SHIM_MIN_BYTES: smallest allocation converted */
};

/* shim-init.c */
extern struct shim_config shim_cfg SHIM_HIDDEN;
/* Read the configuration, find the real dlsym and the shim's own load address (once). */
void shim_init(void) SHIM_HIDDEN;
/* Is fn code of this shim? (a driver's cuGetProcAddress may hand back our own exports) */
bool shim_is_own(const void *fn) SHIM_HIDDEN;
__attribute__((format(printf, 1, 2))) void shim_log(const char *fmt, ...) SHIM_HIDDEN;

/* shim-dlsym.c: glibc's dlsym, as found by dlvsym (GLIBC_2.34, else GLIBC_2.2.5). */
extern void *(*shim_real_dlsym)(void *handle, const char *name) SHIM_HIDDEN;
void shim_dlsym_init(void) SHIM_HIDDEN;

/* shim-entry.c: the wrapper to hand out instead of fn, or fn itself. */
void *shim_entry_for_dlsym(const char *name, void *fn) SHIM_HIDDEN;
void *shim_entry_for_proc(const char *name, int cuda_version, void *fn) SHIM_HIDDEN;

/* The range table (shim-alloc.c). ops_inflight counts app threads inside a driver call on a
 * tracked handle or range (unmap, export, properties, multicast bind) between two critical
 * sections: the agent waits for 0 before it touches physical memory, and gives up with an error
 * when a thread stays there (frozen in it). */
struct shim_tables {
	pthread_mutex_t lock;
	struct shim_table table;
	unsigned ops_inflight;
	uint64_t epoch;        /* of the latest Agent.Export */
	uint64_t export_total; /* ranges in it */
};
extern struct shim_tables shim_tbl SHIM_HIDDEN;

/* shim-alloc.c: the app-facing operations behind the exported wrappers. */
CUresult shim_mem_alloc(CUdeviceptr *dptr, size_t size) SHIM_HIDDEN;
CUresult shim_mem_free(CUdeviceptr dptr) SHIM_HIDDEN;
CUresult shim_mem_alloc_pitch(CUdeviceptr *dptr, size_t *pitch, size_t width, size_t height,
			      unsigned int elem) SHIM_HIDDEN;
void shim_tables_reset_child(void) SHIM_HIDDEN;

/* shim-vmm.c: the application's own VMM calls, with virtual handles. */
CUresult shim_vmm_create(CUmemGenericAllocationHandle *handle, size_t size,
			 const CUmemAllocationProp *prop, unsigned long long flags) SHIM_HIDDEN;
CUresult shim_vmm_release(CUmemGenericAllocationHandle handle) SHIM_HIDDEN;
CUresult shim_vmm_map(CUdeviceptr va, size_t size, size_t offset,
		      CUmemGenericAllocationHandle handle, unsigned long long flags) SHIM_HIDDEN;
CUresult shim_vmm_unmap(CUdeviceptr va, size_t size) SHIM_HIDDEN;
CUresult shim_vmm_set_access(CUdeviceptr va, size_t size, const CUmemAccessDesc *desc,
			     size_t count) SHIM_HIDDEN;
CUresult shim_vmm_address_free(CUdeviceptr va, size_t size) SHIM_HIDDEN;
CUresult shim_vmm_export(void *shareable, CUmemGenericAllocationHandle handle,
			 CUmemAllocationHandleType type, unsigned long long flags) SHIM_HIDDEN;
CUresult shim_vmm_get_props(CUmemAllocationProp *prop,
			    CUmemGenericAllocationHandle handle) SHIM_HIDDEN;
CUresult shim_vmm_retain(CUmemGenericAllocationHandle *handle, void *addr) SHIM_HIDDEN;
CUresult shim_vmm_multicast_bind(CUmemGenericAllocationHandle mc, size_t mc_offset,
				 CUmemGenericAllocationHandle mem, size_t mem_offset, size_t size,
				 unsigned long long flags) SHIM_HIDDEN;

/* shim-agent.c */
/* May this allocation be converted? Starts the agent at the first call; with wait, waits
 * (boundedly) for the attempt to attach to finish. False without a daemon. */
bool shim_agent_ready(bool wait) SHIM_HIDDEN;
/* The reported ranges changed: the agent sends an update (at most once a second). */
void shim_agent_changed(void) SHIM_HIDDEN;

#endif
