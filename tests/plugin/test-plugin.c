/* SPDX-License-Identifier: MIT */
/*
 * gpuwarm_plugin.so driven by fake-criu (CRIU 4.1's plugin loading, hook order and ptrace
 * seizing) against the real gpu-warmd and gw-vram-app, all over the fake driver. A "restore"
 * here continues the same processes: fake-criu lets them go after a dump instead of killing
 * them, and seizes them again to run RESUME_DEVICES_LATE as CRIU does before its tasks resume.
 */
#include <dirent.h>
#include <dlfcn.h>
#include <fcntl.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "criu-plugin-abi.h"
#include "gpuwarm-check.h"
#include "gw-client.h"
#include "gw-test.h"
#include "gw-vimg.h"
#include "gwp-image.h"
#include "pt-harness.h"

static cJSON *pid_params(pid_t pid)
{
	cJSON *params = cJSON_CreateObject();

	cJSON_AddNumberToObject(params, "pid", pid);
	return params;
}

/* The plugin as a shared object: one exported symbol, CRIU's descriptor, the hooks we need. */
GW_TEST(descriptor_and_exports)
{
	void *h = dlopen(getenv("GW_PLUGIN"), RTLD_NOW | RTLD_LOCAL);
	struct gwp_criu_plugin_desc *d;

	GW_ASSERT(h);
	d = dlsym(h, GWP_CRIU_DESC_SYMBOL);
	GW_ASSERT(d);
	GW_ASSERT_STR_EQ(d->name, "gpuwarm_plugin");
	GW_ASSERT_INT_EQ(d->version, 0x200);
	GW_ASSERT_INT_EQ(d->max_hooks, GWP_CRIU_HOOKS_42); /* not inside a CRIU at all */
	for (unsigned i = 0; i < GWP_CRIU_HOOKS_42; i++)
		GW_ASSERT_INT_EQ(d->hooks[i] != NULL,
				 i >= GWP_CRIU_HOOK_RESUME_DEVICES_LATE ||
					 i == GWP_CRIU_HOOK_DUMP_UNIX_SK ||
					 i == GWP_CRIU_HOOK_RESTORE_UNIX_SK);
	GW_ASSERT(!dlsym(h, "gw_client_connect"));
	GW_ASSERT(!dlsym(h, "gw_cuda_load"));
	GW_ASSERT(!dlsym(h, "gwp_plan_pairs"));
	GW_ASSERT(!dlsym(h, "gw_frame_header_encode"));
	/* outside CRIU: pre-dump is off, every hook stands aside, init never fails */
	GW_ASSERT_INT_EQ(d->init(GWP_CRIU_STAGE_PRE_DUMP), 0);
	GW_ASSERT_INT_EQ(((int (*)(int))d->hooks[GWP_CRIU_HOOK_PAUSE_DEVICES])(getpid()), -ENOTSUP);
	GW_ASSERT_INT_EQ(((int (*)(int))d->hooks[GWP_CRIU_HOOK_CHECKPOINT_DEVICES])(getpid()),
			 -ENOTSUP);
	{
		int sv[2];

		GW_ASSERT_INT_EQ(socketpair(AF_UNIX, SOCK_STREAM, 0, sv), 0);
		/* not a connection to gpu-warmd, and not a dump: not ours */
		GW_ASSERT_INT_EQ(((int (*)(int, int))d->hooks[GWP_CRIU_HOOK_DUMP_UNIX_SK])(sv[0], 7),
				 -ENOTSUP);
		close(sv[0]);
		close(sv[1]);
	}
	d->exit(GWP_CRIU_STAGE_PRE_DUMP, 0);
	GW_ASSERT_INT_EQ(d->init(GWP_CRIU_STAGE_RESTORE), 0);
	GW_ASSERT_INT_EQ(((int (*)(int))d->hooks[GWP_CRIU_HOOK_RESUME_DEVICES_LATE])(getpid()),
			 -ENOTSUP); /* no gpuwarm-<pid>.json: not ours */
	/* no gpuwarm-sk-<id>: a socket it never claimed */
	GW_ASSERT_INT_EQ(((int (*)(int))d->hooks[GWP_CRIU_HOOK_RESTORE_UNIX_SK])(424242), -ENOTSUP);
	d->exit(GWP_CRIU_STAGE_RESTORE, 0);
	dlclose(h);
}

