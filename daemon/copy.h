/* SPDX-License-Identifier: MIT */
/*
 * The VRAM copy engine: moves a process's VMM ranges between the GPU and a VRAM image
 * (common/gw-vimg.h) at the PCIe link's speed. Blocking; runs on a worker with the GPU's primed
 * context. One range at a time:
 *
 *   dump:    gw_copy_import (the app's exported memory, mapped here) -> gw_copy_scan (which
 *            chunks are zero, their checksums) -> gw_copy_out (data chunks only) -> gw_copy_unmap
 *   restore: gw_copy_create (new memory) -> gw_copy_in (memset the zero runs, copy the data) ->
 *            gw_copy_verify (checksums, on the GPU) -> gw_copy_export (an fd for the app) ->
 *            gw_copy_unmap
 *
 * The image's data section is in one of two stores: pinned host blocks (several async copies in
 * flight over the GPU's streams, one synchronisation per range) or a file (pread/pwrite by up to
 * eight threads through slices of the GPU's pinned staging buffers, DMA overlapping file I/O).
 */
#ifndef GW_COPY_H
#define GW_COPY_H

#include <pthread.h>
#include <stddef.h>
#include <stdint.h>

#include "gw-chunksum.h"
#include "gw-cuda.h"
#include "gw-vimg.h"

struct gw_copy_engine {
	const struct gw_cuda *cuda;
	CUcontext context;
	CUdevice device;
	CUstream *streams;
	unsigned nstreams;
	CUfunction scan; /* NULL: no scan on this GPU */
	/* Device memory for scan results, reused across ranges (0: each scan allocates its own). */
	CUdeviceptr scan_results;
	size_t scan_results_bytes;
	/* Pinned bounce buffers for file stores; staging_lock serialises their users. */
	void **staging;
	unsigned nstaging;
	size_t staging_bytes;
	pthread_mutex_t *staging_lock;
};

/* Where an image's data section lives. */
struct gw_copy_store {
	void **blocks; /* memory: equal pinned blocks, the data section packed into them */
	size_t block_bytes;
	int fd;               /* file: the data section at data_offset; -1 for memory */
	uint8_t *map;         /* file, writing: the whole file mapped shared (NULL: pwrite) */
	uint64_t data_offset;
	uint64_t io_ns;       /* out: time spent in pread/pwrite (file stores) */
};

/* A range mapped into the daemon's address space. */
struct gw_copy_map {
	CUmemGenericAllocationHandle handle;
	CUdeviceptr va;
	size_t size;
	int mapped;
};

int gw_copy_import(const struct gw_copy_engine *e, struct gw_copy_map *m, int fd, size_t size,
		   char *err, size_t errlen);
int gw_copy_create(const struct gw_copy_engine *e, struct gw_copy_map *m, size_t size, char *err,
		   size_t errlen);
/* An fd that keeps the memory alive once the daemon unmaps it (caller closes). */
int gw_copy_export(const struct gw_copy_engine *e, struct gw_copy_map *m, int *ret_fd, char *err,
		   size_t errlen);
/* Unmap and release; the memory lives on while an fd or another process holds it. */
void gw_copy_unmap(const struct gw_copy_engine *e, struct gw_copy_map *m);

/* Device memory for the results of scans of up to max_chunks chunks, kept in e until
 * gw_copy_scan_buffer_free(). Optional: without it every scan allocates and frees its own. */
int gw_copy_scan_buffer(struct gw_copy_engine *e, uint64_t max_chunks);
void gw_copy_scan_buffer_free(struct gw_copy_engine *e);
/* One result per chunk of chunk_bytes into out (e->scan must be set). */
int gw_copy_scan(const struct gw_copy_engine *e, const struct gw_copy_map *m,
		 uint64_t chunk_bytes, struct gw_chunk_scan *out, char *err, size_t errlen);

/* Range r of image v: its data chunks from the GPU into the store, or the other way (zero runs
 * are memset). */
int gw_copy_out(const struct gw_copy_engine *e, const struct gw_vimg *v, uint32_t r,
		const struct gw_copy_map *m, struct gw_copy_store *s, char *err, size_t errlen);
int gw_copy_in(const struct gw_copy_engine *e, const struct gw_vimg *v, uint32_t r,
	       const struct gw_copy_map *m, struct gw_copy_store *s, char *err, size_t errlen);
/* Scan range r again and compare with the image's checksums: -EILSEQ names the first bad chunk. */
int gw_copy_verify(const struct gw_copy_engine *e, const struct gw_vimg *v, uint32_t r,
		   const struct gw_copy_map *m, char *err, size_t errlen);

#endif
