/* SPDX-License-Identifier: MIT */
/*
 * `warmctl check`'s CRIU part, as a library: which criu is installed, where it loads plugins
 * from, which CUDA plugins are there, and whether gpuwarm_plugin.so is the one that will handle
 * CUDA processes. Nothing here prints.
 *
 * The rule (CRIU 4.x criu/plugin.c: cr_plugin_init, cr_lib_load; criu/include/plugin.h:
 * run_plugins): CRIU loads every "*.so" of the plugin directory (-L, else $CRIU_LIBS_DIR, else
 * /usr/lib/criu) in readdir() order, which is the filesystem's order, not the names' order. A
 * device hook is offered to the plugins in that load order and the first answer other than
 * -ENOTSUP ends it. CRIU's cuda_plugin.so answers every pid (0 for non-CUDA ones) unless it is
 * disabled (no /proc/driver/nvidia/gpus, or no cuda-checkpoint in PATH). So gpuwarm_plugin.so
 * handles CUDA processes when it is in the directory and cuda_plugin.so is absent, disabled,
 * or read after it.
 *
 * Report:
 *   {"criu": {"path": "/usr/sbin/criu" | null, "version": "4.1.1" | null,
 *             "device_hooks": true | false | null, "error": null | "..."},
 *    "plugin_dir": "/usr/lib/criu", "plugin_dir_from": "CRIU_LIBS_DIR" | "default",
 *    "plugin_dir_exists": true, "installed_dir": "<meson criu_plugin_dir>",
 *    "load_order": ["gpuwarm_plugin.so", "cuda_plugin.so"],
 *    "cuda_plugins": {"cuda_plugin.so": true, "gpuwarm_plugin.so": true},
 *    "cuda_plugin_enabled": false, "cuda_plugin_why": "...",
 *    "gpuwarm_used": true, "reason": "..."}
 */
#ifndef GW_CRIU_CHECK_H
#define GW_CRIU_CHECK_H

#include <stddef.h>

#include <cjson/cJSON.h>

struct gw_criu_check_opts {
	const char *path;        /* directories to look for criu and cuda-checkpoint in ($PATH) */
	const char *plugin_dir;  /* NULL: $CRIU_LIBS_DIR, else CRIU's default */
	const char *nvidia_proc; /* NULL: /proc/driver/nvidia/gpus */
	int timeout_ms;          /* for `criu --version`; <= 0: 5000 */
};

#define GW_CRIU_DEFAULT_PLUGIN_DIR "/usr/lib/criu"
#define GW_CRIU_PLUGIN_FILE "gpuwarm_plugin.so"
#define GW_CRIU_CUDA_PLUGIN_FILE "cuda_plugin.so"

/* The report above in *ret_report (caller deletes). Returns 0 or -ENOMEM; what it cannot find
 * is in the report, not an error. */
int gw_criu_check_with(const struct gw_criu_check_opts *opts, cJSON **ret_report);
int gw_criu_check(cJSON **ret_report);

/* "Version: 4.1.1" (criu --version's first line) -> 4.1.1 as major*10000+minor*100+patch;
 * -EINVAL when the text has no version. */
int gw_criu_parse_version(const char *text, char *ret_version, size_t len, int *ret_number);

#endif
