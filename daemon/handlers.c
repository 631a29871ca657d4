/* SPDX-License-Identifier: MIT */
/*
 * The dispatch table, and the methods on the GPU table and leases (status and process methods
 * are in handlers-status.c and handlers-process.c). Every member of params is untrusted and
 * checked here.
 */
#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "auth.h"
#include "clock.h"
#include "fastpath.h"
#include "handlers.h"
#include "imagecache-ops.h"
#include "log.h"

#define GW_DRAIN_DEFAULT_TIMEOUT_MS 30000

enum handler_flags {
	NEEDS_ROOT = 1 << 0,
	PROCESS_OP = 1 << 1, /* gw_handle_process_op() of kind */
};

struct handler {
	const char *method;
	void (*fn)(struct gw_daemon *d, struct gw_request *req);
	unsigned flags;
	enum gw_op_kind kind;
};

/* ---- params ---- */

/* params "gpus": absent -> every GPU; else each selector must resolve. */
static int parse_gpu_list(struct gw_daemon *d, struct gw_request *req, uint64_t *ret_mask)
{
	const cJSON *array, *item;
	uint64_t mask = 0;
	int r;

	r = gw_json_get_string_array(req->msg.body, "gpus", GW_GPU_MAX, &array);
	if (r == -ENOENT) {
		*ret_mask = gw_gpu_table_all(&d->gpu_table);
		return 0;
	}
	if (r < 0) {
		gw_request_fail(req, GW_ERROR_INVALID_REQUEST, NULL,
				"\"gpus\" must be an array of at most %d GPU selectors", GW_GPU_MAX);
		return r;
	}
	cJSON_ArrayForEach(item, array) {
		struct gw_gpu *gpu = gw_gpu_find(d->gpu_table.gpus, d->gpu_table.count,
						 item->valuestring);

		if (!gpu) {
			gw_request_fail(req, GW_ERROR_NO_SUCH_GPU, NULL,
					"no GPU matches \"%.64s\" (give an index, a UUID or a PCI "
					"bus id; `warmctl status` lists them)",
					item->valuestring);
			return -ENODEV;
		}
		mask |= (uint64_t)1 << gpu->index;
	}
	*ret_mask = mask;
	return 0;
}

/* ---- methods ---- */

static void handle_drain(struct gw_daemon *d, struct gw_request *req)
{
	uint64_t mask;
	unsigned timeout_ms;
	int wait = 1, r;

	if (parse_gpu_list(d, req, &mask) < 0 ||
	    gw_handlers_parse_timeout(req, GW_DRAIN_DEFAULT_TIMEOUT_MS, GW_TIMEOUT_MAX_MS, &timeout_ms) < 0)
		return;
	r = gw_json_get_bool(req->msg.body, "wait", &wait);
	if (r < 0 && r != -ENOENT) {
		gw_request_fail(req, GW_ERROR_INVALID_REQUEST, NULL, "\"wait\" must be a boolean");
		return;
	}
	gw_notice("drain of %s asked by uid %u pid %d", mask == gw_gpu_table_all(&d->gpu_table) ? "all GPUs" :
		  "some GPUs", req->peer.uid, req->peer.pid);
	gw_gpu_table_drain(&d->gpu_table, mask);
	if (!wait) {
		gw_request_reply(req, gw_handlers_gpu_states(&d->gpu_table, mask));
		return;
	}
	if (d->wait_gpus(d, req, mask, GW_WAIT_DRAINED, timeout_ms) < 0)
		gw_request_fail(req, GW_ERROR_INTERNAL, NULL, "out of memory");
}

static void handle_undrain(struct gw_daemon *d, struct gw_request *req)
{
	uint64_t mask;

	if (parse_gpu_list(d, req, &mask) < 0)
		return;
	gw_notice("undrain asked by uid %u pid %d", req->peer.uid, req->peer.pid);
	gw_gpu_table_undrain(&d->gpu_table, mask);
	if (d->wait_gpus(d, req, mask, GW_WAIT_READY, GW_TIMEOUT_MAX_MS) < 0)
		gw_request_fail(req, GW_ERROR_INTERNAL, NULL, "out of memory");
}

