/* SPDX-License-Identifier: MIT */
/* The fast VRAM path end to end over the fake driver: the real gpu-warmd, gw-vram-app under the
 * in-process shim (LD_PRELOAD), warmctl. */
#include <errno.h>
#include <signal.h>
#include <pty.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "gw-proto.h"
#include "gw-test.h"
#include "harness.h"

static void start_shimmed_args(const struct gwt_daemon *d, struct gwt_app *app, const char *mib,
			       const char *const *args)
{
	gwt_app_start_shimmed(d, app, atof(mib), args);
}

static void start_shimmed(const struct gwt_daemon *d, struct gwt_app *app, const char *mib,
			  const char *chunk_mib)
{
	start_shimmed_args(d, app, mib, GWT_ARGS("--mib", mib, "--chunk-mib", chunk_mib));
}

static void assert_state(const struct gwt_daemon *d, pid_t pid, const char *state)
{
	cJSON *j = gwt_ctl(d, 0, GWT_ARGS("state", gwt_pid(pid)));

	GW_ASSERT_STR_EQ(gwt_json_str(j, "result.state"), state);
	cJSON_Delete(j);
}

static int has_step(const cJSON *j, const char *name)
{
	const cJSON *s;

	cJSON_ArrayForEach(s, gwt_json(j, "result.steps"))
		if (gwt_json_str(s, "step") && strcmp(gwt_json_str(s, "step"), name) == 0)
			return 1;
	return 0;
}

GW_TEST(fast_suspend_resume_keeps_data)
{
	struct gwt_daemon d;
	struct gwt_app app;
	char line[256];
	cJSON *j;

	gwt_daemon_start(&d, GWT_ARGS("--image-pool-mib", "256"));
	start_shimmed(&d, &app, "96", "32");
	for (int round = 0; round < 2; round++) {
		j = gwt_ctl(&d, 0, GWT_ARGS("suspend", gwt_pid(app.pid)));
		GW_ASSERT_STR_EQ(gwt_json_str(j, "result.path"), "fast");
		GW_ASSERT_STR_EQ(gwt_json_str(j, "result.state"), "checkpointed");
		GW_ASSERT_INT_EQ(gwt_json_num(j, "result.vram_bytes"), 96 << 20);
		GW_ASSERT(has_step(j, "copy") && has_step(j, "release") && has_step(j, "checkpoint"));
		/* the agent gave its host pages of zeros back after the checkpoint */
		GW_ASSERT(has_step(j, "trim") && gwt_json(j, "result.trimmed_bytes"));
		cJSON_Delete(j);
		assert_state(&d, app.pid, "checkpointed");
		j = gwt_ctl(&d, 0, GWT_ARGS("status"));
		GW_ASSERT_INT_EQ(gwt_json_num(j, "result.processes.0.held_bytes"), 96 << 20);
		/* 96 MiB packed into 64 MiB pool blocks: two of them */
		GW_ASSERT_INT_EQ(gwt_json_num(j, "result.daemon.image_pool_free_bytes"), 128 << 20);
		cJSON_Delete(j);
		j = gwt_ctl(&d, 0, GWT_ARGS("resume", gwt_pid(app.pid)));
		GW_ASSERT_STR_EQ(gwt_json_str(j, "result.path"), "fast");
		GW_ASSERT_STR_EQ(gwt_json_str(j, "result.state"), "running");
		GW_ASSERT(has_step(j, "fill") && has_step(j, "map"));
		cJSON_Delete(j);
		GW_ASSERT(gwt_app_verify(&app, line, sizeof(line)));
	}
	j = gwt_ctl(&d, 0, GWT_ARGS("status"));
	GW_ASSERT_INT_EQ(gwt_json_num(j, "result.daemon.image_pool_free_bytes"), 256 << 20);
	GW_ASSERT_INT_EQ(gwt_json_num(j, "result.processes.0.held_bytes"), 0);
	cJSON_Delete(j);
	gwt_app_stop(&app);
	gwt_daemon_stop(&d);
}

