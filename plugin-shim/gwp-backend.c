/* SPDX-License-Identifier: MIT */
#include "gwp-backend.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>

#include "gw-client.h"
#include "gwp-driver.h"

#define CONNECT_TIMEOUT_MS 3000
#define QUICK_CALL_MS 10000       /* state, status, leases */
#define LOCK_EXTRA_MS 5000        /* on top of the lock's own timeout */
#define LONG_CALL_MS (600 * 1000) /* checkpoint and restore move VRAM: GiBs take seconds */
#define UNLOCK_CALL_MS 60000
#define MAX_LEASES 64
#define MAX_PREFILLS 64

struct gwp_backend {
	const struct gwp_criu *criu;
	char socket[256];

	enum gwp_avail daemon;
	struct gw_client *client;
	char daemon_why[512];   /* why the daemon is down */

	struct gwp_driver driver; /* the fallback (gwp-driver.h) */

	int lost;               /* the daemon was there and went away */
	struct gw_client *prefills[MAX_PREFILLS]; /* send-only connections, closed at free */
	unsigned nprefills;
	int said_none;          /* "standing aside" logged */
	uint64_t leases[MAX_LEASES];
	unsigned nleases;
};

#define LOG(be, level, ...) gwp_criu_log((be)->criu, level, __VA_ARGS__)

int gwp_backend_new(const struct gwp_criu *criu, struct gwp_backend **ret_be)
{
	struct gwp_backend *be = calloc(1, sizeof(*be));
	const char *env = getenv(GW_SOCKET_ENV);

	if (!be)
		return -ENOMEM;
	be->criu = criu;
	be->driver.criu = criu;
	snprintf(be->socket, sizeof(be->socket), "%s", env && *env ? env : GW_DEFAULT_SOCKET);
	*ret_be = be;
	return 0;
}

void gwp_backend_free(struct gwp_backend *be)
{
	if (!be)
		return;
	gwp_backend_release_leases(be);
	gw_client_close(be->client);
	for (unsigned i = 0; i < be->nprefills; i++)
		gw_client_close(be->prefills[i]);
	gwp_driver_stop(&be->driver);
	free(be);
}

void gwp_backend_idle(struct gwp_backend *be)
{
	if (be)
		gwp_driver_stop(&be->driver);
}

static void connect_daemon(struct gwp_backend *be)
{
	struct gw_client_error err;
	int r;

	r = gw_client_connect(be->socket, "gpuwarm_plugin " GW_VERSION, CONNECT_TIMEOUT_MS,
			      &be->client, &err);
	if (r < 0) {
		be->daemon = GWP_AVAIL_DOWN;
		snprintf(be->daemon_why, sizeof(be->daemon_why), "%s",
			 err.message[0] ? err.message : strerror(-r));
		return;
	}
	be->daemon = GWP_AVAIL_UP;
	LOG(be, GWP_CRIU_LOG_INFO, "using gpu-warmd at %s (%s)", be->socket,
	    gw_client_server_version(be->client));
}

/* Whether the driver is usable, asked of a helper process that stays for the calls to come. */
static void load_driver(struct gwp_backend *be)
{
	be->driver.avail = gwp_driver_start(&be->driver) == 0 ? GWP_AVAIL_UP :
								    GWP_AVAIL_DOWN;
}

/* Daemon gone: close, say so once, later calls take the driver. */
static void daemon_lost(struct gwp_backend *be, const char *why)
{
	gw_client_close(be->client);
	be->client = NULL;
	be->nleases = 0; /* they ended with the connection */
	be->daemon = GWP_AVAIL_DOWN;
	be->lost = 1;
	snprintf(be->daemon_why, sizeof(be->daemon_why), "%s", why);
	LOG(be, GWP_CRIU_LOG_WARN, "gpu-warmd at %s is no longer usable (%s): the remaining steps "
	    "use the driver directly", be->socket, why);
}

