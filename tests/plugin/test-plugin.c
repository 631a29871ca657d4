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

enum { RUNNING = 0, LOCKED = 1, CHECKPOINTED = 2 };

#define ENOTSUP_TEXT "-95"

static const char *num(char *buf, size_t len, long v)
{
	snprintf(buf, len, "%ld", v);
	return buf;
}

static void assert_hook(const struct pt *p, const char *hook, pid_t pid, const char *ret)
{
	char line[128];

	snprintf(line, sizeof(line), "hook %s(%d) = %s\n", hook, (int)pid, ret);
	GW_ASSERT_STR_CONTAINS(pt_log(p), line);
}

static void assert_no_hook(const struct pt *p, const char *hook, pid_t pid)
{
	char line[128];

	snprintf(line, sizeof(line), "hook %s(%d) = ", hook, (int)pid);
	if (strstr(pt_log(p), line))
		GW_FAIL("%s ran for %d", hook, (int)pid);
}

static void assert_verified(struct pt_app *a, int n)
{
	char line[256];

	GW_ASSERT_INT_EQ(pt_app_verify(a, line, sizeof(line)), n);
}

static int file_has(const char *dir, const char *name, const char *needle)
{
	char path[512], buf[4096];
	size_t n = 0;
	FILE *f;

	snprintf(path, sizeof(path), "%s/%s", dir, name);
	f = fopen(path, "r");
	if (!f)
		return 0;
	n = fread(buf, 1, sizeof(buf) - 1, f);
	fclose(f);
	buf[n] = '\0';
	return strstr(buf, needle) != NULL;
}

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
	num(pid, sizeof(pid), a.pid);

	GW_ASSERT_INT_EQ(pt_criu(&p, 0, "dump", PT_ARGS("-t", pid), NULL), 0);
	assert_hook(&p, "PAUSE_DEVICES", a.pid, "0");
	assert_hook(&p, "CHECKPOINT_DEVICES", a.pid, "0");
	GW_ASSERT_STR_CONTAINS(pt_log(&p), "lock by gpu-warmd");
	GW_ASSERT_STR_CONTAINS(pt_log(&p), "checkpoint by gpu-warmd");
	GW_ASSERT_STR_CONTAINS(pt_log(&p), "compel: interrupt-only mode");
	GW_ASSERT_INT_EQ(pt_cuda_state(a.pid), CHECKPOINTED);
	GW_ASSERT_INT_EQ(pt_image(&p, a.pid, &img), 0);
	GW_ASSERT_INT_EQ(img.pid, a.pid);
	GW_ASSERT_INT_EQ(img.vpid, a.pid);
	GW_ASSERT(img.restore_tid > 0 && img.restore_tid != a.pid);
	GW_ASSERT_INT_EQ(img.state, GWP_STATE_RUNNING);
	GW_ASSERT(file_has(p.images, "fake-inventory", "gpuwarm_plugin"));

	GW_ASSERT_INT_EQ(pt_criu(&p, 0, "restore", PT_ARGS("-t", pid), NULL), 0);
	assert_hook(&p, "RESUME_DEVICES_LATE", a.pid, "0");
	GW_ASSERT_STR_CONTAINS(pt_log(&p), "restore by gpu-warmd");
	GW_ASSERT_STR_CONTAINS(pt_log(&p), "unlock by gpu-warmd");
	GW_ASSERT_INT_EQ(pt_cuda_state(a.pid), RUNNING);
	assert_verified(&a, 1);
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
	num(pid, sizeof(pid), a.pid);

	GW_ASSERT_INT_EQ(pt_criu(&p, 0, "dump", PT_ARGS("-t", pid), NULL), 0);
	snprintf(expect, sizeof(expect), "gpuwarm: gpu-warmd not reachable at %s", p.socket);
	GW_ASSERT_STR_CONTAINS(pt_log(&p), expect);
	GW_ASSERT_STR_CONTAINS(pt_log(&p), "using the driver directly");
	GW_ASSERT_STR_CONTAINS(pt_log(&p), "lock by the driver");
	GW_ASSERT_STR_CONTAINS(pt_log(&p), "checkpoint by the driver");
	GW_ASSERT_INT_EQ(pt_cuda_state(a.pid), CHECKPOINTED);

	GW_ASSERT_INT_EQ(pt_criu(&p, 0, "restore", PT_ARGS("-t", pid), NULL), 0);
	assert_hook(&p, "RESUME_DEVICES_LATE", a.pid, "0");
	GW_ASSERT_STR_CONTAINS(pt_log(&p), "restore by the driver");
	GW_ASSERT_INT_EQ(pt_cuda_state(a.pid), RUNNING);
	assert_verified(&a, 1);
	pt_finish();
}