/* GPUWARM_SHIM_NO_TRIM=1: the agent keeps its pages of zeros, the suspend is the same. */
GW_TEST(fast_suspend_without_trim_when_the_app_says_so)
{
	struct gwt_daemon d;
	struct gwt_app app;
	char line[256];
	cJSON *j;

	gwt_daemon_start(&d, GWT_ARGS("--image-pool-mib", "128"));
	setenv("GPUWARM_SHIM_NO_TRIM", "1", 1);
	start_shimmed(&d, &app, "64", "32");
	unsetenv("GPUWARM_SHIM_NO_TRIM");
	j = gwt_ctl(&d, 0, GWT_ARGS("suspend", gwt_pid(app.pid)));
	GW_ASSERT_STR_EQ(gwt_json_str(j, "result.state"), "checkpointed");
	GW_ASSERT(has_step(j, "trim") && !gwt_json(j, "result.trimmed_bytes"));
	cJSON_Delete(j);
	cJSON_Delete(gwt_ctl(&d, 0, GWT_ARGS("resume", gwt_pid(app.pid))));
	GW_ASSERT(gwt_app_verify(&app, line, sizeof(line)));
	gwt_app_stop(&app);
	gwt_daemon_stop(&d);
}

GW_TEST(many_ranges_go_in_batches)
{
	struct gwt_daemon d;
	struct gwt_app app;
	char line[256];
	cJSON *j;

	gwt_daemon_start(&d, GWT_ARGS("--image-pool-mib", "1024"));
	start_shimmed(&d, &app, "500", "2"); /* 250 ranges: more than one message's fds */
	j = gwt_ctl(&d, 0, GWT_ARGS("suspend", gwt_pid(app.pid)));
	GW_ASSERT_STR_EQ(gwt_json_str(j, "result.path"), "fast");
	GW_ASSERT_INT_EQ(gwt_json_num(j, "result.ranges"), 250);
	cJSON_Delete(j);
	cJSON_Delete(gwt_ctl(&d, 0, GWT_ARGS("resume", gwt_pid(app.pid))));
	GW_ASSERT(gwt_app_verify(&app, line, sizeof(line)));
	gwt_app_stop(&app);
	gwt_daemon_stop(&d);
}

GW_TEST(pool_too_small_refuses_and_app_runs_on)
{
	struct gwt_daemon d;
	struct gwt_app app;
	char line[256];
	cJSON *j;

	gwt_daemon_start(&d, GWT_ARGS("--image-pool-mib", "64"));
	start_shimmed(&d, &app, "128", "32");
	j = gwt_ctl(&d, 1, GWT_ARGS("suspend", gwt_pid(app.pid)));
	GW_ASSERT_STR_EQ(gwt_json_str(j, "error.name"), GW_ERROR_LIMIT);
	GW_ASSERT_STR_CONTAINS(gwt_json_str(j, "error.message"), "--image-pool-mib");
	cJSON_Delete(j);
	assert_state(&d, app.pid, "running");
	GW_ASSERT(gwt_app_verify(&app, line, sizeof(line)));
	gwt_app_stop(&app);
	gwt_daemon_stop(&d);
}

