/* SPDX-License-Identifier: MIT */
/*
 * What the agent does when the daemon asks (gpuwarm.Agent.*): the only place the agent makes
 * CUDA calls. Each operation takes the range table lock (waiting, boundedly, until no app thread
 * is inside a tracked VMM call) and makes its driver calls in the devices' primary contexts.
 */
#ifndef SHIM_OPS_H
#define SHIM_OPS_H

#include <stdbool.h>
#include <stdint.h>

#include <cjson/cJSON.h>

#include "gw-proto.h"
#include "shim.h"

/* The answer to one request: a result (and fds), or an error. */
struct shim_reply {
	cJSON *result;            /* owned; NULL with an error */
	const char *error_name;   /* GW_ERROR_*, NULL on success */
	char error_message[256];
	cJSON *error_extra;       /* owned, may be NULL */
	int fds[GW_FRAME_MAX_FDS];
	unsigned nfds;
};

void shim_reply_finish(struct shim_reply *reply) SHIM_HIDDEN;

/* {"offset": k} -> {"total": N, "ranges": [{va, size, device, uuid}]} + one fd per range:
 * ranges k .. of the list fixed (and the devices synchronised) at offset 0 */
void shim_op_export(const cJSON *params, struct shim_reply *reply) SHIM_HIDDEN;
/* {} -> {"released": n, "bytes": b}: the ranges of the latest Export (nothing else: memory the
 * daemon has not copied is never dropped) */
void shim_op_release(const cJSON *params, struct shim_reply *reply) SHIM_HIDDEN;
/* {"ranges": [{va, size, device}]} + one fd per range -> {"mapped": n} */
void shim_op_map(const cJSON *params, const int *fds, unsigned nfds,
		 struct shim_reply *reply) SHIM_HIDDEN;
/* {"ranges": n, "bytes": b, "released": n, "foreign": n} of the reported ranges, and the
 * table generation they belong to. NULL when out of memory or the table stays locked. */
cJSON *shim_op_counts(uint64_t *ret_gen, bool *ret_any_released) SHIM_HIDDEN;

#endif
