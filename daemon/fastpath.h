/* SPDX-License-Identifier: MIT */
/*
 * The fast VRAM path (DESIGN.md, validated on an H100): for a process whose allocations the
 * in-process shim made exportable, the daemon moves VRAM itself at PCIe speed around a driver
 * checkpoint that then holds only contexts and small allocations.
 *
 * suspend: lock -> freeze all threads but the agent and the CUDA restore thread -> unlock ->
 *          agent exports its ranges -> copy to pinned host blocks -> agent releases the memory
 *          (keeping its VA) -> lock -> driver checkpoint -> thaw
 * resume:  create + fill new memory -> freeze -> driver restore -> unlock -> agent maps it at the
 *          old addresses -> thaw
 * A failure part-way puts the process back as it was: running, unlocked, its data in VRAM.
 *
 * This header is the path's face to the request handlers. Behind it: agents.h (the agent
 * registry), imagestore.h (images and prefills), fast-suspend.c and fast-resume.c (the step
 * tables), fastop.h (what they share), all run by the operation engine (opengine.h).
 */
#ifndef GW_FASTPATH_H
#define GW_FASTPATH_H

#include <sys/types.h>

#include "agents.h"
#include "daemon.h"
#include "imagestore.h"
#include "pin.h"
#include "server.h"

struct gw_fast_params {
	struct gw_pin pin;     /* the process, pinned at dispatch (moved into the operation) */
	uid_t owner;           /* who asked: quota and work class */
	int progress;          /* the client asked for progress messages */
	unsigned timeout_ms;   /* suspend: the driver lock's */
	uint64_t gpu_mask;
	int sparse;            /* suspend: leave zero chunks out (needs the scan kernel) */
	uint64_t chunk_bytes;  /* suspend */
	int image_fd;          /* the image file (consumed), or -1: pinned memory */
	int caller_froze;      /* resume: see gw_fast_resume */
	int segment_fds[GW_VIMG_MAX_SEGMENTS]; /* the image's segment files (consumed) */
	unsigned nsegment_fds; /* 0: a single image file (or none) */
};

/* Both take p->pin (and the image fd); the caller took a quota slot for p->owner. */
int gw_fast_suspend(struct gw_daemon *d, struct gw_request *req, pid_t pid,
		    struct gw_fast_params *p);
/* caller_froze: the caller holds the process's threads stopped (CRIU) and lets the agent and
 * the CUDA restore thread run: no freeze/thaw here. With an image file, the file's image is
 * restored (checked first; the process is not touched if it is bad). */
int gw_fast_resume(struct gw_daemon *d, struct gw_request *req, pid_t pid,
		   struct gw_fast_params *p);
/* gpuwarm.Prefill (root): read, create and fill the image file's VRAM ahead of the Resume of
 * the same file, which then only restores and maps. Takes p's image and segment fds. */
int gw_fast_prefill(struct gw_daemon *d, struct gw_request *req, struct gw_fast_params *p);
cJSON *gw_fast_prefills_status(struct gw_daemon *d);
/* Is an operation of the fast path running on pid? */
int gw_fast_busy(const struct gw_daemon *d, pid_t pid);
void gw_fast_finish(struct gw_daemon *d);

#endif
