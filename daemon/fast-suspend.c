/* SPDX-License-Identifier: MIT */
/*
 * The fast suspend, top-down:
 *
 *   lock        (worker) the driver lock, and the CUDA restore thread's id
 *   freeze      (tracer) every thread but the agent's and the restore thread stopped
 *   unlock      (worker) so that the agent can call CUDA
 *   export      (agent) the app's ranges as shareable fds, page by page
 *   scan        (a job per GPU) each range mapped here and its chunks scanned for zeros
 *   copy        (a worker) the image laid out in pinned blocks or its files; (a job per GPU)
 *               the data chunks copied out, the mappings gone; (a worker) a file sealed
 *   release     (agent) the app lets go of its VRAM, keeping its addresses
 *   checkpoint  (worker) lock and the driver checkpoint
 *   trim        (agent) the host pages of zeros that appeared since the release given back to
 *               the kernel (the driver's host copy of what stayed on the GPU is mostly zeros):
 *               CRIU neither writes nor reads them; a failure here is only a warning
 *   then the thaw (tracer), and a failed dump's files truncated (worker)
 *
 * A failure part-way puts the process back as it was: running, unlocked, its data in VRAM (the
 * undo of "release" fills new VRAM from the image and the agent maps it back).
 */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>
#include <unistd.h>

#include "clock.h"
#include "fastop.h"
#include "imagecache-ops.h"
#include "log.h"

/* ---- the driver lock around the freeze ---- */

static int check_locked(struct gw_op *op, int r)
{
	r = gw_fastop_check_cuda(op, r);
	if (r == 0)
		GW_FAST(op)->locked = 1;
	return r;
}

static int check_unlocked(struct gw_op *op, int r)
{
	GW_FAST(op)->locked = 0;
	return gw_fastop_check_cuda(op, r);
}

static int is_locked(struct gw_op *op)
{
	return GW_FAST(op)->locked;
}

/* An undo's unlock: whatever the driver says, the rest of the undo goes on. */
static int check_undo_unlock(struct gw_op *op, int r)
{
	(void)r;
	GW_FAST(op)->locked = 0;
	return 0;
}

static const struct gw_step unlock_undo[] = {
	{ .thread = GW_STEP_WORKER, .when = is_locked, .run = gw_fastop_unlock,
	  .check = check_undo_unlock },
};

/* ---- export: the agent's ranges ---- */

static int range_read(struct gw_fast_op *f, const cJSON *item, struct gw_vimg_range *r)
{
	const char *uuid = NULL;
	uint64_t size = 0, dev = 0;
	struct gw_gpu *gpu;
	CUuuid u;

	if (gw_json_get_hex_u64(item, "va", &r->va) < 0 ||
	    gw_json_get_u64(item, "size", 1, GW_VIMG_MAX_RANGE_BYTES, &size) < 0 || size % 8 ||
	    gw_json_get_u64(item, "device", 0, 1024, &dev) < 0 ||
	    gw_json_get_string(item, "uuid", 64, &uuid) < 0 || gw_cuda_uuid_parse(uuid, &u) < 0) {
		gw_op_fail(&f->op, GW_ERROR_AGENT, "the agent of pid %d sent a malformed range "
			   "(#%zu)", f->op.pid, f->nx);
		return -EBADMSG;
	}
	memcpy(r->uuid, u.bytes, sizeof(r->uuid));
	r->size = size;
	r->app_device = (uint32_t)dev;
	gpu = gw_fastcopy_range_gpu(f->op.d, r);
	if (!gpu || !gw_gpu_accepts_work(gpu)) {
		gw_op_fail(&f->op, GW_ERROR_DRAINING, "pid %d has VRAM on GPU %s, which is %s",
			   f->op.pid, uuid, gpu ? gw_gpu_state_name(gpu->state) : "unknown here");
		return -ENODEV;
	}
	return 0;
}

static int export_alloc(struct gw_fast_op *f, uint64_t total)
{
	size_t n = total ? total : 1;

	f->export_total = total;
	f->xranges = calloc(n, sizeof(*f->xranges));
	f->maps = calloc(n, sizeof(*f->maps));
	f->scans = calloc(n, sizeof(*f->scans));
	f->fds = calloc(n, sizeof(int));
	if (f->xranges && f->maps && f->scans && f->fds)
		return 0;
	gw_op_fail(&f->op, GW_ERROR_INTERNAL, "out of memory");
	return -ENOMEM;
}

