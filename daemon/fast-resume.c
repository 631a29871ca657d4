/* SPDX-License-Identifier: MIT */
/*
 * The fast resume, and the prefill that does its first half ahead:
 *
 *   read image    (worker; a resume from a file) the header and tables, checked
 *   prefill wait  the VRAM filled ahead for the same file, or its fill still running (for
 *                 CRIU's restore, which holds the threads: the steps go on, see below)
 *   cache hit     (only when it hits) the image cache holds the image's files: the fill reads
 *                 its RAM copy instead
 *   fill          (a job per GPU) new VRAM created, filled from the image, checked, exported
 *   restore tid   (worker; not when the caller froze the process) the CUDA restore thread
 *   freeze        (tracer) every thread but the agent's and the restore thread stopped
 *   restore       (worker) the driver's restore and unlock
 *   prefill join  (only when overlapped) the prefill's fill ends: its VRAM is the resume's
 *   map           (agent) the new VRAM mapped at the old addresses
 *   then the thaw (tracer)
 *
 * The VRAM is refilled and checked before the process is touched: a bad image leaves it
 * checkpointed (and restorable from a good one). One exception, for speed: the resume of a
 * process CRIU is restoring (the caller holds its threads) whose prefill is still filling runs
 * the driver's restore while the fill goes on, and joins it before the map. A failed fill then
 * fails a restore that CRIU undoes anyway (it kills the restored tree), so nothing is lost.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "clock.h"
#include "fastop.h"
#include "imagecache-ops.h"
#include "log.h"

/* ---- reading the image (a worker: a valid image's tables can be hundreds of MiB) ---- */

/* A non-root caller's tables are bounded. */
static int from_file(struct gw_op *op)
{
	return GW_FAST(op)->from_file;
}

static int read_image(struct gw_op *op)
{
	struct gw_fast_op *f = GW_FAST(op);
	uint64_t max_tables = op->owner == 0 ? UINT64_MAX : GW_FAST_USER_TABLE_MAX;

	f->parse_err[0] = 0;
	f->parse_error = gw_image_read(f->image_fd, f->seg_fds, f->nseg_fds, max_tables, &f->parsed,
				       f->parse_err, sizeof(f->parse_err));
	f->image_fd = -1;
	f->nseg_fds = 0; /* the image's now, or closed */
	return 0;
}

/* Every GPU the image's ranges were on is here and ready, or the op's error says which not. */
static int image_gpus_ready(struct gw_fast_op *f, const struct gw_image *image)
{
	for (uint32_t i = 0; i < image->v.nranges; i++) {
		struct gw_gpu *g = gw_fastcopy_range_gpu(f->op.d, &image->v.ranges[i]);

		if (!g || !gw_gpu_accepts_work(g)) {
			gw_op_fail(&f->op, GW_ERROR_DRAINING, "the image has VRAM of GPU #%u of the "
				   "process, which is %s here", image->v.ranges[i].app_device,
				   g ? gw_gpu_state_name(g->state) : "not on this host");
			return -ENODEV;
		}
	}
	return 0;
}

static int image_refused(struct gw_fast_op *f)
{
	int r = f->parse_error ? f->parse_error : -EIO;

	if (r == -E2BIG) {
		cJSON *extra = cJSON_CreateObject();

		if (extra)
			cJSON_AddStringToObject(extra, "limit", GW_LIMIT_IMAGE_TABLES);
		f->op.error_extra = extra;
		gw_op_fail(&f->op, GW_ERROR_LIMIT, "the image's tables exceed the %u MiB a non-root "
			   "caller may have read: %s", GW_FAST_USER_TABLE_MAX >> 20, f->parse_err);
	} else {
		gw_op_fail(&f->op, GW_ERROR_IMAGE, "the image file cannot be used: %s",
			   f->parse_err[0] ? f->parse_err : strerror(-r));
	}
	return r;
}

/* The image read from the file is the one to restore, or the same image already held here (then
 * the held one is used: in memory, or our own fd of the file). The process is not touched when
 * it is refused. */
