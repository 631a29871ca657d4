/* SPDX-License-Identifier: MIT */
/*
 * The fake driver's cross-process checkpoint API: a forked target process loads the fake,
 * allocates and fills memory; this process drives cuCheckpointProcess* on it.
 */
#include <dlfcn.h>
#include <fcntl.h>
#include <limits.h>
#include <sys/socket.h>
#include <sys/un.h>

#include "fk-testlib.h"

GW_TEST(full_cycle_keeps_data)
{
	struct fkt_opts o = { .nallocs = 4, .size = 3 * MIB + 12, .vmm = 1 };
	struct gw_cuda *cu;
	struct fkt_target t;
	char path[64];
	int tid = 0;

	fkt_setup();
	t = fkt_target_start(&o);
	cu = fkt_caller();
	GW_ASSERT_INT_EQ(fkt_state_of(cu, t.pid), CU_PROCESS_STATE_RUNNING);
	GW_ASSERT_INT_EQ(cu->cuCheckpointProcessGetRestoreThreadId(t.pid, &tid), CUDA_SUCCESS);
	GW_ASSERT(tid > 0 && tid != t.pid);
	snprintf(path, sizeof(path), "/proc/%d/task/%d", t.pid, tid);
	GW_ASSERT(access(path, F_OK) == 0);

	GW_ASSERT_INT_EQ(cu->cuCheckpointProcessLock(t.pid, NULL), CUDA_SUCCESS);
	GW_ASSERT_INT_EQ(fkt_state_of(cu, t.pid), CU_PROCESS_STATE_LOCKED);
	GW_ASSERT_INT_EQ(cu->cuCheckpointProcessCheckpoint(t.pid, NULL), CUDA_SUCCESS);
	GW_ASSERT_INT_EQ(fkt_state_of(cu, t.pid), CU_PROCESS_STATE_CHECKPOINTED);
	fkt_restore_unlock(cu, t.pid, NULL);
	fkt_expect_verify_ok(&t);

	/* and a second cycle, with explicit zeroed arguments */
	{
		CUcheckpointLockArgs la = { .timeoutMs = 5000 };
		CUcheckpointCheckpointArgs ca = { { 0 } };
		CUcheckpointRestoreArgs ra = { 0 };
		CUcheckpointUnlockArgs ua = { { 0 } };

		GW_ASSERT_INT_EQ(cu->cuCheckpointProcessLock(t.pid, &la), CUDA_SUCCESS);
		GW_ASSERT_INT_EQ(cu->cuCheckpointProcessCheckpoint(t.pid, &ca), CUDA_SUCCESS);
		GW_ASSERT_INT_EQ(cu->cuCheckpointProcessRestore(t.pid, &ra), CUDA_SUCCESS);
		GW_ASSERT_INT_EQ(cu->cuCheckpointProcessUnlock(t.pid, &ua), CUDA_SUCCESS);
		la.reserved0 = 1;
		GW_ASSERT_INT_EQ(cu->cuCheckpointProcessLock(t.pid, &la), CUDA_ERROR_INVALID_VALUE);
	}
	fkt_expect_verify_ok(&t);
	fkt_cleanup();
}

