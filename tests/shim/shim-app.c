/* SPDX-License-Identifier: MIT */
/*
 * shim-app: a CUDA app for the shim's tests, linked directly against the fake driver (so its
 * cu* references are direct symbol calls) and run with LD_PRELOAD=libgpuwarm-shim.so. It reads
 * one command per line on stdin and answers one line on stdout: "ok ..." or "err CODE what".
 * EOF on stdin ends it. Allocations live in numbered slots; handles in numbered hslots.
 *
 *   init                      cuInit, device 0's primary context made current
 *   alloc ROUTE BYTES         -> ok SLOT VA USED   (USED: device bytes the call took)
 *   free ROUTE SLOT           -> ok USED           (negative: bytes given back)
 *   where ROUTE               -> ok LIBRARY SYMBOL (where the route's cuMemAlloc lives)
 *   probe                     -> ok SELF           (1: cuGetProcAddress("cuGetProcAddress") gives
 *                                                   back what dlsym gave for cuGetProcAddress_v2)
 *   pitch W H ELEM            -> ok SLOT VA PITCH USED
 *   write SLOT SEED / check SLOT SEED              (cuMemcpyHtoD / cuMemcpyDtoH of a pattern)
 *   meminfo                   -> ok FREE TOTAL
 *   vcreate BYTES             -> ok HSLOT HANDLE USED
 *   vreserve BYTES            -> ok SLOT VA
 *   vmap SLOT HSLOT / vunmap SLOT / vfree SLOT / vrelease HSLOT
 *   vprops HSLOT              -> ok TYPE HANDLETYPES DEVICE
 *   vretain SLOT              -> ok HSLOT HANDLE
 *   vexport HSLOT             -> ok (an fd came back and was closed)
 *   fork BYTES                -> ok STATUS PID     (the child allocates BYTES, checks the data and
 *                                                   exits 0 when its allocation was converted)
 *
 * ROUTE: direct (the linked symbol), dlsym (dlsym on the driver's handle), gpa
 * (cuGetProcAddress_v2 at 12000), gpaself (what cuGetProcAddress_v2 hands back for
 * "cuGetProcAddress", then at 12000), gpa1 (cuGetProcAddress at 11000), gpaold
 * (cuGetProcAddress_v2 at 3000: the 32-bit ABI, not wrapped), default (dlsym RTLD_DEFAULT),
 * next (dlsym RTLD_NEXT).
 */
#include <dlfcn.h>
#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "gw-cuda-abi.h"

/* The driver API, called directly (resolved against libfakecuda at link time). */
CUresult cuInit(unsigned int flags);
CUresult cuDeviceGet(CUdevice *dev, int ordinal);
CUresult cuDevicePrimaryCtxRetain(CUcontext *ctx, CUdevice dev);
CUresult cuCtxSetCurrent(CUcontext ctx);
CUresult cuMemGetInfo_v2(size_t *free_bytes, size_t *total);
CUresult cuCtxGetLimit(size_t *value, CUlimit limit);
CUresult cuMemAlloc_v2(CUdeviceptr *dptr, size_t size);
CUresult cuMemFree_v2(CUdeviceptr dptr);
CUresult cuMemcpyHtoD_v2(CUdeviceptr dst, const void *src, size_t n);
CUresult cuMemcpyDtoH_v2(void *dst, CUdeviceptr src, size_t n);
CUresult cuMemAddressReserve(CUdeviceptr *ptr, size_t size, size_t align, CUdeviceptr addr,
			     unsigned long long flags);
CUresult cuMemAddressFree(CUdeviceptr ptr, size_t size);
CUresult cuMemCreate(CUmemGenericAllocationHandle *h, size_t size, const CUmemAllocationProp *prop,
		     unsigned long long flags);
CUresult cuMemRelease(CUmemGenericAllocationHandle h);
CUresult cuMemMap(CUdeviceptr ptr, size_t size, size_t offset, CUmemGenericAllocationHandle h,
		  unsigned long long flags);
