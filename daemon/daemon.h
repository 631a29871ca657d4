/* SPDX-License-Identifier: MIT */
/*
 * The daemon's state and its life cycle: driver, GPU table, workers, leases, operations in
 * flight, drain/undrain, systemd notification. Loop thread only, except what jobs carry.
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
#include "pin.h"
#include "quota.h"
#include "server.h"
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
	int verbose;
};

enum gw_op_kind {
	GW_OP_LOCK,
	GW_OP_CHECKPOINT,
	GW_OP_RESTORE,
	GW_OP_UNLOCK,
	GW_OP_SUSPEND,
	GW_OP_RESUME,
	GW_OP_KIND_COUNT,
};

/* Upper bounds (seconds) of the duration histogram's buckets; the last one is +Inf. */
#define GW_OP_BUCKET_BOUNDS { 0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60 }
#define GW_OP_BUCKETS 12

struct gw_op_stats {
	uint64_t ok, failed;
	double total_ms;
	uint64_t buckets[GW_OP_BUCKETS]; /* non-cumulative counts per bucket */
	uint64_t bytes;                  /* VRAM moved by the fast path */
};

/* Count one finished operation. */
void gw_op_stats_record(struct gw_op_stats *stats, int ok, double ms, uint64_t bytes);

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

	struct gw_gpu gpus[GW_GPU_MAX];
	unsigned ngpus;

	struct gw_worker_pool *workers;
	struct gw_server *server;
	struct gw_lease_table leases;
	struct gw_quota quota;         /* operations per non-root uid */
	struct gw_waiter *waiters;     /* drain/undrain requests waiting for GPU states */
	struct gw_pid_job *pid_jobs;   /* operations in flight, one per pid at most */
	struct gw_pid_record *pid_records; /* GPUs seen per locked process */
	struct gw_agent *agents;       /* shimmed processes (fastpath.c) */
	struct gw_fast_op *fast_ops;   /* fast-path operations in flight */
	struct gw_prefill *prefills;   /* VRAM filled ahead of a resume (fastpath.c) */
	struct gw_hostpool hostpool;   /* pinned memory for VRAM images */
	struct gw_imagecache *imagecache; /* image files' data kept in the pool (imagecache.h) */
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

	int ready_sent;
	int stopping;
	struct event *sigterm_ev, *sigint_ev, *sigchld_ev, *watchdog_ev;
	char last_status[256];
};

const char *gw_op_kind_name(enum gw_op_kind kind);

int gw_daemon_init(struct gw_daemon *d, const struct gw_options *opts);
int gw_daemon_run(struct gw_daemon *d);
void gw_daemon_finish(struct gw_daemon *d);

/* GPU state machine (daemon.c). mask: bit i = GPU i. */
uint64_t gw_daemon_all_gpus(const struct gw_daemon *d);
void gw_daemon_drain(struct gw_daemon *d, uint64_t mask);
void gw_daemon_undrain(struct gw_daemon *d, uint64_t mask);
/* Something changed (in-flight count, a job finished): advance drains, wake waiters, STATUS=. */
void gw_daemon_gpus_changed(struct gw_daemon *d);
/* Park req until every GPU in mask is drained (drain) or ready (undrain), or timeout_ms. */
enum gw_wait_kind { GW_WAIT_DRAINED, GW_WAIT_READY };
int gw_daemon_wait(struct gw_daemon *d, struct gw_request *req, uint64_t mask,
		   enum gw_wait_kind kind, unsigned timeout_ms);
void gw_daemon_update_status(struct gw_daemon *d);

/* Requests (handlers.c) */
void gw_handlers_dispatch(void *data, struct gw_request *req);
void gw_handlers_conn_closed(void *data, struct gw_conn *conn);
int gw_handlers_conn_pinned(void *data, struct gw_conn *conn);
/* Result object for gw_waiter replies: {"gpus": [{index, uuid, state}]} for mask. */
cJSON *gw_handlers_gpu_states(struct gw_daemon *d, uint64_t mask);

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
