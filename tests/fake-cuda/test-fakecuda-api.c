/* SPDX-License-Identifier: MIT */
/* The fake driver's single-process API: init, errors, cuGetProcAddress, devices, memory, VMM. */
#include <dlfcn.h>
#include <fcntl.h>

#include "fk-testlib.h"

GW_TEST(init_errors_and_versions)
{
	struct gw_cuda *cu;
	const char *s = NULL;
	int count, version = 0;
	pid_t pid;
	int status;

	fkt_setup();
	cu = fkt_load();
	GW_ASSERT_INT_EQ(cu->driver_version, FAKECUDA_DRIVER_VERSION);
	GW_ASSERT_INT_EQ(cu->cuDriverGetVersion(&version), CUDA_SUCCESS);
	GW_ASSERT_INT_EQ(version, 13000);
	GW_ASSERT_INT_EQ(cu->cuDeviceGetCount(&count), CUDA_ERROR_NOT_INITIALIZED);
	GW_ASSERT_INT_EQ(cu->cuGetErrorName(CUDA_ERROR_NOT_INITIALIZED, &s), CUDA_SUCCESS);
	GW_ASSERT_STR_EQ(s, "CUDA_ERROR_NOT_INITIALIZED");
	GW_ASSERT_INT_EQ(cu->cuInit(1), CUDA_ERROR_INVALID_VALUE);

	fflush(NULL);
	pid = fork();
	GW_ASSERT(pid >= 0);
	if (pid == 0) {
		setenv(FAKECUDA_ENV_NO_DEVICE, "1", 1);
		if (cu->cuInit(0) != CUDA_ERROR_NO_DEVICE ||
		    cu->cuInit(0) != CUDA_ERROR_NO_DEVICE ||
		    cu->cuDeviceGetCount(&count) != CUDA_ERROR_NOT_INITIALIZED)
			_exit(1);
		_exit(0);
	}
	GW_ASSERT(waitpid(pid, &status, 0) == pid);
	GW_ASSERT(WIFEXITED(status) && WEXITSTATUS(status) == 0);

	GW_ASSERT_INT_EQ(cu->cuInit(0), CUDA_SUCCESS);
	GW_ASSERT_INT_EQ(cu->cuDeviceGetCount(&count), CUDA_SUCCESS);
	GW_ASSERT_INT_EQ(count, 1);
	fkt_cleanup();
}

GW_TEST(error_names_and_strings)
{
	static const CUresult codes[] = {
		CUDA_SUCCESS, CUDA_ERROR_INVALID_VALUE, CUDA_ERROR_OUT_OF_MEMORY,
		CUDA_ERROR_NOT_INITIALIZED, CUDA_ERROR_DEINITIALIZED, CUDA_ERROR_NO_DEVICE,
		CUDA_ERROR_INVALID_DEVICE, CUDA_ERROR_INVALID_CONTEXT, CUDA_ERROR_ALREADY_MAPPED,
		CUDA_ERROR_OPERATING_SYSTEM, CUDA_ERROR_INVALID_HANDLE, CUDA_ERROR_ILLEGAL_STATE,
		CUDA_ERROR_NOT_FOUND, CUDA_ERROR_NOT_READY, CUDA_ERROR_ILLEGAL_ADDRESS,
		CUDA_ERROR_NOT_PERMITTED, CUDA_ERROR_NOT_SUPPORTED, CUDA_ERROR_TIMEOUT,
		CUDA_ERROR_UNKNOWN,
	};
	struct gw_cuda *cu;
	const char *name, *text;
	char buf[160];

	fkt_setup();
	cu = fkt_load();
	for (size_t i = 0; i < sizeof(codes) / sizeof(codes[0]); i++) {
		name = text = NULL;
		GW_ASSERT_INT_EQ(cu->cuGetErrorName(codes[i], &name), CUDA_SUCCESS);
		GW_ASSERT_INT_EQ(cu->cuGetErrorString(codes[i], &text), CUDA_SUCCESS);
		GW_ASSERT(name && strncmp(name, "CUDA_", 5) == 0 && text && *text);
	}
	GW_ASSERT_INT_EQ(cu->cuGetErrorName(CUDA_ERROR_ILLEGAL_STATE, &name), CUDA_SUCCESS);
	GW_ASSERT_STR_EQ(name, "CUDA_ERROR_ILLEGAL_STATE");
	GW_ASSERT_INT_EQ(cu->cuGetErrorName(12345, &name), CUDA_ERROR_INVALID_VALUE);
	GW_ASSERT_INT_EQ(cu->cuGetErrorString(12345, &text), CUDA_ERROR_INVALID_VALUE);
	gw_cuda_describe(cu, CUDA_ERROR_NOT_SUPPORTED, buf, sizeof(buf));
	GW_ASSERT_STR_EQ(buf, "CUDA_ERROR_NOT_SUPPORTED (801): operation not supported");
	fkt_cleanup();
}

