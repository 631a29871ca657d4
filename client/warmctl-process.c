/* SPDX-License-Identifier: MIT */
/* warmctl suspend, resume, state and the single steps lock, checkpoint, restore, unlock. */
#include "warmctl.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

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
	if (args->image && !cJSON_AddNumberToObject(params, "image_fd", 0))
		goto fail;
	if (args->dense && !cJSON_AddBoolToObject(params, "sparse", 0))
		goto fail;
	if (args->chunk_kib &&
	    !cJSON_AddNumberToObject(params, "chunk_bytes", (double)(args->chunk_kib << 10)))
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
	if (cJSON_IsNumber(cJSON_GetObjectItemCaseSensitive(result, "data_bytes"))) {
		const cJSON *vram = cJSON_GetObjectItemCaseSensitive(result, "vram_bytes");
		const cJSON *data = cJSON_GetObjectItemCaseSensitive(result, "data_bytes");
		const cJSON *file = cJSON_GetObjectItemCaseSensitive(result, "image_bytes");

		printf("  VRAM %.1f MiB: %.1f MiB of data, %.1f MiB of zero chunks not copied; "
		       "image in %s%s\n", vram->valuedouble / 1048576.0,
		       data->valuedouble / 1048576.0,
		       (vram->valuedouble - data->valuedouble) / 1048576.0,
		       wc_str(result, "image", extra, sizeof(extra)),
		       cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(result, "verified")) ?
			       ", checksummed" : "");
		if (cJSON_IsNumber(file))
			printf("  image file %.1f MiB\n", file->valuedouble / 1048576.0);
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

/*
 * The image file of suspend/resume --image, opened here and passed to the daemon, which never
 * opens a client's path. Suspend writes FILE.partial (never an existing file) and renames it when
 * the daemon is done; on failure it is removed.
 */
struct image_file {
	char partial[PATH_MAX];
	int fd;
};

static int image_open(struct wc_ctx *ctx, const struct wc_args *args, bool suspend,
		      struct image_file *f)
{
	f->fd = -1;
	f->partial[0] = '\0';
	if (!args->image)
		return WC_EXIT_OK;
	if (!suspend) {
		f->fd = open(args->image, O_RDONLY | O_CLOEXEC);
		if (f->fd < 0)
			return wc_image_error(ctx, "cannot open the image %s: %s", args->image,
					   strerror(errno));
		return WC_EXIT_OK;
	}
	if (access(args->image, F_OK) == 0)
		return wc_image_error(ctx, "%s exists; remove it or name another image file",
				   args->image);
	if ((size_t)snprintf(f->partial, sizeof(f->partial), "%s.partial", args->image) >=
	    sizeof(f->partial))
		return wc_usage_error(ctx, "--image path too long");
	f->fd = open(f->partial, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
	if (f->fd < 0) {
		int e = errno;

		f->partial[0] = '\0';
		return wc_image_error(ctx, "cannot create %s.partial: %s%s", args->image, strerror(e),
				   e == EEXIST ? " (left by an earlier suspend that was cut short? "
						 "remove it)" : "");
	}
	return WC_EXIT_OK;
}

static int image_close(const struct wc_ctx *ctx, const struct wc_args *args, struct image_file *f,
		       int code)
{
	if (f->fd >= 0)
		close(f->fd);
	if (!f->partial[0])
		return code;
	if (code != WC_EXIT_OK) {
		unlink(f->partial);
		return code;
	}
	if (rename(f->partial, args->image) < 0)
		return wc_image_error(ctx, "the image is complete in %s, but renaming it to %s "
				   "failed: %s", f->partial, args->image, strerror(errno));
	return code;
}

static int process_command(struct wc_ctx *ctx, const struct wc_args *args, const char *method,
			   bool restore_options, enum output output)
{
	cJSON *params = pid_params(args, restore_options), *result = NULL;
	struct image_file image;
	char what[64];
	int r;

	if (!params) {
		fprintf(stderr, "warmctl: out of memory\n");
		return WC_EXIT_FAILED;
	}
	r = image_open(ctx, args, strcmp(method, GW_METHOD_SUSPEND) == 0, &image);
	if (r != WC_EXIT_OK) {
		cJSON_Delete(params);
		return r;
	}
	snprintf(what, sizeof(what), "%s pid %ld", ctx->cmd->name, args->pid);
	r = wc_call_fds(ctx, method, params, image.fd >= 0 ? &image.fd : NULL,
			image.fd >= 0 ? 1 : 0, what, &result);
	cJSON_Delete(params);
	r = image_close(ctx, args, &image, r);
	if (r != WC_EXIT_OK) {
		cJSON_Delete(result);
		return r;
	}
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
