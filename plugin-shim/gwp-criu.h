/* SPDX-License-Identifier: MIT */
/*
 * CRIU's internals as the plugin meets them at run time: functions looked up with dlsym (each
 * optional: an older CRIU, or a loader that is not CRIU, lacks some), CRIU's logger, the image
 * directory and what is left of its --timeout alarm.
 */
#ifndef GWP_CRIU_H
#define GWP_CRIU_H

#include "criu-plugin-abi.h"

struct gwp_criu {
	gwp_criu_print_on_level_fn print_on_level;
	gwp_criu_get_image_dir_fn get_image_dir;
	gwp_criu_add_inventory_plugin_fn add_inventory_plugin;
	gwp_criu_check_and_remove_inventory_plugin_fn check_and_remove_inventory_plugin;
	gwp_criu_void_fn interrupt_only; /* set_compel_interrupt_only_mode (4.1+) or
					  * dont_use_freeze_cgroup (4.0) */
	int in_criu;       /* print_on_level resolves: we were loaded by CRIU */
	int device_hooks;  /* that CRIU has PAUSE_DEVICES/CHECKPOINT_DEVICES (4.0+) */
	int post_forking;  /* and POST_FORKING (4.2+) */
};

/* Look everything up in the process's global scope. */
void gwp_criu_resolve(struct gwp_criu *c);

/* Log one line "gpuwarm: ..." through CRIU's logger at a GWP_CRIU_LOG_* level, or on stderr
 * (all but debug) when there is no CRIU logger. */
void gwp_criu_log(const struct gwp_criu *c, int level, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));

/* The images directory: CRIU's fd for it, else AT_FDCWD (CRIU chdir()s into its work
 * directory, which is the images directory unless --work-dir says otherwise). */
int gwp_criu_image_dir(const struct gwp_criu *c, int *ret_is_cwd);

/* Milliseconds left on the process's ITIMER_REAL (CRIU's alarm(--timeout) around freezing),
 * 0 when none is armed. Reads it without touching it. */
unsigned long gwp_criu_alarm_left_ms(void);

/* 1 when CRIU runs with --leave-running (from its command line and GPUWARM_CRIU_LEAVE_RUNNING,
 * which wins when set to 0 or 1), 0 when not, -1 when it cannot be told (RPC mode). */
int gwp_criu_leave_running(void);

#endif
