/* SPDX-License-Identifier: MIT */
/*
 * Unit tests of the image cache's table (daemon/imagecache.h) over a pool of the fake driver's
 * pinned memory: keys (every identity field, from real files too), hits and misses, owners, LRU
 * eviction, pins, bounds, drops, and what a suspend into the pool takes back.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "gw-cuda.h"
#include "gw-test.h"
#include "hostpool.h"
#include "imagecache.h"

#define BLOCK ((uint64_t)GW_HOSTPOOL_BLOCK_BYTES)

struct fixture {
	struct gw_cuda *cuda;
	struct gw_hostpool pool;
	struct gw_imagecache *c;
};

/* A pool of nblocks blocks and a cache of limit_blocks blocks. */
static void setup(struct fixture *f, size_t nblocks, uint64_t limit_blocks)
{
	char err[256];
	CUdevice dev;
	CUcontext ctx;
	CUresult cu = CUDA_SUCCESS;

	if (gw_cuda_load(NULL, &f->cuda, err, sizeof(err)) < 0)
		GW_FAIL("%s", err);
	GW_ASSERT_INT_EQ(f->cuda->cuInit(0), CUDA_SUCCESS);
	GW_ASSERT_INT_EQ(f->cuda->cuDeviceGet(&dev, 0), CUDA_SUCCESS);
	GW_ASSERT_INT_EQ(f->cuda->cuDevicePrimaryCtxRetain(&ctx, dev), CUDA_SUCCESS);
	GW_ASSERT_INT_EQ(f->cuda->cuCtxSetCurrent(ctx), CUDA_SUCCESS);
	gw_hostpool_init(&f->pool, f->cuda);
	if (nblocks)
		GW_ASSERT_INT_EQ(gw_hostpool_grow(&f->pool, nblocks * BLOCK, &cu), 0);
	GW_ASSERT_INT_EQ(gw_imagecache_create(&f->pool, limit_blocks * BLOCK, &f->c), 0);
}

static void teardown(struct fixture *f)
{
	gw_imagecache_destroy(f->c);
	gw_imagecache_destroy(NULL);
	gw_hostpool_finish(&f->pool);
	gw_cuda_unload(f->cuda);
}

/* A key of one file (inode ino) whose image has data_blocks blocks of data. */
static struct gw_imagecache_key key_of(ino_t ino, uint64_t data_blocks)
{
	struct gw_imagecache_key k;

	memset(&k, 0, sizeof(k));
	k.nfiles = 1;
	k.files[0].dev = 42;
	k.files[0].ino = ino;
	k.files[0].size = (off_t)(data_blocks * BLOCK + 4096);
	k.files[0].uid = 1000;
	k.files[0].mtime.tv_sec = 1000;
	k.files[0].ctime.tv_sec = 1000;
	k.image_id[0] = (uint8_t)ino;
	k.data_bytes = data_blocks * BLOCK;
	k.vram_bytes = 2 * k.data_bytes;
	k.file_bytes = (uint64_t)k.files[0].size;
	k.chunk_bytes = 1u << 20;
	k.version = 1;
	k.nranges = 1;
	return k;
}

/* Reserve and fill an entry; returns it. */
static struct gw_imagecache_entry *add(struct fixture *f, const struct gw_imagecache_key *k,
				       uid_t owner, double now)
{
	struct gw_imagecache_entry *e = NULL;

	GW_ASSERT_INT_EQ(gw_imagecache_reserve(f->c, k, owner, "dump", now, &e), 0);
	GW_ASSERT(e && !e->ready && e->nblocks == (k->data_bytes + BLOCK - 1) / BLOCK);
	gw_imagecache_commit(f->c, e, 1);
	GW_ASSERT(e->ready);
	return e;
}

