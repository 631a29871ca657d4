/* SPDX-License-Identifier: MIT */
/*
 * Process operations: the driver's cuCheckpointProcess* calls, made on a worker with the
 * daemon's warm driver (no cuInit per call), one operation per pid at a time. Suspend is lock +
 * checkpoint and unlocks again if the checkpoint fails, so a failed suspend leaves the process
 * running. Resume is restore + unlock, or the unlock alone for a process found locked (what a
 * suspend or resume cut short leaves), so `warmctl resume` always brings a process back.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "clock.h"
#include "daemon.h"
#include "fastpath.h"
#include "log.h"
#include "gw-ckpt.h"
#include "gw-pidgpu.h"
#include "opengine.h"

/* An operation of the driver path: one worker step, the shared checkpoint sequence, whose
 * driver steps it records itself. */
struct gw_pid_job {
	struct gw_op op;
	struct gw_pid_job *next;
	struct gw_pid_op_params p;

	/* filled by the worker */
	struct gw_ckpt_outcome outcome;
	int gone;                 /* the process exited before a step */
	CUprocessState state;
	int have_state;
	double total_ms;
};

/* GPUs seen open by a process when we locked it: where it will want to be restored from. */
struct gw_pid_record {
	struct gw_pid_record *next;
	pid_t pid;
	unsigned count;
	unsigned gpus[GW_GPU_MAX];
};

static const char *state_name(CUprocessState s)
{
	switch (s) {
	case CU_PROCESS_STATE_RUNNING:
		return GW_PROCESS_STATE_RUNNING;
	case CU_PROCESS_STATE_LOCKED:
		return GW_PROCESS_STATE_LOCKED;
	case CU_PROCESS_STATE_CHECKPOINTED:
		return GW_PROCESS_STATE_CHECKPOINTED;
	case CU_PROCESS_STATE_FAILED:
		return GW_PROCESS_STATE_FAILED;
	}
	return GW_PROCESS_STATE_UNKNOWN;
}

/* ---- worker side ---- */

/* The sequence's observer: each step acts on the process pinned at dispatch or on nothing, since
 * once it has exited its pid may name another process; each step's time goes into the reply. */
static int before_step(void *ctx, enum gw_ckpt_step step)
{
	struct gw_pid_job *job = ctx;

	(void)step;
	job->gone = !gw_pin_alive(&job->p.pin);
	return job->gone;
}

static void after_step(void *ctx, enum gw_ckpt_step step, CUresult r, double ms)
{
	struct gw_pid_job *job = ctx;

	(void)r;
	gw_op_record(&job->op, gw_ckpt_step_name(step), ms);
}

static const enum gw_ckpt_step single_steps[GW_OP_KIND_COUNT] = {
	[GW_OP_LOCK] = GW_CKPT_LOCK,
	[GW_OP_CHECKPOINT] = GW_CKPT_CHECKPOINT,
	[GW_OP_RESTORE] = GW_CKPT_RESTORE,
	[GW_OP_UNLOCK] = GW_CKPT_UNLOCK,
};

static int pid_job_work(struct gw_op *op)
{
	struct gw_pid_job *job = GW_OP_OF(op, struct gw_pid_job);
	const struct gw_cuda *cuda = op->d->cuda;
	struct gw_ckpt_observer obs = { before_step, after_step, job };
	struct gw_ckpt_args args = {
		.lock_timeout_ms = job->p.timeout_ms,
		.pairs = job->p.pairs,
		.npairs = job->p.npairs,
	};
	struct gw_ckpt_outcome out;
	double start = gw_now_ms();

	if (job->p.kind == GW_OP_SUSPEND)
		gw_ckpt_suspend(cuda, job->p.pid, &args, &obs, &out);
	else if (job->p.kind == GW_OP_RESUME)
		gw_ckpt_resume(cuda, job->p.pid, &args, &obs, &out);
	else
		gw_ckpt_single(cuda, job->p.pid, single_steps[job->p.kind], &args, &obs, &out);
	job->outcome = out;
	job->total_ms = gw_now_ms() - start;
	job->have_state = gw_pin_alive(&job->p.pin) &&
		cuda->cuCheckpointProcessGetState(job->p.pid, &job->state) == CUDA_SUCCESS;
	return 0;
}

