/* SPDX-License-Identifier: MIT */
#include "imagestore.h"

#include <errno.h>
#include <event2/event.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "daemon.h"
#include "hostpool.h"
#include "imagecache-ops.h"
#include "imageio.h"
#include "log.h"

#ifndef MADV_POPULATE_WRITE
#define MADV_POPULATE_WRITE 23 /* Linux 5.14 */
#endif

/* ---- images ---- */

struct gw_image *gw_image_new(void)
{
	struct gw_image *image = calloc(1, sizeof(*image));

	if (image)
		image->fd = -1;
	return image;
}

void gw_image_unmap(struct gw_image *image)
{
	if (image && image->map) {
		munmap(image->map, image->map_bytes);
		image->map = NULL;
	}
}

void gw_image_free(struct gw_hostpool *pool, struct gw_image *image)
{
	if (!image)
		return;
	gw_image_unmap(image);
	gw_imagecache_detach(image); /* borrowed blocks are the cache's, not the pool's */
	if (image->blocks)
		gw_hostpool_give(pool, image->blocks, image->nblocks);
	free(image->blocks);
	gw_imageio_files_close(image);
	gw_vimg_clear(&image->v);
	free(image);
}

int gw_image_key(const struct gw_image *image, struct gw_image_key *ret)
{
	struct stat st;

	if (!image || image->fd < 0)
		return -ENOENT;
	if (fstat(image->fd, &st) < 0)
		return -errno;
	ret->dev = st.st_dev;
	ret->ino = st.st_ino;
	memcpy(ret->id, image->v.id, sizeof(ret->id));
	return 0;
}

int gw_image_alloc_blocks(struct gw_image *image, struct gw_hostpool *pool, size_t *ret_free)
{
	size_t needed = (image->v.data_bytes + GW_HOSTPOOL_BLOCK_BYTES - 1) / GW_HOSTPOOL_BLOCK_BYTES;

	*ret_free = gw_hostpool_free_bytes(pool);
	if (*ret_free < needed * GW_HOSTPOOL_BLOCK_BYTES)
		return -ENOSPC;
	image->blocks = calloc(needed ? needed : 1, sizeof(*image->blocks));
	if (!image->blocks || gw_hostpool_take(pool, needed, image->blocks) < 0) {
		free(image->blocks);
		image->blocks = NULL;
		return -ENOMEM;
	}
	image->nblocks = needed;
	return 0;
}

/*
 * A single file is written through a shared mapping when the kernel can pre-fault it (copy-io.c
 * says why) and the file is root's: a store into a mapping whose file another process truncates
 * meanwhile takes SIGBUS, and a user must not be able to kill the daemon by truncating their own
 * image. Other files are written with pwrite, where a truncation is just a failed dump; so are
 * segment files (one writer each, no inode to share).
 */
static void image_map(struct gw_image *image)
{
	struct stat st;

	if (image->nseg_fds || fstat(image->fd, &st) < 0 || st.st_uid != 0)
		return;
	image->map = mmap(NULL, image->v.file_bytes, PROT_READ | PROT_WRITE, MAP_SHARED, image->fd, 0);
	if (image->map == MAP_FAILED) {
		image->map = NULL;
		return;
	}
	image->map_bytes = image->v.file_bytes;
	image->written_mapped = 1;
	if (madvise(image->map, 4096, MADV_POPULATE_WRITE) < 0) {
		gw_debug("no MADV_POPULATE_WRITE (%s): the image is written with pwrite",
			 strerror(errno));
		gw_image_unmap(image);
		image->written_mapped = 0;
	}
}

/*
 * Check the file system has room for the image before copying (a write that fails later still
 * fails the dump cleanly: the app lets go of its VRAM only after the image is complete). The
 * space is not reserved with fallocate: on tmpfs that zeroes every page on one thread first,
 * which cost more than the parallel writes themselves.
 */
int gw_image_file_prepare(struct gw_image *image, int fd, const int *seg_fds, unsigned nseg,
			  char *err, size_t errlen)
{
	int r;

	image->fd = fd;
	for (unsigned k = 0; k < nseg; k++)
		image->seg_fds[k] = seg_fds[k];
	image->nseg_fds = nseg;
	r = gw_imageio_check_space(image, err, errlen);
	if (r == 0 && image->nseg_fds)
		r = gw_imageio_segments_prepare(image, err, errlen);
	if (r < 0)
		return r;
	if (ftruncate(image->fd, (off_t)image->v.file_bytes) < 0) {
		r = -errno;
		snprintf(err, errlen, "cannot size the image file: %s", strerror(-r));
		return r;
	}
	image_map(image);
	return 0;
}

/* In a file, the header and tables go last, so that a file whose writing was cut short never
 * reads as an image. */
int gw_image_seal(struct gw_image *image, char *err, size_t errlen)
{
	uint8_t *buf = NULL;
	size_t len = 0;
	int r;

	if (image->fd < 0)
		return 0;
	r = gw_vimg_encode(&image->v, &buf, &len);
	if (r == 0) {
		ssize_t n = pwrite(image->fd, buf, len, 0);

		r = n == (ssize_t)len ? 0 : n < 0 ? -errno : -EIO;
	}
	free(buf);
	if (r < 0)
		snprintf(err, errlen, "writing the image's header: %s", strerror(-r));
	return r;
}

