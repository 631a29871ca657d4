/* SPDX-License-Identifier: MIT */
/*
 * warmctl metrics: the daemon's status as Prometheus text exposition (version 0.0.4), for a
 * node-exporter textfile collector or a scrape wrapper. Names and labels follow DCGM's exporter
 * (gpu, UUID, pci_bus_id, modelName). Always text: it is a format of its own.
 */
#include "warmctl.h"

#include <stdio.h>
#include <string.h>

static double num(const cJSON *o, const char *key)
{
	const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, key);

	return cJSON_IsNumber(v) ? v->valuedouble : 0;
}

static const char *text(const cJSON *o, const char *key)
{
	const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, key);

	return cJSON_IsString(v) ? v->valuestring : "";
}

/* A label value with \, " and newlines escaped as the exposition format wants. */
static void label(const char *s)
{
	for (; *s; s++) {
		if (*s == '\\' || *s == '"')
			putchar('\\');
		if (*s == '\n') {
			fputs("\\n", stdout);
			continue;
		}
		putchar(*s);
	}
}

static void family(const char *name, const char *type, const char *help)
{
	printf("# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

/* The image cache (status "image_pool"."cache"; absent from older daemons). */
static void image_cache_metrics(const cJSON *c)
{
	static const char *const m[][4] = {
		{ "gpuwarm_image_cache_bytes", "gauge", "Image pool memory holding cached files.",
		  "bytes" },
		{ "gpuwarm_image_cache_limit_bytes", "gauge", "--image-cache-mib.", "limit_bytes" },
		{ "gpuwarm_image_cache_entries", "gauge", "Image files cached.", "entries" },
		{ "gpuwarm_image_cache_hits_total", "counter", "Restores filled from the cache.",
		  "hits" },
		{ "gpuwarm_image_cache_misses_total", "counter",
		  "Restores of files the cache did not hold.", "misses" },
		{ "gpuwarm_image_cache_evictions_total", "counter", "Entries evicted for room.",
		  "evictions" },
	};

	if (!cJSON_IsObject(c))
		return;
	for (size_t i = 0; i < sizeof(m) / sizeof(m[0]); i++) {
		family(m[i][0], m[i][1], m[i][2]);
		printf("%s %.0f\n", m[i][0], num(c, m[i][3]));
	}
}

/* {gpu="0",UUID="GPU-..",pci_bus_id="..",modelName=".."[,extra="value"]} */
static void gpu_labels(const cJSON *g, const char *extra, const char *extra_value)
{
	printf("{gpu=\"%d\",UUID=\"", (int)num(g, "index"));
	label(text(g, "uuid"));
	printf("\",pci_bus_id=\"");
	label(text(g, "pci_bus_id"));
	printf("\",modelName=\"");
	label(text(g, "name"));
	if (extra) {
		printf("\",%s=\"", extra);
		label(extra_value);
	}
	printf("\"}");
}

/* One gauge per GPU from the number at object/key of its status entry (object NULL: the
 * entry itself). */
static void per_gpu(const cJSON *gpus, const char *name, const char *help, const char *object,
		    const char *key, double scale)
{
	const cJSON *g;

	family(name, "gauge", help);
	cJSON_ArrayForEach(g, gpus) {
		const cJSON *o = object ? cJSON_GetObjectItemCaseSensitive(g, object) : g;

		fputs(name, stdout);
		gpu_labels(g, NULL, NULL);
		printf(" %.0f\n", num(o, key) * scale);
	}
}

static void operations(const cJSON *ops, const cJSON *bounds)
{
	const cJSON *op;

	family("gpuwarm_operations_total", "counter",
	       "Operations finished, by kind and result.");
	cJSON_ArrayForEach(op, ops) {
		printf("gpuwarm_operations_total{operation=\"%s\",result=\"ok\"} %.0f\n", op->string,
		       num(op, "ok"));
		printf("gpuwarm_operations_total{operation=\"%s\",result=\"failed\"} %.0f\n",
		       op->string, num(op, "failed"));
	}
	family("gpuwarm_operation_duration_seconds", "histogram",
	       "How long operations took, ok or failed.");
	cJSON_ArrayForEach(op, ops) {
		const cJSON *buckets = cJSON_GetObjectItemCaseSensitive(op, "buckets"), *b;
		double cumulative = 0;
		int i = 0;

		cJSON_ArrayForEach(b, buckets) {
			const cJSON *bound = cJSON_GetArrayItem(bounds, i++);

			cumulative += cJSON_IsNumber(b) ? b->valuedouble : 0;
			if (bound)
				printf("gpuwarm_operation_duration_seconds_bucket{operation=\"%s\","
				       "le=\"%g\"} %.0f\n", op->string, bound->valuedouble, cumulative);
		}
		printf("gpuwarm_operation_duration_seconds_bucket{operation=\"%s\",le=\"+Inf\"} %.0f\n",
		       op->string, cumulative);
		printf("gpuwarm_operation_duration_seconds_sum{operation=\"%s\"} %g\n", op->string,
		       num(op, "total_ms") / 1e3);
		printf("gpuwarm_operation_duration_seconds_count{operation=\"%s\"} %.0f\n", op->string,
		       cumulative);
	}
	family("gpuwarm_vram_moved_bytes_total", "counter",
	       "VRAM bytes the daemon copied itself (fast path), by operation.");
	cJSON_ArrayForEach(op, ops)
		printf("gpuwarm_vram_moved_bytes_total{operation=\"%s\"} %.0f\n", op->string,
		       num(op, "bytes"));
}

int wc_cmd_metrics(struct wc_ctx *ctx, const struct wc_args *args)
{
	static const char *const states[] = { GW_GPU_STATE_PRIMING, GW_GPU_STATE_READY,
					      GW_GPU_STATE_DRAINING, GW_GPU_STATE_DRAINED,
					      GW_GPU_STATE_FAILED };
	const cJSON *daemon, *driver, *gpus, *g;
	cJSON *result = NULL;
	int r;

	(void)args;
	r = wc_call(ctx, GW_METHOD_STATUS, NULL, "metrics", &result);
	if (r != WC_EXIT_OK)
		return r;
	daemon = cJSON_GetObjectItemCaseSensitive(result, "daemon");
	driver = cJSON_GetObjectItemCaseSensitive(result, "driver");
	gpus = cJSON_GetObjectItemCaseSensitive(result, "gpus");

	family("gpuwarm_build_info", "gauge", "gpu-warmd's version, protocol and CUDA driver.");
	printf("gpuwarm_build_info{version=\"");
	label(text(daemon, "version"));
	printf("\",protocol=\"%.0f\",cuda_driver_version=\"%.0f\"} 1\n", num(daemon, "protocol"),
	       num(driver, "version"));
	family("gpuwarm_uptime_seconds", "gauge", "Seconds since gpu-warmd started.");
	printf("gpuwarm_uptime_seconds %g\n", num(daemon, "uptime_s"));
	family("gpuwarm_clients", "gauge", "Connected clients.");
	printf("gpuwarm_clients %.0f\n", num(daemon, "clients"));
	family("gpuwarm_leases", "gauge", "GPU leases held.");
	printf("gpuwarm_leases %d\n", cJSON_GetArraySize(cJSON_GetObjectItem(result, "leases")));
	family("gpuwarm_image_pool_bytes", "gauge", "Pinned host memory for VRAM images.");
	printf("gpuwarm_image_pool_bytes %.0f\n", num(daemon, "image_pool_bytes"));
	family("gpuwarm_image_pool_free_bytes", "gauge", "Of it, not holding an image.");
	printf("gpuwarm_image_pool_free_bytes %.0f\n", num(daemon, "image_pool_free_bytes"));
	image_cache_metrics(cJSON_GetObjectItemCaseSensitive(
		cJSON_GetObjectItemCaseSensitive(result, "image_pool"), "cache"));
	family("gpuwarm_processes_registered", "gauge", "Processes whose shim's agent is known.");
	printf("gpuwarm_processes_registered %d\n",
	       cJSON_GetArraySize(cJSON_GetObjectItem(result, "processes")));

	per_gpu(gpus, "gpuwarm_gpu_memory_total_bytes", "GPU memory.", NULL, "memory_total_mib",
		1048576.0);
	per_gpu(gpus, "gpuwarm_gpu_memory_free_bytes", "Free GPU memory, as last read.", NULL,
		"memory_free_mib", 1048576.0);
	per_gpu(gpus, "gpuwarm_gpu_pinned_staging_bytes", "Pinned staging memory held for the GPU.",
		"staging", "bytes", 1);
	per_gpu(gpus, "gpuwarm_gpu_leases", "Leases on the GPU.", NULL, "leases", 1);
	per_gpu(gpus, "gpuwarm_gpu_operations_in_flight", "Operations counted against the GPU.",
		NULL, "in_flight", 1);
	family("gpuwarm_gpu_state", "gauge", "1 for the GPU's drain state, 0 for the others.");
	cJSON_ArrayForEach(g, gpus) {
		for (size_t s = 0; s < sizeof(states) / sizeof(states[0]); s++) {
			printf("gpuwarm_gpu_state");
			gpu_labels(g, "state", states[s]);
			printf(" %d\n", strcmp(text(g, "state"), states[s]) == 0);
		}
	}
	operations(cJSON_GetObjectItemCaseSensitive(result, "operations"),
		   cJSON_GetObjectItemCaseSensitive(result, "duration_buckets_s"));
	cJSON_Delete(result);
	return fflush(stdout) == 0 ? WC_EXIT_OK : WC_EXIT_FAILED;
}