static int take_image(struct gw_fast_op *f)
{
	struct gw_agent *a = f->agent;
	struct gw_image *image = f->parsed;
	struct gw_hostpool *pool = &f->op.d->hostpool;

	f->parsed = NULL;
	if (!image)
		return image_refused(f);
	if (a->image && memcmp(a->image->v.id, image->v.id, sizeof(image->v.id)) == 0) {
		/* The same image, already here: in memory, or in the files we wrote (then read it
		 * through the fds just given, the caller's proof that it may). */
		if (a->image->fd >= 0)
			gw_imageio_files_move(a->image, image);
		gw_image_free(pool, image);
		f->image = a->image;
		return 0;
	}
	if (a->image) {
		gw_op_fail(&f->op, GW_ERROR_ILLEGAL_STATE, "gpu-warmd holds another image of pid %d "
			   "(its last suspend); resume it without --image first", f->op.pid);
		gw_image_free(pool, image);
		return -EEXIST;
	}
	if (image_gpus_ready(f, image) < 0) {
		gw_image_free(pool, image);
		return -ENODEV;
	}
	f->image = image;
	return 0;
}

static int check_image(struct gw_op *op, int r)
{
	struct gw_fast_op *f = GW_FAST(op);

	(void)r;
	r = take_image(f);
	if (r < 0)
		f->released = 0; /* nothing was taken from the process */
	return r;
}

/* ---- prefilled VRAM ---- */

/* An overlapped resume whose prefill failed: the process's driver state is back, its VRAM is
 * not; CRIU's restore fails and kills it. */
static int prefill_failed(struct gw_fast_op *f)
{
	gw_op_fail(&f->op, f->prefill_error_name[0] ? f->prefill_error_name : GW_ERROR_INTERNAL,
		   "prefill: %s", f->prefill_error);
	return -EIO;
}

/* The prefilled VRAM becomes the resume's, as if its own fill had made it. */
static void hand_over(struct gw_prefill *pf, struct gw_fast_op *f)
{
	gw_fastop_close_fds(f);
	gw_prefill_take(pf, &f->fds, &f->nfds);
	f->prefill_ms = pf->fill_ms > 0 ? pf->fill_ms : 0.001;
	f->prefilled = 1;
	if (pf->from_cache)
		f->op.res.image_cache = "hit";
	f->op.job_error = 0;
	gw_info("resume of pid %d takes VRAM prefilled in %.1f ms", f->op.pid, pf->fill_ms);
	gw_prefill_free(pf);
}

/* A resume from a file that was prefilled (the same inode holding the same image): its VRAM
 * comes from the prefill, now (0) or once the fill running for it ends (GW_STEP_ASYNC; for
 * CRIU's restore the steps go on meanwhile: GW_STEP_SKIP, overlapped); none to take:
 * GW_STEP_SKIP. */
static int prefill_wait(struct gw_op *op)
{
	struct gw_fast_op *f = GW_FAST(op);
	struct gw_image_key key;
	struct gw_prefill *pf;

	if (gw_image_key(f->image, &key) < 0)
		return GW_STEP_SKIP;
	pf = gw_prefill_find(op->d, key.dev, key.ino);
	if (!pf || (pf->have_id && memcmp(pf->key.id, key.id, sizeof(key.id)) != 0))
		return GW_STEP_SKIP;
	if (!pf->ready) {
		if (pf->waiter)
			return GW_STEP_SKIP;
		pf->waiter = f;
		pf->abandoned = 0;
		f->awaited = pf;
		if (f->caller_froze) {
			f->overlapped = 1;
			gw_info("resume of pid %d restores the process while the prefill of its image "
				"fills", op->pid);
			return GW_STEP_SKIP;
		}
		gw_info("resume of pid %d waits for the prefill of its image", op->pid);
		return GW_STEP_ASYNC;
	}
	if (pf->nfds != f->image->v.nranges)
		return GW_STEP_SKIP;
	hand_over(pf, f);
	return 0;
}

/* The prefill the resume waited for ended: pf, or NULL with why. A resume blocked in "prefill
 * wait" or "prefill join" goes on; an overlapped one still restoring finds it at the join. That
 * one's restore step may be on a worker right now: what is set here (its fds, the prefill
 * fields, the reply's cache note) is nothing the restore reads, and the join reads it on the
 * loop after the restore has returned. */