GW_TEST(dump_restore_cycle)
{
	struct gwp_image img;
	struct pt_app a;
	struct pt p;
	char pid[16];

	pt_setup(&p);
	pt_daemon_start(&p, NULL);
	pt_app_start(&a, PT_ARGS("--mib", "16"), NULL);
	pt_num(pid, sizeof(pid), a.pid);

	GW_ASSERT_INT_EQ(pt_criu(&p, 0, "dump", PT_ARGS("-t", pid), NULL), 0);
	pt_assert_hook(&p, "PAUSE_DEVICES", a.pid, "0");
	pt_assert_hook(&p, "CHECKPOINT_DEVICES", a.pid, "0");
	GW_ASSERT_STR_CONTAINS(pt_log(&p), "lock by gpu-warmd");
	GW_ASSERT_STR_CONTAINS(pt_log(&p), "checkpoint by gpu-warmd");
	GW_ASSERT_STR_CONTAINS(pt_log(&p), "compel: interrupt-only mode");
	GW_ASSERT_INT_EQ(pt_cuda_state(a.pid), PT_CHECKPOINTED);
	GW_ASSERT_INT_EQ(pt_image(&p, a.pid, &img), 0);
	GW_ASSERT_INT_EQ(img.pid, a.pid);
	GW_ASSERT_INT_EQ(img.vpid, a.pid);
	GW_ASSERT(img.restore_tid > 0 && img.restore_tid != a.pid);
	GW_ASSERT_INT_EQ(img.state, GWP_STATE_RUNNING);
	GW_ASSERT(pt_file_has(p.images, "fake-inventory", "gpuwarm_plugin"));

	GW_ASSERT_INT_EQ(pt_criu(&p, 0, "restore", PT_ARGS("-t", pid), NULL), 0);
	pt_assert_hook(&p, "RESUME_DEVICES_LATE", a.pid, "0");
	GW_ASSERT_STR_CONTAINS(pt_log(&p), "restore by gpu-warmd");
	GW_ASSERT_STR_CONTAINS(pt_log(&p), "unlock by gpu-warmd");
	GW_ASSERT_INT_EQ(pt_cuda_state(a.pid), PT_RUNNING);
	pt_assert_verified(&a, 1);
	GW_ASSERT_INT_EQ(pt_daemon_ops_ok(&p, "lock"), 1);
	GW_ASSERT_INT_EQ(pt_daemon_ops_ok(&p, "checkpoint"), 1);
	GW_ASSERT_INT_EQ(pt_daemon_ops_ok(&p, "restore"), 1);
	GW_ASSERT_INT_EQ(pt_daemon_ops_ok(&p, "unlock"), 1);
	pt_finish();
}

GW_TEST(daemon_absent_uses_driver)
{
	struct pt_app a;
	struct pt p;
	char pid[16], expect[256];

	pt_setup(&p);
	pt_app_start(&a, NULL, NULL);
	pt_num(pid, sizeof(pid), a.pid);

	GW_ASSERT_INT_EQ(pt_criu(&p, 0, "dump", PT_ARGS("-t", pid), NULL), 0);
	snprintf(expect, sizeof(expect), "gpuwarm: gpu-warmd not reachable at %s", p.socket);
	GW_ASSERT_STR_CONTAINS(pt_log(&p), expect);
	GW_ASSERT_STR_CONTAINS(pt_log(&p), "using the driver directly");
	GW_ASSERT_STR_CONTAINS(pt_log(&p), "lock by the driver");
	GW_ASSERT_STR_CONTAINS(pt_log(&p), "checkpoint by the driver");
	GW_ASSERT_INT_EQ(pt_cuda_state(a.pid), PT_CHECKPOINTED);

	GW_ASSERT_INT_EQ(pt_criu(&p, 0, "restore", PT_ARGS("-t", pid), NULL), 0);
	pt_assert_hook(&p, "RESUME_DEVICES_LATE", a.pid, "0");
	GW_ASSERT_STR_CONTAINS(pt_log(&p), "restore by the driver");
	GW_ASSERT_INT_EQ(pt_cuda_state(a.pid), PT_RUNNING);
	pt_assert_verified(&a, 1);
	pt_finish();
}