int gwp_backend_ready(struct gwp_backend *be)
{
	for (;;) {
		switch (gwp_route(be->daemon, be->driver.avail)) {
		case GWP_ROUTE_CONNECT_DAEMON:
			connect_daemon(be);
			break;
		case GWP_ROUTE_LOAD_DRIVER:
			load_driver(be);
			if (be->driver.avail == GWP_AVAIL_UP && be->lost)
				LOG(be, GWP_CRIU_LOG_INFO, "using the driver directly (%s)",
				    be->driver.path);
			else if (be->driver.avail == GWP_AVAIL_UP)
				LOG(be, GWP_CRIU_LOG_INFO, "gpu-warmd not reachable at %s (%s): "
				    "using the driver directly (%s)", be->socket, be->daemon_why,
				    be->driver.path);
			break;
		case GWP_ROUTE_DAEMON:
		case GWP_ROUTE_DRIVER:
			return 0;
		case GWP_ROUTE_NONE:
			if (!be->said_none)
				LOG(be, GWP_CRIU_LOG_WARN, "gpu-warmd not reachable at %s (%s) and no "
				    "usable CUDA driver (%s): standing aside, the CUDA hooks answer "
				    "-ENOTSUP", be->socket, be->daemon_why, be->driver.why);
			be->said_none = 1;
			return -ENOTSUP;
		}
	}
}

const char *gwp_backend_route(const struct gwp_backend *be)
{
	if (be->daemon == GWP_AVAIL_UP)
		return "gpu-warmd";
	if (be->driver.avail == GWP_AVAIL_UP)
		return "the driver";
	return "nothing";
}

/* ---- the daemon ---- */

static int remote_errno(const struct gw_client_error *e)
{
	return gw_errno_for_error(e->name);
}

/* One call to the daemon. On a transport failure the daemon is dropped (-EAGAIN). */
static int daemon_call_fds(struct gwp_backend *be, const char *method, const cJSON *params,
			   const int *fds, unsigned nfds, int timeout_ms, cJSON **ret_result,
			   char *err, size_t len)
{
	struct gw_client_error e;
	cJSON *result = NULL;
	int r;

	memset(&e, 0, sizeof(e));
	r = gw_client_call(be->client, method, params, fds, nfds, timeout_ms, &result, NULL, NULL,
			   &e);
	if (r == 0) {
		if (ret_result)
			*ret_result = result;
		else
			cJSON_Delete(result);
		return 0;
	}
	if (r == -EREMOTEIO) {
		snprintf(err, len, "gpu-warmd: %s", e.message);
		if (strcmp(e.name, GW_ERROR_DRIVER_UNAVAILABLE) == 0) {
			daemon_lost(be, e.message);
			return -EAGAIN;
		}
		return remote_errno(&e);
	}
	snprintf(err, len, "%s: %s", method, e.message[0] ? e.message : strerror(-r));
	daemon_lost(be, err);
	return -EAGAIN;
}

static int daemon_call(struct gwp_backend *be, const char *method, const cJSON *params,
		       int timeout_ms, cJSON **ret_result, char *err, size_t len)
{
	return daemon_call_fds(be, method, params, NULL, 0, timeout_ms, ret_result, err, len);
}

static cJSON *pid_params(pid_t pid)
{
	cJSON *p = cJSON_CreateObject();

	if (p && !cJSON_AddNumberToObject(p, "pid", pid)) {
		cJSON_Delete(p);
		return NULL;
	}
	return p;
}

static int daemon_state(struct gwp_backend *be, pid_t pid, enum gwp_state *ret_state,
			pid_t *ret_tid, char *err, size_t len)
{
	cJSON *params = pid_params(pid), *result = NULL;
	const char *state;
	uint64_t tid = 0;
	int r;

	if (!params)
		return -ENOMEM;
	r = daemon_call(be, GW_METHOD_PROCESS_STATE, params, QUICK_CALL_MS, &result, err, len);
	cJSON_Delete(params);
	if (r < 0)
		return r;
	if (gw_json_get_string(result, "state", 32, &state) < 0 ||
	    gwp_state_parse(state, ret_state) < 0)
		*ret_state = GWP_STATE_UNKNOWN;
	if (gw_json_get_u64(result, "restore_tid", 0, GW_PID_MAX, &tid) < 0)
		tid = 0;
	*ret_tid = (pid_t)tid;
	cJSON_Delete(result);
	return 0;
}

