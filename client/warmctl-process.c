/* SPDX-License-Identifier: MIT */
/* warmctl suspend, resume, state and the single steps lock, checkpoint, restore, unlock. */
#include "warmctl.h"

#include <errno.h>
#include <stdint.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "gw-vimg.h"

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
		if (cJSON_IsNumber(file)) {
			const cJSON *segs = cJSON_GetObjectItemCaseSensitive(result, "segments");
			const cJSON *rate = cJSON_GetObjectItemCaseSensitive(
				result, output == OUTPUT_STEPS &&
						cJSON_GetObjectItemCaseSensitive(result,
										 "file_write_bytes_per_s") ?
					"file_write_bytes_per_s" : "file_read_bytes_per_s");

			printf("  image file %.1f MiB", file->valuedouble / 1048576.0);
			if (cJSON_IsNumber(segs) && segs->valuedouble > 0)
				printf(", data in %.0f segment files", segs->valuedouble);
			if (cJSON_IsNumber(rate))
				printf(", file I/O %.2f GB/s", rate->valuedouble / 1e9);
			printf("\n");
		}
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
 * The image files of suspend/resume --image, opened here and passed to the daemon, which never
 * opens a client's path: FILE (the head: header and tables) and, unless --segments 1, its
 * segment files FILE.seg-0 .. FILE.seg-<N-1> holding the data (docs/image-format.md). Suspend
 * writes them all as .partial files (never over an existing file) and renames them when the
 * daemon is done, the head last, so that FILE appears only complete; on failure they are
 * removed. Resume opens FILE and the segments its header names.
 */
struct image_file {
	char partial[GW_IMAGE_MAX_SEGMENTS + 1][PATH_MAX]; /* [0]: the head; "" when none */
	char final[GW_IMAGE_MAX_SEGMENTS + 1][PATH_MAX];
	int fds[GW_IMAGE_MAX_SEGMENTS + 1];
	unsigned n; /* 1 + segments */
};

static void image_init(struct image_file *f)
{
	memset(f, 0, sizeof(*f));
	for (unsigned i = 0; i <= GW_IMAGE_MAX_SEGMENTS; i++)
		f->fds[i] = -1;
}

static int segment_name(char *buf, size_t len, const char *image, unsigned k, const char *tail)
{
	return (size_t)snprintf(buf, len, "%s.seg-%u%s", image, k, tail) >= len ? -1 : 0;
}

static void image_discard(struct image_file *f)
{
	for (unsigned i = 0; i < f->n; i++) {
		if (f->fds[i] >= 0)
			close(f->fds[i]);
		f->fds[i] = -1;
		if (f->partial[i][0])
			unlink(f->partial[i]);
		f->partial[i][0] = '\0';
	}
}