CUresult cuMemUnmap(CUdeviceptr ptr, size_t size);
CUresult cuMemSetAccess(CUdeviceptr ptr, size_t size, const CUmemAccessDesc *desc, size_t count);
CUresult cuMemExportToShareableHandle(void *shareable, CUmemGenericAllocationHandle h,
				      CUmemAllocationHandleType type, unsigned long long flags);
CUresult cuGetProcAddress_v2(const char *symbol, void **pfn, int version, cuuint64_t flags,
			     CUdriverProcAddressQueryResult *status);

/* Not in the fake: reached through dlsym(RTLD_DEFAULT), i.e. the shim's exports. */
typedef CUresult (*pitch_fn)(CUdeviceptr *, size_t *, size_t, size_t, unsigned int);
typedef CUresult (*props_fn)(CUmemAllocationProp *, CUmemGenericAllocationHandle);
typedef CUresult (*retain_fn)(CUmemGenericAllocationHandle *, void *);

typedef CUresult (*alloc_fn)(CUdeviceptr *, size_t);
typedef CUresult (*free_fn)(CUdeviceptr);
typedef CUresult (*gpa1_fn)(const char *, void **, int, cuuint64_t);

#define MAX_SLOTS 256

static struct {
	CUdeviceptr va;
	size_t size;
} slots[MAX_SLOTS];
static int nslots;
static CUmemGenericAllocationHandle hslots[MAX_SLOTS];
static int nhslots;
static void *driver;

