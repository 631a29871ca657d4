/* SPDX-License-Identifier: MIT */
#include "gpu.h"
#include "gw-proto.h"
#include "scan-ptx.h"

#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

const char *gw_gpu_state_name(enum gw_gpu_state state)
{
	switch (state) {
	case GW_GPU_PRIMING:
		return GW_GPU_STATE_PRIMING;
	case GW_GPU_READY:
		return GW_GPU_STATE_READY;
	case GW_GPU_DRAINING:
	case GW_GPU_RELEASING:
		return GW_GPU_STATE_DRAINING;
	case GW_GPU_DRAINED:
		return GW_GPU_STATE_DRAINED;
	case GW_GPU_FAILED:
		return GW_GPU_STATE_FAILED;
	}
	return "unknown";
}

static int describe_failure(const struct gw_cuda *cuda, const char *what, CUresult r, char *err,
			    size_t errlen)
{
	char text[160];

	snprintf(err, errlen, "%s failed: %s", what, gw_cuda_describe(cuda, r, text, sizeof(text)));
	return gw_cuda_errno(r);
}

int gw_gpu_discover(const struct gw_cuda *cuda, struct gw_gpu *gpus, unsigned max, char *err,
		    size_t errlen)
{
	int count = 0;
	CUresult r;

	r = cuda->cuDeviceGetCount(&count);
	if (r != CUDA_SUCCESS)
		return describe_failure(cuda, "cuDeviceGetCount", r, err, errlen);
	if (count < 0)
		count = 0;
	if ((unsigned)count > max)
		count = (int)max;

	for (int i = 0; i < count; i++) {
		struct gw_gpu *gpu = &gpus[i];
		int domain = 0, bus = 0, dev = 0;

		memset(gpu, 0, sizeof(*gpu));
		pthread_mutex_init(&gpu->staging_lock, NULL);
		gpu->index = (unsigned)i;
		gpu->state = GW_GPU_PRIMING;
		r = cuda->cuDeviceGet(&gpu->device, i);
		if (r == CUDA_SUCCESS)
			r = cuda->cuDeviceGetUuid(&gpu->uuid, gpu->device);
		if (r == CUDA_SUCCESS)
			r = cuda->cuDeviceGetName(gpu->name, sizeof(gpu->name), gpu->device);
		if (r == CUDA_SUCCESS)
			r = cuda->cuDeviceTotalMem(&gpu->memory_total, gpu->device);
		if (r == CUDA_SUCCESS)
			r = cuda->cuDeviceGetAttribute(&domain, CU_DEVICE_ATTRIBUTE_PCI_DOMAIN_ID,
						       gpu->device);
		if (r == CUDA_SUCCESS)
			r = cuda->cuDeviceGetAttribute(&bus, CU_DEVICE_ATTRIBUTE_PCI_BUS_ID,
						       gpu->device);
		if (r == CUDA_SUCCESS)
			r = cuda->cuDeviceGetAttribute(&dev, CU_DEVICE_ATTRIBUTE_PCI_DEVICE_ID,
						       gpu->device);
		if (r != CUDA_SUCCESS) {
			char what[64];

			snprintf(what, sizeof(what), "reading GPU %d's identity", i);
			return describe_failure(cuda, what, r, err, errlen);
		}
		gpu->name[sizeof(gpu->name) - 1] = '\0';
		gw_cuda_uuid_format(&gpu->uuid, gpu->uuid_text, sizeof(gpu->uuid_text));
		snprintf(gpu->pci_bus_id, sizeof(gpu->pci_bus_id), "%04x:%02x:%02x.0",
			 (unsigned)domain & 0xffff, (unsigned)bus & 0xff, (unsigned)dev & 0x1f);
		gpu->memory_free = gpu->memory_total;
	}
	return count;
}

/* Not fatal: without the kernel the fast path still works, with dense, unverified images. */
static void load_scan(const struct gw_cuda *cuda, struct gw_gpu_handles *h)
{
	char text[120];
	CUresult r;

	if (!cuda->cuModuleLoadData || !cuda->cuModuleGetFunction || !cuda->cuLaunchKernel ||
	    !cuda->cuMemsetD8Async || !cuda->cuModuleUnload) {
		snprintf(h->scan_error, sizeof(h->scan_error),
			 "the driver lacks the module or launch entry points");
		return;
	}
	r = cuda->cuModuleLoadData(&h->scan_module, gw_scan_ptx);
	if (r != CUDA_SUCCESS) {
		h->scan_module = NULL;
		snprintf(h->scan_error, sizeof(h->scan_error), "cuModuleLoadData: %s",
			 gw_cuda_describe(cuda, r, text, sizeof(text)));
		return;
	}
	r = cuda->cuModuleGetFunction(&h->scan, h->scan_module, "gw_scan_chunks");
	if (r != CUDA_SUCCESS) {
		snprintf(h->scan_error, sizeof(h->scan_error), "cuModuleGetFunction: %s",
			 gw_cuda_describe(cuda, r, text, sizeof(text)));
		cuda->cuModuleUnload(h->scan_module);
		h->scan_module = NULL;
		h->scan = NULL;
	}
}

int gw_gpu_prime(CUdevice device, const struct gw_cuda *cuda, size_t staging_bytes,
		 struct gw_gpu_handles *ret)
{
	CUresult r, pin_r = CUDA_SUCCESS;
	size_t free_bytes = 0, total = 0;
	int err;