GW_TEST(get_proc_address_and_exports)
{
	gw_cuGetProcAddress_fn gpa;
	CUdriverProcAddressQueryResult st;
	struct gw_cuda *cu;
	void *fn = NULL;

	fkt_setup();
	cu = fkt_load();
	GW_ASSERT(gw_cuda_has_checkpoint(cu) && gw_cuda_has_vmm(cu));
	gpa = (gw_cuGetProcAddress_fn)dlsym(cu->dl, "cuGetProcAddress_v2");
	GW_ASSERT(gpa && dlsym(cu->dl, "cuGetProcAddress"));
	GW_ASSERT_INT_EQ(gpa("cuGetProcAddress", &fn, 13000, 0, &st), CUDA_SUCCESS);
	GW_ASSERT(fn == (void *)gpa && st == CU_GET_PROC_ADDRESS_SUCCESS);
	GW_ASSERT_INT_EQ(gpa("cuMemAlloc", &fn, 13000, 0, &st), CUDA_SUCCESS);
	GW_ASSERT(fn == dlsym(cu->dl, "cuMemAlloc_v2") && fn == (void *)cu->cuMemAlloc);
	GW_ASSERT_INT_EQ(gpa("cuNoSuchThing", &fn, 13000, 0, &st), CUDA_ERROR_NOT_FOUND);
	GW_ASSERT(!fn && st == CU_GET_PROC_ADDRESS_SYMBOL_NOT_FOUND);
	GW_ASSERT_INT_EQ(gpa("cuCheckpointProcessLock", &fn, 12000, 0, &st), CUDA_ERROR_NOT_FOUND);
	GW_ASSERT(st == CU_GET_PROC_ADDRESS_VERSION_NOT_SUFFICIENT);
	/* every versioned name real libcuda has; nothing but cu* */
	{
		static const char *const names[] = {
			"cuMemAlloc_v2", "cuMemFree_v2", "cuMemGetInfo_v2", "cuDeviceTotalMem_v2",
			"cuDevicePrimaryCtxRelease_v2", "cuDeviceGetUuid_v2", "cuMemcpyHtoD_v2",
			"cuMemcpyDtoH_v2", "cuMemcpyHtoDAsync_v2", "cuMemcpyDtoHAsync_v2",
			"cuStreamDestroy_v2", "cuEventDestroy_v2", "cuMemHostAlloc",
		};

		for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++)
			if (!dlsym(cu->dl, names[i]))
				GW_FAIL("%s not exported", names[i]);
		GW_ASSERT(!dlsym(cu->dl, "fk") && !dlsym(cu->dl, "fk_init"));
	}
	gw_cuda_unload(cu);

	setenv(FAKECUDA_ENV_NO_CHECKPOINT, "1", 1);
	cu = fkt_load();
	GW_ASSERT(!gw_cuda_has_checkpoint(cu) && gw_cuda_has_vmm(cu));
	GW_ASSERT(!cu->cuCheckpointProcessLock);
	gw_cuda_unload(cu);
	fkt_cleanup();
}

