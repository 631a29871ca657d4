/* SPDX-License-Identifier: MIT */
/*
 * The plugin's fallback when gpu-warmd is not there: the CUDA driver, called in a helper process
 * forked on the first driver call of a hook (common/gw-cuda: dlopen + cuInit there; the steps
 * through common/gw-ckpt), never loaded into CRIU's own process. gwp-backend.c routes to it.
 */
#ifndef GWP_DRIVER_H
#define GWP_DRIVER_H

#include <signal.h>
#include <stddef.h>
#include <sys/types.h>

#include "gwp-backend.h"
#include "gwp-criu.h"
#include "gwp-plan.h"

struct gw_cuda;

struct gwp_driver {
	const struct gwp_criu *criu; /* for logging; NULL in the helper */
	enum gwp_avail avail;
	struct gw_cuda *cuda;        /* only in the helper process */
	char why[512];               /* why the driver is unusable */
	char path[256];              /* the library the helper loaded */
	pid_t helper;                /* the helper process, 0 when none (negative: reaped) */
	int fd;
	sigset_t mask;               /* the signal mask before it, SIGCHLD blocked while it lives */
};

/* Fork the helper (when there is none) and read its greeting: 0, or a negative errno with
 * d->why set. */
int gwp_driver_start(struct gwp_driver *d);
/* The helper exits (the next call starts another). */
void gwp_driver_stop(struct gwp_driver *d);

/* As gwp_backend_state(), _step() and _gpus(), through the helper. A helper that cannot be
 * started again sets d->avail to GWP_AVAIL_DOWN and answers -ENOTSUP. */
int gwp_driver_state(struct gwp_driver *d, pid_t pid, enum gwp_state *ret_state,
		     pid_t *ret_tid, char *err, size_t len);
int gwp_driver_step(struct gwp_driver *d, pid_t pid, enum gwp_step step,
		    unsigned lock_timeout_ms, const struct gwp_pair *pairs, unsigned npairs,
		    char *err, size_t len);
int gwp_driver_gpus(struct gwp_driver *d, struct gwp_backend_gpu *gpus, unsigned max,
		    unsigned *ret_n, char *err, size_t len);

#endif
