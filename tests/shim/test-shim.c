/* SPDX-License-Identifier: MIT */
/*
 * libgpuwarm-shim over the fake driver: shim-app runs under LD_PRELOAD, this process plays the
 * daemon on a private socket and uses the fake driver itself to look at exported memory.
 *
 * In the fake driver cuMemGetInfo counts cuMemAlloc bytes exactly and cuMemCreate memory in whole
 * 2 MiB granules, so "used" tells a converted allocation (rounded up) from a plain one.
 */
#include <fcntl.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "shim-testlib.h"

#define GRAN (2 * MIB)
#define ROUND(n) (((n) + GRAN - 1) / GRAN * GRAN)

/* shim-app with its context, attached to the fake daemon (slot 0: a small plain allocation). */
static void start_attached(struct st_env *e, struct st_daemon *d, struct st_app *a,
			   const char *const *extra_env)
{
	char buf[256];

	st_setup(e);
	st_daemon_listen(d, e);
	st_app_start(a, e, extra_env);
	st_app_ok(a, buf, sizeof(buf), "init");
	/* a small allocation starts the agent without waiting for it */
	GW_ASSERT_INT_EQ(st_alloc(a, "direct", 4096).used, 4096);
	st_daemon_accept(d, ST_TIMEOUT_MS);
	GW_ASSERT_INT_EQ(st_json_u64(d->attach, "pid"), a->pid);
	GW_ASSERT(st_json_u64(d->attach, "tid") != (uint64_t)a->pid);
	GW_ASSERT_INT_EQ(st_json_u64(d->attach, "ranges"), 0);
	GW_ASSERT_STR_CONTAINS(d->hello_client, "gpuwarm-shim");
}

static void finish(struct st_env *e, struct st_daemon *d, struct st_app *a)
{
	int status = st_app_stop(a);

	GW_ASSERT(WIFEXITED(status) && WEXITSTATUS(status) == 0);
	if (d)
		st_daemon_close(d);
	st_cleanup(e);
}

/* Agent.Ping: {pid, tid, ranges, bytes, released, foreign} (caller cJSON_Delete()s it). */
static cJSON *ping(struct st_daemon *d)
{
	struct gw_message msg;
	int fds[GW_FRAME_MAX_FDS];
	unsigned nfds;
	cJSON *res;

	st_daemon_call(d, GW_METHOD_AGENT_PING, NULL, NULL, 0, &msg, fds, &nfds);
	GW_ASSERT_INT_EQ(msg.kind, GW_MESSAGE_REPLY);
	GW_ASSERT_INT_EQ(nfds, 0);
	res = cJSON_Duplicate(msg.body, 1);
	gw_message_finish(&msg);
	return res;
}

static void expect_ranges(struct st_daemon *d, uint64_t ranges, uint64_t bytes)
{
	cJSON *p = ping(d);

	GW_ASSERT_INT_EQ(st_json_u64(p, "ranges"), ranges);
	GW_ASSERT_INT_EQ(st_json_u64(p, "bytes"), bytes);
	cJSON_Delete(p);
}

static long long freed(struct st_app *a, const char *route, int slot)
{
	char buf[256];

	return atoll(st_app_ok(a, buf, sizeof(buf), "free %s %d", route, slot));
}

static size_t mem_free(struct st_app *a)
{
	char buf[256];

	return (size_t)strtoull(st_app_ok(a, buf, sizeof(buf), "meminfo"), NULL, 10);
}

/* The app's CU_LIMIT_STACK_SIZE, as it reads it. */
static size_t stack_size(struct st_app *a)
{
	char buf[256];

	return (size_t)strtoull(st_app_ok(a, buf, sizeof(buf), "stack"), NULL, 10);
}

static void where(struct st_app *a, const char *route, char *lib, char *sym)
{
	char buf[256];

	GW_ASSERT(sscanf(st_app_ok(a, buf, sizeof(buf), "where %s", route), "%127s %127s", lib,
			 sym) == 2);
}

static cJSON *params_offset(uint64_t offset)
{
	cJSON *p = cJSON_CreateObject();

	cJSON_AddNumberToObject(p, "offset", (double)offset);
	return p;
}

static uint64_t hex_member(const cJSON *o, const char *key)
{
	uint64_t v = 0;

	GW_ASSERT(gw_json_get_hex_u64(o, key, &v) == 0);
	return v;
}

/* ---- routes ---- */

GW_TEST(direct_symbols_convert)
{
	struct st_env e;
	struct st_daemon d;
	struct st_app a;
	struct st_alloc x, y;
	char lib[128], sym[128], buf[64];

	start_attached(&e, &d, &a, NULL);
	where(&a, "direct", lib, sym);
	GW_ASSERT_STR_EQ(lib, "libgpuwarm-shim.so");
	x = st_alloc(&a, "direct", 3 * MIB + 5);
	GW_ASSERT_INT_EQ(x.used, 4 * MIB);
	GW_ASSERT(x.va % GRAN == 0);
	y = st_alloc(&a, "direct", MIB + 5); /* below the 2 MiB threshold */
	GW_ASSERT_INT_EQ(y.used, MIB + 5);
	expect_ranges(&d, 1, 4 * MIB);
	st_app_ok(&a, buf, sizeof(buf), "write %d 3", x.slot);
	st_app_ok(&a, buf, sizeof(buf), "check %d 3", x.slot);
	GW_ASSERT_INT_EQ(freed(&a, "direct", x.slot), -(long long)(4 * MIB));
	GW_ASSERT_INT_EQ(freed(&a, "direct", y.slot), -(long long)(MIB + 5));
	expect_ranges(&d, 0, 0);
	finish(&e, &d, &a);
}