GW_TEST(illegal_transitions)
{
	struct gw_cuda *cu;
	struct fkt_target t;

	fkt_setup();
	t = fkt_target_simple(1, MIB);
	cu = fkt_caller();
	/* RUNNING */
	GW_ASSERT_INT_EQ(cu->cuCheckpointProcessCheckpoint(t.pid, NULL), CUDA_ERROR_ILLEGAL_STATE);
	GW_ASSERT_INT_EQ(cu->cuCheckpointProcessRestore(t.pid, NULL), CUDA_ERROR_ILLEGAL_STATE);
	GW_ASSERT_INT_EQ(cu->cuCheckpointProcessUnlock(t.pid, NULL), CUDA_ERROR_ILLEGAL_STATE);
	GW_ASSERT_INT_EQ(fkt_state_of(cu, t.pid), CU_PROCESS_STATE_RUNNING);
	/* LOCKED */
	GW_ASSERT_INT_EQ(cu->cuCheckpointProcessLock(t.pid, NULL), CUDA_SUCCESS);
	GW_ASSERT_INT_EQ(cu->cuCheckpointProcessLock(t.pid, NULL), CUDA_ERROR_ILLEGAL_STATE);
	GW_ASSERT_INT_EQ(cu->cuCheckpointProcessRestore(t.pid, NULL), CUDA_ERROR_ILLEGAL_STATE);
	GW_ASSERT_INT_EQ(fkt_state_of(cu, t.pid), CU_PROCESS_STATE_LOCKED);
	/* CHECKPOINTED */
	GW_ASSERT_INT_EQ(cu->cuCheckpointProcessCheckpoint(t.pid, NULL), CUDA_SUCCESS);
	GW_ASSERT_INT_EQ(cu->cuCheckpointProcessLock(t.pid, NULL), CUDA_ERROR_ILLEGAL_STATE);
	GW_ASSERT_INT_EQ(cu->cuCheckpointProcessCheckpoint(t.pid, NULL), CUDA_ERROR_ILLEGAL_STATE);
	GW_ASSERT_INT_EQ(cu->cuCheckpointProcessUnlock(t.pid, NULL), CUDA_ERROR_ILLEGAL_STATE);
	GW_ASSERT_INT_EQ(fkt_state_of(cu, t.pid), CU_PROCESS_STATE_CHECKPOINTED);
	/* back to LOCKED: checkpoint again is illegal too */
	GW_ASSERT_INT_EQ(cu->cuCheckpointProcessRestore(t.pid, NULL), CUDA_SUCCESS);
	GW_ASSERT_INT_EQ(cu->cuCheckpointProcessRestore(t.pid, NULL), CUDA_ERROR_ILLEGAL_STATE);
	GW_ASSERT_INT_EQ(fkt_state_of(cu, t.pid), CU_PROCESS_STATE_LOCKED);
	GW_ASSERT_INT_EQ(cu->cuCheckpointProcessUnlock(t.pid, NULL), CUDA_SUCCESS);
	fkt_expect_verify_ok(&t);
	fkt_cleanup();
}

GW_TEST(lock_timeout_leaves_running)
{
	CUcheckpointLockArgs la = { .timeoutMs = 200 };
	struct gw_cuda *cu;
	struct fkt_target t;
	uint64_t t0, waited;
	char reply[256];

	fkt_setup();
	setenv(FAKECUDA_ENV_SYNC_DELAY_MS, "1500", 1);
	t = fkt_target_simple(1, MIB);
	cu = fkt_caller();
	GW_ASSERT_INT_EQ(fkt_msg_send(t.sock, -1, "sync"), 0);
	usleep(200 * 1000); /* the target is now sleeping inside cuCtxSynchronize */
	t0 = fkt_now_ms();
	GW_ASSERT_INT_EQ(cu->cuCheckpointProcessLock(t.pid, &la), CUDA_ERROR_NOT_READY);
	waited = fkt_now_ms() - t0;
	GW_ASSERT(waited >= 190 && waited < 1200);
	GW_ASSERT_INT_EQ(fkt_state_of(cu, t.pid), CU_PROCESS_STATE_RUNNING);
	/* the target was not disturbed, and a lock without timeout waits for the driver to drain */
	t0 = fkt_now_ms();
	GW_ASSERT_INT_EQ(cu->cuCheckpointProcessLock(t.pid, NULL), CUDA_SUCCESS);
	GW_ASSERT(fkt_now_ms() - t0 >= 500);
	GW_ASSERT_INT_EQ(fkt_msg_recv(t.sock, reply, sizeof(reply), NULL, 5000), 0);
	GW_ASSERT_STR_EQ(reply, "sync 0");
	GW_ASSERT_INT_EQ(cu->cuCheckpointProcessUnlock(t.pid, NULL), CUDA_SUCCESS);
	fkt_cleanup();
}

GW_TEST(locked_process_blocks_calls)
{
	struct gw_cuda *cu;
	struct fkt_target t;
	char reply[256];

	fkt_setup();
	t = fkt_target_simple(1, MIB);
	cu = fkt_caller();
	GW_ASSERT_INT_EQ(cu->cuCheckpointProcessLock(t.pid, NULL), CUDA_SUCCESS);
	GW_ASSERT_INT_EQ(fkt_msg_send(t.sock, -1, "verify"), 0);
	GW_ASSERT_INT_EQ(fkt_msg_recv(t.sock, reply, sizeof(reply), NULL, 300), -ETIMEDOUT);
	GW_ASSERT_INT_EQ(cu->cuCheckpointProcessUnlock(t.pid, NULL), CUDA_SUCCESS);
	GW_ASSERT_INT_EQ(fkt_msg_recv(t.sock, reply, sizeof(reply), NULL, 5000), 0);
	GW_ASSERT_STR_EQ(reply, "verify 0 ok");
	fkt_cleanup();
}

