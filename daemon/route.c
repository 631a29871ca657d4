/* SPDX-License-Identifier: MIT */
#include "route.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "gw-proto.h"

const char *gw_route_path_name(enum gw_route_path path)
{
	switch (path) {
	case GW_ROUTE_REFUSE:
		return "refused";
	case GW_ROUTE_DRIVER:
		return "driver";
	case GW_ROUTE_FAST_SUSPEND:
		return "fast suspend";
	case GW_ROUTE_FAST_RESUME:
		return "fast resume";
	case GW_ROUTE_PREFILL:
		return "prefill";
	}
	return "unknown";
}

const char *gw_route_reason_text(enum gw_route_reason reason)
{
	static const char *const texts[GW_ROUTE_WHY_COUNT] = {
		[GW_ROUTE_WHY_DRIVER_OP] = "the driver's checkpoint API does it",
		[GW_ROUTE_WHY_AGENT_VRAM] = "the agent reports VRAM the fast path can move",
		[GW_ROUTE_WHY_IMAGE_HELD] = "gpu-warmd holds the process's VRAM",
		[GW_ROUTE_WHY_IMAGE_FILE] = "an image file was given",
		[GW_ROUTE_WHY_PREFILL] = "the image file's VRAM is filled ahead of its resume",
		[GW_ROUTE_WHY_NO_DRIVER] = "no GPU driver",
		[GW_ROUTE_WHY_PREFILL_NO_IMAGE] = "a prefill needs an image file",
		[GW_ROUTE_WHY_IMAGE_NO_AGENT] = "image files are for processes under the shim",
		[GW_ROUTE_WHY_NOTHING_TO_MOVE] = "no VRAM for the fast path to move",
		[GW_ROUTE_WHY_HELD_NEEDS_RESUME] = "held VRAM comes back by a fast resume only",
		[GW_ROUTE_WHY_AGENT_AWAY] = "the process's agent is not connected",
		[GW_ROUTE_WHY_CHECKPOINT_UNSAFE] = "a driver checkpoint of imported VRAM is unsafe",
		[GW_ROUTE_WHY_BUSY] = "another operation on the process runs",
		[GW_ROUTE_WHY_GPU_NOT_READY] = "a GPU named takes no new operations",
		[GW_ROUTE_WHY_NO_GPU_READY] = "no GPU takes new operations",
	};
	return reason < GW_ROUTE_WHY_COUNT && texts[reason] ? texts[reason] : "unknown";
}

static int take(struct gw_route_out *out, enum gw_route_path path, enum gw_route_reason why)
{
	out->path = path;
	out->reason = why;
	return 0;
}

__attribute__((format(printf, 5, 6)))
static int refuse(struct gw_route_out *out, enum gw_route_reason why, int error,
		  const char *error_name, const char *fmt, ...)
{
	va_list ap;

	out->path = GW_ROUTE_REFUSE;
	out->reason = why;
	out->error = error;
	out->error_name = error_name;
	va_start(ap, fmt);
	vsnprintf(out->message, sizeof(out->message), fmt, ap);
	va_end(ap);
	return error;
}

static int route_prefill(const struct gw_route_in *in, struct gw_route_out *out)
{
	if (!in->driver_ready)
		return refuse(out, GW_ROUTE_WHY_NO_DRIVER, -ENODEV, GW_ERROR_DRIVER_UNAVAILABLE,
			      "%s", in->driver_error ? in->driver_error : "no GPU driver");
	if (!in->image_given)
		return refuse(out, GW_ROUTE_WHY_PREFILL_NO_IMAGE, -EINVAL, GW_ERROR_INVALID_REQUEST,
			      GW_METHOD_PREFILL " needs \"image_fd\"");
	return take(out, GW_ROUTE_PREFILL, GW_ROUTE_WHY_PREFILL);
}