GW_TEST(dlsym_on_driver_handle_converts)
{
	struct st_env e;
	struct st_daemon d;
	struct st_app a;
	struct st_alloc x;
	char lib[128], sym[128];

	start_attached(&e, &d, &a, NULL);
	where(&a, "dlsym", lib, sym);
	GW_ASSERT_STR_EQ(lib, "libgpuwarm-shim.so");
	GW_ASSERT_STR_EQ(sym, "cuMemAlloc_v2");
	x = st_alloc(&a, "dlsym", 5 * MIB + 1);
	GW_ASSERT_INT_EQ(x.used, 6 * MIB);
	expect_ranges(&d, 1, 6 * MIB);
	GW_ASSERT_INT_EQ(freed(&a, "dlsym", x.slot), -(long long)(6 * MIB));
	expect_ranges(&d, 0, 0);
	/* RTLD_DEFAULT finds the shim's export; RTLD_NEXT keeps the caller's view (the app's next
	 * object is the preloaded shim: resolved from the shim it would be the fake driver) */
	where(&a, "default", lib, sym);
	GW_ASSERT_STR_EQ(lib, "libgpuwarm-shim.so");
	where(&a, "next", lib, sym);
	GW_ASSERT_STR_EQ(lib, "libgpuwarm-shim.so");
	finish(&e, &d, &a);
}

GW_TEST(getprocaddress_entry_points_convert)
{
	struct st_env e;
	struct st_daemon d;
	struct st_app a;
	struct st_alloc x, y;
	char lib[128], sym[128];

	start_attached(&e, &d, &a, NULL);
	where(&a, "gpa", lib, sym);
	GW_ASSERT_STR_EQ(lib, "libgpuwarm-shim.so");
	GW_ASSERT_STR_EQ(sym, "cuMemAlloc_v2");
	where(&a, "gpa1", lib, sym);
	GW_ASSERT_STR_EQ(sym, "cuMemAlloc_v2");
	/* CUDA 3.0 asks for the 32-bit ABI: never the converting wrapper */
	where(&a, "gpaold", lib, sym);
	GW_ASSERT(strcmp(lib, "libgpuwarm-shim.so") != 0 || strcmp(sym, "cuMemAlloc_v2") != 0);
	x = st_alloc(&a, "gpa", 3 * MIB + 1);
	GW_ASSERT_INT_EQ(x.used, 4 * MIB);
	y = st_alloc(&a, "gpa1", 2 * MIB + 1);
	GW_ASSERT_INT_EQ(y.used, 4 * MIB);
	expect_ranges(&d, 2, 8 * MIB);
	GW_ASSERT_INT_EQ(freed(&a, "gpa", x.slot), -(long long)(4 * MIB));
	GW_ASSERT_INT_EQ(freed(&a, "gpa1", y.slot), -(long long)(4 * MIB));
	finish(&e, &d, &a);
}

GW_TEST(getprocaddress_hands_itself_back)
{
	struct st_env e;
	struct st_daemon d;
	struct st_app a;
	struct st_alloc x;
	char buf[64];

	start_attached(&e, &d, &a, NULL);
	/* PyTorch: cuGetProcAddress("cuGetProcAddress") must be the wrapper, or later lookups
	 * bypass the shim */
	GW_ASSERT_STR_EQ(st_app_ok(&a, buf, sizeof(buf), "probe"), "1");
	x = st_alloc(&a, "gpaself", 9 * MIB);
	GW_ASSERT_INT_EQ(x.used, 10 * MIB);
	expect_ranges(&d, 1, 10 * MIB);
	GW_ASSERT_INT_EQ(freed(&a, "gpaself", x.slot), -(long long)(10 * MIB));
	finish(&e, &d, &a);
}

/* ---- conversion ---- */

GW_TEST(converted_memory_roundtrips_data)
{
	static const size_t sizes[] = { 2 * MIB + 1, 7 * MIB + 123, 16 * MIB, 2 * MIB };
	struct st_alloc x[4];
	struct st_env e;
	struct st_daemon d;
	struct st_app a;
	char buf[64];

	start_attached(&e, &d, &a, NULL);
	for (int i = 0; i < 4; i++) {
		x[i] = st_alloc(&a, "direct", sizes[i]);
		GW_ASSERT_INT_EQ(x[i].used, ROUND(sizes[i]));
		st_app_ok(&a, buf, sizeof(buf), "write %d %d", x[i].slot, 40 + i);
	}
	for (int i = 0; i < 4; i++)
		st_app_ok(&a, buf, sizeof(buf), "check %d %d", x[i].slot, 40 + i);
	/* the check is real */
	GW_ASSERT_INT_EQ(st_app_err(&a, "check %d %d", x[1].slot, 99), 600);
	expect_ranges(&d, 4, ROUND(sizes[0]) + ROUND(sizes[1]) + ROUND(sizes[2]) + ROUND(sizes[3]));
	for (int i = 0; i < 4; i++)
		GW_ASSERT_INT_EQ(freed(&a, "direct", x[i].slot), -(long long)ROUND(sizes[i]));
	finish(&e, &d, &a);
}

