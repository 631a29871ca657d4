/* SPDX-License-Identifier: MIT */
#include "fastop.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "clock.h"
#include "gw-ckpt.h"
#include "imagecache-ops.h"
#include "log.h"

#define GW_AGENT_CALL_TIMEOUT_MS 60000
#define GW_FREEZE_TIMEOUT_MS 5000

/* ---- life cycle ---- */

struct gw_fast_op *gw_fastop_new(struct gw_daemon *d, struct gw_request *req, pid_t pid,
				 enum gw_fast_kind kind, const struct gw_op_plan *plan,
				 struct gw_fast_params *p)
{
	struct gw_fast_op *f = calloc(1, sizeof(*f));

	if (!f) {
		gw_imageio_params_close(p);
		return NULL;
	}
	gw_op_init(&f->op, d, req, plan, pid, p->owner, p->progress);
	f->kind = kind;
	f->pin.pidfd = -1;
	gw_pin_move(&f->pin, &p->pin);
	f->image_fd = -1;
	f->agent = kind == GW_FAST_PREFILL ? NULL : gw_fast_agent(d, pid);
	if (f->agent) {
		f->agent->busy = 1;
		f->agent_tid = f->agent->tid;
	}
	f->next = d->fast_ops;
	d->fast_ops = f;
	if (kind != GW_FAST_PREFILL)
		gw_op_gpus_begin(&f->op, p->gpu_mask);
	return f;
}

void gw_fastop_take_files(struct gw_fast_op *f, struct gw_fast_params *p)
{
	f->image_fd = p->image_fd;
	for (unsigned k = 0; k < p->nsegment_fds; k++)
		f->seg_fds[k] = p->segment_fds[k];
	f->nseg_fds = p->image_fd >= 0 ? p->nsegment_fds : 0;
	p->image_fd = -1;
	p->nsegment_fds = 0;
}

void gw_fastop_unlist(struct gw_fast_op *f)
{
	for (struct gw_fast_op **p = &f->op.d->fast_ops; *p; p = &(*p)->next)
		if (*p == f) {
			*p = f->next;
			break;
		}
}

void gw_fastop_close_fds(struct gw_fast_op *f)
{
	for (size_t i = 0; i < f->nfds; i++)
		if (f->fds[i] >= 0)
			close(f->fds[i]);
	free(f->fds);
	f->fds = NULL;
	f->nfds = 0;
}

void gw_fastop_export_free(struct gw_fast_op *f)
{
	while (f->scans && f->nx > 0)
		free(f->scans[--f->nx]);
	free(f->scans);
	f->scans = NULL;
	free(f->maps);
	f->maps = NULL;
	free(f->xranges);
	f->xranges = NULL;
	f->nx = 0;
}

void gw_fastop_free(struct gw_fast_op *f)
{
	struct gw_daemon *d = f->op.d;

	gw_op_release(&f->op);
	gw_fastop_unlist(f);
	if (f->awaited) {
		/* A resume that ends before the fill it waited for: the VRAM is nobody's. */
		f->awaited->waiter = NULL;
		f->awaited->abandoned = 1;
	}
	gw_fastop_close_fds(f);
	gw_fastop_export_free(f);
	gw_image_free(&d->hostpool, f->parsed);
	if (f->image_fd >= 0)
		close(f->image_fd);
	for (unsigned k = 0; k < f->nseg_fds; k++)
		close(f->seg_fds[k]);
	gw_pin_close(&f->pin);
	free(f);
}

void gw_fastop_cuda_error(struct gw_fast_op *f)
{
	char text[160];

	if (!f->op.error_extra) {
		f->op.error_extra = cJSON_CreateObject();
		if (f->op.error_extra)
			cJSON_AddNumberToObject(f->op.error_extra, "cuda_error", f->cu);
	}
	gw_op_fail(&f->op, gw_error_for_errno(gw_cuda_errno(f->cu)), "%s(pid %d): %s", f->cu_call,
		   f->op.pid, gw_cuda_describe(f->op.d->cuda, f->cu, text, sizeof(text)));
}

