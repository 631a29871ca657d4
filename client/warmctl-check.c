/* SPDX-License-Identifier: MIT */
/* warmctl check: is this host set up for checkpointing CUDA processes through gpu-warmd?
 * The CRIU side (criu found, its version, plugin directory, which CUDA plugin will be used) and
 * whether the daemon answers. */
#include "warmctl.h"

#include <stdio.h>

#include "gpuwarm-check.h"

static const char *str(const cJSON *o, const char *key)
{
	const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, key);

	return cJSON_IsString(v) ? v->valuestring : NULL;
}

static void print_human(const cJSON *report, const char *daemon, const char *daemon_err)
{
	const cJSON *criu = cJSON_GetObjectItemCaseSensitive(report, "criu");
	const cJSON *order = cJSON_GetObjectItemCaseSensitive(report, "load_order"), *item;
	const char *cpath = str(criu, "path"), *cver = str(criu, "version");

	/* without a criu, its error says where it was looked for: print that once */
	if (cpath)
		printf("criu:        %s%s%s%s\n", cpath, cver ? " (" : "", cver ? cver : "",
		       cver ? ")" : "");
	if (cpath && str(criu, "error"))
		printf("             %s\n", str(criu, "error"));
	else if (!cpath)
		printf("criu:        %s\n", str(criu, "error") ? str(criu, "error") :
							   "not found in PATH");
	printf("plugin dir:  %s (%s)\n", str(report, "plugin_dir") ? str(report, "plugin_dir") : "?",
	       str(report, "plugin_dir_from") ? str(report, "plugin_dir_from") : "?");
	printf("load order:");
	cJSON_ArrayForEach(item, order)
		if (cJSON_IsString(item))
			printf(" %s", item->valuestring);
	printf("%s\n", cJSON_GetArraySize(order) ? "" : " (no plugins)");
	printf("gpuwarm:     %s\n", cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(report, "gpuwarm_used")) ?
					"used for CUDA processes" : "NOT used");
	if (str(report, "reason"))
		printf("             %s\n", str(report, "reason"));
	printf("gpu-warmd:   %s\n", daemon ? daemon : daemon_err);
}

int wc_cmd_check(struct wc_ctx *ctx, const struct wc_args *args)
{
	struct gw_client_error err;
	const char *daemon = NULL;
	cJSON *report = NULL;
	int r;

	(void)args;
	if (gw_criu_check(&report) < 0) {
		fprintf(stderr, "warmctl: out of memory\n");
		return WC_EXIT_FAILED;
	}
	if (wc_connect(ctx, &err) == 0)
		daemon = gw_client_server_version(ctx->client);
	if (!ctx->json) {
		print_human(report, daemon, err.message);
		cJSON_Delete(report);
		return fflush(stdout) == 0 ? WC_EXIT_OK : WC_EXIT_FAILED;
	}
	if (!(daemon ? cJSON_AddStringToObject(report, "daemon", daemon) :
		       cJSON_AddNullToObject(report, "daemon"))) {
		cJSON_Delete(report);
		return WC_EXIT_FAILED;
	}
	r = wc_print_json_result(ctx, report);
	cJSON_Delete(report);
	return r;
}
