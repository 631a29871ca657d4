/* SPDX-License-Identifier: MIT */
#include "imagecache-ops.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "clock.h"
#include "imagecache-read.h"
#include "imagecache.h"
#include "imagestore.h"
#include "log.h"

#define GW_IMAGECACHE_OFFER_DELAY_US 100000
/* Reads of a fill whose files change meanwhile, at most. */
#define GW_IMAGECACHE_READ_ATTEMPTS 3
/* A non-root requester's image may have tables of at most this much (as a resume's). */
#define GW_IMAGECACHE_USER_TABLE_MAX (64u << 20)

/* One fill of an entry from an image's files. */
struct fill {
	struct gw_daemon *d;
	struct gw_request *req; /* load: answered at the end; NULL for a dump's offer */
	int quota; /* a load: it holds one of owner's operations (quota.h) until it ends */
	uid_t owner;
	const char *origin;
	int head_fd;
	int seg_fds[GW_VIMG_MAX_SEGMENTS];
	unsigned nseg;
	struct gw_imagecache_key want; /* offer: the files as the dump left them */
	int has_want;
	struct gw_vimg v;
	struct gw_imagecache_key before;
	struct gw_imagecache_entry *entry;
	uint64_t already_id; /* -EALREADY: the entry that has these files */
	void **blocks;
	int error;
	const char *error_name;
	const char *limit; /* LimitReached: which (GW_LIMIT_*) */
	char err[256];
	double start_ms;
};

static void fill_free(struct fill *f)
{
	if (f->quota)
		gw_quota_give(&f->d->quota, f->owner);
	if (f->head_fd >= 0)
		close(f->head_fd);
	for (unsigned k = 0; k < f->nseg; k++)
		close(f->seg_fds[k]);
	gw_vimg_clear(&f->v);
	free(f);
}

static void fill_fail(struct fill *f, int r, const char *name, const char *fmt, const char *what)
{
	f->error = r;
	f->error_name = name;
	snprintf(f->err, sizeof(f->err), fmt, what);
}

/* The end of a fill, on the loop: keep or drop the entry, answer a load. */
static void fill_end(struct fill *f)
{
	struct gw_imagecache *c = f->d->imagecache;

	if (f->entry && f->error == 0)
		f->entry->key = f->before; /* what the data was read under */
	if (f->entry)
		gw_imagecache_commit(c, f->entry, f->error == 0);
	if (f->error < 0 && f->error != -EALREADY)
		f->entry = NULL; /* gone */
	c->fills--;
	if (f->error == 0)
		gw_info("image cache: entry %llu (%s, uid %u): %.1f MiB of data in %.1f ms",
			(unsigned long long)f->entry->id, f->origin, f->owner,
			(double)f->v.data_bytes / 1048576.0, gw_now_ms() - f->start_ms);
	else if (f->error != -EALREADY)
		gw_info("image cache: %s not cached: %s", f->origin, f->err);
	if (f->req && (f->error == 0 || f->error == -EALREADY)) {
		cJSON *result = cJSON_CreateObject();

		if (result) {
			cJSON_AddBoolToObject(result, "already", f->error == -EALREADY);
			cJSON_AddNumberToObject(result, "data_bytes", (double)f->v.data_bytes);
			cJSON_AddNumberToObject(result, "vram_bytes", (double)f->v.vram_bytes);
			cJSON_AddNumberToObject(result, "duration_ms", gw_now_ms() - f->start_ms);
			cJSON_AddNumberToObject(result, "id", f->entry ? (double)f->entry->id :
								       (double)f->already_id);
		}
		gw_request_reply(f->req, result);
	} else if (f->req) {
		cJSON *extra = NULL;

		if (f->limit) {
			extra = cJSON_CreateObject();
			if (extra)
				cJSON_AddStringToObject(extra, "limit", f->limit);
		}
		gw_request_fail(f->req, f->error_name, extra, "%s", f->err);
	}
	fill_free(f);
}

/* The files as the dump left them, but for their change time: a rename (warmctl's .partial
 * file becoming FILE) changes that and nothing else. */
static int still_the_dumps(const struct fill *f, const struct gw_imagecache_key *k)
{
	return !f->has_want || gw_imagecache_key_match(&f->want, k, 0);
}

