/* SPDX-License-Identifier: MIT */
/*
 * The VRAM copy engine: moves an app's exported VMM ranges between the GPU and pinned host blocks
 * at the PCIe link's speed (several streams, one async copy per block, one synchronisation per
 * batch). Blocking; runs on a worker with the GPU's primed context. Written against a "ranges in,
 * host blocks out" contract so that other sources (a driver's custom-storage checkpoint path,
 * image files) can plug in later.
 */
#ifndef GW_COPY_H
#define GW_COPY_H

#include <stddef.h>
#include <stdint.h>

#include "gw-cuda.h"

struct gw_copy_range {
	uint64_t va;        /* where the app has it mapped */
	size_t size;        /* multiple of the allocation granularity */
	int app_device;     /* the app's device ordinal (its CUDA_VISIBLE_DEVICES numbering) */
	CUuuid uuid;
	/* Host storage: the image's bytes live in a list of equal pinned blocks, ranges packed
	 * one after another; this range's bytes start at byte `offset` of that stream. */
	void **blocks;
	size_t offset;
};

struct gw_copy_engine {
	const struct gw_cuda *cuda;
	CUcontext context;
	CUdevice device;
	CUstream *streams;
	unsigned nstreams;
	size_t block_bytes;
};

/* Import each fds[i] (the app's memory), copy ranges[i] into its blocks. fds stay open. */
int gw_copy_dump(const struct gw_copy_engine *engine, struct gw_copy_range *ranges,
		 const int *fds, size_t n, char *err, size_t errlen);

/* Create memory for each range on engine->device, fill it from the blocks, export it:
 * ret_fds[i] (caller closes) keeps the memory alive; the daemon keeps no handle. */
int gw_copy_restore(const struct gw_copy_engine *engine, const struct gw_copy_range *ranges,
		    size_t n, int *ret_fds, char *err, size_t errlen);

#endif
