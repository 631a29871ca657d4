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
 * exit(): the plugin's state is this file's one static struct.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <fcntl.h>
#include <dirent.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>

#include "criu-plugin-abi.h"
#include "gw-cuda.h"
#include "gw-pidgpu.h"
#include "gwp-backend.h"
#include "gwp-criu.h"
#include "gwp-image.h"
#include "gwp-plan.h"
#include "gwp-proc.h"
#include "gwp-ptrace.h"

#define PLUGIN_NAME "gpuwarm_plugin"
#define PROC_ROOT_ENV "GPUWARM_PROC_ROOT" /* where /proc/<pid>/fd and /proc/driver/nvidia are
					   * read to learn a process's GPUs, and a restored
					   * process's NSpid (tests) */
#define MAX_ROUNDS 8                      /* state reads per hook, retries after a lost daemon
					   * included */
#define ERR_LEN 512

struct gwp_task {
	struct gwp_task *next;
	pid_t pid;
	pid_t restore_tid;
	enum gwp_state initial; /* before we touched it */
	int fast;               /* gpu-warmd moved its VRAM out (fast path) */
	pid_t agent_tid;        /* its shim's agent thread, with fast */
	struct gwp_image img;   /* what CHECKPOINT_DEVICES writes */
};

static struct {
	int stage;
	enum gwp_mode mode;
	struct gwp_criu criu;
	struct gwp_backend *be;
	struct gwp_task *tasks;
	int inventory_added;
	int warned_cwd;
	char dump_id[GWP_DUMP_ID_LEN]; /* this dump's, in every record it writes */
} P;

#define LOG(level, ...) gwp_criu_log(&P.criu, GWP_CRIU_LOG_##level, __VA_ARGS__)

static int plugin_init(int stage);
static void plugin_exit(int stage, int ret);
static int hook_pause_devices(int pid);
static int hook_checkpoint_devices(int pid);
static int hook_resume_devices_late(int pid);
static int hook_dump_unix_sk(int fd, int id);
static int hook_restore_unix_sk(int id);
static int hook_post_forking(void);
static double now_ms(void);

/* What CRIU calls: each hook, then the driver helper process of the fallback, if the hook
 * started one, is gone before CRIU goes on (gwp-backend.h). */
static int pause_devices(int pid)
{
	int r = hook_pause_devices(pid);

	gwp_backend_idle(P.be);
	return r;
}

static int checkpoint_devices(int pid)
{
	int r = hook_checkpoint_devices(pid);

	gwp_backend_idle(P.be);
	return r;
}

static int resume_devices_late(int pid)
{
	double start = now_ms();
	int r = hook_resume_devices_late(pid);

	gwp_backend_idle(P.be);
	/* The hook's whole time, entry to return, for benchmarks (tests/bench/restore.py). */
	LOG(DEBUG, "RESUME_DEVICES_LATE(%d) returns %d after %.1f ms", pid, r, now_ms() - start);
	return r;
}

static int dump_unix_sk(int fd, int id)
{
	int r = hook_dump_unix_sk(fd, id);

	gwp_backend_idle(P.be);
	return r;
}

static int restore_unix_sk(int id)
{
	int r = hook_restore_unix_sk(id);

	gwp_backend_idle(P.be);
	return r;
}

static int post_forking(void)
{
	int r = hook_post_forking();

	gwp_backend_idle(P.be);
	return r;
}

__attribute__((visibility("default"))) struct gwp_criu_plugin_desc CR_PLUGIN_DESC = {
	.name = PLUGIN_NAME,
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

static double now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec / 1e6;
}

static const char *proc_root(void)
{
	const char *env = getenv(PROC_ROOT_ENV);

	return env && *env ? env : "/proc";
}

static struct gwp_task *find_task(pid_t pid)
{
	for (struct gwp_task *t = P.tasks; t; t = t->next)
		if (t->pid == pid)
			return t;
	return NULL;
}

/* ---- driving a process's checkpoint state ---- */

/* Step pid towards target until it is there. The restore thread must be running. */
static int drive_steps(pid_t pid, enum gwp_state target, const struct gwp_pair *pairs,
		       unsigned npairs, unsigned lock_timeout_ms, char *err, size_t len)
{
	for (unsigned round = 0; round < MAX_ROUNDS; round++) {
		enum gwp_state cur;
		enum gwp_step step;
		pid_t tid;
		double start;
		int r;

		r = gwp_backend_state(P.be, pid, &cur, &tid, err, len);
		if (r == -EAGAIN)
			continue;
		if (r < 0)
			return r;
		step = gwp_next_step(cur, target);
		if (step == GWP_STEP_DONE)
			return 0;
		if (step == GWP_STEP_STUCK) {
			snprintf(err, len, "its CUDA state is %s", gwp_state_name(cur));
			return -EIO;
		}
		start = now_ms();
		r = gwp_backend_step(P.be, pid, step, lock_timeout_ms, pairs, npairs, err, len);
		if (r == -EAGAIN)
			continue; /* the daemon went away mid-step: read the state again */
		if (r < 0)
			return r;
		LOG(INFO, "pid %d: %s by %s in %.1f ms", (int)pid, gwp_step_name(step),
		    gwp_backend_route(P.be), now_ms() - start);
	}
	snprintf(err, len, "no progress after %d rounds", MAX_ROUNDS);
	return -EIO;
}