GW_TEST(devices_and_contexts)
{
	struct gw_cuda *cu;
	CUcontext c0, c0b, c1;
	CUdevice dev;
	CUuuid uuid;
	char name[64], text[64];
	size_t total, free_b;
	CUdeviceptr p;
	int v;

	fkt_setup();
	setenv(FAKECUDA_ENV_GPUS, "2", 1);
	cu = fkt_caller();
	GW_ASSERT_INT_EQ(cu->cuDeviceGetCount(&v), CUDA_SUCCESS);
	GW_ASSERT_INT_EQ(v, 2);
	GW_ASSERT_INT_EQ(cu->cuDeviceGet(&dev, 1), CUDA_SUCCESS);
	GW_ASSERT_INT_EQ(cu->cuDeviceGet(&dev, 2), CUDA_ERROR_INVALID_DEVICE);
	GW_ASSERT_INT_EQ(cu->cuDeviceGetName(name, sizeof(name), 1), CUDA_SUCCESS);
	GW_ASSERT_STR_EQ(name, "Fake NVIDIA H100 80GB HBM3");
	GW_ASSERT_INT_EQ(cu->cuDeviceGetUuid(&uuid, 1), CUDA_SUCCESS);
	gw_cuda_uuid_format(&uuid, text, sizeof(text));
	GW_ASSERT_STR_EQ(text, "GPU-fa4ec0da-0000-4000-8000-000000000001");
	GW_ASSERT_INT_EQ(cu->cuDeviceGetAttribute(&v, CU_DEVICE_ATTRIBUTE_PCI_BUS_ID, 1), 0);
	GW_ASSERT_INT_EQ(v, 0x3c);
	GW_ASSERT_INT_EQ(cu->cuDeviceGetAttribute(&v, CU_DEVICE_ATTRIBUTE_PCI_DOMAIN_ID, 1), 0);
	GW_ASSERT_INT_EQ(v, 0);
	GW_ASSERT_INT_EQ(
		cu->cuDeviceGetAttribute(&v, CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR, 0), 0);
	GW_ASSERT_INT_EQ(v, 9);
	GW_ASSERT_INT_EQ(cu->cuDeviceGetAttribute(
				 &v, CU_DEVICE_ATTRIBUTE_VIRTUAL_MEMORY_MANAGEMENT_SUPPORTED, 0),
			 0);
	GW_ASSERT_INT_EQ(v, 1);
	GW_ASSERT_INT_EQ(cu->cuDeviceTotalMem(&total, 0), CUDA_SUCCESS);
	GW_ASSERT_INT_EQ(total, (size_t)81559 * MIB);

	/* primary contexts: one per device, refcounted; current per thread */
	GW_ASSERT_INT_EQ(cu->cuMemAlloc(&p, 16), CUDA_ERROR_INVALID_CONTEXT);
	GW_ASSERT_INT_EQ(cu->cuDevicePrimaryCtxRetain(&c0, 0), CUDA_SUCCESS);
	GW_ASSERT_INT_EQ(cu->cuDevicePrimaryCtxRetain(&c0b, 0), CUDA_SUCCESS);
	GW_ASSERT_INT_EQ(cu->cuDevicePrimaryCtxRetain(&c1, 1), CUDA_SUCCESS);
	GW_ASSERT(c0 == c0b && c0 != c1);
	GW_ASSERT_INT_EQ(cu->cuCtxSetCurrent(c1), CUDA_SUCCESS);
	GW_ASSERT_INT_EQ(cu->cuMemAlloc(&p, 3 * MIB), CUDA_SUCCESS);
	GW_ASSERT_INT_EQ(cu->cuMemGetInfo(&free_b, &total), CUDA_SUCCESS);
	GW_ASSERT_INT_EQ(total - free_b, 3 * MIB);
	GW_ASSERT_INT_EQ(cu->cuCtxSetCurrent(c0), CUDA_SUCCESS);
	GW_ASSERT_INT_EQ(cu->cuMemGetInfo(&free_b, &total), CUDA_SUCCESS);
	GW_ASSERT_INT_EQ(free_b, total);
	/* the last release of a primary context frees its memory and makes it invalid */
	GW_ASSERT_INT_EQ(cu->cuDevicePrimaryCtxRelease(1), CUDA_SUCCESS);
	GW_ASSERT_INT_EQ(cu->cuDevicePrimaryCtxRelease(1), CUDA_ERROR_INVALID_CONTEXT);
	GW_ASSERT_INT_EQ(cu->cuCtxSetCurrent(c1), CUDA_ERROR_INVALID_CONTEXT);
	GW_ASSERT_INT_EQ(cu->cuMemFree(p), CUDA_ERROR_INVALID_VALUE);
	GW_ASSERT_INT_EQ(cu->cuDevicePrimaryCtxRelease(0), CUDA_SUCCESS);
	GW_ASSERT_INT_EQ(cu->cuMemGetInfo(&free_b, &total), CUDA_SUCCESS); /* one retain left */
	GW_ASSERT_INT_EQ(cu->cuDevicePrimaryCtxRelease(0), CUDA_SUCCESS);
	GW_ASSERT_INT_EQ(cu->cuMemGetInfo(&free_b, &total), CUDA_ERROR_INVALID_CONTEXT);
	fkt_cleanup();
}