GW_TEST(imagecache_key_differs_on_every_identity_field)
{
	struct gw_imagecache_key a = key_of(7, 1), b;

	a.nfiles = 2;
	a.files[1] = a.files[0];
	a.files[1].ino = 8;
	b = a;
	GW_ASSERT(gw_imagecache_key_equal(&a, &b));
#define CHANGED(stmt)                                                                             \
	do {                                                                                      \
		b = a;                                                                            \
		stmt;                                                                             \
		GW_ASSERT(!gw_imagecache_key_equal(&a, &b));                                      \
	} while (0)
	for (unsigned i = 0; i < 2; i++) {
		CHANGED(b.files[i].dev++);
		CHANGED(b.files[i].ino++);
		CHANGED(b.files[i].size--);
		CHANGED(b.files[i].uid++);
		CHANGED(b.files[i].mtime.tv_nsec++);
		CHANGED(b.files[i].mtime.tv_sec++);
		CHANGED(b.files[i].ctime.tv_nsec++);
		CHANGED(b.files[i].ctime.tv_sec++);
	}
	CHANGED(b.nfiles = 1);
	CHANGED(b.image_id[15] ^= 1);
	CHANGED(b.created_ns++);
	CHANGED(b.data_bytes++);
	CHANGED(b.vram_bytes++);
	CHANGED(b.file_bytes++);
	CHANGED(b.chunk_bytes *= 2);
	CHANGED(b.version = 2);
	CHANGED(b.nsegments = 1);
	CHANGED(b.nranges++);
#undef CHANGED
	/* A change of ctime alone passes only the looser match (a rename after the dump). */
	b = a;
	b.files[1].ctime.tv_nsec++;
	GW_ASSERT(!gw_imagecache_key_equal(&a, &b));
	GW_ASSERT(gw_imagecache_key_match(&a, &b, 0));
	GW_ASSERT(!gw_imagecache_key_match(&a, &b, 1));
	/* No files: never a match */
	a.nfiles = b.nfiles = 0;
	GW_ASSERT(!gw_imagecache_key_equal(&a, &b));
}

/* Each change to a real file, seen through its fd: a write, a touch, a truncation, a chmod. */
GW_TEST(imagecache_key_from_fds_sees_every_change)
{
	char path[] = "/tmp/gw-imagecache-XXXXXX", seg[64];
	struct gw_imagecache_key a, b;
	struct gw_vimg v;
	int fd, sfd;

	memset(&v, 0, sizeof(v));
	v.id[0] = 1;
	fd = mkstemp(path);
	GW_ASSERT(fd >= 0);
	snprintf(seg, sizeof(seg), "%s.seg", path);
	sfd = open(seg, O_RDWR | O_CREAT | O_EXCL, 0600);
	GW_ASSERT(sfd >= 0);
	GW_ASSERT(write(fd, "head", 4) == 4 && write(sfd, "data", 4) == 4);
	GW_ASSERT_INT_EQ(gw_imagecache_key_from_fds(&a, &v, fd, &sfd, 1), 0);
	GW_ASSERT_INT_EQ(a.nfiles, 2);
	GW_ASSERT_INT_EQ(gw_imagecache_key_from_fds(&b, &v, fd, &sfd, 1), 0);
	GW_ASSERT(gw_imagecache_key_equal(&a, &b));
	/* (each change waits out the coarse timestamp clock of older kernels) */
#define AFTER(stmt)                                                                               \
	do {                                                                                      \
		usleep(20000);                                                                    \
		GW_ASSERT(stmt);                                                                  \
		GW_ASSERT_INT_EQ(gw_imagecache_key_from_fds(&b, &v, fd, &sfd, 1), 0);             \
		GW_ASSERT(!gw_imagecache_key_equal(&a, &b));                                      \
		a = b;                                                                            \
	} while (0)
	AFTER(pwrite(fd, "H", 1, 0) == 1);            /* the same size, new bytes */
	AFTER(pwrite(sfd, "D", 1, 0) == 1);           /* a segment written */
	AFTER(futimens(fd, NULL) == 0);               /* touched */
	AFTER(ftruncate(sfd, 2) == 0);                /* truncated */
	AFTER(fchmod(fd, 0640) == 0);                 /* ctime alone */
	GW_ASSERT(gw_imagecache_key_match(&a, &b, 0));
#undef AFTER
	v.id[0] = 2; /* another image in the same files */
	GW_ASSERT_INT_EQ(gw_imagecache_key_from_fds(&b, &v, fd, &sfd, 1), 0);
	GW_ASSERT(!gw_imagecache_key_equal(&a, &b));
	GW_ASSERT_INT_EQ(gw_imagecache_key_from_fds(&b, &v, -1, NULL, 0), -EBADF);
	close(fd);
	close(sfd);
	unlink(path);
	unlink(seg);
}

