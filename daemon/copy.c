/* SPDX-License-Identifier: MIT */
#include "copy.h"

#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

#define SCAN_THREADS 256

#ifndef MADV_POPULATE_WRITE
#define MADV_POPULATE_WRITE 23 /* Linux 5.14 */
#endif

static int fail(const struct gw_copy_engine *e, const char *what, CUresult r, char *err,
		size_t errlen)
{
	char text[160];

	snprintf(err, errlen, "%s: %s", what, gw_cuda_describe(e->cuda, r, text, sizeof(text)));
	return gw_cuda_errno(r);
}

static uint64_t now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static int make_current(const struct gw_copy_engine *e, char *err, size_t errlen)
{
	CUresult r = e->cuda->cuCtxSetCurrent(e->context);

	return r == CUDA_SUCCESS ? 0 : fail(e, "cuCtxSetCurrent", r, err, errlen);
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
		return fail(e, "cuMemAddressReserve", r, err, errlen);
	r = cuda->cuMemMap(m->va, m->size, 0, m->handle, 0);
	if (r != CUDA_SUCCESS) {
		cuda->cuMemAddressFree(m->va, m->size);
		return fail(e, "cuMemMap", r, err, errlen);
	}
	r = cuda->cuMemSetAccess(m->va, m->size, &access, 1);
	if (r != CUDA_SUCCESS) {
		cuda->cuMemUnmap(m->va, m->size);
		cuda->cuMemAddressFree(m->va, m->size);
		return fail(e, "cuMemSetAccess", r, err, errlen);
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

int gw_copy_import(const struct gw_copy_engine *e, struct gw_copy_map *m, int fd, size_t size,
		   char *err, size_t errlen)
{
	CUresult r;
	int ret;

	memset(m, 0, sizeof(*m));
	m->size = size;
	ret = make_current(e, err, errlen);
	if (ret < 0)
		return ret;
	r = e->cuda->cuMemImportFromShareableHandle(&m->handle, (void *)(uintptr_t)fd,
						    CU_MEM_HANDLE_TYPE_POSIX_FILE_DESCRIPTOR);
	if (r != CUDA_SUCCESS) {
		m->handle = 0;
		return fail(e, "cuMemImportFromShareableHandle", r, err, errlen);
	}
	ret = map_here(e, m, err, errlen);
	if (ret < 0)
		gw_copy_unmap(e, m);
	return ret;
}

int gw_copy_create(const struct gw_copy_engine *e, struct gw_copy_map *m, size_t size, char *err,
		   size_t errlen)
{
	CUmemAllocationProp prop = {
		.type = CU_MEM_ALLOCATION_TYPE_PINNED,
		.requestedHandleTypes = CU_MEM_HANDLE_TYPE_POSIX_FILE_DESCRIPTOR,
		.location = { .type = CU_MEM_LOCATION_TYPE_DEVICE, .id = e->device },
	};
	CUresult r;
	int ret;

	memset(m, 0, sizeof(*m));
	m->size = size;
	ret = make_current(e, err, errlen);
	if (ret < 0)
		return ret;
	r = e->cuda->cuMemCreate(&m->handle, size, &prop, 0);
	if (r != CUDA_SUCCESS) {
		m->handle = 0;
		return fail(e, "cuMemCreate", r, err, errlen);
	}
	ret = map_here(e, m, err, errlen);
	if (ret < 0)
		gw_copy_unmap(e, m);
	return ret;
}

int gw_copy_export(const struct gw_copy_engine *e, struct gw_copy_map *m, int *ret_fd, char *err,
		   size_t errlen)
{
	int fd = -1;
	CUresult r = e->cuda->cuMemExportToShareableHandle(
		&fd, m->handle, CU_MEM_HANDLE_TYPE_POSIX_FILE_DESCRIPTOR, 0);

	if (r != CUDA_SUCCESS)
		return fail(e, "cuMemExportToShareableHandle", r, err, errlen);
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
			return fail(e, "cuMemAlloc (scan results)", r, err, errlen);
	}
	r = cuda->cuLaunchKernel(e->scan, (unsigned)nchunks, 1, 1, SCAN_THREADS, 1, 1, 0,
				 e->streams[0], params, NULL);
	if (r != CUDA_SUCCESS) {
		ret = fail(e, "cuLaunchKernel (chunk scan)", r, err, errlen);
		goto out;
	}
	r = cuda->cuStreamSynchronize(e->streams[0]);
	if (r != CUDA_SUCCESS) {
		ret = fail(e, "cuStreamSynchronize (chunk scan)", r, err, errlen);
		goto out;
	}
	r = cuda->cuMemcpyDtoH(out, results, nchunks * sizeof(*out));
	if (r != CUDA_SUCCESS)
		ret = fail(e, "cuMemcpyDtoH (scan results)", r, err, errlen);
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

static int sync_all(const struct gw_copy_engine *e, char *err, size_t errlen)
{
	int ret = 0;

	for (unsigned k = 0; k < e->nstreams; k++) {
		CUresult r = e->cuda->cuStreamSynchronize(e->streams[k]);

		if (r != CUDA_SUCCESS && ret == 0)
			ret = err ? fail(e, "cuStreamSynchronize", r, err, errlen) : -EIO;
	}
	return ret;
}

/* Memory store: one async copy per piece of a data run that lies in one block. */
static int copy_blocks(const struct gw_copy_engine *e, const struct gw_vimg *v, uint32_t ri,
		       const struct gw_copy_map *m, const struct gw_copy_store *s, int to_host,
		       char *err, size_t errlen)
{
	const struct gw_vimg_range *r = &v->ranges[ri];
	const struct gw_cuda *cuda = e->cuda;
	unsigned next = 0;

	for (uint32_t k = 0; k < r->nruns; k++) {
		const struct gw_vimg_run *run = &v->runs[r->first_run + k];
		uint64_t off, len;

		gw_vimg_run_span(v, r, run, &off, &len);
		if (run->zero) {
			CUresult cr;

			if (to_host)
				continue;
			cr = cuda->cuMemsetD8Async(m->va + off, 0, len, e->streams[next++ % e->nstreams]);
			if (cr != CUDA_SUCCESS) {
				sync_all(e, err, errlen);
				return fail(e, "cuMemsetD8Async", cr, err, errlen);
			}
			continue;
		}
		for (uint64_t done = 0; done < len;) {
			uint64_t pos = run->data_offset + done;
			char *host = (char *)s->blocks[pos / s->block_bytes] + pos % s->block_bytes;
			uint64_t piece = s->block_bytes - pos % s->block_bytes;
			CUstream st = e->streams[next++ % e->nstreams];
			CUresult cr;

			if (piece > len - done)
				piece = len - done;
			cr = to_host ? cuda->cuMemcpyDtoHAsync(host, m->va + off + done, piece, st) :
				       cuda->cuMemcpyHtoDAsync(m->va + off + done, host, piece, st);
			if (cr != CUDA_SUCCESS) {
				sync_all(e, err, errlen);
				return fail(e, to_host ? "cuMemcpyDtoHAsync" : "cuMemcpyHtoDAsync", cr,
					    err, errlen);
			}
			done += piece;
		}
	}
	return sync_all(e, err, errlen);
}

static int io_full(int fd, void *buf, size_t len, uint64_t offset, int write_it)
{
	size_t done = 0;

	while (done < len) {
		ssize_t n = write_it ? pwrite(fd, (char *)buf + done, len - done,
					      (off_t)(offset + done)) :
				       pread(fd, (char *)buf + done, len - done, (off_t)(offset + done));

		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			return -errno;
		if (n == 0)
			return write_it ? -EIO : -ENODATA;
		done += (size_t)n;
	}
	return 0;
}

/*
 * File stores: the range's data runs cut into pieces of one lane buffer each, dealt round robin
 * over up to GW_COPY_IO_LANES threads. Each lane owns a slice of the pinned staging buffers and
 * a stream; out, it copies a piece down and writes it; in, it reads a piece and copies it up.
 * One lane alternates DMA and file I/O, several lanes overlap them: the file system, not the
 * PCIe link, is the limit here (tmpfs takes ~2 GB/s per writing thread).
 */
#define GW_COPY_IO_LANES 8

struct io_lane {
	const struct gw_copy_engine *e;
	const struct gw_vimg *v;
	const struct gw_vimg_range *r;
	const struct gw_copy_map *m;
	const struct gw_copy_store *s;
	int out;
	unsigned index, count;
	void *buf;
	size_t piece_bytes;
	CUstream stream;
	uint64_t io_ns;
	int ret;
	char err[256];
	pthread_t thread;
	int started;
};

/*
 * Writers of one file serialise on its inode lock in write(2), so lanes writing through pwrite
 * do not scale (tmpfs: ~1.6 GB/s however many). Through a shared mapping they do: the pages are
 * made first with MADV_POPULATE_WRITE, which reports a full file system as an error instead of
 * the SIGBUS a plain store into the mapping would take, then filled with memcpy.
 */
static int write_mapped(uint8_t *map, const void *buf, size_t n, uint64_t off)
{
	uintptr_t page = 4096, start = (uintptr_t)(map + off) & ~(page - 1);
	uintptr_t end = ((uintptr_t)(map + off + n) + page - 1) & ~(page - 1);

	if (madvise((void *)start, end - start, MADV_POPULATE_WRITE) < 0)
		return errno == ENOMEM || errno == EFAULT ? -ENOSPC : -errno;
	memcpy(map + off, buf, n);
	return 0;
}

static void lane_fail_cuda(struct io_lane *l, const char *what, CUresult r)
{
	l->ret = fail(l->e, what, r, l->err, sizeof(l->err));
}

static void *lane_main(void *arg)
{
	struct io_lane *l = arg;
	const struct gw_cuda *cuda = l->e->cuda;
	uint64_t k = 0; /* piece number across the range's data runs */
	CUresult cr;

	cr = cuda->cuCtxSetCurrent(l->e->context);
	if (cr != CUDA_SUCCESS) {
		lane_fail_cuda(l, "cuCtxSetCurrent", cr);
		return NULL;
	}
	for (uint32_t i = 0; i < l->r->nruns && l->ret == 0; i++) {
		const struct gw_vimg_run *run = &l->v->runs[l->r->first_run + i];
		uint64_t off, len;

		if (run->zero)
			continue;
		gw_vimg_run_span(l->v, l->r, run, &off, &len);
		for (uint64_t done = 0; done < len && l->ret == 0; done += l->piece_bytes, k++) {
			uint64_t n = len - done < l->piece_bytes ? len - done : l->piece_bytes;
			uint64_t file_off = l->s->data_offset + run->data_offset + done, t;
			CUdeviceptr dev = l->m->va + off + done;
			int r;

			if (k % l->count != l->index)
				continue;
			if (l->out) {
				cr = cuda->cuMemcpyDtoHAsync(l->buf, dev, n, l->stream);
				if (cr == CUDA_SUCCESS)
					cr = cuda->cuStreamSynchronize(l->stream);
				if (cr != CUDA_SUCCESS) {
					lane_fail_cuda(l, "cuMemcpyDtoHAsync", cr);
					break;
				}
			}
			t = now_ns();
			r = l->out && l->s->map ? write_mapped(l->s->map, l->buf, n, file_off) :
						  io_full(l->s->fd, l->buf, n, file_off, l->out);
			l->io_ns += now_ns() - t;
			if (r < 0) {
				l->ret = r;
				snprintf(l->err, sizeof(l->err), "%s the image: %s%s",
					 l->out ? "writing" : "reading", strerror(-r),
					 r == -ENODATA ? " (the file is truncated)" :
					 r == -ENOSPC ? " (the file system is full)" : "");
				break;
			}
			if (!l->out) {
				cr = cuda->cuMemcpyHtoDAsync(dev, l->buf, n, l->stream);
				if (cr == CUDA_SUCCESS)
					cr = cuda->cuStreamSynchronize(l->stream);
				if (cr != CUDA_SUCCESS) {
					lane_fail_cuda(l, "cuMemcpyHtoDAsync", cr);
					break;
				}
			}
		}
	}
	return NULL;
}

static int copy_file(const struct gw_copy_engine *e, const struct gw_vimg *v, uint32_t ri,
		     const struct gw_copy_map *m, struct gw_copy_store *s, int out, char *err,
		     size_t errlen)
{
	const struct gw_vimg_range *r = &v->ranges[ri];
	struct io_lane lanes[GW_COPY_IO_LANES];
	unsigned per_buffer, nlanes;
	uint64_t pieces = 0, range_io_ns = 0;
	size_t piece_bytes;
	int ret = 0;

	if (e->nstaging == 0 || e->nstreams == 0) {
		snprintf(err, errlen, "no pinned staging buffers on this GPU (--staging-mib 0)");
		return -ENOBUFS;
	}
	/* Lanes: each staging buffer split in two, at most GW_COPY_IO_LANES, at most one per
	 * piece. */
	per_buffer = e->nstaging * 2 <= GW_COPY_IO_LANES ? 2 : 1;
	piece_bytes = e->staging_bytes / per_buffer;
	for (uint32_t i = 0; i < r->nruns; i++) {
		uint64_t off, len;

		gw_vimg_run_span(v, r, &v->runs[r->first_run + i], &off, &len);
		if (!v->runs[r->first_run + i].zero)
			pieces += (len + piece_bytes - 1) / piece_bytes;
	}
	nlanes = e->nstaging * per_buffer;
	if (nlanes > GW_COPY_IO_LANES)
		nlanes = GW_COPY_IO_LANES;
	if (nlanes > pieces)
		nlanes = (unsigned)pieces;

	pthread_mutex_lock(e->staging_lock);
	/* The zero runs first: memsets on stream 0, synchronised with everything at the end. */
	for (uint32_t i = 0; !out && i < r->nruns && ret == 0; i++) {
		const struct gw_vimg_run *run = &v->runs[r->first_run + i];
		uint64_t off, len;
		CUresult cr;

		if (!run->zero)
			continue;
		gw_vimg_run_span(v, r, run, &off, &len);
		cr = e->cuda->cuMemsetD8Async(m->va + off, 0, len, e->streams[0]);
		if (cr != CUDA_SUCCESS)
			ret = fail(e, "cuMemsetD8Async", cr, err, errlen);
	}
	memset(lanes, 0, sizeof(lanes));
	for (unsigned i = 0; i < nlanes && ret == 0; i++) {
		struct io_lane *l = &lanes[i];

		l->e = e;
		l->v = v;
		l->r = r;
		l->m = m;
		l->s = s;
		l->out = out;
		l->index = i;
		l->count = nlanes;
		l->buf = (char *)e->staging[i / per_buffer] + (i % per_buffer) * piece_bytes;
		l->piece_bytes = piece_bytes;
		l->stream = e->streams[i % e->nstreams];
		/* Lane 0 runs on this thread, after the others have started. */
		if (i > 0 && pthread_create(&l->thread, NULL, lane_main, l) == 0)
			l->started = 1;
		else if (i > 0)
			lane_main(l); /* no thread to be had: do its share here */
	}
	if (nlanes > 0 && ret == 0)
		lane_main(&lanes[0]);
	for (unsigned i = 1; i < nlanes; i++)
		if (lanes[i].started)
			pthread_join(lanes[i].thread, NULL);
	for (unsigned i = 0; i < nlanes; i++) {
		range_io_ns = lanes[i].io_ns > range_io_ns ? lanes[i].io_ns : range_io_ns;
		if (lanes[i].ret < 0 && ret == 0) {
			ret = lanes[i].ret;
			snprintf(err, errlen, "%s", lanes[i].err);
		}
	}
	s->io_ns += range_io_ns; /* the lanes ran in parallel */
	if (ret == 0)
		ret = sync_all(e, err, errlen); /* the memsets */
	else
		sync_all(e, NULL, 0);
	pthread_mutex_unlock(e->staging_lock);
	return ret;
}

static int copy_range(const struct gw_copy_engine *e, const struct gw_vimg *v, uint32_t r,
		      const struct gw_copy_map *m, struct gw_copy_store *s, int out, char *err,
		      size_t errlen)
{
	int ret = make_current(e, err, errlen);

	if (ret < 0)
		return ret;
	return s->fd >= 0 ? copy_file(e, v, r, m, s, out, err, errlen) :
			    copy_blocks(e, v, r, m, s, out, err, errlen);
}

int gw_copy_out(const struct gw_copy_engine *e, const struct gw_vimg *v, uint32_t r,
		const struct gw_copy_map *m, struct gw_copy_store *s, char *err, size_t errlen)
{
	return copy_range(e, v, r, m, s, 1, err, errlen);
}

int gw_copy_in(const struct gw_copy_engine *e, const struct gw_vimg *v, uint32_t r,
	       const struct gw_copy_map *m, struct gw_copy_store *s, char *err, size_t errlen)
{
	return copy_range(e, v, r, m, s, 0, err, errlen);
}