GW_TEST(threshold_decides_conversion)
{
	static const char *const small_env[] = { "GPUWARM_SHIM_MIN_BYTES=64k", NULL };
	struct st_env e;
	struct st_daemon d;
	struct st_app a;

	start_attached(&e, &d, &a, NULL);
	GW_ASSERT_INT_EQ(st_alloc(&a, "direct", 2 * MIB - 1).used, 2 * MIB - 1);
	GW_ASSERT_INT_EQ(st_alloc(&a, "direct", 2 * MIB + 1).used, 4 * MIB);
	expect_ranges(&d, 1, 4 * MIB);
	GW_ASSERT_INT_EQ(st_app_stop(&a), 0);
	st_daemon_close(&d);
	st_cleanup(&e);

	start_attached(&e, &d, &a, small_env);
	GW_ASSERT_INT_EQ(st_alloc(&a, "direct", 100000).used, 2 * MIB);
	GW_ASSERT_INT_EQ(st_alloc(&a, "direct", 60000).used, 60000);
	expect_ranges(&d, 1, 2 * MIB);
	finish(&e, &d, &a);
}

GW_TEST(free_of_converted_and_plain_pointers)
{
	struct st_env e;
	struct st_daemon d;
	struct st_app a;
	struct st_alloc x, y;
	size_t before;

	start_attached(&e, &d, &a, NULL);
	before = mem_free(&a);
	x = st_alloc(&a, "direct", 3 * MIB);
	y = st_alloc(&a, "direct", 3 * MIB / 2);
	GW_ASSERT_INT_EQ(x.used, 4 * MIB);
	GW_ASSERT_INT_EQ(y.used, 3 * MIB / 2);
	/* freed through another route than allocated: the table decides, not the route */
	GW_ASSERT_INT_EQ(freed(&a, "gpa", x.slot), -(long long)(4 * MIB));
	GW_ASSERT_INT_EQ(freed(&a, "dlsym", y.slot), -(long long)(3 * MIB / 2));
	GW_ASSERT_INT_EQ(mem_free(&a), before);
	/* twice: the driver's answer for an unknown pointer */
	GW_ASSERT_INT_EQ(st_app_err(&a, "free direct %d", x.slot), CUDA_ERROR_INVALID_VALUE);
	GW_ASSERT_INT_EQ(st_app_err(&a, "free direct %d", y.slot), CUDA_ERROR_INVALID_VALUE);
	expect_ranges(&d, 0, 0);
	finish(&e, &d, &a);
}

GW_TEST(pitch_allocation_converts)
{
	struct st_env e;
	struct st_daemon d;
	struct st_app a;
	unsigned long long va, pitch, used;
	int slot;
	char buf[256];

	start_attached(&e, &d, &a, NULL);
	GW_ASSERT(sscanf(st_app_ok(&a, buf, sizeof(buf), "pitch 1000 3000 4"), "%d %llx %llu %llu",
			 &slot, &va, &pitch, &used) == 4);
	GW_ASSERT_INT_EQ(pitch, 1024);
	GW_ASSERT_INT_EQ(used, ROUND(1024 * 3000));
	st_app_ok(&a, buf, sizeof(buf), "write %d 5", slot);
	st_app_ok(&a, buf, sizeof(buf), "check %d 5", slot);
	expect_ranges(&d, 1, ROUND(1024 * 3000));
	GW_ASSERT_INT_EQ(freed(&a, "direct", slot), -(long long)ROUND(1024 * 3000));
	/* not convertible (element size 3; too small): the driver answers, and the fake driver
	 * has no cuMemAllocPitch */
	GW_ASSERT_INT_EQ(st_app_err(&a, "pitch 4096 4096 3"), CUDA_ERROR_NOT_SUPPORTED);
	GW_ASSERT_INT_EQ(st_app_err(&a, "pitch 100 10 4"), CUDA_ERROR_NOT_SUPPORTED);
	finish(&e, &d, &a);
}

/* ---- the app's own VMM calls ---- */

