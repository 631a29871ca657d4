/* SPDX-License-Identifier: MIT */
#include "daemon.h"

#include <errno.h>
#include <grp.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <systemd/sd-daemon.h>
#include <sys/wait.h>
#include <unistd.h>

#include "clock.h"
#include "fastpath.h"
#include "handlers.h"
#include "imagecache.h"
#include "log.h"

struct gw_waiter {
	struct gw_waiter *next;
	struct gw_daemon *d;
	struct gw_request *req;
	uint64_t mask;
	enum gw_wait_kind kind;
	struct event *timer;
};

/* A prime or release job: the GPU's handles travel with the job, never shared. */
struct gw_gpu_job {
	struct gw_daemon *d;
	unsigned index;
	CUdevice device;
	size_t staging_bytes;
	struct gw_gpu_handles handles;
	int result;
};

/* ---- the image pool: pinned once, with the first primed GPU's context ---- */

struct gw_pool_job {
	struct gw_daemon *d;
	CUcontext context;
	size_t bytes;
	CUresult cu;
	int result;
};

static void pool_work(void *data)
{
	struct gw_pool_job *job = data;

	job->cu = CUDA_SUCCESS;
	job->result = job->d->cuda->cuCtxSetCurrent(job->context) == CUDA_SUCCESS ?
			      gw_hostpool_grow(&job->d->hostpool, job->bytes, &job->cu) :
			      -EIO;
}

static void pool_done(void *data)
{
	struct gw_pool_job *job = data;
	struct gw_daemon *d = job->d;

	d->hostpool_pending = 0;
	if (job->result < 0) {
		char text[160];

		snprintf(d->hostpool_error, sizeof(d->hostpool_error),
			 "pinning the %zu MiB image pool failed: %s", job->bytes >> 20,
			 job->cu != CUDA_SUCCESS ? gw_cuda_describe(d->cuda, job->cu, text, sizeof(text)) :
						   strerror(-job->result));
		gw_err("%s; the fast path can hold only what got pinned (%zu MiB)",
		       d->hostpool_error, gw_hostpool_total_bytes(&d->hostpool) >> 20);
	} else {
		gw_info("image pool: %zu MiB pinned in %.0f ms",
			gw_hostpool_total_bytes(&d->hostpool) >> 20, d->hostpool.pin_ms);
	}
	free(job);
	gw_gpu_table_changed(&d->gpu_table);
}

/* Once no GPU is priming any more, pin the image pool through the first ready one. */
static void maybe_start_pool(struct gw_daemon *d)
{
	struct gw_pool_job *job;
	struct gw_gpu *ready = NULL;

	if (d->hostpool_started || d->opts.image_pool_mib == 0)
		return;
	for (unsigned i = 0; i < d->gpu_table.count; i++) {
		if (d->gpu_table.gpus[i].state == GW_GPU_PRIMING)
			return;
		if (!ready && d->gpu_table.gpus[i].state == GW_GPU_READY)
			ready = &d->gpu_table.gpus[i];
	}
	d->hostpool_started = 1;
	if (!ready) {
		d->hostpool_pending = 0;
		return;
	}
	job = calloc(1, sizeof(*job));
	if (!job) {
		d->hostpool_pending = 0;
		return;
	}
	job->d = d;
	job->context = ready->handles.context;
	job->bytes = d->opts.image_pool_mib << 20;
	if (gw_worker_submit(d->workers, pool_work, pool_done, job) < 0) {
		free(job);
		d->hostpool_pending = 0;
	}
}

/* ---- the GPU table's hooks: its blocking work on workers ---- */

static void prime_work(void *data)
{
	struct gw_gpu_job *job = data;

	job->result = gw_gpu_prime(job->device, job->d->cuda, job->staging_bytes, &job->handles);
}

static void release_work(void *data)
{
	struct gw_gpu_job *job = data;

	gw_gpu_release(job->device, job->d->cuda, &job->handles);
}

static void prime_done(void *data)
{
	struct gw_gpu_job *job = data;
	struct gw_gpu_table *t = &job->d->gpu_table;
	unsigned index = job->index;
	struct gw_gpu_handles handles = job->handles;
	int result = job->result;

	free(job);
	gw_gpu_table_primed(t, index, &handles, result);
}

