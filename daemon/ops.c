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

#define GW_OP_MAX_STEPS 4

struct gw_pid_job {
	struct gw_pid_job *next;
	struct gw_daemon *d;
	struct gw_request *req;
	struct gw_pid_op_params p;

	/* filled by the worker */
	struct {
		const char *name;
		double ms;
	} steps[GW_OP_MAX_STEPS];
	unsigned nsteps;
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
	if (job->nsteps < GW_OP_MAX_STEPS) {
		job->steps[job->nsteps].name = gw_ckpt_step_name(step);
		job->steps[job->nsteps].ms = ms;
		job->nsteps++;
	}
}

static const enum gw_ckpt_step single_steps[GW_OP_KIND_COUNT] = {
	[GW_OP_LOCK] = GW_CKPT_LOCK,
	[GW_OP_CHECKPOINT] = GW_CKPT_CHECKPOINT,
	[GW_OP_RESTORE] = GW_CKPT_RESTORE,
	[GW_OP_UNLOCK] = GW_CKPT_UNLOCK,
};

static void pid_job_work(void *data)
{
	struct gw_pid_job *job = data;
	const struct gw_cuda *cuda = job->d->cuda;
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
		struct gw_gpu *gpu = gw_gpu_find(d->gpus, d->ngpus, pci[i]);

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

static void count_in_flight(struct gw_daemon *d, uint64_t mask, int delta)
{
	for (unsigned i = 0; i < d->ngpus; i++)
		if (mask & ((uint64_t)1 << i))
			d->gpus[i].in_flight = (unsigned)((int)d->gpus[i].in_flight + delta);
}

static cJSON *job_result(const struct gw_pid_job *job)
{
	cJSON *result = cJSON_CreateObject(), *steps;

	if (!result)
		return NULL;
	cJSON_AddNumberToObject(result, "pid", job->p.pid);
	cJSON_AddStringToObject(result, "operation", gw_op_kind_name(job->p.kind));
	if (job->have_state)
		cJSON_AddStringToObject(result, "state", state_name(job->state));
	else
		cJSON_AddNullToObject(result, "state");
	cJSON_AddStringToObject(result, "path", "driver");
	cJSON_AddNumberToObject(result, "duration_ms", job->total_ms);
	steps = cJSON_AddArrayToObject(result, "steps");
	for (unsigned i = 0; steps && i < job->nsteps; i++) {
		cJSON *s = cJSON_CreateObject();

		if (!s)
			break;
		cJSON_AddStringToObject(s, "step", job->steps[i].name);
		cJSON_AddNumberToObject(s, "duration_ms", job->steps[i].ms);
		cJSON_AddItemToArray(steps, s);
	}
	return result;
}

static void fail_job(struct gw_pid_job *job)
{
	const struct gw_cuda *cuda = job->d->cuda;
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
		gw_request_fail(job->req, GW_ERROR_NO_SUCH_PROCESS, extra,
				"pid %d exited before the operation was done%s", job->p.pid, tail);
	else if (r == CUDA_ERROR_NOT_FOUND)
		gw_request_fail(job->req, GW_ERROR_NOT_CUDA, extra,
				"pid %d is not a CUDA process (%s): the driver does not know it%s",
				job->p.pid, call, tail);
	else if (r == CUDA_ERROR_ILLEGAL_STATE)
		gw_request_fail(job->req, GW_ERROR_ILLEGAL_STATE, extra,
				"%s(pid %d): the process is %s, which this step does not accept%s",
				call, job->p.pid,
				job->have_state ? state_name(job->state) : "in an unknown state", tail);
	else
		gw_request_fail(job->req, gw_error_for_errno(gw_cuda_errno(r)), extra,
				"%s(pid %d): %s%s", call, job->p.pid,
				gw_cuda_describe(cuda, r, text, sizeof(text)), tail);
}

static void pid_job_done(void *data)
{
	struct gw_pid_job *job = data;
	struct gw_daemon *d = job->d;
	struct gw_op_stats *stats = &d->stats[job->p.kind];

	for (struct gw_pid_job **p = &d->pid_jobs; *p; p = &(*p)->next)
		if (*p == job) {
			*p = job->next;
			break;
		}
	count_in_flight(d, job->p.gpu_mask, -1);
	gw_quota_give(&d->quota, job->p.owner);
	gw_op_stats_record(stats, !job_failed(job), job->total_ms, 0);
	if (!job_failed(job)) {
		gw_info("%s pid %d: %s in %.1f ms", gw_op_kind_name(job->p.kind), job->p.pid,
			job->have_state ? state_name(job->state) : "?", job->total_ms);
		if (job->have_state && job->state == CU_PROCESS_STATE_RUNNING)
			forget_source_gpus(d, job->p.pid);
		gw_request_reply(job->req, job_result(job));
	} else {
		gw_warn("%s pid %d failed in %s: CUresult %d%s", gw_op_kind_name(job->p.kind),
			job->p.pid, gw_ckpt_step_call(job->outcome.failed_step), job->outcome.result,
			job->gone ? " (the process exited)" : "");
		fail_job(job);
	}
	gw_pin_close(&job->p.pin);
	free(job);
	gw_daemon_gpus_changed(d);
}

int gw_ops_start(struct gw_daemon *d, struct gw_request *req, struct gw_pid_op_params *p)
{
	struct gw_pid_job *job = calloc(1, sizeof(*job));
	int r;

	if (!job)
		return -ENOMEM;
	job->d = d;
	job->req = req;
	job->p = *p;
	job->p.pin.pidfd = -1;
	gw_pin_move(&job->p.pin, &p->pin);
	/* Before the driver releases the process's device handles, note which GPUs it uses. */
	if (p->kind == GW_OP_LOCK || p->kind == GW_OP_SUSPEND)
		record_source_gpus(d, p->pid);
	r = gw_worker_submit_class(d->workers, p->owner == 0 ? GW_WORK_PRIVILEGED : GW_WORK_USER,
				   pid_job_work, pid_job_done, job);
	if (r < 0) {
		gw_pin_move(&p->pin, &job->p.pin);
		free(job);
		return r;
	}
	job->next = d->pid_jobs;
	d->pid_jobs = job;
	count_in_flight(d, p->gpu_mask, +1);
	gw_daemon_update_status(d);
	return 0;
}

void gw_ops_finish(struct gw_daemon *d)
{
	while (d->pid_records)
		forget_source_gpus(d, d->pid_records->pid);
}
