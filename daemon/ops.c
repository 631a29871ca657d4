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
	CUresult failed_result;   /* CUDA_SUCCESS when every step worked */
	const char *failed_call;  /* the entry point that failed */
	int undone;               /* suspend: unlocked again after a failed checkpoint */
	int gone;                 /* the process exited before a step */
	CUresult undo_result;
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
		return "running";
	case CU_PROCESS_STATE_LOCKED:
		return "locked";
	case CU_PROCESS_STATE_CHECKPOINTED:
		return "checkpointed";
	case CU_PROCESS_STATE_FAILED:
		return "failed";
	}
	return "unknown";
}

/* ---- worker side ---- */

static CUresult run_step(struct gw_pid_job *job, enum gw_op_kind step)
{
	const struct gw_cuda *cuda = job->d->cuda;
	pid_t pid = job->p.pid;
	double start = gw_now_ms();
	CUresult r = CUDA_ERROR_INVALID_VALUE;
	const char *call = "?";

	/* The step acts on the process pinned at dispatch or on nothing: once it has exited its
	 * pid may name another process. */
	if (!gw_pin_alive(&job->p.pin)) {
		job->gone = 1;
		step = GW_OP_KIND_COUNT;
		r = CUDA_ERROR_NOT_FOUND;
		call = "(the process exited)";
	}
	switch (step) {
	case GW_OP_LOCK: {
		CUcheckpointLockArgs args = { .timeoutMs = job->p.timeout_ms };

		call = "cuCheckpointProcessLock";
		r = cuda->cuCheckpointProcessLock(pid, &args);
		break;
	}
	case GW_OP_CHECKPOINT:
		call = "cuCheckpointProcessCheckpoint";
		r = cuda->cuCheckpointProcessCheckpoint(pid, NULL);
		break;
	case GW_OP_RESTORE: {
		CUcheckpointRestoreArgs args;

		memset(&args, 0, sizeof(args));
		args.gpuPairs = (CUcheckpointGpuPair *)job->p.pairs;
		args.gpuPairsCount = job->p.npairs;
		call = "cuCheckpointProcessRestore";
		r = cuda->cuCheckpointProcessRestore(pid, job->p.npairs ? &args : NULL);
		break;
	}
	case GW_OP_UNLOCK:
		call = "cuCheckpointProcessUnlock";
		r = cuda->cuCheckpointProcessUnlock(pid, NULL);
		break;
	default:
		break;
	}
	if (job->nsteps < GW_OP_MAX_STEPS && step < GW_OP_KIND_COUNT) {
		job->steps[job->nsteps].name = gw_op_kind_name(step);
		job->steps[job->nsteps].ms = gw_now_ms() - start;
		job->nsteps++;
	}
	if (r != CUDA_SUCCESS && job->failed_result == CUDA_SUCCESS) {
		job->failed_result = r;
		job->failed_call = call;
	}
	return r;
}

static void pid_job_work(void *data)
{
	struct gw_pid_job *job = data;
	double start = gw_now_ms();

	switch (job->p.kind) {
	case GW_OP_SUSPEND:
		if (run_step(job, GW_OP_LOCK) == CUDA_SUCCESS &&
		    run_step(job, GW_OP_CHECKPOINT) != CUDA_SUCCESS && !job->gone) {
			job->undone = 1;
			job->undo_result = job->d->cuda->cuCheckpointProcessUnlock(job->p.pid, NULL);
		}
		break;
	case GW_OP_RESUME: {
		CUprocessState state;

		/* Locked already: its restore happened (an earlier resume whose unlock failed, or a
		 * daemon killed between the two) or it never got as far as a checkpoint (a suspend
		 * cut short): either way unlocking is what is left to bring it back. */
		if (gw_pin_alive(&job->p.pin) &&
		    job->d->cuda->cuCheckpointProcessGetState(job->p.pid, &state) == CUDA_SUCCESS &&
		    state == CU_PROCESS_STATE_LOCKED) {
			run_step(job, GW_OP_UNLOCK);
			break;
		}
		if (run_step(job, GW_OP_RESTORE) == CUDA_SUCCESS)
			run_step(job, GW_OP_UNLOCK);
		break;
	}
	default:
		run_step(job, job->p.kind);
		break;
	}
	job->total_ms = gw_now_ms() - start;
	job->have_state = gw_pin_alive(&job->p.pin) &&
		job->d->cuda->cuCheckpointProcessGetState(job->p.pid, &job->state) == CUDA_SUCCESS;
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
	CUresult r = job->failed_result;
	char text[192], tail[192] = "";
	const char *name = GW_ERROR_CUDA;
	cJSON *extra = job_result(job);

	if (extra)
		cJSON_AddNumberToObject(extra, "cuda_error", r);
	if (r == CUDA_ERROR_ILLEGAL_STATE)
		name = GW_ERROR_ILLEGAL_STATE;
	else if (r == CUDA_ERROR_NOT_READY || r == CUDA_ERROR_TIMEOUT)
		name = GW_ERROR_TIMEOUT;
	else if (r == CUDA_ERROR_NOT_FOUND)
		name = GW_ERROR_NO_SUCH_PROCESS;
	if (job->undone)
		snprintf(tail, sizeof(tail), "; unlocked it again: %s",
			 job->undo_result == CUDA_SUCCESS ?
				 "it runs on" :
				 gw_cuda_describe(cuda, job->undo_result, text, sizeof(text)));
	if (job->gone)
		gw_request_fail(job->req, GW_ERROR_NO_SUCH_PROCESS, extra,
				"pid %d exited before the operation was done%s", job->p.pid, tail);
	else if (r == CUDA_ERROR_NOT_FOUND)
		gw_request_fail(job->req, GW_ERROR_NOT_CUDA, extra,
				"pid %d is not a CUDA process (%s): the driver does not know it%s",
				job->p.pid, job->failed_call, tail);
	else if (r == CUDA_ERROR_ILLEGAL_STATE)
		gw_request_fail(job->req, name, extra, "%s(pid %d): the process is %s, which this "
				"step does not accept%s",
				job->failed_call, job->p.pid,
				job->have_state ? state_name(job->state) : "in an unknown state", tail);
	else
		gw_request_fail(job->req, name, extra, "%s(pid %d): %s%s", job->failed_call,
				job->p.pid, gw_cuda_describe(cuda, r, text, sizeof(text)), tail);
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
	gw_op_stats_record(stats, job->failed_result == CUDA_SUCCESS, job->total_ms, 0);
	if (job->failed_result == CUDA_SUCCESS) {
		gw_info("%s pid %d: %s in %.1f ms", gw_op_kind_name(job->p.kind), job->p.pid,
			job->have_state ? state_name(job->state) : "?", job->total_ms);
		if (job->have_state && job->state == CU_PROCESS_STATE_RUNNING)
			forget_source_gpus(d, job->p.pid);
		gw_request_reply(job->req, job_result(job));
	} else {
		gw_warn("%s pid %d failed in %s: CUresult %d", gw_op_kind_name(job->p.kind),
			job->p.pid, job->failed_call, job->failed_result);
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