GW_TEST(app_vmm_handles_are_translated)
{
	struct st_env e;
	struct st_daemon d;
	struct st_app a;
	struct gw_cuda *cu;
	struct gw_message msg;
	unsigned long long handle, handle2, used;
	unsigned char *bytes = malloc(4 * MIB);
	int fds[GW_FRAME_MAX_FDS], slot, hslot, hslot2;
	unsigned nfds;
	size_t free0;
	char buf[256];

	GW_ASSERT(bytes);
	start_attached(&e, &d, &a, NULL);
	free0 = mem_free(&a);
	GW_ASSERT(sscanf(st_app_ok(&a, buf, sizeof(buf), "vcreate %zu", 4 * MIB), "%d %llx %llu",
			 &hslot, &handle, &used) == 3);
	GW_ASSERT_INT_EQ(handle >> 48, 0x6777); /* a virtual handle */
	GW_ASSERT_INT_EQ(used, 4 * MIB);
	GW_ASSERT(sscanf(st_app_ok(&a, buf, sizeof(buf), "vreserve %zu", 4 * MIB), "%d", &slot) ==
		  1);
	st_app_ok(&a, buf, sizeof(buf), "vmap %d %d", slot, hslot);
	st_app_ok(&a, buf, sizeof(buf), "write %d 9", slot);
	st_app_ok(&a, buf, sizeof(buf), "check %d 9", slot);
	/* the fd handle type the shim added is not visible */
	GW_ASSERT_STR_EQ(st_app_ok(&a, buf, sizeof(buf), "vprops %d", hslot), "1 0 0");
	st_app_ok(&a, buf, sizeof(buf), "vexport %d", hslot);
	expect_ranges(&d, 1, 4 * MIB);

	/* the daemon sees the app's bytes through the exported fd */
	st_daemon_call(&d, GW_METHOD_AGENT_EXPORT, params_offset(0), NULL, 0, &msg, fds, &nfds);
	GW_ASSERT_INT_EQ(msg.kind, GW_MESSAGE_REPLY);
	GW_ASSERT_INT_EQ(nfds, 1);
	gw_message_finish(&msg);
	cu = st_cuda();
	st_cuda_read_fd(cu, fds[0], 4 * MIB, bytes);
	close(fds[0]);
	for (size_t i = 0; i < 4 * MIB; i++)
		if (bytes[i] != st_pattern(9, i))
			GW_FAIL("exported byte %zu differs", i);

	/* retain by address gives the same handle back */
	GW_ASSERT(sscanf(st_app_ok(&a, buf, sizeof(buf), "vretain %d", slot), "%d %llx", &hslot2,
			 &handle2) == 2);
	GW_ASSERT_INT_EQ(handle2, handle);
	/* released while mapped: the memory lives on until the unmap */
	st_app_ok(&a, buf, sizeof(buf), "vrelease %d", hslot2);
	st_app_ok(&a, buf, sizeof(buf), "vrelease %d", hslot);
	GW_ASSERT_INT_EQ(st_app_err(&a, "vrelease %d", hslot), CUDA_ERROR_INVALID_VALUE);
	st_app_ok(&a, buf, sizeof(buf), "check %d 9", slot);
	GW_ASSERT_INT_EQ(mem_free(&a), free0 - 4 * MIB);
	st_app_ok(&a, buf, sizeof(buf), "vunmap %d", slot);
	GW_ASSERT_INT_EQ(mem_free(&a), free0);
	st_app_ok(&a, buf, sizeof(buf), "vfree %d", slot);
	expect_ranges(&d, 0, 0);
	gw_cuda_unload(cu);
	free(bytes);
	finish(&e, &d, &a);
}

/* ---- without a daemon, or disabled ---- */

GW_TEST(no_daemon_no_conversion)
{
	struct st_env e;
	struct st_app a;
	struct st_alloc x;
	unsigned long long handle, used;
	char buf[256];
	int hslot, slot;

	st_setup(&e);
	st_app_start(&a, &e, NULL);
	st_app_ok(&a, buf, sizeof(buf), "init");
	x = st_alloc(&a, "direct", 3 * MIB + 5);
	GW_ASSERT_INT_EQ(x.used, 3 * MIB + 5);
	GW_ASSERT_INT_EQ(st_alloc(&a, "gpa", 5 * MIB).used, 5 * MIB);
	st_app_ok(&a, buf, sizeof(buf), "write %d 1", x.slot);
	st_app_ok(&a, buf, sizeof(buf), "check %d 1", x.slot);
	GW_ASSERT_INT_EQ(freed(&a, "direct", x.slot), -(long long)(3 * MIB + 5));
	/* the app's VMM calls get the driver's own handles */
	GW_ASSERT(sscanf(st_app_ok(&a, buf, sizeof(buf), "vcreate %zu", 2 * MIB), "%d %llx %llu",
			 &hslot, &handle, &used) == 3);
	GW_ASSERT(handle >> 48 != 0x6777);
	GW_ASSERT(sscanf(st_app_ok(&a, buf, sizeof(buf), "vreserve %zu", 2 * MIB), "%d", &slot) ==
		  1);
	st_app_ok(&a, buf, sizeof(buf), "vmap %d %d", slot, hslot);
	st_app_ok(&a, buf, sizeof(buf), "write %d 2", slot);
	st_app_ok(&a, buf, sizeof(buf), "check %d 2", slot);
	/* a later socket does not change that before the 5 s retry */
	{
		struct st_daemon d;

		st_daemon_listen(&d, &e);
		GW_ASSERT_INT_EQ(st_alloc(&a, "direct", 3 * MIB).used, 3 * MIB);
		GW_ASSERT_INT_EQ(st_daemon_try_accept(&d, 300), -ETIMEDOUT);
		st_daemon_close(&d);
	}
	finish(&e, NULL, &a);
}

