/* SPDX-License-Identifier: MIT */
/*
 * The CRIU plugin's decisions, free of CRIU, ptrace and sockets so unit tests build them alone:
 * what a stage means for the plugin, which way a driver call goes (daemon or driver), the next
 * driver step from a process's checkpoint state towards a wanted one, what the exit hook must
 * undo, how long a lock may take under CRIU's --timeout, and which GPU pairs a restore needs.
 */
#ifndef GWP_PLAN_H
#define GWP_PLAN_H

#include <stddef.h>

/* The driver's CUprocessState, plus "unknown" for a state we could not read. */
enum gwp_state {
	GWP_STATE_RUNNING = 0,
	GWP_STATE_LOCKED = 1,
	GWP_STATE_CHECKPOINTED = 2,
	GWP_STATE_FAILED = 3,
	GWP_STATE_UNKNOWN = 4,
};

enum gwp_step {
	GWP_STEP_DONE = 0,  /* already there */
	GWP_STEP_LOCK,
	GWP_STEP_CHECKPOINT,
	GWP_STEP_RESTORE,
	GWP_STEP_UNLOCK,
	GWP_STEP_STUCK,     /* no step leads there (failed or unknown state) */
};

const char *gwp_state_name(enum gwp_state state);
/* "running", "locked", "checkpointed", "failed". Returns 0 or -EINVAL. */
int gwp_state_parse(const char *text, enum gwp_state *ret_state);
const char *gwp_step_name(enum gwp_step step);

/* The one driver step that moves a process from cur towards target along
 * running -lock-> locked -checkpoint-> checkpointed -restore-> locked -unlock-> running:
 * gw_ckpt_next_step(), the walk the daemon's resume takes too. */
enum gwp_step gwp_next_step(enum gwp_state cur, enum gwp_state target);

/* What the plugin does in a CRIU stage. */
enum gwp_mode {
	GWP_MODE_OFF = 0, /* every hook answers -ENOTSUP */
	GWP_MODE_DUMP,
	GWP_MODE_RESTORE,
};

struct gwp_stage_input {
	int stage;            /* enum gwp_criu_stage */
	int old_criu;         /* running inside a CRIU without device hooks (< 4.0) */
	int inventory_known;  /* CRIU can tell which plugins the dump used (4.1+) */
	int in_inventory;     /* ... and ours was one of them */
};

/* The mode, and a reason when it is off (static text). */
enum gwp_mode gwp_stage_mode(const struct gwp_stage_input *in, const char **ret_why);

/* CR_PLUGIN_DESC.max_hooks: what the CRIU that loaded us knows (a CRIU rejects a plugin with
 * more hooks than it has, and fails the whole run): 10 without device hooks (3.x), 12 up to
 * CHECKPOINT_DEVICES (4.0, 4.1), 13 with POST_FORKING (4.2+) and when not inside CRIU. */
unsigned gwp_max_hooks(int in_criu, int criu_has_device_hooks, int criu_has_post_forking);

/* Which way driver calls go, from what is known of the daemon and the driver. */
enum gwp_avail {
	GWP_AVAIL_UNTRIED = 0,
	GWP_AVAIL_UP,
	GWP_AVAIL_DOWN,
};

enum gwp_route {
	GWP_ROUTE_CONNECT_DAEMON, /* try the daemon first */
	GWP_ROUTE_DAEMON,
	GWP_ROUTE_LOAD_DRIVER,    /* the daemon is down: load the driver in-process */
	GWP_ROUTE_DRIVER,
	GWP_ROUTE_NONE,           /* neither: stand aside (-ENOTSUP) */
};

enum gwp_route gwp_route(enum gwp_avail daemon, enum gwp_avail driver);

/*
 * Whether --leave-running is in CRIU's command line (NUL-separated, as /proc/self/cmdline):
 * 1 yes, 0 no, -1 unknown (RPC mode: "criu swrk" / "criu service" get options over a socket).
 * Short options are parsed with CRIU's option string, so "-vR" counts and "-D -R"'s "-R" is
 * the images directory.
 */
int gwp_cmdline_leave_running(const char *cmdline, size_t len);

/* 1 when the exit hook must bring every process it touched back to its first state: a failed
 * dump, or a dump that leaves the tasks running (leave_running 1, or -1 = unknown). */
int gwp_exit_needs_undo(int stage, int ret, int leave_running);

#define GWP_LOCK_DEFAULT_TIMEOUT_MS 10000u
/* The lock timeout from what is left of CRIU's --timeout alarm (0: no alarm armed). It ends
 * before the alarm does: CRIU aborts the dump (BUG()) a few seconds after its alarm. Never 0
 * (which the driver reads as "no timeout"). */
unsigned gwp_lock_timeout_ms(unsigned long alarm_left_ms);

/* ---- restore onto other GPUs ---- */

#define GWP_UUID_LEN 48
#define GWP_MAX_GPUS 64

struct gwp_gpu {
	char uuid[GWP_UUID_LEN]; /* "GPU-..." */
	int usable;              /* present and accepting work (not drained, draining, failed) */
};

struct gwp_pair {
	char old_uuid[GWP_UUID_LEN];
	char new_uuid[GWP_UUID_LEN];
};

/*
 * The gpuPairs for restoring a process that used the GPUs in sources onto the GPUs in gpus.
 * Every source that is usable stays where it is; when none needs to move, *ret_npairs is 0 (a
 * plain restore). Otherwise each unusable or absent source gets the first usable GPU that is
 * neither a source nor already taken, and, because the driver wants every checkpointed GPU in
 * the list, the staying sources get identity pairs. Returns 0, -ENODEV (not enough usable
 * GPUs), -EINVAL (max too small). ret_* untouched on failure.
 */
int gwp_plan_pairs(const char (*sources)[GWP_UUID_LEN], unsigned nsources,
		   const struct gwp_gpu *gpus, unsigned ngpus, struct gwp_pair *ret_pairs,
		   unsigned max, unsigned *ret_npairs);

#endif
