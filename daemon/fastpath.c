/* SPDX-License-Identifier: MIT */
#include "fastpath.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <time.h>
#include <unistd.h>

#include "auth.h"
#include "clock.h"
#include "freeze.h"
#include "gw-ckpt.h"
#include "hostpool.h"
#include "imagecache-ops.h"
#include "imageio.h"
#include "log.h"

#ifndef MADV_POPULATE_WRITE
#define MADV_POPULATE_WRITE 23 /* Linux 5.14 */
#endif

#define GW_AGENT_CALL_TIMEOUT_MS 60000
#define GW_FREEZE_TIMEOUT_MS 5000
#define GW_FAST_MAX_RANGES 4096
#define GW_FAST_MAX_STEPS 16
/* A non-root caller's image may have tables of at most this much: a 141 GB GPU in the smallest
 * chunks needs ~40 MiB. */
#define GW_FAST_USER_TABLE_MAX (64u << 20)

enum fast_kind { FAST_SUSPEND, FAST_RESUME, FAST_PREFILL };

/*
 * A prefill: an image file's VRAM created, filled and checked ahead of its resume (CRIU's plugin
 * asks at POST_FORKING, while CRIU restores the process's memory), held as exported allocations
 * until a Resume of the same file (same inode, same image id) takes them, or it expires.
 */
struct gw_prefill {
	struct gw_prefill *next;
	struct gw_daemon *d;
	dev_t dev;
	ino_t ino;
	uint8_t id[16];
	int have_id;
	int ready;                 /* filled: fds hold the VRAM */
	int *fds;
	size_t nfds;
	uint64_t vram_bytes, data_bytes;
	double fill_ms;
	struct gw_fast_op *filling; /* the prefill operation, while it runs */
	struct gw_fast_op *waiter;  /* a resume of the same image waiting for it */
	int from_cache;             /* filled from the image cache (imagecache-ops.h) */
	struct event *expiry;
};

#define GW_PREFILL_TTL_S 120

struct gw_fast_op {
	struct gw_fast_op *next;
	struct gw_daemon *d;
	struct gw_request *req;
	struct gw_agent *agent;
	enum fast_kind kind;
	pid_t pid;
	struct gw_pin pin;  /* the process, pinned when the request came */
	uid_t owner;        /* who asked */
	unsigned timeout_ms;
	uint64_t gpu_mask;
	double start_ms, step_start_ms;
	struct {
		const char *name;
		double ms;
	} steps[GW_FAST_MAX_STEPS];
	unsigned nsteps;

	pid_t restore_tid;
	struct gw_frozen frozen;
	struct gw_image *image;
	int *fds; /* one per range while they are in flight */
	size_t nfds;
	size_t export_total;  /* ranges the agent announced */
	size_t mapped;        /* ranges mapped back so far */
	int released;     /* the app's VRAM now lives only in the image */
	int caller_froze; /* the caller (CRIU's plugin) holds the threads stopped: no freeze here */
	int locked;       /* locked by us right now */
	int failed;       /* an error is being handled; finish() reports it */
	int need_restore; /* resume: the driver restore runs after the fill */
	int touched;      /* resume: the process's driver state was acted on */
	struct gw_image *parsed; /* resume from a file: read on a worker, taken on the loop */
	struct gw_prefill *prefill; /* FAST_PREFILL: the record it fills */
	double prefill_ms;          /* resume: the fill was done ahead, in this long */
	int prefill_from_cache;     /* ...from the image cache */
	/* Progress messages, when the client asked ("progress": true). */
	int want_progress;
	uint64_t progress_bytes;    /* data bytes moved, added to by the copy lanes */
	const char *running;        /* "copy" or "fill" while it runs, else NULL */
	struct event *progress_ev;
	int parse_error;
	char parse_err[256];
	char error_name[64];
	char error[512];
	cJSON *error_extra;

	/* suspend: the agent's ranges, their mappings here and scans, before the image exists */
	struct gw_vimg_range *xranges;
	size_t nx;
	struct gw_copy_map *maps;
	struct gw_chunk_scan **scans;
	int sparse;
	uint64_t chunk_bytes;
	int image_fd; /* suspend into this file (-1: into pinned memory) */
	int seg_fds[GW_VIMG_MAX_SEGMENTS]; /* ...and these segment files (none: one file) */
	unsigned nseg_fds;
	int copy_abort; /* the copy round only unmaps (set before it is queued) */

	/* worker results */
	CUresult cu;
	const char *cu_call;
	int jobs_left, job_error;
	char job_err[256];
	pthread_mutex_t job_lock;
	uint64_t io_ns[GW_GPU_MAX]; /* file I/O time per GPU job */
	struct gw_copy_stats cstats[GW_GPU_MAX]; /* where each GPU job's time went */
};

/* ---- small helpers ---- */

/* News for a client that asked: the step (just done, or running), the data bytes moved. */
static void send_progress(struct gw_fast_op *op, const char *step)
{
	cJSON *p;
	uint64_t total = op->image ? op->image->v.data_bytes : op->agent ? op->agent->bytes : 0;

	if (!op->want_progress || !op->req)
		return;
	p = cJSON_CreateObject();
	if (!p)
		return;
	cJSON_AddStringToObject(p, "step", step);
	cJSON_AddNumberToObject(p, "done_bytes",
				(double)__atomic_load_n(&op->progress_bytes, __ATOMIC_RELAXED));
	cJSON_AddNumberToObject(p, "total_bytes", (double)total);
	cJSON_AddNumberToObject(p, "elapsed_ms", gw_now_ms() - op->start_ms);
	gw_request_progress(op->req, p);
}

static void on_progress_tick(evutil_socket_t fd, short what, void *arg)
{
	struct gw_fast_op *op = arg;

	(void)fd;
	(void)what;
	if (op->running)
		send_progress(op, op->running);
}

static void progress_start(struct gw_fast_op *op)
{
	struct timeval tv = { 0, GW_PROGRESS_INTERVAL_MS * 1000 };

	if (!op->want_progress)
		return;
	op->progress_ev = event_new(op->d->base, -1, EV_PERSIST, on_progress_tick, op);
	if (op->progress_ev)
		event_add(op->progress_ev, &tv);
}

static void progress_stop(struct gw_fast_op *op)
{
	if (op->progress_ev)
		event_free(op->progress_ev);
	op->progress_ev = NULL;
}

static void step_done(struct gw_fast_op *op, const char *name)
{
	double now = gw_now_ms();

	if (op->nsteps < GW_FAST_MAX_STEPS) {
		op->steps[op->nsteps].name = name;
		op->steps[op->nsteps].ms = now - op->step_start_ms;
		op->nsteps++;
	}
	op->step_start_ms = now;
	op->running = NULL;
	send_progress(op, name);
}

__attribute__((format(printf, 3, 4))) static void set_error(struct gw_fast_op *op,
							    const char *name, const char *fmt, ...)
{
	va_list ap;

	if (op->failed)
		return; /* keep the first cause */
	op->failed = 1;
	snprintf(op->error_name, sizeof(op->error_name), "%s", name);
	va_start(ap, fmt);
	vsnprintf(op->error, sizeof(op->error), fmt, ap);
	va_end(ap);
}

static void set_cuda_error(struct gw_fast_op *op)
{
	char text[160];

	if (!op->error_extra) {
		op->error_extra = cJSON_CreateObject();
		if (op->error_extra)
			cJSON_AddNumberToObject(op->error_extra, "cuda_error", op->cu);
	}
	set_error(op, gw_error_for_errno(gw_cuda_errno(op->cu)), "%s(pid %d): %s", op->cu_call,
		  op->pid, gw_cuda_describe(op->d->cuda, op->cu, text, sizeof(text)));
}

static void close_fds(struct gw_fast_op *op)
{
	for (size_t i = 0; i < op->nfds; i++)
		if (op->fds[i] >= 0)
			close(op->fds[i]);
	free(op->fds);
	op->fds = NULL;
	op->nfds = 0;
}

static void image_unmap(struct gw_image *image)
{
	if (image && image->map) {
		munmap(image->map, image->map_bytes);
		image->map = NULL;
	}
}

static void image_free(struct gw_daemon *d, struct gw_image *image)
{
	if (!image)
		return;
	image_unmap(image);
	gw_imagecache_detach(d, image); /* image cache hook: borrowed blocks are not the pool's */
	if (image->blocks)
		gw_hostpool_give(&d->hostpool, image->blocks, image->nblocks);
	free(image->blocks);
	gw_imageio_files_close(image);
	gw_vimg_clear(&image->v);
	free(image);
}

static void export_list_free(struct gw_fast_op *op)
{
	for (size_t i = 0; op->scans && i < op->nx; i++)
		free(op->scans[i]);
	free(op->scans);
	free(op->maps);
	free(op->xranges);
	op->scans = NULL;
	op->maps = NULL;
	op->xranges = NULL;
	op->nx = 0;
}

/* ---- running steps ---- */

typedef void (*op_step_fn)(struct gw_fast_op *op);

struct op_job {
	struct gw_fast_op *op;
	void (*work)(struct gw_fast_op *op, struct op_job *job);
	op_step_fn next;
	unsigned gpu; /* copy jobs */
};

static void op_job_work(void *data)
{
	struct op_job *job = data;

	job->work(job->op, job);
}

static void op_job_done(void *data)
{
	struct op_job *job = data;
	struct gw_fast_op *op = job->op;
	op_step_fn next = job->next;

	free(job);
	if (--op->jobs_left == 0)
		next(op);
}

static int submit(struct gw_fast_op *op, void (*work)(struct gw_fast_op *, struct op_job *),
		  op_step_fn next, unsigned gpu)
{
	struct op_job *job = calloc(1, sizeof(*job));
	int r;

	if (!job)
		return -ENOMEM;
	job->op = op;
	job->work = work;
	job->next = next;
	job->gpu = gpu;
	op->jobs_left++;
	r = gw_worker_submit_class(op->d->workers, op->owner == 0 ? GW_WORK_PRIVILEGED : GW_WORK_USER,
				   op_job_work, op_job_done, job);
	if (r < 0) {
		op->jobs_left--;
		free(job);
	}
	return r;
}

static void finish(struct gw_fast_op *op);
static void agent_remove(struct gw_daemon *d, struct gw_agent *a);

/* Run work on a worker, then next on the loop; on a queueing failure go straight to finish. */
static void run(struct gw_fast_op *op, void (*work)(struct gw_fast_op *, struct op_job *),
		op_step_fn next)
{
	int r = submit(op, work, next, 0);

	if (r < 0) {
		set_error(op, GW_ERROR_INTERNAL, "cannot queue work: %s",
			  r == -ESHUTDOWN ? "gpu-warmd is stopping" : strerror(-r));
		finish(op);
	}
}