/*
 * Run work() with threads tids[] of pid let run, when CRIU holds them stopped (a no-op for a
 * thread that is not in a stop of ours), and stop them again afterwards.
 */
static int with_threads_running(pid_t pid, const pid_t *tids, const char *const *names,
				unsigned n, int (*work)(const void *arg, char *err, size_t len),
				const void *arg, char *err, size_t len)
{
	struct gwp_hold holds[2];
	char why[256];
	unsigned held = 0;
	int r = 0, rr;

	for (; held < n && held < 2; held++) {
		r = gwp_thread_release(pid, tids[held], &holds[held], why, sizeof(why));
		if (r < 0) {
			snprintf(err, len, "cannot let its %s %d run: %s", names[held],
				 (int)tids[held], why);
			break;
		}
	}
	if (r == 0)
		r = work(arg, err, len);
	while (held-- > 0) {
		rr = gwp_thread_rehold(&holds[held], why, sizeof(why));
		if (rr < 0) {
			LOG(ERROR, "pid %d: %s; the process may be in a strange state", (int)pid, why);
			if (r == 0) {
				snprintf(err, len, "%s", why);
				r = rr;
			}
		}
	}
	return r;
}

struct drive_args {
	pid_t pid;
	enum gwp_state target;
	const struct gwp_pair *pairs;
	unsigned npairs, lock_timeout_ms;
};

static int drive_work(const void *arg, char *err, size_t len)
{
	const struct drive_args *a = arg;

	return drive_steps(a->pid, a->target, a->pairs, a->npairs, a->lock_timeout_ms, err, len);
}

/* drive_steps() with the CUDA restore thread let run when CRIU holds it stopped. */
static int drive(pid_t pid, pid_t tid, enum gwp_state target, const struct gwp_pair *pairs,
		 unsigned npairs, unsigned lock_timeout_ms, char *err, size_t len)
{
	static const char *const names[] = { "CUDA restore thread" };
	struct drive_args a = { pid, target, pairs, npairs, lock_timeout_ms };

	return with_threads_running(pid, &tid, names, 1, drive_work, &a, err, len);
}

static int fast_resume_work(const void *arg, char *err, size_t len)
{
	return gwp_backend_fast(P.be, arg, err, len);
}

/*
 * Fast resume of a process whose threads CRIU holds stopped: let its CUDA restore thread and its
 * shim's agent run while gpu-warmd refills the VRAM (from image_fd, or the image it holds),
 * restores the driver state and maps the VRAM back. agent_pid: the pid its agent was attached
 * under (the dump's, when the restore gave the process another host pid).
 */
static int fast_resume(pid_t pid, pid_t restore_tid, pid_t agent_tid, int image_fd,
		       const int *segment_fds, unsigned nsegment_fds, pid_t agent_pid, char *err,
		       size_t len)
{
	static const char *const names[] = { "CUDA restore thread", "agent thread" };
	pid_t tids[2] = { restore_tid, agent_tid };
	struct gwp_fast_call call = {
		.pid = pid,
		.threads_frozen = 1,
		.image_fd = image_fd,
		.segment_fds = segment_fds,
		.nsegment_fds = nsegment_fds,
		.agent_pid = agent_pid,
		.agent_tid = agent_pid && agent_pid != pid ? agent_tid : 0,
	};

	return with_threads_running(pid, tids, names, 2, fast_resume_work, &call, err, len);
}

/* ---- dump ---- */