/* A driver failure after the app released its VRAM: the daemon must map it back. */
GW_TEST(checkpoint_failure_after_release_puts_vram_back)
{
	struct gwt_daemon d;
	struct gwt_app app;
	char line[256];
	cJSON *j;

	setenv("FAKECUDA_FAIL", "cuCheckpointProcessCheckpoint=999", 1);
	gwt_daemon_start(&d, GWT_ARGS("--image-pool-mib", "128"));
	unsetenv("FAKECUDA_FAIL");
	start_shimmed(&d, &app, "64", "16");
	j = gwt_ctl(&d, 1, GWT_ARGS("suspend", gwt_pid(app.pid)));
	GW_ASSERT_STR_EQ(gwt_json_str(j, "error.name"), GW_ERROR_CUDA);
	GW_ASSERT_STR_CONTAINS(gwt_json_str(j, "error.message"), "cuCheckpointProcessCheckpoint");
	cJSON_Delete(j);
	assert_state(&d, app.pid, "running");
	GW_ASSERT(gwt_app_verify(&app, line, sizeof(line)));
	j = gwt_ctl(&d, 0, GWT_ARGS("status"));
	GW_ASSERT_INT_EQ(gwt_json_num(j, "result.daemon.image_pool_free_bytes"), 128 << 20);
	cJSON_Delete(j);
	gwt_app_stop(&app);
	gwt_daemon_stop(&d);
}

/* A copy failure before anything was released: the app keeps its VRAM untouched. */
GW_TEST(copy_failure_leaves_app_running)
{
	struct gwt_daemon d;
	struct gwt_app app;
	char line[256];
	cJSON *j;

	setenv("FAKECUDA_FAIL", "cuMemcpyDtoHAsync=999:2", 1);
	gwt_daemon_start(&d, GWT_ARGS("--image-pool-mib", "128"));
	unsetenv("FAKECUDA_FAIL");
	start_shimmed(&d, &app, "64", "16");
	j = gwt_ctl(&d, 1, GWT_ARGS("suspend", gwt_pid(app.pid)));
	GW_ASSERT_STR_CONTAINS(gwt_json_str(j, "error.message"), "cuMemcpyDtoHAsync");
	cJSON_Delete(j);
	assert_state(&d, app.pid, "running");
	GW_ASSERT(gwt_app_verify(&app, line, sizeof(line)));
	/* and the next suspend works */
	j = gwt_ctl(&d, 0, GWT_ARGS("suspend", gwt_pid(app.pid)));
	GW_ASSERT_STR_EQ(gwt_json_str(j, "result.path"), "fast");
	cJSON_Delete(j);
	cJSON_Delete(gwt_ctl(&d, 0, GWT_ARGS("resume", gwt_pid(app.pid))));
	GW_ASSERT(gwt_app_verify(&app, line, sizeof(line)));
	gwt_app_stop(&app);
	gwt_daemon_stop(&d);
}

/* The daemon dies mid-suspend (SIGKILL right after the request): the kernel lets the frozen
 * threads go, and the app ends up either untouched or suspended with a driver resume possible. */
GW_TEST(daemon_killed_mid_suspend_never_leaves_app_stuck)
{
	struct gwt_daemon d, d2;
	struct gwt_app app;
	char line[256];
	pid_t suspender;
	cJSON *j;
	const char *state;

	gwt_daemon_start(&d, GWT_ARGS("--image-pool-mib", "512"));
	start_shimmed(&d, &app, "256", "64");
	suspender = gwt_warmctl_spawn(&d, GWT_ARGS("suspend", gwt_pid(app.pid)));
	gwt_sleep_ms(5);
	kill(d.pid, SIGKILL);
	waitpid(d.pid, NULL, 0);
	waitpid(suspender, NULL, 0);
	gwt_daemon_start(&d2, GWT_ARGS("--image-pool-mib", "512"));
	j = gwt_ctl(&d2, 0, GWT_ARGS("state", gwt_pid(app.pid)));
	state = gwt_json_str(j, "result.state");
	GW_ASSERT(state);
	if (strcmp(state, "locked") == 0)
		cJSON_Delete(gwt_ctl(&d2, 0, GWT_ARGS("unlock", gwt_pid(app.pid))));
	else if (strcmp(state, "checkpointed") == 0)
		cJSON_Delete(gwt_ctl(&d2, 0, GWT_ARGS("resume", gwt_pid(app.pid))));
	cJSON_Delete(j);
	assert_state(&d2, app.pid, "running");
	/* Its VRAM is intact unless the kill landed after the release: then the data died with
	 * the daemon, which the app reports as CORRUPT rather than hanging. */
	GW_ASSERT(gwt_app_verify(&app, line, sizeof(line)) || strstr(line, "CORRUPT"));
	gwt_app_stop(&app);
	gwt_daemon_stop(&d2);
}