/*
 * Without gpu-warmd the driver runs in a helper process per hook, never in CRIU's: CRIU's
 * process maps no driver and keeps one thread (a multi-threaded CRIU cannot setns() into a
 * container's mount namespace; issue 7). The driver's errors still reach CRIU's log.
 */
GW_TEST(driver_fallback_outside_criu_process)
{
	struct pt_app a;
	struct pt p;
	char pid[16], expect[128];

	pt_setup(&p);
	pt_app_start(&a, NULL, NULL);
	pt_num(pid, sizeof(pid), a.pid);

	GW_ASSERT_INT_EQ(pt_criu(&p, 0, "dump", PT_ARGS("-t", pid), NULL), 0);
	GW_ASSERT_STR_CONTAINS(pt_log(&p), "using the driver directly");
	GW_ASSERT_STR_CONTAINS(pt_log(&p), "lock by the driver");
	GW_ASSERT_STR_CONTAINS(pt_log(&p), "checkpoint by the driver");
	GW_ASSERT_STR_CONTAINS(pt_log(&p),
			       "self after CHECKPOINT_DEVICES: 1 threads, CUDA driver not mapped");
	GW_ASSERT_STR_CONTAINS(pt_log(&p),
			       "self after the plugins' exit: 1 threads, CUDA driver not mapped");
	GW_ASSERT_INT_EQ(pt_log_count(&p, "driver helper process"), 2); /* one per hook */
	GW_ASSERT_INT_EQ(pt_cuda_state(a.pid), PT_CHECKPOINTED);

	GW_ASSERT_INT_EQ(pt_criu(&p, 0, "restore", PT_ARGS("-t", pid), NULL), 0);
	pt_assert_hook(&p, "RESUME_DEVICES_LATE", a.pid, "0");
	GW_ASSERT_STR_CONTAINS(pt_log(&p), "restore by the driver");
	GW_ASSERT_STR_CONTAINS(pt_log(&p), "unlock by the driver");
	GW_ASSERT_STR_CONTAINS(pt_log(&p),
			       "self after RESUME_DEVICES_LATE: 1 threads, CUDA driver not mapped");
	GW_ASSERT_INT_EQ(pt_log_count(&p, "driver helper process"), 1);
	GW_ASSERT_INT_EQ(pt_cuda_state(a.pid), PT_RUNNING);
	pt_assert_verified(&a, 1);

	/* a driver call that fails: its text comes through, the exit hook undoes the lock */
	GW_ASSERT_INT_EQ(pt_criu(&p, 0, "dump", PT_ARGS("-t", pid),
				 PT_ARGS("FAKECUDA_FAIL=cuCheckpointProcessCheckpoint=999")), 1);
	pt_assert_hook(&p, "CHECKPOINT_DEVICES", a.pid, "-1");
	snprintf(expect, sizeof(expect), "cannot checkpoint pid %d: cuCheckpointProcessCheckpoint"
		 "(pid %d): ", (int)a.pid, (int)a.pid);
	GW_ASSERT_STR_CONTAINS(pt_log(&p), expect);
	GW_ASSERT_STR_CONTAINS(pt_log(&p), "unlock by the driver");
	GW_ASSERT_STR_CONTAINS(pt_log(&p),
			       "self after the plugins' exit: 1 threads, CUDA driver not mapped");
	GW_ASSERT_INT_EQ(pt_cuda_state(a.pid), PT_RUNNING);
	pt_assert_verified(&a, 1);
	pt_finish();
}

