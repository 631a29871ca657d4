/* SPDX-License-Identifier: MIT */
/*
 * The restore side of the plugin: RESUME_DEVICES_LATE finds a process's record among the
 * images, plans its GPUs (onto others when its own are gone or drained) and restores it, by the
 * fast path when gpu-warmd moved its VRAM out at dump; POST_FORKING has gpu-warmd fill the VRAM
 * of fast-path images while CRIU restores memory.
 */
#include "gwp-plugin.h"
#include "gwp-pages.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>

#include "gwp-proc.h"

/* Pairs for a restore, and leases on the GPUs it moves to. */
static int plan_restore(struct gwp_plugin *p, const struct gwp_image *img,
			struct gwp_pair *pairs, unsigned *ret_n)
{
	struct gwp_backend_gpu bgpus[GWP_MAX_GPUS];
	struct gwp_gpu gpus[GWP_MAX_GPUS];
	char sources[GWP_IMAGE_MAX_GPUS][GWP_UUID_LEN];
	char err[GWP_ERR_LEN];
	unsigned ngpus = 0, n = 0;
	int r;

	*ret_n = 0;
	if (img->ngpus == 0)
		return 0;
	for (unsigned i = 0; i < img->ngpus; i++)
		snprintf(sources[i], GWP_UUID_LEN, "%s", img->gpus[i].uuid);
	r = gwp_backend_gpus(p->be, bgpus, GWP_MAX_GPUS, &ngpus, err, sizeof(err));
	if (r < 0) {
		LOG(p, WARN, "pid %d: cannot list the GPUs (%s): restoring onto the same ones",
		    img->pid, err);
		return r == -EAGAIN ? plan_restore(p, img, pairs, ret_n) : 0;
	}
	for (unsigned i = 0; i < ngpus; i++)
		gpus[i] = bgpus[i].gpu;
	/* A GPU the daemon will not lease (drained meanwhile) is dropped and the plan made again. */
	for (unsigned attempt = 0; attempt <= ngpus; attempt++) {
		unsigned bad = ngpus;

		r = gwp_plan_pairs((const char(*)[GWP_UUID_LEN])sources, img->ngpus, gpus, ngpus,
				   pairs, GWP_MAX_GPUS, &n);
		if (r < 0) {
			LOG(p, ERROR, "pid %d: its GPUs are gone or drained and no other GPU is "
			    "free to take them", img->pid);
			return -ENODEV;
		}
		gwp_backend_release_leases(p->be);
		for (unsigned i = 0; i < n && bad == ngpus; i++) {
			if (strcasecmp(pairs[i].old_uuid, pairs[i].new_uuid) == 0)
				continue;
			r = gwp_backend_lease(p->be, pairs[i].new_uuid, err, sizeof(err));
			if (r == -ENODEV) {
				for (bad = 0; bad < ngpus; bad++)
					if (strcasecmp(gpus[bad].uuid, pairs[i].new_uuid) == 0)
						break;
			} else if (r < 0) {
				LOG(p, WARN, "pid %d: no lease on %s (%s), going on", img->pid,
				    pairs[i].new_uuid, err);
			}
		}
		if (bad == ngpus)
			break;
		gpus[bad].usable = 0;
	}
	for (unsigned i = 0; i < n; i++)
		if (strcasecmp(pairs[i].old_uuid, pairs[i].new_uuid) != 0)
			LOG(p, INFO, "pid %d: GPU %s is gone or drained: restoring onto %s",
			    img->pid, pairs[i].old_uuid, pairs[i].new_uuid);
	*ret_n = n;
	return 0;
}

/* pid's record, of the images' latest dump (records of earlier dumps into the same directory
 * may be there: podman's checkpoint --keep). */
static int find_image(struct gwp_plugin *p, pid_t pid, struct gwp_image *ret_img)
{
	int is_cwd, dir = gwp_criu_image_dir(&p->criu, &is_cwd);
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
	if (gwp_proc_inner_tid(gwp_proc_root(), pid, pid, &vpid) < 0 || vpid == pid)
		return -ENOENT;
	r = gwp_image_find_vpid(dir, want, vpid, ret_img);
	if (r == -ENOTUNIQ)
		LOG(p, ERROR, "RESUME_DEVICES_LATE: pid %d: more than one gpuwarm-*.json%s names "
		    "pid %d of its namespace: cannot tell which is its own", (int)pid,
		    want ? " of the latest dump" : "", (int)vpid);
	return r;
}