GW_TEST(busy_app_can_be_locked)
{
	struct fkt_opts o = { .nallocs = 2, .size = MIB, .busy = 1 };
	unsigned long loops1, loops2;
	struct gw_cuda *cu;
	struct fkt_target t;
	char reply[256];
	int r;

	fkt_setup();
	setenv(FAKECUDA_ENV_SYNC_DELAY_MS, "2", 1);
	t = fkt_target_start(&o);
	cu = fkt_caller();
	usleep(50 * 1000);
	for (int round = 0; round < 3; round++) {
		CUcheckpointLockArgs la = { .timeoutMs = 5000 };

		GW_ASSERT_INT_EQ(cu->cuCheckpointProcessLock(t.pid, &la), CUDA_SUCCESS);
		GW_ASSERT_INT_EQ(cu->cuCheckpointProcessCheckpoint(t.pid, NULL), CUDA_SUCCESS);
		fkt_restore_unlock(cu, t.pid, NULL);
	}
	fkt_expect_verify_ok(&t);
	fkt_ask(&t, "info", -1, reply, sizeof(reply));
	r = sscanf(reply, "info 0 %*u %*u 0 %*s %lu 0", &loops1);
	GW_ASSERT_INT_EQ(r, 1);
	usleep(100 * 1000);
	fkt_ask(&t, "info", -1, reply, sizeof(reply));
	GW_ASSERT_INT_EQ(sscanf(reply, "info 0 %*u %*u 0 %*s %lu 0", &loops2), 1);
	GW_ASSERT(loops2 > loops1); /* still busy after the restores */
	fkt_cleanup();
}

GW_TEST(meminfo_follows_checkpoint)
{
	struct gw_cuda *cu;
	struct fkt_target t;
	size_t free_b, total;
	char reply[256];

	fkt_setup();
	setenv(FAKECUDA_ENV_MEM_MIB, "64", 1);
	t = fkt_target_simple(4, MIB);
	cu = fkt_caller();
	fkt_ask(&t, "info", -1, reply, sizeof(reply));
	GW_ASSERT_INT_EQ(sscanf(reply, "info 0 %zu %zu", &free_b, &total), 2);
	GW_ASSERT_INT_EQ(total, 64 * MIB);
	GW_ASSERT_INT_EQ(free_b, 60 * MIB);
	GW_ASSERT_INT_EQ(fkt_used_of(cu, t.pid, 0), 4 * MIB);

	fkt_lock_checkpoint(cu, t.pid);
	GW_ASSERT_INT_EQ(fkt_used_of(cu, t.pid, 0), 0);
	GW_ASSERT_INT_EQ(cu->cuCheckpointProcessRestore(t.pid, NULL), CUDA_SUCCESS);
	GW_ASSERT_INT_EQ(fkt_used_of(cu, t.pid, 0), 4 * MIB);
	GW_ASSERT_INT_EQ(cu->cuCheckpointProcessUnlock(t.pid, NULL), CUDA_SUCCESS);
	fkt_ask(&t, "info", -1, reply, sizeof(reply));
	GW_ASSERT_INT_EQ(sscanf(reply, "info 0 %zu %zu", &free_b, &total), 2);
	GW_ASSERT_INT_EQ(free_b, 60 * MIB);
	fkt_expect_verify_ok(&t);
	fkt_cleanup();
}

GW_TEST(restore_remaps_gpu)
{
	CUcheckpointGpuPair pair = { fkt_uuid_of(0), fkt_uuid_of(1) };
	CUcheckpointRestoreArgs ra = { .gpuPairs = &pair, .gpuPairsCount = 1 };
	struct gw_cuda *cu;
	struct fkt_target t;
	char reply[256];

	fkt_setup();
	setenv(FAKECUDA_ENV_GPUS, "2", 1);
	t = fkt_target_simple(2, MIB);
	cu = fkt_caller();
	GW_ASSERT_INT_EQ(fkt_devices_of(cu, t.pid), 0x1);
	fkt_lock_checkpoint(cu, t.pid);
	fkt_restore_unlock(cu, t.pid, &ra);
	GW_ASSERT_INT_EQ(fkt_devices_of(cu, t.pid), 0x2);
	GW_ASSERT_INT_EQ(fkt_used_of(cu, t.pid, 0), 0);
	GW_ASSERT_INT_EQ(fkt_used_of(cu, t.pid, 1), 2 * MIB);
	fkt_ask(&t, "info", -1, reply, sizeof(reply));
	GW_ASSERT_STR_CONTAINS(reply, " 1 GPU-fa4ec0da-0000-4000-8000-000000000001 ");
	fkt_expect_verify_ok(&t);
	fkt_cleanup();
}