static void release_done(void *data)
{
	struct gw_gpu_job *job = data;
	struct gw_gpu_table *t = &job->d->gpu_table;
	unsigned index = job->index;

	free(job);
	gw_gpu_table_released(t, index);
}

static int submit_gpu_job(struct gw_daemon *d, const struct gw_gpu *gpu, gw_work_fn work,
			  gw_done_fn done, struct gw_gpu_handles *handles)
{
	struct gw_gpu_job *job = calloc(1, sizeof(*job));
	int r;

	if (!job)
		return -ENOMEM;
	job->d = d;
	job->index = gpu->index;
	job->device = gpu->device;
	job->staging_bytes = d->opts.staging_mib << 20;
	if (handles)
		job->handles = *handles;
	r = gw_worker_submit(d->workers, work, done, job);
	if (r < 0)
		free(job);
	return r;
}

static int hook_prime(void *data, const struct gw_gpu *gpu)
{
	return submit_gpu_job(data, gpu, prime_work, prime_done, NULL);
}

static int hook_release(void *data, const struct gw_gpu *gpu, struct gw_gpu_handles *handles)
{
	return submit_gpu_job(data, gpu, release_work, release_done, handles);
}

static void hook_changed(void *data);

static const struct gw_gpu_table_hooks gpu_hooks = {
	.prime = hook_prime,
	.release = hook_release,
	.changed = hook_changed,
};

/* ---- waiters ---- */

static int waiter_satisfied(const struct gw_daemon *d, const struct gw_waiter *w, int *ret_failed)
{
	*ret_failed = 0;
	for (unsigned i = 0; i < d->gpu_table.count; i++) {
		const struct gw_gpu *gpu = &d->gpu_table.gpus[i];

		if (!(w->mask & ((uint64_t)1 << i)))
			continue;
		if (w->kind == GW_WAIT_DRAINED && gpu->state != GW_GPU_DRAINED)
			return 0;
		if (w->kind == GW_WAIT_READY) {
			if (gpu->state == GW_GPU_FAILED)
				*ret_failed = 1;
			else if (gpu->state != GW_GPU_READY)
				return 0;
		}
	}
	return 1;
}

static void waiter_remove(struct gw_daemon *d, struct gw_waiter *w)
{
	for (struct gw_waiter **p = &d->waiters; *p; p = &(*p)->next)
		if (*p == w) {
			*p = w->next;
			break;
		}
	event_free(w->timer);
	free(w);
}

static void on_waiter_timeout(evutil_socket_t fd, short what, void *arg)
{
	struct gw_waiter *w = arg;
	struct gw_daemon *d = w->d;
	struct gw_request *req = w->req;
	const char *want = w->kind == GW_WAIT_DRAINED ? GW_GPU_STATE_DRAINED : GW_GPU_STATE_READY;

	(void)fd;
	(void)what;
	waiter_remove(d, w);
	gw_request_fail(req, GW_ERROR_TIMEOUT,
			gw_handlers_gpu_states(&d->gpu_table, gw_gpu_table_all(&d->gpu_table)),
			"timed out before every GPU asked for was %s; those still draining go on "
			"and finish when their operations end",
			want);
}

static void wake_waiters(struct gw_daemon *d)
{
	struct gw_waiter *w = d->waiters, *next;

	for (; w; w = next) {
		struct gw_request *req = w->req;
		uint64_t mask = w->mask;
		int failed;

		next = w->next;
		if (!waiter_satisfied(d, w, &failed))
			continue;
		waiter_remove(d, w);
		if (failed)
			gw_request_fail(req, GW_ERROR_CUDA,
					gw_handlers_gpu_states(&d->gpu_table, mask),
					"priming failed on at least one GPU; see its error in status");
		else
			gw_request_reply(req, gw_handlers_gpu_states(&d->gpu_table, mask));
	}
}

static int wait_gpus(struct gw_daemon *d, struct gw_request *req, uint64_t mask,
		     enum gw_wait_kind kind, unsigned timeout_ms)
{
	struct gw_waiter *w = calloc(1, sizeof(*w));
	struct timeval tv = { timeout_ms / 1000, (timeout_ms % 1000) * 1000 };

