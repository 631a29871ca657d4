/* SPDX-License-Identifier: MIT */
/*
 * The daemon's threads, and the pool that runs its blocking work.
 *
 * One event loop thread owns the daemon's state: the socket side (server.c: accepting, frames
 * in and out through proto's framer, timers, every gw_request and its reply), the GPU table,
 * leases, operations and their progress messages. Anything that blocks (priming or releasing a
 * GPU, pinning the image pool, the driver's checkpoint calls on a pid, the fast path's VRAM
 * copies and image file I/O) is a job of this pool: work() runs on a pool thread, then done()
 * runs on the loop thread (woken through an eventfd), where the results are applied and the
 * request is answered. Every submitted job gets its done(): gw_worker_pool_destroy() waits for
 * the running ones and runs the pending done() callbacks on the caller's (the loop's) thread.
 *
 * work() touches its job's data, the driver (through the GPU context it makes current), and
 * only state made for sharing and guarded for it: the image pool (hostpool.c, its lock), a GPU's
 * staging buffers (gw_gpu.staging_lock, held for a whole copy), and a fast-path operation's
 * error slot (its job_lock: an operation runs one job per GPU at once) and progress counter
 * (atomics that the loop's progress timer reads). Never the server, leases or requests. A job
 * may run short-lived threads of its own (the copy engine's I/O lanes, copy.c), joined before
 * work() returns.
 *
 * The pool has --workers threads plus one per GPU, so that an operation's jobs on every GPU can
 * run together. Two classes of jobs: the daemon's own and root's (CRIU's plugin) run first, and
 * one thread takes nothing else, so no number of users' long driver waits (a lock waits up to
 * its timeout) can delay them; users' jobs take the remaining threads in the order they came.
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
