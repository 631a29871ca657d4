/* SPDX-License-Identifier: MIT */
/* gpuwarm.Status: the daemon, the driver, the GPU table, leases, processes, operations. */
#include <stdio.h>
#include <unistd.h>

#include "clock.h"
#include "fastpath.h"
#include "handlers.h"
#include "imagecache.h"

static const double bucket_bounds[] = GW_OP_BUCKET_BOUNDS;

static cJSON *gpu_json(struct gw_daemon *d, struct gw_gpu *gpu)
{
	cJSON *o = cJSON_CreateObject(), *staging;

	if (!o)
		return NULL;
	if (gw_gpu_accepts_work(gpu))
		gw_gpu_refresh_memory(gpu, d->cuda);
	cJSON_AddNumberToObject(o, "index", gpu->index);
	cJSON_AddStringToObject(o, "uuid", gpu->uuid_text);
	cJSON_AddStringToObject(o, "pci_bus_id", gpu->pci_bus_id);
	cJSON_AddStringToObject(o, "name", gpu->name);
	cJSON_AddNumberToObject(o, "memory_total_mib", (double)(gpu->memory_total >> 20));
	cJSON_AddNumberToObject(o, "memory_free_mib", (double)(gpu->memory_free >> 20));
	cJSON_AddStringToObject(o, "state", gw_gpu_state_name(gpu->state));
	cJSON_AddStringToObject(o, "context", gpu->handles.context ? "primed" : "released");
	staging = cJSON_AddObjectToObject(o, "staging");
	if (staging) {
		cJSON_AddNumberToObject(staging, "bytes",
					(double)gw_staging_pool_bytes(&gpu->handles.staging));
		cJSON_AddNumberToObject(staging, "buffers", gpu->handles.staging.count);
		cJSON_AddNumberToObject(staging, "pin_ms", gpu->handles.staging.pin_ms);
	}
	cJSON_AddNumberToObject(o, "leases", gpu->leases);
	cJSON_AddNumberToObject(o, "in_flight", gpu->in_flight);
	if (gpu->error[0])
		cJSON_AddStringToObject(o, "error", gpu->error);
	else
		cJSON_AddNullToObject(o, "error");
	return o;
}

static int add_daemon(cJSON *result, struct gw_daemon *d, double now)
{
	cJSON *o = cJSON_AddObjectToObject(result, "daemon");

	if (!o)
		return -1;
	cJSON_AddStringToObject(o, "version", GW_VERSION);
	cJSON_AddNumberToObject(o, "protocol", GW_PROTO_VERSION);
	cJSON_AddNumberToObject(o, "pid", getpid());
	cJSON_AddNumberToObject(o, "uptime_s", (now - d->start_ms) / 1e3);
	if (gw_server_socket_path(d->server))
		cJSON_AddStringToObject(o, "socket", gw_server_socket_path(d->server));
	else
		cJSON_AddStringToObject(o, "socket", "(socket activation)");
	cJSON_AddNumberToObject(o, "staging_mib", (double)d->opts.staging_mib);
	cJSON_AddNumberToObject(o, "image_pool_bytes", (double)gw_hostpool_total_bytes(&d->hostpool));
	cJSON_AddNumberToObject(o, "image_pool_free_bytes",
				(double)gw_hostpool_free_bytes(&d->hostpool));
	cJSON_AddNumberToObject(o, "image_pool_pin_ms", d->hostpool.pin_ms);
	cJSON_AddNumberToObject(o, "clients", gw_server_client_count(d->server));
	return 0;
}

static int add_driver(cJSON *result, struct gw_daemon *d)
{
	cJSON *o = cJSON_AddObjectToObject(result, "driver");

	if (!o)
		return -1;
	cJSON_AddBoolToObject(o, "loaded", d->cuda && d->driver_ready);
	if (d->cuda) {
		cJSON_AddStringToObject(o, "library", d->cuda->path);
		cJSON_AddNumberToObject(o, "version", d->cuda->driver_version);
	} else {
		cJSON_AddNullToObject(o, "library");
		cJSON_AddNullToObject(o, "version");
	}
	cJSON_AddBoolToObject(o, "checkpoint_api", gw_cuda_has_checkpoint(d->cuda));
	cJSON_AddBoolToObject(o, "vmm_api", gw_cuda_has_vmm(d->cuda));
	if (d->driver_error[0])
		cJSON_AddStringToObject(o, "error", d->driver_error);
	else
		cJSON_AddNullToObject(o, "error");
	return 0;
}

