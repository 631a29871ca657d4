/* SPDX-License-Identifier: MIT */
/*
 * Where the plugin's driver calls go: to gpu-warmd (connected lazily, on $GPUWARM_SOCKET or the
 * default socket), or, when the daemon is not there or goes away, to the CUDA driver, called in
 * a helper process forked for the hook (common/gw-cuda: dlopen + cuInit there), never loaded
 * into CRIU's own process: its threads would stop CRIU from entering a container's mount
 * namespace. With neither, every call answers -ENOTSUP. Switches are logged once each.
 */
#ifndef GWP_BACKEND_H
#define GWP_BACKEND_H

#include <stddef.h>
#include <sys/types.h>

#include "gwp-criu.h"
#include "gwp-image.h"
#include "gwp-plan.h"

struct gwp_backend;

struct gwp_backend_gpu {
	struct gwp_gpu gpu;       /* uuid, usable */
	char pci[GWP_PCI_LEN];    /* "0000:3b:00.0" */
};

/* criu is used for logging and must outlive the backend. Connects to nothing yet. */
int gwp_backend_new(const struct gwp_criu *criu, struct gwp_backend **ret_be);
void gwp_backend_free(struct gwp_backend *be);

/* Make sure calls have somewhere to go: 0, or -ENOTSUP (neither daemon nor driver; logged). */
int gwp_backend_ready(struct gwp_backend *be);
/* The hook is over: the driver helper process, if one was started, exits (the next driver call
 * starts another). Call it at the end of every hook; gwp_backend_free() does it too. */
void gwp_backend_idle(struct gwp_backend *be);
/* "gpu-warmd", "the driver" or "nothing", for log lines. */
const char *gwp_backend_route(const struct gwp_backend *be);

/*
 * Every call below returns 0 or a negative errno, with a reason in err:
 *   -ESRCH    pid is not a CUDA process (or is gone)
 *   -EAGAIN   the daemon went away during the call and later calls go to the driver: what the
 *             call did is unknown, read the state again
 *   -ETIMEDOUT  a lock did not finish in time
 *   -ENOTSUP  neither the daemon nor the driver is usable
 *   -ENODEV   a GPU asked for is gone, drained or draining
 *   others    the driver (or daemon) refused; err says why
 */
int gwp_backend_state(struct gwp_backend *be, pid_t pid, enum gwp_state *ret_state,
		      pid_t *ret_restore_tid, char *err, size_t len);
int gwp_backend_step(struct gwp_backend *be, pid_t pid, enum gwp_step step,
		     unsigned lock_timeout_ms, const struct gwp_pair *pairs, unsigned npairs,
		     char *err, size_t len);
/* The machine's GPUs, and whether each takes work (the daemon's "ready"; with the driver
 * alone every GPU present does). */
int gwp_backend_gpus(struct gwp_backend *be, struct gwp_backend_gpu *ret_gpus, unsigned max,
		     unsigned *ret_n, char *err, size_t len);
/* Hold a daemon lease on the GPU uuid until gwp_backend_release_leases() (nothing to hold with
 * the driver alone). */
int gwp_backend_lease(struct gwp_backend *be, const char *uuid, char *err, size_t len);
void gwp_backend_release_leases(struct gwp_backend *be);

/* ---- the fast VRAM path: only through gpu-warmd ---- */

/* 1 when the daemon knows pid's shim agent (attached, with VRAM), its thread in ret_agent_tid. */
int gwp_backend_fast_agent(struct gwp_backend *be, pid_t pid, pid_t *ret_agent_tid);
struct gwp_fast_call {
	pid_t pid;
	int suspend;           /* gpuwarm.Suspend, else gpuwarm.Resume */
	int threads_frozen;    /* resume: the caller holds the threads stopped and lets the agent
				* and restore threads run (else the daemon freezes them itself) */
	unsigned lock_timeout_ms; /* suspend */
	int image_fd;          /* the VRAM image file (suspend: new, read-write), or -1 */
	const int *segment_fds; /* ...and its segment files (gwp_vram_files_open), with it only */
	unsigned nsegment_fds;
	pid_t agent_pid;       /* resume: the pid the agent was attached under at restore, when
				* the process came back under another host pid (0: pid) */
	pid_t agent_tid;       /* resume: the agent thread's host tid now (0: unchanged) */
};

/* The fast path's gpuwarm.Suspend or gpuwarm.Resume. */
int gwp_backend_fast(struct gwp_backend *be, const struct gwp_fast_call *call, char *err,
		     size_t len);
/* Is fd a connection to gpu-warmd's socket (an agent's)? */
int gwp_backend_agent_socket(struct gwp_backend *be, int fd);
/* A new connection to the daemon, attached as pid's agent (for CRIU to put in place of the
 * dumped one): its fd, or a negative errno. */
int gwp_backend_reattach(struct gwp_backend *be, pid_t pid, pid_t agent_tid, char *err,
			 size_t len);

/* Connect to gpu-warmd if that was not tried yet (never loads the driver): 1 when it is there. */
int gwp_backend_has_daemon(struct gwp_backend *be);
/* gpu-warmd's VRAM store (its --vram-store, gwp-store.h) into path: 0 ("" when it has none),
 * or a negative errno with why in err (no daemon, or its status failed). */
int gwp_backend_vram_store(struct gwp_backend *be, char *path, size_t len, char *err,
			   size_t errlen);
/* Have gpu-warmd fill the VRAM of an image now, ahead of the fast resume of the same files
 * (gpuwarm.Prefill): fds[0] the head, fds[1..] its segments (gwp_vram_files_open). Returns as
 * soon as the request is sent. Daemon only. */
int gwp_backend_prefill(struct gwp_backend *be, const int *fds, unsigned nfds, char *err,
			size_t len);

#endif
