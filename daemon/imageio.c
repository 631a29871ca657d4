/* SPDX-License-Identifier: MIT */
#include "imageio.h"

#include "imagefd.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <unistd.h>

#include "fastpath.h"
#include "imagefd.h"

_Static_assert(GW_IMAGE_MAX_SEGMENTS == GW_VIMG_MAX_SEGMENTS,
	       "the protocol's segment bound is the format's");

int gw_imageio_take_segment_fds(struct gw_request *req, int suspend, int has_image,
				struct gw_fast_params *f)
{
	const cJSON *list = cJSON_GetObjectItemCaseSensitive(req->msg.body, "segment_fds"), *item;
	unsigned n = 0, index[GW_IMAGE_MAX_SEGMENTS];

	f->nsegment_fds = 0;
	if (!list)
		return 0;
	if (!cJSON_IsArray(list) || cJSON_GetArraySize(list) < 1 ||
	    cJSON_GetArraySize(list) > GW_IMAGE_MAX_SEGMENTS) {
		gw_request_fail(req, GW_ERROR_INVALID_REQUEST, NULL,
				"\"segment_fds\" must be an array of 1 to %d indexes of file "
				"descriptors sent with the request", GW_IMAGE_MAX_SEGMENTS);
		return -EINVAL;
	}
	if (!has_image) {
		gw_request_fail(req, GW_ERROR_INVALID_REQUEST, NULL,
				"\"segment_fds\" come with \"image_fd\" (the image's head file)");
		return -EINVAL;
	}
	cJSON_ArrayForEach(item, list) {
		double x = cJSON_IsNumber(item) ? item->valuedouble : -1;

		if (x < 0 || x >= req->nfds || x != (double)(unsigned)x ||
		    req->fds[(unsigned)x] < 0) {
			gw_request_fail(req, GW_ERROR_INVALID_REQUEST, NULL,
					"\"segment_fds\" item %u must index a file descriptor sent "
					"with the request, once (%u came)", n, req->nfds);
			return -EINVAL;
		}
		for (unsigned k = 0; k < n; k++)
			if (index[k] == (unsigned)x) {
				gw_request_fail(req, GW_ERROR_INVALID_REQUEST, NULL,
						"\"segment_fds\" names fd %u twice", index[k]);
				return -EINVAL;
			}
		index[n++] = (unsigned)x;
	}
	/* Each segment is checked as "image_fd" is (imagefd.h). */
	for (unsigned k = 0; k < n; k++) {
		char why[256];

		if (gw_imagefd_check(req->fds[index[k]], &req->peer, suspend ? GW_IMAGEFD_WRITE :
				     GW_IMAGEFD_READ, why, sizeof(why)) < 0) {
			gw_request_fail(req, GW_ERROR_IMAGE, NULL, "image segment %u: %s", k, why);
			return -EINVAL;
		}
	}
	for (unsigned k = 0; k < n; k++) {
		f->segment_fds[k] = req->fds[index[k]];
		req->fds[index[k]] = -1; /* ours now */
	}
	f->nsegment_fds = n;
	return 0;
}

void gw_imageio_params_close(struct gw_fast_params *f)
{
	if (f->image_fd >= 0)
		close(f->image_fd);
	f->image_fd = -1;
	for (unsigned k = 0; k < f->nsegment_fds; k++)
		close(f->segment_fds[k]);
	f->nsegment_fds = 0;
}

int gw_imageio_layout(struct gw_vimg *v, unsigned nsegments)
{
	int r;

	if (nsegments == 0)
		return 0;
	r = gw_vimg_set_segments(v, nsegments, gw_copy_stripe_bytes(v->data_bytes, nsegments));
	return r < 0 ? r : gw_vimg_finalize(v);
}