static int image_create(struct wc_ctx *ctx, const struct wc_args *args, struct image_file *f)
{
	unsigned k = args->segments ? (unsigned)args->segments : WC_DEFAULT_SEGMENTS;

	f->n = k > 1 ? k + 1 : 1;
	for (unsigned i = 0; i < f->n; i++) {
		int bad = i == 0 ? (size_t)snprintf(f->final[0], PATH_MAX, "%s", args->image) >=
						PATH_MAX :
				   segment_name(f->final[i], PATH_MAX, args->image, i - 1, "") < 0;

		if (bad || (size_t)snprintf(f->partial[i], PATH_MAX, "%s.partial", f->final[i]) >=
				   PATH_MAX) {
			f->partial[i][0] = '\0';
			image_discard(f);
			return wc_usage_error(ctx, "--image path too long");
		}
		if (access(f->final[i], F_OK) == 0) {
			f->partial[i][0] = '\0';
			image_discard(f);
			return wc_image_error(ctx, "%s exists; remove it or name another image file",
					      f->final[i]);
		}
		f->fds[i] = open(f->partial[i], O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
		if (f->fds[i] < 0) {
			int e = errno;
			char name[PATH_MAX];

			snprintf(name, sizeof(name), "%s", f->partial[i]);
			f->partial[i][0] = '\0';
			image_discard(f);
			return wc_image_error(ctx, "cannot create %s: %s%s", name, strerror(e),
					      e == EEXIST ? " (left by an earlier suspend that was "
							    "cut short? remove it)" : "");
		}
	}
	return WC_EXIT_OK;
}

int wc_image_open_read(struct wc_ctx *ctx, const char *path, int *fds, unsigned *ret_n)
{
	uint8_t header[GW_VIMG_HEADER_BYTES];
	struct gw_vimg v;
	unsigned n = 0;

	*ret_n = 0;
	fds[n] = open(path, O_RDONLY | O_CLOEXEC);
	if (fds[n] < 0)
		return wc_image_error(ctx, "cannot open the image %s: %s", path, strerror(errno));
	n++;
	/* Its segments, as its header says; a header this cannot read goes to the daemon as it
	 * is, which names what is wrong with it. */
	if (gw_vimg_pread(fds[0], header, sizeof(header), 0) == 0 &&
	    gw_vimg_decode_header(&v, header, sizeof(header), NULL, 0) == 0) {
		for (unsigned k = 0; k < v.nsegments; k++) {
			char name[PATH_MAX];
			int e = ENAMETOOLONG;

			if (segment_name(name, sizeof(name), path, k, "") == 0) {
				fds[n] = open(name, O_RDONLY | O_CLOEXEC);
				if (fds[n] >= 0) {
					n++;
					continue;
				}
				e = errno;
			}
			while (n > 0)
				close(fds[--n]);
			return wc_image_error(ctx, "cannot open %s, segment %u of the image %s (of "
					      "%u segments): %s", name, k, path, v.nsegments,
					      strerror(e));
		}
	}
	*ret_n = n;
	return WC_EXIT_OK;
}

static int image_open(struct wc_ctx *ctx, const struct wc_args *args, bool suspend,
		      struct image_file *f)
{
	image_init(f);
	if (!args->image)
		return WC_EXIT_OK;
	if (suspend)
		return image_create(ctx, args, f);
	return wc_image_open_read(ctx, args->image, f->fds, &f->n);
}

static int image_close(const struct wc_ctx *ctx, struct image_file *f, int code)
{
	for (unsigned i = 0; i < f->n; i++) {
		if (f->fds[i] >= 0)
			close(f->fds[i]);
		f->fds[i] = -1;
	}
	if (!f->partial[0][0])
		return code;
	if (code != WC_EXIT_OK) {
		image_discard(f);
		return code;
	}
	/* The segments first, the head last: FILE exists only with all its segments. */
	for (unsigned i = f->n; i-- > 0;) {
		if (rename(f->partial[i], f->final[i]) < 0)
			return wc_image_error(ctx, "the image is complete in %s, but renaming it to "
					      "%s failed: %s", f->partial[i], f->final[i],
					      strerror(errno));
	}
	return code;
}

/* "image_fd": 0 and "segment_fds": [1 .. n-1] */
static int image_params(cJSON *params, const struct image_file *f)
{
	cJSON *list;

	if (f->n < 2)
		return 0;
	list = cJSON_AddArrayToObject(params, "segment_fds");
	for (unsigned i = 1; list && i < f->n; i++)
		if (!cJSON_AddItemToArray(list, cJSON_CreateNumber(i)))
			return -1;
	return list ? 0 : -1;
}

/* A progress line on the terminal, rewritten in place: what runs, bytes, rate, time left. */
struct progress_line {
	const char *what;
	bool shown;
};

static void show_progress(void *data, const cJSON *p)
{
	struct progress_line *line = data;
	const cJSON *step = cJSON_GetObjectItemCaseSensitive(p, "step");
	double done = cJSON_GetNumberValue(cJSON_GetObjectItemCaseSensitive(p, "done_bytes"));
	double total = cJSON_GetNumberValue(cJSON_GetObjectItemCaseSensitive(p, "total_bytes"));
	double ms = cJSON_GetNumberValue(cJSON_GetObjectItemCaseSensitive(p, "elapsed_ms"));
	double rate = ms > 0 && done > 0 ? done / (ms / 1e3) : 0;
	char eta[32] = "";

	if (done != done || total != total || ms != ms) /* NaN: members missing */
		return;
	if (rate > 0 && total > done)
		snprintf(eta, sizeof(eta), ", %.1f s left", (total - done) / rate);
	fprintf(stderr, "\r%s: %-10s %7.2f of %.2f GiB, %5.1f GB/s%s   ", line->what,
		cJSON_IsString(step) ? step->valuestring : "?", done / 1073741824.0,
		total / 1073741824.0, rate / 1e9, eta);
	fflush(stderr);
	line->shown = true;
}

static int process_command(struct wc_ctx *ctx, const struct wc_args *args, const char *method,
			   bool restore_options, enum output output)
{
	cJSON *params = pid_params(args, restore_options), *result = NULL;
	struct progress_line line = { NULL, false };
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
	if (image_params(params, &image) < 0) {
		cJSON_Delete(params);
		image_close(ctx, &image, WC_EXIT_FAILED);
		fprintf(stderr, "warmctl: out of memory\n");
		return WC_EXIT_FAILED;
	}
	snprintf(what, sizeof(what), "%s pid %ld", ctx->cmd->name, args->pid);
	/* Long operations report progress on a terminal; scripts (--json, a pipe) get none. */
	if (output == OUTPUT_STEPS && !ctx->json && isatty(STDERR_FILENO)) {
		line.what = what;
		cJSON_AddBoolToObject(params, "progress", 1);
		ctx->progress_fn = show_progress;
		ctx->progress_data = &line;
	}
	r = wc_call_fds(ctx, method, params, image.n ? image.fds : NULL, image.n, what, &result);
	ctx->progress_fn = NULL;
	ctx->progress_data = NULL;
	if (line.shown)
		fputc('\n', stderr);
	cJSON_Delete(params);
	r = image_close(ctx, &image, r);
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
