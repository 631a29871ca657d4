/* SPDX-License-Identifier: MIT */
/*
 * The daemon's state and its life cycle. daemon.c assembles the modules (loop and signals,
 * driver and GPU table, image pool, workers, server), queues the GPU table's prime and release
 * jobs, keeps the drain/undrain requests parked until their GPUs get there, and tells systemd
 * (READY=, STATUS=, WATCHDOG=, STOPPING=). Nothing calls back into daemon.c: it registers the
 * GPU table's hooks and the server's callbacks. Loop thread only, except what jobs carry.
 */
#ifndef GW_DAEMON_H
#define GW_DAEMON_H

#include <event2/event.h>
#include <stdint.h>
#include <sys/types.h>

#include "gpu.h"
#include "gw-cuda.h"
#include "hostpool.h"
#include "lease.h"
#include "opstats.h"
#include "pin.h"
#include "quota.h"
#include "server.h"
#include "vramstore.h"
#include "worker.h"

struct gw_options {
	const char *socket_path;
	const char *cuda_library;
	size_t staging_mib;
	size_t image_pool_mib;
	size_t image_cache_mib; /* of the pool, for the image cache (imagecache.h); 0: off */
	size_t chunk_kib; /* VRAM image chunk: the unit of zero elision and checksums */
	mode_t socket_mode;
	const char *socket_group;
	unsigned workers;
	unsigned max_clients;
	unsigned max_clients_per_uid;
	unsigned idle_timeout_s;
	unsigned root_reserve;
	unsigned max_ops_per_uid;
	unsigned handshake_timeout_s;
	unsigned frame_timeout_s;
	const char *vram_store; /* vramstore.h; NULL: none */
	int verbose;
};

enum gw_wait_kind { GW_WAIT_DRAINED, GW_WAIT_READY };

struct gw_waiter;
struct gw_pid_job;
struct gw_pid_record;
struct gw_fast_op;
struct gw_agent;
struct gw_prefill;
struct gw_imagecache;

struct gw_daemon {
	struct event_base *base;
	struct gw_options opts;
	double start_ms;

	struct gw_cuda *cuda;      /* NULL: no driver */
	int driver_ready;          /* cuInit succeeded */
	char driver_error[256];

	struct gw_gpu_table gpu_table; /* gpu.h: written by gpu.c only */

	struct gw_worker_pool *workers;
	struct gw_worker_pool *tracer; /* the one thread that ptraces (opengine.c) */
	struct gw_server *server;
	struct gw_lease_table leases;
	struct gw_quota quota;         /* operations per non-root uid */
	struct gw_waiter *waiters;     /* drain/undrain requests waiting for GPU states */
	struct gw_pid_job *pid_jobs;   /* operations in flight, one per pid at most */
	struct gw_pid_record *pid_records; /* GPUs seen per locked process */
	struct gw_agent *agents;       /* shimmed processes (agents.c) */
	struct gw_fast_op *fast_ops;   /* fast-path operations in flight */
	struct gw_prefill *prefills;   /* VRAM filled ahead of a resume (imagestore.c) */
	struct gw_hostpool hostpool;   /* pinned memory for VRAM images */
	struct gw_imagecache *imagecache; /* image files' data kept in the pool (imagecache.h) */
	struct gw_vramstore vramstore;     /* --vram-store (vramstore.h) */
	int hostpool_started;
	int hostpool_pending;          /* being pinned at start-up */
	char hostpool_error[256];
	struct gw_op_stats stats[GW_OP_KIND_COUNT];
	/* Measured by the last fast resumes: written into images for `warmctl inspect`. */
	struct {
		double fill_bps;      /* data from pinned memory */
		double file_read_bps; /* data read from an image file */
		double device_bps;    /* VRAM per second of a fill's work besides reading the file */
		double restore_fixed_ms; /* freeze, driver restore, map */
	} speeds;

	/* Set by daemon.c, which keeps the parked requests: park req until every GPU in mask is
	 * drained (drain) or ready (undrain), or timeout_ms; -ENOMEM. */
	int (*wait_gpus)(struct gw_daemon *d, struct gw_request *req, uint64_t mask,
			 enum gw_wait_kind kind, unsigned timeout_ms);

	int ready_sent;
	int stopping;
	struct event *sigterm_ev, *sigint_ev, *sigchld_ev, *watchdog_ev;
	char last_status[256];
};

/* On failure everything made is undone: gw_daemon_finish() only after a success. */
int gw_daemon_init(struct gw_daemon *d, const struct gw_options *opts);
int gw_daemon_run(struct gw_daemon *d);
void gw_daemon_finish(struct gw_daemon *d);

/* Process operations (ops.c) */
struct gw_pid_op_params {
	enum gw_op_kind kind;
	pid_t pid;
	struct gw_pin pin; /* pinned at dispatch; gw_ops_start() takes it */
	uid_t owner;       /* who asked: quota (taken by the caller) and work class */
	unsigned timeout_ms;
	CUcheckpointGpuPair pairs[GW_GPU_MAX];
	unsigned npairs;
	uint64_t gpu_mask; /* GPUs this operation counts against for draining */
	int caller_froze;  /* Resume: the caller holds the threads stopped (CRIU) */
};
/* Takes p->pin; on success gives back the caller's quota slot for p->owner when it ends. */
int gw_ops_start(struct gw_daemon *d, struct gw_request *req, struct gw_pid_op_params *p);
int gw_ops_pid_busy(const struct gw_daemon *d, pid_t pid);
/* The GPUs recorded for pid when it was locked through us: count or 0. */
unsigned gw_ops_pid_source_gpus(const struct gw_daemon *d, pid_t pid, unsigned *ret_indexes,
				unsigned max);
void gw_ops_finish(struct gw_daemon *d);

#endif