int gw_imageio_check_space(const struct gw_image *image, char *err, size_t errlen)
{
	struct {
		dev_t dev;
		int fd;
		uint64_t need;
	} fs[1 + GW_VIMG_MAX_SEGMENTS];
	unsigned nfs = 0;

	for (unsigned k = 0; k <= image->nseg_fds; k++) {
		int fd = k == 0 ? image->fd : image->seg_fds[k - 1];
		uint64_t need = k == 0 ? image->v.file_bytes :
					 gw_vimg_segment_file_bytes(&image->v, k - 1);
		struct stat st;
		unsigned i = 0;

		if (fstat(fd, &st) < 0)
			continue;
		while (i < nfs && fs[i].dev != st.st_dev)
			i++;
		if (i == nfs) {
			fs[nfs].dev = st.st_dev;
			fs[nfs].fd = fd;
			fs[nfs++].need = 0;
		}
		fs[i].need += need;
	}
	for (unsigned i = 0; i < nfs; i++) {
		struct statvfs v;

		/* f_blocks 0: a file system that does not say its size (some FUSE ones): just
		 * write. */
		if (fstatvfs(fs[i].fd, &v) == 0 && v.f_blocks != 0 &&
		    (uint64_t)v.f_bavail * v.f_frsize < fs[i].need) {
			snprintf(err, errlen, "the file system is full: a %llu MiB image%s does not "
				 "fit in its %llu MiB free", (unsigned long long)(fs[i].need >> 20),
				 image->nseg_fds ? " (its files there)" : "",
				 (unsigned long long)(((uint64_t)v.f_bavail * v.f_frsize) >> 20));
			return -ENOSPC;
		}
	}
	return 0;
}

int gw_imageio_segments_prepare(struct gw_image *image, char *err, size_t errlen)
{
	uint8_t h[GW_VIMG_SEG_HEADER_BYTES];

	for (unsigned k = 0; k < image->nseg_fds; k++) {
		int fd = image->seg_fds[k];
		ssize_t n;

		gw_vimg_segment_header(&image->v, k, h);
		if (ftruncate(fd, (off_t)gw_vimg_segment_file_bytes(&image->v, k)) < 0) {
			snprintf(err, errlen, "cannot size image segment %u: %s", k, strerror(errno));
			return -errno;
		}
		n = pwrite(fd, h, sizeof(h), 0);
		if (n != (ssize_t)sizeof(h)) {
			int e = n < 0 ? errno : EIO;

			snprintf(err, errlen, "cannot write image segment %u's header: %s", k,
				 strerror(e));
			return -e;
		}
	}
	return 0;
}

int gw_imageio_segments_take(struct gw_image *image, int *fds, unsigned n, char *err,
			     size_t errlen)
{
	int r = 0;

	if (n != image->v.nsegments) {
		snprintf(err, errlen, "the image has %u segment files, %u came with the request%s",
			 image->v.nsegments, n,
			 image->v.nsegments ? " (pass them as \"segment_fds\", in order)" : "");
		r = -EBADMSG;
	}
	for (unsigned k = 0; k < n && r == 0; k++)
		r = gw_vimg_check_segment_fd(&image->v, k, fds[k], err, errlen);
	if (r < 0) {
		for (unsigned k = 0; k < n; k++)
			close(fds[k]);
		return r;
	}
	for (unsigned k = 0; k < n; k++)
		image->seg_fds[k] = fds[k];
	image->nseg_fds = n;
	return 0;
}

void gw_imageio_files_close(struct gw_image *image)
{
	if (image->fd >= 0)
		close(image->fd);
	image->fd = -1;
	for (unsigned k = 0; k < image->nseg_fds; k++)
		close(image->seg_fds[k]);
	image->nseg_fds = 0;
}

void gw_imageio_files_move(struct gw_image *a, struct gw_image *b)
{
	gw_imageio_files_close(a);
	a->fd = b->fd;
	b->fd = -1;
	for (unsigned k = 0; k < b->nseg_fds; k++)
		a->seg_fds[k] = b->seg_fds[k];
	a->nseg_fds = b->nseg_fds;
	b->nseg_fds = 0;
}

