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

/* What the helper is asked and answers (over a socketpair, as they are). */
enum gwp_driver_op { GWP_DRIVER_STATE = 1, GWP_DRIVER_STEP, GWP_DRIVER_GPUS };

struct gwp_driver_request {
	int op;                   /* enum gwp_driver_op */
	pid_t pid;                /* state, step */
	int step;                 /* enum gwp_step */
	unsigned lock_timeout_ms;
	unsigned npairs;
	struct gwp_pair pairs[GWP_MAX_GPUS];
};

struct gwp_driver_reply {
	int r;          /* what the call returned; for the greeting, 0 or -ENOTSUP */
	char err[512];  /* its reason; for the greeting, the library's path or why it is unusable */
	int state;      /* enum gwp_state */
	pid_t tid;      /* the CUDA restore thread */
	unsigned ngpus;
	struct gwp_backend_gpu gpus[GWP_MAX_GPUS];
};

/* One request to the helper, started when this hook has none yet: 0 or a negative errno (err
 * says why). A helper that cannot be started again sets d->avail to GWP_AVAIL_DOWN and answers
 * -ENOTSUP. */
int gwp_driver_call(struct gwp_driver *d, const struct gwp_driver_request *req,
		    struct gwp_driver_reply *rep, char *err, size_t len);

#endif