static void fast_prefill_handed(struct gw_fast_op *waiter, struct gw_prefill *pf,
				const char *why_name, const char *why)
{
	int blocked = !waiter->overlapped || waiter->joining;

	waiter->awaited = NULL;
	waiter->joining = 0;
	if (pf && pf->nfds != waiter->image->v.nranges) {
		why_name = GW_ERROR_INTERNAL;
		why = "it holds another number of ranges than the image";
		gw_prefill_free(pf);
		pf = NULL;
	}
	if (pf)
		hand_over(pf, waiter);
	else if (waiter->overlapped) {
		snprintf(waiter->prefill_error, sizeof(waiter->prefill_error), "%s",
			 why && *why ? why : "it failed");
		snprintf(waiter->prefill_error_name, sizeof(waiter->prefill_error_name), "%s",
			 why_name ? why_name : "");
	}
	if (!blocked)
		return;
	/* Without it, a resume not yet restoring fills on its own; an overlapped one fails. */
	if (!waiter->overlapped)
		gw_op_step_done(&waiter->op, pf ? 0 : GW_STEP_SKIP);
	else
		gw_op_step_done(&waiter->op, pf ? 0 : prefill_failed(waiter));
}

/* ---- fill and map (the undo of a suspend's release too) ---- */

static int not_prefilled(struct gw_op *op)
{
	return !GW_FAST(op)->prefilled && !GW_FAST(op)->overlapped;
}

static int overlapped(struct gw_op *op)
{
	return GW_FAST(op)->overlapped;
}

/* An overlapped resume, restored: the prefill's VRAM is here (0), or comes when its fill ends
 * (GW_STEP_ASYNC), or never (it failed). */
static int prefill_join(struct gw_op *op)
{
	struct gw_fast_op *f = GW_FAST(op);

	if (f->awaited) {
		f->joining = 1;
		return GW_STEP_ASYNC;
	}
	return f->prefilled ? 0 : prefill_failed(f);
}

/* The image's files' data from RAM when the image cache holds exactly these files for the
 * caller: the image borrows the entry's blocks, which the copy store then reads. A miss (or
 * not a file image): GW_STEP_SKIP, the fill reads the files. */
int gw_fast_cache_attach(struct gw_op *op)
{
	if (!gw_imagecache_attach(op->d, GW_FAST(op)->image, op->owner))
		return GW_STEP_SKIP;
	op->res.image_cache = "hit";
	return 0;
}

int gw_fast_fill_prepare(struct gw_op *op)
{
	struct gw_fast_op *f = GW_FAST(op);
	size_t n = f->image->v.nranges;

	gw_fastop_close_fds(f);
	f->fds = calloc(n ? n : 1, sizeof(*f->fds));
	if (!f->fds) {
		gw_op_fail(op, GW_ERROR_INTERNAL, "out of memory");
		return -ENOMEM;
	}
	for (size_t i = 0; i < n; i++)
		f->fds[i] = -1;
	f->nfds = n;
	op->job_error = 0;
	return 0;
}

int gw_fast_fill_check(struct gw_op *op, int r)
{
	(void)r;
	if (!op->job_error)
		return 0;
	gw_op_fail(op, gw_fastop_job_error_name(op->job_error), "refilling VRAM failed: %s",
		   op->job_err);
	return op->job_error;
}

static cJSON *ranges_json(const struct gw_vimg *v, size_t first, size_t n)
{
	cJSON *params = cJSON_CreateObject();
	cJSON *ranges = params ? cJSON_AddArrayToObject(params, "ranges") : NULL;

	for (size_t i = first; ranges && i < first + n; i++) {
		cJSON *r = cJSON_CreateObject();
		char va[32];

		if (!r)
			break;
		snprintf(va, sizeof(va), "0x%" PRIx64, v->ranges[i].va);
		cJSON_AddStringToObject(r, "va", va);
		cJSON_AddNumberToObject(r, "size", (double)v->ranges[i].size);
		cJSON_AddNumberToObject(r, "device", v->ranges[i].app_device);
		cJSON_AddItemToArray(ranges, r);
	}
	return params;
}

static int map_next(struct gw_fast_op *f);

static int mapped(struct gw_fast_op *f, const struct gw_message *msg, int *fds, unsigned nfds)
{
	size_t total = f->image->v.nranges, n = total - f->mapped;

	for (unsigned i = 0; i < nfds; i++)
		close(fds[i]);
	if (!msg)
		return -EIO; /* the agent failed: the VRAM stays in the image */
	f->mapped += n < GW_FRAME_MAX_FDS ? n : GW_FRAME_MAX_FDS;
	if (f->mapped < total)
		return map_next(f);
	gw_fastop_close_fds(f);
	f->released = 0; /* the app has its VRAM back */
	/* ...as memory this daemon made: a driver checkpoint of it could never be restored. The
	 * agent will say so too, but not before its next update. */
	if (f->agent->foreign < total)
		f->agent->foreign = total;
	return 0;
}