/* ---- driver steps (workers) ---- */

/* Each driver step acts on the process pinned at dispatch, or on nothing: a pid whose process
 * exited may name another process by now. */
static int still_there(struct gw_fast_op *op)
{
	if (gw_pin_alive(&op->pin))
		return 1;
	op->cu = CUDA_ERROR_NOT_FOUND;
	op->cu_call = "(the process exited)";
	return 0;
}

/* The steps of the shared checkpoint sequence (common/gw-ckpt.h), observed: each acts on the
 * pinned process or on nothing. */
static int before_driver_step(void *ctx, enum gw_ckpt_step step)
{
	(void)step;
	return !still_there(ctx);
}

static void driver_step(struct gw_fast_op *op, enum gw_ckpt_step step)
{
	struct gw_ckpt_args args = { .lock_timeout_ms = op->timeout_ms };
	struct gw_ckpt_observer obs = { before_driver_step, NULL, op };
	struct gw_ckpt_outcome out;

	if (gw_ckpt_single(op->d->cuda, op->pid, step, &args, &obs, &out) < 0 && !out.stopped) {
		op->cu = out.result;
		op->cu_call = gw_ckpt_step_call(out.failed_step);
	} else if (!out.stopped) {
		op->cu = CUDA_SUCCESS;
	}
}

static void work_lock(struct gw_fast_op *op, struct op_job *job)
{
	int tid = 0;

	(void)job;
	driver_step(op, GW_CKPT_LOCK);
	if (op->cu == CUDA_SUCCESS &&
	    op->d->cuda->cuCheckpointProcessGetRestoreThreadId(op->pid, &tid) == CUDA_SUCCESS)
		op->restore_tid = tid;
}

static void work_unlock(struct gw_fast_op *op, struct op_job *job)
{
	(void)job;
	driver_step(op, GW_CKPT_UNLOCK);
}

/* Not gw_ckpt_suspend(): a failed checkpoint here is not unlocked and left running, the VRAM is
 * in the image only: suspend_checkpointed() unlocks and maps it back. */
static void work_lock_checkpoint(struct gw_fast_op *op, struct op_job *job)
{
	(void)job;
	driver_step(op, GW_CKPT_LOCK);
	if (op->cu != CUDA_SUCCESS)
		return;
	op->locked = 1;
	driver_step(op, GW_CKPT_CHECKPOINT);
}

static void work_restore_tid(struct gw_fast_op *op, struct op_job *job)
{
	int tid = 0;

	(void)job;
	if (!still_there(op))
		return;
	op->cu_call = "cuCheckpointProcessGetRestoreThreadId";
	op->cu = op->d->cuda->cuCheckpointProcessGetRestoreThreadId(op->pid, &tid);
	op->restore_tid = tid;
}

static void work_restore_unlock(struct gw_fast_op *op, struct op_job *job)
{
	struct gw_ckpt_observer obs = { before_driver_step, NULL, op };
	struct gw_ckpt_outcome out;

	(void)job;
	op->cu = CUDA_SUCCESS;
	if (gw_ckpt_resume(op->d->cuda, op->pid, NULL, &obs, &out) < 0 && !out.stopped) {
		op->cu = out.result;
		op->cu_call = gw_ckpt_step_call(out.failed_step);
	}
}

/* ---- copy steps (one worker job per GPU, in parallel) ---- */

static struct gw_gpu *range_gpu(struct gw_daemon *d, const struct gw_vimg_range *r)
{
	CUuuid uuid;

	memcpy(uuid.bytes, r->uuid, sizeof(uuid.bytes));
	return gw_gpu_find_uuid(d->gpus, d->ngpus, &uuid);
}

static void engine_for(struct gw_fast_op *op, unsigned gpu, struct gw_copy_engine *e)
{
	struct gw_gpu *g = &op->d->gpus[gpu];

	memset(e, 0, sizeof(*e));
	e->cuda = op->d->cuda;
	e->context = g->handles.context;
	e->device = g->device;
	e->streams = g->handles.streams;
	e->nstreams = g->handles.nstreams;
	e->scan = g->handles.scan;
	e->staging = g->handles.staging.buffers;
	e->nstaging = g->handles.staging.count;
	e->staging_bytes = g->handles.staging.buffer_bytes;
	e->staging_lock = &g->staging_lock;
}

static void store_for(struct gw_image *image, struct gw_copy_store *s)
{
	memset(s, 0, sizeof(*s));
	s->blocks = image->blocks;
	s->block_bytes = GW_HOSTPOOL_BLOCK_BYTES;
	s->fd = image->fd;
	s->map = image->map;
	s->data_offset = image->v.data_offset;
	for (unsigned k = 0; k < image->nseg_fds; k++)
		s->seg_fds[k] = image->seg_fds[k];
	s->nsegments = image->nseg_fds;
	if (s->nsegments)
		s->fd = -1; /* the head holds no data */
	if (image->cached) { /* image cache hook: the data is in the cache's blocks */
		s->fd = -1;
		s->nsegments = 0;
	}
}

/* The ranges being moved: the export list while suspending, the image's while resuming. */
static size_t op_nranges(const struct gw_fast_op *op)
{
	return op->xranges ? op->nx : op->image ? op->image->v.nranges : 0;
}

static const struct gw_vimg_range *op_range(const struct gw_fast_op *op, size_t i)
{
	return op->xranges ? &op->xranges[i] : &op->image->v.ranges[i];
}

static int on_gpu(struct gw_fast_op *op, size_t i, unsigned gpu)
{
	struct gw_gpu *g = range_gpu(op->d, op_range(op, i));

	return g && g->index == gpu;
}

/* One scan-results buffer for all of a job's ranges, sized for its largest. */
static void engine_scan_buffer(struct gw_fast_op *op, unsigned gpu, struct gw_copy_engine *e,
			       uint64_t chunk_bytes)
{
	uint64_t most = 0;

	for (size_t i = 0; i < op_nranges(op); i++) {
		uint64_t n = (op_range(op, i)->size + chunk_bytes - 1) / chunk_bytes;

		if (on_gpu(op, i, gpu) && n > most)
			most = n;
	}
	gw_copy_scan_buffer(e, most);
}

/* Errors of the image rather than of the driver (which maps most of its own to -EIO): a checksum
 * mismatch, a file cut short or one that cannot grow. */
static int image_errno(int r)
{
	return r == -EILSEQ || r == -ENODATA || r == -ENOSPC || r == -EFBIG || r == -EDQUOT;
}

static void job_fail(struct gw_fast_op *op, struct op_job *job, int r, const char *err)
{
	/* Jobs of different GPUs may fail at once: keep one message (all are logged). */
	pthread_mutex_lock(&op->job_lock);
	if (!op->job_error) {
		op->job_error = r;
		snprintf(op->job_err, sizeof(op->job_err), "GPU %u: %s", job->gpu, err);
	}
	pthread_mutex_unlock(&op->job_lock);
}

/* Suspend, first round: map the app's memory here and scan it. The mappings stay for the copy. */
static void work_dump_scan(struct gw_fast_op *op, struct op_job *job)
{
	struct gw_copy_engine e;
	char err[256] = "";
	int r = 0;

	engine_for(op, job->gpu, &e);
	if (op->sparse)
		engine_scan_buffer(op, job->gpu, &e, op->chunk_bytes);
	for (size_t i = 0; i < op->nx && r == 0; i++) {
		const struct gw_vimg_range *x = &op->xranges[i];

		if (!on_gpu(op, i, job->gpu))
			continue;
		r = gw_copy_import(&e, &op->maps[i], op->fds[i], x->size, err, sizeof(err));
		if (r == 0 && op->sparse && e.scan) {
			op->scans[i] = calloc((x->size + op->chunk_bytes - 1) / op->chunk_bytes,
					      sizeof(**op->scans));
			r = op->scans[i] ? gw_copy_scan(&e, &op->maps[i], op->chunk_bytes,
							op->scans[i], err, sizeof(err)) :
					   -ENOMEM;
		}
	}
	gw_copy_scan_buffer_free(&e);
	if (r < 0)
		job_fail(op, job, r, err);
}

/* The ranges of the op on one GPU, as a copy set over maps (indexed by range index). */
static int gpu_set(struct gw_fast_op *op, unsigned gpu, const struct gw_vimg *v,
		   struct gw_copy_map *maps, struct gw_copy_set *set, uint32_t **ret_list)
{
	uint32_t *list = calloc(op_nranges(op) ? op_nranges(op) : 1, sizeof(*list));
	unsigned n = 0;

	*ret_list = list;
	if (!list)
		return -ENOMEM;
	for (size_t i = 0; i < op_nranges(op); i++)
		if (on_gpu(op, i, gpu))
			list[n++] = (uint32_t)i;
	set->v = v;
	set->ranges = list;
	set->n = n;
	set->maps = maps;
	memset(&op->cstats[gpu], 0, sizeof(op->cstats[gpu])); /* a resume after a failed suspend */
	op->cstats[gpu].ran = 1;
	op->cstats[gpu].ranges = n;
	for (unsigned k = 0; k < n; k++)
		op->cstats[gpu].data_bytes += v->ranges[list[k]].data_bytes;
	return 0;
}

/* Suspend, second round: the data chunks of all the GPU's ranges into the image at once (unless
 * the op is failing), then unmap: the daemon must never keep the app's memory mapped
 * (DESIGN.md's first trap). */
static void work_dump_copy(struct gw_fast_op *op, struct op_job *job)
{
	struct gw_copy_stats *st = &op->cstats[job->gpu];
	struct gw_copy_engine e;
	struct gw_copy_store s;
	struct gw_copy_set set;
	uint32_t *list = NULL;
	char err[256] = "";
	double t;
	int r = 0;

	engine_for(op, job->gpu, &e);
	if (!op->copy_abort) {
		store_for(op->image, &s);
		s.progress = &op->progress_bytes;
		r = gpu_set(op, job->gpu, &op->image->v, op->maps, &set, &list);
		t = gw_now_ms();
		if (r == 0)
			r = gw_copy_out_set(&e, &set, &s, err, sizeof(err));
		else
			snprintf(err, sizeof(err), "out of memory");
		st->copy_ms = gw_now_ms() - t;
		gw_copy_stats_add(st, &s);
		op->io_ns[job->gpu] = s.io_ns;
	}
	t = gw_now_ms();
	for (size_t i = 0; i < op->nx; i++)
		if (on_gpu(op, i, job->gpu))
			gw_copy_unmap(&e, &op->maps[i]);
	st->unmap_ms = gw_now_ms() - t;
	free(list);
	if (r < 0)
		job_fail(op, job, r, err);
}