GW_TEST(imagecache_hits_and_misses_by_key_and_owner)
{
	struct fixture f;
	struct gw_imagecache_key k = key_of(1, 1), other = key_of(2, 1);
	struct gw_imagecache_entry *e;

	setup(&f, 4, 4);
	GW_ASSERT(gw_imagecache_lookup(f.c, &k, 0, 1) == NULL); /* empty */
	e = add(&f, &k, 1000, 1);
	GW_ASSERT_INT_EQ(f.c->bytes, BLOCK);
	GW_ASSERT_INT_EQ(gw_hostpool_free_bytes(&f.pool), 3 * BLOCK);
	GW_ASSERT(gw_imagecache_lookup(f.c, &other, 0, 2) == NULL);
	GW_ASSERT(gw_imagecache_lookup(f.c, &k, 1001, 2) == NULL); /* another user's */
	GW_ASSERT(gw_imagecache_lookup(f.c, &k, 1000, 3) == e);    /* the owner's */
	GW_ASSERT(gw_imagecache_lookup(f.c, &k, 0, 4) == e);       /* root: any */
	GW_ASSERT_INT_EQ(e->refs, 2);
	GW_ASSERT_INT_EQ(f.c->stats.hits, 2);
	GW_ASSERT_INT_EQ(f.c->stats.misses, 3);
	gw_imagecache_unpin(f.c, e);
	gw_imagecache_unpin(f.c, e);
	gw_imagecache_unpin(f.c, NULL);
	GW_ASSERT_INT_EQ(e->refs, 0);
	/* The same files again for the same owner: already there; another owner gets its own. */
	GW_ASSERT_INT_EQ(gw_imagecache_reserve(f.c, &k, 1000, "load", 5, &e), -EALREADY);
	GW_ASSERT(gw_imagecache_find(f.c, &k, 1000) != NULL);
	GW_ASSERT(gw_imagecache_find(f.c, &k, 1001) == NULL);
	e = add(&f, &k, 1001, 5);
	GW_ASSERT(gw_imagecache_lookup(f.c, &k, 1001, 6) == e);
	gw_imagecache_unpin(f.c, e);
	/* An entry being filled is never served. */
	GW_ASSERT_INT_EQ(gw_imagecache_reserve(f.c, &other, 1000, "dump", 7, &e), 0);
	GW_ASSERT(gw_imagecache_lookup(f.c, &other, 1000, 8) == NULL);
	gw_imagecache_commit(f.c, e, 0); /* a failed fill goes */
	GW_ASSERT_INT_EQ(f.c->nentries, 2);
	GW_ASSERT_INT_EQ(f.c->stats.fills_failed, 1);
	teardown(&f);
}

GW_TEST(imagecache_a_stale_entry_goes_on_a_miss_of_its_inode)
{
	struct fixture f;
	struct gw_imagecache_key k = key_of(1, 1), newer = k;

	setup(&f, 4, 4);
	add(&f, &k, 0, 1);
	newer.files[0].ctime.tv_nsec++; /* written since */
	GW_ASSERT(gw_imagecache_lookup(f.c, &newer, 0, 2) == NULL);
	GW_ASSERT_INT_EQ(f.c->nentries, 0);
	GW_ASSERT_INT_EQ(f.c->stats.stale, 1);
	GW_ASSERT_INT_EQ(gw_hostpool_free_bytes(&f.pool), 4 * BLOCK);
	/* and on a new dump into the same inode */
	add(&f, &k, 0, 3);
	add(&f, &newer, 0, 4);
	GW_ASSERT_INT_EQ(f.c->nentries, 1);
	GW_ASSERT(gw_imagecache_find(f.c, &newer, 0) != NULL);
	teardown(&f);
}

