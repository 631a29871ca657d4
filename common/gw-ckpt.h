/* SPDX-License-Identifier: MIT */
/*
 * The driver's checkpoint sequence, once for everybody who makes it (the daemon's driver path,
 * its fast path, the CRIU plugin's fallback without a daemon): the four cuCheckpointProcess*
 * steps and the two rules around them.
 *
 *   suspend: lock, checkpoint; when the checkpoint fails the process is unlocked again, so a
 *            failed suspend leaves it running.
 *   resume:  restore, unlock; a process found locked is only unlocked: its restore already
 *            happened (a resume whose unlock failed, a daemon killed between the two) or a
 *            suspend never got as far as its checkpoint; either way the unlock is what is left.
 *
 * Blocking (each step waits in the driver); never logs. Callers see every step through
 * gw_ckpt_observer: "before" may stop the sequence (the process it acts on is gone), "after"
 * gets each step's result and time.
 */
#ifndef GW_CKPT_H
#define GW_CKPT_H

#include <sys/types.h>

#include "gw-cuda.h"

enum gw_ckpt_step {
	GW_CKPT_LOCK,
	GW_CKPT_CHECKPOINT,
	GW_CKPT_RESTORE,
	GW_CKPT_UNLOCK,
};

/* "lock", "checkpoint", "restore", "unlock". */
const char *gw_ckpt_step_name(enum gw_ckpt_step step);
/* The driver entry point of a step: "cuCheckpointProcessLock", ... */
const char *gw_ckpt_step_call(enum gw_ckpt_step step);

struct gw_ckpt_args {
	unsigned lock_timeout_ms;          /* lock */
	const CUcheckpointGpuPair *pairs;  /* restore onto other GPUs: every checkpointed GPU */
	unsigned npairs;
};

/*
 * The one step that moves a process from state cur towards target along
 *   running -lock-> locked -checkpoint-> checkpointed -restore-> locked -unlock-> running:
 * 1 with *ret_step set, 0 when it is there already, -EINVAL when no step leads there (a failed
 * or unknown state). The resume rule above is its case of a locked process: only the unlock is
 * left. The CRIU plugin walks a process through its hooks with it (gwp_next_step()).
 */
int gw_ckpt_next_step(CUprocessState cur, CUprocessState target, enum gw_ckpt_step *ret_step);

/* One step on pid; its CUresult. */
CUresult gw_ckpt_step(const struct gw_cuda *cuda, pid_t pid, enum gw_ckpt_step step,
		      const struct gw_ckpt_args *args);

struct gw_ckpt_observer {
	/* Before a step: non-zero stops the sequence there (the outcome says stopped). */
	int (*before)(void *ctx, enum gw_ckpt_step step);
	/* After a step (the undo of a failed checkpoint too). */
	void (*after)(void *ctx, enum gw_ckpt_step step, CUresult result, double ms);
	void *ctx;
};

struct gw_ckpt_outcome {
	CUresult result;               /* CUDA_SUCCESS, or the first failed step's */
	enum gw_ckpt_step failed_step; /* with result */
	int stopped;                   /* observer->before stopped it (result CUDA_SUCCESS) */
	int undone;                    /* suspend: unlocked again after the failed checkpoint */
	CUresult undo_result;
};

/* The sequences above; obs may be NULL. Return 0 when every step ran and worked, else -1 with
 * the outcome saying why. */
int gw_ckpt_suspend(const struct gw_cuda *cuda, pid_t pid, const struct gw_ckpt_args *args,
		    const struct gw_ckpt_observer *obs, struct gw_ckpt_outcome *ret);
int gw_ckpt_resume(const struct gw_cuda *cuda, pid_t pid, const struct gw_ckpt_args *args,
		   const struct gw_ckpt_observer *obs, struct gw_ckpt_outcome *ret);
/* One step as a sequence of one (observed the same way). */
int gw_ckpt_single(const struct gw_cuda *cuda, pid_t pid, enum gw_ckpt_step step,
		   const struct gw_ckpt_args *args, const struct gw_ckpt_observer *obs,
		   struct gw_ckpt_outcome *ret);

#endif
