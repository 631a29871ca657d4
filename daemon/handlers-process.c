/* SPDX-License-Identifier: MIT */
/*
 * The methods that act on a process: parse and check the request (the pid pinned, the caller's
 * right to act on it, its image files), gather what route() needs, let it choose the fast path,
 * the driver's checkpoint API, a prefill or a refusal, then start that operation.
 */
#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "auth.h"
#include "fastpath.h"
#include "gw-vimg.h"
#include "handlers.h"
#include "imagefd.h"
#include "imageio.h"
#include "log.h"
#include "pin.h"
#include "route.h"

#define GW_LOCK_DEFAULT_TIMEOUT_MS 10000

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

void gw_handle_process_state(struct gw_daemon *d, struct gw_request *req)
{
	static const char *const names[] = { GW_PROCESS_STATE_RUNNING, GW_PROCESS_STATE_LOCKED,
					     GW_PROCESS_STATE_CHECKPOINTED, GW_PROCESS_STATE_FAILED };
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
					(unsigned)state < 4 ? names[state] : GW_PROCESS_STATE_UNKNOWN);
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
			gpu = gw_gpu_find_uuid(d->gpu_table.gpus, d->gpu_table.count, &p->pairs[p->npairs].newUuid);
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
	target = gw_gpu_find(d->gpu_table.gpus, d->gpu_table.count, selector);
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
	p->pairs[0].oldUuid = d->gpu_table.gpus[sources[0]].uuid;
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

/* What route() decides from: the request's facts and what the daemon knows of pid now. */
static void route_inputs(struct gw_daemon *d, const struct gw_pid_op_params *p,
			 const struct gw_fast_params *f, struct gw_route_in *in)
{
	const struct gw_gpu_table *t = &d->gpu_table;

	memset(in, 0, sizeof(*in));
	in->kind = p->kind;
	in->pid = p->pid;
	in->image_given = f->image_fd >= 0;
	in->has_agent = gw_fast_has_agent(d, p->pid);
	in->agent_has_vram = gw_fast_wants_suspend(d, p->pid);
	in->holds_image = gw_fast_wants_resume(d, p->pid);
	in->gpu_map_given = p->npairs > 0;
	in->checkpoint_unsafe = gw_fast_driver_checkpoint_unsafe(d, p->pid);
	in->busy = gw_ops_pid_busy(d, p->pid);
	in->gpu_mask = p->gpu_mask;
	in->ngpus = t->count;
	for (unsigned i = 0; i < t->count; i++)
		in->gpu_states[i] = t->gpus[i].state;
}

/* Resume: "threads_frozen" (root only) and the agent CRIU's plugin gives back. */
static int parse_resume_caller(struct gw_daemon *d, struct gw_request *req,
			       struct gw_pid_op_params *p)
{
	int froze = 0;

	if (gw_json_get_bool(req->msg.body, "threads_frozen", &froze) == 0 && froze &&
	    !gw_auth_is_root(&req->peer)) {
		gw_request_fail(req, GW_ERROR_PERMISSION_DENIED, NULL,
				"\"threads_frozen\" is for CRIU's plugin, running as root");
		return -EPERM;
	}
	p->caller_froze = froze;
	return bind_agent(d, req, &p->pin, froze);
}

/* Start the operation on the path route() chose. */
static int act(struct gw_daemon *d, struct gw_request *req, enum gw_route_path path,
	       struct gw_pid_op_params *p, struct gw_fast_params *f)
{
	int r;

	f->timeout_ms = p->timeout_ms;
	f->gpu_mask = p->gpu_mask;
	f->caller_froze = p->caller_froze;
	f->owner = p->owner;
	if (path == GW_ROUTE_DRIVER)
		return gw_ops_start(d, req, p);
	gw_pin_move(&f->pin, &p->pin);
	if (path == GW_ROUTE_FAST_SUSPEND)
		r = gw_fast_suspend(d, req, p->pid, f);
	else
		r = gw_fast_resume(d, req, p->pid, f);
	f->image_fd = -1; /* consumed, and the segments */
	f->nsegment_fds = 0;
	return r;
}

/* p->pin and f->image_fd are consumed when the operation starts, left to the caller otherwise. */
static void start_pid_op_with(struct gw_daemon *d, struct gw_request *req,
			      struct gw_pid_op_params *p, struct gw_fast_params *f)
{
	enum gw_op_kind kind = p->kind;
	struct gw_route_in in;
	struct gw_route_out out;
	int r;

	if ((kind == GW_OP_LOCK || kind == GW_OP_SUSPEND) &&
	    gw_handlers_parse_timeout(req, GW_LOCK_DEFAULT_TIMEOUT_MS,
			  /* a user's lock holds a worker of the shared ones while it waits */
			  req->peer.uid == 0 ? GW_TIMEOUT_MAX_MS : GW_LOCK_TIMEOUT_MAX_MS,
			  &p->timeout_ms) < 0)
		return;
	if ((kind == GW_OP_RESTORE || kind == GW_OP_RESUME) &&
	    parse_restore_target(d, req, p->pid, p) < 0)
		return;
	if (kind == GW_OP_RESUME && parse_resume_caller(d, req, p) < 0)
		return;
	route_inputs(d, p, f, &in);
	if (gw_route(&in, &out) < 0) {
		gw_request_fail(req, out.error_name, NULL, "%s", out.message);
		return;
	}
	gw_debug("pid %d: %s %s: %s", p->pid, gw_op_kind_name(kind), gw_route_path_name(out.path),
		 gw_route_reason_text(out.reason));
	p->gpu_mask = out.gpu_mask;
	if (gw_handlers_take_quota(d, req, p->owner) < 0)
		return;
	r = act(d, req, out.path, p, f);
	if (r < 0) {
		gw_quota_give(&d->quota, p->owner);
		gw_request_fail(req, GW_ERROR_INTERNAL, NULL, "cannot queue the operation: %s",
				strerror(-r));
	}
}

void gw_handle_process_op(struct gw_daemon *d, struct gw_request *req, enum gw_op_kind kind)
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

/* CRIU's plugin, at POST_FORKING of a restore: fill the VRAM of the image file now, while CRIU
 * restores the process's memory; the Resume of the same file at RESUME_DEVICES_LATE takes it. */
void gw_handle_prefill(struct gw_daemon *d, struct gw_request *req)
{
	struct gw_route_in in = {
		.prefill = 1,
		.driver_ready = d->cuda && d->driver_ready,
		.driver_error = d->driver_error,
		.image_given = cJSON_GetObjectItemCaseSensitive(req->msg.body, "image_fd") != NULL,
	};
	struct gw_route_out out;
	struct gw_fast_params f;
	int image_fd, r;

	if (gw_route(&in, &out) < 0) {
		gw_request_fail(req, out.error_name, NULL, "%s", out.message);
		return;
	}
	memset(&f, 0, sizeof(f));
	f.pin.pidfd = -1;
	image_fd = take_image_fd(req, GW_OP_RESUME);
	if (image_fd < 0)
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
