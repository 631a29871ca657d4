/* SPDX-License-Identifier: MIT */
#include "imagecache.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

int gw_imagecache_create(struct gw_hostpool *pool, uint64_t limit_bytes,
			 struct gw_imagecache **ret_cache)
{
	struct gw_imagecache *c = calloc(1, sizeof(*c));

	if (!c)
		return -ENOMEM;
	c->pool = pool;
	c->limit_bytes = limit_bytes;
	c->next_id = 1;
	*ret_cache = c;
	return 0;
}

static uint64_t entry_bytes(const struct gw_imagecache_entry *e)
{
	return (uint64_t)e->nblocks * GW_HOSTPOOL_BLOCK_BYTES;
}

static void unlink_entry(struct gw_imagecache *c, struct gw_imagecache_entry *e)
{
	if (e->prev)
		e->prev->next = e->next;
	else
		c->head = e->next;
	if (e->next)
		e->next->prev = e->prev;
	else
		c->tail = e->prev;
	e->prev = e->next = NULL;
}

static void push_front(struct gw_imagecache *c, struct gw_imagecache_entry *e)
{
	e->prev = NULL;
	e->next = c->head;
	if (c->head)
		c->head->prev = e;
	c->head = e;
	if (!c->tail)
		c->tail = e;
}

/* Remove e and give its blocks back. */
static void entry_free(struct gw_imagecache *c, struct gw_imagecache_entry *e)
{
	unlink_entry(c, e);
	if (e->nblocks)
		gw_hostpool_give(c->pool, e->blocks, e->nblocks);
	c->bytes -= entry_bytes(e);
	c->nentries--;
	free(e->blocks);
	free(e);
}

void gw_imagecache_destroy(struct gw_imagecache *c)
{
	if (!c)
		return;
	while (c->head)
		entry_free(c, c->head);
	free(c);
}

static void file_of(struct gw_imagecache_file *f, const struct stat *st)
{
	memset(f, 0, sizeof(*f));
	f->dev = st->st_dev;
	f->ino = st->st_ino;
	f->size = st->st_size;
	f->uid = st->st_uid;
	f->mtime = st->st_mtim;
	f->ctime = st->st_ctim;
}

int gw_imagecache_key_from_fds(struct gw_imagecache_key *k, const struct gw_vimg *v, int head_fd,
			       const int *seg_fds, unsigned nseg_fds)
{
	struct stat st;

	if (nseg_fds > GW_VIMG_MAX_SEGMENTS)
		return -EINVAL;
	/* The image's own identity, then each file's. */
	*k = (struct gw_imagecache_key){
		.nfiles = 1 + nseg_fds, .created_ns = v->created_ns, .data_bytes = v->data_bytes,
		.vram_bytes = v->vram_bytes, .file_bytes = v->file_bytes,
		.chunk_bytes = v->chunk_bytes, .version = v->version, .nsegments = v->nsegments,
		.nranges = v->nranges,
	};
	memcpy(k->image_id, v->id, sizeof(k->image_id));
	for (unsigned i = 0; i < k->nfiles; i++) {
		if (fstat(i == 0 ? head_fd : seg_fds[i - 1], &st) < 0)
			return -errno;
		file_of(&k->files[i], &st);
	}
	return 0;
}

static int file_equal(const struct gw_imagecache_file *a, const struct gw_imagecache_file *b,
		      int ctime_too)
{
	return a->dev == b->dev && a->ino == b->ino && a->size == b->size && a->uid == b->uid &&
	       a->mtime.tv_sec == b->mtime.tv_sec && a->mtime.tv_nsec == b->mtime.tv_nsec &&
	       (!ctime_too || (a->ctime.tv_sec == b->ctime.tv_sec &&
			       a->ctime.tv_nsec == b->ctime.tv_nsec));
}

