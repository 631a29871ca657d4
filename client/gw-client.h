/* SPDX-License-Identifier: MIT */
/*
 * libgpuwarm: a blocking client for the gpu-warmd socket, shared by warmctl, the CRIU plugin and
 * the in-process shim. One gw_client is one connection; calls on it are sequential. Nothing here
 * logs; errors come back as a negative errno plus, where the daemon answered with an error, its
 * name and message in struct gw_client_error.
 *
 * Installed as <gpuwarm/gw-client.h> with libgpuwarm.so.0 (pkg-config libgpuwarm). The shared
 * library exports the gw_client_* and gw_req_* functions below; gw-proto.h, which this header
 * includes, is there for the method and error names, limits and message shapes, not for its
 * functions.
 */
#ifndef GW_CLIENT_H
#define GW_CLIENT_H

#include <cjson/cJSON.h>
#include <stdbool.h>
#include <sys/types.h>

#include "gw-proto.h"

struct gw_client;

struct gw_client_error {
	char name[GW_ERROR_NAME_MAX]; /* GW_ERROR_* from the daemon, "" for a local/transport one */
	char message[512];  /* human text: the daemon's message, or what failed locally */
	int cuda_error;     /* the driver's CUresult when name is GW_ERROR_CUDA, else 0 */
};

#define GW_CLIENT_DEFAULT_TIMEOUT_MS 30000

/*
 * Connect to path (NULL: $GPUWARM_SOCKET, else GW_DEFAULT_SOCKET) and say hello with
 * client_name. Returns 0, or:
 *   -ENOENT / -ECONNREFUSED  nobody listens there (daemon not running)
 *   -EACCES                  the socket exists but we may not connect (group membership)
 *   -EPROTO                  protocol version mismatch or a malformed answer (err says which)
 *   -ETIMEDOUT               no answer within timeout_ms
 */
int gw_client_connect(const char *path, const char *client_name, int timeout_ms,
		      struct gw_client **ret_client, struct gw_client_error *err);
void gw_client_close(struct gw_client *client);

/* The daemon's server string and pid from the hello reply. */
const char *gw_client_server_version(const struct gw_client *client);
int gw_client_fd(const struct gw_client *client);

/*
 * One request/reply. params may be NULL ({}); it is not consumed. fds (nfds <= GW_FRAME_MAX_FDS)
 * are sent with the request. On success *ret_result is the reply's result object (caller
 * cJSON_Delete()s it) and, when ret_fds is given, fds sent back are stored there (capacity
 * *ret_nfds in, count out; the caller closes them). timeout_ms <= 0 means wait forever.
 * Returns 0, -EREMOTEIO when the daemon answered with an error (err->name/message set),
 * -ETIMEDOUT, -ECONNRESET/-EPIPE when the daemon went away, -EPROTO on a malformed reply.
 */
int gw_client_call(struct gw_client *client, const char *method, const cJSON *params,
		   const int *fds, unsigned nfds, int timeout_ms, cJSON **ret_result, int *ret_fds,
		   unsigned *ret_nfds, struct gw_client_error *err);

/*
 * Progress messages (docs/protocol.md): a request that carries "progress": true in its params
 * gets news while it runs; gw_client_call() hands each to fn (NULL: ignores them) and goes on
 * waiting for the reply.
 */
typedef void (*gw_client_progress_fn)(void *data, const cJSON *progress);
void gw_client_set_progress(struct gw_client *client, gw_client_progress_fn fn, void *data);

/*
 * Send one request and do not wait for its reply (the daemon carries the work out whether or
 * not the reply is read): for work that must start now and whose end is met elsewhere (the
 * CRIU plugin's prefill). The connection takes no further calls; close it when done.
 */
int gw_client_send(struct gw_client *client, const char *method, const cJSON *params,
		   const int *fds, unsigned nfds, int timeout_ms, struct gw_client_error *err);

