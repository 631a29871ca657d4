/* SPDX-License-Identifier: MIT */
/*
 * VRAM images (common/gw-vimg.h) and where their data lives: pinned pool blocks, one file, or
 * segment files (daemon/imageio.h). Making one for a suspend (pool blocks or its files), sealing
 * a file image (header and tables last), reading and checking one from the fds of a resume, and
 * freeing it. Plus the prefills: an image file's VRAM created and filled ahead of its resume,
 * keyed by the file's identity and the image's id.
 *
 * An image may hold pool blocks and a file at once (a cache of a file image in RAM): the key of
 * its file (gw_image_key) is what a resume of the same file finds it by.
 *
 * gw_image_file_prepare(), gw_image_seal(), gw_image_read() and gw_image_discard() do file I/O:
 * worker threads only. The prefill list is the loop's.
 */
#ifndef GW_IMAGESTORE_H
#define GW_IMAGESTORE_H

#include <cjson/cJSON.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "copy.h"
#include "gw-vimg.h"

struct gw_hostpool;
struct gw_daemon;
struct gw_fast_op;
struct gw_imagecache_entry;

struct gw_image {
	struct gw_vimg v;
	void **blocks; /* memory store */
	size_t nblocks;
	int fd; /* file store (the client's file, passed to us); -1 for memory */
	uint8_t *map; /* while a suspend writes it: the file mapped shared, or NULL */
	size_t map_bytes;
	int written_mapped; /* the suspend wrote it through the mapping (else with pwrite) */
	int seg_fds[GW_VIMG_MAX_SEGMENTS]; /* version 2: its segment files (daemon/imageio.h) */
	unsigned nseg_fds;
	/* Its data borrowed from the image cache (imagecache-ops.h): blocks are the entry's, the
	 * copy store reads them instead of the files. NULL: blocks, if any, are its own. */
	struct gw_imagecache_entry *cached;
};

/* Which image of which file: the file's identity and the image's id. */
struct gw_image_key {
	dev_t dev;
	ino_t ino;
	uint8_t id[16];
};

/* An empty image (no store yet), or NULL. */
struct gw_image *gw_image_new(void);
/* Give back its blocks to pool (blocks borrowed from the image cache go back to it), close its
 * files, free it. NULL: no-op. */
void gw_image_free(struct gw_hostpool *pool, struct gw_image *image);
void gw_image_unmap(struct gw_image *image);
/* The image's file key (its head file's identity, its id): 0, or -errno (no file). */
int gw_image_key(const struct gw_image *image, struct gw_image_key *ret);

/* Pinned pool blocks for the laid-out image's data: 0, -ENOSPC (the pool's free bytes in
 * *ret_free) or -ENOMEM. */
int gw_image_alloc_blocks(struct gw_image *image, struct gw_hostpool *pool, size_t *ret_free);
/* The laid-out image goes into fd (and the segment files): taken, even on failure. Checks
 * the space, sizes the files, maps a root-owned single file for writing. */
int gw_image_file_prepare(struct gw_image *image, int fd, const int *seg_fds, unsigned nseg,
			  char *err, size_t errlen);
/* A file image is complete: write its header and tables. No-op for memory. */
int gw_image_seal(struct gw_image *image, char *err, size_t errlen);
/* Read and check the image in fd and its segment files (all taken: the image's, or closed);
 * a header whose tables exceed max_tables is -E2BIG. */
int gw_image_read(int fd, int *seg_fds, unsigned nseg, uint64_t max_tables,
		  struct gw_image **ret, char *err, size_t errlen);
/* A failed suspend's files: truncated to nothing. */
void gw_image_discard(struct gw_image *image);
/* The copy engine's view of the image's store. */
void gw_image_store(const struct gw_image *image, struct gw_copy_store *s);

/*
 * A prefill: an image file's VRAM created, filled and checked ahead of its resume (CRIU's plugin
 * asks at POST_FORKING, while CRIU restores the process's memory), held as exported allocations
 * until a Resume of the same file (same inode, same image id) takes them, or it expires.
 */
struct gw_prefill {
	struct gw_prefill *next;
	struct gw_daemon *d;
	struct gw_image_key key;
	int have_id;
	int ready;                 /* filled: fds hold the VRAM */
	int *fds;
	size_t nfds;
	uint64_t vram_bytes, data_bytes;
	double fill_ms;
	struct gw_fast_op *filling; /* the prefill operation, while it runs */
	struct gw_fast_op *waiter;  /* a resume of the same image waiting for it */
	int from_cache;             /* filled from the image cache (imagecache-ops.h) */
	int abandoned;              /* its waiter ended without it: freed once the fill ends */
	struct event *expiry;
};

#define GW_PREFILL_TTL_S 120

/* A new prefill of the file (dev, ino), on d's list. */
struct gw_prefill *gw_prefill_new(struct gw_daemon *d, dev_t dev, ino_t ino);
struct gw_prefill *gw_prefill_find(struct gw_daemon *d, dev_t dev, ino_t ino);
/* Filled: it holds fds (taken) until a resume takes them or GW_PREFILL_TTL_S pass. */
void gw_prefill_ready(struct gw_prefill *pf, int *fds, size_t nfds, double fill_ms);
/* Take its fds (a resume's now): *ret_fds, *ret_n. */
void gw_prefill_take(struct gw_prefill *pf, int **ret_fds, size_t *ret_n);
void gw_prefill_free(struct gw_prefill *pf);
cJSON *gw_prefill_status(struct gw_daemon *d);

#endif
