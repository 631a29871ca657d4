/* SPDX-License-Identifier: MIT */
/*
 * The dump side of the plugin: PAUSE_DEVICES locks a CUDA process (or has gpu-warmd suspend it
 * with its VRAM, the fast path), CHECKPOINT_DEVICES checkpoints it and writes its record into
 * the images; at exit, a failed dump (or one that leaves the tasks running) is undone and a dump
 * that worked is named in the images, its page images moved into gpu-warmd's store if it has
 * one. At init, the page-image links an earlier dump left go first.
 */
#include "gwp-plugin.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include "gw-pidgpu.h"
#include "gwp-pages.h"
#include "gwp-proc.h"

#define MIB(b) ((double)(b) / (1 << 20))

/* The GPUs pid has open, by UUID, while the driver still holds them (before the lock). */
static void record_gpus(struct gwp_plugin *p, struct gwp_task *t)
{
	char pci[GW_PIDGPU_MAX][GW_PIDGPU_PCI_LEN];
	struct gwp_backend_gpu gpus[GWP_MAX_GPUS];
	char err[GWP_ERR_LEN];
	unsigned ngpus = 0;
	int n = gw_pid_gpus(gwp_proc_root(), t->pid, pci, GW_PIDGPU_MAX);

	if (n <= 0) {
		LOG(p, DEBUG, "pid %d: no /dev/nvidia* open under %s: GPUs unknown", (int)t->pid,
		    gwp_proc_root());
		return;
	}
	if (gwp_backend_gpus(p->be, gpus, GWP_MAX_GPUS, &ngpus, err, sizeof(err)) < 0) {
		LOG(p, WARN, "pid %d: cannot list the GPUs (%s): it will be restored onto the same "
		    "ones, ignoring", (int)t->pid, err);
		return;
	}
	for (int i = 0; i < n && t->img.ngpus < GWP_IMAGE_MAX_GPUS; i++) {
		unsigned k = 0;

		while (k < ngpus && strcasecmp(gpus[k].pci, pci[i]) != 0)
			k++;
		if (k == ngpus) {
			LOG(p, WARN, "pid %d: GPU %s is not known to %s, ignoring", (int)t->pid,
			    pci[i], gwp_backend_route(p->be));
			continue;
		}
		snprintf(t->img.gpus[t->img.ngpus].uuid, GWP_UUID_LEN, "%s", gpus[k].gpu.uuid);
		snprintf(t->img.gpus[t->img.ngpus].pci, GWP_PCI_LEN, "%.31s", pci[i]);
		t->img.ngpus++;
	}
}

static void add_to_inventory(struct gwp_plugin *p)
{
	if (p->inventory_added || !p->criu.add_inventory_plugin)
		return;
	if (p->criu.add_inventory_plugin(GWP_PLUGIN_NAME) == 0)
		p->inventory_added = 1;
	else
		LOG(p, WARN, "cannot add %s to the inventory image, ignoring", GWP_PLUGIN_NAME);
}

/*
 * Is pid a CUDA process we can dump? 1 with its state and restore thread, else what the hook
 * answers: -ENOTSUP (not ours) or -1 (ours, but it cannot be dumped).
 */
static int probe(struct gwp_plugin *p, int pid, enum gwp_state *ret_state, pid_t *ret_tid)
{
	char err[GWP_ERR_LEN] = "";
	int r;

	r = gwp_backend_state(p->be, pid, ret_state, ret_tid, err, sizeof(err));
	if (r == -EAGAIN)
		r = gwp_backend_state(p->be, pid, ret_state, ret_tid, err, sizeof(err));
	if (r == -ENOTSUP)
		return -ENOTSUP;
	if (r == -EACCES || r == -EAGAIN) {
		LOG(p, ERROR, "PAUSE_DEVICES: cannot tell whether pid %d uses CUDA: %s", pid, err);
		return -1;
	}
	if (r < 0) {
		LOG(p, INFO, "pid %d is not a CUDA process (%s): not ours", pid, err);
		return -ENOTSUP;
	}
	if (*ret_state > GWP_STATE_CHECKPOINTED) {
		LOG(p, ERROR, "PAUSE_DEVICES: pid %d is in CUDA state %s: it cannot be dumped", pid,
		    gwp_state_name(*ret_state));
		return -1;
	}
	if (*ret_tid <= 0 || !gwp_proc_has_thread("/proc", pid, *ret_tid)) {
		LOG(p, ERROR, "PAUSE_DEVICES: pid %d: its CUDA restore thread (%d) is unknown", pid,
		    (int)*ret_tid);
		return -1;
	}
	return 1;
}