const char *gw_fastop_job_error_name(int r)
{
	int image = r == -EILSEQ || r == -ENODATA || r == -ENOSPC || r == -EFBIG || r == -EDQUOT;

	return image ? GW_ERROR_IMAGE : GW_ERROR_CUDA;
}

/* ---- the ending ---- */

/* Speeds the daemon measured last, written into the images it makes; inspect predicts a
 * restore's time from them. A fill is file reads (data bytes) plus device-side work (creating,
 * zeroing, copying and checking every VRAM byte). */
static void remember_speeds(struct gw_fast_op *f)
{
	const struct gw_vimg *v = &f->image->v;
	struct gw_daemon *d = f->op.d;
	double fill_s = 0, fixed_ms = 0, io_s = (double)gw_fastcopy_io_ns(f) / 1e9;

	if (f->kind != GW_FAST_RESUME || f->op.failed)
		return;
	for (unsigned i = 0; i < f->op.res.nsteps; i++) {
		if (strcmp(f->op.res.steps[i].name, "fill") == 0)
			fill_s = f->op.res.steps[i].ms / 1e3;
		else
			fixed_ms += f->op.res.steps[i].ms;
	}
	if (f->image->fd < 0 && fill_s > 0 && v->data_bytes >= (64u << 20))
		d->speeds.fill_bps = (double)v->data_bytes / fill_s;
	if (f->image->fd >= 0 && io_s > 0 && v->data_bytes >= (64u << 20))
		d->speeds.file_read_bps = (double)v->data_bytes / io_s;
	if (f->image->fd >= 0 && fill_s > io_s && v->vram_bytes >= (1u << 30))
		d->speeds.device_bps = (double)v->vram_bytes / (fill_s - io_s);
	d->speeds.restore_fixed_ms = fixed_ms;
}

void gw_fastop_add_result(const struct gw_op *op, cJSON *result)
{
	const struct gw_fast_op *f = GW_OP_OF(op, const struct gw_fast_op);
	const struct gw_vimg *v = f->image ? &f->image->v : NULL;
	double copy_ms = gw_op_step_ms(op, "copy") + gw_op_step_ms(op, "fill");
	uint64_t io_ns = gw_fastcopy_io_ns(f);

	cJSON_AddNumberToObject(result, "vram_bytes", v ? (double)v->vram_bytes : 0);
	cJSON_AddNumberToObject(result, "ranges", v ? (double)v->nranges : 0);
	if (v) {
		cJSON_AddNumberToObject(result, "data_bytes", (double)v->data_bytes);
		cJSON_AddNumberToObject(result, "zero_bytes", (double)v->zero_bytes);
		cJSON_AddNumberToObject(result, "chunk_bytes", (double)v->chunk_bytes);
		cJSON_AddBoolToObject(result, "verified", (v->flags & GW_VIMG_F_SUMS) != 0);
		cJSON_AddStringToObject(result, "image", f->image->fd >= 0 ? "file" : "memory");
		if (f->image->fd >= 0)
			cJSON_AddNumberToObject(result, "image_bytes", (double)v->file_bytes);
		if (f->image->fd >= 0 && f->kind == GW_FAST_SUSPEND)
			cJSON_AddStringToObject(result, "file_writes",
						f->image->written_mapped ? "mapped" : "pwrite");
	}
	if (f->trimmed)
		cJSON_AddNumberToObject(result, "trimmed_bytes", (double)f->trimmed_bytes);
	if (f->prefill_ms > 0) {
		cJSON_AddBoolToObject(result, "prefilled", 1);
		cJSON_AddNumberToObject(result, "prefill_ms", f->prefill_ms);
	}
	/* Of "copy" or "fill": the data bytes that crossed the link (zero chunks did not). */
	if (copy_ms > 0 && v)
		cJSON_AddNumberToObject(result, "copy_gb_per_s", (double)v->data_bytes / 1e6 / copy_ms);
	if (io_ns > 0)
		cJSON_AddNumberToObject(result, "file_io_ms", (double)io_ns / 1e6);
	gw_imageio_result(result, f->image, f->cstats, op->d->gpu_table.count, f->kind == GW_FAST_SUSPEND);
}