GW_TEST(restore_pairs_must_cover_gpus)
{
	struct fkt_opts o = { .ctx_mask = 0x3, .dev = 0, .nallocs = 2, .size = MIB };
	CUcheckpointGpuPair pairs[2];
	CUcheckpointRestoreArgs ra = { .gpuPairs = pairs };
	struct gw_cuda *cu;
	struct fkt_target t;
	char reply[256];

	fkt_setup();
	setenv(FAKECUDA_ENV_GPUS, "3", 1);
	t = fkt_target_start(&o);
	cu = fkt_caller();
	GW_ASSERT_INT_EQ(fkt_devices_of(cu, t.pid), 0x3);
	fkt_lock_checkpoint(cu, t.pid);
	/* GPU 1 has a context but no pair */
	pairs[0] = (CUcheckpointGpuPair){ fkt_uuid_of(0), fkt_uuid_of(2) };
	ra.gpuPairsCount = 1;
	GW_ASSERT_INT_EQ(cu->cuCheckpointProcessRestore(t.pid, &ra), CUDA_ERROR_INVALID_VALUE);
	GW_ASSERT_INT_EQ(fkt_state_of(cu, t.pid), CU_PROCESS_STATE_CHECKPOINTED);
	/* a new GPU that does not exist */
	pairs[1] = (CUcheckpointGpuPair){ fkt_uuid_of(1), fkt_uuid_of(9) };
	ra.gpuPairsCount = 2;
	GW_ASSERT_INT_EQ(cu->cuCheckpointProcessRestore(t.pid, &ra), CUDA_ERROR_INVALID_DEVICE);
	/* two GPUs onto one */
	pairs[1] = (CUcheckpointGpuPair){ fkt_uuid_of(1), fkt_uuid_of(2) };
	GW_ASSERT_INT_EQ(cu->cuCheckpointProcessRestore(t.pid, &ra), CUDA_ERROR_INVALID_VALUE);
	ra.gpuPairs = NULL;
	GW_ASSERT_INT_EQ(cu->cuCheckpointProcessRestore(t.pid, &ra), CUDA_ERROR_INVALID_VALUE);
	GW_ASSERT_INT_EQ(fkt_state_of(cu, t.pid), CU_PROCESS_STATE_CHECKPOINTED);
	/* a swap is fine */
	ra.gpuPairs = pairs;
	pairs[0] = (CUcheckpointGpuPair){ fkt_uuid_of(0), fkt_uuid_of(1) };
	pairs[1] = (CUcheckpointGpuPair){ fkt_uuid_of(1), fkt_uuid_of(0) };
	fkt_restore_unlock(cu, t.pid, &ra);
	GW_ASSERT_INT_EQ(fkt_devices_of(cu, t.pid), 0x3);
	GW_ASSERT_INT_EQ(fkt_used_of(cu, t.pid, 1), 2 * MIB);
	fkt_ask(&t, "info", -1, reply, sizeof(reply));
	GW_ASSERT_STR_CONTAINS(reply, "GPU-fa4ec0da-0000-4000-8000-000000000001");
	fkt_expect_verify_ok(&t);
	fkt_cleanup();
}

GW_TEST(not_a_cuda_process)
{
	struct gw_cuda *cu;
	CUprocessState st;
	pid_t pid;

	fkt_setup();
	pid = fork();
	GW_ASSERT(pid >= 0);
	if (pid == 0) {
		pause();
		_exit(0);
	}
	fkt_kid_add(pid);
	cu = fkt_caller();
	GW_ASSERT_INT_EQ(cu->cuCheckpointProcessGetState(pid, &st), CUDA_ERROR_NOT_FOUND);
	GW_ASSERT_INT_EQ(cu->cuCheckpointProcessLock(pid, NULL), CUDA_ERROR_NOT_FOUND);
	/* ... and the caller itself is one */
	GW_ASSERT_INT_EQ(fkt_state_of(cu, getpid()), CU_PROCESS_STATE_RUNNING);
	fkt_cleanup();
}