GW_TEST(daemon_killed_between_pause_and_checkpoint)
{
	struct pt_app a;
	struct pt p;
	char pid[16];
	pid_t criu;
	int status;

	pt_setup(&p);
	pt_daemon_start(&p, NULL);
	pt_app_start(&a, NULL, NULL);
	pt_num(pid, sizeof(pid), a.pid);

	criu = pt_criu_spawn(&p, "dump", PT_ARGS("-t", pid, "--stop-after-pause"), NULL);
	GW_ASSERT(waitpid(criu, &status, WUNTRACED) == criu && WIFSTOPPED(status));
	GW_ASSERT_STR_CONTAINS(pt_log(&p), "lock by gpu-warmd");
	pt_daemon_kill(&p);
	kill(criu, SIGCONT);
	GW_ASSERT_INT_EQ(pt_wait(criu), 0);
	fprintf(stderr, "%s", pt_log(&p));
	pt_assert_hook(&p, "CHECKPOINT_DEVICES", a.pid, "0");
	GW_ASSERT_STR_CONTAINS(pt_log(&p), "is no longer usable");
	GW_ASSERT_STR_CONTAINS(pt_log(&p), "checkpoint by the driver");
	GW_ASSERT_INT_EQ(pt_cuda_state(a.pid), PT_CHECKPOINTED);

	GW_ASSERT_INT_EQ(pt_criu(&p, 0, "restore", PT_ARGS("-t", pid), NULL), 0);
	GW_ASSERT_STR_CONTAINS(pt_log(&p), "restore by the driver");
	GW_ASSERT_INT_EQ(pt_cuda_state(a.pid), PT_RUNNING);
	pt_assert_verified(&a, 1);
	pt_finish();
}

/* A busy app whose kernels take 3 s cannot be locked within CRIU's --timeout 1: the lock gives
 * up before CRIU's alarm, the dump fails, and the exit hook leaves the app running. The lock
 * can win when a kernel happens to end inside the window (1 in 6): then undo and try again. */
GW_TEST(lock_timeout_leaves_app_running)
{
	struct pt_app a;
	struct pt p;
	char pid[16], line[128];
	int code = 0;

	pt_setup(&p);
	pt_daemon_start(&p, NULL);
	pt_app_start(&a, PT_ARGS("--busy"), PT_ARGS("FAKECUDA_SYNC_DELAY_MS=3000"));
	pt_num(pid, sizeof(pid), a.pid);

	for (int attempt = 0; attempt < 6 && code == 0; attempt++) {
		code = pt_criu(&p, 0, "dump", PT_ARGS("-t", pid, "--timeout", "1"), NULL);
		if (code == 0)
			GW_ASSERT_INT_EQ(pt_criu(&p, 0, "restore", PT_ARGS("-t", pid), NULL), 0);
	}
	GW_ASSERT_INT_EQ(code, 1);
	GW_ASSERT_STR_CONTAINS(pt_log(&p), "cannot lock pid");
	pt_assert_hook(&p, "PAUSE_DEVICES", a.pid, "-1");
	pt_assert_no_hook(&p, "CHECKPOINT_DEVICES", a.pid);
	snprintf(line, sizeof(line), "pid %d: running again", (int)a.pid);
	GW_ASSERT_STR_CONTAINS(pt_log(&p), line);
	GW_ASSERT_INT_EQ(pt_cuda_state(a.pid), PT_RUNNING);
	pt_assert_verified(&a, 1);
	pt_finish();
}

GW_TEST(checkpoint_fails_halfway)
{
	struct gwp_image img;
	struct pt_app a;
	struct pt p;
	char pid[16];

	pt_setup(&p);
	pt_daemon_start(&p, PT_ARGS("FAKECUDA_FAIL=cuCheckpointProcessCheckpoint=999"));
	pt_app_start(&a, NULL, NULL);
	pt_num(pid, sizeof(pid), a.pid);

	GW_ASSERT_INT_EQ(pt_criu(&p, 0, "dump", PT_ARGS("-t", pid), NULL), 1);
	pt_assert_hook(&p, "PAUSE_DEVICES", a.pid, "0");
	pt_assert_hook(&p, "CHECKPOINT_DEVICES", a.pid, "-1");
	GW_ASSERT_STR_CONTAINS(pt_log(&p), "cannot checkpoint pid");
	GW_ASSERT_STR_CONTAINS(pt_log(&p), "the dump failed: resuming");
	GW_ASSERT_STR_CONTAINS(pt_log(&p), "unlock by gpu-warmd");
	GW_ASSERT_INT_EQ(pt_cuda_state(a.pid), PT_RUNNING);
	GW_ASSERT_INT_EQ(pt_image(&p, a.pid, &img), -ENOENT);
	pt_assert_verified(&a, 1);
	pt_finish();
}

