/* SPDX-License-Identifier: MIT */
/* warmctl suspend, resume, state and the single steps lock, checkpoint, restore, unlock. */
#include "warmctl.h"

#include <stdio.h>

enum output {
	OUTPUT_STATE, /* pid, state, restore_tid */
	OUTPUT_STEP,  /* pid, state, duration_ms */
	OUTPUT_STEPS, /* pid, state, path, duration_ms, steps[] */
};

static cJSON *pid_params(const struct wc_args *args, bool restore_options)
{
	cJSON *params = cJSON_CreateObject(), *pairs;

	if (!params || !cJSON_AddNumberToObject(params, "pid", (double)args->pid))
		goto fail;
	if (args->op_timeout_ms &&
	    !cJSON_AddNumberToObject(params, "timeout_ms", args->op_timeout_ms))
		goto fail;
	if (!restore_options)
		return params;
	if (args->gpu[0] && !cJSON_AddStringToObject(params, "gpu", args->gpu))
		goto fail;
	if (args->npairs == 0)
		return params;
	pairs = cJSON_AddArrayToObject(params, "gpu_pairs");
	if (!pairs)
		goto fail;
	for (size_t i = 0; i < args->npairs; i++) {
		const char *pair[2] = { args->pairs[i].old_uuid, args->pairs[i].new_uuid };
		cJSON *item = cJSON_CreateStringArray(pair, 2);

		if (!item || !cJSON_AddItemToArray(pairs, item)) {
			cJSON_Delete(item);
			goto fail;
		}
	}
	return params;
fail:
	cJSON_Delete(params);
	return NULL;
}

static void print_human(const cJSON *result, enum output output)
{
	const cJSON *steps = cJSON_GetObjectItemCaseSensitive(result, "steps"), *step;
	char pid[32], state[64], extra[64], ms[48];
	struct wc_table *t;

	wc_str(result, "state", state, sizeof(state));
	wc_num(result, "pid", 0, pid, sizeof(pid));
	switch (output) {
	case OUTPUT_STATE:
		printf("pid %s: %s, restore thread %s\n", pid, state,
		       wc_num(result, "restore_tid", 0, extra, sizeof(extra)));
		return;
	case OUTPUT_STEP:
		printf("pid %s: %s in %s ms\n", pid, state,
		       wc_num(result, "duration_ms", 1, ms, sizeof(ms)));
		return;
	case OUTPUT_STEPS:
		printf("pid %s: %s in %s ms (path: %s)\n", pid, state,
		       wc_num(result, "duration_ms", 1, ms, sizeof(ms)),
		       wc_str(result, "path", extra, sizeof(extra)));
		break;
	}
	t = wc_table_new(2);
	if (!t)
		return;
	cJSON_ArrayForEach(step, steps) {
		char name[64], dur[48], cell[64];
		const char *row[2] = { wc_str(step, "step", name, sizeof(name)), cell };

		snprintf(cell, sizeof(cell), "%s ms",
			 wc_num(step, "duration_ms", 1, dur, sizeof(dur)));
		if (wc_table_add(t, row) < 0)
			break;
	}
	wc_table_print(t, "  ");
	wc_table_free(t);
}

static int process_command(struct wc_ctx *ctx, const struct wc_args *args, const char *method,
			   bool restore_options, enum output output)
{
	cJSON *params = pid_params(args, restore_options), *result = NULL;
	char what[64];
	int r;

	if (!params) {
		fprintf(stderr, "warmctl: out of memory\n");
		return WC_EXIT_FAILED;
	}
	snprintf(what, sizeof(what), "%s pid %ld", ctx->cmd->name, args->pid);
	r = wc_call(ctx, method, params, what, &result);
	cJSON_Delete(params);
	if (r != WC_EXIT_OK)
		return r;
	if (ctx->json) {
		r = wc_print_json_result(ctx, result);
	} else {
		print_human(result, output);
		if (fflush(stdout) != 0)
			r = WC_EXIT_FAILED;
	}
	cJSON_Delete(result);
	return r;
}

int wc_cmd_suspend(struct wc_ctx *ctx, const struct wc_args *args)
{
	return process_command(ctx, args, GW_METHOD_SUSPEND, false, OUTPUT_STEPS);
}

int wc_cmd_resume(struct wc_ctx *ctx, const struct wc_args *args)
{
	return process_command(ctx, args, GW_METHOD_RESUME, true, OUTPUT_STEPS);
}

int wc_cmd_state(struct wc_ctx *ctx, const struct wc_args *args)
{
	return process_command(ctx, args, GW_METHOD_PROCESS_STATE, false, OUTPUT_STATE);
}

int wc_cmd_lock(struct wc_ctx *ctx, const struct wc_args *args)
{
	return process_command(ctx, args, GW_METHOD_PROCESS_LOCK, false, OUTPUT_STEP);
}

int wc_cmd_checkpoint(struct wc_ctx *ctx, const struct wc_args *args)
{
	return process_command(ctx, args, GW_METHOD_PROCESS_CHECKPOINT, false, OUTPUT_STEP);
}

int wc_cmd_restore(struct wc_ctx *ctx, const struct wc_args *args)
{
	return process_command(ctx, args, GW_METHOD_PROCESS_RESTORE, true, OUTPUT_STEP);
}

int wc_cmd_unlock(struct wc_ctx *ctx, const struct wc_args *args)
{
	return process_command(ctx, args, GW_METHOD_PROCESS_UNLOCK, false, OUTPUT_STEP);
}