GW_TEST(imagecache_evicts_least_recently_used_first_never_pinned)
{
	struct fixture f;
	struct gw_imagecache_key k1 = key_of(1, 1), k2 = key_of(2, 1), k3 = key_of(3, 1),
				 k4 = key_of(4, 2);
	struct gw_imagecache_entry *e1, *e2, *e3;

	setup(&f, 8, 3); /* the limit, not the pool, is the bound */
	e1 = add(&f, &k1, 0, 1);
	e2 = add(&f, &k2, 0, 2);
	e3 = add(&f, &k3, 0, 3);
	(void)e3;
	/* e1 used: e2 is now the least recently used */
	GW_ASSERT(gw_imagecache_lookup(f.c, &k1, 0, 4) == e1);
	gw_imagecache_unpin(f.c, e1);
	/* k4 needs two blocks: e2, then e3 go (e1 is the most recent) */
	add(&f, &k4, 0, 5);
	GW_ASSERT_INT_EQ(f.c->stats.evictions, 2);
	GW_ASSERT(gw_imagecache_find(f.c, &k1, 0) && !gw_imagecache_find(f.c, &k2, 0) &&
		  !gw_imagecache_find(f.c, &k3, 0));
	(void)e2;
	/* A pinned entry is never evicted: with e1 pinned, nothing of one block fits */
	GW_ASSERT(gw_imagecache_lookup(f.c, &k1, 0, 6) == e1);
	GW_ASSERT_INT_EQ(gw_imagecache_reserve(f.c, &k2, 0, "dump", 7, &e2), 0); /* k4 goes */
	gw_imagecache_commit(f.c, e2, 1);
	GW_ASSERT_INT_EQ(gw_imagecache_reserve(f.c, &k3, 0, "dump", 8, &e3), 0); /* fits */
	/* two blocks: k2 goes, but k1 is pinned and k3 being filled: no room */
	GW_ASSERT_INT_EQ(gw_imagecache_reserve(f.c, &k4, 0, "dump", 9, &e2), -ENOSPC);
	GW_ASSERT(gw_imagecache_find(f.c, &k1, 0) == e1);
	GW_ASSERT_INT_EQ(gw_imagecache_drop(f.c, e1->id, 0), -EBUSY);
	GW_ASSERT_INT_EQ(gw_imagecache_drop(f.c, e3->id, 0), -EBUSY); /* being filled */
	gw_imagecache_commit(f.c, e3, 1);
	gw_imagecache_unpin(f.c, e1);
	teardown(&f);
}

GW_TEST(imagecache_bounds_limit_pool_and_off)
{
	struct fixture f;
	struct gw_imagecache_key big = key_of(1, 3), k = key_of(2, 1);
	struct gw_imagecache_entry *e;

	setup(&f, 2, 8); /* a limit above the pool: the pool bounds */
	GW_ASSERT_INT_EQ(gw_imagecache_reserve(f.c, &big, 0, "dump", 1, &e), -E2BIG);
	teardown(&f);

	setup(&f, 8, 2);
	GW_ASSERT_INT_EQ(gw_imagecache_reserve(f.c, &big, 0, "dump", 1, &e), -E2BIG);
	/* the pool's free blocks bound it too: a suspend took all but one */
	{
		void *taken[7];

		GW_ASSERT_INT_EQ(gw_hostpool_take(&f.pool, 7, taken), 0);
		add(&f, &k, 0, 2);
		GW_ASSERT_INT_EQ(gw_imagecache_reserve(f.c, &big, 0, "dump", 3, &e), -E2BIG);
		k = key_of(3, 1);
		add(&f, &k, 0, 3); /* evicts the first: no free block left */
		GW_ASSERT_INT_EQ(f.c->stats.evictions, 1);
		gw_hostpool_give(&f.pool, taken, 7);
	}
	teardown(&f);

	setup(&f, 2, 0); /* off */
	GW_ASSERT(!gw_imagecache_enabled(f.c));
	GW_ASSERT(!gw_imagecache_enabled(NULL));
	GW_ASSERT_INT_EQ(gw_imagecache_reserve(f.c, &k, 0, "dump", 1, &e), -ENOSPC);
	GW_ASSERT(gw_imagecache_lookup(f.c, &k, 0, 1) == NULL);
	GW_ASSERT_INT_EQ(f.c->stats.misses, 0);
	teardown(&f);
}