/* A thread of restored pid: by its tid inside pid's namespace (the host tid changes), else the
 * host tid the dump saw, when pid still has it. 0 when neither is there. */
static pid_t find_thread(pid_t pid, pid_t vtid, pid_t tid)
{
	pid_t found = 0;

	if (vtid > 0 && gwp_proc_find_inner_tid("/proc", pid, vtid, &found) < 0)
		found = 0;
	if (found <= 0 && gwp_proc_has_thread("/proc", pid, tid))
		found = tid;
	return found > 0 ? found : 0;
}

/* The fast path's resume: its VRAM comes back from the image files (or the daemon). */
static int resume_fast(struct gwp_plugin *p, pid_t pid, pid_t tid, const struct gwp_image *img,
		       double start)
{
	pid_t agent = find_thread(pid, img->agent_vtid, img->agent_tid);
	int fds[GWP_VRAM_MAX_FILES], r;
	char err[GWP_ERR_LEN] = "";
	unsigned nfds = 0;

	if (!agent) {
		LOG(p, ERROR, "RESUME_DEVICES_LATE: pid %d: its agent thread %d is not there", pid,
		    img->agent_vtid > 0 ? img->agent_vtid : img->agent_tid);
		return -1;
	}
	if (img->vram_file) {
		int dir = gwp_criu_image_dir(&p->criu, NULL);
		char vram[64];

		gwp_vram_image_name(img->pid, vram, sizeof(vram));
		r = gwp_vram_files_open(dir, img->pid, 0, gwp_plugin_store(p), fds,
					GWP_VRAM_MAX_FILES, &nfds, err, sizeof(err));
		if (r < 0) {
			LOG(p, ERROR, "RESUME_DEVICES_LATE: pid %d: cannot open %s or its segment "
			    "files: %s", pid, vram, err);
			return -1;
		}
	}
	r = gwp_drive_fast_resume(p, pid, tid, agent, nfds ? fds[0] : -1, nfds ? fds + 1 : NULL,
				  nfds ? nfds - 1 : 0, img->pid, err, sizeof(err));
	gwp_vram_files_close(fds, nfds);
	if (r < 0) {
		LOG(p, ERROR, "RESUME_DEVICES_LATE: fast resume of pid %d failed: %s", pid, err);
		return -1;
	}
	LOG(p, INFO, "pid %d: CUDA state and VRAM restored by gpu-warmd (fast path) in %.1f ms",
	    pid, gwp_now_ms() - start);
	return 0;
}

int gwp_restore_resume(struct gwp_plugin *p, int pid)
{
	struct gwp_pair pairs[GWP_MAX_GPUS];
	struct gwp_image img;
	char err[GWP_ERR_LEN] = "";
	unsigned npairs = 0;
	pid_t tid;
	double start;
	int r;

	if (p->mode != GWP_MODE_RESTORE)
		return -ENOTSUP;
	r = find_image(p, pid, &img);
	if (r == -ENOENT)
		return -ENOTSUP; /* its dump saw no CUDA in it */
	if (r < 0) {
		LOG(p, ERROR, "RESUME_DEVICES_LATE: pid %d: unreadable gpuwarm-*.json: %s", pid,
		    strerror(-r));
		return -1;
	}
	tid = find_thread(pid, img.restore_vtid, img.restore_tid);
	if (!tid) {
		LOG(p, ERROR, "RESUME_DEVICES_LATE: pid %d: its CUDA restore thread (%d) is not "
		    "there", pid, img.restore_vtid);
		return -1;
	}
	if (gwp_backend_ready(p->be) < 0) {
		LOG(p, ERROR, "RESUME_DEVICES_LATE: pid %d holds checkpointed CUDA state but "
		    "neither gpu-warmd nor the driver is usable: it stays checkpointed", pid);
		return -1;
	}
	start = gwp_now_ms();
	if (img.fast)
		return resume_fast(p, pid, tid, &img, start);
	if (plan_restore(p, &img, pairs, &npairs) < 0)
		return -1;
	r = gwp_drive(p, pid, tid, GWP_STATE_RUNNING, pairs, npairs, 0, err, sizeof(err));
	gwp_backend_release_leases(p->be);
	if (r < 0) {
		LOG(p, ERROR, "RESUME_DEVICES_LATE: cannot restore pid %d: %s", pid, err);
		return -1;
	}
	LOG(p, INFO, "pid %d: CUDA state restored%s in %.1f ms", pid,
	    npairs ? " onto other GPUs" : "", gwp_now_ms() - start);
	return 0;
}

