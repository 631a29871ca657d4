/* SPDX-License-Identifier: MIT */
/*
 * The operation engine: one life cycle and one step runner for every operation the daemon runs
 * on a process (the fast path's suspend, resume and prefill, the driver path's lock ... resume).
 *
 * An operation is a plan, a static table of steps walked top-down. A step is a C function run on
 * the loop, on a worker of the operation's class, on the tracer thread (the one thread that
 * ptraces: freezes and thaws must come from the same thread), or once per GPU in parallel; the
 * runner times it and records it under its name when it works. A loop step may be asynchronous
 * (an agent call): it returns GW_STEP_ASYNC and completes with gw_op_step_done(). A step that
 * fails ends the plan: the undo lists of the failed step and of every step before it run, latest
 * first, then the plan's "always" steps, then its finish() on the loop, which replies.
 *
 * Loop thread only, except the functions a step runs on a thread: those own the operation until
 * they return (gw_op_record() and gw_op_job_fail() may be called from them).
 */
#ifndef GW_OPENGINE_H
#define GW_OPENGINE_H

#include <cjson/cJSON.h>
#include <pthread.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

struct gw_daemon;
struct gw_request;
struct gw_op;

#define GW_OP_MAX_STEPS 16

/* A step's outcome besides 0 (done) and -errno (failed). */
#define GW_STEP_SKIP 1  /* done, nothing to record */
#define GW_STEP_ASYNC 2 /* a loop step that completes later, through gw_op_step_done() */

enum gw_step_thread {
	GW_STEP_LOOP,   /* run() on the loop */
	GW_STEP_WORKER, /* run() on a worker of the operation's class, then check() on the loop */
	GW_STEP_TRACER, /* run() on the tracer thread (ptrace), then check() on the loop */
	GW_STEP_GPUS,   /* run_gpu() on a worker per GPU of plan->gpus(), then check() on the loop */
};

struct gw_step {
	const char *name;          /* recorded under this name when it works; NULL: never */
	enum gw_step_thread thread;
	int (*when)(struct gw_op *op);        /* on the loop: 0 passes the step by (NULL: always) */
	int (*run)(struct gw_op *op);         /* LOOP, WORKER, TRACER */
	void (*run_gpu)(struct gw_op *op, unsigned gpu); /* GPUS */
	int (*check)(struct gw_op *op, int r); /* on the loop after a thread step (NULL: r) */
	const char *running;       /* what progress ticks report while it runs */
	const struct gw_step *undo; /* run when this step or a later one fails */
	unsigned nundo;
};

struct gw_op_plan {
	const char *operation;            /* "suspend", "resume", "prefill", "lock", ... */
	const struct gw_step *steps;
	unsigned nsteps;
	const struct gw_step *always;     /* after the steps (or their undo), whatever happened */
	unsigned nalways;
	uint64_t (*gpus)(struct gw_op *op);         /* GPUS steps: bit i = a job on GPU i */
	uint64_t (*total_bytes)(const struct gw_op *op); /* for progress messages */
	void (*add_result)(const struct gw_op *op, cJSON *result); /* the reply's own figures */
	void (*finish)(struct gw_op *op); /* on the loop at the end: reply, free (the op too) */
};

/* What an operation did: the one source of its reply (gw_op_result_json). */
struct gw_op_result {
	pid_t pid;             /* 0: left out of the reply */
	const char *path;      /* "fast", "driver"; NULL: left out */
	const char *state;     /* NULL: left out, or null with state_null */
	int state_null;
	double duration_ms;
	uint64_t bytes;        /* data bytes moved */
	const char *image_cache; /* "hit": its data came from the image cache; NULL: left out */
	struct {
		const char *name;
		double ms;
	} steps[GW_OP_MAX_STEPS];
	unsigned nsteps;
};

enum gw_op_phase { GW_OP_STEPS, GW_OP_UNDO, GW_OP_ALWAYS, GW_OP_ENDED };

struct gw_op {
	struct gw_daemon *d;
	struct gw_request *req;
	const struct gw_op_plan *plan;
	uid_t owner;            /* who asked: the worker class */
	pid_t pid;
	uint64_t gpu_mask;      /* GPUs counted in flight (gw_op_gpus_begin) */
	double start_ms, step_start_ms;
	struct gw_op_result res;

	/* the runner */
	enum gw_op_phase phase;
	unsigned pc;            /* STEPS, ALWAYS: the step; UNDO: the step whose undo runs */
	unsigned undo_pc;       /* UNDO: in that step's undo list */
	const struct gw_step *current;
	int jobs_left;
	int step_r;             /* a WORKER/TRACER step's run() result */
	int in_run;             /* a LOOP step's run() is on the stack */
	int early, early_r;     /* ...and it completed already, with early_r */

	/* the first failure: reported by finish() */
	int failed;
	char error_name[64];
	char error[512];
	cJSON *error_extra;
	/* jobs of a GPUS step: the first failure */
	int job_error;
	char job_err[256];
	pthread_mutex_t job_lock;

	/* progress messages, when the client asked */
	int want_progress;
	uint64_t progress_bytes; /* data bytes moved, added to by the copy lanes */
	const char *running;
	struct event *progress_ev;
};

/* Set up op (embedded in the caller's operation) for plan; nothing runs yet. */
void gw_op_init(struct gw_op *op, struct gw_daemon *d, struct gw_request *req,
		const struct gw_op_plan *plan, pid_t pid, uid_t owner, int want_progress);
/* Walk the plan from its first step. */
void gw_op_start(struct gw_op *op);
/* An asynchronous loop step is done: r as a step returns it. */
void gw_op_step_done(struct gw_op *op, int r);
/* The state an operation's finish() releases: progress ticks, GPU counts, the job lock. Once. */
void gw_op_release(struct gw_op *op);

/* The one place GPU in-flight counts change: mask's GPUs count this operation until
 * gw_op_release() (or gw_op_gpus_end()). */
void gw_op_gpus_begin(struct gw_op *op, uint64_t mask);
void gw_op_gpus_end(struct gw_op *op);
/* The one place the daemon hears that operations changed (drains advance, waiters wake). */
void gw_op_changed(struct gw_daemon *d);

/* Record a step (the runner records named ones; a step may record its own sub-steps). */
void gw_op_record(struct gw_op *op, const char *name, double ms);
double gw_op_step_ms(const struct gw_op *op, const char *name); /* 0: not recorded */
/* The first cause of failure, kept. */
__attribute__((format(printf, 3, 4))) void gw_op_fail(struct gw_op *op, const char *name,
						      const char *fmt, ...);
/* A GPU job's failure (any thread): the first one is kept. */
void gw_op_job_fail(struct gw_op *op, unsigned gpu, int r, const char *err);

/* The reply: pid, operation, state, path, duration_ms, steps, image_cache, then
 * plan->add_result's. */
cJSON *gw_op_result_json(const struct gw_op *op);
/* A progress message now (step: just done or running). */
void gw_op_progress(struct gw_op *op, const char *step);

/* The tracer thread's pool, started on first use; gone at gw_opengine_finish(). */
void gw_opengine_finish(struct gw_daemon *d);

#define GW_OP_OF(ptr, type) ((type *)(void *)((char *)(ptr) - offsetof(type, op)))

#endif