GW_TEST(disabled_shim_passes_everything_through)
{
	static const char *const env[] = { "GPUWARM_SHIM_DISABLE=1", NULL };
	struct st_env e;
	struct st_daemon d;
	struct st_app a;
	char lib[128], sym[128], buf[64];

	st_setup(&e);
	st_daemon_listen(&d, &e);
	st_app_start(&a, &e, env);
	st_app_ok(&a, buf, sizeof(buf), "init");
	GW_ASSERT_INT_EQ(st_alloc(&a, "direct", 3 * MIB + 5).used, 3 * MIB + 5);
	GW_ASSERT_INT_EQ(st_alloc(&a, "dlsym", 3 * MIB + 5).used, 3 * MIB + 5);
	where(&a, "dlsym", lib, sym);
	GW_ASSERT_STR_EQ(lib, "libfakecuda.so");
	GW_ASSERT_INT_EQ(st_daemon_try_accept(&d, 500), -ETIMEDOUT);
	finish(&e, &d, &a);
}

/* ---- the agent protocol ---- */

GW_TEST(agent_export_release_map)
{
	static const size_t sizes[2] = { 3 * MIB + 5, 6 * MIB + 7 };
	struct st_env e;
	struct st_daemon d;
	struct st_app a;
	struct st_alloc x[2];
	struct gw_message msg;
	struct gw_cuda *cu;
	int fds[GW_FRAME_MAX_FDS];
	unsigned nfds;
	const cJSON *ranges, *r;
	cJSON *params, *arr, *p;
	size_t free0, free1;
	char buf[256];
	int i;

	start_attached(&e, &d, &a, NULL);
	for (i = 0; i < 2; i++) {
		x[i] = st_alloc(&a, "direct", sizes[i]);
		st_app_ok(&a, buf, sizeof(buf), "write %d %d", x[i].slot, 11 + i);
	}
	free0 = mem_free(&a);
	GW_ASSERT_INT_EQ(stack_size(&a), 1024);
	cu = st_cuda();

	/* Export: one fd per range, the app's bytes behind each */
	st_daemon_call(&d, GW_METHOD_AGENT_EXPORT, params_offset(0), NULL, 0, &msg, fds, &nfds);
	GW_ASSERT_INT_EQ(msg.kind, GW_MESSAGE_REPLY);
	GW_ASSERT_INT_EQ(nfds, 2);
	GW_ASSERT_INT_EQ(st_json_u64(msg.body, "total"), 2);
	ranges = cJSON_GetObjectItemCaseSensitive(msg.body, "ranges");
	GW_ASSERT_INT_EQ(cJSON_GetArraySize(ranges), 2);
	i = 0;
	cJSON_ArrayForEach(r, ranges) {
		const char *uuid = NULL;
		unsigned char *bytes = malloc(ROUND(sizes[i]));

		GW_ASSERT(bytes);
		GW_ASSERT_INT_EQ(hex_member(r, "va"), x[i].va);
		GW_ASSERT_INT_EQ(st_json_u64(r, "size"), ROUND(sizes[i]));
		GW_ASSERT_INT_EQ(st_json_u64(r, "device"), 0);
		GW_ASSERT(gw_json_get_string(r, "uuid", 64, &uuid) == 0);
		GW_ASSERT(strncmp(uuid, "GPU-", 4) == 0);
		st_cuda_read_fd(cu, fds[i], ROUND(sizes[i]), bytes);
		for (size_t k = 0; k < sizes[i]; k++)
			if (bytes[k] != st_pattern(11 + (unsigned)i, k))
				GW_FAIL("range %d: exported byte %zu differs", i, k);
		close(fds[i]);
		free(bytes);
		i++;
	}
	gw_message_finish(&msg);

	/* Release: the memory goes back to the device, the VA stays the app's */
	st_daemon_call(&d, GW_METHOD_AGENT_RELEASE, NULL, NULL, 0, &msg, fds, &nfds);
	GW_ASSERT_INT_EQ(msg.kind, GW_MESSAGE_REPLY);
	GW_ASSERT_INT_EQ(st_json_u64(msg.body, "released"), 2);
	GW_ASSERT_INT_EQ(st_json_u64(msg.body, "bytes"), ROUND(sizes[0]) + ROUND(sizes[1]));
	gw_message_finish(&msg);
	free1 = mem_free(&a);
	GW_ASSERT_INT_EQ(free1, free0 + ROUND(sizes[0]) + ROUND(sizes[1]));
	GW_ASSERT_INT_EQ(st_app_err(&a, "check %d 11", x[0].slot), CUDA_ERROR_INVALID_VALUE);
	/* the local-memory reservation went with it, until Map */
	GW_ASSERT_INT_EQ(stack_size(&a), 0);
	p = ping(&d);
	GW_ASSERT_INT_EQ(st_json_u64(p, "ranges"), 2);
	GW_ASSERT_INT_EQ(st_json_u64(p, "released"), 2);
	cJSON_Delete(p);

	/* Map: new memory, made here, at the same addresses */
	params = cJSON_CreateObject();
	arr = cJSON_AddArrayToObject(params, "ranges");
	for (i = 0; i < 2; i++) {
		cJSON *o = cJSON_CreateObject();
		char va[32];

		snprintf(va, sizeof(va), "0x%" PRIx64, x[i].va);
		cJSON_AddStringToObject(o, "va", va);
		cJSON_AddNumberToObject(o, "size", (double)ROUND(sizes[i]));
		cJSON_AddNumberToObject(o, "device", 0);
		cJSON_AddItemToArray(arr, o);
		fds[i] = st_cuda_make_fd(cu, ROUND(sizes[i]), 21 + (unsigned)i);
	}
	st_daemon_call(&d, GW_METHOD_AGENT_MAP, params, fds, 2, &msg, fds + 2, &nfds);
	close(fds[0]);
	close(fds[1]);
	GW_ASSERT_INT_EQ(msg.kind, GW_MESSAGE_REPLY);
	GW_ASSERT_INT_EQ(st_json_u64(msg.body, "mapped"), 2);
	gw_message_finish(&msg);
	for (i = 0; i < 2; i++)
		st_app_ok(&a, buf, sizeof(buf), "check %d %d", x[i].slot, 21 + i);
	GW_ASSERT_INT_EQ(stack_size(&a), 1024); /* the app's value, back */
	/* memory made by another process is not the app's */
	GW_ASSERT_INT_EQ(mem_free(&a), free1);
	p = ping(&d);
	GW_ASSERT_INT_EQ(st_json_u64(p, "released"), 0);
	GW_ASSERT_INT_EQ(st_json_u64(p, "foreign"), 2);
	cJSON_Delete(p);
	/* and the next suspend exports that memory the same way */
	st_daemon_call(&d, GW_METHOD_AGENT_EXPORT, params_offset(0), NULL, 0, &msg, fds, &nfds);
	GW_ASSERT_INT_EQ(msg.kind, GW_MESSAGE_REPLY);
	GW_ASSERT_INT_EQ(nfds, 2);
	gw_message_finish(&msg);
	for (i = 0; i < 2; i++) {
		unsigned char *bytes = malloc(ROUND(sizes[i]));

		GW_ASSERT(bytes);
		st_cuda_read_fd(cu, fds[i], ROUND(sizes[i]), bytes);
		for (size_t k = 0; k < ROUND(sizes[i]); k++)
			if (bytes[k] != st_pattern(21 + (unsigned)i, k))
				GW_FAIL("range %d: re-exported byte %zu differs", i, k);
		close(fds[i]);
		free(bytes);
	}
	/* the app works on and frees as usual */
	st_app_ok(&a, buf, sizeof(buf), "write %d 31", x[0].slot);
	st_app_ok(&a, buf, sizeof(buf), "check %d 31", x[0].slot);
	for (i = 0; i < 2; i++)
		GW_ASSERT_INT_EQ(freed(&a, "direct", x[i].slot), 0);
	expect_ranges(&d, 0, 0);
	gw_cuda_unload(cu);
	finish(&e, &d, &a);
}