/* Resume: new memory for every range of the GPU, then all of it filled from the image at once
 * (zero runs memset, data pieces by every I/O lane), then each range checked against its
 * checksums and exported for the agent. */
static void work_fill(struct gw_fast_op *op, struct op_job *job)
{
	const struct gw_vimg *v = &op->image->v;
	struct gw_copy_stats *st = &op->cstats[job->gpu];
	int verify = (v->flags & GW_VIMG_F_SUMS) != 0;
	struct gw_copy_map *maps = calloc(v->nranges, sizeof(*maps));
	struct gw_copy_engine e;
	struct gw_copy_store s;
	struct gw_copy_set set = { 0 };
	uint32_t *list = NULL;
	char err[256] = "";
	double t;
	int r = 0;

	engine_for(op, job->gpu, &e);
	store_for(op->image, &s);
	s.progress = &op->progress_bytes;
	if (verify)
		engine_scan_buffer(op, job->gpu, &e, v->chunk_bytes);
	if (verify && !e.scan) {
		verify = 0;
		gw_warn("GPU %u has no chunk scan: the VRAM of pid %d is restored unverified",
			job->gpu, op->pid);
	}
	r = maps ? gpu_set(op, job->gpu, v, maps, &set, &list) : -ENOMEM;
	if (r < 0)
		snprintf(err, sizeof(err), "out of memory");
	t = gw_now_ms();
	for (unsigned k = 0; k < set.n && r == 0; k++)
		r = gw_copy_create(&e, &maps[list[k]], v->ranges[list[k]].size, err, sizeof(err));
	st->create_ms = gw_now_ms() - t;
	t = gw_now_ms();
	if (r == 0)
		r = gw_copy_in_set(&e, &set, &s, err, sizeof(err));
	st->copy_ms = gw_now_ms() - t;
	gw_copy_stats_add(st, &s);
	t = gw_now_ms();
	for (unsigned k = 0; k < set.n && r == 0 && verify; k++)
		r = gw_copy_verify(&e, v, list[k], &maps[list[k]], err, sizeof(err));
	st->verify_ms = gw_now_ms() - t;
	t = gw_now_ms();
	for (unsigned k = 0; k < set.n && r == 0; k++)
		r = gw_copy_export(&e, &maps[list[k]], &op->fds[list[k]], err, sizeof(err));
	st->export_ms = gw_now_ms() - t;
	t = gw_now_ms();
	for (unsigned k = 0; maps && k < set.n; k++)
		gw_copy_unmap(&e, &maps[list[k]]);
	st->unmap_ms = gw_now_ms() - t;
	op->io_ns[job->gpu] = s.io_ns;
	gw_copy_scan_buffer_free(&e);
	free(list);
	free(maps);
	if (r < 0)
		job_fail(op, job, r, err);
}

static uint64_t op_gpus(struct gw_fast_op *op)
{
	uint64_t mask = 0;

	for (size_t i = 0; i < op_nranges(op); i++) {
		struct gw_gpu *g = range_gpu(op->d, op_range(op, i));

		if (g)
			mask |= (uint64_t)1 << g->index;
	}
	return mask;
}

/* One job per GPU that holds ranges of this op; next runs on the loop when all are done. */
static int submit_per_gpu(struct gw_fast_op *op, void (*work)(struct gw_fast_op *, struct op_job *),
			  op_step_fn next)
{
	uint64_t mask = op_gpus(op);

	for (unsigned g = 0; g < op->d->ngpus; g++) {
		if (!(mask & ((uint64_t)1 << g)))
			continue;
		if (submit(op, work, next, g) < 0) {
			op->job_error = -ENOMEM;
			snprintf(op->job_err, sizeof(op->job_err), "cannot queue copies");
			break;
		}
	}
	return op->jobs_left > 0 ? 0 : -EIO;
}

static uint64_t op_io_ns(const struct gw_fast_op *op)
{
	uint64_t ns = 0;

	for (unsigned g = 0; g < GW_GPU_MAX; g++)
		ns = op->io_ns[g] > ns ? op->io_ns[g] : ns; /* GPUs run in parallel */
	return ns;
}

/* ---- agent calls ---- */

typedef void (*agent_done_fn)(struct gw_fast_op *op, const struct gw_message *msg, int *fds,
			      unsigned nfds);

struct agent_call {
	struct gw_fast_op *op;
	agent_done_fn done;
};

static void on_agent_reply(void *data, const struct gw_message *msg, int *fds, unsigned nfds)
{
	struct agent_call *call = data;
	struct gw_fast_op *op = call->op;
	agent_done_fn done = call->done;

	free(call);
	if (!msg) {
		set_error(op, GW_ERROR_AGENT, "the agent of pid %d did not answer (it hung up or "
			  "timed out)", op->pid);
		for (unsigned i = 0; i < nfds; i++)
			close(fds[i]);
		done(op, NULL, NULL, 0);
		return;
	}
	if (msg->kind == GW_MESSAGE_ERROR) {
		set_error(op, GW_ERROR_AGENT, "the agent of pid %d failed: %s", op->pid,
			  msg->error_message ? msg->error_message : "?");
		for (unsigned i = 0; i < nfds; i++)
			close(fds[i]);
		done(op, NULL, NULL, 0);
		return;
	}
	done(op, msg, fds, nfds);
}

static void call_agent(struct gw_fast_op *op, const char *method, cJSON *params, const int *fds,
		       unsigned nfds, agent_done_fn done)
{
	struct agent_call *call = calloc(1, sizeof(*call));
	int r = -ENOMEM;

	if (call && op->agent->conn) {
		call->op = op;
		call->done = done;
		r = gw_conn_call(op->agent->conn, method, params, fds, nfds,
				 GW_AGENT_CALL_TIMEOUT_MS, on_agent_reply, call);
	} else if (call) {
		r = -ENOTCONN;
	}
	cJSON_Delete(params);
	if (r < 0) {
		free(call);
		set_error(op, GW_ERROR_AGENT, "cannot reach the agent of pid %d: %s", op->pid,
			  strerror(-r));
		done(op, NULL, NULL, 0);
	}
}

/* ---- the ending ---- */

/* "steps": [{"step", "duration_ms"}] of the operation, into result. */
static void add_steps(cJSON *result, const struct gw_fast_op *op)
{
	cJSON *steps = cJSON_AddArrayToObject(result, "steps");

	for (unsigned i = 0; steps && i < op->nsteps; i++) {
		cJSON *st = cJSON_CreateObject();

		if (!st)
			break;
		cJSON_AddStringToObject(st, "step", op->steps[i].name);
		cJSON_AddNumberToObject(st, "duration_ms", op->steps[i].ms);
		cJSON_AddItemToArray(steps, st);
	}
}

static cJSON *op_result(struct gw_fast_op *op, const char *state)
{
	const struct gw_vimg *v = op->image ? &op->image->v : NULL;
	cJSON *result = cJSON_CreateObject();
	double copy_ms = 0;

	if (!result)
		return NULL;
	cJSON_AddNumberToObject(result, "pid", op->pid);
	cJSON_AddStringToObject(result, "operation", op->kind == FAST_SUSPEND ? "suspend" : "resume");
	cJSON_AddStringToObject(result, "state", state);
	cJSON_AddStringToObject(result, "path", "fast");
	cJSON_AddNumberToObject(result, "duration_ms", gw_now_ms() - op->start_ms);
	cJSON_AddNumberToObject(result, "vram_bytes", v ? (double)v->vram_bytes : 0);
	cJSON_AddNumberToObject(result, "ranges", v ? (double)v->nranges : 0);
	if (v) {
		cJSON_AddNumberToObject(result, "data_bytes", (double)v->data_bytes);
		cJSON_AddNumberToObject(result, "zero_bytes", (double)v->zero_bytes);
		cJSON_AddNumberToObject(result, "chunk_bytes", (double)v->chunk_bytes);
		cJSON_AddBoolToObject(result, "verified", (v->flags & GW_VIMG_F_SUMS) != 0);
		cJSON_AddStringToObject(result, "image", op->image->fd >= 0 ? "file" : "memory");
		if (op->image->fd >= 0)
			cJSON_AddNumberToObject(result, "image_bytes", (double)v->file_bytes);
		if (op->image->fd >= 0 && op->kind == FAST_SUSPEND)
			cJSON_AddStringToObject(result, "file_writes",
						op->image->written_mapped ? "mapped" : "pwrite");
	}
	add_steps(result, op);
	for (unsigned i = 0; i < op->nsteps; i++)
		if (strcmp(op->steps[i].name, "copy") == 0 || strcmp(op->steps[i].name, "fill") == 0)
			copy_ms = op->steps[i].ms;
	if (op->prefill_ms > 0) {
		cJSON_AddBoolToObject(result, "prefilled", 1);
		cJSON_AddNumberToObject(result, "prefill_ms", op->prefill_ms);
	}
	/* Of "copy" or "fill": the data bytes that crossed the link (zero chunks did not). */
	if (copy_ms > 0 && v)
		cJSON_AddNumberToObject(result, "copy_gb_per_s", (double)v->data_bytes / 1e6 / copy_ms);
	if (op_io_ns(op) > 0)
		cJSON_AddNumberToObject(result, "file_io_ms", (double)op_io_ns(op) / 1e6);
	gw_imageio_result(result, op->image, op->cstats, op->d->ngpus, op->kind == FAST_SUSPEND);
	/* image cache hook: "image_cache": "hit" */
	gw_imagecache_result(result, op->image, op->prefill_from_cache);
	return result;
}

/* Speeds the daemon measured last, written into the images it makes; inspect predicts a
 * restore's time from them. A fill is file reads (data bytes) plus device-side work (creating,
 * zeroing, copying and checking every VRAM byte). */
static void remember_speeds(struct gw_fast_op *op)
{
	const struct gw_vimg *v = &op->image->v;
	struct gw_daemon *d = op->d;
	double fill_s = 0, fixed_ms = 0, io_s = (double)op_io_ns(op) / 1e9;

	if (op->kind != FAST_RESUME || op->failed)
		return;
	for (unsigned i = 0; i < op->nsteps; i++) {
		if (strcmp(op->steps[i].name, "fill") == 0)
			fill_s = op->steps[i].ms / 1e3;
		else
			fixed_ms += op->steps[i].ms;
	}
	if (op->image->fd < 0 && fill_s > 0 && v->data_bytes >= (64u << 20))
		d->speeds.fill_bps = (double)v->data_bytes / fill_s;
	if (op->image->fd >= 0 && io_s > 0 && v->data_bytes >= (64u << 20))
		d->speeds.file_read_bps = (double)v->data_bytes / io_s;
	if (op->image->fd >= 0 && fill_s > io_s && v->vram_bytes >= (1u << 30))
		d->speeds.device_bps = (double)v->vram_bytes / (fill_s - io_s);
	d->speeds.restore_fixed_ms = fixed_ms;
}