GW_TEST(memory_is_checked)
{
	struct gw_cuda *cu;
	CUdeviceptr p, q;
	CUstream s;
	CUevent e;
	unsigned char buf[64] = { 0 }, out[64];
	void *host;

	fkt_setup();
	setenv(FAKECUDA_ENV_MEM_MIB, "8", 1);
	cu = fkt_caller();
	fkt_ctx_on(cu, 0);
	GW_ASSERT_INT_EQ(cu->cuMemAlloc(&p, 9 * MIB), CUDA_ERROR_OUT_OF_MEMORY);
	GW_ASSERT_INT_EQ(cu->cuMemAlloc(&p, 0), CUDA_ERROR_INVALID_VALUE);
	GW_ASSERT_INT_EQ(cu->cuMemAlloc(&p, 6 * MIB), CUDA_SUCCESS);
	GW_ASSERT_INT_EQ(cu->cuMemAlloc(&q, 3 * MIB), CUDA_ERROR_OUT_OF_MEMORY);
	GW_ASSERT_INT_EQ(cu->cuMemAlloc(&q, 100), CUDA_SUCCESS);
	GW_ASSERT(p >= 0x7e0000000000ull && q >= 0x7e0000000000ull && p != q);

	for (int i = 0; i < 64; i++)
		buf[i] = (unsigned char)i;
	GW_ASSERT_INT_EQ(cu->cuMemcpyHtoD(q + 36, buf, 64), CUDA_SUCCESS);
	GW_ASSERT_INT_EQ(cu->cuMemcpyDtoH(out, q + 36, 64), CUDA_SUCCESS);
	GW_ASSERT(memcmp(buf, out, 64) == 0);
	/* past the end */
	GW_ASSERT_INT_EQ(cu->cuMemcpyHtoD(q + 37, buf, 64), CUDA_ERROR_INVALID_VALUE);
	GW_ASSERT_INT_EQ(cu->cuMemcpyDtoH(out, q + 100, 1), CUDA_ERROR_INVALID_VALUE);
	GW_ASSERT_INT_EQ(cu->cuMemcpyDtoH(out, (CUdeviceptr)(uintptr_t)buf, 1),
			 CUDA_ERROR_INVALID_VALUE); /* a host pointer is no device pointer */
	GW_ASSERT_INT_EQ(cu->cuMemsetD32(q + 2, 1, 4), CUDA_ERROR_INVALID_VALUE);
	GW_ASSERT_INT_EQ(cu->cuMemsetD32(q + 4, 0x01020304, 2), CUDA_SUCCESS);
	GW_ASSERT_INT_EQ(cu->cuMemsetD8(q + 12, 0xee, 1), CUDA_SUCCESS);
	GW_ASSERT_INT_EQ(cu->cuMemcpyDtoH(out, q + 4, 9), CUDA_SUCCESS);
	GW_ASSERT(out[0] == 4 && out[3] == 1 && out[4] == 4 && out[8] == 0xee);

	GW_ASSERT_INT_EQ(cu->cuStreamCreate(&s, 2), CUDA_ERROR_INVALID_VALUE);
	GW_ASSERT_INT_EQ(cu->cuStreamCreate(&s, CU_STREAM_NON_BLOCKING), CUDA_SUCCESS);
	GW_ASSERT_INT_EQ(cu->cuEventCreate(&e, CU_EVENT_DISABLE_TIMING), CUDA_SUCCESS);
	GW_ASSERT_INT_EQ(cu->cuMemcpyHtoDAsync(p, buf, 64, s), CUDA_SUCCESS);
	GW_ASSERT_INT_EQ(cu->cuMemcpyDtoHAsync(out, p, 64, s), CUDA_SUCCESS);
	GW_ASSERT_INT_EQ(cu->cuEventRecord(e, s), CUDA_SUCCESS);
	GW_ASSERT_INT_EQ(cu->cuEventSynchronize(e), CUDA_SUCCESS);
	GW_ASSERT_INT_EQ(cu->cuStreamSynchronize(s), CUDA_SUCCESS);
	GW_ASSERT(memcmp(buf, out, 64) == 0);
	GW_ASSERT_INT_EQ(cu->cuStreamDestroy(s), CUDA_SUCCESS);
	GW_ASSERT_INT_EQ(cu->cuStreamDestroy(s), CUDA_ERROR_INVALID_HANDLE);
	GW_ASSERT_INT_EQ(cu->cuMemcpyHtoDAsync(p, buf, 64, s), CUDA_ERROR_INVALID_HANDLE);
	GW_ASSERT_INT_EQ(cu->cuStreamSynchronize(NULL), CUDA_SUCCESS);
	GW_ASSERT_INT_EQ(cu->cuEventDestroy(e), CUDA_SUCCESS);
	GW_ASSERT_INT_EQ(cu->cuEventSynchronize(e), CUDA_ERROR_INVALID_HANDLE);

	GW_ASSERT_INT_EQ(cu->cuMemHostAlloc(&host, 3 * MIB + 1, CU_MEMHOSTALLOC_PORTABLE), 0);
	GW_ASSERT((uintptr_t)host % 4096 == 0);
	memset(host, 0x5a, 3 * MIB + 1);
	GW_ASSERT_INT_EQ(cu->cuMemcpyHtoD(p, host, 3 * MIB + 1), CUDA_SUCCESS);
	GW_ASSERT_INT_EQ(cu->cuMemFreeHost(host), CUDA_SUCCESS);
	GW_ASSERT_INT_EQ(cu->cuMemFreeHost(host), CUDA_ERROR_INVALID_VALUE);
	GW_ASSERT_INT_EQ(cu->cuMemFreeHost(buf), CUDA_ERROR_INVALID_VALUE);

	GW_ASSERT_INT_EQ(cu->cuMemFree(p), CUDA_SUCCESS);
	GW_ASSERT_INT_EQ(cu->cuMemFree(p), CUDA_ERROR_INVALID_VALUE);
	/* use after free */
	GW_ASSERT_INT_EQ(cu->cuMemcpyDtoH(out, p, 1), CUDA_ERROR_INVALID_VALUE);
	GW_ASSERT_INT_EQ(cu->cuMemFree(q), CUDA_SUCCESS);
	fkt_cleanup();
}

