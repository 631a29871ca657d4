/* SPDX-License-Identifier: MIT */
/*
 * gpuwarm_plugin.so: CRIU's device hooks for CUDA processes, done by gpu-warmd (or by the
 * driver, in a helper process, when the daemon is not there).
 *
 *   dump:    PAUSE_DEVICES(pid)       lock        (CRIU has not seized pid yet)
 *            CHECKPOINT_DEVICES(pid)  checkpoint  (every thread seized; we let the CUDA restore
 *                                                  thread run around the call) and write
 *                                                  gpuwarm-<pid>.json into the images
 *            exit(DUMP, ret)          on failure or --leave-running: back to the first state
 *   restore: RESUME_DEVICES_LATE(pid) restore (onto other GPUs when the json's are gone or
 *                                     drained) + unlock, threads seized as at checkpoint
 *
 * Processes that are not CUDA processes get -ENOTSUP ("not mine"), so the next plugin in
 * CRIU's chain still sees them. CRIU is single-threaded and a plugin lives from init() to
 * exit(): the plugin's state is this file's one static struct, handed to the hooks
 * (gwp-plugin.h says which module holds which).
 */
#include "gwp-plugin.h"

#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "criu-plugin-abi.h"
#include "gw-cuda.h"

#define PROC_ROOT_ENV "GPUWARM_PROC_ROOT" /* see gwp_proc_root() */

static struct gwp_plugin P;

static int plugin_init(int stage);
static void plugin_exit(int stage, int ret);

/* What CRIU calls: each hook, then the driver helper process of the fallback, if the hook
 * started one, is gone before CRIU goes on (gwp-backend.h). */
static int pause_devices(int pid)
{
	int r = gwp_dump_pause(&P, pid);

	gwp_backend_idle(P.be);
	return r;
}

static int checkpoint_devices(int pid)
{
	int r = gwp_dump_checkpoint(&P, pid);

	gwp_backend_idle(P.be);
	return r;
}

static int resume_devices_late(int pid)
{
	double start = gwp_now_ms();
	int r = gwp_restore_resume(&P, pid);

	gwp_backend_idle(P.be);
	/* The hook's whole time, entry to return, for benchmarks (tests/bench/restore.py). */
	LOG(&P, DEBUG, "RESUME_DEVICES_LATE(%d) returns %d after %.1f ms", pid, r,
	    gwp_now_ms() - start);
	return r;
}

static int dump_unix_sk(int fd, int id)
{
	int r = gwp_agentsk_dump(&P, fd, id);

	gwp_backend_idle(P.be);
	return r;
}

static int restore_unix_sk(int id)
{
	int r = gwp_agentsk_restore(&P, id);

	gwp_backend_idle(P.be);
	return r;
}

static int post_forking(void)
{
	int r = gwp_restore_post_forking(&P);

	gwp_backend_idle(P.be);
	return r;
}

__attribute__((visibility("default"))) struct gwp_criu_plugin_desc CR_PLUGIN_DESC = {
	.name = GWP_PLUGIN_NAME,
	.init = plugin_init,
	.exit = plugin_exit,
	.version = GWP_CRIU_PLUGIN_VERSION,
	.max_hooks = GWP_CRIU_HOOKS_40,
	.hooks = {
		[GWP_CRIU_HOOK_DUMP_UNIX_SK] = (void *)dump_unix_sk,
		[GWP_CRIU_HOOK_RESTORE_UNIX_SK] = (void *)restore_unix_sk,
		[GWP_CRIU_HOOK_RESUME_DEVICES_LATE] = (void *)resume_devices_late,
		[GWP_CRIU_HOOK_PAUSE_DEVICES] = (void *)pause_devices,
		[GWP_CRIU_HOOK_CHECKPOINT_DEVICES] = (void *)checkpoint_devices,
		[GWP_CRIU_HOOK_POST_FORKING] = (void *)post_forking,
	},
};

/* A CRIU without device hooks would reject max_hooks 12 and with it the whole run: offer it
 * only the hooks it knows (init() then switches the plugin off). */
__attribute__((constructor)) static void plugin_loaded(void)
{
	struct gwp_criu c;

	gwp_criu_resolve(&c);
	CR_PLUGIN_DESC.max_hooks = gwp_max_hooks(c.in_criu, c.device_hooks, c.post_forking);
}

double gwp_now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec / 1e6;
}

const char *gwp_proc_root(void)
{
	const char *env = getenv(PROC_ROOT_ENV);

	return env && *env ? env : "/proc";
}

struct gwp_task *gwp_task_find(const struct gwp_plugin *p, pid_t pid)
{
	for (struct gwp_task *t = p->tasks; t; t = t->next)
		if (t->pid == pid)
			return t;
	return NULL;
}

struct gwp_task *gwp_task_add(struct gwp_plugin *p, pid_t pid)
{
	struct gwp_task *t = calloc(1, sizeof(*t));