/* A dump that fails after the GPU part (CRIU failing later on) is undone the whole way. */
GW_TEST(dump_failing_after_checkpoint)
{
	struct pt_app a;
	struct pt p;
	char pid[16];

	pt_setup(&p);
	pt_daemon_start(&p, NULL);
	pt_app_start(&a, NULL, NULL);
	pt_num(pid, sizeof(pid), a.pid);

	GW_ASSERT_INT_EQ(pt_criu(&p, 0, "dump", PT_ARGS("-t", pid, "--fail-after-checkpoint"),
				 NULL), 1);
	pt_assert_hook(&p, "CHECKPOINT_DEVICES", a.pid, "0");
	GW_ASSERT_STR_CONTAINS(pt_log(&p), "restore by gpu-warmd");
	GW_ASSERT_STR_CONTAINS(pt_log(&p), "unlock by gpu-warmd");
	GW_ASSERT_INT_EQ(pt_cuda_state(a.pid), PT_RUNNING);
	pt_assert_verified(&a, 1);
	pt_finish();
}

GW_TEST(leave_running)
{
	struct gwp_image img;
	struct pt_app a;
	struct pt p;
	char pid[16];

	pt_setup(&p);
	pt_daemon_start(&p, NULL);
	pt_app_start(&a, NULL, NULL);
	pt_num(pid, sizeof(pid), a.pid);

	GW_ASSERT_INT_EQ(pt_criu(&p, 0, "dump", PT_ARGS("-t", pid, "-R"), NULL), 0);
	pt_assert_hook(&p, "CHECKPOINT_DEVICES", a.pid, "0");
	GW_ASSERT_STR_CONTAINS(pt_log(&p), "--leave-running: resuming");
	GW_ASSERT_STR_CONTAINS(pt_log(&p), "restore by gpu-warmd");
	GW_ASSERT_STR_CONTAINS(pt_log(&p), "unlock by gpu-warmd");
	GW_ASSERT_INT_EQ(pt_cuda_state(a.pid), PT_RUNNING);
	GW_ASSERT_INT_EQ(pt_image(&p, a.pid, &img), 0); /* the images are good */
	pt_assert_verified(&a, 1);
	pt_finish();
}

GW_TEST(pre_dump_disabled)
{
	struct pt_app a;
	struct pt p;
	char pid[16];

	pt_setup(&p);
	pt_daemon_start(&p, NULL);
	pt_app_start(&a, NULL, NULL);
	pt_num(pid, sizeof(pid), a.pid);

	GW_ASSERT_INT_EQ(pt_criu(&p, 0, "pre-dump", PT_ARGS("-t", pid), NULL), 0);
	GW_ASSERT_STR_CONTAINS(pt_log(&p), "gpuwarm: disabled: pre-dump");
	pt_assert_hook(&p, "PAUSE_DEVICES", a.pid, PT_ENOTSUP_TEXT);
	GW_ASSERT_INT_EQ(pt_cuda_state(a.pid), PT_RUNNING);
	GW_ASSERT_INT_EQ(pt_daemon_ops_ok(&p, "lock"), 0);
	pt_assert_verified(&a, 1);
	pt_finish();
}