/* The GPUs pid has open, by UUID, while the driver still holds them (before the lock). */
static void record_gpus(struct gwp_task *t)
{
	char pci[GW_PIDGPU_MAX][GW_PIDGPU_PCI_LEN];
	struct gwp_backend_gpu gpus[GWP_MAX_GPUS];
	char err[ERR_LEN];
	unsigned ngpus = 0;
	int n = gw_pid_gpus(proc_root(), t->pid, pci, GW_PIDGPU_MAX);

	if (n <= 0) {
		LOG(DEBUG, "pid %d: no /dev/nvidia* open under %s: GPUs unknown", (int)t->pid,
		    proc_root());
		return;
	}
	if (gwp_backend_gpus(P.be, gpus, GWP_MAX_GPUS, &ngpus, err, sizeof(err)) < 0) {
		LOG(WARN, "pid %d: cannot list the GPUs (%s): it will be restored onto the same "
		    "ones, ignoring", (int)t->pid, err);
		return;
	}
	for (int i = 0; i < n && t->img.ngpus < GWP_IMAGE_MAX_GPUS; i++) {
		unsigned k = 0;

		while (k < ngpus && strcasecmp(gpus[k].pci, pci[i]) != 0)
			k++;
		if (k == ngpus) {
			LOG(WARN, "pid %d: GPU %s is not known to %s, ignoring", (int)t->pid, pci[i],
			    gwp_backend_route(P.be));
			continue;
		}
		snprintf(t->img.gpus[t->img.ngpus].uuid, GWP_UUID_LEN, "%s", gpus[k].gpu.uuid);
		snprintf(t->img.gpus[t->img.ngpus].pci, GWP_PCI_LEN, "%.31s", pci[i]);
		t->img.ngpus++;
	}
}

static void add_to_inventory(void)
{
	if (P.inventory_added || !P.criu.add_inventory_plugin)
		return;
	if (P.criu.add_inventory_plugin(PLUGIN_NAME) == 0)
		P.inventory_added = 1;
	else
		LOG(WARN, "cannot add %s to the inventory image, ignoring", PLUGIN_NAME);
}

static int hook_pause_devices(int pid)
{
	enum gwp_state state = GWP_STATE_UNKNOWN;
	char err[ERR_LEN] = "";
	struct gwp_task *t;
	pid_t tid = 0;
	unsigned timeout_ms;
	int r;

	if (P.mode != GWP_MODE_DUMP)
		return -ENOTSUP;
	if (find_task(pid))
		return 0; /* CRIU retries a child it could not seize: it is ours already */
	if (gwp_backend_ready(P.be) < 0)
		return -ENOTSUP;
	r = gwp_backend_state(P.be, pid, &state, &tid, err, sizeof(err));
	if (r == -EAGAIN)
		r = gwp_backend_state(P.be, pid, &state, &tid, err, sizeof(err));
	if (r == -ENOTSUP)
		return -ENOTSUP;
	if (r == -EACCES || r == -EAGAIN) {
		LOG(ERROR, "PAUSE_DEVICES: cannot tell whether pid %d uses CUDA: %s", pid, err);
		return -1;
	}
	if (r < 0) {
		LOG(INFO, "pid %d is not a CUDA process (%s): not ours", pid, err);
		return -ENOTSUP;
	}
	if (state > GWP_STATE_CHECKPOINTED) {
		LOG(ERROR, "PAUSE_DEVICES: pid %d is in CUDA state %s: it cannot be dumped", pid,
		    gwp_state_name(state));
		return -1;
	}
	if (tid <= 0 || !gwp_proc_has_thread("/proc", pid, tid)) {
		LOG(ERROR, "PAUSE_DEVICES: pid %d: its CUDA restore thread (%d) is unknown", pid,
		    (int)tid);
		return -1;
	}
	t = calloc(1, sizeof(*t));
	if (!t) {
		LOG(ERROR, "PAUSE_DEVICES: out of memory");
		return -1;
	}
	t->pid = pid;
	t->restore_tid = tid;
	t->initial = state;
	t->img.pid = pid;
	t->img.restore_tid = tid;
	t->img.state = state;
	if (gwp_proc_inner_tid("/proc", pid, pid, &t->img.vpid) < 0)
		t->img.vpid = pid;
	if (gwp_proc_inner_tid("/proc", pid, tid, &t->img.restore_vtid) < 0)
		t->img.restore_vtid = tid;
	t->next = P.tasks;
	P.tasks = t; /* from here on the exit hook answers for it */
	record_gpus(t);
	add_to_inventory();
	if (state != GWP_STATE_RUNNING) {
		LOG(INFO, "pid %d is %s already: left so", pid, gwp_state_name(state));
		return 0;
	}
	timeout_ms = gwp_lock_timeout_ms(gwp_criu_alarm_left_ms());
	if (gwp_backend_fast_agent(P.be, pid, &t->agent_tid)) {
		/* CRIU has not seized it yet: gpu-warmd freezes and thaws it itself, and leaves it
		 * checkpointed with its VRAM held in the daemon, out of CRIU's page images. */
		double start = now_ms();
		struct gwp_fast_call call = {
			.pid = pid,
			.suspend = 1,
			.lock_timeout_ms = timeout_ms,
		};
		int dir = gwp_criu_image_dir(&P.criu, NULL);
		int fds[GWP_VRAM_MAX_FILES];
		unsigned nfds = 0;
		char vram[64];

		/* The VRAM image goes into CRIU's images, so that the checkpoint is whole (podman
		 * --export carries it) and a restore needs nothing the daemon holds: the head file
		 * and its segment files, written in parallel. */
		gwp_vram_image_name(pid, vram, sizeof(vram));
		r = gwp_vram_files_open(dir, pid, 1, fds, GWP_VRAM_MAX_FILES, &nfds);
		if (r < 0) {
			LOG(ERROR, "PAUSE_DEVICES: cannot create %s and its segment files: %s", vram,
			    strerror(-r));
			return -1;
		}
		call.image_fd = fds[0];
		call.segment_fds = fds + 1;
		call.nsegment_fds = nfds - 1;
		r = gwp_backend_fast(P.be, &call, err, sizeof(err));
		gwp_vram_files_close(fds, nfds);
		if (r < 0) {
			gwp_vram_files_unlink(dir, pid);
			LOG(ERROR, "PAUSE_DEVICES: fast suspend of pid %d failed: %s", pid, err);
			return -1;
		}
		t->fast = 1;
		t->img.fast = 1;
		t->img.vram_file = 1;
		t->img.agent_tid = t->agent_tid;
		if (gwp_proc_inner_tid("/proc", pid, t->agent_tid, &t->img.agent_vtid) < 0)
			t->img.agent_vtid = t->agent_tid;
		LOG(INFO, "pid %d: VRAM moved out by gpu-warmd (fast path) into %s, checkpointed in "
		    "%.1f ms", pid, vram, now_ms() - start);
		return 0;
	}
	r = drive(pid, tid, GWP_STATE_LOCKED, NULL, 0, timeout_ms, err, sizeof(err));
	if (r < 0) {
		LOG(ERROR, "PAUSE_DEVICES: cannot lock pid %d (timeout %u ms): %s", pid, timeout_ms,
		    err);
		return -1;
	}
	return 0;
}