/* Worker: the head's header and tables, the segments checked against them, the files' key. */
static void work_read_head(void *data)
{
	struct fill *f = data;
	uint64_t max_tables = f->owner == 0 ? UINT64_MAX : GW_IMAGECACHE_USER_TABLE_MAX;
	int r;

	/* A dump's client renames its files once it has the reply (warmctl: FILE.partial to FILE),
	 * which changes their ctime: let that happen before the key is taken. (Racing it only costs
	 * a read again, or an entry no resume will match: never wrong data.) */
	if (f->has_want)
		usleep(GW_IMAGECACHE_OFFER_DELAY_US);
	r = gw_vimg_read_fd_max(f->head_fd, max_tables, &f->v, f->err, sizeof(f->err));
	if (r == 0 && f->nseg != f->v.nsegments) {
		snprintf(f->err, sizeof(f->err), "the image has %u segment files, %u came",
			 f->v.nsegments, f->nseg);
		r = -EBADMSG;
	}
	for (unsigned k = 0; k < f->nseg && r == 0; k++)
		r = gw_vimg_check_segment_fd(&f->v, k, f->seg_fds[k], f->err, sizeof(f->err));
	if (r < 0) {
		f->error = r;
		f->error_name = r == -E2BIG ? GW_ERROR_LIMIT : GW_ERROR_IMAGE;
		f->limit = r == -E2BIG ? GW_LIMIT_IMAGE_TABLES : NULL;
		return;
	}
	r = gw_imagecache_key_from_fds(&f->before, &f->v, f->head_fd, f->seg_fds, f->nseg);
	if (r < 0)
		fill_fail(f, r, GW_ERROR_IMAGE, "cannot stat the image's files: %s", strerror(-r));
	else if (!still_the_dumps(f, &f->before))
		fill_fail(f, -ESTALE, GW_ERROR_IMAGE, "%s", "the files changed since the dump");
}

/* Worker: the data into the entry's blocks, with the files' key taken before and after the read:
 * kept only when it did not change meanwhile. A change (a rename racing the read, a writer) means
 * reading again, a few times at most; the key kept is the one the data was read under. */
static void work_read_data(void *data)
{
	struct fill *f = data;
	struct gw_imagecache_key now, after;
	int r = 0;

	for (unsigned attempt = 0; attempt < GW_IMAGECACHE_READ_ATTEMPTS; attempt++) {
		if (attempt)
			usleep(50000);
		r = gw_imagecache_key_from_fds(&now, &f->v, f->head_fd, f->seg_fds, f->nseg);
		if (r < 0 || !still_the_dumps(f, &now)) {
			fill_fail(f, -ESTALE, GW_ERROR_IMAGE, "%s", "the files changed since the dump");
			return;
		}
		r = gw_imagecache_read_data(&f->v, f->head_fd, f->seg_fds, f->blocks,
					    GW_HOSTPOOL_BLOCK_BYTES, f->err, sizeof(f->err));
		if (r < 0) {
			f->error = r;
			f->error_name = GW_ERROR_IMAGE;
			return;
		}
		r = gw_imagecache_key_from_fds(&after, &f->v, f->head_fd, f->seg_fds, f->nseg);
		if (r == 0 && gw_imagecache_key_equal(&now, &after)) {
			f->before = now;
			return;
		}
	}
	fill_fail(f, -ESTALE, GW_ERROR_IMAGE, "%s",
		  "the image's files kept changing while they were read: nothing cached");
}

static void data_read(void *data)
{
	fill_end(data);
}

/* Loop: an entry for the data, then its read. */
static void head_read(void *data)
{
	struct fill *f = data;
	struct gw_daemon *d = f->d;
	int r;

	if (f->error < 0 || d->stopping) {
		if (f->error == 0)
			fill_fail(f, -ESHUTDOWN, GW_ERROR_INTERNAL, "%s", "gpu-warmd is stopping");
		fill_end(f);
		return;
	}
	r = gw_imagecache_reserve(d->imagecache, &f->before, f->owner, f->origin, gw_now_ms(),
				  &f->entry);
	if (r == -EALREADY) {
		struct gw_imagecache_entry *e = gw_imagecache_find(d->imagecache, &f->before,
								   f->owner);

		f->entry = NULL; /* not this fill's to commit */
		if (e && e->ready) {
			f->error = -EALREADY;
			f->already_id = e->id;
		} else {
			fill_fail(f, -EBUSY, GW_ERROR_BUSY, "%s", "the image is being cached already");
		}
		fill_end(f);
		return;
	}
	if (r < 0) {
		fill_fail(f, r, GW_ERROR_LIMIT,
			  r == -E2BIG ? "the image's %s the image cache's limit (or the pool)" :
					"no room in the image cache: %s",
			  r == -E2BIG ? "data exceeds" : "every entry is in use");
		f->limit = GW_LIMIT_IMAGE_CACHE;
		fill_end(f);
		return;
	}
	f->blocks = f->entry->blocks;
	if (gw_worker_submit_class(d->workers, GW_WORK_USER, work_read_data, data_read, f) < 0) {
		fill_fail(f, -ESHUTDOWN, GW_ERROR_INTERNAL, "%s", "cannot queue the read");
		fill_end(f);
	}
}