/*
 * ---- typed request builders ----
 * Each builds the params object of one method from C arguments, so that callers do not write
 * request JSON by hand: 0 with *ret_params (pass it to gw_client_call() with the method named,
 * then cJSON_Delete() it), -EINVAL for an argument outside what the protocol allows, -ENOMEM.
 * docs/protocol.md METHODS says what each member means.
 */

/* GW_METHOD_STATUS: {}. */
int gw_req_status(cJSON **ret_params);
/* GW_METHOD_DRAIN: gpus[0 .. ngpus) selectors (ngpus 0: all GPUs), wait, timeout_ms (< 0: the
 * daemon's default). */
int gw_req_drain(const char *const *gpus, unsigned ngpus, bool wait, int timeout_ms,
		 cJSON **ret_params);
/* GW_METHOD_UNDRAIN: gpus as for gw_req_drain(). */
int gw_req_undrain(const char *const *gpus, unsigned ngpus, cJSON **ret_params);
/* GW_METHOD_LEASE_ACQUIRE: on the GPU gpu (a selector), else any ready GPU with min_free_mib
 * free (0: any ready GPU). */
int gw_req_lease_acquire(const char *gpu, uint64_t min_free_mib, cJSON **ret_params);
/* GW_METHOD_LEASE_RELEASE. */
int gw_req_lease_release(uint64_t lease, cJSON **ret_params);
/* GW_METHOD_PROCESS_STATE, GW_METHOD_PROCESS_CHECKPOINT, GW_METHOD_PROCESS_UNLOCK: {pid}. */
int gw_req_process(pid_t pid, cJSON **ret_params);
/* GW_METHOD_PROCESS_LOCK: timeout_ms < 0: the daemon's default; 0: wait for ever. */
int gw_req_lock(pid_t pid, int timeout_ms, cJSON **ret_params);

/* Where a restore puts the process's GPU memory: a GPU (a selector, for a process that used
 * one) and/or pairs of GPU UUIDs ("GPU-..."), from the GPU it was on to the one it goes to. */
struct gw_gpu_pair {
	const char *from_uuid, *to_uuid;
};
struct gw_req_target {
	const char *gpu;                 /* NULL: the same GPU */
	const struct gw_gpu_pair *pairs;
	unsigned npairs;
};
/* GW_METHOD_PROCESS_RESTORE: target may be NULL. */
int gw_req_restore(pid_t pid, const struct gw_req_target *target, cJSON **ret_params);

/* A VRAM image among the request's fds: nfiles files from index first on, the head file and
 * then its segment files in order. Zeroed: no image file. */
struct gw_req_image {
	unsigned nfiles; /* 0: none (Suspend: the daemon's pool); 1: one file; 1 + K: K segments */
	unsigned first;  /* the head's index among the request's fds */
};

struct gw_suspend_opts {
	int timeout_ms;            /* the lock's; < 0: the daemon's default */
	struct gw_req_image image;
	bool dense;                /* keep all-zero chunks in the image ("sparse": false) */
	uint64_t chunk_bytes;      /* 0: the daemon's; else a power of two (docs/image-format.md) */
	bool progress;             /* progress messages (gw_client_set_progress()) */
};
/* GW_METHOD_SUSPEND: opts NULL means all defaults. */
int gw_req_suspend(pid_t pid, const struct gw_suspend_opts *opts, cJSON **ret_params);

struct gw_resume_opts {
	struct gw_req_target target;
	struct gw_req_image image;
	bool progress;
	/* CRIU's plugin only (root): */
	bool threads_frozen;
	pid_t agent_pid, agent_tid; /* 0: none */
};
/* GW_METHOD_RESUME: opts NULL means all defaults. */
int gw_req_resume(pid_t pid, const struct gw_resume_opts *opts, cJSON **ret_params);
/* GW_METHOD_PREFILL (root): image->nfiles >= 1. */
int gw_req_prefill(const struct gw_req_image *image, cJSON **ret_params);

#endif