GW_TEST(app_without_daemon_runs_as_without_shim)
{
	struct gwt_app app;
	char line[256], sock[300];

	snprintf(sock, sizeof(sock), "%s/nobody-listens.sock", gwt_dir());
	setenv("LD_PRELOAD", getenv("GW_SHIM"), 1);
	setenv(GW_SOCKET_ENV, sock, 1);
	gwt_app_start(&app, GWT_ARGS("--mib", "32", "--chunk-mib", "8"));
	unsetenv("LD_PRELOAD");
	GW_ASSERT(gwt_app_verify(&app, line, sizeof(line)));
	GW_ASSERT(gwt_app_verify(&app, line, sizeof(line)));
	gwt_app_stop(&app);
}

GW_TEST(driver_path_still_serves_unshimmed_apps)
{
	struct gwt_daemon d;
	struct gwt_app app;
	char line[256];
	cJSON *j;

	gwt_daemon_start(&d, GWT_ARGS("--image-pool-mib", "128"));
	gwt_app_start(&app, GWT_ARGS("--mib", "32"));
	j = gwt_ctl(&d, 0, GWT_ARGS("suspend", gwt_pid(app.pid)));
	GW_ASSERT_STR_EQ(gwt_json_str(j, "result.path"), "driver");
	cJSON_Delete(j);
	cJSON_Delete(gwt_ctl(&d, 0, GWT_ARGS("resume", gwt_pid(app.pid))));
	GW_ASSERT(gwt_app_verify(&app, line, sizeof(line)));
	gwt_app_stop(&app);
	gwt_daemon_stop(&d);
}

GW_TEST(driver_steps_refused_while_vram_is_held)
{
	struct gwt_daemon d;
	struct gwt_app app;
	char line[256];
	cJSON *j;

	gwt_daemon_start(&d, GWT_ARGS("--image-pool-mib", "128"));
	start_shimmed(&d, &app, "32", "16");
	cJSON_Delete(gwt_ctl(&d, 0, GWT_ARGS("suspend", gwt_pid(app.pid))));
	j = gwt_ctl(&d, 1, GWT_ARGS("restore", gwt_pid(app.pid)));
	GW_ASSERT_STR_EQ(gwt_json_str(j, "error.name"), GW_ERROR_ILLEGAL_STATE);
	GW_ASSERT_STR_CONTAINS(gwt_json_str(j, "error.message"), "warmctl resume");
	cJSON_Delete(j);
	j = gwt_ctl(&d, 1, GWT_ARGS("resume", gwt_pid(app.pid), "--gpu-map",
				    "GPU-fa4ec0da-0000-4000-8000-000000000000="
				    "GPU-fa4ec0da-0000-4000-8000-000000000000"));
	GW_ASSERT_STR_EQ(gwt_json_str(j, "error.name"), GW_ERROR_ILLEGAL_STATE);
	cJSON_Delete(j);
	assert_state(&d, app.pid, "checkpointed");
	cJSON_Delete(gwt_ctl(&d, 0, GWT_ARGS("resume", gwt_pid(app.pid))));
	GW_ASSERT(gwt_app_verify(&app, line, sizeof(line)));
	gwt_app_stop(&app);
	gwt_daemon_stop(&d);
}