GW_TEST(non_cuda_pid_skipped)
{
	struct gwp_image img;
	struct pt_app a;
	struct pt p;
	char pid[16], spid[16];
	pid_t sleeper;

	pt_setup(&p);
	pt_daemon_start(&p, NULL);
	pt_app_start(&a, NULL, NULL);
	sleeper = pt_spawn(PT_ARGS("/bin/sleep", "60"));
	pt_sleep_ms(100);
	pt_num(pid, sizeof(pid), a.pid);
	pt_num(spid, sizeof(spid), sleeper);

	GW_ASSERT_INT_EQ(pt_criu(&p, 0, "dump", PT_ARGS("-t", spid, "-t", pid), NULL), 0);
	pt_assert_hook(&p, "PAUSE_DEVICES", sleeper, PT_ENOTSUP_TEXT);
	pt_assert_hook(&p, "CHECKPOINT_DEVICES", sleeper, PT_ENOTSUP_TEXT);
	pt_assert_hook(&p, "PAUSE_DEVICES", a.pid, "0");
	pt_assert_hook(&p, "CHECKPOINT_DEVICES", a.pid, "0");
	GW_ASSERT_STR_CONTAINS(pt_log(&p), "is not a CUDA process");
	GW_ASSERT_INT_EQ(pt_image(&p, sleeper, &img), -ENOENT);

	GW_ASSERT_INT_EQ(pt_criu(&p, 0, "restore", PT_ARGS("-t", spid, "-t", pid), NULL), 0);
	pt_assert_hook(&p, "RESUME_DEVICES_LATE", sleeper, PT_ENOTSUP_TEXT);
	pt_assert_hook(&p, "RESUME_DEVICES_LATE", a.pid, "0");
	pt_assert_verified(&a, 1);
	pt_finish();
}

GW_TEST(no_driver_enotsup)
{
	struct pt_app a;
	struct pt p;
	char pid[16];

	pt_setup(&p);
	pt_app_start(&a, NULL, NULL);
	pt_num(pid, sizeof(pid), a.pid);

	GW_ASSERT_INT_EQ(pt_criu(&p, 0, "dump", PT_ARGS("-t", pid),
				 PT_ARGS("GPUWARM_CUDA_LIBRARY=/nonexistent/libcuda.so.1")), 0);
	pt_assert_hook(&p, "PAUSE_DEVICES", a.pid, PT_ENOTSUP_TEXT);
	pt_assert_hook(&p, "CHECKPOINT_DEVICES", a.pid, PT_ENOTSUP_TEXT);
	GW_ASSERT_STR_CONTAINS(pt_log(&p), "no usable CUDA driver");
	GW_ASSERT_STR_CONTAINS(pt_log(&p), "standing aside, the CUDA hooks answer -ENOTSUP");
	GW_ASSERT_INT_EQ(pt_log_count(&p, "standing aside"), 1);
	GW_ASSERT(!pt_file_has(p.images, "fake-inventory", "gpuwarm_plugin"));
	GW_ASSERT_INT_EQ(pt_cuda_state(a.pid), PT_RUNNING);
	pt_assert_verified(&a, 1);
	pt_finish();
}

GW_TEST(parent_and_child_both_cuda)
{
	struct gwp_image img;
	struct pt_app a;
	struct pt p;
	char pid[16];

	pt_setup(&p);
	pt_daemon_start(&p, NULL);
	pt_app_start(&a, PT_ARGS("--spawn-child"), NULL);
	GW_ASSERT(a.child > 0);
	pt_num(pid, sizeof(pid), a.pid);

	GW_ASSERT_INT_EQ(pt_criu(&p, 0, "dump", PT_ARGS("-t", pid), NULL), 0);
	pt_assert_hook(&p, "PAUSE_DEVICES", a.pid, "0");
	pt_assert_hook(&p, "PAUSE_DEVICES", a.child, "0");
	pt_assert_hook(&p, "CHECKPOINT_DEVICES", a.pid, "0");
	pt_assert_hook(&p, "CHECKPOINT_DEVICES", a.child, "0");
	GW_ASSERT_INT_EQ(pt_cuda_state(a.pid), PT_CHECKPOINTED);
	GW_ASSERT_INT_EQ(pt_cuda_state(a.child), PT_CHECKPOINTED);
	GW_ASSERT_INT_EQ(pt_image(&p, a.child, &img), 0);

	GW_ASSERT_INT_EQ(pt_criu(&p, 0, "restore", PT_ARGS("-t", pid), NULL), 0);
	pt_assert_hook(&p, "RESUME_DEVICES_LATE", a.pid, "0");
	pt_assert_hook(&p, "RESUME_DEVICES_LATE", a.child, "0");
	GW_ASSERT_INT_EQ(pt_cuda_state(a.pid), PT_RUNNING);
	GW_ASSERT_INT_EQ(pt_cuda_state(a.child), PT_RUNNING);
	pt_assert_verified(&a, 2);
	pt_finish();
}

