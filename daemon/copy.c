/* SPDX-License-Identifier: MIT */
#include "copy.h"

#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "copy-io.h"

#define SCAN_THREADS 256

static int make_current(const struct gw_copy_engine *e, char *err, size_t errlen)
{
	CUresult r = e->cuda->cuCtxSetCurrent(e->context);

	return r == CUDA_SUCCESS ? 0 : gw_copy_fail(e, "cuCtxSetCurrent", r, err, errlen);
}

/* ---- mappings ---- */

static int map_here(const struct gw_copy_engine *e, struct gw_copy_map *m, char *err,
		    size_t errlen)
{
	const struct gw_cuda *cuda = e->cuda;
	CUmemAccessDesc access = {
		.location = { .type = CU_MEM_LOCATION_TYPE_DEVICE, .id = e->device },
		.flags = CU_MEM_ACCESS_FLAGS_PROT_READWRITE,
	};
	CUresult r;

	r = cuda->cuMemAddressReserve(&m->va, m->size, 0, 0, 0);
	if (r != CUDA_SUCCESS)
		return gw_copy_fail(e, "cuMemAddressReserve", r, err, errlen);
	r = cuda->cuMemMap(m->va, m->size, 0, m->handle, 0);
	if (r != CUDA_SUCCESS) {
		cuda->cuMemAddressFree(m->va, m->size);
		return gw_copy_fail(e, "cuMemMap", r, err, errlen);
	}
	r = cuda->cuMemSetAccess(m->va, m->size, &access, 1);
	if (r != CUDA_SUCCESS) {
		cuda->cuMemUnmap(m->va, m->size);
		cuda->cuMemAddressFree(m->va, m->size);
		return gw_copy_fail(e, "cuMemSetAccess", r, err, errlen);
	}
	m->mapped = 1;
	return 0;
}

void gw_copy_unmap(const struct gw_copy_engine *e, struct gw_copy_map *m)
{
	if (!m)
		return;
	if (m->mapped) {
		e->cuda->cuMemUnmap(m->va, m->size);
		e->cuda->cuMemAddressFree(m->va, m->size);
		m->mapped = 0;
	}
	if (m->handle) {
		e->cuda->cuMemRelease(m->handle);
		m->handle = 0;
	}
}

/* A new mapping of size bytes, with e's context current. */
static int map_begin(const struct gw_copy_engine *e, struct gw_copy_map *m, size_t size,
		     char *err, size_t errlen)
{
	memset(m, 0, sizeof(*m));
	m->size = size;
	return make_current(e, err, errlen);
}

/* m->handle came from call, which returned r: map it here, or let it go. */
static int map_handle(const struct gw_copy_engine *e, struct gw_copy_map *m, CUresult r,
		      const char *call, char *err, size_t errlen)
{
	int ret;

	if (r != CUDA_SUCCESS) {
		m->handle = 0;
		return gw_copy_fail(e, call, r, err, errlen);
	}
	ret = map_here(e, m, err, errlen);
	if (ret < 0)
		gw_copy_unmap(e, m);
	return ret;
}

int gw_copy_import(const struct gw_copy_engine *e, struct gw_copy_map *m, int fd, size_t size,
		   char *err, size_t errlen)
{
	int ret = map_begin(e, m, size, err, errlen);

	if (ret < 0)
		return ret;
	return map_handle(e, m,
			  e->cuda->cuMemImportFromShareableHandle(
				  &m->handle, (void *)(uintptr_t)fd,
				  CU_MEM_HANDLE_TYPE_POSIX_FILE_DESCRIPTOR),
			  "cuMemImportFromShareableHandle", err, errlen);
}

int gw_copy_create(const struct gw_copy_engine *e, struct gw_copy_map *m, size_t size, char *err,
		   size_t errlen)
{
	CUmemAllocationProp prop = {
		.type = CU_MEM_ALLOCATION_TYPE_PINNED,
		.requestedHandleTypes = CU_MEM_HANDLE_TYPE_POSIX_FILE_DESCRIPTOR,
		.location = { .type = CU_MEM_LOCATION_TYPE_DEVICE, .id = e->device },
	};
	int ret = map_begin(e, m, size, err, errlen);

	if (ret < 0)
		return ret;
	return map_handle(e, m, e->cuda->cuMemCreate(&m->handle, size, &prop, 0), "cuMemCreate",
			  err, errlen);
}

