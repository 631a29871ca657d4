/* SPDX-License-Identifier: MIT */
#include "gwp-backend.h"

#include <dirent.h>
#include <dlfcn.h>
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <fcntl.h>
#include <unistd.h>

#include "gw-ckpt.h"
#include "gw-client.h"
#include "gw-cuda.h"

#define CONNECT_TIMEOUT_MS 3000
#define QUICK_CALL_MS 10000       /* state, status, leases */
#define LOCK_EXTRA_MS 5000        /* on top of the lock's own timeout */
#define LONG_CALL_MS (600 * 1000) /* checkpoint and restore move VRAM: GiBs take seconds */
#define UNLOCK_CALL_MS 60000
#define MAX_LEASES 64
#define PID_MAX 4194304
#define MAX_PREFILLS 64

struct gwp_backend {
	const struct gwp_criu *criu;
	char socket[256];

	enum gwp_avail daemon;
	struct gw_client *client;
	char daemon_why[512];   /* why the daemon is down */

	enum gwp_avail driver;
	struct gw_cuda *cuda;   /* only in the driver helper process */
	char driver_why[512];
	char driver_path[256];  /* the library the helper loaded */
	pid_t helper;           /* the driver helper process, 0 when none */
	int helper_fd;
	sigset_t helper_mask;   /* the signal mask before it, SIGCHLD blocked while it lives */

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
	snprintf(be->socket, sizeof(be->socket), "%s", env && *env ? env : GW_DEFAULT_SOCKET);
	*ret_be = be;
	return 0;
}

static int helper_start(struct gwp_backend *be);
static void helper_stop(struct gwp_backend *be);

void gwp_backend_free(struct gwp_backend *be)
{
	if (!be)
		return;
	gwp_backend_release_leases(be);
	gw_client_close(be->client);
	for (unsigned i = 0; i < be->nprefills; i++)
		gw_client_close(be->prefills[i]);
	helper_stop(be);
	free(be);
}

void gwp_backend_idle(struct gwp_backend *be)
{
	if (be)
		helper_stop(be);
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
	be->driver = helper_start(be) == 0 ? GWP_AVAIL_UP : GWP_AVAIL_DOWN;
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
		switch (gwp_route(be->daemon, be->driver)) {
		case GWP_ROUTE_CONNECT_DAEMON:
			connect_daemon(be);
			break;
		case GWP_ROUTE_LOAD_DRIVER:
			load_driver(be);
			if (be->driver == GWP_AVAIL_UP && be->lost)
				LOG(be, GWP_CRIU_LOG_INFO, "using the driver directly (%s)",
				    be->driver_path);
			else if (be->driver == GWP_AVAIL_UP)
				LOG(be, GWP_CRIU_LOG_INFO, "gpu-warmd not reachable at %s (%s): "
				    "using the driver directly (%s)", be->socket, be->daemon_why,
				    be->driver_path);
			break;
		case GWP_ROUTE_DAEMON:
		case GWP_ROUTE_DRIVER:
			return 0;
		case GWP_ROUTE_NONE:
			if (!be->said_none)
				LOG(be, GWP_CRIU_LOG_WARN, "gpu-warmd not reachable at %s (%s) and no "
				    "usable CUDA driver (%s): standing aside, the CUDA hooks answer "
				    "-ENOTSUP", be->socket, be->daemon_why, be->driver_why);
			be->said_none = 1;
			return -ENOTSUP;
		}
	}
}

const char *gwp_backend_route(const struct gwp_backend *be)
{
	if (be->daemon == GWP_AVAIL_UP)
		return "gpu-warmd";
	if (be->driver == GWP_AVAIL_UP)
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
	if (gw_json_get_u64(result, "restore_tid", 0, PID_MAX, &tid) < 0)
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
		gpus[n].gpu.usable = strcmp(state, "ready") == 0;
		n++;
	}
	cJSON_Delete(result);
	*ret_n = n;
	return 0;
}

/* ---- the driver ---- */

static int driver_fail(struct gwp_backend *be, CUresult r, const char *call, pid_t pid, char *err,
		       size_t len)
{
	char text[160];

	snprintf(err, len, "%s(pid %d): %s", call, (int)pid,
		 gw_cuda_describe(be->cuda, r, text, sizeof(text)));
	return gw_cuda_errno(r);
}