/* Where the VRAM's only copy is the image, keep it for the next resume; else drop it. */
static void keep_or_drop_image(struct gw_fast_op *f)
{
	struct gw_daemon *d = f->op.d;
	struct gw_agent *a = f->agent;

	/* A resume that failed before acting on the process leaves it as it was: an image read
	 * from a file for it is not attached (the file is still there); one held already stays. */
	if (f->kind == GW_FAST_RESUME && f->op.failed && !f->touched && f->image != a->image) {
		gw_image_free(&d->hostpool, f->image);
		f->image = NULL;
		f->released = 0;
	}
	if (f->released && a->image != f->image) {
		gw_image_free(&d->hostpool, a->image);
		a->image = f->image;
	} else if (!f->released) {
		if (a->image == f->image)
			a->image = NULL;
		gw_image_free(&d->hostpool, f->image);
	}
	f->image = NULL;
}

void gw_fastop_finish(struct gw_op *op)
{
	struct gw_fast_op *f = GW_FAST(op);
	struct gw_daemon *d = op->d;
	int suspend = f->kind == GW_FAST_SUSPEND;
	const char *what = suspend ? "suspend" : "resume";
	double total = gw_now_ms() - op->start_ms;
	struct gw_agent *a = f->agent;

	gw_op_release(op);
	gw_fastop_close_fds(f);
	gw_fastop_export_free(f);
	a->busy = 0;
	gw_quota_give(&d->quota, op->owner);
	gw_op_stats_record(&d->stats[suspend ? GW_OP_SUSPEND : GW_OP_RESUME], !op->failed, total,
			   !op->failed && f->image ? f->image->v.data_bytes : 0);
	if (op->failed) {
		gw_warn("fast %s of pid %d failed: %s", what, op->pid, op->error);
		gw_request_fail(op->req, op->error_name, op->error_extra, "%s", op->error);
	} else {
		remember_speeds(f);
		gw_info("fast %s of pid %d: %.1f MiB (%.1f MiB of data) in %.1f ms", what, op->pid,
			(double)f->image->v.vram_bytes / 1048576.0,
			(double)f->image->v.data_bytes / 1048576.0, total);
		op->res.pid = op->pid;
		op->res.path = "fast";
		op->res.state = suspend ? GW_PROCESS_STATE_CHECKPOINTED : GW_PROCESS_STATE_RUNNING;
		op->res.duration_ms = total;
		op->res.bytes = f->image->v.data_bytes;
		gw_request_reply(op->req, gw_op_result_json(op));
		cJSON_Delete(op->error_extra);
		/* A dump's files are cached too, read back after the reply (a memory image: no-op). */
		if (suspend)
			gw_imagecache_offer(d, f->image, op->owner);
	}
	keep_or_drop_image(f);
	gw_fastop_free(f);
	/* Its process exited meanwhile: nothing held for it may outlive it. */
	if (a->gone)
		gw_agent_remove(d, a);
}

uint64_t gw_fastop_gpus(struct gw_op *op)
{
	return gw_fastcopy_gpus(GW_FAST(op));
}

uint64_t gw_fastop_total_bytes(const struct gw_op *op)
{
	const struct gw_fast_op *f = GW_OP_OF(op, const struct gw_fast_op);

	return f->image ? f->image->v.data_bytes : f->agent ? f->agent->bytes : 0;
}

int gw_fast_busy(const struct gw_daemon *d, pid_t pid)
{
	for (const struct gw_fast_op *f = d->fast_ops; f; f = f->next)
		if (f->op.pid == pid)
			return 1;
	return 0;
}

/* ---- driver steps (workers) ---- */

/* Each driver step acts on the process pinned at dispatch, or on nothing: a pid whose process
 * exited may name another process by now. */
static int still_there(struct gw_fast_op *f)
{
	if (gw_pin_alive(&f->pin))
		return 1;
	f->cu = CUDA_ERROR_NOT_FOUND;
	f->cu_call = "(the process exited)";
	return 0;
}

