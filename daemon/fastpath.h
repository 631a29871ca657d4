/* SPDX-License-Identifier: MIT */
/*
 * The fast VRAM path (DESIGN.md, validated on an H100): for a process whose allocations the
 * in-process shim made exportable, the daemon moves VRAM itself at PCIe speed around a driver
 * checkpoint that then holds only contexts and small allocations.
 *
 * suspend: lock -> freeze all threads but the agent and the CUDA restore thread -> unlock ->
 *          agent exports its ranges -> copy to pinned host blocks -> agent releases the memory
 *          (keeping its VA) -> lock -> driver checkpoint -> thaw
 * resume:  freeze -> driver restore -> unlock -> create + fill new memory -> agent maps it at the
 *          old addresses -> thaw
 * A failure part-way puts the process back as it was: running, unlocked, its data in VRAM.
 */
#ifndef GW_FASTPATH_H
#define GW_FASTPATH_H

#include <sys/types.h>

#include "copy.h"
#include "pin.h"
#include "daemon.h"
#include "server.h"

struct gw_imagecache_entry;

/* A VRAM image (common/gw-vimg.h): its data in pinned pool blocks, or in a file. */
struct gw_image {
	struct gw_vimg v;
	void **blocks; /* memory store */
	size_t nblocks;
	int fd; /* file store (the client's file, passed to us); -1 for memory */
	uint8_t *map; /* while a suspend writes it: the file mapped shared, or NULL */
	size_t map_bytes;
	int written_mapped; /* the suspend wrote it through the mapping (else with pwrite) */
	int seg_fds[GW_VIMG_MAX_SEGMENTS]; /* version 2: its segment files (daemon/imageio.h) */
	unsigned nseg_fds;
	/* Its data borrowed from the image cache (imagecache-ops.h): blocks are the entry's, the
	 * copy store reads them instead of the files. NULL: blocks, if any, are its own. */
	struct gw_imagecache_entry *cached;
};

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

/*
 * A shimmed process's agent. Bound agents belong to one process instance, pinned by a pidfd: the
 * record and the VRAM image it holds go when that process exits (watched on the loop), and a
 * later process with the same pid never sees them. An agent attached by root on a process's
 * behalf (CRIU's plugin, restoring) is unbound until a Resume from root binds it to the restored
 * process.
 */
struct gw_agent {
	struct gw_agent *next;
	struct gw_daemon *d;
	pid_t pid, tid;          /* pid: the bound process's, or the pid it was attached under */
	struct gw_pin pin;       /* pidfd -1: unbound */
	uid_t uid;               /* the process's owner (unbound: the attaching peer's) */
	struct event *exit_ev;   /* the pidfd turned readable: the process exited */
	struct gw_conn *conn;    /* NULL once the app hung up */
	uint64_t ranges, bytes;  /* as it last reported */
	uint64_t foreign;        /* of them, memory made by another process (mapped back by us) */
	struct gw_image *image;  /* VRAM held for it while fast-suspended */
	int busy;
	int gone;                /* its process exited while an operation ran */
};

/* Requests from an agent. */
void gw_fast_handle_attach(struct gw_daemon *d, struct gw_request *req);
void gw_fast_handle_update(struct gw_daemon *d, struct gw_request *req);
void gw_fast_conn_closed(struct gw_daemon *d, struct gw_conn *conn);

struct gw_agent *gw_fast_agent(struct gw_daemon *d, pid_t pid);
/* Is the fast path the way for this operation? (an agent with ranges, or a held image) */
int gw_fast_wants_suspend(struct gw_daemon *d, pid_t pid);
int gw_fast_wants_resume(struct gw_daemon *d, pid_t pid);
int gw_fast_busy(const struct gw_daemon *d, pid_t pid);
/* Would a driver checkpoint of pid hit the imported-memory trap (DESIGN.md: it "succeeds", then
 * restore fails with 801 and the process is stuck)? True when its agent reports memory that
 * another process created, i.e. VRAM the daemon mapped back after a fast resume. */
int gw_fast_driver_checkpoint_unsafe(struct gw_daemon *d, pid_t pid);
int gw_fast_has_agent(struct gw_daemon *d, pid_t pid);
/* Root's resume of a restored process: the unbound agent attached under pid from (its dump's
 * pid) belongs to the pinned process now (its agent thread tid, 0: as attached). -ENOENT (no
 * such agent), -EBUSY, -EEXIST (the process has a bound agent already), -ESRCH. */
int gw_fast_bind(struct gw_daemon *d, pid_t from, const struct gw_pin *to, pid_t tid);
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
/* Status "processes": one object per agent; a non-root peer sees only its own, and
 * *ret_others counts the rest. */
cJSON *gw_fast_status(struct gw_daemon *d, const struct ucred *peer, unsigned *ret_others);
/* Agents worth keeping a connection open for (VRAM to move, or an image held). */
int gw_fast_agent_pins_conn(const struct gw_agent *a);
void gw_fast_finish(struct gw_daemon *d);

#endif
