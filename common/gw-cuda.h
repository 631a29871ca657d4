/* SPDX-License-Identifier: MIT */
/*
 * Run-time loader for the CUDA driver: dlopen("libcuda.so.1") (or a path given by the caller,
 * e.g. the project's fake driver), then every entry point through cuGetProcAddress. Nothing here
 * logs: failures come back as a negative errno plus a message in the caller's buffer.
 */
#ifndef GW_CUDA_H
#define GW_CUDA_H

#include "gw-cuda-abi.h"

#define GW_CUDA_DEFAULT_LIBRARY "libcuda.so.1"
#define GW_CUDA_LIBRARY_ENV "GPUWARM_CUDA_LIBRARY"

struct gw_cuda {
	void *dl;
	char *path;          /* the library as opened */
	int driver_version;  /* cuDriverGetVersion(), e.g. 13000 */
#define GW_CUDA_MEMBER(name, params) CUresult (*name) params;
	GW_CUDA_REQUIRED_ENTRY_POINTS(GW_CUDA_MEMBER)
	GW_CUDA_OPTIONAL_ENTRY_POINTS(GW_CUDA_MEMBER)
#undef GW_CUDA_MEMBER
};

/*
 * Load the driver from path (NULL: $GPUWARM_CUDA_LIBRARY, else libcuda.so.1) and resolve its
 * entry points. Does not call cuInit. On failure returns -ENOENT (library absent), -ENOSYS (a
 * required entry point missing) and writes a one-line reason into err.
 */
int gw_cuda_load(const char *path, struct gw_cuda **ret_cuda, char *err, size_t errlen);
void gw_cuda_unload(struct gw_cuda *cuda);

/* True when the driver has the checkpoint API (cuCheckpointProcess*). */
int gw_cuda_has_checkpoint(const struct gw_cuda *cuda);
/* True when the driver has the VMM API with fd export (cuMemCreate ... cuMemImportFromShareableHandle). */
int gw_cuda_has_vmm(const struct gw_cuda *cuda);

/* "CUDA_ERROR_ILLEGAL_STATE (401): operation not permitted in current state"-style text. The
 * buffer is always NUL-terminated; returns it. cuda may be NULL. */
const char *gw_cuda_describe(const struct gw_cuda *cuda, CUresult r, char *buf, size_t len);

/* Map a CUresult onto a negative errno, for callers that speak errno. */
int gw_cuda_errno(CUresult r);

/* Canonical text form of a UUID: "GPU-xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx" (buf >= 41). */
void gw_cuda_uuid_format(const CUuuid *uuid, char *buf, size_t len);
/* Parse that form (the "GPU-" prefix optional). Returns 0 or -EINVAL. */
int gw_cuda_uuid_parse(const char *text, CUuuid *ret_uuid);

#endif
