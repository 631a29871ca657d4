/* SPDX-License-Identifier: MIT */
/*
 * The part of CRIU's plugin ABI that gpuwarm_plugin.so uses, declared here because Debian 12's
 * criu-plugin.h (CRIU 3.17) predates the device hooks. Written from CRIU's
 * criu/include/criu-plugin.h (checked against v4.0, v4.1, v4.1.1, v4.2 and master of 2025-11);
 * tests/plugin/test-plan.c pins every value below.
 *
 * How CRIU (criu/plugin.c) takes a plugin: dlopen(RTLD_LAZY) of every "*.so" in the plugin
 * directory, dlsym("CR_PLUGIN_DESC"), reject it when version > CRIU_PLUGIN_VERSION or
 * max_hooks > CR_PLUGIN_HOOK__MAX of that CRIU (a rejected plugin fails the whole CRIU run),
 * then init(stage): a non-zero return fails the run too. hooks[i] is read only for
 * i < max_hooks. CR_PLUGIN_HOOK__MAX is 12 in CRIU 4.0 and 4.1.x (PAUSE_DEVICES and
 * CHECKPOINT_DEVICES appeared in 4.0), 13 in 4.2 (POST_FORKING), 15 on master; 10 in 3.x.
 */
#ifndef GWP_CRIU_PLUGIN_ABI_H
#define GWP_CRIU_PLUGIN_ABI_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define GWP_CRIU_PLUGIN_GEN_VERSION(a, b, c) (((a) << 16) + ((b) << 8) + (c))
/* Unchanged from CRIU 1.x to master: 0.2.0. CRIU accepts any version <= its own. */
#define GWP_CRIU_PLUGIN_VERSION GWP_CRIU_PLUGIN_GEN_VERSION(0, 2, 0)

/* Hook indexes (CRIU's CR_PLUGIN_HOOK__*). Numbers are never reused by CRIU. */
enum gwp_criu_hook {
	GWP_CRIU_HOOK_DUMP_UNIX_SK = 0,
	GWP_CRIU_HOOK_RESTORE_UNIX_SK = 1,
	GWP_CRIU_HOOK_DUMP_EXT_FILE = 2,
	GWP_CRIU_HOOK_RESTORE_EXT_FILE = 3,
	GWP_CRIU_HOOK_DUMP_EXT_MOUNT = 4,
	GWP_CRIU_HOOK_RESTORE_EXT_MOUNT = 5,
	GWP_CRIU_HOOK_DUMP_EXT_LINK = 6,
	GWP_CRIU_HOOK_HANDLE_DEVICE_VMA = 7,
	GWP_CRIU_HOOK_UPDATE_VMA_MAP = 8,
	GWP_CRIU_HOOK_RESUME_DEVICES_LATE = 9,
	GWP_CRIU_HOOK_PAUSE_DEVICES = 10,
	GWP_CRIU_HOOK_CHECKPOINT_DEVICES = 11,
	GWP_CRIU_HOOK_POST_FORKING = 12, /* 4.2: restore, right after the tasks are forked */
	/* 13 RESTORE_INIT, 14 DUMP_DEVICES_LATE (master): unused here */
};

/* CR_PLUGIN_HOOK__MAX of the CRIU versions we meet. */
#define GWP_CRIU_HOOKS_3X 10 /* CRIU 3.x: up to RESUME_DEVICES_LATE */
#define GWP_CRIU_HOOKS_40 12 /* CRIU 4.0 and 4.1.x: up to CHECKPOINT_DEVICES */
#define GWP_CRIU_HOOKS_42 13 /* CRIU 4.2: up to POST_FORKING */

/* Hook signatures (CRIU's DECLARE_PLUGIN_HOOK_ARGS). Return 0, -ENOTSUP ("not mine": CRIU asks
 * the next plugin in the chain), or another negative value (failure). */
typedef int(gwp_criu_resume_devices_late_fn)(int pid);
typedef int(gwp_criu_pause_devices_fn)(int pid);
typedef int(gwp_criu_checkpoint_devices_fn)(int pid);
typedef int(gwp_criu_post_forking_fn)(void);

/* Stages passed to init() and exit() (CRIU's CR_PLUGIN_STAGE__*). */
enum gwp_criu_stage {
	GWP_CRIU_STAGE_DUMP = 0,
	GWP_CRIU_STAGE_PRE_DUMP = 1,
	GWP_CRIU_STAGE_RESTORE = 2,
};

/*
 * CRIU's cr_plugin_desc_t. Our array stops at GWP_CRIU_HOOKS_42: CRIU only reads
 * hooks[0 .. max_hooks), so a shorter array is compatible with every CRIU >= 4.0.
 */
struct gwp_criu_plugin_desc {
	const char *name;
	int (*init)(int stage);
	void (*exit)(int stage, int ret);
	unsigned int version;
	unsigned int max_hooks;
	void *hooks[GWP_CRIU_HOOKS_42];
};

/* The one symbol CRIU looks up. */
#define GWP_CRIU_DESC_SYMBOL "CR_PLUGIN_DESC"

/*
 * CRIU's log levels (criu/include/log.h), for print_on_level(). CRIU is linked with -rdynamic,
 * so its internal functions are visible to plugins; we look each one up with dlsym and do
 * without it when absent. Names and signatures:
 *   void print_on_level(unsigned int loglevel, const char *format, ...);      all versions
 *   int criu_get_image_dir(void);           public plugin API, all versions: images dir fd
 *   int add_inventory_plugin(const char *name);                               4.1+
 *   bool check_and_remove_inventory_plugin(const char *name, size_t n);       4.1+
 *   void set_compel_interrupt_only_mode(void);                                4.1+
 *   void dont_use_freeze_cgroup(void);                                        4.0 only
 *   int checkpoint_devices(void);                                             4.1+
 */
enum gwp_criu_log_level {
	GWP_CRIU_LOG_MSG = 0,
	GWP_CRIU_LOG_ERROR = 1,
	GWP_CRIU_LOG_WARN = 2,
	GWP_CRIU_LOG_INFO = 3,
	GWP_CRIU_LOG_DEBUG = 4,
};

typedef void (*gwp_criu_print_on_level_fn)(unsigned int loglevel, const char *format, ...);
typedef int (*gwp_criu_get_image_dir_fn)(void);
typedef int (*gwp_criu_add_inventory_plugin_fn)(const char *name);
typedef bool (*gwp_criu_check_and_remove_inventory_plugin_fn)(const char *name, size_t n);
typedef void (*gwp_criu_void_fn)(void);

#endif