static void reply(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void reply(const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vprintf(fmt, ap);
	va_end(ap);
	putchar('\n');
	fflush(stdout);
}

static void *driver_handle(void)
{
	const char *path = getenv("GPUWARM_CUDA_LIBRARY");

	if (!driver && path)
		driver = dlopen(path, RTLD_NOW | RTLD_NOLOAD);
	return driver;
}

static gw_cuGetProcAddress_fn gpa_from_dlsym(void)
{
	void *h = driver_handle();

	return h ? (gw_cuGetProcAddress_fn)dlsym(h, "cuGetProcAddress_v2") : NULL;
}

/* The entry point named base/exported reached through route, or NULL. */
static void *by_route(const char *route, const char *base, const char *exported)
{
	CUdriverProcAddressQueryResult st;
	void *fn = NULL, *h = driver_handle();

	if (strcmp(route, "dlsym") == 0) {
		fn = h ? dlsym(h, exported) : NULL;
	} else if (strcmp(route, "gpa") == 0 || strcmp(route, "gpaold") == 0) {
		gw_cuGetProcAddress_fn gpa = gpa_from_dlsym();

		if (!gpa || gpa(base, &fn, strcmp(route, "gpa") == 0 ? 12000 : 3000, 0, &st))
			fn = NULL;
	} else if (strcmp(route, "gpaself") == 0) {
		gw_cuGetProcAddress_fn gpa = gpa_from_dlsym(), self = NULL;

		if (!gpa || gpa("cuGetProcAddress", (void **)&self, 12000, 0, &st) || !self ||
		    self(base, &fn, 12000, 0, &st))
			fn = NULL;
	} else if (strcmp(route, "gpa1") == 0) {
		gpa1_fn gpa = h ? (gpa1_fn)dlsym(h, "cuGetProcAddress") : NULL;

		if (!gpa || gpa(base, &fn, 11000, 0))
			fn = NULL;
	} else if (strcmp(route, "default") == 0) {
		fn = dlsym(RTLD_DEFAULT, exported);
	} else if (strcmp(route, "next") == 0) {
		fn = dlsym(RTLD_NEXT, exported);
	}
	return fn;
}

static size_t used_now(void)
{
	size_t free_bytes = 0, total = 0;

	if (cuMemGetInfo_v2(&free_bytes, &total))
		return 0;
	return total - free_bytes;
}

static int new_slot(CUdeviceptr va, size_t size)
{
	if (nslots == MAX_SLOTS)
		return -1;
	slots[nslots].va = va;
	slots[nslots].size = size;
	return nslots++;
}

static int slot_arg(const char *s)
{
	int i = s ? atoi(s) : -1;

	return i >= 0 && i < nslots ? i : -1;
}

static int hslot_arg(const char *s)
{
	int i = s ? atoi(s) : -1;

	return i >= 0 && i < nhslots ? i : -1;
}

static unsigned char pattern(unsigned seed, size_t i)
{
	return (unsigned char)(seed * 131u + i * 7u + (i >> 12) * 13u);
}

static void cmd_alloc(const char *route, const char *bytes)
{
	size_t size = bytes ? strtoull(bytes, NULL, 0) : 0, before;
	alloc_fn fn = strcmp(route, "direct") == 0 ? cuMemAlloc_v2 :
						     (alloc_fn)by_route(route, "cuMemAlloc",
									"cuMemAlloc_v2");
	CUdeviceptr va = 0;
	CUresult r;

	if (!fn) {
		reply("err 500 no cuMemAlloc via %s", route);
		return;
	}
	before = used_now();
	r = fn(&va, size);
	if (r) {
		reply("err %d cuMemAlloc", r);
		return;
	}
	reply("ok %d 0x%" PRIx64 " %zu", new_slot(va, size), (uint64_t)va, used_now() - before);
}

static void cmd_free(const char *route, const char *slot)
{
	free_fn fn = strcmp(route, "direct") == 0 ? cuMemFree_v2 :
						    (free_fn)by_route(route, "cuMemFree",
								      "cuMemFree_v2");
	int i = slot_arg(slot);
	size_t before;
	CUresult r;

	if (!fn || i < 0) {
		reply("err 500 no cuMemFree via %s or no slot", route);
		return;
	}
	before = used_now();
	r = fn(slots[i].va);
	if (r) {
		reply("err %d cuMemFree", r);
		return;
	}
	reply("ok %lld", (long long)used_now() - (long long)before);
}

static void cmd_where(const char *route)
{
	void *fn = strcmp(route, "direct") == 0 ? (void *)cuMemAlloc_v2 :
						  by_route(route, "cuMemAlloc", "cuMemAlloc_v2");
	const char *slash;
	Dl_info info;

	if (!fn || !dladdr(fn, &info) || !info.dli_fname) {
		reply("err 500 nothing via %s", route);
		return;
	}
	slash = strrchr(info.dli_fname, '/');
	reply("ok %s %s", slash ? slash + 1 : info.dli_fname,
	      info.dli_sname ? info.dli_sname : "?");
}

static void cmd_probe(void)
{
	CUdriverProcAddressQueryResult st;
	gw_cuGetProcAddress_fn gpa = gpa_from_dlsym();
	void *self = NULL;

	if (!gpa || gpa("cuGetProcAddress", &self, 12000, 0, &st)) {
		reply("err 500 no cuGetProcAddress");
		return;
	}
	reply("ok %d", self == (void *)gpa);
}

static void cmd_pitch(const char *w, const char *h, const char *e)
{
	pitch_fn fn = (pitch_fn)dlsym(RTLD_DEFAULT, "cuMemAllocPitch_v2");
	size_t width = w ? strtoull(w, NULL, 0) : 0, height = h ? strtoull(h, NULL, 0) : 0;
	size_t pitch = 0, before;
	CUdeviceptr va = 0;
	CUresult r;

	if (!fn) {
		reply("err 500 no cuMemAllocPitch_v2");
		return;
	}
	before = used_now();
	r = fn(&va, &pitch, width, height, e ? (unsigned)atoi(e) : 0);
	if (r) {
		reply("err %d cuMemAllocPitch", r);
		return;
	}
	reply("ok %d 0x%" PRIx64 " %zu %zu", new_slot(va, pitch * height), (uint64_t)va, pitch,
	      used_now() - before);
}

static void cmd_write_check(int check, const char *slot, const char *seed_s)
{
	int i = slot_arg(slot);
	unsigned seed = seed_s ? (unsigned)atoi(seed_s) : 0;
	unsigned char *buf;
	CUresult r;

	if (i < 0 || !(buf = malloc(slots[i].size ? slots[i].size : 1))) {
		reply("err 500 no slot");
		return;
	}
	if (!check) {
		for (size_t k = 0; k < slots[i].size; k++)
			buf[k] = pattern(seed, k);
		r = cuMemcpyHtoD_v2(slots[i].va, buf, slots[i].size);
	} else {
		r = cuMemcpyDtoH_v2(buf, slots[i].va, slots[i].size);
		for (size_t k = 0; r == CUDA_SUCCESS && k < slots[i].size; k++) {
			if (buf[k] != pattern(seed, k)) {
				reply("err 600 mismatch at %zu", k);
				free(buf);
				return;
			}
		}
	}
	free(buf);
	if (r)
		reply("err %d cuMemcpy", r);
	else
		reply("ok");
}

static CUmemAllocationProp device_prop(void)
{
	CUmemAllocationProp prop = { 0 };

	prop.type = CU_MEM_ALLOCATION_TYPE_PINNED;
	prop.location.type = CU_MEM_LOCATION_TYPE_DEVICE;
	prop.location.id = 0;
	return prop;
}

static void cmd_vmm(const char *cmd, const char *a, const char *b)
{
	CUmemAllocationProp prop = device_prop();
	CUresult r = CUDA_ERROR_INVALID_VALUE;
	int i = slot_arg(a), hi = hslot_arg(a);

	if (strcmp(cmd, "vcreate") == 0) {
		size_t size = a ? strtoull(a, NULL, 0) : 0, before = used_now();
		CUmemGenericAllocationHandle h = 0;

		r = cuMemCreate(&h, size, &prop, 0);
		if (r == CUDA_SUCCESS && nhslots < MAX_SLOTS) {
			hslots[nhslots] = h;
			reply("ok %d 0x%" PRIx64 " %zu", nhslots++, (uint64_t)h,
			      used_now() - before);
			return;
		}
	} else if (strcmp(cmd, "vreserve") == 0) {
		size_t size = a ? strtoull(a, NULL, 0) : 0;
		CUdeviceptr va = 0;

		r = cuMemAddressReserve(&va, size, 0, 0, 0);
		if (r == CUDA_SUCCESS) {
			reply("ok %d 0x%" PRIx64, new_slot(va, size), (uint64_t)va);
			return;
		}
	} else if (strcmp(cmd, "vmap") == 0) {
		int h = hslot_arg(b);
		CUmemAccessDesc acc = { .location = prop.location,
					.flags = CU_MEM_ACCESS_FLAGS_PROT_READWRITE };

		if (i >= 0 && h >= 0) {
			r = cuMemMap(slots[i].va, slots[i].size, 0, hslots[h], 0);
			if (r == CUDA_SUCCESS)
				r = cuMemSetAccess(slots[i].va, slots[i].size, &acc, 1);
		}
	} else if (strcmp(cmd, "vunmap") == 0) {
		if (i >= 0)
			r = cuMemUnmap(slots[i].va, slots[i].size);
	} else if (strcmp(cmd, "vfree") == 0) {
		if (i >= 0)
			r = cuMemAddressFree(slots[i].va, slots[i].size);
	} else if (strcmp(cmd, "vrelease") == 0) {
		if (hi >= 0)
			r = cuMemRelease(hslots[hi]);
	} else if (strcmp(cmd, "vprops") == 0) {
		props_fn fn = (props_fn)dlsym(RTLD_DEFAULT,
					      "cuMemGetAllocationPropertiesFromHandle");
		CUmemAllocationProp got = { 0 };

		if (fn && hi >= 0)
			r = fn(&got, hslots[hi]);
		if (r == CUDA_SUCCESS) {
			reply("ok %d %d %d", (int)got.type, (int)got.requestedHandleTypes,
			      got.location.id);
			return;
		}
	} else if (strcmp(cmd, "vretain") == 0) {
		retain_fn fn = (retain_fn)dlsym(RTLD_DEFAULT, "cuMemRetainAllocationHandle");
		CUmemGenericAllocationHandle h = 0;

		if (fn && i >= 0)
			r = fn(&h, (void *)(uintptr_t)slots[i].va);
		if (r == CUDA_SUCCESS && nhslots < MAX_SLOTS) {
			hslots[nhslots] = h;
			reply("ok %d 0x%" PRIx64, nhslots++, (uint64_t)h);
			return;
		}
	} else if (strcmp(cmd, "vexport") == 0) {
		int fd = -1;

		if (hi >= 0)
			r = cuMemExportToShareableHandle(
				&fd, hslots[hi], CU_MEM_HANDLE_TYPE_POSIX_FILE_DESCRIPTOR, 0);
		if (r == CUDA_SUCCESS)
			close(fd);
	}
	if (r)
		reply("err %d %s", r, cmd);
	else
		reply("ok");
}

static int ctx_init(void)
{
	CUcontext ctx;
	CUdevice dev;

	if (cuInit(0) || cuDeviceGet(&dev, 0) || cuDevicePrimaryCtxRetain(&ctx, dev) ||
	    cuCtxSetCurrent(ctx))
		return -1;
	return 0;
}

/* The child of a CUDA process starts afresh (CUDA does not survive fork). */
static void cmd_fork(const char *bytes)
{
	size_t size = bytes ? strtoull(bytes, NULL, 0) : 0;
	int status = 0;
	pid_t pid;

	fflush(stdout);
	pid = fork();
	if (pid == 0) {
		size_t before, used;
		unsigned char *buf = malloc(size), *back = malloc(size);
		CUdeviceptr va;
		int converted;

		if (!buf || !back || ctx_init() < 0)
			_exit(2);
		before = used_now();
		if (cuMemAlloc_v2(&va, size))
			_exit(3);
		used = used_now() - before;
		converted = used > size;
		for (size_t k = 0; k < size; k++)
			buf[k] = pattern(77, k);
		if (cuMemcpyHtoD_v2(va, buf, size) || cuMemcpyDtoH_v2(back, va, size) ||
		    memcmp(buf, back, size) || cuMemFree_v2(va))
			_exit(4);
		_exit(converted ? 0 : 10);
	}
	if (pid < 0 || waitpid(pid, &status, 0) < 0) {
		reply("err 500 fork");
		return;
	}
	reply("ok %d %d", WIFEXITED(status) ? WEXITSTATUS(status) : 128, (int)pid);
}

int main(void)
{
	char line[512];

	while (fgets(line, sizeof(line), stdin)) {
		char *save = NULL, *cmd = strtok_r(line, " \n", &save);
		char *a = strtok_r(NULL, " \n", &save), *b = strtok_r(NULL, " \n", &save);
		char *c = strtok_r(NULL, " \n", &save);

		if (!cmd)
			continue;
		if (strcmp(cmd, "init") == 0) {
			if (ctx_init() < 0)
				reply("err 500 init");
			else
				reply("ok");
		} else if (strcmp(cmd, "alloc") == 0 && a) {
			cmd_alloc(a, b);
		} else if (strcmp(cmd, "free") == 0 && a) {
			cmd_free(a, b);
		} else if (strcmp(cmd, "where") == 0 && a) {
			cmd_where(a);
		} else if (strcmp(cmd, "probe") == 0) {
			cmd_probe();
		} else if (strcmp(cmd, "pitch") == 0) {
			cmd_pitch(a, b, c);
		} else if (strcmp(cmd, "write") == 0 || strcmp(cmd, "check") == 0) {
			cmd_write_check(cmd[0] == 'c', a, b);
		} else if (strcmp(cmd, "meminfo") == 0) {
			size_t free_bytes = 0, total = 0;
			CUresult r = cuMemGetInfo_v2(&free_bytes, &total);

			if (r)
				reply("err %d cuMemGetInfo", r);
			else
				reply("ok %zu %zu", free_bytes, total);
		} else if (strcmp(cmd, "stack") == 0) {
			size_t stack = 0;
			CUresult r = cuCtxGetLimit(&stack, CU_LIMIT_STACK_SIZE);

			if (r)
				reply("err %d cuCtxGetLimit", r);
			else
				reply("ok %zu", stack);
		} else if (cmd[0] == 'v') {
			cmd_vmm(cmd, a, b);
		} else if (strcmp(cmd, "fork") == 0) {
			cmd_fork(a);
		} else if (strcmp(cmd, "quit") == 0) {
			break;
		} else {
			reply("err 500 unknown command %s", cmd);
		}
	}
	return 0;
}