	memset(ret, 0, sizeof(*ret));
	r = cuda->cuDevicePrimaryCtxRetain(&ret->context, device);
	if (r != CUDA_SUCCESS) {
		ret->context = NULL;
		return describe_failure(cuda, "cuDevicePrimaryCtxRetain", r, ret->error,
					sizeof(ret->error));
	}
	r = cuda->cuCtxSetCurrent(ret->context);
	if (r != CUDA_SUCCESS) {
		err = describe_failure(cuda, "cuCtxSetCurrent", r, ret->error, sizeof(ret->error));
		goto fail_release;
	}
	for (; ret->nstreams < GW_GPU_STREAMS; ret->nstreams++) {
		r = cuda->cuStreamCreate(&ret->streams[ret->nstreams], CU_STREAM_NON_BLOCKING);
		if (r != CUDA_SUCCESS) {
			err = describe_failure(cuda, "cuStreamCreate", r, ret->error,
					       sizeof(ret->error));
			goto fail_release;
		}
	}
	err = gw_staging_pool_init(&ret->staging, cuda, staging_bytes, &pin_r);
	if (err < 0) {
		char text[160];

		snprintf(ret->error, sizeof(ret->error), "pinning %zu MiB of staging memory: %s",
			 staging_bytes >> 20,
			 pin_r != CUDA_SUCCESS ? gw_cuda_describe(cuda, pin_r, text, sizeof(text)) :
						 strerror(-err));
		goto fail_release;
	}
	load_scan(cuda, ret);
	if (cuda->cuMemGetInfo(&free_bytes, &total) == CUDA_SUCCESS)
		ret->memory_free = free_bytes;
	return 0;

fail_release:
	while (ret->nstreams > 0)
		cuda->cuStreamDestroy(ret->streams[--ret->nstreams]);
	cuda->cuCtxSetCurrent(NULL);
	cuda->cuDevicePrimaryCtxRelease(device);
	ret->context = NULL;
	return err;
}

void gw_gpu_release(CUdevice device, const struct gw_cuda *cuda, struct gw_gpu_handles *handles)
{
	if (!handles->context)
		return;
	cuda->cuCtxSetCurrent(handles->context);
	if (handles->scan_module)
		cuda->cuModuleUnload(handles->scan_module);
	handles->scan_module = NULL;
	handles->scan = NULL;
	gw_staging_pool_finish(&handles->staging);
	while (handles->nstreams > 0)
		cuda->cuStreamDestroy(handles->streams[--handles->nstreams]);
	cuda->cuCtxSetCurrent(NULL);
	cuda->cuDevicePrimaryCtxRelease(device);
	handles->context = NULL;
}

void gw_gpu_refresh_memory(struct gw_gpu *gpu, const struct gw_cuda *cuda)
{
	size_t free_bytes = 0, total = 0;

	if (!gpu->handles.context || cuda->cuCtxSetCurrent(gpu->handles.context) != CUDA_SUCCESS)
		return;
	if (cuda->cuMemGetInfo(&free_bytes, &total) == CUDA_SUCCESS)
		gpu->memory_free = free_bytes;
}

static int parse_index(const char *s, unsigned *ret)
{
	char *end;
	unsigned long v;

	if (!*s || !isdigit((unsigned char)*s) || strlen(s) > 3)
		return -EINVAL;
	errno = 0;
	v = strtoul(s, &end, 10);
	if (errno || *end)
		return -EINVAL;
	*ret = (unsigned)v;
	return 0;
}

/* Normalise "3b:00.0" / "0000:3B:00.0" to "0000:3b:00.0". */
static int normalise_pci(const char *s, char *out, size_t len)
{
	unsigned domain = 0, bus, dev, fn;
	int n = 0;

	if (sscanf(s, "%x:%x:%x.%x%n", &domain, &bus, &dev, &fn, &n) == 4 && !s[n])
		;
	else if (domain = 0, n = 0, sscanf(s, "%x:%x.%x%n", &bus, &dev, &fn, &n) == 3 && !s[n])
		;
	else
		return -EINVAL;
	if (domain > 0xffff || bus > 0xff || dev > 0x1f || fn > 7)
		return -EINVAL;
	snprintf(out, len, "%04x:%02x:%02x.%x", domain, bus, dev, fn);
	return 0;
}

struct gw_gpu *gw_gpu_find(struct gw_gpu *gpus, unsigned count, const char *selector)
{
	char pci[GW_GPU_PCI_LEN];
	CUuuid uuid;
	unsigned index;

	if (!selector)
		return NULL;
	if (parse_index(selector, &index) == 0)
		return index < count ? &gpus[index] : NULL;
	if (gw_cuda_uuid_parse(selector, &uuid) == 0)
		return gw_gpu_find_uuid(gpus, count, &uuid);
	if (normalise_pci(selector, pci, sizeof(pci)) == 0) {
		for (unsigned i = 0; i < count; i++)
			if (strcasecmp(gpus[i].pci_bus_id, pci) == 0)
				return &gpus[i];
	}
	return NULL;
}

struct gw_gpu *gw_gpu_find_uuid(struct gw_gpu *gpus, unsigned count, const CUuuid *uuid)
{
	for (unsigned i = 0; i < count; i++)
		if (memcmp(gpus[i].uuid.bytes, uuid->bytes, sizeof(uuid->bytes)) == 0)
			return &gpus[i];
	return NULL;
}
