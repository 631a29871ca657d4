/* SPDX-License-Identifier: MIT */
/*
 * A pool of threads for blocking driver work (priming, pinning, checkpoint calls). work() runs on
 * a pool thread and must touch only its own job data; done() then runs on the event loop thread,
 * where all daemon state lives.
 *
 * Two classes of jobs: the daemon's own and root's (CRIU's plugin) run first, and one thread
 * takes nothing else, so no number of users' long driver waits (a lock waits up to its timeout)
 * can delay them; users' jobs take the remaining threads in the order they came.
 */
#ifndef GW_WORKER_H
#define GW_WORKER_H

#include <event2/event.h>

struct gw_worker_pool;

typedef void (*gw_work_fn)(void *data);
typedef void (*gw_done_fn)(void *data);

int gw_worker_pool_create(struct event_base *base, unsigned threads,
			  struct gw_worker_pool **ret_pool);
/* Waits for queued and running jobs, running their done() callbacks, then stops the threads. */
void gw_worker_pool_destroy(struct gw_worker_pool *pool);

enum gw_work_class {
	GW_WORK_PRIVILEGED, /* the daemon's own jobs and root's requests */
	GW_WORK_USER,       /* non-root clients' requests */
};

/* Queue a job. Returns 0 or -ENOMEM / -ESHUTDOWN. */
int gw_worker_submit_class(struct gw_worker_pool *pool, enum gw_work_class cls, gw_work_fn work,
			   gw_done_fn done, void *data);
/* A privileged job. */
int gw_worker_submit(struct gw_worker_pool *pool, gw_work_fn work, gw_done_fn done, void *data);

/* Jobs queued or running. */
unsigned gw_worker_pending(const struct gw_worker_pool *pool);

#endif