GW_TEST(agent_export_comes_in_pages)
{
	enum { N = GW_FRAME_MAX_FDS + 3 };
	static struct st_alloc x[N];
	struct st_env e;
	struct st_daemon d;
	struct st_app a;
	struct gw_message msg;
	int fds[GW_FRAME_MAX_FDS];
	unsigned nfds, seen = 0;
	const cJSON *r;

	start_attached(&e, &d, &a, NULL);
	for (int i = 0; i < N; i++)
		x[i] = st_alloc(&a, "direct", 2 * MIB);
	expect_ranges(&d, N, N * 2 * MIB);
	st_daemon_call(&d, GW_METHOD_AGENT_EXPORT, params_offset(0), NULL, 0, &msg, fds, &nfds);
	GW_ASSERT_INT_EQ(msg.kind, GW_MESSAGE_REPLY);
	GW_ASSERT_INT_EQ(nfds, GW_FRAME_MAX_FDS);
	GW_ASSERT_INT_EQ(st_json_u64(msg.body, "total"), N);
	cJSON_ArrayForEach(r, cJSON_GetObjectItemCaseSensitive(msg.body, "ranges"))
		GW_ASSERT_INT_EQ(hex_member(r, "va"), x[seen++].va); /* in address order */
	for (unsigned i = 0; i < nfds; i++)
		close(fds[i]);
	gw_message_finish(&msg);
	/* the list was fixed at offset 0: a range that comes now is not part of this export */
	GW_ASSERT_INT_EQ(st_alloc(&a, "direct", 2 * MIB + 1).used, 4 * MIB);
	st_daemon_call(&d, GW_METHOD_AGENT_EXPORT, params_offset(GW_FRAME_MAX_FDS), NULL, 0, &msg,
		       fds, &nfds);
	GW_ASSERT_INT_EQ(msg.kind, GW_MESSAGE_REPLY);
	GW_ASSERT_INT_EQ(nfds, 3);
	GW_ASSERT_INT_EQ(st_json_u64(msg.body, "total"), N);
	cJSON_ArrayForEach(r, cJSON_GetObjectItemCaseSensitive(msg.body, "ranges"))
		GW_ASSERT_INT_EQ(hex_member(r, "va"), x[seen++].va);
	GW_ASSERT_INT_EQ(seen, N);
	for (unsigned i = 0; i < nfds; i++)
		close(fds[i]);
	gw_message_finish(&msg);
	/* Release covers every page of that export, and only it */
	st_daemon_call(&d, GW_METHOD_AGENT_RELEASE, NULL, NULL, 0, &msg, fds, &nfds);
	GW_ASSERT_INT_EQ(msg.kind, GW_MESSAGE_REPLY);
	GW_ASSERT_INT_EQ(st_json_u64(msg.body, "released"), N);
	GW_ASSERT_INT_EQ(st_json_u64(msg.body, "bytes"), N * 2 * MIB);
	gw_message_finish(&msg);
	finish(&e, &d, &a);
}