static void prefill_done(struct gw_fast_op *op);

static void finish(struct gw_fast_op *op)
{
	struct gw_daemon *d = op->d;

	if (op->kind == FAST_PREFILL) {
		prefill_done(op);
		return;
	}
	struct gw_op_stats *stats = &d->stats[op->kind == FAST_SUSPEND ? GW_OP_SUSPEND : GW_OP_RESUME];
	double total = gw_now_ms() - op->start_ms;

	progress_stop(op);
	gw_thaw(&op->frozen);
	close_fds(op);
	export_list_free(op);
	for (struct gw_fast_op **p = &d->fast_ops; *p; p = &(*p)->next)
		if (*p == op) {
			*p = op->next;
			break;
		}
	for (unsigned i = 0; i < d->ngpus; i++)
		if (op->gpu_mask & ((uint64_t)1 << i))
			d->gpus[i].in_flight--;
	op->agent->busy = 0;
	gw_quota_give(&d->quota, op->owner);
	gw_pin_close(&op->pin);
	gw_op_stats_record(stats, !op->failed, total,
			   !op->failed && op->image ? op->image->v.data_bytes : 0);
	if (op->failed) {
		gw_warn("fast %s of pid %d failed: %s", op->kind == FAST_SUSPEND ? "suspend" : "resume",
			op->pid, op->error);
		gw_request_fail(op->req, op->error_name, op->error_extra, "%s", op->error);
	} else {
		remember_speeds(op);
		gw_info("fast %s of pid %d: %.1f MiB (%.1f MiB of data) in %.1f ms",
			op->kind == FAST_SUSPEND ? "suspend" : "resume", op->pid,
			(double)op->image->v.vram_bytes / 1048576.0,
			(double)op->image->v.data_bytes / 1048576.0, total);
		gw_request_reply(op->req, op_result(op, op->kind == FAST_SUSPEND ? "checkpointed" :
										  "running"));
		/* image cache hook: a dump's files are cached too (no-op for a memory image) */
		if (op->kind == FAST_SUSPEND)
			gw_imagecache_offer(d, op->image, op->owner);
		cJSON_Delete(op->error_extra);
	}
	/* A suspend that failed leaves no half-written image behind. */
	if (op->kind == FAST_SUSPEND && op->failed && !op->released && op->image)
		gw_imageio_files_truncate(op->image);
	/* A resume that failed before acting on the process leaves it as it was: an image read
	 * from a file for it is not attached (the file is still there); one held already stays. */
	if (op->kind == FAST_RESUME && op->failed && !op->touched && op->image != op->agent->image) {
		image_free(d, op->image);
		op->image = NULL;
		op->released = 0;
	}
	image_free(d, op->parsed);
	/* Where the VRAM's only copy is the image, keep it for the next resume; else drop it. */
	if (op->released && op->agent->image != op->image) {
		image_free(d, op->agent->image);
		op->agent->image = op->image;
	} else if (!op->released) {
		if (op->agent->image == op->image)
			op->agent->image = NULL;
		image_free(d, op->image);
	}
	if (op->image_fd >= 0)
		close(op->image_fd);
	for (unsigned k = 0; k < op->nseg_fds; k++)
		close(op->seg_fds[k]);
	/* Its process exited meanwhile: nothing held for it may outlive it. */
	if (op->agent->gone)
		agent_remove(d, op->agent);
	pthread_mutex_destroy(&op->job_lock);
	free(op);
	gw_daemon_gpus_changed(d);
}

/* ---- resume (also the way back from a suspend that failed after the release) ---- */

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

static void map_next(struct gw_fast_op *op);

static void resume_mapped(struct gw_fast_op *op, const struct gw_message *msg, int *fds,
			  unsigned nfds)
{
	size_t total = op->image->v.nranges, n = total - op->mapped;

	for (unsigned i = 0; i < nfds; i++)
		close(fds[i]);
	if (!msg) {
		finish(op); /* the agent failed: the VRAM stays in the image */
		return;
	}
	op->mapped += n < GW_FRAME_MAX_FDS ? n : GW_FRAME_MAX_FDS;
	if (op->mapped < total) {
		map_next(op);
		return;
	}
	close_fds(op);
	op->released = 0; /* the app has its VRAM back */
	/* ...as memory this daemon made: a driver checkpoint of it could never be restored. The
	 * agent will say so too, but not before its next update. */
	if (op->agent->foreign < total)
		op->agent->foreign = total;
	if (!op->failed)
		step_done(op, "map");
	finish(op);
}

/* Hand the refilled memory to the agent, GW_FRAME_MAX_FDS ranges per call. */
static void map_next(struct gw_fast_op *op)
{
	size_t n = op->image->v.nranges - op->mapped;

	if (n > GW_FRAME_MAX_FDS)
		n = GW_FRAME_MAX_FDS;
	call_agent(op, GW_METHOD_AGENT_MAP, ranges_json(&op->image->v, op->mapped, n),
		   op->fds + op->mapped, (unsigned)n, resume_mapped);
}

static void resume_unlocked(struct gw_fast_op *op)
{
	if (op->cu != CUDA_SUCCESS) {
		set_cuda_error(op);
		finish(op);
		return;
	}
	step_done(op, "restore");
	op->mapped = 0;
	map_next(op);
}

static int freeze_app(struct gw_fast_op *op)
{
	pid_t keep[2] = { op->agent->tid, op->restore_tid };
	int r;

	if (op->caller_froze)
		return 0;
	if (!gw_pin_alive(&op->pin)) {
		set_error(op, GW_ERROR_NO_SUCH_PROCESS, "pid %d exited", op->pid);
		return -ESRCH;
	}
	r = gw_freeze(op->pid, keep, op->restore_tid > 0 ? 2 : 1, GW_FREEZE_TIMEOUT_MS,
		      &op->frozen);

	if (r < 0)
		set_error(op, r == -EPERM ? GW_ERROR_PERMISSION_DENIED : GW_ERROR_INTERNAL,
			  "cannot freeze the threads of pid %d: %s%s", op->pid, strerror(-r),
			  r == -EPERM ? " (gpu-warmd needs to be root or have CAP_SYS_PTRACE)" : "");
	return r;
}

static void resume_have_tid(struct gw_fast_op *op)
{
	if (op->cu != CUDA_SUCCESS) {
		set_cuda_error(op);
		finish(op);
		return;
	}
	if (freeze_app(op) < 0) {
		finish(op);
		return;
	}
	step_done(op, "freeze");
	op->touched = 1;
	run(op, work_restore_unlock, resume_unlocked);
}

/* The VRAM is refilled and checked before the process is touched: a bad image leaves it
 * checkpointed (and restorable from a good one). Then the driver restore, then the agent maps. */
static void resume_filled(struct gw_fast_op *op)
{
	if (op->job_error) {
		set_error(op, image_errno(op->job_error) ? GW_ERROR_IMAGE : GW_ERROR_CUDA,
			  "refilling VRAM failed: %s", op->job_err);
		finish(op);
		return;
	}
	/* A prefilled resume's "fill" is its wait for the prefill (0 when it was done already). */
	if (!op->failed)
		step_done(op, op->prefill_ms > 0 ? "prefill wait" : "fill");
	if (op->kind == FAST_PREFILL) {
		finish(op);
		return;
	}
	if (!op->need_restore) {
		op->mapped = 0;
		map_next(op);
	} else if (op->caller_froze) {
		/* CRIU's plugin stopped every thread and lets the agent and the CUDA restore
		 * thread run for this call: the restore thread's id is not needed here. */
		op->cu = CUDA_SUCCESS;
		resume_have_tid(op);
	} else {
		run(op, work_restore_tid, resume_have_tid);
	}
}

/* Create + fill new memory for every range; then the agent maps it. */
static void resume_fill(struct gw_fast_op *op)
{
	size_t n = op->image->v.nranges;

	/* image cache hook: the files' data from RAM when the cache holds exactly these files */
	if (gw_imagecache_attach(op->d, op->image, op->owner))
		step_done(op, "cache hit");
	close_fds(op);
	op->fds = calloc(n, sizeof(*op->fds));
	if (!op->fds) {
		set_error(op, GW_ERROR_INTERNAL, "out of memory");
		finish(op);
		return;
	}
	for (size_t i = 0; i < n; i++)
		op->fds[i] = -1;
	op->nfds = n;
	op->job_error = 0;
	op->running = "fill";
	if (submit_per_gpu(op, work_fill, resume_filled) < 0) {
		set_error(op, GW_ERROR_CUDA, "refilling VRAM failed: %s", op->job_err);
		finish(op);
	}
}

/* ---- suspend ---- */

static void suspend_checkpointed(struct gw_fast_op *op)
{
	if (op->cu != CUDA_SUCCESS) {
		set_cuda_error(op);
		/* The VRAM is only in the image: unlock if we hold the lock, then map it back. */
		if (op->locked) {
			op->locked = 0;
			run(op, work_unlock, resume_fill);
		} else {
			resume_fill(op);
		}
		return;
	}
	op->locked = 0;
	step_done(op, "checkpoint");
	finish(op);
}

static void suspend_released(struct gw_fast_op *op, const struct gw_message *msg, int *fds,
			     unsigned nfds)
{
	for (unsigned i = 0; i < nfds; i++)
		close(fds[i]);
	if (!msg) {
		/* Some ranges may be gone from VRAM: put them all back from the image. */
		op->released = 1;
		resume_fill(op);
		return;
	}
	op->released = 1;
	step_done(op, "release");
	run(op, work_lock_checkpoint, suspend_checkpointed);
}

/* The image is complete in its store; in a file, its header and tables go last, so that a file
 * whose writing was cut short never reads as an image. */
static int image_seal(struct gw_fast_op *op)
{
	struct gw_vimg *v = &op->image->v;
	struct gw_daemon *d = op->d;
	uint64_t io_ns = op_io_ns(op);
	uint8_t *buf = NULL;
	size_t len = 0;
	int r;

	if (op->image->fd < 0)
		return 0;
	double copy_s = (gw_now_ms() - op->step_start_ms) / 1e3;

	v->write_bps = io_ns ? (uint64_t)((double)v->data_bytes / ((double)io_ns / 1e9)) : 0;
	v->copy_out_bps = copy_s > 0 ? (uint64_t)((double)v->data_bytes / copy_s) : 0;
	v->copy_in_bps = (uint64_t)d->speeds.fill_bps;
	v->read_bps = (uint64_t)d->speeds.file_read_bps;
	v->device_bps = (uint64_t)d->speeds.device_bps;
	v->restore_fixed_ns = (uint64_t)(d->speeds.restore_fixed_ms * 1e6);
	r = gw_vimg_encode(v, &buf, &len);
	if (r == 0) {
		ssize_t n = pwrite(op->image->fd, buf, len, 0);

		r = n == (ssize_t)len ? 0 : n < 0 ? -errno : -EIO;
	}
	free(buf);
	if (r < 0)
		set_error(op, GW_ERROR_IMAGE, "writing the image's header: %s", strerror(-r));
	return r;
}

