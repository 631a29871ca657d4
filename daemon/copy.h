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
 * Data moves for all of a GPU's ranges of an operation at once (a "set"): gw_copy_out_set after
 * every range is imported and scanned, gw_copy_in_set after every range is created; then each
 * range is verified and exported.
 *
 * The image's data section is in one of two stores: pinned host blocks (async copies of all the
 * set's ranges in flight over the GPU's streams, one synchronisation) or files: the image file
 * (version 1) or its segment files (version 2), by up to eight I/O lanes per GPU (threads, each
 * with a slice of the pinned staging buffers and a stream) that take pieces of all the set's
 * ranges from one queue per file, DMA overlapping file I/O (copy-io.c says how).
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
	int fd;               /* version 1 file: the data section at data_offset; -1 otherwise */
	uint8_t *map;         /* version 1 file, writing: mapped shared (NULL: pwrite) */
	uint64_t data_offset;
	int seg_fds[GW_VIMG_MAX_SEGMENTS]; /* version 2: the segment files */
	unsigned nsegments;   /* 0: no segments */
	uint64_t *progress;   /* optional: data bytes moved so far, added to atomically (news) */
	/* out, added to: */
	uint64_t io_ns;       /* the longest lane's time in pread/pwrite (the lanes run at once) */
	uint64_t io_bytes;    /* bytes read or written */
	uint64_t pieces;      /* pieces moved (file) or async copies (memory) */
	unsigned lanes;       /* the most I/O lanes that ran */
};

/* The ranges of one GPU in one operation: indices into v->ranges (ascending), and the mappings,
 * indexed by range index (maps[ranges[i]]). */
struct gw_copy_set {
	const struct gw_vimg *v;
	const uint32_t *ranges;
	unsigned n;
	struct gw_copy_map *maps;
};

/* Stripe of a segmented image's data: at most this (the lane buffer of the default staging). */
#define GW_COPY_MAX_STRIPE_BYTES (32u << 20)

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

/* The data chunks of every range of the set from the GPU into the store, or the other way (zero
 * runs are memset). */
int gw_copy_out_set(const struct gw_copy_engine *e, const struct gw_copy_set *set,
		    struct gw_copy_store *s, char *err, size_t errlen);
int gw_copy_in_set(const struct gw_copy_engine *e, const struct gw_copy_set *set,
		   struct gw_copy_store *s, char *err, size_t errlen);
/* The stripe for an image of data_bytes over nsegments segments. */
uint64_t gw_copy_stripe_bytes(uint64_t data_bytes, unsigned nsegments);
/* Scan range r again and compare with the image's checksums: -EILSEQ names the first bad chunk. */
int gw_copy_verify(const struct gw_copy_engine *e, const struct gw_vimg *v, uint32_t r,
		   const struct gw_copy_map *m, char *err, size_t errlen);

#endif
