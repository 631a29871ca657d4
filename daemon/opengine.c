/* SPDX-License-Identifier: MIT */
#include "opengine.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "clock.h"
#include "daemon.h"

/* ---- life cycle ---- */

static void on_progress_tick(evutil_socket_t fd, short what, void *arg)
{
	struct gw_op *op = arg;

	(void)fd;
	(void)what;
	if (op->running)
		gw_op_progress(op, op->running);
}

void gw_op_init(struct gw_op *op, struct gw_daemon *d, struct gw_request *req,
		const struct gw_op_plan *plan, pid_t pid, uid_t owner, int want_progress)
{
	struct timeval tv = { 0, GW_PROGRESS_INTERVAL_MS * 1000 };

	*op = (struct gw_op){
		.d = d, .req = req, .plan = plan, .pid = pid, .owner = owner,
		.want_progress = want_progress, .start_ms = gw_now_ms(),
	};
	op->step_start_ms = op->start_ms;
	pthread_mutex_init(&op->job_lock, NULL);
	if (!want_progress)
		return;
	op->progress_ev = event_new(d->base, -1, EV_PERSIST, on_progress_tick, op);
	if (op->progress_ev)
		event_add(op->progress_ev, &tv);
}

void gw_op_release(struct gw_op *op)
{
	if (op->phase == GW_OP_ENDED)
		return;
	op->phase = GW_OP_ENDED;
	if (op->progress_ev)
		event_free(op->progress_ev);
	op->progress_ev = NULL;
	gw_op_gpus_end(op);
	pthread_mutex_destroy(&op->job_lock);
}

/* Operations in flight per GPU (the GPU table counts them: a drain waits for them). */
void gw_op_gpus_begin(struct gw_op *op, uint64_t mask)
{
	gw_gpu_op_begin(&op->d->gpu_table, mask & ~op->gpu_mask);
	op->gpu_mask |= mask;
}

void gw_op_gpus_end(struct gw_op *op)
{
	gw_gpu_op_end(&op->d->gpu_table, op->gpu_mask);
	op->gpu_mask = 0;
}

/* The one call of "operations changed": drains advance, waiters wake. */
void gw_op_changed(struct gw_daemon *d)
{
	gw_gpu_table_changed(&d->gpu_table);
}

/* ---- records, errors, progress ---- */

void gw_op_record(struct gw_op *op, const char *name, double ms)
{
	if (op->res.nsteps < GW_OP_MAX_STEPS) {
		op->res.steps[op->res.nsteps].name = name;
		op->res.steps[op->res.nsteps].ms = ms;
		op->res.nsteps++;
	}
}

double gw_op_step_ms(const struct gw_op *op, const char *name)
{
	double ms = 0;

	for (unsigned i = 0; i < op->res.nsteps; i++)
		if (strcmp(op->res.steps[i].name, name) == 0)
			ms = op->res.steps[i].ms;
	return ms;
}

/* A step worked: its time since the last recorded one, and news for the client. */
static void record_now(struct gw_op *op, const char *name)
{
	double now = gw_now_ms();

	gw_op_record(op, name, now - op->step_start_ms);
	op->step_start_ms = now;
	op->running = NULL;
	gw_op_progress(op, name);
}

void gw_op_fail(struct gw_op *op, const char *name, const char *fmt, ...)
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

void gw_op_job_fail(struct gw_op *op, unsigned gpu, int r, const char *err)
{
	/* Jobs of different GPUs may fail at once: keep one message (all are logged). */
	pthread_mutex_lock(&op->job_lock);
	if (!op->job_error) {
		op->job_error = r;
		snprintf(op->job_err, sizeof(op->job_err), "GPU %u: %s", gpu, err);
	}
	pthread_mutex_unlock(&op->job_lock);
}

