/* SPDX-License-Identifier: MIT */
/*
 * The per-GPU table, the centre of the daemon (as in nvidia-persistenced): identity read at
 * discovery, a primed primary context and a pinned staging pool per GPU, and the GPU's state
 * machine, operation and lease counts. gpu.c is the only writer of state, in_flight and leases;
 * everyone else reads them, asks for transitions (drain, undrain) and reports operations and
 * leases through the gw_gpu_table_* / gw_gpu_op_* / gw_gpu_lease_* calls below. The table is
 * owned by the event loop thread; the blocking gw_gpu_prime()/gw_gpu_release() run on worker
 * threads (queued through the owner's hooks) and touch only that GPU's driver handles.
 *
 *   priming --primed--> ready --drain--> draining --in_flight 0--> releasing --> drained
 *      |  \--failed--> failed --drain--> draining                                  |
 *      \---- drain while priming: drains once primed     undrain: priming again <--/
 * undrain of a draining GPU makes it ready again (it was never released); of a releasing one,
 * primes it again once released; of a failed one, primes it again.
 */
#ifndef GW_GPU_H
#define GW_GPU_H

#include <stddef.h>
#include <stdint.h>

#include "gw-cuda.h"
#include <pthread.h>

#include "staging.h"

#define GW_GPU_MAX 64
#define GW_GPU_UUID_LEN 48
#define GW_GPU_PCI_LEN 32
#define GW_GPU_NAME_LEN 128

/* What priming makes and releasing frees: owned by whichever job or GPU holds it. */
#define GW_GPU_STREAMS 16 /* one per I/O lane (copy-io.c: a lane waits on its stream only) */

struct gw_gpu_handles {
	CUcontext context;
	CUstream streams[GW_GPU_STREAMS]; /* the copy engine's */
	unsigned nstreams;
	struct gw_staging_pool staging;
	/* The chunk-scan kernel (daemon/kernels/scan.cu); NULL when it could not be loaded: images
	 * are then dense and unverified, and scan_error says why. */
	CUmodule scan_module;
	CUfunction scan;
	char scan_error[160];
	size_t memory_free;
	char error[256];
};

enum gw_gpu_state {
	GW_GPU_PRIMING,   /* context and staging being set up */
	GW_GPU_READY,     /* primed: serves leases and operations */
	GW_GPU_DRAINING,  /* no new work; waits for in-flight operations */
	GW_GPU_RELEASING, /* releasing context and pinned memory */
	GW_GPU_DRAINED,   /* nothing of ours on the GPU: it can be reset */
	GW_GPU_FAILED,    /* priming failed; see error */
};

struct gw_gpu {
	unsigned index;
	CUdevice device;
	CUuuid uuid;
	char uuid_text[GW_GPU_UUID_LEN];
	char pci_bus_id[GW_GPU_PCI_LEN];
	char name[GW_GPU_NAME_LEN];
	size_t memory_total;
	size_t memory_free; /* as of the last refresh */

	/* Written by gpu.c only. */
	enum gw_gpu_state state;
	int drain_after_prime;   /* drain asked while priming */
	int prime_after_release; /* undrain asked while releasing */
	unsigned in_flight; /* operations counted against this GPU */
	unsigned leases;
	char error[256];

	/* Set on the loop thread from a finished prime job, moved out for a release job. */
	struct gw_gpu_handles handles;
	/* Held by a worker while it copies through the staging buffers (image files). */
	pthread_mutex_t staging_lock;
};

const char *gw_gpu_state_name(enum gw_gpu_state state);
/* Only a ready GPU takes new leases and operations. */
int gw_gpu_state_accepts_work(enum gw_gpu_state state);
int gw_gpu_accepts_work(const struct gw_gpu *gpu);

/* What the table asks of its owner (daemon.c): the blocking halves of its transitions, queued
 * on a worker, and a word when the GPUs changed. */
struct gw_gpu_table_hooks {
	/* Queue gw_gpu_prime() for gpu; when it ends, call gw_gpu_table_primed(). */
	int (*prime)(void *data, const struct gw_gpu *gpu);
	/* Queue gw_gpu_release() of handles (moved out of gpu: the job owns them now); when it
	 * ends, call gw_gpu_table_released(). On failure handles are left to the table, which
	 * releases them right away. */
	int (*release)(void *data, const struct gw_gpu *gpu, struct gw_gpu_handles *handles);
	/* States or counts changed (after the table advanced its own transitions). */
	void (*changed)(void *data);
};