/*
 * POST_FORKING (CRIU 4.2+): the tasks exist and CRIU's restorers are filling their memory, a
 * second or more for a model server. Have gpu-warmd create and fill the VRAM of every fast-path
 * image now, in parallel with that; RESUME_DEVICES_LATE's resume of the same file then finds it
 * filled and only restores the driver state and maps it. Nothing here can fail the restore: a
 * prefill that does not happen leaves the resume to fill as before.
 */
struct prefill_args {
	struct gwp_plugin *p;
	int dir;
};

static int prefill_one(const struct gwp_image *img, void *arg)
{
	const struct prefill_args *a = arg;
	struct gwp_plugin *p = a->p;
	int dir = a->dir, fds[GWP_VRAM_MAX_FILES], r;
	char vram[64], err[GWP_ERR_LEN] = "";
	unsigned nfds = 0;
	double start = gwp_now_ms();

	if (!img->fast || !img->vram_file)
		return 0;
	gwp_vram_image_name(img->pid, vram, sizeof(vram));
	r = gwp_vram_files_open(dir, img->pid, 0, gwp_plugin_store(p), fds, GWP_VRAM_MAX_FILES,
				&nfds, err, sizeof(err));
	if (r < 0) {
		LOG(p, WARN, "POST_FORKING: cannot open %s or its segments (%s): no prefill", vram,
		    err);
		return 0;
	}
	r = gwp_backend_prefill(p->be, fds, nfds, err, sizeof(err));
	gwp_vram_files_close(fds, nfds);
	if (r < 0)
		LOG(p, WARN, "POST_FORKING: no prefill of %s: %s", vram, err);
	else
		LOG(p, INFO, "POST_FORKING: gpu-warmd fills the VRAM of %s while CRIU restores "
		    "memory (asked in %.1f ms)", vram, gwp_now_ms() - start);
	return 0;
}

int gwp_restore_post_forking(struct gwp_plugin *p)
{
	int is_cwd, dir;
	char dump[GWP_DUMP_ID_LEN];
	const char *want = NULL;

	/* -ENOTSUP in every case: CRIU stops at the first plugin that answers otherwise, and
	 * other device plugins (amdgpu's parallel restore) need this hook too. */
	if (p->mode != GWP_MODE_RESTORE)
		return -ENOTSUP;
	dir = gwp_criu_image_dir(&p->criu, &is_cwd);
	if (gwp_dump_marked(dir, dump, sizeof(dump)) == 0)
		want = dump;
	if (!gwp_backend_has_daemon(p->be))
		return -ENOTSUP; /* the fast path needs the daemon: nothing to start early */
	gwp_image_each(dir, want, prefill_one, &(struct prefill_args){ p, dir });
	return -ENOTSUP;
}

void gwp_restore_relink_pages(struct gwp_plugin *p)
{
	int dir = gwp_criu_image_dir(&p->criu, NULL), r;
	const struct gwp_store *store;
	char err[GWP_ERR_LEN] = "";
	unsigned links = 0;

	if (!gwp_pages_has_links(dir))
		return;
	store = gwp_plugin_store(p);
	if (store->fd < 0) {
		LOG(p, WARN, "CRIU's page images are links, and gpu-warmd has no store (--vram-store) "
		    "to check them against: left as they are (CRIU cannot open an absolute link "
		    "from inside a container)");
		return;
	}
	r = gwp_pages_relink(store, dir, &links, err, sizeof(err));
	if (r < 0)
		LOG(p, ERROR, "%s", err);
	else if (links > 0)
		LOG(p, INFO, "%u page images linked into gpu-warmd's store: links made relative, for "
		    "CRIU's restorer inside the container", links);
}