int gw_imagecache_key_equal(const struct gw_imagecache_key *a, const struct gw_imagecache_key *b)
{
	return gw_imagecache_key_match(a, b, 1);
}

int gw_imagecache_key_match(const struct gw_imagecache_key *a, const struct gw_imagecache_key *b,
			    int ctime_too)
{
	if (a->nfiles != b->nfiles || a->nfiles == 0 ||
	    memcmp(a->image_id, b->image_id, sizeof(a->image_id)) != 0 ||
	    a->created_ns != b->created_ns || a->data_bytes != b->data_bytes ||
	    a->vram_bytes != b->vram_bytes || a->file_bytes != b->file_bytes ||
	    a->chunk_bytes != b->chunk_bytes || a->version != b->version ||
	    a->nsegments != b->nsegments || a->nranges != b->nranges)
		return 0;
	for (unsigned i = 0; i < a->nfiles; i++)
		if (!file_equal(&a->files[i], &b->files[i], ctime_too))
			return 0;
	return 1;
}

static int same_head(const struct gw_imagecache_key *a, const struct gw_imagecache_key *b)
{
	return a->files[0].dev == b->files[0].dev && a->files[0].ino == b->files[0].ino;
}

static int evictable(const struct gw_imagecache_entry *e)
{
	return e->ready && e->refs == 0;
}

static void evict(struct gw_imagecache *c, struct gw_imagecache_entry *e)
{
	c->stats.evictions++;
	entry_free(c, e);
}

/* The least recently used entry that may go, or NULL. */
static struct gw_imagecache_entry *lru_victim(struct gw_imagecache *c)
{
	for (struct gw_imagecache_entry *e = c->tail; e; e = e->prev)
		if (evictable(e))
			return e;
	return NULL;
}

/* Entries of the head inode of key that are not key: the file changed since, they can never be
 * served again. Unpinned ones go now (pinned ones fail every later lookup). */
static void drop_stale(struct gw_imagecache *c, const struct gw_imagecache_key *key)
{
	struct gw_imagecache_entry *e = c->head, *next;

	for (; e; e = next) {
		next = e->next;
		if (same_head(&e->key, key) && !gw_imagecache_key_equal(&e->key, key) &&
		    evictable(e)) {
			c->stats.stale++;
			entry_free(c, e);
		}
	}
}

struct gw_imagecache_entry *gw_imagecache_find(struct gw_imagecache *c,
					       const struct gw_imagecache_key *key, uid_t owner)
{
	for (struct gw_imagecache_entry *e = c->head; e; e = e->next)
		if (e->owner == owner && gw_imagecache_key_equal(&e->key, key))
			return e;
	return NULL;
}

static int make_room_for(struct gw_imagecache *c, size_t nblocks)
{
	uint64_t want = (uint64_t)nblocks * GW_HOSTPOOL_BLOCK_BYTES;
	struct gw_imagecache_entry *v;

	while (c->bytes + want > c->limit_bytes || c->nentries >= GW_IMAGECACHE_MAX_ENTRIES ||
	       gw_hostpool_free_bytes(c->pool) < want) {
		v = lru_victim(c);
		if (!v)
			return -ENOSPC;
		evict(c, v);
	}
	return 0;
}

