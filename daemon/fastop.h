/* SPDX-License-Identifier: MIT */
/*
 * A fast-path operation (fastpath.h) on the operation engine (opengine.h): its state, its life
 * cycle and the steps that fast-suspend.c and fast-resume.c share: the driver steps and the
 * freeze (workers, the tracer thread), the agent calls, the per-GPU copy jobs, the ending.
 * Loop only, except the steps' thread functions.
 */
#ifndef GW_FASTOP_H
#define GW_FASTOP_H

#include "fastpath.h"
#include "freeze.h"
#include "gw-vimg.h"
#include "imageio.h"
#include "opengine.h"

#define GW_FAST_MAX_RANGES 4096
/* A non-root caller's image may have tables of at most this much: a 141 GB GPU in the smallest
 * chunks needs ~40 MiB. */
#define GW_FAST_USER_TABLE_MAX (64u << 20)

enum gw_fast_kind { GW_FAST_SUSPEND, GW_FAST_RESUME, GW_FAST_PREFILL };

struct gw_fast_op {
	struct gw_op op;  /* first: the engine's part */
	struct gw_fast_op *next;
	struct gw_agent *agent; /* NULL for a prefill */
	enum gw_fast_kind kind;
	struct gw_pin pin;  /* the process, pinned when the request came */
	unsigned timeout_ms;

	pid_t agent_tid;   /* the agent's thread, as the operation began: never frozen */
	pid_t restore_tid;
	struct gw_frozen frozen;
	struct gw_image *image;
	int *fds; /* one per range while they are in flight */
	size_t nfds;
	size_t export_total;  /* ranges the agent announced */
	size_t mapped;        /* ranges mapped back so far */
	int released;     /* the app's VRAM now lives only in the image */
	uint64_t trimmed_bytes; /* suspend: host pages of zeros the agent gave back */
	int trimmed;            /* ...and it answered */
	int caller_froze; /* the caller (CRIU's plugin) holds the threads stopped: no freeze here */
	int locked;       /* locked by us right now */
	int touched;      /* resume: the process's driver state was acted on */
	struct gw_image *parsed; /* resume from a file: read on a worker, taken on the loop */
	struct gw_prefill *prefill; /* GW_FAST_PREFILL: the record it fills */
	double prefill_ms;          /* resume: the fill was done ahead, in this long */
	int prefilled;              /* resume: fds came from a prefill */
	struct gw_prefill *awaited; /* resume: the prefill still filling for it (its waiter) */
	int overlapped;             /* resume: the driver's restore runs while that fill does */
	int joining;                /* resume: the "prefill join" step waits for that fill */
	char prefill_error[512];    /* resume: why the awaited fill failed ("": it did not) */
	char prefill_error_name[64];
	int from_file;              /* resume: of an image file the request passed */
	const char *step_error;     /* a worker step's error name, with step_err */
	int parse_error;
	char parse_err[256];

	/* suspend: the agent's ranges, their mappings here and scans, before the image exists */
	struct gw_vimg_range *xranges;
	size_t nx;
	struct gw_copy_map *maps;
	struct gw_chunk_scan **scans;
	int sparse;
	uint64_t chunk_bytes;
	int image_fd; /* the image file (-1: pinned memory) until the image takes it */
	int seg_fds[GW_VIMG_MAX_SEGMENTS]; /* ...and its segment files (none: one file) */
	unsigned nseg_fds;
	int copy_abort; /* the copy round only unmaps (set before it is queued) */
	char step_err[256]; /* a worker step's message */

	/* worker results */
	CUresult cu;
	const char *cu_call;
	uint64_t io_ns[GW_GPU_MAX]; /* file I/O time per GPU job */
	struct gw_copy_stats cstats[GW_GPU_MAX]; /* where each GPU job's time went */
};

#define GW_FAST(o) GW_OP_OF(o, struct gw_fast_op)

/* A new operation of kind on pid for the request (takes p's pin; the caller took a quota slot,
 * which the ending gives back), on d's list; NULL with p's files closed. */
struct gw_fast_op *gw_fastop_new(struct gw_daemon *d, struct gw_request *req, pid_t pid,
				 enum gw_fast_kind kind, const struct gw_op_plan *plan,
				 struct gw_fast_params *p);