GW_TEST(nonexistent_pid_and_uninitialized_caller)
{
	struct gw_cuda *cu;
	CUprocessState st;
	pid_t pid;
	int tid;

	fkt_setup();
	pid = fork();
	GW_ASSERT(pid >= 0);
	if (pid == 0)
		_exit(0);
	GW_ASSERT(waitpid(pid, NULL, 0) == pid);
	cu = fkt_load();
	GW_ASSERT_INT_EQ(cu->cuCheckpointProcessGetState(getpid(), &st),
			 CUDA_ERROR_NOT_INITIALIZED);
	GW_ASSERT_INT_EQ(cu->cuInit(0), CUDA_SUCCESS);
	GW_ASSERT_INT_EQ(cu->cuCheckpointProcessGetState(pid, &st), CUDA_ERROR_INVALID_VALUE);
	GW_ASSERT_INT_EQ(cu->cuCheckpointProcessLock(pid, NULL), CUDA_ERROR_INVALID_VALUE);
	GW_ASSERT_INT_EQ(cu->cuCheckpointProcessGetState(0, &st), CUDA_ERROR_INVALID_VALUE);
	GW_ASSERT_INT_EQ(cu->cuCheckpointProcessGetState(-5, &st), CUDA_ERROR_INVALID_VALUE);
	GW_ASSERT_INT_EQ(cu->cuCheckpointProcessGetRestoreThreadId(getpid(), NULL),
			 CUDA_ERROR_INVALID_VALUE);
	GW_ASSERT_INT_EQ(cu->cuCheckpointProcessGetRestoreThreadId(getpid(), &tid), CUDA_SUCCESS);
	GW_ASSERT(tid != getpid());
	fkt_cleanup();
}

GW_TEST(fail_injection)
{
	CUdeviceptr p[3];
	struct gw_cuda *cu;
	pid_t pid;
	int status;

	fkt_setup();
	setenv(FAKECUDA_ENV_FAIL,
	       "cuMemAlloc=2:2,cuCtxSynchronize=999,cuCheckpointProcessLock=600:1", 1);
	cu = fkt_caller();
	fkt_ctx_on(cu, 0);
	GW_ASSERT_INT_EQ(cu->cuMemAlloc(&p[0], 4096), CUDA_SUCCESS);
	GW_ASSERT_INT_EQ(cu->cuMemAlloc(&p[1], 4096), CUDA_ERROR_OUT_OF_MEMORY);
	GW_ASSERT_INT_EQ(cu->cuMemAlloc(&p[2], 4096), CUDA_SUCCESS);
	GW_ASSERT(p[0] != p[2]);
	GW_ASSERT_INT_EQ(cu->cuCtxSynchronize(), CUDA_ERROR_UNKNOWN);
	GW_ASSERT_INT_EQ(cu->cuCtxSynchronize(), CUDA_ERROR_UNKNOWN);
	GW_ASSERT_INT_EQ(cu->cuCheckpointProcessLock(getpid(), NULL), CUDA_ERROR_NOT_READY);
	GW_ASSERT_INT_EQ(fkt_state_of(cu, getpid()), CU_PROCESS_STATE_RUNNING);
	GW_ASSERT_INT_EQ(cu->cuCheckpointProcessLock(getpid(), NULL), CUDA_SUCCESS);
	GW_ASSERT_INT_EQ(cu->cuCheckpointProcessUnlock(getpid(), NULL), CUDA_SUCCESS);
	GW_ASSERT_INT_EQ(cu->cuMemFree(p[0]), CUDA_SUCCESS);

	/* a malformed rule fails cuInit instead of being ignored */
	fflush(NULL);
	pid = fork();
	GW_ASSERT(pid >= 0);
	if (pid == 0) {
		setenv(FAKECUDA_ENV_FAIL, "cuNoSuchCall=2", 1);
		_exit(cu->cuInit(0) == CUDA_ERROR_INVALID_VALUE ? 0 : 1);
	}
	GW_ASSERT(waitpid(pid, &status, 0) == pid);
	GW_ASSERT(WIFEXITED(status) && WEXITSTATUS(status) == 0);
	fkt_cleanup();
}

/* The exporter's bytes are seen by the importer, both ways; checkpointing the exporter moves
 * them away (poison) until restore brings them back. */
