/* SPDX-License-Identifier: MIT */
/*
 * The image cache: copies of VRAM image files' data sections kept in pinned pool blocks
 * (daemon/hostpool.h), so that a restore on this host fills VRAM from memory (~50 GB/s) instead
 * of reading the file (5-15 GB/s). RAM only: a restarted daemon starts empty.
 *
 * An entry is keyed by what the daemon can check again from the fds a resume passes, never by a
 * name: for the head file and every segment file, st_dev, st_ino, st_size, st_uid and the mtime
 * and ctime in ns; and the image's id and sizes from its header. Any write, truncation, touch or
 * replacement of a file after the entry was filled changes its key: a lookup then misses (and the
 * stale entry goes). The data of an entry was read from the file itself (by the dump that wrote
 * it, or a preload), with the key taken before the read and checked unchanged after it.
 *
 * Ownership: an entry records the uid whose request made it; a non-root requester only hits,
 * lists or drops its own uid's entries (root: all). Bounds: at most limit_bytes of blocks, and
 * only blocks the pool has free; a suspend into the pool always wins (gw_imagecache_make_room
 * evicts, least recently used first). An entry being read by a restore is pinned (refs) and is
 * never evicted; nor is one being filled.
 *
 * This module is the table alone (no loop, no workers, no requests): imagecache-ops.c feeds it.
 * Loop thread only.
 */
#ifndef GW_IMAGECACHE_H
#define GW_IMAGECACHE_H

#include <stdint.h>
#include <sys/socket.h>
#include <sys/types.h>
#include <time.h>

#include <cjson/cJSON.h>

#include "gw-vimg.h"
#include "hostpool.h"

#define GW_IMAGECACHE_MAX_FILES (1 + GW_VIMG_MAX_SEGMENTS)
/* Entries at most, whatever their size (a bound on the table and on `warmctl images`). */
#define GW_IMAGECACHE_MAX_ENTRIES 256

/* What fstat says of one file of an image. */
struct gw_imagecache_file {
	dev_t dev;
	ino_t ino;
	off_t size;
	uid_t uid;
	struct timespec mtime, ctime;
};

/* The identity of an image in its files: the head, then its segments in order. */
struct gw_imagecache_key {
	struct gw_imagecache_file files[GW_IMAGECACHE_MAX_FILES];
	unsigned nfiles;
	uint8_t image_id[16];
	uint64_t created_ns, data_bytes, vram_bytes, file_bytes, chunk_bytes;
	uint32_t version, nsegments, nranges;
};

struct gw_imagecache;

struct gw_imagecache_entry {
	struct gw_imagecache_entry *prev, *next; /* most recently used first */
	struct gw_imagecache *cache; /* the table it is in */
	uint64_t id;          /* for `warmctl images drop ID`; never reused */
	uid_t owner;          /* whose request made it */
	struct gw_imagecache_key key;
	void **blocks;        /* the data section packed into pool blocks, as a memory image */
	size_t nblocks;
	unsigned refs;        /* restores reading it */
	int ready;            /* filled (else being filled: not served, not evicted) */
	const char *origin;   /* "dump" or "load" */
	double created_ms, used_ms;
	uint64_t hits;
};

struct gw_imagecache_stats {
	uint64_t hits, misses, evictions, inserts, stale, fills_failed;
};

struct gw_imagecache {
	struct gw_hostpool *pool;
	uint64_t limit_bytes;   /* 0: the cache is off */
	uint64_t bytes;         /* blocks held by entries, filled or being filled */
	struct gw_imagecache_entry *head, *tail;
	unsigned nentries;
	uint64_t next_id;
	unsigned fills; /* fills running (imagecache-ops.c) */
	struct gw_imagecache_stats stats;
};

int gw_imagecache_create(struct gw_hostpool *pool, uint64_t limit_bytes,
			 struct gw_imagecache **ret_cache);
/* Gives every entry's blocks back to the pool (no entry may still be pinned). */
void gw_imagecache_destroy(struct gw_imagecache *c);
static inline int gw_imagecache_enabled(const struct gw_imagecache *c)
{
	return c && c->limit_bytes > 0;
}

/* The key of image v in its files (fstat of each fd): 0 or -errno. */
int gw_imagecache_key_from_fds(struct gw_imagecache_key *k, const struct gw_vimg *v, int head_fd,
			       const int *seg_fds, unsigned nseg_fds);
int gw_imagecache_key_equal(const struct gw_imagecache_key *a, const struct gw_imagecache_key *b);
/* The same, the files' change times compared only when ctime_too. */
int gw_imagecache_key_match(const struct gw_imagecache_key *a, const struct gw_imagecache_key *b,
			    int ctime_too);

/*
 * A new entry for key, being filled, with blocks for key->data_bytes taken from the pool
 * (evicting least recently used entries for room, under the limit and in the pool). Entries of
 * the same head inode that are not this key are stale and go first. -EALREADY (this key is cached
 * or being filled), -E2BIG (larger than the limit), -ENOSPC (no room even after evicting),
 * -ENOMEM.
 */
int gw_imagecache_reserve(struct gw_imagecache *c, const struct gw_imagecache_key *key, uid_t owner,
			  const char *origin, double now_ms, struct gw_imagecache_entry **ret_entry);
/* The entry (ready or being filled) of owner with exactly this key, or NULL. */
struct gw_imagecache_entry *gw_imagecache_find(struct gw_imagecache *c,
					       const struct gw_imagecache_key *key, uid_t owner);
/* The fill of a reserved entry ended: ok makes it servable, else it goes. */
void gw_imagecache_commit(struct gw_imagecache *c, struct gw_imagecache_entry *e, int ok);

/* The ready entry with exactly this key that requester may use (root: any; else its own uid),
 * pinned (refs) and made most recent; NULL (a miss, counted) otherwise. */
struct gw_imagecache_entry *gw_imagecache_lookup(struct gw_imagecache *c,
						 const struct gw_imagecache_key *key,
						 uid_t requester, double now_ms);
void gw_imagecache_unpin(struct gw_imagecache *c, struct gw_imagecache_entry *e);

/* Evict unpinned entries, least recently used first, until the pool has blocks free blocks or
 * nothing more can go. Returns how many went. */
unsigned gw_imagecache_make_room(struct gw_imagecache *c, size_t blocks);

/* Drop entry id as requester (its owner or root): 0, -ENOENT (no such entry the requester may
 * see), -EBUSY (a restore reads it, or it is being filled). */
int gw_imagecache_drop(struct gw_imagecache *c, uint64_t id, uid_t requester);
/* Drop every unpinned entry requester may drop; returns how many. */
unsigned gw_imagecache_drop_all(struct gw_imagecache *c, uid_t requester);

/* {"entries": [...], "others": N}: what peer may see; the counts of the rest. */
cJSON *gw_imagecache_list_json(const struct gw_imagecache *c, const struct ucred *peer,
			       double now_ms);
/* Status's "image_cache": limit, bytes, entries, hits, misses, evictions (anyone may see). */
cJSON *gw_imagecache_status_json(const struct gw_imagecache *c);

#endif