/* Append one Export reply's ranges and fds to the export list. fds are ours from here. */
static int export_append(struct gw_fast_op *f, const cJSON *result, int *fds, unsigned nfds)
{
	const cJSON *ranges = cJSON_GetObjectItemCaseSensitive(result, "ranges"), *item;
	uint64_t total;
	int r = -EBADMSG;

	if (gw_json_get_u64(result, "total", 0, GW_FAST_MAX_RANGES, &total) < 0 ||
	    !cJSON_IsArray(ranges) || (size_t)cJSON_GetArraySize(ranges) != nfds ||
	    (f->export_total && total != f->export_total) ||
	    (f->xranges && f->nx + nfds > total) || (nfds == 0 && total > 0)) {
		gw_op_fail(&f->op, GW_ERROR_AGENT, "the agent of pid %d sent a malformed range list",
			   f->op.pid);
		goto fail;
	}
	if (!f->xranges && (r = export_alloc(f, total)) < 0)
		goto fail;
	for (unsigned i = 0; i < nfds; i++)
		f->fds[f->nfds++] = fds[i];
	cJSON_ArrayForEach(item, ranges) {
		r = range_read(f, item, &f->xranges[f->nx]);
		if (r < 0)
			return r;
		f->nx++;
	}
	return 0;
fail:
	for (unsigned i = 0; i < nfds; i++)
		close(fds[i]);
	return r;
}

static int export_next(struct gw_fast_op *f);

static int exported(struct gw_fast_op *f, const struct gw_message *msg, int *fds, unsigned nfds)
{
	if (!msg)
		return -EIO;
	if (export_append(f, msg->body, fds, nfds) < 0)
		return -EBADMSG;
	return f->nx < f->export_total ? export_next(f) : 0;
}

static int export_next(struct gw_fast_op *f)
{
	cJSON *params = cJSON_CreateObject();

	if (params)
		cJSON_AddNumberToObject(params, "offset", (double)f->nx);
	return gw_fastop_call_agent(f, GW_METHOD_AGENT_EXPORT, params, NULL, 0, exported);
}

static int export(struct gw_op *op)
{
	return export_next(GW_FAST(op));
}

static int have_ranges(struct gw_op *op)
{
	if (GW_FAST(op)->nx > 0)
		return GW_STEP_SKIP;
	gw_op_fail(op, GW_ERROR_AGENT, "the agent of pid %d has no VRAM to move", op->pid);
	return -ENODATA;
}

/* ---- scan and copy ---- */

static int check_scanned(struct gw_op *op, int r)
{
	(void)r;
	if (!op->job_error)
		return 0;
	GW_FAST(op)->copy_abort = 1; /* unmap what was mapped (the copy round does only that) */
	return GW_STEP_SKIP;
}

static void random_id(uint8_t id[16])
{
	if (getrandom(id, 16, GRND_NONBLOCK) != 16) {
		double t = gw_now_ms();

		memcpy(id, &t, sizeof(t));
		memset(id + sizeof(t), 0x5a, 16 - sizeof(t));
	}
}

static int layout(struct gw_fast_op *f, struct gw_image *image)
{
	uint32_t flags = 0;
	int r;

	if (f->sparse && f->nx > 0 && f->scans[0])
		flags = GW_VIMG_F_SPARSE | GW_VIMG_F_SUMS;
	r = gw_vimg_init(&image->v, f->chunk_bytes, flags);
	for (size_t i = 0; r == 0 && i < f->nx; i++)
		r = gw_vimg_add_range(&image->v, &f->xranges[i], flags ? f->scans[i] : NULL);
	if (r == 0)
		r = gw_vimg_finalize(&image->v);
	if (r == 0 && f->image_fd >= 0)
		r = gw_imageio_layout(&image->v, f->nseg_fds);
	if (r < 0) {
		f->step_error = GW_ERROR_INTERNAL;
		snprintf(f->step_err, sizeof(f->step_err), "cannot lay out the image: %s",
			 strerror(-r));
	}
	image->v.pid = f->op.pid;
	image->v.created_ns = (uint64_t)time(NULL) * 1000000000u;
	random_id(image->v.id);
	return r;
}

/* Pinned pool blocks for the image's data; its data section is packed into them. */
static int store_in_memory(struct gw_fast_op *f, struct gw_image *image)
{
	size_t free_bytes;
	int r = gw_image_alloc_blocks(image, &f->op.d->hostpool, &free_bytes);

	if (r == -ENOSPC) {
		f->step_error = GW_ERROR_LIMIT;
		snprintf(f->step_err, sizeof(f->step_err),
			 "the image pool has %zu MiB free, pid %d needs %llu MiB (of %llu MiB of "
			 "VRAM): start gpu-warmd with a larger --image-pool-mib, or suspend into "
			 "an image file (warmctl suspend --image FILE)", free_bytes >> 20, f->op.pid,
			 (unsigned long long)(image->v.data_bytes >> 20),
			 (unsigned long long)(image->v.vram_bytes >> 20));
	} else if (r < 0) {
		f->step_error = GW_ERROR_INTERNAL;
		snprintf(f->step_err, sizeof(f->step_err), "out of memory for the image");
	}
	return r;
}

