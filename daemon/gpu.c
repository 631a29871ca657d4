/* SPDX-License-Identifier: MIT */
#include "gpu.h"
#include "gw-proto.h"
#include "log.h"
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

int gw_gpu_state_accepts_work(enum gw_gpu_state state)
{
	return state == GW_GPU_READY;
}

int gw_gpu_accepts_work(const struct gw_gpu *gpu)
{
	return gw_gpu_state_accepts_work(gpu->state);
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

/* ---- the table: states, transitions, counts ---- */

static int in_mask(uint64_t mask, unsigned i)
{
	return i < 64 && (mask & ((uint64_t)1 << i));
}

void gw_gpu_table_init(struct gw_gpu_table *t, const struct gw_gpu_table_hooks *hooks,
		       void *data)
{
	memset(t, 0, sizeof(*t));
	t->hooks = hooks;
	t->data = data;
}

int gw_gpu_table_discover(struct gw_gpu_table *t, const struct gw_cuda *cuda, char *err,
			  size_t errlen)
{
	int n = gw_gpu_discover(cuda, t->gpus, GW_GPU_MAX, err, errlen);

	if (n < 0)
		return n;
	t->cuda = cuda;
	t->count = (unsigned)n;
	return n;
}

void gw_gpu_table_finish(struct gw_gpu_table *t)
{
	for (unsigned i = 0; i < t->count; i++) {
		struct gw_gpu *gpu = &t->gpus[i];

		if (gpu->handles.context) {
			gw_gpu_release(gpu->device, t->cuda, &gpu->handles);
			gw_gpu_log(gpu, LOG_INFO, "released");
		}
	}
}

uint64_t gw_gpu_table_all(const struct gw_gpu_table *t)
{
	return t->count >= 64 ? UINT64_MAX : ((uint64_t)1 << t->count) - 1;
}

uint64_t gw_gpu_table_accepting(const struct gw_gpu_table *t)
{
	uint64_t mask = 0;

	for (unsigned i = 0; i < t->count; i++)
		if (gw_gpu_accepts_work(&t->gpus[i]))
			mask |= (uint64_t)1 << i;
	return mask;
}

CUcontext gw_gpu_table_any_context(const struct gw_gpu_table *t)
{
	for (unsigned i = 0; i < t->count; i++)
		if (t->gpus[i].handles.context)
			return t->gpus[i].handles.context;
	return NULL;
}

static void start_prime(struct gw_gpu_table *t, struct gw_gpu *gpu)
{
	int r;

	gpu->state = GW_GPU_PRIMING;
	r = t->hooks && t->hooks->prime ? t->hooks->prime(t->data, gpu) : -ENOSYS;
	if (r < 0) {
		gpu->state = GW_GPU_FAILED;
		snprintf(gpu->error, sizeof(gpu->error), "cannot queue priming: %s", strerror(-r));
	}
}

static void start_release(struct gw_gpu_table *t, struct gw_gpu *gpu)
{
	struct gw_gpu_handles handles = gpu->handles;

	gpu->state = GW_GPU_RELEASING;
	memset(&gpu->handles, 0, sizeof(gpu->handles));
	if (t->hooks && t->hooks->release && t->hooks->release(t->data, gpu, &handles) == 0)
		return;
	/* Could not queue: release right here rather than leave the GPU half-drained. */
	gpu->handles = handles;
	if (t->cuda)
		gw_gpu_release(gpu->device, t->cuda, &gpu->handles);
	gpu->state = GW_GPU_DRAINED;
}

static void advance(struct gw_gpu_table *t)
{
	for (unsigned i = 0; i < t->count; i++) {
		struct gw_gpu *gpu = &t->gpus[i];

		if (gpu->drain_after_prime &&
		    (gpu->state == GW_GPU_READY || gpu->state == GW_GPU_FAILED)) {
			gpu->drain_after_prime = 0;
			gpu->state = GW_GPU_DRAINING;
		}
		if (gpu->state == GW_GPU_DRAINING && gpu->in_flight == 0)
			start_release(t, gpu);
		if (gpu->state == GW_GPU_DRAINED && gpu->prime_after_release) {
			gpu->prime_after_release = 0;
			start_prime(t, gpu);
		}
	}
}

void gw_gpu_table_changed(struct gw_gpu_table *t)
{
	advance(t);
	if (t->hooks && t->hooks->changed)
		t->hooks->changed(t->data);
}

void gw_gpu_table_prime_all(struct gw_gpu_table *t)
{
	for (unsigned i = 0; i < t->count; i++)
		start_prime(t, &t->gpus[i]);
	gw_gpu_table_changed(t);
}

void gw_gpu_table_drain(struct gw_gpu_table *t, uint64_t mask)
{
	for (unsigned i = 0; i < t->count; i++) {
		struct gw_gpu *gpu = &t->gpus[i];

		if (!in_mask(mask, i))
			continue;
		gpu->prime_after_release = 0;
		if (gpu->state == GW_GPU_PRIMING) {
			gpu->drain_after_prime = 1;
		} else if (gpu->state == GW_GPU_READY || gpu->state == GW_GPU_FAILED) {
			gw_gpu_log(gpu, LOG_NOTICE, "draining (%u operations in flight)",
				   gpu->in_flight);
			gpu->state = GW_GPU_DRAINING;
		}
	}
	gw_gpu_table_changed(t);
}

void gw_gpu_table_undrain(struct gw_gpu_table *t, uint64_t mask)
{
	for (unsigned i = 0; i < t->count; i++) {
		struct gw_gpu *gpu = &t->gpus[i];

		if (!in_mask(mask, i))
			continue;
		switch (gpu->state) {
		case GW_GPU_DRAINING:
			gpu->state = GW_GPU_READY; /* never released: nothing to re-prime */
			gw_gpu_log(gpu, LOG_NOTICE, "undrained");
			break;
		case GW_GPU_RELEASING:
			gpu->prime_after_release = 1;
			break;
		case GW_GPU_PRIMING:
			gpu->drain_after_prime = 0;
			break;
		case GW_GPU_DRAINED:
		case GW_GPU_FAILED:
			gw_gpu_log(gpu, LOG_NOTICE, "undraining: priming again");
			start_prime(t, gpu);
			break;
		case GW_GPU_READY:
			break;
		}
	}
	gw_gpu_table_changed(t);
}

void gw_gpu_table_primed(struct gw_gpu_table *t, unsigned index,
			 const struct gw_gpu_handles *handles, int result)
{
	struct gw_gpu *gpu;

	if (index >= t->count)
		return;
	gpu = &t->gpus[index];
	gpu->handles = *handles;
	if (result < 0) {
		gpu->state = GW_GPU_FAILED;
		snprintf(gpu->error, sizeof(gpu->error), "%s", handles->error);
		gw_gpu_log(gpu, LOG_ERR, "priming failed: %s", gpu->error);
	} else {
		gpu->error[0] = '\0';
		gpu->memory_free = handles->memory_free;
		gpu->state = GW_GPU_READY;
		gw_gpu_log(gpu, LOG_INFO, "primed: context retained, %zu MiB pinned in %.0f ms",
			   gw_staging_pool_bytes(&gpu->handles.staging) >> 20,
			   gpu->handles.staging.pin_ms);
		if (!gpu->handles.scan)
			gw_gpu_log(gpu, LOG_WARNING, "chunk scan unavailable (%s): VRAM images "
				   "will be dense and their checksums unverified",
				   gpu->handles.scan_error);
	}
	gw_gpu_table_changed(t);
}

void gw_gpu_table_released(struct gw_gpu_table *t, unsigned index)
{
	if (index >= t->count)
		return;
	t->gpus[index].state = GW_GPU_DRAINED;
	gw_gpu_log(&t->gpus[index], LOG_NOTICE, "drained: context and pinned memory released");
	gw_gpu_table_changed(t);
}

void gw_gpu_op_begin(struct gw_gpu_table *t, uint64_t mask)
{
	for (unsigned i = 0; i < t->count; i++)
		if (in_mask(mask, i))
			t->gpus[i].in_flight++;
}

void gw_gpu_op_end(struct gw_gpu_table *t, uint64_t mask)
{
	for (unsigned i = 0; i < t->count; i++)
		if (in_mask(mask, i) && t->gpus[i].in_flight > 0)
			t->gpus[i].in_flight--;
}

void gw_gpu_lease_add(struct gw_gpu_table *t, unsigned index)
{
	if (index < t->count)
		t->gpus[index].leases++;
}

void gw_gpu_lease_drop(struct gw_gpu_table *t, unsigned index)
{
	if (index < t->count && t->gpus[index].leases > 0)
		t->gpus[index].leases--;
}