/* pid's task, with what its record starts with. */
static struct gwp_task *task_new(struct gwp_plugin *p, pid_t pid, enum gwp_state state,
				 pid_t tid)
{
	struct gwp_task *t = gwp_task_add(p, pid);

	if (!t)
		return NULL;
	t->restore_tid = tid;
	t->initial = state;
	t->img.pid = pid;
	t->img.restore_tid = tid;
	t->img.state = state;
	if (gwp_proc_inner_tid("/proc", pid, pid, &t->img.vpid) < 0)
		t->img.vpid = pid;
	if (gwp_proc_inner_tid("/proc", pid, tid, &t->img.restore_vtid) < 0)
		t->img.restore_vtid = tid;
	return t;
}

/*
 * CRIU has not seized t yet: gpu-warmd freezes and thaws it itself, and leaves it checkpointed
 * with its VRAM held in the daemon, out of CRIU's page images. The VRAM image goes into CRIU's
 * images, so that the checkpoint is whole (podman --export carries it) and a restore needs
 * nothing the daemon holds: the head file and its segment files, written in parallel.
 */
static int fast_suspend(struct gwp_plugin *p, struct gwp_task *t, unsigned timeout_ms)
{
	double start = gwp_now_ms();
	struct gwp_fast_call call = {
		.pid = t->pid,
		.suspend = 1,
		.lock_timeout_ms = timeout_ms,
	};
	int dir = gwp_criu_image_dir(&p->criu, NULL), r;
	const struct gwp_store *store = gwp_plugin_store(p);
	int fds[GWP_VRAM_MAX_FILES];
	char vram[64], err[GWP_ERR_LEN] = "";
	unsigned nfds = 0;

	gwp_vram_image_name(t->pid, vram, sizeof(vram));
	r = gwp_vram_files_open(dir, t->pid, 1, store, fds, GWP_VRAM_MAX_FILES, &nfds, err,
				sizeof(err));
	if (r < 0) {
		LOG(p, ERROR, "PAUSE_DEVICES: cannot create %s and its segment files: %s", vram,
		    err);
		return -1;
	}
	call.image_fd = fds[0];
	call.segment_fds = fds + 1;
	call.nsegment_fds = nfds - 1;
	r = gwp_backend_fast(p->be, &call, err, sizeof(err));
	gwp_vram_files_close(fds, nfds);
	if (r < 0) {
		gwp_vram_files_unlink(dir, t->pid, store);
		LOG(p, ERROR, "PAUSE_DEVICES: fast suspend of pid %d failed: %s", t->pid, err);
		return -1;
	}
	t->fast = 1;
	t->img.fast = 1;
	t->img.vram_file = 1;
	t->img.agent_tid = t->agent_tid;
	if (gwp_proc_inner_tid("/proc", t->pid, t->agent_tid, &t->img.agent_vtid) < 0)
		t->img.agent_vtid = t->agent_tid;
	LOG(p, INFO, "pid %d: VRAM moved out by gpu-warmd (fast path) into %s, checkpointed in "
	    "%.1f ms", t->pid, vram, gwp_now_ms() - start);
	return 0;
}