GW_TEST(agent_refuses_bad_requests)
{
	struct st_env e;
	struct st_daemon d;
	struct st_app a;
	struct st_alloc x;
	struct gw_message msg;
	int fds[GW_FRAME_MAX_FDS], fd;
	unsigned nfds;
	cJSON *params, *o;
	char buf[64], va[32];

	start_attached(&e, &d, &a, NULL);
	x = st_alloc(&a, "direct", 4 * MIB);
	st_app_ok(&a, buf, sizeof(buf), "write %d 4", x.slot);
	/* Release without an Export moves nothing: no data is dropped uncopied */
	st_daemon_call(&d, GW_METHOD_AGENT_RELEASE, NULL, NULL, 0, &msg, fds, &nfds);
	GW_ASSERT_INT_EQ(msg.kind, GW_MESSAGE_REPLY);
	GW_ASSERT_INT_EQ(st_json_u64(msg.body, "released"), 0);
	gw_message_finish(&msg);
	st_app_ok(&a, buf, sizeof(buf), "check %d 4", x.slot);
	/* Map onto a range that still has its memory */
	params = cJSON_CreateObject();
	o = cJSON_CreateObject();
	snprintf(va, sizeof(va), "0x%" PRIx64, x.va);
	cJSON_AddStringToObject(o, "va", va);
	cJSON_AddNumberToObject(o, "size", 4 * MIB);
	cJSON_AddNumberToObject(o, "device", 0);
	cJSON_AddItemToArray(cJSON_AddArrayToObject(params, "ranges"), o);
	fd = open("/dev/null", O_RDONLY | O_CLOEXEC);
	st_daemon_call(&d, GW_METHOD_AGENT_MAP, cJSON_Duplicate(params, 1), &fd, 1, &msg, fds,
		       &nfds);
	GW_ASSERT_INT_EQ(msg.kind, GW_MESSAGE_ERROR);
	GW_ASSERT_STR_EQ(msg.error_name, GW_ERROR_INVALID_REQUEST);
	gw_message_finish(&msg);
	/* a range without its fd */
	st_daemon_call(&d, GW_METHOD_AGENT_MAP, params, NULL, 0, &msg, fds, &nfds);
	GW_ASSERT_INT_EQ(msg.kind, GW_MESSAGE_ERROR);
	GW_ASSERT_STR_EQ(msg.error_name, GW_ERROR_INVALID_REQUEST);
	gw_message_finish(&msg);
	close(fd);
	st_daemon_call(&d, "gpuwarm.Agent.Bogus", NULL, NULL, 0, &msg, fds, &nfds);
	GW_ASSERT_INT_EQ(msg.kind, GW_MESSAGE_ERROR);
	GW_ASSERT_STR_EQ(msg.error_name, GW_ERROR_UNKNOWN_METHOD);
	gw_message_finish(&msg);
	/* and the app is untouched */
	st_app_ok(&a, buf, sizeof(buf), "check %d 4", x.slot);
	expect_ranges(&d, 1, 4 * MIB);
	finish(&e, &d, &a);
}

GW_TEST(agent_sends_updates)
{
	struct st_env e;
	struct st_daemon d;
	struct st_app a;
	struct st_alloc x;

	start_attached(&e, &d, &a, NULL);
	x = st_alloc(&a, "direct", 3 * MIB);
	st_daemon_wait_update(&d, 1, 5000);
	GW_ASSERT_INT_EQ(st_json_u64(d.update, "bytes"), 4 * MIB);
	GW_ASSERT_INT_EQ(freed(&a, "direct", x.slot), -(long long)(4 * MIB));
	st_daemon_wait_update(&d, 0, 5000);
	GW_ASSERT_INT_EQ(st_json_u64(d.update, "bytes"), 0);
	finish(&e, &d, &a);
}

GW_TEST(daemon_gone_app_goes_on_and_agent_returns)
{
	struct st_env e;
	struct st_daemon d;
	struct st_app a;
	struct st_alloc x;
	char buf[64];

	start_attached(&e, &d, &a, NULL);
	x = st_alloc(&a, "direct", 3 * MIB);
	GW_ASSERT_INT_EQ(x.used, 4 * MIB);
	st_app_ok(&a, buf, sizeof(buf), "write %d 6", x.slot);
	st_daemon_close(&d);
	usleep(300 * 1000);
	/* no daemon: new allocations are plain, converted ones stay valid */
	GW_ASSERT_INT_EQ(st_alloc(&a, "direct", 3 * MIB).used, 3 * MIB);
	st_app_ok(&a, buf, sizeof(buf), "check %d 6", x.slot);
	GW_ASSERT_INT_EQ(freed(&a, "direct", x.slot), -(long long)(4 * MIB));
	/* the daemon is back: the agent reattaches on its own */
	st_daemon_listen(&d, &e);
	st_daemon_accept(&d, 8000);
	GW_ASSERT_INT_EQ(st_json_u64(d.attach, "pid"), a.pid);
	GW_ASSERT_INT_EQ(st_json_u64(d.attach, "ranges"), 0);
	GW_ASSERT_INT_EQ(st_alloc(&a, "direct", 3 * MIB).used, 4 * MIB);
	expect_ranges(&d, 1, 4 * MIB);
	finish(&e, &d, &a);
}

