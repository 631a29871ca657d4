/* SPDX-License-Identifier: MIT */
#include "gwp-plan.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>

#include "criu-plugin-abi.h"
#include "gw-ckpt.h"
#include "gw-proto.h"

static const char *const state_names[] = {
	[GWP_STATE_RUNNING] = GW_PROCESS_STATE_RUNNING,
	[GWP_STATE_LOCKED] = GW_PROCESS_STATE_LOCKED,
	[GWP_STATE_CHECKPOINTED] = GW_PROCESS_STATE_CHECKPOINTED,
	[GWP_STATE_FAILED] = GW_PROCESS_STATE_FAILED,
	[GWP_STATE_UNKNOWN] = GW_PROCESS_STATE_UNKNOWN,
};

const char *gwp_state_name(enum gwp_state state)
{
	if ((unsigned)state > GWP_STATE_UNKNOWN)
		return "unknown";
	return state_names[state];
}

int gwp_state_parse(const char *text, enum gwp_state *ret_state)
{
	if (!text)
		return -EINVAL;
	for (int s = GWP_STATE_RUNNING; s <= GWP_STATE_FAILED; s++) {
		if (strcmp(text, state_names[s]) == 0) {
			*ret_state = (enum gwp_state)s;
			return 0;
		}
	}
	return -EINVAL;
}

const char *gwp_step_name(enum gwp_step step)
{
	switch (step) {
	case GWP_STEP_DONE:
		return "done";
	case GWP_STEP_LOCK:
		return "lock";
	case GWP_STEP_CHECKPOINT:
		return "checkpoint";
	case GWP_STEP_RESTORE:
		return "restore";
	case GWP_STEP_UNLOCK:
		return "unlock";
	case GWP_STEP_STUCK:
		break;
	}
	return "stuck";
}

enum gwp_step gwp_next_step(enum gwp_state cur, enum gwp_state target)
{
	static const enum gwp_step steps[] = {
		[GW_CKPT_LOCK] = GWP_STEP_LOCK,
		[GW_CKPT_CHECKPOINT] = GWP_STEP_CHECKPOINT,
		[GW_CKPT_RESTORE] = GWP_STEP_RESTORE,
		[GW_CKPT_UNLOCK] = GWP_STEP_UNLOCK,
	};
	enum gw_ckpt_step step;
	int r;

	/* gwp_state is CUprocessState plus "unknown", which gw_ckpt_next_step() refuses */
	r = gw_ckpt_next_step((CUprocessState)cur, (CUprocessState)target, &step);
	if (r < 0)
		return GWP_STEP_STUCK;
	return r == 0 ? GWP_STEP_DONE : steps[step];
}

enum gwp_mode gwp_stage_mode(const struct gwp_stage_input *in, const char **ret_why)
{
	const char *why = NULL;
	enum gwp_mode mode = GWP_MODE_OFF;

	if (in->old_criu)
		why = "this CRIU has no device hooks (PAUSE_DEVICES/CHECKPOINT_DEVICES need CRIU 4.0 "
		      "or newer)";
	else if (in->stage == GWP_CRIU_STAGE_PRE_DUMP)
		why = "pre-dump: GPU state is only saved by a full dump";
	else if (in->stage == GWP_CRIU_STAGE_DUMP)
		mode = GWP_MODE_DUMP;
	else if (in->stage != GWP_CRIU_STAGE_RESTORE)
		why = "unknown CRIU stage";
	else if (in->inventory_known && !in->in_inventory)
		why = "these images were not dumped with gpuwarm_plugin";
	else
		mode = GWP_MODE_RESTORE;
	if (ret_why)
		*ret_why = why;
	return mode;
}

unsigned gwp_max_hooks(int in_criu, int criu_has_device_hooks, int criu_has_post_forking)
{
	if (in_criu && !criu_has_device_hooks)
		return GWP_CRIU_HOOKS_3X;
	if (in_criu && !criu_has_post_forking)
		return GWP_CRIU_HOOKS_40;
	return GWP_CRIU_HOOKS_42;
}

enum gwp_route gwp_route(enum gwp_avail daemon, enum gwp_avail driver)
{
	if (daemon == GWP_AVAIL_UP)
		return GWP_ROUTE_DAEMON;
	if (daemon == GWP_AVAIL_UNTRIED)
		return GWP_ROUTE_CONNECT_DAEMON;
	if (driver == GWP_AVAIL_UP)
		return GWP_ROUTE_DRIVER;
	if (driver == GWP_AVAIL_UNTRIED)
		return GWP_ROUTE_LOAD_DRIVER;
	return GWP_ROUTE_NONE;
}

/* CRIU's getopt string (criu/config.c, unchanged from 3.x to master). */
#define CRIU_SHORT_OPTS "dSsRt:hD:o:v::x::Vr:jJ:lW:L:M:"

/* One "-abc" cluster. Returns 1 when it holds -R, and sets *takes_next when its last option
 * wants the next argument as its value. */