/* A user sees the details of their own leases only; *ret_others counts the rest. */
static void add_leases(cJSON *result, struct gw_daemon *d, const struct ucred *peer, double now,
		       unsigned *ret_others)
{
	cJSON *leases = cJSON_AddArrayToObject(result, "leases");

	*ret_others = 0;
	for (struct gw_lease *l = d->leases.head; leases && l; l = l->next) {
		cJSON *lo;

		if (peer->uid != 0 && l->owner.uid != peer->uid) {
			(*ret_others)++;
			continue;
		}
		lo = cJSON_CreateObject();
		if (!lo)
			break;
		cJSON_AddNumberToObject(lo, "id", (double)l->id);
		cJSON_AddNumberToObject(lo, "gpu", l->gpu);
		cJSON_AddStringToObject(lo, "uuid", d->gpu_table.gpus[l->gpu].uuid_text);
		cJSON_AddNumberToObject(lo, "client_pid", l->owner.pid);
		cJSON_AddNumberToObject(lo, "client_uid", l->owner.uid);
		cJSON_AddNumberToObject(lo, "age_s", (now - l->created_ms) / 1e3);
		cJSON_AddItemToArray(leases, lo);
	}
}

static void add_operations(cJSON *result, const struct gw_daemon *d)
{
	cJSON *ops = cJSON_AddObjectToObject(result, "operations"), *o, *buckets;

	o = cJSON_AddArrayToObject(result, "duration_buckets_s"); /* upper bounds; then +Inf */
	for (int b = 0; o && b < GW_OP_BUCKETS - 1; b++)
		cJSON_AddItemToArray(o, cJSON_CreateNumber(bucket_bounds[b]));
	for (int k = 0; ops && k < GW_OP_KIND_COUNT; k++) {
		cJSON *so = cJSON_AddObjectToObject(ops, gw_op_kind_name(k));

		if (!so)
			break;
		cJSON_AddNumberToObject(so, "ok", (double)d->stats[k].ok);
		cJSON_AddNumberToObject(so, "failed", (double)d->stats[k].failed);
		cJSON_AddNumberToObject(so, "total_ms", d->stats[k].total_ms);
		cJSON_AddNumberToObject(so, "bytes", (double)d->stats[k].bytes);
		buckets = cJSON_AddArrayToObject(so, "buckets");
		for (int b = 0; buckets && b < GW_OP_BUCKETS; b++)
			cJSON_AddItemToArray(buckets,
					     cJSON_CreateNumber((double)d->stats[k].buckets[b]));
	}
}

void gw_handle_status(struct gw_daemon *d, struct gw_request *req)
{
	cJSON *result = cJSON_CreateObject(), *o, *gpus;
	unsigned other_leases = 0, other_procs = 0;
	double now = gw_now_ms();

	if (!result || add_daemon(result, d, now) < 0 || add_driver(result, d) < 0) {
		cJSON_Delete(result);
		gw_request_fail(req, GW_ERROR_INTERNAL, NULL, "out of memory");
		return;
	}
	gpus = cJSON_AddArrayToObject(result, "gpus");
	for (unsigned i = 0; gpus && i < d->gpu_table.count; i++)
		cJSON_AddItemToArray(gpus, gpu_json(d, &d->gpu_table.gpus[i]));
	add_leases(result, d, &req->peer, now, &other_leases);

	cJSON_AddItemToObject(result, "processes", gw_fast_status(d, &req->peer, &other_procs));
	if (req->peer.uid != 0) {
		o = cJSON_AddObjectToObject(result, "others");
		if (o) {
			cJSON_AddNumberToObject(o, "processes", other_procs);
			cJSON_AddNumberToObject(o, "leases", other_leases);
		}
	}
	if (req->peer.uid == 0) {
		cJSON_AddItemToObject(result, "prefills", gw_fast_prefills_status(d));
		if (d->vramstore.fd >= 0)
			cJSON_AddItemToObject(result, "vram_store",
					      gw_vramstore_status_json(&d->vramstore));
	}
	o = cJSON_AddObjectToObject(result, "image_pool");
	if (o) {
		cJSON_AddNumberToObject(o, "bytes", (double)gw_hostpool_total_bytes(&d->hostpool));
		cJSON_AddNumberToObject(o, "free_bytes", (double)gw_hostpool_free_bytes(&d->hostpool));
		cJSON_AddNumberToObject(o, "pin_ms", d->hostpool.pin_ms);
		cJSON_AddItemToObject(o, "cache", gw_imagecache_status_json(d->imagecache));
	}
	add_operations(result, d);
	gw_request_reply(req, result);
}
