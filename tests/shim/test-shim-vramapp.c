/* SPDX-License-Identifier: MIT */
/*
 * The project's own VRAM test app (tests/apps/gw-vram-app: the driver through dlopen + dlsym
 * "cuGetProcAddress_v2" + cuGetProcAddress, like the CUDA runtime) under the shim, with this
 * process as the daemon: its buffers are caught, exported, released and mapped back.
 */
#include <inttypes.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "shim-testlib.h"

#define CHUNK_MIB 4
#define NCHUNKS 3

/* gw-vram-app's pattern: one 32-bit word per chunk and 1 MiB block */
static uint32_t vram_pattern(size_t chunk, size_t block)
{
	return 0x9e3779b9u * (uint32_t)(chunk * 65537 + block + 1) ^ 0x5a5a0000u;
}

static void fill_chunk(unsigned char *buf, size_t chunk)
{
	for (size_t b = 0; b < CHUNK_MIB; b++) {
		uint32_t w = vram_pattern(chunk, b);

		for (size_t i = 0; i < MIB; i += 4)
			memcpy(buf + b * MIB + i, &w, 4);
	}
}

static cJSON *call_ok(struct st_daemon *d, const char *method, cJSON *params, const int *fds,
		      unsigned nfds, int *rfds, unsigned *rnfds)
{
	struct gw_message msg;
	cJSON *res;

	st_daemon_call(d, method, params, fds, nfds, &msg, rfds, rnfds);
	if (msg.kind != GW_MESSAGE_REPLY)
		GW_FAIL("%s failed: %s: %s", method, msg.error_name, msg.error_message);
	res = cJSON_Duplicate(msg.body, 1);
	gw_message_finish(&msg);
	return res;
}

GW_TEST(gw_vram_app_fast_path_cycle)
{
	char *argv[] = { (char *)GW_VRAM_APP_PATH, (char *)"--mib", (char *)"12",
			 (char *)"--chunk-mib", (char *)"4", (char *)"--busy", NULL };
	unsigned char *want = malloc(CHUNK_MIB * MIB), *got = malloc(CHUNK_MIB * MIB);
	int fds[GW_FRAME_MAX_FDS], status;
	uint64_t va[NCHUNKS];
	struct st_env e;
	struct st_daemon d;
	struct st_app a;
	struct gw_cuda *cu;
	const cJSON *r;
	cJSON *res, *params, *arr;
	unsigned nfds;
	char line[256];
	int i;

	GW_ASSERT(want && got);
	st_setup(&e);
	st_daemon_listen(&d, &e);
	st_exec_start(&a, &e, NULL, argv);
	st_daemon_accept(&d, ST_TIMEOUT_MS);
	GW_ASSERT_INT_EQ(st_json_u64(d.attach, "pid"), a.pid);
	st_app_recv(&a, line, sizeof(line));
	GW_ASSERT(strncmp(line, "ready pid", 9) == 0);
	res = call_ok(&d, GW_METHOD_AGENT_PING, NULL, NULL, 0, fds, &nfds);
	GW_ASSERT_INT_EQ(st_json_u64(res, "ranges"), NCHUNKS);
	GW_ASSERT_INT_EQ(st_json_u64(res, "bytes"), NCHUNKS * CHUNK_MIB * MIB);
	cJSON_Delete(res);

	/* export: the app's patterns behind the fds */
	cu = st_cuda();
	params = cJSON_CreateObject();
	cJSON_AddNumberToObject(params, "offset", 0);
	res = call_ok(&d, GW_METHOD_AGENT_EXPORT, params, NULL, 0, fds, &nfds);
	GW_ASSERT_INT_EQ(nfds, NCHUNKS);
	i = 0;
	cJSON_ArrayForEach(r, cJSON_GetObjectItemCaseSensitive(res, "ranges")) {
		GW_ASSERT(gw_json_get_hex_u64(r, "va", &va[i]) == 0);
		GW_ASSERT_INT_EQ(st_json_u64(r, "size"), CHUNK_MIB * MIB);
		st_cuda_read_fd(cu, fds[i], CHUNK_MIB * MIB, got);
		fill_chunk(want, (size_t)i);
		GW_ASSERT(memcmp(got, want, CHUNK_MIB * MIB) == 0);
		close(fds[i]);
		i++;
	}
	cJSON_Delete(res);

	/* release, then new memory with the same contents at the same addresses */
	res = call_ok(&d, GW_METHOD_AGENT_RELEASE, NULL, NULL, 0, fds, &nfds);
	GW_ASSERT_INT_EQ(st_json_u64(res, "released"), NCHUNKS);
	cJSON_Delete(res);
	params = cJSON_CreateObject();
	arr = cJSON_AddArrayToObject(params, "ranges");
	for (i = 0; i < NCHUNKS; i++) {
		cJSON *o = cJSON_CreateObject();
		char text[32];

		snprintf(text, sizeof(text), "0x%" PRIx64, va[i]);
		cJSON_AddStringToObject(o, "va", text);
		cJSON_AddNumberToObject(o, "size", CHUNK_MIB * MIB);
		cJSON_AddNumberToObject(o, "device", 0);
		cJSON_AddItemToArray(arr, o);
		fill_chunk(want, (size_t)i);
		fds[i] = st_cuda_make_fd_bytes(cu, want, CHUNK_MIB * MIB);
	}
	res = call_ok(&d, GW_METHOD_AGENT_MAP, params, fds, NCHUNKS, fds + NCHUNKS, &nfds);
	GW_ASSERT_INT_EQ(st_json_u64(res, "mapped"), NCHUNKS);
	cJSON_Delete(res);
	for (i = 0; i < NCHUNKS; i++)
		close(fds[i]);

	/* the app checks every block itself, then writes and reads one again */
	GW_ASSERT(kill(a.pid, SIGUSR1) == 0);
	st_app_recv(&a, line, sizeof(line));
	GW_ASSERT_STR_CONTAINS(line, "verify ok");
	GW_ASSERT(kill(a.pid, SIGTERM) == 0);
	status = st_app_stop(&a);
	GW_ASSERT(WIFEXITED(status) && WEXITSTATUS(status) == 0);
	gw_cuda_unload(cu);
	st_daemon_close(&d);
	st_cleanup(&e);
	free(want);
	free(got);
}

GW_TEST_MAIN()