static int write_image(struct gwp_task *t)
{
	int is_cwd, dir = gwp_criu_image_dir(&P.criu, &is_cwd), r;
	char name[64];

	if (is_cwd && !P.warned_cwd) {
		LOG(WARN, "CRIU gave no images directory: gpuwarm-*.json go to the working "
		    "directory");
		P.warned_cwd = 1;
	}
	gwp_image_name(t->pid, name, sizeof(name));
	snprintf(t->img.dump, sizeof(t->img.dump), "%s", P.dump_id);
	r = gwp_image_write(dir, &t->img);
	if (r < 0)
		LOG(ERROR, "CHECKPOINT_DEVICES: cannot write %s: %s", name, strerror(-r));
	else
		LOG(DEBUG, "pid %d: wrote %s (%u GPUs)", t->pid, name, t->img.ngpus);
	return r;
}

static int hook_checkpoint_devices(int pid)
{
	char err[ERR_LEN] = "";
	struct gwp_task *t;
	int r;

	if (P.mode != GWP_MODE_DUMP)
		return -ENOTSUP;
	t = find_task(pid);
	if (!t)
		return -ENOTSUP; /* not a CUDA process, or another plugin paused it */
	if (t->initial != GWP_STATE_CHECKPOINTED && !t->fast) {
		r = drive(pid, t->restore_tid, GWP_STATE_CHECKPOINTED, NULL, 0, 0, err,
			  sizeof(err));
		if (r < 0) {
			LOG(ERROR, "CHECKPOINT_DEVICES: cannot checkpoint pid %d: %s", pid, err);
			return -1;
		}
	}
	return write_image(t) < 0 ? -1 : 0;
}

/* ---- restore ---- */