static const char *step_method(enum gwp_step step)
{
	switch (step) {
	case GWP_STEP_LOCK:
		return GW_METHOD_PROCESS_LOCK;
	case GWP_STEP_CHECKPOINT:
		return GW_METHOD_PROCESS_CHECKPOINT;
	case GWP_STEP_RESTORE:
		return GW_METHOD_PROCESS_RESTORE;
	case GWP_STEP_UNLOCK:
		return GW_METHOD_PROCESS_UNLOCK;
	default:
		return NULL;
	}
}

static int daemon_step(struct gwp_backend *be, pid_t pid, enum gwp_step step,
		       unsigned lock_timeout_ms, const struct gwp_pair *pairs, unsigned npairs,
		       char *err, size_t len)
{
	cJSON *params = pid_params(pid), *array;
	int timeout = step == GWP_STEP_LOCK ? (int)(lock_timeout_ms + LOCK_EXTRA_MS) :
		      step == GWP_STEP_UNLOCK ? UNLOCK_CALL_MS : LONG_CALL_MS;
	int r = -ENOMEM;

	if (!params)
		return -ENOMEM;
	if (step == GWP_STEP_LOCK && !cJSON_AddNumberToObject(params, "timeout_ms", lock_timeout_ms))
		goto out;
	if (step == GWP_STEP_RESTORE && npairs > 0) {
		array = cJSON_AddArrayToObject(params, "gpu_pairs");
		if (!array)
			goto out;
		for (unsigned i = 0; i < npairs; i++) {
			const char *pair[2] = { pairs[i].old_uuid, pairs[i].new_uuid };
			cJSON *item = cJSON_CreateStringArray(pair, 2);

			if (!item || !cJSON_AddItemToArray(array, item)) {
				cJSON_Delete(item);
				goto out;
			}
		}
	}
	r = daemon_call(be, step_method(step), params, timeout, NULL, err, len);
out:
	cJSON_Delete(params);
	return r;
}

static int daemon_gpus(struct gwp_backend *be, struct gwp_backend_gpu *gpus, unsigned max,
		       unsigned *ret_n, char *err, size_t len)
{
	const cJSON *g;
	cJSON *result = NULL;
	unsigned n = 0;
	int r;

	r = daemon_call(be, GW_METHOD_STATUS, NULL, QUICK_CALL_MS, &result, err, len);
	if (r < 0)
		return r;
	cJSON_ArrayForEach(g, cJSON_GetObjectItemCaseSensitive(result, "gpus")) {
		const char *uuid, *pci, *state;

		if (n >= max)
			break;
		if (gw_json_get_string(g, "uuid", GWP_UUID_LEN, &uuid) < 0)
			continue;
		if (gw_json_get_string(g, "pci_bus_id", GWP_PCI_LEN, &pci) < 0)
			pci = "";
		if (gw_json_get_string(g, "state", 32, &state) < 0)
			state = "";
		snprintf(gpus[n].gpu.uuid, GWP_UUID_LEN, "%s", uuid);
		snprintf(gpus[n].pci, GWP_PCI_LEN, "%s", pci);
		gpus[n].gpu.usable = strcmp(state, GW_GPU_STATE_READY) == 0;
		n++;
	}
	cJSON_Delete(result);
	*ret_n = n;
	return 0;
}

/* ---- the driver, through its helper process ---- */

static int driver_state(struct gwp_backend *be, pid_t pid, enum gwp_state *ret_state,
			pid_t *ret_tid, char *err, size_t len)
{
	struct gwp_driver_request req = { .op = GWP_DRIVER_STATE, .pid = pid };
	struct gwp_driver_reply *rep = calloc(1, sizeof(*rep));
	int r;

	if (!rep)
		return -ENOMEM;
	r = gwp_driver_call(&be->driver, &req, rep, err, len);
	if (r == 0) {
		*ret_state = (enum gwp_state)rep->state;
		*ret_tid = rep->tid;
	}
	free(rep);
	return r;
}