static void handle_lease_acquire(struct gw_daemon *d, struct gw_request *req)
{
	const char *selector = NULL;
	struct gw_gpu *gpu = NULL;
	struct gw_lease *lease;
	uint64_t min_free_mib = 0;
	cJSON *result, *g;
	int r;

	r = gw_json_get_string(req->msg.body, "gpu", 128, &selector);
	if (r < 0 && r != -ENOENT)
		goto bad;
	r = gw_json_get_u64(req->msg.body, "min_free_mib", 0, UINT32_MAX, &min_free_mib);
	if (r < 0 && r != -ENOENT)
		goto bad;
	if (selector) {
		gpu = gw_gpu_find(d->gpu_table.gpus, d->gpu_table.count, selector);
		if (!gpu) {
			gw_request_fail(req, GW_ERROR_NO_SUCH_GPU, NULL, "no GPU matches \"%s\"",
					selector);
			return;
		}
		if (!gw_gpu_accepts_work(gpu)) {
			gw_request_fail(req, GW_ERROR_DRAINING, NULL, "GPU %u is %s", gpu->index,
					gw_gpu_state_name(gpu->state));
			return;
		}
	} else {
		/* The ready GPU with enough free memory and the fewest leases, then most free. */
		for (unsigned i = 0; i < d->gpu_table.count; i++) {
			struct gw_gpu *c = &d->gpu_table.gpus[i];

			if (!gw_gpu_accepts_work(c))
				continue;
			gw_gpu_refresh_memory(c, d->cuda);
			if ((c->memory_free >> 20) < min_free_mib)
				continue;
			if (!gpu || c->leases < gpu->leases ||
			    (c->leases == gpu->leases && c->memory_free > gpu->memory_free))
				gpu = c;
		}
		if (!gpu) {
			gw_request_fail(req, GW_ERROR_NO_GPU_AVAILABLE, NULL,
					"no ready GPU has %llu MiB free (%u GPUs known)",
					(unsigned long long)min_free_mib, d->gpu_table.count);
			return;
		}
	}
	r = gw_lease_add(&d->leases, gpu->index, req->conn, &req->peer, gw_now_ms(), &lease);
	if (r < 0) {
		gw_request_fail(req, GW_ERROR_LIMIT, NULL, "too many leases (%d per connection, %d "
				"in all)", GW_LEASES_PER_CONN_MAX, GW_LEASES_MAX);
		return;
	}
	gw_gpu_lease_add(&d->gpu_table, gpu->index);
	result = cJSON_CreateObject();
	g = result ? cJSON_AddObjectToObject(result, "gpu") : NULL;
	if (!g) {
		cJSON_Delete(result);
		gw_gpu_lease_drop(&d->gpu_table, gpu->index);
		gw_lease_remove(&d->leases, lease);
		gw_request_fail(req, GW_ERROR_INTERNAL, NULL, "out of memory");
		return;
	}
	cJSON_AddNumberToObject(result, "lease", (double)lease->id);
	cJSON_AddNumberToObject(g, "index", gpu->index);
	cJSON_AddStringToObject(g, "uuid", gpu->uuid_text);
	cJSON_AddStringToObject(g, "pci_bus_id", gpu->pci_bus_id);
	gw_info("lease %llu on GPU %u for pid %d", (unsigned long long)lease->id, gpu->index,
		req->peer.pid);
	gw_request_reply(req, result);
	gw_gpu_table_changed(&d->gpu_table);
	return;
bad:
	gw_request_fail(req, GW_ERROR_INVALID_REQUEST, NULL,
			"\"gpu\" must be a GPU selector string and \"min_free_mib\" an integer");
}

static void drop_lease(struct gw_daemon *d, struct gw_lease *lease)
{
	gw_gpu_lease_drop(&d->gpu_table, gw_lease_remove(&d->leases, lease));
}

static void handle_lease_release(struct gw_daemon *d, struct gw_request *req)
{
	struct gw_lease *lease;
	uint64_t id;

	if (gw_json_get_u64(req->msg.body, "lease", 1, UINT64_MAX >> 11, &id) < 0) {
		gw_request_fail(req, GW_ERROR_INVALID_REQUEST, NULL, "\"lease\" must be a lease id");
		return;
	}
	lease = gw_lease_find(&d->leases, id);
	if (!lease || (lease->conn != req->conn && req->peer.uid != 0 &&
		       lease->owner.uid != req->peer.uid)) {
		gw_request_fail(req, GW_ERROR_NO_SUCH_LEASE, NULL, "no lease %llu of yours",
				(unsigned long long)id);
		return;
	}
	drop_lease(d, lease);
	gw_request_reply(req, NULL);
	gw_gpu_table_changed(&d->gpu_table);
}

