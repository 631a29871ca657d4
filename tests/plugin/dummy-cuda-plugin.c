/* SPDX-License-Identifier: MIT */
/*
 * A stand-in for CRIU's own cuda_plugin.so when it is enabled: it answers every device hook
 * with 0 (as cuda_plugin does, for CUDA and non-CUDA pids alike) and logs each call, so the
 * coexistence test sees which plugin CRIU's chain gave the hook to.
 */
#include <stddef.h>

#include "criu-plugin-abi.h"

extern void print_on_level(unsigned int level, const char *fmt, ...) __attribute__((weak));

static int answer(const char *hook, int pid)
{
	if (print_on_level)
		print_on_level(GWP_CRIU_LOG_INFO, "dummy cuda_plugin: %s(%d)\n", hook, pid);
	return 0;
}

static int pause_devices(int pid)
{
	return answer("PAUSE_DEVICES", pid);
}

static int checkpoint_devices(int pid)
{
	return answer("CHECKPOINT_DEVICES", pid);
}

static int resume_devices_late(int pid)
{
	return answer("RESUME_DEVICES_LATE", pid);
}

static int init(int stage)
{
	(void)stage;
	return 0;
}

static void fini(int stage, int ret)
{
	(void)stage;
	(void)ret;
}

__attribute__((visibility("default"))) struct gwp_criu_plugin_desc CR_PLUGIN_DESC = {
	.name = "cuda_plugin",
	.init = init,
	.exit = fini,
	.version = GWP_CRIU_PLUGIN_VERSION,
	.max_hooks = GWP_CRIU_HOOKS_40,
	.hooks = {
		[GWP_CRIU_HOOK_RESUME_DEVICES_LATE] = (void *)resume_devices_late,
		[GWP_CRIU_HOOK_PAUSE_DEVICES] = (void *)pause_devices,
		[GWP_CRIU_HOOK_CHECKPOINT_DEVICES] = (void *)checkpoint_devices,
	},
};