int gw_image_read(int fd, int *seg_fds, unsigned nseg, uint64_t max_tables,
		  struct gw_image **ret, char *err, size_t errlen)
{
	struct gw_image *image = gw_image_new();
	int r;

	*ret = NULL;
	if (!image) {
		r = -ENOMEM;
		goto fail;
	}
	r = gw_vimg_read_fd_max(fd, max_tables, &image->v, err, errlen);
	if (r < 0) {
		gw_vimg_clear(&image->v);
		free(image);
		goto fail;
	}
	image->fd = fd;
	/* A version-2 image's segment files, each checked against the head. */
	r = gw_imageio_segments_take(image, seg_fds, nseg, err, errlen);
	if (r < 0) {
		gw_image_free(NULL, image);
		return r;
	}
	*ret = image;
	return 0;
fail:
	close(fd);
	for (unsigned k = 0; k < nseg; k++)
		close(seg_fds[k]);
	return r;
}

void gw_image_discard(struct gw_image *image)
{
	if (image)
		gw_imageio_files_truncate(image);
}

void gw_image_store(const struct gw_image *image, struct gw_copy_store *s)
{
	memset(s, 0, sizeof(*s));
	s->blocks = image->blocks;
	s->block_bytes = GW_HOSTPOOL_BLOCK_BYTES;
	s->fd = image->fd;
	s->map = image->map;
	s->data_offset = image->v.data_offset;
	for (unsigned k = 0; k < image->nseg_fds; k++)
		s->seg_fds[k] = image->seg_fds[k];
	s->nsegments = image->nseg_fds;
	if (s->nsegments)
		s->fd = -1; /* the head holds no data */
	if (image->cached) { /* the data is in the image cache's blocks: read those */
		s->fd = -1;
		s->nsegments = 0;
	}
}

/* ---- prefills ---- */

struct gw_prefill *gw_prefill_new(struct gw_daemon *d, dev_t dev, ino_t ino)
{
	struct gw_prefill *pf = calloc(1, sizeof(*pf));

	if (!pf)
		return NULL;
	pf->d = d;
	pf->key.dev = dev;
	pf->key.ino = ino;
	pf->next = d->prefills;
	d->prefills = pf;
	return pf;
}

struct gw_prefill *gw_prefill_find(struct gw_daemon *d, dev_t dev, ino_t ino)
{
	for (struct gw_prefill *pf = d->prefills; pf; pf = pf->next)
		if (pf->key.dev == dev && pf->key.ino == ino)
			return pf;
	return NULL;
}

static void close_all(int *fds, size_t n)
{
	for (size_t i = 0; i < n; i++)
		if (fds[i] >= 0)
			close(fds[i]);
	free(fds);
}

void gw_prefill_free(struct gw_prefill *pf)
{
	struct gw_daemon *d = pf->d;

	for (struct gw_prefill **p = &d->prefills; *p; p = &(*p)->next)
		if (*p == pf) {
			*p = pf->next;
			break;
		}
	close_all(pf->fds, pf->nfds);
	if (pf->expiry)
		event_free(pf->expiry);
	free(pf);
}

static void on_prefill_expiry(evutil_socket_t fd, short what, void *arg)
{
	struct gw_prefill *pf = arg;

	(void)fd;
	(void)what;
	gw_info("prefilled VRAM (%.1f MiB) not claimed by a resume within %d s: released",
		(double)pf->vram_bytes / 1048576.0, GW_PREFILL_TTL_S);
	gw_prefill_free(pf);
}

void gw_prefill_ready(struct gw_prefill *pf, int *fds, size_t nfds, double fill_ms)
{
	struct timeval ttl = { GW_PREFILL_TTL_S, 0 };

	pf->fds = fds;
	pf->nfds = nfds;
	pf->ready = 1;
	pf->fill_ms = fill_ms;
	pf->expiry = evtimer_new(pf->d->base, on_prefill_expiry, pf);
	if (pf->expiry)
		evtimer_add(pf->expiry, &ttl);
}

void gw_prefill_take(struct gw_prefill *pf, int **ret_fds, size_t *ret_n)
{
	*ret_fds = pf->fds;
	*ret_n = pf->nfds;
	pf->fds = NULL;
	pf->nfds = 0;
}

cJSON *gw_prefill_status(struct gw_daemon *d)
{
	cJSON *array = cJSON_CreateArray();

	for (struct gw_prefill *pf = d->prefills; array && pf; pf = pf->next) {
		cJSON *o = cJSON_CreateObject();

		if (!o)
			break;
		cJSON_AddBoolToObject(o, "ready", pf->ready);
		cJSON_AddNumberToObject(o, "vram_bytes", (double)pf->vram_bytes);
		cJSON_AddNumberToObject(o, "ranges", (double)pf->nfds);
		cJSON_AddBoolToObject(o, "waited_for", pf->waiter != NULL);
		cJSON_AddItemToArray(array, o);
	}
	return array;
}