#define METHOD(m, f, fl) { .method = m, .fn = f, .flags = fl }
#define PROCESS(m, k) { .method = m, .flags = PROCESS_OP, .kind = k }
static const struct handler handlers[] = {
	METHOD(GW_METHOD_STATUS, gw_handle_status, 0),
	METHOD(GW_METHOD_DRAIN, handle_drain, NEEDS_ROOT),
	METHOD(GW_METHOD_UNDRAIN, handle_undrain, NEEDS_ROOT),
	METHOD(GW_METHOD_LEASE_ACQUIRE, handle_lease_acquire, 0),
	METHOD(GW_METHOD_LEASE_RELEASE, handle_lease_release, 0),
	METHOD(GW_METHOD_PROCESS_STATE, gw_handle_process_state, 0),
	PROCESS(GW_METHOD_PROCESS_LOCK, GW_OP_LOCK),
	PROCESS(GW_METHOD_PROCESS_CHECKPOINT, GW_OP_CHECKPOINT),
	PROCESS(GW_METHOD_PROCESS_RESTORE, GW_OP_RESTORE),
	PROCESS(GW_METHOD_PROCESS_UNLOCK, GW_OP_UNLOCK),
	PROCESS(GW_METHOD_SUSPEND, GW_OP_SUSPEND),
	PROCESS(GW_METHOD_RESUME, GW_OP_RESUME),
	METHOD(GW_METHOD_PREFILL, gw_handle_prefill, NEEDS_ROOT),
	METHOD(GW_METHOD_IMAGES, gw_imagecache_handle, 0), /* imagecache-handlers.c */
	METHOD(GW_METHOD_AGENT_ATTACH, gw_fast_handle_attach, 0),
	METHOD(GW_METHOD_AGENT_UPDATE, gw_fast_handle_update, 0),
};
#undef METHOD
#undef PROCESS

void gw_handlers_dispatch(void *data, struct gw_request *req)
{
	struct gw_daemon *d = data;

	if (d->stopping) {
		gw_request_fail(req, GW_ERROR_INTERNAL, NULL, "gpu-warmd is stopping");
		return;
	}
	for (size_t i = 0; i < sizeof(handlers) / sizeof(handlers[0]); i++) {
		if (strcmp(handlers[i].method, req->msg.method) != 0)
			continue;
		if ((handlers[i].flags & NEEDS_ROOT) && !gw_auth_is_root(&req->peer)) {
			gw_warn("refused %s for uid %u pid %d: needs root", req->msg.method,
				req->peer.uid, req->peer.pid);
			gw_request_fail(req, GW_ERROR_PERMISSION_DENIED, NULL,
					"%s needs root (uid %u asked)", req->msg.method,
					req->peer.uid);
			return;
		}
		if (handlers[i].flags & PROCESS_OP)
			gw_handle_process_op(d, req, handlers[i].kind);
		else
			handlers[i].fn(d, req);
		return;
	}
	gw_request_fail(req, GW_ERROR_UNKNOWN_METHOD, NULL, "unknown method \"%s\"",
			req->msg.method);
}

void gw_handlers_conn_closed(void *data, struct gw_conn *conn)
{
	struct gw_daemon *d = data;
	struct gw_lease *l = d->leases.head, *next;
	int dropped = 0;

	gw_fast_conn_closed(d, conn);
	for (; l; l = next) {
		next = l->next;
		if (l->conn != conn)
			continue;
		gw_info("lease %llu on GPU %u ends: its client (pid %d) disconnected",
			(unsigned long long)l->id, l->gpu, l->owner.pid);
		drop_lease(d, l);
		dropped = 1;
	}
	if (dropped && !d->stopping)
		gw_gpu_table_changed(&d->gpu_table);
}

int gw_handlers_conn_pinned(void *data, struct gw_conn *conn)
{
	struct gw_daemon *d = data;

	/* Lease holders and agents with VRAM to move stay connected however quiet they are; an
	 * agent with nothing (no CUDA at all) is an idle client like any other. */
	return gw_lease_count_conn(&d->leases, conn) > 0 ||
	       gw_fast_agent_pins_conn(gw_conn_get_data(conn));
}