static void suspend_copied(struct gw_fast_op *op)
{
	close_fds(op); /* the app's exported fds: our imports are gone, these must go too */
	image_unmap(op->image);
	export_list_free(op);
	if (op->job_error) {
		set_error(op, image_errno(op->job_error) ? GW_ERROR_IMAGE : GW_ERROR_CUDA,
			  "copying VRAM out failed: %s", op->job_err);
		finish(op);
		return;
	}
	if (op->failed || image_seal(op) < 0) {
		finish(op);
		return;
	}
	step_done(op, "copy");
	call_agent(op, GW_METHOD_AGENT_RELEASE, cJSON_CreateObject(), NULL, 0, suspend_released);
}

/* Append one Export reply's ranges and fds to the export list. fds are ours from here. */
static int export_append(struct gw_fast_op *op, const cJSON *result, int *fds, unsigned nfds)
{
	const cJSON *ranges = cJSON_GetObjectItemCaseSensitive(result, "ranges"), *item;
	struct gw_daemon *d = op->d;
	uint64_t total;
	size_t first;

	if (gw_json_get_u64(result, "total", 0, GW_FAST_MAX_RANGES, &total) < 0 ||
	    !cJSON_IsArray(ranges) || (size_t)cJSON_GetArraySize(ranges) != nfds ||
	    (op->export_total && total != op->export_total) ||
	    (op->xranges && op->nx + nfds > total) || (nfds == 0 && total > 0)) {
		for (unsigned i = 0; i < nfds; i++)
			close(fds[i]);
		set_error(op, GW_ERROR_AGENT, "the agent of pid %d sent a malformed range list",
			  op->pid);
		return -EBADMSG;
	}
	if (!op->xranges) {
		size_t n = total ? total : 1;

		op->export_total = total;
		op->xranges = calloc(n, sizeof(*op->xranges));
		op->maps = calloc(n, sizeof(*op->maps));
		op->scans = calloc(n, sizeof(*op->scans));
		op->fds = calloc(n, sizeof(int));
		if (!op->xranges || !op->maps || !op->scans || !op->fds) {
			for (unsigned i = 0; i < nfds; i++)
				close(fds[i]);
			set_error(op, GW_ERROR_INTERNAL, "out of memory");
			return -ENOMEM;
		}
	}
	first = op->nx;
	for (unsigned i = 0; i < nfds; i++)
		op->fds[op->nfds++] = fds[i];
	cJSON_ArrayForEach(item, ranges) {
		struct gw_vimg_range *r = &op->xranges[op->nx];
		const char *uuid = NULL;
		uint64_t size = 0, dev = 0;
		struct gw_gpu *gpu;
		CUuuid u;

		if (gw_json_get_hex_u64(item, "va", &r->va) < 0 ||
		    gw_json_get_u64(item, "size", 1, GW_VIMG_MAX_RANGE_BYTES, &size) < 0 ||
		    size % 8 || gw_json_get_u64(item, "device", 0, 1024, &dev) < 0 ||
		    gw_json_get_string(item, "uuid", 64, &uuid) < 0 ||
		    gw_cuda_uuid_parse(uuid, &u) < 0) {
			set_error(op, GW_ERROR_AGENT, "the agent of pid %d sent a malformed range "
				  "(#%zu)", op->pid, first);
			return -EBADMSG;
		}
		memcpy(r->uuid, u.bytes, sizeof(r->uuid));
		r->size = size;
		r->app_device = (uint32_t)dev;
		gpu = range_gpu(d, r);
		if (!gpu || gpu->state != GW_GPU_READY) {
			set_error(op, GW_ERROR_DRAINING, "pid %d has VRAM on GPU %s, which is %s",
				  op->pid, uuid, gpu ? gw_gpu_state_name(gpu->state) : "unknown here");
			return -ENODEV;
		}
		op->nx++;
	}
	return 0;
}

/* Pinned pool blocks for the image's data; its data section is packed into them. */
static int image_alloc_blocks(struct gw_fast_op *op)
{
	struct gw_daemon *d = op->d;
	struct gw_image *image = op->image;
	size_t needed = (image->v.data_bytes + GW_HOSTPOOL_BLOCK_BYTES - 1) / GW_HOSTPOOL_BLOCK_BYTES;

	gw_imagecache_yield(d, needed); /* image cache hook: suspended images win over the cache */
	if (gw_hostpool_free_bytes(&d->hostpool) < needed * GW_HOSTPOOL_BLOCK_BYTES) {
		set_error(op, GW_ERROR_LIMIT,
			  "the image pool has %zu MiB free, pid %d needs %llu MiB (of %llu MiB of "
			  "VRAM): start gpu-warmd with a larger --image-pool-mib, or suspend into "
			  "an image file (warmctl suspend --image FILE)",
			  gw_hostpool_free_bytes(&d->hostpool) >> 20, op->pid,
			  (unsigned long long)(image->v.data_bytes >> 20),
			  (unsigned long long)(image->v.vram_bytes >> 20));
		return -ENOSPC;
	}
	image->blocks = calloc(needed ? needed : 1, sizeof(*image->blocks));
	if (!image->blocks || gw_hostpool_take(&d->hostpool, needed, image->blocks) < 0) {
		free(image->blocks);
		image->blocks = NULL;
		set_error(op, GW_ERROR_INTERNAL, "out of memory for the image");
		return -ENOMEM;
	}
	image->nblocks = needed;
	return 0;
}

/*
 * Check the file system has room for the image before copying (a write that fails later still
 * fails the dump cleanly: the app lets go of its VRAM only after the image is complete). The
 * space is not reserved with fallocate: on tmpfs that zeroes every page on one thread first,
 * which cost more than the parallel writes themselves.
 */
static int image_file_prepare(struct gw_fast_op *op)
{
	struct gw_image *image = op->image;
	char err[256] = "";
	struct stat st;
	int r;

	image->fd = op->image_fd;
	op->image_fd = -1;
	for (unsigned k = 0; k < op->nseg_fds; k++)
		image->seg_fds[k] = op->seg_fds[k];
	image->nseg_fds = op->nseg_fds;
	op->nseg_fds = 0;
	r = gw_imageio_check_space(image, err, sizeof(err));
	if (r == 0 && image->nseg_fds)
		r = gw_imageio_segments_prepare(image, err, sizeof(err));
	if (r < 0) {
		set_error(op, GW_ERROR_IMAGE, "%s", err);
		return r;
	}
	/*
	 * A single file is written through a shared mapping when the kernel can pre-fault it
	 * (copy.c says why) and the file is root's: a store into a mapping whose file another
	 * process truncates meanwhile takes SIGBUS, and a user must not be able to kill the daemon
	 * by truncating their own image. Other files are written with pwrite, where a truncation is
	 * just a failed dump; so are segment files (one writer each, no inode to share).
	 */
	if (ftruncate(image->fd, (off_t)image->v.file_bytes) < 0) {
		set_error(op, GW_ERROR_IMAGE, "cannot size the image file: %s", strerror(errno));
		return -errno;
	}
	if (image->nseg_fds || fstat(image->fd, &st) < 0 || st.st_uid != 0)
		return 0;
	image->map = mmap(NULL, image->v.file_bytes, PROT_READ | PROT_WRITE, MAP_SHARED, image->fd, 0);
	if (image->map == MAP_FAILED) {
		image->map = NULL;
	} else {
		image->map_bytes = image->v.file_bytes;
		image->written_mapped = 1;
		if (madvise(image->map, 4096, MADV_POPULATE_WRITE) < 0) {
			gw_debug("no MADV_POPULATE_WRITE (%s): the image is written with pwrite",
				 strerror(errno));
			image_unmap(image);
			image->written_mapped = 0;
		}
	}
	return 0;
}

static void random_id(uint8_t id[16])
{
	if (getrandom(id, 16, GRND_NONBLOCK) != 16) {
		double t = gw_now_ms();

		memcpy(id, &t, sizeof(t));
		memset(id + sizeof(t), 0x5a, 16 - sizeof(t));
	}
}

/* The scans are in: lay the image out, give it a store, then copy the data chunks. */
static void suspend_scanned(struct gw_fast_op *op)
{
	uint32_t flags = 0;
	struct gw_image *image;
	int r = 0;

	if (op->job_error) {
		/* Unmap what was mapped (the copy round does only that now), then report. */
		op->copy_abort = 1;
		op->running = "copy";
		if (submit_per_gpu(op, work_dump_copy, suspend_copied) < 0)
			suspend_copied(op);
		return;
	}
	step_done(op, "scan");
	image = op->image = calloc(1, sizeof(*image));
	if (!image) {
		r = -ENOMEM;
	} else {
		image->fd = -1;
		if (op->sparse && op->nx > 0 && op->scans[0])
			flags = GW_VIMG_F_SPARSE | GW_VIMG_F_SUMS;
		r = gw_vimg_init(&image->v, op->chunk_bytes, flags);
		for (size_t i = 0; r == 0 && i < op->nx; i++)
			r = gw_vimg_add_range(&image->v, &op->xranges[i],
					      flags ? op->scans[i] : NULL);
		if (r == 0)
			r = gw_vimg_finalize(&image->v);
		if (r == 0 && op->image_fd >= 0)
			r = gw_imageio_layout(&image->v, op->nseg_fds);
	}
	if (r < 0) {
		set_error(op, GW_ERROR_INTERNAL, "cannot lay out the image: %s", strerror(-r));
	} else {
		image->v.pid = op->pid;
		image->v.created_ns = (uint64_t)time(NULL) * 1000000000u;
		random_id(image->v.id);
		if (op->image_fd >= 0)
			r = image_file_prepare(op);
		else if (image->v.data_bytes > 0)
			r = image_alloc_blocks(op);
	}
	if (r < 0) {
		op->job_error = r;
		op->copy_abort = 1;
	}
	op->running = "copy";
	if (submit_per_gpu(op, work_dump_copy, suspend_copied) < 0)
		suspend_copied(op);
}

static void export_next(struct gw_fast_op *op);