GW_TEST(old_criu_stands_aside)
{
	struct pt_app a;
	struct pt p;
	char pid[16];

	pt_setup(&p);
	pt_daemon_start(&p, NULL);
	pt_app_start(&a, NULL, NULL);
	pt_num(pid, sizeof(pid), a.pid);

	GW_ASSERT_INT_EQ(pt_criu(&p, 1, "dump", PT_ARGS("-t", pid), NULL), 0);
	GW_ASSERT_STR_CONTAINS(pt_log(&p), "fake-criu dump (10 hooks)");
	GW_ASSERT_STR_CONTAINS(pt_log(&p), "\"gpuwarm_plugin\" version 0x200 hooks 10");
	GW_ASSERT_STR_CONTAINS(pt_log(&p), "gpuwarm: disabled: this CRIU has no device hooks");
	GW_ASSERT_INT_EQ(pt_cuda_state(a.pid), PT_RUNNING);
	pt_assert_verified(&a, 1);
	pt_finish();
}

/* The dump names the plugin in the inventory, so a restore without it refuses to start. */
GW_TEST(inventory_guards_restore)
{
	struct pt_app a;
	struct pt p;
	char pid[16], from[300], to[300];

	pt_setup(&p);
	pt_daemon_start(&p, NULL);
	pt_app_start(&a, NULL, NULL);
	pt_num(pid, sizeof(pid), a.pid);

	GW_ASSERT_INT_EQ(pt_criu(&p, 0, "dump", PT_ARGS("-t", pid), NULL), 0);
	snprintf(from, sizeof(from), "%s/gpuwarm_plugin.so", p.plugins);
	snprintf(to, sizeof(to), "%s/gpuwarm_plugin.so.off", p.dir);
	GW_ASSERT(rename(from, to) == 0);
	GW_ASSERT_INT_EQ(pt_criu(&p, 0, "restore", PT_ARGS("-t", pid), NULL), 1);
	GW_ASSERT_STR_CONTAINS(pt_log(&p), "Missing required plugin: gpuwarm_plugin");
	GW_ASSERT_INT_EQ(pt_cuda_state(a.pid), PT_CHECKPOINTED);
	GW_ASSERT(rename(to, from) == 0);
	GW_ASSERT_INT_EQ(pt_criu(&p, 0, "restore", PT_ARGS("-t", pid), NULL), 0);
	pt_assert_verified(&a, 1);
	pt_finish();
}

/* A process that was locked before the dump is left locked by --leave-running (cuda_plugin's
 * rule: the dump returns processes to the state it found them in). */
GW_TEST(already_locked_stays_locked)
{
	struct pt_app a;
	struct pt p;
	char pid[16], line[128];
	cJSON *params;

	pt_setup(&p);
	pt_daemon_start(&p, NULL);
	pt_app_start(&a, NULL, NULL);
	pt_num(pid, sizeof(pid), a.pid);
	params = pid_params(a.pid);
	GW_ASSERT_INT_EQ(pt_daemon_call(&p, GW_METHOD_PROCESS_LOCK, params, NULL), 0);

	GW_ASSERT_INT_EQ(pt_criu(&p, 0, "dump", PT_ARGS("-t", pid, "-R"), NULL), 0);
	snprintf(line, sizeof(line), "pid %d is locked already: left so", (int)a.pid);
	GW_ASSERT_STR_CONTAINS(pt_log(&p), line);
	GW_ASSERT_STR_CONTAINS(pt_log(&p), "checkpoint by gpu-warmd");
	GW_ASSERT_STR_CONTAINS(pt_log(&p), "restore by gpu-warmd");
	GW_ASSERT_INT_EQ(pt_log_count(&p, "unlock by"), 0);
	GW_ASSERT_INT_EQ(pt_cuda_state(a.pid), PT_LOCKED);
	GW_ASSERT_INT_EQ(pt_daemon_call(&p, GW_METHOD_PROCESS_UNLOCK, params, NULL), 0);
	cJSON_Delete(params);
	pt_assert_verified(&a, 1);
	pt_finish();
}