static int driver_step(struct gwp_backend *be, pid_t pid, enum gwp_step step,
		       unsigned lock_timeout_ms, const struct gwp_pair *pairs, unsigned npairs,
		       char *err, size_t len)
{
	struct gwp_driver_request *req = calloc(1, sizeof(*req));
	struct gwp_driver_reply *rep = calloc(1, sizeof(*rep));
	int r = -ENOMEM;

	if (npairs > GWP_MAX_GPUS) {
		r = -EINVAL;
		goto out;
	}
	if (!req || !rep)
		goto out;
	req->op = GWP_DRIVER_STEP;
	req->pid = pid;
	req->step = (int)step;
	req->lock_timeout_ms = lock_timeout_ms;
	req->npairs = npairs;
	if (npairs)
		memcpy(req->pairs, pairs, npairs * sizeof(*pairs));
	r = gwp_driver_call(&be->driver, req, rep, err, len);
out:
	free(req);
	free(rep);
	return r;
}

static int driver_gpus(struct gwp_backend *be, struct gwp_backend_gpu *gpus, unsigned max,
		       unsigned *ret_n, char *err, size_t len)
{
	struct gwp_driver_request req = { .op = GWP_DRIVER_GPUS };
	struct gwp_driver_reply *rep = calloc(1, sizeof(*rep));
	unsigned n;
	int r;

	if (!rep)
		return -ENOMEM;
	r = gwp_driver_call(&be->driver, &req, rep, err, len);
	if (r == 0) {
		n = rep->ngpus < max ? rep->ngpus : max;
		if (n > GWP_MAX_GPUS)
			n = GWP_MAX_GPUS;
		memcpy(gpus, rep->gpus, n * sizeof(*gpus));
		*ret_n = n;
	}
	free(rep);
	return r;
}

/* ---- routing ---- */

int gwp_backend_state(struct gwp_backend *be, pid_t pid, enum gwp_state *ret_state,
		      pid_t *ret_restore_tid, char *err, size_t len)
{
	int r = gwp_backend_ready(be);

	if (r < 0) {
		snprintf(err, len, "neither gpu-warmd nor the CUDA driver is usable");
		return r;
	}
	if (be->daemon == GWP_AVAIL_UP)
		return daemon_state(be, pid, ret_state, ret_restore_tid, err, len);
	return driver_state(be, pid, ret_state, ret_restore_tid, err, len);
}

int gwp_backend_step(struct gwp_backend *be, pid_t pid, enum gwp_step step,
		     unsigned lock_timeout_ms, const struct gwp_pair *pairs, unsigned npairs,
		     char *err, size_t len)
{
	int r;

	if (!step_method(step))
		return -EINVAL;
	r = gwp_backend_ready(be);
	if (r < 0) {
		snprintf(err, len, "neither gpu-warmd nor the CUDA driver is usable");
		return r;
	}
	if (be->daemon == GWP_AVAIL_UP)
		return daemon_step(be, pid, step, lock_timeout_ms, pairs, npairs, err, len);
	return driver_step(be, pid, step, lock_timeout_ms, pairs, npairs, err, len);
}

int gwp_backend_gpus(struct gwp_backend *be, struct gwp_backend_gpu *ret_gpus, unsigned max,
		     unsigned *ret_n, char *err, size_t len)
{
	int r = gwp_backend_ready(be);

	if (r < 0) {
		snprintf(err, len, "neither gpu-warmd nor the CUDA driver is usable");
		return r;
	}
	if (be->daemon == GWP_AVAIL_UP)
		return daemon_gpus(be, ret_gpus, max, ret_n, err, len);
	return driver_gpus(be, ret_gpus, max, ret_n, err, len);
}