/* A worker: lay the image out from the scans and give a file image its store (file I/O); a
 * memory image gets its pool blocks on the loop (check_image_made). */
static int make_image(struct gw_op *op)
{
	struct gw_fast_op *f = GW_FAST(op);
	struct gw_image *image = f->parsed = gw_image_new();
	int r = image ? layout(f, image) : -ENOMEM;

	if (!image) {
		f->step_error = GW_ERROR_INTERNAL;
		snprintf(f->step_err, sizeof(f->step_err), "cannot lay out the image: %s",
			 strerror(ENOMEM));
	} else if (r == 0 && f->image_fd >= 0) {
		r = gw_image_file_prepare(image, f->image_fd, f->seg_fds, f->nseg_fds, f->step_err,
					  sizeof(f->step_err));
		f->image_fd = -1;
		f->nseg_fds = 0;
		if (r < 0)
			f->step_error = GW_ERROR_IMAGE;
	}
	if (r < 0) {
		op->job_error = r;
		f->copy_abort = 1;
	}
	return 0;
}

static int not_aborted(struct gw_op *op)
{
	return !GW_FAST(op)->copy_abort;
}

/* On the loop: a memory image's pool blocks, the image cache (loop only) making way first:
 * suspended images always win over it. */
static int check_image_made(struct gw_op *op, int r)
{
	struct gw_fast_op *f = GW_FAST(op);
	struct gw_image *image = f->image = f->parsed;

	(void)r;
	f->parsed = NULL;
	if (!f->copy_abort && image->fd < 0 && image->v.data_bytes > 0) {
		gw_imagecache_yield(op->d, (image->v.data_bytes + GW_HOSTPOOL_BLOCK_BYTES - 1) /
						   GW_HOSTPOOL_BLOCK_BYTES);
		r = store_in_memory(f, image);
		if (r < 0) {
			op->job_error = r;
			f->copy_abort = 1;
		}
	}
	return GW_STEP_SKIP;
}

static int check_copied(struct gw_op *op, int r)
{
	struct gw_fast_op *f = GW_FAST(op);
	struct gw_daemon *d = op->d;

	(void)r;
	gw_fastop_close_fds(f); /* the app's exported fds: our imports are gone, these must go */
	gw_fastop_export_free(f);
	if (f->step_error && op->job_error) {
		gw_op_fail(op, f->step_error, "%s", f->step_err);
		return op->job_error;
	}
	if (op->job_error) {
		gw_op_fail(op, gw_fastop_job_error_name(op->job_error),
			   "copying VRAM out failed: %s", op->job_err);
		return op->job_error;
	}
	/* Speeds measured here before, for `warmctl inspect`: sealed into the file. */
	f->image->v.copy_in_bps = (uint64_t)d->speeds.fill_bps;
	f->image->v.read_bps = (uint64_t)d->speeds.file_read_bps;
	f->image->v.device_bps = (uint64_t)d->speeds.device_bps;
	f->image->v.restore_fixed_ns = (uint64_t)(d->speeds.restore_fixed_ms * 1e6);
	return 0;
}

/* A worker: the image is complete in its store; a file's header and tables go last (the file's
 * mapping goes first: unmapping a large one takes a while). */
static int seal(struct gw_op *op)
{
	struct gw_fast_op *f = GW_FAST(op);
	struct gw_vimg *v = &f->image->v;
	uint64_t io_ns = gw_fastcopy_io_ns(f);
	double copy_s;

	gw_image_unmap(f->image);
	copy_s = (gw_now_ms() - op->step_start_ms) / 1e3;
	if (f->image->fd < 0)
		return 0;
	v->write_bps = io_ns ? (uint64_t)((double)v->data_bytes / ((double)io_ns / 1e9)) : 0;
	v->copy_out_bps = copy_s > 0 ? (uint64_t)((double)v->data_bytes / copy_s) : 0;
	return gw_image_seal(f->image, f->step_err, sizeof(f->step_err));
}

static int check_sealed(struct gw_op *op, int r)
{
	if (r < 0)
		gw_op_fail(op, GW_ERROR_IMAGE, "%s", GW_FAST(op)->step_err);
	return r;
}

/* ---- release and checkpoint ---- */

static int released(struct gw_fast_op *f, const struct gw_message *msg, int *fds, unsigned nfds)
{
	for (unsigned i = 0; i < nfds; i++)
		close(fds[i]);
	f->released = 1; /* failed: some ranges may be gone from VRAM, the undo puts all back */
	return msg ? 0 : -EIO;
}

static int release(struct gw_op *op)
{
	return gw_fastop_call_agent(GW_FAST(op), GW_METHOD_AGENT_RELEASE, cJSON_CreateObject(),
				    NULL, 0, released);
}