GW_TEST(vmm_export_import_shares_memory)
{
	struct fkt_opts o = { .nallocs = 1, .size = MIB, .vmm = 1 };
	CUmemGenericAllocationHandle h;
	CUdeviceptr va;
	struct gw_cuda *cu;
	struct fkt_target t;
	uint32_t word, words[4] = { 1, 2, 3, 4 };
	char reply[256];
	int fd = -1, bad;

	fkt_setup();
	t = fkt_target_start(&o);
	cu = fkt_caller();
	fkt_ctx_on(cu, 0);
	GW_ASSERT_INT_EQ(fkt_msg_send(t.sock, -1, "export"), 0);
	GW_ASSERT_INT_EQ(fkt_msg_recv(t.sock, reply, sizeof(reply), &fd, 5000), 0);
	GW_ASSERT_STR_EQ(reply, "export 0");
	GW_ASSERT(fd >= 0);
	GW_ASSERT_INT_EQ(cu->cuMemImportFromShareableHandle(&h, (void *)(intptr_t)fd, FKT_FD),
			 CUDA_SUCCESS);
	close(fd);
	GW_ASSERT_INT_EQ(cu->cuMemAddressReserve(&va, 2 * GRAN, 0, 0, 0), CUDA_SUCCESS);
	GW_ASSERT_INT_EQ(cu->cuMemMap(va, 2 * GRAN, 0, h, 0), CUDA_SUCCESS);
	/* mapped but not accessible yet */
	GW_ASSERT_INT_EQ(cu->cuMemcpyDtoH(&word, va, 4), CUDA_ERROR_INVALID_VALUE);
	{
		CUmemAccessDesc acc = { { CU_MEM_LOCATION_TYPE_DEVICE, 0 },
					CU_MEM_ACCESS_FLAGS_PROT_READWRITE };

		GW_ASSERT_INT_EQ(cu->cuMemSetAccess(va, 2 * GRAN, &acc, 1), CUDA_SUCCESS);
	}
	GW_ASSERT_INT_EQ(fkt_check(cu, va, 2 * GRAN, 100, &bad), CUDA_SUCCESS);
	GW_ASSERT(!bad);

	/* the target's checkpoint takes the bytes away; restore brings them back */
	fkt_lock_checkpoint(cu, t.pid);
	GW_ASSERT_INT_EQ(cu->cuMemcpyDtoH(&word, va + GRAN, 4), CUDA_SUCCESS);
	GW_ASSERT_INT_EQ(word, 0xdbdbdbdbu);
	fkt_restore_unlock(cu, t.pid, NULL);
	GW_ASSERT_INT_EQ(fkt_check(cu, va, 2 * GRAN, 100, &bad), CUDA_SUCCESS);
	GW_ASSERT(!bad);

	/* writes go the other way too */
	GW_ASSERT_INT_EQ(cu->cuMemcpyHtoD(va, words, sizeof(words)), CUDA_SUCCESS);
	fkt_ask(&t, "readvmm", -1, reply, sizeof(reply));
	GW_ASSERT_STR_EQ(reply, "word 0 00000001");
	GW_ASSERT_INT_EQ(cu->cuMemUnmap(va, 2 * GRAN), CUDA_SUCCESS);
	GW_ASSERT_INT_EQ(cu->cuMemRelease(h), CUDA_SUCCESS);
	GW_ASSERT_INT_EQ(cu->cuMemAddressFree(va, 2 * GRAN), CUDA_SUCCESS);
	fkt_cleanup();
}

/* Memory created by another process, still mapped at checkpoint time: restore gives 801 and the
 * process is stuck in FAILED. Unmapped first, the cycle works. */
