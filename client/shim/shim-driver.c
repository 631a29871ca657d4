/* SPDX-License-Identifier: MIT */
#include "shim-driver.h"

#include <dlfcn.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#include "gw-cuda.h"

static pthread_mutex_t drv_lock = PTHREAD_MUTEX_INITIALIZER;
/* This thread holds drv_lock: loading or resolving the driver may run code that calls dlsym. */
static __thread bool drv_lock_held;
static struct shim_driver drv;
static bool drv_bound;           /* drv.dl, base, gpa_* set */
static atomic_bool drv_resolved; /* the entry points too */

static void *lookup_export(void *dl, const char *name)
{
	void *fn = shim_real_dlsym ? shim_real_dlsym(dl, name) : NULL;

	return fn && !shim_is_own(fn) ? fn : NULL;
}

/* Bind to the library loaded as dl (a reference we keep). Called with drv_lock held. */
static bool bind_handle(void *dl)
{
	void *gpa_v2 = lookup_export(dl, "cuGetProcAddress_v2");
	void *gpa_v1 = lookup_export(dl, "cuGetProcAddress");
	Dl_info info;

	if ((!gpa_v2 && !gpa_v1) || !dladdr(gpa_v2 ? gpa_v2 : gpa_v1, &info) || !info.dli_fbase) {
		dlclose(dl);
		return false;
	}
	drv.dl = dl;
	drv.base = info.dli_fbase;
	drv.gpa_v2 = (gw_cuGetProcAddress_fn)gpa_v2;
	drv.gpa_v1 = (shim_gpa_v1_fn)gpa_v1;
	drv_bound = true;
	shim_log("driver %s", info.dli_fname ? info.dli_fname : "?");
	return true;
}

/* The library holding fn, when it is a CUDA driver. Called with drv_lock held. */
static bool bind_from_fn(const void *fn)
{
	Dl_info info;
	void *dl;

	if (!fn || shim_is_own(fn) || !dladdr(fn, &info) || !info.dli_fname || !info.dli_fbase)
		return false;
	dl = dlopen(info.dli_fname, RTLD_NOW | RTLD_NOLOAD);
	return dl && bind_handle(dl);
}

/* For a direct call: the library the app already has, else load it. Called with drv_lock held. */
static bool bind_direct(void)
{
	const char *path = getenv(GW_CUDA_LIBRARY_ENV);
	void *dl;

	if (!path || !*path)
		path = GW_CUDA_DEFAULT_LIBRARY;
	dl = dlopen(path, RTLD_NOW | RTLD_NOLOAD);
	if (dl && bind_handle(dl))
		return true;
	/* the next definition after the shim: what the app would have called without it */
	if (shim_real_dlsym && bind_from_fn(shim_real_dlsym(RTLD_NEXT, "cuGetProcAddress_v2")))
		return true;
	dl = dlopen(path, RTLD_NOW | RTLD_LOCAL);
	return dl && bind_handle(dl);
}

static void *resolve_one(const char *base, const char *exported, int version)
{
	CUdriverProcAddressQueryResult st = CU_GET_PROC_ADDRESS_SYMBOL_NOT_FOUND;
	void *fn = NULL;
	CUresult r = CUDA_ERROR_NOT_FOUND;

	if (drv.gpa_v2)
		r = drv.gpa_v2(base, &fn, version, CU_GET_PROC_ADDRESS_DEFAULT, &st);
	else if (drv.gpa_v1 && (r = drv.gpa_v1(base, &fn, version, CU_GET_PROC_ADDRESS_DEFAULT)) ==
				       CUDA_SUCCESS)
		st = CU_GET_PROC_ADDRESS_SUCCESS;
	if (r != CUDA_SUCCESS || st != CU_GET_PROC_ADDRESS_SUCCESS || !fn || shim_is_own(fn))
		fn = lookup_export(drv.dl, exported);
	return fn;
}

/* Called with drv_lock held and the driver bound. */
static void resolve(void)
{
	CUresult (*get_version)(int *) = lookup_export(drv.dl, "cuDriverGetVersion");
	int version = 0;

	if (!get_version || get_version(&version) != CUDA_SUCCESS || version <= 0)
		version = SHIM_DRIVER_ABI_VERSION;
	drv.version = version;
	if (version > SHIM_DRIVER_ABI_VERSION)
		version = SHIM_DRIVER_ABI_VERSION;
#define SHIM_DRIVER_RESOLVE(name, sym, params) drv.name = resolve_one(#name, sym, version);
	SHIM_DRIVER_ENTRY_POINTS(SHIM_DRIVER_RESOLVE)
#undef SHIM_DRIVER_RESOLVE
	drv.v1_cuMemAlloc = lookup_export(drv.dl, "cuMemAlloc");
	drv.v1_cuMemFree = lookup_export(drv.dl, "cuMemFree");
	drv.v1_cuMemAllocPitch = lookup_export(drv.dl, "cuMemAllocPitch");
	drv.vmm = drv.cuCtxGetDevice && drv.cuCtxSetCurrent && drv.cuCtxSynchronize &&
		  drv.cuDevicePrimaryCtxRetain && drv.cuDevicePrimaryCtxRelease &&
		  drv.cuDeviceGetUuid && drv.cuMemAddressReserve && drv.cuMemAddressFree &&
		  drv.cuMemCreate && drv.cuMemRelease && drv.cuMemMap && drv.cuMemUnmap &&
		  drv.cuMemSetAccess && drv.cuMemExportToShareableHandle &&
		  drv.cuMemImportFromShareableHandle && drv.cuMemGetAllocationGranularity;
	shim_log("driver version %d, %s", drv.version,
		 drv.vmm ? "VMM with fd export available" : "no VMM: nothing is converted");
	atomic_store_explicit(&drv_resolved, true, memory_order_release);
}

bool shim_driver_adopt(void *fn)
{
	Dl_info info;
	bool ok;

	shim_init();
	if (!fn || drv_lock_held || !dladdr(fn, &info) || !info.dli_fbase)
		return false;
	pthread_mutex_lock(&drv_lock);
	drv_lock_held = true;
	ok = drv_bound ? info.dli_fbase == drv.base : bind_from_fn(fn);
	drv_lock_held = false;
	pthread_mutex_unlock(&drv_lock);
	return ok;
}

const struct shim_driver *shim_driver_get(void)
{
	const struct shim_driver *d = NULL;

	if (atomic_load_explicit(&drv_resolved, memory_order_acquire))
		return &drv;
	if (drv_lock_held)
		return NULL; /* called back while binding: the driver is not there yet */
	shim_init();
	pthread_mutex_lock(&drv_lock);
	drv_lock_held = true;
	if (!drv_bound)
		(void)bind_direct();
	if (drv_bound) {
		if (!atomic_load_explicit(&drv_resolved, memory_order_relaxed))
			resolve();
		d = &drv;
	}
	drv_lock_held = false;
	pthread_mutex_unlock(&drv_lock);
	return d;
}

void shim_driver_atfork_prepare(void)
{
	pthread_mutex_lock(&drv_lock);
}

void shim_driver_atfork_parent(void)
{
	pthread_mutex_unlock(&drv_lock);
}

/* The library stays mapped in the child: the binding holds. */
void shim_driver_atfork_child(void)
{
	pthread_mutex_init(&drv_lock, NULL);
}