int gw_imagecache_fill_start(struct gw_daemon *d, struct gw_request *req, uid_t owner,
			     const char *origin, int head_fd, const int *segs, unsigned nseg,
			     const struct gw_imagecache_key *want)
{
	struct fill *f = calloc(1, sizeof(*f));

	if (!f) {
		close(head_fd);
		for (unsigned k = 0; k < nseg; k++)
			close(segs[k]);
		return -ENOMEM;
	}
	f->d = d;
	f->req = req;
	f->owner = owner;
	f->origin = origin;
	f->head_fd = head_fd;
	for (unsigned k = 0; k < nseg; k++)
		f->seg_fds[k] = segs[k];
	f->nseg = nseg;
	if (want) {
		f->want = *want;
		f->has_want = 1;
	}
	f->start_ms = gw_now_ms();
	if (gw_worker_submit_class(d->workers, GW_WORK_USER, work_read_head, head_read, f) < 0) {
		fill_free(f);
		return -ESHUTDOWN;
	}
	f->quota = req != NULL; /* the caller took it; from here the fill gives it back */
	d->imagecache->fills++;
	return 0;
}

void gw_imagecache_offer(struct gw_daemon *d, const struct gw_image *image, uid_t owner)
{
	struct gw_imagecache_key want;
	int segs[GW_VIMG_MAX_SEGMENTS], head = -1;
	unsigned n = 0;

	if (!gw_imagecache_enabled(d->imagecache) || image->fd < 0 || d->stopping ||
	    image->v.data_bytes > d->imagecache->limit_bytes)
		return;
	if (gw_imagecache_key_from_fds(&want, &image->v, image->fd, image->seg_fds,
				       image->nseg_fds) < 0)
		return;
	head = fcntl(image->fd, F_DUPFD_CLOEXEC, 0);
	for (; head >= 0 && n < image->nseg_fds; n++) {
		segs[n] = fcntl(image->seg_fds[n], F_DUPFD_CLOEXEC, 0);
		if (segs[n] < 0)
			break;
	}
	if (head < 0 || n < image->nseg_fds) {
		gw_warn("image cache: cannot keep the image's fds (%s), ignoring", strerror(errno));
		if (head >= 0)
			close(head);
		for (unsigned k = 0; k < n; k++)
			close(segs[k]);
		return;
	}
	if (gw_imagecache_fill_start(d, NULL, owner, "dump", head, segs, n, &want) < 0)
		gw_warn("image cache: cannot queue the read of a dump, ignoring");
}

int gw_imagecache_attach(struct gw_daemon *d, struct gw_image *image, uid_t requester)
{
	struct gw_imagecache_entry *e;
	struct gw_imagecache_key key;

	if (image->cached)
		return 1;
	if (!gw_imagecache_enabled(d->imagecache) || image->fd < 0 || image->blocks)
		return 0;
	if (gw_imagecache_key_from_fds(&key, &image->v, image->fd, image->seg_fds,
				       image->nseg_fds) < 0) {
		d->imagecache->stats.misses++;
		return 0;
	}
	e = gw_imagecache_lookup(d->imagecache, &key, requester, gw_now_ms());
	if (!e)
		return 0;
	image->cached = e;
	image->blocks = e->blocks;
	image->nblocks = e->nblocks;
	gw_info("image cache: entry %llu serves a restore (%.1f MiB of data)",
		(unsigned long long)e->id, (double)e->key.data_bytes / 1048576.0);
	return 1;
}

void gw_imagecache_detach(struct gw_image *image)
{
	if (!image || !image->cached)
		return;
	gw_imagecache_unpin(image->cached->cache, image->cached);
	image->cached = NULL;
	image->blocks = NULL; /* the entry's */
	image->nblocks = 0;
}

void gw_imagecache_yield(struct gw_daemon *d, size_t nblocks)
{
	unsigned n = gw_imagecache_make_room(d->imagecache, nblocks);

	if (n)
		gw_info("image cache: %u entries evicted for a suspend into the pool", n);
}