/* Pairs for a restore, and leases on the GPUs it moves to. */
static int plan_restore(const struct gwp_image *img, struct gwp_pair *pairs, unsigned *ret_n)
{
	struct gwp_backend_gpu bgpus[GWP_MAX_GPUS];
	struct gwp_gpu gpus[GWP_MAX_GPUS];
	char sources[GWP_IMAGE_MAX_GPUS][GWP_UUID_LEN];
	char err[ERR_LEN];
	unsigned ngpus = 0, n = 0;
	int r;

	*ret_n = 0;
	if (img->ngpus == 0)
		return 0;
	for (unsigned i = 0; i < img->ngpus; i++)
		snprintf(sources[i], GWP_UUID_LEN, "%s", img->gpus[i].uuid);
	r = gwp_backend_gpus(P.be, bgpus, GWP_MAX_GPUS, &ngpus, err, sizeof(err));
	if (r < 0) {
		LOG(WARN, "pid %d: cannot list the GPUs (%s): restoring onto the same ones",
		    img->pid, err);
		return r == -EAGAIN ? plan_restore(img, pairs, ret_n) : 0;
	}
	for (unsigned i = 0; i < ngpus; i++)
		gpus[i] = bgpus[i].gpu;
	/* A GPU the daemon will not lease (drained meanwhile) is dropped and the plan made again. */
	for (unsigned attempt = 0; attempt <= ngpus; attempt++) {
		unsigned bad = ngpus;

		r = gwp_plan_pairs((const char(*)[GWP_UUID_LEN])sources, img->ngpus, gpus, ngpus,
				   pairs, GWP_MAX_GPUS, &n);
		if (r < 0) {
			LOG(ERROR, "pid %d: its GPUs are gone or drained and no other GPU is free "
			    "to take them", img->pid);
			return -ENODEV;
		}
		gwp_backend_release_leases(P.be);
		for (unsigned i = 0; i < n && bad == ngpus; i++) {
			if (strcasecmp(pairs[i].old_uuid, pairs[i].new_uuid) == 0)
				continue;
			r = gwp_backend_lease(P.be, pairs[i].new_uuid, err, sizeof(err));
			if (r == -ENODEV) {
				for (bad = 0; bad < ngpus; bad++)
					if (strcasecmp(gpus[bad].uuid, pairs[i].new_uuid) == 0)
						break;
			} else if (r < 0) {
				LOG(WARN, "pid %d: no lease on %s (%s), going on", img->pid,
				    pairs[i].new_uuid, err);
			}
		}
		if (bad == ngpus)
			break;
		gpus[bad].usable = 0;
	}
	for (unsigned i = 0; i < n; i++)
		if (strcasecmp(pairs[i].old_uuid, pairs[i].new_uuid) != 0)
			LOG(INFO, "pid %d: GPU %s is gone or drained: restoring onto %s", img->pid,
			    pairs[i].old_uuid, pairs[i].new_uuid);
	*ret_n = n;
	return 0;
}

/* pid's record, of the images' latest dump (records of earlier dumps into the same directory
 * may be there: podman's checkpoint --keep). */
static int find_image(pid_t pid, struct gwp_image *ret_img)
{
	int is_cwd, dir = gwp_criu_image_dir(&P.criu, &is_cwd);
	char dump[GWP_DUMP_ID_LEN];
	const char *want = NULL;
	pid_t vpid;
	int r;

	r = gwp_dump_marked(dir, dump, sizeof(dump));
	if (r == 0)
		want = dump;
	else if (r != -ENOENT) /* no gpuwarm-dump.json: images of an older plugin, every record */
		return r;
	r = gwp_image_read(dir, pid, ret_img);
	if (r == 0 && want && strcmp(ret_img->dump, want) != 0)
		r = -ENOENT; /* an earlier dump's process had this host pid */
	if (r != -ENOENT)
		return r;
	/* Restored into a new pid namespace: the host pid changed, the pid inside did not. */
	if (gwp_proc_inner_tid(proc_root(), pid, pid, &vpid) < 0 || vpid == pid)
		return -ENOENT;
	r = gwp_image_find_vpid(dir, want, vpid, ret_img);
	if (r == -ENOTUNIQ)
		LOG(ERROR, "RESUME_DEVICES_LATE: pid %d: more than one gpuwarm-*.json%s names pid %d "
		    "of its namespace: cannot tell which is its own", (int)pid,
		    want ? " of the latest dump" : "", (int)vpid);
	return r;
}