GW_TEST(reattach_after_release_says_restored)
{
	struct st_env e;
	struct st_daemon d;
	struct st_app a;
	struct st_alloc x;
	struct gw_message msg;
	struct gw_cuda *cu;
	int fds[GW_FRAME_MAX_FDS];
	unsigned nfds;
	cJSON *params, *o;
	char buf[64], va[32];
	int restored = 0;

	start_attached(&e, &d, &a, NULL);
	x = st_alloc(&a, "direct", 4 * MIB);
	GW_ASSERT(gw_json_get_bool(d.attach, "restored", &restored) == -ENOENT);
	st_daemon_call(&d, GW_METHOD_AGENT_EXPORT, params_offset(0), NULL, 0, &msg, fds, &nfds);
	GW_ASSERT_INT_EQ(nfds, 1);
	close(fds[0]);
	gw_message_finish(&msg);
	st_daemon_call(&d, GW_METHOD_AGENT_RELEASE, NULL, NULL, 0, &msg, fds, &nfds);
	GW_ASSERT_INT_EQ(st_json_u64(msg.body, "released"), 1);
	gw_message_finish(&msg);
	/* the connection goes (a restored process has lost it): the agent comes back at once and
	 * says its ranges need memory */
	st_daemon_drop(&d);
	st_daemon_accept(&d, 3000);
	GW_ASSERT(gw_json_get_bool(d.attach, "restored", &restored) == 0 && restored);
	GW_ASSERT_INT_EQ(st_json_u64(d.attach, "ranges"), 1);
	GW_ASSERT_INT_EQ(st_json_u64(d.attach, "released"), 1);
	cu = st_cuda();
	params = cJSON_CreateObject();
	o = cJSON_CreateObject();
	snprintf(va, sizeof(va), "0x%" PRIx64, x.va);
	cJSON_AddStringToObject(o, "va", va);
	cJSON_AddNumberToObject(o, "size", 4 * MIB);
	cJSON_AddNumberToObject(o, "device", 0);
	cJSON_AddItemToArray(cJSON_AddArrayToObject(params, "ranges"), o);
	fds[0] = st_cuda_make_fd(cu, 4 * MIB, 8);
	st_daemon_call(&d, GW_METHOD_AGENT_MAP, params, fds, 1, &msg, fds + 1, &nfds);
	close(fds[0]);
	GW_ASSERT_INT_EQ(msg.kind, GW_MESSAGE_REPLY);
	GW_ASSERT_INT_EQ(st_json_u64(msg.body, "mapped"), 1);
	gw_message_finish(&msg);
	st_app_ok(&a, buf, sizeof(buf), "check %d 8", x.slot);
	gw_cuda_unload(cu);
	finish(&e, &d, &a);
}

GW_TEST(forked_child_gets_its_own_agent)
{
	struct st_env e;
	struct st_daemon d, d2;
	struct st_app a;
	struct gw_message msg;
	int fds[GW_FRAME_MAX_FDS], status, child;
	unsigned nfds;
	cJSON *p;
	char buf[64];

	start_attached(&e, &d, &a, NULL);
	GW_ASSERT_INT_EQ(st_alloc(&a, "direct", 3 * MIB).used, 4 * MIB);
	st_app_send(&a, "fork %zu", 3 * MIB + 3);
	/* the child's first allocation starts an agent of its own */
	st_daemon_second(&d2, &d);
	st_daemon_accept(&d2, ST_TIMEOUT_MS);
	GW_ASSERT(st_json_u64(d2.attach, "pid") != (uint64_t)a.pid);
	GW_ASSERT_INT_EQ(st_json_u64(d2.attach, "ranges"), 0);
	st_app_recv(&a, buf, sizeof(buf));
	GW_ASSERT(sscanf(buf, "ok %d %d", &status, &child) == 2);
	GW_ASSERT_INT_EQ(status, 0); /* converted, data checked */
	GW_ASSERT_INT_EQ(st_json_u64(d2.attach, "pid"), child);
	/* the child has exited: its connection ends (after its updates, if any) */
	for (int i = 0;; i++) {
		GW_ASSERT(i < 5);
		if (st_daemon_read(&d2, &msg, fds, &nfds, ST_TIMEOUT_MS) == -ECONNRESET)
			break;
		GW_ASSERT_STR_EQ(msg.method, GW_METHOD_AGENT_UPDATE);
		gw_message_finish(&msg);
	}
	st_daemon_close(&d2);
	/* the parent's agent is as before */
	p = ping(&d);
	GW_ASSERT_INT_EQ(st_json_u64(p, "pid"), a.pid);
	GW_ASSERT_INT_EQ(st_json_u64(p, "ranges"), 1);
	cJSON_Delete(p);
	finish(&e, &d, &a);
}

GW_TEST_MAIN()
