/* SPDX-License-Identifier: MIT */
#include "gwp-ptrace.h"

#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/ptrace.h>
#include <sys/wait.h>

#include "gwp-proc.h"

#ifndef PTRACE_O_SUSPEND_SECCOMP
#define PTRACE_O_SUSPEND_SECCOMP (1 << 21)
#endif
#ifndef PTRACE_EVENT_STOP
#define PTRACE_EVENT_STOP 128
#endif

#define MAX_SIGNAL_STOPS 16

static int fail(char *why, size_t len, int r, const char *fmt, pid_t tid)
{
	char e[64];

	snprintf(why, len, fmt, (int)tid, strerror_r(-r, e, sizeof(e)));
	return r;
}

int gwp_thread_release(pid_t pid, pid_t tid, struct gwp_hold *ret_hold, char *why, size_t len)
{
	struct gwp_hold h = { .pid = pid, .tid = tid };
	uint64_t block = ~(uint64_t)0 & ~((uint64_t)1 << (SIGTRAP - 1));

	if (ptrace(PTRACE_GETSIGMASK, tid, sizeof(h.mask), &h.mask) < 0) {
		if (errno == ESRCH) { /* not in a ptrace stop of ours: it runs already */
			*ret_hold = h;
			return 0;
		}
		return fail(why, len, -errno, "PTRACE_GETSIGMASK of thread %d: %s", tid);
	}
	h.seccomp = gwp_proc_seccomp("/proc", pid, tid) > 0;
	if (ptrace(PTRACE_SETSIGMASK, tid, sizeof(block), &block) < 0)
		return fail(why, len, -errno, "cannot block the signals of thread %d: %s", tid);
	/* While it runs, its seccomp filter applies as without us. */
	if (ptrace(PTRACE_SETOPTIONS, tid, NULL, 0) < 0 ||
	    ptrace(PTRACE_CONT, tid, NULL, 0) < 0) {
		int r = -errno;

		ptrace(PTRACE_SETSIGMASK, tid, sizeof(h.mask), &h.mask);
		return fail(why, len, r, "cannot resume thread %d: %s", tid);
	}
	h.released = 1;
	*ret_hold = h;
	return 0;
}

static int wait_stop(pid_t tid, char *why, size_t len)
{
	for (unsigned n = 0; n < MAX_SIGNAL_STOPS; n++) {
		int status;
		pid_t w = waitpid(tid, &status, __WALL);

		if (w < 0 && errno == EINTR) {
			n--;
			continue;
		}
		if (w < 0)
			return fail(why, len, -errno, "waiting for thread %d to stop: %s", tid);
		if (WIFEXITED(status) || WIFSIGNALED(status))
			return fail(why, len, -ESRCH, "thread %d ended while running: %s", tid);
		if (!WIFSTOPPED(status))
			continue;
		if ((status >> 16) == PTRACE_EVENT_STOP)
			return 0;
		/* A signal-delivery stop came first (a fault, or a SIGTRAP): deliver it and ask
		 * for the stop again. */
		if (ptrace(PTRACE_CONT, tid, NULL, (void *)(long)WSTOPSIG(status)) < 0 ||
		    ptrace(PTRACE_INTERRUPT, tid, NULL, 0) < 0)
			return fail(why, len, -errno, "cannot stop thread %d again: %s", tid);
	}
	return fail(why, len, -EIO, "thread %d keeps getting signals instead of stopping: %s",
		    tid);
}

int gwp_thread_rehold(struct gwp_hold *hold, char *why, size_t len)
{
	long opts = PTRACE_O_TRACESYSGOOD;
	int r;

	if (!hold || !hold->released)
		return 0;
	if (ptrace(PTRACE_INTERRUPT, hold->tid, NULL, 0) < 0)
		return fail(why, len, -errno, "PTRACE_INTERRUPT of thread %d: %s", hold->tid);
	r = wait_stop(hold->tid, why, len);
	if (r < 0)
		return r;
	hold->released = 0;
	/* CRIU's compel sets TRACESYSGOOD on every thread, SUSPEND_SECCOMP on seccomp'd ones. */
	if (hold->seccomp)
		opts |= PTRACE_O_SUSPEND_SECCOMP;
	if (ptrace(PTRACE_SETOPTIONS, hold->tid, NULL, (void *)opts) < 0)
		return fail(why, len, -errno, "cannot restore the ptrace options of thread %d: %s",
			    hold->tid);
	if (ptrace(PTRACE_SETSIGMASK, hold->tid, sizeof(hold->mask), &hold->mask) < 0)
		return fail(why, len, -errno, "cannot restore the signal mask of thread %d: %s",
			    hold->tid);
	return 0;
}