GW_TEST(metrics_count_every_operation_kind)
{
	static char out[1 << 16];
	struct gwt_daemon d;
	struct gwt_app app, plain;
	char err[1024];
	int rc;

	gwt_daemon_start(&d, GWT_ARGS("--image-pool-mib", "64"));
	start_shimmed(&d, &app, "32", "16");
	cJSON_Delete(gwt_ctl(&d, 0, GWT_ARGS("suspend", gwt_pid(app.pid))));
	cJSON_Delete(gwt_ctl(&d, 0, GWT_ARGS("resume", gwt_pid(app.pid))));
	gwt_app_start(&plain, GWT_ARGS("--mib", "8"));
	for (const char *const *step = (const char *const[]){ "lock", "checkpoint", "restore",
							      "unlock", NULL };
	     *step; step++)
		cJSON_Delete(gwt_ctl(&d, 0, GWT_ARGS(*step, gwt_pid(plain.pid))));
	rc = gwt_run_as(-1, out, sizeof(out), err, sizeof(err),
			GWT_ARGS(getenv("GW_WARMCTL"), "--socket", d.socket, "metrics"));
	GW_ASSERT_INT_EQ(rc, 0);
	GW_ASSERT_STR_CONTAINS(out, "# TYPE gpuwarm_operation_duration_seconds histogram");
	for (const char *const *op = (const char *const[]){ "lock", "checkpoint", "restore",
							    "unlock", "suspend", "resume", NULL };
	     *op; op++) {
		char want[128];

		snprintf(want, sizeof(want), "gpuwarm_operations_total{operation=\"%s\",result=\"ok\"} 1\n",
			 *op);
		GW_ASSERT_STR_CONTAINS(out, want);
		snprintf(want, sizeof(want),
			 "gpuwarm_operation_duration_seconds_bucket{operation=\"%s\",le=\"+Inf\"} 1\n", *op);
		GW_ASSERT_STR_CONTAINS(out, want);
	}
	GW_ASSERT_STR_CONTAINS(out, "gpuwarm_vram_moved_bytes_total{operation=\"suspend\"} 33554432\n");
	GW_ASSERT_STR_CONTAINS(out, "gpuwarm_processes_registered 1\n");
	GW_ASSERT_STR_CONTAINS(out, ",state=\"ready\"} 1\n");
	gwt_app_stop(&plain);
	gwt_app_stop(&app);
	gwt_daemon_stop(&d);
}

/* After a fast resume the app maps memory the daemon created: the driver's own checkpoint of it
 * would "succeed" and never restore (DESIGN.md's first trap), so it is refused. */
GW_TEST(driver_checkpoint_refused_after_fast_resume)
{
	struct gwt_daemon d;
	struct gwt_app app;
	char line[256];
	cJSON *j;

	gwt_daemon_start(&d, GWT_ARGS("--image-pool-mib", "64"));
	start_shimmed(&d, &app, "32", "16");
	cJSON_Delete(gwt_ctl(&d, 0, GWT_ARGS("suspend", gwt_pid(app.pid))));
	cJSON_Delete(gwt_ctl(&d, 0, GWT_ARGS("resume", gwt_pid(app.pid))));
	cJSON_Delete(gwt_ctl(&d, 0, GWT_ARGS("lock", gwt_pid(app.pid))));
	j = gwt_ctl(&d, 1, GWT_ARGS("checkpoint", gwt_pid(app.pid)));
	GW_ASSERT_STR_EQ(gwt_json_str(j, "error.name"), GW_ERROR_ILLEGAL_STATE);
	GW_ASSERT_STR_CONTAINS(gwt_json_str(j, "error.message"), "fast path");
	cJSON_Delete(j);
	cJSON_Delete(gwt_ctl(&d, 0, GWT_ARGS("unlock", gwt_pid(app.pid))));
	/* the fast path still works, again and again */
	j = gwt_ctl(&d, 0, GWT_ARGS("suspend", gwt_pid(app.pid)));
	GW_ASSERT_STR_EQ(gwt_json_str(j, "result.path"), "fast");
	cJSON_Delete(j);
	cJSON_Delete(gwt_ctl(&d, 0, GWT_ARGS("resume", gwt_pid(app.pid))));
	GW_ASSERT(gwt_app_verify(&app, line, sizeof(line)));
	gwt_app_stop(&app);
	gwt_daemon_stop(&d);
}