static int hook_resume_devices_late(int pid)
{
	struct gwp_pair pairs[GWP_MAX_GPUS];
	struct gwp_image img;
	char err[ERR_LEN] = "";
	unsigned npairs = 0;
	pid_t tid = 0;
	double start;
	int r;

	if (P.mode != GWP_MODE_RESTORE)
		return -ENOTSUP;
	r = find_image(pid, &img);
	if (r == -ENOENT)
		return -ENOTSUP; /* its dump saw no CUDA in it */
	if (r < 0) {
		LOG(ERROR, "RESUME_DEVICES_LATE: pid %d: unreadable gpuwarm-*.json: %s", pid,
		    strerror(-r));
		return -1;
	}
	if (img.restore_vtid > 0 &&
	    gwp_proc_find_inner_tid("/proc", pid, img.restore_vtid, &tid) < 0)
		tid = 0;
	if (tid <= 0 && gwp_proc_has_thread("/proc", pid, img.restore_tid))
		tid = img.restore_tid;
	if (tid <= 0) {
		LOG(ERROR, "RESUME_DEVICES_LATE: pid %d: its CUDA restore thread (%d) is not there",
		    pid, img.restore_vtid);
		return -1;
	}
	if (gwp_backend_ready(P.be) < 0) {
		LOG(ERROR, "RESUME_DEVICES_LATE: pid %d holds checkpointed CUDA state but neither "
		    "gpu-warmd nor the driver is usable: it stays checkpointed", pid);
		return -1;
	}
	start = now_ms();
	if (img.fast) {
		pid_t agent = 0;
		int fds[GWP_VRAM_MAX_FILES];
		unsigned nfds = 0;

		/* Its agent thread, by its tid inside the namespace (the host tid changes). */
		if (img.agent_vtid > 0 &&
		    gwp_proc_find_inner_tid("/proc", pid, img.agent_vtid, &agent) < 0)
			agent = 0;
		if (agent <= 0 && gwp_proc_has_thread("/proc", pid, img.agent_tid))
			agent = img.agent_tid;
		if (agent <= 0) {
			LOG(ERROR, "RESUME_DEVICES_LATE: pid %d: its agent thread %d is not there", pid,
			    img.agent_vtid > 0 ? img.agent_vtid : img.agent_tid);
			return -1;
		}
		if (img.vram_file) {
			int dir = gwp_criu_image_dir(&P.criu, NULL);
			char vram[64];

			gwp_vram_image_name(img.pid, vram, sizeof(vram));
			r = gwp_vram_files_open(dir, img.pid, 0, fds, GWP_VRAM_MAX_FILES,
						&nfds);
			if (r < 0) {
				LOG(ERROR, "RESUME_DEVICES_LATE: pid %d: cannot open %s or its "
				    "segment files: %s", pid, vram, strerror(-r));
				return -1;
			}
		}
		r = fast_resume(pid, tid, agent, nfds ? fds[0] : -1, nfds ? fds + 1 : NULL,
				nfds ? nfds - 1 : 0, img.pid, err, sizeof(err));
		gwp_vram_files_close(fds, nfds);
		if (r < 0) {
			LOG(ERROR, "RESUME_DEVICES_LATE: fast resume of pid %d failed: %s", pid, err);
			return -1;
		}
		LOG(INFO, "pid %d: CUDA state and VRAM restored by gpu-warmd (fast path) in %.1f ms",
		    pid, now_ms() - start);
		return 0;
	}
	if (plan_restore(&img, pairs, &npairs) < 0)
		return -1;
	r = drive(pid, tid, GWP_STATE_RUNNING, pairs, npairs, 0, err, sizeof(err));
	gwp_backend_release_leases(P.be);
	if (r < 0) {
		LOG(ERROR, "RESUME_DEVICES_LATE: cannot restore pid %d: %s", pid, err);
		return -1;
	}
	LOG(INFO, "pid %d: CUDA state restored%s in %.1f ms", pid,
	    npairs ? " onto other GPUs" : "", now_ms() - start);
	return 0;
}

/*
 * POST_FORKING (CRIU 4.2+): the tasks exist and CRIU's restorers are filling their memory, a
 * second or more for a model server. Have gpu-warmd create and fill the VRAM of every fast-path
 * image now, in parallel with that; RESUME_DEVICES_LATE's resume of the same file then finds it
 * filled and only restores the driver state and maps it. Nothing here can fail the restore: a
 * prefill that does not happen leaves the resume to fill as before.
 */
static int prefill_one(const struct gwp_image *img, void *arg)
{
	int dir = *(const int *)arg, fds[GWP_VRAM_MAX_FILES], r;
	char vram[64], err[ERR_LEN] = "";
	unsigned nfds = 0;
	double start = now_ms();

	if (!img->fast || !img->vram_file)
		return 0;
	gwp_vram_image_name(img->pid, vram, sizeof(vram));
	r = gwp_vram_files_open(dir, img->pid, 0, fds, GWP_VRAM_MAX_FILES, &nfds);
	if (r < 0) {
		LOG(WARN, "POST_FORKING: cannot open %s or its segments (%s): no prefill", vram,
		    strerror(-r));
		return 0;
	}
	r = gwp_backend_prefill(P.be, fds, nfds, err, sizeof(err));
	gwp_vram_files_close(fds, nfds);
	if (r < 0)
		LOG(WARN, "POST_FORKING: no prefill of %s: %s", vram, err);
	else
		LOG(INFO, "POST_FORKING: gpu-warmd fills the VRAM of %s while CRIU restores memory "
		    "(asked in %.1f ms)", vram, now_ms() - start);
	return 0;
}

static int hook_post_forking(void)
{
	int is_cwd, dir;
	char dump[GWP_DUMP_ID_LEN];
	const char *want = NULL;

	/* -ENOTSUP in every case: CRIU stops at the first plugin that answers otherwise, and
	 * other device plugins (amdgpu's parallel restore) need this hook too. */
	if (P.mode != GWP_MODE_RESTORE)
		return -ENOTSUP;
	dir = gwp_criu_image_dir(&P.criu, &is_cwd);
	if (gwp_dump_marked(dir, dump, sizeof(dump)) == 0)
		want = dump;
	if (!gwp_backend_has_daemon(P.be))
		return -ENOTSUP; /* the fast path needs the daemon: nothing to start early */
	gwp_image_each(dir, want, prefill_one, &dir);
	return -ENOTSUP;
}

