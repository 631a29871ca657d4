/* SPDX-License-Identifier: MIT */
#include "gw-cuda.h"

#include <dlfcn.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* The ABI gw-cuda-abi.h declares: the driver hands back, for each base name, the entry point of
 * the newest version <= this. It must stay 12080 (the checkpoint API's version): asking for 13000
 * returns CUDA 13 signatures, e.g. cuCtxSynchronize(CUcontext) and cuCtxGetDevice(dev, ctx), that
 * our header declares differently (measured on driver 580: CUDA_ERROR_CONTEXT_IS_DESTROYED). */
#define GW_CUDA_ABI_VERSION 12080

/* cuGetProcAddress before CUDA 12.0 had no status argument. */
typedef CUresult (*gw_cuGetProcAddress_v1_fn)(const char *symbol, void **pfn, int cuda_version,
					      cuuint64_t flags);

struct proc_lookup {
	gw_cuGetProcAddress_fn v2;
	gw_cuGetProcAddress_v1_fn v1;
};

static int resolve(const struct proc_lookup *lookup, int version, const char *name,
		   void **ret_fn)
{
	CUdriverProcAddressQueryResult status = CU_GET_PROC_ADDRESS_SYMBOL_NOT_FOUND;
	void *fn = NULL;
	CUresult r;

	if (lookup->v2) {
		r = lookup->v2(name, &fn, version, CU_GET_PROC_ADDRESS_DEFAULT, &status);
	} else {
		r = lookup->v1(name, &fn, version, CU_GET_PROC_ADDRESS_DEFAULT);
		status = CU_GET_PROC_ADDRESS_SUCCESS;
	}
	if (r != CUDA_SUCCESS || status != CU_GET_PROC_ADDRESS_SUCCESS || !fn)
		return -ENOSYS;
	*ret_fn = fn;
	return 0;
}

int gw_cuda_load(const char *path, struct gw_cuda **ret_cuda, char *err, size_t errlen)
{
	struct gw_cuda *cuda = NULL;
	struct proc_lookup getproc;
	CUresult (*get_version)(int *);
	int version, r;

	if (!path || !*path)
		path = getenv(GW_CUDA_LIBRARY_ENV);
	if (!path || !*path)
		path = GW_CUDA_DEFAULT_LIBRARY;

	cuda = calloc(1, sizeof(*cuda));
	if (!cuda) {
		snprintf(err, errlen, "out of memory");
		return -ENOMEM;
	}
	cuda->path = strdup(path);
	if (!cuda->path) {
		snprintf(err, errlen, "out of memory");
		r = -ENOMEM;
		goto fail;
	}
	cuda->dl = dlopen(path, RTLD_NOW | RTLD_LOCAL);
	if (!cuda->dl) {
		snprintf(err, errlen, "cannot load the CUDA driver %s: %s", path, dlerror());
		r = -ENOENT;
		goto fail;
	}
	getproc.v2 = (gw_cuGetProcAddress_fn)dlsym(cuda->dl, "cuGetProcAddress_v2");
	getproc.v1 = (gw_cuGetProcAddress_v1_fn)dlsym(cuda->dl, "cuGetProcAddress");
	get_version = (CUresult(*)(int *))dlsym(cuda->dl, "cuDriverGetVersion");
	if ((!getproc.v2 && !getproc.v1) || !get_version) {
		snprintf(err, errlen, "%s is not a CUDA driver (no cuGetProcAddress/cuDriverGetVersion)",
			 path);
		r = -ENOSYS;
		goto fail;
	}
	if (get_version(&version) != CUDA_SUCCESS || version <= 0) {
		snprintf(err, errlen, "%s: cuDriverGetVersion failed", path);
		r = -ENOSYS;
		goto fail;
	}
	cuda->driver_version = version;
	if (version > GW_CUDA_ABI_VERSION)
		version = GW_CUDA_ABI_VERSION;

#define GW_CUDA_RESOLVE_REQUIRED(name, params)                                                    \
	if (resolve(&getproc, version, #name, (void **)&cuda->name) < 0) {                         \
		snprintf(err, errlen, "%s (CUDA %d.%d) lacks the entry point %s", path,           \
			 cuda->driver_version / 1000, cuda->driver_version % 1000 / 10, #name);   \
		r = -ENOSYS;                                                                      \
		goto fail;                                                                        \
	}
	GW_CUDA_REQUIRED_ENTRY_POINTS(GW_CUDA_RESOLVE_REQUIRED)
#undef GW_CUDA_RESOLVE_REQUIRED
#define GW_CUDA_RESOLVE_OPTIONAL(name, params) (void)resolve(&getproc, version, #name, (void **)&cuda->name);
	GW_CUDA_OPTIONAL_ENTRY_POINTS(GW_CUDA_RESOLVE_OPTIONAL)
#undef GW_CUDA_RESOLVE_OPTIONAL

	*ret_cuda = cuda;
	return 0;
fail:
	gw_cuda_unload(cuda);
	return r;
}

void gw_cuda_unload(struct gw_cuda *cuda)
{
	if (!cuda)
		return;
	if (cuda->dl)
		dlclose(cuda->dl);
	free(cuda->path);
	free(cuda);
}

int gw_cuda_has_checkpoint(const struct gw_cuda *cuda)
{
	return cuda && cuda->cuCheckpointProcessGetState && cuda->cuCheckpointProcessLock &&
	       cuda->cuCheckpointProcessCheckpoint && cuda->cuCheckpointProcessRestore &&
	       cuda->cuCheckpointProcessUnlock && cuda->cuCheckpointProcessGetRestoreThreadId;
}

int gw_cuda_has_vmm(const struct gw_cuda *cuda)
{
	return cuda && cuda->cuMemAddressReserve && cuda->cuMemAddressFree && cuda->cuMemCreate &&
	       cuda->cuMemRelease && cuda->cuMemMap && cuda->cuMemUnmap && cuda->cuMemSetAccess &&
	       cuda->cuMemExportToShareableHandle && cuda->cuMemImportFromShareableHandle &&
	       cuda->cuMemGetAllocationGranularity;
}

const char *gw_cuda_describe(const struct gw_cuda *cuda, CUresult r, char *buf, size_t len)
{
	const char *name = NULL, *text = NULL;

	if (cuda) {
		if (cuda->cuGetErrorName(r, &name) != CUDA_SUCCESS)
			name = NULL;
		if (cuda->cuGetErrorString(r, &text) != CUDA_SUCCESS)
			text = NULL;
	}
	snprintf(buf, len, "%s (%d)%s%s", name ? name : "CUDA error", r, text ? ": " : "",
		 text ? text : "");
	return buf;
}

int gw_cuda_errno(CUresult r)
{
	switch (r) {
	case CUDA_SUCCESS:
		return 0;
	case CUDA_ERROR_INVALID_VALUE:
	case CUDA_ERROR_INVALID_HANDLE:
		return -EINVAL;
	case CUDA_ERROR_OUT_OF_MEMORY:
		return -ENOMEM;
	case CUDA_ERROR_NO_DEVICE:
	case CUDA_ERROR_INVALID_DEVICE:
		return -ENODEV;
	case CUDA_ERROR_NOT_FOUND:
		return -ESRCH;
	case CUDA_ERROR_ILLEGAL_STATE:
		return -EBADFD; /* the process is in the wrong state for the call */
	case CUDA_ERROR_NOT_READY:
	case CUDA_ERROR_TIMEOUT:
		return -ETIMEDOUT;
	case CUDA_ERROR_NOT_PERMITTED:
		return -EPERM;
	case CUDA_ERROR_NOT_SUPPORTED:
		return -EOPNOTSUPP;
	default:
		return -EIO;
	}
}

void gw_cuda_uuid_format(const CUuuid *uuid, char *buf, size_t len)
{
	const unsigned char *b = (const unsigned char *)uuid->bytes;

	snprintf(buf, len,
		 "GPU-%02x%02x%02x%02x-%02x%02x-%02x%02x-%02x%02x-%02x%02x%02x%02x%02x%02x", b[0],
		 b[1], b[2], b[3], b[4], b[5], b[6], b[7], b[8], b[9], b[10], b[11], b[12], b[13],
		 b[14], b[15]);
}

static int hex_value(char c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	if (c >= 'A' && c <= 'F')
		return c - 'A' + 10;
	return -1;
}

int gw_cuda_uuid_parse(const char *text, CUuuid *ret_uuid)
{
	static const int dash_after[] = { 4, 6, 8, 10 };
	CUuuid uuid;
	size_t n = 0, dash = 0;

	if (!text)
		return -EINVAL;
	if (strncmp(text, "GPU-", 4) == 0)
		text += 4;
	while (n < 16) {
		int hi, lo;

		if (dash < 4 && n == (size_t)dash_after[dash]) {
			if (*text != '-')
				return -EINVAL;
			text++;
			dash++;
		}
		hi = hex_value(text[0]);
		lo = hi < 0 ? -1 : hex_value(text[1]);
		if (lo < 0)
			return -EINVAL;
		uuid.bytes[n++] = (char)(hi << 4 | lo);
		text += 2;
	}
	if (*text)
		return -EINVAL;
	*ret_uuid = uuid;
	return 0;
}