/* A process on two GPUs: one copy engine per GPU, in parallel, every range back on its GPU. */
GW_TEST(fast_path_two_gpu_process)
{
	struct gwt_daemon d;
	struct gwt_app app;
	char line[256];
	cJSON *j;

	setenv("FAKECUDA_GPUS", "2", 1);
	gwt_daemon_start(&d, GWT_ARGS("--image-pool-mib", "128"));
	start_shimmed_args(&d, &app, "64",
			   GWT_ARGS("--mib", "64", "--chunk-mib", "8", "--second-gpu", "1"));
	for (int round = 0; round < 2; round++) {
		j = gwt_ctl(&d, 0, GWT_ARGS("suspend", gwt_pid(app.pid)));
		GW_ASSERT_STR_EQ(gwt_json_str(j, "result.path"), "fast");
		GW_ASSERT_INT_EQ(gwt_json_num(j, "result.ranges"), 8);
		cJSON_Delete(j);
		cJSON_Delete(gwt_ctl(&d, 0, GWT_ARGS("resume", gwt_pid(app.pid))));
		GW_ASSERT(gwt_app_verify(&app, line, sizeof(line)));
		GW_ASSERT_STR_CONTAINS(line, "gpu2 GPU-fa4ec0da-0000-4000-8000-000000000001");
	}
	gwt_app_stop(&app);
	gwt_daemon_stop(&d);
}

/* The text status on an 80-column terminal: two GPUs and a shimmed process, suspended into the
 * image pool, fit in 100 columns and the process is listed with its image. */
static size_t widest_line(const char *text)
{
	size_t widest = 0;

	for (const char *p = text; *p;) {
		size_t n = strcspn(p, "\n");

		if (n > widest)
			widest = n;
		p += n + (p[n] == '\n');
	}
	return widest;
}

GW_TEST(status_text_fits_80_columns_and_lists_the_process)
{
	static char out[65536], err[4096];
	struct gwt_daemon d;
	struct gwt_app app;
	char pid[32], row[64];
	cJSON *j;

	setenv("FAKECUDA_GPUS", "2", 1);
	gwt_daemon_start(&d, GWT_ARGS("--image-pool-mib", "128"));
	start_shimmed(&d, &app, "64", "8");
	snprintf(pid, sizeof(pid), "%d", (int)app.pid);
	j = gwt_ctl(&d, 0, GWT_ARGS("suspend", pid));
	cJSON_Delete(j);

	setenv("COLUMNS", "80", 1);
	GW_ASSERT_INT_EQ(gwt_run_as(-1, out, sizeof(out), err, sizeof(err),
				    GWT_ARGS(getenv("GW_WARMCTL"), "--socket", d.socket, "--human",
					     "status")), 0);
	unsetenv("COLUMNS");
	fprintf(stderr, "%s", out);
	GW_ASSERT(widest_line(out) <= 100);
	snprintf(row, sizeof(row), "\n%s ", pid); /* a row of the processes table */
	GW_ASSERT_STR_CONTAINS(out, row);
	GW_ASSERT_STR_CONTAINS(out, "64 MiB");
	GW_ASSERT_STR_CONTAINS(out, "memory 64 MiB"); /* its image, in the pool */
	GW_ASSERT_STR_CONTAINS(out, "images:   pool of 128 MiB pinned");
	GW_ASSERT_STR_CONTAINS(out, "\n1    "); /* the second GPU's row */

	/* --wide: every column, the UUIDs too */
	GW_ASSERT_INT_EQ(gwt_run_as(-1, out, sizeof(out), err, sizeof(err),
				    GWT_ARGS(getenv("GW_WARMCTL"), "--socket", d.socket, "--human",
					     "status", "--wide")), 0);
	GW_ASSERT_STR_CONTAINS(out, "GPU-fa4ec0da-0000-4000-8000-000000000001");

	cJSON_Delete(gwt_ctl(&d, 0, GWT_ARGS("resume", pid)));
	gwt_app_stop(&app);
	gwt_daemon_stop(&d);
}