int gwp_dump_pause(struct gwp_plugin *p, int pid)
{
	enum gwp_state state = GWP_STATE_UNKNOWN;
	char err[GWP_ERR_LEN] = "";
	struct gwp_task *t;
	pid_t tid = 0;
	unsigned timeout_ms;
	int r;

	if (p->mode != GWP_MODE_DUMP)
		return -ENOTSUP;
	if (gwp_task_find(p, pid))
		return 0; /* CRIU retries a child it could not seize: it is ours already */
	if (gwp_backend_ready(p->be) < 0)
		return -ENOTSUP;
	r = probe(p, pid, &state, &tid);
	if (r <= 0)
		return r;
	t = task_new(p, pid, state, tid);
	if (!t) {
		LOG(p, ERROR, "PAUSE_DEVICES: out of memory");
		return -1;
	}
	record_gpus(p, t);
	add_to_inventory(p);
	if (state != GWP_STATE_RUNNING) {
		LOG(p, INFO, "pid %d is %s already: left so", pid, gwp_state_name(state));
		return 0;
	}
	timeout_ms = gwp_lock_timeout_ms(gwp_criu_alarm_left_ms());
	if (gwp_backend_fast_agent(p->be, pid, &t->agent_tid))
		return fast_suspend(p, t, timeout_ms);
	r = gwp_drive(p, pid, tid, GWP_STATE_LOCKED, NULL, 0, timeout_ms, err, sizeof(err));
	if (r < 0) {
		LOG(p, ERROR, "PAUSE_DEVICES: cannot lock pid %d (timeout %u ms): %s", pid,
		    timeout_ms, err);
		return -1;
	}
	return 0;
}

static int write_image(struct gwp_plugin *p, struct gwp_task *t)
{
	int is_cwd, dir = gwp_criu_image_dir(&p->criu, &is_cwd), r;
	char name[64];

	if (is_cwd && !p->warned_cwd) {
		LOG(p, WARN, "CRIU gave no images directory: gpuwarm-*.json go to the working "
		    "directory");
		p->warned_cwd = 1;
	}
	gwp_image_name(t->pid, name, sizeof(name));
	snprintf(t->img.dump, sizeof(t->img.dump), "%s", p->dump_id);
	r = gwp_image_write(dir, &t->img);
	if (r < 0)
		LOG(p, ERROR, "CHECKPOINT_DEVICES: cannot write %s: %s", name, strerror(-r));
	else
		LOG(p, DEBUG, "pid %d: wrote %s (%u GPUs)", t->pid, name, t->img.ngpus);
	return r;
}

int gwp_dump_checkpoint(struct gwp_plugin *p, int pid)
{
	char err[GWP_ERR_LEN] = "";
	struct gwp_task *t;
	int r;

	if (p->mode != GWP_MODE_DUMP)
		return -ENOTSUP;
	t = gwp_task_find(p, pid);
	if (!t)
		return -ENOTSUP; /* not a CUDA process, or another plugin paused it */
	if (t->initial != GWP_STATE_CHECKPOINTED && !t->fast) {
		r = gwp_drive(p, pid, t->restore_tid, GWP_STATE_CHECKPOINTED, NULL, 0, 0, err,
			  sizeof(err));
		if (r < 0) {
			LOG(p, ERROR, "CHECKPOINT_DEVICES: cannot checkpoint pid %d: %s", pid, err);
			return -1;
		}
	}
	return write_image(p, t) < 0 ? -1 : 0;
}

void gwp_dump_undo(struct gwp_plugin *p, struct gwp_task *t)
{
	char err[GWP_ERR_LEN] = "";
	int r;

	if (t->initial == GWP_STATE_CHECKPOINTED)
		return;
	if (t->fast) {
		r = gwp_drive_fast_resume(p, t->pid, t->restore_tid, t->agent_tid, -1, NULL, 0, 0,
					  err, sizeof(err));
		if (r < 0)
			LOG(p, ERROR, "pid %d: cannot resume it through gpu-warmd: %s; its VRAM is "
			    "held there: `warmctl resume %d` once it runs", (int)t->pid, err,
			    (int)t->pid);
		else
			LOG(p, INFO, "pid %d: running again, VRAM mapped back", (int)t->pid);
		return;
	}
	r = gwp_drive(p, t->pid, t->restore_tid, t->initial, NULL, 0, GWP_LOCK_DEFAULT_TIMEOUT_MS,
		      err, sizeof(err));
	if (r < 0)
		LOG(p, ERROR, "pid %d: cannot bring it back to %s: %s; it may hang", (int)t->pid,
		    gwp_state_name(t->initial), err);
	else
		LOG(p, INFO, "pid %d: %s again", (int)t->pid, gwp_state_name(t->initial));
}