GW_TEST(imported_mapping_trap)
{
	CUmemAllocationProp prop = fkt_vmm_prop(0);
	CUmemGenericAllocationHandle h;
	struct gw_cuda *cu;
	struct fkt_target t;
	CUdeviceptr va;
	char reply[256];
	int fd = -1;

	fkt_setup();
	t = fkt_target_simple(1, MIB);
	cu = fkt_caller();
	fkt_ctx_on(cu, 0);
	GW_ASSERT_INT_EQ(cu->cuMemCreate(&h, GRAN, &prop, 0), CUDA_SUCCESS);
	GW_ASSERT_INT_EQ(fkt_vmm_map(cu, h, GRAN, 0, &va), CUDA_SUCCESS);
	GW_ASSERT_INT_EQ(cu->cuMemsetD32(va, 0x600dcafe, GRAN / 4), CUDA_SUCCESS);
	GW_ASSERT_INT_EQ(cu->cuMemExportToShareableHandle(&fd, h, FKT_FD, 0),
			 CUDA_SUCCESS);

	/* the correct flow: unmap the import before the driver checkpoint */
	fkt_ask(&t, "import 2097152", fd, reply, sizeof(reply));
	GW_ASSERT_STR_EQ(reply, "imported 0 600dcafe");
	fkt_ask(&t, "unimport", -1, reply, sizeof(reply));
	GW_ASSERT_STR_EQ(reply, "unimported 0");
	fkt_lock_checkpoint(cu, t.pid);
	fkt_restore_unlock(cu, t.pid, NULL);
	fkt_expect_verify_ok(&t);

	/* the trap */
	fkt_ask(&t, "import 2097152", fd, reply, sizeof(reply));
	GW_ASSERT_STR_EQ(reply, "imported 0 600dcafe");
	fkt_lock_checkpoint(cu, t.pid);
	GW_ASSERT_INT_EQ(cu->cuCheckpointProcessRestore(t.pid, NULL), CUDA_ERROR_NOT_SUPPORTED);
	GW_ASSERT_INT_EQ(fkt_state_of(cu, t.pid), CU_PROCESS_STATE_FAILED);
	GW_ASSERT_INT_EQ(cu->cuCheckpointProcessUnlock(t.pid, NULL), CUDA_ERROR_ILLEGAL_STATE);
	GW_ASSERT_INT_EQ(cu->cuCheckpointProcessRestore(t.pid, NULL), CUDA_ERROR_ILLEGAL_STATE);
	GW_ASSERT_INT_EQ(cu->cuCheckpointProcessLock(t.pid, NULL), CUDA_ERROR_ILLEGAL_STATE);
	GW_ASSERT_INT_EQ(fkt_state_of(cu, t.pid), CU_PROCESS_STATE_FAILED);
	/* the target's own calls fail from now on */
	fkt_ask(&t, "info", -1, reply, sizeof(reply));
	GW_ASSERT(strncmp(reply, "info 401 ", 9) == 0);
	close(fd);
	fkt_cleanup();
}

/* A caller that dies while its lock waits leaves the target RUNNING. */
GW_TEST(dead_caller_leaves_consistent_state)
{
	struct sockaddr_un addr = { .sun_family = AF_UNIX };
	struct gw_cuda *cu;
	struct fkt_target t;
	char reply[256];
	int c;

	fkt_setup();
	setenv(FAKECUDA_ENV_SYNC_DELAY_MS, "800", 1);
	t = fkt_target_simple(1, MIB);
	cu = fkt_caller();
	GW_ASSERT_INT_EQ(fkt_msg_send(t.sock, -1, "sync"), 0);
	usleep(100 * 1000);
	snprintf(addr.sun_path, sizeof(addr.sun_path), "%s/%d.sock", fkt_state_dir, t.pid);
	c = socket(AF_UNIX, SOCK_STREAM, 0);
	GW_ASSERT(c >= 0);
	GW_ASSERT(connect(c, (struct sockaddr *)&addr, sizeof(addr)) == 0);
	GW_ASSERT(write(c, "lock 0\n", 7) == 7);
	usleep(100 * 1000);
	close(c); /* the caller is gone mid-command */
	GW_ASSERT_INT_EQ(fkt_msg_recv(t.sock, reply, sizeof(reply), NULL, 5000), 0);
	GW_ASSERT_STR_EQ(reply, "sync 0");
	GW_ASSERT_INT_EQ(fkt_state_of(cu, t.pid), CU_PROCESS_STATE_RUNNING);
	fkt_expect_verify_ok(&t);

	/* garbage and silence are refused without effect */
	c = socket(AF_UNIX, SOCK_STREAM, 0);
	GW_ASSERT(connect(c, (struct sockaddr *)&addr, sizeof(addr)) == 0);
	GW_ASSERT(write(c, "frobnicate\n", 11) == 11);
	GW_ASSERT(read(c, reply, sizeof(reply)) > 0);
	GW_ASSERT_INT_EQ(atoi(reply), CUDA_ERROR_INVALID_VALUE);
	close(c);
	c = socket(AF_UNIX, SOCK_STREAM, 0);
	GW_ASSERT(connect(c, (struct sockaddr *)&addr, sizeof(addr)) == 0);
	close(c);
	GW_ASSERT_INT_EQ(fkt_state_of(cu, t.pid), CU_PROCESS_STATE_RUNNING);
	fkt_lock_checkpoint(cu, t.pid);
	fkt_restore_unlock(cu, t.pid, NULL);
	fkt_expect_verify_ok(&t);
	fkt_cleanup();
}