static void suspend_exported(struct gw_fast_op *op, const struct gw_message *msg, int *fds,
			     unsigned nfds)
{
	if (!msg || export_append(op, msg->body, fds, nfds) < 0) {
		finish(op);
		return;
	}
	if (op->nx < op->export_total) {
		export_next(op);
		return;
	}
	step_done(op, "export");
	if (op->nx == 0) {
		set_error(op, GW_ERROR_AGENT, "the agent of pid %d has no VRAM to move", op->pid);
		finish(op);
		return;
	}
	op->job_error = 0;
	if (submit_per_gpu(op, work_dump_scan, suspend_scanned) < 0) {
		set_error(op, GW_ERROR_INTERNAL, "cannot queue work: out of memory");
		finish(op);
	}
}

static void export_next(struct gw_fast_op *op)
{
	cJSON *params = cJSON_CreateObject();

	if (params)
		cJSON_AddNumberToObject(params, "offset", (double)op->nx);
	call_agent(op, GW_METHOD_AGENT_EXPORT, params, NULL, 0, suspend_exported);
}

static void suspend_unlocked(struct gw_fast_op *op)
{
	if (op->cu != CUDA_SUCCESS) {
		set_cuda_error(op);
		finish(op);
		return;
	}
	op->locked = 0;
	step_done(op, "unlock");
	export_next(op);
}

static void suspend_locked(struct gw_fast_op *op)
{
	if (op->cu != CUDA_SUCCESS) {
		set_cuda_error(op);
		finish(op);
		return;
	}
	op->locked = 1;
	step_done(op, "lock");
	if (freeze_app(op) < 0) {
		op->locked = 0;
		run(op, work_unlock, finish);
		return;
	}
	step_done(op, "freeze");
	run(op, work_unlock, suspend_unlocked);
}

/* ---- entry points ---- */

/* The operation takes the pin out of p; the caller took a quota slot for p->owner, which
 * finish() gives back. */
static struct gw_fast_op *op_new(struct gw_daemon *d, struct gw_request *req, pid_t pid,
				 enum fast_kind kind, struct gw_fast_params *p)
{
	struct gw_fast_op *op = calloc(1, sizeof(*op));
	uint64_t gpu_mask = p->gpu_mask;

	if (!op)
		return NULL;
	op->d = d;
	op->req = req;
	op->pid = pid;
	op->pin.pidfd = -1;
	gw_pin_move(&op->pin, &p->pin);
	op->owner = p->owner;
	op->want_progress = p->progress;
	op->kind = kind;
	op->image_fd = -1;
	pthread_mutex_init(&op->job_lock, NULL);
	op->agent = gw_fast_agent(d, pid);
	op->gpu_mask = gpu_mask;
	op->start_ms = op->step_start_ms = gw_now_ms();
	op->agent->busy = 1;
	progress_start(op);
	op->next = d->fast_ops;
	d->fast_ops = op;
	for (unsigned i = 0; i < d->ngpus; i++)
		if (gpu_mask & ((uint64_t)1 << i))
			d->gpus[i].in_flight++;
	return op;
}

/* op_new(), or nothing, with the request's image files closed. */
static struct gw_fast_op *op_start(struct gw_daemon *d, struct gw_request *req, pid_t pid,
				   enum fast_kind kind, struct gw_fast_params *p)
{
	struct gw_fast_op *op = op_new(d, req, pid, kind, p);

	if (!op)
		gw_imageio_params_close(p);
	return op;
}

int gw_fast_suspend(struct gw_daemon *d, struct gw_request *req, pid_t pid,
		    struct gw_fast_params *p)
{
	struct gw_fast_op *op = op_start(d, req, pid, FAST_SUSPEND, p);

	if (!op)
		return -ENOMEM;
	op->timeout_ms = p->timeout_ms;
	op->sparse = p->sparse;
	op->chunk_bytes = p->chunk_bytes;
	op->image_fd = p->image_fd;
	for (unsigned k = 0; k < p->nsegment_fds; k++)
		op->seg_fds[k] = p->segment_fds[k];
	op->nseg_fds = p->image_fd >= 0 ? p->nsegment_fds : 0;
	gw_info("fast suspend of pid %d: %.1f MiB in %" PRIu64 " ranges, into %s (%u segments)",
		pid, (double)op->agent->bytes / 1048576.0, op->agent->ranges,
		op->image_fd >= 0 ? "an image file" : "memory", op->nseg_fds);
	run(op, work_lock, suspend_locked);
	return 0;
}

/* Every GPU the image's ranges were on is here and ready, or the op's error says which not. */
static int image_gpus_ready(struct gw_fast_op *op, const struct gw_image *image)
{
	for (uint32_t i = 0; i < image->v.nranges; i++) {
		struct gw_gpu *g = range_gpu(op->d, &image->v.ranges[i]);

		if (!g || g->state != GW_GPU_READY) {
			set_error(op, GW_ERROR_DRAINING, "the image has VRAM of GPU #%u of the "
				  "process, which is %s here", image->v.ranges[i].app_device,
				  g ? gw_gpu_state_name(g->state) : "not on this host");
			return -ENODEV;
		}
	}
	return 0;
}

/* ---- prefill ---- */

static void prefill_free(struct gw_prefill *pf)
{
	struct gw_daemon *d = pf->d;

	for (struct gw_prefill **p = &d->prefills; *p; p = &(*p)->next)
		if (*p == pf) {
			*p = pf->next;
			break;
		}
	for (size_t i = 0; i < pf->nfds; i++)
		if (pf->fds[i] >= 0)
			close(pf->fds[i]);
	free(pf->fds);
	if (pf->expiry)
		event_free(pf->expiry);
	free(pf);
}

static void on_prefill_expiry(evutil_socket_t fd, short what, void *arg)
{
	struct gw_prefill *pf = arg;

	(void)fd;
	(void)what;
	gw_info("prefilled VRAM (%.1f MiB) not claimed by a resume within %d s: released",
		(double)pf->vram_bytes / 1048576.0, GW_PREFILL_TTL_S);
	prefill_free(pf);
}

static struct gw_prefill *prefill_find(struct gw_daemon *d, dev_t dev, ino_t ino)
{
	for (struct gw_prefill *pf = d->prefills; pf; pf = pf->next)
		if (pf->dev == dev && pf->ino == ino)
			return pf;
	return NULL;
}

static void resume_filled(struct gw_fast_op *op);
static void resume_fill(struct gw_fast_op *op);

/* The prefilled VRAM becomes the resume's, as if its own fill had made it. */
static void prefill_hand_over(struct gw_prefill *pf, struct gw_fast_op *op)
{
	close_fds(op);
	op->fds = pf->fds;
	op->nfds = pf->nfds;
	pf->fds = NULL;
	pf->nfds = 0;
	op->prefill_ms = pf->fill_ms > 0 ? pf->fill_ms : 0.001;
	op->prefill_from_cache = pf->from_cache;
	op->job_error = 0;
	gw_info("resume of pid %d takes VRAM prefilled in %.1f ms", op->pid, pf->fill_ms);
	prefill_free(pf);
	resume_filled(op);
}

/* A resume from a file that was prefilled (the same inode holding the same image): 1 when its
 * VRAM comes from the prefill (now, or once the fill running for it ends), 0 otherwise. */
static int prefill_claim(struct gw_fast_op *op)
{
	struct gw_prefill *pf;
	struct stat st;

	if (!op->image || op->image->fd < 0 || fstat(op->image->fd, &st) < 0)
		return 0;
	pf = prefill_find(op->d, st.st_dev, st.st_ino);
	if (!pf || (pf->have_id && memcmp(pf->id, op->image->v.id, sizeof(pf->id)) != 0))
		return 0;
	if (!pf->ready) {
		if (pf->waiter)
			return 0;
		pf->waiter = op;
		gw_info("resume of pid %d waits for the prefill of its image", op->pid);
		return 1;
	}
	if (pf->nfds != op->image->v.nranges)
		return 0;
	prefill_hand_over(pf, op);
	return 1;
}

static void prefill_image_read(struct gw_fast_op *op)
{
	struct gw_image *image = op->parsed;

	op->parsed = NULL;
	if (!image) {
		set_error(op, GW_ERROR_IMAGE, "the image file cannot be used: %s",
			  op->parse_err[0] ? op->parse_err : strerror(-op->parse_error));
		finish(op);
		return;
	}
	op->image = image;
	if (image_gpus_ready(op, image) < 0) {
		finish(op);
		return;
	}
	memcpy(op->prefill->id, image->v.id, sizeof(op->prefill->id));
	op->prefill->have_id = 1;
	op->gpu_mask = op_gpus(op);
	for (unsigned i = 0; i < op->d->ngpus; i++)
		if (op->gpu_mask & ((uint64_t)1 << i))
			op->d->gpus[i].in_flight++;
	step_done(op, "read image");
	resume_fill(op);
}

static void work_read_image(struct gw_fast_op *op, struct op_job *job);

int gw_fast_prefill(struct gw_daemon *d, struct gw_request *req, struct gw_fast_params *p)
{
	int image_fd = p->image_fd;
	struct gw_prefill *pf;
	struct gw_fast_op *op;
	struct stat st;

	if (fstat(image_fd, &st) < 0) {
		int r = -errno;

		gw_imageio_params_close(p);
		return r;
	}
	if (prefill_find(d, st.st_dev, st.st_ino)) {
		cJSON *result = cJSON_CreateObject();

		gw_imageio_params_close(p);
		if (result)
			cJSON_AddBoolToObject(result, "already", 1);
		gw_request_reply(req, result);
		return 0;
	}
	pf = calloc(1, sizeof(*pf));
	op = calloc(1, sizeof(*op));
	if (!pf || !op) {
		free(pf);
		free(op);
		gw_imageio_params_close(p);
		return -ENOMEM;
	}
	pf->d = d;
	pf->dev = st.st_dev;
	pf->ino = st.st_ino;
	pf->filling = op;
	pf->next = d->prefills;
	d->prefills = pf;
	op->d = d;
	op->req = req;
	op->kind = FAST_PREFILL;
	op->pin.pidfd = -1;
	op->image_fd = image_fd;
	for (unsigned k = 0; k < p->nsegment_fds; k++)
		op->seg_fds[k] = p->segment_fds[k];
	op->nseg_fds = p->nsegment_fds;
	p->image_fd = -1;
	p->nsegment_fds = 0;
	op->prefill = pf;
	pthread_mutex_init(&op->job_lock, NULL);
	op->start_ms = op->step_start_ms = gw_now_ms();
	op->next = d->fast_ops;
	d->fast_ops = op;
	gw_info("prefill of a VRAM image (inode %llu) for a restore to come",
		(unsigned long long)st.st_ino);
	run(op, work_read_image, prefill_image_read);
	return 0;
}