/* Hand the refilled memory to the agent, GW_FRAME_MAX_FDS ranges per call. */
static int map_next(struct gw_fast_op *f)
{
	size_t n = f->image->v.nranges - f->mapped;

	if (n > GW_FRAME_MAX_FDS)
		n = GW_FRAME_MAX_FDS;
	return gw_fastop_call_agent(f, GW_METHOD_AGENT_MAP, ranges_json(&f->image->v, f->mapped, n),
				    f->fds + f->mapped, (unsigned)n, mapped);
}

int gw_fast_map(struct gw_op *op)
{
	GW_FAST(op)->mapped = 0;
	return map_next(GW_FAST(op));
}

/* ---- the process ---- */

static int no_caller_freeze(struct gw_op *op)
{
	return !GW_FAST(op)->caller_froze;
}

static int check_freeze(struct gw_op *op, int r)
{
	r = gw_fastop_check_freeze(op, r);
	if (r == 0)
		GW_FAST(op)->touched = 1;
	return r;
}

static const struct gw_step resume_steps[] = {
	{ .name = "read image", .thread = GW_STEP_WORKER, .when = from_file, .run = read_image,
	  .check = check_image },
	{ .name = "prefill wait", .thread = GW_STEP_LOOP, .when = from_file, .run = prefill_wait },
	GW_FAST_FILL_STEPS(not_prefilled),
	{ .thread = GW_STEP_WORKER, .when = no_caller_freeze, .run = gw_fastop_restore_tid,
	  .check = gw_fastop_check_cuda },
	{ .name = "freeze", .thread = GW_STEP_TRACER, .run = gw_fastop_freeze,
	  .check = check_freeze },
	{ .name = "restore", .thread = GW_STEP_WORKER, .run = gw_fastop_restore_unlock,
	  .check = gw_fastop_check_cuda },
	{ .name = "prefill join", .thread = GW_STEP_LOOP, .when = overlapped, .run = prefill_join },
	GW_FAST_MAP_STEP(NULL),
};

static const struct gw_step resume_always[] = {
	{ .thread = GW_STEP_TRACER, .when = gw_fastop_frozen, .run = gw_fastop_thaw },
};

static const struct gw_op_plan resume_plan = GW_FASTOP_PLAN("resume", resume_steps, resume_always);

int gw_fast_resume(struct gw_daemon *d, struct gw_request *req, pid_t pid,
		   struct gw_fast_params *p)
{
	struct gw_fast_op *f = gw_fastop_new(d, req, pid, GW_FAST_RESUME, &resume_plan, p);

	if (!f)
		return -ENOMEM;
	f->released = 1;
	f->timeout_ms = 10000;
	f->caller_froze = p->caller_froze;
	f->from_file = p->image_fd >= 0;
	if (!f->from_file)
		f->image = f->agent->image;
	gw_fastop_take_files(f, p);
	gw_op_start(&f->op);
	return 0;
}

/* ---- prefill ---- */

static int check_prefill_image(struct gw_op *op, int r)
{
	struct gw_fast_op *f = GW_FAST(op);

	(void)r;
	f->image = f->parsed;
	f->parsed = NULL;
	if (!f->image) {
		gw_op_fail(op, GW_ERROR_IMAGE, "the image file cannot be used: %s",
			   f->parse_err[0] ? f->parse_err : strerror(-f->parse_error));
		return f->parse_error ? f->parse_error : -EIO;
	}
	if (image_gpus_ready(f, f->image) < 0)
		return -ENODEV;
	memcpy(f->prefill->key.id, f->image->v.id, sizeof(f->prefill->key.id));
	f->prefill->have_id = 1;
	gw_op_gpus_begin(op, gw_fastcopy_gpus(f));
	return 0;
}