GW_TEST(vmm_rules)
{
	CUmemAllocationProp prop = fkt_vmm_prop(0);
	CUmemAccessDesc ro = { { CU_MEM_LOCATION_TYPE_DEVICE, 0 }, CU_MEM_ACCESS_FLAGS_PROT_READ };
	CUmemAccessDesc rw = { { CU_MEM_LOCATION_TYPE_DEVICE, 0 },
			       CU_MEM_ACCESS_FLAGS_PROT_READWRITE };
	CUmemGenericAllocationHandle h1, h2;
	struct gw_cuda *cu;
	CUdeviceptr va;
	uint32_t w[2] = { 0x11111111, 0x22222222 }, out[2];
	size_t gran = 0, free_b, total;
	int fd;

	fkt_setup();
	cu = fkt_caller();
	fkt_ctx_on(cu, 0);
	GW_ASSERT_INT_EQ(cu->cuMemGetAllocationGranularity(&gran, &prop,
							   CU_MEM_ALLOC_GRANULARITY_MINIMUM),
			 CUDA_SUCCESS);
	GW_ASSERT_INT_EQ(gran, 2 * MIB);
	GW_ASSERT_INT_EQ(cu->cuMemAddressReserve(&va, GRAN + 4096, 0, 0, 0),
			 CUDA_ERROR_INVALID_VALUE);
	GW_ASSERT_INT_EQ(cu->cuMemAddressReserve(&va, 3 * GRAN, 0, 0, 0), CUDA_SUCCESS);
	GW_ASSERT_INT_EQ(cu->cuMemCreate(&h1, GRAN + 1, &prop, 0), CUDA_ERROR_INVALID_VALUE);
	GW_ASSERT_INT_EQ(cu->cuMemCreate(&h1, GRAN, &prop, 0), CUDA_SUCCESS);
	prop.requestedHandleTypes = CU_MEM_HANDLE_TYPE_NONE;
	GW_ASSERT_INT_EQ(cu->cuMemCreate(&h2, GRAN, &prop, 0), CUDA_SUCCESS);
	GW_ASSERT_INT_EQ(cu->cuMemExportToShareableHandle(&fd, h2, FKT_FD, 0),
			 CUDA_ERROR_INVALID_VALUE); /* not created shareable */
	GW_ASSERT_INT_EQ(cu->cuMemGetInfo(&free_b, &total), CUDA_SUCCESS);
	GW_ASSERT_INT_EQ(total - free_b, 2 * GRAN);

	GW_ASSERT_INT_EQ(cu->cuMemMap(va + 4096, GRAN, 0, h1, 0), CUDA_ERROR_INVALID_VALUE);
	GW_ASSERT_INT_EQ(cu->cuMemMap(va + 2 * GRAN, 2 * GRAN, 0, h1, 0), CUDA_ERROR_INVALID_VALUE);
	GW_ASSERT_INT_EQ(cu->cuMemMap(va, GRAN, 0, h1, 0), CUDA_SUCCESS);
	GW_ASSERT_INT_EQ(cu->cuMemMap(va, GRAN, 0, h2, 0), CUDA_ERROR_ALREADY_MAPPED);
	GW_ASSERT_INT_EQ(cu->cuMemMap(va + GRAN, GRAN, 0, h2, 0), CUDA_SUCCESS);
	/* not accessible until cuMemSetAccess; read-only refuses writes */
	GW_ASSERT_INT_EQ(cu->cuMemcpyHtoD(va, w, 4), CUDA_ERROR_INVALID_VALUE);
	/* a hole in the range */
	GW_ASSERT_INT_EQ(cu->cuMemSetAccess(va, 3 * GRAN, &rw, 1), CUDA_ERROR_INVALID_VALUE);
	GW_ASSERT_INT_EQ(cu->cuMemSetAccess(va, 2 * GRAN, &ro, 1), CUDA_SUCCESS);
	GW_ASSERT_INT_EQ(cu->cuMemcpyDtoH(out, va, 4), CUDA_SUCCESS);
	GW_ASSERT_INT_EQ(cu->cuMemcpyHtoD(va, w, 4), CUDA_ERROR_INVALID_VALUE);
	GW_ASSERT_INT_EQ(cu->cuMemSetAccess(va, 2 * GRAN, &rw, 1), CUDA_SUCCESS);
	/* a copy across the seam of two mappings */
	GW_ASSERT_INT_EQ(cu->cuMemcpyHtoD(va + GRAN - 4, w, 8), CUDA_SUCCESS);
	GW_ASSERT_INT_EQ(cu->cuMemcpyDtoH(out, va + GRAN - 4, 8), CUDA_SUCCESS);
	GW_ASSERT(out[0] == w[0] && out[1] == w[1]);
	GW_ASSERT_INT_EQ(cu->cuMemcpyDtoH(out, va + 2 * GRAN - 4, 8), CUDA_ERROR_INVALID_VALUE);

	/* release while mapped: the memory lives on until unmapped */
	GW_ASSERT_INT_EQ(cu->cuMemRelease(h1), CUDA_SUCCESS);
	GW_ASSERT_INT_EQ(cu->cuMemRelease(h1), CUDA_ERROR_INVALID_VALUE);
	GW_ASSERT_INT_EQ(cu->cuMemcpyDtoH(out, va + GRAN - 4, 4), CUDA_SUCCESS);
	GW_ASSERT_INT_EQ(out[0], w[0]);
	GW_ASSERT_INT_EQ(cu->cuMemUnmap(va, GRAN / 2), CUDA_ERROR_INVALID_VALUE);
	GW_ASSERT_INT_EQ(cu->cuMemAddressFree(va, 3 * GRAN), CUDA_ERROR_INVALID_VALUE); /* mapped */
	GW_ASSERT_INT_EQ(cu->cuMemUnmap(va, 2 * GRAN), CUDA_SUCCESS);
	GW_ASSERT_INT_EQ(cu->cuMemcpyDtoH(out, va, 4), CUDA_ERROR_INVALID_VALUE);
	GW_ASSERT_INT_EQ(cu->cuMemGetInfo(&free_b, &total), CUDA_SUCCESS);
	GW_ASSERT_INT_EQ(total - free_b, GRAN);
	GW_ASSERT_INT_EQ(cu->cuMemRelease(h2), CUDA_SUCCESS);
	GW_ASSERT_INT_EQ(cu->cuMemAddressFree(va, 3 * GRAN), CUDA_SUCCESS);
	GW_ASSERT_INT_EQ(cu->cuMemGetInfo(&free_b, &total), CUDA_SUCCESS);
	GW_ASSERT_INT_EQ(free_b, total);
	/* not a fake driver's memfd */
	fd = open("/dev/null", O_RDWR);
	GW_ASSERT_INT_EQ(cu->cuMemImportFromShareableHandle(&h1, (void *)(intptr_t)fd, FKT_FD),
			 CUDA_ERROR_INVALID_VALUE);
	close(fd);
	fkt_cleanup();
}

GW_TEST_MAIN()