	if (!w)
		return -ENOMEM;
	w->timer = evtimer_new(d->base, on_waiter_timeout, w);
	if (!w->timer) {
		free(w);
		return -ENOMEM;
	}
	w->d = d;
	w->req = req;
	w->mask = mask;
	w->kind = kind;
	w->next = d->waiters;
	d->waiters = w;
	evtimer_add(w->timer, &tv);
	wake_waiters(d);
	return 0;
}

/* ---- state changes ---- */

static void update_status(struct gw_daemon *d)
{
	unsigned ready = 0, draining = 0, drained = 0, failed = 0, priming = 0;
	size_t pinned = 0;
	char status[256];

	for (unsigned i = 0; i < d->gpu_table.count; i++) {
		switch (d->gpu_table.gpus[i].state) {
		case GW_GPU_READY:
			ready++;
			break;
		case GW_GPU_DRAINING:
		case GW_GPU_RELEASING:
			draining++;
			break;
		case GW_GPU_DRAINED:
			drained++;
			break;
		case GW_GPU_FAILED:
			failed++;
			break;
		case GW_GPU_PRIMING:
			priming++;
			break;
		}
		pinned += gw_staging_pool_bytes(&d->gpu_table.gpus[i].handles.staging);
	}
	if (!d->cuda || !d->driver_ready)
		snprintf(status, sizeof(status), "no GPU driver: serving with 0 GPUs");
	else
		snprintf(status, sizeof(status),
			 "%u GPUs: %u ready, %u priming, %u draining, %u drained, %u failed; "
			 "%zu MiB staging, %zu MiB image pool%s; %u clients",
			 d->gpu_table.count, ready, priming, draining, drained, failed, pinned >> 20,
			 gw_hostpool_total_bytes(&d->hostpool) >> 20,
			 d->hostpool_pending ? " (pinning)" : "",
			 d->server ? gw_server_client_count(d->server) : 0);
	if (strcmp(status, d->last_status) != 0) {
		snprintf(d->last_status, sizeof(d->last_status), "%s", status);
		sd_notifyf(0, "STATUS=%s", status);
	}
	if (!d->ready_sent && priming == 0 && !d->hostpool_pending && d->server) {
		d->ready_sent = 1;
		sd_notify(0, "READY=1");
		gw_notice("ready: %s", status);
	}
}

/* The table advanced its own transitions: the image pool, parked requests, STATUS=. */
static void hook_changed(void *data)
{
	struct gw_daemon *d = data;

	maybe_start_pool(d);
	wake_waiters(d);
	update_status(d);
}

/* ---- life cycle ---- */

static void load_driver(struct gw_daemon *d)
{
	char err[256];
	CUresult r;
	int n;

	if (gw_cuda_load(d->opts.cuda_library, &d->cuda, err, sizeof(err)) < 0) {
		snprintf(d->driver_error, sizeof(d->driver_error), "%s", err);
		gw_warn("%s; serving with 0 GPUs (is the NVIDIA driver installed? "
			"--cuda-library names another library)",
			err);
		return;
	}
	r = d->cuda->cuInit(0);
	if (r != CUDA_SUCCESS) {
		char text[160];

		snprintf(d->driver_error, sizeof(d->driver_error), "cuInit failed: %s",
			 gw_cuda_describe(d->cuda, r, text, sizeof(text)));
		gw_warn("%s; serving with 0 GPUs", d->driver_error);
		return;
	}
	d->driver_ready = 1;
	n = gw_gpu_table_discover(&d->gpu_table, d->cuda, err, sizeof(err));
	if (n < 0) {
		snprintf(d->driver_error, sizeof(d->driver_error), "%s", err);
		gw_warn("GPU discovery failed: %s; serving with 0 GPUs", err);
		return;
	}
	gw_info("CUDA driver %s: version %d.%d, %u GPUs, checkpoint API %s, VMM API %s",
		d->cuda->path, d->cuda->driver_version / 1000, d->cuda->driver_version % 1000 / 10,
		d->gpu_table.count, gw_cuda_has_checkpoint(d->cuda) ? "yes" : "no",
		gw_cuda_has_vmm(d->cuda) ? "yes" : "no");
	for (unsigned i = 0; i < d->gpu_table.count; i++)
		gw_gpu_log(&d->gpu_table.gpus[i], LOG_INFO, "GPU %u %s %s, %zu MiB", i, d->gpu_table.gpus[i].name,
			   d->gpu_table.gpus[i].uuid_text, d->gpu_table.gpus[i].memory_total >> 20);
}

