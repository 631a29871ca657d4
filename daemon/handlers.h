/* SPDX-License-Identifier: MIT */
/*
 * Request handlers: thin adapters that parse a request's untrusted params, ask the GPU table,
 * the lease table or route() what to do, act, and serialise the answer. handlers.c holds the
 * dispatch table and the GPU, lease and drain methods; handlers-status.c the status method;
 * handlers-process.c the methods that act on a process. Loop thread only.
 */
#ifndef GW_HANDLERS_H
#define GW_HANDLERS_H

#include <stdint.h>

#include "daemon.h"

/* The server's callbacks (data: the struct gw_daemon). */
void gw_handlers_dispatch(void *data, struct gw_request *req);
void gw_handlers_conn_closed(void *data, struct gw_conn *conn);
int gw_handlers_conn_pinned(void *data, struct gw_conn *conn);
/* Result object for drain/undrain replies: {"gpus": [{index, uuid, state}]} for mask. */
cJSON *gw_handlers_gpu_states(const struct gw_gpu_table *t, uint64_t mask);

/* Between the handler files. */
#define GW_TIMEOUT_MAX_MS (24u * 3600 * 1000) /* drain and undrain (root only) */

/* One more operation of owner (gw_quota_take): 0, or the request is answered with LimitReached
 * (max_ops_per_uid) and < 0 returned. */
int gw_handlers_take_quota(struct gw_daemon *d, struct gw_request *req, uid_t owner);
/* "timeout_ms": def_ms when absent; on a bad value the request is answered and < 0 returned. */
int gw_handlers_parse_timeout(struct gw_request *req, unsigned def_ms, unsigned max_ms,
			      unsigned *ret_ms);
void gw_handle_status(struct gw_daemon *d, struct gw_request *req);
void gw_handle_process_state(struct gw_daemon *d, struct gw_request *req);
/* Lock, Checkpoint, Restore, Unlock, Suspend, Resume. */
void gw_handle_process_op(struct gw_daemon *d, struct gw_request *req, enum gw_op_kind kind);
void gw_handle_prefill(struct gw_daemon *d, struct gw_request *req);

#endif
