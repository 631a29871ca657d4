/* SPDX-License-Identifier: MIT */
/*
 * Request handlers: thin adapters from validated JSON params to the daemon's GPU table, leases
 * and process operations. Every member of params is untrusted and checked here.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "auth.h"
#include "clock.h"
#include "daemon.h"
#include "fastpath.h"
#include "gw-vimg.h"
#include "imagecache-ops.h"
#include "imagecache.h"
#include "imagefd.h"
#include "imageio.h"
#include "log.h"
#include "pin.h"

#define GW_TIMEOUT_MAX_MS (24u * 3600 * 1000) /* drain and undrain (root only) */
#define GW_DRAIN_DEFAULT_TIMEOUT_MS 30000
#define GW_LOCK_DEFAULT_TIMEOUT_MS 10000

enum handler_flags {
	NEEDS_ROOT = 1 << 0,
};

struct handler {
	const char *method;
	void (*fn)(struct gw_daemon *d, struct gw_request *req);
	unsigned flags;
};

/* ---- JSON helpers ---- */

static cJSON *gpu_json(struct gw_daemon *d, struct gw_gpu *gpu)
{
	cJSON *o = cJSON_CreateObject(), *staging;

	if (!o)
		return NULL;
	if (gpu->state == GW_GPU_READY)
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

cJSON *gw_handlers_gpu_states(struct gw_daemon *d, uint64_t mask)
{
	cJSON *result = cJSON_CreateObject();
	cJSON *gpus = result ? cJSON_AddArrayToObject(result, "gpus") : NULL;

	for (unsigned i = 0; gpus && i < d->ngpus; i++) {
		cJSON *o;

		if (!(mask & ((uint64_t)1 << i)))
			continue;
		o = cJSON_CreateObject();
		if (!o)
			break;
		cJSON_AddNumberToObject(o, "index", i);
		cJSON_AddStringToObject(o, "uuid", d->gpus[i].uuid_text);
		cJSON_AddStringToObject(o, "state", gw_gpu_state_name(d->gpus[i].state));
		cJSON_AddItemToArray(gpus, o);
	}
	return result;
}

/* params "gpus": absent -> every GPU; else each selector must resolve. */
static int parse_gpu_list(struct gw_daemon *d, struct gw_request *req, uint64_t *ret_mask)
{
	const cJSON *array, *item;
	uint64_t mask = 0;
	int r;

	r = gw_json_get_string_array(req->msg.body, "gpus", GW_GPU_MAX, &array);
	if (r == -ENOENT) {
		*ret_mask = gw_daemon_all_gpus(d);
		return 0;
	}
	if (r < 0) {
		gw_request_fail(req, GW_ERROR_INVALID_REQUEST, NULL,
				"\"gpus\" must be an array of at most %d GPU selectors", GW_GPU_MAX);
		return r;
	}
	cJSON_ArrayForEach(item, array) {
		struct gw_gpu *gpu = gw_gpu_find(d->gpus, d->ngpus, item->valuestring);

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

static int parse_timeout(struct gw_request *req, unsigned def_ms, unsigned max_ms,
			 unsigned *ret_ms)
{
	uint64_t v;
	int r = gw_json_get_u64(req->msg.body, "timeout_ms", 0, max_ms, &v);

	if (r == -ENOENT) {
		*ret_ms = def_ms;
		return 0;
	}
	if (r < 0) {
		gw_request_fail(req, GW_ERROR_INVALID_REQUEST, NULL,
				"\"timeout_ms\" must be an integer from 0 to %u", max_ms);
		return r;
	}
	*ret_ms = (unsigned)v;
	return 0;
}

static const double bucket_bounds[] = GW_OP_BUCKET_BOUNDS;

/* ---- methods ---- */

static void handle_status(struct gw_daemon *d, struct gw_request *req)
{
	cJSON *result = cJSON_CreateObject(), *o, *gpus, *leases, *ops, *buckets;
	unsigned other_leases = 0, other_procs = 0;
	double now = gw_now_ms();

	if (!result)
		goto oom;
	o = cJSON_AddObjectToObject(result, "daemon");
	if (!o)
		goto oom;
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

	o = cJSON_AddObjectToObject(result, "driver");
	if (!o)
		goto oom;
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

	gpus = cJSON_AddArrayToObject(result, "gpus");
	for (unsigned i = 0; gpus && i < d->ngpus; i++)
		cJSON_AddItemToArray(gpus, gpu_json(d, &d->gpus[i]));

	leases = cJSON_AddArrayToObject(result, "leases");
	for (struct gw_lease *l = d->leases.head; leases && l; l = l->next) {
		cJSON *lo;

		/* A user sees the details of their own leases only. */
		if (req->peer.uid != 0 && l->owner.uid != req->peer.uid) {
			other_leases++;
			continue;
		}
		lo = cJSON_CreateObject();
		if (!lo)
			break;
		cJSON_AddNumberToObject(lo, "id", (double)l->id);
		cJSON_AddNumberToObject(lo, "gpu", l->gpu);
		cJSON_AddStringToObject(lo, "uuid", d->gpus[l->gpu].uuid_text);
		cJSON_AddNumberToObject(lo, "client_pid", l->owner.pid);
		cJSON_AddNumberToObject(lo, "client_uid", l->owner.uid);
		cJSON_AddNumberToObject(lo, "age_s", (now - l->created_ms) / 1e3);
		cJSON_AddItemToArray(leases, lo);
	}

	cJSON_AddItemToObject(result, "processes", gw_fast_status(d, &req->peer, &other_procs));
	if (req->peer.uid != 0) {
		o = cJSON_AddObjectToObject(result, "others");
		if (o) {
			cJSON_AddNumberToObject(o, "processes", other_procs);
			cJSON_AddNumberToObject(o, "leases", other_leases);
		}
	}
	if (req->peer.uid == 0)
		cJSON_AddItemToObject(result, "prefills", gw_fast_prefills_status(d));
	o = cJSON_AddObjectToObject(result, "image_pool");
	if (o) {
		cJSON_AddNumberToObject(o, "bytes", (double)gw_hostpool_total_bytes(&d->hostpool));
		cJSON_AddNumberToObject(o, "free_bytes", (double)gw_hostpool_free_bytes(&d->hostpool));
		cJSON_AddNumberToObject(o, "pin_ms", d->hostpool.pin_ms);
		cJSON_AddItemToObject(o, "cache", gw_imagecache_status_json(d->imagecache));
	}

	ops = cJSON_AddObjectToObject(result, "operations");
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
	gw_request_reply(req, result);
	return;
oom:
	cJSON_Delete(result);
	gw_request_fail(req, GW_ERROR_INTERNAL, NULL, "out of memory");
}

static void handle_drain(struct gw_daemon *d, struct gw_request *req)
{
	uint64_t mask;
	unsigned timeout_ms;
	int wait = 1, r;

	if (parse_gpu_list(d, req, &mask) < 0 ||
	    parse_timeout(req, GW_DRAIN_DEFAULT_TIMEOUT_MS, GW_TIMEOUT_MAX_MS, &timeout_ms) < 0)
		return;
	r = gw_json_get_bool(req->msg.body, "wait", &wait);
	if (r < 0 && r != -ENOENT) {
		gw_request_fail(req, GW_ERROR_INVALID_REQUEST, NULL, "\"wait\" must be a boolean");
		return;
	}
	gw_notice("drain of %s asked by uid %u pid %d", mask == gw_daemon_all_gpus(d) ? "all GPUs" :
		  "some GPUs", req->peer.uid, req->peer.pid);
	gw_daemon_drain(d, mask);
	if (!wait) {
		gw_request_reply(req, gw_handlers_gpu_states(d, mask));
		return;
	}
	if (gw_daemon_wait(d, req, mask, GW_WAIT_DRAINED, timeout_ms) < 0)
		gw_request_fail(req, GW_ERROR_INTERNAL, NULL, "out of memory");
}

static void handle_undrain(struct gw_daemon *d, struct gw_request *req)
{
	uint64_t mask;

	if (parse_gpu_list(d, req, &mask) < 0)
		return;
	gw_notice("undrain asked by uid %u pid %d", req->peer.uid, req->peer.pid);
	gw_daemon_undrain(d, mask);
	if (gw_daemon_wait(d, req, mask, GW_WAIT_READY, GW_TIMEOUT_MAX_MS) < 0)
		gw_request_fail(req, GW_ERROR_INTERNAL, NULL, "out of memory");
}

static int gpu_accepts_work(const struct gw_gpu *gpu)
{
	return gpu->state == GW_GPU_READY;
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
		gpu = gw_gpu_find(d->gpus, d->ngpus, selector);
		if (!gpu) {
			gw_request_fail(req, GW_ERROR_NO_SUCH_GPU, NULL, "no GPU matches \"%s\"",
					selector);
			return;
		}
		if (!gpu_accepts_work(gpu)) {
			gw_request_fail(req, GW_ERROR_DRAINING, NULL, "GPU %u is %s", gpu->index,
					gw_gpu_state_name(gpu->state));
			return;
		}
	} else {
		/* The ready GPU with enough free memory and the fewest leases, then most free. */
		for (unsigned i = 0; i < d->ngpus; i++) {
			struct gw_gpu *c = &d->gpus[i];

			if (!gpu_accepts_work(c))
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
					(unsigned long long)min_free_mib, d->ngpus);
			return;
		}
	}
	r = gw_lease_add(&d->leases, gpu->index, req->conn, &req->peer, gw_now_ms(), &lease);
	if (r < 0) {
		gw_request_fail(req, GW_ERROR_LIMIT, NULL, "too many leases (%d per connection, %d "
				"in all)", GW_LEASES_PER_CONN_MAX, GW_LEASES_MAX);
		return;
	}
	gpu->leases++;
	result = cJSON_CreateObject();
	g = result ? cJSON_AddObjectToObject(result, "gpu") : NULL;
	if (!g) {
		cJSON_Delete(result);
		gpu->leases--;
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
	gw_daemon_update_status(d);
	return;
bad:
	gw_request_fail(req, GW_ERROR_INVALID_REQUEST, NULL,
			"\"gpu\" must be a GPU selector string and \"min_free_mib\" an integer");
}

static void drop_lease(struct gw_daemon *d, struct gw_lease *lease)
{
	unsigned gpu = gw_lease_remove(&d->leases, lease);

	if (gpu < d->ngpus && d->gpus[gpu].leases > 0)
		d->gpus[gpu].leases--;
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
	gw_daemon_update_status(d);
}

/* Common checks for every call naming a pid: pin the process (a pidfd: what the request acts
 * on from here, whatever its pid names later), may the caller act on it (the ptrace rule), is
 * there a driver. On failure the request is answered and nothing is pinned. */
static int check_pid_call(struct gw_daemon *d, struct gw_request *req, struct gw_pin *ret_pin)
{
	struct gw_pin pin;
	char why[256];
	uint64_t pid;
	int r;

	if (gw_json_get_u64(req->msg.body, "pid", 1, GW_PID_MAX, &pid) < 0) {
		gw_request_fail(req, GW_ERROR_INVALID_REQUEST, NULL,
				"\"pid\" must be an integer from 1 to %d", GW_PID_MAX);
		return -EINVAL;
	}
	r = gw_pin_open((pid_t)pid, &pin);
	if (r < 0) {
		gw_request_fail(req, GW_ERROR_NO_SUCH_PROCESS, NULL, "no process with pid %llu%s",
				(unsigned long long)pid, r == -ESRCH ? "" : " that gpu-warmd can see");
		return r;
	}
	r = gw_auth_may_act(&req->peer, &pin, why, sizeof(why));
	if (r < 0) {
		gw_pin_close(&pin);
		gw_warn("refused: %s", why);
		gw_request_fail(req, GW_ERROR_PERMISSION_DENIED, NULL, "%s", why);
		return r;
	}
	if (!d->cuda || !d->driver_ready || !gw_cuda_has_checkpoint(d->cuda)) {
		gw_pin_close(&pin);
		gw_request_fail(req, GW_ERROR_DRIVER_UNAVAILABLE, NULL, "%s",
				!d->cuda || !d->driver_ready ?
					d->driver_error :
					"this NVIDIA driver has no checkpoint API (cuCheckpointProcess*"
					" needs driver 550 or newer)");
		return -ENODEV;
	}
	*ret_pin = pin;
	return 0;
}

static void handle_process_state(struct gw_daemon *d, struct gw_request *req)
{
	static const char *const names[] = { "running", "locked", "checkpointed", "failed" };
	struct gw_pin pin;
	CUprocessState state;
	cJSON *result;
	char text[160];
	pid_t pid;
	int tid = 0;
	CUresult r;

	if (check_pid_call(d, req, &pin) < 0)
		return;
	pid = pin.pid;
	r = d->cuda->cuCheckpointProcessGetState(pid, &state);
	if (r == CUDA_SUCCESS)
		(void)d->cuda->cuCheckpointProcessGetRestoreThreadId(pid, &tid);
	if (!gw_pin_alive(&pin)) {
		gw_pin_close(&pin);
		gw_request_fail(req, GW_ERROR_NO_SUCH_PROCESS, NULL, "pid %d exited", pid);
		return;
	}
	gw_pin_close(&pin);
	if (r != CUDA_SUCCESS) {
		if (r == CUDA_ERROR_NOT_FOUND)
			gw_request_fail(req, GW_ERROR_NOT_CUDA, NULL,
					"pid %d is not a CUDA process: the driver does not know it",
					pid);
		else
			gw_request_fail(req, GW_ERROR_CUDA, NULL, "cuCheckpointProcessGetState(pid %d): %s",
					pid, gw_cuda_describe(d->cuda, r, text, sizeof(text)));
		return;
	}
	result = cJSON_CreateObject();
	if (result) {
		cJSON_AddNumberToObject(result, "pid", pid);
		cJSON_AddStringToObject(result, "state",
					(unsigned)state < 4 ? names[state] : "unknown");
		cJSON_AddNumberToObject(result, "restore_tid", tid);
		cJSON_AddBoolToObject(result, "busy", gw_ops_pid_busy(d, pid));
	}
	gw_request_reply(req, result);
}

/* Restore target: explicit "gpu_pairs", or "gpu" with the source GPU we recorded at lock. */
static int parse_restore_target(struct gw_daemon *d, struct gw_request *req, pid_t pid,
				struct gw_pid_op_params *p)
{
	const cJSON *pairs = cJSON_GetObjectItemCaseSensitive(req->msg.body, "gpu_pairs");
	const char *selector = NULL;
	struct gw_gpu *target;
	unsigned sources[GW_GPU_MAX], nsources;
	int r;

	if (pairs && !cJSON_IsNull(pairs)) {
		const cJSON *pair;

		if (!cJSON_IsArray(pairs) || cJSON_GetArraySize(pairs) > GW_GPU_MAX)
			goto bad_pairs;
		cJSON_ArrayForEach(pair, pairs) {
			const cJSON *from = cJSON_GetArrayItem(pair, 0), *to = cJSON_GetArrayItem(pair, 1);
			struct gw_gpu *gpu;

			if (!cJSON_IsArray(pair) || cJSON_GetArraySize(pair) != 2 ||
			    !cJSON_IsString(from) || !cJSON_IsString(to) ||
			    gw_cuda_uuid_parse(from->valuestring, &p->pairs[p->npairs].oldUuid) < 0 ||
			    gw_cuda_uuid_parse(to->valuestring, &p->pairs[p->npairs].newUuid) < 0)
				goto bad_pairs;
			gpu = gw_gpu_find_uuid(d->gpus, d->ngpus, &p->pairs[p->npairs].newUuid);
			if (!gpu) {
				gw_request_fail(req, GW_ERROR_NO_SUCH_GPU, NULL,
						"no GPU here has UUID %.64s", to->valuestring);
				return -ENODEV;
			}
			p->gpu_mask |= (uint64_t)1 << gpu->index;
			p->npairs++;
		}
		return 0;
	}
	r = gw_json_get_string(req->msg.body, "gpu", 128, &selector);
	if (r == -ENOENT)
		return 0;
	if (r < 0) {
		gw_request_fail(req, GW_ERROR_INVALID_REQUEST, NULL, "\"gpu\" must be a GPU selector");
		return r;
	}
	target = gw_gpu_find(d->gpus, d->ngpus, selector);
	if (!target) {
		gw_request_fail(req, GW_ERROR_NO_SUCH_GPU, NULL, "no GPU matches \"%s\"", selector);
		return -ENODEV;
	}
	nsources = gw_ops_pid_source_gpus(d, pid, sources, GW_GPU_MAX);
	if (nsources != 1) {
		gw_request_fail(req, GW_ERROR_INVALID_REQUEST, NULL,
				"cannot restore pid %d onto GPU %u: %s; pass explicit pairs "
				"(warmctl resume --gpu-map OLD-UUID=NEW-UUID)",
				pid, target->index,
				nsources == 0 ? "gpu-warmd did not see which GPU it used when it was "
						"locked" :
						"it used several GPUs");
		return -EINVAL;
	}
	/* The driver wants every checkpointed GPU in the list: one pair, source -> target. */
	p->pairs[0].oldUuid = d->gpus[sources[0]].uuid;
	p->pairs[0].newUuid = target->uuid;
	p->npairs = 1;
	p->gpu_mask = (uint64_t)1 << target->index;
	return 0;
bad_pairs:
	gw_request_fail(req, GW_ERROR_INVALID_REQUEST, NULL,
			"\"gpu_pairs\" must be an array of [\"GPU-old-uuid\", \"GPU-new-uuid\"] pairs");
	return -EINVAL;
}

/*
 * "image_fd": the index of an image file among the request's fds. The client opened it, which
 * shows it may write (suspend) or read (resume) it; the daemon never opens a path for a client.
 * Checked as imagefd.h says. Returns the fd, taken from the request, -1 when absent, or < -1 after failing
 * the request.
 */
static int take_image_fd(struct gw_request *req, enum gw_op_kind kind)
{
	const cJSON *item = cJSON_GetObjectItemCaseSensitive(req->msg.body, "image_fd");
	uint64_t index;
	char why[256];
	int fd;

	if (!item)
		return -1;
	if (kind != GW_OP_SUSPEND && kind != GW_OP_RESUME) {
		gw_request_fail(req, GW_ERROR_INVALID_REQUEST, NULL,
				"\"image_fd\" is for Suspend, Resume and Prefill only");
		return -2;
	}
	if (gw_json_get_u64(req->msg.body, "image_fd", 0, GW_FRAME_MAX_FDS - 1, &index) < 0 ||
	    index >= req->nfds || req->fds[index] < 0) {
		gw_request_fail(req, GW_ERROR_INVALID_REQUEST, NULL,
				"\"image_fd\" must index a file descriptor sent with the request "
				"(%u came)", req->nfds);
		return -2;
	}
	fd = req->fds[index];
	if (gw_imagefd_check(fd, &req->peer, kind == GW_OP_SUSPEND ? GW_IMAGEFD_WRITE :
			     GW_IMAGEFD_READ, why, sizeof(why)) < 0) {
		gw_warn("uid %u pid %d: image refused: %s", req->peer.uid, req->peer.pid, why);
		gw_request_fail(req, GW_ERROR_IMAGE, NULL, "%s", why);
		return -2;
	}
	req->fds[index] = -1; /* ours now */
	return fd;
}

/* Fast-path parameters of Suspend: "sparse" (default true), "chunk_bytes" (default the daemon's). */
static int parse_fast_params(struct gw_daemon *d, struct gw_request *req,
			     struct gw_fast_params *f)
{
	uint64_t chunk = d->opts.chunk_kib ? (uint64_t)d->opts.chunk_kib << 10 :
					     GW_VIMG_DEFAULT_CHUNK_BYTES;
	int sparse = 1, r;

	r = gw_json_get_bool(req->msg.body, "sparse", &sparse);
	if (r < 0 && r != -ENOENT) {
		gw_request_fail(req, GW_ERROR_INVALID_REQUEST, NULL, "\"sparse\" must be a boolean");
		return -EINVAL;
	}
	r = gw_json_get_u64(req->msg.body, "chunk_bytes", GW_VIMG_MIN_CHUNK_BYTES,
			    GW_VIMG_MAX_CHUNK_BYTES, &chunk);
	if ((r < 0 && r != -ENOENT) || (chunk & (chunk - 1))) {
		gw_request_fail(req, GW_ERROR_INVALID_REQUEST, NULL,
				"\"chunk_bytes\" must be a power of two from %u to %u",
				GW_VIMG_MIN_CHUNK_BYTES, GW_VIMG_MAX_CHUNK_BYTES);
		return -EINVAL;
	}
	f->sparse = sparse;
	f->chunk_bytes = chunk;
	return 0;
}

/*
 * Resume from CRIU's plugin (root, threads_frozen): the restored process's agent connection,
 * given back at RESTORE_UNIX_SK, was attached on its behalf under the dump's pid ("agent_pid",
 * which may differ from the restored process's host pid in a new pid namespace): bind it to the
 * pinned process now.
 */
static int bind_agent(struct gw_daemon *d, struct gw_request *req, const struct gw_pin *pin,
		      int froze)
{
	uint64_t from = (uint64_t)pin->pid, tid = 0;
	int r;

	r = gw_json_get_u64(req->msg.body, "agent_pid", 1, GW_PID_MAX, &from);
	if (r != -ENOENT && (r < 0 || gw_json_get_u64(req->msg.body, "agent_tid", 1, GW_PID_MAX,
						      &tid) < 0)) {
		gw_request_fail(req, GW_ERROR_INVALID_REQUEST, NULL,
				"\"agent_pid\" and \"agent_tid\" must be pids");
		return -EINVAL;
	}
	if (r == 0 && (!froze || !gw_auth_is_root(&req->peer))) {
		gw_request_fail(req, GW_ERROR_PERMISSION_DENIED, NULL,
				"\"agent_pid\" is for CRIU's plugin (root, with threads_frozen)");
		return -EPERM;
	}
	if (!froze)
		return 0;
	r = gw_fast_bind(d, (pid_t)from, pin, (pid_t)tid);
	if (r == -ENOENT && !cJSON_GetObjectItemCaseSensitive(req->msg.body, "agent_pid"))
		return 0; /* no agent given back on its behalf: the driver path, or bound already */
	if (r < 0) {
		gw_request_fail(req, r == -EBUSY ? GW_ERROR_BUSY : GW_ERROR_AGENT, NULL,
				"cannot give the agent attached under pid %llu to pid %d: %s",
				(unsigned long long)from, pin->pid,
				r == -ENOENT ? "no agent is attached under that pid" :
				r == -EBUSY ? "an operation runs on it" :
				r == -EEXIST ? "pid has an agent already" : strerror(-r));
		return r;
	}
	return 0;
}

/* Why the request may not start now (answered), or 0. */
static int refuse_pid_op(struct gw_daemon *d, struct gw_request *req,
			 const struct gw_pid_op_params *p, const struct gw_fast_params *f)
{
	enum gw_op_kind kind = p->kind;
	pid_t pid = p->pid;

	/* Images are the fast path's: the process must run under the shim. */
	if (f->image_fd >= 0 && !gw_fast_has_agent(d, pid) && !gw_fast_wants_resume(d, pid)) {
		gw_request_fail(req, GW_ERROR_ILLEGAL_STATE, NULL,
				"pid %d has no gpu-warmd agent: VRAM image files are for processes "
				"started with the shim (LD_PRELOAD=libgpuwarm-shim.so); without it, "
				"suspend without --image (the driver keeps the VRAM in the process)",
				pid);
		return -EINVAL;
	}
	if (kind == GW_OP_SUSPEND && f->image_fd >= 0 && !gw_fast_wants_suspend(d, pid)) {
		gw_request_fail(req, GW_ERROR_ILLEGAL_STATE, NULL,
				"pid %d has no VRAM for the fast path to move, or is suspended "
				"already", pid);
		return -EINVAL;
	}
	/* A fast-suspended process's VRAM is in our image: only a fast resume brings it back. */
	if (gw_fast_wants_resume(d, pid) && (kind != GW_OP_RESUME || p->npairs > 0)) {
		gw_request_fail(req, GW_ERROR_ILLEGAL_STATE, NULL,
				"pid %d was suspended through the fast path and gpu-warmd holds its "
				"VRAM: only `warmctl resume %d` (onto the same GPU) can bring it back",
				pid, pid);
		return -EINVAL;
	}
	if (kind == GW_OP_RESUME && (gw_fast_wants_resume(d, pid) || f->image_fd >= 0) &&
	    !gw_fast_has_agent(d, pid)) {
		gw_request_fail(req, GW_ERROR_AGENT, NULL,
				"the agent of pid %d is not connected, so its VRAM cannot be mapped "
				"back yet; it reconnects by itself within seconds: try again",
				pid);
		return -EAGAIN;
	}
	if ((kind == GW_OP_CHECKPOINT ||
	     (kind == GW_OP_SUSPEND && !gw_fast_wants_suspend(d, pid))) &&
	    gw_fast_driver_checkpoint_unsafe(d, pid)) {
		gw_request_fail(req, GW_ERROR_ILLEGAL_STATE, NULL,
				"pid %d maps VRAM that gpu-warmd gave back after a fast resume; the "
				"driver's own checkpoint of such memory cannot be restored (the process "
				"would be stuck), so only the fast path (`warmctl suspend %d` with its "
				"agent attached) may checkpoint it",
				pid, pid);
		return -EINVAL;
	}
	if (gw_ops_pid_busy(d, pid)) {
		gw_request_fail(req, GW_ERROR_BUSY, NULL,
				"another operation on pid %d is in progress", pid);
		return -EBUSY;
	}
	return 0;
}

/* The GPUs the operation counts against for draining: those it names, else every ready one. */
static int pick_gpus(struct gw_daemon *d, struct gw_request *req, struct gw_pid_op_params *p)
{
	if (p->gpu_mask) {
		for (unsigned i = 0; i < d->ngpus; i++)
			if ((p->gpu_mask & ((uint64_t)1 << i)) && !gpu_accepts_work(&d->gpus[i])) {
				gw_request_fail(req, GW_ERROR_DRAINING, NULL,
						"GPU %u is %s: it takes no new operations", i,
						gw_gpu_state_name(d->gpus[i].state));
				return -ENODEV;
			}
		return 0;
	}
	for (unsigned i = 0; i < d->ngpus; i++)
		if (gpu_accepts_work(&d->gpus[i]))
			p->gpu_mask |= (uint64_t)1 << i;
	if (!p->gpu_mask && d->ngpus > 0) {
		gw_request_fail(req, GW_ERROR_DRAINING, NULL,
				"every GPU is drained or draining: no new operations");
		return -ENODEV;
	}
	return 0;
}

/* p->pin and f->image_fd are consumed when the operation starts, left to the caller otherwise. */
static void start_pid_op_with(struct gw_daemon *d, struct gw_request *req,
			      struct gw_pid_op_params *p, struct gw_fast_params *f)
{
	enum gw_op_kind kind = p->kind;
	int r;

	if ((kind == GW_OP_LOCK || kind == GW_OP_SUSPEND) &&
	    parse_timeout(req, GW_LOCK_DEFAULT_TIMEOUT_MS,
			  /* a user's lock holds a worker of the shared ones while it waits */
			  req->peer.uid == 0 ? GW_TIMEOUT_MAX_MS : GW_LOCK_TIMEOUT_MAX_MS,
			  &p->timeout_ms) < 0)
		return;
	if ((kind == GW_OP_RESTORE || kind == GW_OP_RESUME) &&
	    parse_restore_target(d, req, p->pid, p) < 0)
		return;
	if (kind == GW_OP_RESUME) {
		int froze = 0;

		if (gw_json_get_bool(req->msg.body, "threads_frozen", &froze) == 0 && froze &&
		    !gw_auth_is_root(&req->peer)) {
			gw_request_fail(req, GW_ERROR_PERMISSION_DENIED, NULL,
					"\"threads_frozen\" is for CRIU's plugin, running as root");
			return;
		}
		p->caller_froze = froze;
		if (bind_agent(d, req, &p->pin, froze) < 0)
			return;
	}
	if (refuse_pid_op(d, req, p, f) < 0 || pick_gpus(d, req, p) < 0)
		return;
	r = gw_quota_take(&d->quota, p->owner);
	if (r < 0) {
		cJSON *extra = cJSON_CreateObject();

		if (extra)
			cJSON_AddStringToObject(extra, "limit", GW_LIMIT_MAX_OPS_PER_UID);
		gw_request_fail(req, GW_ERROR_LIMIT, extra,
				"uid %u has %u operations queued or running, its limit "
				"(--max-ops-per-uid %u): wait for one to finish",
				(unsigned)p->owner, gw_quota_used(&d->quota, p->owner),
				d->quota.max_per_uid);
		return;
	}
	f->timeout_ms = p->timeout_ms;
	f->gpu_mask = p->gpu_mask;
	f->caller_froze = p->caller_froze;
	f->owner = p->owner;
	if (kind == GW_OP_SUSPEND && gw_fast_wants_suspend(d, p->pid)) {
		gw_pin_move(&f->pin, &p->pin);
		r = gw_fast_suspend(d, req, p->pid, f);
		f->image_fd = -1; /* consumed, and the segments */
		f->nsegment_fds = 0;
	} else if (kind == GW_OP_RESUME &&
		   (gw_fast_wants_resume(d, p->pid) || f->image_fd >= 0)) {
		gw_pin_move(&f->pin, &p->pin);
		r = gw_fast_resume(d, req, p->pid, f);
		f->image_fd = -1;
		f->nsegment_fds = 0;
	} else {
		r = gw_ops_start(d, req, p);
	}
	if (r < 0) {
		gw_quota_give(&d->quota, p->owner);
		gw_request_fail(req, GW_ERROR_INTERNAL, NULL, "cannot queue the operation: %s",
				strerror(-r));
	}
}

static void start_pid_op(struct gw_daemon *d, struct gw_request *req, enum gw_op_kind kind)
{
	struct gw_pid_op_params p;
	struct gw_fast_params f;
	int image_fd;

	memset(&p, 0, sizeof(p));
	memset(&f, 0, sizeof(f));
	p.pin.pidfd = f.pin.pidfd = -1;
	p.kind = kind;
	p.owner = req->peer.uid;
	if (gw_json_get_bool(req->msg.body, "progress", &f.progress) == -EINVAL) {
		gw_request_fail(req, GW_ERROR_INVALID_REQUEST, NULL, "\"progress\" must be a boolean");
		return;
	}
	if (kind == GW_OP_SUSPEND && parse_fast_params(d, req, &f) < 0)
		return;
	image_fd = take_image_fd(req, kind);
	if (image_fd < -1)
		return;
	f.image_fd = image_fd;
	if (gw_imageio_take_segment_fds(req, kind == GW_OP_SUSPEND, image_fd >= 0, &f) < 0) {
		gw_imageio_params_close(&f);
		return;
	}
	if (check_pid_call(d, req, &p.pin) == 0) {
		p.pid = p.pin.pid;
		start_pid_op_with(d, req, &p, &f);
	}
	gw_pin_close(&p.pin); /* each is a no-op when the operation took it */
	gw_pin_close(&f.pin);
	gw_imageio_params_close(&f); /* not consumed: the request failed before the fast path */
}

static void handle_lock(struct gw_daemon *d, struct gw_request *req)
{
	start_pid_op(d, req, GW_OP_LOCK);
}

static void handle_checkpoint(struct gw_daemon *d, struct gw_request *req)
{
	start_pid_op(d, req, GW_OP_CHECKPOINT);
}

static void handle_restore(struct gw_daemon *d, struct gw_request *req)
{
	start_pid_op(d, req, GW_OP_RESTORE);
}

static void handle_unlock(struct gw_daemon *d, struct gw_request *req)
{
	start_pid_op(d, req, GW_OP_UNLOCK);
}

static void handle_suspend(struct gw_daemon *d, struct gw_request *req)
{
	start_pid_op(d, req, GW_OP_SUSPEND);
}

static void handle_resume(struct gw_daemon *d, struct gw_request *req)
{
	start_pid_op(d, req, GW_OP_RESUME);
}

/* CRIU's plugin, at POST_FORKING of a restore: fill the VRAM of the image file now, while CRIU
 * restores the process's memory; the Resume of the same file at RESUME_DEVICES_LATE takes it. */
static void handle_prefill(struct gw_daemon *d, struct gw_request *req)
{
	int image_fd, r;

	if (!d->cuda || !d->driver_ready) {
		gw_request_fail(req, GW_ERROR_DRIVER_UNAVAILABLE, NULL, "%s", d->driver_error);
		return;
	}
	struct gw_fast_params f;

	memset(&f, 0, sizeof(f));
	f.pin.pidfd = -1;
	image_fd = take_image_fd(req, GW_OP_RESUME);
	if (image_fd == -1) {
		gw_request_fail(req, GW_ERROR_INVALID_REQUEST, NULL,
				GW_METHOD_PREFILL " needs \"image_fd\"");
		return;
	}
	if (image_fd < -1)
		return;
	f.image_fd = image_fd;
	if (gw_imageio_take_segment_fds(req, 0, 1, &f) < 0) {
		gw_imageio_params_close(&f);
		return;
	}
	r = gw_fast_prefill(d, req, &f); /* takes the fds */
	if (r < 0)
		gw_request_fail(req, GW_ERROR_INTERNAL, NULL, "cannot start the prefill: %s",
				strerror(-r));
}

static const struct handler handlers[] = {
	{ GW_METHOD_STATUS, handle_status, 0 },
	{ GW_METHOD_DRAIN, handle_drain, NEEDS_ROOT },
	{ GW_METHOD_UNDRAIN, handle_undrain, NEEDS_ROOT },
	{ GW_METHOD_LEASE_ACQUIRE, handle_lease_acquire, 0 },
	{ GW_METHOD_LEASE_RELEASE, handle_lease_release, 0 },
	{ GW_METHOD_PROCESS_STATE, handle_process_state, 0 },
	{ GW_METHOD_PROCESS_LOCK, handle_lock, 0 },
	{ GW_METHOD_PROCESS_CHECKPOINT, handle_checkpoint, 0 },
	{ GW_METHOD_PROCESS_RESTORE, handle_restore, 0 },
	{ GW_METHOD_PROCESS_UNLOCK, handle_unlock, 0 },
	{ GW_METHOD_SUSPEND, handle_suspend, 0 },
	{ GW_METHOD_RESUME, handle_resume, 0 },
	{ GW_METHOD_PREFILL, handle_prefill, NEEDS_ROOT },
	{ GW_METHOD_IMAGES, gw_imagecache_handle, 0 }, /* imagecache-handlers.c */
	{ GW_METHOD_AGENT_ATTACH, gw_fast_handle_attach, 0 },
	{ GW_METHOD_AGENT_UPDATE, gw_fast_handle_update, 0 },
};

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
		gw_daemon_update_status(d);
}

int gw_handlers_conn_pinned(void *data, struct gw_conn *conn)
{
	struct gw_daemon *d = data;

	/* Lease holders and agents with VRAM to move stay connected however quiet they are; an
	 * agent with nothing (no CUDA at all) is an idle client like any other. */
	return gw_lease_count_conn(&d->leases, conn) > 0 ||
	       gw_fast_agent_pins_conn(gw_conn_get_data(conn));
}