static int driver_state(struct gwp_backend *be, pid_t pid, enum gwp_state *ret_state,
			pid_t *ret_tid, char *err, size_t len)
{
	CUprocessState st;
	CUresult r;
	int tid = 0;

	r = be->cuda->cuCheckpointProcessGetState(pid, &st);
	if (r != CUDA_SUCCESS)
		return driver_fail(be, r, "cuCheckpointProcessGetState", pid, err, len);
	if (be->cuda->cuCheckpointProcessGetRestoreThreadId(pid, &tid) != CUDA_SUCCESS)
		tid = 0;
	*ret_state = (unsigned)st <= CU_PROCESS_STATE_FAILED ? (enum gwp_state)st :
							       GWP_STATE_UNKNOWN;
	*ret_tid = tid;
	return 0;
}

static int driver_step(struct gwp_backend *be, pid_t pid, enum gwp_step step,
		       unsigned lock_timeout_ms, const struct gwp_pair *pairs, unsigned npairs,
		       char *err, size_t len)
{
	static const enum gw_ckpt_step steps[] = {
		[GWP_STEP_LOCK] = GW_CKPT_LOCK,
		[GWP_STEP_CHECKPOINT] = GW_CKPT_CHECKPOINT,
		[GWP_STEP_RESTORE] = GW_CKPT_RESTORE,
		[GWP_STEP_UNLOCK] = GW_CKPT_UNLOCK,
	};
	CUcheckpointGpuPair cp[GWP_MAX_GPUS];
	struct gw_ckpt_args args = { .lock_timeout_ms = lock_timeout_ms, .pairs = cp,
				     .npairs = npairs };
	CUresult r;

	if (step < GWP_STEP_LOCK || step > GWP_STEP_UNLOCK || npairs > GWP_MAX_GPUS)
		return -EINVAL;
	for (unsigned i = 0; i < npairs; i++) {
		if (gw_cuda_uuid_parse(pairs[i].old_uuid, &cp[i].oldUuid) < 0 ||
		    gw_cuda_uuid_parse(pairs[i].new_uuid, &cp[i].newUuid) < 0) {
			snprintf(err, len, "bad GPU pair %s -> %s", pairs[i].old_uuid,
				 pairs[i].new_uuid);
			return -EINVAL;
		}
	}
	r = gw_ckpt_step(be->cuda, pid, steps[step], &args);
	if (r != CUDA_SUCCESS)
		return driver_fail(be, r, gw_ckpt_step_call(steps[step]), pid, err, len);
	return 0;
}

static int driver_gpus(struct gwp_backend *be, struct gwp_backend_gpu *gpus, unsigned max,
		       unsigned *ret_n, char *err, size_t len)
{
	const struct gw_cuda *cu = be->cuda;
	unsigned n = 0;
	int count = 0;
	CUresult r;

	r = cu->cuDeviceGetCount(&count);
	if (r != CUDA_SUCCESS)
		return driver_fail(be, r, "cuDeviceGetCount", 0, err, len);
	for (int i = 0; i < count && n < max; i++) {
		int domain = 0, bus = 0, dev = 0;
		CUdevice d;
		CUuuid uuid;

		if (cu->cuDeviceGet(&d, i) != CUDA_SUCCESS ||
		    cu->cuDeviceGetUuid(&uuid, d) != CUDA_SUCCESS)
			continue;
		gw_cuda_uuid_format(&uuid, gpus[n].gpu.uuid, GWP_UUID_LEN);
		gpus[n].gpu.usable = 1;
		gpus[n].pci[0] = '\0';
		if (cu->cuDeviceGetAttribute(&domain, CU_DEVICE_ATTRIBUTE_PCI_DOMAIN_ID, d) ==
			    CUDA_SUCCESS &&
		    cu->cuDeviceGetAttribute(&bus, CU_DEVICE_ATTRIBUTE_PCI_BUS_ID, d) ==
			    CUDA_SUCCESS &&
		    cu->cuDeviceGetAttribute(&dev, CU_DEVICE_ATTRIBUTE_PCI_DEVICE_ID, d) ==
			    CUDA_SUCCESS)
			snprintf(gpus[n].pci, GWP_PCI_LEN, "%04x:%02x:%02x.0", (unsigned)domain,
				 (unsigned)bus & 0xff, (unsigned)dev & 0xff);
		n++;
	}
	*ret_n = n;
	return 0;
}