/* The process's state forbids the request (the fast path's rules first, then the driver's). */
static int check_process(const struct gw_route_in *in, struct gw_route_out *out)
{
	enum gw_op_kind kind = in->kind;
	pid_t pid = in->pid;

	if (in->image_given && !in->has_agent && !in->holds_image)
		return refuse(out, GW_ROUTE_WHY_IMAGE_NO_AGENT, -EINVAL, GW_ERROR_ILLEGAL_STATE,
			      "pid %d has no gpu-warmd agent: VRAM image files are for processes "
			      "started with the shim (LD_PRELOAD=libgpuwarm-shim.so); without it, "
			      "suspend without --image (the driver keeps the VRAM in the process)",
			      pid);
	if (kind == GW_OP_SUSPEND && in->image_given && !in->agent_has_vram)
		return refuse(out, GW_ROUTE_WHY_NOTHING_TO_MOVE, -EINVAL, GW_ERROR_ILLEGAL_STATE,
			      "pid %d has no VRAM for the fast path to move, or is suspended "
			      "already", pid);
	if (in->holds_image && (kind != GW_OP_RESUME || in->gpu_map_given))
		return refuse(out, GW_ROUTE_WHY_HELD_NEEDS_RESUME, -EINVAL, GW_ERROR_ILLEGAL_STATE,
			      "pid %d was suspended through the fast path and gpu-warmd holds its "
			      "VRAM: only `warmctl resume %d` (onto the same GPU) can bring it "
			      "back",
			      pid, pid);
	if (kind == GW_OP_RESUME && (in->holds_image || in->image_given) && !in->has_agent)
		return refuse(out, GW_ROUTE_WHY_AGENT_AWAY, -EAGAIN, GW_ERROR_AGENT,
			      "the agent of pid %d is not connected, so its VRAM cannot be mapped "
			      "back yet; it reconnects by itself within seconds: try again", pid);
	if ((kind == GW_OP_CHECKPOINT || (kind == GW_OP_SUSPEND && !in->agent_has_vram)) &&
	    in->checkpoint_unsafe)
		return refuse(out, GW_ROUTE_WHY_CHECKPOINT_UNSAFE, -EINVAL, GW_ERROR_ILLEGAL_STATE,
			      "pid %d maps VRAM that gpu-warmd gave back after a fast resume; the "
			      "driver's own checkpoint of such memory cannot be restored (the "
			      "process would be stuck), so only the fast path (`warmctl "
			      "suspend %d` with its agent attached) may checkpoint it", pid, pid);
	if (in->busy)
		return refuse(out, GW_ROUTE_WHY_BUSY, -EBUSY, GW_ERROR_BUSY,
			      "another operation on pid %d is in progress", pid);
	return 0;
}

/* The GPUs the operation counts against for draining: those it names, else every ready one. */
static int pick_gpus(const struct gw_route_in *in, struct gw_route_out *out)
{
	unsigned n = in->ngpus < GW_GPU_MAX ? in->ngpus : GW_GPU_MAX;

	out->gpu_mask = in->gpu_mask;
	if (in->gpu_mask) {
		for (unsigned i = 0; i < n; i++)
			if ((in->gpu_mask & ((uint64_t)1 << i)) &&
			    !gw_gpu_state_accepts_work(in->gpu_states[i]))
				return refuse(out, GW_ROUTE_WHY_GPU_NOT_READY, -ENODEV,
					      GW_ERROR_DRAINING,
					      "GPU %u is %s: it takes no new operations", i,
					      gw_gpu_state_name(in->gpu_states[i]));
		return 0;
	}
	for (unsigned i = 0; i < n; i++)
		if (gw_gpu_state_accepts_work(in->gpu_states[i]))
			out->gpu_mask |= (uint64_t)1 << i;
	if (!out->gpu_mask && n > 0)
		return refuse(out, GW_ROUTE_WHY_NO_GPU_READY, -ENODEV, GW_ERROR_DRAINING,
			      "every GPU is drained or draining: no new operations");
	return 0;
}

int gw_route(const struct gw_route_in *in, struct gw_route_out *out)
{
	int r;

	memset(out, 0, sizeof(*out));
	if (in->prefill)
		return route_prefill(in, out);
	r = check_process(in, out);
	if (r < 0)
		return r;
	r = pick_gpus(in, out);
	if (r < 0)
		return r;
	if (in->kind == GW_OP_SUSPEND && in->agent_has_vram)
		return take(out, GW_ROUTE_FAST_SUSPEND, GW_ROUTE_WHY_AGENT_VRAM);
	if (in->kind == GW_OP_RESUME && in->holds_image)
		return take(out, GW_ROUTE_FAST_RESUME, GW_ROUTE_WHY_IMAGE_HELD);
	if (in->kind == GW_OP_RESUME && in->image_given)
		return take(out, GW_ROUTE_FAST_RESUME, GW_ROUTE_WHY_IMAGE_FILE);
	return take(out, GW_ROUTE_DRIVER, GW_ROUTE_WHY_DRIVER_OP);
}