static cJSON *prefill_result(const struct gw_fast_op *op, const struct gw_prefill *pf)
{
	cJSON *result = cJSON_CreateObject();

	if (!result)
		return NULL;
	cJSON_AddStringToObject(result, "operation", "prefill");
	cJSON_AddNumberToObject(result, "duration_ms", pf->fill_ms);
	cJSON_AddNumberToObject(result, "ranges", (double)pf->nfds);
	cJSON_AddNumberToObject(result, "vram_bytes", (double)pf->vram_bytes);
	cJSON_AddNumberToObject(result, "data_bytes", (double)pf->data_bytes);
	cJSON_AddNumberToObject(result, "expires_s", GW_PREFILL_TTL_S);
	add_steps(result, op);
	return result;
}

static void prefill_done(struct gw_fast_op *op)
{
	struct gw_daemon *d = op->d;
	struct gw_prefill *pf = op->prefill;
	struct gw_fast_op *waiter = pf->waiter;
	struct timeval ttl = { GW_PREFILL_TTL_S, 0 };

	for (struct gw_fast_op **p = &d->fast_ops; *p; p = &(*p)->next)
		if (*p == op) {
			*p = op->next;
			break;
		}
	for (unsigned i = 0; i < d->ngpus; i++)
		if (op->gpu_mask & ((uint64_t)1 << i))
			d->gpus[i].in_flight--;
	pf->filling = NULL;
	pf->waiter = NULL;
	if (!op->failed && op->job_error) {
		set_error(op, image_errno(op->job_error) ? GW_ERROR_IMAGE : GW_ERROR_CUDA,
			  "prefilling VRAM failed: %s", op->job_err);
	}
	if (op->failed) {
		gw_warn("prefill failed: %s", op->error);
		gw_request_fail(op->req, op->error_name, op->error_extra, "%s", op->error);
		prefill_free(pf);
		if (waiter)
			resume_fill(waiter); /* it fills on its own */
	} else {
		pf->fds = op->fds;
		pf->nfds = op->nfds;
		op->fds = NULL;
		op->nfds = 0;
		pf->ready = 1;
		pf->fill_ms = gw_now_ms() - op->start_ms;
		pf->vram_bytes = op->image->v.vram_bytes;
		pf->data_bytes = op->image->v.data_bytes;
		pf->from_cache = op->image->cached != NULL; /* image cache: for the resume's reply */
		pf->expiry = evtimer_new(d->base, on_prefill_expiry, pf);
		if (pf->expiry)
			evtimer_add(pf->expiry, &ttl);
		gw_info("prefilled %.1f MiB of VRAM (%.1f MiB of data) in %.1f ms",
			(double)pf->vram_bytes / 1048576.0, (double)pf->data_bytes / 1048576.0,
			pf->fill_ms);
		gw_request_reply(op->req, prefill_result(op, pf));
		if (waiter)
			prefill_hand_over(pf, waiter);
	}
	close_fds(op);
	export_list_free(op);
	image_free(d, op->image);
	image_free(d, op->parsed);
	if (op->image_fd >= 0)
		close(op->image_fd);
	for (unsigned k = 0; k < op->nseg_fds; k++)
		close(op->seg_fds[k]);
	pthread_mutex_destroy(&op->job_lock);
	free(op);
	gw_daemon_gpus_changed(d);
}

cJSON *gw_fast_prefills_status(struct gw_daemon *d)
{
	cJSON *array = cJSON_CreateArray();

	for (struct gw_prefill *pf = d->prefills; array && pf; pf = pf->next) {
		cJSON *o = cJSON_CreateObject();

		if (!o)
			break;
		cJSON_AddBoolToObject(o, "ready", pf->ready);
		cJSON_AddNumberToObject(o, "vram_bytes", (double)pf->vram_bytes);
		cJSON_AddNumberToObject(o, "ranges", (double)pf->nfds);
		cJSON_AddBoolToObject(o, "waited_for", pf->waiter != NULL);
		cJSON_AddItemToArray(array, o);
	}
	return array;
}

/* A resume from a file: its header and tables are read and checked on a worker, never on the
 * loop (a valid image's tables can be hundreds of MiB); a non-root caller's are bounded. */
static void work_read_image(struct gw_fast_op *op, struct op_job *job)
{
	struct gw_image *image = calloc(1, sizeof(*image));
	uint64_t max_tables = op->owner == 0 ? UINT64_MAX : GW_FAST_USER_TABLE_MAX;

	(void)job;
	op->parse_error = 0;
	if (!image) {
		op->parse_error = -ENOMEM;
		return;
	}
	image->fd = -1;
	op->parse_error = gw_vimg_read_fd_max(op->image_fd, max_tables, &image->v, op->parse_err,
					      sizeof(op->parse_err));
	if (op->parse_error < 0) {
		gw_vimg_clear(&image->v);
		free(image);
		return;
	}
	image->fd = op->image_fd;
	op->image_fd = -1;
	/* A version-2 image's segment files, each checked against the head. */
	op->parse_error = gw_imageio_segments_take(image, op->seg_fds, op->nseg_fds, op->parse_err,
						   sizeof(op->parse_err));
	op->nseg_fds = 0; /* the image's now, or closed */
	if (op->parse_error < 0) {
		image_free(op->d, image);
		return;
	}
	op->parsed = image;
}

/* The image read from the file is the one to restore, or the same image already held here (then
 * the held one is used: in memory, or our own fd of the file). The process is not touched when
 * it is refused. */
static int resume_image_take(struct gw_fast_op *op)
{
	struct gw_agent *a = op->agent;
	struct gw_image *image = op->parsed;

	op->parsed = NULL;
	if (!image) {
		int r = op->parse_error ? op->parse_error : -EIO;

		if (r == -E2BIG) {
			cJSON *extra = cJSON_CreateObject();

			if (extra)
				cJSON_AddStringToObject(extra, "limit", GW_LIMIT_IMAGE_TABLES);
			op->error_extra = extra;
			set_error(op, GW_ERROR_LIMIT, "the image's tables exceed the %u MiB a non-root "
				  "caller may have read: %s", GW_FAST_USER_TABLE_MAX >> 20,
				  op->parse_err);
		} else {
			set_error(op, GW_ERROR_IMAGE, "the image file cannot be used: %s",
				  op->parse_err[0] ? op->parse_err : strerror(-r));
		}
		return r;
	}
	if (a->image && memcmp(a->image->v.id, image->v.id, sizeof(image->v.id)) == 0) {
		/* The same image, already here: in memory, or in the files we wrote (then read it
		 * through the fds just given, the caller's proof that it may). */
		if (a->image->fd >= 0)
			gw_imageio_files_move(a->image, image);
		image_free(op->d, image);
		op->image = a->image;
		return 0;
	}
	if (a->image) {
		set_error(op, GW_ERROR_ILLEGAL_STATE, "gpu-warmd holds another image of pid %d (its "
			  "last suspend); resume it without --image first", op->pid);
		image_free(op->d, image);
		return -EEXIST;
	}
	if (image_gpus_ready(op, image) < 0) {
		image_free(op->d, image);
		return -ENODEV;
	}
	op->image = image;
	return 0;
}

static void resume_image_read(struct gw_fast_op *op)
{
	if (resume_image_take(op) < 0) {
		op->released = 0; /* nothing was taken from the process */
		finish(op);
		return;
	}
	step_done(op, "read image");
	if (prefill_claim(op))
		return; /* the VRAM was filled ahead, or is being filled: it comes from there */
	resume_fill(op);
}

int gw_fast_resume(struct gw_daemon *d, struct gw_request *req, pid_t pid,
		   struct gw_fast_params *p)
{
	struct gw_fast_op *op = op_start(d, req, pid, FAST_RESUME, p);

	if (!op)
		return -ENOMEM;
	op->released = 1;
	op->need_restore = 1;
	op->timeout_ms = 10000;
	op->caller_froze = p->caller_froze;
	if (p->image_fd < 0) {
		op->image = op->agent->image;
		resume_fill(op);
		return 0;
	}
	op->image_fd = p->image_fd;
	for (unsigned k = 0; k < p->nsegment_fds; k++)
		op->seg_fds[k] = p->segment_fds[k];
	op->nseg_fds = p->nsegment_fds;
	run(op, work_read_image, resume_image_read);
	return 0;
}

/* ---- agents ---- */

static void agent_remove(struct gw_daemon *d, struct gw_agent *a)
{
	for (struct gw_agent **p = &d->agents; *p; p = &(*p)->next)
		if (*p == a) {
			*p = a->next;
			break;
		}
	if (a->conn)
		gw_conn_set_data(a->conn, NULL);
	if (a->exit_ev)
		event_free(a->exit_ev);
	gw_pin_close(&a->pin);
	image_free(d, a->image);
	free(a);
}

/* Its process exited: what was held for it goes (an image in a file stays in the file). */
static void on_agent_exit(evutil_socket_t fd, short what, void *arg)
{
	struct gw_agent *a = arg;
	struct gw_daemon *d = a->d;

	(void)fd;
	(void)what;
	if (a->busy) {
		a->gone = 1; /* the operation fails on its next step; finish() removes us */
		return;
	}
	gw_info("pid %d exited: its agent record%s dropped", a->pid,
		a->image ? " and the VRAM image held for it are" : " is");
	agent_remove(d, a);
	gw_daemon_gpus_changed(d);
}

/* Pin a (bound to the process in pin, which is moved in) and watch for its exit. */
static int agent_bind(struct gw_agent *a, struct gw_pin *pin)
{
	struct event *ev = event_new(a->d->base, pin->pidfd, EV_READ, on_agent_exit, a);

	if (!ev || event_add(ev, NULL) < 0) {
		if (ev)
			event_free(ev);
		return -ENOMEM;
	}
	if (a->exit_ev)
		event_free(a->exit_ev);
	a->exit_ev = ev;
	gw_pin_move(&a->pin, pin);
	a->pid = a->pin.pid;
	a->uid = a->pin.uids[0];
	return 0;
}

struct gw_agent *gw_fast_agent(struct gw_daemon *d, pid_t pid)
{
	/* A live pinned process owns its pid: no other process can have it meanwhile. */
	for (struct gw_agent *a = d->agents; a; a = a->next)
		if (a->pin.pidfd >= 0 && a->pin.pid == pid && !a->gone && gw_pin_alive(&a->pin))
			return a;
	return NULL;
}

int gw_fast_wants_suspend(struct gw_daemon *d, pid_t pid)
{
	struct gw_agent *a = gw_fast_agent(d, pid);

	return a && a->conn && a->ranges > 0 && !a->image;
}

int gw_fast_wants_resume(struct gw_daemon *d, pid_t pid)
{
	struct gw_agent *a = gw_fast_agent(d, pid);

	return a && a->image;
}

