/* SPDX-License-Identifier: MIT */
/*
 * Baseline for benchmarks: what a fresh process pays to toggle a CUDA process through the
 * driver's checkpoint API (what cuda-checkpoint and CRIU's cuda_plugin do per call): load the
 * driver, cuInit, then lock+checkpoint ("suspend") or restore+unlock ("resume").
 * Prints one JSON line with the timings.
 *
 * Called with options instead (as `cuda-checkpoint`, through a wrapper on PATH), it takes the
 * subset of NVIDIA's cuda-checkpoint command line that CRIU's plugins/cuda/cuda_plugin.c uses,
 * with the same output, so that plugin can run where the cuda-checkpoint binary is absent:
 *   -h | --help                      usage (cuda_plugin looks for "--action" in it)
 *   --get-state --pid P              running | locked | checkpointed | failed
 *   --get-restore-tid --pid P        the CUDA restore thread's tid
 *   --action lock|checkpoint|restore|unlock --pid P [--timeout MS]
 * Each call is a fresh process: load the driver, cuInit, one driver call (what cuda-checkpoint
 * pays). With $GW_CKPT_FRESH_LOG set, one JSON line per call is appended to that file.
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

static const char cc_usage[] =
	"usage: cuda-checkpoint (gw-ckpt-fresh stand-in) [options]\n"
	"  --action lock|checkpoint|restore|unlock --pid <pid> [--timeout <ms>]\n"
	"  --get-state --pid <pid>\n"
	"  --get-restore-tid --pid <pid>\n"
	"  -h, --help\n";

static void cc_trace(const char *what, int pid, double load_ms, double init_ms, double call_ms, int ok)
{
	const char *path = getenv("GW_CKPT_FRESH_LOG");
	FILE *f;

	if (!path || !*path || !(f = fopen(path, "a")))
		return;
	fprintf(f, "{\"tool\":\"gw-ckpt-fresh\",\"call\":\"%s\",\"pid\":%d,\"load_ms\":%.3f,"
		   "\"cuinit_ms\":%.3f,\"call_ms\":%.3f,\"ok\":%s}\n",
		what, pid, load_ms, init_ms, call_ms, ok ? "true" : "false");
	fclose(f);
}

/* The process a thread id belongs to (cuda_plugin asks --get-state of the restore thread's tid;
 * the driver's calls take the process's pid). Unchanged when /proc does not say. */
static int tgid_of(int tid)
{
	char path[64], line[128];
	int tgid = tid;
	FILE *f;

	snprintf(path, sizeof(path), "/proc/%d/status", tid);
	f = fopen(path, "r");
	if (!f)
		return tid;
	while (fgets(line, sizeof(line), f))
		if (sscanf(line, "Tgid: %d", &tgid) == 1)
			break;
	fclose(f);
	return tgid > 0 ? tgid : tid;
}

/* cuda-checkpoint's command line (the part cuda_plugin uses). */
static int cc_main(int argc, char **argv)
{
	const char *action = NULL, *what;
	int get_state = 0, get_tid = 0, pid = 0, i;
	unsigned int timeout_ms = 0;
	struct gw_cuda *cuda;
	char err[256], text[160];
	double t0, t_load, t_init, t_end;
	CUresult r;

	for (i = 1; i < argc; i++) {
		if (!strcmp(argv[i], "-h") || !strcmp(argv[i], "--help")) {
			fputs(cc_usage, stdout);
			return 0;
		} else if (!strcmp(argv[i], "--get-state")) {
			get_state = 1;
		} else if (!strcmp(argv[i], "--get-restore-tid")) {
			get_tid = 1;
		} else if (!strcmp(argv[i], "--action") && i + 1 < argc) {
			action = argv[++i];
		} else if (!strcmp(argv[i], "--pid") && i + 1 < argc) {
			pid = atoi(argv[++i]);
		} else if (!strcmp(argv[i], "--timeout") && i + 1 < argc) {
			timeout_ms = (unsigned int)strtoul(argv[++i], NULL, 10);
		} else {
			fprintf(stderr, "unknown option %s\n%s", argv[i], cc_usage);
			return 2;
		}
	}
	if (pid <= 0 || get_state + get_tid + (action != NULL) != 1 ||
	    (action && strcmp(action, "lock") && strcmp(action, "checkpoint") && strcmp(action, "restore") &&
	     strcmp(action, "unlock"))) {
		fputs(cc_usage, stderr);
		return 2;
	}
	what = get_state ? "get-state" : get_tid ? "get-restore-tid" : action;
	pid = tgid_of(pid);
	t0 = now_ms();
	if (gw_cuda_load(NULL, &cuda, err, sizeof(err)) < 0) {
		fprintf(stderr, "%s\n", err);
		cc_trace(what, pid, now_ms() - t0, 0, 0, 0);
		return 1;
	}
	t_load = now_ms();
	r = cuda->cuInit(0);
	t_init = now_ms();
	if (r == CUDA_SUCCESS && !gw_cuda_has_checkpoint(cuda))
		r = CUDA_ERROR_NOT_SUPPORTED;
	if (r == CUDA_SUCCESS && get_state) {
		CUprocessState st;
		static const char *const names[] = { "running", "locked", "checkpointed", "failed" };

		r = cuda->cuCheckpointProcessGetState(pid, &st);
		if (r == CUDA_SUCCESS)
			printf("%s\n", (unsigned int)st < 4 ? names[st] : "unknown");
	} else if (r == CUDA_SUCCESS && get_tid) {
		int tid = 0;

		r = cuda->cuCheckpointProcessGetRestoreThreadId(pid, &tid);
		if (r == CUDA_SUCCESS)
			printf("%d\n", tid);
	} else if (r == CUDA_SUCCESS && !strcmp(action, "lock")) {
		CUcheckpointLockArgs args = { .timeoutMs = timeout_ms };

		r = cuda->cuCheckpointProcessLock(pid, &args);
	} else if (r == CUDA_SUCCESS && !strcmp(action, "checkpoint")) {
		r = cuda->cuCheckpointProcessCheckpoint(pid, NULL);
	} else if (r == CUDA_SUCCESS && !strcmp(action, "restore")) {
		r = cuda->cuCheckpointProcessRestore(pid, NULL);
	} else if (r == CUDA_SUCCESS) {
		r = cuda->cuCheckpointProcessUnlock(pid, NULL);
	}
	t_end = now_ms();
	cc_trace(what, pid, t_load - t0, t_init - t_load, t_end - t_init, r == CUDA_SUCCESS);
	if (r != CUDA_SUCCESS) {
		printf("Could not %s on process ID %d: \"%s\"\n", what, pid,
		       gw_cuda_describe(cuda, r, text, sizeof(text)));
		gw_cuda_unload(cuda);
		return 1;
	}
	fflush(stdout);
	gw_cuda_unload(cuda);
	return 0;
}

int main(int argc, char **argv)
{
	struct gw_cuda *cuda;
	double t0, t_load, t_init, t_end;
	char err[256], text[160];
	CUresult r = CUDA_SUCCESS;
	int pid, suspend;

	if (argc >= 2 && argv[1][0] == '-')
		return cc_main(argc, argv);
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