int gwp_backend_lease(struct gwp_backend *be, const char *uuid, char *err, size_t len)
{
	cJSON *params, *result = NULL;
	uint64_t id;
	int r;

	if (be->daemon != GWP_AVAIL_UP)
		return 0;
	if (be->nleases >= MAX_LEASES) {
		snprintf(err, len, "too many leases");
		return -ENOSPC;
	}
	params = cJSON_CreateObject();
	if (!params || !cJSON_AddStringToObject(params, "gpu", uuid)) {
		cJSON_Delete(params);
		return -ENOMEM;
	}
	r = daemon_call(be, GW_METHOD_LEASE_ACQUIRE, params, QUICK_CALL_MS, &result, err, len);
	cJSON_Delete(params);
	if (r < 0)
		return r;
	if (gw_json_get_u64(result, "lease", 1, UINT64_MAX >> 11, &id) == 0)
		be->leases[be->nleases++] = id;
	cJSON_Delete(result);
	return 0;
}

void gwp_backend_release_leases(struct gwp_backend *be)
{
	char err[256];

	while (be->nleases > 0 && be->daemon == GWP_AVAIL_UP) {
		cJSON *params = cJSON_CreateObject();
		uint64_t id = be->leases[--be->nleases];

		if (params && cJSON_AddNumberToObject(params, "lease", (double)id))
			daemon_call(be, GW_METHOD_LEASE_RELEASE, params, QUICK_CALL_MS, NULL, err,
				    sizeof(err));
		cJSON_Delete(params);
	}
	be->nleases = 0;
}

/* ---- the fast VRAM path (daemon only) ---- */

int gwp_backend_fast_agent(struct gwp_backend *be, pid_t pid, pid_t *ret_agent_tid)
{
	const cJSON *procs, *p;
	cJSON *result = NULL;
	char err[256];
	int found = 0;

	if (be->daemon != GWP_AVAIL_UP)
		return 0;
	if (daemon_call(be, GW_METHOD_STATUS, NULL, GW_CLIENT_DEFAULT_TIMEOUT_MS, &result, err,
			sizeof(err)) < 0)
		return 0;
	procs = cJSON_GetObjectItemCaseSensitive(result, "processes");
	cJSON_ArrayForEach(p, procs) {
		const cJSON *ppid = cJSON_GetObjectItemCaseSensitive(p, "pid");
		const cJSON *tid = cJSON_GetObjectItemCaseSensitive(p, "agent_tid");
		const cJSON *bytes = cJSON_GetObjectItemCaseSensitive(p, "vram_bytes");

		if (cJSON_IsNumber(ppid) && (pid_t)ppid->valuedouble == pid &&
		    cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(p, "attached")) &&
		    cJSON_IsNumber(bytes) && bytes->valuedouble > 0 && cJSON_IsNumber(tid)) {
			*ret_agent_tid = (pid_t)tid->valuedouble;
			found = 1;
		}
	}
	cJSON_Delete(result);
	return found;
}

/* The daemon's steps into CRIU's log: where a dump's or restore's time went. */
static void log_steps(struct gwp_backend *be, const struct gwp_fast_call *c, const cJSON *result)
{
	const cJSON *steps = cJSON_GetObjectItemCaseSensitive(result, "steps"), *st;
	const cJSON *total = cJSON_GetObjectItemCaseSensitive(result, "duration_ms");
	const cJSON *pre = cJSON_GetObjectItemCaseSensitive(result, "prefill_ms");
	const cJSON *cache = cJSON_GetObjectItemCaseSensitive(result, "image_cache");
	const cJSON *trimmed = cJSON_GetObjectItemCaseSensitive(result, "trimmed_bytes");
	char line[768], trim[96] = "";
	size_t used = 0;

	line[0] = '\0';
	cJSON_ArrayForEach(st, steps) {
		const cJSON *name = cJSON_GetObjectItemCaseSensitive(st, "step");
		const cJSON *ms = cJSON_GetObjectItemCaseSensitive(st, "duration_ms");
		int n;

		if (!cJSON_IsString(name) || !cJSON_IsNumber(ms) || used >= sizeof(line))
			continue;
		n = snprintf(line + used, sizeof(line) - used, "%s%s %.1f ms", used ? ", " : "",
			     name->valuestring, ms->valuedouble);
		if (n > 0)
			used += (size_t)n;
	}
	if (cJSON_IsNumber(trimmed))
		snprintf(trim, sizeof(trim), "; %.1f MiB of host pages of zeros given back (CRIU "
			 "skips them)", trimmed->valuedouble / 1048576.0);
	LOG(be, GWP_CRIU_LOG_INFO, "gpu-warmd %s of pid %d: %.1f ms (%s)%s%s%s",
	    c->suspend ? "suspend" : "resume", (int)c->pid,
	    cJSON_IsNumber(total) ? total->valuedouble : 0, line, trim,
	    cJSON_IsNumber(pre) ? "; its VRAM was prefilled while CRIU restored memory" : "",
	    cJSON_IsString(cache) ? "; image data from gpu-warmd's RAM cache (image_cache hit)" :
				    "");
}

