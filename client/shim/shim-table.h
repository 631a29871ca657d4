/* SPDX-License-Identifier: MIT */
/*
 * The shim's bookkeeping of device memory, without any CUDA call: physical allocations
 * (virtual handles handed to the app) and the ranges of VA that map them, sorted by address.
 * Not thread-safe: the caller holds the lock that guards the table.
 */
#ifndef SHIM_TABLE_H
#define SHIM_TABLE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "gw-cuda-abi.h"

/* Virtual handles the shim hands the app for its cuMemCreate: tag | serial. */
#define SHIM_VHANDLE_TAG 0x6777000000000000ull /* "gw" */
#define SHIM_VHANDLE_MASK 0xffff000000000000ull
#define SHIM_MAX_ACCESS 8

static inline bool shim_is_vhandle(uint64_t handle)
{
	return (handle & SHIM_VHANDLE_MASK) == SHIM_VHANDLE_TAG;
}

/* Physical memory: one cuMemCreate of the app, or the memory behind one converted allocation. */
struct shim_phys {
	uint64_t vid; /* the app's handle; 0 for a converted allocation's memory */
	CUmemGenericAllocationHandle real; /* the driver's handle now; 0 while released */
	size_t size;
	int dev;
	CUmemAllocationProp prop; /* as the app asked (app cuMemCreate) */
	unsigned app_refs;        /* app references (create, retain) not yet released */
	unsigned nmaps;           /* ranges that map it */
	bool exportable;          /* created with the POSIX fd handle type */
	bool foreign;             /* imported from another process (Agent.Map) */
	int fd;                   /* foreign: the fd it came as (the driver does not export an
				   * imported handle again, so the next Export hands out a dup) */
};

/* A mapping of (part of) a phys at va; for a converted allocation the VA reservation too. */
struct shim_range {
	CUdeviceptr va;
	size_t size;
	size_t offset;    /* into phys */
	size_t req_size;  /* converted: the size the app asked for */
	struct shim_phys *phys;
	bool converted;   /* a cuMemAlloc/cuMemAllocPitch made VMM: the VA reservation is ours */
	bool released;    /* the agent released the memory, the VA stays reserved */
	uint64_t export_epoch;
	unsigned naccess; /* the access last set on it (replayed when the agent remaps it) */
	CUmemAccessDesc access[SHIM_MAX_ACCESS];
};

struct shim_table {
	struct shim_range **ranges; /* sorted by va, never overlapping */
	size_t nranges, cap_ranges;
	struct shim_phys **phys;    /* app allocations, sorted by vid */
	size_t nphys, cap_phys;
	uint64_t next_serial;
	uint64_t gen;               /* bumped whenever the reported ranges may have changed */
};

struct shim_totals {
	uint64_t ranges, bytes;   /* reported ranges */
	uint64_t released;        /* of them, released by the agent */
	uint64_t foreign;         /* of them, backed by memory imported through Agent.Map */
};

/* A zeroed phys without an fd, or NULL; shim_phys_free() closes its fd and frees it. */
struct shim_phys *shim_phys_new(void);
void shim_phys_free(struct shim_phys *p);

void shim_table_init(struct shim_table *t);
/* Frees the table and every range and phys in it. */
void shim_table_finish(struct shim_table *t);

/* Insert r (its va/size set): 0, -EEXIST when it overlaps a range, -ENOMEM. */
int shim_table_add_range(struct shim_table *t, struct shim_range *r);
/* Take r out of the table (not freed). */
void shim_table_remove_range(struct shim_table *t, struct shim_range *r);
/* The range starting exactly at va, or NULL. */
struct shim_range *shim_table_find(const struct shim_table *t, CUdeviceptr va);
/* The range containing addr, or NULL. */
struct shim_range *shim_table_lookup(const struct shim_table *t, CUdeviceptr addr);
/* Index of the first range ending after va (iterate from there while ranges[i]->va < end). */
size_t shim_table_index_from(const struct shim_table *t, CUdeviceptr va);

/* Insert p and give it a fresh virtual handle (p->vid): 0, -ENOMEM, -EOVERFLOW. */
int shim_table_add_phys(struct shim_table *t, struct shim_phys *p);
void shim_table_remove_phys(struct shim_table *t, struct shim_phys *p);
struct shim_phys *shim_table_find_phys(const struct shim_table *t, uint64_t vid);

/* A range the daemon can move: the one full mapping of exportable memory. */
bool shim_range_reported(const struct shim_range *r);
void shim_table_totals(const struct shim_table *t, struct shim_totals *ret);

#endif