static void prefill_result(const struct gw_op *op, cJSON *result)
{
	const struct gw_prefill *pf = GW_OP_OF(op, const struct gw_fast_op)->prefill;

	cJSON_AddNumberToObject(result, "ranges", (double)pf->nfds);
	cJSON_AddNumberToObject(result, "vram_bytes", (double)pf->vram_bytes);
	cJSON_AddNumberToObject(result, "data_bytes", (double)pf->data_bytes);
	cJSON_AddNumberToObject(result, "expires_s", GW_PREFILL_TTL_S);
}

static void prefill_finish(struct gw_op *op)
{
	struct gw_fast_op *f = GW_FAST(op);
	struct gw_prefill *pf = f->prefill;
	struct gw_fast_op *waiter = pf->waiter;
	char why[sizeof(op->error)], why_name[sizeof(op->error_name)];

	snprintf(why, sizeof(why), "%s", op->failed ? op->error : "");
	snprintf(why_name, sizeof(why_name), "%s", op->failed ? op->error_name : "");
	gw_op_release(op);
	pf->filling = NULL;
	pf->waiter = NULL;
	if (op->failed) {
		gw_warn("prefill failed: %s", op->error);
		gw_request_fail(op->req, op->error_name, op->error_extra, "%s", op->error);
		gw_prefill_free(pf);
		pf = NULL;
	} else if (!waiter && pf->abandoned) {
		/* The resume it was for ended first (its restore failed): nobody will take it. */
		gw_info("prefill done, but the resume it was for has ended: its VRAM is released");
		gw_request_reply(op->req, gw_op_result_json(op));
		gw_prefill_free(pf);
		pf = NULL;
	} else {
		gw_prefill_ready(pf, f->fds, f->nfds, gw_now_ms() - op->start_ms);
		f->fds = NULL;
		f->nfds = 0;
		pf->vram_bytes = f->image->v.vram_bytes;
		pf->data_bytes = f->image->v.data_bytes;
		pf->from_cache = op->res.image_cache != NULL; /* for the resume's reply */
		gw_info("prefilled %.1f MiB of VRAM (%.1f MiB of data) in %.1f ms",
			(double)pf->vram_bytes / 1048576.0, (double)pf->data_bytes / 1048576.0,
			pf->fill_ms);
		op->res.duration_ms = pf->fill_ms;
		gw_request_reply(op->req, gw_op_result_json(op));
	}
	gw_image_free(&op->d->hostpool, f->image);
	f->image = NULL;
	gw_fastop_free(f);
	if (waiter)
		fast_prefill_handed(waiter, pf, why_name, why);
}

static const struct gw_step prefill_steps[] = {
	{ .name = "read image", .thread = GW_STEP_WORKER, .run = read_image,
	  .check = check_prefill_image },
	GW_FAST_FILL_STEPS(NULL),
};

static const struct gw_op_plan prefill_plan = {
	.operation = "prefill",
	.steps = prefill_steps,
	.nsteps = sizeof(prefill_steps) / sizeof(prefill_steps[0]),
	.gpus = gw_fastop_gpus,
	.total_bytes = gw_fastop_total_bytes,
	.add_result = prefill_result,
	.finish = prefill_finish,
};

int gw_fast_prefill(struct gw_daemon *d, struct gw_request *req, struct gw_fast_params *p)
{
	struct gw_prefill *pf;
	struct gw_fast_op *f;
	struct stat st;

	if (fstat(p->image_fd, &st) < 0) {
		int r = -errno;

		gw_imageio_params_close(p);
		return r;
	}
	if (gw_prefill_find(d, st.st_dev, st.st_ino)) {
		cJSON *result = cJSON_CreateObject();

		gw_imageio_params_close(p);
		if (result)
			cJSON_AddBoolToObject(result, "already", 1);
		gw_request_reply(req, result);
		return 0;
	}
	pf = gw_prefill_new(d, st.st_dev, st.st_ino);
	f = pf ? gw_fastop_new(d, req, 0, GW_FAST_PREFILL, &prefill_plan, p) : NULL;
	if (!f) {
		if (pf)
			gw_prefill_free(pf);
		gw_imageio_params_close(p);
		return -ENOMEM;
	}
	pf->filling = f;
	f->prefill = pf;
	gw_fastop_take_files(f, p);
	gw_info("prefill of a VRAM image (inode %llu) for a restore to come",
		(unsigned long long)st.st_ino);
	gw_op_start(&f->op);
	return 0;
}
