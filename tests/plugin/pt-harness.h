/* SPDX-License-Identifier: MIT */
/*
 * Harness for the plugin suite: a private directory per test (fake driver state, daemon socket,
 * CRIU images, plugin directory), the real gpu-warmd and gw-vram-app over the fake driver, and
 * fake-criu (tests/plugin/fake-criu.c) driving gpuwarm_plugin.so as CRIU does. Paths come from
 * the environment meson sets: GW_DAEMON, GW_VRAM_APP, GW_FAKE_CRIU, GW_FAKE_CRIU_OLD,
 * GW_PLUGIN, GW_DUMMY_CUDA_PLUGIN, GPUWARM_CUDA_LIBRARY.
 */
#ifndef PT_HARNESS_H
#define PT_HARNESS_H

#include <stdio.h>
#include <sys/types.h>

#include <cjson/cJSON.h>

#include "gwp-image.h"

struct pt {
	char dir[128];
	char socket[192];   /* where the daemon listens ($GPUWARM_SOCKET is set to it) */
	char images[192];   /* -D */
	char plugins[192];  /* -L: holds a link to gpuwarm_plugin.so */
	char log[192];      /* fake-criu's log */
	char daemon_log[192];
	pid_t daemon;
};

struct pt_app {
	pid_t pid;
	pid_t child;        /* --spawn-child */
	FILE *out;
	char gpu[64];
	char child_gpu[64];
};

#define PT_ARGS(...) ((const char *const[]){ __VA_ARGS__, NULL })

/* A fresh private directory; sets FAKECUDA_STATE_DIR and GPUWARM_SOCKET for every process
 * started afterwards. Everything started is killed and the directory removed at exit. */
void pt_setup(struct pt *p);
/* Kill what the test started and remove its directory. Every case calls it at its end: the
 * test harness leaves a case with _exit(), which skips atexit(). */
void pt_finish(void);

/* gpu-warmd on p->socket with extra environment ("NAME=value", NULL-terminated, may be NULL);
 * returns when it answers status with no GPU priming. */
void pt_daemon_start(struct pt *p, const char *const *env);
/* ...with extra options too (NULL-terminated, may be NULL). */
void pt_daemon_start_with(struct pt *p, const char *const *env, const char *const *args);
void pt_daemon_kill(struct pt *p);
/* A status call: the result (caller deletes), or NULL when the daemon does not answer. */
cJSON *pt_daemon_status(struct pt *p);
/* One call on a fresh connection; 0 or the client's negative errno. */
int pt_daemon_call(struct pt *p, const char *method, cJSON *params, cJSON **ret_result);
/* operations.<op>.ok from status. */
int pt_daemon_ops_ok(struct pt *p, const char *op);

/* gw-vram-app with arguments and extra environment; waits for its ready line(s). */
void pt_app_start(struct pt_app *a, const char *const *args, const char *const *env);
/* SIGUSR1: returns how many "verify ok" lines came back (1, or 2 with a child); the last line
 * read is left in line. */
int pt_app_verify(struct pt_app *a, char *line, size_t len);
/* The "gpu" word of a verify line of pid, or "" */
void pt_verify_gpu(const char *line, char *gpu, size_t len);

/* Run fake-criu (old: the CRIU 3.x build) with mode and args, -D/-L/-o added, with extra
 * environment. The log starts empty. Returns its exit code. */
int pt_criu(struct pt *p, int old, const char *mode, const char *const *args,
	    const char *const *env);
/* Start it in the background instead. */
pid_t pt_criu_spawn(struct pt *p, const char *mode, const char *const *args,
		    const char *const *env);
int pt_wait(pid_t pid);
/* Any program, killed with the test. */
pid_t pt_spawn(const char *const *argv);
/* fake-criu's log so far (static buffer). */
const char *pt_log(const struct pt *p);
/* How many times needle occurs in the log. */
int pt_log_count(const struct pt *p, const char *needle);

/* The CUDA checkpoint state of pid, asked by this process through the fake driver
 * (CU_PROCESS_STATE_*), or -1. The process must not be frozen. */
int pt_cuda_state(pid_t pid);

/* gpuwarm-<pid>.json of the images directory: 0 or a negative errno. */
int pt_image(const struct pt *p, pid_t pid, struct gwp_image *ret_img);

/* A fake /proc for GPUWARM_PROC_ROOT in which pid has /dev/nvidia<minor> open and the driver
 * lists the fake GPUs 0..ngpus-1 (PCI 0000:3b:00.0 + index, minor = index). Returns the path. */
const char *pt_fake_proc(struct pt *p, pid_t pid, int minor, int ngpus);

/* Add to that fake /proc (GPUWARM_PROC_ROOT) <pid>/task/<pid>/status whose NSpid line says pid
 * is inner in its own pid namespace, as for a process restored into a new namespace. Returns
 * the path. */
const char *pt_fake_nspid(struct pt *p, pid_t pid, pid_t inner);

/* The fake driver's UUID of GPU index i. */
void pt_gpu_uuid(int i, char *buf, size_t len);

void pt_sleep_ms(unsigned ms);

/* ---- assertions ---- */

/* CU_PROCESS_STATE_* as pt_cuda_state() answers them. */
enum { PT_RUNNING = 0, PT_LOCKED = 1, PT_CHECKPOINTED = 2 };
/* What fake-criu logs for a hook that answered -ENOTSUP. */
#define PT_ENOTSUP_TEXT "-95"

/* v in buf, for PT_ARGS(). */
const char *pt_num(char *buf, size_t len, long v);
/* fake-criu's log says hook(pid) returned ret, or that it never ran for pid. */
void pt_assert_hook(const struct pt *p, const char *hook, pid_t pid, const char *ret);
void pt_assert_no_hook(const struct pt *p, const char *hook, pid_t pid);
/* The app (and its child) checked their VRAM: n "verify ok" lines. */
void pt_assert_verified(struct pt_app *a, int n);
/* 1 when dir/name holds needle (in its first 4 KiB). */
int pt_file_has(const char *dir, const char *name, const char *needle);

#endif