int gw_copy_export(const struct gw_copy_engine *e, struct gw_copy_map *m, int *ret_fd, char *err,
		   size_t errlen)
{
	int fd = -1;
	CUresult r = e->cuda->cuMemExportToShareableHandle(
		&fd, m->handle, CU_MEM_HANDLE_TYPE_POSIX_FILE_DESCRIPTOR, 0);

	if (r != CUDA_SUCCESS)
		return gw_copy_fail(e, "cuMemExportToShareableHandle", r, err, errlen);
	*ret_fd = fd;
	return 0;
}

/* ---- the scan ---- */

int gw_copy_scan_buffer(struct gw_copy_engine *e, uint64_t max_chunks)
{
	size_t bytes = max_chunks * sizeof(struct gw_chunk_scan);

	if (!e->scan || max_chunks == 0 || bytes <= e->scan_results_bytes)
		return 0;
	gw_copy_scan_buffer_free(e);
	if (e->cuda->cuCtxSetCurrent(e->context) != CUDA_SUCCESS ||
	    e->cuda->cuMemAlloc(&e->scan_results, bytes) != CUDA_SUCCESS) {
		e->scan_results = 0;
		return -ENOMEM; /* not fatal: the scans allocate their own */
	}
	e->scan_results_bytes = bytes;
	return 0;
}

void gw_copy_scan_buffer_free(struct gw_copy_engine *e)
{
	if (e->scan_results) {
		e->cuda->cuCtxSetCurrent(e->context);
		e->cuda->cuMemFree(e->scan_results);
	}
	e->scan_results = 0;
	e->scan_results_bytes = 0;
}

int gw_copy_scan(const struct gw_copy_engine *e, const struct gw_copy_map *m,
		 uint64_t chunk_bytes, struct gw_chunk_scan *out, char *err, size_t errlen)
{
	const struct gw_cuda *cuda = e->cuda;
	unsigned long long words = m->size / 8, chunk_words = chunk_bytes / 8;
	uint64_t nchunks = (m->size + chunk_bytes - 1) / chunk_bytes;
	CUdeviceptr results = 0, base = m->va;
	void *params[] = { &base, &words, &chunk_words, &results };
	CUresult r;
	int ret;

	if (!e->scan || nchunks == 0 || nchunks > UINT32_MAX) {
		snprintf(err, errlen, "no chunk scan here");
		return -ENOTSUP;
	}
	ret = make_current(e, err, errlen);
	if (ret < 0)
		return ret;
	if (e->scan_results && nchunks * sizeof(*out) <= e->scan_results_bytes) {
		results = e->scan_results;
	} else {
		r = cuda->cuMemAlloc(&results, nchunks * sizeof(*out));
		if (r != CUDA_SUCCESS)
			return gw_copy_fail(e, "cuMemAlloc (scan results)", r, err, errlen);
	}
	r = cuda->cuLaunchKernel(e->scan, (unsigned)nchunks, 1, 1, SCAN_THREADS, 1, 1, 0,
				 e->streams[0], params, NULL);
	if (r != CUDA_SUCCESS) {
		ret = gw_copy_fail(e, "cuLaunchKernel (chunk scan)", r, err, errlen);
		goto out;
	}
	r = cuda->cuStreamSynchronize(e->streams[0]);
	if (r != CUDA_SUCCESS) {
		ret = gw_copy_fail(e, "cuStreamSynchronize (chunk scan)", r, err, errlen);
		goto out;
	}
	r = cuda->cuMemcpyDtoH(out, results, nchunks * sizeof(*out));
	if (r != CUDA_SUCCESS)
		ret = gw_copy_fail(e, "cuMemcpyDtoH (scan results)", r, err, errlen);
out:
	if (results != e->scan_results)
		cuda->cuMemFree(results);
	return ret;
}

int gw_copy_verify(const struct gw_copy_engine *e, const struct gw_vimg *v, uint32_t ri,
		   const struct gw_copy_map *m, char *err, size_t errlen)
{
	const struct gw_vimg_range *r = &v->ranges[ri];
	uint64_t n = gw_vimg_range_chunks(v, r);
	struct gw_chunk_scan *scans = calloc(n, sizeof(*scans));
	int ret;

	if (!scans)
		return -ENOMEM;
	ret = gw_copy_scan(e, m, v->chunk_bytes, scans, err, errlen);
	for (uint64_t c = 0; ret == 0 && c < n; c++)
		if (scans[c].sum != v->sums[r->first_chunk + c]) {
			snprintf(err, errlen, "range %u (va 0x%llx), chunk %llu at offset %llu does "
				 "not match its checksum after the copy: the image is corrupt", ri,
				 (unsigned long long)r->va, (unsigned long long)c,
				 (unsigned long long)(c * v->chunk_bytes));
			ret = -EILSEQ;
		}
	free(scans);
	return ret;
}