/* A record as a dump inside a container writes it: the process is pid 1 in its namespace; with
 * host_pid, it was dumped under that host pid (and a restore gave it another). */
static void as_container_pid1(const struct pt *p, pid_t pid, pid_t host_pid)
{
	struct gwp_image img;
	char path[512];
	int fd;

	GW_ASSERT_INT_EQ(pt_image(p, pid, &img), 0);
	img.vpid = 1;
	if (host_pid) {
		snprintf(path, sizeof(path), "%s/gpuwarm-%d.json", p->images, (int)pid);
		GW_ASSERT(unlink(path) == 0);
		img.pid = host_pid;
	}
	fd = open(p->images, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	GW_ASSERT(fd >= 0);
	GW_ASSERT_INT_EQ(gwp_image_write(fd, &img), 0);
	close(fd);
}

static size_t read_file(const char *dir, const char *name, char *buf, size_t len)
{
	char path[512];
	size_t n = 0;
	FILE *f;

	snprintf(path, sizeof(path), "%s/%s", dir, name);
	f = fopen(path, "r");
	if (f) {
		n = fread(buf, 1, len, f);
		fclose(f);
	}
	return n;
}

static void write_file(const char *dir, const char *name, const char *buf, size_t len)
{
	char path[512];
	FILE *f;

	snprintf(path, sizeof(path), "%s/%s", dir, name);
	f = fopen(path, "w");
	GW_ASSERT(f);
	GW_ASSERT(fwrite(buf, 1, len, f) == len);
	fclose(f);
}

/*
 * podman's checkpoint --keep (issue 7): dumps into one images directory, each leaving a record
 * for the container's pid 1. A restore into a new pid namespace (its process under a host pid
 * no record is named after; a fake /proc gives it NSpid 1) takes the record of the latest dump.
 * Dump 1 is of app a, dump 2 of app b (the container later on). Should the plugin have removed
 * dump 1's record, it is put back, as one that a cleanup could not remove.
 */
GW_TEST(stale_record_of_earlier_dump)
{
	char pid_a[16], pid_b[16], name_a[64], stale[GWP_IMAGE_MAX_BYTES], env[300];
	struct gwp_image img;
	struct pt_app a, b;
	struct pt p;
	size_t nstale;
	int removed;

	pt_setup(&p);
	pt_daemon_start(&p, NULL);
	pt_app_start(&a, NULL, NULL);
	pt_app_start(&b, NULL, NULL);
	num(pid_a, sizeof(pid_a), a.pid);
	num(pid_b, sizeof(pid_b), b.pid);

	/* dump 1, restored in place (checkpoint --keep, restore --keep) */
	GW_ASSERT_INT_EQ(pt_criu(&p, 0, "dump", PT_ARGS("-t", pid_a), NULL), 0);
	as_container_pid1(&p, a.pid, 0);
	GW_ASSERT_INT_EQ(pt_criu(&p, 0, "restore", PT_ARGS("-t", pid_a), NULL), 0);
	assert_hook(&p, "RESUME_DEVICES_LATE", a.pid, "0");
	assert_verified(&a, 1);
	gwp_image_name(a.pid, name_a, sizeof(name_a));
	nstale = read_file(p.images, name_a, stale, sizeof(stale));
	GW_ASSERT(nstale > 0);

	/* dump 2 into the same directory */
	GW_ASSERT_INT_EQ(pt_criu(&p, 0, "dump", PT_ARGS("-t", pid_b), NULL), 0);
	assert_hook(&p, "CHECKPOINT_DEVICES", b.pid, "0");
	removed = pt_image(&p, a.pid, &img) == -ENOENT;
	if (removed)
		write_file(p.images, name_a, stale, nstale);
	as_container_pid1(&p, b.pid, 4194000);

	snprintf(env, sizeof(env), "GPUWARM_PROC_ROOT=%s", pt_fake_nspid(&p, b.pid, 1));
	GW_ASSERT_INT_EQ(pt_criu(&p, 0, "restore", PT_ARGS("-t", pid_b), PT_ARGS(env)), 0);
	assert_hook(&p, "RESUME_DEVICES_LATE", b.pid, "0");
	GW_ASSERT_STR_CONTAINS(pt_log(&p), "restore by gpu-warmd");
	GW_ASSERT_INT_EQ(pt_cuda_state(b.pid), RUNNING);
	assert_verified(&b, 1);
	GW_ASSERT_INT_EQ(pt_cuda_state(a.pid), RUNNING);
	assert_verified(&a, 1);
	GW_ASSERT(removed); /* dump 2 removed dump 1's record */
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
	num(pid, sizeof(pid), a.pid);

	GW_ASSERT_INT_EQ(pt_criu(&p, 0, "dump", PT_ARGS("-t", pid), NULL), 0);
	GW_ASSERT_STR_CONTAINS(pt_log(&p), "using the driver directly");
	GW_ASSERT_STR_CONTAINS(pt_log(&p), "lock by the driver");
	GW_ASSERT_STR_CONTAINS(pt_log(&p), "checkpoint by the driver");
	GW_ASSERT_STR_CONTAINS(pt_log(&p),
			       "self after CHECKPOINT_DEVICES: 1 threads, CUDA driver not mapped");
	GW_ASSERT_STR_CONTAINS(pt_log(&p),
			       "self after the plugins' exit: 1 threads, CUDA driver not mapped");
	GW_ASSERT_INT_EQ(pt_log_count(&p, "driver helper process"), 2); /* one per hook */
	GW_ASSERT_INT_EQ(pt_cuda_state(a.pid), CHECKPOINTED);

	GW_ASSERT_INT_EQ(pt_criu(&p, 0, "restore", PT_ARGS("-t", pid), NULL), 0);
	assert_hook(&p, "RESUME_DEVICES_LATE", a.pid, "0");
	GW_ASSERT_STR_CONTAINS(pt_log(&p), "restore by the driver");
	GW_ASSERT_STR_CONTAINS(pt_log(&p), "unlock by the driver");
	GW_ASSERT_STR_CONTAINS(pt_log(&p),
			       "self after RESUME_DEVICES_LATE: 1 threads, CUDA driver not mapped");
	GW_ASSERT_INT_EQ(pt_log_count(&p, "driver helper process"), 1);
	GW_ASSERT_INT_EQ(pt_cuda_state(a.pid), RUNNING);
	assert_verified(&a, 1);

	/* a driver call that fails: its text comes through, the exit hook undoes the lock */
	GW_ASSERT_INT_EQ(pt_criu(&p, 0, "dump", PT_ARGS("-t", pid),
				 PT_ARGS("FAKECUDA_FAIL=cuCheckpointProcessCheckpoint=999")), 1);
	assert_hook(&p, "CHECKPOINT_DEVICES", a.pid, "-1");
	snprintf(expect, sizeof(expect), "cannot checkpoint pid %d: cuCheckpointProcessCheckpoint"
		 "(pid %d): ", (int)a.pid, (int)a.pid);
	GW_ASSERT_STR_CONTAINS(pt_log(&p), expect);
	GW_ASSERT_STR_CONTAINS(pt_log(&p), "unlock by the driver");
	GW_ASSERT_STR_CONTAINS(pt_log(&p),
			       "self after the plugins' exit: 1 threads, CUDA driver not mapped");
	GW_ASSERT_INT_EQ(pt_cuda_state(a.pid), RUNNING);
	assert_verified(&a, 1);
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
	num(pid, sizeof(pid), a.pid);

	criu = pt_criu_spawn(&p, "dump", PT_ARGS("-t", pid, "--stop-after-pause"), NULL);
	GW_ASSERT(waitpid(criu, &status, WUNTRACED) == criu && WIFSTOPPED(status));
	GW_ASSERT_STR_CONTAINS(pt_log(&p), "lock by gpu-warmd");
	pt_daemon_kill(&p);
	kill(criu, SIGCONT);
	GW_ASSERT_INT_EQ(pt_wait(criu), 0);
	fprintf(stderr, "%s", pt_log(&p));
	assert_hook(&p, "CHECKPOINT_DEVICES", a.pid, "0");
	GW_ASSERT_STR_CONTAINS(pt_log(&p), "is no longer usable");
	GW_ASSERT_STR_CONTAINS(pt_log(&p), "checkpoint by the driver");
	GW_ASSERT_INT_EQ(pt_cuda_state(a.pid), CHECKPOINTED);

	GW_ASSERT_INT_EQ(pt_criu(&p, 0, "restore", PT_ARGS("-t", pid), NULL), 0);
	GW_ASSERT_STR_CONTAINS(pt_log(&p), "restore by the driver");
	GW_ASSERT_INT_EQ(pt_cuda_state(a.pid), RUNNING);
	assert_verified(&a, 1);
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
	num(pid, sizeof(pid), a.pid);

	for (int attempt = 0; attempt < 6 && code == 0; attempt++) {
		code = pt_criu(&p, 0, "dump", PT_ARGS("-t", pid, "--timeout", "1"), NULL);
		if (code == 0)
			GW_ASSERT_INT_EQ(pt_criu(&p, 0, "restore", PT_ARGS("-t", pid), NULL), 0);
	}
	GW_ASSERT_INT_EQ(code, 1);
	GW_ASSERT_STR_CONTAINS(pt_log(&p), "cannot lock pid");
	assert_hook(&p, "PAUSE_DEVICES", a.pid, "-1");
	assert_no_hook(&p, "CHECKPOINT_DEVICES", a.pid);
	snprintf(line, sizeof(line), "pid %d: running again", (int)a.pid);
	GW_ASSERT_STR_CONTAINS(pt_log(&p), line);
	GW_ASSERT_INT_EQ(pt_cuda_state(a.pid), RUNNING);
	assert_verified(&a, 1);
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
	num(pid, sizeof(pid), a.pid);

	GW_ASSERT_INT_EQ(pt_criu(&p, 0, "dump", PT_ARGS("-t", pid), NULL), 1);
	assert_hook(&p, "PAUSE_DEVICES", a.pid, "0");
	assert_hook(&p, "CHECKPOINT_DEVICES", a.pid, "-1");
	GW_ASSERT_STR_CONTAINS(pt_log(&p), "cannot checkpoint pid");
	GW_ASSERT_STR_CONTAINS(pt_log(&p), "the dump failed: resuming");
	GW_ASSERT_STR_CONTAINS(pt_log(&p), "unlock by gpu-warmd");
	GW_ASSERT_INT_EQ(pt_cuda_state(a.pid), RUNNING);
	GW_ASSERT_INT_EQ(pt_image(&p, a.pid, &img), -ENOENT);
	assert_verified(&a, 1);
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
	num(pid, sizeof(pid), a.pid);

	GW_ASSERT_INT_EQ(pt_criu(&p, 0, "dump", PT_ARGS("-t", pid, "--fail-after-checkpoint"),
				 NULL), 1);
	assert_hook(&p, "CHECKPOINT_DEVICES", a.pid, "0");
	GW_ASSERT_STR_CONTAINS(pt_log(&p), "restore by gpu-warmd");
	GW_ASSERT_STR_CONTAINS(pt_log(&p), "unlock by gpu-warmd");
	GW_ASSERT_INT_EQ(pt_cuda_state(a.pid), RUNNING);
	assert_verified(&a, 1);
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
	num(pid, sizeof(pid), a.pid);

	GW_ASSERT_INT_EQ(pt_criu(&p, 0, "dump", PT_ARGS("-t", pid, "-R"), NULL), 0);
	assert_hook(&p, "CHECKPOINT_DEVICES", a.pid, "0");
	GW_ASSERT_STR_CONTAINS(pt_log(&p), "--leave-running: resuming");
	GW_ASSERT_STR_CONTAINS(pt_log(&p), "restore by gpu-warmd");
	GW_ASSERT_STR_CONTAINS(pt_log(&p), "unlock by gpu-warmd");
	GW_ASSERT_INT_EQ(pt_cuda_state(a.pid), RUNNING);
	GW_ASSERT_INT_EQ(pt_image(&p, a.pid, &img), 0); /* the images are good */
	assert_verified(&a, 1);
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
	num(pid, sizeof(pid), a.pid);

	GW_ASSERT_INT_EQ(pt_criu(&p, 0, "pre-dump", PT_ARGS("-t", pid), NULL), 0);
	GW_ASSERT_STR_CONTAINS(pt_log(&p), "gpuwarm: disabled: pre-dump");
	assert_hook(&p, "PAUSE_DEVICES", a.pid, ENOTSUP_TEXT);
	GW_ASSERT_INT_EQ(pt_cuda_state(a.pid), RUNNING);
	GW_ASSERT_INT_EQ(pt_daemon_ops_ok(&p, "lock"), 0);
	assert_verified(&a, 1);
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
	num(pid, sizeof(pid), a.pid);
	num(spid, sizeof(spid), sleeper);

	GW_ASSERT_INT_EQ(pt_criu(&p, 0, "dump", PT_ARGS("-t", spid, "-t", pid), NULL), 0);
	assert_hook(&p, "PAUSE_DEVICES", sleeper, ENOTSUP_TEXT);
	assert_hook(&p, "CHECKPOINT_DEVICES", sleeper, ENOTSUP_TEXT);
	assert_hook(&p, "PAUSE_DEVICES", a.pid, "0");
	assert_hook(&p, "CHECKPOINT_DEVICES", a.pid, "0");
	GW_ASSERT_STR_CONTAINS(pt_log(&p), "is not a CUDA process");
	GW_ASSERT_INT_EQ(pt_image(&p, sleeper, &img), -ENOENT);

	GW_ASSERT_INT_EQ(pt_criu(&p, 0, "restore", PT_ARGS("-t", spid, "-t", pid), NULL), 0);
	assert_hook(&p, "RESUME_DEVICES_LATE", sleeper, ENOTSUP_TEXT);
	assert_hook(&p, "RESUME_DEVICES_LATE", a.pid, "0");
	assert_verified(&a, 1);
	pt_finish();
}

GW_TEST(no_driver_enotsup)
{
	struct pt_app a;
	struct pt p;
	char pid[16];

	pt_setup(&p);
	pt_app_start(&a, NULL, NULL);
	num(pid, sizeof(pid), a.pid);

	GW_ASSERT_INT_EQ(pt_criu(&p, 0, "dump", PT_ARGS("-t", pid),
				 PT_ARGS("GPUWARM_CUDA_LIBRARY=/nonexistent/libcuda.so.1")), 0);
	assert_hook(&p, "PAUSE_DEVICES", a.pid, ENOTSUP_TEXT);
	assert_hook(&p, "CHECKPOINT_DEVICES", a.pid, ENOTSUP_TEXT);
	GW_ASSERT_STR_CONTAINS(pt_log(&p), "no usable CUDA driver");
	GW_ASSERT_STR_CONTAINS(pt_log(&p), "standing aside, the CUDA hooks answer -ENOTSUP");
	GW_ASSERT_INT_EQ(pt_log_count(&p, "standing aside"), 1);
	GW_ASSERT(!file_has(p.images, "fake-inventory", "gpuwarm_plugin"));
	GW_ASSERT_INT_EQ(pt_cuda_state(a.pid), RUNNING);
	assert_verified(&a, 1);
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
	num(pid, sizeof(pid), a.pid);

	GW_ASSERT_INT_EQ(pt_criu(&p, 0, "dump", PT_ARGS("-t", pid), NULL), 0);
	assert_hook(&p, "PAUSE_DEVICES", a.pid, "0");
	assert_hook(&p, "PAUSE_DEVICES", a.child, "0");
	assert_hook(&p, "CHECKPOINT_DEVICES", a.pid, "0");
	assert_hook(&p, "CHECKPOINT_DEVICES", a.child, "0");
	GW_ASSERT_INT_EQ(pt_cuda_state(a.pid), CHECKPOINTED);
	GW_ASSERT_INT_EQ(pt_cuda_state(a.child), CHECKPOINTED);
	GW_ASSERT_INT_EQ(pt_image(&p, a.child, &img), 0);

	GW_ASSERT_INT_EQ(pt_criu(&p, 0, "restore", PT_ARGS("-t", pid), NULL), 0);
	assert_hook(&p, "RESUME_DEVICES_LATE", a.pid, "0");
	assert_hook(&p, "RESUME_DEVICES_LATE", a.child, "0");
	GW_ASSERT_INT_EQ(pt_cuda_state(a.pid), RUNNING);
	GW_ASSERT_INT_EQ(pt_cuda_state(a.child), RUNNING);
	assert_verified(&a, 2);
	pt_finish();
}

/* The app used GPU 0; GPU 0 is drained before the restore: it comes back on GPU 1. */
GW_TEST(restore_onto_other_gpu_when_drained)
{
	char pid[16], line[256], gpu[64], gpu0[64], gpu1[64], expect[256];
	struct gwp_image img;
	struct pt_app a;
	struct pt p;
	cJSON *params, *status;

	if (geteuid() != 0) { /* meson's skip code does not pass through gw-test */
		fprintf(stderr, "not root: gpuwarm.Drain needs root; "
				"restore_onto_other_gpu_when_absent covers the remapping\n");
		return;
	}
	pt_setup(&p);
	setenv("FAKECUDA_GPUS", "2", 1);
	pt_gpu_uuid(0, gpu0, sizeof(gpu0));
	pt_gpu_uuid(1, gpu1, sizeof(gpu1));
	pt_daemon_start(&p, NULL);
	pt_app_start(&a, NULL, NULL);
	GW_ASSERT_STR_EQ(a.gpu, gpu0);
	setenv("GPUWARM_PROC_ROOT", pt_fake_proc(&p, a.pid, 0, 2), 1);
	num(pid, sizeof(pid), a.pid);

	GW_ASSERT_INT_EQ(pt_criu(&p, 0, "dump", PT_ARGS("-t", pid), NULL), 0);
	GW_ASSERT_INT_EQ(pt_image(&p, a.pid, &img), 0);
	GW_ASSERT_INT_EQ(img.ngpus, 1);
	GW_ASSERT_STR_EQ(img.gpus[0].uuid, gpu0);
	GW_ASSERT_STR_EQ(img.gpus[0].pci, "0000:3b:00.0");

	params = cJSON_Parse("{\"gpus\": [\"0\"]}");
	GW_ASSERT_INT_EQ(pt_daemon_call(&p, GW_METHOD_DRAIN, params, NULL), 0);
	cJSON_Delete(params);
	GW_ASSERT_INT_EQ(pt_criu(&p, 0, "restore", PT_ARGS("-t", pid), NULL), 0);
	snprintf(expect, sizeof(expect), "GPU %s is gone or drained: restoring onto %s", gpu0,
		 gpu1);
	GW_ASSERT_STR_CONTAINS(pt_log(&p), expect);
	assert_hook(&p, "RESUME_DEVICES_LATE", a.pid, "0");
	GW_ASSERT_INT_EQ(pt_app_verify(&a, line, sizeof(line)), 1);
	pt_verify_gpu(line, gpu, sizeof(gpu));
	GW_ASSERT_STR_EQ(gpu, gpu1);
	status = pt_daemon_status(&p); /* the restore's lease is given back */
	GW_ASSERT(status);
	GW_ASSERT_INT_EQ(cJSON_GetArraySize(cJSON_GetObjectItem(status, "leases")), 0);
	cJSON_Delete(status);
	pt_finish();
}

/* Without the daemon: the app used GPU 1, the restoring side sees one GPU only. */
GW_TEST(restore_onto_other_gpu_when_absent)
{
	char pid[16], line[256], gpu[64], gpu0[64], gpu1[64];
	struct gwp_image img;
	struct pt_app a;
	struct pt p;

	pt_setup(&p);
	setenv("FAKECUDA_GPUS", "2", 1);
	pt_gpu_uuid(0, gpu0, sizeof(gpu0));
	pt_gpu_uuid(1, gpu1, sizeof(gpu1));
	pt_app_start(&a, PT_ARGS("--gpu", "1"), NULL);
	GW_ASSERT_STR_EQ(a.gpu, gpu1);
	setenv("GPUWARM_PROC_ROOT", pt_fake_proc(&p, a.pid, 1, 2), 1);
	num(pid, sizeof(pid), a.pid);

	GW_ASSERT_INT_EQ(pt_criu(&p, 0, "dump", PT_ARGS("-t", pid), NULL), 0);
	GW_ASSERT_INT_EQ(pt_image(&p, a.pid, &img), 0);
	GW_ASSERT_INT_EQ(img.ngpus, 1);
	GW_ASSERT_STR_EQ(img.gpus[0].uuid, gpu1);
	GW_ASSERT_STR_EQ(img.gpus[0].pci, "0000:3c:00.0");

	GW_ASSERT_INT_EQ(pt_criu(&p, 0, "restore", PT_ARGS("-t", pid), PT_ARGS("FAKECUDA_GPUS=1")),
			 0);
	assert_hook(&p, "RESUME_DEVICES_LATE", a.pid, "0");
	GW_ASSERT_STR_CONTAINS(pt_log(&p), "is gone or drained: restoring onto");
	GW_ASSERT_INT_EQ(pt_app_verify(&a, line, sizeof(line)), 1);
	pt_verify_gpu(line, gpu, sizeof(gpu));
	GW_ASSERT_STR_EQ(gpu, gpu0);
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
	num(pid, sizeof(pid), a.pid);

	GW_ASSERT_INT_EQ(pt_criu(&p, 1, "dump", PT_ARGS("-t", pid), NULL), 0);
	GW_ASSERT_STR_CONTAINS(pt_log(&p), "fake-criu dump (10 hooks)");
	GW_ASSERT_STR_CONTAINS(pt_log(&p), "\"gpuwarm_plugin\" version 0x200 hooks 10");
	GW_ASSERT_STR_CONTAINS(pt_log(&p), "gpuwarm: disabled: this CRIU has no device hooks");
	GW_ASSERT_INT_EQ(pt_cuda_state(a.pid), RUNNING);
	assert_verified(&a, 1);
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
	num(pid, sizeof(pid), a.pid);

	GW_ASSERT_INT_EQ(pt_criu(&p, 0, "dump", PT_ARGS("-t", pid), NULL), 0);
	snprintf(from, sizeof(from), "%s/gpuwarm_plugin.so", p.plugins);
	snprintf(to, sizeof(to), "%s/gpuwarm_plugin.so.off", p.dir);
	GW_ASSERT(rename(from, to) == 0);
	GW_ASSERT_INT_EQ(pt_criu(&p, 0, "restore", PT_ARGS("-t", pid), NULL), 1);
	GW_ASSERT_STR_CONTAINS(pt_log(&p), "Missing required plugin: gpuwarm_plugin");
	GW_ASSERT_INT_EQ(pt_cuda_state(a.pid), CHECKPOINTED);
	GW_ASSERT(rename(to, from) == 0);
	GW_ASSERT_INT_EQ(pt_criu(&p, 0, "restore", PT_ARGS("-t", pid), NULL), 0);
	assert_verified(&a, 1);
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
	num(pid, sizeof(pid), a.pid);
	params = pid_params(a.pid);
	GW_ASSERT_INT_EQ(pt_daemon_call(&p, GW_METHOD_PROCESS_LOCK, params, NULL), 0);

	GW_ASSERT_INT_EQ(pt_criu(&p, 0, "dump", PT_ARGS("-t", pid, "-R"), NULL), 0);
	snprintf(line, sizeof(line), "pid %d is locked already: left so", (int)a.pid);
	GW_ASSERT_STR_CONTAINS(pt_log(&p), line);
	GW_ASSERT_STR_CONTAINS(pt_log(&p), "checkpoint by gpu-warmd");
	GW_ASSERT_STR_CONTAINS(pt_log(&p), "restore by gpu-warmd");
	GW_ASSERT_INT_EQ(pt_log_count(&p, "unlock by"), 0);
	GW_ASSERT_INT_EQ(pt_cuda_state(a.pid), LOCKED);
	GW_ASSERT_INT_EQ(pt_daemon_call(&p, GW_METHOD_PROCESS_UNLOCK, params, NULL), 0);
	cJSON_Delete(params);
	assert_verified(&a, 1);
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
	num(pid, sizeof(pid), a.pid);
	GW_ASSERT_INT_EQ(pt_criu(&p, 0, "dump", PT_ARGS("-t", pid), NULL), 0);
	assert_hook(&p, "PAUSE_DEVICES", a.pid, "0");
	if (ours_first) {
		GW_ASSERT_STR_CONTAINS(pt_log(&p), "lock by gpu-warmd");
		GW_ASSERT_INT_EQ(pt_log_count(&p, "dummy cuda_plugin"), 0);
		GW_ASSERT_INT_EQ(pt_cuda_state(a.pid), CHECKPOINTED);
		GW_ASSERT_INT_EQ(pt_criu(&p, 0, "restore", PT_ARGS("-t", pid), NULL), 0);
	} else {
		GW_ASSERT(pt_log_count(&p, "dummy cuda_plugin: PAUSE_DEVICES") == 1);
		GW_ASSERT_INT_EQ(pt_log_count(&p, "lock by"), 0);
	}
	GW_ASSERT_INT_EQ(pt_cuda_state(a.pid), RUNNING);
	assert_verified(&a, 1);
	pt_finish();
}


/* Start gw-vram-app under the in-process shim and wait until gpu-warmd sees its VRAM. */
static void start_shimmed_app(struct pt *p, struct pt_app *a, const char *const *args)
{
	char preload[600];

	if (!getenv("GW_SHIM"))
		GW_SKIP("no in-process shim in this build");
	snprintf(preload, sizeof(preload), "LD_PRELOAD=%s", getenv("GW_SHIM"));
	pt_app_start(a, args, PT_ARGS(preload));
	for (int i = 0; i < 300; i++) {
		cJSON *st = pt_daemon_status(p), *proc;
		int seen = 0;

		cJSON_ArrayForEach(proc, cJSON_GetObjectItemCaseSensitive(st, "processes"))
			if (cJSON_GetObjectItemCaseSensitive(proc, "pid")->valuedouble == a->pid &&
			    cJSON_GetObjectItemCaseSensitive(proc, "vram_bytes")->valuedouble > 0)
				seen = 1;
		cJSON_Delete(st);
		if (seen)
			return;
		pt_sleep_ms(20);
	}
	GW_FAIL("the shimmed app's agent never showed up");
}

/* The fast path through CRIU: the VRAM goes into gpuwarm-vram-<pid>.img among CRIU's images,
 * sparse (zero chunks left out) and checksummed, and comes back from there. */
GW_TEST(fast_path_writes_vram_image_into_the_images)
{
	struct gwp_image img;
	struct pt_app a;
	struct pt p;
	char pid[16], vram[600], magic[8] = "";
	struct gw_vimg v;
	char err[256];
	int fd;

	pt_setup(&p);
	pt_daemon_start(&p, NULL);
	start_shimmed_app(&p, &a, PT_ARGS("--mib", "32", "--zero-mib", "64", "--chunk-mib", "16"));
	num(pid, sizeof(pid), a.pid);

	GW_ASSERT_INT_EQ(pt_criu(&p, 0, "dump", PT_ARGS("-t", pid), NULL), 0);
	assert_hook(&p, "PAUSE_DEVICES", a.pid, "0");
	GW_ASSERT_STR_CONTAINS(pt_log(&p), "(fast path) into gpuwarm-vram-");
	GW_ASSERT_INT_EQ(pt_image(&p, a.pid, &img), 0);
	GW_ASSERT(img.fast && img.vram_file && img.agent_vtid > 0);
	snprintf(vram, sizeof(vram), "%s/gpuwarm-vram-%d.img", p.images, (int)a.pid);
	fd = open(vram, O_RDONLY);
	GW_ASSERT(fd >= 0);
	GW_ASSERT(read(fd, magic, 8) == 8 && memcmp(magic, GW_VIMG_MAGIC, 8) == 0);
	if (gw_vimg_read_fd(fd, &v, err, sizeof(err)) < 0)
		GW_FAIL("%s: %s", vram, err);
	GW_ASSERT_INT_EQ(v.vram_bytes, 96u << 20);
	GW_ASSERT_INT_EQ(v.data_bytes, 32u << 20);
	GW_ASSERT(v.flags & GW_VIMG_F_SUMS);
	/* its data in segment files beside it, one per I/O lane */
	GW_ASSERT_INT_EQ(v.nsegments, GWP_VRAM_SEGMENTS);
	for (uint32_t k = 0; k < v.nsegments; k++) {
		char seg[640];
		int sfd;

		snprintf(seg, sizeof(seg), "%s.seg-%u", vram, k);
		sfd = open(seg, O_RDONLY);
		GW_ASSERT(sfd >= 0);
		if (gw_vimg_check_segment_fd(&v, k, sfd, err, sizeof(err)) < 0)
			GW_FAIL("%s: %s", seg, err);
		close(sfd);
	}
	gw_vimg_clear(&v);
	close(fd);

	GW_ASSERT_INT_EQ(pt_criu(&p, 0, "restore", PT_ARGS("-t", pid), NULL), 0);
	assert_hook(&p, "RESUME_DEVICES_LATE", a.pid, "0");
	GW_ASSERT_STR_CONTAINS(pt_log(&p), "restored by gpu-warmd (fast path)");
	GW_ASSERT_INT_EQ(pt_cuda_state(a.pid), RUNNING);
	assert_verified(&a, 1);
	pt_finish();
}

/* The image in CRIU's directory is all a restore needs: a daemon that never saw the dump (it
 * was restarted in between) restores from it. */
GW_TEST(fast_path_restore_needs_only_the_image_file)
{
	struct pt_app a;
	struct pt p;
	char pid[16];
	cJSON *st;

	pt_setup(&p);
	pt_daemon_start(&p, NULL);
	start_shimmed_app(&p, &a, PT_ARGS("--mib", "32", "--zero-mib", "32", "--chunk-mib", "16"));
	num(pid, sizeof(pid), a.pid);
	GW_ASSERT_INT_EQ(pt_criu(&p, 0, "dump", PT_ARGS("-t", pid), NULL), 0);
	GW_ASSERT_STR_CONTAINS(pt_log(&p), "(fast path) into gpuwarm-vram-");

	pt_daemon_kill(&p);
	pt_daemon_start(&p, NULL);
	/* the app's agent finds the new daemon by itself */
	for (int i = 0; i < 300; i++) {
		cJSON *proc;
		int seen = 0;

		st = pt_daemon_status(&p);
		cJSON_ArrayForEach(proc, cJSON_GetObjectItemCaseSensitive(st, "processes"))
			seen |= cJSON_GetObjectItemCaseSensitive(proc, "pid")->valuedouble == a.pid;
		cJSON_Delete(st);
		if (seen)
			break;
		pt_sleep_ms(50);
	}
	GW_ASSERT_INT_EQ(pt_criu(&p, 0, "restore", PT_ARGS("-t", pid), NULL), 0);
	fprintf(stderr, "%s", pt_log(&p));
	GW_ASSERT_STR_CONTAINS(pt_log(&p), "restored by gpu-warmd (fast path)");
	GW_ASSERT_INT_EQ(pt_cuda_state(a.pid), RUNNING);
	assert_verified(&a, 1);
	pt_finish();
}

GW_TEST_MAIN();