/*
 * ---- the driver helper process ----
 *
 * The driver is never loaded into CRIU's process: an initialized driver has threads, and a
 * multi-threaded CRIU cannot setns() into a container's mount namespace ("Can't setns 26/mnt:
 * Invalid argument"). A child forked on the first driver call of a hook loads it, makes the
 * calls the parent sends it over a socketpair (one request, one reply), and _exit()s when the
 * parent closes its end at the end of the hook (gwp_backend_idle()) or goes away. SIGCHLD stays
 * blocked while it lives, so that CRIU's own SIGCHLD handler (restore) never sees it end.
 */

enum helper_op { HELPER_STATE = 1, HELPER_STEP, HELPER_GPUS };

struct helper_request {
	int op;
	pid_t pid;
	int step;
	unsigned lock_timeout_ms;
	unsigned npairs;
	struct gwp_pair pairs[GWP_MAX_GPUS];
};

struct helper_reply {
	int r;          /* what the call returned; for the greeting, 0 or -ENOTSUP */
	char err[512];  /* its reason; for the greeting, the library's path or why it is unusable */
	int state;
	pid_t tid;
	unsigned ngpus;
	struct gwp_backend_gpu gpus[GWP_MAX_GPUS];
};

/* In the helper: load the driver as load_driver() did in-process. */
static int helper_load(struct gwp_backend *be, char *why, size_t len)
{
	char err[256], text[160];
	CUresult r;

	if (gw_cuda_load(NULL, &be->cuda, err, sizeof(err)) < 0) {
		snprintf(why, len, "%s", err);
		return -ENOTSUP;
	}
	if (!gw_cuda_has_checkpoint(be->cuda)) {
		snprintf(why, len, "%s has no checkpoint API (cuCheckpointProcess* needs driver 550 "
			 "or newer)", be->cuda->path);
		return -ENOTSUP;
	}
	r = be->cuda->cuInit(0);
	if (r != CUDA_SUCCESS) {
		snprintf(why, len, "cuInit: %s", gw_cuda_describe(be->cuda, r, text, sizeof(text)));
		return -ENOTSUP;
	}
	snprintf(why, len, "%s", be->cuda->path);
	return 0;
}

/* In the helper: every descriptor but fd (moved to 3) and stdin/out/err closed. */
static int helper_fds(int fd)
{
	DIR *d;
	struct dirent *e;

	if (fd != 3 && (dup2(fd, 3) < 0 || close(fd) < 0))
		return -1;
#ifdef SYS_close_range
	if (syscall(SYS_close_range, 4U, ~0U, 0U) == 0)
		return 0;
#endif
	d = opendir("/proc/self/fd");
	if (!d)
		return -1;
	while ((e = readdir(d))) {
		int n = atoi(e->d_name);

		if (n > 3 && n != dirfd(d))
			close(n);
	}
	closedir(d);
	return 0;
}

static void helper_send(int fd, const struct helper_reply *rep)
{
	while (send(fd, rep, sizeof(*rep), MSG_NOSIGNAL) < 0)
		if (errno != EINTR)
			_exit(1);
}