static int job_failed(const struct gw_pid_job *job)
{
	return job->gone || job->outcome.result != CUDA_SUCCESS;
}

/* ---- loop side ---- */

static void record_source_gpus(struct gw_daemon *d, pid_t pid)
{
	char pci[GW_PIDGPU_MAX][GW_PIDGPU_PCI_LEN];
	struct gw_pid_record *rec = NULL;
	int n = gw_pid_gpus("/proc", pid, pci, GW_PIDGPU_MAX);

	if (n <= 0)
		return;
	for (struct gw_pid_record *r = d->pid_records; r; r = r->next)
		if (r->pid == pid)
			rec = r;
	if (!rec) {
		rec = calloc(1, sizeof(*rec));
		if (!rec)
			return;
		rec->pid = pid;
		rec->next = d->pid_records;
		d->pid_records = rec;
	}
	rec->count = 0;
	for (int i = 0; i < n; i++) {
		struct gw_gpu *gpu = gw_gpu_find(d->gpu_table.gpus, d->gpu_table.count, pci[i]);

		if (gpu && rec->count < GW_GPU_MAX)
			rec->gpus[rec->count++] = gpu->index;
	}
}

static void forget_source_gpus(struct gw_daemon *d, pid_t pid)
{
	for (struct gw_pid_record **p = &d->pid_records; *p; p = &(*p)->next) {
		if ((*p)->pid == pid) {
			struct gw_pid_record *dead = *p;

			*p = dead->next;
			free(dead);
			return;
		}
	}
}

unsigned gw_ops_pid_source_gpus(const struct gw_daemon *d, pid_t pid, unsigned *ret_indexes,
				unsigned max)
{
	for (const struct gw_pid_record *r = d->pid_records; r; r = r->next) {
		if (r->pid != pid)
			continue;
		for (unsigned i = 0; i < r->count && i < max; i++)
			ret_indexes[i] = r->gpus[i];
		return r->count < max ? r->count : max;
	}
	return 0;
}

int gw_ops_pid_busy(const struct gw_daemon *d, pid_t pid)
{
	for (const struct gw_pid_job *j = d->pid_jobs; j; j = j->next)
		if (j->p.pid == pid)
			return 1;
	return gw_fast_busy(d, pid);
}

static cJSON *job_result(struct gw_pid_job *job)
{
	struct gw_op_result *res = &job->op.res;

	res->pid = job->p.pid;
	res->path = "driver";
	res->state = job->have_state ? state_name(job->state) : NULL;
	res->state_null = !job->have_state;
	res->duration_ms = job->total_ms;
	return gw_op_result_json(&job->op);
}

static void fail_job(struct gw_pid_job *job)
{
	const struct gw_cuda *cuda = job->op.d->cuda;
	const struct gw_ckpt_outcome *o = &job->outcome;
	CUresult r = o->result;
	const char *call = gw_ckpt_step_call(o->failed_step);
	char text[192], tail[192] = "";
	cJSON *extra = job_result(job);

	if (extra && !job->gone)
		cJSON_AddNumberToObject(extra, "cuda_error", r);
	if (o->undone)
		snprintf(tail, sizeof(tail), "; unlocked it again: %s",
			 o->undo_result == CUDA_SUCCESS ?
				 "it runs on" :
				 gw_cuda_describe(cuda, o->undo_result, text, sizeof(text)));
	if (job->gone)
		gw_request_fail(job->op.req, GW_ERROR_NO_SUCH_PROCESS, extra,
				"pid %d exited before the operation was done%s", job->p.pid, tail);
	else if (r == CUDA_ERROR_NOT_FOUND)
		gw_request_fail(job->op.req, GW_ERROR_NOT_CUDA, extra,
				"pid %d is not a CUDA process (%s): the driver does not know it%s",
				job->p.pid, call, tail);
	else if (r == CUDA_ERROR_ILLEGAL_STATE)
		gw_request_fail(job->op.req, GW_ERROR_ILLEGAL_STATE, extra,
				"%s(pid %d): the process is %s, which this step does not accept%s",
				call, job->p.pid,
				job->have_state ? state_name(job->state) : "in an unknown state", tail);
	else
		gw_request_fail(job->op.req, gw_error_for_errno(gw_cuda_errno(r)), extra,
				"%s(pid %d): %s%s", call, job->p.pid,
				gw_cuda_describe(cuda, r, text, sizeof(text)), tail);
}