void gw_op_progress(struct gw_op *op, const char *step)
{
	uint64_t total = op->plan->total_bytes ? op->plan->total_bytes(op) : 0;
	cJSON *p;

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

cJSON *gw_op_result_json(const struct gw_op *op)
{
	const struct gw_op_result *res = &op->res;
	cJSON *result = cJSON_CreateObject(), *steps;

	if (!result)
		return NULL;
	if (res->pid > 0)
		cJSON_AddNumberToObject(result, "pid", res->pid);
	cJSON_AddStringToObject(result, "operation", op->plan->operation);
	if (res->state)
		cJSON_AddStringToObject(result, "state", res->state);
	else if (res->state_null)
		cJSON_AddNullToObject(result, "state");
	if (res->path)
		cJSON_AddStringToObject(result, "path", res->path);
	cJSON_AddNumberToObject(result, "duration_ms", res->duration_ms);
	steps = cJSON_AddArrayToObject(result, "steps");
	for (unsigned i = 0; steps && i < res->nsteps; i++) {
		cJSON *st = cJSON_CreateObject();

		if (!st)
			break;
		cJSON_AddStringToObject(st, "step", res->steps[i].name);
		cJSON_AddNumberToObject(st, "duration_ms", res->steps[i].ms);
		cJSON_AddItemToArray(steps, st);
	}
	if (res->image_cache)
		cJSON_AddStringToObject(result, "image_cache", res->image_cache);
	if (op->plan->add_result)
		op->plan->add_result(op, result);
	return result;
}

/* ---- the step runner ---- */

static void advance(struct gw_op *op);

/* The step to run next, or NULL at the end of the phase. */
static const struct gw_step *next_step(struct gw_op *op)
{
	const struct gw_op_plan *plan = op->plan;

	switch (op->phase) {
	case GW_OP_STEPS:
		return op->pc < plan->nsteps ? &plan->steps[op->pc] : NULL;
	case GW_OP_UNDO:
		for (;;) {
			const struct gw_step *s = &plan->steps[op->pc];

			if (op->undo_pc < s->nundo)
				return &s->undo[op->undo_pc];
			if (op->pc == 0)
				return NULL;
			op->pc--;
			op->undo_pc = 0;
		}
	case GW_OP_ALWAYS:
		return op->pc < plan->nalways ? &plan->always[op->pc] : NULL;
	case GW_OP_ENDED:
		break;
	}
	return NULL;
}

/* A step ended with r: record it, or turn to the undo, and move on. */
static void settle(struct gw_op *op, const struct gw_step *s, int r)
{
	switch (op->phase) {
	case GW_OP_STEPS:
		if (r < 0 || op->failed) {
			if (!op->failed)
				gw_op_fail(op, GW_ERROR_INTERNAL, "%s: %s", s->name ? s->name : "a step",
					   strerror(r < 0 ? -r : EIO));
			op->phase = GW_OP_UNDO; /* the failed step's own undo first */
			op->undo_pc = 0;
			return;
		}
		if (r == 0 && s->name)
			record_now(op, s->name);
		op->pc++;
		return;
	case GW_OP_UNDO:
		/* A failed undo step ends its list; earlier steps' lists still run. */
		op->undo_pc = r < 0 ? op->plan->steps[op->pc].nundo : op->undo_pc + 1;
		return;
	case GW_OP_ALWAYS:
		op->pc++;
		return;
	case GW_OP_ENDED:
		break;
	}
}

struct op_job {
	struct gw_op *op;
	const struct gw_step *step;
	unsigned gpu;
};

static void op_job_work(void *data)
{
	struct op_job *job = data;

	if (job->step->thread == GW_STEP_GPUS)
		job->step->run_gpu(job->op, job->gpu);
	else
		job->op->step_r = job->step->run(job->op);
}

static void op_job_done(void *data)
{
	struct op_job *job = data;
	struct gw_op *op = job->op;
	const struct gw_step *s = job->step;
	int r;

	free(job);
	if (--op->jobs_left > 0)
		return;
	r = s->check ? s->check(op, op->step_r) : op->step_r;
	settle(op, s, r);
	advance(op);
}

static struct gw_worker_pool *tracer(struct gw_daemon *d)
{
	if (!d->tracer && gw_worker_pool_create(d->base, 1, &d->tracer) < 0)
		d->tracer = NULL;
	return d->tracer;
}

static int submit(struct gw_op *op, const struct gw_step *s, unsigned gpu)
{
	struct op_job *job = calloc(1, sizeof(*job));
	struct gw_worker_pool *pool = s->thread == GW_STEP_TRACER ? tracer(op->d) : op->d->workers;
	int r = -ENOMEM;

	if (!job || !pool)
		goto fail;
	job->op = op;
	job->step = s;
	job->gpu = gpu;
	op->jobs_left++;
	r = gw_worker_submit_class(pool, op->owner == 0 ? GW_WORK_PRIVILEGED : GW_WORK_USER,
				   op_job_work, op_job_done, job);
	if (r == 0 && pool == op->d->tracer && op->d->stopping)
		gw_opengine_finish(op->d); /* the loop is gone: end it here (op may be too) */
	if (r == 0)
		return 0;
	op->jobs_left--;
fail:
	free(job);
	return r;
}

/* One job per GPU of the plan's set; with none queued, the check runs at once on the error. */
static int submit_gpus(struct gw_op *op, const struct gw_step *s)
{
	uint64_t mask = op->plan->gpus(op);

	op->step_r = 0;
	for (unsigned g = 0; g < 64; g++) {
		if (!(mask & ((uint64_t)1 << g)))
			continue;
		if (submit(op, s, g) < 0) {
			op->job_error = -ENOMEM;
			snprintf(op->job_err, sizeof(op->job_err), "cannot queue copies");
			break;
		}
	}
	if (op->jobs_left > 0)
		return GW_STEP_ASYNC;
	if (!op->job_error)
		op->job_error = -EIO;
	return s->check ? s->check(op, 0) : op->job_error;
}

/* Start s: its result, or GW_STEP_ASYNC when it ends later. */
static int start_step(struct gw_op *op, const struct gw_step *s)
{
	int r;

	switch (s->thread) {
	case GW_STEP_LOOP:
		op->in_run = 1;
		r = s->run(op);
		op->in_run = 0;
		if (r == GW_STEP_ASYNC && op->early)
			r = op->early_r; /* it completed before it returned */
		op->early = 0;
		return r;
	case GW_STEP_GPUS:
		return submit_gpus(op, s);
	case GW_STEP_WORKER:
	case GW_STEP_TRACER:
		op->step_r = 0;
		r = submit(op, s, 0);
		if (r == 0)
			return GW_STEP_ASYNC;
		gw_op_fail(op, GW_ERROR_INTERNAL, "cannot queue work: %s",
			   r == -ESHUTDOWN ? "gpu-warmd is stopping" : strerror(-r));
		return r;
	}
	return -EINVAL;
}

/* Run steps until one goes asynchronous or the plan ends; at the end, finish(). */
static void advance(struct gw_op *op)
{
	const struct gw_step *s;

	for (;;) {
		while ((s = next_step(op))) {
			int r = GW_STEP_SKIP;

			op->current = s;
			if (!s->when || s->when(op)) {
				op->running = s->running;
				r = start_step(op, s);
				if (r == GW_STEP_ASYNC)
					return;
			}
			settle(op, s, r);
		}
		if (op->phase == GW_OP_ALWAYS)
			break;
		op->phase = GW_OP_ALWAYS;
		op->pc = 0;
	}
	struct gw_daemon *d = op->d;

	op->current = NULL;
	op->running = NULL;
	op->plan->finish(op); /* frees op */
	gw_op_changed(d);
}

void gw_op_start(struct gw_op *op)
{
	op->phase = GW_OP_STEPS;
	op->pc = 0;
	advance(op);
}

void gw_op_step_done(struct gw_op *op, int r)
{
	if (op->in_run) {
		op->early = 1;
		op->early_r = r;
		return;
	}
	settle(op, op->current, r);
	advance(op);
}

void gw_opengine_finish(struct gw_daemon *d)
{
	gw_worker_pool_destroy(d->tracer); /* a thawing job ends first */
	d->tracer = NULL;
}