int gw_imagecache_reserve(struct gw_imagecache *c, const struct gw_imagecache_key *key, uid_t owner,
			  const char *origin, double now_ms, struct gw_imagecache_entry **ret_entry)
{
	size_t nblocks = (key->data_bytes + GW_HOSTPOOL_BLOCK_BYTES - 1) / GW_HOSTPOOL_BLOCK_BYTES;
	struct gw_imagecache_entry *e;
	int r;

	if (!gw_imagecache_enabled(c))
		return -ENOSPC;
	if (gw_imagecache_find(c, key, owner))
		return -EALREADY;
	if ((uint64_t)nblocks * GW_HOSTPOOL_BLOCK_BYTES > c->limit_bytes ||
	    (uint64_t)nblocks * GW_HOSTPOOL_BLOCK_BYTES > gw_hostpool_total_bytes(c->pool))
		return -E2BIG;
	drop_stale(c, key);
	r = make_room_for(c, nblocks);
	if (r < 0)
		return r;
	e = calloc(1, sizeof(*e));
	if (!e)
		return -ENOMEM;
	e->blocks = calloc(nblocks ? nblocks : 1, sizeof(*e->blocks));
	if (!e->blocks || gw_hostpool_take(c->pool, nblocks, e->blocks) < 0) {
		free(e->blocks);
		free(e);
		return -ENOMEM;
	}
	e->nblocks = nblocks;
	e->cache = c;
	e->id = c->next_id++;
	e->owner = owner;
	e->key = *key;
	e->origin = origin;
	e->created_ms = e->used_ms = now_ms;
	c->bytes += entry_bytes(e);
	c->nentries++;
	push_front(c, e);
	*ret_entry = e;
	return 0;
}

void gw_imagecache_commit(struct gw_imagecache *c, struct gw_imagecache_entry *e, int ok)
{
	if (!ok) {
		c->stats.fills_failed++;
		entry_free(c, e);
		return;
	}
	e->ready = 1;
	c->stats.inserts++;
}

struct gw_imagecache_entry *gw_imagecache_lookup(struct gw_imagecache *c,
						 const struct gw_imagecache_key *key,
						 uid_t requester, double now_ms)
{
	struct gw_imagecache_entry *e;

	if (!gw_imagecache_enabled(c))
		return NULL;
	for (e = c->head; e; e = e->next) {
		if (!e->ready || (requester != 0 && e->owner != requester))
			continue;
		if (gw_imagecache_key_equal(&e->key, key))
			break;
	}
	if (!e) {
		c->stats.misses++;
		drop_stale(c, key);
		return NULL;
	}
	e->refs++;
	e->hits++;
	e->used_ms = now_ms;
	c->stats.hits++;
	unlink_entry(c, e);
	push_front(c, e);
	return e;
}

void gw_imagecache_unpin(struct gw_imagecache *c, struct gw_imagecache_entry *e)
{
	(void)c;
	if (e && e->refs > 0)
		e->refs--;
}

unsigned gw_imagecache_make_room(struct gw_imagecache *c, size_t blocks)
{
	uint64_t want = (uint64_t)blocks * GW_HOSTPOOL_BLOCK_BYTES;
	struct gw_imagecache_entry *v;
	unsigned n = 0;

	if (!c)
		return 0;
	while (gw_hostpool_free_bytes(c->pool) < want && (v = lru_victim(c))) {
		evict(c, v);
		n++;
	}
	return n;
}

static int may_see(const struct gw_imagecache_entry *e, uid_t requester)
{
	return requester == 0 || e->owner == requester;
}

int gw_imagecache_drop(struct gw_imagecache *c, uint64_t id, uid_t requester)
{
	for (struct gw_imagecache_entry *e = c->head; e; e = e->next) {
		if (e->id != id || !may_see(e, requester))
			continue;
		if (!evictable(e))
			return -EBUSY;
		entry_free(c, e);
		return 0;
	}
	return -ENOENT;
}

unsigned gw_imagecache_drop_all(struct gw_imagecache *c, uid_t requester)
{
	struct gw_imagecache_entry *e = c->head, *next;
	unsigned n = 0;

	for (; e; e = next) {
		next = e->next;
		if (may_see(e, requester) && evictable(e)) {
			entry_free(c, e);
			n++;
		}
	}
	return n;
}