struct gw_gpu_table {
	struct gw_gpu gpus[GW_GPU_MAX];
	unsigned count;
	const struct gw_cuda *cuda; /* NULL: no driver (count 0) */
	const struct gw_gpu_table_hooks *hooks;
	void *data;
};

void gw_gpu_table_init(struct gw_gpu_table *t, const struct gw_gpu_table_hooks *hooks,
		       void *data);
/* Fill the table from the driver (cuInit done): the count, or -errno with err set. */
int gw_gpu_table_discover(struct gw_gpu_table *t, const struct gw_cuda *cuda, char *err,
			  size_t errlen);
/* Release every primed GPU's handles (blocking; at exit, after the workers stopped). */
void gw_gpu_table_finish(struct gw_gpu_table *t);
/* mask: bit i = GPU i. */
uint64_t gw_gpu_table_all(const struct gw_gpu_table *t);
/* The GPUs that take new work now. */
uint64_t gw_gpu_table_accepting(const struct gw_gpu_table *t);
/* Any primed GPU's context (the image pool pins through it), or NULL. */
CUcontext gw_gpu_table_any_context(const struct gw_gpu_table *t);

/* Transitions. Each ends with gw_gpu_table_changed(). */
void gw_gpu_table_prime_all(struct gw_gpu_table *t);
void gw_gpu_table_drain(struct gw_gpu_table *t, uint64_t mask);
void gw_gpu_table_undrain(struct gw_gpu_table *t, uint64_t mask);
/* A prime job ended: takes handles; result < 0: the GPU failed (handles->error says why). */
void gw_gpu_table_primed(struct gw_gpu_table *t, unsigned index,
			 const struct gw_gpu_handles *handles, int result);
void gw_gpu_table_released(struct gw_gpu_table *t, unsigned index);
/* Something changed (an operation ended, a lease went): finish drains whose GPUs have nothing in
 * flight, prime again what was undrained meanwhile, then tell the owner. */
void gw_gpu_table_changed(struct gw_gpu_table *t);

/* An operation counted against the GPUs in mask begins / ends. After the end (and the
 * operation's own clean-up), gw_gpu_table_changed() lets a drain waiting on it complete. */
void gw_gpu_op_begin(struct gw_gpu_table *t, uint64_t mask);
void gw_gpu_op_end(struct gw_gpu_table *t, uint64_t mask);
/* A lease on GPU index was taken / dropped. */
void gw_gpu_lease_add(struct gw_gpu_table *t, unsigned index);
void gw_gpu_lease_drop(struct gw_gpu_table *t, unsigned index);

/*
 * Fill gpus[] (capacity max) from the driver; cuInit must have succeeded. Returns the count or
 * a negative errno, with the reason in err.
 */
int gw_gpu_discover(const struct gw_cuda *cuda, struct gw_gpu *gpus, unsigned max, char *err,
		    size_t errlen);

/* Blocking, on a worker: retain + make current device's primary context, create the copy
 * streams, pin staging_bytes, read free memory. On failure everything is undone and ret->error says why. */
int gw_gpu_prime(CUdevice device, const struct gw_cuda *cuda, size_t staging_bytes,
		 struct gw_gpu_handles *ret);
/* Blocking, on a worker: free the staging pool, release the primary context. */
void gw_gpu_release(CUdevice device, const struct gw_cuda *cuda, struct gw_gpu_handles *handles);
/* Quick driver query of free memory through the primed context (no-op when not primed). */
void gw_gpu_refresh_memory(struct gw_gpu *gpu, const struct gw_cuda *cuda);

/*
 * Resolve a selector as nvidia-smi takes them: an index ("0"), a UUID ("GPU-..." or its hex
 * form without prefix), or a PCI bus id ("0000:3b:00.0" or "3b:00.0", any case).
 * Returns the GPU or NULL.
 */
struct gw_gpu *gw_gpu_find(struct gw_gpu *gpus, unsigned count, const char *selector);
struct gw_gpu *gw_gpu_find_uuid(struct gw_gpu *gpus, unsigned count, const CUuuid *uuid);

#endif
