/* SPDX-License-Identifier: MIT */
/*
 * Which way a process request goes, and why: the fast path (the daemon moves the VRAM itself,
 * for a process under the shim), the driver's checkpoint API, a prefill, or a refusal with its
 * protocol error and message. A pure function of plain facts that the handler gathers (what the
 * request asks and carries, what the daemon knows of the process and the GPUs): no driver, no
 * I/O, no logging; tested on its own. The handler then acts on the answer.
 */
#ifndef GW_ROUTE_H
#define GW_ROUTE_H

#include <stdint.h>
#include <sys/types.h>

#include "gpu.h"
#include "opstats.h"

struct gw_route_in {
	enum gw_op_kind kind;   /* the method (ignored for a prefill) */
	int prefill;            /* gpuwarm.Prefill: fill the image's VRAM ahead of its Resume */
	pid_t pid;
	int driver_ready;       /* prefill: a driver is loaded and initialised */
	const char *driver_error; /* prefill: why not */
	int image_given;        /* the request carries an image file (image_fd) */
	int has_agent;          /* pid's agent (the shim) is connected */
	int agent_has_vram;     /* and reports VRAM the fast path can move (nothing held yet) */
	int holds_image;        /* gpu-warmd holds pid's VRAM from a fast suspend */
	int gpu_map_given;      /* explicit GPU pairs (old -> new UUID) */
	int checkpoint_unsafe;  /* pid maps VRAM imported from us: a driver checkpoint would
				 * "succeed" and its restore fail, leaving the process stuck */
	int busy;               /* another operation on pid runs */
	uint64_t gpu_mask;      /* GPUs the request names (0: none) */
	unsigned ngpus;
	enum gw_gpu_state gpu_states[GW_GPU_MAX];
};

enum gw_route_path {
	GW_ROUTE_REFUSE,
	GW_ROUTE_DRIVER,       /* gw_ops_start(): the driver's checkpoint API */
	GW_ROUTE_FAST_SUSPEND, /* gw_fast_suspend() */
	GW_ROUTE_FAST_RESUME,  /* gw_fast_resume() */
	GW_ROUTE_PREFILL,      /* gw_fast_prefill() */
};

enum gw_route_reason {
	/* taken */
	GW_ROUTE_WHY_DRIVER_OP,        /* lock, checkpoint, restore, unlock; or no fast-path
					* state to suspend or resume */
	GW_ROUTE_WHY_AGENT_VRAM,       /* suspend: the agent reports VRAM to move */
	GW_ROUTE_WHY_IMAGE_HELD,       /* resume: gpu-warmd holds the VRAM */
	GW_ROUTE_WHY_IMAGE_FILE,       /* resume: from the image file given */
	GW_ROUTE_WHY_PREFILL,          /* prefill with its image file */
	/* refused */
	GW_ROUTE_WHY_NO_DRIVER,        /* prefill without a driver */
	GW_ROUTE_WHY_PREFILL_NO_IMAGE, /* prefill without an image file */
	GW_ROUTE_WHY_IMAGE_NO_AGENT,   /* an image file for a process not under the shim */
	GW_ROUTE_WHY_NOTHING_TO_MOVE,  /* suspend to a file: no VRAM to move, or held already */
	GW_ROUTE_WHY_HELD_NEEDS_RESUME, /* held VRAM comes back only by a fast resume */
	GW_ROUTE_WHY_AGENT_AWAY,       /* fast resume: the agent is not connected (yet) */
	GW_ROUTE_WHY_CHECKPOINT_UNSAFE, /* driver checkpoint of imported memory */
	GW_ROUTE_WHY_BUSY,             /* another operation on the pid */
	GW_ROUTE_WHY_GPU_NOT_READY,    /* a GPU named is draining, drained, priming or failed */
	GW_ROUTE_WHY_NO_GPU_READY,     /* no GPU takes new operations */
	GW_ROUTE_WHY_COUNT,
};

struct gw_route_out {
	enum gw_route_path path;
	enum gw_route_reason reason;
	uint64_t gpu_mask;      /* the GPUs the operation counts against for draining */
	/* Refused: */
	int error;              /* negative errno */
	const char *error_name; /* GW_ERROR_* */
	char message[512];
};

/* Decide; fills *out. Returns 0 when the request goes ahead, out->error when refused. */
int gw_route(const struct gw_route_in *in, struct gw_route_out *out);
const char *gw_route_path_name(enum gw_route_path path);
const char *gw_route_reason_text(enum gw_route_reason reason);

#endif
