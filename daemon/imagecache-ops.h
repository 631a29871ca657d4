/* SPDX-License-Identifier: MIT */
/*
 * The image cache in the daemon (the table: daemon/imagecache.h): filling it from image files on
 * workers, the hooks the fast path calls, and gpuwarm.Images (docs/protocol.md).
 *
 * A fill (a dump's offer, or `warmctl images load`): on a worker, the head's header and tables are
 * read and checked, the segment files checked against them, and the files' key taken (fstat); on
 * the loop, an entry is reserved (pool blocks, evicting LRU entries); on a worker, the data is read
 * into the blocks and the key taken again; on the loop the entry is kept only when the key did
 * not change meanwhile (else the files were written while being read: nothing is kept).
 *
 * The hooks, each one call where the fast path handles an image (struct gw_image, imagestore.h):
 *   gw_imagecache_offer   a suspend into files succeeded: cache them, in the background
 *                         (fastop.c, gw_fastop_finish)
 *   gw_imagecache_attach  a fill is about to read an image's files: serve it from the cache
 *                         (fast-resume.c, the "cache hit" step of every fill; the operation's
 *                         result then says "image_cache": "hit", opengine.h)
 *   gw_imagecache_detach  an image is freed: blocks it borrowed go back to the cache
 *                         (imagestore.c, gw_image_free)
 *   gw_imagecache_yield   a suspend needs pool blocks: entries make way (fast-suspend.c)
 */
#ifndef GW_IMAGECACHE_OPS_H
#define GW_IMAGECACHE_OPS_H

#include <cjson/cJSON.h>
#include <stddef.h>
#include <sys/types.h>

#include "daemon.h"
#include "server.h"

struct gw_image;
struct gw_imagecache_key;

/* Hook, after a suspend into files (image->fd >= 0) succeeded, by owner: the cache reads the
 * files as they are now into pool blocks, on a worker, in the background; the image and its fds
 * stay the caller's (the cache dups them). Nothing happens when the cache is off or full of
 * pinned entries; never fails the suspend. */
void gw_imagecache_offer(struct gw_daemon *d, const struct gw_image *image, uid_t owner);

/* Hook, before a fill reads image's files (image->fd >= 0, no blocks of its own): when the
 * cache holds exactly these files (their key now, from the fds) for requester, image borrows the
 * entry's blocks (image->blocks, image->cached; the entry is pinned) and 1 is returned: its data
 * then comes from the blocks (the copy store prefers them to the files). 0: a miss (counted), or
 * not a file image; read the files. */
int gw_imagecache_attach(struct gw_daemon *d, struct gw_image *image, uid_t requester);

/* Hook, first thing when image is freed (gw_image_free): blocks borrowed from the cache are
 * unpinned and forgotten by the image (so they do not go back to the pool). No-op otherwise. */
void gw_imagecache_detach(struct gw_image *image);

/* Hook, before a suspend takes nblocks pool blocks: evict cache entries (LRU, unpinned) until the
 * pool has them free, or nothing more can go. Suspended images always win over the cache. */
void gw_imagecache_yield(struct gw_daemon *d, size_t nblocks);

/* Fill an entry from an image's files for owner (origin "dump" or "load"), taking head_fd and
 * segs (closed at the end). req (a load): answered when it ends, with {id, already, data_bytes,
 * vram_bytes, duration_ms} or the error. want: the key the files must still have (a dump's), or
 * NULL. 0, or -errno (the fds closed, req not answered) when it cannot start. */
int gw_imagecache_fill_start(struct gw_daemon *d, struct gw_request *req, uid_t owner,
			     const char *origin, int head_fd, const int *segs, unsigned nseg,
			     const struct gw_imagecache_key *want);

/* gpuwarm.Images {"action": "list" | "drop" | "load", ...}. */
void gw_imagecache_handle(struct gw_daemon *d, struct gw_request *req);

#endif