GW_TEST(imagecache_makes_room_for_the_pool_lru_first)
{
	struct fixture f;
	struct gw_imagecache_key k1 = key_of(1, 1), k2 = key_of(2, 1), k3 = key_of(3, 1);
	struct gw_imagecache_entry *e1;

	setup(&f, 3, 3);
	e1 = add(&f, &k1, 0, 1);
	add(&f, &k2, 0, 2);
	add(&f, &k3, 0, 3);
	GW_ASSERT_INT_EQ(gw_hostpool_free_bytes(&f.pool), 0);
	GW_ASSERT(gw_imagecache_lookup(f.c, &k1, 0, 4) == e1); /* pinned, and most recent */
	GW_ASSERT_INT_EQ(gw_imagecache_make_room(f.c, 1), 1);
	GW_ASSERT(!gw_imagecache_find(f.c, &k2, 0));
	GW_ASSERT_INT_EQ(gw_imagecache_make_room(f.c, 1), 0); /* free already */
	GW_ASSERT_INT_EQ(gw_imagecache_make_room(f.c, 3), 1);  /* k3 goes, k1 is pinned */
	GW_ASSERT(gw_imagecache_find(f.c, &k1, 0) == e1);
	GW_ASSERT_INT_EQ(gw_hostpool_free_bytes(&f.pool), 2 * BLOCK);
	GW_ASSERT_INT_EQ(gw_imagecache_make_room(NULL, 1), 0);
	gw_imagecache_unpin(f.c, e1);
	teardown(&f);
}

GW_TEST(imagecache_drop_and_list_by_owner)
{
	struct fixture f;
	struct gw_imagecache_key k1 = key_of(1, 1), k2 = key_of(2, 1), k3 = key_of(3, 1);
	struct ucred root = { 1, 0, 0 }, user = { 2, 1000, 1000 };
	struct gw_imagecache_entry *e1, *e2;
	cJSON *j;

	setup(&f, 4, 4);
	e1 = add(&f, &k1, 0, 1);
	e2 = add(&f, &k2, 1000, 2);
	add(&f, &k3, 1000, 3);
	j = gw_imagecache_list_json(f.c, &user, 4);
	GW_ASSERT_INT_EQ(cJSON_GetArraySize(cJSON_GetObjectItem(j, "entries")), 2);
	GW_ASSERT_INT_EQ(cJSON_GetObjectItem(cJSON_GetObjectItem(j, "others"), "entries")->valueint,
			 1);
	cJSON_Delete(j);
	j = gw_imagecache_list_json(f.c, &root, 4);
	GW_ASSERT_INT_EQ(cJSON_GetArraySize(cJSON_GetObjectItem(j, "entries")), 3);
	GW_ASSERT(!cJSON_GetObjectItem(j, "others"));
	cJSON_Delete(j);
	GW_ASSERT_INT_EQ(gw_imagecache_drop(f.c, e1->id, 1000), -ENOENT); /* root's */
	GW_ASSERT_INT_EQ(gw_imagecache_drop(f.c, e2->id, 1001), -ENOENT);
	GW_ASSERT_INT_EQ(gw_imagecache_drop(f.c, 999, 0), -ENOENT);
	GW_ASSERT_INT_EQ(gw_imagecache_drop(f.c, e2->id, 1000), 0);
	GW_ASSERT_INT_EQ(gw_imagecache_drop_all(f.c, 1001), 0);
	GW_ASSERT_INT_EQ(gw_imagecache_drop_all(f.c, 1000), 1);
	GW_ASSERT_INT_EQ(f.c->nentries, 1);
	GW_ASSERT_INT_EQ(gw_imagecache_drop_all(f.c, 0), 1);
	GW_ASSERT_INT_EQ(gw_hostpool_free_bytes(&f.pool), 4 * BLOCK);
	j = gw_imagecache_status_json(f.c);
	GW_ASSERT_INT_EQ(cJSON_GetObjectItem(j, "entries")->valueint, 0);
	GW_ASSERT_INT_EQ(cJSON_GetObjectItem(j, "limit_bytes")->valuedouble, 4 * BLOCK);
	cJSON_Delete(j);
	teardown(&f);
}

GW_TEST_MAIN()