int gwp_backend_fast(struct gwp_backend *be, const struct gwp_fast_call *c, char *err,
		     size_t len)
{
	cJSON *params = pid_params(c->pid), *segs = NULL, *result = NULL;
	int fds[1 + GW_IMAGE_MAX_SEGMENTS];
	unsigned nfds = 0;
	int r;

	if (c->image_fd >= 0) {
		fds[nfds++] = c->image_fd;
		for (unsigned k = 0; k < c->nsegment_fds && k < GW_IMAGE_MAX_SEGMENTS; k++)
			fds[nfds++] = c->segment_fds[k];
	}
	if (params && nfds > 1) {
		segs = cJSON_AddArrayToObject(params, "segment_fds");
		for (unsigned k = 1; segs && k < nfds; k++)
			if (!cJSON_AddItemToArray(segs, cJSON_CreateNumber(k)))
				segs = NULL;
	}
	if (be->daemon != GWP_AVAIL_UP) {
		snprintf(err, len, "the fast path needs gpu-warmd");
		cJSON_Delete(params);
		return -ENOTSUP;
	}
	if (!params || (nfds > 1 && !segs) ||
	    (c->suspend && !cJSON_AddNumberToObject(params, "timeout_ms", c->lock_timeout_ms)) ||
	    (!c->suspend && c->threads_frozen &&
	     !cJSON_AddBoolToObject(params, "threads_frozen", 1)) ||
	    (c->image_fd >= 0 && !cJSON_AddNumberToObject(params, "image_fd", 0)) ||
	    (c->agent_pid > 0 && c->agent_pid != c->pid &&
	     !cJSON_AddNumberToObject(params, "agent_pid", c->agent_pid)) ||
	    (c->agent_tid > 0 && !cJSON_AddNumberToObject(params, "agent_tid", c->agent_tid))) {
		cJSON_Delete(params);
		snprintf(err, len, "out of memory");
		return -ENOMEM;
	}
	r = daemon_call_fds(be, c->suspend ? GW_METHOD_SUSPEND : GW_METHOD_RESUME, params,
			    nfds ? fds : NULL, nfds, 600000, &result, err, len);
	cJSON_Delete(params);
	if (r == 0)
		log_steps(be, c, result);
	cJSON_Delete(result);
	return r;
}

int gwp_backend_agent_socket(struct gwp_backend *be, int fd)
{
	struct sockaddr_un addr;
	socklen_t len = sizeof(addr);

	memset(&addr, 0, sizeof(addr));
	if (getpeername(fd, (struct sockaddr *)&addr, &len) < 0 || addr.sun_family != AF_UNIX)
		return 0;
	return strncmp(addr.sun_path, be->socket, sizeof(addr.sun_path)) == 0;
}