void gw_imageio_files_truncate(struct gw_image *image)
{
	if (image->fd >= 0 && ftruncate(image->fd, 0) < 0)
		(void)0; /* the client removes the file anyway */
	for (unsigned k = 0; k < image->nseg_fds; k++)
		if (ftruncate(image->seg_fds[k], 0) < 0)
			(void)0;
}

void gw_copy_stats_add(struct gw_copy_stats *st, const struct gw_copy_store *s)
{
	st->io_ns += s->io_ns;
	st->io_bytes += s->io_bytes;
	st->pieces += s->pieces;
	if (s->lanes > st->lanes)
		st->lanes = s->lanes;
}

void gw_imageio_result(cJSON *result, const struct gw_image *image, const struct gw_copy_stats *st,
		       unsigned ngpus, int suspend)
{
	uint64_t io_ns = 0, io_bytes = 0;
	unsigned lanes = 0;
	cJSON *jobs;

	if (image && image->fd >= 0)
		cJSON_AddNumberToObject(result, "segments", image->v.nsegments);
	if (image && image->v.nsegments) {
		uint64_t all = image->v.file_bytes;

		for (uint32_t k = 0; k < image->v.nsegments; k++)
			all += gw_vimg_segment_file_bytes(&image->v, k);
		/* "image_bytes": all of the image's files; the head alone is "image_head_bytes" */
		cJSON_AddNumberToObject(result, "image_head_bytes", (double)image->v.file_bytes);
		cJSON_ReplaceItemInObjectCaseSensitive(result, "image_bytes",
						       cJSON_CreateNumber((double)all));
		cJSON_AddNumberToObject(result, "stripe_bytes", (double)image->v.stripe_bytes);
	}
	jobs = cJSON_AddArrayToObject(result, "gpu_jobs");
	for (unsigned g = 0; g < ngpus; g++) {
		cJSON *o;

		if (!st[g].ran)
			continue;
		io_ns = st[g].io_ns > io_ns ? st[g].io_ns : io_ns; /* GPUs run in parallel */
		io_bytes += st[g].io_bytes;
		lanes += st[g].lanes;
		o = jobs ? cJSON_CreateObject() : NULL;
		if (!o)
			continue;
		cJSON_AddNumberToObject(o, "gpu", g);
		cJSON_AddNumberToObject(o, "ranges", st[g].ranges);
		if (!suspend)
			cJSON_AddNumberToObject(o, "create_ms", st[g].create_ms);
		cJSON_AddNumberToObject(o, "copy_ms", st[g].copy_ms);
		if (!suspend) {
			cJSON_AddNumberToObject(o, "verify_ms", st[g].verify_ms);
			cJSON_AddNumberToObject(o, "export_ms", st[g].export_ms);
		}
		cJSON_AddNumberToObject(o, "unmap_ms", st[g].unmap_ms);
		cJSON_AddNumberToObject(o, "io_lanes", st[g].lanes);
		cJSON_AddNumberToObject(o, "pieces", (double)st[g].pieces);
		cJSON_AddNumberToObject(o, "file_io_ms", (double)st[g].io_ns / 1e6);
		cJSON_AddNumberToObject(o, "file_io_bytes", (double)st[g].io_bytes);
		cJSON_AddNumberToObject(o, "data_bytes", (double)st[g].data_bytes);
		if (st[g].copy_ms > 0)
			cJSON_AddNumberToObject(o, "copy_bytes_per_s",
						(double)st[g].data_bytes / (st[g].copy_ms / 1e3));
		cJSON_AddItemToArray(jobs, o);
	}
	if (lanes)
		cJSON_AddNumberToObject(result, "io_lanes", lanes);
	/* The file I/O rate: bytes over the longest lane's time in pread/pwrite (lanes and GPUs
	 * run at once, so this is the rate the files took them at, DMA not counted). */
	if (io_ns > 0)
		cJSON_AddNumberToObject(result, suspend ? "file_write_bytes_per_s" :
							  "file_read_bytes_per_s",
					(double)io_bytes / ((double)io_ns / 1e9));
}