int gw_fast_bind(struct gw_daemon *d, pid_t from, const struct gw_pin *to, pid_t tid)
{
	struct gw_agent *a = NULL;
	struct gw_pin pin;
	int r;

	for (struct gw_agent *x = d->agents; x; x = x->next)
		if (x->pin.pidfd < 0 && x->pid == from && x->conn)
			a = x;
	if (!a)
		return -ENOENT;
	if (a->busy)
		return -EBUSY;
	if (gw_fast_agent(d, to->pid))
		return -EEXIST;
	r = gw_pin_open(to->pid, &pin); /* the agent's own pidfd, for as long as it lives */
	if (r < 0)
		return r;
	if (pin.start_time != to->start_time) {
		gw_pin_close(&pin);
		return -ESRCH;
	}
	r = agent_bind(a, &pin);
	if (r < 0) {
		gw_pin_close(&pin);
		return r;
	}
	if (tid > 0)
		a->tid = tid;
	gw_info("agent attached under pid %d is pid %d's now (thread %d)", from, a->pid, a->tid);
	return 0;
}

int gw_fast_has_agent(struct gw_daemon *d, pid_t pid)
{
	struct gw_agent *a = gw_fast_agent(d, pid);

	return a && a->conn;
}

int gw_fast_busy(const struct gw_daemon *d, pid_t pid)
{
	for (const struct gw_fast_op *op = d->fast_ops; op; op = op->next)
		if (op->pid == pid)
			return 1;
	return 0;
}

int gw_fast_driver_checkpoint_unsafe(struct gw_daemon *d, pid_t pid)
{
	struct gw_agent *a = gw_fast_agent(d, pid);

	return a && a->foreign > 0;
}

int gw_fast_agent_pins_conn(const struct gw_agent *a)
{
	return a && (a->bytes > 0 || a->ranges > 0 || a->image || a->busy);
}

/* "foreign" is optional: older agents do not send it. */
static void read_foreign(struct gw_request *req, struct gw_agent *a)
{
	uint64_t foreign;

	if (gw_json_get_u64(req->msg.body, "foreign", 0, GW_FAST_MAX_RANGES, &foreign) == 0)
		a->foreign = foreign;
}

static int read_counts(struct gw_request *req, uint64_t *ranges, uint64_t *bytes)
{
	if (gw_json_get_u64(req->msg.body, "ranges", 0, GW_FAST_MAX_RANGES, ranges) < 0 ||
	    gw_json_get_u64(req->msg.body, "bytes", 0, (uint64_t)1 << 50, bytes) < 0) {
		gw_request_fail(req, GW_ERROR_INVALID_REQUEST, NULL,
				"\"ranges\" and \"bytes\" must be counts");
		return -EINVAL;
	}
	return 0;
}

/* An agent speaks for the process at the other end of its socket, as the kernel names it: pin
 * that process; its tid as reported inside a container is mapped to ours. */
static int attach_own(struct gw_request *req, uint64_t tid, struct gw_pin *ret_pin,
		      pid_t *ret_tid)
{
	pid_t host_tid;
	int r = gw_pin_open(req->peer.pid, ret_pin);

	if (r < 0) {
		gw_request_fail(req, GW_ERROR_NO_SUCH_PROCESS, NULL,
				"the attaching process %d is gone", req->peer.pid);
		return r;
	}
	host_tid = gw_proc_host_tid(req->peer.pid, (pid_t)tid);
	if (host_tid < 0) {
		gw_pin_close(ret_pin);
		gw_request_fail(req, GW_ERROR_INVALID_REQUEST, NULL, "process %d has no thread %llu",
				req->peer.pid, (unsigned long long)tid);
		return -ESRCH;
	}
	*ret_tid = host_tid;
	return 0;
}

void gw_fast_handle_attach(struct gw_daemon *d, struct gw_request *req)
{
	struct gw_pin pin = GW_PIN_INIT;
	uint64_t pid, tid, ranges, bytes;
	struct gw_agent *a;
	int on_behalf = 0;
	pid_t host_tid = 0;

	if (gw_conn_get_data(req->conn)) {
		gw_request_fail(req, GW_ERROR_INVALID_REQUEST, NULL, "this connection is attached");
		return;
	}
	if (gw_json_get_u64(req->msg.body, "pid", 1, GW_PID_MAX, &pid) < 0 ||
	    gw_json_get_u64(req->msg.body, "tid", 1, GW_PID_MAX, &tid) < 0) {
		gw_request_fail(req, GW_ERROR_INVALID_REQUEST, NULL, "\"pid\" and \"tid\" required");
		return;
	}
	if (read_counts(req, &ranges, &bytes) < 0)
		return;
	/* An agent speaks for its own process only; root (CRIU's plugin giving a restored process
	 * its connection back) may attach a connection on a process's behalf: unbound until a
	 * Resume from root binds it. */
	if (gw_json_get_bool(req->msg.body, "on_behalf", &on_behalf) < 0)
		on_behalf = 0;
	if (on_behalf && req->peer.uid != 0) {
		gw_request_fail(req, GW_ERROR_PERMISSION_DENIED, NULL,
				"only root may attach an agent on another process's behalf");
		return;
	}
	if (!on_behalf) {
		if (attach_own(req, tid, &pin, &host_tid) < 0)
			return;
		a = gw_fast_agent(d, pin.pid);
		if (a && a->conn) {
			gw_pin_close(&pin);
			gw_request_fail(req, GW_ERROR_BUSY, NULL,
					"pid %d already has an agent attached", req->peer.pid);
			return;
		}
		if (a) {
			/* The same process reconnecting (what is held for it is still its). */
			gw_pin_close(&pin);
			a->tid = host_tid;
			goto attach;
		}
	}
	a = calloc(1, sizeof(*a));
	if (!a) {
		gw_pin_close(&pin);
		gw_request_fail(req, GW_ERROR_INTERNAL, NULL, "out of memory");
		return;
	}
	a->d = d;
	a->pin.pidfd = -1;
	a->pid = (pid_t)pid;
	a->tid = on_behalf ? (pid_t)tid : host_tid;
	a->uid = req->peer.uid;
	if (!on_behalf && agent_bind(a, &pin) < 0) {
		gw_pin_close(&pin);
		free(a);
		gw_request_fail(req, GW_ERROR_INTERNAL, NULL, "out of memory");
		return;
	}
	a->next = d->agents;
	d->agents = a;
attach:
	a->conn = req->conn;
	a->ranges = ranges;
	a->bytes = bytes;
	read_foreign(req, a);
	gw_conn_set_data(req->conn, a);
	gw_info("agent of pid %d attached%s (thread %d): %" PRIu64 " ranges, %.1f MiB", a->pid,
		on_behalf ? " on its behalf by CRIU's plugin" : "", a->tid, ranges,
		(double)bytes / 1048576.0);
	gw_request_reply(req, NULL);
}

void gw_fast_handle_update(struct gw_daemon *d, struct gw_request *req)
{
	struct gw_agent *a = gw_conn_get_data(req->conn);
	uint64_t ranges, bytes;

	(void)d;
	if (!a) {
		gw_request_fail(req, GW_ERROR_INVALID_REQUEST, NULL, "attach first");
		return;
	}
	if (read_counts(req, &ranges, &bytes) < 0)
		return;
	a->ranges = ranges;
	a->bytes = bytes;
	read_foreign(req, a);
	gw_request_reply(req, NULL);
}

void gw_fast_conn_closed(struct gw_daemon *d, struct gw_conn *conn)
{
	struct gw_agent *a = gw_conn_get_data(conn);

	if (!a)
		return;
	a->conn = NULL;
	/* An image in a file is the caller's to pass back at resume: once the process is gone, the
	 * daemon's fd would only keep a deleted file's space alive. */
	if (!a->busy && a->image && a->image->fd >= 0) {
		gw_info("agent of pid %d gone: its VRAM image stays in its file only", a->pid);
		image_free(d, a->image);
		a->image = NULL;
	}
	/* Keep the record while it holds VRAM in memory for a process that still runs (it
	 * reconnects); the process's exit drops it. */
	if (!a->busy && (!a->image || a->pin.pidfd < 0)) {
		gw_info("agent of pid %d detached", a->pid);
		agent_remove(d, a);
	} else {
		gw_warn("agent of pid %d hung up while %s", a->pid,
			a->busy ? "an operation runs" : "its VRAM is held here");
	}
}

static const char *agent_state(const struct gw_agent *a)
{
	if (a->busy)
		return "busy";
	if (a->image)
		return "suspended";
	if (!a->conn)
		return "detached";
	return "running";
}

static cJSON *agent_json(const struct gw_agent *a)
{
	cJSON *o = cJSON_CreateObject(), *img;

	if (!o)
		return NULL;
	cJSON_AddNumberToObject(o, "pid", a->pid);
	cJSON_AddNumberToObject(o, "uid", a->uid);
	cJSON_AddNumberToObject(o, "agent_tid", a->tid);
	cJSON_AddBoolToObject(o, "attached", a->conn != NULL);
	cJSON_AddBoolToObject(o, "bound", a->pin.pidfd >= 0);
	cJSON_AddStringToObject(o, "state", agent_state(a));
	cJSON_AddNumberToObject(o, "ranges", (double)a->ranges);
	cJSON_AddNumberToObject(o, "vram_bytes", (double)a->bytes);
	cJSON_AddNumberToObject(o, "foreign_ranges", (double)a->foreign);
	cJSON_AddNumberToObject(o, "held_bytes", a->image ? (double)a->image->v.data_bytes : 0);
	if (a->image) {
		cJSON_AddStringToObject(o, "held_in", a->image->fd >= 0 ? "file" : "memory");
		img = cJSON_AddObjectToObject(o, "image");
		if (img) {
			cJSON_AddStringToObject(img, "store", a->image->fd >= 0 ? "file" : "memory");
			cJSON_AddNumberToObject(img, "data_bytes", (double)a->image->v.data_bytes);
			cJSON_AddNumberToObject(img, "vram_bytes", (double)a->image->v.vram_bytes);
		}
	} else {
		cJSON_AddNullToObject(o, "image");
	}
	return o;
}

cJSON *gw_fast_status(struct gw_daemon *d, const struct ucred *peer, unsigned *ret_others)
{
	cJSON *array = cJSON_CreateArray();
	unsigned others = 0;

	for (struct gw_agent *a = d->agents; array && a; a = a->next) {
		if (peer->uid != 0 && a->uid != peer->uid) {
			others++;
			continue;
		}
		cJSON_AddItemToArray(array, agent_json(a));
	}
	*ret_others = others;
	return array;
}

void gw_fast_finish(struct gw_daemon *d)
{
	while (d->prefills)
		prefill_free(d->prefills);
	while (d->agents)
		agent_remove(d, d->agents);
}