static int is_released(struct gw_op *op)
{
	return GW_FAST(op)->released;
}

static const struct gw_step map_back[] = {
	GW_FAST_FILL_STEPS(is_released),
	GW_FAST_MAP_STEP(is_released),
};

static int check_checkpointed(struct gw_op *op, int r)
{
	r = gw_fastop_check_cuda(op, r);
	if (r == 0)
		GW_FAST(op)->locked = 0;
	return r;
}

/* ---- trim: the host pages of zeros, while the threads are still stopped ---- */

#define TRIM_MAX_MS 5000

static int trimmed(struct gw_fast_op *f, const struct gw_message *msg, int *fds, unsigned nfds)
{
	uint64_t bytes;

	for (unsigned i = 0; i < nfds; i++)
		close(fds[i]);
	if (msg && gw_json_get_u64(msg->body, "trimmed_bytes", 0, UINT64_MAX, &bytes) == 0) {
		f->trimmed_bytes = bytes;
		f->trimmed = 1;
	}
	return 0;
}

static int trim(struct gw_op *op)
{
	cJSON *params = cJSON_CreateObject();

	if (params)
		cJSON_AddNumberToObject(params, "max_ms", TRIM_MAX_MS);
	return gw_fastop_ask_agent(GW_FAST(op), GW_METHOD_AGENT_TRIM, params, trimmed);
}

/* ---- the plan ---- */

#define N(a) (sizeof(a) / sizeof((a)[0]))

static const struct gw_step suspend_steps[] = {
	{ .name = "lock", .thread = GW_STEP_WORKER, .run = gw_fastop_lock, .check = check_locked,
	  .undo = unlock_undo, .nundo = N(unlock_undo) },
	{ .name = "freeze", .thread = GW_STEP_TRACER, .run = gw_fastop_freeze,
	  .check = gw_fastop_check_freeze },
	{ .name = "unlock", .thread = GW_STEP_WORKER, .run = gw_fastop_unlock,
	  .check = check_unlocked },
	{ .name = "export", .thread = GW_STEP_LOOP, .run = export },
	{ .thread = GW_STEP_LOOP, .run = have_ranges },
	{ .name = "scan", .thread = GW_STEP_GPUS, .run_gpu = gw_fastcopy_dump_scan,
	  .check = check_scanned },
	{ .thread = GW_STEP_WORKER, .when = not_aborted, .run = make_image,
	  .check = check_image_made },
	{ .thread = GW_STEP_GPUS, .run_gpu = gw_fastcopy_dump_copy, .check = check_copied,
	  .running = "copy" },
	{ .name = "copy", .thread = GW_STEP_WORKER, .run = seal, .check = check_sealed,
	  .running = "copy" },
	{ .name = "release", .thread = GW_STEP_LOOP, .run = release, .undo = map_back,
	  .nundo = N(map_back) },
	{ .name = "checkpoint", .thread = GW_STEP_WORKER, .run = gw_fastop_lock_checkpoint,
	  .check = check_checkpointed, .undo = unlock_undo, .nundo = N(unlock_undo) },
	{ .name = "trim", .thread = GW_STEP_LOOP, .when = gw_fastop_frozen, .run = trim },
};

/* A dump that failed leaves no half-written image behind. */
static int discard_wanted(struct gw_op *op)
{
	struct gw_fast_op *f = GW_FAST(op);

	return op->failed && !f->released && f->image;
}

static int discard(struct gw_op *op)
{
	gw_image_unmap(GW_FAST(op)->image);
	gw_image_discard(GW_FAST(op)->image);
	return 0;
}

static const struct gw_step suspend_always[] = {
	{ .thread = GW_STEP_TRACER, .when = gw_fastop_frozen, .run = gw_fastop_thaw },
	{ .thread = GW_STEP_WORKER, .when = discard_wanted, .run = discard },
};

static const struct gw_op_plan suspend_plan = GW_FASTOP_PLAN("suspend", suspend_steps, suspend_always);

int gw_fast_suspend(struct gw_daemon *d, struct gw_request *req, pid_t pid,
		    struct gw_fast_params *p)
{
	struct gw_fast_op *f = gw_fastop_new(d, req, pid, GW_FAST_SUSPEND, &suspend_plan, p);

	if (!f)
		return -ENOMEM;
	f->timeout_ms = p->timeout_ms;
	f->sparse = p->sparse;
	f->chunk_bytes = p->chunk_bytes;
	gw_fastop_take_files(f, p);
	gw_info("fast suspend of pid %d: %.1f MiB in %" PRIu64 " ranges, into %s (%u segments)",
		pid, (double)f->agent->bytes / 1048576.0, f->agent->ranges,
		f->image_fd >= 0 ? "an image file" : "memory", f->nseg_fds);
	gw_op_start(&f->op);
	return 0;
}
