/* SPDX-License-Identifier: MIT */
#include "gw-ckpt.h"

#include <errno.h>
#include <string.h>
#include <time.h>

static double now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec / 1e6;
}

const char *gw_ckpt_step_name(enum gw_ckpt_step step)
{
	switch (step) {
	case GW_CKPT_LOCK:
		return "lock";
	case GW_CKPT_CHECKPOINT:
		return "checkpoint";
	case GW_CKPT_RESTORE:
		return "restore";
	case GW_CKPT_UNLOCK:
		return "unlock";
	}
	return "?";
}

const char *gw_ckpt_step_call(enum gw_ckpt_step step)
{
	switch (step) {
	case GW_CKPT_LOCK:
		return "cuCheckpointProcessLock";
	case GW_CKPT_CHECKPOINT:
		return "cuCheckpointProcessCheckpoint";
	case GW_CKPT_RESTORE:
		return "cuCheckpointProcessRestore";
	case GW_CKPT_UNLOCK:
		return "cuCheckpointProcessUnlock";
	}
	return "?";
}

int gw_ckpt_next_step(CUprocessState cur, CUprocessState target, enum gw_ckpt_step *ret_step)
{
	if ((unsigned)cur > CU_PROCESS_STATE_CHECKPOINTED ||
	    (unsigned)target > CU_PROCESS_STATE_CHECKPOINTED)
		return -EINVAL;
	if (cur == target)
		return 0;
	if (cur < target) /* deeper: running -> locked -> checkpointed */
		*ret_step = cur == CU_PROCESS_STATE_RUNNING ? GW_CKPT_LOCK : GW_CKPT_CHECKPOINT;
	else
		*ret_step = cur == CU_PROCESS_STATE_CHECKPOINTED ? GW_CKPT_RESTORE : GW_CKPT_UNLOCK;
	return 1;
}

CUresult gw_ckpt_step(const struct gw_cuda *cuda, pid_t pid, enum gw_ckpt_step step,
		      const struct gw_ckpt_args *args)
{
	switch (step) {
	case GW_CKPT_LOCK: {
		CUcheckpointLockArgs lock;

		memset(&lock, 0, sizeof(lock));
		lock.timeoutMs = args ? args->lock_timeout_ms : 0;
		return cuda->cuCheckpointProcessLock(pid, &lock);
	}
	case GW_CKPT_CHECKPOINT:
		return cuda->cuCheckpointProcessCheckpoint(pid, NULL);
	case GW_CKPT_RESTORE: {
		CUcheckpointRestoreArgs restore;

		if (!args || args->npairs == 0)
			return cuda->cuCheckpointProcessRestore(pid, NULL);
		memset(&restore, 0, sizeof(restore));
		restore.gpuPairs = (CUcheckpointGpuPair *)args->pairs;
		restore.gpuPairsCount = args->npairs;
		return cuda->cuCheckpointProcessRestore(pid, &restore);
	}
	case GW_CKPT_UNLOCK:
		return cuda->cuCheckpointProcessUnlock(pid, NULL);
	}
	return CUDA_ERROR_INVALID_VALUE;
}

/* Run one step of a sequence: 1 done and worked, 0 failed or stopped (outcome set). */
static int run(const struct gw_cuda *cuda, pid_t pid, enum gw_ckpt_step step,
	       const struct gw_ckpt_args *args, const struct gw_ckpt_observer *obs,
	       struct gw_ckpt_outcome *out)
{
	double start;
	CUresult r;

	if (obs && obs->before && obs->before(obs->ctx, step)) {
		out->stopped = 1;
		return 0;
	}
	start = now_ms();
	r = gw_ckpt_step(cuda, pid, step, args);
	if (obs && obs->after)
		obs->after(obs->ctx, step, r, now_ms() - start);
	if (r == CUDA_SUCCESS)
		return 1;
	out->result = r;
	out->failed_step = step;
	return 0;
}

static void outcome_init(struct gw_ckpt_outcome *out)
{
	memset(out, 0, sizeof(*out));
	out->result = CUDA_SUCCESS;
}

static int verdict(const struct gw_ckpt_outcome *out)
{
	return out->result == CUDA_SUCCESS && !out->stopped ? 0 : -1;
}

int gw_ckpt_suspend(const struct gw_cuda *cuda, pid_t pid, const struct gw_ckpt_args *args,
		    const struct gw_ckpt_observer *obs, struct gw_ckpt_outcome *ret)
{
	outcome_init(ret);
	if (!run(cuda, pid, GW_CKPT_LOCK, args, obs, ret))
		return -1;
	if (run(cuda, pid, GW_CKPT_CHECKPOINT, args, obs, ret))
		return 0;
	if (ret->stopped)
		return -1; /* the process is gone: nothing to unlock */
	/* A failed checkpoint leaves the process locked: let it run on. */
	ret->undone = 1;
	ret->undo_result = gw_ckpt_step(cuda, pid, GW_CKPT_UNLOCK, args);
	if (obs && obs->after)
		obs->after(obs->ctx, GW_CKPT_UNLOCK, ret->undo_result, 0);
	return -1;
}

int gw_ckpt_resume(const struct gw_cuda *cuda, pid_t pid, const struct gw_ckpt_args *args,
		   const struct gw_ckpt_observer *obs, struct gw_ckpt_outcome *ret)
{
	enum gw_ckpt_step next;
	CUprocessState state;

	outcome_init(ret);
	if (obs && obs->before && obs->before(obs->ctx, GW_CKPT_RESTORE)) {
		ret->stopped = 1;
		return -1;
	}
	/* Only a process whose next step to running is the unlock skips the restore. */
	if (cuda->cuCheckpointProcessGetState(pid, &state) != CUDA_SUCCESS ||
	    gw_ckpt_next_step(state, CU_PROCESS_STATE_RUNNING, &next) != 1 ||
	    next != GW_CKPT_UNLOCK) {
		if (!run(cuda, pid, GW_CKPT_RESTORE, args, obs, ret))
			return -1;
	}
	run(cuda, pid, GW_CKPT_UNLOCK, args, obs, ret);
	return verdict(ret);
}

int gw_ckpt_single(const struct gw_cuda *cuda, pid_t pid, enum gw_ckpt_step step,
		   const struct gw_ckpt_args *args, const struct gw_ckpt_observer *obs,
		   struct gw_ckpt_outcome *ret)
{
	outcome_init(ret);
	run(cuda, pid, step, args, obs, ret);
	return verdict(ret);
}