/* Take p's image and segment fds. */
void gw_fastop_take_files(struct gw_fast_op *f, struct gw_fast_params *p);
void gw_fastop_unlist(struct gw_fast_op *f);
/* The end of a suspend or resume: reply, keep or drop the image, free f. */
void gw_fastop_finish(struct gw_op *op);
/* The state every ending frees. */
void gw_fastop_free(struct gw_fast_op *f);
void gw_fastop_close_fds(struct gw_fast_op *f);
void gw_fastop_export_free(struct gw_fast_op *f);
void gw_fastop_cuda_error(struct gw_fast_op *f);
/* Errors of the image rather than of the driver: a checksum mismatch, a file cut short... */
const char *gw_fastop_job_error_name(int r);

/* Plan hooks, and a suspend's or resume's plan: its steps and the thaw. */
uint64_t gw_fastop_gpus(struct gw_op *op);
uint64_t gw_fastop_total_bytes(const struct gw_op *op);
void gw_fastop_add_result(const struct gw_op *op, cJSON *result);
#define GW_FASTOP_PLAN(name, steps_, always_)                                                \
	{ .operation = name, .steps = steps_, .nsteps = sizeof(steps_) / sizeof((steps_)[0]),  \
	  .always = always_, .nalways = sizeof(always_) / sizeof((always_)[0]),                \
	  .gpus = gw_fastop_gpus, .total_bytes = gw_fastop_total_bytes,                        \
	  .add_result = gw_fastop_add_result, .finish = gw_fastop_finish }

/* Driver steps (workers): each acts on the pinned process or on nothing. */
int gw_fastop_lock(struct gw_op *op);
int gw_fastop_unlock(struct gw_op *op);
int gw_fastop_lock_checkpoint(struct gw_op *op);
int gw_fastop_restore_tid(struct gw_op *op);
int gw_fastop_restore_unlock(struct gw_op *op);
/* The CUresult of the driver step, as a step's outcome (the op's error set). */
int gw_fastop_check_cuda(struct gw_op *op, int r);
/* Freeze all threads but the agent's and the CUDA restore thread (tracer thread); check. */
int gw_fastop_freeze(struct gw_op *op);
int gw_fastop_check_freeze(struct gw_op *op, int r);
int gw_fastop_frozen(struct gw_op *op);
int gw_fastop_thaw(struct gw_op *op);

/* An agent call as an asynchronous step: done() gets the reply (NULL: it failed, the op's
 * error set) and returns the step's outcome (GW_STEP_ASYNC: it made another call). */
typedef int (*gw_agent_done_fn)(struct gw_fast_op *f, const struct gw_message *msg, int *fds,
				unsigned nfds);
int gw_fastop_call_agent(struct gw_fast_op *f, const char *method, cJSON *params, const int *fds,
			 unsigned nfds, gw_agent_done_fn done);
/* The same for a call the operation can do without: a failure is a warning in the log, and
 * done() gets NULL without the operation failing. */
int gw_fastop_ask_agent(struct gw_fast_op *f, const char *method, cJSON *params,
			gw_agent_done_fn done);

/* Per-GPU jobs (fastcopy.c). */
void gw_fastcopy_dump_scan(struct gw_op *op, unsigned gpu);
void gw_fastcopy_dump_copy(struct gw_op *op, unsigned gpu);
void gw_fastcopy_fill(struct gw_op *op, unsigned gpu);
uint64_t gw_fastcopy_gpus(const struct gw_fast_op *f);
uint64_t gw_fastcopy_io_ns(const struct gw_fast_op *f);
struct gw_gpu *gw_fastcopy_range_gpu(struct gw_daemon *d, const struct gw_vimg_range *r);

/* Filling new VRAM from the image (fast-resume.c), also the undo of a suspend's release: the
 * image cache serves the image's files when it holds them (a "cache hit" step, else none), the
 * fds made ready, then one job per GPU, then the agent maps it back. */
int gw_fast_cache_attach(struct gw_op *op);
int gw_fast_fill_prepare(struct gw_op *op);
int gw_fast_fill_check(struct gw_op *op, int r);
int gw_fast_map(struct gw_op *op);
#define GW_FAST_FILL_STEPS(when_fn)                                                          \
	{ .name = "cache hit", .thread = GW_STEP_LOOP, .when = when_fn,                          \
	  .run = gw_fast_cache_attach },                                                         \
	{ .thread = GW_STEP_LOOP, .when = when_fn, .run = gw_fast_fill_prepare },              \
	{ .name = "fill", .thread = GW_STEP_GPUS, .when = when_fn,                               \
	  .run_gpu = gw_fastcopy_fill, .check = gw_fast_fill_check, .running = "fill" }
#define GW_FAST_MAP_STEP(when_fn) \
	{ .name = "map", .thread = GW_STEP_LOOP, .when = when_fn, .run = gw_fast_map }

#endif