	if (!t)
		return NULL;
	t->pid = pid;
	t->next = p->tasks;
	p->tasks = t;
	return t;
}

/* ---- init and exit ---- */

static int gpu_machine(void)
{
	return access("/proc/driver/nvidia/gpus", F_OK) == 0 || getenv(GW_CUDA_LIBRARY_ENV);
}

static int plugin_init(int stage)
{
	struct gwp_stage_input in = { .stage = stage };
	const char *why = NULL;

	memset(&P, 0, sizeof(P));
	gwp_store_init(&P.store);
	P.stage = stage;
	gwp_criu_resolve(&P.criu);
	in.old_criu = P.criu.in_criu && !P.criu.device_hooks;
	if (stage == GWP_CRIU_STAGE_RESTORE && P.criu.check_and_remove_inventory_plugin) {
		in.inventory_known = 1;
		in.in_inventory = P.criu.check_and_remove_inventory_plugin(GWP_PLUGIN_NAME,
									   strlen(GWP_PLUGIN_NAME));
	}
	P.mode = gwp_stage_mode(&in, &why);
	if (P.mode == GWP_MODE_DUMP)
		gwp_dump_id_new(P.dump_id, sizeof(P.dump_id));
	if (P.mode != GWP_MODE_OFF && gwp_backend_new(&P.criu, &P.be) < 0) {
		P.mode = GWP_MODE_OFF;
		why = "out of memory";
	}
	if (P.mode == GWP_MODE_OFF) {
		LOG(&P, INFO, "disabled: %s", why);
		return 0; /* a failing init() would fail the whole CRIU run */
	}
	/* The CUDA restore thread must stay reachable: no cgroup freezer (as cuda_plugin). */
	if (P.mode == GWP_MODE_DUMP && P.criu.interrupt_only && gpu_machine())
		P.criu.interrupt_only();
	LOG(&P, INFO, "%s %s: CUDA processes go through gpu-warmd, or the driver when it is absent",
	    GWP_PLUGIN_NAME, P.mode == GWP_MODE_DUMP ? "dump" : "restore");
	if (P.mode == GWP_MODE_DUMP)
		gwp_dump_drop_page_links(&P);
	else if (P.mode == GWP_MODE_RESTORE)
		gwp_restore_relink_pages(&P);
	return 0;
}


static void plugin_exit(int stage, int ret)
{
	if (P.mode == GWP_MODE_DUMP && ret == 0) {
		gwp_dump_mark_done(&P);
		gwp_dump_store_pages(&P);
	}
	if (P.mode == GWP_MODE_DUMP && P.tasks) {
		int lr = gwp_criu_leave_running();

		if (gwp_exit_needs_undo(stage, ret, lr)) {
			LOG(&P, INFO, "%s: resuming the CUDA processes",
			    ret ? "the dump failed" :
			    lr > 0 ? "--leave-running" :
				     "cannot tell whether the tasks keep running (RPC mode)");
			for (struct gwp_task *t = P.tasks; t; t = t->next) {
				/* A dump that worked, in RPC mode (podman, crun): the tasks are most
				 * likely killed next, and undoing a fast dump would free the only copy
				 * of their VRAM that a restore needs. Leave it; if they do run on,
				 * `warmctl resume PID` brings their VRAM back. */
				if (t->fast && ret == 0 && lr < 0) {
					LOG(&P, WARN, "pid %d: its VRAM stays held by gpu-warmd "
					    "for the restore; if it keeps running, `warmctl "
					    "resume %d`",
					    (int)t->pid, (int)t->pid);
					continue;
				}
				gwp_dump_undo(&P, t);
			}
		}
	}
	while (P.tasks) {
		struct gwp_task *t = P.tasks;

		P.tasks = t->next;
		free(t);
	}
	gwp_store_close(&P.store);
	P.store_asked = 0;
	gwp_backend_free(P.be);
	P.be = NULL;
	P.mode = GWP_MODE_OFF;
}

const struct gwp_store *gwp_plugin_store(struct gwp_plugin *p)
{
	char path[GWP_STORE_PATH_MAX], err[GWP_ERR_LEN];

	if (p->store_asked)
		return &p->store;
	p->store_asked = 1;
	if (!gwp_backend_has_daemon(p->be))
		return &p->store; /* no fast path either */
	if (gwp_backend_vram_store(p->be, path, sizeof(path), err, sizeof(err)) < 0) {
		LOG(p, WARN, "cannot ask gpu-warmd for its VRAM store: %s", err);
		return &p->store;
	}
	if (path[0] && gwp_store_open(&p->store, path, err, sizeof(err)) < 0)
		LOG(p, ERROR, "%s (the VRAM store is not used)", err);
	else if (path[0])
		LOG(p, INFO, "gpu-warmd's VRAM store: %s", path);
	return &p->store;
}