static int before_driver_step(void *ctx, enum gw_ckpt_step step)
{
	(void)step;
	return !still_there(ctx);
}

static void driver_step(struct gw_fast_op *f, enum gw_ckpt_step step)
{
	struct gw_ckpt_args args = { .lock_timeout_ms = f->timeout_ms };
	struct gw_ckpt_observer obs = { before_driver_step, NULL, f };
	struct gw_ckpt_outcome out;

	if (gw_ckpt_single(f->op.d->cuda, f->op.pid, step, &args, &obs, &out) < 0 &&
	    !out.stopped) {
		f->cu = out.result;
		f->cu_call = gw_ckpt_step_call(out.failed_step);
	} else if (!out.stopped) {
		f->cu = CUDA_SUCCESS;
	}
}

int gw_fastop_lock(struct gw_op *op)
{
	struct gw_fast_op *f = GW_FAST(op);
	int tid = 0;

	driver_step(f, GW_CKPT_LOCK);
	if (f->cu == CUDA_SUCCESS &&
	    op->d->cuda->cuCheckpointProcessGetRestoreThreadId(op->pid, &tid) == CUDA_SUCCESS)
		f->restore_tid = tid;
	return 0;
}

int gw_fastop_unlock(struct gw_op *op)
{
	driver_step(GW_FAST(op), GW_CKPT_UNLOCK);
	return 0;
}

/* Not gw_ckpt_suspend(): a failed checkpoint here is not unlocked and left running, the VRAM is
 * in the image only: the suspend's undo unlocks and maps it back. */
int gw_fastop_lock_checkpoint(struct gw_op *op)
{
	struct gw_fast_op *f = GW_FAST(op);

	driver_step(f, GW_CKPT_LOCK);
	if (f->cu != CUDA_SUCCESS)
		return 0;
	f->locked = 1;
	driver_step(f, GW_CKPT_CHECKPOINT);
	return 0;
}

int gw_fastop_restore_tid(struct gw_op *op)
{
	struct gw_fast_op *f = GW_FAST(op);
	int tid = 0;

	if (!still_there(f))
		return 0;
	f->cu_call = "cuCheckpointProcessGetRestoreThreadId";
	f->cu = op->d->cuda->cuCheckpointProcessGetRestoreThreadId(op->pid, &tid);
	f->restore_tid = tid;
	return 0;
}

int gw_fastop_restore_unlock(struct gw_op *op)
{
	struct gw_fast_op *f = GW_FAST(op);
	struct gw_ckpt_observer obs = { before_driver_step, NULL, f };
	struct gw_ckpt_outcome out;

	f->cu = CUDA_SUCCESS;
	if (gw_ckpt_resume(op->d->cuda, op->pid, NULL, &obs, &out) < 0 && !out.stopped) {
		f->cu = out.result;
		f->cu_call = gw_ckpt_step_call(out.failed_step);
	}
	return 0;
}

int gw_fastop_check_cuda(struct gw_op *op, int r)
{
	struct gw_fast_op *f = GW_FAST(op);

	(void)r;
	if (f->cu == CUDA_SUCCESS)
		return 0;
	gw_fastop_cuda_error(f);
	return -EIO;
}

/* ---- freeze and thaw (the tracer thread: ptrace requests come from the tracer) ---- */

int gw_fastop_freeze(struct gw_op *op)
{
	struct gw_fast_op *f = GW_FAST(op);
	pid_t keep[2] = { f->agent_tid, f->restore_tid };

	if (f->caller_froze)
		return 0;
	if (!gw_pin_alive(&f->pin))
		return -EOWNERDEAD;
	return gw_freeze(op->pid, keep, f->restore_tid > 0 ? 2 : 1, GW_FREEZE_TIMEOUT_MS,
			 &f->frozen);
}