/* ---- the agent's connection to gpu-warmd ---- */

/* Which of our fast-path tasks owns socket inode id? */
static struct gwp_task *socket_owner(int id)
{
	char want[48], dir[64], link[400], target[64];

	snprintf(want, sizeof(want), "socket:[%d]", id);
	for (struct gwp_task *t = P.tasks; t; t = t->next) {
		struct dirent *e;
		DIR *d;

		if (!t->fast)
			continue;
		snprintf(dir, sizeof(dir), "/proc/%d/fd", (int)t->pid);
		d = opendir(dir);
		if (!d)
			continue;
		while ((e = readdir(d))) {
			ssize_t n;

			snprintf(link, sizeof(link), "%s/%s", dir, e->d_name);
			n = readlink(link, target, sizeof(target) - 1);
			if (n <= 0)
				continue;
			target[n] = '\0';
			if (strcmp(target, want) == 0) {
				closedir(d);
				return t;
			}
		}
		closedir(d);
	}
	return NULL;
}

/*
 * A shimmed process's agent is connected to gpu-warmd, a peer outside the dump: CRIU would
 * refuse it. Claim it, and note whose it is, so that the restore can hand the process a fresh
 * connection attached as its agent.
 */
static int hook_dump_unix_sk(int fd, int id)
{
	int is_cwd, dir = gwp_criu_image_dir(&P.criu, &is_cwd), out;
	struct gwp_task *t;
	char name[64], line[64];

	if (P.mode != GWP_MODE_DUMP || !P.be || !gwp_backend_agent_socket(P.be, fd))
		return -ENOTSUP;
	t = socket_owner(id);
	if (!t) {
		LOG(WARN, "socket %d is connected to gpu-warmd but belongs to no process whose "
		    "VRAM gpu-warmd moved: not claimed", id);
		return -ENOTSUP;
	}
	snprintf(name, sizeof(name), "gpuwarm-sk-%d", id);
	out = openat(dir, name, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
	snprintf(line, sizeof(line), "%d %d\n", (int)t->pid, (int)t->agent_tid);
	if (out < 0 || write(out, line, strlen(line)) != (ssize_t)strlen(line)) {
		LOG(ERROR, "cannot write %s: %s", name, strerror(errno));
		if (out >= 0)
			close(out);
		return -1;
	}
	close(out);
	LOG(INFO, "pid %d: its agent's connection to gpu-warmd (socket %d) is ours to restore",
	    (int)t->pid, id);
	return 0;
}

static int hook_restore_unix_sk(int id)
{
	int is_cwd, dir = gwp_criu_image_dir(&P.criu, &is_cwd), in, pid, tid, fd;
	char name[64], line[64] = "", err[ERR_LEN] = "";
	ssize_t n;

	if (P.mode != GWP_MODE_RESTORE)
		return -ENOTSUP;
	snprintf(name, sizeof(name), "gpuwarm-sk-%d", id);
	in = openat(dir, name, O_RDONLY | O_CLOEXEC);
	if (in < 0)
		return -ENOTSUP;
	n = read(in, line, sizeof(line) - 1);
	close(in);
	if (n <= 0 || sscanf(line, "%d %d", &pid, &tid) != 2 || pid <= 0 || tid <= 0) {
		LOG(ERROR, "%s is unreadable", name);
		return -1;
	}
	/*
	 * No gwp_backend_ready() here: CRIU runs this hook inside the task it restores, while it
	 * puts the task's files at their numbers; a connection kept open here would sit on one of
	 * them ("fd 8 already in use", seen with podman restore --import). The reattach makes its
	 * own connection, and only the fd handed back stays.
	 */
	fd = gwp_backend_reattach(P.be, pid, tid, err, sizeof(err));
	if (fd < 0) {
		LOG(ERROR, "pid %d: cannot give its agent a connection to gpu-warmd: %s", pid, err);
		return -1;
	}
	LOG(INFO, "pid %d: its agent has a new connection to gpu-warmd", pid);
	return fd;
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
	P.stage = stage;
	gwp_criu_resolve(&P.criu);
	in.old_criu = P.criu.in_criu && !P.criu.device_hooks;
	if (stage == GWP_CRIU_STAGE_RESTORE && P.criu.check_and_remove_inventory_plugin) {
		in.inventory_known = 1;
		in.in_inventory = P.criu.check_and_remove_inventory_plugin(PLUGIN_NAME,
									   strlen(PLUGIN_NAME));
	}
	P.mode = gwp_stage_mode(&in, &why);
	if (P.mode == GWP_MODE_DUMP)
		gwp_dump_id_new(P.dump_id, sizeof(P.dump_id));
	if (P.mode != GWP_MODE_OFF && gwp_backend_new(&P.criu, &P.be) < 0) {
		P.mode = GWP_MODE_OFF;
		why = "out of memory";
	}
	if (P.mode == GWP_MODE_OFF) {
		LOG(INFO, "disabled: %s", why);
		return 0; /* a failing init() would fail the whole CRIU run */
	}
	/* The CUDA restore thread must stay reachable: no cgroup freezer (as cuda_plugin). */
	if (P.mode == GWP_MODE_DUMP && P.criu.interrupt_only && gpu_machine())
		P.criu.interrupt_only();
	LOG(INFO, "%s %s: CUDA processes go through gpu-warmd, or the driver when it is absent",
	    PLUGIN_NAME, P.mode == GWP_MODE_DUMP ? "dump" : "restore");
	return 0;
}

static void undo(struct gwp_task *t)
{
	char err[ERR_LEN] = "";
	int r;

	if (t->initial == GWP_STATE_CHECKPOINTED)
		return;
	if (t->fast) {
		r = fast_resume(t->pid, t->restore_tid, t->agent_tid, -1, NULL, 0, 0, err,
				sizeof(err));
		if (r < 0)
			LOG(ERROR, "pid %d: cannot resume it through gpu-warmd: %s; its VRAM is held "
			    "there: `warmctl resume %d` once it runs", (int)t->pid, err, (int)t->pid);
		else
			LOG(INFO, "pid %d: running again, VRAM mapped back", (int)t->pid);
		return;
	}
	r = drive(t->pid, t->restore_tid, t->initial, NULL, 0, GWP_LOCK_DEFAULT_TIMEOUT_MS, err,
		  sizeof(err));
	if (r < 0)
		LOG(ERROR, "pid %d: cannot bring it back to %s: %s; it may hang", (int)t->pid,
		    gwp_state_name(t->initial), err);
	else
		LOG(INFO, "pid %d: %s again", (int)t->pid, gwp_state_name(t->initial));
}

/*
 * A dump that worked: remove the records earlier dumps left in these images (CRIU rewrote the
 * rest of them), then name this dump in gpuwarm-dump.json, so that a restore takes only its
 * records even when a stale one could not be removed.
 */
static void mark_dump(void)
{
	int is_cwd, dir = gwp_criu_image_dir(&P.criu, &is_cwd), r;

	r = gwp_image_remove_stale(dir, P.dump_id);
	if (r > 0)
		LOG(INFO, "removed %d gpuwarm-*.json of earlier dumps into these images", r);
	else if (r < 0)
		LOG(WARN, "cannot remove every gpuwarm-*.json of earlier dumps into these images "
		    "(%s): a restore ignores them", strerror(-r));
	if (!P.tasks && r == 0 && faccessat(dir, GWP_DUMP_FILE, F_OK, 0) < 0)
		return; /* no CUDA process, nothing of ours in the images: leave them so */
	r = gwp_dump_mark(dir, P.dump_id);
	if (r < 0) {
		/* An older gpuwarm-dump.json would make a restore take an older dump's records. */
		if (unlinkat(dir, GWP_DUMP_FILE, 0) < 0 && errno != ENOENT)
			LOG(ERROR, "cannot write or remove %s (%s): a restore will not find the CUDA "
			    "state of this dump", GWP_DUMP_FILE, strerror(-r));
		else
			LOG(WARN, "cannot write %s (%s), ignoring", GWP_DUMP_FILE, strerror(-r));
	}
}

static void plugin_exit(int stage, int ret)
{
	if (P.mode == GWP_MODE_DUMP && ret == 0)
		mark_dump();
	if (P.mode == GWP_MODE_DUMP && P.tasks) {
		int lr = gwp_criu_leave_running();

		if (gwp_exit_needs_undo(stage, ret, lr)) {
			LOG(INFO, "%s: resuming the CUDA processes",
			    ret ? "the dump failed" :
			    lr > 0 ? "--leave-running" :
				     "cannot tell whether the tasks keep running (RPC mode)");
			for (struct gwp_task *t = P.tasks; t; t = t->next) {
				/* A dump that worked, in RPC mode (podman, crun): the tasks are most
				 * likely killed next, and undoing a fast dump would free the only copy
				 * of their VRAM that a restore needs. Leave it; if they do run on,
				 * `warmctl resume PID` brings their VRAM back. */
				if (t->fast && ret == 0 && lr < 0) {
					LOG(WARN, "pid %d: its VRAM stays held by gpu-warmd for the "
					    "restore; if it keeps running, `warmctl resume %d`",
					    (int)t->pid, (int)t->pid);
					continue;
				}
				undo(t);
			}
		}
	}
	while (P.tasks) {
		struct gwp_task *t = P.tasks;

		P.tasks = t->next;
		free(t);
	}
	gwp_backend_free(P.be);
	P.be = NULL;
	P.mode = GWP_MODE_OFF;
}
