/* SPDX-License-Identifier: MIT */
/*
 * Baseline for benchmarks: what a fresh process pays to toggle a CUDA process through the
 * driver's checkpoint API (what cuda-checkpoint and CRIU's cuda_plugin do per call): load the
 * driver, cuInit, then lock+checkpoint ("suspend") or restore+unlock ("resume").
 * Prints one JSON line with the timings.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "gw-cuda.h"

static double now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec / 1e6;
}

int main(int argc, char **argv)
{
	struct gw_cuda *cuda;
	double t0, t_load, t_init, t_end;
	char err[256], text[160];
	CUresult r = CUDA_SUCCESS;
	int pid, suspend;

	if (argc != 3 || (strcmp(argv[1], "suspend") && strcmp(argv[1], "resume"))) {
		fprintf(stderr, "usage: gw-ckpt-fresh suspend|resume PID\n");
		return 2;
	}
	suspend = strcmp(argv[1], "suspend") == 0;
	pid = atoi(argv[2]);
	t0 = now_ms();
	if (gw_cuda_load(NULL, &cuda, err, sizeof(err)) < 0) {
		fprintf(stderr, "gw-ckpt-fresh: %s\n", err);
		return 1;
	}
	t_load = now_ms();
	r = cuda->cuInit(0);
	t_init = now_ms();
	if (r == CUDA_SUCCESS && !gw_cuda_has_checkpoint(cuda))
		r = CUDA_ERROR_NOT_SUPPORTED;
	if (r == CUDA_SUCCESS && suspend) {
		CUcheckpointLockArgs args = { .timeoutMs = 10000 };

		r = cuda->cuCheckpointProcessLock(pid, &args);
		if (r == CUDA_SUCCESS)
			r = cuda->cuCheckpointProcessCheckpoint(pid, NULL);
	} else if (r == CUDA_SUCCESS) {
		r = cuda->cuCheckpointProcessRestore(pid, NULL);
		if (r == CUDA_SUCCESS)
			r = cuda->cuCheckpointProcessUnlock(pid, NULL);
	}
	t_end = now_ms();
	if (r != CUDA_SUCCESS) {
		fprintf(stderr, "gw-ckpt-fresh %s %d: %s\n", argv[1], pid,
			gw_cuda_describe(cuda, r, text, sizeof(text)));
		gw_cuda_unload(cuda);
		return 1;
	}
	printf("{\"tool\":\"fresh\",\"action\":\"%s\",\"pid\":%d,\"load_ms\":%.3f,\"cuinit_ms\":%.3f,"
	       "\"action_ms\":%.3f,\"total_ms\":%.3f}\n",
	       argv[1], pid, t_load - t0, t_init - t_load, t_end - t_init, t_end - t0);
	gw_cuda_unload(cuda);
	return 0;
}
