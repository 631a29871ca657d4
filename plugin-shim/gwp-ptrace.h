/* SPDX-License-Identifier: MIT */
/*
 * Letting the CUDA restore thread run while CRIU holds the rest of the process frozen. The
 * driver's checkpoint, restore and unlock need that thread; CRIU has seized and stopped every
 * thread of a task before CHECKPOINT_DEVICES, RESUME_DEVICES_LATE and the exit hook. We are
 * CRIU's process (its tracer), so we resume that one thread with PTRACE_CONT, its signals
 * blocked but SIGTRAP, and afterwards stop it again as CRIU left it: PTRACE_INTERRUPT, wait for
 * the stop, ptrace options and signal mask back.
 */
#ifndef GWP_PTRACE_H
#define GWP_PTRACE_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

struct gwp_hold {
	pid_t pid;
	pid_t tid;
	int released;   /* we resumed it: gwp_thread_rehold() stops it again */
	int seccomp;    /* it runs under seccomp: CRIU had PTRACE_O_SUSPEND_SECCOMP set */
	uint64_t mask;  /* its signal mask in the stop */
};

/*
 * When tid (a thread of pid) sits in a ptrace stop of ours, let it run. When it does not (CRIU
 * has not seized the task yet, as at PAUSE_DEVICES), there is nothing to do: *ret_hold says so.
 * Returns 0 or a negative errno with a reason in why.
 */
int gwp_thread_release(pid_t pid, pid_t tid, struct gwp_hold *ret_hold, char *why, size_t len);

/* Undo gwp_thread_release(); a no-op when it released nothing. Returns 0 or a negative errno. */
int gwp_thread_rehold(struct gwp_hold *hold, char *why, size_t len);

#endif