static void pid_job_done(struct gw_op *op)
{
	struct gw_pid_job *job = GW_OP_OF(op, struct gw_pid_job);
	struct gw_daemon *d = op->d;
	struct gw_op_stats *stats = &d->stats[job->p.kind];

	for (struct gw_pid_job **p = &d->pid_jobs; *p; p = &(*p)->next)
		if (*p == job) {
			*p = job->next;
			break;
		}
	gw_op_release(op);
	gw_quota_give(&d->quota, job->p.owner);
	gw_op_stats_record(stats, !op->failed && !job_failed(job), job->total_ms, 0);
	if (op->failed) {
		gw_warn("%s pid %d failed: %s", gw_op_kind_name(job->p.kind), job->p.pid, op->error);
		gw_request_fail(op->req, op->error_name, NULL, "%s", op->error);
	} else if (!job_failed(job)) {
		gw_info("%s pid %d: %s in %.1f ms", gw_op_kind_name(job->p.kind), job->p.pid,
			job->have_state ? state_name(job->state) : "?", job->total_ms);
		if (job->have_state && job->state == CU_PROCESS_STATE_RUNNING)
			forget_source_gpus(d, job->p.pid);
		gw_request_reply(op->req, job_result(job));
	} else {
		gw_warn("%s pid %d failed in %s: CUresult %d%s", gw_op_kind_name(job->p.kind),
			job->p.pid, gw_ckpt_step_call(job->outcome.failed_step), job->outcome.result,
			job->gone ? " (the process exited)" : "");
		fail_job(job);
	}
	gw_pin_close(&job->p.pin);
	free(job);
}

static const struct gw_step pid_steps[] = {
	{ .thread = GW_STEP_WORKER, .run = pid_job_work },
};

/* One plan per kind: the reply's "operation" is its name. */
#define PID_PLAN(kind) { .operation = #kind, .steps = pid_steps, .nsteps = 1, .finish = pid_job_done }
static const struct gw_op_plan pid_plans[GW_OP_KIND_COUNT] = {
	[GW_OP_LOCK] = PID_PLAN(lock),
	[GW_OP_CHECKPOINT] = PID_PLAN(checkpoint),
	[GW_OP_RESTORE] = PID_PLAN(restore),
	[GW_OP_UNLOCK] = PID_PLAN(unlock),
	[GW_OP_SUSPEND] = PID_PLAN(suspend),
	[GW_OP_RESUME] = PID_PLAN(resume),
};

int gw_ops_start(struct gw_daemon *d, struct gw_request *req, struct gw_pid_op_params *p)
{
	struct gw_pid_job *job = calloc(1, sizeof(*job));

	if (!job)
		return -ENOMEM;
	if (!d->workers) {
		free(job);
		return -ESHUTDOWN;
	}
	gw_op_init(&job->op, d, req, &pid_plans[p->kind], p->pid, p->owner, 0);
	job->p = *p;
	job->p.pin.pidfd = -1;
	gw_pin_move(&job->p.pin, &p->pin);
	/* Before the driver releases the process's device handles, note which GPUs it uses. */
	if (p->kind == GW_OP_LOCK || p->kind == GW_OP_SUSPEND)
		record_source_gpus(d, p->pid);
	job->next = d->pid_jobs;
	d->pid_jobs = job;
	gw_op_gpus_begin(&job->op, p->gpu_mask);
	gw_gpu_table_changed(&d->gpu_table);
	gw_op_start(&job->op);
	return 0;
}

void gw_ops_finish(struct gw_daemon *d)
{
	/* Operations on the tracer thread end now, while their requests can still be answered. */
	gw_opengine_finish(d);
	while (d->pid_records)
		forget_source_gpus(d, d->pid_records->pid);
}