static cJSON *entry_json(const struct gw_imagecache_entry *e, double now_ms)
{
	cJSON *o = cJSON_CreateObject();
	char id[33];

	if (!o)
		return NULL;
	for (unsigned i = 0; i < 16; i++)
		snprintf(id + 2 * i, 3, "%02x", e->key.image_id[i]);
	cJSON_AddNumberToObject(o, "id", (double)e->id);
	cJSON_AddStringToObject(o, "image_id", id);
	cJSON_AddNumberToObject(o, "owner_uid", e->owner);
	cJSON_AddStringToObject(o, "state", e->ready ? "ready" : "filling");
	cJSON_AddStringToObject(o, "origin", e->origin);
	cJSON_AddNumberToObject(o, "data_bytes", (double)e->key.data_bytes);
	cJSON_AddNumberToObject(o, "vram_bytes", (double)e->key.vram_bytes);
	cJSON_AddNumberToObject(o, "bytes", (double)entry_bytes(e));
	cJSON_AddNumberToObject(o, "files", e->key.nfiles);
	cJSON_AddNumberToObject(o, "device", (double)e->key.files[0].dev);
	cJSON_AddNumberToObject(o, "inode", (double)e->key.files[0].ino);
	cJSON_AddNumberToObject(o, "hits", (double)e->hits);
	cJSON_AddNumberToObject(o, "in_use", e->refs);
	cJSON_AddNumberToObject(o, "age_s", (now_ms - e->created_ms) / 1e3);
	cJSON_AddNumberToObject(o, "idle_s", (now_ms - e->used_ms) / 1e3);
	return o;
}

cJSON *gw_imagecache_list_json(const struct gw_imagecache *c, const struct ucred *peer,
			       double now_ms)
{
	cJSON *result = cJSON_CreateObject(), *entries, *o;
	unsigned others = 0;
	uint64_t other_bytes = 0;

	if (!result)
		return NULL;
	entries = cJSON_AddArrayToObject(result, "entries");
	for (const struct gw_imagecache_entry *e = c->head; entries && e; e = e->next) {
		if (!may_see(e, peer->uid)) {
			others++;
			other_bytes += entry_bytes(e);
			continue;
		}
		o = entry_json(e, now_ms);
		if (o)
			cJSON_AddItemToArray(entries, o);
	}
	o = cJSON_AddObjectToObject(result, "cache");
	if (o) {
		cJSON_AddNumberToObject(o, "limit_bytes", (double)c->limit_bytes);
		cJSON_AddNumberToObject(o, "bytes", (double)c->bytes);
		cJSON_AddNumberToObject(o, "entries", c->nentries);
	}
	if (peer->uid != 0) {
		o = cJSON_AddObjectToObject(result, "others");
		if (o) {
			cJSON_AddNumberToObject(o, "entries", others);
			cJSON_AddNumberToObject(o, "bytes", (double)other_bytes);
		}
	}
	return result;
}

cJSON *gw_imagecache_status_json(const struct gw_imagecache *c)
{
	cJSON *o = cJSON_CreateObject();

	if (!o)
		return NULL;
	cJSON_AddBoolToObject(o, "enabled", gw_imagecache_enabled(c));
	cJSON_AddNumberToObject(o, "limit_bytes", c ? (double)c->limit_bytes : 0);
	cJSON_AddNumberToObject(o, "bytes", c ? (double)c->bytes : 0);
	cJSON_AddNumberToObject(o, "entries", c ? c->nentries : 0);
	cJSON_AddNumberToObject(o, "fills_running", c ? c->fills : 0);
	cJSON_AddNumberToObject(o, "hits", c ? (double)c->stats.hits : 0);
	cJSON_AddNumberToObject(o, "misses", c ? (double)c->stats.misses : 0);
	cJSON_AddNumberToObject(o, "evictions", c ? (double)c->stats.evictions : 0);
	cJSON_AddNumberToObject(o, "inserts", c ? (double)c->stats.inserts : 0);
	cJSON_AddNumberToObject(o, "stale", c ? (double)c->stats.stale : 0);
	cJSON_AddNumberToObject(o, "fills_failed", c ? (double)c->stats.fills_failed : 0);
	return o;
}