int gw_fastop_check_freeze(struct gw_op *op, int r)
{
	if (r == -EOWNERDEAD)
		gw_op_fail(op, GW_ERROR_NO_SUCH_PROCESS, "pid %d exited", op->pid);
	else if (r < 0)
		gw_op_fail(op, r == -EPERM ? GW_ERROR_PERMISSION_DENIED : GW_ERROR_INTERNAL,
			   "cannot freeze the threads of pid %d: %s%s", op->pid, strerror(-r),
			   r == -EPERM ? " (gpu-warmd needs to be root or have CAP_SYS_PTRACE)" : "");
	return r;
}

int gw_fastop_frozen(struct gw_op *op)
{
	return GW_FAST(op)->frozen.tids != NULL;
}

int gw_fastop_thaw(struct gw_op *op)
{
	gw_thaw(&GW_FAST(op)->frozen);
	return 0;
}

/* ---- agent calls ---- */

struct agent_call {
	struct gw_fast_op *f;
	gw_agent_done_fn done;
	int optional; /* a failure is logged, the operation goes on */
};

static void close_all(int *fds, unsigned nfds)
{
	for (unsigned i = 0; i < nfds; i++)
		close(fds[i]);
}

static void on_agent_reply(void *data, const struct gw_message *msg, int *fds, unsigned nfds)
{
	struct agent_call *call = data;
	struct gw_fast_op *f = call->f;
	gw_agent_done_fn done = call->done;
	int optional = call->optional;
	int r;

	free(call);
	if (!msg || msg->kind == GW_MESSAGE_ERROR) {
		const char *why = !msg ? "did not answer (it hung up or timed out)" : "failed";
		const char *what = msg && msg->error_message ? msg->error_message : "";

		if (optional)
			gw_warn("pid %d: the agent %s%s%s; going on without it", f->op.pid, why,
				*what ? ": " : "", what);
		else
			gw_op_fail(&f->op, GW_ERROR_AGENT, "the agent of pid %d %s%s%s", f->op.pid,
				   why, *what ? ": " : "", what);
		close_all(fds, nfds);
		r = done(f, NULL, NULL, 0);
	} else {
		r = done(f, msg, fds, nfds);
	}
	if (r != GW_STEP_ASYNC)
		gw_op_step_done(&f->op, r);
}

static int call_agent(struct gw_fast_op *f, const char *method, cJSON *params, const int *fds,
		      unsigned nfds, gw_agent_done_fn done, int optional)
{
	struct agent_call *call = calloc(1, sizeof(*call));
	int r = -ENOMEM;

	if (call && f->agent->conn) {
		call->f = f;
		call->done = done;
		call->optional = optional;
		r = gw_conn_call(f->agent->conn, method, params, fds, nfds,
				 GW_AGENT_CALL_TIMEOUT_MS, on_agent_reply, call);
	} else if (call) {
		r = -ENOTCONN;
	}
	cJSON_Delete(params);
	if (r == 0)
		return GW_STEP_ASYNC;
	free(call);
	if (optional)
		gw_warn("pid %d: cannot reach the agent: %s; going on without it", f->op.pid,
			strerror(-r));
	else
		gw_op_fail(&f->op, GW_ERROR_AGENT, "cannot reach the agent of pid %d: %s",
			   f->op.pid, strerror(-r));
	return done(f, NULL, NULL, 0);
}

int gw_fastop_call_agent(struct gw_fast_op *f, const char *method, cJSON *params, const int *fds,
			 unsigned nfds, gw_agent_done_fn done)
{
	return call_agent(f, method, params, fds, nfds, done, 0);
}

int gw_fastop_ask_agent(struct gw_fast_op *f, const char *method, cJSON *params,
			gw_agent_done_fn done)
{
	return call_agent(f, method, params, NULL, 0, done, 1);
}

/* ---- the daemon's end ---- */

cJSON *gw_fast_prefills_status(struct gw_daemon *d)
{
	return gw_prefill_status(d);
}

void gw_fast_finish(struct gw_daemon *d)
{
	gw_opengine_finish(d);
	while (d->prefills) {
		if (d->prefills->waiter)
			d->prefills->waiter->awaited = NULL;
		gw_prefill_free(d->prefills);
	}
	while (d->agents)
		gw_agent_remove(d, d->agents);
}
