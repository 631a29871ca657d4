/* SPDX-License-Identifier: MIT */
/*
 * warmctl images: the daemon's RAM cache of image files (gpuwarm.Images, docs/protocol.md).
 *   images [list]          the entries this user may see (root: all), and the cache's figures
 *   images drop ID|--all   drop entries (yours; root: any)
 *   images load FILE       preload an image file (and its segment files) into the cache
 */
#include "warmctl.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "gw-vimg.h"

const char wc_help_images[] =
	"gpu-warmd can keep the data of VRAM image files in its pinned image pool\n"
	"(gpu-warmd --image-cache-mib): a suspend into a file caches it as well, and a\n"
	"resume of exactly that file on this host then fills VRAM from RAM. An entry\n"
	"serves only the files it was read from, unchanged (device, inode, size, owner,\n"
	"modification and change times of the file and of each segment file, and the\n"
	"image's id): a file written, touched or replaced since is read from disk.\n"
	"\n"
	"  images [list]       list the entries (yours; root: all) and the cache's\n"
	"                      size, limit, hits, misses and evictions\n"
	"  images drop ID      drop entry ID (yours; root: any)\n"
	"  images drop --all   drop every entry you may drop\n"
	"  images load FILE    read FILE (and FILE.seg-N) into the cache ahead of\n"
	"                      restores: a golden image for many restores. Needs root\n"
	"                      or the file's owner. Waits until it is read.\n"
	"\nOptions:\n"
	"  --all            with drop: every entry you may drop\n"
	"  --timeout S      how long to wait for the daemon's reply, in seconds (default 300)\n";

static int images_call(struct wc_ctx *ctx, cJSON *params, const int *fds, unsigned nfds,
		       cJSON **ret_result)
{
	int r;

	if (!params) {
		fprintf(stderr, "warmctl: out of memory\n");
		return WC_EXIT_FAILED;
	}
	r = wc_call_fds(ctx, GW_METHOD_IMAGES, params, fds, nfds, "images", ret_result);
	cJSON_Delete(params);
	return r;
}

static double num(const cJSON *o, const char *key)
{
	double v = 0;

	wc_get_double(o, key, &v);
	return v;
}

static void print_list(const cJSON *result)
{
	const cJSON *entries = cJSON_GetObjectItemCaseSensitive(result, "entries");
	const cJSON *stats = cJSON_GetObjectItemCaseSensitive(result, "stats");
	const cJSON *others = cJSON_GetObjectItemCaseSensitive(result, "others");
	const cJSON *e;
	struct wc_table *t = wc_table_new(8);
	char cells[8][64];
	const char *row[8] = { "ID", "OWNER", "STATE", "ORIGIN", "DATA", "HITS", "IN USE",
			       "IMAGE ID" };

	printf("image cache: %.0f entries, %.1f MiB of %.1f MiB; hits %.0f, misses %.0f, "
	       "evictions %.0f\n", num(stats, "entries"), num(stats, "bytes") / 1048576.0,
	       num(stats, "limit_bytes") / 1048576.0, num(stats, "hits"), num(stats, "misses"),
	       num(stats, "evictions"));
	if (!cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(stats, "enabled")))
		printf("(off: gpu-warmd runs without --image-cache-mib)\n");
	if (t && cJSON_GetArraySize(entries) > 0) {
		wc_table_add(t, row);
		cJSON_ArrayForEach(e, entries) {
			wc_num(e, "id", 0, cells[0], sizeof(cells[0]));
			wc_num(e, "owner_uid", 0, cells[1], sizeof(cells[1]));
			wc_str(e, "state", cells[2], sizeof(cells[2]));
			wc_str(e, "origin", cells[3], sizeof(cells[3]));
			snprintf(cells[4], sizeof(cells[4]), "%.1f MiB",
				 num(e, "data_bytes") / 1048576.0);
			wc_num(e, "hits", 0, cells[5], sizeof(cells[5]));
			wc_num(e, "in_use", 0, cells[6], sizeof(cells[6]));
			wc_str(e, "image_id", cells[7], sizeof(cells[7]));
			for (unsigned i = 0; i < 8; i++)
				row[i] = cells[i];
			wc_table_add(t, row);
		}
		wc_table_print(t, "  ");
	}
	wc_table_free(t);
	if (others && num(others, "entries") > 0)
		printf("(and %.0f entries of other users)\n", num(others, "entries"));
}

