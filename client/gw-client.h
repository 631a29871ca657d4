/* SPDX-License-Identifier: MIT */
/*
 * libgpuwarm: a blocking client for the gpu-warmd socket, shared by warmctl, the CRIU plugin and
 * the in-process shim. One gw_client is one connection; calls on it are sequential. Nothing here
 * logs; errors come back as a negative errno plus, where the daemon answered with an error, its
 * name and message in struct gw_client_error.
 *
 * Installed as <gpuwarm/gw-client.h> with libgpuwarm.so.0 (pkg-config libgpuwarm). The shared
 * library exports the gw_client_* functions below; gw-proto.h, which this header includes, is
 * there for the method and error names, limits and message shapes, not for its functions.
 */
#ifndef GW_CLIENT_H
#define GW_CLIENT_H

#include <cjson/cJSON.h>

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

#endif