/* After fork the child's driver is uninitialized; a cuInit there starts a new CUDA process. */
GW_TEST(fork_child_starts_afresh)
{
	struct gw_cuda *cu;
	CUdeviceptr p;
	char path[PATH_MAX];
	pid_t pid;
	int status;

	fkt_setup();
	cu = fkt_caller();
	fkt_ctx_on(cu, 0);
	GW_ASSERT_INT_EQ(cu->cuMemAlloc(&p, MIB), CUDA_SUCCESS);
	fflush(NULL);
	pid = fork();
	GW_ASSERT(pid >= 0);
	if (pid == 0) {
		CUdeviceptr q;
		int count, tid;
		char own[PATH_MAX];

		snprintf(own, sizeof(own), "%s/%d.sock", fkt_state_dir, getpid());
		if (cu->cuDeviceGetCount(&count) != CUDA_ERROR_NOT_INITIALIZED ||
		    cu->cuInit(0) != CUDA_SUCCESS || access(own, F_OK) != 0 ||
		    cu->cuMemFree(p) != CUDA_ERROR_INVALID_CONTEXT)
			_exit(1);
		fkt_ctx_on(cu, 0);
		if (cu->cuMemFree(p) != CUDA_ERROR_INVALID_VALUE ||
		    cu->cuMemAlloc(&q, MIB) != CUDA_SUCCESS ||
		    cu->cuCheckpointProcessGetRestoreThreadId(getppid(), &tid) != CUDA_SUCCESS)
			_exit(2);
		fkt_state_dir[0] = '\0'; /* the parent's to clean up */
		exit(0); /* exit handlers remove the child's socket, not the parent's */
	}
	GW_ASSERT(waitpid(pid, &status, 0) == pid);
	GW_ASSERT(WIFEXITED(status));
	GW_ASSERT_INT_EQ(WEXITSTATUS(status), 0);
	snprintf(path, sizeof(path), "%s/%d.sock", fkt_state_dir, pid);
	GW_ASSERT(access(path, F_OK) != 0);
	snprintf(path, sizeof(path), "%s/%d.sock", fkt_state_dir, getpid());
	GW_ASSERT(access(path, F_OK) == 0);
	GW_ASSERT_INT_EQ(fkt_state_of(cu, getpid()), CU_PROCESS_STATE_RUNNING);
	GW_ASSERT_INT_EQ(cu->cuMemFree(p), CUDA_SUCCESS);
	fkt_cleanup();
}

/* cuMemHostAlloc costs FAKECUDA_PIN_US_PER_MIB and counts as time inside the driver. */
GW_TEST(pinning_cost_model)
{
	CUcheckpointLockArgs la = { .timeoutMs = 50 };
	struct gw_cuda *cu;
	uint64_t t0, took;
	void *host;
	pid_t pid;
	int status;

	fkt_setup();
	setenv(FAKECUDA_ENV_PIN_US_PER_MIB, "100000", 1); /* 0.1 s per MiB */
	cu = fkt_caller();
	fkt_ctx_on(cu, 0);
	t0 = fkt_now_ms();
	GW_ASSERT_INT_EQ(cu->cuMemHostAlloc(&host, 3 * MIB, 0), CUDA_SUCCESS);
	took = fkt_now_ms() - t0;
	GW_ASSERT(took >= 290 && took < 2000);
	GW_ASSERT_INT_EQ(cu->cuMemFreeHost(host), CUDA_SUCCESS);

	/* a lock during the pinning times out */
	fflush(NULL);
	pid = fork();
	GW_ASSERT(pid >= 0);
	if (pid == 0) {
		CUcontext ctx;
		void *h;

		_exit(cu->cuInit(0) != CUDA_SUCCESS || cu->cuDevicePrimaryCtxRetain(&ctx, 0) ||
		      cu->cuCtxSetCurrent(ctx) || cu->cuMemHostAlloc(&h, 10 * MIB, 0));
	}
	usleep(300 * 1000);
	GW_ASSERT_INT_EQ(cu->cuCheckpointProcessLock(pid, &la), CUDA_ERROR_NOT_READY);
	GW_ASSERT(waitpid(pid, &status, 0) == pid);
	GW_ASSERT(WIFEXITED(status) && WEXITSTATUS(status) == 0);
	fkt_cleanup();
}

GW_TEST_MAIN()