__attribute__((noreturn)) static void helper_main(struct gwp_backend *be, int fd, pid_t parent)
{
	struct helper_reply *rep = calloc(1, sizeof(*rep));
	struct helper_request req;
	struct sigaction dfl;
	sigset_t none;

	/* CRIU's handlers are not for this process, nor its blocked signals. */
	memset(&dfl, 0, sizeof(dfl));
	dfl.sa_handler = SIG_DFL;
	sigemptyset(&dfl.sa_mask);
	for (int sig = 1; sig < NSIG; sig++)
		if (sig != SIGKILL && sig != SIGSTOP)
			sigaction(sig, &dfl, NULL);
	sigemptyset(&none);
	sigprocmask(SIG_SETMASK, &none, NULL);
	if (!rep || prctl(PR_SET_PDEATHSIG, SIGKILL) < 0 || getppid() != parent ||
	    helper_fds(fd) < 0)
		_exit(1);
	fd = 3;
	be->criu = NULL; /* no logging from here: CRIU's log is the parent's */
	rep->r = helper_load(be, rep->err, sizeof(rep->err));
	helper_send(fd, rep);
	if (rep->r < 0)
		_exit(0);
	for (;;) {
		ssize_t n = recv(fd, &req, sizeof(req), 0);
		enum gwp_state state = GWP_STATE_UNKNOWN;

		if (n < 0 && errno == EINTR)
			continue;
		if (n == 0)
			_exit(0);
		if (n != (ssize_t)sizeof(req))
			_exit(1);
		memset(rep, 0, sizeof(*rep));
		switch (req.op) {
		case HELPER_STATE:
			rep->r = driver_state(be, req.pid, &state, &rep->tid, rep->err,
					      sizeof(rep->err));
			rep->state = (int)state;
			break;
		case HELPER_STEP:
			rep->r = driver_step(be, req.pid, (enum gwp_step)req.step, req.lock_timeout_ms,
					     req.pairs, req.npairs < GWP_MAX_GPUS ? req.npairs :
										   GWP_MAX_GPUS,
					     rep->err, sizeof(rep->err));
			break;
		case HELPER_GPUS:
			rep->r = driver_gpus(be, rep->gpus, GWP_MAX_GPUS, &rep->ngpus, rep->err,
					     sizeof(rep->err));
			break;
		default:
			rep->r = -EINVAL;
			snprintf(rep->err, sizeof(rep->err), "unknown request %d", req.op);
		}
		helper_send(fd, rep);
	}
}

/* The reply to what was sent, or -EIO (err says why) when the helper is gone. */
static int helper_recv(struct gwp_backend *be, struct helper_reply *rep, char *err, size_t len)
{
	ssize_t n;
	int status;

	do
		n = recv(be->helper_fd, rep, sizeof(*rep), 0);
	while (n < 0 && errno == EINTR);
	if (n == (ssize_t)sizeof(*rep))
		return 0;
	if (n < 0)
		snprintf(err, len, "the driver helper process %d: %s", (int)be->helper,
			 strerror(errno));
	else if (n == 0 && waitpid(be->helper, &status, 0) == be->helper) {
		be->helper = -be->helper; /* reaped: helper_stop() only restores the mask */
		if (WIFSIGNALED(status))
			snprintf(err, len, "the driver helper process %d died of signal %d", -be->helper,
				 WTERMSIG(status));
		else
			snprintf(err, len, "the driver helper process %d exited with status %d",
				 -be->helper, WEXITSTATUS(status));
	} else {
		snprintf(err, len, "the driver helper process %d answered nonsense", (int)be->helper);
	}
	return -EIO;
}

static void helper_stop(struct gwp_backend *be)
{
	int status;

	if (!be->helper)
		return;
	close(be->helper_fd);
	be->helper_fd = -1;
	if (be->helper > 0)
		while (waitpid(be->helper, &status, 0) < 0 && errno == EINTR)
			;
	be->helper = 0;
	sigprocmask(SIG_SETMASK, &be->helper_mask, NULL);
}

/* Fork the helper and read its greeting: 0, or a negative errno with be->driver_why set. */
static int helper_start(struct gwp_backend *be)
{
	struct helper_reply *rep;
	pid_t parent = getpid(), pid;
	sigset_t chld;
	int sv[2], r;

	if (be->helper)
		return 0;
	rep = calloc(1, sizeof(*rep));
	if (!rep || socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv) < 0) {
		snprintf(be->driver_why, sizeof(be->driver_why), "cannot start a driver helper "
			 "process: %s", rep ? strerror(errno) : "out of memory");
		free(rep);
		return -ENOMEM;
	}
	sigemptyset(&chld);
	sigaddset(&chld, SIGCHLD);
	sigprocmask(SIG_BLOCK, &chld, &be->helper_mask);
	pid = fork();
	if (pid == 0) {
		close(sv[0]);
		helper_main(be, sv[1], parent);
	}
	close(sv[1]);
	if (pid < 0) {
		r = -errno;
		close(sv[0]);
		sigprocmask(SIG_SETMASK, &be->helper_mask, NULL);
		snprintf(be->driver_why, sizeof(be->driver_why), "cannot start a driver helper "
			 "process: %s", strerror(-r));
		free(rep);
		return r;
	}
	be->helper = pid;
	be->helper_fd = sv[0];
	LOG(be, GWP_CRIU_LOG_DEBUG, "driver helper process %d started", (int)pid);
	r = helper_recv(be, rep, be->driver_why, sizeof(be->driver_why));
	if (r == 0 && rep->r < 0) {
		snprintf(be->driver_why, sizeof(be->driver_why), "%s", rep->err);
		r = rep->r;
	} else if (r == 0) {
		snprintf(be->driver_path, sizeof(be->driver_path), "%.255s", rep->err);
	}
	if (r < 0)
		helper_stop(be);
	free(rep);
	return r;
}