/* With CRIU's cuda_plugin.so beside ours, the one CRIU reads first takes the CUDA processes,
 * and gw_criu_check() says which it will be. */
GW_TEST(coexistence_first_loaded_wins)
{
	char pid[16], link[300], tools[300], tool[320], first[64] = "";
	struct gw_criu_check_opts opts = { 0 };
	struct pt_app a;
	struct pt p;
	struct dirent *e;
	cJSON *report;
	int ours_first;
	FILE *f;
	DIR *d;

	pt_setup(&p);
	snprintf(link, sizeof(link), "%s/cuda_plugin.so", p.plugins);
	GW_ASSERT(symlink(getenv("GW_DUMMY_CUDA_PLUGIN"), link) == 0);
	d = opendir(p.plugins);
	GW_ASSERT(d);
	while ((e = readdir(d)) && !first[0])
		if (strstr(e->d_name, ".so"))
			snprintf(first, sizeof(first), "%.63s", e->d_name);
	closedir(d);
	ours_first = strcmp(first, "gpuwarm_plugin.so") == 0;

	/* gw_criu_check with cuda_plugin enabled: a GPU and cuda-checkpoint in PATH */
	snprintf(tools, sizeof(tools), "%s/bin", p.dir);
	GW_ASSERT(mkdir(tools, 0755) == 0);
	snprintf(tool, sizeof(tool), "%s/cuda-checkpoint", tools);
	f = fopen(tool, "w");
	GW_ASSERT(f);
	fprintf(f, "#!/bin/sh\nexit 0\n");
	fclose(f);
	chmod(tool, 0755);
	opts.path = tools;
	opts.plugin_dir = p.plugins;
	opts.nvidia_proc = p.dir;
	GW_ASSERT_INT_EQ(gw_criu_check_with(&opts, &report), 0);
	GW_ASSERT_INT_EQ(cJSON_IsTrue(cJSON_GetObjectItem(report, "gpuwarm_used")), ours_first);
	GW_ASSERT_STR_EQ(cJSON_GetArrayItem(cJSON_GetObjectItem(report, "load_order"), 0)
				 ->valuestring, first);
	cJSON_Delete(report);

	pt_daemon_start(&p, NULL);
	pt_app_start(&a, NULL, NULL);
	pt_num(pid, sizeof(pid), a.pid);
	GW_ASSERT_INT_EQ(pt_criu(&p, 0, "dump", PT_ARGS("-t", pid), NULL), 0);
	pt_assert_hook(&p, "PAUSE_DEVICES", a.pid, "0");
	if (ours_first) {
		GW_ASSERT_STR_CONTAINS(pt_log(&p), "lock by gpu-warmd");
		GW_ASSERT_INT_EQ(pt_log_count(&p, "dummy cuda_plugin"), 0);
		GW_ASSERT_INT_EQ(pt_cuda_state(a.pid), PT_CHECKPOINTED);
		GW_ASSERT_INT_EQ(pt_criu(&p, 0, "restore", PT_ARGS("-t", pid), NULL), 0);
	} else {
		GW_ASSERT(pt_log_count(&p, "dummy cuda_plugin: PAUSE_DEVICES") == 1);
		GW_ASSERT_INT_EQ(pt_log_count(&p, "lock by"), 0);
	}
	GW_ASSERT_INT_EQ(pt_cuda_state(a.pid), PT_RUNNING);
	pt_assert_verified(&a, 1);
	pt_finish();
}

GW_TEST_MAIN();
