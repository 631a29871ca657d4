/* SPDX-License-Identifier: MIT */
/* warmctl version: ours always, the daemon's when it answers the hello. */
#include "warmctl.h"

#include <stdio.h>

int wc_cmd_version(struct wc_ctx *ctx, const struct wc_args *args)
{
	struct gw_client_error err;
	const char *daemon = NULL;
	cJSON *result;
	int r;

	(void)args;
	if (wc_connect(ctx, &err) == 0)
		daemon = gw_client_server_version(ctx->client);

	if (!ctx->json) {
		printf("warmctl %s\n", GW_VERSION);
		if (daemon)
			printf("daemon  %s\n", daemon);
		else
			printf("daemon  not reachable: %s\n", err.message);
		return fflush(stdout) == 0 ? WC_EXIT_OK : WC_EXIT_FAILED;
	}
	result = cJSON_CreateObject();
	if (!result || !cJSON_AddStringToObject(result, "warmctl", GW_VERSION) ||
	    !(daemon ? cJSON_AddStringToObject(result, "daemon", daemon) :
		       cJSON_AddNullToObject(result, "daemon"))) {
		cJSON_Delete(result);
		fprintf(stderr, "warmctl: out of memory\n");
		return WC_EXIT_FAILED;
	}
	r = wc_print_json_result(ctx, result);
	cJSON_Delete(result);
	return r;
}