/* Run warmctl ARGS with its stderr (and stdout) on a pseudo-terminal; everything it wrote goes
 * into out. Returns its exit code. */
static int warmctl_on_pty(const struct gwt_daemon *d, char *out, size_t len, const char *const *args)
{
	const char *argv[16];
	size_t n = 0, used = 0;
	int master, status;
	pid_t pid;

	argv[n++] = getenv("GW_WARMCTL");
	argv[n++] = "--socket";
	argv[n++] = d->socket;
	for (; *args && n < 15; args++)
		argv[n++] = *args;
	argv[n] = NULL;
	fflush(NULL);
	pid = forkpty(&master, NULL, NULL, NULL);
	GW_ASSERT(pid >= 0);
	if (pid == 0) {
		execv(argv[0], (char *const *)argv);
		_exit(127);
	}
	for (;;) {
		ssize_t r = read(master, out + used, len - 1 - used);

		if (r <= 0) /* EIO once the child closed the terminal */
			break;
		used += (size_t)r;
		if (used >= len - 1)
			break;
	}
	out[used] = '\0';
	close(master);
	GW_ASSERT(waitpid(pid, &status, 0) == pid);
	return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

static unsigned count_char(const char *s, char c)
{
	unsigned n = 0;

	for (; *s; s++)
		n += *s == c;
	return n;
}

/* On a terminal a suspend and a resume show their progress (step, bytes, rate) as they go;
 * asked with --json, the daemon sends none and nothing but the JSON comes out. */
GW_TEST(progress_on_a_terminal_and_none_with_json)
{
	static char out[65536];
	char pid[32], path[600], path2[600];
	struct gwt_daemon d;
	struct gwt_app app;

	gwt_daemon_start(&d, NULL);
	start_shimmed(&d, &app, "512", "64");
	snprintf(pid, sizeof(pid), "%d", (int)app.pid);
	snprintf(path, sizeof(path), "%s/progress.img", gwt_dir());
	snprintf(path2, sizeof(path2), "%s/progress2.img", gwt_dir());
	GW_ASSERT_INT_EQ(warmctl_on_pty(&d, out, sizeof(out),
					GWT_ARGS("suspend", pid, "--image", path)), 0);
	fprintf(stderr, "%s\n", out);
	/* at least two progress lines: each starts with a bare CR, beyond the pty's CRLFs */
	GW_ASSERT(count_char(out, '\r') >= count_char(out, '\n') + 2);
	GW_ASSERT_STR_CONTAINS(out, "suspend pid ");
	GW_ASSERT_STR_CONTAINS(out, " GiB, ");
	GW_ASSERT_STR_CONTAINS(out, "copy");
	GW_ASSERT_INT_EQ(warmctl_on_pty(&d, out, sizeof(out),
					GWT_ARGS("resume", pid, "--image", path)), 0);
	GW_ASSERT_STR_CONTAINS(out, "fill");
	/* --json: no progress asked for, none shown */
	GW_ASSERT_INT_EQ(warmctl_on_pty(&d, out, sizeof(out),
					GWT_ARGS("--json", "suspend", pid, "--image", path2)), 0);
	GW_ASSERT(!strstr(out, " GiB, "));
	GW_ASSERT_INT_EQ(count_char(out, '\r'), count_char(out, '\n')); /* only the pty's CRLFs */
	cJSON_Delete(gwt_ctl(&d, 0, GWT_ARGS("resume", pid, "--image", path2)));
	gwt_app_stop(&app);
	gwt_daemon_stop(&d);
}

GW_TEST_MAIN()