static void on_signal(evutil_socket_t sig, short what, void *arg)
{
	struct gw_daemon *d = arg;

	(void)what;
	if (d->stopping)
		return;
	d->stopping = 1;
	gw_notice("%s: stopping", strsignal((int)sig));
	sd_notify(0, "STOPPING=1");
	gw_server_stop_listening(d->server);
	event_base_loopexit(d->base, NULL);
}

/*
 * The daemon has no children, but it is the tracer of the threads it freezes: a frozen thread
 * killed before the thaw is reported to us when it dies, and its parent cannot reap the process
 * until we have. gw_thaw() collects those already dead; the ones still dying come here.
 */
static void on_sigchld(evutil_socket_t sig, short what, void *arg)
{
	int status;

	(void)sig;
	(void)what;
	(void)arg;
	while (waitpid(-1, &status, WNOHANG | __WALL) > 0)
		;
}

static void on_watchdog(evutil_socket_t fd, short what, void *arg)
{
	(void)fd;
	(void)what;
	(void)arg;
	sd_notify(0, "WATCHDOG=1");
}

static int setup_signals_and_watchdog(struct gw_daemon *d)
{
	uint64_t usec = 0;

	signal(SIGPIPE, SIG_IGN);
	d->sigterm_ev = evsignal_new(d->base, SIGTERM, on_signal, d);
	d->sigint_ev = evsignal_new(d->base, SIGINT, on_signal, d);
	d->sigchld_ev = evsignal_new(d->base, SIGCHLD, on_sigchld, d);
	if (!d->sigterm_ev || !d->sigint_ev || !d->sigchld_ev ||
	    evsignal_add(d->sigterm_ev, NULL) < 0 || evsignal_add(d->sigint_ev, NULL) < 0 ||
	    evsignal_add(d->sigchld_ev, NULL) < 0)
		return -ENOMEM;
	if (sd_watchdog_enabled(0, &usec) > 0 && usec > 0) {
		struct timeval tv = { (time_t)(usec / 2 / 1000000), (suseconds_t)(usec / 2 % 1000000) };

		d->watchdog_ev = event_new(d->base, -1, EV_PERSIST, on_watchdog, d);
		if (!d->watchdog_ev || event_add(d->watchdog_ev, &tv) < 0)
			return -ENOMEM;
		gw_info("systemd watchdog: pinging every %.1f s", (double)usec / 2e6);
	}
	return 0;
}

static int resolve_group(const char *name, gid_t *ret_gid)
{
	struct group *g;

	*ret_gid = (gid_t)-1;
	if (!name || !*name)
		return 0;
	g = getgrnam(name);
	if (!g)
		return -ENOENT;
	*ret_gid = g->gr_gid;
	return 0;
}

/* The socket and its server: clients are served from here on. */
static int create_server(struct gw_daemon *d)
{
	const struct gw_options *opts = &d->opts;
	struct gw_server_limits limits = {
		.max_clients = opts->max_clients,
		.max_clients_per_uid = opts->max_clients_per_uid,
		.root_reserve = opts->root_reserve,
		.handshake_timeout_ms = opts->handshake_timeout_s * 1000,
		.frame_timeout_ms = opts->frame_timeout_s * 1000,
		.idle_timeout_ms = opts->idle_timeout_s * 1000,
		.max_output_bytes = 4u << 20,
	};
	struct gw_server_callbacks callbacks = {
		.dispatch = gw_handlers_dispatch,
		.conn_closed = gw_handlers_conn_closed,
		.conn_pinned = gw_handlers_conn_pinned,
	};
	char err[256];
	int activated = 0, r;
	gid_t gid;

	r = resolve_group(opts->socket_group, &gid);
	if (r < 0) {
		gw_err("socket group %s does not exist; create it (groupadd %s) or pass "
		       "--socket-group ''",
		       opts->socket_group, opts->socket_group);
		return r;
	}
	r = gw_server_create(d->base, &limits, &callbacks, d, &d->server);
	if (r < 0)
		return r;
	r = gw_server_listen(d->server, opts->socket_path, opts->socket_mode, gid, &activated, err,
			     sizeof(err));
	if (r < 0) {
		gw_err("%s", err);
		return r;
	}
	gw_notice("gpu-warmd %s listening on %s%s", GW_VERSION,
		  activated ? "the socket systemd passed" : opts->socket_path,
		  activated ? "" : " (own bind)");
	return 0;
}