static int short_cluster_has_r(const char *arg, int *takes_next)
{
	*takes_next = 0;
	for (const char *c = arg + 1; *c; c++) {
		const char *spec = strchr(CRIU_SHORT_OPTS, *c);

		if (!spec || *c == ':')
			return 0; /* not a CRIU option: not a cluster we understand */
		if (*c == 'R')
			return 1;
		if (spec[1] == ':') {
			/* "v::" / "x::": optional value, only glued; "t:": the rest or next arg */
			if (spec[2] != ':' && c[1] == '\0')
				*takes_next = 1;
			return 0;
		}
	}
	return 0;
}

int gwp_cmdline_leave_running(const char *cmdline, size_t len)
{
	size_t off = 0, argi = 0;
	int skip_next = 0, found = 0;

	while (off < len) {
		const char *arg = cmdline + off;
		size_t alen = strnlen(arg, len - off);

		off += alen + 1;
		if (argi++ == 0 || alen == 0)
			continue; /* argv[0] */
		if (argi == 2 && (strcmp(arg, "swrk") == 0 || strcmp(arg, "service") == 0))
			return -1;
		if (skip_next) {
			skip_next = 0;
			continue;
		}
		if (strcmp(arg, "--") == 0)
			break;
		if (strcmp(arg, "--leave-running") == 0)
			found = 1;
		else if (arg[0] == '-' && arg[1] != '-' && arg[1] != '\0')
			found |= short_cluster_has_r(arg, &skip_next);
	}
	return found;
}

int gwp_exit_needs_undo(int stage, int ret, int leave_running)
{
	if (stage != GWP_CRIU_STAGE_DUMP)
		return 0;
	return ret != 0 || leave_running != 0;
}

unsigned gwp_lock_timeout_ms(unsigned long alarm_left_ms)
{
	if (alarm_left_ms == 0)
		return GWP_LOCK_DEFAULT_TIMEOUT_MS;
	/* No lock needs longer than the daemon accepts (GW_LOCK_TIMEOUT_MAX_MS): a lock waits for
	 * the process's threads to leave the driver, which takes milliseconds. */
	if (alarm_left_ms > 2000)
		return alarm_left_ms - 1000 > GW_LOCK_TIMEOUT_MAX_MS ? GW_LOCK_TIMEOUT_MAX_MS :
								     (unsigned)(alarm_left_ms - 1000);
	return alarm_left_ms / 2 > 0 ? (unsigned)(alarm_left_ms / 2) : 1;
}

static int uuid_eq(const char *a, const char *b)
{
	return strcasecmp(a, b) == 0;
}

static const struct gwp_gpu *find_gpu(const struct gwp_gpu *gpus, unsigned ngpus,
				      const char *uuid)
{
	for (unsigned i = 0; i < ngpus; i++)
		if (uuid_eq(gpus[i].uuid, uuid))
			return &gpus[i];
	return NULL;
}

static int is_source(const char (*sources)[GWP_UUID_LEN], unsigned nsources, const char *uuid)
{
	for (unsigned i = 0; i < nsources; i++)
		if (uuid_eq(sources[i], uuid))
			return 1;
	return 0;
}

int gwp_plan_pairs(const char (*sources)[GWP_UUID_LEN], unsigned nsources,
		   const struct gwp_gpu *gpus, unsigned ngpus, struct gwp_pair *ret_pairs,
		   unsigned max, unsigned *ret_npairs)
{
	int taken[GWP_MAX_GPUS] = { 0 };
	struct gwp_pair pairs[GWP_MAX_GPUS];
	unsigned moving = 0, n = 0;

	if (nsources > GWP_MAX_GPUS || ngpus > GWP_MAX_GPUS)
		return -EINVAL;
	for (unsigned i = 0; i < nsources; i++) {
		const struct gwp_gpu *g = find_gpu(gpus, ngpus, sources[i]);

		if (!g || !g->usable)
			moving++;
	}
	if (moving == 0) {
		*ret_npairs = 0;
		return 0;
	}
	if (nsources > max)
		return -EINVAL;
	for (unsigned i = 0; i < nsources; i++) {
		const struct gwp_gpu *g = find_gpu(gpus, ngpus, sources[i]);
		const char *target = NULL;

		if (g && g->usable) {
			target = sources[i];
		} else {
			for (unsigned k = 0; k < ngpus && !target; k++) {
				if (taken[k] || !gpus[k].usable ||
				    is_source(sources, nsources, gpus[k].uuid))
					continue;
				taken[k] = 1;
				target = gpus[k].uuid;
			}
			if (!target)
				return -ENODEV;
		}
		snprintf(pairs[n].old_uuid, GWP_UUID_LEN, "%s", sources[i]);
		snprintf(pairs[n].new_uuid, GWP_UUID_LEN, "%s", target);
		n++;
	}
	memcpy(ret_pairs, pairs, n * sizeof(pairs[0]));
	*ret_npairs = n;
	return 0;
}
