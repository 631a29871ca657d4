/* SPDX-License-Identifier: MIT */
/*
 * Freezing a process's threads with ptrace (PTRACE_SEIZE + PTRACE_INTERRUPT), all but a few
 * (the shim's agent thread and the CUDA restore thread must keep running). ptrace requests must
 * come from the tracing thread: freeze and thaw of a process run on the same thread, the
 * operation engine's tracer (opengine.h), never on the loop (a freeze waits up to seconds).
 * Tracees are let go by the kernel if the daemon (or that thread) dies, so a crash never leaves
 * an app frozen.
 */
#ifndef GW_FREEZE_H
#define GW_FREEZE_H

#include <sys/types.h>

#define GW_FREEZE_MAX_THREADS 4096

struct gw_frozen {
	pid_t pid;
	unsigned count;
	pid_t *tids;
};

/*
 * Stop every thread of pid except those in keep[] (nkeep), waiting up to timeout_ms for each to
 * stop; threads born meanwhile are caught by rescanning. On failure everything is thawed again.
 * Returns 0, -ESRCH, -EPERM (not allowed to trace), -ETIMEDOUT, -ENOMEM.
 */
int gw_freeze(pid_t pid, const pid_t *keep, unsigned nkeep, unsigned timeout_ms,
	      struct gw_frozen *ret);
/* Let every frozen thread go (PTRACE_DETACH). No-op on an empty/zeroed set. */
void gw_thaw(struct gw_frozen *frozen);

#endif