/*
 * A dump that worked: remove the records earlier dumps left in these images (CRIU rewrote the
 * rest of them), then name this dump in gpuwarm-dump.json, so that a restore takes only its
 * records even when a stale one could not be removed.
 */
void gwp_dump_mark_done(struct gwp_plugin *p)
{
	int is_cwd, dir = gwp_criu_image_dir(&p->criu, &is_cwd), r;
	/* The store, to remove what earlier dumps' links point to: only where ours may be. */
	int ours = p->tasks || faccessat(dir, GWP_DUMP_FILE, F_OK, 0) == 0;

	r = gwp_image_remove_stale(dir, p->dump_id, ours ? gwp_plugin_store(p) : &p->store);
	if (r > 0)
		LOG(p, INFO, "removed %d gpuwarm-*.json of earlier dumps into these images", r);
	else if (r < 0)
		LOG(p, WARN, "cannot remove every gpuwarm-*.json of earlier dumps into these "
		    "images (%s): a restore ignores them", strerror(-r));
	if (!p->tasks && r == 0 && faccessat(dir, GWP_DUMP_FILE, F_OK, 0) < 0)
		return; /* no CUDA process, nothing of ours in the images: leave them so */
	r = gwp_dump_mark(dir, p->dump_id);
	if (r < 0) {
		/* An older gpuwarm-dump.json would make a restore take an older dump's records. */
		if (unlinkat(dir, GWP_DUMP_FILE, 0) < 0 && errno != ENOENT)
			LOG(p, ERROR, "cannot write or remove %s (%s): a restore will not find the "
			    "CUDA state of this dump", GWP_DUMP_FILE, strerror(-r));
		else
			LOG(p, WARN, "cannot write %s (%s), ignoring", GWP_DUMP_FILE, strerror(-r));
	}
}

void gwp_dump_drop_page_links(struct gwp_plugin *p)
{
	int dir = gwp_criu_image_dir(&p->criu, NULL), r;

	if (!gwp_pages_has_links(dir))
		return;
	r = gwp_pages_unlink_links(gwp_plugin_store(p), dir);
	if (r > 0)
		LOG(p, INFO, "removed %d links of an earlier dump's page images, and their files "
		    "in gpu-warmd's store", r);
	else if (r < 0)
		LOG(p, WARN, "cannot remove the links of an earlier dump's page images (%s): CRIU "
		    "writes this dump's pages through them", strerror(-r));
}

void gwp_dump_store_pages(struct gwp_plugin *p)
{
	const struct gwp_store *store;
	char err[GWP_ERR_LEN] = "";
	double start = gwp_now_ms();
	unsigned files;
	uint64_t bytes;
	int r;

	if (!p->tasks)
		return; /* no CUDA process in this dump: its images are not ours to move */
	store = gwp_plugin_store(p);
	if (store->fd < 0)
		return;
	r = gwp_pages_to_store(store, gwp_criu_image_dir(&p->criu, NULL), &files, &bytes, err,
			       sizeof(err));
	if (r < 0)
		LOG(p, WARN, "%s; the page images not moved stay in the images", err);
	if (files > 0)
		LOG(p, INFO, "moved CRIU's page images into gpu-warmd's store: %u files, %.1f MiB, "
		    "in %.1f ms", files, MIB(bytes), gwp_now_ms() - start);
}
