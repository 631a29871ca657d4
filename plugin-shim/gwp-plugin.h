/* SPDX-License-Identifier: MIT */
/*
 * Inside gpuwarm_plugin.so: the plugin's one state (owned by gwp-plugin.c, which CRIU calls and
 * which hands it to the hooks) and the modules its hooks live in, one job each:
 *
 *   gwp-drive.c    a process's checkpoint state stepped to a target, with the threads the
 *                  driver needs let run while CRIU holds them stopped
 *   gwp-dump.c     PAUSE_DEVICES, CHECKPOINT_DEVICES, and the exit hook's undo and dump mark,
 *                  and CRIU's page images into gpu-warmd's store (gwp-pages.c does the files)
 *   gwp-restore.c  RESUME_DEVICES_LATE and POST_FORKING's prefill
 *   gwp-agentsk.c  DUMP_UNIX_SK / RESTORE_UNIX_SK: the shim agent's connection to gpu-warmd
 *
 * Not an API: nothing here leaves the .so (-fvisibility=hidden, gpuwarm_plugin.map).
 */
#ifndef GWP_PLUGIN_H
#define GWP_PLUGIN_H

#include <stddef.h>
#include <sys/types.h>

#include "gwp-backend.h"
#include "gwp-criu.h"
#include "gwp-image.h"
#include "gwp-plan.h"

#define GWP_PLUGIN_NAME "gpuwarm_plugin"
#define GWP_ERR_LEN 512

struct gwp_task {
	struct gwp_task *next;
	pid_t pid;
	pid_t restore_tid;
	enum gwp_state initial; /* before we touched it */
	int fast;               /* gpu-warmd moved its VRAM out (fast path) */
	pid_t agent_tid;        /* its shim's agent thread, with fast */
	struct gwp_image img;   /* what CHECKPOINT_DEVICES writes */
};

struct gwp_plugin {
	int stage;
	enum gwp_mode mode;
	struct gwp_criu criu;
	struct gwp_backend *be;
	struct gwp_task *tasks;
	int inventory_added;
	int warned_cwd;
	char dump_id[GWP_DUMP_ID_LEN]; /* this dump's, in every record it writes */
	struct gwp_store store; /* gpu-warmd's VRAM store: see gwp_plugin_store() */
	int store_asked;
};

#define LOG(p, level, ...) gwp_criu_log(&(p)->criu, GWP_CRIU_LOG_##level, __VA_ARGS__)

/* gwp-plugin.c */
double gwp_now_ms(void);
/* gpu-warmd's VRAM store (gwp-store.h), asked of the daemon once per CRIU run: one without a
 * directory when it has none, cannot say, or the directory is not fit (logged). */
const struct gwp_store *gwp_plugin_store(struct gwp_plugin *p);
/* Where /proc/<pid>/fd and /proc/driver/nvidia are read to learn a process's GPUs, and a
 * restored process's NSpid: $GPUWARM_PROC_ROOT (tests) or /proc. */
const char *gwp_proc_root(void);
/* The task list: pid's task, or NULL; a new task for pid (NULL: out of memory), on the list
 * from then on, so that the exit hook answers for it. Freed at exit. */
struct gwp_task *gwp_task_find(const struct gwp_plugin *p, pid_t pid);
struct gwp_task *gwp_task_add(struct gwp_plugin *p, pid_t pid);

/* gwp-drive.c: step pid towards target (gwp_next_step() from its state, read again after each
 * step) with its CUDA restore thread tid let run. */
int gwp_drive(struct gwp_plugin *p, pid_t pid, pid_t tid, enum gwp_state target,
	      const struct gwp_pair *pairs, unsigned npairs, unsigned lock_timeout_ms, char *err,
	      size_t len);
/*
 * Fast resume of a process whose threads CRIU holds stopped: let its CUDA restore thread and its
 * shim's agent run while gpu-warmd refills the VRAM (from image_fd, or the image it holds),
 * restores the driver state and maps the VRAM back. agent_pid: the pid its agent was attached
 * under (the dump's, when the restore gave the process another host pid).
 */
int gwp_drive_fast_resume(struct gwp_plugin *p, pid_t pid, pid_t restore_tid, pid_t agent_tid,
			  int image_fd, const int *segment_fds, unsigned nsegment_fds,
			  pid_t agent_pid, char *err, size_t len);

/* gwp-dump.c */
int gwp_dump_pause(struct gwp_plugin *p, int pid);
int gwp_dump_checkpoint(struct gwp_plugin *p, int pid);
/* Exit of a dump: bring t back to its first state. */
void gwp_dump_undo(struct gwp_plugin *p, struct gwp_task *t);
/* Exit of a dump that worked: name it in the images, drop earlier dumps' records. */
void gwp_dump_mark_done(struct gwp_plugin *p);
/* Start of a dump: the links an earlier dump left for CRIU's page images go (gwp-pages.h). */
void gwp_dump_drop_page_links(struct gwp_plugin *p);
/* Exit of a dump of CUDA processes that worked: CRIU's page images into gpu-warmd's store. */
void gwp_dump_store_pages(struct gwp_plugin *p);

/* gwp-restore.c */
/* Start of a restore: page images linked into gpu-warmd's store get links CRIU can follow. */
void gwp_restore_relink_pages(struct gwp_plugin *p);
int gwp_restore_resume(struct gwp_plugin *p, int pid);
int gwp_restore_post_forking(struct gwp_plugin *p);

/* gwp-agentsk.c */
int gwp_agentsk_dump(struct gwp_plugin *p, int fd, int id);
int gwp_agentsk_restore(struct gwp_plugin *p, int id);

#endif
