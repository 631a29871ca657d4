/* SPDX-License-Identifier: MIT */
/*
 * Driving a process's checkpoint state: one step at a time towards a target, the state read
 * again after each (a daemon lost mid-step leaves the step's outcome unknown), with the threads
 * the driver needs let run while CRIU holds them stopped.
 */
#include "gwp-plugin.h"

#include <errno.h>
#include <stdio.h>

#include "gwp-ptrace.h"

#define MAX_ROUNDS 8 /* state reads per drive, retries after a lost daemon included */

/* Step pid towards target until it is there. The restore thread must be running. */
static int drive_steps(struct gwp_plugin *p, pid_t pid, enum gwp_state target,
		       const struct gwp_pair *pairs, unsigned npairs, unsigned lock_timeout_ms,
		       char *err, size_t len)
{
	for (unsigned round = 0; round < MAX_ROUNDS; round++) {
		enum gwp_state cur;
		enum gwp_step step;
		pid_t tid;
		double start;
		int r;

		r = gwp_backend_state(p->be, pid, &cur, &tid, err, len);
		if (r == -EAGAIN)
			continue;
		if (r < 0)
			return r;
		step = gwp_next_step(cur, target);
		if (step == GWP_STEP_DONE)
			return 0;
		if (step == GWP_STEP_STUCK) {
			snprintf(err, len, "its CUDA state is %s", gwp_state_name(cur));
			return -EIO;
		}
		start = gwp_now_ms();
		r = gwp_backend_step(p->be, pid, step, lock_timeout_ms, pairs, npairs, err, len);
		if (r == -EAGAIN)
			continue; /* the daemon went away mid-step: read the state again */
		if (r < 0)
			return r;
		LOG(p, INFO, "pid %d: %s by %s in %.1f ms", (int)pid, gwp_step_name(step),
		    gwp_backend_route(p->be), gwp_now_ms() - start);
	}
	snprintf(err, len, "no progress after %d rounds", MAX_ROUNDS);
	return -EIO;
}

/*
 * Run work() with threads tids[] of pid let run, when CRIU holds them stopped (a no-op for a
 * thread that is not in a stop of ours), and stop them again afterwards.
 */
static int with_threads_running(struct gwp_plugin *p, pid_t pid, const pid_t *tids,
				const char *const *names, unsigned n,
				int (*work)(struct gwp_plugin *p, const void *arg, char *err,
					    size_t len),
				const void *arg, char *err, size_t len)
{
	struct gwp_hold holds[2];
	char why[256];
	unsigned held = 0;
	int r = 0, rr;

	for (; held < n && held < 2; held++) {
		r = gwp_thread_release(pid, tids[held], &holds[held], why, sizeof(why));
		if (r < 0) {
			snprintf(err, len, "cannot let its %s %d run: %s", names[held],
				 (int)tids[held], why);
			break;
		}
	}
	if (r == 0)
		r = work(p, arg, err, len);
	while (held-- > 0) {
		rr = gwp_thread_rehold(&holds[held], why, sizeof(why));
		if (rr < 0) {
			LOG(p, ERROR, "pid %d: %s; the process may be in a strange state", (int)pid,
			    why);
			if (r == 0) {
				snprintf(err, len, "%s", why);
				r = rr;
			}
		}
	}
	return r;
}

struct drive_args {
	pid_t pid;
	enum gwp_state target;
	const struct gwp_pair *pairs;
	unsigned npairs, lock_timeout_ms;
};

static int drive_work(struct gwp_plugin *p, const void *arg, char *err, size_t len)
{
	const struct drive_args *a = arg;

	return drive_steps(p, a->pid, a->target, a->pairs, a->npairs, a->lock_timeout_ms, err,
			   len);
}

int gwp_drive(struct gwp_plugin *p, pid_t pid, pid_t tid, enum gwp_state target,
	      const struct gwp_pair *pairs, unsigned npairs, unsigned lock_timeout_ms, char *err,
	      size_t len)
{
	static const char *const names[] = { "CUDA restore thread" };
	struct drive_args a = { pid, target, pairs, npairs, lock_timeout_ms };

	return with_threads_running(p, pid, &tid, names, 1, drive_work, &a, err, len);
}

static int fast_resume_work(struct gwp_plugin *p, const void *arg, char *err, size_t len)
{
	return gwp_backend_fast(p->be, arg, err, len);
}

int gwp_drive_fast_resume(struct gwp_plugin *p, pid_t pid, pid_t restore_tid, pid_t agent_tid,
			  int image_fd, const int *segment_fds, unsigned nsegment_fds,
			  pid_t agent_pid, char *err, size_t len)
{
	static const char *const names[] = { "CUDA restore thread", "agent thread" };
	pid_t tids[2] = { restore_tid, agent_tid };
	struct gwp_fast_call call = {
		.pid = pid,
		.threads_frozen = 1,
		.image_fd = image_fd,
		.segment_fds = segment_fds,
		.nsegment_fds = nsegment_fds,
		.agent_pid = agent_pid,
		.agent_tid = agent_pid && agent_pid != pid ? agent_tid : 0,
	};

	return with_threads_running(p, pid, tids, names, 2, fast_resume_work, &call, err, len);
}