/* One request to the helper, started when this hook has none yet. */
static int helper_call(struct gwp_backend *be, const struct helper_request *req,
		       struct helper_reply *rep, char *err, size_t len)
{
	ssize_t n;
	int r;

	if (!be->helper && helper_start(be) < 0) {
		/* it was usable in an earlier hook */
		be->driver = GWP_AVAIL_DOWN;
		snprintf(err, len, "the CUDA driver is no longer usable: %s", be->driver_why);
		return -ENOTSUP;
	}
	do
		n = send(be->helper_fd, req, sizeof(*req), MSG_NOSIGNAL);
	while (n < 0 && errno == EINTR);
	if (n != (ssize_t)sizeof(*req)) {
		snprintf(err, len, "the driver helper process %d: %s", (int)be->helper,
			 n < 0 ? strerror(errno) : "short send");
		r = -EIO;
	} else {
		r = helper_recv(be, rep, err, len);
	}
	if (r < 0) {
		if (be->helper > 0)
			kill(be->helper, SIGKILL);
		helper_stop(be); /* the next call starts another */
		return r;
	}
	if (rep->r < 0)
		snprintf(err, len, "%s", rep->err);
	return rep->r;
}

static int helper_state(struct gwp_backend *be, pid_t pid, enum gwp_state *ret_state,
			pid_t *ret_tid, char *err, size_t len)
{
	struct helper_request req = { .op = HELPER_STATE, .pid = pid };
	struct helper_reply *rep = calloc(1, sizeof(*rep));
	int r;

	if (!rep)
		return -ENOMEM;
	r = helper_call(be, &req, rep, err, len);
	if (r == 0) {
		*ret_state = (enum gwp_state)rep->state;
		*ret_tid = rep->tid;
	}
	free(rep);
	return r;
}

static int helper_step(struct gwp_backend *be, pid_t pid, enum gwp_step step,
		       unsigned lock_timeout_ms, const struct gwp_pair *pairs, unsigned npairs,
		       char *err, size_t len)
{
	struct helper_request *req = calloc(1, sizeof(*req));
	struct helper_reply *rep = calloc(1, sizeof(*rep));
	int r = -ENOMEM;

	if (npairs > GWP_MAX_GPUS) {
		r = -EINVAL;
		goto out;
	}
	if (!req || !rep)
		goto out;
	req->op = HELPER_STEP;
	req->pid = pid;
	req->step = (int)step;
	req->lock_timeout_ms = lock_timeout_ms;
	req->npairs = npairs;
	if (npairs)
		memcpy(req->pairs, pairs, npairs * sizeof(*pairs));
	r = helper_call(be, req, rep, err, len);
out:
	free(req);
	free(rep);
	return r;
}

static int helper_gpus(struct gwp_backend *be, struct gwp_backend_gpu *gpus, unsigned max,
		       unsigned *ret_n, char *err, size_t len)
{
	struct helper_request req = { .op = HELPER_GPUS };
	struct helper_reply *rep = calloc(1, sizeof(*rep));
	unsigned n;
	int r;

	if (!rep)
		return -ENOMEM;
	r = helper_call(be, &req, rep, err, len);
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
	return helper_state(be, pid, ret_state, ret_restore_tid, err, len);
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
	return helper_step(be, pid, step, lock_timeout_ms, pairs, npairs, err, len);
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
	return helper_gpus(be, ret_gpus, max, ret_n, err, len);
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
	char line[768];
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
	LOG(be, GWP_CRIU_LOG_INFO, "gpu-warmd %s of pid %d: %.1f ms (%s)%s%s",
	    c->suspend ? "suspend" : "resume", (int)c->pid,
	    cJSON_IsNumber(total) ? total->valuedouble : 0, line,
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