int gwp_backend_reattach(struct gwp_backend *be, pid_t pid, pid_t agent_tid, char *err,
			 size_t len)
{
	struct gw_client_error e;
	struct gw_client *c = NULL;
	cJSON *params = cJSON_CreateObject();
	int r, fd = -1;

	memset(&e, 0, sizeof(e));
	if (!params || !cJSON_AddNumberToObject(params, "pid", pid) ||
	    !cJSON_AddNumberToObject(params, "tid", agent_tid) ||
	    !cJSON_AddNumberToObject(params, "ranges", 0) ||
	    !cJSON_AddNumberToObject(params, "bytes", 0) ||
	    !cJSON_AddBoolToObject(params, "restored", 1) ||
	    !cJSON_AddBoolToObject(params, "on_behalf", 1)) {
		snprintf(err, len, "out of memory");
		r = -ENOMEM;
		goto out;
	}
	r = gw_client_connect(be->socket, "gpuwarm_plugin (agent of a restored process)",
			      GW_CLIENT_DEFAULT_TIMEOUT_MS, &c, &e);
	if (r == 0)
		r = gw_client_call(c, GW_METHOD_AGENT_ATTACH, params, NULL, 0,
				   GW_CLIENT_DEFAULT_TIMEOUT_MS, NULL, NULL, NULL, &e);
	if (r < 0) {
		snprintf(err, len, "%s", e.message[0] ? e.message : strerror(-r));
		goto out;
	}
	/* The connection now belongs to the restored process: keep a duplicate of it. */
	fd = fcntl(gw_client_fd(c), F_DUPFD_CLOEXEC, 3);
	r = fd < 0 ? -errno : fd;
out:
	gw_client_close(c);
	cJSON_Delete(params);
	return r;
}

int gwp_backend_has_daemon(struct gwp_backend *be)
{
	if (be->daemon == GWP_AVAIL_UNTRIED)
		connect_daemon(be);
	return be->daemon == GWP_AVAIL_UP;
}

int gwp_backend_vram_store(struct gwp_backend *be, char *path, size_t len, char *err,
			   size_t errlen)
{
	const cJSON *store;
	const char *dir;
	cJSON *result = NULL;
	int r;

	path[0] = '\0';
	if (!gwp_backend_has_daemon(be)) {
		snprintf(err, errlen, "gpu-warmd is not reachable");
		return -ENOTCONN;
	}
	r = daemon_call(be, GW_METHOD_STATUS, NULL, QUICK_CALL_MS, &result, err, errlen);
	if (r < 0)
		return r;
	store = cJSON_GetObjectItemCaseSensitive(result, "vram_store");
	if (store && gw_json_get_string(store, "path", len - 1, &dir) == 0)
		snprintf(path, len, "%s", dir);
	cJSON_Delete(result);
	return 0;
}

int gwp_backend_prefill(struct gwp_backend *be, const int *fds, unsigned nfds, char *err,
			size_t len)
{
	struct gw_client_error e;
	struct gw_client *c = NULL;
	cJSON *params, *segs = NULL;
	int r;

	if (be->daemon != GWP_AVAIL_UP) {
		snprintf(err, len, "gpu-warmd is not in use");
		return -ENOTSUP;
	}
	if (be->nprefills >= MAX_PREFILLS) {
		snprintf(err, len, "%d prefills already", MAX_PREFILLS);
		return -ENOSPC;
	}
	if (nfds < 1 || nfds > 1 + GW_IMAGE_MAX_SEGMENTS) {
		snprintf(err, len, "%u image files", nfds);
		return -EINVAL;
	}
	params = cJSON_CreateObject();
	if (params && cJSON_AddNumberToObject(params, "image_fd", 0) && nfds > 1) {
		segs = cJSON_AddArrayToObject(params, "segment_fds");
		for (unsigned k = 1; segs && k < nfds; k++)
			if (!cJSON_AddItemToArray(segs, cJSON_CreateNumber(k)))
				segs = NULL;
	}
	if (!params || (nfds > 1 && !segs)) {
		cJSON_Delete(params);
		snprintf(err, len, "out of memory");
		return -ENOMEM;
	}
	/* A connection of its own: the reply comes when the fill is done, and nobody waits. */
	r = gw_client_connect(be->socket, "gpuwarm_plugin " GW_VERSION " prefill", CONNECT_TIMEOUT_MS,
			      &c, &e);
	if (r == 0)
		r = gw_client_send(c, GW_METHOD_PREFILL, params, fds, nfds, QUICK_CALL_MS, &e);
	cJSON_Delete(params);
	if (r < 0) {
		snprintf(err, len, "%s", e.message[0] ? e.message : strerror(-r));
		gw_client_close(c);
		return r;
	}
	be->prefills[be->nprefills++] = c;
	return 0;
}