static int open_vram_store(struct gw_daemon *d)
{
	char err[600];
	int r;

	if (!d->opts.vram_store)
		return 0;
	r = gw_vramstore_open(&d->vramstore, d->opts.vram_store, err, sizeof(err));
	if (r < 0)
		gw_err("--vram-store: %s", err);
	else
		gw_info("VRAM store: %s (CRIU's plugin puts VRAM image data there)",
			d->vramstore.path);
	return r;
}

/* The modules, in order: loop and signals, driver and GPU table, image pool and its cache,
 * workers, server; then the GPUs start priming. On failure, what was made is undone in
 * reverse order. */
int gw_daemon_init(struct gw_daemon *d, const struct gw_options *opts)
{
	int r;

	memset(d, 0, sizeof(*d));
	gw_vramstore_init(&d->vramstore);
	d->opts = *opts;
	d->start_ms = gw_now_ms();
	d->wait_gpus = wait_gpus;
	gw_gpu_table_init(&d->gpu_table, &gpu_hooks, d);
	gw_lease_table_init(&d->leases);
	gw_quota_init(&d->quota, opts->max_ops_per_uid);
	d->base = event_base_new();
	r = d->base ? setup_signals_and_watchdog(d) : -ENOMEM;
	if (r < 0)
		goto fail;

	load_driver(d);
	gw_hostpool_init(&d->hostpool, d->cuda);
	d->hostpool_pending = d->opts.image_pool_mib > 0 && d->gpu_table.count > 0;
	r = gw_imagecache_create(&d->hostpool, (uint64_t)d->opts.image_cache_mib << 20,
				 &d->imagecache);
	if (r < 0)
		goto fail;
	r = open_vram_store(d);
	if (r < 0)
		goto fail;

	r = gw_worker_pool_create(d->base, opts->workers + d->gpu_table.count, &d->workers);
	if (r < 0) {
		gw_err("cannot start worker threads: %s", strerror(-r));
		goto fail;
	}
	r = create_server(d);
	if (r < 0)
		goto fail;
	gw_gpu_table_prime_all(&d->gpu_table);
	return 0;

fail:
	gw_daemon_finish(d);
	return r;
}

int gw_daemon_run(struct gw_daemon *d)
{
	if (event_base_dispatch(d->base) < 0)
		return -EIO;
	return 0;
}

/* The modules in the reverse order of gw_daemon_init(); each tolerates never having started. */
void gw_daemon_finish(struct gw_daemon *d)
{
	/* Requests still parked get an answer; running driver calls finish first. */
	while (d->waiters) {
		struct gw_request *req = d->waiters->req;

		waiter_remove(d, d->waiters);
		gw_request_fail(req, GW_ERROR_INTERNAL, NULL, "gpu-warmd is stopping");
	}
	if (d->server)
		gw_server_stop_listening(d->server);
	gw_worker_pool_destroy(d->workers); /* runs every pending done() */
	d->workers = NULL;
	gw_ops_finish(d);
	gw_server_destroy(d->server);
	d->server = NULL;
	gw_fast_finish(d);
	gw_imagecache_destroy(d->imagecache); /* after every image that borrowed its blocks */
	d->imagecache = NULL;
	gw_vramstore_close(&d->vramstore);
	gw_lease_table_finish(&d->leases);
	gw_quota_finish(&d->quota);
	if (gw_gpu_table_any_context(&d->gpu_table))
		d->cuda->cuCtxSetCurrent(gw_gpu_table_any_context(&d->gpu_table));
	gw_hostpool_finish(&d->hostpool);
	gw_gpu_table_finish(&d->gpu_table);
	gw_cuda_unload(d->cuda);
	d->cuda = NULL;
	if (d->watchdog_ev)
		event_free(d->watchdog_ev);
	if (d->sigterm_ev)
		event_free(d->sigterm_ev);
	if (d->sigint_ev)
		event_free(d->sigint_ev);
	if (d->sigchld_ev)
		event_free(d->sigchld_ev);
	if (d->base)
		event_base_free(d->base);
	d->base = NULL;
}
