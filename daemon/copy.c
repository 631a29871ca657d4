/* SPDX-License-Identifier: MIT */
#include "copy.h"

#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* A range mapped into the daemon's address space. */
struct mapping {
	CUmemGenericAllocationHandle handle;
	CUdeviceptr va;
	size_t size;
	int mapped;
};

static int fail(const struct gw_copy_engine *e, const char *what, CUresult r, char *err,
		size_t errlen)
{
	char text[160];

	snprintf(err, errlen, "%s: %s", what, gw_cuda_describe(e->cuda, r, text, sizeof(text)));
	return gw_cuda_errno(r);
}

static int map_here(const struct gw_copy_engine *e, struct mapping *m, char *err, size_t errlen)
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

static void unmap_here(const struct gw_copy_engine *e, struct mapping *m)
{
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

/* Queue one async copy per block across the streams; then wait for all of them. */
static int copy_blocks(const struct gw_copy_engine *e, const struct gw_copy_range *ranges,
		       const struct mapping *maps, size_t n, int to_host, char *err, size_t errlen)
{
	const struct gw_cuda *cuda = e->cuda;
	unsigned next = 0;
	CUresult r;

	for (size_t i = 0; i < n; i++) {
		/* One copy per piece of the range that lies in one host block. */
		for (size_t off = 0; off < ranges[i].size;) {
			size_t pos = ranges[i].offset + off;
			char *host = (char *)ranges[i].blocks[pos / e->block_bytes] +
				     pos % e->block_bytes;
			size_t len = e->block_bytes - pos % e->block_bytes;
			CUstream s = e->streams[next++ % e->nstreams];

			if (len > ranges[i].size - off)
				len = ranges[i].size - off;
			r = to_host ? cuda->cuMemcpyDtoHAsync(host, maps[i].va + off, len, s) :
				      cuda->cuMemcpyHtoDAsync(maps[i].va + off, host, len, s);
			off += len;
			if (r != CUDA_SUCCESS) {
				for (unsigned k = 0; k < e->nstreams; k++)
					cuda->cuStreamSynchronize(e->streams[k]);
				return fail(e, to_host ? "cuMemcpyDtoHAsync" : "cuMemcpyHtoDAsync",
					    r, err, errlen);
			}
		}
	}
	for (unsigned k = 0; k < e->nstreams; k++) {
		r = cuda->cuStreamSynchronize(e->streams[k]);
		if (r != CUDA_SUCCESS)
			return fail(e, "cuStreamSynchronize", r, err, errlen);
	}
	return 0;
}

int gw_copy_dump(const struct gw_copy_engine *e, struct gw_copy_range *ranges, const int *fds,
		 size_t n, char *err, size_t errlen)
{
	const struct gw_cuda *cuda = e->cuda;
	struct mapping *maps = calloc(n ? n : 1, sizeof(*maps));
	int ret = 0;
	size_t i;

	if (!maps)
		return -ENOMEM;
	if (cuda->cuCtxSetCurrent(e->context) != CUDA_SUCCESS) {
		snprintf(err, errlen, "cannot make the GPU's context current");
		free(maps);
		return -EIO;
	}
	for (i = 0; i < n && ret == 0; i++) {
		CUresult r = cuda->cuMemImportFromShareableHandle(
			&maps[i].handle, (void *)(uintptr_t)fds[i],
			CU_MEM_HANDLE_TYPE_POSIX_FILE_DESCRIPTOR);

		maps[i].size = ranges[i].size;
		if (r != CUDA_SUCCESS) {
			maps[i].handle = 0;
			ret = fail(e, "cuMemImportFromShareableHandle", r, err, errlen);
			break;
		}
		ret = map_here(e, &maps[i], err, errlen);
	}
	if (ret == 0)
		ret = copy_blocks(e, ranges, maps, n, 1, err, errlen);
	/* Never keep the app's memory mapped here: the driver checkpoint that follows would
	 * "succeed" and the restore then fail for good (DESIGN.md's first trap). */
	for (i = 0; i < n; i++)
		unmap_here(e, &maps[i]);
	free(maps);
	return ret;
}

int gw_copy_restore(const struct gw_copy_engine *e, const struct gw_copy_range *ranges, size_t n,
		    int *ret_fds, char *err, size_t errlen)
{
	const struct gw_cuda *cuda = e->cuda;
	CUmemAllocationProp prop = {
		.type = CU_MEM_ALLOCATION_TYPE_PINNED,
		.requestedHandleTypes = CU_MEM_HANDLE_TYPE_POSIX_FILE_DESCRIPTOR,
		.location = { .type = CU_MEM_LOCATION_TYPE_DEVICE, .id = e->device },
	};
	struct mapping *maps = calloc(n ? n : 1, sizeof(*maps));
	int ret = 0;
	size_t i;

	if (!maps)
		return -ENOMEM;
	for (i = 0; i < n; i++)
		ret_fds[i] = -1;
	if (cuda->cuCtxSetCurrent(e->context) != CUDA_SUCCESS) {
		snprintf(err, errlen, "cannot make the GPU's context current");
		free(maps);
		return -EIO;
	}
	for (i = 0; i < n && ret == 0; i++) {
		CUresult r = cuda->cuMemCreate(&maps[i].handle, ranges[i].size, &prop, 0);

		maps[i].size = ranges[i].size;
		if (r != CUDA_SUCCESS) {
			maps[i].handle = 0;
			ret = fail(e, "cuMemCreate", r, err, errlen);
			break;
		}
		ret = map_here(e, &maps[i], err, errlen);
	}
	if (ret == 0)
		ret = copy_blocks(e, ranges, maps, n, 0, err, errlen);
	for (i = 0; i < n && ret == 0; i++) {
		int fd = -1;
		CUresult r = cuda->cuMemExportToShareableHandle(
			&fd, maps[i].handle, CU_MEM_HANDLE_TYPE_POSIX_FILE_DESCRIPTOR, 0);

		if (r != CUDA_SUCCESS) {
			ret = fail(e, "cuMemExportToShareableHandle", r, err, errlen);
			break;
		}
		ret_fds[i] = fd;
	}
	/* The exported fds keep the memory alive; the daemon holds nothing the app will map. */
	for (i = 0; i < n; i++)
		unmap_here(e, &maps[i]);
	if (ret < 0)
		for (i = 0; i < n; i++)
			if (ret_fds[i] >= 0) {
				close(ret_fds[i]);
				ret_fds[i] = -1;
			}
	free(maps);
	return ret;
}