/* ---- moving data ---- */

/*
 * Memory store: every data run of every range of the set, cut where the pinned blocks end, as
 * async copies dealt round robin over the GPU's streams; one synchronisation for the whole set.
 */
static int copy_blocks(const struct gw_copy_engine *e, const struct gw_copy_set *set,
		       struct gw_copy_store *s, int to_host, char *err, size_t errlen)
{
	const struct gw_vimg *v = set->v;
	const struct gw_cuda *cuda = e->cuda;
	unsigned next = 0;
	int ret = 0;

	if (!to_host)
		ret = gw_copy_memset_zero_runs(e, set, e->streams[e->nstreams - 1], err, errlen);
	for (unsigned i = 0; i < set->n && ret == 0; i++) {
		const struct gw_vimg_range *r = &v->ranges[set->ranges[i]];
		const struct gw_copy_map *m = &set->maps[set->ranges[i]];

		for (uint32_t k = 0; k < r->nruns && ret == 0; k++) {
			const struct gw_vimg_run *run = &v->runs[r->first_run + k];
			uint64_t off, len;

			if (run->zero)
				continue;
			gw_vimg_run_span(v, r, run, &off, &len);
			for (uint64_t done = 0; done < len;) {
				uint64_t pos = run->data_offset + done;
				char *host = (char *)s->blocks[pos / s->block_bytes] +
					     pos % s->block_bytes;
				uint64_t piece = s->block_bytes - pos % s->block_bytes;
				CUstream st = e->streams[next++ % e->nstreams];
				CUresult cr;

				if (piece > len - done)
					piece = len - done;
				cr = to_host ? cuda->cuMemcpyDtoHAsync(host, m->va + off + done, piece,
								       st) :
					       cuda->cuMemcpyHtoDAsync(m->va + off + done, host, piece,
								       st);
				if (cr != CUDA_SUCCESS) {
					ret = gw_copy_fail(e, to_host ? "cuMemcpyDtoHAsync" :
								"cuMemcpyHtoDAsync", cr, err, errlen);
					break;
				}
				done += piece;
				s->pieces++;
				if (s->progress) /* queued, not done: close enough for news */
					__atomic_add_fetch(s->progress, piece, __ATOMIC_RELAXED);
			}
		}
	}
	if (ret < 0) {
		gw_copy_sync_all(e, NULL, 0);
		return ret;
	}
	return gw_copy_sync_all(e, err, errlen);
}

static int copy_set(const struct gw_copy_engine *e, const struct gw_copy_set *set,
		    struct gw_copy_store *s, int out, char *err, size_t errlen)
{
	int ret = make_current(e, err, errlen);

	if (ret < 0 || set->n == 0)
		return ret;
	return s->fd >= 0 || s->nsegments ? gw_copy_file(e, set, s, out, err, errlen) :
					    copy_blocks(e, set, s, out, err, errlen);
}

int gw_copy_out_set(const struct gw_copy_engine *e, const struct gw_copy_set *set,
		    struct gw_copy_store *s, char *err, size_t errlen)
{
	return copy_set(e, set, s, 1, err, errlen);
}

int gw_copy_in_set(const struct gw_copy_engine *e, const struct gw_copy_set *set,
		   struct gw_copy_store *s, char *err, size_t errlen)
{
	return copy_set(e, set, s, 0, err, errlen);
}

uint64_t gw_copy_stripe_bytes(uint64_t data_bytes, unsigned nsegments)
{
	uint64_t want = nsegments ? data_bytes / ((uint64_t)nsegments * 4) : 0, s;

	/* About four pieces per segment, so that small images spread too; at most the lane buffer
	 * of the default staging (pieces past it are cut by the lanes anyway). */
	for (s = GW_COPY_MAX_STRIPE_BYTES; s > GW_VIMG_MIN_STRIPE_BYTES && s > want; s /= 2)
		;
	return s;
}