static int images_load(struct wc_ctx *ctx, const char *path, cJSON **ret_result)
{
	int fds[1 + GW_VIMG_MAX_SEGMENTS];
	cJSON *params = cJSON_CreateObject(), *list;
	unsigned n = 0;
	int r;

	if (!params)
		return images_call(ctx, NULL, NULL, 0, ret_result);
	r = wc_image_open_read(ctx, path, fds, &n);
	if (r != WC_EXIT_OK) {
		cJSON_Delete(params);
		return r;
	}
	cJSON_AddStringToObject(params, "action", "load");
	cJSON_AddNumberToObject(params, "image_fd", 0);
	if (n > 1) {
		list = cJSON_AddArrayToObject(params, "segment_fds");
		for (unsigned i = 1; list && i < n; i++)
			cJSON_AddItemToArray(list, cJSON_CreateNumber(i));
	}
	r = images_call(ctx, params, fds, n, ret_result);
	for (unsigned i = 0; i < n; i++)
		close(fds[i]);
	return r;
}

static int images_drop(struct wc_ctx *ctx, const struct wc_args *args, cJSON **ret_result)
{
	cJSON *params = cJSON_CreateObject();
	uint64_t id = 0;

	if (args->all == (args->nwords > 1)) {
		cJSON_Delete(params);
		return wc_usage_error(ctx, "drop wants an entry's ID or --all");
	}
	if (!args->all && wc_parse_u64(args->words[1], 1, UINT64_C(1) << 52, &id) < 0) {
		cJSON_Delete(params);
		return wc_usage_error(ctx, "invalid ID '%s': expected an entry's id (warmctl images)",
				      args->words[1]);
	}
	if (params) {
		cJSON_AddStringToObject(params, "action", "drop");
		if (args->all)
			cJSON_AddBoolToObject(params, "all", 1);
		else
			cJSON_AddNumberToObject(params, "id", (double)id);
	}
	return images_call(ctx, params, NULL, 0, ret_result);
}

int wc_cmd_images(struct wc_ctx *ctx, const struct wc_args *args)
{
	const char *action = args->nwords ? args->words[0] : "list";
	cJSON *params, *result = NULL;
	int r;

	if (args->all && strcmp(action, "drop") != 0)
		return wc_usage_error(ctx, "--all is for drop");
	if (strcmp(action, "list") == 0) {
		if (args->nwords > 1)
			return wc_usage_error(ctx, "unexpected argument '%s'", args->words[1]);
		params = cJSON_CreateObject();
		if (params)
			cJSON_AddStringToObject(params, "action", "list");
		r = images_call(ctx, params, NULL, 0, &result);
	} else if (strcmp(action, "drop") == 0) {
		r = images_drop(ctx, args, &result);
	} else if (strcmp(action, "load") == 0) {
		if (args->nwords != 2)
			return wc_usage_error(ctx, "load wants the image FILE");
		r = images_load(ctx, args->words[1], &result);
	} else {
		return wc_usage_error(ctx, "unknown images action '%s' (list, drop or load)",
				      action);
	}
	if (r != WC_EXIT_OK)
		return r;
	if (ctx->json)
		r = wc_print_json_result(ctx, result);
	else if (strcmp(action, "list") == 0)
		print_list(result);
	else if (strcmp(action, "drop") == 0)
		printf("dropped %.0f entries\n", num(result, "dropped"));
	else
		printf("%s entry %.0f: %.1f MiB of data in %.0f ms\n",
		       cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(result, "already")) ?
			       "already cached as" : "cached as",
		       num(result, "id"), num(result, "data_bytes") / 1048576.0,
		       num(result, "duration_ms"));
	cJSON_Delete(result);
	return r;
}
